/*
 * fuzz_subject.c - libFuzzer target for subject syntax and matching
 * (lib/shm/subject.c): mb_subject_check() as subject and as pattern,
 * mb_subject_match(), mb_subject_internal() and mb_hash().
 *
 * The input is split at its first two NUL bytes into A and B (a subject
 * cannot hold a NUL, so nothing is lost): "orders.*\0orders.created" is the
 * pair (pattern A, subject B). Each of A and B is checked both ways against
 * an independent validator written here from msgbus(7); (A, B) and (B, A)
 * are matched by mb_subject_match() and by an independent token-by-token
 * matcher, which must agree whenever both sides are valid. Every valid
 * subject must match itself, ">" and the patterns made from it by turning
 * one token into "*" or a tail into ">"; a pattern without wildcards must
 * match exactly the subject equal to it.
 *
 * mb_subject_check() takes a NUL-terminated string, so it gets a heap copy
 * of exactly strlen + 1 bytes; the functions that take a length get heap
 * copies of exactly that length with no NUL after them. AddressSanitizer
 * thus sees any read past the end. mb_subject_match() also runs on pairs
 * that are not valid, as lib/ may pass it bytes from shared memory; there
 * only memory safety is required. Built by `make fuzz`.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "msgbus.h"
#include "shm/layout.h"
#include "shm/subject.h"
#include "fuzz.h"

/* A heap copy of exactly n bytes, plus a NUL if nul. */
static char *copy(const char *s, size_t n, bool nul)
{
	size_t sz = n + (nul ? 1 : 0);
	char *p = malloc(sz ? sz : 1);
	REQUIRE(p != NULL);
	memcpy(p, s, n);
	if (nul)
		p[n] = '\0';
	return p;
}

/* ---- the reference, from msgbus(7) SUBJECTS --------------------------------- */

/* 1 to 255 bytes of tokens separated by '.'; no token empty; printable ASCII
 * other than space; in patterns "*" as a whole token and ">" as the whole
 * last token, and never a wildcard character anywhere else. */
static bool ref_valid(const char *s, size_t n, bool pattern, bool *wild)
{
	*wild = false;
	if (n < 1 || n > MB_SUBJECT_MAX)
		return false;
	size_t start = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i < n && s[i] != '.')
			continue;
		size_t tl = i - start;
		if (tl == 0)
			return false;
		if (pattern && tl == 1 && (s[start] == '*' || (s[start] == '>' && i == n))) {
			*wild = true;
		} else {
			for (size_t k = start; k < i; k++) {
				unsigned char c = (unsigned char)s[k];
				if (c < 0x21 || c > 0x7e || c == '*' || c == '>')
					return false;
			}
		}
		start = i + 1;
	}
	return true;
}

struct toks {
	size_t n;
	size_t off[MB_SUBJECT_MAX + 1], len[MB_SUBJECT_MAX + 1];
};

static void split(const char *s, size_t n, struct toks *t)
{
	t->n = 0;
	size_t start = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i < n && s[i] != '.')
			continue;
		t->off[t->n] = start;
		t->len[t->n] = i - start;
		t->n++;
		start = i + 1;
	}
}

static bool tok_is(const char *s, const struct toks *t, size_t k, char c)
{
	return t->len[k] == 1 && s[t->off[k]] == c;
}

/* Token by token: "*" takes one token, ">" (last) one or more. */
static bool ref_match(const char *p, size_t plen, const char *s, size_t slen)
{
	static struct toks pt, st;
	split(p, plen, &pt);
	split(s, slen, &st);
	for (size_t k = 0; k < pt.n; k++) {
		if (tok_is(p, &pt, k, '>'))
			return k < st.n;
		if (k >= st.n)
			return false;
		if (tok_is(p, &pt, k, '*'))
			continue;
		if (pt.len[k] != st.len[k] || memcmp(p + pt.off[k], s + st.off[k], pt.len[k]))
			return false;
	}
	return pt.n == st.n;
}

/* ---- properties ------------------------------------------------------------- */

/* mb_subject_match on exact heap copies without NULs. */
static bool match(const char *p, size_t plen, const char *s, size_t slen)
{
	char *pc = copy(p, plen, false), *sc = copy(s, slen, false);
	bool r = mb_subject_match(pc, plen, sc, slen);
	free(pc);
	free(sc);
	return r;
}

