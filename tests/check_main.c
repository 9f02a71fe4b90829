/*
 * check_main.c - runs every suite of the libmsgbus test binary.
 *
 * CK_FORK, CK_RUN_SUITE, CK_RUN_CASE and CK_VERBOSITY work as usual.
 * MSGBUS_TEST_VALGRIND=1 skips the fork/kill-heavy and timing cases.
 */
#include <dirent.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "test_util.h"

pid_t tu_run_pid;

unsigned tu_next_id(void)
{
	static atomic_uint next;
	return atomic_fetch_add(&next, 1);
}

_Thread_local unsigned long tu_clock_reads, tu_subject_checks, tu_hashes, tu_yields,
	tu_bell_looks, tu_doorbell_rings, tu_inbox_puts;

/* Every call of these from another object of the library (or a test) lands
 * here: the Makefile links with --wrap=NAME for each (TEST_WRAPS). */
uint64_t __real_mb_now_ns(void);
uint64_t __wrap_mb_now_ns(void);
uint64_t __wrap_mb_now_ns(void)
{
	tu_clock_reads++;
	return __real_mb_now_ns();
}

int __real_mb_subject_check(const char *s, size_t *len, bool pattern, bool *wild);
int __wrap_mb_subject_check(const char *s, size_t *len, bool pattern, bool *wild);
int __wrap_mb_subject_check(const char *s, size_t *len, bool pattern, bool *wild)
{
	tu_subject_checks++;
	return __real_mb_subject_check(s, len, pattern, wild);
}

uint64_t __real_mb_hash(const char *s, size_t len);
uint64_t __wrap_mb_hash(const char *s, size_t len);
uint64_t __wrap_mb_hash(const char *s, size_t len)
{
	tu_hashes++;
	return __real_mb_hash(s, len);
}

void __real_mb_yield_cpu(void);
void __wrap_mb_yield_cpu(void);
void __wrap_mb_yield_cpu(void)
{
	tu_yields++;
	__real_mb_yield_cpu();
}

struct mb_bell;
void __real_mb_bell_ring(struct mb_bell *bell);
void __wrap_mb_bell_ring(struct mb_bell *bell);
void __wrap_mb_bell_ring(struct mb_bell *bell)
{
	tu_bell_looks++;
	__real_mb_bell_ring(bell);
}

void __real_mb_doorbell_ring(uint64_t id);
void __wrap_mb_doorbell_ring(uint64_t id);
void __wrap_mb_doorbell_ring(uint64_t id)
{
	tu_doorbell_rings++;
	__real_mb_doorbell_ring(id);
}

struct mb_inbox_prod;
int __real_mb_inbox_put(struct mb_inbox_prod *p, const void *subject, uint32_t subject_len,
                        const void *payload, uint32_t payload_len, uint64_t deadline);
int __wrap_mb_inbox_put(struct mb_inbox_prod *p, const void *subject, uint32_t subject_len,
                        const void *payload, uint32_t payload_len, uint64_t deadline);
int __wrap_mb_inbox_put(struct mb_inbox_prod *p, const void *subject, uint32_t subject_len,
                        const void *payload, uint32_t payload_len, uint64_t deadline)
{
	tu_inbox_puts++;
	return __real_mb_inbox_put(p, subject, subject_len, payload, payload_len, deadline);
}

atomic_ulong tu_req_starts_nowait;

struct msgbus_call;
int __real_mb_call_start_nowait(msgbus_bus *bus, const char *service, const void *data, size_t len,
                                int timeout_ms, struct msgbus_call **out,
                                void (*listed)(struct msgbus_call *call, void *arg), void *arg);
int __wrap_mb_call_start_nowait(msgbus_bus *bus, const char *service, const void *data, size_t len,
                                int timeout_ms, struct msgbus_call **out,
                                void (*listed)(struct msgbus_call *call, void *arg), void *arg);
int __wrap_mb_call_start_nowait(msgbus_bus *bus, const char *service, const void *data, size_t len,
                                int timeout_ms, struct msgbus_call **out,
                                void (*listed)(struct msgbus_call *call, void *arg), void *arg)
{
	atomic_fetch_add(&tu_req_starts_nowait, 1);
	return __real_mb_call_start_nowait(bus, service, data, len, timeout_ms, out, listed, arg);
}

/* A test that failed in Check's fork mode ends with _exit() and skips its
 * teardown; remove what such a test left in /dev/shm so one failure does
 * not leak into later runs. Passing tests assert that nothing is left. */
static int sweep_segments(void)
{
	char prefix[64];
	int n = 0;
	snprintf(prefix, sizeof(prefix), "msgbus.ck%ldx", (long)tu_run_pid);
	DIR *d = opendir("/dev/shm");
	if (d == NULL)
		return 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (strncmp(e->d_name, prefix, strlen(prefix)) != 0)
			continue;
		char path[512];
		snprintf(path, sizeof(path), "/dev/shm/%s", e->d_name);
		if (unlink(path) == 0)
			n++;
	}
	closedir(d);
	return n;
}

int main(void)
{
	tu_run_pid = getpid();

	SRunner *sr = srunner_create(suite_api());
	srunner_add_suite(sr, suite_pubsub());
	srunner_add_suite(sr, suite_flow());
	srunner_add_suite(sr, suite_crash());
	srunner_add_suite(sr, suite_corrupt());
	srunner_add_suite(sr, suite_reqrep());
	srunner_add_suite(sr, suite_wire());
	srunner_add_suite(sr, suite_inbox());
	srunner_add_suite(sr, suite_tcp());
	srunner_add_suite(sr, suite_tcp_dos());
	srunner_add_suite(sr, suite_chaos());
	srunner_add_suite(sr, suite_security());
	srunner_add_suite(sr, suite_contracts());
	srunner_add_suite(sr, suite_nats());
	srunner_add_suite(sr, suite_v2());
	srunner_add_suite(sr, suite_introspect());
	srunner_add_suite(sr, suite_shutdown());
	srunner_add_suite(sr, suite_poll());
	srunner_add_suite(sr, suite_spin());
	srunner_add_suite(sr, suite_audit());
	srunner_add_suite(sr, suite_edges());
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CHECK_TSAN 1
#endif
#endif
#if !defined(__SANITIZE_THREAD__) && !defined(CHECK_TSAN)
	/* Random writes into a live segment make its users race by design:
	 * ThreadSanitizer would report that, not a bug. The suite runs in the
	 * plain, ASan/UBSan and valgrind builds. */
	srunner_add_suite(sr, suite_hostile());
#endif

	srunner_run_all(sr, CK_ENV);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);

	int swept = sweep_segments();
	if (swept > 0)
		fprintf(stderr, "check_main: removed %d segment(s) left in "
		                "/dev/shm by failed tests\n", swept);
	return failed == 0 ? 0 : 1;
}
