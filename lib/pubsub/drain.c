/* drain.c - consuming what an inbox holds without a subscriber to read
 * it: at unsubscribe and close, and for a dead one (reaping); see drain.h. */
#include "pubsub/drain.h"
#include "pubsub/bufpool.h"
#include "pubsub/inboxes.h"
#include "pubsub/mark.h"

#include <string.h>

/* A record's large-buffer reference, whatever subscription it was for. */
static bool rec_ref(const struct mb_inbox_msg *m, struct mb_rec_large *d)
{
	struct mb_rec_pfx pfx;
	if (m->subject_len < sizeof(pfx) || m->payload_len != sizeof(*d))
		return false;
	memcpy(&pfx, m->subject, sizeof(pfx));
	memcpy(d, m->payload, sizeof(*d));
	return pfx.kind == MB_REC_LARGE;
}

void mb_drain_cons(msgbus_bus *b, struct mb_inbox_cons *c)
{
	struct mb_inbox_msg m;
	for (uint64_t n = 0; n <= c->ib.size / MB_INBOX_REC_HDR && mb_inbox_peek(c, &m) == 0; n++) {
		struct mb_rec_large d;
		bool large = rec_ref(&m, &d);
		mb_inbox_consume(c);
		if (large) {
			mb_inbox_flush(c); /* see msgbus_msg_release */
			mb_buf_unref(b, &d);
		}
	}
	mb_inbox_flush(c);
}

/* Liveness for a drain under the reap lock, which cannot reap again: a
 * participant whose slot we can take is dead (we let go of it at once;
 * whoever reaps it later does). */
static bool dead_now(void *bus, uint32_t owner)
{
	msgbus_bus *b = bus;
	if (owner == b->self)
		return false;
	if (owner >= b->cfg.max_participants)
		return true;
	if (b->seg.ops->slot_try(&b->seg, owner))
		return false;
	b->seg.ops->slot_drop(&b->seg, owner);
	return true;
}

/* Polls of a record held by a writer before it is asked about (inbox.c
 * asks every 1024). */
#define DRAIN_STUCK_POLLS 2050u

void mb_inbox_drain_dead(msgbus_bus *b, uint32_t slot)
{
	struct mb_inbox ib;
	struct mb_inbox_cons c;
	if (mb_inbox_attach(&ib, b->seg.base, b->seg.size, mb_inbox_ctl_off(b, slot),
	                    mb_inbox_data_off(b, slot), b->cfg.inbox_size))
		return;
	mb_inbox_cons_init(&c, &ib, dead_now, b, 0, 0);
	/* A dead publisher's marked records are committed, so read and their
	 * buffer references dropped like the rest. */
	mb_inbox_cons_keep(&c, mb_mark_keep, b);
	/* A dead writer's claim in the way is aborted after enough polls; a
	 * live one's ends the walk (its record is the next consumer's). */
	for (unsigned k = 0; k < DRAIN_STUCK_POLLS; k++) {
		uint64_t before = c.cursor;
		mb_drain_cons(b, &c);
		if (c.cursor != before)
			k = 0;
		struct mb_inbox_msg m;
		if (mb_inbox_peek(&c, &m) != MSGBUS_EAGAIN)
			break;
		if (mb_inbox_drained(&c))
			break; /* nothing held: all is read */
	}
	mb_inbox_flush(&c);
}
