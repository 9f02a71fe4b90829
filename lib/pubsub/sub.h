/* sub.h - the in-process side of a subscription: the consumer of its inbox. */
#ifndef MB_SUB_H
#define MB_SUB_H

#include "shm/handle.h"
#include "ring/inbox.h"

struct msgbus_msg {
	msgbus_sub *sub;
	const char *subject; /* NUL-terminated copy (sub->subject), or a reply's */
	const void *data;    /* in the inbox or a large buffer: a view */
	size_t len;
	uint32_t origin;     /* publishing participant */
	uint64_t seq;        /* the publishing handle's sequence number */
	bool large;
	struct mb_rec_large desc; /* large: the buffer it references */
};

struct msgbus_sub {
	msgbus_bus *bus;
	uint32_t slot, gen;
	bool lossy;
	struct mb_inbox_cons cons;
	char subject[MB_SUBJECT_MAX + 1];
	struct msgbus_msg msg;
	bool held;
	_Atomic uint64_t delivered, lost; /* lost: large buffers recycled under us */
	_Atomic uint64_t cursor; /* the consumer's position, for the stats */
	msgbus_msg_cb cb;
	void *cb_arg;
	pthread_t thread;
	_Atomic bool stop;
	msgbus_sub *next;
};

/* recv.c: taking under the caller's own lock, waiting outside it. */
int mb_sub_poll(msgbus_sub *sub, msgbus_msg **msg, int64_t *owner);
_Atomic uint32_t *mb_sub_wait_word(msgbus_sub *sub);
void mb_sub_flush(msgbus_sub *sub);
int mb_sub_take(msgbus_sub *sub, uint64_t deadline);
void mb_sub_wake(msgbus_sub *sub);
/* Consume every record left in sub's inbox, dropping buffer references. */
void mb_sub_drain(msgbus_sub *sub);
/* subscribe.c: slots and cursors, shared with services. Callers hold the
 * control lock. */
int mb_slot_reserve(msgbus_bus *b, const char *pattern, size_t plen, uint32_t owner,
                    unsigned flags, uint32_t *slot, uint32_t *gen);
void mb_join_topics(msgbus_bus *b, uint32_t slot, uint32_t gen, bool queue,
                    const char *pattern, size_t plen);
/* subscribe.c: leave (at unsubscribe and close): free the slot, give back
 * what the inbox holds. */
void mb_sub_destroy(msgbus_sub *sub);
/* subscribe.c: further patterns of one subscription (links), slot and
 * generation out. */
int mb_sub_alias_add(msgbus_sub *sub, const char *pattern, uint32_t *slot, uint32_t *gen);
void mb_sub_alias_del(msgbus_bus *b, uint32_t slot, uint32_t gen);
/* The same for an inbox whose consumer is gone (live.c, reaping). */
void mb_inbox_drain_dead(msgbus_bus *b, uint32_t slot);

#endif
