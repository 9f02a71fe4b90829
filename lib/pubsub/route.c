/*
 * route.c - publishing into inboxes; see route.h.
 *
 * Per handle, a direct-mapped cache from subject to the matching
 * subscription slots, each entry stamped with the interest generation it
 * was computed at. Subscribe, unsubscribe and reaping bump the generation
 * with release after the slot changes; a publish loads it with acquire
 * first, so one that starts after a subscribe returned recomputes and sees
 * the new slot. The record carries the slot generation it was meant for: a
 * publisher that raced an unsubscribe leaves a record the next owner of
 * the slot skips.
 */
#include "shm/live.h"
#include "shm/subject.h"
#include "pubsub/route.h"
#include "pubsub/buffers.h"
#include "pubsub/bufpool.h"
#include "pubsub/inboxes.h"
#include "pubsub/mark.h"
#include "platform/crash.h"
#include "platform/wait.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define ROUTE_ENTRIES 256u
#define LOCAL_TARGETS 8u

struct target {
	uint32_t slot, gen;
	bool lossy;
};

struct route_entry {
	bool valid;
	uint32_t igen; /* interest generation it was computed at */
	uint32_t len;
	char subject[MB_SUBJECT_MAX + 1];
	uint32_t n;
	struct target *t; /* max_subs of them */
};

struct mb_route {
	uint64_t id; /* unique among the handles of this process, never 0 */
	pthread_mutex_t lock;
	uint32_t last_len; /* the subject validated last, if last_len */
	char last[MB_SUBJECT_MAX + 1];
	uint32_t last_e;   /* and its entry */
	struct route_entry e[ROUTE_ENTRIES];
	struct mb_inbox *ib; /* per slot: attached view */
	uint32_t *ib_gen;    /* per slot: generation ib was attached for, 0 none */
	/* The slots that were ACTIVE at interest generation act_igen (a
	 * subscribe makes its slot ACTIVE before it bumps the generation), so
	 * a subject never seen scans only them, not every slot. */
	bool act_valid;
	uint32_t act_igen, nact;
	uint32_t *act; /* max_subs of them */
};

/*
 * Per thread, the targets of the subject it published last, as lookup
 * computed them, and the inbox views: a publish of the same subject on
 * the same handle (route id) at the same interest generation uses them
 * without the route lock, its compares and its copies, and pays only for
 * the inbox writes (DESIGN.md section 4). The generation, loaded with
 * acquire after the last subscribe or unsubscribe bumped it (route.c's
 * header comment), is what makes a stale entry fail; the id, unique in
 * the process and never reused, that a handle closed and another opened
 * at the same address does not match. Only filled from a lookup, so the
 * subject was validated.
 */
struct tls_route {
	uint64_t id; /* 0: empty */
	uint32_t igen, len, n;
	char subject[MB_SUBJECT_MAX + 1];
	struct target t[LOCAL_TARGETS];
	struct mb_inbox ib[LOCAL_TARGETS];
};
static __thread struct tls_route tls_route;
static _Atomic uint64_t route_ids;

/* A target with the inbox view the publish uses, copied out of the cache. */
struct dest {
	struct target t;
	bool gone; /* left or died while we waited for room */
	bool filled; /* reserved and filled: commit_set commits it */
	struct mb_inbox_prod p;
	struct mb_inbox_res res;
};

int mb_route_init(msgbus_bus *b)
{
	struct mb_route *r = calloc(1, sizeof(*r));
	if (!r)
		return MSGBUS_ENOMEM;
	r->ib = calloc(b->cfg.max_subs, sizeof(*r->ib));
	r->ib_gen = calloc(b->cfg.max_subs, sizeof(*r->ib_gen));
	r->act = calloc(b->cfg.max_subs, sizeof(*r->act));
	if (!r->ib || !r->ib_gen || !r->act) {
		free(r->ib);
		free(r->ib_gen);
		free(r->act);
		free(r);
		return MSGBUS_ENOMEM;
	}
	pthread_mutex_init(&r->lock, NULL);
	/* Relaxed: only unique. */
	r->id = atomic_fetch_add_explicit(&route_ids, 1, memory_order_relaxed) + 1;
	b->route = r;
	return 0;
}

