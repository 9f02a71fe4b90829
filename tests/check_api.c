/*
 * check_api.c - argument validation, error codes, limits and the
 * strerror/version calls. Semantic cases run on inproc:// and shm://
 * (loop index 0 and 1).
 */
#include <limits.h>
#include <pthread.h>

#include "test_util.h"

/* ---- strerror / version ---------------------------------------------- */

START_TEST(test_strerror_known)
{
	const char *s[MSGBUS_ENOENT + 1];
	const char *unknown = msgbus_strerror(MSGBUS_ENOENT + 1);

	ck_assert_ptr_nonnull(unknown);
	for (int i = MSGBUS_OK; i <= MSGBUS_ENOENT; i++) {
		s[i] = msgbus_strerror(i);
		ck_assert_msg(s[i] != NULL && s[i][0] != '\0',
		              "no text for code %d", i);
		ck_assert_msg(strcmp(s[i], unknown) != 0,
		              "code %d described as unknown: \"%s\"", i, s[i]);
		for (int j = MSGBUS_OK; j < i; j++)
			ck_assert_msg(strcmp(s[i], s[j]) != 0,
			              "codes %d and %d share \"%s\"", j, i,
			              s[i]);
	}
}
END_TEST

START_TEST(test_strerror_unknown)
{
	const int codes[] = { -1, MSGBUS_ENOENT + 1, 99, 4096, INT_MAX,
		              INT_MIN, 0x0fffffff, -12345 };
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		const char *s = msgbus_strerror(codes[i]);
		ck_assert_msg(s != NULL, "NULL for %d", codes[i]);
		ck_assert_msg(strcasestr(s, "unknown") != NULL,
		              "code %d: \"%s\" does not say unknown", codes[i],
		              s);
		/* A negative code has the ESYSERR bit set in two's complement,
		 * but it is no system error (found by CI's installed program). */
		if (codes[i] < 0)
			ck_assert_str_eq(s, msgbus_strerror(99));
	}
}
END_TEST

START_TEST(test_strerror_syserr)
{
	const int errs[] = { ENOENT, ENOSPC, EACCES, EMFILE };
	enum { N = sizeof(errs) / sizeof(errs[0]) };
	char got[N][256];

	for (int i = 0; i < N; i++) {
		char os[128];
		snprintf(os, sizeof(os), "%s", strerror(errs[i]));
		const char *s = msgbus_strerror(MSGBUS_ESYSERR | errs[i]);
		ck_assert_msg(s != NULL, "NULL for ESYSERR|%d", errs[i]);
		ck_assert_msg(strstr(s, os) != NULL,
		              "ESYSERR|%d: \"%s\" does not mention \"%s\"",
		              errs[i], s, os);
		snprintf(got[i], sizeof(got[i]), "%s", s);
		for (int j = 0; j < i; j++)
			ck_assert_str_ne(got[i], got[j]);
	}
}
END_TEST

START_TEST(test_version)
{
	ck_assert_ptr_nonnull(msgbus_version());
	ck_assert_str_eq(msgbus_version(), MSGBUS_VERSION_STRING);
	char want[32];
	snprintf(want, sizeof(want), "%d.%d.%d", MSGBUS_VERSION_MAJOR,
	         MSGBUS_VERSION_MINOR, MSGBUS_VERSION_PATCH);
	ck_assert_str_eq(msgbus_version(), want);
}
END_TEST

/* ---- open ------------------------------------------------------------ */

START_TEST(test_open_bad_urls)
{
	static const struct {
		const char *url;
		int want;
	} cases[] = {
		{ "", MSGBUS_EINVAL },
		{ "foo", MSGBUS_EINVAL },
		{ "shm://", MSGBUS_EINVAL },
		{ "inproc://", MSGBUS_EINVAL },
		{ "shm://bad/name", MSGBUS_EINVAL },
		{ "inproc://bad/name", MSGBUS_EINVAL },
		{ "shm://.hidden", MSGBUS_EINVAL },
		{ "shm://sp ace", MSGBUS_EINVAL },
		{ "shm://dollar$", MSGBUS_EINVAL },
		{ "shm://tab\tx", MSGBUS_EINVAL },
		{ "tcp://x:1", MSGBUS_ENOTSUP },
		{ "udp://x", MSGBUS_ENOTSUP },
	};
	msgbus_bus *bus;

	TU_ASSERT_RC(msgbus_open(NULL, "inproc://x", NULL), MSGBUS_EINVAL);
	bus = NULL;
	TU_ASSERT_RC(msgbus_open(&bus, NULL, NULL), MSGBUS_EINVAL);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		bus = NULL;
		int rc = msgbus_open(&bus, cases[i].url, NULL);
		ck_assert_msg(rc == cases[i].want,
		              "open(\"%s\"): got %d (%s), want %d (%s)",
		              cases[i].url, rc, msgbus_strerror(rc),
		              cases[i].want, msgbus_strerror(cases[i].want));
	}
	ck_assert_msg(!tu_path_exists("/dev/shm/msgbus.bad/name"),
	              "segment for a bad name");
}
END_TEST

