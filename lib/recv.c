/*
 * recv.c - taking messages. A lossless subscription reads slots in place
 * (the gate keeps publishers off them until release); a lossy one copies
 * out and checks afterwards that no publisher lapped it meanwhile. Order
 * is per subject: each subject is its own ring, so a publisher's messages
 * on one subject arrive in the order it published them.
 */
#include "link.h"
#include "ring.h"
#include "sub.h"
#include "wait.h"

#include <stdlib.h>
#include <string.h>

#define MB_LINK_SPIN_ROUNDS 32 /* spin rounds between looks at the links */

void mb_sub_refresh(msgbus_sub *sub);

enum head { HEAD_EMPTY, HEAD_READY, HEAD_CLAIMED, HEAD_CORRUPT };

static void store_release(msgbus_sub *sub, uint32_t ti, uint64_t rel)
{
	msgbus_bus *b = sub->bus;
	uint32_t t = sub->tl[ti].t;
	struct mb_cursor *c = mb_cursor_at(b, t, sub->slot);
	atomic_store_explicit(&c->release, rel, memory_order_release);
	if (sub->lossy)
		return; /* lossy cursors never gate: nobody waits on them */
	/*
	 * A fence per message would halve throughput, so this check is
	 * unordered: a publisher that starts waiting at this very moment may
	 * be missed. It is then seen at our next release, or at the ordered
	 * flush before we sleep (flush_releases), or by the publisher's own
	 * periodic re-check: late, never lost.
	 */
	_Atomic uint32_t *ec = &mb_topic_at(b, t)->space_ec;
	if (atomic_load_explicit(ec, memory_order_relaxed) & MB_EC_WAITERS)
		mb_ec_signal(ec);
}

/* Before sleeping: make our releases visible in order with the wake checks
 * (seq_cst store, then seq_cst load), so no publisher sleeps on them. */
static void flush_releases(msgbus_sub *sub)
{
	msgbus_bus *b = sub->bus;
	if (sub->lossy)
		return;
	for (uint32_t i = 0; i < sub->ntopics; i++) {
		uint32_t t = sub->tl[i].t;
		struct mb_cursor *c = mb_cursor_at(b, t, sub->slot);
		atomic_store_explicit(&c->release,
		                      atomic_load_explicit(&c->release, memory_order_relaxed),
		                      memory_order_seq_cst);
		mb_ec_signal(&mb_topic_at(b, t)->space_ec);
	}
}

/* Step the head of ti to next, counting what is skipped as dropped. */
static void drop_to(msgbus_sub *sub, uint32_t ti, uint64_t next)
{
	struct mb_sub_topic *st = &sub->tl[ti];
	atomic_fetch_add_explicit(&sub->dropped, next - st->next, memory_order_relaxed);
	st->next = next;
	store_release(sub, ti, next);
}

/*
 * Skip forward after being lapped. Positions below tail - ring_slots are
 * overwritten; the one at it is the oldest still there, so that is where
 * we resume: only what was lapped on is dropped. again: we were lapped a
 * second time in the same take, so writers outrun our copies; resume half
 * a ring behind them instead, or we might never deliver anything.
 */
static void resync(msgbus_sub *sub, uint32_t ti, bool again)
{
	msgbus_bus *b = sub->bus;
	struct mb_sub_topic *st = &sub->tl[ti];
	uint64_t tail = atomic_load(&mb_topic_at(b, st->t)->tail);
	uint64_t back = again ? b->cfg.ring_slots / 2 : b->cfg.ring_slots;
	/* tail is a hint that may lag the claims: move at least one on. */
	drop_to(sub, ti, tail > st->next + back ? tail - back : st->next + 1);
}

/*
 * One take from one subject: every step moves the head on by at least one
 * position and costs one unit of budget. A sane ring needs at most a lap
 * of skips, a lap of lost large messages and a few resyncs; more means
 * stamps no writer could have left, or a writer flipping them under us.
 */
struct take {
	uint64_t budget;
	unsigned resyncs;
};

static void take_init(struct take *tk, const msgbus_sub *sub)
{
	tk->budget = 2 * (uint64_t)sub->bus->cfg.ring_slots + 8;
	tk->resyncs = 0;
}

/*
 * Look at the head of topic list entry ti, skipping aborted slots. READY
 * returns its stamp; CLAIMED returns the writer in *owner.
 */
