/* live.h - participants, liveness and reclaiming the dead (live.c). */
#ifndef MB_LIVE_H
#define MB_LIVE_H

#include "shm/handle.h"

int mb_part_register(msgbus_bus *b);
void mb_part_unregister(msgbus_bus *b);
bool mb_part_alive(msgbus_bus *b, uint32_t idx); /* reaps idx when it is dead */

#endif
