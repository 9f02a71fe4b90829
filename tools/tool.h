/*
 * tool.h - the msgbus command: what its subcommands share.
 *
 * The command uses only the public interface, include/msgbus.h. Each
 * subcommand is a cmd_NAME() function that returns the exit status:
 * EXIT_OK, EXIT_FAILED (a call failed, with a message on stderr) or
 * EXIT_USAGE.
 */
#ifndef MSGBUS_TOOL_H
#define MSGBUS_TOOL_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include <msgbus.h>

enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_USAGE = 2 };

/* Every bounded wait is cut into slices this long, so that SIGINT and
 * SIGTERM are seen in time: a blocked library call cannot be woken. */
#define SLICE_MS 100

#define MAX_LINKS 8

/* The command line, once parsed. Positional arguments stay in args. */
struct tool_opts {
	const char *cmd;
	char **args;
	int nargs;
	long count;       /* --count N, 0: not given */
	int timeout_ms;   /* --timeout MS, -1: not given */
	size_t size;      /* --size BYTES (bench), 0: not given */
	const char *exec; /* --exec CMD (serve) */
	int raw, lossy, ready;
	int watch_ms;     /* --watch[=MS] (stat), 0: not given */
	const char *connect[MAX_LINKS];
	int nconnect;
	const char *listen[MAX_LINKS];
	int nlisten;
};

/* Set by the SIGINT/SIGTERM handler: the signal number, 0 until then. */
extern volatile sig_atomic_t tool_stop;

/* Prints "msgbus: CALL: msgbus_strerror(err)"; returns EXIT_FAILED. */
int tool_fail(const char *call, int err);
/* Prints "msgbus: WHAT: strerror(errno)"; returns EXIT_FAILED. */
int tool_fail_errno(const char *what);
/* Prints the one-line usage of cmd and returns EXIT_USAGE. */
int tool_usage_error(const char *cmd, const char *why);

/*
 * Opens the bus named by url and links it as the options ask. SIGINT and
 * SIGTERM are blocked while the library starts its threads, which so never
 * take them, and then handled by the calling thread. Returns EXIT_OK and
 * the handle in *bus, or prints why and returns EXIT_FAILED.
 */
int tool_open(const struct tool_opts *o, const char *url, msgbus_bus **bus);
/* Closes the bus; after a signal, ends the process with that signal. */
int tool_close(msgbus_bus *bus, int status);

/* Blocks SIGINT and SIGTERM in the calling thread (before a thread is
 * started, so that it inherits the mask), or unblocks them. */
void tool_block_signals(int block);

/* Monotonic milliseconds, and what is left of a deadline (-1: none). */
int64_t tool_now_ms(void);
int tool_left_ms(int64_t deadline);
/* One slice of a wait bounded by the deadline (-1: none). */
int tool_slice_ms(int64_t deadline);
void tool_sleep_ms(int ms);

/* The payload as one line: printable ASCII as is, the rest escaped. */
void tool_print_escaped(const void *data, size_t len);
/* Reads all of fd, at most max bytes; fails with EMSGSIZE beyond. */
int tool_read_all(int fd, size_t max, char **data, size_t *len);
/* Writes all of data to fd. Returns 0 or -1 with errno. */
int tool_write_all(int fd, const void *data, size_t len);
/* Prints "ready" on stderr when --ready was given. */
void tool_ready(const struct tool_opts *o);

int cmd_pub(const struct tool_opts *o);
int cmd_sub(const struct tool_opts *o);
int cmd_req(const struct tool_opts *o);
int cmd_serve(const struct tool_opts *o);
int cmd_bench(const struct tool_opts *o);
int cmd_stat(const struct tool_opts *o);

/* serve --exec: runs cmd through /bin/sh with in as its stdin; its stdout,
 * up to max bytes, goes to *out (malloc'd). Returns 0, or -1 with errno. */
int tool_run_command(const char *cmd, const void *in, size_t inlen, size_t max, char **out,
                     size_t *outlen, int *status);

/* The links of a bus (from --connect and --listen) that pub, req and bench
 * wait for: until every --connect link and, for --listen, one link is up. */
int tool_links_wanted(const struct tool_opts *o);
int tool_link_stats(msgbus_bus *bus, msgbus_link_stats *st);
/* Whether a bus URL names a NATS server: the command then works on a
 * private bus of its own, linked to it. */
int tool_is_nats_url(const char *url);

/* links.c: before publishing, until every link is up and the tcp:// peers
 * have declared their subscriptions and services (MSGBUS_LINKINFO_DECLARED;
 * nats:// ones tell nothing); EXIT_OK, or EXIT_FAILED when that is not so
 * by the deadline. */
int tool_wait_peers(msgbus_bus *bus, const struct tool_opts *o, int64_t deadline);
/* Before a request: the same, without the note about nats:// links. */
int tool_wait_services(msgbus_bus *bus, const struct tool_opts *o, int64_t deadline);
/* For --ready: until every nats:// link's server has processed our SUBs
 * (MSGBUS_LINKINFO_CONFIRMED), within --timeout if given. */
int tool_wait_confirmed(msgbus_bus *bus, const struct tool_opts *o);
/* stat: until the links are up, or the deadline. */
void tool_wait_up(msgbus_bus *bus, const struct tool_opts *o, int64_t deadline);
/* stat: the table of the links of the command's bus, if any. */
int tool_print_links(msgbus_bus *bus);

#endif
