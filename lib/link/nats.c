/*
 * nats.c - nats:// links: the URL, and the connection thread (connect
 * through the server list with backoff, handshake, read); see
 * nats_link.h. nats_tx.c writes, nats_rr.c does request/reply.
 */
#include "shm/subject.h"
#include "link/conn_state.h"
#include "link/link_log.h"
#include "link/nats.h"
#include "link/nats_link.h"
#include "link/nats_rr.h"
#include "link/nats_tx.h"
#include "pubsub/route.h"
#include "pubsub/recv.h"
#include "platform/wait.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NATS_BACKOFF_MIN_MS 50u
#define NATS_BACKOFF_MAX_MS 2000u
/* A blocked read returns after this long at most, so its reader looks at
 * closing: rx, or a requester reading (msgbus_shutdown ends its wait
 * within it). */
#define READ_POLL_MS 50
#define NATS_HANDSHAKE_MS 2000u    /* INFO, then PONG after CONNECT, within this */
#define IDLE_PING_MS 2000u    /* a PING after this long without input */
#define NATS_DEAD_AFTER_MS 6000u   /* no input at all for this long: gone */
#define DEFAULT_MAX_PAYLOAD (1u << 20)
/* What one read brings may wait this long in all for room on the bus
 * (a subscriber descheduled for a moment), then is dropped and counted:
 * far below what makes the server cut a slow consumer off (10 s, or
 * 64 MiB pending), and the socket is read again after it. */
#define RX_ROOM_NS 5000000ull
/* In lame-duck mode, replies to requests in flight are awaited this long
 * before the move (the server serves for 10 s by default). */
#define NATS_LDM_WAIT_MS 1000u
/* While requesters read the connection, rx naps this long at a time, and
 * owns the reading side again once none asked for it for NATS_GONE_NS:
 * what comes while none reads waits one nap at most. */
#ifndef NATS_RX_NAP_NS
#define NATS_RX_NAP_NS 500000ull
#endif
#ifndef NATS_GONE_NS
#define NATS_GONE_NS 2000000ull
#endif

/* ---- URL ------------------------------------------------------------------- */

/* host:port or [v6]:port, port optional (4222); false: malformed. */
static bool parse_server(const char *s, size_t len, struct nats_server *out)
{
	const char *colon = NULL, *h = s;
	size_t hlen;
	if (len && *s == '[') {
		const char *end = memchr(s, ']', len);
		if (!end)
			return false;
		h = s + 1;
		hlen = (size_t)(end - h);
		if (end + 1 < s + len) {
			if (end[1] != ':')
				return false;
			colon = end + 1;
		}
	} else {
		for (size_t i = len; i-- > 0;)
			if (s[i] == ':') {
				colon = s + i;
				break;
			}
		hlen = colon ? (size_t)(colon - s) : len;
	}
	size_t plen = colon ? (size_t)(s + len - colon - 1) : 0;
	if (hlen == 0 || hlen >= sizeof(out->host) || (colon && (plen < 1 || plen > 5)))
		return false;
	memcpy(out->host, h, hlen);
	out->host[hlen] = '\0';
	if (!colon) {
		snprintf(out->port, sizeof(out->port), "%s", NATS_DEFAULT_PORT);
		return true;
	}
	for (size_t i = 0; i < plen; i++)
		if (colon[1 + i] < '0' || colon[1 + i] > '9')
			return false;
	memcpy(out->port, colon + 1, plen);
	out->port[plen] = '\0';
	return atoi(out->port) >= 1 && atoi(out->port) <= 65535;
}

/* A server learned from INFO connect_urls, unless known or full. */
static void add_server(struct mb_nats *n, const char *hostport)
{
	struct nats_server s;
	if (!parse_server(hostport, strlen(hostport), &s))
		return;
	for (uint32_t i = 0; i < n->nsrv; i++)
		if (!strcmp(n->srv[i].host, s.host) && !strcmp(n->srv[i].port, s.port))
			return;
	if (n->nsrv < NATS_SERVERS_MAX)
		n->srv[n->nsrv++] = s;
}

