/*
 * bench_inbox.c - the bare inbox ring (lib/ring/inbox.c) against the raw baseline
 * ring (baseline_ring.h), between processes, in one run.
 *
 * Usage: bench_inbox [-r REPS] [-n SCALE] [-s SIZE] [-S SPIN_US] [-p] [-v]
 *   -r REPS   runs per figure, alternating baseline and inbox (default 5);
 *             the median is printed
 *   -n SCALE  message counts in thousands: 64 B sends 20x SCALE, 4 KiB 4x,
 *             64 KiB 0.4x (default 100: 2 M, 400 k, 40 k messages)
 *   -s SIZE   only this message size (64, 4096 or 65536)
 *   -S US     the inbox's spin before sleeping (default 100 us)
 *   -p        do not pin (by default the producer and the consumer of the
 *             1:1 runs get one CPU each; 2:1 runs are never pinned)
 *   -v        print every run
 *
 * Round trip (64 B): A puts a message into ring 1, B reads it and puts the
 * same bytes into ring 2, A reads that; 1000 warm-up trips, then COUNT/100
 * timed; the mean of a run, the median of the runs. Pinned like 1:1.
 *
 * Shapes: 1:1 = one producer process, one consumer process, for the
 * baseline and the inbox; 2:1 = two producer processes into one inbox (the
 * baseline is single-producer: its 2:1 column is the 1:1 baseline figure).
 * Each message carries its sequence number at both ends; the consumer checks
 * length, order (per producer) and count. A rate is messages / (time from
 * "go" to the consumer's receipt of the last message).
 *
 * The inbox records carry a 1-byte subject (8 bytes with padding) and a
 * 16-byte record header; the baseline's header is 8 bytes. Both rings have
 * the same data size: 1 MiB for 64 B, 256 KiB for 4 KiB and 64 KiB.
 *
 * Exit status: 0 when every run verified, 1 when one failed, 2 usage.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "msgbus.h"
#include "ring/inbox.h"
#include "baseline_ring.h"

#define MAX_REPS 99
#include "bench_util.h"

#define INBOX_CTL_OFF 0u
#define INBOX_DATA_OFF 4096u
#define WATCHDOG_S 120
#define MAX_PROD 2

enum { K_BASE, K_INBOX1, K_INBOX2, K_RC1, K_COUNT };
static const char *const kname[K_COUNT] = { "baseline 1:1", "inbox 1:1", "inbox 2:1",
	                                    "inbox r/c 1:1" };

static int g_reps = 5;
static long g_scale = 100;
static uint64_t g_spin_ns = 100000;
static int g_pin = 1;
static int g_verbose;
static long g_only; /* -s */
static int g_cpu[2] = { -1, -1 };

/* Shared between the parent and its children. */
struct ctl {
	_Alignas(128) _Atomic int ready;
	_Alignas(128) _Atomic int go;
	uint64_t t_end;
	int failed;
	char err[160];
};

struct run {
	int kind;
	size_t size;
	uint64_t count; /* per producer */
	uint64_t ring_bytes;
	struct ctl *ctl;
	br_ring *br, *br2;      /* br2, seg2: the way back of a round trip */
	unsigned char *seg, *seg2;
	uint64_t seg_size;
	unsigned char src[65536]; /* each process's own copy after fork */
};

static struct run g_run;

static void fail(struct ctl *c, const char *msg, uint64_t a, uint64_t b)
{
	if (!c->failed) {
		c->failed = 1;
		snprintf(c->err, sizeof(c->err), "%s (%llu, %llu)", msg, (unsigned long long)a,
		         (unsigned long long)b);
	}
}

static void pin_self(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(0, sizeof(set), &set); /* best effort */
}

static void wait_go(struct ctl *c)
{
	atomic_fetch_add(&c->ready, 1);
	while (!atomic_load_explicit(&c->go, memory_order_acquire))
		;
}

/* ---- baseline ------------------------------------------------------------- */

static void base_produce(struct run *r)
{
	br_prod p;

	br_prod_init(&p);
	wait_go(r->ctl);
	for (uint64_t i = 0; i < r->count; i++) {
		unsigned char *d = br_reserve(r->br, &p, r->size);
		memcpy(d, r->src, r->size);
		put_u64(d, i);
		put_u64(d + r->size - 8, i);
		br_commit(r->br, &p);
	}
}

