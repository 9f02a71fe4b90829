/*
 * check_tcp_dos.c - hostile TCP peers against a bus's links (issue 13,
 * items 3 to 8). Each peer is a raw socket on 127.0.0.1 in the test
 * process, speaking msgbus-wire(7) by hand (or not at all):
 *
 *  stalled    a peer that subscribes to everything, PINGs, and never reads
 *             is dropped within the heartbeat bound; a local publisher to a
 *             local lossless subscriber never times out meanwhile
 *  handshake  silent connections take no participant slot; a HELLO
 *             trickled byte by byte is cut at the deadline; max_pending
 *             and max_conns are enforced; bad limits are MSGBUS_EINVAL
 *  first      a first frame claiming a large body is refused on its header
 *  patterns   50,000 SUBs cost little; the default cap closes the link
 *  subjects   a peer publishing on many subjects leaves room in the
 *             subject table for local publishers
 *  backoff    a server answering HELLO then junk sees few reconnections
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/socket.h>

#include "test_util.h"

Suite *suite_tcp_dos(void);

#define DOS_CASE_TIMEOUT 30 /* seconds, per case */
#define DEAD_AFTER_MS 5000  /* the library's heartbeat bound (conn_state.h) */
#define HANDSHAKE_MS 2000   /* the library's handshake deadline */
#define PROMPT_MS 1000.0    /* "promptly": well before any deadline */

/* ---- frames by hand --------------------------------------------------- */

enum { F_HELLO = 1, F_SUB, F_UNSUB, F_SERVE, F_UNSERVE, F_MSG, F_REQ, F_REP, F_PING, F_PONG };

static void put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int i = n - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static size_t f_hdr(uint8_t *p, uint8_t type, uint32_t body_len)
{
	memcpy(p, "MBW1", 4);
	p[4] = 1;
	p[5] = type;
	put_le(p + 6, 0, 2);
	put_le(p + 8, body_len, 4);
	return 12;
}

static size_t f_hello(uint8_t *p, uint64_t node)
{
	f_hdr(p, F_HELLO, 16);
	put_le(p + 12, 1, 2);
	put_le(p + 14, 1, 2);
	put_le(p + 16, 1u << 20, 4);
	put_le(p + 20, node, 8);
	return 28;
}

/* SUB, SERVE, ... and MSG (name, then len bytes of data). */
static size_t f_named(uint8_t *p, uint8_t type, const char *name, size_t len)
{
	size_t n = strlen(name);
	put_le(p + 12, n, 2);
	memcpy(p + 14, name, n);
	memset(p + 14 + n, 'x', len);
	f_hdr(p, type, (uint32_t)(2 + n + len));
	return 14 + n + len;
}

static size_t f_ping(uint8_t *p, uint64_t token)
{
	f_hdr(p, F_PING, 8);
	put_le(p + 12, token, 8);
	return 20;
}

/* ---- a raw peer --------------------------------------------------------- */

static int raw_connect(int port, int rcvbuf)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int one = 1;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_msg(fd >= 0, "socket: %s", strerror(errno));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (rcvbuf) /* before connect: it sets the window */
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	ck_assert_msg(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect: %s",
	              strerror(errno));
	return fd;
}

#define RAW_SEND(fd, buf, len) \
	ck_assert_msg(tu_send_all((fd), (buf), (len)) == 0, "send: %s", strerror(errno))

/* Reads len bytes by the deadline: 1, 0 when the library closed, -1 at
 * the deadline. */
