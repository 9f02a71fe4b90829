/*
 * link.c - one TCP connection between two buses (msgbus-wire(7)).
 *
 * A link is a bridge participant: it opens its own handle on the local bus,
 * marked as a bridge, so what it republishes is recognisable and never
 * forwarded to another link (one hop: cycles cannot loop). Three threads:
 *  rx  reads frames: interest, messages to republish, requests to call
 *      locally, replies to requests it forwarded;
 *  tx  follows the local bus with a lossless subscription (the proxy) and
 *      sends what the peer is interested in, in batches; advertises local
 *      interest;
 *  rr  waits for local replies to the peer's requests and sends them back.
 * A publisher on the handle that made the link also sends inline: right
 * after its publish it takes what the proxy holds and writes it without
 * blocking (mb_conn_tx_inline), so a lone message does not wait for the tx
 * thread to wake up. Whatever it cannot write at once stays queued for the
 * tx thread, which never sleeps with anything queued or unread.
 * Likewise a thread spinning in msgbus_recv on that handle reads the link
 * inline while the rx thread lets it (mb_conn_rx_inline): in a ping-pong
 * whose parties spin, nobody has to be woken at all.
 * Backpressure is end to end: a slow peer stops reading, our writes block,
 * our lossless subscription stops releasing, local publishers wait.
 */
#include "link.h"
#include "buffers.h"
#include "ring.h"
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
#define RXBUF (256u << 10) /* one read takes up to this much */
#define PENDING 4096u /* requests forwarded to the peer, awaiting replies */
/* Inline sending: write at once when the queue was empty and nothing was
 * written for TX_LONE_NS (a lone message: ping-pong, request/reply); in a
 * stream, write once TX_WRITE_AT is queued and leave the rest to the tx
 * thread, so a fast publisher makes large writes, not one per message. */
#define TX_LONE_NS 5000u
#define TX_WRITE_AT (64u << 10)
#define TX_PASS_MAX 4096u /* messages per pass of the tx thread */
/* A pass that takes this many is a stream to keep up with at once. */
#define TX_STREAM 64u
/* While publishers send inline, the tx thread looks at the bus this often
 * instead of waking at every commit (see tx_main). */
#define TX_NAP_NS 200000u
/* After a pass that carried a stream and a pass that found it ended, the
 * tx thread waits this long, unannounced, before it sleeps on the bus. */
#define TX_LINGER_NS 50000u
/* While threads spinning in recv read the link, the rx thread looks at it
 * this often; they count as gone when they last looked longer ago. */
#define RX_NAP_NS 200000u
#define RX_SPIN_GONE_NS (2ull * RX_NAP_NS)
#define RX_INLINE_READS 4 /* reads per inline pass, at most */

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

struct reader {
	uint8_t *buf;
	size_t cap, len, off;
	uint64_t last_rx_ns;
	uint64_t received; /* MSG frames published, not yet counted */
	/* The subject of the last MSG published, and its topic: a MSG
	 * with the same name bytes skips decoding and the topic lookup. */
	char mname[MB_SUBJECT_MAX + 1];
	uint16_t mlen; /* 0: none */
	uint32_t mtopic;
};

struct mb_conn {
	struct mb_links *ls;
	msgbus_bus *lb; /* the link's own, bridge-marked handle */
	int fd;
	char peer[96];
	_Atomic bool down;
	pthread_t tx, rr;

	/* The sending side, one thread at a time: the tx thread, a publisher
	 * sending inline (trylock only: it never waits), or a thread sending
	 * a control frame. It owns the proxy's takes, txbuf and the writes. */
	pthread_mutex_t wlock;
	/* Follows the bus once the peer wants anything: created by rx, set
	 * to NULL under wlock at the drop, used under wlock. */
	_Atomic(msgbus_sub *) proxy;
	msgbus_msg *held; /* taken from the proxy, waits for room in txbuf */
	uint8_t *txbuf;
	size_t txlen, txoff; /* queued, of which written (a non-blocking write
	                      * may stop within a frame) */
	uint32_t uncounted; /* MSG frames queued, not yet counted as sent */
	uint64_t last_write_ns;
	uint32_t *want_gen; /* per topic: rgen when want[] was decided, 0 none */
	bool *want;
	uint64_t *taken; /* per topic: the positions below were taken */
	_Atomic uint64_t last_tx_ns; /* read by tx without wlock for heartbeats */
	uint32_t peer_max_frame;
	/* Read by every publisher of the linking handle, written rarely:
	 * a line of its own. tx_ec is the tx thread's own eventcount, for
	 * its naps: an inline sender that leaves work behind signals it.
	 * tx_active: the tx thread is not asleep, and takes what comes. */
	_Alignas(128) _Atomic uint32_t tx_ec;
	_Atomic bool tx_active;
	_Alignas(128) _Atomic uint64_t inline_passes; /* inline passes that took any */

