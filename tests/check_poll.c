/*
 * check_poll.c - pollable descriptors (msgbus_sub_fd, msgbus_service_fd,
 * msgbus_call_fd): one epoll loop over subscriptions on two buses, a
 * service and an asynchronous call, fed by other processes; readiness after
 * each kind of event; level-triggered (readable until drained); no lost
 * wake-up over a million messages; what a fork()ed child sees; bad
 * arguments. Every timeout below is a failure bound, never a pause.
 */
#include <check.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/epoll.h>

#include "platform/doorbell.h"
#include "pubsub/sub.h"
#include "test_util.h"

/* Is fd readable within ms (0: now)? */
static int readable(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int n;
	while ((n = poll(&p, 1, ms)) < 0 && errno == EINTR)
		;
	return n == 1 && (p.revents & POLLIN);
}

static void noop_cb(const msgbus_msg *m, void *arg)
{
	(void)m;
	(void)arg;
}

static void noop_serve(msgbus_req *r, void *arg)
{
	(void)arg;
	msgbus_respond(r, NULL, 0);
}

START_TEST(test_poll_args)
{
	char url[96];
	tu_unique_url(url, sizeof(url), "inproc");
	msgbus_bus *bus = tu_open(url, NULL);
	msgbus_sub *sub, *cbsub;
	msgbus_service *svc, *cbsvc;
	msgbus_call *call;
	int fd = -1;

	TU_ASSERT_OK(msgbus_subscribe(bus, "a.b", 0, &sub));
	TU_ASSERT_OK(msgbus_subscribe_cb(bus, "a.c", 0, noop_cb, NULL, &cbsub));
	TU_ASSERT_OK(msgbus_serve(bus, "pa.svc", NULL, NULL, &svc));
	TU_ASSERT_OK(msgbus_serve(bus, "pa.cb", noop_serve, NULL, &cbsvc));
	TU_ASSERT_OK(msgbus_call_start(bus, "pa.svc", "x", 1, 10000, &call));

	TU_ASSERT_RC(msgbus_sub_fd(NULL, &fd), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_sub_fd(sub, NULL), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_sub_fd(cbsub, &fd), MSGBUS_EINVAL); /* a callback's */
	TU_ASSERT_RC(msgbus_service_fd(NULL, &fd), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_service_fd(svc, NULL), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_service_fd(cbsvc, &fd), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_call_fd(NULL, &fd), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_call_fd(call, NULL), MSGBUS_EINVAL);
	ck_assert_int_eq(fd, -1);

	/* The same descriptor every time. */
	int a, b;
	TU_ASSERT_OK(msgbus_sub_fd(sub, &a));
	TU_ASSERT_OK(msgbus_sub_fd(sub, &b));
	ck_assert_int_ge(a, 0);
	ck_assert_int_eq(a, b);
	TU_ASSERT_OK(msgbus_service_fd(svc, &a));
	TU_ASSERT_OK(msgbus_service_fd(svc, &b));
	ck_assert_int_eq(a, b);
	TU_ASSERT_OK(msgbus_call_fd(call, &a));
	TU_ASSERT_OK(msgbus_call_fd(call, &b));
	ck_assert_int_eq(a, b);
	ck_assert_int_eq(fcntl(a, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
	msgbus_call_cancel(call);
	TU_ASSERT_OK(msgbus_close(bus));
}
END_TEST

/* Readable while a receive would not wait, and only then. */
START_TEST(test_poll_sub_level)
{
	char url[96];
	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, NULL);
	msgbus_sub *sub;
	msgbus_msg *m;
	int fd;

	TU_ASSERT_OK(msgbus_subscribe(bus, "lv.*", 0, &sub));
	TU_ASSERT_OK(msgbus_sub_fd(sub, &fd));
	ck_assert(!readable(fd, 0));
	for (int i = 0; i < 3; i++)
		TU_ASSERT_OK(msgbus_publish(bus, "lv.x", &i, sizeof(i), -1));
	ck_assert(readable(fd, TU_WAIT_MS));
	for (int i = 0; i < 3; i++) {
		/* Still readable: level-triggered, until a receive finds none. */
		ck_assert(readable(fd, 0));
		TU_ASSERT_OK(msgbus_recv(sub, &m, 0));
		ck_assert_int_eq(*(const int *)msgbus_msg_data(m), i);
		msgbus_msg_release(m);
	}
	TU_ASSERT_RC(msgbus_recv(sub, &m, 0), MSGBUS_EAGAIN);
	ck_assert(!readable(fd, 0));
	/* Once more, and with a receive that waits and times out. */
	TU_ASSERT_RC(msgbus_recv(sub, &m, 1), MSGBUS_ETIMEDOUT);
	ck_assert(!readable(fd, 0));
	TU_ASSERT_OK(msgbus_publish(bus, "lv.y", "z", 1, -1));
	ck_assert(readable(fd, TU_WAIT_MS));
	TU_ASSERT_OK(msgbus_recv(sub, &m, 0));
	msgbus_msg_release(m);
	TU_ASSERT_RC(msgbus_recv(sub, &m, 0), MSGBUS_EAGAIN);
	ck_assert(!readable(fd, 0));
	/* Closes with its object. */
	TU_ASSERT_OK(msgbus_unsubscribe(sub));
	ck_assert_int_eq(fcntl(fd, F_GETFD), -1);
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

/* Nothing is paid by anyone who never asked for a descriptor: publishing
 * to a subscription, and calling a service, that never called
 * msgbus_sub_fd / msgbus_service_fd looks at no bell and sends no doorbell
 * datagram, not even when it wakes a sleeping receiver (the slow path,
 * which looks at the bell, finds it OFF and sends nothing). Once the
 * descriptor is asked for, the same publish or call rings it, once per
 * arming. Counted in the publishing thread through --wrap (tu_bell_looks:
 * mb_bell_ring, tu_doorbell_rings: mb_doorbell_ring). */
struct sleeper {
	msgbus_sub *sub;
	int rc;
};

static void *sleeper_main(void *arg)
{
	struct sleeper *sl = arg;
	msgbus_msg *m = NULL;
	sl->rc = msgbus_recv(sl->sub, &m, TU_WAIT_MS);
	if (sl->rc == MSGBUS_OK)
		msgbus_msg_release(m);
	return NULL;
}

static void drain_sub(msgbus_sub *sub, int n)
{
	msgbus_msg *m;
	for (int i = 0; i < n; i++) {
		TU_ASSERT_OK(msgbus_recv(sub, &m, 0));
		msgbus_msg_release(m);
	}
	TU_ASSERT_RC(msgbus_recv(sub, &m, 0), MSGBUS_EAGAIN);
}

START_TEST(test_poll_nothing_paid)
{
	enum { N = 1000 };
	char url[96];
	msgbus_sub *sub;
	msgbus_service *svc;
	msgbus_call *call[2];
	msgbus_req *req;
	msgbus_msg *m;
	int fd;
	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, NULL);
	TU_ASSERT_OK(msgbus_subscribe(bus, "np.x", 0, &sub));
	TU_ASSERT_OK(msgbus_serve(bus, "np.svc", NULL, NULL, &svc));

	/* No descriptor, nobody waiting: no bell is even looked at. */
	unsigned long looks0 = tu_bell_looks, rings0 = tu_doorbell_rings;
	for (int i = 0; i < N; i++)
		TU_ASSERT_OK(msgbus_publish(bus, "np.x", &i, sizeof(i), -1));
	TU_ASSERT_OK(msgbus_call_start(bus, "np.svc", "q", 1, TU_WAIT_MS, &call[0]));
	ck_assert_msg(tu_bell_looks == looks0 && tu_doorbell_rings == rings0,
	              "no descriptor: %lu bell looks, %lu doorbell datagrams",
	              tu_bell_looks - looks0, tu_doorbell_rings - rings0);
	drain_sub(sub, N);

	/* No descriptor, a receiver asleep (or still spinning): woken
	 * without a datagram. */
	struct sleeper sl = { sub, -1 };
	pthread_t th;
	ck_assert_int_eq(pthread_create(&th, NULL, sleeper_main, &sl), 0);
	tu_sleep_ms(50);
	looks0 = tu_bell_looks;
	TU_ASSERT_OK(msgbus_publish(bus, "np.x", "w", 1, -1));
	ck_assert_int_eq(pthread_join(th, NULL), 0);
	TU_ASSERT_OK(sl.rc);
	ck_assert_msg(tu_doorbell_rings == rings0, "waking a sleeper sent %lu datagrams",
	              tu_doorbell_rings - rings0);
	printf("check_poll (%s): waking a receiver without a descriptor: %lu bell looks, "
	       "0 datagrams\n",
	       tu_scheme(_i), tu_bell_looks - looks0);

	/* Asked for: rung by the next publish, once until a receive re-arms. */
	TU_ASSERT_OK(msgbus_sub_fd(sub, &fd));
	ck_assert(!readable(fd, 0));
	rings0 = tu_doorbell_rings;
	for (int i = 0; i < N; i++)
		TU_ASSERT_OK(msgbus_publish(bus, "np.x", &i, sizeof(i), -1));
	ck_assert_uint_eq(tu_doorbell_rings - rings0, 1);
	ck_assert(readable(fd, TU_WAIT_MS));
	drain_sub(sub, N);
	ck_assert(!readable(fd, 0));
	TU_ASSERT_OK(msgbus_publish(bus, "np.x", "a", 1, -1));
	ck_assert_uint_eq(tu_doorbell_rings - rings0, 2);
	ck_assert(readable(fd, TU_WAIT_MS));
	drain_sub(sub, 1);

	/* The same for a service: the worker asks for its descriptor after
	 * the first call; the second call rings it. */
	TU_ASSERT_OK(msgbus_service_fd(svc, &fd));
	TU_ASSERT_OK(msgbus_service_recv(svc, &req, 0)); /* the first call */
	TU_ASSERT_OK(msgbus_respond(req, "r", 1));
	TU_ASSERT_RC(msgbus_service_recv(svc, &req, 0), MSGBUS_EAGAIN);
	ck_assert(!readable(fd, 0));
	rings0 = tu_doorbell_rings;
	TU_ASSERT_OK(msgbus_call_start(bus, "np.svc", "q", 1, TU_WAIT_MS, &call[1]));
	ck_assert_uint_eq(tu_doorbell_rings - rings0, 1);
	ck_assert(readable(fd, TU_WAIT_MS));
	TU_ASSERT_OK(msgbus_service_recv(svc, &req, 0));
	TU_ASSERT_OK(msgbus_respond(req, "r", 1));
	for (int k = 0; k < 2; k++) {
		TU_ASSERT_OK(msgbus_call_wait(call[k], &m, TU_WAIT_MS));
		msgbus_msg_release(m);
	}
	TU_ASSERT_OK(msgbus_unserve(svc));
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

/* A worker's and a call's descriptors close with their objects too: at
 * msgbus_unserve, and when the call ends (cancelled, or its outcome read). */
START_TEST(test_poll_fds_close)
{
	char url[96];
	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, NULL);
	msgbus_service *svc;
	msgbus_call *c1, *c2;
	msgbus_req *req;
	msgbus_msg *m;
	int sfd, cfd1, cfd2;

	TU_ASSERT_OK(msgbus_serve(bus, "fc.svc", NULL, NULL, &svc));
	TU_ASSERT_OK(msgbus_service_fd(svc, &sfd));
	TU_ASSERT_OK(msgbus_call_start(bus, "fc.svc", "a", 1, TU_WAIT_MS, &c1));
	TU_ASSERT_OK(msgbus_call_fd(c1, &cfd1));
	TU_ASSERT_OK(msgbus_call_start(bus, "fc.svc", "b", 1, TU_WAIT_MS, &c2));
	TU_ASSERT_OK(msgbus_call_fd(c2, &cfd2));
	ck_assert_int_ne(fcntl(cfd1, F_GETFD), -1);
	msgbus_call_cancel(c1);
	ck_assert_int_eq(fcntl(cfd1, F_GETFD), -1);
	/* c2's outcome: answered, then read. */
	/* c1's request may still be queued (its caller left: the answer
	 * goes nowhere) or already dropped. */
	for (char d = 0; d != 'b';) {
		TU_ASSERT_OK(msgbus_service_recv(svc, &req, TU_WAIT_MS));
		d = *(const char *)msgbus_req_data(req);
		ck_assert(d == 'a' || d == 'b');
		int rc = msgbus_respond(req, "r", 1);
		if (d == 'b')
			TU_ASSERT_OK(rc);
	}
	ck_assert(readable(cfd2, TU_WAIT_MS));
	TU_ASSERT_OK(msgbus_call_wait(c2, &m, 0));
	ck_assert_int_eq(fcntl(cfd2, F_GETFD), -1);
	ck_assert_uint_eq(msgbus_msg_len(m), 1);
	msgbus_msg_release(m);
	ck_assert_int_ne(fcntl(sfd, F_GETFD), -1);
	TU_ASSERT_OK(msgbus_unserve(svc));
	ck_assert_int_eq(fcntl(sfd, F_GETFD), -1);
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

/* A ring's datagram that lands after the drain before an arming (its
 * sender was preempted between its CAS and its sendto): the next empty
 * receive takes it, and the arming stands. */
START_TEST(test_poll_late_datagram)
{
	char url[96];
	tu_unique_url(url, sizeof(url), "inproc");
	msgbus_bus *bus = tu_open(url, NULL);
	msgbus_sub *sub;
	msgbus_msg *m;
	int fd;
	TU_ASSERT_OK(msgbus_subscribe(bus, "late.x", 0, &sub));
	TU_ASSERT_OK(msgbus_sub_fd(sub, &fd));
	ck_assert(!readable(fd, 0));
	mb_doorbell_ring(sub->db.id);
	ck_assert(readable(fd, TU_WAIT_MS));
	TU_ASSERT_RC(msgbus_recv(sub, &m, 0), MSGBUS_EAGAIN);
	ck_assert(!readable(fd, 0));
	TU_ASSERT_OK(msgbus_publish(bus, "late.x", "y", 1, -1));
	ck_assert(readable(fd, TU_WAIT_MS));
	TU_ASSERT_OK(msgbus_recv(sub, &m, 0));
	msgbus_msg_release(m);
	TU_ASSERT_OK(msgbus_close(bus));
}
END_TEST

/* ---- one epoll loop, publishers and requesters in other processes ------- */

#define LOOP_MSGS 2000
#define LOOP_REQS 200

struct loop_urls {
	char a[96], b[96];
};

/* Child: publishes LOOP_MSGS to each of two subjects on bus A. */
static int publisher_a(void *arg)
{
	const struct loop_urls *u = arg;
	msgbus_bus *bus;
	if (msgbus_open(&bus, u->a, NULL))
		return TU_CHILD_FAIL(2, "open %s", u->a);
	for (uint32_t i = 0; i < LOOP_MSGS; i++) {
		if (msgbus_publish(bus, "ev.one", &i, sizeof(i), 10000) ||
		    msgbus_publish(bus, "ev.two", &i, sizeof(i), 10000))
			return TU_CHILD_FAIL(3, "publish %u", i);
	}
	msgbus_close(bus);
	return 0;
}

/* Child: serves "ev.echo" on bus B, publishes to ev.three and makes
 * LOOP_REQS requests to "ev.loop", served by the parent's loop. */
static void echo(msgbus_req *r, void *arg)
{
	(void)arg;
	msgbus_respond(r, msgbus_req_data(r), msgbus_req_len(r));
}

static int publisher_b(void *arg)
{
	const struct loop_urls *u = arg;
	msgbus_bus *bus;
	msgbus_service *svc;
	if (msgbus_open(&bus, u->b, NULL))
		return TU_CHILD_FAIL(2, "open %s", u->b);
	if (msgbus_serve(bus, "ev.echo", echo, NULL, &svc))
		return TU_CHILD_FAIL(3, "serve");
	for (uint32_t i = 0; i < LOOP_MSGS; i++)
		if (msgbus_publish(bus, "ev.three", &i, sizeof(i), 10000))
			return TU_CHILD_FAIL(4, "publish %u", i);
	for (uint32_t i = 0; i < LOOP_REQS; i++) {
		msgbus_msg *m;
		int rc = msgbus_request(bus, "ev.loop", &i, sizeof(i), &m, 10000);
		if (rc)
			return TU_CHILD_FAIL(5, "request %u: %s", i, msgbus_strerror(rc));
		uint32_t v;
		if (msgbus_msg_len(m) != sizeof(v))
			return TU_CHILD_FAIL(6, "reply length");
		memcpy(&v, msgbus_msg_data(m), sizeof(v));
		msgbus_msg_release(m);
		if (v != i * 3)
			return TU_CHILD_FAIL(7, "reply %u to %u", v, i);
	}
	/* Stay (serving ev.echo) until the parent says it is done. */
	msgbus_sub *done;
	msgbus_msg *m;
	if (msgbus_subscribe(bus, "ev.done", 0, &done))
		return TU_CHILD_FAIL(8, "subscribe");
	if (msgbus_publish(bus, "ev.ready", "", 0, 10000))
		return TU_CHILD_FAIL(9, "ready");
	if (msgbus_recv(done, &m, 30000))
		return TU_CHILD_FAIL(10, "done");
	msgbus_msg_release(m);
	msgbus_close(bus);
	return 0;
}

enum { T_ONE, T_TWO, T_THREE, T_READY, T_SVC, T_CALL, T_N };

START_TEST(test_poll_epoll_loop)
{
	struct loop_urls u;
	tu_unique_url(u.a, sizeof(u.a), "shm");
	tu_unique_url(u.b, sizeof(u.b), "shm");
	msgbus_bus *a = tu_open(u.a, NULL), *b = tu_open(u.b, NULL);
	msgbus_sub *subs[4];
	msgbus_service *svc;
	msgbus_call *call = NULL;
	int ep = epoll_create1(EPOLL_CLOEXEC), fd;
	ck_assert_int_ge(ep, 0);

	TU_ASSERT_OK(msgbus_subscribe(a, "ev.one", 0, &subs[T_ONE]));
	TU_ASSERT_OK(msgbus_subscribe(a, "ev.two", 0, &subs[T_TWO]));
	TU_ASSERT_OK(msgbus_subscribe(b, "ev.three", 0, &subs[T_THREE]));
	TU_ASSERT_OK(msgbus_subscribe(b, "ev.ready", 0, &subs[T_READY]));
	TU_ASSERT_OK(msgbus_serve(b, "ev.loop", NULL, NULL, &svc));
	for (int k = 0; k < 4; k++) {
		TU_ASSERT_OK(msgbus_sub_fd(subs[k], &fd));
		struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)k };
		ck_assert_int_eq(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev), 0);
	}
	TU_ASSERT_OK(msgbus_service_fd(svc, &fd));
	struct epoll_event sev = { .events = EPOLLIN, .data.u32 = T_SVC };
	ck_assert_int_eq(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &sev), 0);

	pid_t pa = tu_spawn(publisher_a, &u), pb = tu_spawn(publisher_b, &u);
	uint32_t next[3] = { 0, 0, 0 }, reqs = 0, replies = 0;
	bool ready = false;
	while (next[0] < LOOP_MSGS || next[1] < LOOP_MSGS || next[2] < LOOP_MSGS ||
	       reqs < LOOP_REQS || !ready || replies < 1) {
		struct epoll_event evs[8];
		int n = epoll_wait(ep, evs, 8, TU_WAIT_MS);
		if (n < 0 && errno == EINTR)
			continue;
		ck_assert_msg(n > 0, "no event within %d ms: msgs %u %u %u, reqs %u, ready %d, "
		              "replies %u", TU_WAIT_MS, next[0], next[1], next[2], reqs,
		              ready, replies);
		for (int k = 0; k < n; k++) {
			uint32_t t = evs[k].data.u32;
			msgbus_msg *m;
			msgbus_req *rq;
			int rc;
			if (t < T_READY) {
				while ((rc = msgbus_recv(subs[t], &m, 0)) == 0) {
					uint32_t v;
					memcpy(&v, msgbus_msg_data(m), sizeof(v));
					ck_assert_uint_eq(v, next[t]); /* per-publisher order */
					next[t]++;
					msgbus_msg_release(m);
				}
				TU_ASSERT_RC(rc, MSGBUS_EAGAIN);
			} else if (t == T_READY) {
				while ((rc = msgbus_recv(subs[t], &m, 0)) == 0) {
					msgbus_msg_release(m);
					ready = true;
					/* The child's worker is up: an async call to it. */
					TU_ASSERT_OK(msgbus_call_start(b, "ev.echo", "hello", 5, 10000,
					                               &call));
					TU_ASSERT_OK(msgbus_call_fd(call, &fd));
					struct epoll_event cev = { .events = EPOLLIN, .data.u32 = T_CALL };
					ck_assert_int_eq(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev), 0);
				}
				TU_ASSERT_RC(rc, MSGBUS_EAGAIN);
			} else if (t == T_SVC) {
				while ((rc = msgbus_service_recv(svc, &rq, 0)) == 0) {
					uint32_t v;
					ck_assert_uint_eq(msgbus_req_len(rq), sizeof(v));
					memcpy(&v, msgbus_req_data(rq), sizeof(v));
					v *= 3;
					TU_ASSERT_OK(msgbus_respond(rq, &v, sizeof(v)));
					reqs++;
				}
				TU_ASSERT_RC(rc, MSGBUS_EAGAIN);
			} else {
				rc = msgbus_call_wait(call, &m, 0);
				if (rc == MSGBUS_EAGAIN)
					continue; /* a timer look; the call goes on */
				TU_ASSERT_OK(rc);
				ck_assert_uint_eq(msgbus_msg_len(m), 5);
				ck_assert(memcmp(msgbus_msg_data(m), "hello", 5) == 0);
				msgbus_msg_release(m);
				call = NULL; /* its descriptor left the epoll set with it */
				replies++;
			}
		}
	}
	TU_ASSERT_CHILD_OK(pa, TU_WAIT_MS);
	TU_ASSERT_OK(msgbus_publish(b, "ev.done", "", 0, TU_WAIT_MS));
	TU_ASSERT_CHILD_OK(pb, TU_WAIT_MS);
	close(ep);
	TU_ASSERT_OK(msgbus_close(a));
	TU_ASSERT_OK(msgbus_close(b));
	TU_ASSERT_NO_SEGMENT(u.a);
	TU_ASSERT_NO_SEGMENT(u.b);
}
END_TEST