static int raw_read(int fd, uint8_t *buf, size_t len, double end)
{
	for (size_t got = 0; got < len;) {
		struct pollfd pfd = { fd, POLLIN, 0 };
		int left = (int)(end - tu_now_ms());
		if (left < 0 || poll(&pfd, 1, left) == 0)
			return -1;
		ssize_t n = recv(fd, buf + got, len - got, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return 0;
		got += (size_t)n;
	}
	return 1;
}

/* The next frame's type and body (up to bsize bytes kept): 1, 0 closed,
 * -1 at the timeout. */
static int raw_frame(int fd, uint8_t *type, uint8_t *body, size_t bsize, int timeout_ms)
{
	double end = tu_now_ms() + timeout_ms;
	uint8_t h[12], skip[256];
	int rc = raw_read(fd, h, 12, end);
	if (rc != 1)
		return rc;
	ck_assert_msg(memcmp(h, "MBW1", 4) == 0, "library sent a bad magic");
	size_t blen = get_le(h + 8, 4);
	*type = h[5];
	for (size_t off = 0; off < blen;) {
		size_t k = blen - off < sizeof(skip) ? blen - off : sizeof(skip);
		if ((rc = raw_read(fd, skip, k, end)) != 1)
			return rc;
		if (off < bsize)
			memcpy(body + off, skip, k < bsize - off ? k : bsize - off);
		off += k;
	}
	return 1;
}

/* Waits for the library's HELLO: 1, 0 when it closed instead, -1 timeout. */
static int raw_hello(int fd, int timeout_ms)
{
	uint8_t type, body[16];
	int rc = raw_frame(fd, &type, body, sizeof(body), timeout_ms);
	ck_assert_msg(rc != 1 || type == F_HELLO, "first frame of type %u", type);
	return rc;
}

/* Until the library closes fd (whatever it sends first is skipped): 0, or
 * -1 at the timeout. */
static int raw_wait_closed(int fd, int timeout_ms)
{
	double end = tu_now_ms() + timeout_ms;
	uint8_t buf[4096];
	for (;;) {
		struct pollfd pfd = { fd, POLLIN, 0 };
		int left = (int)(end - tu_now_ms());
		if (left < 0 || poll(&pfd, 1, left) == 0)
			return -1;
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n == 0 || (n < 0 && errno != EINTR))
			return 0;
	}
}

/* A peer that completed the handshake. */
static int raw_linked(int port, int rcvbuf)
{
	uint8_t f[32];
	int fd = raw_connect(port, rcvbuf);
	ck_assert_msg(raw_hello(fd, TU_WAIT_MS) == 1, "no HELLO from the library");
	RAW_SEND(fd, f, f_hello(f, 0x1234567890abcdefULL));
	return fd;
}

/* PING and wait for its PONG: the library has handled every frame sent
 * before. 1, or 0 when it closed. */
static int raw_sync(int fd, uint64_t token, int timeout_ms)
{
	uint8_t f[32], type, body[8];
	double end = tu_now_ms() + timeout_ms;
	if (tu_send_all(fd, f, f_ping(f, token)))
		return 0;
	for (;;) {
		int rc = raw_frame(fd, &type, body, sizeof(body), (int)(end - tu_now_ms()));
		ck_assert_msg(rc >= 0, "no PONG %llu in %d ms", (unsigned long long)token,
		              timeout_ms);
		if (rc == 0)
			return 0;
		if (type == F_PONG && get_le(body, 8) == token)
			return 1;
	}
}

static msgbus_link_stats link_stats(msgbus_bus *bus)
{
	msgbus_link_stats st;
	TU_ASSERT_OK(msgbus_link_stats_get(bus, &st));
	return st;
}

/* Polls the link statistics of bus (as `st`) until cond, TU_WAIT_MS. */
#define WAIT_LINK(bus, what, cond)                                                  \
	do {                                                                        \
		msgbus_link_stats st;                                               \
		double wl_end_ = tu_now_ms() + TU_WAIT_MS;                          \
		for (;;) {                                                          \
			st = link_stats(bus);                                       \
			if (cond)                                                   \
				break;                                              \
			ck_assert_msg(tu_now_ms() < wl_end_,                        \
			              "%s: (%s) not reached: links_up %u subs %u "  \
			              "undelivered %llu bad_frames %llu",           \
			              (what), #cond, st.links_up, st.remote_subs,   \
			              (unsigned long long)st.undelivered,           \
			              (unsigned long long)st.bad_frames);           \
			tu_sleep_ms(1);                                             \
		}                                                                   \
	} while (0)

