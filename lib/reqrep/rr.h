/*
 * rr.h - transitional: lib/link still includes this for serve.c's
 * functions. Each .c of reqrep has its own header now (serve.h, call.h);
 * remove this file once lib/link includes reqrep/serve.h.
 */
#ifndef MB_RR_H
#define MB_RR_H

#include "reqrep/serve.h"

#endif
