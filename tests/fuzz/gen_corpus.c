/*
 * gen_corpus.c - writes the seed corpora of the fuzz targets into
 * DIR/corpus_wire, DIR/corpus_segment and DIR/corpus_subject. Run by hand
 * when a format changes:
 *   cc -Iinclude -Ilib tests/fuzz/gen_corpus.c lib/link/wire.c lib/shm/subject.c \
 *      lib/shm/segment.c -o /tmp/gen && /tmp/gen tests/fuzz
 *
 * fuzz_wire: one valid frame of each type, a stream of all of them, and a
 * few broken frames.
 * fuzz_segment: 8 bytes of mapping size, then a segment header (see
 * fuzz_segment.c). Valid headers for the default options and for configs at
 * the edges of the limits, then headers broken in one place each. Written
 * by this build, so the layout hash is the one of this ABI (x86_64 Linux
 * for the files in git).
 * fuzz_subject: "pattern\0subject" pairs (see fuzz_subject.c), valid and
 * invalid, from the examples of msgbus(7).
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "shm/segment.h"
#include "msgbus.h"
#include "link/wire.h"

static char dir[512];
static unsigned char all[4096];
static size_t all_len;
static int streaming = 1; /* append frames to "stream" */

static void put(const char *name, const void *p, size_t n)
{
	char path[sizeof(dir) + 64];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *fp = fopen(path, "wb");
	if (!fp || fwrite(p, 1, n, fp) != n || fclose(fp) != 0) {
		perror(path);
		exit(1);
	}
}

/* Encodes f with name nm and payload pl into out and writes it as file name. */
static size_t frame(const char *name, struct mb_frame f, const char *nm, const char *pl,
                    unsigned char *out)
{
	size_t plen = pl ? strlen(pl) : 0;
	if (nm) {
		f.name_len = (uint16_t)strlen(nm);
		memcpy(f.name, nm, f.name_len + 1u);
	}
	f.payload_len = (uint32_t)plen;
	size_t n = mb_wire_encode(out, &f);
	memcpy(out + n, pl ? pl : "", plen);
	n += plen;
	put(name, out, n);
	if (streaming) {
		memcpy(all + all_len, out, n);
		all_len += n;
	}
	return n;
}

static void wire(void)
{
	unsigned char b[1024];
	size_t n;
	frame("hello", (struct mb_frame){ .type = MB_F_HELLO, .min_version = 1, .max_version = 1,
	                                  .max_frame = 1u << 20, .node_id = 0x1122334455667788ull },
	      NULL, NULL, b);
	frame("sub", (struct mb_frame){ .type = MB_F_SUB }, "orders.*.>", NULL, b);
	frame("unsub", (struct mb_frame){ .type = MB_F_UNSUB }, "orders.>", NULL, b);
	frame("serve", (struct mb_frame){ .type = MB_F_SERVE }, "svc.echo", NULL, b);
	frame("unserve", (struct mb_frame){ .type = MB_F_UNSERVE }, "svc.echo", NULL, b);
	frame("msg", (struct mb_frame){ .type = MB_F_MSG }, "orders.eu.new", "hello, world", b);
	frame("req", (struct mb_frame){ .type = MB_F_REQ, .id = 7, .arg = 250 }, "svc.echo",
	      "ping?", b);
	frame("rep", (struct mb_frame){ .type = MB_F_REP, .id = 7 }, NULL, "pong!", b);
	frame("rep_error", (struct mb_frame){ .type = MB_F_REP, .id = 8, .arg = 12 }, NULL, NULL, b);
	frame("ping", (struct mb_frame){ .type = MB_F_PING, .token = 42 }, NULL, NULL, b);
	frame("pong", (struct mb_frame){ .type = MB_F_PONG, .token = 42 }, NULL, NULL, b);
	put("stream", all, all_len);
	streaming = 0;

	/* Broken: each differs from a valid frame in one place. */
	n = frame("bad_magic", (struct mb_frame){ .type = MB_F_PING }, NULL, NULL, b);
	b[3] = '2';
	put("bad_magic", b, n);
	n = frame("bad_type", (struct mb_frame){ .type = MB_F_PING }, NULL, NULL, b);
	b[5] = 11;
	put("bad_type", b, n);
	n = frame("msg_truncated", (struct mb_frame){ .type = MB_F_MSG }, "a.b", "xyz", b);
	put("msg_truncated", b, n - 5);
	n = frame("name_past_end", (struct mb_frame){ .type = MB_F_SERVE }, "svc", NULL, b);
	b[MB_WIRE_HDR] = 9;
	put("name_past_end", b, n);
	frame("msg_wildcard", (struct mb_frame){ .type = MB_F_MSG }, "a.*", "x", b);
	frame("sub_bad_subject", (struct mb_frame){ .type = MB_F_SUB }, "a..b", NULL, b);
	frame("hello_min_gt_max", (struct mb_frame){ .type = MB_F_HELLO, .min_version = 2,
	                                                  .max_version = 1, .max_frame = 4096 },
	          NULL, NULL, b);
}