/* Names of 64 characters are accepted, 65 are not. */
START_TEST(test_open_name_length)
{
	const char *scheme = tu_scheme(_i);
	char base[96], url[160], name[80];
	msgbus_bus *bus = NULL;

	tu_unique_url(base, sizeof(base), scheme);
	const char *n0 = strstr(base, "://") + 3;
	snprintf(name, sizeof(name), "%s", n0);
	size_t len = strlen(name);
	ck_assert_uint_lt(len, 64);
	memset(name + len, 'Z', 65 - len);
	name[65] = '\0';

	snprintf(url, sizeof(url), "%s://%s", scheme, name);
	TU_ASSERT_RC(msgbus_open(&bus, url, NULL), MSGBUS_EINVAL);
	TU_ASSERT_NO_SEGMENT(url);

	name[64] = '\0';
	snprintf(url, sizeof(url), "%s://%s", scheme, name);
	tu_remember_url(url);
	bus = NULL;
	TU_ASSERT_OK(msgbus_open(&bus, url, NULL));
	TU_ASSERT_SEGMENT(url);
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url);

	/* every allowed character class */
	snprintf(url, sizeof(url), "%s-Az09._-", base);
	tu_remember_url(url);
	bus = NULL;
	TU_ASSERT_OK(msgbus_open(&bus, url, NULL));
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

START_TEST(test_open_bad_options)
{
	char url[96];
	msgbus_bus *bus;
	msgbus_options o;
	const msgbus_options init = MSGBUS_OPTIONS_INIT;

	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	ck_assert_uint_eq(init.size, sizeof(msgbus_options));

	o = init;
	o.ring_slots = 100;
	bus = NULL;
	TU_ASSERT_RC(msgbus_open(&bus, url, &o), MSGBUS_EINVAL);
	TU_ASSERT_NO_SEGMENT(url);

	o = init;
	o.size = 0;
	TU_ASSERT_RC(msgbus_open(&bus, url, &o), MSGBUS_EINVAL);
	TU_ASSERT_NO_SEGMENT(url);

	o = init;
	o.size = 4;
	TU_ASSERT_RC(msgbus_open(&bus, url, &o), MSGBUS_EINVAL);
	TU_ASSERT_NO_SEGMENT(url);

	o = init;
	o.slot_size = 100; /* not a multiple of 64 */
	TU_ASSERT_RC(msgbus_open(&bus, url, &o), MSGBUS_EINVAL);
	TU_ASSERT_NO_SEGMENT(url);

	/* the same URL opens with good options: the failures left no state */
	o = init;
	o.ring_slots = 8;
	bus = NULL;
	TU_ASSERT_OK(msgbus_open(&bus, url, &o));
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url);

	TU_ASSERT_RC(msgbus_close(NULL), MSGBUS_EINVAL);
}
END_TEST

/* ---- subjects and patterns ------------------------------------------- */

static const char *const bad_subjects[] = {
	"", ".", "a..b", ".a", "a.", "*", ">", "a.*", "a.>", "*.a", "a*", "a*b", "price>5",
	"a b", "a\tb", "a\x7f", "a\x80", "a\nb",
};

static const char *const bad_patterns[] = {
	"", ".", "a..b", ".a", "a.", "a*", "*a", "a.>.b", ">.a", "a>",
	"a.b>", ">>", "**", "a b", "a\tb", "a\x7f",
};

static const char *const good_patterns[] = {
	"a", "*", ">", "a.*", "*.b", "a.>", "a.*.>", "*.*", "A-b_c.9~!",
};

