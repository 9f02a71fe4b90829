/*
 * fork.c - what a forked child inherits. A participant's life lock is an
 * OFD lock, which lasts as long as any reference to its open file
 * description: a descriptor, and also a shared mapping of the file (the
 * mapping holds the description). A child that kept either would keep its
 * parent "alive" after the parent's death, and every publisher it gated
 * would wait out its timeout. So the child lets go of both, at once, for
 * every open handle, and marks the handles as not its own: it never uses
 * them, and closing one only frees the child's memory (bus.c). A handle
 * being opened by another thread has its descriptor and mapping before it
 * is in the registry, so opens and forks exclude each other: a fork waits
 * for the opens in progress to end. (A counter under the registry's mutex
 * rather than a rwlock: a child cannot unlock a rwlock its parent's thread
 * write-locked, glibc ties it to the thread id.)
 */
#include "shm/fork.h"
#include "shm/handle.h"
#include "platform/platform.h"

#include <pthread.h>

#define FORK_WAIT_US 500 /* between looks at the opens in progress */

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static msgbus_bus *open_buses;
static unsigned opening; /* msgbus_open calls past mb_open_begin */

static void before_fork(void)
{
	pthread_mutex_lock(&registry_lock);
	while (opening) {
		pthread_mutex_unlock(&registry_lock);
		mb_nap_us(FORK_WAIT_US);
		pthread_mutex_lock(&registry_lock);
	}
}

static void after_fork_parent(void)
{
	pthread_mutex_unlock(&registry_lock);
}

static void after_fork_child(void)
{
	for (msgbus_bus *b = open_buses; b; b = b->next_open) {
		b->forked = true;
		if (b->seg.fd < 0)
			continue; /* inproc: private memory, a copy of no use */
		mb_close_fd(b->seg.fd);
		b->seg.fd = -1;
		mb_unmap(b->seg.base, b->seg.size);
		b->seg.base = NULL;
	}
	pthread_mutex_unlock(&registry_lock);
}

static void install(void)
{
	pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

void mb_open_begin(void)
{
	pthread_once(&atfork_once, install);
	pthread_mutex_lock(&registry_lock);
	opening++;
	pthread_mutex_unlock(&registry_lock);
}

void mb_open_end(void)
{
	pthread_mutex_lock(&registry_lock);
	opening--;
	pthread_mutex_unlock(&registry_lock);
}

void mb_registry_add(msgbus_bus *b)
{
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
