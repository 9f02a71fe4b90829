/*
 * conn.h - run one connection between two buses (conn.c): set it up, run
 * its threads until it drops, and account at the drop for what the peer
 * wanted and did not get; and the connecting side's watch over a link
 * that is down.
 */
#ifndef MB_CONN_H
#define MB_CONN_H

#include "link/link_set.h"

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
/* Count what the watch saw that the peer wanted: the link is down. */
void mb_watch_count(struct mb_link_ctr *ctr, struct mb_watch *w);
/* Count a last time and stop watching: the peer is back. */
void mb_watch_settle(struct mb_link_ctr *ctr, struct mb_watch *w);

/* How to run one connection (mb_conn_run). */
struct mb_conn_opts {
	const char *peer;   /* for log lines */
	struct mb_link_rec *rec; /* the link's state and counters */
	bool again;         /* a reconnection: count it */
	struct mb_watch *watch; /* the connecting side's, or NULL */
	uint32_t max_patterns;
	/* Decremented once the handshake ends, either way; may be NULL. */
	_Atomic uint32_t *pending;
};

/* Run one connection on fd until it drops or the bus closes; closes fd.
 * true if the handshake completed. */
bool mb_conn_run(struct mb_links *ls, int fd, const struct mb_conn_opts *o);

#endif
