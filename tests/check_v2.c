/*
 * check_v2.c - the data plane v2 (issue 9): one inbox per subscription,
 * routing by the publisher. Subjects are unlimited, backpressure holds back
 * only the publishers of what a full subscriber matches, a publisher's
 * messages arrive in its order whatever their subjects, messages up to a
 * quarter of an inbox travel inline, and the dead give back their inboxes
 * and buffer references.
 */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "test_util.h"

static void close_bus(msgbus_bus *bus, const char *url)
{
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url);
}

/* Receive one message and check subject and sequence number. */
static void recv_seq(msgbus_sub *sub, const char *subject, uint32_t seq)
{
	TU_RECV_SEQ(sub, subject, seq);
}

/* ---- 1: subjects are unlimited ------------------------------------------- */

/* 1,000,000 distinct subjects over one bus's life, each received by a
 * wildcard subscriber (read as it goes: the subjects, not the backlog, are
 * what is tested). v1: ELIMIT at the 33rd. */
START_TEST(test_million_subjects)
{
	const uint32_t total = tu_valgrind() ? 20000 : 1000000;
	char url[96], subj[48];
	msgbus_sub *sub = NULL;
	msgbus_msg *m = NULL;

	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, NULL);
	TU_ASSERT_OK(msgbus_subscribe(bus, "m.>", 0, &sub));
	uint32_t got = 0;
	for (uint32_t i = 0; i < total; i++) {
		struct tu_seqmsg v = { 0, i };
		snprintf(subj, sizeof(subj), "m.%u.x", i);
		int rc = msgbus_publish(bus, subj, &v, sizeof(v), 0);
		if (rc != MSGBUS_OK)
			ck_abort_msg("publish #%u on a new subject: %s", i, msgbus_strerror(rc));
		if (i % 1000 == 999) {
			while (msgbus_recv(sub, &m, 0) == MSGBUS_OK) {
				struct tu_seqmsg r;
				ck_assert_int_eq(tu_get_seqmsg(m, &r), 0);
				ck_assert_uint_eq(r.seq, got);
				got++;
				msgbus_msg_release(m);
			}
		}
	}
	while (got < total) {
		snprintf(subj, sizeof(subj), "m.%u.x", got);
		recv_seq(sub, subj, got);
		got++;
	}
	TU_ASSERT_EMPTY(sub);
	close_bus(bus, url);
}
END_TEST

/* 10,000 distinct subjects with messages nobody has consumed yet, at the
 * same moment; then every one is received, in publish order. */
START_TEST(test_ten_thousand_pending)
{
	enum { N = 10000 };
	char url[96], subj[48];
	msgbus_sub *sub = NULL;

	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, NULL);
	TU_ASSERT_OK(msgbus_subscribe(bus, "p.*", 0, &sub));
	for (uint32_t i = 0; i < N; i++) {
		struct tu_seqmsg v = { 0, i };
		snprintf(subj, sizeof(subj), "p.s%u", i);
		TU_ASSERT_OK(msgbus_publish(bus, subj, &v, sizeof(v), 0));
	}
	msgbus_sub_stats st;
	TU_ASSERT_OK(msgbus_sub_stats_get(sub, &st));
	ck_assert_uint_eq(st.backlog, N);
	for (uint32_t i = 0; i < N; i++) {
		snprintf(subj, sizeof(subj), "p.s%u", i);
		recv_seq(sub, subj, i);
	}
	TU_ASSERT_EMPTY(sub);
	TU_ASSERT_OK(msgbus_sub_stats_get(sub, &st));
	ck_assert_uint_eq(st.delivered, N);
	ck_assert_uint_eq(st.backlog, 0);
	close_bus(bus, url);
}
END_TEST

/* A subscriber of orders.*.status receives every status of every order,
 * and nothing else. */
