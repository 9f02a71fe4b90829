/*
 * check_inbox.c - suite "inbox": the multi-producer record ring of
 * lib/ring/inbox.c on its own, in an anonymous MAP_SHARED mapping (threads and
 * forked processes alike): contents and order, wrap with padding, full ring,
 * abort, many producers, dead owners, and a corrupted ring.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/mman.h>

#include "platform/crash.h"
#include "ring/inbox.h"
#include "platform/platform.h"
#include "test_util.h"

#define CTL_OFF 0u
#define DATA_OFF 4096u
#define MS 1000000ull
#define SPIN_NS 20000ull
#define CHECK_NS (5 * MS)

struct tib {
	unsigned char *base;
	uint64_t seg, size;
	struct mb_inbox ib;
};

static void tib_open(struct tib *t, uint64_t size)
{
	t->size = size;
	t->seg = DATA_OFF + size;
	t->base = mmap(NULL, t->seg, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert_msg(t->base != MAP_FAILED, "mmap: %s", strerror(errno));
	TU_ASSERT_OK(mb_inbox_format(t->base, t->seg, CTL_OFF, DATA_OFF, size));
	TU_ASSERT_OK(mb_inbox_attach(&t->ib, t->base, t->seg, CTL_OFF, DATA_OFF, size));
}

static void tib_close(struct tib *t)
{
	munmap(t->base, t->seg);
}

static uint64_t deadline_in(uint64_t ns)
{
	return mb_now_ns() + ns;
}

/* The reserve word as lib/ring/inbox.c lays it out (pos/8:48 | owner:15 |
 * locked:1), to simulate a holder that dies with the lock. */
static uint64_t rw_word(uint64_t pos, uint32_t owner, bool locked)
{
	return pos << 13 | (uint64_t)owner << 1 | (locked ? 1u : 0u);
}

static uint64_t rw_pos_of(struct tib *t)
{
	return atomic_load(&t->ib.ctl->reserve) >> 16 << 3;
}

/* Write one record, by mb_inbox_put and by reserve + commit in turn (per
 * thread), so that every test runs both paths. Returns the first error. */
static _Thread_local unsigned put_calls;

static int put(struct mb_inbox_prod *p, const char *subject, const void *data, uint32_t len,
               uint64_t deadline)
{
	struct mb_inbox_res r;
	uint32_t sl = (uint32_t)strlen(subject);
	int rc;

	if (put_calls++ % 2)
		return mb_inbox_put(p, subject, sl, data, len, deadline);
	rc = mb_inbox_reserve(p, sl, len, deadline, &r);

	if (rc)
		return rc;
	memcpy(r.subject, subject, sl);
	if (len)
		memcpy(r.payload, data, len);
	return mb_inbox_commit(p, &r);
}

/* The next record has this payload (read with a bounded wait). */
static void expect_msg_raw(struct mb_inbox_cons *c, const char *payload)
{
	struct mb_inbox_msg m;

	TU_ASSERT_OK(mb_inbox_peek_wait(c, &m, deadline_in(TU_WAIT_MS * MS)));
	ck_assert_uint_eq(m.payload_len, strlen(payload));
	ck_assert(memcmp(m.payload, payload, m.payload_len) == 0);
	mb_inbox_consume(c);
}

static void expect_msg(struct mb_inbox_cons *c, const char *subject, uint32_t len,
                       uint32_t seed)
{
	struct mb_inbox_msg m;

	TU_ASSERT_OK(mb_inbox_peek(c, &m));
	ck_assert_uint_eq(m.subject_len, strlen(subject));
	ck_assert(memcmp(m.subject, subject, m.subject_len) == 0);
	ck_assert_uint_eq(m.payload_len, len);
	ck_assert_uint_eq((uintptr_t)m.payload % 8, 0);
	ck_assert_int_eq(tu_verify(m.payload, len, seed), -1);
	mb_inbox_consume(c);
}

START_TEST(test_placement)
{
	unsigned char *b = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE,
	                        MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct mb_inbox ib;

	ck_assert(b != MAP_FAILED);
	TU_ASSERT_RC(mb_inbox_format(NULL, 1 << 20, 0, 4096, 4096), MSGBUS_EINVAL);
	TU_ASSERT_RC(mb_inbox_format(b, 1 << 20, 0, 4096, 6000), MSGBUS_EINVAL);  /* not 2^n */
	TU_ASSERT_RC(mb_inbox_format(b, 1 << 20, 0, 4096, 2048), MSGBUS_EINVAL);  /* too small */
	TU_ASSERT_RC(mb_inbox_format(b, 1 << 20, 0, 256, 4096), MSGBUS_EINVAL);   /* overlap */
	TU_ASSERT_RC(mb_inbox_format(b, 1 << 20, 8, 4096, 4096), MSGBUS_EINVAL);  /* align */
	TU_ASSERT_RC(mb_inbox_format(b, 8192, 0, 4096, 8192), MSGBUS_EINVAL);     /* past end */
	TU_ASSERT_RC(mb_inbox_format(b, 1 << 20, UINT64_MAX - 127, 4096, 4096), MSGBUS_EINVAL);
	TU_ASSERT_RC(mb_inbox_format(b, 1 << 20, 0, UINT64_MAX - 4095, 4096), MSGBUS_EINVAL);
	TU_ASSERT_OK(mb_inbox_format(b, 1 << 20, 8192, 0, 8192));
	TU_ASSERT_OK(mb_inbox_attach(&ib, b, 1 << 20, 8192, 0, 8192));
	/* The control block says another size: refused. */
	TU_ASSERT_RC(mb_inbox_attach(&ib, b, 1 << 20, 8192, 0, 4096), MSGBUS_EPROTO);
	ck_assert_uint_eq(mb_inbox_max_payload(&ib, 3), 4096 - 16 - 8);
	munmap(b, 1 << 20);
}
END_TEST

START_TEST(test_contents_order)
{
	struct tib t;
	struct mb_inbox_prod p;
	struct mb_inbox_cons c;
	struct mb_inbox_msg m, m2;
	unsigned char buf[600];

	tib_open(&t, 65536);
	mb_inbox_prod_init(&p, &t.ib, 5, 0, NULL, NULL);
	mb_inbox_cons_init(&c, &t.ib, NULL, NULL, 0, 0);
	TU_ASSERT_RC(mb_inbox_peek(&c, &m), MSGBUS_EAGAIN);
	for (uint32_t i = 0; i < 100; i++) {
		uint32_t len = (i * 37) % 600;
		tu_fill(buf, len, i);
		TU_ASSERT_OK(put(&p, i % 2 ? "a.b" : "orders.12345.status", buf, len, MB_NO_WAIT));
	}
	/* Peek without consume gives the same record again. */
	TU_ASSERT_OK(mb_inbox_peek(&c, &m));
	TU_ASSERT_OK(mb_inbox_peek(&c, &m2));
	ck_assert_ptr_eq(m.payload, m2.payload);
	ck_assert_uint_eq(m.owner, 5);
	for (uint32_t i = 0; i < 100; i++)
		expect_msg(&c, i % 2 ? "a.b" : "orders.12345.status", (i * 37) % 600, i);
	TU_ASSERT_RC(mb_inbox_peek(&c, &m), MSGBUS_EAGAIN);
	/* An empty subject and an empty payload are records too. */
	TU_ASSERT_OK(put(&p, "", NULL, 0, MB_NO_WAIT));
	expect_msg(&c, "", 0, 0);
	tib_close(&t);
}
END_TEST

/* Many laps of a small ring with sizes that do not divide it: padding
 * records keep every record contiguous, and contents survive. */
