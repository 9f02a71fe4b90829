/*
 * check_contracts.c - promises the man pages make that only show under
 * stress: a child forked without exec does not keep its dead parent
 * "alive" (msgbus(7) THREADS AND FORK), every call honours its timeout
 * while another process holds the control lock stopped (timeout 0 never
 * waits), and a lossy subscriber loses only what it was lapped on, with
 * exact counts (msgbus(7) DELIVERY); and what msgbus_subscribe(3) lists
 * for a full subject table.
 */
#include <pthread.h>
#include <stdbool.h>

#include "test_util.h"

#define CRASH_BOUND_MS 300
#define SLACK_MS 1000.0 /* two shared cores, four other test runs */
#define MB_PAUSE_MS 300 /* MSGBUS_CRASH_AT=pause:POINT, msgbus(7) ENVIRONMENT */

/* ---- a forked helper does not hide its parent's death -------------------- */

enum fork_role { ROLE_SUBSCRIBER, ROLE_WORKER };

struct fork_parent {
	const char *url;
	enum fork_role role;
	pid_t test_pid;
	struct tu_pipe ready; /* 1 then the helper's pid; 2: took a request */
};

/* The helper never touches the bus; it outlives the test's child so that
 * only the inherited memory and descriptors could keep the child alive.
 * It goes when the test process does (a failed test skips the kill), and
 * alarm() bounds it in any case. */
static pid_t fork_idle_helper(pid_t test_pid)
{
	pid_t pid = fork();
	if (pid == 0) {
		alarm(30);
		while (kill(test_pid, 0) == 0)
			tu_sleep_ms(50);
		_exit(0);
	}
	return pid;
}

/* Subscribes losslessly (or serves), forks the helper, reports its pid,
 * then (worker) takes one request and never answers it. */
static int fork_parent_main(void *p)
{
	struct fork_parent *c = p;
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	msgbus_bus *bus = NULL;
	msgbus_sub *sub = NULL;
	msgbus_service *svc = NULL;
	msgbus_req *req = NULL;

	o.crash_bound_ms = CRASH_BOUND_MS;
	int rc = msgbus_open(&bus, c->url, &o);
	if (rc != MSGBUS_OK)
		return TU_CHILD_FAIL(10, "open: %s", msgbus_strerror(rc));
	if (c->role == ROLE_SUBSCRIBER)
		rc = msgbus_subscribe(bus, "fk.x", 0, &sub);
	else
		rc = msgbus_serve(bus, "fk.svc", NULL, NULL, &svc);
	if (rc != MSGBUS_OK)
		return TU_CHILD_FAIL(11, "subscribe/serve: %s", msgbus_strerror(rc));
	pid_t helper = fork_idle_helper(c->test_pid);
	if (helper < 0)
		return TU_CHILD_FAIL(12, "fork: %s", strerror(errno));
	tu_pipe_put(&c->ready, (int)helper);
	if (c->role == ROLE_WORKER) {
		rc = msgbus_service_recv(svc, &req, TU_WAIT_MS);
		if (rc != MSGBUS_OK)
			return TU_CHILD_FAIL(13, "service_recv: %s", msgbus_strerror(rc));
		tu_pipe_put(&c->ready, 2);
	}
	for (;;)
		pause();
}

static pid_t fork_parent_spawn(struct fork_parent *c, pid_t *helper)
{
	int v;
	c->test_pid = getpid();
	tu_pipe_init(&c->ready);
	pid_t pid = tu_spawn(fork_parent_main, c);
	ck_assert_msg(tu_pipe_get(&c->ready, TU_WAIT_MS, &v) == 0 && v > 0,
	              "child did not subscribe and fork");
	*helper = (pid_t)v;
	return pid;
}

/* Fill the 4 KiB inbox of the child's fk.x subscription,
 * SIGKILL the child (its idle helper lives on), and expect the publisher
 * to move on within crash_bound_ms. */
