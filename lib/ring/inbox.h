/*
 * inbox.h - the inbox of one subscription (DESIGN.md section 4): a
 * multi-producer, single-consumer ring of variable-size records in shared
 * memory. Producers reserve, write in place and commit (or abort); the one
 * consumer reads records in place and releases them in batches.
 *
 * Layout: a control block (struct mb_inbox_ctl) and a power-of-two data area,
 * both placed by offsets inside a segment. Positions are free-running 64-bit
 * byte counters; a record never wraps (a padding record fills the end).
 *
 * Record, 8-byte aligned: a header word (state, owner, size), an info word
 * (subject and payload lengths), the subject padded to 8 bytes, the payload.
 * The header is written when the record is reserved and changes state by
 * CAS only: commit (with release) or abort.
 *
 * Reserving takes the reserve word for a few stores: a CAS from (r, free)
 * to (r, locked by owner), a zero in the word after the record, the
 * record's header (release), then a release store of (r + size, free). So
 * the word at the consumer's cursor is 0 or a header of this lap: stale
 * bytes of an earlier lap are never taken for a header, the consumer polls
 * only the line it is about to read, and nothing has to be cleaned behind
 * it (the zero lands in the line the next record writes anyway). Because
 * the lock word names its holder, a holder that dies is detected exactly and
 * its claim finished or undone by whoever waits (see inbox.c).
 *
 * Shared memory is untrusted: every word read from it is read once,
 * validated, and a bad one gives MSGBUS_EPROTO, never an access out of the
 * data area or an unbounded loop.
 */
#ifndef MB_INBOX_H
#define MB_INBOX_H

#include "shm/layout.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifndef MB_NO_WAIT
#define MB_NO_WAIT 0ull /* a deadline: fail with MSGBUS_EAGAIN at once */
#endif

#define MB_INBOX_MIN_SIZE 4096u
#define MB_INBOX_MAX_SIZE (1ull << 30)
#define MB_INBOX_REC_HDR 16u /* header word + info word */

/* The control block, struct mb_inbox_ctl, is in shm/layout.h. */

/* A process-local view of one inbox: pointers checked against the segment. */
struct mb_inbox {
	struct mb_inbox_ctl *ctl;
	unsigned char *data;
	uint64_t size, mask, key; /* local copies, validated */
};

/* Lay out a new inbox (the caller owns the memory exclusively). 0 or
 * MSGBUS_EINVAL when the placement does not fit the segment. */
int mb_inbox_format(void *base, uint64_t seg_size, uint64_t ctl_off, uint64_t data_off,
                    uint64_t data_size);
/* View an inbox formatted by anyone. 0, MSGBUS_EINVAL (placement) or
 * MSGBUS_EPROTO (the control block disagrees). */
int mb_inbox_attach(struct mb_inbox *ib, void *base, uint64_t seg_size, uint64_t ctl_off,
                    uint64_t data_off, uint64_t data_size);
/* Largest payload a record with this subject can carry (half the ring). */
uint32_t mb_inbox_max_payload(const struct mb_inbox *ib, uint32_t subject_len);

/* Exact liveness of a participant (e.g. its OFD lock): true only when dead.
 * Never a timeout: a dead owner's claim is undone, a live one's never. */
typedef bool (*mb_owner_dead_fn)(void *ctx, uint32_t owner);

struct mb_inbox_msg;
/* A CLAIMED record m of dead participant owner: true to commit it (its
 * owner had finished writing it and begun committing, e.g. a commit mark),
 * false to abort it. May be NULL: always abort. */
typedef bool (*mb_rec_keep_fn)(void *ctx, uint32_t owner, const struct mb_inbox_msg *m);

/* ---- producers ---------------------------------------------------------- */

struct mb_inbox_prod {
	struct mb_inbox ib;
	uint64_t release_cache; /* the consumer's release, re-read only when full */
	uint32_t owner;         /* participant index written into our headers */
	uint64_t spin_ns;       /* spin this long before sleeping for room */
	mb_owner_dead_fn owner_dead; /* may be NULL: never repair a lock */
	void *owner_ctx;
	/* May be NULL. Once *stop is non-zero, a wait for room or for the
	 * lock returns MSGBUS_ECLOSED (the handle's msgbus_shutdown). */
	const _Atomic int *stop;
};

