/*
 * check_pubsub.c - delivery semantics: contents, subject patterns,
 * ordering, fan-out, subscription lifetime, stats, callbacks, loans and
 * concurrent publishers. Every case runs on inproc:// and shm:// (loop
 * index % 2); a second participant is a thread here (processes are in
 * check_crash.c).
 */
#include <pthread.h>

#include "test_util.h"

static msgbus_bus *open_scheme(int i, char *url, size_t size,
                               const msgbus_options *o)
{
	tu_unique_url(url, size, tu_scheme(i));
	return tu_open(url, o);
}

static void close_bus(msgbus_bus *bus, const char *url)
{
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url);
}

/* ---- contents ---------------------------------------------------------- */

static const size_t sizes[] = { 0, 1, 63, 64, 224, 225, 4096, 65536,
	                        1u << 20 };
#define NSIZES ((int)(sizeof(sizes) / sizeof(sizes[0])))

/* Loop index: scheme = i % 2, size = sizes[i / 2]. Three messages of the
 * size, seen by an exact and a wildcard subscription; the publisher's
 * buffer is clobbered after each publish (the bus must have copied it). */
START_TEST(test_sizes)
{
	char url[96];
	size_t len = sizes[_i / TU_NSCHEMES];
	msgbus_sub *exact = NULL, *wild = NULL;
	msgbus_bus *bus = open_scheme(_i, url, sizeof(url), NULL);
	unsigned char *buf = malloc(len + 1);

	ck_assert_ptr_nonnull(buf);
	TU_ASSERT_OK(msgbus_subscribe(bus, "size.x", 0, &exact));
	TU_ASSERT_OK(msgbus_subscribe(bus, ">", 0, &wild));
	for (uint32_t r = 0; r < 3; r++) {
		tu_fill(buf, len, (uint32_t)len + r);
		TU_ASSERT_OK(msgbus_publish(bus, "size.x", buf, len,
		                            TU_WAIT_MS));
		memset(buf, 0xee, len);
	}
	msgbus_sub *subs[2] = { exact, wild };
	for (int s = 0; s < 2; s++) {
		for (uint32_t r = 0; r < 3; r++) {
			msgbus_msg *m = NULL;
			TU_ASSERT_OK(msgbus_recv(subs[s], &m, TU_WAIT_MS));
			ck_assert_str_eq(msgbus_msg_subject(m), "size.x");
			ck_assert_uint_eq(msgbus_msg_len(m), len);
			if (len > 0) {
				ck_assert_ptr_nonnull(msgbus_msg_data(m));
				long bad = tu_verify(msgbus_msg_data(m), len,
				                     (uint32_t)len + r);
				ck_assert_msg(bad == -1,
				              "sub %d msg %u: byte %ld of %zu "
				              "differs",
				              s, r, bad, len);
			}
			msgbus_msg_release(m);
		}
		TU_ASSERT_EMPTY(subs[s]);
	}
	free(buf);
	close_bus(bus, url);
}
END_TEST

/* ---- patterns ---------------------------------------------------------- */

START_TEST(test_patterns)
{
	static const char *const subjects[] = {
		"orders.created", "orders.eu.created", "orders", "other.x",
	};
	static const struct {
		const char *pattern;
		const char *expect[5];
	} cases[] = {
		{ "orders.*", { "orders.created" } },
		{ "orders.>", { "orders.created", "orders.eu.created" } },
		{ "orders.created", { "orders.created" } },
		{ "*.created", { "orders.created" } },
		{ "orders.*.created", { "orders.eu.created" } },
		{ "*", { "orders" } },
		{ "orders", { "orders" } },
		{ "*.*", { "orders.created", "other.x" } },
		{ ">", { "orders.created", "orders.eu.created", "orders",
		         "other.x" } },
		{ "*.>", { "orders.created", "orders.eu.created",
		           "other.x" } },
		{ "nomatch.>", { NULL } },
	};
	enum { NCASES = sizeof(cases) / sizeof(cases[0]) };
	char url[96];
	msgbus_sub *subs[NCASES];
	msgbus_bus *bus = open_scheme(_i, url, sizeof(url), NULL);

	for (int c = 0; c < NCASES; c++)
		TU_ASSERT_OK(msgbus_subscribe(bus, cases[c].pattern, 0,
		                              &subs[c]));
	for (uint32_t k = 0; k < 4; k++) {
		struct tu_seqmsg v = { 0, k };
		TU_ASSERT_OK(msgbus_publish(bus, subjects[k], &v, sizeof(v),
		                            TU_WAIT_MS));
	}
	for (int c = 0; c < NCASES; c++) {
		struct tu_expect want[5];
		int n = 0;
		for (; n < 5 && cases[c].expect[n] != NULL; n++) {
			want[n].subject = cases[c].expect[n];
			for (uint32_t k = 0; k < 4; k++)
				if (strcmp(subjects[k], want[n].subject) == 0)
					want[n].seq = k;
		}
		tu_recv_set(subs[c], cases[c].pattern, want, n);
	}
	close_bus(bus, url);
}
END_TEST

