/*
 * auth.c - request/reply under a deadline, and what to do when it fails.
 *
 * The parent plays an API gateway: for each incoming call it asks an "auth
 * service" whether the caller's token is valid, with a request on the
 * service name "auth.verify" and a deadline of 50 ms. Whatever goes wrong,
 * the gateway answers the call and goes on:
 *   - before the auth service runs, msgbus_request() fails at once with
 *     MSGBUS_ENORESPONDERS (nobody serves the name);
 *   - once it runs (a forked process that takes requests on a library
 *     thread), valid tokens are accepted and unknown ones rejected;
 *   - the auth service is deliberately slow (200 ms) for tokens "slow-...":
 *     the gateway gets MSGBUS_ETIMEDOUT at its 50 ms deadline, and the
 *     service's late reply is dropped (msgbus_respond says ETIMEDOUT).
 * The gateway stops the auth service with SIGTERM. Run it with no
 * arguments; it exits 0 when every token got its verdict.
 *
 *   cc -std=c11 -D_GNU_SOURCE -pthread auth.c -lmsgbus -o auth && ./auth
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "msgbus.h"

#define SERVICE "auth.verify"
#define DEADLINE_MS 50 /* the gateway's deadline for each verification */
#define SLOW_MS 200    /* how long the auth service takes for "slow-..." */

/* ---- the auth service (a forked process) ------------------------------ */

/* The tokens the auth service knows, and whose they are. */
static const struct {
	const char *token;
	const char *user;
} valid_tokens[] = {
	{ "alice-123", "alice" },
	{ "bob-456", "bob" },
	{ "carol-789", "carol" },
	{ "slow-dave", "dave" },
};
#define NVALID (sizeof valid_tokens / sizeof valid_tokens[0])

/*
 * State shared by the service's callback (on a library thread) and its main
 * thread, which must not unserve while a callback is still answering.
 */
struct auth_state {
	pthread_mutex_t lock;
	pthread_cond_t idle;
	unsigned busy;     /* callbacks running now */
	unsigned answered; /* requests handled */
	unsigned late;     /* replies dropped: the gateway had given up */
	unsigned failed;   /* msgbus_respond errors other than that */
};

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Called on the library's thread for each request; owns req. */
static void verify_cb(msgbus_req *req, void *arg)
{
	struct auth_state *st = arg;
	char token[64], reply[80];
	size_t len = msgbus_req_len(req);
	int err;

	pthread_mutex_lock(&st->lock);
	st->busy++;
	pthread_mutex_unlock(&st->lock);

	/* The payload is len bytes, not a C string. */
	if (len >= sizeof token)
		len = sizeof token - 1;
	memcpy(token, msgbus_req_data(req), len);
	token[len] = '\0';

	snprintf(reply, sizeof reply, "invalid");
	for (size_t i = 0; i < NVALID; i++)
		if (strcmp(token, valid_tokens[i].token) == 0)
			snprintf(reply, sizeof reply, "valid %s",
			         valid_tokens[i].user);
	if (strncmp(token, "slow-", 5) == 0)
		sleep_ms(SLOW_MS); /* e.g. a slow database lookup */

	/* Always frees req. ETIMEDOUT: the requester stopped waiting, the
	 * reply is dropped; the service never blocks on a gateway. */
	err = msgbus_respond(req, reply, strlen(reply));

	pthread_mutex_lock(&st->lock);
	st->answered++;
	if (err == MSGBUS_ETIMEDOUT)
		st->late++;
	else if (err != MSGBUS_OK)
		st->failed++;
	st->busy--;
	pthread_cond_signal(&st->idle);
	pthread_mutex_unlock(&st->lock);
	if (err != MSGBUS_OK && err != MSGBUS_ETIMEDOUT)
		fprintf(stderr, "auth: respond: %s\n", msgbus_strerror(err));
}

/* The auth service process; returns its exit status. */
static int auth_service(const char *url, int ready_fd)
{
	struct auth_state st = { PTHREAD_MUTEX_INITIALIZER,
		                 PTHREAD_COND_INITIALIZER, 0, 0, 0, 0 };
	pid_t parent = getppid();
	msgbus_bus *bus;
	msgbus_service *svc;
	sigset_t stop;
	int err, ok = 1;

	/*
	 * SIGTERM is taken with sigwait() below. Block it before the library
	 * starts its callback thread, which inherits this signal mask, so
	 * the signal can only ever be delivered to our sigwait().
	 */
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	pthread_sigmask(SIG_BLOCK, &stop, NULL);

	err = msgbus_open(&bus, url, NULL);
	if (err != MSGBUS_OK) {
		fprintf(stderr, "auth: open %s: %s\n", url,
		        msgbus_strerror(err));
		return 1;
	}
	/* With a callback, a library thread takes the requests. */
	err = msgbus_serve(bus, SERVICE, verify_cb, &st, &svc);
	if (err != MSGBUS_OK) {
		fprintf(stderr, "auth: serve %s: %s\n", SERVICE,
		        msgbus_strerror(err));
		msgbus_close(bus);
		return 1;
	}
	/* Requests reach us from now on: tell the gateway. */
	if (write(ready_fd, "r", 1) != 1) {
		perror("auth: write ready pipe");
		msgbus_close(bus);
		return 1;
	}
	close(ready_fd);

	for (;;) {
		struct timespec poll = { 1, 0 };
		int sig = sigtimedwait(&stop, NULL, &poll);
		if (sig == SIGTERM || sig == SIGINT)
			break;
		if (sig < 0 && errno == EAGAIN && getppid() != parent) {
			fprintf(stderr, "auth: gateway gone, stopping\n");
			ok = 0;
			break;
		}
	}

	/* Unserve only once every request taken has been answered. */
	pthread_mutex_lock(&st.lock);
	while (st.busy > 0)
		pthread_cond_wait(&st.idle, &st.lock);
	pthread_mutex_unlock(&st.lock);
	err = msgbus_unserve(svc);
	if (err != MSGBUS_OK) {
		fprintf(stderr, "auth: unserve: %s\n", msgbus_strerror(err));
		ok = 0;
	}
	err = msgbus_close(bus);
	if (err != MSGBUS_OK) {
		fprintf(stderr, "auth: close: %s\n", msgbus_strerror(err));
		ok = 0;
	}
	/* The callback thread is joined: its counts are final. */
	printf("auth service: %u requests, late replies dropped: %u\n",
	       st.answered, st.late);
	return ok && st.failed == 0 ? 0 : 1;
}

