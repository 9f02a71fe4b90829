/*
 * crash.h - crash points for tests: with MSGBUS_CRASH_AT=NAME in the
 * environment when a bus is opened, the process kills itself with SIGKILL
 * when it reaches the point NAME, so tests can show that the others recover
 * from a death at exactly that moment. With MSGBUS_CRASH_AT=stop:NAME it
 * stops itself (SIGSTOP) there instead, the first time only, so a test
 * can act while it waits at that point and then let it go on. With
 * MSGBUS_CRASH_AT=pause:NAME only the thread that reaches NAME sleeps
 * there, MB_CRASH_PAUSE_MS, the first time only, so that another thread
 * of the process can act meanwhile. Off, a point costs one branch.
 */
#ifndef MB_CRASH_H
#define MB_CRASH_H

#include <stdatomic.h>

#define MB_CRASH_PAUSE_MS 300u

extern _Atomic(const char *) mb_crash_at;
void mb_crash_now(const char *point);
void mb_crash_arm(void); /* read the environment; at every open */

static inline void mb_crash_point(const char *point)
{
	if (__builtin_expect(atomic_load_explicit(&mb_crash_at, memory_order_relaxed) != 0, 0))
		mb_crash_now(point);
}

#endif
