/*
 * nats_rr.h - request/reply over a nats:// link (nats_rr.c): local
 * requests to NATS, requests from NATS to local workers, the rr thread;
 * see nats_link.h.
 */
#ifndef MB_NATS_RR_H
#define MB_NATS_RR_H

#include "link/nats_link.h"

void mb_nats_rr_init(struct mb_nats *n);
void *mb_nats_rr_main(void *arg);
/* A MSG to our inbox: the reply (or 503) to a forwarded request. */
void mb_nats_on_reply(struct mb_nats *n, const struct mb_nats_in *in);
/* A MSG for a local service: call a local worker, reply later. */
void mb_nats_on_request(struct mb_nats *n, const char *service, const struct mb_nats_in *in);
/* Whether a request sent to NATS awaits its reply. */
bool mb_nats_requests_out(struct mb_nats *n);
/* The connection dropped: requests in flight fail with err. */
void mb_nats_fail_pending(struct mb_nats *n, int err);
/* At the end: stop serving, fail and cancel what is left. */
void mb_nats_rr_end(struct mb_nats *n);
/* The call_direct and replied link hooks, for the nats:// links of ls
 * (links.c calls them under ls->lock, after the tcp:// links). */
struct mb_req_hdr;
int mb_nats_call_direct(struct mb_links *ls, const char *service, const struct mb_req_hdr *hdr,
                        const void *data, size_t len);
bool mb_nats_replied(struct mb_links *ls, uint32_t to, uint32_t entry);
/* The no_worker link hook of a handle (links.c installs it): true if one of
 * bus's nats:// links serves service now. */
bool mb_nats_no_worker(msgbus_bus *bus, const char *service);

#endif
