/*
 * recv.c - taking messages from a subscription's inbox. Every record is
 * read in place (a zero-copy view) and consumed when the application
 * releases it; publishers never overwrite what is not consumed, so lossy
 * subscriptions read in place too (their losses happen at publish time).
 * Order is per publisher: a publisher writes its records into each inbox
 * in the order it publishes them, whatever their subjects.
 */
#include "pubsub/recv.h"
#include "pubsub/bufpool.h"
#include "pubsub/drain.h"
#include "pubsub/sub.h"
#include "pubsub/sub_fd.h"
#include "platform/wait.h"

#include <stdlib.h>
#include <string.h>

/* TAKE_SKIP_REF: skip, and drop the buffer reference in sub->msg.desc. */
enum { TAKE_SKIP = -1, TAKE_SKIP_REF = -2 };

static void release_held(msgbus_sub *sub);

/* Read record m: fill sub->msg, or say to skip it (a stale record meant
 * for an earlier subscription of this slot, or a large message whose
 * buffer was recycled), or MSGBUS_EPROTO. Fields are read once. */
static int accept_rec(msgbus_sub *sub, const struct mb_inbox_msg *m)
{
	msgbus_bus *b = sub->bus;
	struct mb_rec_pfx pfx;
	struct mb_rec_large d;
	uint32_t sl = m->subject_len;
	if (sl <= sizeof(pfx) || sl > sizeof(pfx) + MB_SUBJECT_MAX)
		return MSGBUS_EPROTO;
	memcpy(&pfx, m->subject, sizeof(pfx));
	bool large = pfx.kind == MB_REC_LARGE;
	if (large) {
		if (m->payload_len != sizeof(d))
			return MSGBUS_EPROTO;
		memcpy(&d, m->payload, sizeof(d));
	}
	if (pfx.sub_gen != sub->gen) {
		if (!large)
			return TAKE_SKIP;
		sub->msg.desc = d;
		return TAKE_SKIP_REF;
	}
	const void *data = m->payload;
	size_t len = m->payload_len;
	if (large) {
		if (d.buf >= b->cfg.large_buffers || d.len > b->cfg.max_msg_size)
			return MSGBUS_EPROTO;
		/* Relaxed: a check; the reference we hold keeps it. A mismatch
		 * means a dead publisher's reaper freed it under the record. */
		if (atomic_load_explicit(&mb_bufctl_at(b, d.buf)->gen, memory_order_relaxed) !=
		    d.buf_gen) {
			atomic_fetch_add_explicit(&sub->lost, 1, memory_order_relaxed);
			return TAKE_SKIP;
		}
		data = mb_bufdata_at(b, d.buf);
		len = d.len;
	} else if (pfx.kind != MB_REC_INLINE || len > b->cfg.max_msg_size) {
		return MSGBUS_EPROTO;
	}
	sl -= (uint32_t)sizeof(pfx);
	memcpy(sub->subject, m->subject + sizeof(pfx), sl);
	sub->subject[sl] = '\0';
	sub->msg.subject = sub->subject;
	sub->msg.data = data;
	sub->msg.len = len;
	sub->msg.origin = m->owner;
	sub->msg.seq = pfx.seq;
	sub->msg.large = large;
	if (large)
		sub->msg.desc = d;
	sub->held = true;
	/* Only this thread writes it: no read-modify-write needed. */
	atomic_store_explicit(&sub->delivered,
	                      atomic_load_explicit(&sub->delivered, memory_order_relaxed) + 1,
	                      memory_order_relaxed);
	return 0;
}

static void consume(msgbus_sub *sub)
{
	mb_inbox_consume(&sub->cons);
	/* A publisher waits for room: give it back now rather than at the
	 * end of the batch (waking a sleeper once per step, mb_inbox_give).
	 * Relaxed: a hint; mb_inbox_give orders the rest (and a waiter
	 * re-checks on its own every few milliseconds). */
	if (atomic_load_explicit(&sub->cons.ib.ctl->space_ec, memory_order_relaxed) &
	    MB_EC_WAITERS)
		mb_inbox_give(&sub->cons);
	/* Relaxed: only the stats read it, as a hint. */
	atomic_store_explicit(&sub->cursor, sub->cons.cursor, memory_order_relaxed);
}

/* Nothing was there: spin (yielding the CPU now and then, so spinning
 * receivers do not starve a publisher on a machine with fewer cores than
 * runnable threads), then sleep in the inbox's wait. */
static int wait_rec(msgbus_sub *sub, struct mb_inbox_msg *m, uint64_t deadline)
{
	struct mb_spin spin = { 0, 0 };
	const struct mb_link_hooks *linked = NULL;
	int rc = MSGBUS_EAGAIN;
	/* The inbox's waits end with MSGBUS_ECLOSED once the handle is shut
	 * down: it checks the flag after each wake. */
	sub->cons.stop = &sub->bus->closing;
	while (mb_spinning(&spin, sub->bus->spin_ns)) {
		if (mb_closing(sub->bus)) {
			rc = MSGBUS_ECLOSED;
			break;
		}
		if (spin.rounds % MB_SPIN_YIELD_ROUNDS == 0)
			mb_yield_cpu(); /* tests/check_spin.c shows what it buys */
		if (spin.rounds % MB_SPIN_LINK_ROUNDS == 1) {
			/* A handle with links reads them while it spins: a
			 * message from a peer then wakes nobody. Pairs with the
			 * release in link/links.c:links_of(). */
			linked = atomic_load_explicit(&sub->bus->link_hooks, memory_order_acquire);
			if (linked)
				linked->spin(sub->bus);
		}
		rc = mb_inbox_peek(&sub->cons, m);
		if (rc != MSGBUS_EAGAIN)
			break;
	}
	if (rc != MSGBUS_EAGAIN)
		return rc; /* still a spinner: its next recv looks again */
	if (linked)
		linked->unspin(sub->bus); /* it sleeps: the links' rx threads read */
	return mb_inbox_peek_wait(&sub->cons, m, deadline);
}

