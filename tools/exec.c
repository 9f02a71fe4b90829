/*
 * exec.c - serve --exec: one command per request, through /bin/sh, the
 * request on its stdin and its stdout the reply.
 */
#include "tool.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>


struct pipes {
	int in[2];  /* the command's stdin */
	int out[2]; /* the command's stdout */
};

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/*
 * posix_spawn, not fork: the process has the library's threads. The child
 * gets the default disposition of the signals this command handles or
 * ignores, and an empty mask.
 */
static int spawn(const char *cmd, struct pipes *p, pid_t *pid)
{
	char *argv[] = { "sh", "-c", (char *)cmd, NULL };
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, dfl;
	int rc;

	sigemptyset(&none);
	sigemptyset(&dfl);
	sigaddset(&dfl, SIGINT);
	sigaddset(&dfl, SIGTERM);
	sigaddset(&dfl, SIGPIPE);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, p->in[0], STDIN_FILENO);
	posix_spawn_file_actions_adddup2(&fa, p->out[1], STDOUT_FILENO);
	posix_spawnattr_init(&attr);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &dfl);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	rc = posix_spawn(pid, "/bin/sh", &fa, &attr, argv, environ);
	posix_spawnattr_destroy(&attr);
	posix_spawn_file_actions_destroy(&fa);
	errno = rc;
	return rc ? -1 : 0;
}

struct output {
	char *buf;
	size_t len, cap, max;
	int too_long;
};

/* Reads what the command wrote; beyond max it is read and dropped. */
static int read_output(int fd, struct output *o)
{
	char tmp[4096];
	ssize_t n = read(fd, tmp, sizeof tmp);

	if (n <= 0)
		return n == 0 || errno != EINTR ? (int)n : 1;
	if (o->len + (size_t)n > o->max) {
		o->too_long = 1;
		return 1;
	}
	if (o->len + (size_t)n > o->cap) {
		size_t cap = o->cap ? o->cap : 4096;
		char *nb;

		while (cap < o->len + (size_t)n)
			cap *= 2;
		nb = realloc(o->buf, cap);
		if (!nb)
			return -1;
		o->buf = nb;
		o->cap = cap;
	}
	memcpy(o->buf + o->len, tmp, (size_t)n);
	o->len += (size_t)n;
	return 1;
}

/*
 * Feeds the request and collects the output at the same time, so that a
 * command that writes before it has read all its input cannot deadlock.
 * A signal to this process ends the command with SIGTERM.
 */
static int exchange(struct pipes *p, pid_t pid, const char *in, size_t inlen,
                    struct output *out)
{
	size_t off = 0;
	int killed = 0;

	if (inlen == 0)
		close_fd(&p->in[1]);
	while (p->out[0] >= 0) {
		struct pollfd fds[2] = { { p->out[0], POLLIN, 0 }, { p->in[1], POLLOUT, 0 } };
		int n = poll(fds, p->in[1] >= 0 ? 2 : 1, SLICE_MS);

		if (tool_stop && !killed) {
			kill(pid, SIGTERM);
			killed = 1;
		}
		if (n < 0 && errno != EINTR)
			return -1;
		if (n <= 0)
			continue;
		if (fds[0].revents) {
			int r = read_output(p->out[0], out);
			if (r < 0)
				return -1;
			if (r == 0)
				close_fd(&p->out[0]);
		}
		if (p->in[1] >= 0 && fds[1].revents) {
			ssize_t w = write(p->in[1], in + off, inlen - off);
			if (w > 0)
				off += (size_t)w;
			/* EPIPE: the command did not want (all of) the request. */
			if ((w < 0 && errno != EINTR && errno != EAGAIN) || off == inlen)
				close_fd(&p->in[1]);
		}
	}
	return 0;
}

int tool_run_command(const char *cmd, const void *in, size_t inlen, size_t max, char **out,
                     size_t *outlen, int *status)
{
	struct pipes p = { { -1, -1 }, { -1, -1 } };
	struct output o = { NULL, 0, 0, max, 0 };
	pid_t pid = -1;
	int rc = -1, e;

	if (pipe2(p.in, O_CLOEXEC) || pipe2(p.out, O_CLOEXEC) || spawn(cmd, &p, &pid))
		goto out;
	close_fd(&p.in[0]);
	close_fd(&p.out[1]);
	/* A non-blocking write end: a request larger than the pipe is fed as
	 * the command reads it, between reads of its output. */
	fcntl(p.in[1], F_SETFL, O_NONBLOCK);
	rc = exchange(&p, pid, in, inlen, &o);
out:
	e = errno;
	close_fd(&p.in[0]);
	close_fd(&p.in[1]);
	close_fd(&p.out[0]);
	close_fd(&p.out[1]);
	if (pid > 0)
		while (waitpid(pid, status, 0) < 0 && errno == EINTR)
			;
	if (rc == 0 && o.too_long) {
		rc = -1;
		e = EFBIG;
	}
	if (rc != 0) {
		free(o.buf);
		errno = e;
		return -1;
	}
	*out = o.buf;
	*outlen = o.len;
	return 0;
}