/* ---- fuzz_segment ----------------------------------------------------------- */

/* The options of bus.c's defaults. */
static const struct mb_config seg_default = {
	.ring_slots = 512, .slot_size = 256, .max_msg_size = 1u << 20, .large_buffers = 16,
	.max_subjects = 32, .max_subs = 64, .max_participants = 32, .spin_us = 20,
	.crash_bound_ms = 1000,
};

struct seg_seed {
	uint64_t map_size;
	struct mb_header h;
};

static void seg_put(const char *name, const struct seg_seed *s, size_t n)
{
	unsigned char b[8 + sizeof(struct mb_header)];
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(s->map_size >> (8 * i));
	memcpy(b + 8, &s->h, sizeof(s->h));
	put(name, b, n < sizeof(b) ? n : sizeof(b));
}

/* A header as a creator writes it for c, on a mapping of its size. */
static struct seg_seed seg_valid(struct mb_config c)
{
	struct seg_seed s;
	struct mb_geometry g;
	memset(&s, 0, sizeof(s));
	if (mb_config_check(&c) != 0) {
		fprintf(stderr, "gen_corpus: a valid seed config is refused\n");
		exit(1);
	}
	mb_geometry(&c, &g);
	mb_header_init(&s.h, &c, g.size);
	s.map_size = g.size;
	return s;
}

static void segment(void)
{
	const size_t all = 8 + sizeof(struct mb_header);
	struct mb_config c;
	struct seg_seed s;

	s = seg_valid(seg_default);
	seg_put("default", &s, all);
	c = (struct mb_config){ .ring_slots = 2, .slot_size = 64, .max_msg_size = 1,
	                        .large_buffers = 1, .max_subjects = 1, .max_subs = 1,
	                        .max_participants = 1, .spin_us = 0, .crash_bound_ms = 1 };
	s = seg_valid(c);
	seg_put("min", &s, all);
	c = seg_default;
	c.max_subjects = MB_MAX_SUBJECTS;
	c.max_subs = MB_MAX_SUBS;
	c.max_participants = MB_MAX_PARTICIPANTS;
	c.ring_slots = 2;
	c.slot_size = 64;
	c.large_buffers = MB_MAX_BUFFERS;
	c.max_msg_size = 64;
	c.spin_us = 1000000;
	c.crash_bound_ms = 3600000;
	s = seg_valid(c);
	seg_put("max_counts", &s, all);
	c = seg_default;
	c.ring_slots = MB_MAX_RING_SLOTS;
	c.slot_size = 64;
	c.max_subjects = 1;
	c.max_subs = 1;
	s = seg_valid(c);
	seg_put("max_ring", &s, all);
	c = seg_default;
	c.max_msg_size = MB_MAX_MSG_SIZE;
	c.large_buffers = 31; /* 31 x 256 MiB, just under MB_MAX_SEGMENT */
	c.slot_size = MB_MAX_SLOT_SIZE;
	c.ring_slots = 2;
	s = seg_valid(c);
	seg_put("max_msg", &s, all);
	/* Size 0: the harness takes the size from the header's config. */
	s = seg_valid(seg_default);
	s.map_size = 0;
	seg_put("default_size0", &s, all);
	/* Followed by the rest of its first page, zeros as ftruncate leaves. */
	{
		static unsigned char page[8 + MB_PAGE];
		s = seg_valid(seg_default);
		for (int i = 0; i < 8; i++)
			page[i] = (unsigned char)(s.map_size >> (8 * i));
		memcpy(page + 8, &s.h, sizeof(s.h));
		put("default_page", page, sizeof(page));
	}

	/* Broken: each differs from "default" in one place. */
	s = seg_valid(seg_default);
	atomic_store(&s.h.state, MB_SEG_INIT);
	seg_put("not_ready", &s, all);
	s = seg_valid(seg_default);
	s.h.magic ^= 1;
	seg_put("bad_magic", &s, all);
	s = seg_valid(seg_default);
	s.h.version = MB_LAYOUT_VERSION + 1;
	seg_put("bad_version", &s, all);
	s = seg_valid(seg_default);
	s.h.header_size += 8;
	seg_put("bad_header_size", &s, all);
	s = seg_valid(seg_default);
	s.h.layout_hash ^= 0x100;
	seg_put("bad_layout_hash", &s, all);
	s = seg_valid(seg_default);
	s.h.segment_size += MB_PAGE;
	seg_put("bad_segment_size", &s, all);
	s = seg_valid(seg_default);
	s.map_size += MB_PAGE; /* the file grew */
	seg_put("map_too_big", &s, all);
	s = seg_valid(seg_default);
	s.map_size = MB_PAGE - 1;
	seg_put("map_below_page", &s, all);
	s = seg_valid(seg_default);
	s.h.cfg.ring_slots = 511;
	seg_put("ring_not_pow2", &s, all);
	s = seg_valid(seg_default);
	s.h.cfg.slot_size = 100;
	seg_put("slot_size_odd", &s, all);
	s = seg_valid(seg_default);
	s.h.cfg.crash_bound_ms = 0;
	seg_put("crash_bound_0", &s, all);
	/* Every field within its limit, the whole over MB_MAX_SEGMENT. */
	s = seg_valid(seg_default);
	s.h.cfg.max_msg_size = MB_MAX_MSG_SIZE;
	s.h.cfg.large_buffers = 64;
	s.map_size = 0;
	seg_put("over_max_segment", &s, all);
	/* Truncated: the mapping holds less than the input says. */
	s = seg_valid(seg_default);
	seg_put("truncated_cfg", &s, 8 + offsetof(struct mb_header, cfg) + 12);
	s = seg_valid(seg_default);
	seg_put("truncated_state", &s, 8 + offsetof(struct mb_header, state));
	s = seg_valid(seg_default);
	seg_put("size_only", &s, 8);
}

