/* link_rr.c - requests across a link, both ways: the peer's services as
 * local workers, the peer's requests as local calls; see conn_state.h. */
#include "link/link_rr.h"
#include "link/link_log.h"
#include "link/link_send.h"
#include "reqrep/serve.h"
#include "reqrep/call.h"
#include "platform/wait.h"

/* Send req, taken by the link, to the peer as a REQ for name: pending
 * first, so the reply finds it. A failure answers req at once. */
static void send_req(struct mb_conn *c, const char *name, msgbus_req *req, const void *data,
                     size_t len)
{
	uint64_t now = mb_now_ns(), deadline = mb_req_deadline(req);
	uint32_t id, slot;
	pthread_mutex_lock(&c->lock);
	id = ++c->next_id;
	slot = id % PENDING;
	bool busy = c->pending[slot] != NULL;
	if (!busy) {
		c->pending[slot] = req;
		c->pending_id[slot] = id;
	}
	pthread_mutex_unlock(&c->lock);
	if (busy) {
		mb_respond_error(req, MSGBUS_ELIMIT);
		return;
	}
	struct mb_frame f = { .type = MB_F_REQ, .id = id };
	uint64_t left = deadline > now ? (deadline - now) / 1000000u + 1 : 1;
	f.arg = deadline == UINT64_MAX || left > UINT32_MAX ? 0 : (uint32_t)left;
	f.name_len = (uint16_t)strlen(name);
	memcpy(f.name, name, f.name_len + 1u);
	f.payload = data;
	f.payload_len = (uint32_t)len;
	int rc = mb_link_send_frame(c, &f, true);
	if (rc == 0)
		return;
	pthread_mutex_lock(&c->lock);
	if (c->pending[slot] == req)
		c->pending[slot] = NULL;
	else
		req = NULL; /* answered meanwhile */
	pthread_mutex_unlock(&c->lock);
	if (req)
		mb_respond_error(req, rc == MSGBUS_EMSGSIZE ? MSGBUS_EMSGSIZE : MSGBUS_EPEERDIED);
}

/* A local requester's call, taken by the link as a worker of a service the
 * peer has: forward it. */
static void forward_request(msgbus_req *req, void *arg)
{
	struct rsvc *rs = arg;
	send_req(rs->conn, rs->name, req, msgbus_req_data(req), msgbus_req_len(req));
}

/*
 * A call of the linking handle to a service only the peer serves
 * (the call_direct link hook, call.c): take it and send it from the
 * requester's thread, instead of queueing it for the link's worker thread. The reply
 * is written straight into the call's entry by whoever reads it
 * (mb_link_on_rep). MSGBUS_ENOENT: the peer does not serve it.
 */
int mb_conn_call_direct(struct mb_conn *c, const char *service, const struct mb_req_hdr *hdr,
                        const void *data, size_t len)
{
	if (mb_conn_down(c))
		return MSGBUS_ENOENT;
	bool served = false;
	pthread_mutex_lock(&c->lock);
	for (uint32_t i = 0; i < c->nrsvcs && !served; i++)
		served = !strcmp(c->rsvcs[i]->name, service);
	pthread_mutex_unlock(&c->lock);
	/* served: the rx thread listed the service after it set c->lb */
	if (!served || hdr->from >= c->lb->cfg.max_participants || hdr->entry >= MB_CALLS)
		return MSGBUS_ENOENT;
	msgbus_req *req = mb_req_new(c->lb, hdr);
	if (!req)
		return MSGBUS_ENOENT;
	/* As a worker takes a request (serve.c:try_take): the requester
	 * watches the link's participant from now on. */
	struct mb_call *e = mb_call_at(c->lb, hdr->from, hdr->entry);
	uint64_t w = mb_callw(hdr->corr, 0, MB_CALL_PENDING);
	/* seq_cst, as every change of a call's word: acquire pairs with
	 * the release that made it PENDING (reqrep/call.c:
	 * mb_call_start_listed), release with the requester's acquire of
	 * TAKEN (call.c:check()). */
	if (!atomic_compare_exchange_strong(&e->word, &w,
	                                    mb_callw(hdr->corr, c->lb->self, MB_CALL_TAKEN))) {
		free(req);
		return MSGBUS_ENOENT;
	}
	send_req(c, service, req, data, len);
	return 0;
}

void mb_link_on_rep(struct mb_conn *c, const struct mb_frame *f)
{
	uint32_t slot = f->id % PENDING;
	pthread_mutex_lock(&c->lock);
	msgbus_req *req = NULL;
	if (c->pending_id[slot] == f->id) { /* a late or bogus id matches nothing */
		req = c->pending[slot];
		c->pending[slot] = NULL;
	}
	pthread_mutex_unlock(&c->lock);
	if (!req)
		return; /* it timed out here already */
	if (f->arg)
		mb_respond_error(req, (int)f->arg);
	else
		msgbus_respond(req, f->payload, f->payload_len);
}

