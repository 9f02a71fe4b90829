/*
 * reap.c - the reap hooks of the pubsub tier: shm/live.c reaps a dead
 * participant and, through these, gives back what it held in the inboxes,
 * without calling up into pubsub or ring by name.
 */
#include "pubsub/reap.h"
#include "pubsub/route.h"
#include "pubsub/sub.h"
#include "ring/inbox.h"

static void inbox_owner_dead(msgbus_bus *b, uint32_t s, uint32_t idx)
{
	struct mb_inbox ib;
	if (mb_inbox_attach(&ib, b->seg.base, b->seg.size, mb_inbox_ctl_off(b, s),
	                    mb_inbox_data_off(b, s), b->cfg.inbox_size) == 0)
		mb_inbox_reap_owner(&ib, idx);
}

const struct mb_reap_hooks mb_pubsub_reap_hooks = {
	.inbox_drain = mb_inbox_drain_dead,
	.inbox_owner_dead = inbox_owner_dead,
};
