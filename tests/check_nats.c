/*
 * check_nats.c - nats:// links: the client protocol codec
 * (lib/link/nats_proto.c) and links through a real nats-server.
 *
 *  codec     INFO fields, MSG and HMSG (the 503 status), PING/PONG/+OK/-ERR,
 *            items split anywhere, the limits (a line over 4096 bytes, a
 *            payload over max_payload, a truncated payload, garbage), and
 *            the encoders' exact bytes
 *  server    two buses through one nats-server the test starts on a free
 *            loopback port and stops by PID: pub/sub both ways (contents,
 *            order), no loop with both subscribed, one SUB per distinct
 *            pattern (the server's /connz), credentials good and bad, a
 *            message over max_payload refused and counted, reconnection
 *            after the server is killed and restarted, ?export=, request/
 *            reply both ways, 503 -> MSGBUS_ENORESPONDERS at once, a
 *            timeout, a request in flight at a drop -> MSGBUS_EPEERDIED,
 *            a queue group over two buses, a full bus dropping (counted)
 *            what NATS sends without stalling the link; a 3-node cluster
 *            where a bus told of one node resumes through another (learnt
 *            from connect_urls) within 3 s of that node's death; a leaf
 *            node (messages and a request from the hub to the leaf)
 *  fake      a fake server from the test: garbage, an oversize MSG, a line
 *            over 4096 bytes, a payload not ended by CRLF: each closes the
 *            connection (bad_frames) and the process is unharmed; a
 *            requester reading the connection while it waits (PING
 *            answered, a MSG delivered, a split reply, a timeout, bad
 *            input -> MSGBUS_EPEERDIED at once, msgbus_shutdown within
 *            100 ms)
 * Without nats-server installed (or with NATS_SERVER set empty), the suite
 * says so in one line and the server cases pass without running; the
 * fake-server case runs anyway.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"
#include "link/nats_proto.h"
#include "shm/handle.h"

Suite *suite_nats(void);

/* ---- codec ------------------------------------------------------------------- */

static long parse_str(const char *s, uint64_t maxp, struct mb_nats_in *in,
                      struct mb_nats_info *info)
{
	const char *why = NULL;
	long n = mb_nats_parse((const uint8_t *)s, strlen(s), maxp, in, info, &why);
	if (n == MB_NATS_BAD)
		ck_assert_ptr_nonnull(why);
	return n;
}

START_TEST(test_codec_info)
{
	const char *s = "INFO {\"server_id\":\"NABC\",\"version\":\"2.9.10\",\"proto\":1,"
	                "\"go\":\"go1.19\",\"headers\":true,\"max_payload\":1048576,"
	                "\"nested\":{\"a\":[1,2,{\"b\":null}]},\"x\":-1.5e3,"
	                "\"connect_urls\":[\"127.0.0.1:4222\",\"10.0.0.6:4223\"]}\r\nPING\r\n";
	struct mb_nats_in in;
	struct mb_nats_info info;
	long n = parse_str(s, 1024, &in, &info);
	ck_assert_int_eq(n, (long)(strchr(s, '\n') - s + 1));
	ck_assert_int_eq(in.op, MB_NATS_INFO);
	ck_assert_str_eq(info.server_id, "NABC");
	ck_assert_str_eq(info.version, "2.9.10");
	ck_assert_int_eq(info.proto, 1);
	ck_assert(info.headers);
	ck_assert_uint_eq(info.max_payload, 1048576);
	ck_assert_uint_eq(info.nurls, 2);
	ck_assert_str_eq(info.urls[0], "127.0.0.1:4222");
	ck_assert_str_eq(info.urls[1], "10.0.0.6:4223");
	ck_assert_int_eq(parse_str(s + n, 1024, &in, NULL), 6);
	ck_assert_int_eq(in.op, MB_NATS_PING);
	ck_assert(!info.ldm);
	/* lame-duck mode, as 2.9.10 sends it */
	ck_assert_int_gt(parse_str("INFO {\"server_id\":\"N\",\"ldm\":true}\r\n", 1024, &in, &info), 0);
	ck_assert(info.ldm);
	ck_assert_int_gt(parse_str("INFO {\"ldm\":false}\r\n", 1024, &in, &info), 0);
	ck_assert(!info.ldm);
	ck_assert_int_eq(parse_str("INFO {\"ldm\":1}\r\n", 1024, &in, &info), MB_NATS_BAD);
	/* malformed JSON, or JSON nested without end */
	ck_assert_int_eq(parse_str("INFO {\"a\":}\r\n", 1024, &in, &info), MB_NATS_BAD);
	ck_assert_int_eq(parse_str("INFO {\"a\":1\r\n", 1024, &in, &info), MB_NATS_BAD);
	ck_assert_int_eq(parse_str("INFO {\"a\":[[[[[[[[[[[[1]]]]]]]]]]]]}\r\n", 1024, &in, &info),
	                 MB_NATS_BAD);
}
END_TEST

START_TEST(test_codec_msg)
{
	struct mb_nats_in in;
	const char *m = "MSG foo.bar 7 5\r\nhello\r\n";
	ck_assert_int_eq(parse_str(m, 1024, &in, NULL), (long)strlen(m));
	ck_assert_int_eq(in.op, MB_NATS_MSG);
	ck_assert_uint_eq(in.sid, 7);
	ck_assert(in.subject_len == 7 && !memcmp(in.subject, "foo.bar", 7));
	ck_assert_ptr_null(in.reply);
	ck_assert(in.payload_len == 5 && !memcmp(in.payload, "hello", 5));
	m = "msg a\t9  _INBOX.x.1 0\r\n\r\n"; /* lower case, tabs, several spaces */
	ck_assert_int_eq(parse_str(m, 1024, &in, NULL), (long)strlen(m));
	ck_assert(in.reply_len == 10 && !memcmp(in.reply, "_INBOX.x.1", 10));
	ck_assert_uint_eq(in.payload_len, 0);
	/* 2.9.10's no-responders message */
	m = "HMSG _INBOX.abc.x1 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n";
	ck_assert_int_eq(parse_str(m, 1024, &in, NULL), (long)strlen(m));
	ck_assert_int_eq(in.op, MB_NATS_HMSG);
	ck_assert_int_eq(in.status, 503);
	ck_assert_uint_eq(in.payload_len, 0);
	m = "HMSG s 1 r 18 21\r\nNATS/1.0\r\nA: b\r\n\r\nxyz\r\n";
	ck_assert_int_eq(parse_str(m, 1024, &in, NULL), (long)strlen(m));
	ck_assert_int_eq(in.status, 0);
	ck_assert(in.payload_len == 3 && !memcmp(in.payload, "xyz", 3));
	/* every split of a MSG is "more", never a wrong item */
	m = "MSG foo.bar 7 5\r\nhello\r\n";
	for (size_t i = 0; i < strlen(m); i++) {
		const char *why;
		ck_assert_int_eq(mb_nats_parse((const uint8_t *)m, i, 1024, &in, NULL, &why),
		                 MB_NATS_MORE);
	}
}
END_TEST

START_TEST(test_codec_control)
{
	struct mb_nats_in in;
	ck_assert_int_eq(parse_str("PONG\r\n", 0, &in, NULL), 6);
	ck_assert_int_eq(in.op, MB_NATS_PONG);
	ck_assert_int_eq(parse_str("+OK\r\n", 0, &in, NULL), 5);
	ck_assert_int_eq(in.op, MB_NATS_OK);
	const char *e = "-ERR 'Authorization Violation'\r\n";
	ck_assert_int_eq(parse_str(e, 0, &in, NULL), (long)strlen(e));
	ck_assert_int_eq(in.op, MB_NATS_ERR);
	ck_assert(in.text_len == 23 && !memcmp(in.text, "Authorization Violation", 23));
}
END_TEST

START_TEST(test_codec_limits)
{
	struct mb_nats_in in;
	/* a line over 4096 bytes, whether or not its end has arrived */
	char *big = malloc(MB_NATS_LINE_MAX + 16);
	ck_assert_ptr_nonnull(big);
	memset(big, 'x', MB_NATS_LINE_MAX + 8);
	memcpy(big, "MSG ", 4);
	big[MB_NATS_LINE_MAX + 8] = '\0';
	ck_assert_int_eq(parse_str(big, 1024, &in, NULL), MB_NATS_BAD);
	memcpy(big + MB_NATS_LINE_MAX + 4, "\r\n", 3);
	ck_assert_int_eq(parse_str(big, 1024, &in, NULL), MB_NATS_BAD);
	free(big);
	ck_assert_int_eq(parse_str("MSG a 1 1025\r\n", 1024, &in, NULL), MB_NATS_BAD);
	ck_assert_int_eq(parse_str("MSG a 1 3\r\nabcd\r\n", 1024, &in, NULL), MB_NATS_BAD);
	ck_assert_int_eq(parse_str("MSG a 1 99999999999999999999\r\n", 1024, &in, NULL),
	                 MB_NATS_BAD);
	ck_assert_int_eq(parse_str("MSG a 1 -1\r\n", 1024, &in, NULL), MB_NATS_BAD);
	ck_assert_int_eq(parse_str("MSG a x 1\r\na\r\n", 1024, &in, NULL), MB_NATS_BAD);
	ck_assert_int_eq(parse_str("MSG a 1 b c 1\r\na\r\n", 1024, &in, NULL), MB_NATS_BAD);
	ck_assert_int_eq(parse_str("HMSG a 1 9 5\r\n", 1024, &in, NULL), MB_NATS_BAD);
	ck_assert_int_eq(parse_str("HMSG a 1 4 4\r\nXX\r\n\r\n", 1024, &in, NULL), MB_NATS_BAD);
	ck_assert_int_eq(parse_str("HELLO\r\n", 0, &in, NULL), MB_NATS_BAD);
	ck_assert_int_eq(parse_str("PING\n", 0, &in, NULL), MB_NATS_BAD);
	ck_assert_int_eq(parse_str("PING x\r\n", 0, &in, NULL), MB_NATS_BAD);
	ck_assert_int_eq(parse_str("\r\n", 0, &in, NULL), MB_NATS_BAD);
	const char *why;
	ck_assert_int_eq(mb_nats_parse((const uint8_t *)"PI\0G\r\n", 6, 0, &in, NULL, &why),
	                 MB_NATS_BAD);
}
END_TEST

START_TEST(test_codec_encode)
{
	char b[512];
	size_t n = mb_nats_connect(b, sizeof(b), "app", "se\"cret", NULL, "bus");
	ck_assert_uint_eq(n, strlen(b));
	ck_assert_ptr_nonnull(strstr(b, "\"verbose\":false,\"pedantic\":false"));
	ck_assert_ptr_nonnull(strstr(b, "\"echo\":false"));
	ck_assert_ptr_nonnull(strstr(b, "\"headers\":true,\"no_responders\":true"));
	ck_assert_ptr_nonnull(strstr(b, ",\"user\":\"app\",\"pass\":\"se\\\"cret\""));
	ck_assert_ptr_null(strstr(b, "auth_token"));
	ck_assert(n > 3 && !strcmp(b + n - 3, "}\r\n") && !strncmp(b, "CONNECT {", 9));
	n = mb_nats_connect(b, sizeof(b), NULL, NULL, "tok", NULL);
	ck_assert_ptr_nonnull(strstr(b, "\"auth_token\":\"tok\"}"));
	ck_assert_uint_eq(mb_nats_connect(b, 40, "u", "p", NULL, NULL), 0);
	ck_assert_uint_eq(mb_nats_pub(b, sizeof(b), "a.b", NULL, 5), 11);
	ck_assert_str_eq(b, "PUB a.b 5\r\n");
	mb_nats_pub(b, sizeof(b), "a.b", "_INBOX.x.1", 0);
	ck_assert_str_eq(b, "PUB a.b _INBOX.x.1 0\r\n");
	mb_nats_hpub(b, sizeof(b), "a", "r", 12, 15);
	ck_assert_str_eq(b, "HPUB a r 12 15\r\n");
	mb_nats_sub(b, sizeof(b), "svc.>", "svc", 42);
	ck_assert_str_eq(b, "SUB svc.> svc 42\r\n");
	mb_nats_sub(b, sizeof(b), "a.*", NULL, 1);
	ck_assert_str_eq(b, "SUB a.* 1\r\n");
	mb_nats_unsub(b, sizeof(b), 42);
	ck_assert_str_eq(b, "UNSUB 42\r\n");
	ck_assert_uint_eq(mb_nats_ping(b, sizeof(b)), 6);
	ck_assert_uint_eq(mb_nats_pong(b, sizeof(b)), 6);
	ck_assert_str_eq(b, "PONG\r\n");
	ck_assert_uint_eq(mb_nats_pub(b, 8, "a.b", NULL, 5), 0);
	/* the hand-written encoder: exact fits, NUL included, and every digit */
	ck_assert_uint_eq(mb_nats_pub(b, 12, "a.b", NULL, 5), 11);
	ck_assert_str_eq(b, "PUB a.b 5\r\n");
	ck_assert_uint_eq(mb_nats_pub(b, 11, "a.b", NULL, 5), 0);
	ck_assert_uint_eq(mb_nats_pub(b, 0, "a.b", NULL, 5), 0);
	ck_assert_uint_eq(mb_nats_pub(b, 25, "a.b", "r.1", 1234567890), 24);
	ck_assert_str_eq(b, "PUB a.b r.1 1234567890\r\n");
	ck_assert_uint_eq(mb_nats_pub(b, 24, "a.b", "r.1", 1234567890), 0);
	mb_nats_pub(b, sizeof(b), "x", NULL, 10);
	ck_assert_str_eq(b, "PUB x 10\r\n");
}
END_TEST