START_TEST(test_orders_status)
{
	enum { N = 5000 };
	char url[96], subj[48];
	msgbus_sub *sub = NULL;

	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, NULL);
	TU_ASSERT_OK(msgbus_subscribe(bus, "orders.*.status", 0, &sub));
	for (uint32_t i = 0; i < N; i++) {
		struct tu_seqmsg v = { 0, i };
		snprintf(subj, sizeof(subj), "orders.%u.created", i);
		TU_ASSERT_OK(msgbus_publish(bus, subj, &v, sizeof(v), 0));
		snprintf(subj, sizeof(subj), "orders.%u.status", i);
		TU_ASSERT_OK(msgbus_publish(bus, subj, &v, sizeof(v), 0));
	}
	for (uint32_t i = 0; i < N; i++) {
		snprintf(subj, sizeof(subj), "orders.%u.status", i);
		recv_seq(sub, subj, i);
	}
	TU_ASSERT_EMPTY(sub);
	close_bus(bus, url);
}
END_TEST

/* A publisher's routes follow interest for subjects it has never used:
 * it lists a bus's active subscriptions once per interest generation
 * (route.c), so a subscription made, added to or removed after its last
 * publish is seen by its next publish on a new subject. */
static void pub_seq(msgbus_bus *bus, const char *subject, uint32_t seq)
{
	struct tu_seqmsg v = { 0, seq };
	TU_ASSERT_OK(msgbus_publish(bus, subject, &v, sizeof(v), 0));
}

START_TEST(test_new_subjects_follow_interest)
{
	char url[96];
	msgbus_sub *wide = NULL, *narrow = NULL;

	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *sb = tu_open(url, NULL);
	msgbus_bus *pb = tu_open(url, NULL);
	pub_seq(pb, "late.a", 0); /* nobody yet: routed nowhere */
	TU_ASSERT_OK(msgbus_subscribe(sb, "late.*", 0, &wide));
	pub_seq(pb, "late.b", 1);
	recv_seq(wide, "late.b", 1);
	TU_ASSERT_OK(msgbus_subscribe(sb, "late.c", 0, &narrow));
	pub_seq(pb, "late.c", 2);
	pub_seq(pb, "late.d", 3);
	recv_seq(wide, "late.c", 2);
	recv_seq(narrow, "late.c", 2);
	recv_seq(wide, "late.d", 3);
	TU_ASSERT_OK(msgbus_unsubscribe(wide));
	pub_seq(pb, "late.e", 4);
	pub_seq(pb, "late.c", 5);
	recv_seq(narrow, "late.c", 5);
	TU_ASSERT_EMPTY(narrow);
	TU_ASSERT_OK(msgbus_close(pb));
	close_bus(sb, url);
}
END_TEST

/* Subscriptions come and go (slots freed and taken again with other
 * patterns) while a publisher recomputes its routes: every message reaches
 * the steady subscriber, in order, and the publisher's racy pattern copy
 * stays clean under ThreadSanitizer (it was a plain memcpy). */
struct churn {
	msgbus_bus *bus;
	_Atomic int stop;
	int rc;
};

static void *churn_main(void *p)
{
	struct churn *c = p;
	char pat[32];
	for (unsigned k = 0; !atomic_load(&c->stop); k++) {
		msgbus_sub *s = NULL;
		snprintf(pat, sizeof(pat), "churn.%u.%s", k % 5, k % 2 ? "*" : "x");
		int rc = msgbus_subscribe(c->bus, pat, MSGBUS_SUB_LOSSY, &s);
		if (rc == MSGBUS_OK)
			rc = msgbus_unsubscribe(s);
		if (rc != MSGBUS_OK) {
			c->rc = rc;
			break;
		}
	}
	return NULL;
}

START_TEST(test_churn_while_routing)
{
	const uint32_t n = tu_valgrind() ? 500 : 20000;
	char url[96], subj[32];
	msgbus_sub *sub = NULL;
	struct churn c = { NULL, 0, 0 };
	pthread_t th;

	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	c.bus = tu_open(url, NULL);
	TU_ASSERT_OK(msgbus_subscribe(c.bus, "churn.>", 0, &sub));
	ck_assert_int_eq(pthread_create(&th, NULL, churn_main, &c), 0);
	for (uint32_t i = 0; i < n; i++) {
		struct tu_seqmsg v = { 0, i };
		snprintf(subj, sizeof(subj), "churn.%u.x", i % 5);
		TU_ASSERT_OK(msgbus_publish(c.bus, subj, &v, sizeof(v), TU_WAIT_MS));
		recv_seq(sub, subj, i);
	}
	atomic_store(&c.stop, 1);
	pthread_join(th, NULL);
	TU_ASSERT_OK(c.rc);
	TU_ASSERT_EMPTY(sub);
	close_bus(c.bus, url);
}
END_TEST

