/*
 * msgbus.h - the public interface of libmsgbus.
 *
 * This is the only installed header. Every handle is opaque; every fallible
 * call returns MSGBUS_OK (0) or one of the MSGBUS_E* codes below, whose
 * values never change. See msgbus(7) for concepts and guarantees.
 */
#ifndef MSGBUS_H
#define MSGBUS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define MSGBUS_DECL __attribute__((visibility("default")))
#else
#define MSGBUS_DECL
#endif

#define MSGBUS_VERSION_MAJOR 0
#define MSGBUS_VERSION_MINOR 1
#define MSGBUS_VERSION_PATCH 0
#define MSGBUS_VERSION_STRING "0.1.0"

/* Error codes. Values are part of the ABI: never renumber. */
enum msgbus_err {
	MSGBUS_OK = 0,
	MSGBUS_EINVAL = 1,        /* bad argument (NULL, malformed URL, subject) */
	MSGBUS_ENOMEM = 2,        /* out of memory */
	MSGBUS_ETIMEDOUT = 3,     /* the timeout expired */
	MSGBUS_EAGAIN = 4,        /* would block, and the caller asked not to */
	MSGBUS_EMSGSIZE = 5,      /* message larger than the bus maximum */
	MSGBUS_EINCOMPAT = 6,     /* segment of another layout version */
	MSGBUS_EPROTO = 7,        /* corrupt shared memory or bad peer input */
	MSGBUS_ELIMIT = 8,        /* a configured limit is reached */
	MSGBUS_EPERM = 9,         /* permission denied */
	MSGBUS_ECLOSED = 10,      /* the handle is closing or closed */
	MSGBUS_EPEERDIED = 11,    /* a peer process died */
	MSGBUS_ENORESPONDERS = 12, /* no live worker serves the name */
	MSGBUS_EBUSY = 13,        /* the subscription still holds a message */
	MSGBUS_ENOTSUP = 14,      /* not supported (URL scheme, option) */
	MSGBUS_ENOENT = 15        /* no such bus, and creation was not allowed */
};

/* An operating-system error is returned as MSGBUS_ESYSERR | errno. */
#define MSGBUS_ESYSERR 0x10000000

typedef struct msgbus_bus msgbus_bus;   /* an open bus */
typedef struct msgbus_sub msgbus_sub;   /* one subscription */
typedef struct msgbus_msg msgbus_msg;   /* a received message (a view) */
typedef struct msgbus_buf msgbus_buf;   /* a loaned publish buffer */
typedef struct msgbus_service msgbus_service; /* a worker of a service */
typedef struct msgbus_req msgbus_req; /* a request a worker took */
typedef struct msgbus_call msgbus_call; /* a request in flight */

/*
 * Options for msgbus_open(). Initialise with MSGBUS_OPTIONS_INIT; a member
 * left at 0 takes its default. They size a bus when it is created; a process
 * that attaches to an existing shm:// bus uses the sizes the creator chose.
 */
typedef struct msgbus_options {
	size_t size;               /* sizeof(msgbus_options), set by the macro */
	uint32_t ring_slots;       /* slots per service ring, power of two (512) */
	uint32_t slot_size;        /* bytes per service ring slot, multiple of 64 (256) */
	uint32_t max_msg_size;     /* largest message in bytes (1 MiB) */
	uint32_t large_buffers;    /* buffers for large messages (16) */
	uint32_t max_subjects;     /* service names per bus (32) */
	uint32_t max_subs;         /* subscriptions per bus (64) */
	uint32_t max_participants; /* open handles per bus (32) */
	uint32_t spin_us;          /* busy-wait before sleeping (20) */
	uint32_t crash_bound_ms;   /* detection bound for dead peers (1000) */
	uint32_t mode;             /* shm:// segment permissions (0600) */
	uint32_t owner;            /* uid that must own a shm:// segment (0: the
	                              caller's euid; MSGBUS_OWNER_ROOT: root) */
	uint32_t inbox_size;       /* bytes of each subscription's inbox, power of
	                              two (1 MiB) */
} msgbus_options;

