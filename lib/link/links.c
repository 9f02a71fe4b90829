/*
 * links.c - the links of a bus handle: msgbus_listen and msgbus_connect
 * (tcp:// URL parsing, accepting, connecting again with backoff after a
 * link drops; other schemes in their own files), the link hooks through
 * which the handle's publishers, requesters and workers use its links
 * inline, statistics, and stopping them at close. Each connection runs in
 * conn.c; this file only decides when connections start and stop.
 */
#include "link/nats_rr.h"
#include "link/nats_tx.h"
#include "platform/error.h"
#include "shm/subject.h"
#include "link/links.h"
#include "link/conn.h"
#include "link/conn_state.h"
#include "link/link_log.h"
#include "link/link_recv.h"
#include "link/link_rr.h"
#include "link/link_send.h"
#include "link/nats.h"
#include "link/nats_info.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mb_listener {
	struct mb_links *ls;
	int fd;
	pthread_t thread;
	struct mb_link_limits lim;
	char *url; /* as given, for msgbus_links */
	/* Its connections (handshakes included), and its handshakes: counted
	 * by the listener thread at accept, given back by the connection. */
	_Atomic uint32_t conns, pending;
	struct mb_listener *next;
};

struct mb_accepted {
	pthread_t thread;
	int fd;
	_Atomic bool done;
	struct mb_listener *l;
	struct mb_link_rec rec; /* done: counted in ls->ended, not listed */
	char peer[96];
	struct mb_accepted *next;
};

struct mb_connector {
	struct mb_links *ls;
	char host[256], port[8], peer[280];
	struct mb_link_limits lim;
	struct mb_link_rec rec;
	pthread_t thread;
	struct mb_connector *next;
};

/* A connection that drops within this long of its handshake failed: the
 * connector backs off as if it had been refused. */
#define STABLE_MS 5000u
#define BACKOFF_MIN_MS 50u
#define BACKOFF_MAX_MS 2000u

/* A decimal in [1, max]; false otherwise. */
static bool parse_limit(const char *v, size_t len, uint32_t max, uint32_t *out)
{
	uint64_t x = 0;
	if (len == 0 || len > 10 || strspn(v, "0123456789") < len)
		return false;
	for (size_t i = 0; i < len; i++)
		x = x * 10 + (uint64_t)(v[i] - '0');
	if (x < 1 || x > max)
		return false;
	*out = (uint32_t)x;
	return true;
}

/* The query of a tcp:// URL: KEY=N pairs joined by '&'. max_conns and
 * max_pending only where listening. */
static int parse_query(const char *q, bool listening, struct mb_link_limits *lim)
{
	*lim = (struct mb_link_limits){ MB_LINK_MAX_CONNS, MB_LINK_MAX_PENDING,
	                                MB_LINK_MAX_PATTERNS };
	if (!q)
		return 0;
	while (*q) {
		size_t len = strcspn(q, "&");
		const char *eq = memchr(q, '=', len);
		if (!eq)
			return MSGBUS_EINVAL;
		size_t klen = (size_t)(eq - q), vlen = len - klen - 1;
		bool ok;
		if (klen == 9 && !strncmp(q, "max_conns", klen) && listening)
			ok = parse_limit(eq + 1, vlen, MB_LINK_MAX_CONNS_MAX, &lim->max_conns);
		else if (klen == 11 && !strncmp(q, "max_pending", klen) && listening)
			ok = parse_limit(eq + 1, vlen, MB_LINK_MAX_PENDING_MAX, &lim->max_pending);
		else if (klen == 12 && !strncmp(q, "max_patterns", klen))
			ok = parse_limit(eq + 1, vlen, MB_LINK_MAX_PATTERNS_MAX, &lim->max_patterns);
		else
			ok = false;
		if (!ok)
			return MSGBUS_EINVAL;
		q += len + (q[len] == '&');
		if (q[-1] == '&' && !*q)
			return MSGBUS_EINVAL; /* a trailing '&' */
	}
	return 0;
}

