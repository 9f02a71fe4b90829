/*
 * check_wire.c - the TCP frame codec (lib/link/wire.c) against msgbus-wire(7):
 * every frame type survives encode, header check and decode; golden bytes
 * pin the byte order; the link's MSG encoder and decoding shortcut agree
 * with the codec; every violation the spec lists is MSGBUS_EPROTO with
 * a reason; every truncation of every body is refused or, inside a
 * payload, read as a shorter payload.
 *
 * Bodies are decoded from heap copies of exactly their length, so a
 * sanitizer build catches any read past the end.
 */
#include <stdbool.h>

#include "test_util.h"
#include "link/wire.h"

Suite *suite_wire(void);

/* ---- helpers ------------------------------------------------------------ */

static const uint8_t PAYLOAD[] = "payload \x00\xff bytes";
#define PAYLOAD_LEN ((uint32_t)sizeof(PAYLOAD))

static void set_name(struct mb_frame *f, const char *name)
{
	size_t n = strlen(name);
	ck_assert_uint_le(n, 255);
	memcpy(f->name, name, n + 1);
	f->name_len = (uint16_t)n;
}

/* A valid frame of each type, using every field the type carries. */
static struct mb_frame sample(uint8_t type)
{
	struct mb_frame f = { .type = type };
	switch (type) {
	case MB_F_HELLO:
		f.min_version = 1;
		f.max_version = 3;
		f.max_frame = 1u << 20;
		f.node_id = 0x0123456789abcdefull;
		break;
	case MB_F_SUB:
	case MB_F_UNSUB:
		set_name(&f, "orders.*.>");
		break;
	case MB_F_SERVE:
	case MB_F_UNSERVE:
		set_name(&f, "svc.echo");
		break;
	case MB_F_MSG:
		set_name(&f, "orders.eu.new");
		f.payload = PAYLOAD;
		f.payload_len = PAYLOAD_LEN;
		break;
	case MB_F_REQ:
		f.id = 0x89abcdefu;
		f.arg = 2500;
		set_name(&f, "svc.echo");
		f.payload = PAYLOAD;
		f.payload_len = PAYLOAD_LEN;
		break;
	case MB_F_REP:
		f.id = 0xfffffffeu;
		f.arg = 0;
		f.payload = PAYLOAD;
		f.payload_len = PAYLOAD_LEN;
		break;
	case MB_F_PING:
	case MB_F_PONG:
		f.token = 0xfedcba9876543210ull;
		break;
	}
	return f;
}

/* Header, fixed fields and name, then the payload: the whole frame as a
 * transport would send it. Returns its length. */
static size_t build(uint8_t *buf, size_t cap, const struct mb_frame *f)
{
	ck_assert_uint_ge(cap, MB_WIRE_HEAD_MAX);
	size_t n = mb_wire_encode(buf, f);
	ck_assert_uint_ge(n, MB_WIRE_HDR);
	ck_assert_uint_le(n, MB_WIRE_HEAD_MAX);
	bool has_payload = f->type == MB_F_MSG || f->type == MB_F_REQ || f->type == MB_F_REP;
	if (has_payload && f->payload_len > 0) {
		ck_assert_uint_le(n + f->payload_len, cap);
		memcpy(buf + n, f->payload, f->payload_len);
		n += f->payload_len;
	}
	return n;
}

/* Decodes body[0..len) from a heap copy of exactly len bytes (NULL when
 * empty); *why is cleared first so a reason is proven to be set. */
static int decode(uint8_t type, const uint8_t *body, uint32_t len, struct mb_frame *f,
                  const char **why)
{
	uint8_t *copy = NULL;
	if (len > 0) {
		copy = malloc(len);
		ck_assert_ptr_nonnull(copy);
		memcpy(copy, body, len);
	}
	*why = NULL;
	int rc = mb_wire_decode(type, copy, len, f, why);
	if (rc == 0 && f->payload_len > 0) {
		/* The payload must point into the copy, at its end. */
		ck_assert_ptr_eq(f->payload, copy + len - f->payload_len);
		f->payload = body + len - f->payload_len;
	}
	free(copy);
	return rc;
}

