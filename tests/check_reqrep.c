/*
 * check_reqrep.c - request/reply (spec-rr.md): no responders, timeouts and
 * late replies, dead workers and dead requesters, competing workers under
 * load, asynchronous calls and their limit, argument errors and reserved
 * subjects, large payloads, and close with work outstanding.
 *
 * Cases that need no second process run on inproc:// (threads) and shm://
 * (loop index 0 and 1). Deaths need processes: shm:// only, workers and
 * requesters are forked children that open their own handles and report
 * through pipes and their exit status. Library threads (serve callbacks)
 * and helper threads never call ck_assert: they record what they saw and
 * the test thread asserts it.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "test_util.h"
#include "reqrep/serve.h" /* mb_respond_error */

#define CRASH_BOUND_MS 400 /* crash_bound_ms of the buses with deaths */
#define AT_ONCE_MS 50.0    /* "at once": well under the 2000 ms timeouts */
#define DEATH_MS 1000.0    /* CRASH_BOUND_MS plus a margin */
#define LOAD_THREADS 8
#define LARGE (100 * 1024)

/* Never a real message: shows that a failed call stored no reply. */
static char no_reply_mark;
#define NO_REPLY ((msgbus_msg *)(void *)&no_reply_mark)

/* Asserts that no more than max_ms passed since t0 (skipped under
 * valgrind, which is too slow for timing bounds). */
#define ASSERT_WITHIN(t0, max_ms, what)                                       \
	do {                                                                  \
		double aw_dt_ = tu_now_ms() - (t0);                           \
		ck_assert_msg(tu_valgrind() || aw_dt_ < (max_ms),             \
		              "%s took %.1f ms (bound %.0f ms)", (what),      \
		              aw_dt_, (double)(max_ms));                      \
	} while (0)

static void close_last(msgbus_bus *bus, const char *url)
{
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url);
}

/* ---- an echo worker: reply = request + suffix ------------------------- */

struct echo {
	const char *suffix;
	atomic_uint handled; /* answered with MSGBUS_OK */
	atomic_uint failed;  /* msgbus_respond returned something else */
};

static void echo_cb(msgbus_req *req, void *arg)
{
	struct echo *e = arg;
	size_t n = msgbus_req_len(req), sl = strlen(e->suffix);
	char *buf = malloc(n + sl + 1);
	if (buf == NULL) {
		atomic_fetch_add(&e->failed, 1);
		msgbus_respond(req, NULL, 0);
		return;
	}
	if (n > 0)
		memcpy(buf, msgbus_req_data(req), n);
	memcpy(buf + n, e->suffix, sl);
	if (msgbus_respond(req, buf, n + sl) == MSGBUS_OK)
		atomic_fetch_add(&e->handled, 1);
	else
		atomic_fetch_add(&e->failed, 1);
	free(buf);
}

/* Does m carry want (len bytes) followed by suffix? */
static int is_echo(const msgbus_msg *m, const void *want, size_t len,
                   const char *suffix)
{
	size_t sl = strlen(suffix);
	if (m == NULL || msgbus_msg_len(m) != len + sl)
		return 0;
	const char *d = msgbus_msg_data(m);
	return (len == 0 || memcmp(d, want, len) == 0) &&
	       memcmp(d + len, suffix, sl) == 0;
}

#define ASSERT_ECHO(m, text, suffix)                                          \
	ck_assert_msg(is_echo((m), (text), strlen(text), (suffix)),           \
	              "reply \"%.*s\", want \"%s%s\"",                        \
	              (int)(msgbus_msg_len(m) < 80 ? msgbus_msg_len(m) : 80), \
	              (const char *)msgbus_msg_data(m), (text), (suffix))

/* One synchronous round trip to an echo worker, reply checked. */
#define REQUEST_ECHO(bus, service, text, suffix)                              \
	do {                                                                  \
		msgbus_msg *re_m_ = NULL;                                     \
		TU_ASSERT_OK(msgbus_request((bus), (service), (text),         \
		                            strlen(text), &re_m_,             \
		                            TU_WAIT_MS));                     \
		ASSERT_ECHO(re_m_, (text), (suffix));                         \
		ck_assert_str_eq(msgbus_msg_subject(re_m_), (service));       \
		msgbus_msg_release(re_m_);                                    \
	} while (0)

/* Both call forms say "no responders" at once, well before the 2000 ms
 * timeout. */
#define ASSERT_NORESP_AT_ONCE(bus, service)                                   \
	do {                                                                  \
		msgbus_msg *nr_m_ = NO_REPLY;                                 \
		msgbus_call *nr_c_ = NULL;                                    \
		double nr_t_ = tu_now_ms();                                   \
		TU_ASSERT_RC(msgbus_request((bus), (service), "?", 1, &nr_m_, \
		                            2000),                            \
		             MSGBUS_ENORESPONDERS);                           \
		ASSERT_WITHIN(nr_t_, AT_ONCE_MS, "msgbus_request");           \
		ck_assert_msg(nr_m_ == NO_REPLY, "reply stored on failure");  \
		nr_t_ = tu_now_ms();                                          \
		TU_ASSERT_RC(msgbus_call_start((bus), (service), "?", 1,      \
		                               2000, &nr_c_),                 \
		             MSGBUS_ENORESPONDERS);                           \
		ASSERT_WITHIN(nr_t_, AT_ONCE_MS, "msgbus_call_start");        \
	} while (0)

/* Takes one request from a polling service and answers it with its own
 * bytes + suffix; returns the request as a string in got. */
static void serve_one(msgbus_service *svc, const char *suffix, char *got,
                      size_t size)
{
	msgbus_req *req = NULL;
	char buf[256];
	TU_ASSERT_OK(msgbus_service_recv(svc, &req, TU_WAIT_MS));
	size_t n = msgbus_req_len(req), sl = strlen(suffix);
	ck_assert_msg(n + sl < sizeof(buf) && n < size, "request of %zu bytes",
	              n);
	memcpy(buf, msgbus_req_data(req), n);
	memcpy(got, buf, n);
	got[n] = '\0';
	memcpy(buf + n, suffix, sl);
	TU_ASSERT_OK(msgbus_respond(req, buf, n + sl));
}

/* ---- pointers through a pipe (helper threads hand requests over) ------ */

static int put_ptr(struct tu_pipe *p, void *v)
{
	ssize_t n;
	do
		n = write(p->wr, &v, sizeof(v));
	while (n < 0 && errno == EINTR);
	return n == (ssize_t)sizeof(v) ? 0 : -1;
}

static int get_ptr(struct tu_pipe *p, int timeout_ms, void **v)
{
	struct pollfd pfd = { p->rd, POLLIN, 0 };
	int r;
	do
		r = poll(&pfd, 1, timeout_ms);
	while (r < 0 && errno == EINTR);
	if (r <= 0)
		return -1;
	ssize_t n;
	do
		n = read(p->rd, v, sizeof(*v));
	while (n < 0 && errno == EINTR);
	return n == (ssize_t)sizeof(*v) ? 0 : -1;
}

/* ---- a worker process ---------------------------------------------------- */

enum wmode {
	W_ECHO,        /* callback echo until told to stop; reports its count */
	W_HANG,        /* takes one request, says so, waits to be killed */
	W_DIE,         /* takes one request, says so, SIGKILLs itself */
	W_CRASH_REPLY, /* takes one request, dies inside msgbus_respond */
	W_CRASH_TAKE   /* dies inside msgbus_service_recv, taking a request */
};

struct wchild {
	const char *url, *service, *suffix;
	enum wmode mode;
	struct tu_pipe up;   /* child -> parent: 1 serving, 2 took one, count */
	struct tu_pipe down; /* parent -> child: stop */
};

static int wchild_main(void *p)
{
	struct wchild *c = p;
	msgbus_bus *bus = NULL;
	msgbus_service *svc = NULL;
	msgbus_req *req = NULL;
	struct echo e = { .suffix = c->suffix };
	int x, rc;

	if (c->mode == W_CRASH_REPLY &&
	    setenv("MSGBUS_CRASH_AT", "before_reply", 1) != 0)
		return TU_CHILD_FAIL(9, "setenv: %s", strerror(errno));
	if (c->mode == W_CRASH_TAKE &&
	    setenv("MSGBUS_CRASH_AT", "mid_take", 1) != 0)
		return TU_CHILD_FAIL(9, "setenv: %s", strerror(errno));
	rc = msgbus_open(&bus, c->url, NULL);
	if (rc != MSGBUS_OK)
		return TU_CHILD_FAIL(10, "open: %s", msgbus_strerror(rc));
	rc = msgbus_serve(bus, c->service, c->mode == W_ECHO ? echo_cb : NULL,
	                  &e, &svc);
	if (rc != MSGBUS_OK)
		return TU_CHILD_FAIL(11, "serve: %s", msgbus_strerror(rc));
	tu_pipe_put(&c->up, 1);
	if (c->mode == W_ECHO) {
		if (tu_pipe_get(&c->down, 12 * TU_WAIT_MS, &x) != 0)
			return TU_CHILD_FAIL(12, "no stop");
		rc = msgbus_unserve(svc);
		if (rc != MSGBUS_OK)
			return TU_CHILD_FAIL(13, "unserve: %s",
			                     msgbus_strerror(rc));
		if (atomic_load(&e.failed) != 0)
			return TU_CHILD_FAIL(14, "%u responds failed",
			                     atomic_load(&e.failed));
		tu_pipe_put(&c->up, (int)atomic_load(&e.handled));
		rc = msgbus_close(bus);
		if (rc != MSGBUS_OK)
			return TU_CHILD_FAIL(15, "close: %s",
			                     msgbus_strerror(rc));
		return 0;
	}
	rc = msgbus_service_recv(svc, &req, 4 * TU_WAIT_MS);
	if (c->mode == W_CRASH_TAKE)
		return TU_CHILD_FAIL(18, "service_recv returned %s past the "
		                         "crash point", msgbus_strerror(rc));
	if (rc != MSGBUS_OK)
		return TU_CHILD_FAIL(16, "service_recv: %s",
		                     msgbus_strerror(rc));
	tu_pipe_put(&c->up, 2);
	if (c->mode == W_DIE)
		kill(getpid(), SIGKILL);
	if (c->mode == W_CRASH_REPLY) {
		rc = msgbus_respond(req, "never", 5);
		return TU_CHILD_FAIL(17, "respond returned %s past the crash "
		                         "point", msgbus_strerror(rc));
	}
	for (;;)
		pause();
}

