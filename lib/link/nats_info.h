/*
 * nats_info.h - what msgbus_links(3) shows of a nats:// link (nats_info.c):
 * its state and server, and whether the server has processed the SUBs of
 * the bus's interest. The link tells it where it connects, comes up and
 * backs off (nats.c) and after it syncs its SUBs (nats_tx.c).
 *
 * Confirmation: the server answers PINGs in order, after what came before
 * them. On each connection the link counts the PINGs it writes (under
 * wlock, with the write) and the PONGs it reads; after a sync of its SUBs
 * it writes a PING and notes its number. Once as many PONGs came, every
 * SUB the sync wrote was processed: the interest of generation synced_gen
 * is confirmed.
 */
#ifndef MB_NATS_INFO_H
#define MB_NATS_INFO_H

#include "link/link_set.h"

struct nats_server;

struct nats_seen {
	/* Under ls->lock: MSGBUS_LINK_*, and the server's address while up. */
	uint32_t state;
	char peer[64];
	/* This connection's PINGs written (under wlock) and PONGs read (rx);
	 * confirm_at: the PING after the last sync (0: none), of interest
	 * generation synced_gen. Relaxed: informational, and reset under
	 * wlock before the connection counts as up. */
	_Atomic uint64_t pings, pongs, confirm_at;
	_Atomic uint32_t synced_gen;
};

struct mb_nats;

/* nats.c's rx: where the link is. up: fd is connected to the server. */
void mb_nats_seen_connecting(struct mb_nats *n);
void mb_nats_seen_backoff(struct mb_nats *n);
void mb_nats_seen_up(struct mb_nats *n, int fd, bool up);
/* The connection is new: no PING written, no PONG read. Caller holds wlock. */
void mb_nats_seen_reset_locked(struct mb_nats *n);
/* rx read a PONG. */
void mb_nats_seen_pong(struct mb_nats *n);
/* nats_tx.c wrote a PING; and it was the one after a sync of the SUBs
 * to interest generation gen. Caller holds wlock. */
void mb_nats_seen_ping_locked(struct mb_nats *n);
void mb_nats_seen_synced_locked(struct mb_nats *n, uint32_t gen);

/* For links.c: the counters of ls's nats:// links, added to sum; and
 * their records, up to cap in arr; the number of them. Caller holds
 * ls->lock. */
void mb_nats_ctr(struct mb_links *ls, struct mb_link_ctr *sum);
size_t mb_nats_list(struct mb_links *ls, msgbus_link_info *arr, size_t cap);

#endif
