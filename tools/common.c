/*
 * common.c - what the subcommands share: errors, signals, opening and
 * linking the bus, time, and byte I/O.
 */
#include "tool.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

volatile sig_atomic_t tool_stop;

int tool_fail(const char *call, int err)
{
	fprintf(stderr, "msgbus: %s: %s\n", call, msgbus_strerror(err));
	return EXIT_FAILED;
}

int tool_fail_errno(const char *what)
{
	fprintf(stderr, "msgbus: %s: %s\n", what, strerror(errno));
	return EXIT_FAILED;
}

static void on_stop_signal(int sig)
{
	tool_stop = sig;
}

/* No SA_RESTART: a read or poll of the command's own returns EINTR. */
static void install_handlers(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_stop_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	/* A peer or a command that goes away is an error to report, not a
	 * reason to die. */
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
}

void tool_block_signals(int block)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(block ? SIG_BLOCK : SIG_UNBLOCK, &set, NULL);
}

/* "msgbus: listening on tcp://HOST:PORT", the port actually bound. */
static void print_listening(const char *url, int port)
{
	size_t end = strcspn(url, "?");
	const char *colon = NULL;

	for (const char *p = url; p < url + end; p++)
		if (*p == ':')
			colon = p;
	if (!colon)
		colon = url + end;
	fprintf(stderr, "msgbus: listening on %.*s:%d\n", (int)(colon - url), url, port);
}

static int link_bus(const struct tool_opts *o, msgbus_bus *bus)
{
	int err, port;

	for (int i = 0; i < o->nlisten; i++) {
		err = msgbus_listen(bus, o->listen[i], &port);
		if (err != MSGBUS_OK) {
			fprintf(stderr, "msgbus: msgbus_listen: %s: %s\n", o->listen[i],
			        msgbus_strerror(err));
			return EXIT_FAILED;
		}
		print_listening(o->listen[i], port);
	}
	for (int i = 0; i < o->nconnect; i++) {
		err = msgbus_connect(bus, o->connect[i]);
		if (err != MSGBUS_OK) {
			fprintf(stderr, "msgbus: msgbus_connect: %s: %s\n", o->connect[i],
			        msgbus_strerror(err));
			return EXIT_FAILED;
		}
	}
	return EXIT_OK;
}

int tool_is_nats_url(const char *url)
{
	return !strncmp(url, "nats://", 7);
}

int tool_open(const struct tool_opts *o, const char *url, msgbus_bus **bus)
{
	int err, status;
	char own[64];
	const char *nats = NULL;

	if (tool_is_nats_url(url)) {
		nats = url;
		snprintf(own, sizeof(own), "inproc://msgbus-%ld", (long)getpid());
		url = own;
	}
	install_handlers();
	tool_block_signals(1);
	err = msgbus_open(bus, url, NULL);
	if (err != MSGBUS_OK) {
		tool_block_signals(0);
		fprintf(stderr, "msgbus: msgbus_open: %s: %s\n", url, msgbus_strerror(err));
		return EXIT_FAILED;
	}
	status = link_bus(o, *bus);
	if (status == EXIT_OK && nats && (err = msgbus_connect(*bus, nats)) != MSGBUS_OK)
		status = tool_fail("msgbus_connect", err); /* the URL may hold a password */
	tool_block_signals(0);
	if (status != EXIT_OK) {
		msgbus_close(*bus);
		*bus = NULL;
	}
	return status;
}

int tool_close(msgbus_bus *bus, int status)
{
	int err = msgbus_close(bus);
	int sig = tool_stop;

	if (err != MSGBUS_OK && status == EXIT_OK)
		status = tool_fail("msgbus_close", err);
	fflush(stdout);
	if (sig) {
		/* Die of the signal, the bus closed: the shell sees why. */
		signal(sig, SIG_DFL);
		raise(sig);
	}
	return status;
}

int64_t tool_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int tool_left_ms(int64_t deadline)
{
	int64_t left;

	if (deadline < 0)
		return -1;
	left = deadline - tool_now_ms();
	return left > 0 ? (int)left : 0;
}

int tool_slice_ms(int64_t deadline)
{
	int left = tool_left_ms(deadline);

	return left < 0 || left > SLICE_MS ? SLICE_MS : left;
}

void tool_sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL); /* a signal ends it early: the caller checks */
}

void tool_print_escaped(const void *data, size_t len)
{
	const unsigned char *p = data;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = p[i];

		switch (c) {
		case '\\': fputs("\\\\", stdout); break;
		case '\n': fputs("\\n", stdout); break;
		case '\r': fputs("\\r", stdout); break;
		case '\t': fputs("\\t", stdout); break;
		default:
			if (c >= 0x20 && c < 0x7f)
				putchar(c);
			else
				printf("\\x%02x", c);
		}
	}
}

int tool_read_all(int fd, size_t max, char **data, size_t *len)
{
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap);

	if (!buf)
		return MSGBUS_ENOMEM;
	for (;;) {
		ssize_t r;

		if (n == cap) {
			char *nb = cap > max ? NULL : realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				return cap > max ? MSGBUS_EMSGSIZE : MSGBUS_ENOMEM;
			}
			buf = nb;
			cap *= 2;
		}
		r = read(fd, buf + n, cap - n);
		if (r == 0)
			break;
		if (r < 0 && errno == EINTR && !tool_stop)
			continue;
		if (r < 0) {
			int e = errno;
			free(buf);
			return MSGBUS_ESYSERR | e;
		}
		n += (size_t)r;
	}
	if (n > max) {
		free(buf);
		return MSGBUS_EMSGSIZE;
	}
	*data = buf;
	*len = n;
	return MSGBUS_OK;
}

int tool_write_all(int fd, const void *data, size_t len)
{
	const char *p = data;

	while (len > 0) {
		ssize_t w = write(fd, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

void tool_ready(const struct tool_opts *o)
{
	if (o->ready)
		fputs("ready\n", stderr);
}

int tool_links_wanted(const struct tool_opts *o)
{
	return o->nconnect + (o->nlisten > 0) + (o->nargs > 0 && tool_is_nats_url(o->args[0]));
}

int tool_link_stats(msgbus_bus *bus, msgbus_link_stats *st)
{
	int err = msgbus_link_stats_get(bus, st);

	if (err != MSGBUS_OK)
		return tool_fail("msgbus_link_stats_get", err);
	return EXIT_OK;
}