/* ---- readiness after each kind of event ---------------------------------- */

/* A request and a reply, in one process: the service fd, then the call's. */
START_TEST(test_poll_request_reply)
{
	char url[96];
	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, NULL);
	msgbus_service *svc;
	msgbus_call *call;
	msgbus_req *rq, *rq2;
	msgbus_msg *m;
	int sfd, cfd;

	TU_ASSERT_OK(msgbus_serve(bus, "rr.one", NULL, NULL, &svc));
	TU_ASSERT_OK(msgbus_service_fd(svc, &sfd));
	ck_assert(!readable(sfd, 0));
	TU_ASSERT_OK(msgbus_call_start(bus, "rr.one", "q", 1, 10000, &call));
	TU_ASSERT_OK(msgbus_call_fd(call, &cfd));
	ck_assert(!readable(cfd, 0));
	ck_assert(readable(sfd, TU_WAIT_MS)); /* a request */
	TU_ASSERT_OK(msgbus_service_recv(svc, &rq, 0));
	ck_assert(readable(sfd, 0)); /* level: until a receive finds none */
	TU_ASSERT_RC(msgbus_service_recv(svc, &rq2, 0), MSGBUS_EAGAIN);
	ck_assert(!readable(sfd, 0));
	ck_assert(!readable(cfd, 0));
	TU_ASSERT_OK(msgbus_respond(rq, "r", 1));
	ck_assert(readable(cfd, TU_WAIT_MS)); /* a reply */
	TU_ASSERT_OK(msgbus_call_wait(call, &m, 0));
	ck_assert_uint_eq(msgbus_msg_len(m), 1);
	msgbus_msg_release(m);
	TU_ASSERT_OK(msgbus_unserve(svc));
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

