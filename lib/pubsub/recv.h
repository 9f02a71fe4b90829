/* recv.h - taking messages from a subscription's inbox (recv.c). */
#ifndef MB_RECV_H
#define MB_RECV_H

#include "pubsub/sub.h"

/* Taking under the caller's own lock, waiting outside it (a link's
 * transmit side): one message without waiting, the word to sleep on, the
 * flush that must come before that sleep. */
int mb_sub_poll(msgbus_sub *sub, msgbus_msg **msg, int64_t *owner);
_Atomic uint32_t *mb_sub_wait_word(msgbus_sub *sub);
void mb_sub_flush(msgbus_sub *sub);
/* sub's subscription slot, as subscribed. */
uint32_t mb_sub_slot(const msgbus_sub *sub);
/* Is sub subscription slot `slot` of generation gen, with nothing in its
 * inbox for the taker (nothing reserved past its cursor, nothing held)?
 * For the taker of mb_sub_poll, under its lock. */
bool mb_sub_drained_at(const msgbus_sub *sub, uint32_t slot, uint32_t gen);
/* One message into sub->msg, waiting until deadline. */
int mb_sub_take(msgbus_sub *sub, uint64_t deadline);
/* Wake a thread waiting in sub's inbox. */
void mb_sub_wake(msgbus_sub *sub);
/* Consume every record left in sub's inbox, dropping buffer references. */
void mb_sub_drain(msgbus_sub *sub);

#endif