/* user:pass or token, before the '@'. */
static bool parse_creds(struct mb_nats *n, const char *s, size_t len)
{
	const char *colon = memchr(s, ':', len);
	if (len == 0 || len >= NATS_CRED_MAX)
		return false;
	if (!colon) {
		memcpy(n->token, s, len);
		return true;
	}
	memcpy(n->user, s, (size_t)(colon - s));
	memcpy(n->pass, colon + 1, len - (size_t)(colon - s) - 1);
	return colon > s;
}

/* export=PATTERN[,PATTERN...], up to the next '&' */
static bool parse_exports(struct mb_nats *n, const char *q, size_t qlen)
{
	if (!qlen || n->nexports)
		return false; /* empty, or given twice */
	for (const char *end = q + qlen; q < end;) {
		size_t len = strcspn(q, ",&"), checked;
		if (n->nexports == NATS_EXPORTS_MAX || len == 0 || len > MB_SUBJECT_MAX)
			return false;
		char *p = strndup(q, len);
		if (!p)
			return false;
		n->exports[n->nexports++] = p;
		if (mb_subject_check(p, &checked, true, NULL) || checked != len)
			return false;
		q += len;
		if (*q == ',' && ++q == end)
			return false; /* a trailing ',' */
	}
	return true;
}

/* ?KEY=VALUE[&KEY=VALUE...]: export=PATTERNS, lossless=0|1 */
static bool parse_query(struct mb_nats *n, const char *q)
{
	while (*q) {
		size_t len = strcspn(q, "&");
		if (len > 7 && !strncmp(q, "export=", 7)) {
			if (!parse_exports(n, q + 7, len - 7))
				return false;
		} else if (len == 10 && !strncmp(q, "lossless=", 9) && (q[9] == '0' || q[9] == '1')) {
			n->lossless = q[9] == '1';
		} else {
			return false;
		}
		q += len;
		if (*q == '&' && !*++q)
			return false; /* a trailing '&' */
	}
	return true;
}

static int parse_url(struct mb_nats *n, const char *url)
{
	const char *s = url + 7, *q = strchr(s, '?');
	size_t len = q ? (size_t)(q - s) : strlen(s);
	const char *at = NULL;
	for (size_t i = 0; i < len; i++)
		if (s[i] == '@')
			at = s + i; /* the last: a password may hold one */
	if (at) {
		if (!parse_creds(n, s, (size_t)(at - s)))
			return MSGBUS_EINVAL;
		len -= (size_t)(at + 1 - s);
		s = at + 1;
	}
	while (len) {
		size_t one = 0;
		while (one < len && s[one] != ',')
			one++;
		if (n->nsrv == NATS_SERVERS_MAX || !parse_server(s, one, &n->srv[n->nsrv]))
			return MSGBUS_EINVAL;
		n->nsrv++;
		s += one;
		len -= one;
		if (len && (--len == 0))
			return MSGBUS_EINVAL; /* a trailing ',' */
		s += len ? 1 : 0;
	}
	if (n->nsrv == 0 || (q && !parse_query(n, q + 1)))
		return MSGBUS_EINVAL;
	snprintf(n->shown, sizeof(n->shown), "nats://%s%s", at ? "***@" : "", at ? at + 1 : url + 7);
	return 0;
}

/* ---- the connection -------------------------------------------------------- */

static void nats_logf(struct mb_nats *n, const char *what, const char *why)
{
	mb_link_logf("msgbus: link %s: %s: %s\n", n->shown, what, why);
}

/* A control line on fd: after what txbuf holds once the link is up. */
static bool send_simple(struct mb_nats *n, int fd, const char *line)
{
	bool ok;
	pthread_mutex_lock(&n->wlock);
	if (n->up && n->fd == fd)
		ok = mb_nats_write_locked(n, line, strlen(line), NULL, 0);
	else
		ok = mb_sock_write2(fd, line, strlen(line), NULL, 0, (int)NATS_DEAD_AFTER_MS) == 0;
	pthread_mutex_unlock(&n->wlock);
	return ok;
}

/* Read more into r (without waiting: nowait): 1, 0 when nothing came (a
 * read timed out), -1 at the end of the stream or an error. */