/* A call that nobody answers: its descriptor is readable at the deadline. */
START_TEST(test_poll_call_deadline)
{
	char url[96];
	tu_unique_url(url, sizeof(url), "inproc");
	msgbus_bus *bus = tu_open(url, NULL);
	msgbus_service *svc;
	msgbus_call *call;
	msgbus_msg *m;
	int cfd;

	TU_ASSERT_OK(msgbus_serve(bus, "rr.mute", NULL, NULL, &svc));
	TU_ASSERT_OK(msgbus_call_start(bus, "rr.mute", "q", 1, 100, &call));
	TU_ASSERT_OK(msgbus_call_fd(call, &cfd));
	double t0 = tu_now_ms();
	ck_assert(readable(cfd, TU_WAIT_MS));
	ck_assert_msg(tu_now_ms() - t0 >= 50, "readable %.1f ms before its deadline",
	              100 - (tu_now_ms() - t0));
	TU_ASSERT_RC(msgbus_call_wait(call, &m, 0), MSGBUS_ETIMEDOUT);
	TU_ASSERT_OK(msgbus_close(bus));
}
END_TEST

/* msgbus_shutdown makes every descriptor of the handle readable, and the
 * receives say MSGBUS_ECLOSED. */
START_TEST(test_poll_shutdown)
{
	char url[96];
	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, NULL);
	msgbus_sub *sub;
	msgbus_service *svc;
	msgbus_call *call;
	msgbus_msg *m;
	msgbus_req *rq, *rq2;
	int fds[3];

	TU_ASSERT_OK(msgbus_subscribe(bus, "sd.x", 0, &sub));
	TU_ASSERT_OK(msgbus_serve(bus, "sd.svc", NULL, NULL, &svc));
	TU_ASSERT_OK(msgbus_sub_fd(sub, &fds[0]));
	TU_ASSERT_OK(msgbus_service_fd(svc, &fds[1]));
	/* A call whose request the worker holds, unanswered. */
	TU_ASSERT_OK(msgbus_call_start(bus, "sd.svc", "q", 1, 60000, &call));
	ck_assert(readable(fds[1], TU_WAIT_MS));
	TU_ASSERT_OK(msgbus_service_recv(svc, &rq, 0));
	TU_ASSERT_RC(msgbus_service_recv(svc, &rq2, 0), MSGBUS_EAGAIN);
	TU_ASSERT_OK(msgbus_call_fd(call, &fds[2]));
	for (int k = 0; k < 3; k++)
		ck_assert_msg(!readable(fds[k], 0), "fd %d readable before shutdown", k);
	TU_ASSERT_OK(msgbus_shutdown(bus));
	for (int k = 0; k < 3; k++)
		ck_assert_msg(readable(fds[k], TU_WAIT_MS), "fd %d not readable", k);
	TU_ASSERT_RC(msgbus_recv(sub, &m, 0), MSGBUS_ECLOSED);
	TU_ASSERT_RC(msgbus_service_recv(svc, &rq2, 0), MSGBUS_ECLOSED);
	TU_ASSERT_RC(msgbus_call_wait(call, &m, 0), MSGBUS_ECLOSED);
	ck_assert(readable(fds[0], 0)); /* and stays so */
	(void)msgbus_respond(rq, "r", 1); /* frees it, whatever it returns */
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

