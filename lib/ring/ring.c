/*
 * ring.c - claiming and committing slots of a subject ring.
 *
 * Tail is a hint: the truth is in the slot stamps. A publisher reads tail t,
 * and if the gate allows it, CASes slot t's stamp from "last lap, done" to
 * (t, me, CLAIMED), then helps tail to t + 1. Whoever sees a stamp already at
 * t helps tail along, so a publisher that dies after its claim never blocks
 * the others; its slot is aborted by whoever finds its owner dead.
 */
#include "shm/live.h"
#include "ring/ring.h"
#include "platform/doorbell.h"
#include "platform/wait.h"

uint64_t mb_ring_gate(msgbus_bus *b, uint32_t t)
{
	struct mb_topic *tp = mb_topic_at(b, t);
	/* seq_cst by default (acquire would do): a hint; pairs with the CAS
	 * that moves tail in mb_ring_claim. */
	uint64_t tail = atomic_load(&tp->tail);
	uint64_t g = tail;
	for (uint32_t s = 0; s < b->cfg.max_subs; s++) {
		if (s % 64 == 0) {
			uint64_t m = atomic_load_explicit(&tp->cursor_mask[s / 64],
			                                  memory_order_acquire);
			if (!m) {
				s += 63;
				continue;
			}
		}
		if (!(atomic_load_explicit(&tp->cursor_mask[s / 64], memory_order_relaxed) >>
		      (s % 64) & 1))
			continue;
		struct mb_cursor *c = mb_cursor_at(b, t, s);
		/* Acquire, gen and the slot word: pairs with the stores of the
		 * cursor in pubsub/subscribe.c:mb_join_topics and of the slot
		 * word (ACTIVE) in reqrep/serve.c:msgbus_serve. */
		uint64_t cg = atomic_load_explicit(&c->gen, memory_order_acquire);
		if (!cg)
			continue;
		uint64_t w = atomic_load_explicit(&mb_subslot_at(b, s)->word, memory_order_acquire);
		if (MB_SUBW_STATE(w) == MB_SUB_FREE || MB_SUBW_GEN(w) != cg ||
		    (MB_SUBW_FLAGS(w) & MB_SUBF_LOSSY))
			continue;
		/* Acquire: the reader's reads of the slots happen before our
		 * overwrite of them. */
		uint64_t r = atomic_load_explicit(&c->release, memory_order_acquire);
		if (r < g)
			g = r;
	}
	/* The gate only moves forward, except to repair a value past tail. */
	/* seq_cst by default; the CAS decides: pairs with nothing (relaxed
	 * would do). The CAS's release pairs with the acquire load of gate in
	 * mb_ring_claim: the gate it publishes was computed from readers'
	 * releases acquired above. */
	uint64_t old = atomic_load(&tp->gate);
	while ((old < g || old > tail) &&
	       !atomic_compare_exchange_weak_explicit(&tp->gate, &old, g, memory_order_release,
	                                              memory_order_relaxed))
		;
	return old < g || old > tail ? g : old;
}

/* While the ring is full: find the laggards at the gate and check whether
 * their owners are alive; a dead one is reaped and stops gating. */
void mb_ring_check_laggards(msgbus_bus *b, uint32_t t, uint64_t gate)
{
	for (uint32_t s = 0; s < b->cfg.max_subs; s++) {
		struct mb_cursor *c = mb_cursor_at(b, t, s);
		/* Relaxed: only an owner to ask about (mb_part_alive
		 * re-reads). */
		uint64_t cg = atomic_load_explicit(&c->gen, memory_order_relaxed);
		uint64_t w = atomic_load_explicit(&mb_subslot_at(b, s)->word, memory_order_relaxed);
		if (!cg || MB_SUBW_STATE(w) == MB_SUB_FREE || MB_SUBW_GEN(w) != cg)
			continue;
		if (atomic_load_explicit(&c->release, memory_order_relaxed) <= gate)
			mb_part_alive(b, MB_SUBW_OWNER(w));
	}
}

struct waiter {
	uint64_t deadline, next_check;
	struct mb_spin spin;
};

/* One round of waiting for space; 0 to retry, or an error. */
static int wait_space(msgbus_bus *b, uint32_t t, uint64_t tail, struct waiter *w)
{
	struct mb_topic *tp = mb_topic_at(b, t);
	uint64_t n = b->cfg.ring_slots;
	if (w->deadline == MB_NO_WAIT)
		return MSGBUS_EAGAIN;
	if (mb_closing(b))
		return MSGBUS_ECLOSED;
	if (mb_spinning(&w->spin, b->spin_ns))
		return 0;
	uint64_t now = mb_now_ns();
	if (now >= w->deadline)
		return MSGBUS_ETIMEDOUT;
	if (now >= w->next_check) {
		/* Relaxed: a hint; pairs with nothing. */
		mb_ring_check_laggards(b, t, atomic_load_explicit(&tp->gate, memory_order_relaxed));
		w->next_check = now + b->check_ns;
	}
	uint32_t v = mb_ec_prepare(&tp->space_ec);
	/* After mb_ec_prepare: the Dekker pair with the worker's seq_cst
	 * release CAS and mb_ec_signal in reqrep/serve.c:advance_release
	 * (mb_ring_gate's loads of release are acquire only; the periodic
	 * re-check bounds a missed wake). The tail load: seq_cst by default,
	 * only compared. */
	if (tail - mb_ring_gate(b, t) < n || atomic_load(&tp->tail) != tail)
		return 0;
	/* seq_cst (mb_closing): after mb_ec_prepare, the Dekker pair with
	 * msgbus_shutdown's store and wakes. */
	if (mb_closing(b))
		return MSGBUS_ECLOSED;
	uint64_t until = w->next_check < w->deadline ? w->next_check : w->deadline;
	mb_ec_sleep(&tp->space_ec, v, now, until);
	return 0;
}

