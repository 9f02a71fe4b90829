/*
 * bench_rr.c - libmsgbus request/reply benchmark (a benchmark, not a test:
 * it reports figures and PASS/MISS against targets; it fails only when a
 * reply is lost, duplicated, wrong, or the library returns an error).
 *
 * Usage: bench_rr [-n COUNT] [-r REPS] [-t TESTS] [-w INFLIGHT] [-W WORKERS]
 *                 [-S SPIN_US] [-c] [-p] [-v]
 *   -n COUNT    timed round trips per latency run (default 20000); the
 *               throughput run sends 5x COUNT requests
 *   -r REPS     repeat each measurement REPS times, report the median of the
 *               repeats (default 5)
 *   -t TESTS    comma list of lat, tput (default both)
 *   -w INFLIGHT requests in flight in the throughput run (default 32; the
 *               library allows 64 per handle)
 *   -W WORKERS  worker processes in the throughput run (default 2)
 *   -S SPIN_US  spin_us option of the buses (default 100)
 *   -c          workers serve with a callback (msgbus_serve with cb) instead
 *               of polling with msgbus_service_recv
 *   -p          do not pin: by default the requester and the worker of the
 *               latency runs run on the first two CPUs of the affinity mask
 *   -v          also print the spread of the repeats and the worker shares
 *
 * What it measures, over shm:// with every worker a fork()ed process that
 * opens its own handle:
 *   lat   one worker process. In the SAME run (same bus, same processes,
 *         same pinning) it measures the pub/sub ping-pong of bench.c (A
 *         publishes 64 B on "ping", B receives it and publishes the bytes on
 *         "pong", A receives) and the request/reply round trip
 *         (msgbus_request of 64 B to "bench.echo", the worker responds with
 *         the same 64 B). Each: 1000 warm-up round trips, then COUNT timed
 *         with CLOCK_MONOTONIC each; median and p99 in microseconds; the two
 *         alternate which goes first from one repeat to the next.
 *   tput  WORKERS worker processes serve "bench.echo" (competing consumers);
 *         the requester keeps INFLIGHT calls going with msgbus_call_start
 *         and msgbus_call_wait on the oldest; requests/s from the first timed
 *         call to the last reply, after 1000 warm-up requests. Afterwards the
 *         workers' counts must add up to the number of requests (each
 *         request went to exactly one worker). Not pinned; with more busy
 *         processes than CPUs the runs depend on how the scheduler places
 *         them, so the spread of the runs is always printed.
 * Every payload carries its sequence number at both ends and every reply is
 * checked. A run stops sending after 1 s (and says so) so a slow build still
 * finishes; a 60 s watchdog kills a hung run.
 *
 * Targets (printed with PASS/MISS):
 *   request/reply 64 B median <= 3 us
 *   request/reply 64 B median <= 2x the pub/sub ping-pong median
 *
 * Bus options as in bench.c for 64 B: ring_slots 4096, slot_size 128,
 * max_msg_size 4096, large_buffers 256, spin_us 100. Bus names are
 * bench_rr.PID.N; every child is waited for, every bus closed, and /dev/shm
 * is checked for leftovers (reported as a library problem, then removed).
 *
 * Exit status: 0 when every run verified, 1 when a run failed, 2 usage.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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

/* ------------------------------------------------------------------ */
/* configuration                                                       */

#define MAX_REPS 99
#include "bench_util.h"
#define MAX_WORKERS 8
#define MAX_INFLIGHT 64 /* the library's limit per bus handle */
#define MSG_SIZE 64
#define ECHO_MAX 4096   /* = max_msg_size of the buses */
#define WARMUP 1000u
#define TPUT_FACTOR 5   /* throughput requests = 5x COUNT */
#define RUN_CAP_NS 1000000000ull /* stop sending after 1 s */
#define WATCHDOG_S 60
#define REQ_TIMEOUT_MS 5000  /* a lost reply shows as an error, not a hang */
#define POLL_MS 10           /* workers look at the phase this often */
#define SERVICE "bench.echo"
#define TARGET_RR_US 3.0
#define TARGET_RR_RATIO 2.0

enum { TEST_LAT, TEST_TPUT, TEST_COUNT };
static const char *const testname[TEST_COUNT] = { "lat", "tput" };

static long g_n = 20000;
static int g_reps = 5;
static unsigned g_tests = (1u << TEST_COUNT) - 1;
static int g_inflight = 32;
static int g_workers = 2;
static unsigned g_spin_us = 100;
static int g_cb;
static int g_pin = 1;
static int g_verbose;
static int g_cpu[2] = { -1, -1 };
static cpu_set_t g_mask;
static int g_failures;
static int g_leftovers;
static unsigned g_busno;

/* ------------------------------------------------------------------ */
/* shared control block                                                */

/* What the workers do; set by the parent. */
enum { PH_WAIT, PH_PUBSUB, PH_RR, PH_STOP };

/* Each on its own cache lines: the phase is read by every worker on every
 * loop, the counters are written on every request. */
