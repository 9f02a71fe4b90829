/* publish.h - the checks and copies of a publish (publish.c). */
#ifndef MB_PUBLISH_H
#define MB_PUBLISH_H

#include "shm/handle.h"

/* Shared by msgbus_publish and msgbus_commit (buffers.c). */
int mb_publish_checks_by(msgbus_bus *b, const char *subject, size_t len, uint64_t deadline,
                         uint32_t *topic);
/* The same with the bound of calls without a timeout (mb_ctl_deadline). */
int mb_publish_checks(msgbus_bus *b, const char *subject, size_t len, uint32_t *topic);
uint64_t mb_publish_deadline(int timeout_ms);
int mb_publish_parts(msgbus_bus *b, uint32_t t, const void *head, size_t hlen,
                     const void *data, size_t len, uint64_t deadline);

#endif
