/*
 * check_introspect.c - the introspection API (issue 11 item 3) and the
 * wait for subscribers (item 6): what msgbus_stat_get, msgbus_participants,
 * msgbus_subscriptions and msgbus_services report after subscribe,
 * publish, receive, lossy drops, a killed subscriber and queued requests,
 * and msgbus_wait_subscribers against a subscriber that comes later.
 */
#include <sys/mman.h>

#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "test_util.h"

#define CAP 16

static void close_bus(msgbus_bus *bus, const char *url)
{
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url);
}

static const msgbus_sub_info *find_sub(const msgbus_sub_info *a, size_t n, const char *pattern)
{
	for (size_t i = 0; i < n && i < CAP; i++)
		if (!strcmp(a[i].pattern, pattern))
			return &a[i];
	return NULL;
}

static const msgbus_service_info *find_svc(const msgbus_service_info *a, size_t n,
                                           const char *name)
{
	for (size_t i = 0; i < n && i < CAP; i++)
		if (!strcmp(a[i].name, name))
			return &a[i];
	return NULL;
}

/* Sizes as created, counts, and EINVAL for a bad size member. */
START_TEST(test_stat_sizes_and_counts)
{
	char url[96];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	msgbus_sub *a = NULL, *b = NULL;
	msgbus_service *svc = NULL;

	o.max_subs = 40;
	o.max_participants = 20;
	o.inbox_size = 8192;
	o.max_subjects = 12;
	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, &o);
	msgbus_stat st = { .size = sizeof(st) };
	TU_ASSERT_OK(msgbus_stat_get(bus, &st));
	ck_assert_uint_eq(st.size, sizeof(st));
	ck_assert_uint_eq(st.max_subs, 40);
	ck_assert_uint_eq(st.max_participants, 20);
	ck_assert_uint_eq(st.inbox_size, 8192);
	ck_assert_uint_eq(st.max_subjects, 12);
	ck_assert_uint_eq(st.max_msg_size, 1u << 20);
	ck_assert_uint_gt(st.segment_size, (uint64_t)40 * 8192);
	ck_assert_uint_eq(st.participants, 1);
	ck_assert_uint_eq(st.subscriptions, 0);
	ck_assert_uint_eq(st.services, 0);
	uint32_t gen0 = st.interest_gen;

	TU_ASSERT_OK(msgbus_subscribe(bus, "s.a", 0, &a));
	TU_ASSERT_OK(msgbus_subscribe(bus, "s.>", MSGBUS_SUB_LOSSY, &b));
	TU_ASSERT_OK(msgbus_serve(bus, "calc", NULL, NULL, &svc));
	TU_ASSERT_OK(msgbus_stat_get(bus, &st));
	ck_assert_uint_eq(st.subscriptions, 2);
	ck_assert_uint_eq(st.services, 1);
	ck_assert_uint_ne(st.interest_gen, gen0);

	msgbus_stat small = { .size = sizeof(small) - 1 };
	TU_ASSERT_RC(msgbus_stat_get(bus, &small), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_stat_get(NULL, &st), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_stat_get(bus, NULL), MSGBUS_EINVAL);
	size_t n;
	TU_ASSERT_RC(msgbus_subscriptions(bus, NULL, 1, &n), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_participants(bus, NULL, 0, NULL), MSGBUS_EINVAL);
	TU_ASSERT_OK(msgbus_services(bus, NULL, 0, &n)); /* a count only */
	ck_assert_uint_eq(n, 1);
	TU_ASSERT_OK(msgbus_unserve(svc));
	TU_ASSERT_OK(msgbus_unsubscribe(a));
	TU_ASSERT_OK(msgbus_unsubscribe(b));
	TU_ASSERT_OK(msgbus_stat_get(bus, &st));
	ck_assert_uint_eq(st.subscriptions, 0);
	close_bus(bus, url);
}
END_TEST

