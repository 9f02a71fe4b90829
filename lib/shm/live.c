/*
 * live.c - participants, their liveness, and reclaiming what the dead held.
 *
 * A slot is owned by whoever the backend lets take it (an OFD lock for
 * shm://), so liveness is exact: a stopped process keeps its lock and is
 * alive; a killed one loses it at once. Whoever takes a dead slot reclaims
 * it; every step is idempotent, so a reclaimer that dies midway leaves work
 * the next one repeats.
 */
#include "shm/handle.h"
#include "shm/live.h"
#include "platform/crash.h"
#include "platform/doorbell.h"
#include "platform/wait.h"

#include <unistd.h>

/* Buffer bc was SHARED by participant idx, now dead: if it died before
 * dropping its own reference (the bias, less the records it put), drop it
 * now. Only the holder of slot idx can (we are): while the bias is there
 * nobody frees the buffer, so the state read after refs is of the same
 * use of it. A corrupt count leaves the buffer held rather than freed
 * under its readers. */
static void drop_dead_publisher_ref(msgbus_bus *b, uint32_t i, uint32_t idx)
{
	struct mb_bufctl *bc = mb_bufctl_at(b, i);
	/* Acquire: pairs with the readers' acq_rel decrements (route.c). */
	uint32_t r = atomic_load_explicit(&bc->refs, memory_order_acquire);
	for (;;) {
		if (r < MB_BUF_PUB_BIAS / 2)
			return; /* the publisher dropped it */
		/* Acquire: pairs with the release store of SHARED in route.c (share,
		 * before the first record; pub_put is final: the publisher is dead). */
		if (atomic_load_explicit(&bc->state, memory_order_acquire) != MB_BUF_SHARED(idx))
			return;
		uint32_t put = atomic_load_explicit(&bc->pub_put, memory_order_relaxed);
		uint32_t bias = MB_BUF_PUB_BIAS - put;
		if (put > b->cfg.max_subs || r < bias)
			return;
		/* acq_rel: as the publisher's own drop in deliver_large. */
		if (atomic_compare_exchange_weak_explicit(&bc->refs, &r, r - bias,
		                                          memory_order_acq_rel,
		                                          memory_order_acquire)) {
			if (r == bias)
				atomic_store_explicit(&bc->state, MB_BUF_FREE, memory_order_release);
			return;
		}
	}
}

/* Free the loaned buffers, the shared ones' references and the control
 * lock of participant idx. Only while holding its slot: once the index is
 * reused, the same words may name the new participant. Caller owns slot
 * idx. */
static void release_held(msgbus_bus *b, uint32_t idx)
{
	for (uint32_t i = 0; i < b->cfg.large_buffers; i++) {
		struct mb_bufctl *bc = mb_bufctl_at(b, i);
		/* Relaxed: the CAS decides. The CAS: seq_cst (release would
		 * do), pairs with the acquire in pubsub/buffers.c:try_take. */
		uint64_t w = atomic_load_explicit(&bc->state, memory_order_relaxed);
		if (MB_BUF_KIND(w) == 1 && MB_BUF_OWNER(w) == idx)
			atomic_compare_exchange_strong(&bc->state, &w, MB_BUF_FREE);
		else if (w == MB_BUF_SHARED(idx))
			drop_dead_publisher_ref(b, i, idx);
	}
	uint32_t owner = idx + 1;
	/* seq_cst (release would do): frees a dead holder's lock, as
	 * control.c:mb_ctl_unlock; pairs with the CAS in ctl_try. */
	atomic_compare_exchange_strong(&b->hdr->ctl_owner, &owner, 0);
}

/* Give back everything participant idx held: subscriptions, claimed
 * slots, loaned buffers, the control lock. Caller owns slot idx. */
