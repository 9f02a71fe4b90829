/*
 * bench.c - libmsgbus performance benchmark (a benchmark, not a test: it
 * reports figures and PASS/MISS against targets; it fails only when a run
 * loses, reorders or corrupts messages or the library returns an error).
 *
 * Usage: bench [-n COUNT] [-r REPS] [-t TESTS] [-T TRANSPORTS] [-S SPIN_US]
 *              [-B BYTES] [-p] [-v]
 *   -n COUNT   round trips per ping-pong run (default 20000); the other tests
 *              scale with it: 1:1 throughput sends 100x COUNT messages of 64 B,
 *              10x of 4 KiB, 1x of 64 KiB; fan-out 50x COUNT messages
 *   -r REPS    repeat each measurement REPS times and report the median of
 *              the repeats (default 5; the runs of the transports alternate)
 *   -t TESTS   comma list of rtt, tput, fanout, idle, subject (default: all)
 *   -T LIST    comma list of baseline, inproc, shm (default: all)
 *   -S SPIN_US spin_us option of the buses (default 100)
 *   -B BYTES   baseline ring size, a power of two (default 1 MiB for 64 B,
 *              256 KiB for 4 KiB and 64 KiB messages)
 *   -p         do not pin: by default the two parties of rtt and 1:1 tput
 *              (baseline and libmsgbus alike) run on the first two CPUs of
 *              the affinity mask, one each; fan-out and idle are never pinned
 *   -v         also print the spread of the repeats
 *
 * What it measures, for baseline (see baseline_ring.h), inproc:// (threads of
 * this process) and shm:// (a fork()ed process per participant):
 *   rtt     ping-pong: A publishes on "ping", B receives it and publishes the
 *           same bytes on "pong", A receives; 64 B and 4 KiB; 1000 warm-up
 *           round trips, then COUNT timed with CLOCK_MONOTONIC each; median
 *           and p99 in microseconds.
 *   tput    one publisher (timeout -1), one lossless subscriber; 64 B, 4 KiB,
 *           64 KiB; msgs/s and MB/s (10^6 bytes of payload) from the first
 *           timed publish to the subscriber's receipt of the end marker. Each
 *           payload carries its sequence number at both ends; the subscriber
 *           checks length, order, no gaps and the final count.
 *   fanout  one publisher, three lossless subscribers, 64 B; msgs/s of the
 *           slowest subscriber (and the mean), every subscriber verified.
 *   idle    a receiver blocked in msgbus_recv(timeout -1) for 1 s (woken by a
 *           publish at the end): user+sys CPU / wall time in % of one core
 *           (getrusage: RUSAGE_THREAD for inproc, RUSAGE_SELF of the child for
 *           shm). The baseline spins by design (100%) and is not measured.
 *   subject publishing on a never-seen subject against a known one: one
 *           thread publishes 64 B, 10x COUNT times, on one subject each time,
 *           on 64 subjects in turn, or on a new subject each time, to a lossless
 *           ">" subscriber it drains, outside the timed batches, every 1000
 *           messages; inproc and shm; ns per publish, and never-seen over each
 *           of the other two (target at most 2x). The subjects are written before the timing, so
 *           both runs time msgbus_publish alone.
 * Each run stops publishing after 1 s (and says so) so a slow build still
 * finishes; a 60 s watchdog kills a hung run. Every libmsgbus figure is also
 * given as a ratio to the baseline figure of the same test, and the targets
 * are printed with PASS/MISS at the end (absolute targets also show the
 * baseline's figure: on a shared host the absolute speed of the machine
 * changes several-fold from minute to minute, without any sign inside the
 * guest, while the ratio to the interleaved baseline stays put):
 *   shm 64 B round trip median <= 2x baseline
 *   64 B 1:1 throughput >= 10 M msgs/s
 *   1:3 fan-out >= 5 M msgs/s per subscriber, lossless
 *   64 KiB 1:1 throughput >= 0.5x baseline
 *   a never-seen subject's publish <= 2x a known subject's
 *
 * Bus options: the defaults (1 MiB inboxes: 64 B to 64 KiB go inline),
 * spin_us 100. Bus names are bench.PID.N; every
 * child is waited for, every bus closed, and /dev/shm is checked for
 * leftovers (reported as a library problem, then removed).
 *
 * Exit status: 0 when every run verified, 1 when a run failed, 2 usage.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "msgbus.h"
#include "baseline_ring.h"

/* ------------------------------------------------------------------ */
/* configuration                                                       */

enum { T_BASE, T_INPROC, T_SHM, T_COUNT };
static const char *const tname[T_COUNT] = { "baseline", "inproc", "shm" };

enum { TEST_RTT, TEST_TPUT, TEST_FANOUT, TEST_IDLE, TEST_SUBJECT, TEST_COUNT };
static const char *const testname[TEST_COUNT] = { "rtt", "tput", "fanout",
	                                          "idle", "subject" };

#define MAX_REPS 99
#include "bench_util.h"
#define MAX_WORKERS 3
#define FANOUT_SUBS 3
#define RTT_WARMUP 1000u
#define RUN_CAP_NS 1000000000ull /* stop publishing after 1 s */
#define IDLE_MS 1000
#define WATCHDOG_S 60
#define END_MAGIC 0x52454b52414d444eull /* "NDMARKER" */

static long g_n = 20000;
static int g_reps = 5;
static unsigned g_tests = (1u << TEST_COUNT) - 1;
static unsigned g_transports = (1u << T_COUNT) - 1;
static unsigned g_spin_us = 100;
static int g_verbose;
static int g_pin = 1;
static int g_cpu[2] = { -1, -1 }; /* parent, worker of 1:1 tests */
static cpu_set_t g_mask; /* the parent's own affinity */
static int g_failures;
static int g_leftovers;
static unsigned g_busno;
static size_t g_ring_bytes; /* -B; 0: by message size, see ring_bytes() */

/* ------------------------------------------------------------------ */
/* small helpers                                                       */

static const char *size_str(size_t size)
{
	switch (size) {
	case 64: return "64B";
	case 4096: return "4KiB";
	case 65536: return "64KiB";
	default: return "?";
	}
}

/* ------------------------------------------------------------------ */
/* shared control block, workers, sessions                             */

/* Results of one worker, in MAP_SHARED memory so children can fill it. */
struct wres {
	uint64_t t_end;  /* CLOCK_MONOTONIC when done */
	uint64_t count;  /* data messages received */
	double cpu_pct;  /* idle test */
	int failed;
	char err[200];
};

static struct wres *g_res; /* MAX_WORKERS entries, shared */

struct worker;
typedef int (*worker_fn)(struct worker *w);

struct worker {
	int id;
	int transport;
	size_t size;
	const char *url;
	const msgbus_options *opts;
	br_ring *ra, *rb; /* baseline rings */
	worker_fn fn;
	struct wres *res;
	int cmd_r, cmd_w; /* parent -> worker: 'C'reated, 'G'o, 'Q'uit */
	int ack_r, ack_w; /* worker -> parent: 'R'eady, 'E'rror */
	pid_t pid;
	pthread_t th;
	int cpu; /* pin to this CPU, or -1 */
	int rc;
};