/* ---- 2: exact backpressure ------------------------------------------------ */

/* A lossless a.x subscriber stops reading: a.x publishing gets EAGAIN, and
 * ETIMEDOUT after its timeout; b.y publishing goes on to its own
 * subscriber at once, message after message. v1: b.y got its own ring too,
 * but a wildcard or shared subscriber held both. */
START_TEST(test_exact_backpressure)
{
	enum { B_TOTAL = 20000 };
	char url[96];
	msgbus_sub *ax = NULL, *by = NULL, *all_b = NULL;
	msgbus_options o = MSGBUS_OPTIONS_INIT;

	o.inbox_size = 64 * 1024;
	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, &o);
	TU_ASSERT_OK(msgbus_subscribe(bus, "a.x", 0, &ax));
	TU_ASSERT_OK(msgbus_subscribe(bus, "b.y", 0, &by));
	TU_ASSERT_OK(msgbus_subscribe(bus, "b.*", 0, &all_b));
	int n = tu_fill_ring(bus, "a.x", 0, 100000);
	ck_assert_msg(n > 100 && n < 100000, "a.x took %d", n);
	struct tu_seqmsg v = { 0, (uint32_t)n };
	TU_ASSERT_RC(msgbus_publish(bus, "a.x", &v, sizeof(v), 0), MSGBUS_EAGAIN);
	double t0 = tu_now_ms();
	TU_ASSERT_RC(msgbus_publish(bus, "a.x", &v, sizeof(v), 50), MSGBUS_ETIMEDOUT);
	double dt = tu_now_ms() - t0;
	ck_assert_msg(dt >= 49.0 && dt < 2000.0, "publish(a.x, 50) took %.1f ms", dt);

	/* b.y: many inboxes' worth, never held back */
	for (uint32_t i = 0; i < B_TOTAL; i++) {
		struct tu_seqmsg w = { 0, i };
		TU_ASSERT_OK(msgbus_publish(bus, "b.y", &w, sizeof(w), 0));
		recv_seq(by, "b.y", i);
		recv_seq(all_b, "b.y", i);
	}
	TU_ASSERT_RC(msgbus_publish(bus, "a.x", &v, sizeof(v), 0), MSGBUS_EAGAIN);
	/* a.x lost nothing and comes back once read */
	for (int i = 0; i < n; i++)
		recv_seq(ax, "a.x", (uint32_t)i);
	TU_ASSERT_OK(msgbus_publish(bus, "a.x", &v, sizeof(v), 0));
	recv_seq(ax, "a.x", (uint32_t)n);
	close_bus(bus, url);
}
END_TEST

/* A subscriber wakes only for what it matches: blocked in msgbus_recv(-1)
 * on a.x while 200,000 messages go to a b.y subscriber, it uses next to no
 * CPU (woken for each, it would use about a second), then gets its a.x. */
struct blocked_recv {
	msgbus_sub *sub;
	int rc;
	double cpu_ms;
	uint32_t seq;
};

static void *blocked_recv_main(void *p)
{
	struct blocked_recv *br = p;
	msgbus_msg *m = NULL;
	double c0 = tu_thread_cpu_ms();
	br->rc = msgbus_recv(br->sub, &m, -1);
	br->cpu_ms = tu_thread_cpu_ms() - c0;
	if (br->rc == MSGBUS_OK) {
		struct tu_seqmsg r;
		br->rc = tu_get_seqmsg(m, &r) ? MSGBUS_EPROTO : MSGBUS_OK;
		br->seq = r.seq;
		msgbus_msg_release(m);
	}
	return NULL;
}

