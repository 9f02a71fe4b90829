/*
 * bench.c - msgbus bench: publish/receive throughput and request/reply
 * latency on a bus, in this process, on subjects of its own.
 */
#include "tool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_COUNT 10000
#define DEFAULT_SIZE 64
#define DEFAULT_OP_TIMEOUT_MS 5000
#define PUBSUB_RUNS 5
/* The header the library puts before a request's data (msgbus_request(3)). */
#define REQ_HEADER 16u

struct bench {
	msgbus_bus *bus;
	char subject[64], service[64];
	long count;
	size_t size;
	int timeout_ms;
	char *payload;
};

struct receiver {
	const struct bench *b;
	msgbus_sub *sub;
	atomic_int quit; /* set by the publisher that failed */
	int err;
	int64_t end_ns;
};

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

/* Takes count messages of the run; each must have the payload's size. */
static void *receive_run(void *arg)
{
	struct receiver *r = arg;
	int64_t deadline = tool_now_ms() + r->b->timeout_ms;
	long got = 0;

	while (got < r->b->count && !tool_stop && !atomic_load(&r->quit)) {
		msgbus_msg *m;
		int err = msgbus_recv(r->sub, &m, tool_slice_ms(deadline));

		if (err == MSGBUS_ETIMEDOUT && tool_left_ms(deadline) > 0)
			continue;
		if (err != MSGBUS_OK) {
			r->err = err;
			return NULL;
		}
		if (msgbus_msg_len(m) != r->b->size)
			r->err = MSGBUS_EPROTO;
		msgbus_msg_release(m);
		got++;
		deadline = tool_now_ms() + r->b->timeout_ms;
	}
	r->end_ns = now_ns();
	return NULL;
}

/* Starts a thread that inherits SIGINT and SIGTERM blocked: the main
 * thread alone takes them. */
static int start_thread(pthread_t *t, void *(*fn)(void *), void *arg)
{
	int rc;

	tool_block_signals(1);
	rc = pthread_create(t, NULL, fn, arg);
	tool_block_signals(0);
	return rc ? MSGBUS_ESYSERR | rc : MSGBUS_OK;
}

/* One run: count messages published here, received by another thread. */
static int pubsub_run(const struct bench *b, msgbus_sub *sub, double *rate)
{
	struct receiver r = { .b = b, .sub = sub, .err = MSGBUS_OK };
	int64_t start = now_ns();
	pthread_t t;
	int err = start_thread(&t, receive_run, &r);

	if (err != MSGBUS_OK)
		return tool_fail("pthread_create", err);
	for (long i = 0; i < b->count && !tool_stop && err == MSGBUS_OK; i++)
		err = msgbus_publish(b->bus, b->subject, b->payload, b->size, b->timeout_ms);
	if (err != MSGBUS_OK)
		atomic_store(&r.quit, 1);
	pthread_join(t, NULL);
	if (err != MSGBUS_OK)
		return tool_fail("msgbus_publish", err);
	if (r.err != MSGBUS_OK)
		return tool_fail("msgbus_recv", r.err);
	if (tool_stop)
		return EXIT_FAILED;
	*rate = (double)b->count * 1e9 / (double)(r.end_ns - start);
	return EXIT_OK;
}

static int bench_pubsub(const struct bench *b)
{
	double rates[PUBSUB_RUNS];
	msgbus_sub *sub;
	int status = EXIT_OK, err;

	err = msgbus_subscribe(b->bus, b->subject, 0, &sub);
	if (err != MSGBUS_OK)
		return tool_fail("msgbus_subscribe", err);
	for (int i = 0; i < PUBSUB_RUNS && status == EXIT_OK; i++)
		status = pubsub_run(b, sub, &rates[i]);
	msgbus_unsubscribe(sub);
	if (status != EXIT_OK)
		return status;
	/* Insertion sort of five: the median is the middle one. */
	for (int i = 1; i < PUBSUB_RUNS; i++)
		for (int j = i; j > 0 && rates[j - 1] > rates[j]; j--) {
			double t = rates[j];
			rates[j] = rates[j - 1];
			rates[j - 1] = t;
		}
	printf("%-8s %6zu %8ld %5d %12.0f %10s %10s\n", "pubsub", b->size, b->count,
	       PUBSUB_RUNS, rates[PUBSUB_RUNS / 2], "-", "-");
	return EXIT_OK;
}

