/* link_recv.c - a link's receiving side: the handshake, then frames from
 * the peer (the rx thread and inline readers); see conn_state.h. */
#include "link/link_recv.h"
#include "link/link_log.h"
#include "link/link_rr.h"
#include "link/link_send.h"
#include "shm/control.h"
#include "shm/handle.h"
#include "shm/subject.h"
#include "pubsub/buffers.h"
#include "pubsub/publish.h"
#include "pubsub/recv.h"
#include "ring/ring.h"
#include "pubsub/route.h"
#include "pubsub/subscribe.h"
#include "platform/wait.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Publish a MSG from the peer on our bus; its name was validated, or is
 * the one in r->mname (f->name_len 0). Waiting here is the backpressure:
 * we stop reading. In slices, so closing the bus is not held up by a full
 * inbox; first without a deadline, which costs no clock read. nowait (a
 * spinner reading inline): MSGBUS_EAGAIN rather than wait. */
static int publish_msg(struct mb_conn *c, struct reader *r, const struct mb_frame *f,
                       bool nowait)
{
	msgbus_bus *b = c->lb;
	if (f->name_len) {
		if (f->name_len > MB_SUBJECT_MAX)
			return MSGBUS_EINVAL;
		memcpy(r->mname, f->name, f->name_len);
		r->mname[f->name_len] = '\0';
		r->mlen = f->name_len;
	}
	if (f->payload_len > b->cfg.max_msg_size)
		return MSGBUS_EMSGSIZE;
	int rc = mb_route_publish(b, r->mname, f->payload, f->payload_len, UINT32_MAX, 0,
	                          MB_NO_WAIT);
	while (!nowait &&
	       (rc == MSGBUS_EAGAIN || (rc == MSGBUS_ETIMEDOUT && !mb_conn_down(c))))
		rc = mb_route_publish(b, r->mname, f->payload, f->payload_len, UINT32_MAX, 0,
		                      mb_publish_deadline(100));
	return rc;
}

/* Are the n bytes at a and b the same? Inline: n is a frame header and a
 * short name, where a call to memcmp cost more than the compare. */
static inline bool same_bytes(const uint8_t *a, const uint8_t *b, size_t n)
{
	uint64_t x = 0, y, z;
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		memcpy(&y, a + i, 8);
		memcpy(&z, b + i, 8);
		x |= y ^ z;
	}
	for (; i < n; i++)
		x |= (uint64_t)(a[i] ^ b[i]);
	return x == 0;
}

/*
 * A MSG frame f (size bytes from r->off) and the MSG frames after it in rd
 * on the same subject: published as one run (mb_route_publish_many) when
 * each fits inline, without waiting. Returns the frames published, r->off
 * moved past them; 0: publish f alone (publish_msg), which waits.
 */
static uint32_t publish_run(struct mb_conn *c, struct reader *r, const struct mb_frame *f,
                            size_t size)
{
	msgbus_bus *b = c->lb;
	struct mb_inbox_part parts[RX_RUN];
	size_t ends[RX_RUN];
	uint32_t n = 0, done = 0;
	if (f->payload_len > b->ring_inline_max)
		return 0;
	if (f->name_len) {
		if (f->name_len > MB_SUBJECT_MAX)
			return 0;
		memcpy(r->mname, f->name, f->name_len);
		r->mname[f->name_len] = '\0';
		r->mlen = f->name_len;
	}
	parts[n].data = f->payload;
	parts[n].len = f->payload_len;
	size_t off = r->off + size;
	ends[n++] = off;
	/* A frame whose header and name bytes are f's (the header checked,
	 * the name r->mname, the payload length f's, each checked above)
	 * needs no further check: a stream of one size on one subject. */
	const uint8_t *first = r->buf + r->off;
	size_t same = MB_WIRE_HDR + 2u + r->mlen;
	while (n < RX_RUN && r->len - off >= size && same_bytes(r->buf + off, first, same)) {
		parts[n].data = r->buf + off + same;
		parts[n].len = f->payload_len;
		off += size;
		ends[n++] = off;
	}
	while (n < RX_RUN && r->len - off >= MB_WIRE_HDR) {
		uint8_t type;
		uint32_t body;
		const char *why;
		if (mb_wire_header(r->buf + off, c->max_frame, &type, &body, &why) ||
		    type != MB_F_MSG || r->len - off - MB_WIRE_HDR < body)
			break; /* the frame loop looks at it */
		const uint8_t *p = r->buf + off + MB_WIRE_HDR;
		if (!mb_wire_msg_named(p, body, r->mname, r->mlen))
			break;
		uint32_t len = body - 2u - r->mlen;
		if (len > b->ring_inline_max)
			break;
		parts[n].data = p + 2 + r->mlen;
		parts[n].len = len;
		off += MB_WIRE_HDR + (size_t)body;
		ends[n++] = off;
	}
	if (n < 2 || mb_route_publish_many(b, r->mname, parts, n, &done) || !done)
		return 0;
	r->off = ends[done - 1];
	return done;
}

