/* nats_proto.c - the NATS client protocol codec; see nats_proto.h. */
#include "link/nats_proto.h"

#include <stdio.h>
#include <string.h>

/* ---- INFO: a small JSON reader -------------------------------------------- */

#define JSON_DEPTH_MAX 8

struct json {
	const char *p, *end;
};

static void json_ws(struct json *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\r' || *j->p == '\n'))
		j->p++;
}

/* A string at j->p; its raw bytes (escapes kept as they are, which no
 * field we keep uses) copied to out (cap bytes, NUL-terminated, truncated)
 * when out is not NULL. */
static bool json_string(struct json *j, char *out, size_t cap)
{
	size_t n = 0;
	if (j->p >= j->end || *j->p != '"')
		return false;
	for (j->p++; j->p < j->end && *j->p != '"'; j->p++) {
		if (*j->p == '\\' && ++j->p >= j->end)
			return false;
		if ((unsigned char)*j->p < 0x20)
			return false;
		if (out && n + 1 < cap)
			out[n++] = *j->p;
	}
	if (j->p >= j->end)
		return false;
	j->p++;
	if (out && cap)
		out[n] = '\0';
	return true;
}

static bool json_number(struct json *j, uint64_t *out)
{
	uint64_t x = 0;
	bool digits = false, neg = j->p < j->end && *j->p == '-';
	if (neg)
		j->p++;
	for (; j->p < j->end && *j->p >= '0' && *j->p <= '9'; j->p++) {
		digits = true;
		x = x > UINT64_MAX / 10 ? UINT64_MAX : x * 10 + (uint64_t)(*j->p - '0');
	}
	while (j->p < j->end && strchr(".eE+-0123456789", *j->p) && *j->p)
		j->p++; /* a fraction or exponent: not in any field we keep */
	if (out)
		*out = neg ? 0 : x;
	return digits;
}

static bool json_word(struct json *j, const char *w, bool *out, bool val)
{
	size_t n = strlen(w);
	if ((size_t)(j->end - j->p) < n || memcmp(j->p, w, n))
		return false;
	j->p += n;
	if (out)
		*out = val;
	return true;
}

static bool json_value(struct json *j, int depth);

/* An array or object at j->p (the opening bracket). */
static bool json_container(struct json *j, int depth, bool object)
{
	char close = object ? '}' : ']';
	if (depth >= JSON_DEPTH_MAX)
		return false;
	j->p++;
	json_ws(j);
	if (j->p < j->end && *j->p == close) {
		j->p++;
		return true;
	}
	for (;;) {
		json_ws(j);
		if (object) {
			if (!json_string(j, NULL, 0))
				return false;
			json_ws(j);
			if (j->p >= j->end || *j->p++ != ':')
				return false;
		}
		if (!json_value(j, depth + 1))
			return false;
		json_ws(j);
		if (j->p >= j->end)
			return false;
		if (*j->p == close) {
			j->p++;
			return true;
		}
		if (*j->p++ != ',')
			return false;
	}
}

static bool json_value(struct json *j, int depth)
{
	json_ws(j);
	if (j->p >= j->end)
		return false;
	switch (*j->p) {
	case '"': return json_string(j, NULL, 0);
	case '{': return json_container(j, depth, true);
	case '[': return json_container(j, depth, false);
	case 't': return json_word(j, "true", NULL, true);
	case 'f': return json_word(j, "false", NULL, false);
	case 'n': return json_word(j, "null", NULL, false);
	default: return json_number(j, NULL);
	}
}

/* connect_urls: an array of "host:port" strings; extra ones are skipped. */
static bool json_urls(struct json *j, struct mb_nats_info *info)
{
	if (j->p >= j->end || *j->p != '[')
		return json_value(j, 1); /* null, or not an array: ignored */
	j->p++;
	json_ws(j);
	if (j->p < j->end && *j->p == ']') {
		j->p++;
		return true;
	}
	for (;;) {
		json_ws(j);
		bool keep = info->nurls < MB_NATS_URLS_MAX;
		char tmp[MB_NATS_HOSTPORT_MAX];
		if (j->p < j->end && *j->p == '"') {
			if (!json_string(j, tmp, sizeof(tmp)))
				return false;
			if (keep && tmp[0])
				memcpy(info->urls[info->nurls++], tmp, sizeof(tmp));
		} else if (!json_value(j, 1)) {
			return false;
		}
		json_ws(j);
		if (j->p >= j->end)
			return false;
		if (*j->p == ']') {
			j->p++;
			return true;
		}
		if (*j->p++ != ',')
			return false;
	}
}