START_TEST(test_wrap_padding)
{
	struct tib t;
	struct mb_inbox_prod p;
	struct mb_inbox_cons c;
	unsigned char buf[2048];
	uint32_t sent = 0, got = 0;

	tib_open(&t, 4096);
	mb_inbox_prod_init(&p, &t.ib, 1, 0, NULL, NULL);
	mb_inbox_cons_init(&c, &t.ib, NULL, NULL, 0, 0);
	while (got < 2000) {
		uint32_t len = (sent * 131) % (mb_inbox_max_payload(&t.ib, 4) + 1);
		tu_fill(buf, len, sent);
		int rc = put(&p, "x.yz", buf, len, MB_NO_WAIT);
		if (rc == MSGBUS_OK) {
			sent++;
			continue;
		}
		TU_ASSERT_RC(rc, MSGBUS_EAGAIN);
		ck_assert_uint_gt(sent, got); /* full only when something is unread */
		while (got < sent) {
			expect_msg(&c, "x.yz", (got * 131) % (mb_inbox_max_payload(&t.ib, 4) + 1),
			           got);
			got++;
		}
	}
	ck_assert_uint_gt(c.cursor, 100 * 4096);
	tib_close(&t);
}
END_TEST

START_TEST(test_full_and_timeout)
{
	struct tib t;
	struct mb_inbox_prod p;
	struct mb_inbox_cons c;
	struct mb_inbox_msg m;
	struct mb_inbox_res r;
	unsigned char buf[4096] = { 0 };
	int n = 0;

	tib_open(&t, 8192);
	mb_inbox_prod_init(&p, &t.ib, 1, SPIN_NS, NULL, NULL);
	mb_inbox_cons_init(&c, &t.ib, NULL, NULL, SPIN_NS, CHECK_NS);
	TU_ASSERT_RC(mb_inbox_reserve(&p, 0, mb_inbox_max_payload(&t.ib, 0) + 1, MB_NO_WAIT, &r),
	             MSGBUS_EMSGSIZE);
	TU_ASSERT_RC(mb_inbox_put(&p, "", 0, buf, mb_inbox_max_payload(&t.ib, 0) + 1, MB_NO_WAIT),
	             MSGBUS_EMSGSIZE);
	TU_ASSERT_OK(put(&p, "s", buf, mb_inbox_max_payload(&t.ib, 1), MB_NO_WAIT));
	TU_ASSERT_OK(mb_inbox_peek(&c, &m));
	mb_inbox_consume(&c);
	mb_inbox_flush(&c);
	while (put(&p, "s", buf, 1000, MB_NO_WAIT) == MSGBUS_OK)
		n++;
	/* 1024-byte records; the word after the last one stays free. */
	ck_assert_int_eq(n, 8192 / 1024 - 1);
	TU_ASSERT_RC(put(&p, "s", buf, 1000, MB_NO_WAIT), MSGBUS_EAGAIN);
	double t0 = tu_now_ms();
	TU_ASSERT_RC(put(&p, "s", buf, 1000, deadline_in(50 * MS)), MSGBUS_ETIMEDOUT);
	double dt = tu_now_ms() - t0;
	ck_assert_msg(dt >= 49 && dt < 2000, "timed out after %.1f ms", dt);
	/* Consuming without a flush does not give room yet (batched); a flush
	 * does. */
	TU_ASSERT_OK(mb_inbox_peek(&c, &m));
	mb_inbox_consume(&c);
	TU_ASSERT_RC(put(&p, "s", buf, 1000, MB_NO_WAIT), MSGBUS_EAGAIN);
	mb_inbox_flush(&c);
	TU_ASSERT_OK(put(&p, "s", buf, 1000, MB_NO_WAIT));
	/* An empty inbox: the consumer's bounded wait times out. */
	for (int i = 0; i < n; i++) {
		TU_ASSERT_OK(mb_inbox_peek(&c, &m));
		mb_inbox_consume(&c);
	}
	t0 = tu_now_ms();
	TU_ASSERT_RC(mb_inbox_peek_wait(&c, &m, deadline_in(30 * MS)), MSGBUS_ETIMEDOUT);
	dt = tu_now_ms() - t0;
	ck_assert_msg(dt >= 29 && dt < 2000, "timed out after %.1f ms", dt);
	TU_ASSERT_RC(mb_inbox_peek_wait(&c, &m, MB_NO_WAIT), MSGBUS_EAGAIN);
	tib_close(&t);
}
END_TEST

START_TEST(test_abort_and_commit_order)
{
	struct tib t;
	struct mb_inbox_prod p;
	struct mb_inbox_cons c;
	struct mb_inbox_msg m;
	struct mb_inbox_res a, b, d;

	tib_open(&t, 4096);
	mb_inbox_prod_init(&p, &t.ib, 2, 0, NULL, NULL);
	mb_inbox_cons_init(&c, &t.ib, NULL, NULL, 0, 0);
	TU_ASSERT_OK(mb_inbox_reserve(&p, 1, 8, MB_NO_WAIT, &a));
	TU_ASSERT_OK(mb_inbox_reserve(&p, 1, 8, MB_NO_WAIT, &b));
	TU_ASSERT_OK(mb_inbox_reserve(&p, 1, 8, MB_NO_WAIT, &d));
	memcpy(a.subject, "a", 1);
	memcpy(d.subject, "d", 1);
	memcpy(a.payload, "AAAAAAAA", 8);
	memcpy(d.payload, "DDDDDDDD", 8);
	/* Committed out of order: nothing is seen before the first. */
	TU_ASSERT_OK(mb_inbox_commit(&p, &d));
	TU_ASSERT_RC(mb_inbox_peek(&c, &m), MSGBUS_EAGAIN);
	TU_ASSERT_OK(mb_inbox_commit(&p, &a));
	mb_inbox_abort(&p, &b);
	/* Committing an aborted record is refused. */
	TU_ASSERT_RC(mb_inbox_commit(&p, &b), MSGBUS_EPEERDIED);
	TU_ASSERT_OK(mb_inbox_peek(&c, &m));
	ck_assert(memcmp(m.payload, "AAAAAAAA", 8) == 0);
	mb_inbox_consume(&c);
	TU_ASSERT_OK(mb_inbox_peek(&c, &m));
	ck_assert(memcmp(m.subject, "d", 1) == 0 && memcmp(m.payload, "DDDDDDDD", 8) == 0);
	mb_inbox_consume(&c);
	TU_ASSERT_RC(mb_inbox_peek(&c, &m), MSGBUS_EAGAIN);
	tib_close(&t);
}
END_TEST

/* ---- many producers ------------------------------------------------------- */

#define MP_PRODUCERS 4
#define MP_MAXLEN 1500u

struct mp_arg {
	struct mb_inbox *ib;
	uint32_t id, count;
	int rc;
};

static uint32_t mp_len(uint32_t id, uint32_t seq)
{
	return 8 + (seq % 16 ? (id * 7 + seq * 13) % 200 : (id * 7 + seq * 13) % MP_MAXLEN);
}

/* A producer: count records "p.<id>", payload = id, seq, then a pattern. */
static int mp_produce(struct mb_inbox *ib, uint32_t id, uint32_t count)
{
	struct mb_inbox_prod p;
	char subject[16];

	mb_inbox_prod_init(&p, ib, id, SPIN_NS, NULL, NULL);
	snprintf(subject, sizeof(subject), "p.%u", id);
	for (uint32_t seq = 0; seq < count; seq++) {
		struct mb_inbox_res r;
		uint32_t len = mp_len(id, seq);
		unsigned char buf[MP_MAXLEN + 8];
		int rc;

		if (id % 2) { /* odd producers: mb_inbox_put */
			memcpy(buf, &id, 4);
			memcpy(buf + 4, &seq, 4);
			tu_fill(buf + 8, len - 8, id << 20 ^ seq);
			rc = mb_inbox_put(&p, subject, (uint32_t)strlen(subject), buf, len,
			                  deadline_in(TU_WAIT_MS * MS));
			if (rc)
				return rc;
			continue;
		}
		rc = mb_inbox_reserve(&p, (uint32_t)strlen(subject), len,
		                      deadline_in(TU_WAIT_MS * MS), &r);
		if (rc)
			return rc;
		memcpy(r.subject, subject, strlen(subject));
		memcpy(r.payload, &id, 4);
		memcpy((char *)r.payload + 4, &seq, 4);
		tu_fill((char *)r.payload + 8, len - 8, id << 20 ^ seq);
		rc = mb_inbox_commit(&p, &r);
		if (rc)
			return rc;
	}
	return 0;
}

