/* mark.c - commit marks; see mark.h. */
#include "pubsub/mark.h"
#include "platform/platform.h"

#include <string.h>

unsigned mb_mark_set(msgbus_bus *b, uint64_t seq)
{
	struct mb_part *p = mb_part_at(b, b->self);

	for (;;) {
		/* Relaxed: the CAS below decides. */
		uint32_t used = atomic_load_explicit(&b->marks_used, memory_order_relaxed);
		unsigned i = 0;

		while (i < MB_COMMIT_MARKS && (used >> i & 1))
			i++;
		if (i == MB_COMMIT_MARKS) {
			mb_yield_cpu(); /* every mark is in a commit loop: short */
			continue;
		}
		/* Acquire: pairs with the release in mb_mark_clear, so the last
		 * user's clearing store comes before our store (process-local). */
		if (!atomic_compare_exchange_weak_explicit(&b->marks_used, &used, used | 1u << i,
		                                           memory_order_acquire,
		                                           memory_order_relaxed))
			continue;
		/* Release: every record of the publish is filled (and its large
		 * buffer noted) before the mark; pairs with the acquire in
		 * mb_mark_keep. A reaper runs only after our death, when every
		 * store we made, the commits after this one too, is visible. */
		atomic_store_explicit(&p->commit_mark[i], seq + 1, memory_order_release);
		return i;
	}
}

void mb_mark_clear(msgbus_bus *b, unsigned i)
{
	/* Relaxed: every commit is done; a reaper that still sees the mark
	 * finds no CLAIMED record of the publish to commit. */
	atomic_store_explicit(&mb_part_at(b, b->self)->commit_mark[i], 0, memory_order_relaxed);
	/* Release: pairs with the acquire CAS in mb_mark_set (process-local). */
	atomic_fetch_and_explicit(&b->marks_used, ~(1u << i), memory_order_release);
}

bool mb_mark_keep(void *bus, uint32_t owner, const struct mb_inbox_msg *m)
{
	msgbus_bus *b = bus;
	struct mb_rec_pfx pfx;

	if (owner >= b->cfg.max_participants || m->subject_len < sizeof(pfx))
		return false;
	memcpy(&pfx, m->subject, sizeof(pfx)); /* once: a hostile writer may change it */
	if (pfx.seq == UINT64_MAX)
		return false; /* seq + 1 would read as a free mark */
	for (unsigned i = 0; i < MB_COMMIT_MARKS; i++) {
		/* Acquire: pairs with the release in mb_mark_set: the record
		 * was filled before the mark. */
		uint64_t mark = atomic_load_explicit(&mb_part_at(b, owner)->commit_mark[i],
		                                     memory_order_acquire);
		if (mark == pfx.seq + 1)
			return true;
	}
	return false;
}
