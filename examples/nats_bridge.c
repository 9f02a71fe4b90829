/*
 * nats_bridge.c - the order -> inventory request (order.c) and the
 * notification fan-out (notify.c) across two buses joined through one
 * nats-server, as if they ran on two hosts of a NATS deployment.
 *
 * Bus A ("warehouse") serves "inventory.check" and has two notification
 * workers subscribed to "posts.created". Bus B ("shop") places the orders
 * with msgbus_request() and publishes the posts. Neither bus knows the
 * other: each is linked to the server with msgbus_connect("nats://..."),
 * and the link turns local services and subscriptions into NATS interest.
 * Both buses live in this one process (inproc://) to keep the example
 * short; with shm:// or on two hosts the code is the same.
 *
 * The server comes from $NATS_URL, or argv[1], default
 * nats://127.0.0.1:4222. Start one with `nats-server -a 127.0.0.1`.
 * Exits 0 when every order got an answer and both workers got every post.
 *
 *   cc -std=c11 -D_GNU_SOURCE nats_bridge.c -lmsgbus -o nats_bridge
 *   NATS_URL=nats://127.0.0.1:4222 ./nats_bridge
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "msgbus.h"

#define SERVICE "inventory.check"
#define SUBJECT "posts.created"
#define NWORKERS 2
#define LINK_TIMEOUT_MS 5000    /* how long we wait for a link, or for interest */
#define REQUEST_TIMEOUT_MS 2000 /* per order; the request crosses the server twice */
#define RECV_TIMEOUT_MS 5000    /* a worker gives up rather than hang forever */

static struct stock {
	const char *item;
	unsigned have;
} stock[] = { { "widget", 10 }, { "gadget", 4 }, { "gizmo", 1 } };
#define NSTOCK (sizeof stock / sizeof stock[0])

static const struct order {
	unsigned quantity;
	const char *item;
} orders[] = { { 2, "widget" }, { 1, "gizmo" }, { 9, "gadget" }, { 4, "gadget" } };
#define NORDERS (sizeof orders / sizeof orders[0])

static const char *const posts[] = {
	"hello from alice",     "bob shared a photo",   "carol joined the team",
	"dave: lunch at noon?", "erin liked your post",
};
#define NPOSTS (sizeof posts / sizeof posts[0])

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Reserves quantity x item if the stock has it; says why not otherwise. */
static void check_stock(const char *item, unsigned quantity, char *reply, size_t size)
{
	for (size_t i = 0; i < NSTOCK; i++) {
		if (strcmp(stock[i].item, item) != 0)
			continue;
		if (quantity <= stock[i].have) {
			stock[i].have -= quantity; /* reserved for this order */
			snprintf(reply, size, "in stock");
		} else {
			snprintf(reply, size, "out of stock: need %u have %u", quantity,
			         stock[i].have);
		}
		return;
	}
	snprintf(reply, size, "out of stock: unknown item %s", item);
}

/*
 * The inventory worker, called on a library thread of bus A for each
 * request, whether it came from bus A itself or from NATS. Requests are
 * "ITEM QUANTITY" (not NUL-terminated); "ping" only checks that we serve.
 */
static void inventory(msgbus_req *req, void *arg)
{
	char text[128], item[64], reply[128];
	size_t len = msgbus_req_len(req);
	unsigned quantity;

	(void)arg;
	snprintf(reply, sizeof reply, "bad request");
	if (len < sizeof text) {
		memcpy(text, msgbus_req_data(req), len);
		text[len] = '\0';
		if (strcmp(text, "ping") == 0)
			snprintf(reply, sizeof reply, "pong");
		else if (sscanf(text, "%63s %u", item, &quantity) == 2)
			check_stock(item, quantity, reply, sizeof reply);
	}
	/* msgbus_respond() frees req whatever it returns; a requester that
	 * gave up already is not our failure. */
	msgbus_respond(req, reply, strlen(reply));
}

/* Opens an inproc:// bus and links it to the NATS server; waits until the
 * link is up (bounded). */