static void *mp_thread(void *arg)
{
	struct mp_arg *a = arg;

	a->rc = mp_produce(a->ib, a->id, a->count);
	return NULL;
}

/* Receive nprod * count records: each exactly once, in order per producer. */
static void mp_consume(struct mb_inbox *ib, uint32_t nprod, uint32_t count)
{
	struct mb_inbox_cons c;
	uint32_t next[MP_PRODUCERS] = { 0 };

	mb_inbox_cons_init(&c, ib, NULL, NULL, SPIN_NS, CHECK_NS);
	for (uint64_t got = 0; got < (uint64_t)nprod * count; got++) {
		struct mb_inbox_msg m;
		uint32_t id, seq;
		char subject[16];

		TU_ASSERT_OK(mb_inbox_peek_wait(&c, &m, deadline_in(TU_WAIT_MS * MS)));
		ck_assert_uint_ge(m.payload_len, 8);
		memcpy(&id, m.payload, 4);
		memcpy(&seq, (const char *)m.payload + 4, 4);
		ck_assert_uint_lt(id, nprod);
		ck_assert_msg(seq == next[id], "producer %u: seq %u, want %u", id, seq, next[id]);
		next[id]++;
		snprintf(subject, sizeof(subject), "p.%u", id);
		ck_assert_uint_eq(m.subject_len, strlen(subject));
		ck_assert(memcmp(m.subject, subject, m.subject_len) == 0);
		ck_assert_uint_eq(m.payload_len, mp_len(id, seq));
		ck_assert_int_eq(tu_verify((const char *)m.payload + 8, m.payload_len - 8,
		                           id << 20 ^ seq), -1);
		ck_assert_uint_eq(m.owner, id);
		mb_inbox_consume(&c);
	}
	struct mb_inbox_msg m;
	TU_ASSERT_RC(mb_inbox_peek(&c, &m), MSGBUS_EAGAIN);
}

START_TEST(test_mp_threads)
{
	struct tib t;
	pthread_t th[MP_PRODUCERS];
	struct mp_arg a[MP_PRODUCERS];
	uint32_t count = tu_valgrind() ? 2000 : 50000;

	tib_open(&t, 16384); /* small: many laps, many full waits */
	for (uint32_t i = 0; i < MP_PRODUCERS; i++) {
		a[i] = (struct mp_arg){ &t.ib, i, count, -1 };
		ck_assert_int_eq(pthread_create(&th[i], NULL, mp_thread, &a[i]), 0);
	}
	mp_consume(&t.ib, MP_PRODUCERS, count);
	for (uint32_t i = 0; i < MP_PRODUCERS; i++) {
		pthread_join(th[i], NULL);
		TU_ASSERT_OK(a[i].rc);
	}
	tib_close(&t);
}
END_TEST

START_TEST(test_mp_processes)
{
	struct tib t;
	pid_t pid[MP_PRODUCERS];
	uint32_t count = 50000;

	tib_open(&t, 16384);
	for (uint32_t i = 0; i < MP_PRODUCERS; i++) {
		pid[i] = tu_fork();
		if (pid[i] == 0) {
			struct mb_inbox ib;
			int rc = mb_inbox_attach(&ib, t.base, t.seg, CTL_OFF, DATA_OFF, t.size);
			_exit(rc ? 100 : mp_produce(&ib, i, count));
		}
	}
	mp_consume(&t.ib, MP_PRODUCERS, count);
	for (uint32_t i = 0; i < MP_PRODUCERS; i++)
		TU_ASSERT_CHILD_OK(pid[i], TU_WAIT_MS);
	tib_close(&t);
}
END_TEST

/* ---- dead owners ---------------------------------------------------------- */

struct owners {
	pid_t pid[8];       /* owner index -> process; 0: none */
	unsigned dead_mask; /* simulated deaths */
	unsigned asked;
};

static bool owner_dead(void *ctx, uint32_t owner)
{
	struct owners *o = ctx;

	o->asked++;
	if (owner >= 8)
		return false;
	if (o->dead_mask >> owner & 1)
		return true;
	return o->pid[owner] > 0 && kill(o->pid[owner], 0) != 0 && errno == ESRCH;
}

START_TEST(test_dead_owner_simulated)
{
	struct tib t;
	struct owners o = { { 0 }, 0, 0 };
	struct mb_inbox_prod dead, live;
	struct mb_inbox_cons c;
	struct mb_inbox_msg m;
	struct mb_inbox_res r;

	tib_open(&t, 4096);
	mb_inbox_prod_init(&dead, &t.ib, 6, 0, NULL, NULL);
	mb_inbox_prod_init(&live, &t.ib, 1, 0, NULL, NULL);
	mb_inbox_cons_init(&c, &t.ib, owner_dead, &o, SPIN_NS, CHECK_NS);
	TU_ASSERT_OK(mb_inbox_reserve(&dead, 1, 100, MB_NO_WAIT, &r));
	TU_ASSERT_OK(put(&live, "z", "live", 4, MB_NO_WAIT));
	/* Owner 6 is alive: the consumer waits and times out. */
	TU_ASSERT_RC(mb_inbox_peek_wait(&c, &m, deadline_in(20 * MS)), MSGBUS_ETIMEDOUT);
	ck_assert_uint_gt(o.asked, 0);
	/* Owner 6 "dies": its record is aborted, the next one read. */
	o.dead_mask = 1u << 6;
	TU_ASSERT_OK(mb_inbox_peek_wait(&c, &m, deadline_in(TU_WAIT_MS * MS)));
	ck_assert(m.payload_len == 4 && memcmp(m.payload, "live", 4) == 0);
	mb_inbox_consume(&c);
	/* The owner learns it was taken for dead. */
	TU_ASSERT_RC(mb_inbox_commit(&dead, &r), MSGBUS_EPEERDIED);
	/* The try path finds it too, after enough polls. */
	o.dead_mask = 0;
	TU_ASSERT_OK(mb_inbox_reserve(&dead, 1, 8, MB_NO_WAIT, &r));
	TU_ASSERT_OK(put(&live, "z", "next", 4, MB_NO_WAIT));
	o.dead_mask = 1u << 6;
	int rc = MSGBUS_EAGAIN;
	for (int i = 0; i < 100000 && rc == MSGBUS_EAGAIN; i++)
		rc = mb_inbox_peek(&c, &m);
	TU_ASSERT_OK(rc);
	ck_assert(memcmp(m.payload, "next", 4) == 0);
	tib_close(&t);
}
END_TEST

/* A forked producer is SIGKILLed between reserve and commit. */
START_TEST(test_dead_owner_killed)
{
	struct tib t;
	struct owners o = { { 0 }, 0, 0 };
	struct mb_inbox_prod live;
	struct mb_inbox_cons c;
	struct mb_inbox_msg m;
	struct tu_pipe pp;
	int v;

	tib_open(&t, 4096);
	tu_pipe_init(&pp);
	pid_t pid = tu_fork();
	if (pid == 0) {
		struct mb_inbox ib;
		struct mb_inbox_prod p;
		struct mb_inbox_res r;

		if (mb_inbox_attach(&ib, t.base, t.seg, CTL_OFF, DATA_OFF, t.size))
			_exit(1);
		mb_inbox_prod_init(&p, &ib, 3, 0, NULL, NULL);
		if (mb_inbox_reserve(&p, 1, 64, MB_NO_WAIT, &r))
			_exit(2);
		memset(r.payload, 0xee, 32); /* half written */
		tu_pipe_put(&pp, 1);
		for (;;)
			pause();
	}
	o.pid[3] = pid;
	ck_assert_int_eq(tu_pipe_get(&pp, TU_WAIT_MS, &v), 0);
	mb_inbox_prod_init(&live, &t.ib, 1, 0, NULL, NULL);
	mb_inbox_cons_init(&c, &t.ib, owner_dead, &o, SPIN_NS, CHECK_NS);
	TU_ASSERT_OK(put(&live, "after", "ok", 2, MB_NO_WAIT));
	TU_ASSERT_RC(mb_inbox_peek_wait(&c, &m, deadline_in(20 * MS)), MSGBUS_ETIMEDOUT);
	tu_kill_child(pid); /* killed and reaped: kill(pid, 0) says ESRCH */
	TU_ASSERT_OK(mb_inbox_peek_wait(&c, &m, deadline_in(TU_WAIT_MS * MS)));
	ck_assert(m.subject_len == 5 && memcmp(m.subject, "after", 5) == 0);
	mb_inbox_consume(&c);
	/* The ring goes on: many more laps through the aborted space. */
	for (uint32_t i = 0; i < 1000; i++) {
		TU_ASSERT_OK(put(&live, "s", &i, 4, MB_NO_WAIT));
		TU_ASSERT_OK(mb_inbox_peek(&c, &m));
		ck_assert(m.payload_len == 4 && memcmp(m.payload, &i, 4) == 0);
		mb_inbox_consume(&c);
	}
	tu_pipe_close(&pp);
	tib_close(&t);
}
END_TEST