static int rx_read(struct mb_nats *n, int fd, struct nats_rx *r, bool nowait)
{
	if (r->off && r->off == r->len)
		r->off = r->len = 0;
	if (r->off && r->cap - r->len < MB_NATS_LINE_MAX) {
		memmove(r->buf, r->buf + r->off, r->len - r->off);
		r->len -= r->off;
		r->off = 0;
	}
	if (r->len == r->cap)
		return 0; /* cannot happen: the parser refuses more */
	long got = nowait ? mb_sock_read_nowait(fd, r->buf + r->len, r->cap - r->len)
	                  : mb_sock_read(fd, r->buf + r->len, r->cap - r->len);
	if (got == -EAGAIN || got == -EINTR)
		return 0;
	if (got <= 0)
		return -1;
	r->len += (size_t)got;
	r->last_rx_ns = mb_now_ns();
	n->rx_room_until = r->last_rx_ns + RX_ROOM_NS;
	return 1;
}

/* After a read that brought nothing: PING an idle server; false when it
 * is silent too long, or the PING cannot go. */
static bool rx_idle(struct mb_nats *n, int fd, struct nats_rx *r)
{
	uint64_t now = mb_now_ns(), idle = now - r->last_rx_ns;
	if (idle > NATS_DEAD_AFTER_MS * 1000000ull) {
		nats_logf(n, "closing", "the server sent nothing for 6 s");
		return false;
	}
	if (idle > IDLE_PING_MS * 1000000ull && !r->ping_sent_ns) {
		r->ping_sent_ns = now;
		return mb_nats_idle_ping(n, fd);
	}
	return true;
}

/* A MSG from NATS, published on the bus: a full bus drops it (counted)
 * once this read's RX_ROOM_NS are spent, rather than stall the connection.
 * The bridge handle has no links: nothing for msgbus_publish's hook. */
static void on_msg(struct mb_nats *n, const struct mb_nats_in *in)
{
	char subject[MB_SUBJECT_MAX + 1];
	int rc = MSGBUS_EINVAL;
	size_t len = in->subject_len;
	if (len <= MB_SUBJECT_MAX) {
		memcpy(subject, in->subject, len);
		subject[len] = '\0';
		/* A message takes no entry in the table of service names:
		 * any number of subjects may arrive. */
		rc = mb_closing(n->lb) ? MSGBUS_ECLOSED
		                       : mb_route_publish(n->lb, subject, in->payload,
		                                          in->payload_len, UINT32_MAX, 0,
		                                          n->rx_room_until);
	}
	atomic_fetch_add_explicit(rc ? &n->ls->undelivered : &n->ls->received, 1, memory_order_relaxed);
}

/*
 * A MSG for the inbox, for a local service, or for subscribers. Headers
 * are not carried onto the bus (a bus message has none): an HMSG's
 * payload is, and its status, on the inbox, answers the request (503: no
 * responders). Elsewhere an HMSG with a status ("NATS/1.0 100 Idle
 * Heartbeat", JetStream's flow control) is the server's, not a message:
 * it is dropped, and counted neither received nor undelivered.
 */
static void dispatch_msg(struct mb_nats *n, const struct mb_nats_in *in)
{
	char service[MB_SUBJECT_MAX + 1];
	if (in->sid == NATS_INBOX_SID) {
		mb_nats_on_reply(n, in);
		return;
	}
	if (in->op == MB_NATS_HMSG && in->status)
		return;
	if (!NATS_SID_IS_SVC(in->sid)) {
		on_msg(n, in);
		return;
	}
	pthread_mutex_lock(&n->wlock);
	bool svc = mb_nats_sid_service_locked(n, in->sid, service, sizeof(service));
	pthread_mutex_unlock(&n->wlock);
	if (svc)
		mb_nats_on_request(n, service, in);
	else
		on_msg(n, in);
}

enum item_rc { ITEM_OK, ITEM_PONG, ITEM_ERR, ITEM_BAD, ITEM_LDM };

static enum item_rc on_item(struct mb_nats *n, int fd, const struct mb_nats_in *in,
                            const struct mb_nats_info *info)
{
	switch (in->op) {
	case MB_NATS_INFO:
		for (uint32_t i = 0; i < info->nurls; i++)
			add_server(n, info->urls[i]);
		return info->ldm ? ITEM_LDM : ITEM_OK;
	case MB_NATS_PING:
		return send_simple(n, fd, "PONG\r\n") ? ITEM_OK : ITEM_BAD;
	case MB_NATS_PONG:
		mb_nats_seen_pong(n);
		return ITEM_PONG;
	case MB_NATS_ERR: {
		char text[256];
		snprintf(text, sizeof(text), "'%.*s'", (int)(in->text_len < 200 ? in->text_len : 200),
		         in->text);
		nats_logf(n, "-ERR from the server", text);
		return ITEM_ERR;
	}
	case MB_NATS_MSG:
	case MB_NATS_HMSG:
		dispatch_msg(n, in);
		return ITEM_OK;
	default: return ITEM_OK;
	}
}

