/*
 * nats_link.h - one nats:// link: its state and limits, shared by nats.c
 * (the URL, the connection thread: connect, handshake, read), nats_tx.c
 * (the tx thread: local interest as SUB/UNSUB, local messages as PUB) and
 * nats_rr.c (request/reply). Types only: each file's functions are in its
 * own header (nats.h, nats_tx.h, nats_rr.h).
 *
 * The link opens its own handle on the bus, marked as a bridge like the
 * tcp:// links' (conn_state.h): what it publishes from NATS is never sent
 * out again, by this link or any other, and its own subscription (">",
 * lossy, which follows what local participants publish) is never taken
 * for local interest. With echo:false the server does not send our own
 * PUBs back either, so two buses on one NATS deployment cannot loop.
 *
 * Two threads. rx owns the connection's life: it connects through the
 * server list with backoff, reads INFO, sends CONNECT and PING, and counts
 * the link up at the PONG; then the connection is read until it drops,
 * MSGs published without waiting (a full bus drops and counts, never
 * stalls the socket: NATS cuts slow consumers off) and PINGs answered.
 * The reading side (rlock) is rx's, or, while rx lets it, a requester's
 * of the linking handle waiting for its reply from NATS
 * (mb_nats_await_reply): it reads the socket itself and handles all it
 * brings as rx would, so the reply wakes it from the socket with no
 * hand-off. rx blocks in the read while no requester came lately (the
 * owner); once one did, it naps (NATS_RX_NAP_NS) and reads only what the
 * requesters leave, until they are gone. tx follows the bus and writes.
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

/* The reading side of the connection: the buffer and its clocks. */
struct nats_rx {
	uint8_t *buf;
	size_t cap, len, off;
	uint64_t max_payload;
	uint64_t last_rx_ns, ping_sent_ns; /* ping_sent_ns 0: none outstanding */
};

/* What a requester reading the connection leaves to rx (rd_left). */
#define NATS_LEFT_END 1u /* the end of the stream, an error or bad input */
#define NATS_LEFT_LDM 2u /* the server is in lame-duck mode */

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
	struct nats_in_call *starting; /* rx's, while it starts the call */
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
	/* Inline senders signal tx_ec when they leave work for tx (its
	 * ordering is the eventcount's, platform/wait.h), and count their
	 * passes so a napping tx knows the stream goes on (relaxed: a hint;
	 * what they left is read under wlock). */
	_Atomic uint32_t tx_ec;
	_Atomic uint64_t inline_passes;

	/* The reading side, under rlock: rx, or a requester in
	 * mb_nats_await_reply. rfd: the up connection rd reads (-1: none;
	 * set by rx, which reads rd alone while it is -1). rd_left: what a
	 * requester left to rx (NATS_LEFT_*). Until when MSGs of the last
	 * read may wait for room on the bus. */
	_Alignas(128) pthread_mutex_t rlock;
	struct nats_rx rd;
	int rfd;
	unsigned rd_left;
	uint64_t rx_room_until;
	/* rx's naps: a requester that leaves it work signals rx_ec. await_ns:
	 * when a requester last asked for the reading side (relaxed: a hint
	 * for rx's choice to nap; see nats.c:rx_wanted). awaiters: requesters
	 * in mb_nats_await_reply, which nats_free waits out. */
	_Alignas(128) _Atomic uint32_t rx_ec;
	_Atomic uint64_t await_ns;
	_Atomic uint32_t awaiters;

	struct nats_seen seen; /* for msgbus_links (nats_info.h) */
	struct mb_nats *next;
};

static inline bool mb_nats_stopping(struct mb_nats *n)
{
	/* stop: seq_cst, the Dekker pair with the store in nats.c:
	 * mb_nats_stop, which then kicks the words the threads sleep on.
	 * closing: relaxed, as links.c stores it; stop follows it. */
	return atomic_load(&n->stop) ||
	       atomic_load_explicit(&n->ls->closing, memory_order_relaxed);
}

#endif
