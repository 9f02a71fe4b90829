/* conn.c - run one TCP connection between two buses (msgbus-wire(7)):
 * set it up, run its threads until it drops, and account at the drop for
 * what the peer wanted and did not get; and the connecting side's watch
 * while the link is down. See conn_state.h. */
#include "link/conn.h"
#include "link/conn_state.h"
#include "link/link_log.h"
#include "link/link_recv.h"
#include "link/link_rr.h"
#include "link/link_send.h"
#include "reqrep/serve.h"
#include "pubsub/sub.h"
#include "shm/subject.h"
#include "platform/wait.h"

static void conn_free(struct mb_conn *c)
{
	/* First: no publisher reaches c from here on. */
	if (c->door)
		mb_conn_door_give(c->ls, c->door);
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
		if (pc->call)
			msgbus_call_cancel(pc->call);
		free(pc);
	}
	mb_names_clear(&c->rsubs);
	free(c->aliases); /* their slots go with c->lb */
	if (c->lb)
		c->lb->bus_hooks->close(c->lb);
	pthread_mutex_destroy(&c->lock);
	pthread_mutex_destroy(&c->rlock);
	free(c->rd.buf);
	free(c->txbuf);
	free(c->taken);
	free(c);
}

/* A connection before the handshake: what it needs to say HELLO and read
 * the peer's, nothing of the bus. */
static struct mb_conn *conn_new(struct mb_links *ls, int fd, const struct mb_conn_opts *o)
{
	/* aligned: some members sit on cache lines of their own */
	struct mb_conn *c = aligned_alloc(_Alignof(struct mb_conn), sizeof(*c));
	if (!c)
		return NULL;
	memset(c, 0, sizeof(*c));
	c->ls = ls;
	c->rec = o->rec;
	c->fd = fd;
	c->peer_max_frame = MB_WIRE_MIN_FRAME;
	c->max_patterns = o->max_patterns;
	snprintf(c->peer, sizeof(c->peer), "%s", o->peer);
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->rlock, NULL);
	atomic_init(&c->rgen, 1);
	atomic_init(&c->tx_active, true);
	c->door = mb_conn_door_take(ls, c);
	c->txbuf = malloc(TXBUF);
	/* Only a HELLO is read before the handshake: a peer cannot make us
	 * buffer more, whatever length its first header claims. */
	c->rd.buf = malloc(HELLO_FRAME);
	c->rd.cap = HELLO_FRAME;
	c->rd.last_rx_ns = mb_now_ns();
	if (!c->door || !c->txbuf || !c->rd.buf) {
		conn_free(c);
		return NULL;
	}
	mb_sock_set_read_timeout(fd, HANDSHAKE_POLL_MS);
	mb_sock_set_write_timeout(fd, WRITE_POLL_MS);
	return c;
}

/* After a valid HELLO: the link's own handle on the bus, and the buffers
 * of a running link. 0 or an error (logged). */
static int conn_open(struct mb_conn *c)
{
	int rc = c->ls->bus->bus_hooks->reopen(c->ls->bus, &c->lb);
	if (rc == 0) {
		uint32_t np = c->lb->cfg.max_participants;
		uint8_t *rb = realloc(c->rd.buf, RXBUF);
		if (rb) {
			c->rd.buf = rb;
			c->rd.cap = RXBUF;
		}
		c->taken = calloc(np, sizeof(*c->taken));
		if (!rb || !c->taken)
			rc = MSGBUS_ENOMEM;
	}
	if (rc) {
		mb_link_log(c, "closing: cannot open a handle on the bus", msgbus_strerror(rc));
		return rc;
	}
	mb_sock_set_read_timeout(c->fd, HEARTBEAT_MS);
	/* Relaxed: see conn_state.h:mb_link_is_bridge(). */
	atomic_fetch_or_explicit(&mb_part_at(c->lb, c->lb->self)->flags, MB_PARTF_BRIDGE,
	                         memory_order_relaxed);
	/* Three link threads per connection would steal the cores from the
	 * processes they serve if they spun: they sleep at once. */
	c->lb->spin_ns = 0;
	return 0;
}

/* The connecting side, at the drop: start watching before the link counts
 * as down, so nothing published after the drop escapes. */
