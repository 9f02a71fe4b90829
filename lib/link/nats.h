/*
 * nats.h - nats:// links: a bus joins a NATS deployment as one client
 * (nats.c), speaking the protocol of nats_proto.c.
 */
#ifndef MB_NATS_H
#define MB_NATS_H

#include "link/link_set.h"

/* msgbus_connect for a nats:// URL: parse it, start the link. 0 or an
 * error; the link connects (and reconnects) in the background. */
int mb_nats_connect_url(struct mb_links *ls, const char *url);
/* At close (mb_links_stop): end every nats:// link of ls and join it. */
void mb_nats_stop(struct mb_links *ls);
/* The await_reply link hook (shm/handle.h): a call of b that a nats://
 * link of b took waits for its reply by reading the link's connection,
 * when the link's rx lets it. */
bool mb_nats_await_reply(msgbus_bus *b, uint32_t entry, uint64_t until);

#endif
