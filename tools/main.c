/*
 * main.c - the msgbus command: parses the command line and runs one
 * subcommand. See man/msgbus.1.
 */
#include "tool.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum opt_bit {
	O_COUNT = 1 << 0,
	O_TIMEOUT = 1 << 1,
	O_RAW = 1 << 2,
	O_LOSSY = 1 << 3,
	O_EXEC = 1 << 4,
	O_READY = 1 << 5,
	O_SIZE = 1 << 6,
	O_CONNECT = 1 << 7,
	O_LISTEN = 1 << 8,
	O_WATCH = 1 << 9,
};

#define O_LINKS (O_CONNECT | O_LISTEN)
#define DEFAULT_WATCH_MS 1000

struct subcommand {
	const char *name;
	const char *usage;
	int (*run)(const struct tool_opts *o);
	unsigned allowed;
	int min_args, max_args;
};

static const struct subcommand subcommands[] = {
	{ "pub", "pub [--count N] [--timeout MS] URL SUBJECT [DATA | -]", cmd_pub,
	  O_COUNT | O_TIMEOUT | O_LINKS, 2, 3 },
	{ "sub", "sub [--count N] [--raw] [--lossy] [--timeout MS] [--ready] URL PATTERN",
	  cmd_sub, O_COUNT | O_TIMEOUT | O_RAW | O_LOSSY | O_READY | O_LINKS, 2, 2 },
	{ "req", "req [--timeout MS] [--raw] URL SERVICE DATA", cmd_req,
	  O_TIMEOUT | O_RAW | O_LINKS, 3, 3 },
	{ "serve", "serve [--exec CMD] [--count N] [--ready] URL SERVICE", cmd_serve,
	  O_EXEC | O_COUNT | O_READY | O_LINKS, 2, 2 },
	{ "bench", "bench [--count N] [--size BYTES] [--timeout MS] URL", cmd_bench,
	  O_COUNT | O_SIZE | O_TIMEOUT | O_LINKS, 1, 1 },
	{ "stat", "stat [--watch[=MS]] URL", cmd_stat, O_WATCH | O_LINKS, 1, 1 },
};

#define NSUBCOMMANDS (sizeof subcommands / sizeof subcommands[0])

