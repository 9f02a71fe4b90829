/* subscribe.h - joining and leaving (subscribe.c). */
#ifndef MB_SUBSCRIBE_H
#define MB_SUBSCRIBE_H

#include "pubsub/sub.h"

/* Slots and cursors, shared with services. Callers hold the control lock. */
int mb_slot_reserve(msgbus_bus *b, const char *pattern, size_t plen, uint32_t owner,
                    unsigned flags, uint32_t *slot, uint32_t *gen);
void mb_join_topics(msgbus_bus *b, uint32_t slot, uint32_t gen, bool queue,
                    const char *pattern, size_t plen);
/* Leave (at unsubscribe and close): free the slot, give back what the
 * inbox holds. */
void mb_sub_destroy(msgbus_sub *sub);
/* Further patterns of one subscription (links), slot and generation out. */
int mb_sub_alias_add(msgbus_sub *sub, const char *pattern, uint32_t *slot, uint32_t *gen);
void mb_sub_alias_del(msgbus_bus *b, uint32_t slot, uint32_t gen);

#endif