/* ---- fuzz_subject ----------------------------------------------------------- */

static void pair(const char *name, const char *pattern, const char *subject)
{
	char b[1024];
	size_t pl = strlen(pattern), sl = subject ? strlen(subject) : 0;
	memcpy(b, pattern, pl);
	if (subject) {
		b[pl] = '\0';
		memcpy(b + pl + 1, subject, sl);
	}
	put(name, b, subject ? pl + 1 + sl : pl);
}

static void subject(void)
{
	char lng[300];
	/* The table of msgbus(7) SUBJECTS, both columns. */
	pair("exact", "orders.created", "orders.created");
	pair("exact_longer", "orders.created", "orders.created.eu");
	pair("star", "orders.*", "orders.created");
	pair("star_short", "orders.*", "orders.created.eu");
	pair("tail", "orders.>", "orders.created.eu");
	pair("tail_empty", "orders.>", "orders");
	pair("star_first", "*.created", "orders.created");
	pair("star_first_short", "*.created", "created");
	pair("full", ">", "a.b.c");
	pair("stars", "*.*.*", "a.b.c");
	pair("mixed", "a.*.c.>", "a.b.c.d.e");
	pair("prefix", "ord", "orders");
	pair("reserved", "_svc.echo", "_svc.echo");
	pair("reserved_tail", "_svc.>", "_svc.echo");
	pair("subject_only", "orders.created", NULL);
	pair("punct", "a-b_c.~!#$%&'()+,/:;<=?@[]^`{|}", "a-b_c.~!#$%&'()+,/:;<=?@[]^`{|}");
	/* Invalid, one rule each. */
	pair("empty_token", "a..b", ".a");
	pair("empty_last", "a.", "");
	pair("star_in_token", "a*", "a.b*");
	pair("tail_not_last", "a.>.b", "a.b>");
	pair("space", "a b", "a.\x7f");
	pair("non_ascii", "caf\xc3\xa9", "tab\tx");
	/* At the length limit and one over. */
	memset(lng, 'x', sizeof(lng));
	for (int i = 1; i < 255; i += 2)
		lng[i] = '.';
	lng[255] = '\0';
	pair("len_255", lng, lng);
	lng[255] = 'y';
	lng[256] = '\0';
	pair("len_256", lng, "x");
	lng[252] = '>';
	lng[253] = '\0';
	pair("len_253_tail", lng, "x.x");
}

static void into(const char *parent, const char *sub)
{
	snprintf(dir, sizeof(dir), "%s/%s", parent, sub);
	if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
		perror(dir);
		exit(1);
	}
}

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	into(argv[1], "corpus_wire");
	wire();
	into(argv[1], "corpus_segment");
	segment();
	into(argv[1], "corpus_subject");
	subject();
	return 0;
}