struct wslot {
	_Alignas(64) _Atomic uint64_t handled; /* requests answered */
	_Atomic int failed;
	char err[200];
};

struct ctl {
	_Alignas(64) _Atomic int phase;
	struct wslot w[MAX_WORKERS];
};

static struct ctl *g_ctl; /* MAP_SHARED, filled by the children */

/* For the signal handler: children to kill and the segment to remove. */
static volatile pid_t g_children[MAX_WORKERS];
static char g_shm_path[128];
static volatile sig_atomic_t g_in_child;

/* ------------------------------------------------------------------ */
/* small helpers                                                       */

static void nap_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static void wfail(struct wslot *ws, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void wfail(struct wslot *ws, const char *fmt, ...)
{
	va_list ap;

	if (atomic_exchange(&ws->failed, 1))
		return;
	va_start(ap, fmt);
	vsnprintf(ws->err, sizeof(ws->err), fmt, ap);
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
	write_str(sig == SIGALRM ? "bench_rr: watchdog: a run hung, aborting\n"
	                         : "bench_rr: interrupted\n");
	for (int i = 0; i < MAX_WORKERS; i++)
		if (g_children[i] > 0)
			kill(g_children[i], SIGKILL);
	if (g_shm_path[0])
		unlink(g_shm_path);
	_exit(3);
}

static void pin_self(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(0, sizeof(set), &set); /* best effort */
}

static void unpin(void)
{
	if (g_pin && g_cpu[1] >= 0)
		sched_setaffinity(0, sizeof(g_mask), &g_mask);
}

static int read_byte(int fd)
{
	char c;
	ssize_t n;

	do {
		n = read(fd, &c, 1);
	} while (n < 0 && errno == EINTR);
	return n == 1 ? c : -1;
}

static void write_byte(int fd, char c)
{
	ssize_t n;

	do {
		n = write(fd, &c, 1);
	} while (n < 0 && errno == EINTR);
}

static void close_fd(int *fd)
{
	if (*fd >= 0) {
		close(*fd);
		*fd = -1;
	}
}

/* payload: seq at [0,8) and at [len-8,len), a fixed pattern between */
static void payload_init(unsigned char *buf, size_t size)
{
	for (size_t i = 0; i < size; i++)
		buf[i] = (unsigned char)(i * 131u + 7u);
}

static void payload_mark(unsigned char *buf, size_t size, uint64_t seq)
{
	put_u64(buf, seq);
	put_u64(buf + size - 8, seq);
}

static int payload_ok(const void *d, size_t len, uint64_t seq)
{
	const unsigned char *p = d;
	return len == MSG_SIZE && get_u64(p) == seq &&
	       get_u64(p + len - 8) == seq && p[8] == (unsigned char)(8 * 131u + 7u);
}

/* ------------------------------------------------------------------ */
/* workers (child processes)                                           */

struct wk {
	int id;
	const char *url;
	const msgbus_options *opts;
	int pubsub; /* also echo "ping" as "pong" */
	int cpu;    /* pin to this CPU, or -1 */
	int cmd_r;  /* parent -> worker: 'C' the bus exists */
	int ack_w;  /* worker -> parent: 'R' ready (EOF: it failed) */
};

/*
 * Answers with the request's own bytes. They are copied out first:
 * msgbus_req_data() is valid only until msgbus_respond(), which frees req.
 */
static int respond_echo(msgbus_req *req)
{
	unsigned char tmp[ECHO_MAX];
	size_t len = msgbus_req_len(req);

	if (len > sizeof(tmp)) {
		msgbus_respond(req, NULL, 0);
		return MSGBUS_EMSGSIZE;
	}
	memcpy(tmp, msgbus_req_data(req), len);
	return msgbus_respond(req, tmp, len);
}

static void echo_cb(msgbus_req *req, void *arg)
{
	struct wslot *ws = arg;
	int rc = respond_echo(req);

	if (rc != MSGBUS_OK)
		wfail(ws, "callback: msgbus_respond: %s", msgbus_strerror(rc));
	else
		atomic_fetch_add(&ws->handled, 1);
}

static int worker_main(struct wk *w)
{
	struct wslot *ws = &g_ctl->w[w->id];
	msgbus_bus *bus = NULL;
	msgbus_sub *sub = NULL;
	msgbus_service *svc = NULL;
	int rc;

	if (read_byte(w->cmd_r) != 'C')
		return 1; /* the parent gave up */
	rc = msgbus_open(&bus, w->url, w->opts);
	if (rc != MSGBUS_OK) {
		wfail(ws, "worker %d: msgbus_open(%s): %s", w->id, w->url,
		      msgbus_strerror(rc));
		return 1; /* the parent sees EOF instead of 'R' */
	}
	if (w->pubsub && (rc = msgbus_subscribe(bus, "ping", 0, &sub))) {
		wfail(ws, "worker %d: msgbus_subscribe(ping): %s", w->id,
		      msgbus_strerror(rc));
		sub = NULL;
		goto out;
	}
	rc = msgbus_serve(bus, SERVICE, g_cb ? echo_cb : NULL, ws, &svc);
	if (rc != MSGBUS_OK) {
		wfail(ws, "worker %d: msgbus_serve(%s): %s", w->id, SERVICE,
		      msgbus_strerror(rc));
		svc = NULL;
		goto out;
	}
	write_byte(w->ack_w, 'R');

	while (!atomic_load(&ws->failed)) {
		int ph = atomic_load(&g_ctl->phase);

		if (ph == PH_STOP)
			break;
		if (ph == PH_PUBSUB && sub) {
			msgbus_msg *m;
			rc = msgbus_recv(sub, &m, POLL_MS);
			if (rc == MSGBUS_ETIMEDOUT)
				continue;
			if (rc != MSGBUS_OK) {
				wfail(ws, "worker %d: msgbus_recv: %s", w->id,
				      msgbus_strerror(rc));
				break;
			}
			rc = msgbus_publish(bus, "pong", msgbus_msg_data(m),
			                    msgbus_msg_len(m), -1);
			msgbus_msg_release(m);
			if (rc != MSGBUS_OK) {
				wfail(ws, "worker %d: msgbus_publish: %s",
				      w->id, msgbus_strerror(rc));
				break;
			}
		} else if (ph == PH_RR && !g_cb) {
			msgbus_req *req;
			rc = msgbus_service_recv(svc, &req, POLL_MS);
			if (rc == MSGBUS_ETIMEDOUT)
				continue;
			if (rc != MSGBUS_OK) {
				wfail(ws, "worker %d: msgbus_service_recv: %s",
				      w->id, msgbus_strerror(rc));
				break;
			}
			rc = respond_echo(req);
			if (rc != MSGBUS_OK) {
				wfail(ws, "worker %d: msgbus_respond: %s",
				      w->id, msgbus_strerror(rc));
				break;
			}
			atomic_fetch_add(&ws->handled, 1);
		} else {
			nap_ms(1); /* waiting, or the callback does the work */
		}
	}
out:
	if (svc && (rc = msgbus_unserve(svc)) != MSGBUS_OK)
		wfail(ws, "worker %d: msgbus_unserve: %s", w->id,
		      msgbus_strerror(rc));
	if (sub && (rc = msgbus_unsubscribe(sub)) != MSGBUS_OK)
		wfail(ws, "worker %d: msgbus_unsubscribe: %s", w->id,
		      msgbus_strerror(rc));
	if ((rc = msgbus_close(bus)) != MSGBUS_OK)
		wfail(ws, "worker %d: msgbus_close: %s", w->id,
		      msgbus_strerror(rc));
	return atomic_load(&ws->failed) ? 1 : 0;
}

/* ------------------------------------------------------------------ */
/* sessions: one bus, its worker processes                             */

struct sess {
	int nw, spawned;
	pid_t pid[MAX_WORKERS];
	int cmd_w[MAX_WORKERS], ack_r[MAX_WORKERS];
	char name[64], url[96], shm_path[128];
	msgbus_options opts;
	msgbus_bus *bus;
	msgbus_sub *sub;
};

static void bus_opts(msgbus_options *o)
{
	msgbus_options init = MSGBUS_OPTIONS_INIT;

	*o = init;
	o->ring_slots = 4096;
	o->slot_size = 128;
	o->max_msg_size = ECHO_MAX;
	o->large_buffers = 256;
	o->spin_us = g_spin_us;
}

/* Waits for the workers; returns how many failed (and prints why). */
static int sess_join(struct sess *s, const char *what)
{
	int bad = 0;

	atomic_store(&g_ctl->phase, PH_STOP);
	for (int i = 0; i < s->spawned; i++) {
		struct wslot *ws = &g_ctl->w[i];
		int st = 0;

		close_fd(&s->cmd_w[i]); /* EOF: a worker still waiting for 'C' quits */
		while (waitpid(s->pid[i], &st, 0) < 0 && errno == EINTR)
			;
		g_children[i] = 0;
		if (WIFSIGNALED(st))
			wfail(ws, "worker %d killed by signal %d", i,
			      WTERMSIG(st));
		else if (WEXITSTATUS(st) != 0 && !atomic_load(&ws->failed))
			wfail(ws, "worker %d exited with %d", i,
			      WEXITSTATUS(st));
		close_fd(&s->ack_r[i]);
		if (atomic_load(&ws->failed)) {
			fprintf(stderr, "bench_rr: %s: %s\n", what, ws->err);
			bad++;
		}
	}
	s->spawned = 0;
	return bad;
}

static void sess_kill(struct sess *s)
{
	for (int i = 0; i < s->spawned; i++)
		if (s->pid[i] > 0)
			kill(s->pid[i], SIGKILL);
}

/* Closes the parent's handle; after that the segment must be gone. */
static int sess_close(struct sess *s)
{
	int rc, bad = 0;

	if (s->sub && (rc = msgbus_unsubscribe(s->sub)) != MSGBUS_OK) {
		fprintf(stderr, "bench_rr: msgbus_unsubscribe: %s\n",
		        msgbus_strerror(rc));
		bad = 1;
	}
	s->sub = NULL;
	if (s->bus && (rc = msgbus_close(s->bus)) != MSGBUS_OK) {
		fprintf(stderr, "bench_rr: msgbus_close: %s\n",
		        msgbus_strerror(rc));
		bad = 1;
	}
	s->bus = NULL;
	if (access(s->shm_path, F_OK) == 0) {
		fprintf(stderr,
		        "bench_rr: LIBRARY PROBLEM: %s left behind after every "
		        "handle closed; removing it\n",
		        s->shm_path);
		g_leftovers++;
		unlink(s->shm_path);
	}
	g_shm_path[0] = '\0';
	return bad;
}

/*
 * Forks nw workers (the parent opens no bus before forking), opens the
 * parent's handle (subscribed to "pong" when pubsub), lets the workers open
 * theirs and waits until each serves. 0 on success; -1 after cleaning up.
 */
static int sess_start(struct sess *s, int nw, int pubsub, int pin,
                      const char *what)
{
	struct wk w;
	int rc;

	memset(s, 0, sizeof(*s));
	s->nw = nw;
	for (int i = 0; i < MAX_WORKERS; i++)
		s->cmd_w[i] = s->ack_r[i] = -1;
	snprintf(s->name, sizeof(s->name), "bench_rr.%ld.%u", (long)getpid(),
	         ++g_busno);
	snprintf(s->url, sizeof(s->url), "shm://%s", s->name);
	snprintf(s->shm_path, sizeof(s->shm_path), "/dev/shm/msgbus.%s",
	         s->name);
	snprintf(g_shm_path, sizeof(g_shm_path), "%s", s->shm_path);
	bus_opts(&s->opts);
	memset(g_ctl, 0, sizeof(*g_ctl));
	atomic_store(&g_ctl->phase, PH_WAIT);

	fflush(NULL);
	for (int i = 0; i < nw; i++) {
		int cmd[2], ack[2];

		if (pipe2(cmd, O_CLOEXEC) < 0)
			goto fail_errno;
		if (pipe2(ack, O_CLOEXEC) < 0) {
			close(cmd[0]);
			close(cmd[1]);
			goto fail_errno;
		}
		pid_t pid = fork();
		if (pid < 0) {
			close(cmd[0]);
			close(cmd[1]);
			close(ack[0]);
			close(ack[1]);
			goto fail_errno;
		}
		if (pid == 0) {
			g_in_child = 1;
			signal(SIGINT, SIG_DFL);
			signal(SIGTERM, SIG_DFL);
			for (int j = 0; j < i; j++) {
				close_fd(&s->cmd_w[j]);
				close_fd(&s->ack_r[j]);
			}
			close(cmd[1]);
			close(ack[0]);
			w.id = i;
			w.url = s->url;
			w.opts = &s->opts;
			w.pubsub = pubsub;
			w.cpu = pin && g_pin ? g_cpu[1] : -1;
			w.cmd_r = cmd[0];
			w.ack_w = ack[1];
			if (w.cpu >= 0)
				pin_self(w.cpu);
			_exit(worker_main(&w));
		}
		close(cmd[0]);
		close(ack[1]);
		s->pid[i] = pid;
		s->cmd_w[i] = cmd[1];
		s->ack_r[i] = ack[0];
		g_children[i] = pid;
		s->spawned++;
	}
	if (pin && g_pin && g_cpu[1] >= 0)
		pin_self(g_cpu[0]);

	rc = msgbus_open(&s->bus, s->url, &s->opts);
	if (rc != MSGBUS_OK) {
		fprintf(stderr, "bench_rr: %s: msgbus_open(%s): %s\n", what,
		        s->url, msgbus_strerror(rc));
		s->bus = NULL;
		goto fail;
	}
	if (pubsub && (rc = msgbus_subscribe(s->bus, "pong", 0, &s->sub))) {
		fprintf(stderr, "bench_rr: %s: msgbus_subscribe(pong): %s\n",
		        what, msgbus_strerror(rc));
		s->sub = NULL;
		goto fail;
	}
	for (int i = 0; i < nw; i++)
		write_byte(s->cmd_w[i], 'C');
	for (int i = 0; i < nw; i++) {
		if (read_byte(s->ack_r[i]) != 'R') {
			fprintf(stderr, "bench_rr: %s: worker %d did not get "
			                "ready\n",
			        what, i);
			goto fail;
		}
	}
	return 0;

fail_errno:
	fprintf(stderr, "bench_rr: %s: cannot start workers: %s\n", what,
	        strerror(errno));
fail:
	sess_join(s, what);
	sess_close(s);
	unpin();
	return -1;
}

/* Ends a session: stops (or kills) the workers, closes. 0 when all is well. */
static int sess_end(struct sess *s, int ok, const char *what)
{
	int bad;

	if (!ok)
		sess_kill(s);
	bad = sess_join(s, what);
	bad += sess_close(s);
	unpin();
	return bad;
}

/* Any worker that reported a failure? (They stop serving then.) */
static int workers_failed(const struct sess *s)
{
	for (int i = 0; i < s->nw; i++)
		if (atomic_load(&g_ctl->w[i].failed))
			return 1;
	return 0;
}

/* ------------------------------------------------------------------ */
/* latency: pub/sub ping-pong and request/reply, same bus, same run    */

struct lat_res {
	int ok, capped;
	double med, p99; /* us */
};

/* One round trip of seq: 0 when the right bytes came back. */
typedef int (*trip_fn)(struct sess *s, unsigned char *buf, uint64_t seq);

static int trip_pubsub(struct sess *s, unsigned char *buf, uint64_t seq)
{
	msgbus_msg *m;
	int rc = msgbus_publish(s->bus, "ping", buf, MSG_SIZE, -1);

	if (rc == MSGBUS_OK)
		rc = msgbus_recv(s->sub, &m, REQ_TIMEOUT_MS);
	if (rc != MSGBUS_OK) {
		fprintf(stderr, "bench_rr: pub/sub ping-pong %llu: %s\n",
		        (unsigned long long)seq, msgbus_strerror(rc));
		return -1;
	}
	rc = payload_ok(msgbus_msg_data(m), msgbus_msg_len(m), seq) ? 0 : -1;
	if (rc)
		fprintf(stderr, "bench_rr: pong %llu came back wrong\n",
		        (unsigned long long)seq);
	msgbus_msg_release(m);
	return rc;
}

static int trip_rr(struct sess *s, unsigned char *buf, uint64_t seq)
{
	msgbus_msg *reply;
	int rc = msgbus_request(s->bus, SERVICE, buf, MSG_SIZE, &reply,
	                        REQ_TIMEOUT_MS);

	if (rc != MSGBUS_OK) {
		fprintf(stderr, "bench_rr: msgbus_request %llu: %s\n",
		        (unsigned long long)seq, msgbus_strerror(rc));
		return -1;
	}
	rc = payload_ok(msgbus_msg_data(reply), msgbus_msg_len(reply), seq) &&
	             strcmp(msgbus_msg_subject(reply), SERVICE) == 0
	         ? 0
	         : -1;
	if (rc)
		fprintf(stderr, "bench_rr: reply %llu came back wrong (%zu "
		                "bytes, subject \"%s\")\n",
		        (unsigned long long)seq, msgbus_msg_len(reply),
		        msgbus_msg_subject(reply));
	msgbus_msg_release(reply);
	return rc;
}

static struct lat_res lat_phase(struct sess *s, int phase, trip_fn trip,
                                uint64_t *samples, unsigned char *buf,
                                uint64_t *seq)
{
	struct lat_res r = { 0, 0, 0, 0 };
	uint64_t total = WARMUP + (uint64_t)g_n, k = 0, tstart = 0;

	atomic_store(&g_ctl->phase, phase);
	for (uint64_t i = 0; i < total; i++) {
		uint64_t t0, t1;

		payload_mark(buf, MSG_SIZE, *seq);
		t0 = now_ns();
		if (trip(s, buf, *seq))
			return r;
		t1 = now_ns();
		++*seq;
		if (i < WARMUP)
			continue;
		if (i == WARMUP)
			tstart = t0;
		samples[k++] = t1 - t0;
		if (t1 - tstart > RUN_CAP_NS && k >= 100) {
			r.capped = 1;
			break;
		}
	}
	qsort(samples, k, sizeof(*samples), cmp_u64);
	r.ok = 1;
	r.med = (double)samples[k / 2] / 1e3;
	r.p99 = (double)samples[(k - 1) * 99 / 100] / 1e3;
	return r;
}

/* res[0] pub/sub, res[1] request/reply; rr_first alternates. */
static int run_lat(int rr_first, struct lat_res res[2])
{
	struct sess s;
	uint64_t *samples = malloc((size_t)g_n * sizeof(*samples));
	unsigned char buf[MSG_SIZE];
	uint64_t seq = 0;
	int ok = 1;

	memset(res, 0, 2 * sizeof(*res));
	if (!samples) {
		fprintf(stderr, "bench_rr: out of memory\n");
		exit(1);
	}
	payload_init(buf, sizeof(buf));
	if (sess_start(&s, 1, 1, 1, "lat") < 0) {
		free(samples);
		return -1;
	}
	for (int j = 0; j < 2 && ok; j++) {
		int rr = rr_first ? j == 0 : j == 1;
		res[rr] = lat_phase(&s, rr ? PH_RR : PH_PUBSUB,
		                    rr ? trip_rr : trip_pubsub, samples, buf,
		                    &seq);
		ok = res[rr].ok && !workers_failed(&s);
	}
	if (sess_end(&s, ok, "lat"))
		ok = 0;
	free(samples);
	if (!ok)
		res[0].ok = res[1].ok = 0;
	return ok ? 0 : -1;
}

/* ------------------------------------------------------------------ */
/* throughput: WORKERS workers, INFLIGHT calls outstanding             */

struct tput_res {
	int ok, capped;
	double rps;
	double share[MAX_WORKERS]; /* % of requests per worker */
};

/*
 * Sends count requests numbered from *seq with up to g_inflight outstanding,
 * waiting on the oldest. With cap, stops sending after RUN_CAP_NS. Returns
 * the number completed (all verified), or -1.
 */
static int64_t pump(struct sess *s, uint64_t *seq, uint64_t count, int cap,
                    uint64_t *elapsed, int *capped)
{
	msgbus_call *calls[MAX_INFLIGHT];
	uint64_t cseq[MAX_INFLIGHT];
	unsigned char buf[MSG_SIZE];
	unsigned head = 0, n = 0, w = (unsigned)g_inflight;
	uint64_t started = 0, done = 0, t0 = now_ns();
	int rc = MSGBUS_OK;
	const char *what = "";

	payload_init(buf, sizeof(buf));
	while (done < count) {
		while (n < w && started < count) {
			unsigned i = (head + n) % w;
			payload_mark(buf, MSG_SIZE, *seq);
			rc = msgbus_call_start(s->bus, SERVICE, buf, MSG_SIZE,
			                       REQ_TIMEOUT_MS, &calls[i]);
			if (rc != MSGBUS_OK) {
				what = "msgbus_call_start";
				goto fail;
			}
			cseq[i] = (*seq)++;
			n++;
			started++;
		}
		msgbus_msg *reply;
		rc = msgbus_call_wait(calls[head], &reply, REQ_TIMEOUT_MS);
		if (rc != MSGBUS_OK) {
			if (rc != MSGBUS_EAGAIN) { /* final: the call is gone */
				head = (head + 1) % w;
				n--;
			}
			what = "msgbus_call_wait";
			goto fail;
		}
		if (!payload_ok(msgbus_msg_data(reply), msgbus_msg_len(reply),
		                cseq[head])) {
			fprintf(stderr, "bench_rr: tput: reply %llu came back "
			                "wrong\n",
			        (unsigned long long)cseq[head]);
			msgbus_msg_release(reply);
			goto cancel;
		}
		msgbus_msg_release(reply);
		head = (head + 1) % w;
		n--;
		done++;
		if (cap && !*capped && (done & 255) == 0 &&
		    now_ns() - t0 > RUN_CAP_NS) {
			*capped = 1;
			count = started; /* drain what is in flight */
		}
	}
	*elapsed = now_ns() - t0;
	return (int64_t)done;

fail:
	fprintf(stderr, "bench_rr: tput: %s (request %llu, %u in flight): %s\n",
	        what, (unsigned long long)*seq, n, msgbus_strerror(rc));
cancel:
	while (n > 0) {
		msgbus_call_cancel(calls[head]);
		head = (head + 1) % w;
		n--;
	}
	return -1;
}

static int run_tput(struct tput_res *r)
{
	struct sess s;
	uint64_t seq = 0, elapsed = 0, handled = 0;
	int64_t done;
	int ok = 0, dummy = 0;

	memset(r, 0, sizeof(*r));
	if (sess_start(&s, g_workers, 0, 0, "tput") < 0)
		return -1;
	atomic_store(&g_ctl->phase, PH_RR);
	if (pump(&s, &seq, WARMUP, 0, &elapsed, &dummy) == (int64_t)WARMUP) {
		done = pump(&s, &seq, (uint64_t)g_n * TPUT_FACTOR, 1, &elapsed,
		            &r->capped);
		if (done > 0 && elapsed > 0) {
			r->rps = (double)done / ((double)elapsed / 1e9);
			ok = !workers_failed(&s);
		}
	}
	if (sess_end(&s, ok, "tput"))
		ok = 0;
	if (ok) {
		for (int i = 0; i < g_workers; i++)
			handled += atomic_load(&g_ctl->w[i].handled);
		for (int i = 0; i < g_workers; i++)
			r->share[i] = handled ? 100.0 *
			                            (double)atomic_load(
			                                &g_ctl->w[i].handled) /
			                            (double)handled
			                      : 0.0;
		if (handled != seq) {
			fprintf(stderr,
			        "bench_rr: tput: %llu requests sent and answered, "
			        "but the workers handled %llu\n",
			        (unsigned long long)seq,
			        (unsigned long long)handled);
			ok = 0;
		}
	}
	r->ok = ok;
	return ok ? 0 : -1;
}

/* ------------------------------------------------------------------ */
/* machine load (as in bench.c)                                        */

static void print_load(const struct load_mark *a, const struct load_mark *b)
{
	double pct = load_other_pct(a, b);

	if (pct < 0)
		return;
	if (pct >= 5.0)
		printf("          [other load on the machine during these runs: "
		       "%.0f%% - figures are disturbed]\n",
		       pct);
	else if (g_verbose)
		printf("          [other load during these runs: %.1f%%]\n",
		       pct);
}

/* ------------------------------------------------------------------ */
/* report                                                              */

struct series {
	int n, failed, capped;
	double a[MAX_REPS], b[MAX_REPS];
};

static void add(struct series *x, double a, double b, int capped)
{
	x->a[x->n] = a;
	x->b[x->n] = b;
	x->n++;
	x->capped += capped;
}

static void notes(const struct series *x, int spread)
{
	if ((spread || g_verbose) && x->n > 1)
		printf("  [runs %.3g..%.3g]", min_dbl(x->a, x->n),
		       max_dbl(x->a, x->n));
	if (x->failed)
		printf("  [%d run(s) FAILED]", x->failed);
	if (x->capped)
		printf("  [%d run(s) hit the 1 s cap]", x->capped);
	printf("\n");
}

static void target_line(const char *label, int have, double v,
                        const char *unit, double limit)
{
	if (!have) {
		printf("  %-44s  %-12s  MISS\n", label, "FAILED runs");
		return;
	}
	printf("  %-44s  %8.2f%-4s  %s\n", label, v, unit,
	       v <= limit ? "PASS" : "MISS");
}

static unsigned parse_tests(const char *arg)
{
	unsigned mask = 0;
	char *copy = strdup(arg), *save = NULL, *tok;

	if (!copy)
		return 0;
	for (tok = strtok_r(copy, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		int i;
		for (i = 0; i < TEST_COUNT; i++)
			if (strcmp(tok, testname[i]) == 0)
				break;
		if (i == TEST_COUNT) {
			free(copy);
			return 0;
		}
		mask |= 1u << i;
	}
	free(copy);
	return mask;
}

/* Remove (and count) any segment of ours still in /dev/shm. */
static void final_shm_check(void)
{
	char prefix[64];
	DIR *d = opendir("/dev/shm");
	struct dirent *e;

	if (!d)
		return;
	snprintf(prefix, sizeof(prefix), "msgbus.bench_rr.%ld.",
	         (long)getpid());
	while ((e = readdir(d)) != NULL) {
		if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) {
			char path[300];
			snprintf(path, sizeof(path), "/dev/shm/%s", e->d_name);
			fprintf(stderr, "bench_rr: leftover %s removed\n", path);
			unlink(path);
			g_leftovers++;
		}
	}
	closedir(d);
}

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: bench_rr [-n COUNT] [-r REPS] [-t TESTS] [-w INFLIGHT] "
	        "[-W WORKERS] [-S SPIN_US] [-c] [-p] [-v]\n"
	        "  -n COUNT    timed round trips per latency run (default "
	        "20000); throughput sends 5x\n"
	        "  -r REPS     runs per figure, median reported (default 5, "
	        "max %d)\n"
	        "  -t TESTS    comma list of lat,tput (default both)\n"
	        "  -w INFLIGHT calls in flight for tput (default 32, 1..%d)\n"
	        "  -W WORKERS  worker processes for tput (default 2, 1..%d)\n"
	        "  -S SPIN_US  spin_us bus option (default 100)\n"
	        "  -c          workers use a serve callback, not "
	        "msgbus_service_recv\n"
	        "  -p          do not pin the latency parties to two CPUs\n"
	        "  -v          print the spread of the runs, worker shares\n",
	        MAX_REPS, MAX_INFLIGHT, MAX_WORKERS);
}

