/*
 * seg_inproc.c - inproc:// segments: the shared layout in private memory,
 * found by name in a process-wide registry and freed with its last handle.
 * Handles of one process cannot die apart, so a participant slot is owned
 * exactly while its flag here is set.
 */
#include "shm/handle.h"
#include "shm/segment.h"
#include "platform/platform.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct inproc {
	struct inproc *next;
	char name[72];
	void *base;
	uint64_t size;
	struct mb_config cfg;
	unsigned refs;
	_Atomic uint8_t *owned; /* one flag per participant slot */
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct inproc *registry;

static int inproc_open(struct mb_seg *seg, const char *name, const struct mb_config *want,
                       const struct mb_access *acc)
{
	(void)acc; /* private memory: no file, no permissions */
	int rc = 0;
	pthread_mutex_lock(&registry_lock);
	struct inproc *ip = registry;
	while (ip && strcmp(ip->name, name))
		ip = ip->next;
	if (!ip) {
		struct mb_geometry g;
		mb_geometry(want, &g);
		ip = calloc(1, sizeof(*ip));
		if (ip)
			ip->owned = calloc(want->max_participants, 1);
		/* NOLINTNEXTLINE(bugprone-branch-clone): a failed map is out of memory too */
		if (!ip || !ip->owned) {
			rc = MSGBUS_ENOMEM;
		} else if ((rc = mb_map(-1, g.size, &ip->base)) != 0) {
			rc = MSGBUS_ENOMEM;
		} else {
			snprintf(ip->name, sizeof(ip->name), "%s", name);
			ip->size = g.size;
			ip->cfg = *want;
			mb_header_init(ip->base, want, g.size);
			ip->next = registry;
			registry = ip;
		}
		if (rc && ip) {
			free((void *)ip->owned);
			free(ip);
		}
	}
	if (!rc) {
		ip->refs++;
		seg->base = ip->base;
		seg->size = ip->size;
		seg->cfg = ip->cfg;
		seg->priv = ip;
	}
	pthread_mutex_unlock(&registry_lock);
	return rc;
}

static void inproc_close(struct mb_seg *seg)
{
	struct inproc *ip = seg->priv;
	pthread_mutex_lock(&registry_lock);
	if (--ip->refs == 0) {
		struct inproc **pp = &registry;
		while (*pp != ip)
			pp = &(*pp)->next;
		*pp = ip->next;
		mb_unmap(ip->base, ip->size);
		free((void *)ip->owned);
		free(ip);
	}
	pthread_mutex_unlock(&registry_lock);
	seg->base = NULL;
	seg->priv = NULL;
}

static int inproc_slot_try(struct mb_seg *seg, uint32_t idx)
{
	struct inproc *ip = seg->priv;
	uint8_t free_flag = 0;
	/* seq_cst by default (acquire would do): pairs with the store in
	 * inproc_slot_drop, so the last owner's (or reaper's) work is seen. */
	return atomic_compare_exchange_strong(&ip->owned[idx], &free_flag, 1) ? 0 : MSGBUS_EAGAIN;
}

static void inproc_slot_drop(struct mb_seg *seg, uint32_t idx)
{
	struct inproc *ip = seg->priv;
	/* seq_cst by default (release would do): pairs with the CAS in
	 * inproc_slot_try. */
	atomic_store(&ip->owned[idx], 0);
}

const struct mb_seg_ops mb_inproc_ops = {
	.scheme = "inproc",
	.open = inproc_open,
	.close = inproc_close,
	.slot_try = inproc_slot_try,
	.slot_drop = inproc_slot_drop,
};
