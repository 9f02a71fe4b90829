/*
 * buffers.h - large buffers: messages bigger than a slot are written into a
 * buffer of the segment and a descriptor goes through the ring. A buffer is
 * LOANED to one participant, then PUBLISHED at (subject, position), and free
 * again once every lossless reader has released that position. There are no
 * shared reference counts, so a dead reader cannot leak a buffer.
 */
#ifndef MB_BUFFERS_H
#define MB_BUFFERS_H

#include "bus.h"

int mb_buf_alloc(msgbus_bus *b, uint64_t deadline, uint32_t *idx, uint32_t *gen);
void mb_buf_free(msgbus_bus *b, uint32_t idx);
/* Claim a slot on topic t and publish buffer idx through it. */
int mb_buf_publish(msgbus_bus *b, uint32_t t, uint32_t idx, uint32_t gen, uint32_t len,
                   uint64_t deadline);

/* How many large buffers are FREE now (tests: none leaked). */
uint32_t mb_buf_free_count(msgbus_bus *b);

/* Free the loan handles still open on b (at close). */
void mb_loans_free(msgbus_bus *b);

/* publish.c: shared by msgbus_publish and msgbus_commit. */
int mb_publish_checks_by(msgbus_bus *b, const char *subject, size_t len, uint64_t deadline,
                         uint32_t *topic);
/* The same with the bound of calls without a timeout (mb_ctl_deadline). */
int mb_publish_checks(msgbus_bus *b, const char *subject, size_t len, uint32_t *topic);
uint64_t mb_publish_deadline(int timeout_ms);
int mb_publish_parts(msgbus_bus *b, uint32_t t, const void *head, size_t hlen,
                     const void *data, size_t len, uint64_t deadline);

#endif
