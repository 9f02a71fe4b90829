/*
 * slock.h - a lock for one process's threads whose release is a plain
 * store. The sending side of a TCP link (link/conn_state.h: a door's
 * wlock) is taken and released once per message a publisher writes
 * itself; a mutex's release is a locked exchange, which waits for the
 * store buffer (the message just copied) to drain, and was a third of the
 * publisher's time in a 64 B stream (perf). Waiters spin briefly, then
 * sleep on an eventcount that the release signals with the light fence
 * of fence.h: a first sleep is bounded (a waiter announced while the
 * releasing store was still in flight may be missed); later ones follow
 * a heavy fence, which rules that out.
 */
#ifndef MB_SLOCK_H
#define MB_SLOCK_H

#include "platform/wait.h"

#include <stdbool.h>

struct mb_slock {
	_Atomic uint32_t held; /* 0 free, 1 held */
	_Atomic uint32_t ec;   /* sleepers wait on it (wait.h) */
};

static inline void mb_slock_init(struct mb_slock *l)
{
	atomic_init(&l->held, 0);
	atomic_init(&l->ec, 0);
}

/* true: taken. */
static inline bool mb_slock_try(struct mb_slock *l)
{
	uint32_t free_ = 0;
	/* Acquire: pairs with the release store of mb_slock_unlock: what the
	 * last holder wrote is seen. */
	return atomic_compare_exchange_strong_explicit(&l->held, &free_, 1, memory_order_acquire,
	                                               memory_order_relaxed);
}

void mb_slock_wait(struct mb_slock *l); /* slock.c: the contended path */

static inline void mb_slock_lock(struct mb_slock *l)
{
	if (!mb_slock_try(l))
		mb_slock_wait(l);
}

static inline void mb_slock_unlock(struct mb_slock *l)
{
	/* Release: pairs with the acquire of mb_slock_try. */
	atomic_store_explicit(&l->held, 0, memory_order_release);
	/* The light fence, then a look for sleepers (wait.h): the Dekker
	 * pair with mb_slock_wait's mb_ec_prepare and re-try. */
	mb_ec_signal_light(&l->ec);
}

#endif