/* tcp://HOST:PORT, tcp://[V6]:PORT, either followed by ?QUERY. */
static int parse_tcp_url(const char *url, bool listening, char *host, size_t hsize, char *port,
                         struct mb_link_limits *lim)
{
	if (!url || strncmp(url, "tcp://", 6))
		return url && strstr(url, "://") ? MSGBUS_ENOTSUP : MSGBUS_EINVAL;
	const char *h = url + 6, *colon, *q = strchr(h, '?');
	size_t hlen;
	if (*h == '[') {
		const char *end = strchr(h, ']');
		if (!end || end[1] != ':')
			return MSGBUS_EINVAL;
		h++;
		hlen = (size_t)(end - h);
		colon = end + 1;
	} else {
		colon = h + strcspn(h, "?");
		while (colon > h && *colon != ':')
			colon--;
		if (*colon != ':')
			return MSGBUS_EINVAL;
		hlen = (size_t)(colon - h);
	}
	const char *p = colon + 1;
	size_t plen = q ? (size_t)(q - p) : strlen(p);
	if (q && q < p)
		return MSGBUS_EINVAL;
	if (hlen >= hsize || plen < 1 || plen > 5 || strspn(p, "0123456789") < plen ||
	    atoi(p) > 65535)
		return MSGBUS_EINVAL;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	memcpy(port, p, plen);
	port[plen] = '\0';
	if (q && !q[1])
		return MSGBUS_EINVAL; /* an empty query */
	return parse_query(q ? q + 1 : NULL, listening, lim);
}

/* call_direct (reqrep/call.c): a call of b that a link of b serves goes out
 * from the caller's thread. The list stays locked while it is sent, so
 * the connection stays (and its pending requests are failed at its end). */
static int links_call_direct(msgbus_bus *b, const char *service, const struct mb_req_hdr *hdr,
                             const void *data, size_t len)
{
	/* Pairs with the release in links_of(). */
	struct mb_links *ls = __atomic_load_n(&b->links, __ATOMIC_ACQUIRE);
	if (!ls || !atomic_load_explicit(&ls->up, memory_order_relaxed))
		return MSGBUS_ENOENT;
	int rc = MSGBUS_ENOENT;
	pthread_mutex_lock(&ls->lock);
	for (struct mb_conn_ref *cr = ls->conns; cr && rc == MSGBUS_ENOENT; cr = cr->next)
		rc = mb_conn_call_direct(cr->conn, service, hdr, data, len);
	if (rc == MSGBUS_ENOENT)
		rc = mb_nats_call_direct(ls, service, hdr, data, len); /* nats_rr.c */
	pthread_mutex_unlock(&ls->lock);
	return rc;
}

/*
 * The hooks a serve worker calls (spin, unspin, replied) may run while
 * msgbus_close stops the links: the worker is joined only after. They
 * look at b->links between links_enter and links_leave, and
 * mb_links_stop frees the links only once it has cleared b->links and
 * seen no such look under way.
 */
static struct mb_links *links_enter(msgbus_bus *b)
{
	/* seq_cst, both: the Dekker pair with mb_links_stop's store of NULL
	 * and its load of the count. Also pairs with the release in
	 * links_of(). */
	atomic_fetch_add_explicit(&b->link_users, 1, memory_order_seq_cst);
	return __atomic_load_n(&b->links, __ATOMIC_SEQ_CST);
}

static void links_leave(msgbus_bus *b)
{
	/* Release: our use of the links before mb_links_stop frees them
	 * (its load of the count). */
	atomic_fetch_sub_explicit(&b->link_users, 1, memory_order_release);
}

/* replied (reqrep/serve.c): a worker of b answered a link of b's call. */
static bool links_replied(msgbus_bus *b, uint32_t to, uint32_t entry)
{
	struct mb_links *ls = links_enter(b);
	bool done = false;
	if (ls && atomic_load_explicit(&ls->up, memory_order_relaxed) &&
	    !pthread_mutex_trylock(&ls->lock)) {
		for (struct mb_conn_ref *cr = ls->conns; cr && !done; cr = cr->next)
			done = mb_conn_reply_inline(cr->conn, to, entry);
		if (!done)
			done = mb_nats_replied(ls, to, entry); /* nats_rr.c */
		pthread_mutex_unlock(&ls->lock);
	}
	links_leave(b);
	return done;
}

/* direct (pubsub/route.c): a message of b for one link's proxy alone is
 * queued by that link from the publisher's thread. The door's wlock
 * keeps the connection (and its bus handle) meanwhile; a busy link leaves
 * the message to the proxy, unless the publisher may block. */
