/*
 * check_edges.c - edges of the argument contracts: every call that takes a
 * timeout_ms refuses a value below -1 with MSGBUS_EINVAL at once, without
 * waiting and without doing anything (msgbus(7) WAITING). Some of them took
 * it as -1 (wait forever) while msgbus_request and msgbus_call_start
 * refused it.
 */
#include <check.h>

#include "test_util.h"

#define EDGES_BAD_TIMEOUT (-2)
/* "At once": far below any wait, far above a slow machine's call. */
#define EDGES_AT_ONCE_MS 1000.0

/* rc of expr, which must return within EDGES_AT_ONCE_MS. */
#define EDGES_EINVAL_AT_ONCE(expr)                                             \
	do {                                                                   \
		double t0_ = tu_now_ms();                                      \
		TU_ASSERT_RC(expr, MSGBUS_EINVAL);                             \
		double took_ = tu_now_ms() - t0_;                              \
		ck_assert_msg(took_ < EDGES_AT_ONCE_MS, "%s took %.0f ms", #expr, \
		              took_);                                          \
	} while (0)

/* Pub/sub: publish, loan, commit, recv, wait_subscribers. With a message
 * queued, recv(-2) used to take it; publish(-2) and commit(-2) published. */
START_TEST(test_pubsub_timeout_below_minus_one)
{
	char url[128];
	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, NULL);
	msgbus_sub *sub;
	msgbus_msg *m = NULL;
	TU_ASSERT_OK(msgbus_subscribe(bus, "edges.x", 0, &sub));

	/* Nothing published. */
	EDGES_EINVAL_AT_ONCE(msgbus_publish(bus, "edges.x", "p", 1, EDGES_BAD_TIMEOUT));
	TU_ASSERT_RC(msgbus_recv(sub, &m, 0), MSGBUS_EAGAIN);

	/* A queued message stays queued. */
	TU_ASSERT_OK(msgbus_publish(bus, "edges.x", "q", 1, -1));
	EDGES_EINVAL_AT_ONCE(msgbus_recv(sub, &m, EDGES_BAD_TIMEOUT));
	ck_assert_ptr_null(m);
	TU_ASSERT_OK(msgbus_recv(sub, &m, 0));
	ck_assert_uint_eq(msgbus_msg_len(m), 1);
	ck_assert(memcmp(msgbus_msg_data(m), "q", 1) == 0);
	msgbus_msg_release(m);
	m = NULL;
	/* An empty subscription does not wait. */
	EDGES_EINVAL_AT_ONCE(msgbus_recv(sub, &m, EDGES_BAD_TIMEOUT));

	/* No loan made; a loan's commit publishes nothing and keeps the loan. */
	msgbus_buf *buf = NULL;
	EDGES_EINVAL_AT_ONCE(msgbus_loan(bus, 8, EDGES_BAD_TIMEOUT, &buf));
	ck_assert_ptr_null(buf);
	TU_ASSERT_OK(msgbus_loan(bus, 8, -1, &buf));
	memcpy(msgbus_loan_data(buf), "loaned", 6);
	EDGES_EINVAL_AT_ONCE(msgbus_commit(buf, "edges.x", 6, EDGES_BAD_TIMEOUT));
	TU_ASSERT_RC(msgbus_recv(sub, &m, 0), MSGBUS_EAGAIN);
	TU_ASSERT_OK(msgbus_commit(buf, "edges.x", 6, -1));
	TU_ASSERT_OK(msgbus_recv(sub, &m, 0));
	ck_assert_uint_eq(msgbus_msg_len(m), 6);
	ck_assert(memcmp(msgbus_msg_data(m), "loaned", 6) == 0);
	msgbus_msg_release(m);

	/* Refused whether the subscribers are there or not. */
	EDGES_EINVAL_AT_ONCE(msgbus_wait_subscribers(bus, "edges.x", 1, EDGES_BAD_TIMEOUT));
	EDGES_EINVAL_AT_ONCE(msgbus_wait_subscribers(bus, "edges.x", 2, EDGES_BAD_TIMEOUT));

	TU_ASSERT_OK(msgbus_unsubscribe(sub));
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

/* Request/reply: request, call_start, service_recv, call_wait. With a
 * request queued, service_recv(-2) used to take it; with a reply there,
 * call_wait(-2) used to take it and end the call. */
START_TEST(test_reqrep_timeout_below_minus_one)
{
	char url[128];
	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, NULL);
	msgbus_service *svc;
	msgbus_req *req = NULL;
	msgbus_call *call = NULL;
	msgbus_msg *m = NULL;
	TU_ASSERT_OK(msgbus_serve(bus, "edges.svc", NULL, NULL, &svc));

	/* No request sent. */
	EDGES_EINVAL_AT_ONCE(msgbus_request(bus, "edges.svc", "r", 1, &m, EDGES_BAD_TIMEOUT));
	ck_assert_ptr_null(m);
	EDGES_EINVAL_AT_ONCE(msgbus_call_start(bus, "edges.svc", "c", 1, EDGES_BAD_TIMEOUT,
	                                       &call));
	ck_assert_ptr_null(call);
	TU_ASSERT_RC(msgbus_service_recv(svc, &req, 0), MSGBUS_EAGAIN);

	/* A queued request stays queued. */
	TU_ASSERT_OK(msgbus_call_start(bus, "edges.svc", "q", 1, TU_WAIT_MS, &call));
	EDGES_EINVAL_AT_ONCE(msgbus_service_recv(svc, &req, EDGES_BAD_TIMEOUT));
	ck_assert_ptr_null(req);
	/* The call is still waiting for its reply: no reply, no end. */
	EDGES_EINVAL_AT_ONCE(msgbus_call_wait(call, &m, EDGES_BAD_TIMEOUT));
	ck_assert_ptr_null(m);
	TU_ASSERT_OK(msgbus_service_recv(svc, &req, 0));
	ck_assert_uint_eq(msgbus_req_len(req), 1);
	TU_ASSERT_OK(msgbus_respond(req, "a", 1));

	/* A reply that is there stays there, and the call stays open. */
	EDGES_EINVAL_AT_ONCE(msgbus_call_wait(call, &m, EDGES_BAD_TIMEOUT));
	ck_assert_ptr_null(m);
	TU_ASSERT_OK(msgbus_call_wait(call, &m, TU_WAIT_MS));
	ck_assert_uint_eq(msgbus_msg_len(m), 1);
	ck_assert(memcmp(msgbus_msg_data(m), "a", 1) == 0);
	msgbus_msg_release(m);

	/* An empty service does not wait. */
	EDGES_EINVAL_AT_ONCE(msgbus_service_recv(svc, &req, EDGES_BAD_TIMEOUT));

	TU_ASSERT_OK(msgbus_unserve(svc));
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

Suite *suite_edges(void)
{
	Suite *s = suite_create("edges");
	TCase *tc = tu_tcase("edges", TU_CASE_TIMEOUT);
	tcase_add_loop_test(tc, test_pubsub_timeout_below_minus_one, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_reqrep_timeout_below_minus_one, 0, TU_NSCHEMES);
	suite_add_tcase(s, tc);
	return s;
}
