/*
 * fuzz_nats.c - libFuzzer target for the NATS client protocol codec
 * (lib/link/nats_proto.c).
 *
 * The input is read as a link reads a server: items parsed one after the
 * other from a buffer that grows a byte range at a time, stopping at the
 * first bad one as the link closes the connection there. Every item must
 * lie within the bytes given, a parse of a prefix must never take more
 * than the whole, and what a MSG points to must be inside the item.
 * Built by `make fuzz`.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "link/nats_proto.h"
#include "fuzz.h"

#define FUZZ_MAX_PAYLOAD 65536u

static bool within(const void *p, size_t n, const uint8_t *buf, size_t len)
{
	const uint8_t *b = p;
	return n == 0 || (b >= buf && b + n <= buf + len);
}

static void check_item(const struct mb_nats_in *in, const uint8_t *buf, size_t took)
{
	if (in->op == MB_NATS_MSG || in->op == MB_NATS_HMSG) {
		REQUIRE(in->subject_len > 0 && within(in->subject, in->subject_len, buf, took));
		REQUIRE(!in->reply || within(in->reply, in->reply_len, buf, took));
		REQUIRE(within(in->payload, in->payload_len, buf, took));
		REQUIRE(in->payload_len <= FUZZ_MAX_PAYLOAD);
		REQUIRE(in->op == MB_NATS_MSG || within(in->hdr, in->hdr_len, buf, took));
		REQUIRE(in->status == 0 || (in->status >= 100 && in->status <= 999));
	}
	if (in->op == MB_NATS_ERR)
		REQUIRE(within(in->text, in->text_len, buf, took));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size heap copy: a read past the input is ASan's to see. */
	uint8_t *buf = malloc(size ? size : 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	size_t off = 0;
	while (off < size) {
		struct mb_nats_in in;
		struct mb_nats_info info;
		const char *why = NULL;
		long took = mb_nats_parse(buf + off, size - off, FUZZ_MAX_PAYLOAD, &in, &info, &why);
		if (took == MB_NATS_BAD) {
			REQUIRE(why != NULL);
			break;
		}
		if (took == MB_NATS_MORE) {
			REQUIRE(size - off < MB_NATS_LINE_MAX + FUZZ_MAX_PAYLOAD + 2);
			break;
		}
		REQUIRE(took > 0 && (size_t)took <= size - off);
		check_item(&in, buf + off, (size_t)took);
		if (in.op == MB_NATS_INFO)
			REQUIRE(info.nurls <= MB_NATS_URLS_MAX);
		/* the same item parsed from a prefix: more, or the same length */
		long again = mb_nats_parse(buf + off, (size_t)took, FUZZ_MAX_PAYLOAD, &in, NULL, &why);
		REQUIRE(again == took);
		off += (size_t)took;
	}
	free(buf);
	return 0;
}