/* ---- a million messages: no lost wake-up ---------------------------------- */

struct stress_arg {
	char url[96];
	uint32_t n, gap; /* gap: busy rounds between two publishes */
};

static int stress_publisher(void *arg)
{
	const struct stress_arg *s = arg;
	msgbus_bus *bus;
	if (msgbus_open(&bus, s->url, NULL))
		return TU_CHILD_FAIL(2, "open");
	for (uint32_t i = 0; i < s->n; i++) {
		int rc = msgbus_publish(bus, "st.x", &i, sizeof(i), 30000);
		for (volatile uint32_t k = 0; k < s->gap; k++)
			;
		if (rc)
			return TU_CHILD_FAIL(3, "publish %u: %s", i, msgbus_strerror(rc));
	}
	msgbus_close(bus);
	return 0;
}

/* _i = 0: as fast as it goes (the reader rarely runs dry); 1: with a gap
 * after each message, so the reader drains, re-arms and waits on the
 * descriptor for a large share of them. */
START_TEST(test_poll_stress)
{
	struct stress_arg s;
	s.n = tu_valgrind() ? 20000 : _i ? 200000 : 1000000;
	s.gap = _i ? 20000 : 0;
	tu_unique_url(s.url, sizeof(s.url), "shm");
	/* A small inbox: the publisher waits for room again and again, so the
	 * loop must give room back before it waits on the descriptor. */
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	o.inbox_size = 16384;
	o.spin_us = 1;
	msgbus_bus *bus = tu_open(s.url, &o);
	msgbus_sub *sub;
	int fd;
	TU_ASSERT_OK(msgbus_subscribe(bus, "st.x", 0, &sub));
	TU_ASSERT_OK(msgbus_sub_fd(sub, &fd));
	double t0 = tu_now_ms();
	pid_t pid = tu_spawn(stress_publisher, &s);
	uint32_t next = 0, polls = 0, empty = 0;
	while (next < s.n) {
		ck_assert_msg(readable(fd, TU_WAIT_MS), "lost wake-up at message %u of %u", next,
		              s.n);
		polls++;
		msgbus_msg *m;
		int rc;
		while ((rc = msgbus_recv(sub, &m, 0)) == 0) {
			uint32_t v;
			memcpy(&v, msgbus_msg_data(m), sizeof(v));
			ck_assert_uint_eq(v, next);
			next++;
			msgbus_msg_release(m);
		}
		TU_ASSERT_RC(rc, MSGBUS_EAGAIN);
		empty++;
	}
	TU_ASSERT_CHILD_OK(pid, TU_WAIT_MS);
	printf("poll stress (gap %u): %u messages in %.0f ms, %u polls, %u ran dry\n", s.gap,
	       next, tu_now_ms() - t0, polls, empty);
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(s.url);
}
END_TEST

