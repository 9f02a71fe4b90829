/* service_fd.h - a worker's pollable descriptor (service_fd.c). */
#ifndef MB_SERVICE_FD_H
#define MB_SERVICE_FD_H

#include "reqrep/serve.h"

/* After a receive found nothing, arm the descriptor again; at unserve,
 * let it go. */
void mb_service_fd_rearm(struct msgbus_service *svc);
void mb_service_fd_close(struct msgbus_service *svc);

#endif
