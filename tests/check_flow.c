/*
 * check_flow.c - flow control: lossless backpressure (EAGAIN, ETIMEDOUT,
 * nothing lost), lossy subscribers (never block, count drops), wake-ups
 * of blocked publishers and receivers, and the CPU a blocked call uses.
 * Loop index 0 = inproc://, 1 = shm://.
 */
#include <pthread.h>

#include "test_util.h"

/* A bus with a small inbox (v2: "slots" names the smallest inbox, 4 KiB,
 * which holds about 80 of the tests' 8-byte messages). Nobody dies here, so the crash bound is long:
 * the library's periodic liveness checks (every crash_bound_ms / 4 or so)
 * then cannot stand in for a missing wake-up, and the wake-up latency
 * bounds below really measure wake-ups. */
static msgbus_bus *open_ring(int i, char *url, size_t size, uint32_t slots)
{
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	(void)slots;
	o.inbox_size = 4096;
	o.crash_bound_ms = 60000;
	tu_unique_url(url, size, tu_scheme(i));
	return tu_open(url, &o);
}

static void close_bus(msgbus_bus *bus, const char *url)
{
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url);
}

#define RING_FILL 1000 /* more than a 4 KiB inbox holds */
#define ASSERT_RING_FULL(n, slots)                                          \
	ck_assert_msg((n) > (slots) && (n) < RING_FILL,                     \
	              "ring of %d slots took %d messages before EAGAIN",    \
	              (int)(slots), (int)(n))

/* ---- lossless ---------------------------------------------------------- */

START_TEST(test_backpressure)
{
	enum { TOTAL = 100 };
	char url[96];
	msgbus_sub *sub = NULL;
	msgbus_bus *bus = open_ring(_i, url, sizeof(url), 8);

	TU_ASSERT_OK(msgbus_subscribe(bus, "f.x", 0, &sub));
	int n = tu_fill_ring(bus, "f.x", 0, RING_FILL);
	ASSERT_RING_FULL(n, 8);

	struct tu_seqmsg v = { 0, (uint32_t)n };
	TU_ASSERT_RC(msgbus_publish(bus, "f.x", &v, sizeof(v), 0),
	             MSGBUS_EAGAIN);
	double t0 = tu_now_ms();
	TU_ASSERT_RC(msgbus_publish(bus, "f.x", &v, sizeof(v), 100),
	             MSGBUS_ETIMEDOUT);
	double dt = tu_now_ms() - t0;
	ck_assert_msg(dt >= 98.0 && dt < 1000.0,
	              "publish(timeout 100) took %.1f ms", dt);
	/* a full ring holds back its own subject only */
	TU_ASSERT_OK(msgbus_publish(bus, "f.other", &v, sizeof(v), 0));

	/* each receive makes room for one more publish (two at a wrap) */
	uint32_t next_pub = (uint32_t)n, next_recv = 0;
	while (next_pub < TOTAL) {
		v.seq = next_pub;
		int rc = msgbus_publish(bus, "f.x", &v, sizeof(v), 0);
		if (rc == MSGBUS_OK) {
			next_pub++;
			continue;
		}
		TU_ASSERT_RC(rc, MSGBUS_EAGAIN);
		/* One less where a record starts a new lap: it never wraps,
		 * and the word after it must be free (inbox.c). */
		ck_assert_msg(next_pub - next_recv >= (uint32_t)n - 1,
		              "EAGAIN with only %u queued",
		              next_pub - next_recv);
		TU_RECV_SEQ(sub, "f.x", next_recv);
		next_recv++;
	}
	while (next_recv < TOTAL) {
		TU_RECV_SEQ(sub, "f.x", next_recv);
		next_recv++;
	}
	TU_ASSERT_EMPTY(sub);
	msgbus_sub_stats st;
	TU_ASSERT_OK(msgbus_sub_stats_get(sub, &st));
	ck_assert_uint_eq(st.delivered, TOTAL);
	ck_assert_uint_eq(st.dropped, 0);
	ck_assert_uint_eq(st.backlog, 0);
	close_bus(bus, url);
}
END_TEST

/* ---- lossy ------------------------------------------------------------- */

/* v2: a full lossy inbox drops the newest messages (v1 overwrote the
 * oldest): what is received is a prefix, what is not is counted. */