int main(int argc, char **argv)
{
	static struct series ps, rr, tp;
	struct sigaction sa;
	struct load_mark lstart, lend, l0, l1;
	double share[MAX_WORKERS] = { 0 };
	int opt;

	while ((opt = getopt(argc, argv, "n:r:t:w:W:S:cpvh")) != -1) {
		switch (opt) {
		case 'n':
			g_n = strtol(optarg, NULL, 10);
			if (g_n < 100 || g_n > 100000000) {
				fprintf(stderr, "bench_rr: -n must be "
				                "100..1e8\n");
				return 2;
			}
			break;
		case 'r':
			g_reps = atoi(optarg);
			if (g_reps < 1 || g_reps > MAX_REPS) {
				fprintf(stderr, "bench_rr: -r must be 1..%d\n",
				        MAX_REPS);
				return 2;
			}
			break;
		case 't':
			g_tests = parse_tests(optarg);
			if (!g_tests) {
				usage(stderr);
				return 2;
			}
			break;
		case 'w':
			g_inflight = atoi(optarg);
			if (g_inflight < 1 || g_inflight > MAX_INFLIGHT) {
				fprintf(stderr, "bench_rr: -w must be 1..%d\n",
				        MAX_INFLIGHT);
				return 2;
			}
			break;
		case 'W':
			g_workers = atoi(optarg);
			if (g_workers < 1 || g_workers > MAX_WORKERS) {
				fprintf(stderr, "bench_rr: -W must be 1..%d\n",
				        MAX_WORKERS);
				return 2;
			}
			break;
		case 'S':
			g_spin_us = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'c':
			g_cb = 1;
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
	if (optind < argc) {
		usage(stderr);
		return 2;
	}

	g_ctl = mmap(NULL, sizeof(*g_ctl), PROT_READ | PROT_WRITE,
	             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (g_ctl == MAP_FAILED) {
		perror("bench_rr: mmap");
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
	printf("libmsgbus %s request/reply benchmark: %ld cpus, %d runs per "
	       "figure (median), n %ld, spin_us %u, workers %s\n",
	       msgbus_version(), sysconf(_SC_NPROCESSORS_ONLN), g_reps, g_n,
	       g_spin_us,
	       g_cb ? "serve with a callback" : "poll msgbus_service_recv");
	load_sample(&lstart);

	if (g_tests & (1u << TEST_LAT)) {
		printf("\n== 64B round trip over shm://, one worker process; "
		       "pub/sub and request/reply in the same run ==\n");
		if (g_pin && g_cpu[1] >= 0)
			printf("requester on cpu %d, worker on cpu %d (-p: no "
			       "pinning)\n",
			       g_cpu[0], g_cpu[1]);
		load_sample(&l0);
		for (int rep = 0; rep < g_reps; rep++) {
			struct lat_res res[2];
			alarm(WATCHDOG_S);
			if (run_lat(rep & 1, res) == 0) {
				add(&ps, res[0].med, res[0].p99, res[0].capped);
				add(&rr, res[1].med, res[1].p99, res[1].capped);
			} else {
				ps.failed++;
				rr.failed++;
				g_failures++;
			}
			alarm(0);
		}
		load_sample(&l1);
		if (ps.n) {
			double pm = median_dbl(ps.a, ps.n),
			       pp = median_dbl(ps.b, ps.n),
			       rm = median_dbl(rr.a, rr.n),
			       rp = median_dbl(rr.b, rr.n);
			printf("pub/sub ping-pong   median %8.2fus  p99 %8.2fus",
			       pm, pp);
			notes(&ps, 0);
			printf("request/reply       median %8.2fus  p99 %8.2fus"
			       "  (%.2fx pub/sub, p99 %.2fx)",
			       rm, rp, pm > 0 ? rm / pm : 0.0,
			       pp > 0 ? rp / pp : 0.0);
			notes(&rr, 0);
		} else {
			printf("latency: FAILED (%d of %d runs)\n", ps.failed,
			       g_reps);
		}
		print_load(&l0, &l1);
		fflush(stdout);
	}

	if (g_tests & (1u << TEST_TPUT)) {
		printf("\n== 64B requests/s over shm://, %d worker process%s, "
		       "up to %d in flight (msgbus_call_start/_wait) ==\n",
		       g_workers, g_workers == 1 ? "" : "es", g_inflight);
		if (sysconf(_SC_NPROCESSORS_ONLN) < g_workers + 1)
			printf("(%d busy processes on %ld cpus: CPU-bound by "
			       "construction)\n",
			       g_workers + 1, sysconf(_SC_NPROCESSORS_ONLN));
		load_sample(&l0);
		for (int rep = 0; rep < g_reps; rep++) {
			struct tput_res r;
			alarm(WATCHDOG_S);
			if (run_tput(&r) == 0) {
				add(&tp, r.rps, 0, r.capped);
				for (int i = 0; i < g_workers; i++)
					share[i] += r.share[i] / g_reps;
			} else {
				tp.failed++;
				g_failures++;
			}
			alarm(0);
		}
		load_sample(&l1);
		if (tp.n) {
			printf("request/reply       %8.3f M req/s",
			       median_dbl(tp.a, tp.n) / 1e6);
			if (g_verbose) {
				printf("  [worker shares");
				for (int i = 0; i < g_workers; i++)
					printf(" %.0f%%",
					       share[i] * g_reps / tp.n);
				printf("]");
			}
			/* Three busy processes on two CPUs: the figure
			 * depends on placement; always show the spread. */
			notes(&tp, 1);
		} else {
			printf("request/reply       FAILED (%d of %d runs)\n",
			       tp.failed, g_reps);
		}
		print_load(&l0, &l1);
		fflush(stdout);
	}

	if (g_tests & (1u << TEST_LAT)) {
		double pm = median_dbl(ps.a, ps.n), rm = median_dbl(rr.a, rr.n);
		printf("\n== targets (median of %d runs) ==\n", g_reps);
		target_line("shm 64B request/reply median <= 3 us", rr.n > 0,
		            rm, "us", TARGET_RR_US);
		target_line("shm 64B request/reply <= 2x pub/sub ping-pong",
		            rr.n > 0 && pm > 0, pm > 0 ? rm / pm : 0.0, "x",
		            TARGET_RR_RATIO);
	}

	final_shm_check();
	load_sample(&lend);
	printf("\ntotal %.1f s; other load %.1f%% of the machine; %d failed "
	       "run(s); %d leftover segment(s)\n",
	       (double)(lend.t - lstart.t) / 1e9,
	       load_other_pct(&lstart, &lend), g_failures, g_leftovers);
	munmap(g_ctl, sizeof(*g_ctl));
	return g_failures || g_leftovers ? 1 : 0;
}
