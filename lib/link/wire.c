/*
 * wire.c - encoding and checking the frames of the TCP wire protocol; the
 * format is described in msgbus-wire(7).
 *
 * Integers are assembled byte by byte: a frame sits at any offset of a
 * stream buffer, so a cast to a wider type could be unaligned, and shifts
 * give little-endian on every host without byte-order macros.
 *
 * Every length read from a body is compared against what remains before
 * anything is read or copied, always as "n > len - off" with off <= len,
 * so no sum can wrap.
 */
#include "link/wire.h"
#include "msgbus.h"
#include "shm/layout.h"
#include "shm/subject.h"

#include <assert.h>
#include <string.h>

/* REP status values of wire version 1: MSGBUS_OK and the codes up to
 * MSGBUS_ENOENT. A code added later is not in this version's vocabulary. */
#define REP_STATUS_MAX 15u
_Static_assert(MSGBUS_ENOENT == REP_STATUS_MAX, "wire v1 knows codes 1..15");
_Static_assert(MB_SUBJECT_MAX == 255, "wire names have at most 255 bytes");
_Static_assert(MB_MAX_MSG_SIZE + 8 + 2 + MB_SUBJECT_MAX <= MB_WIRE_MAX_FRAME,
               "a largest REQ fits a largest frame");
/* A name frame body: u16 length, then the name. */
#define NAME_BODY_MAX (2u + MB_SUBJECT_MAX)

static inline uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (unsigned)p[1] << 8);
}

static inline uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static inline uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static inline uint8_t *put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	return p + 2;
}

static inline uint8_t *put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
	return p + 4;
}

static inline uint8_t *put64(uint8_t *p, uint64_t v)
{
	return put32(put32(p, (uint32_t)v), (uint32_t)(v >> 32));
}

static int fail(const char **why, const char *reason)
{
	*why = reason;
	return MSGBUS_EPROTO;
}

/* Body lengths no frame of the type can have. Checked on the header too,
 * so a peer cannot make us buffer a large body only to refuse it. */
static const char *size_check(uint8_t type, uint32_t len)
{
	switch (type) {
	case MB_F_HELLO:
		return len == 16 ? NULL : "HELLO body is not 16 bytes";
	case MB_F_PING:
	case MB_F_PONG:
		return len == 8 ? NULL : "PING/PONG body is not 8 bytes";
	case MB_F_SUB:
	case MB_F_UNSUB:
	case MB_F_SERVE:
	case MB_F_UNSERVE:
		return len <= NAME_BODY_MAX ? NULL : "SUB/SERVE body longer than 257 bytes";
	default:
		return NULL;
	}
}

int mb_wire_header(const uint8_t *buf, uint32_t max_frame, uint8_t *type, uint32_t *body_len,
                   const char **why)
{
	const char *r;
	if (get32(buf) != MB_WIRE_MAGIC)
		return fail(why, "bad magic");
	if (buf[4] != MB_WIRE_VERSION)
		return fail(why, "unsupported frame version");
	if (buf[5] < MB_F_HELLO || buf[5] > MB_F_PONG)
		return fail(why, "unknown frame type");
	/* No flags are defined; refusing them keeps them free for a later
	 * version to give a meaning without old peers misreading it. */
	if (get16(buf + 6) != 0)
		return fail(why, "nonzero flags");
	uint32_t len = get32(buf + 8);
	if (max_frame > MB_WIRE_MAX_FRAME)
		max_frame = MB_WIRE_MAX_FRAME;
	if (len > max_frame)
		return fail(why, "frame too large");
	if ((r = size_check(buf[5], len)) != NULL)
		return fail(why, r);
	*type = buf[5];
	*body_len = len;
	return 0;
}

/* The name at body[*off]: copied into f->name and validated as a subject
 * (a pattern when wild_ok). Returns NULL or the reason it is refused. */
static const char *get_name(const uint8_t *body, uint32_t len, uint32_t *off,
                            struct mb_frame *f, bool wild_ok)
{
	size_t slen;
	bool wild;
	if (len - *off < 2)
		return "body too short for the name length";
	uint16_t n = get16(body + *off);
	*off += 2;
	if (n == 0)
		return "empty name";
	if (n > MB_SUBJECT_MAX)
		return "name longer than 255 bytes";
	if (n > len - *off)
		return "name length past end of body";
	memcpy(f->name, body + *off, n);
	f->name[n] = '\0';
	f->name_len = n;
	*off += n;
	/* Checked as a pattern to tell a misplaced wildcard from a malformed
	 * name; a NUL inside the name ends the check early, so the lengths
	 * differ. */
	if (mb_subject_check(f->name, &slen, true, &wild) != 0 || slen != n)
		return "invalid subject";
	if (wild && !wild_ok)
		return "wildcard in a name that must be literal";
	return NULL;
}