/* More interest than max_patterns is a protocol error. */
static bool too_many(struct mb_conn *c)
{
	mb_link_log(c, "closing on a bad frame", "more SUB patterns and services than max_patterns");
	atomic_fetch_add_explicit(&c->rec->ctr.bad_frames, 1, memory_order_relaxed);
	return false;
}

/* A peer pattern we cannot get a subscription slot for: a protocol error
 * as for max_patterns (the bus's max_subs bounds what a peer may want). */
static bool no_slot(struct mb_conn *c)
{
	mb_link_log(c, "closing on a bad frame", "no free subscription slot for a SUB pattern");
	atomic_fetch_add_explicit(&c->rec->ctr.bad_frames, 1, memory_order_relaxed);
	return false;
}

/* Follow the bus for one more peer pattern: the proxy's own slot for the
 * first, an alias slot of it for each further one. Before the interest
 * shows (in the statistics, to the peer's messages), so whatever is
 * published from then on is seen. Caller holds c->lock. */
static bool follow(struct mb_conn *c, const char *pattern)
{
	/* Relaxed: only this thread stores it non-NULL. */
	msgbus_sub *p = atomic_load_explicit(&c->proxy, memory_order_relaxed);
	if (!p) {
		if (msgbus_subscribe(c->lb, pattern, 0, &p))
			return false;
		snprintf(c->proxy_pattern, sizeof(c->proxy_pattern), "%s", pattern);
		/* Relaxed: a hint (conn_state.h). */
		atomic_store_explicit(&c->door->proxy_slot, mb_sub_slot(p), memory_order_relaxed);
		/* Release: pairs with the acquires in link_send.c
		 * (mb_conn_tx_inline, mb_link_tx_main) and conn.c:conn_drop():
		 * the subscription is set up before they use it. */
		atomic_store_explicit(&c->proxy, p, memory_order_release);
		return true;
	}
	if (!strcmp(c->proxy_pattern, pattern))
		return true; /* its slot stayed after an UNSUB */
	if (!c->aliases && !(c->aliases = calloc(c->max_patterns, sizeof(*c->aliases))))
		return false;
	if (c->naliases >= c->max_patterns)
		return false;
	struct link_alias *a = &c->aliases[c->naliases];
	if (mb_sub_alias_add(p, pattern, &a->slot, &a->gen))
		return false;
	snprintf(a->pattern, sizeof(a->pattern), "%s", pattern);
	c->naliases++;
	return true;
}

/* The peer dropped a pattern: its alias slot goes. The proxy's slot stays
 * (the tx thread takes from it); link_send.c's filter drops what only it
 * still matches. Caller holds c->lock. */
static void unfollow(struct mb_conn *c, const char *pattern)
{
	for (uint32_t i = 0; i < c->naliases; i++) {
		if (strcmp(c->aliases[i].pattern, pattern))
			continue;
		mb_sub_alias_del(c->lb, c->aliases[i].slot, c->aliases[i].gen);
		c->aliases[i] = c->aliases[--c->naliases];
		return;
	}
}

/* SUB or UNSUB; false closes the connection. */
static bool on_interest(struct mb_conn *c, const struct mb_frame *f)
{
	pthread_mutex_lock(&c->lock);
	bool sub = f->type == MB_F_SUB;
	bool known = mb_names_has(&c->rsubs, f->name);
	if (sub && !known && c->rsubs.n + c->nrsvcs >= c->max_patterns) {
		pthread_mutex_unlock(&c->lock);
		return too_many(c);
	}
	if (sub && !known && !follow(c, f->name)) {
		pthread_mutex_unlock(&c->lock);
		return no_slot(c);
	}
	if (sub) {
		mb_names_add(&c->rsubs, f->name);
	} else if (known) {
		unfollow(c, f->name);
		mb_names_del(&c->rsubs, f->name);
	}
	uint32_t g = atomic_load_explicit(&c->rgen, memory_order_relaxed) + 1;
	/* Pairs with the acquire in link_send.c:wants_subject(): the names
	 * changed above are seen with the new generation. */
	atomic_store_explicit(&c->rgen, g ? g : 1, memory_order_release);
	pthread_mutex_unlock(&c->lock);
	return true;
}