#define ASSERT_PROTO(rc, why)                                                     \
	do {                                                                      \
		ck_assert_int_eq((rc), MSGBUS_EPROTO);                            \
		ck_assert_msg((why) != NULL && (why)[0] != '\0', "no reason given"); \
	} while (0)

static void expect_body_proto(uint8_t type, const uint8_t *body, uint32_t len)
{
	struct mb_frame f;
	const char *why;
	ASSERT_PROTO(decode(type, body, len, &f, &why), why);
}

static void expect_body_ok(uint8_t type, const uint8_t *body, uint32_t len, struct mb_frame *f)
{
	const char *why;
	int rc = decode(type, body, len, f, &why);
	ck_assert_msg(rc == 0, "type %u len %u refused: %s", type, len, why ? why : "?");
	ck_assert_ptr_null(why);
}

/* Checks the header of a frame and returns its body length. */
static uint32_t header_ok(const uint8_t *buf, uint8_t want_type)
{
	uint8_t type = 0;
	uint32_t len = 0;
	const char *why = NULL;
	int rc = mb_wire_header(buf, MB_WIRE_MAX_FRAME, &type, &len, &why);
	ck_assert_msg(rc == 0, "header refused: %s", why ? why : "?");
	ck_assert_ptr_null(why); /* the transport tells outcomes apart by it */
	ck_assert_uint_eq(type, want_type);
	return len;
}

static void assert_same(const struct mb_frame *a, const struct mb_frame *b)
{
	ck_assert_uint_eq(a->type, b->type);
	switch (a->type) {
	case MB_F_HELLO:
		ck_assert_uint_eq(a->min_version, b->min_version);
		ck_assert_uint_eq(a->max_version, b->max_version);
		ck_assert_uint_eq(a->max_frame, b->max_frame);
		ck_assert_uint_eq(a->node_id, b->node_id);
		break;
	case MB_F_PING:
	case MB_F_PONG:
		ck_assert_uint_eq(a->token, b->token);
		break;
	case MB_F_REQ:
	case MB_F_REP:
		ck_assert_uint_eq(a->id, b->id);
		ck_assert_uint_eq(a->arg, b->arg);
		break;
	}
	if (a->type >= MB_F_SUB && a->type <= MB_F_REQ) {
		ck_assert_uint_eq(a->name_len, b->name_len);
		ck_assert_str_eq(a->name, b->name);
	}
	ck_assert_uint_eq(a->payload_len, b->payload_len);
	if (a->payload_len > 0)
		ck_assert_mem_eq(a->payload, b->payload, a->payload_len);
}

/* A body of a name frame: u16 length (as given), then bytes. */
static uint32_t name_body(uint8_t *out, uint16_t declared, const void *name, uint32_t n)
{
	out[0] = (uint8_t)declared;
	out[1] = (uint8_t)(declared >> 8);
	memcpy(out + 2, name, n);
	return 2 + n;
}

static void le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* ---- round trips ---------------------------------------------------------- */

/* _i is the frame type, 1..10. */
START_TEST(test_roundtrip)
{
	uint8_t buf[1024];
	struct mb_frame in = sample((uint8_t)_i), out;
	size_t n = build(buf, sizeof(buf), &in);
	uint32_t len = header_ok(buf, (uint8_t)_i);
	ck_assert_uint_eq(MB_WIRE_HDR + len, n);
	expect_body_ok((uint8_t)_i, buf + MB_WIRE_HDR, len, &out);
	assert_same(&in, &out);
	/* Fields the type does not carry come back zero. */
	if (_i != MB_F_HELLO)
		ck_assert_uint_eq(out.node_id, 0);
	if (_i != MB_F_PING && _i != MB_F_PONG)
		ck_assert_uint_eq(out.token, 0);
	if (_i < MB_F_SUB || _i > MB_F_REQ)
		ck_assert_uint_eq(out.name_len, 0);
}
END_TEST

/* The link's per-message encoder writes the very bytes of mb_wire_encode,
 * for names of every length; and mb_wire_msg_named, its decoding shortcut,
 * accepts a body with exactly that name and nothing else. */
