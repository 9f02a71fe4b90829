/* loan.c - the public loan interface: a large buffer written in place,
 * then published (route.c) or given back. */
#include "pubsub/loan.h"
#include "pubsub/bufpool.h"
#include "pubsub/buffers.h"
#include "pubsub/publish.h"
#include "pubsub/route.h"

#include <stdlib.h>

struct msgbus_buf {
	msgbus_bus *bus;
	uint32_t idx, gen;
	size_t len;
	msgbus_buf *prev, *next; /* the handle's open loans, freed by close */
};

static void loan_unlink(msgbus_buf *l)
{
	msgbus_bus *b = l->bus;
	pthread_mutex_lock(&b->lock);
	if (l->prev)
		l->prev->next = l->next;
	else
		b->loans = l->next;
	if (l->next)
		l->next->prev = l->prev;
	pthread_mutex_unlock(&b->lock);
}

void mb_loans_free(msgbus_bus *b)
{
	while (b->loans) {
		msgbus_buf *l = b->loans;
		b->loans = l->next;
		free(l); /* its buffer returns with our participant slot */
	}
}

int msgbus_loan(msgbus_bus *bus, size_t len, int timeout_ms, msgbus_buf **loan)
{
	if (!bus || !loan || timeout_ms < -1)
		return MSGBUS_EINVAL;
	if (len > bus->cfg.max_msg_size)
		return MSGBUS_EMSGSIZE;
	struct msgbus_buf *l = malloc(sizeof(*l));
	if (!l)
		return MSGBUS_ENOMEM;
	int rc = mb_buf_alloc(bus, mb_publish_deadline(timeout_ms), &l->idx, &l->gen);
	if (rc) {
		free(l);
		return rc;
	}
	l->bus = bus;
	l->len = len;
	l->prev = NULL;
	pthread_mutex_lock(&bus->lock);
	l->next = bus->loans;
	if (l->next)
		l->next->prev = l;
	bus->loans = l;
	pthread_mutex_unlock(&bus->lock);
	*loan = l;
	return 0;
}

void *msgbus_loan_data(msgbus_buf *loan)
{
	return loan ? mb_bufdata_at(loan->bus, loan->idx) : NULL;
}

int msgbus_commit(msgbus_buf *loan, const char *subject, size_t len, int timeout_ms)
{
	if (!loan || timeout_ms < -1)
		return MSGBUS_EINVAL;
	if (len > loan->len)
		return MSGBUS_EMSGSIZE;
	if (mb_closing(loan->bus))
		return MSGBUS_ECLOSED;
	uint64_t deadline = mb_publish_deadline(timeout_ms);
	int rc = mb_route_publish(loan->bus, subject, NULL, len, loan->idx, loan->gen, deadline);
	if (!rc) {
		loan_unlink(loan);
		free(loan);
	}
	return rc;
}

void msgbus_loan_abort(msgbus_buf *loan)
{
	if (!loan)
		return;
	mb_buf_free(loan->bus, loan->idx);
	loan_unlink(loan);
	free(loan);
}
