/*
 * check_shutdown.c - msgbus_shutdown: every kind of blocked call returns
 * MSGBUS_ECLOSED soon after it, whether it is called from another thread
 * or from a signal handler; a signal alone never ends a wait; the handle
 * then closes cleanly and other handles on the bus keep working.
 */
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>

#include "test_util.h"

/* The issue asks for 10 ms; measured, a wake-up takes 0.5-1 ms. The bound
 * asserted, 100 ms, leaves room for a loaded 2-core machine shared with
 * other jobs (the measured worst case is printed, and each call over the
 * goal), yet it fails if a wait ended by anything but the shutdown: the
 * waits' timeouts are 60 s, and their re-check period for a dead peer is
 * crash_bound_ms / 4 = 5 s in this rig. Only a publisher waiting for room
 * also re-checks every 10 ms (ring/inbox.c IB_ROOM_RECHECK_NS), which this
 * bound cannot tell from a wake. Under valgrind everything runs ~50 times
 * slower: the bound is 1 s there, still far below the 5 s re-check. */
#define SHUTDOWN_GOAL_MS 10.0
#define SHUTDOWN_BOUND_MS (tu_valgrind() ? 1000.0 : 100.0)
#define RIG_CRASH_BOUND_MS 20000
#define SETTLE_MS 50 /* blocked threads get past their spin into a sleep */

enum kind { K_RECV, K_SVC_RECV, K_REQUEST, K_CALL_WAIT, K_PUBLISH, K_LOAN, K_COUNT };
static const char *const kind_name[K_COUNT] = { "recv",      "service_recv", "request",
	                                        "call_wait", "publish",      "loan" };

struct waiter {
	enum kind kind;
	msgbus_bus *bus;
	msgbus_sub *sub;
	msgbus_service *svc;
	msgbus_call *call;
	pthread_t thread;
	_Atomic int started, done;
	int rc;
	double ended_ms;
};

static void *block(void *arg)
{
	struct waiter *w = arg;
	msgbus_msg *m = NULL;
	msgbus_req *rq = NULL;
	msgbus_buf *loan = NULL;
	static const char payload[64];
	atomic_store(&w->started, 1);
	switch (w->kind) {
	case K_RECV:
		w->rc = msgbus_recv(w->sub, &m, -1);
		break;
	case K_SVC_RECV:
		w->rc = msgbus_service_recv(w->svc, &rq, -1);
		break;
	case K_REQUEST:
		w->rc = msgbus_request(w->bus, "sd.mute", "q", 1, &m, 60000);
		break;
	case K_CALL_WAIT:
		w->rc = msgbus_call_wait(w->call, &m, -1);
		break;
	case K_PUBLISH:
		w->rc = msgbus_publish(w->bus, "sd.full", payload, sizeof(payload), -1);
		break;
	default:
		w->rc = msgbus_loan(w->bus, 100, -1, &loan);
		break;
	}
	w->ended_ms = tu_now_ms();
	atomic_store(&w->done, 1);
	return NULL;
}

/* One bus with something to block on for every kind. */
struct rig {
	char url[96];
	msgbus_bus *bus;
	msgbus_sub *idle, *full;
	msgbus_service *idle_svc, *mute_svc;
	struct waiter w[K_COUNT];
};

static void fill_inbox(struct rig *r)
{
	static const char payload[64];
	int rc, n = 0;
	while ((rc = msgbus_publish(r->bus, "sd.full", payload, sizeof(payload), 0)) == 0)
		ck_assert_int_lt(++n, 100000);
	TU_ASSERT_RC(rc, MSGBUS_EAGAIN);
	ck_assert_int_gt(n, 0);
}

static void take_all_buffers(struct rig *r)
{
	msgbus_buf *l;
	int rc, n = 0;
	while ((rc = msgbus_loan(r->bus, 100, 0, &l)) == 0)
		ck_assert_int_lt(++n, 1000);
	TU_ASSERT_RC(rc, MSGBUS_EAGAIN);
}

