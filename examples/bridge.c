/*
 * bridge.c - the notification example (notify.c) across two buses linked
 * over TCP, as if the post service and the workers ran on two hosts.
 *
 * The parent is the "post service": it opens its own bus, listens on a TCP
 * port of the loopback interface, and publishes every new post on
 * "posts.created". A forked "work host" opens a second bus, links it to the
 * post service's port, and forks two notification workers on that bus;
 * each worker subscribes and prints every post it gets. The link carries
 * the workers' interest to the post service, and the posts back. Run it
 * with no arguments; it exits 0 when both workers received every post, in
 * order.
 *
 *   cc -std=c11 -D_GNU_SOURCE bridge.c -lmsgbus -o bridge && ./bridge
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "msgbus.h"

#define NWORKERS 2
#define SUBJECT "posts.created"
#define RECV_TIMEOUT_MS 5000    /* a worker gives up rather than hang forever */
#define LINK_TIMEOUT_MS 5000    /* how long the service waits for the workers' link */
#define PUBLISH_TIMEOUT_MS 5000 /* a remote subscriber could be gone: do not wait forever */

static const char *const posts[] = {
	"hello from alice",
	"bob shared a photo",
	"carol joined the team",
	"dave: lunch at noon?",
	"erin liked your post",
};
#define NPOSTS (sizeof posts / sizeof posts[0])

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* One notification worker on the work bus; returns its exit status. */
static int worker(int id, const char *url, int ready_fd)
{
	msgbus_bus *bus;
	msgbus_sub *sub;
	msgbus_msg *msg;
	size_t got = 0;
	int err, ok = 1;

	/* A forked child opens its own handle; the bus exists already. */
	err = msgbus_open(&bus, url, NULL);
	if (err != MSGBUS_OK) {
		fprintf(stderr, "worker %d: open %s: %s\n", id, url, msgbus_strerror(err));
		return 1;
	}
	err = msgbus_subscribe(bus, SUBJECT, 0, &sub);
	if (err != MSGBUS_OK) {
		fprintf(stderr, "worker %d: subscribe: %s\n", id, msgbus_strerror(err));
		msgbus_close(bus);
		return 1;
	}
	/* Subscribed: the link tells the post service that this bus now
	 * wants SUBJECT. */
	if (write(ready_fd, "r", 1) != 1) {
		perror("worker: write ready pipe");
		msgbus_close(bus);
		return 1;
	}
	close(ready_fd);

	while (got < NPOSTS) {
		err = msgbus_recv(sub, &msg, RECV_TIMEOUT_MS);
		if (err != MSGBUS_OK) {
			fprintf(stderr, "worker %d: recv after %zu posts: %s\n", id, got,
			        msgbus_strerror(err));
			ok = 0;
			break;
		}
		const char *text = msgbus_msg_data(msg);
		size_t len = msgbus_msg_len(msg);
		const char *want = posts[got];

		got++;
		printf("worker %d got post %zu: \"%.*s\"\n", id, got, (int)len, len ? text : "");
		if (len != strlen(want) || memcmp(text, want, len) != 0) {
			fprintf(stderr, "worker %d: post %zu: expected \"%s\"\n", id, got, want);
			ok = 0;
		}
		msgbus_msg_release(msg);
	}
	printf("worker %d received %zu posts\n", id, got);

	if ((err = msgbus_unsubscribe(sub)) != MSGBUS_OK) {
		fprintf(stderr, "worker %d: unsubscribe: %s\n", id, msgbus_strerror(err));
		ok = 0;
	}
	if ((err = msgbus_close(bus)) != MSGBUS_OK) {
		fprintf(stderr, "worker %d: close: %s\n", id, msgbus_strerror(err));
		ok = 0;
	}
	return ok ? 0 : 1;
}

/*
 * The work host: owns the work bus and its link to the post service for the
 * whole run, and is the parent of the workers. Its exit status is the
 * number of workers that did NOT finish well (0 = all ok).
 */
static int work_host(const char *url, int port_fd, int ready_fd)
{
	msgbus_bus *bus;
	pid_t pids[NWORKERS];
	char service_url[64];
	int nforked = 0, nok = 0, err, port;

	/* Create the work bus first, so it lives until the workers are done. */
	err = msgbus_open(&bus, url, NULL);
	if (err != MSGBUS_OK) {
		fprintf(stderr, "work host: open %s: %s\n", url, msgbus_strerror(err));
		return NWORKERS;
	}
	/* Fork the workers before the link starts its threads. */
	fflush(stdout);
	for (int i = 0; i < NWORKERS; i++) {
		pid_t pid = fork();
		if (pid < 0) {
			perror("work host: fork");
			break;
		}
		if (pid == 0) {
			setvbuf(stdout, NULL, _IOLBF, 0); /* whole lines, as they come */
			int status = worker(i + 1, url, ready_fd);
			fflush(stdout);
			_exit(status);
		}
		pids[nforked++] = pid;
	}
	close(ready_fd);

	/*
	 * In real life the service's address would be configured; here the
	 * service tells its port through a pipe. One link per pair of buses:
	 * every message crosses it once. It connects in the background,
	 * reconnects if the service restarts, and stops when this handle
	 * closes.
	 */
	if (read(port_fd, &port, sizeof port) != (ssize_t)sizeof port) {
		fprintf(stderr, "work host: no port from the post service\n");
	} else {
		snprintf(service_url, sizeof service_url, "tcp://127.0.0.1:%d", port);
		err = msgbus_connect(bus, service_url);
		if (err != MSGBUS_OK)
			fprintf(stderr, "work host: connect %s: %s\n", service_url,
			        msgbus_strerror(err));
	}
	close(port_fd);

	for (int i = 0; i < nforked; i++) {
		int status;
		if (waitpid(pids[i], &status, 0) < 0)
			perror("work host: waitpid");
		else if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
			nok++;
		else
			fprintf(stderr, "worker %d failed (status 0x%x)\n", i + 1,
			        (unsigned)status);
	}
	/* The last handle to close unlinks /dev/shm/msgbus.bridge-work-PID. */
	if ((err = msgbus_close(bus)) != MSGBUS_OK) {
		fprintf(stderr, "work host: close: %s\n", msgbus_strerror(err));
		nok = 0;
	}
	return NWORKERS - nok;
}

