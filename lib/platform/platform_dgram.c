/* platform_dgram.c - doorbell sockets for platform_dgram.h (Linux). */
#include "platform/platform_dgram.h"
#include "platform/platform.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define BELL_PREFIX "msgbus.bell."
#define BELL_PREFIX_LEN (sizeof(BELL_PREFIX) - 1)
#define BIND_TRIES 8

/* The process's unbound sending socket, made once (a forked child shares
 * it with its parent, which is harmless for an unbound datagram socket). */
static _Atomic int sender = -1;
static _Atomic uint64_t failures;

/* Every descriptor of an open doorbell, for the fork handler. */
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t reg_once = PTHREAD_ONCE_INIT;
static int *reg_fds;
static size_t reg_n, reg_cap;

static void reg_prepare(void)
{
	pthread_mutex_lock(&reg_lock);
}

static void reg_parent(void)
{
	pthread_mutex_unlock(&reg_lock);
}

/* The child: point each inherited doorbell descriptor (and a timed bell's
 * epoll and timer) at a socket without a name, which nothing can reach. */
static void reg_child(void)
{
	int ph = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	for (size_t i = 0; ph >= 0 && i < reg_n; i++)
		(void)dup3(ph, reg_fds[i], O_CLOEXEC);
	if (ph >= 0)
		close(ph);
	pthread_mutex_unlock(&reg_lock);
}

static void reg_install(void)
{
	pthread_atfork(reg_prepare, reg_parent, reg_child);
}

static int reg_add(int fd)
{
	int rc = 0;

	pthread_once(&reg_once, reg_install);
	pthread_mutex_lock(&reg_lock);
	if (reg_n == reg_cap) {
		size_t cap = reg_cap ? reg_cap * 2 : 16;
		int *p = realloc(reg_fds, cap * sizeof(*p));

		if (p) {
			reg_fds = p;
			reg_cap = cap;
		} else {
			rc = -ENOMEM;
		}
	}
	if (!rc)
		reg_fds[reg_n++] = fd;
	pthread_mutex_unlock(&reg_lock);
	return rc;
}

static void reg_del(int fd)
{
	pthread_mutex_lock(&reg_lock);
	for (size_t i = 0; i < reg_n; i++) {
		if (reg_fds[i] == fd) {
			reg_fds[i] = reg_fds[--reg_n];
			break;
		}
	}
	pthread_mutex_unlock(&reg_lock);
}

/* The abstract address of doorbell id; async-signal-safe (no snprintf). */
static socklen_t bell_addr(uint64_t id, struct sockaddr_un *sa)
{
	static const char hex[] = "0123456789abcdef";
	char *p;

	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	p = sa->sun_path;
	*p++ = '\0';
	memcpy(p, BELL_PREFIX, BELL_PREFIX_LEN);
	p += BELL_PREFIX_LEN;
	for (int i = 15; i >= 0; i--)
		*p++ = hex[(id >> (4 * i)) & 0xf];
	return (socklen_t)(p - (char *)sa);
}

static uint64_t random_id(void)
{
	static _Atomic uint64_t salt;
	uint64_t z;

	if (getrandom(&z, sizeof(z), GRND_NONBLOCK) == (ssize_t)sizeof(z))
		return z;
	z = mb_now_ns() ^ (uint64_t)getpid() << 32 ^
	    atomic_fetch_add_explicit(&salt, 0x9e3779b97f4a7c15ull, memory_order_relaxed);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void mb_dgram_init(void)
{
	int fd;

	/* Relaxed: a descriptor number, published by the CAS below. */
	if (atomic_load_explicit(&sender, memory_order_relaxed) >= 0)
		return;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return;
	int none = -1;
	/* Relaxed: only the number is shared; a loser closes its own. */
	if (!atomic_compare_exchange_strong_explicit(&sender, &none, fd, memory_order_relaxed,
	                                             memory_order_relaxed))
		close(fd);
}

int mb_doorbell_open(struct mb_doorbell *db)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, err = EADDRINUSE;

	db->fd = -1;
	mb_dgram_init();
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	for (int i = 0; i < BIND_TRIES && err == EADDRINUSE; i++) {
		db->id = random_id();
		socklen_t len = bell_addr(db->id, &sa);

		err = bind(fd, (struct sockaddr *)&sa, len) ? errno : 0;
	}
	if (!err)
		err = -reg_add(fd);
	if (err) {
		close(fd);
		return -err;
	}
	db->fd = fd;
	return 0;
}

