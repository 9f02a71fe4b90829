/*
 * control.c - the control plane: a lock for the rare operations that must
 * see each other (a subject appearing, a subscription joining), and the
 * subject table. The data path never takes the lock.
 *
 * The lock word holds its owner's participant index + 1, so a waiter can
 * tell a dead owner (steal) from a slow or stopped one (wait, bounded).
 */
#include "shm/control.h"
#include "shm/handle.h"
#include "shm/live.h"
#include "shm/subject.h"
#include "platform/crash.h"
#include "platform/wait.h"

#include <sched.h>
#include <string.h>

/* How long a call without a timeout of its own (subscribe, serve) waits
 * for a live holder, in crash bounds: a holder only keeps the lock for a
 * few microseconds, so one that keeps it this long is stopped. */
#define CTL_WAIT_CRASH_BOUNDS 5u
#define CTL_SPINS 64u       /* yields before napping between tries */
#define CTL_NAP_US 200u

uint64_t mb_ctl_deadline(msgbus_bus *b)
{
	return mb_now_ns() + (uint64_t)CTL_WAIT_CRASH_BOUNDS * b->cfg.crash_bound_ms * 1000000u;
}

static int ctl_taken(void)
{
	mb_crash_point("in_ctl_lock");
	return 0;
}

/* One attempt: 0 taken, else MSGBUS_EAGAIN. A holder no participant can
 * be (corrupt) is stolen from at once. A dead holder's lock is freed by
 * whoever finds it dead while it holds the dead slot (live.c): a CAS
 * after the check could take the lock from a new participant that reused
 * the index meanwhile. Whatever a dead holder half-did is repaired by the
 * idempotent steps of the next one. check: look whether the holder died
 * (a system call). */
static int ctl_try(msgbus_bus *b, bool check)
{
	uint32_t me = b->self + 1;
	uint32_t owner = 0;
	/* Taking the lock: seq_cst by default (acquire would do), here and
	 * below; pairs with the release in mb_ctl_unlock (and live.c's CAS that
	 * frees a dead holder's lock). */
	if (atomic_compare_exchange_strong(&b->hdr->ctl_owner, &owner, me))
		return ctl_taken();
	if (owner - 1 >= b->cfg.max_participants) /* also 0: freed since */
		return atomic_compare_exchange_strong(&b->hdr->ctl_owner, &owner, me)
		               ? ctl_taken()
		               : MSGBUS_EAGAIN;
	if (check && owner != me && !mb_part_alive(b, owner - 1)) {
		mb_crash_point("ctl_owner_dead");
		owner = 0;
		if (atomic_compare_exchange_strong(&b->hdr->ctl_owner, &owner, me))
			return ctl_taken();
	}
	return MSGBUS_EAGAIN;
}

/* deadline: absolute ns, or MB_NO_WAIT (one attempt, and a look at
 * whether the holder died: a system call, never a wait). */
int mb_ctl_lock(msgbus_bus *b, uint64_t deadline)
{
	if (deadline == MB_CTL_BOUND)
		deadline = mb_ctl_deadline(b);
	uint64_t next_check = 0;
	for (unsigned i = 0;; i++) {
		if (mb_closing(b))
			return MSGBUS_ECLOSED; /* each nap is short: no wake needed */
		/* The clock is read only here: the lock is rare, and a timeout
		 * of 0 must still look whether a holder died. */
		uint64_t now = mb_now_ns();
		bool check = now >= next_check;
		if (check)
			next_check = now + b->check_ns;
		if (ctl_try(b, check) == 0)
			return 0;
		if (deadline == MB_NO_WAIT)
			return MSGBUS_EAGAIN;
		if (now >= deadline)
			return MSGBUS_ETIMEDOUT;
		if (i < CTL_SPINS)
			sched_yield();
		else
			mb_nap_us(CTL_NAP_US);
	}
}

void mb_ctl_unlock(msgbus_bus *b)
{
	/* Release: what we did under the lock happens before the next holder's;
	 * pairs with the CAS in ctl_try. */
	atomic_store_explicit(&b->hdr->ctl_owner, 0, memory_order_release);
}

/* Copy topic t's name into the local cache once it is READY; the name is
 * untrusted and must be a valid subject. Caller holds b->lock. */
bool mb_topic_refresh(msgbus_bus *b, uint32_t t)
{
	struct mb_topic_cache *tc = &b->topics[t];
	/* Acquire: pairs with the release store of known below (process-local
	 * cache, filled under b->lock). */
	if (atomic_load_explicit(&tc->known, memory_order_acquire))
		return true;
	struct mb_topic *tp = mb_topic_at(b, t);
	/* Acquire: pairs with the release store of READY in topic_create: the
	 * name is written. */
	if (atomic_load_explicit(&tp->state, memory_order_acquire) != MB_TOPIC_READY)
		return false;
	uint32_t len = tp->name_len;
	size_t checked;
	if (len > MB_SUBJECT_MAX)
		return false;
	memcpy(tc->name, tp->name, len);
	tc->name[len] = '\0';
	if (mb_subject_check(tc->name, &checked, false, NULL) || checked != len)
		return false;
	tc->hash = mb_hash(tc->name, len);
	/* Release: the cached name and hash are written; pairs with the acquire
	 * loads of known here and in cached_is. */
	atomic_store_explicit(&tc->known, 1, memory_order_release);
	return true;
}

static bool cached_is(msgbus_bus *b, uint32_t t, const char *s, size_t len, uint64_t hash)
{
	struct mb_topic_cache *tc = &b->topics[t];
	/* Acquire: as in mb_topic_refresh. */
	return atomic_load_explicit(&tc->known, memory_order_acquire) && tc->hash == hash &&
	       memcmp(tc->name, s, len) == 0 && tc->name[len] == '\0';
}

