/*
 * link.c - one TCP connection between two buses (msgbus-wire(7)).
 *
 * A link is a bridge participant: it opens its own handle on the local bus,
 * marked as a bridge, so what it republishes is recognisable and never
 * forwarded to another link (one hop: cycles cannot loop). Three threads:
 *  rx  reads frames: interest, messages to republish, requests to call
 *      locally, replies to requests it forwarded;
 *  tx  follows the local bus with a lossless subscription and sends what
 *      the peer is interested in, in batches; advertises local interest;
 *  rr  waits for local replies to the peer's requests and sends them back.
 * Backpressure is end to end: a slow peer stops reading, our writes block,
 * our lossless subscription stops releasing, local publishers wait.
 */
#include "link.h"
#include "rr.h"
#include "sub.h"
#include "wait.h"
#include "wire.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEARTBEAT_MS 1000
#define DEAD_AFTER_MS 5000
#define TXBUF (256u << 10)
#define PENDING 4096u /* requests forwarded to the peer, awaiting replies */
#define BATCH_NS 40000u /* a write within this of the last one waits to batch */

struct names {
	char **v;
	uint32_t n;
};

struct rsvc {
	char name[MB_SUBJECT_MAX + 1];
	msgbus_service *svc;
	struct mb_conn *conn;
};

struct peer_call {
	uint32_t id;
	int rc;
	msgbus_call *call;
	msgbus_msg *reply;
	struct peer_call *next;
};

struct mb_conn {
	struct mb_links *ls;
	msgbus_bus *lb; /* the link's own, bridge-marked handle */
	int fd;
	char peer[96];
	_Atomic bool down;
	pthread_t tx, rr;
	pthread_mutex_t wlock; /* one writer at a time on the socket */
	uint8_t *txbuf;
	size_t txlen;
	uint32_t txmsgs; /* MSG frames in txbuf: sent once written, else lost */
	uint64_t last_flush_ns;
	_Atomic uint64_t last_tx_ns; /* read by tx without wlock for heartbeats */
	uint32_t peer_max_frame;

	pthread_mutex_t lock; /* remote interest, proxy, pending, calls */
	struct names rsubs;
	msgbus_sub *proxy; /* follows the bus once the peer wants anything;
	                    * created by rx, read by tx */
	struct rsvc **rsvcs;
	uint32_t nrsvcs;
	msgbus_req *pending[PENDING];
	uint32_t pending_id[PENDING];
	uint32_t next_id;
	struct peer_call *calls;
};

static bool names_has(const struct names *s, const char *x)
{
	for (uint32_t i = 0; i < s->n; i++)
		if (!strcmp(s->v[i], x))
			return true;
	return false;
}

static int names_add(struct names *s, const char *x)
{
	char **v = realloc(s->v, (s->n + 1) * sizeof(*v));
	if (!v)
		return MSGBUS_ENOMEM;
	s->v = v;
	if (!(v[s->n] = strdup(x)))
		return MSGBUS_ENOMEM;
	s->n++;
	return 0;
}

static void names_del(struct names *s, const char *x)
{
	for (uint32_t i = 0; i < s->n; i++) {
		if (!strcmp(s->v[i], x)) {
			free(s->v[i]);
			s->v[i] = s->v[--s->n];
			return;
		}
	}
}