/* Checks s (no NUL in s[0..n)) both ways; returns what it is. */
static void check_one(const char *s, size_t n, bool *subject, bool *pattern, bool *wild)
{
	char *c = copy(s, n, true);
	bool rw, rsub = ref_valid(s, n, false, &rw), rpat;
	size_t len = 12345;
	bool w = true;
	int rc = mb_subject_check(c, &len, false, &w);
	REQUIRE(rc == 0 || rc == MSGBUS_EINVAL);
	REQUIRE((rc == 0) == rsub);
	if (rc == 0)
		REQUIRE(len == n && !w);
	len = 12345;
	rc = mb_subject_check(c, &len, false, NULL); /* wild is optional */
	REQUIRE((rc == 0) == rsub && (rc != 0 || len == n));

	rpat = ref_valid(s, n, true, &rw);
	len = 12345;
	w = !rw;
	rc = mb_subject_check(c, &len, true, &w);
	REQUIRE(rc == 0 || rc == MSGBUS_EINVAL);
	REQUIRE((rc == 0) == rpat);
	if (rc == 0)
		REQUIRE(len == n && w == rw);
	/* A subject is a pattern without wildcards, and the other way round. */
	REQUIRE(rsub == (rpat && !rw));
	free(c);

	/* The reserved prefix, on an exact copy without NUL. */
	c = copy(s, n, false);
	REQUIRE(mb_subject_internal(c, n) == (n >= 5 && memcmp(s, "_svc.", 5) == 0));
	/* The hash depends on the bytes only, not on where they are. */
	uint64_t h = mb_hash(c, n);
	REQUIRE(mb_hash(s, n) == h && mb_hash(c, n) == h);
	free(c);

	*subject = rsub;
	*pattern = rpat;
	*wild = rw;
}

/* Which tokens subject_matches turns into wildcards: all of a short subject,
 * a few of a long one (each costs a pass over the subject, and the middle
 * ones behave alike). */
static bool pick(size_t k, size_t ntok)
{
	return ntok <= 8 || k < 3 || k + 3 >= ntok || k == ntok / 2;
}

/* Everything a valid subject must match. */
static void subject_matches(const char *s, size_t n)
{
	REQUIRE(match(s, n, s, n));
	REQUIRE(match(">", 1, s, n));
	struct toks t;
	split(s, n, &t);
	char pat[MB_SUBJECT_MAX + 1];
	for (size_t k = 0; k < t.n; k++) {
		if (!pick(k, t.n))
			continue;
		/* token k as "*" */
		memcpy(pat, s, t.off[k]);
		size_t pl = t.off[k];
		pat[pl++] = '*';
		size_t rest = n - (t.off[k] + t.len[k]);
		memcpy(pat + pl, s + t.off[k] + t.len[k], rest);
		pl += rest;
		size_t len;
		bool w;
		pat[pl] = '\0';
		REQUIRE(mb_subject_check(pat, &len, true, &w) == 0 && len == pl && w);
		REQUIRE(match(pat, pl, s, n));
		/* tokens k.. as ">" */
		pl = t.off[k];
		pat[pl++] = '>';
		pat[pl] = '\0';
		REQUIRE(mb_subject_check(pat, &len, true, &w) == 0 && len == pl && w);
		REQUIRE(match(pat, pl, s, n));
	}
	/* "s.>" wants a token after s, "s.*" too. */
	if (n + 2 <= MB_SUBJECT_MAX) {
		memcpy(pat, s, n);
		memcpy(pat + n, ".>", 2);
		REQUIRE(!match(pat, n + 2, s, n));
		pat[n + 1] = '*';
		REQUIRE(!match(pat, n + 2, s, n));
	}
}

/* p and s are any bytes; only memory safety unless both are valid. */
static void pair(const char *p, size_t plen, bool p_ok, bool p_wild, const char *s, size_t slen,
                 bool s_ok)
{
	bool r = match(p, plen, s, slen);
	if (!p_ok || !s_ok)
		return;
	REQUIRE(r == ref_match(p, plen, s, slen));
	if (!p_wild)
		REQUIRE(r == (plen == slen && memcmp(p, s, plen) == 0));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	const char *nul = memchr(in, '\0', size);
	const char *a = in, *b = in;
	size_t alen = nul ? (size_t)(nul - in) : size, blen = alen;
	if (nul) {
		b = nul + 1;
		const char *end = memchr(b, '\0', size - alen - 1);
		blen = end ? (size_t)(end - b) : size - alen - 1;
	}

	size_t len = 12345;
	REQUIRE(mb_subject_check(NULL, &len, true, NULL) == MSGBUS_EINVAL && len == 12345);

	bool a_sub, a_pat, a_wild, b_sub, b_pat, b_wild;
	check_one(a, alen, &a_sub, &a_pat, &a_wild);
	check_one(b, blen, &b_sub, &b_pat, &b_wild);
	if (a_sub)
		subject_matches(a, alen);
	if (b_sub && nul)
		subject_matches(b, blen);
	pair(a, alen, a_pat, a_wild, b, blen, b_sub);
	pair(b, blen, b_pat, b_wild, a, alen, a_sub);
	return 0;
}
