/*
 * inbox.c - the inbox ring: reserve, commit, abort, peek, consume, flush.
 *
 * Words. The data area is a sequence of 8-byte words; which of them are
 * record headers depends on the lap, so every word of free space carries a
 * FREE tag: FREE(q) = (q ^ key) with the state bits clear, q being the
 * position the word will have when it is next used. A header word is
 *   check:19 | size/8:28 | owner:14 | state:3
 * with check = bits of (q ^ key) >> 3, so a header found at the wrong place
 * or a stray byte pattern is refused (EPROTO) instead of being followed.
 *
 * Claim. A producer reads the reserve hint r, checks room against its cached
 * copy of the consumer's release (re-read only when the ring looks full),
 * and CASes the word at r from FREE(r) to CLAIMED(owner, size): the claim
 * and the owner's name are one atomic step, so there is no instant in which
 * space is taken by nobody. It then moves the hint from r to r + size by
 * CAS; anyone who finds a header at the hint does that for it, so a producer
 * that dies after its claim blocks nobody. A producer that read the hint a
 * lap ago expects FREE(r) where the word now holds FREE(r + k * size), a
 * header or payload, and fails; the hint never repeats a value, so helping
 * from a stale value fails too. A record that would cross the end of the
 * area is preceded by a PAD record claimed the same way.
 *
 * Commit and abort turn CLAIMED into COMMITTED or ABORTED by CAS, with
 * release; the consumer's acquire load of the header then sees the record.
 * A consumer that finds CLAIMED for long asks the caller whether the owner
 * is dead, and if so CASes it to ABORTED itself; the owner's commit CAS then
 * fails (which an exact liveness test never lets happen to a live owner).
 *
 * Release. The consumer keeps a cursor and, in batches (and before it
 * sleeps or reports "empty"), writes the FREE tags of the next lap over
 * everything it consumed, then stores the new release position: producers
 * load it with acquire before they claim, so they find clean tags.
 *
 * Waiting: eventcounts (wait.h). data_ec for the consumer, space_ec for
 * producers that wait for room; each side wakes the other only if it sleeps.
 */
#include "inbox.h"
#include "msgbus.h"
#include "wait.h"

#include <string.h>

enum { IB_FREE = 0, IB_CLAIMED = 1, IB_COMMITTED = 2, IB_ABORTED = 3, IB_PAD = 4 };
#define IB_STATE_MASK 7ull
#define IB_OWNER_SHIFT 3
#define IB_UNITS_SHIFT 17
#define IB_UNITS_MASK ((1ull << 28) - 1)
#define IB_CHECK_SHIFT 45
#define IB_CHECK_MASK ((1ull << 19) - 1)

/* Claims in a row that make no progress before the ring is called corrupt. */
#define IB_BAD_LIMIT 64u
/* Polls of the same CLAIMED head between two asks whether its owner died. */
#define IB_STUCK_POLLS 1024u
/* A producer waiting for room re-checks at least this often. */
#define IB_ROOM_RECHECK_NS 10000000ull

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

static inline uint64_t free_tag(const struct mb_inbox *ib, uint64_t pos)
{
	return (pos ^ ib->key) & ~IB_STATE_MASK;
}

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
static uint64_t hdr_size(const struct mb_inbox *ib, uint64_t pos, uint64_t h)
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

