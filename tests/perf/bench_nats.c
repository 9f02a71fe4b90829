/*
 * bench_nats.c - libmsgbus nats:// link benchmark (a benchmark, not a test:
 * it prints figures and PASS/MISS against the targets of issue 10; it fails
 * only when the library returns an error or a run delivers nothing).
 *
 * Usage: bench_nats [-n COUNT] [-q REQUESTS] [-r REPS] [-t pub,rtt,alt,mix] [-v]
 *   -n COUNT     64 B messages per publish run (default 200000)
 *   -q REQUESTS  timed round trips per request run (default 2000, after
 *                200 warm-up round trips)
 *   -r REPS      runs of each figure, raw and library alternating; the
 *                median is printed (default 5)
 *   -t TESTS     any of pub, rtt, alt, mix (default pub,rtt,alt)
 *   -v           also print every run
 *
 * The bench starts nats-server itself (-a 127.0.0.1 on a free port, tried
 * again on another port if it does not come up), stops it by PID at the
 * end, and prints one SKIP line and exits 0 when nats-server is not
 * installed ($NATS_SERVER overrides the path). Everything runs in this
 * process, as threads; each party has its own TCP connection to the server.
 *
 * pub   library: bus A (inproc) and bus B (inproc), each linked with
 *       nats://; a lossless subscriber on B counts; A's main thread calls
 *       msgbus_publish (timeout -1) COUNT times, 64 B each.
 *       raw: a client that writes "PUB subject 64\r\n<64 B>\r\n" records in
 *       64 KiB writes, a client with a SUB that parses MSG and counts.
 *       Figure: messages delivered / (last receipt - first publish), in
 *       msgs/s; a receiver stops at COUNT or after 500 ms of silence. NATS
 *       core is at-most-once: what did not arrive is printed, with the
 *       links' `undelivered` counters for the library. Two rows: the
 *       links with ?lossless=1 (A's publisher is held back by the
 *       connection, as the raw writer is by TCP: the row the target is
 *       for), then with the default URL (a lossy follower: the publisher is
 *       never held back, what the link cannot take is lost and counted),
 *       each against its own raw runs.
 * rtt   library: msgbus_request on bus B to a callback worker on bus A
 *       (a queue SUB through the server), 64 B, reply echoes the request.
 *       raw: a requester with a SUB on "_INBOX.bench.*" writes
 *       "PUB svc _INBOX.bench.N 64", a responder with a SUB on svc
 *       answers with PUB to the reply subject. Median and p99 in us.
 * alt   the two round trips of rtt alternating request by request, with
 *       every connection open at once, so both meet the same machine at
 *       the same moment; the median of the runs' ratios.
 * mix   where the time goes: a library requester with the raw responder,
 *       and the raw requester with a library worker, against raw.
 *
 * Targets: pub >= 0.7x raw; rtt median <= 1.3x raw.
 * Exit status: 0 ok (or SKIP), 1 a run failed, 2 usage.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "bench_util.h"
#include "msgbus.h"

#define SIZE 64
#define IDLE_MS 500       /* a receiver stops after this much silence */
#define WARMUP 200        /* round trips before the timed ones */
#define WAIT_MS 5000      /* bound on every setup wait */
#define PUB_SUBJECT "bench.data"
#define SYNC_SUBJECT "bench.sync"
#define SERVICE "bench.echo"

static long g_count = 200000;
static long g_requests = 2000;
static int g_reps = 5;
static int g_verbose;
static const char *g_tests = "pub,rtt,alt"; /* -t */
static int g_port;
static pid_t g_natsd;
static int g_failures;

/* ---- the server ------------------------------------------------------------ */

static const char *natsd_path(void)
{
	const char *env = getenv("NATS_SERVER");
	if (env)
		return env[0] && access(env, X_OK) == 0 ? env : NULL;
	static const char *const where[] = { "/usr/sbin/nats-server", "/usr/bin/nats-server",
		                             "/usr/local/bin/nats-server" };
	for (size_t i = 0; i < sizeof where / sizeof where[0]; i++)
		if (access(where[i], X_OK) == 0)
			return where[i];
	return NULL;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof a;
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;
	if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &al) == 0)
		port = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

static int connect_lo(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
		                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
		close(fd);
		return -1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	return fd;
}

static void natsd_stop(void)
{
	if (g_natsd <= 0)
		return;
	kill(g_natsd, SIGTERM);
	for (int waited = 0; waitpid(g_natsd, NULL, WNOHANG) == 0; waited += 10) {
		if (waited >= WAIT_MS) {
			kill(g_natsd, SIGKILL);
			waitpid(g_natsd, NULL, 0);
			break;
		}
		sleep_ms(10);
	}
	g_natsd = 0;
}