void mb_route_free(msgbus_bus *b)
{
	struct mb_route *r = b->route;
	if (!r)
		return;
	for (uint32_t i = 0; i < ROUTE_ENTRIES; i++)
		free(r->e[i].t);
	pthread_mutex_destroy(&r->lock);
	free(r->ib);
	free(r->ib_gen);
	free(r->act);
	free(r);
	b->route = NULL;
}

bool mb_route_owner_dead(void *bus, uint32_t owner)
{
	return !mb_part_alive(bus, owner);
}

/* Does live subscription slot s want subject? Its pattern is read once
 * into a local copy and bounded: the slot is shared memory. */
/*
 * A slot's pattern and its length, which a reserver may rewrite while we
 * copy once the slot was freed and taken again: readers throw such a copy
 * away (introspection re-reads the word; routing is recomputed when the
 * interest generation moves). The copy is byte by byte through a volatile
 * pointer, so it is never a memcpy call, and is not instrumented by
 * ThreadSanitizer: the race is by design. False when the length is out of
 * bounds.
 */
__attribute__((no_sanitize("thread"))) bool
mb_subslot_pattern(const struct mb_subslot *ss, char *out, uint32_t *plen)
{
	const volatile struct mb_subslot *v = ss;
	uint32_t len = v->pattern_len;
	if (len == 0 || len > MB_SUBJECT_MAX)
		return false;
	for (uint32_t i = 0; i < len; i++)
		out[i] = v->pattern[i];
	out[len] = '\0';
	*plen = len;
	return true;
}

static bool slot_matches(msgbus_bus *b, uint32_t s, uint64_t w, const char *subject,
                         size_t slen)
{
	char pat[MB_SUBJECT_MAX + 1];
	uint32_t plen;

	if (MB_SUBW_STATE(w) != MB_SUB_ACTIVE || (MB_SUBW_FLAGS(w) & MB_SUBF_QUEUE))
		return false;
	return mb_subslot_pattern(mb_subslot_at(b, s), pat, &plen) &&
	       mb_subject_match(pat, plen, subject, slen);
}

/* Slot s's inbox attached for generation gen: false if it is corrupt. */
static bool attach(msgbus_bus *b, struct mb_route *r, uint32_t s, uint32_t gen)
{
	if (r->ib_gen[s] == gen)
		return true;
	r->ib_gen[s] = 0;
	if (mb_inbox_attach(&r->ib[s], b->seg.base, b->seg.size, mb_inbox_ctl_off(b, s),
	                    mb_inbox_data_off(b, s), b->cfg.inbox_size))
		return false;
	r->ib_gen[s] = gen;
	return true;
}

/* The slot an alias slot s (word w) delivers to, in *t and *tw, or false
 * if it names no inbox of the same owner: corrupt shared memory never
 * routes into a foreign inbox. */
static bool alias_target(msgbus_bus *b, uint64_t w, uint32_t s, uint32_t *t, uint64_t *tw)
{
	uint32_t i = mb_subslot_at(b, s)->inbox_slot;
	if (i >= b->cfg.max_subs || i == s)
		return false;
	/* Acquire: pairs with the release store of ACTIVE in subscribe. */
	uint64_t iw = atomic_load_explicit(&mb_subslot_at(b, i)->word, memory_order_acquire);
	if (MB_SUBW_STATE(iw) != MB_SUB_ACTIVE || MB_SUBW_OWNER(iw) != MB_SUBW_OWNER(w) ||
	    (MB_SUBW_FLAGS(iw) & (MB_SUBF_ALIAS | MB_SUBF_QUEUE)))
		return false;
	*t = i;
	*tw = iw;
	return true;
}

/* Participant idx (untrusted: bounds-checked) is a link's handle. Relaxed:
 * the flag is set once, before that handle subscribes or publishes. */
static bool is_bridge(msgbus_bus *b, uint32_t idx)
{
	return idx < b->cfg.max_participants &&
	       (atomic_load_explicit(&mb_part_at(b, idx)->flags, memory_order_relaxed) &
	        MB_PARTF_BRIDGE);
}

static bool has_target(const struct route_entry *e, uint32_t s)
{
	for (uint32_t i = 0; i < e->n; i++)
		if (e->t[i].slot == s)
			return true;
	return false;
}

/* The ACTIVE slots as of interest generation igen, loaded (acquire) before
 * this: any slot that a subscribe made ACTIVE before its bump to igen is
 * listed. One that turns ACTIVE later bumps the generation again, and
 * every entry computed from this list is recomputed then. */