/* Subscriptions: pattern, owner, flags, delivered, backlog, lossy drops. */
START_TEST(test_subscriptions_contents)
{
	char url[96];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	msgbus_sub *a = NULL, *l = NULL;
	msgbus_msg *m = NULL;
	msgbus_sub_info si[CAP];
	size_t n = 0;

	o.inbox_size = 4096;
	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, &o);
	msgbus_bus *other = tu_open(url, &o);
	TU_ASSERT_OK(msgbus_subscribe(bus, "i.a", 0, &a));
	TU_ASSERT_OK(msgbus_subscribe(bus, "i.*", MSGBUS_SUB_LOSSY, &l));
	for (int i = 0; i < 5; i++)
		TU_ASSERT_OK(msgbus_publish(other, "i.a", "hello", 5, 0));
	for (int i = 0; i < 2; i++) {
		TU_ASSERT_OK(msgbus_recv(a, &m, TU_WAIT_MS));
		msgbus_msg_release(m);
	}
	/* The lossy one overflows: 4 KiB hold far fewer than 2000. */
	for (int i = 0; i < 2000; i++)
		TU_ASSERT_OK(msgbus_publish(other, "i.b", "0123456789abcdef", 16, 0));

	msgbus_stat st = { .size = sizeof(st) };
	TU_ASSERT_OK(msgbus_stat_get(bus, &st));
	TU_ASSERT_OK(msgbus_subscriptions(bus, si, CAP, &n));
	ck_assert_uint_eq(n, 2);
	const msgbus_sub_info *ia = find_sub(si, n, "i.a"), *il = find_sub(si, n, "i.*");
	ck_assert_ptr_nonnull(ia);
	ck_assert_ptr_nonnull(il);
	ck_assert_uint_eq(ia->owner, st.self);
	ck_assert_uint_eq(ia->flags, MSGBUS_SUBINFO_LOCAL);
	ck_assert_uint_eq(ia->delivered, 2);
	ck_assert_uint_eq(ia->backlog, 3);
	ck_assert_uint_eq(ia->dropped, 0);
	ck_assert_uint_eq(il->flags, MSGBUS_SUBINFO_LOCAL | MSGBUS_SUB_LOSSY);
	ck_assert_uint_eq(il->delivered, 0);
	ck_assert_msg(il->dropped > 0 && il->backlog > 0 && il->dropped + il->backlog == 2005,
	              "dropped %llu backlog %llu", (unsigned long long)il->dropped,
	              (unsigned long long)il->backlog);

	/* Seen from the other handle: not local, same backlog and drops. */
	msgbus_sub_info so[CAP];
	size_t n2 = 0;
	TU_ASSERT_OK(msgbus_subscriptions(other, so, CAP, &n2));
	ck_assert_uint_eq(n2, 2);
	const msgbus_sub_info *oa = find_sub(so, n2, "i.a");
	ck_assert_ptr_nonnull(oa);
	ck_assert_uint_eq(oa->flags, 0);
	ck_assert_uint_eq(oa->delivered, 0);
	ck_assert_uint_eq(oa->owner, st.self);
	/* Released positions lag the consumer: at least what is left. */
	ck_assert_uint_ge(oa->backlog, 3);
	ck_assert_uint_le(oa->backlog, 5);
	ck_assert_uint_eq(find_sub(so, n2, "i.*")->dropped, il->dropped);

	/* A short array: the count is whole, one entry written. */
	msgbus_sub_info one[1];
	TU_ASSERT_OK(msgbus_subscriptions(bus, one, 1, &n));
	ck_assert_uint_eq(n, 2);
	ck_assert_msg(!strcmp(one[0].pattern, "i.a") || !strcmp(one[0].pattern, "i.*"), "%s",
	              one[0].pattern);
	TU_ASSERT_OK(msgbus_unsubscribe(a));
	TU_ASSERT_OK(msgbus_unsubscribe(l));
	TU_ASSERT_OK(msgbus_close(other));
	close_bus(bus, url);
}
END_TEST

