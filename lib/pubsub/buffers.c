/* buffers.c - allocation and publication of large buffers; see buffers.h. */
#include "shm/live.h"
#include "pubsub/buffers.h"
#include "platform/crash.h"
#include "ring/ring.h"
#include "pubsub/bufpool.h"
#include "pubsub/drain.h"

#include <stdlib.h>
#include <string.h>

/* Is buffer state w free to take? refresh: recompute a stale gate;
 * liveness: also check the readers holding it back (system calls). */
static bool reusable(msgbus_bus *b, uint64_t w, bool refresh, bool liveness)
{
	if (w == MB_BUF_FREE)
		return true;
	if (MB_BUF_KIND(w) == 2) {
		uint32_t t = MB_BUF_TOPIC(w);
		if (t >= b->cfg.max_subjects)
			return true; /* corrupt: nobody can read it */
		/* Acquire: pairs with the release CAS of gate in mb_ring_gate
		 * (ring.c): the readers whose releases it was computed from are
		 * done with the buffer before we take it. */
		uint64_t gate = refresh ? mb_ring_gate(b, t)
		                        : atomic_load_explicit(&mb_topic_at(b, t)->gate,
		                                               memory_order_acquire);
		if (mb_seq_diff(gate & MB_SEQ_MASK, MB_BUF_SEQ(w)) > 0)
			return true;
		if (!liveness)
			return false;
		/* A dead reader may be what holds the gate there. */
		mb_ring_check_laggards(b, t, gate);
		gate = mb_ring_gate(b, t);
		return mb_seq_diff(gate & MB_SEQ_MASK, MB_BUF_SEQ(w)) > 0;
	}
	if (MB_BUF_KIND(w) == 3) {
		/* SHARED: the last reference frees it. A publisher that died
		 * holding its own one has it dropped by its reaper. */
		uint32_t owner = MB_BUF_OWNER(w);
		if (liveness && owner != b->self && owner < b->cfg.max_participants)
			(void)mb_part_alive(b, owner);
		return false;
	}
	if (MB_BUF_KIND(w) == 1 && liveness) {
		/* Loaned by the dead: its reaper frees the buffer while it
		 * holds the dead slot. Taking it here by CAS could take it
		 * from a new participant at the same index. */
		uint32_t owner = MB_BUF_OWNER(w);
		if (owner >= b->cfg.max_participants)
			return true; /* corrupt: nobody can hold it */
		if (owner != b->self && !mb_part_alive(b, owner))
			mb_crash_point("buf_owner_dead");
	}
	return false;
}

/* Take the first reusable buffer from the bus-wide hint on: buffers are
 * recycled in the order they were taken, whichever handle takes them, so
 * a published one lives as long as the pool allows, for the lossy readers
 * that the gate does not count. */
static bool try_take(msgbus_bus *b, bool refresh, bool liveness, uint32_t *idx,
                     uint32_t *gen)
{
	uint32_t n = b->cfg.large_buffers;
	/* Relaxed, here and below: a hint, untrusted (taken modulo n); the
	 * state CAS decides who owns a buffer. */
	uint32_t start = atomic_load_explicit(&b->hdr->buf_next, memory_order_relaxed);
	for (uint32_t k = 0; k < n; k++) {
		uint32_t i = (start + k) % n;
		struct mb_bufctl *bc = mb_bufctl_at(b, i);
		/* Acquire: pairs with the release that freed it
		 * (bufpool.c:mb_buf_free, the frees in call.c and live.c): its
		 * last users are done. The CAS (seq_cst by default) is the race
		 * with other takers; acquire is what it needs. */
		uint64_t w = atomic_load_explicit(&bc->state, memory_order_acquire);
		if (!reusable(b, w, refresh, liveness))
			continue;
		if (!atomic_compare_exchange_strong(&bc->state, &w, MB_BUF_LOANED(b->self)))
			continue;
		/* Relaxed: readers compare gen relaxed, and the record or
		 * reply that names it is published by its own release. */
		*gen = atomic_fetch_add_explicit(&bc->gen, 1, memory_order_relaxed) + 1;
		*idx = i;
		atomic_store_explicit(&b->hdr->buf_next, (i + 1) % n, memory_order_relaxed);
		return true;
	}
	return false;
}

/* A buffer just taken: its pages allocated (once for the bus), and the
 * reference count of the publisher that will share it. */
