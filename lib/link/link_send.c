/* link_send.c - a link's sending side: control frames, interest, and
 * messages of the local bus to the peer (the tx thread and inline senders);
 * see conn_state.h. */
#include "shm/subject.h"
#include "link/link_send.h"
#include "link/link_log.h"
#include "ring/ring.h"
#include "pubsub/route.h"
#include "pubsub/recv.h"
#include "platform/fence.h"
#include "platform/wait.h"

#include <errno.h>

/* ---- sending -------------------------------------------------------------- */

/* MSG frames are counted as sent before their bytes can reach the peer, so
 * the count never lags what the peer has; taken back if the write fails. */
static void count_sent(struct mb_conn *c)
{
	if (c->uncounted) {
		atomic_fetch_add_explicit(&c->rec->ctr.sent, c->uncounted, memory_order_relaxed);
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
void mb_link_tx_abandon_locked(struct mb_conn *c)
{
	count_sent(c);
	uint32_t n = unwritten_msgs(c);
	if (n) {
		atomic_fetch_sub_explicit(&c->rec->ctr.sent, n, memory_order_relaxed);
		atomic_fetch_add_explicit(&c->rec->ctr.undelivered, n, memory_order_relaxed);
	}
	c->txlen = c->txoff = 0;
}

static void wrote(struct mb_conn *c)
{
	uint64_t now = mb_now_ns();
	c->last_write_ns = now;
	atomic_store_explicit(&c->last_tx_ns, now, memory_order_relaxed);
}

/* A blocking write failed: the link is down. -EAGAIN: the peer took
 * nothing for DEAD_AFTER_MS (SO_SNDTIMEO), it has stopped reading. */
static void write_failed(struct mb_conn *c, int rc)
{
	if (rc == -EAGAIN && !mb_conn_down(c))
		mb_link_log(c, "closing", "the peer takes no data");
	mb_conn_set_down(c);
	mb_sock_shutdown(c->fd); /* the rx thread returns from its read now */
}

/* Write all that is queued, blocking (DEAD_AFTER_MS without progress at
 * most). */
static int flush_locked(struct mb_conn *c)
{
	if (c->txoff == c->txlen) {
		c->txlen = c->txoff = 0;
		return 0;
	}
	count_sent(c);
	int rc = mb_sock_write2(c->fd, c->txbuf + c->txoff, c->txlen - c->txoff, NULL, 0,
	                        DEAD_AFTER_MS);
	if (rc) {
		mb_link_tx_abandon_locked(c);
		write_failed(c, rc);
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
		mb_link_tx_abandon_locked(c);
		mb_conn_set_down(c);
		return;
	}
	c->txoff += (size_t)n;
	if (c->txoff == c->txlen)
		c->txlen = c->txoff = 0;
	wrote(c);
}

/* Queue a control frame (or a request or reply); large payloads go
 * straight out after what is queued. now: flush before returning. */
int mb_link_send_frame(struct mb_conn *c, struct mb_frame *f, bool now)
{
	uint8_t head[MB_WIRE_HEAD_MAX];
	if (mb_conn_down(c))
		return MSGBUS_ECLOSED;
	size_t hl = mb_wire_encode(head, f);
	if (hl - MB_WIRE_HDR + f->payload_len > c->peer_max_frame)
		return MSGBUS_EMSGSIZE;
	int rc = 0;
	mb_slock_lock(&c->door->wlock);
	if (mb_conn_down(c)) {
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
			rc = mb_sock_write2(c->fd, head, hl, f->payload, f->payload_len,
			                    DEAD_AFTER_MS);
		if (rc)
			write_failed(c, rc);
		else
			wrote(c);
	}
	mb_slock_unlock(&c->door->wlock);
	return rc ? MSGBUS_ECLOSED : 0;
}

/* The PONG the rx thread left (link_recv.c:on_frame), if any. */
static void send_pong(struct mb_conn *c)
{
	/* Pairs with the release store of pong_due in link_recv.c:on_frame(). */
	if (!atomic_exchange_explicit(&c->pong_due, false, memory_order_acquire))
		return;
	struct mb_frame f = { .type = MB_F_PONG,
	                      .token = atomic_load_explicit(&c->pong_token, memory_order_relaxed) };
	mb_link_send_frame(c, &f, true);
}

static void link_flush(struct mb_conn *c)
{
	mb_slock_lock(&c->door->wlock);
	flush_locked(c);
	mb_slock_unlock(&c->door->wlock);
}

static int link_send_name(struct mb_conn *c, uint8_t type, const char *name)
{
	struct mb_frame f = { .type = type };
	f.name_len = (uint16_t)strlen(name);
	memcpy(f.name, name, f.name_len + 1u);
	return mb_link_send_frame(c, &f, false);
}

/* Send a reply; statuses version 1 cannot carry (an OS error) become
 * EPROTO, and a reply too large for the peer becomes EMSGSIZE, so the
 * remote requester is always answered. */
int mb_link_send_rep(struct mb_conn *c, uint32_t id, int status, const void *data, size_t len)
{
	if (status < 0 || status > MSGBUS_ENOENT)
		status = MSGBUS_EPROTO;
	struct mb_frame f = { .type = MB_F_REP, .id = id, .arg = (uint32_t)status };
	if (!status) {
		f.payload = data;
		f.payload_len = (uint32_t)len;
	}
	int rc = mb_link_send_frame(c, &f, true);
	if (rc == MSGBUS_EMSGSIZE) {
		f.arg = MSGBUS_EMSGSIZE;
		f.payload = NULL;
		f.payload_len = 0;
		rc = mb_link_send_frame(c, &f, true);
	}
	return rc;
}

/* ---- interest ------------------------------------------------------------- */

/* What local (non-bridge) participants subscribe to and serve. */
int mb_link_local_interest(msgbus_bus *b, struct names *subs, struct names *svcs)
{
	int rc = 0;
	for (uint32_t s = 0; s < b->cfg.max_subs && !rc; s++) {
		struct mb_subslot *ss = mb_subslot_at(b, s);
		/* Pairs with the releases that make a slot ACTIVE in
		 * pubsub/subscribe.c: the pattern is written before. */
		uint64_t w = atomic_load_explicit(&ss->word, memory_order_acquire);
		if (MB_SUBW_STATE(w) != MB_SUB_ACTIVE)
			continue; /* a slot being reserved is still being written */
		char pat[MB_SUBJECT_MAX + 1];
		uint32_t plen;
		size_t checked;
		if (!mb_subslot_pattern(ss, pat, &plen))
			continue; /* the racy copy of pubsub/route.c, checked below */
		if (mb_subject_check(pat, &checked, true, NULL) || checked != plen ||
		    /* Relaxed: only "is it the same word?" after the copy. */
		    atomic_load_explicit(&ss->word, memory_order_relaxed) != w)
			continue; /* invalid (untrusted), or changed while we read */
		if (MB_SUBW_FLAGS(w) & MB_SUBF_QUEUE) {
			bool local = false;
			for (uint32_t i = 0; i < b->cfg.max_participants && !local; i++)
				/* Relaxed: a snapshot; a change bumps interest_gen
				 * and we look again. */
				local = (atomic_load_explicit(&ss->members[i / 64],
				                              memory_order_relaxed) >>
				                 (i % 64) &
				         1) &&
				        !mb_link_is_bridge(b, i);
			const char *name = pat + MB_SVC_PREFIX_LEN;
			if (local && plen > MB_SVC_PREFIX_LEN && !mb_names_has(svcs, name))
				rc = mb_names_add(svcs, name);
		} else if (!mb_link_is_bridge(b, MB_SUBW_OWNER(w)) && !mb_names_has(subs, pat)) {
			rc = mb_names_add(subs, pat);
		}
	}
	return rc;
}

/* Send the peer what changed from told to now: `on` for each new name,
 * `off` for each one gone; told follows what was sent. */
static void send_diff(struct mb_conn *c, const struct names *now, struct names *told, uint8_t on,
                      uint8_t off)
{
	for (uint32_t i = 0; i < now->n; i++)
		if (!mb_names_has(told, now->v[i]) && !link_send_name(c, on, now->v[i]))
			mb_names_add(told, now->v[i]);
	for (uint32_t i = 0; i < told->n;)
		if (!mb_names_has(now, told->v[i]) && !link_send_name(c, off, told->v[i]))
			mb_names_del(told, told->v[i]);
		else
			i++;
}

/* Send the difference between what we told the peer and what is true.
 * The first time, a PING follows at once: the peer's rx marks the link
 * DECLARED when it arrives (link_recv.c), so its users know our whole
 * interest has come, not only that some has. */
static void advertise(struct mb_conn *c, struct names *adv_subs, struct names *adv_svcs,
                      bool *declared)
{
	struct names subs = { 0 }, svcs = { 0 };
	if (mb_link_local_interest(c->lb, &subs, &svcs) == 0) {
		send_diff(c, &subs, adv_subs, MB_F_SUB, MB_F_UNSUB);
		send_diff(c, &svcs, adv_svcs, MB_F_SERVE, MB_F_UNSERVE);
		if (!*declared && adv_subs->n == subs.n && adv_svcs->n == svcs.n) {
			struct mb_frame f = { .type = MB_F_PING, .token = mb_now_ns() };
			*declared = mb_link_send_frame(c, &f, false) == 0;
		}
		link_flush(c);
	}
	mb_names_clear(&subs);
	mb_names_clear(&svcs);
}

bool mb_link_peer_wants(struct mb_conn *c, const char *subject)
{
	size_t slen = strlen(subject);
	bool yes = false;
	pthread_mutex_lock(&c->lock);
	for (uint32_t i = 0; i < c->rsubs.n && !yes; i++)
		yes = mb_subject_match(c->rsubs.v[i], strlen(c->rsubs.v[i]), subject, slen);
	pthread_mutex_unlock(&c->lock);
	return yes;
}

/* peer_wants, remembered for the last subject until the peer's interest
 * changes. subject has nl bytes; same: it is the one remembered. */
static bool wants_subject(struct mb_conn *c, const char *subject, size_t nl, bool same)
{
	/* Pairs with the release in link_recv.c:on_interest(). */
	uint32_t g = atomic_load_explicit(&c->rgen, memory_order_acquire);
	if (c->want_gen != g || !same) {
		c->want = mb_link_peer_wants(c, subject);
		c->want_gen = g;
		memcpy(c->want_subject, subject, nl);
		c->want_subject[nl] = '\0';
		c->want_len = (uint32_t)nl;
	}
	return c->want;
}

void mb_link_taken(msgbus_bus *lb, uint64_t *taken, const msgbus_msg *m)
{
	if (m->origin < lb->cfg.max_participants && m->seq + 1 > taken[m->origin])
		taken[m->origin] = m->seq + 1;
}

/* ---- tx: local bus to peer ------------------------------------------------- */

/*
 * Queue m, taken from the proxy, if the peer wants it; release it. nowait
 * (inline, in a publisher's thread): never block, and false when txbuf has
 * no room, m then kept in c->held for later. Caller holds wlock.
 */
static bool queue_msg_locked(struct mb_conn *c, msgbus_sub *proxy, msgbus_msg *m, bool nowait)
{
	(void)proxy;
	/* The subject sent last, NUL included (m->subject is a proxy's
	 * copy, MB_SUBJECT_MAX + 1 bytes): its length without a strlen, and
	 * one compare per message, not two (the two were 15 % of the tx
	 * thread's samples in a 64 B stream, perf). */
	bool same = c->want_gen && !memcmp(c->want_subject, m->subject, c->want_len + 1u);
	size_t nl = same ? c->want_len : strlen(m->subject);
	if (!mb_link_is_bridge(c->lb, m->origin) && wants_subject(c, m->subject, nl, same)) {
		size_t hl = MB_WIRE_HDR + 2 + nl;
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
			atomic_fetch_add_explicit(&c->rec->ctr.undelivered, 1, memory_order_relaxed);
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
			atomic_fetch_add_explicit(&c->rec->ctr.sent, 1, memory_order_relaxed);
			int rc = mb_sock_write2(c->fd, head, hl, m->data, m->len, DEAD_AFTER_MS);
			if (rc) {
				atomic_fetch_sub_explicit(&c->rec->ctr.sent, 1, memory_order_relaxed);
				atomic_fetch_add_explicit(&c->rec->ctr.undelivered, 1, memory_order_relaxed);
				write_failed(c, rc);
			} else {
				wrote(c);
			}
		}
	}
	mb_link_taken(c->lb, c->taken, m);
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
	/* Down: what is left on the proxy is counted at the drop (conn.c),
	 * not written one blocking write after another. */
	while (n < max && !atomic_load_explicit(&c->down, memory_order_relaxed)) {
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
	bool direct; /* it left what direct publishers queue to them */
};

/* Is txbuf only what direct publishers queued since the last pass (they
 * write it themselves at TX_WRITE_AT), with nothing else to send? Then
 * the pass leaves it to them; once a pass finds no new one, it writes
 * what they left. (Writing sooner would hold wlock while they go on: the
 * stream would fall back to the proxy, and to this thread.) Caller holds
 * wlock. */
static bool direct_at_work(struct mb_conn *c, uint32_t took)
{
	bool yes = !took && !c->held && c->txoff == 0 && c->txlen && c->txlen < TX_WRITE_AT &&
	           c->direct_n != c->direct_seen;
	c->direct_seen = c->direct_n;
	return yes;
}

/* One pass of the tx thread: take, queue, write all (blocking), but what
 * direct publishers are still adding to. Before it sleeps
 * (flush_releases): make the proxy's releases visible to waiting
 * publishers. */
static struct tx_res tx_pass(struct mb_conn *c, msgbus_sub *proxy, bool before_sleep,
                             int64_t *owner)
{
	struct tx_res r;
	mb_slock_lock(&c->door->wlock);
	bool queued = c->held || c->txlen > c->txoff;
	uint32_t before = c->uncounted;
	r.took = drain_locked(c, proxy, false, TX_PASS_MAX, owner);
	r.direct = direct_at_work(c, r.took);
	r.busy = (queued && !r.direct) || c->uncounted != before || r.took >= TX_STREAM;
	/* several to send, whoever queued them (an inline publisher too) */
	r.stream = !r.direct && (c->uncounted >= 2 || r.took >= TX_STREAM);
	if (!r.direct)
		flush_locked(c);
	if (before_sleep)
		mb_sub_flush(proxy);
	mb_slock_unlock(&c->door->wlock);
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
	    !mb_slock_try(&c->door->wlock)) {
		mb_ec_signal(&c->tx_ec);
		return;
	}
	/* Acquire: pairs with the release in link_recv.c:follow(): the
	 * subscription is set up before we use it. */
	msgbus_sub *proxy = atomic_load_explicit(&c->proxy, memory_order_acquire);
	bool left = false;
	if (proxy && !mb_conn_down(c)) {
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
	mb_slock_unlock(&c->door->wlock);
	if (left)
		mb_ec_signal(&c->tx_ec);
}

/* A direct message that finds txbuf empty: written at once when it is
 * lone (ping-pong, request/reply), queued when a stream goes on (written
 * at TX_WRITE_AT). A stream's messages come while the last write has
 * just returned; a lone one after a quiet TX_LONE_NS, or after its
 * predecessor by that much, the write between them stamped late. */
bool mb_link_tx_lone(uint64_t now, uint64_t last_write, uint64_t last_empty)
{
	uint64_t since_write = now - last_write;
	return since_write >= TX_LONE_NS ||
	       (since_write >= TX_LONE_GAP_NS && now - last_empty >= TX_LONE_NS);
}

/* Caller holds wlock. */
static bool direct_lone(struct mb_conn *c)
{
	uint64_t now = mb_now_ns();
	bool lone = mb_link_tx_lone(now, c->last_write_ns, c->direct_empty_ns);
	c->direct_empty_ns = now;
	return lone;
}

/*
 * A message published on the linking handle whose only local target is
 * the proxy of door's connection (links.c:links_direct): queue it in
 * txbuf from the publisher's thread, skipping the inbox, and write as
 * mb_conn_tx_inline does. Only when nothing taken before waits in the
 * proxy or in `held` (order per publisher). When the socket did not take
 * all that was written, or txbuf is full: a publisher that may block
 * writes the rest itself, blocking, as the tx thread would (so a stream
 * under backpressure stays here rather than go through the proxy and
 * the tx thread), and waits for wlock; one that may not leaves both, and
 * the message, to the tx thread. true: it is queued, or the peer does not
 * want it (as the tx thread would drop it). Such a message never reaches
 * the bus, so no watch (conn.c) sees it and it needs no sequence number.
 */
bool mb_conn_tx_direct(struct mb_conn_door *door, uint32_t slot, uint32_t gen,
                       const char *subject, size_t nl, const void *data, size_t len,
                       bool may_block)
{
	/* One that may block waits for the tx thread's write as for its own. */
	if (may_block)
		mb_slock_lock(&door->wlock);
	else if (!mb_slock_try(&door->wlock))
		return false;
	struct mb_conn *c = door->conn;
	/* Acquire: as in mb_conn_tx_inline. */
	msgbus_sub *proxy = c ? atomic_load_explicit(&c->proxy, memory_order_acquire) : NULL;
	size_t hl = MB_WIRE_HDR + 2 + nl;
	bool ok = proxy && !mb_conn_down(c) && !c->held && 2 + nl + len <= c->peer_max_frame &&
	          hl + len <= TXBUF / 2 && mb_sub_drained_at(proxy, slot, gen);
	if (ok && (c->txoff || c->txlen >= TX_WRITE_AT || c->txlen + hl + len > TXBUF))
		ok = may_block && !flush_locked(c);
	if (!ok) {
		mb_slock_unlock(&door->wlock);
		return false;
	}
	size_t queued = c->txlen;
	bool same = c->want_gen && c->want_len == nl && !memcmp(c->want_subject, subject, nl);
	if (wants_subject(c, subject, nl, same)) {
		mb_wire_encode_msg(c->txbuf + queued, subject, nl, (uint32_t)len);
		if (len)
			memcpy(c->txbuf + queued + hl, data, len);
		c->txlen += hl + len;
		c->uncounted++;
		c->direct_n++;
		bool tried = queued + hl + len >= TX_WRITE_AT || (!queued && direct_lone(c));
		if (tried)
			flush_nowait_locked(c);
		/* What it leaves, the tx thread writes: told when txbuf
		 * turns non-empty or a write stops short, once per batch. It
		 * sleeps on the proxy's word or on tx_ec. Under wlock: the
		 * proxy's word is in c->lb's mapping, which c's end unmaps. */
		if (c->txlen > c->txoff && (!queued || tried)) {
			mb_ec_signal(mb_sub_wait_word(proxy));
			mb_ec_signal(&c->tx_ec);
		}
	}
	mb_slock_unlock(&door->wlock);
	return true;
}

/*
 * Whether this tx thread counts in ls->tx_asleep: from the announcement of
 * a sleep on the bus (before its last pass) until it wakes, and through a
 * whole run of naps, the passes between them included. While no tx thread
 * counts, publishers leave their messages to the awake tx threads without
 * a look at the links (links.c:mb_links_published): a stream then costs
 * no lock (a fence) per message. A sleep on the bus needs nothing more:
 * the commit signals data_ec. A nap (on tx_ec) relies on publishers: one
 * that commits after our last pass must see us counted, then take the
 * links' lock and signal tx_ec or send inline, as before. It loads the
 * count after its commit with only a compiler barrier between (the light
 * fence of inbox.c:put_done), so when a run of naps starts we run the
 * heavy fence after our seq_cst increment and before the last pass: the
 * Dekker pair of fence.h. Once per run, not per nap: a membarrier at
 * every nap of a ping-pong cost its p99. Without membarrier a nap is
 * bounded anyway (TX_NAP_NS).
 */
enum tx_count { TX_UNCOUNTED, TX_COUNTED_BUS, TX_COUNTED_NAPS };

static void tx_count_on(struct mb_conn *c, enum tx_count *k, bool napping)
{
	if (*k == TX_UNCOUNTED)
		/* seq_cst: the first half of the pair described above. */
		atomic_fetch_add_explicit(&c->ls->tx_asleep, 1, memory_order_seq_cst);
	if (napping && *k != TX_COUNTED_NAPS)
		(void)mb_fence_heavy();
	*k = napping ? TX_COUNTED_NAPS : TX_COUNTED_BUS;
}

static void tx_count_off(struct mb_conn *c, enum tx_count *k)
{
	if (*k != TX_UNCOUNTED)
		/* Relaxed: a count; a publisher that still sees us counted
		 * only looks at the link once more. */
		atomic_fetch_sub_explicit(&c->ls->tx_asleep, 1, memory_order_relaxed);
	*k = TX_UNCOUNTED;
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
void *mb_link_tx_main(void *arg)
{
	struct mb_conn *c = arg;
	mb_thread_name("msgbus-tx");
	struct names adv_subs = { 0 }, adv_svcs = { 0 };
	/* Acquire (both): pairs with the release increments in
	 * pubsub/subscribe.c and reqrep/serve.c, made after a slot changes. */
	uint32_t seen = atomic_load_explicit(&c->lb->hdr->interest_gen, memory_order_acquire) - 1;
	uint64_t next_check = 0, inline_seen = 0;
	int64_t owner = -1; /* a writer holding a head back, from the last pass */
	bool napping = false, woken = false, streaming = false, lingered = false;
	bool declared = false; /* the PING after our first declarations is sent */
	enum tx_count counted = TX_UNCOUNTED;
	while (!mb_conn_down(c)) {
		uint32_t gen = atomic_load_explicit(&c->lb->hdr->interest_gen, memory_order_acquire);
		if (gen != seen) {
			seen = gen;
			advertise(c, &adv_subs, &adv_svcs, &declared);
		}
		/* Acquire: as in mb_conn_tx_inline. */
		msgbus_sub *proxy = atomic_load_explicit(&c->proxy, memory_order_acquire);
		struct tx_res r = { 0, false, false, false };
		if (proxy && !napping)
			r = tx_pass(c, proxy, false, &owner);
		send_pong(c);
		uint64_t now = mb_now_ns();
		if (now - atomic_load_explicit(&c->last_tx_ns, memory_order_relaxed) >
		    HEARTBEAT_MS * 1000000ull) {
			struct mb_frame f = { .type = MB_F_PING, .token = now };
			mb_link_send_frame(c, &f, true);
		}
		if (!proxy) {
			/* Nothing wanted yet: look again in 50 ms, or at once
			 * for a PONG or the drop (both signal tx_ec), so a
			 * connection that ends is torn down without delay. */
			uint32_t v = mb_ec_prepare(&c->tx_ec);
			/* seq_cst: after mb_ec_prepare, the second half of the
			 * Dekker pair with link_recv.c:on_frame()'s store of
			 * pong_due and its signal of tx_ec. */
			if (!mb_conn_down(c) &&
			    !atomic_load_explicit(&c->pong_due, memory_order_seq_cst))
				mb_ec_sleep(&c->tx_ec, v, now, now + 50000000ull);
			continue;
		}
		if (r.busy) {
			napping = woken = lingered = false;
			streaming = streaming || r.stream;
			continue;
		}
		if (r.direct) {
			/* Publishers queue and write themselves: look again
			 * after a linger, unannounced (relaxed: a timed wait). */
			napping = woken = false;
			mb_ec_sleep(&c->tx_ec, atomic_load_explicit(&c->tx_ec, memory_order_relaxed),
			            now, now + TX_LINGER_NS);
			continue;
		}
		if (streaming && !lingered) {
			lingered = true;
			/* Relaxed: a timed linger; any change wakes it. */
			mb_ec_sleep(&c->tx_ec, atomic_load_explicit(&c->tx_ec, memory_order_relaxed),
			            now, now + TX_LINGER_NS);
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
		tx_count_on(c, &counted, napping);
		r = tx_pass(c, proxy, true, &owner);
		if (r.direct) {
			napping = woken = false; /* linger as above */
			tx_count_off(c, &counted);
			continue;
		}
		if (napping) {
			uint64_t inl = atomic_load_explicit(&c->inline_passes, memory_order_relaxed);
			if (r.busy || (!r.took && inl == inline_seen)) {
				napping = woken = false; /* work of our own, or quiet */
				tx_count_off(c, &counted);
				continue;
			}
			inline_seen = inl;
		} else if (r.took || r.busy) {
			tx_count_off(c, &counted);
			continue;
		}
		if (mb_conn_down(c))
			break;
		atomic_store_explicit(&c->tx_active, false, memory_order_relaxed);
		mb_ec_sleep(ec, v, now, until);
		atomic_store_explicit(&c->tx_active, true, memory_order_relaxed);
		if (!napping)
			tx_count_off(c, &counted); /* a run of naps stays counted */
		/* Relaxed: only "did it change?" (not a timeout). */
		woken = !napping && atomic_load_explicit(ec, memory_order_relaxed) != v;
	}
	tx_count_off(c, &counted);
	mb_names_clear(&adv_subs);
	mb_names_clear(&adv_svcs);
	return NULL;
}