static void base_consume(struct run *r)
{
	br_cons c;

	br_cons_init(&c, 0);
	wait_go(r->ctl);
	for (uint64_t i = 0; i < r->count; i++) {
		size_t len;
		const unsigned char *d = br_peek(r->br, &c, &len);
		if (len != r->size || get_u64(d) != i || get_u64(d + len - 8) != i) {
			fail(r->ctl, "baseline: bad message", i, get_u64(d));
			return;
		}
		br_release(r->br, &c, len);
	}
	r->ctl->t_end = now_ns();
}

/* ---- inbox ---------------------------------------------------------------- */

static int inbox_view(struct run *r, struct mb_inbox *ib)
{
	return mb_inbox_attach(ib, r->seg, r->seg_size, INBOX_CTL_OFF, INBOX_DATA_OFF,
	                       r->ring_bytes);
}

static void inbox_produce(struct run *r, uint32_t id)
{
	struct mb_inbox ib;
	struct mb_inbox_prod p;

	if (inbox_view(r, &ib)) {
		fail(r->ctl, "inbox: attach", id, 0);
		return;
	}
	mb_inbox_prod_init(&p, &ib, id, g_spin_ns, NULL, NULL);
	wait_go(r->ctl);
	for (uint64_t i = 0; i < r->count; i++) {
		struct mb_inbox_res res;
		uint64_t tag = i | (uint64_t)id << 56;
		int rc;
		if (r->kind != K_RC1) { /* the call publish would make: put */
			put_u64(r->src, tag);
			put_u64(r->src + r->size - 8, tag);
			rc = mb_inbox_put(&p, "t", 1, r->src, (uint32_t)r->size, UINT64_MAX);
			if (rc) {
				fail(r->ctl, "inbox: put", (uint64_t)rc, i);
				return;
			}
			continue;
		}
		rc = mb_inbox_reserve(&p, 1, (uint32_t)r->size, UINT64_MAX, &res);
		if (rc) {
			fail(r->ctl, "inbox: reserve", (uint64_t)rc, i);
			return;
		}
		*(char *)res.subject = 't';
		memcpy(res.payload, r->src, r->size);
		put_u64(res.payload, tag);
		put_u64((unsigned char *)res.payload + r->size - 8, tag);
		rc = mb_inbox_commit(&p, &res);
		if (rc) {
			fail(r->ctl, "inbox: commit", (uint64_t)rc, i);
			return;
		}
	}
}

static void inbox_consume(struct run *r, uint32_t nprod)
{
	struct mb_inbox ib;
	struct mb_inbox_cons c;
	uint64_t next[MAX_PROD] = { 0 };

	if (inbox_view(r, &ib)) {
		fail(r->ctl, "inbox: attach", 0, 0);
		return;
	}
	mb_inbox_cons_init(&c, &ib, NULL, NULL, g_spin_ns, 10000000);
	wait_go(r->ctl);
	for (uint64_t n = 0; n < r->count * nprod; n++) {
		struct mb_inbox_msg m;
		int rc = mb_inbox_peek_wait(&c, &m, UINT64_MAX);
		uint64_t tag, id;
		if (rc) {
			fail(r->ctl, "inbox: peek", (uint64_t)rc, n);
			return;
		}
		tag = get_u64(m.payload);
		id = tag >> 56;
		if (m.payload_len != r->size || id >= nprod || (tag & ((1ull << 56) - 1)) != next[id] ||
		    get_u64((const unsigned char *)m.payload + m.payload_len - 8) != tag) {
			fail(r->ctl, "inbox: bad message", n, tag);
			return;
		}
		next[id]++;
		mb_inbox_consume(&c);
	}
	mb_inbox_flush(&c);
	r->ctl->t_end = now_ns();
}

/* ---- one run -------------------------------------------------------------- */

static pid_t spawn(struct run *r, int role, int cpu)
{
	pid_t pid = fork();

	if (pid != 0)
		return pid;
	alarm(WATCHDOG_S);
	pin_self(cpu);
	if (r->kind == K_BASE)
		role ? base_produce(r) : base_consume(r);
	else if (role)
		inbox_produce(r, (uint32_t)(role - 1));
	else
		inbox_consume(r, r->kind == K_INBOX2 ? 2 : 1);
	_exit(0);
}