/* ---- a fork()ed child ------------------------------------------------------ */

struct fork_arg {
	char url[96];
	msgbus_sub *sub, *plain;
	msgbus_service *svc;
	msgbus_call *call;
	int fd, sfd, cfd;
};

static int fork_child(void *arg)
{
	const struct fork_arg *f = arg;
	int fd;
	/* The inherited descriptor: same number, never readable, and polling
	 * it takes nothing from the parent's. */
	if (msgbus_sub_fd(f->sub, &fd) || fd != f->fd)
		return TU_CHILD_FAIL(2, "inherited fd %d, want %d", fd, f->fd);
	if (readable(fd, 0))
		return TU_CHILD_FAIL(3, "inherited descriptor readable");
	if (msgbus_service_fd(f->svc, &fd) || fd != f->sfd || readable(fd, 0))
		return TU_CHILD_FAIL(3, "inherited service descriptor %d (%d)", fd, f->sfd);
	if (msgbus_call_fd(f->call, &fd) || fd != f->cfd || readable(fd, 0))
		return TU_CHILD_FAIL(3, "inherited call descriptor %d (%d)", fd, f->cfd);
	/* One asked for in the child, of an inherited subscription. */
	if (msgbus_sub_fd(f->plain, &fd) || readable(fd, 0))
		return TU_CHILD_FAIL(4, "new descriptor of an inherited sub");
	/* The child's own handle works as any. */
	msgbus_bus *bus;
	msgbus_sub *mine;
	msgbus_msg *m;
	if (msgbus_open(&bus, f->url, NULL) || msgbus_subscribe(bus, "fk.child", 0, &mine) ||
	    msgbus_sub_fd(mine, &fd))
		return TU_CHILD_FAIL(5, "own handle");
	if (readable(fd, 0) || msgbus_publish(bus, "fk.child", "c", 1, 1000) ||
	    !readable(fd, TU_WAIT_MS) || msgbus_recv(mine, &m, 0))
		return TU_CHILD_FAIL(6, "own descriptor");
	msgbus_msg_release(m);
	msgbus_close(bus);
	return 0;
}

