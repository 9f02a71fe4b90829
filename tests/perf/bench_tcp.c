/*
 * bench_tcp.c - libmsgbus TCP link benchmark (a benchmark, not a test: it
 * reports figures and PASS/MISS against targets; it fails only when a run
 * loses, reorders or corrupts messages or the library returns an error).
 *
 * Usage: bench_tcp [-n COUNT] [-r REPS] [-t TESTS] [-m MODES] [-s SIZE] [-S SPIN_US] [-P]
 *                  [-v]
 *   -n COUNT   round trips per ping-pong run (default 20000); throughput
 *              runs send 100x COUNT messages of 64 B, 10x COUNT of 4 KiB
 *   -r REPS    repeat each measurement REPS times and report the median of
 *              the repeats (default 5; raw and library runs alternate)
 *   -t TESTS   comma list of rtt, rr, rrback, tput (default all)
 *   -m MODES   comma list of raw, rawspin, msgbus (default all; ratios need raw)
 *   -s SIZE    only the runs with this payload size, 64 or 4096
 *   -S SPIN_US spin_us option of the buses (default 100)
 *   -P         pin: the parent process to the first CPU of the affinity
 *              mask, the child to the second (default: not pinned, since
 *              each side of a link runs several threads)
 *   -v         also print the spread of the repeats and, for each stream run,
 *              each side's CPU per message by thread (ns on a CPU, from
 *              /proc/self/task/TID/schedstat; in a VM it includes steal)
 *
 * Two processes on one host, over 127.0.0.1, every run a fresh pair:
 *   library  the parent opens shm bus A and listens on port 0; a fork()ed
 *            child opens its own shm bus B, subscribes and connects to A.
 *            rtt:  A publishes on "ping", B's subscriber publishes the same
 *                  bytes on "pong", A's subscriber receives; 64 B, 4 KiB.
 *            tput: A publishes on "data" (timeout -1), B's lossless
 *                  subscriber receives; 64 B, 4 KiB.
 *   raw      the same two processes with a plain TCP socket (TCP_NODELAY):
 *            rtt:  a length-prefixed record written, echoed, read back.
 *            tput: a stream of length-prefixed records, written in batches
 *                  of up to 256 KiB, parsed by the
 *                  reader from 256 KiB reads.
 *   raw spin rtt only: raw with both readers polling (MSG_DONTWAIT) rather
 *            than blocking, like for like with msgbus_recv, which spins
 *            for spin_us before it sleeps. The round-trip target is judged
 *            against the faster of the two raw figures.
 * Before a library run measures anything, A and B exchange sync pings until
 * one comes back: a link is up and both sides know each other's interest
 * then. rtt: 1000 warm-up round trips, then COUNT timed, median and p99 in
 * microseconds. tput: msgs/s and MB/s (10^6 payload bytes) from the first
 * timed publish (write) to the receiver's receipt of the end marker. Every
 * payload carries its sequence number at both ends; receivers check length,
 * order, no gaps and the final count. A run stops sending after 1 s (and
 * says so); a 60 s watchdog kills a hung run.
 *
 * Targets (PASS/MISS):
 *   64 B throughput >= 10 M msgs/s (the raw stream's figure is printed too)
 *   64 B round trip median <= 1.3x the raw socket round trip
 *
 * Bus options: ring_slots 4096, slot_size 128 (64 B inline), max_msg_size
 * 4096, large_buffers 256, spin_us 100. Bus names are bench_tcp.PID.N; every
 * child is waited for, every bus closed, and /dev/shm is checked for
 * leftovers (reported as a library problem, then removed).
 *
 * After each figure, as bench.c does, a note says when other processes
 * used 5% or more of the machine during its runs (figures are disturbed).
 *
 * Exit status: 0 when every run verified, 1 when a run failed, 2 usage.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "msgbus.h"

/* -v, streams: each side's threads and the CPU each used per message
 * (/proc/self/task/TID/schedstat: ns on a CPU), which says where the time
 * goes far more steadily than the rate on a shared machine. */
struct thread_cpu {
	int n;
	struct {
		long tid;
		char name[16];
		unsigned long long run_ns;
	} t[64];
};

static void thread_cpu_snap(struct thread_cpu *tc)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	tc->n = 0;
	while (d && (e = readdir(d)) && tc->n < 64) {
		char path[300], buf[64];
		FILE *f;
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/schedstat", e->d_name);
		if (!(f = fopen(path, "r")))
			continue;
		unsigned long long run = 0;
		int ok = fgets(buf, sizeof(buf), f) && sscanf(buf, "%llu", &run) == 1;
		fclose(f);
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
		if (!ok || !(f = fopen(path, "r")))
			continue;
		char *name = tc->t[tc->n].name;
		if (!fgets(name, sizeof(tc->t[0].name), f))
			name[0] = '\0';
		fclose(f);
		name[strcspn(name, "\n")] = '\0';
		tc->t[tc->n].tid = atol(e->d_name);
		tc->t[tc->n].run_ns = run;
		tc->n++;
	}
	if (d)
		closedir(d);
}

/* Threads that used 1% of the CPU time or more since `from`. */
static void thread_cpu_print(const char *side, const struct thread_cpu *from, uint64_t msgs)
{
	struct thread_cpu to;
	unsigned long long total = 0;
	char line[512];
	int len;
	thread_cpu_snap(&to);
	for (int i = 0; i < to.n; i++)
		for (int k = 0; k < from->n; k++)
			if (from->t[k].tid == to.t[i].tid)
				to.t[i].run_ns -= from->t[k].run_ns;
	for (int i = 0; i < to.n; i++)
		total += to.t[i].run_ns;
	if (!msgs || !total)
		return;
	len = snprintf(line, sizeof(line), "  %s CPU per message: %.0f ns:", side,
	               (double)total / (double)msgs);
	for (int i = 0; i < to.n && len > 0 && (size_t)len < sizeof(line); i++)
		if (to.t[i].run_ns * 100 >= total)
			len += snprintf(line + len, sizeof(line) - (size_t)len, " %s %.0f",
			                to.t[i].name, (double)to.t[i].run_ns / (double)msgs);
	fprintf(stderr, "%s\n", line);
}

