/*
 * layout.h - the shared-memory layout of a bus. shm:// and inproc:// use
 * the same layout; nothing in it is a pointer. Region offsets are never read
 * from the segment: they are computed from the configuration, which is
 * validated on attach, so every index below is checked against local values.
 */
#ifndef MB_LAYOUT_H
#define MB_LAYOUT_H

#include "platform/doorbell.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define MB_MAGIC 0x3153554247534d4dull /* "MMSGBUS1" little-endian */
#define MB_LAYOUT_VERSION 2u
#define MB_LINE 128u      /* hot words sit alone on lines this wide */
#define MB_PAGE 4096u
#define MB_SUBJECT_MAX 255u

_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "32-bit atomics must be lock-free");
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free");

/* Hard limits a configuration is checked against (on create and attach). */
#define MB_MAX_RING_SLOTS (1u << 20)
#define MB_MAX_SLOT_SIZE 65536u
#define MB_MAX_MSG_SIZE (256u << 20)
#define MB_MAX_BUFFERS 4096u
#define MB_MAX_SUBJECTS 4096u
#define MB_MAX_SUBS 1024u
#define MB_MAX_PARTICIPANTS 512u
#define MB_MAX_SEGMENT (8ull << 30)
#define MB_MIN_INBOX 4096u        /* = MB_INBOX_MIN_SIZE */
#define MB_MAX_INBOX (256u << 20)

struct mb_config {
	uint32_t ring_slots;
	uint32_t slot_size;
	uint32_t max_msg_size;
	uint32_t large_buffers;
	uint32_t max_subjects;
	uint32_t max_subs;
	uint32_t max_participants;
	uint32_t spin_us;
	uint32_t crash_bound_ms;
	uint32_t inbox_size; /* bytes of each subscription's inbox, power of two */
};

enum { MB_SEG_INIT = 0, MB_SEG_READY = 0x52454459 /* "READ" */ };

struct mb_header {
	uint64_t magic;
	uint32_t version;
	uint32_t header_size;
	uint64_t segment_size;
	uint64_t layout_hash;
	struct mb_config cfg;
	_Atomic uint32_t state;      /* READY is stored last, with release */
	_Atomic uint32_t ctl_owner;  /* control-plane lock: 0 or participant+1 */
	_Atomic uint32_t topics_gen; /* bumped when a subject or cursor appears */
	_Atomic uint32_t interest_gen; /* bumped when subscriptions or services change */
	_Alignas(MB_LINE) _Atomic uint32_t any_ec; /* wildcard subscribers park here */
	/* The large buffer to try first: whoever takes one moves it past, so
	 * every publisher recycles the pool oldest first. Only a hint. */
	_Alignas(MB_LINE) _Atomic uint32_t buf_next;
};

/* A participant is an open bus handle. Its liveness is the OFD lock on
 * byte 1 + index of the segment file (shm) or its state (inproc). */
enum { MB_PART_FREE = 0, MB_PART_ACTIVE = 1 };
#define MB_PARTF_BRIDGE 0x1u
#define MB_COMMIT_MARKS 4u /* a link to another bus: its messages stay one hop */
struct mb_part {
	_Atomic uint32_t state;
	_Atomic uint32_t pid; /* informational only: liveness never uses it */
	_Atomic uint32_t flags;
	_Atomic uint32_t reply_ec; /* any reply to this participant's calls */
	/* Commit marks (pubsub/mark.c): seq + 1 of a publish whose records
	 * are all written and whose commits have begun, 0 when free. The
	 * reaper of a dead participant commits its CLAIMED records of such a
	 * publish and aborts the others. One per thread of the handle that
	 * is committing at the same moment. */
	_Atomic uint64_t commit_mark[MB_COMMIT_MARKS];
	/* Beside each mark, written before it: for a large message, the
	 * value its buffer's pub_put takes once the publisher has counted
	 * the records' references (after the mark). The reaper commits a
	 * marked record of a large buffer only if pub_put already equals it
	 * (mark.c). */
	_Atomic uint32_t commit_put[MB_COMMIT_MARKS];
	uint8_t pad[MB_LINE - 16 - 12 * MB_COMMIT_MARKS];
};
_Static_assert(sizeof(struct mb_part) == MB_LINE, "a participant is one line");

/* Subscription slot word: gen:32 | owner:16 | flags:8 | state:8. */
enum { MB_SUB_FREE = 0, MB_SUB_RESERVED = 1, MB_SUB_ACTIVE = 2 };
#define MB_SUBF_LOSSY 0x1u
#define MB_SUBF_QUEUE 0x2u   /* a service's workers share one cursor */
/* A further pattern of a link's subscription: it has no inbox; a publisher
 * matching it writes to slot inbox_slot's inbox (route.c checks it). */