/* Wildcard subscriptions made before and after a subject first appears
 * both see it; an exact subscription made before its subject exists too. */
START_TEST(test_wildcard_before_after)
{
	char url[96];
	msgbus_sub *w1 = NULL, *w2 = NULL, *w3 = NULL, *e = NULL;
	msgbus_bus *bus = open_scheme(_i, url, sizeof(url), NULL);
	struct tu_seqmsg v = { 0, 0 };

	TU_ASSERT_OK(msgbus_subscribe(bus, "ev.*", 0, &w1));
	TU_ASSERT_OK(msgbus_subscribe(bus, "ev.b", 0, &e));
	v.seq = 0;
	TU_ASSERT_OK(msgbus_publish(bus, "ev.a", &v, sizeof(v), 0));
	TU_ASSERT_OK(msgbus_subscribe(bus, "ev.*", 0, &w2));
	v.seq = 1;
	TU_ASSERT_OK(msgbus_publish(bus, "ev.a", &v, sizeof(v), 0));
	v.seq = 2;
	TU_ASSERT_OK(msgbus_publish(bus, "ev.b", &v, sizeof(v), 0));
	v.seq = 3;
	TU_ASSERT_OK(msgbus_publish(bus, "ev.c.d", &v, sizeof(v), 0));
	TU_ASSERT_OK(msgbus_subscribe(bus, "ev.>", 0, &w3));
	v.seq = 4;
	TU_ASSERT_OK(msgbus_publish(bus, "ev.c.d", &v, sizeof(v), 0));
	v.seq = 5;
	TU_ASSERT_OK(msgbus_publish(bus, "ev.b", &v, sizeof(v), 0));

	static const struct tu_expect want1[] = {
		{ "ev.a", 0 }, { "ev.a", 1 }, { "ev.b", 2 }, { "ev.b", 5 },
	};
	static const struct tu_expect want2[] = {
		{ "ev.a", 1 }, { "ev.b", 2 }, { "ev.b", 5 },
	};
	static const struct tu_expect want3[] = {
		{ "ev.c.d", 4 }, { "ev.b", 5 },
	};
	static const struct tu_expect wante[] = {
		{ "ev.b", 2 }, { "ev.b", 5 },
	};
	tu_recv_set(w1, "ev.* before ev.a", want1, 4);
	tu_recv_set(w2, "ev.* after ev.a", want2, 3);
	tu_recv_set(w3, "ev.> after ev.c.d", want3, 2);
	tu_recv_set(e, "ev.b before ev.b", wante, 2);
	close_bus(bus, url);
}
END_TEST

/* Subject of message n: a fixed pseudo-random walk over the three, so no
 * visiting order of the subject rings can match it by chance. */
static int order_subject(uint32_t n)
{
	uint64_t s = 0x2545f4914f6cdd1dULL * (n + 1);
	return (int)(tu_xorshift(&s) % 3);
}

/* One publisher, several subjects, one wildcard subscription: every
 * message arrives once, intact, and each subject's messages in the order
 * they were published (msgbus(7) defines no order across subjects), with
 * inline and large messages mixed. */
static size_t order_len(uint32_t n)
{
	return n % 30 == 29 ? 1000 : 8 + n % 50;
}

START_TEST(test_order_per_subject)
{
	static const char *const subj[] = { "s.a", "s.b.c", "s.d" };
	enum { N = 300 };
	char url[96];
	unsigned char buf[1000];
	uint32_t next[3] = { 0 }; /* next seq expected on each subject */
	msgbus_sub *sub = NULL;
	msgbus_bus *bus = open_scheme(_i, url, sizeof(url), NULL);

	TU_ASSERT_OK(msgbus_subscribe(bus, "s.>", 0, &sub));
	for (uint32_t n = 0; n < N; n++) {
		size_t len = order_len(n);
		struct tu_seqmsg v = { 0, n };
		tu_fill(buf, len, n);
		memcpy(buf, &v, sizeof(v));
		TU_ASSERT_OK(msgbus_publish(bus, subj[order_subject(n)], buf,
		                            len, TU_WAIT_MS));
	}
	for (int k = 0; k < 3; k++)
		while (next[k] < N && order_subject(next[k]) != k)
			next[k]++;
	for (uint32_t n = 0; n < N; n++) {
		msgbus_msg *m = NULL;
		struct tu_seqmsg v;
		TU_ASSERT_OK(msgbus_recv(sub, &m, TU_WAIT_MS));
		ck_assert_int_eq(tu_get_seqmsg(m, &v), 0);
		ck_assert_uint_lt(v.seq, N);
		int k = order_subject(v.seq);
		ck_assert_str_eq(msgbus_msg_subject(m), subj[k]);
		ck_assert_msg(v.seq == next[k],
		              "%s: got seq %u, want %u (message %u received)",
		              subj[k], v.seq, next[k], n);
		do
			next[k]++;
		while (next[k] < N && order_subject(next[k]) != k);
		size_t len = order_len(v.seq);
		ck_assert_uint_eq(msgbus_msg_len(m), len);
		tu_fill(buf, len, v.seq);
		ck_assert_mem_eq((const unsigned char *)msgbus_msg_data(m) + 8,
		                 buf + 8, len - 8);
		msgbus_msg_release(m);
	}
	for (int k = 0; k < 3; k++)
		ck_assert_uint_eq(next[k], N);
	TU_ASSERT_EMPTY(sub);
	close_bus(bus, url);
}
END_TEST

