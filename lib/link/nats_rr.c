/*
 * nats_rr.c - request/reply over a nats:// link.
 *
 * Out: a local request for a service no local worker serves asks the link
 * (the no_worker link hook, mb_nats_no_worker); the link then serves that name itself on
 * its bridge handle, and each request goes to NATS as a PUB with a reply
 * subject under the link's inbox (one wildcard SUB per connection): from
 * the requester's own thread when it is the linking handle's
 * (mb_nats_call_direct, the call_direct link hook), else from the bridge
 * handle's worker thread. The reply, or the server's 503 (no responders,
 * at once), answers the local requester; a drop answers EPEERDIED; the
 * requester's own deadline gives ETIMEDOUT.
 * In: a local service is a queue SUB (queue group = its name, nats_tx.c),
 * so NATS balances across buses and the bus across local workers; a
 * request from NATS is called on a local worker from the bridge handle,
 * by rx when the ring has room now, else by the rr thread, and its reply
 * is PUB to the requester's reply subject by the worker's thread
 * (mb_nats_replied, the replied link hook), or by the rr thread.
 */
#include "link/conn_state.h"
#include "link/link_log.h"
#include "link/nats_rr.h"
#include "link/nats_tx.h"
#include "reqrep/call.h"
#include "reqrep/serve.h"
#include "platform/wait.h"

#include <stdio.h>
#include <stdlib.h>

#define RR_NAP_MS 20 /* the rr thread looks at expiries this often */

/* ---- out: local requests to NATS -------------------------------------------- */

/* Write the request under wlock: 0, MSGBUS_EMSGSIZE (over the server's
 * max_payload: never sent), MSGBUS_ENORESPONDERS (the link is down) or
 * MSGBUS_EPEERDIED (the connection failed under the write). */
static int send_request(struct mb_nats *n, const char *service, uint64_t id, const void *data,
                        size_t len)
{
	char reply[96];
	int rc = MSGBUS_ENORESPONDERS;
	snprintf(reply, sizeof(reply), "%s%llu", n->inbox, (unsigned long long)id);
	pthread_mutex_lock(&n->wlock);
	if (n->up && len > n->max_payload)
		rc = MSGBUS_EMSGSIZE;
	else if (n->up)
		rc = mb_nats_pub_locked(n, service, reply, data, len) ? 0 : MSGBUS_EPEERDIED;
	pthread_mutex_unlock(&n->wlock);
	return rc;
}

/* A local request taken by the link for name, with its payload: to NATS.
 * It is sent under rrlock, so neither its reply (rx) nor the expiry sweep
 * (rr) can answer and free it while its bytes are still being read; only
 * this path nests wlock inside rrlock. A failure answers req at once. */
static void send_out(struct mb_nats *n, const char *name, msgbus_req *req, const void *data,
                     size_t len)
{
	int rc = MSGBUS_ELIMIT;
	pthread_mutex_lock(&n->rrlock);
	uint64_t id = n->next_id++;
	struct nats_out *o = &n->out[id % NATS_PENDING];
	if (o->req == NULL) {
		rc = send_request(n, name, id, data, len);
		if (rc == 0) {
			o->req = req;
			o->id = id;
		}
	}
	pthread_mutex_unlock(&n->rrlock);
	if (rc)
		mb_respond_error(req, rc);
}

/* A local request taken by the link's worker for a name. */
static void on_local_request(msgbus_req *req, void *arg)
{
	struct nats_proxied *pa = arg;
	send_out(pa->n, pa->name, req, msgbus_req_data(req), msgbus_req_len(req));
}

/* Does the link serve name for NATS? Caller holds rrlock. */
static bool proxied_locked(const struct mb_nats *n, const char *name)
{
	for (uint32_t i = 0; i < n->nproxied; i++)
		if (!strcmp(n->proxied[i]->name, name))
			return true;
	return false;
}

/* Serve name on the bridge handle, for NATS; false: the limit, or no
 * room on the bus. Caller holds rrlock. */