START_TEST(test_poll_fork)
{
	struct fork_arg f;
	tu_unique_url(f.url, sizeof(f.url), "shm");
	msgbus_bus *bus = tu_open(f.url, NULL);
	msgbus_msg *m;
	TU_ASSERT_OK(msgbus_subscribe(bus, "fk.x", 0, &f.sub));
	TU_ASSERT_OK(msgbus_subscribe(bus, "fk.y", 0, &f.plain));
	TU_ASSERT_OK(msgbus_sub_fd(f.sub, &f.fd));
	TU_ASSERT_OK(msgbus_publish(bus, "fk.x", "p", 1, -1));
	ck_assert(readable(f.fd, TU_WAIT_MS));
	/* A pending request, and a call answered before the fork. */
	msgbus_req *rq;
	msgbus_call *pending;
	TU_ASSERT_OK(msgbus_serve(bus, "fk.svc", NULL, NULL, &f.svc));
	TU_ASSERT_OK(msgbus_service_fd(f.svc, &f.sfd));
	TU_ASSERT_OK(msgbus_call_start(bus, "fk.svc", "a", 1, 60000, &f.call));
	TU_ASSERT_OK(msgbus_call_fd(f.call, &f.cfd));
	ck_assert(readable(f.sfd, TU_WAIT_MS));
	TU_ASSERT_OK(msgbus_service_recv(f.svc, &rq, 0));
	TU_ASSERT_OK(msgbus_respond(rq, "r", 1));
	ck_assert(readable(f.cfd, TU_WAIT_MS));
	TU_ASSERT_OK(msgbus_call_start(bus, "fk.svc", "b", 1, 60000, &pending));
	ck_assert(readable(f.sfd, TU_WAIT_MS));
	pid_t pid = tu_spawn(fork_child, &f);
	TU_ASSERT_CHILD_OK(pid, TU_WAIT_MS);
	/* The parent's is still readable, its message still there. */
	ck_assert(readable(f.fd, 0));
	TU_ASSERT_OK(msgbus_recv(f.sub, &m, 0));
	msgbus_msg_release(m);
	TU_ASSERT_RC(msgbus_recv(f.sub, &m, 0), MSGBUS_EAGAIN);
	ck_assert(!readable(f.fd, 0));
	TU_ASSERT_OK(msgbus_publish(bus, "fk.x", "q", 1, -1));
	ck_assert(readable(f.fd, TU_WAIT_MS));
	/* The parent's service and call descriptors kept their events. */
	ck_assert(readable(f.sfd, 0));
	ck_assert(readable(f.cfd, 0));
	TU_ASSERT_OK(msgbus_call_wait(f.call, &m, 0));
	msgbus_msg_release(m);
	TU_ASSERT_OK(msgbus_service_recv(f.svc, &rq, 0));
	TU_ASSERT_OK(msgbus_respond(rq, "r", 1));
	TU_ASSERT_OK(msgbus_call_wait(pending, &m, TU_WAIT_MS));
	msgbus_msg_release(m);
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(f.url);
}
END_TEST

