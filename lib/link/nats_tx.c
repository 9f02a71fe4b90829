/*
 * nats_tx.c - a nats:// link's tx thread: local interest becomes SUB and
 * UNSUB (one SUB per distinct pattern, however many subscribers share it),
 * what local participants publish becomes PUB; see nats_link.h.
 */
#include "shm/subject.h"
#include "link/conn_state.h"
#include "link/link_log.h"
#include "link/link_send.h"
#include "link/nats_tx.h"
#include "pubsub/recv.h"
#include "ring/ring.h"
#include "platform/wait.h"

#include <errno.h>
#include <stdlib.h>

#define PASS_MAX 4096u   /* messages per pass of tx, at most */
#define INLINE_MAX 64u   /* messages per inline pass, at most */
#define FOLLOW_WAIT_MS 50 /* how often tx looks at interest and closing */
#define WRITE_STALL_MS 5000
#define WRITE_AT (32u << 10) /* an inline pass writes once this much is queued */
#define LONE_NS 5000u    /* ... or a first message after this long without a write */
#define NAP_NS 200000u   /* tx naps this long while publishers send inline */
#define PUB_ONE_WRITE 4094u /* requests and replies up to this size: one write */

/* ---- writing --------------------------------------------------------------- */

/* PUBs in txbuf whose bytes are not all written: counted sent when
 * queued, so taken back at a drop. txbuf holds only PUB records that we
 * encoded ("PUB subject [reply] len\r\n", payload, "\r\n"). */
static uint32_t unwritten_pubs(const struct mb_nats *n)
{
	uint32_t k = 0;
	for (size_t off = 0; off < n->txlen;) {
		const char *line = n->txbuf + off;
		const char *eol = memchr(line, '\n', n->txlen - off);
		if (!eol || eol - line < 2)
			break; /* cannot happen: we encoded it */
		const char *p = eol - 1; /* at the '\r' */
		size_t len = 0, mul = 1;
		while (p > line && p[-1] >= '0' && p[-1] <= '9') {
			len += (size_t)(p[-1] - '0') * mul;
			mul *= 10;
			p--;
		}
		off = (size_t)(eol + 1 - n->txbuf) + len + 2;
		k += off > n->txoff;
	}
	return k;
}

void mb_nats_tx_abandon_locked(struct mb_nats *n)
{
	uint32_t k = unwritten_pubs(n);
	if (k) {
		atomic_fetch_sub_explicit(&n->ls->sent, k, memory_order_relaxed);
		atomic_fetch_add_explicit(&n->ls->undelivered, k, memory_order_relaxed);
	}
	n->txlen = n->txoff = 0;
}

/* The connection failed under a write: rx sees it end and counts the
 * link down. */
static void write_failed_locked(struct mb_nats *n)
{
	mb_sock_shutdown(n->fd);
	n->up = false;
	mb_nats_tx_abandon_locked(n);
}

/* Write all txbuf holds, blocking; false: the connection failed. */
static bool flush_locked(struct mb_nats *n)
{
	if (n->txoff < n->txlen) {
		if (!n->up || n->fd < 0 ||
		    mb_sock_write2(n->fd, n->txbuf + n->txoff, n->txlen - n->txoff, NULL, 0,
		                   WRITE_STALL_MS)) {
			if (n->up)
				write_failed_locked(n);
			else
				mb_nats_tx_abandon_locked(n);
			return false;
		}
		n->last_write_ns = mb_now_ns();
	}
	n->txlen = n->txoff = 0;
	return true;
}

/* Write what the socket takes now; tx writes the rest. */
static void flush_nowait_locked(struct mb_nats *n)
{
	if (n->txoff == n->txlen || !n->up || n->fd < 0)
		return;
	long k = mb_sock_write_nowait(n->fd, n->txbuf + n->txoff, n->txlen - n->txoff);
	if (k == -EAGAIN)
		return;
	if (k < 0) {
		write_failed_locked(n);
		return;
	}
	n->txoff += (size_t)k;
	if (n->txoff == n->txlen)
		n->txlen = n->txoff = 0;
	n->last_write_ns = mb_now_ns();
}

bool mb_nats_pub_locked(struct mb_nats *n, const char *subject, const char *reply,
                        const void *data, size_t len)
{
	char buf[MB_NATS_LINE_MAX + PUB_ONE_WRITE];
	size_t hl = mb_nats_pub(buf, MB_NATS_LINE_MAX, subject, reply, len);
	if (!hl)
		return false;
	if (len > PUB_ONE_WRITE)
		return mb_nats_write_locked(n, buf, hl, data, len) &&
		       mb_nats_write_locked(n, "\r\n", 2, NULL, 0);
	/* one write, one segment: the server need not wait for the rest */
	if (len)
		memcpy(buf + hl, data, len);
	buf[hl + len] = '\r';
	buf[hl + len + 1] = '\n';
	return mb_nats_write_locked(n, buf, hl + len + 2, NULL, 0);
}