static bool links_direct(msgbus_bus *b, uint32_t slot, uint32_t gen, const char *subject,
                         size_t slen, const void *data, size_t len, bool may_block)
{
	/* Pairs with the release in links_of(). */
	struct mb_links *ls = __atomic_load_n(&b->links, __ATOMIC_ACQUIRE);
	if (!ls)
		return false;
	/* No ls->lock: doors outlive their connections (conn_state.h).
	 * Acquire: pairs with the release in link_set.c:mb_conn_door_take(). */
	for (struct mb_conn_door *d = atomic_load_explicit(&ls->doors, memory_order_acquire); d;
	     d = d->next)
		/* Relaxed: a hint, checked under wlock. */
		if (atomic_load_explicit(&d->proxy_slot, memory_order_relaxed) == slot)
			return mb_conn_tx_direct(d, slot, gen, subject, slen, data, len,
			                         may_block);
	return false;
}

/* How publish and call reach the links of a handle (shm/handle.h). */
static const struct mb_link_hooks link_hooks = {
	.published = mb_links_published,
	.direct = links_direct,
	.no_worker = mb_nats_no_worker,
	.call_direct = links_call_direct,
	.replied = links_replied,
	.spin = mb_links_spin,
	.unspin = mb_links_unspin,
	.await_reply = mb_nats_await_reply, /* nats.c */
};

static struct mb_links *links_of(msgbus_bus *b)
{
	pthread_mutex_lock(&b->lock);
	if (!b->links) {
		struct mb_links *ls = calloc(1, sizeof(*ls));
		if (ls) {
			ls->bus = b;
			pthread_mutex_init(&ls->lock, NULL);
			/* Tells a link to itself apart from one to a peer. */
			ls->node_id = mb_now_ns() ^ (uint64_t)(uintptr_t)ls << 20;
		}
		/* Read without the lock by publishers (mb_links_published).
		 * Pairs with the acquires of b->links below and in
		 * nats_rr.c:mb_nats_no_worker(): *ls is initialized first. */
		__atomic_store_n(&b->links, ls, __ATOMIC_RELEASE);
		/* Pairs with the acquires in pubsub/publish.c:msgbus_publish(),
		 * reqrep/call.c:mb_call_start_listed() and
		 * reqrep/serve.c:respond(): they see the table. */
		if (ls)
			atomic_store_explicit(&b->link_hooks, &link_hooks,
			                      memory_order_release);
	}
	pthread_mutex_unlock(&b->lock);
	return b->links;
}

/*
 * After a publish on b (publish.c): when b made links, send inline what
 * they carry, in this thread, rather than wait for their tx threads to
 * wake. Only what can be done at once: a busy list or link is skipped.
 */
void mb_links_published(msgbus_bus *b)
{
	/* Pairs with the release in links_of(). */
	struct mb_links *ls = __atomic_load_n(&b->links, __ATOMIC_ACQUIRE);
	if (!ls || !atomic_load_explicit(&ls->up, memory_order_relaxed))
		return;
	/* Every tcp:// link's tx thread at work (a stream), none asleep or
	 * napping, and no nats:// link: they take what we committed at
	 * their next pass; nothing to do here, not even the lock (a fence
	 * per message). seq_cst: the second half of the pair in
	 * link_send.c:tx_count_on (after inbox.c:put_done's light fence,
	 * the first load after our commit). */
	if (!atomic_load_explicit(&ls->tx_asleep, memory_order_seq_cst) &&
	    !atomic_load_explicit(&ls->nats_made, memory_order_relaxed))
		return;
	if (pthread_mutex_trylock(&ls->lock))
		return;
	for (struct mb_conn_ref *cr = ls->conns; cr; cr = cr->next)
		mb_conn_tx_inline(cr->conn);
	mb_nats_published(ls); /* nats_tx.c */
	pthread_mutex_unlock(&ls->lock);
}

/*
 * A thread spinning in msgbus_recv on b (recv.c), now and then: read b's
 * links inline, so what a peer sends reaches it without waking anyone.
 * Only what can be done at once. mb_links_unspin: it stops spinning.
 */
void mb_links_spin(msgbus_bus *b)
{
	struct mb_links *ls = links_enter(b);
	if (ls && atomic_load_explicit(&ls->up, memory_order_relaxed) &&
	    !pthread_mutex_trylock(&ls->lock)) {
		uint64_t now = mb_now_ns();
		for (struct mb_conn_ref *cr = ls->conns; cr; cr = cr->next)
			mb_conn_rx_inline(cr->conn, now);
		pthread_mutex_unlock(&ls->lock);
	}
	links_leave(b);
}

