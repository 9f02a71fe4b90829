/* link.c - one TCP connection between two buses (msgbus-wire(7)): its
 * threads, its end, and the list of a handle's connections; see
 * link_conn.h. */
#include "link_conn.h"
#include "rr.h"
#include "sub.h"
#include "wait.h"

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
	mb_names_clear(&c->rsubs);
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
	int orc = c->txbuf && c->rd.buf ? mb_bus_reopen(ls->bus, &c->lb) : MSGBUS_ENOMEM;
	if (orc == 0) {
		uint32_t nt = c->lb->cfg.max_subjects;
		c->want_gen = calloc(nt, sizeof(*c->want_gen));
		c->want = calloc(nt, sizeof(*c->want));
		c->taken = calloc(nt, sizeof(*c->taken));
		if (!c->want_gen || !c->want || !c->taken)
			orc = MSGBUS_ENOMEM;
	}
	if (orc)
		mb_link_log(c, "closing: cannot open a handle on the bus", msgbus_strerror(orc));
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
		bool shook = mb_link_handshake(c, max_frame);
		if (shook && watch && watch->sub)
			mb_watch_settle(ls, watch);
		if (shook &&
		    pthread_create(&c->tx, NULL, mb_link_tx_main, c) == 0) {
			if (pthread_create(&c->rr, NULL, mb_link_rr_main, c) == 0) {
				threads = true;
				atomic_fetch_add(&ls->up, 1);
				if (again)
					atomic_fetch_add(&ls->reconnects, 1);
				mb_link_rx_loop(c);
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
		mb_link_tx_abandon_locked(c);
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
				if (!mb_link_is_bridge(c->lb, m->origin) && mb_link_peer_wants(c, m->subject))
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