static int open_linked(msgbus_bus **bus, const char *name, const char *nats_url)
{
	char url[64];
	int err;

	snprintf(url, sizeof url, "inproc://nats_bridge-%s-%ld", name, (long)getpid());
	if ((err = msgbus_open(bus, url, NULL)) != MSGBUS_OK) {
		fprintf(stderr, "open %s: %s\n", url, msgbus_strerror(err));
		return err;
	}
	/* The link connects in the background, reconnects with backoff, and
	 * stops when the bus is closed. */
	if ((err = msgbus_connect(*bus, nats_url)) != MSGBUS_OK) {
		fprintf(stderr, "connect %s: %s\n", nats_url, msgbus_strerror(err));
		msgbus_close(*bus);
		return err;
	}
	for (int waited = 0; waited < LINK_TIMEOUT_MS; waited += 5) {
		msgbus_link_stats st;
		if ((err = msgbus_link_stats_get(*bus, &st)) != MSGBUS_OK)
			break;
		if (st.links_up >= 1)
			return MSGBUS_OK;
		sleep_ms(5);
	}
	if (err == MSGBUS_OK)
		err = MSGBUS_ETIMEDOUT;
	fprintf(stderr, "bus %s: no link to %s: %s\n", name, nats_url, msgbus_strerror(err));
	msgbus_close(*bus);
	return err;
}

/* Sends one request from bus B; copies the reply's text into out. */
static int ask(msgbus_bus *bus, const char *request, char *out, size_t size)
{
	msgbus_msg *reply;
	int err = msgbus_request(bus, SERVICE, request, strlen(request), &reply,
	                         REQUEST_TIMEOUT_MS);
	if (err != MSGBUS_OK)
		return err;
	size_t len = msgbus_msg_len(reply);
	if (len >= size)
		len = size - 1;
	memcpy(out, msgbus_msg_data(reply), len);
	out[len] = '\0';
	msgbus_msg_release(reply);
	return MSGBUS_OK;
}

/*
 * Until the server has bus A's queue subscription, a request from bus B
 * fails at once with MSGBUS_ENORESPONDERS: retry a "ping" (bounded). Bus A
 * subscribed its workers before it served, and its link sends its SUBs in
 * that order on one connection, so the workers' interest is there too.
 */
static int wait_for_inventory(msgbus_bus *bus)
{
	char pong[16];
	int err = MSGBUS_ENORESPONDERS;
	for (int waited = 0; waited < LINK_TIMEOUT_MS && err == MSGBUS_ENORESPONDERS;
	     waited += 10) {
		err = ask(bus, "ping", pong, sizeof pong);
		if (err == MSGBUS_ENORESPONDERS)
			sleep_ms(10);
	}
	if (err != MSGBUS_OK)
		fprintf(stderr, "inventory not reachable through NATS: %s\n", msgbus_strerror(err));
	return err;
}

/* Bus B places the orders; returns the number that got no answer. */
static int place_orders(msgbus_bus *shop)
{
	unsigned confirmed = 0, rejected = 0;
	int failed = 0;

	for (size_t i = 0; i < NORDERS; i++) {
		char request[128], text[128];
		snprintf(request, sizeof request, "%s %u", orders[i].item, orders[i].quantity);
		int err = ask(shop, request, text, sizeof text);
		if (err != MSGBUS_OK) {
			/* ENORESPONDERS: nobody serves it anywhere; ETIMEDOUT:
			 * no answer in time; EPEERDIED: the link dropped. */
			snprintf(text, sizeof text, "inventory: %s", msgbus_strerror(err));
			failed++;
		}
		if (err == MSGBUS_OK && strcmp(text, "in stock") == 0) {
			printf("order %zu: %u x %s -> confirmed\n", i + 1, orders[i].quantity,
			       orders[i].item);
			confirmed++;
		} else {
			printf("order %zu: %u x %s -> rejected (%s)\n", i + 1, orders[i].quantity,
			       orders[i].item, text);
			rejected++;
		}
	}
	printf("orders: %u confirmed, %u rejected\n", confirmed, rejected);
	return failed;
}

/* A worker on bus A takes the posts that crossed the server; returns
 * how many arrived, in order and intact. NATS core is at-most-once: a
 * post lost on the way is a timeout here, reported, not a hang. */