static int listen_lo(msgbus_bus *bus, const char *query)
{
	char url[128];
	int port = -1;
	snprintf(url, sizeof(url), "tcp://127.0.0.1:0%s", query);
	TU_ASSERT_OK(msgbus_listen(bus, url, &port));
	ck_assert_msg(port > 0, "listen returned port %d", port);
	return port;
}

static void close_bus(msgbus_bus *bus, const char *url)
{
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url);
}

/* ---- 3: a peer that stops reading ------------------------------------------ */

#define STALL_MSG (16u << 10)
#define STALL_TIMEOUT_MS 8000 /* above the heartbeat bound */

/* The stalled peer's heartbeat, from a thread of its own: the test's
 * thread may be held back in a publish. */
struct pinger {
	int fd;
	atomic_bool stop;
	pthread_t thread;
};

static void *pinger_main(void *arg)
{
	struct pinger *p = arg;
	uint8_t f[32];
	for (uint64_t token = 1; !atomic_load(&p->stop); token++) {
		if (tu_send_all(p->fd, f, f_ping(f, token)))
			break; /* closed */
		tu_sleep_ms(500);
	}
	return NULL;
}

/*
 * The peer subscribes to everything, keeps PINGing and never reads. The
 * local publisher (timeout above the heartbeat bound) feeds a local
 * lossless subscriber it drains itself: only the link can hold it back.
 * Before the fix, the link's tx thread blocked in sendmsg for ever and the
 * publisher timed out.
 */
START_TEST(test_stalled_reader_dropped)
{
	char url[96];
	static uint8_t data[STALL_MSG];
	uint8_t f[300];
	msgbus_sub *sub;
	msgbus_msg *m;

	tu_unique_url(url, sizeof(url), "shm");
	msgbus_bus *a = tu_open(url, NULL);
	TU_ASSERT_OK(msgbus_subscribe(a, "stall.x", 0, &sub));
	int port = listen_lo(a, "");
	int fd = raw_linked(port, 4096);
	RAW_SEND(fd, f, f_named(f, F_SUB, ">", 0));
	WAIT_LINK(a, "peer subscribed", st.links_up == 1 && st.remote_subs == 1);

	struct pinger pg = { .fd = fd };
	ck_assert_int_eq(pthread_create(&pg.thread, NULL, pinger_main, &pg), 0);
	double start = tu_now_ms(), stall = 0, down = 0, slowest = 0;
	uint32_t n = 0, after = 0;
	while (after < 200) {
		double now = tu_now_ms();
		ck_assert_msg(now - start < 4 * DEAD_AFTER_MS, "the link was not dropped: %u published",
		              n);
		int rc = msgbus_publish(a, "stall.x", data, sizeof(data), STALL_TIMEOUT_MS);
		double took = tu_now_ms() - now;
		ck_assert_msg(rc == MSGBUS_OK, "publish %u after %.0f ms: %s (link up %u)", n, took,
		              msgbus_strerror(rc), link_stats(a).links_up);
		if (took > slowest)
			slowest = took;
		if (took > 100 && !stall)
			stall = now; /* the link holds the publisher back */
		TU_ASSERT_OK(msgbus_recv(sub, &m, 0));
		msgbus_msg_release(m);
		n++;
		if (!down && link_stats(a).links_up == 0)
			down = tu_now_ms();
		after += down != 0;
	}
	atomic_store(&pg.stop, true);
	pthread_join(pg.thread, NULL);
	ck_assert_msg(stall, "the publisher was never held back: the peer's window never filled");
	/* no byte taken for DEAD_AFTER_MS: dropped, with slack for the
	 * time the socket took to fill and for sanitizers */
	ck_assert_msg(down - stall < DEAD_AFTER_MS + 3000, "dropped %.0f ms after the stall",
	              down - stall);
	msgbus_link_stats s = link_stats(a);
	ck_assert_msg(s.undelivered > 0, "nothing counted undelivered at the drop");
	fprintf(stderr, "check_tcp_dos: stalled peer dropped %.0f ms after the stall, slowest "
	        "publish %.0f ms, %llu undelivered\n", down - stall, slowest,
	        (unsigned long long)s.undelivered);
	close(fd);
	close_bus(a, url);
}
END_TEST