START_TEST(test_subject_validation)
{
	char url[96];
	char big[300];
	msgbus_sub *sub = NULL, *all = NULL;
	msgbus_msg *m = NULL;

	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, NULL);
	TU_ASSERT_OK(msgbus_subscribe(bus, ">", 0, &all));

	for (size_t i = 0; i < sizeof(bad_subjects) / sizeof(bad_subjects[0]);
	     i++) {
		int rc = msgbus_publish(bus, bad_subjects[i], "x", 1, 0);
		ck_assert_msg(rc == MSGBUS_EINVAL,
		              "publish(\"%s\"): got %d (%s), want EINVAL",
		              bad_subjects[i], rc, msgbus_strerror(rc));
	}
	for (size_t i = 0; i < sizeof(bad_patterns) / sizeof(bad_patterns[0]);
	     i++) {
		sub = NULL;
		int rc = msgbus_subscribe(bus, bad_patterns[i], 0, &sub);
		ck_assert_msg(rc == MSGBUS_EINVAL,
		              "subscribe(\"%s\"): got %d (%s), want EINVAL",
		              bad_patterns[i], rc, msgbus_strerror(rc));
	}
	for (size_t i = 0;
	     i < sizeof(good_patterns) / sizeof(good_patterns[0]); i++) {
		sub = NULL;
		int rc = msgbus_subscribe(bus, good_patterns[i], 0, &sub);
		ck_assert_msg(rc == MSGBUS_OK,
		              "subscribe(\"%s\"): got %d (%s), want OK",
		              good_patterns[i], rc, msgbus_strerror(rc));
		TU_ASSERT_OK(msgbus_unsubscribe(sub));
	}

	/* 256 bytes is too long, 255 is fine (subject and pattern) */
	memset(big, 'a', sizeof(big));
	for (int i = 9; i < 250; i += 10)
		big[i] = '.';
	big[256] = '\0';
	TU_ASSERT_RC(msgbus_publish(bus, big, "x", 1, 0), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_subscribe(bus, big, 0, &sub), MSGBUS_EINVAL);
	big[255] = '\0';
	TU_ASSERT_OK(msgbus_subscribe(bus, big, 0, &sub));
	TU_ASSERT_OK(msgbus_unsubscribe(sub));
	TU_ASSERT_OK(msgbus_publish(bus, big, "x", 1, 0));

	/* NULL arguments */
	TU_ASSERT_RC(msgbus_publish(NULL, "a", "x", 1, 0), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_publish(bus, NULL, "x", 1, 0), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_publish(bus, "a", NULL, 1, 0), MSGBUS_EINVAL);
	TU_ASSERT_OK(msgbus_publish(bus, "null.empty", NULL, 0, 0));
	TU_ASSERT_RC(msgbus_subscribe(NULL, "a", 0, &sub), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_subscribe(bus, NULL, 0, &sub), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_subscribe(bus, "a", 0, NULL), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_subscribe_cb(bus, "a", 0, NULL, NULL, &sub),
	             MSGBUS_EINVAL);

	/* exactly the two valid publishes reached the ">" subscription */
	TU_ASSERT_OK(msgbus_recv(all, &m, TU_WAIT_MS));
	ck_assert_str_eq(msgbus_msg_subject(m), big);
	ck_assert_uint_eq(msgbus_msg_len(m), 1);
	ck_assert_int_eq(((const char *)msgbus_msg_data(m))[0], 'x');
	msgbus_msg_release(m);
	TU_ASSERT_OK(msgbus_recv(all, &m, TU_WAIT_MS));
	ck_assert_str_eq(msgbus_msg_subject(m), "null.empty");
	ck_assert_uint_eq(msgbus_msg_len(m), 0);
	msgbus_msg_release(m);
	TU_ASSERT_EMPTY(all);

	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

START_TEST(test_msgsize)
{
	char url[96];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	msgbus_sub *sub = NULL;
	msgbus_msg *m = NULL;
	msgbus_buf *loan = NULL;
	static unsigned char buf[4097];

	o.max_msg_size = 4096;
	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, &o);
	TU_ASSERT_OK(msgbus_subscribe(bus, "size.>", 0, &sub));

	tu_fill(buf, sizeof(buf), 7);
	TU_ASSERT_RC(msgbus_publish(bus, "size.big", buf, 4097, 0),
	             MSGBUS_EMSGSIZE);
	TU_ASSERT_RC(msgbus_loan(bus, 4097, 0, &loan), MSGBUS_EMSGSIZE);
	TU_ASSERT_OK(msgbus_publish(bus, "size.max", buf, 4096, 0));

	TU_ASSERT_OK(msgbus_recv(sub, &m, TU_WAIT_MS));
	ck_assert_str_eq(msgbus_msg_subject(m), "size.max");
	ck_assert_uint_eq(msgbus_msg_len(m), 4096);
	ck_assert_int_eq(tu_verify(msgbus_msg_data(m), 4096, 7), -1);
	msgbus_msg_release(m);
	TU_ASSERT_EMPTY(sub);
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