START_TEST(test_lossy)
{
	enum { TOTAL = 300 };
	char url[96];
	msgbus_sub *sub = NULL;
	msgbus_msg *m = NULL;
	msgbus_bus *bus = open_ring(_i, url, sizeof(url), 8);

	TU_ASSERT_OK(msgbus_subscribe(bus, "l.x", MSGBUS_SUB_LOSSY, &sub));

	/* within a ring nothing is lost */
	for (uint32_t s = 0; s < 4; s++) {
		struct tu_seqmsg v = { 0, s };
		TU_ASSERT_OK(msgbus_publish(bus, "l.x", &v, sizeof(v), 0));
	}
	for (uint32_t s = 0; s < 4; s++)
		TU_RECV_SEQ(sub, "l.x", s);

	/* far more than a ring: the publisher never waits */
	double t0 = tu_now_ms();
	for (uint32_t s = 4; s < TOTAL; s++) {
		struct tu_seqmsg v = { 0, s };
		TU_ASSERT_OK(msgbus_publish(bus, "l.x", &v, sizeof(v), 0));
	}
	double dt = tu_now_ms() - t0;
	ck_assert_msg(dt < 2000.0, "296 lossy publishes took %.1f ms", dt);

	uint32_t received = 4, last = 3;
	int rc;
	while ((rc = msgbus_recv(sub, &m, 0)) == MSGBUS_OK) {
		struct tu_seqmsg v;
		ck_assert_int_eq(tu_get_seqmsg(m, &v), 0);
		ck_assert_msg(v.seq == last + 1, "seq %u after %u", v.seq, last);
		last = v.seq;
		received++;
		msgbus_msg_release(m);
	}
	TU_ASSERT_RC(rc, MSGBUS_EAGAIN);
	ck_assert_msg(received > 4 + 8 && received < TOTAL,
	              "received %u: at least one and at most an inbox after "
	              "the burst", received);

	msgbus_sub_stats st;
	TU_ASSERT_OK(msgbus_sub_stats_get(sub, &st));
	ck_assert_msg(st.dropped + received == TOTAL,
	              "dropped %llu + received %u != %d",
	              (unsigned long long)st.dropped, received, TOTAL);
	ck_assert_uint_eq(st.delivered, received);
	ck_assert_uint_eq(st.backlog, 0);

	/* after the drops it keeps up again */
	struct tu_seqmsg v = { 0, TOTAL };
	TU_ASSERT_OK(msgbus_publish(bus, "l.x", &v, sizeof(v), 0));
	TU_RECV_SEQ(sub, "l.x", TOTAL);
	TU_ASSERT_EMPTY(sub);
	close_bus(bus, url);
}
END_TEST

/* A lossy subscriber next to a lossless one: the lossless one alone
 * decides when the ring is full, the lossy one reads what it can. */
START_TEST(test_lossy_beside_lossless)
{
	char url[96];
	msgbus_sub *tight = NULL, *loose = NULL;
	msgbus_bus *bus = open_ring(_i, url, sizeof(url), 8);

	TU_ASSERT_OK(msgbus_subscribe(bus, "m.x", 0, &tight));
	TU_ASSERT_OK(msgbus_subscribe(bus, "m.*", MSGBUS_SUB_LOSSY, &loose));
	int n = tu_fill_ring(bus, "m.x", 0, RING_FILL);
	ASSERT_RING_FULL(n, 8);
	for (int i = 0; i < n; i++)
		TU_RECV_SEQ(loose, "m.x", (uint32_t)i);
	TU_ASSERT_EMPTY(loose);
	/* the lossy reader having read everything does not free the ring */
	struct tu_seqmsg v = { 0, (uint32_t)n };
	TU_ASSERT_RC(msgbus_publish(bus, "m.x", &v, sizeof(v), 0),
	             MSGBUS_EAGAIN);
	for (int i = 0; i < n; i++)
		TU_RECV_SEQ(tight, "m.x", (uint32_t)i);
	TU_ASSERT_OK(msgbus_publish(bus, "m.x", &v, sizeof(v), 0));
	TU_RECV_SEQ(tight, "m.x", (uint32_t)n);
	TU_RECV_SEQ(loose, "m.x", (uint32_t)n);
	msgbus_sub_stats st;
	TU_ASSERT_OK(msgbus_sub_stats_get(loose, &st));
	ck_assert_uint_eq(st.dropped, 0);
	close_bus(bus, url);
}
END_TEST

