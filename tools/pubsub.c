/*
 * pubsub.c - msgbus pub and msgbus sub.
 */
#include "tool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_PUB_TIMEOUT_MS 5000
/* The most `pub URL SUBJECT -` reads from stdin: above any bus's
 * max_msg_size is refused by msgbus_publish anyway. */
#define MAX_STDIN_PAYLOAD ((size_t)64 << 20)

/* After publishing n messages on a linked bus: let the links send them
 * (or count them undelivered) before msgbus_close ends the links. */
static void wait_for_links_to_send(msgbus_bus *bus, uint64_t before, uint64_t n,
                                   int64_t deadline)
{
	msgbus_link_stats st;

	while (!tool_stop && msgbus_link_stats_get(bus, &st) == MSGBUS_OK &&
	       st.sent + st.undelivered - before < n && tool_left_ms(deadline) > 0)
		tool_sleep_ms(1);
}

/* msgbus_publish in slices of the timeout, so that a signal ends it. */
static int publish(msgbus_bus *bus, const char *subject, const char *data, size_t len,
                   int timeout_ms)
{
	int64_t deadline = tool_now_ms() + timeout_ms;
	int err;

	do
		err = msgbus_publish(bus, subject, data, len, tool_slice_ms(deadline));
	while (err == MSGBUS_ETIMEDOUT && !tool_stop && tool_left_ms(deadline) > 0);
	return err;
}

static int read_payload(const struct tool_opts *o, char **data, size_t *len)
{
	int err;

	if (o->nargs < 3) {
		*data = NULL;
		*len = 0;
		return EXIT_OK;
	}
	if (strcmp(o->args[2], "-")) {
		*data = strdup(o->args[2]);
		*len = strlen(o->args[2]);
		return *data ? EXIT_OK : tool_fail("strdup", MSGBUS_ENOMEM);
	}
	err = tool_read_all(STDIN_FILENO, MAX_STDIN_PAYLOAD, data, len);
	return err == MSGBUS_OK ? EXIT_OK : tool_fail("stdin", err);
}

int cmd_pub(const struct tool_opts *o)
{
	int timeout = o->timeout_ms >= 0 ? o->timeout_ms : DEFAULT_PUB_TIMEOUT_MS;
	long count = o->count ? o->count : 1, sent = 0;
	msgbus_link_stats st0 = { 0 };
	msgbus_bus *bus;
	size_t len;
	char *data;
	int status, err = MSGBUS_OK;

	if (read_payload(o, &data, &len) != EXIT_OK)
		return EXIT_FAILED;
	if ((status = tool_open(o, o->args[0], &bus)) != EXIT_OK) {
		free(data);
		return status;
	}
	if (tool_links_wanted(o)) {
		status = tool_wait_peers(bus, o, tool_now_ms() + timeout);
		if (status == EXIT_OK)
			status = tool_link_stats(bus, &st0);
	}
	while (status == EXIT_OK && sent < count && !tool_stop) {
		err = publish(bus, o->args[1], data, len, timeout);
		if (err != MSGBUS_OK && !tool_stop)
			status = tool_fail("msgbus_publish", err);
		else if (err == MSGBUS_OK)
			sent++;
	}
	if (status == EXIT_OK && tool_links_wanted(o))
		wait_for_links_to_send(bus, st0.sent + st0.undelivered, (uint64_t)sent,
		                       tool_now_ms() + timeout);
	free(data);
	return tool_close(bus, status);
}

/* One message as a line, or its payload alone with --raw. */
static int print_message(const struct tool_opts *o, const msgbus_msg *m)
{
	const char *subject = msgbus_msg_subject(m);

	if (o->raw) {
		fwrite(msgbus_msg_data(m), 1, msgbus_msg_len(m), stdout);
	} else {
		tool_print_escaped(subject, strlen(subject));
		putchar(' ');
		tool_print_escaped(msgbus_msg_data(m), msgbus_msg_len(m));
		putchar('\n');
	}
	if (fflush(stdout) == 0)
		return EXIT_OK;
	if (errno != EPIPE) /* a reader that went away is no news */
		tool_fail_errno("stdout");
	return EXIT_FAILED;
}

/* Receives until --count messages, a signal, or --timeout without one. */
static int receive(const struct tool_opts *o, msgbus_sub *sub)
{
	int64_t deadline = o->timeout_ms >= 0 ? tool_now_ms() + o->timeout_ms : -1;
	long got = 0;

	while ((!o->count || got < o->count) && !tool_stop) {
		msgbus_msg *m;
		int err = msgbus_recv(sub, &m, tool_slice_ms(deadline));

		if (err == MSGBUS_ETIMEDOUT || err == MSGBUS_EAGAIN) {
			if (tool_left_ms(deadline) == 0)
				return tool_fail("msgbus_recv", MSGBUS_ETIMEDOUT);
			continue;
		}
		if (err != MSGBUS_OK)
			return tool_fail("msgbus_recv", err);
		err = print_message(o, m);
		msgbus_msg_release(m);
		if (err != EXIT_OK)
			return err;
		got++;
		if (deadline >= 0)
			deadline = tool_now_ms() + o->timeout_ms;
	}
	return EXIT_OK;
}

int cmd_sub(const struct tool_opts *o)
{
	msgbus_bus *bus;
	msgbus_sub *sub;
	int status, err;

	if ((status = tool_open(o, o->args[0], &bus)) != EXIT_OK)
		return status;
	err = msgbus_subscribe(bus, o->args[1], o->lossy ? MSGBUS_SUB_LOSSY : 0, &sub);
	if (err != MSGBUS_OK)
		return tool_close(bus, tool_fail("msgbus_subscribe", err));
	if (o->ready && tool_wait_confirmed(bus, o) != EXIT_OK)
		return tool_close(bus, EXIT_FAILED);
	tool_ready(o);
	status = receive(o, sub);
	return tool_close(bus, status);
}
