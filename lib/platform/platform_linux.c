/* platform_linux.c - Linux implementation of platform.h. */
#include "platform/platform.h"

#include <errno.h>
#include <sched.h>
#include <stdbool.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <linux/sockios.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <string.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

uint64_t mb_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void mb_futex_wait(_Atomic uint32_t *word, uint32_t expect, uint64_t timeout_ns)
{
	struct timespec ts, *tsp = NULL;
	if (timeout_ns != UINT64_MAX) {
		ts.tv_sec = (time_t)(timeout_ns / 1000000000u);
		ts.tv_nsec = (long)(timeout_ns % 1000000000u);
		tsp = &ts;
	}
	/* Shared (not private) futex: the word may be mapped by other processes. */
	syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT, expect, tsp, NULL, 0);
}

void mb_futex_wake_all(_Atomic uint32_t *word)
{
	syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

static int shm_path(const char *name, char *buf, size_t len)
{
	int n = snprintf(buf, len, "/dev/shm/msgbus.%s", name);
	return n > 0 && (size_t)n < len ? 0 : -ENAMETOOLONG;
}

int mb_shm_open(const char *name, int *fd)
{
	char path[128];
	int rc = shm_path(name, path, sizeof(path));
	if (rc)
		return rc;
	int f = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (f < 0)
		return -errno;
	*fd = f;
	return 0;
}

int mb_shm_create(const char *name, int *fd)
{
	char path[128];
	int rc = shm_path(name, path, sizeof(path));
	if (rc)
		return rc;
	/* O_EXCL: never adopt a file somebody else put there. */
	int f = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (f < 0)
		return -errno;
	*fd = f;
	return 0;
}

int mb_shm_unlink(const char *name)
{
	char path[128];
	int rc = shm_path(name, path, sizeof(path));
	if (rc)
		return rc;
	return unlink(path) ? -errno : 0;
}

int mb_shm_is_current(const char *name, int fd)
{
	char path[128];
	struct stat a, b;
	if (shm_path(name, path, sizeof(path)) || lstat(path, &a) || fstat(fd, &b))
		return 0;
	return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

static void file_info(const struct stat *st, struct mb_file_info *fi)
{
	fi->uid = (uint32_t)st->st_uid;
	fi->mode = (uint32_t)st->st_mode & 07777u;
	fi->links = (uint64_t)st->st_nlink;
	fi->size = (uint64_t)st->st_size;
	fi->regular = S_ISREG(st->st_mode);
}

int mb_fd_info(int fd, struct mb_file_info *fi)
{
	struct stat st;
	if (fstat(fd, &st))
		return -errno;
	file_info(&st, fi);
	return 0;
}

int mb_shm_info(const char *name, struct mb_file_info *fi)
{
	char path[128];
	struct stat st;
	int rc = shm_path(name, path, sizeof(path));
	if (rc)
		return rc;
	if (lstat(path, &st))
		return -errno;
	file_info(&st, fi);
	return 0;
}

int mb_fd_chmod(int fd, unsigned mode)
{
	return fchmod(fd, (mode_t)mode) ? -errno : 0;
}

uint32_t mb_euid(void)
{
	return (uint32_t)geteuid();
}

int mb_fd_size(int fd, uint64_t *size)
{
	struct stat st;
	if (fstat(fd, &st))
		return -errno;
	*size = (uint64_t)st.st_size;
	return 0;
}

int mb_fd_resize(int fd, uint64_t size)
{
	if (ftruncate(fd, 0) || ftruncate(fd, (off_t)size))
		return -errno;
	return 0;
}

int mb_fd_back(int fd, uint64_t off, uint64_t len)
{
	/* Allocate the pages before anyone writes them: a full /dev/shm must
	 * fail here with ENOSPC, not later with SIGBUS on first touch. */
	int rc = posix_fallocate(fd, (off_t)off, (off_t)len);
	return rc ? -rc : 0;
}

int mb_map(int fd, uint64_t size, void **addr)
{
	void *p;
	if (fd < 0)
		p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		         /* cppcheck-suppress invalidFunctionArg ; posix.cfg wants fd >= 0 even here */
		         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	else
		p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return -errno;
	*addr = p;
	return 0;
}

void mb_unmap(void *addr, uint64_t size)
{
	if (addr)
		munmap(addr, size);
}

void mb_close_fd(int fd)
{
	if (fd >= 0)
		close(fd);
}

int mb_lock_try(int fd, uint64_t byte, enum mb_lock_kind kind)
{
	struct flock fl = {
		.l_type = kind == MB_LOCK_READ ? F_RDLCK
		        /* NOLINTNEXTLINE(bugprone-narrowing-conversions): 0..2 fits a short */
		        : kind == MB_LOCK_WRITE ? F_WRLCK : F_UNLCK,
		.l_whence = SEEK_SET,
		.l_start = (off_t)byte,
		.l_len = 1,
	};
	if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
		return 0;
	return errno == EACCES ? -EAGAIN : -errno;
}

void mb_yield_cpu(void)
{
	sched_yield();
}

void mb_thread_name(const char *name)
{
	(void)pthread_setname_np(pthread_self(), name); /* a name is only a help */
}

void mb_nap_us(unsigned us)
{
	struct timespec ts = { (time_t)(us / 1000000u), (long)(us % 1000000u) * 1000L };
	nanosleep(&ts, NULL);
}

static int resolve(const char *host, const char *port, int passive, struct addrinfo **res)
{
	struct addrinfo hints;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = passive ? AI_PASSIVE : 0;
	int rc = getaddrinfo(host[0] ? host : NULL, port, &hints, res);
	return rc == 0 ? 0 : rc == EAI_SYSTEM ? -errno : -EHOSTUNREACH;
}

static void tune(int fd)
{
	int one = 1;
	/* Small frames go out at once; batching is done by the link itself. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int mb_tcp_listen(const char *host, const char *port, int *fd, int *bound_port)
{
	struct addrinfo *res, *ai;
	int rc = resolve(host, port, 1, &res);
	if (rc)
		return rc;
	rc = -EADDRNOTAVAIL;
	for (ai = res; ai; ai = ai->ai_next) {
		int s = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (s < 0) {
			rc = -errno;
			continue;
		}
		int one = 1;
		setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(s, ai->ai_addr, ai->ai_addrlen) || listen(s, 64)) {
			rc = -errno;
			close(s);
			continue;
		}
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		if (getsockname(s, (struct sockaddr *)&ss, &sl)) {
			rc = -errno;
			close(s);
			continue;
		}
		/* The analyzer misses getsockname's write through glibc's transparent
		 * union. NOLINTNEXTLINE(clang-analyzer-core.UndefinedBinaryOperatorResult) */
		*bound_port = ntohs(ss.ss_family == AF_INET6
		                        ? ((struct sockaddr_in6 *)&ss)->sin6_port
		                        : ((struct sockaddr_in *)&ss)->sin_port);
		*fd = s;
		rc = 0;
		break;
	}
	freeaddrinfo(res);
	return rc;
}

/* HOST:PORT or [HOST]:PORT, numeric; "fd N" if it cannot be told. */
static void format_peer(int s, const struct sockaddr_storage *ss, socklen_t sl, char *peer,
                        size_t peer_len)
{
	char host[NI_MAXHOST], port[NI_MAXSERV];
	if (getnameinfo((const struct sockaddr *)ss, sl, host, sizeof(host), port, sizeof(port),
	                NI_NUMERICHOST | NI_NUMERICSERV))
		snprintf(peer, peer_len, "fd %d", s);
	else
		snprintf(peer, peer_len, ss->ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host,
		         port);
}

int mb_tcp_accept(int lfd, int *fd, char *peer, size_t peer_len)
{
	struct sockaddr_storage ss = { 0 };
	socklen_t sl = sizeof(ss);
	int s = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
	if (s < 0)
		return -errno;
	tune(s);
	*fd = s;
	format_peer(s, &ss, sl, peer, peer_len);
	return 0;
}

int mb_sock_peer(int fd, char *peer, size_t peer_len)
{
	struct sockaddr_storage ss = { 0 };
	socklen_t sl = sizeof(ss);
	if (getpeername(fd, (struct sockaddr *)&ss, &sl))
		return -errno;
	format_peer(fd, &ss, sl, peer, peer_len);
	return 0;
}

int mb_tcp_connect(const char *host, const char *port, int *fd)
{
	struct addrinfo *res, *ai;
	int rc = resolve(host, port, 0, &res);
	if (rc)
		return rc;
	rc = -ECONNREFUSED;
	for (ai = res; ai; ai = ai->ai_next) {
		int s = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (s < 0) {
			rc = -errno;
			continue;
		}
		if (connect(s, ai->ai_addr, ai->ai_addrlen)) {
			rc = -errno;
			close(s);
			continue;
		}
		tune(s);
		*fd = s;
		rc = 0;
		break;
	}
	freeaddrinfo(res);
	return rc;
}

long mb_sock_read(int fd, void *buf, size_t len)
{
	for (;;) {
		ssize_t n = recv(fd, buf, len, 0);
		if (n >= 0)
			return (long)n;
		if (errno != EINTR)
			return -errno;
	}
}

long mb_sock_read_nowait(int fd, void *buf, size_t len)
{
	ssize_t n = recv(fd, buf, len, MSG_DONTWAIT);
	return n >= 0 ? (long)n : errno == EWOULDBLOCK || errno == EINTR ? -EAGAIN : -errno;
}

/* What the peer has taken of fd's stream so far, in a frame of reference
 * fixed for one write: `accepted` bytes given to the kernel, of which
 * SIOCOUTQ are not yet acknowledged. -1: unknown. */
static long long peer_took(int fd, size_t accepted)
{
	int queued;
	if (ioctl(fd, SIOCOUTQ, &queued) || queued < 0)
		return -1;
	return (long long)accepted - queued;
}

int mb_sock_write2(int fd, const void *a, size_t alen, const void *b, size_t blen, int stall_ms)
{
	struct iovec iov[2] = { { (void *)a, alen }, { (void *)b, blen } };
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
	size_t accepted = 0;
	/* The peer's progress is first looked at when a write comes back
	 * short: a write that goes at once costs one system call. */
	long long took = 0;
	uint64_t progress_ns = 0;
	bool looked = false;
	while (iov[0].iov_len + iov[1].iov_len) {
		ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL);
		if (n < 0 && errno != EINTR && (errno != EWOULDBLOCK || stall_ms <= 0))
			return -errno;
		size_t k = n > 0 ? (size_t)n : 0;
		accepted += k;
		for (int i = 0; i < 2; i++) {
			size_t d = k < iov[i].iov_len ? k : iov[i].iov_len;
			iov[i].iov_base = (char *)iov[i].iov_base + d;
			iov[i].iov_len -= d;
			k -= d;
		}
		if (!(iov[0].iov_len + iov[1].iov_len) || stall_ms <= 0)
			continue;
		/* Back early (SO_SNDTIMEO, a signal): has the peer taken
		 * anything lately? Room in our own send buffer is no sign. */
		long long now_took = peer_took(fd, accepted);
		uint64_t now = mb_now_ns();
		if (!looked || now_took != took || (now_took < 0 && n > 0)) {
			looked = true;
			took = now_took;
			progress_ns = now;
		} else if (now - progress_ns >= (uint64_t)stall_ms * 1000000u) {
			return -EAGAIN;
		}
	}
	return 0;
}

long mb_sock_write_nowait(int fd, const void *buf, size_t len)
{
	for (;;) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n >= 0)
			return (long)n;
		if (errno != EINTR)
			return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	}
}

int mb_sock_set_read_timeout(int fd, int timeout_ms)
{
	struct timeval tv = { (time_t)(timeout_ms / 1000), (long)(timeout_ms % 1000) * 1000L };
	return setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) ? -errno : 0;
}

int mb_sock_set_write_timeout(int fd, int timeout_ms)
{
	struct timeval tv = { (time_t)(timeout_ms / 1000), (long)(timeout_ms % 1000) * 1000L };
	return setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) ? -errno : 0;
}

void mb_sock_shutdown(int fd)
{
	if (fd >= 0)
		shutdown(fd, SHUT_RDWR);
}