START_TEST(test_fanout)
{
	enum { N = 100 };
	char url[96];
	msgbus_sub *a = NULL, *b = NULL, *c = NULL;
	msgbus_bus *bus = open_scheme(_i, url, sizeof(url), NULL);

	TU_ASSERT_OK(msgbus_subscribe(bus, "two.x", 0, &a));
	TU_ASSERT_OK(msgbus_subscribe(bus, "two.x", 0, &b));
	TU_ASSERT_OK(msgbus_subscribe(bus, "two.*", MSGBUS_SUB_LOSSY, &c));
	for (uint32_t n = 0; n < N; n++) {
		struct tu_seqmsg v = { 0, n };
		TU_ASSERT_OK(msgbus_publish(bus, "two.x", &v, sizeof(v),
		                            TU_WAIT_MS));
	}
	/* interleave the readers: each has its own cursor */
	for (uint32_t n = 0; n < N; n++) {
		TU_RECV_SEQ(a, "two.x", n);
		if (n % 2 == 0) {
			TU_RECV_SEQ(b, "two.x", n);
			TU_RECV_SEQ(b, "two.x", n + 1);
		}
		TU_RECV_SEQ(c, "two.x", n);
	}
	TU_ASSERT_EMPTY(a);
	TU_ASSERT_EMPTY(b);
	TU_ASSERT_EMPTY(c);
	close_bus(bus, url);
}
END_TEST

/* Two handles on one bus name share it; another name is a different bus. */
START_TEST(test_two_handles)
{
	char url[96], other[96];
	msgbus_sub *sa = NULL, *sb = NULL, *so = NULL;
	msgbus_bus *a = open_scheme(_i, url, sizeof(url), NULL);
	msgbus_bus *b = tu_open(url, NULL);
	msgbus_bus *o = open_scheme(_i, other, sizeof(other), NULL);

	TU_ASSERT_OK(msgbus_subscribe(a, "h.x", 0, &sa));
	TU_ASSERT_OK(msgbus_subscribe(b, "h.x", 0, &sb));
	TU_ASSERT_OK(msgbus_subscribe(o, "h.x", 0, &so));
	struct tu_seqmsg v = { 0, 1 };
	TU_ASSERT_OK(msgbus_publish(a, "h.x", &v, sizeof(v), 0));
	v.seq = 2;
	TU_ASSERT_OK(msgbus_publish(b, "h.x", &v, sizeof(v), 0));
	TU_RECV_SEQ(sa, "h.x", 1);
	TU_RECV_SEQ(sa, "h.x", 2);
	TU_RECV_SEQ(sb, "h.x", 1);
	TU_RECV_SEQ(sb, "h.x", 2);
	TU_ASSERT_EMPTY(so);
	TU_ASSERT_EMPTY(sa);

	/* the bus outlives its first handle */
	TU_ASSERT_OK(msgbus_close(a));
	TU_ASSERT_SEGMENT(url);
	v.seq = 3;
	TU_ASSERT_OK(msgbus_publish(b, "h.x", &v, sizeof(v), 0));
	TU_RECV_SEQ(sb, "h.x", 3);
	close_bus(b, url);
	close_bus(o, other);
}
END_TEST

/* A subscription sees what is published after subscribe returns, never
 * what was published before, even when the subject's ring holds it. */
START_TEST(test_subscribe_starts_now)
{
	char url[96];
	msgbus_sub *early = NULL, *late = NULL, *later = NULL;
	msgbus_bus *bus = open_scheme(_i, url, sizeof(url), NULL);
	struct tu_seqmsg v = { 0, 0 };

	TU_ASSERT_OK(msgbus_publish(bus, "p.x", &v, sizeof(v), 0));
	TU_ASSERT_OK(msgbus_subscribe(bus, "p.x", 0, &early));
	TU_ASSERT_EMPTY(early);
	v.seq = 1;
	TU_ASSERT_OK(msgbus_publish(bus, "p.x", &v, sizeof(v), 0));
	TU_ASSERT_OK(msgbus_subscribe(bus, "p.x", 0, &late));
	TU_ASSERT_OK(msgbus_subscribe(bus, "p.*", 0, &later));
	TU_ASSERT_EMPTY(late);
	TU_ASSERT_EMPTY(later);
	v.seq = 2;
	TU_ASSERT_OK(msgbus_publish(bus, "p.x", &v, sizeof(v), 0));

	TU_RECV_SEQ(early, "p.x", 1);
	TU_RECV_SEQ(early, "p.x", 2);
	TU_ASSERT_EMPTY(early);
	TU_RECV_SEQ(late, "p.x", 2);
	TU_ASSERT_EMPTY(late);
	TU_RECV_SEQ(later, "p.x", 2);
	TU_ASSERT_EMPTY(later);
	close_bus(bus, url);
}
END_TEST