/* ---- 4: the handshake --------------------------------------------------------- */

#define SILENT 12

/* Silent connections (no HELLO) take no participant slot. Before the fix
 * each opened a handle on accept, and the next msgbus_open got ELIMIT. */
START_TEST(test_silent_take_no_slot)
{
	char url[96];
	int fds[SILENT];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	o.max_participants = 8;

	tu_unique_url(url, sizeof(url), "shm");
	msgbus_bus *a = tu_open(url, &o);
	int port = listen_lo(a, ""); /* the defaults */
	for (int i = 0; i < SILENT; i++)
		fds[i] = raw_connect(port, 0);
	/* The library says HELLO to each (or closes it) once it took it. */
	for (int i = 0; i < SILENT; i++)
		ck_assert_msg(raw_hello(fds[i], TU_WAIT_MS) >= 0, "connection %d: no answer", i);
	msgbus_bus *b = NULL;
	int rc = msgbus_open(&b, url, NULL);
	ck_assert_msg(rc == MSGBUS_OK, "msgbus_open with %d silent connections: %s", SILENT,
	              msgbus_strerror(rc));
	TU_ASSERT_OK(msgbus_close(b));
	for (int i = 0; i < SILENT; i++)
		close(fds[i]);
	close_bus(a, url);
}
END_TEST

/* A HELLO trickled a byte every 200 ms (5.6 s in all) is cut at the
 * deadline. Before the fix it held the connection as long as it liked. */
START_TEST(test_trickled_hello_cut)
{
	char url[96];
	uint8_t hello[32];

	tu_unique_url(url, sizeof(url), "inproc");
	msgbus_bus *a = tu_open(url, NULL);
	int port = listen_lo(a, "");
	int fd = raw_connect(port, 0);
	ck_assert_int_eq(raw_hello(fd, TU_WAIT_MS), 1);
	size_t len = f_hello(hello, 42), sent = 0;
	double start = tu_now_ms(), closed = 0;
	while (!closed && sent < len - 1) {
		if (tu_send_all(fd, hello + sent, 1))
			closed = tu_now_ms();
		else
			sent++;
		if (!closed && raw_wait_closed(fd, 200) == 0)
			closed = tu_now_ms();
	}
	ck_assert_msg(closed, "the connection lasted %.0f ms, %zu of %zu HELLO bytes sent",
	              tu_now_ms() - start, sent, len);
	ck_assert_msg(closed - start < HANDSHAKE_MS + PROMPT_MS, "closed after %.0f ms",
	              closed - start);
	ck_assert_uint_eq(link_stats(a).links_up, 0);
	close(fd);
	close_bus(a, url);
}
END_TEST

/* Connects until the library answers with HELLO (a slot of a connection
 * just closed may take a moment to come back), then says HELLO. */
static int linked_retry(int port)
{
	uint8_t f[32];
	double end = tu_now_ms() + TU_WAIT_MS;
	for (;;) {
		int fd = raw_connect(port, 0);
		if (raw_hello(fd, TU_WAIT_MS) == 1) {
			RAW_SEND(fd, f, f_hello(f, 0x1234567890abcdefULL));
			return fd;
		}
		close(fd);
		ck_assert_msg(tu_now_ms() < end, "the listener never took a connection");
		tu_sleep_ms(10);
	}
}

