/*
 * links.h - the links of a bus handle (links.c): msgbus_listen and
 * msgbus_connect start them (tcp:// here, other schemes in their files),
 * the link hooks let publishers, requesters and workers of the handle send
 * through them inline, and the handle's close stops them.
 */
#ifndef MB_LINKS_H
#define MB_LINKS_H

#include "shm/handle.h"

/* At close: stop accepting and connecting, drop every connection, join. */
void mb_links_stop(msgbus_bus *b);
/* After a publish on b: b's links send inline; never waits. */
void mb_links_published(msgbus_bus *b);
/* A thread spinning in msgbus_recv on b reads b's links inline; before it
 * sleeps, it hands them back to their rx threads. */
void mb_links_spin(msgbus_bus *b);
void mb_links_unspin(msgbus_bus *b);

/* msgbus_links(3) for introspect.c: b's links, as msgbus_participants
 * counts (arguments checked by the caller). Takes ls->lock. */
int mb_links_list(msgbus_bus *b, msgbus_link_info *arr, size_t cap, size_t *n);

#endif