/* Forks a worker and waits until it serves. */
static pid_t start_worker(struct wchild *c, const char *url,
                          const char *service, const char *suffix,
                          enum wmode mode)
{
	int x = 0;
	*c = (struct wchild){ .url = url, .service = service,
		              .suffix = suffix, .mode = mode };
	tu_pipe_init(&c->up);
	tu_pipe_init(&c->down);
	pid_t pid = tu_spawn(wchild_main, c);
	ck_assert_msg(tu_pipe_get(&c->up, TU_WAIT_MS, &x) == 0 && x == 1,
	              "worker %s did not start serving", suffix);
	return pid;
}

/* Stops a W_ECHO worker; returns how many requests it answered. */
static int stop_worker(struct wchild *c, pid_t pid)
{
	int n = -1;
	ck_assert_int_eq(tu_pipe_put(&c->down, 1), 0);
	ck_assert_msg(tu_pipe_get(&c->up, TU_WAIT_MS, &n) == 0,
	              "worker %s did not report", c->suffix);
	TU_ASSERT_CHILD_OK(pid, TU_WAIT_MS);
	tu_pipe_close(&c->up);
	tu_pipe_close(&c->down);
	return n;
}

static void assert_child_sigkilled(pid_t pid)
{
	int st = 0;
	char b[96];
	if (tu_wait_child(pid, TU_WAIT_MS, &st) != 0) {
		tu_kill_child(pid);
		ck_abort_msg("child %ld still running", (long)pid);
	}
	ck_assert_msg(st != -1 && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
	              "child %s, want killed by SIGKILL",
	              tu_status_str(b, sizeof(b), st));
}

/* ---- no responders ------------------------------------------------------ */

START_TEST(test_noresp)
{
	char url[96], got[64];
	struct echo e = { .suffix = "|a" };
	msgbus_service *svc = NULL, *other = NULL;
	msgbus_call *c = NULL;
	msgbus_msg *m = NULL;

	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, NULL);
	msgbus_bus *wb = tu_open(url, NULL);

	/* never registered */
	ASSERT_NORESP_AT_ONCE(bus, "nr.svc");

	/* a callback worker answers, then unserves */
	TU_ASSERT_OK(msgbus_serve(wb, "nr.svc", echo_cb, &e, &svc));
	REQUEST_ECHO(bus, "nr.svc", "hello", "|a");
	TU_ASSERT_OK(msgbus_unserve(svc));
	ASSERT_NORESP_AT_ONCE(bus, "nr.svc");

	/* a polling worker on the same name, then unserve */
	TU_ASSERT_OK(msgbus_serve(wb, "nr.svc", NULL, NULL, &svc));
	TU_ASSERT_OK(msgbus_call_start(bus, "nr.svc", "poll", 4, 2000, &c));
	serve_one(svc, "|p", got, sizeof(got));
	ck_assert_str_eq(got, "poll");
	TU_ASSERT_OK(msgbus_call_wait(c, &m, -1));
	ASSERT_ECHO(m, "poll", "|p");
	msgbus_msg_release(m);
	TU_ASSERT_OK(msgbus_unserve(svc));
	ASSERT_NORESP_AT_ONCE(bus, "nr.svc");

	/* a worker of a longer name (same prefix) does not serve this one */
	TU_ASSERT_OK(msgbus_serve(wb, "nr.svc.x", echo_cb, &e, &other));
	ASSERT_NORESP_AT_ONCE(bus, "nr.svc");
	REQUEST_ECHO(bus, "nr.svc.x", "x", "|a");

	/* a handle may serve itself */
	TU_ASSERT_OK(msgbus_serve(bus, "nr.self", echo_cb, &e, &svc));
	REQUEST_ECHO(bus, "nr.self", "self", "|a");
	TU_ASSERT_OK(msgbus_unserve(svc));
	ASSERT_NORESP_AT_ONCE(bus, "nr.self");

	TU_ASSERT_OK(msgbus_unserve(other));
	unsigned handled = atomic_load(&e.handled);
	unsigned failed = atomic_load(&e.failed);
	ck_assert_uint_eq(handled, 3);
	ck_assert_uint_eq(failed, 0);
	TU_ASSERT_OK(msgbus_close(wb));
	close_last(bus, url);
}
END_TEST

/* The only worker process is SIGKILLed: the first request learns it within
 * the crash bound, the next one at once; a new worker serves the name and
 * skips the request the dead one left queued. */
START_TEST(test_noresp_worker_killed)
{
	char url[96];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	struct wchild w;
	msgbus_msg *m = NULL;

	o.crash_bound_ms = CRASH_BOUND_MS;
	tu_unique_url(url, sizeof(url), "shm");
	msgbus_bus *bus = tu_open(url, &o);
	pid_t pid = start_worker(&w, url, "nk.svc", "|1", W_ECHO);
	REQUEST_ECHO(bus, "nk.svc", "before", "|1");
	tu_kill_child(pid);
	tu_pipe_close(&w.up);
	tu_pipe_close(&w.down);

	double t0 = tu_now_ms();
	int rc = msgbus_request(bus, "nk.svc", "stale", 5, &m, 5000);
	double dt = tu_now_ms() - t0;
	ck_assert_msg(rc == MSGBUS_ENORESPONDERS || rc == MSGBUS_EPEERDIED,
	              "request after the kill: %s, want ENORESPONDERS or "
	              "EPEERDIED", msgbus_strerror(rc));
	ck_assert_msg(dt < CRASH_BOUND_MS + 300,
	              "death noticed after %.1f ms (crash bound %d ms)", dt,
	              CRASH_BOUND_MS);
	ASSERT_NORESP_AT_ONCE(bus, "nk.svc");

	pid = start_worker(&w, url, "nk.svc", "|2", W_ECHO);
	REQUEST_ECHO(bus, "nk.svc", "after", "|2");
	ck_assert_int_eq(stop_worker(&w, pid), 1); /* "stale" was skipped */
	ASSERT_NORESP_AT_ONCE(bus, "nk.svc");
	close_last(bus, url);
}
END_TEST

/* ---- timeouts and late replies ------------------------------------------ */

struct slow_worker {
	msgbus_service *svc;
	struct tu_pipe took, go, done;
	int recv_rc[2], resp_rc[2];
	char seen[2][16];
};

/* Takes two requests. Holds the first until told to go (after its
 * requester timed out), then answers both with request + "|ok". */
static void *slow_worker_main(void *p)
{
	struct slow_worker *w = p;
	for (int k = 0; k < 2; k++) {
		msgbus_req *req = NULL;
		char buf[32];
		int x;
		w->recv_rc[k] = msgbus_service_recv(w->svc, &req, TU_WAIT_MS);
		if (w->recv_rc[k] != MSGBUS_OK)
			break;
		size_t n = msgbus_req_len(req);
		if (n > sizeof(w->seen[k]) - 1)
			n = sizeof(w->seen[k]) - 1;
		memcpy(w->seen[k], msgbus_req_data(req), n);
		memcpy(buf, w->seen[k], n);
		memcpy(buf + n, "|ok", 3);
		if (k == 0) {
			tu_pipe_put(&w->took, 1);
			tu_pipe_get(&w->go, TU_WAIT_MS, &x);
		}
		w->resp_rc[k] = msgbus_respond(req, buf, n + 3);
		tu_pipe_put(&w->done, k);
	}
	tu_pipe_put(&w->done, -1);
	return NULL;
}