static bool info_field(struct json *j, const char *key, struct mb_nats_info *info)
{
	uint64_t n;
	if (!strcmp(key, "server_id"))
		return json_string(j, info->server_id, sizeof(info->server_id));
	if (!strcmp(key, "version"))
		return json_string(j, info->version, sizeof(info->version));
	if (!strcmp(key, "max_payload"))
		return json_number(j, &info->max_payload);
	if (!strcmp(key, "proto")) {
		if (!json_number(j, &n))
			return false;
		info->proto = n > 1000 ? 1000 : (int)n;
		return true;
	}
	if (!strcmp(key, "headers"))
		return json_word(j, "true", &info->headers, true) ||
		       json_word(j, "false", &info->headers, false);
	if (!strcmp(key, "connect_urls"))
		return json_urls(j, info);
	return json_value(j, 1);
}

bool mb_nats_info_parse(const char *json, size_t len, struct mb_nats_info *info)
{
	struct json j = { json, json + len };
	memset(info, 0, sizeof(*info));
	json_ws(&j);
	if (j.p >= j.end || *j.p++ != '{')
		return false;
	json_ws(&j);
	if (j.p < j.end && *j.p == '}')
		return true;
	for (;;) {
		char key[32];
		json_ws(&j);
		if (!json_string(&j, key, sizeof(key)))
			return false;
		json_ws(&j);
		if (j.p >= j.end || *j.p++ != ':')
			return false;
		json_ws(&j);
		if (!info_field(&j, key, info))
			return false;
		json_ws(&j);
		if (j.p >= j.end)
			return false;
		if (*j.p == '}')
			break;
		if (*j.p++ != ',')
			return false;
	}
	j.p++;
	json_ws(&j);
	return j.p == j.end;
}

/* ---- control lines ---------------------------------------------------------- */

#define ARGS_MAX 6 /* HMSG with a reply subject */

struct args {
	const char *v[ARGS_MAX];
	size_t len[ARGS_MAX];
	int n;
};

/* Split s[0..len) on spaces and tabs; false: more than ARGS_MAX. */
static bool split(const char *s, size_t len, struct args *a)
{
	a->n = 0;
	for (size_t i = 0; i < len;) {
		while (i < len && (s[i] == ' ' || s[i] == '\t'))
			i++;
		if (i == len)
			break;
		if (a->n == ARGS_MAX)
			return false;
		size_t st = i;
		while (i < len && s[i] != ' ' && s[i] != '\t')
			i++;
		a->v[a->n] = s + st;
		a->len[a->n++] = i - st;
	}
	return true;
}

/* A decimal of at most 19 digits (no overflow). */
static bool decimal(const char *s, size_t len, uint64_t *out)
{
	uint64_t x = 0;
	if (len == 0 || len > 19)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		x = x * 10 + (uint64_t)(s[i] - '0');
	}
	*out = x;
	return true;
}

static bool op_is(const char *s, size_t len, const char *op)
{
	size_t n = strlen(op);
	if (len < n)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch >= 'a' && ch <= 'z')
			ch -= 'a' - 'A';
		if (ch != (unsigned char)op[i])
			return false;
	}
	return len == n || s[n] == ' ' || s[n] == '\t';
}

/* "NATS/1.0" [status [description]] CRLF at the start of the headers. */
static bool header_status(const uint8_t *h, size_t len, int *status)
{
	static const char ver[] = "NATS/1.0";
	*status = 0;
	if (len < sizeof(ver) - 1 + 4 || memcmp(h, ver, sizeof(ver) - 1))
		return false;
	if (memcmp(h + len - 4, "\r\n\r\n", 4))
		return false; /* the block ends with an empty line */
	size_t i = sizeof(ver) - 1;
	while (i < len && h[i] == ' ')
		i++;
	if (i + 3 <= len && h[i] >= '1' && h[i] <= '9' && h[i + 1] >= '0' && h[i + 1] <= '9' &&
	    h[i + 2] >= '0' && h[i + 2] <= '9')
		*status = (h[i] - '0') * 100 + (h[i + 1] - '0') * 10 + (h[i + 2] - '0');
	return true;
}

/* MSG <subject> <sid> [reply] <n>, HMSG ... <hdr n> <total n>: the line's
 * arguments into in; the payload size into *total. */