#define ASSERT_STATS(sub, d, dr, bl)                                         \
	do {                                                                 \
		msgbus_sub_stats st_;                                        \
		memset(&st_, 0xff, sizeof(st_));                             \
		TU_ASSERT_OK(msgbus_sub_stats_get((sub), &st_));             \
		ck_assert_msg(st_.delivered == (d) && st_.dropped == (dr) && \
		                      st_.backlog == (bl),                   \
		              "stats delivered %llu dropped %llu backlog "   \
		              "%llu, want %d %d %d",                         \
		              (unsigned long long)st_.delivered,             \
		              (unsigned long long)st_.dropped,               \
		              (unsigned long long)st_.backlog, (d), (dr),    \
		              (bl));                                         \
	} while (0)

/* Counters of an exact and of a wildcard subscription. */
START_TEST(test_stats)
{
	char url[96];
	msgbus_sub *exact = NULL, *wild = NULL, *other = NULL;
	msgbus_bus *bus = open_scheme(_i, url, sizeof(url), NULL);

	TU_ASSERT_OK(msgbus_subscribe(bus, "st.a", 0, &exact));
	TU_ASSERT_OK(msgbus_subscribe(bus, "st.*", 0, &wild));
	TU_ASSERT_OK(msgbus_subscribe(bus, "zz", 0, &other));
	ASSERT_STATS(exact, 0, 0, 0);
	ASSERT_STATS(wild, 0, 0, 0);
	for (uint32_t n = 0; n < 6; n++) {
		struct tu_seqmsg v = { 0, n };
		TU_ASSERT_OK(msgbus_publish(bus, n % 2 ? "st.a" : "st.b", &v,
		                            sizeof(v), 0));
	}
	TU_ASSERT_OK(msgbus_publish(bus, "st.no.match", "x", 1, 0));
	ASSERT_STATS(other, 0, 0, 0);

	ASSERT_STATS(exact, 0, 0, 3);
	TU_RECV_SEQ(exact, "st.a", 1);
	ASSERT_STATS(exact, 1, 0, 2);
	TU_RECV_SEQ(exact, "st.a", 3);
	TU_RECV_SEQ(exact, "st.a", 5);
	ASSERT_STATS(exact, 3, 0, 0);
	TU_ASSERT_EMPTY(exact);
	ASSERT_STATS(exact, 3, 0, 0);

	ASSERT_STATS(wild, 0, 0, 6);
	static const struct tu_expect all[] = {
		{ "st.b", 0 }, { "st.a", 1 }, { "st.b", 2 },
		{ "st.a", 3 }, { "st.b", 4 }, { "st.a", 5 },
	};
	tu_recv_set(wild, "st.*", all, 6);
	ASSERT_STATS(wild, 6, 0, 0);
	close_bus(bus, url);
}
END_TEST

/* After unsubscribe a lossless subscription no longer holds publishers
 * back (ring of 8, 30 more publishes with timeout 0), and unsubscribing
 * with a held message or a backlog is fine. */
START_TEST(test_unsubscribe)
{
	char url[96];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	msgbus_sub *a = NULL, *b = NULL, *c = NULL;
	msgbus_msg *m = NULL;

	o.ring_slots = 8;
	msgbus_bus *bus = open_scheme(_i, url, sizeof(url), &o);
	TU_ASSERT_OK(msgbus_subscribe(bus, "u.x", 0, &a));
	TU_ASSERT_OK(msgbus_subscribe(bus, "u.x", 0, &b));
	TU_ASSERT_OK(msgbus_subscribe(bus, "u.*", 0, &c));
	for (uint32_t n = 0; n < 5; n++) {
		struct tu_seqmsg v = { 0, n };
		TU_ASSERT_OK(msgbus_publish(bus, "u.x", &v, sizeof(v), 0));
	}
	TU_ASSERT_OK(msgbus_recv(c, &m, TU_WAIT_MS)); /* held */
	TU_ASSERT_OK(msgbus_unsubscribe(a));           /* backlog 5 */
	TU_ASSERT_OK(msgbus_unsubscribe(c));           /* holding one */
	for (uint32_t n = 5; n < 35; n++) {
		struct tu_seqmsg v = { 0, n };
		TU_RECV_SEQ(b, "u.x", n - 5);
		TU_ASSERT_OK(msgbus_publish(bus, "u.x", &v, sizeof(v), 0));
	}
	for (uint32_t n = 30; n < 35; n++)
		TU_RECV_SEQ(b, "u.x", n);
	TU_ASSERT_EMPTY(b);
	ASSERT_STATS(b, 35, 0, 0);
	TU_ASSERT_OK(msgbus_unsubscribe(b));
	/* nobody left: publishing still succeeds and never blocks */
	for (uint32_t n = 0; n < 20; n++)
		TU_ASSERT_OK(msgbus_publish(bus, "u.x", "y", 1, 0));
	close_bus(bus, url);
}
END_TEST

