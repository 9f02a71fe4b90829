/*
 * seg_shm.c - shm:// segments: /dev/shm/msgbus.NAME shared by processes.
 *
 * Byte 0 of the file carries the segment lock: a creator holds it for
 * writing while it initialises, and every open handle holds it for reading
 * for life. So "can I lock it for writing?" means "is nobody attached?",
 * which decides between creating (or reclaiming a stale segment) and
 * attaching, and tells the last closer to unlink. Byte 1 + i is the life
 * lock of participant slot i.
 */
#include "bus.h"
#include "crash.h"
#include "platform.h"

#include <errno.h>
#include <string.h>

#define ATTACH_TRIES 200

static void nap_ms(unsigned ms)
{
	mb_nap_us(ms * 1000u);
}

static int create_locked(struct mb_seg *seg, const struct mb_config *want)
{
	struct mb_geometry g;
	mb_geometry(want, &g);
	int rc = mb_fd_resize(seg->fd, g.size);
	if (!rc)
		rc = mb_map(seg->fd, g.size, &seg->base);
	if (rc)
		return mb_syserr(rc);
	seg->size = g.size;
	mb_crash_point("mid_create");
	mb_header_init(seg->base, want, g.size);
	return 0;
}

/* Wait for the read lock: a creator holds the write lock only while it
 * initialises, so this is short unless the creator is stopped. */
static int wait_read_lock(int fd)
{
	for (int i = 0; i < 5000; i++) {
		int rc = mb_lock_try(fd, 0, MB_LOCK_READ);
		if (rc != -EAGAIN)
			return rc ? mb_syserr(rc) : 0;
		nap_ms(1);
	}
	return MSGBUS_ETIMEDOUT;
}

static int attach_locked(struct mb_seg *seg, struct mb_config *cfg)
{
	uint64_t size;
	int rc = mb_fd_size(seg->fd, &size);
	if (rc)
		return mb_syserr(rc);
	if (size < MB_PAGE)
		return MSGBUS_EPROTO;
	rc = mb_map(seg->fd, size, &seg->base);
	if (rc)
		return mb_syserr(rc);
	seg->size = size;
	return mb_header_check(seg->base, size, cfg);
}

static void drop_mapping(struct mb_seg *seg)
{
	mb_unmap(seg->base, seg->size);
	seg->base = NULL;
	mb_close_fd(seg->fd);
	seg->fd = -1;
}

static int shm_open_seg(struct mb_seg *seg, const char *name, const struct mb_config *want,
                        unsigned mode)
{
	int rc = MSGBUS_EPROTO;
	for (int attempt = 0; attempt < ATTACH_TRIES; attempt++) {
		int fd;
		int orc = mb_shm_open(name, mode, &fd);
		if (orc)
			return mb_syserr(orc);
		seg->fd = fd;
		if (mb_lock_try(fd, 0, MB_LOCK_WRITE) == 0) {
			/* Nobody is attached: the file is new or stale. A last
			 * closer may have unlinked it since we opened it. */
			if (!mb_shm_is_current(name, fd)) {
				drop_mapping(seg);
				continue;
			}
			rc = create_locked(seg, want);
			if (!rc)
				rc = mb_lock_try(fd, 0, MB_LOCK_READ) ? MSGBUS_EPROTO : 0;
			if (!rc) {
				seg->cfg = *want;
				return 0;
			}
			drop_mapping(seg);
			mb_shm_unlink(name);
			return rc;
		}
		rc = wait_read_lock(fd);
		if (rc) {
			drop_mapping(seg);
			return rc;
		}
		if (!mb_shm_is_current(name, fd)) {
			drop_mapping(seg);
			continue;
		}
		rc = attach_locked(seg, &seg->cfg);
		if (!rc)
			return 0;
		drop_mapping(seg);
		if (rc != MSGBUS_EPROTO)
			return rc;
		/* Not READY, or inconsistent: a creator may have died while
		 * initialising. Retry; once nobody is attached we recreate. */
		nap_ms(1);
	}
	return rc;
}

static void shm_close_seg(struct mb_seg *seg)
{
	/* Last one out removes the name, so /dev/shm does not fill up. Drop
	 * our read lock first: two closers each holding one would otherwise
	 * block each other's write lock, and neither would unlink. */
	mb_lock_try(seg->fd, 0, MB_LOCK_NONE);
	if (mb_lock_try(seg->fd, 0, MB_LOCK_WRITE) == 0 && mb_shm_is_current(seg->name, seg->fd))
		mb_shm_unlink(seg->name);
	drop_mapping(seg);
}

static int shm_slot_try(struct mb_seg *seg, uint32_t idx)
{
	return mb_lock_try(seg->fd, 1 + (uint64_t)idx, MB_LOCK_WRITE) ? MSGBUS_EAGAIN : 0;
}

static void shm_slot_drop(struct mb_seg *seg, uint32_t idx)
{
	mb_lock_try(seg->fd, 1 + (uint64_t)idx, MB_LOCK_NONE);
}

const struct mb_seg_ops mb_shm_ops = {
	.scheme = "shm",
	.open = shm_open_seg,
	.close = shm_close_seg,
	.slot_try = shm_slot_try,
	.slot_drop = shm_slot_drop,
};