START_TEST(test_timeout_late_reply)
{
	char url[96];
	struct slow_worker w = { .recv_rc = { -1, -1 }, .resp_rc = { -1, -1 } };
	msgbus_msg *m = NO_REPLY;
	pthread_t th;
	int x;

	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, NULL);
	msgbus_bus *wb = tu_open(url, NULL);
	TU_ASSERT_OK(msgbus_serve(wb, "to.svc", NULL, NULL, &w.svc));
	tu_pipe_init(&w.took);
	tu_pipe_init(&w.go);
	tu_pipe_init(&w.done);
	ck_assert_int_eq(pthread_create(&th, NULL, slow_worker_main, &w), 0);

	double t0 = tu_now_ms();
	int rc = msgbus_request(bus, "to.svc", "late", 4, &m, 50);
	double dt = tu_now_ms() - t0;
	int took = tu_pipe_get(&w.took, TU_WAIT_MS, &x);
	tu_pipe_put(&w.go, 1); /* the worker answers only now */
	int done = tu_pipe_get(&w.done, TU_WAIT_MS, &x);
	if (took != 0 || done != 0) {
		tu_pipe_put(&w.go, 1);
		pthread_join(th, NULL);
		ck_abort_msg("worker: took %d, answered %d (recv %s)", took,
		             done, msgbus_strerror(w.recv_rc[0]));
	}
	TU_ASSERT_RC(rc, MSGBUS_ETIMEDOUT);
	ck_assert_msg(m == NO_REPLY, "reply stored on failure");
	ck_assert_msg(dt >= 50.0, "ETIMEDOUT after %.1f ms, timeout 50", dt);
	ck_assert_msg(tu_valgrind() || dt < 250.0,
	              "ETIMEDOUT after %.1f ms, timeout 50", dt);
	ck_assert_str_eq(w.seen[0], "late");
	TU_ASSERT_RC(w.resp_rc[0], MSGBUS_ETIMEDOUT); /* the reply is dropped */

	/* the next call gets its own reply, not the late one */
	rc = msgbus_request(bus, "to.svc", "fresh", 5, &m, TU_WAIT_MS);
	ck_assert_int_eq(tu_pipe_get(&w.done, TU_WAIT_MS, &x), 0);
	pthread_join(th, NULL);
	TU_ASSERT_OK(rc);
	ASSERT_ECHO(m, "fresh", "|ok");
	msgbus_msg_release(m);
	TU_ASSERT_OK(w.resp_rc[1]);

	tu_pipe_close(&w.took);
	tu_pipe_close(&w.go);
	tu_pipe_close(&w.done);
	TU_ASSERT_OK(msgbus_unserve(w.svc));
	TU_ASSERT_OK(msgbus_close(wb));
	close_last(bus, url);
}
END_TEST

/* Single-threaded: requests whose requester gave up before a worker looked
 * are skipped silently; timeout -1 waits as long as it takes. */
START_TEST(test_timeout_stale_skipped)
{
	char url[96], got[64];
	msgbus_service *svc = NULL;
	msgbus_call *c = NULL;
	msgbus_msg *m = NULL;
	msgbus_req *req = NULL;

	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, NULL);
	msgbus_bus *wb = tu_open(url, NULL);
	TU_ASSERT_OK(msgbus_serve(wb, "sk.svc", NULL, NULL, &svc));

	double t0 = tu_now_ms();
	TU_ASSERT_OK(msgbus_call_start(bus, "sk.svc", "old1", 4, 50, &c));
	TU_ASSERT_RC(msgbus_call_wait(c, &m, -1), MSGBUS_ETIMEDOUT);
	double dt = tu_now_ms() - t0;
	ck_assert_msg(dt >= 50.0, "ETIMEDOUT after %.1f ms, timeout 50", dt);
	ck_assert_msg(tu_valgrind() || dt < 250.0,
	              "ETIMEDOUT after %.1f ms, timeout 50", dt);
	t0 = tu_now_ms();
	TU_ASSERT_RC(msgbus_request(bus, "sk.svc", "old2", 4, &m, 30),
	             MSGBUS_ETIMEDOUT);
	ck_assert_msg(tu_now_ms() - t0 >= 30.0, "ETIMEDOUT before 30 ms");
	TU_ASSERT_RC(msgbus_service_recv(svc, &req, 0), MSGBUS_EAGAIN);

	TU_ASSERT_OK(msgbus_call_start(bus, "sk.svc", "new", 3, -1, &c));
	serve_one(svc, "|ok", got, sizeof(got));
	ck_assert_str_eq(got, "new");
	TU_ASSERT_OK(msgbus_call_wait(c, &m, -1));
	ASSERT_ECHO(m, "new", "|ok");
	msgbus_msg_release(m);
	TU_ASSERT_RC(msgbus_service_recv(svc, &req, 0), MSGBUS_EAGAIN);

	/* a bounded service_recv with nothing queued times out */
	t0 = tu_now_ms();
	TU_ASSERT_RC(msgbus_service_recv(svc, &req, 30), MSGBUS_ETIMEDOUT);
	ck_assert_msg(tu_now_ms() - t0 >= 30.0, "ETIMEDOUT before 30 ms");

	TU_ASSERT_OK(msgbus_unserve(svc));
	TU_ASSERT_OK(msgbus_close(wb));
	close_last(bus, url);
}
END_TEST

/* ---- a worker dies holding a request (shm) ---------------------------- */

/* Loop index: 0 = the worker SIGKILLs itself after taking the request,
 * 1 = the parent kills it (asynchronous call), 2 = it dies inside
 * msgbus_respond, after claiming the entry and before publishing the
 * reply (crash point "before_reply"). */
START_TEST(test_worker_killed)
{
	static const enum wmode modes[] = { W_DIE, W_HANG, W_CRASH_REPLY };
	char url[96];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	struct wchild w;
	msgbus_msg *m = NULL;
	int rc, x;
	double dt;

	o.crash_bound_ms = CRASH_BOUND_MS;
	tu_unique_url(url, sizeof(url), "shm");
	msgbus_bus *bus = tu_open(url, &o);
	pid_t pid = start_worker(&w, url, "wk.svc", "|x", modes[_i]);
	if (modes[_i] == W_HANG) {
		msgbus_call *c = NULL;
		TU_ASSERT_OK(msgbus_call_start(bus, "wk.svc", "req", 3, 5000,
		                               &c));
		ck_assert_msg(tu_pipe_get(&w.up, TU_WAIT_MS, &x) == 0 && x == 2,
		              "worker did not take the request");
		TU_ASSERT_RC(msgbus_call_wait(c, &m, 0), MSGBUS_EAGAIN);
		tu_kill_child(pid);
		double t0 = tu_now_ms();
		rc = msgbus_call_wait(c, &m, -1);
		dt = tu_now_ms() - t0;
	} else {
		double t0 = tu_now_ms();
		rc = msgbus_request(bus, "wk.svc", "req", 3, &m, 5000);
		dt = tu_now_ms() - t0;
		ck_assert_msg(tu_pipe_get(&w.up, TU_WAIT_MS, &x) == 0 && x == 2,
		              "worker did not take the request");
		assert_child_sigkilled(pid);
	}
	TU_ASSERT_RC(rc, MSGBUS_EPEERDIED);
	ck_assert_msg(dt < DEATH_MS,
	              "EPEERDIED after %.1f ms (crash bound %d ms, timeout "
	              "5000)", dt, CRASH_BOUND_MS);
	tu_pipe_close(&w.up);
	tu_pipe_close(&w.down);

	/* the dead worker is gone from the service */
	ASSERT_NORESP_AT_ONCE(bus, "wk.svc");
	pid = start_worker(&w, url, "wk.svc", "|y", W_ECHO);
	REQUEST_ECHO(bus, "wk.svc", "again", "|y");
	ck_assert_int_eq(stop_worker(&w, pid), 1);
	close_last(bus, url);
}
END_TEST

/* A worker dies inside msgbus_service_recv, after taking the request off
 * the queue and before telling the requester (crash point "mid_take").
 * Loop index 0: it was the only worker, then no responders or peer died;
 * 1: a second worker is serving by the time the requester looks, so the
 * answer is peer died, or the survivor's reply. Either way within the
 * crash bound, not at the 3000 ms deadline. */
START_TEST(test_worker_killed_mid_take)
{
	char url[96];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	struct wchild w, w2;
	msgbus_call *c = NULL;
	msgbus_msg *m = NULL;
	pid_t pid2 = 0;

	o.crash_bound_ms = CRASH_BOUND_MS;
	tu_unique_url(url, sizeof(url), "shm");
	msgbus_bus *bus = tu_open(url, &o);
	pid_t pid = start_worker(&w, url, "mt.svc", "|x", W_CRASH_TAKE);
	TU_ASSERT_OK(msgbus_call_start(bus, "mt.svc", "req", 3, 3000, &c));
	assert_child_sigkilled(pid);
	double t0 = tu_now_ms();
	if (_i == 1)
		pid2 = start_worker(&w2, url, "mt.svc", "|s", W_ECHO);
	int rc = msgbus_call_wait(c, &m, -1);
	double dt = tu_now_ms() - t0;
	if (rc == MSGBUS_OK) {
		int echo = is_echo(m, "req", 3, "|s");
		msgbus_msg_release(m);
		ck_assert_msg(_i == 1 && echo, "unexpected reply");
	} else if (_i == 0) {
		ck_assert_msg(rc == MSGBUS_ENORESPONDERS ||
		                      rc == MSGBUS_EPEERDIED,
		              "sole worker died taking the request: %s, want "
		              "ENORESPONDERS or EPEERDIED",
		              msgbus_strerror(rc));
	} else {
		ck_assert_msg(rc == MSGBUS_EPEERDIED,
		              "worker died taking the request, another lives: "
		              "%s after %.1f ms, want EPEERDIED (or the "
		              "survivor's reply) within the crash bound",
		              msgbus_strerror(rc), dt);
	}
	ck_assert_msg(dt < DEATH_MS,
	              "outcome after %.1f ms (crash bound %d ms, deadline "
	              "3000 ms)", dt, CRASH_BOUND_MS);
	tu_pipe_close(&w.up);
	tu_pipe_close(&w.down);
	if (_i == 1) {
		REQUEST_ECHO(bus, "mt.svc", "next", "|s");
		int n = stop_worker(&w2, pid2);
		ck_assert_msg(n == 1 || n == 2, "survivor answered %d", n);
	}
	ASSERT_NORESP_AT_ONCE(bus, "mt.svc");
	close_last(bus, url);
}
END_TEST