/* ---- round trip ----------------------------------------------------------- */

#define RTT_WARMUP 1000u

static int rtt_base_step(struct run *r, br_prod *p, br_cons *c, int ping, uint64_t i)
{
	br_ring *tx = ping ? r->br : r->br2, *rx = ping ? r->br2 : r->br;
	unsigned char *d;
	const unsigned char *in;
	size_t len;

	if (ping) {
		d = br_reserve(tx, p, r->size);
		memcpy(d, r->src, r->size);
		put_u64(d, i);
		br_commit(tx, p);
	}
	in = br_peek(rx, c, &len);
	if (len != r->size || get_u64(in) != i)
		return -1;
	if (!ping) {
		d = br_reserve(tx, p, r->size);
		memcpy(d, in, len);
		br_commit(tx, p);
	}
	br_release(rx, c, len);
	return 0;
}

static int rtt_inbox_step(struct run *r, struct mb_inbox_prod *p, struct mb_inbox_cons *c,
                          int ping, uint64_t i)
{
	struct mb_inbox_msg m;

	if (ping) {
		put_u64(r->src, i);
		if (mb_inbox_put(p, "t", 1, r->src, (uint32_t)r->size, UINT64_MAX))
			return -1;
	}
	if (mb_inbox_peek_wait(c, &m, UINT64_MAX) || m.payload_len != r->size ||
	    get_u64(m.payload) != i)
		return -1;
	if (!ping && mb_inbox_put(p, "t", 1, m.payload, m.payload_len, UINT64_MAX))
		return -1;
	mb_inbox_consume(c);
	return 0;
}

/* One side of a round-trip run: ping (A) or echo (B). */
static void rtt_side(struct run *r, int ping)
{
	struct mb_inbox ia, ib;
	struct mb_inbox_prod ip;
	struct mb_inbox_cons ic;
	br_prod bp;
	br_cons bc;
	uint64_t t0 = 0;

	br_prod_init(&bp);
	br_cons_init(&bc, 0);
	if (r->kind != K_BASE) {
		if (inbox_view(r, &ia) || mb_inbox_attach(&ib, r->seg2, r->seg_size, INBOX_CTL_OFF,
		                                          INBOX_DATA_OFF, r->ring_bytes)) {
			fail(r->ctl, "rtt: attach", 0, 0);
			return;
		}
		mb_inbox_prod_init(&ip, ping ? &ia : &ib, ping ? 1 : 2, g_spin_ns, NULL, NULL);
		mb_inbox_cons_init(&ic, ping ? &ib : &ia, NULL, NULL, g_spin_ns, 10000000);
	}
	wait_go(r->ctl);
	for (uint64_t i = 0; i < r->count + RTT_WARMUP; i++) {
		if (ping && i == RTT_WARMUP)
			t0 = now_ns();
		if (r->kind == K_BASE ? rtt_base_step(r, &bp, &bc, ping, i)
		                      : rtt_inbox_step(r, &ip, &ic, ping, i)) {
			fail(r->ctl, "rtt: bad reply", i, 0);
			return;
		}
	}
	if (ping)
		r->ctl->t_end = now_ns() - t0;
}

/* Mean round trip of one run in ns, or -1 when it failed. */
static double rtt_once(struct run *r)
{
	pid_t pid[2];
	int ok = 1;

	memset(r->ctl, 0, sizeof(*r->ctl));
	if (r->kind == K_BASE) {
		r->br = br_create(r->ring_bytes, 1);
		r->br2 = br_create(r->ring_bytes, 1);
		if (!r->br || !r->br2)
			return -1;
	} else if (mb_inbox_format(r->seg, r->seg_size, INBOX_CTL_OFF, INBOX_DATA_OFF,
	                           r->ring_bytes) ||
	           mb_inbox_format(r->seg2, r->seg_size, INBOX_CTL_OFF, INBOX_DATA_OFF,
	                           r->ring_bytes)) {
		return -1;
	}
	for (int i = 0; i < 2; i++) {
		pid[i] = fork();
		if (pid[i] == 0) {
			alarm(WATCHDOG_S);
			pin_self(g_pin ? g_cpu[i] : -1);
			rtt_side(r, i == 0);
			_exit(0);
		}
	}
	while (atomic_load(&r->ctl->ready) < 2)
		sched_yield();
	atomic_store_explicit(&r->ctl->go, 1, memory_order_release);
	for (int i = 0; i < 2; i++) {
		int st;
		while (waitpid(pid[i], &st, 0) < 0 && errno == EINTR)
			;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			ok = 0;
	}
	if (r->kind == K_BASE) {
		br_destroy(r->br);
		br_destroy(r->br2);
		r->br = r->br2 = NULL;
	}
	if (!ok || r->ctl->failed) {
		fprintf(stderr, "rtt %s: %s\n", kname[r->kind],
		        r->ctl->failed ? r->ctl->err : "a child died");
		return -1;
	}
	return (double)r->ctl->t_end / (double)r->count;
}