/* ---- a nats-server of the test's own ------------------------------------------- */

#define NATS_CASE_TIMEOUT 30

struct natsd {
	pid_t pid;
	int port, mport; /* client and monitoring ports */
	char conf[64];   /* a config file, or "" */
};

/* The servers a case started, by PID, killed by the teardown if the case
 * failed before stopping them itself: no process is left running. With
 * CK_FORK=no a failed case skips the checked teardown, so the unchecked
 * one looks again at the end of the test case. */
#define NATSD_LIVE_MAX 8
static pid_t natsd_live[NATSD_LIVE_MAX];

static void natsd_track(pid_t pid, bool on)
{
	for (int i = 0; i < NATSD_LIVE_MAX; i++) {
		if (natsd_live[i] == (on ? 0 : pid)) {
			natsd_live[i] = on ? pid : 0;
			return;
		}
	}
}

static void natsd_teardown(void)
{
	for (int i = 0; i < NATSD_LIVE_MAX; i++) {
		if (natsd_live[i] > 0) {
			kill(natsd_live[i], SIGKILL);
			waitpid(natsd_live[i], NULL, 0);
			natsd_live[i] = 0;
		}
	}
}

/* $NATS_SERVER if set (empty: as if not installed), or the usual places. */
static const char *natsd_path(void)
{
	const char *env = getenv("NATS_SERVER");
	if (env)
		return env[0] && access(env, X_OK) == 0 ? env : NULL;
	static const char *const where[] = { "/usr/sbin/nats-server", "/usr/bin/nats-server",
		                             "/usr/local/bin/nats-server" };
	for (size_t i = 0; i < sizeof(where) / sizeof(where[0]); i++)
		if (access(where[i], X_OK) == 0)
			return where[i];
	return NULL;
}

static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &al), 0);
	close(fd);
	return ntohs(a.sin_port);
}

static int tcp_to(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
		                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
		return fd;
	if (fd >= 0)
		close(fd);
	return -1;
}

/* Read from fd until want appears in buf (cap bytes) or ms pass. */
static bool read_until(int fd, char *buf, size_t cap, const char *want, int ms)
{
	size_t len = 0;
	double end = tu_now_ms() + ms;
	buf[0] = '\0';
	while (!strstr(buf, want) && tu_now_ms() < end && len + 1 < cap) {
		struct pollfd p = { fd, POLLIN, 0 };
		if (poll(&p, 1, 50) <= 0)
			continue;
		ssize_t n = read(fd, buf + len, cap - 1 - len);
		if (n <= 0)
			break;
		len += (size_t)n;
		buf[len] = '\0';
	}
	return strstr(buf, want) != NULL;
}

/* Start nats-server on the ports in d (chosen when 0), with extra
 * arguments; wait until it sends INFO. */
static void natsd_start(struct natsd *d, const char *const *extra)
{
	const char *argv[24];
	char port[16], mport[16];
	int n = 0;
	if (!d->port)
		d->port = free_port();
	if (!d->mport)
		d->mport = free_port();
	snprintf(port, sizeof(port), "%d", d->port);
	snprintf(mport, sizeof(mport), "%d", d->mport);
	argv[n++] = "nats-server";
	argv[n++] = "-a";
	argv[n++] = "127.0.0.1";
	argv[n++] = "-p";
	argv[n++] = port;
	argv[n++] = "-m";
	argv[n++] = mport;
	if (d->conf[0]) {
		argv[n++] = "-c";
		argv[n++] = d->conf;
	}
	for (; extra && *extra && n < 22; extra++)
		argv[n++] = *extra;
	argv[n] = NULL;
	d->pid = fork();
	ck_assert_int_ge(d->pid, 0);
	if (d->pid > 0)
		natsd_track(d->pid, true);
	if (d->pid == 0) {
		int null = open("/dev/null", O_RDWR);
		dup2(null, 1);
		dup2(null, 2);
		execv(natsd_path(), (char *const *)argv);
		_exit(127);
	}
	double end = tu_now_ms() + TU_WAIT_MS;
	bool ready = false;
	while (!ready && tu_now_ms() < end) {
		int fd = tcp_to(d->port);
		char buf[2048];
		ready = fd >= 0 && read_until(fd, buf, sizeof(buf), "INFO", 500);
		if (fd >= 0)
			close(fd);
		if (!ready)
			tu_sleep_ms(20);
	}
	ck_assert_msg(ready, "nats-server on port %d did not start", d->port);
}

static void natsd_stop(struct natsd *d)
{
	if (d->pid <= 0)
		return;
	natsd_track(d->pid, false);
	kill(d->pid, SIGTERM);
	double end = tu_now_ms() + TU_WAIT_MS;
	int st;
	while (waitpid(d->pid, &st, WNOHANG) == 0) {
		if (tu_now_ms() > end) {
			kill(d->pid, SIGKILL);
			waitpid(d->pid, &st, 0);
			break;
		}
		tu_sleep_ms(10);
	}
	d->pid = 0;
}

/* GET path from the monitoring port into buf; the body. */
static const char *natsd_get(const struct natsd *d, const char *path, char *buf, size_t cap)
{
	int fd = tcp_to(d->mport);
	ck_assert_int_ge(fd, 0);
	char req[256];
	int n = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
	ck_assert_int_eq(tu_send_all(fd, req, (size_t)n), 0);
	size_t len = 0;
	ssize_t got;
	while (len + 1 < cap && (got = read(fd, buf + len, cap - 1 - len)) > 0)
		len += (size_t)got;
	buf[len] = '\0';
	close(fd);
	const char *body = strstr(buf, "\r\n\r\n");
	return body ? body + 4 : buf;
}

/* Occurrences of "\"pattern\"" among the server's subscriptions (its JSON
 * writes '>' as \u003e). */
static int natsd_subs(const struct natsd *d, const char *pattern)
{
	static char buf[1 << 16];
	char want[160];
	size_t w = 0;
	int count = 0;
	want[w++] = '"';
	for (const char *p = pattern; *p && w < sizeof(want) - 8; p++)
		w += (size_t)snprintf(want + w, sizeof(want) - w, *p == '>' ? "\\u003e" : "%c", *p);
	snprintf(want + w, sizeof(want) - w, "\"");
	const char *b = natsd_get(d, "/connz?subs=1", buf, sizeof(buf));
	for (const char *p = strstr(b, want); p; p = strstr(p + 1, want))
		count++;
	return count;
}

