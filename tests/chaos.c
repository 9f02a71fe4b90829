/*
 * chaos.c - several processes on one shm:// bus under random SIGKILL and
 * SIGSTOP/SIGCONT for a bounded time, and the invariants that must hold.
 *
 * Roles (each a forked process with its own handle):
 *   pub0, pub1  publishers, one subject each ("chaos.p.<n>"); killable. A
 *               new incarnation (inc) restarts its sequence at 0, so every
 *               message names (publisher, incarnation, sequence).
 *   subW        lossless, "chaos.p.*", one thread; never killed.
 *   subE        lossless, one exact subscription and thread per subject.
 *   subL        lossy, one exact subscription and thread per subject, slow
 *               on purpose so that it is lapped; never killed.
 *   subV        lossless "chaos.p.>", slow, sometimes holds a message;
 *               killable (a dead reader must stop gating publishers).
 *   work0/1     workers of "chaos.svc" (polling and callback); killable.
 *   req0        requester; never killed.   reqV  async requester; killable.
 * The supervisor pauses one process at a time (any role) for up to
 * pause_max_ms and kills killable roles at random, respawning them. Some
 * incarnations also arm a crash point (MSGBUS_CRASH_AT) after a random
 * amount of work, so that deaths land inside claim/commit, the control
 * lock, a take, a reply or a cleanup; the checked readers now and then
 * hold a message for up to 150 ms, so a reader whose registration was
 * lost would be overrun and show a gap.
 *
 * Invariants:
 *   - every live lossless subscriber sees each publisher incarnation's
 *     messages in order, without loss or duplicate: exactly 0..last_ok,
 *     plus last_ok + 1 when the publisher was killed inside publish (it may
 *     have committed without recording it); both checked subscribers see
 *     exactly the same counts;
 *   - lossy: order holds, and the drop counter grows by exactly the gap
 *     between consecutive messages (give or take the slot a killed
 *     publisher left aborted);
 *   - payloads arrive intact (lossy copies included: never torn);
 *   - no publish blocks longer than pause_max + crash_bound (+ slack): a
 *     dead reader never gates for longer than the crash bound;
 *   - every request returns OK with its own reply, or ETIMEDOUT,
 *     EPEERDIED or ENORESPONDERS, within timeout + pause + crash bound;
 *   - afterwards a fresh open attaches, pub/sub and request/reply work,
 *     every participant slot, subscription slot and large buffer can be
 *     taken again, and the last close removes the segment.
 *
 * Built two ways: standalone (tests/chaos, `make chaos`, long runs) and
 * included by check_chaos.c with CHAOS_NO_MAIN (a short run in make check).
 * It depends on libc and msgbus.h only, never on Check.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "msgbus.h"

#define CX_NPUB 2
#define CX_NSVC_SLOTS 2   /* "chaos.svc" and "chaos.final": queue slots outlive workers */
#define CX_RING 64
#define CX_MAX_PARTS 16
#define CX_MAX_SUBS 16
#define CX_MAX_SUBJECTS 8
#define CX_LARGE_BUFS 8
#define CX_MAX_MSG 16384
#define CX_HDR 32         /* payload header; the rest is a pattern */
#define CX_REPLY_HDR 24
#define CX_FAILMSG 320
#define CX_MAGIC 0x43484153u /* "CHAS" */
#define CX_RMAGIC 0x52504c59u /* "RPLY" */

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CX_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define CX_SANITIZED 1
#endif
#endif
#ifndef CX_SANITIZED
#define CX_SANITIZED 0
#endif

struct chaos_cfg {
	const char *url;     /* shm://NAME */
	double seconds;      /* chaos phase length */
	uint64_t seed;
	int crash_bound_ms;
	int pause_max_ms;    /* longest SIGSTOP; one pause at a time */
	int slack_ms;        /* scheduling margin added to every time bound */
	int verbose;
	uint32_t inbox_size; /* 0: the default; small: larger messages share buffers */
};

struct chaos_report {
	int failed;
	char why[4096];     /* the first failures, one per line */
	unsigned kills, stops, spawns;
	unsigned kills_by_role[16];
	unsigned crash_points; /* incarnations that died at an armed crash point */
	uint64_t published;        /* messages publishers saw succeed */
	uint64_t checked_lossless; /* messages verified by subW + subE */
	uint64_t lossy_received, lossy_dropped;
	uint64_t victim_received;
	uint64_t req_ok, req_timedout, req_peerdied, req_noresp;
	uint64_t served;
	double max_publish_ms, max_latency_ms, max_request_over_ms;
	unsigned dead_held_subslots; /* subscription slots of dead participants
	                              * still held after the run (info) */
	double seconds;
};

static const struct chaos_cfg chaos_defaults = {
	.url = NULL,
	.seconds = 6.0,
	.seed = 1,
	.crash_bound_ms = 300,
	.pause_max_ms = 300,
	.slack_ms = CX_SANITIZED ? 2500 : 1200,
	.verbose = 0,
	.inbox_size = 0,
};

/* Called with the bus URL when a run failed or roles are stuck, while the
 * segment still shows why: check_chaos.c prints its state (it may read the
 * private layout; this file uses the public API only). */
static void (*cx_stall_hook)(const char *url);

/* ---- roles ---------------------------------------------------------------- */

enum cx_kind { K_PUB, K_SUBW, K_SUBE, K_SUBL, K_SUBV, K_WORK, K_REQ };
struct cx_role {
	const char *name;
	enum cx_kind kind;
	int arg;
	int killable;
	int weight; /* chance of being picked for a kill */
};
static const struct cx_role cx_roles[] = {
	{ "pub0", K_PUB, 0, 1, 3 },  { "pub1", K_PUB, 1, 1, 3 },
	{ "subW", K_SUBW, 0, 0, 0 }, { "subE", K_SUBE, 0, 0, 0 },
	{ "subL", K_SUBL, 0, 0, 0 }, { "subV", K_SUBV, 0, 1, 2 },
	{ "work0", K_WORK, 0, 1, 2 }, { "work1", K_WORK, 1, 1, 2 },
	{ "req0", K_REQ, 0, 0, 0 },  { "reqV", K_REQ, 1, 1, 1 },
};
#define CX_NROLES ((int)(sizeof(cx_roles) / sizeof(cx_roles[0])))
enum { R_PUB0 = 0, R_SUBW = 2, R_SUBE = 3, R_SUBL = 4, R_SUBV = 5, R_WORK0 = 6,
       R_REQ0 = 8, R_REQV = 9 };

/* Phases: run; producers (publishers, requesters) finish; drain (readers
 * drain and report, workers and the victim reader leave). */
enum { PH_RUN = 0, PH_FINISH = 1, PH_DRAIN = 2 };

/* ---- shared results --------------------------------------------------------- */

struct cx_rstat {
	_Atomic int ready;
	_Atomic int armed; /* a crash point is armed: a SIGKILL is expected */
	_Atomic int failures;
	_Atomic uint64_t ops;
	_Atomic uint64_t max_block_us;
	_Atomic uint64_t max_latency_us;
	_Atomic uint64_t ok, timedout, peerdied, noresp; /* requesters */
	_Atomic int fail_lock;
	char fail[CX_FAILMSG];
};

struct cx_pubrec {
	_Atomic int64_t last_ok; /* last sequence publish returned OK for */
	_Atomic int inflight;    /* inside publish/loan/commit */
	int state;               /* supervisor: 0 none, 1 running, 2 killed, 3 done */
	int killed_inflight;
};

/*
 * Lossy accounting. v2 counts a drop when the publisher finds the inbox
 * full, so a reader may see the count of a message published after the
 * one it is reading: the counter is only a lower bound per message, exact
 * in total. For each message the reader knows D, the drops counted when it
 * had read it, and the gap within the incarnation since its first
 * delivery; it keeps the least D - gap (margin). Every message missed
 * before must be counted by then: the supervisor checks margin >= missed
 * before the incarnation's first delivery (publish order, from the
 * lossless counts), less the messages killed publishers gave the lossless
 * readers only.
 */
struct cx_trans { /* lossy: the first message of an incarnation */
	int set;
	int64_t prev_inc, prev_seq, seq;
	uint64_t received; /* messages of this publisher received before it */
	int64_t margin;    /* the least D - gap over its messages so far */
};

struct cx_lossy {
	_Atomic uint64_t delivered, dropped;
	int64_t last_inc, last_seq; /* the last delivery */
	uint64_t trailing;          /* drops counted after it */
	_Atomic int done;
};

struct cx_shared {
	_Atomic int phase;
	_Atomic int final_inc[CX_NPUB];
	struct cx_rstat rs[CX_NROLES];
	struct cx_lossy lossy[CX_NPUB];
	/* followed by the variable arrays below */
};

struct cx {
	struct chaos_cfg cfg;
	msgbus_options opts;
	struct cx_shared *sh;
	size_t shsize;
	int max_inc;
	struct cx_pubrec *pubs; /* [CX_NPUB][max_inc] */
	int64_t *counts;        /* [2 (subW, subE)][CX_NPUB][max_inc] */
	struct cx_trans *trans; /* [CX_NPUB][max_inc] */
	/* supervisor only */
	pid_t pid[CX_NROLES];
	int inc[CX_NROLES];
	double respawn_at[CX_NROLES];
	struct chaos_report *rep;
	uint64_t rng;
	int dumped; /* cx_stall_hook was called */
};

static struct cx_pubrec *cx_pub(struct cx *c, int slot, int inc)
{
	return &c->pubs[(size_t)slot * (size_t)c->max_inc + (size_t)inc];
}
static int64_t *cx_count(struct cx *c, int ck, int slot, int inc)
{
	return &c->counts[((size_t)ck * CX_NPUB + (size_t)slot) * (size_t)c->max_inc +
	                  (size_t)inc];
}
static struct cx_trans *cx_trans(struct cx *c, int slot, int inc)
{
	return &c->trans[(size_t)slot * (size_t)c->max_inc + (size_t)inc];
}

/* ---- small helpers ------------------------------------------------------------ */

