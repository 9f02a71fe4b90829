/*
 * bus.h - the in-process side of a bus handle, shared by the lib/ modules.
 */
#ifndef MB_BUS_H
#define MB_BUS_H

#include "shm/layout.h"
#include "msgbus.h"
#include "platform/platform.h"

#include <pthread.h>
#include <stdbool.h>

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

/* Process-local view of a topic: its name, read once from the segment and
 * validated, and whether it is known yet (set once, with release). */
struct mb_topic_cache {
	_Atomic int known;
	uint64_t hash;
	char name[MB_SUBJECT_MAX + 1];
};

struct msgbus_bus {
	struct mb_seg seg;
	struct mb_access acc;      /* as opened: the bus's link handles reuse it */
	struct mb_config cfg;
	struct mb_geometry geo;
	struct mb_header *hdr;
	uint32_t self;             /* our participant index */
	uint64_t ring_mask;
	uint32_t inline_max;       /* largest payload stored in a slot */
	uint32_t ring_inline_max;  /* largest payload written into an inbox */
	struct mb_route *route;    /* publishing: subject to subscriptions (route.c) */
	_Atomic uint64_t pub_seq;  /* numbers our messages; starts at the clock */
	uint64_t spin_ns, check_ns;
	pthread_mutex_t lock;      /* guards the topic cache refresh and subs list */
	pthread_mutex_t reap_lock; /* one reaper per handle (OFD locks are per handle) */
	struct mb_topic_cache *topics;
	struct msgbus_sub *subs;   /* open subscriptions of this handle */
	struct msgbus_service *services;
	struct msgbus_buf *loans;  /* open loans */
	struct mb_links *links;    /* tcp:// links, if any */
	struct msgbus_call *calls; /* calls in flight */
	_Atomic uint64_t calls_used; /* one bit per call entry */
	_Atomic uint32_t corr;     /* next correlation id */
	struct msgbus_bus *next_open; /* registry of open handles, for fork */
	bool forked;               /* inherited through fork(): not ours to use */
	/* Set once by msgbus_shutdown (possibly from a signal handler): every
	 * wait of this handle returns MSGBUS_ECLOSED. seq_cst: the store pairs
	 * with the seq_cst re-check a waiter makes after mb_ec_prepare
	 * (Dekker with the wakes that follow the store). */
	_Atomic int closing;
};

/* Has msgbus_shutdown been called on b? seq_cst: see closing. */
static inline bool mb_closing(const msgbus_bus *b)
{
	return atomic_load_explicit(&b->closing, memory_order_seq_cst) != 0;
}

/* Addresses of shared structures; indexes must already be in range. */
static inline struct mb_part *mb_part_at(msgbus_bus *b, uint32_t i)
{
	return (struct mb_part *)((char *)b->seg.base + b->geo.parts) + i;
}
static inline struct mb_call *mb_call_at(msgbus_bus *b, uint32_t part, uint32_t i)
{
	/* NOLINTNEXTLINE(bugprone-implicit-widening-of-multiplication-result): part < 512 */
	return (struct mb_call *)((char *)b->seg.base + b->geo.calls) + part * MB_CALLS + i;
}
static inline struct mb_subslot *mb_subslot_at(msgbus_bus *b, uint32_t i)
{
	return (struct mb_subslot *)((char *)b->seg.base + b->geo.subs) + i;
}
static inline struct mb_topic *mb_topic_at(msgbus_bus *b, uint32_t t)
{
	return (struct mb_topic *)((char *)b->seg.base + b->geo.topics + t * b->geo.topic_stride);
}
static inline struct mb_cursor *mb_cursor_at(msgbus_bus *b, uint32_t t, uint32_t s)
{
	return (struct mb_cursor *)((char *)mb_topic_at(b, t) + b->geo.cursors) + s;
}
static inline struct mb_slot *mb_slot_at(msgbus_bus *b, uint32_t t, uint64_t pos)
{
	return (struct mb_slot *)((char *)mb_topic_at(b, t) + b->geo.slots +
	                          (pos & b->ring_mask) * b->cfg.slot_size);
}
static inline struct mb_bufctl *mb_bufctl_at(msgbus_bus *b, uint32_t i)
{
	return (struct mb_bufctl *)((char *)b->seg.base + b->geo.bufctl) + i;
}
static inline void *mb_bufdata_at(msgbus_bus *b, uint32_t i)
{
	return (char *)b->seg.base + b->geo.bufdata + (uint64_t)i * b->geo.buf_stride;
}