	/* The receiving side, one thread at a time: the rx thread, or (only
	 * while rx_shared) a thread spinning in msgbus_recv on the linking
	 * handle, trylock only, which publishes MSG frames and leaves any
	 * other frame to the rx thread. */
	_Alignas(128) pthread_mutex_t rlock;
	struct reader rd;
	uint32_t max_frame; /* ours */
	bool rx_shared; /* the rx thread naps: spinners may read */
	bool rx_end;    /* a spinner read the end of the stream, or an error */
	/* The rx thread's eventcount for its naps, and when a spinner last
	 * looked at the link (0: it went to sleep). */
	_Alignas(128) _Atomic uint32_t rx_ec;
	_Atomic uint64_t rx_spin_ns;

	pthread_mutex_t lock; /* remote interest, proxy creation, pending, calls */
	struct names rsubs;
	_Atomic uint32_t rgen; /* changes with rsubs (never 0) */
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

/* MSG frames are counted as sent before their bytes can reach the peer, so
 * the count never lags what the peer has; taken back if the write fails. */
static void count_sent(struct mb_conn *c)
{
	if (c->uncounted) {
		atomic_fetch_add(&c->ls->sent, c->uncounted);
		c->uncounted = 0;
	}
}

/* MSG frames in txbuf not wholly written. txbuf starts at a frame. */
static uint32_t unwritten_msgs(const struct mb_conn *c)
{
	uint32_t n = 0;
	for (size_t off = 0; c->txlen - off >= MB_WIRE_HDR;) {
		uint8_t type;
		uint32_t body;
		const char *why;
		if (mb_wire_header(c->txbuf + off, MB_WIRE_MAX_FRAME, &type, &body, &why))
			break; /* cannot happen: we encoded it */
		off += MB_WIRE_HDR + (size_t)body;
		n += type == MB_F_MSG && off > c->txoff;
	}
	return n;
}

/* The connection failed, or dropped, with txbuf not written: what it held
 * is undelivered. */
static void tx_abandon_locked(struct mb_conn *c)
{
	count_sent(c);
	uint32_t n = unwritten_msgs(c);
	if (n) {
		atomic_fetch_sub(&c->ls->sent, n);
		atomic_fetch_add(&c->ls->undelivered, n);
	}
	c->txlen = c->txoff = 0;
}

static void wrote(struct mb_conn *c)
{
	uint64_t now = mb_now_ns();
	c->last_write_ns = now;
	atomic_store_explicit(&c->last_tx_ns, now, memory_order_relaxed);
}

/* Write all that is queued, blocking. */
static int flush_locked(struct mb_conn *c)
{
	if (c->txoff == c->txlen) {
		c->txlen = c->txoff = 0;
		return 0;
	}
	count_sent(c);
	int rc = mb_sock_write2(c->fd, c->txbuf + c->txoff, c->txlen - c->txoff, NULL, 0);
	if (rc) {
		tx_abandon_locked(c);
		atomic_store(&c->down, true);
		return rc;
	}
	c->txlen = c->txoff = 0;
	wrote(c);
	return 0;
}

/* Write what the socket takes now; the tx thread writes the rest. */
static void flush_nowait_locked(struct mb_conn *c)
{
	count_sent(c);
	long n = mb_sock_write_nowait(c->fd, c->txbuf + c->txoff, c->txlen - c->txoff);
	if (n == -EAGAIN)
		return;
	if (n < 0) {
		tx_abandon_locked(c);
		atomic_store(&c->down, true);
		return;
	}
	c->txoff += (size_t)n;
	if (c->txoff == c->txlen)
		c->txlen = c->txoff = 0;
	wrote(c);
}

/* Queue a control frame (or a request or reply); large payloads go
 * straight out after what is queued. now: flush before returning. */
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
	if (atomic_load(&c->down)) {
		rc = MSGBUS_ECLOSED;
	} else if (c->txlen + hl + f->payload_len <= TXBUF) {
		memcpy(c->txbuf + c->txlen, head, hl);
		if (f->payload_len)
			memcpy(c->txbuf + c->txlen + hl, f->payload, f->payload_len);
		c->txlen += hl + f->payload_len;
		if (now || c->txlen > TXBUF / 2)
			rc = flush_locked(c);
	} else {
		rc = flush_locked(c);
		if (!rc)
			rc = mb_sock_write2(c->fd, head, hl, f->payload, f->payload_len);
		if (rc)
			atomic_store(&c->down, true);
		else
			wrote(c);
	}
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

/* peer_wants, remembered per topic until the peer's interest changes. */
static bool wants_topic(struct mb_conn *c, uint32_t t, const char *subject)
{
	uint32_t g = atomic_load_explicit(&c->rgen, memory_order_acquire);
	if (c->want_gen[t] != g) {
		c->want[t] = peer_wants(c, subject);
		c->want_gen[t] = g;
	}
	return c->want[t];
}

/* ---- tx: local bus to peer ------------------------------------------------- */

/*
 * Queue m, taken from the proxy, if the peer wants it; release it. nowait
 * (inline, in a publisher's thread): never block, and false when txbuf has
 * no room, m then kept in c->held for later. Caller holds wlock.
 */
static bool queue_msg_locked(struct mb_conn *c, msgbus_sub *proxy, msgbus_msg *m, bool nowait)
{
	uint32_t t = proxy->tl[m->ti].t;
	if (!is_bridge(c->lb, m->origin) && wants_topic(c, t, m->subject)) {
		size_t nl = strlen(m->subject), hl = MB_WIRE_HDR + 2 + nl;
		bool lost = 2 + nl + m->len > c->peer_max_frame; /* too large for the peer */
		bool fits = c->txlen + hl + m->len <= TXBUF;
		if (!lost && !fits) {
			if (nowait) {
				c->held = m;
				return false;
			}
			lost = flush_locked(c) != 0; /* lost with the link */
			fits = hl + m->len <= TXBUF / 2; /* larger: straight from the bus */
		}
		if (lost) {
			atomic_fetch_add(&c->ls->undelivered, 1);
		} else if (fits) {
			mb_wire_encode_msg(c->txbuf + c->txlen, m->subject, nl, (uint32_t)m->len);
			if (m->len)
				memcpy(c->txbuf + c->txlen + hl, m->data, m->len);
			c->txlen += hl + m->len;
			c->uncounted++;
		} else {
			/* txbuf is empty: nothing to keep in order before it */
			uint8_t head[MB_WIRE_HDR + 2 + MB_SUBJECT_MAX];
			mb_wire_encode_msg(head, m->subject, nl, (uint32_t)m->len);
			atomic_fetch_add(&c->ls->sent, 1);
			if (mb_sock_write2(c->fd, head, hl, m->data, m->len)) {
				atomic_fetch_sub(&c->ls->sent, 1);
				atomic_fetch_add(&c->ls->undelivered, 1);
				atomic_store(&c->down, true);
			} else {
				wrote(c);
			}
		}
	}
	c->taken[t] = m->pos + 1;
	msgbus_msg_release(m);
	return true;
}

/* Take what the proxy holds (at most max) and queue what the peer wants;
 * the number taken. *owner as mb_sub_poll. Caller holds wlock. */
static uint32_t drain_locked(struct mb_conn *c, msgbus_sub *proxy, bool nowait, uint32_t max,
                             int64_t *owner)
{
	uint32_t n = 0;
	*owner = -1;
	while (n < max) {
		msgbus_msg *m = c->held;
		c->held = NULL;
		if (!m && mb_sub_poll(proxy, &m, owner) != 0)
			break;
		if (!queue_msg_locked(c, proxy, m, nowait))
			break;
		n++;
	}
	return n;
}

/* What a pass of the tx thread did. */
struct tx_res {
	uint32_t took;
	bool busy;   /* it sent, wrote what others queued, or met a stream */
	bool stream; /* it wrote several, or took many */
};

/* One pass of the tx thread: take, queue, write all (blocking). Before it
 * sleeps (flush_releases): make the proxy's releases visible to waiting
 * publishers. */
static struct tx_res tx_pass(struct mb_conn *c, msgbus_sub *proxy, bool before_sleep,
                             int64_t *owner)
{
	struct tx_res r;
	pthread_mutex_lock(&c->wlock);
	bool queued = c->held || c->txlen > c->txoff;
	uint32_t before = c->uncounted;
	r.took = drain_locked(c, proxy, false, TX_PASS_MAX, owner);
	r.busy = queued || c->uncounted != before || r.took >= TX_STREAM;
	/* several to send, whoever queued them (an inline publisher too) */
	r.stream = c->uncounted >= 2 || r.took >= TX_STREAM;
	flush_locked(c);
	if (before_sleep)
		mb_sub_flush(proxy);
	pthread_mutex_unlock(&c->wlock);
	return r;
}

/*
 * Right after a publish on the linking handle, in the publisher's thread:
 * take what the proxy holds and write it if the socket takes it now. Never
 * waits. Work it leaves (the link busy, the socket full) goes to the tx
 * thread: a commit wakes it while it sleeps on the bus, the signal of
 * tx_ec while it naps.
 */
void mb_conn_tx_inline(struct mb_conn *c)
{
	if (atomic_load_explicit(&c->down, memory_order_relaxed) ||
	    !atomic_load_explicit(&c->proxy, memory_order_relaxed))
		return;
	/* In a stream the tx thread is at work: sending here as well would
	 * put its work on this thread's core too, and halve the stream. */
	if (atomic_load_explicit(&c->tx_active, memory_order_relaxed) ||
	    pthread_mutex_trylock(&c->wlock)) {
		mb_ec_signal(&c->tx_ec);
		return;
	}
	msgbus_sub *proxy = atomic_load(&c->proxy);
	bool left = false;
	if (proxy && !atomic_load(&c->down)) {
		bool was_empty = c->txlen == c->txoff;
		int64_t owner;
		if (drain_locked(c, proxy, true, UINT32_MAX, &owner))
			atomic_fetch_add_explicit(&c->inline_passes, 1, memory_order_relaxed);
		size_t queued = c->txlen - c->txoff;
		if (queued >= TX_WRITE_AT ||
		    (queued && was_empty && mb_now_ns() - c->last_write_ns >= TX_LONE_NS))
			flush_nowait_locked(c);
		left = c->held || c->txlen > c->txoff;
	}
	pthread_mutex_unlock(&c->wlock);
	if (left)
		mb_ec_signal(&c->tx_ec);
}

/*
 * The tx thread. It waits in one of two ways:
 *  on the bus (any_ec): every commit wakes it. The default, and the only
 *      way when the link is quiet: an idle link costs no CPU.
 *  napping (tx_ec, at most TX_NAP_NS): when a wake-up found nothing to
 *      send because publishers of the linking handle had sent it inline.
 *      On two cores, a thread woken for nothing at every message of a
 *      ping-pong takes the CPU from the threads that carry it, and costs
 *      more than the message. Inline senders signal tx_ec for what they
 *      leave; other participants' messages wait for the end of the nap.
 *      A pass that finds work of its own, or a nap with no traffic at all,
 *      returns to waiting on the bus.
 * Either way, it announces its sleep before the last pass, so whatever is
 * committed or left after that pass wakes it: it never sleeps with
 * anything queued, held, or (on the bus) unread.
 * When a stream ends (or pauses), it first lingers, TX_LINGER_NS without
 * announcing itself: publishers neither wake it nor send inline (it counts
 * as active), so the next pass takes a batch, and a stream costs no
 * wake-up per message, nor a write per message.
 */
static void *tx_main(void *arg)
{
	struct mb_conn *c = arg;
	struct names adv_subs = { 0 }, adv_svcs = { 0 };
	uint32_t seen = atomic_load(&c->lb->hdr->interest_gen) - 1;
	uint64_t next_check = 0, inline_seen = 0;
	int64_t owner = -1; /* a writer holding a head back, from the last pass */
	bool napping = false, woken = false, streaming = false, lingered = false;
	while (!atomic_load(&c->down)) {
		uint32_t gen = atomic_load(&c->lb->hdr->interest_gen);
		if (gen != seen) {
			seen = gen;
			advertise(c, &adv_subs, &adv_svcs);
		}
		msgbus_sub *proxy = atomic_load(&c->proxy);
		struct tx_res r = { 0, false, false };
		if (proxy && !napping)
			r = tx_pass(c, proxy, false, &owner);
		uint64_t now = mb_now_ns();
		if (now - atomic_load_explicit(&c->last_tx_ns, memory_order_relaxed) >
		    HEARTBEAT_MS * 1000000ull) {
			struct mb_frame f = { .type = MB_F_PING, .token = now };
			send_frame(c, &f, true);
		}
		if (!proxy) {
			mb_nap_us(50000);
			continue;
		}
		if (r.busy) {
			napping = woken = lingered = false;
			streaming = streaming || r.stream;
			continue;
		}
		if (streaming && !lingered) {
			lingered = true;
			mb_ec_sleep(&c->tx_ec, atomic_load(&c->tx_ec), now, now + TX_LINGER_NS);
			continue;
		}
		streaming = lingered = false; /* a linger found nothing: it ended */
		if (woken && !napping) {
			napping = true; /* woken for nothing: inline senders cover it */
			/* at least one nap: quiet is judged over a nap */
			inline_seen = atomic_load_explicit(&c->inline_passes, memory_order_relaxed) - 1;
		} else if (r.took) {
			continue; /* took a few we do not send: look again */
		}
		uint64_t until = now + (napping ? TX_NAP_NS : 100000000ull);
		if (!mb_wait_on_owner(c->lb, owner, now, &next_check, &until))
			continue; /* the writer died: its slot is aborted now */
		_Atomic uint32_t *ec = napping ? &c->tx_ec : mb_sub_wait_word(proxy);
		uint32_t v = mb_ec_prepare(ec);
		r = tx_pass(c, proxy, true, &owner);
		if (napping) {
			uint64_t inl = atomic_load_explicit(&c->inline_passes, memory_order_relaxed);
			if (r.busy || (!r.took && inl == inline_seen)) {
				napping = woken = false; /* work of our own, or quiet */
				continue;
			}
			inline_seen = inl;
		} else if (r.took || r.busy) {
			continue;
		}
		if (atomic_load(&c->down))
			break;
		atomic_store_explicit(&c->tx_active, false, memory_order_relaxed);
		mb_ec_sleep(ec, v, now, until);
		atomic_store_explicit(&c->tx_active, true, memory_order_relaxed);
		woken = !napping && atomic_load(ec) != v; /* not a timeout */
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

/* Publish a MSG from the peer on our bus; its name was validated, or is
 * the one in r->mname (f->name_len 0). Waiting here is the backpressure:
 * we stop reading. In slices, so closing the bus is not held up by a full
 * ring; first without a deadline, which costs no clock read. nowait (a
 * spinner reading inline): MSGBUS_EAGAIN rather than wait. */
static int publish_msg(struct mb_conn *c, struct reader *r, const struct mb_frame *f,
                       bool nowait)
{
	msgbus_bus *b = c->lb;
	uint32_t t = r->mtopic;
	int rc;
	if (f->name_len) {
		/* As msgbus_publish checks; the topic is remembered. */
		rc = mb_publish_checks(b, f->name, f->payload_len, &t);
		if (rc)
			return rc;
		memcpy(r->mname, f->name, f->name_len);
		r->mlen = f->name_len;
		r->mtopic = t;
	} else if (f->payload_len > b->cfg.max_msg_size) {
		return MSGBUS_EMSGSIZE;
	}
	rc = mb_publish_parts(b, t, NULL, 0, f->payload, f->payload_len, MB_NO_WAIT);
	while (!nowait &&
	       (rc == MSGBUS_EAGAIN || (rc == MSGBUS_ETIMEDOUT && !atomic_load(&c->down))))
		rc = mb_publish_parts(b, t, NULL, 0, f->payload, f->payload_len,
		                      mb_publish_deadline(100));
	return rc;
}

/* Handle one decoded frame other than MSG (rx_frames publishes those);
 * false closes the connection. */
static bool on_frame(struct mb_conn *c, const struct mb_frame *f)
{
	switch (f->type) {
	case MB_F_SUB:
	case MB_F_UNSUB:
		pthread_mutex_lock(&c->lock);
		/* Follow the bus before the interest shows (in the statistics,
		 * to the peer's messages): whatever is published from then on
		 * is seen. */
		if (f->type == MB_F_SUB && !atomic_load(&c->proxy)) {
			msgbus_sub *p;
			if (msgbus_subscribe(c->lb, ">", 0, &p))
				link_log(c, "cannot follow the bus", "no free subscription slot");
			else
				atomic_store(&c->proxy, p);
		}
		if (f->type == MB_F_SUB && !names_has(&c->rsubs, f->name))
			names_add(&c->rsubs, f->name);
		else if (f->type == MB_F_UNSUB)
			names_del(&c->rsubs, f->name);
		uint32_t g = atomic_load_explicit(&c->rgen, memory_order_relaxed) + 1;
		atomic_store_explicit(&c->rgen, g ? g : 1, memory_order_release);
		pthread_mutex_unlock(&c->lock);
		return true;
	case MB_F_SERVE:
	case MB_F_UNSERVE:
		on_serve(c, f->name, f->type == MB_F_SERVE);
		return true;
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
	default: /* a second HELLO (a MSG does not come here) */
		link_log(c, "closing", "unexpected HELLO");
		return false;
	}
}


/* Read until buf holds `need` bytes from off, as many as one read gives;
 * false on EOF, error or a silent peer. */
static bool fill(struct mb_conn *c, struct reader *r, size_t need)
{
	if (r->len - r->off >= need)
		return true;
	if (r->received) { /* before we may block */
		atomic_fetch_add(&c->ls->received, r->received);
		r->received = 0;
	}
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
		/* Blocks for at most HEARTBEAT_MS (mb_sock_set_read_timeout):
		 * one system call per wake-up. */
		long n = mb_sock_read(c->fd, r->buf + r->len, r->cap - r->len);
		if (n > 0) {
			r->len += (size_t)n;
			r->last_rx_ns = mb_now_ns();
			continue;
		}
		if (n != -EAGAIN)
			return false; /* end of stream, or an error */
		if (mb_now_ns() - r->last_rx_ns > DEAD_AFTER_MS * 1000000ull) {
			link_log(c, "closing", "no heartbeat from the peer");
			return false;
		}
	}
	return true;
}

/* The first frame, for the handshake, validated; false closes the
 * connection (reason logged). */
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

/* ---- rx after the handshake: the rx thread and inline readers ----------- */

enum rx_stop {
	RX_MORE,  /* the next frame needs more bytes: *need from rd.off */
	RX_LEAVE, /* (inline) a frame only the rx thread handles, or a full bus */
	RX_CLOSE  /* a bad frame (logged and counted), or on_frame said so */
};

/* Handle the complete frames in rd. inl (a spinner, nothing may wait):
 * MSG frames only, published without waiting. Caller holds rlock. */
static enum rx_stop rx_frames(struct mb_conn *c, bool inl, size_t *need, uint64_t *received)
{
	struct reader *r = &c->rd;
	for (;;) {
		uint8_t type;
		uint32_t body;
		const char *why = NULL;
		struct mb_frame f;
		*need = MB_WIRE_HDR;
		if (atomic_load_explicit(&c->down, memory_order_relaxed))
			return inl ? RX_LEAVE : RX_CLOSE; /* no frame after that */
		if (r->len - r->off < MB_WIRE_HDR)
			return RX_MORE;
		if (mb_wire_header(r->buf + r->off, c->max_frame, &type, &body, &why))
			goto bad;
		*need = MB_WIRE_HDR + (size_t)body;
		if (r->len - r->off < *need)
			return RX_MORE;
		const uint8_t *p = r->buf + r->off + MB_WIRE_HDR;
		if (type == MB_F_MSG && r->mlen && mb_wire_msg_named(p, body, r->mname, r->mlen)) {
			/* The name we validated last: the rest is payload. */
			f.type = MB_F_MSG;
			f.name_len = 0;
			f.payload_len = body - 2u - r->mlen;
			f.payload = f.payload_len ? p + 2 + r->mlen : NULL;
		} else if (inl && type != MB_F_MSG) {
			return RX_LEAVE;
		} else if (mb_wire_decode(type, p, body, &f, &why)) {
			goto bad;
		}
		if (type == MB_F_MSG) {
			int rc = publish_msg(c, r, &f, inl);
			if (rc == MSGBUS_EAGAIN && inl)
				return RX_LEAVE;
			if (rc)
				atomic_fetch_add(&c->ls->undelivered, 1);
			else
				++*received;
			r->off += *need;
			continue;
		}
		r->off += *need; /* f points into rd until the next read */
		if (!on_frame(c, &f))
			return RX_CLOSE;
		continue;
	bad:
		if (inl)
			return RX_LEAVE; /* the rx thread reports it */
		link_log(c, "closing on a bad frame", why);
		atomic_fetch_add(&c->ls->bad_frames, 1);
		return RX_CLOSE;
	}
}

/* Read into rd what the socket has, making room for need bytes from off
 * (grow: only the rx thread). > 0 bytes, 0 at the end, -EAGAIN none (or,
 * blocking, none for HEARTBEAT_MS), -ENOMEM no room, -errno. */
static long rx_read(struct mb_conn *c, size_t need, bool nowait, bool grow)
{
	struct reader *r = &c->rd;
	if (r->off) {
		memmove(r->buf, r->buf + r->off, r->len - r->off);
		r->len -= r->off;
		r->off = 0;
	}
	if (need > r->cap) {
		uint8_t *nb = grow ? realloc(r->buf, need) : NULL;
		if (!nb)
			return -ENOMEM;
		r->buf = nb;
		r->cap = need;
	}
	long n = nowait ? mb_sock_read_nowait(c->fd, r->buf + r->len, r->cap - r->len)
	                : mb_sock_read(c->fd, r->buf + r->len, r->cap - r->len);
	if (n > 0) {
		r->len += (size_t)n;
		r->last_rx_ns = mb_now_ns();
	}
	return n;
}

/*
 * A thread spinning in msgbus_recv on the linking handle (mb_links_spin):
 * while the rx thread naps, read the link here and publish its messages,
 * so the spinner finds them without anyone being woken. Never waits; what
 * it cannot do (a frame other than MSG, a full bus, the end of the
 * stream) it leaves to the rx thread, which it signals.
 */
void mb_conn_rx_inline(struct mb_conn *c, uint64_t now)
{
	atomic_store_explicit(&c->rx_spin_ns, now, memory_order_relaxed);
	if (atomic_load_explicit(&c->down, memory_order_relaxed) ||
	    pthread_mutex_trylock(&c->rlock))
		return;
	uint64_t received = 0;
	bool leave = false;
	if (c->rx_shared && !c->rx_end) {
		for (int reads = 0;;) {
			size_t need;
			enum rx_stop st = rx_frames(c, true, &need, &received);
			if (st != RX_MORE) {
				leave = true;
				break;
			}
			if (reads++ == RX_INLINE_READS)
				break;
			long n = rx_read(c, need, true, false);
			if (n == -EAGAIN)
				break;
			if (n <= 0) {
				c->rx_end = n != -ENOMEM;
				leave = true;
				break;
			}
		}
	}
	pthread_mutex_unlock(&c->rlock);
	if (received)
		atomic_fetch_add(&c->ls->received, received);
	if (leave)
		mb_ec_signal(&c->rx_ec);
}

/* The spinner goes to sleep: the rx thread watches the link again. */
void mb_conn_rx_unspin(struct mb_conn *c)
{
	atomic_store(&c->rx_spin_ns, 0);
	mb_ec_signal(&c->rx_ec);
}

/* seq_cst: after the rx thread announces a nap, this and a spinner's
 * unspin (store, then signal) order as an eventcount's check and signal. */
static bool spinners_gone(struct mb_conn *c, uint64_t now)
{
	uint64_t t = atomic_load(&c->rx_spin_ns);
	return !t || now - t > RX_SPIN_GONE_NS;
}

/*
 * The rx thread after the handshake, until the connection ends. Caller
 * holds rlock. Two ways to watch the link:
 *  owner: it holds rlock and blocks in the socket's read, handling every
 *      frame. The default, and whenever no thread spins on the handle.
 *  napping: when a thread spinning in msgbus_recv looked at the link
 *      (and found it locked) lately. Then the spinners read it, and the rx
 *      thread, not woken by each message, looks every RX_NAP_NS, or when
 *      a spinner leaves it a frame or goes to sleep; it owns the link
 *      again once they are gone. As with the tx thread's naps, on two
 *      cores a thread woken at every message of a ping-pong for nothing
 *      costs more than the message.
 * Returns with rlock held.
 */
static void rx_loop(struct mb_conn *c)
{
	struct reader *r = &c->rd;
	while (!atomic_load(&c->down)) {
		size_t need;
		/* Every frame there is (a spinner may have left some). */
		if (rx_frames(c, false, &need, &r->received) == RX_CLOSE || c->rx_end)
			break;
		if (r->received) { /* before we may block */
			atomic_fetch_add(&c->ls->received, r->received);
			r->received = 0;
		}
		uint64_t now = mb_now_ns();
		bool nap = !spinners_gone(c, now);
		c->rx_shared = false;
		/* Owner: block in the read (HEARTBEAT_MS at most). Napping:
		 * take what is there first. */
		long n = rx_read(c, need, nap, true);
		if (n > 0)
			continue;
		if (n != -EAGAIN) {
			if (n == -ENOMEM)
				link_log(c, "closing", "out of memory for a frame");
			break; /* the end of the stream, or an error */
		}
		now = mb_now_ns();
		if (now - r->last_rx_ns > DEAD_AFTER_MS * 1000000ull) {
			link_log(c, "closing", "no heartbeat from the peer");
			break;
		}
		if (!nap)
			continue;
		/* Nap: announced before the last look, so a spinner that
		 * leaves us a frame, or goes to sleep, after it wakes us. */
		uint32_t v = mb_ec_prepare(&c->rx_ec);
		if (spinners_gone(c, now))
			continue;
		c->rx_shared = true;
		pthread_mutex_unlock(&c->rlock);
		mb_ec_sleep(&c->rx_ec, v, now, now + RX_NAP_NS);
		pthread_mutex_lock(&c->rlock);
	}
	c->rx_shared = false;
	atomic_fetch_add(&c->ls->received, r->received);
	r->received = 0;
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
	pthread_mutex_destroy(&c->rlock);
	free(c->rd.buf);
	free(c->txbuf);
	free(c->want_gen);
	free(c->want);
	free(c->taken);
	free(c);
}

bool mb_conn_run(struct mb_links *ls, int fd, const char *peer, bool again,
                 struct mb_watch *watch)
{
	/* aligned: some members sit on cache lines of their own */
	struct mb_conn *c = aligned_alloc(_Alignof(struct mb_conn), sizeof(*c));
	if (c)
		memset(c, 0, sizeof(*c));
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
	pthread_mutex_init(&c->rlock, NULL);
	atomic_init(&c->rgen, 1);
	atomic_init(&c->tx_active, true);
	c->txbuf = malloc(TXBUF);
	c->rd.buf = malloc(RXBUF);
	c->rd.cap = c->rd.buf ? RXBUF : 0;
	c->rd.last_rx_ns = mb_now_ns();
	bool threads = false;
	int orc = c->txbuf && c->rd.buf ? msgbus_open(&c->lb, ls->url, NULL) : MSGBUS_ENOMEM;
	if (orc == 0) {
		uint32_t nt = c->lb->cfg.max_subjects;
		c->want_gen = calloc(nt, sizeof(*c->want_gen));
		c->want = calloc(nt, sizeof(*c->want));
		c->taken = calloc(nt, sizeof(*c->taken));
		if (!c->want_gen || !c->want || !c->taken)
			orc = MSGBUS_ENOMEM;
	}
	if (orc)
		link_log(c, "closing: cannot open a handle on the bus", msgbus_strerror(orc));
	else
		mb_sock_set_read_timeout(fd, HEARTBEAT_MS);
	if (orc == 0) {
		atomic_fetch_or(&mb_part_at(c->lb, c->lb->self)->flags, MB_PARTF_BRIDGE);
		/* Three link threads per connection would steal the cores from
		 * the processes they serve if they spun: they sleep at once. */
		c->lb->spin_ns = 0;
		uint32_t max_frame = c->lb->cfg.max_msg_size + 1024u;
		c->max_frame = max_frame;
		/* The rx thread owns the link's reading side (rx_loop). */
		pthread_mutex_lock(&c->rlock);
		mb_conn_register(ls, c, fd);
		bool shook = handshake(c, &c->rd, max_frame);
		if (shook && watch && watch->sub)
			mb_watch_settle(ls, watch);
		if (shook &&
		    pthread_create(&c->tx, NULL, tx_main, c) == 0) {
			if (pthread_create(&c->rr, NULL, rr_main, c) == 0) {
				threads = true;
				atomic_fetch_add(&ls->up, 1);
				if (again)
					atomic_fetch_add(&ls->reconnects, 1);
				rx_loop(c);
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
			mb_ec_kick(&c->tx_ec);
			if (threads)
				pthread_join(c->rr, NULL);
			pthread_join(c->tx, NULL);
		}
		pthread_mutex_unlock(&c->rlock); /* no spinner reads any more */
		/* What the peer wanted and we had not sent is lost with the
		 * link: count it, whether queued, held or still on the bus.
		 * From here on no publisher sends inline. */
		pthread_mutex_lock(&c->wlock);
		msgbus_sub *proxy = atomic_exchange(&c->proxy, NULL);
		tx_abandon_locked(c);
		if (c->held && proxy) {
			atomic_fetch_add(&ls->undelivered, 1); /* only a wanted one is held */
			c->taken[proxy->tl[c->held->ti].t] = c->held->pos + 1;
			msgbus_msg_release(c->held);
		}
		c->held = NULL;
		pthread_mutex_unlock(&c->wlock);
		if (proxy) {
			/* The watch skips what the link took, sent or counted. */
			if (watch && watch->skip)
				for (uint32_t t = 0; t < c->lb->cfg.max_subjects; t++)
					if (c->taken[t] > watch->skip[t])
						watch->skip[t] = c->taken[t];
			msgbus_msg *m;
			while (msgbus_recv(proxy, &m, 0) == 0) {
				if (!is_bridge(c->lb, m->origin) && peer_wants(c, m->subject))
					atomic_fetch_add(&ls->undelivered, 1);
				if (watch && watch->skip)
					watch->skip[m->sub->tl[m->ti].t] = m->pos + 1;
				msgbus_msg_release(m);
			}
			msgbus_unsubscribe(proxy);
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
		mb_ec_kick(&cr->conn->rx_ec); /* a napping rx thread */
	}
	pthread_mutex_unlock(&ls->lock);
}
