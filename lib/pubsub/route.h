/*
 * route.h - publishing into inboxes (DESIGN.md section 4): the publisher
 * finds the subscriptions matching a subject through a per-handle cache
 * stamped with the bus's interest generation, and writes one record into
 * each matching subscription's inbox.
 */
#ifndef MB_ROUTE_H
#define MB_ROUTE_H

#include "shm/handle.h"
#include "ring/inbox.h"

/* Allocate and release the per-handle cache (at open and close). */
int mb_route_init(msgbus_bus *b);
void mb_route_free(msgbus_bus *b);

/*
 * Publish data (len bytes) on subject to every matching subscription:
 * inline in each inbox, or through a large buffer when it is larger than
 * b->ring_inline_max. loan_idx: a loaned buffer already holding the data
 * (UINT32_MAX: none); it is consumed on success. 0 or MSGBUS_E*.
 */
int mb_route_publish(msgbus_bus *b, const char *subject, const void *data, size_t len,
                     uint32_t loan_idx, uint32_t loan_gen, uint64_t deadline);
/* The same; *direct (may be NULL) set true when a link of b took the
 * message itself (shm/handle.h: direct), so it reached no inbox. */
int mb_route_publish_ex(msgbus_bus *b, const char *subject, const void *data, size_t len,
                        uint32_t loan_idx, uint32_t loan_gen, uint64_t deadline, bool *direct);

/*
 * Publish a run of n messages on one subject, parts[0..n), each at most
 * b->ring_inline_max bytes, in order, without waiting: as many as go now
 * (*done of them; the caller publishes the rest itself). The fast case
 * only: every matching subscription is reached with one hold of its
 * inbox's reserve lock for the whole run when there is one lossless
 * target; otherwise (several targets, a lossy one, a crash point armed)
 * MSGBUS_ENOTSUP with *done 0. No target: all done. Else 0, or a code of
 * mb_route_publish with *done 0.
 */
int mb_route_publish_many(msgbus_bus *b, const char *subject, const struct mb_inbox_part *parts,
                          uint32_t n, uint32_t *done);

/* Exact liveness for the inbox code: true when participant owner is dead
 * (it is then reaped). */
bool mb_route_owner_dead(void *bus, uint32_t owner);
/* Copy slot ss's pattern (NUL-terminated, MB_SUBJECT_MAX + 1 bytes) racily:
 * the caller checks afterwards that the slot did not change. */
bool mb_subslot_pattern(const struct mb_subslot *ss, char *out, uint32_t *plen);

#endif