static void expect_release_after_kill(msgbus_bus *bus, pid_t pid, pid_t helper)
{
	int n = tu_fill_ring(bus, "fk.x", 0, 1000);
	ck_assert_msg(n > 8 && n < 1000, "4 KiB inbox took %d", n);
	struct tu_seqmsg v = { 0, (uint32_t)n };
	TU_ASSERT_RC(msgbus_publish(bus, "fk.x", &v, sizeof(v), 0), MSGBUS_EAGAIN);

	tu_kill_child(pid);
	double t0 = tu_now_ms();
	int rc = msgbus_publish(bus, "fk.x", &v, sizeof(v), 3000);
	double dt = tu_now_ms() - t0;
	kill(helper, SIGKILL);
	TU_ASSERT_OK(rc);
	ck_assert_msg(dt < CRASH_BOUND_MS + SLACK_MS,
	              "publisher released %.0f ms after the kill (bound %d ms)", dt,
	              CRASH_BOUND_MS);
}

/* A lossless subscriber forks a helper and is SIGKILLed: the publisher it
 * held back moves on within crash_bound_ms, as if it had not forked. */
START_TEST(test_fork_subscriber_death_seen)
{
	char url[96];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	struct fork_parent c = { .role = ROLE_SUBSCRIBER };
	pid_t helper;

	o.inbox_size = 4096; /* v2: the smallest inbox (about 80 messages) */
	o.crash_bound_ms = CRASH_BOUND_MS;
	tu_unique_url(url, sizeof(url), "shm");
	msgbus_bus *bus = tu_open(url, &o);
	c.url = url;
	pid_t pid = fork_parent_spawn(&c, &helper);
	expect_release_after_kill(bus, pid, helper);
	tu_pipe_close(&c.ready);
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

/* A worker forks a helper, takes a request and is SIGKILLed: the
 * requester gets MSGBUS_EPEERDIED within crash_bound_ms, not a timeout. */
START_TEST(test_fork_worker_death_seen)
{
	char url[96];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	struct fork_parent c = { .role = ROLE_WORKER };
	msgbus_call *call = NULL;
	msgbus_msg *reply = NULL;
	pid_t helper;
	int v;

	o.crash_bound_ms = CRASH_BOUND_MS;
	tu_unique_url(url, sizeof(url), "shm");
	msgbus_bus *bus = tu_open(url, &o);
	c.url = url;
	pid_t pid = fork_parent_spawn(&c, &helper);
	TU_ASSERT_OK(msgbus_call_start(bus, "fk.svc", "q", 1, 5000, &call));
	ck_assert_msg(tu_pipe_get(&c.ready, TU_WAIT_MS, &v) == 0 && v == 2,
	              "worker did not take the request");

	tu_kill_child(pid);
	double t0 = tu_now_ms();
	int rc = msgbus_call_wait(call, &reply, 5000);
	double dt = tu_now_ms() - t0;
	kill(helper, SIGKILL);
	TU_ASSERT_RC(rc, MSGBUS_EPEERDIED);
	ck_assert_msg(dt < CRASH_BOUND_MS + SLACK_MS,
	              "requester told %.0f ms after the kill (bound %d ms)", dt,
	              CRASH_BOUND_MS);
	tu_pipe_close(&c.ready);
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

/* A fork while another thread is inside msgbus_open: that handle has its
 * descriptor and mapping before it is registered for fork. The opening
 * thread pauses there (pause:mid_open); the other thread forks meanwhile. */
struct open_race {
	pid_t test_pid, helper;
};

static void *fork_during_open(void *p)
{
	struct open_race *r = p;
	tu_sleep_ms(MB_PAUSE_MS / 3); /* into the opener's pause */
	r->helper = fork_idle_helper(r->test_pid);
	return NULL;
}

static int open_race_main(void *p)
{
	struct fork_parent *c = p;
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	msgbus_bus *bus = NULL;
	msgbus_sub *sub = NULL;
	struct open_race r = { c->test_pid, -1 };
	pthread_t th;

	o.inbox_size = 4096; /* v2: the smallest inbox (about 80 messages) */
	o.crash_bound_ms = CRASH_BOUND_MS;
	setenv("MSGBUS_CRASH_AT", "pause:mid_open", 1);
	if (pthread_create(&th, NULL, fork_during_open, &r) != 0)
		return TU_CHILD_FAIL(10, "pthread_create");
	int rc = msgbus_open(&bus, c->url, &o);
	pthread_join(th, NULL);
	if (rc != MSGBUS_OK)
		return TU_CHILD_FAIL(11, "open: %s", msgbus_strerror(rc));
	if (r.helper < 0)
		return TU_CHILD_FAIL(12, "fork: %s", strerror(errno));
	rc = msgbus_subscribe(bus, "fk.x", 0, &sub);
	if (rc != MSGBUS_OK)
		return TU_CHILD_FAIL(13, "subscribe: %s", msgbus_strerror(rc));
	tu_pipe_put(&c->ready, (int)r.helper);
	for (;;)
		pause();
}

/* The child creates the bus, forks a helper while it is opening it, then
 * subscribes and is SIGKILLed: the publisher moves on within the bound. */
START_TEST(test_fork_during_open_death_seen)
{
	char url[96];
	struct fork_parent c = { .test_pid = getpid() };
	int v;

	tu_unique_url(url, sizeof(url), "shm");
	c.url = url;
	tu_pipe_init(&c.ready);
	pid_t pid = tu_spawn(open_race_main, &c);
	ck_assert_msg(tu_pipe_get(&c.ready, TU_WAIT_MS, &v) == 0 && v > 0,
	              "child did not open, fork and subscribe");
	pid_t helper = (pid_t)v;
	msgbus_bus *bus = tu_open(url, NULL);
	expect_release_after_kill(bus, pid, helper);
	tu_pipe_close(&c.ready);
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

/* ---- timeouts while a stopped process holds the control lock ------------- */

struct lock_child {
	const char *url;
	struct tu_pipe done;
};

/* Stops itself holding the control lock (crash point stop:in_ctl_lock),
 * then, once continued, finishes its subscribe and closes. */
static int lock_child_main(void *p)
{
	struct lock_child *c = p;
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	msgbus_bus *bus = NULL;
	msgbus_sub *sub = NULL;

	o.crash_bound_ms = CRASH_BOUND_MS;
	setenv("MSGBUS_CRASH_AT", "stop:in_ctl_lock", 1);
	int rc = msgbus_open(&bus, c->url, &o);
	if (rc != MSGBUS_OK)
		return TU_CHILD_FAIL(10, "open: %s", msgbus_strerror(rc));
	rc = msgbus_subscribe(bus, "lk.held", 0, &sub);
	tu_pipe_put(&c->done, rc);
	msgbus_close(bus);
	return rc == MSGBUS_OK ? 0 : TU_CHILD_FAIL(11, "subscribe: %s", msgbus_strerror(rc));
}

#define TIME_RC(var, ms, expr)                          \
	do {                                            \
		double t0_ = tu_now_ms();               \
		(var) = (expr);                         \
		(ms) = tu_now_ms() - t0_;               \
	} while (0)

/* While the holder is stopped: publish (or commit) on a new subject never
 * needs the lock in v2 (v1 said MSGBUS_EAGAIN / MSGBUS_ETIMEDOUT: it
 * created the subject under it), so it succeeds at once; subscribe and
 * serve (no timeout) say MSGBUS_ETIMEDOUT within their documented bound,
 * 5 crash bounds. */
START_TEST(test_ctl_lock_timeouts)
{
	char url[96];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	struct lock_child c;
	msgbus_sub *sub = NULL;
	msgbus_service *svc = NULL;
	msgbus_buf *loan = NULL;
	int rc;
	double ms;

	o.crash_bound_ms = CRASH_BOUND_MS;
	tu_unique_url(url, sizeof(url), "shm");
	msgbus_bus *bus = tu_open(url, &o);
	c.url = url;
	tu_pipe_init(&c.done);
	pid_t pid = tu_spawn(lock_child_main, &c);
	ck_assert_msg(tu_wait_stopped(pid, TU_WAIT_MS) == 0, "child never took the lock");

	TIME_RC(rc, ms, msgbus_publish(bus, "lk.new0", "x", 1, 0));
	TU_ASSERT_OK(rc);
	ck_assert_msg(ms < 100.0, "publish(timeout 0) waited %.0f ms", ms);

	TIME_RC(rc, ms, msgbus_publish(bus, "lk.new1", "x", 1, 50));
	TU_ASSERT_OK(rc);
	ck_assert_msg(ms < 50.0, "publish(timeout 50) took %.0f ms", ms);

	TU_ASSERT_OK(msgbus_loan(bus, 10, 0, &loan));
	TIME_RC(rc, ms, msgbus_commit(loan, "lk.new2", 10, 0));
	TU_ASSERT_OK(rc);
	ck_assert_msg(ms < 100.0, "commit(timeout 0) waited %.0f ms", ms);

	TIME_RC(rc, ms, msgbus_subscribe(bus, "lk.new3", 0, &sub));
	TU_ASSERT_RC(rc, MSGBUS_ETIMEDOUT);
	ck_assert_msg(ms >= 5.0 * CRASH_BOUND_MS - 1 && ms < 5.0 * CRASH_BOUND_MS + SLACK_MS,
	              "subscribe gave up after %.0f ms (bound %d ms)", ms, 5 * CRASH_BOUND_MS);
	TIME_RC(rc, ms, msgbus_serve(bus, "lk.svc", NULL, NULL, &svc));
	TU_ASSERT_RC(rc, MSGBUS_ETIMEDOUT);
	ck_assert_msg(ms >= 5.0 * CRASH_BOUND_MS - 1 && ms < 5.0 * CRASH_BOUND_MS + SLACK_MS,
	              "serve gave up after %.0f ms (bound %d ms)", ms, 5 * CRASH_BOUND_MS);

	/* Let it go: it completes, and the lock works again. */
	kill(pid, SIGCONT);
	ck_assert_int_eq(tu_pipe_get(&c.done, TU_WAIT_MS, &rc), 0);
	TU_ASSERT_OK(rc);
	TU_ASSERT_CHILD_OK(pid, TU_WAIT_MS);
	TU_ASSERT_OK(msgbus_publish(bus, "lk.new0", "x", 1, 0));
	TU_ASSERT_OK(msgbus_subscribe(bus, "lk.new3", 0, &sub));
	TU_ASSERT_OK(msgbus_serve(bus, "lk.svc", NULL, NULL, &svc));
	tu_pipe_close(&c.done);
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

/* ---- a lossy subscriber behind large messages ---------------------------- */

#define LOSSY_TOTAL 2000
#define LOSSY_LARGE 4096

struct lossy_run {
	int received, eagain_with_backlog;
	uint64_t received_large;
	int64_t last_seq;
	int out_of_order;
};

static void check_stats(msgbus_sub *sub, int published, const struct lossy_run *r)
{
	msgbus_sub_stats st;
	TU_ASSERT_OK(msgbus_sub_stats_get(sub, &st));
	ck_assert_msg(st.delivered == (uint64_t)r->received, "delivered %llu, received %d",
	              (unsigned long long)st.delivered, r->received);
	ck_assert_msg(st.delivered + st.dropped + st.backlog == (uint64_t)published,
	              "delivered %llu + dropped %llu + backlog %llu != published %d",
	              (unsigned long long)st.delivered, (unsigned long long)st.dropped,
	              (unsigned long long)st.backlog, published);
}

/* Take one message with timeout 0; false when there was none. A receive
 * that finds nothing while the statistics show a backlog is counted. */
static bool take_one(msgbus_sub *sub, struct lossy_run *r)
{
	msgbus_msg *m = NULL;
	int rc = msgbus_recv(sub, &m, 0);
	if (rc == MSGBUS_EAGAIN) {
		msgbus_sub_stats st;
		TU_ASSERT_OK(msgbus_sub_stats_get(sub, &st));
		if (st.backlog > 0)
			r->eagain_with_backlog++;
		return false;
	}
	TU_ASSERT_OK(rc);
	struct tu_seqmsg v;
	ck_assert_int_eq(tu_get_seqmsg(m, &v), 0);
	if ((int64_t)v.seq <= r->last_seq)
		r->out_of_order++;
	r->last_seq = v.seq;
	if (msgbus_msg_len(m) == LOSSY_LARGE) {
		ck_assert_msg(tu_verify((const char *)msgbus_msg_data(m) + sizeof(v),
		                        LOSSY_LARGE - sizeof(v), v.seq) < 0,
		              "large message %u corrupt", v.seq);
		r->received_large++;
	}
	r->received++;
	msgbus_msg_release(m);
	return true;
}

/* One shape of the lossy test. */
struct lossy_shape {
	uint32_t ring_slots, large_buffers; /* 0: the default (16) */
	uint32_t behind;                    /* messages the reader lags by */
	uint32_t large_every;               /* every n-th message is 4 KiB */
	int handles;                        /* publishing in turn */
	int lossless_pool;                  /* the pool holds the whole lag */
};

static const struct lossy_shape lossy_shapes[] = {
	/* The issue's: 16 buffers for the 25 large messages it lags by. */
	{ 512, 0, 100, 4, 1, 0 },
	/* Every message large, two publishing handles, a pool larger than the
	 * lag: nothing at all may be lost, so the buffers must be recycled
	 * oldest first across handles. */
	{ 64, 32, 20, 1, 2, 1 },
};

static void publish_seq(msgbus_bus *bus, uint32_t seq, uint32_t large_every,
                        unsigned char *big)
{
	struct tu_seqmsg v = { 0, seq };
	if (seq % large_every == large_every - 1) {
		memcpy(big, &v, sizeof(v));
		tu_fill(big + sizeof(v), LOSSY_LARGE - sizeof(v), seq);
		TU_ASSERT_OK(msgbus_publish(bus, "ly.x", big, LOSSY_LARGE, 0));
	} else {
		TU_ASSERT_OK(msgbus_publish(bus, "ly.x", &v, sizeof(v), 0));
	}
}

/*
 * A lossy subscriber a fixed number of messages behind (less than a ring),
 * with large messages in the mix, drained with timeout 0 (the issue's
 * scenario is shape 0: 100 behind on a 512-slot ring, every 4th message
 * 4 KiB). It is never lapped on the ring, so it may lose only large
 * messages whose buffer the pool had to recycle (msgbus(7) DELIVERY),
 * never an inline one, and none when the pool holds its lag; a receive
 * with a backlog never says EAGAIN; every message is delivered or counted
 * as dropped.
 */
START_TEST(test_lossy_behind_large)
{
	const struct lossy_shape *sh = &lossy_shapes[_i];
	char url[96];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	msgbus_bus *bus[2];
	msgbus_sub *sub = NULL;
	struct lossy_run r = { .last_seq = -1 };
	static unsigned char big[LOSSY_LARGE];

	o.ring_slots = sh->ring_slots;
	o.large_buffers = sh->large_buffers;
	o.max_msg_size = 8192;
	tu_unique_url(url, sizeof(url), "inproc");
	for (int h = 0; h < sh->handles; h++)
		bus[h] = tu_open(url, &o);
	TU_ASSERT_OK(msgbus_subscribe(bus[0], "ly.x", MSGBUS_SUB_LOSSY, &sub));
	for (uint32_t seq = 0; seq < LOSSY_TOTAL; seq++) {
		publish_seq(bus[seq % (uint32_t)sh->handles], seq, sh->large_every, big);
		if (seq >= sh->behind)
			take_one(sub, &r);
	}
	while (take_one(sub, &r))
		;
	msgbus_sub_stats st;
	TU_ASSERT_OK(msgbus_sub_stats_get(sub, &st));
	ck_assert_msg(r.eagain_with_backlog == 0, "%d receives said EAGAIN with a backlog",
	              r.eagain_with_backlog);
	ck_assert_int_eq(r.out_of_order, 0);
	check_stats(sub, LOSSY_TOTAL, &r);
	ck_assert_msg(st.backlog == 0, "backlog %llu left", (unsigned long long)st.backlog);
	uint64_t small = LOSSY_TOTAL - LOSSY_TOTAL / sh->large_every;
	ck_assert_msg(r.received - r.received_large == small,
	              "%llu of %llu inline messages received (dropped %llu in all)",
	              (unsigned long long)(r.received - r.received_large),
	              (unsigned long long)small, (unsigned long long)st.dropped);
	if (sh->lossless_pool)
		ck_assert_msg(st.dropped == 0, "dropped %llu with a pool that holds the lag",
		              (unsigned long long)st.dropped);
	TU_ASSERT_OK(msgbus_unsubscribe(sub));
	for (int h = sh->handles - 1; h >= 0; h--)
		TU_ASSERT_OK(msgbus_close(bus[h]));
}
END_TEST

/* ---- what msgbus_subscribe(3) lists ---------------------------------------- */

/* v2: subscribing takes no subject-table entry (v1 said MSGBUS_ELIMIT for
 * a new exact subject on a full table): with max_subjects 2, any number
 * of subjects subscribe, and max_subs alone bounds subscriptions. */
START_TEST(test_subscribe_subject_table_full)
{
	char url[96];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	msgbus_sub *sub = NULL, *s2 = NULL;

	o.max_subjects = 2;
	o.max_subs = 2;
	tu_unique_url(url, sizeof(url), "inproc");
	msgbus_bus *bus = tu_open(url, &o);
	TU_ASSERT_OK(msgbus_publish(bus, "tf.a", "x", 1, 0));
	TU_ASSERT_OK(msgbus_publish(bus, "tf.b", "x", 1, 0));
	for (int i = 0; i < 3; i++) { /* more than max_subs: the slot comes back */
		TU_ASSERT_OK(msgbus_subscribe(bus, "tf.c", 0, &sub));
		TU_ASSERT_OK(msgbus_unsubscribe(sub));
	}
	TU_ASSERT_OK(msgbus_subscribe(bus, "tf.*", 0, &sub));
	TU_ASSERT_OK(msgbus_subscribe(bus, "tf.a", 0, &s2));
	TU_ASSERT_RC(msgbus_subscribe(bus, "tf.d", 0, &sub), MSGBUS_ELIMIT);
	TU_ASSERT_OK(msgbus_close(bus));
}
END_TEST

Suite *suite_contracts(void)
{
	Suite *s = suite_create("contracts");
	TCase *tc = tu_tcase("lossy", TU_CASE_TIMEOUT);
	tcase_add_loop_test(tc, test_lossy_behind_large, 0,
	                    (int)(sizeof(lossy_shapes) / sizeof(lossy_shapes[0])));
	suite_add_tcase(s, tc);
	tc = tu_tcase("limits", TU_CASE_TIMEOUT);
	tcase_add_test(tc, test_subscribe_subject_table_full);
	suite_add_tcase(s, tc);
	if (tu_valgrind())
		return s; /* the rest forks, kills and times */
	tc = tu_tcase("fork", TU_CASE_TIMEOUT);
	tcase_add_test(tc, test_fork_subscriber_death_seen);
	tcase_add_test(tc, test_fork_worker_death_seen);
	tcase_add_test(tc, test_fork_during_open_death_seen);
	suite_add_tcase(s, tc);
	tc = tu_tcase("timeouts", TU_CASE_TIMEOUT);
	tcase_add_test(tc, test_ctl_lock_timeouts);
	suite_add_tcase(s, tc);
	return s;
}