/* Starts nats-server on a free loopback port; the port was free when we
 * looked, so if the server is gone or silent after 5 s, try another. */
static int natsd_start(const char *path)
{
	for (int attempt = 0; attempt < 5; attempt++) {
		char port[16];
		g_port = free_port();
		snprintf(port, sizeof port, "%d", g_port);
		g_natsd = fork();
		if (g_natsd < 0)
			return -1;
		if (g_natsd == 0) {
			int null = open("/dev/null", O_RDWR);
			dup2(null, 1);
			dup2(null, 2);
			execl(path, "nats-server", "-a", "127.0.0.1", "-p", port, (char *)NULL);
			_exit(127);
		}
		for (int waited = 0; waited < WAIT_MS; waited += 20) {
			if (waitpid(g_natsd, NULL, WNOHANG) == g_natsd)
				break; /* exited: port taken after all */
			int fd = connect_lo(g_port);
			char buf[8] = "";
			if (fd >= 0) {
				ssize_t n = read(fd, buf, 4);
				close(fd);
				if (n == 4 && memcmp(buf, "INFO", 4) == 0)
					return 0;
			}
			sleep_ms(20);
		}
		natsd_stop();
	}
	return -1;
}

/* ---- a raw NATS client, written by hand ------------------------------------ */

struct raw {
	int fd;
	int timeout_ms; /* the socket's receive timeout now (0: none set) */
	size_t len, off;
	char reply[128]; /* reply subject of the last MSG */
	char buf[1 << 18];
};

