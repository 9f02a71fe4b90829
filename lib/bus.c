/*
 * bus.c - opening and closing a bus: URL parsing, options, choosing the
 * backend by scheme, registering as a participant.
 */
#include "shm/fork.h"
#include "shm/live.h"
#include "shm/segment.h"
#include "bus.h"
#include "platform/fence.h"
#include "platform/platform_dgram.h"
#include "platform/crash.h"
#include "pubsub/loan.h"
#include "link/links.h"
#include "pubsub/reap.h"
#include "pubsub/route.h"
#include "reqrep/call.h"
#include "reqrep/serve.h"
#include "pubsub/subscribe.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct mb_seg_ops *const backends[] = { &mb_shm_ops, &mb_inproc_ops };

static const struct mb_config defaults = {
	.ring_slots = 512,
	.slot_size = 256,
	.max_msg_size = 1u << 20,
	.large_buffers = 16,
	.max_subjects = 32,
	.max_subs = 64,
	.max_participants = 32,
	.spin_us = 20,
	.crash_bound_ms = 1000,
	.inbox_size = 1u << 20,
};

static int name_check(const char *name)
{
	size_t n = strlen(name);
	if (n < 1 || n > 64 || name[0] == '.')
		return MSGBUS_EINVAL;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return MSGBUS_EINVAL;
	}
	return 0;
}

static int parse_url(const char *url, const struct mb_seg_ops **ops, const char **name)
{
	const char *sep = strstr(url, "://");
	if (!sep || sep == url)
		return MSGBUS_EINVAL;
	size_t slen = (size_t)(sep - url);
	for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) {
		if (strlen(backends[i]->scheme) == slen && !memcmp(url, backends[i]->scheme, slen)) {
			*ops = backends[i];
			*name = sep + 3;
			return name_check(*name);
		}
	}
	return MSGBUS_ENOTSUP;
}

/* Read the options a caller's struct has (its size says how many), fill
 * in defaults for zeros, and check the result. */
static int config_from(const msgbus_options *o, struct mb_config *c, struct mb_access *acc)
{
	*c = defaults;
	acc->mode = 0600;
	acc->owner = 0;
	if (!o)
		return 0;
	if (o->size < offsetof(msgbus_options, mode) + sizeof(o->mode))
		return MSGBUS_EINVAL;
#define TAKE(field) if (o->field) c->field = o->field
	TAKE(ring_slots);
	TAKE(slot_size);
	TAKE(max_msg_size);
	TAKE(large_buffers);
	TAKE(max_subjects);
	TAKE(max_subs);
	TAKE(max_participants);
	TAKE(spin_us);
	TAKE(crash_bound_ms);
	/* A caller built against an older header has no inbox_size member. */
	if (o->size >= offsetof(msgbus_options, inbox_size) + sizeof(o->inbox_size))
		TAKE(inbox_size);
#undef TAKE
	if (o->mode) {
		if (o->mode & ~0777u)
			return MSGBUS_EINVAL;
		acc->mode = o->mode;
	}
	/* A caller built against an older header has no owner member. */
	if (o->size >= offsetof(msgbus_options, owner) + sizeof(o->owner))
		acc->owner = o->owner;
	return mb_config_check(c);
}

/* For the link tier, which opens handles of its own (shm/handle.h). */
static const struct mb_bus_hooks bus_hooks = {
	.reopen = mb_bus_reopen,
	.close = msgbus_close,
};

