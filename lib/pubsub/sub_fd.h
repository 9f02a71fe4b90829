/* sub_fd.h - a subscription's pollable descriptor (sub_fd.c). */
#ifndef MB_SUB_FD_H
#define MB_SUB_FD_H

#include "pubsub/sub.h"

/* After a receive found nothing, arm the descriptor again (only if it was
 * rung since); at unsubscribe, let it go. */
void mb_sub_fd_rearm(msgbus_sub *sub);
void mb_sub_fd_close(msgbus_sub *sub);

#endif