/* Handle the whole items in r. The kinds seen are or-ed into *seen (bit
 * per item_rc); false: bad input (logged, counted). */
static bool rx_items(struct mb_nats *n, int fd, struct nats_rx *r, unsigned *seen)
{
	for (;;) {
		struct mb_nats_in in;
		struct mb_nats_info info;
		const char *why = "";
		long took = mb_nats_parse(r->buf + r->off, r->len - r->off, r->max_payload, &in, &info,
		                          &why);
		if (took == MB_NATS_MORE)
			return true;
		if (took == MB_NATS_BAD) {
			nats_logf(n, "closing on bad input", why);
			atomic_fetch_add_explicit(&n->ls->bad_frames, 1, memory_order_relaxed);
			return false;
		}
		r->off += (size_t)took;
		enum item_rc rc = on_item(n, fd, &in, &info);
		if (rc == ITEM_BAD)
			return false;
		if (rc == ITEM_PONG)
			r->ping_sent_ns = 0;
		*seen |= 1u << rc;
	}
}

/* The first INFO, within NATS_HANDSHAKE_MS: sizes the read buffer. */
static bool read_info(struct mb_nats *n, int fd, struct nats_rx *r)
{
	uint64_t end = mb_now_ns() + NATS_HANDSHAKE_MS * 1000000ull;
	while (mb_now_ns() < end && !mb_nats_stopping(n)) {
		if (rx_read(n, fd, r, false) < 0)
			return false;
		struct mb_nats_in in;
		struct mb_nats_info info;
		const char *why = "";
		long took = mb_nats_parse(r->buf, r->len, 0, &in, &info, &why);
		if (took == MB_NATS_MORE)
			continue;
		if (took == MB_NATS_BAD || in.op != MB_NATS_INFO) {
			nats_logf(n, "closing: the server's first line is not INFO",
			             took == MB_NATS_BAD ? why : "another operation");
			atomic_fetch_add_explicit(&n->ls->bad_frames, 1, memory_order_relaxed);
			return false;
		}
		r->off = (size_t)took;
		/* echo:false needs proto 1, no_responders needs headers (2.2) */
		if (info.proto < 1 || !info.headers) {
			nats_logf(n, "closing: the server is too old",
			             "NATS protocol 1 with headers (nats-server 2.2 or later) needed");
			return false;
		}
		r->max_payload = info.max_payload ? info.max_payload : DEFAULT_MAX_PAYLOAD;
		if (r->max_payload > MB_NATS_PAYLOAD_MAX)
			r->max_payload = MB_NATS_PAYLOAD_MAX;
		for (uint32_t i = 0; i < info.nurls; i++)
			add_server(n, info.urls[i]);
		size_t need = mb_nats_buf_need(r->max_payload);
		uint8_t *b = realloc(r->buf, need);
		if (!b)
			return false;
		r->buf = b;
		r->cap = need;
		return true;
	}
	return false;
}

/* CONNECT and PING, then the PONG (or an -ERR) within NATS_HANDSHAKE_MS. */
static bool handshake(struct mb_nats *n, int fd, struct nats_rx *r)
{
	char line[1024];
	size_t len = mb_nats_connect(line, sizeof(line) - 8, n->user[0] ? n->user : NULL,
	                             n->pass[0] ? n->pass : NULL, n->token[0] ? n->token : NULL,
	                             "libmsgbus");
	if (!len)
		return false;
	/* The reply inbox, before the PING: up means it is subscribed. */
	int k = snprintf(line + len, sizeof(line) - len, "SUB %s* %u\r\nPING\r\n", n->inbox,
	                 NATS_INBOX_SID);
	if (k <= 0 || (size_t)k >= sizeof(line) - len || !send_simple(n, fd, line))
		return false;
	uint64_t end = mb_now_ns() + NATS_HANDSHAKE_MS * 1000000ull;
	while (mb_now_ns() < end && !mb_nats_stopping(n)) {
		unsigned seen = 0;
		if (!rx_items(n, fd, r, &seen) || (seen & 1u << ITEM_ERR))
			return false;
		if (seen & 1u << ITEM_PONG)
			return true;
		if (rx_read(n, fd, r, false) < 0)
			return false;
	}
	nats_logf(n, "closing", "no PONG to CONNECT in time");
	return false;
}

