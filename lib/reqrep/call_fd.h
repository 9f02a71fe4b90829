/* call_fd.h - an asynchronous call's pollable descriptor (call_fd.c). */
#ifndef MB_CALL_FD_H
#define MB_CALL_FD_H

#include "reqrep/call.h"

/* After a wait found no reply, arm the descriptor again; at free, let it go. */
void mb_call_fd_rearm(struct msgbus_call *call);
void mb_call_fd_close(struct msgbus_call *call);

#endif
