/*
 * subject.c - subject syntax and NATS-style wildcard matching.
 * Subjects are dot-separated non-empty tokens of printable ASCII without
 * spaces. In patterns, "*" as a whole token matches one token and ">" as the
 * last whole token matches one or more tokens.
 */
#include "shm/subject.h"
#include "msgbus.h"
#include "shm/layout.h"

#include <string.h>

int mb_subject_check(const char *s, size_t *len, bool pattern, bool *wild)
{
	size_t n = 0, tok = 0;
	bool w = false;
	if (!s)
		return MSGBUS_EINVAL;
	for (;; n++) {
		if (n > MB_SUBJECT_MAX)
			return MSGBUS_EINVAL;
		char c = s[n];
		if (c == '.' || c == '\0') {
			if (n == tok)
				return MSGBUS_EINVAL; /* empty token */
			if (c == '\0')
				break;
			tok = n + 1;
			continue;
		}
		if (c <= ' ' || c > '~')
			return MSGBUS_EINVAL;
		if (c == '*' || c == '>') {
			char next = s[n + 1];
			bool whole = n == tok && (next == '.' || next == '\0');
			if (!pattern || !whole || (c == '>' && next != '\0'))
				return MSGBUS_EINVAL;
			w = true;
		}
	}
	*len = n;
	if (wild)
		*wild = w;
	return 0;
}

bool mb_subject_match(const char *p, size_t plen, const char *s, size_t slen)
{
	size_t i = 0, j = 0;
	while (i < plen) {
		if (j >= slen)
			return false;
		if (p[i] == '>')
			return true; /* at least one token remains in s */
		if (p[i] == '*') {
			while (j < slen && s[j] != '.')
				j++;
			i++;
		} else {
			while (i < plen && p[i] != '.') {
				if (j >= slen || s[j] != p[i])
					return false;
				i++, j++;
			}
			if (j < slen && s[j] != '.')
				return false;
		}
		/* both at a '.' or at the end */
		if (i < plen) {
			i++;
			if (j >= slen)
				return false;
			j++;
		}
	}
	return j == slen;
}

bool mb_subject_internal(const char *s, size_t len)
{
	return len >= MB_SVC_PREFIX_LEN && memcmp(s, MB_SVC_PREFIX, MB_SVC_PREFIX_LEN) == 0;
}

uint64_t mb_hash(const char *s, size_t len)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ull;
	}
	return h;
}
