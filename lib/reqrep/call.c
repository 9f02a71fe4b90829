/*
 * call.c - the requester side of request/reply. A call takes one of the
 * handle's MB_CALLS entries, publishes the request on the service ring and
 * waits on the entry, watching whoever is responsible for it: while the
 * request is queued, the service's workers (none alive: no responders);
 * once taken, the worker that took it (dead: peer died).
 */
#include "shm/live.h"
#include "pubsub/buffers.h"
#include "pubsub/publish.h"
#include "reqrep/call.h"
#include "reqrep/call_fd.h"
#include "reqrep/serve.h"
#include "pubsub/sub.h"
#include "platform/wait.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int entry_alloc(msgbus_bus *b, uint32_t *entry)
{
	/* Process-local. Relaxed: only the CAS below decides. */
	uint64_t used = atomic_load_explicit(&b->calls_used, memory_order_relaxed);
	while (~used) {
		uint32_t i = (uint32_t)__builtin_ctzll(~used);
		/* seq_cst (acquire would do): pairs with the fetch_and in
		 * call_free, so the entry's last call is done before we reuse
		 * it. */
		if (atomic_compare_exchange_weak(&b->calls_used, &used, used | 1ull << i)) {
			*entry = i;
			return 0;
		}
	}
	return MSGBUS_ELIMIT;
}

static void call_free(msgbus_call *call)
{
	msgbus_bus *b = call->bus;
	/* seq_cst (release would do): pairs with the CAS in entry_alloc. */
	mb_call_fd_close(call);
	atomic_fetch_and(&b->calls_used, ~(1ull << call->entry));
	pthread_mutex_lock(&b->lock);
	for (msgbus_call **pp = &b->calls; *pp; pp = &(*pp)->next) {
		if (*pp == call) {
			*pp = call->next;
			break;
		}
	}
	pthread_mutex_unlock(&b->lock);
	free(call);
}

uint32_t mb_call_entry(const msgbus_call *call)
{
	return call->entry;
}

bool mb_call_answered(const msgbus_call *call)
{
	msgbus_bus *b = call->bus;
	/* Acquire: pairs with the release CAS to REPLIED in serve.c:respond
	 * (and the error writes in mb_call_start_listed). */
	uint64_t w = atomic_load_explicit(&mb_call_at(b, b->self, call->entry)->word,
	                                  memory_order_acquire);
	uint32_t st = MB_CALLW_STATE(w);
	return MB_CALLW_CORR(w) == call->corr &&
	       (st == MB_CALL_REPLIED || st == MB_CALL_WORKER_DIED);
}

/* The service's topic and queue slot, if a worker is registered: say
 * "no responders" now rather than at the deadline. */
static int find_workers(msgbus_bus *bus, const char *service, uint32_t *t, uint32_t *slot,
                        char *subject)
{
	int rc = mb_service_topic(bus, service, false, MB_NO_WAIT, t, subject);
	if (rc)
		return rc == MSGBUS_ENOENT ? MSGBUS_ENORESPONDERS : rc;
	if (mb_service_slot(bus, *t, slot) || !mb_service_has_workers(bus, *slot, false))
		return MSGBUS_ENORESPONDERS;
	return 0;
}

static int call_start(msgbus_bus *bus, const char *service, const void *data, size_t len,
                      int timeout_ms, msgbus_call **out,
                      void (*listed)(msgbus_call *call, void *arg), void *arg, bool nowait);

int msgbus_call_start(msgbus_bus *bus, const char *service, const void *data, size_t len,
                      int timeout_ms, msgbus_call **out)
{
	return mb_call_start_listed(bus, service, data, len, timeout_ms, out, NULL, NULL);
}

int mb_call_start_listed(msgbus_bus *bus, const char *service, const void *data, size_t len,
                         int timeout_ms, msgbus_call **out,
                         void (*listed)(msgbus_call *call, void *arg), void *arg)
{
	return call_start(bus, service, data, len, timeout_ms, out, listed, arg, false);
}

int mb_call_start_nowait(msgbus_bus *bus, const char *service, const void *data, size_t len,
                         int timeout_ms, msgbus_call **out,
                         void (*listed)(msgbus_call *call, void *arg), void *arg)
{
	return call_start(bus, service, data, len, timeout_ms, out, listed, arg, true);
}

/* nowait: queue the request only if the service's ring has room now; if
 * not, the call is freed and the error returned, listed or not. */
