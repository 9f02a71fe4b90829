/* nats_info.c - what msgbus_links(3) shows of the nats:// links of a
 * handle, and the count of PINGs and PONGs that confirms their SUBs
 * (nats_info.h); nats_tx.c writes the PINGs. */
#include "link/nats_info.h"
#include "link/nats_link.h"

#include <stdio.h>
#include <string.h>

static void set_state(struct mb_nats *n, uint32_t state, const char *peer)
{
	pthread_mutex_lock(&n->ls->lock);
	n->seen.state = state;
	snprintf(n->seen.peer, sizeof(n->seen.peer), "%s", peer);
	pthread_mutex_unlock(&n->ls->lock);
}

void mb_nats_seen_connecting(struct mb_nats *n)
{
	set_state(n, MSGBUS_LINK_CONNECTING, "");
}

void mb_nats_seen_backoff(struct mb_nats *n)
{
	set_state(n, MSGBUS_LINK_BACKOFF, "");
}

void mb_nats_seen_up(struct mb_nats *n, int fd, bool up)
{
	char peer[64];
	if (!up || mb_sock_peer(fd, peer, sizeof(peer)))
		peer[0] = '\0';
	set_state(n, up ? MSGBUS_LINK_UP : MSGBUS_LINK_CONNECTING, peer);
}

void mb_nats_seen_reset_locked(struct mb_nats *n)
{
	atomic_store_explicit(&n->seen.confirm_at, 0, memory_order_relaxed);
	atomic_store_explicit(&n->seen.pings, 0, memory_order_relaxed);
	atomic_store_explicit(&n->seen.pongs, 0, memory_order_relaxed);
}

void mb_nats_seen_pong(struct mb_nats *n)
{
	atomic_fetch_add_explicit(&n->seen.pongs, 1, memory_order_relaxed);
}

void mb_nats_seen_ping_locked(struct mb_nats *n)
{
	atomic_fetch_add_explicit(&n->seen.pings, 1, memory_order_relaxed);
}

void mb_nats_seen_synced_locked(struct mb_nats *n, uint32_t gen)
{
	atomic_store_explicit(&n->seen.synced_gen, gen, memory_order_relaxed);
	atomic_store_explicit(&n->seen.confirm_at,
	                      atomic_load_explicit(&n->seen.pings, memory_order_relaxed),
	                      memory_order_relaxed);
}

void mb_nats_ctr(struct mb_links *ls, struct mb_link_ctr *sum)
{
	mb_link_ctr_add_each(sum, &ls->sent, &ls->received, &ls->undelivered, &ls->reconnects,
	                     &ls->bad_frames);
}

/* Whether the server processed the SUBs of the bus's interest now. */
static bool confirmed(struct mb_nats *n)
{
	uint64_t at = atomic_load_explicit(&n->seen.confirm_at, memory_order_relaxed);
	return n->seen.state == MSGBUS_LINK_UP && at &&
	       atomic_load_explicit(&n->seen.pongs, memory_order_relaxed) >= at &&
	       atomic_load_explicit(&n->seen.synced_gen, memory_order_relaxed) ==
	               atomic_load_explicit(&n->lb->hdr->interest_gen, memory_order_relaxed);
}

size_t mb_nats_list(struct mb_links *ls, msgbus_link_info *arr, size_t cap)
{
	size_t k = 0, many = ls->nats && ls->nats->next;
	struct mb_link_ctr c = { 0 };
	mb_nats_ctr(ls, &c);
	for (struct mb_nats *n = ls->nats; n; n = n->next, k++) {
		if (k >= cap)
			continue;
		msgbus_link_info *li = &arr[k];
		memset(li, 0, sizeof(*li));
		snprintf(li->url, sizeof(li->url), "%s", n->shown); /* credentials masked */
		li->kind = MSGBUS_LINK_NATS;
		li->state = n->seen.state;
		if (li->state == MSGBUS_LINK_UP)
			snprintf(li->peer, sizeof(li->peer), "%s", n->seen.peer);
		li->flags = (confirmed(n) ? MSGBUS_LINKINFO_CONFIRMED : 0) |
		            (many ? MSGBUS_LINKINFO_SHARED : 0);
		li->sent = c.sent;
		li->received = c.received;
		li->undelivered = c.undelivered;
		li->reconnects = c.reconnects;
		li->bad_frames = c.bad_frames;
	}
	return k;
}
