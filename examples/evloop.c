/*
 * evloop.c - one poll() loop serves a service and two subscriptions.
 *
 * The parent subscribes to "orders.>" and "stock.*", serves
 * "prices.quote", and waits on all three with poll(2): no thread per
 * subscription, no callbacks. A forked "shop" process publishes orders and
 * stock updates; a forked "client" asks for quotes. The descriptors are
 * level-triggered: readable while a receive would not wait, so after each
 * event the loop receives with a timeout of 0 until MSGBUS_EAGAIN. The
 * same descriptors go into epoll, libuv or libevent unchanged.
 *
 *   cc -std=c11 -D_GNU_SOURCE evloop.c -lmsgbus -o evloop && ./evloop
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "msgbus.h"

#define NORDERS 3
#define NSTOCK 2
#define NQUOTES 3
#define POLL_TIMEOUT_MS 10000 /* give up rather than hang forever */

static const char *const items[NQUOTES] = { "widget", "gizmo", "gadget" };
static const int prices[NQUOTES] = { 250, 1200, 75 };

/* The shop: publishes orders and stock updates, then exits. */
static int shop(const char *url)
{
	msgbus_bus *bus;
	char buf[64];
	int i;

	if (msgbus_open(&bus, url, NULL) != MSGBUS_OK)
		return 1;
	for (i = 0; i < NORDERS; i++) {
		int n = snprintf(buf, sizeof(buf), "order %d: %s", i + 1, items[i]);
		if (msgbus_publish(bus, "orders.new", buf, (size_t)n, 5000) != MSGBUS_OK)
			return 1;
	}
	for (i = 0; i < NSTOCK; i++) {
		int n = snprintf(buf, sizeof(buf), "%s +%d", items[i], 10 * (i + 1));
		if (msgbus_publish(bus, "stock.update", buf, (size_t)n, 5000) != MSGBUS_OK)
			return 1;
	}
	msgbus_close(bus);
	return 0;
}

/* The client: asks for a quote of each item and prints the answer. */
static int client(const char *url)
{
	msgbus_bus *bus;
	msgbus_msg *reply;
	int i, err;

	if (msgbus_open(&bus, url, NULL) != MSGBUS_OK)
		return 1;
	for (i = 0; i < NQUOTES; i++) {
		err = msgbus_request(bus, "prices.quote", items[i], strlen(items[i]), &reply,
		                     5000);
		if (err != MSGBUS_OK) {
			fprintf(stderr, "client: %s: %s\n", items[i], msgbus_strerror(err));
			return 1;
		}
		printf("client: quote for %s -> %.*s cents\n", items[i], (int)msgbus_msg_len(reply),
		       (const char *)msgbus_msg_data(reply));
		fflush(stdout);
		msgbus_msg_release(reply);
	}
	msgbus_close(bus);
	return 0;
}

static pid_t spawn(int (*fn)(const char *), const char *url)
{
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid == 0)
		_exit(fn(url));
	return pid;
}

/* Answer one quote request. */
static void quote(msgbus_req *req)
{
	char buf[16];
	int i, n;

	for (i = 0; i < NQUOTES; i++) {
		if (msgbus_req_len(req) == strlen(items[i]) &&
		    memcmp(msgbus_req_data(req), items[i], strlen(items[i])) == 0)
			break;
	}
	n = snprintf(buf, sizeof(buf), "%d", i < NQUOTES ? prices[i] : -1);
	msgbus_respond(req, buf, (size_t)n);
}

int main(void)
{
	char url[64];
	msgbus_bus *bus;
	msgbus_sub *sub[2];
	msgbus_service *svc;
	struct pollfd p[3];
	int orders = 0, stock = 0, quotes = 0, err, i, ok = 1;
	pid_t kids[2];

	snprintf(url, sizeof(url), "shm://evloop-%ld", (long)getpid());
	err = msgbus_open(&bus, url, NULL);
	if (err != MSGBUS_OK) {
		fprintf(stderr, "open %s: %s\n", url, msgbus_strerror(err));
		return 1;
	}
	if (msgbus_subscribe(bus, "orders.>", 0, &sub[0]) != MSGBUS_OK ||
	    msgbus_subscribe(bus, "stock.*", 0, &sub[1]) != MSGBUS_OK ||
	    msgbus_serve(bus, "prices.quote", NULL, NULL, &svc) != MSGBUS_OK) {
		msgbus_close(bus);
		return 1;
	}
	/* The descriptors belong to their objects: never close them. */
	if (msgbus_sub_fd(sub[0], &p[0].fd) != MSGBUS_OK ||
	    msgbus_sub_fd(sub[1], &p[1].fd) != MSGBUS_OK ||
	    msgbus_service_fd(svc, &p[2].fd) != MSGBUS_OK) {
		msgbus_close(bus);
		return 1;
	}
	for (i = 0; i < 3; i++)
		p[i].events = POLLIN;

	/* Subscribed and serving before the others start: nothing is missed. */
	kids[0] = spawn(shop, url);
	kids[1] = spawn(client, url);

	while (orders < NORDERS || stock < NSTOCK || quotes < NQUOTES) {
		msgbus_msg *msg;
		msgbus_req *req;
		int n = poll(p, 3, POLL_TIMEOUT_MS);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, "evloop: nothing for %d ms\n", POLL_TIMEOUT_MS);
			ok = 0;
			break;
		}
		for (i = 0; i < 2; i++) {
			if (!(p[i].revents & POLLIN))
				continue;
			while ((err = msgbus_recv(sub[i], &msg, 0)) == MSGBUS_OK) {
				printf("%s: %.*s\n", msgbus_msg_subject(msg), (int)msgbus_msg_len(msg),
				       (const char *)msgbus_msg_data(msg));
				fflush(stdout);
				if (i == 0)
					orders++;
				else
					stock++;
				msgbus_msg_release(msg);
			}
			if (err != MSGBUS_EAGAIN)
				ok = 0;
		}
		if (p[2].revents & POLLIN) {
			while ((err = msgbus_service_recv(svc, &req, 0)) == MSGBUS_OK) {
				quote(req);
				quotes++;
			}
			if (err != MSGBUS_EAGAIN)
				ok = 0;
		}
		if (!ok)
			break;
	}
	for (i = 0; i < 2; i++) {
		int st;
		if (waitpid(kids[i], &st, 0) != kids[i] || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			ok = 0;
	}
	printf("evloop: %d orders, %d stock updates, %d quotes from one poll loop\n", orders,
	       stock, quotes);
	msgbus_close(bus); /* closes the descriptors too */
	return ok ? 0 : 1;
}
