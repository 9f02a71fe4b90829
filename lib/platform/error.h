/* error.h - mapping a system error to the library's codes (error.c). */
#ifndef MB_ERROR_H
#define MB_ERROR_H

/* -errno (as the platform calls return it) to MSGBUS_EPERM, MSGBUS_ENOMEM
 * or MSGBUS_ESYSERR | errno. */
int mb_syserr(int neg_errno);

#endif
