/*
 * wait.h - eventcounts: a 32-bit futex word whose top bit says "someone may
 * sleep". Waiters spin first; a signaller makes a system call only when the
 * bit is set, so an uncontended publish costs one fence and one load.
 */
#ifndef MB_WAIT_H
#define MB_WAIT_H

#include "platform/fence.h"
#include "platform/platform.h"

#include <stdbool.h>

#define MB_EC_WAITERS 0x80000000u


/*
 * Wake every sleeper. The caller made its state change (a commit, a
 * release) with a seq_cst store; this seq_cst load pairs with the waiter's
 * seq_cst fetch_or and re-check (Dekker): either we see WAITERS, or the
 * waiter sees our change. On x86 that is one xchg and a plain load, where a
 * separate fence would cost an mfence.
 */
static inline bool mb_ec_signal(_Atomic uint32_t *ec)
{
	if (atomic_load_explicit(ec, memory_order_seq_cst) & MB_EC_WAITERS) {
		atomic_fetch_and_explicit(ec, ~MB_EC_WAITERS, memory_order_relaxed);
		/* Release: pairs with the seq_cst fetch_or of a waiter's next
		 * mb_ec_prepare; the count itself carries no data (a waiter
		 * re-checks its state with its own ordering). */
		atomic_fetch_add_explicit(ec, 1, memory_order_release);
		mb_futex_wake_all(ec);
		return true; /* someone was waiting */
	}
	return false;
}

/*
 * The same after a release store that a sleeper re-checks once it has
 * called mb_ec_prepare and mb_fence_heavy: the asymmetric version of the
 * Dekker pair above (fence.h), for the per-message path.
 */
static inline bool mb_ec_signal_light(_Atomic uint32_t *ec)
{
	mb_fence_light();
	/* Relaxed: ordered after the caller's store by the fence (or by the
	 * sleeper's membarrier). */
	if (atomic_load_explicit(ec, memory_order_relaxed) & MB_EC_WAITERS) {
		atomic_fetch_and_explicit(ec, ~MB_EC_WAITERS, memory_order_relaxed);
		/* Release: as in mb_ec_signal. */
		atomic_fetch_add_explicit(ec, 1, memory_order_release);
		mb_futex_wake_all(ec);
		return true;
	}
	return false;
}

static inline void mb_ec_signal2(_Atomic uint32_t *a, _Atomic uint32_t *b)
{
	mb_ec_signal(a);
	mb_ec_signal(b);
}

/* Spin phase of a wait: true while it lasts. Reads the clock only every
 * 64 rounds (a read costs tens of ns) and pauses once per round, so a
 * spinning waiter sees a new message within a few tens of ns. */
struct mb_spin {
	uint64_t until;
	unsigned rounds;
};

/* Spin rounds between two yields of the CPU while a waiter spins. */
#define MB_SPIN_YIELD_ROUNDS 128u
/* Spin rounds between two looks at the handle's links (the spin hook). */
#define MB_SPIN_LINK_ROUNDS 32u

static inline bool mb_spinning(struct mb_spin *s, uint64_t spin_ns)
{
	if (!spin_ns)
		return false;
	if (s->rounds++ % 64 == 0) {
		uint64_t now = mb_now_ns();
		if (!s->until)
			s->until = now + spin_ns;
		else if (now >= s->until)
			return false;
	}
	mb_cpu_relax();
	return true;
}

/* Wake unconditionally (a closing handle, a reclaimed peer). */
static inline void mb_ec_kick(_Atomic uint32_t *ec)
{
	/* seq_cst: after the caller's state change (a shutdown flag, a reaped
	 * peer), as mb_ec_signal's load: pairs with mb_ec_prepare's fetch_or; a
	 * sleeper woken by the futex re-checks. */
	atomic_fetch_add_explicit(ec, 1, memory_order_seq_cst);
	mb_futex_wake_all(ec);
}

/*
 * Announce a sleeper; returns the value to pass to mb_ec_sleep. The caller
 * must re-check its condition after this and before sleeping.
 */
static inline uint32_t mb_ec_prepare(_Atomic uint32_t *ec)
{
	/* seq_cst: the waiter's half of the Dekker pair with the seq_cst load
	 * in mb_ec_signal (or the light fence plus mb_fence_heavy, fence.h):
	 * the caller's re-check sees the state change, or the signaller sees
	 * WAITERS. */
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
