/*
 * report.c - several publishers, one wildcard subscriber.
 *
 * Three forked "services" (orders, customers, products) publish change
 * events such as "orders.created" or "products.updated". A forked
 * "reporting" process subscribes to all of them with one wildcard pattern
 * and prints an aggregate once it has seen every event. Run it with no
 * arguments; it exits 0 when the report is complete.
 *
 *   cc -std=c11 -D_GNU_SOURCE report.c -lmsgbus -o report && ./report
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "msgbus.h"

#define TIMEOUT_MS 5000 /* bound every wait so a lost peer cannot hang us */

/*
 * The payload type follows from the subject: orders and products carry a
 * struct change, customers.created carries the customer's name as text.
 * Raw structs are fine here because every process is the same binary on the
 * same host; use a fixed encoding if that may not hold.
 */
struct change {
	uint32_t id;
	int32_t amount; /* orders: cents (a delta for updates); products: units */
};

enum { ORDERS, CUSTOMERS, PRODUCTS, NSERVICES };
static const char *const service_names[NSERVICES] = {
	"orders", "customers", "products"
};

/* Every event of the run, and which service publishes it. */
static const struct event {
	int service;
	const char *subject;
	struct change change; /* when name is NULL */
	const char *name;     /* text payload otherwise */
} events[] = {
	{ ORDERS, "orders.created", { 1, 1999 }, NULL },
	{ ORDERS, "orders.created", { 2, 2500 }, NULL },
	{ ORDERS, "orders.updated", { 1, 500 }, NULL },
	{ ORDERS, "orders.created", { 3, 450 }, NULL },
	{ ORDERS, "orders.created", { 4, 5390 }, NULL },
	{ ORDERS, "orders.updated", { 3, -250 }, NULL },
	{ CUSTOMERS, "customers.created", { 0, 0 }, "alice" },
	{ CUSTOMERS, "customers.created", { 0, 0 }, "bob" },
	{ CUSTOMERS, "customers.created", { 0, 0 }, "carol" },
	{ PRODUCTS, "products.updated", { 7, 12 }, NULL },
	{ PRODUCTS, "products.updated", { 9, 5 }, NULL },
};
#define NEVENTS (sizeof events / sizeof events[0])

/* A service process: publishes its own events, in table order. */
static int service(const char *url, int which)
{
	const char *me = service_names[which];
	msgbus_bus *bus;
	int err, status = 0;

	err = msgbus_open(&bus, url, NULL);
	if (err != MSGBUS_OK) {
		fprintf(stderr, "%s: open %s: %s\n", me, url,
		        msgbus_strerror(err));
		return 1;
	}
	for (size_t i = 0; i < NEVENTS; i++) {
		const struct event *ev = &events[i];
		if (ev->service != which)
			continue;
		if (ev->name)
			err = msgbus_publish(bus, ev->subject, ev->name,
			                     strlen(ev->name), TIMEOUT_MS);
		else
			err = msgbus_publish(bus, ev->subject, &ev->change,
			                     sizeof ev->change, TIMEOUT_MS);
		if (err != MSGBUS_OK) {
			fprintf(stderr, "%s: publish %s: %s\n", me, ev->subject,
			        msgbus_strerror(err));
			status = 1;
			break;
		}
	}
	err = msgbus_close(bus);
	if (err != MSGBUS_OK) {
		fprintf(stderr, "%s: close: %s\n", me, msgbus_strerror(err));
		status = 1;
	}
	return status;
}