static bool proxy_locked(struct mb_nats *n, const char *name)
{
	if (proxied_locked(n, name))
		return true; /* served already: the caller looks again */
	/* Each name takes a subscription slot of the bus: leave most to
	 * local participants. */
	if (n->nproxied == NATS_PROXIED_MAX || n->nproxied >= n->lb->cfg.max_subs / 4)
		return false;
	struct nats_proxied *pa = malloc(sizeof(*pa));
	if (!pa)
		return false;
	pa->n = n;
	snprintf(pa->name, sizeof(pa->name), "%s", name);
	if (msgbus_serve(n->lb, name, on_local_request, pa, &pa->svc)) {
		free(pa);
		return false;
	}
	n->proxied[n->nproxied++] = pa;
	return true;
}

/* The no_worker link hook (links.c): a request from bus (the handle that
 * made the link, not a bridge: one hop) that no local worker serves. */
bool mb_nats_no_worker(msgbus_bus *bus, const char *service)
{
	/* Pairs with the release in links.c:links_of(). */
	struct mb_links *ls = __atomic_load_n(&bus->links, __ATOMIC_ACQUIRE);
	bool routed = false;
	if (!ls || mb_link_is_bridge(bus, bus->self))
		return false;
	pthread_mutex_lock(&ls->lock);
	for (struct mb_nats *n = ls->nats; n && !routed; n = n->next) {
		pthread_mutex_lock(&n->wlock);
		bool up = n->up;
		pthread_mutex_unlock(&n->wlock);
		if (!up)
			continue;
		pthread_mutex_lock(&n->rrlock);
		routed = proxy_locked(n, service);
		pthread_mutex_unlock(&n->rrlock);
	}
	pthread_mutex_unlock(&ls->lock);
	return routed;
}

/*
 * The call_direct link hook (links.c), for the nats:// links of ls: a call
 * of the linking handle to a name a link serves for NATS is taken as the
 * link's worker would take it (the entry becomes TAKEN by the bridge
 * handle) and sent from the requester's thread, with no hand-off to the
 * worker thread. The reply (or an error) comes into the entry as before.
 * MSGBUS_ENOENT: no link serves it. Caller holds ls->lock.
 */
int mb_nats_call_direct(struct mb_links *ls, const char *service, const struct mb_req_hdr *hdr,
                        const void *data, size_t len)
{
	for (struct mb_nats *n = ls->nats; n; n = n->next) {
		pthread_mutex_lock(&n->rrlock);
		bool served = proxied_locked(n, service);
		pthread_mutex_unlock(&n->rrlock);
		if (!served)
			continue;
		if (hdr->from >= n->lb->cfg.max_participants || hdr->entry >= MB_CALLS)
			return MSGBUS_ENOENT;
		msgbus_req *req = mb_req_new(n->lb, hdr);
		if (!req)
			return MSGBUS_ENOENT;
		/* As a worker takes a request (serve.c:try_take): the
		 * requester watches the bridge handle from now on. */
		struct mb_call *e = mb_call_at(n->lb, hdr->from, hdr->entry);
		uint64_t w = mb_callw(hdr->corr, 0, MB_CALL_PENDING);
		/* seq_cst, as every change of a call's word: acquire pairs
		 * with the release that made it PENDING (reqrep/call.c:
		 * mb_call_start_listed), release with the requester's
		 * acquire of TAKEN (call.c:check()). */
		if (!atomic_compare_exchange_strong(&e->word, &w,
		                                    mb_callw(hdr->corr, n->lb->self, MB_CALL_TAKEN))) {
			free(req);
			return MSGBUS_ENOENT;
		}
		send_out(n, service, req, data, len);
		return 0;
	}
	return MSGBUS_ENOENT;
}

/* _INBOX.<prefix>.<id>: the id, or false. */
static bool inbox_id(const struct mb_nats *n, const struct mb_nats_in *in, uint64_t *id)
{
	size_t pl = strlen(n->inbox);
	uint64_t x = 0;
	if (in->subject_len <= pl || in->subject_len - pl > 19 ||
	    memcmp(in->subject, n->inbox, pl))
		return false;
	for (size_t i = pl; i < in->subject_len; i++) {
		if (in->subject[i] < '0' || in->subject[i] > '9')
			return false;
		x = x * 10 + (uint64_t)(in->subject[i] - '0');
	}
	*id = x;
	return true;
}

