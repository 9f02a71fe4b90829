/* link_log.c - the log lines of the links, rate-limited per process. */
#include "link/link_log.h"
#include "link/conn_state.h"

#include <stdarg.h>

/* The rate limit of mb_link_logf: LOG_BURST lines per LOG_WINDOW_NS. */
#define LOG_BURST 10u
#define LOG_WINDOW_NS 1000000000ull

static _Atomic uint64_t log_window; /* when the current window started */
static _Atomic uint32_t log_lines, log_dropped; /* in it; dropped since */

void mb_link_logf(const char *fmt, ...)
{
	/* Relaxed: a line more or less at a window's edge does not matter. */
	uint64_t now = mb_now_ns(), w = atomic_load_explicit(&log_window, memory_order_relaxed);
	if (now - w > LOG_WINDOW_NS &&
	    atomic_compare_exchange_strong_explicit(&log_window, &w, now, memory_order_relaxed,
	                                            memory_order_relaxed)) {
		atomic_store_explicit(&log_lines, 0, memory_order_relaxed);
		uint32_t d = atomic_exchange_explicit(&log_dropped, 0, memory_order_relaxed);
		if (d)
			fprintf(stderr, "msgbus: %u link log lines suppressed\n", d);
	}
	if (atomic_fetch_add_explicit(&log_lines, 1, memory_order_relaxed) >= LOG_BURST) {
		atomic_fetch_add_explicit(&log_dropped, 1, memory_order_relaxed);
		return;
	}
	va_list ap;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
}

void mb_link_log(struct mb_conn *c, const char *what, const char *why)
{
	mb_link_logf("msgbus: link %s: %s: %s\n", c->peer, what, why);
}

