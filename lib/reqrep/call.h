/* call.h - calls in flight (call.c). */
#ifndef MB_CALL_H
#define MB_CALL_H

#include "shm/handle.h"
#include "platform/platform_dgram.h"

/* A call in flight (call.c) and its descriptor (call_fd.c). */
struct msgbus_call {
	msgbus_bus *bus;
	uint32_t entry, corr, slot;
	uint64_t deadline;
	uint64_t next_check; /* kept across waits, so polling callers watch too */
	msgbus_call *next;
	char service[MB_SUBJECT_MAX + 1];
	bool bell_on;          /* msgbus_call_fd was called: tb is open */
	struct mb_timed_bell tb;
};

/* Free a handle's call entries (at close). */
void mb_call_free(struct msgbus_call *call);
/* msgbus_call_start, telling listed(call, arg) about the call once it
 * exists, before the request can reach a worker. Once listed was called
 * it returns 0: a failure to queue the request is the call's result. */
int mb_call_start_listed(msgbus_bus *bus, const char *service, const void *data, size_t len,
                         int timeout_ms, msgbus_call **out,
                         void (*listed)(msgbus_call *call, void *arg), void *arg);
/* msgbus_call_start that never waits for room on the service's ring:
 * MSGBUS_EAGAIN when it has none (nothing started). listed (may be NULL)
 * is told about the call before the request can reach a worker, as with
 * mb_call_start_listed; but on any error the call is gone when this
 * returns (no worker saw it), and the caller must forget it. */
int mb_call_start_nowait(msgbus_bus *bus, const char *service, const void *data, size_t len,
                         int timeout_ms, msgbus_call **out,
                         void (*listed)(msgbus_call *call, void *arg), void *arg);
/* The call entry a call uses. */
uint32_t mb_call_entry(const struct msgbus_call *call);
/* Whether the call's reply (or a worker's death) is in its entry, without
 * taking it. */
bool mb_call_answered(const struct msgbus_call *call);

#endif
