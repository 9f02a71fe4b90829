/*
 * subscribe.c - joining and leaving. A subscription takes a slot (pattern,
 * mode, owner) and a cursor in every matching subject ring; subjects that
 * appear later add their cursor when they are created (control.c), so a
 * wildcard is resolved once, never per message.
 */
#include "ring.h"
#include "sub.h"
#include "wait.h"

#include <stdlib.h>
#include <string.h>

/* Pick up topics whose cursor for this subscription exists but which the
 * local list does not have yet. */
void mb_sub_refresh(msgbus_sub *sub)
{
	msgbus_bus *b = sub->bus;
	uint32_t g = atomic_load_explicit(&b->hdr->topics_gen, memory_order_acquire);
	if (g == sub->topics_gen && sub->ntopics)
		return;
	sub->topics_gen = g;
	for (uint32_t t = 0; t < b->cfg.max_subjects; t++) {
		if (sub->joined[t])
			continue;
		struct mb_cursor *c = mb_cursor_at(b, t, sub->slot);
		if (atomic_load_explicit(&mb_topic_at(b, t)->state, memory_order_acquire) !=
		        MB_TOPIC_READY ||
		    atomic_load_explicit(&c->gen, memory_order_acquire) != sub->gen)
			continue;
		pthread_mutex_lock(&b->lock);
		bool named = mb_topic_refresh(b, t);
		pthread_mutex_unlock(&b->lock);
		if (!named)
			continue; /* corrupt name: skip rather than trust it */
		sub->joined[t] = true;
		sub->tl[sub->ntopics].t = t;
		sub->tl[sub->ntopics].next = atomic_load(&c->release);
		sub->ntopics++;
	}
}

/* Join every READY topic matching the pattern. Caller holds the control
 * lock, so no topic appears meanwhile. */
void mb_join_topics(msgbus_bus *b, uint32_t slot, uint32_t gen, bool queue,
                   const char *pattern, size_t plen)
{
	for (uint32_t t = 0; t < b->cfg.max_subjects; t++) {
		struct mb_topic *tp = mb_topic_at(b, t);
		if (atomic_load(&tp->state) != MB_TOPIC_READY)
			continue;
		uint32_t nlen = tp->name_len;
		if (nlen > MB_SUBJECT_MAX || !mb_subject_match(pattern, plen, tp->name, nlen) ||
		    mb_subject_internal(tp->name, nlen) != queue)
			continue;
		struct mb_cursor *c = mb_cursor_at(b, t, slot);
		atomic_store(&c->release, atomic_load(&tp->tail));
		atomic_store(&c->gen, gen);
		atomic_fetch_or(&tp->cursor_mask[slot / 64], 1ull << (slot % 64));
		/* A publisher whose gate did not see us yet can only reuse
		 * slots below the tail it saw, which is at most this one. */
		atomic_store(&c->release, atomic_load(&tp->tail));
	}
}

int mb_slot_reserve(msgbus_bus *b, const char *pattern, size_t plen, uint32_t owner,
                    unsigned flags, uint32_t *slot, uint32_t *gen_out)
{
	for (uint32_t s = 0; s < b->cfg.max_subs; s++) {
		struct mb_subslot *ss = mb_subslot_at(b, s);
		uint64_t w = atomic_load(&ss->word);
		if (MB_SUBW_STATE(w) != MB_SUB_FREE)
			continue;
		uint32_t gen = MB_SUBW_GEN(w) + 1;
		if (!gen)
			gen = 1; /* 0 marks a cursor with no subscription */
		memcpy(ss->pattern, pattern, plen);
		ss->pattern[plen] = '\0';
		ss->pattern_len = (uint32_t)plen;
		for (uint32_t i = 0; i < MB_MAX_PARTICIPANTS / 64; i++)
			atomic_store(&ss->members[i], 0);
		if (!atomic_compare_exchange_strong(&ss->word, &w,
		                                    mb_subw(gen, owner, flags, MB_SUB_RESERVED)))
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
	sub->wild = wild;
	sub->msg.sub = sub;
	sub->tl = calloc(b->cfg.max_subjects, sizeof(*sub->tl));
	sub->joined = calloc(b->cfg.max_subjects, sizeof(*sub->joined));
	if (!sub->tl || !sub->joined) {
		free(sub->tl);
		free(sub->joined);
		free(sub);
		return MSGBUS_ENOMEM;
	}
	/* One bound for all the waits on the control lock. */
	uint64_t deadline = mb_ctl_deadline(b);
	int rc = mb_ctl_lock(b, deadline);
	if (!rc) {
		rc = mb_slot_reserve(b, pattern, plen, b->self, sub->lossy ? MB_SUBF_LOSSY : 0,
		                     &sub->slot, &sub->gen);
		mb_ctl_unlock(b);
	}
	uint32_t t;
	/* An exact subject gets its ring now; creating it registers our
	 * cursor, since our slot already holds the pattern. */
	if (!rc && !wild)
		rc = mb_topic_get(b, pattern, plen, mb_hash(pattern, plen), deadline, &t);
	if (!rc)
		rc = mb_ctl_lock(b, deadline);
	if (rc) {
		if (sub->gen)
			atomic_store(&mb_subslot_at(b, sub->slot)->word,
			             mb_subw(sub->gen, 0, 0, MB_SUB_FREE));
		free(sub->tl);
		free(sub->joined);
		free(sub);
		return rc;
	}
	mb_join_topics(b, sub->slot, sub->gen, false, pattern, plen);
	atomic_store(&mb_subslot_at(b, sub->slot)->word,
	             mb_subw(sub->gen, b->self, sub->lossy ? MB_SUBF_LOSSY : 0, MB_SUB_ACTIVE));
	atomic_fetch_add(&b->hdr->interest_gen, 1);
	mb_ctl_unlock(b);
	sub->topics_gen = atomic_load(&b->hdr->topics_gen) - 1;
	mb_sub_refresh(sub);
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

int mb_sub_take(msgbus_sub *sub, uint64_t deadline);
void mb_sub_wake(msgbus_sub *sub);

static void *cb_thread(void *arg)
{
	msgbus_sub *sub = arg;
	while (!atomic_load(&sub->stop)) {
		int rc = mb_sub_take(sub, UINT64_MAX);
		if (rc == 0) {
			sub->cb(&sub->msg, sub->cb_arg);
			msgbus_msg_release(&sub->msg);
		} else if (rc != MSGBUS_ECLOSED) {
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

/* Leave: free the slot (cursors die with its generation) and let gated
 * publishers re-check. */
void mb_sub_destroy(msgbus_sub *sub)
{
	msgbus_bus *b = sub->bus;
	if (sub->cb) {
		atomic_store(&sub->stop, true);
		mb_sub_wake(sub);
		pthread_join(sub->thread, NULL);
	}
	struct mb_subslot *ss = mb_subslot_at(b, sub->slot);
	uint64_t w = atomic_load(&ss->word);
	if (MB_SUBW_GEN(w) == sub->gen && MB_SUBW_STATE(w) != MB_SUB_FREE)
		atomic_compare_exchange_strong(&ss->word, &w, mb_subw(sub->gen, 0, 0, MB_SUB_FREE));
	atomic_fetch_add(&b->hdr->interest_gen, 1);
	for (uint32_t i = 0; i < sub->ntopics; i++)
		mb_ec_kick(&mb_topic_at(b, sub->tl[i].t)->space_ec);
	free(sub->tl);
	free(sub->joined);
	free(sub->copy);
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