/* A producer dies holding the reserve lock: before it wrote its header
 * (the position stays), or after (the position moves past its record,
 * which the consumer then aborts). Producers and the consumer repair it. */
/* keep callback: commit a dead owner's record whose subject starts with
 * 'k' (as pubsub/mark.c does for a marked publish). */
static bool keep_k(void *ctx, uint32_t owner, const struct mb_inbox_msg *m)
{
	unsigned *asked = ctx;

	++*asked;
	return owner == 6 && m->subject_len >= 1 && m->subject[0] == 'k';
}

/* Reserve and fill a record of owner p, left CLAIMED (its owner "dies"). */
static void reserve_filled(struct mb_inbox_prod *p, const char *subject, const char *data)
{
	struct mb_inbox_res r;
	uint32_t sl = (uint32_t)strlen(subject), len = (uint32_t)strlen(data);

	TU_ASSERT_OK(mb_inbox_reserve(p, sl, len, MB_NO_WAIT, &r));
	memcpy(r.subject, subject, sl);
	memcpy(r.payload, data, len);
}

/* A dead owner's CLAIMED records are committed where the keep callback
 * says so and aborted otherwise: by mb_inbox_reap_owner (with a keep,
 * and without one: all aborted), and by a consumer that finds one at its
 * cursor (mb_inbox_cons_keep). */
START_TEST(test_dead_owner_keep)
{
	struct tib t;
	struct owners o = { { 0 }, 0, 0 };
	struct mb_inbox_prod dead, live;
	struct mb_inbox_cons c;
	unsigned asked = 0;

	tib_open(&t, 4096);
	mb_inbox_prod_init(&dead, &t.ib, 6, 0, NULL, NULL);
	mb_inbox_prod_init(&live, &t.ib, 1, 0, NULL, NULL);
	mb_inbox_cons_init(&c, &t.ib, owner_dead, &o, SPIN_NS, CHECK_NS);
	mb_inbox_cons_keep(&c, keep_k, &asked);
	/* The reaper, with a keep. */
	reserve_filled(&dead, "k", "one");
	reserve_filled(&dead, "a", "two");
	reserve_filled(&dead, "k", "three");
	TU_ASSERT_OK(put(&live, "z", "live", 4, MB_NO_WAIT));
	o.dead_mask = 1u << 6;
	mb_inbox_reap_owner(&t.ib, 6, keep_k, &asked);
	ck_assert_uint_eq(asked, 3);
	expect_msg_raw(&c, "one");
	expect_msg_raw(&c, "three");
	expect_msg_raw(&c, "live");
	/* The reaper without one: all aborted. */
	o.dead_mask = 0;
	reserve_filled(&dead, "k", "four");
	TU_ASSERT_OK(put(&live, "z", "live2", 5, MB_NO_WAIT));
	mb_inbox_reap_owner(&t.ib, 6, NULL, NULL);
	expect_msg_raw(&c, "live2");
	/* The consumer, at its cursor: kept, then aborted. */
	reserve_filled(&dead, "k", "five");
	reserve_filled(&dead, "a", "six");
	TU_ASSERT_OK(put(&live, "z", "live3", 5, MB_NO_WAIT));
	o.dead_mask = 1u << 6;
	asked = 0;
	expect_msg_raw(&c, "five");
	expect_msg_raw(&c, "live3");
	ck_assert_uint_eq(asked, 2);
	tib_close(&t);
}
END_TEST

START_TEST(test_dead_lock_holder)
{
	struct tib t;
	struct owners o = { { 0 }, 1u << 6, 0 };
	struct mb_inbox_prod dead, live;
	struct mb_inbox_cons c;
	struct mb_inbox_msg m;
	struct mb_inbox_res r;

	tib_open(&t, 4096);
	mb_inbox_prod_init(&dead, &t.ib, 6, 0, NULL, NULL);
	mb_inbox_prod_init(&live, &t.ib, 1, 0, owner_dead, &o);
	mb_inbox_cons_init(&c, &t.ib, owner_dead, &o, SPIN_NS, CHECK_NS);
	TU_ASSERT_OK(put(&live, "a", "one", 3, MB_NO_WAIT)); /* 32 bytes at 0 */
	/* 1. Dead before its header: a producer repairs, the position stays. */
	atomic_store(&t.ib.ctl->reserve, rw_word(32, 6, true));
	TU_ASSERT_OK(put(&live, "b", "two", 3, MB_NO_WAIT));
	ck_assert_uint_gt(o.asked, 0);
	expect_msg_raw(&c, "one");
	expect_msg_raw(&c, "two");
	/* 2. Dead after its header (reserve done, lock put back as if the
	 * unlock never happened): the consumer repairs and aborts it. */
	TU_ASSERT_OK(mb_inbox_reserve(&dead, 1, 8, MB_NO_WAIT, &r));
	atomic_store(&t.ib.ctl->reserve, rw_word(r.pos, 6, true));
	/* Two rounds of waiting: abort the record, then repair the lock. */
	TU_ASSERT_RC(mb_inbox_peek_wait(&c, &m, deadline_in(200 * MS)), MSGBUS_ETIMEDOUT);
	ck_assert_uint_eq(atomic_load(&t.ib.ctl->reserve), rw_word(r.pos + 32, 6, false));
	TU_ASSERT_OK(put(&live, "c", "three", 5, MB_NO_WAIT));
	expect_msg_raw(&c, "three");
	TU_ASSERT_RC(mb_inbox_commit(&dead, &r), MSGBUS_EPEERDIED);
	/* 3. With a PAD: the record wraps; a producer repairs past both. */
	while (rw_pos_of(&t) % 4096 < 4096 - 200) {
		TU_ASSERT_OK(put(&live, "f", "x", 1, MB_NO_WAIT));
		expect_msg_raw(&c, "x");
	}
	uint64_t before = rw_pos_of(&t);
	TU_ASSERT_OK(mb_inbox_reserve(&dead, 1, 256, MB_NO_WAIT, &r));
	ck_assert_uint_eq(r.pos % 4096, 0); /* after a PAD */
	atomic_store(&t.ib.ctl->reserve, rw_word(before, 6, true));
	TU_ASSERT_OK(put(&live, "g", "four", 4, MB_NO_WAIT));
	ck_assert_uint_eq(rw_pos_of(&t), r.pos + 280 + 32);
	expect_msg_raw(&c, "four"); /* PAD skipped, the dead record aborted */
	tib_close(&t);
}
END_TEST

/* ---- mb_inbox_put_many -------------------------------------------------- */

#define PM_SUBJECT_LEN 11u /* 8 bytes of sequence number, then "p.m" */
#define PM_MAXRUN 12u
#define PM_MAXLEN 300u

static uint32_t pm_len(uint64_t seq)
{
	return (uint32_t)(seq * 29 % PM_MAXLEN);
}

static void pm_subject(unsigned char *subject, uint64_t seq)
{
	memcpy(subject, &seq, 8);
	memcpy(subject + 8, "p.m", 3);
}

