/*
 * call_fd.c - msgbus_call_fd: an asynchronous call as a pollable
 * descriptor (DESIGN.md section 9, platform/doorbell.h). A reply (or an
 * error reply, or the reaper's "worker died") rings the bell beside the
 * call entry's ec. What no peer signals, the deadline and the periodic
 * liveness checks of msgbus_call_wait, is a timer: the descriptor is an
 * epoll instance over the doorbell and a timerfd (platform_dgram.h), so it
 * is also readable when msgbus_call_wait should look again; it may then
 * still return MSGBUS_EAGAIN (nothing was found), which re-arms both.
 */
#include "reqrep/call_fd.h"
#include "platform/doorbell.h"

/* Would msgbus_call_wait return now? seq_cst: the second half of the
 * Dekker pair with the reply's CAS and mb_ec_signal in serve.c respond(). */
static bool call_final(msgbus_call *call, struct mb_call *e)
{
	uint64_t w = atomic_load_explicit(&e->word, memory_order_seq_cst);
	uint32_t st = MB_CALLW_STATE(w);

	return MB_CALLW_CORR(w) != call->corr || st == MB_CALL_FREE || st == MB_CALL_REPLIED ||
	       st == MB_CALL_WORKER_DIED;
}

void mb_call_fd_rearm(msgbus_call *call)
{
	msgbus_bus *b = call->bus;
	struct mb_call *e = mb_call_at(b, b->self, call->entry);
	uint64_t when = call->next_check < call->deadline ? call->next_check : call->deadline;

	if (b->forked)
		return;
	/* Past the deadline, msgbus_call_wait gives a reply being written a
	 * grace period: look again when it ends. */
	if (when <= mb_now_ns())
		when = call->deadline + b->check_ns;
	mb_timed_bell_set(&call->tb, when);
	/* A late datagram of an earlier ring: as in pubsub/sub_fd.c. */
	mb_doorbell_drain(&call->tb.db);
	if (mb_bell_armed(&e->bell))
		return; /* not rung since the last arming: it stands */
	mb_bell_arm(&e->bell, &e->ec, call->tb.db.id);
	if (call_final(call, e) || mb_closing(b))
		mb_bell_ring(&e->bell);
}

void mb_call_fd_close(msgbus_call *call)
{
	if (!call->bell_on)
		return;
	if (!call->bus->forked)
		mb_bell_off(&mb_call_at(call->bus, call->bus->self, call->entry)->bell);
	mb_timed_bell_close(&call->tb);
	call->bell_on = false;
}

int msgbus_call_fd(msgbus_call *call, int *fd)
{
	if (!call || !fd)
		return MSGBUS_EINVAL;
	if (!call->bell_on) {
		int rc = mb_timed_bell_open(&call->tb);

		if (rc)
			return MSGBUS_ESYSERR | -rc;
		call->bell_on = true;
		if (!call->bus->forked) {
			mb_bell_off(&mb_call_at(call->bus, call->bus->self, call->entry)->bell);
			mb_call_fd_rearm(call);
		}
	}
	*fd = call->tb.efd;
	return 0;
}
