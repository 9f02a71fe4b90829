/* drain.h - consuming an inbox's records without delivering them (drain.c). */
#ifndef MB_DRAIN_H
#define MB_DRAIN_H

#include "shm/handle.h"
#include "ring/inbox.h"

/* Consume what c can read now, a lap at most, dropping the records'
 * large-buffer references. */
void mb_drain_cons(msgbus_bus *b, struct mb_inbox_cons *c);
/* The same for slot's inbox, whose consumer is gone (reaping, or a free
 * slot's leftovers). Caller holds b->reap_lock. */
void mb_inbox_drain_dead(msgbus_bus *b, uint32_t slot);

#endif