/* Services: workers and the requests no worker took yet. */
START_TEST(test_services_queued)
{
	char url[96];
	msgbus_service *w1 = NULL, *w2 = NULL;
	msgbus_call *calls[3];
	msgbus_req *req = NULL;
	msgbus_service_info si[CAP];
	size_t n = 0;

	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, NULL);
	msgbus_bus *client = tu_open(url, NULL);
	TU_ASSERT_OK(msgbus_serve(bus, "math.add", NULL, NULL, &w1));
	TU_ASSERT_OK(msgbus_serve(bus, "math.add", NULL, NULL, &w2));
	TU_ASSERT_OK(msgbus_services(client, si, CAP, &n));
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(si[0].name, "math.add");
	/* Two workers of one handle: one participant bit. */
	ck_assert_uint_eq(si[0].workers, 1);
	ck_assert_uint_eq(si[0].queued, 0);
	for (int i = 0; i < 3; i++)
		TU_ASSERT_OK(msgbus_call_start(client, "math.add", "1+1", 3, TU_WAIT_MS, &calls[i]));
	TU_ASSERT_OK(msgbus_services(client, si, CAP, &n));
	ck_assert_uint_eq(si[0].queued, 3);
	TU_ASSERT_OK(msgbus_service_recv(w1, &req, TU_WAIT_MS));
	TU_ASSERT_OK(msgbus_respond(req, "2", 1));
	TU_ASSERT_OK(msgbus_services(client, si, CAP, &n));
	ck_assert_uint_eq(si[0].queued, 2);
	msgbus_msg *reply = NULL;
	TU_ASSERT_OK(msgbus_call_wait(calls[0], &reply, TU_WAIT_MS));
	msgbus_msg_release(reply);
	msgbus_call_cancel(calls[1]);
	msgbus_call_cancel(calls[2]);
	TU_ASSERT_OK(msgbus_unserve(w1));
	TU_ASSERT_OK(msgbus_unserve(w2));
	TU_ASSERT_OK(msgbus_close(client));
	close_bus(bus, url);
}
END_TEST

struct kid {
	const char *url;
	struct tu_pipe ready;
	struct tu_pipe go; /* gated: subscribes once it reads from go */
	int gated;
};

/* Subscribes to k.x and serves k.svc, says so, then waits to be killed. */
static int kid_main(void *p)
{
	struct kid *c = p;
	msgbus_bus *bus = NULL;
	msgbus_sub *sub = NULL;
	msgbus_service *svc = NULL;
	if (msgbus_open(&bus, c->url, NULL))
		return TU_CHILD_FAIL(10, "open");
	int x;
	if (c->gated && tu_pipe_get(&c->go, TU_WAIT_MS, &x))
		return TU_CHILD_FAIL(12, "no go");
	if (msgbus_subscribe(bus, "k.x", 0, &sub) || msgbus_serve(bus, "k.svc", NULL, NULL, &svc))
		return TU_CHILD_FAIL(11, "subscribe/serve");
	tu_pipe_put(&c->ready, 1);
	for (;;)
		pause();
}

/* A SIGKILLed subscriber: listed as not alive, reaped, its subscription
 * and its worker gone. */
