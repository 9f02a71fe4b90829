/*
 * fuzz_segment.c - libFuzzer target for the segment header validator
 * (lib/shm/segment.c), as attach_locked() in lib/shm/seg_shm.c uses it on a
 * segment another process created: mb_header_check() on the mapping, which
 * runs mb_config_check(), mb_layout_hash() and mb_geometry() on the
 * configuration it finds there.
 *
 * Input: 8 bytes little-endian, the size of the mapping; then the first
 * bytes of the segment. A size of 0 stands for "the size the header's own
 * configuration computes to", and the harness also writes that size into
 * the header's segment_size, so the fuzzer can reach consistent segments of
 * any configuration without solving the size equation itself.
 *
 * The mapping is modelled as the input's segment bytes followed by zeros
 * (a file extended by ftruncate reads as zeros). mb_header_check reads only
 * the header (sizeof(struct mb_header) bytes, and nothing when the size is
 * below a page), so only that much is materialised: the block handed to it
 * is a heap block of exactly min(size, max(segment bytes, header)) bytes,
 * aligned as struct mb_header needs. AddressSanitizer thus reports a read
 * past the header of a mapping (past the input's bytes, when it gives more
 * than a header), or past the mapping when it is smaller than a header.
 *
 * Properties: a refusal is MSGBUS_EPROTO or MSGBUS_EINCOMPAT and leaves the
 * output alone; MSGBUS_EINCOMPAT, on which attach gives up at once where it
 * retries on MSGBUS_EPROTO, comes exactly for a READY header whose magic,
 * version, header size or layout hash is not this build's. An acceptance
 * means the header's identity fields are what this build writes, the
 * configuration passes mb_config_check(), its geometry is exactly the
 * mapping's size, every region fits in order inside it, and the limits the
 * rest of lib/ packs into bit fields hold. A fresh header written by
 * mb_header_init() from the accepted configuration is accepted again with
 * the same configuration, and its validated fields are the bytes that were
 * accepted (one encoding per valid header).
 * Built by `make fuzz`.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shm/segment.h"
#include "msgbus.h"
#include "fuzz.h"

#define HDR sizeof(struct mb_header)

/* A zeroed heap block of exactly n bytes, aligned as struct mb_header needs
 * (a mapping is page-aligned; a page is too costly under ASan). */
static uint8_t *mapping(size_t n)
{
	void *p = NULL;
	REQUIRE(posix_memalign(&p, _Alignof(struct mb_header), n ? n : 1) == 0 && p != NULL);
	memset(p, 0, n);
	return p;
}

static uint64_t le64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* a + n * each <= limit, without wrapping. */
static bool fits(uint64_t a, uint64_t n, uint64_t each, uint64_t limit)
{
	uint64_t len, end;
	return !__builtin_mul_overflow(n, each, &len) && !__builtin_add_overflow(a, len, &end) &&
	       end <= limit;
}

/* What an attacher indexes with: each region holds its array, the regions
 * come in order and do not overlap, and everything ends inside size. */
static void geometry_sound(const struct mb_config *c, uint64_t size)
{
	struct mb_geometry g;
	mb_geometry(c, &g);
	REQUIRE(g.size == size && size % MB_PAGE == 0 && size <= MB_MAX_SEGMENT);
	REQUIRE(g.parts >= HDR);
	REQUIRE(fits(g.parts, c->max_participants, sizeof(struct mb_part), g.calls));
	REQUIRE(fits(g.calls, (uint64_t)c->max_participants * MB_CALLS, sizeof(struct mb_call),
	             g.subs));
	REQUIRE(fits(g.subs, c->max_subs, sizeof(struct mb_subslot), g.topics));
	/* Within one topic: the struct, its cursors, its ring. */
	REQUIRE(g.cursors >= sizeof(struct mb_topic));
	REQUIRE(fits(g.cursors, c->max_subs, sizeof(struct mb_cursor), g.slots));
	REQUIRE(fits(g.slots, c->ring_slots, c->slot_size, g.topic_stride));
	REQUIRE(fits(g.topics, c->max_subjects, g.topic_stride, g.bufctl));
	REQUIRE(fits(g.bufctl, c->large_buffers, sizeof(struct mb_bufctl), g.bufdata));
	REQUIRE(g.buf_stride >= c->max_msg_size);
	REQUIRE(fits(g.bufdata, c->large_buffers, g.buf_stride, size));
	/* Alignment the shared structs need. */
	REQUIRE(g.calls % _Alignof(struct mb_call) == 0 && g.subs % _Alignof(struct mb_subslot) == 0);
	REQUIRE(g.topics % MB_LINE == 0 && g.topic_stride % MB_LINE == 0);
	REQUIRE(g.cursors % _Alignof(struct mb_cursor) == 0 && g.slots % 8 == 0);
	REQUIRE(g.bufctl % _Alignof(struct mb_bufctl) == 0 && g.bufdata % 64 == 0);
}

