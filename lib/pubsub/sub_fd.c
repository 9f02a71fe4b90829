/*
 * sub_fd.c - msgbus_sub_fd: a subscription as a pollable descriptor
 * (DESIGN.md section 9, platform/doorbell.h). The descriptor is the
 * subscription's doorbell socket; the bell sits beside the inbox's data_ec.
 * Level-triggered: it stays readable (a datagram queued) until a receive
 * finds the inbox empty, which drains it and arms the bell again.
 */
#include "pubsub/sub_fd.h"
#include "platform/doorbell.h"
#include "platform/fence.h"

void mb_sub_fd_rearm(msgbus_sub *sub)
{
	struct mb_inbox_ctl *ctl = sub->cons.ib.ctl;

	if (sub->bus->forked)
		return;
	/* A datagram of an earlier ring can land after the drain that
	 * preceded our arming: drain it, unless a ring came since. */
	mb_doorbell_drain(&sub->db);
	if (mb_bell_armed(&ctl->bell))
		return; /* not rung since the last arming: it stands */
	/* As wait_data before a sleep: publishers waiting for room get it. */
	mb_inbox_flush(&sub->cons);
	mb_bell_arm(&ctl->bell, &ctl->data_ec, sub->db.id);
	/* For puts that signal with the light fence (fence.h). Without
	 * membarrier nobody registered, and they run the full fence. */
	(void)mb_fence_heavy();
	/* Anything there, or a shutdown (whose wake may have come before
	 * our WAITERS), and the signal may be past: ring it ourselves. */
	if (mb_inbox_ready(&sub->cons) || mb_closing(sub->bus))
		mb_bell_ring(&ctl->bell);
}

void mb_sub_fd_close(msgbus_sub *sub)
{
	if (!sub->bell_on)
		return;
	if (!sub->bus->forked)
		mb_bell_off(&sub->cons.ib.ctl->bell);
	mb_doorbell_close(&sub->db);
	sub->bell_on = false;
}

int msgbus_sub_fd(msgbus_sub *sub, int *fd)
{
	if (!sub || !fd || sub->cb)
		return MSGBUS_EINVAL;
	if (!sub->bell_on) {
		int rc = mb_doorbell_open(&sub->db);

		if (rc)
			return MSGBUS_ESYSERR | -rc;
		sub->bell_on = true;
		/* A forked child's copy: a doorbell nobody rings (fork.c). */
		if (!sub->bus->forked) {
			mb_bell_off(&sub->cons.ib.ctl->bell); /* so the arming runs */
			mb_sub_fd_rearm(sub);
		}
	}
	*fd = sub->db.fd;
	return 0;
}