static enum head peek(msgbus_sub *sub, uint32_t ti, struct take *tk, uint64_t *stamp,
                      uint32_t *owner)
{
	msgbus_bus *b = sub->bus;
	struct mb_sub_topic *st = &sub->tl[ti];
	uint64_t n = b->cfg.ring_slots;
	while (tk->budget > 0) {
		tk->budget--;
		uint64_t pos = st->next;
		uint64_t s = atomic_load_explicit(&mb_slot_at(b, st->t, pos)->stamp,
		                                  memory_order_acquire);
		uint64_t seq = MB_STAMP_SEQ(s);
		if (seq == (pos & MB_SEQ_MASK)) {
			uint32_t state = MB_STAMP_STATE(s);
			if (state == MB_ST_COMMITTED) {
				*stamp = s;
				return HEAD_READY;
			}
			if (state == MB_ST_CLAIMED &&
			    MB_STAMP_OWNER(s) < b->cfg.max_participants) {
				*owner = MB_STAMP_OWNER(s);
				return HEAD_CLAIMED;
			}
			/* Aborted by a dead writer's reaper, or claimed by an
			 * owner no participant can be (corrupt): step over. */
			st->next = pos + 1;
			store_release(sub, ti, st->next);
			continue;
		}
		if (seq == ((pos - n) & MB_SEQ_MASK))
			return HEAD_EMPTY;
		/* Lapped (lossy), or a stamp no writer could have left: count
		 * the gap as dropped rather than lose it silently. */
		resync(sub, ti, tk->resyncs++ > 0);
	}
	return HEAD_CORRUPT;
}

/* Fill sub->msg from the committed slot at the head of ti; 0, or
 * MSGBUS_EAGAIN when a lossy copy was overwritten (counted as dropped: look
 * at the head again), or MSGBUS_EPROTO. */
static int deliver(msgbus_sub *sub, uint32_t ti, struct take *tk, uint64_t stamp)
{
	msgbus_bus *b = sub->bus;
	struct mb_sub_topic *st = &sub->tl[ti];
	uint64_t pos = st->next;
	struct mb_slot *sl = mb_slot_at(b, st->t, pos);
	uint32_t len = sl->len, kind = sl->kind, buf = sl->buf, buf_gen = sl->buf_gen;
	uint32_t origin = sl->pub;
	const void *data;
	if (kind == MB_KIND_INLINE && len <= b->inline_max) {
		data = sl + 1;
	} else if (kind == MB_KIND_LARGE && len <= b->cfg.max_msg_size &&
	           buf < b->cfg.large_buffers) {
		data = mb_bufdata_at(b, buf);
	} else {
		st->next = pos + 1; /* corrupt slot: step over it */
		store_release(sub, ti, st->next);
		return MSGBUS_EPROTO;
	}
	if (sub->lossy) {
		if (len > sub->copy_cap) {
			char *p = realloc(sub->copy, len);
			if (!p)
				return MSGBUS_ENOMEM;
			sub->copy = p;
			sub->copy_cap = len;
		}
		if (len)
			memcpy(sub->copy, data, len);
		/* The copy happens before the re-check below (seqlock read). */
#ifndef MB_TSAN
		atomic_thread_fence(memory_order_acquire);
#endif
		if (atomic_load(&sl->stamp) != stamp) {
			resync(sub, ti, tk->resyncs++ > 0); /* the slot was lapped */
			return MSGBUS_EAGAIN;
		}
		if (kind == MB_KIND_LARGE && atomic_load(&mb_bufctl_at(b, buf)->gen) != buf_gen) {
			/* The slot is intact but the pool recycled its buffer:
			 * only this message is lost. */
			drop_to(sub, ti, pos + 1);
			return MSGBUS_EAGAIN;
		}
		data = sub->copy;
	}
	sub->msg.subject = b->topics[st->t].name;
	sub->msg.data = data;
	sub->msg.len = len;
	sub->msg.ti = ti;
	sub->msg.pos = pos;
	sub->msg.origin = origin;
	st->next = pos + 1;
	sub->held = true;
	/* Only this thread writes it: no read-modify-write needed. */
	atomic_store_explicit(&sub->delivered,
	                      atomic_load_explicit(&sub->delivered, memory_order_relaxed) + 1,
	                      memory_order_relaxed);
	return 0;
}

/* Take the head of ti: 0, MSGBUS_EAGAIN when none is ready (a writer we
 * wait on in *claimed_owner), or MSGBUS_EPROTO. A lossy copy that was
 * overwritten is counted as dropped and the next message tried at once:
 * a receive with a backlog never says EAGAIN. */
static int take_from(msgbus_sub *sub, uint32_t ti, int64_t *claimed_owner)
{
	struct take tk;
	take_init(&tk, sub);
	for (;;) {
		uint64_t s;
		uint32_t owner;
		enum head h = peek(sub, ti, &tk, &s, &owner);
		if (h == HEAD_CLAIMED)
			*claimed_owner = owner;
		if (h == HEAD_CORRUPT)
			return MSGBUS_EPROTO;
		if (h != HEAD_READY)
			return MSGBUS_EAGAIN;
		int rc = deliver(sub, ti, &tk, s);
		if (rc != MSGBUS_EAGAIN)
			return rc;
	}
}

/* 0 when a message is taken, MSGBUS_EAGAIN when none is ready;
 * *claimed_owner names a writer we wait on, if any. Subjects are visited
 * round-robin from where the last message came, so a busy subject cannot
 * starve a quiet one. */
