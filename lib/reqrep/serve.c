/*
 * serve.c - the worker side of request/reply. The workers of a service
 * share one queue slot, hence one cursor on the service's ring: a worker
 * copies a request out, then CASes the shared cursor past it; only the
 * winner answers, so each request goes to exactly one worker. Because the
 * copy precedes the CAS, the cursor is also the release that gates
 * requesters, and a dead worker holds nothing back.
 */
#include "shm/control.h"
#include "shm/live.h"
#include "shm/subject.h"
#include "pubsub/buffers.h"
#include "pubsub/subscribe.h"
#include "platform/crash.h"
#include "ring/ring.h"
#include "reqrep/serve.h"
#include "reqrep/service_fd.h"
#include "platform/doorbell.h"
#include "platform/wait.h"

#include <stdlib.h>
#include <string.h>

struct msgbus_req {
	msgbus_bus *bus;
	struct mb_req_hdr hdr;
	size_t len;
	unsigned char data[];
};

int mb_service_topic(msgbus_bus *b, const char *service, bool create, uint64_t deadline,
                     uint32_t *t, char *subject)
{
	size_t len;
	bool wild;
	if (!b || mb_subject_check(service, &len, false, &wild) ||
	    len + MB_SVC_PREFIX_LEN > MB_SUBJECT_MAX)
		return MSGBUS_EINVAL;
	/* NOLINTNEXTLINE(bugprone-not-null-terminated-result): the next copy ends in NUL */
	memcpy(subject, MB_SVC_PREFIX, MB_SVC_PREFIX_LEN);
	memcpy(subject + MB_SVC_PREFIX_LEN, service, len + 1);
	len += MB_SVC_PREFIX_LEN;
	uint64_t h = mb_hash(subject, len);
	return create ? mb_topic_get(b, subject, len, h, deadline, t)
	              : mb_topic_find(b, subject, len, h, t);
}

int mb_service_slot(msgbus_bus *b, uint32_t t, uint32_t *slot)
{
	for (uint32_t s = 0; s < b->cfg.max_subs; s++) {
		/* Acquire: pairs with the store of ACTIVE in msgbus_serve
		 * (seq_cst, a release): the slot's cursors are set. The
		 * cursor's gen below is only compared; ordered by this
		 * acquire, it pairs with nothing (relaxed). */
		uint64_t w = atomic_load_explicit(&mb_subslot_at(b, s)->word, memory_order_acquire);
		if (MB_SUBW_STATE(w) == MB_SUB_ACTIVE && (MB_SUBW_FLAGS(w) & MB_SUBF_QUEUE) &&
		    atomic_load_explicit(&mb_cursor_at(b, t, s)->gen, memory_order_relaxed) ==
		        MB_SUBW_GEN(w)) {
			*slot = s;
			return 0;
		}
	}
	return MSGBUS_ENOENT;
}

static bool is_bridge(msgbus_bus *b, uint32_t idx)
{
	/* Relaxed: set at open, before the participant publishes anything. */
	return idx < b->cfg.max_participants &&
	       (atomic_load_explicit(&mb_part_at(b, idx)->flags, memory_order_relaxed) &
	        MB_PARTF_BRIDGE);
}

bool mb_service_has_workers(msgbus_bus *b, uint32_t slot, bool check)
{
	/* A link's own requests may only go to local workers (one hop). */
	bool local_only = is_bridge(b, b->self);
	struct mb_subslot *ss = mb_subslot_at(b, slot);
	uint32_t n = b->cfg.max_participants;
	for (uint32_t i = 0; i < (n + 63) / 64; i++) {
		/* Relaxed: the bits are a hint checked with the liveness test. */
		uint64_t m = atomic_load_explicit(&ss->members[i], memory_order_relaxed);
		while (m) {
			uint32_t idx = i * 64 + (uint32_t)__builtin_ctzll(m);
			m &= m - 1;
			if (idx >= n)
				break;
			if (local_only && is_bridge(b, idx))
				continue;
			if (!check || mb_part_alive(b, idx))
				return true;
		}
	}
	return false;
}

