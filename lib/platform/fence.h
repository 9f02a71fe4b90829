/*
 * fence.h - asymmetric fences for Dekker pairs whose two sides run at very
 * different rates: a publisher stores a message, then loads the consumer's
 * eventcount, millions of times a second; the consumer sets WAITERS, then
 * loads the message's header, once before each sleep. On x86 the store-load
 * order costs the fast side a full fence (it drains the store buffer,
 * waiting for the lines just written). With membarrier(2) the slow side
 * pays instead: MEMBARRIER_CMD_GLOBAL_EXPEDITED runs a full barrier on
 * every CPU that runs a thread of a registered process, so the fast side
 * needs only a compiler barrier. (Folly's asymmetricThreadFence and
 * liburcu's sys_membarrier flavour do the same within one process.)
 *
 * Each process decides for itself: mb_fence_light() is a compiler barrier
 * once this process is registered, and a full fence before (or if the
 * kernel refuses). mb_fence_heavy() works whatever the other side did.
 */
#ifndef MB_FENCE_H
#define MB_FENCE_H

#include <stdatomic.h>
#include <stdbool.h>

#if defined(__SANITIZE_THREAD__)
#define MB_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MB_TSAN 1
#endif
#endif

extern _Atomic bool mb_fence_registered;

/* A full fence. On x86 a locked exchange on the stack: cheaper than mfence.
 * Under ThreadSanitizer too (gcc refuses atomic_thread_fence there). */
static inline void mb_fence_full(void)
{
#if defined(__x86_64__) || defined(__i386__) || defined(MB_TSAN)
	_Atomic unsigned char local = 0;

	(void)atomic_exchange_explicit(&local, 1, memory_order_seq_cst);
#else
	atomic_thread_fence(memory_order_seq_cst);
#endif
}

/* Register this process (idempotent; at every open, so a forked child that
 * opens a bus registers too). */
void mb_fence_register(void);

/* The fast side, between its store and its load. */
static inline void mb_fence_light(void)
{
	/* Acquire: pairs with the release in mb_fence_register, after the
	 * registration took effect. */
	if (atomic_load_explicit(&mb_fence_registered, memory_order_acquire))
		atomic_signal_fence(memory_order_seq_cst);
	else
		mb_fence_full();
}

/* The slow side, between its store and its load. false when membarrier is
 * not available: the caller then cannot rule out a store of a registered
 * process still in flight and must bound its sleep. */
bool mb_fence_heavy(void);

#endif