/* One run from seq on, of up to want records: how many went in (0: full). */
static uint32_t pm_put_run(struct mb_inbox_prod *p, uint64_t seq, uint32_t want)
{
	static _Thread_local unsigned char bufs[PM_MAXRUN][PM_MAXLEN];
	struct mb_inbox_part parts[PM_MAXRUN];
	unsigned char subject[PM_SUBJECT_LEN];
	uint32_t done = 0;

	for (uint32_t i = 0; i < want; i++) {
		parts[i].len = pm_len(seq + i);
		parts[i].data = bufs[i];
		tu_fill(bufs[i], parts[i].len, (uint32_t)(seq + i));
	}
	pm_subject(subject, 0);
	int rc = mb_inbox_put_many(p, subject, PM_SUBJECT_LEN, 0, seq, parts, want, &done);
	if (rc == MSGBUS_EAGAIN)
		return 0;
	TU_ASSERT_OK(rc);
	ck_assert_uint_ge(done, 1);
	ck_assert_uint_le(done, want);
	return done;
}

/* The next record is run record seq: subject, sequence number, contents. */
static void pm_expect(struct mb_inbox_cons *c, uint64_t seq, uint32_t owner)
{
	struct mb_inbox_msg m;
	unsigned char subject[PM_SUBJECT_LEN];

	TU_ASSERT_OK(mb_inbox_peek_wait(c, &m, deadline_in(TU_WAIT_MS * MS)));
	pm_subject(subject, seq);
	ck_assert_uint_eq(m.subject_len, PM_SUBJECT_LEN);
	ck_assert_msg(memcmp(m.subject, subject, PM_SUBJECT_LEN) == 0, "record %llu: subject",
	              (unsigned long long)seq);
	ck_assert_uint_eq(m.payload_len, pm_len(seq));
	ck_assert_int_eq(tu_verify(m.payload, m.payload_len, (uint32_t)seq), -1);
	ck_assert_uint_eq(m.owner, owner);
	mb_inbox_consume(c);
}

struct pm_arg {
	struct mb_inbox *ib;
	uint64_t count;
	int rc;
};

static void *pm_thread(void *arg)
{
	struct pm_arg *a = arg;
	struct mb_inbox_prod p;
	uint64_t until = deadline_in(TU_WAIT_MS * MS);

	mb_inbox_prod_init(&p, a->ib, 3, SPIN_NS, NULL, NULL);
	for (uint64_t seq = 0; seq < a->count;) {
		uint32_t want = 1 + (uint32_t)(seq % PM_MAXRUN);
		uint32_t done;

		if (want > a->count - seq)
			want = (uint32_t)(a->count - seq);
		done = pm_put_run(&p, seq, want);
		seq += done;
		if (done)
			until = deadline_in(TU_WAIT_MS * MS);
		else if (mb_now_ns() > until)
			return NULL; /* a->rc stays -1: the consumer stopped */
		else
			sched_yield(); /* as a link falls back: never starve a waiting put */
	}
	a->rc = 0;
	return NULL;
}

/* Runs of records written by mb_inbox_put_many into a small ring, read by
 * a consumer at the same time: each record intact, in order, once; a
 * second producer's mb_inbox_put records in between keep their order. */
START_TEST(test_put_many_concurrent)
{
	struct tib t;
	pthread_t th[2];
	struct pm_arg pa;
	struct mp_arg ma;
	struct mb_inbox_cons c;
	uint64_t count = tu_valgrind() ? 2000 : 100000, next = 0;
	uint32_t mp_next = 0;

	tib_open(&t, 8192);
	pa = (struct pm_arg){ &t.ib, count, -1 };
	ma = (struct mp_arg){ &t.ib, 1, (uint32_t)count / 10, -1 };
	ck_assert_int_eq(pthread_create(&th[0], NULL, pm_thread, &pa), 0);
	ck_assert_int_eq(pthread_create(&th[1], NULL, mp_thread, &ma), 0);
	mb_inbox_cons_init(&c, &t.ib, NULL, NULL, SPIN_NS, CHECK_NS);
	while (next < count || mp_next < ma.count) {
		struct mb_inbox_msg m;

		TU_ASSERT_OK(mb_inbox_peek_wait(&c, &m, deadline_in(TU_WAIT_MS * MS)));
		if (m.owner == 1) { /* mp_produce's "p.1" records */
			uint32_t seq;
			memcpy(&seq, (const char *)m.payload + 4, 4);
			ck_assert_uint_eq(seq, mp_next);
			mp_next++;
			mb_inbox_consume(&c);
			continue;
		}
		pm_expect(&c, next++, 3);
	}
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	TU_ASSERT_OK(pa.rc);
	TU_ASSERT_OK(ma.rc);
	struct mb_inbox_msg m;
	TU_ASSERT_RC(mb_inbox_peek(&c, &m), MSGBUS_EAGAIN);
	tib_close(&t);
}
END_TEST

/* The word after a run is zeroed before the run's last header is
 * published: what an earlier lap left there is never read as a header
 * (put_many without that zero left the consumer reading old payload bytes
 * as a header: MSGBUS_EPROTO). */
START_TEST(test_put_many_next_word)
{
	struct tib t;
	struct mb_inbox_prod p;
	struct mb_inbox_cons c;
	struct mb_inbox_msg m;
	static unsigned char ff[2024];

	memset(ff, 0xff, sizeof(ff));
	tib_open(&t, 4096);
	mb_inbox_prod_init(&p, &t.ib, 3, 0, NULL, NULL);
	mb_inbox_cons_init(&c, &t.ib, NULL, NULL, 0, 0);
	/* Lap 1: two records of 2048 bytes, all 0xff past their headers. */
	for (int i = 0; i < 2; i++) {
		TU_ASSERT_OK(mb_inbox_put(&p, "a", 1, ff, sizeof(ff), MB_NO_WAIT));
		TU_ASSERT_OK(mb_inbox_peek(&c, &m));
		ck_assert_uint_eq(m.payload_len, sizeof(ff));
		mb_inbox_consume(&c);
	}
	ck_assert_uint_eq(rw_pos_of(&t), 4096);
	/* Lap 2: a run of two records; the word after it is 0xff. */
	ck_assert_uint_eq(pm_put_run(&p, 0, 2), 2);
	/* Payloads of 0 and 29 bytes: records of 32 and 64 bytes. */
	ck_assert_uint_eq(rw_pos_of(&t), 4096 + 32 + 64);
	pm_expect(&c, 0, 3);
	pm_expect(&c, 1, 3);
	TU_ASSERT_RC(mb_inbox_peek(&c, &m), MSGBUS_EAGAIN);
	tib_close(&t);
}
END_TEST

/* A producer dies holding the lock after it published a run: whoever
 * repairs the lock moves the position past the whole run, so the next
 * record lands after it and none of the run is overwritten. */
START_TEST(test_put_many_dead_holder)
{
	struct tib t;
	struct owners o = { { 0 }, 1u << 6, 0 };
	struct mb_inbox_prod dead, live;
	struct mb_inbox_cons c;

	tib_open(&t, 4096);
	mb_inbox_prod_init(&dead, &t.ib, 6, 0, NULL, NULL);
	mb_inbox_prod_init(&live, &t.ib, 1, 0, owner_dead, &o);
	mb_inbox_cons_init(&c, &t.ib, owner_dead, &o, SPIN_NS, CHECK_NS);
	TU_ASSERT_OK(put(&live, "a", "one", 3, MB_NO_WAIT)); /* 32 bytes at 0 */
	uint64_t start = rw_pos_of(&t);
	ck_assert_uint_eq(pm_put_run(&dead, 0, 3), 3);
	uint64_t end = rw_pos_of(&t);
	atomic_store(&t.ib.ctl->reserve, rw_word(start, 6, true)); /* it never unlocked */
	TU_ASSERT_OK(put(&live, "b", "two", 3, MB_NO_WAIT));
	ck_assert_uint_gt(o.asked, 0);
	ck_assert_uint_eq(rw_pos_of(&t), end + 32);
	expect_msg_raw(&c, "one");
	for (uint64_t i = 0; i < 3; i++)
		pm_expect(&c, i, 6);
	expect_msg_raw(&c, "two");
	tib_close(&t);
}
END_TEST