/* Handle one decoded frame other than MSG (rx_frames publishes those);
 * false closes the connection. Nothing here writes to the socket: a
 * write could wait behind a writer the peer blocks, and this thread must
 * keep watching the peer. */
static bool on_frame(struct mb_conn *c, const struct mb_frame *f)
{
	switch (f->type) {
	case MB_F_SUB:
	case MB_F_UNSUB:
		return on_interest(c, f);
	case MB_F_SERVE:
	case MB_F_UNSERVE:
		return mb_link_on_serve(c, f->name, f->type == MB_F_SERVE) || too_many(c);
	case MB_F_REQ:
		mb_link_on_req(c, f);
		return true;
	case MB_F_REP:
		mb_link_on_rep(c, f);
		return true;
	case MB_F_PING:
		if (!c->peer_declared) { /* see conn_state.h */
			pthread_mutex_lock(&c->lock);
			c->peer_declared = true;
			pthread_mutex_unlock(&c->lock);
		}
		/* Pairs with the acquire exchange in link_send.c:send_pong(),
		 * which then reads the token. seq_cst, not just release: also
		 * the first half of the Dekker pair with the tx thread's
		 * mb_ec_prepare and load of pong_due (mb_link_tx_main), so the
		 * signal below cannot miss a tx thread going to sleep. */
		atomic_store_explicit(&c->pong_token, f->token, memory_order_relaxed);
		atomic_store_explicit(&c->pong_due, true, memory_order_seq_cst);
		mb_ec_signal(&c->tx_ec);
		return true;
	case MB_F_PONG:
		return true;
	default: /* a second HELLO (a MSG does not come here) */
		mb_link_log(c, "closing on a bad frame", "a second HELLO");
		atomic_fetch_add_explicit(&c->rec->ctr.bad_frames, 1, memory_order_relaxed);
		return false;
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

/* A peer that sent nothing for DEAD_AFTER_MS is gone (it would have
 * sent PINGs). Caller holds rlock. peer_silent also logs it. */
static bool peer_quiet(struct mb_conn *c, uint64_t now)
{
	return now - c->rd.last_rx_ns > DEAD_AFTER_MS * 1000000ull;
}

static bool peer_silent(struct mb_conn *c)
{
	if (!peer_quiet(c, mb_now_ns()))
		return false;
	mb_link_log(c, "closing", "no heartbeat from the peer");
	return true;
}

/* For the handshake: read until rd holds `need` bytes from off, by the
 * deadline; false on EOF, error or the deadline (logged). */
static bool fill(struct mb_conn *c, size_t need, uint64_t deadline)
{
	struct reader *r = &c->rd;
	while (r->len - r->off < need) {
		if (mb_conn_down(c))
			return false;
		if (mb_now_ns() > deadline) {
			mb_link_log(c, "closing", "no HELLO from the peer in time");
			return false;
		}
		/* Blocks for at most HANDSHAKE_POLL_MS (conn_new). */
		long n = rx_read(c, need, false, false);
		if (n != -EAGAIN && n <= 0)
			return false; /* end of stream, or an error */
	}
	return true;
}

static bool bad_hello(struct mb_conn *c, const char *why)
{
	mb_link_log(c, "closing on a bad frame", why);
	atomic_fetch_add_explicit(&c->rec->ctr.bad_frames, 1, memory_order_relaxed);
	return false;
}

/* The peer's HELLO, validated, within HANDSHAKE_MS of the connection;
 * false closes it (reason logged). Any other first frame is refused on
 * its header: rd holds HELLO_FRAME bytes at most. */
static bool hello_frame(struct mb_conn *c, uint32_t max_frame, struct mb_frame *f)
{
	struct reader *r = &c->rd;
	uint64_t deadline = r->last_rx_ns + HANDSHAKE_MS * 1000000ull;
	uint8_t type;
	uint32_t body;
	const char *why = NULL;
	if (!fill(c, MB_WIRE_HDR, deadline))
		return false;
	if (mb_wire_header(r->buf + r->off, max_frame, &type, &body, &why))
		return bad_hello(c, why);
	if (type != MB_F_HELLO)
		return bad_hello(c, "the first frame is not HELLO");
	if (!fill(c, MB_WIRE_HDR + (size_t)body, deadline))
		return false;
	if (mb_wire_decode(type, r->buf + r->off + MB_WIRE_HDR, body, f, &why))
		return bad_hello(c, why);
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
 * MSG, REP and REQ frames only, handled without waiting. Caller holds
 * rlock. */
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
		} else if (inl && type != MB_F_MSG && type != MB_F_REP && type != MB_F_REQ) {
			return RX_LEAVE;
		} else if (mb_wire_decode(type, p, body, &f, &why)) {
			goto bad;
		}
		/* A spinner also writes a reply into its call entry when that
		 * cannot wait: an error or a payload the entry holds (a larger
		 * one takes a shared buffer, which may have to be waited for). */
		if (inl && type == MB_F_REP && !f.arg && f.payload_len > MB_CALL_INLINE)
			return RX_LEAVE;
		/* And starts the call of a request when the service has room
		 * now: a spinning worker then takes it, waking nobody. */
		if (inl && type == MB_F_REQ) {
			if (!mb_link_on_req_nowait(c, &f))
				return RX_LEAVE;
			r->off += *need;
			continue;
		}
		if (type == MB_F_MSG) {
			uint32_t ran = publish_run(c, r, &f, *need);
			if (ran) {
				*received += ran;
				continue; /* r->off moved past them */
			}
			int rc = publish_msg(c, r, &f, inl);
			if (rc == MSGBUS_EAGAIN && inl)
				return RX_LEAVE;
			if (rc)
				atomic_fetch_add_explicit(&c->rec->ctr.undelivered, 1, memory_order_relaxed);
			else
				++*received;
			r->off += *need;
			continue;
		}
		r->off += *need; /* f points into rd until the next read */
		/* Count the messages before it first: the answer to a PING
		 * must not reach the peer before the stats say they arrived. */
		if (*received) {
			atomic_fetch_add_explicit(&c->rec->ctr.received, *received, memory_order_relaxed);
			*received = 0;
		}
		if (!on_frame(c, &f))
			return RX_CLOSE;
		continue;
	bad:
		if (inl)
			return RX_LEAVE; /* the rx thread reports it */
		mb_link_log(c, "closing on a bad frame", why);
		atomic_fetch_add_explicit(&c->rec->ctr.bad_frames, 1, memory_order_relaxed);
		return RX_CLOSE;
	}
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
			size_t need, off = c->rd.off;
			enum rx_stop st = rx_frames(c, true, &need, &received);
			if (st != RX_MORE) {
				leave = true;
				break;
			}
			/* Frames handled (messages published, a request or a
			 * reply delivered): the spinner takes them before it
			 * reads again. A read after each large one filled its
			 * inbox, and the rest went to the rx thread; after a
			 * reply, it found nothing (a system call in each round
			 * trip). rx_frames only moves rd.off forward. */
			if (c->rd.off != off || reads++ == RX_INLINE_READS)
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
		atomic_fetch_add_explicit(&c->rec->ctr.received, received, memory_order_relaxed);
	if (leave)
		mb_ec_signal(&c->rx_ec);
}