bool mb_service_has_local_workers(msgbus_bus *b, uint32_t slot)
{
	struct mb_subslot *ss = mb_subslot_at(b, slot);
	uint32_t n = b->cfg.max_participants;
	for (uint32_t i = 0; i < (n + 63) / 64; i++) {
		/* As in mb_service_has_workers: a hint, pairs with nothing. */
		uint64_t m = atomic_load(&ss->members[i]);
		while (m) {
			uint32_t idx = i * 64 + (uint32_t)__builtin_ctzll(m);
			m &= m - 1;
			if (idx >= n)
				break;
			if (!is_bridge(b, idx))
				return true;
		}
	}
	return false;
}

static void set_member(msgbus_bus *b, uint32_t slot, bool on)
{
	_Atomic uint64_t *word = &mb_subslot_at(b, slot)->members[b->self / 64];
	uint64_t bit = 1ull << (b->self % 64);
	/* Relaxed: the interest_gen bump that follows publishes the change. */
	if (on)
		atomic_fetch_or_explicit(word, bit, memory_order_relaxed);
	else
		atomic_fetch_and_explicit(word, ~bit, memory_order_relaxed);
}

static void *serve_thread(void *arg);

int msgbus_serve(msgbus_bus *bus, const char *service, msgbus_serve_cb cb, void *arg,
                 msgbus_service **out)
{
	if (!out)
		return MSGBUS_EINVAL;
	msgbus_service *svc = calloc(1, sizeof(*svc));
	if (!svc)
		return MSGBUS_ENOMEM;
	/* One bound for both waits on the control lock. */
	uint64_t deadline = bus ? mb_ctl_deadline(bus) : MB_NO_WAIT;
	int rc = mb_service_topic(bus, service, true, deadline, &svc->t, svc->subject);
	if (!rc)
		rc = mb_ctl_lock(bus, deadline);
	if (rc) {
		free(svc);
		return rc;
	}
	svc->bus = bus;
	rc = mb_service_slot(bus, svc->t, &svc->slot);
	if (rc == 0) {
		/* Relaxed: under the control lock, which orders it. */
		svc->gen = MB_SUBW_GEN(atomic_load_explicit(&mb_subslot_at(bus, svc->slot)->word,
		                                            memory_order_relaxed));
	} else {
		/* First worker: the slot belongs to no participant, so a
		 * dead worker never takes the service down with it. */
		size_t len = strlen(svc->subject);
		rc = mb_slot_reserve(bus, svc->subject, len, MB_OWNER_SHARED, MB_SUBF_QUEUE,
		                     &svc->slot, &svc->gen);
		if (!rc) {
			mb_join_topics(bus, svc->slot, svc->gen, true, svc->subject, len);
			/* seq_cst (release would do): the pattern and cursors
			 * are set; pairs with the acquire in mb_service_slot
			 * and route.c:recompute. */
			atomic_store(&mb_subslot_at(bus, svc->slot)->word,
			             mb_subw(svc->gen, MB_OWNER_SHARED, MB_SUBF_QUEUE, MB_SUB_ACTIVE));
		}
	}
	if (!rc) {
		set_member(bus, svc->slot, true);
		/* seq_cst (release would do): pairs with the acquire in
		 * route.c:lookup. */
		atomic_fetch_add(&bus->hdr->interest_gen, 1);
	}
	mb_ctl_unlock(bus);
	if (rc) {
		free(svc);
		return rc;
	}
	svc->cb = cb;
	svc->cb_arg = arg;
	if (cb && pthread_create(&svc->thread, NULL, serve_thread, svc)) {
		svc->cb = NULL;
		mb_service_destroy(svc);
		return MSGBUS_ENOMEM;
	}
	pthread_mutex_lock(&bus->lock);
	svc->next = bus->services;
	bus->services = svc;
	pthread_mutex_unlock(&bus->lock);
	*out = svc;
	return 0;
}

/* Move the shared cursor over consumed slots, and let gated requesters
 * know. Any worker may do it; each step is one CAS. */
