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

/* msgbus_respond(3): "A reply of up to 216 bytes is copied straight to the
 * requester"; a longer one needs a large buffer, and with none free both
 * sides get MSGBUS_ELIMIT. The pages said 232 after the call entry grew a
 * descriptor bell (lib/shm/layout.h MB_CALL_INLINE). */
#define AUDIT_REPLY_INLINE 216

static int reply_of(msgbus_bus *bus, msgbus_service *svc, size_t len, int *wait_rc)
{
	static const char payload[AUDIT_REPLY_INLINE + 1];
	msgbus_call *call = NULL;
	msgbus_req *req = NULL;
	msgbus_msg *m = NULL;
	TU_ASSERT_OK(msgbus_call_start(bus, "audit.svc", "q", 1, TU_WAIT_MS, &call));
	TU_ASSERT_OK(msgbus_service_recv(svc, &req, TU_WAIT_MS));
	int rc = msgbus_respond(req, payload, len);
	*wait_rc = msgbus_call_wait(call, &m, TU_WAIT_MS);
	if (*wait_rc == MSGBUS_OK) {
		ck_assert_uint_eq(msgbus_msg_len(m), len);
		msgbus_msg_release(m);
	}
	return rc;
}

START_TEST(test_reply_inline_limit)
{
	char url[128];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	o.large_buffers = 2;
	o.crash_bound_ms = 40; /* respond waits crash_bound_ms / 4 for a buffer */
	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, &o);
	msgbus_service *svc = NULL;
	msgbus_buf *loan[2];
	int wrc;
	TU_ASSERT_OK(msgbus_serve(bus, "audit.svc", NULL, NULL, &svc));
	TU_ASSERT_OK(msgbus_loan(bus, 1, 0, &loan[0])); /* no large buffer left */
	TU_ASSERT_OK(msgbus_loan(bus, 1, 0, &loan[1]));
	TU_ASSERT_OK(reply_of(bus, svc, AUDIT_REPLY_INLINE, &wrc));
	TU_ASSERT_OK(wrc);
	TU_ASSERT_RC(reply_of(bus, svc, AUDIT_REPLY_INLINE + 1, &wrc), MSGBUS_ELIMIT);
	TU_ASSERT_RC(wrc, MSGBUS_ELIMIT);
	msgbus_loan_abort(loan[0]);
	msgbus_loan_abort(loan[1]);
	TU_ASSERT_OK(reply_of(bus, svc, AUDIT_REPLY_INLINE + 1, &wrc));
	TU_ASSERT_OK(wrc);
	TU_ASSERT_OK(msgbus_unserve(svc));
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

/* msgbus_shutdown(3): "from then on, the handle's calls return
 * MSGBUS_ECLOSED at once". msgbus_listen and msgbus_connect returned OK
 * and started link threads on a handle that was shut down. */
START_TEST(test_link_after_shutdown)
{
	char url[128];
	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *b = tu_open(url, NULL);
	TU_ASSERT_OK(msgbus_shutdown(b));
	int port = -1;
	TU_ASSERT_RC(msgbus_listen(b, "tcp://127.0.0.1:0", &port), MSGBUS_ECLOSED);
	TU_ASSERT_RC(msgbus_connect(b, "tcp://127.0.0.1:9"), MSGBUS_ECLOSED);
	TU_ASSERT_RC(msgbus_connect(b, "nats://127.0.0.1:9"), MSGBUS_ECLOSED);
	size_t n = 1;
	TU_ASSERT_OK(msgbus_links(b, NULL, 0, &n));
	ck_assert_uint_eq(n, 0);
	TU_ASSERT_OK(msgbus_close(b));
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

/* msgbus_open(3) allows max_msg_size from 1024; msgbus_listen(3) promises
 * links between any two buses. A bus with max_msg_size below 3072
 * announced a frame limit under the protocol's 4096 minimum in its HELLO,
 * so the peer refused every handshake and the link never came up. */
START_TEST(test_link_small_max_msg_size)
{
	char url_a[128], url_b[128], peer[64];
	tu_unique_url(url_a, sizeof(url_a), "inproc");
	tu_unique_url(url_b, sizeof(url_b), "inproc");
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	o.max_msg_size = 1024;
	msgbus_bus *a = tu_open(url_a, NULL), *b = tu_open(url_b, &o);
	int port;
	TU_ASSERT_OK(msgbus_listen(a, "tcp://127.0.0.1:0", &port));
	snprintf(peer, sizeof(peer), "tcp://127.0.0.1:%d", port);
	msgbus_sub *sub;
	msgbus_msg *m;
	TU_ASSERT_OK(msgbus_subscribe(b, "small.x", 0, &sub));
	TU_ASSERT_OK(msgbus_connect(b, peer));
	TU_ASSERT_OK(msgbus_wait_subscribers(a, "small.x", 1, TU_WAIT_MS));
	char data[1024];
	memset(data, 'q', sizeof(data));
	TU_ASSERT_OK(msgbus_publish(a, "small.x", data, sizeof(data), TU_WAIT_MS));
	TU_ASSERT_OK(msgbus_recv(sub, &m, TU_WAIT_MS));
	ck_assert_uint_eq(msgbus_msg_len(m), sizeof(data));
	ck_assert(memcmp(msgbus_msg_data(m), data, sizeof(data)) == 0);
	msgbus_msg_release(m);
	TU_ASSERT_OK(msgbus_close(b));
	TU_ASSERT_OK(msgbus_close(a));
}
END_TEST

Suite *suite_audit(void)
{
	Suite *s = suite_create("audit");
	TCase *tc = tu_tcase("audit", TU_CASE_TIMEOUT);
	tcase_add_loop_test(tc, test_wait_subscribers_shutdown, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_reply_inline_limit, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_link_after_shutdown, 0, TU_NSCHEMES);
	tcase_add_test(tc, test_link_small_max_msg_size);
	suite_add_tcase(s, tc);
	return s;
}