START_TEST(test_msg_fast_path)
{
	uint8_t a[MB_WIRE_HEAD_MAX], b[MB_WIRE_HEAD_MAX];
	char name[256];
	for (size_t n = 1; n <= 255; n++) {
		for (size_t i = 0; i < n; i++)
			name[i] = (char)('a' + i % 26);
		name[n] = '\0';
		struct mb_frame f = { .type = MB_F_MSG, .payload_len = 1000 };
		set_name(&f, name);
		size_t la = mb_wire_encode(a, &f), lb = mb_wire_encode_msg(b, name, n, 1000);
		ck_assert_uint_eq(la, lb);
		ck_assert_int_eq(memcmp(a, b, la), 0);
		const uint8_t *body = b + MB_WIRE_HDR;
		uint32_t blen = (uint32_t)(lb - MB_WIRE_HDR);
		ck_assert(mb_wire_msg_named(body, blen, name, (uint16_t)n));
		ck_assert(mb_wire_msg_named(body, blen + 1000, name, (uint16_t)n));
		ck_assert(!mb_wire_msg_named(body, blen - 1, name, (uint16_t)n)); /* short */
		if (n > 1)
			ck_assert(!mb_wire_msg_named(body, blen, name, (uint16_t)(n - 1)));
		name[n - 1] = 'Z';
		ck_assert(!mb_wire_msg_named(body, blen, name, (uint16_t)n));
	}
}
END_TEST

/* _i is the frame type: the same with the extremes of every field. */
START_TEST(test_roundtrip_limits)
{
	uint8_t buf[1024];
	char name[256];
	struct mb_frame in = sample((uint8_t)_i), out;
	/* A 255-byte name of 1-byte tokens using every printable character
	 * but the wildcards. */
	for (int k = 0; k < 255; k++) {
		char c = (char)('!' + (k / 2) % 94);
		name[k] = k % 2 ? '.' : (c == '*' || c == '>' || c == '.' ? 'x' : c);
	}
	name[255] = '\0';
	if (in.name_len > 0)
		set_name(&in, name);
	in.min_version = 0xffff;
	in.max_version = 0xffff;
	in.max_frame = UINT32_MAX;
	in.node_id = UINT64_MAX;
	in.token = 0;
	in.id = UINT32_MAX;
	in.arg = _i == MB_F_REP ? 15 : UINT32_MAX;
	in.payload = NULL;
	in.payload_len = 0;
	size_t n = build(buf, sizeof(buf), &in);
	uint32_t len = header_ok(buf, (uint8_t)_i);
	ck_assert_uint_eq(MB_WIRE_HDR + len, n);
	expect_body_ok((uint8_t)_i, buf + MB_WIRE_HDR, len, &out);
	assert_same(&in, &out);
	ck_assert_ptr_null(out.payload);
}
END_TEST

/* Golden bytes: a symmetric byte-order bug would pass the round trips. */
START_TEST(test_golden)
{
	uint8_t buf[MB_WIRE_HEAD_MAX + 8];
	struct mb_frame f = { .type = MB_F_PING, .token = 0x0807060504030201ull };
	static const uint8_t ping[] = { 'M', 'B', 'W', '1', 1, 9, 0, 0, 8, 0, 0, 0,
	                                1,   2,   3,   4,   5, 6, 7, 8 };
	ck_assert_uint_eq(mb_wire_encode(buf, &f), sizeof(ping));
	ck_assert_mem_eq(buf, ping, sizeof(ping));

	f = (struct mb_frame){ .type = MB_F_REQ, .id = 0x01020304u, .arg = 0x0a0b0c0du,
	                       .payload_len = 0x100 };
	set_name(&f, "a.b");
	static const uint8_t req[] = { 'M', 'B', 'W', '1', 1,   7,   0,   0,
	                               0x0d, 1,  0,   0,   /* body_len 8+2+3+256 */
	                               4,   3,   2,   1,   0x0d, 0x0c, 0x0b, 0x0a,
	                               3,   0,   'a', '.', 'b' };
	ck_assert_uint_eq(mb_wire_encode(buf, &f), sizeof(req));
	ck_assert_mem_eq(buf, req, sizeof(req));

	f = (struct mb_frame){ .type = MB_F_HELLO, .min_version = 1, .max_version = 0x0102,
	                       .max_frame = 0x00100000u, .node_id = 0x1122334455667788ull };
	static const uint8_t hello[] = { 'M', 'B', 'W', '1', 1, 1, 0, 0, 16, 0, 0, 0,
	                                 1, 0, 2, 1, 0, 0, 0x10, 0,
	                                 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11 };
	ck_assert_uint_eq(mb_wire_encode(buf, &f), sizeof(hello));
	ck_assert_mem_eq(buf, hello, sizeof(hello));
	ck_assert_uint_eq(hello[0] | hello[1] << 8 | hello[2] << 16 | (uint32_t)hello[3] << 24,
	                  MB_WIRE_MAGIC);
}
END_TEST