static void watch_start(struct mb_conn *c, struct mb_watch *watch)
{
	pthread_mutex_lock(&c->lock);
	if (watch->bus && c->rsubs.n &&
	    (watch->skip = calloc(c->lb->cfg.max_participants, sizeof(uint64_t))) &&
	    msgbus_subscribe(watch->bus, ">", MSGBUS_SUB_LOSSY, &watch->sub)) {
		watch->sub = NULL;
	}
	if (!watch->sub) {
		free(watch->skip);
		watch->skip = NULL;
	}
	pthread_mutex_unlock(&c->lock);
}

/* Run: tx and rr threads, rx in this one, until the link drops. Caller
 * holds rlock. true if the threads ran. */
static bool conn_run(struct mb_conn *c, const struct mb_conn_opts *o)
{
	struct mb_links *ls = c->ls;
	bool threads = false;
	if (pthread_create(&c->tx, NULL, mb_link_tx_main, c))
		return false;
	if (pthread_create(&c->rr, NULL, mb_link_rr_main, c) == 0) {
		threads = true;
		atomic_fetch_add_explicit(&ls->up, 1, memory_order_relaxed);
		if (o->again)
			atomic_fetch_add_explicit(&c->rec->ctr.reconnects, 1, memory_order_relaxed);
		char peer[64];
		mb_link_rec_set(ls, c->rec, MSGBUS_LINK_UP,
		                mb_sock_peer(c->fd, peer, sizeof(peer)) ? "" : peer);
		mb_link_rx_loop(c);
		if (o->watch)
			watch_start(c, o->watch);
	}
	mb_conn_set_down(c);
	mb_sock_shutdown(c->fd);
	/* Wake the threads now rather than at their timeouts. */
	mb_ec_kick(&mb_part_at(c->lb, c->lb->self)->reply_ec);
	mb_ec_kick(&c->lb->hdr->any_ec);
	mb_ec_kick(&c->tx_ec);
	if (threads)
		pthread_join(c->rr, NULL);
	pthread_join(c->tx, NULL);
	return threads;
}

/* The accounting at a drop, after the threads: what the peer wanted and we
 * had not sent is lost with the link; count it, whether queued, held or still on the bus. From here
 * on no publisher sends inline. */
static void conn_drop(struct mb_conn *c, struct mb_watch *watch)
{
	mb_slock_lock(&c->door->wlock);
	/* Acquire: pairs with the release in link_recv.c:follow() (this
	 * thread's own store; inline senders see NULL from here on). */
	msgbus_sub *proxy = atomic_exchange_explicit(&c->proxy, NULL, memory_order_acquire);
	atomic_store_explicit(&c->door->proxy_slot, UINT32_MAX, memory_order_relaxed); /* a hint */
	mb_link_tx_abandon_locked(c);
	if (c->held && proxy) {
		atomic_fetch_add_explicit(&c->rec->ctr.undelivered, 1, memory_order_relaxed); /* only a wanted one is held */
		mb_link_taken(c->lb, c->taken, c->held);
		msgbus_msg_release(c->held);
	}
	c->held = NULL;
	mb_slock_unlock(&c->door->wlock);
	if (proxy) {
		/* The watch skips what the link took, sent or counted. */
		if (watch && watch->skip)
			for (uint32_t p = 0; p < c->lb->cfg.max_participants; p++)
				if (c->taken[p] > watch->skip[p])
					watch->skip[p] = c->taken[p];
		msgbus_msg *m;
		while (msgbus_recv(proxy, &m, 0) == 0) {
			if (!mb_link_is_bridge(c->lb, m->origin) && mb_link_peer_wants(c, m->subject))
				atomic_fetch_add_explicit(&c->rec->ctr.undelivered, 1,
				                          memory_order_relaxed);
			if (watch && watch->skip)
				mb_link_taken(c->lb, watch->skip, m);
			msgbus_msg_release(m);
		}
		msgbus_unsubscribe(proxy);
	}
	if (watch && watch->sub) {
		pthread_mutex_lock(&c->lock);
		watch->wanted = mb_names_release(&c->rsubs, &watch->nwanted);
		watch->dropped_seen = 0;
		pthread_mutex_unlock(&c->lock);
	}
}

/* Set-up, with rlock held: the handshake (the pending count of a listener
 * drops once it ends, either way), then the link's handle; a reconnection
 * settles the watch it kept while the link was down. true: run it. */