static void advance_release(msgbus_service *svc)
{
	msgbus_bus *b = svc->bus;
	struct mb_cursor *c = mb_cursor_at(b, svc->t, svc->slot);
	bool moved = false;
	for (uint64_t i = 0; i < b->cfg.ring_slots; i++) {
		/* Acquire: pairs with the CAS below by another worker. The
		 * stamp's acquire pairs with the release store of ABORTED in
		 * try_take: that worker's reads of the slot are done. */
		uint64_t r = atomic_load_explicit(&c->release, memory_order_acquire);
		uint64_t s = atomic_load_explicit(&mb_slot_at(b, svc->t, r)->stamp,
		                                  memory_order_acquire);
		if (s != mb_stamp(r, MB_STAMP_OWNER(s), MB_ST_ABORTED))
			break;
		/* seq_cst: a release that pairs with the acquire of release in
		 * ring.c:mb_ring_gate (the slot's reads happen before a
		 * requester overwrites it), and the first half of the Dekker
		 * pair with wait_space's mb_ec_prepare before mb_ec_signal
		 * below. */
		moved |= atomic_compare_exchange_strong(&c->release, &r, r + 1);
	}
	if (moved)
		mb_ec_signal(&mb_topic_at(b, svc->t)->space_ec);
}

/* Copy the request in slot sl out, then mark the slot consumed. */
static msgbus_req *copy_out(msgbus_bus *b, struct mb_slot *sl)
{
	uint32_t len = sl->len, kind = sl->kind, buf = sl->buf;
	const void *src = NULL;
	if (kind == MB_KIND_INLINE && len <= b->inline_max)
		src = sl + 1;
	else if (kind == MB_KIND_LARGE && len <= b->cfg.max_msg_size && buf < b->cfg.large_buffers)
		src = mb_bufdata_at(b, buf);
	if (!src || len < sizeof(struct mb_req_hdr))
		return NULL; /* malformed: skipped */
	size_t plen = len - sizeof(struct mb_req_hdr);
	msgbus_req *r = malloc(sizeof(*r) + plen);
	if (r) {
		memcpy(&r->hdr, src, sizeof(r->hdr));
		memcpy(r->data, (const char *)src + sizeof(r->hdr), plen);
		r->len = plen;
		r->bus = b;
	}
	return r;
}

/*
 * Take the oldest ready request. A worker owns a request by CASing its slot
 * from COMMITTED to TAKEN (with its index as owner), copies it out, then
 * marks it ABORTED (consumed); the shared cursor follows consumed slots.
 * 0: *req is ours; MSGBUS_EAGAIN: nothing ready; *claimed_owner names a
 * participant holding the head (a requester writing, a worker copying).
 */