static double cx_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static uint64_t cx_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void cx_sleep_us(long us)
{
	struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static uint64_t cx_rand(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

/* Uniform-ish in [lo, hi]. */
static long cx_range(uint64_t *s, long lo, long hi)
{
	return lo + (long)(cx_rand(s) % (uint64_t)(hi - lo + 1));
}

static void cx_max(_Atomic uint64_t *m, uint64_t v)
{
	uint64_t old = atomic_load(m);
	while (v > old && !atomic_compare_exchange_weak(m, &old, v))
		;
}

/* Records a failure of role r (the first message is kept). Child-safe. */
__attribute__((format(printf, 3, 4)))
static void cx_fail(struct cx *c, int r, const char *fmt, ...)
{
	struct cx_rstat *rs = &c->sh->rs[r];
	if (atomic_fetch_add(&rs->failures, 1) == 0) {
		int expect = 0;
		if (atomic_compare_exchange_strong(&rs->fail_lock, &expect, 1)) {
			va_list ap;
			va_start(ap, fmt);
			vsnprintf(rs->fail, sizeof(rs->fail), fmt, ap);
			va_end(ap);
		}
	}
	if (c->cfg.verbose) {
		va_list ap;
		char buf[CX_FAILMSG];
		va_start(ap, fmt);
		vsnprintf(buf, sizeof(buf), fmt, ap);
		va_end(ap);
		fprintf(stderr, "chaos: %s[%ld]: %s\n", cx_roles[r].name, (long)getpid(), buf);
	}
}

/* Supervisor-side failure line. */
__attribute__((format(printf, 2, 3)))
static void cx_report_fail(struct cx *c, const char *fmt, ...)
{
	struct chaos_report *rep = c->rep;
	size_t used = strlen(rep->why);
	rep->failed++;
	if (used + 2 < sizeof(rep->why)) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(rep->why + used, sizeof(rep->why) - used - 1, fmt, ap);
		va_end(ap);
		used = strlen(rep->why);
		if (used + 1 < sizeof(rep->why)) {
			rep->why[used] = '\n';
			rep->why[used + 1] = '\0';
		}
	}
	if (c->cfg.verbose) {
		va_list ap;
		va_start(ap, fmt);
		fprintf(stderr, "chaos: FAIL: ");
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
		va_end(ap);
	}
}

static int cx_phase(struct cx *c)
{
	return atomic_load(&c->sh->phase);
}

static double cx_pub_bound_ms(const struct cx *c)
{
	return c->cfg.pause_max_ms + c->cfg.crash_bound_ms + c->cfg.slack_ms;
}

static double cx_latency_bound_ms(const struct cx *c)
{
	return 2.0 * (c->cfg.pause_max_ms + c->cfg.crash_bound_ms) + c->cfg.slack_ms;
}

/* ---- payloads ----------------------------------------------------------------- */

struct cx_hdr {
	uint32_t magic;
	uint16_t slot;
	uint16_t pad;
	uint32_t inc;
	uint32_t len;
	uint64_t seq;
	uint64_t t_ns; /* CLOCK_MONOTONIC just before publish was called */
};
_Static_assert(sizeof(struct cx_hdr) == CX_HDR, "payload header size");

static unsigned char cx_pat(uint32_t key, size_t i)
{
	return (unsigned char)(key + i * 31u + (i >> 8));
}

static uint32_t cx_key(unsigned slot, uint32_t inc, uint64_t seq)
{
	return (uint32_t)(seq * 2654435761u) ^ (inc * 40503u) ^ (slot * 977u);
}

static size_t cx_msg_len(uint64_t *rng)
{
	uint64_t r = cx_rand(rng);
	if (r % 16 == 0)
		return 300 + (size_t)(r >> 8) % 7700; /* a large buffer */
	return CX_HDR + (size_t)(r >> 8) % 190;   /* inline (224 max) */
}

static void cx_build(unsigned char *buf, size_t len, unsigned slot, uint32_t inc,
                     uint64_t seq)
{
	struct cx_hdr h = { CX_MAGIC, (uint16_t)slot, 0, inc, (uint32_t)len, seq, cx_now_ns() };
	memcpy(buf, &h, sizeof(h));
	uint32_t key = cx_key(slot, inc, seq);
	for (size_t i = CX_HDR; i < len; i++)
		buf[i] = cx_pat(key, i);
}

/* Checks a received message; 0 and *h, or -1 with why filled in. */
static int cx_parse(const msgbus_msg *m, struct cx_hdr *h, char *why, size_t whylen)
{
	size_t len = msgbus_msg_len(m);
	const unsigned char *d = msgbus_msg_data(m);
	const char *subj = msgbus_msg_subject(m);
	if (len < CX_HDR || d == NULL) {
		snprintf(why, whylen, "message of %zu bytes on %s", len, subj ? subj : "?");
		return -1;
	}
	memcpy(h, d, sizeof(*h));
	if (h->magic != CX_MAGIC || h->len != len || h->slot >= CX_NPUB) {
		snprintf(why, whylen, "bad header (magic %08x len %u/%zu slot %u) on %s",
		         h->magic, h->len, len, h->slot, subj ? subj : "?");
		return -1;
	}
	char want[32];
	snprintf(want, sizeof(want), "chaos.p.%u", h->slot);
	if (subj == NULL || strcmp(subj, want) != 0) {
		snprintf(why, whylen, "publisher %u inc %u seq %llu arrived on %s", h->slot,
		         h->inc, (unsigned long long)h->seq, subj ? subj : "(null)");
		return -1;
	}
	uint32_t key = cx_key(h->slot, h->inc, h->seq);
	for (size_t i = CX_HDR; i < len; i++) {
		if (d[i] != cx_pat(key, i)) {
			snprintf(why, whylen,
			         "publisher %u inc %u seq %llu len %zu: byte %zu is %02x, want %02x "
			         "(torn or overwritten)",
			         h->slot, h->inc, (unsigned long long)h->seq, len, i, d[i],
			         cx_pat(key, i));
			return -1;
		}
	}
	return 0;
}

static void cx_note_latency(struct cx *c, int r, const struct cx_hdr *h, int check)
{
	uint64_t now = cx_now_ns();
	uint64_t lat = now > h->t_ns ? (now - h->t_ns) / 1000u : 0;
	cx_max(&c->sh->rs[r].max_latency_us, lat);
	if (check && (double)lat / 1e3 > cx_latency_bound_ms(c))
		cx_fail(c, r, "publisher %u inc %u seq %llu delivered %.0f ms after publish "
		              "(bound %.0f ms)",
		        h->slot, h->inc, (unsigned long long)h->seq, (double)lat / 1e3,
		        cx_latency_bound_ms(c));
}

static int cx_open(struct cx *c, int r, msgbus_bus **bus)
{
	int rc = msgbus_open(bus, c->cfg.url, &c->opts);
	if (rc != MSGBUS_OK)
		cx_fail(c, r, "msgbus_open: %s", msgbus_strerror(rc));
	return rc;
}

/*
 * Crash points (MSGBUS_CRASH_AT): the library reads the variable at every
 * open, so opening a second handle arms it for the whole process; the next
 * time any handle reaches the point, the process SIGKILLs itself. Some
 * incarnations do that after a random amount of work, so deaths land
 * exactly in the windows a random SIGKILL rarely hits (between claim and
 * commit, holding the control lock, mid-take, mid-reply, mid-cleanup).
 */
/* large_committed lands after a large message's records were committed:
 * its buffer is SHARED from before the first one (route.c, deliver_large),
 * so the reaper must not free it under them. between_commits lands inside
 * the commit loop of a message for both lossless readers: the commit mark
 * makes the reaper commit the rest (pubsub/mark.h), so both see it or
 * neither does. before_mark and marked land in the same loop (one record
 * or several) before the first commit, before the mark or before the
 * store that counts the records' references after it: the reaper aborts
 * every record, and the buffer comes back; counted, after that store: it
 * commits every one. inbox_reserved: one inbox reserved, the other not
 * yet; before_lossy: lossless records committed, lossy ones not. */
static const char *const cx_pub_points[] = { "after_claim", "before_commit", "mid_loan",
	                                     "buf_shared", "large_committed",
	                                     "between_commits", "inbox_reserved",
	                                     "before_lossy", "before_mark", "marked",
	                                     "counted" };
#define CX_NPUB_POINTS (sizeof(cx_pub_points) / sizeof(cx_pub_points[0]))
static const char *const cx_work_points[] = { "mid_take", "before_reply" };
/* All but mid_cleanup are reached by subscribing and unsubscribing. Not
 * buf_unref: a reader dying there leaks that buffer (recv.c, known). */
static const char *const cx_subv_points[] = { "in_ctl_lock", "mid_cleanup", "sub_active",
	                                      "unsub_freed" };
#define CX_SUBV_CLEANUP 1

static void cx_arm(struct cx *c, int r, const char *point)
{
	msgbus_bus *second = NULL;
	atomic_store(&c->sh->rs[r].armed, 1);
	setenv("MSGBUS_CRASH_AT", point, 1);
	if (msgbus_open(&second, c->cfg.url, &c->opts) != MSGBUS_OK)
		atomic_store(&c->sh->rs[r].armed, 0); /* not armed after all */
	unsetenv("MSGBUS_CRASH_AT");
	/* the second handle stays open: it dies with us */
}

/* When (in operations) this incarnation arms a crash point; -1: never. */
static long cx_arm_after(uint64_t *rng, long max_ops)
{
	return cx_rand(rng) % 3 == 0 ? cx_range(rng, 0, max_ops) : -1;
}

/* ---- publisher ------------------------------------------------------------------- */

static int cx_publisher(struct cx *c, int r, int inc, uint64_t rng)
{
	int slot = cx_roles[r].arg;
	struct cx_pubrec *rec = cx_pub(c, slot, inc);
	struct cx_rstat *rs = &c->sh->rs[r];
	msgbus_bus *bus = NULL;
	char subject[32];
	static unsigned char buf[CX_MAX_MSG];
	const int timeout = (int)(cx_pub_bound_ms(c) + 2000);

	snprintf(subject, sizeof(subject), "chaos.p.%d", slot);
	if (cx_open(c, r, &bus) != MSGBUS_OK)
		return 1;
	uint64_t seq = 0;
	long arm_at = cx_arm_after(&rng, 500);
	while (cx_phase(c) == PH_RUN || seq == 0) {
		if (arm_at >= 0 && (long)seq == arm_at && cx_phase(c) == PH_RUN)
			cx_arm(c, r, cx_pub_points[cx_rand(&rng) % CX_NPUB_POINTS]);
		if (cx_phase(c) != PH_RUN && seq == 0 && atomic_load(&rs->failures) > 0)
			break;
		size_t len = cx_msg_len(&rng);
		int loan = cx_rand(&rng) % 8 == 0;
		atomic_store(&rec->inflight, 1);
		cx_build(buf, len, (unsigned)slot, (uint32_t)inc, seq);
		double t0 = cx_now_ms();
		int rc;
		if (loan) {
			msgbus_buf *lb = NULL;
			rc = msgbus_loan(bus, len, timeout, &lb);
			if (rc == MSGBUS_OK) {
				memcpy(msgbus_loan_data(lb), buf, len);
				rc = msgbus_commit(lb, subject, len, timeout);
				if (rc != MSGBUS_OK)
					msgbus_loan_abort(lb);
			}
		} else {
			rc = msgbus_publish(bus, subject, buf, len, timeout);
		}
		double dt = cx_now_ms() - t0;
		if (rc == MSGBUS_OK) {
			atomic_store(&rec->last_ok, (int64_t)seq);
			seq++;
		}
		atomic_store(&rec->inflight, 0);
		cx_max(&rs->max_block_us, (uint64_t)(dt * 1e3));
		if (rc != MSGBUS_OK)
			cx_fail(c, r, "inc %d seq %llu: %s(len %zu) returned %s after %.0f ms", inc,
			        (unsigned long long)seq, loan ? "loan/commit" : "publish", len,
			        msgbus_strerror(rc), dt);
		else if (dt > cx_pub_bound_ms(c))
			cx_fail(c, r, "inc %d seq %llu: publish blocked %.0f ms (bound %.0f ms: "
			              "pause %d + crash bound %d + slack %d)",
			        inc, (unsigned long long)seq - 1, dt, cx_pub_bound_ms(c),
			        c->cfg.pause_max_ms, c->cfg.crash_bound_ms, c->cfg.slack_ms);
		atomic_fetch_add(&rs->ops, rc == MSGBUS_OK);
		if (cx_rand(&rng) % 512 == 0)
			cx_sleep_us(cx_range(&rng, 0, 3000));
	}
	msgbus_close(bus);
	return 0;
}

/* ---- lossless checked readers ------------------------------------------------------ */

struct cx_order {
	int64_t cur_inc; /* -1: nothing yet */
	int64_t next;    /* next expected sequence of cur_inc */
};

/* Checks one message against the per-publisher order state and records
 * the count of an incarnation when the next one starts. ck: 0 subW,
 * 1 subE. */
static void cx_order_msg(struct cx *c, int r, int ck, struct cx_order *o,
                         const struct cx_hdr *h)
{
	int64_t inc = h->inc, seq = (int64_t)h->seq;
	if (inc >= c->max_inc) {
		cx_fail(c, r, "publisher %u inc %lld beyond the table", h->slot, (long long)inc);
		return;
	}
	if (inc == o->cur_inc) {
		if (seq != o->next)
			cx_fail(c, r, "publisher %u inc %lld: seq %lld after %lld (%s)", h->slot,
			        (long long)inc, (long long)seq, (long long)o->next - 1,
			        seq > o->next ? "lost messages" : "duplicate or reordered");
		if (seq >= o->next)
			o->next = seq + 1;
		return;
	}
	if (inc < o->cur_inc) {
		cx_fail(c, r, "publisher %u: inc %lld seq %lld after inc %lld (order)", h->slot,
		        (long long)inc, (long long)seq, (long long)o->cur_inc);
		return;
	}
	if (o->cur_inc >= 0)
		*cx_count(c, ck, h->slot, (int)o->cur_inc) = o->next;
	if (seq != 0)
		cx_fail(c, r, "publisher %u inc %lld starts at seq %lld (lost its first "
		              "messages)",
		        h->slot, (long long)inc, (long long)seq);
	o->cur_inc = inc;
	o->next = seq + 1;
}

/* Has o seen every message the final incarnation of slot reported? */
static int cx_order_done(struct cx *c, int slot, const struct cx_order *o)
{
	int fi = atomic_load(&c->sh->final_inc[slot]);
	int64_t last = atomic_load(&cx_pub(c, slot, fi)->last_ok);
	if (last < 0)
		return 1;
	return o->cur_inc > fi || (o->cur_inc == fi && o->next > last);
}

static void cx_order_finish(struct cx *c, int ck, int slot, const struct cx_order *o)
{
	if (o->cur_inc >= 0)
		*cx_count(c, ck, slot, (int)o->cur_inc) = o->next;
}

/* Drain deadline once the phase is PH_DRAIN. */
static double cx_drain_ms(const struct cx *c)
{
	return 3000.0 + 2.0 * c->cfg.crash_bound_ms + c->cfg.slack_ms;
}

struct cx_reader {
	struct cx *c;
	int r, ck;
	msgbus_sub *sub;
	int slot; /* -1: every publisher (wildcard) */
	uint64_t rng;
	struct cx_order o[CX_NPUB];
	double drain_start;
};

/* One lossless reader loop: subW (all slots) or a subE thread (one slot). */
static void *cx_reader_main(void *arg)
{
	struct cx_reader *rd = arg;
	struct cx *c = rd->c;
	char why[CX_FAILMSG];
	double drain_start = 0;
	for (;;) {
		int ph = cx_phase(c);
		if (ph == PH_DRAIN) {
			if (drain_start == 0)
				drain_start = cx_now_ms();
			int done = 1;
			for (int s = 0; s < CX_NPUB; s++)
				if ((rd->slot < 0 || rd->slot == s) && !cx_order_done(c, s, &rd->o[s]))
					done = 0;
			if (done)
				break;
			if (cx_now_ms() - drain_start > cx_drain_ms(c)) {
				for (int s = 0; s < CX_NPUB; s++) {
					if (rd->slot >= 0 && rd->slot != s)
						continue;
					int fi = atomic_load(&c->sh->final_inc[s]);
					cx_fail(c, rd->r, "drain: publisher %d: last seen inc %lld seq "
					                  "%lld, want inc %d seq %lld",
					        s, (long long)rd->o[s].cur_inc,
					        (long long)rd->o[s].next - 1, fi,
					        (long long)atomic_load(&cx_pub(c, s, fi)->last_ok));
				}
				break;
			}
		}
		msgbus_msg *m = NULL;
		int rc = msgbus_recv(rd->sub, &m, 100);
		if (rc == MSGBUS_ETIMEDOUT)
			continue;
		if (rc != MSGBUS_OK) {
			cx_fail(c, rd->r, "recv: %s", msgbus_strerror(rc));
			cx_sleep_us(10000);
			continue;
		}
		struct cx_hdr h;
		if (cx_parse(m, &h, why, sizeof(why)) != 0) {
			cx_fail(c, rd->r, "%s", why);
		} else if (rd->slot >= 0 && h.slot != rd->slot) {
			cx_fail(c, rd->r, "publisher %u on the subscription of %d", h.slot, rd->slot);
		} else {
			cx_order_msg(c, rd->r, rd->ck, &rd->o[h.slot], &h);
			cx_note_latency(c, rd->r, &h, 1);
			atomic_fetch_add(&c->sh->rs[rd->r].ops, 1);
		}
		/* Now and then keep the message a while: backpressure, and a
		 * reader whose registration was lost would be overrun. */
		uint64_t x = cx_rand(&rd->rng);
		if (x % 4096 == 0)
			cx_sleep_us(cx_range(&rd->rng, 100, 3000));
		else if (x % 8192 == 1)
			cx_sleep_us(cx_range(&rd->rng, 20000, 150000));
		msgbus_msg_release(m);
	}
	/* Nothing may follow the final messages (a late duplicate, say). */
	msgbus_msg *m = NULL;
	int rc = msgbus_recv(rd->sub, &m, 50);
	if (rc == MSGBUS_OK) {
		struct cx_hdr h;
		if (cx_parse(m, &h, why, sizeof(why)) == 0)
			cx_order_msg(c, rd->r, rd->ck, &rd->o[h.slot], &h);
		else
			cx_fail(c, rd->r, "after drain: %s", why);
		msgbus_msg_release(m);
	}
	for (int s = 0; s < CX_NPUB; s++)
		if (rd->slot < 0 || rd->slot == s)
			cx_order_finish(c, rd->ck, s, &rd->o[s]);
	return NULL;
}

static int cx_subscriber(struct cx *c, int r, uint64_t rng)
{
	msgbus_bus *bus = NULL;
	struct cx_reader rd[CX_NPUB];
	pthread_t th[CX_NPUB];
	int nthreads = cx_roles[r].kind == K_SUBE ? CX_NPUB : 1;
	if (cx_open(c, r, &bus) != MSGBUS_OK)
		return 1;
	for (int i = 0; i < nthreads; i++) {
		char pattern[32];
		rd[i] = (struct cx_reader){ .c = c, .r = r, .ck = r == R_SUBW ? 0 : 1,
			                    .slot = nthreads > 1 ? i : -1,
			                    .rng = rng ^ (uint64_t)(i + 1) * 0x9e3779b97f4a7c15ull };
		for (int s = 0; s < CX_NPUB; s++)
			rd[i].o[s] = (struct cx_order){ -1, 0 };
		if (nthreads > 1)
			snprintf(pattern, sizeof(pattern), "chaos.p.%d", i);
		else
			snprintf(pattern, sizeof(pattern), "chaos.p.*");
		int rc = msgbus_subscribe(bus, pattern, 0, &rd[i].sub);
		if (rc != MSGBUS_OK) {
			cx_fail(c, r, "subscribe %s: %s", pattern, msgbus_strerror(rc));
			return 1;
		}
	}
	atomic_store(&c->sh->rs[r].ready, 1);
	for (int i = 0; i < nthreads; i++)
		if (pthread_create(&th[i], NULL, cx_reader_main, &rd[i]) != 0) {
			cx_fail(c, r, "pthread_create");
			return 1;
		}
	for (int i = 0; i < nthreads; i++)
		pthread_join(th[i], NULL);
	msgbus_close(bus);
	return 0;
}

/* ---- lossy reader ---------------------------------------------------------------- */

struct cx_lreader {
	struct cx *c;
	int slot;
	msgbus_sub *sub;
	uint64_t rng;
};

static void *cx_lossy_main(void *arg)
{
	struct cx_lreader *lr = arg;
	struct cx *c = lr->c;
	const int r = R_SUBL;
	char why[CX_FAILMSG];
	int64_t prev_inc = -1, prev_seq = -1;
	uint64_t drops_at_last = 0, received = 0;
	int64_t gap_within = 0; /* missed in this incarnation since its first delivery */
	struct cx_trans *cur = NULL;
	double drain_start = 0;
	int idle = 0; /* the last recv timed out */
	msgbus_sub_stats st;
	for (;;) {
		if (cx_phase(c) == PH_DRAIN) {
			if (drain_start == 0)
				drain_start = cx_now_ms();
			int fi = atomic_load(&c->sh->final_inc[lr->slot]);
			int64_t last = atomic_load(&cx_pub(c, lr->slot, fi)->last_ok);
			if (last < 0 || prev_inc > fi || (prev_inc == fi && prev_seq >= last))
				break;
			/* The last messages may have been dropped (a large one
			 * whose buffer another publisher took): caught up is
			 * done too. */
			if (idle && msgbus_sub_stats_get(lr->sub, &st) == MSGBUS_OK && st.backlog == 0)
				break;
			if (cx_now_ms() - drain_start > cx_drain_ms(c)) {
				msgbus_sub_stats_get(lr->sub, &st);
				cx_fail(c, r, "drain: publisher %d: last seen inc %lld seq %lld, want "
				              "inc %d seq %lld (backlog %llu, dropped %llu)",
				        lr->slot, (long long)prev_inc, (long long)prev_seq, fi,
				        (long long)last, (unsigned long long)st.backlog,
				        (unsigned long long)st.dropped);
				break;
			}
		}
		msgbus_msg *m = NULL;
		int rc = msgbus_recv(lr->sub, &m, 100);
		idle = rc == MSGBUS_ETIMEDOUT;
		if (rc == MSGBUS_ETIMEDOUT)
			continue;
		if (rc != MSGBUS_OK) {
			cx_fail(c, r, "recv: %s", msgbus_strerror(rc));
			cx_sleep_us(10000);
			continue;
		}
		struct cx_hdr h;
		int bad = cx_parse(m, &h, why, sizeof(why));
		msgbus_sub_stats_get(lr->sub, &st);
		drops_at_last = st.dropped;
		if (bad) {
			cx_fail(c, r, "%s", why);
		} else if (h.slot != lr->slot) {
			cx_fail(c, r, "publisher %u on the subscription of %d", h.slot, lr->slot);
		} else if ((int64_t)h.inc < prev_inc ||
		           ((int64_t)h.inc == prev_inc && (int64_t)h.seq <= prev_seq)) {
			cx_fail(c, r, "publisher %d: inc %u seq %llu after inc %lld seq %lld (order)",
			        lr->slot, h.inc, (unsigned long long)h.seq, (long long)prev_inc,
			        (long long)prev_seq);
		} else if ((int64_t)h.inc >= c->max_inc) {
			cx_fail(c, r, "inc %u beyond the table", h.inc);
		} else {
			if ((int64_t)h.inc == prev_inc) {
				gap_within += (int64_t)h.seq - prev_seq - 1;
			} else {
				cur = cx_trans(c, lr->slot, (int)h.inc);
				*cur = (struct cx_trans){ 1, prev_inc, prev_seq, (int64_t)h.seq,
					                  received, INT64_MAX };
				gap_within = 0;
			}
			int64_t margin = (int64_t)st.dropped - gap_within;
			if (margin < cur->margin)
				cur->margin = margin;
			received++;
			prev_inc = h.inc;
			prev_seq = (int64_t)h.seq;
			cx_note_latency(c, r, &h, 0);
			atomic_fetch_add(&c->sh->rs[r].ops, 1);
		}
		msgbus_msg_release(m);
		/* Slow on purpose: lapped now and then. */
		uint64_t x = cx_rand(&lr->rng);
		if (x % 64 == 0)
			cx_sleep_us(cx_range(&lr->rng, 200, 1500));
		else if (x % 1024 == 1)
			cx_sleep_us(cx_range(&lr->rng, 5000, 20000));
	}
	/* Drops after the last delivery: the supervisor accounts for them. */
	msgbus_sub_stats_get(lr->sub, &st);
	struct cx_lossy *l = &c->sh->lossy[lr->slot];
	l->last_inc = prev_inc;
	l->last_seq = prev_seq;
	l->trailing = st.dropped - drops_at_last;
	atomic_store(&l->delivered, st.delivered);
	atomic_store(&l->dropped, st.dropped);
	atomic_store(&l->done, 1);
	return NULL;
}

static int cx_lossy_sub(struct cx *c, int r, uint64_t rng)
{
	msgbus_bus *bus = NULL;
	struct cx_lreader lr[CX_NPUB];
	pthread_t th[CX_NPUB];
	if (cx_open(c, r, &bus) != MSGBUS_OK)
		return 1;
	for (int i = 0; i < CX_NPUB; i++) {
		char pattern[32];
		snprintf(pattern, sizeof(pattern), "chaos.p.%d", i);
		lr[i] = (struct cx_lreader){ c, i, NULL, rng ^ (uint64_t)(i + 7) * 0x2545f4914f6cdd1dull };
		int rc = msgbus_subscribe(bus, pattern, MSGBUS_SUB_LOSSY, &lr[i].sub);
		if (rc != MSGBUS_OK) {
			cx_fail(c, r, "subscribe %s: %s", pattern, msgbus_strerror(rc));
			return 1;
		}
	}
	atomic_store(&c->sh->rs[r].ready, 1);
	for (int i = 0; i < CX_NPUB; i++)
		if (pthread_create(&th[i], NULL, cx_lossy_main, &lr[i]) != 0) {
			cx_fail(c, r, "pthread_create");
			return 1;
		}
	for (int i = 0; i < CX_NPUB; i++)
		pthread_join(th[i], NULL);
	msgbus_close(bus);
	return 0;
}

/* ---- the victim reader: lossless, slow, killable ------------------------------------ */

static int cx_victim_sub(struct cx *c, int r, uint64_t rng)
{
	msgbus_bus *bus = NULL;
	msgbus_sub *sub = NULL;
	char why[CX_FAILMSG];
	int64_t cur_inc[CX_NPUB], next[CX_NPUB];
	if (cx_open(c, r, &bus) != MSGBUS_OK)
		return 1;
	int rc = msgbus_subscribe(bus, "chaos.p.>", 0, &sub);
	if (rc != MSGBUS_OK) {
		cx_fail(c, r, "subscribe: %s", msgbus_strerror(rc));
		return 1;
	}
	for (int s = 0; s < CX_NPUB; s++)
		cur_inc[s] = next[s] = -1;
	atomic_store(&c->sh->rs[r].ready, 1);
	long arm_at = cx_arm_after(&rng, 3000);
	for (long n = 0; cx_phase(c) != PH_DRAIN; n++) {
		if (n == arm_at && cx_phase(c) == PH_RUN) {
			int k = (int)(cx_rand(&rng) % 4);
			cx_arm(c, r, cx_subv_points[k]);
			if (k != CX_SUBV_CLEANUP) { /* a new subscription takes the
				                     * control lock */
				msgbus_sub *extra = NULL;
				if (msgbus_subscribe(bus, "chaos.extra.>", 0, &extra) == MSGBUS_OK)
					msgbus_unsubscribe(extra);
			} else { /* closing reaps our own slot */
				msgbus_close(bus);
				cx_fail(c, r, "mid_cleanup: close returned");
				return 1;
			}
		}
		msgbus_msg *m = NULL;
		rc = msgbus_recv(sub, &m, 100);
		if (rc == MSGBUS_ETIMEDOUT)
			continue;
		if (rc != MSGBUS_OK) {
			cx_fail(c, r, "recv: %s", msgbus_strerror(rc));
			cx_sleep_us(10000);
			continue;
		}
		struct cx_hdr h;
		if (cx_parse(m, &h, why, sizeof(why)) != 0) {
			cx_fail(c, r, "%s", why);
		} else {
			/* Joined mid-stream: the first message of a publisher may
			 * be anything; from then on, contiguous, and a later
			 * incarnation starts at 0. */
			int s = h.slot;
			int64_t inc = h.inc, seq = (int64_t)h.seq;
			if (cur_inc[s] >= 0 && inc == cur_inc[s] && seq != next[s])
				cx_fail(c, r, "publisher %d inc %lld: seq %lld, want %lld", s,
				        (long long)inc, (long long)seq, (long long)next[s]);
			else if (cur_inc[s] >= 0 && inc < cur_inc[s])
				cx_fail(c, r, "publisher %d: inc %lld after %lld", s, (long long)inc,
				        (long long)cur_inc[s]);
			else if (cur_inc[s] >= 0 && inc > cur_inc[s] && seq != 0)
				cx_fail(c, r, "publisher %d inc %lld starts at seq %lld", s,
				        (long long)inc, (long long)seq);
			cur_inc[s] = inc;
			next[s] = seq + 1;
			atomic_fetch_add(&c->sh->rs[r].ops, 1);
		}
		uint64_t x = cx_rand(&rng);
		if (x % 128 == 0) /* hold it: dying now leaves a held slot */
			cx_sleep_us(cx_range(&rng, 1000, 30000));
		msgbus_msg_release(m);
		if (x % 16 == 1)
			cx_sleep_us(cx_range(&rng, 50, 500));
	}
	msgbus_close(bus);
	return 0;
}

/* ---- request/reply ------------------------------------------------------------------ */

struct cx_req {
	uint32_t magic;
	uint32_t from; /* role */
	uint64_t seq;
	uint32_t len;
	uint32_t sum;
};

struct cx_reply {
	uint32_t magic;
	uint32_t from;
	uint64_t seq;
	uint32_t len;
	uint32_t sum;
};
_Static_assert(sizeof(struct cx_reply) == CX_REPLY_HDR, "reply header size");

static uint32_t cx_sum(const unsigned char *p, size_t n)
{
	uint32_t s = 2166136261u;
	for (size_t i = 0; i < n; i++)
		s = (s ^ p[i]) * 16777619u;
	return s;
}

/* The reply to a request: its identity and a checksum of its bytes. */
static void cx_answer(struct cx *c, int r, msgbus_req *req, uint64_t *rng)
{
	const unsigned char *d = msgbus_req_data(req);
	size_t n = msgbus_req_len(req);
	struct cx_reply rep = { CX_RMAGIC, 0, 0, (uint32_t)n, 0 };
	struct cx_req q;
	if (n >= sizeof(q) && d != NULL) {
		memcpy(&q, d, sizeof(q));
		rep.from = q.from;
		rep.seq = q.seq;
		rep.sum = cx_sum(d, n);
	} else {
		cx_fail(c, r, "request of %zu bytes", n);
	}
	/* Sometimes take a moment: a kill may land while we hold it. */
	if (cx_rand(rng) % 8 == 0)
		cx_sleep_us(cx_range(rng, 100, 5000));
	int rc = msgbus_respond(req, &rep, sizeof(rep));
	if (rc != MSGBUS_OK && rc != MSGBUS_ETIMEDOUT)
		cx_fail(c, r, "respond: %s", msgbus_strerror(rc));
	atomic_fetch_add(&c->sh->rs[r].ops, rc == MSGBUS_OK);
}

struct cx_cbarg {
	struct cx *c;
	int r;
	uint64_t rng;
};

static void cx_serve_cb(msgbus_req *req, void *arg)
{
	struct cx_cbarg *a = arg;
	cx_answer(a->c, a->r, req, &a->rng);
}

static int cx_worker(struct cx *c, int r, uint64_t rng)
{
	msgbus_bus *bus = NULL;
	msgbus_service *svc = NULL;
	struct cx_cbarg cb = { c, r, rng ^ 0x5555 };
	int use_cb = cx_roles[r].arg == 1;
	if (cx_open(c, r, &bus) != MSGBUS_OK)
		return 1;
	int rc = msgbus_serve(bus, "chaos.svc", use_cb ? cx_serve_cb : NULL, &cb, &svc);
	if (rc != MSGBUS_OK) {
		cx_fail(c, r, "serve: %s", msgbus_strerror(rc));
		return 1;
	}
	atomic_store(&c->sh->rs[r].ready, 1);
	double arm_at = cx_now_ms() + (double)cx_arm_after(&rng, 1000);
	int arm = arm_at >= cx_now_ms();
	while (cx_phase(c) != PH_DRAIN) {
		if (arm && cx_now_ms() >= arm_at && cx_phase(c) == PH_RUN) {
			arm = 0;
			cx_arm(c, r, cx_work_points[cx_rand(&rng) % 2]);
		}
		if (use_cb) {
			cx_sleep_us(20000);
			continue;
		}
		msgbus_req *req = NULL;
		rc = msgbus_service_recv(svc, &req, 100);
		if (rc == MSGBUS_OK)
			cx_answer(c, r, req, &rng);
		else if (rc != MSGBUS_ETIMEDOUT)
			cx_fail(c, r, "service_recv: %s", msgbus_strerror(rc));
	}
	msgbus_close(bus);
	return 0;
}

/* Checks a reply against the request it answers. */
static int cx_check_reply(struct cx *c, int r, const msgbus_msg *m, const unsigned char *req,
                          size_t len)
{
	struct cx_req q;
	struct cx_reply rep;
	memcpy(&q, req, sizeof(q));
	if (msgbus_msg_len(m) != sizeof(rep) || msgbus_msg_data(m) == NULL) {
		cx_fail(c, r, "request %llu: reply of %zu bytes", (unsigned long long)q.seq,
		        msgbus_msg_len(m));
		return -1;
	}
	memcpy(&rep, msgbus_msg_data(m), sizeof(rep));
	if (rep.magic != CX_RMAGIC || rep.from != q.from || rep.seq != q.seq ||
	    rep.len != len || rep.sum != cx_sum(req, len)) {
		cx_fail(c, r, "request %u/%llu (%zu bytes): reply for %u/%llu (%u bytes%s)", q.from,
		        (unsigned long long)q.seq, len, rep.from, (unsigned long long)rep.seq,
		        rep.len, rep.sum != cx_sum(req, len) ? ", checksum differs" : "");
		return -1;
	}
	const char *subj = msgbus_msg_subject(m);
	if (subj == NULL || strcmp(subj, "chaos.svc") != 0) {
		cx_fail(c, r, "reply subject %s", subj ? subj : "(null)");
		return -1;
	}
	return 0;
}

static int cx_requester(struct cx *c, int r, uint64_t rng)
{
	msgbus_bus *bus = NULL;
	struct cx_rstat *rs = &c->sh->rs[r];
	static unsigned char buf[1024];
	int async = cx_roles[r].arg == 1;
	if (cx_open(c, r, &bus) != MSGBUS_OK)
		return 1;
	atomic_store(&rs->ready, 1);
	for (uint64_t seq = 0; cx_phase(c) == PH_RUN; seq++) {
		/* Mostly small; sometimes a request large enough to need a
		 * large buffer. Replies stay inline (24 bytes). */
		size_t len = cx_rand(&rng) % 10 == 0 ? (size_t)cx_range(&rng, 300, 1000)
		                                     : (size_t)cx_range(&rng, 24, 200);
		struct cx_req q = { CX_MAGIC, (uint32_t)r, seq, (uint32_t)len, 0 };
		for (size_t i = sizeof(q); i < len; i++)
			buf[i] = (unsigned char)cx_rand(&rng);
		memcpy(buf, &q, sizeof(q));
		int timeout = (int)cx_range(&rng, 100, 800);
		msgbus_msg *reply = NULL;
		double t0 = cx_now_ms();
		int rc;
		if (!async || cx_rand(&rng) % 3 == 0) {
			rc = msgbus_request(bus, "chaos.svc", buf, len, &reply, timeout);
		} else {
			msgbus_call *call = NULL;
			rc = msgbus_call_start(bus, "chaos.svc", buf, len, timeout, &call);
			if (rc == MSGBUS_OK && cx_rand(&rng) % 8 == 0) {
				cx_sleep_us(cx_range(&rng, 0, 2000));
				msgbus_call_cancel(call);
				continue;
			}
			while (rc == MSGBUS_OK) {
				rc = msgbus_call_wait(call, &reply, (int)cx_range(&rng, 0, 50));
				if (rc != MSGBUS_EAGAIN)
					break;
				rc = MSGBUS_OK;
				if (cx_now_ms() - t0 > timeout + cx_pub_bound_ms(c) + 1000) {
					cx_fail(c, r, "call %llu still pending %.0f ms after start "
					              "(timeout %d)",
					        (unsigned long long)seq, cx_now_ms() - t0, timeout);
					msgbus_call_cancel(call);
					rc = -1;
					break;
				}
			}
			if (rc == -1)
				continue;
		}
		double dt = cx_now_ms() - t0;
		double over = dt - timeout;
		cx_max(&rs->max_block_us, over > 0 ? (uint64_t)(over * 1e3) : 0);
		switch (rc) {
		case MSGBUS_OK:
			if (cx_check_reply(c, r, reply, buf, len) == 0)
				atomic_fetch_add(&rs->ok, 1);
			msgbus_msg_release(reply);
			break;
		case MSGBUS_ETIMEDOUT:
			atomic_fetch_add(&rs->timedout, 1);
			break;
		case MSGBUS_EPEERDIED:
			atomic_fetch_add(&rs->peerdied, 1);
			break;
		case MSGBUS_ENORESPONDERS:
			atomic_fetch_add(&rs->noresp, 1);
			cx_sleep_us(cx_range(&rng, 1000, 20000));
			break;
		default:
			cx_fail(c, r, "request %llu (%zu bytes, timeout %d): %s after %.0f ms",
			        (unsigned long long)seq, len, timeout, msgbus_strerror(rc), dt);
			break;
		}
		if (dt > timeout + c->cfg.pause_max_ms + c->cfg.crash_bound_ms + c->cfg.slack_ms)
			cx_fail(c, r, "request %llu (timeout %d ms) returned %s after %.0f ms (bound "
			              "timeout + pause %d + crash bound %d + slack %d)",
			        (unsigned long long)seq, timeout, msgbus_strerror(rc), dt,
			        c->cfg.pause_max_ms, c->cfg.crash_bound_ms, c->cfg.slack_ms);
		atomic_fetch_add(&rs->ops, 1);
	}
	msgbus_close(bus);
	return 0;
}

/* ---- processes -------------------------------------------------------------------- */

static int cx_role_main(struct cx *c, int r, int inc)
{
	uint64_t rng = c->cfg.seed * 0x9e3779b97f4a7c15ull ^ (uint64_t)(r + 1) << 40 ^
	               (uint64_t)inc * 0xbf58476d1ce4e5b9ull;
	if (!rng)
		rng = 1;
	switch (cx_roles[r].kind) {
	case K_PUB:
		return cx_publisher(c, r, inc, rng);
	case K_SUBW:
	case K_SUBE:
		return cx_subscriber(c, r, rng);
	case K_SUBL:
		return cx_lossy_sub(c, r, rng);
	case K_SUBV:
		return cx_victim_sub(c, r, rng);
	case K_WORK:
		return cx_worker(c, r, rng);
	case K_REQ:
		return cx_requester(c, r, rng);
	}
	return 2;
}

static pid_t cx_spawn(struct cx *c, int r)
{
	int inc = c->inc[r];
	if (cx_roles[r].kind == K_PUB) {
		struct cx_pubrec *rec = cx_pub(c, cx_roles[r].arg, inc);
		atomic_store(&rec->last_ok, -1);
		atomic_store(&rec->inflight, 0);
		rec->state = 1;
		rec->killed_inflight = 0;
	}
	atomic_store(&c->sh->rs[r].ready, 0);
	atomic_store(&c->sh->rs[r].armed, 0);
	fflush(stdout);
	fflush(stderr);
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(120);
		_exit(cx_role_main(c, r, inc));
	}
	if (pid < 0) {
		cx_report_fail(c, "fork: %s", strerror(errno));
		return -1;
	}
	c->pid[r] = pid;
	c->rep->spawns++;
	return pid;
}