static int bench_rtt(uint64_t count)
{
	double v[2][MAX_REPS], med[2];
	struct run *r = &g_run;

	r->size = 64;
	r->ring_bytes = 64u << 10;
	r->count = count;
	for (int rep = 0; rep < g_reps; rep++)
		for (int k = 0; k < 2; k++) {
			r->kind = k ? K_INBOX1 : K_BASE;
			v[k][rep] = rtt_once(r);
			if (v[k][rep] < 0)
				return 1;
		}
	med[0] = median_dbl(v[0], g_reps);
	med[1] = median_dbl(v[1], g_reps);
	printf("round trip 64 B: baseline %.3f us, inbox put %.3f us, %.2fx"
	       " (issue 9 goal for the full v2: <= 2x)\n",
	       med[0] / 1e3, med[1] / 1e3, med[1] / med[0]);
	fflush(stdout);
	return 0;
}

/* Messages per second of one run, or -1 when it failed. */
static double run_once(struct run *r)
{
	int nprod = r->kind == K_INBOX2 ? 2 : 1;
	int pin = g_pin && nprod == 1;
	pid_t pid[1 + MAX_PROD];
	uint64_t t0;
	int ok = 1;

	memset(r->ctl, 0, sizeof(*r->ctl));
	if (r->kind == K_BASE) {
		r->br = br_create(r->ring_bytes, 1);
		if (!r->br)
			return -1;
	} else if (mb_inbox_format(r->seg, r->seg_size, INBOX_CTL_OFF, INBOX_DATA_OFF,
	                           r->ring_bytes)) {
		return -1;
	} else {
		/* Touch the data area once, as br_create does. */
		memset(r->seg + INBOX_DATA_OFF, 0, r->ring_bytes);
	}
	for (int i = 0; i <= nprod; i++)
		pid[i] = spawn(r, i, pin ? g_cpu[i == 0 ? 1 : 0] : -1);
	while (atomic_load(&r->ctl->ready) < nprod + 1)
		sched_yield();
	t0 = now_ns();
	atomic_store_explicit(&r->ctl->go, 1, memory_order_release);
	for (int i = 0; i <= nprod; i++) {
		int st;
		while (waitpid(pid[i], &st, 0) < 0 && errno == EINTR)
			;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			ok = 0;
	}
	if (r->kind == K_BASE) {
		br_destroy(r->br);
		r->br = NULL;
	}
	if (!ok || r->ctl->failed) {
		fprintf(stderr, "%s %zu B: %s\n", kname[r->kind], r->size,
		        r->ctl->failed ? r->ctl->err : "a child died");
		return -1;
	}
	return (double)r->count * nprod / ((double)(r->ctl->t_end - t0) / 1e9);
}

static void pick_cpus(void)
{
	cpu_set_t set;
	int k = 0;

	if (sched_getaffinity(0, sizeof(set), &set) != 0)
		return;
	for (int c = 0; c < CPU_SETSIZE && k < 2; c++)
		if (CPU_ISSET(c, &set))
			g_cpu[k++] = c;
	if (k < 2)
		g_cpu[0] = g_cpu[1] = -1;
}

static int usage(void)
{
	fprintf(stderr, "usage: bench_inbox [-r REPS] [-n SCALE] [-s SIZE] [-S SPIN_US] [-p] [-v]\n");
	return 2;
}