static int try_take(msgbus_service *svc, msgbus_req **req, int64_t *claimed_owner)
{
	msgbus_bus *b = svc->bus;
	struct mb_cursor *c = mb_cursor_at(b, svc->t, svc->slot);
	uint64_t n = b->cfg.ring_slots;
	*claimed_owner = -1;
	/* Relaxed: only compared; pairs with nothing. */
	if (atomic_load_explicit(&c->gen, memory_order_relaxed) != svc->gen)
		return MSGBUS_EPROTO; /* our slot was taken from us */
	advance_release(svc);
	bool bridge = is_bridge(b, b->self); /* a link's worker */
	/* Acquire: pairs with the CAS in advance_release. */
	uint64_t r = atomic_load_explicit(&c->release, memory_order_acquire);
	for (uint64_t pos = r; pos < r + n; pos++) {
		struct mb_slot *sl = mb_slot_at(b, svc->t, pos);
		/* Acquire: pairs with the seq_cst store in
		 * ring.c:mb_ring_commit: the request is written. */
		uint64_t s = atomic_load_explicit(&sl->stamp, memory_order_acquire);
		if (MB_STAMP_SEQ(s) != (pos & MB_SEQ_MASK))
			return MSGBUS_EAGAIN; /* not yet written, or the cursor moved on */
		uint32_t st = MB_STAMP_STATE(s);
		if (st == MB_ST_CLAIMED || st == MB_ST_TAKEN) {
			if (MB_STAMP_OWNER(s) >= b->cfg.max_participants) {
				/* No participant can own it (corrupt): drop it.
				 * seq_cst by default (release would do): pairs
				 * with the acquire loads in advance_release. */
				atomic_compare_exchange_strong(&sl->stamp, &s,
				        mb_stamp(pos, 0, MB_ST_ABORTED));
				continue;
			}
			if (pos == r)
				*claimed_owner = MB_STAMP_OWNER(s);
			continue;
		}
		/* A link never forwards what another link brought in (one
		 * hop, no bouncing): the stamp of a commit names its writer,
		 * so a link's worker leaves such a request to local workers
		 * without taking it. Taking it, even for a moment, could make
		 * a local worker that saw it TAKEN sleep through its return. */
		if (st != MB_ST_COMMITTED || (bridge && is_bridge(b, MB_STAMP_OWNER(s))))
			continue;
		/* seq_cst by default: the race with other workers' CAS here and
		 * with a reaper's TAKEN -> COMMITTED (live.c); acquire is what
		 * we need (the request's contents). */
		if (!atomic_compare_exchange_strong(&sl->stamp, &s,
		                                    mb_stamp(pos, b->self, MB_ST_TAKEN)))
			continue;
		msgbus_req *rq = copy_out(b, sl);
		if (rq && bridge && is_bridge(b, rq->hdr.from)) {
			/* The same after a reaper gave back a dead worker's
			 * take (the stamp names the dead worker): put it back
			 * naming the link that wrote it, which links skip, and
			 * wake the workers, as a commit does. seq_cst: our reads
			 * are done; the first half of the Dekker pair with a
			 * sleeper's mb_ec_prepare and look. */
			atomic_store(&sl->stamp, mb_stamp(pos, rq->hdr.from, MB_ST_COMMITTED));
			mb_ec_signal(&mb_topic_at(b, svc->t)->data_ec);
			free(rq);
			continue;
		}
		mb_crash_point("mid_take");
		/* Tell the requester who has it, so it can watch us, before the
		 * slot is consumed: if we die first, the slot goes back to the
		 * queue. A request whose requester gave up, or whose deadline
		 * passed, is dropped. */
		bool ours = false;
		if (rq) {
			struct mb_call *call = rq->hdr.from < b->cfg.max_participants &&
			                               rq->hdr.entry < MB_CALLS
			                               ? mb_call_at(b, rq->hdr.from, rq->hdr.entry)
			                               : NULL;
			uint64_t w = mb_callw(rq->hdr.corr, 0, MB_CALL_PENDING);
			/* The CAS: seq_cst by default, the race with the
			 * requester's CAS in call.c:abandon; acquire pairs with
			 * its release store of PENDING. */
			ours = call && mb_now_ns() <= rq->hdr.deadline_ns &&
			       atomic_compare_exchange_strong(&call->word, &w,
			               mb_callw(rq->hdr.corr, b->self, MB_CALL_TAKEN));
		}
		/* Release: our reads of the slot happen before its reuse. */
		atomic_store_explicit(&sl->stamp, mb_stamp(pos, b->self, MB_ST_ABORTED),
		                      memory_order_release);
		advance_release(svc);
		if (!ours) {
			free(rq);
			continue;
		}
		*req = rq;
		return 0;
	}
	return MSGBUS_EAGAIN;
}

static int service_take(msgbus_service *svc, msgbus_req **req, uint64_t deadline)
{
	msgbus_bus *b = svc->bus;
	_Atomic uint32_t *ec = &mb_topic_at(b, svc->t)->data_ec;
	uint64_t next_check = 0;
	struct mb_spin spin = { 0, 0 };
	const struct mb_link_hooks *linked = NULL;
	for (;;) {
		int64_t owner;
		int rc = try_take(svc, req, &owner);
		if (rc != MSGBUS_EAGAIN)
			return rc; /* still a spinner: its next take looks again */
		if (deadline == MB_NO_WAIT)
			return MSGBUS_EAGAIN;
		if (mb_spinning(&spin, b->spin_ns)) {
			if (spin.rounds % MB_SPIN_YIELD_ROUNDS == 0)
				mb_yield_cpu(); /* as in recv.c and call.c */
			if (spin.rounds % MB_SPIN_LINK_ROUNDS == 1) {
				/* As a spinning receiver: read the handle's
				 * links, so a peer's request wakes nobody.
				 * Pairs with the release in
				 * link/links.c:links_of(). */
				linked = atomic_load_explicit(&b->link_hooks, memory_order_acquire);
				if (linked)
					linked->spin(b);
			}
			continue;
		}
		if (linked) {
			linked->unspin(b); /* it sleeps: the links' rx threads read */
			linked = NULL;
		}
		/* Process-local stop: seq_cst by default; pairs with the store
		 * in msgbus_unserve, which then wakes us: with the eventcount's
		 * seq_cst read-modify-writes the two make the Dekker pair that
		 * a wake after our prepare relies on. */
		if (atomic_load(&svc->stop) || mb_closing(b))
			return MSGBUS_ECLOSED;
		uint64_t now = mb_now_ns();
		if (now >= deadline)
			return MSGBUS_ETIMEDOUT;
		uint32_t v = mb_ec_prepare(ec);
		rc = try_take(svc, req, &owner);
		if (rc != MSGBUS_EAGAIN)
			return rc;
		/* The holder of the head seen last, not before the prepare:
		 * the sleep is bounded by its checks (a worker that dies
		 * holding a request wakes nobody). */
		uint64_t until = deadline;
		if (!mb_wait_on_owner(b, owner, now, &next_check, &until))
			continue; /* its claim is aborted, or its take undone */
		/* seq_cst (mb_closing): after mb_ec_prepare, the Dekker pair
		 * with msgbus_shutdown's store and wakes. */
		/* seq_cst (svc->stop too): the Dekker pair with
		 * mb_service_destroy's store and its kick. */
		if (atomic_load(&svc->stop) || mb_closing(b))
			return MSGBUS_ECLOSED;
		mb_ec_sleep(ec, v, now, until);
	}
}