enum { K_RTT64, K_RTT4K, K_RR64, K_RRBACK64, K_TPUT64, K_TPUT4K, K_COUNT };
enum { M_RAW, M_RAWSPIN, M_LIB, M_COUNT };
enum { TEST_RTT, TEST_RR, TEST_RRBACK, TEST_TPUT, TEST_COUNT };

static const struct {
	int test;
	size_t size;
	const char *label;
} keys[K_COUNT] = {
	{ TEST_RTT, 64, "64B" },
	{ TEST_RTT, 4096, "4KiB" },
	{ TEST_RR, 64, "64B" },
	{ TEST_RRBACK, 64, "64B" },
	{ TEST_TPUT, 64, "64B" },
	{ TEST_TPUT, 4096, "4KiB" },
};
static const char *const mname[M_COUNT] = { "raw tcp", "raw spin", "msgbus" };
static const char *const mopt[M_COUNT] = { "raw", "rawspin", "msgbus" }; /* -m */
static const char *const testname[TEST_COUNT] = { "rtt", "rr", "rrback", "tput" };

#define MAX_REPS 99
#include "bench_util.h"
#define RTT_WARMUP 1000u
#define RUN_CAP_NS 1000000000ull
#define WATCHDOG_S 60
#define SYNC_TRIES 200
#define END_MAGIC 0x52454b52414d444eull  /* "NDMARKER" */
#define SYNC_MAGIC 0x434e5953434e5953ull /* "SYNCSYNC" */
#define GO_MAGIC 0x4f474f474f474f47ull   /* "GOGOGOGO" */
#define TXBATCH (256u << 10)
#define RXCHUNK (256u << 10)

static long g_n = 20000;
static int g_reps = 5;
static unsigned g_tests = (1u << TEST_COUNT) - 1;
static unsigned g_spin_us = 100;
static int g_pin;
static int g_verbose;
static unsigned g_modes = (1u << M_COUNT) - 1;
static size_t g_size; /* 0: all sizes */
static int g_cpu[2] = { -1, -1 };
static int g_failures, g_leftovers;
static unsigned g_busno;

/* Filled by the child, read by the parent after waitpid. */
struct shared {
	uint64_t t_end;
	uint64_t count;
	double lat_med, lat_p99; /* rrback: the child's figures */
	int failed;
	char err[240];
};
static struct shared *g_sh;
static double *g_lat; /* latencies of one run (us) */

static volatile pid_t g_child;
static char g_paths[2][128];

/* ------------------------------------------------------------------ */

static double median(const double *v, int n)
{
	double t[MAX_REPS];
	if (n <= 0)
		return 0;
	memcpy(t, v, (size_t)n * sizeof(*v));
	qsort(t, (size_t)n, sizeof(*t), cmp_dbl);
	return n & 1 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
}

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Records the first failure of a child run in shared memory. */
static void fail(const char *fmt, ...)
{
	va_list ap;
	if (g_sh->failed)
		return;
	g_sh->failed = 1;
	va_start(ap, fmt);
	vsnprintf(g_sh->err, sizeof(g_sh->err), fmt, ap);
	va_end(ap);
}

