/* error.c - error strings, system errors mapped to codes, the version. */
#include "platform/error.h"
#include "msgbus.h"

#include <errno.h>
#include <string.h>

static const char *const messages[] = {
	[MSGBUS_OK] = "success",
	[MSGBUS_EINVAL] = "invalid argument",
	[MSGBUS_ENOMEM] = "out of memory",
	[MSGBUS_ETIMEDOUT] = "timed out",
	[MSGBUS_EAGAIN] = "operation would block",
	[MSGBUS_EMSGSIZE] = "message too large",
	[MSGBUS_EINCOMPAT] = "bus incompatible (another layout version)",
	[MSGBUS_EPROTO] = "protocol error (corrupt shared memory or bad peer input)",
	[MSGBUS_ELIMIT] = "a configured limit is reached",
	[MSGBUS_EPERM] = "permission denied",
	[MSGBUS_ECLOSED] = "closed",
	[MSGBUS_EPEERDIED] = "peer died",
	[MSGBUS_ENORESPONDERS] = "no responders",
	[MSGBUS_EBUSY] = "a message is still held",
	[MSGBUS_ENOTSUP] = "not supported",
	[MSGBUS_ENOENT] = "no such entry",
};

int mb_syserr(int neg_errno)
{
	int e = -neg_errno;
	if (e == EACCES || e == EPERM)
		return MSGBUS_EPERM;
	if (e == ENOMEM)
		return MSGBUS_ENOMEM;
	return MSGBUS_ESYSERR | e;
}

const char *msgbus_strerror(int err)
{
	if (err > 0 && (err & MSGBUS_ESYSERR)) {
		/* strerror's text for errno values is static in glibc for
		 * known codes; unknown ones fall back to our own text. */
		int e = err & ~MSGBUS_ESYSERR;
		const char *s = e > 0 && e < 4096 ? strerrordesc_np(e) : NULL;
		return s ? s : "unknown system error";
	}
	if (err >= 0 && (size_t)err < sizeof(messages) / sizeof(messages[0]) && messages[err])
		return messages[err];
	return "unknown error";
}

const char *msgbus_version(void)
{
	return MSGBUS_VERSION_STRING;
}