/* At most 16 workers of one service hold a descriptor. */
START_TEST(test_poll_service_limit)
{
	char url[96];
	tu_unique_url(url, sizeof(url), "inproc");
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	o.max_participants = 64;
	msgbus_bus *bus = tu_open(url, &o);
	msgbus_bus *h[17];
	msgbus_service *svc[17];
	int fd;
	for (int k = 0; k < 17; k++) {
		TU_ASSERT_OK(msgbus_open(&h[k], url, NULL));
		TU_ASSERT_OK(msgbus_serve(h[k], "lim.svc", NULL, NULL, &svc[k]));
	}
	for (int k = 0; k < 16; k++)
		TU_ASSERT_OK(msgbus_service_fd(svc[k], &fd));
	TU_ASSERT_RC(msgbus_service_fd(svc[16], &fd), MSGBUS_ELIMIT);
	TU_ASSERT_OK(msgbus_unserve(svc[3]));
	TU_ASSERT_OK(msgbus_service_fd(svc[16], &fd));
	for (int k = 0; k < 17; k++)
		TU_ASSERT_OK(msgbus_close(h[k]));
	TU_ASSERT_OK(msgbus_close(bus));
}
END_TEST

/* ---- peers that die -------------------------------------------------------- */

#define DIE_CRASH_BOUND_MS 200

/* Child: a worker that takes one request and never answers (killed). */
static int mute_worker(void *arg)
{
	const char *url = arg;
	msgbus_bus *bus;
	msgbus_service *svc;
	msgbus_req *rq;
	if (msgbus_open(&bus, url, NULL) || msgbus_serve(bus, "pd.svc", NULL, NULL, &svc))
		return TU_CHILD_FAIL(2, "serve");
	if (msgbus_publish(bus, "pd.up", "", 0, 5000))
		return TU_CHILD_FAIL(3, "up");
	if (msgbus_service_recv(svc, &rq, 10000))
		return TU_CHILD_FAIL(4, "no request");
	if (msgbus_publish(bus, "pd.taken", "", 0, 5000))
		return TU_CHILD_FAIL(5, "taken");
	for (;;)
		pause(); /* until the parent kills us */
}

static void wait_msg(msgbus_sub *sub)
{
	msgbus_msg *m;
	TU_ASSERT_OK(msgbus_recv(sub, &m, TU_WAIT_MS));
	msgbus_msg_release(m);
}

/* The worker holding a call's request dies: the call's descriptor becomes
 * readable and msgbus_call_wait says MSGBUS_EPEERDIED. */