/* ---- a requester dies while its request is being handled (shm) -------- */

struct rq_child {
	const char *url;
	struct tu_pipe up;
};

static int rq_child_main(void *p)
{
	struct rq_child *c = p;
	msgbus_bus *bus = NULL;
	msgbus_msg *m = NULL;
	int rc = msgbus_open(&bus, c->url, NULL);
	if (rc != MSGBUS_OK)
		return TU_CHILD_FAIL(10, "open: %s", msgbus_strerror(rc));
	tu_pipe_put(&c->up, 1);
	rc = msgbus_request(bus, "rk.svc", "from-child", 10, &m,
	                    4 * TU_WAIT_MS);
	return TU_CHILD_FAIL(11, "request returned %s before the kill",
	                     msgbus_strerror(rc));
}

/* Loop index: 0 = answer right after the kill, 1 = first a new handle
 * takes the dead requester's participant slot and starts a call in the
 * same entry: the late reply must not land there. */
START_TEST(test_requester_killed)
{
	char url[96], got[64];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	struct rq_child rq;
	msgbus_service *svc = NULL;
	msgbus_req *req = NULL;
	msgbus_call *c = NULL;
	msgbus_msg *m = NULL;
	msgbus_bus *b2 = NULL;
	int x;

	o.crash_bound_ms = CRASH_BOUND_MS;
	tu_unique_url(url, sizeof(url), "shm");
	msgbus_bus *bus = tu_open(url, &o);
	TU_ASSERT_OK(msgbus_serve(bus, "rk.svc", NULL, NULL, &svc));
	rq.url = url;
	tu_pipe_init(&rq.up);
	pid_t pid = tu_spawn(rq_child_main, &rq);
	ck_assert_msg(tu_pipe_get(&rq.up, TU_WAIT_MS, &x) == 0,
	              "requester did not open");
	TU_ASSERT_OK(msgbus_service_recv(svc, &req, TU_WAIT_MS));
	ck_assert_uint_eq(msgbus_req_len(req), 10);
	ck_assert_int_eq(memcmp(msgbus_req_data(req), "from-child", 10), 0);
	tu_kill_child(pid);
	tu_pipe_close(&rq.up);

	if (_i == 1) {
		b2 = tu_open(url, NULL);
		TU_ASSERT_OK(msgbus_call_start(b2, "rk.svc", "fresh", 5,
		                               TU_WAIT_MS, &c));
	}
	double t0 = tu_now_ms();
	int rc = msgbus_respond(req, "late", 4);
	ASSERT_WITHIN(t0, 100.0, "msgbus_respond to a dead requester");
	if (_i == 1)
		TU_ASSERT_RC(rc, MSGBUS_ETIMEDOUT);
	else
		ck_assert_msg(rc == MSGBUS_OK || rc == MSGBUS_ETIMEDOUT,
		              "respond to a dead requester: %s",
		              msgbus_strerror(rc));

	/* a new request from this side still works */
	if (_i == 0) {
		b2 = tu_open(url, NULL);
		TU_ASSERT_OK(msgbus_call_start(b2, "rk.svc", "fresh", 5,
		                               TU_WAIT_MS, &c));
	}
	serve_one(svc, "|ok", got, sizeof(got));
	ck_assert_str_eq(got, "fresh");
	TU_ASSERT_OK(msgbus_call_wait(c, &m, -1));
	ASSERT_ECHO(m, "fresh", "|ok");
	msgbus_msg_release(m);
	TU_ASSERT_RC(msgbus_service_recv(svc, &req, 0), MSGBUS_EAGAIN);

	TU_ASSERT_OK(msgbus_close(b2));
	TU_ASSERT_OK(msgbus_unserve(svc));
	close_last(bus, url);
}
END_TEST

/* ---- many threads, one handle, two competing workers ------------------- */

struct loader {
	msgbus_bus *bus;
	int id, n;
	unsigned per_worker[2];
	int bad_at, bad_rc; /* first failure, or bad_at -1 */
	char bad_reply[48];
};

static void *loader_main(void *p)
{
	struct loader *l = p;
	for (int i = 0; i < l->n; i++) {
		char req[32];
		msgbus_msg *m = NULL;
		size_t len = (size_t)snprintf(req, sizeof(req), "t%d.%d", l->id,
		                              i);
		int rc = msgbus_request(l->bus, "ld.echo", req, len, &m,
		                        TU_WAIT_MS);
		if (rc != MSGBUS_OK) {
			l->bad_at = i;
			l->bad_rc = rc;
			return NULL;
		}
		int w = is_echo(m, req, len, "|w0")   ? 0
		        : is_echo(m, req, len, "|w1") ? 1
		                                      : -1;
		if (w < 0) {
			size_t n = msgbus_msg_len(m);
			l->bad_at = i;
			l->bad_rc = MSGBUS_OK;
			snprintf(l->bad_reply, sizeof(l->bad_reply), "%.*s",
			         (int)(n < 40 ? n : 40),
			         (const char *)msgbus_msg_data(m));
			msgbus_msg_release(m);
			return NULL;
		}
		l->per_worker[w]++;
		msgbus_msg_release(m);
	}
	return NULL;
}

/* inproc: two callback workers on their own handles; shm: two worker
 * processes. Every reply is its own request's echo; the workers' counts
 * add up and match the replies that name them. */
START_TEST(test_load)
{
	const int shm = _i == 1;
	const int n = tu_valgrind() ? 200 : 10000;
	char url[96];
	struct echo e[2] = { { .suffix = "|w0" }, { .suffix = "|w1" } };
	msgbus_bus *wb[2] = { NULL, NULL };
	msgbus_service *svc[2] = { NULL, NULL };
	struct wchild wc[2];
	pid_t pid[2] = { 0, 0 };
	pthread_t th[LOAD_THREADS];
	struct loader l[LOAD_THREADS];
	unsigned got[2] = { 0, 0 };
	int handled[2];

	if (shm && tu_valgrind())
		return; /* forks */
	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, NULL);
	for (int k = 0; k < 2; k++) {
		if (shm) {
			pid[k] = start_worker(&wc[k], url, "ld.echo",
			                      e[k].suffix, W_ECHO);
		} else {
			wb[k] = tu_open(url, NULL);
			TU_ASSERT_OK(msgbus_serve(wb[k], "ld.echo", echo_cb,
			                          &e[k], &svc[k]));
		}
	}
	for (int t = 0; t < LOAD_THREADS; t++) {
		l[t] = (struct loader){ .bus = bus, .id = t, .n = n,
			                .bad_at = -1 };
		ck_assert_int_eq(pthread_create(&th[t], NULL, loader_main,
		                                &l[t]), 0);
	}
	for (int t = 0; t < LOAD_THREADS; t++)
		pthread_join(th[t], NULL);
	for (int t = 0; t < LOAD_THREADS; t++) {
		ck_assert_msg(l[t].bad_at < 0,
		              "thread %d, request %d: %s, reply \"%s\"", t,
		              l[t].bad_at, msgbus_strerror(l[t].bad_rc),
		              l[t].bad_reply);
		got[0] += l[t].per_worker[0];
		got[1] += l[t].per_worker[1];
	}
	ck_assert_uint_eq(got[0] + got[1], (unsigned)(LOAD_THREADS * n));
	for (int k = 0; k < 2; k++) {
		if (shm) {
			handled[k] = stop_worker(&wc[k], pid[k]);
		} else {
			TU_ASSERT_OK(msgbus_unserve(svc[k]));
			unsigned failed = atomic_load(&e[k].failed);
			ck_assert_uint_eq(failed, 0);
			handled[k] = (int)atomic_load(&e[k].handled);
			TU_ASSERT_OK(msgbus_close(wb[k]));
		}
		ck_assert_msg(handled[k] == (int)got[k],
		              "worker %d answered %d, requesters got %u of its "
		              "replies", k, handled[k], got[k]);
		ck_assert_msg(got[k] > 0, "worker %d handled nothing", k);
	}
	close_last(bus, url);
}
END_TEST