START_TEST(test_wakes_only_for_matches)
{
	const uint32_t n = tu_valgrind() ? 5000 : 200000;
	char url[96];
	msgbus_sub *ax = NULL, *by = NULL;
	msgbus_msg *m = NULL;
	pthread_t th;

	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, NULL);
	TU_ASSERT_OK(msgbus_subscribe(bus, "a.x", 0, &ax));
	TU_ASSERT_OK(msgbus_subscribe(bus, "b.y", 0, &by));
	struct blocked_recv br = { ax, -1, 0, 0 };
	ck_assert_int_eq(pthread_create(&th, NULL, blocked_recv_main, &br), 0);
	for (uint32_t i = 0; i < n; i++) {
		struct tu_seqmsg v = { 0, i };
		TU_ASSERT_OK(msgbus_publish(bus, "b.y", &v, sizeof(v), -1));
		if (i % 1000 == 999)
			while (msgbus_recv(by, &m, 0) == MSGBUS_OK)
				msgbus_msg_release(m);
	}
	struct tu_seqmsg v = { 0, 7 };
	TU_ASSERT_OK(msgbus_publish(bus, "a.x", &v, sizeof(v), -1));
	ck_assert_int_eq(pthread_join(th, NULL), 0);
	TU_ASSERT_OK(br.rc);
	ck_assert_uint_eq(br.seq, 7);
	printf("check_v2: a.x receiver used %.1f ms of CPU over %u b.y messages\n", br.cpu_ms, n);
	ck_assert_msg(br.cpu_ms < 100.0, "a.x receiver used %.1f ms of CPU over %u b.y messages",
	              br.cpu_ms, n);
	while (msgbus_recv(by, &m, 0) == MSGBUS_OK)
		msgbus_msg_release(m);
	close_bus(bus, url);
}
END_TEST

/* No clock read unless a wait begins: publishing with room and receiving
 * what is there read no clock, whatever the timeout; a receive that waits
 * does (which shows the count works). Before, a positive timeout cost a
 * clock read per msgbus_publish and per msgbus_recv. */
START_TEST(test_no_clock_without_wait)
{
	static const int timeouts[3] = { -1, 0, 1000 };
	char url[96];
	msgbus_sub *sub = NULL;
	msgbus_msg *m = NULL;

	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, NULL);
	TU_ASSERT_OK(msgbus_subscribe(bus, "c.>", 0, &sub));
	unsigned long reads0 = tu_clock_reads;
	uint32_t got = 0;
	for (uint32_t i = 0; i < 10000; i++) {
		struct tu_seqmsg v = { 0, i };
		TU_ASSERT_OK(msgbus_publish(bus, i % 2 ? "c.x" : "c.y", &v, sizeof(v),
		                            timeouts[i % 3]));
		if (i % 100 == 99) {
			for (uint32_t k = 0; k < 100; k++) {
				TU_ASSERT_OK(msgbus_recv(sub, &m, timeouts[k % 3]));
				got++;
				msgbus_msg_release(m);
			}
		}
	}
	ck_assert_uint_eq(got, 10000);
	ck_assert_msg(tu_clock_reads == reads0, "%lu clock reads without a wait",
	              tu_clock_reads - reads0);
	TU_ASSERT_RC(msgbus_recv(sub, &m, 5), MSGBUS_ETIMEDOUT);
	ck_assert_uint_gt(tu_clock_reads, reads0);
	close_bus(bus, url);
}
END_TEST

/* Nothing repeated for the subject used last: publishing one subject over
 * and over validates and hashes it once (route.c lookup keeps the last);
 * alternating two subjects does both every time, which shows the counts
 * work. Messages are received as they go, each in publish order. */