/* The link is usable: tx may write, and re-sends every SUB. */
static void set_up(struct mb_nats *n, int fd, uint64_t max_payload, bool up)
{
	pthread_mutex_lock(&n->wlock);
	n->fd = up ? fd : -1;
	n->up = up;
	n->max_payload = max_payload;
	if (up)
		mb_nats_seen_reset_locked(n);
	if (up)
		n->epoch++;
	else
		mb_nats_tx_abandon_locked(n); /* what was not written is lost */
	pthread_mutex_unlock(&n->wlock);
	mb_nats_seen_up(n, fd, up);
	/* Release: pairs with the acquire in links.c:msgbus_link_stats_get,
	 * so a user who sees the link counted up or down finds n->up (and
	 * the reply inbox's SUB) as it says. */
	if (up)
		atomic_fetch_add_explicit(&n->ls->up, 1, memory_order_release);
	else
		atomic_fetch_sub_explicit(&n->ls->up, 1, memory_order_release);
}

/*
 * The server is in lame-duck mode: it will close its clients soon (after
 * a grace period, 10 s by default). Move while it still serves: true if
 * another server is known (rx_main connects to it at once, no backoff:
 * next_srv is past this one), false to stay until it closes.
 */
static bool lame_duck(struct mb_nats *n, const struct nats_server *srv)
{
	bool other = false;
	for (uint32_t i = 0; i < n->nsrv && !other; i++)
		other = strcmp(n->srv[i].host, srv->host) || strcmp(n->srv[i].port, srv->port);
	nats_logf(n, other ? "the server is in lame-duck mode: moving to another"
	                      : "the server is in lame-duck mode, and no other is known",
	             srv->host);
	if (other)
		n->lame_duck = true;
	return other;
}

/* Whether a requester asked for the reading side lately. Relaxed: a hint
 * (await_ns orders nothing); a stale answer costs a nap or a hand-off. */
static bool rx_wanted(struct mb_nats *n, uint64_t now)
{
	return atomic_load_explicit(&n->await_ns, memory_order_relaxed) + NATS_GONE_NS > now;
}

/*
 * rx lets requesters read: it naps NATS_RX_NAP_NS at a time, until a nap
 * ends with the reading side free, or a requester leaves it work (it
 * signals rx_ec after setting rd_left, under rlock). Called and returns
 * with rlock held.
 */
static void rx_nap(struct mb_nats *n)
{
	/* Announced before the unlock: a requester that takes rlock after it
	 * and leaves rx work signals after its unlock. */
	uint32_t v = mb_ec_prepare(&n->rx_ec);
	pthread_mutex_unlock(&n->rlock);
	for (;;) {
		uint64_t now = mb_now_ns();
		if (!mb_nats_stopping(n))
			mb_ec_sleep(&n->rx_ec, v, now, now + NATS_RX_NAP_NS);
		v = mb_ec_prepare(&n->rx_ec);
		if (pthread_mutex_trylock(&n->rlock) == 0)
			return;
		if (mb_nats_stopping(n)) {
			/* its read ends at the shutdown of the socket */
			pthread_mutex_lock(&n->rlock);
			return;
		}
		/* A requester reads: it handles all that comes. Prepared
		 * before the trylock: it signals after its unlock. */
	}
}

/* Read until the connection drops (rx's turns at the reading side);
 * answer PINGs, send ours when idle. */
