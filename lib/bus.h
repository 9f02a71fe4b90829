/*
 * bus.h - what bus.c (opening and closing) exports besides the public API.
 */
#ifndef MB_BUS_H
#define MB_BUS_H

#include "shm/handle.h"

/* bus.c: another handle on b's bus, opened with b's access options, for
 * a link: it must accept the same owner and mode as the application. */
int mb_bus_reopen(msgbus_bus *b, msgbus_bus **out);

#endif