void mb_links_unspin(msgbus_bus *b)
{
	struct mb_links *ls = links_enter(b);
	if (ls) {
		pthread_mutex_lock(&ls->lock);
		for (struct mb_conn_ref *cr = ls->conns; cr; cr = cr->next)
			mb_conn_rx_unspin(cr->conn);
		pthread_mutex_unlock(&ls->lock);
	}
	links_leave(b);
}

static void *accepted_main(void *arg)
{
	struct mb_accepted *a = arg;
	mb_thread_name("msgbus-rx");
	struct mb_listener *l = a->l;
	struct mb_conn_opts o = { .peer = a->peer, .rec = &a->rec,
	                          .max_patterns = l->lim.max_patterns, .pending = &l->pending };
	mb_conn_run(l->ls, a->fd, &o);
	/* Relaxed: a count, and a flag whose reader joins this thread
	 * (pthread_join orders the rest) or reads it under ls->lock, as
	 * msgbus_links does: the counters move to ended at once with it. */
	atomic_fetch_sub_explicit(&l->conns, 1, memory_order_relaxed);
	pthread_mutex_lock(&l->ls->lock);
	mb_link_ctr_add(&l->ls->ended, &a->rec.ctr);
	atomic_store_explicit(&a->done, true, memory_order_relaxed);
	pthread_mutex_unlock(&l->ls->lock);
	return NULL;
}

/* Join connections that have ended. Caller holds ls->lock. */
static void reap_accepted(struct mb_links *ls)
{
	for (struct mb_accepted **pp = &ls->accepted; *pp;) {
		struct mb_accepted *a = *pp;
		if (!atomic_load_explicit(&a->done, memory_order_relaxed)) { /* see accepted_main */
			pp = &a->next;
			continue;
		}
		*pp = a->next;
		pthread_join(a->thread, NULL);
		free(a);
	}
}

/* Take a connection for l if its limits allow; false: close it now. */
static bool admit(struct mb_listener *l, const char *from)
{
	const char *full = NULL;
	/* Relaxed: counts; only this thread adds to them. */
	if (atomic_load_explicit(&l->conns, memory_order_relaxed) >= l->lim.max_conns)
		full = "max_conns connections";
	else if (atomic_load_explicit(&l->pending, memory_order_relaxed) >= l->lim.max_pending)
		full = "max_pending handshakes";
	if (full) {
		mb_link_logf("msgbus: link accepted from %s: closing: the listener has %s\n", from,
		             full);
		return false;
	}
	/* Only this thread adds: the checks above cannot be overtaken. */
	atomic_fetch_add_explicit(&l->conns, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&l->pending, 1, memory_order_relaxed);
	return true;
}

static void start_accepted(struct mb_listener *l, int fd, const char *from)
{
	struct mb_links *ls = l->ls;
	struct mb_accepted *a = admit(l, from) ? calloc(1, sizeof(*a)) : NULL;
	if (!a) {
		mb_close_fd(fd);
		return;
	}
	a->l = l;
	a->fd = fd;
	a->rec.state = MSGBUS_LINK_CONNECTING;
	snprintf(a->rec.peer, sizeof(a->rec.peer), "%s", from);
	snprintf(a->peer, sizeof(a->peer), "accepted from %s", from);
	pthread_mutex_lock(&ls->lock);
	reap_accepted(ls);
	if (atomic_load_explicit(&ls->closing, memory_order_relaxed) || /* see mb_links_stop */
	    pthread_create(&a->thread, NULL, accepted_main, a)) {
		mb_close_fd(fd);
		atomic_fetch_sub_explicit(&l->conns, 1, memory_order_relaxed);
		atomic_fetch_sub_explicit(&l->pending, 1, memory_order_relaxed);
		free(a);
	} else {
		a->next = ls->accepted;
		ls->accepted = a;
	}
	pthread_mutex_unlock(&ls->lock);
}

