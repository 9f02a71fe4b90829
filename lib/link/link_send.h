/* link_send.h - the sending side of a connection (link_send.c): the tx
 * thread, inline senders, frames, the interest we advertise. */
#ifndef MB_LINK_SEND_H
#define MB_LINK_SEND_H

#include "link/conn_state.h"

/* What local (non-bridge) participants of b subscribe to and serve, added
 * to subs and svcs (each pattern or name once). 0 or MSGBUS_ENOMEM. */
int mb_link_local_interest(msgbus_bus *b, struct names *subs, struct names *svcs);
int mb_link_send_frame(struct mb_conn *c, struct mb_frame *f, bool now);
int mb_link_send_rep(struct mb_conn *c, uint32_t id, int status, const void *data, size_t len);
bool mb_link_peer_wants(struct mb_conn *c, const char *subject);
/* Raise taken[m's publisher] past m's sequence number. */
void mb_link_taken(msgbus_bus *lb, uint64_t *taken, const msgbus_msg *m);
void mb_link_tx_abandon_locked(struct mb_conn *c); /* caller holds wlock */
void *mb_link_tx_main(void *arg);
/* After a publish on the linking handle: send what the proxy holds, in
 * this thread, if it can be done at once (never waits). */
void mb_conn_tx_inline(struct mb_conn *c);
/* A publish on the linking handle for the proxy alone (slot `slot` of
 * generation gen) of the connection behind door, if any: queue it from
 * this thread, skipping the proxy's inbox, if that can be done in order
 * and at once, or (may_block) once this thread wrote what is queued;
 * false: publish it as usual. Waits only in such a write. */
bool mb_conn_tx_direct(struct mb_conn_door *door, uint32_t slot, uint32_t gen,
                       const char *subject, size_t nl, const void *data, size_t len,
                       bool may_block);
/* Is a direct message that finds txbuf empty at `now` lone (written at
 * once), or part of a stream (queued)? last_write: when the link's last
 * write returned; last_empty: when a direct message last found txbuf
 * empty. */
bool mb_link_tx_lone(uint64_t now, uint64_t last_write, uint64_t last_empty);

#endif
