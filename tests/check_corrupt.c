/*
 * check_corrupt.c - a damaged shm:// segment yields errors, never a crash
 * or a hang: a bad magic, random header fields, a truncated file, and
 * random bytes over everything after the header page of a live bus.
 *
 * The calls that meet the damage run in a forked child, so a crash or a
 * hang shows as that child's status whether or not Check forks.
 */
#include <sys/mman.h>

#include "test_util.h"

/* ---- helpers ------------------------------------------------------------ */

struct open_child {
	const char *url;
	struct tu_pipe res;
};

/* Opens url and returns the code; on success proves the bus works with a
 * publish/receive round trip (its code in *roundtrip) and closes it. */
static int try_open(const char *url, int *roundtrip)
{
	msgbus_bus *bus = NULL;
	msgbus_sub *sub = NULL;
	msgbus_msg *m = NULL;
	int rc = msgbus_open(&bus, url, NULL);
	if (rc != MSGBUS_OK)
		return rc;
	int rt = msgbus_subscribe(bus, "oc.x", 0, &sub);
	if (rt == MSGBUS_OK)
		rt = msgbus_publish(bus, "oc.x", "hello", 5, 100);
	if (rt == MSGBUS_OK)
		rt = msgbus_recv(sub, &m, 100);
	if (rt == MSGBUS_OK) {
		if (msgbus_msg_len(m) != 5 ||
		    memcmp(msgbus_msg_data(m), "hello", 5) != 0)
			rt = -1;
		msgbus_msg_release(m);
	}
	*roundtrip = rt;
	msgbus_close(bus);
	return rc;
}

static int open_child_main(void *p)
{
	struct open_child *c = p;
	int rt = -1000;
	int rc = try_open(c->url, &rt);
	tu_pipe_put(&c->res, rc);
	tu_pipe_put(&c->res, rt);
	return 0;
}

/* Opens url in a child; asserts the child neither crashed nor hung and
 * returns the code msgbus_open gave it. *roundtrip gets the code of the
 * publish/receive check when the open succeeded. Under valgrind the open
 * runs in this process instead (a forked child would report the parent's
 * heap as its own). */
static int open_in_child(const char *url, int *roundtrip)
{
	struct open_child c = { .url = url };
	int rc = -1000, rt = -1000;
	if (tu_valgrind()) {
		rc = try_open(url, &rt);
		if (roundtrip != NULL)
			*roundtrip = rt;
		return rc;
	}
	tu_pipe_init(&c.res);
	pid_t pid = tu_spawn(open_child_main, &c);
	TU_ASSERT_CHILD_OK(pid, 2 * TU_WAIT_MS);
	ck_assert_msg(tu_pipe_get(&c.res, 0, &rc) == 0 &&
	                      tu_pipe_get(&c.res, 0, &rt) == 0,
	              "child reported nothing");
	tu_pipe_close(&c.res);
	if (roundtrip != NULL)
		*roundtrip = rt;
	return rc;
}

static int open_segment_fd(const char *url)
{
	char path[128];
	tu_shm_path(path, sizeof(path), url);
	int fd = open(path, O_RDWR | O_CLOEXEC);
	ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
	return fd;
}

static void pwrite_all(int fd, const void *buf, size_t len, off_t off)
{
	ck_assert_msg(pwrite(fd, buf, len, off) == (ssize_t)len, "pwrite: %s",
	              strerror(errno));
}

/* ---- header damage ------------------------------------------------------ */

