/* loan.h - the handle's loans (loan.c; msgbus_loan is in msgbus.h). */
#ifndef MB_LOAN_H
#define MB_LOAN_H

#include "shm/handle.h"

/* Free the loan handles still open on b (at close). */
void mb_loans_free(msgbus_bus *b);

#endif
