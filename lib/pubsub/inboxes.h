/* inboxes.h - where each subscription slot keeps its inbox in the segment. */
#ifndef MB_INBOXES_H
#define MB_INBOXES_H

#include "shm/handle.h"
#include "ring/inbox.h"

/* Where subscription slot s keeps its inbox. */
static inline uint64_t mb_inbox_ctl_off(const msgbus_bus *b, uint32_t s)
{
	return b->geo.inbox_ctl + (uint64_t)s * sizeof(struct mb_inbox_ctl);
}
static inline uint64_t mb_inbox_data_off(const msgbus_bus *b, uint32_t s)
{
	return b->geo.inbox_data + (uint64_t)s * b->cfg.inbox_size;
}

#endif