/* The spinner goes to sleep: the rx thread watches the link again. */
void mb_conn_rx_unspin(struct mb_conn *c)
{
	/* seq_cst: the first half of the pair with spinners_gone(), as an
	 * eventcount's store before its signal. */
	atomic_store_explicit(&c->rx_spin_ns, 0, memory_order_seq_cst);
	mb_ec_signal(&c->rx_ec);
}

/* seq_cst: after the rx thread announces a nap, this and a spinner's
 * unspin (store, then signal) order as an eventcount's check and signal.
 * A spinner that looked within RX_SPIN_GONE_NS is still there: it takes
 * up to a few hundred microseconds to take what one large read brought
 * before it looks again. Signed: a look stamped after our `now` is recent. */
static bool spinners_gone(struct mb_conn *c, uint64_t now)
{
	uint64_t t = atomic_load_explicit(&c->rx_spin_ns, memory_order_seq_cst);
	return !t || (int64_t)(now - t) > (int64_t)RX_SPIN_GONE_NS;
}

/*
 * Nap until a spinner signals or RX_NAP_NS ends, and take rlock back. At
 * the end of a nap, a spinner that holds rlock is reading the link right
 * now: nap again rather than wait for it, which would cost it a futex
 * wake at its unlock and the thread it runs on a switch, in the middle
 * of its round trip. And a spinner that looked at the link during the
 * nap reads it on: nap again (see spinners_gone).
 */