void mb_nats_flush(struct mb_nats *n)
{
	pthread_mutex_lock(&n->wlock);
	flush_locked(n);
	pthread_mutex_unlock(&n->wlock);
}

bool mb_nats_write_locked(struct mb_nats *n, const void *a, size_t alen, const void *b,
                          size_t blen)
{
	if (!n->up || n->fd < 0 || !flush_locked(n))
		return false;
	if (mb_sock_write2(n->fd, a, alen, b, blen, WRITE_STALL_MS) == 0) {
		n->last_write_ns = mb_now_ns();
		return true;
	}
	write_failed_locked(n);
	return false;
}

/* PING, counted with its write. Caller holds wlock. */
static bool ping_locked(struct mb_nats *n)
{
	static const char ping[] = "PING\r\n";
	if (!n->up || !mb_nats_write_locked(n, ping, sizeof(ping) - 1, NULL, 0))
		return false;
	mb_nats_seen_ping_locked(n);
	return true;
}

bool mb_nats_idle_ping(struct mb_nats *n, int fd)
{
	pthread_mutex_lock(&n->wlock);
	bool ok = n->fd == fd && ping_locked(n);
	pthread_mutex_unlock(&n->wlock);
	return ok;
}

void mb_nats_synced(struct mb_nats *n, uint64_t epoch, uint32_t gen)
{
	pthread_mutex_lock(&n->wlock);
	if (n->epoch == epoch && ping_locked(n))
		mb_nats_seen_synced_locked(n, gen);
	pthread_mutex_unlock(&n->wlock);
}

/* ---- interest ---------------------------------------------------------------- */

static void forget_told(struct mb_nats *n)
{
	for (uint32_t i = 0; i < n->ntold; i++)
		free(n->told[i].pattern);
	n->ntold = 0;
}

static int told_find(const struct mb_nats *n, const char *pattern, bool svc)
{
	for (uint32_t i = 0; i < n->ntold; i++)
		if (n->told[i].svc == svc && !strcmp(n->told[i].pattern, pattern))
			return (int)i;
	return -1;
}

bool mb_nats_sid_service_locked(struct mb_nats *n, uint64_t sid, char *name, size_t cap)
{
	for (uint32_t i = 0; i < n->ntold; i++) {
		if (n->told[i].sid == sid) {
			snprintf(name, cap, "%s", n->told[i].pattern);
			return n->told[i].svc;
		}
	}
	return false;
}

/* SUB pattern on the server (a service: its name, in the queue group of
 * that name); false: no memory, or the link is down. */
static bool told_add_locked(struct mb_nats *n, const char *pattern, bool svc)
{
	char line[MB_SUBJECT_MAX + 64];
	if (n->ntold == n->told_cap) {
		uint32_t cap = n->told_cap ? n->told_cap * 2 : 16;
		struct nats_told *t = realloc(n->told, cap * sizeof(*t));
		if (!t)
			return false;
		n->told = t;
		n->told_cap = cap;
	}
	char *p = strdup(pattern);
	/* odd for a service, even for a subscription: rx tells a MSG for
	 * subscribers (the stream) from a request without a lookup */
	uint64_t sid = (n->next_sid++ << 1) | (svc ? 1u : 0u);
	size_t len = mb_nats_sub(line, sizeof(line), pattern, svc ? pattern : NULL, sid);
	if (!p || !len || !mb_nats_write_locked(n, line, len, NULL, 0)) {
		free(p);
		return false;
	}
	n->told[n->ntold].pattern = p;
	n->told[n->ntold].sid = sid;
	n->told[n->ntold].svc = svc;
	n->ntold++;
	return true;
}

static bool told_del_locked(struct mb_nats *n, uint32_t i)
{
	char line[64];
	size_t len = mb_nats_unsub(line, sizeof(line), n->told[i].sid);
	if (!mb_nats_write_locked(n, line, len, NULL, 0))
		return false;
	free(n->told[i].pattern);
	n->told[i] = n->told[--n->ntold];
	return true;
}

/* Make the server's SUBs what local participants subscribe to and serve
 * now; false: try again later. */