/* The call of a peer's request exists: list it before a worker can
 * answer it (mb_conn_reply_inline looks for it then). */
static void list_call(msgbus_call *call, void *arg)
{
	struct peer_call *pc = arg;
	struct mb_conn *c = pc->conn;
	pc->call = call;
	pthread_mutex_lock(&c->lock);
	pc->next = c->calls;
	c->calls = pc;
	pthread_mutex_unlock(&c->lock);
}

static int req_timeout_ms(const struct mb_frame *f)
{
	return f->arg ? (int)(f->arg > INT32_MAX ? INT32_MAX : f->arg) : -1;
}

/* After the call of a peer's request started (rc 0) or was refused: the
 * rr thread sends the refusal, or watches the call's worker and deadline,
 * soon rather than at the end of a long sleep. */
static void req_started(struct mb_conn *c, int rc)
{
	if (!rc && atomic_load_explicit(&c->rr_until, memory_order_relaxed) <= mb_now_ns() + RR_WATCH_NS)
		return; /* the rr thread looks within RR_WATCH_NS anyway */
	mb_ec_kick(&mb_part_at(c->lb, c->lb->self)->reply_ec);
}

/* The peer's requester asks a service of ours: call it locally. The rx
 * thread comes here, and never writes: the reply is sent by the worker
 * that answers (mb_conn_reply_inline) or by the rr thread, and so is a
 * refusal. */
void mb_link_on_req(struct mb_conn *c, const struct mb_frame *f)
{
	struct peer_call *pc = calloc(1, sizeof(*pc));
	if (!pc) {
		mb_link_log(c, "dropping a request", "out of memory");
		return; /* the remote requester times out */
	}
	pc->id = f->id;
	pc->conn = c;
	msgbus_call *call = NULL;
	int rc = mb_call_start_listed(c->lb, f->name, f->payload, f->payload_len,
	                              req_timeout_ms(f), &call, list_call, pc);
	if (rc) { /* refused at once: not listed */
		pc->rc = rc;
		list_call(NULL, pc);
	}
	req_started(c, rc);
}

/*
 * The same from a thread spinning on the linking handle (link_recv.c,
 * inline), which may not wait: false when the service's ring (or the
 * handle's call entries) has no room now, and the rx thread, which may
 * wait, is left the request. The call is listed once started: a worker
 * that answers before that finds no listed call and wakes the rr thread,
 * so a call answered by then wakes it again (as nats_rr.c does).
 */
bool mb_link_on_req_nowait(struct mb_conn *c, const struct mb_frame *f)
{
	struct peer_call *pc = calloc(1, sizeof(*pc));
	if (!pc)
		return false;
	pc->id = f->id;
	pc->conn = c;
	msgbus_call *call = NULL;
	int rc = mb_call_start_nowait(c->lb, f->name, f->payload, f->payload_len,
	                              req_timeout_ms(f), &call, NULL, NULL);
	if (rc == MSGBUS_EAGAIN || rc == MSGBUS_ELIMIT) {
		free(pc);
		return false;
	}
	pc->rc = rc;
	pc->call = rc ? NULL : call;
	pthread_mutex_lock(&c->lock);
	pc->next = c->calls;
	c->calls = pc;
	/* Once unlocked, pc may be sent and freed, and the call with it. A
	 * worker wrote the state before its wake of the rr thread. */
	bool answered = !rc && mb_call_answered(call);
	pthread_mutex_unlock(&c->lock);
	if (answered)
		mb_ec_signal(&mb_part_at(c->lb, c->lb->self)->reply_ec);
	else
		req_started(c, rc);
	return true;
}

/* Send the answer of a finished call back to the peer; frees pc. */
static void send_done(struct mb_conn *c, struct peer_call *pc)
{
	if (pc->rc == MSGBUS_OK) {
		mb_link_send_rep(c, pc->id, 0, msgbus_msg_data(pc->reply), msgbus_msg_len(pc->reply));
		msgbus_msg_release(pc->reply);
	} else {
		mb_link_send_rep(c, pc->id, pc->rc, NULL, 0);
	}
	free(pc);
}

/*
 * A local worker has just answered call entry `entry` of participant
 * `to`, if that is the link's handle (the replied link hook, serve.c), in
 * the worker's thread: take the reply and send it to the peer here, so the
 * rr thread need not be woken.
 * false: not one of ours (yet: on_req lists a call after starting it),
 * the rr thread takes it when signalled.
 */