static int call_start(msgbus_bus *bus, const char *service, const void *data, size_t len,
                      int timeout_ms, msgbus_call **out,
                      void (*listed)(msgbus_call *call, void *arg), void *arg, bool nowait)
{
	if (!bus || !out || (!data && len) || timeout_ms == 0 || timeout_ms < -1)
		return MSGBUS_EINVAL;
	if (mb_closing(bus))
		return MSGBUS_ECLOSED;
	if (len > bus->cfg.max_msg_size - sizeof(struct mb_req_hdr) ||
	    bus->cfg.max_msg_size < sizeof(struct mb_req_hdr))
		return MSGBUS_EMSGSIZE;
	uint32_t t, slot;
	char subject[MB_SUBJECT_MAX + 1];
	int rc = find_workers(bus, service, &t, &slot, subject);
	/* Pairs with the release in link/links.c:links_of(). */
	const struct mb_link_hooks *lh =
		atomic_load_explicit(&bus->link_hooks, memory_order_acquire);
	if (rc == MSGBUS_ENORESPONDERS && lh && lh->no_worker(bus, service))
		rc = find_workers(bus, service, &t, &slot, subject);
	if (rc)
		return rc;
	msgbus_call *call = calloc(1, sizeof(*call));
	if (!call)
		return MSGBUS_ENOMEM;
	if (entry_alloc(bus, &call->entry)) {
		free(call);
		return MSGBUS_ELIMIT;
	}
	call->bus = bus;
	call->slot = slot;
	/* Process-local counter. Relaxed: only its uniqueness matters. */
	call->corr = atomic_fetch_add_explicit(&bus->corr, 1, memory_order_relaxed);
	call->deadline = mb_deadline(timeout_ms);
	call->next_check = mb_now_ns() + bus->check_ns;
	snprintf(call->service, sizeof(call->service), "%s", service);
	pthread_mutex_lock(&bus->lock);
	call->next = bus->calls;
	bus->calls = call;
	pthread_mutex_unlock(&bus->lock);

	struct mb_call *e = mb_call_at(bus, bus->self, call->entry);
	/* Release: our reads of the entry's last reply happen before a worker
	 * writes there; pairs with the worker's CAS in serve.c:try_take (and
	 * respond). */
	atomic_store_explicit(&e->word, mb_callw(call->corr, 0, MB_CALL_PENDING),
	                      memory_order_release);
	struct mb_req_hdr hdr = {
		.corr = call->corr,
		.from = (uint16_t)bus->self,
		.entry = (uint16_t)call->entry,
		.deadline_ns = call->deadline,
	};
	uint64_t deadline = call->deadline;
	/* Once listed, the call is its caller's: a worker may answer it and
	 * the caller free it at once. Only locals from here on. */
	if (listed)
		listed(call, arg);
	/* Nobody here serves it but links: a link sends it from this thread,
	 * with no hand-off to its worker thread. */
	rc = MSGBUS_ENOENT;
	if (lh && !mb_service_has_local_workers(bus, slot))
		rc = lh->call_direct(bus, service, &hdr, data, len);
	if (rc == MSGBUS_ENOENT)
		rc = mb_publish_parts(bus, t, &hdr, sizeof(hdr), data, len,
		                      nowait ? MB_NO_WAIT : deadline);
	if (rc && listed && !nowait) {
		/* The caller holds the call already: its result is rc, written
		 * as a worker writes a reply (serve.c:respond), unless the
		 * caller gave the call up meanwhile. */
		uint64_t w = mb_callw(hdr.corr, 0, MB_CALL_PENDING);
		if (atomic_compare_exchange_strong(&e->word, &w,
		                                   mb_callw(hdr.corr, bus->self, MB_CALL_WRITING))) {
			e->len = (uint32_t)rc;
			e->buf = MB_CALL_ERROR;
			/* Release: len and buf before the state (check() acquires). */
			atomic_store_explicit(&e->word, mb_callw(hdr.corr, bus->self, MB_CALL_REPLIED),
			                      memory_order_release);
		}
		*out = call;
		return 0;
	}
	if (rc) {
		/* Relaxed: no worker saw the request (it was not published),
		 * and call_free's fetch_and (a release) frees the entry
		 * after it. A nowait caller that listed the call forgets it
		 * on rc. */
		atomic_store_explicit(&e->word, 0, memory_order_relaxed);
		call_free(call);
		return rc;
	}
	*out = call;
	return 0;
}

