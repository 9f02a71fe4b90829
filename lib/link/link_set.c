/* link_set.c - the links of a handle as a set: the list of live
 * connections (for shutdown and statistics) and what a link may create on
 * the bus. */
#include "link/link_set.h"
#include "link/conn_state.h"
#include "shm/control.h"
#include "shm/subject.h"
#include "platform/wait.h"

void mb_conns_count(struct mb_links *ls, uint32_t *subs, uint32_t *svcs)
{
	*subs = *svcs = 0;
	pthread_mutex_lock(&ls->lock);
	for (struct mb_conn_ref *cr = ls->conns; cr; cr = cr->next) {
		pthread_mutex_lock(&cr->conn->lock);
		*subs += cr->conn->rsubs.n;
		*svcs += cr->conn->nrsvcs;
		pthread_mutex_unlock(&cr->conn->lock);
	}
	pthread_mutex_unlock(&ls->lock);
}

void mb_conn_rec_count(struct mb_links *ls, const struct mb_link_rec *rec, uint32_t *subs,
                       uint32_t *svcs, bool *declared)
{
	*subs = *svcs = 0;
	*declared = false;
	for (struct mb_conn_ref *cr = ls->conns; cr; cr = cr->next) {
		if (cr->conn->rec != rec)
			continue;
		pthread_mutex_lock(&cr->conn->lock);
		*subs = cr->conn->rsubs.n;
		*svcs = cr->conn->nrsvcs;
		*declared = cr->conn->peer_declared;
		pthread_mutex_unlock(&cr->conn->lock);
		return;
	}
}

void mb_link_rec_set(struct mb_links *ls, struct mb_link_rec *r, uint32_t state,
                     const char *peer)
{
	pthread_mutex_lock(&ls->lock);
	r->state = state;
	if (peer)
		snprintf(r->peer, sizeof(r->peer), "%s", peer);
	pthread_mutex_unlock(&ls->lock);
}

void mb_link_ctr_add_each(struct mb_link_ctr *sum, _Atomic uint64_t *sent,
                          _Atomic uint64_t *received, _Atomic uint64_t *undelivered,
                          _Atomic uint64_t *reconnects, _Atomic uint64_t *bad_frames)
{
	mb_ctr_add(&sum->sent, sent);
	mb_ctr_add(&sum->received, received);
	mb_ctr_add(&sum->undelivered, undelivered);
	mb_ctr_add(&sum->reconnects, reconnects);
	mb_ctr_add(&sum->bad_frames, bad_frames);
}

void mb_link_ctr_add(struct mb_link_ctr *sum, struct mb_link_ctr *c)
{
	mb_link_ctr_add_each(sum, &c->sent, &c->received, &c->undelivered, &c->reconnects,
	                     &c->bad_frames);
}

void mb_conn_register(struct mb_links *ls, struct mb_conn *c, int fd)
{
	struct mb_conn_ref *cr = malloc(sizeof(*cr));
	pthread_mutex_lock(&ls->lock);
	if (cr) {
		cr->conn = c;
		cr->fd = fd;
		cr->next = ls->conns;
		ls->conns = cr;
	}
	/* Relaxed: under ls->lock, which mb_links_stop takes (in
	 * mb_conn_shutdown_all) after it sets closing. */
	if (atomic_load_explicit(&ls->closing, memory_order_relaxed) || !cr)
		mb_conn_set_down(c); /* closing raced with connecting */
	pthread_mutex_unlock(&ls->lock);
}

void mb_conn_unregister(struct mb_links *ls, struct mb_conn *c)
{
	pthread_mutex_lock(&ls->lock);
	for (struct mb_conn_ref **pp = &ls->conns; *pp; pp = &(*pp)->next) {
		if ((*pp)->conn == c) {
			struct mb_conn_ref *cr = *pp;
			*pp = cr->next;
			free(cr);
			break;
		}
	}
	pthread_mutex_unlock(&ls->lock);
}

struct mb_conn_door *mb_conn_door_take(struct mb_links *ls, struct mb_conn *c)
{
	pthread_mutex_lock(&ls->lock);
	/* Relaxed: under ls->lock, which every store to the list holds. */
	struct mb_conn_door *d = atomic_load_explicit(&ls->doors, memory_order_relaxed);
	while (d && d->used)
		d = d->next;
	if (!d && (d = calloc(1, sizeof(*d)))) {
		mb_slock_init(&d->wlock);
		atomic_init(&d->proxy_slot, UINT32_MAX);
		d->next = atomic_load_explicit(&ls->doors, memory_order_relaxed);
		/* Release: pairs with the acquire in links.c:links_direct(),
		 * which then sees d initialized. */
		atomic_store_explicit(&ls->doors, d, memory_order_release);
	}
	if (d)
		d->used = true;
	pthread_mutex_unlock(&ls->lock);
	if (d) {
		mb_slock_lock(&d->wlock);
		d->conn = c;
		mb_slock_unlock(&d->wlock);
	}
	return d;
}

void mb_conn_door_give(struct mb_links *ls, struct mb_conn_door *d)
{
	mb_slock_lock(&d->wlock);
	d->conn = NULL;
	atomic_store_explicit(&d->proxy_slot, UINT32_MAX, memory_order_relaxed); /* a hint */
	mb_slock_unlock(&d->wlock);
	pthread_mutex_lock(&ls->lock);
	d->used = false;
	pthread_mutex_unlock(&ls->lock);
}

void mb_conn_doors_free(struct mb_links *ls)
{
	/* Relaxed: the handle's publishers are done (its close). */
	struct mb_conn_door *d = atomic_load_explicit(&ls->doors, memory_order_relaxed);
	while (d) {
		struct mb_conn_door *next = d->next;
		free(d);
		d = next;
	}
}

void mb_conn_shutdown_all(struct mb_links *ls)
{
	pthread_mutex_lock(&ls->lock);
	for (struct mb_conn_ref *cr = ls->conns; cr; cr = cr->next) {
		mb_conn_set_down(cr->conn);
		mb_sock_shutdown(cr->fd);
		mb_ec_kick(&cr->conn->rx_ec); /* a napping rx thread */
	}
	pthread_mutex_unlock(&ls->lock);
}

bool mb_link_may_create(msgbus_bus *b, const char *subject, size_t len)
{
	uint32_t t, used = 0, n = b->cfg.max_subjects;
	if (mb_topic_find(b, subject, len, mb_hash(subject, len), &t) == 0)
		return true;
	/* Rare: the first message of a subject. Two links creating at once
	 * may both pass; the share is exceeded by at most one per link.
	 * Relaxed: a count, nothing is read through the states. */
	for (t = 0; t < n; t++)
		used += atomic_load_explicit(&mb_topic_at(b, t)->state, memory_order_relaxed) !=
		        MB_TOPIC_FREE;
	return used + 1 + MB_LINK_SUBJECTS_KEPT(n) <= n;
}