static void *listener_main(void *arg)
{
	struct mb_listener *l = arg;
	mb_thread_name("msgbus-listen");
	struct mb_links *ls = l->ls;
	while (!atomic_load_explicit(&ls->closing, memory_order_relaxed)) {
		int fd;
		char from[80];
		int rc = mb_tcp_accept(l->fd, &fd, from, sizeof(from));
		if (rc) {
			if (rc == -EINTR || rc == -ECONNABORTED || rc == -EMFILE || rc == -ENFILE) {
				mb_nap_us(10000);
				continue;
			}
			break; /* shut down */
		}
		start_accepted(l, fd, from);
	}
	return NULL;
}

int msgbus_listen(msgbus_bus *bus, const char *url, int *port)
{
	char host[256], portstr[8];
	struct mb_link_limits lim;
	if (!bus)
		return MSGBUS_EINVAL;
	if (mb_closing(bus))
		return MSGBUS_ECLOSED; /* msgbus_shutdown(3): no new link threads */
	int rc = parse_tcp_url(url, true, host, sizeof(host), portstr, &lim);
	if (rc)
		return rc;
	struct mb_links *ls = links_of(bus);
	struct mb_listener *l = ls ? calloc(1, sizeof(*l)) : NULL;
	if (!l)
		return MSGBUS_ENOMEM;
	l->lim = lim;
	l->url = strdup(url);
	int bound;
	rc = mb_tcp_listen(host, portstr, &l->fd, &bound);
	if (rc || !l->url) {
		free(l->url);
		if (!rc)
			mb_close_fd(l->fd);
		free(l);
		if (!rc)
			return MSGBUS_ENOMEM;
		return mb_syserr(rc);
	}
	l->ls = ls;
	if (pthread_create(&l->thread, NULL, listener_main, l)) {
		mb_close_fd(l->fd);
		free(l->url);
		free(l);
		return MSGBUS_ENOMEM;
	}
	pthread_mutex_lock(&ls->lock);
	l->next = ls->listeners;
	ls->listeners = l;
	pthread_mutex_unlock(&ls->lock);
	if (port)
		*port = bound;
	return 0;
}

/* Sleep ms in short steps, so closing the bus is not held up. */
static void backoff_sleep(struct mb_links *ls, unsigned ms)
{
	for (unsigned t = 0; t < ms && !atomic_load_explicit(&ls->closing, memory_order_relaxed);
	     t += 20)
		mb_nap_us(20000);
}

static void *connector_main(void *arg)
{
	struct mb_connector *cn = arg;
	mb_thread_name("msgbus-rx");
	struct mb_links *ls = cn->ls;
	unsigned delay = BACKOFF_MIN_MS;
	bool was_up = false;
	/* The watch lives on a bridge handle of our own, so it is never
	 * advertised to other links as local interest. */
	struct mb_watch watch = { NULL, NULL, NULL, 0, 0, NULL };
	if (ls->bus->bus_hooks->reopen(ls->bus, &watch.bus) == 0)
		/* Relaxed: see conn_state.h:mb_link_is_bridge(). */
		atomic_fetch_or_explicit(&mb_part_at(watch.bus, watch.bus->self)->flags,
		                         MB_PARTF_BRIDGE, memory_order_relaxed);
	else
		watch.bus = NULL;
	while (!atomic_load_explicit(&ls->closing, memory_order_relaxed)) {
		int fd;
		uint64_t start = mb_now_ns();
		struct mb_conn_opts o = { .peer = cn->peer, .rec = &cn->rec, .again = was_up,
		                          .watch = &watch, .max_patterns = cn->lim.max_patterns };
		mb_link_rec_set(ls, &cn->rec, MSGBUS_LINK_CONNECTING, "");
		if (mb_tcp_connect(cn->host, cn->port, &fd) == 0 && mb_conn_run(ls, fd, &o)) {
			was_up = true;
			/* A link that lasted is no failure: connect again at once.
			 * One that drops soon after its handshake is (a peer that
			 * answers HELLO, then junk): back off as if refused. */
			if (mb_now_ns() - start >= STABLE_MS * 1000000ull) {
				delay = BACKOFF_MIN_MS;
				continue;
			}
		}
		mb_link_rec_set(ls, &cn->rec, MSGBUS_LINK_BACKOFF, "");
		backoff_sleep(ls, delay); /* refused, or dropped early */
		delay = delay * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : delay * 2;
		if (watch.sub)
			mb_watch_count(&cn->rec.ctr, &watch);
	}
	if (watch.sub)
		mb_watch_settle(&cn->rec.ctr, &watch);
	if (watch.bus)
		watch.bus->bus_hooks->close(watch.bus);
	return NULL;
}