static const struct option long_opts[] = {
	{ "count", required_argument, NULL, 'n' },
	{ "timeout", required_argument, NULL, 't' },
	{ "raw", no_argument, NULL, 'r' },
	{ "lossy", no_argument, NULL, 'l' },
	{ "exec", required_argument, NULL, 'e' },
	{ "ready", no_argument, NULL, 'R' },
	{ "size", required_argument, NULL, 's' },
	{ "connect", required_argument, NULL, 'C' },
	{ "listen", required_argument, NULL, 'L' },
	{ "watch", optional_argument, NULL, 'w' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static const struct subcommand *find_subcommand(const char *name)
{
	for (size_t i = 0; i < NSUBCOMMANDS; i++)
		if (!strcmp(subcommands[i].name, name))
			return &subcommands[i];
	return NULL;
}

static void print_usage(FILE *f)
{
	fputs("usage:\n", f);
	for (size_t i = 0; i < NSUBCOMMANDS; i++)
		fprintf(f, "  msgbus %s\n", subcommands[i].usage);
	fputs("Any subcommand also takes --connect tcp://HOST:PORT or nats://[CREDS@]HOST[:PORT],\n"
	      "and --listen tcp://HOST:PORT. A nats:// URL in place of the bus URL links a\n"
	      "private bus of the command to that server.\nSee msgbus(1).\n",
	      f);
}

int tool_usage_error(const char *cmd, const char *why)
{
	const struct subcommand *sc = cmd ? find_subcommand(cmd) : NULL;

	fprintf(stderr, "msgbus: %s\n", why);
	if (sc)
		fprintf(stderr, "usage: msgbus %s\n", sc->usage);
	else
		print_usage(stderr);
	return EXIT_USAGE;
}

/* A decimal number in [min, max], the whole string. */
static int parse_number(const char *s, long min, long max, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

static int add_link(const char **urls, int *n, const char *url)
{
	if (*n == MAX_LINKS)
		return -1;
	urls[(*n)++] = url;
	return 0;
}

/* One option; returns its bit, or 0 after printing what is wrong. */
static unsigned parse_option(int c, struct tool_opts *o)
{
	long v;

	switch (c) {
	case 'n':
		if (parse_number(optarg, 1, LONG_MAX, &o->count))
			return 0;
		return O_COUNT;
	case 't':
		if (parse_number(optarg, 0, INT_MAX, &v))
			return 0;
		o->timeout_ms = (int)v;
		return O_TIMEOUT;
	case 's':
		if (parse_number(optarg, 1, INT_MAX, &v))
			return 0;
		o->size = (size_t)v;
		return O_SIZE;
	case 'w':
		/* --watch alone: every second. */
		if (!optarg)
			v = DEFAULT_WATCH_MS;
		else if (parse_number(optarg, 1, INT_MAX, &v))
			return 0;
		o->watch_ms = (int)v;
		return O_WATCH;
	case 'r': o->raw = 1; return O_RAW;
	case 'l': o->lossy = 1; return O_LOSSY;
	case 'R': o->ready = 1; return O_READY;
	case 'e': o->exec = optarg; return O_EXEC;
	case 'C': return add_link(o->connect, &o->nconnect, optarg) ? 0 : O_CONNECT;
	case 'L': return add_link(o->listen, &o->nlisten, optarg) ? 0 : O_LISTEN;
	default: return 0;
	}
}

static int parse(int argc, char **argv, const struct subcommand *sc, struct tool_opts *o)
{
	char why[160];
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, "h", long_opts, NULL)) != -1) {
		unsigned bit;

		if (c == 'h') {
			printf("usage: msgbus %s\n", sc->usage);
			exit(EXIT_OK);
		}
		if (c == '?') {
			snprintf(why, sizeof why, "%s: unknown option or missing value",
			         argv[optind - 1]);
			return tool_usage_error(sc->name, why);
		}
		bit = parse_option(c, o);
		if (!bit) {
			const char *name = "?";
			for (const struct option *lo = long_opts; lo->name; lo++)
				if (lo->val == c)
					name = lo->name;
			snprintf(why, sizeof why, "bad value for --%s: %s%s", name, optarg,
			         c == 'C' || c == 'L' ? " (at most 8 links)" : "");
			return tool_usage_error(sc->name, why);
		}
		if (!(bit & sc->allowed)) {
			snprintf(why, sizeof why, "%s: not an option of %s", argv[optind - 1],
			         sc->name);
			return tool_usage_error(sc->name, why);
		}
	}
	o->args = argv + optind;
	o->nargs = argc - optind;
	if (o->nargs < sc->min_args || o->nargs > sc->max_args)
		return tool_usage_error(sc->name, o->nargs < sc->min_args ? "missing arguments"
		                                                          : "too many arguments");
	return EXIT_OK;
}

int main(int argc, char **argv)
{
	struct tool_opts o = { .timeout_ms = -1 };
	const struct subcommand *sc;
	int status;

	if (argc < 2)
		return tool_usage_error(NULL, "no subcommand");
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		print_usage(stdout);
		return EXIT_OK;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("msgbus %s\n", msgbus_version());
		return EXIT_OK;
	}
	sc = find_subcommand(argv[1]);
	if (!sc) {
		char why[160];
		snprintf(why, sizeof why, "unknown subcommand: %s", argv[1]);
		return tool_usage_error(NULL, why);
	}
	o.cmd = sc->name;
	/* getopt_long sees "msgbus-SUBCOMMAND ARGS...": argv[1] is its argv[0]. */
	status = parse(argc - 1, argv + 1, sc, &o);
	if (status != EXIT_OK)
		return status;
	return sc->run(&o);
}