START_TEST(test_poll_call_peer_died)
{
	char url[96];
	tu_unique_url(url, sizeof(url), "shm");
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	o.crash_bound_ms = DIE_CRASH_BOUND_MS;
	msgbus_bus *bus = tu_open(url, &o);
	msgbus_sub *up, *taken;
	msgbus_call *call;
	msgbus_msg *m;
	int cfd, rc;
	TU_ASSERT_OK(msgbus_subscribe(bus, "pd.up", 0, &up));
	TU_ASSERT_OK(msgbus_subscribe(bus, "pd.taken", 0, &taken));
	pid_t pid = tu_spawn(mute_worker, url);
	wait_msg(up);
	TU_ASSERT_OK(msgbus_call_start(bus, "pd.svc", "q", 1, 60000, &call));
	TU_ASSERT_OK(msgbus_call_fd(call, &cfd));
	wait_msg(taken);
	ck_assert(!readable(cfd, 0));
	tu_kill_child(pid);
	double end = tu_now_ms() + TU_WAIT_MS;
	do {
		ck_assert_msg(readable(cfd, TU_WAIT_MS), "call descriptor not readable");
		rc = msgbus_call_wait(call, &m, 0);
	} while (rc == MSGBUS_EAGAIN && tu_now_ms() < end);
	TU_ASSERT_RC(rc, MSGBUS_EPEERDIED);
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

/* Child: a worker holding a descriptor, until killed. */
static int fd_worker(void *arg)
{
	const char *url = arg;
	msgbus_bus *bus;
	msgbus_service *svc;
	int fd;
	if (msgbus_open(&bus, url, NULL) || msgbus_serve(bus, "dl.svc", NULL, NULL, &svc) ||
	    msgbus_service_fd(svc, &fd))
		return TU_CHILD_FAIL(2, "serve");
	if (msgbus_publish(bus, "dl.up", "", 0, 5000))
		return TU_CHILD_FAIL(3, "up");
	for (;;)
		pause(); /* until the parent kills us */
}

/* A dead worker's bell is taken over. */
START_TEST(test_poll_service_dead_bell)
{
	char url[96];
	tu_unique_url(url, sizeof(url), "shm");
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	o.max_participants = 32;
	msgbus_bus *bus = tu_open(url, &o);
	msgbus_bus *h[16];
	msgbus_service *svc[16];
	msgbus_sub *up;
	int fd;
	TU_ASSERT_OK(msgbus_subscribe(bus, "dl.up", 0, &up));
	pid_t pid = tu_spawn(fd_worker, url);
	wait_msg(up);
	for (int k = 0; k < 16; k++) {
		TU_ASSERT_OK(msgbus_open(&h[k], url, NULL));
		TU_ASSERT_OK(msgbus_serve(h[k], "dl.svc", NULL, NULL, &svc[k]));
		if (k < 15)
			TU_ASSERT_OK(msgbus_service_fd(svc[k], &fd));
	}
	TU_ASSERT_RC(msgbus_service_fd(svc[15], &fd), MSGBUS_ELIMIT);
	tu_kill_child(pid);
	TU_ASSERT_OK(msgbus_service_fd(svc[15], &fd));
	/* And it works: a request makes it readable. */
	msgbus_call *call;
	TU_ASSERT_OK(msgbus_call_start(bus, "dl.svc", "q", 1, 10000, &call));
	ck_assert(readable(fd, TU_WAIT_MS));
	msgbus_call_cancel(call);
	for (int k = 0; k < 16; k++)
		TU_ASSERT_OK(msgbus_close(h[k]));
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

/* A bell is shared memory, hence untrusted: a state that is not ARMED is
 * left alone, and whatever id it holds, the ring goes to a doorbell name. */
START_TEST(test_poll_hostile_bell)
{
	struct mb_doorbell db;
	struct mb_bell bell;
	ck_assert_int_eq(mb_doorbell_open(&db), 0);
	uint64_t failed = mb_doorbell_failures();

	static const uint32_t junk[] = { 3, 0x7fffffffu, 0xffffffffu, MB_BELL_RUNG, MB_BELL_OFF };
	for (size_t k = 0; k < sizeof(junk) / sizeof(junk[0]); k++) {
		atomic_store(&bell.state, junk[k]);
		atomic_store(&bell.id, db.id);
		mb_bell_ring(&bell);
		ck_assert_uint_eq(atomic_load(&bell.state), junk[k]);
		ck_assert(!readable(db.fd, 0));
	}
	ck_assert_uint_eq(mb_doorbell_failures(), failed);
	/* ARMED: one datagram, however often it is rung until re-armed. */
	atomic_store(&bell.state, MB_BELL_ARMED);
	mb_bell_ring(&bell);
	mb_bell_ring(&bell);
	ck_assert_uint_eq(atomic_load(&bell.state), MB_BELL_RUNG);
	ck_assert(readable(db.fd, 0));
	mb_doorbell_drain(&db);
	ck_assert(!readable(db.fd, 0));
	/* An id nobody holds: counted, nothing else. */
	atomic_store(&bell.state, MB_BELL_ARMED);
	atomic_store(&bell.id, db.id ^ 0x5a5a5a5a5a5a5a5aull);
	mb_bell_ring(&bell);
	ck_assert_uint_eq(mb_doorbell_failures(), failed + 1);
	ck_assert(!readable(db.fd, 0));
	mb_doorbell_close(&db);
	ck_assert_int_eq(db.fd, -1);
}
END_TEST

Suite *suite_poll(void)
{
	Suite *s = suite_create("poll");
	TCase *tc = tu_tcase("poll", TU_CASE_TIMEOUT);
	tcase_add_test(tc, test_poll_args);
	tcase_add_loop_test(tc, test_poll_sub_level, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_poll_nothing_paid, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_poll_fds_close, 0, TU_NSCHEMES);
	tcase_add_test(tc, test_poll_late_datagram);
	tcase_add_test(tc, test_poll_epoll_loop);
	tcase_add_loop_test(tc, test_poll_request_reply, 0, TU_NSCHEMES);
	tcase_add_test(tc, test_poll_call_deadline);
	tcase_add_loop_test(tc, test_poll_shutdown, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_poll_stress, 0, 2);
	tcase_add_test(tc, test_poll_fork);
	tcase_add_test(tc, test_poll_service_limit);
	tcase_add_test(tc, test_poll_hostile_bell);
	tcase_add_test(tc, test_poll_call_peer_died);
	tcase_add_test(tc, test_poll_service_dead_bell);
	suite_add_tcase(s, tc);
	return s;
}
