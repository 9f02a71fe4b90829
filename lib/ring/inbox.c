/*
 * inbox.c - the inbox ring: reserve, commit, abort, peek, consume, flush.
 *
 * The reserve word. pos/8:48 | holder:15 | locked:1. Positions are kept
 * modulo 2^51 bytes there and widened again next to a local position that
 * is known to be at most a lap away (the producer's cached release, the
 * consumer's cursor); the word never repeats a value within 2^51 bytes of
 * traffic, so a CAS from a stale value fails.
 *
 * Reserve. A producer reads the word (r, free), checks room against its
 * cached copy of the consumer's release (re-read only when the ring looks
 * full), CASes it to (r, locked by itself), writes a PAD record first if the
 * record would cross the end of the area, then either the CLAIMED header
 * (mb_inbox_reserve: the record is written and committed after the unlock)
 * or the whole record with a COMMITTED header (mb_inbox_put), and stores
 * (end, free). Claiming and naming the owner are one step, so no reserved
 * space is ever without an owner. Before it publishes a header (with
 * release), a producer zeroes the word after its record: the next
 * record's header. So the word at the consumer's cursor is always 0 or a
 * header of this lap, never a stale one, and the consumer polls it alone:
 * it never reads the producers' busy reserve line, except to look for a
 * dead lock holder. A producer that finds the word locked
 * spins, then naps; if it stays locked and the caller's exact liveness test
 * says the holder is dead, the waiter repairs it: the header the holder
 * wrote (if any) says how far to move the position, else the position
 * stays (see repair()). The consumer does the same when it waits at a
 * position locked by a dead holder.
 *
 * Header word: check:19 | size/8:28 | owner:14 | state:3, check being bits
 * of (pos ^ key) >> 3, so that a header met at the wrong place is refused.
 * CLAIMED -> COMMITTED or ABORTED by CAS with release (the owner), or
 * CLAIMED -> ABORTED by the consumer once the owner is dead; the owner's
 * commit then fails.
 *
 * Read. The consumer reads the header at its cursor (acquire): 0 means
 * nothing yet. It releases consumed space in batches (and always before it
 * reports "empty" or sleeps). A record ends at most a lap (less the
 * zeroed word) past the release, which bounds every walk.
 *
 * Waiting: eventcounts (wait.h). data_ec for the consumer, space_ec for
 * producers that wait for room; each side wakes the other only if it sleeps.
 * mb_inbox_put signals with the light fence of fence.h, so the consumer
 * calls mb_fence_heavy before its last look.
 */
#include "ring/inbox.h"
#include "platform/crash.h"
#include "platform/doorbell.h"
#include "msgbus.h"
#include "platform/fence.h"
#include "platform/platform.h"
#include "platform/wait.h"

#include <string.h>

enum { IB_CLAIMED = 1, IB_COMMITTED = 2, IB_ABORTED = 3, IB_PAD = 4 };
#define IB_RETRY (-1) /* internal: go round again */
#define IB_STATE_MASK 7ull
#define IB_OWNER_SHIFT 3
#define IB_UNITS_SHIFT 17
#define IB_UNITS_MASK ((1ull << 28) - 1)
#define IB_CHECK_SHIFT 45
#define IB_CHECK_MASK ((1ull << 19) - 1)

#define RW_POS_MASK ((1ull << 51) - 1)
#define RW_POS_SHIFT 13 /* pos/8 << 16 == pos << 13 */
#define RW_OWNER_MASK 0x7fffu
#define RW_LOCKED 1ull

/* Claims in a row that make no progress before the ring is called corrupt. */
#define IB_BAD_LIMIT 64u
/* Polls of the same CLAIMED or empty head between two liveness asks. */
#define IB_STUCK_POLLS 1024u
/* A producer waiting for room re-checks at least this often. */
#define IB_ROOM_RECHECK_NS 10000000ull
/* A consumer that could not run membarrier re-checks this often. */
#define IB_NO_FENCE_RECHECK_NS 1000000ull
/* The word after each record, zeroed before the record is published. */
#define IB_NEXT 8u

_Static_assert(MB_OWNER_MAX <= RW_OWNER_MASK, "owner fits the reserve word");
_Static_assert(MB_OWNER_MAX < (1u << (IB_UNITS_SHIFT - IB_OWNER_SHIFT)), "owner fits");
_Static_assert((MB_INBOX_MAX_SIZE >> 3) <= IB_UNITS_MASK, "record size fits");

static inline uint64_t align8(uint64_t n)
{
	return (n + 7) & ~7ull;
}

static inline _Atomic uint64_t *word_at(const struct mb_inbox *ib, uint64_t pos)
{
	return (_Atomic uint64_t *)(void *)(ib->data + (pos & ib->mask));
}

/* ---- the reserve word ----------------------------------------------------- */

static inline uint64_t rw_make(uint64_t pos, uint32_t owner, bool locked)
{
	return (pos & RW_POS_MASK & ~7ull) << RW_POS_SHIFT | (uint64_t)(owner & RW_OWNER_MASK) << 1 |
	       (locked ? RW_LOCKED : 0);
}

/* The position in w, widened to 64 bits as the first one >= near. */
static inline uint64_t rw_pos(uint64_t w, uint64_t near)
{
	return near + (((w >> RW_POS_SHIFT & ~7ull) - near) & RW_POS_MASK);
}

static inline uint32_t rw_owner(uint64_t w)
{
	return (uint32_t)(w >> 1) & RW_OWNER_MASK;
}

/* ---- headers -------------------------------------------------------------- */

static inline uint64_t check_bits(const struct mb_inbox *ib, uint64_t pos)
{
	return ((pos ^ ib->key) >> 3) & IB_CHECK_MASK;
}

static inline uint64_t make_hdr(const struct mb_inbox *ib, uint64_t pos, unsigned st,
                                uint32_t owner, uint64_t size)
{
	return check_bits(ib, pos) << IB_CHECK_SHIFT | (size >> 3) << IB_UNITS_SHIFT |
	       (uint64_t)(owner & MB_OWNER_MAX) << IB_OWNER_SHIFT | st;
}

