/*
 * check_spin.c - waiting spins, and a spinning waiter yields the CPU.
 *
 * Issue 9 item 6: "with more runnable spinners than cores, waiting yields
 * instead of burning the CPU that a publisher needs". The spin of a wait
 * (recv.c wait_rec, serve.c, call.c) calls mb_yield_cpu every
 * MB_SPIN_YIELD_ROUNDS rounds. The test binary counts those calls
 * (tu_yields, --wrap=mb_yield_cpu), and a process pinned to one CPU shows
 * what they buy: a lock-step exchange between a publisher and three
 * spinning receivers moves on at each yield, where without them every step
 * waits for a spinner's time slice to run out.
 *
 * Also the lock of a link's sending side (platform/slock.h), whose waiters
 * spin, then sleep.
 */
#include <check.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "test_util.h"
#include "platform/slock.h"

static void close_bus(msgbus_bus *bus, const char *url)
{
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url);
}

static msgbus_bus *open_spinning(const char *url, uint32_t spin_us)
{
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	o.spin_us = spin_us;
	return tu_open(url, &o);
}

/* A receive, a service receive and a request that find nothing spin for
 * spin_us and yield while they do, many times over a long spin; a receive
 * that finds a message waits for nothing and does not yield. */
START_TEST(test_spinning_waits_yield)
{
	enum { SPIN_US = 20000, MIN_YIELDS = 10 };
	char url[96];
	msgbus_sub *sub = NULL;
	msgbus_service *svc = NULL;
	msgbus_msg *m = NULL;
	msgbus_req *req = NULL;

	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = open_spinning(url, SPIN_US);
	TU_ASSERT_OK(msgbus_subscribe(bus, "y.none", 0, &sub));
	TU_ASSERT_OK(msgbus_serve(bus, "y.svc", NULL, NULL, &svc));
	unsigned long y[3], y0 = tu_yields;
	TU_ASSERT_RC(msgbus_recv(sub, &m, 50), MSGBUS_ETIMEDOUT);
	y[0] = tu_yields - y0;
	y0 = tu_yields;
	TU_ASSERT_RC(msgbus_service_recv(svc, &req, 50), MSGBUS_ETIMEDOUT);
	y[1] = tu_yields - y0;
	y0 = tu_yields;
	/* The worker never takes it: the call waits for a reply. */
	int rc = msgbus_request(bus, "y.svc", "q", 1, &m, 50);
	ck_assert_msg(rc == MSGBUS_ETIMEDOUT || rc == MSGBUS_EAGAIN, "request: %s",
	              msgbus_strerror(rc));
	y[2] = tu_yields - y0;
	printf("check_spin (%s): yields over a %u us spin: recv %lu, service recv %lu, "
	       "request %lu\n",
	       tu_scheme(_i), (unsigned)SPIN_US, y[0], y[1], y[2]);
	for (int k = 0; k < 3; k++)
		ck_assert_msg(y[k] >= MIN_YIELDS, "wait %d: %lu yields over a %u us spin", k, y[k],
		              (unsigned)SPIN_US);
	TU_ASSERT_OK(msgbus_publish(bus, "y.none", "x", 1, -1));
	y0 = tu_yields;
	TU_ASSERT_OK(msgbus_recv(sub, &m, 50));
	msgbus_msg_release(m);
	ck_assert_uint_eq(tu_yields - y0, 0);
	TU_ASSERT_OK(msgbus_unserve(svc));
	close_bus(bus, url);
}
END_TEST

/* ---- lock-step on one CPU ---------------------------------------------------- */

enum { LS_RECEIVERS = 3, LS_ROUNDS = 200 };

struct ls_recv {
	msgbus_bus *bus;
	msgbus_sub *sub;
	uint32_t id;
	uint32_t got;  /* messages received in order */
	int rc;        /* the first failure, or 0 */
	pthread_t thread;
};

/* Take every message in order and answer each on "ls.ack". */
static void *ls_recv_main(void *arg)
{
	struct ls_recv *r = arg;
	for (uint32_t i = 0; i < LS_ROUNDS; i++) {
		msgbus_msg *m = NULL;
		struct tu_seqmsg v;
		int rc = msgbus_recv(r->sub, &m, TU_WAIT_MS);
		if (rc) {
			r->rc = rc;
			break;
		}
		rc = tu_get_seqmsg(m, &v);
		msgbus_msg_release(m);
		if (rc || v.seq != i) {
			r->rc = MSGBUS_EPROTO;
			break;
		}
		r->got++;
		struct tu_seqmsg a = { r->id, i };
		rc = msgbus_publish(r->bus, "ls.ack", &a, sizeof(a), TU_WAIT_MS);
		if (rc) {
			r->rc = rc;
			break;
		}
	}
	return NULL;
}