#define WAIT_FOR(cond)                                                               \
	do {                                                                         \
		double wf_end_ = tu_now_ms() + TU_WAIT_MS;                           \
		while (!(cond) && tu_now_ms() < wf_end_)                             \
			tu_sleep_ms(5);                                              \
		ck_assert_msg((cond), "timed out waiting for %s", #cond);            \
	} while (0)

static msgbus_link_stats link_stats(msgbus_bus *b)
{
	msgbus_link_stats st;
	TU_ASSERT_OK(msgbus_link_stats_get(b, &st));
	return st;
}

static bool skip_without_server(void)
{
	return natsd_path() == NULL;
}

static void nats_url(char *buf, size_t cap, const char *creds, const struct natsd *d,
                     const char *query)
{
	snprintf(buf, cap, "nats://%s%s127.0.0.1:%d%s", creds ? creds : "", creds ? "@" : "",
	         d->port, query ? query : "");
}

static msgbus_bus *linked_bus(const struct natsd *d, const char *query)
{
	char url[128], nurl[160];
	tu_unique_url(url, sizeof(url), "inproc");
	msgbus_bus *b = tu_open(url, NULL);
	nats_url(nurl, sizeof(nurl), NULL, d, query);
	TU_ASSERT_OK(msgbus_connect(b, nurl));
	WAIT_FOR(link_stats(b).links_up == 1);
	return b;
}

/* Publish n numbered messages on subject; receive them on sub, in order. */
static void stream(msgbus_bus *from, const char *subject, msgbus_sub *sub, int n)
{
	for (int i = 0; i < n; i++) {
		char data[64];
		int len = snprintf(data, sizeof(data), "%s #%d", subject, i);
		TU_ASSERT_OK(msgbus_publish(from, subject, data, (size_t)len, 1000));
	}
	for (int i = 0; i < n; i++) {
		msgbus_msg *m;
		char want[64];
		int len = snprintf(want, sizeof(want), "%s #%d", subject, i);
		TU_ASSERT_OK(msgbus_recv(sub, &m, TU_WAIT_MS));
		ck_assert_str_eq(msgbus_msg_subject(m), subject);
		ck_assert_uint_eq(msgbus_msg_len(m), (size_t)len);
		ck_assert(!memcmp(msgbus_msg_data(m), want, (size_t)len));
		msgbus_msg_release(m);
	}
}

START_TEST(test_server_pubsub)
{
	if (skip_without_server())
		return;
	struct natsd d = { 0 };
	natsd_start(&d, NULL);
	msgbus_bus *a = linked_bus(&d, NULL), *b = linked_bus(&d, NULL);
	msgbus_sub *sb, *sa;
	TU_ASSERT_OK(msgbus_subscribe(b, "t.>", 0, &sb));
	TU_ASSERT_OK(msgbus_subscribe(a, "u.*", 0, &sa));
	WAIT_FOR(natsd_subs(&d, "t.>") == 1 && natsd_subs(&d, "u.*") == 1);
	stream(a, "t.x.y", sb, 200);
	stream(b, "u.v", sa, 200);
	ck_assert_uint_ge(link_stats(a).sent, 200);
	WAIT_FOR(link_stats(b).received == 200 && link_stats(a).received == 200);
	msgbus_unsubscribe(sb);
	msgbus_unsubscribe(sa);
	msgbus_close(a);
	msgbus_close(b);
	natsd_stop(&d);
}
END_TEST

/* Both buses subscribe to x: what one publishes reaches the other once,
 * and is never sent back. */
START_TEST(test_server_no_loop)
{
	if (skip_without_server())
		return;
	struct natsd d = { 0 };
	natsd_start(&d, NULL);
	msgbus_bus *a = linked_bus(&d, NULL), *b = linked_bus(&d, NULL);
	msgbus_sub *sa, *sb;
	TU_ASSERT_OK(msgbus_subscribe(a, "x", 0, &sa));
	TU_ASSERT_OK(msgbus_subscribe(b, "x", 0, &sb));
	WAIT_FOR(natsd_subs(&d, "x") == 2);
	for (int i = 0; i < 10; i++)
		TU_ASSERT_OK(msgbus_publish(a, "x", "from a", 6, 1000));
	for (int i = 0; i < 10; i++) {
		msgbus_msg *m;
		TU_ASSERT_OK(msgbus_recv(sb, &m, TU_WAIT_MS));
		ck_assert(msgbus_msg_len(m) == 6 && !memcmp(msgbus_msg_data(m), "from a", 6));
		msgbus_msg_release(m);
		TU_ASSERT_OK(msgbus_recv(sa, &m, TU_WAIT_MS)); /* its own, locally */
		msgbus_msg_release(m);
	}
	/* b's own message on the same subject comes after anything b would
	 * have sent back: a loop would show before it. */
	TU_ASSERT_OK(msgbus_publish(b, "x", "from b", 6, 1000));
	msgbus_msg *m;
	TU_ASSERT_OK(msgbus_recv(sa, &m, TU_WAIT_MS));
	ck_assert(msgbus_msg_len(m) == 6 && !memcmp(msgbus_msg_data(m), "from b", 6));
	msgbus_msg_release(m);
	TU_ASSERT_RC(msgbus_recv(sa, &m, 0), MSGBUS_EAGAIN);
	TU_ASSERT_OK(msgbus_recv(sb, &m, TU_WAIT_MS));
	msgbus_msg_release(m);
	TU_ASSERT_RC(msgbus_recv(sb, &m, 0), MSGBUS_EAGAIN);
	ck_assert_uint_eq(link_stats(b).sent, 1);
	WAIT_FOR(link_stats(a).received == 1); /* counted after its publish */
	msgbus_unsubscribe(sa);
	msgbus_unsubscribe(sb);
	msgbus_close(a);
	msgbus_close(b);
	natsd_stop(&d);
}
END_TEST

/* One SUB per distinct pattern, whoever subscribes; UNSUB with the last. */
START_TEST(test_server_sub_count)
{
	if (skip_without_server())
		return;
	struct natsd d = { 0 };
	natsd_start(&d, NULL);
	msgbus_bus *a = linked_bus(&d, NULL), *a2;
	msgbus_sub *s[5];
	char url[128];
	(void)url;
	TU_ASSERT_OK(msgbus_subscribe(a, "c.>", 0, &s[0]));
	TU_ASSERT_OK(msgbus_subscribe(a, "c.>", 0, &s[1]));
	TU_ASSERT_OK(msgbus_subscribe(a, "d.*", 0, &s[2]));
	TU_ASSERT_OK(msgbus_subscribe(a, "d.*", MSGBUS_SUB_LOSSY, &s[3]));
	/* another handle on the same bus: still one SUB */
	extern int mb_bus_reopen(msgbus_bus *b, msgbus_bus **out);
	TU_ASSERT_OK(mb_bus_reopen(a, &a2));
	TU_ASSERT_OK(msgbus_subscribe(a2, "c.>", 0, &s[4]));
	WAIT_FOR(natsd_subs(&d, "c.>") == 1 && natsd_subs(&d, "d.*") == 1);
	msgbus_unsubscribe(s[0]);
	msgbus_unsubscribe(s[4]);
	msgbus_unsubscribe(s[2]);
	/* one c.> and one d.* are left */
	msgbus_sub *probe;
	TU_ASSERT_OK(msgbus_subscribe(a, "probe", 0, &probe));
	WAIT_FOR(natsd_subs(&d, "probe") == 1);
	ck_assert_int_eq(natsd_subs(&d, "c.>"), 1);
	ck_assert_int_eq(natsd_subs(&d, "d.*"), 1);
	msgbus_unsubscribe(s[1]);
	msgbus_unsubscribe(s[3]);
	WAIT_FOR(natsd_subs(&d, "c.>") == 0 && natsd_subs(&d, "d.*") == 0);
	msgbus_unsubscribe(probe);
	msgbus_close(a2);
	msgbus_close(a);
	natsd_stop(&d);
}
END_TEST

/* Standard error into a pipe while a test looks for a log line. */
struct captured {
	int saved, rd;
};

static void capture_start(struct captured *c)
{
	int p[2];
	ck_assert_int_eq(pipe(p), 0);
	fflush(stderr);
	c->saved = dup(2);
	dup2(p[1], 2);
	close(p[1]);
	c->rd = p[0];
}

static void capture_stop(struct captured *c)
{
	fflush(stderr);
	dup2(c->saved, 2);
	close(c->saved);
	close(c->rd);
}

/* user/pass and token: good ones link, a bad one is logged with the
 * server's words and the link stays down. */
START_TEST(test_server_credentials)
{
	if (skip_without_server())
		return;
	struct natsd d = { 0 }, t = { 0 };
	const char *const userpass[] = { "--user", "app", "--pass", "s3cret", NULL };
	const char *const token[] = { "--auth", "t0ken", NULL };
	natsd_start(&d, userpass);
	natsd_start(&t, token);
	char url[128], nurl[160];
	tu_unique_url(url, sizeof(url), "inproc");
	msgbus_bus *good = tu_open(url, NULL);
	nats_url(nurl, sizeof(nurl), "app:s3cret", &d, NULL);
	TU_ASSERT_OK(msgbus_connect(good, nurl));
	nats_url(nurl, sizeof(nurl), "t0ken", &t, NULL);
	TU_ASSERT_OK(msgbus_connect(good, nurl));
	WAIT_FOR(link_stats(good).links_up == 2);

	struct captured c;
	char log[4096];
	capture_start(&c);
	tu_unique_url(url, sizeof(url), "inproc");
	msgbus_bus *bad = tu_open(url, NULL);
	nats_url(nurl, sizeof(nurl), "app:wrong", &d, NULL);
	TU_ASSERT_OK(msgbus_connect(bad, nurl));
	bool logged = read_until(c.rd, log, sizeof(log), "Authorization Violation", TU_WAIT_MS);
	msgbus_link_stats st = link_stats(bad);
	msgbus_close(bad); /* while captured: it may log again */
	capture_stop(&c);
	ck_assert_msg(logged, "no -ERR logged: %s", log);
	ck_assert_ptr_null(strstr(log, "wrong")); /* the password is not logged */
	ck_assert_uint_eq(st.links_up, 0);
	msgbus_close(good);
	natsd_stop(&d);
	natsd_stop(&t);
}
END_TEST

/* One record of msgbus_links for the only link of b. */
static msgbus_link_info nats_link_info(msgbus_bus *b)
{
	msgbus_link_info li;
	size_t n;
	TU_ASSERT_OK(msgbus_links(b, &li, 1, &n));
	ck_assert_uint_eq(n, 1);
	return li;
}

/* msgbus_links of a nats:// link: the password never shown, the server's
 * address while up, and the SUBs confirmed: once the flag is set, the
 * server lists the subscription; a new local subscription clears it until
 * its SUB is answered; the server gone, the link is down, unconfirmed. */
START_TEST(test_server_links_listed)
{
	if (skip_without_server())
		return;
	struct natsd d = { 0 };
	const char *const userpass[] = { "--user", "app", "--pass", "s3cret", NULL };
	natsd_start(&d, userpass);
	char url[128], nurl[160], want[160];
	tu_unique_url(url, sizeof(url), "inproc");
	msgbus_bus *b = tu_open(url, NULL);
	nats_url(nurl, sizeof(nurl), "app:s3cret", &d, "?lossless=1");
	TU_ASSERT_OK(msgbus_connect(b, nurl));
	msgbus_link_info li = nats_link_info(b);
	snprintf(want, sizeof(want), "nats://***@127.0.0.1:%d?lossless=1", d.port);
	ck_assert_str_eq(li.url, want);
	ck_assert_uint_eq(li.kind, MSGBUS_LINK_NATS);
	WAIT_FOR((li = nats_link_info(b)).state == MSGBUS_LINK_UP &&
	         (li.flags & MSGBUS_LINKINFO_CONFIRMED));
	snprintf(want, sizeof(want), "127.0.0.1:%d", d.port);
	ck_assert_str_eq(li.peer, want);
	ck_assert_ptr_null(strstr(li.url, "s3cret"));
	ck_assert_uint_eq(li.remote_subs, 0);

	msgbus_sub *sub;
	TU_ASSERT_OK(msgbus_subscribe(b, "conf.>", 0, &sub));
	ck_assert_uint_eq(nats_link_info(b).flags & MSGBUS_LINKINFO_CONFIRMED, 0);
	WAIT_FOR(nats_link_info(b).flags & MSGBUS_LINKINFO_CONFIRMED);
	ck_assert_int_eq(natsd_subs(&d, "conf.>"), 1);

	natsd_stop(&d);
	WAIT_FOR((li = nats_link_info(b)).state != MSGBUS_LINK_UP);
	ck_assert_uint_eq(li.flags & MSGBUS_LINKINFO_CONFIRMED, 0);
	ck_assert_str_eq(li.peer, "");
	msgbus_unsubscribe(sub);
	msgbus_close(b);
}
END_TEST

static void write_conf(struct natsd *d, const char *tag, const char *text)
{
	snprintf(d->conf, sizeof(d->conf), "/tmp/msgbus-natsd-%ld-%s.conf", (long)getpid(), tag);
	FILE *f = fopen(d->conf, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
}

/* A message over the server's max_payload is never sent (the server would
 * close the connection): counted undelivered; the link stays up. */
START_TEST(test_server_max_payload)
{
	if (skip_without_server())
		return;
	struct natsd d = { 0 };
	write_conf(&d, "maxp", "max_payload: 1024\n");
	natsd_start(&d, NULL);
	unlink(d.conf);
	msgbus_bus *a = linked_bus(&d, NULL), *b = linked_bus(&d, NULL);
	msgbus_sub *sb;
	TU_ASSERT_OK(msgbus_subscribe(b, "big", 0, &sb));
	WAIT_FOR(natsd_subs(&d, "big") == 1);
	static char data[2048];
	memset(data, 'z', sizeof(data));
	TU_ASSERT_OK(msgbus_publish(a, "big", data, 1025, 1000)); /* one over */
	TU_ASSERT_OK(msgbus_publish(a, "big", data, 1024, 1000));
	msgbus_msg *m;
	TU_ASSERT_OK(msgbus_recv(sb, &m, TU_WAIT_MS));
	ck_assert_uint_eq(msgbus_msg_len(m), 1024);
	msgbus_msg_release(m);
	msgbus_link_stats st = link_stats(a);
	ck_assert_uint_eq(st.undelivered, 1);
	ck_assert_uint_eq(st.sent, 1);
	ck_assert_uint_eq(st.links_up, 1);
	ck_assert_uint_eq(st.reconnects, 0);
	/* a request over max_payload fails at once, and is not sent */
	msgbus_msg *reply;
	TU_ASSERT_RC(msgbus_request(a, "far", data, 1025, &reply, 10000), MSGBUS_EMSGSIZE);
	TU_ASSERT_RC(msgbus_request(a, "far", data, 1024, &reply, 10000), MSGBUS_ENORESPONDERS);
	ck_assert_uint_eq(link_stats(a).links_up, 1);
	msgbus_unsubscribe(sb);
	msgbus_close(a);
	msgbus_close(b);
	natsd_stop(&d);
}
END_TEST

/* The server killed and started again on its port: both links come back
 * by themselves, SUBs are sent again, messages flow. */
START_TEST(test_server_reconnect)
{
	if (skip_without_server())
		return;
	struct natsd d = { 0 };
	natsd_start(&d, NULL);
	msgbus_bus *a = linked_bus(&d, NULL), *b = linked_bus(&d, NULL);
	msgbus_sub *sb;
	TU_ASSERT_OK(msgbus_subscribe(b, "r.*", 0, &sb));
	WAIT_FOR(natsd_subs(&d, "r.*") == 1);
	stream(a, "r.1", sb, 10);
	kill(d.pid, SIGKILL);
	waitpid(d.pid, NULL, 0);
	natsd_track(d.pid, false);
	d.pid = 0;
	WAIT_FOR(link_stats(a).links_up == 0 && link_stats(b).links_up == 0);
	natsd_start(&d, NULL);
	WAIT_FOR(link_stats(a).links_up == 1 && link_stats(b).links_up == 1);
	ck_assert_uint_ge(link_stats(a).reconnects, 1);
	WAIT_FOR(natsd_subs(&d, "r.*") == 1);
	stream(a, "r.2", sb, 10);
	msgbus_unsubscribe(sb);
	msgbus_close(a);
	msgbus_close(b);
	natsd_stop(&d);
}
END_TEST

/* ?export=PATTERN: only those subjects go out. */
START_TEST(test_server_export)
{
	if (skip_without_server())
		return;
	struct natsd d = { 0 };
	natsd_start(&d, NULL);
	msgbus_bus *a = linked_bus(&d, "?export=e.yes.>,e.also"), *b = linked_bus(&d, NULL);
	msgbus_sub *sb;
	TU_ASSERT_OK(msgbus_subscribe(b, "e.>", 0, &sb));
	WAIT_FOR(natsd_subs(&d, "e.>") == 1);
	TU_ASSERT_OK(msgbus_publish(a, "e.no", "1", 1, 1000));
	TU_ASSERT_OK(msgbus_publish(a, "e.yes.1", "2", 1, 1000));
	TU_ASSERT_OK(msgbus_publish(a, "e.also", "3", 1, 1000));
	/* order holds per subject, not across subjects */
	bool yes = false, also = false;
	for (int i = 0; i < 2; i++) {
		msgbus_msg *m;
		TU_ASSERT_OK(msgbus_recv(sb, &m, TU_WAIT_MS));
		yes = yes || !strcmp(msgbus_msg_subject(m), "e.yes.1");
		also = also || !strcmp(msgbus_msg_subject(m), "e.also");
		msgbus_msg_release(m);
	}
	ck_assert(yes && also);
	ck_assert_uint_eq(link_stats(a).sent, 2);
	/* malformed URLs */
	const char *badq[] = { "?export=", "?export=a..b", "?export=a,", "?other=1" };
	for (size_t i = 0; i < sizeof(badq) / sizeof(badq[0]); i++) {
		char nurl[160];
		nats_url(nurl, sizeof(nurl), NULL, &d, badq[i]);
		TU_ASSERT_RC(msgbus_connect(a, nurl), MSGBUS_EINVAL);
	}
	TU_ASSERT_RC(msgbus_connect(a, "nats://"), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_connect(a, "nats://h:1,"), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_connect(a, "nats://h:99999"), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_connect(a, "nats://@h:1"), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_connect(a, "nats://:p@h:1"), MSGBUS_EINVAL);
	TU_ASSERT_RC(msgbus_listen(a, "nats://127.0.0.1:0", NULL), MSGBUS_ENOTSUP);
	msgbus_unsubscribe(sb);
	msgbus_close(a);
	msgbus_close(b);
	natsd_stop(&d);
}
END_TEST

/* A raw NATS client of the test's own: connected, CONNECT sent (no +OK). */
static int raw_client(const struct natsd *d)
{
	char buf[4096];
	int fd = tcp_to(d->port);
	ck_assert_int_ge(fd, 0);
	ck_assert(read_until(fd, buf, sizeof(buf), "\r\n", TU_WAIT_MS));
	const char *hello = "CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true}\r\n";
	ck_assert_int_eq(tu_send_all(fd, hello, strlen(hello)), 0);
	return fd;
}

/* Read MSGs on fd until n have come: their payloads must be "%06d" of
 * 0..n-1 in order (from one publisher), or of each publisher's own
 * sequence when two interleave (tag: the first byte). */
static void raw_expect(int fd, int n, int publishers)
{
	static char buf[1 << 16];
	size_t len = 0;
	int got = 0, next[2] = { 0, 0 };
	double end = tu_now_ms() + 4 * TU_WAIT_MS;
	while (got < n) {
		ck_assert_msg(tu_now_ms() < end, "only %d of %d", got, n);
		struct pollfd p = { fd, POLLIN, 0 };
		if (poll(&p, 1, 100) != 1)
			continue;
		ssize_t k = read(fd, buf + len, sizeof(buf) - len);
		ck_assert_int_gt(k, 0);
		len += (size_t)k;
		size_t off = 0;
		for (;;) {
			char *eol = memmem(buf + off, len - off, "\r\n", 2);
			if (!eol)
				break;
			size_t ll = (size_t)(eol - (buf + off));
			if (ll < 4 || memcmp(buf + off, "MSG ", 4)) {
				off += ll + 2; /* PING, +OK: not asked for, never sent */
				continue;
			}
			const char *sp = memrchr(buf + off, ' ', ll);
			size_t plen = (size_t)strtoul(sp + 1, NULL, 10);
			if (len - off < ll + 2 + plen + 2)
				break;
			const char *pl = eol + 2;
			ck_assert_uint_eq(plen, 7);
			int who = publishers > 1 ? pl[0] - 'a' : 0;
			ck_assert(who >= 0 && who < publishers);
			ck_assert_int_eq(atoi(pl + 1), next[who]);
			next[who]++;
			got++;
			off += ll + 2 + plen + 2;
		}
		memmove(buf, buf + off, len - off);
		len -= off;
	}
}

/* ?lossless=1: the link's follower holds local publishers back rather
 * than drop, so a stream far larger than the bus's inboxes reaches NATS
 * whole and in order, whether the linking handle's publisher sends it
 * inline or another handle's is sent by the tx thread; nothing is counted
 * undelivered. The receiver is a raw client: only a's side is measured. */
START_TEST(test_server_lossless)
{
	if (skip_without_server())
		return;
	struct natsd d = { 0 };
	natsd_start(&d, NULL);
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	o.inbox_size = 4096; /* 128 records: the follower fills at once */
	char url[128], nurl[160];
	tu_unique_url(url, sizeof(url), "inproc");
	msgbus_bus *a = tu_open(url, &o), *other = tu_open(url, &o);
	nats_url(nurl, sizeof(nurl), NULL, &d, "?export=l.>&lossless=1");
	TU_ASSERT_OK(msgbus_connect(a, nurl));
	WAIT_FOR(link_stats(a).links_up == 1);
	int fd = raw_client(&d);
	char buf[256];
	const char *sub = "SUB l.> 1\r\nPING\r\n";
	ck_assert_int_eq(tu_send_all(fd, sub, strlen(sub)), 0);
	ck_assert(read_until(fd, buf, sizeof(buf), "PONG\r\n", TU_WAIT_MS));
	enum { N = 20000 };
	for (int round = 0; round < 2; round++) {
		msgbus_bus *from = round ? other : a;
		for (int i = 0; i < N; i++) {
			char data[8];
			snprintf(data, sizeof(data), "a%06d", i);
			TU_ASSERT_OK(msgbus_publish(from, "l.x", data, 7, -1));
		}
		raw_expect(fd, N, 1);
	}
	/* both at once: each one's order holds */
	msgbus_bus *both[2] = { a, other };
	for (int i = 0; i < N; i++)
		for (int w = 0; w < 2; w++) {
			char data[8];
			snprintf(data, sizeof(data), "%c%06d", 'a' + w, i);
			TU_ASSERT_OK(msgbus_publish(both[w], "l.x", data, 7, -1));
		}
	raw_expect(fd, 2 * N, 2);
	msgbus_link_stats st = link_stats(a);
	ck_assert_uint_eq(st.undelivered, 0);
	ck_assert_uint_eq(st.sent, 4 * N);
	/* the query's other spellings */
	const char *badq[] = { "?lossless=2", "?lossless=", "?lossless=1&", "?export=a&export=b",
		               "?lossless=1&other=1" };
	for (size_t i = 0; i < sizeof(badq) / sizeof(badq[0]); i++) {
		nats_url(nurl, sizeof(nurl), NULL, &d, badq[i]);
		TU_ASSERT_RC(msgbus_connect(a, nurl), MSGBUS_EINVAL);
	}
	close(fd);
	/* a dead link holds nobody back: what it takes is counted */
	natsd_stop(&d);
	WAIT_FOR(link_stats(a).links_up == 0);
	uint64_t before = link_stats(a).undelivered;
	for (int i = 0; i < N; i++)
		TU_ASSERT_OK(msgbus_publish(i % 2 ? a : other, "l.x", "a000000", 7, 1000));
	WAIT_FOR(link_stats(a).undelivered - before == N);
	msgbus_close(other);
	msgbus_close(a);
}
END_TEST

/* A bus that has no room drops what NATS sends and counts it; the link
 * keeps reading (no stall, no reconnection) and still delivers after.
 * The flood comes from a raw client, so only b's side is measured. */
START_TEST(test_server_local_drops)
{
	if (skip_without_server())
		return;
	struct natsd d = { 0 };
	natsd_start(&d, NULL);
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	o.inbox_size = 4096; /* the smallest: 128 records of "flood" with 4 bytes */
	char url[128], nurl[160];
	tu_unique_url(url, sizeof(url), "inproc");
	msgbus_bus *b = tu_open(url, &o);
	nats_url(nurl, sizeof(nurl), NULL, &d, NULL);
	TU_ASSERT_OK(msgbus_connect(b, nurl));
	WAIT_FOR(link_stats(b).links_up == 1);
	msgbus_sub *stuck, *after;
	TU_ASSERT_OK(msgbus_subscribe(b, "flood", 0, &stuck)); /* never reads */
	TU_ASSERT_OK(msgbus_subscribe(b, "after", 0, &after));
	WAIT_FOR(natsd_subs(&d, "flood") == 1 && natsd_subs(&d, "after") == 1);
	enum { N = 2000 };
	int fd = raw_client(&d);
	static char out[N * 24];
	size_t len = 0;
	for (int i = 0; i < N; i++)
		len += (size_t)snprintf(out + len, sizeof(out) - len, "PUB flood 4\r\n%04d\r\n", i);
	ck_assert_int_eq(tu_send_all(fd, out, len), 0);
	/* every message is received or counted */
	WAIT_FOR(link_stats(b).received + link_stats(b).undelivered == N);
	ck_assert_uint_le(link_stats(b).received, 4096 / 32);
	ck_assert_uint_gt(link_stats(b).undelivered, 0);
	const char *more = "PUB after 4\r\nlast\r\n";
	ck_assert_int_eq(tu_send_all(fd, more, strlen(more)), 0);
	msgbus_msg *m;
	TU_ASSERT_OK(msgbus_recv(after, &m, TU_WAIT_MS));
	ck_assert(msgbus_msg_len(m) == 4 && !memcmp(msgbus_msg_data(m), "last", 4));
	msgbus_msg_release(m);
	msgbus_link_stats st = link_stats(b);
	ck_assert_uint_eq(st.links_up, 1);
	ck_assert_uint_eq(st.reconnects, 0);
	close(fd);
	msgbus_unsubscribe(stuck);
	msgbus_unsubscribe(after);
	msgbus_close(b);
	natsd_stop(&d);
}
END_TEST

/* Monitoring: the number of routes a cluster node has. */
static int natsd_routes(const struct natsd *d)
{
	static char buf[1 << 14];
	const char *b = natsd_get(d, "/routez", buf, sizeof(buf));
	const char *p = strstr(b, "\"num_routes\":");
	return p ? atoi(p + strlen("\"num_routes\":")) : -1;
}

/* A 3-node cluster; bus a knows node 0 only, and learns the others from
 * INFO connect_urls; node 0 killed, a resumes through another node within
 * 3 s, its messages reaching b (on node 2) again. */
START_TEST(test_server_cluster)
{
	if (skip_without_server())
		return;
	struct natsd n[3] = { { 0 }, { 0 }, { 0 } };
	int cport[3];
	char cluster[3][64], routes[128];
	for (int i = 0; i < 3; i++) {
		cport[i] = free_port();
		snprintf(cluster[i], sizeof(cluster[i]), "nats://127.0.0.1:%d", cport[i]);
	}
	snprintf(routes, sizeof(routes), "nats://127.0.0.1:%d,nats://127.0.0.1:%d", cport[1],
	         cport[2]);
	for (int i = 0; i < 3; i++) {
		const char *args[] = { "--cluster_name", "C", "--cluster", cluster[i], "--routes",
			               i == 0 ? routes : cluster[0], NULL };
		natsd_start(&n[i], args);
	}
	WAIT_FOR(natsd_routes(&n[0]) == 2 && natsd_routes(&n[1]) == 2 && natsd_routes(&n[2]) == 2);
	msgbus_bus *a = linked_bus(&n[0], NULL), *b = linked_bus(&n[2], NULL);
	msgbus_sub *sb;
	TU_ASSERT_OK(msgbus_subscribe(b, "cl", 0, &sb));
	WAIT_FOR(natsd_subs(&n[2], "cl") == 1);
	/* interest crosses the routes: what a sends reaches b */
	double end = tu_now_ms() + TU_WAIT_MS;
	msgbus_msg *m = NULL;
	while (!m && tu_now_ms() < end) {
		TU_ASSERT_OK(msgbus_publish(a, "cl", "probe", 5, 1000));
		if (msgbus_recv(sb, &m, 50) != MSGBUS_OK)
			m = NULL;
	}
	ck_assert_ptr_nonnull(m);
	msgbus_msg_release(m);
	while (msgbus_recv(sb, &m, 200) == MSGBUS_OK)
		msgbus_msg_release(m); /* probes still on their way */
	kill(n[0].pid, SIGKILL);
	waitpid(n[0].pid, NULL, 0);
	natsd_track(n[0].pid, false);
	n[0].pid = 0;
	double t0 = tu_now_ms();
	WAIT_FOR(link_stats(a).links_up == 0 || link_stats(a).reconnects >= 1);
	WAIT_FOR(link_stats(a).links_up == 1 && link_stats(a).reconnects >= 1);
	double took = tu_now_ms() - t0;
	ck_assert_msg(took < (tu_valgrind() ? 30000 : 3000), "a resumed after %.0f ms", took);
	stream(a, "cl", sb, 20);
	msgbus_unsubscribe(sb);
	msgbus_close(a);
	msgbus_close(b);
	for (int i = 0; i < 3; i++)
		natsd_stop(&n[i]);
}
END_TEST

/* Lame-duck mode (SIGUSR2): the server sends INFO "ldm":true and serves on
 * for its grace period (10 s). The link moves to another server of its
 * list at once, while the lame duck still runs, and traffic goes on. */
START_TEST(test_server_lame_duck)
{
	if (skip_without_server())
		return;
	struct natsd n[2] = { { 0 }, { 0 } };
	int cport[2];
	char cluster[2][64];
	for (int i = 0; i < 2; i++) {
		cport[i] = free_port();
		snprintf(cluster[i], sizeof(cluster[i]), "nats://127.0.0.1:%d", cport[i]);
	}
	for (int i = 0; i < 2; i++) {
		const char *args[] = { "--cluster_name", "L", "--cluster", cluster[i], "--routes",
			               cluster[1 - i], NULL };
		natsd_start(&n[i], args);
	}
	WAIT_FOR(natsd_routes(&n[0]) == 1 && natsd_routes(&n[1]) == 1);
	char url[128], nurl[160];
	tu_unique_url(url, sizeof(url), "inproc");
	msgbus_bus *a = tu_open(url, NULL), *b = linked_bus(&n[1], NULL);
	snprintf(nurl, sizeof(nurl), "nats://127.0.0.1:%d,127.0.0.1:%d", n[0].port, n[1].port);
	TU_ASSERT_OK(msgbus_connect(a, nurl));
	WAIT_FOR(link_stats(a).links_up == 1);
	msgbus_sub *sa, *sb;
	TU_ASSERT_OK(msgbus_subscribe(a, "ld.back", 0, &sa));
	TU_ASSERT_OK(msgbus_subscribe(b, "ld", 0, &sb));
	WAIT_FOR(natsd_subs(&n[0], "ld.back") == 1 && natsd_subs(&n[1], "ld") == 1);
	double end = tu_now_ms() + TU_WAIT_MS;
	msgbus_msg *m = NULL;
	while (!m && tu_now_ms() < end) {
		TU_ASSERT_OK(msgbus_publish(a, "ld", "probe", 5, 1000));
		if (msgbus_recv(sb, &m, 50) != MSGBUS_OK)
			m = NULL;
	}
	ck_assert_ptr_nonnull(m);
	msgbus_msg_release(m);
	while (msgbus_recv(sb, &m, 200) == MSGBUS_OK)
		msgbus_msg_release(m); /* probes still on their way */
	struct captured c;
	capture_start(&c);
	double t0 = tu_now_ms();
	ck_assert_int_eq(kill(n[0].pid, SIGUSR2), 0);
	WAIT_FOR(link_stats(a).reconnects >= 1 && link_stats(a).links_up == 1);
	double took = tu_now_ms() - t0;
	char log[4096];
	ck_assert(read_until(c.rd, log, sizeof(log), "lame-duck mode: moving", TU_WAIT_MS));
	capture_stop(&c);
	/* moved well inside the grace period: the lame duck still runs */
	ck_assert_msg(took < (tu_valgrind() ? 8000 : 3000), "moved after %.0f ms", took);
	ck_assert_int_eq(waitpid(n[0].pid, NULL, WNOHANG), 0);
	WAIT_FOR(natsd_subs(&n[1], "ld.back") == 1);
	stream(a, "ld", sb, 20);
	stream(b, "ld.back", sa, 20);
	msgbus_unsubscribe(sa);
	msgbus_unsubscribe(sb);
	msgbus_close(a);
	msgbus_close(b);
	for (int i = 0; i < 2; i++)
		natsd_stop(&n[i]);
}
END_TEST

/* ---- request/reply --------------------------------------------------------- */

static void echo_worker(msgbus_req *req, void *arg)
{
	char out[256];
	int len = snprintf(out, sizeof(out), "%s:%.*s", (const char *)arg,
	                   (int)msgbus_req_len(req), (const char *)msgbus_req_data(req));
	msgbus_respond(req, out, (size_t)len);
}

static void request_ok(msgbus_bus *b, const char *service, const char *data, const char *want)
{
	msgbus_msg *reply;
	TU_ASSERT_OK(msgbus_request(b, service, data, strlen(data), &reply, TU_WAIT_MS));
	ck_assert_uint_eq(msgbus_msg_len(reply), strlen(want));
	ck_assert(!memcmp(msgbus_msg_data(reply), want, strlen(want)));
	msgbus_msg_release(reply);
}

/* Both ways; a service nobody serves anywhere is "no responders" at once
 * (the server's 503); a worker that never answers is a timeout. */
START_TEST(test_server_reqrep)
{
	if (skip_without_server())
		return;
	struct natsd d = { 0 };
	natsd_start(&d, NULL);
	msgbus_bus *a = linked_bus(&d, NULL), *b = linked_bus(&d, NULL);
	msgbus_service *inv, *ord, *slow;
	TU_ASSERT_OK(msgbus_serve(b, "inventory", echo_worker, "inv", &inv));
	TU_ASSERT_OK(msgbus_serve(a, "orders", echo_worker, "ord", &ord));
	TU_ASSERT_OK(msgbus_serve(b, "slow", NULL, NULL, &slow)); /* never takes */
	WAIT_FOR(natsd_subs(&d, "inventory") == 1 && natsd_subs(&d, "orders") == 1 &&
	         natsd_subs(&d, "slow") == 1);
	for (int i = 0; i < 20; i++) {
		char q[32], want[48];
		snprintf(q, sizeof(q), "item %d", i);
		snprintf(want, sizeof(want), "inv:item %d", i);
		request_ok(a, "inventory", q, want);
		snprintf(want, sizeof(want), "ord:item %d", i);
		request_ok(b, "orders", q, want);
	}
	request_ok(a, "orders", "local", "ord:local"); /* served locally */
	msgbus_msg *reply;
	double t0 = tu_now_ms();
	TU_ASSERT_RC(msgbus_request(a, "nobody", "x", 1, &reply, 10000), MSGBUS_ENORESPONDERS);
	ck_assert_msg(tu_now_ms() - t0 < 2000, "no responders took %.0f ms", tu_now_ms() - t0);
	t0 = tu_now_ms();
	TU_ASSERT_RC(msgbus_request(a, "slow", "x", 1, &reply, 300), MSGBUS_ETIMEDOUT);
	ck_assert(tu_now_ms() - t0 >= 290 && tu_now_ms() - t0 < 3000);
	msgbus_unserve(inv);
	msgbus_unserve(ord);
	msgbus_unserve(slow);
	msgbus_close(a);
	msgbus_close(b);
	natsd_stop(&d);
}
END_TEST

/* Headers are not carried onto the bus (a bus message has none): an
 * HMSG's payload is published and a request's payload reaches the worker;
 * an HMSG with a status (JetStream's idle heartbeat) is the server's, not
 * a message, and is not published. The HPUBs come from a raw client. */
START_TEST(test_server_headers)
{
	if (skip_without_server())
		return;
	struct natsd d = { 0 };
	natsd_start(&d, NULL);
	msgbus_bus *b = linked_bus(&d, NULL);
	msgbus_sub *sb;
	msgbus_service *svc;
	TU_ASSERT_OK(msgbus_subscribe(b, "h.>", 0, &sb));
	TU_ASSERT_OK(msgbus_serve(b, "hsvc", echo_worker, "w", &svc));
	WAIT_FOR(natsd_subs(&d, "h.>") == 1 && natsd_subs(&d, "hsvc") == 1);
	int fd = raw_client(&d);
	const char *hb = "NATS/1.0 100 Idle Heartbeat\r\n\r\n", *hd = "NATS/1.0\r\nX-Trace: 1\r\n\r\n";
	static char out[1024];
	size_t hbl = strlen(hb), hdl = strlen(hd);
	int len = snprintf(out, sizeof(out),
	                   "HPUB h.a %zu %zu\r\n%s\r\n"
	                   "HPUB h.b %zu %zu\r\n%shello\r\n"
	                   "PUB h.c 2\r\nok\r\n"
	                   "SUB _INBOX.t.* 9\r\n"
	                   "HPUB hsvc _INBOX.t.1 %zu %zu\r\n%sping\r\n",
	                   hbl, hbl, hb, hdl, hdl + 5, hd, hdl, hdl + 4, hd);
	ck_assert_int_eq(tu_send_all(fd, out, (size_t)len), 0);
	const char *want[] = { "h.b", "hello", "h.c", "ok" };
	for (int i = 0; i < 2; i++) {
		msgbus_msg *m;
		TU_ASSERT_OK(msgbus_recv(sb, &m, TU_WAIT_MS));
		ck_assert_str_eq(msgbus_msg_subject(m), want[2 * i]);
		ck_assert_uint_eq(msgbus_msg_len(m), strlen(want[2 * i + 1]));
		ck_assert(!memcmp(msgbus_msg_data(m), want[2 * i + 1], strlen(want[2 * i + 1])));
		msgbus_msg_release(m);
	}
	char buf[4096];
	ck_assert(read_until(fd, buf, sizeof(buf), "w:ping", TU_WAIT_MS));
	ck_assert_ptr_null(strstr(buf, "HMSG")); /* the reply: a plain MSG */
	msgbus_msg *m;
	TU_ASSERT_RC(msgbus_recv(sb, &m, 100), MSGBUS_ETIMEDOUT);
	WAIT_FOR(link_stats(b).received == 3); /* h.b, h.c, the request */
	ck_assert_uint_eq(link_stats(b).undelivered, 0);
	close(fd);
	msgbus_unserve(svc);
	msgbus_unsubscribe(sb);
	msgbus_close(b);
	natsd_stop(&d);
}
END_TEST

/* A service with workers on two buses is one queue group: NATS spreads a
 * third bus's requests over both. */
START_TEST(test_server_queue_balance)
{
	if (skip_without_server())
		return;
	struct natsd d = { 0 };
	natsd_start(&d, NULL);
	msgbus_bus *a = linked_bus(&d, NULL), *b = linked_bus(&d, NULL), *c = linked_bus(&d, NULL);
	msgbus_service *sa, *sb;
	TU_ASSERT_OK(msgbus_serve(a, "bal", echo_worker, "a", &sa));
	TU_ASSERT_OK(msgbus_serve(b, "bal", echo_worker, "b", &sb));
	WAIT_FOR(natsd_subs(&d, "bal") == 2);
	int from_a = 0, from_b = 0;
	for (int i = 0; i < 40; i++) {
		msgbus_msg *reply;
		TU_ASSERT_OK(msgbus_request(c, "bal", "q", 1, &reply, TU_WAIT_MS));
		ck_assert_uint_eq(msgbus_msg_len(reply), 3);
		from_a += !memcmp(msgbus_msg_data(reply), "a:q", 3);
		from_b += !memcmp(msgbus_msg_data(reply), "b:q", 3);
		msgbus_msg_release(reply);
	}
	/* random choice: all 40 on one side has probability 2^-39 */
	ck_assert_int_eq(from_a + from_b, 40);
	ck_assert_int_gt(from_a, 0);
	ck_assert_int_gt(from_b, 0);
	msgbus_unserve(sa);
	msgbus_unserve(sb);
	msgbus_close(a);
	msgbus_close(b);
	msgbus_close(c);
	natsd_stop(&d);
}
END_TEST

/* A request in flight when the connection drops fails at once. */
START_TEST(test_server_req_drop)
{
	if (skip_without_server())
		return;
	struct natsd d = { 0 };
	natsd_start(&d, NULL);
	msgbus_bus *a = linked_bus(&d, NULL), *b = linked_bus(&d, NULL);
	msgbus_service *slow;
	TU_ASSERT_OK(msgbus_serve(b, "slow", NULL, NULL, &slow));
	WAIT_FOR(natsd_subs(&d, "slow") == 1);
	msgbus_call *call;
	msgbus_msg *reply;
	TU_ASSERT_OK(msgbus_call_start(a, "slow", "x", 1, 20000, &call));
	/* the request has reached b's worker queue: b took it from NATS */
	WAIT_FOR(link_stats(b).received == 1);
	double t0 = tu_now_ms();
	natsd_stop(&d);
	TU_ASSERT_RC(msgbus_call_wait(call, &reply, TU_WAIT_MS), MSGBUS_EPEERDIED);
	ck_assert(tu_now_ms() - t0 < TU_WAIT_MS);
	/* a's link serves "slow" still, and is down: a request (taken by the
	 * requester's own thread) fails at once, not at its deadline */
	WAIT_FOR(link_stats(a).links_up == 0);
	t0 = tu_now_ms();
	TU_ASSERT_RC(msgbus_request(a, "slow", "x", 1, &reply, 20000), MSGBUS_ENORESPONDERS);
	ck_assert_msg(tu_now_ms() - t0 < 2000, "took %.0f ms", tu_now_ms() - t0);
	msgbus_unserve(slow);
	msgbus_close(a);
	msgbus_close(b);
}
END_TEST

/* Replies of every size class cross: empty, around what a call entry
 * holds inline (MB_CALL_INLINE), over one write's worth (4094) and in a
 * large buffer; both ways; answered by the worker's callback, and by
 * another thread after the callback returned (the reply is then written
 * by that thread). A reply over the server's max_payload is never sent:
 * counted undelivered on the worker's side, the requester times out at
 * its own deadline. */
static msgbus_req *held_req;
static void size_worker(msgbus_req *req, void *arg)
{
	(void)arg;
	static char out[8192];
	size_t want = (size_t)strtoul((const char *)msgbus_req_data(req), NULL, 10);
	if (want == 1) { /* answered later, by the test's thread */
		__atomic_store_n(&held_req, req, __ATOMIC_RELEASE);
		return;
	}
	for (size_t i = 0; i < want && i < sizeof(out); i++)
		out[i] = (char)('a' + i % 26);
	msgbus_respond(req, out, want);
}

static void size_ok(msgbus_bus *b, size_t want)
{
	char q[16];
	msgbus_msg *reply;
	int ql = snprintf(q, sizeof(q), "%zu", want);
	TU_ASSERT_OK(msgbus_request(b, "sizes", q, (size_t)ql + 1, &reply, TU_WAIT_MS));
	ck_assert_uint_eq(msgbus_msg_len(reply), want);
	const char *p = msgbus_msg_data(reply);
	for (size_t i = 0; i < want; i++)
		ck_assert_int_eq(p[i], 'a' + (int)(i % 26));
	msgbus_msg_release(reply);
}

START_TEST(test_server_reply_sizes)
{
	if (skip_without_server())
		return;
	struct natsd d = { 0 };
	write_conf(&d, "rsz", "max_payload: 6000\n");
	natsd_start(&d, NULL);
	unlink(d.conf);
	msgbus_bus *a = linked_bus(&d, NULL), *b = linked_bus(&d, NULL);
	msgbus_service *sa, *sb;
	TU_ASSERT_OK(msgbus_serve(a, "sizes", size_worker, NULL, &sa));
	WAIT_FOR(natsd_subs(&d, "sizes") == 1);
	const size_t sizes[] = { 0, 2, 100, 200, 300, 4094, 4095, 5000, 6000 };
	for (int round = 0; round < 2; round++) {
		for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
			size_ok(b, sizes[i]);
		/* answered by another thread than the worker's */
		msgbus_call *call;
		msgbus_msg *reply;
		__atomic_store_n(&held_req, NULL, __ATOMIC_RELAXED);
		TU_ASSERT_OK(msgbus_call_start(b, "sizes", "1", 2, TU_WAIT_MS, &call));
		WAIT_FOR(__atomic_load_n(&held_req, __ATOMIC_ACQUIRE) != NULL);
		TU_ASSERT_OK(msgbus_respond(held_req, "late", 4));
		TU_ASSERT_OK(msgbus_call_wait(call, &reply, TU_WAIT_MS));
		ck_assert_uint_eq(msgbus_msg_len(reply), 4);
		ck_assert(!memcmp(msgbus_msg_data(reply), "late", 4));
		msgbus_msg_release(reply);
		/* over max_payload: not sent */
		uint64_t undelivered = link_stats(a).undelivered;
		double t0 = tu_now_ms();
		TU_ASSERT_RC(msgbus_request(b, "sizes", "6001", 5, &reply, 300), MSGBUS_ETIMEDOUT);
		ck_assert(tu_now_ms() - t0 >= 290 && tu_now_ms() - t0 < 3000);
		WAIT_FOR(link_stats(a).undelivered == undelivered + 1);
		/* the other way round */
		if (round == 0) {
			msgbus_unserve(sa);
			WAIT_FOR(natsd_subs(&d, "sizes") == 0);
			TU_ASSERT_OK(msgbus_serve(b, "sizes", size_worker, NULL, &sb));
			WAIT_FOR(natsd_subs(&d, "sizes") == 1);
			msgbus_bus *t = a;
			a = b;
			b = t;
		}
	}
	ck_assert_uint_eq(link_stats(a).links_up, 1);
	ck_assert_uint_eq(link_stats(b).links_up, 1);
	msgbus_unserve(sb);
	msgbus_close(a);
	msgbus_close(b);
	natsd_stop(&d);
}
END_TEST

/* Requesters and workers that spin (spin_us far above a round trip): the
 * requester's thread writes its request and spins through the whole round
 * trip (looking at its links now and then), the worker's thread writes the
 * reply; every reply is the right one, a timeout is still honoured. */
START_TEST(test_server_spinning)
{
	if (skip_without_server())
		return;
	struct natsd d = { 0 };
	natsd_start(&d, NULL);
	char url[2][128], nurl[160];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	o.spin_us = 200000;
	msgbus_bus *bus[2];
	nats_url(nurl, sizeof(nurl), NULL, &d, NULL);
	for (int i = 0; i < 2; i++) {
		tu_unique_url(url[i], sizeof(url[i]), "inproc");
		bus[i] = tu_open(url[i], &o);
		TU_ASSERT_OK(msgbus_connect(bus[i], nurl));
		WAIT_FOR(link_stats(bus[i]).links_up == 1);
	}
	msgbus_service *svc, *slow;
	TU_ASSERT_OK(msgbus_serve(bus[0], "spun", echo_worker, "w", &svc));
	TU_ASSERT_OK(msgbus_serve(bus[0], "spun.slow", NULL, NULL, &slow)); /* never takes */
	WAIT_FOR(natsd_subs(&d, "spun") == 1 && natsd_subs(&d, "spun.slow") == 1);
	for (int i = 0; i < 200; i++) {
		char q[32], want[48];
		snprintf(q, sizeof(q), "n%d", i);
		snprintf(want, sizeof(want), "w:n%d", i);
		request_ok(bus[1], "spun", q, want);
	}
	msgbus_msg *reply;
	double t0 = tu_now_ms();
	TU_ASSERT_RC(msgbus_request(bus[1], "spun.slow", "x", 1, &reply, 300), MSGBUS_ETIMEDOUT);
	ck_assert(tu_now_ms() - t0 >= 290 && tu_now_ms() - t0 < 3000);
	ck_assert_uint_eq(link_stats(bus[0]).undelivered, 0);
	ck_assert_uint_eq(link_stats(bus[1]).undelivered, 0);
	msgbus_unserve(svc);
	msgbus_unserve(slow);
	for (int i = 0; i < 2; i++)
		msgbus_close(bus[i]);
	natsd_stop(&d);
}
END_TEST

/* Requests from NATS that find the service's ring full wait (the rx
 * thread never does: they are queued for the link's rr thread) and are
 * all answered; none overtakes another on its way to the worker. A raw
 * client sends them all at once; the worker holds the first until all
 * have reached the bus. */
static _Atomic int gate_open;
static _Atomic int gate_next;
static void gated_worker(msgbus_req *req, void *arg)
{
	(void)arg;
	while (!atomic_load(&gate_open))
		tu_sleep_ms(1);
	char q[16];
	int k = snprintf(q, sizeof(q), "q%03d", atomic_load(&gate_next));
	/* in the order sent */
	ck_assert_uint_eq(msgbus_req_len(req), (size_t)k);
	ck_assert(!memcmp(msgbus_req_data(req), q, (size_t)k));
	atomic_fetch_add(&gate_next, 1);
	msgbus_respond(req, msgbus_req_data(req), msgbus_req_len(req));
}

START_TEST(test_server_rx_backlog)
{
	enum { N = 48 };
	if (skip_without_server())
		return;
	struct natsd d = { 0 };
	natsd_start(&d, NULL);
	char url[128], nurl[160];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	o.ring_slots = 8;
	tu_unique_url(url, sizeof(url), "inproc");
	msgbus_bus *b = tu_open(url, &o);
	nats_url(nurl, sizeof(nurl), NULL, &d, NULL);
	TU_ASSERT_OK(msgbus_connect(b, nurl));
	WAIT_FOR(link_stats(b).links_up == 1);
	msgbus_service *svc;
	atomic_store(&gate_open, 0);
	atomic_store(&gate_next, 0);
	TU_ASSERT_OK(msgbus_serve(b, "gated", gated_worker, NULL, &svc));
	WAIT_FOR(natsd_subs(&d, "gated") == 1);
	int fd = raw_client(&d);
	static char out[N * 64];
	size_t len = (size_t)snprintf(out, sizeof(out), "SUB _INBOX.g.* 1\r\n");
	for (int i = 0; i < N; i++)
		len += (size_t)snprintf(out + len, sizeof(out) - len,
		                        "PUB gated _INBOX.g.%d 4\r\nq%03d\r\n", i, i);
	ck_assert_int_eq(tu_send_all(fd, out, len), 0);
	WAIT_FOR(link_stats(b).received == N);
	atomic_store(&gate_open, 1);
	/* every reply, each once (in whatever order they are written) */
	bool seen[N] = { false };
	int got = 0;
	static char buf[1 << 16];
	size_t have = 0;
	double end = tu_now_ms() + 2 * TU_WAIT_MS;
	while (got < N) {
		ck_assert_msg(tu_now_ms() < end, "only %d of %d replies", got, N);
		struct pollfd p = { fd, POLLIN, 0 };
		if (poll(&p, 1, 100) != 1)
			continue;
		ssize_t k = read(fd, buf + have, sizeof(buf) - have);
		ck_assert_int_gt(k, 0);
		have += (size_t)k;
		size_t off = 0;
		for (;;) {
			char *eol = memmem(buf + off, have - off, "\r\n", 2);
			if (!eol)
				break;
			size_t ll = (size_t)(eol - (buf + off));
			if (ll < 4 || memcmp(buf + off, "MSG ", 4)) {
				off += ll + 2;
				continue;
			}
			if (have - off < ll + 2 + 4 + 2)
				break;
			int i = atoi(eol + 3);
			ck_assert(eol[2] == 'q' && i >= 0 && i < N && !seen[i]);
			seen[i] = true;
			got++;
			off += ll + 2 + 4 + 2;
		}
		memmove(buf, buf + off, have - off);
		have -= off;
	}
	ck_assert_int_eq(atomic_load(&gate_next), N);
	ck_assert_uint_eq(link_stats(b).undelivered, 0);
	WAIT_FOR(link_stats(b).sent == N);
	close(fd);
	msgbus_unserve(svc);
	msgbus_close(b);
	natsd_stop(&d);
}
END_TEST

/* A leaf node (the way to TLS or NKey for a bus: a local leaf configured
 * with them): a bus on the leaf and a bus on the hub exchange messages
 * and requests. */
START_TEST(test_server_leaf)
{
	if (skip_without_server())
		return;
	struct natsd hub = { 0 }, leaf = { 0 };
	int lport = free_port();
	char text[256];
	snprintf(text, sizeof(text), "leafnodes { listen: \"127.0.0.1:%d\" }\n", lport);
	write_conf(&hub, "hub", text);
	natsd_start(&hub, NULL);
	unlink(hub.conf);
	snprintf(text, sizeof(text), "leafnodes { remotes: [ { url: \"nats-leaf://127.0.0.1:%d\" } ] }\n",
	         lport);
	write_conf(&leaf, "leaf", text);
	natsd_start(&leaf, NULL);
	unlink(leaf.conf);
	msgbus_bus *a = linked_bus(&hub, NULL), *b = linked_bus(&leaf, NULL);
	msgbus_sub *sb;
	msgbus_service *svc;
	TU_ASSERT_OK(msgbus_subscribe(b, "leaf.>", 0, &sb));
	TU_ASSERT_OK(msgbus_serve(b, "leafsvc", echo_worker, "leaf", &svc));
	WAIT_FOR(natsd_subs(&leaf, "leaf.>") == 1);
	/* until the leaf connection carries the interest, a probe is lost */
	double end = tu_now_ms() + TU_WAIT_MS;
	msgbus_msg *m = NULL;
	while (!m && tu_now_ms() < end) {
		TU_ASSERT_OK(msgbus_publish(a, "leaf.probe", "p", 1, 1000));
		if (msgbus_recv(sb, &m, 50) != MSGBUS_OK)
			m = NULL;
	}
	ck_assert_ptr_nonnull(m);
	msgbus_msg_release(m);
	while (msgbus_recv(sb, &m, 200) == MSGBUS_OK)
		msgbus_msg_release(m);
	stream(a, "leaf.x", sb, 20);
	/* the service's queue SUB crosses the leaf connection on its own */
	WAIT_FOR(natsd_subs(&leaf, "leafsvc") == 1);
	end = tu_now_ms() + TU_WAIT_MS;
	int rc;
	do {
		rc = msgbus_request(a, "leafsvc", "hi", 2, &m, TU_WAIT_MS);
	} while (rc == MSGBUS_ENORESPONDERS && tu_now_ms() < end);
	TU_ASSERT_OK(rc);
	ck_assert(msgbus_msg_len(m) == 7 && !memcmp(msgbus_msg_data(m), "leaf:hi", 7));
	msgbus_msg_release(m);
	msgbus_unserve(svc);
	msgbus_unsubscribe(sb);
	msgbus_close(a);
	msgbus_close(b);
	natsd_stop(&leaf);
	natsd_stop(&hub);
}
END_TEST

/* ---- a fake server ------------------------------------------------------------ */

static int listen_any(int *port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(listen(fd, 4), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &al), 0);
	*port = ntohs(a.sin_port);
	return fd;
}

/* Accept the link, bring it up (INFO, the PONG to its PING), then send
 * bad; the link must close the connection. */
static void fake_round(int lfd, msgbus_bus *b, const char *bad, size_t bad_len, uint64_t bad_before)
{
	struct pollfd p = { lfd, POLLIN, 0 };
	ck_assert_int_eq(poll(&p, 1, TU_WAIT_MS), 1);
	int fd = accept(lfd, NULL, NULL);
	ck_assert_int_ge(fd, 0);
	const char *info = "INFO {\"server_id\":\"FAKE\",\"version\":\"2.9.10\",\"proto\":1,"
	                   "\"headers\":true,\"max_payload\":4096}\r\n";
	char buf[4096];
	ck_assert_int_eq(tu_send_all(fd, info, strlen(info)), 0);
	ck_assert(read_until(fd, buf, sizeof(buf), "PING\r\n", TU_WAIT_MS));
	ck_assert_ptr_nonnull(strstr(buf, "\"echo\":false"));
	ck_assert_int_eq(tu_send_all(fd, "PONG\r\n", 6), 0);
	WAIT_FOR(link_stats(b).links_up == 1);
	ck_assert_int_eq(tu_send_all(fd, bad, bad_len), 0);
	WAIT_FOR(link_stats(b).links_up == 0);
	ck_assert_uint_eq(link_stats(b).bad_frames, bad_before + 1);
	/* closed by the link: the stream ends */
	double end = tu_now_ms() + TU_WAIT_MS;
	ssize_t got = 1;
	while (got > 0 && tu_now_ms() < end) {
		struct pollfd q = { fd, POLLIN, 0 };
		if (poll(&q, 1, 50) == 1)
			got = read(fd, buf, sizeof(buf));
	}
	ck_assert_int_eq(got, 0);
	close(fd);
}

START_TEST(test_fake_server)
{
	int port, lfd = listen_any(&port);
	char url[128], nurl[64];
	tu_unique_url(url, sizeof(url), "inproc");
	msgbus_bus *b = tu_open(url, NULL);
	snprintf(nurl, sizeof(nurl), "nats://127.0.0.1:%d", port);
	struct captured c;
	capture_start(&c); /* the link logs each close */
	TU_ASSERT_OK(msgbus_connect(b, nurl));
	static char line[5000];
	memset(line, 'a', sizeof(line));
	const char *garbage = "HELLO THERE\r\n", *oversize = "MSG a 1 4097\r\n",
	           *truncated = "MSG a 1 10\r\nabc\r\nMSG b 1 1\r\n";
	fake_round(lfd, b, garbage, strlen(garbage), 0);
	fake_round(lfd, b, oversize, strlen(oversize), 1);
	fake_round(lfd, b, line, sizeof(line), 2);
	fake_round(lfd, b, truncated, strlen(truncated), 3);
	/* a server without headers is closed before CONNECT */
	struct pollfd p = { lfd, POLLIN, 0 };
	ck_assert_int_eq(poll(&p, 1, TU_WAIT_MS), 1);
	int fd = accept(lfd, NULL, NULL);
	const char *old = "INFO {\"server_id\":\"OLD\",\"proto\":1,\"headers\":false}\r\n";
	ck_assert_int_eq(tu_send_all(fd, old, strlen(old)), 0);
	static char log[16384]; /* the rounds' lines come first */
	ck_assert(read_until(c.rd, log, sizeof(log), "too old", TU_WAIT_MS));
	ck_assert_uint_eq(link_stats(b).links_up, 0);
	close(fd);
	msgbus_close(b);
	capture_stop(&c);
	close(lfd);
}
END_TEST

/* The fake server's side of one connection: what it read, and how far
 * the test has looked. */
struct fake {
	int fd;
	size_t len, mark;
	char buf[1 << 16];
};

/* Read until want appears after mark; the bytes after it are where the
 * next look starts. The line want starts, up to its CRLF, into line. */
static void fake_expect(struct fake *f, const char *want, char *line, size_t cap)
{
	double end = tu_now_ms() + TU_WAIT_MS;
	char *at;
	f->buf[f->len] = '\0';
	while (!(at = strstr(f->buf + f->mark, want)) || !strstr(at, "\r\n")) {
		struct pollfd p = { f->fd, POLLIN, 0 };
		ck_assert_msg(tu_now_ms() < end && f->len + 1 < sizeof(f->buf),
		              "the link did not send %s", want);
		if (poll(&p, 1, 50) <= 0)
			continue;
		ssize_t n = read(f->fd, f->buf + f->len, sizeof(f->buf) - 1 - f->len);
		ck_assert_int_gt(n, 0);
		f->len += (size_t)n;
		f->buf[f->len] = '\0';
	}
	char *eol = strstr(at, "\r\n");
	if (line)
		snprintf(line, cap, "%.*s", (int)(eol - at), at);
	f->mark = (size_t)(eol + 2 - f->buf);
}

static void fake_send(struct fake *f, const char *text)
{
	ck_assert_int_eq(tu_send_all(f->fd, text, strlen(text)), 0);
}

/* The link's end of the connection the fake server accepted as fd: a
 * descriptor of this process too. */
static int link_end(int fd)
{
	struct sockaddr_in peer, a;
	socklen_t pl = sizeof(peer), al;
	ck_assert_int_eq(getpeername(fd, (struct sockaddr *)&peer, &pl), 0);
	for (int i = 0; i < 1024; i++) {
		al = sizeof(a);
		if (i != fd && getsockname(i, (struct sockaddr *)&a, &al) == 0 &&
		    al == sizeof(a) && a.sin_family == AF_INET && a.sin_port == peer.sin_port &&
		    a.sin_addr.s_addr == peer.sin_addr.s_addr)
			return i;
	}
	ck_abort_msg("the link's end of the connection is not among our descriptors");
	return -1;
}

/* The thread of ours blocked reading fd now, or 0 (Linux:
 * /proc/self/task/TID/syscall reads "NR ARG0 ..." while TID is in a
 * system call). The link's reads are recv(2) with a 50 ms timeout: its
 * owner (rx, or a requester) sits in one nearly all the time. */
static pid_t reader_of(int fd)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *de;
	pid_t found = 0;
	ck_assert_ptr_nonnull(d);
	while (!found && (de = readdir(d)) != NULL) {
		char path[300], text[256];
		long nr;
		unsigned long arg0;
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/syscall", de->d_name);
		FILE *f = fopen(path, "r");
		if (f && fgets(text, sizeof(text), f) && sscanf(text, "%ld %lx", &nr, &arg0) == 2 &&
		    (nr == SYS_recvfrom || nr == SYS_read) && arg0 == (unsigned long)fd)
			found = (pid_t)atoi(de->d_name);
		if (f)
			fclose(f);
	}
	closedir(d);
	return found;
}

