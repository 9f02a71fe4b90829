/*
 * conn_state.h - the state of one TCP connection between two buses, shared
 * by the files that work on it: conn.c runs a connection (its threads, its
 * end), link_send.c sends (the tx thread, inline senders, interest),
 * link_recv.c receives (the handshake, the rx thread, inline readers),
 * link_rr.c carries requests both ways. Their functions are declared in
 * their own headers.
 *
 * A link is a bridge participant: it opens its own handle on the local bus,
 * marked as a bridge, so what it republishes is recognisable and never
 * forwarded to another link (one hop: cycles cannot loop). Three threads:
 *  rx  reads frames: interest, messages to republish, requests to call
 *      locally, replies to requests it forwarded;
 *  tx  follows the local bus with a lossless subscription (the proxy) and
 *      sends what the peer is interested in, in batches; advertises local
 *      interest;
 *  rr  waits for local replies to the peer's requests and sends them back.
 * A publisher on the handle that made the link also sends inline: right
 * after its publish it takes what the proxy holds and writes it without
 * blocking (mb_conn_tx_inline), so a lone message does not wait for the tx
 * thread to wake up. Whatever it cannot write at once stays queued for the
 * tx thread, which never sleeps with anything queued or unread.
 * A message whose only local target is the proxy does not even go through
 * its inbox: the publisher queues it in txbuf itself (mb_conn_tx_direct),
 * when nothing taken before waits in the proxy, and writes it as above;
 * the tx thread writes what such publishers leave once they pause.
 * Likewise a thread spinning in msgbus_recv on that handle reads the link
 * inline while the rx thread lets it (mb_conn_rx_inline): in a ping-pong
 * whose parties spin, nobody has to be woken at all.
 * Backpressure is end to end: a slow peer stops reading, our writes block,
 * our lossless subscription stops releasing, local publishers wait. But a
 * write that makes no progress for DEAD_AFTER_MS drops the link, and no
 * thread that watches the peer (rx) ever waits for the writers: a peer
 * that stops reading holds the bus back for that long at most.
 *
 * Before the peer's HELLO, a connection holds nothing of the bus: no
 * handle, no participant slot, a HELLO-sized read buffer (conn.c).
 */
#ifndef MB_CONN_STATE_H
#define MB_CONN_STATE_H

#include "link/link_names.h"
#include "link/link_set.h"
#include "link/wire.h"
#include "platform/slock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEARTBEAT_MS 1000
/* A peer that sends nothing for this long, or acknowledges none of our
 * bytes for this long while we wait to write, is gone. A blocking write
 * looks at the peer's progress every WRITE_POLL_MS (mb_sock_write2). */
#define DEAD_AFTER_MS 5000
#define WRITE_POLL_MS 250
/* The peer's whole HELLO must arrive within this; until then it is read
 * in slices of HANDSHAKE_POLL_MS so the deadline is kept. */
#define HANDSHAKE_MS 2000
#define HANDSHAKE_POLL_MS 100
#define HELLO_FRAME (MB_WIRE_HDR + 16u)
#define TXBUF (256u << 10)
#define RXBUF (256u << 10) /* one read takes up to this much */
#define PENDING 4096u /* requests forwarded to the peer, awaiting replies */
/* The rr thread watches the workers and deadlines of the peer's calls in
 * flight this often. */
#define RR_WATCH_NS 50000000ull
/* Inline and direct sending: write at once when the queue was empty and
 * nothing was written for TX_LONE_NS (a lone message: ping-pong,
 * request/reply); in a stream, write once TX_WRITE_AT is queued and leave
 * the rest to the tx thread, so a fast publisher makes large writes, not
 * one per message. */
#define TX_LONE_NS 5000u
/* A write's return is stamped late when the write woke a thread that
 * took the CPU at once: a direct publisher that finds txbuf empty and its
 * previous one far back (TX_LONE_NS) counts its message lone once the
 * last write returned TX_LONE_GAP_NS ago, not only TX_LONE_NS. */
#define TX_LONE_GAP_NS 1000u
#define TX_WRITE_AT (64u << 10)
#define TX_PASS_MAX 4096u /* messages per pass of the tx thread */
/* A pass that takes this many is a stream to keep up with at once. */
#define TX_STREAM 64u
/* While publishers send inline, the tx thread looks at the bus this often
 * instead of waking at every commit (see mb_link_tx_main). */