static inline uint64_t with_state(uint64_t h, unsigned st)
{
	return (h & ~IB_STATE_MASK) | st;
}

static inline unsigned hdr_state(uint64_t h)
{
	return (unsigned)(h & IB_STATE_MASK);
}

static inline uint32_t hdr_owner(uint64_t h)
{
	return (uint32_t)(h >> IB_OWNER_SHIFT) & MB_OWNER_MAX;
}

/* The size of the record whose header h was read at pos, or 0 when h cannot
 * be one: wrong state or place, or a size that leaves the area. */
static inline uint64_t hdr_size(const struct mb_inbox *ib, uint64_t pos, uint64_t h)
{
	unsigned st = hdr_state(h);
	uint64_t size = ((h >> IB_UNITS_SHIFT) & IB_UNITS_MASK) << 3;
	uint64_t room = ib->size - (pos & ib->mask);

	if (st < IB_CLAIMED || st > IB_PAD || h >> IB_CHECK_SHIFT != check_bits(ib, pos))
		return 0;
	if (size < (st == IB_PAD ? 8u : MB_INBOX_REC_HDR) || size > room)
		return 0;
	if (st != IB_PAD && size > ib->size / 2)
		return 0;
	return size;
}

static uint64_t rec_size(uint32_t subject_len, uint32_t payload_len)
{
	return MB_INBOX_REC_HDR + align8(subject_len) + align8(payload_len);
}

uint32_t mb_inbox_max_payload(const struct mb_inbox *ib, uint32_t subject_len)
{
	uint64_t fixed = MB_INBOX_REC_HDR + align8(subject_len);
	uint64_t max = ib->size / 2;

	if (fixed >= max)
		return 0;
	return max - fixed > UINT32_MAX ? UINT32_MAX : (uint32_t)(max - fixed);
}

/* ---- placement ------------------------------------------------------------ */

static bool placement_ok(const void *base, uint64_t seg_size, uint64_t ctl_off,
                         uint64_t data_off, uint64_t data_size)
{
	uint64_t ctl_size = sizeof(struct mb_inbox_ctl);

	if (!base || (uintptr_t)base % MB_LINE || data_size < MB_INBOX_MIN_SIZE ||
	    data_size > MB_INBOX_MAX_SIZE || (data_size & (data_size - 1)))
		return false;
	if (ctl_off % MB_LINE || data_off % MB_LINE)
		return false;
	if (ctl_off > seg_size || seg_size - ctl_off < ctl_size || data_off > seg_size ||
	    seg_size - data_off < data_size)
		return false;
	return ctl_off + ctl_size <= data_off || data_off + data_size <= ctl_off;
}