/* Whether all fd sent was read at its other end, peer: acknowledged (none
 * left in fd's send queue), then taken from peer's receive queue. */
static bool all_read(int fd, int peer)
{
	int out = -1, in = -1;
	return ioctl(fd, SIOCOUTQ, &out) == 0 && out == 0 && ioctl(peer, SIOCINQ, &in) == 0 &&
	       in == 0;
}

/* One request to "svc" on a thread of its own; to: where the fake server
 * sends the reply. */
struct await_req {
	msgbus_bus *b;
	int timeout_ms, rc;
	msgbus_msg *reply;
	pthread_t t;
	char to[160];
};

static void *await_requester(void *arg)
{
	struct await_req *r = arg;
	r->rc = msgbus_request(r->b, "svc", "q", 1, &r->reply, r->timeout_ms);
	return NULL;
}

/* Start r, and read its PUB at f. */
static void await_start(struct await_req *r, msgbus_bus *b, int timeout_ms, struct fake *f)
{
	char line[256];
	r->b = b;
	r->timeout_ms = timeout_ms;
	r->rc = -1;
	r->reply = NULL;
	ck_assert_int_eq(pthread_create(&r->t, NULL, await_requester, r), 0);
	fake_expect(f, "PUB svc ", line, sizeof(line));
	ck_assert_int_eq(sscanf(line, "PUB svc %159s", r->to), 1);
}

