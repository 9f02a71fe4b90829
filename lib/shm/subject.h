/* subject.h - subject syntax and wildcard matching (subject.c). */
#ifndef MB_SUBJECT_H
#define MB_SUBJECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

int mb_subject_check(const char *s, size_t *len, bool pattern, bool *wild);
bool mb_subject_match(const char *pattern, size_t plen, const char *subject, size_t slen);
uint64_t mb_hash(const char *s, size_t len);
/* Subjects under "_svc." carry requests; only service workers read them. */
#define MB_SVC_PREFIX "_svc."
#define MB_SVC_PREFIX_LEN 5u
bool mb_subject_internal(const char *s, size_t len);

#endif