/* ---- callbacks --------------------------------------------------------- */

struct cb_state {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_t test_thread;
	uint32_t count;
	uint32_t want;
	uint32_t bad_order;
	uint32_t bad_subject;
	uint32_t on_test_thread;
};

static void collect_cb(const msgbus_msg *m, void *arg)
{
	struct cb_state *s = arg;
	struct tu_seqmsg v;

	pthread_mutex_lock(&s->mu);
	if (pthread_equal(pthread_self(), s->test_thread))
		s->on_test_thread++;
	if (tu_get_seqmsg(m, &v) != 0 || v.seq != s->count)
		s->bad_order++;
	if (strcmp(msgbus_msg_subject(m), "cb.x") != 0)
		s->bad_subject++;
	s->count++;
	if (s->count == s->want)
		pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

START_TEST(test_callback)
{
	char url[96];
	msgbus_sub *sub = NULL;
	struct cb_state st = { .want = tu_valgrind() ? 200 : 2000 };
	uint32_t extra = 50;

	pthread_mutex_init(&st.mu, NULL);
	pthread_cond_init(&st.cv, NULL);
	st.test_thread = pthread_self();
	msgbus_bus *bus = open_scheme(_i, url, sizeof(url), NULL);
	TU_ASSERT_OK(msgbus_subscribe_cb(bus, "cb.*", 0, collect_cb, &st,
	                                 &sub));
	for (uint32_t n = 0; n < st.want; n++) {
		struct tu_seqmsg v = { 0, n };
		TU_ASSERT_OK(msgbus_publish(bus, "cb.x", &v, sizeof(v),
		                            TU_WAIT_MS));
		if (n % 100 == 0) /* not matched */
			TU_ASSERT_OK(msgbus_publish(bus, "cb.x.y", &v,
			                            sizeof(v), 0));
	}

	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 20;
	pthread_mutex_lock(&st.mu);
	while (st.count < st.want)
		if (pthread_cond_timedwait(&st.cv, &st.mu, &dl) != 0)
			break;
	uint32_t got = st.count;
	pthread_mutex_unlock(&st.mu);
	ck_assert_msg(got == st.want, "callback saw %u of %u", got, st.want);

	/* unsubscribe while the callback thread may still be busy */
	for (uint32_t n = st.want; n < st.want + extra; n++) {
		struct tu_seqmsg v = { 0, n };
		TU_ASSERT_OK(msgbus_publish(bus, "cb.x", &v, sizeof(v),
		                            TU_WAIT_MS));
	}
	TU_ASSERT_OK(msgbus_unsubscribe(sub));
	pthread_mutex_lock(&st.mu);
	got = st.count;
	uint32_t bad_order = st.bad_order, bad_subject = st.bad_subject;
	uint32_t on_test_thread = st.on_test_thread;
	pthread_mutex_unlock(&st.mu);
	ck_assert_uint_le(got, st.want + extra);
	ck_assert_uint_eq(bad_order, 0);
	ck_assert_uint_eq(bad_subject, 0);
	ck_assert_uint_eq(on_test_thread, 0);

	close_bus(bus, url);
	/* the callback thread has been joined: nothing runs any more */
	pthread_mutex_lock(&st.mu);
	ck_assert_uint_eq(st.count, got);
	pthread_mutex_unlock(&st.mu);
	pthread_cond_destroy(&st.cv);
	pthread_mutex_destroy(&st.mu);
}
END_TEST

/* ---- loans ------------------------------------------------------------- */

static void recv_bytes(msgbus_sub *sub, const char *subject, size_t len,
                       uint32_t seed)
{
	msgbus_msg *m = NULL;
	TU_ASSERT_OK(msgbus_recv(sub, &m, TU_WAIT_MS));
	ck_assert_str_eq(msgbus_msg_subject(m), subject);
	ck_assert_uint_eq(msgbus_msg_len(m), len);
	if (len > 0)
		ck_assert_int_eq(tu_verify(msgbus_msg_data(m), len, seed), -1);
	msgbus_msg_release(m);
}

START_TEST(test_loan_commit)
{
	char url[96];
	msgbus_sub *sub = NULL;
	msgbus_buf *l = NULL;
	msgbus_bus *bus = open_scheme(_i, url, sizeof(url), NULL);

	TU_ASSERT_OK(msgbus_subscribe(bus, "ln.>", 0, &sub));

	/* whole loan */
	TU_ASSERT_OK(msgbus_loan(bus, 1000, 0, &l));
	ck_assert_ptr_nonnull(l);
	ck_assert_ptr_nonnull(msgbus_loan_data(l));
	tu_fill(msgbus_loan_data(l), 1000, 1);
	TU_ASSERT_OK(msgbus_commit(l, "ln.a", 1000, TU_WAIT_MS));
	recv_bytes(sub, "ln.a", 1000, 1);

	/* commit fewer bytes than loaned */
	TU_ASSERT_OK(msgbus_loan(bus, 4096, 0, &l));
	tu_fill(msgbus_loan_data(l), 4096, 2);
	TU_ASSERT_OK(msgbus_commit(l, "ln.b", 100, TU_WAIT_MS));
	recv_bytes(sub, "ln.b", 100, 2);

	/* a failed commit leaves the loan with the caller, contents intact */
	TU_ASSERT_OK(msgbus_loan(bus, 100, 0, &l));
	tu_fill(msgbus_loan_data(l), 100, 3);
	TU_ASSERT_RC(msgbus_commit(l, "ln.c", 101, TU_WAIT_MS),
	             MSGBUS_EMSGSIZE);
	TU_ASSERT_RC(msgbus_commit(l, "ln.*", 100, TU_WAIT_MS),
	             MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_commit(l, "", 100, TU_WAIT_MS), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_commit(l, NULL, 100, TU_WAIT_MS), MSGBUS_EINVAL);
	TU_ASSERT_EMPTY(sub);
	TU_ASSERT_OK(msgbus_commit(l, "ln.c", 100, TU_WAIT_MS));
	recv_bytes(sub, "ln.c", 100, 3);

	/* the full maximum, and an empty one */
	TU_ASSERT_OK(msgbus_loan(bus, 1u << 20, 0, &l));
	tu_fill(msgbus_loan_data(l), 1u << 20, 4);
	TU_ASSERT_OK(msgbus_commit(l, "ln.max", 1u << 20, TU_WAIT_MS));
	recv_bytes(sub, "ln.max", 1u << 20, 4);
	TU_ASSERT_OK(msgbus_loan(bus, 0, 0, &l));
	TU_ASSERT_OK(msgbus_commit(l, "ln.zero", 0, TU_WAIT_MS));
	recv_bytes(sub, "ln.zero", 0, 0);

	TU_ASSERT_RC(msgbus_loan(NULL, 10, 0, &l), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_loan(bus, 10, 0, NULL), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_commit(NULL, "ln.a", 0, 0), MSGBUS_EINVAL);
	TU_ASSERT_EMPTY(sub);
	close_bus(bus, url);
}
END_TEST

/* Loans come from a pool of large_buffers: abort and release give them
 * back; an exhausted pool gives EAGAIN / ETIMEDOUT. */
START_TEST(test_loan_pool)
{
	char url[96];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	msgbus_sub *sub = NULL;
	msgbus_buf *l1 = NULL, *l2 = NULL, *l3 = NULL;
	static unsigned char big[2000];

	o.large_buffers = 2;
	msgbus_bus *bus = open_scheme(_i, url, sizeof(url), &o);
	TU_ASSERT_OK(msgbus_subscribe(bus, "pool", 0, &sub));

	for (int i = 0; i < 10; i++) {
		TU_ASSERT_OK(msgbus_loan(bus, 500, 0, &l1));
		msgbus_loan_abort(l1);
	}
	TU_ASSERT_OK(msgbus_loan(bus, 500, 0, &l1));
	TU_ASSERT_OK(msgbus_loan(bus, 500, 0, &l2));
	TU_ASSERT_RC(msgbus_loan(bus, 500, 0, &l3), MSGBUS_EAGAIN);
	double t0 = tu_now_ms();
	TU_ASSERT_RC(msgbus_loan(bus, 500, 50, &l3), MSGBUS_ETIMEDOUT);
	double dt = tu_now_ms() - t0;
	ck_assert_msg(dt >= 48.0 && dt < 1000.0, "loan(50) took %.1f ms", dt);
	msgbus_loan_abort(l2);
	TU_ASSERT_OK(msgbus_loan(bus, 500, 0, &l2));
	msgbus_loan_abort(l1);
	msgbus_loan_abort(l2);

	/* committed loans and large publishes come back after release */
	for (uint32_t i = 0; i < 10; i++) {
		TU_ASSERT_OK(msgbus_loan(bus, 800, 0, &l1));
		tu_fill(msgbus_loan_data(l1), 800, i);
		TU_ASSERT_OK(msgbus_commit(l1, "pool", 800, 0));
		tu_fill(big, sizeof(big), 100 + i);
		TU_ASSERT_OK(msgbus_publish(bus, "pool", big, sizeof(big),
		                            0));
		recv_bytes(sub, "pool", 800, i);
		recv_bytes(sub, "pool", sizeof(big), 100 + i);
	}
	close_bus(bus, url);
}
END_TEST

/* A commit into a full inbox fails (EAGAIN/ETIMEDOUT), the caller keeps
 * the loan, and the retry after the subscriber made room delivers it.
 * v2: the subscriber gives room back in batches (a quarter of its inbox
 * at most), so it reads half of the inbox first. */
START_TEST(test_loan_commit_full)
{
	char url[96];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	msgbus_sub *sub = NULL;
	msgbus_buf *l = NULL;

	o.inbox_size = 4096;
	msgbus_bus *bus = open_scheme(_i, url, sizeof(url), &o);
	TU_ASSERT_OK(msgbus_subscribe(bus, "full", 0, &sub));
	int n = tu_fill_ring(bus, "full", 0, 1000);
	ck_assert_msg(n > 8 && n < 1000, "inbox of 4 KiB took %d", n);

	TU_ASSERT_OK(msgbus_loan(bus, 300, 0, &l));
	tu_fill(msgbus_loan_data(l), 300, 77);
	TU_ASSERT_RC(msgbus_commit(l, "full", 300, 0), MSGBUS_EAGAIN);
	TU_ASSERT_RC(msgbus_commit(l, "full", 300, 50), MSGBUS_ETIMEDOUT);
	int half = n / 2;
	for (int i = 0; i < half; i++)
		TU_RECV_SEQ(sub, "full", (uint32_t)i);
	TU_ASSERT_OK(msgbus_commit(l, "full", 300, 0));
	for (int i = half; i < n; i++)
		TU_RECV_SEQ(sub, "full", (uint32_t)i);
	recv_bytes(sub, "full", 300, 77);
	TU_ASSERT_EMPTY(sub);
	close_bus(bus, url);
}
END_TEST

/* ---- concurrent publishers on one handle -------------------------------- */

struct mt_arg {
	msgbus_bus *bus;
	uint32_t id;
	uint32_t n;
	int rc;
	uint32_t failed_at;
};

static void *mt_publisher(void *p)
{
	struct mt_arg *a = p;
	for (uint32_t i = 0; i < a->n; i++) {
		struct tu_seqmsg v = { a->id, i };
		unsigned char buf[300];
		/* mostly inline, every 16th one large */
		size_t len = i % 16 == 15 ? sizeof(buf) : sizeof(v);
		memset(buf, (int)a->id, sizeof(buf));
		memcpy(buf, &v, sizeof(v));
		int rc = msgbus_publish(a->bus, "mt.same", buf, len, 10000);
		if (rc != MSGBUS_OK) {
			a->rc = rc;
			a->failed_at = i;
			return NULL;
		}
	}
	return NULL;
}

START_TEST(test_mt_publishers)
{
	enum { T = 4 };
	char url[96];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	msgbus_sub *sub = NULL;
	pthread_t th[T];
	struct mt_arg args[T];
	uint32_t next[T] = { 0 };
	uint32_t per = tu_valgrind() ? 200 : 2000;

	o.ring_slots = 64; /* small enough that publishers block at times */
	o.crash_bound_ms = 60000; /* no polling hides a lost wake-up */
	msgbus_bus *bus = open_scheme(_i, url, sizeof(url), &o);
	TU_ASSERT_OK(msgbus_subscribe(bus, "mt.*", 0, &sub));
	for (uint32_t t = 0; t < T; t++) {
		args[t] = (struct mt_arg){ bus, t, per, MSGBUS_OK, 0 };
		ck_assert_int_eq(pthread_create(&th[t], NULL, mt_publisher,
		                                &args[t]),
		                 0);
	}
	uint32_t total = 0, bad = 0;
	int rc = MSGBUS_OK;
	char why[160] = "";
	while (total < T * per) {
		msgbus_msg *m = NULL;
		struct tu_seqmsg v;
		rc = msgbus_recv(sub, &m, 10000);
		if (rc != MSGBUS_OK)
			break;
		if (tu_get_seqmsg(m, &v) != 0 || v.pub >= T) {
			if (!bad++)
				snprintf(why, sizeof(why), "malformed at %u",
				         total);
		} else {
			size_t want = v.seq % 16 == 15 ? 300 : 8;
			const unsigned char *d = msgbus_msg_data(m);
			if (v.seq != next[v.pub] && !bad++)
				snprintf(why, sizeof(why),
				         "thread %u: seq %u after %u", v.pub,
				         v.seq, next[v.pub]);
			if (msgbus_msg_len(m) != want && !bad++)
				snprintf(why, sizeof(why),
				         "thread %u seq %u: len %zu", v.pub,
				         v.seq, msgbus_msg_len(m));
			else if (want == 300 && d[299] != v.pub && !bad++)
				snprintf(why, sizeof(why),
				         "thread %u seq %u: bad tail", v.pub,
				         v.seq);
			next[v.pub] = v.seq + 1;
		}
		msgbus_msg_release(m);
		total++;
	}
	for (int t = 0; t < T; t++)
		pthread_join(th[t], NULL);
	for (int t = 0; t < T; t++)
		ck_assert_msg(args[t].rc == MSGBUS_OK,
		              "publisher %d failed at %u: %s (the subscriber "
		              "had %u of %u, then recv said %s)",
		              t, args[t].failed_at, msgbus_strerror(args[t].rc),
		              total, T * per, msgbus_strerror(rc));
	TU_ASSERT_OK(rc);
	ck_assert_msg(bad == 0, "%u bad messages, first: %s", bad, why);
	ck_assert_uint_eq(total, T * per);
	for (int t = 0; t < T; t++)
		ck_assert_uint_eq(next[t], per);
	TU_ASSERT_EMPTY(sub);
	close_bus(bus, url);
}
END_TEST

/* One thread publishes, another receives, on a bus the two share by name
 * (two handles), through a small ring: a live producer/consumer pair that
 * blocks and wakes both sides all the time. Loop index: scheme = i % 2;
 * i / 2 = 0 exact subscription, 1 wildcard (they wait differently). */
struct pc_arg {
	const char *url;
	uint32_t n;
	uint32_t sent;
	int rc;
};

static void *pc_producer(void *p)
{
	struct pc_arg *a = p;
	msgbus_bus *bus = NULL;
	a->rc = msgbus_open(&bus, a->url, NULL);
	if (a->rc != MSGBUS_OK)
		return NULL;
	for (uint32_t i = 0; i < a->n && a->rc == MSGBUS_OK; i++) {
		struct tu_seqmsg v = { 0, i };
		a->rc = msgbus_publish(bus, "pc.x", &v, sizeof(v), 10000);
		if (a->rc == MSGBUS_OK)
			a->sent = i + 1;
	}
	int rc = msgbus_close(bus);
	if (a->rc == MSGBUS_OK)
		a->rc = rc;
	return NULL;
}

START_TEST(test_producer_consumer_threads)
{
	char url[96];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	msgbus_sub *sub = NULL;
	pthread_t th;
	struct pc_arg a;
	const char *pattern = _i / TU_NSCHEMES ? "pc.*" : "pc.x";

	o.ring_slots = 16;
	o.crash_bound_ms = 60000; /* no polling hides a lost wake-up */
	msgbus_bus *bus = open_scheme(_i, url, sizeof(url), &o);
	TU_ASSERT_OK(msgbus_subscribe(bus, pattern, 0, &sub));
	a = (struct pc_arg){ url, tu_valgrind() ? 500 : 20000, 0, MSGBUS_OK };
	ck_assert_int_eq(pthread_create(&th, NULL, pc_producer, &a), 0);
	uint32_t i;
	int rc = MSGBUS_OK;
	struct tu_seqmsg v = { 0, 0 };
	for (i = 0; i < a.n; i++) {
		msgbus_msg *m = NULL;
		rc = msgbus_recv(sub, &m, 10000);
		if (rc != MSGBUS_OK)
			break;
		int ok = tu_get_seqmsg(m, &v) == 0 && v.seq == i;
		msgbus_msg_release(m);
		if (!ok)
			break;
	}
	pthread_join(th, NULL);
	ck_assert_msg(rc == MSGBUS_OK,
	              "%s: recv of message %u: %s (producer: %u sent, %s)",
	              pattern, i, msgbus_strerror(rc), a.sent,
	              msgbus_strerror(a.rc));
	ck_assert_msg(i == a.n, "%s: message %u had seq %u", pattern, i,
	              v.seq);
	TU_ASSERT_OK(a.rc);
	TU_ASSERT_EMPTY(sub);
	close_bus(bus, url);
}
END_TEST

Suite *suite_pubsub(void)
{
	Suite *s = suite_create("pubsub");
	TCase *tc;

	tc = tu_tcase("contents", TU_CASE_TIMEOUT);
	tcase_add_loop_test(tc, test_sizes, 0, NSIZES * TU_NSCHEMES);
	suite_add_tcase(s, tc);

	tc = tu_tcase("routing", TU_CASE_TIMEOUT);
	tcase_add_loop_test(tc, test_patterns, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_wildcard_before_after, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_order_per_subject, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_fanout, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_two_handles, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_subscribe_starts_now, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_stats, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_unsubscribe, 0, TU_NSCHEMES);
	suite_add_tcase(s, tc);

	tc = tu_tcase("callback", TU_CASE_TIMEOUT);
	tcase_add_loop_test(tc, test_callback, 0, TU_NSCHEMES);
	suite_add_tcase(s, tc);

	tc = tu_tcase("loan", TU_CASE_TIMEOUT);
	tcase_add_loop_test(tc, test_loan_commit, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_loan_pool, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_loan_commit_full, 0, TU_NSCHEMES);
	suite_add_tcase(s, tc);

	tc = tu_tcase("threads", TU_CASE_TIMEOUT);
	tcase_add_loop_test(tc, test_mt_publishers, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_producer_consumer_threads, 0,
	                    2 * TU_NSCHEMES);
	suite_add_tcase(s, tc);
	return s;
}
