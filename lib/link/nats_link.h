/*
 * nats_link.h - one nats:// link, private to nats.c (the URL, the
 * connection thread: connect, handshake, read) and nats_tx.c (the tx
 * thread: local interest as SUB/UNSUB, local messages as PUB).
 *
 * The link opens its own handle on the bus, marked as a bridge like the
 * tcp:// links' (conn_state.h): what it publishes from NATS is never sent
 * out again, by this link or any other, and its own subscription (">",
 * lossy, which follows what local participants publish) is never taken
 * for local interest. With echo:false the server does not send our own
 * PUBs back either, so two buses on one NATS deployment cannot loop.
 *
 * Two threads. rx owns the socket's reading side and the connection's
 * life: it connects through the server list with backoff, reads INFO,
 * sends CONNECT and PING, and counts the link up at the PONG; then it
 * reads until the connection drops, publishing MSGs without waiting (a
 * full bus drops and counts, never stalls the socket: NATS cuts slow
 * consumers off) and answering PINGs. tx follows the bus and writes.
 * A third, rr (nats_rr.c), calls the requests from NATS that rx could not
 * hand to a worker at once, sends the replies no worker sent itself, and
 * times out requests sent to NATS. Requesters and workers of the linking
 * handle write their requests and replies themselves (the call_direct and
 * replied link hooks). Every write, from any thread, is made under wlock.
 */
#ifndef MB_NATS_LINK_H
#define MB_NATS_LINK_H

#include "link/link_set.h"
#include "link/nats_proto.h"
#include "link/nats_info.h"

#define NATS_SERVERS_MAX 32u
#define NATS_CRED_MAX 256u
#define NATS_EXPORTS_MAX 64u
#define NATS_DEFAULT_PORT "4222"
#define NATS_TXBUF (64u << 10)
#define NATS_PENDING 1024u  /* local requests awaiting a reply from NATS */
#define NATS_PROXIED_MAX 64u /* service names the link serves for NATS */
#define NATS_INBOX_SID 1u    /* the sid of the reply inbox's SUB */
/* Other sids: 2k for a subscription's SUB, 2k + 1 for a service's (k >= 1). */
#define NATS_SID_IS_SVC(sid) (((sid) & 1u) != 0)
/* A request from NATS waits this long for a local worker's reply. */
#define NATS_REMOTE_REQ_MS 5000

struct nats_server {
	char host[256];
	char port[8];
};

/* A local subscription pattern, or a service name (a queue SUB), told
 * to the server, and its sid. */
struct nats_told {
	char *pattern;
	uint64_t sid;
	bool svc;
};

/* A local request sent to NATS: its reply comes to inbox + id. */
struct nats_out {
	msgbus_req *req; /* NULL: free */
	uint64_t id;
};

/* A service name the link serves on its bridge handle, for NATS. */
struct nats_proxied {
	struct mb_nats *n;
	msgbus_service *svc;
	char name[MB_SUBJECT_MAX + 1];
};

/* A request from NATS, called on a local worker by rx when the service's
 * ring has room at once, else queued for the rr thread (a full service
 * ring must not stall the socket); the reply goes to reply. */
struct nats_in_call {
	msgbus_call *call; /* NULL: not called yet */
	char service[MB_SUBJECT_MAX + 1];
	char reply[MB_NATS_LINE_MAX / 2];
	size_t len;
	struct nats_in_call *next;
	uint8_t data[]; /* len bytes, until called */
};

struct mb_nats {
	struct mb_links *ls;
	char shown[300]; /* the URL without credentials, for log lines */
	char user[NATS_CRED_MAX], pass[NATS_CRED_MAX], token[NATS_CRED_MAX];
	char *exports[NATS_EXPORTS_MAX]; /* nexports 0: everything */
	uint32_t nexports;
	msgbus_bus *lb; /* the link's own, bridge-marked handle */
	msgbus_sub *follow; /* ">" on lb, lossy: what local participants publish */
	pthread_t rx, tx, rr;
	_Atomic bool stop; /* the bus closes, or the link failed to start */

