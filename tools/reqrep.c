/*
 * reqrep.c - msgbus req and msgbus serve.
 */
#include "tool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#define DEFAULT_REQ_TIMEOUT_MS 5000
/* The most a --exec command's output may be: above any bus's
 * max_msg_size is refused by msgbus_respond anyway. */
#define MAX_COMMAND_OUTPUT ((size_t)64 << 20)
/* serve --count on a linked bus: how long the last reply is given to leave
 * through the link before msgbus_close ends it. No public call says when a
 * reply has been sent (see BUGS in msgbus(1)). */
#define LINK_LINGER_MS 200

/*
 * Starts the call. The library answers "no responders" at once when no
 * worker is known, and a service served across a link is known only once
 * the link is up and the peer has declared it: so on a bus with links the
 * call starts once they are up and the tcp:// peers have declared all
 * their services (tool_wait_services), within the deadline.
 */
static int start_call(const struct tool_opts *o, msgbus_bus *bus, int64_t deadline,
                      msgbus_call **call)
{
	const char *data = o->args[2];
	int left = tool_left_ms(deadline);

	/* Past the deadline (a peer that serves nothing): a call to a
	 * service now known still gets a moment. */
	return msgbus_call_start(bus, o->args[1], data, strlen(data), left > 0 ? left : 1,
	                         call);
}

/* Waits for the outcome in slices; a signal abandons the call. */
static int wait_call(msgbus_call *call, msgbus_msg **reply)
{
	int err;

	while ((err = msgbus_call_wait(call, reply, SLICE_MS)) == MSGBUS_EAGAIN) {
		if (tool_stop) {
			msgbus_call_cancel(call);
			return MSGBUS_ECLOSED;
		}
	}
	return err;
}

static int print_reply(const struct tool_opts *o, const msgbus_msg *reply)
{
	if (o->raw) {
		fwrite(msgbus_msg_data(reply), 1, msgbus_msg_len(reply), stdout);
	} else {
		tool_print_escaped(msgbus_msg_data(reply), msgbus_msg_len(reply));
		putchar('\n');
	}
	if (fflush(stdout) == 0)
		return EXIT_OK;
	return tool_fail_errno("stdout");
}

int cmd_req(const struct tool_opts *o)
{
	int timeout = o->timeout_ms >= 0 ? o->timeout_ms : DEFAULT_REQ_TIMEOUT_MS;
	msgbus_call *call;
	msgbus_msg *reply;
	msgbus_bus *bus;
	int status, err;

	if (timeout == 0)
		return tool_usage_error("req", "--timeout must be positive for req");
	if ((status = tool_open(o, o->args[0], &bus)) != EXIT_OK)
		return status;
	int64_t deadline = tool_now_ms() + timeout;
	if (tool_links_wanted(o) && tool_wait_services(bus, o, deadline) != EXIT_OK)
		return tool_close(bus, EXIT_FAILED);
	err = start_call(o, bus, deadline, &call);
	if (err != MSGBUS_OK)
		return tool_close(bus, tool_fail("msgbus_call_start", err));
	err = wait_call(call, &reply);
	if (err == MSGBUS_ECLOSED && tool_stop)
		return tool_close(bus, EXIT_FAILED);
	if (err != MSGBUS_OK)
		return tool_close(bus, tool_fail("msgbus_call_wait", err));
	status = print_reply(o, reply);
	msgbus_msg_release(reply);
	return tool_close(bus, status);
}

/* The reply of serve --exec: the command's stdout, whatever its status,
 * which is reported on stderr when it is not 0. */
static int run_exec(const char *cmd, msgbus_req *req, char **out, size_t *len)
{
	int wstatus = 0;

	if (tool_run_command(cmd, msgbus_req_data(req), msgbus_req_len(req),
	                     MAX_COMMAND_OUTPUT, out, len, &wstatus)) {
		fprintf(stderr, "msgbus: %s: %s (empty reply sent)\n", cmd, strerror(errno));
		*out = NULL;
		*len = 0;
		return EXIT_FAILED;
	}
	if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) != 0)
		fprintf(stderr, "msgbus: %s: exit status %d\n", cmd, WEXITSTATUS(wstatus));
	else if (WIFSIGNALED(wstatus))
		fprintf(stderr, "msgbus: %s: killed by signal %d\n", cmd, WTERMSIG(wstatus));
	return EXIT_OK;
}

/* Answers one request: an echo, or the command's output. */
static int answer(const struct tool_opts *o, msgbus_req *req)
{
	char *out = NULL;
	size_t len = 0;
	int status = EXIT_OK, err;

	if (o->exec)
		status = run_exec(o->exec, req, &out, &len);
	err = o->exec ? msgbus_respond(req, out, len)
	              : msgbus_respond(req, msgbus_req_data(req), msgbus_req_len(req));
	free(out);
	/* A requester that gave up is its own affair: said, not a failure. */
	if (err == MSGBUS_ETIMEDOUT)
		fprintf(stderr, "msgbus: msgbus_respond: %s (the requester gave up)\n",
		        msgbus_strerror(err));
	else if (err != MSGBUS_OK)
		status = tool_fail("msgbus_respond", err);
	return status;
}

int cmd_serve(const struct tool_opts *o)
{
	msgbus_service *svc;
	msgbus_bus *bus;
	long served = 0;
	int status, err;

	if ((status = tool_open(o, o->args[0], &bus)) != EXIT_OK)
		return status;
	err = msgbus_serve(bus, o->args[1], NULL, NULL, &svc);
	if (err != MSGBUS_OK)
		return tool_close(bus, tool_fail("msgbus_serve", err));
	if (o->ready && tool_wait_confirmed(bus, o) != EXIT_OK)
		return tool_close(bus, EXIT_FAILED);
	tool_ready(o);
	/* A failed answer is reported and serving goes on; the exit status
	 * says that one failed. */
	while ((!o->count || served < o->count) && !tool_stop) {
		msgbus_req *req;

		err = msgbus_service_recv(svc, &req, SLICE_MS);
		if (err == MSGBUS_ETIMEDOUT || err == MSGBUS_EAGAIN)
			continue;
		if (err != MSGBUS_OK) {
			status = tool_fail("msgbus_service_recv", err);
			break;
		}
		if (answer(o, req) != EXIT_OK)
			status = EXIT_FAILED;
		served++;
	}
	if (o->count && served == o->count && tool_links_wanted(o))
		for (int64_t end = tool_now_ms() + LINK_LINGER_MS; !tool_stop && tool_left_ms(end);)
			tool_sleep_ms(tool_slice_ms(end));
	return tool_close(bus, status);
}
