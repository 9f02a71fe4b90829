/*
 * order.c - request/reply between two processes.
 *
 * The parent plays an "order service". Before it confirms an order it asks
 * a forked "inventory service" whether the goods are in stock, with a
 * request on the service name "inventory.check". The inventory service
 * keeps a small stock table, answers "in stock" (and reserves the goods)
 * or "out of stock: need N have M", and stops when it gets a "shutdown"
 * request. Run it with no arguments; it exits 0 when every order got an
 * answer.
 *
 *   cc -std=c11 -D_GNU_SOURCE order.c -lmsgbus -o order && ./order
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "msgbus.h"

#define SERVICE "inventory.check"
#define REQUEST_TIMEOUT_MS 1000 /* the order service's deadline per request */
#define POLL_MS 1000            /* the inventory wakes up this often */

/* The inventory's stock; only the inventory process uses it. */
static struct stock {
	const char *item;
	unsigned have;
} stock[] = {
	{ "widget", 10 },
	{ "gadget", 4 },
	{ "gizmo", 1 },
};
#define NSTOCK (sizeof stock / sizeof stock[0])

/* The orders the order service places, in this order. */
static const struct order {
	unsigned quantity;
	const char *item;
} orders[] = {
	{ 2, "widget" },
	{ 1, "gizmo" },
	{ 9, "gadget" },
	{ 4, "gadget" },
};
#define NORDERS (sizeof orders / sizeof orders[0])

/*
 * Answers one request. Requests are text: "ITEM QUANTITY" or "shutdown".
 * The payload is exactly msgbus_req_len() bytes, not a C string, so it is
 * copied into a NUL-terminated buffer before it is parsed.
 */
static void answer(const msgbus_req *req, char *reply, size_t size,
                   int *shutdown)
{
	char text[128], item[64];
	size_t len = msgbus_req_len(req);
	unsigned quantity;

	if (len >= sizeof text) {
		snprintf(reply, size, "bad request: too long");
		return;
	}
	memcpy(text, msgbus_req_data(req), len);
	text[len] = '\0';

	if (strcmp(text, "shutdown") == 0) {
		*shutdown = 1;
		snprintf(reply, size, "bye");
		return;
	}
	if (sscanf(text, "%63s %u", item, &quantity) != 2) {
		snprintf(reply, size, "bad request: \"%.64s\"", text);
		return;
	}
	for (size_t i = 0; i < NSTOCK; i++) {
		if (strcmp(stock[i].item, item) != 0)
			continue;
		if (quantity <= stock[i].have) {
			stock[i].have -= quantity; /* reserved for this order */
			snprintf(reply, size, "in stock");
		} else {
			snprintf(reply, size, "out of stock: need %u have %u",
			         quantity, stock[i].have);
		}
		return;
	}
	snprintf(reply, size, "out of stock: unknown item %s", item);
}

/* The inventory service process; returns its exit status. */
static int inventory(const char *url, int ready_fd)
{
	msgbus_bus *bus;
	msgbus_service *svc;
	msgbus_req *req;
	pid_t parent = getppid();
	int err, shutdown = 0, ok = 1;

	/* A forked child opens its own handle; it never uses the parent's. */
	err = msgbus_open(&bus, url, NULL);
	if (err != MSGBUS_OK) {
		fprintf(stderr, "inventory: open %s: %s\n", url,
		        msgbus_strerror(err));
		return 1;
	}
	/* cb NULL: this process takes requests itself with
	 * msgbus_service_recv() rather than on a library thread. */
	err = msgbus_serve(bus, SERVICE, NULL, NULL, &svc);
	if (err != MSGBUS_OK) {
		fprintf(stderr, "inventory: serve %s: %s\n", SERVICE,
		        msgbus_strerror(err));
		msgbus_close(bus);
		return 1;
	}

	/*
	 * From now on requests for SERVICE reach us (before, they fail at
	 * once with MSGBUS_ENORESPONDERS): tell the order service.
	 */
	if (write(ready_fd, "r", 1) != 1) {
		perror("inventory: write ready pipe");
		msgbus_close(bus);
		return 1;
	}
	close(ready_fd);

	while (!shutdown) {
		char reply[128];

		err = msgbus_service_recv(svc, &req, POLL_MS);
		if (err == MSGBUS_ETIMEDOUT) {
			/* Nothing to do. Stop if the order service is gone
			 * (we were reparented) instead of waiting forever. */
			if (getppid() != parent) {
				fprintf(stderr, "inventory: order service "
				                "gone, stopping\n");
				ok = 0;
				break;
			}
			continue;
		}
		if (err != MSGBUS_OK) {
			fprintf(stderr, "inventory: recv: %s\n",
			        msgbus_strerror(err));
			ok = 0;
			break;
		}
		answer(req, reply, sizeof reply, &shutdown);
		/* msgbus_respond() always frees req, whatever it returns. */
		err = msgbus_respond(req, reply, strlen(reply));
		if (err == MSGBUS_ETIMEDOUT) {
			/* The requester gave up before we answered: the
			 * reply is dropped. Not fatal for a server. */
			fprintf(stderr, "inventory: reply \"%s\" dropped: %s\n",
			        reply, msgbus_strerror(err));
		} else if (err != MSGBUS_OK) {
			fprintf(stderr, "inventory: respond: %s\n",
			        msgbus_strerror(err));
			ok = 0;
		}
	}

	/* Everything taken has been answered: now we may stop serving. */
	err = msgbus_unserve(svc);
	if (err != MSGBUS_OK) {
		fprintf(stderr, "inventory: unserve: %s\n",
		        msgbus_strerror(err));
		ok = 0;
	}
	err = msgbus_close(bus);
	if (err != MSGBUS_OK) {
		fprintf(stderr, "inventory: close: %s\n", msgbus_strerror(err));
		ok = 0;
	}
	return ok ? 0 : 1;
}