START_TEST(test_bad_magic)
{
	char url[96];
	unsigned char orig[8];
	int rt;

	tu_unique_url(url, sizeof(url), "shm");
	msgbus_bus *bus = tu_open(url, NULL);
	int fd = open_segment_fd(url);
	ck_assert_int_eq(pread(fd, orig, sizeof(orig), 0), sizeof(orig));

	pwrite_all(fd, "NOTABUS!", 8, 0);
	int rc = open_in_child(url, NULL);
	ck_assert_msg(rc == MSGBUS_EINCOMPAT || rc == MSGBUS_EPROTO,
	              "open with a bad magic: %d (%s)", rc,
	              msgbus_strerror(rc));

	/* put it back: the same bus opens again (the refusal had no side
	 * effect on the live bus) */
	pwrite_all(fd, orig, sizeof(orig), 0);
	TU_ASSERT_OK(open_in_child(url, &rt));
	TU_ASSERT_OK(rt);
	close(fd);
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

/* Loop index = seed for bytes 8..63. */
START_TEST(test_bad_header_fields)
{
	char url[96];
	unsigned char orig[64], junk[64];
	uint64_t s = 0x1234567ULL + (uint64_t)_i * 7919;

	tu_unique_url(url, sizeof(url), "shm");
	msgbus_bus *bus = tu_open(url, NULL);
	int fd = open_segment_fd(url);
	ck_assert_int_eq(pread(fd, orig, sizeof(orig), 0), sizeof(orig));
	memcpy(junk, orig, sizeof(junk));
	for (int k = 8; k < 64; k++)
		junk[k] = (unsigned char)(tu_xorshift(&s) >> 24);
	ck_assert_msg(memcmp(junk, orig, 64) != 0, "seed made no change");

	pwrite_all(fd, junk, sizeof(junk), 0);
	int rc = open_in_child(url, NULL);
	ck_assert_msg(rc != MSGBUS_OK,
	              "open succeeded with random header bytes 8..63");

	pwrite_all(fd, orig, sizeof(orig), 0);
	int rt;
	TU_ASSERT_OK(open_in_child(url, &rt));
	TU_ASSERT_OK(rt);
	close(fd);
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

/* ---- truncation --------------------------------------------------------- */

struct holder_child {
	const char *url;
	struct tu_pipe ready;
};

static int holder_child_main(void *p)
{
	struct holder_child *c = p;
	msgbus_bus *bus = NULL;
	int rc = msgbus_open(&bus, c->url, NULL);
	if (rc != MSGBUS_OK)
		return TU_CHILD_FAIL(10, "open: %s", msgbus_strerror(rc));
	tu_pipe_put(&c->ready, 1);
	for (;;)
		pause();
}

/* Loop index picks the new length: 100, 0, 4096. A live process holds
 * the bus (a child, so that its mapping beyond the new end is never
 * touched), so the opener cannot treat the file as stale. */
START_TEST(test_truncated)
{
	static const off_t lens[] = { 100, 0, 4096 };
	char url[96], path[128];
	struct holder_child h;
	int x, rt;

	tu_unique_url(url, sizeof(url), "shm");
	tu_shm_path(path, sizeof(path), url);
	h.url = url;
	tu_pipe_init(&h.ready);
	pid_t pid = tu_spawn(holder_child_main, &h);
	ck_assert_msg(tu_pipe_get(&h.ready, TU_WAIT_MS, &x) == 0,
	              "holder did not open");
	ck_assert_int_eq(truncate(path, lens[_i]), 0);

	int rc = open_in_child(url, NULL);
	ck_assert_msg(rc != MSGBUS_OK,
	              "open of a live bus truncated to %ld bytes succeeded",
	              (long)lens[_i]);

	/* all holders dead: the next open may reclaim (then the bus must
	 * work) or refuse, but must not crash */
	tu_kill_child(pid);
	rc = open_in_child(url, &rt);
	if (rc == MSGBUS_OK) {
		TU_ASSERT_OK(rt);
		TU_ASSERT_NO_SEGMENT(url);
	}
	unlink(path);
	tu_pipe_close(&h.ready);
}
END_TEST

/* ---- random damage to a live bus ----------------------------------------- */

struct fuzz_child {
	const char *url;
	struct tu_pipe ready, go, note;
};

/* Bound on any one call made with a 100 ms timeout on a damaged bus. A
 * call still running after it is a hang: SIGALRM ends the child with a
 * note naming the call. */
#define FUZZ_CALL_S 3

static const char *volatile fuzz_call = "";
static int fuzz_note_fd = -1; /* the parent reads the name of a hung call */

static void fuzz_alarm(int sig)
{
	const char *c = fuzz_call;
	(void)sig;
	if (write(fuzz_note_fd, c, strlen(c)) < 0)
		_exit(22);
	_exit(21);
}

#define BOUNDED(expr)                                                        \
	do {                                                                 \
		fuzz_call = #expr;                                           \
		alarm(FUZZ_CALL_S);                                          \
		(void)(expr);                                                \
		alarm(0);                                                    \
	} while (0)

/* Reads every byte of a received message, as an application would. */
static unsigned touch_msg(const msgbus_msg *m)
{
	unsigned sum = 0;
	const char *subj = msgbus_msg_subject(m);
	const unsigned char *d = msgbus_msg_data(m);
	size_t len = msgbus_msg_len(m);
	if (subj != NULL)
		sum += (unsigned)strlen(subj);
	for (size_t i = 0; i < len && d != NULL; i++)
		sum += d[i];
	return sum;
}

static int fuzz_child_main(void *p)
{
	struct fuzz_child *c = p;
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	msgbus_bus *bus = NULL;
	msgbus_sub *sub = NULL, *lossy = NULL, *extra = NULL;
	msgbus_msg *held = NULL, *m = NULL;
	msgbus_buf *loan = NULL;
	msgbus_sub_stats st;
	static unsigned char big[3000];
	volatile unsigned sink = 0;
	int rc, x;

	o.ring_slots = 16;
	o.large_buffers = 4;
	o.max_msg_size = 65536;
	rc = msgbus_open(&bus, c->url, &o);
	if (rc != MSGBUS_OK)
		return TU_CHILD_FAIL(10, "open: %s", msgbus_strerror(rc));
	if (msgbus_subscribe(bus, "fz.>", 0, &sub) != MSGBUS_OK ||
	    msgbus_subscribe(bus, "fz.a", MSGBUS_SUB_LOSSY, &lossy) !=
	            MSGBUS_OK)
		return TU_CHILD_FAIL(11, "subscribe");
	for (uint32_t i = 0; i < 10; i++) {
		struct tu_seqmsg v = { 0, i };
		if (i % 4 == 3)
			rc = msgbus_publish(bus, "fz.b", big, sizeof(big), 0);
		else
			rc = msgbus_publish(bus, "fz.a", &v, sizeof(v), 0);
		if (rc != MSGBUS_OK)
			return TU_CHILD_FAIL(12, "publish: %s",
			                     msgbus_strerror(rc));
	}
	if (msgbus_recv(sub, &held, 0) != MSGBUS_OK)
		return TU_CHILD_FAIL(13, "recv");
	tu_pipe_put(&c->ready, 1);
	if (tu_pipe_get(&c->go, 4 * TU_WAIT_MS, &x) != 0)
		return TU_CHILD_FAIL(14, "no go");
	fuzz_note_fd = c->note.wr;
	signal(SIGALRM, fuzz_alarm);

	/* the segment is now damaged: any code is fine, crashing and
	 * hanging are not */
	BOUNDED(msgbus_msg_release(held));
	BOUNDED(msgbus_publish(bus, "fz.a", "x", 1, 100));
	BOUNDED(msgbus_publish(bus, "fz.b", big, sizeof(big), 100));
	BOUNDED(msgbus_publish(bus, "fz.brand.new", "y", 1, 100));
	for (int k = 0; k < 20; k++) {
		BOUNDED(rc = msgbus_recv(sub, &m, 100));
		if (rc != MSGBUS_OK)
			break;
		sink += touch_msg(m);
		BOUNDED(msgbus_msg_release(m));
	}
	for (int k = 0; k < 20; k++) {
		BOUNDED(rc = msgbus_recv(lossy, &m, 100));
		if (rc != MSGBUS_OK)
			break;
		sink += touch_msg(m);
		BOUNDED(msgbus_msg_release(m));
	}
	BOUNDED(msgbus_sub_stats_get(sub, &st));
	BOUNDED(rc = msgbus_subscribe(bus, "fz.c", 0, &extra));
	if (rc == MSGBUS_OK)
		BOUNDED(msgbus_unsubscribe(extra));
	BOUNDED(rc = msgbus_loan(bus, 200, 100, &loan));
	if (rc == MSGBUS_OK) {
		memset(msgbus_loan_data(loan), 0x5a, 200);
		BOUNDED(rc = msgbus_commit(loan, "fz.a", 200, 100));
		if (rc != MSGBUS_OK)
			BOUNDED(msgbus_loan_abort(loan));
	}
	BOUNDED(msgbus_unsubscribe(lossy));
	BOUNDED(msgbus_unsubscribe(sub));
	BOUNDED(msgbus_close(bus));
	(void)sink;
	return 0;
}

/* Loop index = seed. */
START_TEST(test_random_damage)
{
	char url[96], path[128];
	struct fuzz_child c;
	struct stat sb;
	int x, st = 0;
	char why[96];

	tu_unique_url(url, sizeof(url), "shm");
	tu_shm_path(path, sizeof(path), url);
	c.url = url;
	tu_pipe_init(&c.ready);
	tu_pipe_init(&c.go);
	tu_pipe_init(&c.note);
	pid_t pid = tu_spawn(fuzz_child_main, &c);
	ck_assert_msg(tu_pipe_get(&c.ready, TU_WAIT_MS, &x) == 0,
	              "child did not set the bus up");

	int fd = open_segment_fd(url);
	ck_assert_int_eq(fstat(fd, &sb), 0);
	ck_assert_msg(sb.st_size > 4096, "segment of %ld bytes",
	              (long)sb.st_size);
	unsigned char *map = mmap(NULL, (size_t)sb.st_size,
	                          PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ck_assert_msg(map != MAP_FAILED, "mmap: %s", strerror(errno));
	uint64_t s = 0x9e3779b97f4a7c15ULL * (uint64_t)(_i + 1);
	for (off_t k = 4096; k + 8 <= sb.st_size; k += 8) {
		uint64_t r = tu_xorshift(&s);
		memcpy(map + k, &r, 8);
	}
	munmap(map, (size_t)sb.st_size);
	close(fd);

	tu_pipe_put(&c.go, 1);
	if (tu_wait_child(pid, 4 * TU_WAIT_MS, &st) != 0) {
		tu_kill_child(pid);
		unlink(path);
		ck_abort_msg("seed %d: calls on the damaged bus hung", _i);
	}
	unlink(path); /* whatever the library managed to clean up */
	char note[200] = "";
	if (st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 21) {
		struct pollfd pfd = { c.note.rd, POLLIN, 0 };
		if (poll(&pfd, 1, 0) == 1) {
			ssize_t k = read(c.note.rd, note, sizeof(note) - 1);
			note[k > 0 ? k : 0] = '\0';
		}
		ck_abort_msg("seed %d: %s did not return within %d s", _i,
		             note, FUZZ_CALL_S);
	}
	ck_assert_msg(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
	              "seed %d: child %s", _i,
	              tu_status_str(why, sizeof(why), st));
	tu_pipe_close(&c.ready);
	tu_pipe_close(&c.go);
	tu_pipe_close(&c.note);
}
END_TEST

Suite *suite_corrupt(void)
{
	Suite *s = suite_create("corrupt");
	TCase *tc;

	tc = tu_tcase("header", TU_CASE_TIMEOUT);
	tcase_add_test(tc, test_bad_magic);
	tcase_add_loop_test(tc, test_bad_header_fields, 0, 4);
	suite_add_tcase(s, tc);

	if (tu_valgrind())
		return s;

	tc = tu_tcase("truncated", TU_CASE_TIMEOUT);
	tcase_add_loop_test(tc, test_truncated, 0, 3);
	suite_add_tcase(s, tc);

	tc = tu_tcase("random", TU_CASE_TIMEOUT);
	tcase_add_loop_test(tc, test_random_damage, 0, 8);
	suite_add_tcase(s, tc);
	return s;
}
