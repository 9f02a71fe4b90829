/*
 * test_util.h - helpers shared by the Check suites in tests/check_*.c.
 *
 * Everything here is static inline so each suite file is self-contained;
 * the only shared state (the run id and a name counter) lives in
 * check_main.c. Helpers whose name ends in _child are safe to call in a
 * forked child: they never use ck_assert (a grandchild must report through
 * its exit status, not through Check).
 */
#ifndef TEST_UTIL_H
#define TEST_UTIL_H

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "msgbus.h"

/* Suite constructors, one per tests/check_<area>.c. */
Suite *suite_api(void);
Suite *suite_pubsub(void);
Suite *suite_flow(void);
Suite *suite_crash(void);
Suite *suite_corrupt(void);
Suite *suite_reqrep(void);
Suite *suite_wire(void);
Suite *suite_tcp(void);
Suite *suite_tcp_dos(void);
Suite *suite_chaos(void);
Suite *suite_hostile(void);
Suite *suite_security(void);
Suite *suite_contracts(void);
Suite *suite_inbox(void);
Suite *suite_nats(void);
Suite *suite_v2(void);
Suite *suite_introspect(void);
Suite *suite_shutdown(void);
Suite *suite_poll(void);
Suite *suite_spin(void);
Suite *suite_audit(void);
Suite *suite_edges(void);

/* Defined in check_main.c. */
extern pid_t tu_run_pid;    /* pid of the runner, prefix of every bus name */
unsigned tu_next_id(void);  /* process-wide counter for unique names */
/* Calls by the calling thread so far, counted through the test binary's
 * --wrap=NAME links (Makefile TEST_WRAPS, check_main.c): the library's clock
 * reads (mb_now_ns), subject checks (mb_subject_check) and hashes (mb_hash),
 * CPU yields (mb_yield_cpu), looks at a bell (mb_bell_ring), doorbell
 * datagrams sent (mb_doorbell_ring) and records put into inboxes
 * (mb_inbox_put). */
extern _Thread_local unsigned long tu_clock_reads, tu_subject_checks, tu_hashes, tu_yields,
	tu_bell_looks, tu_doorbell_rings, tu_inbox_puts;
/* Calls started without waiting (mb_call_start_nowait) by the library's
 * link code: a peer's requests read by a spinning thread (check_tcp). */
extern atomic_ulong tu_req_starts_nowait;

#define TU_WAIT_MS 5000     /* bound for something that must happen */
#define TU_CASE_TIMEOUT 60  /* seconds; tcase_set_timeout for every case */

/* Loop-test index to URL scheme: 0 = inproc, 1 = shm. */
#define TU_NSCHEMES 2
static inline const char *tu_scheme(int i)
{
	return (i % TU_NSCHEMES) ? "shm" : "inproc";
}

/* Non-zero when running under valgrind: skip fork/kill-heavy and
 * timing-sensitive cases, shrink message counts. */
static inline int tu_valgrind(void)
{
	const char *v = getenv("MSGBUS_TEST_VALGRIND");
	return v != NULL && *v != '\0' && strcmp(v, "0") != 0;
}

#define TU_ASSERT_RC(expr, want)                                              \
	do {                                                                  \
		int tu_rc_ = (expr);                                          \
		int tu_want_ = (want);                                        \
		ck_assert_msg(tu_rc_ == tu_want_,                             \
		              "%s: got %d (%s), want %d (%s)", #expr, tu_rc_, \
		              msgbus_strerror(tu_rc_), tu_want_,              \
		              msgbus_strerror(tu_want_));                     \
	} while (0)
#define TU_ASSERT_OK(expr) TU_ASSERT_RC(expr, MSGBUS_OK)

/* Sends all of data on a socket: 0, or -1 once the peer closed it (a raw
 * peer in the TCP suites; never SIGPIPE). */