static void reap(msgbus_bus *b, uint32_t idx)
{
	for (uint32_t s = 0; s < b->cfg.max_subs; s++) {
		struct mb_subslot *ss = mb_subslot_at(b, s);
		/* Relaxed: the CAS decides. */
		uint64_t w = atomic_load_explicit(&ss->word, memory_order_relaxed);
		if (MB_SUBW_STATE(w) != MB_SUB_FREE && MB_SUBW_OWNER(w) == idx) {
			/* Its inbox's records give their buffer references
			 * back, and waiting publishers get room, before the
			 * slot can have a new consumer. */
			if (MB_SUBW_STATE(w) == MB_SUB_ACTIVE &&
			    !(MB_SUBW_FLAGS(w) & (MB_SUBF_QUEUE | MB_SUBF_ALIAS)))
				b->reap_hooks->inbox_drain(b, s); /* pubsub/reap.c */
			/* Release: the drain is done before the slot's next
			 * reservation; pairs with the acquire CAS in
			 * pubsub/subscribe.c:mb_slot_reserve. Relaxed on
			 * failure: the slot changed hands, not ours to free. */
			atomic_compare_exchange_strong_explicit(
			        &ss->word, &w, mb_subw(MB_SUBW_GEN(w), 0, 0, MB_SUB_FREE),
			        memory_order_release, memory_order_relaxed);
		}
		/* A service slot outlives its workers: the next one reuses it.
		 * Relaxed: the interest_gen bump below publishes it. */
		if (MB_SUBW_FLAGS(w) & MB_SUBF_QUEUE)
			atomic_fetch_and_explicit(&ss->members[idx / 64], ~(1ull << (idx % 64)),
			                          memory_order_relaxed);
	}
	/* Its half-written records and a reserve lock it held in any inbox go
	 * now: once its index is reused, waiters would take it for alive. */
	for (uint32_t s = 0; s < b->cfg.max_subs; s++)
		b->reap_hooks->inbox_owner_dead(b, s, idx); /* pubsub/reap.c */
	/* Its calls end: a worker's reply to them finds the entry free.
	 * seq_cst by default (release would do): pairs with a late worker's
	 * CAS in reqrep/serve.c:respond, which fails on it. */
	for (uint32_t i = 0; i < MB_CALLS; i++)
		atomic_store(&mb_call_at(b, idx, i)->word, 0);
	/* Calls it was answering fail now: a new owner of its slot would look
	 * alive to their requesters forever. */
	for (uint32_t p = 0; p < b->cfg.max_participants; p++) {
		for (uint32_t i = 0; i < MB_CALLS; i++) {
			struct mb_call *e = mb_call_at(b, p, i);
			/* Relaxed: the CAS decides. The CAS: seq_cst, the
			 * race with (it pairs with) the requester's CAS in
			 * reqrep/call.c:abandon; its kick wakes the requester,
			 * which re-reads with acquire. */
			uint64_t w = atomic_load_explicit(&e->word, memory_order_relaxed);
			uint32_t st = MB_CALLW_STATE(w);
			if ((st == MB_CALL_TAKEN || st == MB_CALL_WRITING) && MB_CALLW_WORKER(w) == idx &&
			    atomic_compare_exchange_strong(&e->word, &w,
			            mb_callw(MB_CALLW_CORR(w), idx, MB_CALL_WORKER_DIED))) {
				mb_ec_kick(&e->ec);
				mb_bells_ring(&e->ec, &e->bell, 1); /* msgbus_call_fd */
			}
		}
	}
	mb_crash_point("mid_cleanup");
	for (uint32_t t = 0; t < b->cfg.max_subjects; t++) {
		struct mb_topic *tp = mb_topic_at(b, t);
		/* seq_cst by default (acquire would do): pairs with the release
		 * store of READY in control.c:topic_create. */
		if (atomic_load(&tp->state) != MB_TOPIC_READY)
			continue;
		for (uint64_t i = 0; i < b->cfg.ring_slots; i++) {
			struct mb_slot *sl = mb_slot_at(b, t, i);
			/* Relaxed: the CASes decide. ABORTED: seq_cst (release
			 * would do), pairs with the acquire loads of stamps in
			 * ring.c and reqrep/serve.c; COMMITTED: as
			 * ring.c:mb_ring_commit, for the next taker. */
			uint64_t st = atomic_load_explicit(&sl->stamp, memory_order_relaxed);
			uint32_t state = MB_STAMP_STATE(st);
			if (MB_STAMP_OWNER(st) != idx)
				continue;
			/* A half-written message is dropped; a request a dead
			 * worker was taking goes back to the queue. */
			if (state == MB_ST_CLAIMED)
				atomic_compare_exchange_strong(&sl->stamp, &st,
				        mb_stamp(MB_STAMP_SEQ(st), idx, MB_ST_ABORTED));
			else if (state == MB_ST_TAKEN)
				atomic_compare_exchange_strong(&sl->stamp, &st,
				        mb_stamp(MB_STAMP_SEQ(st), idx, MB_ST_COMMITTED));
		}
		/* Its workers' bells (reqrep/service_fd.c) are free again. Only
		 * the owner: the state is the next holder's, which sets it
		 * after its own CAS of the owner. Relaxed: as there. */
		for (uint32_t k = 0; k < MB_TOPIC_BELLS; k++) {
			uint32_t o = idx + 1;
			(void)atomic_compare_exchange_strong_explicit(&tp->bells[k].owner, &o, 0,
			                                              memory_order_relaxed,
			                                              memory_order_relaxed);
		}
		/* Publishers gated by a dead reader and readers stuck behind
		 * a dead writer re-check now. */
		mb_ec_kick(&tp->space_ec);
		mb_ec_kick(&tp->data_ec);
	}
	release_held(b, idx);
	/* Release: pairs with the acquire in route.c's lookup. */
	atomic_fetch_add_explicit(&b->hdr->interest_gen, 1, memory_order_release);
	mb_ec_kick(&b->hdr->any_ec);
}

