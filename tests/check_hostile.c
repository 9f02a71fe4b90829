/*
 * check_hostile.c - a hostile peer: while two processes use a live shm://
 * bus, the test mutates its shared memory (random fields of one region at
 * a time, at several rates). The users may get any error; they must never
 * crash, hang or read or write out of bounds (the SANITIZE=address,undefined
 * build turns any such access into a failure).
 *
 * Regions: the whole segment, the header page, participants and call
 * entries, subscription slots, topic control blocks (services), inbox
 * control blocks, inbox records (v2: one inbox per subscription), and
 * large buffers with service ring payloads. Loop index i: region i % 8, rate and
 * seed from i / 8. MSGBUS_HOSTILE_SECONDS sets how long each round lasts,
 * MSGBUS_HOSTILE_ROUNDS how many rates and seeds run per region.
 *
 * "found": exact cases for what the rounds turned up.
 *
 * The victims are forked children with handles of their own; every call
 * they make is bounded by alarm(). A victim that dies by a signal, exits
 * with a code other than 0, or is still running long after its time, fails
 * the round; the message names the call and the last mutations applied.
 */
#include <execinfo.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/mman.h>

#include "pubsub/mark.h"
#include "ring/inbox.h"
#include "shm/segment.h"
#include "test_util.h"

Suite *suite_hostile(void);

#if defined(__SANITIZE_ADDRESS__)
#define HZ_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HZ_ASAN 1
#endif
#endif
#ifndef HZ_ASAN
#define HZ_ASAN 0
#endif

#define HZ_REGIONS 8
#define HZ_RATES 3
#define HZ_SECONDS 0.6   /* victims' busy time per round */
#define HZ_CALL_S 10     /* one call longer than this is a hang (the control
                          * lock alone may take 5 s to time out) */
#define HZ_LOG 24        /* mutations remembered for the report */
#define HZ_MAX_MSG 8192

static const char *const hz_region_names[HZ_REGIONS] = {
	"whole segment", "header page", "participants and calls", "subscription slots",
	"topic control", "inbox control", "inbox records", "payloads and large buffers",
};

/* The bus every victim opens: small, so mutations land on live data. */
static void hz_options(msgbus_options *o)
{
	*o = (msgbus_options)MSGBUS_OPTIONS_INIT;
	o->ring_slots = 16;
	o->slot_size = 256;
	o->max_msg_size = HZ_MAX_MSG;
	o->large_buffers = 4;
	o->max_subjects = 8;
	o->max_subs = 16;
	o->max_participants = 8;
	o->crash_bound_ms = 200;
	o->inbox_size = 4096;
}

/* ---- what the victims share with the test ---------------------------------- */

struct hz_victim_stat {
	_Atomic int ready;
	_Atomic uint64_t ops, ok, errors;
	_Atomic uint64_t slowest_us;
	char op[160];     /* the call in progress */
	char slow_op[160]; /* the slowest call */
};

struct hz_shared {
	_Atomic int go; /* both victims ready: start */
	struct hz_victim_stat v[2];
};

static struct hz_shared *hz_sh;
static int hz_me; /* victim index in a child */
static const char *volatile hz_cur = "";

static double hz_deadline_ms; /* a victim's end of work */

static void hz_alarm(int sig)
{
	(void)sig;
	static const char msg[] = "hostile victim: call did not return: ";
	const char *c = hz_cur;
	if (write(2, msg, sizeof(msg) - 1) < 0 || write(2, c, strlen(c)) < 0 ||
	    write(2, "\n", 1) < 0)
		_exit(22);
	_exit(21);
}

/* Plain builds: say where a crash happened (ASan does it better itself). */
static void hz_crash(int sig)
{
	void *frames[64];
	static const char msg[] = "hostile victim: crashed in ";
	const char *c = hz_cur;
	if (write(2, msg, sizeof(msg) - 1) < 0 || write(2, c, strlen(c)) < 0 ||
	    write(2, "\n", 1) < 0)
		_exit(23);
	int n = backtrace(frames, 64);
	backtrace_symbols_fd(frames, n, 2);
	signal(sig, SIG_DFL);
	raise(sig);
}

static void hz_track(const char *name, double dt_ms, int rc)
{
	struct hz_victim_stat *v = &hz_sh->v[hz_me];
	atomic_fetch_add(&v->ops, 1);
	if (rc == MSGBUS_OK)
		atomic_fetch_add(&v->ok, 1);
	else
		atomic_fetch_add(&v->errors, 1);
	uint64_t us = (uint64_t)(dt_ms * 1e3);
	if (us > atomic_load(&v->slowest_us)) {
		atomic_store(&v->slowest_us, us);
		snprintf(v->slow_op, sizeof(v->slow_op), "%s", name);
	}
}