#define MSGBUS_OPTIONS_INIT { sizeof(msgbus_options), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }

/* msgbus_options.owner naming root (uid 0, which as 0 means "the caller"):
 * (uid_t)-1 is never a user's uid. */
#define MSGBUS_OWNER_ROOT 0xffffffffu

/* Subscription flags. */
#define MSGBUS_SUB_LOSSY 0x1u /* never hold publishers back; count drops */

/* Counters of one subscription. */
typedef struct msgbus_sub_stats {
	uint64_t delivered; /* messages handed to the application */
	uint64_t dropped;   /* messages lost (lossy mode only) */
	uint64_t backlog;   /* messages published but not yet released */
} msgbus_sub_stats;

typedef void (*msgbus_msg_cb)(const msgbus_msg *msg, void *arg);
typedef void (*msgbus_serve_cb)(msgbus_req *req, void *arg);

MSGBUS_DECL const char *msgbus_version(void);
MSGBUS_DECL const char *msgbus_strerror(int err);

MSGBUS_DECL int msgbus_open(msgbus_bus **bus, const char *url,
                            const msgbus_options *opts);
MSGBUS_DECL int msgbus_close(msgbus_bus *bus);

MSGBUS_DECL int msgbus_publish(msgbus_bus *bus, const char *subject,
                               const void *data, size_t len, int timeout_ms);

MSGBUS_DECL int msgbus_loan(msgbus_bus *bus, size_t len, int timeout_ms,
                            msgbus_buf **buf);
MSGBUS_DECL void *msgbus_loan_data(msgbus_buf *buf);
MSGBUS_DECL int msgbus_commit(msgbus_buf *buf, const char *subject,
                              size_t len, int timeout_ms);
MSGBUS_DECL void msgbus_loan_abort(msgbus_buf *buf);

MSGBUS_DECL int msgbus_subscribe(msgbus_bus *bus, const char *pattern,
                                 unsigned flags, msgbus_sub **sub);
MSGBUS_DECL int msgbus_subscribe_cb(msgbus_bus *bus, const char *pattern,
                                    unsigned flags, msgbus_msg_cb cb,
                                    void *arg, msgbus_sub **sub);
MSGBUS_DECL int msgbus_unsubscribe(msgbus_sub *sub);
MSGBUS_DECL int msgbus_recv(msgbus_sub *sub, msgbus_msg **msg, int timeout_ms);
MSGBUS_DECL int msgbus_sub_stats_get(msgbus_sub *sub, msgbus_sub_stats *stats);

MSGBUS_DECL const char *msgbus_msg_subject(const msgbus_msg *msg);
MSGBUS_DECL const void *msgbus_msg_data(const msgbus_msg *msg);
MSGBUS_DECL size_t msgbus_msg_len(const msgbus_msg *msg);
MSGBUS_DECL void msgbus_msg_release(msgbus_msg *msg);

/* Request/reply. */
MSGBUS_DECL int msgbus_serve(msgbus_bus *bus, const char *service, msgbus_serve_cb cb,
                             void *arg, msgbus_service **svc);
MSGBUS_DECL int msgbus_service_recv(msgbus_service *svc, msgbus_req **req,
                                    int timeout_ms);
MSGBUS_DECL const void *msgbus_req_data(const msgbus_req *req);
MSGBUS_DECL size_t msgbus_req_len(const msgbus_req *req);
MSGBUS_DECL int msgbus_respond(msgbus_req *req, const void *data, size_t len);
MSGBUS_DECL int msgbus_unserve(msgbus_service *svc);

MSGBUS_DECL int msgbus_request(msgbus_bus *bus, const char *service, const void *data,
                               size_t len, msgbus_msg **reply, int timeout_ms);
MSGBUS_DECL int msgbus_call_start(msgbus_bus *bus, const char *service, const void *data,
                                  size_t len, int timeout_ms, msgbus_call **call);
MSGBUS_DECL int msgbus_call_wait(msgbus_call *call, msgbus_msg **reply, int timeout_ms);
MSGBUS_DECL void msgbus_call_cancel(msgbus_call *call);