static inline int tu_send_all(int fd, const void *data, size_t len)
{
	const uint8_t *p = data;
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* ---- time ------------------------------------------------------------ */

static inline double tu_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* CPU time (user + system) used by the calling thread, in ms. */
static inline double tu_thread_cpu_ms(void)
{
	struct rusage ru;
	if (getrusage(RUSAGE_THREAD, &ru) != 0)
		return -1.0;
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

static inline void tu_sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* ---- names and segments ---------------------------------------------- */

#define TU_MAX_CREATED 64
static char tu_created[TU_MAX_CREATED][128];
static int tu_ncreated;

/* Remembers an shm:// URL for tu_teardown() to remove. */
static inline void tu_remember_url(const char *url)
{
	if (strncmp(url, "shm://", 6) == 0 && tu_ncreated < TU_MAX_CREATED &&
	    strlen(url) < sizeof(tu_created[0]))
		strcpy(tu_created[tu_ncreated++], url);
}

/* A bus URL unique to this run, this process and this call:
 * "<scheme>://ck<runpid>x<pid>x<n>". shm names are remembered so that
 * tu_teardown() can remove a segment left behind by a failed test. */
static inline void tu_unique_url(char *buf, size_t size, const char *scheme)
{
	int n = snprintf(buf, size, "%s://ck%ldx%ldx%u", scheme,
	                 (long)tu_run_pid, (long)getpid(), tu_next_id());
	ck_assert_msg(n > 0 && (size_t)n < size, "url buffer too small");
	tu_remember_url(buf);
}

/* "/dev/shm/msgbus.NAME" for "shm://NAME"; "" for other schemes. */
static inline const char *tu_shm_path(char *buf, size_t size,
                                      const char *url)
{
	if (size == 0)
		return buf;
	buf[0] = '\0';
	if (strncmp(url, "shm://", 6) == 0) {
		int n = snprintf(buf, size, "/dev/shm/msgbus.%s", url + 6);
		if (n < 0 || (size_t)n >= size)
			buf[0] = '\0';
	}
	return buf;
}

static inline int tu_path_exists(const char *path)
{
	struct stat st;
	return path[0] != '\0' && stat(path, &st) == 0;
}

/* Asserts that no segment file exists for url (no-op for inproc). */
#define TU_ASSERT_NO_SEGMENT(url)                                           \
	do {                                                                \
		char tu_p_[128];                                            \
		tu_shm_path(tu_p_, sizeof(tu_p_), (url));                   \
		ck_assert_msg(!tu_path_exists(tu_p_),                       \
		              "segment %s left behind", tu_p_);             \
	} while (0)

/* Asserts that the segment file for an shm:// url exists (no-op for
 * inproc). */
#define TU_ASSERT_SEGMENT(url)                                              \
	do {                                                                \
		char tu_p_[128];                                            \
		tu_shm_path(tu_p_, sizeof(tu_p_), (url));                   \
		ck_assert_msg(tu_p_[0] == '\0' || tu_path_exists(tu_p_),    \
		              "segment %s missing", tu_p_);                 \
	} while (0)

static inline void tu_unlink_url(const char *url)
{
	char p[128];
	tu_shm_path(p, sizeof(p), url);
	if (p[0] != '\0')
		unlink(p);
}

/* Opens url with the given options (NULL = defaults), asserting success. */
static inline msgbus_bus *tu_open(const char *url, const msgbus_options *o)
{
	msgbus_bus *bus = NULL;
	TU_ASSERT_OK(msgbus_open(&bus, url, o));
	ck_assert_ptr_nonnull(bus);
	return bus;
}

/* ---- payloads -------------------------------------------------------- */

static inline uint64_t tu_xorshift(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

static inline void tu_fill(void *buf, size_t len, uint32_t seed)
{
	unsigned char *p = buf;
	uint64_t s = 0x9e3779b97f4a7c15ULL ^ ((uint64_t)seed << 1 | 1);
	for (size_t i = 0; i < len; i++)
		p[i] = (unsigned char)(tu_xorshift(&s) >> 32);
}

/* Index of the first byte that differs from tu_fill(seed), or -1. */
static inline long tu_verify(const void *buf, size_t len, uint32_t seed)
{
	const unsigned char *p = buf;
	uint64_t s = 0x9e3779b97f4a7c15ULL ^ ((uint64_t)seed << 1 | 1);
	for (size_t i = 0; i < len; i++)
		if (p[i] != (unsigned char)(tu_xorshift(&s) >> 32))
			return (long)i;
	return -1;
}

/* A small message carrying a publisher id and a sequence number. */
struct tu_seqmsg {
	uint32_t pub;
	uint32_t seq;
};

static inline int tu_get_seqmsg(const msgbus_msg *m, struct tu_seqmsg *out)
{
	if (msgbus_msg_len(m) < sizeof(*out) || msgbus_msg_data(m) == NULL)
		return -1;
	memcpy(out, msgbus_msg_data(m), sizeof(*out));
	return 0;
}

/* Publishes until the ring is full (EAGAIN with timeout 0), messages
 * carrying seq first, first+1, ...; returns how many were accepted.
 * Stops at limit to stay bounded if backpressure never comes. */
static inline int tu_fill_ring(msgbus_bus *bus, const char *subject,
                               uint32_t first, int limit)
{
	for (int n = 0; n < limit; n++) {
		struct tu_seqmsg m = { 0, first + (uint32_t)n };
		int rc = msgbus_publish(bus, subject, &m, sizeof(m), 0);
		if (rc == MSGBUS_EAGAIN)
			return n;
		ck_assert_msg(rc == MSGBUS_OK, "publish #%d: %d (%s)", n, rc,
		              msgbus_strerror(rc));
	}
	return limit;
}

/* Receives one message within timeout_ms and checks its subject and
 * its sequence number; releases it. */
#define TU_RECV_SEQ(sub, subject, want_seq)                                  \
	do {                                                                 \
		msgbus_msg *tu_m_ = NULL;                                    \
		struct tu_seqmsg tu_s_;                                      \
		TU_ASSERT_OK(msgbus_recv((sub), &tu_m_, TU_WAIT_MS));        \
		ck_assert_str_eq(msgbus_msg_subject(tu_m_), (subject));      \
		ck_assert_int_eq(tu_get_seqmsg(tu_m_, &tu_s_), 0);           \
		ck_assert_uint_eq(tu_s_.seq, (want_seq));                    \
		msgbus_msg_release(tu_m_);                                   \
	} while (0)

/* Asserts that sub has nothing more to deliver right now. */
#define TU_ASSERT_EMPTY(sub)                                                 \
	do {                                                                 \
		msgbus_msg *tu_m_ = NULL;                                    \
		int tu_r_ = msgbus_recv((sub), &tu_m_, 0);                   \
		if (tu_r_ == MSGBUS_OK)                                      \
			ck_abort_msg("unexpected message on %s (len %zu)",   \
			             msgbus_msg_subject(tu_m_),              \
			             msgbus_msg_len(tu_m_));                 \
		TU_ASSERT_RC(tu_r_, MSGBUS_EAGAIN);                          \
	} while (0)

/* One expected message: its subject and sequence number. */
struct tu_expect {
	const char *subject;
	uint32_t seq;
};

/* Receives exactly n messages and matches them to want[] as a set, each
 * subject's messages in the order listed, then asserts nothing more is
 * there. msgbus(7) defines no order across subjects, so none is
 * required. */
static inline void tu_recv_set(msgbus_sub *sub, const char *what,
                               const struct tu_expect *want, int n)
{
	int used[64] = { 0 };
	ck_assert_int_le(n, 64);
	for (int k = 0; k < n; k++) {
		msgbus_msg *m = NULL;
		struct tu_seqmsg v = { 0, 0 };
		int rc = msgbus_recv(sub, &m, TU_WAIT_MS);
		ck_assert_msg(rc == MSGBUS_OK, "%s: message %d of %d: %s",
		              what, k + 1, n, msgbus_strerror(rc));
		ck_assert_int_eq(tu_get_seqmsg(m, &v), 0);
		const char *s = msgbus_msg_subject(m);
		int j;
		for (j = 0; j < n; j++)
			if (!used[j] && strcmp(want[j].subject, s) == 0)
				break;
		ck_assert_msg(j < n, "%s: unexpected message %s seq %u", what,
		              s, v.seq);
		ck_assert_msg(want[j].seq == v.seq,
		              "%s: %s seq %u, want seq %u (order within the "
		              "subject)",
		              what, s, v.seq, want[j].seq);
		used[j] = 1;
		msgbus_msg_release(m);
	}
	msgbus_msg *m = NULL;
	int rc = msgbus_recv(sub, &m, 0);
	ck_assert_msg(rc == MSGBUS_EAGAIN, "%s: extra message %s (rc %d)",
	              what, rc == MSGBUS_OK ? msgbus_msg_subject(m) : "-", rc);
}

/* ---- pipes ----------------------------------------------------------- */

struct tu_pipe {
	int rd, wr;
};

static inline void tu_pipe_init(struct tu_pipe *p)
{
	int fd[2];
	ck_assert_msg(pipe2(fd, O_CLOEXEC) == 0, "pipe2: %s",
	              strerror(errno));
	p->rd = fd[0];
	p->wr = fd[1];
}

static inline void tu_pipe_close(struct tu_pipe *p)
{
	if (p->rd >= 0)
		close(p->rd);
	if (p->wr >= 0)
		close(p->wr);
	p->rd = p->wr = -1;
}

/* Sends one int. Child-safe. Returns 0 or -1. */
static inline int tu_pipe_put(struct tu_pipe *p, int v)
{
	ssize_t n;
	do
		n = write(p->wr, &v, sizeof(v));
	while (n < 0 && errno == EINTR);
	return n == (ssize_t)sizeof(v) ? 0 : -1;
}

/* Waits up to timeout_ms (-1 = forever) for one int. Child-safe.
 * Returns 0, -1 on timeout, -2 on EOF or error. */
static inline int tu_pipe_get(struct tu_pipe *p, int timeout_ms, int *v)
{
	struct pollfd pfd = { p->rd, POLLIN, 0 };
	double end = tu_now_ms() + timeout_ms;
	for (;;) {
		int left = timeout_ms < 0 ? -1 : (int)(end - tu_now_ms());
		if (timeout_ms >= 0 && left < 0)
			left = 0;
		int r = poll(&pfd, 1, left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -2;
		if (r == 0)
			return -1;
		break;
	}
	ssize_t n;
	do
		n = read(p->rd, v, sizeof(*v));
	while (n < 0 && errno == EINTR);
	return n == (ssize_t)sizeof(*v) ? 0 : -2;
}

/* ---- child processes ------------------------------------------------- */

#define TU_MAX_CHILDREN 16
static pid_t tu_children[TU_MAX_CHILDREN];

static inline void tu_forget_child(pid_t pid)
{
	for (int i = 0; i < TU_MAX_CHILDREN; i++)
		if (tu_children[i] == pid)
			tu_children[i] = 0;
}

/* fork() for tests: the child dies with the test process (PDEATHSIG, and
 * Check's killpg in fork mode); the parent remembers the pid so that
 * tu_teardown() can kill and reap it whatever path the test took. */
static inline pid_t tu_fork(void)
{
	pid_t parent = getpid();
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(120);
		return 0;
	}
	for (int i = 0; i < TU_MAX_CHILDREN; i++)
		if (tu_children[i] == 0) {
			tu_children[i] = pid;
			break;
		}
	return pid;
}

/* Runs fn(arg) in a child that exits with its return value. */
static inline pid_t tu_spawn(int (*fn)(void *), void *arg)
{
	pid_t pid = tu_fork();
	if (pid == 0)
		_exit(fn(arg) & 0xff);
	return pid;
}

/* Waits up to timeout_ms for pid to exit. Returns 0 and the status when
 * it was reaped, -1 when it is still running. Polls waitpid(WNOHANG)
 * every millisecond or so: a bounded wait for a condition. */
static inline int tu_wait_child(pid_t pid, int timeout_ms, int *status)
{
	double end = tu_now_ms() + timeout_ms;
	for (;;) {
		pid_t r = waitpid(pid, status, WNOHANG);
		if (r == pid) {
			tu_forget_child(pid);
			return 0;
		}
		if (r < 0 && errno != EINTR) {
			tu_forget_child(pid);
			*status = -1;
			return 0;
		}
		if (tu_now_ms() >= end)
			return -1;
		tu_sleep_ms(1);
	}
}

/* Waits up to timeout_ms until pid has stopped (SIGSTOP); 0 or -1. */
static inline int tu_wait_stopped(pid_t pid, int timeout_ms)
{
	double end = tu_now_ms() + timeout_ms;
	for (;;) {
		int st;
		pid_t r = waitpid(pid, &st, WNOHANG | WUNTRACED);
		if (r == pid)
			return WIFSTOPPED(st) ? 0 : -1;
		if ((r < 0 && errno != EINTR) || tu_now_ms() >= end)
			return -1;
		tu_sleep_ms(1);
	}
}

static inline void tu_kill_child(pid_t pid)
{
	int st;
	kill(pid, SIGKILL);
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	tu_forget_child(pid);
}

static inline const char *tu_status_str(char *buf, size_t size, int st)
{
	if (st == -1)
		snprintf(buf, size, "not a child");
	else if (WIFEXITED(st))
		snprintf(buf, size, "exited with %d", WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		snprintf(buf, size, "killed by signal %d (%s)", WTERMSIG(st),
		         strsignal(WTERMSIG(st)));
	else
		snprintf(buf, size, "status 0x%x", st);
	return buf;
}

/* Waits for pid (killing it after timeout_ms) and asserts exit status 0. */
#define TU_ASSERT_CHILD_OK(pid, timeout_ms)                                  \
	do {                                                                 \
		int tu_st_ = 0;                                              \
		char tu_b_[96];                                              \
		if (tu_wait_child((pid), (timeout_ms), &tu_st_) != 0) {      \
			tu_kill_child(pid);                                  \
			ck_abort_msg("child %ld still running after %d ms",  \
			             (long)(pid), (int)(timeout_ms));        \
		}                                                            \
		ck_assert_msg(tu_st_ != -1 && WIFEXITED(tu_st_) &&           \
		                      WEXITSTATUS(tu_st_) == 0,              \
		              "child %s",                                    \
		              tu_status_str(tu_b_, sizeof(tu_b_), tu_st_));  \
	} while (0)

static inline void tu_reap_all(void)
{
	for (int i = 0; i < TU_MAX_CHILDREN; i++)
		if (tu_children[i] > 0)
			tu_kill_child(tu_children[i]);
}

/* Checked teardown for every case: kill and reap children, remove the
 * segments this test created (after a failure; a passing test has already
 * asserted they are gone). */
static inline void tu_teardown(void)
{
	tu_reap_all();
	for (int i = 0; i < tu_ncreated; i++)
		tu_unlink_url(tu_created[i]);
	tu_ncreated = 0;
}

/* A test case with the common timeout and teardown. */
static inline TCase *tu_tcase(const char *name, double timeout_s)
{
	TCase *tc = tcase_create(name);
	tcase_set_timeout(tc, timeout_s);
	tcase_add_checked_fixture(tc, NULL, tu_teardown);
	return tc;
}

/* Child-side report: prints where and why, returns code for _exit(). */
#define TU_CHILD_FAIL(code, ...)                                             \
	(fprintf(stderr, "child %ld: %s:%d: ", (long)getpid(), __FILE__,     \
	         __LINE__),                                                  \
	 fprintf(stderr, __VA_ARGS__), fputc('\n', stderr), (code))

#endif /* TEST_UTIL_H */
