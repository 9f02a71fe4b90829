/*
 * check_nats.c - nats:// links: the client protocol codec
 * (lib/nats_proto.c) and links through a real nats-server.
 *
 *  codec     INFO fields, MSG and HMSG (the 503 status), PING/PONG/+OK/-ERR,
 *            items split anywhere, the limits (a line over 4096 bytes, a
 *            payload over max_payload, a truncated payload, garbage), and
 *            the encoders' exact bytes
 */
#include "test_util.h"
#include "nats_proto.h"

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
}
END_TEST

Suite *suite_nats(void)
{
	Suite *s = suite_create("nats");
	TCase *tc = tcase_create("codec");
	tcase_add_test(tc, test_codec_info);
	tcase_add_test(tc, test_codec_msg);
	tcase_add_test(tc, test_codec_control);
	tcase_add_test(tc, test_codec_limits);
	tcase_add_test(tc, test_codec_encode);
	suite_add_tcase(s, tc);
	return s;
}