static int try_take(msgbus_sub *sub, int64_t *claimed_owner)
{
	*claimed_owner = -1;
	if (sub->wild)
		mb_sub_refresh(sub);
	uint32_t n = sub->ntopics;
	for (uint32_t k = 0; k < n; k++) {
		uint32_t ti = (sub->rr + k) % n;
		int rc = take_from(sub, ti, claimed_owner);
		if (rc == MSGBUS_EAGAIN)
			continue;
		sub->rr = ti + 1;
		return rc;
	}
	return MSGBUS_EAGAIN;
}

static _Atomic uint32_t *wait_word(msgbus_sub *sub)
{
	if (sub->wild || !sub->ntopics)
		return &sub->bus->hdr->any_ec;
	return &mb_topic_at(sub->bus, sub->tl[0].t)->data_ec;
}

void mb_sub_wake(msgbus_sub *sub)
{
	mb_ec_kick(wait_word(sub));
}

/*
 * For a taker that serialises its use of sub with a lock of its own and
 * waits outside that lock (a TCP link's transmit side, link.c): one
 * message without waiting, with the writer to watch when a claimed slot
 * holds a head back; the word to sleep on; and the ordered flush of
 * releases that must precede that sleep, as in mb_sub_take.
 */
int mb_sub_poll(msgbus_sub *sub, msgbus_msg **msg, int64_t *owner)
{
	*owner = -1;
	if (sub->held)
		return MSGBUS_EBUSY;
	int rc = try_take(sub, owner);
	if (!rc)
		*msg = &sub->msg;
	return rc;
}

_Atomic uint32_t *mb_sub_wait_word(msgbus_sub *sub)
{
	return wait_word(sub);
}

void mb_sub_flush(msgbus_sub *sub)
{
	flush_releases(sub);
}

/* Take the next message, waiting until deadline (MB_NO_WAIT: don't). */
int mb_sub_take(msgbus_sub *sub, uint64_t deadline)
{
	msgbus_bus *b = sub->bus;
	uint64_t next_check = 0;
	struct mb_spin spin = { 0, 0 };
	bool linked = false;
	for (;;) {
		int64_t owner;
		int rc = try_take(sub, &owner);
		if (rc != MSGBUS_EAGAIN)
			return rc;
		if (deadline == MB_NO_WAIT)
			return MSGBUS_EAGAIN;
		if (mb_spinning(&spin, b->spin_ns)) {
			/* A handle that made TCP links reads them while it
			 * spins (link.c): nobody is woken to bring a message. */
			if (spin.rounds % MB_LINK_SPIN_ROUNDS == 1 &&
			    __atomic_load_n(&b->links, __ATOMIC_RELAXED)) {
				linked = true;
				mb_links_spin(b);
			}
			continue;
		}
		if (linked) {
			linked = false;
			mb_links_unspin(b); /* their rx threads watch them again */
		}
		if (atomic_load(&sub->stop))
			return MSGBUS_ECLOSED;
		uint64_t now = mb_now_ns();
		if (now >= deadline)
			return MSGBUS_ETIMEDOUT;
		uint64_t until = deadline;
		if (!mb_wait_on_owner(b, owner, now, &next_check, &until))
			continue; /* the writer died: its slot is aborted now */
		flush_releases(sub);
		_Atomic uint32_t *ec = wait_word(sub);
		uint32_t v = mb_ec_prepare(ec);
		rc = try_take(sub, &owner);
		if (rc != MSGBUS_EAGAIN)
			return rc;
		if (atomic_load(&sub->stop))
			return MSGBUS_ECLOSED;
		mb_ec_sleep(ec, v, now, until);
	}
}

int msgbus_recv(msgbus_sub *sub, msgbus_msg **msg, int timeout_ms)
{
	if (!sub || !msg || sub->cb)
		return MSGBUS_EINVAL;
	if (sub->held)
		return MSGBUS_EBUSY;
	uint64_t deadline = timeout_ms == 0 ? MB_NO_WAIT : mb_deadline(timeout_ms);
	int rc = mb_sub_take(sub, deadline);
	if (!rc)
		*msg = &sub->msg;
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
	msgbus_sub *sub = msg->sub;
	sub->held = false;
	store_release(sub, msg->ti, msg->pos + 1);
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

/* Reads only shared counters and cursors, so any thread may call it. */
int msgbus_sub_stats_get(msgbus_sub *sub, msgbus_sub_stats *st)
{
	if (!sub || !st)
		return MSGBUS_EINVAL;
	msgbus_bus *b = sub->bus;
	st->delivered = atomic_load_explicit(&sub->delivered, memory_order_relaxed);
	st->dropped = atomic_load_explicit(&sub->dropped, memory_order_relaxed);
	st->backlog = 0;
	for (uint32_t t = 0; t < b->cfg.max_subjects; t++) {
		struct mb_cursor *c = mb_cursor_at(b, t, sub->slot);
		if (atomic_load_explicit(&mb_topic_at(b, t)->state, memory_order_acquire) !=
		        MB_TOPIC_READY ||
		    atomic_load(&c->gen) != sub->gen)
			continue;
		uint64_t tail = atomic_load(&mb_topic_at(b, t)->tail);
		uint64_t rel = atomic_load(&c->release);
		if (tail > rel)
			st->backlog += tail - rel;
	}
	return 0;
}
