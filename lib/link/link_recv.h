/* link_recv.h - the receiving side of a connection (link_recv.c): the
 * handshake, the rx thread, inline readers. */
#ifndef MB_LINK_RECV_H
#define MB_LINK_RECV_H

#include "link/conn_state.h"

bool mb_link_handshake(struct mb_conn *c, uint32_t max_frame);
void mb_link_rx_loop(struct mb_conn *c); /* caller holds rlock */
/* A thread spinning in msgbus_recv on the linking handle reads c inline,
 * if the rx thread lets it; mb_conn_rx_unspin: it stops spinning. */
void mb_conn_rx_inline(struct mb_conn *c, uint64_t now);
void mb_conn_rx_unspin(struct mb_conn *c);

#endif