static void rig_open(struct rig *r, const char *scheme)
{
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	o.inbox_size = 4096;
	o.large_buffers = 4;
	o.crash_bound_ms = RIG_CRASH_BOUND_MS;
	memset(r, 0, sizeof(*r));
	tu_unique_url(r->url, sizeof(r->url), scheme);
	r->bus = tu_open(r->url, &o);
	TU_ASSERT_OK(msgbus_subscribe(r->bus, "sd.idle", 0, &r->idle));
	TU_ASSERT_OK(msgbus_subscribe(r->bus, "sd.full", 0, &r->full));
	TU_ASSERT_OK(msgbus_serve(r->bus, "sd.idle", NULL, NULL, &r->idle_svc));
	TU_ASSERT_OK(msgbus_serve(r->bus, "sd.mute", NULL, NULL, &r->mute_svc));
	fill_inbox(r);
	take_all_buffers(r);
}

static void rig_start(struct rig *r)
{
	for (int k = 0; k < K_COUNT; k++) {
		struct waiter *w = &r->w[k];
		w->kind = (enum kind)k;
		w->bus = r->bus;
		w->sub = r->idle;
		w->svc = r->idle_svc;
		if (k == K_CALL_WAIT)
			TU_ASSERT_OK(msgbus_call_start(r->bus, "sd.mute", "c", 1, 60000, &w->call));
		ck_assert_int_eq(pthread_create(&w->thread, NULL, block, w), 0);
	}
	double end = tu_now_ms() + TU_WAIT_MS;
	for (int k = 0; k < K_COUNT; k++)
		while (!atomic_load(&r->w[k].started))
			ck_assert_msg(tu_now_ms() < end, "thread %d did not start", k), tu_sleep_ms(1);
	tu_sleep_ms(SETTLE_MS);
	for (int k = 0; k < K_COUNT; k++)
		ck_assert_msg(!atomic_load(&r->w[k].done), "%s returned %d before the shutdown",
		              kind_name[k], r->w[k].rc);
}

/* Every waiter returned MSGBUS_ECLOSED within the bound of t0; returns the
 * worst latency. */
static double rig_join(struct rig *r, double t0, const char *how)
{
	double worst = 0;
	for (int k = 0; k < K_COUNT; k++) {
		struct waiter *w = &r->w[k];
		double end = tu_now_ms() + TU_WAIT_MS;
		while (!atomic_load(&w->done) && tu_now_ms() < end)
			tu_sleep_ms(1);
		ck_assert_msg(atomic_load(&w->done), "%s still blocked after shutdown (%s)",
		              kind_name[k], how);
		pthread_join(w->thread, NULL);
		TU_ASSERT_RC(w->rc, MSGBUS_ECLOSED);
		double lat = w->ended_ms - t0;
		if (lat > worst)
			worst = lat;
		if (lat > SHUTDOWN_GOAL_MS)
			printf("shutdown (%s): %s took %.3f ms\n", how, kind_name[k], lat);
		ck_assert_msg(lat < SHUTDOWN_BOUND_MS, "%s took %.2f ms (%s)", kind_name[k], lat, how);
	}
	printf("shutdown (%s): worst wake-up %.3f ms over %d blocked calls "
	       "(goal %.0f ms, bound %.0f ms)\n",
	       how, worst, K_COUNT, SHUTDOWN_GOAL_MS, SHUTDOWN_BOUND_MS);
	return worst;
}

/* After the shutdown: new calls fail at once, close is clean. */
static void rig_close(struct rig *r)
{
	msgbus_msg *m;
	msgbus_sub *s;
	TU_ASSERT_RC(msgbus_recv(r->idle, &m, 0), MSGBUS_ECLOSED);
	TU_ASSERT_RC(msgbus_publish(r->bus, "sd.x", "x", 1, 0), MSGBUS_ECLOSED);
	TU_ASSERT_RC(msgbus_request(r->bus, "sd.mute", "q", 1, &m, 1000), MSGBUS_ECLOSED);
	TU_ASSERT_RC(msgbus_subscribe(r->bus, "sd.y", 0, &s), MSGBUS_ECLOSED);
	TU_ASSERT_OK(msgbus_close(r->bus));
	TU_ASSERT_NO_SEGMENT(r->url);
}

static msgbus_bus *_Atomic sig_bus;
static _Atomic int64_t sig_at_us; /* when the handler ran */