static void run_up(struct mb_nats *n, int fd, const struct nats_server *srv)
{
	struct nats_rx *r = &n->rd;
	uint64_t ldm_until = 0; /* moving: once no request awaits a reply, or then */
	pthread_mutex_lock(&n->rlock);
	n->rfd = fd;
	n->rd_left = 0;
	while (!mb_nats_stopping(n)) {
		unsigned seen = 0;
		if ((n->rd_left & NATS_LEFT_END) || !rx_items(n, fd, r, &seen))
			break;
		if (n->rd_left & NATS_LEFT_LDM)
			seen |= 1u << ITEM_LDM;
		n->rd_left = 0;
		if ((seen & 1u << ITEM_LDM) && !ldm_until && lame_duck(n, srv))
			ldm_until = mb_now_ns() + NATS_LDM_WAIT_MS * 1000000ull;
		if (ldm_until && (!mb_nats_requests_out(n) || mb_now_ns() > ldm_until)) {
			mb_nats_flush(n); /* what is queued goes to this server */
			break;
		}
		/* The owner blocks in the read; while requesters read, rx
		 * takes what is there and naps. */
		bool nap = rx_wanted(n, mb_now_ns());
		int got = rx_read(n, fd, r, nap);
		if (got < 0)
			break;
		if (got > 0)
			continue;
		if (!rx_idle(n, fd, r))
			break;
		if (nap)
			rx_nap(n);
	}
	n->rfd = -1;
	pthread_mutex_unlock(&n->rlock);
}

/*
 * A requester's turn at the reading side (mb_nats_await_reply): read and
 * handle all the connection brings, as rx does, until the call's word is
 * no longer w. true: it changed, or a read timed out (look again); false:
 * the connection needs rx (rd_left set: the caller signals it), the bus
 * closes, or a read could outlast until. Caller holds rlock, rfd >= 0.
 */
static bool await_locked(struct mb_nats *n, msgbus_bus *b, _Atomic uint64_t *word, uint64_t w,
                         uint64_t until)
{
	struct nats_rx *r = &n->rd;
	int fd = n->rfd;
	for (;;) {
		unsigned seen = 0;
		if (n->rd_left || mb_nats_stopping(n) || mb_closing(b))
			return false;
		if (!rx_items(n, fd, r, &seen)) {
			n->rd_left |= NATS_LEFT_END;
			return false;
		}
		if (seen & 1u << ITEM_LDM) {
			n->rd_left |= NATS_LEFT_LDM;
			return false;
		}
		/* Acquire: pairs with the release that answered the call
		 * (reqrep/serve.c:respond, written by on_reply above or by
		 * another thread). */
		if (atomic_load_explicit(word, memory_order_acquire) != w)
			return true;
		if (mb_now_ns() + READ_POLL_MS * 1000000ull > until)
			return false;
		int got = rx_read(n, fd, r, false);
		if (got < 0 || (got == 0 && !rx_idle(n, fd, r))) {
			n->rd_left |= NATS_LEFT_END;
			return false;
		}
		if (got == 0)
			return true;
	}
}

bool mb_nats_await_reply(msgbus_bus *b, uint32_t entry, uint64_t until)
{
	/* Pairs with the release in links.c:links_of(). */
	struct mb_links *ls = __atomic_load_n(&b->links, __ATOMIC_ACQUIRE);
	uint64_t now = mb_now_ns();
	if (!ls || entry >= MB_CALLS || now + READ_POLL_MS * 1000000ull > until)
		return false;
	_Atomic uint64_t *word = &mb_call_at(b, b->self, entry)->word;
	/* Relaxed: which link took the call, to look it up; await_locked
	 * acquires the answer. */
	uint64_t w = atomic_load_explicit(word, memory_order_relaxed);
	uint32_t worker = MB_CALLW_WORKER(w);
	if (MB_CALLW_STATE(w) != MB_CALL_TAKEN || !mb_link_is_bridge(b, worker))
		return false;
	struct mb_nats *n;
	pthread_mutex_lock(&ls->lock);
	for (n = ls->nats; n && n->lb->self != worker; n = n->next)
		;
	/* Relaxed: under ls->lock, which mb_nats_stop takes to unlist n
	 * before it waits for none. */
	if (n)
		atomic_fetch_add_explicit(&n->awaiters, 1, memory_order_relaxed);
	pthread_mutex_unlock(&ls->lock);
	if (!n)
		return false;
	atomic_store_explicit(&n->await_ns, now, memory_order_relaxed); /* see rx_wanted */
	bool read = false;
	if (pthread_mutex_trylock(&n->rlock) == 0) {
		read = n->rfd >= 0 && await_locked(n, b, word, w, until);
		bool left = n->rd_left != 0;
		pthread_mutex_unlock(&n->rlock);
		if (left)
			mb_ec_signal(&n->rx_ec);
	}
	/* Release: pairs with the acquire in mb_nats_stop: our last use of
	 * n is before it is freed. */
	atomic_fetch_sub_explicit(&n->awaiters, 1, memory_order_release);
	return read;
}