/* ---- wake-ups ---------------------------------------------------------- */

struct blocked_pub {
	msgbus_bus *bus;
	uint32_t seq;
	struct tu_pipe started, done;
};

static void *blocked_publisher(void *p)
{
	struct blocked_pub *a = p;
	struct tu_seqmsg v = { 0, a->seq };
	tu_pipe_put(&a->started, 1);
	int rc = msgbus_publish(a->bus, "w.x", &v, sizeof(v), 3 * TU_WAIT_MS);
	tu_pipe_put(&a->done, rc);
	return NULL;
}

START_TEST(test_wake_publisher_thread)
{
	char url[96];
	msgbus_sub *sub = NULL;
	pthread_t th;
	struct blocked_pub a;
	int x, rc = -1;
	msgbus_bus *bus = open_ring(_i, url, sizeof(url), 8);

	TU_ASSERT_OK(msgbus_subscribe(bus, "w.x", 0, &sub));
	int n = tu_fill_ring(bus, "w.x", 0, RING_FILL);
	ASSERT_RING_FULL(n, 8);
	a.bus = bus;
	a.seq = (uint32_t)n;
	tu_pipe_init(&a.started);
	tu_pipe_init(&a.done);
	ck_assert_int_eq(pthread_create(&th, NULL, blocked_publisher, &a), 0);
	ck_assert_int_eq(tu_pipe_get(&a.started, TU_WAIT_MS, &x), 0);
	/* it stays blocked while the ring is full */
	int still = tu_pipe_get(&a.done, 200, &rc);
	if (still == 0) {
		pthread_join(th, NULL);
		ck_abort_msg("publish on a full ring returned %d (%s)", rc,
		             msgbus_strerror(rc));
	}
	/* Two records: one may not leave room for a record that starts
	 * a new lap (it never wraps, and the word after it must be free). */
	TU_RECV_SEQ(sub, "w.x", 0);
	TU_RECV_SEQ(sub, "w.x", 1);
	double t0 = tu_now_ms();
	int got = tu_pipe_get(&a.done, 2 * TU_WAIT_MS, &rc);
	double dt = tu_now_ms() - t0;
	pthread_join(th, NULL);
	ck_assert_msg(got == 0, "blocked publisher never returned");
	TU_ASSERT_OK(rc);
	ck_assert_msg(dt < 1000.0, "woken %.1f ms after the release", dt);
	for (int i = 2; i <= n; i++)
		TU_RECV_SEQ(sub, "w.x", (uint32_t)i);
	TU_ASSERT_EMPTY(sub);
	tu_pipe_close(&a.started);
	tu_pipe_close(&a.done);
	close_bus(bus, url);
}
END_TEST

struct wake_child {
	const char *url;
	struct tu_pipe ready;
};

/* Child: fills the parent's subscriber's ring, reports how many it
 * published, then blocks on one more. */
static int wake_child_main(void *p)
{
	struct wake_child *c = p;
	msgbus_bus *bus = NULL;
	int rc = msgbus_open(&bus, c->url, NULL);
	if (rc != MSGBUS_OK)
		return TU_CHILD_FAIL(10, "open: %s", msgbus_strerror(rc));
	uint32_t n = 0;
	for (;;) {
		struct tu_seqmsg v = { 1, n };
		rc = msgbus_publish(bus, "w.x", &v, sizeof(v), 0);
		if (rc == MSGBUS_EAGAIN)
			break;
		if (rc != MSGBUS_OK || n > RING_FILL)
			return TU_CHILD_FAIL(11, "fill: n %u rc %s", n,
			                     msgbus_strerror(rc));
		n++;
	}
	tu_pipe_put(&c->ready, (int)n);
	struct tu_seqmsg v = { 1, n };
	rc = msgbus_publish(bus, "w.x", &v, sizeof(v), 3 * TU_WAIT_MS);
	if (rc != MSGBUS_OK)
		return TU_CHILD_FAIL(12, "blocked publish: %s",
		                     msgbus_strerror(rc));
	rc = msgbus_close(bus);
	if (rc != MSGBUS_OK)
		return TU_CHILD_FAIL(13, "close: %s", msgbus_strerror(rc));
	return 0;
}

