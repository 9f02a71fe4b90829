/* rr.h - request/reply internals shared by serve.c and call.c. */
#ifndef MB_RR_H
#define MB_RR_H

#include "shm/handle.h"

/* Topic of a service: "_svc." + name. Validates the name. create: make
 * the topic if it does not exist, waiting for the control lock until
 * deadline. */
int mb_service_topic(msgbus_bus *b, const char *service, bool create, uint64_t deadline,
                     uint32_t *t, char *subject /* MB_SUBJECT_MAX + 1 */);
/* The queue slot serving topic t, if any: 0 and *slot, or MSGBUS_ENOENT. */
int mb_service_slot(msgbus_bus *b, uint32_t t, uint32_t *slot);
/* Does the service slot list a member that is alive? check: verify each
 * with the liveness test (reaping the dead), not just the member bits. */
bool mb_service_has_workers(msgbus_bus *b, uint32_t slot, bool check);

struct msgbus_service;
void mb_service_destroy(struct msgbus_service *svc);
struct msgbus_service *mb_service_next(struct msgbus_service *svc);
/* Fail a taken request: its requester's call returns err. Frees req. */
int mb_respond_error(msgbus_req *req, int err);
uint64_t mb_req_deadline(const msgbus_req *req);
struct msgbus_call;
void mb_call_free(struct msgbus_call *call);

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