/* The encoder writes exactly what it returns, never more than
 * MB_WIRE_HEAD_MAX, for the largest head there is. */
START_TEST(test_encode_bound)
{
	uint8_t buf[MB_WIRE_HEAD_MAX + 64];
	char name[256];
	memset(name, 'n', 255);
	name[255] = '\0';
	for (uint8_t t = MB_F_HELLO; t <= MB_F_PONG; t++) {
		struct mb_frame f = sample(t);
		if (f.name_len > 0)
			set_name(&f, name);
		memset(buf, 0xa5, sizeof(buf));
		size_t n = mb_wire_encode(buf, &f);
		ck_assert_uint_le(n, MB_WIRE_HEAD_MAX);
		for (size_t k = n; k < sizeof(buf); k++)
			ck_assert_uint_eq(buf[k], 0xa5);
	}
}
END_TEST

/* Frames back to back in one buffer parse one after the other. */
START_TEST(test_stream)
{
	uint8_t buf[8192];
	size_t n = 0;
	for (int rep = 0; rep < 3; rep++)
		for (uint8_t t = MB_F_HELLO; t <= MB_F_PONG; t++) {
			struct mb_frame f = sample(t);
			n += build(buf + n, sizeof(buf) - n, &f);
		}
	size_t off = 0;
	int count = 0;
	while (off < n) {
		ck_assert_uint_ge(n - off, MB_WIRE_HDR);
		uint8_t want = (uint8_t)(MB_F_HELLO + count % 10);
		uint32_t len = header_ok(buf + off, want);
		struct mb_frame f, ref = sample(want);
		expect_body_ok(want, buf + off + MB_WIRE_HDR, len, &f);
		assert_same(&ref, &f);
		off += MB_WIRE_HDR + len;
		count++;
	}
	ck_assert_uint_eq(off, n);
	ck_assert_int_eq(count, 30);
}
END_TEST

/* ---- header violations ------------------------------------------------------ */

/* One byte of a valid MSG header replaced. */
static const struct {
	unsigned off;
	uint8_t val;
	const char *why; /* the reason the spec names, or NULL */
} bad_headers[] = {
	{ 0, 'm', "bad magic" },
	{ 1, 0, "bad magic" },
	{ 2, 'w', "bad magic" },
	{ 3, '2', "bad magic" },
	{ 4, 0, NULL },     /* version */
	{ 4, 2, NULL },
	{ 4, 255, NULL },
	{ 5, 0, "unknown frame type" },
	{ 5, 11, "unknown frame type" },
	{ 5, 255, "unknown frame type" },
	{ 6, 1, NULL },     /* flags */
	{ 7, 0x80, NULL },
	{ 11, 0x01, "frame too large" }, /* body_len 16 MiB + 17 */
	{ 11, 0xff, "frame too large" },
};

START_TEST(test_bad_header)
{
	uint8_t buf[1024], type = 0xee;
	uint32_t len = 0xeeeeeeee;
	const char *why = NULL;
	struct mb_frame f = sample(MB_F_MSG);
	build(buf, sizeof(buf), &f);
	buf[bad_headers[_i].off] = bad_headers[_i].val;
	int rc = mb_wire_header(buf, 1u << 24, &type, &len, &why);
	ASSERT_PROTO(rc, why);
	if (bad_headers[_i].why != NULL)
		ck_assert_str_eq(why, bad_headers[_i].why);
	/* Nothing is reported for a refused header. */
	ck_assert_uint_eq(type, 0xee);
	ck_assert_uint_eq(len, 0xeeeeeeee);
}
END_TEST

