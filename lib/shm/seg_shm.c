/*
 * seg_shm.c - shm:// segments: /dev/shm/msgbus.NAME shared by processes.
 *
 * Byte 0 of the file carries the segment lock: a creator holds it for
 * writing while it initialises, and every open handle holds it for reading
 * for life. So "can I lock it for writing?" means "is nobody attached?",
 * which decides between creating (or reclaiming a stale segment) and
 * attaching, and tells the last closer to unlink. Byte 1 + i is the life
 * lock of participant slot i.
 *
 * /dev/shm is shared by every local user, so whatever has the name may
 * have been put there by somebody else: a symlink, an empty file 0666, or
 * a real bus of theirs. We create only with O_EXCL, and use an existing
 * file only if it is a regular file with one name, owned by the uid the
 * options accept, with no permission bit beyond the bus's mode. Anything
 * else is MSGBUS_EPERM, and the file is left exactly as it was: no lock,
 * no map, no truncation, no unlink.
 */
#include "platform/error.h"
#include "shm/handle.h"
#include "shm/segment.h"
#include "platform/crash.h"
#include "platform/platform.h"

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
		rc = mb_fd_back(seg->fd, 0, g.eager);
	if (!rc)
		rc = mb_fd_back(seg->fd, g.inbox_ctl, g.inbox_data - g.inbox_ctl);
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

/* The access options resolved: the owner as a uid, and whether that is us
 * (only then may we create the file, or chmod it when we reclaim it). */
struct access {
	uint32_t owner;
	unsigned mode;
	int ours;
};

static void access_resolve(const struct mb_access *opt, struct access *acc)
{
	uint32_t me = mb_euid();
	acc->owner = opt->owner == 0 ? me : opt->owner == MSGBUS_OWNER_ROOT ? 0 : opt->owner;
	acc->mode = opt->mode;
	acc->ours = acc->owner == me;
}

/* May we use the file behind fd? Read from the open file, not the name,
 * so that nothing can be swapped in between the check and the use. */
static int check_file(int fd, const struct access *acc)
{
	struct mb_file_info fi;
	int rc = mb_fd_info(fd, &fi);
	if (rc)
		return mb_syserr(rc);
	/* links 0: a last closer just unlinked it; is_current() retries. */
	if (!fi.regular || fi.links > 1 || fi.uid != acc->owner || (fi.mode & ~acc->mode))
		return MSGBUS_EPERM;
	return 0;
}

/* Open refused: is it the owner's new file, still 0600 until its creator
 * applies the mode (create_name), and not yet sized? Then wait. */
static int being_created(const char *name, const struct access *acc)
{
	struct mb_file_info fi;
	return mb_shm_info(name, &fi) == 0 && fi.regular && fi.uid == acc->owner && fi.size == 0;
}

/* Create the file, then give it the mode: at creation the umask would
 * narrow it (0660 to 0640). It is 0600 until then, so that the owner can
 * reopen it should we die in between; a group member that finds it so
 * waits (being_created). 0 or -errno. */
static int create_name(const char *name, unsigned mode, int *fd)
{
	int rc = mb_shm_create(name, fd);
	if (rc)
		return rc;
	mb_crash_point("before_mode");
	rc = mb_fd_chmod(*fd, mode);
	if (rc) {
		mb_shm_unlink(name);
		mb_close_fd(*fd);
	}
	return rc;
}

/* Open the file that has the name, or create it if nothing has and the bus
 * would be ours. MSGBUS_EAGAIN: the name is changing, look again. */
static int open_name(const char *name, const struct access *acc, int *fd)
{
	int rc = mb_shm_open(name, fd);
	if (rc == -ENOENT) {
		if (!acc->ours)
			return MSGBUS_ENOENT; /* never create another owner's bus */
		rc = create_name(name, acc->mode, fd);
		if (rc == -EEXIST)
			return MSGBUS_EAGAIN;
	}
	if (rc == -EACCES && being_created(name, acc))
		return MSGBUS_EAGAIN;
	if (rc == -ELOOP)
		return MSGBUS_EPERM; /* a symlink */
	return rc ? mb_syserr(rc) : 0;
}

/* We hold the write lock: nobody is attached, so the file is new or stale
 * (its users all died). Make the bus anew in it. */
static int create_held(struct mb_seg *seg, const char *name, const struct mb_config *want,
                       const struct access *acc)
{
	/* A last closer may have unlinked it since we opened it. */
	if (!mb_shm_is_current(name, seg->fd)) {
		drop_mapping(seg);
		return MSGBUS_EAGAIN;
	}
	/* Ours: give a reclaimed file the mode a new one gets. */
	int rc = acc->ours ? mb_fd_chmod(seg->fd, acc->mode) : 0;
	rc = rc ? mb_syserr(rc) : create_locked(seg, want);
	if (!rc)
		rc = mb_lock_try(seg->fd, 0, MB_LOCK_READ) ? MSGBUS_EPROTO : 0;
	if (!rc) {
		seg->cfg = *want;
		return 0;
	}
	drop_mapping(seg);
	if (acc->ours)
		mb_shm_unlink(name);
	return rc;
}

/* Somebody is attached or creating: wait until the bus is made, then check
 * the file again (a concurrent reclaimer applies its own mode) and
 * validate the header. */
static int attach_held(struct mb_seg *seg, const char *name, const struct access *acc)
{
	int rc = wait_read_lock(seg->fd);
	if (!rc && !mb_shm_is_current(name, seg->fd))
		rc = MSGBUS_EAGAIN;
	if (!rc)
		rc = check_file(seg->fd, acc);
	if (!rc)
		rc = attach_locked(seg, &seg->cfg);
	if (rc)
		drop_mapping(seg);
	return rc;
}

static int shm_open_seg(struct mb_seg *seg, const char *name, const struct mb_config *want,
                        const struct mb_access *opt)
{
	struct access acc;
	access_resolve(opt, &acc);
	int rc = MSGBUS_EPROTO;
	for (int attempt = 0; attempt < ATTACH_TRIES; attempt++) {
		rc = open_name(name, &acc, &seg->fd);
		if (!rc) {
			rc = check_file(seg->fd, &acc);
			if (rc)
				drop_mapping(seg); /* not ours to touch: only close it */
			else if (mb_lock_try(seg->fd, 0, MB_LOCK_WRITE) == 0)
				rc = create_held(seg, name, want, &acc);
			else
				rc = attach_held(seg, name, &acc);
		}
		/* EPROTO: not READY, or inconsistent; a creator may have died
		 * while initialising. Retry: once nobody is attached we
		 * recreate. */
		if (rc != MSGBUS_EAGAIN && rc != MSGBUS_EPROTO)
			return rc;
		nap_ms(1);
	}
	/* The name kept changing, or stayed closed to us. */
	return rc == MSGBUS_EAGAIN ? MSGBUS_EPERM : rc;
}

static int owned_by_me(int fd)
{
	struct mb_file_info fi;
	return mb_fd_info(fd, &fi) == 0 && fi.uid == mb_euid();
}

static void shm_close_seg(struct mb_seg *seg)
{
	/* Last one out removes the name, so /dev/shm does not fill up. Drop
	 * our read lock first: two closers each holding one would otherwise
	 * block each other's write lock, and neither would unlink. Another
	 * uid's file (a bus whose owner the options named) is left to its
	 * owner, stale: the next open reclaims it. */
	mb_lock_try(seg->fd, 0, MB_LOCK_NONE);
	if (mb_lock_try(seg->fd, 0, MB_LOCK_WRITE) == 0 && owned_by_me(seg->fd) &&
	    mb_shm_is_current(seg->name, seg->fd))
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