static const char *cx_status(char *buf, size_t n, int st)
{
	if (WIFEXITED(st))
		snprintf(buf, n, "exited with %d", WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		snprintf(buf, n, "killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
	else
		snprintf(buf, n, "status 0x%x", st);
	return buf;
}

static int cx_role_of(struct cx *c, pid_t pid)
{
	for (int r = 0; r < CX_NROLES; r++)
		if (c->pid[r] == pid)
			return r;
	return -1;
}

/* A child we did not kill ended: during the run that is a failure. */
static void cx_unexpected(struct cx *c, int r, int st)
{
	char b[96];
	cx_report_fail(c, "%s (inc %d) %s during the run%s%s", cx_roles[r].name, c->inc[r],
	               cx_status(b, sizeof(b), st), c->sh->rs[r].fail[0] ? ": " : "",
	               c->sh->rs[r].fail);
	c->pid[r] = 0;
	if (cx_roles[r].kind == K_PUB) {
		struct cx_pubrec *rec = cx_pub(c, cx_roles[r].arg, c->inc[r]);
		rec->state = 2;
		rec->killed_inflight = atomic_load(&rec->inflight);
		c->inc[r]++;
	}
}

/* A child killed itself at the crash point it armed: like our kill. */
static int cx_crash_point_death(struct cx *c, int r, int st)
{
	if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL && atomic_load(&c->sh->rs[r].armed)))
		return 0;
	c->pid[r] = 0;
	c->rep->crash_points++;
	if (cx_roles[r].kind == K_PUB) {
		struct cx_pubrec *rec = cx_pub(c, cx_roles[r].arg, c->inc[r]);
		rec->state = 2;
		rec->killed_inflight = atomic_load(&rec->inflight);
	}
	c->inc[r]++;
	return 1;
}

