/* buffers.c - allocation and publication of large buffers; see buffers.h. */
#include "shm/live.h"
#include "pubsub/buffers.h"
#include "pubsub/publish.h"
#include "platform/crash.h"
#include "ring/ring.h"
#include "pubsub/route.h"
#include "pubsub/sub.h"

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
		uint64_t w = atomic_load_explicit(&bc->state, memory_order_acquire);
		if (!reusable(b, w, refresh, liveness))
			continue;
		if (!atomic_compare_exchange_strong(&bc->state, &w, MB_BUF_LOANED(b->self)))
			continue;
		*gen = atomic_fetch_add(&bc->gen, 1) + 1;
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

void mb_buf_free(msgbus_bus *b, uint32_t idx)
{
	atomic_store_explicit(&mb_bufctl_at(b, idx)->state, MB_BUF_FREE, memory_order_release);
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
	/* From here the buffer lives until readers pass pos, even if we die. */
	atomic_store_explicit(&mb_bufctl_at(b, idx)->state, MB_BUF_PUBLISHED(t, pos),
	                      memory_order_release);
	mb_ring_commit(b, t, pos);
	return 0;
}

/* The public loan interface. */
struct msgbus_buf {
	msgbus_bus *bus;
	uint32_t idx, gen;
	size_t len;
	msgbus_buf *prev, *next; /* the handle's open loans, freed by close */
};

static void loan_unlink(msgbus_buf *l)
{
	msgbus_bus *b = l->bus;
	pthread_mutex_lock(&b->lock);
	if (l->prev)
		l->prev->next = l->next;
	else
		b->loans = l->next;
	if (l->next)
		l->next->prev = l->prev;
	pthread_mutex_unlock(&b->lock);
}

void mb_loans_free(msgbus_bus *b)
{
	while (b->loans) {
		msgbus_buf *l = b->loans;
		b->loans = l->next;
		free(l); /* its buffer returns with our participant slot */
	}
}

int msgbus_loan(msgbus_bus *bus, size_t len, int timeout_ms, msgbus_buf **loan)
{
	if (!bus || !loan)
		return MSGBUS_EINVAL;
	if (len > bus->cfg.max_msg_size)
		return MSGBUS_EMSGSIZE;
	struct msgbus_buf *l = malloc(sizeof(*l));
	if (!l)
		return MSGBUS_ENOMEM;
	int rc = mb_buf_alloc(bus, mb_publish_deadline(timeout_ms), &l->idx, &l->gen);
	if (rc) {
		free(l);
		return rc;
	}
	l->bus = bus;
	l->len = len;
	l->prev = NULL;
	pthread_mutex_lock(&bus->lock);
	l->next = bus->loans;
	if (l->next)
		l->next->prev = l;
	bus->loans = l;
	pthread_mutex_unlock(&bus->lock);
	*loan = l;
	return 0;
}

void *msgbus_loan_data(msgbus_buf *loan)
{
	return loan ? mb_bufdata_at(loan->bus, loan->idx) : NULL;
}

int msgbus_commit(msgbus_buf *loan, const char *subject, size_t len, int timeout_ms)
{
	if (!loan)
		return MSGBUS_EINVAL;
	if (len > loan->len)
		return MSGBUS_EMSGSIZE;
	if (mb_closing(loan->bus))
		return MSGBUS_ECLOSED;
	uint64_t deadline = mb_publish_deadline(timeout_ms);
	int rc = mb_route_publish(loan->bus, subject, NULL, len, loan->idx, loan->gen, deadline);
	if (!rc) {
		loan_unlink(loan);
		free(loan);
	}
	return rc;
}

void msgbus_loan_abort(msgbus_buf *loan)
{
	if (!loan)
		return;
	mb_buf_free(loan->bus, loan->idx);
	loan_unlink(loan);
	free(loan);
}

uint32_t mb_buf_free_count(msgbus_bus *b)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < b->cfg.large_buffers; i++)
		/* Relaxed: a count for tests and stats, no data read after. */
		n += atomic_load_explicit(&mb_bufctl_at(b, i)->state, memory_order_relaxed) ==
		     MB_BUF_FREE;
	return n;
}
