/* doorbell.c - ringing a bell (doorbell.h). */
#include "platform/doorbell.h"

void mb_bell_ring(struct mb_bell *bell)
{
	/* Relaxed: the CAS below decides. */
	uint32_t st = atomic_load_explicit(&bell->state, memory_order_relaxed);

	if (st != MB_BELL_ARMED)
		return; /* OFF, RUNG already, or not a state at all */
	/* Acquire on success: pairs with the seq_cst store of ARMED in
	 * mb_bell_arm, so the id we read is the one armed with. Relaxed on
	 * failure: someone else rang it, or its owner let go. */
	if (!atomic_compare_exchange_strong_explicit(&bell->state, &st, MB_BELL_RUNG,
	                                             memory_order_acquire, memory_order_relaxed))
		return;
	mb_doorbell_ring(atomic_load_explicit(&bell->id, memory_order_relaxed));
}