static void names_clear(struct names *s)
{
	for (uint32_t i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
	s->v = NULL;
	s->n = 0;
}

static void link_log(struct mb_conn *c, const char *what, const char *why)
{
	fprintf(stderr, "msgbus: link %s: %s: %s\n", c->peer, what, why);
}

/* ---- sending -------------------------------------------------------------- */

static int flush_locked(struct mb_conn *c)
{
	int rc = 0;
	/* Counted before the write, so the count never lags what the peer
	 * has; taken back if the write fails. */
	atomic_fetch_add(&c->ls->sent, c->txmsgs);
	if (c->txlen)
		rc = mb_sock_write2(c->fd, c->txbuf, c->txlen, NULL, 0);
	if (rc) {
		atomic_fetch_sub(&c->ls->sent, c->txmsgs);
		atomic_fetch_add(&c->ls->undelivered, c->txmsgs);
	}
	if (c->txlen)
		c->last_flush_ns = mb_now_ns();
	c->txlen = 0;
	c->txmsgs = 0;
	if (rc)
		atomic_store(&c->down, true);
	return rc;
}

/* Queue a frame; small ones are batched, large payloads go straight out
 * after what is queued. now: flush before returning. */
static int send_frame(struct mb_conn *c, struct mb_frame *f, bool now)
{
	uint8_t head[MB_WIRE_HEAD_MAX];
	if (atomic_load(&c->down))
		return MSGBUS_ECLOSED;
	size_t hl = mb_wire_encode(head, f);
	if (hl - MB_WIRE_HDR + f->payload_len > c->peer_max_frame)
		return MSGBUS_EMSGSIZE;
	int rc = 0;
	pthread_mutex_lock(&c->wlock);
	if (c->txlen + hl + f->payload_len <= TXBUF) {
		memcpy(c->txbuf + c->txlen, head, hl);
		if (f->payload_len)
			memcpy(c->txbuf + c->txlen + hl, f->payload, f->payload_len);
		c->txlen += hl + f->payload_len;
		c->txmsgs += f->type == MB_F_MSG;
		if (now || c->txlen > TXBUF / 2)
			rc = flush_locked(c);
	} else {
		rc = flush_locked(c);
		if (f->type == MB_F_MSG)
			atomic_fetch_add(&c->ls->sent, 1);
		if (!rc)
			rc = mb_sock_write2(c->fd, head, hl, f->payload, f->payload_len);
		if (rc && f->type == MB_F_MSG) {
			atomic_fetch_sub(&c->ls->sent, 1);
			atomic_fetch_add(&c->ls->undelivered, 1);
		}
		if (rc)
			atomic_store(&c->down, true);
	}
	atomic_store_explicit(&c->last_tx_ns, mb_now_ns(), memory_order_relaxed);
	pthread_mutex_unlock(&c->wlock);
	return rc ? MSGBUS_ECLOSED : 0;
}

static void flush(struct mb_conn *c)
{
	pthread_mutex_lock(&c->wlock);
	flush_locked(c);
	pthread_mutex_unlock(&c->wlock);
}

static int send_name(struct mb_conn *c, uint8_t type, const char *name)
{
	struct mb_frame f = { .type = type };
	f.name_len = (uint16_t)strlen(name);
	memcpy(f.name, name, f.name_len + 1u);
	return send_frame(c, &f, false);
}

/* Send a reply; statuses version 1 cannot carry (an OS error) become
 * EPROTO, and a reply too large for the peer becomes EMSGSIZE, so the
 * remote requester is always answered. */
static int send_rep(struct mb_conn *c, uint32_t id, int status, const void *data, size_t len)
{
	if (status < 0 || status > MSGBUS_ENOENT)
		status = MSGBUS_EPROTO;
	struct mb_frame f = { .type = MB_F_REP, .id = id, .arg = (uint32_t)status };
	if (!status) {
		f.payload = data;
		f.payload_len = (uint32_t)len;
	}
	int rc = send_frame(c, &f, true);
	if (rc == MSGBUS_EMSGSIZE) {
		f.arg = MSGBUS_EMSGSIZE;
		f.payload = NULL;
		f.payload_len = 0;
		rc = send_frame(c, &f, true);
	}
	return rc;
}

/* ---- interest ------------------------------------------------------------- */

static bool is_bridge(msgbus_bus *b, uint32_t idx)
{
	return idx < b->cfg.max_participants &&
	       (atomic_load(&mb_part_at(b, idx)->flags) & MB_PARTF_BRIDGE);
}

/* What local (non-bridge) participants subscribe to and serve. */
static int local_interest(msgbus_bus *b, struct names *subs, struct names *svcs)
{
	int rc = 0;
	for (uint32_t s = 0; s < b->cfg.max_subs && !rc; s++) {
		struct mb_subslot *ss = mb_subslot_at(b, s);
		uint64_t w = atomic_load_explicit(&ss->word, memory_order_acquire);
		if (MB_SUBW_STATE(w) != MB_SUB_ACTIVE)
			continue; /* a slot being reserved is still being written */
		uint32_t plen = ss->pattern_len;
		if (plen > MB_SUBJECT_MAX)
			continue;
		char pat[MB_SUBJECT_MAX + 1];
		size_t checked;
		memcpy(pat, ss->pattern, plen);
		pat[plen] = '\0';
		if (mb_subject_check(pat, &checked, true, NULL) || checked != plen ||
		    atomic_load(&ss->word) != w)
			continue; /* invalid (untrusted), or changed while we read */
		if (MB_SUBW_FLAGS(w) & MB_SUBF_QUEUE) {
			bool local = false;
			for (uint32_t i = 0; i < b->cfg.max_participants && !local; i++)
				local = (atomic_load(&ss->members[i / 64]) >> (i % 64) & 1) &&
				        !is_bridge(b, i);
			const char *name = pat + MB_SVC_PREFIX_LEN;
			if (local && plen > MB_SVC_PREFIX_LEN && !names_has(svcs, name))
				rc = names_add(svcs, name);
		} else if (!is_bridge(b, MB_SUBW_OWNER(w)) && !names_has(subs, pat)) {
			rc = names_add(subs, pat);
		}
	}
	return rc;
}

/* Send the difference between what we told the peer and what is true. */
static void advertise(struct mb_conn *c, struct names *adv_subs, struct names *adv_svcs)
{
	struct names subs = { 0 }, svcs = { 0 };
	if (local_interest(c->lb, &subs, &svcs) == 0) {
		for (uint32_t i = 0; i < subs.n; i++)
			if (!names_has(adv_subs, subs.v[i]) && !send_name(c, MB_F_SUB, subs.v[i]))
				names_add(adv_subs, subs.v[i]);
		for (uint32_t i = 0; i < adv_subs->n;)
			if (!names_has(&subs, adv_subs->v[i]) &&
			    !send_name(c, MB_F_UNSUB, adv_subs->v[i]))
				names_del(adv_subs, adv_subs->v[i]);
			else
				i++;
		for (uint32_t i = 0; i < svcs.n; i++)
			if (!names_has(adv_svcs, svcs.v[i]) && !send_name(c, MB_F_SERVE, svcs.v[i]))
				names_add(adv_svcs, svcs.v[i]);
		for (uint32_t i = 0; i < adv_svcs->n;)
			if (!names_has(&svcs, adv_svcs->v[i]) &&
			    !send_name(c, MB_F_UNSERVE, adv_svcs->v[i]))
				names_del(adv_svcs, adv_svcs->v[i]);
			else
				i++;
		flush(c);
	}
	names_clear(&subs);
	names_clear(&svcs);
}

static bool peer_wants(struct mb_conn *c, const char *subject)
{
	size_t slen = strlen(subject);
	bool yes = false;
	pthread_mutex_lock(&c->lock);
	for (uint32_t i = 0; i < c->rsubs.n && !yes; i++)
		yes = mb_subject_match(c->rsubs.v[i], strlen(c->rsubs.v[i]), subject, slen);
	pthread_mutex_unlock(&c->lock);
	return yes;
}

/* ---- tx: local bus to peer ------------------------------------------------- */

static void *tx_main(void *arg)
{
	struct mb_conn *c = arg;
	struct names adv_subs = { 0 }, adv_svcs = { 0 };
	uint32_t seen = atomic_load(&c->lb->hdr->interest_gen) - 1;
	while (!atomic_load(&c->down)) {
		uint32_t gen = atomic_load(&c->lb->hdr->interest_gen);
		if (gen != seen) {
			seen = gen;
			advertise(c, &adv_subs, &adv_svcs);
		}
		pthread_mutex_lock(&c->lock);
		msgbus_sub *proxy = c->proxy;
		pthread_mutex_unlock(&c->lock);
		msgbus_msg *m;
		int rc = proxy ? msgbus_recv(proxy, &m, 0) : MSGBUS_EAGAIN;
		bool streaming = false;
		if (rc == MSGBUS_EAGAIN && proxy) {
			pthread_mutex_lock(&c->wlock);
			streaming = c->txlen && mb_now_ns() - c->last_flush_ns < BATCH_NS;
			pthread_mutex_unlock(&c->wlock);
		}
		if (streaming) {
			/* Streaming (we wrote moments ago): wait a little for
			 * more, so one write carries many messages. A lone
			 * message, as in a ping-pong, goes out at once. */
			uint64_t until = mb_now_ns() + BATCH_NS / 2;
			while ((rc = msgbus_recv(proxy, &m, 0)) == MSGBUS_EAGAIN &&
			       mb_now_ns() < until)
				mb_cpu_relax();
		}
		if (rc == MSGBUS_EAGAIN) {
			flush(c);
			if (mb_now_ns() - atomic_load_explicit(&c->last_tx_ns, memory_order_relaxed) >
			    HEARTBEAT_MS * 1000000ull) {
				struct mb_frame f = { .type = MB_F_PING, .token = mb_now_ns() };
				send_frame(c, &f, true);
			}
			if (proxy)
				rc = msgbus_recv(proxy, &m, 100);
			else
				mb_nap_us(50000);
		}
		if (rc != MSGBUS_OK)
			continue;
		if (!is_bridge(c->lb, m->origin) && peer_wants(c, m->subject)) {
			struct mb_frame f = { .type = MB_F_MSG };
			f.name_len = (uint16_t)strlen(m->subject);
			memcpy(f.name, m->subject, f.name_len + 1u);
			f.payload = m->data;
			f.payload_len = (uint32_t)m->len;
			if (send_frame(c, &f, false) == MSGBUS_EMSGSIZE)
				atomic_fetch_add(&c->ls->undelivered, 1); /* too large for the peer */
			/* otherwise counted sent or undelivered once written */
		}
		msgbus_msg_release(m);
	}
	names_clear(&adv_subs);
	names_clear(&adv_svcs);
	return NULL;
}

/* ---- requests both ways ------------------------------------------------- */

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
	int rc = send_frame(c, &f, true);
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

static void on_rep(struct mb_conn *c, const struct mb_frame *f)
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

/* The peer's requester asks a service of ours: call it locally. */
static void on_req(struct mb_conn *c, const struct mb_frame *f)
{
	msgbus_call *call;
	int rc = msgbus_call_start(c->lb, f->name, f->payload, f->payload_len,
	                           f->arg ? (int)(f->arg > INT32_MAX ? INT32_MAX : f->arg) : -1,
	                           &call);
	if (rc) {
		send_rep(c, f->id, rc, NULL, 0);
		return;
	}
	struct peer_call *pc = malloc(sizeof(*pc));
	if (!pc) {
		msgbus_call_cancel(call);
		send_rep(c, f->id, MSGBUS_ENOMEM, NULL, 0);
		return;
	}
	pc->id = f->id;
	pc->call = call;
	pthread_mutex_lock(&c->lock);
	pc->next = c->calls;
	c->calls = pc;
	pthread_mutex_unlock(&c->lock);
	mb_ec_kick(&mb_part_at(c->lb, c->lb->self)->reply_ec);
}

static void *rr_main(void *arg)
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
			pc->rc = msgbus_call_wait(pc->call, &pc->reply, 0);
			if (pc->rc == MSGBUS_EAGAIN) {
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
					send_rep(c, pc->id, 0, msgbus_msg_data(pc->reply),
					         msgbus_msg_len(pc->reply));
					msgbus_msg_release(pc->reply);
				} else {
					send_rep(c, pc->id, pc->rc, NULL, 0);
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

/* ---- rx: peer to local bus ------------------------------------------------ */

static void on_serve(struct mb_conn *c, const char *name, bool on)
{
	pthread_mutex_lock(&c->lock);
	for (uint32_t i = 0; i < c->nrsvcs; i++) {
		struct rsvc *rs = c->rsvcs[i];
		if (strcmp(rs->name, name))
			continue;
		if (!on) {
			/* Stop serving before the statistics stop showing it. */
			pthread_mutex_unlock(&c->lock);
			msgbus_unserve(rs->svc);
			pthread_mutex_lock(&c->lock);
			for (uint32_t j = 0; j < c->nrsvcs; j++)
				if (c->rsvcs[j] == rs)
					c->rsvcs[j] = c->rsvcs[--c->nrsvcs];
			pthread_mutex_unlock(&c->lock);
			free(rs);
			return;
		}
		pthread_mutex_unlock(&c->lock);
		return;
	}
	pthread_mutex_unlock(&c->lock);
	if (!on)
		return;
	struct rsvc *rs = calloc(1, sizeof(*rs));
	/* NOLINTNEXTLINE(bugprone-sizeof-expression): v is an array of pointers */
	struct rsvc **v = rs ? realloc(c->rsvcs, (c->nrsvcs + 1) * sizeof(*v)) : NULL;
	if (!v) {
		free(rs);
		return;
	}
	c->rsvcs = v;
	snprintf(rs->name, sizeof(rs->name), "%s", name);
	rs->conn = c;
	/* The link becomes one more worker of the service here. */
	if (msgbus_serve(c->lb, name, forward_request, rs, &rs->svc)) {
		free(rs);
		return;
	}
	pthread_mutex_lock(&c->lock);
	c->rsvcs[c->nrsvcs++] = rs;
	pthread_mutex_unlock(&c->lock);
}

/* Handle one decoded frame; false closes the connection. */
static bool on_frame(struct mb_conn *c, const struct mb_frame *f)
{
	switch (f->type) {
	case MB_F_SUB:
	case MB_F_UNSUB:
		pthread_mutex_lock(&c->lock);
		/* Follow the bus before the interest shows (in the statistics,
		 * to the peer's messages): whatever is published from then on
		 * is seen. */
		if (f->type == MB_F_SUB && !c->proxy &&
		    msgbus_subscribe(c->lb, ">", 0, &c->proxy)) {
			c->proxy = NULL;
			link_log(c, "cannot follow the bus", "no free subscription slot");
		}
		if (f->type == MB_F_SUB && !names_has(&c->rsubs, f->name))
			names_add(&c->rsubs, f->name);
		else if (f->type == MB_F_UNSUB)
			names_del(&c->rsubs, f->name);
		pthread_mutex_unlock(&c->lock);
		return true;
	case MB_F_SERVE:
	case MB_F_UNSERVE:
		on_serve(c, f->name, f->type == MB_F_SERVE);
		return true;
	case MB_F_MSG: {
		/* Waiting here is the backpressure: we stop reading. In
		 * slices, so closing the bus is not held up by a full ring. */
		int rc;
		while ((rc = msgbus_publish(c->lb, f->name, f->payload, f->payload_len, 100)) ==
		               MSGBUS_ETIMEDOUT &&
		       !atomic_load(&c->down))
			;
		atomic_fetch_add(rc ? &c->ls->undelivered : &c->ls->received, 1);
		return true;
	}
	case MB_F_REQ:
		on_req(c, f);
		return true;
	case MB_F_REP:
		on_rep(c, f);
		return true;
	case MB_F_PING: {
		struct mb_frame pong = { .type = MB_F_PONG, .token = f->token };
		send_frame(c, &pong, true);
		return true;
	}
	case MB_F_PONG:
		return true;
	default: /* a second HELLO */
		link_log(c, "closing", "unexpected HELLO");
		return false;
	}
}

struct reader {
	uint8_t *buf;
	size_t cap, len, off;
	uint64_t last_rx_ns;
};

/* Read until buf holds `need` bytes from off; false on EOF, error or a
 * silent peer. */
static bool fill(struct mb_conn *c, struct reader *r, size_t need)
{
	if (r->len - r->off >= need)
		return true;
	if (r->off) {
		memmove(r->buf, r->buf + r->off, r->len - r->off);
		r->len -= r->off;
		r->off = 0;
	}
	if (need > r->cap) {
		uint8_t *nb = realloc(r->buf, need);
		if (!nb) {
			link_log(c, "closing", "out of memory for a frame");
			return false;
		}
		r->buf = nb;
		r->cap = need;
	}
	while (r->len < need) {
		if (atomic_load(&c->down))
			return false;
		/* Spin like the bus does before sleeping in poll: a wake-up
		 * costs tens of microseconds on a VM. */
		struct mb_spin spin = { 0, 0 };
		long got;
		while ((got = mb_sock_read_nowait(c->fd, r->buf + r->len, r->cap - r->len)) ==
		               -EAGAIN &&
		       mb_spinning(&spin, c->lb->spin_ns))
			;
		if (got > 0) {
			r->len += (size_t)got;
			r->last_rx_ns = mb_now_ns();
			continue;
		}
		if (got == 0 || (got < 0 && got != -EAGAIN))
			return false;
		int ready = mb_sock_wait_readable(c->fd, HEARTBEAT_MS);
		if (ready < 0)
			return false;
		if (!ready) {
			if (mb_now_ns() - r->last_rx_ns > DEAD_AFTER_MS * 1000000ull) {
				link_log(c, "closing", "no heartbeat from the peer");
				return false;
			}
			continue;
		}
		long n = mb_sock_read(c->fd, r->buf + r->len, r->cap - r->len);
		if (n <= 0)
			return false;
		r->len += (size_t)n;
		r->last_rx_ns = mb_now_ns();
	}
	return true;
}

/* Next frame, validated; false closes the connection (reason logged). */
static bool next_frame(struct mb_conn *c, struct reader *r, uint32_t max_frame,
                       struct mb_frame *f)
{
	uint8_t type;
	uint32_t body;
	const char *why = NULL;
	if (!fill(c, r, MB_WIRE_HDR))
		return false;
	if (mb_wire_header(r->buf + r->off, max_frame, &type, &body, &why) ||
	    !fill(c, r, MB_WIRE_HDR + (size_t)body) ||
	    (why == NULL &&
	     mb_wire_decode(type, r->buf + r->off + MB_WIRE_HDR, body, f, &why))) {
		if (why) {
			link_log(c, "closing on a bad frame", why);
			atomic_fetch_add(&c->ls->bad_frames, 1);
		}
		return false;
	}
	r->off += MB_WIRE_HDR + body;
	return true;
}

static bool handshake(struct mb_conn *c, struct reader *r, uint32_t max_frame)
{
	struct mb_frame f = { .type = MB_F_HELLO, .min_version = MB_WIRE_VERSION,
	                      .max_version = MB_WIRE_VERSION, .max_frame = max_frame,
	                      .node_id = c->ls->node_id };
	if (send_frame(c, &f, true))
		return false;
	if (!next_frame(c, r, max_frame, &f))
		return false;
	if (f.type != MB_F_HELLO) {
		link_log(c, "closing", "the first frame is not HELLO");
		atomic_fetch_add(&c->ls->bad_frames, 1);
		return false;
	}
	if (f.min_version > MB_WIRE_VERSION || f.max_version < MB_WIRE_VERSION) {
		link_log(c, "closing", "no common protocol version");
		return false;
	}
	if (f.node_id == c->ls->node_id) {
		link_log(c, "closing", "connected to itself");
		return false;
	}
	c->peer_max_frame = f.max_frame < MB_WIRE_MAX_FRAME ? f.max_frame : MB_WIRE_MAX_FRAME;
	return true;
}

static void conn_free(struct mb_conn *c)
{
	for (uint32_t i = 0; i < c->nrsvcs; i++) {
		msgbus_unserve(c->rsvcs[i]->svc);
		free(c->rsvcs[i]);
	}
	free(c->rsvcs);
	/* Requests forwarded to a peer that is gone: their requesters learn
	 * it now, not at their deadline. */
	for (uint32_t i = 0; i < PENDING; i++)
		if (c->pending[i])
			mb_respond_error(c->pending[i], MSGBUS_EPEERDIED);
	while (c->calls) {
		struct peer_call *pc = c->calls;
		c->calls = pc->next;
		msgbus_call_cancel(pc->call);
		free(pc);
	}
	names_clear(&c->rsubs);
	if (c->lb)
		msgbus_close(c->lb);
	pthread_mutex_destroy(&c->lock);
	pthread_mutex_destroy(&c->wlock);
	free(c->txbuf);
	free(c);
}

bool mb_conn_run(struct mb_links *ls, int fd, const char *peer, bool again,
                 struct mb_watch *watch)
{
	struct mb_conn *c = calloc(1, sizeof(*c));
	struct reader r = { 0 };
	if (!c) {
		mb_sock_shutdown(fd);
		mb_close_fd(fd);
		return false;
	}
	c->ls = ls;
	c->fd = fd;
	c->peer_max_frame = MB_WIRE_MIN_FRAME;
	snprintf(c->peer, sizeof(c->peer), "%s", peer);
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->wlock, NULL);
	c->txbuf = malloc(TXBUF);
	r.last_rx_ns = mb_now_ns();
	bool threads = false;
	int orc = c->txbuf ? msgbus_open(&c->lb, ls->url, NULL) : MSGBUS_ENOMEM;
	if (orc)
		link_log(c, "closing: cannot open a handle on the bus", msgbus_strerror(orc));
	if (orc == 0) {
		atomic_fetch_or(&mb_part_at(c->lb, c->lb->self)->flags, MB_PARTF_BRIDGE);
		/* Three link threads per connection would steal the cores from
		 * the processes they serve if they spun: they sleep at once. */
		c->lb->spin_ns = 0;
		uint32_t max_frame = c->lb->cfg.max_msg_size + 1024u;
		mb_conn_register(ls, c, fd);
		bool shook = handshake(c, &r, max_frame);
		if (shook && watch && watch->sub)
			mb_watch_settle(ls, watch);
		if (shook &&
		    pthread_create(&c->tx, NULL, tx_main, c) == 0) {
			if (pthread_create(&c->rr, NULL, rr_main, c) == 0) {
				threads = true;
				atomic_fetch_add(&ls->up, 1);
				if (again)
					atomic_fetch_add(&ls->reconnects, 1);
				struct mb_frame f;
				while (!atomic_load(&c->down) && next_frame(c, &r, max_frame, &f) &&
				       on_frame(c, &f))
					;
				/* Start watching before the link counts as down:
				 * nothing published after the drop escapes. */
				pthread_mutex_lock(&c->lock);
				if (watch && watch->bus && c->rsubs.n &&
				    (watch->skip = calloc(c->lb->cfg.max_subjects, sizeof(uint64_t))) &&
				    msgbus_subscribe(watch->bus, ">", MSGBUS_SUB_LOSSY, &watch->sub)) {
					watch->sub = NULL;
				}
				if (watch && !watch->sub) {
					free(watch->skip);
					watch->skip = NULL;
				}
				pthread_mutex_unlock(&c->lock);
				atomic_fetch_sub(&ls->up, 1);
			}
			atomic_store(&c->down, true);
			mb_sock_shutdown(fd);
			/* Wake the threads now rather than at their timeouts. */
			mb_ec_kick(&mb_part_at(c->lb, c->lb->self)->reply_ec);
			mb_ec_kick(&c->lb->hdr->any_ec);
			if (threads)
				pthread_join(c->rr, NULL);
			pthread_join(c->tx, NULL);
		}
		if (c->proxy) {
			/* What the peer wanted and we had not sent is lost with
			 * the link: count it. The watch skips what we drain. */
			msgbus_msg *m;
			while (msgbus_recv(c->proxy, &m, 0) == 0) {
				if (!is_bridge(c->lb, m->origin) && peer_wants(c, m->subject))
					atomic_fetch_add(&ls->undelivered, 1);
				if (watch && watch->skip)
					watch->skip[m->sub->tl[m->ti].t] = m->pos + 1;
				msgbus_msg_release(m);
			}
			msgbus_unsubscribe(c->proxy);
			c->proxy = NULL;
		}
		if (watch && watch->sub) {
			pthread_mutex_lock(&c->lock);
			watch->wanted = c->rsubs.v;
			watch->nwanted = c->rsubs.n;
			watch->dropped_seen = 0;
			c->rsubs.v = NULL;
			c->rsubs.n = 0;
			pthread_mutex_unlock(&c->lock);
		}
		mb_conn_unregister(ls, c);
	}
	atomic_store(&c->down, true);
	mb_sock_shutdown(fd);
	mb_close_fd(fd);
	free(r.buf);
	conn_free(c);
	return threads;
}

void mb_conns_count(struct mb_links *ls, uint32_t *subs, uint32_t *svcs)
{
	*subs = *svcs = 0;
	pthread_mutex_lock(&ls->lock);
	for (struct mb_conn_ref *cr = ls->conns; cr; cr = cr->next) {
		pthread_mutex_lock(&cr->conn->lock);
		*subs += cr->conn->rsubs.n;
		*svcs += cr->conn->nrsvcs;
		pthread_mutex_unlock(&cr->conn->lock);
	}
	pthread_mutex_unlock(&ls->lock);
}

void mb_conn_register(struct mb_links *ls, struct mb_conn *c, int fd)
{
	struct mb_conn_ref *cr = malloc(sizeof(*cr));
	pthread_mutex_lock(&ls->lock);
	if (cr) {
		cr->conn = c;
		cr->fd = fd;
		cr->next = ls->conns;
		ls->conns = cr;
	}
	if (atomic_load(&ls->closing) || !cr)
		atomic_store(&c->down, true); /* closing raced with connecting */
	pthread_mutex_unlock(&ls->lock);
}

void mb_conn_unregister(struct mb_links *ls, struct mb_conn *c)
{
	pthread_mutex_lock(&ls->lock);
	for (struct mb_conn_ref **pp = &ls->conns; *pp; pp = &(*pp)->next) {
		if ((*pp)->conn == c) {
			struct mb_conn_ref *cr = *pp;
			*pp = cr->next;
			free(cr);
			break;
		}
	}
	pthread_mutex_unlock(&ls->lock);
}

void mb_conn_shutdown_all(struct mb_links *ls)
{
	pthread_mutex_lock(&ls->lock);
	for (struct mb_conn_ref *cr = ls->conns; cr; cr = cr->next) {
		atomic_store(&cr->conn->down, true);
		mb_sock_shutdown(cr->fd);
	}
	pthread_mutex_unlock(&ls->lock);
}