/* A key per inbox, so that payload bytes match no FREE tag by accident. */
static uint64_t new_key(const void *where)
{
	uint64_t z = mb_now_ns() ^ (uint64_t)(uintptr_t)where ^ 0x9e3779b97f4a7c15ull;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Write FREE tags for positions [from, to) as they will be used next. */
static void clean(const struct mb_inbox *ib, uint64_t from, uint64_t to, uint64_t lap)
{
	while (from < to) {
		uint64_t off = from & ib->mask;
		uint64_t end = to - from < ib->size - off ? off + (to - from) : ib->size;
		_Atomic uint64_t *w = word_at(ib, from);
		uint64_t tag = from + lap;

		for (uint64_t o = off; o < end; o += 8, tag += 8)
			/* Relaxed: published by the store of release that
			 * follows (mb_inbox_flush) or by the caller's own
			 * publication of a new inbox (mb_inbox_format). */
			atomic_store_explicit(w++, free_tag(ib, tag), memory_order_relaxed);
		from += end - off;
	}
}

int mb_inbox_format(void *base, uint64_t seg_size, uint64_t ctl_off, uint64_t data_off,
                    uint64_t data_size)
{
	struct mb_inbox ib;
	struct mb_inbox_ctl *ctl;

	if (!placement_ok(base, seg_size, ctl_off, data_off, data_size))
		return MSGBUS_EINVAL;
	ctl = (struct mb_inbox_ctl *)(void *)((unsigned char *)base + ctl_off);
	memset(ctl, 0, sizeof(*ctl));
	ctl->key = new_key(ctl);
	ctl->size = data_size;
	ib.ctl = ctl;
	ib.data = (unsigned char *)base + data_off;
	ib.size = data_size;
	ib.mask = data_size - 1;
	ib.key = ctl->key;
	clean(&ib, 0, data_size, 0);
	return 0;
}

int mb_inbox_attach(struct mb_inbox *ib, void *base, uint64_t seg_size, uint64_t ctl_off,
                    uint64_t data_off, uint64_t data_size)
{
	const volatile struct mb_inbox_ctl *vc;

	if (!placement_ok(base, seg_size, ctl_off, data_off, data_size))
		return MSGBUS_EINVAL;
	ib->ctl = (struct mb_inbox_ctl *)(void *)((unsigned char *)base + ctl_off);
	vc = ib->ctl;
	/* Read once: the rest of the code uses only these copies. */
	if (vc->size != data_size)
		return MSGBUS_EPROTO;
	ib->key = vc->key;
	ib->data = (unsigned char *)base + data_off;
	ib->size = data_size;
	ib->mask = data_size - 1;
	return 0;
}

/* ---- producers ------------------------------------------------------------ */

void mb_inbox_prod_init(struct mb_inbox_prod *p, const struct mb_inbox *ib, uint32_t owner,
                        uint64_t spin_ns)
{
	p->ib = *ib;
	/* Relaxed: a first guess; room() re-reads it with acquire when it
	 * matters. */
	p->release_cache = atomic_load_explicit(&ib->ctl->release, memory_order_relaxed);
	p->owner = owner & MB_OWNER_MAX;
	p->spin_ns = spin_ns;
}

enum { ROOM_OK, ROOM_FULL, ROOM_BAD };

/* Is [r, r + need) free? Re-reads the consumer's release only if our copy
 * says no. ROOM_BAD: r is behind release or over a lap ahead of it. */
static int room(struct mb_inbox_prod *p, uint64_t r, uint64_t need)
{
	uint64_t n = p->ib.size, used;

	if (r - p->release_cache <= n - need)
		return ROOM_OK;
	/* Acquire: pairs with the seq_cst store in mb_inbox_flush, so the
	 * FREE tags the consumer wrote before it are what our claim sees. */
	p->release_cache = atomic_load_explicit(&p->ib.ctl->release, memory_order_acquire);
	used = r - p->release_cache;
	if (used <= n - need)
		return ROOM_OK;
	return used > n ? ROOM_BAD : ROOM_FULL;
}

struct room_wait {
	uint64_t deadline;
	struct mb_spin spin;
};

/* One round of waiting for room: 0 to retry, or an error. */
static int wait_room(struct mb_inbox_prod *p, struct room_wait *w, uint64_t r, uint64_t need)
{
	struct mb_inbox_ctl *ctl = p->ib.ctl;
	uint64_t now, until, rel;
	uint32_t v;

	if (w->deadline == MB_NO_WAIT)
		return MSGBUS_EAGAIN;
	if (mb_spinning(&w->spin, p->spin_ns))
		return 0;
	now = mb_now_ns();
	if (now >= w->deadline)
		return MSGBUS_ETIMEDOUT;
	v = mb_ec_prepare(&ctl->space_ec);
	/* seq_cst: pairs with the seq_cst store of release in mb_inbox_flush
	 * (Dekker with its mb_ec_signal): we see the room or it sees WAITERS.
	 * Includes acquire, as in room(). */
	rel = atomic_load_explicit(&ctl->release, memory_order_seq_cst);
	p->release_cache = rel;
	/* Relaxed: the hint only tells whether to look again. */
	if (r - rel <= p->ib.size - need ||
	    atomic_load_explicit(&ctl->reserve, memory_order_relaxed) != r)
		return 0;
	until = now + IB_ROOM_RECHECK_NS < w->deadline ? now + IB_ROOM_RECHECK_NS : w->deadline;
	mb_ec_sleep(&ctl->space_ec, v, now, until);
	return 0;
}

/* Move the reserve hint past the record at r. Relaxed: the hint carries no
 * data; every claim checks the word itself. A failure means someone else
 * moved it (the hint never returns to a value, so a stale r fails). */
static void advance(const struct mb_inbox *ib, uint64_t r, uint64_t size)
{
	atomic_compare_exchange_strong_explicit(&ib->ctl->reserve, &r, r + size,
	                                        memory_order_relaxed, memory_order_relaxed);
}

enum { CLAIM_OK, CLAIM_RETRY, CLAIM_BAD };

/* Claim [r, r + size) with header h. */
static int claim(const struct mb_inbox *ib, uint64_t r, uint64_t size, uint64_t h)
{
	uint64_t seen = free_tag(ib, r);
	uint64_t other;

	/* Relaxed: the FREE tag was made visible by the acquire in room();
	 * what we write is published by the commit, and a PAD carries
	 * nothing. */
	if (atomic_compare_exchange_strong_explicit(word_at(ib, r), &seen, h,
	                                            memory_order_relaxed,
	                                            memory_order_relaxed)) {
		advance(ib, r, size);
		return CLAIM_OK;
	}
	other = hdr_size(ib, r, seen);
	if (other) {
		advance(ib, r, other); /* help the producer that beat us */
		return CLAIM_RETRY;
	}
	/* Not a header for r: the ring moved on since we read the hint (it
	 * then moved too), or the word is corrupt. Relaxed: a hint. */
	if (atomic_load_explicit(&ib->ctl->reserve, memory_order_relaxed) != r)
		return CLAIM_RETRY;
	return CLAIM_BAD;
}

static void fill_res(const struct mb_inbox *ib, uint64_t r, uint64_t h, uint32_t subject_len,
                     uint32_t payload_len, struct mb_inbox_res *res)
{
	unsigned char *rec = ib->data + (r & ib->mask);
	uint64_t info = (uint64_t)subject_len | (uint64_t)payload_len << 32;

	memcpy(rec + 8, &info, sizeof(info));
	res->pos = r;
	res->hdr = h;
	res->subject = rec + MB_INBOX_REC_HDR;
	res->payload = rec + MB_INBOX_REC_HDR + align8(subject_len);
}

int mb_inbox_reserve(struct mb_inbox_prod *p, uint32_t subject_len, uint32_t payload_len,
                     uint64_t deadline, struct mb_inbox_res *res)
{
	const struct mb_inbox *ib = &p->ib;
	uint64_t size = rec_size(subject_len, payload_len);
	struct room_wait w = { deadline, { 0, 0 } };
	unsigned bad = 0;

	if (size > ib->size / 2)
		return MSGBUS_EMSGSIZE;
	for (;;) {
		/* Relaxed: a hint, checked by the claim. */
		uint64_t r = atomic_load_explicit(&ib->ctl->reserve, memory_order_relaxed);
		uint64_t contig = ib->size - (r & ib->mask);
		bool pad = contig < size;
		uint64_t h;
		int rc = r % 8 ? ROOM_BAD : room(p, r, pad ? contig + size : size);

		if (rc == ROOM_FULL) {
			rc = wait_room(p, &w, r, pad ? contig + size : size);
			if (rc)
				return rc;
			continue;
		}
		if (rc == ROOM_OK) {
			h = make_hdr(ib, r, pad ? IB_PAD : IB_CLAIMED, p->owner, pad ? contig : size);
			rc = claim(ib, r, pad ? contig : size, h);
			if (rc == CLAIM_OK && !pad) {
				fill_res(ib, r, h, subject_len, payload_len, res);
				return 0;
			}
			if (rc != CLAIM_BAD)
				continue;
		}
		if (++bad > IB_BAD_LIMIT)
			return MSGBUS_EPROTO;
	}
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
	mb_ec_signal(&p->ib.ctl->data_ec);
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
	c->released = c->cursor;
	c->flush_bytes = ib->size / 4;
	c->stuck_pos = UINT64_MAX;
	c->owner_dead = owner_dead;
	c->owner_ctx = owner_ctx;
	c->spin_ns = spin_ns;
	c->check_ns = check_ns;
}

void mb_inbox_flush(struct mb_inbox_cons *c)
{
	struct mb_inbox_ctl *ctl = c->ib.ctl;

	if (c->cursor == c->released)
		return;
	clean(&c->ib, c->released, c->cursor, c->ib.size);
	c->released = c->cursor;
	/* seq_cst: a release that orders the cleaning before producers'
	 * claims (pairs with the acquire in room()), and the first half of
	 * the Dekker pair with mb_ec_prepare in wait_room. */
	atomic_store_explicit(&ctl->release, c->released, memory_order_seq_cst);
	mb_ec_signal(&ctl->space_ec);
}

void mb_inbox_consume(struct mb_inbox_cons *c)
{
	c->cursor += c->cur_size;
	c->cur_size = 0;
	if (c->cursor - c->released >= c->flush_bytes)
		mb_inbox_flush(c);
}

/* A CLAIMED head whose owner the caller says is dead: abort it. true when
 * the head may have changed (read it again). */
static bool abort_if_dead(struct mb_inbox_cons *c, uint64_t pos, uint64_t h)
{
	uint64_t seen = h;

	if (!c->owner_dead || !c->owner_dead(c->owner_ctx, hdr_owner(h)))
		return false;
	/* Acquire on success: orders our later cleaning of the record after
	 * whatever the dead owner wrote. A failure (the owner committed after
	 * all) is read again by the caller. */
	atomic_compare_exchange_strong_explicit(word_at(&c->ib, pos), &seen,
	                                        with_state(h, IB_ABORTED),
	                                        memory_order_acquire, memory_order_relaxed);
	return true;
}

/* The same, at most every IB_STUCK_POLLS polls of one position: a liveness
 * test may cost a system call, and a CLAIMED head is usually a producer
 * still copying. */
static bool stuck(struct mb_inbox_cons *c, uint64_t pos, uint64_t h)
{
	if (pos != c->stuck_pos) {
		c->stuck_pos = pos;
		c->stuck_polls = 0;
	}
	if (++c->stuck_polls % IB_STUCK_POLLS)
		return false;
	return abort_if_dead(c, pos, h);
}

static int deliver(struct mb_inbox_cons *c, uint64_t pos, uint64_t h, uint64_t size,
                   struct mb_inbox_msg *m)
{
	const unsigned char *rec = c->ib.data + (pos & c->ib.mask);
	uint64_t info;
	uint32_t sl, pl;

	memcpy(&info, rec + 8, sizeof(info)); /* once: validated below */
	sl = (uint32_t)info;
	pl = (uint32_t)(info >> 32);
	if (MB_INBOX_REC_HDR + align8(sl) + (uint64_t)pl > size)
		return MSGBUS_EPROTO;
	m->subject = (const char *)rec + MB_INBOX_REC_HDR;
	m->subject_len = sl;
	m->owner = hdr_owner(h);
	m->payload = rec + MB_INBOX_REC_HDR + align8(sl);
	m->payload_len = pl;
	c->cur_size = size;
	return 0;
}

int mb_inbox_peek(struct mb_inbox_cons *c, struct mb_inbox_msg *m)
{
	const struct mb_inbox *ib = &c->ib;

	for (;;) {
		uint64_t pos = c->cursor, h, size;

		/* Acquire: pairs with the seq_cst CAS in finish() (commit or
		 * abort), so the record's contents are visible. */
		h = atomic_load_explicit(word_at(ib, pos), memory_order_acquire);
		if (h == free_tag(ib, pos)) {
			mb_inbox_flush(c); /* idle: give back what we read */
			return MSGBUS_EAGAIN;
		}
		size = hdr_size(ib, pos, h);
		/* Never past a lap from what we released: bounds every loop. */
		if (!size || pos + size - c->released > ib->size)
			return MSGBUS_EPROTO;
		switch (hdr_state(h)) {
		case IB_COMMITTED:
			return deliver(c, pos, h, size, m);
		case IB_CLAIMED:
			if (stuck(c, pos, h))
				continue;
			mb_inbox_flush(c);
			return MSGBUS_EAGAIN;
		default: /* ABORTED or PAD: skip */
			c->cursor = pos + size;
			if (c->cursor - c->released >= c->flush_bytes)
				mb_inbox_flush(c);
			continue;
		}
	}
}

/* One sleep of the consumer, after peek found nothing (and flushed). */
static void wait_data(struct mb_inbox_cons *c, uint64_t now, uint64_t deadline)
{
	struct mb_inbox_ctl *ctl = c->ib.ctl;
	_Atomic uint64_t *w = word_at(&c->ib, c->cursor);
	uint64_t until = deadline, h;
	uint32_t v;

	/* Relaxed: only compared below; the acquire is in peek. */
	h = atomic_load_explicit(w, memory_order_relaxed);
	if (hdr_state(h) == IB_CLAIMED && hdr_size(&c->ib, c->cursor, h)) {
		if (abort_if_dead(c, c->cursor, h))
			return;
	} else if (h != free_tag(&c->ib, c->cursor)) {
		return; /* it changed: peek again */
	}
	v = mb_ec_prepare(&ctl->data_ec);
	/* seq_cst: pairs with the seq_cst CAS in finish() (Dekker with its
	 * mb_ec_signal): we see the new header or it sees WAITERS. */
	if (atomic_load_explicit(w, memory_order_seq_cst) != h)
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
		if (mb_spinning(&spin, c->spin_ns))
			continue;
		now = mb_now_ns();
		if (now >= deadline)
			return MSGBUS_ETIMEDOUT;
		wait_data(c, now, deadline);
	}
}