int mb_ring_claim(msgbus_bus *b, uint32_t t, uint64_t deadline, uint64_t *pos)
{
	struct mb_topic *tp = mb_topic_at(b, t);
	uint64_t n = b->cfg.ring_slots;
	struct waiter w = { deadline, 0, { 0, 0 } };
	for (;;) {
		/* Acquire, tail and gate: pair with the CAS that moves tail
		 * below and the release CAS of gate in mb_ring_gate. */
		uint64_t tail = atomic_load_explicit(&tp->tail, memory_order_acquire);
		uint64_t gate = atomic_load_explicit(&tp->gate, memory_order_acquire);
		if (tail - gate >= n && tail - mb_ring_gate(b, t) >= n) {
			int rc = wait_space(b, t, tail, &w);
			if (rc)
				return rc;
			continue;
		}
		struct mb_slot *sl = mb_slot_at(b, t, tail);
		/* Acquire: pairs with the stores of the slot's last lap
		 * (commit, the taker's ABORTED in reqrep/serve.c): its readers
		 * are done. */
		uint64_t s = atomic_load_explicit(&sl->stamp, memory_order_acquire);
		uint64_t seq = MB_STAMP_SEQ(s);
		if (seq == (tail & MB_SEQ_MASK)) {
			/* Claimed by someone whose tail update we overtook. */
			/* seq_cst by default (release would do): helping tail
			 * along; pairs with the acquire load of tail above. */
			atomic_compare_exchange_strong(&tp->tail, &tail, tail + 1);
			continue;
		}
		if (seq != ((tail - n) & MB_SEQ_MASK)) {
			/* Relaxed: only compared. */
			if (atomic_load_explicit(&tp->tail, memory_order_relaxed) == tail)
				return MSGBUS_EPROTO; /* stamp and tail disagree */
			continue;
		}
		if (MB_STAMP_STATE(s) == MB_ST_CLAIMED || MB_STAMP_STATE(s) == MB_ST_TAKEN) {
			/* Last lap's writer has not committed: only possible
			 * with no lossless reader, which would have waited. */
			if (!mb_part_alive(b, MB_STAMP_OWNER(s))) {
				/* seq_cst by default (release would do): as
				 * live.c's abort of a dead writer's slot, it pairs
				 * with the acquire loads of stamps by readers. */
				atomic_compare_exchange_strong(&sl->stamp, &s,
				        mb_stamp(seq, MB_STAMP_OWNER(s), MB_ST_ABORTED));
				continue;
			}
			uint64_t now = mb_now_ns();
			if (deadline == MB_NO_WAIT)
				return MSGBUS_EAGAIN;
			if (now >= deadline)
				return MSGBUS_ETIMEDOUT;
			if (mb_closing(b))
				return MSGBUS_ECLOSED;
			mb_nap_us(50);
			continue;
		}
		/* Claiming: seq_cst by default, the race with other publishers'
		 * CAS here (it pairs with those); acquire is what it needs (the
		 * last lap's readers are done, via the acquire above). Then
		 * tail, as above. */
		if (atomic_compare_exchange_strong(&sl->stamp, &s,
		                                   mb_stamp(tail, b->self, MB_ST_CLAIMED))) {
			*pos = tail;
			/* Failure means another publisher helped: fine. */
			atomic_compare_exchange_strong(&tp->tail, &tail, tail + 1);
			return 0;
		}
	}
}

void mb_ring_commit(msgbus_bus *b, uint32_t t, uint64_t pos)
{
	struct mb_topic *tp = mb_topic_at(b, t);
	struct mb_slot *sl = mb_slot_at(b, t, pos);
	/* seq_cst (includes release): the payload is visible before the
	 * stamp, and the store is ordered before the eventcount loads. */
	atomic_store_explicit(&sl->stamp, mb_stamp(pos, b->self, MB_ST_COMMITTED),
	                      memory_order_seq_cst);
	if (mb_ec_signal(&tp->data_ec))
		mb_bells_ring(&tp->data_ec, tp->bells, MB_TOPIC_BELLS);
	mb_ec_signal(&b->hdr->any_ec);
}