START_TEST(test_msgsize_default)
{
	char url[96];
	msgbus_sub *sub = NULL;
	size_t len = (1u << 20) + 1;
	unsigned char *buf = calloc(1, len);

	ck_assert_ptr_nonnull(buf);
	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, NULL);
	TU_ASSERT_OK(msgbus_subscribe(bus, "d", 0, &sub));
	TU_ASSERT_RC(msgbus_publish(bus, "d", buf, len, 0), MSGBUS_EMSGSIZE);
	TU_ASSERT_EMPTY(sub);
	free(buf);
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

/* ---- recv ------------------------------------------------------------ */

static void noop_cb(const msgbus_msg *m, void *arg)
{
	(void)m;
	(void)arg;
}

START_TEST(test_recv_errors)
{
	char url[96];
	msgbus_sub *sub = NULL, *cbsub = NULL;
	msgbus_msg *m = NULL, *m2 = NULL;
	msgbus_sub_stats st;

	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, NULL);
	TU_ASSERT_OK(msgbus_subscribe(bus, "r.x", 0, &sub));

	/* poll on empty */
	TU_ASSERT_RC(msgbus_recv(sub, &m, 0), MSGBUS_EAGAIN);

	/* timeout */
	double t0 = tu_now_ms();
	TU_ASSERT_RC(msgbus_recv(sub, &m, 50), MSGBUS_ETIMEDOUT);
	double dt = tu_now_ms() - t0;
	ck_assert_msg(dt >= 48.0 && dt < 1000.0,
	              "recv(50) took %.1f ms", dt);

	/* one held message at a time */
	struct tu_seqmsg a = { 0, 1 }, b = { 0, 2 };
	TU_ASSERT_OK(msgbus_publish(bus, "r.x", &a, sizeof(a), 0));
	TU_ASSERT_OK(msgbus_publish(bus, "r.x", &b, sizeof(b), 0));
	TU_ASSERT_OK(msgbus_recv(sub, &m, TU_WAIT_MS));
	TU_ASSERT_RC(msgbus_recv(sub, &m2, 0), MSGBUS_EBUSY);
	TU_ASSERT_RC(msgbus_recv(sub, &m2, 10), MSGBUS_EBUSY);
	/* the held message is still intact after the refused call */
	struct tu_seqmsg got;
	ck_assert_int_eq(tu_get_seqmsg(m, &got), 0);
	ck_assert_uint_eq(got.seq, 1);
	msgbus_msg_release(m);
	TU_RECV_SEQ(sub, "r.x", 2);
	TU_ASSERT_EMPTY(sub);
	msgbus_msg_release(NULL);

	/* NULL arguments, callback subscription */
	TU_ASSERT_RC(msgbus_recv(NULL, &m, 0), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_recv(sub, NULL, 0), MSGBUS_EINVAL);
	TU_ASSERT_OK(msgbus_subscribe_cb(bus, "r.cb", 0, noop_cb, NULL,
	                                 &cbsub));
	TU_ASSERT_RC(msgbus_recv(cbsub, &m, 0), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_sub_stats_get(NULL, &st), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_sub_stats_get(sub, NULL), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_unsubscribe(NULL), MSGBUS_EINVAL);
	TU_ASSERT_OK(msgbus_unsubscribe(cbsub));

	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

/* ---- limits ---------------------------------------------------------- */