START_TEST(test_killed_subscriber)
{
	char url[96];
	struct kid c;
	int x;
	msgbus_participant_info pi[CAP];
	msgbus_sub_info si[CAP];
	msgbus_service_info sv[CAP];
	size_t n = 0;

	tu_unique_url(url, sizeof(url), "shm");
	msgbus_bus *bus = tu_open(url, NULL);
	c.url = url;
	c.gated = 0;
	tu_pipe_init(&c.ready);
	pid_t pid = tu_spawn(kid_main, &c);
	ck_assert_msg(tu_pipe_get(&c.ready, TU_WAIT_MS, &x) == 0, "child did not subscribe");
	TU_ASSERT_OK(msgbus_participants(bus, pi, CAP, &n));
	ck_assert_uint_eq(n, 2);
	uint32_t kid_idx = UINT32_MAX;
	for (size_t i = 0; i < n; i++) {
		ck_assert_uint_eq(pi[i].flags & MSGBUS_PART_ALIVE, MSGBUS_PART_ALIVE);
		if (pi[i].pid == (uint32_t)pid) {
			ck_assert_uint_eq(pi[i].flags & MSGBUS_PART_SELF, 0);
			kid_idx = pi[i].index;
		} else {
			ck_assert_uint_eq(pi[i].pid, (uint32_t)getpid());
			ck_assert_uint_eq(pi[i].flags & MSGBUS_PART_SELF, MSGBUS_PART_SELF);
		}
	}
	ck_assert_uint_ne(kid_idx, UINT32_MAX);
	TU_ASSERT_OK(msgbus_subscriptions(bus, si, CAP, &n));
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(si[0].pattern, "k.x");
	ck_assert_uint_eq(si[0].owner, kid_idx);
	TU_ASSERT_OK(msgbus_services(bus, sv, CAP, &n));
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(find_svc(sv, n, "k.svc")->workers, 1);
	TU_ASSERT_OK(msgbus_wait_subscribers(bus, "k.x", 1, 0));

	tu_kill_child(pid);
	TU_ASSERT_OK(msgbus_participants(bus, pi, CAP, &n));
	for (size_t i = 0; i < n; i++)
		if (pi[i].index == kid_idx)
			ck_assert_uint_eq(pi[i].flags & MSGBUS_PART_ALIVE, 0);
	/* Reaped by that check: gone from every list. */
	TU_ASSERT_OK(msgbus_participants(bus, pi, CAP, &n));
	ck_assert_uint_eq(n, 1);
	TU_ASSERT_OK(msgbus_subscriptions(bus, si, CAP, &n));
	ck_assert_uint_eq(n, 0);
	TU_ASSERT_OK(msgbus_services(bus, sv, CAP, &n));
	ck_assert_uint_eq(n, 1); /* a service slot outlives its workers */
	ck_assert_uint_eq(sv[0].workers, 0);
	TU_ASSERT_RC(msgbus_wait_subscribers(bus, "k.x", 1, 0), MSGBUS_ETIMEDOUT);
	tu_pipe_close(&c.ready);
	close_bus(bus, url);
}
END_TEST

/* The start-up race: wait until a subscriber in another process is there;
 * timeout 0 never waits; an unmet count times out. */
START_TEST(test_wait_subscribers)
{
	char url[96];
	struct kid c;
	int x;
	msgbus_sub *mine = NULL;

	tu_unique_url(url, sizeof(url), "shm");
	msgbus_bus *bus = tu_open(url, NULL);
	TU_ASSERT_RC(msgbus_wait_subscribers(bus, "k.*", 1, 0), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_wait_subscribers(bus, "_svc.k", 1, 0), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_wait_subscribers(NULL, "k.x", 1, 0), MSGBUS_EINVAL);
	TU_ASSERT_OK(msgbus_wait_subscribers(bus, "k.x", 0, 0));
	c.url = url;
	c.gated = 1;
	tu_pipe_init(&c.ready);
	tu_pipe_init(&c.go);
	pid_t pid = tu_spawn(kid_main, &c);
	double t0 = tu_now_ms();
	TU_ASSERT_RC(msgbus_wait_subscribers(bus, "k.x", 1, 0), MSGBUS_ETIMEDOUT);
	ck_assert_msg(tu_now_ms() - t0 < 100.0, "timeout 0 waited %.0f ms", tu_now_ms() - t0);
	/* The child subscribes only after the wait began. */
	ck_assert_int_eq(tu_pipe_put(&c.go, 1), 0);
	TU_ASSERT_OK(msgbus_wait_subscribers(bus, "k.x", 1, TU_WAIT_MS));
	/* It subscribed, so it says so right after. */
	ck_assert_msg(tu_pipe_get(&c.ready, TU_WAIT_MS, &x) == 0, "child did not subscribe");

	/* Two are wanted; a wildcard of ours makes the second. */
	t0 = tu_now_ms();
	TU_ASSERT_RC(msgbus_wait_subscribers(bus, "k.x", 2, 150), MSGBUS_ETIMEDOUT);
	double dt = tu_now_ms() - t0;
	ck_assert_msg(dt >= 149.0 && dt < 3000.0, "timed out after %.0f ms (150)", dt);
	TU_ASSERT_OK(msgbus_subscribe(bus, "k.>", 0, &mine));
	TU_ASSERT_OK(msgbus_wait_subscribers(bus, "k.x", 2, 0));
	TU_ASSERT_RC(msgbus_wait_subscribers(bus, "k.y", 2, 0), MSGBUS_ETIMEDOUT);
	TU_ASSERT_OK(msgbus_unsubscribe(mine));
	tu_kill_child(pid);
	tu_pipe_close(&c.ready);
	tu_pipe_close(&c.go);
	close_bus(bus, url);
}
END_TEST