#define MB_SUBF_ALIAS 0x4u
#define MB_OWNER_SHARED 0xffffu /* queue slots: members[] says who */
static inline uint64_t mb_subw(uint32_t gen, uint32_t owner, uint32_t flags, uint32_t st)
{
	return (uint64_t)gen << 32 | (uint64_t)(owner & 0xffff) << 16 |
	       (uint64_t)(flags & 0xff) << 8 | (st & 0xff);
}
#define MB_SUBW_GEN(w) ((uint32_t)((w) >> 32))
#define MB_SUBW_OWNER(w) ((uint32_t)((w) >> 16) & 0xffff)
#define MB_SUBW_FLAGS(w) ((uint32_t)((w) >> 8) & 0xff)
#define MB_SUBW_STATE(w) ((uint32_t)(w) & 0xff)

struct mb_subslot {
	_Atomic uint64_t word;
	uint32_t pattern_len;
	char pattern[MB_SUBJECT_MAX + 1];
	/* Alias slots: the slot whose inbox takes their messages. Written
	 * before the release store of ACTIVE, read after the acquire load. */
	uint32_t inbox_slot;
	/* Queue slots: one bit per participant that works for the service. */
	_Atomic uint64_t members[MB_MAX_PARTICIPANTS / 64];
	/* Messages lossy publishers could not put in this slot's inbox; reset
	 * when a subscription takes the slot. */
	_Atomic uint64_t dropped;
	uint8_t pad2[MB_LINE * 3 - 8 - 4 - (MB_SUBJECT_MAX + 1) - 4 - MB_MAX_PARTICIPANTS / 8 - 8];
};

/* Per topic and subscription slot: the subscription's read position. A
 * cursor counts only while gen equals its subscription slot's generation. */
#define MB_CURSOR_NONE UINT64_MAX
struct mb_cursor {
	_Atomic uint64_t gen;
	_Atomic uint64_t release; /* every position below it is consumed */
	uint8_t pad[MB_LINE - 16];
};

#define MB_TOPIC_BELLS 16u /* workers of one service with a descriptor */
enum { MB_TOPIC_FREE = 0, MB_TOPIC_INIT = 1, MB_TOPIC_READY = 2 };
struct mb_topic {
	_Atomic uint32_t state;
	uint32_t name_len;
	uint64_t name_hash;
	char name[MB_SUBJECT_MAX + 1];
	_Alignas(MB_LINE) _Atomic uint64_t tail;  /* next position to claim */
	_Alignas(MB_LINE) _Atomic uint64_t gate;  /* cached minimum release */
	_Alignas(MB_LINE) _Atomic uint32_t data_ec;  /* readers park here */
	_Alignas(MB_LINE) _Atomic uint32_t space_ec; /* publishers park here */
	/* Service queues: bells of the workers that asked for a descriptor
	 * (msgbus_service_fd), rung when data_ec is signalled. */
	_Alignas(MB_LINE) struct mb_bell bells[MB_TOPIC_BELLS];
	/* Subscription slots that ever had a cursor here: the gate scans
	 * only these. */
	_Alignas(MB_LINE) _Atomic uint64_t cursor_mask[MB_MAX_SUBS / 64];
};

/*
 * Slot stamp: seq:48 | owner:14 | state:2. A slot for position p holds
 * seq == p once claimed; before that it holds p - ring_slots (last lap).
 */
enum { MB_ST_CLAIMED = 0, MB_ST_COMMITTED = 1, MB_ST_ABORTED = 2,
       MB_ST_TAKEN = 3 /* service rings: a worker is copying it out */ };
#define MB_SEQ_MASK ((1ull << 48) - 1)
#define MB_OWNER_MAX 0x3fffu
static inline uint64_t mb_stamp(uint64_t seq, uint32_t owner, uint32_t st)
{
	return (seq & MB_SEQ_MASK) << 16 | (uint64_t)(owner & MB_OWNER_MAX) << 2 | st;
}
#define MB_STAMP_SEQ(s) ((s) >> 16)
#define MB_STAMP_OWNER(s) ((uint32_t)((s) >> 2) & MB_OWNER_MAX)
#define MB_STAMP_STATE(s) ((uint32_t)(s) & 3)

enum { MB_KIND_INLINE = 1, MB_KIND_LARGE = 2 };
struct mb_slot {
	_Atomic uint64_t stamp;
	uint32_t len;
	uint16_t kind;
	uint16_t pub;     /* publishing participant */
	uint64_t reserved;
	uint32_t buf;     /* large buffer index (KIND_LARGE) */
	uint32_t buf_gen;
	/* payload follows */
};
#define MB_SLOT_HDR ((uint32_t)sizeof(struct mb_slot))

/* Large buffer state: FREE, LOANED(owner) or PUBLISHED(topic, position). */
#define MB_BUF_FREE 0ull
#define MB_BUF_LOANED(owner) (1ull << 62 | (uint64_t)(owner))
#define MB_BUF_PUBLISHED(topic, seq) (2ull << 62 | (uint64_t)(topic) << 48 | ((seq) & MB_SEQ_MASK))
#define MB_BUF_KIND(w) ((w) >> 62)
#define MB_BUF_OWNER(w) ((uint32_t)(w) & 0xffff)
#define MB_BUF_TOPIC(w) ((uint32_t)((w) >> 48) & 0x3fff)
#define MB_BUF_SEQ(w) ((w) & MB_SEQ_MASK)
/* SHARED: referenced by inbox records; refs counts them and the buffer is
 * free again when the last reader releases its record. */