static bool msg_args(const struct args *a, bool hmsg, struct mb_nats_in *in, uint64_t *total)
{
	int sizes = hmsg ? 2 : 1, fixed = 2 + sizes; /* op excluded */
	int n = a->n - 1;
	uint64_t hl = 0;
	if (n != fixed && n != fixed + 1)
		return false;
	in->subject = a->v[1];
	in->subject_len = a->len[1];
	if (!decimal(a->v[2], a->len[2], &in->sid))
		return false;
	if (n == fixed + 1) {
		in->reply = a->v[3];
		in->reply_len = a->len[3];
	}
	int s = a->n - sizes;
	if (!decimal(a->v[a->n - 1], a->len[a->n - 1], total))
		return false;
	if (hmsg && (!decimal(a->v[s], a->len[s], &hl) || hl > *total))
		return false;
	in->hdr_len = (size_t)hl;
	return true;
}

static long parse_msg(const uint8_t *buf, size_t len, size_t line_len, const struct args *a,
                      uint64_t max_payload, struct mb_nats_in *in, const char **why)
{
	bool hmsg = in->op == MB_NATS_HMSG;
	uint64_t total;
	if (!msg_args(a, hmsg, in, &total)) {
		*why = "malformed MSG line";
		return MB_NATS_BAD;
	}
	if (total > max_payload || total > MB_NATS_PAYLOAD_MAX) {
		*why = "MSG larger than max_payload";
		return MB_NATS_BAD;
	}
	size_t body = line_len + 2, need = body + (size_t)total + 2;
	if (len < need)
		return MB_NATS_MORE;
	if (buf[need - 2] != '\r' || buf[need - 1] != '\n') {
		*why = "MSG payload not followed by CRLF";
		return MB_NATS_BAD;
	}
	if (hmsg) {
		in->hdr = buf + body;
		if (!header_status(in->hdr, in->hdr_len, &in->status)) {
			*why = "malformed HMSG headers";
			return MB_NATS_BAD;
		}
	}
	in->payload = buf + body + in->hdr_len;
	in->payload_len = (size_t)total - in->hdr_len;
	return (long)need;
}

static long parse_line(const uint8_t *buf, size_t len, size_t line_len, uint64_t max_payload,
                       struct mb_nats_in *in, struct mb_nats_info *info, const char **why)
{
	const char *s = (const char *)buf;
	struct args a;
	long whole = (long)(line_len + 2);
	if (op_is(s, line_len, "INFO")) {
		in->op = MB_NATS_INFO;
		struct mb_nats_info tmp;
		if (!mb_nats_info_parse(s + 4, line_len - 4, info ? info : &tmp)) {
			*why = "malformed INFO";
			return MB_NATS_BAD;
		}
		return whole;
	}
	if (op_is(s, line_len, "-ERR")) {
		in->op = MB_NATS_ERR;
		in->text = s + 4;
		in->text_len = line_len - 4;
		while (in->text_len && (*in->text == ' ' || *in->text == '\t'))
			in->text++, in->text_len--;
		if (in->text_len >= 2 && in->text[0] == '\'' && in->text[in->text_len - 1] == '\'')
			in->text++, in->text_len -= 2;
		return whole;
	}
	if (!split(s, line_len, &a) || a.n == 0) {
		*why = "malformed line";
		return MB_NATS_BAD;
	}
	if (op_is(s, line_len, "MSG") || op_is(s, line_len, "HMSG")) {
		in->op = op_is(s, line_len, "HMSG") ? MB_NATS_HMSG : MB_NATS_MSG;
		return parse_msg(buf, len, line_len, &a, max_payload, in, why);
	}
	static const struct { const char *name; enum mb_nats_op op; } bare[] = {
		{ "PING", MB_NATS_PING }, { "PONG", MB_NATS_PONG }, { "+OK", MB_NATS_OK },
	};
	for (size_t i = 0; i < sizeof(bare) / sizeof(bare[0]); i++) {
		if (a.n == 1 && op_is(s, line_len, bare[i].name)) {
			in->op = bare[i].op;
			return whole;
		}
	}
	*why = "unknown operation";
	return MB_NATS_BAD;
}

