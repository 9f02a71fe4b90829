/* fence.c - membarrier(2) for fence.h. */
#include "platform/fence.h"

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

_Atomic bool mb_fence_registered;

static long membarrier(int cmd)
{
	return syscall(__NR_membarrier, cmd, 0u, 0);
}

void mb_fence_register(void)
{
	long cmds;

	if (atomic_load_explicit(&mb_fence_registered, memory_order_relaxed))
		return;
	cmds = membarrier(MEMBARRIER_CMD_QUERY);
	if (cmds < 0 || !(cmds & MEMBARRIER_CMD_GLOBAL_EXPEDITED) ||
	    !(cmds & MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED))
		return;
	if (membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED))
		return;
	/* Release: pairs with the acquire in mb_fence_light. */
	atomic_store_explicit(&mb_fence_registered, true, memory_order_release);
}

bool mb_fence_heavy(void)
{
	/* Our own side first: a full fence covers publishers that fence too. */
	mb_fence_full();
	return membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) == 0;
}