START_TEST(test_listener_caps)
{
	char url[96];
	int fds[3];

	tu_unique_url(url, sizeof(url), "inproc");
	msgbus_bus *a = tu_open(url, NULL);
	int port = listen_lo(a, "?max_pending=2&max_conns=3");
	/* max_pending: a third handshake at once is closed at once */
	for (int i = 0; i < 2; i++) {
		fds[i] = raw_connect(port, 0);
		ck_assert_int_eq(raw_hello(fds[i], TU_WAIT_MS), 1);
	}
	int extra = raw_connect(port, 0);
	double t0 = tu_now_ms();
	ck_assert_msg(raw_wait_closed(extra, (int)PROMPT_MS) == 0,
	              "a third pending handshake was not refused");
	ck_assert_msg(tu_now_ms() - t0 < PROMPT_MS, "refused late");
	close(extra);
	for (int i = 0; i < 2; i++)
		close(fds[i]);
	/* max_conns: three links, and a fourth is closed before HELLO */
	for (int i = 0; i < 3; i++) {
		fds[i] = linked_retry(port);
		WAIT_LINK(a, "link up", st.links_up == (uint32_t)i + 1);
	}
	extra = raw_connect(port, 0);
	ck_assert_msg(raw_hello(extra, (int)PROMPT_MS) == 0, "a fourth connection was taken");
	close(extra);
	for (int i = 0; i < 3; i++)
		close(fds[i]);
	WAIT_LINK(a, "links gone", st.links_up == 0);

	static const char *const bad[] = {
		"?max_conns=0", "?max_conns=513", "?max_pending=x", "?max_pending=",
		"?max_patterns=65537", "?max_conns=1&", "?", "?bogus=1", "?max_conns",
		"?max_conns=99999999999", "?max_conns=-1",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char u[96];
		snprintf(u, sizeof(u), "tcp://127.0.0.1:0%s", bad[i]);
		TU_ASSERT_RC(msgbus_listen(a, u, NULL), MSGBUS_EINVAL);
		TU_ASSERT_RC(msgbus_connect(a, u), MSGBUS_EINVAL);
	}
	/* a connector has no listener's limits */
	TU_ASSERT_RC(msgbus_connect(a, "tcp://127.0.0.1:1?max_conns=4"), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_connect(a, "tcp://127.0.0.1:1?max_pending=4"), MSGBUS_EINVAL);
	close_bus(a, url);
}
END_TEST

/* ---- 5: the first frame -------------------------------------------------------- */

/* A first header claiming a 1 MiB MSG (within the bus's max frame) is
 * refused on the header alone. Before the fix the library waited for the
 * whole body (any size up to max_msg_size + 1 KiB) before refusing it. */
START_TEST(test_first_frame_refused_on_header)
{
	char url[96];
	uint8_t h[12];

	tu_unique_url(url, sizeof(url), "inproc");
	msgbus_bus *a = tu_open(url, NULL);
	int port = listen_lo(a, "");
	int fd = raw_connect(port, 0);
	ck_assert_int_eq(raw_hello(fd, TU_WAIT_MS), 1);
	RAW_SEND(fd, h, f_hdr(h, F_MSG, 1u << 20));
	double t0 = tu_now_ms();
	ck_assert_msg(raw_wait_closed(fd, (int)PROMPT_MS) == 0,
	              "still open %.0f ms after a 1 MiB first header, no body sent",
	              tu_now_ms() - t0);
	WAIT_LINK(a, "counted", st.bad_frames == 1);
	close(fd);
	close_bus(a, url);
}
END_TEST

/* ---- 6: SUB flooding ----------------------------------------------------------- */

#define FLOOD 50000