static bool sync_interest(struct mb_nats *n, uint64_t epoch)
{
	struct names subs = { 0 }, svcs = { 0 };
	bool ok = mb_link_local_interest(n->lb, &subs, &svcs) == 0;
	pthread_mutex_lock(&n->wlock);
	ok = ok && n->up && n->epoch == epoch;
	for (uint32_t i = 0; ok && i < subs.n; i++)
		if (told_find(n, subs.v[i], false) < 0)
			ok = told_add_locked(n, subs.v[i], false);
	for (uint32_t i = 0; ok && i < svcs.n; i++)
		if (told_find(n, svcs.v[i], true) < 0)
			ok = told_add_locked(n, svcs.v[i], true);
	for (uint32_t i = 0; ok && i < n->ntold;) {
		if (mb_names_has(n->told[i].svc ? &svcs : &subs, n->told[i].pattern))
			i++;
		else
			ok = told_del_locked(n, i);
	}
	pthread_mutex_unlock(&n->wlock);
	mb_names_clear(&subs);
	mb_names_clear(&svcs);
	return ok;
}

/* ---- local messages out -------------------------------------------------------- */

static bool exported(const struct mb_nats *n, const char *subject)
{
	if (n->nexports == 0)
		return true;
	size_t slen = strlen(subject);
	for (uint32_t i = 0; i < n->nexports; i++)
		if (mb_subject_match(n->exports[i], strlen(n->exports[i]), subject, slen))
			return true;
	return false;
}

/* Whether m goes out: published here by a local participant (not a link:
 * one hop), on an exported subject. */
static bool wanted(struct mb_nats *n, const msgbus_msg *m)
{
	return !mb_link_is_bridge(n->lb, m->origin) && exported(n, m->subject);
}

/* Queue m as a PUB, or count it undelivered: the link is down, or m is
 * larger than the server's max_payload (never sent: the server would
 * close the connection). Messages are counted sent when queued, before
 * their bytes can reach the server, so a peer that has them never sees
 * stats that miss them; a drop takes the count back (abandon). nowait
 * (inline): never block, and false when txbuf has no room (m is then
 * kept in held). Caller holds wlock. */
static bool queue_locked(struct mb_nats *n, msgbus_msg *m, bool nowait)
{
	if (wanted(n, m)) {
		char head[MB_SUBJECT_MAX + 32];
		size_t hl = mb_nats_pub(head, sizeof(head), m->subject, NULL, m->len);
		size_t need = hl + m->len + 2;
		if (!n->up || !hl || m->len > n->max_payload) {
			atomic_fetch_add_explicit(&n->ls->undelivered, 1, memory_order_relaxed);
		} else if (n->txlen + need > NATS_TXBUF &&
		           (nowait ? (flush_nowait_locked(n), n->txlen + need > NATS_TXBUF)
		                   : !flush_locked(n))) {
			if (nowait) {
				n->held = m;
				return false;
			}
			atomic_fetch_add_explicit(&n->ls->undelivered, 1, memory_order_relaxed); /* lost with the link */
		} else if (need > NATS_TXBUF) {
			/* larger than the buffer (empty now): straight from the bus */
			atomic_fetch_add_explicit(&n->ls->sent, 1, memory_order_relaxed);
			if (!mb_nats_write_locked(n, head, hl, m->data, m->len) ||
			    !mb_nats_write_locked(n, "\r\n", 2, NULL, 0)) {
				atomic_fetch_sub_explicit(&n->ls->sent, 1, memory_order_relaxed);
				atomic_fetch_add_explicit(&n->ls->undelivered, 1, memory_order_relaxed);
			}
		} else {
			char *p = n->txbuf + n->txlen;
			memcpy(p, head, hl);
			if (m->len)
				memcpy(p + hl, m->data, m->len);
			p[hl + m->len] = '\r';
			p[hl + m->len + 1] = '\n';
			n->txlen += need;
			atomic_fetch_add_explicit(&n->ls->sent, 1, memory_order_relaxed);
		}
	}
	msgbus_msg_release(m);
	return true;
}

/* Take what follow holds (at most max) and queue what goes out; the
 * number taken. *owner as mb_sub_poll. Caller holds wlock. */
static uint32_t drain_locked(struct mb_nats *n, bool nowait, uint32_t max, int64_t *owner)
{
	uint32_t k = 0;
	*owner = -1;
	while (k < max) {
		msgbus_msg *m = n->held;
		n->held = NULL;
		if (!m && mb_sub_poll(n->follow, &m, owner) != 0)
			break;
		if (!queue_locked(n, m, nowait))
			break;
		k++;
	}
	return k;
}

/* A pass of tx: take, queue and write all, blocking. Before it sleeps:
 * make follow's releases visible to waiting publishers. The number taken
 * (held counts: work left by an inline pass). */
