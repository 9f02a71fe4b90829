/* bufpool.c - giving large buffers back; see bufpool.h. */
#include "pubsub/bufpool.h"
#include "platform/crash.h"

void mb_buf_free(msgbus_bus *b, uint32_t idx)
{
	/* Release: our use of the buffer happens before the next taker's; pairs
	 * with the acquire load in buffers.c:try_take. */
	atomic_store_explicit(&mb_bufctl_at(b, idx)->state, MB_BUF_FREE, memory_order_release);
}

void mb_buf_unref(msgbus_bus *b, const struct mb_rec_large *d)
{
	if (d->buf >= b->cfg.large_buffers)
		return;
	struct mb_bufctl *bc = mb_bufctl_at(b, d->buf);
	if (atomic_load_explicit(&bc->gen, memory_order_relaxed) != d->buf_gen)
		return; /* freed by a dead publisher's reaper and reused */
	mb_crash_point("buf_unref");
	/* acq_rel: our reads of the data happen before whoever frees it;
	 * pairs with the other references' decrements (and the publisher's
	 * drop of its bias, route.c:deliver_large). */
	if (atomic_fetch_sub_explicit(&bc->refs, 1, memory_order_acq_rel) == 1)
		mb_buf_free(b, d->buf);
}

uint32_t mb_buf_free_count(msgbus_bus *b)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < b->cfg.large_buffers; i++)
		/* Relaxed: a count for tests and stats, no data read after. */
		n += atomic_load_explicit(&mb_bufctl_at(b, i)->state, memory_order_relaxed) ==
		     MB_BUF_FREE;
	return n;
}
