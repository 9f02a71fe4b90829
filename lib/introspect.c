/*
 * introspect.c - what a bus holds, for msgbus_stat_get(3) and friends, and
 * the wait for subscribers (the start-up race).
 *
 * Everything is read from an untrusted segment while others change it. A
 * shared record is read seqlock-style: its state word, the fields, an
 * acquire fence, the word again; equal words mean a consistent copy, and a
 * record that keeps changing for SNAP_TRIES reads is left out. Lengths are
 * bounded and strings checked for an inner NUL before anything is copied
 * out; indices come from local loops bounded by the validated config.
 */
#include "link/links.h"
#include "shm/control.h"
#include "shm/live.h"
#include "shm/subject.h"
#include "pubsub/inboxes.h"
#include "pubsub/route.h"
#include "pubsub/sub.h"

#include <string.h>

#define SNAP_TRIES 8

/* A consistent copy of an ACTIVE subscription slot. */
struct slot_snap {
	uint64_t w;
	uint32_t plen;
	char pat[MB_SUBJECT_MAX + 1];
	uint64_t dropped;
	uint64_t members[MB_MAX_PARTICIPANTS / 64];
};

static bool slot_read(msgbus_bus *b, uint32_t s, struct slot_snap *o)
{
	struct mb_subslot *ss = mb_subslot_at(b, s);
	for (int i = 0; i < SNAP_TRIES; i++) {
		/* Acquire: pairs with the release store of ACTIVE in
		 * subscribe.c (serve.c's seq_cst one for queues), after the
		 * pattern was written. */
		uint64_t w = atomic_load_explicit(&ss->word, memory_order_acquire);
		if (MB_SUBW_STATE(w) != MB_SUB_ACTIVE)
			return false;
		uint32_t plen;
		if (!mb_subslot_pattern(ss, o->pat, &plen)) {
			/* Relaxed: as the re-read below (after the fence). */
			atomic_thread_fence(memory_order_acquire);
			if (atomic_load_explicit(&ss->word, memory_order_relaxed) != w)
				continue; /* taken again meanwhile */
			return false;
		}
		/* Relaxed: counters and bits, validated by the re-read below. */
		o->dropped = atomic_load_explicit(&ss->dropped, memory_order_relaxed);
		for (uint32_t m = 0; m < MB_MAX_PARTICIPANTS / 64; m++)
			o->members[m] = atomic_load_explicit(&ss->members[m], memory_order_relaxed);
		/* Orders the reads above before the re-read (seqlock reader). */
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&ss->word, memory_order_relaxed) != w)
			continue;
		if (strlen(o->pat) != plen)
			return false; /* an inner NUL: malformed */
		o->w = w;
		o->plen = plen;
		return true;
	}
	return false;
}

static bool slot_is_queue(const struct slot_snap *sn)
{
	return MB_SUBW_FLAGS(sn->w) & MB_SUBF_QUEUE;
}

/* A queue slot names its service "_svc.NAME"; anything else is malformed. */
static bool slot_service_name(const struct slot_snap *sn)
{
	return slot_is_queue(sn) && sn->plen > MB_SVC_PREFIX_LEN &&
	       !memcmp(sn->pat, MB_SVC_PREFIX, MB_SVC_PREFIX_LEN);
}

/* Live workers among a queue slot's members (the dead are reaped). */
static uint32_t live_workers(msgbus_bus *b, const struct slot_snap *sn)
{
	uint32_t n = 0, max = b->cfg.max_participants;
	for (uint32_t i = 0; i < (max + 63) / 64; i++) {
		uint64_t m = sn->members[i];
		while (m) {
			uint32_t idx = i * 64 + (uint32_t)__builtin_ctzll(m);
			m &= m - 1;
			if (idx < max && mb_part_alive(b, idx))
				n++;
		}
	}
	return n;
}

/* Requests in a service's ring that no worker took: tail minus the
 * workers' shared cursor, while the cursor belongs to this slot. */
static uint64_t queued_requests(msgbus_bus *b, uint32_t s, const struct slot_snap *sn)
{
	uint32_t t;
	if (mb_topic_find(b, sn->pat, sn->plen, mb_hash(sn->pat, sn->plen), &t))
		return 0; /* no ring yet */
	struct mb_cursor *c = mb_cursor_at(b, t, s);
	/* Relaxed: a snapshot of counters; gen is checked after release so a
	 * reused cursor is not counted. */
	uint64_t rel = atomic_load_explicit(&c->release, memory_order_relaxed);
	uint64_t gen = atomic_load_explicit(&c->gen, memory_order_relaxed);
	uint64_t tail = atomic_load_explicit(&mb_topic_at(b, t)->tail, memory_order_relaxed);
	if (gen != MB_SUBW_GEN(sn->w) || tail < rel || tail - rel > b->cfg.ring_slots)
		return 0;
	return tail - rel;
}