/* Waits until the link brings the workers' subscription (bounded). */
static int wait_for_interest(msgbus_bus *bus)
{
	for (int waited = 0; waited < LINK_TIMEOUT_MS; waited++) {
		msgbus_link_stats st;
		int err = msgbus_link_stats_get(bus, &st);
		if (err != MSGBUS_OK) {
			fprintf(stderr, "link stats: %s\n", msgbus_strerror(err));
			return -1;
		}
		if (st.links_up >= 1 && st.remote_subs >= 1)
			return 0;
		sleep_ms(1);
	}
	fprintf(stderr, "the workers' bus did not link within %d ms\n", LINK_TIMEOUT_MS);
	return -1;
}

int main(void)
{
	char post_url[64], work_url[64];
	msgbus_bus *bus = NULL;
	pid_t host;
	int ready[2], port_pipe[2], port = -1, nready = 0, nok = 0, failed = 0, err, status;
	size_t published = 0;

	/* The pid in the names keeps concurrent runs apart. */
	snprintf(post_url, sizeof post_url, "shm://bridge-post-%ld", (long)getpid());
	snprintf(work_url, sizeof work_url, "shm://bridge-work-%ld", (long)getpid());
	if (pipe(ready) != 0 || pipe(port_pipe) != 0) {
		perror("pipe");
		return 1;
	}

	/*
	 * Fork the work host before this process opens anything: it inherits
	 * no bus handle, no socket and no library thread of ours.
	 */
	fflush(stdout);
	host = fork();
	if (host < 0) {
		perror("fork");
		return 1;
	}
	if (host == 0) {
		close(ready[0]);
		close(port_pipe[1]);
		int status = work_host(work_url, port_pipe[0], ready[1]);
		fflush(stdout);
		_exit(status);
	}
	close(ready[1]);
	close(port_pipe[0]);

	err = msgbus_open(&bus, post_url, NULL);
	if (err != MSGBUS_OK) {
		fprintf(stderr, "open %s: %s\n", post_url, msgbus_strerror(err));
		bus = NULL;
		failed = 1;
	} else if ((err = msgbus_listen(bus, "tcp://127.0.0.1:0", &port)) != MSGBUS_OK) {
		/* Port 0: the system picks a free port; msgbus_listen says which. */
		fprintf(stderr, "listen: %s\n", msgbus_strerror(err));
		failed = 1;
	} else if (write(port_pipe[1], &port, sizeof port) != (ssize_t)sizeof port) {
		perror("write port pipe");
		failed = 1;
	}
	close(port_pipe[1]); /* on failure, the work host sees EOF and gives up */

	/* One byte per worker that has subscribed. */
	while (!failed && nready < NWORKERS) {
		char c;
		ssize_t n = read(ready[0], &c, 1);
		if (n == 1)
			nready++;
		else if (n < 0 && errno == EINTR)
			continue;
		else
			break; /* EOF: a worker exited before it subscribed */
	}
	close(ready[0]);

	/*
	 * That the workers subscribed on their bus is not yet known here:
	 * publish once the link has told this bus what the other one wants.
	 * Until then a post would be published for nobody.
	 */
	if (!failed && nready == NWORKERS && wait_for_interest(bus) == 0) {
		for (size_t i = 0; i < NPOSTS; i++) {
			err = msgbus_publish(bus, SUBJECT, posts[i], strlen(posts[i]),
			                     PUBLISH_TIMEOUT_MS);
			if (err != MSGBUS_OK) {
				fprintf(stderr, "publish post %zu: %s\n", i + 1,
				        msgbus_strerror(err));
				failed = 1;
				break;
			}
			published++;
		}
	} else {
		if (!failed && nready != NWORKERS)
			fprintf(stderr, "only %d of %d workers got ready\n", nready, NWORKERS);
		failed = 1;
	}

	if (waitpid(host, &status, 0) < 0)
		perror("waitpid");
	else if (WIFEXITED(status) && WEXITSTATUS(status) <= NWORKERS)
		nok = NWORKERS - WEXITSTATUS(status);
	else
		fprintf(stderr, "work host failed (status 0x%x)\n", (unsigned)status);
	printf("post service: published %zu posts over tcp, %d of %d workers ok\n", published,
	       nok, NWORKERS);

	/* Closing stops the listener; /dev/shm/msgbus.bridge-post-PID goes. */
	if (bus && (err = msgbus_close(bus)) != MSGBUS_OK) {
		fprintf(stderr, "close: %s\n", msgbus_strerror(err));
		failed = 1;
	}
	return failed || nok != NWORKERS ? 1 : 0;
}