struct churn {
	msgbus_bus *bus;
	_Atomic int stop;
	_Atomic int rounds;
};

/* Subscribes and unsubscribes in a loop: slots change under the readers. */
static void *churn_main(void *p)
{
	struct churn *c = p;
	while (!atomic_load(&c->stop)) {
		msgbus_sub *s = NULL;
		if (msgbus_subscribe(c->bus, atomic_load(&c->rounds) % 2 ? "churn.a.b.c" : "c.>", 0,
		                     &s) == MSGBUS_OK)
			msgbus_unsubscribe(s);
		atomic_fetch_add(&c->rounds, 1);
	}
	return NULL;
}

/* Snapshots taken while another handle's subscriptions come and go show
 * only whole records: a pattern that was there, never a mix. */
START_TEST(test_snapshot_under_churn)
{
	char url[96];
	msgbus_sub *keep = NULL;
	msgbus_sub_info si[CAP];
	struct churn c = { NULL, 0, 0 };
	pthread_t th;
	size_t n;

	tu_unique_url(url, sizeof(url), tu_scheme(_i));
	msgbus_bus *bus = tu_open(url, NULL);
	c.bus = tu_open(url, NULL);
	TU_ASSERT_OK(msgbus_subscribe(bus, "keep.x", 0, &keep));
	ck_assert_int_eq(pthread_create(&th, NULL, churn_main, &c), 0);
	double end = tu_now_ms() + 300;
	int snaps = 0;
	while (tu_now_ms() < end || atomic_load(&c.rounds) < 50) {
		TU_ASSERT_OK(msgbus_subscriptions(bus, si, CAP, &n));
		ck_assert_uint_ge(n, 1);
		ck_assert_uint_le(n, 2);
		for (size_t i = 0; i < n; i++)
			ck_assert_msg(!strcmp(si[i].pattern, "keep.x") ||
			                      !strcmp(si[i].pattern, "churn.a.b.c") ||
			                      !strcmp(si[i].pattern, "c.>"),
			              "pattern %s", si[i].pattern);
		TU_ASSERT_OK(msgbus_wait_subscribers(bus, "keep.x", 1, 0));
		snaps++;
		if (tu_now_ms() > end + TU_WAIT_MS)
			break;
	}
	atomic_store(&c.stop, 1);
	pthread_join(th, NULL);
	ck_assert_int_ge(atomic_load(&c.rounds), 50);
	ck_assert_int_gt(snaps, 0);
	TU_ASSERT_OK(msgbus_unsubscribe(keep));
	TU_ASSERT_OK(msgbus_close(c.bus));
	close_bus(bus, url);
}
END_TEST

/* ---- a damaged segment ---------------------------------------------------- */