START_TEST(test_header_max_frame)
{
	uint8_t buf[MB_WIRE_HEAD_MAX], type;
	uint32_t len;
	const char *why;
	struct mb_frame f = { .type = MB_F_MSG, .payload_len = 4096 - 5 };
	set_name(&f, "a.b");
	ck_assert_uint_eq(mb_wire_encode(buf, &f), MB_WIRE_HDR + 5);
	/* body_len 4096: at the limit is fine, one byte over is not. */
	ck_assert_int_eq(mb_wire_header(buf, 4096, &type, &len, &why), 0);
	ck_assert_uint_eq(len, 4096);
	why = NULL;
	ASSERT_PROTO(mb_wire_header(buf, 4095, &type, &len, &why), why);
	ck_assert_str_eq(why, "frame too large");

	/* A limit above MB_WIRE_MAX_FRAME counts as MB_WIRE_MAX_FRAME. */
	le32(buf + 8, MB_WIRE_MAX_FRAME);
	ck_assert_int_eq(mb_wire_header(buf, UINT32_MAX, &type, &len, &why), 0);
	ck_assert_uint_eq(len, MB_WIRE_MAX_FRAME);
	le32(buf + 8, MB_WIRE_MAX_FRAME + 1);
	why = NULL;
	ASSERT_PROTO(mb_wire_header(buf, UINT32_MAX, &type, &len, &why), why);
	ck_assert_str_eq(why, "frame too large");
	le32(buf + 8, UINT32_MAX);
	why = NULL;
	ASSERT_PROTO(mb_wire_header(buf, UINT32_MAX, &type, &len, &why), why);
	/* A largest REQ fits. */
	f = (struct mb_frame){ .type = MB_F_REQ, .payload_len = 256u << 20 };
	memset(f.name, 'x', 255);
	f.name_len = 255;
	uint8_t head[MB_WIRE_HEAD_MAX];
	mb_wire_encode(head, &f);
	ck_assert_int_eq(mb_wire_header(head, MB_WIRE_MAX_FRAME, &type, &len, &why), 0);
}
END_TEST

/* Body lengths no frame of the type can have are refused by the header. */
static const struct {
	uint8_t type;
	uint32_t len;
	bool ok;
} header_sizes[] = {
	{ MB_F_HELLO, 16, true },  { MB_F_HELLO, 0, false }, { MB_F_HELLO, 15, false },
	{ MB_F_HELLO, 17, false }, { MB_F_PING, 8, true },   { MB_F_PING, 7, false },
	{ MB_F_PING, 9, false },   { MB_F_PONG, 8, true },   { MB_F_PONG, 0, false },
	{ MB_F_PONG, 4096, false }, { MB_F_SUB, 257, true }, { MB_F_SUB, 258, false },
	{ MB_F_UNSUB, 258, false }, { MB_F_SERVE, 258, false }, { MB_F_UNSERVE, 65536, false },
	{ MB_F_MSG, 65536, true }, { MB_F_REQ, 0, true },    { MB_F_REP, 65536, true },
};

START_TEST(test_header_sizes)
{
	uint8_t buf[MB_WIRE_HDR] = { 'M', 'B', 'W', '1', MB_WIRE_VERSION };
	uint8_t type;
	uint32_t len;
	const char *why = NULL;
	buf[5] = header_sizes[_i].type;
	le32(buf + 8, header_sizes[_i].len);
	int rc = mb_wire_header(buf, 1u << 20, &type, &len, &why);
	if (header_sizes[_i].ok) {
		ck_assert_int_eq(rc, 0);
		ck_assert_uint_eq(type, header_sizes[_i].type);
		ck_assert_uint_eq(len, header_sizes[_i].len);
	} else {
		ASSERT_PROTO(rc, why);
	}
}
END_TEST

/* ---- body violations ------------------------------------------------------- */

