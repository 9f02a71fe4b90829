/*
 * fuzz_wire.c - libFuzzer target for the TCP frame codec (lib/link/wire.c).
 *
 * The input is read as a connection would be: a stream of frames, each a
 * header checked against a 1 MiB limit and then its body, stopping at the
 * first refused header as the transport closes the connection there. Every
 * body is also decoded as each of the other types, so all decoders see
 * every body the fuzzer finds. A decoded frame must re-encode to exactly
 * the bytes it came from (the format has one encoding per frame), and
 * those bytes must decode to the same frame again.
 *
 * Bodies are copied to heap blocks of exactly their length so AddressSanitizer
 * sees a read past the end of a body, not just past the end of the input.
 * Built by `make fuzz`.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "msgbus.h"
#include "link/wire.h"
#include "fuzz.h"

#define FUZZ_MAX_FRAME (1u << 20)

static bool has_payload(uint8_t type)
{
	return type == MB_F_MSG || type == MB_F_REQ || type == MB_F_REP;
}

static void same_frame(const struct mb_frame *a, const struct mb_frame *b)
{
	REQUIRE(a->type == b->type);
	REQUIRE(a->min_version == b->min_version && a->max_version == b->max_version);
	REQUIRE(a->max_frame == b->max_frame && a->node_id == b->node_id);
	REQUIRE(a->token == b->token && a->id == b->id && a->arg == b->arg);
	REQUIRE(a->name_len == b->name_len && memcmp(a->name, b->name, a->name_len) == 0);
	REQUIRE(a->name_len == 0 || a->name[a->name_len] == '\0');
	REQUIRE(a->payload_len == b->payload_len);
	REQUIRE(a->payload_len == 0 || memcmp(a->payload, b->payload, a->payload_len) == 0);
}

/* f was decoded from body[0..len): encode it again and compare. */
static void reencode(const struct mb_frame *f, const uint8_t *body, uint32_t len)
{
	uint8_t head[MB_WIRE_HEAD_MAX];
	size_t n = mb_wire_encode(head, f);
	REQUIRE(n >= MB_WIRE_HDR && n <= MB_WIRE_HEAD_MAX);
	uint32_t plen = has_payload(f->type) ? f->payload_len : 0;
	REQUIRE(n - MB_WIRE_HDR + plen == len);
	/* One encoding per frame: the fixed fields and name come out as they
	 * came in (the payload is the same bytes of body, see decode_as). */
	REQUIRE(memcmp(head + MB_WIRE_HDR, body, n - MB_WIRE_HDR) == 0);

	uint8_t type;
	uint32_t body_len;
	const char *why = NULL;
	REQUIRE(mb_wire_header(head, FUZZ_MAX_FRAME, &type, &body_len, &why) == 0);
	REQUIRE(type == f->type && body_len == len);

	/* The new encoding, head then payload, as one exact block. */
	uint8_t *again = malloc(len ? len : 1);
	REQUIRE(again != NULL);
	memcpy(again, head + MB_WIRE_HDR, n - MB_WIRE_HDR);
	if (plen > 0)
		memcpy(again + (n - MB_WIRE_HDR), f->payload, plen);
	struct mb_frame g;
	REQUIRE(mb_wire_decode(type, again, len, &g, &why) == 0);
	same_frame(f, &g);
	free(again);
}

static void decode_as(uint8_t type, const uint8_t *body, uint32_t len)
{
	struct mb_frame f;
	const char *why = NULL;
	int rc = mb_wire_decode(type, body, len, &f, &why);
	if (rc != 0) {
		REQUIRE(rc == MSGBUS_EPROTO && why != NULL && why[0] != '\0');
		return;
	}
	REQUIRE(type >= MB_F_HELLO && type <= MB_F_PONG && f.type == type);
	if (f.payload_len > 0)
		REQUIRE(f.payload >= body && f.payload + f.payload_len == body + len);
	else
		REQUIRE(f.payload == NULL);
	reencode(&f, body, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0;
	while (size - off >= MB_WIRE_HDR) {
		uint8_t type = 0;
		uint32_t len = 0;
		const char *why = NULL;
		int rc = mb_wire_header(data + off, FUZZ_MAX_FRAME, &type, &len, &why);
		if (rc != 0) {
			REQUIRE(rc == MSGBUS_EPROTO && why != NULL && why[0] != '\0');
			break;
		}
		REQUIRE(type >= MB_F_HELLO && type <= MB_F_PONG && len <= FUZZ_MAX_FRAME);
		off += MB_WIRE_HDR;
		if (len > size - off)
			break; /* the rest of the frame never arrived */
		uint8_t *body = len ? malloc(len) : NULL;
		REQUIRE(len == 0 || body != NULL);
		if (len)
			memcpy(body, data + off, len);
		decode_as(type, body, len);
		/* The other types, and the two just outside the range. */
		for (unsigned t = 0; t <= MB_F_PONG + 1; t++)
			if (t != type)
				decode_as((uint8_t)t, body, len);
		free(body);
		off += len;
	}
	return 0;
}