/* ---- asynchronous calls ------------------------------------------------- */

START_TEST(test_async)
{
	char url[96], text[32], got[64];
	struct echo e = { .suffix = "|cb" };
	msgbus_service *ps = NULL, *cs = NULL;
	msgbus_call *c[65];
	msgbus_msg *m = NULL;
	msgbus_req *req = NULL;
	int seen[32] = { 0 };

	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, NULL);
	msgbus_bus *wb = tu_open(url, NULL);
	TU_ASSERT_OK(msgbus_serve(wb, "as.poll", NULL, NULL, &ps));
	TU_ASSERT_OK(msgbus_serve(wb, "as.cb", echo_cb, &e, &cs));

	/* 32 in flight, nobody taking them yet: pending */
	for (int i = 0; i < 32; i++) {
		snprintf(text, sizeof(text), "p%d", i);
		TU_ASSERT_OK(msgbus_call_start(bus, "as.poll", text,
		                               strlen(text), TU_WAIT_MS,
		                               &c[i]));
	}
	for (int i = 0; i < 32; i++)
		TU_ASSERT_RC(msgbus_call_wait(c[i], &m, 0), MSGBUS_EAGAIN);
	double t0 = tu_now_ms();
	TU_ASSERT_RC(msgbus_call_wait(c[5], &m, 20), MSGBUS_EAGAIN);
	ck_assert_msg(tu_now_ms() - t0 >= 20.0, "EAGAIN before 20 ms");
	for (int i = 0; i < 32; i++) {
		int k = -1;
		serve_one(ps, "|p", got, sizeof(got));
		ck_assert_msg(sscanf(got, "p%d", &k) == 1 && k >= 0 && k < 32 &&
		                      !seen[k],
		              "unexpected request \"%s\"", got);
		seen[k] = 1;
	}
	for (int i = 31; i >= 0; i--) {
		snprintf(text, sizeof(text), "p%d", i);
		TU_ASSERT_OK(msgbus_call_wait(c[i], &m, -1));
		ASSERT_ECHO(m, text, "|p");
		ck_assert_str_eq(msgbus_msg_subject(m), "as.poll");
		msgbus_msg_release(m);
	}

	/* a sliding window of 32 calls to a callback worker */
	const int total = tu_valgrind() ? 300 : 3000;
	int started = 0, eagain = 0;
	for (; started < 32; started++) {
		snprintf(text, sizeof(text), "w%d", started);
		TU_ASSERT_OK(msgbus_call_start(bus, "as.cb", text, strlen(text),
		                               TU_WAIT_MS, &c[started % 32]));
	}
	for (int done = 0; done < total; done++) {
		msgbus_call *call = c[done % 32];
		int rc = msgbus_call_wait(call, &m, 0);
		if (rc == MSGBUS_EAGAIN) {
			eagain++;
			rc = msgbus_call_wait(call, &m, -1);
		}
		TU_ASSERT_OK(rc);
		snprintf(text, sizeof(text), "w%d", done);
		ASSERT_ECHO(m, text, "|cb");
		msgbus_msg_release(m);
		if (started < total) {
			snprintf(text, sizeof(text), "w%d", started);
			TU_ASSERT_OK(msgbus_call_start(bus, "as.cb", text,
			                               strlen(text), TU_WAIT_MS,
			                               &c[done % 32]));
			started++;
		}
	}
	(void)eagain; /* how many were still pending depends on scheduling */

	/* cancel: a pending call is freed and its request skipped; a taken
	 * one's reply is dropped; NULL is a no-op */
	TU_ASSERT_OK(msgbus_call_start(bus, "as.poll", "gone", 4, TU_WAIT_MS,
	                               &c[0]));
	msgbus_call_cancel(c[0]);
	TU_ASSERT_RC(msgbus_service_recv(ps, &req, 0), MSGBUS_EAGAIN);
	TU_ASSERT_OK(msgbus_call_start(bus, "as.poll", "taken", 5, TU_WAIT_MS,
	                               &c[0]));
	TU_ASSERT_OK(msgbus_service_recv(ps, &req, TU_WAIT_MS));
	msgbus_call_cancel(c[0]);
	TU_ASSERT_RC(msgbus_respond(req, "late", 4), MSGBUS_ETIMEDOUT);
	msgbus_call_cancel(NULL);
	TU_ASSERT_OK(msgbus_call_start(bus, "as.poll", "after", 5, TU_WAIT_MS,
	                               &c[0]));
	serve_one(ps, "|p", got, sizeof(got));
	ck_assert_str_eq(got, "after");
	TU_ASSERT_OK(msgbus_call_wait(c[0], &m, -1));
	ASSERT_ECHO(m, "after", "|p");
	msgbus_msg_release(m);

	/* at most 64 in flight per handle */
	for (int i = 0; i < 64; i++)
		TU_ASSERT_OK(msgbus_call_start(bus, "as.poll", "x", 1,
		                               TU_WAIT_MS, &c[i]));
	TU_ASSERT_RC(msgbus_call_start(bus, "as.poll", "x", 1, TU_WAIT_MS,
	                               &c[64]),
	             MSGBUS_ELIMIT);
	TU_ASSERT_RC(msgbus_request(bus, "as.cb", "x", 1, &m, TU_WAIT_MS),
	             MSGBUS_ELIMIT);
	REQUEST_ECHO(wb, "as.cb", "other handle", "|cb"); /* its own 64 */
	msgbus_call_cancel(c[10]);
	TU_ASSERT_OK(msgbus_call_start(bus, "as.cb", "one more", 8,
	                               TU_WAIT_MS, &c[10]));
	TU_ASSERT_OK(msgbus_call_wait(c[10], &m, -1));
	ASSERT_ECHO(m, "one more", "|cb");
	msgbus_msg_release(m);
	for (int i = 0; i < 64; i++)
		if (i != 10)
			msgbus_call_cancel(c[i]);
	TU_ASSERT_RC(msgbus_service_recv(ps, &req, 0), MSGBUS_EAGAIN);
	REQUEST_ECHO(bus, "as.cb", "free again", "|cb");

	TU_ASSERT_OK(msgbus_unserve(ps));
	TU_ASSERT_OK(msgbus_unserve(cs));
	/* the window, "other handle", "one more", "free again" */
	unsigned handled = atomic_load(&e.handled);
	unsigned failed = atomic_load(&e.failed);
	ck_assert_uint_eq(handled, (unsigned)total + 3);
	ck_assert_uint_eq(failed, 0);
	TU_ASSERT_OK(msgbus_close(wb));
	close_last(bus, url);
}
END_TEST

/* ---- taking in one thread, answering in another ------------------------- */

struct relay {
	msgbus_service *svc;
	int n;
	struct tu_pipe q; /* msgbus_req pointers */
	int recv_rc, resp_rc, answered;
};

static void *relay_take(void *p)
{
	struct relay *r = p;
	for (int i = 0; i < r->n; i++) {
		msgbus_req *req = NULL;
		int rc = msgbus_service_recv(r->svc, &req, TU_WAIT_MS);
		if (rc != MSGBUS_OK) {
			r->recv_rc = rc;
			break;
		}
		if (put_ptr(&r->q, req) != 0) {
			r->recv_rc = -1;
			msgbus_respond(req, NULL, 0);
			break;
		}
	}
	return NULL;
}

/* The callback form: keep the request, answer it from another thread. */
static void relay_cb(msgbus_req *req, void *arg)
{
	struct relay *r = arg;
	if (put_ptr(&r->q, req) != 0)
		msgbus_respond(req, NULL, 0);
}

static void *relay_answer(void *p)
{
	struct relay *r = p;
	for (int i = 0; i < r->n; i++) {
		void *v = NULL;
		char buf[64];
		if (get_ptr(&r->q, TU_WAIT_MS, &v) != 0) {
			r->resp_rc = -1;
			break;
		}
		msgbus_req *req = v;
		size_t n = msgbus_req_len(req);
		if (n > 32)
			n = 32;
		memcpy(buf, msgbus_req_data(req), n);
		memcpy(buf + n, "|rt", 3);
		int rc = msgbus_respond(req, buf, n + 3);
		if (rc != MSGBUS_OK) {
			r->resp_rc = rc;
			break;
		}
		r->answered++;
	}
	return NULL;
}

/* Loop index: scheme = _i % 2; _i / 2: 0 = polling worker, 1 = callback
 * worker deferring its answers. */