/* One connection to srv; true if it was up. */
static bool run_connection(struct mb_nats *n, const struct nats_server *srv, bool again)
{
	int fd;
	struct nats_rx *r = &n->rd;
	bool was_up = false;
	mb_nats_seen_connecting(n);
	if (mb_tcp_connect(srv->host, srv->port, &fd))
		return false;
	pthread_mutex_lock(&n->wlock);
	n->conn_fd = fd;
	bool closing = mb_nats_stopping(n);
	pthread_mutex_unlock(&n->wlock);
	mb_sock_set_read_timeout(fd, READ_POLL_MS);
	mb_sock_set_write_timeout(fd, 250);
	/* rfd is -1: rx alone uses rd until run_up */
	*r = (struct nats_rx){ .buf = malloc(MB_NATS_LINE_MAX), .cap = MB_NATS_LINE_MAX,
	                       .last_rx_ns = mb_now_ns() };
	if (!closing && r->buf && read_info(n, fd, r) && handshake(n, fd, r)) {
		was_up = true;
		if (again)
			atomic_fetch_add_explicit(&n->ls->reconnects, 1, memory_order_relaxed);
		set_up(n, fd, r->max_payload, true);
		run_up(n, fd, srv);
		set_up(n, fd, 0, false);
		mb_nats_fail_pending(n, MSGBUS_EPEERDIED);
	}
	pthread_mutex_lock(&n->wlock);
	n->conn_fd = -1;
	pthread_mutex_unlock(&n->wlock);
	mb_sock_shutdown(fd);
	mb_close_fd(fd);
	free(r->buf);
	r->buf = NULL;
	return was_up;
}

static void backoff_sleep(struct mb_nats *n, unsigned ms)
{
	for (unsigned t = 0; t < ms && !mb_nats_stopping(n); t += 20)
		mb_nap_us(20000);
}

/* Connect through the server list, round after round; after a round
 * where none stayed up, back off (doubling, capped). */
static void *rx_main(void *arg)
{
	struct mb_nats *n = arg;
	mb_thread_name("msgbus-nats-rx");
	unsigned delay = NATS_BACKOFF_MIN_MS;
	bool ever_up = false, round_ok = false;
	while (!mb_nats_stopping(n)) {
		struct nats_server s = n->srv[n->next_srv];
		n->next_srv = (n->next_srv + 1) % n->nsrv;
		if (run_connection(n, &s, ever_up)) {
			ever_up = round_ok = true;
			delay = NATS_BACKOFF_MIN_MS;
		}
		if (n->lame_duck) {
			/* the next server at once, with no backoff; the lame
			 * duck's turn comes last */
			n->lame_duck = false;
			round_ok = true;
		}
		if (n->next_srv == 0) {
			if (!round_ok) {
				mb_nats_seen_backoff(n);
				backoff_sleep(n, delay);
				delay = delay * 2 > NATS_BACKOFF_MAX_MS ? NATS_BACKOFF_MAX_MS : delay * 2;
			}
			round_ok = false;
		}
	}
	return NULL;
}

/* ---- start and stop -------------------------------------------------------- */

static void nats_free(struct mb_nats *n)
{
	mb_nats_rr_end(n); /* before the handle its workers use */
	if (n->held) {
		atomic_fetch_add_explicit(&n->ls->undelivered, 1, memory_order_relaxed);
		msgbus_msg_release(n->held);
	}
	if (n->follow)
		msgbus_unsubscribe(n->follow);
	if (n->lb)
		n->lb->bus_hooks->close(n->lb);
	for (uint32_t i = 0; i < n->nexports; i++)
		free(n->exports[i]);
	for (uint32_t i = 0; i < n->ntold; i++)
		free(n->told[i].pattern);
	free(n->told);
	free(n->txbuf);
	pthread_mutex_destroy(&n->wlock);
	pthread_mutex_destroy(&n->rlock);
	free(n);
}