static void segv_exit(int sig)
{
	(void)sig;
	_exit(3);
}

/* A forked producer really dies holding the reserve lock: mb_inbox_put
 * copies from a page it cannot read, so it is killed by SIGSEGV between the
 * lock and the unlock. The next producer finds the lock held by a dead
 * owner, repairs it, and the ring goes on. */
START_TEST(test_dead_in_lock_killed)
{
	struct tib t;
	struct owners o = { { 0 }, 0, 0 };
	struct mb_inbox_prod live;
	struct mb_inbox_cons c;
	int st;

	tib_open(&t, 4096);
	mb_inbox_prod_init(&live, &t.ib, 1, 0, owner_dead, &o);
	mb_inbox_cons_init(&c, &t.ib, owner_dead, &o, SPIN_NS, CHECK_NS);
	TU_ASSERT_OK(put(&live, "a", "before", 6, MB_NO_WAIT));
	pid_t pid = tu_fork();
	if (pid == 0) {
		struct mb_inbox ib;
		struct mb_inbox_prod p;
		void *bad = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (bad == MAP_FAILED || mb_inbox_attach(&ib, t.base, t.seg, CTL_OFF, DATA_OFF, t.size))
			_exit(1);
		mb_inbox_prod_init(&p, &ib, 4, 0, NULL, NULL);
		signal(SIGSEGV, segv_exit); /* quiet under the sanitizers */
		mb_inbox_put(&p, "s", 1, bad, 256, MB_NO_WAIT); /* dies in here */
		_exit(2);
	}
	ck_assert_int_eq(tu_wait_child(pid, TU_WAIT_MS, &st), 0);
	ck_assert_msg(WIFSIGNALED(st) || (WIFEXITED(st) && WEXITSTATUS(st) == 3),
	              "the child was to die in mb_inbox_put (status 0x%x)", st);
	o.pid[4] = pid; /* reaped: kill(pid, 0) fails with ESRCH */
	ck_assert_uint_eq(atomic_load(&t.ib.ctl->reserve) & 1, 1); /* still locked */
	TU_ASSERT_OK(put(&live, "b", "after", 5, deadline_in(TU_WAIT_MS * MS)));
	expect_msg_raw(&c, "before");
	expect_msg_raw(&c, "after");
	tib_close(&t);
}
END_TEST

/*
 * The crash points of lib/ring/inbox.c: a forked producer kills itself
 * (SIGKILL) at exactly that point of its first record, which wraps (so a
 * PAD is written first). The live producer and the consumer go on; the
 * dead producer's record is delivered only if it was whole and published
 * (put's COMMITTED header is the publication; the unlock after it is not
 * needed), and never twice.
 */
static const char *const crash_points[] = {
	"inbox_locked",      /* lock taken, nothing written */
	"inbox_pad",         /* PAD written under the lock */
	"inbox_reserved",    /* CLAIMED record, unlocked, not committed */
	"inbox_put_written", /* put's COMMITTED record written, still locked */
};

START_TEST(test_crash_points)
{
	struct tib t;
	struct owners o = { { 0 }, 0, 0 };
	struct mb_inbox_prod live;
	struct mb_inbox_cons c;
	const char *point = crash_points[_i];
	int st;

	tib_open(&t, 4096);
	mb_inbox_prod_init(&live, &t.ib, 1, 0, owner_dead, &o);
	mb_inbox_cons_init(&c, &t.ib, owner_dead, &o, SPIN_NS, CHECK_NS);
	while (rw_pos_of(&t) % 4096 < 4096 - 200) {
		TU_ASSERT_OK(put(&live, "a", "before", 6, MB_NO_WAIT));
		expect_msg_raw(&c, "before");
	}
	mb_inbox_flush(&c); /* room for the child's record */
	pid_t pid = tu_fork();
	if (pid == 0) {
		struct mb_inbox ib;
		struct mb_inbox_prod p;
		struct mb_inbox_res r;
		char buf[256] = { 0 };

		setenv("MSGBUS_CRASH_AT", point, 1);
		mb_crash_arm();
		if (mb_inbox_attach(&ib, t.base, t.seg, CTL_OFF, DATA_OFF, t.size))
			_exit(1);
		mb_inbox_prod_init(&p, &ib, 4, 0, NULL, NULL);
		if (strcmp(point, "inbox_reserved") == 0)
			mb_inbox_reserve(&p, 1, sizeof(buf), MB_NO_WAIT, &r);
		else
			mb_inbox_put(&p, "s", 1, buf, sizeof(buf), MB_NO_WAIT);
		_exit(2);
	}
	ck_assert_int_eq(tu_wait_child(pid, TU_WAIT_MS, &st), 0);
	ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "%s: status 0x%x", point, st);
	o.pid[4] = pid; /* reaped: dead */
	TU_ASSERT_OK(put(&live, "b", "after", 5, deadline_in(TU_WAIT_MS * MS)));
	if (strcmp(point, "inbox_put_written") == 0) {
		struct mb_inbox_msg m;
		TU_ASSERT_OK(mb_inbox_peek_wait(&c, &m, deadline_in(TU_WAIT_MS * MS)));
		ck_assert_int_eq(m.owner, 4);
		ck_assert_int_eq(m.subject_len, 1);
		ck_assert_int_eq(m.payload_len, 256);
		mb_inbox_consume(&c);
	}
	expect_msg_raw(&c, "after");
	/* And on, over the place where it died. */
	for (unsigned i = 0; i < 300; i++) {
		TU_ASSERT_OK(put(&live, "c", "again", 5, deadline_in(TU_WAIT_MS * MS)));
		expect_msg_raw(&c, "again");
	}
	tib_close(&t);
}
END_TEST

/*
 * Producer processes are SIGKILLed at random moments while they publish
 * (inside the lock, between reserve and commit, anywhere) and replaced by
 * new ones with new owner indices. Liveness is exact: an owner is dead once
 * its process has been reaped. Every producer's messages must arrive in
 * order with no gap and no duplicate, up to where it died; the inbox must
 * work afterwards.
 */
#define KC_OWNERS 512
#define KC_SLOTS 3
#define KC_KILLS 60 /* producers SIGKILLed while publishing */
#define KC_MAXLEN 2048u

static uint32_t kc_len(uint32_t owner, uint32_t seq)
{
	return 8 + (seq * 37 + owner * 101) % (KC_MAXLEN - 8);
}

struct kc_shared {
	_Atomic int dead[KC_OWNERS];
};

static bool kc_dead(void *ctx, uint32_t owner)
{
	struct kc_shared *k = ctx;

	return owner < KC_OWNERS && atomic_load(&k->dead[owner]);
}

static void kc_producer(struct tib *t, struct kc_shared *k, uint32_t owner)
{
	struct mb_inbox ib;
	struct mb_inbox_prod p;
	unsigned char buf[KC_MAXLEN];

	if (mb_inbox_attach(&ib, t->base, t->seg, CTL_OFF, DATA_OFF, t->size))
		_exit(1);
	mb_inbox_prod_init(&p, &ib, owner, SPIN_NS, kc_dead, k);
	for (uint32_t seq = 0;; seq++) {
		uint32_t len = kc_len(owner, seq);
		struct mb_inbox_res r;
		int rc;

		memcpy(buf, &owner, 4);
		memcpy(buf + 4, &seq, 4);
		memset(buf + 8, (int)(seq & 0xff), len - 8);
		if (seq % 2) { /* copies len bytes under the lock */
			rc = mb_inbox_put(&p, "k", 1, buf, len, deadline_in(TU_WAIT_MS * MS));
		} else {
			rc = mb_inbox_reserve(&p, 1, len, deadline_in(TU_WAIT_MS * MS), &r);
			if (rc == 0) {
				/* Slowly, byte by byte: a long window between
				 * reserve and commit for the kills to hit. */
				volatile unsigned char *d = r.payload;
				memcpy(r.subject, "k", 1);
				for (uint32_t i = 0; i < len; i++)
					d[i] = buf[i];
				rc = mb_inbox_commit(&p, &r);
			}
		}
		if (rc)
			_exit(10 + rc);
	}
}