#define TX_NAP_NS 200000u
/* After a pass that carried a stream and a pass that found it ended, the
 * tx thread waits this long, unannounced, before it sleeps on the bus. */
#define TX_LINGER_NS 50000u
/* While threads spinning in recv read the link, the rx thread looks at it
 * this often; they count as gone when they last looked longer ago. */
#define RX_NAP_NS 200000u
#define RX_SPIN_GONE_NS (2ull * RX_NAP_NS)
#define RX_INLINE_READS 4 /* reads per inline pass, at most */
#define RX_RUN 256u /* MSG frames published as one run, at most */

struct rsvc {
	char name[MB_SUBJECT_MAX + 1];
	msgbus_service *svc;
	struct mb_conn *conn;
};

struct peer_call {
	struct mb_conn *conn;
	uint32_t id;
	int rc;
	msgbus_call *call; /* NULL: refused at once, rc says why */
	msgbus_msg *reply;
	struct peer_call *next;
};

struct reader {
	uint8_t *buf;
	size_t cap, len, off;
	uint64_t last_rx_ns;
	uint64_t received; /* MSG frames published, not yet counted */
	/* The subject of the last MSG published, and its topic: a MSG
	 * with the same name bytes skips decoding and the topic lookup. */
	char mname[MB_SUBJECT_MAX + 1];
	uint16_t mlen; /* 0: none */
};

/*
 * The part of a connection that publishers of the linking handle reach
 * without ls->lock (links.c:links_direct): it outlives its connection and
 * serves later ones (link_set.c), so a publisher that reads a stale one
 * finds it closed (conn NULL) or another connection's under wlock. Freed
 * when the links stop.
 */
struct mb_conn_door {
	/* The sending side of conn, one thread at a time: its tx thread, a
	 * publisher sending inline (links.c), or a thread sending a control
	 * frame. It owns the proxy's takes, txbuf and the writes. */
	struct mb_slock wlock;
	struct mb_conn *conn; /* under wlock: the connection, or NULL */
	/* conn's proxy subscription slot (UINT32_MAX: none): how a publisher
	 * finds the link a message for that slot alone can go through.
	 * Relaxed: a hint, checked under wlock against the proxy itself. */
	_Atomic uint32_t proxy_slot;
	bool used; /* under ls->lock: a connection has it */
	/* ls->doors: set before the door is published there, then fixed. */
	struct mb_conn_door *next;
};

struct mb_conn {
	struct mb_links *ls;
	struct mb_conn_door *door; /* wlock and proxy_slot, from conn_new to conn_free */
	struct mb_link_rec *rec; /* its link's state and counters */
	msgbus_bus *lb; /* the link's own, bridge-marked handle */
	int fd;
	char peer[96];
	_Atomic bool down;
	pthread_t tx, rr;

	/* The sending side is under door->wlock. Follows the bus once the
	 * peer wants anything: created by rx, set to NULL under wlock at the
	 * drop, used under wlock. */
	_Atomic(msgbus_sub *) proxy;
	msgbus_msg *held; /* taken from the proxy, waits for room in txbuf */
	uint8_t *txbuf;
	size_t txlen, txoff; /* queued, of which written (a non-blocking write
	                      * may stop within a frame) */
	uint32_t uncounted; /* MSG frames queued, not yet counted as sent */
	/* MSG frames publishers queued themselves (mb_conn_tx_direct), and
	 * the count the tx thread saw at its last pass: it leaves their
	 * bytes to them while the count moves (they write at TX_WRITE_AT)
	 * and writes what they left once it stops. */
	uint64_t direct_n, direct_seen;
	uint64_t last_write_ns; /* when the last write returned */
	/* When a direct publisher last found txbuf empty: lone messages are
	 * far apart, a stream's are not (mb_conn_tx_direct). */
	uint64_t direct_empty_ns;
	/* Whether the peer wants want_subject, decided at rgen want_gen (0:
	 * not yet): the subject sent last is usually the next one. */
	uint32_t want_gen, want_len;
	bool want;
	char want_subject[MB_SUBJECT_MAX + 1]; /* want_len bytes */
	/* Per publishing participant: its sequence numbers below were taken. */
	uint64_t *taken;
	_Atomic uint64_t last_tx_ns; /* read by tx without wlock for heartbeats */
	uint32_t peer_max_frame;
	/* A PONG to send: the rx thread never writes (it would wait for
	 * wlock behind a blocked writer), it leaves the token here for the tx
	 * thread. pong_due is stored with release after pong_token. */
	_Atomic uint64_t pong_token;
	_Atomic bool pong_due;
	/* Read by every publisher of the linking handle, written rarely:
	 * a line of its own. tx_ec is the tx thread's own eventcount, for
	 * its naps: an inline sender that leaves work behind signals it.
	 * tx_active: the tx thread is not asleep, and takes what comes. */
	_Alignas(128) _Atomic uint32_t tx_ec;
	_Atomic bool tx_active;
	_Alignas(128) _Atomic uint64_t inline_passes; /* inline passes that took any */

