/* call.h - calls in flight (call.c). */
#ifndef MB_CALL_H
#define MB_CALL_H

#include "shm/handle.h"

struct msgbus_call;
/* Free a handle's call entries (at close). */
void mb_call_free(struct msgbus_call *call);

#endif