/* A consistent copy of a participant slot: its state, pid and flags. */
static bool part_read(msgbus_bus *b, uint32_t i, uint32_t *pid, uint32_t *flags)
{
	struct mb_part *p = mb_part_at(b, i);
	for (int k = 0; k < SNAP_TRIES; k++) {
		/* Acquire: pairs with the seq_cst store of ACTIVE in live.c,
		 * after pid and flags. */
		uint32_t st = atomic_load_explicit(&p->state, memory_order_acquire);
		if (st != MB_PART_ACTIVE)
			return false;
		/* Relaxed: informational words, validated by the re-read. */
		*pid = atomic_load_explicit(&p->pid, memory_order_relaxed);
		*flags = atomic_load_explicit(&p->flags, memory_order_relaxed);
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&p->state, memory_order_relaxed) == st)
			return true;
	}
	return false;
}

int msgbus_participants(msgbus_bus *b, msgbus_participant_info *arr, size_t cap, size_t *n)
{
	if (!b || !n || (cap && !arr))
		return MSGBUS_EINVAL;
	size_t k = 0;
	for (uint32_t i = 0; i < b->cfg.max_participants; i++) {
		uint32_t pid, flags;
		if (!part_read(b, i, &pid, &flags))
			continue;
		if (k < cap) {
			msgbus_participant_info *pi = &arr[k];
			memset(pi, 0, sizeof(*pi));
			pi->index = i;
			pi->pid = pid;
			/* The exact check: reaps i when its process is gone. */
			pi->flags = (mb_part_alive(b, i) ? MSGBUS_PART_ALIVE : 0) |
			            (flags & MB_PARTF_BRIDGE ? MSGBUS_PART_BRIDGE : 0) |
			            (i == b->self ? MSGBUS_PART_SELF : 0);
		}
		k++;
	}
	*n = k;
	return MSGBUS_OK;
}

/* What this handle knows of its own subscription in slot s: delivered,
 * lost and its consumer's position. False if it is not ours. */
static bool local_sub(msgbus_bus *b, uint32_t s, uint32_t gen, uint64_t *delivered,
                      uint64_t *lost, uint64_t *cursor)
{
	bool found = false;
	pthread_mutex_lock(&b->lock);
	for (msgbus_sub *sub = b->subs; sub; sub = sub->next) {
		if (sub->slot != s || sub->gen != gen)
			continue;
		/* Relaxed: counters. */
		*delivered = atomic_load_explicit(&sub->delivered, memory_order_relaxed);
		*lost = atomic_load_explicit(&sub->lost, memory_order_relaxed);
		*cursor = atomic_load_explicit(&sub->cursor, memory_order_relaxed);
		found = true;
		break;
	}
	pthread_mutex_unlock(&b->lock);
	return found;
}

static void sub_info_fill(msgbus_bus *b, uint32_t s, const struct slot_snap *sn,
                          msgbus_sub_info *si)
{
	memset(si, 0, sizeof(*si));
	memcpy(si->pattern, sn->pat, (size_t)sn->plen + 1);
	si->slot = s;
	si->owner = MB_SUBW_OWNER(sn->w);
	si->flags = MB_SUBW_FLAGS(sn->w) & MB_SUBF_LOSSY ? MSGBUS_SUB_LOSSY : 0;
	si->dropped = sn->dropped;
	if (MB_SUBW_FLAGS(sn->w) & MB_SUBF_ALIAS)
		return; /* no inbox: its slot of inbox_slot counts for it */
	struct mb_inbox ib;
	if (mb_inbox_attach(&ib, b->seg.base, b->seg.size, mb_inbox_ctl_off(b, s),
	                    mb_inbox_data_off(b, s), b->cfg.inbox_size))
		return; /* corrupt inbox: no backlog to count */
	uint64_t lost = 0, from;
	if (local_sub(b, s, MB_SUBW_GEN(sn->w), &si->delivered, &lost, &from)) {
		si->flags |= MSGBUS_SUBINFO_LOCAL;
		si->dropped += lost;
	} else {
		/* Relaxed: a snapshot; mb_inbox_count bounds it to one lap.
		 * Released lags the consumer by a batch at most. */
		from = atomic_load_explicit(&ib.ctl->release, memory_order_relaxed);
	}
	si->backlog = mb_inbox_count(&ib, from);
}

int msgbus_subscriptions(msgbus_bus *b, msgbus_sub_info *arr, size_t cap, size_t *n)
{
	if (!b || !n || (cap && !arr))
		return MSGBUS_EINVAL;
	size_t k = 0;
	for (uint32_t s = 0; s < b->cfg.max_subs; s++) {
		struct slot_snap sn;
		if (!slot_read(b, s, &sn) || slot_is_queue(&sn))
			continue;
		if (k < cap)
			sub_info_fill(b, s, &sn, &arr[k]);
		k++;
	}
	*n = k;
	return MSGBUS_OK;
}

