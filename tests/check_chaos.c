/*
 * check_chaos.c - a short chaos run (tests/chaos.c) in make check: several
 * processes on one shm:// bus under random SIGKILL and SIGSTOP/SIGCONT;
 * `make chaos` runs the same harness for longer.
 *
 * MSGBUS_CHAOS_SECONDS overrides the length of the run, MSGBUS_CHAOS_SEED
 * the seed (the loop index otherwise, so a failure names its seed).
 * The figures (kills survived, messages checked) go to stderr.
 * "found": deterministic cases for what chaos runs turned up.
 */
#define CHAOS_NO_MAIN
#include "chaos.c"

#include <sys/mman.h>

#include "shm/segment.h"
#include "test_util.h"

Suite *suite_chaos(void);

/* What a stuck or failed run leaves in the segment: participants and
 * their locks, the control lock, subscription slots, each subject's tail,
 * gate, cursors and the stamps readers have not passed, and the call
 * entries in use. For the chaos harness (cx_stall_hook). */
static void chaos_dump_segment(const char *url)
{
	char path[160];
	struct stat sb;
	tu_shm_path(path, sizeof(path), url);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &sb) != 0 || (size_t)sb.st_size < MB_PAGE) {
		if (fd >= 0)
			close(fd);
		return;
	}
	const unsigned char *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		close(fd);
		return;
	}
	const struct mb_header *h = (const void *)map;
	struct mb_config cfg;
	struct mb_geometry g;
	memcpy(&cfg, &h->cfg, sizeof(cfg));
	mb_geometry(&cfg, &g);
	if (g.size != (uint64_t)sb.st_size || cfg.max_participants > MB_MAX_PARTICIPANTS) {
		fprintf(stderr, "chaos dump: %s: unexpected geometry\n", path);
		goto out;
	}
	fprintf(stderr, "chaos dump: %s: ctl_owner %u\n", path, atomic_load(&h->ctl_owner));
	for (uint32_t i = 0; i < cfg.max_participants; i++) {
		const struct mb_part *pp = (const struct mb_part *)(const void *)(map + g.parts) + i;
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET,
			            .l_start = (off_t)(1 + i), .l_len = 1 };
		int held = fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
		if (atomic_load(&pp->state) || held)
			fprintf(stderr, "chaos dump: participant %u state %u pid %u %s\n", i,
			        atomic_load(&pp->state), atomic_load(&pp->pid),
			        held ? "alive (locked)" : "dead (unlocked)");
		for (uint32_t k = 0; k < MB_CALLS; k++) {
			const struct mb_call *e =
			        (const struct mb_call *)(const void *)(map + g.calls) + i * MB_CALLS + k;
			uint64_t w = atomic_load(&e->word);
			if (w)
				fprintf(stderr, "chaos dump:   call %u/%u corr %u worker %u state %u\n", i,
				        k, MB_CALLW_CORR(w), MB_CALLW_WORKER(w), MB_CALLW_STATE(w));
		}
	}
	for (uint32_t s = 0; s < cfg.max_subs; s++) {
		const struct mb_subslot *ss = (const struct mb_subslot *)(const void *)(map + g.subs) + s;
		uint64_t w = atomic_load(&ss->word);
		if (MB_SUBW_STATE(w))
			fprintf(stderr, "chaos dump: sub %u gen %u owner %u flags %u state %u %.64s\n", s,
			        MB_SUBW_GEN(w), MB_SUBW_OWNER(w), MB_SUBW_FLAGS(w), MB_SUBW_STATE(w),
			        ss->pattern);
	}
	for (uint32_t t = 0; t < cfg.max_subjects; t++) {
		const struct mb_topic *tp = (const void *)(map + g.topics + t * g.topic_stride);
		if (atomic_load(&tp->state) != MB_TOPIC_READY)
			continue;
		uint64_t tail = atomic_load(&tp->tail), lo = tail;
		fprintf(stderr, "chaos dump: subject %u %.64s tail %llu gate %llu\n", t, tp->name,
		        (unsigned long long)tail, (unsigned long long)atomic_load(&tp->gate));
		for (uint32_t s = 0; s < cfg.max_subs; s++) {
			const struct mb_cursor *cu =
			        (const void *)((const char *)tp + g.cursors + s * sizeof(*cu));
			uint64_t gen = atomic_load(&cu->gen), rel = atomic_load(&cu->release);
			if (!gen)
				continue;
			fprintf(stderr, "chaos dump:   cursor %u gen %llu release %llu\n", s,
			        (unsigned long long)gen, (unsigned long long)rel);
			if (rel < lo)
				lo = rel;
		}
		if (tail - lo > cfg.ring_slots)
			lo = tail - cfg.ring_slots;
		for (uint64_t p = lo; p < tail; p++) {
			const struct mb_slot *sl = (const void *)((const char *)tp + g.slots +
			                                          (p & (cfg.ring_slots - 1)) * cfg.slot_size);
			uint64_t st = atomic_load(&sl->stamp);
			fprintf(stderr, "chaos dump:   position %llu: seq %llu owner %u state %u len %u\n",
			        (unsigned long long)p, (unsigned long long)MB_STAMP_SEQ(st),
			        MB_STAMP_OWNER(st), MB_STAMP_STATE(st), sl->len);
		}
	}