#define MB_BUF_SHARED(owner) (3ull << 62 | (uint64_t)(owner))
#define MB_BUF_PUB_BIAS (1u << 30) /* the publisher's own reference while it puts */
struct mb_bufctl {
	_Atomic uint64_t state;
	_Atomic uint32_t gen; /* bumped on every loan: lossy readers detect reuse */
	_Atomic uint32_t refs; /* SHARED: inbox records still referencing it */
	_Atomic uint32_t backed; /* its pages are allocated (shm:// segments) */
	_Atomic uint32_t pub_put; /* SHARED: records its publisher put (its reaper drops the rest) */
};

/*
 * Request/reply: each participant has MB_CALLS entries where its requests
 * wait for their replies. A worker takes an entry from PENDING to TAKEN when
 * it takes the request, to WRITING while it copies the reply in, and to
 * REPLIED. Every transition is a CAS that includes the correlation id, so a
 * late reply cannot land in an entry that was reused.
 * word: corr:32 | worker:16 | state:16.
 */
#define MB_CALLS 64u
#define MB_CALL_SIZE 256u
enum { MB_CALL_FREE = 0, MB_CALL_PENDING = 1, MB_CALL_TAKEN = 2, MB_CALL_WRITING = 3,
       MB_CALL_REPLIED = 4,
       MB_CALL_WORKER_DIED = 5 /* set by whoever reaped the worker */ };
static inline uint64_t mb_callw(uint32_t corr, uint32_t worker, uint32_t st)
{
	return (uint64_t)corr << 32 | (uint64_t)(worker & 0xffff) << 16 | (st & 0xffff);
}
#define MB_CALLW_CORR(w) ((uint32_t)((w) >> 32))
#define MB_CALLW_WORKER(w) ((uint32_t)((w) >> 16) & 0xffff)
#define MB_CALLW_STATE(w) ((uint32_t)(w) & 0xffff)
#define MB_CALL_INLINE_BUF UINT32_MAX
#define MB_CALL_ERROR (UINT32_MAX - 1) /* a failed call: len holds the MSGBUS_E* code */
struct mb_call {
	_Atomic uint64_t word;
	_Atomic uint32_t ec; /* the requester parks here */
	uint32_t len;
	uint32_t buf; /* a large buffer, or MB_CALL_INLINE_BUF */
	uint32_t pad;
	struct mb_bell bell; /* the call's descriptor (msgbus_call_fd), beside ec */
	uint8_t data[MB_CALL_SIZE - 40];
};
#define MB_CALL_INLINE (MB_CALL_SIZE - 40u)
_Static_assert(sizeof(struct mb_call) == MB_CALL_SIZE, "mb_call is MB_CALL_SIZE bytes");

/* What precedes a request's payload in the service ring. */
struct mb_req_hdr {
	uint32_t corr;
	uint16_t from;  /* requester's participant index */
	uint16_t entry; /* its call entry */
	uint64_t deadline_ns; /* CLOCK_MONOTONIC, shared by the host */
};

/* Offsets of every region, computed from a validated configuration. */
struct mb_geometry {
	uint64_t parts, calls, subs, topics, topic_stride, cursors, slots, bufctl, bufdata;
	uint64_t buf_stride, inbox_ctl, inbox_data, size;
	uint64_t eager; /* bytes from 0 allocated at creation; the rest on use */
};

/* The control block of a subscription's inbox (ring/inbox.h). Each hot word
 * on its own line; key and size never change after mb_inbox_format and are
 * read once by mb_inbox_attach. */
struct mb_inbox_ctl {
	_Alignas(MB_LINE) _Atomic uint64_t reserve; /* next free position, lock bit, holder */
	_Alignas(MB_LINE) _Atomic uint64_t release; /* consumer: all below it is consumed */
	_Alignas(MB_LINE) _Atomic uint32_t data_ec;  /* the consumer sleeps here */
	struct mb_bell bell; /* the subscription's descriptor (msgbus_sub_fd) */
	_Alignas(MB_LINE) _Atomic uint32_t space_ec; /* producers waiting for room sleep here */
	_Alignas(MB_LINE) uint64_t key;  /* scrambles header check bits (see inbox.c) */
	uint64_t size;                   /* bytes of the data area */
};
_Static_assert(sizeof(struct mb_inbox_ctl) == (size_t)5 * MB_LINE, "mb_inbox_ctl is five lines");

/* What precedes the subject in an inbox record (it is written as part of
 * the record's subject): which subscription it is for, what it carries,
 * and the publisher's sequence number. */
enum { MB_REC_INLINE = 1, MB_REC_LARGE = 2 };
struct mb_rec_pfx {
	uint32_t sub_gen; /* the subscription slot's generation it was put for */
	uint16_t kind;
	uint16_t pad;
	uint64_t seq;     /* per publishing handle, increasing */
};
/* A MB_REC_LARGE record's payload. */
struct mb_rec_large {
	uint32_t buf, buf_gen, len, pad;
};

#endif
