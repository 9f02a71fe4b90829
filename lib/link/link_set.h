/*
 * link_set.h - the links of one bus handle as every link file sees them:
 * their counters, the limits a peer is held to, and the list of live
 * connections (link_set.c). links.c starts and stops them; conn.c runs one.
 */
#ifndef MB_LINK_SET_H
#define MB_LINK_SET_H

#include "shm/handle.h"

struct mb_conn;
struct mb_conn_door;
struct mb_nats;

/* Live connections, for shutdown at close and for statistics. */
struct mb_conn_ref {
	struct mb_conn *conn;
	int fd;
	struct mb_conn_ref *next;
};

/* What one link counts (msgbus_links(3)). Relaxed everywhere: statistics. */
struct mb_link_ctr {
	_Atomic uint64_t sent, received, undelivered, reconnects, bad_frames;
};

/* One tcp:// link as msgbus_links(3) lists it: a connector's (kept across
 * its connections) or an accepted connection's. state (MSGBUS_LINK_*) and
 * peer change under ls->lock (mb_link_rec_set). */
struct mb_link_rec {
	struct mb_link_ctr ctr;
	uint32_t state;
	char peer[80];
};

/* The links of one bus handle. */
struct mb_links {
	msgbus_bus *bus;
	pthread_mutex_t lock;
	_Atomic bool closing;
	uint64_t node_id;
	struct mb_listener *listeners;
	struct mb_connector *connectors;
	struct mb_accepted *accepted;
	struct mb_conn_ref *conns;
	/* Every door a connection had (conn_state.h): pushed under lock,
	 * read without it by publishers. */
	_Atomic(struct mb_conn_door *) doors;
	struct mb_nats *nats; /* nats:// links (nats.c) */
	/* Counters: relaxed everywhere, statistics only (up is also a hint
	 * for the inline paths, which re-check under ls->lock). Each tcp://
	 * link counts in its mb_link_rec; the nats:// links count here, and
	 * accepted links that ended are added to ended. */
	_Atomic uint32_t up;
	/* tcp:// links whose tx thread sleeps or naps (link_send.c:
	 * tx_count_on), and whether a nats:// link was ever made here: while
	 * neither, a publish has nothing to send inline and skips the list
	 * and its lock (links.c:mb_links_published). */
	_Atomic uint32_t tx_asleep;
	_Atomic bool nats_made;
	_Atomic uint64_t sent, received, undelivered, reconnects, bad_frames;
	struct mb_link_ctr ended;
};

/*
 * What a peer may take (msgbus_listen(3)): set per listener or connector
 * by the URL's query, checked in links.c against these bounds.
 *  max_conns    connections of one listener at once, handshakes included
 *  max_pending  of which still in the handshake
 *  max_patterns SUB patterns and SERVE names one peer may declare; more
 *               is a protocol error. A peer bus advertises its own
 *               subscriptions and services, which its max_subs bounds, so
 *               the default is the largest max_subs.
 */
struct mb_link_limits {
	uint32_t max_conns, max_pending, max_patterns;
};
#define MB_LINK_MAX_CONNS 16u
#define MB_LINK_MAX_CONNS_MAX MB_MAX_PARTICIPANTS
#define MB_LINK_MAX_PENDING 8u
#define MB_LINK_MAX_PENDING_MAX MB_MAX_PARTICIPANTS
#define MB_LINK_MAX_PATTERNS MB_MAX_SUBS
#define MB_LINK_MAX_PATTERNS_MAX 65536u
/* A link creates a subject only while this many entries of the subject
 * table (of n) stay free after it: a quarter, rounded up. The rest is for
 * local publishers, whatever the peers send. */
#define MB_LINK_SUBJECTS_KEPT(n) (((n) + 3u) / 4u)

/* The list of live connections (conn.c registers each for its life),
 * for shutdown at close and for statistics. */
void mb_conn_register(struct mb_links *ls, struct mb_conn *c, int fd);
void mb_conn_unregister(struct mb_links *ls, struct mb_conn *c);
void mb_conn_shutdown_all(struct mb_links *ls);
/* A door for connection c: a free one, or a new one (NULL: no memory). */
struct mb_conn_door *mb_conn_door_take(struct mb_links *ls, struct mb_conn *c);
/* c ends: its door closes and waits for the next connection. */
void mb_conn_door_give(struct mb_links *ls, struct mb_conn_door *d);
/* At the end of mb_links_stop, every connection gone. */
void mb_conn_doors_free(struct mb_links *ls);
/* The peers' patterns and services, summed over the live connections. */
void mb_conns_count(struct mb_links *ls, uint32_t *subs, uint32_t *svcs);
/* Set a tcp:// link's state and peer (NULL: keep it; "" clear it), under
 * ls->lock. Never called with ls->lock held. */
void mb_link_rec_set(struct mb_links *ls, struct mb_link_rec *r, uint32_t state,
                     const char *peer);
/* *to += *from. Relaxed: statistics. */
static inline void mb_ctr_add(_Atomic uint64_t *to, _Atomic uint64_t *from)
{
	atomic_fetch_add_explicit(to, atomic_load_explicit(from, memory_order_relaxed),
	                          memory_order_relaxed);
}
/* Add a link's counters to sum; or five counters kept elsewhere. */
void mb_link_ctr_add(struct mb_link_ctr *sum, struct mb_link_ctr *c);
void mb_link_ctr_add_each(struct mb_link_ctr *sum, _Atomic uint64_t *sent,
                          _Atomic uint64_t *received, _Atomic uint64_t *undelivered,
                          _Atomic uint64_t *reconnects, _Atomic uint64_t *bad_frames);
/* The peer's patterns and services on the live connection of rec, if
 * any, and whether it has declared all it had at the connection
 * (conn_state.h: peer_declared). Caller holds ls->lock. */
void mb_conn_rec_count(struct mb_links *ls, const struct mb_link_rec *rec, uint32_t *subs,
                       uint32_t *svcs, bool *declared);
/* Whether a link may publish on subject (len bytes) on b: it exists, or
 * the table keeps MB_LINK_SUBJECTS_KEPT free after creating it. */
bool mb_link_may_create(msgbus_bus *b, const char *subject, size_t len);

#endif
