/*
 * ring.h - the broadcast ring of one subject: many publishers claim slots
 * by CAS on the slot stamp, readers follow with cursors of their own, and a
 * publisher never passes the slowest live lossless reader.
 */
#ifndef MB_RING_H
#define MB_RING_H

#include "shm/handle.h"
#include "shm/live.h"

/* Claim the next position of topic t for us; the slot is ours to fill. */
int mb_ring_claim(msgbus_bus *b, uint32_t t, uint64_t deadline, uint64_t *pos);
/* Publish a filled slot to readers and wake any that sleep. */
void mb_ring_commit(msgbus_bus *b, uint32_t t, uint64_t pos);
/* Recompute the lowest release of live lossless readers; returns the gate. */
uint64_t mb_ring_gate(msgbus_bus *b, uint32_t t);
/* Slow path: check the owners of the cursors at the gate; reap the dead. */
void mb_ring_check_laggards(msgbus_bus *b, uint32_t t, uint64_t gate);

/*
 * A waiter whose head is held by participant owner (a writer, a taker):
 * check it at most every check_ns, since reaping a dead one frees the head.
 * false: it was dead, retry now; true: sleep no later than *until.
 */
static inline bool mb_wait_on_owner(msgbus_bus *b, int64_t owner, uint64_t now,
                                    uint64_t *next_check, uint64_t *until)
{
	if (owner < 0)
		return true;
	if (now >= *next_check) {
		*next_check = now + b->check_ns;
		if (!mb_part_alive(b, (uint32_t)owner))
			return false;
	}
	if (*next_check < *until)
		*until = *next_check;
	return true;
}

/* Distance from a to b in 48-bit sequence space, as a signed number. */
static inline int64_t mb_seq_diff(uint64_t b_, uint64_t a)
{
	return (int64_t)((b_ - a) << 16) >> 16;
}

#endif