static void list_active(msgbus_bus *b, struct mb_route *r, uint32_t igen)
{
	if (r->act_valid && r->act_igen == igen)
		return;
	r->nact = 0;
	for (uint32_t s = 0; s < b->cfg.max_subs; s++) {
		/* Relaxed: only a hint of which slots to look at; recompute
		 * loads each listed word again with acquire. */
		uint64_t w = atomic_load_explicit(&mb_subslot_at(b, s)->word, memory_order_relaxed);
		if (MB_SUBW_STATE(w) == MB_SUB_ACTIVE)
			r->act[r->nact++] = s;
	}
	r->act_igen = igen;
	r->act_valid = true;
}

/* Recompute entry e for subject at interest generation igen. A message
 * goes once to each inbox, however many of its slots' patterns match. */
static int recompute(msgbus_bus *b, struct mb_route *r, struct route_entry *e,
                     const char *subject, size_t slen, uint32_t igen)
{
	if (!e->t && !(e->t = calloc(b->cfg.max_subs, sizeof(*e->t))))
		return MSGBUS_ENOMEM;
	e->valid = false;
	e->n = 0;
	/* A bridge's messages stay one hop: no link's subscription (a
	 * follower, a proxy, a watch: all on bridge handles) takes them, so
	 * a bridge does not write them there at all. */
	bool bridge = is_bridge(b, b->self);
	list_active(b, r, igen);
	for (uint32_t i = 0; i < r->nact; i++) {
		uint32_t s = r->act[i], t = s;
		/* Acquire: pairs with the release store of ACTIVE in subscribe,
		 * after the inbox was formatted and the pattern written. */
		uint64_t w = atomic_load_explicit(&mb_subslot_at(b, s)->word, memory_order_acquire);
		if (!slot_matches(b, s, w, subject, slen))
			continue;
		if ((MB_SUBW_FLAGS(w) & MB_SUBF_ALIAS) && !alias_target(b, w, s, &t, &w))
			continue;
		if (bridge && is_bridge(b, MB_SUBW_OWNER(w)))
			continue;
		if (has_target(e, t) || !attach(b, r, t, MB_SUBW_GEN(w)))
			continue;
		e->t[e->n].slot = t;
		e->t[e->n].gen = MB_SUBW_GEN(w);
		e->t[e->n].lossy = MB_SUBW_FLAGS(w) & MB_SUBF_LOSSY;
		e->n++;
	}
	memcpy(e->subject, subject, slen);
	e->len = (uint32_t)slen;
	e->igen = igen;
	e->valid = true;
	return 0;
}

static uint64_t route_hash(const char *s, size_t len)
{
	return mb_hash(s, len);
}

/* Validate subject (not again if it is the one validated last), find its
 * targets and copy them into d: *n of them (at most cap), of *total (more
 * than cap: the caller retries with room). Takes the route lock. */
static int lookup(msgbus_bus *b, const char *subject, size_t slen, struct dest *d, uint32_t cap,
                  uint32_t *n, uint32_t *total)
{
	struct mb_route *r = b->route;
	int rc = 0;
	pthread_mutex_lock(&r->lock);
	if (slen != r->last_len || memcmp(r->last, subject, slen)) {
		size_t l;
		bool wild;
		if (mb_subject_check(subject, &l, false, &wild) || mb_subject_internal(subject, l)) {
			pthread_mutex_unlock(&r->lock);
			return MSGBUS_EINVAL;
		}
		memcpy(r->last, subject, slen);
		r->last_len = (uint32_t)slen;
		r->last_e = (uint32_t)(route_hash(subject, slen) % ROUTE_ENTRIES);
	}
	struct route_entry *e = &r->e[r->last_e];
	/* Acquire: pairs with the release increments in subscribe.c and
	 * live.c, made after the slot changed. */
	uint32_t igen = atomic_load_explicit(&b->hdr->interest_gen, memory_order_acquire);
	if (!e->valid || e->igen != igen || e->len != slen || memcmp(e->subject, subject, slen))
		rc = recompute(b, r, e, subject, slen, igen);
	*n = 0;
	*total = 0;
	if (!rc) {
		struct tls_route *tr = &tls_route;
		*total = e->n;
		for (uint32_t i = 0; i < e->n && i < cap; i++, ++*n) {
			d[i].t = e->t[i];
			d[i].gone = false;
			d[i].filled = false;
			mb_inbox_prod_init(&d[i].p, &r->ib[e->t[i].slot], b->self, b->spin_ns,
			                   mb_route_owner_dead, b);
		}
		tr->id = 0;
		if (e->n <= LOCAL_TARGETS) {
			for (uint32_t i = 0; i < e->n; i++) {
				tr->t[i] = e->t[i];
				tr->ib[i] = r->ib[e->t[i].slot];
			}
			tr->n = e->n;
			tr->igen = igen;
			tr->len = (uint32_t)slen;
			memcpy(tr->subject, subject, slen);
			tr->id = r->id;
		}
	}
	pthread_mutex_unlock(&r->lock);
	return rc;
}

