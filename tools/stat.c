/*
 * stat.c - msgbus stat: a table of what a bus holds (sizes, participants,
 * subscriptions, services, links of this handle), once or every --watch
 * interval until SIGINT.
 */
#include "tool.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Rows listed per table; the count above each says how many there are. */
#define MAX_ROWS 1024
/* The first table waits this long at most for the command's links. */
#define STAT_LINK_WAIT_MS 5000

struct stat_bufs {
	msgbus_participant_info parts[MAX_ROWS];
	msgbus_sub_info subs[MAX_ROWS];
	msgbus_service_info svcs[MAX_ROWS];
};

static size_t shown(size_t n)
{
	return n < MAX_ROWS ? n : MAX_ROWS;
}

static int print_sizes(msgbus_bus *bus, const char *url)
{
	msgbus_stat st = { .size = sizeof(st) };
	int err = msgbus_stat_get(bus, &st);

	if (err != MSGBUS_OK)
		return tool_fail("msgbus_stat_get", err);
	printf("bus %s\n", url);
	printf("  segment %" PRIu64 " bytes, inbox_size %" PRIu32 ", max_msg_size %" PRIu32
	       ", large_buffers %" PRIu32 "\n",
	       st.segment_size, st.inbox_size, st.max_msg_size, st.large_buffers);
	printf("  max_subs %" PRIu32 ", max_participants %" PRIu32 ", max_subjects %" PRIu32
	       ", ring_slots %" PRIu32 ", slot_size %" PRIu32 "\n",
	       st.max_subs, st.max_participants, st.max_subjects, st.ring_slots, st.slot_size);
	printf("  crash_bound_ms %" PRIu32 ", spin_us %" PRIu32 "\n", st.crash_bound_ms,
	       st.spin_us);
	return EXIT_OK;
}

static int print_participants(msgbus_bus *bus, struct stat_bufs *b)
{
	size_t n;
	int err = msgbus_participants(bus, b->parts, MAX_ROWS, &n);

	if (err != MSGBUS_OK)
		return tool_fail("msgbus_participants", err);
	printf("\nparticipants: %zu\n  %-6s %-8s %-6s %s\n", n, "INDEX", "PID", "STATE", "ROLE");
	for (size_t i = 0; i < shown(n); i++) {
		const msgbus_participant_info *p = &b->parts[i];
		const char *role = p->flags & MSGBUS_PART_SELF     ? "this command"
		                   : p->flags & MSGBUS_PART_BRIDGE ? "link"
		                                                   : "-";
		printf("  %-6" PRIu32 " %-8" PRIu32 " %-6s %s\n", p->index, p->pid,
		       p->flags & MSGBUS_PART_ALIVE ? "alive" : "dead", role);
	}
	return EXIT_OK;
}

static int print_subscriptions(msgbus_bus *bus, struct stat_bufs *b)
{
	size_t n;
	int err = msgbus_subscriptions(bus, b->subs, MAX_ROWS, &n);

	if (err != MSGBUS_OK)
		return tool_fail("msgbus_subscriptions", err);
	printf("\nsubscriptions: %zu\n  %-5s %-6s %-8s %-10s %-10s %s\n", n, "SLOT", "OWNER",
	       "MODE", "DROPPED", "BACKLOG", "PATTERN");
	for (size_t i = 0; i < shown(n); i++) {
		const msgbus_sub_info *s = &b->subs[i];
		printf("  %-5" PRIu32 " %-6" PRIu32 " %-8s %-10" PRIu64 " %-10" PRIu64 " %s\n",
		       s->slot, s->owner, s->flags & MSGBUS_SUB_LOSSY ? "lossy" : "lossless",
		       s->dropped, s->backlog, s->pattern);
	}
	return EXIT_OK;
}

static int print_services(msgbus_bus *bus, struct stat_bufs *b)
{
	size_t n;
	int err = msgbus_services(bus, b->svcs, MAX_ROWS, &n);

	if (err != MSGBUS_OK)
		return tool_fail("msgbus_services", err);
	printf("\nservices: %zu\n  %-8s %-10s %s\n", n, "WORKERS", "QUEUED", "NAME");
	for (size_t i = 0; i < shown(n); i++)
		printf("  %-8" PRIu32 " %-10" PRIu64 " %s\n", b->svcs[i].workers,
		       b->svcs[i].queued, b->svcs[i].name);
	return EXIT_OK;
}

static int print_all(const struct tool_opts *o, msgbus_bus *bus, struct stat_bufs *b)
{
	if (print_sizes(bus, o->args[0]) != EXIT_OK || print_participants(bus, b) != EXIT_OK ||
	    print_subscriptions(bus, b) != EXIT_OK || print_services(bus, b) != EXIT_OK ||
	    tool_print_links(bus) != EXIT_OK)
		return EXIT_FAILED;
	fflush(stdout);
	return EXIT_OK;
}

int cmd_stat(const struct tool_opts *o)
{
	msgbus_bus *bus;
	int status;
	/* Large: kept off the stack. */
	struct stat_bufs *b = malloc(sizeof(*b));

	if (!b)
		return tool_fail_errno("malloc");
	if ((status = tool_open(o, o->args[0], &bus)) != EXIT_OK) {
		free(b);
		return status;
	}
	if (tool_links_wanted(o))
		tool_wait_up(bus, o, tool_now_ms() + STAT_LINK_WAIT_MS);
	int tty = isatty(STDOUT_FILENO);
	for (;;) {
		if (o->watch_ms && tty)
			fputs("\033[H\033[2J", stdout); /* redraw in place */
		status = print_all(o, bus, b);
		if (status != EXIT_OK || !o->watch_ms)
			break;
		int64_t next = tool_now_ms() + o->watch_ms;
		while (!tool_stop && tool_left_ms(next) > 0)
			tool_sleep_ms(tool_slice_ms(next));
		if (tool_stop)
			break;
		if (!tty)
			puts("--");
	}
	free(b);
	return tool_close(bus, status);
}
