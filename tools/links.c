/*
 * links.c - msgbus: the links of the command's bus (msgbus_links(3)): when
 * they are ready for pub and for sub --ready, and their table for stat.
 */
#include "tool.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Links listed at most; more are counted, not shown. */
#define MAX_LISTED 64

struct link_count {
	int up, tcp_up, tcp_declared, nats_up, nats, nats_confirmed;
};

static int count_links(msgbus_bus *bus, struct link_count *c)
{
	static msgbus_link_info li[MAX_LISTED];
	size_t n;
	int err = msgbus_links(bus, li, MAX_LISTED, &n);

	if (err != MSGBUS_OK)
		return tool_fail("msgbus_links", err);
	memset(c, 0, sizeof(*c));
	for (size_t i = 0; i < n && i < MAX_LISTED; i++) {
		int up = li[i].state == MSGBUS_LINK_UP;
		c->up += up;
		if (li[i].kind == MSGBUS_LINK_NATS) {
			c->nats++;
			c->nats_up += up;
			c->nats_confirmed += up && (li[i].flags & MSGBUS_LINKINFO_CONFIRMED);
		} else {
			c->tcp_up += up;
			c->tcp_declared += up && (li[i].flags & MSGBUS_LINKINFO_DECLARED);
		}
	}
	return EXIT_OK;
}

/* Until the links are up and every tcp:// peer has declared the
 * subscriptions and services it had (MSGBUS_LINKINFO_DECLARED), or the
 * deadline. Fills *c. */
static int wait_links(msgbus_bus *bus, const struct tool_opts *o, int64_t deadline,
                      struct link_count *c)
{
	int wanted = tool_links_wanted(o);

	for (;;) {
		if (count_links(bus, c) != EXIT_OK)
			return EXIT_FAILED;
		/* NATS tells a client nothing of the others' interest: up is
		 * all there is to wait for on a nats:// link. */
		if (c->up >= wanted && c->tcp_declared == c->tcp_up)
			return EXIT_OK;
		if (tool_stop)
			return EXIT_FAILED;
		if (tool_left_ms(deadline) == 0) {
			fprintf(stderr, "msgbus: waiting for links: %s (%d of %d up, %d of %d declared)\n",
			        msgbus_strerror(MSGBUS_ETIMEDOUT), c->up, wanted, c->tcp_declared,
			        c->tcp_up);
			return EXIT_FAILED;
		}
		tool_sleep_ms(1);
	}
}

int tool_wait_services(msgbus_bus *bus, const struct tool_opts *o, int64_t deadline)
{
	struct link_count c;

	return wait_links(bus, o, deadline, &c);
}

int tool_wait_peers(msgbus_bus *bus, const struct tool_opts *o, int64_t deadline)
{
	struct link_count c = { 0 };

	if (wait_links(bus, o, deadline, &c) != EXIT_OK)
		return EXIT_FAILED;
	if (c.nats_up)
		fputs("msgbus: nats:// link up; NATS tells nothing of remote subscribers\n",
		      stderr);
	return EXIT_OK;
}

int tool_wait_confirmed(msgbus_bus *bus, const struct tool_opts *o)
{
	int64_t deadline = o->timeout_ms >= 0 ? tool_now_ms() + o->timeout_ms : -1;
	struct link_count c;

	for (;;) {
		if (count_links(bus, &c) != EXIT_OK)
			return EXIT_FAILED;
		if (c.nats_confirmed == c.nats)
			return EXIT_OK;
		if (tool_stop)
			return EXIT_FAILED;
		if (tool_left_ms(deadline) == 0)
			return tool_fail("waiting for the nats:// server", MSGBUS_ETIMEDOUT);
		tool_sleep_ms(1);
	}
}

void tool_wait_up(msgbus_bus *bus, const struct tool_opts *o, int64_t deadline)
{
	struct link_count c;

	while (!tool_stop && tool_left_ms(deadline) > 0 && count_links(bus, &c) == EXIT_OK &&
	       (c.up < tool_links_wanted(o) || c.tcp_declared < c.tcp_up))
		tool_sleep_ms(1);
}

static const char *kind_name(uint32_t kind)
{
	switch (kind) {
	case MSGBUS_LINK_TCP_CONNECT: return "tcp-connect";
	case MSGBUS_LINK_TCP_ACCEPT: return "tcp-accept";
	case MSGBUS_LINK_NATS: return "nats";
	default: return "?";
	}
}

static const char *state_name(uint32_t state)
{
	switch (state) {
	case MSGBUS_LINK_CONNECTING: return "connecting";
	case MSGBUS_LINK_UP: return "up";
	case MSGBUS_LINK_BACKOFF: return "backoff";
	default: return "?";
	}
}

/* The flags of a link (msgbus_links(3)), by name, joined with ','; "-"
 * for none. */
static const char *flag_names(uint32_t flags, char *buf, size_t cap)
{
	static const struct {
		uint32_t bit;
		const char *name;
	} names[] = { { MSGBUS_LINKINFO_DECLARED, "declared" },
		      { MSGBUS_LINKINFO_CONFIRMED, "confirmed" },
		      { MSGBUS_LINKINFO_SHARED, "shared" } };
	size_t len = 0;

	buf[0] = '\0';
	for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++)
		if (flags & names[k].bit)
			len += (size_t)snprintf(buf + len, cap - len, "%s%s", len ? "," : "",
			                        names[k].name);
	return len ? buf : "-";
}

int tool_print_links(msgbus_bus *bus)
{
	static msgbus_link_info li[MAX_LISTED];
	size_t n;
	int err = msgbus_links(bus, li, MAX_LISTED, &n);

	if (err != MSGBUS_OK)
		return tool_fail("msgbus_links", err);
	if (n == 0)
		return EXIT_OK;
	printf("\nlinks of this command: %zu\n  %-11s %-10s %-16s %-22s %-10s %-10s %-11s %s\n",
	       n, "KIND", "STATE", "FLAGS", "PEER", "SENT", "RECEIVED", "UNDELIVERED", "URL");
	for (size_t i = 0; i < n && i < MAX_LISTED; i++) {
		char flags[48];
		printf("  %-11s %-10s %-16s %-22s %-10" PRIu64 " %-10" PRIu64 " %-11" PRIu64
		       " %s\n",
		       kind_name(li[i].kind), state_name(li[i].state),
		       flag_names(li[i].flags, flags, sizeof(flags)),
		       li[i].peer[0] ? li[i].peer : "-", li[i].sent, li[i].received,
		       li[i].undelivered, li[i].url);
	}
	return EXIT_OK;
}
