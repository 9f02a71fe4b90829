/*
 * service_fd.c - msgbus_service_fd: a worker as a pollable descriptor
 * (DESIGN.md section 9, platform/doorbell.h). The workers of a service
 * share one queue and sleep on its topic's data_ec, so the bells sit in the
 * topic, MB_TOPIC_BELLS of them: a worker takes a free one (or one whose
 * holder died) by CAS on its owner word. Every signal of data_ec that finds
 * WAITERS rings each armed bell: all idle workers with a descriptor become
 * readable, and those that lose the race for the request read EAGAIN.
 */
#include "reqrep/service_fd.h"
#include "shm/live.h"
#include "platform/doorbell.h"
#include "platform/fence.h"

/* Take a bell of the topic: 0, or MSGBUS_ELIMIT when all are held. */
static int bell_take(msgbus_service *svc)
{
	msgbus_bus *b = svc->bus;
	struct mb_bell *bells = mb_topic_at(b, svc->t)->bells;

	for (uint32_t i = 0; i < MB_TOPIC_BELLS; i++) {
		/* Relaxed: the CAS below decides; the owner word orders nothing
		 * else (the bell's state and id are written after it, by us). */
		uint32_t o = atomic_load_explicit(&bells[i].owner, memory_order_relaxed);

		/* Twice: asking about a dead holder reaps it, which frees the
		 * bell under our CAS (shm/live.c). */
		for (int round = 0; round < 2; round++) {
			if (o != 0 && (o - 1 == b->self || (o - 1 < b->cfg.max_participants &&
			                                    mb_part_alive(b, o - 1))))
				break; /* held by a live participant (or by us) */
			if (atomic_compare_exchange_strong_explicit(&bells[i].owner, &o,
			                                            b->self + 1,
			                                            memory_order_relaxed,
			                                            memory_order_relaxed)) {
				mb_bell_off(&bells[i]);
				svc->bell = i;
				return 0;
			}
		}
	}
	return MSGBUS_ELIMIT;
}

/* Is a request ready to take? (Here, not in serve.c: only the descriptor
 * asks, and serve.c calls this file.) */
static bool service_ready(msgbus_service *svc)
{
	msgbus_bus *b = svc->bus;
	struct mb_cursor *c = mb_cursor_at(b, svc->t, svc->slot);
	uint64_t n = b->cfg.ring_slots;
	/* seq_cst, as each stamp load below: after mb_bell_arm's seq_cst
	 * fetch_or of WAITERS, the second half of the Dekker pair with
	 * mb_ring_commit's seq_cst signal (platform/doorbell.h). */
	uint64_t r = atomic_load_explicit(&c->release, memory_order_seq_cst);
	for (uint64_t pos = r; pos < r + n; pos++) {
		uint64_t s = atomic_load_explicit(&mb_slot_at(b, svc->t, pos)->stamp,
		                                  memory_order_seq_cst);
		if (MB_STAMP_SEQ(s) != (pos & MB_SEQ_MASK))
			return false;
		if (MB_STAMP_STATE(s) == MB_ST_COMMITTED)
			return true;
	}
	return false;
}

void mb_service_fd_rearm(msgbus_service *svc)
{
	struct mb_topic *tp = mb_topic_at(svc->bus, svc->t);
	struct mb_bell *bell = &tp->bells[svc->bell];

	if (svc->bus->forked)
		return;
	/* A late datagram of an earlier ring: as in pubsub/sub_fd.c. */
	mb_doorbell_drain(&svc->db);
	if (mb_bell_armed(bell))
		return; /* not rung since the last arming: it stands */
	mb_bell_arm(bell, &tp->data_ec, svc->db.id);
	/* mb_ring_commit signals with seq_cst; service_ready loads so. */
	if (service_ready(svc) || mb_closing(svc->bus) || atomic_load(&svc->stop))
		mb_bell_ring(bell);
}

void mb_service_fd_close(msgbus_service *svc)
{
	if (!svc->bell_on)
		return;
	if (!svc->bus->forked) {
		struct mb_bell *bell = &mb_topic_at(svc->bus, svc->t)->bells[svc->bell];
		uint32_t me = svc->bus->self + 1;

		mb_bell_off(bell);
		/* Relaxed: frees the bell for another worker, whose CAS takes it. */
		(void)atomic_compare_exchange_strong_explicit(&bell->owner, &me, 0,
		                                              memory_order_relaxed,
		                                              memory_order_relaxed);
	}
	mb_doorbell_close(&svc->db);
	svc->bell_on = false;
}

int msgbus_service_fd(msgbus_service *svc, int *fd)
{
	if (!svc || !fd || svc->cb)
		return MSGBUS_EINVAL;
	if (!svc->bell_on) {
		int rc = svc->bus->forked ? 0 : bell_take(svc);

		if (rc)
			return rc;
		rc = mb_doorbell_open(&svc->db);
		if (rc) {
			/* Relaxed: gives back the bell we took, as in
			 * mb_service_fd_close. */
			if (!svc->bus->forked)
				atomic_store_explicit(&mb_topic_at(svc->bus, svc->t)->bells[svc->bell].owner,
				                      0, memory_order_relaxed);
			return MSGBUS_ESYSERR | -rc;
		}
		svc->bell_on = true;
		mb_service_fd_rearm(svc);
	}
	*fd = svc->db.fd;
	return 0;
}
