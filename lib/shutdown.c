/*
 * shutdown.c - msgbus_shutdown: end every wait of one handle, from any
 * thread or from a signal handler.
 *
 * Async-signal-safe by construction: one atomic store, then futex wakes on
 * eventcounts at fixed places of the segment (no lock, no allocation, no
 * walk of a list another thread may be changing). Each wait loop of the
 * handle re-checks the flag after mb_ec_prepare and after every wake, so
 * either it sees the flag or our mb_ec_signal sees its WAITERS bit.
 */
#include "shm/handle.h"
#include "ring/inbox.h"
#include "pubsub/route.h"
#include "platform/wait.h"

#include <errno.h>

/* Wake the sleepers of every eventcount a waiter of this handle can sleep
 * on. Other handles' waiters woken here re-check and sleep again. Only
 * entries in use are touched: the pages of the others may not be backed
 * yet (mb_seg_back), and a first touch from a signal handler must not
 * allocate them. */
static void wake_all_waits(msgbus_bus *b)
{
	for (uint32_t s = 0; s < b->cfg.max_subs; s++) {
		/* Relaxed: a slot taken after this load has no waiter of ours
		 * that could miss the flag (it is checked after each wake). */
		uint64_t w = atomic_load_explicit(&mb_subslot_at(b, s)->word, memory_order_relaxed);
		if (MB_SUBW_STATE(w) == MB_SUB_FREE)
			continue;
		/* Inboxes: our receivers (data), our publishers (space). */
		struct mb_inbox_ctl *ctl =
			(struct mb_inbox_ctl *)((char *)b->seg.base + mb_inbox_ctl_off(b, s));
		mb_ec_signal2(&ctl->data_ec, &ctl->space_ec);
	}
	for (uint32_t t = 0; t < b->cfg.max_subjects; t++) {
		/* Service rings: workers (data), requesters (space); only those
		 * this handle knows, the only ones its waiters can use. Acquire:
		 * pairs with the release in mb_topic_refresh (a fixed array,
		 * never reallocated while the handle is open). */
		if (!atomic_load_explicit(&b->topics[t].known, memory_order_acquire))
			continue;
		struct mb_topic *tp = mb_topic_at(b, t);
		mb_ec_signal2(&tp->data_ec, &tp->space_ec);
	}
	for (uint32_t i = 0; i < MB_CALLS; i++)
		mb_ec_signal(&mb_call_at(b, b->self, i)->ec);
	mb_ec_signal2(&mb_part_at(b, b->self)->reply_ec, &b->hdr->any_ec);
}

int msgbus_shutdown(msgbus_bus *bus)
{
	if (!bus)
		return MSGBUS_EINVAL;
	int saved = errno; /* a signal handler must leave errno as it was */
	/* seq_cst: the first half of the Dekker pair with each waiter's
	 * mb_ec_prepare and re-check of the flag (mb_closing); the loads of
	 * mb_ec_signal below are the second half. */
	atomic_store_explicit(&bus->closing, 1, memory_order_seq_cst);
	if (!bus->forked) /* a forked copy's segment is not ours to touch */
		wake_all_waits(bus);
	errno = saved;
	return 0;
}