/* In a child pinned to one CPU: LS_ROUNDS rounds of one publish to three
 * receivers that each answer, the publisher waiting for the three answers
 * before the next; everybody spins (spin_us at its maximum, 1 s) while it
 * waits. Returns the exit code, the elapsed milliseconds in *ms. */
static int lock_step(const char *url, double *ms)
{
	cpu_set_t one;
	CPU_ZERO(&one);
	CPU_SET(sched_getcpu() < 0 ? 0 : sched_getcpu(), &one);
	if (sched_setaffinity(0, sizeof(one), &one))
		return TU_CHILD_FAIL(2, "sched_setaffinity: %s", strerror(errno));
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	o.spin_us = 1000000;
	msgbus_bus *bus = NULL;
	msgbus_sub *acks = NULL;
	struct ls_recv r[LS_RECEIVERS];
	if (msgbus_open(&bus, url, &o) || msgbus_subscribe(bus, "ls.ack", 0, &acks))
		return TU_CHILD_FAIL(2, "open or subscribe failed");
	for (uint32_t k = 0; k < LS_RECEIVERS; k++) {
		r[k] = (struct ls_recv){ bus, NULL, k, 0, 0, 0 };
		if (msgbus_subscribe(bus, "ls.data", 0, &r[k].sub))
			return TU_CHILD_FAIL(2, "subscribe failed");
	}
	double t0 = tu_now_ms();
	for (uint32_t k = 0; k < LS_RECEIVERS; k++)
		if (pthread_create(&r[k].thread, NULL, ls_recv_main, &r[k]))
			return TU_CHILD_FAIL(2, "pthread_create failed");
	int bad = 0;
	for (uint32_t i = 0; i < LS_ROUNDS && !bad; i++) {
		struct tu_seqmsg v = { 0, i };
		if (msgbus_publish(bus, "ls.data", &v, sizeof(v), TU_WAIT_MS)) {
			bad = TU_CHILD_FAIL(1, "publish %u failed", i);
			break;
		}
		for (uint32_t k = 0; k < LS_RECEIVERS; k++) {
			msgbus_msg *m = NULL;
			struct tu_seqmsg a;
			int rc = msgbus_recv(acks, &m, TU_WAIT_MS);
			if (rc) {
				bad = TU_CHILD_FAIL(1, "round %u: answer %u: %s", i, k,
				                    msgbus_strerror(rc));
				break;
			}
			rc = tu_get_seqmsg(m, &a);
			msgbus_msg_release(m);
			if (rc || a.seq != i) {
				bad = TU_CHILD_FAIL(1, "round %u: answer for %u", i, a.seq);
				break;
			}
		}
	}
	*ms = tu_now_ms() - t0;
	if (bad)
		msgbus_shutdown(bus); /* the receivers stop waiting */
	for (uint32_t k = 0; k < LS_RECEIVERS; k++) {
		pthread_join(r[k].thread, NULL);
		if (!bad && (r[k].rc || r[k].got != LS_ROUNDS))
			bad = TU_CHILD_FAIL(1, "receiver %u: %u in order, %s", k, r[k].got,
			                    msgbus_strerror(r[k].rc));
	}
	msgbus_close(bus);
	return bad;
}

/* Three receivers and a publisher spinning on one CPU finish LS_ROUNDS
 * lock-step rounds in well under what time slices would take: each round
 * needs all four threads to run, and a spinner that did not yield would
 * hold the CPU for its whole slice (milliseconds) four times a round, so
 * 200 rounds would take seconds. Measured on the 2-core VM: 3-4 ms with
 * the yields; 280-290 ms with them while two busy loops load both CPUs;
 * 3.4-3.5 s with mb_yield_cpu made a no-op, on an idle machine. */
#define LS_BOUND_MS 1000.0