/* Links to buses on other hosts (tcp://HOST:PORT). */
typedef struct msgbus_link_stats {
	uint32_t links_up;        /* connections established now */
	uint32_t remote_subs;     /* subscription patterns learned from peers */
	uint32_t remote_services; /* services learned from peers */
	uint32_t reserved;
	uint64_t sent;            /* messages sent to peers */
	uint64_t received;        /* messages from peers published here */
	uint64_t undelivered;     /* messages a peer wanted that could not reach it */
	uint64_t reconnects;      /* connections made again after a drop */
	uint64_t bad_frames;      /* connections closed for a protocol error */
} msgbus_link_stats;

MSGBUS_DECL int msgbus_listen(msgbus_bus *bus, const char *url, int *port);
MSGBUS_DECL int msgbus_connect(msgbus_bus *bus, const char *url);
MSGBUS_DECL int msgbus_link_stats_get(msgbus_bus *bus, msgbus_link_stats *stats);


/*
 * Introspection: what a bus holds, as snapshots. Each record is read
 * with its state word before and after; the segment is untrusted, so a
 * record that stays inconsistent or malformed is left out. See
 * msgbus_stat_get(3).
 */
typedef struct msgbus_stat {
	size_t size;               /* sizeof(msgbus_stat), set by the caller */
	uint64_t segment_size;     /* bytes of the shared segment */
	uint32_t ring_slots;       /* effective sizes of the bus, as created */
	uint32_t slot_size;
	uint32_t max_msg_size;
	uint32_t large_buffers;
	uint32_t max_subjects;     /* service names */
	uint32_t max_subs;
	uint32_t max_participants;
	uint32_t inbox_size;
	uint32_t spin_us;
	uint32_t crash_bound_ms;
	uint32_t participants;     /* open handles (slots in use) */
	uint32_t subscriptions;    /* subscriptions (services not counted) */
	uint32_t services;         /* service names with a queue */
	uint32_t self;             /* this handle's participant index */
	uint32_t interest_gen;     /* changes when subscriptions or services do */
	uint32_t reserved[9];
} msgbus_stat;

/* msgbus_participant_info.flags */
#define MSGBUS_PART_ALIVE 0x1u  /* its process holds the slot (exact check) */
#define MSGBUS_PART_BRIDGE 0x2u /* a link's handle */
#define MSGBUS_PART_SELF 0x4u   /* the handle asking */

typedef struct msgbus_participant_info {
	uint32_t index;            /* participant index, owner in msgbus_sub_info */
	uint32_t pid;              /* process that opened it (informational) */
	uint32_t flags;            /* MSGBUS_PART_* */
	uint32_t reserved[5];
} msgbus_participant_info;

/* msgbus_sub_info.flags: MSGBUS_SUB_LOSSY, and */
#define MSGBUS_SUBINFO_LOCAL 0x100u /* this handle's: delivered is known */

#define MSGBUS_NAME_MAX 255        /* longest subject, pattern or name */

typedef struct msgbus_sub_info {
	char pattern[MSGBUS_NAME_MAX + 1]; /* NUL-terminated */
	uint32_t slot;             /* subscription slot */
	uint32_t owner;            /* participant index of the subscriber */
	uint32_t flags;            /* MSGBUS_SUB_LOSSY, MSGBUS_SUBINFO_LOCAL */
	uint32_t reserved0;
	uint64_t delivered;        /* MSGBUS_SUBINFO_LOCAL only, else 0 */
	uint64_t dropped;          /* lossy: messages its inbox had no room for */
	uint64_t backlog;          /* messages in its inbox, not yet released */
	uint64_t reserved[4];
} msgbus_sub_info;

typedef struct msgbus_service_info {
	char name[MSGBUS_NAME_MAX + 1]; /* the service name, NUL-terminated */
	uint32_t workers;          /* live workers */
	uint32_t reserved0;
	uint64_t queued;           /* requests no worker has taken yet */
	uint64_t reserved[4];
} msgbus_service_info;

