/*
 * nats_proto.h - the NATS client protocol codec (nats:// links).
 *
 * Pure functions over caller buffers: no allocation, no I/O, no state, so
 * any thread may call them. What a server sends is never trusted: a
 * control line longer than MB_NATS_LINE_MAX, a payload over the caller's
 * limit, or any malformed line is MB_NATS_BAD, after which the link
 * closes the connection. The caller's read buffer therefore never needs
 * more than mb_nats_buf_need(max_payload) bytes.
 */
#ifndef MB_NATS_PROTO_H
#define MB_NATS_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MB_NATS_LINE_MAX 4096u /* a control line, CRLF included (nats-server's) */
#define MB_NATS_URLS_MAX 16u   /* connect_urls kept from one INFO */
#define MB_NATS_HOSTPORT_MAX 128u
/* The largest payload (headers included) a link accepts from a server,
 * whatever its INFO says. */
#define MB_NATS_PAYLOAD_MAX (64u << 20)

enum mb_nats_op { MB_NATS_INFO = 1, MB_NATS_MSG, MB_NATS_HMSG, MB_NATS_PING, MB_NATS_PONG, MB_NATS_OK, MB_NATS_ERR };

struct mb_nats_info {
	char server_id[64];
	char version[32];
	uint64_t max_payload; /* 0: not given */
	int proto;
	bool headers;
	bool ldm; /* lame-duck mode: the server is going away */
	char urls[MB_NATS_URLS_MAX][MB_NATS_HOSTPORT_MAX]; /* host:port */
	uint32_t nurls;
};

/* One item from the server. Pointers point into the parsed buffer. */
struct mb_nats_in {
	enum mb_nats_op op;
	/* MSG, HMSG */
	const char *subject, *reply; /* reply NULL when absent; not NUL-terminated */
	size_t subject_len, reply_len;
	uint64_t sid;
	const uint8_t *hdr, *payload; /* hdr: HMSG only, from "NATS/1.0" */
	size_t hdr_len, payload_len;
	int status; /* HMSG: the status of "NATS/1.0 503", 0 if none */
	/* -ERR: the server's words, quotes removed */
	const char *text;
	size_t text_len;
};

#define MB_NATS_MORE 0  /* a whole item is not there yet */
#define MB_NATS_BAD (-1) /* bad input: close the connection */

/* Bytes a read buffer needs to hold any item within max_payload. */
static inline size_t mb_nats_buf_need(uint64_t max_payload)
{
	return MB_NATS_LINE_MAX + (size_t)max_payload + 2u;
}

/*
 * Parse one item at the start of buf[0..len): the bytes it takes (> 0),
 * MB_NATS_MORE, or MB_NATS_BAD with *why a static reason. An INFO is also
 * decoded into *info (which may be NULL to skip it). max_payload bounds
 * a MSG's or HMSG's total size.
 */
long mb_nats_parse(const uint8_t *buf, size_t len, uint64_t max_payload, struct mb_nats_in *in,
                   struct mb_nats_info *info, const char **why);

/* Decode the JSON object of an INFO line (len bytes). false: malformed. */
bool mb_nats_info_parse(const char *json, size_t len, struct mb_nats_info *info);

/*
 * Encoders: write into buf (cap bytes) and return the length, or 0 when it
 * does not fit. Strings are NUL-terminated; subjects and queue names are
 * the caller's to check (no spaces: mb_subject_check does that).
 */
size_t mb_nats_connect(char *buf, size_t cap, const char *user, const char *pass,
                       const char *token, const char *name);
/* The control line only; the payload and a CRLF follow it. */
size_t mb_nats_pub(char *buf, size_t cap, const char *subject, const char *reply, size_t len);
size_t mb_nats_hpub(char *buf, size_t cap, const char *subject, const char *reply,
                    size_t hdr_len, size_t total_len);
size_t mb_nats_sub(char *buf, size_t cap, const char *subject, const char *queue, uint64_t sid);
size_t mb_nats_unsub(char *buf, size_t cap, uint64_t sid);
size_t mb_nats_ping(char *buf, size_t cap);
size_t mb_nats_pong(char *buf, size_t cap);

#endif