START_TEST(test_respond_other_thread)
{
	const int cb = _i / 2;
	char url[96], text[32];
	struct relay r = { .n = 132 };
	msgbus_call *c[32];
	msgbus_msg *m = NULL;
	pthread_t take, answer;

	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, NULL);
	msgbus_bus *wb = tu_open(url, NULL);
	tu_pipe_init(&r.q);
	TU_ASSERT_OK(msgbus_serve(wb, "rt.svc", cb ? relay_cb : NULL, &r,
	                          &r.svc));
	if (!cb)
		ck_assert_int_eq(pthread_create(&take, NULL, relay_take, &r),
		                 0);
	ck_assert_int_eq(pthread_create(&answer, NULL, relay_answer, &r), 0);

	for (int i = 0; i < 100; i++) {
		snprintf(text, sizeof(text), "s%d", i);
		REQUEST_ECHO(bus, "rt.svc", text, "|rt");
	}
	for (int i = 0; i < 32; i++) {
		snprintf(text, sizeof(text), "a%d", i);
		TU_ASSERT_OK(msgbus_call_start(bus, "rt.svc", text,
		                               strlen(text), TU_WAIT_MS,
		                               &c[i]));
	}
	for (int i = 0; i < 32; i++) {
		snprintf(text, sizeof(text), "a%d", i);
		TU_ASSERT_OK(msgbus_call_wait(c[i], &m, -1));
		ASSERT_ECHO(m, text, "|rt");
		msgbus_msg_release(m);
	}
	if (!cb)
		pthread_join(take, NULL);
	pthread_join(answer, NULL);
	ck_assert_int_eq(r.recv_rc, 0);
	ck_assert_int_eq(r.resp_rc, 0);
	ck_assert_int_eq(r.answered, r.n);

	TU_ASSERT_OK(msgbus_unserve(r.svc));
	tu_pipe_close(&r.q);
	TU_ASSERT_OK(msgbus_close(wb));
	close_last(bus, url);
}
END_TEST

/* ---- argument errors, sizes, reserved subjects -------------------------- */

/* A worker's error reply is final. One that said MSGBUS_EAGAIN (a corrupt
 * entry, or a peer's REP frame across a link, can say anything) made
 * msgbus_call_wait free the call and return the code that means "still in
 * flight, the call stays valid": the caller's next wait or cancel used
 * freed memory (check_hostile, participants and calls, seed 18). */
START_TEST(test_error_reply_never_eagain)
{
	char url[96];
	msgbus_service *svc;
	msgbus_call *call;
	msgbus_req *req;
	msgbus_msg *m = NULL;

	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, NULL);
	TU_ASSERT_OK(msgbus_serve(bus, "ea.svc", NULL, NULL, &svc));
	TU_ASSERT_OK(msgbus_call_start(bus, "ea.svc", "x", 1, TU_WAIT_MS, &call));
	TU_ASSERT_OK(msgbus_service_recv(svc, &req, TU_WAIT_MS));
	TU_ASSERT_OK(mb_respond_error(req, MSGBUS_EAGAIN));
	ck_assert_int_eq(msgbus_call_wait(call, &m, TU_WAIT_MS), MSGBUS_EPROTO);
	ck_assert_ptr_null(m);
	TU_ASSERT_OK(msgbus_unserve(svc));
	close_last(bus, url);
}
END_TEST

static void ignore_cb(const msgbus_msg *msg, void *arg)
{
	(void)msg;
	(void)arg;
}

START_TEST(test_errors)
{
	static const char *bad[] = { "",    "e.*", "e.>", "*",   ">",
		                     "e..s", ".e", "e.",  "a b", "e.*.s" };
	char url[96], got[64], name[300];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	struct echo e = { .suffix = "|e" };
	msgbus_service *svc = NULL, *ps = NULL;
	msgbus_call *c = NULL;
	msgbus_msg *m = NULL;
	msgbus_req *req = NULL;
	msgbus_sub *sub = NULL;
	static unsigned char big[100000];

	o.max_msg_size = 4096;
	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, &o);
	msgbus_bus *wb = tu_open(url, &o);

	/* msgbus_serve */
	TU_ASSERT_RC(msgbus_serve(NULL, "e.s", echo_cb, &e, &svc),
	             MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_serve(wb, NULL, echo_cb, &e, &svc), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_serve(wb, "e.s", echo_cb, &e, NULL), MSGBUS_EINVAL);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_msg(msgbus_serve(wb, bad[i], echo_cb, &e, &svc) ==
		                      MSGBUS_EINVAL,
		              "serve \"%s\" not EINVAL", bad[i]);
		ck_assert_msg(msgbus_request(bus, bad[i], "x", 1, &m, 100) ==
		                      MSGBUS_EINVAL,
		              "request \"%s\" not EINVAL", bad[i]);
		ck_assert_msg(msgbus_call_start(bus, bad[i], "x", 1, 100,
		                                &c) == MSGBUS_EINVAL,
		              "call_start \"%s\" not EINVAL", bad[i]);
	}
	/* up to 250 bytes: the library adds a 5-byte prefix (serve(3)) */
	memset(name, 'n', 251);
	name[251] = '\0';
	TU_ASSERT_RC(msgbus_serve(wb, name, echo_cb, &e, &svc), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_request(bus, name, "x", 1, &m, 100), MSGBUS_EINVAL);
	name[250] = '\0';
	TU_ASSERT_OK(msgbus_serve(wb, name, echo_cb, &e, &svc));
	REQUEST_ECHO(bus, name, "long name", "|e");
	TU_ASSERT_OK(msgbus_unserve(svc));

	TU_ASSERT_OK(msgbus_serve(wb, "e.s", echo_cb, &e, &svc));
	TU_ASSERT_OK(msgbus_serve(wb, "e.p", NULL, NULL, &ps));

	/* msgbus_request / msgbus_call_start */
	TU_ASSERT_RC(msgbus_request(NULL, "e.s", "x", 1, &m, 100),
	             MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_request(bus, NULL, "x", 1, &m, 100), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_request(bus, "e.s", "x", 1, NULL, 100),
	             MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_request(bus, "e.s", NULL, 3, &m, 100),
	             MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_request(bus, "e.s", "x", 1, &m, 0), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_request(bus, "e.s", "x", 1, &m, -2), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_call_start(NULL, "e.s", "x", 1, 100, &c),
	             MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_call_start(bus, NULL, "x", 1, 100, &c),
	             MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_call_start(bus, "e.s", "x", 1, 100, NULL),
	             MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_call_start(bus, "e.s", NULL, 3, 100, &c),
	             MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_call_start(bus, "e.s", "x", 1, 0, &c),
	             MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_call_wait(NULL, &m, 0), MSGBUS_EINVAL);
	/* EINVAL is not final: the call stays valid */
	TU_ASSERT_OK(msgbus_call_start(bus, "e.p", "v", 1, TU_WAIT_MS, &c));
	TU_ASSERT_RC(msgbus_call_wait(c, NULL, 0), MSGBUS_EINVAL);
	serve_one(ps, "|ok", got, sizeof(got));
	TU_ASSERT_RC(msgbus_call_wait(c, NULL, -1), MSGBUS_EINVAL);
	TU_ASSERT_OK(msgbus_call_wait(c, &m, -1));
	ASSERT_ECHO(m, "v", "|ok");
	msgbus_msg_release(m);
	/* no data is a valid request */
	TU_ASSERT_OK(msgbus_request(bus, "e.s", NULL, 0, &m, TU_WAIT_MS));
	ASSERT_ECHO(m, "", "|e");
	msgbus_msg_release(m);

	/* worker-side calls */
	TU_ASSERT_RC(msgbus_service_recv(NULL, &req, 0), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_service_recv(ps, NULL, 0), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_service_recv(svc, &req, 0), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_respond(NULL, "x", 1), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_unserve(NULL), MSGBUS_EINVAL);

	/* sizes: a request carries 16 bytes of header in max_msg_size */
	tu_fill(big, sizeof(big), 7);
	TU_ASSERT_RC(msgbus_request(bus, "e.s", big, 4096 - 15, &m, 100),
	             MSGBUS_EMSGSIZE);
	TU_ASSERT_RC(msgbus_call_start(bus, "e.s", big, 4096 - 15, 100, &c),
	             MSGBUS_EMSGSIZE);
	TU_ASSERT_RC(msgbus_request(bus, "e.s", big, 100000, &m, 100),
	             MSGBUS_EMSGSIZE);
	TU_ASSERT_OK(msgbus_call_start(bus, "e.p", big, 4096 - 16, TU_WAIT_MS,
	                               &c));
	TU_ASSERT_OK(msgbus_service_recv(ps, &req, TU_WAIT_MS));
	ck_assert_uint_eq(msgbus_req_len(req), 4096 - 16);
	ck_assert_int_eq(tu_verify(msgbus_req_data(req), 4096 - 16, 7), -1);
	TU_ASSERT_OK(msgbus_respond(req, big, 4096)); /* reply: all of it */
	TU_ASSERT_OK(msgbus_call_wait(c, &m, -1));
	ck_assert_uint_eq(msgbus_msg_len(m), 4096);
	ck_assert_int_eq(tu_verify(msgbus_msg_data(m), 4096, 7), -1);
	msgbus_msg_release(m);

	/* respond errors free the request; its requester times out */
	double t0 = tu_now_ms();
	TU_ASSERT_OK(msgbus_call_start(bus, "e.p", "a", 1, 150, &c));
	TU_ASSERT_OK(msgbus_service_recv(ps, &req, TU_WAIT_MS));
	TU_ASSERT_RC(msgbus_respond(req, NULL, 5), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_call_wait(c, &m, -1), MSGBUS_ETIMEDOUT);
	ck_assert_msg(tu_now_ms() - t0 >= 150.0, "ETIMEDOUT before 150 ms");
	TU_ASSERT_OK(msgbus_call_start(bus, "e.p", "b", 1, 150, &c));
	TU_ASSERT_OK(msgbus_service_recv(ps, &req, TU_WAIT_MS));
	TU_ASSERT_RC(msgbus_respond(req, big, 4097), MSGBUS_EMSGSIZE);
	TU_ASSERT_RC(msgbus_call_wait(c, &m, -1), MSGBUS_ETIMEDOUT);
	TU_ASSERT_OK(msgbus_call_start(bus, "e.p", "c", 1, TU_WAIT_MS, &c));
	serve_one(ps, "|ok", got, sizeof(got));
	ck_assert_str_eq(got, "c");
	TU_ASSERT_OK(msgbus_call_wait(c, &m, -1));
	ASSERT_ECHO(m, "c", "|ok");
	msgbus_msg_release(m);

	/* "_svc." subjects are reserved */
	TU_ASSERT_RC(msgbus_publish(bus, "_svc.x", "x", 1, 0), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_publish(bus, "_svc.e.s", "x", 1, 0),
	             MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_subscribe(bus, "_svc.x", 0, &sub), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_subscribe(bus, "_svc.e.s", MSGBUS_SUB_LOSSY, &sub),
	             MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_subscribe(bus, "_svc.*", 0, &sub), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_subscribe(bus, "_svc.>", 0, &sub), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_subscribe_cb(bus, "_svc.x", 0, ignore_cb, NULL,
	                                 &sub),
	             MSGBUS_EINVAL);

	TU_ASSERT_OK(msgbus_unserve(svc));
	TU_ASSERT_OK(msgbus_unserve(ps));
	unsigned failed = atomic_load(&e.failed);
	ck_assert_uint_eq(failed, 0);
	TU_ASSERT_OK(msgbus_close(wb));
	close_last(bus, url);
}
END_TEST