START_TEST(test_decode_bad_type)
{
	struct mb_frame f;
	const char *why = NULL;
	uint8_t body[16] = { 0 };
	ASSERT_PROTO(mb_wire_decode(0, body, sizeof(body), &f, &why), why);
	why = NULL;
	ASSERT_PROTO(mb_wire_decode(11, body, sizeof(body), &f, &why), why);
	why = NULL;
	ASSERT_PROTO(mb_wire_decode(255, NULL, 0, &f, &why), why);
}
END_TEST

static void hello_body(uint8_t *b, uint16_t min, uint16_t max, uint32_t max_frame)
{
	memset(b, 0x5a, 16);
	le16(b, min);
	le16(b + 2, max);
	le32(b + 4, max_frame);
}

START_TEST(test_hello)
{
	uint8_t b[32];
	struct mb_frame f;
	hello_body(b, 1, 1, 4096);
	expect_body_ok(MB_F_HELLO, b, 16, &f);
	ck_assert_uint_eq(f.max_frame, 4096);
	ck_assert_uint_eq(f.node_id, 0x5a5a5a5a5a5a5a5aull);
	hello_body(b, 1, 0xffff, UINT32_MAX); /* a limit above ours is the peer's own */
	expect_body_ok(MB_F_HELLO, b, 16, &f);
	/* wrong size */
	expect_body_proto(MB_F_HELLO, b, 15);
	expect_body_proto(MB_F_HELLO, b, 17);
	expect_body_proto(MB_F_HELLO, b, 32);
	/* min > max, min 0 */
	hello_body(b, 2, 1, 4096);
	expect_body_proto(MB_F_HELLO, b, 16);
	hello_body(b, 0xffff, 0xfffe, 4096);
	expect_body_proto(MB_F_HELLO, b, 16);
	hello_body(b, 0, 1, 4096);
	expect_body_proto(MB_F_HELLO, b, 16);
	hello_body(b, 0, 0, 4096);
	expect_body_proto(MB_F_HELLO, b, 16);
	/* max_frame < 4096 */
	hello_body(b, 1, 1, 4095);
	expect_body_proto(MB_F_HELLO, b, 16);
	hello_body(b, 1, 1, 0);
	expect_body_proto(MB_F_HELLO, b, 16);
}
END_TEST

/* _i is a name frame type (SUB..MSG): its name's length field against
 * the bytes that follow. */
START_TEST(test_name_lengths)
{
	uint8_t t = (uint8_t)_i, b[600];
	char big[300];
	struct mb_frame f;
	memset(big, 'q', sizeof(big));
	/* empty name */
	expect_body_proto(t, b, name_body(b, 0, "", 0));
	/* length past the end, by one and by a lot */
	expect_body_proto(t, b, name_body(b, 4, "a.b", 3));
	expect_body_proto(t, b, name_body(b, 255, "a.b", 3));
	expect_body_proto(t, b, name_body(b, 0xffff, big, 255));
	/* no room for the length itself */
	expect_body_proto(t, b, 0);
	expect_body_proto(t, b, 1);
	/* 255 bytes is the most, 256 one too many even when present */
	expect_body_ok(t, b, name_body(b, 255, big, 255), &f);
	ck_assert_uint_eq(f.name_len, 255);
	ck_assert_uint_eq(strlen(f.name), 255);
	expect_body_proto(t, b, name_body(b, 256, big, 256));
	/* SUB..UNSERVE: trailing bytes; MSG: they are the payload */
	uint32_t n = name_body(b, 3, "a.b\x01\x02", 5);
	if (t == MB_F_MSG) {
		expect_body_ok(t, b, n, &f);
		ck_assert_uint_eq(f.payload_len, 2);
		ck_assert_uint_eq(f.payload[1], 2);
	} else {
		expect_body_proto(t, b, n);
		expect_body_proto(t, b, name_body(b, 3, "a.b", 4)); /* trailing NUL */
	}
}
END_TEST

