/*
 * rr.h - transitional: lib/link still includes this for serve.c's
 * functions. Each .c of reqrep has its own header now (serve.h, call.h);
 * remove this file once lib/link includes reqrep/serve.h.
 */
#ifndef MB_RR_H
#define MB_RR_H

#include "reqrep/serve.h"

/* A taken request for the worker handle b with hdr and no payload (the
 * link's calls sent directly): answered through msgbus_respond or
 * mb_respond_error. NULL: out of memory. */
msgbus_req *mb_req_new(msgbus_bus *b, const struct mb_req_hdr *hdr);
/* Whether any participant but a bridge serves slot (member bits only). */
bool mb_service_has_local_workers(msgbus_bus *b, uint32_t slot);
/* msgbus_call_start, telling listed(call, arg) about the call once it
 * exists, before the request can reach a worker. Once listed was called
 * it returns 0: a failure to queue the request is the call's result. */
int mb_call_start_listed(msgbus_bus *bus, const char *service, const void *data, size_t len,
                         int timeout_ms, msgbus_call **out,
                         void (*listed)(msgbus_call *call, void *arg), void *arg);
/* The call entry a call uses. */
uint32_t mb_call_entry(const struct msgbus_call *call);

#endif