/* lookup from this thread's cache, without the lock: true when it holds
 * subject for b at the current interest generation (then *n and *total
 * are its targets, at most cap of them copied into d). */
static bool lookup_fast(msgbus_bus *b, const char *subject, size_t slen, struct dest *d,
                        uint32_t cap, uint32_t *n, uint32_t *total)
{
	struct tls_route *tr = &tls_route;
	if (tr->id != b->route->id || tr->len != slen || tr->n > cap ||
	    memcmp(tr->subject, subject, slen))
		return false;
	/* Acquire: as in lookup. */
	if (atomic_load_explicit(&b->hdr->interest_gen, memory_order_acquire) != tr->igen)
		return false;
	for (uint32_t i = 0; i < tr->n; i++) {
		d[i].t = tr->t[i];
		d[i].gone = false;
		d[i].filled = false;
		mb_inbox_prod_init(&d[i].p, &tr->ib[i], b->self, b->spin_ns, mb_route_owner_dead, b);
	}
	*n = *total = tr->n;
	return true;
}

/* The record: prefix and subject as the record's subject, then payload. */
struct rec {
	unsigned char head[sizeof(struct mb_rec_pfx) + MB_SUBJECT_MAX];
	uint32_t head_len;
	uint64_t seq; /* the prefix's: names the publish in a commit mark */
	const void *payload;
	uint32_t len;
	struct mb_bufctl *bc; /* a large message's buffer, else NULL */
	uint32_t noted;       /* records noted in bc->pub_put */
	bool shared;          /* bc marked SHARED by us */
};

/* A large message's buffer becomes SHARED, once, from before its first
 * record can be committed, with pub_put 0. The relaxed store of pub_put
 * is read by our reaper only once we are dead (live.c), when every store
 * we made is done; the SHARED store's release also publishes it to
 * whoever acquires the state. See deliver_large. */
static void share(msgbus_bus *b, struct rec *rc)
{
	if (rc->shared)
		return;
	atomic_store_explicit(&rc->bc->pub_put, 0, memory_order_relaxed);
	/* Release: pairs with the acquire of the state in
	 * live.c:drop_dead_publisher_ref and mark.c:large_counted, which
	 * then read pub_put. */
	atomic_store_explicit(&rc->bc->state, MB_BUF_SHARED(b->self), memory_order_release);
	rc->shared = true;
}

static void rec_gen(struct rec *rc, uint32_t gen)
{
	memcpy(rc->head, &gen, sizeof(gen)); /* sub_gen is the first member */
}

static void count_drop(msgbus_bus *b, uint32_t slot)
{
	/* Relaxed: a counter; the subscriber reads it for its stats. */
	atomic_fetch_add_explicit(&mb_subslot_at(b, slot)->dropped, 1, memory_order_relaxed);
}

static void fill(const struct rec *rc, const struct mb_inbox_res *res)
{
	memcpy(res->subject, rc->head, rc->head_len);
	if (rc->len)
		memcpy(res->payload, rc->payload, rc->len);
}

enum { TARGET_GONE = -1 };

/* Is the subscription d was meant for still there, with a live owner?
 * Asking reaps a dead owner, whose inbox is then drained (live.c). */
static bool target_live(msgbus_bus *b, const struct dest *d)
{
	/* Acquire: as in recompute. */
	uint64_t w = atomic_load_explicit(&mb_subslot_at(b, d->t.slot)->word, memory_order_acquire);
	if (MB_SUBW_GEN(w) != d->t.gen || MB_SUBW_STATE(w) != MB_SUB_ACTIVE)
		return false;
	return mb_part_alive(b, MB_SUBW_OWNER(w));
}