int mb_wire_decode(uint8_t type, const uint8_t *body, uint32_t len, struct mb_frame *f,
                   const char **why)
{
	const char *r = NULL;
	uint32_t off = 0;

	*f = (struct mb_frame){ .type = type };
	if (type < MB_F_HELLO || type > MB_F_PONG)
		return fail(why, "unknown frame type");
	if ((r = size_check(type, len)) != NULL)
		return fail(why, r);
	switch (type) {
	case MB_F_HELLO:
		f->min_version = get16(body);
		f->max_version = get16(body + 2);
		f->max_frame = get32(body + 4);
		f->node_id = get64(body + 8);
		if (f->min_version == 0)
			return fail(why, "HELLO min_version is 0");
		if (f->min_version > f->max_version)
			return fail(why, "HELLO min_version above max_version");
		if (f->max_frame < MB_WIRE_MIN_FRAME)
			return fail(why, "HELLO max_frame below 4096");
		return 0;
	case MB_F_PING:
	case MB_F_PONG:
		f->token = get64(body);
		return 0;
	case MB_F_SUB:
	case MB_F_UNSUB:
	case MB_F_SERVE:
	case MB_F_UNSERVE:
		r = get_name(body, len, &off, f, type == MB_F_SUB || type == MB_F_UNSUB);
		if (r == NULL && off != len)
			r = "trailing bytes after name";
		break;
	case MB_F_MSG:
		r = get_name(body, len, &off, f, false);
		break;
	case MB_F_REQ:
		if (len < 8)
			return fail(why, "REQ body shorter than id and timeout");
		f->id = get32(body);
		f->arg = get32(body + 4);
		off = 8;
		r = get_name(body, len, &off, f, false);
		break;
	case MB_F_REP:
		if (len < 8)
			return fail(why, "REP body shorter than id and status");
		f->id = get32(body);
		f->arg = get32(body + 4);
		off = 8;
		if (f->arg > REP_STATUS_MAX)
			r = "REP status is not a known error code";
		else if (f->arg != 0 && len > off)
			r = "REP payload with an error status";
		break;
	}
	if (r != NULL)
		return fail(why, r);
	/* The rest of a MSG, REQ or REP body is its payload. NULL rather than
	 * body + len when empty: body may be NULL for an empty frame. */
	if (off < len) {
		f->payload = body + off;
		f->payload_len = len - off;
	}
	return 0;
}

static uint8_t *put_name(uint8_t *p, const struct mb_frame *f)
{
	assert(f->name_len >= 1 && f->name_len <= MB_SUBJECT_MAX);
	p = put16(p, f->name_len);
	memcpy(p, f->name, f->name_len);
	return p + f->name_len;
}

size_t mb_wire_encode(uint8_t *out, const struct mb_frame *f)
{
	uint8_t *p = out + MB_WIRE_HDR;
	uint32_t payload = 0;

	switch (f->type) {
	case MB_F_HELLO:
		p = put16(p, f->min_version);
		p = put16(p, f->max_version);
		p = put32(p, f->max_frame);
		p = put64(p, f->node_id);
		break;
	case MB_F_PING:
	case MB_F_PONG:
		p = put64(p, f->token);
		break;
	case MB_F_SUB:
	case MB_F_UNSUB:
	case MB_F_SERVE:
	case MB_F_UNSERVE:
		p = put_name(p, f);
		break;
	case MB_F_MSG:
		p = put_name(p, f);
		payload = f->payload_len;
		break;
	case MB_F_REQ:
		p = put32(p, f->id);
		p = put32(p, f->arg);
		p = put_name(p, f);
		payload = f->payload_len;
		break;
	case MB_F_REP:
		p = put32(p, f->id);
		p = put32(p, f->arg);
		payload = f->payload_len;
		break;
	default:
		assert(!"mb_wire_encode: unknown frame type");
		break;
	}
	uint32_t fixed = (uint32_t)(p - out) - MB_WIRE_HDR;
	/* A message is at most MB_MAX_MSG_SIZE and the fixed fields and name
	 * at most 265 bytes, so every valid frame fits MB_WIRE_MAX_FRAME. */
	assert(payload <= MB_WIRE_MAX_FRAME - fixed);
	put32(out, MB_WIRE_MAGIC);
	out[4] = MB_WIRE_VERSION;
	out[5] = f->type;
	put16(out + 6, 0);
	put32(out + 8, fixed + payload);
	return (size_t)(p - out);
}

size_t mb_wire_encode_msg(uint8_t *out, const char *name, size_t name_len,
                          uint32_t payload_len)
{
	assert(name_len >= 1 && name_len <= MB_SUBJECT_MAX);
	assert(payload_len <= MB_WIRE_MAX_FRAME - 2 - name_len);
	put32(out, MB_WIRE_MAGIC);
	out[4] = MB_WIRE_VERSION;
	out[5] = MB_F_MSG;
	put16(out + 6, 0);
	put32(out + 8, (uint32_t)(2 + name_len) + payload_len);
	put16(out + MB_WIRE_HDR, (uint16_t)name_len);
	memcpy(out + MB_WIRE_HDR + 2, name, name_len);
	return MB_WIRE_HDR + 2 + name_len;
}