bool mb_conn_reply_inline(struct mb_conn *c, uint32_t to, uint32_t entry)
{
	struct peer_call *pc = NULL;
	if (mb_conn_down(c))
		return false;
	pthread_mutex_lock(&c->lock);
	/* A listed call: the rx thread set c->lb before it listed any. */
	for (struct peer_call **pp = &c->calls; *pp; pp = &(*pp)->next) {
		if (c->lb->self != to)
			break;
		if (!(*pp)->call || mb_call_entry((*pp)->call) != entry)
			continue;
		pc = *pp;
		pc->rc = msgbus_call_wait(pc->call, &pc->reply, 0);
		if (pc->rc == MSGBUS_EAGAIN) {
			pc = NULL; /* not this one's reply after all */
			break;
		}
		*pp = pc->next; /* the call is freed by its final result */
		break;
	}
	pthread_mutex_unlock(&c->lock);
	if (!pc)
		return false;
	send_done(c, pc);
	return true;
}

void *mb_link_rr_main(void *arg)
{
	struct mb_conn *c = arg;
	mb_thread_name("msgbus-rr");
	_Atomic uint32_t *ec = &mb_part_at(c->lb, c->lb->self)->reply_ec;
	while (!mb_conn_down(c)) {
		uint32_t v = mb_ec_prepare(ec);
		struct peer_call *done = NULL;
		bool pending = false;
		pthread_mutex_lock(&c->lock);
		for (struct peer_call **pp = &c->calls; *pp;) {
			struct peer_call *pc = *pp;
			if (pc->call &&
			    (pc->rc = msgbus_call_wait(pc->call, &pc->reply, 0)) == MSGBUS_EAGAIN) {
				pending = true;
				pp = &pc->next;
				continue;
			}
			*pp = pc->next; /* the call is freed by its final result */
			pc->next = done;
			done = pc;
		}
		pthread_mutex_unlock(&c->lock);
		if (done) {
			while (done) {
				struct peer_call *pc = done;
				done = pc->next;
				send_done(c, pc);
			}
			continue;
		}
		/* Woken by any reply to the link's calls; the timeout also
		 * lets pending calls watch their workers and deadlines. A
		 * request that comes during a long sleep kicks it. */
		uint64_t now = mb_now_ns(), until = now + (pending ? RR_WATCH_NS : 500000000ull);
		atomic_store_explicit(&c->rr_until, until, memory_order_relaxed);
		mb_ec_sleep(ec, v, now, until);
	}
	return NULL;
}

/* The peer stops serving name: so do we. */
static void unserve(struct mb_conn *c, struct rsvc *rs)
{
	/* Stop serving before the statistics stop showing it. */
	msgbus_unserve(rs->svc);
	pthread_mutex_lock(&c->lock);
	for (uint32_t j = 0; j < c->nrsvcs; j++)
		if (c->rsvcs[j] == rs)
			c->rsvcs[j] = c->rsvcs[--c->nrsvcs];
	pthread_mutex_unlock(&c->lock);
	free(rs);
}

/* Whether the link may serve name: the service's subject exists, or the
 * links' share of the subject table has room for it. */
static bool may_serve(struct mb_conn *c, const char *name)
{
	char subject[MB_SUBJECT_MAX + 1];
	uint32_t t;
	int rc = mb_service_topic(c->lb, name, false, MB_NO_WAIT, &t, subject);
	if (rc == 0 || rc == MSGBUS_EINVAL)
		return true; /* msgbus_serve says why not */
	if (mb_link_may_create(c->lb, subject, strlen(subject)))
		return true;
	mb_link_log(c, "not serving", "the links' share of the subject table is used up");
	return false;
}

bool mb_link_on_serve(struct mb_conn *c, const char *name, bool on)
{
	pthread_mutex_lock(&c->lock);
	for (uint32_t i = 0; i < c->nrsvcs; i++) {
		struct rsvc *rs = c->rsvcs[i];
		if (strcmp(rs->name, name))
			continue;
		pthread_mutex_unlock(&c->lock);
		if (!on)
			unserve(c, rs);
		return true;
	}
	bool full = c->rsubs.n + c->nrsvcs >= c->max_patterns;
	pthread_mutex_unlock(&c->lock);
	if (!on)
		return true;
	if (full)
		return false;
	if (!may_serve(c, name))
		return true;
	struct rsvc *rs = calloc(1, sizeof(*rs));
	/* NOLINTNEXTLINE(bugprone-sizeof-expression): v is an array of pointers */
	struct rsvc **v = rs ? realloc(c->rsvcs, (c->nrsvcs + 1) * sizeof(*v)) : NULL;
	if (!v) {
		free(rs);
		return true;
	}
	c->rsvcs = v;
	snprintf(rs->name, sizeof(rs->name), "%s", name);
	rs->conn = c;
	/* The link becomes one more worker of the service here. */
	if (msgbus_serve(c->lb, name, forward_request, rs, &rs->svc)) {
		free(rs);
		return true;
	}
	pthread_mutex_lock(&c->lock);
	c->rsvcs[c->nrsvcs++] = rs;
	pthread_mutex_unlock(&c->lock);
	return true;
}