	/* Servers: the URL's, then connect_urls from INFO. rx only. */
	struct nats_server srv[NATS_SERVERS_MAX];
	uint32_t nsrv, next_srv;
	bool lame_duck; /* the last server asked us to move (ldm) */

	/* The writing side. fd >= 0 and up while a connection is usable;
	 * epoch changes at each new connection, so tx re-sends its SUBs. */
	pthread_mutex_t wlock;
	int fd;
	bool up;
	uint64_t epoch;
	uint64_t max_payload;
	int conn_fd; /* the socket of the connection being made, for shutdown */

	/* Request/reply (nats_rr.c), under rrlock. */
	pthread_mutex_t rrlock;
	char inbox[48]; /* "_INBOX.<unique>." */
	struct nats_out out[NATS_PENDING];
	uint64_t next_id;
	struct nats_proxied *proxied[NATS_PROXIED_MAX];
	uint32_t nproxied;
	struct nats_in_call *calls; /* called, awaiting replies */
	struct nats_in_call *queued, **queued_tail; /* to call, in order */
	uint32_t nqueued;

	/* told: changed by tx under wlock, read by rx under it */
	struct nats_told *told;
	uint32_t ntold, told_cap;
	uint64_t next_sid;
	/* PUBs of local messages, under wlock: taken from follow by tx or
	 * inline by a publisher of the linking handle (mb_nats_published).
	 * txbuf[txoff..txlen) is still to write; held: taken, waits for room. */
	char *txbuf;
	size_t txlen, txoff;
	msgbus_msg *held;
	uint64_t last_write_ns;
	bool lossless; /* ?lossless=1: follow holds local publishers back */
	/* Inline senders signal tx_ec when they leave work for tx, and count
	 * their passes so a napping tx knows the stream goes on. */
	_Atomic uint32_t tx_ec;
	_Atomic uint64_t inline_passes;

	/* rx only: the last subject mb_link_may_create let through; until
	 * when MSGs of the last read may wait for room on the bus */
	char rx_subject[MB_SUBJECT_MAX + 1];
	size_t rx_subject_len;
	uint64_t rx_room_until;

	struct nats_seen seen; /* for msgbus_links (nats_info.h) */
	struct mb_nats *next;
};

static inline bool mb_nats_stopping(struct mb_nats *n)
{
	return atomic_load(&n->stop) || atomic_load(&n->ls->closing);
}

/* nats_tx.c */
void *mb_nats_tx_main(void *arg);
/* Write under wlock on the current connection, after what txbuf holds;
 * false: it is down (the connection is shut down so rx sees it). Caller
 * holds wlock. */
bool mb_nats_write_locked(struct mb_nats *n, const void *a, size_t alen, const void *b,
                          size_t blen);
/* The connection is gone: what txbuf still holds is undelivered. Caller
 * holds wlock. */
void mb_nats_tx_abandon_locked(struct mb_nats *n);
/* A request or a reply: PUB subject [reply] with data, after what txbuf
 * holds, written now (one write when small); false: the link is down, or
 * the line does not fit. Caller holds wlock. */
bool mb_nats_pub_locked(struct mb_nats *n, const char *subject, const char *reply,
                        const void *data, size_t len);
/* Write what txbuf holds, blocking. */
void mb_nats_flush(struct mb_nats *n);
/* After a publish on the linking handle (the published link hook, via
 * tcp.c:mb_links_published): its links send inline; never waits. Caller
 * holds ls->lock. */
void mb_nats_published(struct mb_links *ls);
void mb_nats_logf(struct mb_nats *n, const char *what, const char *why);
/* The service name the SUB sid stands for, copied to name; false: sid is
 * not a service's. Caller holds wlock. */
bool mb_nats_sid_service_locked(struct mb_nats *n, uint64_t sid, char *name, size_t cap);

/* nats_rr.c */
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
