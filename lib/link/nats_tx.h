/*
 * nats_tx.h - a nats:// link's writing side (nats_tx.c): the tx thread,
 * and the writes every other thread makes under wlock; see nats_link.h.
 */
#ifndef MB_NATS_TX_H
#define MB_NATS_TX_H

#include "link/nats_link.h"

void *mb_nats_tx_main(void *arg);
/* Write under wlock on the current connection, after what txbuf holds;
 * false: it is down (the connection is shut down so rx sees it). Caller
 * holds wlock. */
bool mb_nats_write_locked(struct mb_nats *n, const void *a, size_t alen, const void *b,
                          size_t blen);
/* A PING on the up connection fd (rx when idle); false: it is down. */
bool mb_nats_idle_ping(struct mb_nats *n, int fd);
/* tx synced its SUBs to interest generation gen on connection epoch:
 * a PING follows them (nats_info.h: confirmation). */
void mb_nats_synced(struct mb_nats *n, uint64_t epoch, uint32_t gen);
/* The connection is gone: what txbuf still holds is undelivered. Caller
 * holds wlock. */
void mb_nats_tx_abandon_locked(struct mb_nats *n);
/* A request or a reply: PUB subject [reply] with data, after what txbuf
 * holds, written now (one write when small); false: the link is down, or
 * the line does not fit. Caller holds wlock. */
bool mb_nats_pub_locked(struct mb_nats *n, const char *subject, const char *reply,
                        const void *data, size_t len);
/* Write what txbuf holds, blocking. */
void mb_nats_flush(struct mb_nats *n);
/* After a publish on the linking handle (the published link hook, via
 * links.c:mb_links_published): its links send inline; never waits. Caller
 * holds ls->lock. */
void mb_nats_published(struct mb_links *ls);
/* The service name the SUB sid stands for, copied to name; false: sid is
 * not a service's. Caller holds wlock. */
bool mb_nats_sid_service_locked(struct mb_nats *n, uint64_t sid, char *name, size_t cap);

#endif
