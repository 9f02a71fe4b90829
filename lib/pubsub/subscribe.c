/*
 * subscribe.c - joining and leaving. A subscription takes a slot (pattern,
 * mode, owner) and the slot's inbox, where publishers that match the
 * pattern write (route.c). Service slots (queue) take a cursor in every
 * matching service ring instead (serve.c, control.c).
 */
#include "shm/control.h"
#include "shm/subject.h"
#include "platform/crash.h"
#include "ring/ring.h"
#include "pubsub/mark.h"
#include "pubsub/inboxes.h"
#include "pubsub/recv.h"
#include "pubsub/route.h"
#include "pubsub/subscribe.h"
#include "pubsub/sub_fd.h"
#include "platform/wait.h"

#include <stdlib.h>
#include <string.h>

/* Join every READY service ring matching the pattern (queue slots only:
 * pub/sub uses inboxes). Caller holds the control lock, so no topic
 * appears meanwhile. */
void mb_join_topics(msgbus_bus *b, uint32_t slot, uint32_t gen, bool queue,
                    const char *pattern, size_t plen)
{
	for (uint32_t t = 0; t < b->cfg.max_subjects; t++) {
		struct mb_topic *tp = mb_topic_at(b, t);
		/* Relaxed: under the control lock, which every topic_create
		 * holds. */
		if (atomic_load_explicit(&tp->state, memory_order_relaxed) != MB_TOPIC_READY)
			continue;
		uint32_t nlen = tp->name_len;
		if (nlen > MB_SUBJECT_MAX || !mb_subject_match(pattern, plen, tp->name, nlen) ||
		    mb_subject_internal(tp->name, nlen) != queue)
			continue;
		struct mb_cursor *c = mb_cursor_at(b, t, slot);
		/* The cursor's words: seq_cst by default, which keeps the mask
		 * bit before the tail loads that the comment below relies on
		 * (a gate scan, ring.c:mb_ring_gate, that misses the bit used
		 * a tail at most the one we read). The stores' release pairs
		 * with that scan's acquire loads of gen and release. */
		atomic_store(&c->release, atomic_load(&tp->tail));
		atomic_store(&c->gen, gen);
		atomic_fetch_or(&tp->cursor_mask[slot / 64], 1ull << (slot % 64));
		/* A publisher whose gate did not see us yet can only reuse
		 * slots below the tail it saw, which is at most this one. */
		atomic_store(&c->release, atomic_load(&tp->tail));
	}
}

/*
 * The inbox of slot s, ready for a new consumer: its pages allocated, and
 * formatted unless it already is. It is not formatted again on reuse: a
 * publisher that raced the previous unsubscribe may still write into it,
 * and its record, stamped with the old generation, is then skipped by the
 * new consumer instead of landing in a ring laid out anew under it.
 * Caller holds the control lock and the slot is RESERVED.
 */
static int inbox_prepare(msgbus_bus *b, uint32_t s, struct mb_inbox *ib)
{
	uint64_t ctl = mb_inbox_ctl_off(b, s), data = mb_inbox_data_off(b, s);
	int rc = mb_seg_back(b, data, b->cfg.inbox_size);
	if (rc)
		return rc;
	if (mb_inbox_attach(ib, b->seg.base, b->seg.size, ctl, data, b->cfg.inbox_size)) {
		rc = mb_inbox_format(b->seg.base, b->seg.size, ctl, data, b->cfg.inbox_size);
		if (!rc)
			rc = mb_inbox_attach(ib, b->seg.base, b->seg.size, ctl, data,
			                     b->cfg.inbox_size);
	}
	/* Relaxed: published by the release store of ACTIVE. */
	atomic_store_explicit(&mb_subslot_at(b, s)->dropped, 0, memory_order_relaxed);
	return rc;
}

int mb_slot_reserve(msgbus_bus *b, const char *pattern, size_t plen, uint32_t owner,
                    unsigned flags, uint32_t *slot, uint32_t *gen_out)
{
	for (uint32_t s = 0; s < b->cfg.max_subs; s++) {
		struct mb_subslot *ss = mb_subslot_at(b, s);
		/* Relaxed: only the CAS below takes the slot. */
		uint64_t w = atomic_load_explicit(&ss->word, memory_order_relaxed);
		if (MB_SUBW_STATE(w) != MB_SUB_FREE)
			continue;
		uint32_t gen = MB_SUBW_GEN(w) + 1;
		if (!gen)
			gen = 1; /* 0 marks a cursor with no subscription */
		memcpy(ss->pattern, pattern, plen);
		ss->pattern[plen] = '\0';
		ss->pattern_len = (uint32_t)plen;
		/* Relaxed: published by the release store of ACTIVE. */
		for (uint32_t i = 0; i < MB_MAX_PARTICIPANTS / 64; i++)
			atomic_store_explicit(&ss->members[i], 0, memory_order_relaxed);
		/* Acquire on success: pairs with the release stores that make
		 * a slot FREE after a drain of its inbox (the store back at the
		 * end of buffers.c:reap_dead_readers' walk, the CAS in
		 * shm/live.c's reap): that drain is done before we attach or
		 * format the inbox. Other reservers hold the control lock, as
		 * we do; the slot's contents are published later by the
		 * release store of ACTIVE. Relaxed on failure: next slot. */
		if (!atomic_compare_exchange_strong_explicit(
		            &ss->word, &w, mb_subw(gen, owner, flags, MB_SUB_RESERVED),
		            memory_order_acquire, memory_order_relaxed))
			continue;
		*slot = s;
		*gen_out = gen;
		return 0;
	}
	return MSGBUS_ELIMIT;
}