/* Check one record: owner's next sequence number and its fill. */
static void kc_check(const struct mb_inbox_msg *m, uint32_t *next)
{
	uint32_t owner, seq;

	ck_assert_uint_ge(m->payload_len, 8);
	memcpy(&owner, m->payload, 4);
	memcpy(&seq, (const char *)m->payload + 4, 4);
	ck_assert_uint_lt(owner, KC_OWNERS);
	ck_assert_msg(seq == next[owner], "owner %u: seq %u, want %u", owner, seq, next[owner]);
	ck_assert_uint_eq(m->payload_len, kc_len(owner, seq));
	if (m->payload_len > 8) /* the ends: the consumer must keep up */
		ck_assert(((const unsigned char *)m->payload)[8] == (seq & 0xff) &&
		          ((const unsigned char *)m->payload)[m->payload_len - 1] == (seq & 0xff));
	next[owner]++;
}

static pid_t kc_spawn(struct tib *t, struct kc_shared *k, uint32_t owner)
{
	pid_t pid = tu_fork();

	if (pid == 0)
		kc_producer(t, k, owner);
	return pid;
}

static void kc_kill(struct kc_shared *k, pid_t pid, uint32_t owner)
{
	int st;

	kill(pid, SIGKILL);
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	tu_forget_child(pid);
	ck_assert_msg(WIFSIGNALED(st), "producer %u ended by itself (status 0x%x)", owner, st);
	atomic_store(&k->dead[owner], 1); /* reaped: exact */
}

