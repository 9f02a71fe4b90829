/*
 * bufpool.h - giving large buffers back to the pool (bufpool.c): a loan
 * freed, an inbox record's reference dropped. Taking one is buffers.h.
 */
#ifndef MB_BUFPOOL_H
#define MB_BUFPOOL_H

#include "shm/handle.h"

/* Buffer idx is FREE again. */
void mb_buf_free(msgbus_bus *b, uint32_t idx);
/* Drop one inbox record's reference to large buffer d (a reader done
 * with it, or a drain of a dead reader's inbox); the last one frees it. */
void mb_buf_unref(msgbus_bus *b, const struct mb_rec_large *d);
/* How many large buffers are FREE now (tests: none leaked). */
uint32_t mb_buf_free_count(msgbus_bus *b);

#endif
