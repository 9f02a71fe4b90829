/*
 * doorbell.h - bells: what makes an eventcount (wait.h) pollable.
 *
 * A bell is 16 bytes of shared memory beside the eventcount a receiver
 * would sleep on: a state word and the id of the receiver's doorbell socket
 * (platform_dgram.h). It is OFF unless its owner asked for a descriptor.
 *
 * The owner arms it when its object has run dry: drain the socket, store
 * the id and ARMED, set WAITERS on the eventcount (mb_bell_arm), run the
 * heavy fence, then look for data again; data there means the signal may
 * have been missed, so the owner rings its own bell. A waker looks at the
 * bell only on the slow path it already takes when WAITERS is set (after
 * mb_ec_signal returned true), so nobody pays for a bell that is OFF:
 * ARMED -> RUNG by CAS, then one datagram. Until the owner re-arms, the
 * bell stays RUNG and further signals neither see WAITERS (cleared by the
 * first) nor send anything: one datagram per arming, whatever the rate.
 *
 * Why the owner always sees it: the owner's ARMED store precedes its
 * seq_cst fetch_or of WAITERS; a waker that clears WAITERS then loads the
 * eventcount with acquire before it looks at the bell. Every change of an
 * eventcount is a read-modify-write, so that load reads from the release
 * sequence of the owner's fetch_or and sees ARMED. If the waker's signal
 * found WAITERS clear instead, its store came before the owner's fetch_or
 * (Dekker, as in wait.h), and the owner's look after it finds the data.
 *
 * Shared memory is untrusted: a state other than ARMED is left alone, and
 * whatever id a bell holds, the datagram goes to a "msgbus.bell." name. A
 * hostile peer can make a descriptor readable for nothing, no worse.
 */
#ifndef MB_DOORBELL_H
#define MB_DOORBELL_H

#include "platform/platform_dgram.h"
#include "platform/wait.h"

#include <stdbool.h>
#include <stdint.h>

enum { MB_BELL_OFF = 0, MB_BELL_ARMED = 1, MB_BELL_RUNG = 2 };

struct mb_bell {
	_Atomic uint32_t state; /* MB_BELL_* */
	_Atomic uint32_t owner; /* shared bells (a service's): participant + 1, 0 free */
	_Atomic uint64_t id;    /* the owner's doorbell (platform_dgram.h) */
};
_Static_assert(sizeof(struct mb_bell) == 16, "a bell is 16 bytes");

/* ARMED -> RUNG and one datagram; anything else is left alone. */
void mb_bell_ring(struct mb_bell *bell);

/* After mb_ec_signal(ec) returned true: ring the n bells beside ec. */
static inline void mb_bells_ring(_Atomic uint32_t *ec, struct mb_bell *bells, unsigned n)
{
	/* Acquire: reads from the release sequence of an arming owner's
	 * seq_cst fetch_or (mb_bell_arm), so its ARMED store is visible. */
	(void)atomic_load_explicit(ec, memory_order_acquire);
	for (unsigned i = 0; i < n; i++)
		mb_bell_ring(&bells[i]);
}

/* mb_ec_signal, then the bell beside ec on the slow path. */
static inline bool mb_ec_signal_bell(_Atomic uint32_t *ec, struct mb_bell *bell)
{
	if (!mb_ec_signal(ec))
		return false;
	mb_bells_ring(ec, bell, 1);
	return true;
}

/*
 * The owner, its doorbell drained: arm the bell and announce a waiter on
 * ec. The caller then runs mb_fence_heavy (for wakers that signal with
 * the light fence) and looks for data with seq_cst (or acquire after the
 * heavy fence); data there: mb_bell_ring(bell) itself.
 */
static inline void mb_bell_arm(struct mb_bell *bell, _Atomic uint32_t *ec, uint64_t id)
{
	/* Relaxed: published by the release of the ARMED store. */
	atomic_store_explicit(&bell->id, id, memory_order_relaxed);
	/* seq_cst (a release): pairs with the acquire CAS in mb_bell_ring,
	 * which then reads our id. */
	atomic_store_explicit(&bell->state, MB_BELL_ARMED, memory_order_seq_cst);
	(void)mb_ec_prepare(ec);
}

/* Is the bell still armed (no ring since mb_bell_arm)? Then nothing was
 * signalled and the arming stands. Relaxed: a hint; a ring racing with
 * it leaves a datagram, which the next look finds. */
static inline bool mb_bell_armed(struct mb_bell *bell)
{
	return atomic_load_explicit(&bell->state, memory_order_relaxed) == MB_BELL_ARMED;
}

/* The owner lets go: wakers stop ringing. Relaxed: a ring racing with it
 * sends one datagram to a socket that is closing, which is harmless. */
static inline void mb_bell_off(struct mb_bell *bell)
{
	atomic_store_explicit(&bell->state, MB_BELL_OFF, memory_order_relaxed);
}

#endif