/* d's inbox was full. NO_WAIT: ask its consumer to give room back at its
 * next release (it flushes when it sees waiters), and say EAGAIN. Else
 * wait for room, in slices of the crash bound between which the reader's
 * liveness is checked: 0 with a reservation in d->res, TARGET_GONE when
 * the subscription left or died, or an error. The clock is read only
 * here. */
static int wait_room(msgbus_bus *b, struct dest *d, const struct rec *rc, uint64_t deadline)
{
	_Atomic uint32_t *ec = &d->p.ib.ctl->space_ec;
	if (deadline == MB_NO_WAIT) {
		(void)mb_ec_prepare(ec);
		return MSGBUS_EAGAIN;
	}
	d->p.stop = &b->closing; /* msgbus_shutdown ends the wait: ECLOSED */
	for (;;) {
		if (mb_closing(b))
			return MSGBUS_ECLOSED;
		uint64_t now = mb_now_ns();
		if (now >= deadline)
			return MSGBUS_ETIMEDOUT;
		uint64_t slice = deadline - now > b->check_ns ? now + b->check_ns : deadline;
		int e = mb_inbox_reserve(&d->p, rc->head_len, rc->len, slice, &d->res);
		if (e != MSGBUS_ETIMEDOUT)
			return e;
		if (!target_live(b, d))
			return TARGET_GONE;
	}
}

static void commit_set(msgbus_bus *b, struct dest *d, uint32_t n, struct rec *rc);

static int commit_one(msgbus_bus *b, struct dest *d, struct rec *rc)
{
	mb_crash_point("after_claim");
	fill(rc, &d->res);
	mb_crash_point("before_commit");
	d->filled = true;
	commit_set(b, d, 1, rc);
	return 0;
}

/* One lossless target. A large message's record, or any with a crash
 * point armed (so a test can die between), is reserved and committed
 * apart (commit_set); a small one is put at once. */
static int put_one(msgbus_bus *b, struct dest *d, struct rec *rc, uint64_t deadline)
{
	int e;
	rec_gen(rc, d->t.gen);
	if (rc->bc ||
	    __builtin_expect(atomic_load_explicit(&mb_crash_at, memory_order_relaxed) != 0, 0)) {
		e = mb_inbox_reserve(&d->p, rc->head_len, rc->len, MB_NO_WAIT, &d->res);
		if (!e)
			return commit_one(b, d, rc);
	} else {
		e = mb_inbox_put(&d->p, rc->head, rc->head_len, rc->payload, rc->len, MB_NO_WAIT);
		if (!e)
			return 0;
	}
	if (e != MSGBUS_EAGAIN)
		return e;
	e = wait_room(b, d, rc, deadline);
	if (e == TARGET_GONE) {
		d->gone = true;
		return 0; /* nobody to deliver to */
	}
	return e ? e : commit_one(b, d, rc);
}

static bool in_set(const struct dest *d)
{
	return !d->t.lossy && !d->gone;
}

/* Commit the filled records (d[i].filled) of a publish, all or none even
 * if we die in between: a commit mark says that every record is written,
 * so our reaper commits the ones we did not (mark.h). With a large
 * buffer, the mark also carries put, the value pub_put takes when the
 * records' references are counted, and that count is one store after the
 * mark: the reaper commits the records only if pub_put equals put. So a
 * death before the mark, or between the mark and the store, aborts every
 * record with pub_put not counting them (the reaper's drop of our
 * reference covers them); a death after the store commits every record
 * with pub_put counting each. No window leaks a reference or frees one
 * twice. Every record of a large message is put this way, one or
 * several. */