out:
	munmap((void *)map, (size_t)sb.st_size);
	close(fd);
}

#define CHAOS_SECONDS 4.0
#define CHAOS_RUNS 1

START_TEST(test_chaos)
{
	char url[96];
	struct chaos_cfg cfg = chaos_defaults;
	struct chaos_report rep;
	const char *e;

	tu_unique_url(url, sizeof(url), "shm");
	cfg.url = url;
	cfg.seed = (uint64_t)_i + 1;
	if ((e = getenv("MSGBUS_CHAOS_SECONDS")) != NULL && atof(e) > 0)
		cfg.seconds = atof(e);
	else
		cfg.seconds = CHAOS_SECONDS;
	if ((e = getenv("MSGBUS_CHAOS_SEED")) != NULL && *e != '\0')
		cfg.seed = strtoull(e, NULL, 0);
	cx_stall_hook = chaos_dump_segment;
	int rc = chaos_run(&cfg, &rep);
	fprintf(stderr, "chaos: seed %llu, crash bound %d ms, pauses up to %d ms, slack %d ms\n",
	        (unsigned long long)cfg.seed, cfg.crash_bound_ms, cfg.pause_max_ms,
	        cfg.slack_ms);
	chaos_print(&rep, stderr);
	ck_assert_msg(rc == 0 && rep.failed == 0, "chaos seed %llu: %d failure(s):\n%s",
	              (unsigned long long)cfg.seed, rep.failed, rep.why);
	/* the run must have exercised what it claims to */
	ck_assert_msg(rep.kills >= 5, "only %u kills", rep.kills);
	ck_assert_msg(rep.checked_lossless > 1000, "only %llu messages checked",
	              (unsigned long long)rep.checked_lossless);
	ck_assert_msg(rep.req_ok > 0, "no request succeeded");
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

/* ---- found by the chaos run ---------------------------------------------- */

struct dead_reader {
	const char *url;
	const msgbus_options *o;
	struct tu_pipe ready;
};

/* Subscribes losslessly, says so, never reads. */
static int dead_reader_main(void *p)
{
	struct dead_reader *d = p;
	msgbus_bus *bus = NULL;
	msgbus_sub *sub = NULL;
	int rc = msgbus_open(&bus, d->url, d->o);
	if (rc == MSGBUS_OK)
		rc = msgbus_subscribe(bus, "big", 0, &sub);
	if (rc != MSGBUS_OK)
		return TU_CHILD_FAIL(10, "open/subscribe: %s", msgbus_strerror(rc));
	tu_pipe_put(&d->ready, 1);
	for (;;)
		pause();
}

/* A lossless reader is killed; the messages published after it are large,
 * so the large buffers run out before the ring is full. A dead reader must
 * stop holding publishers back within crash_bound_ms whichever resource it
 * holds: loop index 0 publishes, 1 loans. */
START_TEST(test_dead_reader_holds_buffers)
{
	char url[96];
	static char big[1000];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	struct dead_reader d;
	int x;

	o.ring_slots = 64;
	o.large_buffers = 2;
	o.crash_bound_ms = 300;
	tu_unique_url(url, sizeof(url), "shm");
	msgbus_bus *bus = tu_open(url, &o);
	d.url = url;
	d.o = &o;
	tu_pipe_init(&d.ready);
	pid_t pid = tu_spawn(dead_reader_main, &d);
	ck_assert_msg(tu_pipe_get(&d.ready, TU_WAIT_MS, &x) == 0, "reader did not subscribe");
	tu_kill_child(pid);
	for (int i = 0; i < 6; i++) {
		double t0 = tu_now_ms();
		int rc;
		if (_i == 1 && i >= 2) {
			msgbus_buf *l = NULL;
			rc = msgbus_loan(bus, 100, 3000, &l);
			if (rc == MSGBUS_OK)
				msgbus_loan_abort(l);
		} else {
			rc = msgbus_publish(bus, "big", big, sizeof(big), 3000);
		}
		double dt = tu_now_ms() - t0;
		ck_assert_msg(rc == MSGBUS_OK && dt < 1000,
		              "%s %d with 2 large buffers and a dead reader: %s after %.0f ms "
		              "(crash bound 300 ms)",
		              _i == 1 && i >= 2 ? "loan" : "large publish", i, msgbus_strerror(rc),
		              dt);
	}
	tu_pipe_close(&d.ready);
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

/* A worker dies holding a request (loop 0: at the crash point before_reply,
 * the call entry saying WRITING; 1: SIGKILLed after taking it), and a new
 * process opens the bus at once, taking the dead worker's participant
 * slot. The requester must get EPEERDIED within the crash bound, not wait
 * for the newcomer (liveness by slot index alone) until the deadline or,
 * in WRITING, for ever. Everything runs in a child with an alarm: the
 * requester's cancel and close spin in the same way. */
static int slot_reuse_main(void *p)
{
	const char *url = ((const char *const *)p)[0];
	int variant = *(const int *)((const char *const *)p)[1];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	msgbus_bus *bus = NULL;
	msgbus_call *call = NULL;
	msgbus_msg *m = NULL;
	struct tu_pipe pp;
	int x, st;

	o.crash_bound_ms = 300;
	alarm(10); /* a hang ends the child with SIGALRM */
	if (msgbus_open(&bus, url, &o) != MSGBUS_OK)
		return TU_CHILD_FAIL(10, "open");
	tu_pipe_init(&pp);
	pid_t w = fork();
	if (w == 0) { /* the worker */
		msgbus_bus *b = NULL;
		msgbus_service *svc = NULL;
		msgbus_req *req = NULL;
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (variant == 0)
			setenv("MSGBUS_CRASH_AT", "before_reply", 1);
		if (msgbus_open(&b, url, &o) != MSGBUS_OK ||
		    msgbus_serve(b, "sr.svc", NULL, NULL, &svc) != MSGBUS_OK)
			_exit(11);
		tu_pipe_put(&pp, 1);
		if (msgbus_service_recv(svc, &req, TU_WAIT_MS) != MSGBUS_OK)
			_exit(12);
		tu_pipe_put(&pp, 2);
		if (variant == 0)
			msgbus_respond(req, "late", 4); /* dies in here */
		for (;;)
			pause();
	}
	if (tu_pipe_get(&pp, TU_WAIT_MS, &x) != 0)
		return TU_CHILD_FAIL(13, "worker did not serve");
	double t0 = tu_now_ms();
	int rc = msgbus_call_start(bus, "sr.svc", "q", 1, 2000, &call);
	if (rc != MSGBUS_OK)
		return TU_CHILD_FAIL(14, "call_start: %s", msgbus_strerror(rc));
	if (tu_pipe_get(&pp, TU_WAIT_MS, &x) != 0)
		return TU_CHILD_FAIL(15, "worker did not take the request");
	if (variant == 1)
		kill(w, SIGKILL);
	waitpid(w, &st, 0);
	double died = tu_now_ms();
	pid_t n = fork();
	if (n == 0) { /* the newcomer: takes the free slot, the dead worker's */
		msgbus_bus *b = NULL;
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (msgbus_open(&b, url, &o) != MSGBUS_OK)
			_exit(16);
		tu_pipe_put(&pp, 3);
		for (;;)
			pause();
	}
	if (tu_pipe_get(&pp, TU_WAIT_MS, &x) != 0 || x != 3)
		return TU_CHILD_FAIL(17, "newcomer did not open");
	for (;;) {
		rc = msgbus_call_wait(call, &m, 100);
		if (rc != MSGBUS_EAGAIN || tu_now_ms() - t0 > 4000)
			break;
	}
	double dt = tu_now_ms() - died;
	kill(n, SIGKILL);
	waitpid(n, &st, 0);
	if (rc == MSGBUS_EAGAIN)
		return TU_CHILD_FAIL(18, "call still pending %.0f ms after the worker died (deadline "
		                         "2000 ms from the start)",
		                     dt);
	if (rc != MSGBUS_EPEERDIED || dt > 1000)
		return TU_CHILD_FAIL(19, "call_wait: %s %.0f ms after the worker died, want "
		                         "EPEERDIED within the crash bound (300 ms)",
		                     msgbus_strerror(rc), dt);
	msgbus_close(bus);
	return 0;
}

START_TEST(test_worker_slot_reused)
{
	char url[96], why[96];
	int variant = _i, st;
	const void *args[2] = { url, &variant };
	tu_unique_url(url, sizeof(url), "shm");
	pid_t pid = tu_spawn(slot_reuse_main, (void *)args);
	if (tu_wait_child(pid, 4 * TU_WAIT_MS, &st) != 0) {
		tu_kill_child(pid);
		ck_abort_msg("%s: child still running", _i ? "taken" : "before_reply");
	}
	ck_assert_msg(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: child %s%s",
	              _i ? "taken" : "before_reply", tu_status_str(why, sizeof(why), st),
	              WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM
	                      ? " (the requester hung: call_wait, cancel or close)"
	                      : "");
	tu_unlink_url(url);
}
END_TEST

Suite *suite_chaos(void)
{
	Suite *s = suite_create("chaos");
	TCase *tc;

	if (tu_valgrind())
		return s; /* fork, SIGKILL and timing heavy */

	const char *e = getenv("MSGBUS_CHAOS_SECONDS");
	double secs = e != NULL && atof(e) > 0 ? atof(e) : CHAOS_SECONDS;
	tc = tu_tcase("chaos", TU_CASE_TIMEOUT + secs);
	tcase_add_loop_test(tc, test_chaos, 0, CHAOS_RUNS);
	suite_add_tcase(s, tc);

	tc = tu_tcase("found", TU_CASE_TIMEOUT);
	tcase_add_loop_test(tc, test_dead_reader_holds_buffers, 0, 2);
	tcase_add_loop_test(tc, test_worker_slot_reused, 0, 2);
	suite_add_tcase(s, tc);
	return s;
}
