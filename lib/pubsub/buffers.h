/*
 * buffers.h - large buffers: messages bigger than a slot are written into a
 * buffer of the segment and a descriptor goes through the ring. A buffer is
 * LOANED to one participant, then PUBLISHED at (subject, position), and free
 * again once every lossless reader has released that position. There are no
 * shared reference counts, so a dead reader cannot leak a buffer.
 */
#ifndef MB_BUFFERS_H
#define MB_BUFFERS_H

#include "shm/handle.h"

int mb_buf_alloc(msgbus_bus *b, uint64_t deadline, uint32_t *idx, uint32_t *gen);
void mb_buf_free(msgbus_bus *b, uint32_t idx);
/* Claim a slot on topic t and publish buffer idx through it. */
int mb_buf_publish(msgbus_bus *b, uint32_t t, uint32_t idx, uint32_t gen, uint32_t len,
                   uint64_t deadline);

/* How many large buffers are FREE now (tests: none leaked). */
uint32_t mb_buf_free_count(msgbus_bus *b);

/* Free the loan handles still open on b (at close). */
void mb_loans_free(msgbus_bus *b);

#endif