static void commit_set(msgbus_bus *b, struct dest *d, uint32_t n, struct rec *rc)
{
	bool first = true;
	uint32_t k = 0, put;
	unsigned mark;
	uint32_t i;

	for (i = 0; i < n; i++)
		k += d[i].filled;
	if (!k)
		return;
	put = rc->noted + k;
	if (rc->bc)
		share(b, rc);
	mb_crash_point("before_mark");
	mark = mb_mark_set(b, rc->seq, put);
	if (rc->bc) {
		mb_crash_point("marked");
		/* Relaxed: as in share; one store, so the reaper sees every
		 * record counted or none (mark.c:large_counted). */
		atomic_store_explicit(&rc->bc->pub_put, put, memory_order_relaxed);
		rc->noted = put;
		mb_crash_point("counted");
	}
	for (i = 0; i < n; i++) {
		if (!d[i].filled)
			continue;
		d[i].filled = false;
		if (!first)
			mb_crash_point("between_commits");
		first = false;
		/* A reader that took us for dead dropped it: as if it had
		 * read it. */
		(void)mb_inbox_commit(&d[i].p, &d[i].res);
	}
	mb_mark_clear(b, mark);
}

/* Several lossless targets, all or nothing: reserve in each without
 * waiting; when one is full, give the others back, wait for room in that
 * one (keeping that reservation), and reserve the others again. A target
 * that left is dropped from the set. */
static int put_all(msgbus_bus *b, struct dest *d, uint32_t n, struct rec *rc, uint64_t deadline)
{
	uint32_t held = UINT32_MAX; /* reserved while we waited */
	for (;;) {
		uint32_t i;
		int e = 0;
		for (i = 0; i < n && !e; i++)
			if (in_set(&d[i]) && i != held)
				e = mb_inbox_reserve(&d[i].p, rc->head_len, rc->len, MB_NO_WAIT,
				                     &d[i].res);
		if (!e) {
			mb_crash_point("after_claim");
			for (i = 0; i < n; i++) {
				if (!in_set(&d[i]))
					continue;
				rec_gen(rc, d[i].t.gen);
				fill(rc, &d[i].res);
				d[i].filled = true;
			}
			mb_crash_point("before_commit");
			commit_set(b, d, n, rc);
			return 0;
		}
		uint32_t full = i - 1;
		for (i = 0; i < full; i++)
			if (in_set(&d[i]) && i != held)
				mb_inbox_abort(&d[i].p, &d[i].res);
		if (held != UINT32_MAX)
			mb_inbox_abort(&d[held].p, &d[held].res);
		held = UINT32_MAX;
		if (e != MSGBUS_EAGAIN)
			return e;
		e = wait_room(b, &d[full], rc, deadline);
		if (e == TARGET_GONE)
			d[full].gone = true;
		else if (e)
			return e;
		else
			held = full;
	}
}

/* Write rc to every target: lossless first (all or nothing), then lossy
 * (a full inbox counts a drop). *put: records written. */
static int deliver(msgbus_bus *b, struct dest *d, uint32_t n, struct rec *rc, uint64_t deadline,
                   uint32_t *put)
{
	uint32_t lossless = 0, last = 0;
	int e = 0;
	*put = 0;
	for (uint32_t i = 0; i < n; i++)
		if (!d[i].t.lossy) {
			lossless++;
			last = i;
		}
	if (lossless == 1)
		e = put_one(b, &d[last], rc, deadline);
	else if (lossless > 1)
		e = put_all(b, d, n, rc, deadline);
	if (e)
		return e;
	mb_crash_point("before_lossy");
	for (uint32_t i = 0; i < n; i++)
		*put += !d[i].t.lossy && !d[i].gone;
	for (uint32_t i = 0; i < n; i++) {
		if (!d[i].t.lossy)
			continue;
		rec_gen(rc, d[i].t.gen);
		if (rc->bc) { /* reserve and fill; commit_set counts and commits */
			if (mb_inbox_reserve(&d[i].p, rc->head_len, rc->len, MB_NO_WAIT,
			                     &d[i].res)) {
				count_drop(b, d[i].t.slot);
				continue;
			}
			fill(rc, &d[i].res);
			d[i].filled = true;
			++*put;
		} else if (mb_inbox_put(&d[i].p, rc->head, rc->head_len, rc->payload, rc->len,
		                        MB_NO_WAIT)) {
			count_drop(b, d[i].t.slot);
		} else {
			++*put;
		}
	}
	commit_set(b, d, n, rc);
	return 0;
}