/* A reservation: write subject and payload, then commit or abort it. */
struct mb_inbox_res {
	uint64_t pos, hdr; /* where, and the CLAIMED header we wrote there */
	void *subject;
	void *payload;
};

/* owner <= MB_OWNER_MAX. owner_dead is asked when the reserve lock stays
 * held: a dead holder's claim is then finished or undone. */
void mb_inbox_prod_init(struct mb_inbox_prod *p, const struct mb_inbox *ib, uint32_t owner,
                        uint64_t spin_ns, mb_owner_dead_fn owner_dead, void *owner_ctx);
/*
 * Reserve a record. deadline: MB_NO_WAIT, an absolute CLOCK_MONOTONIC time
 * in ns, or UINT64_MAX. 0, MSGBUS_EAGAIN (full, no wait), MSGBUS_ETIMEDOUT,
 * MSGBUS_EMSGSIZE (over mb_inbox_max_payload) or MSGBUS_EPROTO.
 */
int mb_inbox_reserve(struct mb_inbox_prod *p, uint32_t subject_len, uint32_t payload_len,
                     uint64_t deadline, struct mb_inbox_res *res);
/*
 * Reserve, copy and commit in one call: the record is copied while the
 * reserve lock is held and written COMMITTED at once, so there is no commit
 * CAS and the consumer never waits on it half written; other producers of
 * this inbox wait for the copy. Measured 1:1 between processes (bench_inbox),
 * as a share of the baseline ring: 64 B 0.46x (reserve + commit 0.36x),
 * 4 KiB 0.67x (0.57x), 64 KiB 0.97x (0.92x). mb_inbox_reserve is for writing
 * in place and for holding several inboxes' reservations before committing
 * any (abort them if one fails). Codes as mb_inbox_reserve.
 */
int mb_inbox_put(struct mb_inbox_prod *p, const void *subject, uint32_t subject_len,
                 const void *payload, uint32_t payload_len, uint64_t deadline);
/* One payload of mb_inbox_put_many. */
struct mb_inbox_part {
	const void *data;
	uint32_t len;
};
/*
 * mb_inbox_put for a run of n records with the same subject bytes (but for
 * a counter: the 8 bytes at seq_off of record i's subject hold seq0 + i)
 * and payloads parts[0..n): as many as fit now, in order, at most
 * MB_INBOX_PUT_MANY_BYTES of them, under one hold of the reserve lock, with
 * one release of the reserve word and one wake-up for all. Never waits.
 * Each record is published as mb_inbox_put publishes its one (the word
 * after it zeroed, then its header with release), so the consumer reads
 * the first while the next is written. 0 with *done >= 1, MSGBUS_EINVAL
 * (n is 0, or seq_off + 8 over subject_len), MSGBUS_EAGAIN (no room for
 * the first), or a code of mb_inbox_reserve. A producer that dies holding
 * the lock keeps the records it published; the position is moved past
 * them by whoever repairs the lock.
 */
#define MB_INBOX_PUT_MANY_BYTES (64u << 10)
int mb_inbox_put_many(struct mb_inbox_prod *p, const void *subject, uint32_t subject_len,
                      uint32_t seq_off, uint64_t seq0, const struct mb_inbox_part *parts,
                      uint32_t n, uint32_t *done);
/* Publish the record and wake the consumer if it sleeps. 0, or
 * MSGBUS_EPEERDIED when a reader took us for dead and aborted it, or
 * MSGBUS_EPROTO when the header was overwritten. */
int mb_inbox_commit(struct mb_inbox_prod *p, const struct mb_inbox_res *res);
/* Give the reservation up: the consumer skips it. */
void mb_inbox_abort(struct mb_inbox_prod *p, const struct mb_inbox_res *res);

/* ---- the consumer ------------------------------------------------------- */

struct mb_inbox_cons {
	struct mb_inbox ib;
	uint64_t cursor;   /* the record peek returns */
	uint64_t released; /* what we last stored to ctl->release */
	uint64_t woke;     /* released when we last woke producers */
	uint64_t cur_size; /* size of the record peek returned, 0 if none */
	uint64_t flush_bytes;
	uint64_t stuck_pos, stuck_polls;
	bool eager; /* a producer waited: give each step back until we run dry */
	mb_owner_dead_fn owner_dead; /* may be NULL: never abort */
	void *owner_ctx;
	mb_rec_keep_fn keep; /* may be NULL (mb_inbox_cons_keep) */
	void *keep_ctx;
	uint64_t spin_ns, check_ns;
	const _Atomic int *stop; /* as in mb_inbox_prod: ends a peek_wait */
};