/* Copy the reply out of the entry (and its large buffer, if any). */
static int take_reply(msgbus_call *call, struct mb_call *e, msgbus_msg **reply)
{
	msgbus_bus *b = call->bus;
	uint32_t len = e->len, buf = e->buf;
	const void *src = NULL;
	/* A worker's error is the call's final result, never the one that
	 * says a call is still in flight and stays valid (MSGBUS_EAGAIN):
	 * the entry, or a peer's REP frame, may say anything. */
	if (buf == MB_CALL_ERROR)
		return len >= 1 && len <= MSGBUS_ENOENT && len != MSGBUS_EAGAIN ? (int)len
		                                                                : MSGBUS_EPROTO;
	if (buf == MB_CALL_INLINE_BUF && len <= MB_CALL_INLINE)
		src = e->data;
	else if (buf < b->cfg.large_buffers && len <= b->cfg.max_msg_size)
		src = mb_bufdata_at(b, buf);
	size_t slen = strlen(call->service);
	msgbus_msg *m = src ? malloc(sizeof(*m) + slen + 1 + len) : NULL;
	int rc = src ? (m ? 0 : MSGBUS_ENOMEM) : MSGBUS_EPROTO;
	if (m) {
		char *subject = (char *)(m + 1);
		memcpy(subject, call->service, slen + 1);
		memcpy(subject + slen + 1, src, len);
		*m = (msgbus_msg){ .sub = NULL, .subject = subject, .data = subject + slen + 1,
		                   .len = len };
		*reply = m;
	}
	if (buf != MB_CALL_INLINE_BUF && buf < b->cfg.large_buffers) {
		uint64_t st = MB_BUF_LOANED(b->self);
		/* seq_cst (release would do): our copy of the reply happens
		 * before the buffer's next use; pairs with the acquire load in
		 * buffers.c:try_take. */
		atomic_compare_exchange_strong(&mb_bufctl_at(b, buf)->state, &st, MB_BUF_FREE);
	}
	return rc;
}

/* Let go of the entry. A worker copying a reply in is waited for, so the
 * entry is never reused under its feet. */
static void abandon(msgbus_call *call)
{
	msgbus_bus *b = call->bus;
	struct mb_call *e = mb_call_at(b, b->self, call->entry);
	/* Wait for a reply being written, but not on a stopped writer or a
	 * corrupt entry forever: after that the entry is simply taken back. */
	uint64_t give_up = mb_now_ns() + b->check_ns;
	for (;;) {
		/* Acquire: pairs with the release CAS to REPLIED in
		 * serve.c:respond: the reply is in place. */
		uint64_t w = atomic_load_explicit(&e->word, memory_order_acquire);
		uint32_t st = MB_CALLW_STATE(w);
		if (MB_CALLW_CORR(w) != call->corr || st == MB_CALL_FREE)
			break;
		if (st == MB_CALL_REPLIED) {
			msgbus_msg *m = NULL;
			if (take_reply(call, e, &m) == 0)
				free(m);
			break;
		}
		if (st == MB_CALL_WRITING && mb_part_alive(b, MB_CALLW_WORKER(w)) &&
		    mb_now_ns() < give_up) {
			mb_nap_us(10);
			continue;
		}
		/* seq_cst (the default): the race with the worker's CAS in
		 * serve.c:respond; one of the two wins. */
		if (st != MB_CALL_WRITING &&
		    !atomic_compare_exchange_strong(&e->word, &w, 0))
			continue;
		break;
	}
	/* Release: our reads of the reply happen before the entry is reused;
	 * pairs with the CAS in serve.c:respond (a late worker fails it). */
	atomic_store_explicit(&e->word, 0, memory_order_release);
	call_free(call);
}

/* One look at the call: 0 done (*result final), or MSGBUS_EAGAIN. */
static int check(msgbus_call *call, struct mb_call *e, bool watch, int *result,
                 msgbus_msg **reply)
{
	msgbus_bus *b = call->bus;
	/* Acquire: pairs with the release CAS to REPLIED in serve.c:respond. */
	uint64_t w = atomic_load_explicit(&e->word, memory_order_acquire);
	uint32_t st = MB_CALLW_STATE(w);
	if (MB_CALLW_CORR(w) != call->corr || st == MB_CALL_FREE) {
		*result = MSGBUS_EPROTO; /* someone else's entry now */
		return 0;
	}
	if (st == MB_CALL_REPLIED) {
		*result = take_reply(call, e, reply);
		return 0;
	}
	if (st == MB_CALL_WORKER_DIED) {
		*result = MSGBUS_EPEERDIED;
		return 0;
	}
	/* A reply being written gets a grace period past the deadline, not
	 * forever: the writer may be stopped, or the word corrupt. */
	uint64_t now = mb_now_ns();
	if (now >= call->deadline &&
	    (st != MB_CALL_WRITING || now - call->deadline >= b->check_ns)) {
		*result = MSGBUS_ETIMEDOUT;
		return 0;
	}
	if (!watch)
		return MSGBUS_EAGAIN;
	if (st == MB_CALL_PENDING && !mb_service_has_workers(b, call->slot, true)) {
		*result = MSGBUS_ENORESPONDERS;
		return 0;
	}
	if (st != MB_CALL_PENDING && !mb_part_alive(b, MB_CALLW_WORKER(w))) {
		*result = MSGBUS_EPEERDIED;
		return 0;
	}
	return MSGBUS_EAGAIN;
}