static size_t read_posts(int id, msgbus_sub *sub)
{
	size_t got = 0;
	while (got < NPOSTS) {
		msgbus_msg *msg;
		int err = msgbus_recv(sub, &msg, RECV_TIMEOUT_MS);
		if (err != MSGBUS_OK) {
			fprintf(stderr, "worker %d: recv after %zu posts: %s\n", id, got,
			        msgbus_strerror(err));
			break;
		}
		const char *text = msgbus_msg_data(msg);
		size_t len = msgbus_msg_len(msg);
		int same = len == strlen(posts[got]) && memcmp(text, posts[got], len) == 0;
		printf("worker %d got post %zu: \"%.*s\"\n", id, got + 1, (int)len,
		       len ? text : "");
		msgbus_msg_release(msg);
		if (!same) {
			fprintf(stderr, "worker %d: expected \"%s\"\n", id, posts[got]);
			break;
		}
		got++;
	}
	printf("worker %d received %zu posts\n", id, got);
	return got;
}

/* Bus B publishes the posts; bus A's workers read them. Returns 0 if
 * every worker got every post. */
static int fan_out(msgbus_bus *shop, msgbus_sub *const *subs)
{
	size_t published = 0;
	int nok = 0;

	for (size_t i = 0; i < NPOSTS; i++) {
		/* Bus B has no local subscriber: the link takes the post to
		 * the server, which sends it to bus A's subscription. */
		int err = msgbus_publish(shop, SUBJECT, posts[i], strlen(posts[i]), 1000);
		if (err != MSGBUS_OK) {
			fprintf(stderr, "publish post %zu: %s\n", i + 1, msgbus_strerror(err));
			break;
		}
		published++;
	}
	for (int w = 0; w < NWORKERS; w++)
		nok += read_posts(w + 1, subs[w]) == NPOSTS;
	printf("post service: published %zu posts through nats, %d of %d workers ok\n",
	       published, nok, NWORKERS);
	return published == NPOSTS && nok == NWORKERS ? 0 : 1;
}

/* Bus A's side: two workers subscribed, then the inventory served. */
static int warehouse_setup(msgbus_bus *warehouse, msgbus_sub **subs, msgbus_service **svc)
{
	int err = MSGBUS_OK;
	for (int w = 0; w < NWORKERS && err == MSGBUS_OK; w++)
		err = msgbus_subscribe(warehouse, SUBJECT, 0, &subs[w]);
	if (err == MSGBUS_OK)
		err = msgbus_serve(warehouse, SERVICE, inventory, NULL, svc);
	if (err != MSGBUS_OK)
		fprintf(stderr, "bus A: subscribe/serve: %s\n", msgbus_strerror(err));
	return err;
}

int main(int argc, char **argv)
{
	const char *nats_url = getenv("NATS_URL");
	msgbus_bus *warehouse, *shop;
	msgbus_sub *subs[NWORKERS] = { NULL };
	msgbus_service *svc = NULL;
	int failed = 1;

	if (argc > 1)
		nats_url = argv[1];
	if (!nats_url || !nats_url[0])
		nats_url = "nats://127.0.0.1:4222";
	setvbuf(stdout, NULL, _IOLBF, 0);

	if (open_linked(&warehouse, "a", nats_url) != MSGBUS_OK)
		return 1;
	if (open_linked(&shop, "b", nats_url) != MSGBUS_OK) {
		msgbus_close(warehouse);
		return 1;
	}
	printf("bus A and bus B linked through the nats server\n");

	if (warehouse_setup(warehouse, subs, &svc) == MSGBUS_OK &&
	    wait_for_inventory(shop) == MSGBUS_OK) {
		printf("bus B reaches bus A's inventory\n");
		failed = place_orders(shop) != 0;
		failed |= fan_out(shop, subs);
	}

	/* Closing a bus ends its link, its subscriptions and its services. */
	int err = msgbus_close(shop);
	int err2 = msgbus_close(warehouse);
	if (err != MSGBUS_OK || err2 != MSGBUS_OK) {
		fprintf(stderr, "close: %s\n", msgbus_strerror(err != MSGBUS_OK ? err : err2));
		failed = 1;
	}
	return failed;
}
