/* link_names.h - a set of names (link_names.c): subjects, patterns and
 * services of a peer, or what we told it. */
#ifndef MB_LINK_NAMES_H
#define MB_LINK_NAMES_H

#include <stdbool.h>
#include <stdint.h>

/* A set of names (link_names.c): v[0..n) in no order, indexed by hash. */
struct names {
	char **v;
	uint32_t n, vcap;
	uint32_t *idx; /* nidx cells (a power of two): a position in v + 1, or 0 */
	uint32_t nidx;
};

bool mb_names_has(const struct names *s, const char *x);
int mb_names_add(struct names *s, const char *x); /* present already: 0 */
void mb_names_del(struct names *s, const char *x);
void mb_names_clear(struct names *s);
/* Hand over the array of names (*n of them) and empty s. */
char **mb_names_release(struct names *s, uint32_t *n);

#endif