static void rx_nap(struct mb_conn *c, uint32_t v, uint64_t now)
{
	for (;;) {
		mb_ec_sleep(&c->rx_ec, v, now, now + RX_NAP_NS);
		bool locked = !pthread_mutex_trylock(&c->rlock);
		/* Announced again before the last look, as in the rx loop. A
		 * signal since the first announcement changed the count: a
		 * spinner left us work or went to sleep, so wait for rlock. */
		now = mb_now_ns();
		bool stay = mb_ec_prepare(&c->rx_ec) == v && !mb_conn_down(c);
		if (locked) {
			/* A spinner read the link during this nap and left us
			 * nothing: it reads on (reading here, in a stream, put
			 * a share of the messages into the inbox from the
			 * other core). Unless the peer has been silent: only
			 * this thread says so. */
			if (stay && !spinners_gone(c, now) && !peer_quiet(c, now)) {
				pthread_mutex_unlock(&c->rlock);
				continue;
			}
			return;
		}
		if (!stay || spinners_gone(c, now))
			break;
	}
	pthread_mutex_lock(&c->rlock);
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
 *      costs more than the message. A look that reads something handles
 *      it and naps again without a second read: a stream faster than
 *      the spinner used to keep this thread reading (never finding the
 *      socket empty), so each message was written into the inbox on one
 *      core and read on the other; read by the spinner itself, a 64 B
 *      message cost the receiving side 25-35 % less CPU (a receiver-bound
 *      stream: 13-15 M msgs/s against 9-11 M).
 * Returns with rlock held.
 */
void mb_link_rx_loop(struct mb_conn *c)
{
	struct reader *r = &c->rd;
	bool handed = false; /* we read while spinners spin: let them read on */
	while (!mb_conn_down(c)) {
		size_t need;
		/* Every frame there is (a spinner may have left some). */
		if (rx_frames(c, false, &need, &r->received) == RX_CLOSE || c->rx_end)
			break;
		if (r->received) { /* before we may block */
			atomic_fetch_add_explicit(&c->rec->ctr.received, r->received, memory_order_relaxed);
			r->received = 0;
		}
		uint64_t now = mb_now_ns();
		bool nap = !spinners_gone(c, now);
		if (!nap || !handed) {
			c->rx_shared = false;
			/* Owner: block in the read (HEARTBEAT_MS at most).
			 * Napping: take what is there first. */
			long n = rx_read(c, need, nap, true);
			if (n > 0) {
				handed = nap;
				continue;
			}
			if (n != -EAGAIN) {
				if (n == -ENOMEM)
					mb_link_log(c, "closing", "out of memory for a frame");
				break; /* the end of the stream, or an error */
			}
			if (peer_silent(c))
				break;
			now = mb_now_ns();
			if (!nap)
				continue;
		}
		handed = false;
		/* Nap: announced before the last look, so a spinner that
		 * leaves us a frame, or goes to sleep, after it wakes us. */
		uint32_t v = mb_ec_prepare(&c->rx_ec);
		if (spinners_gone(c, now))
			continue;
		c->rx_shared = true;
		pthread_mutex_unlock(&c->rlock);
		rx_nap(c, v, now);
	}
	c->rx_shared = false;
	atomic_fetch_add_explicit(&c->rec->ctr.received, r->received, memory_order_relaxed);
	r->received = 0;
}

bool mb_link_handshake(struct mb_conn *c, uint32_t max_frame)
{
	struct mb_frame f = { .type = MB_F_HELLO, .min_version = MB_WIRE_VERSION,
	                      .max_version = MB_WIRE_VERSION, .max_frame = max_frame,
	                      .node_id = c->ls->node_id };
	if (mb_link_send_frame(c, &f, true))
		return false;
	if (!hello_frame(c, max_frame, &f))
		return false;
	if (f.min_version > MB_WIRE_VERSION || f.max_version < MB_WIRE_VERSION) {
		mb_link_log(c, "closing", "no common protocol version");
		return false;
	}
	if (f.node_id == c->ls->node_id) {
		mb_link_log(c, "closing", "connected to itself");
		return false;
	}
	c->peer_max_frame = f.max_frame < MB_WIRE_MAX_FRAME ? f.max_frame : MB_WIRE_MAX_FRAME;
	return true;
}