/* A key per inbox: a header copied from another inbox fails its check. */
static uint64_t new_key(const void *where)
{
	uint64_t z = mb_now_ns() ^ (uint64_t)(uintptr_t)where ^ 0x9e3779b97f4a7c15ull;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

int mb_inbox_format(void *base, uint64_t seg_size, uint64_t ctl_off, uint64_t data_off,
                    uint64_t data_size)
{
	struct mb_inbox_ctl *ctl;

	if (!placement_ok(base, seg_size, ctl_off, data_off, data_size))
		return MSGBUS_EINVAL;
	ctl = (struct mb_inbox_ctl *)(void *)((unsigned char *)base + ctl_off);
	/* Relaxed, word by word rather than memset: a reaper of another
	 * participant may attach to this slot's inbox while we format it
	 * (live.c:reap walks every slot); it validates what it reads, and
	 * the subscription is published to publishers later. */
	atomic_store_explicit(&ctl->reserve, 0, memory_order_relaxed); /* (0, free) */
	atomic_store_explicit(&ctl->release, 0, memory_order_relaxed);
	atomic_store_explicit(&ctl->data_ec, 0, memory_order_relaxed);
	atomic_store_explicit(&ctl->space_ec, 0, memory_order_relaxed);
	atomic_store_explicit(&ctl->bell.state, 0, memory_order_relaxed);
	atomic_store_explicit(&ctl->bell.owner, 0, memory_order_relaxed);
	atomic_store_explicit(&ctl->bell.id, 0, memory_order_relaxed);
	__atomic_store_n(&ctl->key, new_key(ctl), __ATOMIC_RELAXED);
	__atomic_store_n(&ctl->size, data_size, __ATOMIC_RELAXED);
	/* Relaxed: the inbox is published to others later. The first header
	 * word reads "nothing yet" (a reused area holds an old lap). */
	atomic_store_explicit((_Atomic uint64_t *)(void *)((unsigned char *)base + data_off), 0,
	                      memory_order_relaxed);
	return 0;
}

int mb_inbox_attach(struct mb_inbox *ib, void *base, uint64_t seg_size, uint64_t ctl_off,
                    uint64_t data_off, uint64_t data_size)
{

	if (!placement_ok(base, seg_size, ctl_off, data_off, data_size))
		return MSGBUS_EINVAL;
	ib->ctl = (struct mb_inbox_ctl *)(void *)((unsigned char *)base + ctl_off);
	/* Read once: the rest of the code uses only these copies. Relaxed:
	 * a reaper may read a slot being formatted (see mb_inbox_format);
	 * what it reads is validated, never trusted. */
	if (__atomic_load_n(&ib->ctl->size, __ATOMIC_RELAXED) != data_size)
		return MSGBUS_EPROTO;
	ib->key = __atomic_load_n(&ib->ctl->key, __ATOMIC_RELAXED);
	ib->data = (unsigned char *)base + data_off;
	ib->size = data_size;
	ib->mask = data_size - 1;
	return 0;
}

/* ---- records ---------------------------------------------------------------- */

/* The record at pos with header h, size bytes (hdr_size checked), in m:
 * false when its lengths do not fit it. */
static bool view(const struct mb_inbox *ib, uint64_t pos, uint64_t h, uint64_t size,
                 struct mb_inbox_msg *m)
{
	const unsigned char *rec = ib->data + (pos & ib->mask);
	uint64_t info;
	uint32_t sl, pl;

	memcpy(&info, rec + 8, sizeof(info)); /* once: validated below */
	sl = (uint32_t)info;
	pl = (uint32_t)(info >> 32);
	if (MB_INBOX_REC_HDR + align8(sl) + (uint64_t)pl > size)
		return false;
	m->subject = (const char *)rec + MB_INBOX_REC_HDR;
	m->subject_len = sl;
	m->owner = hdr_owner(h);
	m->payload = rec + MB_INBOX_REC_HDR + align8(sl);
	m->payload_len = pl;
	return true;
}

/* What a dead owner's CLAIMED record h at pos (size bytes) becomes:
 * COMMITTED when keep says its owner had written it and begun committing
 * (a commit loop over several inboxes, pubsub/mark.c), else ABORTED. */
static unsigned settle(const struct mb_inbox *ib, uint64_t pos, uint64_t h, uint64_t size,
                       mb_rec_keep_fn keep, void *ctx)
{
	struct mb_inbox_msg m;

	return keep && view(ib, pos, h, size, &m) && keep(ctx, hdr_owner(h), &m) ? IB_COMMITTED
	                                                                        : IB_ABORTED;
}

/* ---- a dead lock holder --------------------------------------------------- */

/* Is the header at pos one that the holder of a reserve lock wrote, in
 * one of the states of mask (bit 1 << state)? Its size, or 0. */
static uint64_t holder_hdr(const struct mb_inbox *ib, uint64_t pos, uint32_t owner,
                           unsigned mask)
{
	/* Acquire: pairs with the release in publish_hdr(), if the dead
	 * holder got that far. */
	uint64_t h = atomic_load_explicit(word_at(ib, pos), memory_order_acquire);
	uint64_t size = hdr_size(ib, pos, h);

	return size && (mask >> hdr_state(h) & 1) && hdr_owner(h) == owner ? size : 0;
}

/* A record in any state: the consumer may have read or aborted it already. */
#define HOLDER_REC (1u << IB_CLAIMED | 1u << IB_COMMITTED | 1u << IB_ABORTED)

/*
 * The holder of lock word w died (the caller asked). Its claim: the headers
 * it wrote from the locked position on (a PAD, records; mb_inbox_put_many
 * writes a run of them under one hold), and the position moves past them
 * all (the consumer may have read them already: it reads headers as they
 * appear; it aborts the CLAIMED record of a dead owner), or none, and the
 * position stays. Each word it wrote was 0 when it wrote it (the zeroed
 * word after the record before, or the start of a lap zeroed before its
 * PAD), and it zeroed the word after each header before publishing it, so
 * the walk meets only its own headers and stops at a 0. near: a position
 * at most a lap below w's. true when the word is no longer w (read it
 * again).
 */
static bool repair(const struct mb_inbox *ib, uint64_t w, uint64_t near)
{
	uint64_t r = rw_pos(w, near), adv = 0, size;
	uint32_t owner = rw_owner(w);

	while (adv < ib->size &&
	       (size = holder_hdr(ib, r + adv, owner, HOLDER_REC | 1u << IB_PAD)) != 0)
		adv += size;
	if (r + adv - near > ib->size)
		adv = 0;
	/* seq_cst: a release, as unlock() (it is one). A failure: someone
	 * else repaired it first, or the word is not what we were told. */
	uint64_t seen = w;
	return atomic_compare_exchange_strong_explicit(&ib->ctl->reserve, &seen,
	                                               rw_make(r + adv, owner, false),
	                                               memory_order_seq_cst,
	                                               memory_order_relaxed) ||
	       seen != w;
}

/* Stuck on the same held lock or CLAIMED head: every IB_STUCK_POLLS polls,
 * ask whether its owner is dead (a liveness test may cost a system call;
 * a held lock or a CLAIMED head is almost always a live owner at work). */
struct stuck {
	uint64_t what, polls;
};

static bool stuck_ask(struct stuck *s, uint64_t what)
{
	if (what != s->what) {
		s->what = what;
		s->polls = 0;
	}
	return ++s->polls % IB_STUCK_POLLS == 0;
}

/* ---- producers ------------------------------------------------------------ */

void mb_inbox_prod_init(struct mb_inbox_prod *p, const struct mb_inbox *ib, uint32_t owner,
                        uint64_t spin_ns, mb_owner_dead_fn owner_dead, void *owner_ctx)
{
	p->ib = *ib;
	/* Acquire: pairs with the seq_cst store in mb_inbox_flush, like the
	 * load in room(). */
	p->release_cache = atomic_load_explicit(&ib->ctl->release, memory_order_acquire);
	p->owner = owner & MB_OWNER_MAX;
	p->spin_ns = spin_ns;
	p->owner_dead = owner_dead;
	p->owner_ctx = owner_ctx;
	p->stop = NULL;
}

/* Has the waiter's handle been shut down? seq_cst: pairs with the seq_cst
 * store of the flag, which is followed by a wake of every eventcount
 * (Dekker with our mb_ec_prepare: we see the flag or it sees WAITERS). */
static bool stopped(const _Atomic int *stop)
{
	return stop && atomic_load_explicit(stop, memory_order_seq_cst);
}

enum { ROOM_OK, ROOM_FULL, ROOM_BAD };

/* Is [r, r + need) free? Re-reads the consumer's release only if our copy
 * says no. ROOM_BAD: r is behind release or over a lap ahead of it. */
static int room(struct mb_inbox_prod *p, uint64_t r, uint64_t need)
{
	uint64_t n = p->ib.size, used;

	if (r - p->release_cache <= n - need)
		return ROOM_OK;
	/* Acquire: pairs with the seq_cst store in mb_inbox_flush: the
	 * consumer's reads of this space happen before our writes. */
	p->release_cache = atomic_load_explicit(&p->ib.ctl->release, memory_order_acquire);
	used = r - p->release_cache;
	if (used <= n - need)
		return ROOM_OK;
	return used > n ? ROOM_BAD : ROOM_FULL;
}

struct prod_wait {
	uint64_t deadline;
	struct mb_spin spin;
	struct stuck lock;
	unsigned bad;
};

/* One round of waiting for room: 0 to retry, or an error. */
static int wait_room(struct mb_inbox_prod *p, struct prod_wait *w, uint64_t r, uint64_t need)
{
	struct mb_inbox_ctl *ctl = p->ib.ctl;
	uint64_t now, until, rel;
	uint32_t v;

	if (w->deadline == MB_NO_WAIT)
		return MSGBUS_EAGAIN;
	if (stopped(p->stop))
		return MSGBUS_ECLOSED;
	if (mb_spinning(&w->spin, p->spin_ns))
		return 0;
	now = mb_now_ns();
	if (now >= w->deadline)
		return MSGBUS_ETIMEDOUT;
	v = mb_ec_prepare(&ctl->space_ec);
	if (stopped(p->stop))
		return MSGBUS_ECLOSED;
	/* seq_cst: pairs with the seq_cst store of release in mb_inbox_flush
	 * (Dekker with its mb_ec_signal): we see the room or it sees WAITERS.
	 * Includes the acquire of room(). */
	rel = atomic_load_explicit(&ctl->release, memory_order_seq_cst);
	p->release_cache = rel;
	if (r - rel <= p->ib.size - need || r - rel > p->ib.size)
		return 0; /* room, or our r is stale: look again */
	until = now + IB_ROOM_RECHECK_NS < w->deadline ? now + IB_ROOM_RECHECK_NS : w->deadline;
	mb_ec_sleep(&ctl->space_ec, v, now, until);
	return 0;
}

/* The reserve word is locked (w): another producer is writing a header,
 * which takes nanoseconds unless it was preempted or died. 0 to retry. */
static int wait_lock(struct mb_inbox_prod *p, struct prod_wait *w, uint64_t lw)
{
	uint64_t now;

	if (!stuck_ask(&w->lock, lw))
		return 0;
	if (p->owner_dead && p->owner_dead(p->owner_ctx, rw_owner(lw))) {
		/* Acquire: a fresh release, so near is within a lap. */
		p->release_cache = atomic_load_explicit(&p->ib.ctl->release, memory_order_acquire);
		if (repair(&p->ib, lw, p->release_cache))
			return 0;
	}
	if (w->deadline == MB_NO_WAIT)
		return MSGBUS_EAGAIN;
	if (stopped(p->stop))
		return MSGBUS_ECLOSED;
	now = mb_now_ns();
	if (now >= w->deadline)
		return MSGBUS_ETIMEDOUT;
	mb_nap_us(1); /* let a preempted holder run */
	return 0;
}

/* Give the reserve word back at position end. Release: publishes the
 * headers below end to the next holder (pairs with the acquire of its CAS
 * in try_lock) and to the walks below it (mb_inbox_count, reap, and the
 * consumer's look for a dead holder in unstick_empty). */
static void unlock(const struct mb_inbox *ib, uint64_t end, uint32_t owner)
{
	atomic_store_explicit(&ib->ctl->reserve, rw_make(end, owner, false), memory_order_release);
}

/* Zero the word after a record: the next header reads "nothing yet".
 * Relaxed: published by the release store of the record's header. */
static void zero_next(const struct mb_inbox *ib, uint64_t pos)
{
	atomic_store_explicit(word_at(ib, pos), 0, memory_order_relaxed);
}

/* Publish header h at pos. Release: the record's contents and the zeroed
 * word after it are written; pairs with the acquire in mb_inbox_peek. */
static void publish_hdr(const struct mb_inbox *ib, uint64_t pos, uint64_t h)
{
	atomic_store_explicit(word_at(ib, pos), h, memory_order_release);
}

/* We hold the lock at r: write a PAD header first if the record would
 * cross the end of the area. Returns where the record goes. */
static uint64_t place(struct mb_inbox_prod *p, uint64_t r, uint64_t size)
{
	const struct mb_inbox *ib = &p->ib;
	uint64_t contig = ib->size - (r & ib->mask);

	if (contig >= size)
		return r;
	zero_next(ib, r + contig); /* the start of the next lap */
	publish_hdr(ib, r, make_hdr(ib, r, IB_PAD, p->owner, contig));
	mb_crash_point("inbox_pad");
	return r + contig;
}

/* The bytes a record of size bytes takes at pos: a PAD to the end of the
 * area first if it would cross it, and the word zeroed after it. */
static uint64_t span(const struct mb_inbox *ib, uint64_t pos, uint64_t size)
{
	uint64_t contig = ib->size - (pos & ib->mask);

	return (contig < size ? contig + size : size) + IB_NEXT;
}

/* One attempt at the free word w: 0 with the lock held at *r, IB_RETRY,
 * or an error. */
static int try_lock(struct mb_inbox_prod *p, struct prod_wait *pw, uint64_t w, uint64_t size,
                    uint64_t *r)
{
	const struct mb_inbox *ib = &p->ib;
	uint64_t pos = rw_pos(w, p->release_cache);
	uint64_t need = span(ib, pos, size);
	int rc = room(p, pos, need);

	if (rc == ROOM_FULL) {
		rc = wait_room(p, pw, pos, need);
		return rc ? rc : IB_RETRY;
	}
	if (rc == ROOM_BAD) {
		/* Relaxed: only "did it move?". A word that stays bad is corrupt. */
		if (atomic_load_explicit(&ib->ctl->reserve, memory_order_relaxed) == w &&
		    ++pw->bad > IB_BAD_LIMIT)
			return MSGBUS_EPROTO;
		/* Acquire: as in room(). */
		p->release_cache = atomic_load_explicit(&ib->ctl->release, memory_order_acquire);
		return IB_RETRY;
	}
	/* Acquire: a lock; pairs with the seq_cst unlock of the last holder.
	 * Relaxed on failure: we read the word again. */
	if (!atomic_compare_exchange_strong_explicit(&ib->ctl->reserve, &w,
	                                             rw_make(pos, p->owner, true),
	                                             memory_order_acquire, memory_order_relaxed))
		return IB_RETRY;
	*r = pos;
	return 0;
}

/* Take the reserve lock with room for size bytes after it (and a PAD). */
static int lock_room(struct mb_inbox_prod *p, uint64_t size, uint64_t deadline, uint64_t *r)
{
	struct prod_wait pw = { deadline, { 0, 0 }, { 0, 0 }, 0 };

	for (;;) {
		/* Relaxed: only the CAS in try_lock takes it, from this exact
		 * value. */
		uint64_t w = atomic_load_explicit(&p->ib.ctl->reserve, memory_order_relaxed);
		int rc = (w & RW_LOCKED) ? wait_lock(p, &pw, w) : try_lock(p, &pw, w, size, r);

		if (rc == 0 && !(w & RW_LOCKED)) {
			mb_crash_point("inbox_locked");
			return 0;
		}
		if (rc > 0)
			return rc;
	}
}

static void write_info(unsigned char *rec, uint32_t subject_len, uint32_t payload_len)
{
	uint64_t info = (uint64_t)subject_len | (uint64_t)payload_len << 32;

	memcpy(rec + 8, &info, sizeof(info));
}

/* Lock the reserve word with room for a record of size bytes and place
 * it (after a PAD if it would cross the end): *at, lock held. */
static int claim(struct mb_inbox_prod *p, uint64_t size, uint64_t deadline, uint64_t *at)
{
	uint64_t r;
	int rc;

	if (size > p->ib.size / 2)
		return MSGBUS_EMSGSIZE;
	rc = lock_room(p, size, deadline, &r);
	if (rc)
		return rc;
	*at = place(p, r, size);
	return 0;
}

/* We hold the lock at pos: place one more record of size bytes there, as
 * claim() does, if there is room now (never waits). */
static bool claim_more(struct mb_inbox_prod *p, uint64_t pos, uint64_t size, uint64_t *at)
{
	if (size > p->ib.size / 2 || room(p, pos, span(&p->ib, pos, size)) != ROOM_OK)
		return false;
	*at = place(p, pos, size);
	return true;
}

int mb_inbox_reserve(struct mb_inbox_prod *p, uint32_t subject_len, uint32_t payload_len,
                     uint64_t deadline, struct mb_inbox_res *res)
{
	const struct mb_inbox *ib = &p->ib;
	uint64_t size = rec_size(subject_len, payload_len), at, h;
	unsigned char *rec;
	int rc = claim(p, size, deadline, &at);

	if (rc)
		return rc;
	h = make_hdr(ib, at, IB_CLAIMED, p->owner, size);
	zero_next(ib, at + size);
	publish_hdr(ib, at, h);
	unlock(ib, at + size, p->owner);
	mb_crash_point("inbox_reserved");
	rec = ib->data + (at & ib->mask);
	write_info(rec, subject_len, payload_len);
	res->pos = at;
	res->hdr = h;
	res->subject = rec + MB_INBOX_REC_HDR;
	res->payload = rec + MB_INBOX_REC_HDR + align8(subject_len);
	return 0;
}

/* Write a whole record at at, claimed with the lock held. Its header is
 * published by put_publish(). Returns the record. */
static unsigned char *put_write(const struct mb_inbox *ib, uint64_t at, const void *subject,
                                uint32_t subject_len, const void *payload, uint32_t payload_len)
{
	unsigned char *rec = ib->data + (at & ib->mask);

	write_info(rec, subject_len, payload_len);
	memcpy(rec + MB_INBOX_REC_HDR, subject, subject_len);
	if (payload_len)
		memcpy(rec + MB_INBOX_REC_HDR + align8(subject_len), payload, payload_len);
	return rec;
}

/* mb_inbox_put_many's inline copies: a subject of up to this many words,
 * a payload of up to this many bytes. */
#define PUT_HEAD_WORDS 16u
#define PUT_WORD_COPY_MAX 256u

/* The empty asm in the loops below keeps the compiler from turning them
 * back into the calls to memcpy they replace. */
#define NOT_MEMCPY(p) __asm__("" : "+r"(p))

/* n words from the aligned src to the aligned dst (in the record). */
static inline void copy_words(unsigned char *dst, const uint64_t *src, size_t n)
{
	for (size_t i = 0; i < n; i++, dst += 8) {
		NOT_MEMCPY(dst);
		memcpy(dst, &src[i], 8);
	}
}

/* len bytes (a few words) from src, aligned or not, to the aligned dst. */
static inline void copy_small(unsigned char *dst, const void *src, size_t len)
{
	const unsigned char *s = src;

	for (; len >= 8; len -= 8, s += 8, dst += 8) {
		uint64_t w;

		NOT_MEMCPY(dst);
		memcpy(&w, s, 8);
		memcpy(dst, &w, 8);
	}
	for (; len; len--) {
		NOT_MEMCPY(dst);
		*dst++ = *s++;
	}
}

/* Publish the record written at at COMMITTED: the word after it is zeroed
 * first (it is the next header), then the header with release. */
static inline void put_publish(struct mb_inbox_prod *p, uint64_t at, uint64_t size)
{
	zero_next(&p->ib, at + size);
	publish_hdr(&p->ib, at, make_hdr(&p->ib, at, IB_COMMITTED, p->owner, size));
}

/* Give the lock back at end and wake the consumer: the second half of the
 * Dekker pair with wait_data, whose mb_fence_heavy stands in for our fence. */
static void put_done(struct mb_inbox_prod *p, uint64_t end)
{
	unlock(&p->ib, end, p->owner);
	/* The second half of the Dekker pair with wait_data (and an arming
	 * owner of the bell), whose mb_fence_heavy stands in for our fence. */
	if (mb_ec_signal_light(&p->ib.ctl->data_ec))
		mb_bells_ring(&p->ib.ctl->data_ec, &p->ib.ctl->bell, 1);
}

int mb_inbox_put(struct mb_inbox_prod *p, const void *subject, uint32_t subject_len,
                 const void *payload, uint32_t payload_len, uint64_t deadline)
{
	uint64_t size = rec_size(subject_len, payload_len), at;
	int rc = claim(p, size, deadline, &at);

	if (rc)
		return rc;
	put_write(&p->ib, at, subject, subject_len, payload, payload_len);
	put_publish(p, at, size);
	mb_crash_point("inbox_put_written");
	put_done(p, at + size);
	return 0;
}

int mb_inbox_put_many(struct mb_inbox_prod *p, const void *subject, uint32_t subject_len,
                      uint32_t seq_off, uint64_t seq0, const struct mb_inbox_part *parts,
                      uint32_t n, uint32_t *done)
{
	uint64_t size, at, pos, first;
	uint32_t k;
	int rc;

	/* The subject, padded with zeros to whole words, when it is short:
	 * each record's copy is then a few word stores rather than a call
	 * to memcpy (a 64 B record's calls were a tenth of the run). */
	uint64_t head[PUT_HEAD_WORDS];
	size_t words = align8(subject_len) / 8;

	*done = 0;
	if (!n || (uint64_t)seq_off + 8 > subject_len)
		return MSGBUS_EINVAL;
	if (words <= PUT_HEAD_WORDS) {
		head[words - 1] = 0;
		memcpy(head, subject, subject_len);
	}
	size = rec_size(subject_len, parts[0].len);
	rc = claim(p, size, MB_NO_WAIT, &at);
	if (rc)
		return rc;
	first = at;
	for (k = 0;;) {
		uint64_t seq = seq0 + k;
		unsigned char *rec;

		if (words <= PUT_HEAD_WORDS && parts[k].len <= PUT_WORD_COPY_MAX) {
			rec = p->ib.data + (at & p->ib.mask);
			write_info(rec, subject_len, parts[k].len);
			copy_words(rec + MB_INBOX_REC_HDR, head, words);
			copy_small(rec + MB_INBOX_REC_HDR + words * 8, parts[k].data, parts[k].len);
		} else {
			rec = put_write(&p->ib, at, subject, subject_len, parts[k].data, parts[k].len);
		}
		memcpy(rec + MB_INBOX_REC_HDR + seq_off, &seq, sizeof(seq));
		/* Each record is published as mb_inbox_put publishes its one:
		 * the consumer may read it while we write the next. */
		put_publish(p, at, size);
		pos = at + size;
		if (++k == n)
			break;
		size = rec_size(subject_len, parts[k].len);
		if (pos + size - first > MB_INBOX_PUT_MANY_BYTES || !claim_more(p, pos, size, &at))
			break;
	}
	mb_crash_point("inbox_put_written");
	put_done(p, pos);
	*done = k;
	return 0;
}

/* CLAIMED -> st. seq_cst: a release that publishes the record (pairs with
 * the acquire load in mb_inbox_peek), and the first half of the Dekker pair
 * with mb_ec_prepare in wait_data: the consumer sees the new state or
 * mb_ec_signal sees WAITERS. */
static int finish(struct mb_inbox_prod *p, const struct mb_inbox_res *res, unsigned st)
{
	uint64_t seen = res->hdr;

	if (!atomic_compare_exchange_strong_explicit(word_at(&p->ib, res->pos), &seen,
	                                             with_state(res->hdr, st),
	                                             memory_order_seq_cst,
	                                             memory_order_relaxed))
		return seen == with_state(res->hdr, IB_ABORTED) ? MSGBUS_EPEERDIED : MSGBUS_EPROTO;
	mb_ec_signal_bell(&p->ib.ctl->data_ec, &p->ib.ctl->bell);
	return 0;
}

int mb_inbox_commit(struct mb_inbox_prod *p, const struct mb_inbox_res *res)
{
	return finish(p, res, IB_COMMITTED);
}

void mb_inbox_abort(struct mb_inbox_prod *p, const struct mb_inbox_res *res)
{
	(void)finish(p, res, IB_ABORTED); /* already aborted by a reader: fine */
}

/* ---- the consumer --------------------------------------------------------- */

void mb_inbox_cons_init(struct mb_inbox_cons *c, const struct mb_inbox *ib,
                        mb_owner_dead_fn owner_dead, void *owner_ctx, uint64_t spin_ns,
                        uint64_t check_ns)
{
	memset(c, 0, sizeof(*c));
	c->ib = *ib;
	/* Acquire: pairs with the seq_cst store of a previous consumer's
	 * mb_inbox_flush. Rounded to a word: a corrupt value then only makes
	 * peek report EPROTO. */
	c->cursor = atomic_load_explicit(&ib->ctl->release, memory_order_acquire) & ~7ull;
	c->released = c->woke = c->cursor;
	c->flush_bytes = ib->size / 4;
	c->stuck_pos = UINT64_MAX;
	c->owner_dead = owner_dead;
	c->owner_ctx = owner_ctx;
	c->spin_ns = spin_ns;
	c->check_ns = check_ns;
}

void mb_inbox_cons_keep(struct mb_inbox_cons *c, mb_rec_keep_fn keep, void *ctx)
{
	c->keep = keep;
	c->keep_ctx = ctx;
}

/* Give back every consumed byte now. wake: and wake producers waiting
 * for room; else only once a step (a sixty-fourth of the ring) was given
 * back since the last wake. */
static void give_back(struct mb_inbox_cons *c, bool wake)
{
	struct mb_inbox_ctl *ctl = c->ib.ctl;

	if (c->cursor == c->released)
		return;
	c->released = c->cursor;
	/* seq_cst: a release that orders our reads of the space before
	 * producers' writes (pairs with the acquire in room()), and the first
	 * half of the Dekker pair with mb_ec_prepare in wait_room. */
	atomic_store_explicit(&ctl->release, c->released, memory_order_seq_cst);
	if (!wake && c->released - c->woke < c->flush_bytes / 16)
		return;
	c->woke = c->released;
	/* A producer waited for room: give back each step from now on
	 * until we run dry. One record may not be room enough for it, and
	 * after this wake it may sleep again before the caller's relaxed
	 * look at WAITERS (recv.c: consume) would see it. */
	if (mb_ec_signal(&ctl->space_ec))
		c->eager = true;
}

void mb_inbox_flush(struct mb_inbox_cons *c)
{
	give_back(c, true);
}

void mb_inbox_give(struct mb_inbox_cons *c)
{
	give_back(c, false);
}

/* Nothing to read: give back what we read if it is a sixteenth of the
 * flush batch or more (a store and a wake check per message would cost a
 * tenth of a 64-byte message). Smaller amounts wait for the batch, or for
 * wait_data, which always flushes before it sleeps; a consumer that only
 * polls calls mb_inbox_flush itself before it stops. */
static void idle_flush(struct mb_inbox_cons *c)
{
	if (c->eager || c->cursor - c->released >= c->flush_bytes / 16)
		mb_inbox_flush(c);
	c->eager = false;
}

/* The owner of the CLAIMED head h at our cursor may be dead: then commit
 * or abort the record (settle). true when the word changed (read it
 * again): so a liveness test that says "dead" of a word we cannot change
 * never makes us loop. */
static bool unstick(struct mb_inbox_cons *c, uint64_t h)
{
	uint64_t seen = h, size = hdr_size(&c->ib, c->cursor, h);
	unsigned st;

	if (!size || !c->owner_dead || !c->owner_dead(c->owner_ctx, hdr_owner(h)))
		return false;
	st = settle(&c->ib, c->cursor, h, size, c->keep, c->keep_ctx);
	/* Acquire on success: orders our reads after whatever the dead owner
	 * wrote. A failure (it committed after all, or its reaper settled
	 * it) is read again. */
	return atomic_compare_exchange_strong_explicit(word_at(&c->ib, c->cursor), &seen,
	                                               with_state(h, st), memory_order_acquire,
	                                               memory_order_relaxed) ||
	       seen != h;
}

/* Nothing at our cursor yet. Is the reserve lock held by a dead owner, at
 * the cursor or below it (we read what it wrote)? Then repair it. true when
 * the caller should look again: repaired, or the position has moved past
 * the cursor (the header at the cursor is written). */
static bool unstick_empty(struct mb_inbox_cons *c)
{
	/* Acquire: pairs with the release in unlock(): a position past the
	 * cursor means the header at the cursor is written. */
	uint64_t w = atomic_load_explicit(&c->ib.ctl->reserve, memory_order_acquire);
	/* Its distance from the cursor, sign-extended from 51 bits: it may
	 * be below us (and below what we released since). */
	int64_t d = (int64_t)((rw_pos(w, c->cursor) - c->cursor) << (64 - 51)) >> (64 - 51);

	if (d > (int64_t)c->ib.size || d < -(int64_t)c->ib.size)
		return false; /* corrupt: producers report it; no spin here */
	if (d > 0)
		return true;
	return (w & RW_LOCKED) && c->owner_dead && c->owner_dead(c->owner_ctx, rw_owner(w)) &&
	       repair(&c->ib, w, c->cursor + (uint64_t)d);
}

bool mb_inbox_ready(const struct mb_inbox_cons *c)
{
	/* seq_cst: see inbox.h; pairs with the seq_cst CAS in finish() and
	 * (with mb_fence_heavy) the release in publish_hdr(). */
	uint64_t h = atomic_load_explicit(word_at(&c->ib, c->cursor), memory_order_seq_cst);

	return h && hdr_state(h) != IB_CLAIMED;
}

bool mb_inbox_drained(const struct mb_inbox_cons *c)
{
	/* Acquire: as in unstick_empty. */
	uint64_t w = atomic_load_explicit(&c->ib.ctl->reserve, memory_order_acquire);

	return !(w & RW_LOCKED) && rw_pos(w, c->cursor) == c->cursor;
}

/* Count polls of one stuck state; true every IB_STUCK_POLLS. */
static bool stuck_due(struct mb_inbox_cons *c, uint64_t what)
{
	struct stuck s = { c->stuck_pos, c->stuck_polls };
	bool due = stuck_ask(&s, what);

	c->stuck_pos = s.what;
	c->stuck_polls = s.polls;
	return due;
}

static int deliver(struct mb_inbox_cons *c, uint64_t pos, uint64_t h, uint64_t size,
                   struct mb_inbox_msg *m)
{
	if (!view(&c->ib, pos, h, size, m))
		return MSGBUS_EPROTO;
	c->cur_size = size;
	return 0;
}

int mb_inbox_peek(struct mb_inbox_cons *c, struct mb_inbox_msg *m)
{
	const struct mb_inbox *ib = &c->ib;

	for (;;) {
		uint64_t pos = c->cursor, h, size;

		/* Acquire: pairs with the release in publish_hdr() (put, PAD,
		 * CLAIMED) and the seq_cst CAS in finish() (commit or abort):
		 * the record's contents, and the zeroed word after it. */
		h = atomic_load_explicit(word_at(ib, pos), memory_order_acquire);
		if (!h) {
			if (stuck_due(c, pos) && unstick_empty(c))
				continue;
			idle_flush(c);
			return MSGBUS_EAGAIN;
		}
		size = hdr_size(ib, pos, h);
		/* Within a lap of what we released: bounds every loop. */
		if (!size || pos + size - c->released > ib->size - IB_NEXT)
			return MSGBUS_EPROTO;
		switch (hdr_state(h)) {
		case IB_COMMITTED:
			return deliver(c, pos, h, size, m);
		case IB_CLAIMED:
			if (stuck_due(c, pos) && unstick(c, h))
				continue;
			idle_flush(c);
			return MSGBUS_EAGAIN;
		default: /* ABORTED or PAD: skip */
			c->cursor = pos + size;
			if (c->cursor - c->released >= c->flush_bytes)
				mb_inbox_flush(c);
			continue;
		}
	}
}

/*
 * One sleep of the consumer, after peek found nothing. What we wait for is
 * a change of the header word at the cursor: 0 to a header (a put, whose
 * record is then complete, or a reserve, which signals again at its
 * commit), or CLAIMED to its commit or abort. Each is followed by a signal
 * of data_ec, so we announce the sleep, then read the word again:
 * unchanged means the change comes after our announcement and will wake
 * us. A put signals with the light fence, so our side runs the heavy one.
 */
static void wait_data(struct mb_inbox_cons *c, uint64_t now, uint64_t deadline)
{
	struct mb_inbox_ctl *ctl = c->ib.ctl;
	_Atomic uint64_t *watch = word_at(&c->ib, c->cursor);
	uint64_t until = deadline, seen;
	uint32_t v;

	mb_inbox_flush(c); /* before sleeping, always */
	/* Relaxed: only compared below (peek read it with acquire). */
	seen = atomic_load_explicit(watch, memory_order_relaxed);
	if (seen ? hdr_state(seen) != IB_CLAIMED || hdr_size(&c->ib, c->cursor, seen) == 0 ||
	                   unstick(c, seen)
	         : unstick_empty(c))
		return; /* changed since peek, or repaired: peek again */
	v = mb_ec_prepare(&ctl->data_ec);
	if (!mb_fence_heavy() && now + IB_NO_FENCE_RECHECK_NS < until)
		until = now + IB_NO_FENCE_RECHECK_NS;
	/* seq_cst: the second half of the Dekker pair with the commit CAS
	 * and its mb_ec_signal, and (with mb_fence_heavy) with put's
	 * publish_hdr and its mb_ec_signal_light: we see the change or the
	 * signal sees WAITERS. The same for a shutdown. */
	if (atomic_load_explicit(watch, memory_order_seq_cst) != seen || stopped(c->stop))
		return;
	if (c->check_ns && now + c->check_ns < until)
		until = now + c->check_ns;
	mb_ec_sleep(&ctl->data_ec, v, now, until);
}

int mb_inbox_peek_wait(struct mb_inbox_cons *c, struct mb_inbox_msg *m, uint64_t deadline)
{
	struct mb_spin spin = { 0, 0 };

	for (;;) {
		int rc = mb_inbox_peek(c, m);
		uint64_t now;

		if (rc != MSGBUS_EAGAIN || deadline == MB_NO_WAIT)
			return rc;
		if (stopped(c->stop))
			return MSGBUS_ECLOSED; /* checked after each wake */
		if (mb_spinning(&spin, c->spin_ns))
			continue;
		now = mb_now_ns();
		if (now >= deadline)
			return MSGBUS_ETIMEDOUT;
		wait_data(c, now, deadline);
	}
}

uint64_t mb_inbox_count(const struct mb_inbox *ib, uint64_t from)
{
	/* Acquire: pairs with the seq_cst unlock(): headers below it are
	 * written. */
	uint64_t w = atomic_load_explicit(&ib->ctl->reserve, memory_order_acquire);
	uint64_t end = rw_pos(w, from), pos = from, n = 0;

	if (end - from > ib->size)
		return 0;
	while (pos < end) {
		/* Acquire: pairs with the commit CAS, as in mb_inbox_peek. */
		uint64_t h = atomic_load_explicit(word_at(ib, pos), memory_order_acquire);
		uint64_t size = hdr_size(ib, pos, h);

		if (!size || size > end - pos)
			break; /* consumed and reused meanwhile, or corrupt */
		n += hdr_state(h) == IB_COMMITTED || hdr_state(h) == IB_CLAIMED;
		pos += size;
	}
	return n;
}

void mb_inbox_reap_owner(const struct mb_inbox *ib, uint32_t owner, mb_rec_keep_fn keep,
                         void *ctx)
{
	struct mb_inbox_ctl *ctl = ib->ctl;
	/* Acquire: pairs with the consumer's seq_cst flush; a fresh release
	 * keeps positions within a lap. */
	uint64_t rel = atomic_load_explicit(&ctl->release, memory_order_acquire);
	uint64_t w = atomic_load_explicit(&ctl->reserve, memory_order_acquire);
	uint64_t pos = rel & ~7ull, end;

	if ((w & RW_LOCKED) && rw_owner(w) == (owner & RW_OWNER_MASK))
		(void)repair(ib, w, pos);
	w = atomic_load_explicit(&ctl->reserve, memory_order_acquire);
	end = rw_pos(w, pos);
	if (end - pos > ib->size)
		return;
	while (pos < end) {
		/* Acquire: as in mb_inbox_peek. */
		uint64_t h = atomic_load_explicit(word_at(ib, pos), memory_order_acquire);
		uint64_t size = hdr_size(ib, pos, h);

		if (!size || size > end - pos)
			break; /* consumed and reused meanwhile, or corrupt */
		/* seq_cst, as finish(): the header of this lap only (check
		 * bits), so a record of a later lap is never touched. */
		if (hdr_state(h) == IB_CLAIMED && hdr_owner(h) == (owner & MB_OWNER_MAX))
			(void)atomic_compare_exchange_strong_explicit(
			        word_at(ib, pos), &h, with_state(h, settle(ib, pos, h, size, keep, ctx)),
			        memory_order_seq_cst, memory_order_relaxed);
		pos += size;
	}
	mb_ec_signal_bell(&ctl->data_ec, &ctl->bell);
}