static void publish_counted(msgbus_bus *bus, msgbus_sub *sub, const char *const subj[2],
                            uint32_t n, unsigned long *checks, unsigned long *hashes)
{
	msgbus_msg *m = NULL;
	unsigned long c0 = tu_subject_checks, h0 = tu_hashes;
	for (uint32_t i = 0; i < n; i++) {
		struct tu_seqmsg v = { 0, i };
		TU_ASSERT_OK(msgbus_publish(bus, subj[i % 2], &v, sizeof(v), -1));
		if (i % 100 == 99 || i == n - 1) {
			*checks += tu_subject_checks - c0;
			*hashes += tu_hashes - h0;
			for (uint32_t k = i - i % 100; k <= i; k++) {
				TU_ASSERT_OK(msgbus_recv(sub, &m, 0));
				ck_assert_str_eq(msgbus_msg_subject(m), subj[k % 2]);
				struct tu_seqmsg got;
				ck_assert_int_eq(tu_get_seqmsg(m, &got), 0);
				ck_assert_uint_eq(got.seq, k);
				msgbus_msg_release(m);
			}
			c0 = tu_subject_checks;
			h0 = tu_hashes;
		}
	}
}

START_TEST(test_last_subject_not_repeated)
{
	enum { N = 1000 };
	static const char *const same[2] = { "e.same", "e.same" };
	static const char *const two[2] = { "e.one", "e.two" };
	char url[96];
	msgbus_sub *sub = NULL;
	unsigned long checks = 0, hashes = 0;

	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, NULL);
	TU_ASSERT_OK(msgbus_subscribe(bus, "e.>", 0, &sub));
	publish_counted(bus, sub, same, N, &checks, &hashes);
	ck_assert_msg(checks == 1 && hashes == 1,
	              "one subject %u times: %lu checks, %lu hashes (want 1 and 1)", N, checks,
	              hashes);
	checks = hashes = 0;
	publish_counted(bus, sub, two, N, &checks, &hashes);
	ck_assert_msg(checks == N && hashes == N,
	              "two subjects alternating %u times: %lu checks, %lu hashes (want %u)", N,
	              checks, hashes, N);
	close_bus(bus, url);
}
END_TEST

/* ---- 3: total per-publisher order ------------------------------------------ */

/* One thread publishing alternately on a.1 and b.2: a > subscriber sees
 * exactly the publish order (v1 kept order per subject only). */
START_TEST(test_publisher_order)
{
	enum { N = 20000 };
	char url[96];
	msgbus_sub *sub = NULL;

	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *pub = tu_open(url, NULL);
	msgbus_bus *rd = tu_open(url, NULL);
	TU_ASSERT_OK(msgbus_subscribe(rd, ">", 0, &sub));
	for (uint32_t i = 0; i < N; i++) {
		struct tu_seqmsg v = { 0, i };
		TU_ASSERT_OK(msgbus_publish(pub, i % 2 ? "b.2" : "a.1", &v, sizeof(v), -1));
		if (i % 1000 == 999)
			for (uint32_t k = i - 999; k <= i; k++)
				recv_seq(sub, k % 2 ? "b.2" : "a.1", k);
	}
	TU_ASSERT_EMPTY(sub);
	TU_ASSERT_OK(msgbus_close(rd));
	close_bus(pub, url);
}
END_TEST

/* ---- 4: any size in the ring ------------------------------------------------ */

/* With the only large buffer loaned out, a 60 KiB message still publishes
 * at once (it goes inline), a 300 KiB one cannot (it needs the buffer). */