/* Names checked by type: wildcards only in SUB and UNSUB. */
static const struct {
	uint8_t type;
	const char *name;
	uint16_t len; /* 0: strlen */
	bool ok;
} names[] = {
	{ MB_F_SUB, "a..b", 0, false },     { MB_F_MSG, "a..b", 0, false },
	{ MB_F_SERVE, ".a", 0, false },     { MB_F_REQ, "a.", 0, false },
	{ MB_F_UNSUB, ".", 0, false },      { MB_F_MSG, "a b", 0, false },
	{ MB_F_MSG, "a\tb", 0, false },     { MB_F_MSG, "a\x7f", 0, false },
	{ MB_F_UNSERVE, "caf\xc3\xa9", 0, false },
	{ MB_F_MSG, "a\0b", 3, false },     { MB_F_SUB, "a.*\0", 4, false },
	/* wildcards where a literal name is required */
	{ MB_F_MSG, "a.*", 0, false },      { MB_F_MSG, "a.>", 0, false },
	{ MB_F_MSG, "*", 0, false },        { MB_F_SERVE, "svc.*", 0, false },
	{ MB_F_SERVE, ">", 0, false },      { MB_F_UNSERVE, "a.*.b", 0, false },
	{ MB_F_REQ, "svc.>", 0, false },    { MB_F_REQ, "*.x", 0, false },
	/* wildcards in patterns, well placed or not */
	{ MB_F_SUB, "a.*", 0, true },       { MB_F_SUB, ">", 0, true },
	{ MB_F_SUB, "*.*.>", 0, true },     { MB_F_UNSUB, "a.*.>", 0, true },
	{ MB_F_SUB, "a.>.b", 0, false },    { MB_F_SUB, "a*", 0, false },
	{ MB_F_UNSUB, "a.b>", 0, false },   { MB_F_SUB, "a.**", 0, false },
	/* literal names */
	{ MB_F_MSG, "a.b", 0, true },       { MB_F_SERVE, "svc.echo-1_x", 0, true },
	{ MB_F_REQ, "~!@#$%^&()", 0, true }, { MB_F_UNSERVE, "x", 0, true },
};

START_TEST(test_names)
{
	uint8_t b[600];
	struct mb_frame f = { .type = names[_i].type, .id = 7, .arg = 100 };
	uint16_t n = names[_i].len ? names[_i].len : (uint16_t)strlen(names[_i].name);
	memcpy(f.name, names[_i].name, n);
	f.name[n] = '\0';
	f.name_len = n;
	size_t total = build(b, sizeof(b), &f);
	uint32_t len = header_ok(b, f.type);
	ck_assert_uint_eq(total, MB_WIRE_HDR + len);
	if (names[_i].ok) {
		struct mb_frame out;
		expect_body_ok(f.type, b + MB_WIRE_HDR, len, &out);
		ck_assert_str_eq(out.name, names[_i].name);
	} else {
		expect_body_proto(f.type, b + MB_WIRE_HDR, len);
	}
}
END_TEST

START_TEST(test_rep_status)
{
	uint8_t b[64] = { 0 };
	struct mb_frame f;
	le32(b, 42);
	for (uint32_t st = 0; st <= 15; st++) {
		le32(b + 4, st);
		expect_body_ok(MB_F_REP, b, 8, &f);
		ck_assert_uint_eq(f.arg, st);
		ck_assert_uint_eq(f.id, 42);
		ck_assert_uint_eq(f.payload_len, 0);
	}
	static const uint32_t bad[] = { 16, 17, 255, 0x10000000u | 5, UINT32_MAX };
	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		le32(b + 4, bad[k]);
		expect_body_proto(MB_F_REP, b, 8);
		expect_body_proto(MB_F_REP, b, 9);
	}
	/* a payload only with status 0 */
	le32(b + 4, 0);
	expect_body_ok(MB_F_REP, b, 20, &f);
	ck_assert_uint_eq(f.payload_len, 12);
	le32(b + 4, MSGBUS_ETIMEDOUT);
	expect_body_proto(MB_F_REP, b, 9);
}
END_TEST

/* _i is the frame type: every shorter length of a sample body. Bodies
 * without a payload are refused at every length; those with one are
 * refused until the fixed fields and name are complete and then read as a
 * shorter payload. */