int msgbus_service_recv(msgbus_service *svc, msgbus_req **req, int timeout_ms)
{
	if (!svc || !req || svc->cb || timeout_ms < -1)
		return MSGBUS_EINVAL;
	if (mb_closing(svc->bus))
		return MSGBUS_ECLOSED;
	int rc = service_take(svc, req, timeout_ms == 0 ? MB_NO_WAIT : mb_deadline(timeout_ms));
	if (svc->bell_on && (rc == MSGBUS_EAGAIN || rc == MSGBUS_ETIMEDOUT))
		mb_service_fd_rearm(svc); /* drained: the descriptor reads "empty" */
	return rc;
}

static void *serve_thread(void *arg)
{
	msgbus_service *svc = arg;
	mb_thread_name("msgbus-serve");
	/* seq_cst by default; pairs with the store in msgbus_unserve, which
	 * then wakes us (service_take also re-checks after mb_ec_prepare). */
	while (!atomic_load(&svc->stop)) {
		msgbus_req *req;
		int rc = service_take(svc, &req, UINT64_MAX);
		if (rc == 0)
			svc->cb(req, svc->cb_arg);
		else if (rc == MSGBUS_ECLOSED && mb_closing(svc->bus))
			break; /* shut down: msgbus_unserve or close joins us */
		else if (rc != MSGBUS_ECLOSED)
			mb_nap_us(10000); /* corrupt segment: do not spin on it */
	}
	return NULL;
}

const void *msgbus_req_data(const msgbus_req *req)
{
	return req ? req->data : NULL;
}

size_t msgbus_req_len(const msgbus_req *req)
{
	return req ? req->len : 0;
}

static int respond(msgbus_req *req, const void *data, size_t len, int err);

int mb_respond_error(msgbus_req *req, int err)
{
	int rc = respond(req, NULL, 0, err);
	free(req);
	return rc;
}

msgbus_req *mb_req_new(msgbus_bus *b, const struct mb_req_hdr *hdr)
{
	msgbus_req *r = malloc(sizeof(*r));
	if (r) {
		r->bus = b;
		r->hdr = *hdr;
		r->len = 0;
	}
	return r;
}

uint64_t mb_req_deadline(const msgbus_req *req)
{
	return req->hdr.deadline_ns;
}

/* The reply goes straight into the requester's call entry (or a large
 * buffer handed to it): nothing on this path can block on the requester. */
int msgbus_respond(msgbus_req *req, const void *data, size_t len)
{
	if (!req)
		return MSGBUS_EINVAL;
	/* data may point into req (an echo): free req only at the end. */
	int rc = respond(req, data, len, 0);
	free(req);
	return rc;
}

