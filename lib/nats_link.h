/*
 * nats_link.h - one nats:// link, private to nats.c (the URL, the
 * connection thread: connect, handshake, read) and nats_tx.c (the tx
 * thread: local interest as SUB/UNSUB, local messages as PUB).
 *
 * The link opens its own handle on the bus, marked as a bridge like the
 * tcp:// links' (link_conn.h): what it publishes from NATS is never sent
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
 * Every write, from either thread, is made under wlock.
 */
#ifndef MB_NATS_LINK_H
#define MB_NATS_LINK_H

#include "link.h"
#include "nats_proto.h"

#define NATS_SERVERS_MAX 32u
#define NATS_CRED_MAX 256u
#define NATS_EXPORTS_MAX 64u
#define NATS_DEFAULT_PORT "4222"
#define NATS_TXBUF (64u << 10)

struct nats_server {
	char host[256];
	char port[8];
};

/* A local subscription pattern told to the server, and its sid. */
struct nats_told {
	char *pattern;
	uint64_t sid;
};

struct mb_nats {
	struct mb_links *ls;
	char shown[300]; /* the URL without credentials, for log lines */
	char user[NATS_CRED_MAX], pass[NATS_CRED_MAX], token[NATS_CRED_MAX];
	char *exports[NATS_EXPORTS_MAX]; /* nexports 0: everything */
	uint32_t nexports;
	msgbus_bus *lb; /* the link's own, bridge-marked handle */
	msgbus_sub *follow; /* ">" on lb, lossy: what local participants publish */
	pthread_t rx, tx;
	_Atomic bool stop; /* the bus closes, or the link failed to start */

	/* Servers: the URL's, then connect_urls from INFO. rx only. */
	struct nats_server srv[NATS_SERVERS_MAX];
	uint32_t nsrv, next_srv;

	/* The writing side. fd >= 0 and up while a connection is usable;
	 * epoch changes at each new connection, so tx re-sends its SUBs. */
	pthread_mutex_t wlock;
	int fd;
	bool up;
	uint64_t epoch;
	uint64_t max_payload;
	int conn_fd; /* the socket of the connection being made, for shutdown */

	/* tx only */
	struct nats_told *told;
	uint32_t ntold, told_cap;
	uint64_t next_sid;
	char *txbuf;
	size_t txlen;

	struct mb_nats *next;
};

static inline bool mb_nats_stopping(struct mb_nats *n)
{
	return atomic_load(&n->stop) || atomic_load(&n->ls->closing);
}

/* nats_tx.c */
void *mb_nats_tx_main(void *arg);
/* Write under wlock on the current connection; false: it is down (the
 * connection is shut down so rx sees it). Caller holds wlock. */
bool mb_nats_write_locked(struct mb_nats *n, const void *a, size_t alen, const void *b,
                          size_t blen);
void mb_nats_logf(struct mb_nats *n, const char *what, const char *why);

#endif
