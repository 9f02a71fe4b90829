/* publish.c - msgbus_publish (into the inboxes of the subscriptions that
 * match, route.c), and writing into a service's ring (requests, call.c). */
#include "pubsub/publish.h"
#include "shm/control.h"
#include "shm/subject.h"
#include "pubsub/buffers.h"
#include "pubsub/bufpool.h"
#include "platform/crash.h"
#include "ring/ring.h"
#include "pubsub/route.h"

#include <string.h>

uint64_t mb_publish_deadline(int timeout_ms)
{
	return timeout_ms == 0 ? MB_NO_WAIT : mb_deadline(timeout_ms);
}

/* Argument checks shared by publish and commit; finds or creates the
 * topic, waiting for the control lock until deadline. */
int mb_publish_checks_by(msgbus_bus *b, const char *subject, size_t len, uint64_t deadline,
                         uint32_t *topic)
{
	size_t slen;
	bool wild;
	if (!b || mb_subject_check(subject, &slen, false, &wild) ||
	    mb_subject_internal(subject, slen))
		return MSGBUS_EINVAL;
	if (len > b->cfg.max_msg_size)
		return MSGBUS_EMSGSIZE;
	return mb_topic_get(b, subject, slen, mb_hash(subject, slen), deadline, topic);
}

int mb_publish_checks(msgbus_bus *b, const char *subject, size_t len, uint32_t *topic)
{
	return mb_publish_checks_by(b, subject, len, MB_CTL_BOUND, topic);
}

/* Publish head (hlen bytes) followed by data (len bytes) on topic t. */
int mb_publish_parts(msgbus_bus *b, uint32_t t, const void *head, size_t hlen,
                     const void *data, size_t len, uint64_t deadline)
{
	size_t total = hlen + len;
	int rc;
	if (total <= b->inline_max) {
		uint64_t pos;
		rc = mb_ring_claim(b, t, deadline, &pos);
		if (rc)
			return rc;
		mb_crash_point("after_claim");
		struct mb_slot *sl = mb_slot_at(b, t, pos);
		sl->len = (uint32_t)total;
		sl->kind = MB_KIND_INLINE;
		sl->pub = (uint16_t)b->self;
		if (hlen)
			memcpy(sl + 1, head, hlen);
		if (len)
			memcpy((char *)(sl + 1) + hlen, data, len);
		mb_crash_point("before_commit");
		mb_ring_commit(b, t, pos);
		return 0;
	}
	uint32_t idx, gen;
	rc = mb_buf_alloc(b, deadline, &idx, &gen);
	if (rc)
		return rc;
	char *dst = mb_bufdata_at(b, idx);
	if (hlen)
		memcpy(dst, head, hlen);
	if (len)
		memcpy(dst + hlen, data, len);
	mb_crash_point("mid_loan");
	rc = mb_buf_publish(b, t, idx, gen, (uint32_t)total, deadline);
	if (rc)
		mb_buf_free(b, idx);
	return rc;
}

int msgbus_publish(msgbus_bus *bus, const char *subject, const void *data, size_t len,
                   int timeout_ms)
{
	if ((!data && len) || timeout_ms < -1)
		return MSGBUS_EINVAL;
	if (bus && mb_closing(bus))
		return MSGBUS_ECLOSED;
	/* The clock is read only if the publish has to wait: with a positive
	 * timeout, one try without waiting first, as msgbus_recv does. A try
	 * that fails put nothing anywhere (lossless targets all or nothing,
	 * lossy ones after them), so trying again is the same publish. */
	uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : MB_NO_WAIT;
	bool direct = false;
	int rc = mb_route_publish_ex(bus, subject, data, len, UINT32_MAX, 0, deadline, &direct);
	if (rc == MSGBUS_EAGAIN && timeout_ms > 0 && !mb_closing(bus))
		rc = mb_route_publish_ex(bus, subject, data, len, UINT32_MAX, 0,
		                         mb_deadline(timeout_ms), &direct);
	/* A message a link took itself left nothing for the links to send. */
	if (!rc && !direct) {
		/* Pairs with the release in link/links.c:links_of(). */
		const struct mb_link_hooks *lh =
			atomic_load_explicit(&bus->link_hooks, memory_order_acquire);
		if (lh)
			lh->published(bus); /* links of this handle send inline */
	}
	return rc;
}