int msgbus_services(msgbus_bus *b, msgbus_service_info *arr, size_t cap, size_t *n)
{
	if (!b || !n || (cap && !arr))
		return MSGBUS_EINVAL;
	size_t k = 0;
	for (uint32_t s = 0; s < b->cfg.max_subs; s++) {
		struct slot_snap sn;
		if (!slot_read(b, s, &sn) || !slot_service_name(&sn))
			continue;
		if (k < cap) {
			msgbus_service_info *si = &arr[k];
			memset(si, 0, sizeof(*si));
			memcpy(si->name, sn.pat + MB_SVC_PREFIX_LEN, sn.plen - MB_SVC_PREFIX_LEN + 1);
			si->workers = live_workers(b, &sn);
			si->queued = queued_requests(b, s, &sn);
		}
		k++;
	}
	*n = k;
	return MSGBUS_OK;
}

int msgbus_links(msgbus_bus *b, msgbus_link_info *arr, size_t cap, size_t *n)
{
	if (!b || !n || (cap && !arr))
		return MSGBUS_EINVAL;
	return mb_links_list(b, arr, cap, n);
}

int msgbus_stat_get(msgbus_bus *b, msgbus_stat *st)
{
	if (!b || !st || st->size < sizeof(*st))
		return MSGBUS_EINVAL;
	memset(st, 0, sizeof(*st));
	st->size = sizeof(*st);
	st->segment_size = b->seg.size;
	st->ring_slots = b->cfg.ring_slots;
	st->slot_size = b->cfg.slot_size;
	st->max_msg_size = b->cfg.max_msg_size;
	st->large_buffers = b->cfg.large_buffers;
	st->max_subjects = b->cfg.max_subjects;
	st->max_subs = b->cfg.max_subs;
	st->max_participants = b->cfg.max_participants;
	st->inbox_size = b->cfg.inbox_size;
	st->spin_us = b->cfg.spin_us;
	st->crash_bound_ms = b->cfg.crash_bound_ms;
	st->self = b->self;
	/* Relaxed: informational. */
	st->interest_gen = atomic_load_explicit(&b->hdr->interest_gen, memory_order_relaxed);
	for (uint32_t i = 0; i < b->cfg.max_participants; i++) {
		uint32_t pid, flags;
		st->participants += part_read(b, i, &pid, &flags);
	}
	for (uint32_t s = 0; s < b->cfg.max_subs; s++) {
		struct slot_snap sn;
		if (!slot_read(b, s, &sn))
			continue;
		if (!slot_is_queue(&sn))
			st->subscriptions++;
		else if (slot_service_name(&sn))
			st->services++;
	}
	return MSGBUS_OK;
}

/* Live subscriptions whose pattern matches subject. */
static unsigned count_subscribers(msgbus_bus *b, const char *subject, size_t slen)
{
	unsigned n = 0;
	for (uint32_t s = 0; s < b->cfg.max_subs; s++) {
		struct slot_snap sn;
		if (!slot_read(b, s, &sn) || slot_is_queue(&sn) ||
		    !mb_subject_match(sn.pat, sn.plen, subject, slen))
			continue;
		n += mb_part_alive(b, MB_SUBW_OWNER(sn.w));
	}
	return n;
}

/* Bounded poll of the interest generation: every new subscription bumps
 * it, so the slots are counted again only when it moved (or, for owners
 * that died meanwhile, every RECOUNT_NS). Naps grow to POLL_MAX_US. */
#define POLL_MIN_US 100u
#define POLL_MAX_US 5000u
#define RECOUNT_NS 100000000ull

int msgbus_wait_subscribers(msgbus_bus *b, const char *subject, unsigned n, int timeout_ms)
{
	size_t slen;
	bool wild;
	if (!b || timeout_ms < -1 || mb_subject_check(subject, &slen, false, &wild) ||
	    mb_subject_internal(subject, slen))
		return MSGBUS_EINVAL;
	uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : mb_deadline(timeout_ms);
	unsigned nap = POLL_MIN_US;
	for (;;) {
		/* msgbus_shutdown ends the wait within one nap (POLL_MAX_US). */
		if (mb_closing(b))
			return MSGBUS_ECLOSED;
		/* Acquire: pairs with the release increment in subscribe.c,
		 * after the slot became ACTIVE. */
		uint32_t gen = atomic_load_explicit(&b->hdr->interest_gen, memory_order_acquire);
		if (count_subscribers(b, subject, slen) >= n)
			return MSGBUS_OK;
		uint64_t recount = mb_now_ns() + RECOUNT_NS;
		for (;;) {
			if (mb_closing(b))
				return MSGBUS_ECLOSED;
			uint64_t now = mb_now_ns();
			if (now >= deadline)
				return MSGBUS_ETIMEDOUT;
			if (now >= recount ||
			    atomic_load_explicit(&b->hdr->interest_gen, memory_order_relaxed) != gen)
				break;
			uint64_t left_us = (deadline - now) / 1000u + 1;
			mb_nap_us(left_us < nap ? (unsigned)left_us : nap);
			nap = nap * 2 > POLL_MAX_US ? POLL_MAX_US : nap * 2;
		}
	}
}