static int await_end(struct await_req *r)
{
	ck_assert_int_eq(pthread_join(r->t, NULL), 0);
	return r->rc;
}

/* A round trip (after it, the next requester may be let read), then a
 * request left waiting, once the reading side is settled: a thread of
 * ours blocks reading the connection, the requester if rx let it (it
 * holds the reading side then), else rx. Which one is rx's choice: it
 * hands over only to a requester that asked within NATS_GONE_NS (2 ms)
 * of rx looking, and one that found rx reading asks again at its next
 * periodic check (250 ms), so neither time nor anything the test can do
 * ensures the requester reads; both must give what the caller asserts. */
static void await_pending(struct fake *f, msgbus_bus *b, struct await_req *r)
{
	char text[256];
	await_start(r, b, TU_WAIT_MS, f);
	snprintf(text, sizeof(text), "MSG %s 1 2\r\nok\r\n", r->to);
	fake_send(f, text);
	TU_ASSERT_OK(await_end(r));
	msgbus_msg_release(r->reply);
	await_start(r, b, 20000, f);
	int fd = link_end(f->fd);
	WAIT_FOR(reader_of(fd) != 0);
}

/* Accept b's link on lfd and bring it up. */
static void fake_up(int lfd, msgbus_bus *b, struct fake *f)
{
	struct pollfd p = { lfd, POLLIN, 0 };
	ck_assert_int_eq(poll(&p, 1, TU_WAIT_MS), 1);
	f->len = f->mark = 0;
	f->fd = accept(lfd, NULL, NULL);
	ck_assert_int_ge(f->fd, 0);
	fake_send(f, "INFO {\"server_id\":\"FAKE\",\"version\":\"2.9.10\",\"proto\":1,"
	             "\"headers\":true,\"max_payload\":4096}\r\n");
	fake_expect(f, "PING", NULL, 0);
	fake_send(f, "PONG\r\n");
	WAIT_FOR(link_stats(b).links_up == 1);
}