static void cx_reap_unexpected(struct cx *c)
{
	int st;
	pid_t pid;
	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		int r = cx_role_of(c, pid);
		if (r >= 0 && !cx_crash_point_death(c, r, st))
			cx_unexpected(c, r, st);
	}
}

static void cx_kill(struct cx *c, int r)
{
	int st;
	pid_t pid = c->pid[r];
	kill(pid, SIGKILL);
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	c->pid[r] = 0;
	if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)) {
		cx_unexpected(c, r, st);
		return;
	}
	atomic_store(&c->sh->rs[r].armed, 0);
	c->rep->kills++;
	c->rep->kills_by_role[r]++;
	if (cx_roles[r].kind == K_PUB) {
		struct cx_pubrec *rec = cx_pub(c, cx_roles[r].arg, c->inc[r]);
		rec->state = 2;
		rec->killed_inflight = atomic_load(&rec->inflight);
	}
	c->inc[r]++;
}

/* Waits until every role in [first, last] says ready. */
static int cx_wait_ready(struct cx *c, int first, int last, double timeout_ms)
{
	double end = cx_now_ms() + timeout_ms;
	for (;;) {
		int all = 1;
		for (int r = first; r <= last; r++)
			if (c->pid[r] > 0 && !atomic_load(&c->sh->rs[r].ready))
				all = 0;
		if (all)
			return 0;
		cx_reap_unexpected(c);
		if (cx_now_ms() > end)
			return -1;
		cx_sleep_us(1000);
	}
}