/* ---- the gateway (the parent) ----------------------------------------- */

static unsigned accepted, rejected;

/* Verifies one token with the auth service and prints the verdict. */
static void gateway_call(msgbus_bus *bus, const char *token)
{
	msgbus_msg *reply;
	int err = msgbus_request(bus, SERVICE, token, strlen(token), &reply,
	                         DEADLINE_MS);

	if (err == MSGBUS_OK) {
		const char *text = msgbus_msg_data(reply);
		size_t len = msgbus_msg_len(reply);
		int valid = len >= 6 && memcmp(text, "valid ", 6) == 0;

		msgbus_msg_release(reply); /* frees the reply */
		if (valid) {
			printf("token %s: accepted\n", token);
			accepted++;
		} else {
			printf("token %s: rejected (invalid token)\n", token);
			rejected++;
		}
		return;
	}

	/* No verdict: fail closed, but say why. */
	fprintf(stderr, "gateway: %s %s: %s\n", SERVICE, token,
	        msgbus_strerror(err));
	rejected++;
	switch (err) {
	case MSGBUS_ENORESPONDERS: /* nobody serves the name (yet) */
		printf("token %s: auth unavailable (no responders), "
		       "rejected\n",
		       token);
		break;
	case MSGBUS_ETIMEDOUT: /* no answer before the deadline */
		printf("token %s: rejected (auth timed out)\n", token);
		break;
	case MSGBUS_EPEERDIED: /* the worker died with our request */
		printf("token %s: rejected (auth service died)\n", token);
		break;
	default:
		printf("token %s: rejected (auth error: %s)\n", token,
		       msgbus_strerror(err));
		break;
	}
}

int main(void)
{
	/* Tokens presented while the auth service runs; "slow-" ones make it
	 * miss the deadline, so that one comes last. */
	static const char *const tokens[] = {
		"alice-123", "bob-456", "mallory-000", "carol-789", "slow-dave",
	};
	char url[64];
	msgbus_bus *bus;
	pid_t pid;
	int ready[2], err, failed = 0, status = 0;
	ssize_t r;
	char c;

	/* Whole lines as they come, so that the auth service's line lands
	 * where it happens even when stdout is a pipe or a file. */
	setvbuf(stdout, NULL, _IOLBF, 0);

	snprintf(url, sizeof url, "shm://auth-%ld", (long)getpid());
	err = msgbus_open(&bus, url, NULL);
	if (err != MSGBUS_OK) {
		fprintf(stderr, "open %s: %s\n", url, msgbus_strerror(err));
		return 1;
	}

	/* (a) Nobody serves auth.verify yet: the request fails at once. */
	gateway_call(bus, "alice-123");

	/* (b) Start the auth service. */
	if (pipe(ready) != 0) {
		perror("pipe");
		msgbus_close(bus);
		return 1;
	}
	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		perror("fork");
		msgbus_close(bus);
		return 1;
	}
	if (pid == 0) {
		/* Child: its own handle, never the parent's `bus`. */
		close(ready[0]);
		int st = auth_service(url, ready[1]);
		fflush(stdout);
		_exit(st);
	}
	close(ready[1]);
	do
		r = read(ready[0], &c, 1);
	while (r < 0 && errno == EINTR);
	close(ready[0]);
	if (r != 1) {
		fprintf(stderr, "the auth service did not get ready\n");
		failed = 1;
	} else {
		printf("gateway: auth service is up\n");
		/* (b) and (c) */
		for (size_t i = 0; i < sizeof tokens / sizeof tokens[0]; i++)
			gateway_call(bus, tokens[i]);
	}

	/* Stop the auth service and wait for it. */
	if (kill(pid, SIGTERM) != 0 && errno != ESRCH) {
		perror("kill");
		failed = 1;
	}
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			perror("waitpid");
			failed = 1;
			break;
		}
	}
	if (!failed && (!WIFEXITED(status) || WEXITSTATUS(status) != 0)) {
		fprintf(stderr, "auth service failed (status 0x%x)\n",
		        (unsigned)status);
		failed = 1;
	}

	printf("gateway: %u accepted, %u rejected\n", accepted, rejected);

	err = msgbus_close(bus); /* the last close unlinks the segment */
	if (err != MSGBUS_OK) {
		fprintf(stderr, "close: %s\n", msgbus_strerror(err));
		failed = 1;
	}
	return failed;
}