START_TEST(test_limit_subs)
{
	char url[96];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	msgbus_sub *s[4], *extra = NULL;

	o.max_subs = 4;
	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *a = tu_open(url, &o);
	msgbus_bus *b = tu_open(url, &o);

	/* the limit is per bus, across handles and kinds of subscription */
	TU_ASSERT_OK(msgbus_subscribe(a, "l.a", 0, &s[0]));
	TU_ASSERT_OK(msgbus_subscribe(a, "l.*", MSGBUS_SUB_LOSSY, &s[1]));
	TU_ASSERT_OK(msgbus_subscribe_cb(a, "l.>", 0, noop_cb, NULL, &s[2]));
	TU_ASSERT_OK(msgbus_subscribe(b, "l.a", 0, &s[3]));
	TU_ASSERT_RC(msgbus_subscribe(b, "l.b", 0, &extra), MSGBUS_ELIMIT);
	TU_ASSERT_RC(msgbus_subscribe(a, "l.b", 0, &extra), MSGBUS_ELIMIT);
	TU_ASSERT_RC(msgbus_subscribe_cb(a, "l.b", 0, noop_cb, NULL, &extra),
	             MSGBUS_ELIMIT);

	/* an unsubscribe makes room again */
	TU_ASSERT_OK(msgbus_unsubscribe(s[0]));
	TU_ASSERT_OK(msgbus_subscribe(b, "l.b", 0, &s[0]));
	TU_ASSERT_RC(msgbus_subscribe(b, "l.c", 0, &extra), MSGBUS_ELIMIT);

	/* the bus still works at its limit */
	struct tu_seqmsg v = { 0, 42 };
	TU_ASSERT_OK(msgbus_publish(a, "l.b", &v, sizeof(v), 0));
	TU_RECV_SEQ(s[0], "l.b", 42);

	TU_ASSERT_OK(msgbus_close(b));
	TU_ASSERT_OK(msgbus_close(a));
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

/* v2: max_subjects bounds service names only; publishing takes any number
 * of distinct subjects (v1 said ELIMIT past max_subjects). */
START_TEST(test_limit_subjects)
{
	char url[96], subj[32];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	msgbus_sub *all = NULL;

	o.max_subjects = 4;
	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, &o);
	TU_ASSERT_OK(msgbus_subscribe(bus, ">", 0, &all));

	for (uint32_t i = 0; i < 100; i++) {
		struct tu_seqmsg v = { 0, i };
		snprintf(subj, sizeof(subj), "subj.%u", i);
		TU_ASSERT_OK(msgbus_publish(bus, subj, &v, sizeof(v), 0));
	}
	for (uint32_t i = 0; i < 100; i++) {
		snprintf(subj, sizeof(subj), "subj.%u", i);
		TU_RECV_SEQ(all, subj, i);
	}
	TU_ASSERT_EMPTY(all);
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

START_TEST(test_limit_participants)
{
	char url[96];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	msgbus_bus *c = NULL;

	o.max_participants = 2;
	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *a = tu_open(url, &o);
	msgbus_bus *b = tu_open(url, &o);
	TU_ASSERT_RC(msgbus_open(&c, url, &o), MSGBUS_ELIMIT);
	TU_ASSERT_RC(msgbus_open(&c, url, NULL), MSGBUS_ELIMIT);
	TU_ASSERT_OK(msgbus_close(b));
	c = tu_open(url, NULL);
	TU_ASSERT_RC(msgbus_open(&b, url, NULL), MSGBUS_ELIMIT);

	/* a and c share one bus */
	msgbus_sub *sub = NULL;
	struct tu_seqmsg v = { 0, 7 };
	TU_ASSERT_OK(msgbus_subscribe(c, "p", 0, &sub));
	TU_ASSERT_OK(msgbus_publish(a, "p", &v, sizeof(v), 0));
	TU_RECV_SEQ(sub, "p", 7);

	TU_ASSERT_OK(msgbus_close(a));
	TU_ASSERT_SEGMENT(url);
	TU_ASSERT_OK(msgbus_close(c));
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

/* Closing a handle releases its subscriptions (plain, callback, one
 * holding a message), its loans and its participant slot. */
START_TEST(test_close_frees_everything)
{
	char url[96];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	msgbus_sub *s[4];
	msgbus_buf *l1 = NULL, *l2 = NULL;
	msgbus_msg *m = NULL;

	o.max_subs = 4;
	o.max_participants = 2;
	o.large_buffers = 2;
	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *a = tu_open(url, &o);
	msgbus_bus *b = tu_open(url, &o);

	TU_ASSERT_OK(msgbus_subscribe(b, "c.x", 0, &s[0]));
	TU_ASSERT_OK(msgbus_subscribe(b, "c.*", MSGBUS_SUB_LOSSY, &s[1]));
	TU_ASSERT_OK(msgbus_subscribe(b, "c.>", 0, &s[2]));
	TU_ASSERT_OK(msgbus_subscribe_cb(b, ">", 0, noop_cb, NULL, &s[3]));
	struct tu_seqmsg v = { 0, 1 };
	TU_ASSERT_OK(msgbus_publish(a, "c.x", &v, sizeof(v), TU_WAIT_MS));
	TU_ASSERT_OK(msgbus_publish(a, "c.x", &v, sizeof(v), TU_WAIT_MS));
	TU_ASSERT_OK(msgbus_recv(s[0], &m, TU_WAIT_MS)); /* held */
	TU_ASSERT_OK(msgbus_loan(b, 1000, 0, &l1));
	TU_ASSERT_OK(msgbus_loan(b, 1000, 0, &l2));

	TU_ASSERT_OK(msgbus_close(b));

	/* everything b had is available to a again */
	TU_ASSERT_OK(msgbus_loan(a, 1000, 0, &l1));
	TU_ASSERT_OK(msgbus_loan(a, 1000, 0, &l2));
	msgbus_loan_abort(l1);
	msgbus_loan_abort(l2);
	for (int i = 0; i < 4; i++)
		TU_ASSERT_OK(msgbus_subscribe(a, "c.x", 0, &s[i]));
	b = tu_open(url, &o);

	/* b's subscriptions no longer hold publishers back or receive */
	v.seq = 2;
	TU_ASSERT_OK(msgbus_publish(a, "c.x", &v, sizeof(v), 0));
	for (int i = 0; i < 4; i++) {
		TU_RECV_SEQ(s[i], "c.x", 2);
		TU_ASSERT_EMPTY(s[i]);
	}

	TU_ASSERT_OK(msgbus_close(b));
	TU_ASSERT_OK(msgbus_close(a));
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

/* A bus handle shared by threads: concurrent subscribe/unsubscribe and
 * loan/abort from several threads never corrupt the tables. */
struct churn_arg {
	msgbus_bus *bus;
	int id;
	int errors;
};

static void *churn_thread(void *p)
{
	struct churn_arg *a = p;
	char pat[32];
	int rounds = tu_valgrind() ? 20 : 300;
	snprintf(pat, sizeof(pat), "churn.%d", a->id);
	for (int i = 0; i < rounds; i++) {
		msgbus_sub *s = NULL;
		msgbus_buf *l = NULL;
		if (msgbus_subscribe(a->bus, pat, 0, &s) != MSGBUS_OK) {
			a->errors++;
			continue;
		}
		if (msgbus_loan(a->bus, 512, TU_WAIT_MS, &l) == MSGBUS_OK)
			msgbus_loan_abort(l);
		else
			a->errors++;
		if (msgbus_unsubscribe(s) != MSGBUS_OK)
			a->errors++;
	}
	return NULL;
}

START_TEST(test_thread_churn)
{
	char url[96];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	pthread_t th[4];
	struct churn_arg args[4];
	msgbus_sub *s[4];

	o.max_subs = 4;
	o.large_buffers = 2;
	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, &o);
	for (int i = 0; i < 4; i++) {
		args[i] = (struct churn_arg){ bus, i, 0 };
		ck_assert_int_eq(pthread_create(&th[i], NULL, churn_thread,
		                                &args[i]),
		                 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		ck_assert_msg(args[i].errors == 0, "thread %d: %d errors", i,
		              args[i].errors);
	}
	/* all four subscription slots are free again */
	for (int i = 0; i < 4; i++)
		TU_ASSERT_OK(msgbus_subscribe(bus, "churn.0", 0, &s[i]));
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

Suite *suite_api(void)
{
	Suite *s = suite_create("api");
	TCase *tc;

	tc = tu_tcase("strerror", 10);
	tcase_add_test(tc, test_strerror_known);
	tcase_add_test(tc, test_strerror_unknown);
	tcase_add_test(tc, test_strerror_syserr);
	tcase_add_test(tc, test_version);
	suite_add_tcase(s, tc);

	tc = tu_tcase("open", 20);
	tcase_add_test(tc, test_open_bad_urls);
	tcase_add_loop_test(tc, test_open_name_length, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_open_bad_options, 0, TU_NSCHEMES);
	suite_add_tcase(s, tc);

	tc = tu_tcase("validation", 20);
	tcase_add_loop_test(tc, test_subject_validation, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_msgsize, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_msgsize_default, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_recv_errors, 0, TU_NSCHEMES);
	suite_add_tcase(s, tc);

	tc = tu_tcase("limits", 30);
	tcase_add_loop_test(tc, test_limit_subs, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_limit_subjects, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_limit_participants, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_close_frees_everything, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_thread_churn, 0, TU_NSCHEMES);
	suite_add_tcase(s, tc);
	return s;
}