void mb_doorbell_close(struct mb_doorbell *db)
{
	if (db->fd < 0)
		return;
	reg_del(db->fd);
	close(db->fd);
	db->fd = -1;
}

void mb_doorbell_drain(const struct mb_doorbell *db)
{
	char buf[64];

	/* Each call takes one datagram; the queue holds a few at most. */
	while (db->fd >= 0 && recv(db->fd, buf, sizeof(buf), MSG_DONTWAIT) >= 0)
		;
}

void mb_doorbell_ring(uint64_t id)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	socklen_t len = bell_addr(id, &sa);
	static const char one = 1;
	int fd = atomic_load_explicit(&sender, memory_order_relaxed);

	if (fd < 0) {
		mb_dgram_init();
		fd = atomic_load_explicit(&sender, memory_order_relaxed);
	}
	if (fd < 0 || sendto(fd, &one, 1, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&sa,
	                     len) != 1)
		atomic_fetch_add_explicit(&failures, 1, memory_order_relaxed);
}

uint64_t mb_doorbell_failures(void)
{
	return atomic_load_explicit(&failures, memory_order_relaxed);
}

/* ---- timed bells ---------------------------------------------------------- */

int mb_timed_bell_open(struct mb_timed_bell *tb)
{
	struct epoll_event ev = { .events = EPOLLIN };
	int rc;

	tb->tfd = tb->efd = -1;
	rc = mb_doorbell_open(&tb->db);
	if (rc)
		return rc;
	tb->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	tb->efd = epoll_create1(EPOLL_CLOEXEC);
	rc = tb->tfd < 0 || tb->efd < 0 ? -errno : 0;
	if (!rc && (epoll_ctl(tb->efd, EPOLL_CTL_ADD, tb->db.fd, &ev) ||
	            epoll_ctl(tb->efd, EPOLL_CTL_ADD, tb->tfd, &ev)))
		rc = -errno;
	if (!rc)
		rc = reg_add(tb->tfd);
	if (!rc && (rc = reg_add(tb->efd)) != 0)
		reg_del(tb->tfd);
	if (rc) {
		if (tb->tfd >= 0)
			close(tb->tfd);
		if (tb->efd >= 0)
			close(tb->efd);
		tb->tfd = tb->efd = -1;
		mb_doorbell_close(&tb->db);
	}
	return rc;
}

void mb_timed_bell_close(struct mb_timed_bell *tb)
{
	if (tb->efd >= 0) {
		reg_del(tb->efd);
		close(tb->efd);
	}
	if (tb->tfd >= 0) {
		reg_del(tb->tfd);
		close(tb->tfd);
	}
	tb->tfd = tb->efd = -1;
	mb_doorbell_close(&tb->db);
}

void mb_timed_bell_set(struct mb_timed_bell *tb, uint64_t when)
{
	struct itimerspec its;

	memset(&its, 0, sizeof(its));
	if (when != UINT64_MAX) {
		if (!when)
			when = 1; /* 0 would disarm it */
		its.it_value.tv_sec = (time_t)(when / 1000000000u);
		its.it_value.tv_nsec = (long)(when % 1000000000u);
	}
	/* Setting it again also clears a past expiry: not readable until
	 * when (or at once, when it has passed). */
	(void)timerfd_settime(tb->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}