static int sub_create(msgbus_bus *b, const char *pattern, unsigned flags, msgbus_sub **out)
{
	size_t plen;
	bool wild;
	if (!b || !out || (flags & ~MSGBUS_SUB_LOSSY) ||
	    mb_subject_check(pattern, &plen, true, &wild) ||
	    mb_subject_internal(pattern, plen))
		return MSGBUS_EINVAL;
	msgbus_sub *sub = calloc(1, sizeof(*sub));
	if (!sub)
		return MSGBUS_ENOMEM;
	sub->bus = b;
	sub->lossy = flags & MSGBUS_SUB_LOSSY;
	sub->msg.sub = sub;
	unsigned sflags = sub->lossy ? MB_SUBF_LOSSY : 0;
	int rc = mb_ctl_lock(b, mb_ctl_deadline(b));
	if (rc) {
		free(sub);
		return rc;
	}
	rc = mb_slot_reserve(b, pattern, plen, b->self, sflags, &sub->slot, &sub->gen);
	struct mb_inbox ib;
	if (!rc) {
		rc = inbox_prepare(b, sub->slot, &ib);
		/* Relaxed: the slot was never ACTIVE, so nobody reads what we
		 * wrote in it; a reserver's CAS takes it as any FREE slot. */
		if (rc)
			atomic_store_explicit(&mb_subslot_at(b, sub->slot)->word,
			                      mb_subw(sub->gen, 0, 0, MB_SUB_FREE),
			                      memory_order_relaxed);
	}
	if (rc) {
		mb_ctl_unlock(b);
		free(sub);
		return rc;
	}
	/* No spin in the inbox's wait: recv.c spins first, yielding. */
	mb_inbox_cons_init(&sub->cons, &ib, mb_route_owner_dead, b, 0, b->check_ns);
	mb_inbox_cons_keep(&sub->cons, mb_mark_keep, b); /* a dead publisher's marked records */
	/* Process-local stats word, published with sub. Relaxed: a hint. */
	atomic_store_explicit(&sub->cursor, sub->cons.cursor, memory_order_relaxed);
	/* Release: pairs with the acquire load of the word in route.c; the
	 * inbox and pattern are written before. */
	atomic_store_explicit(&mb_subslot_at(b, sub->slot)->word,
	                      mb_subw(sub->gen, b->self, sflags, MB_SUB_ACTIVE),
	                      memory_order_release);
	mb_crash_point("sub_active");
	/* Release: pairs with the acquire load in route.c's lookup, so a
	 * publish that starts after we return sees this subscription. */
	atomic_fetch_add_explicit(&b->hdr->interest_gen, 1, memory_order_release);
	mb_ctl_unlock(b);
	pthread_mutex_lock(&b->lock);
	sub->next = b->subs;
	b->subs = sub;
	pthread_mutex_unlock(&b->lock);
	*out = sub;
	return 0;
}

int msgbus_subscribe(msgbus_bus *bus, const char *pattern, unsigned flags, msgbus_sub **sub)
{
	return sub_create(bus, pattern, flags, sub);
}

/* The callback thread waits in short steps, so unsubscribing (which sets
 * stop and wakes it) never waits long. */
#define CB_WAIT_MS 100

static void *cb_thread(void *arg)
{
	msgbus_sub *sub = arg;
	mb_thread_name("msgbus-sub");
	/* Process-local: seq_cst by default; pairs with the seq_cst store in
	 * mb_sub_destroy, which then wakes us: a wake that comes before our
	 * next sleep is not lost, and one after it ends the sleep. */
	while (!atomic_load(&sub->stop)) {
		int rc = mb_sub_take(sub, mb_deadline(CB_WAIT_MS));
		if (rc == 0) {
			sub->cb(&sub->msg, sub->cb_arg);
			msgbus_msg_release(&sub->msg);
		} else if (rc == MSGBUS_ECLOSED) {
			break; /* msgbus_shutdown: close or unsubscribe joins us */
		} else if (rc != MSGBUS_ETIMEDOUT) {
			mb_nap_us(10000); /* corrupt segment: do not spin on it */
		}
	}
	return NULL;
}