int mb_topic_find(msgbus_bus *b, const char *s, size_t len, uint64_t hash, uint32_t *topic)
{
	uint32_t n = b->cfg.max_subjects;
	uint32_t h = (uint32_t)(hash % n);
	for (uint32_t k = 0; k < n; k++) {
		uint32_t t = (h + k) % n;
		if (cached_is(b, t, s, len, hash)) {
			*topic = t;
			return 0;
		}
	}
	pthread_mutex_lock(&b->lock);
	for (uint32_t t = 0; t < n; t++)
		mb_topic_refresh(b, t);
	pthread_mutex_unlock(&b->lock);
	for (uint32_t t = 0; t < n; t++) {
		if (cached_is(b, t, s, len, hash)) {
			*topic = t;
			return 0;
		}
	}
	return MSGBUS_ENOENT;
}

/* Register every subscription whose pattern matches topic t. */
static void add_matching_cursors(msgbus_bus *b, uint32_t t, const char *s, size_t len)
{
	for (uint32_t i = 0; i < b->cfg.max_subs; i++) {
		struct mb_subslot *ss = mb_subslot_at(b, i);
		struct mb_cursor *c = mb_cursor_at(b, t, i);
		/* Under the control lock, which orders every subscription's
		 * join: the cursor words below are published by the release
		 * store of READY in topic_create. Relaxed, here and for the
		 * stores, for that reason. */
		uint64_t w = atomic_load_explicit(&ss->word, memory_order_relaxed);
		uint32_t plen = ss->pattern_len;
		atomic_store_explicit(&c->gen, 0, memory_order_relaxed);
		bool queue = MB_SUBW_FLAGS(w) & MB_SUBF_QUEUE;
		if (MB_SUBW_STATE(w) == MB_SUB_FREE || plen > MB_SUBJECT_MAX ||
		    mb_subject_internal(s, len) != queue ||
		    !mb_subject_match(ss->pattern, plen, s, len))
			continue;
		atomic_store_explicit(&c->release, 0, memory_order_relaxed);
		atomic_store_explicit(&c->gen, MB_SUBW_GEN(w), memory_order_relaxed);
		atomic_fetch_or_explicit(&mb_topic_at(b, t)->cursor_mask[i / 64], 1ull << (i % 64),
		                         memory_order_relaxed);
	}
}

/* Create topic t named s in a FREE slot, or in one whose creator died
 * (INIT). Caller holds the control lock. */
static void topic_create(msgbus_bus *b, uint32_t t, const char *s, size_t len, uint64_t hash)
{
	struct mb_topic *tp = mb_topic_at(b, t);
	/* Under the control lock; the topic's words below are published by the
	 * release store of READY. Relaxed: these stores pair with nothing. */
	atomic_store_explicit(&tp->state, MB_TOPIC_INIT, memory_order_relaxed);
	memcpy(tp->name, s, len);
	tp->name[len] = '\0';
	tp->name_len = (uint32_t)len;
	tp->name_hash = hash;
	atomic_store_explicit(&tp->tail, 0, memory_order_relaxed);
	atomic_store_explicit(&tp->gate, 0, memory_order_relaxed);
	for (uint32_t i = 0; i < MB_MAX_SUBS / 64; i++)
		atomic_store_explicit(&tp->cursor_mask[i], 0, memory_order_relaxed);
	uint64_t n = b->cfg.ring_slots;
	for (uint64_t p = 0; p < n; p++)
		atomic_store_explicit(&mb_slot_at(b, t, p)->stamp, mb_stamp(p - n, 0, MB_ST_ABORTED),
		                      memory_order_relaxed);
	add_matching_cursors(b, t, s, len);
	/* Release: the name, ring and cursors are set; pairs with the acquire
	 * loads of state in mb_topic_refresh and readers of the topic. */
	atomic_store_explicit(&tp->state, MB_TOPIC_READY, memory_order_release);
	/* Relaxed: nothing in lib/ reads topics_gen any more (v1's subject
	 * table watchers). */
	atomic_fetch_add_explicit(&b->hdr->topics_gen, 1, memory_order_relaxed);
	mb_ec_kick(&b->hdr->any_ec); /* wildcard subscribers pick it up */
}

int mb_topic_get(msgbus_bus *b, const char *s, size_t len, uint64_t hash, uint64_t deadline,
                 uint32_t *topic)
{
	if (mb_topic_find(b, s, len, hash, topic) == 0)
		return 0;
	int rc = mb_ctl_lock(b, deadline);
	if (rc)
		return rc;
	/* Another handle may have created it while we waited. */
	if (mb_topic_find(b, s, len, hash, topic) == 0) {
		mb_ctl_unlock(b);
		return 0;
	}
	rc = MSGBUS_ELIMIT;
	/* Start at the hash so mb_topic_find's first probe usually hits. */
	for (uint32_t k = 0; k < b->cfg.max_subjects; k++) {
		uint32_t t = (uint32_t)((hash + k) % b->cfg.max_subjects);
		/* Relaxed: under the control lock, which orders every state
		 * change. */
		uint32_t st = atomic_load_explicit(&mb_topic_at(b, t)->state, memory_order_relaxed);
		if (st == MB_TOPIC_FREE || st == MB_TOPIC_INIT) {
			/* A ring gets its pages when its first name is given. */
			rc = mb_seg_back(b, b->geo.topics + t * b->geo.topic_stride,
			                 b->geo.topic_stride);
			if (rc)
				break;
			topic_create(b, t, s, len, hash);
			pthread_mutex_lock(&b->lock);
			mb_topic_refresh(b, t);
			pthread_mutex_unlock(&b->lock);
			*topic = t;
			rc = 0;
			break;
		}
	}
	mb_ctl_unlock(b);
	return rc;
}
