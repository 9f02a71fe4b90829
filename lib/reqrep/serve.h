/* serve.h - services (serve.c): topics, queue slots, workers, responses. */
#ifndef MB_SERVE_H
#define MB_SERVE_H

#include "shm/handle.h"
#include "platform/platform_dgram.h"

/* A worker of a service: its queue slot and thread (serve.c), and its
 * descriptor (service_fd.c). */
struct msgbus_service {
	msgbus_bus *bus;
	uint32_t t, slot, gen;
	char subject[MB_SUBJECT_MAX + 1];
	msgbus_serve_cb cb;
	void *cb_arg;
	pthread_t thread;
	_Atomic bool stop;
	msgbus_service *next;
	bool bell_on;          /* msgbus_service_fd was called: db is open */
	uint32_t bell;         /* our bell of the topic's MB_TOPIC_BELLS */
	struct mb_doorbell db;
};

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

void mb_service_destroy(struct msgbus_service *svc);
struct msgbus_service *mb_service_next(struct msgbus_service *svc);
/* Fail a taken request: its requester's call returns err. Frees req. */
int mb_respond_error(msgbus_req *req, int err);
uint64_t mb_req_deadline(const msgbus_req *req);
/* A taken request for the worker handle b with hdr and no payload (the
 * link's calls sent directly): answered through msgbus_respond or
 * mb_respond_error. NULL: out of memory. */
msgbus_req *mb_req_new(msgbus_bus *b, const struct mb_req_hdr *hdr);
/* Whether any participant but a bridge serves slot (member bits only). */
bool mb_service_has_local_workers(msgbus_bus *b, uint32_t slot);

#endif
