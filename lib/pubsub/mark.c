/* mark.c - commit marks; see mark.h. */
#include "pubsub/mark.h"
#include "platform/platform.h"

#include <string.h>

unsigned mb_mark_set(msgbus_bus *b, uint64_t seq, uint32_t put)
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
		/* Relaxed: published by the mark's release store below. */
		atomic_store_explicit(&p->commit_put[i], put, memory_order_relaxed);
		/* Release: every record of the publish is filled (and its large
		 * buffer SHARED), and commit_put[i] written, before the mark;
		 * pairs with the acquire in mb_mark_keep. A reaper runs only
		 * after our death, when every store we made, the commits after
		 * this one too, is visible. */
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

/* The marked large record m of dead owner: are its buffer's references
 * counted, i.e. did owner store pub_put = put (route.c, commit_all)? The
 * owner is dead, so every store it made is visible: pub_put is final, and
 * equal to put exactly when the store was made (before it, pub_put held
 * the references noted before this publish's records, fewer than put).
 * While the records are undecided their buffer cannot be freed: without
 * the store, its reaper's drop comes only after every inbox is settled
 * (live.c, reap); with it, pub_put counts them. The record, mark and
 * buffer words are untrusted: a bad index, generation or state aborts. */
static bool large_counted(msgbus_bus *b, uint32_t owner, const struct mb_inbox_msg *m,
                          uint32_t put)
{
	struct mb_rec_large desc;

	if (m->payload_len < sizeof(desc))
		return false;
	memcpy(&desc, m->payload, sizeof(desc)); /* once: validated below */
	if (desc.buf >= b->cfg.large_buffers)
		return false;
	struct mb_bufctl *bc = mb_bufctl_at(b, desc.buf);
	/* Acquire: pairs with the release store of SHARED in route.c
	 * (share), after which pub_put is read. */
	if (atomic_load_explicit(&bc->state, memory_order_acquire) != MB_BUF_SHARED(owner))
		return false;
	/* Relaxed: the generation of this loan, set before the buffer
	 * was loaned; a mismatch is another use of the buffer. */
	if (atomic_load_explicit(&bc->gen, memory_order_relaxed) != desc.buf_gen)
		return false;
	/* Relaxed: final, the owner is dead (see above). */
	return put != 0 && atomic_load_explicit(&bc->pub_put, memory_order_relaxed) == put;
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
		struct mb_part *p = mb_part_at(b, owner);
		/* Acquire: pairs with the release in mb_mark_set: the record
		 * was filled, and commit_put[i] written, before the mark. */
		uint64_t mark = atomic_load_explicit(&p->commit_mark[i], memory_order_acquire);
		if (mark != pfx.seq + 1)
			continue;
		if (pfx.kind != MB_REC_LARGE)
			return true;
		/* Relaxed: ordered by the acquire of the mark. */
		return large_counted(b, owner, m,
		                     atomic_load_explicit(&p->commit_put[i], memory_order_relaxed));
	}
	return false;
}