static bool conn_setup(struct mb_conn *c, const struct mb_conn_opts *o)
{
	/* Room for the largest message and its subject, and never below the
	 * protocol's minimum, which a peer would refuse: a bus may allow
	 * messages of only 1 KiB (a larger one gets EMSGSIZE at publish). */
	c->max_frame = c->ls->bus->cfg.max_msg_size + 1024u;
	if (c->max_frame < MB_WIRE_MIN_FRAME)
		c->max_frame = MB_WIRE_MIN_FRAME;
	bool shook = mb_link_handshake(c, c->max_frame);
	if (o->pending)
		atomic_fetch_sub_explicit(o->pending, 1, memory_order_relaxed); /* a count */
	if (!shook || conn_open(c))
		return false;
	if (o->watch && o->watch->sub)
		mb_watch_settle(&c->rec->ctr, o->watch);
	return true;
}

/* The end: nobody reaches c any more; close fd and free it. */
static void conn_end(struct mb_conn *c)
{
	int fd = c->fd;
	mb_conn_unregister(c->ls, c);
	mb_conn_set_down(c);
	mb_sock_shutdown(fd);
	mb_close_fd(fd);
	conn_free(c);
}

bool mb_conn_run(struct mb_links *ls, int fd, const struct mb_conn_opts *o)
{
	struct mb_conn *c = conn_new(ls, fd, o);
	bool ran = false;
	if (!c) {
		if (o->pending) /* relaxed: a count */
			atomic_fetch_sub_explicit(o->pending, 1, memory_order_relaxed);
		mb_sock_shutdown(fd);
		mb_close_fd(fd);
		return false;
	}
	/* Registered from the start: closing the bus ends a handshake too. */
	mb_conn_register(ls, c, fd);
	/* The rx thread owns the link's reading side (rx_loop). */
	pthread_mutex_lock(&c->rlock);
	if (conn_setup(c, o))
		ran = conn_run(c, o);
	pthread_mutex_unlock(&c->rlock); /* no spinner reads any more */
	if (c->lb)
		conn_drop(c, o->watch);
	conn_end(c);
	/* Only now, with the peer's patterns and services given back (they
	 * go with c->lb in conn_end): a user who sees the link down may link
	 * again at once and find every slot free. Release: pairs with the
	 * acquire in mb_links_stats. */
	if (ran)
		atomic_fetch_sub_explicit(&ls->up, 1, memory_order_release);
	return ran;
}

/*
 * While a link is down, count the messages the peer last said it wanted:
 * they cannot reach it (no silent loss). A lossy subscription never holds
 * local publishers back; what it misses is counted as well.
 */
void mb_watch_count(struct mb_link_ctr *ctr, struct mb_watch *w)
{
	msgbus_msg *m;
	while (msgbus_recv(w->sub, &m, 0) == 0) {
		if (m->origin < w->bus->cfg.max_participants && m->seq < w->skip[m->origin]) {
			msgbus_msg_release(m); /* counted by the link at the drop */
			continue;
		}
		size_t slen = strlen(msgbus_msg_subject(m));
		for (uint32_t i = 0; i < w->nwanted; i++) {
			if (mb_subject_match(w->wanted[i], strlen(w->wanted[i]),
			                     msgbus_msg_subject(m), slen)) {
				atomic_fetch_add_explicit(&ctr->undelivered, 1, memory_order_relaxed);
				break;
			}
		}
		msgbus_msg_release(m);
	}
	msgbus_sub_stats st;
	if (msgbus_sub_stats_get(w->sub, &st) == 0) {
		atomic_fetch_add_explicit(&ctr->undelivered, st.dropped - w->dropped_seen,
		                          memory_order_relaxed);
		w->dropped_seen = st.dropped;
	}
}

void mb_watch_settle(struct mb_link_ctr *ctr, struct mb_watch *w)
{
	mb_watch_count(ctr, w);
	msgbus_unsubscribe(w->sub);
	w->sub = NULL;
	for (uint32_t i = 0; i < w->nwanted; i++)
		free(w->wanted[i]);
	free(w->wanted);
	w->wanted = NULL;
	w->nwanted = 0;
	free(w->skip);
	w->skip = NULL;
}