struct session {
	int transport;
	int nw;
	struct worker w[MAX_WORKERS];
	int spawned;
	char name[80];
	char url[100];
	char shm_path[128];
	msgbus_options opts;
};

/* For the signal handler: children to kill and the segment to remove. */
static volatile pid_t g_children[MAX_WORKERS];
static char g_shm_path[128];
static volatile sig_atomic_t g_in_child;

static void wfail(struct wres *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void wfail(struct wres *r, const char *fmt, ...)
{
	va_list ap;

	if (r->failed)
		return;
	r->failed = 1;
	va_start(ap, fmt);
	vsnprintf(r->err, sizeof(r->err), fmt, ap);
	va_end(ap);
}

static void write_str(const char *s)
{
	ssize_t rc = write(2, s, strlen(s));
	(void)rc;
}

static void on_fatal_signal(int sig)
{
	if (g_in_child)
		_exit(128 + sig);
	write_str(sig == SIGALRM ? "bench: watchdog: a run hung, aborting\n"
	                         : "bench: interrupted\n");
	for (int i = 0; i < MAX_WORKERS; i++)
		if (g_children[i] > 0)
			kill(g_children[i], SIGKILL);
	if (g_shm_path[0])
		unlink(g_shm_path);
	_exit(3);
}

static int wk_cmd(struct worker *w)
{
	char c;
	ssize_t n;

	do {
		n = read(w->cmd_r, &c, 1);
	} while (n < 0 && errno == EINTR);
	return n == 1 ? c : 'Q';
}

static void wk_ack(struct worker *w, char c)
{
	ssize_t n;

	do {
		n = write(w->ack_w, &c, 1);
	} while (n < 0 && errno == EINTR);
}

/*
 * Worker handshake: wait until the parent created the bus ('C'), open it and
 * subscribe to pattern (not for the baseline), report ready, wait for 'G'.
 * Returns 0 to go on, -1 to stop (everything is closed then).
 */
static int wk_start(struct worker *w, const char *pattern, msgbus_bus **bus,
                    msgbus_sub **sub)
{
	int rc;

	if (bus)
		*bus = NULL;
	if (sub)
		*sub = NULL;
	if (wk_cmd(w) != 'C')
		return -1;
	if (w->transport != T_BASE) {
		rc = msgbus_open(bus, w->url, w->opts);
		if (rc != MSGBUS_OK) {
			wfail(w->res, "worker %d: msgbus_open(%s): %s", w->id,
			      w->url, msgbus_strerror(rc));
			*bus = NULL;
			goto fail;
		}
		rc = msgbus_subscribe(*bus, pattern, 0, sub);
		if (rc != MSGBUS_OK) {
			wfail(w->res, "worker %d: msgbus_subscribe(%s): %s",
			      w->id, pattern, msgbus_strerror(rc));
			*sub = NULL;
			goto fail;
		}
	}
	wk_ack(w, 'R');
	if (wk_cmd(w) == 'G')
		return 0;
	if (sub && *sub)
		msgbus_unsubscribe(*sub);
	if (bus && *bus)
		msgbus_close(*bus);
	return -1;
fail:
	if (bus && *bus)
		msgbus_close(*bus);
	wk_ack(w, 'E');
	(void)wk_cmd(w);
	return -1;
}

static void wk_finish(struct worker *w, msgbus_bus *bus, msgbus_sub *sub)
{
	int rc;

	if (sub && (rc = msgbus_unsubscribe(sub)) != MSGBUS_OK)
		wfail(w->res, "worker %d: msgbus_unsubscribe: %s", w->id,
		      msgbus_strerror(rc));
	if (bus && (rc = msgbus_close(bus)) != MSGBUS_OK)
		wfail(w->res, "worker %d: msgbus_close: %s", w->id,
		      msgbus_strerror(rc));
}

static void pin_self(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(0, sizeof(set), &set); /* best effort */
}

/*
 * Two-party tests (rtt, tput) put the parent and its one worker on two
 * different CPUs, baseline and libmsgbus alike, so that a scheduler decision
 * to stack both on one core does not decide the figure. Undone by unpin().
 */
static void sess_pin(struct session *s)
{
	if (!g_pin || g_cpu[1] < 0 || s->nw != 1)
		return;
	s->w[0].cpu = g_cpu[1];
	pin_self(g_cpu[0]);
}

static void unpin(void)
{
	if (g_pin && g_cpu[1] >= 0)
		sched_setaffinity(0, sizeof(g_mask), &g_mask);
}

static void *thread_main(void *arg)
{
	struct worker *w = arg;
	if (w->cpu >= 0)
		pin_self(w->cpu);
	w->rc = w->fn(w);
	return NULL;
}

static void sess_init(struct session *s, int transport, int nw, worker_fn fn,
                      size_t size)
{
	memset(s, 0, sizeof(*s));
	s->transport = transport;
	s->nw = nw;
	snprintf(s->name, sizeof(s->name), "bench.%ld.%u", (long)getpid(),
	         ++g_busno);
	snprintf(s->url, sizeof(s->url), "%s://%s",
	         transport == T_SHM ? "shm" : "inproc", s->name);
	snprintf(s->shm_path, sizeof(s->shm_path), "/dev/shm/msgbus.%s",
	         s->name);
	memset(g_res, 0, MAX_WORKERS * sizeof(*g_res));
	for (int i = 0; i < nw; i++) {
		struct worker *w = &s->w[i];
		w->id = i;
		w->transport = transport;
		w->size = size;
		w->url = s->url;
		w->opts = &s->opts;
		w->fn = fn;
		w->res = &g_res[i];
		w->cmd_r = w->cmd_w = w->ack_r = w->ack_w = -1;
		w->cpu = -1;
	}
}

static void close_fd(int *fd)
{
	if (*fd >= 0) {
		close(*fd);
		*fd = -1;
	}
}

/* Start the workers: threads for inproc, processes otherwise. */
static int sess_spawn(struct session *s)
{
	int p[2];

	for (int i = 0; i < s->nw; i++) {
		struct worker *w = &s->w[i];
		if (pipe2(p, O_CLOEXEC) < 0)
			return -1;
		w->cmd_r = p[0];
		w->cmd_w = p[1];
		if (pipe2(p, O_CLOEXEC) < 0)
			return -1;
		w->ack_r = p[0];
		w->ack_w = p[1];
	}
	if (s->transport == T_SHM)
		snprintf(g_shm_path, sizeof(g_shm_path), "%s", s->shm_path);
	fflush(NULL);
	for (int i = 0; i < s->nw; i++) {
		struct worker *w = &s->w[i];
		if (s->transport == T_INPROC) {
			if (pthread_create(&w->th, NULL, thread_main, w) != 0)
				return -1;
			s->spawned++;
			continue;
		}
		w->pid = fork();
		if (w->pid < 0)
			return -1;
		if (w->pid == 0) {
			g_in_child = 1;
			signal(SIGINT, SIG_DFL);
			signal(SIGTERM, SIG_DFL);
			signal(SIGALRM, SIG_DFL);
			for (int j = 0; j < s->nw; j++) {
				close_fd(&s->w[j].cmd_w);
				close_fd(&s->w[j].ack_r);
				if (j != i) {
					close_fd(&s->w[j].cmd_r);
					close_fd(&s->w[j].ack_w);
				}
			}
			if (w->cpu >= 0)
				pin_self(w->cpu);
			_exit(w->fn(w) ? 1 : 0);
		}
		g_children[i] = w->pid;
		s->spawned++;
	}
	if (s->transport != T_INPROC) {
		for (int i = 0; i < s->nw; i++) {
			close_fd(&s->w[i].cmd_r);
			close_fd(&s->w[i].ack_w);
		}
	}
	return 0;
}

static void sess_cmd(struct session *s, char c)
{
	for (int i = 0; i < s->spawned; i++) {
		ssize_t n;
		do {
			n = write(s->w[i].cmd_w, &c, 1);
		} while (n < 0 && errno == EINTR);
	}
}

/* Number of workers that answered 'R'. */
static int sess_acks(struct session *s)
{
	int ready = 0;

	for (int i = 0; i < s->spawned; i++) {
		char c = 0;
		ssize_t n;
		do {
			n = read(s->w[i].ack_r, &c, 1);
		} while (n < 0 && errno == EINTR);
		if (n == 1 && c == 'R')
			ready++;
	}
	return ready;
}

/* Wait for every worker; returns the number that failed. */
static int sess_join(struct session *s)
{
	int bad = 0;

	for (int i = 0; i < s->spawned; i++) {
		struct worker *w = &s->w[i];
		if (s->transport == T_INPROC) {
			pthread_join(w->th, NULL);
		} else {
			int st = 0;
			while (waitpid(w->pid, &st, 0) < 0 && errno == EINTR)
				;
			g_children[i] = 0;
			if (WIFSIGNALED(st))
				wfail(w->res, "worker %d killed by signal %d",
				      i, WTERMSIG(st));
			else if (WEXITSTATUS(st) != 0 && !w->res->failed)
				wfail(w->res, "worker %d exited with %d", i,
				      WEXITSTATUS(st));
		}
		if (w->res->failed)
			bad++;
	}
	for (int i = 0; i < s->nw; i++) {
		close_fd(&s->w[i].cmd_r);
		close_fd(&s->w[i].cmd_w);
		close_fd(&s->w[i].ack_r);
		close_fd(&s->w[i].ack_w);
	}
	s->spawned = 0;
	return bad;
}

static void sess_kill(struct session *s)
{
	if (s->transport == T_INPROC)
		return;
	for (int i = 0; i < s->spawned; i++)
		if (s->w[i].pid > 0)
			kill(s->w[i].pid, SIGKILL);
}

/* After the last close: the segment must be gone. */
static void sess_check_leftover(struct session *s)
{
	if (s->transport == T_SHM && access(s->shm_path, F_OK) == 0) {
		fprintf(stderr,
		        "bench: LIBRARY PROBLEM: %s left behind after every "
		        "handle closed; removing it\n",
		        s->shm_path);
		g_leftovers++;
		unlink(s->shm_path);
	}
	g_shm_path[0] = '\0';
}

static void report_workers(struct session *s, const char *what)
{
	for (int i = 0; i < s->nw; i++)
		if (s->w[i].res->failed)
			fprintf(stderr, "bench: %s %s: %s\n", tname[s->transport],
			        what, s->w[i].res->err);
}

/*
 * Parent side of the handshake once its own bus is open (or bus_ok is 0 when
 * opening failed): returns 0 when every worker is ready and has been told to
 * go, else -1 after stopping and joining them.
 */
static int sess_start(struct session *s, int bus_ok, const char *what)
{
	if (!bus_ok) {
		sess_cmd(s, 'Q');
		sess_join(s);
		return -1;
	}
	sess_cmd(s, 'C');
	if (sess_acks(s) != s->spawned) {
		sess_cmd(s, 'Q');
		sess_join(s);
		report_workers(s, what);
		return -1;
	}
	sess_cmd(s, 'G');
	return 0;
}

static void lib_opts(msgbus_options *o, size_t size)
{
	msgbus_options init = MSGBUS_OPTIONS_INIT;

	*o = init;
	(void)size; /* v2: every size of the runs travels inline by default */
	o->spin_us = g_spin_us;
}

/*
 * Baseline ring size, chosen as the best measured here: 1 MiB for 64 B
 * (a 256 KiB ring makes 64 B throughput bimodal and fan-out 3x slower),
 * 256 KiB for 4 KiB and 64 KiB (15-20% faster than 1 MiB: stays in L2).
 */
static size_t ring_bytes(size_t size)
{
	if (g_ring_bytes)
		return g_ring_bytes;
	return size <= 256 ? (size_t)1 << 20 : (size_t)1 << 18;
}

static int parent_open(struct session *s, msgbus_bus **bus, const char *what)
{
	int rc = msgbus_open(bus, s->url, &s->opts);

	if (rc != MSGBUS_OK) {
		fprintf(stderr, "bench: %s %s: msgbus_open(%s): %s\n",
		        tname[s->transport], what, s->url, msgbus_strerror(rc));
		*bus = NULL;
		return 0;
	}
	return 1;
}

/* ------------------------------------------------------------------ */
/* payload: seq at [0,8), flag at [8,16), seq again at [len-8,len)     */

static void payload_init(unsigned char *buf, size_t size)
{
	for (size_t i = 0; i < size; i++)
		buf[i] = (unsigned char)(i * 131u + 7u);
	put_u64(buf + 8, 0);
}

static void payload_mark(unsigned char *buf, size_t size, uint64_t seq)
{
	put_u64(buf, seq);
	put_u64(buf + size - 8, seq);
}

static void payload_end(unsigned char *buf, size_t size, uint64_t seq)
{
	payload_mark(buf, size, seq);
	put_u64(buf + 8, END_MAGIC);
}

/* Check one received message: 1 = end marker, 0 = data (maybe bad). */
static int payload_check(struct wres *res, const unsigned char *d, size_t len,
                         size_t size, uint64_t *expect)
{
	uint64_t seq;

	if (len != size || len < 24) {
		wfail(res, "message %llu: length %zu, expected %zu",
		      (unsigned long long)*expect, len, size);
		if (len < 24) {
			++*expect;
			return 0;
		}
	}
	seq = get_u64(d);
	if (get_u64(d + 8) == END_MAGIC) {
		if (seq != *expect)
			wfail(res, "end marker says %llu messages, received "
			           "%llu",
			      (unsigned long long)seq,
			      (unsigned long long)*expect);
		return 1;
	}
	if (seq != *expect)
		wfail(res, "got message %llu, expected %llu (lost or "
		           "reordered)",
		      (unsigned long long)seq, (unsigned long long)*expect);
	else if (get_u64(d + len - 8) != seq)
		wfail(res, "message %llu: payload tail corrupt",
		      (unsigned long long)seq);
	*expect = seq + 1;
	return 0;
}

/* ------------------------------------------------------------------ */
/* workers                                                             */

/* B of the ping-pong: echo every ping as a pong until the end marker. */
static int w_echo(struct worker *w)
{
	msgbus_bus *bus;
	msgbus_sub *sub;
	int rc;

	if (w->transport == T_BASE) {
		br_cons c;
		br_prod p;
		br_cons_init(&c, 0);
		br_prod_init(&p);
		if (wk_start(w, NULL, NULL, NULL))
			return 1;
		for (;;) {
			size_t len;
			const unsigned char *d = br_peek(w->ra, &c, &len);
			void *o = br_reserve(w->rb, &p, len);
			int end = len >= 16 && get_u64(d + 8) == END_MAGIC;
			memcpy(o, d, len);
			br_commit(w->rb, &p);
			br_release(w->ra, &c, len);
			if (end)
				break;
		}
		return 0;
	}
	if (wk_start(w, "ping", &bus, &sub))
		return 1;
	for (;;) {
		msgbus_msg *m;
		const unsigned char *d;
		size_t len;
		int end;

		rc = msgbus_recv(sub, &m, -1);
		if (rc != MSGBUS_OK) {
			wfail(w->res, "echo: msgbus_recv: %s",
			      msgbus_strerror(rc));
			break;
		}
		d = msgbus_msg_data(m);
		len = msgbus_msg_len(m);
		end = len >= 16 && get_u64(d + 8) == END_MAGIC;
		rc = msgbus_publish(bus, "pong", d, len, -1);
		msgbus_msg_release(m);
		if (rc != MSGBUS_OK) {
			wfail(w->res, "echo: msgbus_publish: %s",
			      msgbus_strerror(rc));
			break;
		}
		if (end)
			break;
	}
	wk_finish(w, bus, sub);
	return w->res->failed;
}

/* A lossless subscriber that verifies every message. */
static int w_sink(struct worker *w)
{
	struct wres *res = w->res;
	uint64_t expect = 0;
	msgbus_bus *bus;
	msgbus_sub *sub;
	int rc;

	if (w->transport == T_BASE) {
		br_cons c;
		br_cons_init(&c, (unsigned)w->id);
		if (wk_start(w, NULL, NULL, NULL))
			return 1;
		for (;;) {
			size_t len;
			const unsigned char *d = br_peek(w->ra, &c, &len);
			int end = payload_check(res, d, len, w->size, &expect);
			br_release(w->ra, &c, len);
			if (end)
				break;
		}
		res->t_end = now_ns();
		res->count = expect;
		return res->failed;
	}
	if (wk_start(w, "tput", &bus, &sub))
		return 1;
	for (;;) {
		msgbus_msg *m;
		int end;

		rc = msgbus_recv(sub, &m, -1);
		if (rc != MSGBUS_OK) {
			wfail(res, "sink: msgbus_recv: %s", msgbus_strerror(rc));
			break;
		}
		end = payload_check(res, msgbus_msg_data(m), msgbus_msg_len(m),
		                    w->size, &expect);
		msgbus_msg_release(m);
		if (end)
			break;
	}
	res->t_end = now_ns();
	res->count = expect;
	wk_finish(w, bus, sub);
	return res->failed;
}

/* A receiver blocked in msgbus_recv(-1) until the parent publishes. */
static int w_idle(struct worker *w)
{
	struct wres *res = w->res;
	int who = w->transport == T_INPROC ? RUSAGE_THREAD : RUSAGE_SELF;
	struct rusage r0, r1;
	msgbus_bus *bus;
	msgbus_sub *sub;
	msgbus_msg *m;
	uint64_t t0, t1;
	int rc;

	if (wk_start(w, "idle", &bus, &sub))
		return 1;
	getrusage(who, &r0);
	t0 = now_ns();
	rc = msgbus_recv(sub, &m, -1);
	t1 = now_ns();
	getrusage(who, &r1);
	if (rc != MSGBUS_OK) {
		wfail(res, "idle: msgbus_recv: %s", msgbus_strerror(rc));
	} else {
		double cpu = tv_sec(r1.ru_utime) - tv_sec(r0.ru_utime) +
		             tv_sec(r1.ru_stime) - tv_sec(r0.ru_stime);
		res->cpu_pct = 100.0 * cpu / ((double)(t1 - t0) / 1e9);
		res->t_end = t1 - t0;
		msgbus_msg_release(m);
	}
	wk_finish(w, bus, sub);
	return res->failed;
}

/* ------------------------------------------------------------------ */
/* parent sides                                                        */

struct meas {
	int ok;
	double a, b; /* rtt: median, p99 us; tput: msgs/s; fanout: min, mean */
	int capped;
};

static unsigned char *alloc_buf(size_t size)
{
	void *p = NULL;
	if (posix_memalign(&p, 64, size) != 0) {
		fprintf(stderr, "bench: out of memory\n");
		exit(1);
	}
	payload_init(p, size);
	return p;
}

static struct meas run_rtt(int transport, size_t size)
{
	struct meas r = { 0, 0, 0, 0 };
	struct session s;
	msgbus_bus *bus = NULL;
	msgbus_sub *sub = NULL;
	br_ring *ra = NULL, *rb = NULL;
	br_prod p;
	br_cons c;
	uint64_t total = RTT_WARMUP + (uint64_t)g_n, i, k = 0, tstart;
	uint64_t *samples = malloc((size_t)g_n * sizeof(*samples));
	unsigned char *buf = alloc_buf(size);
	int rc, ok = 1;

	sess_init(&s, transport, 1, w_echo, size);
	lib_opts(&s.opts, size);
	sess_pin(&s);
	if (!samples) {
		fprintf(stderr, "bench: out of memory\n");
		exit(1);
	}
	if (transport == T_BASE) {
		ra = br_create(ring_bytes(size), 1);
		rb = br_create(ring_bytes(size), 1);
		if (!ra || !rb) {
			fprintf(stderr, "bench: baseline ring: %s\n",
			        strerror(errno));
			exit(1);
		}
		s.w[0].ra = ra;
		s.w[0].rb = rb;
		br_prod_init(&p);
		br_cons_init(&c, 0);
	}
	if (sess_spawn(&s) < 0) {
		fprintf(stderr, "bench: spawn: %s\n", strerror(errno));
		exit(1);
	}
	if (transport != T_BASE) {
		int bus_ok = parent_open(&s, &bus, "rtt");
		if (bus_ok && (rc = msgbus_subscribe(bus, "pong", 0, &sub))) {
			fprintf(stderr, "bench: %s rtt: msgbus_subscribe: %s\n",
			        tname[transport], msgbus_strerror(rc));
			bus_ok = 0;
		}
		if (sess_start(&s, bus_ok, "rtt") < 0)
			goto out;
	} else if (sess_start(&s, 1, "rtt") < 0) {
		goto out;
	}

	tstart = now_ns();
	for (i = 0; i < total + 1; i++) {
		const unsigned char *d;
		size_t len;
		uint64_t t0, t1;
		msgbus_msg *m = NULL;
		int end = i == total;

		if (end)
			payload_end(buf, size, i);
		else
			payload_mark(buf, size, i);
		t0 = now_ns();
		if (transport == T_BASE) {
			void *o = br_reserve(ra, &p, size);
			memcpy(o, buf, size);
			br_commit(ra, &p);
			d = br_peek(rb, &c, &len);
		} else {
			rc = msgbus_publish(bus, "ping", buf, size, -1);
			if (rc == MSGBUS_OK)
				rc = msgbus_recv(sub, &m, -1);
			if (rc != MSGBUS_OK) {
				fprintf(stderr, "bench: %s rtt: %s\n",
				        tname[transport], msgbus_strerror(rc));
				ok = 0;
				break;
			}
			d = msgbus_msg_data(m);
			len = msgbus_msg_len(m);
		}
		t1 = now_ns();
		if (len != size || get_u64(d) != i || get_u64(d + size - 8) != i) {
			if (ok)
				fprintf(stderr,
				        "bench: %s rtt: round trip %llu came "
				        "back wrong\n",
				        tname[transport], (unsigned long long)i);
			ok = 0;
		}
		if (transport == T_BASE)
			br_release(rb, &c, len);
		else
			msgbus_msg_release(m);
		if (end)
			break;
		if (i >= RTT_WARMUP)
			samples[k++] = t1 - t0;
		if (t1 - tstart > RUN_CAP_NS && k >= 100 && i + 1 < total) {
			total = i + 1; /* next iteration sends the end marker */
			r.capped = 1;
		}
	}
	if (!ok && transport == T_SHM)
		sess_kill(&s);
	if (!ok && transport == T_INPROC) {
		fprintf(stderr, "bench: cannot stop the inproc echo thread\n");
		exit(1);
	}
	if (sess_join(&s))
		ok = 0;
	report_workers(&s, "rtt");
	if (ok && k > 0) {
		qsort(samples, k, sizeof(*samples), cmp_u64);
		r.ok = 1;
		r.a = (double)samples[k / 2] / 1e3;
		r.b = (double)samples[(k - 1) * 99 / 100] / 1e3;
	}
out:
	if (sub && (rc = msgbus_unsubscribe(sub)) != MSGBUS_OK) {
		fprintf(stderr, "bench: msgbus_unsubscribe: %s\n",
		        msgbus_strerror(rc));
		r.ok = 0;
	}
	if (bus && (rc = msgbus_close(bus)) != MSGBUS_OK) {
		fprintf(stderr, "bench: msgbus_close: %s\n",
		        msgbus_strerror(rc));
		r.ok = 0;
	}
	sess_check_leftover(&s);
	unpin();
	br_destroy(ra);
	br_destroy(rb);
	free(samples);
	free(buf);
	return r;
}

/*
 * One publisher (this thread/process), nsubs verifying subscribers.
 * r.a = slowest subscriber msgs/s, r.b = mean over subscribers.
 */
static struct meas run_stream(int transport, size_t size, int nsubs,
                              uint64_t total)
{
	struct meas r = { 0, 0, 0, 0 };
	struct session s;
	msgbus_bus *bus = NULL;
	br_ring *ring = NULL;
	br_prod p;
	uint64_t warm = total / 20, i, tstart = 0, tcheck;
	unsigned char *buf = alloc_buf(size);
	const char *what = nsubs > 1 ? "fanout" : "tput";
	int rc = MSGBUS_OK, ok = 1;

	sess_init(&s, transport, nsubs, w_sink, size);
	lib_opts(&s.opts, size);
	sess_pin(&s);
	if (transport == T_BASE) {
		ring = br_create(ring_bytes(size), (unsigned)nsubs);
		if (!ring) {
			fprintf(stderr, "bench: baseline ring: %s\n",
			        strerror(errno));
			exit(1);
		}
		for (int j = 0; j < nsubs; j++)
			s.w[j].ra = ring;
		br_prod_init(&p);
	}
	if (sess_spawn(&s) < 0) {
		fprintf(stderr, "bench: spawn: %s\n", strerror(errno));
		exit(1);
	}
	if (sess_start(&s, transport == T_BASE || parent_open(&s, &bus, what),
	               what) < 0)
		goto out;

	for (i = 0; i < total; i++) {
		if (i == warm)
			tstart = now_ns();
		payload_mark(buf, size, i);
		if (transport == T_BASE) {
			void *o = br_reserve(ring, &p, size);
			memcpy(o, buf, size);
			br_commit(ring, &p);
		} else {
			rc = msgbus_publish(bus, "tput", buf, size, -1);
			if (rc != MSGBUS_OK)
				break;
		}
		if ((i & 255) == 255 && i > warm) {
			tcheck = now_ns();
			if (tcheck - tstart > RUN_CAP_NS) {
				i++;
				r.capped = 1;
				break;
			}
		}
	}
	if (rc == MSGBUS_OK) {
		payload_end(buf, size, i);
		if (transport == T_BASE) {
			void *o = br_reserve(ring, &p, size);
			memcpy(o, buf, size);
			br_commit(ring, &p);
		} else {
			rc = msgbus_publish(bus, "tput", buf, size, -1);
		}
	}
	if (rc != MSGBUS_OK) {
		fprintf(stderr, "bench: %s %s %s: msgbus_publish: %s\n",
		        tname[transport], what, size_str(size),
		        msgbus_strerror(rc));
		ok = 0;
		if (transport == T_INPROC) {
			fprintf(stderr, "bench: cannot stop the inproc "
			                "subscriber threads\n");
			exit(1);
		}
		sess_kill(&s);
	}
	if (sess_join(&s))
		ok = 0;
	report_workers(&s, what);
	if (ok && i > warm) {
		double sum = 0, mn = 0;
		for (int j = 0; j < nsubs; j++) {
			double secs = (double)(g_res[j].t_end - tstart) / 1e9;
			double rate = (double)(i - warm) / secs;
			sum += rate;
			if (j == 0 || rate < mn)
				mn = rate;
		}
		r.ok = 1;
		r.a = mn;
		r.b = sum / nsubs;
	}
out:
	if (bus && (rc = msgbus_close(bus)) != MSGBUS_OK) {
		fprintf(stderr, "bench: msgbus_close: %s\n",
		        msgbus_strerror(rc));
		r.ok = 0;
	}
	sess_check_leftover(&s);
	unpin();
	br_destroy(ring);
	free(buf);
	return r;
}

static struct meas run_idle(int transport)
{
	struct meas r = { 0, 0, 0, 0 };
	struct session s;
	msgbus_bus *bus = NULL;
	unsigned char buf[64];
	struct timespec ts = { IDLE_MS / 1000, (IDLE_MS % 1000) * 1000000L };
	int rc;

	memset(buf, 0, sizeof(buf));
	sess_init(&s, transport, 1, w_idle, 64);
	lib_opts(&s.opts, 64);
	if (sess_spawn(&s) < 0) {
		fprintf(stderr, "bench: spawn: %s\n", strerror(errno));
		exit(1);
	}
	if (sess_start(&s, parent_open(&s, &bus, "idle"), "idle") < 0)
		goto out;
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
	rc = msgbus_publish(bus, "idle", buf, sizeof(buf), -1);
	if (rc != MSGBUS_OK) {
		fprintf(stderr, "bench: %s idle: msgbus_publish: %s\n",
		        tname[transport], msgbus_strerror(rc));
		if (transport == T_INPROC)
			exit(1);
		sess_kill(&s);
	}
	if (sess_join(&s) == 0 && rc == MSGBUS_OK) {
		r.ok = 1;
		r.a = g_res[0].cpu_pct;
		r.b = (double)g_res[0].t_end / 1e9;
	}
	report_workers(&s, "idle");
out:
	if (bus && (rc = msgbus_close(bus)) != MSGBUS_OK) {
		fprintf(stderr, "bench: msgbus_close: %s\n",
		        msgbus_strerror(rc));
		r.ok = 0;
	}
	sess_check_leftover(&s);
	return r;
}

/* ------------------------------------------------------------------ */
/* other load on the machine while we measured                         */

static void print_load(const struct load_mark *a, const struct load_mark *b)
{
	double pct = load_other_pct(a, b);

	if (pct < 0)
		return;
	if (pct >= 5.0)
		printf("          [other processes used %.0f%% of this machine "
		       "during these runs - figures are disturbed]\n",
		       pct);
	else if (g_verbose)
		printf("          [other processes during these runs: %.1f%%]\n",
		       pct);
}

/* ------------------------------------------------------------------ */
/* measurements, repeats, report                                       */

enum { K_RTT64, K_RTT4K, K_TPUT64, K_TPUT4K, K_TPUT64K, K_FAN64, K_IDLE,
       K_COUNT };

struct keyinfo {
	int test;
	size_t size;
};

static const struct keyinfo keys[K_COUNT] = {
	{ TEST_RTT, 64 },    { TEST_RTT, 4096 },    { TEST_TPUT, 64 },
	{ TEST_TPUT, 4096 }, { TEST_TPUT, 65536 },  { TEST_FANOUT, 64 },
	{ TEST_IDLE, 64 },
};

struct stat_ {
	int n, failed, capped, ran;
	double a[MAX_REPS], b[MAX_REPS];
	double ma, mb; /* medians */
};

static struct stat_ st[K_COUNT][T_COUNT];

static struct meas run_key(int key, int transport)
{
	size_t size = keys[key].size;

	switch (keys[key].test) {
	case TEST_RTT:
		return run_rtt(transport, size);
	case TEST_TPUT:
		return run_stream(transport, size, 1,
		                  (uint64_t)g_n * (size == 64     ? 100
		                                   : size == 4096 ? 10
		                                                  : 1));
	case TEST_FANOUT:
		return run_stream(transport, size, FANOUT_SUBS,
		                  (uint64_t)g_n * 50);
	default:
		return run_idle(transport);
	}
}

static int key_has(int key, int transport)
{
	return !(keys[key].test == TEST_IDLE && transport == T_BASE);
}

static void print_key(int key, const struct load_mark *l0,
                      const struct load_mark *l1)
{
	const struct keyinfo *ki = &keys[key];
	struct stat_ *base = &st[key][T_BASE];
	int have_base = base->ran && base->n > 0;

	for (int t = 0; t < T_COUNT; t++) {
		struct stat_ *x = &st[key][t];
		char ratio[80] = "";
		char spread[80] = "";

		if (!x->ran)
			continue;
		if (x->n == 0) {
			printf("%-8s  %-6s %-5s  FAILED (%d of %d runs)\n",
			       tname[t], testname[ki->test],
			       ki->test == TEST_IDLE ? "" : size_str(ki->size),
			       x->failed, x->failed);
			continue;
		}
		x->ma = median_dbl(x->a, x->n);
		x->mb = median_dbl(x->b, x->n);
		if (t != T_BASE && have_base && base->ma > 0 && base->mb > 0) {
			if (ki->test == TEST_RTT)
				snprintf(ratio, sizeof(ratio),
				         "  (%.2fx baseline, p99 %.2fx)",
				         x->ma / base->ma, x->mb / base->mb);
			else
				snprintf(ratio, sizeof(ratio),
				         "  (%.2fx baseline)", x->ma / base->ma);
		}
		if (g_verbose && x->n > 1)
			snprintf(spread, sizeof(spread), "  [runs %.3g..%.3g]",
			         min_dbl(x->a, x->n), max_dbl(x->a, x->n));
		switch (ki->test) {
		case TEST_RTT:
			printf("%-8s  rtt    %-5s  median %8.2fus  p99 %8.2fus"
			       "%s%s",
			       tname[t], size_str(ki->size), x->ma, x->mb,
			       ratio, spread);
			break;
		case TEST_TPUT:
			printf("%-8s  tput   %-5s  %8.2f M msgs/s  %9.0f MB/s"
			       "%s%s",
			       tname[t], size_str(ki->size), x->ma / 1e6,
			       x->ma * (double)ki->size / 1e6, ratio, spread);
			break;
		case TEST_FANOUT:
			printf("%-8s  fanout 1:3 %s  per sub: slowest %6.2f M "
			       "msgs/s, mean %6.2f M%s%s",
			       tname[t], size_str(ki->size), x->ma / 1e6,
			       x->mb / 1e6, ratio, spread);
			break;
		default:
			printf("%-8s  idle   recv(-1) %.2fs  cpu %6.3f%% of a "
			       "core%s",
			       tname[t], x->mb, x->ma, spread);
			break;
		}
		if (x->failed)
			printf("  [%d run(s) FAILED]", x->failed);
		if (x->capped)
			printf("  [%d run(s) hit the 1 s cap]", x->capped);
		printf("\n");
	}
	if (ki->test == TEST_IDLE)
		printf("%-8s  idle   spins by design: 100%% of a core\n",
		       tname[T_BASE]);
	print_load(l0, l1);
	fflush(stdout);
}

static void run_all(void)
{
	static const char *const titles[TEST_COUNT] = {
		"ping-pong round trip",
		"1:1 throughput, lossless, publisher timeout -1",
		"1:3 fan-out, lossless",
		"idle receiver CPU",
	};
	int last_test = -1;

	for (int key = 0; key < K_COUNT; key++) {
		int test = keys[key].test;
		struct load_mark l0, l1;

		if (!(g_tests & (1u << test)))
			continue;
		if (test != last_test) {
			printf("\n== %s ==\n", titles[test]);
			last_test = test;
		}
		load_sample(&l0);
		for (int rep = 0; rep < g_reps; rep++) {
			for (int t = 0; t < T_COUNT; t++) {
				struct meas m;

				if (!(g_transports & (1u << t)) ||
				    !key_has(key, t))
					continue;
				st[key][t].ran = 1;
				alarm(WATCHDOG_S);
				m = run_key(key, t);
				alarm(0);
				if (m.ok) {
					int n = st[key][t].n++;
					st[key][t].a[n] = m.a;
					st[key][t].b[n] = m.b;
				} else {
					st[key][t].failed++;
					g_failures++;
				}
				st[key][t].capped += m.capped;
			}
		}
		load_sample(&l1);
		print_key(key, &l0, &l1);
	}
}

/* ------------------------------------------------------------------ */
/* subject: a never-seen subject against a known one                  */

#define SUBJ_LEN 32
#define SUBJ_BATCH 1000

/* ns per publish over n publishes on subjects[i] (a SUBJ_LEN stride),
 * timing each batch of SUBJ_BATCH and draining ">" between batches; 0 on
 * a failure (reported). */
static double subject_run(int transport, const char *subjects, long n)
{
	char url[96];
	msgbus_options o;
	msgbus_bus *bus = NULL;
	msgbus_sub *sub = NULL;
	msgbus_msg *m;
	unsigned char payload[64] = { 0 };
	uint64_t ns = 0;
	long got = 0;
	int rc;

	snprintf(url, sizeof(url), "%s://bench.%ld.%u", transport == T_SHM ? "shm" : "inproc",
	         (long)getpid(), ++g_busno);
	lib_opts(&o, sizeof(payload));
	rc = msgbus_open(&bus, url, &o);
	if (rc == MSGBUS_OK)
		rc = msgbus_subscribe(bus, ">", 0, &sub);
	for (long i = 0; rc == MSGBUS_OK && i < n; i += SUBJ_BATCH) {
		long end = i + SUBJ_BATCH < n ? i + SUBJ_BATCH : n;
		uint64_t t0 = now_ns();

		for (long k = i; rc == MSGBUS_OK && k < end; k++)
			rc = msgbus_publish(bus, subjects + k * SUBJ_LEN, payload, sizeof(payload), 0);
		ns += now_ns() - t0;
		while (rc == MSGBUS_OK && msgbus_recv(sub, &m, 0) == MSGBUS_OK) {
			if (strcmp(msgbus_msg_subject(m), subjects + got * SUBJ_LEN) != 0)
				rc = MSGBUS_EPROTO;
			got++;
			msgbus_msg_release(m);
		}
	}
	if (rc == MSGBUS_OK && got != n)
		rc = MSGBUS_EPROTO;
	if (rc != MSGBUS_OK)
		fprintf(stderr, "bench: %s subject: %s (%ld of %ld received in order)\n",
		        tname[transport], msgbus_strerror(rc), got, n);
	if (bus)
		msgbus_close(bus);
	return rc == MSGBUS_OK ? (double)ns / (double)n : 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static void run_subject(void)
{
	long n = 10 * g_n;
	char *known = malloc((size_t)n * SUBJ_LEN), *fresh = malloc((size_t)n * SUBJ_LEN);
	char *cycle = malloc((size_t)n * SUBJ_LEN);

	printf("\n== publish on a never-seen subject vs a known one, 64 B, ns per publish ==\n");
	if (!known || !fresh || !cycle) {
		fprintf(stderr, "bench: subject: out of memory\n");
		g_failures++;
		free(known);
		free(fresh);
		free(cycle);
		return;
	}
	for (long i = 0; i < n; i++) {
		snprintf(known + i * SUBJ_LEN, SUBJ_LEN, "subj.known.x");
		snprintf(fresh + i * SUBJ_LEN, SUBJ_LEN, "subj.%ld.x", i);
		snprintf(cycle + i * SUBJ_LEN, SUBJ_LEN, "subj.k%ld.x", i % 64);
	}
	for (int t = T_INPROC; t <= T_SHM; t++) {
		double kv[MAX_REPS], nv[MAX_REPS], cv[MAX_REPS];
		int ok = 1;

		if (!(g_transports & (1u << t)))
			continue;
		for (int rep = 0; rep < g_reps && ok; rep++) {
			alarm(WATCHDOG_S);
			kv[rep] = subject_run(t, known, n);
			nv[rep] = subject_run(t, fresh, n);
			cv[rep] = subject_run(t, cycle, n);
			alarm(0);
			ok = kv[rep] > 0 && nv[rep] > 0 && cv[rep] > 0;
		}
		if (!ok) {
			g_failures++;
			printf("  %-6s FAILED\n", tname[t]);
			continue;
		}
		qsort(kv, (size_t)g_reps, sizeof(double), cmp_double);
		qsort(nv, (size_t)g_reps, sizeof(double), cmp_double);
		qsort(cv, (size_t)g_reps, sizeof(double), cmp_double);
		double k = kv[g_reps / 2], v = nv[g_reps / 2], c = cv[g_reps / 2];
		printf("  %-6s same subject %7.1f ns, 64 known in turn %7.1f ns, "
		       "never-seen %7.1f ns\n",
		       tname[t], k, c, v);
		printf("  %-6s never-seen <= 2x same subject:    %5.2fx  %s\n", tname[t],
		       v / k, v <= 2 * k ? "PASS" : "MISS");
		printf("  %-6s never-seen <= 2x known in turn:   %5.2fx  %s\n", tname[t],
		       v / c, v <= 2 * c ? "PASS" : "MISS");
	}
	free(known);
	free(fresh);
	free(cycle);
}

static int target_line(const char *label, int key, int t, int ratio,
                       double limit, int at_most)
{
	struct stat_ *x = &st[key][t], *b = &st[key][T_BASE];
	double v;
	int pass;

	if (!x->ran || !(ratio ? b->ran && b->n > 0 : 1)) {
		printf("  %-46s  not run\n", label);
		return 0;
	}
	if (x->n == 0) {
		printf("  %-46s  FAILED runs                MISS\n", label);
		return 1;
	}
	v = ratio ? x->ma / b->ma : x->ma / 1e6;
	pass = at_most ? v <= limit : v >= limit;
	printf("  %-46s  %8.2f%s  %s", label, v,
	       ratio ? "x baseline" : " M msgs/s  ", pass ? "PASS" : "MISS");
	/* An absolute target depends on how fast the (shared) host was. */
	if (!ratio && b->ran && b->n > 0)
		printf("  (baseline %.2f M msgs/s, %.2fx, in the same runs)",
		       b->ma / 1e6, x->ma / b->ma);
	printf("\n");
	return !pass;
}

static void print_targets(void)
{
	printf("\n== targets (median of %d runs) ==\n", g_reps);
	target_line("shm    64B round trip median <= 2x baseline", K_RTT64,
	            T_SHM, 1, 2.0, 1);
	for (int t = T_INPROC; t <= T_SHM; t++) {
		char l[64];
		if (!(g_transports & (1u << t)))
			continue;
		snprintf(l, sizeof(l), "%-6s 64B throughput >= 10 M msgs/s",
		         tname[t]);
		target_line(l, K_TPUT64, t, 0, 10.0, 0);
		snprintf(l, sizeof(l), "%-6s 64B throughput >= 0.4x baseline",
		         tname[t]);
		target_line(l, K_TPUT64, t, 1, 0.4, 0);
		snprintf(l, sizeof(l), "%-6s 4KiB throughput >= 0.5x baseline",
		         tname[t]);
		target_line(l, K_TPUT4K, t, 1, 0.5, 0);
		snprintf(l, sizeof(l), "%-6s fan-out 1:3 >= 5 M msgs/s per sub",
		         tname[t]);
		target_line(l, K_FAN64, t, 0, 5.0, 0);
		snprintf(l, sizeof(l), "%-6s 64KiB throughput >= 0.5x baseline",
		         tname[t]);
		target_line(l, K_TPUT64K, t, 1, 0.5, 0);
	}
	if (st[K_IDLE][T_SHM].ran && st[K_IDLE][T_SHM].n > 0) {
		double v = st[K_IDLE][T_SHM].ma;
		printf("  %-46s  %8.3f%% of a core  %s\n",
		       "shm    idle blocked receiver < 1% of a core", v,
		       v < 1.0 ? "PASS" : "MISS");
	}
}

/* Remove (and count) any segment of ours still in /dev/shm. */
static void final_shm_check(void)
{
	char prefix[64];
	DIR *d = opendir("/dev/shm");
	struct dirent *e;

	if (!d)
		return;
	snprintf(prefix, sizeof(prefix), "msgbus.bench.%ld.", (long)getpid());
	while ((e = readdir(d)) != NULL) {
		if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) {
			char path[300];
			snprintf(path, sizeof(path), "/dev/shm/%s", e->d_name);
			fprintf(stderr, "bench: leftover %s removed\n", path);
			unlink(path);
			g_leftovers++;
		}
	}
	closedir(d);
}

static unsigned parse_list(const char *arg, const char *const *names, int n)
{
	unsigned mask = 0;
	char *copy = strdup(arg), *save = NULL, *tok;

	if (!copy)
		return 0;
	for (tok = strtok_r(copy, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		int i;
		for (i = 0; i < n; i++)
			if (strcmp(tok, names[i]) == 0 ||
			    (strcmp(tok, "base") == 0 && names == tname && i == 0))
				break;
		if (i == n) {
			free(copy);
			return 0;
		}
		mask |= 1u << i;
	}
	free(copy);
	return mask;
}

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: bench [-n COUNT] [-r REPS] [-t TESTS] [-T TRANSPORTS] "
	        "[-S SPIN_US] [-B BYTES] [-p] [-v]\n"
	        "  -n COUNT   round trips per ping-pong run (default 20000); "
	        "other tests scale with it\n"
	        "  -r REPS    runs per measurement, median reported "
	        "(default 5, max %d)\n"
	        "  -t TESTS   comma list of rtt,tput,fanout,idle,subject (default all)\n"
	        "  -T LIST    comma list of baseline,inproc,shm (default all)\n"
	        "  -S SPIN_US spin_us bus option (default 100)\n"
	        "  -B BYTES   baseline ring size (default 1 MiB for 64 B, 256 KiB above)\n"
	        "  -p         do not pin rtt/tput parties to two CPUs\n"
	        "  -v         print the spread of the runs\n",
	        MAX_REPS);
}