/* Publish through large buffer idx: every record references it.
 *
 * Invariant: refs is MB_BUF_PUB_BIAS (ours, set when the buffer was
 * taken) less the references readers dropped, until we drop the bias less
 * the records put; and the buffer is SHARED from before the first record
 * is committed (share), with pub_put counting the records committed or
 * marked for commit by our reaper: each set of records (the lossless
 * ones, then the lossy ones) is counted with one store after its commit
 * mark, and the reaper commits a set's CLAIMED records only if that store
 * was made (commit_set, mark.h). So the reaper of a dead publisher
 * (live.c) drops MB_BUF_PUB_BIAS less pub_put, once (it holds the dead
 * slot; a dropped bias is seen), and the count is exact whenever we die:
 * each committed record's reference is dropped by its reader or by the
 * drain of its inbox, once; an aborted record was never counted. A death
 * before any record leaves a LOANED buffer, freed by the reaper as an
 * unused loan. */
static int deliver_large(msgbus_bus *b, struct dest *d, uint32_t n, const struct rec *rc,
                         uint32_t idx, uint32_t gen, uint64_t deadline)
{
	struct mb_rec_large desc = { idx, gen, rc->len, 0 };
	struct rec lr = *rc; /* the same record, carrying desc */
	struct mb_rec_pfx pfx;
	memcpy(&pfx, lr.head, sizeof(pfx));
	pfx.kind = MB_REC_LARGE;
	memcpy(lr.head, &pfx, sizeof(pfx));
	lr.payload = &desc;
	lr.len = sizeof(desc);
	lr.bc = mb_bufctl_at(b, idx);
	lr.noted = 0;
	lr.shared = false;
	uint32_t put;
	int e = deliver(b, d, n, &lr, deadline, &put);
	if (e) {
		/* Nothing was put for a lossless target; lossy ones got nothing
		 * either (they come after). The buffer is our loan again;
		 * release: as the SHARED store. */
		if (lr.shared)
			atomic_store_explicit(&lr.bc->state, MB_BUF_LOANED(b->self),
			                      memory_order_release);
		return e;
	}
	mb_crash_point("large_committed");
	if (!lr.shared) /* no record: SHARED with none, freed just below */
		share(b, &lr);
	mb_crash_point("buf_shared");
	/* acq_rel: as in bufpool.c:mb_buf_unref. */
	uint32_t bias = MB_BUF_PUB_BIAS - lr.noted;
	if (atomic_fetch_sub_explicit(&lr.bc->refs, bias, memory_order_acq_rel) == bias)
		mb_buf_free(b, idx);
	return 0;
}

static int publish_to(msgbus_bus *b, struct dest *d, uint32_t n, struct rec *rc,
                      uint32_t loan_idx, uint32_t loan_gen, uint64_t deadline)
{
	if (loan_idx != UINT32_MAX)
		return deliver_large(b, d, n, rc, loan_idx, loan_gen, deadline);
	if (rc->len <= b->ring_inline_max) {
		uint32_t put;
		return deliver(b, d, n, rc, deadline, &put);
	}
	if (!n)
		return 0;
	uint32_t idx, gen;
	int e = mb_buf_alloc(b, deadline, &idx, &gen);
	if (e)
		return e;
	memcpy(mb_bufdata_at(b, idx), rc->payload, rc->len);
	mb_crash_point("mid_loan");
	e = deliver_large(b, d, n, rc, idx, gen, deadline);
	if (e)
		mb_buf_free(b, idx);
	return e;
}

/* A message for one lossless target that a link of b may send itself
 * (shm/handle.h: direct). A handle without links pays one load. */
static bool send_direct(msgbus_bus *b, const struct target *t, const char *subject, size_t slen,
                        const void *data, size_t len, uint64_t deadline)
{
	/* Pairs with the release in link/links.c:links_of(). */
	const struct mb_link_hooks *lh = atomic_load_explicit(&b->link_hooks, memory_order_acquire);
	return lh && lh->direct(b, t->slot, t->gen, subject, slen, data, len, deadline == UINT64_MAX);
}

int mb_route_publish(msgbus_bus *b, const char *subject, const void *data, size_t len,
                     uint32_t loan_idx, uint32_t loan_gen, uint64_t deadline)
{
	return mb_route_publish_ex(b, subject, data, len, loan_idx, loan_gen, deadline, NULL);
}