/* Facts lib/ relies on once the configuration is accepted. */
static void config_sound(const struct mb_config *c)
{
	REQUIRE(mb_config_check(c) == 0);
	REQUIRE(c->ring_slots >= 2 && (c->ring_slots & (c->ring_slots - 1)) == 0);
	REQUIRE(c->slot_size > MB_SLOT_HDR && c->slot_size % 64 == 0); /* inline_max > 0 */
	REQUIRE(c->max_msg_size >= 1);
	REQUIRE(c->large_buffers >= 1 && c->max_subjects >= 1 && c->max_subs >= 1);
	REQUIRE(c->max_participants >= 1);
	REQUIRE(c->max_subs <= MB_MAX_SUBS);               /* cursor_mask bits */
	REQUIRE(c->max_participants <= MB_MAX_PARTICIPANTS); /* members bits */
	REQUIRE(c->max_participants - 1 <= MB_OWNER_MAX);    /* stamp owner field */
	REQUIRE(c->max_subjects - 1 <= 0x3fffu);             /* MB_BUF_TOPIC field */
	REQUIRE(c->crash_bound_ms >= 1);
}

/* The fields mb_header_init writes and mb_header_check validates. */
static void same_validated_fields(const struct mb_header *a, const struct mb_header *b)
{
	REQUIRE(a->magic == b->magic && a->version == b->version);
	REQUIRE(a->header_size == b->header_size && a->segment_size == b->segment_size);
	REQUIRE(a->layout_hash == b->layout_hash);
	REQUIRE(memcmp(&a->cfg, &b->cfg, sizeof(a->cfg)) == 0);
	REQUIRE(atomic_load(&((struct mb_header *)a)->state) ==
	        atomic_load(&((struct mb_header *)b)->state));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 8)
		return 0;
	uint64_t map_size = le64(data);
	const uint8_t *seg = data + 8;
	size_t seg_len = size - 8;

	/* The header as the mapping holds it: input bytes, then zeros. */
	struct mb_header head;
	memset(&head, 0, HDR);
	memcpy(&head, seg, seg_len < HDR ? seg_len : HDR);
	bool patched = false;
	if (map_size == 0) {
		struct mb_geometry g;
		mb_geometry(&head.cfg, &g); /* unchecked: it may wrap, harmlessly */
		map_size = g.size;
		head.segment_size = map_size;
		patched = true;
	}

	/* Materialise min(map_size, max(seg_len, HDR)) bytes of the mapping. */
	size_t want = seg_len > HDR ? seg_len : HDR;
	size_t blen = map_size < want ? (size_t)map_size : want;
	uint8_t *block = mapping(blen);
	memcpy(block, seg, seg_len < blen ? seg_len : blen);
	if (patched && blen >= HDR)
		memcpy(block, &head, HDR);

	struct mb_config cfg, canary;
	memset(&canary, 0xa5, sizeof(canary));
	cfg = canary;
	int rc = mb_header_check(block, map_size, &cfg);
	/* MSGBUS_EINCOMPAT, which attach returns at once instead of retrying,
	 * means exactly: a finished header of another layout. */
	bool ready = map_size >= MB_PAGE && atomic_load(&head.state) == MB_SEG_READY;
	bool ours = head.magic == MB_MAGIC && head.version == MB_LAYOUT_VERSION &&
	            head.header_size == HDR && head.layout_hash == mb_layout_hash();
	REQUIRE((rc == MSGBUS_EINCOMPAT) == (ready && !ours));
	if (rc != 0) {
		REQUIRE(rc == MSGBUS_EPROTO || rc == MSGBUS_EINCOMPAT);
		REQUIRE(memcmp(&cfg, &canary, sizeof(cfg)) == 0);
		free(block);
		return 0;
	}

	/* Accepted: the mapping held a whole header that this build wrote. */
	REQUIRE(map_size >= MB_PAGE && blen >= HDR);
	const struct mb_header *h = (const struct mb_header *)block;
	REQUIRE(h->magic == MB_MAGIC && h->version == MB_LAYOUT_VERSION);
	REQUIRE(h->header_size == HDR && h->layout_hash == mb_layout_hash());
	REQUIRE(h->segment_size == map_size);
	REQUIRE(atomic_load(&((struct mb_header *)block)->state) == MB_SEG_READY);
	REQUIRE(memcmp(&cfg, (const void *)&h->cfg, sizeof(cfg)) == 0);
	config_sound(&cfg);
	geometry_sound(&cfg, map_size);

	/* Round trip through a header this build writes itself. */
	struct mb_header *fresh = (struct mb_header *)mapping(HDR);
	mb_header_init(fresh, &cfg, map_size);
	struct mb_config again = canary;
	REQUIRE(mb_header_check(fresh, map_size, &again) == 0);
	REQUIRE(memcmp(&again, &cfg, sizeof(cfg)) == 0);
	same_validated_fields(fresh, h);
	/* The same header on a mapping of any other size is refused. */
	again = canary;
	REQUIRE(mb_header_check(fresh, map_size + MB_PAGE, &again) == MSGBUS_EPROTO);
	REQUIRE(memcmp(&again, &canary, sizeof(again)) == 0);
	free(fresh);
	free(block);
	return 0;
}
