/*
 * segment.c - geometry of a segment, and writing and validating its header.
 * A header read from shared memory is untrusted: every field is copied
 * once into a local and checked before anything is computed from it.
 */
#include "shm/segment.h"
#include "msgbus.h"

#include <stddef.h>
#include <string.h>

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

void mb_geometry(const struct mb_config *c, struct mb_geometry *g)
{
	g->parts = MB_PAGE;
	g->calls = align_up(g->parts + (uint64_t)c->max_participants * sizeof(struct mb_part), MB_LINE);
	g->subs = align_up(g->calls + (uint64_t)c->max_participants * MB_CALLS * sizeof(struct mb_call),
	                   MB_LINE);
	g->topics = align_up(g->subs + (uint64_t)c->max_subs * sizeof(struct mb_subslot), MB_PAGE);
	g->cursors = align_up(sizeof(struct mb_topic), MB_LINE);
	g->slots = align_up(g->cursors + (uint64_t)c->max_subs * sizeof(struct mb_cursor), MB_LINE);
	g->topic_stride = align_up(g->slots + (uint64_t)c->ring_slots * c->slot_size, MB_LINE);
	g->bufctl = align_up(g->topics + (uint64_t)c->max_subjects * g->topic_stride, MB_PAGE);
	g->bufdata = align_up(g->bufctl + (uint64_t)c->large_buffers * sizeof(struct mb_bufctl), MB_PAGE);
	g->buf_stride = align_up(c->max_msg_size, MB_PAGE);
	g->inbox_ctl = align_up(g->bufdata + (uint64_t)c->large_buffers * g->buf_stride, MB_PAGE);
	g->inbox_data = align_up(g->inbox_ctl + (uint64_t)c->max_subs * sizeof(struct mb_inbox_ctl),
	                         MB_PAGE);
	g->size = align_up(g->inbox_data + (uint64_t)c->max_subs * c->inbox_size, MB_PAGE);
	/* Header, participants, calls, subscription slots and inbox control
	 * blocks are all used at once; topic rings, large buffers and inbox
	 * data get their pages when they are first used. */
	g->eager = g->topics;
}

/* A fingerprint of every shared struct: two builds that disagree on any
 * size or offset refuse each other's segments. */
uint64_t mb_layout_hash(void)
{
	const uint64_t v[] = {
		sizeof(struct mb_header), offsetof(struct mb_header, cfg),
		offsetof(struct mb_header, state), offsetof(struct mb_header, any_ec),
		sizeof(struct mb_config), sizeof(struct mb_part),
		sizeof(struct mb_subslot), offsetof(struct mb_subslot, pattern),
		sizeof(struct mb_cursor), sizeof(struct mb_topic),
		offsetof(struct mb_topic, tail), offsetof(struct mb_topic, gate),
		offsetof(struct mb_topic, data_ec), offsetof(struct mb_topic, space_ec),
		sizeof(struct mb_slot), offsetof(struct mb_slot, buf),
		sizeof(struct mb_bufctl), MB_SUBJECT_MAX, MB_LINE,
		sizeof(struct mb_call), MB_CALLS, sizeof(struct mb_req_hdr),
		offsetof(struct mb_subslot, members), offsetof(struct mb_part, reply_ec),
		offsetof(struct mb_part, commit_mark), MB_COMMIT_MARKS,
		offsetof(struct mb_part, commit_put),
		offsetof(struct mb_header, interest_gen), offsetof(struct mb_header, buf_next),
		offsetof(struct mb_subslot, dropped), offsetof(struct mb_bufctl, refs),
		sizeof(struct mb_inbox_ctl), sizeof(struct mb_rec_pfx), sizeof(struct mb_rec_large),
		sizeof(struct mb_bell), offsetof(struct mb_inbox_ctl, bell),
		offsetof(struct mb_topic, bells), offsetof(struct mb_call, bell),
		offsetof(struct mb_call, data),
	};
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		h ^= v[i];
		h *= 1099511628211ull;
	}
	return h;
}

int mb_config_check(const struct mb_config *c)
{
	if (c->ring_slots < 2 || c->ring_slots > MB_MAX_RING_SLOTS ||
	    (c->ring_slots & (c->ring_slots - 1)))
		return MSGBUS_EINVAL;
	if (c->slot_size < 64 || c->slot_size > MB_MAX_SLOT_SIZE || c->slot_size % 64)
		return MSGBUS_EINVAL;
	if (c->max_msg_size < 1 || c->max_msg_size > MB_MAX_MSG_SIZE)
		return MSGBUS_EINVAL;
	if (c->large_buffers < 1 || c->large_buffers > MB_MAX_BUFFERS)
		return MSGBUS_EINVAL;
	if (c->max_subjects < 1 || c->max_subjects > MB_MAX_SUBJECTS)
		return MSGBUS_EINVAL;
	if (c->max_subs < 1 || c->max_subs > MB_MAX_SUBS)
		return MSGBUS_EINVAL;
	if (c->max_participants < 1 || c->max_participants > MB_MAX_PARTICIPANTS)
		return MSGBUS_EINVAL;
	if (c->inbox_size < MB_MIN_INBOX || c->inbox_size > MB_MAX_INBOX ||
	    (c->inbox_size & (c->inbox_size - 1)))
		return MSGBUS_EINVAL;
	if (c->spin_us > 1000000 || c->crash_bound_ms < 1 || c->crash_bound_ms > 3600000)
		return MSGBUS_EINVAL;
	struct mb_geometry g;
	mb_geometry(c, &g);
	return g.size > MB_MAX_SEGMENT ? MSGBUS_ELIMIT : 0;
}

void mb_header_init(void *base, const struct mb_config *cfg, uint64_t size)
{
	struct mb_header *h = base;
	h->magic = MB_MAGIC;
	h->version = MB_LAYOUT_VERSION;
	h->header_size = sizeof(*h);
	h->segment_size = size;
	h->layout_hash = mb_layout_hash();
	h->cfg = *cfg;
	/* Release: attachers read nothing until they see READY; pairs with
	 * the acquire in mb_header_check. */
	atomic_store_explicit(&h->state, MB_SEG_READY, memory_order_release);
}

int mb_header_check(const void *base, uint64_t size, struct mb_config *cfg)
{
	const struct mb_header *h = base;
	if (size < MB_PAGE)
		return MSGBUS_EPROTO;
	/* Acquire: pairs with the release store of READY in
	 * mb_header_init: the header is written. */
	if (atomic_load_explicit(&((struct mb_header *)base)->state, memory_order_acquire) !=
	    MB_SEG_READY)
		return MSGBUS_EPROTO;
	uint64_t magic = h->magic;
	uint32_t version = h->version, hsize = h->header_size;
	uint64_t hash = h->layout_hash, seg_size = h->segment_size;
	if (magic != MB_MAGIC || version != MB_LAYOUT_VERSION || hsize != sizeof(*h) ||
	    hash != mb_layout_hash())
		return MSGBUS_EINCOMPAT;
	struct mb_config c;
	memcpy(&c, (const void *)&h->cfg, sizeof(c));
	if (mb_config_check(&c))
		return MSGBUS_EPROTO;
	struct mb_geometry g;
	mb_geometry(&c, &g);
	if (g.size != seg_size || g.size != size)
		return MSGBUS_EPROTO;
	*cfg = c;
	return 0;
}