static int respond(msgbus_req *req, const void *data, size_t len, int err)
{
	msgbus_bus *b = req->bus;
	uint32_t from = req->hdr.from, corr = req->hdr.corr;
	struct mb_call *call = mb_call_at(b, from, req->hdr.entry);
	if (!data && len)
		return MSGBUS_EINVAL;
	if (len > b->cfg.max_msg_size)
		return MSGBUS_EMSGSIZE;
	uint64_t w = mb_callw(corr, b->self, MB_CALL_TAKEN);
	/* seq_cst by default: the race with the requester's CAS in
	 * call.c:abandon; acquire pairs with its release store of PENDING, so
	 * our writes come after its reads of the entry. */
	if (!atomic_compare_exchange_strong(&call->word, &w,
	                                    mb_callw(corr, b->self, MB_CALL_WRITING)))
		return MSGBUS_ETIMEDOUT; /* the requester gave up or died */
	uint32_t buf = MB_CALL_INLINE_BUF;
	int rc = 0;
	if (err) {
		buf = MB_CALL_ERROR; /* the requester gets err itself */
		len = (size_t)err;
	} else if (len <= MB_CALL_INLINE) {
		if (len)
			memcpy(call->data, data, len);
	} else {
		uint32_t gen;
		rc = mb_buf_alloc(b, mb_now_ns() + b->check_ns, &buf, &gen);
		if (rc) {
			/* Tell the requester now rather than let it wait. */
			buf = MB_CALL_ERROR;
			len = MSGBUS_ELIMIT;
			rc = MSGBUS_ELIMIT; /* and the requester gets the same */
		} else {
			memcpy(mb_bufdata_at(b, buf), data, len);
			/* Relaxed: the REPLIED CAS below publishes it. */
			atomic_store_explicit(&mb_bufctl_at(b, buf)->state, MB_BUF_LOANED(from),
			                      memory_order_relaxed);
		}
	}
	call->len = (uint32_t)len;
	call->buf = buf;
	mb_crash_point("before_reply");
	w = mb_callw(corr, b->self, MB_CALL_WRITING);
	/* Release: the reply is in place before the requester sees REPLIED;
	 * pairs with the acquire load of the word in call.c:check. */
	if (!atomic_compare_exchange_strong_explicit(&call->word, &w,
	                                             mb_callw(corr, b->self, MB_CALL_REPLIED),
	                                             memory_order_release, memory_order_relaxed)) {
		uint64_t st = MB_BUF_LOANED(from);
		/* seq_cst (release would do): as the free in call.c:take_reply. */
		if (buf < b->cfg.large_buffers)
			atomic_compare_exchange_strong(&mb_bufctl_at(b, buf)->state, &st, MB_BUF_FREE);
		return MSGBUS_ETIMEDOUT;
	}
	/* Pairs with the release in link/links.c:links_of(). */
	const struct mb_link_hooks *lh =
		atomic_load_explicit(&b->link_hooks, memory_order_acquire);
	if (!lh || !lh->replied(b, from, req->hdr.entry)) {
		mb_ec_signal_bell(&call->ec, &call->bell);
		mb_ec_signal(&mb_part_at(b, from)->reply_ec);
	}
	return rc;
}

msgbus_service *mb_service_next(msgbus_service *svc)
{
	return svc->next;
}

void mb_service_destroy(msgbus_service *svc)
{
	msgbus_bus *b = svc->bus;
	if (svc->cb) {
		/* seq_cst: the Dekker pair with the re-check in service_take
		 * after mb_ec_prepare; the kick follows. */
		atomic_store(&svc->stop, true);
		mb_ec_kick(&mb_topic_at(b, svc->t)->data_ec);
		pthread_join(svc->thread, NULL);
	}
	mb_service_fd_close(svc);
	set_member(b, svc->slot, false);
	/* seq_cst (release would do): pairs with the acquire in route.c:lookup. */
	atomic_fetch_add(&b->hdr->interest_gen, 1);
	free(svc);
}

int msgbus_unserve(msgbus_service *svc)
{
	if (!svc)
		return MSGBUS_EINVAL;
	msgbus_bus *b = svc->bus;
	pthread_mutex_lock(&b->lock);
	for (msgbus_service **pp = &b->services; *pp; pp = &(*pp)->next) {
		if (*pp == svc) {
			*pp = svc->next;
			break;
		}
	}
	pthread_mutex_unlock(&b->lock);
	mb_service_destroy(svc);
	return 0;
}
