/*
 * fork.c - what a forked child inherits. OFD locks travel with the file
 * descriptor, so a child holding the parent's descriptor would keep the
 * parent "alive" after its death. The child closes every inherited
 * descriptor and marks the handles as not its own.
 */
#include "bus.h"
#include "platform.h"

#include <pthread.h>

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static msgbus_bus *open_buses;

static void before_fork(void)
{
	pthread_mutex_lock(&registry_lock);
}

static void after_fork_parent(void)
{
	pthread_mutex_unlock(&registry_lock);
}

static void after_fork_child(void)
{
	for (msgbus_bus *b = open_buses; b; b = b->next_open) {
		b->forked = true;
		mb_close_fd(b->seg.fd);
		b->seg.fd = -1;
	}
	pthread_mutex_unlock(&registry_lock);
}

static void install(void)
{
	pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

void mb_registry_add(msgbus_bus *b)
{
	pthread_once(&atfork_once, install);
	pthread_mutex_lock(&registry_lock);
	b->next_open = open_buses;
	open_buses = b;
	pthread_mutex_unlock(&registry_lock);
}

void mb_registry_remove(msgbus_bus *b)
{
	pthread_mutex_lock(&registry_lock);
	for (msgbus_bus **pp = &open_buses; *pp; pp = &(*pp)->next_open) {
		if (*pp == b) {
			*pp = b->next_open;
			break;
		}
	}
	pthread_mutex_unlock(&registry_lock);
}