int msgbus_call_wait(msgbus_call *call, msgbus_msg **reply, int timeout_ms)
{
	if (!call || !reply || timeout_ms < -1)
		return MSGBUS_EINVAL;
	msgbus_bus *b = call->bus;
	struct mb_call *e = mb_call_at(b, b->self, call->entry);
	uint64_t until = timeout_ms == 0 ? 0 : mb_deadline(timeout_ms);
	struct mb_spin spin = { 0, 0 };
	const struct mb_link_hooks *linked = NULL;
	bool await = until != 0; /* ask the links first, and after each sleep */
	int result;
	for (;;) {
		if (mb_closing(b)) {
			result = MSGBUS_ECLOSED; /* checked after each wake */
			break;
		}
		if (check(call, e, false, &result, reply) == 0)
			break;
		if (await) {
			/* A link that took the call may let this thread read its
			 * connection: the reply then wakes this thread from the
			 * socket, with no hand-off. Pairs with the release in
			 * link/links.c:links_of(). */
			const struct mb_link_hooks *lh =
				atomic_load_explicit(&b->link_hooks, memory_order_acquire);
			await = lh && lh->await_reply(b, call->entry,
			                              call->deadline < until ? call->deadline : until);
			if (await)
				continue;
		}
		if (until != 0 && mb_spinning(&spin, b->spin_ns)) {
			/* As a spinning receiver does (recv.c): with fewer
			 * cores than runnable threads, the thread that brings
			 * the reply (a link's reader) needs this CPU; and it
			 * reads the handle's links itself now and then, so a
			 * reply from a peer wakes nobody. Pairs with the
			 * release in link/links.c:links_of(). */
			if (spin.rounds % MB_SPIN_YIELD_ROUNDS == 0)
				mb_yield_cpu();
			if (spin.rounds % MB_SPIN_LINK_ROUNDS == 1) {
				linked = atomic_load_explicit(&b->link_hooks, memory_order_acquire);
				if (linked)
					linked->spin(b);
			}
			continue;
		}
		if (linked) {
			linked->unspin(b); /* it sleeps: the links' rx threads read */
			linked = NULL;
		}
		uint64_t now = mb_now_ns();
		if (now >= call->next_check) {
			call->next_check = now + b->check_ns;
			if (check(call, e, true, &result, reply) == 0)
				break;
		}
		if (now >= until) {
			if (call->bell_on)
				mb_call_fd_rearm(call); /* the descriptor reads "not yet" */
			return MSGBUS_EAGAIN; /* still in flight; the call stays valid */
		}
		uint32_t v = mb_ec_prepare(&e->ec);
		if (check(call, e, false, &result, reply) == 0)
			break;
		/* seq_cst (mb_closing): after mb_ec_prepare, the Dekker pair
		 * with msgbus_shutdown's store and wakes. */
		if (mb_closing(b)) {
			result = MSGBUS_ECLOSED;
			break;
		}
		uint64_t wake = call->next_check;
		if (call->deadline < wake)
			wake = call->deadline;
		if (until < wake)
			wake = until;
		mb_ec_sleep(&e->ec, v, now, wake);
		await = true;
	}
	if (result == MSGBUS_OK) {
		/* Release: as in abandon(). */
		atomic_store_explicit(&e->word, 0, memory_order_release);
		call_free(call);
	} else {
		abandon(call);
	}
	return result;
}

void msgbus_call_cancel(msgbus_call *call)
{
	if (call)
		abandon(call);
}

void mb_call_free(msgbus_call *call)
{
	abandon(call);
}

int msgbus_request(msgbus_bus *bus, const char *service, const void *data, size_t len,
                   msgbus_msg **reply, int timeout_ms)
{
	msgbus_call *call;
	if (!reply)
		return MSGBUS_EINVAL;
	int rc = msgbus_call_start(bus, service, data, len, timeout_ms, &call);
	if (rc)
		return rc;
	return msgbus_call_wait(call, reply, -1);
}
