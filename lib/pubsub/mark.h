/*
 * mark.h - commit marks (mark.c): a publish that writes one message into
 * several lossless inboxes reserves and fills a record in each, then
 * commits them one by one. Before the first commit it sets a mark in its
 * participant block naming the publish (its seq), and clears it after the
 * last. The reaper of a dead publisher commits its CLAIMED records of a
 * marked publish and aborts the others, so a publisher killed between two
 * commits reaches every lossless subscriber or none.
 */
#ifndef MB_MARK_H
#define MB_MARK_H

#include "shm/handle.h"
#include "ring/inbox.h"

/* Every record of publish seq is filled: mark it. put: for a large
 * message, the value its buffer's pub_put takes after the mark (the
 * caller stores it with one store before the first commit); else
 * anything. Returns the mark's index for mb_mark_clear. Waits (yielding)
 * only while every mark of the handle is in use by other threads' commit
 * loops. */
unsigned mb_mark_set(msgbus_bus *b, uint64_t seq, uint32_t put);
/* The commits of the publish marked at index i are done. */
void mb_mark_clear(msgbus_bus *b, unsigned i);
/*
 * For the inbox code (an mb_rec_keep_fn, ctx the handle): should the
 * CLAIMED record m of dead participant owner be committed? True only when
 * its prefix names a publish that owner marked and, for a large message,
 * its buffer (this use of it, SHARED by owner) already counts the
 * records' references: pub_put equals the mark's put. Then every record
 * of the publish is committed, else every one is aborted, and either way
 * the reaper's drop of the publisher's reference (shm/live.c) leaves the
 * count right. Reads shared memory only through bounded, validated copies.
 */
bool mb_mark_keep(void *bus, uint32_t owner, const struct mb_inbox_msg *m);

#endif