/* Wildcard subscriptions, made before and after the service exists, see
 * none of its requests (nor its replies). */
START_TEST(test_wildcards_see_no_requests)
{
	char url[96];
	struct echo e = { .suffix = "|w" };
	msgbus_service *a = NULL, *b = NULL;
	msgbus_sub *gt = NULL, *two = NULL, *gt2 = NULL, *three = NULL;
	msgbus_msg *m = NULL;

	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, NULL);
	msgbus_bus *wb = tu_open(url, NULL);
	TU_ASSERT_OK(msgbus_subscribe(bus, ">", 0, &gt));
	TU_ASSERT_OK(msgbus_subscribe(bus, "*.*", 0, &two));
	TU_ASSERT_OK(msgbus_serve(wb, "wc", echo_cb, &e, &a));
	REQUEST_ECHO(bus, "wc", "one", "|w");
	TU_ASSERT_OK(msgbus_subscribe(wb, ">", 0, &gt2));
	TU_ASSERT_OK(msgbus_subscribe(wb, "*.*.*", 0, &three));
	TU_ASSERT_OK(msgbus_serve(wb, "wc.x", echo_cb, &e, &b));
	for (int i = 0; i < 20; i++) {
		REQUEST_ECHO(bus, "wc", "two", "|w");
		REQUEST_ECHO(bus, "wc.x", "three", "|w");
	}
	TU_ASSERT_EMPTY(gt);
	TU_ASSERT_EMPTY(two);
	TU_ASSERT_EMPTY(gt2);
	TU_ASSERT_EMPTY(three);
	/* they do work */
	TU_ASSERT_OK(msgbus_publish(bus, "wc.plain", "p", 1, 0));
	TU_ASSERT_OK(msgbus_recv(gt, &m, TU_WAIT_MS));
	ck_assert_str_eq(msgbus_msg_subject(m), "wc.plain");
	msgbus_msg_release(m);
	TU_ASSERT_OK(msgbus_recv(two, &m, TU_WAIT_MS));
	ck_assert_str_eq(msgbus_msg_subject(m), "wc.plain");
	msgbus_msg_release(m);
	TU_ASSERT_OK(msgbus_recv(gt2, &m, TU_WAIT_MS));
	ck_assert_str_eq(msgbus_msg_subject(m), "wc.plain");
	msgbus_msg_release(m);
	TU_ASSERT_EMPTY(gt);
	TU_ASSERT_EMPTY(three);

	TU_ASSERT_OK(msgbus_close(wb)); /* unserves both, unsubscribes */
	unsigned handled = atomic_load(&e.handled);
	ck_assert_uint_eq(handled, 41);
	TU_ASSERT_OK(msgbus_unsubscribe(gt));
	TU_ASSERT_OK(msgbus_unsubscribe(two));
	close_last(bus, url);
}
END_TEST

/* ---- large requests and replies ----------------------------------------- */

#define MAX_MSG (1u << 20)

/* Reply size for each request size: across the inline limits of a ring
 * slot (224 bytes with the 16-byte header) and of a call entry (232). */
static const size_t large_sizes[][2] = {
	{ 0, 0 },         { 1, 232 },      { 208, 233 },
	{ 209, 4096 },    { 4000, 1 },     { LARGE, LARGE },
	{ LARGE + 1, 0 }, { MAX_MSG - 16, MAX_MSG },
};
#define N_LARGE (sizeof(large_sizes) / sizeof(large_sizes[0]))

struct large_worker {
	atomic_uint handled, bad;
	unsigned char *buf; /* MAX_MSG bytes, used by the callback thread */
};

/* Checks the request (tu_fill with its length as seed) and answers with
 * the listed reply size (tu_fill, seed length + 1); "BAD" otherwise. */
static void large_cb(msgbus_req *req, void *arg)
{
	struct large_worker *w = arg;
	size_t n = msgbus_req_len(req);
	for (size_t i = 0; i < N_LARGE; i++) {
		if (large_sizes[i][0] != n)
			continue;
		if (tu_verify(msgbus_req_data(req), n, (uint32_t)n) != -1)
			break;
		size_t rn = large_sizes[i][1];
		tu_fill(w->buf, rn, (uint32_t)n + 1);
		if (msgbus_respond(req, w->buf, rn) == MSGBUS_OK)
			atomic_fetch_add(&w->handled, 1);
		else
			atomic_fetch_add(&w->bad, 1);
		return;
	}
	atomic_fetch_add(&w->bad, 1);
	msgbus_respond(req, "BAD", 3);
}

START_TEST(test_large)
{
	char url[96];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	struct large_worker w = { .buf = malloc(MAX_MSG) };
	unsigned char *req = malloc(MAX_MSG);
	msgbus_service *svc = NULL;
	msgbus_msg *m = NULL;
	msgbus_call *c[4];
	unsigned calls = 0;

	ck_assert_ptr_nonnull(w.buf);
	ck_assert_ptr_nonnull(req);
	o.max_msg_size = MAX_MSG;
	o.large_buffers = 4; /* a leaked buffer shows within a few rounds */
	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, &o);
	msgbus_bus *wb = tu_open(url, &o);
	TU_ASSERT_OK(msgbus_serve(wb, "lg.svc", large_cb, &w, &svc));

	for (int round = 0; round < 3; round++) {
		for (size_t i = 0; i < N_LARGE; i++) {
			size_t n = large_sizes[i][0], rn = large_sizes[i][1];
			tu_fill(req, n, (uint32_t)n);
			TU_ASSERT_OK(msgbus_request(bus, "lg.svc", req, n, &m,
			                            TU_WAIT_MS));
			calls++;
			ck_assert_msg(msgbus_msg_len(m) == rn,
			              "request of %zu: reply of %zu, want %zu",
			              n, msgbus_msg_len(m), rn);
			ck_assert_msg(tu_verify(msgbus_msg_data(m), rn,
			                        (uint32_t)n + 1) == -1,
			              "request of %zu: reply differs", n);
			ck_assert_str_eq(msgbus_msg_subject(m), "lg.svc");
			msgbus_msg_release(m);
		}
	}
	/* 100 KiB both ways, 20 times, with 2 calls in flight */
	tu_fill(req, LARGE, LARGE);
	for (int i = 0; i < 20; i++) {
		for (int k = 0; k < 2; k++)
			TU_ASSERT_OK(msgbus_call_start(bus, "lg.svc", req,
			                               LARGE, TU_WAIT_MS,
			                               &c[k]));
		for (int k = 0; k < 2; k++) {
			TU_ASSERT_OK(msgbus_call_wait(c[k], &m, -1));
			calls++;
			ck_assert_uint_eq(msgbus_msg_len(m), LARGE);
			ck_assert_int_eq(tu_verify(msgbus_msg_data(m), LARGE,
			                           LARGE + 1), -1);
			msgbus_msg_release(m);
		}
	}
	TU_ASSERT_OK(msgbus_unserve(svc)); /* joins the callback thread */
	unsigned bad = atomic_load(&w.bad);
	unsigned handled = atomic_load(&w.handled);
	ck_assert_uint_eq(bad, 0);
	ck_assert_uint_eq(handled, calls);
	TU_ASSERT_OK(msgbus_close(wb));
	close_last(bus, url);
	free(w.buf);
	free(req);
}
END_TEST

