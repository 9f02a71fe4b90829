/* publish.c - msgbus_publish: inline messages through a slot, larger ones
 * through a large buffer. */
#include "buffers.h"
#include "crash.h"
#include "ring.h"

#include <string.h>

uint64_t mb_publish_deadline(int timeout_ms)
{
	return timeout_ms == 0 ? MB_NO_WAIT : mb_deadline(mb_now_ns(), timeout_ms);
}

/* Argument checks shared by publish and commit; finds or creates the topic. */
int mb_publish_checks(msgbus_bus *b, const char *subject, size_t len, uint32_t *topic)
{
	size_t slen;
	bool wild;
	if (!b || mb_subject_check(subject, &slen, false, &wild))
		return MSGBUS_EINVAL;
	if (len > b->cfg.max_msg_size)
		return MSGBUS_EMSGSIZE;
	return mb_topic_get(b, subject, slen, mb_hash(subject, slen), topic);
}

int msgbus_publish(msgbus_bus *bus, const char *subject, const void *data, size_t len,
                   int timeout_ms)
{
	uint32_t t;
	if (!data && len)
		return MSGBUS_EINVAL;
	int rc = mb_publish_checks(bus, subject, len, &t);
	if (rc)
		return rc;
	uint64_t deadline = mb_publish_deadline(timeout_ms);
	if (len <= bus->inline_max) {
		uint64_t pos;
		rc = mb_ring_claim(bus, t, deadline, &pos);
		if (rc)
			return rc;
		mb_crash_point("after_claim");
		struct mb_slot *sl = mb_slot_at(bus, t, pos);
		sl->len = (uint32_t)len;
		sl->kind = MB_KIND_INLINE;
		sl->pub = (uint16_t)bus->self;
			if (len)
			memcpy(sl + 1, data, len);
		mb_crash_point("before_commit");
		mb_ring_commit(bus, t, pos);
		return 0;
	}
	uint32_t idx, gen;
	rc = mb_buf_alloc(bus, deadline, &idx, &gen);
	if (rc)
		return rc;
	memcpy(mb_bufdata_at(bus, idx), data, len);
	mb_crash_point("mid_loan");
	rc = mb_buf_publish(bus, t, idx, gen, (uint32_t)len, deadline);
	if (rc)
		mb_buf_free(bus, idx);
	return rc;
}