START_TEST(test_inline_60k)
{
	static char big[300 * 1024];
	char url[96];
	msgbus_sub *sub = NULL;
	msgbus_buf *loan = NULL;
	msgbus_msg *m = NULL;
	msgbus_options o = MSGBUS_OPTIONS_INIT;

	o.large_buffers = 1;
	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, &o);
	TU_ASSERT_OK(msgbus_subscribe(bus, "big", 0, &sub));
	TU_ASSERT_OK(msgbus_loan(bus, 16, 0, &loan));
	tu_fill(big, 60 * 1024, 7);
	TU_ASSERT_OK(msgbus_publish(bus, "big", big, 60 * 1024, 0));
	TU_ASSERT_RC(msgbus_publish(bus, "big", big, sizeof(big), 0), MSGBUS_EAGAIN);
	TU_ASSERT_OK(msgbus_recv(sub, &m, TU_WAIT_MS));
	ck_assert_uint_eq(msgbus_msg_len(m), 60 * 1024);
	ck_assert_int_eq(tu_verify(msgbus_msg_data(m), 60 * 1024, 7), -1);
	msgbus_msg_release(m);
	msgbus_loan_abort(loan);
	/* the buffer back: the large one goes through it, once for two readers */
	msgbus_sub *sub2 = NULL;
	TU_ASSERT_OK(msgbus_subscribe(bus, "big", 0, &sub2));
	tu_fill(big, sizeof(big), 9);
	TU_ASSERT_OK(msgbus_publish(bus, "big", big, sizeof(big), 0));
	TU_ASSERT_RC(msgbus_loan(bus, 16, 0, &loan), MSGBUS_EAGAIN); /* in use */
	msgbus_sub *both[2] = { sub, sub2 };
	for (int k = 0; k < 2; k++) {
		TU_ASSERT_OK(msgbus_recv(both[k], &m, TU_WAIT_MS));
		ck_assert_uint_eq(msgbus_msg_len(m), sizeof(big));
		ck_assert_int_eq(tu_verify(msgbus_msg_data(m), sizeof(big), 9), -1);
		msgbus_msg_release(m);
	}
	/* the last reader's release freed it */
	TU_ASSERT_OK(msgbus_loan(bus, 16, 0, &loan));
	msgbus_loan_abort(loan);
	close_bus(bus, url);
}
END_TEST

/* ---- 5: the dead give back ------------------------------------------------- */

struct dead_child {
	const char *url;
	struct tu_pipe ready;
};

static int dead_sub_main(void *p)
{
	struct dead_child *c = p;
	msgbus_bus *bus = NULL;
	msgbus_sub *sub = NULL;
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	o.large_buffers = 2;
	o.crash_bound_ms = 400;
	int rc = msgbus_open(&bus, c->url, &o);
	if (rc == MSGBUS_OK)
		rc = msgbus_subscribe(bus, "d.x", 0, &sub);
	if (rc != MSGBUS_OK)
		return TU_CHILD_FAIL(10, "open/subscribe: %s", msgbus_strerror(rc));
	tu_pipe_put(&c->ready, 1);
	for (;;)
		pause();
}

/* A subscriber dies with two large messages unread, which hold both large
 * buffers, and a full inbox: the next large publish gets a buffer within
 * the crash bound (the reaper drops the dead reader's references), and a
 * small publish is no longer held back by its inbox. */
START_TEST(test_dead_subscriber_reclaimed)
{
	static char big[300 * 1024];
	char url[96];
	struct dead_child c;
	int x;
	msgbus_options o = MSGBUS_OPTIONS_INIT;

	o.large_buffers = 2;
	o.crash_bound_ms = 400;
	tu_unique_url(url, sizeof(url), "shm");
	msgbus_bus *bus = tu_open(url, &o);
	c.url = url;
	tu_pipe_init(&c.ready);
	pid_t pid = tu_spawn(dead_sub_main, &c);
	ck_assert_msg(tu_pipe_get(&c.ready, TU_WAIT_MS, &x) == 0, "child did not subscribe");
	tu_fill(big, sizeof(big), 3);
	TU_ASSERT_OK(msgbus_publish(bus, "d.x", big, sizeof(big), 0));
	TU_ASSERT_OK(msgbus_publish(bus, "d.x", big, sizeof(big), 0));
	TU_ASSERT_RC(msgbus_publish(bus, "d.x", big, sizeof(big), 0), MSGBUS_EAGAIN);
	int n = tu_fill_ring(bus, "d.x", 0, 1000000);
	ck_assert_msg(n > 1000 && n < 1000000, "inbox took %d", n);

	tu_kill_child(pid);
	double t0 = tu_now_ms();
	TU_ASSERT_OK(msgbus_publish(bus, "d.x", big, sizeof(big), 3000));
	TU_ASSERT_OK(msgbus_publish(bus, "d.x", big, sizeof(big), 3000));
	struct tu_seqmsg v = { 0, 0 };
	TU_ASSERT_OK(msgbus_publish(bus, "d.x", &v, sizeof(v), 3000));
	double dt = tu_now_ms() - t0;
	ck_assert_msg(dt < 2000.0, "reclaimed %.0f ms after the kill (bound 400 ms)", dt);
	/* both buffers are free again: nobody subscribes now */
	msgbus_buf *l1 = NULL, *l2 = NULL;
	TU_ASSERT_OK(msgbus_loan(bus, 16, 0, &l1));
	TU_ASSERT_OK(msgbus_loan(bus, 16, 0, &l2));
	msgbus_loan_abort(l1);
	msgbus_loan_abort(l2);
	tu_pipe_close(&c.ready);
	close_bus(bus, url);
}
END_TEST