START_TEST(test_spinners_yield_to_publisher)
{
	char url[96];
	int fds[2];
	tu_unique_url(url, sizeof(url), "inproc");
	ck_assert_int_eq(pipe(fds), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		double ms = -1;
		int code = lock_step(url, &ms);
		if (write(fds[1], &ms, sizeof(ms)) != (ssize_t)sizeof(ms))
			code = 2;
		_exit(code);
	}
	close(fds[1]);
	double ms = -1;
	ssize_t n = read(fds[0], &ms, sizeof(ms));
	close(fds[0]);
	int st = 0;
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "lock-step child failed (%#x)", st);
	ck_assert_int_eq(n, (ssize_t)sizeof(ms));
	printf("check_spin: %d lock-step rounds, %d spinning receivers, one CPU: %.1f ms\n",
	       LS_ROUNDS, LS_RECEIVERS, ms);
	ck_assert_msg(ms < LS_BOUND_MS, "%d rounds took %.1f ms on one CPU (bound %.0f ms)",
	              LS_ROUNDS, ms, LS_BOUND_MS);
}
END_TEST

/* slock.h: threads that take the lock in turn see each other's writes
 * (a plain counter: ThreadSanitizer checks the ordering), and a waiter
 * behind a holder that keeps it for a while (past the spin and the first,
 * bounded sleep) gets it once, and only once, it is released. */
#define SL_THREADS 3
#define SL_ROUNDS 100000
#define SL_HOLD_MS 60

struct sl_shared {
	struct mb_slock lock;
	unsigned long count;
	atomic_bool released; /* by the holder, before its unlock */
	atomic_bool waiting;  /* the waiter is about to lock */
	bool saw_release;
};

static void *sl_count_main(void *p)
{
	struct sl_shared *sh = p;
	int rounds = tu_valgrind() ? SL_ROUNDS / 100 : SL_ROUNDS;
	for (int i = 0; i < rounds; i++) {
		mb_slock_lock(&sh->lock);
		sh->count++;
		mb_slock_unlock(&sh->lock);
	}
	return NULL;
}

static void *sl_wait_main(void *p)
{
	struct sl_shared *sh = p;
	atomic_store(&sh->waiting, true);
	mb_slock_lock(&sh->lock);
	sh->saw_release = atomic_load(&sh->released);
	mb_slock_unlock(&sh->lock);
	return NULL;
}

START_TEST(test_slock)
{
	struct sl_shared sh = { .count = 0 };
	pthread_t t[SL_THREADS];
	mb_slock_init(&sh.lock);
	for (int i = 0; i < SL_THREADS; i++)
		ck_assert_int_eq(pthread_create(&t[i], NULL, sl_count_main, &sh), 0);
	for (int i = 0; i < SL_THREADS; i++)
		ck_assert_int_eq(pthread_join(t[i], NULL), 0);
	unsigned long want = (unsigned long)SL_THREADS * (tu_valgrind() ? SL_ROUNDS / 100 : SL_ROUNDS);
	ck_assert_uint_eq(sh.count, want);
	ck_assert(mb_slock_try(&sh.lock)); /* free: now held by this thread */
	pthread_t w;
	ck_assert_int_eq(pthread_create(&w, NULL, sl_wait_main, &sh), 0);
	while (!atomic_load(&sh.waiting))
		sched_yield();
	tu_sleep_ms(SL_HOLD_MS); /* the waiter spins, then sleeps */
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	atomic_store(&sh.released, true);
	mb_slock_unlock(&sh.lock);
	ck_assert_int_eq(pthread_join(w, NULL), 0);
	clock_gettime(CLOCK_MONOTONIC, &b);
	double ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
	ck_assert_msg(sh.saw_release, "the waiter took the lock while it was held");
	ck_assert_msg(ms < 1000.0, "the waiter took %.1f ms to get a free lock", ms);
	ck_assert(mb_slock_try(&sh.lock));
	mb_slock_unlock(&sh.lock);
}
END_TEST

Suite *suite_spin(void)
{
	Suite *s = suite_create("spin");
	TCase *tc = tu_tcase("yield", TU_CASE_TIMEOUT);
	tcase_add_loop_test(tc, test_spinning_waits_yield, 0, TU_NSCHEMES);
	if (!tu_valgrind())
		tcase_add_test(tc, test_spinners_yield_to_publisher);
	suite_add_tcase(s, tc);
	tc = tu_tcase("slock", TU_CASE_TIMEOUT);
	tcase_add_test(tc, test_slock);
	suite_add_tcase(s, tc);
	return s;
}