/*
 * Sends one request and copies the text of the reply into out.
 * Returns MSGBUS_OK or the error of msgbus_request().
 */
static int ask(msgbus_bus *bus, const char *request, char *out, size_t size)
{
	msgbus_msg *reply;
	int err = msgbus_request(bus, SERVICE, request, strlen(request),
	                         &reply, REQUEST_TIMEOUT_MS);
	if (err != MSGBUS_OK)
		return err;
	/* The reply is ours until msgbus_msg_release(), which frees it. */
	size_t len = msgbus_msg_len(reply);
	if (len >= size)
		len = size - 1;
	memcpy(out, msgbus_msg_data(reply), len);
	out[len] = '\0';
	msgbus_msg_release(reply);
	return MSGBUS_OK;
}

int main(void)
{
	char url[64];
	msgbus_bus *bus;
	pid_t pid;
	int ready[2], err, failed = 0, status = 0;
	unsigned confirmed = 0, rejected = 0;
	ssize_t r;
	char c;

	/* The pid in the name keeps concurrent runs on separate buses. */
	snprintf(url, sizeof url, "shm://order-%ld", (long)getpid());

	/* Open (and so create) the bus before the inventory starts, so it
	 * lives for the whole run. */
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

	fflush(stdout); /* else the child would print our buffered output too */
	pid = fork();
	if (pid < 0) {
		perror("fork");
		msgbus_close(bus);
		return 1;
	}
	if (pid == 0) {
		/* Child. It never touches the parent's `bus`; _exit skips
		 * the atexit handlers inherited from the parent. */
		close(ready[0]);
		int st = inventory(url, ready[1]);
		fflush(stdout);
		_exit(st);
	}
	close(ready[1]); /* so read() sees EOF if the inventory dies first */

	do
		r = read(ready[0], &c, 1);
	while (r < 0 && errno == EINTR);
	close(ready[0]);

	if (r != 1) {
		fprintf(stderr, "the inventory service did not get ready\n");
		failed = 1;
	}

	for (size_t i = 0; i < NORDERS && !failed; i++) {
		const struct order *o = &orders[i];
		char request[128], answer_text[128];

		snprintf(request, sizeof request, "%s %u", o->item,
		         o->quantity);
		err = ask(bus, request, answer_text, sizeof answer_text);
		if (err != MSGBUS_OK) {
			/* ENORESPONDERS: the inventory is not running;
			 * ETIMEDOUT: it did not answer within 1 s;
			 * EPEERDIED: it died while handling our request. */
			printf("order %zu: %u x %s -> rejected (inventory: "
			       "%s)\n",
			       i + 1, o->quantity, o->item,
			       msgbus_strerror(err));
			rejected++;
			failed = 1;
		} else if (strcmp(answer_text, "in stock") == 0) {
			printf("order %zu: %u x %s -> confirmed\n", i + 1,
			       o->quantity, o->item);
			confirmed++;
		} else {
			printf("order %zu: %u x %s -> rejected (%s)\n", i + 1,
			       o->quantity, o->item, answer_text);
			rejected++;
		}
	}

	/* Stop the inventory: ask it to shut down, and if that does not
	 * work, terminate it. Either way, wait for it. */
	if (r == 1) {
		char bye[16];
		err = ask(bus, "shutdown", bye, sizeof bye);
		if (err != MSGBUS_OK) {
			fprintf(stderr, "shutdown request: %s; sending "
			                "SIGTERM\n",
			        msgbus_strerror(err));
			kill(pid, SIGTERM);
			failed = 1;
		}
	}
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			perror("waitpid");
			failed = 1;
			break;
		}
	}
	if (!failed && (!WIFEXITED(status) || WEXITSTATUS(status) != 0)) {
		fprintf(stderr, "inventory service failed (status 0x%x)\n",
		        (unsigned)status);
		failed = 1;
	}

	printf("orders: %u confirmed, %u rejected\n", confirmed, rejected);

	/* The last handle to close unlinks /dev/shm/msgbus.order-PID. */
	err = msgbus_close(bus);
	if (err != MSGBUS_OK) {
		fprintf(stderr, "close: %s\n", msgbus_strerror(err));
		failed = 1;
	}
	return failed;
}