/* Waits for the roles of the given kinds to exit by themselves; kills the
 * ones that do not within timeout_ms (a failure). */
static void cx_wait_exit(struct cx *c, const int *kinds, int nkinds, double timeout_ms)
{
	double end = cx_now_ms() + timeout_ms;
	for (;;) {
		int left = 0;
		for (int r = 0; r < CX_NROLES; r++) {
			int want = 0;
			for (int k = 0; k < nkinds; k++)
				want |= (int)cx_roles[r].kind == kinds[k];
			if (!want || c->pid[r] <= 0)
				continue;
			int st;
			pid_t p = waitpid(c->pid[r], &st, WNOHANG);
			if (p == c->pid[r]) {
				char b[96];
				int at_point = WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL &&
				               atomic_load(&c->sh->rs[r].armed);
				if (at_point) {
					c->rep->crash_points++;
					if (cx_roles[r].kind == K_PUB) {
						struct cx_pubrec *rec =
						        cx_pub(c, cx_roles[r].arg, c->inc[r]);
						rec->state = 2;
						rec->killed_inflight = atomic_load(&rec->inflight);
					}
					c->pid[r] = 0;
					continue;
				}
				if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
					cx_report_fail(c, "%s (inc %d) %s%s%s", cx_roles[r].name,
					               c->inc[r], cx_status(b, sizeof(b), st),
					               c->sh->rs[r].fail[0] ? ": " : "",
					               c->sh->rs[r].fail);
				if (cx_roles[r].kind == K_PUB)
					cx_pub(c, cx_roles[r].arg, c->inc[r])->state = 3;
				c->pid[r] = 0;
				continue;
			}
			if (cx_now_ms() > end) {
				if (cx_stall_hook != NULL && !c->dumped++)
					cx_stall_hook(c->cfg.url);
				cx_report_fail(c, "%s (inc %d) did not finish within %.0f ms%s%s",
				               cx_roles[r].name, c->inc[r], timeout_ms,
				               c->sh->rs[r].fail[0] ? ": " : "", c->sh->rs[r].fail);
				kill(c->pid[r], SIGKILL);
				waitpid(c->pid[r], &st, 0);
				if (cx_roles[r].kind == K_PUB) {
					struct cx_pubrec *rec = cx_pub(c, cx_roles[r].arg, c->inc[r]);
					rec->state = 2;
					rec->killed_inflight = atomic_load(&rec->inflight);
				}
				c->pid[r] = 0;
				continue;
			}
			left++;
		}
		if (!left)
			return;
		cx_sleep_us(2000);
	}
}