static int taken(msgbus_bus *b, uint32_t idx)
{
	struct mb_bufctl *bc = mb_bufctl_at(b, idx);
	/* Acquire: pairs with the release store below by whoever backed it. */
	if (!atomic_load_explicit(&bc->backed, memory_order_acquire)) {
		int rc = mb_seg_back(b, b->geo.bufdata + (uint64_t)idx * b->geo.buf_stride,
		                     b->geo.buf_stride);
		if (rc) {
			mb_buf_free(b, idx);
			return rc;
		}
		/* Release: pairs with the acquire above: the pages are in
		 * place. */
		atomic_store_explicit(&bc->backed, 1, memory_order_release);
	}
	/* Relaxed: published with the buffer by the SHARED state store. */
	atomic_store_explicit(&bc->refs, MB_BUF_PUB_BIAS, memory_order_relaxed);
	return 0;
}

/* Shared buffers come back when their readers release them; a dead
 * reader's references go when it is reaped, which this asks for: every
 * owner of a subscription slot is checked (system calls: slow path). */
static void reap_dead_readers(msgbus_bus *b)
{
	for (uint32_t s = 0; s < b->cfg.max_subs; s++) {
		struct mb_subslot *ss = mb_subslot_at(b, s);
		/* Relaxed: only an owner to ask about; reaping re-reads. */
		uint64_t w = atomic_load_explicit(&ss->word, memory_order_relaxed);
		if (MB_SUBW_STATE(w) == MB_SUB_ACTIVE && !(MB_SUBW_FLAGS(w) & MB_SUBF_QUEUE)) {
			(void)mb_part_alive(b, MB_SUBW_OWNER(w));
			continue;
		}
		/* A free slot's inbox may still hold records (a publisher
		 * that raced the unsubscribe, a walk a live writer stopped):
		 * take the slot for the walk, so no subscriber does meanwhile. */
		/* The CAS: seq_cst by default, the race with mb_slot_reserve's
		 * CAS; the store back after the walk (seq_cst, a release)
		 * orders our drain before the slot's next reservation. */
		if (MB_SUBW_STATE(w) != MB_SUB_FREE ||
		    !atomic_compare_exchange_strong(&ss->word, &w,
		                                    mb_subw(MB_SUBW_GEN(w), b->self, 0,
		                                            MB_SUB_RESERVED)))
			continue;
		pthread_mutex_lock(&b->reap_lock);
		mb_inbox_drain_dead(b, s);
		pthread_mutex_unlock(&b->reap_lock);
		atomic_store(&ss->word, w);
	}
}

int mb_buf_alloc(msgbus_bus *b, uint64_t deadline, uint32_t *idx, uint32_t *gen)
{
	for (unsigned round = 0;; round++) {
		if (mb_closing(b))
			return MSGBUS_ECLOSED; /* naps are short: no wake needed */
		/* Liveness checks cost system calls: the first slow round
		 * and then every 16th. */
		if (round % 16 == 1)
			reap_dead_readers(b);
		if (try_take(b, round > 0, round % 16 == 1, idx, gen))
			return taken(b, *idx);
		if (deadline == MB_NO_WAIT && round > 0)
			return MSGBUS_EAGAIN;
		if (round > 0) {
			/* Buffers come back as readers release; nobody signals
			 * that, so poll gently. */
			if (mb_now_ns() >= deadline)
				return MSGBUS_ETIMEDOUT;
			mb_nap_us(round < 16 ? 10 : 500);
		}
	}
}

int mb_buf_publish(msgbus_bus *b, uint32_t t, uint32_t idx, uint32_t gen, uint32_t len,
                   uint64_t deadline)
{
	uint64_t pos;
	int rc = mb_ring_claim(b, t, deadline, &pos);
	if (rc)
		return rc;
	struct mb_slot *sl = mb_slot_at(b, t, pos);
	sl->len = len;
	sl->kind = MB_KIND_LARGE;
	sl->pub = (uint16_t)b->self;
	sl->buf = idx;
	sl->buf_gen = gen;
	/* From here the buffer lives until readers pass pos, even if we die.
	 * Release: pairs with the acquire load of state in try_take, so a
	 * taker that finds it reusable (the gate past pos) sees our writes to
	 * it done. */
	atomic_store_explicit(&mb_bufctl_at(b, idx)->state, MB_BUF_PUBLISHED(t, pos),
	                      memory_order_release);
	mb_ring_commit(b, t, pos);
	return 0;
}
