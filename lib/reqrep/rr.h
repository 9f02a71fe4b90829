/* rr.h - request/reply internals shared by serve.c and call.c. */
#ifndef MB_RR_H
#define MB_RR_H

#include "bus.h"

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
/* Set once by the link tier when a link can carry requests (nats.c):
 * msgbus_call_start asks it when no live worker serves service; true if a
 * link serves the name now (as a bridge worker), so the call looks again.
 * A function pointer because lower tiers never call link code by name. */
extern bool (*_Atomic mb_call_no_worker)(msgbus_bus *bus, const char *service);

/* Set once by the tcp link tier (tcp.c); function pointers for the same
 * reason. mb_call_direct: a call of bus to service, which no local
 * (non-bridge) participant serves, whose entry is PENDING: if a link of
 * bus serves the name, the link takes the call (the entry becomes TAKEN
 * by the link's participant) and sends it from this thread; 0 then, and
 * the reply (or an error) comes into the entry. MSGBUS_ENOENT: no such
 * link, the caller queues the request as usual. */
extern int (*_Atomic mb_call_direct)(msgbus_bus *bus, const char *service,
                                     const struct mb_req_hdr *hdr, const void *data,
                                     size_t len);
/* mb_reply_hook: a worker of b has just written the reply of call entry
 * `entry` of participant `to`, before it signals: if `to` is a link of b
 * that forwards the reply to its peer, the link takes and sends it from
 * this thread and returns true (nobody needs a wake-up then). */
extern bool (*_Atomic mb_reply_hook)(msgbus_bus *b, uint32_t to, uint32_t entry);
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