static void cx_kill_all(struct cx *c)
{
	for (int r = 0; r < CX_NROLES; r++) {
		if (c->pid[r] > 0) {
			int st;
			kill(c->pid[r], SIGKILL);
			waitpid(c->pid[r], &st, 0);
			c->pid[r] = 0;
		}
	}
}

/* ---- the chaos phase ------------------------------------------------------------------ */

static int cx_pick_victim(struct cx *c)
{
	int total = 0;
	for (int r = 0; r < CX_NROLES; r++)
		if (c->pid[r] > 0 && cx_roles[r].killable &&
		    !(cx_roles[r].kind == K_PUB && c->inc[r] + 2 >= c->max_inc))
			total += cx_roles[r].weight;
	if (!total)
		return -1;
	long k = cx_range(&c->rng, 0, total - 1);
	for (int r = 0; r < CX_NROLES; r++) {
		if (!(c->pid[r] > 0 && cx_roles[r].killable &&
		      !(cx_roles[r].kind == K_PUB && c->inc[r] + 2 >= c->max_inc)))
			continue;
		k -= cx_roles[r].weight;
		if (k < 0)
			return r;
	}
	return -1;
}

static void cx_chaos(struct cx *c)
{
	double end = cx_now_ms() + c->cfg.seconds * 1e3;
	int stopped = -1;
	double stopped_until = 0, next_pause = 0;
	while (cx_now_ms() < end) {
		cx_sleep_us(cx_range(&c->rng, 5000, 60000));
		double now = cx_now_ms();
		cx_reap_unexpected(c);
		/* Pauses: one at a time, at most pause_max_ms, and as long a
		 * gap before the next one. */
		if (stopped >= 0 && (now >= stopped_until || c->pid[stopped] <= 0)) {
			if (c->pid[stopped] > 0)
				kill(c->pid[stopped], SIGCONT);
			stopped = -1;
			next_pause = now + c->cfg.pause_max_ms;
		}
		if (stopped < 0 && now >= next_pause && cx_rand(&c->rng) % 3 == 0) {
			int r = (int)cx_range(&c->rng, 0, CX_NROLES - 1);
			if (c->pid[r] > 0 && kill(c->pid[r], SIGSTOP) == 0) {
				stopped = r;
				stopped_until = now + cx_range(&c->rng, 10, c->cfg.pause_max_ms);
				c->rep->stops++;
			}
		}
		/* Kills, then respawns after a short while (workers may stay
		 * away longer: requesters then meet ENORESPONDERS). */
		if (cx_rand(&c->rng) % 3 == 0) {
			int r = cx_pick_victim(c);
			if (r >= 0) {
				cx_kill(c, r);
				if (r == stopped)
					stopped = -1;
				long delay = cx_roles[r].kind == K_WORK
				                     ? cx_range(&c->rng, 0, 2 * c->cfg.crash_bound_ms)
				                     : cx_range(&c->rng, 0, 30);
				c->respawn_at[r] = now + (double)delay;
			}
		}
		for (int r = 0; r < CX_NROLES; r++)
			if (c->pid[r] == 0 && cx_roles[r].killable && now >= c->respawn_at[r])
				cx_spawn(c, r);
	}
	if (stopped >= 0 && c->pid[stopped] > 0)
		kill(c->pid[stopped], SIGCONT);
	/* Killed roles come back, so that every role ends cleanly. */
	for (int r = 0; r < CX_NROLES; r++)
		if (c->pid[r] == 0 && cx_roles[r].killable)
			cx_spawn(c, r);
	cx_reap_unexpected(c);
}

/* ---- checks after the run -------------------------------------------------------------- */

/* May incarnation inc of slot have left one aborted slot in the ring? */
static int cx_may_abort(struct cx *c, int slot, int inc)
{
	struct cx_pubrec *rec = cx_pub(c, slot, inc);
	return rec->state == 2 && rec->killed_inflight &&
	       *cx_count(c, 0, slot, inc) == atomic_load(&rec->last_ok) + 1;
}

/* v2 puts a message's lossless records first, then its lossy ones: a
 * publisher killed between gave its last message (seen by the lossless
 * readers, never reported OK) to no lossy reader, and counted no drop. */
static int cx_lossy_may_miss(struct cx *c, int slot, int inc)
{
	struct cx_pubrec *rec = cx_pub(c, slot, inc);
	return rec->state == 2 && rec->killed_inflight &&
	       *cx_count(c, 0, slot, inc) == atomic_load(&rec->last_ok) + 2;
}

