/* control.h - the control-plane lock, topics and subscription slots (control.c). */
#ifndef MB_CONTROL_H
#define MB_CONTROL_H

#include "shm/handle.h"

/* The lock waits until a deadline; calls without a timeout of their own use
 * mb_ctl_deadline(): 5 crash bounds from now, or MB_CTL_BOUND for the same
 * counted from when a wait begins (no clock read when none does). */
#define MB_CTL_BOUND (UINT64_MAX - 1)
uint64_t mb_ctl_deadline(msgbus_bus *b);
int mb_ctl_lock(msgbus_bus *b, uint64_t deadline);
void mb_ctl_unlock(msgbus_bus *b);
int mb_topic_get(msgbus_bus *b, const char *subject, size_t len, uint64_t hash,
                 uint64_t deadline, uint32_t *topic); /* find or create */
int mb_topic_find(msgbus_bus *b, const char *subject, size_t len, uint64_t hash,
                  uint32_t *topic);
bool mb_topic_refresh(msgbus_bus *b, uint32_t t); /* cache topic t if READY */

#endif