struct mid_child {
	const char *url;
	struct tu_pipe ready;
};

static int mid_reserve_main(void *p)
{
	struct mid_child *c = p;
	msgbus_bus *bus = NULL;
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	o.crash_bound_ms = 400;
	setenv("MSGBUS_CRASH_AT", "after_claim", 1);
	int rc = msgbus_open(&bus, c->url, &o);
	if (rc != MSGBUS_OK)
		return TU_CHILD_FAIL(10, "open: %s", msgbus_strerror(rc));
	tu_pipe_put(&c->ready, 1);
	struct tu_seqmsg v = { 1, 99 };
	rc = msgbus_publish(bus, "r.x", &v, sizeof(v), 1000);
	return TU_CHILD_FAIL(11, "after_claim not reached: %s", msgbus_strerror(rc));
}

/* A publisher killed holding reservations in two inboxes (all or
 * nothing, before it commits): both readers get the messages before and
 * after it within the crash bound, and never its half-written one. */
START_TEST(test_publisher_killed_mid_reserve)
{
	char url[96];
	struct mid_child c;
	msgbus_sub *s1 = NULL, *s2 = NULL;
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	int x, st;

	o.crash_bound_ms = 400;
	tu_unique_url(url, sizeof(url), "shm");
	msgbus_bus *bus = tu_open(url, &o);
	TU_ASSERT_OK(msgbus_subscribe(bus, "r.x", 0, &s1));
	TU_ASSERT_OK(msgbus_subscribe(bus, "r.*", 0, &s2));
	struct tu_seqmsg v = { 0, 0 };
	TU_ASSERT_OK(msgbus_publish(bus, "r.x", &v, sizeof(v), 0));
	c.url = url;
	tu_pipe_init(&c.ready);
	pid_t pid = tu_spawn(mid_reserve_main, &c);
	ck_assert_int_eq(tu_pipe_get(&c.ready, TU_WAIT_MS, &x), 0);
	ck_assert_int_eq(tu_wait_child(pid, TU_WAIT_MS, &st), 0);
	ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
	              "child did not die at its crash point (status %d)", st);
	v.seq = 1;
	double t0 = tu_now_ms();
	TU_ASSERT_OK(msgbus_publish(bus, "r.x", &v, sizeof(v), 3000));
	recv_seq(s1, "r.x", 0);
	recv_seq(s2, "r.x", 0);
	recv_seq(s1, "r.x", 1);
	recv_seq(s2, "r.x", 1);
	double dt = tu_now_ms() - t0;
	ck_assert_msg(dt < 2000.0, "readers moved on %.0f ms after (bound 400 ms)", dt);
	TU_ASSERT_EMPTY(s1);
	TU_ASSERT_EMPTY(s2);
	tu_pipe_close(&c.ready);
	close_bus(bus, url);
}
END_TEST