/* CPU time of this process, all threads (the link's included), in ms. */
static double process_cpu_ms(void)
{
	struct rusage ru;
	ck_assert_int_eq(getrusage(RUSAGE_SELF, &ru), 0);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

/* Sends SUB "flood.<i>" for i in [0, n); stops if the library closes. */
static uint32_t send_subs(int fd, uint32_t n)
{
	static uint8_t batch[64 << 10];
	uint32_t i = 0;
	while (i < n) {
		size_t len = 0;
		for (; i < n && len + 300 < sizeof(batch); i++) {
			char name[32];
			snprintf(name, sizeof(name), "flood.%u", i);
			len += f_named(batch + len, F_SUB, name, 0);
		}
		if (tu_send_all(fd, batch, len))
			break;
	}
	return i;
}

/* With the cap raised, a flood of 50,000 SUBs costs bounded CPU: each
 * pattern takes a subscription slot, so the link closes with a protocol
 * error once the bus has none left, and gives them all back. Before the
 * linear-search fix the SUBs cost about 6 s of CPU. */
START_TEST(test_sub_flood_linear)
{
	char url[96];

	tu_unique_url(url, sizeof(url), "inproc");
	msgbus_bus *a = tu_open(url, NULL);
	int port = listen_lo(a, "?max_patterns=60000");
	int fd = raw_linked(port, 0);
	double t0 = tu_now_ms(), cpu0 = process_cpu_ms();
	send_subs(fd, FLOOD);
	ck_assert_msg(raw_wait_closed(fd, 20000) == 0, "more SUBs than slots did not close");
	WAIT_LINK(a, "closed and counted", st.links_up == 0 && st.bad_frames == 1);
	double took = tu_now_ms() - t0, cpu = process_cpu_ms() - cpu0;
	size_t n = 1;
	msgbus_sub_info si[4];
	for (double end = tu_now_ms() + TU_WAIT_MS; n && tu_now_ms() < end; tu_sleep_ms(1))
		TU_ASSERT_OK(msgbus_subscriptions(a, si, 4, &n));
	ck_assert_msg(n == 0, "%zu subscription slots kept after the link closed", n);
	fprintf(stderr, "check_tcp_dos: SUB flood refused in %.0f ms, %.0f ms of CPU\n", took,
	        cpu);
	/* CPU, not wall time: other processes may have the cores */
	ck_assert_msg(cpu < 1000, "a SUB flood cost %.0f ms of CPU", cpu);
	close(fd);
	close_bus(a, url);
}
END_TEST

/* By default a link takes at most 1024 patterns (the largest max_subs a
 * peer bus can have); the 1025th is a protocol error that closes it. */
START_TEST(test_sub_flood_capped)
{
	char url[96];

	tu_unique_url(url, sizeof(url), "inproc");
	msgbus_bus *a = tu_open(url, NULL);
	int port = listen_lo(a, "");
	int fd = raw_linked(port, 0);
	send_subs(fd, FLOOD);
	ck_assert_msg(raw_wait_closed(fd, TU_WAIT_MS) == 0, "a flood of SUBs did not close the link");
	WAIT_LINK(a, "closed and counted", st.links_up == 0 && st.bad_frames == 1);
	/* A link counted down has given its peer's patterns back: linking
	 * again at once finds every slot free. */
	size_t n = 1;
	msgbus_sub_info si[4];
	TU_ASSERT_OK(msgbus_subscriptions(a, si, 4, &n));
	ck_assert_msg(n == 0, "%zu subscription slots kept by a link counted down", n);
	close(fd);
	/* SERVE names count too */
	port = listen_lo(a, "?max_patterns=3");
	fd = raw_linked(port, 0);
	uint8_t f[64];
	RAW_SEND(fd, f, f_named(f, F_SUB, "cap.a", 0));
	RAW_SEND(fd, f, f_named(f, F_SERVE, "cap.svc", 0));
	RAW_SEND(fd, f, f_named(f, F_SUB, "cap.a", 0)); /* a repeat is no new one */
	RAW_SEND(fd, f, f_named(f, F_SUB, "cap.b", 0));
	ck_assert_int_eq(raw_sync(fd, 9, TU_WAIT_MS), 1);
	WAIT_LINK(a, "three taken", st.remote_subs == 2 && st.remote_services == 1);
	tu_send_all(fd, f, f_named(f, F_SERVE, "cap.svc2", 0));
	ck_assert_msg(raw_wait_closed(fd, TU_WAIT_MS) == 0, "a 4th SERVE did not close the link");
	WAIT_LINK(a, "closed and counted", st.links_up == 0 && st.bad_frames == 2);
	close(fd);
	close_bus(a, url);
}
END_TEST

/* ---- 7: the subject table ------------------------------------------------------ */

#define REMOTE_SUBJECTS 40 /* more than the table's 32 */

/* A peer publishing on 40 subjects (more than the 32 of max_subjects)
 * takes nothing from local publishers: v2 subjects take no table entry, so
 * every message is published (v1 kept a quarter of the table for local
 * publishers and counted the rest undelivered). */
START_TEST(test_remote_subjects_capped)
{
	char url[96];
	uint8_t f[300];

	tu_unique_url(url, sizeof(url), "inproc");
	msgbus_bus *a = tu_open(url, NULL);
	int port = listen_lo(a, "");
	int fd = raw_linked(port, 0);
	for (int i = 0; i < REMOTE_SUBJECTS; i++) {
		char name[32];
		snprintf(name, sizeof(name), "remote.%d", i);
		RAW_SEND(fd, f, f_named(f, F_MSG, name, 8));
	}
	ck_assert_int_eq(raw_sync(fd, 11, TU_WAIT_MS), 1);
	msgbus_link_stats s = link_stats(a);
	ck_assert_uint_eq(s.received + s.undelivered, REMOTE_SUBJECTS);
	ck_assert_msg(s.received == REMOTE_SUBJECTS && s.undelivered == 0,
	              "received %llu undelivered %llu, want 40 and 0",
	              (unsigned long long)s.received, (unsigned long long)s.undelivered);
	for (int i = 0; i < 8; i++) {
		char name[32];
		snprintf(name, sizeof(name), "local.%d", i);
		TU_ASSERT_OK(msgbus_publish(a, name, "x", 1, 0));
	}
	close(fd);
	close_bus(a, url);
}
END_TEST

/* ---- 8: reconnecting ----------------------------------------------------------- */

#define BACKOFF_WINDOW_MS 3000.0

/* A server that answers HELLO, then junk. Before the fix the connector
 * reconnected at once each time: hundreds of connections in 3 s. */
START_TEST(test_connector_backs_off)
{
	char url[96], target[64];
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	int one = 1;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	ck_assert_msg(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(lfd, 64) == 0 &&
	              getsockname(lfd, (struct sockaddr *)&sa, &sl) == 0,
	              "raw listener: %s", strerror(errno));
	tu_unique_url(url, sizeof(url), "inproc");
	msgbus_bus *b = tu_open(url, NULL);
	snprintf(target, sizeof(target), "tcp://127.0.0.1:%u", ntohs(sa.sin_port));
	TU_ASSERT_OK(msgbus_connect(b, target));
	int accepted = 0;
	double end = tu_now_ms() + BACKOFF_WINDOW_MS;
	for (double now; (now = tu_now_ms()) < end;) {
		struct pollfd pfd = { lfd, POLLIN, 0 };
		if (poll(&pfd, 1, (int)(end - now) + 1) <= 0)
			continue;
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		uint8_t f[40];
		size_t n = f_hello(f, 77);
		memcpy(f + n, "JUNKJUNKJUNK", 12);
		tu_send_all(fd, f, n + 12);
		close(fd);
		accepted++;
	}
	fprintf(stderr, "check_tcp_dos: %d connections in %.0f ms\n", accepted, BACKOFF_WINDOW_MS);
	ck_assert_msg(accepted >= 2, "the connector did not try again (%d)", accepted);
	ck_assert_msg(accepted < 10, "%d connections in %.0f ms: no backoff", accepted,
	              BACKOFF_WINDOW_MS);
	TU_ASSERT_OK(msgbus_close(b));
	close(lfd);
}
END_TEST

Suite *suite_tcp_dos(void)
{
	Suite *s = suite_create("tcp_dos");
	TCase *tc = tu_tcase("tcp_dos handshake", DOS_CASE_TIMEOUT);
	tcase_add_test(tc, test_silent_take_no_slot);
	tcase_add_test(tc, test_trickled_hello_cut);
	tcase_add_test(tc, test_listener_caps);
	tcase_add_test(tc, test_first_frame_refused_on_header);
	suite_add_tcase(s, tc);

	tc = tu_tcase("tcp_dos interest", DOS_CASE_TIMEOUT);
	tcase_add_test(tc, test_sub_flood_linear);
	tcase_add_test(tc, test_sub_flood_capped);
	tcase_add_test(tc, test_remote_subjects_capped);
	suite_add_tcase(s, tc);

	if (tu_valgrind())
		return s; /* the rest waits on heartbeats and backoffs */
	tc = tu_tcase("tcp_dos stalls", DOS_CASE_TIMEOUT);
	tcase_add_test(tc, test_stalled_reader_dropped);
	tcase_add_test(tc, test_connector_backs_off);
	suite_add_tcase(s, tc);
	return s;
}