	/* The receiving side, one thread at a time: the rx thread, or (only
	 * while rx_shared) a thread spinning in msgbus_recv on the linking
	 * handle, trylock only, which publishes MSG frames and leaves any
	 * other frame to the rx thread. */
	_Alignas(128) pthread_mutex_t rlock;
	struct reader rd;
	uint32_t max_frame; /* ours */
	bool rx_shared; /* the rx thread naps: spinners may read */
	bool rx_end;    /* a spinner read the end of the stream, or an error */
	/* The rx thread's eventcount for its naps, and when a spinner last
	 * looked at the link (0: it went to sleep). */
	_Alignas(128) _Atomic uint32_t rx_ec;
	_Atomic uint64_t rx_spin_ns;

	pthread_mutex_t lock; /* remote interest, proxy creation, pending, calls */
	uint32_t max_patterns; /* rsubs.n + nrsvcs, at most */
	struct names rsubs;
	/* The proxy's slot takes the peer's first pattern (kept until the
	 * link closes); each further one an alias slot of it (subscribe.c). */
	char proxy_pattern[MB_SUBJECT_MAX + 1];
	struct link_alias {
		uint32_t slot, gen;
		char pattern[MB_SUBJECT_MAX + 1];
	} *aliases; /* max_patterns of them */
	uint32_t naliases;
	_Atomic uint32_t rgen; /* changes with rsubs (never 0) */
	struct rsvc **rsvcs;
	uint32_t nrsvcs;
	/* The peer's first PING arrived: it sends one right after the SUBs
	 * and SERVEs of what it had at the connection (link_send.c), so
	 * rsubs and rsvcs held all of that then (msgbus_links' DECLARED). */
	bool peer_declared;
	msgbus_req *pending[PENDING];
	uint32_t pending_id[PENDING];
	uint32_t next_id;
	struct peer_call *calls;
	/* When the rr thread wakes at the latest: a peer's request kicks it
	 * only if that is later than RR_WATCH_NS from now. Relaxed: a late
	 * look costs at most RR_WATCH_NS of watching. */
	_Atomic uint64_t rr_until;
};

/* Is participant idx of b a link's (bridge) handle? Relaxed: a link
 * marks its handle (conn.c:conn_open, links.c:connector_main) before it
 * publishes or subscribes anything, and we ask about the participant of a
 * message or slot that we read with acquire, which orders the mark. */
static inline bool mb_link_is_bridge(msgbus_bus *b, uint32_t idx)
{
	return idx < b->cfg.max_participants &&
	       (atomic_load_explicit(&mb_part_at(b, idx)->flags, memory_order_relaxed) &
	        MB_PARTF_BRIDGE);
}

/* c->down: set once, when the connection ends, by any of its threads, a
 * failed write or the handle's close. seq_cst: each store is followed by a
 * shutdown of the socket or a kick of the eventcounts its threads sleep on
 * (conn.c:conn_run, link_set.c:mb_conn_shutdown_all), and a thread that
 * sleeps loads it after mb_ec_prepare: Dekker, it sees down or the kick
 * sees it. Nothing else is published through it. */
static inline bool mb_conn_down(struct mb_conn *c)
{
	return atomic_load_explicit(&c->down, memory_order_seq_cst);
}
static inline void mb_conn_set_down(struct mb_conn *c)
{
	atomic_store_explicit(&c->down, true, memory_order_seq_cst);
}

#endif