/*
 * A requester waiting for its reply from NATS reads the connection itself
 * once the link's rx lets it (after the first round trip), and handles
 * whatever comes on the way as rx would: the server's PING is answered
 * before the reply comes, a MSG for a local subscriber is delivered, a
 * reply split over two writes is put together. A timeout is honoured.
 * When the requesters are gone, rx reads again. Bad input in the middle
 * of a wait closes the connection, and the request fails at once with
 * MSGBUS_EPEERDIED; msgbus_shutdown ends a wait as promptly as any other.
 * The test waits for what it can see, never for time: a thread of ours
 * blocked reading the link's socket (reader_of), the link's socket having
 * read all the fake server sent (all_read).
 */
START_TEST(test_fake_server_await)
{
	int port, lfd = listen_any(&port);
	char url[128], nurl[64], line[256], sid[32], text[256];
	tu_unique_url(url, sizeof(url), "inproc");
	msgbus_bus *b = tu_open(url, NULL);
	msgbus_sub *note;
	TU_ASSERT_OK(msgbus_subscribe(b, "note", 0, &note));
	snprintf(nurl, sizeof(nurl), "nats://127.0.0.1:%d", port);
	TU_ASSERT_OK(msgbus_connect(b, nurl));
	static struct fake f;
	static struct await_req r;
	fake_up(lfd, b, &f);
	fake_expect(&f, "SUB note ", line, sizeof(line));
	ck_assert_int_eq(sscanf(line, "SUB note %31s", sid), 1);
	int fd = link_end(f.fd);
	for (int i = 0; i < 20; i++) {
		await_start(&r, b, TU_WAIT_MS, &f);
		snprintf(text, sizeof(text), "MSG note %s 2\r\nn%d\r\nPING\r\n", sid, i % 10);
		fake_send(&f, text);
		fake_expect(&f, "PONG", NULL, 0); /* else no reply: a timeout */
		/* the reply in two writes, the first read before the second */
		snprintf(text, sizeof(text), "MSG %s 1 2\r\nr", r.to);
		fake_send(&f, text);
		WAIT_FOR(all_read(f.fd, fd));
		snprintf(text, sizeof(text), "%d\r\n", i % 10);
		fake_send(&f, text);
		TU_ASSERT_OK(await_end(&r));
		snprintf(text, sizeof(text), "r%d", i % 10);
		ck_assert_uint_eq(msgbus_msg_len(r.reply), 2);
		ck_assert(!memcmp(msgbus_msg_data(r.reply), text, 2));
		msgbus_msg_release(r.reply);
		msgbus_msg *m;
		TU_ASSERT_OK(msgbus_recv(note, &m, TU_WAIT_MS));
		text[0] = 'n';
		ck_assert(!memcmp(msgbus_msg_data(m), text, 2));
		msgbus_msg_release(m);
	}
	/* unanswered: the requester's own deadline */
	msgbus_msg *m;
	double t0 = tu_now_ms();
	TU_ASSERT_RC(msgbus_request(b, "svc", "q", 1, &m, 300), MSGBUS_ETIMEDOUT);
	ck_assert_msg(tu_now_ms() - t0 >= 290 && tu_now_ms() - t0 < 1000, "took %.0f ms",
	              tu_now_ms() - t0);
	fake_expect(&f, "PUB svc ", NULL, 0);
	/* no requester: rx owns the reading side again (blocks reading it),
	 * and reads (and answers) what comes */
	WAIT_FOR(reader_of(fd) != 0);
	snprintf(text, sizeof(text), "PING\r\nMSG note %s 2\r\nnx\r\n", sid);
	fake_send(&f, text);
	fake_expect(&f, "PONG", NULL, 0);
	TU_ASSERT_OK(msgbus_recv(note, &m, TU_WAIT_MS));
	ck_assert(!memcmp(msgbus_msg_data(m), "nx", 2));
	msgbus_msg_release(m);
	/* bad input while a requester waits */
	await_pending(&f, b, &r);
	t0 = tu_now_ms();
	fake_send(&f, "HELLO THERE\r\n");
	TU_ASSERT_RC(await_end(&r), MSGBUS_EPEERDIED);
	ck_assert_msg(tu_now_ms() - t0 < 2000, "took %.0f ms", tu_now_ms() - t0);
	WAIT_FOR(link_stats(b).links_up == 0);
	ck_assert_uint_eq(link_stats(b).bad_frames, 1);
	close(f.fd);
	/* msgbus_shutdown ends a wait that reads, as every other wait:
	 * within 100 ms (the reads block 50 ms at most) */
	fake_up(lfd, b, &f);
	await_pending(&f, b, &r);
	t0 = tu_now_ms();
	TU_ASSERT_OK(msgbus_shutdown(b));
	TU_ASSERT_RC(await_end(&r), MSGBUS_ECLOSED);
	double took = tu_now_ms() - t0, bound = tu_valgrind() ? 1000.0 : 100.0;
	ck_assert_msg(took < bound, "took %.0f ms (bound %.0f)", took, bound);
	msgbus_unsubscribe(note);
	msgbus_close(b);
	close(f.fd);
	close(lfd);
}
END_TEST