/* Lossy subscriptions count every drop: delivered + dropped == published. */
START_TEST(test_lossy_exact_drops)
{
	enum { N = 50000 };
	char url[96];
	msgbus_sub *sub = NULL;
	msgbus_msg *m = NULL;
	msgbus_options o = MSGBUS_OPTIONS_INIT;

	o.inbox_size = 4096;
	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, &o);
	TU_ASSERT_OK(msgbus_subscribe(bus, "l.>", MSGBUS_SUB_LOSSY, &sub));
	uint64_t got = 0;
	for (uint32_t i = 0; i < N; i++) {
		struct tu_seqmsg v = { 0, i };
		TU_ASSERT_OK(msgbus_publish(bus, i % 3 ? "l.a" : "l.b", &v, sizeof(v), 0));
		if (i % 97 == 0 && msgbus_recv(sub, &m, 0) == MSGBUS_OK) {
			got++;
			msgbus_msg_release(m);
		}
	}
	while (msgbus_recv(sub, &m, 0) == MSGBUS_OK) {
		got++;
		msgbus_msg_release(m);
	}
	msgbus_sub_stats st;
	TU_ASSERT_OK(msgbus_sub_stats_get(sub, &st));
	ck_assert_uint_eq(st.delivered, got);
	ck_assert_msg(st.dropped > 0 && st.delivered + st.dropped == N,
	              "delivered %llu + dropped %llu != %d", (unsigned long long)st.delivered,
	              (unsigned long long)st.dropped, N);
	close_bus(bus, url);
}
END_TEST

/* ---- memory grows with use (issue 9 item 5) -------------------------- */

/* A /proc/self/status field in KiB ("RssAnon:"), or -1. */
static long status_kib(const char *key)
{
	char line[256];
	long v = -1;
	FILE *f = fopen("/proc/self/status", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, key, strlen(key)) == 0) {
			v = strtol(line + strlen(key), NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

/* A default shm bus costs at most 1 MiB when it is opened: what opening
 * added to the creator's private resident memory (anonymous and file
 * pages; its shared pages are the segment's) plus the segment's blocks in
 * /dev/shm. Sanitizers and valgrind add their own memory: skipped there. */
START_TEST(test_open_footprint)
{
	char url[96], path[128];
	struct stat stt;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	return;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
	return;
#endif
#endif
	if (tu_valgrind())
		return;
	tu_unique_url(url, sizeof(url), "shm");
	long anon0 = status_kib("RssAnon:"), file0 = status_kib("RssFile:");
	ck_assert(anon0 >= 0 && file0 >= 0);
	msgbus_bus *bus = tu_open(url, NULL);
	long anon1 = status_kib("RssAnon:"), file1 = status_kib("RssFile:");
	ck_assert_int_eq(stat(tu_shm_path(path, sizeof(path), url), &stt), 0);
	long shm_kib = (long)stt.st_blocks / 2; /* 512-byte blocks */
	long total = (anon1 - anon0) + (file1 - file0) + shm_kib;
	fprintf(stderr,
	        "check_v2: default bus at open: %ld KiB anonymous + %ld KiB file pages "
	        "+ %ld KiB in /dev/shm\n",
	        anon1 - anon0, file1 - file0, shm_kib);
	ck_assert_msg(total <= 1024, "a default bus costs %ld KiB at open (> 1 MiB)", total);
	close_bus(bus, url);
}
END_TEST

Suite *suite_v2(void)
{
	Suite *s = suite_create("v2");
	TCase *tc;

	tc = tu_tcase("subjects", 4 * TU_CASE_TIMEOUT);
	tcase_add_loop_test(tc, test_million_subjects, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_ten_thousand_pending, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_orders_status, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_new_subjects_follow_interest, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_churn_while_routing, 0, TU_NSCHEMES);
	suite_add_tcase(s, tc);

	tc = tu_tcase("flow", TU_CASE_TIMEOUT);
	tcase_add_loop_test(tc, test_exact_backpressure, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_wakes_only_for_matches, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_no_clock_without_wait, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_last_subject_not_repeated, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_publisher_order, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_lossy_exact_drops, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_inline_60k, 0, TU_NSCHEMES);
	tcase_add_test(tc, test_open_footprint);
	suite_add_tcase(s, tc);

	if (!tu_valgrind()) {
		tc = tu_tcase("dead", TU_CASE_TIMEOUT);
		tcase_add_test(tc, test_dead_subscriber_reclaimed);
		tcase_add_test(tc, test_publisher_killed_mid_reserve);
		suite_add_tcase(s, tc);
	}
	return s;
}