void mb_nats_on_reply(struct mb_nats *n, const struct mb_nats_in *in)
{
	uint64_t id;
	msgbus_req *req = NULL;
	if (!inbox_id(n, in, &id))
		return;
	pthread_mutex_lock(&n->rrlock);
	struct nats_out *o = &n->out[id % NATS_PENDING];
	if (o->req && o->id == id) {
		req = o->req;
		o->req = NULL;
	}
	pthread_mutex_unlock(&n->rrlock);
	if (!req)
		return; /* late: the requester gave up */
	if (in->op == MB_NATS_HMSG && in->status == 503)
		mb_respond_error(req, MSGBUS_ENORESPONDERS);
	else if (in->op == MB_NATS_HMSG && in->status >= 400)
		mb_respond_error(req, MSGBUS_EPROTO);
	else
		msgbus_respond(req, in->payload, in->payload_len);
}

/* Requests in flight that match: answered with err. expired_only: those
 * whose requester's deadline has passed. */
static void fail_out(struct mb_nats *n, int err, bool expired_only)
{
	uint64_t now = mb_now_ns();
	for (uint32_t i = 0; i < NATS_PENDING; i++) {
		pthread_mutex_lock(&n->rrlock);
		msgbus_req *req = n->out[i].req;
		if (req && (!expired_only || mb_req_deadline(req) <= now))
			n->out[i].req = NULL;
		else
			req = NULL;
		pthread_mutex_unlock(&n->rrlock);
		if (req)
			mb_respond_error(req, err);
	}
}

bool mb_nats_requests_out(struct mb_nats *n)
{
	bool any = false;
	pthread_mutex_lock(&n->rrlock);
	for (uint32_t i = 0; i < NATS_PENDING && !any; i++)
		any = n->out[i].req != NULL;
	pthread_mutex_unlock(&n->rrlock);
	return any;
}

void mb_nats_fail_pending(struct mb_nats *n, int err)
{
	fail_out(n, err, false);
}

/* ---- in: requests from NATS to local workers --------------------------------- */

/* mb_call_start_nowait's listed: rx's call is `starting` from before its
 * request can reach a worker, so the worker's replied hook finds it. */
struct starting {
	struct mb_nats *n;
	struct nats_in_call *c;
};

static void starting_listed(msgbus_call *call, void *arg)
{
	struct starting *st = arg;
	pthread_mutex_lock(&st->n->rrlock);
	st->c->call = call;
	st->n->starting = st->c;
	pthread_mutex_unlock(&st->n->rrlock);
}

/*
 * A request from NATS for a local service. rx calls the local worker itself
 * when the service's ring has room now and nothing waits before it, so the
 * worker is reached without waking the rr thread; otherwise (a full ring
 * must not stall the socket) it queues the request for the rr thread,
 * which may wait for room. The reply goes out from the worker's thread
 * (mb_nats_replied finds the call as `starting` or in calls), or the rr
 * thread's when the worker's hook could not look.
 */
