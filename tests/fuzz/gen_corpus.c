/*
 * gen_corpus.c - writes the seed corpus of fuzz_wire into a directory:
 * one valid frame of each type, a stream of all of them, and a few broken
 * frames. Run by hand when the format changes:
 *   cc -Iinclude -Ilib tests/fuzz/gen_corpus.c lib/wire.c lib/subject.c \
 *      -o /tmp/gen && /tmp/gen tests/fuzz/corpus_wire
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

static const char *dir;
static unsigned char all[4096];
static size_t all_len;
static int streaming = 1; /* append frames to "stream" */

static void put(const char *name, const void *p, size_t n)
{
	char path[512];
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

int main(int argc, char **argv)
{
	unsigned char b[1024];
	size_t n;
	if (argc != 2)
		return 2;
	dir = argv[1];
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
	return 0;
}
