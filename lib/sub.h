/* sub.h - the in-process side of a subscription. */
#ifndef MB_SUB_H
#define MB_SUB_H

#include "bus.h"

struct msgbus_msg {
	msgbus_sub *sub;
	const char *subject;
	const void *data;
	size_t len;
	uint32_t ti;  /* index into sub->tl */
	uint64_t pos; /* ring position it came from */
	uint32_t origin; /* publishing participant */
};

struct mb_sub_topic {
	uint32_t t;    /* topic index */
	uint64_t next; /* next position to read */
};

struct msgbus_sub {
	msgbus_bus *bus;
	uint32_t slot, gen;
	bool lossy, wild;
	uint32_t ntopics;
	uint32_t rr;             /* round-robin start among subjects */
	struct mb_sub_topic *tl; /* the topics the subscription reads */
	bool *joined;            /* per topic index: in tl */
	uint32_t topics_gen;
	struct msgbus_msg msg;
	bool held;
	_Atomic uint64_t delivered, dropped;
	char *copy; /* lossy subscriptions copy out: a lapping writer may
	             * overwrite the slot while the reader looks at it */
	size_t copy_cap;
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

#endif
