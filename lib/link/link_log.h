/* link_log.h - the log lines of the links (link_log.c). */
#ifndef MB_LINK_LOG_H
#define MB_LINK_LOG_H

struct mb_conn;

/* A line on standard error, at most a few per second per process: a peer
 * that fails again and again must not flood the log. */
void mb_link_logf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "msgbus: link <peer>: what: why" for connection c. */
void mb_link_log(struct mb_conn *c, const char *what, const char *why);

#endif
