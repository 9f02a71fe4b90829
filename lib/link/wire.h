/*
 * wire.h - the frame codec of the TCP wire protocol (msgbus-wire(7)).
 *
 * Pure functions over caller buffers: no allocation, no I/O, no state, so
 * any thread may call them at any time. Bytes from a peer are never
 * trusted: every violation is MSGBUS_EPROTO with a static reason string
 * the transport can log before closing the connection.
 */
#ifndef MB_WIRE_H
#define MB_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MB_WIRE_MAGIC 0x3157424du /* bytes 'M','B','W','1' read little-endian */
#define MB_WIRE_VERSION 1
#define MB_WIRE_HDR 12u
/* Largest body any receiver may accept: a largest message plus its name
 * and fixed fields. The limit a peer announces in HELLO is clamped to it. */
#define MB_WIRE_MAX_FRAME ((256u << 20) + 1024u)
#define MB_WIRE_MIN_FRAME 4096u /* smallest max_frame a HELLO may announce */

enum mb_wire_type { MB_F_HELLO = 1, MB_F_SUB, MB_F_UNSUB, MB_F_SERVE, MB_F_UNSERVE, MB_F_MSG, MB_F_REQ, MB_F_REP, MB_F_PING, MB_F_PONG };

struct mb_frame {
	uint8_t type;
	/* HELLO */ uint16_t min_version, max_version; uint32_t max_frame; uint64_t node_id;
	/* PING/PONG */ uint64_t token;
	/* REQ/REP */ uint32_t id; uint32_t arg; /* REQ: timeout_ms, REP: status */
	/* SUB..REQ */ char name[256]; uint16_t name_len; /* NUL-terminated copy, validated */
	const uint8_t *payload; uint32_t payload_len; /* MSG/REQ/REP: points into the body */
};

/*
 * Check a frame header in buf (at least MB_WIRE_HDR bytes). 0 and
 * *type and *body_len, or MSGBUS_EPROTO with *why set to a static reason
 * (*why is written only on error, *type and *body_len only on success).
 * max_frame is our own limit (above MB_WIRE_MAX_FRAME counts as that).
 * Besides the header rules, a body_len that no body of the type can have
 * (HELLO other than 16, PING/PONG other than 8, SUB..UNSERVE above 257) is
 * refused here, before the transport buffers the body.
 */
int mb_wire_header(const uint8_t *buf, uint32_t max_frame, uint8_t *type, uint32_t *body_len,
                   const char **why);

/*
 * Decode and validate a body of len bytes (body may be NULL when len is 0).
 * 0, or MSGBUS_EPROTO and *why (written only on error). Nothing is
 * allocated: f->payload points into body (NULL when payload_len is 0),
 * names are copied into f->name. Fields the type does not carry are 0.
 * On error *f is unspecified.
 */
int mb_wire_decode(uint8_t type, const uint8_t *body, uint32_t len, struct mb_frame *f,
                   const char **why);

/*
 * Encode header + all fixed fields + name of f into out (at most
 * MB_WIRE_HEAD_MAX bytes), with body_len counting payload_len more bytes
 * that the caller sends after it (writev); payload_len is counted for MSG,
 * REQ and REP only. Returns the number of bytes written into out.
 * f->payload is not copied. f comes from our own code, so it is trusted:
 * the type (1..10) and name_len (1..255 where the type has a name) are
 * asserted, the name is not validated, and keeping body_len within the
 * peer's max_frame is the caller's job.
 */
size_t mb_wire_encode(uint8_t *out, const struct mb_frame *f);
#define MB_WIRE_HEAD_MAX (MB_WIRE_HDR + 8 + 2 + 255 + 16)

/*
 * The same bytes as mb_wire_encode for a MSG frame on the subject name
 * (name_len 1..255, not validated) with payload_len bytes of payload to
 * follow, without filling a struct mb_frame: the link's per-message path.
 * Writes MB_WIRE_HDR + 2 + name_len bytes into out and returns that.
 */
size_t mb_wire_encode_msg(uint8_t *out, const char *name, size_t name_len,
                          uint32_t payload_len);

/*
 * Whether a MSG body of len bytes starts with the name of n bytes at name
 * (its 2-byte length, then the bytes). When mb_wire_decode accepted a MSG
 * with that very name, a body that passes this needs no further check: the
 * rest is its payload, at body + 2 + n. The link's fast path for a run of
 * messages on one subject.
 */
static inline bool mb_wire_msg_named(const uint8_t *body, uint32_t len, const char *name,
                                     uint16_t n)
{
	return len >= 2u + n && (uint16_t)(body[0] | (unsigned)body[1] << 8) == n &&
	       memcmp(body + 2, name, n) == 0;
}

#endif
