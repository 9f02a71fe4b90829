/* fork.h - open handles across fork() (fork.c). */
#ifndef MB_FORK_H
#define MB_FORK_H

#include "msgbus.h"

/* msgbus_open runs between mb_open_begin and mb_open_end, and
 * registers the handle before the end; forks wait meanwhile. */
void mb_open_begin(void);
void mb_open_end(void);
void mb_registry_add(msgbus_bus *b);
void mb_registry_remove(msgbus_bus *b);

#endif