START_TEST(test_wake_publisher_process)
{
	char url[96];
	msgbus_sub *sub = NULL;
	struct wake_child c;
	int n = -1, st;
	msgbus_bus *bus = open_ring(1, url, sizeof(url), 8);

	TU_ASSERT_OK(msgbus_subscribe(bus, "w.x", 0, &sub));
	c.url = url;
	tu_pipe_init(&c.ready);
	pid_t pid = tu_spawn(wake_child_main, &c);
	ck_assert_msg(tu_pipe_get(&c.ready, TU_WAIT_MS, &n) == 0,
	              "child did not fill the ring");
	ASSERT_RING_FULL(n, 8);
	ck_assert_msg(tu_wait_child(pid, 200, &st) == -1,
	              "child finished while the ring was full");
	/* Two records: one may not leave room for a record that starts
	 * a new lap (it never wraps, and the word after it must be free). */
	TU_RECV_SEQ(sub, "w.x", 0);
	TU_RECV_SEQ(sub, "w.x", 1);
	double t0 = tu_now_ms();
	TU_ASSERT_CHILD_OK(pid, 2 * TU_WAIT_MS);
	double dt = tu_now_ms() - t0;
	ck_assert_msg(dt < 1000.0, "child woken %.1f ms after the release",
	              dt);
	for (int i = 2; i <= n; i++)
		TU_RECV_SEQ(sub, "w.x", (uint32_t)i);
	TU_ASSERT_EMPTY(sub);
	tu_pipe_close(&c.ready);
	close_bus(bus, url);
}
END_TEST

/* A receiver blocked in recv(-1) is woken by a publish from another
 * thread (after a second of idling, during which it uses no CPU). */
struct blocked_recv {
	msgbus_sub *sub;
	struct tu_pipe started, done;
	double cpu_ms, wall_ms;
	uint32_t seq;
};

static void *blocked_receiver(void *p)
{
	struct blocked_recv *a = p;
	msgbus_msg *m = NULL;
	struct tu_seqmsg v = { 0, 0 };
	double c0 = tu_thread_cpu_ms(), t0 = tu_now_ms();
	tu_pipe_put(&a->started, 1);
	int rc = msgbus_recv(a->sub, &m, -1);
	a->wall_ms = tu_now_ms() - t0;
	a->cpu_ms = tu_thread_cpu_ms() - c0;
	if (rc == MSGBUS_OK) {
		if (tu_get_seqmsg(m, &v) == 0)
			a->seq = v.seq;
		msgbus_msg_release(m);
	}
	tu_pipe_put(&a->done, rc);
	return NULL;
}

START_TEST(test_wake_receiver)
{
	char url[96];
	msgbus_sub *sub = NULL;
	pthread_t th;
	struct blocked_recv a = { 0 };
	int x, rc = -1;
	msgbus_bus *bus = open_ring(_i, url, sizeof(url), 8);

	TU_ASSERT_OK(msgbus_subscribe(bus, "r.x", 0, &sub));
	a.sub = sub;
	tu_pipe_init(&a.started);
	tu_pipe_init(&a.done);
	ck_assert_int_eq(pthread_create(&th, NULL, blocked_receiver, &a), 0);
	ck_assert_int_eq(tu_pipe_get(&a.started, TU_WAIT_MS, &x), 0);
	/* a second of nothing: recv(-1) must not return */
	if (tu_pipe_get(&a.done, 1000, &rc) == 0) {
		pthread_join(th, NULL);
		ck_abort_msg("recv(-1) returned %d (%s) with nothing sent",
		             rc, msgbus_strerror(rc));
	}
	struct tu_seqmsg v = { 0, 4711 };
	TU_ASSERT_OK(msgbus_publish(bus, "r.x", &v, sizeof(v), 0));
	int got = tu_pipe_get(&a.done, 2 * TU_WAIT_MS, &rc);
	pthread_join(th, NULL);
	ck_assert_msg(got == 0, "blocked receiver never returned");
	TU_ASSERT_OK(rc);
	ck_assert_uint_eq(a.seq, 4711);
	if (!tu_valgrind())
		ck_assert_msg(a.cpu_ms < 0.05 * a.wall_ms,
		              "recv(-1) used %.1f ms CPU in %.1f ms", a.cpu_ms,
		              a.wall_ms);
	tu_pipe_close(&a.started);
	tu_pipe_close(&a.done);
	close_bus(bus, url);
}
END_TEST

