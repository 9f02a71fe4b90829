/* link.h - links between buses over TCP: shared by tcp.c and link.c. */
#ifndef MB_LINK_H
#define MB_LINK_H

#include "shm/handle.h"

struct mb_conn;
struct mb_nats;

/* Live connections, for shutdown at close and for statistics. */
struct mb_conn_ref {
	struct mb_conn *conn;
	int fd;
	struct mb_conn_ref *next;
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
	struct mb_nats *nats; /* nats:// links (nats.c) */
	_Atomic uint32_t up;
	_Atomic uint64_t sent, received, undelivered, reconnects, bad_frames;
};

/* The connecting side only: at a drop, before the link counts as down,
 * the connection starts *watch (lossy, on the bridge handle watch_bus) so
 * that nothing published after the drop escapes the count of undelivered. */
struct mb_watch {
	msgbus_bus *bus;
	msgbus_sub *sub;
	char **wanted; /* the peer's patterns at the drop */
	uint32_t nwanted;
	uint64_t dropped_seen;
	uint64_t *skip; /* per publishing participant: sequence numbers below
	                 * were counted at the drop */
};
/* Count what the watch saw that the peer wanted (tcp.c). */
void mb_watch_count(struct mb_links *ls, struct mb_watch *w);
/* Count a last time and stop watching: the peer is back. */
void mb_watch_settle(struct mb_links *ls, struct mb_watch *w);

/*
 * What a peer may take (msgbus_listen(3)): set per listener or connector
 * by the URL's query, checked in tcp.c against these bounds.
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

/* How to run one connection (mb_conn_run). */
struct mb_conn_opts {
	const char *peer;   /* for log lines */
	bool again;         /* a reconnection: count it */
	struct mb_watch *watch; /* the connecting side's, or NULL */
	uint32_t max_patterns;
	/* Decremented once the handshake ends, either way; may be NULL. */
	_Atomic uint32_t *pending;
};

/* Run one connection on fd until it drops or the bus closes; closes fd.
 * true if the handshake completed. */
bool mb_conn_run(struct mb_links *ls, int fd, const struct mb_conn_opts *o);
/* A line on standard error, at most a few per second per process: a peer
 * that fails again and again must not flood the log. */
void mb_link_logf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void mb_conn_register(struct mb_links *ls, struct mb_conn *c, int fd);
void mb_conn_unregister(struct mb_links *ls, struct mb_conn *c);
void mb_conn_shutdown_all(struct mb_links *ls);
void mb_links_stop(msgbus_bus *b);
void mb_conns_count(struct mb_links *ls, uint32_t *subs, uint32_t *svcs);
/* After a publish on b: b's links send inline (tcp.c, link.c); never waits. */
void mb_links_published(msgbus_bus *b);
void mb_conn_tx_inline(struct mb_conn *c);
/* A thread spinning in msgbus_recv on b reads b's links inline; before it
 * sleeps, it hands them back to their rx threads (tcp.c, link.c). */
void mb_links_spin(msgbus_bus *b);
void mb_links_unspin(msgbus_bus *b);
void mb_conn_rx_inline(struct mb_conn *c, uint64_t now);
void mb_conn_rx_unspin(struct mb_conn *c);
/* Requests across a link without the rr and worker threads (link_rr.c;
 * tcp.c installs them as the call_direct and replied link hooks). */
struct mb_req_hdr;
int mb_conn_call_direct(struct mb_conn *c, const char *service, const struct mb_req_hdr *hdr,
                        const void *data, size_t len);
bool mb_conn_reply_inline(struct mb_conn *c, uint32_t to, uint32_t entry);

#endif
