/*
 * platform_dgram.h - doorbell sockets: the descriptors that msgbus_sub_fd(3)
 * and its kin hand out (DESIGN.md section 9). A doorbell is a Unix datagram
 * socket bound to the abstract name "\0msgbus.bell.<16 hex digits>", so any
 * process can ring it by id with one sendto() and no descriptor passing, and
 * the name vanishes with the socket (even after kill -9). It is readable
 * while a datagram is queued: the owner drains it before it re-arms.
 *
 * A fork()ed child inherits the descriptors but not the doorbells: in the
 * child each open doorbell's descriptor number is pointed at a placeholder
 * socket that nothing can reach, so it never becomes readable and draining
 * it never steals the parent's datagrams.
 */
#ifndef MB_PLATFORM_DGRAM_H
#define MB_PLATFORM_DGRAM_H

#include <stdint.h>

struct mb_doorbell {
	int fd;       /* CLOEXEC, NONBLOCK; -1 when closed */
	uint64_t id;  /* the name: "msgbus.bell.%016llx" */
};

/* A new doorbell with a random name: 0 or -errno. */
int mb_doorbell_open(struct mb_doorbell *db);
/* Close it (idempotent). The name is gone once the descriptor is. */
void mb_doorbell_close(struct mb_doorbell *db);
/* Read every queued datagram, without waiting. */
void mb_doorbell_drain(const struct mb_doorbell *db);
/* Ring doorbell id: one datagram, never waiting. A full queue (a ring
 * pending already), a name nobody holds, or any other failure is ignored
 * and counted: the ringer must never stall on the ringing. Async-signal-
 * safe once mb_dgram_init has run in the process (msgbus_open does). */
void mb_doorbell_ring(uint64_t id);
/* Make the process's sending socket now (at open), so that a ring from a
 * signal handler needs no initialisation. */
void mb_dgram_init(void);
/* Rings that could not be sent, for tests and introspection. */
uint64_t mb_doorbell_failures(void);

/*
 * A descriptor readable when either a doorbell is or an absolute
 * CLOCK_MONOTONIC time has passed (an epoll instance holding the doorbell
 * and a timerfd): for an asynchronous call, whose deadline and liveness
 * checks no peer signals.
 */
struct mb_timed_bell {
	struct mb_doorbell db;
	int tfd, efd; /* -1 when closed */
};
int mb_timed_bell_open(struct mb_timed_bell *tb);
void mb_timed_bell_close(struct mb_timed_bell *tb);
/* Readable at when (ns, CLOCK_MONOTONIC) and after, until set again;
 * when UINT64_MAX: never. */
void mb_timed_bell_set(struct mb_timed_bell *tb, uint64_t when);

#endif