/* msgbus_link_info.kind */
#define MSGBUS_LINK_TCP_CONNECT 1 /* msgbus_connect(3) to a tcp:// listener */
#define MSGBUS_LINK_TCP_ACCEPT 2  /* a connection a msgbus_listen(3) accepted */
#define MSGBUS_LINK_NATS 3        /* msgbus_connect(3) to a nats:// server */

/* msgbus_link_info.state */
#define MSGBUS_LINK_CONNECTING 1  /* connecting, or in the handshake */
#define MSGBUS_LINK_UP 2          /* up: messages flow */
#define MSGBUS_LINK_BACKOFF 3     /* down, waiting before it connects again */

/* msgbus_link_info.flags */
#define MSGBUS_LINKINFO_CONFIRMED 0x1u /* nats: the server has processed the
                                          SUBs of this bus's interest now */
#define MSGBUS_LINKINFO_SHARED 0x2u    /* nats: the counters are those of all
                                          this handle's nats:// links */
#define MSGBUS_LINKINFO_DECLARED 0x4u  /* tcp: the peer has declared every
                                          pattern and service it had when the
                                          connection came up */

#define MSGBUS_URL_MAX 511        /* longest URL shown (longer: cut) */

typedef struct msgbus_link_info {
	char url[MSGBUS_URL_MAX + 1]; /* as given, credentials replaced by ***;
	                                 a listener's for MSGBUS_LINK_TCP_ACCEPT */
	char peer[64];             /* the peer's address while up, else "" */
	uint32_t kind;             /* MSGBUS_LINK_TCP_CONNECT, ... */
	uint32_t state;            /* MSGBUS_LINK_CONNECTING, ... */
	uint32_t flags;            /* MSGBUS_LINKINFO_* */
	uint32_t remote_subs;      /* patterns the peer declared (tcp:// only) */
	uint32_t remote_services;  /* services the peer declared (tcp:// only) */
	uint32_t reserved0[3];
	uint64_t sent;             /* as msgbus_link_stats, for this link */
	uint64_t received;
	uint64_t undelivered;
	uint64_t reconnects;
	uint64_t bad_frames;
	uint64_t reserved[4];
} msgbus_link_info;

MSGBUS_DECL int msgbus_stat_get(msgbus_bus *bus, msgbus_stat *stat);
MSGBUS_DECL int msgbus_participants(msgbus_bus *bus, msgbus_participant_info *arr,
                                    size_t cap, size_t *n);
MSGBUS_DECL int msgbus_subscriptions(msgbus_bus *bus, msgbus_sub_info *arr, size_t cap,
                                     size_t *n);
MSGBUS_DECL int msgbus_services(msgbus_bus *bus, msgbus_service_info *arr, size_t cap,
                                size_t *n);
MSGBUS_DECL int msgbus_links(msgbus_bus *bus, msgbus_link_info *arr, size_t cap, size_t *n);
/* Wait until at least n live subscriptions match subject (the start-up
 * race): MSGBUS_OK, or MSGBUS_ETIMEDOUT. */
MSGBUS_DECL int msgbus_wait_subscribers(msgbus_bus *bus, const char *subject, unsigned n,
                                        int timeout_ms);

/* Pollable descriptors, level-triggered: readable while a receive on the
 * object would return without waiting. The object owns the descriptor and
 * closes it with itself. See msgbus_sub_fd(3). */
MSGBUS_DECL int msgbus_sub_fd(msgbus_sub *sub, int *fd);
MSGBUS_DECL int msgbus_service_fd(msgbus_service *svc, int *fd);
MSGBUS_DECL int msgbus_call_fd(msgbus_call *call, int *fd);

/* Make every call blocked on bus (and every later one, but msgbus_close
 * and the releases) return MSGBUS_ECLOSED. Async-signal-safe. */
MSGBUS_DECL int msgbus_shutdown(msgbus_bus *bus);

#ifdef __cplusplus
}
#endif

#endif /* MSGBUS_H */