int mb_part_register(msgbus_bus *b)
{
	pthread_mutex_lock(&b->reap_lock);
	for (uint32_t i = 0; i < b->cfg.max_participants && i <= MB_OWNER_MAX; i++) {
		if (b->seg.ops->slot_try(&b->seg, i))
			continue;
		struct mb_part *p = mb_part_at(b, i);
		/* The participant's state: seq_cst by default, here, in
		 * mb_part_unregister and mb_part_alive. The store of ACTIVE
		 * (a release) pairs with the acquire in introspect.c, which
		 * then reads pid and flags. The loads, and the stores of
		 * FREE, are made by the holder of the slot's lock (an OFD
		 * lock, or inproc's owned flag), which orders them: they pair
		 * with nothing, nor do the stores of pid and flags (release
		 * would do for ACTIVE). They stay seq_cst for ThreadSanitizer:
		 * it cannot see an OFD lock order two handles of one process,
		 * and takes its order between their reaps from these. */
		if (atomic_load(&p->state) != MB_PART_FREE)
			reap(b, i); /* a previous owner died without closing */
		atomic_store(&p->pid, (uint32_t)getpid());
		atomic_store(&p->flags, 0);
		/* Relaxed: a dead predecessor's marks, read only by reapers
		 * of this index, which come after our death (exit orders it). */
		for (uint32_t m = 0; m < MB_COMMIT_MARKS; m++) {
			atomic_store_explicit(&p->commit_mark[m], 0, memory_order_relaxed);
			atomic_store_explicit(&p->commit_put[m], 0, memory_order_relaxed);
		}
		atomic_store(&p->state, MB_PART_ACTIVE);
		b->self = i;
		pthread_mutex_unlock(&b->reap_lock);
		return 0;
	}
	pthread_mutex_unlock(&b->reap_lock);
	return MSGBUS_ELIMIT;
}

void mb_part_unregister(msgbus_bus *b)
{
	pthread_mutex_lock(&b->reap_lock);
	reap(b, b->self);
	atomic_store(&mb_part_at(b, b->self)->state, MB_PART_FREE);
	b->seg.ops->slot_drop(&b->seg, b->self);
	pthread_mutex_unlock(&b->reap_lock);
}

bool mb_part_alive(msgbus_bus *b, uint32_t idx)
{
	if (idx == b->self)
		return true;
	if (idx >= b->cfg.max_participants)
		return false; /* corrupt owner field: nobody to wait for */
	pthread_mutex_lock(&b->reap_lock);
	if (b->seg.ops->slot_try(&b->seg, idx)) {
		pthread_mutex_unlock(&b->reap_lock);
		return true;
	}
	struct mb_part *p = mb_part_at(b, idx);
	if (atomic_load(&p->state) != MB_PART_FREE) {
		reap(b, idx);
		atomic_store(&p->state, MB_PART_FREE);
	} else {
		release_held(b, idx); /* corrupt: held things, yet marked FREE */
	}
	b->seg.ops->slot_drop(&b->seg, idx);
	pthread_mutex_unlock(&b->reap_lock);
	return false;
}
