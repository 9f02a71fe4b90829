/*
 * platform.h - the only OS interface of libmsgbus. Everything that needs a
 * system call (futexes, shared memory files, OFD locks, clocks) goes through
 * these functions, implemented in platform_linux.c.
 */
#ifndef MB_PLATFORM_H
#define MB_PLATFORM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Monotonic clock in nanoseconds. */
uint64_t mb_now_ns(void);

/*
 * Sleep on a shared futex word while it still holds `expect`, at most
 * timeout_ns (UINT64_MAX = no limit). Returns when woken, on timeout, or at
 * once if the word differs. Never uses FUTEX_PRIVATE_FLAG: words live in
 * memory shared between processes.
 */
void mb_futex_wait(_Atomic uint32_t *word, uint32_t expect, uint64_t timeout_ns);
void mb_futex_wake_all(_Atomic uint32_t *word);

/*
 * A named shared-memory file: /dev/shm/msgbus.NAME. Return 0 or -errno.
 * Neither open nor create follows a symlink at the name (-ELOOP). create
 * makes a new file, mode 0600, or fails with -EEXIST if anything has the
 * name.
 */
int mb_shm_open(const char *name, int *fd);
int mb_shm_create(const char *name, int *fd);
int mb_shm_unlink(const char *name);
int mb_shm_is_current(const char *name, int fd); /* 1: the name still refers to fd */

/* What decides whether a file may be trusted. */
struct mb_file_info {
	uint32_t uid;
	uint32_t mode;  /* permission, set-id and sticky bits (07777) */
	uint64_t links; /* names of the file */
	uint64_t size;
	int regular;
};
int mb_fd_info(int fd, struct mb_file_info *fi);
int mb_shm_info(const char *name, struct mb_file_info *fi); /* the name itself */
int mb_fd_chmod(int fd, unsigned mode);
uint32_t mb_euid(void);
int mb_fd_size(int fd, uint64_t *size);
int mb_fd_resize(int fd, uint64_t size); /* truncate: no page allocated */
int mb_fd_back(int fd, uint64_t off, uint64_t len); /* allocate these pages */
int mb_map(int fd, uint64_t size, void **addr); /* fd -1: private anonymous */
void mb_unmap(void *addr, uint64_t size);
void mb_close_fd(int fd);

/*
 * Open-file-description locks on single bytes of fd. They belong to the open
 * file description, so the kernel drops them when the last descriptor of it
 * closes, including at process death: that is what makes liveness exact.
 * try: 0 if taken now, -EAGAIN if another description holds a conflicting lock.
 */
enum mb_lock_kind { MB_LOCK_READ, MB_LOCK_WRITE, MB_LOCK_NONE };
int mb_lock_try(int fd, uint64_t byte, enum mb_lock_kind kind);

/* Sleep briefly, for rare polling paths. */
void mb_nap_us(unsigned us);
void mb_yield_cpu(void); /* let another runnable thread have this CPU */
/* Name the calling thread (at most 15 bytes) for ps, top -H and gdb. */
void mb_thread_name(const char *name);

/*
 * TCP. host is a name or an IPv4/IPv6 literal; port a decimal string.
 * Return 0 or -errno (-EAI_* failures become -EHOSTUNREACH).
 */
int mb_tcp_listen(const char *host, const char *port, int *fd, int *bound_port);
/* peer: the peer's address as HOST:PORT or [HOST]:PORT (numeric). */
int mb_tcp_accept(int lfd, int *fd, char *peer, size_t peer_len);
int mb_tcp_connect(const char *host, const char *port, int *fd);
/* The address of fd's peer, as mb_tcp_accept gives it; 0 or -errno. */
int mb_sock_peer(int fd, char *peer, size_t peer_len);
/* Bytes read (> 0), 0 at end of stream, or -errno. */
long mb_sock_read(int fd, void *buf, size_t len);
/* The same without blocking: -EAGAIN when nothing is there. */
long mb_sock_read_nowait(int fd, void *buf, size_t len);
/* Write all of a then b (either may be empty); 0 or -errno. Never SIGPIPE.
 * -EAGAIN when the peer acknowledges none of our bytes for stall_ms (> 0)
 * while the write waits: checked each time a blocking send returns early,
 * so set a write timeout (mb_sock_set_write_timeout) shorter than it. */
int mb_sock_write2(int fd, const void *a, size_t alen, const void *b, size_t blen, int stall_ms);
/* What the socket takes now, without blocking: bytes written (possibly
 * fewer than len), -EAGAIN when none, or -errno. Never SIGPIPE. */
long mb_sock_write_nowait(int fd, const void *buf, size_t len);
/* A blocking mb_sock_read returns -EAGAIN after timeout_ms without data. */
int mb_sock_set_read_timeout(int fd, int timeout_ms);
/* A blocking send returns after timeout_ms at most, having sent what
 * fitted: how often mb_sock_write2 looks at the peer's progress. */
int mb_sock_set_write_timeout(int fd, int timeout_ms);
void mb_sock_shutdown(int fd);

/* In spin loops. No PAUSE on x86: in a VM it can exit to the hypervisor
 * (pause-loop exiting), and on recent cores it stalls ~140 cycles, which
 * delays seeing the very store we spin for. A compiler barrier keeps the
 * loop's loads from being hoisted. */
static inline void mb_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	atomic_signal_fence(memory_order_seq_cst);
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

#endif