void mb_nats_on_request(struct mb_nats *n, const char *service, const struct mb_nats_in *in)
{
	struct nats_in_call *c = NULL;
	bool room, backlog;
	pthread_mutex_lock(&n->rrlock);
	room = n->nqueued < NATS_PENDING;
	backlog = n->queued != NULL;
	pthread_mutex_unlock(&n->rrlock);
	if (room && in->reply && in->reply_len < sizeof(c->reply))
		c = malloc(sizeof(*c) + (backlog ? in->payload_len : 0));
	if (!c) {
		atomic_fetch_add_explicit(&n->ls->undelivered, 1, memory_order_relaxed); /* the requester times out */
		return;
	}
	c->call = NULL;
	snprintf(c->service, sizeof(c->service), "%s", service);
	memcpy(c->reply, in->reply, in->reply_len);
	c->reply[in->reply_len] = '\0';
	c->len = in->payload_len;
	c->next = NULL;
	if (!backlog) {
		struct starting st = { n, c };
		msgbus_call *call; /* not c->call: c may be freed once listed */
		int rc = mb_call_start_nowait(n->lb, service, in->payload, in->payload_len,
		                              NATS_REMOTE_REQ_MS, &call, starting_listed, &st);
		pthread_mutex_lock(&n->rrlock);
		bool ours = n->starting == c; /* else a worker took it, and its reply */
		if (ours)
			n->starting = NULL;
		if (rc == 0) {
			atomic_fetch_add_explicit(&n->ls->received, 1, memory_order_relaxed);
			if (!ours) {
				pthread_mutex_unlock(&n->rrlock);
				return;
			}
			/* A worker whose replied hook could not look (the
			 * link list busy) woke the rr thread, which cannot
			 * see `starting`: wake it again. The worker wrote the
			 * state before its wake; this load is under rrlock,
			 * while c is listed (once unlocked, c may be gone). */
			c->next = n->calls;
			n->calls = c;
			bool answered = mb_call_answered(c->call);
			pthread_mutex_unlock(&n->rrlock);
			if (answered)
				mb_ec_signal(&mb_part_at(n->lb, n->lb->self)->reply_ec);
			return;
		}
		pthread_mutex_unlock(&n->rrlock);
		/* the call is gone (no worker saw it) */
		if (rc != MSGBUS_EAGAIN && rc != MSGBUS_ELIMIT) {
			atomic_fetch_add_explicit(&n->ls->undelivered, 1, memory_order_relaxed); /* as start_calls */
			free(c);
			return;
		}
		/* no room now: the rr thread waits for it */
		struct nats_in_call *q = realloc(c, sizeof(*c) + in->payload_len);
		if (!q) {
			atomic_fetch_add_explicit(&n->ls->undelivered, 1, memory_order_relaxed);
			free(c);
			return;
		}
		c = q;
		c->call = NULL;
	}
	if (c->len)
		memcpy(c->data, in->payload, c->len);
	pthread_mutex_lock(&n->rrlock);
	*n->queued_tail = c;
	n->queued_tail = &c->next;
	n->nqueued++;
	pthread_mutex_unlock(&n->rrlock);
	atomic_fetch_add_explicit(&n->ls->received, 1, memory_order_relaxed);
	mb_ec_kick(&mb_part_at(n->lb, n->lb->self)->reply_ec);
}

/* Call the queued requests on local workers, in order (this may wait for
 * room on a service's ring, up to NATS_REMOTE_REQ_MS). Each stays at the
 * head of the queue until it is called, so rx, which calls a request
 * itself only when nothing is queued, never overtakes it. */
static void start_calls(struct mb_nats *n)
{
	for (;;) {
		pthread_mutex_lock(&n->rrlock);
		struct nats_in_call *c = n->queued; /* only this thread takes */
		pthread_mutex_unlock(&n->rrlock);
		if (!c)
			return;
		int rc = msgbus_call_start(n->lb, c->service, c->data, c->len, NATS_REMOTE_REQ_MS,
		                           &c->call);
		pthread_mutex_lock(&n->rrlock);
		n->queued = c->next;
		if (!n->queued)
			n->queued_tail = &n->queued;
		n->nqueued--;
		if (rc == 0) {
			c->next = n->calls;
			n->calls = c;
		}
		pthread_mutex_unlock(&n->rrlock);
		if (rc) {
			atomic_fetch_add_explicit(&n->ls->undelivered, 1, memory_order_relaxed);
			free(c);
		}
	}
}

/* A call from NATS is over (rc, and reply if 0): PUB the reply to the
 * requester's reply subject (an error is not sent: the requester times
 * out, as with NATS itself); frees c. */
static void send_reply(struct mb_nats *n, struct nats_in_call *c, int rc, msgbus_msg *reply)
{
	if (rc == 0) {
		size_t len = msgbus_msg_len(reply);
		pthread_mutex_lock(&n->wlock);
		bool ok = len <= n->max_payload &&
		          mb_nats_pub_locked(n, c->reply, NULL, msgbus_msg_data(reply), len);
		pthread_mutex_unlock(&n->wlock);
		atomic_fetch_add_explicit(ok ? &n->ls->sent : &n->ls->undelivered, 1, memory_order_relaxed);
		msgbus_msg_release(reply);
	}
	free(c);
}

/* Look at every call once: replies go out, finished calls are freed. */
/* PUB call c's outcome if it has one (true); else list it again for the
 * rr thread (false). */