static uint32_t tx_pass(struct mb_nats *n, bool before_sleep, int64_t *owner)
{
	pthread_mutex_lock(&n->wlock);
	bool had = n->held || n->txlen > n->txoff;
	uint32_t took = drain_locked(n, false, PASS_MAX, owner);
	flush_locked(n);
	if (before_sleep)
		mb_sub_flush(n->follow);
	pthread_mutex_unlock(&n->wlock);
	return took + had;
}

void mb_nats_published(struct mb_links *ls)
{
	for (struct mb_nats *n = ls->nats; n; n = n->next) {
		if (pthread_mutex_trylock(&n->wlock))
			continue; /* tx (or another publisher) is at it */
		bool left = false;
		if (n->up) {
			bool was_empty = n->txlen == n->txoff;
			int64_t owner;
			if (drain_locked(n, true, INLINE_MAX, &owner))
				atomic_fetch_add_explicit(&n->inline_passes, 1, memory_order_relaxed);
			size_t queued = n->txlen - n->txoff;
			if (queued >= WRITE_AT ||
			    (queued && was_empty && mb_now_ns() - n->last_write_ns >= LONE_NS))
				flush_nowait_locked(n);
			/* A partial txbuf needs no wake-up: tx's nap ends
			 * within NAP_NS, or a commit wakes it from follow's. */
			left = n->held != NULL;
		}
		pthread_mutex_unlock(&n->wlock);
		if (left)
			mb_ec_signal(&n->tx_ec);
	}
}

/*
 * The tx thread. It sleeps on follow's word (every local commit wakes it),
 * or, once woken for nothing because publishers of the linking handle sent
 * inline, naps on tx_ec (NAP_NS at most) and writes what they left: on two
 * cores a thread woken at every message takes the CPU from the ones that
 * carry the stream. A nap with no inline pass returns to follow's word.
 */
void *mb_nats_tx_main(void *arg)
{
	struct mb_nats *n = arg;
	mb_thread_name("msgbus-nats-tx");
	uint64_t told_epoch = 0, dropped_seen = 0, next_check = 0, inline_seen = 0;
	uint32_t gen_seen = 0;
	int64_t owner = -1;
	bool synced = false, napping = false, woken = false;
	while (!mb_nats_stopping(n)) {
		pthread_mutex_lock(&n->wlock);
		bool up = n->up;
		uint64_t epoch = n->epoch;
		if (up && epoch != told_epoch) {
			forget_told(n); /* a new connection: every SUB again */
			told_epoch = epoch;
			synced = false;
		}
		pthread_mutex_unlock(&n->wlock);
		/* Read before the table: a change after it is seen next time.
		 * Acquire: pairs with the release increments that follow each
		 * change of the tables (pubsub/subscribe.c, reqrep/serve.c,
		 * shm/live.c). */
		uint32_t gen = atomic_load_explicit(&n->lb->hdr->interest_gen, memory_order_acquire);
		if (up && (!synced || gen != gen_seen)) {
			synced = sync_interest(n, epoch);
			gen_seen = gen;
			if (synced)
				mb_nats_synced(n, epoch, gen); /* a PING confirms the SUBs */
		}
		msgbus_sub_stats st;
		if (msgbus_sub_stats_get(n->follow, &st) == 0 && st.dropped != dropped_seen) {
			atomic_fetch_add_explicit(&n->ls->undelivered, st.dropped - dropped_seen, memory_order_relaxed);
			dropped_seen = st.dropped;
		}
		if (!napping && tx_pass(n, false, &owner)) {
			woken = false;
			continue;
		}
		uint64_t inl = atomic_load_explicit(&n->inline_passes, memory_order_relaxed);
		if (woken && !napping) {
			napping = true; /* woken for nothing: inline senders cover it */
			inline_seen = inl - 1;
		}
		if (napping && inl == inline_seen)
			napping = false; /* a nap without inline passes: quiet */
		inline_seen = inl;
		uint64_t now = mb_now_ns();
		uint64_t until = now + (napping ? NAP_NS : FOLLOW_WAIT_MS * 1000000ull);
		if (!mb_wait_on_owner(n->lb, owner, now, &next_check, &until))
			continue; /* the writer died: its slot is aborted now */
		_Atomic uint32_t *ec = napping ? &n->tx_ec : mb_sub_wait_word(n->follow);
		uint32_t v = mb_ec_prepare(ec);
		uint32_t took = tx_pass(n, true, &owner);
		if (took && !napping)
			continue;
		if (mb_nats_stopping(n))
			break;
		mb_ec_sleep(ec, v, now, until);
		/* Relaxed: only whether the sleep was a timeout (a hint for
		 * napping); the next pass reads under wlock. */
		woken = !napping && atomic_load_explicit(ec, memory_order_relaxed) != v;
	}
	return NULL;
}