static int bench_size(size_t size, uint64_t count, uint64_t ring_bytes)
{
	double v[K_COUNT][MAX_REPS], med[K_COUNT];
	struct run *r = &g_run;

	r->size = size;
	r->ring_bytes = ring_bytes;
	for (int rep = 0; rep < g_reps; rep++)
		for (int k = 0; k < K_COUNT; k++) {
			r->kind = k;
			r->count = k == K_INBOX2 ? count / 2 : count;
			v[k][rep] = run_once(r);
			if (v[k][rep] < 0)
				return 1;
			if (g_verbose)
				printf("  run %d %-13s %6zu B: %8.3f M msgs/s\n", rep, kname[k], size,
				       v[k][rep] / 1e6);
		}
	for (int k = 0; k < K_COUNT; k++)
		med[k] = median_dbl(v[k], g_reps);
	printf("%6zu B | %8.3f M %7.0f MB/s | %8.3f M %5.2fx [%4.2f-%4.2f] | %8.3f M %5.2fx"
	       " | %8.3f M %5.2fx\n",
	       size, med[K_BASE] / 1e6, med[K_BASE] * (double)size / 1e6, med[K_INBOX1] / 1e6,
	       med[K_INBOX1] / med[K_BASE], min_dbl(v[K_INBOX1], g_reps) / med[K_BASE],
	       max_dbl(v[K_INBOX1], g_reps) / med[K_BASE], med[K_INBOX2] / 1e6,
	       med[K_INBOX2] / med[K_BASE], med[K_RC1] / 1e6, med[K_RC1] / med[K_BASE]);
	fflush(stdout);
	return 0;
}

int main(int argc, char **argv)
{
	struct load_mark a, b;
	int opt, rc = 0;

	while ((opt = getopt(argc, argv, "r:n:s:S:pv")) != -1) {
		switch (opt) {
		case 'r': g_reps = atoi(optarg); break;
		case 'n': g_scale = atol(optarg); break;
		case 's': g_only = atol(optarg); break;
		case 'S': g_spin_ns = strtoull(optarg, NULL, 10) * 1000; break;
		case 'p': g_pin = 0; break;
		case 'v': g_verbose = 1; break;
		default: return usage();
		}
	}
	if (g_reps < 1 || g_reps > MAX_REPS || g_scale < 1)
		return usage();
	if (g_pin)
		pick_cpus();
	g_run.ctl = mmap(NULL, sizeof(struct ctl), PROT_READ | PROT_WRITE,
	                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	g_run.seg_size = INBOX_DATA_OFF + (1u << 20);
	g_run.seg = mmap(NULL, g_run.seg_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
	                 -1, 0);
	g_run.seg2 = mmap(NULL, g_run.seg_size, PROT_READ | PROT_WRITE,
	                  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (g_run.ctl == MAP_FAILED || g_run.seg == MAP_FAILED || g_run.seg2 == MAP_FAILED)
		return 1;
	for (size_t i = 0; i < sizeof(g_run.src); i++)
		g_run.src[i] = (unsigned char)(i * 31);
	printf("bench_inbox: %d runs per figure (median), pinned: %s, inbox spin %llu us\n",
	       g_reps, g_pin && g_cpu[0] >= 0 ? "yes (1:1)" : "no",
	       (unsigned long long)(g_spin_ns / 1000));
	printf("  size | baseline 1:1 msgs/s  MB/s | inbox put 1:1 ratio [min-max]  | "
	       "inbox put 2:1     | reserve/commit 1:1\n");
	load_sample(&a);
	if (!g_only || g_only == 64)
		rc |= bench_size(64, (uint64_t)g_scale * 20000, 1u << 20);
	if (!g_only || g_only == 4096)
		rc |= bench_size(4096, (uint64_t)g_scale * 4000, 256u << 10);
	if (!g_only || g_only == 65536)
		rc |= bench_size(65536, (uint64_t)g_scale * 400, 256u << 10);
	if (!g_only)
		rc |= bench_rtt((uint64_t)g_scale * 200);
	load_sample(&b);
	printf("other load on the machine during the runs: %.0f %% (of all CPUs)\n",
	       load_other_pct(&a, &b));
	printf("issue 9 goals for the full v2: 64 B >= 0.4x and >= 10 M msgs/s; "
	       "4 KiB >= 0.5x; 64 KiB >= 0.5x\n");
	return rc;
}
