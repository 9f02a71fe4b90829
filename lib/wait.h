/*
 * wait.h - eventcounts: a 32-bit futex word whose top bit says "someone may
 * sleep". Waiters spin first; a signaller makes a system call only when the
 * bit is set, so an uncontended publish costs one fence and one load.
 */
#ifndef MB_WAIT_H
#define MB_WAIT_H

#include "platform.h"

#include <stdbool.h>

#define MB_EC_WAITERS 0x80000000u

#if defined(__SANITIZE_THREAD__)
#define MB_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MB_TSAN 1
#endif
#endif

/*
 * Orders a prior store (a commit, a release) before the load of an
 * eventcount, pairing with the waiter's fetch_or before its re-check.
 * ThreadSanitizer ignores standalone fences, so its builds use an RMW.
 */
static inline uint32_t mb_ec_load_after_store(_Atomic uint32_t *ec)
{
#ifdef MB_TSAN
	return atomic_fetch_add_explicit(ec, 0, memory_order_seq_cst);
#else
	atomic_thread_fence(memory_order_seq_cst);
	return atomic_load_explicit(ec, memory_order_relaxed);
#endif
}

/* Wake every sleeper; call after the state change the sleepers wait for. */
static inline void mb_ec_signal(_Atomic uint32_t *ec)
{
	if (mb_ec_load_after_store(ec) & MB_EC_WAITERS) {
		atomic_fetch_and_explicit(ec, ~MB_EC_WAITERS, memory_order_relaxed);
		atomic_fetch_add_explicit(ec, 1, memory_order_release);
		mb_futex_wake_all(ec);
	}
}

/* Signal two eventcounts after one store, paying for one fence. */
static inline void mb_ec_signal2(_Atomic uint32_t *a, _Atomic uint32_t *b)
{
#ifdef MB_TSAN
	mb_ec_signal(a);
	mb_ec_signal(b);
#else
	atomic_thread_fence(memory_order_seq_cst);
	uint32_t va = atomic_load_explicit(a, memory_order_relaxed);
	uint32_t vb = atomic_load_explicit(b, memory_order_relaxed);
	if ((va | vb) & MB_EC_WAITERS) {
		mb_ec_signal(a);
		mb_ec_signal(b);
	}
#endif
}

/* Wake unconditionally (a closing handle, a reclaimed peer). */
static inline void mb_ec_kick(_Atomic uint32_t *ec)
{
	atomic_fetch_add_explicit(ec, 1, memory_order_seq_cst);
	mb_futex_wake_all(ec);
}

/*
 * Announce a sleeper; returns the value to pass to mb_ec_sleep. The caller
 * must re-check its condition after this and before sleeping.
 */
static inline uint32_t mb_ec_prepare(_Atomic uint32_t *ec)
{
	return atomic_fetch_or_explicit(ec, MB_EC_WAITERS, memory_order_seq_cst) |
	       MB_EC_WAITERS;
}

static inline void mb_ec_sleep(_Atomic uint32_t *ec, uint32_t v, uint64_t now,
                               uint64_t until)
{
	if (until > now)
		mb_futex_wait(ec, v, until == UINT64_MAX ? UINT64_MAX : until - now);
}

#endif