static void cx_verify_streams(struct cx *c)
{
	struct chaos_report *rep = c->rep;
	for (int s = 0; s < CX_NPUB; s++) {
		int fi = atomic_load(&c->sh->final_inc[s]);
		uint64_t committed = 0, aborted_max = 0, missed_max = 0;
		for (int inc = 0; inc <= fi; inc++) {
			struct cx_pubrec *rec = cx_pub(c, s, inc);
			int64_t last = atomic_load(&rec->last_ok);
			int64_t w = *cx_count(c, 0, s, inc), e = *cx_count(c, 1, s, inc);
			rep->published += (uint64_t)(last + 1);
			/* All or nothing, a publisher killed inside publish
			 * too (its commit mark, pubsub/mark.h). */
			if (w != e)
				cx_report_fail(c, "publisher %d inc %d: subW saw %lld messages, subE "
				                  "%lld",
				               s, inc, (long long)w, (long long)e);
			int64_t hi = rec->state == 2 && rec->killed_inflight ? last + 2 : last + 1;
			if (w < last + 1 || w > hi)
				cx_report_fail(c, "publisher %d inc %d (%s%s): last publish OK was seq "
				                  "%lld, but the lossless readers saw %lld messages",
				               s, inc, rec->state == 2 ? "killed" : "finished",
				               rec->killed_inflight ? " inside publish" : "",
				               (long long)last, (long long)w);
			committed += (uint64_t)w;
			aborted_max += (uint64_t)cx_may_abort(c, s, inc);
			missed_max += (uint64_t)cx_lossy_may_miss(c, s, inc);
		}
		/* Lossy (see struct cx_trans): by each incarnation's first
		 * delivery, every message missed before it was counted; the
		 * total is exact below. */
		int64_t before = 0, slackM = 0;
		for (int inc = 0; inc <= fi; inc++) {
			struct cx_trans *t = cx_trans(c, s, inc);
			if (t->set) {
				int64_t missed = before + t->seq - (int64_t)t->received;
				if (t->margin < missed - slackM)
					cx_report_fail(c, "lossy publisher %d: inc %d: %lld message(s) "
					                  "missed before seq %lld, but the drop counter "
					                  "(less later gaps) says %lld%s",
					               s, inc, (long long)missed, (long long)t->seq,
					               (long long)t->margin,
					               slackM ? " (+ messages of killed publishers)" : "");
			}
			before += *cx_count(c, 0, s, inc);
			slackM += cx_lossy_may_miss(c, s, inc);
		}
		struct cx_lossy *l = &c->sh->lossy[s];
		if (!atomic_load(&l->done)) {
			cx_report_fail(c, "lossy publisher %d: no final counts", s);
			continue;
		}
		uint64_t dl = atomic_load(&l->delivered), dr = atomic_load(&l->dropped);
		rep->lossy_received += dl;
		rep->lossy_dropped += dr;
		if (dl + dr + missed_max < committed || dl + dr > committed + aborted_max)
			cx_report_fail(c, "lossy publisher %d: delivered %llu + dropped %llu != %llu "
			                  "messages committed (+ up to %llu aborted)",
			               s, (unsigned long long)dl, (unsigned long long)dr,
			               (unsigned long long)committed, (unsigned long long)aborted_max);
	}
}

/* Afterwards: a fresh handle attaches and everything works and can be
 * taken again. h0 is the supervisor's handle, open all along. */
static void cx_verify_segment(struct cx *c, msgbus_bus *h0)
{
	msgbus_bus *h1 = NULL, *more[CX_MAX_PARTS];
	msgbus_sub *s1 = NULL, *subs[CX_MAX_SUBS];
	msgbus_buf *loans[CX_LARGE_BUFS];
	int nmore = 0, nsubs = 0, nloans = 0, rc;
	static unsigned char buf[CX_MAX_MSG];
	double t0;

	rc = msgbus_open(&h1, c->cfg.url, &c->opts);
	if (rc != MSGBUS_OK) {
		cx_report_fail(c, "after the run: a fresh open failed: %s", msgbus_strerror(rc));
		return;
	}
	/* Subscription slots still held by dead participants (reclaimed
	 * lazily): informational. */
	for (;;) {
		char pat[32];
		snprintf(pat, sizeof(pat), "chaos.probe.%d.>", nsubs);
		if (nsubs >= CX_MAX_SUBS || msgbus_subscribe(h1, pat, 0, &subs[nsubs]) != MSGBUS_OK)
			break;
		nsubs++;
	}
	if (nsubs < CX_MAX_SUBS - 1)
		c->rep->dead_held_subslots = (unsigned)(CX_MAX_SUBS - 1 - nsubs);
	while (nsubs > 0)
		msgbus_unsubscribe(subs[--nsubs]);

	/* pub/sub through every chaos subject: nothing dead gates it */
	rc = msgbus_subscribe(h1, "chaos.p.*", 0, &s1);
	if (rc != MSGBUS_OK) {
		cx_report_fail(c, "after the run: subscribe: %s", msgbus_strerror(rc));
		goto out;
	}
	t0 = cx_now_ms();
	for (int i = 0; i < 3 * CX_RING; i++) {
		int slot = i % CX_NPUB;
		char subject[32];
		size_t len = i % 7 == 0 ? 2000 : 64;
		snprintf(subject, sizeof(subject), "chaos.p.%d", slot);
		cx_build(buf, len, (unsigned)slot, 99999, (uint64_t)i);
		rc = msgbus_publish(h0, subject, buf, len, (int)cx_pub_bound_ms(c));
		if (rc != MSGBUS_OK) {
			cx_report_fail(c, "after the run: publish %d: %s", i, msgbus_strerror(rc));
			goto out;
		}
		msgbus_msg *m = NULL;
		struct cx_hdr h;
		char why[CX_FAILMSG];
		rc = msgbus_recv(s1, &m, (int)cx_pub_bound_ms(c));
		if (rc != MSGBUS_OK) {
			cx_report_fail(c, "after the run: recv %d: %s", i, msgbus_strerror(rc));
			goto out;
		}
		if (cx_parse(m, &h, why, sizeof(why)) != 0 || h.seq != (uint64_t)i ||
		    h.inc != 99999)
			cx_report_fail(c, "after the run: message %d: %s", i,
			               why[0] ? why : "wrong sequence");
		msgbus_msg_release(m);
	}
	if (cx_now_ms() - t0 > cx_pub_bound_ms(c))
		cx_report_fail(c, "after the run: %d messages took %.0f ms", 3 * CX_RING,
		               cx_now_ms() - t0);

	/* the chaos service has no live worker left */
	{
		msgbus_msg *m = NULL;
		t0 = cx_now_ms();
		rc = msgbus_request(h0, "chaos.svc", "x", 1, &m, 3000);
		if (rc != MSGBUS_ENORESPONDERS) {
			cx_report_fail(c, "after the run: request to the dead service: %s, want "
			                  "ENORESPONDERS",
			               msgbus_strerror(rc));
			if (rc == MSGBUS_OK)
				msgbus_msg_release(m);
		} else if (cx_now_ms() - t0 > c->cfg.crash_bound_ms + c->cfg.slack_ms) {
			cx_report_fail(c, "after the run: ENORESPONDERS took %.0f ms", cx_now_ms() - t0);
		}
	}
	/* a new service answers */
	{
		msgbus_service *svc = NULL;
		msgbus_call *call = NULL;
		msgbus_req *req = NULL;
		msgbus_msg *m = NULL;
		rc = msgbus_serve(h1, "chaos.final", NULL, NULL, &svc);
		if (rc == MSGBUS_OK)
			rc = msgbus_call_start(h0, "chaos.final", "ping", 4, 3000, &call);
		if (rc == MSGBUS_OK)
			rc = msgbus_service_recv(svc, &req, 3000);
		if (rc == MSGBUS_OK)
			rc = msgbus_respond(req, "pong", 4);
		if (rc == MSGBUS_OK)
			rc = msgbus_call_wait(call, &m, 3000);
		if (rc != MSGBUS_OK)
			cx_report_fail(c, "after the run: request/reply: %s", msgbus_strerror(rc));
		else if (msgbus_msg_len(m) != 4 || memcmp(msgbus_msg_data(m), "pong", 4) != 0)
			cx_report_fail(c, "after the run: wrong reply");
		if (rc == MSGBUS_OK)
			msgbus_msg_release(m);
		if (svc)
			msgbus_unserve(svc);
	}
	/* every participant slot can be taken (h0 and h1 hold two) */
	while (nmore < CX_MAX_PARTS && msgbus_open(&more[nmore], c->cfg.url, &c->opts) == MSGBUS_OK)
		nmore++;
	if (nmore != CX_MAX_PARTS - 2)
		cx_report_fail(c, "after the run: %d more handles opened, want %d (participant "
		                  "slots leaked?)",
		               nmore, CX_MAX_PARTS - 2);
	/* every subscription slot (s1 and the two service slots are taken) */
	for (;;) {
		char pat[32];
		snprintf(pat, sizeof(pat), "chaos.free.%d.*", nsubs);
		if (nsubs >= CX_MAX_SUBS || msgbus_subscribe(h1, pat, 0, &subs[nsubs]) != MSGBUS_OK)
			break;
		nsubs++;
	}
	if (nsubs != CX_MAX_SUBS - 1 - CX_NSVC_SLOTS)
		cx_report_fail(c, "after the run: %d subscriptions, want %d (subscription slots "
		                  "leaked?)",
		               nsubs, CX_MAX_SUBS - 1 - CX_NSVC_SLOTS);
	/* every large buffer */
	while (nloans < CX_LARGE_BUFS && msgbus_loan(h1, 1000, 0, &loans[nloans]) == MSGBUS_OK)
		nloans++;
	if (nloans != CX_LARGE_BUFS)
		cx_report_fail(c, "after the run: %d large buffers free, want %d", nloans,
		               CX_LARGE_BUFS);
out:
	while (nloans > 0)
		msgbus_loan_abort(loans[--nloans]);
	while (nsubs > 0)
		msgbus_unsubscribe(subs[--nsubs]);
	while (nmore > 0)
		msgbus_close(more[--nmore]);
	msgbus_close(h1);
}

/* ---- entry point ------------------------------------------------------------------------ */