/* ---- CPU of blocked calls ---------------------------------------------- */

START_TEST(test_cpu_recv_timeout)
{
	char url[96];
	msgbus_sub *sub = NULL;
	msgbus_msg *m = NULL;
	msgbus_bus *bus = open_ring(_i, url, sizeof(url), 8);

	TU_ASSERT_OK(msgbus_subscribe(bus, "c.x", 0, &sub));
	double c0 = tu_thread_cpu_ms(), t0 = tu_now_ms();
	TU_ASSERT_RC(msgbus_recv(sub, &m, 1000), MSGBUS_ETIMEDOUT);
	double wall = tu_now_ms() - t0, cpu = tu_thread_cpu_ms() - c0;
	ck_assert_msg(wall >= 990.0 && wall < 3000.0, "recv(1000) took %.1f",
	              wall);
	ck_assert_msg(cpu < 0.05 * wall, "recv(1000) used %.1f ms CPU in "
	                                 "%.1f ms",
	              cpu, wall);
	close_bus(bus, url);
}
END_TEST

START_TEST(test_cpu_publish_blocked)
{
	char url[96];
	msgbus_sub *sub = NULL;
	msgbus_bus *bus = open_ring(_i, url, sizeof(url), 8);

	TU_ASSERT_OK(msgbus_subscribe(bus, "c.x", 0, &sub));
	int n = tu_fill_ring(bus, "c.x", 0, RING_FILL);
	ASSERT_RING_FULL(n, 8);
	struct tu_seqmsg v = { 0, (uint32_t)n };
	double c0 = tu_thread_cpu_ms(), t0 = tu_now_ms();
	TU_ASSERT_RC(msgbus_publish(bus, "c.x", &v, sizeof(v), 1000),
	             MSGBUS_ETIMEDOUT);
	double wall = tu_now_ms() - t0, cpu = tu_thread_cpu_ms() - c0;
	ck_assert_msg(wall >= 990.0 && wall < 3000.0,
	              "publish(1000) took %.1f", wall);
	ck_assert_msg(cpu < 0.05 * wall, "blocked publish used %.1f ms CPU "
	                                 "in %.1f ms",
	              cpu, wall);
	/* nothing was half-published by the timed-out call */
	for (int i = 0; i < n; i++)
		TU_RECV_SEQ(sub, "c.x", (uint32_t)i);
	TU_ASSERT_EMPTY(sub);
	close_bus(bus, url);
}
END_TEST

Suite *suite_flow(void)
{
	Suite *s = suite_create("flow");
	TCase *tc;

	tc = tu_tcase("lossless", TU_CASE_TIMEOUT);
	tcase_add_loop_test(tc, test_backpressure, 0, TU_NSCHEMES);
	suite_add_tcase(s, tc);

	tc = tu_tcase("lossy", TU_CASE_TIMEOUT);
	tcase_add_loop_test(tc, test_lossy, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_lossy_beside_lossless, 0, TU_NSCHEMES);
	suite_add_tcase(s, tc);

	tc = tu_tcase("wakeup", TU_CASE_TIMEOUT);
	tcase_add_loop_test(tc, test_wake_publisher_thread, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_wake_receiver, 0, TU_NSCHEMES);
	if (!tu_valgrind())
		tcase_add_test(tc, test_wake_publisher_process);
	suite_add_tcase(s, tc);

	if (!tu_valgrind()) {
		tc = tu_tcase("cpu", TU_CASE_TIMEOUT);
		tcase_add_loop_test(tc, test_cpu_recv_timeout, 0, TU_NSCHEMES);
		tcase_add_loop_test(tc, test_cpu_publish_blocked, 0,
		                    TU_NSCHEMES);
		suite_add_tcase(s, tc);
	}
	return s;
}
