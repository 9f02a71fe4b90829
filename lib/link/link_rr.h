/* link_rr.h - requests across a connection, both ways (link_rr.c). */
#ifndef MB_LINK_RR_H
#define MB_LINK_RR_H

#include "link/conn_state.h"

void mb_link_on_req(struct mb_conn *c, const struct mb_frame *f);
/* From a spinner: false, nothing done, when it would have to wait. */
bool mb_link_on_req_nowait(struct mb_conn *c, const struct mb_frame *f);
void mb_link_on_rep(struct mb_conn *c, const struct mb_frame *f);
bool mb_link_on_serve(struct mb_conn *c, const char *name, bool on); /* false: close */
void *mb_link_rr_main(void *arg);
/* Requests without the rr and worker threads: the call_direct and
 * replied link hooks (links.c) reach these. */
struct mb_req_hdr;
int mb_conn_call_direct(struct mb_conn *c, const char *service, const struct mb_req_hdr *hdr,
                        const void *data, size_t len);
bool mb_conn_reply_inline(struct mb_conn *c, uint32_t to, uint32_t entry);

#endif
