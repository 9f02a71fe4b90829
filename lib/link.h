/* link.h - links between buses over TCP: shared by tcp.c and link.c. */
#ifndef MB_LINK_H
#define MB_LINK_H

#include "bus.h"

struct mb_conn;

/* Live connections, for shutdown at close and for statistics. */
struct mb_conn_ref {
	struct mb_conn *conn;
	int fd;
	struct mb_conn_ref *next;
};

/* The links of one bus handle. */
struct mb_links {
	msgbus_bus *bus;
	char url[80]; /* the bus's own URL: each connection opens a handle on it */
	pthread_mutex_t lock;
	_Atomic bool closing;
	uint64_t node_id;
	struct mb_listener *listeners;
	struct mb_connector *connectors;
	struct mb_accepted *accepted;
	struct mb_conn_ref *conns;
	_Atomic uint32_t up;
	_Atomic uint64_t sent, received, undelivered, reconnects, bad_frames;
};

/* Run one connection on fd until it drops or the bus closes; closes fd.
 * wanted (optional) receives the peer's subscription patterns at the end,
 * so a reconnecting side can count what it cannot deliver meanwhile. */
/* Connecting side only: at a drop, before the link counts as down, the
 * connection starts *watch (lossy, on the bridge handle watch_bus) so that
 * nothing published after the drop escapes the count of undelivered. */
struct mb_watch {
	msgbus_bus *bus;
	msgbus_sub *sub;
	char **wanted; /* the peer's patterns at the drop */
	uint32_t nwanted;
	uint64_t dropped_seen;
	uint64_t *skip; /* per subject: positions below were counted at the drop */
};
/* Count what the watch saw that the peer wanted (tcp.c). */
void mb_watch_count(struct mb_links *ls, struct mb_watch *w);
/* Count a last time and stop watching: the peer is back. */
void mb_watch_settle(struct mb_links *ls, struct mb_watch *w);
bool mb_conn_run(struct mb_links *ls, int fd, const char *peer, bool again,
                 struct mb_watch *watch);
/* true if the handshake completed; again: count it as a reconnect */
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

#endif