static void pin_self(int cpu)
{
	cpu_set_t set;
	if (!g_pin || cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(0, sizeof(set), &set); /* best effort */
}

static void on_fatal_signal(int sig)
{
	static const char m1[] = "bench_tcp: watchdog: a run hung, aborting\n";
	static const char m2[] = "bench_tcp: interrupted\n";
	ssize_t rc = write(2, sig == SIGALRM ? m1 : m2, sig == SIGALRM ? sizeof(m1) - 1 : sizeof(m2) - 1);
	(void)rc;
	if (g_child > 0)
		kill(g_child, SIGKILL);
	for (int i = 0; i < 2; i++)
		if (g_paths[i][0])
			unlink(g_paths[i]);
	_exit(3);
}

/* payload: seq at [0,8), flag at [8,16), seq again at [len-8,len) */
static void payload_init(unsigned char *buf, size_t size)
{
	for (size_t i = 0; i < size; i++)
		buf[i] = (unsigned char)(i * 131u + 7u);
	put_u64(buf + 8, 0);
}

static void payload_mark(unsigned char *buf, size_t size, uint64_t seq, uint64_t flag)
{
	put_u64(buf, seq);
	put_u64(buf + 8, flag);
	put_u64(buf + size - 8, seq);
}

/* 1 = end marker, 0 = data (checked: failure recorded). */
static int payload_check(const unsigned char *d, size_t len, size_t size, uint64_t *expect)
{
	if (len != size) {
		fail("message %llu: length %zu, expected %zu", (unsigned long long)*expect, len,
		     size);
		if (len < 24) {
			++*expect;
			return 0;
		}
	}
	uint64_t seq = get_u64(d);
	if (get_u64(d + 8) == END_MAGIC) {
		if (seq != *expect)
			fail("end marker says %llu messages, received %llu",
			     (unsigned long long)seq, (unsigned long long)*expect);
		return 1;
	}
	if (seq != *expect)
		fail("got message %llu, expected %llu (lost or reordered)",
		     (unsigned long long)seq, (unsigned long long)*expect);
	else if (get_u64(d + len - 8) != seq)
		fail("message %llu: payload tail corrupt", (unsigned long long)seq);
	*expect = seq + 1;
	return 0;
}

/* ------------------------------------------------------------------ */
/* plain sockets                                                        */

static void nodelay(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int write_all(int fd, const void *buf, size_t len)
{
	const unsigned char *p = buf;
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Set in the raw spin runs: readers poll, as msgbus_recv spins before it
 * sleeps (spin_us), instead of blocking in the kernel. */
static int g_raw_spin;

static int read_all(int fd, void *buf, size_t len)
{
	unsigned char *p = buf;
	while (len) {
		ssize_t n = recv(fd, p, len, g_raw_spin ? MSG_DONTWAIT : 0);
		if (n < 0 && (errno == EINTR || (g_raw_spin && errno == EAGAIN)))
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int listen_any(int *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 4) ||
	    getsockname(fd, (struct sockaddr *)&sa, &sl)) {
		perror("bench_tcp: raw listen");
		if (fd >= 0)
			close(fd);
		return -1;
	}
	*port = ntohs(sa.sin_port);
	return fd;
}

static int connect_lo(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	nodelay(fd);
	return fd;
}

/* Child of a raw run: echo records (rtt) or verify the stream (tput). */
static int raw_child(int port, int test, size_t size)
{
	int fd = connect_lo(port);
	if (fd < 0) {
		fail("raw connect: %s", strerror(errno));
		return 1;
	}
	if (test == TEST_RTT) {
		unsigned char rec[4 + 4096];
		for (;;) {
			uint32_t len;
			if (read_all(fd, rec, 4)) {
				fail("raw echo: read failed");
				break;
			}
			memcpy(&len, rec, 4);
			if (len > 4096 || read_all(fd, rec + 4, len) ||
			    write_all(fd, rec, 4 + len)) {
				fail("raw echo: bad record or write failed");
				break;
			}
			if (len >= 16 && get_u64(rec + 4 + 8) == END_MAGIC)
				break;
		}
	} else {
		unsigned char *buf = malloc(RXCHUNK + 8192);
		size_t have = 0, off = 0;
		uint64_t expect = 0;
		int done = 0;
		if (!buf) {
			fail("raw sink: out of memory");
			close(fd);
			return 1;
		}
		while (!done) {
			ssize_t n = recv(fd, buf + have, RXCHUNK + 8192 - have, 0);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				fail("raw sink: connection ended after %llu records",
				     (unsigned long long)expect);
				break;
			}
			have += (size_t)n;
			while (have - off >= 4) {
				uint32_t len;
				memcpy(&len, buf + off, 4);
				if (have - off < 4 + (size_t)len)
					break;
				if (payload_check(buf + off + 4, len, size, &expect)) {
					done = 1;
					break;
				}
				off += 4 + len;
			}
			memmove(buf, buf + off, have - off);
			have -= off;
			off = 0;
		}
		g_sh->t_end = now_ns();
		g_sh->count = expect;
		free(buf);
	}
	close(fd);
	return g_sh->failed;
}

/* ------------------------------------------------------------------ */
/* the library                                                          */



static void lib_opts(msgbus_options *o)
{
	msgbus_options init = MSGBUS_OPTIONS_INIT;
	*o = init;
	o->ring_slots = 4096;
	o->slot_size = 128;
	o->max_msg_size = 4096;
	o->large_buffers = 256;
	o->spin_us = g_spin_us;
}

static int wait_link(msgbus_bus *bus, uint32_t subs, uint32_t svcs, int timeout_ms)
{
	uint64_t end = now_ns() + (uint64_t)timeout_ms * 1000000ull;
	for (;;) {
		msgbus_link_stats st;
		if (msgbus_link_stats_get(bus, &st) != MSGBUS_OK)
			return -1;
		if (st.links_up >= 1 && st.remote_subs >= subs && st.remote_services >= svcs)
			return 0;
		if (now_ns() > end)
			return -1;
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
}

/* The service of the rr runs: the request back as the reply. */
static void echo_cb(msgbus_req *req, void *arg)
{
	(void)arg;
	msgbus_respond(req, msgbus_req_data(req), msgbus_req_len(req));
}

/* Timed requests to "echo" (RTT_WARMUP first): 0 and median/p99 in us. */
static int rr_loop(msgbus_bus *bus, size_t size, double *med, double *p99, int *capped,
                   char *err, size_t errsize)
{
	unsigned char p[4096];
	long n = 0;
	uint64_t t_start = 0;
	payload_init(p, size);
	for (long i = 0; i < (long)RTT_WARMUP + g_n; i++) {
		msgbus_msg *r;
		uint64_t t0 = now_ns();
		if (i == RTT_WARMUP)
			t_start = t0;
		payload_mark(p, size, (uint64_t)i, 0);
		int rc = msgbus_request(bus, "echo", p, size, &r, 10000);
		if (rc != MSGBUS_OK) {
			snprintf(err, errsize, "request %ld: %s", i, msgbus_strerror(rc));
			return -1;
		}
		int bad = msgbus_msg_len(r) != size || get_u64(msgbus_msg_data(r)) != (uint64_t)i;
		msgbus_msg_release(r);
		if (bad) {
			snprintf(err, errsize, "reply %ld wrong", i);
			return -1;
		}
		if (i >= (long)RTT_WARMUP) {
			g_lat[n++] = (double)(now_ns() - t0) / 1e3;
			if (now_ns() - t_start > RUN_CAP_NS) {
				*capped = 1;
				break;
			}
		}
	}
	qsort(g_lat, (size_t)n, sizeof(*g_lat), cmp_dbl);
	*med = g_lat[n / 2];
	*p99 = g_lat[(size_t)((double)n * 0.99)];
	return 0;
}

/* Child of a library run: B. Echoes pings as pongs through the sync
 * phase (and the whole rtt run); for tput then verifies "data". */
static int lib_child(const char *url, int port, int test, size_t size, int ack_fd)
{
	msgbus_options o;
	msgbus_bus *bus = NULL;
	msgbus_sub *ping = NULL, *data = NULL;
	msgbus_service *svc = NULL;
	char tcp[64];
	int rc;

	lib_opts(&o);
	rc = msgbus_open(&bus, url, &o);
	if (rc != MSGBUS_OK) {
		fail("child: msgbus_open(%s): %s", url, msgbus_strerror(rc));
		return 1;
	}
	if ((rc = msgbus_subscribe(bus, "ping", 0, &ping)) != MSGBUS_OK ||
	    (test == TEST_TPUT && (rc = msgbus_subscribe(bus, "data", 0, &data)) != MSGBUS_OK)) {
		fail("child: msgbus_subscribe: %s", msgbus_strerror(rc));
		goto out;
	}
	if (test == TEST_RR && (rc = msgbus_serve(bus, "echo", echo_cb, NULL, &svc)) != MSGBUS_OK) {
		fail("child: msgbus_serve: %s", msgbus_strerror(rc));
		goto out;
	}
	snprintf(tcp, sizeof(tcp), "tcp://127.0.0.1:%d", port);
	if ((rc = msgbus_connect(bus, tcp)) != MSGBUS_OK) {
		fail("child: msgbus_connect: %s", msgbus_strerror(rc));
		goto out;
	}
	if (wait_link(bus, 1, test == TEST_RRBACK, 5000)) {
		fail("child: link to the parent not up in 5 s");
		goto out;
	}
	if (write(ack_fd, "R", 1) != 1)
		goto out;
	/* echo pings; in tput, until GO */
	for (;;) {
		msgbus_msg *m;
		rc = msgbus_recv(ping, &m, 20000);
		if (rc != MSGBUS_OK) {
			fail("child: recv ping: %s", msgbus_strerror(rc));
			goto out;
		}
		const unsigned char *d = msgbus_msg_data(m);
		size_t len = msgbus_msg_len(m);
		uint64_t flag = len >= 16 ? get_u64(d + 8) : 0;
		rc = msgbus_publish(bus, "pong", d, len, -1);
		msgbus_msg_release(m);
		if (rc != MSGBUS_OK) {
			fail("child: publish pong: %s", msgbus_strerror(rc));
			goto out;
		}
		if (flag == END_MAGIC || (flag == GO_MAGIC && test != TEST_RTT))
			break;
	}
	if (test == TEST_RRBACK) {
		char err[160];
		int capped = 0;
		if (rr_loop(bus, size, &g_sh->lat_med, &g_sh->lat_p99, &capped, err, sizeof(err)))
			fail("child: %s", err);
		g_sh->count = (uint64_t)capped;
	}
	while (test == TEST_RR) { /* serve until the END ping */
		msgbus_msg *m;
		rc = msgbus_recv(ping, &m, 20000);
		if (rc != MSGBUS_OK) {
			fail("child: recv END: %s", msgbus_strerror(rc));
			goto out;
		}
		uint64_t flag = msgbus_msg_len(m) >= 16 ? get_u64(msgbus_msg_data(m) + 8) : 0;
		msgbus_msg_release(m);
		if (flag == END_MAGIC)
			break;
	}
	if (test == TEST_TPUT) {
		uint64_t expect = 0;
		struct thread_cpu tc0;
		if (g_verbose)
			thread_cpu_snap(&tc0);
		for (;;) {
			msgbus_msg *m;
			rc = msgbus_recv(data, &m, 20000);
			if (rc != MSGBUS_OK) {
				fail("child: recv data after %llu: %s", (unsigned long long)expect,
				     msgbus_strerror(rc));
				break;
			}
			int end = payload_check(msgbus_msg_data(m), msgbus_msg_len(m), size, &expect);
			msgbus_msg_release(m);
			if (end)
				break;
		}
		g_sh->t_end = now_ns();
		g_sh->count = expect;
		if (g_verbose)
			thread_cpu_print("receiving side", &tc0, expect);
	}
out:
	if (svc)
		msgbus_unserve(svc);
	rc = msgbus_close(bus);
	if (rc != MSGBUS_OK)
		fail("child: msgbus_close: %s", msgbus_strerror(rc));
	return g_sh->failed;
}

/* ------------------------------------------------------------------ */
/* one run                                                               */

struct meas {
	int ok, capped;
	double a, b; /* rtt: median, p99 (us); tput: msgs/s, MB/s */
};

static void rtt_stats(struct meas *m, long n)
{
	qsort(g_lat, (size_t)n, sizeof(*g_lat), cmp_dbl);
	m->a = g_lat[n / 2];
	m->b = g_lat[(size_t)((double)n * 0.99)];
}

static int child_ok(pid_t pid, const char *what)
{
	int st = 0;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	g_child = 0;
	if (WIFSIGNALED(st))
		fprintf(stderr, "bench_tcp: %s: child killed by signal %d\n", what, WTERMSIG(st));
	else if (WEXITSTATUS(st) || g_sh->failed)
		fprintf(stderr, "bench_tcp: %s: child failed: %s\n", what,
		        g_sh->err[0] ? g_sh->err : "(no reason)");
	else
		return 1;
	return 0;
}

static struct meas run_raw(int key)
{
	struct meas m = { 0 };
	size_t size = keys[key].size;
	int test = keys[key].test, port, lfd = listen_any(&port), fd = -1;
	unsigned char *buf = NULL;
	char what[64];

	snprintf(what, sizeof(what), "raw %s %s", testname[test], keys[key].label);
	if (lfd < 0)
		return m;
	memset(g_sh, 0, sizeof(*g_sh));
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		close(lfd);
		return m;
	}
	if (pid == 0) {
		signal(SIGALRM, SIG_DFL);
		close(lfd);
		pin_self(g_cpu[1]);
		_exit(raw_child(port, test, size) ? 1 : 0);
	}
	g_child = pid;
	pin_self(g_cpu[0]);
	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	close(lfd);
	if (fd < 0)
		goto out;
	nodelay(fd);
	buf = malloc(TXBATCH + 4 + 4096);
	if (!buf)
		goto out;
	if (test == TEST_RTT) {
		unsigned char *rec = buf, back[4 + 4096];
		uint32_t len = (uint32_t)size;
		long n = 0;
		uint64_t t_start = 0;
		memcpy(rec, &len, 4);
		payload_init(rec + 4, size);
		for (long i = 0; i < (long)RTT_WARMUP + g_n; i++) {
			uint64_t t0 = now_ns();
			if (i == RTT_WARMUP)
				t_start = t0;
			payload_mark(rec + 4, size, (uint64_t)i, 0);
			if (write_all(fd, rec, 4 + size) || read_all(fd, back, 4 + size) ||
			    get_u64(back + 4) != (uint64_t)i) {
				fprintf(stderr, "bench_tcp: %s: echo %ld wrong or lost\n", what, i);
				goto out;
			}
			if (i >= (long)RTT_WARMUP) {
				g_lat[n++] = (double)(now_ns() - t0) / 1e3;
				if (now_ns() - t_start > RUN_CAP_NS) {
					m.capped = 1;
					break;
				}
			}
		}
		payload_mark(rec + 4, size, 0, END_MAGIC);
		if (write_all(fd, rec, 4 + size) || read_all(fd, back, 4 + size))
			goto out;
		rtt_stats(&m, n);
		m.ok = 1;
	} else {
		long total = size <= 64 ? 100 * g_n : 10 * g_n;
		size_t used = 0;
		uint32_t len = (uint32_t)size;
		uint64_t t0 = now_ns(), sent;
		unsigned char proto[4096];
		payload_init(proto, size);
		for (sent = 0; sent < (uint64_t)total; sent++) {
			memcpy(buf + used, &len, 4);
			memcpy(buf + used + 4, proto, size);
			payload_mark(buf + used + 4, size, sent, 0);
			used += 4 + size;
			if (used >= TXBATCH) {
				if (write_all(fd, buf, used))
					goto out;
				used = 0;
				if (now_ns() - t0 > RUN_CAP_NS) {
					m.capped = 1;
					sent++;
					break;
				}
			}
		}
		memcpy(buf + used, &len, 4);
		memcpy(buf + used + 4, proto, size);
		payload_mark(buf + used + 4, size, sent, END_MAGIC);
		used += 4 + size;
		if (write_all(fd, buf, used))
			goto out;
		if (!child_ok(pid, what))
			goto out;
		pid = 0;
		if (g_sh->count != sent) {
			fprintf(stderr, "bench_tcp: %s: %llu of %llu records arrived\n", what,
			        (unsigned long long)g_sh->count, (unsigned long long)sent);
			goto out;
		}
		double s = (double)(g_sh->t_end - t0) / 1e9;
		m.a = (double)sent / s;
		m.b = (double)sent * (double)size / s / 1e6;
		m.ok = 1;
	}
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	if (pid > 0) {
		if (!m.ok)
			kill(pid, SIGKILL);
		if (!child_ok(pid, what))
			m.ok = 0;
	}
	return m;
}

static void bus_name(char *url, size_t usize, char *path, size_t psize)
{
	unsigned n = ++g_busno;
	snprintf(url, usize, "shm://bench_tcp.%ld.%u", (long)getpid(), n);
	snprintf(path, psize, "/dev/shm/msgbus.bench_tcp.%ld.%u", (long)getpid(), n);
}

static void check_leftover(char *path)
{
	if (path[0] && access(path, F_OK) == 0) {
		fprintf(stderr, "bench_tcp: LIBRARY PROBLEM: %s left behind after every handle "
		                "closed; removing it\n", path);
		unlink(path);
		g_leftovers++;
	}
	path[0] = '\0';
}

/* Ping until a pong comes back, then GO (or, for rtt, go on pinging):
 * afterwards both directions of the link carry traffic. 0 or -1. */
static int lib_sync(msgbus_bus *bus, msgbus_sub *pong, size_t size, int go)
{
	unsigned char p[4096];
	msgbus_msg *m;
	int got = 0, rc;

	payload_init(p, size);
	for (int k = 0; k < SYNC_TRIES && !got; k++) {
		payload_mark(p, size, (uint64_t)k, SYNC_MAGIC);
		if (msgbus_publish(bus, "ping", p, size, 1000) != MSGBUS_OK)
			return -1;
		if (msgbus_recv(pong, &m, 50) == MSGBUS_OK) {
			got = 1;
			msgbus_msg_release(m);
		}
	}
	if (!got)
		return -1;
	/* a marker ends the sync; drain pongs up to it */
	payload_mark(p, size, 0, go ? GO_MAGIC : SYNC_MAGIC + 1);
	if (msgbus_publish(bus, "ping", p, size, 1000) != MSGBUS_OK)
		return -1;
	for (;;) {
		rc = msgbus_recv(pong, &m, 5000);
		if (rc != MSGBUS_OK)
			return -1;
		uint64_t flag = get_u64((const unsigned char *)msgbus_msg_data(m) + 8);
		msgbus_msg_release(m);
		if (flag != SYNC_MAGIC)
			return 0;
	}
}

static struct meas run_lib(int key)
{
	struct meas m = { 0 };
	size_t size = keys[key].size;
	int test = keys[key].test, port = -1, cmd[2] = { -1, -1 }, ack[2] = { -1, -1 }, rc;
	char ua[96], ub[96], what[64], c = 0;
	msgbus_options o;
	msgbus_bus *bus = NULL;
	msgbus_sub *pong = NULL;
	msgbus_service *svc = NULL;
	unsigned char *p = NULL;
	pid_t pid = 0;

	snprintf(what, sizeof(what), "msgbus %s %s", testname[test], keys[key].label);
	memset(g_sh, 0, sizeof(*g_sh));
	bus_name(ua, sizeof(ua), g_paths[0], sizeof(g_paths[0]));
	bus_name(ub, sizeof(ub), g_paths[1], sizeof(g_paths[1]));
	lib_opts(&o);
	if (pipe2(cmd, O_CLOEXEC) || pipe2(ack, O_CLOEXEC))
		goto out;
	/* fork first: neither process inherits the other's library threads
	 * or sockets; the port follows through the pipe */
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		goto out;
	if (pid == 0) {
		signal(SIGALRM, SIG_DFL);
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		close(cmd[1]);
		close(ack[0]);
		pin_self(g_cpu[1]);
		if (read(cmd[0], &port, sizeof(port)) != (ssize_t)sizeof(port) || port <= 0)
			_exit(1);
		_exit(lib_child(ub, port, test, size, ack[1]) ? 1 : 0);
	}
	g_child = pid;
	close(cmd[0]);
	close(ack[1]);
	cmd[0] = ack[1] = -1;
	pin_self(g_cpu[0]);
	rc = msgbus_open(&bus, ua, &o);
	if (rc != MSGBUS_OK)
		bus = NULL;
	if (rc == MSGBUS_OK)
		rc = msgbus_subscribe(bus, "pong", 0, &pong);
	if (rc == MSGBUS_OK && test == TEST_RRBACK)
		rc = msgbus_serve(bus, "echo", echo_cb, NULL, &svc);
	if (rc == MSGBUS_OK)
		rc = msgbus_listen(bus, "tcp://127.0.0.1:0", &port);
	if (rc != MSGBUS_OK) {
		fprintf(stderr, "bench_tcp: %s: %s\n", what, msgbus_strerror(rc));
		goto out;
	}
	if (write(cmd[1], &port, sizeof(port)) != (ssize_t)sizeof(port) ||
	    read(ack[0], &c, 1) != 1 || c != 'R') {
		fprintf(stderr, "bench_tcp: %s: child not ready\n", what);
		goto out;
	}
	if (wait_link(bus, test == TEST_TPUT ? 2 : 1, test == TEST_RR, 5000) ||
	    lib_sync(bus, pong, size, test != TEST_RTT)) {
		fprintf(stderr, "bench_tcp: %s: the link did not carry a ping and its pong\n",
		        what);
		goto out;
	}
	p = malloc(4096);
	if (!p)
		goto out;
	payload_init(p, size);
	if (test == TEST_RR) {
		char err[160];
		if (rr_loop(bus, size, &m.a, &m.b, &m.capped, err, sizeof(err))) {
			fprintf(stderr, "bench_tcp: %s: %s\n", what, err);
			goto out;
		}
		payload_mark(p, size, 0, END_MAGIC);
		if (msgbus_publish(bus, "ping", p, size, -1) != MSGBUS_OK)
			goto out;
		if (!child_ok(pid, what))
			goto out;
		pid = 0;
		m.ok = 1;
	} else if (test == TEST_RRBACK) {
		if (!child_ok(pid, what))
			goto out;
		pid = 0;
		m.a = g_sh->lat_med;
		m.b = g_sh->lat_p99;
		m.capped = g_sh->count != 0;
		m.ok = 1;
	} else if (test == TEST_RTT) {
		long n = 0;
		uint64_t t_start = 0;
		for (long i = 0; i < (long)RTT_WARMUP + g_n; i++) {
			msgbus_msg *r;
			uint64_t t0 = now_ns();
			if (i == RTT_WARMUP)
				t_start = t0;
			payload_mark(p, size, (uint64_t)i, 0);
			rc = msgbus_publish(bus, "ping", p, size, -1);
			if (rc == MSGBUS_OK)
				rc = msgbus_recv(pong, &r, 10000);
			if (rc != MSGBUS_OK) {
				fprintf(stderr, "bench_tcp: %s: round trip %ld: %s\n", what, i,
				        msgbus_strerror(rc));
				goto out;
			}
			int bad = msgbus_msg_len(r) != size ||
			          get_u64(msgbus_msg_data(r)) != (uint64_t)i;
			msgbus_msg_release(r);
			if (bad) {
				fprintf(stderr, "bench_tcp: %s: pong %ld wrong\n", what, i);
				goto out;
			}
			if (i >= (long)RTT_WARMUP) {
				g_lat[n++] = (double)(now_ns() - t0) / 1e3;
				if (now_ns() - t_start > RUN_CAP_NS) {
					m.capped = 1;
					break;
				}
			}
		}
		payload_mark(p, size, 0, END_MAGIC);
		if (msgbus_publish(bus, "ping", p, size, -1) != MSGBUS_OK)
			goto out;
		rtt_stats(&m, n);
		if (!child_ok(pid, what))
			goto out;
		pid = 0;
		m.ok = 1;
	} else {
		long total = size <= 64 ? 100 * g_n : 10 * g_n;
		uint64_t t0 = now_ns(), sent;
		struct thread_cpu tc0;
		if (g_verbose)
			thread_cpu_snap(&tc0);
		for (sent = 0; sent < (uint64_t)total; sent++) {
			payload_mark(p, size, sent, 0);
			rc = msgbus_publish(bus, "data", p, size, -1);
			if (rc != MSGBUS_OK) {
				fprintf(stderr, "bench_tcp: %s: publish %llu: %s\n", what,
				        (unsigned long long)sent, msgbus_strerror(rc));
				goto out;
			}
			if ((sent & 1023) == 1023 && now_ns() - t0 > RUN_CAP_NS) {
				m.capped = 1;
				sent++;
				break;
			}
		}
		payload_mark(p, size, sent, END_MAGIC);
		if (msgbus_publish(bus, "data", p, size, -1) != MSGBUS_OK)
			goto out;
		if (!child_ok(pid, what))
			goto out;
		if (g_verbose)
			thread_cpu_print("sending side", &tc0, sent);
		pid = 0;
		if (g_sh->count != sent) {
			fprintf(stderr, "bench_tcp: %s: %llu of %llu messages arrived\n", what,
			        (unsigned long long)g_sh->count, (unsigned long long)sent);
			goto out;
		}
		double secs = (double)(g_sh->t_end - t0) / 1e9;
		m.a = (double)sent / secs;
		m.b = (double)sent * (double)size / secs / 1e6;
		m.ok = 1;
	}
out:
	free(p);
	if (svc)
		msgbus_unserve(svc);
	if (pid > 0) {
		kill(pid, SIGKILL);
		child_ok(pid, what);
		m.ok = 0;
	}
	if (bus && (rc = msgbus_close(bus)) != MSGBUS_OK) {
		fprintf(stderr, "bench_tcp: %s: msgbus_close: %s\n", what, msgbus_strerror(rc));
		m.ok = 0;
	}
	for (int i = 0; i < 2; i++) {
		if (cmd[i] >= 0)
			close(cmd[i]);
		if (ack[i] >= 0)
			close(ack[i]);
	}
	check_leftover(g_paths[0]);
	check_leftover(g_paths[1]);
	return m;
}

/* ------------------------------------------------------------------ */
/* driver                                                                */

struct stat_ {
	int n, failed, capped, ran;
	double a[MAX_REPS], b[MAX_REPS];
	double ma, mb;
};
static struct stat_ st[K_COUNT][M_COUNT];

/* Other processes' CPU while a figure's runs went, as bench.c reports it. */
static void print_load(const struct load_mark *a, const struct load_mark *b)
{
	double pct = load_other_pct(a, b);
	if (pct < 0)
		return;
	if (pct >= 5.0)
		printf("         [other processes used %.0f%% of this machine during these runs - "
		       "figures are disturbed]\n",
		       pct);
	else if (g_verbose)
		printf("         [other processes during these runs: %.1f%%]\n", pct);
}

static void print_key(int key)
{
	for (int t = 0; t < M_COUNT; t++) {
		struct stat_ *x = &st[key][t], *r = &st[key][M_RAW], *rs = &st[key][M_RAWSPIN];
		if (!x->ran)
			continue;
		x->ma = median(x->a, x->n);
		x->mb = median(x->b, x->n);
		char ratio[64] = "", spread[96] = "";
		if (t == M_LIB && r->n > 0 && x->n > 0)
			snprintf(ratio, sizeof(ratio), "  %5.2fx raw", x->ma / r->ma);
		if (t == M_LIB && rs->n > 0 && x->n > 0)
			snprintf(ratio + strlen(ratio), sizeof(ratio) - strlen(ratio),
			         "  %5.2fx raw spin", x->ma / rs->ma);
		if (g_verbose && x->n > 0) {
			double lo = x->a[0], hi = x->a[0];
			for (int i = 1; i < x->n; i++) {
				lo = x->a[i] < lo ? x->a[i] : lo;
				hi = x->a[i] > hi ? x->a[i] : hi;
			}
			snprintf(spread, sizeof(spread), "  (runs %.4g..%.4g)", lo, hi);
		}
		if (keys[key].test == TEST_RR || keys[key].test == TEST_RRBACK)
			printf("%-8s %-6s %-4s median %8.2f us  p99 %8.2f us%s", mname[t],
			       keys[key].test == TEST_RR ? "rr" : "rrback", keys[key].label, x->ma,
			       x->mb, spread);
		else if (keys[key].test == TEST_RTT)
			printf("%-8s rtt  %-4s  median %8.2f us  p99 %8.2f us%s%s", mname[t],
			       keys[key].label, x->ma, x->mb, ratio, spread);
		else
			printf("%-8s tput %-4s  %8.3f M msgs/s  %8.1f MB/s%s%s", mname[t],
			       keys[key].label, x->ma / 1e6, x->mb, ratio, spread);
		if (x->failed)
			printf("  [%d run(s) FAILED]", x->failed);
		if (x->capped)
			printf("  [%d run(s) hit the 1 s cap]", x->capped);
		printf("\n");
	}
	fflush(stdout);
}

static void run_all(void)
{
	int last = -1;
	for (int key = 0; key < K_COUNT; key++) {
		int test = keys[key].test;
		if (!(g_tests & (1u << test)) || (g_size && keys[key].size != g_size))
			continue;
		if (test != last) {
			printf("\n== %s ==\n",
			       test == TEST_RTT      ? "ping-pong round trip over 127.0.0.1"
			       : test == TEST_RR     ? "msgbus_request across the link: the connecting "
			                               "side serves, the listening side asks"
			       : test == TEST_RRBACK ? "msgbus_request across the link: the listening "
			                               "side serves, the connecting side asks"
			                             : "1:1 throughput over 127.0.0.1, lossless");
			last = test;
		}
		struct load_mark l0, l1;
		load_sample(&l0);
		for (int rep = 0; rep < g_reps; rep++) {
			for (int t = 0; t < M_COUNT; t++) {
				struct meas m;
				if (!(g_modes & (1u << t)) || (t == M_RAWSPIN && test != TEST_RTT) ||
				    (t != M_LIB && (test == TEST_RR || test == TEST_RRBACK)))
					continue; /* rr's baseline: the rtt rows */
				st[key][t].ran = 1;
				alarm(WATCHDOG_S);
				g_raw_spin = t == M_RAWSPIN;
				m = t == M_LIB ? run_lib(key) : run_raw(key);
				alarm(0);
				if (g_pin && g_cpu[0] >= 0) {
					cpu_set_t all;
					CPU_ZERO(&all);
					for (int c = 0; c < CPU_SETSIZE; c++)
						CPU_SET(c, &all);
					sched_setaffinity(0, sizeof(all), &all);
				}
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
		print_key(key);
		print_load(&l0, &l1);
	}
}

/* One row of the target table: figure, libmsgbus, baseline, ratio,
 * target. lib/base: the stats (NULL: not run); b: use the p99 (mb). */
static void target_row(const char *figure, const struct stat_ *lib, const struct stat_ *base,
                       bool p99, const char *unit, double scale, const char *basename,
                       double limit, bool at_most)
{
	if (!lib || !base || !lib->ran || !base->ran) {
		printf("  %-34s  %12s  %12s  %7s  not run\n", figure, "-", "-", "-");
		return;
	}
	if (lib->n == 0 || base->n == 0) {
		printf("  %-34s  %12s  %12s  %7s  MISS (failed runs)\n", figure, "-", "-", "-");
		return;
	}
	double l = p99 ? lib->mb : lib->ma, r = p99 ? base->mb : base->ma, x = l / r;
	char lv[32], rv[32];
	snprintf(lv, sizeof(lv), "%.2f %s", l / scale, unit);
	snprintf(rv, sizeof(rv), "%.2f %s", r / scale, unit);
	bool pass = at_most ? x <= limit : x >= limit;
	printf("  %-34s  %12s  %12s  %6.2fx  %s %s %.2fx %s\n", figure, lv, rv, x,
	       pass ? "PASS" : "MISS", at_most ? "<=" : ">=", limit, basename);
}

static void print_targets(void)
{
	struct stat_ *l, *raw_rtt = &st[K_RTT64][M_RAW];
	printf("\n== targets (median of %d runs; baselines from the same run) ==\n", g_reps);
	printf("  %-34s  %12s  %12s  %7s  %s\n", "figure", "libmsgbus", "baseline", "ratio",
	       "target");
	l = &st[K_TPUT64][M_LIB];
	if (l->ran && l->n > 0)
		printf("  %-34s  %12s  %12s  %7s  %s (>= 10 M msgs/s)\n", "64B stream, absolute",
		       "", "", "", l->ma >= 10e6 ? "PASS" : "MISS");
	target_row("64B stream msgs/s", l, &st[K_TPUT64][M_RAW], false, "M", 1e6, "raw",
	           0.3, false);
	target_row("4KiB stream msgs/s", &st[K_TPUT4K][M_LIB], &st[K_TPUT4K][M_RAW], false,
	           "M", 1e6, "raw", 0.6, false);
	target_row("64B rr median (vs pub/sub)", &st[K_RR64][M_LIB], &st[K_RTT64][M_LIB],
	           false, "us", 1, "pub/sub", 1.3, true);
	target_row("64B rr back median (vs pub/sub)", &st[K_RRBACK64][M_LIB],
	           &st[K_RTT64][M_LIB], false, "us", 1, "pub/sub", 1.3, true);
	target_row("64B pub/sub p99", &st[K_RTT64][M_LIB], raw_rtt, true, "us", 1, "raw",
	           3, true);
	target_row("64B rr p99", &st[K_RR64][M_LIB], raw_rtt, true, "us", 1, "raw", 3, true);
	target_row("64B rr back p99", &st[K_RRBACK64][M_LIB], raw_rtt, true, "us", 1, "raw",
	           3, true);
	/* Against the faster raw round trip: blocking reads, or polling ones
	 * (like for like with the library's spinning receive). */
	struct stat_ *r = raw_rtt;
	if (st[K_RTT64][M_RAWSPIN].n > 0 && (r->n == 0 || st[K_RTT64][M_RAWSPIN].ma < r->ma))
		r = &st[K_RTT64][M_RAWSPIN];
	target_row("64B pub/sub median", &st[K_RTT64][M_LIB], r, false, "us", 1, mname[r - st[K_RTT64]],
	           1.3, true);
}

/* Remove (and count) any segment of ours still in /dev/shm. */
static void final_shm_check(void)
{
	char prefix[64];
	DIR *d = opendir("/dev/shm");
	struct dirent *e;
	if (!d)
		return;
	snprintf(prefix, sizeof(prefix), "msgbus.bench_tcp.%ld.", (long)getpid());
	while ((e = readdir(d)) != NULL) {
		if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) {
			char path[300];
			snprintf(path, sizeof(path), "/dev/shm/%s", e->d_name);
			fprintf(stderr, "bench_tcp: leftover %s removed\n", path);
			unlink(path);
			g_leftovers++;
		}
	}
	closedir(d);
}

static unsigned parse_list(const char *arg, const char *const *names, int count)
{
	unsigned mask = 0;
	char *copy = strdup(arg), *save = NULL, *tok;
	if (!copy)
		return 0;
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		int i;
		for (i = 0; i < count; i++)
			if (strcmp(tok, names[i]) == 0)
				break;
		if (i == count) {
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
	fprintf(f, "usage: bench_tcp [-n COUNT] [-r REPS] [-t rtt,rr,rrback,tput] [-m raw,rawspin,msgbus] "
	           "[-s SIZE] [-S SPIN_US] [-P] [-v]\n"
	           "  -n COUNT   round trips per ping-pong run (default 20000); throughput\n"
	           "             runs send 100x (64 B) / 10x (4 KiB) COUNT messages\n"
	           "  -r REPS    runs per figure, median reported (default 5, max %d)\n"
	           "  -t TESTS   comma list of rtt,rr,rrback,tput (default all)\n"
	           "  -m MODES   comma list of raw,rawspin,msgbus (default all)\n"
	           "  -s SIZE    only the runs with this payload size (64 or 4096)\n"
	           "  -S SPIN_US spin_us bus option (default 100)\n"
	           "  -P         pin parent and child to the first two CPUs\n"
	           "  -v         print the spread of the runs, and each side's CPU per\n"
	           "             message by thread for the streams\n",
	        MAX_REPS);
}

int main(int argc, char **argv)
{
	struct sigaction sa;
	cpu_set_t mask;
	int opt;

	while ((opt = getopt(argc, argv, "n:r:t:m:s:S:Pvh")) != -1) {
		switch (opt) {
		case 'n':
			g_n = strtol(optarg, NULL, 10);
			if (g_n < 100 || g_n > 100000000) {
				fprintf(stderr, "bench_tcp: -n must be 100..1e8\n");
				return 2;
			}
			break;
		case 'r':
			g_reps = atoi(optarg);
			if (g_reps < 1 || g_reps > MAX_REPS) {
				fprintf(stderr, "bench_tcp: -r must be 1..%d\n", MAX_REPS);
				return 2;
			}
			break;
		case 't':
			if (!(g_tests = parse_list(optarg, testname, TEST_COUNT))) {
				usage(stderr);
				return 2;
			}
			break;
		case 'm':
			if (!(g_modes = parse_list(optarg, mopt, M_COUNT))) {
				usage(stderr);
				return 2;
			}
			break;
		case 's':
			g_size = (size_t)strtoul(optarg, NULL, 10);
			if (g_size != 64 && g_size != 4096) {
				fprintf(stderr, "bench_tcp: -s must be 64 or 4096\n");
				return 2;
			}
			break;
		case 'S':
			g_spin_us = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'P':
			g_pin = 1;
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
	g_sh = mmap(NULL, sizeof(*g_sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	g_lat = malloc((size_t)g_n * sizeof(*g_lat));
	if (g_sh == MAP_FAILED || !g_lat) {
		perror("bench_tcp: memory");
		return 1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_fatal_signal;
	sigaction(SIGALRM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (sched_getaffinity(0, sizeof(mask), &mask) == 0)
		for (int c = 0, k = 0; c < CPU_SETSIZE && k < 2; c++)
			if (CPU_ISSET(c, &mask))
				g_cpu[k++] = c;

	printf("libmsgbus %s TCP benchmark: %ld cpus, %d runs per figure (median), n %ld, "
	       "spin_us %u, %s\n",
	       msgbus_version(), sysconf(_SC_NPROCESSORS_ONLN), g_reps, g_n, g_spin_us,
	       g_pin && g_cpu[1] >= 0 ? "parent and child pinned to two CPUs" : "not pinned");
	printf("raw tcp = plain socket, TCP_NODELAY, same two processes: records echoed "
	       "(rtt), batched stream of length-prefixed records (tput)\n");
	uint64_t t0 = now_ns();
	run_all();
	print_targets();
	final_shm_check();
	printf("\ntotal %.1f s; %d failed run(s); %d leftover segment(s)\n",
	       (double)(now_ns() - t0) / 1e9, g_failures, g_leftovers);
	free(g_lat);
	munmap(g_sh, sizeof(*g_sh));
	return g_failures || g_leftovers ? 1 : 0;
}
