/*
 * nats_tx.c - a nats:// link's tx thread: local interest becomes SUB and
 * UNSUB (one SUB per distinct pattern, however many subscribers share it),
 * what local participants publish becomes PUB; see nats_link.h.
 */
#include "shm/subject.h"
#include "link/conn_state.h"
#include "link/link_log.h"
#include "link/link_send.h"
#include "link/nats_link.h"
#include "pubsub/sub.h"

#define BATCH_MAX 1024u /* messages per write, at most */
#define FOLLOW_WAIT_MS 50 /* how often tx looks at interest and closing */
#define WRITE_STALL_MS 5000

bool mb_nats_write_locked(struct mb_nats *n, const void *a, size_t alen, const void *b,
                          size_t blen)
{
	if (!n->up || n->fd < 0)
		return false;
	if (mb_sock_write2(n->fd, a, alen, b, blen, WRITE_STALL_MS) == 0)
		return true;
	/* rx sees the connection end and counts the link down */
	mb_sock_shutdown(n->fd);
	n->up = false;
	return false;
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
	uint64_t sid = n->next_sid++;
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

/* Messages are counted as sent before their bytes can reach the server,
 * so a peer that has them never sees stats that miss them; a write that
 * fails takes the count back to undelivered. */
static void unsend(struct mb_nats *n, uint32_t k)
{
	atomic_fetch_sub(&n->ls->sent, k);
	atomic_fetch_add(&n->ls->undelivered, k);
}

/* Write what txbuf holds (count messages); count them sent or not. */
static void flush_locked(struct mb_nats *n, uint32_t *count)
{
	if (n->txlen && *count) {
		atomic_fetch_add(&n->ls->sent, *count);
		if (!mb_nats_write_locked(n, n->txbuf, n->txlen, NULL, 0))
			unsend(n, *count);
	}
	n->txlen = 0;
	*count = 0;
}

/* Queue m as a PUB, or count it undelivered: the link is down, or m is
 * larger than the server's max_payload (never sent: the server would
 * close the connection). Caller holds wlock. */
static void pub_locked(struct mb_nats *n, const msgbus_msg *m, uint32_t *count)
{
	char head[MB_SUBJECT_MAX + 32];
	size_t hl = mb_nats_pub(head, sizeof(head), m->subject, NULL, m->len);
	if (!n->up || !hl || m->len > n->max_payload) {
		atomic_fetch_add(&n->ls->undelivered, 1);
		return;
	}
	if (n->txlen + hl + m->len + 2 > NATS_TXBUF)
		flush_locked(n, count);
	if (hl + m->len + 2 > NATS_TXBUF) {
		/* larger than the buffer: straight from the bus */
		atomic_fetch_add(&n->ls->sent, 1);
		if (!mb_nats_write_locked(n, head, hl, m->data, m->len) ||
		    !mb_nats_write_locked(n, "\r\n", 2, NULL, 0))
			unsend(n, 1);
		return;
	}
	memcpy(n->txbuf + n->txlen, head, hl);
	if (m->len)
		memcpy(n->txbuf + n->txlen + hl, m->data, m->len);
	memcpy(n->txbuf + n->txlen + hl + m->len, "\r\n", 2);
	n->txlen += hl + m->len + 2;
	++*count;
}

/* Whether m goes out: published here by a local participant (not a link:
 * one hop), on an exported subject. */
static bool wanted(struct mb_nats *n, const msgbus_msg *m)
{
	return !mb_link_is_bridge(n->lb, m->origin) && exported(n, m->subject);
}

/* Take what the follower holds, waiting up to FOLLOW_WAIT_MS for the
 * first, and send it in batches. */
static void forward(struct mb_nats *n)
{
	msgbus_msg *m;
	if (msgbus_recv(n->follow, &m, FOLLOW_WAIT_MS))
		return;
	pthread_mutex_lock(&n->wlock);
	uint32_t count = 0, taken = 0;
	do {
		if (wanted(n, m))
			pub_locked(n, m, &count);
		msgbus_msg_release(m);
	} while (++taken < BATCH_MAX && msgbus_recv(n->follow, &m, 0) == 0);
	flush_locked(n, &count);
	pthread_mutex_unlock(&n->wlock);
}

void *mb_nats_tx_main(void *arg)
{
	struct mb_nats *n = arg;
	uint64_t told_epoch = 0, dropped_seen = 0;
	uint32_t gen_seen = 0;
	bool synced = false;
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
		/* Read before the table: a change after it is seen next time. */
		uint32_t gen = atomic_load(&n->lb->hdr->interest_gen);
		if (up && (!synced || gen != gen_seen)) {
			synced = sync_interest(n, epoch);
			gen_seen = gen;
		}
		forward(n);
		msgbus_sub_stats st;
		if (msgbus_sub_stats_get(n->follow, &st) == 0 && st.dropped != dropped_seen) {
			atomic_fetch_add(&n->ls->undelivered, st.dropped - dropped_seen);
			dropped_seen = st.dropped;
		}
	}
	return NULL;
}