static void cx_collect(struct cx *c)
{
	struct chaos_report *rep = c->rep;
	for (int r = 0; r < CX_NROLES; r++) {
		struct cx_rstat *rs = &c->sh->rs[r];
		if (atomic_load(&rs->failures) > 0)
			cx_report_fail(c, "%s: %d failure(s), first: %s", cx_roles[r].name,
			               atomic_load(&rs->failures), rs->fail);
		double lat = (double)atomic_load(&rs->max_latency_us) / 1e3;
		double blk = (double)atomic_load(&rs->max_block_us) / 1e3;
		switch (cx_roles[r].kind) {
		case K_PUB:
			if (blk > rep->max_publish_ms)
				rep->max_publish_ms = blk;
			break;
		case K_SUBW:
		case K_SUBE:
			rep->checked_lossless += atomic_load(&rs->ops);
			if (lat > rep->max_latency_ms)
				rep->max_latency_ms = lat;
			break;
		case K_SUBV:
			rep->victim_received += atomic_load(&rs->ops);
			break;
		case K_WORK:
			rep->served += atomic_load(&rs->ops);
			break;
		case K_REQ:
			rep->req_ok += atomic_load(&rs->ok);
			rep->req_timedout += atomic_load(&rs->timedout);
			rep->req_peerdied += atomic_load(&rs->peerdied);
			rep->req_noresp += atomic_load(&rs->noresp);
			if (blk > rep->max_request_over_ms)
				rep->max_request_over_ms = blk;
			break;
		default:
			break;
		}
	}
}

/* Runs the whole thing; 0 when every invariant held (rep->failed == 0). */
static int chaos_run(const struct chaos_cfg *cfg, struct chaos_report *rep)
{
	struct cx cx;
	struct cx *c = &cx;
	msgbus_bus *h0 = NULL;
	double start = cx_now_ms();

	memset(rep, 0, sizeof(*rep));
	memset(c, 0, sizeof(*c));
	c->cfg = *cfg;
	c->rep = rep;
	c->rng = cfg->seed * 0x2545f4914f6cdd1dull + 0x9e3779b97f4a7c15ull;
	c->max_inc = 256 + (int)(cfg->seconds * 40.0);
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	o.ring_slots = CX_RING;
	o.max_msg_size = CX_MAX_MSG;
	o.large_buffers = CX_LARGE_BUFS;
	if (cfg->inbox_size)
		o.inbox_size = cfg->inbox_size; /* inline up to a quarter, the rest shares buffers */
	o.max_subjects = CX_MAX_SUBJECTS;
	o.max_subs = CX_MAX_SUBS;
	o.max_participants = CX_MAX_PARTS;
	o.crash_bound_ms = (uint32_t)cfg->crash_bound_ms;
	c->opts = o;

	size_t n = (size_t)c->max_inc * CX_NPUB;
	size_t off_pubs = (sizeof(struct cx_shared) + 63) & ~(size_t)63;
	size_t off_counts = off_pubs + ((n * sizeof(struct cx_pubrec) + 63) & ~(size_t)63);
	size_t off_trans = off_counts + 2 * n * sizeof(int64_t);
	c->shsize = off_trans + n * sizeof(struct cx_trans);
	void *p = mmap(NULL, c->shsize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		cx_report_fail(c, "mmap: %s", strerror(errno));
		return -1;
	}
	c->sh = p;
	c->pubs = (struct cx_pubrec *)((char *)p + off_pubs);
	c->counts = (int64_t *)((char *)p + off_counts);
	c->trans = (struct cx_trans *)((char *)p + off_trans);

	int rc = msgbus_open(&h0, cfg->url, &c->opts);
	if (rc != MSGBUS_OK) {
		cx_report_fail(c, "open %s: %s", cfg->url, msgbus_strerror(rc));
		munmap(p, c->shsize);
		return -1;
	}
	/* Readers first (they must see every message), then workers, then
	 * the producers. */
	for (int r = R_SUBW; r <= R_SUBV; r++)
		cx_spawn(c, r);
	if (cx_wait_ready(c, R_SUBW, R_SUBV, 10000) != 0)
		cx_report_fail(c, "readers did not subscribe");
	for (int r = R_WORK0; r < R_REQ0; r++)
		cx_spawn(c, r);
	if (cx_wait_ready(c, R_WORK0, R_REQ0 - 1, 10000) != 0)
		cx_report_fail(c, "workers did not start");
	for (int r = 0; r < CX_NROLES; r++)
		if (cx_roles[r].kind == K_PUB || cx_roles[r].kind == K_REQ)
			cx_spawn(c, r);

	if (!rep->failed)
		cx_chaos(c);

	/* Producers finish (each publisher with at least one message), then
	 * readers drain and report, workers and the victim leave. */
	atomic_store(&c->sh->phase, PH_FINISH);
	const int producers[] = { K_PUB, K_REQ };
	cx_wait_exit(c, producers, 2, cx_pub_bound_ms(c) + 5000);
	for (int s = 0; s < CX_NPUB; s++)
		atomic_store(&c->sh->final_inc[s], c->inc[R_PUB0 + s]);
	atomic_store(&c->sh->phase, PH_DRAIN);
	const int rest[] = { K_SUBW, K_SUBE, K_SUBL, K_SUBV, K_WORK };
	cx_wait_exit(c, rest, 5, cx_drain_ms(c) + 5000);
	cx_kill_all(c);

	cx_collect(c);
	if (rep->failed && cx_stall_hook != NULL && !c->dumped++)
		cx_stall_hook(cfg->url);
	if (!rep->failed)
		cx_verify_streams(c);
	else
		for (int s = 0; s < CX_NPUB; s++)
			for (int inc = 0; inc <= c->inc[R_PUB0 + s] && inc < c->max_inc; inc++)
				rep->published += (uint64_t)(atomic_load(&cx_pub(c, s, inc)->last_ok) + 1);
	cx_verify_segment(c, h0);
	msgbus_close(h0);
	if (strncmp(cfg->url, "shm://", 6) == 0) {
		char path[160];
		struct stat sb;
		snprintf(path, sizeof(path), "/dev/shm/msgbus.%s", cfg->url + 6);
		if (stat(path, &sb) == 0) {
			cx_report_fail(c, "segment %s left after the last close", path);
			unlink(path);
		}
	}
	rep->seconds = (cx_now_ms() - start) / 1e3;
	munmap(p, c->shsize);
	return rep->failed ? -1 : 0;
}

static void chaos_print(const struct chaos_report *rep, FILE *f)
{
	fprintf(f,
	        "chaos: %.1f s: %u kills survived (pub %u+%u, subV %u, workers %u+%u, reqV %u), "
	        "%u crash points hit, %u pauses, %u spawns\n"
	        "chaos: %llu messages published OK, %llu checked by lossless readers, lossy "
	        "%llu received + %llu dropped, victim reader %llu\n"
	        "chaos: requests: %llu OK, %llu timed out, %llu peer died, %llu no responders; "
	        "%llu served\n"
	        "chaos: max publish %.0f ms, max delivery latency %.0f ms, max request beyond "
	        "its timeout %.0f ms; %u subscription slot(s) of dead participants held after "
	        "the run\n",
	        rep->seconds, rep->kills, rep->kills_by_role[0], rep->kills_by_role[1],
	        rep->kills_by_role[R_SUBV], rep->kills_by_role[R_WORK0],
	        rep->kills_by_role[R_WORK0 + 1], rep->kills_by_role[R_REQV], rep->crash_points,
	        rep->stops,
	        rep->spawns, (unsigned long long)rep->published,
	        (unsigned long long)rep->checked_lossless, (unsigned long long)rep->lossy_received,
	        (unsigned long long)rep->lossy_dropped, (unsigned long long)rep->victim_received,
	        (unsigned long long)rep->req_ok, (unsigned long long)rep->req_timedout,
	        (unsigned long long)rep->req_peerdied, (unsigned long long)rep->req_noresp,
	        (unsigned long long)rep->served, rep->max_publish_ms, rep->max_latency_ms,
	        rep->max_request_over_ms, rep->dead_held_subslots);
	if (rep->failed)
		fprintf(f, "chaos: %d FAILURE(S):\n%s", rep->failed, rep->why);
}

#ifndef CHAOS_NO_MAIN
static void usage(const char *argv0)
{
	fprintf(stderr,
	        "usage: %s [-s SECONDS] [-S SEED] [-n RUNS] [-b CRASH_BOUND_MS] [-p PAUSE_MS]\n"
	        "          [-k SLACK_MS] [-i INBOX_SIZE] [-v]\n"
	        "Runs publishers, readers, workers and requesters on one shm:// bus under\n"
	        "random SIGKILL and SIGSTOP/SIGCONT and checks the delivery invariants.\n",
	        argv0);
}

int main(int argc, char **argv)
{
	struct chaos_cfg cfg = chaos_defaults;
	int opt, runs = 1, failed = 0;
	char url[96];
	cfg.seed = (uint64_t)time(NULL);
	while ((opt = getopt(argc, argv, "s:S:n:b:p:k:i:vh")) != -1) {
		switch (opt) {
		case 's': cfg.seconds = atof(optarg); break;
		case 'S': cfg.seed = strtoull(optarg, NULL, 0); break;
		case 'n': runs = atoi(optarg); break;
		case 'b': cfg.crash_bound_ms = atoi(optarg); break;
		case 'p': cfg.pause_max_ms = atoi(optarg); break;
		case 'k': cfg.slack_ms = atoi(optarg); break;
		case 'i': cfg.inbox_size = (uint32_t)strtoul(optarg, NULL, 0); break;
		case 'v': cfg.verbose = 1; break;
		default: usage(argv[0]); return opt == 'h' ? 0 : 2;
		}
	}
	if (cfg.seconds <= 0 || cfg.crash_bound_ms <= 0 || cfg.pause_max_ms <= 0 || runs < 1) {
		usage(argv[0]);
		return 2;
	}
	for (int i = 0; i < runs; i++) {
		struct chaos_report rep;
		snprintf(url, sizeof(url), "shm://chaos%ldx%d", (long)getpid(), i);
		cfg.url = url;
		fprintf(stderr, "chaos: run %d of %d: %s, %.0f s, seed %llu, crash bound %d ms, "
		                "pauses up to %d ms\n",
		        i + 1, runs, url, cfg.seconds, (unsigned long long)cfg.seed,
		        cfg.crash_bound_ms, cfg.pause_max_ms);
		if (chaos_run(&cfg, &rep) != 0)
			failed++;
		chaos_print(&rep, stderr);
		cfg.seed++;
	}
	fprintf(stderr, "chaos: %s (%d of %d run(s) failed)\n", failed ? "FAILED" : "passed",
	        failed, runs);
	return failed ? 1 : 0;
}
#endif
