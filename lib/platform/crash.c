/* crash.c - test crash points; see crash.h. */
#include "platform/crash.h"
#include "platform/platform.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

_Atomic(const char *) mb_crash_at;

void mb_crash_arm(void)
{
	/* Process-local test hook. Relaxed, as mb_crash_point's load. */
	atomic_store_explicit(&mb_crash_at, getenv("MSGBUS_CRASH_AT"), memory_order_relaxed);
}

void mb_crash_now(const char *point)
{
	/* seq_cst by default, as the CASes below (one thread takes a stop: or
	 * pause: point): they pair with nothing but each other (relaxed would
	 * do). */
	const char *want = atomic_load(&mb_crash_at);
	if (!want)
		return;
	if (strcmp(want, point) == 0)
		kill(getpid(), SIGKILL);
	else if (strncmp(want, "stop:", 5) == 0 && strcmp(want + 5, point) == 0 &&
	         atomic_compare_exchange_strong(&mb_crash_at, &want, NULL))
		kill(getpid(), SIGSTOP); /* once: then the process goes on */
	else if (strncmp(want, "pause:", 6) == 0 && strcmp(want + 6, point) == 0 &&
	         atomic_compare_exchange_strong(&mb_crash_at, &want, NULL))
		mb_nap_us(MB_CRASH_PAUSE_MS * 1000u); /* this thread only, once */
}