/* A bridge's messages stay one hop, so a bridge (a link's handle)
 * publishing does not write into the inboxes of bridges' subscriptions
 * (links' followers, proxies, watches), which would only skip them: a
 * nats:// link receiving a stream used to copy each message into its own
 * follower, and count the copies that follower dropped as undelivered. */
START_TEST(test_bridge_route)
{
	char url[128];
	tu_unique_url(url, sizeof(url), "inproc");
	msgbus_bus *a = tu_open(url, NULL), *br[2];
	for (int i = 0; i < 2; i++) {
		TU_ASSERT_OK(a->bus_hooks->reopen(a, &br[i]));
		atomic_fetch_or(&mb_part_at(br[i], br[i]->self)->flags, MB_PARTF_BRIDGE);
	}
	msgbus_sub *user, *link;
	TU_ASSERT_OK(msgbus_subscribe(a, "r.>", 0, &user));
	TU_ASSERT_OK(msgbus_subscribe(br[1], ">", 0, &link));
	TU_ASSERT_OK(msgbus_publish(br[0], "r.from_bridge", "b", 1, 1000));
	TU_ASSERT_OK(msgbus_publish(a, "r.local", "l", 1, 1000));
	const char *want[] = { "r.from_bridge", "r.local" };
	for (int i = 0; i < 2; i++) {
		msgbus_msg *m;
		TU_ASSERT_OK(msgbus_recv(user, &m, TU_WAIT_MS));
		ck_assert_str_eq(msgbus_msg_subject(m), want[i]);
		msgbus_msg_release(m);
	}
	/* the bridge's subscription: the local message only */
	msgbus_msg *m;
	TU_ASSERT_OK(msgbus_recv(link, &m, TU_WAIT_MS));
	ck_assert_str_eq(msgbus_msg_subject(m), "r.local");
	msgbus_msg_release(m);
	TU_ASSERT_RC(msgbus_recv(link, &m, 50), MSGBUS_ETIMEDOUT);
	msgbus_unsubscribe(link);
	msgbus_unsubscribe(user);
	for (int i = 0; i < 2; i++)
		a->bus_hooks->close(br[i]);
	msgbus_close(a);
}
END_TEST