START_TEST(test_kill_producers)
{
	struct tib t;
	struct kc_shared *k;
	struct mb_inbox_cons c;
	struct mb_inbox_msg m;
	uint32_t next[KC_OWNERS] = { 0 }, owner = 1, slot_owner[KC_SLOTS];
	pid_t pid[KC_SLOTS];
	uint64_t got = 0, kills = 0;
	uint64_t s = 42;
	/* Until a set number of kills and reads, not for a set time: a slow
	 * (sanitized) build does the same work, only later. */
	double end = tu_now_ms() + 30000, next_kill = tu_now_ms() + 10;

	tib_open(&t, 65536);
	k = mmap(NULL, sizeof(*k), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert(k != MAP_FAILED);
	for (int i = 0; i < KC_SLOTS; i++) {
		slot_owner[i] = owner;
		pid[i] = kc_spawn(&t, k, owner++);
	}
	mb_inbox_cons_init(&c, &t.ib, kc_dead, k, SPIN_NS, CHECK_NS);
	while ((kills < KC_KILLS || got < 1000) && tu_now_ms() < end) {
		int rc = mb_inbox_peek_wait(&c, &m, deadline_in(MS));
		if (rc == MSGBUS_OK) {
			kc_check(&m, next);
			mb_inbox_consume(&c);
			got++;
		} else {
			TU_ASSERT_RC(rc, MSGBUS_ETIMEDOUT);
		}
		if (tu_now_ms() >= next_kill && kills < KC_KILLS) {
			int i = (int)(tu_xorshift(&s) % KC_SLOTS);
			kc_kill(k, pid[i], slot_owner[i]);
			kills++;
			slot_owner[i] = owner;
			pid[i] = kc_spawn(&t, k, owner++);
			next_kill = tu_now_ms() + 1 + (double)(tu_xorshift(&s) % 4);
		}
	}
	for (int i = 0; i < KC_SLOTS; i++)
		kc_kill(k, pid[i], slot_owner[i]);
	/* Drain: what is left is read, or skipped as a dead owner's. */
	while (mb_inbox_peek_wait(&c, &m, deadline_in(50 * MS)) == MSGBUS_OK) {
		kc_check(&m, next);
		mb_inbox_consume(&c);
		got++;
	}
	/* Still usable: a new producer publishes, the consumer reads it. */
	struct mb_inbox_prod p;
	mb_inbox_prod_init(&p, &t.ib, owner, 0, kc_dead, k);
	TU_ASSERT_OK(mb_inbox_put(&p, "z", 1, "end", 3, deadline_in(TU_WAIT_MS * MS)));
	expect_msg_raw(&c, "end");
	ck_assert_uint_eq(kills, KC_KILLS);
	ck_assert_uint_ge(got, 1000);
	munmap(k, sizeof(*k));
	tib_close(&t);
}
END_TEST

/* ---- sleeping and waking -------------------------------------------------- */

struct wake_arg {
	struct mb_inbox *ib;
	int rc;
	atomic_int started;
};

static void *sleepy_consumer(void *arg)
{
	struct wake_arg *a = arg;
	struct mb_inbox_cons c;
	struct mb_inbox_msg m;

	mb_inbox_cons_init(&c, a->ib, NULL, NULL, 0, 0); /* no spin: sleeps at once */
	atomic_store(&a->started, 1);
	a->rc = mb_inbox_peek_wait(&c, &m, UINT64_MAX);
	if (a->rc == 0 && (m.payload_len != 3 || memcmp(m.payload, "hey", 3)))
		a->rc = -1;
	return NULL;
}

static void *sleepy_producer(void *arg)
{
	struct wake_arg *a = arg;
	struct mb_inbox_prod p;
	char buf[1000] = { 0 };

	mb_inbox_prod_init(&p, a->ib, 2, 0, NULL, NULL); /* no spin */
	atomic_store(&a->started, 1);
	a->rc = put(&p, "s", buf, sizeof(buf), UINT64_MAX);
	return NULL;
}

START_TEST(test_sleep_wake)
{
	struct tib t;
	struct wake_arg a = { NULL, -2, 0 };
	struct mb_inbox_prod p;
	struct mb_inbox_cons c;
	struct mb_inbox_msg m;
	pthread_t th;
	char buf[1000] = { 0 };

	tib_open(&t, 4096);
	a.ib = &t.ib;
	mb_inbox_prod_init(&p, &t.ib, 1, 0, NULL, NULL);
	/* A consumer asleep on an empty inbox wakes for a commit. */
	ck_assert_int_eq(pthread_create(&th, NULL, sleepy_consumer, &a), 0);
	while (!atomic_load(&a.started))
		tu_sleep_ms(1);
	tu_sleep_ms(20); /* let it reach the futex: the test passes either way */
	TU_ASSERT_OK(put(&p, "s", "hey", 3, MB_NO_WAIT));
	pthread_join(th, NULL);
	TU_ASSERT_OK(a.rc);
	/* A producer asleep on a full inbox wakes when the consumer flushes. */
	mb_inbox_cons_init(&c, &t.ib, NULL, NULL, 0, 0);
	TU_ASSERT_OK(mb_inbox_peek(&c, &m));
	mb_inbox_consume(&c);
	while (put(&p, "s", buf, sizeof(buf), MB_NO_WAIT) == MSGBUS_OK)
		;
	a.rc = -2;
	atomic_store(&a.started, 0);
	ck_assert_int_eq(pthread_create(&th, NULL, sleepy_producer, &a), 0);
	while (!atomic_load(&a.started))
		tu_sleep_ms(1);
	tu_sleep_ms(20);
	TU_ASSERT_OK(mb_inbox_peek(&c, &m));
	mb_inbox_consume(&c);
	mb_inbox_flush(&c);
	pthread_join(th, NULL);
	TU_ASSERT_OK(a.rc);
	tib_close(&t);
}
END_TEST

/* ---- a corrupted ring ----------------------------------------------------- */

static int ok_code(int rc)
{
	return rc == MSGBUS_OK || rc == MSGBUS_EAGAIN || rc == MSGBUS_EPROTO ||
	       rc == MSGBUS_ETIMEDOUT || rc == MSGBUS_EPEERDIED;
}

/* Fill, scribble, then use: every call returns a code, nothing reads or
 * writes outside the mapping (ASan), nothing loops for ever. */
START_TEST(test_corrupt_random)
{
	uint64_t s = 0x1234567 + (uint64_t)_i;
	struct owners o = { { 0 }, 0, 0 };
	unsigned errors = 0;

	for (int round = 0; round < 300; round++) {
		struct tib t;
		struct mb_inbox_prod p;
		struct mb_inbox_cons c;
		struct mb_inbox_msg m;
		unsigned char buf[700];

		memset(buf, round, sizeof(buf)); /* defined bytes: some end up read as headers */

		tib_open(&t, 4096);
		mb_inbox_prod_init(&p, &t.ib, 1, 0, NULL, NULL);
		mb_inbox_cons_init(&c, &t.ib, owner_dead, &o, 0, 0);
		for (int i = 0; i < 40; i++) {
			uint32_t len = (uint32_t)(tu_xorshift(&s) % 600);
			if (put(&p, "q", buf, len, MB_NO_WAIT) == MSGBUS_OK && i % 3 == 0 &&
			    mb_inbox_peek(&c, &m) == MSGBUS_OK)
				mb_inbox_consume(&c);
		}
		/* Scribble: words of the control block and the data. */
		int hits = 1 + (int)(tu_xorshift(&s) % 8);
		for (int h = 0; h < hits; h++) {
			uint64_t x = tu_xorshift(&s);
			uint64_t off = (x & 1) ? DATA_OFF + (x >> 8) % t.size
			                        : CTL_OFF + (x >> 8) % sizeof(struct mb_inbox_ctl);
			int kind = (int)(x >> 4 & 3);
			off &= kind == 0 ? ~0ull : ~7ull;
			if (kind == 0)
				t.base[off] ^= (unsigned char)(x >> 40 | 1);
			else if (kind == 1)
				memcpy(t.base + off, &x, 8);
			else if (kind == 2)
				memset(t.base + off, 0xff, 8);
			else
				memset(t.base + off, 0, 8);
		}
		/* Use it: a bounded number of calls, each with a known code. */
		o.dead_mask = (unsigned)(tu_xorshift(&s) & 0xff);
		for (int i = 0; i < 200; i++) {
			int rc;
			if (i % 2) {
				rc = mb_inbox_peek_wait(&c, &m, deadline_in(MS / 10));
				if (rc == MSGBUS_OK) {
					volatile unsigned char sink = 0;
					for (uint32_t k = 0; k < m.subject_len; k++)
						sink ^= (unsigned char)m.subject[k];
					for (uint32_t k = 0; k < m.payload_len; k++)
						sink ^= ((const unsigned char *)m.payload)[k];
					(void)sink;
					mb_inbox_consume(&c);
				}
			} else {
				uint32_t len = (uint32_t)(tu_xorshift(&s) % 600);
				rc = put(&p, "q", buf, len, MB_NO_WAIT);
			}
			ck_assert_msg(ok_code(rc), "round %d call %d: %d", round, i, rc);
			errors += rc == MSGBUS_EPROTO;
		}
		tib_close(&t);
	}
	ck_assert_uint_gt(errors, 0); /* corruption was seen, not only survived */
}
END_TEST

/* Targeted corruption: each yields EPROTO where it is read. */
START_TEST(test_corrupt_targeted)
{
	struct tib t;
	struct mb_inbox_prod p;
	struct mb_inbox_cons c;
	struct mb_inbox_msg m;
	uint64_t w;
	_Atomic uint64_t *head;

	tib_open(&t, 4096);
	mb_inbox_prod_init(&p, &t.ib, 1, 0, NULL, NULL);
	mb_inbox_cons_init(&c, &t.ib, NULL, NULL, 0, 0);
	head = (_Atomic uint64_t *)(void *)(t.base + DATA_OFF);
	TU_ASSERT_OK(put(&p, "abc", "0123456789", 10, MB_NO_WAIT));
	w = atomic_load(head);
	/* Size beyond the area. */
	atomic_store(head, w | (0xfffffffull << 17));
	TU_ASSERT_RC(mb_inbox_peek(&c, &m), MSGBUS_EPROTO);
	/* A header that belongs somewhere else (check bits). */
	atomic_store(head, w ^ (1ull << 50));
	TU_ASSERT_RC(mb_inbox_peek(&c, &m), MSGBUS_EPROTO);
	/* An unknown state. */
	atomic_store(head, (w & ~7ull) | 7);
	TU_ASSERT_RC(mb_inbox_peek(&c, &m), MSGBUS_EPROTO);
	/* Lengths in the info word larger than the record. */
	atomic_store(head, w);
	memset(t.base + DATA_OFF + 12, 0xff, 4);
	TU_ASSERT_RC(mb_inbox_peek(&c, &m), MSGBUS_EPROTO);
	memset(t.base + DATA_OFF + 12, 0, 4);
	memset(t.base + DATA_OFF + 8, 0xff, 4);
	TU_ASSERT_RC(mb_inbox_peek(&c, &m), MSGBUS_EPROTO);
	/* A reserve position over a lap ahead: producers refuse it (the
	 * consumer reads headers, not the reserve word: nothing for it). */
	memset(t.base + DATA_OFF + 8, 0, 8);
	memcpy(t.base + DATA_OFF + 8, &(uint64_t){ 3 | (uint64_t)10 << 32 }, 8);
	atomic_store(&t.ib.ctl->reserve, rw_word(1ull << 40, 1, false));
	TU_ASSERT_RC(put(&p, "s", "x", 1, MB_NO_WAIT), MSGBUS_EPROTO);
	TU_ASSERT_OK(mb_inbox_peek(&c, &m));
	mb_inbox_consume(&c);
	TU_ASSERT_RC(mb_inbox_peek(&c, &m), MSGBUS_EAGAIN);
	/* Held by a live owner for ever: EAGAIN, not a hang. */
	atomic_store(&t.ib.ctl->reserve, rw_word(40, 9, true));
	TU_ASSERT_RC(put(&p, "s", "x", 1, MB_NO_WAIT), MSGBUS_EAGAIN);
	TU_ASSERT_RC(mb_inbox_peek(&c, &m), MSGBUS_EAGAIN);
	/* A position below what the consumer released: the consumer waits
	 * at its cursor, with no spin (it looks at the word only when stuck). */
	atomic_store(&t.ib.ctl->reserve, rw_word(0, 1, false));
	TU_ASSERT_RC(mb_inbox_peek_wait(&c, &m, deadline_in(20 * MS)), MSGBUS_ETIMEDOUT);
	tib_close(&t);
}
END_TEST

Suite *suite_inbox(void)
{
	Suite *s = suite_create("inbox");
	TCase *tc = tu_tcase("basic", TU_CASE_TIMEOUT);

	tcase_add_test(tc, test_placement);
	tcase_add_test(tc, test_contents_order);
	tcase_add_test(tc, test_wrap_padding);
	tcase_add_test(tc, test_full_and_timeout);
	tcase_add_test(tc, test_abort_and_commit_order);
	tcase_add_test(tc, test_sleep_wake);
	tcase_add_test(tc, test_put_many_next_word);
	suite_add_tcase(s, tc);

	tc = tu_tcase("producers", TU_CASE_TIMEOUT);
	tcase_add_test(tc, test_mp_threads);
	tcase_add_test(tc, test_put_many_concurrent);
	if (!tu_valgrind())
		tcase_add_test(tc, test_mp_processes);
	suite_add_tcase(s, tc);

	tc = tu_tcase("crash", TU_CASE_TIMEOUT);
	tcase_add_test(tc, test_dead_owner_simulated);
	tcase_add_test(tc, test_dead_owner_keep);
	tcase_add_test(tc, test_dead_lock_holder);
	tcase_add_test(tc, test_put_many_dead_holder);
	if (!tu_valgrind()) {
		tcase_add_test(tc, test_dead_owner_killed);
		tcase_add_test(tc, test_dead_in_lock_killed);
		tcase_add_loop_test(tc, test_crash_points, 0,
		                    (int)(sizeof(crash_points) / sizeof(crash_points[0])));
		tcase_add_test(tc, test_kill_producers);
	}
	suite_add_tcase(s, tc);

	tc = tu_tcase("corrupt", TU_CASE_TIMEOUT);
	tcase_add_loop_test(tc, test_corrupt_random, 0, 4);
	tcase_add_test(tc, test_corrupt_targeted);
	suite_add_tcase(s, tc);
	return s;
}