/* Link kinds other than tcp://, by URL scheme: each connects in its own
 * files and is stopped at close (mb_links_stop). */
static const struct link_kind {
	const char *scheme;
	int (*connect)(struct mb_links *ls, const char *url);
	void (*stop)(struct mb_links *ls);
} link_kinds[] = {
	{ "nats://", mb_nats_connect_url, mb_nats_stop },
};
#define NKINDS (sizeof(link_kinds) / sizeof(link_kinds[0]))

int msgbus_connect(msgbus_bus *bus, const char *url)
{
	char host[256], port[8];
	struct mb_link_limits lim;
	if (!bus)
		return MSGBUS_EINVAL;
	if (mb_closing(bus))
		return MSGBUS_ECLOSED; /* msgbus_shutdown(3): no new link threads */
	for (size_t k = 0; url && k < NKINDS; k++) {
		if (!strncmp(url, link_kinds[k].scheme, strlen(link_kinds[k].scheme))) {
			struct mb_links *ls = links_of(bus);
			if (!ls)
				return MSGBUS_ENOMEM;
			/* Relaxed: set before the link exists; publishers
			 * that miss it find the link not up yet. */
			atomic_store_explicit(&ls->nats_made, true, memory_order_relaxed);
			return link_kinds[k].connect(ls, url);
		}
	}
	int rc = parse_tcp_url(url, false, host, sizeof(host), port, &lim);
	if (rc)
		return rc;
	struct mb_links *ls = links_of(bus);
	struct mb_connector *cn = ls ? calloc(1, sizeof(*cn)) : NULL;
	if (!cn)
		return MSGBUS_ENOMEM;
	cn->ls = ls;
	cn->lim = lim;
	cn->rec.state = MSGBUS_LINK_CONNECTING;
	snprintf(cn->host, sizeof(cn->host), "%s", host);
	snprintf(cn->port, sizeof(cn->port), "%s", port);
	snprintf(cn->peer, sizeof(cn->peer), "%s", url);
	if (pthread_create(&cn->thread, NULL, connector_main, cn)) {
		free(cn);
		return MSGBUS_ENOMEM;
	}
	pthread_mutex_lock(&ls->lock);
	cn->next = ls->connectors;
	ls->connectors = cn;
	pthread_mutex_unlock(&ls->lock);
	return 0;
}

int msgbus_link_stats_get(msgbus_bus *bus, msgbus_link_stats *st)
{
	if (!bus || !st)
		return MSGBUS_EINVAL;
	memset(st, 0, sizeof(*st));
	/* Pairs with the release in links_of(): another thread may be
	 * making the handle's first link. */
	struct mb_links *ls = __atomic_load_n(&bus->links, __ATOMIC_ACQUIRE);
	if (!ls)
		return 0;
	/* Acquire: pairs with the release decrement at the end of
	 * mb_conn_run, so a link counted down has given its slots back. */
	st->links_up = atomic_load_explicit(&ls->up, memory_order_acquire);
	mb_conns_count(ls, &st->remote_subs, &st->remote_services);
	/* The nats:// links' and the ended links', then every tcp:// link's. */
	struct mb_link_ctr sum = { 0 };
	pthread_mutex_lock(&ls->lock);
	mb_nats_ctr(ls, &sum);
	mb_link_ctr_add(&sum, &ls->ended);
	for (struct mb_connector *cn = ls->connectors; cn; cn = cn->next)
		mb_link_ctr_add(&sum, &cn->rec.ctr);
	for (struct mb_accepted *a = ls->accepted; a; a = a->next)
		if (!atomic_load_explicit(&a->done, memory_order_relaxed)) /* see accepted_main */
			mb_link_ctr_add(&sum, &a->rec.ctr);
	pthread_mutex_unlock(&ls->lock);
	st->sent = sum.sent;
	st->received = sum.received;
	st->undelivered = sum.undelivered;
	st->reconnects = sum.reconnects;
	st->bad_frames = sum.bad_frames;
	return 0;
}