struct mb_inbox_msg {
	const char *subject; /* in the ring, not NUL-terminated */
	uint32_t subject_len;
	uint32_t owner;
	const void *payload; /* in the ring, 8-byte aligned */
	uint32_t payload_len;
};

/* One consumer per inbox; it starts at the inbox's release position. */
void mb_inbox_cons_init(struct mb_inbox_cons *c, const struct mb_inbox *ib,
                        mb_owner_dead_fn owner_dead, void *owner_ctx, uint64_t spin_ns,
                        uint64_t check_ns);
/* A dead owner's CLAIMED record at the cursor is committed when keep says
 * so, else aborted (the default). */
void mb_inbox_cons_keep(struct mb_inbox_cons *c, mb_rec_keep_fn keep, void *ctx);
/*
 * The next committed record, in place (aborted and padding records are
 * skipped). It stays valid until mb_inbox_consume. 0, MSGBUS_EAGAIN when
 * there is none yet, or MSGBUS_EPROTO. Calling it again without consuming
 * returns the same record. Consumed space goes back to producers when a
 * batch (a quarter of the ring) is full, when peek finds nothing and a
 * sixteenth of a batch is pending, and always before peek_wait sleeps: a
 * consumer that only polls with peek calls mb_inbox_flush when it stops.
 */
int mb_inbox_peek(struct mb_inbox_cons *c, struct mb_inbox_msg *m);
/* The same, waiting until deadline (see mb_inbox_reserve): spin, then
 * sleep on the eventcount; a record (or the reserve lock) held by a dead
 * owner is aborted (or repaired). */
int mb_inbox_peek_wait(struct mb_inbox_cons *c, struct mb_inbox_msg *m, uint64_t deadline);
/* After mb_ec_prepare (and mb_fence_heavy) on data_ec, as a sleeper: is
 * there something peek would take or step over at the cursor? false means
 * whatever comes next signals data_ec (a CLAIMED head signals at its
 * commit). seq_cst: the second half of the Dekker pair with put's and
 * commit's signal, as in wait_data. */
bool mb_inbox_ready(const struct mb_inbox_cons *c);
/* Is everything reserved so far read (the reserve word free at our cursor)? */
bool mb_inbox_drained(const struct mb_inbox_cons *c);
/* Give back every consumed byte now and wake producers waiting for room. */
void mb_inbox_flush(struct mb_inbox_cons *c);
/* Done with the record peek returned; its space is given back in batches.
 * Inline: it runs once per message. */
static inline void mb_inbox_consume(struct mb_inbox_cons *c)
{
	c->cursor += c->cur_size;
	c->cur_size = 0;
	uint64_t pending = c->cursor - c->released;

	/* A producer waited: a step at a time until we run dry (a producer
	 * that sleeps again meanwhile has recv.c give back each record). */
	if (pending >= c->flush_bytes || (c->eager && pending >= c->flush_bytes / 16))
		mb_inbox_flush(c);
}
/*
 * Give back every consumed byte now, for producers that look (one that
 * failed without waiting finds the room at its next try), but wake those
 * that sleep only once a step (a sixty-fourth of the ring) was given back
 * since the last wake; running dry, or a batch, wakes them in any case.
 * So a producer held back by a consumer that only just keeps up sleeps
 * once per step, not once per record (on two cores, a wake-up per
 * record of a 64 B stream over a TCP link cost more than the record).
 * A consumer that stops before a step leaves a sleeper to its own
 * re-check (inbox.c: IB_ROOM_RECHECK_NS).
 */
void mb_inbox_give(struct mb_inbox_cons *c);
/* Records committed or being written from position from (the consumer's
 * cursor) to the reserve position: a snapshot any thread may take; 0 when
 * from is not within a lap. */
uint64_t mb_inbox_count(const struct mb_inbox *ib, uint64_t from);
/* A dead participant's claims, for whoever reaps it before its index is
 * used again (after that, owner names a live one and waiters would never
 * give up): its reserve lock is repaired and its CLAIMED records from the
 * consumer's release on are committed where keep (may be NULL) says so,
 * else aborted; the consumer is woken. */
void mb_inbox_reap_owner(const struct mb_inbox *ib, uint32_t owner, mb_rec_keep_fn keep,
                         void *ctx);

#endif