START_TEST(test_truncated)
{
	uint8_t buf[1024];
	struct mb_frame in = sample((uint8_t)_i), f;
	size_t n = build(buf, sizeof(buf), &in);
	uint32_t full = (uint32_t)n - MB_WIRE_HDR;
	uint32_t head = full - in.payload_len;
	const uint8_t *body = buf + MB_WIRE_HDR;
	for (uint32_t len = 0; len < full; len++) {
		if (len < head) {
			expect_body_proto((uint8_t)_i, body, len);
		} else {
			expect_body_ok((uint8_t)_i, body, len, &f);
			ck_assert_uint_eq(f.payload_len, len - head);
			if (len == head)
				ck_assert_ptr_null(f.payload);
		}
	}
	/* The same lengths, with a NULL body where it is empty. */
	const char *why = NULL;
	ASSERT_PROTO(mb_wire_decode((uint8_t)_i, NULL, 0, &f, &why), why);
}
END_TEST

/* _i is a name frame type (SUB..REQ): every value of the 16-bit name
 * length over a 10-byte name. Under valgrind, lengths past 300 are
 * sampled. */
START_TEST(test_sweep_name_len)
{
	uint8_t b[300];
	struct mb_frame f;
	const char *why;
	memset(b, 'a', sizeof(b));
	uint32_t at = _i == MB_F_REQ ? 8 : 0, len = at + 2 + 10;
	for (uint32_t d = 0; d <= 0xffff; d += tu_valgrind() && d > 300 ? 251 : 1) {
		le16(b + at, (uint16_t)d);
		int rc = mb_wire_decode((uint8_t)_i, b, len, &f, &why);
		bool fits = d >= 1 && d <= 10;
		bool exact = d == 10 || _i == MB_F_MSG || _i == MB_F_REQ;
		if (fits && exact) {
			ck_assert_int_eq(rc, 0);
			ck_assert_uint_eq(f.name_len, d);
			ck_assert_uint_eq(f.payload_len, 10 - d);
		} else {
			ck_assert_int_eq(rc, MSGBUS_EPROTO);
		}
	}
}
END_TEST

/* Every non-zero flags value is refused (sampled under valgrind). */
START_TEST(test_sweep_flags)
{
	uint8_t h[MB_WIRE_HEAD_MAX], type;
	uint32_t len;
	const char *why;
	struct mb_frame s = sample(MB_F_MSG);
	mb_wire_encode(h, &s);
	for (uint32_t fl = 1; fl <= 0xffff; fl += tu_valgrind() ? 97 : 1) {
		le16(h + 6, (uint16_t)fl);
		why = NULL;
		ASSERT_PROTO(mb_wire_header(h, MB_WIRE_MAX_FRAME, &type, &len, &why), why);
	}
}
END_TEST

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

Suite *suite_wire(void)
{
	Suite *s = suite_create("wire");

	TCase *tc = tcase_create("roundtrip");
	tcase_add_loop_test(tc, test_roundtrip, MB_F_HELLO, MB_F_PONG + 1);
	tcase_add_loop_test(tc, test_roundtrip_limits, MB_F_HELLO, MB_F_PONG + 1);
	tcase_add_test(tc, test_golden);
	tcase_add_test(tc, test_msg_fast_path);
	tcase_add_test(tc, test_encode_bound);
	tcase_add_test(tc, test_stream);
	suite_add_tcase(s, tc);

	tc = tcase_create("header");
	tcase_add_loop_test(tc, test_bad_header, 0, N(bad_headers));
	tcase_add_test(tc, test_header_max_frame);
	tcase_add_loop_test(tc, test_header_sizes, 0, N(header_sizes));
	tcase_add_test(tc, test_sweep_flags);
	suite_add_tcase(s, tc);

	tc = tcase_create("body");
	tcase_add_test(tc, test_decode_bad_type);
	tcase_add_test(tc, test_hello);
	tcase_add_loop_test(tc, test_name_lengths, MB_F_SUB, MB_F_MSG + 1);
	tcase_add_loop_test(tc, test_names, 0, N(names));
	tcase_add_test(tc, test_rep_status);
	tcase_add_loop_test(tc, test_truncated, MB_F_HELLO, MB_F_PONG + 1);
	tcase_add_loop_test(tc, test_sweep_name_len, MB_F_SUB, MB_F_REQ + 1);
	suite_add_tcase(s, tc);
	return s;
}