/* Runs one library call under alarm(); rc gets its code (0 for void calls). */
#define HZ(rc, expr)                                                         \
	do {                                                                 \
		hz_cur = #expr;                                              \
		snprintf(hz_sh->v[hz_me].op, sizeof(hz_sh->v[hz_me].op), "%s", \
		         #expr);                                             \
		double hz_t0_ = tu_now_ms();                                 \
		alarm(HZ_CALL_S);                                            \
		(rc) = (expr);                                               \
		alarm(0);                                                    \
		hz_track(#expr, tu_now_ms() - hz_t0_, (rc));                 \
	} while (0)
#define HZV(expr)                                                            \
	do {                                                                 \
		int hz_v_;                                                   \
		HZ(hz_v_, ((expr), 0));                                      \
	} while (0)

/* Reads every byte of a message, as an application would, and checks
 * what must hold whatever the segment says. */
static volatile unsigned hz_sink;
static int hz_touch(const msgbus_msg *m)
{
	const char *s = msgbus_msg_subject(m);
	const unsigned char *d = msgbus_msg_data(m);
	size_t len = msgbus_msg_len(m);
	unsigned sum = 0;
	if (s == NULL || strlen(s) > 255 + 5)
		return -1;
	if (len > HZ_MAX_MSG)
		return -2;
	if (len > 0 && d == NULL)
		return -3;
	for (size_t i = 0; i < len; i++)
		sum += d[i];
	hz_sink += sum + (unsigned)strlen(s);
	return 0;
}

static void hz_serve_cb(msgbus_req *req, void *arg)
{
	(void)arg;
	const unsigned char *d = msgbus_req_data(req);
	size_t n = msgbus_req_len(req);
	unsigned sum = 0;
	for (size_t i = 0; i < n && d != NULL; i++)
		sum += d[i];
	hz_sink += sum;
	/* large replies now and then: a buffer goes to the requester */
	static unsigned char big[1000];
	if (n % 5 == 0)
		msgbus_respond(req, big, sizeof(big));
	else
		msgbus_respond(req, d, n > 64 ? 64 : n);
}

/* A worker that keeps each request a while: calls stay in flight (their
 * entries pending or taken) long enough to be hit. */
static void hz_slow_cb(msgbus_req *req, void *arg)
{
	(void)arg;
	tu_sleep_ms(2 + (int)(msgbus_req_len(req) % 20));
	msgbus_respond(req, "slow", 4);
}

struct hz_child {
	const char *url;
	int who;
	uint64_t seed;
	double seconds;
};

/* The introspection calls on the damaged segment: every string they give
 * back must be NUL-terminated within its array. 0, or 1 when one is not. */
static int hz_introspect(msgbus_bus *bus, uint64_t x)
{
	static msgbus_sub_info si[8];
	static msgbus_service_info sv[8];
	msgbus_participant_info pi[8];
	msgbus_stat st = { .size = sizeof(st) };
	size_t n = 0;
	int rc;

	switch ((x >> 24) % 5) {
	case 0:
		HZ(rc, msgbus_stat_get(bus, &st));
		break;
	case 1:
		HZ(rc, msgbus_participants(bus, pi, 8, &n));
		break;
	case 2:
		HZ(rc, msgbus_subscriptions(bus, si, 8, &n));
		for (size_t i = 0; rc == MSGBUS_OK && i < n && i < 8; i++)
			if (strnlen(si[i].pattern, sizeof(si[i].pattern)) == sizeof(si[i].pattern))
				return 1;
		break;
	case 3:
		HZ(rc, msgbus_services(bus, sv, 8, &n));
		for (size_t i = 0; rc == MSGBUS_OK && i < n && i < 8; i++)
			if (strnlen(sv[i].name, sizeof(sv[i].name)) == sizeof(sv[i].name))
				return 1;
		break;
	default:
		HZ(rc, msgbus_wait_subscribers(bus, "hz.a", 1 + (unsigned)(x >> 40) % 4,
		                               (int)(x >> 44) % 10));
		break;
	}
	return 0;
}

/* A victim: sets up, says ready, waits for the go, then makes random calls
 * with small timeouts until its time is up, and closes. Exit 0 whatever
 * the calls returned; a failure here is a crash, a hang, or a message
 * that breaks what the API promises (reported as exit 30+). */
static int hz_victim_main(void *p)
{
	struct hz_child *c = p;
	msgbus_options o;
	msgbus_bus *bus = NULL;
	msgbus_sub *subs[3] = { NULL, NULL, NULL };
	msgbus_service *cbsvc = NULL, *poll = NULL, *slow = NULL;
	static unsigned char buf[4096];
	uint64_t rng = c->seed * 0x9e3779b97f4a7c15ull + (uint64_t)c->who + 1;
	int rc;

	hz_me = c->who;
	signal(SIGALRM, hz_alarm);
	if (!HZ_ASAN) {
		signal(SIGSEGV, hz_crash);
		signal(SIGBUS, hz_crash);
		signal(SIGFPE, hz_crash);
		signal(SIGILL, hz_crash);
		signal(SIGABRT, hz_crash);
	}
	hz_options(&o);
	memset(buf, 0x5a, sizeof(buf));
	if (c->who == 1) {
		/* attach once the creator is set up */
		double end = tu_now_ms() + TU_WAIT_MS;
		while (!atomic_load(&hz_sh->v[0].ready) && tu_now_ms() < end)
			tu_sleep_ms(1);
	}
	rc = msgbus_open(&bus, c->url, &o);
	if (rc != MSGBUS_OK)
		return TU_CHILD_FAIL(10, "open: %s", msgbus_strerror(rc));
	if (c->who == 0) {
		if (msgbus_subscribe(bus, "hz.a", 0, &subs[0]) != MSGBUS_OK ||
		    msgbus_subscribe(bus, "hz.a", MSGBUS_SUB_LOSSY, &subs[1]) != MSGBUS_OK ||
		    msgbus_subscribe(bus, "hz.>", 0, &subs[2]) != MSGBUS_OK ||
		    msgbus_serve(bus, "hz.svc", hz_serve_cb, NULL, &cbsvc) != MSGBUS_OK ||
		    msgbus_serve(bus, "hz.poll", NULL, NULL, &poll) != MSGBUS_OK)
			return TU_CHILD_FAIL(11, "set up");
	} else {
		if (msgbus_subscribe(bus, "hz.*", 0, &subs[0]) != MSGBUS_OK ||
		    msgbus_subscribe(bus, "hz.b", MSGBUS_SUB_LOSSY, &subs[1]) != MSGBUS_OK ||
		    msgbus_serve(bus, "hz.slow", hz_slow_cb, NULL, &slow) != MSGBUS_OK ||
		    msgbus_serve(bus, "hz.poll", NULL, NULL, &poll) != MSGBUS_OK)
			return TU_CHILD_FAIL(11, "set up");
	}
	/* some traffic before the damage starts */
	for (int i = 0; i < 8; i++) {
		msgbus_publish(bus, "hz.a", buf, 16, 0);
		msgbus_publish(bus, "hz.b", buf, 1000, 0);
	}
	atomic_store(&hz_sh->v[c->who].ready, 1);
	double end = tu_now_ms() + TU_WAIT_MS;
	while (!atomic_load(&hz_sh->go) && tu_now_ms() < end)
		tu_sleep_ms(1);
	hz_deadline_ms = tu_now_ms() + c->seconds * 1e3;

	while (tu_now_ms() < hz_deadline_ms) {
		uint64_t x = tu_xorshift(&rng);
		int to = (int)(x >> 32) % 4 == 0 ? 0 : (int)((x >> 40) % 20) + 1;
		msgbus_msg *m = NULL;
		switch (x % 16) {
		case 0:
			HZ(rc, msgbus_publish(bus, "hz.a", buf, 8 + (x >> 20) % 200, to));
			break;
		case 1:
			HZ(rc, msgbus_publish(bus, "hz.b", buf, 300 + (x >> 20) % 3000, to));
			break;
		case 2: {
			msgbus_buf *l = NULL;
			HZ(rc, msgbus_loan(bus, 2000, to, &l));
			if (rc != MSGBUS_OK)
				break;
			void *d;
			HZ(rc, ((d = msgbus_loan_data(l)) != NULL ? 0 : -1));
			if (d != NULL)
				memset(d, 0x33, 2000);
			if (x & (1u << 30)) {
				HZ(rc, msgbus_commit(l, "hz.c", 1500, to));
				if (rc != MSGBUS_OK)
					HZV(msgbus_loan_abort(l));
			} else {
				HZV(msgbus_loan_abort(l));
			}
			break;
		}
		case 3:
		case 4:
		case 5: {
			msgbus_sub *s = subs[(x % 16) - 3];
			if (s == NULL)
				break;
			HZ(rc, msgbus_recv(s, &m, to));
			if (rc == MSGBUS_OK) {
				int bad = hz_touch(m);
				if (bad)
					return TU_CHILD_FAIL(30, "recv gave a message that breaks "
					                         "the API (%d)",
					                     bad);
				HZV(msgbus_msg_release(m));
			}
			break;
		}
		case 6: {
			static const char *const names[] = { "hz.svc", "hz.poll", "hz.slow" };
			const char *svc = names[(x >> 35) % 3];
			HZ(rc, msgbus_request(bus, svc, buf, (x >> 20) % 300, &m, to ? to + 10 : 30));
			if (rc == MSGBUS_OK) {
				if (msgbus_msg_len(m) > HZ_MAX_MSG)
					return TU_CHILD_FAIL(31, "reply of %zu bytes",
					                     msgbus_msg_len(m));
				hz_touch(m);
				HZV(msgbus_msg_release(m));
			}
			break;
		}
		case 7: {
			msgbus_call *call = NULL;
			HZ(rc, msgbus_call_start(bus, (x >> 33) & 1 ? "hz.slow" : "hz.poll", buf,
			                         (x >> 20) % 100, 40, &call));
			if (rc != MSGBUS_OK)
				break;
			if ((x >> 34) & 1) {
				HZ(rc, msgbus_call_wait(call, &m, to));
				if (rc == MSGBUS_OK) {
					hz_touch(m);
					HZV(msgbus_msg_release(m));
				} else if (rc == MSGBUS_EAGAIN) {
					HZV(msgbus_call_cancel(call));
				}
			} else {
				HZV(msgbus_call_cancel(call));
			}
			break;
		}
		case 8: {
			msgbus_req *req = NULL;
			HZ(rc, msgbus_service_recv(poll, &req, to));
			if (rc == MSGBUS_OK) {
				size_t n = msgbus_req_len(req);
				const unsigned char *d = msgbus_req_data(req);
				unsigned sum = 0;
				if (n > HZ_MAX_MSG)
					return TU_CHILD_FAIL(32, "request of %zu bytes", n);
				for (size_t i = 0; i < n && d; i++)
					sum += d[i];
				hz_sink += sum;
				HZ(rc, msgbus_respond(req, buf, (x >> 20) % 400));
			}
			break;
		}
		case 9: {
			msgbus_sub *s = NULL;
			char pat[32];
			snprintf(pat, sizeof(pat), (x >> 20) & 1 ? "hz.n%u" : "hz.w%u.>",
			         (unsigned)((x >> 24) % 4));
			HZ(rc, msgbus_subscribe(bus, pat, (x >> 21) & 1 ? MSGBUS_SUB_LOSSY : 0, &s));
			if (rc == MSGBUS_OK) {
				HZ(rc, msgbus_recv(s, &m, 0));
				if (rc == MSGBUS_OK) {
					hz_touch(m);
					HZV(msgbus_msg_release(m));
				}
				HZ(rc, msgbus_unsubscribe(s));
			}
			break;
		}
		case 10: {
			msgbus_sub_stats st;
			msgbus_sub *s = subs[(x >> 20) % 3];
			if (s != NULL)
				HZ(rc, msgbus_sub_stats_get(s, &st));
			if (hz_introspect(bus, x))
				return TU_CHILD_FAIL(33, "introspection broke the API");
			break;
		}
		case 11:
			if ((x >> 20) % 8 == 0) {
				/* attach a second handle to the damaged segment */
				msgbus_bus *b2 = NULL;
				HZ(rc, msgbus_open(&b2, c->url, &o));
				if (rc == MSGBUS_OK) {
					HZ(rc, msgbus_publish(b2, "hz.a", buf, 10, 0));
					HZ(rc, msgbus_close(b2));
				}
			}
			break;
		case 12:
			if (c->who == 1 && (x >> 20) % 16 == 0) {
				/* a worker comes and goes */
				msgbus_service *svc = NULL;
				HZ(rc, msgbus_serve(bus, "hz.svc", hz_serve_cb, NULL, &svc));
				if (rc == MSGBUS_OK) {
					tu_sleep_ms(1);
					HZ(rc, msgbus_unserve(svc));
				}
			}
			break;
		default: {
			/* a burst of publish and receive on one subject */
			for (int k = 0; k < 4; k++) {
				HZ(rc, msgbus_publish(bus, "hz.a", buf, 24, 0));
				if (subs[0] != NULL) {
					HZ(rc, msgbus_recv(subs[0], &m, 0));
					if (rc == MSGBUS_OK) {
						hz_touch(m);
						HZV(msgbus_msg_release(m));
					}
				}
			}
			break;
		}
		}
	}
	HZ(rc, msgbus_close(bus));
	return 0;
}

/* ---- the mutator ----------------------------------------------------------- */

/* A field of the segment: offset and width (1, 2, 4 or 8 bytes). */
struct hz_field {
	uint64_t off;
	unsigned width;
	const char *what;
};

struct hz_mut {
	double t_ms;
	uint64_t off;
	unsigned width;
	const char *what;
	uint64_t before, after;
};

struct hz_mutator {
	unsigned char *map;
	uint64_t size;
	struct mb_config cfg;
	struct mb_geometry geo;
	uint64_t rng;
	int region;
	unsigned long count;
	struct hz_mut log[HZ_LOG];
	double t0;
};

static uint64_t hz_rand(struct hz_mutator *m, uint64_t n)
{
	return n ? tu_xorshift(&m->rng) % n : 0;
}

#define HZ_F(base, type, member)                                                   \
	((struct hz_field){ (base) + offsetof(type, member),                       \
	                    (unsigned)sizeof(((type *)0)->member), #type "." #member })

static uint64_t hz_topic(const struct hz_mutator *m, uint32_t t)
{
	return m->geo.topics + (uint64_t)t * m->geo.topic_stride;
}

/* Most picks go to structures in use: damage there meets live logic. */
static int hz_prefer_live(struct hz_mutator *m)
{
	return hz_rand(m, 4) != 0;
}

static uint32_t hz_pick_topic(struct hz_mutator *m)
{
	uint32_t t = (uint32_t)hz_rand(m, m->cfg.max_subjects);
	for (int k = 0; k < 16 && hz_prefer_live(m); k++) {
		uint32_t u = (uint32_t)hz_rand(m, m->cfg.max_subjects);
		const struct mb_topic *tp = (const void *)(m->map + hz_topic(m, u));
		if (atomic_load(&tp->state) == MB_TOPIC_READY)
			return u;
	}
	return t;
}

static uint64_t hz_pick_call(struct hz_mutator *m)
{
	uint64_t n = (uint64_t)m->cfg.max_participants * MB_CALLS;
	uint64_t e = hz_rand(m, n);
	if (hz_prefer_live(m)) {
		for (int k = 0; k < 64; k++) {
			uint64_t u = hz_rand(m, n);
			const struct mb_call *c = (const void *)(m->map + m->geo.calls +
			                                         u * sizeof(struct mb_call));
			uint64_t w = atomic_load(&c->word);
			if (MB_CALLW_STATE(w) >= MB_CALL_PENDING && MB_CALLW_STATE(w) <= MB_CALL_REPLIED)
				return m->geo.calls + u * sizeof(struct mb_call);
		}
	}
	return m->geo.calls + e * sizeof(struct mb_call);
}

static uint64_t hz_pick_subslot(struct hz_mutator *m)
{
	uint64_t s = hz_rand(m, m->cfg.max_subs);
	for (int k = 0; k < 16 && hz_prefer_live(m); k++) {
		uint64_t u = hz_rand(m, m->cfg.max_subs);
		const struct mb_subslot *ss = (const void *)(m->map + m->geo.subs +
		                                             u * sizeof(struct mb_subslot));
		if (MB_SUBW_STATE(atomic_load(&ss->word)) != MB_SUB_FREE)
			return m->geo.subs + u * sizeof(struct mb_subslot);
	}
	return m->geo.subs + s * sizeof(struct mb_subslot);
}

/* Picks a field of the round's region. */
static struct hz_field hz_pick(struct hz_mutator *m)
{
	const struct mb_config *c = &m->cfg;
	const struct mb_geometry *g = &m->geo;
	switch (m->region) {
	case 1: { /* header page */
		const struct hz_field f[] = {
			HZ_F(0, struct mb_header, magic),
			HZ_F(0, struct mb_header, version),
			HZ_F(0, struct mb_header, header_size),
			HZ_F(0, struct mb_header, segment_size),
			HZ_F(0, struct mb_header, layout_hash),
			HZ_F(0, struct mb_header, cfg.ring_slots),
			HZ_F(0, struct mb_header, cfg.slot_size),
			HZ_F(0, struct mb_header, cfg.max_msg_size),
			HZ_F(0, struct mb_header, cfg.large_buffers),
			HZ_F(0, struct mb_header, cfg.max_subjects),
			HZ_F(0, struct mb_header, cfg.max_subs),
			HZ_F(0, struct mb_header, cfg.max_participants),
			HZ_F(0, struct mb_header, cfg.crash_bound_ms),
			HZ_F(0, struct mb_header, state),
			HZ_F(0, struct mb_header, ctl_owner),
			HZ_F(0, struct mb_header, ctl_owner),
			HZ_F(0, struct mb_header, topics_gen),
			HZ_F(0, struct mb_header, interest_gen),
			HZ_F(0, struct mb_header, any_ec),
			{ hz_rand(m, MB_PAGE), 1, "header page byte" },
		};
		return f[hz_rand(m, sizeof(f) / sizeof(f[0]))];
	}
	case 2: { /* participants and call entries */
		uint32_t i = (uint32_t)hz_rand(m, c->max_participants);
		uint64_t p = g->parts + (uint64_t)i * sizeof(struct mb_part);
		uint64_t e = hz_pick_call(m);
		const struct hz_field f[] = {
			HZ_F(p, struct mb_part, state),   HZ_F(p, struct mb_part, pid),
			HZ_F(p, struct mb_part, flags),   HZ_F(p, struct mb_part, reply_ec),
			HZ_F(p, struct mb_part, commit_mark[0]),
			{ p + offsetof(struct mb_part, commit_mark) +
			          8 * hz_rand(m, MB_COMMIT_MARKS), 8, "mb_part.commit_mark[]" },
			{ p + offsetof(struct mb_part, commit_put) +
			          4 * hz_rand(m, MB_COMMIT_MARKS), 4, "mb_part.commit_put[]" },
			HZ_F(e, struct mb_call, word),    HZ_F(e, struct mb_call, word),
			HZ_F(e, struct mb_call, word),    HZ_F(e, struct mb_call, ec),
			HZ_F(e, struct mb_call, len),     HZ_F(e, struct mb_call, buf),
			{ e + offsetof(struct mb_call, data) + hz_rand(m, MB_CALL_INLINE), 1,
			  "mb_call.data byte" },
		};
		return f[hz_rand(m, sizeof(f) / sizeof(f[0]))];
	}
	case 3: { /* subscription slots */
		uint64_t s = hz_pick_subslot(m);
		const struct hz_field f[] = {
			HZ_F(s, struct mb_subslot, word),
			HZ_F(s, struct mb_subslot, word),
			HZ_F(s, struct mb_subslot, pattern_len),
			{ s + offsetof(struct mb_subslot, pattern) + hz_rand(m, 8), 1,
			  "mb_subslot.pattern byte" },
			{ s + offsetof(struct mb_subslot, members), 8, "mb_subslot.members[0]" },
			HZ_F(s, struct mb_subslot, dropped),
		};
		return f[hz_rand(m, sizeof(f) / sizeof(f[0]))];
	}
	case 4: { /* topic control blocks */
		uint64_t t = hz_topic(m, hz_pick_topic(m));
		const struct hz_field f[] = {
			HZ_F(t, struct mb_topic, state),
			HZ_F(t, struct mb_topic, name_len),
			HZ_F(t, struct mb_topic, name_hash),
			{ t + offsetof(struct mb_topic, name) + hz_rand(m, 8), 1,
			  "mb_topic.name byte" },
			HZ_F(t, struct mb_topic, tail),
			HZ_F(t, struct mb_topic, tail),
			HZ_F(t, struct mb_topic, gate),
			HZ_F(t, struct mb_topic, data_ec),
			HZ_F(t, struct mb_topic, space_ec),
			{ t + offsetof(struct mb_topic, cursor_mask), 8, "mb_topic.cursor_mask[0]" },
		};
		return f[hz_rand(m, sizeof(f) / sizeof(f[0]))];
	}
	case 5: { /* inbox control blocks */
		uint64_t ic = g->inbox_ctl + hz_rand(m, c->max_subs) * sizeof(struct mb_inbox_ctl);
		const struct hz_field f[] = {
			HZ_F(ic, struct mb_inbox_ctl, reserve),
			HZ_F(ic, struct mb_inbox_ctl, reserve),
			HZ_F(ic, struct mb_inbox_ctl, release),
			HZ_F(ic, struct mb_inbox_ctl, release),
			HZ_F(ic, struct mb_inbox_ctl, data_ec),
			HZ_F(ic, struct mb_inbox_ctl, space_ec),
			HZ_F(ic, struct mb_inbox_ctl, key),
			HZ_F(ic, struct mb_inbox_ctl, size),
		};
		return f[hz_rand(m, sizeof(f) / sizeof(f[0]))];
	}
	case 6: { /* inbox records: near the consumer, where they are live */
		uint32_t sl = (uint32_t)hz_rand(m, c->max_subs);
		const struct mb_inbox_ctl *ic = (const void *)(m->map + g->inbox_ctl +
		                                               sl * sizeof(struct mb_inbox_ctl));
		uint64_t rel = __atomic_load_n((const uint64_t *)&ic->release, __ATOMIC_RELAXED);
		uint64_t at = ((rel + hz_rand(m, 1024)) & (c->inbox_size - 1)) & ~7ull;
		uint64_t rec = g->inbox_data + (uint64_t)sl * c->inbox_size + at;
		const struct hz_field f[] = {
			{ rec, 8, "inbox record header" },
			{ rec, 8, "inbox record header" },
			{ rec, 4, "inbox record info (subject length)" },
			{ rec + 4, 4, "inbox record info (payload length)" },
			{ rec, 1, "inbox record byte" },
			{ rec, 4, "inbox record prefix (sub_gen)" },
		};
		return f[hz_rand(m, sizeof(f) / sizeof(f[0]))];
	}
	case 7: { /* payloads, buffer states and buffer data */
		uint32_t b = (uint32_t)hz_rand(m, c->large_buffers);
		uint64_t bc = g->bufctl + (uint64_t)b * sizeof(struct mb_bufctl);
		uint64_t sl = hz_topic(m, hz_pick_topic(m)) + g->slots +
		              hz_rand(m, c->ring_slots) * c->slot_size;
		const struct hz_field f[] = {
			HZ_F(bc, struct mb_bufctl, state),
			HZ_F(bc, struct mb_bufctl, state),
			HZ_F(bc, struct mb_bufctl, gen),
			HZ_F(bc, struct mb_bufctl, refs),
			HZ_F(bc, struct mb_bufctl, backed),
			{ sl + MB_SLOT_HDR + hz_rand(m, c->slot_size - MB_SLOT_HDR), 1,
			  "slot payload byte" },
			{ g->bufdata + (uint64_t)b * g->buf_stride + hz_rand(m, c->max_msg_size), 1,
			  "large buffer byte" },
		};
		return f[hz_rand(m, sizeof(f) / sizeof(f[0]))];
	}
	default: { /* anywhere */
		uint64_t off = hz_rand(m, m->size);
		unsigned w = 1u << hz_rand(m, 4);
		off &= ~(uint64_t)(w - 1);
		return (struct hz_field){ off, w, "any bytes" };
	}
	}
}

static uint64_t hz_load(void *p, unsigned w)
{
	switch (w) {
	case 1: return __atomic_load_n((uint8_t *)p, __ATOMIC_RELAXED);
	case 2: return __atomic_load_n((uint16_t *)p, __ATOMIC_RELAXED);
	case 4: return __atomic_load_n((uint32_t *)p, __ATOMIC_RELAXED);
	default: return __atomic_load_n((uint64_t *)p, __ATOMIC_RELAXED);
	}
}

/* Stores v unless the field changed meanwhile (the library's CASes stay
 * meaningful: the damage is a peer's write, not a torn one). */
static int hz_cas(void *p, unsigned w, uint64_t old, uint64_t v)
{
	switch (w) {
	case 1: {
		uint8_t o = (uint8_t)old;
		return __atomic_compare_exchange_n((uint8_t *)p, &o, (uint8_t)v, 0,
		                                   __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
	}
	case 2: {
		uint16_t o = (uint16_t)old;
		return __atomic_compare_exchange_n((uint16_t *)p, &o, (uint16_t)v, 0,
		                                   __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
	}
	case 4: {
		uint32_t o = (uint32_t)old;
		return __atomic_compare_exchange_n((uint32_t *)p, &o, (uint32_t)v, 0,
		                                   __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
	}
	default:
		return __atomic_compare_exchange_n((uint64_t *)p, &old, v, 0, __ATOMIC_SEQ_CST,
		                                   __ATOMIC_RELAXED);
	}
}

/* One mutation: nudges (counters, states, indexes off by a little) are as
 * likely as random values, since they are the ones logic trusts. */
static void hz_mutate(struct hz_mutator *m)
{
	struct hz_field f = hz_pick(m);
	if (f.off + f.width > m->size)
		return;
	void *p = m->map + f.off;
	uint64_t mask = f.width == 8 ? UINT64_MAX : (1ull << (8 * f.width)) - 1;
	uint64_t old = hz_load(p, f.width), v;
	switch (hz_rand(m, 12)) {
	case 10:
	case 11: {
		/* a packed sub-field (state, owner, generation) off by one or
		 * two: a byte or 16-bit lane, the rest of the word unchanged */
		unsigned lane = f.width > 1 && hz_rand(m, 2) ? 16 : 8;
		unsigned shift = lane * (unsigned)hz_rand(m, 8 * f.width / lane);
		uint64_t lm = ((1ull << lane) - 1) << shift;
		uint64_t d = (uint64_t)(1 + hz_rand(m, 2)) << shift;
		v = (old & ~lm) | ((hz_rand(m, 2) ? old + d : old - d) & lm);
		break;
	}
	case 0: v = old + 1; break;
	case 1: v = old - 1; break;
	case 2: v = old + 1 + hz_rand(m, 3); break;
	case 3: v = old + m->cfg.ring_slots; break;
	case 4: v = old - m->cfg.ring_slots; break;
	case 5: v = old ^ (1ull << hz_rand(m, 8 * f.width)); break;
	case 6: v = 0; break;
	case 7: v = UINT64_MAX; break;
	case 8: v = old + (1ull << 16); break; /* a stamp's sequence */
	default: v = tu_xorshift(&m->rng); break;
	}
	v &= mask;
	if (v == old)
		v = old ^ 1;
	if (!hz_cas(p, f.width, old, v))
		return;
	struct hz_mut *l = &m->log[m->count % HZ_LOG];
	*l = (struct hz_mut){ tu_now_ms() - m->t0, f.off, f.width, f.what, old, v };
	m->count++;
}

/* The last mutations, oldest first, for a failure message. */
static void hz_log_str(const struct hz_mutator *m, char *buf, size_t size, int n)
{
	size_t used = 0;
	buf[0] = '\0';
	unsigned long first = m->count > (unsigned long)n ? m->count - (unsigned long)n : 0;
	for (unsigned long k = first; k < m->count && used + 1 < size; k++) {
		const struct hz_mut *l = &m->log[k % HZ_LOG];
		int w = snprintf(buf + used, size - used,
		                 "\n  #%lu at %.1f ms: %s (offset %#llx, %u bytes) %#llx -> %#llx", k,
		                 l->t_ms, l->what, (unsigned long long)l->off, l->width,
		                 (unsigned long long)l->before, (unsigned long long)l->after);
		if (w < 0)
			break;
		used += (size_t)w;
	}
}

static double hz_seconds(void)
{
	const char *e = getenv("MSGBUS_HOSTILE_SECONDS");
	return e != NULL && atof(e) > 0 ? atof(e) : HZ_SECONDS;
}

static int hz_rounds(void)
{
	const char *e = getenv("MSGBUS_HOSTILE_ROUNDS");
	return e != NULL && atoi(e) > 0 ? atoi(e) : HZ_RATES;
}

START_TEST(test_hostile)
{
	char url[96], path[128], why[160];
	struct hz_child ch[2];
	pid_t pid[2];
	int st[2] = { 0, 0 }, done[2] = { 0, 0 };
	struct hz_mutator m;
	int region = _i % HZ_REGIONS, round = _i / HZ_REGIONS;
	/* rate: sparse (a few per round), medium, dense */
	static const int gap_us[HZ_RATES][2] = { { 20000, 60000 }, { 500, 3000 }, { 20, 300 } };
	const int *gap = gap_us[round % HZ_RATES];
	double seconds = hz_seconds();

	hz_sh = mmap(NULL, sizeof(*hz_sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
	             -1, 0);
	ck_assert_msg(hz_sh != MAP_FAILED, "mmap: %s", strerror(errno));
	memset(hz_sh, 0, sizeof(*hz_sh));
	tu_unique_url(url, sizeof(url), "shm");
	tu_shm_path(path, sizeof(path), url);
	for (int k = 0; k < 2; k++) {
		ch[k] = (struct hz_child){ url, k, (uint64_t)_i * 7919 + 17, seconds };
		pid[k] = tu_spawn(hz_victim_main, &ch[k]);
	}
	double end = tu_now_ms() + TU_WAIT_MS;
	while (!(atomic_load(&hz_sh->v[0].ready) && atomic_load(&hz_sh->v[1].ready))) {
		for (int k = 0; k < 2; k++)
			if (!done[k] && tu_wait_child(pid[k], 0, &st[k]) == 0)
				ck_abort_msg("victim %d ended before the damage: %s", k,
				             tu_status_str(why, sizeof(why), st[k]));
		ck_assert_msg(tu_now_ms() < end, "victims did not set up");
		tu_sleep_ms(1);
	}

	memset(&m, 0, sizeof(m));
	m.region = region;
	m.rng = 0x9e3779b97f4a7c15ull * (uint64_t)(_i + 1) ^ 0xabcdef;
	int fd = open(path, O_RDWR | O_CLOEXEC);
	ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
	struct stat sb;
	ck_assert_int_eq(fstat(fd, &sb), 0);
	m.size = (uint64_t)sb.st_size;
	m.map = mmap(NULL, m.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ck_assert_msg(m.map != MAP_FAILED, "mmap: %s", strerror(errno));
	close(fd);
	memcpy(&m.cfg, &((struct mb_header *)(void *)m.map)->cfg, sizeof(m.cfg));
	mb_geometry(&m.cfg, &m.geo);
	ck_assert_msg(m.geo.size == m.size, "geometry %llu, file %llu",
	              (unsigned long long)m.geo.size, (unsigned long long)m.size);

	/* Damage until both victims are done; they must be done well after
	 * their busy time (a call may legitimately wait out the 5 s
	 * control-lock timeout, but not forever). */
	m.t0 = tu_now_ms();
	atomic_store(&hz_sh->go, 1);
	double limit = m.t0 + seconds * 1e3 + (HZ_CALL_S + 5) * 1e3;
	while (!(done[0] && done[1]) && tu_now_ms() < limit) {
		if (tu_now_ms() - m.t0 < seconds * 1e3)
			hz_mutate(&m);
		struct timespec ts = { 0, 1000L * (long)(gap[0] + (int)hz_rand(&m, (uint64_t)(gap[1] - gap[0]))) };
		nanosleep(&ts, NULL);
		for (int k = 0; k < 2; k++)
			if (!done[k] && tu_wait_child(pid[k], 0, &st[k]) == 0)
				done[k] = 1;
	}
	char log[HZ_LOG * 120];
	hz_log_str(&m, log, sizeof(log), 12);
	for (int k = 0; k < 2; k++) {
		if (!done[k]) {
			tu_kill_child(pid[k]);
			ck_abort_msg("round %d (%s, seed %d): victim %d hung in %s; %lu mutations, "
			             "last:%s",
			             _i, hz_region_names[region], _i, k, hz_sh->v[k].op, m.count, log);
		}
	}
	for (int k = 0; k < 2; k++) {
		ck_assert_msg(st[k] != -1 && WIFEXITED(st[k]) && WEXITSTATUS(st[k]) == 0,
		              "round %d (%s, seed %d): victim %d %s in %s; %lu mutations, last:%s",
		              _i, hz_region_names[region], _i, k,
		              tu_status_str(why, sizeof(why), st[k]), hz_sh->v[k].op, m.count, log);
	}
	int slow = atomic_load(&hz_sh->v[1].slowest_us) > atomic_load(&hz_sh->v[0].slowest_us);
	const char *sop = hz_sh->v[slow].slow_op;
	fprintf(stderr,
	        "hostile %2d %-26s %5lu mutations; calls %llu+%llu, OK %llu+%llu; slowest "
	        "%.0f ms: %.*s\n",
	        _i, hz_region_names[region], m.count,
	        (unsigned long long)atomic_load(&hz_sh->v[0].ops),
	        (unsigned long long)atomic_load(&hz_sh->v[1].ops),
	        (unsigned long long)atomic_load(&hz_sh->v[0].ok),
	        (unsigned long long)atomic_load(&hz_sh->v[1].ok),
	        (double)atomic_load(&hz_sh->v[slow].slowest_us) / 1e3,
	        (int)strcspn(sop, "("), sop);
	munmap(m.map, m.size);
	munmap(hz_sh, sizeof(*hz_sh));
	unlink(path); /* whatever the damaged bus could not clean up */
}
END_TEST

/* ---- what the rounds turned up, as exact cases --------------------------- */

/* Found by a round that damaged a slot's length to 0 under UBSan, but
 * needs no damage: the first message of a lossy subscription is empty
 * (deliver() copied 0 bytes to a NULL copy buffer: undefined behaviour,
 * fatal in the SANITIZE=address,undefined build). Loop: inproc, shm. */
static int lossy_empty_main(void *p)
{
	const char *url = p;
	msgbus_bus *bus = NULL;
	msgbus_sub *sub = NULL;
	msgbus_msg *m = NULL;
	int rc = msgbus_open(&bus, url, NULL);
	if (rc == MSGBUS_OK)
		rc = msgbus_subscribe(bus, "hz.empty", MSGBUS_SUB_LOSSY, &sub);
	if (rc == MSGBUS_OK)
		rc = msgbus_publish(bus, "hz.empty", NULL, 0, 0);
	if (rc == MSGBUS_OK)
		rc = msgbus_recv(sub, &m, TU_WAIT_MS);
	if (rc != MSGBUS_OK)
		return TU_CHILD_FAIL(10, "%s", msgbus_strerror(rc));
	if (msgbus_msg_len(m) != 0)
		return TU_CHILD_FAIL(11, "length %zu", msgbus_msg_len(m));
	msgbus_msg_release(m);
	msgbus_close(bus);
	return 0;
}

START_TEST(test_lossy_empty_first)
{
	char url[96];
	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	pid_t pid = tu_spawn(lossy_empty_main, url); /* a sanitizer report ends it */
	TU_ASSERT_CHILD_OK(pid, 2 * TU_WAIT_MS);
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

/* Found by a round over the call entries: a pending call's state word
 * says WRITING (a nudge of 2 -> 3) while the worker it names is alive (here
 * the requester itself). The call must still end at its deadline, and
 * cancel and close must return; they waited for the "writer" forever.
 * Loop: 0 call_wait(-1), 1 call_wait(300) then cancel, 2 close. */
struct call_writing {
	const char *url;
	int variant;
};

static int call_writing_main(void *p)
{
	const struct call_writing *cw = p;
	const char *url = cw->url;
	char path[128];
	msgbus_bus *bus = NULL;
	msgbus_service *svc = NULL;
	msgbus_call *call = NULL;
	msgbus_msg *m = NULL;
	int rc, variant = cw->variant;

	signal(SIGALRM, hz_alarm);
	rc = msgbus_open(&bus, url, NULL);
	if (rc == MSGBUS_OK) /* a worker that never takes anything */
		rc = msgbus_serve(bus, "hz.never", NULL, NULL, &svc);
	if (rc == MSGBUS_OK)
		rc = msgbus_call_start(bus, "hz.never", "x", 1, 200, &call);
	if (rc != MSGBUS_OK)
		return TU_CHILD_FAIL(10, "set up: %s", msgbus_strerror(rc));
	tu_shm_path(path, sizeof(path), url);
	int fd = open(path, O_RDWR | O_CLOEXEC);
	struct stat sb;
	if (fd < 0 || fstat(fd, &sb) != 0)
		return TU_CHILD_FAIL(11, "open %s", path);
	unsigned char *map = mmap(NULL, (size_t)sb.st_size, PROT_READ | PROT_WRITE, MAP_SHARED,
	                          fd, 0);
	close(fd);
	if (map == MAP_FAILED)
		return TU_CHILD_FAIL(12, "mmap");
	struct mb_config cfg;
	struct mb_geometry g;
	memcpy(&cfg, &((struct mb_header *)(void *)map)->cfg, sizeof(cfg));
	mb_geometry(&cfg, &g);
	int found = 0;
	for (uint64_t i = 0; i < (uint64_t)cfg.max_participants * MB_CALLS; i++) {
		struct mb_call *e = (struct mb_call *)(void *)(map + g.calls) + i;
		uint64_t w = atomic_load(&e->word);
		if (MB_CALLW_STATE(w) == MB_CALL_PENDING) {
			atomic_store(&e->word, mb_callw(MB_CALLW_CORR(w), MB_CALLW_WORKER(w),
			                                MB_CALL_WRITING));
			found++;
		}
	}
	if (found != 1)
		return TU_CHILD_FAIL(13, "%d pending call entries", found);
	double t0 = tu_now_ms();
	switch (variant) {
	case 0:
		hz_cur = "msgbus_call_wait(call, &m, -1) (call deadline 200 ms)";
		alarm(3);
		rc = msgbus_call_wait(call, &m, -1);
		alarm(0);
		if (rc == MSGBUS_OK)
			msgbus_msg_release(m);
		if (tu_now_ms() - t0 > 1000)
			return TU_CHILD_FAIL(14, "call_wait returned %s after %.0f ms (deadline 200)",
			                     msgbus_strerror(rc), tu_now_ms() - t0);
		break;
	case 1:
		hz_cur = "msgbus_call_wait(call, &m, 300)";
		alarm(3);
		rc = msgbus_call_wait(call, &m, 300);
		alarm(0);
		if (rc == MSGBUS_OK)
			msgbus_msg_release(m);
		if (rc == MSGBUS_EAGAIN) {
			hz_cur = "msgbus_call_cancel(call)";
			alarm(3);
			msgbus_call_cancel(call);
			alarm(0);
		}
		break;
	default:
		break;
	}
	hz_cur = "msgbus_close(bus) (with the call pending or done)";
	alarm(3);
	msgbus_close(bus);
	alarm(0);
	munmap(map, (size_t)sb.st_size);
	return 0;
}

START_TEST(test_call_entry_writing)
{
	char url[96], why[96];
	int st;
	tu_unique_url(url, sizeof(url), "shm");
	struct call_writing cw = { url, _i };
	pid_t pid = tu_spawn(call_writing_main, &cw);
	if (tu_wait_child(pid, 4 * TU_WAIT_MS, &st) != 0) {
		tu_kill_child(pid);
		ck_abort_msg("variant %d: child still running", _i);
	}
	ck_assert_msg(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
	              "variant %d: child %s%s", _i, tu_status_str(why, sizeof(why), st),
	              WIFEXITED(st) && WEXITSTATUS(st) == 21 ? " (a call hung: see its note above)"
	                                                      : "");
	tu_unlink_url(url);
}
END_TEST

/* The reaper's question about a dead publisher's CLAIMED record
 * (mb_mark_keep), with the values a hostile peer can write in the record,
 * the commit mark and its commit_put word, and the buffer control block:
 * a large record is kept only when its buffer is this publish's (index in
 * range, SHARED by the owner, same generation) and pub_put equals the
 * mark's put; nothing crashes or reads out of bounds on random values. */
START_TEST(test_mark_keep_hostile)
{
	char url[96];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	unsigned char subj[sizeof(struct mb_rec_pfx) + 1];
	struct mb_rec_pfx pfx = { 1, MB_REC_LARGE, 0, 41 };
	struct mb_rec_large desc = { 1, 7, 3000, 0 };
	uint64_t seed = 0x9e3779b97f4a7c15ull;

	tu_unique_url(url, sizeof(url), "shm");
	o.large_buffers = 2;
	msgbus_bus *bus = tu_open(url, &o);
	uint32_t owner = bus->cfg.max_participants - 1, nb = bus->cfg.large_buffers;
	ck_assert_uint_ne(owner, bus->self);
	struct mb_part *p = mb_part_at(bus, owner);
	struct mb_bufctl *bc = mb_bufctl_at(bus, 1);
	struct mb_inbox_msg m = { (const char *)subj, sizeof(subj), owner, &desc, sizeof(desc) };
#define KEEP() mb_mark_keep(bus, m.owner, &m)
#define SET_PFX() (memcpy(subj, &pfx, sizeof(pfx)), subj[sizeof(pfx)] = 'x')

	SET_PFX();
	atomic_store(&p->commit_mark[2], 42);
	atomic_store(&p->commit_put[2], 3);
	atomic_store(&bc->state, MB_BUF_SHARED(owner));
	atomic_store(&bc->gen, 7);
	atomic_store(&bc->pub_put, 3);
	ck_assert(KEEP()); /* counted: commit */
	atomic_store(&bc->pub_put, 0);
	ck_assert(!KEEP()); /* marked, not yet counted */
	atomic_store(&bc->pub_put, 2);
	ck_assert(!KEEP());
	atomic_store(&p->commit_put[2], 0);
	ck_assert(!KEEP());
	atomic_store(&bc->pub_put, 0);
	ck_assert(!KEEP()); /* a put of 0 never counts */
	atomic_store(&p->commit_put[2], 3);
	atomic_store(&bc->pub_put, 3);
	atomic_store(&bc->gen, 8);
	ck_assert(!KEEP()); /* another use of the buffer */
	atomic_store(&bc->gen, 7);
	atomic_store(&bc->state, MB_BUF_LOANED(owner));
	ck_assert(!KEEP());
	atomic_store(&bc->state, MB_BUF_SHARED(owner - 1));
	ck_assert(!KEEP());
	atomic_store(&bc->state, MB_BUF_SHARED(owner));
	ck_assert(KEEP());
	desc.buf = nb;
	ck_assert(!KEEP()); /* out of range */
	desc.buf = UINT32_MAX;
	ck_assert(!KEEP());
	desc.buf = 1;
	m.payload_len = sizeof(desc) - 1;
	ck_assert(!KEEP()); /* too short for a descriptor */
	m.payload_len = sizeof(desc);
	m.owner = bus->cfg.max_participants;
	ck_assert(!KEEP());
	m.owner = owner;
	atomic_store(&p->commit_mark[2], 0);
	ck_assert(!KEEP()); /* not marked */
	pfx.kind = MB_REC_INLINE;
	SET_PFX();
	ck_assert(!KEEP());
	atomic_store(&p->commit_mark[3], 42);
	ck_assert(KEEP()); /* marked, no buffer to count */
	pfx.seq = UINT64_MAX;
	SET_PFX();
	atomic_store(&p->commit_mark[3], 0);
	ck_assert(!KEEP()); /* seq + 1 would read as a free mark */

	/* Random values: never a crash; a large record kept only with its
	 * buffer in range and counted. */
	for (int i = 0; i < 20000; i++) {
		uint64_t r = tu_xorshift(&seed);
		pfx.seq = r & 3;
		pfx.kind = (uint16_t)(r >> 2 & 3);
		SET_PFX();
		m.subject_len = (uint32_t)(r >> 4 & 1) ? sizeof(subj) : (uint32_t)(r >> 5 & 15);
		m.payload_len = (uint32_t)(r >> 9 & 1) ? sizeof(desc) : (uint32_t)(r >> 10 & 15);
		desc.buf = (uint32_t)(r >> 14 & 1) ? (uint32_t)(r >> 15 & 3) : (uint32_t)(r >> 17);
		desc.buf_gen = (uint32_t)(r >> 49 & 1) + 7;
		uint64_t r2 = tu_xorshift(&seed);
		for (unsigned k = 0; k < MB_COMMIT_MARKS; k++) {
			atomic_store(&p->commit_mark[k], r2 >> (8 * k) & 3);
			atomic_store(&p->commit_put[k], (uint32_t)(r2 >> (8 * k + 2) & 3));
		}
		atomic_store(&bc->pub_put, (uint32_t)(r2 >> 40 & 3));
		atomic_store(&bc->gen, (uint32_t)(r2 >> 42 & 1) + 7);
		atomic_store(&bc->state, (r2 >> 43 & 1) ? MB_BUF_SHARED(owner) : r2);
		bool keep = KEEP();
		if (keep && pfx.kind == MB_REC_LARGE && m.payload_len >= sizeof(desc))
			ck_assert_msg(desc.buf < nb && atomic_load(&bc->pub_put) != 0,
			              "round %d: kept a record of buffer %u", i, desc.buf);
	}
#undef KEEP
#undef SET_PFX
	for (unsigned k = 0; k < MB_COMMIT_MARKS; k++) {
		atomic_store(&p->commit_mark[k], 0);
		atomic_store(&p->commit_put[k], 0);
	}
	atomic_store(&bc->pub_put, 0);
	atomic_store(&bc->state, MB_BUF_FREE);
	msgbus_close(bus);
	tu_unlink_url(url);
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

Suite *suite_hostile(void)
{
	Suite *s = suite_create("hostile");
	TCase *tc;

	if (tu_valgrind())
		return s;

	int n = HZ_REGIONS * hz_rounds();
	tc = tu_tcase("mutate", TU_CASE_TIMEOUT + hz_seconds());
	tcase_add_loop_test(tc, test_hostile, 0, n);
	suite_add_tcase(s, tc);

	tc = tu_tcase("found", TU_CASE_TIMEOUT);
	tcase_add_loop_test(tc, test_lossy_empty_first, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_call_entry_writing, 0, 3);
	tcase_add_test(tc, test_mark_keep_hostile);
	suite_add_tcase(s, tc);
	return s;
}
