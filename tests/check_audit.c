/*
 * check_audit.c - promises of the man pages that a user reading only them
 * relies on, found broken by an audit of the documented behaviour.
 */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>

#include "test_util.h"

struct wsub {
	msgbus_bus *bus;
	_Atomic int started, done;
	int rc;
};

static void *wait_subs(void *arg)
{
	struct wsub *w = arg;
	atomic_store(&w->started, 1);
	w->rc = msgbus_wait_subscribers(w->bus, "audit.nobody", 1, -1);
	atomic_store(&w->done, 1);
	return NULL;
}

/* msgbus_shutdown(3): "wakes every thread blocked in one of its calls" and
 * "from then on, the handle's calls return MSGBUS_ECLOSED at once". A
 * msgbus_wait_subscribers(-1) with no subscriber coming was never ended. */
START_TEST(test_wait_subscribers_shutdown)
{
	char url[128];
	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	struct wsub w = { .bus = tu_open(url, NULL) };
	pthread_t t;
	ck_assert_int_eq(pthread_create(&t, NULL, wait_subs, &w), 0);
	while (!atomic_load(&w.started))
		tu_sleep_ms(1);
	tu_sleep_ms(20); /* into its naps */
	TU_ASSERT_OK(msgbus_shutdown(w.bus));
	double end = tu_now_ms() + TU_WAIT_MS;
	while (!atomic_load(&w.done) && tu_now_ms() < end)
		tu_sleep_ms(1);
	ck_assert_msg(atomic_load(&w.done), "wait_subscribers(-1) not ended by shutdown");
	pthread_join(t, NULL);
	TU_ASSERT_RC(w.rc, MSGBUS_ECLOSED);
	/* Later calls, whatever their timeout. */
	TU_ASSERT_RC(msgbus_wait_subscribers(w.bus, "audit.nobody", 0, 0), MSGBUS_ECLOSED);
	TU_ASSERT_RC(msgbus_wait_subscribers(w.bus, "audit.nobody", 1, 10), MSGBUS_ECLOSED);
	TU_ASSERT_OK(msgbus_close(w.bus));
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

Suite *suite_audit(void)
{
	Suite *s = suite_create("audit");
	TCase *tc = tu_tcase("audit", TU_CASE_TIMEOUT);
	tcase_add_loop_test(tc, test_wait_subscribers_shutdown, 0, TU_NSCHEMES);
	suite_add_tcase(s, tc);
	return s;
}