/* The segment of url, mapped; its size in *size. */
static unsigned char *map_segment(const char *url, size_t *size)
{
	char path[128];
	struct stat sb;
	tu_shm_path(path, sizeof(path), url);
	int fd = open(path, O_RDWR | O_CLOEXEC);
	ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
	ck_assert_int_eq(fstat(fd, &sb), 0);
	void *p = mmap(NULL, (size_t)sb.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	ck_assert_ptr_ne(p, MAP_FAILED);
	*size = (size_t)sb.st_size;
	return p;
}

/* The subscription slot holding pattern: its pattern is preceded by its
 * length and its state word (layout.h, struct mb_subslot). */
static unsigned char *find_slot(unsigned char *seg, size_t size, const char *pattern)
{
	size_t len = strlen(pattern) + 1;
	for (unsigned char *p = seg + 12; p + len <= seg + size;) {
		unsigned char *q = memmem(p, (size_t)(seg + size - p), pattern, len);
		if (!q)
			break;
		uint32_t plen;
		uint64_t w;
		memcpy(&plen, q - 4, 4);
		memcpy(&w, q - 12, 8);
		if (plen == len - 1 && (w & 0xff) == 2 /* ACTIVE */)
			return q - 12;
		p = q + 1;
	}
	ck_abort_msg("no slot with pattern %s", pattern);
	return NULL;
}

/* Lengths out of bounds, an inner NUL, a service name without its prefix
 * and worker bits beyond the participants: left out or bounded, never a
 * crash; restored, the records are listed again. */
START_TEST(test_damaged_slots)
{
	char url[96];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	msgbus_sub *sub = NULL;
	msgbus_service *svc = NULL;
	msgbus_sub_info si[CAP];
	msgbus_service_info sv[CAP];
	msgbus_stat st = { .size = sizeof(st) };
	size_t n = 0, size;

	o.inbox_size = 4096;
	o.max_subs = 8;
	tu_unique_url(url, sizeof(url), "shm");
	msgbus_bus *bus = tu_open(url, &o);
	TU_ASSERT_OK(msgbus_subscribe(bus, "zq.unique.x", 0, &sub));
	TU_ASSERT_OK(msgbus_serve(bus, "zq.svc", NULL, NULL, &svc));
	unsigned char *seg = map_segment(url, &size);
	unsigned char *ss = find_slot(seg, size, "zq.unique.x");
	unsigned char *qs = find_slot(seg, size, "_svc.zq.svc");
	uint32_t keep_len, bad_len = 300;

	memcpy(&keep_len, ss + 8, 4);
	memcpy(ss + 8, &bad_len, 4);
	TU_ASSERT_OK(msgbus_subscriptions(bus, si, CAP, &n));
	ck_assert_uint_eq(n, 0);
	TU_ASSERT_OK(msgbus_stat_get(bus, &st));
	ck_assert_uint_eq(st.subscriptions, 0);
	TU_ASSERT_RC(msgbus_wait_subscribers(bus, "zq.unique.x", 1, 0), MSGBUS_ETIMEDOUT);
	memcpy(ss + 8, &keep_len, 4);
	ss[12 + 3] = '\0'; /* "zq." then NUL, within the length */
	TU_ASSERT_OK(msgbus_subscriptions(bus, si, CAP, &n));
	ck_assert_uint_eq(n, 0);
	ss[12 + 3] = 'u';
	TU_ASSERT_OK(msgbus_subscriptions(bus, si, CAP, &n));
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(si[0].pattern, "zq.unique.x");
	TU_ASSERT_OK(msgbus_wait_subscribers(bus, "zq.unique.x", 1, 0));

	/* Every worker bit set: only live participants count. */
	unsigned char keep_members[64];
	memcpy(keep_members, qs + 272, 64);
	memset(qs + 272, 0xff, 64);
	TU_ASSERT_OK(msgbus_services(bus, sv, CAP, &n));
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(sv[0].workers, 1);
	memcpy(qs + 272, keep_members, 64);
	qs[12] = 'x'; /* "xsvc.zq.svc": not a service name */
	TU_ASSERT_OK(msgbus_services(bus, sv, CAP, &n));
	ck_assert_uint_eq(n, 0);
	qs[12] = '_';
	TU_ASSERT_OK(msgbus_services(bus, sv, CAP, &n));
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(sv[0].name, "zq.svc");
	munmap(seg, size);
	TU_ASSERT_OK(msgbus_unserve(svc));
	TU_ASSERT_OK(msgbus_unsubscribe(sub));
	close_bus(bus, url);
}
END_TEST

Suite *suite_introspect(void)
{
	Suite *s = suite_create("introspect");
	TCase *tc = tu_tcase("api", TU_CASE_TIMEOUT);
	tcase_add_loop_test(tc, test_stat_sizes_and_counts, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_subscriptions_contents, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_services_queued, 0, TU_NSCHEMES);
	tcase_add_loop_test(tc, test_snapshot_under_churn, 0, TU_NSCHEMES);
	suite_add_tcase(s, tc);
	if (!tu_valgrind()) {
		tc = tu_tcase("processes", TU_CASE_TIMEOUT);
		tcase_add_test(tc, test_killed_subscriber);
		tcase_add_test(tc, test_wait_subscribers);
		tcase_add_test(tc, test_damaged_slots);
		suite_add_tcase(s, tc);
	}
	return s;
}