static bool answer_or_relist(struct mb_nats *n, struct nats_in_call *c)
{
	msgbus_msg *reply;
	int rc = msgbus_call_wait(c->call, &reply, 0);
	if (rc == MSGBUS_EAGAIN) {
		pthread_mutex_lock(&n->rrlock);
		c->next = n->calls;
		n->calls = c;
		pthread_mutex_unlock(&n->rrlock);
		return false;
	}
	send_reply(n, c, rc, reply);
	return true;
}

static void poll_calls(struct mb_nats *n)
{
	pthread_mutex_lock(&n->rrlock);
	struct nats_in_call *list = n->calls;
	n->calls = NULL;
	pthread_mutex_unlock(&n->rrlock);
	while (list) {
		struct nats_in_call *c = list;
		list = c->next;
		answer_or_relist(n, c);
	}
}

/*
 * The replied link hook (links.c), for the nats:// links of ls: a local
 * worker has just answered call entry `entry` of participant `to`. If that
 * is a call a link made for a request from NATS, take the reply and PUB
 * it from the worker's thread, so the rr thread need not be woken. rx
 * lists its call as `starting` before the request can reach a worker, the
 * rr thread lists its own once started (and takes it when signalled).
 * false: not one of ours, or not listed yet. Caller holds ls->lock.
 */
bool mb_nats_replied(struct mb_links *ls, uint32_t to, uint32_t entry)
{
	for (struct mb_nats *n = ls->nats; n; n = n->next) {
		if (n->lb->self != to)
			continue;
		struct nats_in_call *c = NULL;
		pthread_mutex_lock(&n->rrlock);
		if (n->starting && mb_call_entry(n->starting->call) == entry) {
			c = n->starting; /* rx has not listed it in calls yet */
			n->starting = NULL;
		}
		for (struct nats_in_call **pp = &n->calls; !c && *pp; pp = &(*pp)->next) {
			if (mb_call_entry((*pp)->call) == entry) {
				c = *pp;
				*pp = c->next;
				break;
			}
		}
		pthread_mutex_unlock(&n->rrlock);
		if (!c)
			return false;
		/* false: not this one's reply after all; the rr thread looks */
		return answer_or_relist(n, c);
	}
	return false;
}

void *mb_nats_rr_main(void *arg)
{
	struct mb_nats *n = arg;
	mb_thread_name("msgbus-nats-rr");
	_Atomic uint32_t *ec = &mb_part_at(n->lb, n->lb->self)->reply_ec;
	uint64_t next_sweep = 0;
	while (!mb_nats_stopping(n)) {
		uint32_t v = mb_ec_prepare(ec);
		start_calls(n);
		poll_calls(n);
		uint64_t now = mb_now_ns();
		if (now >= next_sweep) {
			fail_out(n, MSGBUS_ETIMEDOUT, true); /* frees what nobody waits for */
			next_sweep = now + RR_NAP_MS * 1000000ull;
		}
		if (mb_nats_stopping(n)) /* after the prepare: see mb_nats_stopping */
			break;
		mb_ec_sleep(ec, v, now, now + RR_NAP_MS * 1000000ull);
	}
	return NULL;
}

void mb_nats_rr_init(struct mb_nats *n)
{
	pthread_mutex_init(&n->rrlock, NULL);
	n->next_id = 1;
	n->queued_tail = &n->queued;
	/* Unique enough across buses and restarts: time and address. */
	snprintf(n->inbox, sizeof(n->inbox), "_INBOX.mb%llx%llx.",
	         (unsigned long long)mb_now_ns(), (unsigned long long)(uintptr_t)n);
}

void mb_nats_rr_end(struct mb_nats *n)
{
	for (uint32_t i = 0; i < n->nproxied; i++) {
		msgbus_unserve(n->proxied[i]->svc); /* joins its thread */
		free(n->proxied[i]);
	}
	n->nproxied = 0;
	mb_nats_fail_pending(n, MSGBUS_EPEERDIED);
	while (n->calls) {
		struct nats_in_call *c = n->calls;
		n->calls = c->next;
		msgbus_call_cancel(c->call);
		free(c);
	}
	while (n->queued) {
		struct nats_in_call *c = n->queued;
		n->queued = c->next;
		free(c);
	}
	pthread_mutex_destroy(&n->rrlock);
}
