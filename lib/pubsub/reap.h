/* reap.h - what reaping a dead participant gives back in the inboxes (reap.c). */
#ifndef MB_REAP_H
#define MB_REAP_H

#include "shm/handle.h"

/* bus.c installs these on every handle (b->reap_hooks) for shm/live.c. */
extern const struct mb_reap_hooks mb_pubsub_reap_hooks;

#endif