/* One record from the inbox, waiting until deadline. */
static int take(msgbus_sub *sub, uint64_t deadline)
{
	for (;;) {
		struct mb_inbox_msg m;
		int rc = mb_inbox_peek(&sub->cons, &m);
		if (rc == MSGBUS_EAGAIN && deadline != MB_NO_WAIT)
			rc = wait_rec(sub, &m, deadline);
		if (rc)
			return rc;
		rc = accept_rec(sub, &m);
		if (rc == 0)
			return 0;
		consume(sub); /* skipped, or corrupt: step over it */
		if (rc == TAKE_SKIP_REF) {
			mb_inbox_flush(&sub->cons); /* see msgbus_msg_release */
			mb_buf_unref(sub->bus, &sub->msg.desc);
		} else if (rc != TAKE_SKIP) {
			return rc;
		}
	}
}

int mb_sub_take(msgbus_sub *sub, uint64_t deadline)
{
	return take(sub, deadline);
}

void mb_sub_wake(msgbus_sub *sub)
{
	mb_ec_kick(&sub->cons.ib.ctl->data_ec);
}

/*
 * For a taker that serialises its use of sub with a lock of its own and
 * waits outside that lock (a TCP link's transmit side): one message without
 * waiting; the word to sleep on; the flush that must precede that sleep.
 */
int mb_sub_poll(msgbus_sub *sub, msgbus_msg **msg, int64_t *owner)
{
	*owner = -1;
	if (sub->held)
		return MSGBUS_EBUSY;
	int rc = take(sub, MB_NO_WAIT);
	if (!rc)
		*msg = &sub->msg;
	return rc;
}

_Atomic uint32_t *mb_sub_wait_word(msgbus_sub *sub)
{
	return &sub->cons.ib.ctl->data_ec;
}

void mb_sub_flush(msgbus_sub *sub)
{
	mb_inbox_flush(&sub->cons);
}

uint32_t mb_sub_slot(const msgbus_sub *sub)
{
	return sub->slot;
}

bool mb_sub_drained_at(const msgbus_sub *sub, uint32_t slot, uint32_t gen)
{
	return sub->slot == slot && sub->gen == gen && !sub->held && mb_inbox_drained(&sub->cons);
}

void mb_sub_drain(msgbus_sub *sub)
{
	if (sub->held)
		release_held(sub);
	mb_drain_cons(sub->bus, &sub->cons);
}

int msgbus_recv(msgbus_sub *sub, msgbus_msg **msg, int timeout_ms)
{
	if (!sub || !msg || sub->cb || timeout_ms < -1)
		return MSGBUS_EINVAL;
	if (sub->held)
		return MSGBUS_EBUSY;
	if (mb_closing(sub->bus))
		return MSGBUS_ECLOSED;
	/* The clock is read only when a wait begins: a stream finds a record
	 * at once (a clock read per message was a tenth of the CPU samples of
	 * a 64 B stream over a TCP link, perf). */
	int rc = take(sub, MB_NO_WAIT);
	if (rc == MSGBUS_EAGAIN && timeout_ms != 0)
		rc = take(sub, mb_deadline(timeout_ms));
	if (!rc)
		*msg = &sub->msg;
	else if (sub->bell_on && (rc == MSGBUS_EAGAIN || rc == MSGBUS_ETIMEDOUT))
		mb_sub_fd_rearm(sub); /* drained: the descriptor reads "empty" */
	return rc;
}

void msgbus_msg_release(msgbus_msg *msg)
{
	if (msg && !msg->sub) {
		free(msg); /* a reply: one allocation, owned by the caller */
		return;
	}
	if (!msg || !msg->sub->held)
		return;
	release_held(msg->sub);
}

/* The application is done with sub->msg. */
static void release_held(msgbus_sub *sub)
{
	const struct msgbus_msg *msg = &sub->msg;
	sub->held = false;
	consume(sub);
	if (msg->large) {
		/*
		 * Give the record back before the reference: a reaper walks a
		 * dead reader's inbox from its last flush and drops the
		 * references of the records there, so a record whose reference
		 * we dropped must never be behind our flush. Dying between the
		 * two leaks one reference rather than freeing a buffer twice.
		 */
		mb_inbox_flush(&sub->cons);
		mb_buf_unref(sub->bus, &msg->desc);
	}
}

const char *msgbus_msg_subject(const msgbus_msg *msg)
{
	return msg ? msg->subject : NULL;
}

const void *msgbus_msg_data(const msgbus_msg *msg)
{
	return msg ? msg->data : NULL;
}

size_t msgbus_msg_len(const msgbus_msg *msg)
{
	return msg ? msg->len : 0;
}

/* Reads shared counters and the inbox's records, so any thread may call
 * it; the backlog is a snapshot. */
int msgbus_sub_stats_get(msgbus_sub *sub, msgbus_sub_stats *st)
{
	if (!sub || !st)
		return MSGBUS_EINVAL;
	msgbus_bus *b = sub->bus;
	st->delivered = atomic_load_explicit(&sub->delivered, memory_order_relaxed);
	/* Relaxed: counters. */
	st->dropped = atomic_load_explicit(&mb_subslot_at(b, sub->slot)->dropped,
	                                   memory_order_relaxed) +
	              atomic_load_explicit(&sub->lost, memory_order_relaxed);
	st->backlog = mb_inbox_count(&sub->cons.ib,
	                             atomic_load_explicit(&sub->cursor, memory_order_relaxed));
	return 0;
}