static int open_bus(msgbus_bus **out, const struct mb_seg_ops *ops, const char *name,
                    const struct mb_config *want, const struct mb_access *acc)
{
	mb_crash_arm();
	/* Before our first publish: inbox puts use the light fence after it. */
	mb_fence_register();
	/* The socket that rings doorbells, so msgbus_shutdown can ring from
	 * a signal handler without making one. */
	mb_dgram_init();
	msgbus_bus *b = calloc(1, sizeof(*b));
	if (!b)
		return MSGBUS_ENOMEM;
	b->seg.ops = ops;
	b->seg.fd = -1;
	b->bus_hooks = &bus_hooks;
	b->reap_hooks = &mb_pubsub_reap_hooks;
	snprintf(b->seg.name, sizeof(b->seg.name), "%s", name);
	pthread_mutex_init(&b->lock, NULL);
	pthread_mutex_init(&b->reap_lock, NULL);
	/* From the first descriptor to the registry, forks wait (fork.c). */
	mb_open_begin();
	int rc = ops->open(&b->seg, b->seg.name, want, acc);
	if (rc) {
		mb_open_end();
		free(b);
		return rc;
	}
	b->acc = *acc;
	mb_crash_point("mid_open"); /* attached, not yet registered */
	b->cfg = b->seg.cfg;
	mb_geometry(&b->cfg, &b->geo);
	b->hdr = b->seg.base;
	b->ring_mask = b->cfg.ring_slots - 1;
	b->inline_max = b->cfg.slot_size - MB_SLOT_HDR;
	b->ring_inline_max = b->cfg.inbox_size / 4 < b->cfg.max_msg_size ? b->cfg.inbox_size / 4
	                                                                   : b->cfg.max_msg_size;
	/* Sequence numbers of a later handle on the same participant index
	 * start above an earlier one's (links compare them, link/link_send.c:mb_link_taken). */
	/* Process-local, before the handle is shared. Relaxed: the handle is
	 * published by whoever hands it to other threads. */
	atomic_store_explicit(&b->pub_seq, mb_now_ns(), memory_order_relaxed);
	b->spin_ns = (uint64_t)b->cfg.spin_us * 1000u;
	/* Check a few times within the bound: detection takes at most a
	 * quarter of it after the wait begins. */
	b->check_ns = (uint64_t)b->cfg.crash_bound_ms * 1000000u / 4;
	/* Correlation ids start at random-ish values, so a reply meant for a
	 * previous owner of our participant slot cannot match our calls. */
	/* Relaxed, as pub_seq above. */
	atomic_store_explicit(&b->corr, (uint32_t)(mb_now_ns() ^ ((uint64_t)getpid() << 16)),
	                      memory_order_relaxed);
	b->topics = calloc(b->cfg.max_subjects, sizeof(*b->topics));
	rc = b->topics ? mb_route_init(b) : MSGBUS_ENOMEM;
	if (!rc)
		rc = mb_part_register(b);
	if (rc) {
		ops->close(&b->seg);
		mb_open_end();
		mb_route_free(b);
		free(b->topics);
		free(b);
		return rc;
	}
	mb_registry_add(b);
	mb_open_end();
	*out = b;
	return 0;
}

int msgbus_open(msgbus_bus **out, const char *url, const msgbus_options *opts)
{
	if (!out || !url)
		return MSGBUS_EINVAL;
	const struct mb_seg_ops *ops;
	const char *name;
	struct mb_config want;
	struct mb_access acc;
	int rc = parse_url(url, &ops, &name);
	if (!rc)
		rc = config_from(opts, &want, &acc);
	return rc ? rc : open_bus(out, ops, name, &want, &acc);
}

int mb_bus_reopen(msgbus_bus *b, msgbus_bus **out)
{
	return open_bus(out, b->seg.ops, b->seg.name, &b->cfg, &b->acc);
}

/* A handle inherited through fork(): its threads stayed in the parent and
 * its segment is the parent's (fork.c let go of it), so free only the
 * handle itself; what it still lists is the parent's and is left alone. */
static int close_forked(msgbus_bus *b)
{
	mb_registry_remove(b);
	mb_unmap(b->seg.base, b->seg.size); /* inproc: the child's private copy */
	mb_route_free(b);
	free(b->topics);
	free(b);
	return 0;
}

int msgbus_close(msgbus_bus *b)
{
	if (!b)
		return MSGBUS_EINVAL;
	if (b->forked)
		return close_forked(b);
	mb_links_stop(b); /* first: link threads use the bus */
	mb_registry_remove(b);
	mb_loans_free(b);
	while (b->calls)
		mb_call_free(b->calls);
	while (b->services) {
		struct msgbus_service *s = b->services;
		b->services = mb_service_next(s);
		mb_service_destroy(s);
	}
	while (b->subs) {
		msgbus_sub *s = b->subs;
		b->subs = s->next;
		mb_sub_destroy(s);
	}
	mb_part_unregister(b);
	b->seg.ops->close(&b->seg);
	pthread_mutex_destroy(&b->lock);
	pthread_mutex_destroy(&b->reap_lock);
	mb_route_free(b);
	free(b->topics);
	free(b);
	return 0;
}
