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

#endif