/* The reporting process: counts everything, then prints the report. */
static int reporter(const char *url, int ready_fd)
{
	unsigned orders_created = 0, orders_updated = 0, customers = 0,
	         products_updated = 0, bad = 0;
	long order_cents = 0, stock = 0;
	char names[128] = "";
	msgbus_bus *bus;
	msgbus_sub *sub;
	msgbus_msg *msg;
	size_t n;
	int err;

	err = msgbus_open(&bus, url, NULL);
	if (err != MSGBUS_OK) {
		fprintf(stderr, "report: open %s: %s\n", url,
		        msgbus_strerror(err));
		return 1;
	}
	/* "*.*" matches any two-token subject ("orders.created", ...); ">"
	 * would match every subject, however many tokens it has. */
	err = msgbus_subscribe(bus, "*.*", 0, &sub);
	if (err != MSGBUS_OK) {
		fprintf(stderr, "report: subscribe: %s\n", msgbus_strerror(err));
		msgbus_close(bus);
		return 1;
	}
	/* Subscribed: only now may the services start, or we could miss
	 * their first events. */
	if (write(ready_fd, "r", 1) != 1) {
		perror("report: write ready pipe");
		msgbus_close(bus);
		return 1;
	}
	close(ready_fd);

	for (n = 0; n < NEVENTS; n++) {
		err = msgbus_recv(sub, &msg, TIMEOUT_MS);
		if (err != MSGBUS_OK) {
			fprintf(stderr, "report: recv after %zu events: %s\n", n,
			        msgbus_strerror(err));
			bad++;
			break;
		}
		const char *subject = msgbus_msg_subject(msg);
		const void *data = msgbus_msg_data(msg);
		size_t len = msgbus_msg_len(msg);
		struct change c = { 0, 0 };

		/* memcpy, not a cast: the data has no alignment guarantee. */
		if (len == sizeof c)
			memcpy(&c, data, sizeof c);

		if (strcmp(subject, "orders.created") == 0 && len == sizeof c) {
			orders_created++;
			order_cents += c.amount;
		} else if (strcmp(subject, "orders.updated") == 0 &&
		           len == sizeof c) {
			orders_updated++;
			order_cents += c.amount;
		} else if (strcmp(subject, "products.updated") == 0 &&
		           len == sizeof c) {
			products_updated++;
			stock += c.amount;
		} else if (strcmp(subject, "customers.created") == 0) {
			/* One publisher, so its events arrive in order. */
			size_t used = strlen(names);
			snprintf(names + used, sizeof names - used, "%s%.*s",
			         customers ? ", " : "", (int)len,
			         len ? (const char *)data : "");
			customers++;
		} else {
			fprintf(stderr, "report: unexpected %s (%zu bytes)\n",
			        subject, len);
			bad++;
		}
		msgbus_msg_release(msg);
	}

	/* Totals do not depend on how the services' events interleaved, so
	 * the output is the same on every run. */
	printf("orders: %u created, %u updated, total %ld cents\n",
	       orders_created, orders_updated, order_cents);
	printf("customers: %u created (%s)\n", customers, names);
	printf("products: %u updated, stock %+ld\n", products_updated, stock);
	printf("report: %zu events\n", n);

	err = msgbus_close(bus); /* also ends the subscription */
	if (err != MSGBUS_OK) {
		fprintf(stderr, "report: close: %s\n", msgbus_strerror(err));
		bad++;
	}
	return bad || n != NEVENTS ? 1 : 0;
}

/* Runs fn(url, arg) in a child process; returns its pid, or -1. */
static pid_t spawn(int (*fn)(const char *, int), const char *url, int arg)
{
	fflush(stdout); /* else the child would print our buffered output too */
	pid_t pid = fork();
	if (pid == 0) {
		/* The child opens its own bus handle inside fn; _exit skips
		 * atexit handlers inherited from the parent. */
		int status = fn(url, arg);
		fflush(stdout);
		_exit(status);
	}
	if (pid < 0)
		perror("fork");
	return pid;
}

int main(void)
{
	char url[64];
	pid_t pids[1 + NSERVICES];
	int ready[2], nforked = 0, failed = 0;
	char c;
	ssize_t r;

	/* The pid in the name keeps concurrent runs on separate buses. The
	 * first process to open it creates it, the last to close removes it. */
	snprintf(url, sizeof url, "shm://report-%ld", (long)getpid());

	if (pipe(ready) != 0) {
		perror("pipe");
		return 1;
	}
	pids[nforked] = spawn(reporter, url, ready[1]);
	if (pids[nforked] < 0)
		return 1;
	nforked++;
	close(ready[1]); /* so read() sees EOF if the reporter dies first */

	do
		r = read(ready[0], &c, 1);
	while (r < 0 && errno == EINTR);
	close(ready[0]);

	if (r != 1) {
		fprintf(stderr, "the reporting process did not get ready\n");
		failed = 1;
	} else {
		for (int s = 0; s < NSERVICES; s++) {
			pids[nforked] = spawn(service, url, s);
			if (pids[nforked] < 0) {
				failed = 1;
				break;
			}
			nforked++;
		}
	}

	for (int i = 0; i < nforked; i++) {
		int status;
		if (waitpid(pids[i], &status, 0) < 0) {
			perror("waitpid");
			failed = 1;
		} else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			fprintf(stderr, "%s process failed (status 0x%x)\n",
			        i == 0 ? "reporting" : service_names[i - 1],
			        (unsigned)status);
			failed = 1;
		}
	}
	return failed;
}
