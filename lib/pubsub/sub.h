/*
 * sub.h - the types of the in-process side of a subscription (the consumer
 * of its inbox) and of a received message, shared by recv.c, subscribe.c,
 * drain.c and the tiers above. Functions are in recv.h and subscribe.h.
 */
#ifndef MB_SUB_H
#define MB_SUB_H

#include "shm/handle.h"
#include "ring/inbox.h"
#include "platform/platform_dgram.h"

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
	bool bell_on;          /* msgbus_sub_fd was called: db is open */
	struct mb_doorbell db;
};

#endif
