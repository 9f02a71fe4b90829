/*
 * link_names.c - a set of names (subjects, patterns, services) for the
 * links: the peer's interest and what we told it. A peer decides how many
 * names it sends, so every operation is O(1) on average: an array of the
 * names, in no order, and an open-addressing index of it (linear probing,
 * deletion by backward shift, so no tombstones pile up).
 */
#include "shm/subject.h"
#include "link/link_names.h"
#include "msgbus.h"

#include <stdlib.h>
#include <string.h>

/* The index holds positions + 1 in v; 0 is an empty cell. */
static uint32_t home_of(const struct names *s, const char *x)
{
	return (uint32_t)mb_hash(x, strlen(x)) & (s->nidx - 1);
}

/* The cell holding x, or the empty cell where it would go. nidx > 0. */
static uint32_t cell_of(const struct names *s, const char *x)
{
	uint32_t mask = s->nidx - 1;
	for (uint32_t k = home_of(s, x);; k = (k + 1) & mask)
		if (!s->idx[k] || !strcmp(s->v[s->idx[k] - 1], x))
			return k;
}

bool mb_names_has(const struct names *s, const char *x)
{
	return s->nidx && s->idx[cell_of(s, x)];
}

/* Keep the index at most half full: probes stay short. */
static int grow(struct names *s)
{
	if (s->n == s->vcap) {
		uint32_t cap = s->vcap ? s->vcap * 2 : 8;
		char **v = realloc(s->v, cap * sizeof(*v));
		if (!v)
			return MSGBUS_ENOMEM;
		s->v = v;
		s->vcap = cap;
	}
	if ((s->n + 1) * 2 <= s->nidx)
		return 0;
	uint32_t nidx = s->nidx ? s->nidx * 2 : 16;
	uint32_t *idx = calloc(nidx, sizeof(*idx));
	if (!idx)
		return MSGBUS_ENOMEM;
	free(s->idx);
	s->idx = idx;
	s->nidx = nidx;
	for (uint32_t i = 0; i < s->n; i++)
		s->idx[cell_of(s, s->v[i])] = i + 1;
	return 0;
}

int mb_names_add(struct names *s, const char *x)
{
	if (mb_names_has(s, x))
		return 0;
	char *copy = strdup(x);
	if (!copy || grow(s)) {
		free(copy);
		return MSGBUS_ENOMEM;
	}
	s->v[s->n] = copy;
	s->idx[cell_of(s, copy)] = ++s->n;
	return 0;
}

/* Empty cell j, moving back the entries after it whose probe passed j. */
static void unlink_cell(struct names *s, uint32_t j)
{
	uint32_t mask = s->nidx - 1;
	for (uint32_t k = (j + 1) & mask; s->idx[k]; k = (k + 1) & mask) {
		uint32_t h = home_of(s, s->v[s->idx[k] - 1]);
		bool stays = j < k ? (j < h && h <= k) : (j < h || h <= k);
		if (!stays) {
			s->idx[j] = s->idx[k];
			j = k;
		}
	}
	s->idx[j] = 0;
}

/* x may be one of s's own names (it is not read once freed). */
void mb_names_del(struct names *s, const char *x)
{
	if (!s->nidx)
		return;
	uint32_t j = cell_of(s, x);
	if (!s->idx[j])
		return;
	uint32_t i = s->idx[j] - 1, last = s->n - 1;
	unlink_cell(s, j);
	free(s->v[i]);
	if (i != last) {
		s->v[i] = s->v[last];
		s->idx[cell_of(s, s->v[i])] = i + 1;
	}
	s->n--;
}

char **mb_names_release(struct names *s, uint32_t *n)
{
	char **v = s->v;
	*n = s->n;
	free(s->idx);
	*s = (struct names){ 0 };
	return v;
}

void mb_names_clear(struct names *s)
{
	for (uint32_t i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
	free(s->idx);
	*s = (struct names){ 0 };
}