int mb_route_publish_ex(msgbus_bus *b, const char *subject, const void *data, size_t len,
                        uint32_t loan_idx, uint32_t loan_gen, uint64_t deadline, bool *direct)
{
	if (!b || !subject)
		return MSGBUS_EINVAL;
	if (len > b->cfg.max_msg_size)
		return MSGBUS_EMSGSIZE;
	size_t slen = strnlen(subject, MB_SUBJECT_MAX + 1);
	if (slen == 0 || slen > MB_SUBJECT_MAX)
		return MSGBUS_EINVAL;
	struct dest local[LOCAL_TARGETS], *d = local;
	uint32_t n = 0, total = 0, cap = LOCAL_TARGETS;
	int e = lookup_fast(b, subject, slen, d, cap, &n, &total)
	                ? 0
	                : lookup(b, subject, slen, d, cap, &n, &total);
	if (!e && total > n) { /* more than a few: room for every slot */
		cap = b->cfg.max_subs;
		d = malloc((size_t)cap * sizeof(*d));
		if (!d)
			return MSGBUS_ENOMEM;
		e = lookup(b, subject, slen, d, cap, &n, &total);
	}
	/* Sent by a link itself: it never reaches the bus, and needs no
	 * sequence number (one locked instruction fewer per message). */
	bool sent = !e && n == 1 && !d[0].t.lossy && loan_idx == UINT32_MAX &&
	            send_direct(b, &d[0].t, subject, slen, data, len, deadline);
	if (direct)
		*direct = sent;
	if (!e && !sent) {
		uint64_t seq = atomic_fetch_add_explicit(&b->pub_seq, 1, memory_order_relaxed);
		struct rec rc;
		struct mb_rec_pfx pfx = { 0, MB_REC_INLINE, 0, seq };
		memcpy(rc.head, &pfx, sizeof(pfx));
		rc.seq = pfx.seq;
		memcpy(rc.head + sizeof(pfx), subject, slen);
		rc.head_len = (uint32_t)(sizeof(pfx) + slen);
		rc.payload = data ? data : ""; /* never NULL, even for 0 bytes, to memcpy */
		rc.len = (uint32_t)len;
		rc.bc = NULL; /* deliver_large sets the rest */
		rc.noted = 0;
		rc.shared = false;
		e = publish_to(b, d, n, &rc, loan_idx, loan_gen, deadline);
	}
	if (d != local)
		free(d);
	return e;
}

int mb_route_publish_many(msgbus_bus *b, const char *subject, const struct mb_inbox_part *parts,
                          uint32_t n, uint32_t *done)
{
	*done = 0;
	if (!b || !subject || !n)
		return MSGBUS_EINVAL;
	if (__builtin_expect(atomic_load_explicit(&mb_crash_at, memory_order_relaxed) != 0, 0))
		return MSGBUS_ENOTSUP; /* crash tests die between reserve and commit */
	size_t slen = strnlen(subject, MB_SUBJECT_MAX + 1);
	if (slen == 0 || slen > MB_SUBJECT_MAX)
		return MSGBUS_EINVAL;
	for (uint32_t i = 0; i < n; i++)
		if (parts[i].len > b->ring_inline_max)
			return MSGBUS_EINVAL;
	struct dest d[1] = { 0 };
	uint32_t got = 0, total = 0;
	int e = lookup_fast(b, subject, slen, d, 1, &got, &total)
	                ? 0
	                : lookup(b, subject, slen, d, 1, &got, &total);
	if (e)
		return e;
	if (total == 0) {
		*done = n; /* nobody wants them */
		return 0;
	}
	if (total > 1 || got != 1 || d[0].t.lossy)
		return MSGBUS_ENOTSUP;
	struct rec rc;
	uint64_t seq0 = atomic_fetch_add_explicit(&b->pub_seq, n, memory_order_relaxed);
	struct mb_rec_pfx pfx = { d[0].t.gen, MB_REC_INLINE, 0, seq0 };
	memcpy(rc.head, &pfx, sizeof(pfx));
	memcpy(rc.head + sizeof(pfx), subject, slen);
	rc.head_len = (uint32_t)(sizeof(pfx) + slen);
	e = mb_inbox_put_many(&d[0].p, rc.head, rc.head_len, offsetof(struct mb_rec_pfx, seq), seq0,
	                      parts, n, done);
	if (e == MSGBUS_EAGAIN)
		(void)mb_ec_prepare(&d[0].p.ib.ctl->space_ec); /* as wait_room: flush soon */
	return e;
}