static void echo(msgbus_req *req, void *arg)
{
	(void)arg;
	msgbus_respond(req, msgbus_req_data(req), msgbus_req_len(req));
}

/* count requests one after the other; the latency of each is kept. */
static int reqrep_run(const struct bench *b, int64_t *lat, int64_t *total)
{
	int64_t start = now_ns();

	for (long i = 0; i < b->count; i++) {
		msgbus_msg *reply;
		int64_t t0 = now_ns();
		int err = msgbus_request(b->bus, b->service, b->payload, b->size, &reply,
		                         b->timeout_ms);

		if (err != MSGBUS_OK)
			return tool_fail("msgbus_request", err);
		lat[i] = now_ns() - t0;
		err = msgbus_msg_len(reply) == b->size ? MSGBUS_OK : MSGBUS_EPROTO;
		msgbus_msg_release(reply);
		if (err != MSGBUS_OK)
			return tool_fail("msgbus_request", err);
		if (tool_stop)
			return EXIT_FAILED;
	}
	*total = now_ns() - start;
	return EXIT_OK;
}

static int bench_reqrep(const struct bench *b)
{
	int64_t *lat = malloc((size_t)b->count * sizeof *lat), total = 0;
	msgbus_service *svc;
	int status, err;

	if (!lat)
		return tool_fail("malloc", MSGBUS_ENOMEM);
	/* The worker's callback thread starts with the signals blocked. */
	tool_block_signals(1);
	err = msgbus_serve(b->bus, b->service, echo, NULL, &svc);
	tool_block_signals(0);
	if (err != MSGBUS_OK) {
		free(lat);
		return tool_fail("msgbus_serve", err);
	}
	status = reqrep_run(b, lat, &total);
	msgbus_unserve(svc);
	if (status == EXIT_OK) {
		long median = b->count / 2, p99 = b->count / 100 * 99 + b->count % 100 * 99 / 100;

		qsort(lat, (size_t)b->count, sizeof *lat, cmp_i64);
		printf("%-8s %6zu %8ld %5d %12.0f %10.1f %10.1f\n", "reqrep", b->size, b->count, 1,
		       (double)b->count * 1e9 / (double)total, (double)lat[median] / 1e3,
		       (double)lat[p99] / 1e3);
	}
	free(lat);
	return status;
}

/* --size against the bus's own max_msg_size, known once it is open: the
 * reqrep test's requests carry REQ_HEADER bytes more. */
static int check_size(const struct bench *b)
{
	msgbus_stat st = { .size = sizeof(st) };
	char why[128];
	unsigned long most;
	int err = msgbus_stat_get(b->bus, &st);

	if (err != MSGBUS_OK)
		return tool_fail("msgbus_stat_get", err);
	most = st.max_msg_size > REQ_HEADER ? st.max_msg_size - REQ_HEADER : 0;
	if (b->size <= most)
		return EXIT_OK;
	snprintf(why, sizeof why,
	         "bad value for --size: %zu (1 to %lu on this bus: max_msg_size %u - %u)",
	         b->size, most, st.max_msg_size, REQ_HEADER);
	return tool_usage_error("bench", why);
}

int cmd_bench(const struct tool_opts *o)
{
	struct bench b = { 0 };
	int status;

	b.count = o->count ? o->count : DEFAULT_COUNT;
	b.size = o->size ? o->size : DEFAULT_SIZE;
	b.timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : DEFAULT_OP_TIMEOUT_MS;
	snprintf(b.subject, sizeof b.subject, "msgbus-bench.%ld.data", (long)getpid());
	snprintf(b.service, sizeof b.service, "msgbus-bench.%ld.echo", (long)getpid());
	if (!(b.payload = calloc(1, b.size)))
		return tool_fail("calloc", MSGBUS_ENOMEM);
	if ((status = tool_open(o, o->args[0], &b.bus)) != EXIT_OK) {
		free(b.payload);
		return status;
	}
	if ((status = check_size(&b)) != EXIT_OK) {
		free(b.payload);
		return tool_close(b.bus, status);
	}
	printf("%-8s %6s %8s %5s %12s %10s %10s\n", "TEST", "SIZE", "COUNT", "RUNS", "MSGS/S",
	       "MEDIAN_US", "P99_US");
	status = bench_pubsub(&b);
	if (status == EXIT_OK)
		status = bench_reqrep(&b);
	free(b.payload);
	return tool_close(b.bus, status);
}