/* One tcp:// link's record. Caller holds ls->lock. */
static void tcp_info(struct mb_links *ls, const char *url, uint32_t kind,
                     struct mb_link_rec *r, msgbus_link_info *li)
{
	memset(li, 0, sizeof(*li));
	snprintf(li->url, sizeof(li->url), "%s", url);
	li->kind = kind;
	li->state = r->state;
	if (r->state == MSGBUS_LINK_UP)
		snprintf(li->peer, sizeof(li->peer), "%.*s", (int)sizeof(li->peer) - 1, r->peer);
	bool declared;
	mb_conn_rec_count(ls, r, &li->remote_subs, &li->remote_services, &declared);
	if (declared && r->state == MSGBUS_LINK_UP)
		li->flags |= MSGBUS_LINKINFO_DECLARED;
	struct mb_link_ctr c = { 0 };
	mb_link_ctr_add(&c, &r->ctr);
	li->sent = c.sent;
	li->received = c.received;
	li->undelivered = c.undelivered;
	li->reconnects = c.reconnects;
	li->bad_frames = c.bad_frames;
}

int mb_links_list(msgbus_bus *bus, msgbus_link_info *arr, size_t cap, size_t *n)
{
	size_t k = 0;
	/* Pairs with the release in links_of(). */
	struct mb_links *ls = __atomic_load_n(&bus->links, __ATOMIC_ACQUIRE);
	if (!ls) {
		*n = 0;
		return 0;
	}
	pthread_mutex_lock(&ls->lock);
	for (struct mb_connector *cn = ls->connectors; cn; cn = cn->next, k++)
		if (k < cap)
			tcp_info(ls, cn->peer, MSGBUS_LINK_TCP_CONNECT, &cn->rec, &arr[k]);
	for (struct mb_accepted *a = ls->accepted; a; a = a->next) {
		if (atomic_load_explicit(&a->done, memory_order_relaxed)) /* see accepted_main */
			continue;
		if (k < cap)
			tcp_info(ls, a->l->url, MSGBUS_LINK_TCP_ACCEPT, &a->rec, &arr[k]);
		k++;
	}
	k += mb_nats_list(ls, k < cap ? arr + k : NULL, k < cap ? cap - k : 0);
	pthread_mutex_unlock(&ls->lock);
	*n = k;
	return 0;
}

/* At close: stop accepting and connecting, drop every connection, join. */
void mb_links_stop(msgbus_bus *b)
{
	struct mb_links *ls = b->links;
	if (!ls)
		return;
	/* Relaxed: a stop flag that publishes nothing; the threads it stops
	 * are joined below, and mb_conn_register reads it under ls->lock,
	 * which mb_conn_shutdown_all takes after this store. */
	atomic_store_explicit(&ls->closing, true, memory_order_relaxed);
	pthread_mutex_lock(&ls->lock);
	for (struct mb_listener *l = ls->listeners; l; l = l->next)
		mb_sock_shutdown(l->fd);
	pthread_mutex_unlock(&ls->lock);
	mb_conn_shutdown_all(ls);
	for (size_t k = 0; k < NKINDS; k++)
		link_kinds[k].stop(ls);
	for (struct mb_listener *l = ls->listeners; l; l = l->next)
		pthread_join(l->thread, NULL);
	while (ls->connectors) {
		struct mb_connector *cn = ls->connectors;
		ls->connectors = cn->next;
		mb_conn_shutdown_all(ls);
		pthread_join(cn->thread, NULL);
		free(cn);
	}
	mb_conn_shutdown_all(ls);
	/* Join outside the lock: an ending connection takes it to leave. */
	pthread_mutex_lock(&ls->lock);
	struct mb_accepted *acc = ls->accepted;
	ls->accepted = NULL;
	pthread_mutex_unlock(&ls->lock);
	while (acc) {
		struct mb_accepted *a = acc;
		acc = a->next;
		pthread_join(a->thread, NULL);
		free(a);
	}
	/* Freed last: a connection gives its counts back to its listener. */
	while (ls->listeners) {
		struct mb_listener *l = ls->listeners;
		ls->listeners = l->next;
		mb_close_fd(l->fd);
		free(l->url);
		free(l);
	}
	/* seq_cst, both: see links_enter. A serve worker may still look. */
	__atomic_store_n(&b->links, NULL, __ATOMIC_SEQ_CST);
	while (atomic_load_explicit(&b->link_users, memory_order_seq_cst))
		mb_yield_cpu();
	mb_conn_doors_free(ls);
	pthread_mutex_destroy(&ls->lock);
	free(ls);
}