/* Replies hold large buffers until their requesters collect them. With
 * both buffers held, a third large reply finds none: the worker is not
 * held up beyond the crash bound, and the requester learns it at once
 * (MSGBUS_ELIMIT) rather than at its deadline. */
START_TEST(test_reply_without_buffer)
{
	char url[96];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	msgbus_service *svc = NULL;
	msgbus_call *c[3];
	msgbus_msg *m = NULL;
	msgbus_req *req = NULL;
	static unsigned char big[1000];

	o.large_buffers = 2;
	o.crash_bound_ms = CRASH_BOUND_MS;
	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, &o);
	msgbus_bus *wb = tu_open(url, &o);
	TU_ASSERT_OK(msgbus_serve(wb, "nb.svc", NULL, NULL, &svc));
	tu_fill(big, sizeof(big), 11);
	for (int i = 0; i < 3; i++)
		TU_ASSERT_OK(msgbus_call_start(bus, "nb.svc", "r", 1,
		                               TU_WAIT_MS, &c[i]));
	for (int i = 0; i < 2; i++) {
		TU_ASSERT_OK(msgbus_service_recv(svc, &req, TU_WAIT_MS));
		TU_ASSERT_OK(msgbus_respond(req, big, sizeof(big)));
	}
	TU_ASSERT_OK(msgbus_service_recv(svc, &req, TU_WAIT_MS));
	double t0 = tu_now_ms();
	int rc = msgbus_respond(req, big, sizeof(big));
	ASSERT_WITHIN(t0, CRASH_BOUND_MS + 100.0, "respond with no buffer");
	ck_assert_msg(rc == MSGBUS_ETIMEDOUT || rc == MSGBUS_ELIMIT,
	              "respond with no buffer: %s", msgbus_strerror(rc));
	t0 = tu_now_ms();
	TU_ASSERT_RC(msgbus_call_wait(c[2], &m, -1), MSGBUS_ELIMIT);
	ASSERT_WITHIN(t0, AT_ONCE_MS, "call_wait of the unanswerable call");
	for (int i = 0; i < 2; i++) {
		TU_ASSERT_OK(msgbus_call_wait(c[i], &m, -1));
		ck_assert_uint_eq(msgbus_msg_len(m), sizeof(big));
		ck_assert_int_eq(tu_verify(msgbus_msg_data(m), sizeof(big), 11),
		                 -1);
		msgbus_msg_release(m);
	}
	/* collected: both buffers serve again */
	for (int i = 0; i < 2; i++)
		TU_ASSERT_OK(msgbus_call_start(bus, "nb.svc", "r", 1,
		                               TU_WAIT_MS, &c[i]));
	for (int i = 0; i < 2; i++) {
		TU_ASSERT_OK(msgbus_service_recv(svc, &req, TU_WAIT_MS));
		TU_ASSERT_OK(msgbus_respond(req, big, sizeof(big)));
	}
	for (int i = 0; i < 2; i++) {
		TU_ASSERT_OK(msgbus_call_wait(c[i], &m, -1));
		ck_assert_uint_eq(msgbus_msg_len(m), sizeof(big));
		msgbus_msg_release(m);
	}
	TU_ASSERT_OK(msgbus_unserve(svc));
	TU_ASSERT_OK(msgbus_close(wb));
	close_last(bus, url);
}
END_TEST

/* ---- close with work outstanding ---------------------------------------- */

/* Calls pending, taken, answered but not collected (inline and large),
 * services of both forms: close frees it all (ASan checks the heap), the
 * large buffers come back, and the taken request's late reply is dropped.
 * Then one handle that both serves and calls is closed. */
START_TEST(test_close_outstanding)
{
	char url[96];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	struct echo e = { .suffix = "|c" };
	msgbus_service *cb = NULL, *poll1 = NULL, *poll2 = NULL, *own = NULL;
	msgbus_call *c = NULL;
	msgbus_req *taken = NULL;
	msgbus_buf *l1 = NULL, *l2 = NULL;
	static unsigned char big[LARGE];

	o.large_buffers = 2;
	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, &o);
	msgbus_bus *wb = tu_open(url, &o);
	TU_ASSERT_OK(msgbus_serve(wb, "co.cb", echo_cb, &e, &cb));
	TU_ASSERT_OK(msgbus_serve(wb, "co.poll", NULL, NULL, &poll1));
	TU_ASSERT_OK(msgbus_serve(wb, "co.poll2", NULL, NULL, &poll2));

	tu_fill(big, sizeof(big), 3);
	for (int i = 0; i < 3; i++)
		TU_ASSERT_OK(msgbus_call_start(bus, "co.poll", "p", 1,
		                               TU_WAIT_MS, &c));
	TU_ASSERT_OK(msgbus_call_start(bus, "co.poll", big, sizeof(big),
	                               TU_WAIT_MS, &c)); /* holds a buffer */
	TU_ASSERT_OK(msgbus_call_start(bus, "co.poll2", "t", 1, TU_WAIT_MS,
	                               &c));
	TU_ASSERT_OK(msgbus_service_recv(poll2, &taken, TU_WAIT_MS));
	TU_ASSERT_OK(msgbus_call_start(bus, "co.cb", "i", 1, TU_WAIT_MS, &c));
	TU_ASSERT_OK(msgbus_call_start(bus, "co.cb", big, 1000, TU_WAIT_MS,
	                               &c));
	/* wait (bounded) until both replies are in place; the large one
	 * holds the other buffer */
	double end = tu_now_ms() + TU_WAIT_MS;
	while (atomic_load(&e.handled) < 2 && tu_now_ms() < end)
		tu_sleep_ms(1);
	unsigned handled = atomic_load(&e.handled);
	ck_assert_uint_eq(handled, 2);
	TU_ASSERT_RC(msgbus_loan(wb, 100, 0, &l1), MSGBUS_EAGAIN);

	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_SEGMENT(url);
	TU_ASSERT_RC(msgbus_respond(taken, "late", 4), MSGBUS_ETIMEDOUT);
	/* the queued requests of the closed requester are skipped, which
	 * lets their buffer go */
	TU_ASSERT_RC(msgbus_service_recv(poll1, &taken, 0), MSGBUS_EAGAIN);
	TU_ASSERT_OK(msgbus_loan(wb, 100, 0, &l1));
	TU_ASSERT_OK(msgbus_loan(wb, 100, 0, &l2));
	msgbus_loan_abort(l1);
	msgbus_loan_abort(l2);

	/* one handle serving itself with a call outstanding */
	TU_ASSERT_OK(msgbus_serve(wb, "co.own", NULL, NULL, &own));
	TU_ASSERT_OK(msgbus_call_start(wb, "co.own", "o", 1, TU_WAIT_MS, &c));
	TU_ASSERT_OK(msgbus_call_start(wb, "co.cb", "o", 1, TU_WAIT_MS, &c));
	close_last(wb, url); /* 4 services, 2 calls */
	unsigned failed = atomic_load(&e.failed);
	ck_assert_uint_eq(failed, 0);
}
END_TEST

Suite *suite_reqrep(void)
{
	Suite *s = suite_create("reqrep");
	TCase *tc;

	tc = tu_tcase("noresp", TU_CASE_TIMEOUT);
	tcase_add_loop_test(tc, test_noresp, 0, TU_NSCHEMES);
	suite_add_tcase(s, tc);

	tc = tu_tcase("timeout", TU_CASE_TIMEOUT);
	tcase_add_loop_test(tc, test_timeout_late_reply, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_timeout_stale_skipped, 0, TU_NSCHEMES);
	suite_add_tcase(s, tc);

	tc = tu_tcase("async", TU_CASE_TIMEOUT);
	tcase_add_loop_test(tc, test_async, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_respond_other_thread, 0, 2 * TU_NSCHEMES);
	suite_add_tcase(s, tc);

	tc = tu_tcase("load", TU_CASE_TIMEOUT);
	tcase_add_loop_test(tc, test_load, 0, TU_NSCHEMES);
	suite_add_tcase(s, tc);

	tc = tu_tcase("errors", TU_CASE_TIMEOUT);
	tcase_add_loop_test(tc, test_errors, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_error_reply_never_eagain, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_wildcards_see_no_requests, 0,
	                    TU_NSCHEMES);
	suite_add_tcase(s, tc);

	tc = tu_tcase("large", TU_CASE_TIMEOUT);
	tcase_add_loop_test(tc, test_large, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_reply_without_buffer, 0, TU_NSCHEMES);
	suite_add_tcase(s, tc);

	tc = tu_tcase("close", TU_CASE_TIMEOUT);
	tcase_add_loop_test(tc, test_close_outstanding, 0, TU_NSCHEMES);
	suite_add_tcase(s, tc);

	if (tu_valgrind())
		return s; /* the rest forks and SIGKILLs */

	tc = tu_tcase("deaths", TU_CASE_TIMEOUT);
	tcase_add_test(tc, test_noresp_worker_killed);
	tcase_add_loop_test(tc, test_worker_killed, 0, 3);
	tcase_add_loop_test(tc, test_worker_killed_mid_take, 0, 2);
	tcase_add_loop_test(tc, test_requester_killed, 0, 2);
	suite_add_tcase(s, tc);
	return s;
}