long mb_nats_parse(const uint8_t *buf, size_t len, uint64_t max_payload, struct mb_nats_in *in,
                   struct mb_nats_info *info, const char **why)
{
	size_t scan = len < MB_NATS_LINE_MAX ? len : MB_NATS_LINE_MAX;
	const uint8_t *lf = memchr(buf, '\n', scan);
	memset(in, 0, sizeof(*in));
	if (!lf) {
		if (len >= MB_NATS_LINE_MAX) {
			*why = "control line longer than 4096 bytes";
			return MB_NATS_BAD;
		}
		return MB_NATS_MORE;
	}
	size_t line_len = (size_t)(lf - buf);
	if (line_len == 0 || buf[line_len - 1] != '\r' || memchr(buf, '\0', line_len)) {
		*why = "control line not ended by CRLF";
		return MB_NATS_BAD;
	}
	return parse_line(buf, len, line_len - 1, max_payload, in, info, why);
}

/* ---- encoders --------------------------------------------------------------- */

/* Append s to buf as JSON string contents; false: no room. */
static bool json_put(char *buf, size_t cap, size_t *n, const char *s)
{
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		char esc[8];
		int k;
		if (ch == '"' || ch == '\\')
			k = snprintf(esc, sizeof(esc), "\\%c", ch);
		else if (ch < 0x20)
			k = snprintf(esc, sizeof(esc), "\\u%04x", ch);
		else
			k = snprintf(esc, sizeof(esc), "%c", ch);
		if (*n + (size_t)k >= cap)
			return false;
		memcpy(buf + *n, esc, (size_t)k);
		*n += (size_t)k;
	}
	buf[*n] = '\0';
	return true;
}

static bool put(char *buf, size_t cap, size_t *n, const char *s)
{
	size_t l = strlen(s);
	if (*n + l >= cap)
		return false;
	memcpy(buf + *n, s, l + 1);
	*n += l;
	return true;
}

static bool put_field(char *buf, size_t cap, size_t *n, const char *key, const char *val)
{
	return !val || (put(buf, cap, n, ",\"") && put(buf, cap, n, key) &&
	                put(buf, cap, n, "\":\"") && json_put(buf, cap, n, val) &&
	                put(buf, cap, n, "\""));
}

size_t mb_nats_connect(char *buf, size_t cap, const char *user, const char *pass,
                       const char *token, const char *name)
{
	size_t n = 0;
	/* Every default the server would otherwise pick is spelled out:
	 * verbose, pedantic and echo default to true. */
	bool ok = put(buf, cap, &n,
	              "CONNECT {\"verbose\":false,\"pedantic\":false,\"tls_required\":false,"
	              "\"lang\":\"C\",\"version\":\"libmsgbus\",\"protocol\":1,\"echo\":false,"
	              "\"headers\":true,\"no_responders\":true") &&
	          put_field(buf, cap, &n, "user", user) && put_field(buf, cap, &n, "pass", pass) &&
	          put_field(buf, cap, &n, "auth_token", token) &&
	          put_field(buf, cap, &n, "name", name) && put(buf, cap, &n, "}\r\n");
	return ok ? n : 0;
}

/* snprintf's result as a length: 0 when it did not fit. */
static size_t fmt(size_t cap, int k)
{
	return k > 0 && (size_t)k < cap ? (size_t)k : 0;
}

size_t mb_nats_pub(char *buf, size_t cap, const char *subject, const char *reply, size_t len)
{
	return fmt(cap,
	           snprintf(buf, cap, "PUB %s%s%s %zu\r\n", subject, reply ? " " : "",
	                    reply ? reply : "", len));
}

size_t mb_nats_hpub(char *buf, size_t cap, const char *subject, const char *reply,
                    size_t hdr_len, size_t total_len)
{
	return fmt(cap,
	           snprintf(buf, cap, "HPUB %s%s%s %zu %zu\r\n", subject, reply ? " " : "",
	                    reply ? reply : "", hdr_len, total_len));
}

size_t mb_nats_sub(char *buf, size_t cap, const char *subject, const char *queue, uint64_t sid)
{
	return fmt(cap,
	           snprintf(buf, cap, "SUB %s%s%s %llu\r\n", subject, queue ? " " : "",
	                    queue ? queue : "", (unsigned long long)sid));
}

size_t mb_nats_unsub(char *buf, size_t cap, uint64_t sid)
{
	return fmt(cap, snprintf(buf, cap, "UNSUB %llu\r\n", (unsigned long long)sid));
}

size_t mb_nats_ping(char *buf, size_t cap)
{
	return fmt(cap, snprintf(buf, cap, "PING\r\n"));
}

size_t mb_nats_pong(char *buf, size_t cap)
{
	return fmt(cap, snprintf(buf, cap, "PONG\r\n"));
}