int main(int argc, char **argv)
{
	struct sigaction sa;
	int opt;
	struct load_mark lstart, lend;

	while ((opt = getopt(argc, argv, "n:r:t:T:S:B:pvh")) != -1) {
		switch (opt) {
		case 'n':
			g_n = strtol(optarg, NULL, 10);
			if (g_n < 100 || g_n > 100000000) {
				fprintf(stderr, "bench: -n must be 100..1e8\n");
				return 2;
			}
			break;
		case 'r':
			g_reps = atoi(optarg);
			if (g_reps < 1 || g_reps > MAX_REPS) {
				fprintf(stderr, "bench: -r must be 1..%d\n",
				        MAX_REPS);
				return 2;
			}
			break;
		case 't':
			g_tests = parse_list(optarg, testname, TEST_COUNT);
			if (!g_tests) {
				usage(stderr);
				return 2;
			}
			break;
		case 'T':
			g_transports = parse_list(optarg, tname, T_COUNT);
			if (!g_transports) {
				usage(stderr);
				return 2;
			}
			break;
		case 'S':
			g_spin_us = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'B':
			g_ring_bytes = (size_t)strtoul(optarg, NULL, 0);
			if (g_ring_bytes < 131072 ||
			    (g_ring_bytes & (g_ring_bytes - 1))) {
				fprintf(stderr, "bench: -B must be a power of two "
				                ">= 131072\n");
				return 2;
			}
			break;
		case 'p':
			g_pin = 0;
			break;
		case 'v':
			g_verbose = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}

	g_res = mmap(NULL, MAX_WORKERS * sizeof(*g_res),
	             PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (g_res == MAP_FAILED) {
		perror("bench: mmap");
		return 1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_fatal_signal;
	sigaction(SIGALRM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (sched_getaffinity(0, sizeof(g_mask), &g_mask) == 0) {
		for (int c = 0, k = 0; c < CPU_SETSIZE && k < 2; c++)
			if (CPU_ISSET(c, &g_mask))
				g_cpu[k++] = c;
	}
	printf("libmsgbus %s benchmark: %ld cpus, %d runs per figure (median), "
	       "n %ld, spin_us %u\n",
	       msgbus_version(), sysconf(_SC_NPROCESSORS_ONLN), g_reps, g_n,
	       g_spin_us);
	if (g_pin && g_cpu[1] >= 0)
		printf("rtt and 1:1 tput: publisher on cpu %d, peer on cpu %d "
		       "(-p: no pinning)\n",
		       g_cpu[0], g_cpu[1]);
	printf("baseline = hand-written spinning SPSC/broadcast ring in "
	       "MAP_SHARED memory, fork()ed processes\n");
	load_sample(&lstart);
	run_all();
	if (g_tests & (1u << TEST_SUBJECT))
		run_subject();
	if (g_tests & ((1u << TEST_RTT) | (1u << TEST_TPUT) |
	               (1u << TEST_FANOUT)))
		print_targets();
	final_shm_check();
	load_sample(&lend);
	printf("\ntotal %.1f s; other processes %.1f%% of this machine; %d "
	       "failed run(s); %d leftover segment(s)\n",
	       (double)(lend.t - lstart.t) / 1e9,
	       load_other_pct(&lstart, &lend), g_failures, g_leftovers);
	munmap(g_res, MAX_WORKERS * sizeof(*g_res));
	return g_failures || g_leftovers ? 1 : 0;
}
