/* slock.c - the contended path of slock.h's lock. */
#include "platform/slock.h"

/* Spin rounds before a sleep: the holder of a link's sending side keeps
 * it for tens of nanoseconds a message, unless it waits in a write. */
#define SLOCK_SPINS 512u
#define SLOCK_YIELD_ROUNDS 64u
/* A first sleep without the heavy fence lasts this long at most. */
#define SLOCK_NAP_NS 50000u

void mb_slock_wait(struct mb_slock *l)
{
	for (unsigned i = 1; i <= SLOCK_SPINS; i++) {
		/* Relaxed: a look before the exchange, which re-checks. */
		if (!atomic_load_explicit(&l->held, memory_order_relaxed) && mb_slock_try(l))
			return;
		if (i % SLOCK_YIELD_ROUNDS == 0)
			mb_yield_cpu();
	}
	for (bool fenced = false;; fenced = true) {
		uint32_t v = mb_ec_prepare(&l->ec);
		/* After a first bounded sleep: a heavy fence, so the holder's
		 * release sees us (fence.h). Without membarrier its light
		 * fence is a full one anyway. */
		bool exact = fenced && mb_fence_heavy();
		if (mb_slock_try(l))
			return;
		uint64_t now = mb_now_ns();
		mb_ec_sleep(&l->ec, v, now, exact ? UINT64_MAX : now + SLOCK_NAP_NS);
	}
}
