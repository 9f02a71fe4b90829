/* link_rr.c - requests across a link, both ways: the peer's services as
 * local workers, the peer's requests as local calls; see link_conn.h. */
#include "link/link_conn.h"
#include "reqrep/rr.h"
#include "platform/wait.h"

/* A local requester's call, taken by the link as a worker of a service the
 * peer has: forward it. */
static void forward_request(msgbus_req *req, void *arg)
{
	struct rsvc *rs = arg;
	struct mb_conn *c = rs->conn;
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
	f.name_len = (uint16_t)strlen(rs->name);
	memcpy(f.name, rs->name, f.name_len + 1u);
	f.payload = msgbus_req_data(req);
	f.payload_len = (uint32_t)msgbus_req_len(req);
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

/* The peer's requester asks a service of ours: call it locally. The rx
 * thread comes here, and never writes: a refusal is answered by the rr
 * thread, like any reply. */
void mb_link_on_req(struct mb_conn *c, const struct mb_frame *f)
{
	msgbus_call *call = NULL;
	int rc = msgbus_call_start(c->lb, f->name, f->payload, f->payload_len,
	                           f->arg ? (int)(f->arg > INT32_MAX ? INT32_MAX : f->arg) : -1,
	                           &call);
	struct peer_call *pc = malloc(sizeof(*pc));
	if (!pc) {
		if (call)
			msgbus_call_cancel(call);
		mb_link_log(c, "dropping a request", "out of memory");
		return; /* the remote requester times out */
	}
	pc->id = f->id;
	pc->call = rc ? NULL : call;
	pc->rc = rc;
	pthread_mutex_lock(&c->lock);
	pc->next = c->calls;
	c->calls = pc;
	pthread_mutex_unlock(&c->lock);
	mb_ec_kick(&mb_part_at(c->lb, c->lb->self)->reply_ec);
}

void *mb_link_rr_main(void *arg)
{
	struct mb_conn *c = arg;
	_Atomic uint32_t *ec = &mb_part_at(c->lb, c->lb->self)->reply_ec;
	while (!atomic_load(&c->down)) {
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
				if (pc->rc == MSGBUS_OK) {
					mb_link_send_rep(c, pc->id, 0, msgbus_msg_data(pc->reply),
					         msgbus_msg_len(pc->reply));
					msgbus_msg_release(pc->reply);
				} else {
					mb_link_send_rep(c, pc->id, pc->rc, NULL, 0);
				}
				free(pc);
			}
			continue;
		}
		/* Woken by any reply to the link's calls; the timeout also
		 * lets pending calls watch their workers and deadlines. */
		uint64_t now = mb_now_ns();
		mb_ec_sleep(ec, v, now, now + (pending ? 50 : 500) * 1000000ull);
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
