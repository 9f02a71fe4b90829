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
	/* Release: pairs with mb_crash_now's load, so a thread that reads the
	 * string sees what setenv wrote there (a process arms while its threads
	 * pass points). glibc never frees a string setenv made, so the pointer
	 * stays good after unsetenv. */
	atomic_store_explicit(&mb_crash_at, getenv("MSGBUS_CRASH_AT"), memory_order_release);
}

void mb_crash_now(const char *point)
{
	/* seq_cst by default (acquire would do): pairs with mb_crash_arm's
	 * release store before the string is read. The CASes below pair only
	 * with each other (one thread takes a stop: or pause: point). */
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