/* The bridge handle and its follower; 0 or an error. */
static int nats_open(struct mb_nats *n)
{
	int rc = n->ls->bus->bus_hooks->reopen(n->ls->bus, &n->lb);
	if (rc) {
		n->lb = NULL;
		return rc;
	}
	/* Relaxed: see conn_state.h:mb_link_is_bridge(). */
	atomic_fetch_or_explicit(&mb_part_at(n->lb, n->lb->self)->flags, MB_PARTF_BRIDGE,
	                         memory_order_relaxed);
	n->lb->spin_ns = 0; /* link threads sleep at once */
	rc = msgbus_subscribe(n->lb, ">", n->lossless ? 0 : MSGBUS_SUB_LOSSY, &n->follow);
	if (rc)
		n->follow = NULL;
	n->txbuf = malloc(NATS_TXBUF);
	return rc ? rc : n->txbuf ? 0 : MSGBUS_ENOMEM;
}

static int start_threads(struct mb_nats *n)
{
	if (pthread_create(&n->tx, NULL, mb_nats_tx_main, n))
		return MSGBUS_ENOMEM;
	/* The stores of stop below are seq_cst: see mb_nats_stop. The
	 * threads have nothing to sleep on yet but their naps' ends. */
	if (pthread_create(&n->rr, NULL, mb_nats_rr_main, n) == 0) {
		if (pthread_create(&n->rx, NULL, rx_main, n) == 0)
			return 0;
		atomic_store(&n->stop, true);
		mb_ec_kick(&mb_part_at(n->lb, n->lb->self)->reply_ec);
		pthread_join(n->rr, NULL);
	}
	atomic_store(&n->stop, true);
	mb_ec_kick(&n->tx_ec);
	mb_ec_kick(mb_sub_wait_word(n->follow));
	pthread_join(n->tx, NULL);
	return MSGBUS_ENOMEM;
}

int mb_nats_connect_url(struct mb_links *ls, const char *url)
{
	struct mb_nats *n = calloc(1, sizeof(*n));
	if (!n)
		return MSGBUS_ENOMEM;
	n->ls = ls;
	n->seen.state = MSGBUS_LINK_CONNECTING;
	n->fd = n->conn_fd = n->rfd = -1;
	n->next_sid = 1;
	pthread_mutex_init(&n->wlock, NULL);
	pthread_mutex_init(&n->rlock, NULL);
	mb_nats_rr_init(n);
	int rc = parse_url(n, url);
	if (!rc)
		rc = nats_open(n);
	rc = rc ? rc : start_threads(n);
	if (rc) {
		nats_free(n);
		return rc;
	}
	pthread_mutex_lock(&ls->lock);
	n->next = ls->nats;
	ls->nats = n;
	pthread_mutex_unlock(&ls->lock);
	return 0;
}

void mb_nats_stop(struct mb_links *ls)
{
	pthread_mutex_lock(&ls->lock);
	struct mb_nats *list = ls->nats;
	ls->nats = NULL;
	pthread_mutex_unlock(&ls->lock);
	for (struct mb_nats *n = list; n; n = n->next) {
		/* seq_cst: the Dekker pair with the loads of stop after
		 * mb_ec_prepare in the tx and rr threads (mb_nats_stopping):
		 * the kicks below follow it. */
		atomic_store(&n->stop, true);
		pthread_mutex_lock(&n->wlock);
		if (n->conn_fd >= 0)
			mb_sock_shutdown(n->conn_fd);
		pthread_mutex_unlock(&n->wlock);
	}
	while (list) {
		struct mb_nats *n = list;
		list = n->next;
		pthread_join(n->rx, NULL);
		mb_ec_kick(&n->tx_ec);
		mb_ec_kick(mb_sub_wait_word(n->follow));
		pthread_join(n->tx, NULL);
		mb_ec_kick(&mb_part_at(n->lb, n->lb->self)->reply_ec);
		pthread_join(n->rr, NULL);
		/* Requesters reading it (unlisted above, no new ones) end at
		 * the shutdown of its socket. Acquire: pairs with the release
		 * in mb_nats_await_reply. */
		while (atomic_load_explicit(&n->awaiters, memory_order_acquire))
			mb_nap_us(100);
		nats_free(n);
	}
}
