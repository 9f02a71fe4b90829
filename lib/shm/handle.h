/*
 * handle.h - the in-process side of a bus handle and the accessors of the
 * shared structures it maps, for every tier.
 */
#ifndef MB_HANDLE_H
#define MB_HANDLE_H

#include "msgbus.h"
#include "platform/error.h"
#include "platform/platform.h"
#include "shm/layout.h"
#include "shm/seg.h"

#include <pthread.h>
#include <stdbool.h>

/* Process-local view of a topic: its name, read once from the segment and
 * validated, and whether it is known yet (set once, with release). */
struct mb_topic_cache {
	_Atomic int known;
	uint64_t hash;
	char name[MB_SUBJECT_MAX + 1];
};

/*
 * A lower tier never calls a higher one by name: it calls through one of
 * these tables, which the higher tier installs on the handle (as nng's
 * transports do: "endpoints are unable to call back into the socket").
 */

/* Installed by bus.c at open, before the handle is registered or shared:
 * reaping a dead participant (live.c) gives back what it held in the
 * inboxes (pubsub/reap.c). Called with the dead one's slot owned. */
struct mb_reap_hooks {
	/* Subscription slot s was the dead one's: drain its inbox. */
	void (*inbox_drain)(msgbus_bus *b, uint32_t s);
	/* Finish or undo what participant idx left half done in slot s's
	 * inbox (a reservation, a reserve lock). */
	void (*inbox_owner_dead)(msgbus_bus *b, uint32_t s, uint32_t idx);
};

/* Installed by bus.c at open: the link tier opens and closes handles of
 * its own on the same bus (bridges, watches). */
struct mb_bus_hooks {
	/* Another handle on b's bus with b's access options. */
	int (*reopen)(msgbus_bus *b, msgbus_bus **out);
	int (*close)(msgbus_bus *b);
};

/* Installed by the link tier (link/links.c) with a handle's first link; NULL
 * before. Called by application threads with no lock held; never wait
 * (but await_reply, which waits for what the caller waits for). */
struct mb_link_hooks {
	/* After a publish on b (publish.c): b's links send inline. */
	void (*published)(msgbus_bus *b);
	/* A publish on b (route.c) whose one target is the lossless
	 * subscription slot `slot` of generation gen, not through a loan:
	 * if that slot is the proxy of a link of b and the link can take
	 * the message now, in order after what it took before, the link
	 * queues it for its peer from this thread (the inbox is skipped) and
	 * returns true. Never waits, but (may_block: a publish without a
	 * timeout) for the link's socket to take what it holds, as a full
	 * inbox would block the publish. */
	bool (*direct)(msgbus_bus *b, uint32_t slot, uint32_t gen, const char *subject,
	               size_t slen, const void *data, size_t len, bool may_block);
	/* A call on b found no live worker for service (call.c): true if a
	 * link serves the name now (as a bridge worker), so look again. */
	bool (*no_worker)(msgbus_bus *b, const char *service);
	/* A call of b to service (call.c), which no local participant but
	 * a bridge serves, whose entry is PENDING: if a link of b serves the
	 * name, the link takes the call (the entry becomes TAKEN by the
	 * link's participant) and sends it from this thread; 0 then, and the
	 * reply (or an error) comes into the entry. MSGBUS_ENOENT: no such
	 * link, the caller queues the request as usual. */
	int (*call_direct)(msgbus_bus *b, const char *service, const struct mb_req_hdr *hdr,
	                   const void *data, size_t len);
	/* A worker of b (serve.c) has just written the reply of call entry
	 * `entry` of participant `to`, before it signals: if `to` is a link
	 * of b that forwards the reply to its peer, the link takes and sends
	 * it from this thread and returns true (nobody needs a wake-up then).
	 * Never blocks: a busy link returns false. */
	bool (*replied)(msgbus_bus *b, uint32_t to, uint32_t entry);
	/* A thread spinning in msgbus_recv on b (pubsub/recv.c), now and
	 * then: read b's links inline, so what a peer sends reaches it with
	 * nobody woken (never waits). unspin: it stops spinning, the links'
	 * own threads read them again (takes a lock, never waits for I/O). */
	void (*spin)(msgbus_bus *b);
	void (*unspin)(msgbus_bus *b);
	/* A call of b (call.c) whose call entry `entry` a link of b took
	 * (call_direct) waits for its reply until `until` (ns): if that link
	 * lets this thread read its connection now, read it here, handling
	 * all it brings as the link's reader would, so the reply wakes this
	 * thread from the socket. true: it read until the entry changed or a
	 * read timed out; look at the entry again. false: it did not read, or
	 * stopped for the link's own thread (the end of the connection, bad
	 * input) or because a read could outlast `until`: wait as usual. A
	 * read blocks 50 ms at most, so msgbus_shutdown ends the wait within
	 * that. */
	bool (*await_reply)(msgbus_bus *b, uint32_t entry, uint64_t until);
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
	_Atomic uint32_t marks_used; /* our commit marks in use, a bit each (pubsub/mark.c) */
	uint64_t spin_ns, check_ns;
	pthread_mutex_t lock;      /* guards the topic cache refresh and subs list */
	pthread_mutex_t reap_lock; /* one reaper per handle (OFD locks are per handle) */
	struct mb_topic_cache *topics;
	struct msgbus_sub *subs;   /* open subscriptions of this handle */
	struct msgbus_service *services;
	struct msgbus_buf *loans;  /* open loans */
	struct mb_links *links;    /* tcp:// links, if any */
	const struct mb_bus_hooks *bus_hooks;   /* bus.c, at open */
	const struct mb_reap_hooks *reap_hooks; /* bus.c, at open */
	_Atomic(const struct mb_link_hooks *) link_hooks; /* link/links.c */
	/* Library threads (serve workers) looking at `links` through the
	 * spin and replied hooks: msgbus_close frees the links once none is
	 * (link/links.c:links_enter). */
	_Atomic uint32_t link_users;
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

/* Allocate the pages of [off, off + len) of a shm:// segment before they
 * are first written (inproc:// memory needs nothing). 0 or MSGBUS_E*. */
static inline int mb_seg_back(msgbus_bus *b, uint64_t off, uint64_t len)
{
	if (b->seg.fd < 0)
		return 0;
	int rc = mb_fd_back(b->seg.fd, off, len);
	return rc ? mb_syserr(rc) : 0;
}

#endif
