/*
 * baseline_ring.h - the reference the libmsgbus benchmark compares against.
 *
 * A minimal single-producer ring of variable-size records in shared memory,
 * with one to BR_MAX_READERS consumers that each see every record (with one
 * reader it is a plain SPSC ring). It is what a careful programmer would write
 * by hand for one fixed pair of processes: no subjects, no participants, no
 * crash handling, no sleeping. Waiting is pure spinning (no pause
 * instruction: on this kind of VM it exits to the hypervisor; sched_yield()
 * only after a long spell so that more spinners than cores still make
 * progress); there is no futex.
 *
 *  - the ring is mmap(MAP_SHARED | MAP_ANONYMOUS) and must be created before
 *    fork(); producer and consumers then run in separate processes;
 *  - head (written by the producer) and each reader's tail live on their own
 *    cache lines; each side keeps a private cached copy of the other side's
 *    index and reloads it only when the cached value says "full" / "empty";
 *  - positions are free-running 64-bit byte counters; the data area is a
 *    power of two; a record is an 8-byte header plus payload, rounded up to
 *    an 8-byte multiple, and never wraps: when it does not fit before the end,
 *    a padding record fills the rest and the record starts at offset 0;
 *  - publication is a release store of head, consumption a release store of
 *    the reader's tail (C11 atomics).
 *
 * Header-only (static functions) so that tests/perf/bench.c stays one
 * translation unit.
 */
#ifndef BASELINE_RING_H
#define BASELINE_RING_H

#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#define BR_MAX_READERS 4
/* Record alignment: 8, as issue 9 item 6 asks (64 B messages take 72
 * bytes, not 128). A bench may define it before including this file. */
#ifndef BR_REC_ALIGN
#define BR_REC_ALIGN 8u
#endif
#define BR_HDR_SIZE 8u
#define BR_PAD_LEN 0xffffffffu
#define BR_SPINS_BEFORE_YIELD 4096u

/* A compiler barrier only: PAUSE exits to the hypervisor on this kind of
 * VM (issue 9 item 6). */
#define br_cpu_relax() atomic_signal_fence(memory_order_seq_cst)

typedef struct br_line {
	_Alignas(64) _Atomic uint64_t v;
} br_line;

typedef struct br_ring {
	br_line head;                     /* bytes published (producer) */
	br_line tail[BR_MAX_READERS];     /* bytes consumed, per reader */
	_Alignas(64) uint64_t size;       /* data bytes, power of two */
	uint64_t mask;
	uint32_t nreaders;
	size_t map_len;
	_Alignas(64) unsigned char data[];
} br_ring;

typedef struct br_hdr {
	uint32_t len; /* payload bytes, or BR_PAD_LEN */
	uint32_t reserved;
} br_hdr;

/* Producer-private state (lives in the producer's own memory). */
typedef struct br_prod {
	uint64_t head;     /* next position to write */
	uint64_t min_tail; /* cached slowest reader position */
	uint64_t pending;  /* bytes the current reservation will publish */
} br_prod;

/* Consumer-private state. */
typedef struct br_cons {
	uint64_t pos;        /* next position to read */
	uint64_t head_cache; /* cached producer head */
	unsigned id;         /* reader index */
} br_cons;

static inline void br_spin(unsigned *n)
{
	if (++*n < BR_SPINS_BEFORE_YIELD) {
		br_cpu_relax();
	} else {
		*n = 0;
		sched_yield();
	}
}

static inline uint64_t br_rec_size(size_t len)
{
	return ((uint64_t)len + BR_HDR_SIZE + BR_REC_ALIGN - 1) &
	       ~(uint64_t)(BR_REC_ALIGN - 1);
}

/* data_size: power of two >= 4096. Returns NULL on failure. */
static inline br_ring *br_create(size_t data_size, unsigned nreaders)
{
	br_ring *r;
	size_t len;
	void *p;

	if (data_size < 4096 || (data_size & (data_size - 1)) != 0 ||
	    nreaders == 0 || nreaders > BR_MAX_READERS)
		return NULL;
	len = sizeof(br_ring) + data_size;
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
	         -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	r = p; /* zero-filled by mmap */
	r->size = data_size;
	r->mask = data_size - 1;
	r->nreaders = nreaders;
	r->map_len = len;
	/* Touch the data area once so that page faults are not measured. */
	memset(r->data, 0, data_size);
	return r;
}

static inline void br_destroy(br_ring *r)
{
	if (r)
		munmap(r, r->map_len);
}

static inline void br_prod_init(br_prod *p)
{
	memset(p, 0, sizeof(*p));
}

static inline void br_cons_init(br_cons *c, unsigned id)
{
	memset(c, 0, sizeof(*c));
	c->id = id;
}

static inline uint64_t br_load_min_tail(br_ring *r)
{
	uint64_t m = atomic_load_explicit(&r->tail[0].v, memory_order_acquire);
	for (unsigned i = 1; i < r->nreaders; i++) {
		uint64_t t = atomic_load_explicit(&r->tail[i].v,
		                                  memory_order_acquire);
		if (t < m)
			m = t;
	}
	return m;
}

/*
 * Reserve room for a len-byte record, spinning while the ring is full.
 * Returns where to write the payload; br_commit() publishes it.
 * len + 8 must not exceed the ring size.
 */
static inline void *br_reserve(br_ring *r, br_prod *p, size_t len)
{
	uint64_t need = br_rec_size(len);
	uint64_t off = p->head & r->mask;
	uint64_t contig = r->size - off;
	uint64_t total = contig < need ? contig + need : need;
	unsigned spins = 0;
	br_hdr *h;

	while (p->head + total - p->min_tail > r->size) {
		p->min_tail = br_load_min_tail(r);
		if (p->head + total - p->min_tail <= r->size)
			break;
		br_spin(&spins);
	}
	if (contig < need) {
		h = (br_hdr *)(void *)(r->data + off);
		h->len = BR_PAD_LEN;
		p->head += contig;
		off = 0;
	}
	h = (br_hdr *)(void *)(r->data + off);
	h->len = (uint32_t)len;
	p->pending = need;
	return r->data + off + BR_HDR_SIZE;
}

static inline void br_commit(br_ring *r, br_prod *p)
{
	p->head += p->pending;
	p->pending = 0;
	atomic_store_explicit(&r->head.v, p->head, memory_order_release);
}

/* Next record (spinning while empty): payload pointer, *len its size. */
static inline const void *br_peek(br_ring *r, br_cons *c, size_t *len)
{
	unsigned spins = 0;
	const br_hdr *h;

	for (;;) {
		while (c->pos == c->head_cache) {
			c->head_cache = atomic_load_explicit(&r->head.v,
			                                     memory_order_acquire);
			if (c->pos != c->head_cache)
				break;
			br_spin(&spins);
		}
		h = (const br_hdr *)(const void *)(r->data + (c->pos & r->mask));
		if (h->len == BR_PAD_LEN) {
			c->pos += r->size - (c->pos & r->mask);
			continue;
		}
		*len = h->len;
		return (const unsigned char *)h + BR_HDR_SIZE;
	}
}

/* Give back the record returned by the last br_peek(). */
static inline void br_release(br_ring *r, br_cons *c, size_t len)
{
	c->pos += br_rec_size(len);
	atomic_store_explicit(&r->tail[c->id].v, c->pos, memory_order_release);
}

#endif /* BASELINE_RING_H */
