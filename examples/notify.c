/*
 * notify.c - one publisher process, two subscriber processes.
 *
 * The parent plays a "post service": it publishes every new post on the
 * subject "posts.created". Two forked "notification workers" subscribe to
 * that subject and print each post they get. Run it with no arguments; it
 * exits 0 when both workers received every post, in order.
 *
 *   cc -std=c11 -D_GNU_SOURCE notify.c -lmsgbus -o notify && ./notify
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "msgbus.h"

#define NWORKERS 2
#define SUBJECT "posts.created"
#define RECV_TIMEOUT_MS 5000 /* a worker gives up rather than hang forever */

/* The posts the service publishes; the workers check them against this. */
static const char *const posts[] = {
	"hello from alice",
	"bob shared a photo",
	"carol joined the team",
	"dave: lunch at noon?",
	"erin liked your post",
};
#define NPOSTS (sizeof posts / sizeof posts[0])

/* One notification worker; returns the process exit status. */
static int worker(int id, const char *url, int ready_fd)
{
	msgbus_bus *bus;
	msgbus_sub *sub;
	msgbus_msg *msg;
	size_t got = 0;
	int err, ok = 1;

	/*
	 * A forked child opens its own handle: the parent's handle has
	 * process-local state (threads, locks) that fork() does not carry over
	 * in a usable way. The bus already exists, so this attaches to it.
	 */
	err = msgbus_open(&bus, url, NULL);
	if (err != MSGBUS_OK) {
		fprintf(stderr, "worker %d: open %s: %s\n", id, url,
		        msgbus_strerror(err));
		return 1;
	}
	/* flags 0 = lossless: the publisher waits for us rather than drop. */
	err = msgbus_subscribe(bus, SUBJECT, 0, &sub);
	if (err != MSGBUS_OK) {
		fprintf(stderr, "worker %d: subscribe: %s\n", id,
		        msgbus_strerror(err));
		msgbus_close(bus);
		return 1;
	}

	/*
	 * Only messages published after subscribe() returned are delivered, so
	 * tell the parent now (and not before) that it may start publishing.
	 */
	if (write(ready_fd, "r", 1) != 1) {
		perror("worker: write ready pipe");
		msgbus_close(bus);
		return 1;
	}
	close(ready_fd);

	while (got < NPOSTS) {
		err = msgbus_recv(sub, &msg, RECV_TIMEOUT_MS);
		if (err != MSGBUS_OK) {
			fprintf(stderr, "worker %d: recv after %zu posts: %s\n",
			        id, got, msgbus_strerror(err));
			ok = 0;
			break;
		}
		/* The payload is exactly len bytes, not a C string: no NUL. */
		const char *text = msgbus_msg_data(msg);
		size_t len = msgbus_msg_len(msg);
		const char *want = posts[got];

		got++;
		printf("worker %d got post %zu: \"%.*s\"\n", id, got, (int)len,
		       len ? text : "");
		if (len != strlen(want) || memcmp(text, want, len) != 0) {
			fprintf(stderr, "worker %d: post %zu: expected \"%s\"\n",
			        id, got, want);
			ok = 0;
		}
		/* Release at once: a lossless subscriber that holds slots
		 * eventually makes the publisher wait. */
		msgbus_msg_release(msg);
	}
	printf("worker %d received %zu posts\n", id, got);

	err = msgbus_unsubscribe(sub);
	if (err != MSGBUS_OK) {
		fprintf(stderr, "worker %d: unsubscribe: %s\n", id,
		        msgbus_strerror(err));
		ok = 0;
	}
	err = msgbus_close(bus);
	if (err != MSGBUS_OK) {
		fprintf(stderr, "worker %d: close: %s\n", id,
		        msgbus_strerror(err));
		ok = 0;
	}
	return ok ? 0 : 1;
}

int main(void)
{
	char url[64];
	msgbus_bus *bus;
	pid_t pids[NWORKERS];
	int ready[2], nforked = 0, nready = 0, nok = 0, failed = 0, err;
	size_t published = 0;

	/* The pid in the name keeps concurrent runs on separate buses. */
	snprintf(url, sizeof url, "shm://notify-%ld", (long)getpid());

	/* Open (and so create) the bus first: it then lives for the whole run,
	 * whichever worker starts or stops first. */
	err = msgbus_open(&bus, url, NULL);
	if (err != MSGBUS_OK) {
		fprintf(stderr, "open %s: %s\n", url, msgbus_strerror(err));
		return 1;
	}
	if (pipe(ready) != 0) {
		perror("pipe");
		msgbus_close(bus);
		return 1;
	}

	fflush(stdout); /* else each child would print our buffered output again */
	for (int i = 0; i < NWORKERS; i++) {
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork");
			failed = 1;
			break;
		}
		if (pid == 0) {
			/* Child. It never touches the parent's `bus`. */
			close(ready[0]);
			setvbuf(stdout, NULL, _IOLBF, 0); /* whole lines, as they come */
			int status = worker(i + 1, url, ready[1]);
			fflush(stdout);
			/* _exit, not exit: no atexit handlers inherited from the
			 * parent must run in the child. */
			_exit(status);
		}
		pids[nforked++] = pid;
	}
	/* Close our write end so read() sees EOF if every worker died. */
	close(ready[1]);

	/* One byte per worker that has subscribed. */
	while (nready < nforked) {
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

	if (!failed && nready == NWORKERS) {
		for (size_t i = 0; i < NPOSTS; i++) {
			/* -1: wait as long as a (live) subscriber needs to
			 * make room; the bus never loses a lossless message. */
			err = msgbus_publish(bus, SUBJECT, posts[i],
			                     strlen(posts[i]), -1);
			if (err != MSGBUS_OK) {
				fprintf(stderr, "publish post %zu: %s\n", i + 1,
				        msgbus_strerror(err));
				failed = 1;
				break;
			}
			published++;
		}
	} else {
		fprintf(stderr, "only %d of %d workers got ready\n", nready,
		        NWORKERS);
		failed = 1;
	}

	for (int i = 0; i < nforked; i++) {
		int status;
		if (waitpid(pids[i], &status, 0) < 0)
			perror("waitpid");
		else if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
			nok++;
		else
			fprintf(stderr, "worker %d failed (status 0x%x)\n", i + 1,
			        (unsigned)status);
	}
	printf("post service: published %zu posts, %d of %d workers ok\n",
	       published, nok, NWORKERS);

	/* The last handle to close unlinks /dev/shm/msgbus.notify-PID. */
	err = msgbus_close(bus);
	if (err != MSGBUS_OK) {
		fprintf(stderr, "close: %s\n", msgbus_strerror(err));
		failed = 1;
	}
	return failed || nok != NWORKERS ? 1 : 0;
}