/* Deadlines: absolute ns, MB_NO_WAIT (fail with MSGBUS_EAGAIN rather than
 * wait) or UINT64_MAX (none). */
#define MB_NO_WAIT 0ull

/* Absolute deadline in ns from a timeout in ms (-1 = none). The clock is
 * read only when there is a timeout: publish(-1) is on the hot path. */
static inline uint64_t mb_deadline(int timeout_ms)
{
	return timeout_ms < 0 ? UINT64_MAX : mb_now_ns() + (uint64_t)timeout_ms * 1000000u;
}

/* live.c: participants, liveness and reclaiming the dead. */
int mb_part_register(msgbus_bus *b);
void mb_part_unregister(msgbus_bus *b);
bool mb_part_alive(msgbus_bus *b, uint32_t idx); /* reaps idx when it is dead */

/* control.c: the control-plane lock, topics and subscription slots. The
 * lock waits until a deadline; calls without a timeout of their own use
 * mb_ctl_deadline(): 5 crash bounds from now, or MB_CTL_BOUND for the same
 * counted from when a wait begins (no clock read when none does). */
#define MB_CTL_BOUND (UINT64_MAX - 1)
uint64_t mb_ctl_deadline(msgbus_bus *b);
int mb_ctl_lock(msgbus_bus *b, uint64_t deadline);
void mb_ctl_unlock(msgbus_bus *b);
int mb_topic_get(msgbus_bus *b, const char *subject, size_t len, uint64_t hash,
                 uint64_t deadline, uint32_t *topic); /* find or create */
int mb_topic_find(msgbus_bus *b, const char *subject, size_t len, uint64_t hash,
                  uint32_t *topic);
bool mb_topic_refresh(msgbus_bus *b, uint32_t t); /* cache topic t if READY */

/* subject.c */
int mb_subject_check(const char *s, size_t *len, bool pattern, bool *wild);
bool mb_subject_match(const char *pattern, size_t plen, const char *subject, size_t slen);
uint64_t mb_hash(const char *s, size_t len);
/* Subjects under "_svc." carry requests; only service workers read them. */
#define MB_SVC_PREFIX "_svc."
#define MB_SVC_PREFIX_LEN 5u
bool mb_subject_internal(const char *s, size_t len);

/* subscribe.c: slots and cursors, shared with services. Callers hold the
 * control lock. */
int mb_slot_reserve(msgbus_bus *b, const char *pattern, size_t plen, uint32_t owner,
                    unsigned flags, uint32_t *slot, uint32_t *gen);
void mb_join_topics(msgbus_bus *b, uint32_t slot, uint32_t gen, bool queue,
                    const char *pattern, size_t plen);

/* fork.c: msgbus_open runs between mb_open_begin and mb_open_end, and
 * registers the handle before the end; forks wait meanwhile. */
void mb_open_begin(void);
void mb_open_end(void);
void mb_registry_add(msgbus_bus *b);
void mb_registry_remove(msgbus_bus *b);

/* bus.c: another handle on b's bus, opened with b's access options, for
 * a link: it must accept the same owner and mode as the application. */
int mb_bus_reopen(msgbus_bus *b, msgbus_bus **out);

/* bus.c: allocate the pages of [off, off + len) of a shm:// segment before
 * they are first written (inproc:// memory needs nothing). 0 or MSGBUS_E*. */
int mb_seg_back(msgbus_bus *b, uint64_t off, uint64_t len);

/* error mapping */
int mb_syserr(int neg_errno);

#endif