int msgbus_subscribe_cb(msgbus_bus *bus, const char *pattern, unsigned flags, msgbus_msg_cb cb,
                        void *arg, msgbus_sub **out)
{
	if (!cb)
		return MSGBUS_EINVAL;
	msgbus_sub *sub;
	int rc = sub_create(bus, pattern, flags, &sub);
	if (rc)
		return rc;
	sub->cb = cb;
	sub->cb_arg = arg;
	if (pthread_create(&sub->thread, NULL, cb_thread, sub)) {
		sub->cb = NULL;
		msgbus_unsubscribe(sub);
		return MSGBUS_ENOMEM;
	}
	*out = sub;
	return 0;
}

/* Leave: free the slot, give back what the inbox holds (buffer references,
 * room for publishers that wait), and let publishers recompute. */
void mb_sub_destroy(msgbus_sub *sub)
{
	msgbus_bus *b = sub->bus;
	if (sub->cb) {
		/* seq_cst by default: pairs with the load in cb_thread; the
		 * wake follows. */
		atomic_store(&sub->stop, true);
		mb_sub_wake(sub);
		pthread_join(sub->thread, NULL);
	}
	mb_sub_drain(sub);
	struct mb_subslot *ss = mb_subslot_at(b, sub->slot);
	/* Relaxed: the CAS below decides. The CAS: seq_cst, a release that
	 * orders our drain before the slot's reuse; pairs with the CAS in
	 * mb_slot_reserve. */
	uint64_t w = atomic_load_explicit(&ss->word, memory_order_relaxed);
	if (MB_SUBW_GEN(w) == sub->gen && MB_SUBW_STATE(w) != MB_SUB_FREE)
		atomic_compare_exchange_strong(&ss->word, &w, mb_subw(sub->gen, 0, 0, MB_SUB_FREE));
	mb_crash_point("unsub_freed");
	mb_sub_fd_close(sub);
	/* Release: pairs with the acquire in route.c's lookup. */
	atomic_fetch_add_explicit(&b->hdr->interest_gen, 1, memory_order_release);
	/* What publishers that had not seen us leave put meanwhile. */
	mb_sub_drain(sub);
	free(sub);
}

int msgbus_unsubscribe(msgbus_sub *sub)
{
	if (!sub)
		return MSGBUS_EINVAL;
	msgbus_bus *b = sub->bus;
	pthread_mutex_lock(&b->lock);
	for (msgbus_sub **pp = &b->subs; *pp; pp = &(*pp)->next) {
		if (*pp == sub) {
			*pp = sub->next;
			break;
		}
	}
	pthread_mutex_unlock(&b->lock);
	mb_sub_destroy(sub);
	return 0;
}

/* A further pattern for sub: a slot marked alias whose matches publishers
 * write to sub's inbox (route.c). A link follows its peer's patterns so. */
int mb_sub_alias_add(msgbus_sub *sub, const char *pattern, uint32_t *slot, uint32_t *gen)
{
	msgbus_bus *b = sub->bus;
	size_t plen;
	bool wild;
	if (mb_subject_check(pattern, &plen, true, &wild) || mb_subject_internal(pattern, plen))
		return MSGBUS_EINVAL;
	unsigned sflags = MB_SUBF_ALIAS | (sub->lossy ? MB_SUBF_LOSSY : 0);
	int rc = mb_ctl_lock(b, mb_ctl_deadline(b));
	if (rc)
		return rc;
	rc = mb_slot_reserve(b, pattern, plen, b->self, sflags, slot, gen);
	if (!rc) {
		mb_subslot_at(b, *slot)->inbox_slot = sub->slot;
		/* Release: pairs with the acquire load of the word in route.c,
		 * which reads inbox_slot and the pattern after it. */
		atomic_store_explicit(&mb_subslot_at(b, *slot)->word,
		                      mb_subw(*gen, b->self, sflags, MB_SUB_ACTIVE),
		                      memory_order_release);
		/* Release: pairs with the acquire in route.c's lookup. */
		atomic_fetch_add_explicit(&b->hdr->interest_gen, 1, memory_order_release);
	}
	mb_ctl_unlock(b);
	return rc;
}

/* Free an alias slot taken by mb_sub_alias_add (its owner's close frees
 * it too: it is the handle's slot). */
void mb_sub_alias_del(msgbus_bus *b, uint32_t slot, uint32_t gen)
{
	struct mb_subslot *ss = mb_subslot_at(b, slot);
	/* As in mb_sub_destroy. */
	uint64_t w = atomic_load(&ss->word);
	if (MB_SUBW_GEN(w) == gen && MB_SUBW_STATE(w) != MB_SUB_FREE)
		atomic_compare_exchange_strong(&ss->word, &w, mb_subw(gen, 0, 0, MB_SUB_FREE));
	/* Release: pairs with the acquire in route.c's lookup. */
	atomic_fetch_add_explicit(&b->hdr->interest_gen, 1, memory_order_release);
}