/* msgbus_listen(3): "Messages take no entry: a peer may publish on any
 * number of subjects", and max_subjects counts service names only
 * (msgbus_open(3)). A nats:// link still asked the links' share of the
 * service-name table for every new subject it received: with 3 of 4 names
 * taken by local services, every message from NATS was counted
 * undelivered and never reached the local subscriber. */
START_TEST(test_server_msg_no_subject_entry)
{
	if (skip_without_server())
		return;
	struct natsd d = { 0 };
	natsd_start(&d, NULL);
	char url_a[128], url_b[128], nats[96];
	tu_unique_url(url_a, sizeof(url_a), "inproc");
	tu_unique_url(url_b, sizeof(url_b), "inproc");
	nats_url(nats, sizeof(nats), NULL, &d, NULL);
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	o.max_subjects = 4; /* the links keep 1 free for local services */
	msgbus_bus *a = tu_open(url_a, &o), *b = tu_open(url_b, NULL);
	msgbus_service *svc[3];
	for (int i = 0; i < 3; i++) {
		char name[16];
		snprintf(name, sizeof(name), "audit.svc%d", i);
		TU_ASSERT_OK(msgbus_serve(a, name, NULL, NULL, &svc[i]));
	}
	msgbus_sub *sub;
	msgbus_msg *m = NULL;
	TU_ASSERT_OK(msgbus_subscribe(a, "news.>", 0, &sub));
	TU_ASSERT_OK(msgbus_connect(a, nats));
	TU_ASSERT_OK(msgbus_connect(b, nats));
	WAIT_FOR(nats_link_info(a).flags & MSGBUS_LINKINFO_CONFIRMED);
	WAIT_FOR(nats_link_info(b).state == MSGBUS_LINK_UP);
	for (int i = 0; i < 3; i++) {
		char subject[32];
		snprintf(subject, sizeof(subject), "news.s%d", i);
		TU_ASSERT_OK(msgbus_publish(b, subject, "x", 1, TU_WAIT_MS));
		TU_ASSERT_OK(msgbus_recv(sub, &m, TU_WAIT_MS));
		ck_assert_str_eq(msgbus_msg_subject(m), subject);
		msgbus_msg_release(m);
	}
	/* rx counts a message after it published it: the count may lag
	 * the receive */
	WAIT_FOR(link_stats(a).received == 3);
	ck_assert_uint_eq(link_stats(a).undelivered, 0);
	TU_ASSERT_OK(msgbus_close(b));
	TU_ASSERT_OK(msgbus_close(a));
	natsd_stop(&d);
}
END_TEST

static TCase *nats_server_tcase(void)
{
	TCase *tc = tcase_create("server");
	tcase_set_timeout(tc, NATS_CASE_TIMEOUT);
	tcase_add_checked_fixture(tc, NULL, natsd_teardown);
	tcase_add_unchecked_fixture(tc, NULL, natsd_teardown);
	tcase_add_test(tc, test_server_pubsub);
	tcase_add_test(tc, test_server_no_loop);
	tcase_add_test(tc, test_server_sub_count);
	tcase_add_test(tc, test_server_credentials);
	tcase_add_test(tc, test_server_links_listed);
	tcase_add_test(tc, test_server_max_payload);
	tcase_add_test(tc, test_server_reconnect);
	tcase_add_test(tc, test_server_export);
	tcase_add_test(tc, test_server_local_drops);
	tcase_add_test(tc, test_server_lossless);
	tcase_add_test(tc, test_server_cluster);
	tcase_add_test(tc, test_server_lame_duck);
	tcase_add_test(tc, test_server_reqrep);
	tcase_add_test(tc, test_server_headers);
	tcase_add_test(tc, test_server_queue_balance);
	tcase_add_test(tc, test_server_leaf);
	tcase_add_test(tc, test_server_req_drop);
	tcase_add_test(tc, test_server_reply_sizes);
	tcase_add_test(tc, test_server_rx_backlog);
	tcase_add_test(tc, test_server_spinning);
	tcase_add_test(tc, test_fake_server);
	tcase_add_test(tc, test_fake_server_await);
	tcase_add_test(tc, test_server_msg_no_subject_entry);
	return tc;
}

Suite *suite_nats(void)
{
	Suite *s = suite_create("nats");
	TCase *tc = tcase_create("codec");
	tcase_add_test(tc, test_codec_info);
	tcase_add_test(tc, test_codec_msg);
	tcase_add_test(tc, test_codec_control);
	tcase_add_test(tc, test_codec_limits);
	tcase_add_test(tc, test_codec_encode);
	tcase_add_test(tc, test_bridge_route);
	suite_add_tcase(s, tc);
	if (!natsd_path())
		printf("nats: nats-server not installed: the cases that need it pass without running\n");
	suite_add_tcase(s, nats_server_tcase());
	return s;
}