static void on_signal(int sig)
{
	(void)sig;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	atomic_store(&sig_at_us, (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
	msgbus_bus *b = atomic_load(&sig_bus);
	if (b)
		msgbus_shutdown(b);
}

static void on_signal_noop(int sig)
{
	(void)sig;
	atomic_store(&sig_at_us, 1);
}

/* sigaction without SA_RESTART, as the man page tells users to. */
static void handle(int sig, void (*fn)(int))
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = fn;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = 0;
	ck_assert_int_eq(sigaction(sig, &sa, NULL), 0);
}

static double sig_at_ms(void)
{
	return (double)atomic_load(&sig_at_us) / 1000.0;
}

START_TEST(test_shutdown_from_thread)
{
	struct rig r;
	rig_open(&r, tu_scheme(_i));
	rig_start(&r);
	double t0 = tu_now_ms();
	TU_ASSERT_OK(msgbus_shutdown(r.bus));
	rig_join(&r, t0, _i ? "thread, inproc" : "thread, shm");
	rig_close(&r);
}
END_TEST

/* SIGUSR1 sent to the thread blocked in recv (its futex wait is
 * interrupted), and SIGALRM from a timer to any thread of the process. */
START_TEST(test_shutdown_from_signal)
{
	int sig = _i ? SIGALRM : SIGUSR1;
	struct rig r;
	rig_open(&r, "shm");
	handle(sig, on_signal);
	atomic_store(&sig_at_us, 0);
	atomic_store(&sig_bus, r.bus);
	rig_start(&r);
	if (sig == SIGUSR1) {
		ck_assert_int_eq(pthread_kill(r.w[K_RECV].thread, SIGUSR1), 0);
	} else {
		struct itimerval it = { { 0, 0 }, { 0, 1000 } };
		ck_assert_int_eq(setitimer(ITIMER_REAL, &it, NULL), 0);
	}
	double end = tu_now_ms() + TU_WAIT_MS;
	while (!atomic_load(&sig_at_us) && tu_now_ms() < end)
		tu_sleep_ms(1);
	ck_assert_msg(atomic_load(&sig_at_us), "the signal handler did not run");
	rig_join(&r, sig_at_ms(), sig == SIGUSR1 ? "SIGUSR1 handler" : "SIGALRM handler");
	atomic_store(&sig_bus, NULL);
	signal(sig, SIG_DFL);
	rig_close(&r);
}
END_TEST

/* A signal without SA_RESTART whose handler does not shut down: the wait
 * goes on (no EINTR), and ends at the shutdown. */
START_TEST(test_signal_does_not_end_wait)
{
	struct rig r;
	rig_open(&r, "shm");
	handle(SIGUSR2, on_signal_noop);
	atomic_store(&sig_at_us, 0);
	rig_start(&r);
	for (int k = 0; k < K_COUNT; k++)
		ck_assert_int_eq(pthread_kill(r.w[k].thread, SIGUSR2), 0);
	double end = tu_now_ms() + TU_WAIT_MS;
	while (!atomic_load(&sig_at_us) && tu_now_ms() < end)
		tu_sleep_ms(1);
	tu_sleep_ms(SETTLE_MS);
	for (int k = 0; k < K_COUNT; k++)
		ck_assert_msg(!atomic_load(&r.w[k].done), "%s returned %d on a signal", kind_name[k],
		              r.w[k].rc);
	double t0 = tu_now_ms();
	TU_ASSERT_OK(msgbus_shutdown(r.bus));
	rig_join(&r, t0, "thread, after SIGUSR2");
	signal(SIGUSR2, SIG_DFL);
	rig_close(&r);
}
END_TEST

/* Another process's handle on the same bus: it keeps publishing, receiving
 * and serving after our handle is shut down (and closed). */
struct other_arg {
	int go, ready; /* pipe ends: read "go", write "ready" */
	char url[96];
};

static int other_handle(void *arg)
{
	const struct other_arg *a = arg;
	const char *url = a->url;
	msgbus_bus *b = NULL;
	msgbus_sub *sub;
	msgbus_msg *m;
	char c = 'r';
	if (msgbus_open(&b, url, NULL) || msgbus_subscribe(b, "sd.other", 0, &sub))
		return TU_CHILD_FAIL(2, "open/subscribe");
	if (write(a->ready, &c, 1) != 1 || read(a->go, &c, 1) != 1)
		return TU_CHILD_FAIL(3, "pipe");
	for (int i = 0; i < 100; i++) {
		int rc = msgbus_publish(b, "sd.other", &i, sizeof(i), 1000);
		if (rc)
			return TU_CHILD_FAIL(4, "publish: %s", msgbus_strerror(rc));
		rc = msgbus_recv(sub, &m, 1000);
		if (rc || msgbus_msg_len(m) != sizeof(i) || memcmp(msgbus_msg_data(m), &i, sizeof(i)))
			return TU_CHILD_FAIL(5, "recv %d: %s", i, msgbus_strerror(rc));
		msgbus_msg_release(m);
	}
	return msgbus_close(b) ? 6 : 0;
}

START_TEST(test_other_handle_unaffected)
{
	int up[2], down[2];
	struct other_arg arg;
	char c;
	ck_assert_int_eq(pipe(up), 0);
	ck_assert_int_eq(pipe(down), 0);
	struct rig r;
	rig_open(&r, "shm");
	arg.go = down[0];
	arg.ready = up[1];
	snprintf(arg.url, sizeof(arg.url), "%s", r.url);
	pid_t pid = tu_spawn(other_handle, &arg);
	ck_assert_int_eq(read(up[0], &c, 1), 1);
	rig_start(&r);
	double t0 = tu_now_ms();
	TU_ASSERT_OK(msgbus_shutdown(r.bus));
	rig_join(&r, t0, "thread, other process attached");
	ck_assert_int_eq(write(down[1], "g", 1), 1);
	TU_ASSERT_CHILD_OK(pid, TU_WAIT_MS * 2);
	rig_close(&r);
	close(up[0]);
	close(up[1]);
	close(down[0]);
	close(down[1]);
}
END_TEST

static void on_msg(const msgbus_msg *m, void *arg)
{
	(void)m;
	atomic_fetch_add((_Atomic int *)arg, 1);
}

static void on_req(msgbus_req *rq, void *arg)
{
	atomic_fetch_add((_Atomic int *)arg, 1);
	msgbus_respond(rq, "ok", 2);
}

/* Callback subscriptions and workers stop at the shutdown; close joins
 * their threads at once. */
START_TEST(test_shutdown_callbacks)
{
	char url[96];
	_Atomic int msgs = 0, reqs = 0;
	msgbus_sub *sub;
	msgbus_service *svc;
	msgbus_msg *m;
	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, NULL);
	TU_ASSERT_OK(msgbus_subscribe_cb(bus, "cb.x", 0, on_msg, &msgs, &sub));
	TU_ASSERT_OK(msgbus_serve(bus, "cb.svc", on_req, &reqs, &svc));
	TU_ASSERT_OK(msgbus_publish(bus, "cb.x", "a", 1, -1));
	TU_ASSERT_OK(msgbus_request(bus, "cb.svc", "q", 1, &m, TU_WAIT_MS));
	msgbus_msg_release(m);
	double end = tu_now_ms() + TU_WAIT_MS;
	while (atomic_load(&msgs) < 1 && tu_now_ms() < end)
		tu_sleep_ms(1);
	ck_assert_int_eq(atomic_load(&msgs), 1);
	ck_assert_int_eq(atomic_load(&reqs), 1);
	TU_ASSERT_OK(msgbus_shutdown(bus));
	TU_ASSERT_OK(msgbus_shutdown(bus)); /* twice is fine */
	double t0 = tu_now_ms();
	TU_ASSERT_OK(msgbus_close(bus));
	double took = tu_now_ms() - t0;
	printf("shutdown (callbacks, %s): close took %.3f ms\n", tu_scheme(_i), took);
	ck_assert_msg(took < SHUTDOWN_BOUND_MS, "close took %.2f ms", took);
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

START_TEST(test_shutdown_args)
{
	TU_ASSERT_RC(msgbus_shutdown(NULL), MSGBUS_EINVAL);
}
END_TEST

Suite *suite_shutdown(void)
{
	Suite *s = suite_create("shutdown");
	TCase *tc = tu_tcase("shutdown", TU_CASE_TIMEOUT);
	tcase_add_test(tc, test_shutdown_args);
	tcase_add_loop_test(tc, test_shutdown_from_thread, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_shutdown_from_signal, 0, 2);
	tcase_add_test(tc, test_signal_does_not_end_wait);
	tcase_add_loop_test(tc, test_shutdown_callbacks, 0, TU_NSCHEMES);
	tcase_add_test(tc, test_other_handle_unaffected);
	suite_add_tcase(s, tc);
	return s;
}
