/*
 * seg.h - the segment backends (seg_shm.c, seg_inproc.c) behind one table
 * of operations chosen by URL scheme.
 */
#ifndef MB_SEG_H
#define MB_SEG_H

#include "shm/layout.h"

#include <stdint.h>

struct mb_seg;

/* Who may have made a shm:// segment, from the options: the segment must
 * have no permission bit beyond mode and belong to owner (the option as
 * given: 0 the caller's euid, MSGBUS_OWNER_ROOT root). */
struct mb_access {
	unsigned mode;
	uint32_t owner;
};

/*
 * A backend places the segment: shm:// in a named shared file, inproc:// in
 * private memory. Locking contract: open and close are called with no lock
 * held; slot_try and slot_drop may be called from any thread of the handle,
 * under the handle's reap_lock.
 */
struct mb_seg_ops {
	const char *scheme;
	/* Create or attach, then map; fills seg->base, seg->size, seg->cfg. */
	int (*open)(struct mb_seg *seg, const char *name, const struct mb_config *want,
	            const struct mb_access *acc);
	void (*close)(struct mb_seg *seg);
	/* Take exclusive ownership of participant slot idx if no live handle
	 * owns it: 0 taken, MSGBUS_EAGAIN owned by a live handle. */
	int (*slot_try)(struct mb_seg *seg, uint32_t idx);
	void (*slot_drop)(struct mb_seg *seg, uint32_t idx);
};

struct mb_seg {
	const struct mb_seg_ops *ops;
	char name[72];
	int fd;
	void *base;
	uint64_t size;
	struct mb_config cfg; /* the segment's own, validated */
	void *priv;
};

extern const struct mb_seg_ops mb_shm_ops;
extern const struct mb_seg_ops mb_inproc_ops;

#endif