static int write_all(int fd, const void *p, size_t len)
{
	const char *c = p;
	while (len) {
		ssize_t n = write(fd, c, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		c += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Reads more into r->buf within ms; 1 read, 0 timeout, -1 closed. */
static int raw_fill(struct raw *r, int ms)
{
	if (r->off > 0 && r->off == r->len)
		r->off = r->len = 0;
	if (r->len == sizeof r->buf) {
		memmove(r->buf, r->buf + r->off, r->len - r->off);
		r->len -= r->off;
		r->off = 0;
	}
	/* One blocking read with a receive timeout, set only when it
	 * changes: a round trip costs the baseline one system call per read
	 * (a poll before each read would be two). */
	if (ms != r->timeout_ms) {
		struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
		if (setsockopt(r->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0)
			return -1;
		r->timeout_ms = ms;
	}
	ssize_t n;
	while ((n = read(r->fd, r->buf + r->len, sizeof r->buf - r->len)) < 0 && errno == EINTR)
		;
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return 0;
	if (n <= 0)
		return -1;
	r->len += (size_t)n;
	return 1;
}

/*
 * The next MSG within ms: 1 (its payload in *data, *len; reply subject in
 * r->reply), 0 timeout, -1 error. PING is answered; +OK, PONG, INFO are
 * skipped, -ERR is an error. A "PONG" is reported as 2 (for raw_sync).
 */
static int raw_next(struct raw *r, int ms, const char **data, size_t *len)
{
	for (;;) {
		char *line = r->buf + r->off;
		char *end = memmem(line, r->len - r->off, "\r\n", 2);
		if (!end) {
			int f = raw_fill(r, ms);
			if (f <= 0)
				return f;
			continue;
		}
		size_t ll = (size_t)(end - line) + 2;
		if (ll > 4 && memcmp(line, "MSG ", 4) == 0) {
			char subj[128], sid[32], a[128], b[32];
			char head[512];
			size_t hl = ll - 2 < sizeof head - 1 ? ll - 2 : sizeof head - 1;
			memcpy(head, line, hl);
			head[hl] = '\0';
			int nt = sscanf(head + 4, "%127s %31s %127s %31s", subj, sid, a, b);
			if (nt < 3)
				return -1;
			size_t size = strtoul(nt == 4 ? b : a, NULL, 10);
			snprintf(r->reply, sizeof r->reply, "%s", nt == 4 ? a : "");
			while (r->len - r->off < ll + size + 2) {
				if (ll + size + 2 > sizeof r->buf || raw_fill(r, WAIT_MS) <= 0)
					return -1;
				line = r->buf + r->off;
			}
			*data = line + ll;
			*len = size;
			r->off += ll + size + 2;
			return 1;
		}
		r->off += ll;
		if (ll >= 6 && memcmp(line, "PING", 4) == 0 && write_all(r->fd, "PONG\r\n", 6))
			return -1;
		if (ll >= 6 && memcmp(line, "PONG", 4) == 0)
			return 2;
		if (ll >= 6 && memcmp(line, "-ERR", 4) == 0) {
			fprintf(stderr, "raw client: %.*s\n", (int)ll - 2, line);
			return -1;
		}
	}
}

/* PING, and wait for its PONG: the server has seen all we sent before. */
static int raw_sync(struct raw *r)
{
	const char *d;
	size_t l;
	int got;
	if (write_all(r->fd, "PING\r\n", 6))
		return -1;
	while ((got = raw_next(r, WAIT_MS, &d, &l)) == 1)
		;
	return got == 2 ? 0 : -1;
}

/* Connects, CONNECT without echo or +OK; with sub, SUB sid 1 on it. */
static struct raw *raw_open(const char *sub)
{
	static const char connect[] =
		"CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false,"
		"\"name\":\"bench-raw\",\"lang\":\"c\",\"version\":\"0\",\"protocol\":1}\r\n";
	struct raw *r = calloc(1, sizeof *r);
	char line[192];
	if (!r || (r->fd = connect_lo(g_port)) < 0)
		goto fail;
	if (write_all(r->fd, connect, sizeof connect - 1))
		goto fail;
	if (sub) {
		int n = snprintf(line, sizeof line, "SUB %s 1\r\n", sub);
		if (write_all(r->fd, line, (size_t)n))
			goto fail;
	}
	if (raw_sync(r) == 0)
		return r;
fail:
	fprintf(stderr, "raw client: cannot connect to port %d\n", g_port);
	if (r && r->fd > 0)
		close(r->fd);
	free(r);
	return NULL;
}

static void raw_close(struct raw *r)
{
	if (r) {
		close(r->fd);
		free(r);
	}
}

/* ---- counting receivers ---------------------------------------------------- */

struct counter {
	long want, got;
	uint64_t last_ns;
	struct raw *raw;  /* raw mode */
	msgbus_sub *sub;  /* library mode */
};

static void *raw_count(void *arg)
{
	struct counter *c = arg;
	const char *d;
	size_t l;
	while (c->got < c->want && raw_next(c->raw, IDLE_MS, &d, &l) == 1) {
		c->got++;
		c->last_ns = now_ns();
	}
	return NULL;
}

static void *lib_count(void *arg)
{
	struct counter *c = arg;
	msgbus_msg *m;
	while (c->got < c->want && msgbus_recv(c->sub, &m, IDLE_MS) == MSGBUS_OK) {
		c->got++;
		c->last_ns = now_ns();
		msgbus_msg_release(m);
	}
	return NULL;
}

/* ---- pub: raw -------------------------------------------------------------- */

struct pub_result {
	double rate, offered; /* delivered msgs/s; publish calls (writes) per s */
	long got, undelivered;
};

static struct pub_result pub_raw(void)
{
	struct pub_result res = { 0 };
	struct counter c = { .want = g_count };
	struct raw *pub = raw_open(NULL);
	pthread_t t;
	static char batch[1 << 16];
	char rec[128];
	unsigned char payload[SIZE];

	c.raw = raw_open(PUB_SUBJECT);
	if (!pub || !c.raw) {
		g_failures++;
		raw_close(pub);
		raw_close(c.raw);
		return res;
	}
	memset(payload, 'x', sizeof payload);
	int hl = snprintf(rec, sizeof rec, "PUB %s %d\r\n", PUB_SUBJECT, SIZE);
	memcpy(rec + hl, payload, SIZE);
	memcpy(rec + hl + SIZE, "\r\n", 2);
	size_t rl = (size_t)hl + SIZE + 2, fill = 0;

	pthread_create(&t, NULL, raw_count, &c);
	uint64_t t0 = now_ns();
	for (long i = 0; i < g_count; i++) {
		if (fill + rl > sizeof batch) {
			if (write_all(pub->fd, batch, fill))
				break;
			fill = 0;
		}
		memcpy(batch + fill, rec, rl);
		fill += rl;
	}
	if (fill)
		write_all(pub->fd, batch, fill);
	res.offered = (double)g_count * 1e9 / (double)(now_ns() - t0);
	raw_sync(pub); /* everything reached the server */
	pthread_join(t, NULL);
	res.got = c.got;
	res.undelivered = g_count - c.got;
	res.rate = c.got && c.last_ns > t0 ? (double)c.got * 1e9 / (double)(c.last_ns - t0) : 0;
	raw_close(pub);
	raw_close(c.raw);
	return res;
}

/* ---- the library side ------------------------------------------------------ */

/* query: appended to the nats:// URL ("?lossless=1", or "") */
static msgbus_bus *open_linked(const char *role, int n, const char *query)
{
	char url[96], nurl[64];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	msgbus_bus *bus;
	o.ring_slots = 4096;
	o.slot_size = 128;
	o.max_msg_size = 4096;
	snprintf(url, sizeof url, "inproc://bench_nats.%ld.%s.%d", (long)getpid(), role, n);
	snprintf(nurl, sizeof nurl, "nats://127.0.0.1:%d%s", g_port, query);
	int err = msgbus_open(&bus, url, &o);
	if (err == MSGBUS_OK && (err = msgbus_connect(bus, nurl)) != MSGBUS_OK)
		msgbus_close(bus);
	if (err != MSGBUS_OK) {
		fprintf(stderr, "open/connect %s: %s\n", url, msgbus_strerror(err));
		return NULL;
	}
	for (int waited = 0; waited < WAIT_MS; waited += 2) {
		msgbus_link_stats st;
		if (msgbus_link_stats_get(bus, &st) == MSGBUS_OK && st.links_up >= 1)
			return bus;
		sleep_ms(2);
	}
	fprintf(stderr, "%s: link to %s not up in %d ms\n", url, nurl, WAIT_MS);
	msgbus_close(bus);
	return NULL;
}

static uint64_t undelivered(msgbus_bus *bus)
{
	msgbus_link_stats st;
	return msgbus_link_stats_get(bus, &st) == MSGBUS_OK ? st.undelivered : 0;
}

/* A publishes on SYNC_SUBJECT until B's sync subscriber sees one: B's
 * SUBs (data first, then sync, on one connection) are at the server. */
static int lib_pub_sync(msgbus_bus *a, msgbus_sub *sync)
{
	for (int waited = 0; waited < WAIT_MS; waited += 10) {
		msgbus_msg *m;
		if (msgbus_publish(a, SYNC_SUBJECT, "s", 1, 100) != MSGBUS_OK)
			return -1;
		if (msgbus_recv(sync, &m, 10) == MSGBUS_OK) {
			msgbus_msg_release(m);
			while (msgbus_recv(sync, &m, 50) == MSGBUS_OK) /* drain */
				msgbus_msg_release(m);
			return 0;
		}
	}
	return -1;
}

static struct pub_result pub_lib(int rep, const char *query)
{
	struct pub_result res = { 0 };
	struct counter c = { .want = g_count };
	msgbus_bus *a = open_linked("a", rep, query), *b = open_linked("b", rep, query);
	msgbus_sub *sync = NULL;
	unsigned char payload[SIZE];
	pthread_t t;

	if (!a || !b || msgbus_subscribe(b, PUB_SUBJECT, 0, &c.sub) != MSGBUS_OK ||
	    msgbus_subscribe(b, SYNC_SUBJECT, MSGBUS_SUB_LOSSY, &sync) != MSGBUS_OK ||
	    lib_pub_sync(a, sync) != 0) {
		fprintf(stderr, "pub: library setup failed\n");
		g_failures++;
		goto out;
	}
	memset(payload, 'x', sizeof payload);
	uint64_t ua = undelivered(a), ub = undelivered(b);
	pthread_create(&t, NULL, lib_count, &c);
	uint64_t t0 = now_ns();
	for (long i = 0; i < g_count; i++) {
		put_u64(payload, (uint64_t)i);
		int err = msgbus_publish(a, PUB_SUBJECT, payload, SIZE, -1);
		if (err != MSGBUS_OK) {
			fprintf(stderr, "publish: %s\n", msgbus_strerror(err));
			g_failures++;
			break;
		}
	}
	res.offered = (double)g_count * 1e9 / (double)(now_ns() - t0);
	pthread_join(t, NULL);
	res.got = c.got;
	res.undelivered = (long)(undelivered(a) - ua + undelivered(b) - ub);
	res.rate = c.got && c.last_ns > t0 ? (double)c.got * 1e9 / (double)(c.last_ns - t0) : 0;
out:
	if (b)
		msgbus_close(b); /* closes its subscriptions too */
	if (a)
		msgbus_close(a);
	return res;
}

/* ---- rtt ------------------------------------------------------------------- */

struct rtt_result {
	double median_us, p99_us;
};

static struct rtt_result rtt_stats(uint64_t *lat, long n)
{
	struct rtt_result r = { 0, 0 };
	if (n <= 0)
		return r;
	qsort(lat, (size_t)n, sizeof *lat, cmp_u64);
	r.median_us = (double)lat[n / 2] / 1e3;
	r.p99_us = (double)lat[(n * 99) / 100] / 1e3;
	return r;
}

static void *raw_responder(void *arg)
{
	struct raw *r = arg;
	const char *d;
	size_t l;
	char head[192];
	while (raw_next(r, IDLE_MS * 4, &d, &l) == 1) {
		int hl = snprintf(head, sizeof head, "PUB %s %zu\r\n", r->reply, l);
		char out[256 + SIZE];
		if (l > SIZE)
			break;
		memcpy(out, head, (size_t)hl);
		memcpy(out + hl, d, l);
		memcpy(out + hl + (int)l, "\r\n", 2);
		if (write_all(r->fd, out, (size_t)hl + l + 2))
			break;
	}
	return NULL;
}

static struct rtt_result rtt_raw(uint64_t *lat)
{
	struct rtt_result res = { 0, 0 };
	struct raw *svc = raw_open(SERVICE), *req = raw_open("_INBOX.bench.*");
	pthread_t t;
	long n = 0;
	if (!svc || !req) {
		g_failures++;
		raw_close(svc);
		raw_close(req);
		return res;
	}
	pthread_create(&t, NULL, raw_responder, svc);
	for (long i = 0; i < WARMUP + g_requests; i++) {
		char out[256 + SIZE];
		const char *d;
		size_t l;
		int hl = snprintf(out, sizeof out, "PUB %s _INBOX.bench.%ld %d\r\n", SERVICE, i, SIZE);
		memset(out + hl, 'x', SIZE);
		memcpy(out + hl + SIZE, "\r\n", 2);
		uint64_t t0 = now_ns();
		if (write_all(req->fd, out, (size_t)hl + SIZE + 2) ||
		    raw_next(req, WAIT_MS, &d, &l) != 1 || l != SIZE) {
			fprintf(stderr, "raw request %ld: no reply\n", i);
			g_failures++;
			break;
		}
		if (i >= WARMUP)
			lat[n++] = now_ns() - t0;
	}
	shutdown(svc->fd, SHUT_RDWR); /* the responder's read fails: it stops */
	pthread_join(t, NULL);
	raw_close(svc);
	raw_close(req);
	return rtt_stats(lat, n);
}

static void echo(msgbus_req *req, void *arg)
{
	(void)arg;
	msgbus_respond(req, msgbus_req_data(req), msgbus_req_len(req));
}

static struct rtt_result rtt_lib(int rep, uint64_t *lat)
{
	struct rtt_result res = { 0, 0 };
	msgbus_bus *a = open_linked("ra", rep, ""), *b = open_linked("rb", rep, "");
	msgbus_service *svc = NULL;
	unsigned char payload[SIZE];
	long n = 0;
	int err = MSGBUS_ENORESPONDERS;

	memset(payload, 'x', sizeof payload);
	if (!a || !b || msgbus_serve(a, SERVICE, echo, NULL, &svc) != MSGBUS_OK)
		goto fail;
	/* Until the server has A's queue SUB, a request is "no responders". */
	for (int waited = 0; waited < WAIT_MS && err == MSGBUS_ENORESPONDERS; waited += 10) {
		msgbus_msg *m;
		if ((err = msgbus_request(b, SERVICE, payload, SIZE, &m, WAIT_MS)) == MSGBUS_OK)
			msgbus_msg_release(m);
		else
			sleep_ms(10);
	}
	for (long i = 0; err == MSGBUS_OK && i < WARMUP + g_requests; i++) {
		msgbus_msg *m;
		uint64_t t0 = now_ns();
		err = msgbus_request(b, SERVICE, payload, SIZE, &m, WAIT_MS);
		if (err != MSGBUS_OK)
			break;
		uint64_t dt = now_ns() - t0;
		if (msgbus_msg_len(m) != SIZE)
			err = MSGBUS_EINVAL;
		msgbus_msg_release(m);
		if (i >= WARMUP)
			lat[n++] = dt;
	}
	if (err != MSGBUS_OK) {
		fprintf(stderr, "request: %s\n", msgbus_strerror(err));
		goto fail;
	}
	res = rtt_stats(lat, n);
	goto out;
fail:
	g_failures++;
out:
	if (b)
		msgbus_close(b);
	if (a)
		msgbus_close(a);
	return res;
}

/* ---- rtt, half and half (-t mix): where the time goes ------------------------ */

/* A library requester on bus B, the raw responder. */
static struct rtt_result rtt_mix_req(int rep, uint64_t *lat)
{
	struct rtt_result res = { 0, 0 };
	msgbus_bus *b = open_linked("mb", rep, "");
	struct raw *svc = raw_open(SERVICE);
	unsigned char payload[SIZE];
	pthread_t t;
	long n = 0;
	int err = MSGBUS_OK;
	memset(payload, 'x', sizeof payload);
	if (!b || !svc) {
		g_failures++;
		raw_close(svc);
		if (b)
			msgbus_close(b);
		return res;
	}
	pthread_create(&t, NULL, raw_responder, svc);
	for (long i = 0; err == MSGBUS_OK && i < WARMUP + g_requests; i++) {
		msgbus_msg *m;
		uint64_t t0 = now_ns();
		err = msgbus_request(b, SERVICE, payload, SIZE, &m, WAIT_MS);
		if (err == MSGBUS_OK) {
			msgbus_msg_release(m);
			if (i >= WARMUP)
				lat[n++] = now_ns() - t0;
		}
	}
	if (err != MSGBUS_OK) {
		fprintf(stderr, "mix request: %s\n", msgbus_strerror(err));
		g_failures++;
	}
	shutdown(svc->fd, SHUT_RDWR);
	pthread_join(t, NULL);
	raw_close(svc);
	msgbus_close(b);
	return err == MSGBUS_OK ? rtt_stats(lat, n) : res;
}

/* The raw requester, a library worker on bus A. */
static struct rtt_result rtt_mix_rsp(int rep, uint64_t *lat)
{
	struct rtt_result res = { 0, 0 };
	msgbus_bus *a = open_linked("ma", rep, "");
	struct raw *req = raw_open("_INBOX.bench.*");
	msgbus_service *svc = NULL;
	long n = 0;
	bool ok = a && req && msgbus_serve(a, SERVICE, echo, NULL, &svc) == MSGBUS_OK;
	for (long i = 0; ok && i < WARMUP + g_requests; i++) {
		char out[256 + SIZE];
		const char *d;
		size_t l;
		int hl = snprintf(out, sizeof out, "PUB %s _INBOX.bench.%ld %d\r\n", SERVICE, i, SIZE);
		memset(out + hl, 'x', SIZE);
		memcpy(out + hl + SIZE, "\r\n", 2);
		uint64_t t0 = now_ns();
		/* the first ones may find A's queue SUB not yet at the server */
		int got = 0;
		for (int tries = 0; got != 1 && tries < (i < WARMUP ? 100 : 1); tries++) {
			ok = write_all(req->fd, out, (size_t)hl + SIZE + 2) == 0;
			got = ok ? raw_next(req, i < WARMUP ? 50 : WAIT_MS, &d, &l) : -1;
		}
		ok = ok && got == 1 && l == SIZE;
		if (ok && i >= WARMUP)
			lat[n++] = now_ns() - t0;
	}
	if (!ok) {
		fprintf(stderr, "mix: no reply from the library worker\n");
		g_failures++;
	}
	if (svc)
		msgbus_unserve(svc);
	raw_close(req);
	if (a)
		msgbus_close(a);
	return ok ? rtt_stats(lat, n) : res;
}

/* -t alt: raw and library round trips alternating request by request,
 * all connections open at once: both see the same machine at the same
 * moment (what other processes do moves both alike). */
static void rtt_alt(int rep, uint64_t *lat_raw, uint64_t *lat_lib, long *n)
{
	msgbus_bus *a = open_linked("xa", rep, ""), *b = open_linked("xb", rep, "");
	struct raw *svc = raw_open(SERVICE ".raw"), *req = raw_open("_INBOX.bench.*");
	msgbus_service *lsvc = NULL;
	unsigned char payload[SIZE];
	pthread_t t;
	int err = MSGBUS_ENORESPONDERS;
	*n = 0;
	memset(payload, 'x', sizeof payload);
	if (!a || !b || !svc || !req || msgbus_serve(a, SERVICE, echo, NULL, &lsvc) != MSGBUS_OK) {
		g_failures++;
		goto out;
	}
	pthread_create(&t, NULL, raw_responder, svc);
	for (int waited = 0; waited < WAIT_MS && err == MSGBUS_ENORESPONDERS; waited += 10) {
		msgbus_msg *m;
		if ((err = msgbus_request(b, SERVICE, payload, SIZE, &m, WAIT_MS)) == MSGBUS_OK)
			msgbus_msg_release(m);
		else
			sleep_ms(10);
	}
	for (long i = 0; err == MSGBUS_OK && i < WARMUP + g_requests; i++) {
		char out[256 + SIZE];
		const char *d;
		size_t l;
		msgbus_msg *m;
		int hl = snprintf(out, sizeof out, "PUB %s.raw _INBOX.bench.%ld %d\r\n", SERVICE, i,
		                  SIZE);
		memset(out + hl, 'x', SIZE);
		memcpy(out + hl + SIZE, "\r\n", 2);
		uint64_t t0 = now_ns();
		if (write_all(req->fd, out, (size_t)hl + SIZE + 2) ||
		    raw_next(req, WAIT_MS, &d, &l) != 1 || l != SIZE) {
			err = MSGBUS_ETIMEDOUT;
			break;
		}
		uint64_t t1 = now_ns();
		err = msgbus_request(b, SERVICE, payload, SIZE, &m, WAIT_MS);
		if (err != MSGBUS_OK)
			break;
		uint64_t t2 = now_ns();
		msgbus_msg_release(m);
		if (i >= WARMUP) {
			lat_raw[*n] = t1 - t0;
			lat_lib[(*n)++] = t2 - t1;
		}
	}
	if (err != MSGBUS_OK) {
		fprintf(stderr, "alt: %s\n", msgbus_strerror(err));
		g_failures++;
	}
	shutdown(svc->fd, SHUT_RDWR);
	pthread_join(t, NULL);
out:
	if (lsvc)
		msgbus_unserve(lsvc);
	raw_close(svc);
	raw_close(req);
	if (b)
		msgbus_close(b);
	if (a)
		msgbus_close(a);
}

static void run_alt(void)
{
	double rm[MAX_REPS], lm[MAX_REPS], ratio[MAX_REPS];
	uint64_t *lr = calloc((size_t)g_requests + WARMUP, sizeof *lr);
	uint64_t *ll = calloc((size_t)g_requests + WARMUP, sizeof *ll);
	struct load_mark m0, m1;
	if (!lr || !ll) {
		free(lr);
		free(ll);
		g_failures++;
		return;
	}
	load_sample(&m0);
	for (int r = 0; r < g_reps; r++) {
		long n;
		rtt_alt(r, lr, ll, &n);
		rm[r] = rtt_stats(lr, n).median_us;
		lm[r] = rtt_stats(ll, n).median_us;
		ratio[r] = rm[r] > 0 ? lm[r] / rm[r] : 0;
		if (g_verbose)
			printf("  run %d: raw %.1f us, msgbus %.1f us\n", r + 1, rm[r], lm[r]);
	}
	load_sample(&m1);
	free(lr);
	free(ll);
	printf("rtt alt    raw %6.1f us   msgbus %6.1f us   ratio %.2f (median of the runs' "
	       "ratios)\n",
	       median_dbl(rm, g_reps), median_dbl(lm, g_reps), median_dbl(ratio, g_reps));
	if (load_other_pct(&m0, &m1) >= 5.0)
		printf("           other processes used %.0f%% of the machine: figures are "
		       "disturbed\n",
		       load_other_pct(&m0, &m1));
}

static void run_mix(void)
{
	double rm[MAX_REPS], qm[MAX_REPS], sm[MAX_REPS];
	uint64_t *lat = calloc((size_t)g_requests + WARMUP, sizeof *lat);
	if (!lat) {
		g_failures++;
		return;
	}
	for (int r = 0; r < g_reps; r++) {
		rm[r] = rtt_raw(lat).median_us;
		qm[r] = rtt_mix_req(r, lat).median_us;
		sm[r] = rtt_mix_rsp(r, lat).median_us;
	}
	free(lat);
	double mr = median_dbl(rm, g_reps);
	printf("rtt mix    raw %6.1f us   library requester %6.1f us (%.2fx)   "
	       "library worker %6.1f us (%.2fx)\n",
	       mr, median_dbl(qm, g_reps), median_dbl(qm, g_reps) / mr, median_dbl(sm, g_reps),
	       median_dbl(sm, g_reps) / mr);
}

/* ---- driver ---------------------------------------------------------------- */

/* The figure with the links' URLs ending in query; target: whether the
 * 0.7 target applies to this row. */
static void run_pub(const char *query, bool target)
{
	double raw[MAX_REPS], lib[MAX_REPS], raw_off[MAX_REPS], lib_off[MAX_REPS];
	long lost_raw = 0, lost_lib = 0, undel = 0;
	struct load_mark m0, m1;
	load_sample(&m0);
	for (int r = 0; r < g_reps; r++) {
		struct pub_result x = pub_raw(), y = pub_lib(r, query);
		raw[r] = x.rate;
		lib[r] = y.rate;
		raw_off[r] = x.offered;
		lib_off[r] = y.offered;
		lost_raw += g_count - x.got;
		lost_lib += g_count - y.got;
		undel += y.undelivered;
		if (x.got == 0 || y.got == 0) {
			fprintf(stderr, "pub run %d: nothing arrived (raw %ld, msgbus %ld)\n", r + 1,
			        x.got, y.got);
			g_failures++;
		}
		if (g_verbose)
			printf("  run %d: raw %.0f msgs/s (%ld got), msgbus %.0f msgs/s (%ld got, "
			       "%ld undelivered)\n",
			       r + 1, x.rate, x.got, y.rate, y.got, y.undelivered);
	}
	load_sample(&m1);
	double mr = median_dbl(raw, g_reps), ml = median_dbl(lib, g_reps);
	double ratio = mr > 0 ? ml / mr : 0;
	printf("pub 64 B%s\n", *query ? query : " (default URL: lossy follower)");
	printf("           raw %10.0f msgs/s   msgbus %10.0f msgs/s   ratio %.2f  %s\n", mr, ml,
	       ratio, !target ? "(no target)" : ratio >= 0.7 ? "PASS (>= 0.70)" : "MISS (>= 0.70)");
	printf("           offered (publish calls/s): raw %.0f, msgbus %.0f\n",
	       median_dbl(raw_off, g_reps), median_dbl(lib_off, g_reps));
	printf("           not received of %ld x %d: raw %ld, msgbus %ld (links' undelivered %ld)\n",
	       g_count, g_reps, lost_raw, lost_lib, undel);
	if (load_other_pct(&m0, &m1) >= 5.0)
		printf("           other processes used %.0f%% of the machine: figures are "
		       "disturbed\n",
		       load_other_pct(&m0, &m1));
}

static void run_rtt(void)
{
	double rm[MAX_REPS], rp[MAX_REPS], lm[MAX_REPS], lp[MAX_REPS];
	uint64_t *lat = calloc((size_t)g_requests + WARMUP, sizeof *lat);
	struct load_mark m0, m1;
	if (!lat) {
		g_failures++;
		return;
	}
	load_sample(&m0);
	for (int r = 0; r < g_reps; r++) {
		struct rtt_result x = rtt_raw(lat), y = rtt_lib(r, lat);
		rm[r] = x.median_us;
		rp[r] = x.p99_us;
		lm[r] = y.median_us;
		lp[r] = y.p99_us;
		if (g_verbose)
			printf("  run %d: raw %.1f/%.1f us, msgbus %.1f/%.1f us\n", r + 1,
			       x.median_us, x.p99_us, y.median_us, y.p99_us);
	}
	load_sample(&m1);
	free(lat);
	double mr = median_dbl(rm, g_reps), ml = median_dbl(lm, g_reps);
	double ratio = mr > 0 ? ml / mr : 0;
	printf("rtt 64 B   raw %6.1f us (p99 %6.1f)   msgbus %6.1f us (p99 %6.1f)   ratio %.2f  "
	       "%s (<= 1.30)\n",
	       mr, median_dbl(rp, g_reps), ml, median_dbl(lp, g_reps), ratio,
	       ratio > 0 && ratio <= 1.3 ? "PASS" : "MISS");
	if (load_other_pct(&m0, &m1) >= 5.0)
		printf("           other processes used %.0f%% of the machine: figures are "
		       "disturbed\n",
		       load_other_pct(&m0, &m1));
}

static int usage(void)
{
	fprintf(stderr,
	        "usage: bench_nats [-n COUNT] [-q REQUESTS] [-r REPS] [-t pub,rtt,alt,mix] [-v]\n");
	return 2;
}

int main(int argc, char **argv)
{
	const char *path = natsd_path();
	int opt;
	while ((opt = getopt(argc, argv, "n:q:r:t:vh")) != -1) {
		if (opt == 'n')
			g_count = atol(optarg);
		else if (opt == 'q')
			g_requests = atol(optarg);
		else if (opt == 'r')
			g_reps = atoi(optarg);
		else if (opt == 't')
			g_tests = optarg;
		else if (opt == 'v')
			g_verbose = 1;
		else
			return usage();
	}
	if (g_count < 1 || g_requests < 1 || g_reps < 1 || g_reps > MAX_REPS)
		return usage();
	if (!path) {
		printf("SKIP bench_nats: nats-server is not installed\n");
		return 0;
	}
	signal(SIGPIPE, SIG_IGN);
	if (natsd_start(path) != 0) {
		fprintf(stderr, "bench_nats: nats-server did not start\n");
		return 1;
	}
	printf("bench_nats: nats-server on 127.0.0.1:%d, %d runs each, medians\n", g_port,
	       g_reps);
	fflush(stdout);
	if (strstr(g_tests, "pub")) {
		run_pub("?lossless=1", true);
		fflush(stdout);
		run_pub("", false);
	}
	fflush(stdout);
	if (strstr(g_tests, "rtt"))
		run_rtt();
	fflush(stdout);
	if (strstr(g_tests, "mix"))
		run_mix();
	fflush(stdout);
	if (strstr(g_tests, "alt"))
		run_alt();
	natsd_stop();
	return g_failures ? 1 : 0;
}
