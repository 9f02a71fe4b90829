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

#endif
