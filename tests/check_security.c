/*
 * check_security.c - who may open a shm:// bus (msgbus_open(3), SECURITY).
 *
 * Another local user must not be able to plant a file, a symlink or a bus
 * of their own at /dev/shm/msgbus.NAME and have a victim attach to it: the
 * victim gets MSGBUS_EPERM and the planted file is left exactly as it was.
 * The mode option is applied whatever the umask, so group members can
 * attach when they name the owner, and a process attaches to a bus of
 * another uid (root included) only when its options name that uid.
 *
 * The multi-user cases need root: the test forks children that switch to
 * unprivileged uids with setresuid and report through their exit status.
 * Without root they print one line and pass.
 */
#include <grp.h>

#include "test_util.h"

/* Users and groups that exist nowhere else; none of them is in a group of
 * another, except MEMBER, in OWNER's group GROUP. */
#define SQUAT_UID 64001u
#define VICTIM_UID 64002u
#define OWNER_UID 64003u
#define MEMBER_UID 64004u
#define GROUP_GID 64010u

struct who {
	uid_t uid;
	gid_t gid;
};

static const struct who squatter = { SQUAT_UID, SQUAT_UID };
static const struct who victim = { VICTIM_UID, VICTIM_UID };
static const struct who owner = { OWNER_UID, GROUP_GID };
static const struct who member = { MEMBER_UID, GROUP_GID };

#define SEC_SUBJECT "sec.x"
#define SEC_SEQ 42u

/* Prints the one skip line and returns non-zero when not root. */
static int skip_unless_root(const char *what)
{
	if (geteuid() == 0)
		return 0;
	printf("security: %s skipped: needs root to switch uids\n", what);
	return 1;
}

/* In a forked child: become w, with no supplementary groups. A change of
 * credentials clears the parent-death signal: set it again. 0 or -1. */
static int become(const struct who *w)
{
	pid_t parent = getppid();
	if (setgroups(0, NULL) != 0 || setresgid(w->gid, w->gid, w->gid) != 0 ||
	    setresuid(w->uid, w->uid, w->uid) != 0)
		return -1;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	return getppid() == parent ? 0 : -1;
}

/* A stat of path: uid, permission bits, inode and size. */
struct snap {
	uid_t uid;
	mode_t mode;
	ino_t ino;
	off_t size;
	unsigned char head[64]; /* the first bytes, or zeros */
};

static void take_snap(const char *path, struct snap *s)
{
	struct stat st;
	memset(s, 0, sizeof(*s));
	ck_assert_msg(lstat(path, &st) == 0, "lstat %s: %s", path, strerror(errno));
	s->uid = st.st_uid;
	s->mode = st.st_mode & 07777;
	s->ino = st.st_ino;
	s->size = st.st_size;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
	ck_assert_int_ge(read(fd, s->head, sizeof(s->head)), 0);
	close(fd);
}

#define ASSERT_SAME_FILE(path, before)                                              \
	do {                                                                        \
		struct snap sec_now_;                                               \
		take_snap((path), &sec_now_);                                       \
		ck_assert_msg(sec_now_.ino == (before)->ino, "%s was replaced", (path)); \
		ck_assert_uint_eq(sec_now_.uid, (before)->uid);                     \
		ck_assert_uint_eq(sec_now_.mode, (before)->mode);                   \
		ck_assert_int_eq(sec_now_.size, (before)->size);                    \
		ck_assert_msg(!memcmp(sec_now_.head, (before)->head, sizeof(sec_now_.head)), \
		              "%s was written", (path));                            \
	} while (0)

/* ---- children ------------------------------------------------------------ */

/* Plants an empty file at the bus's name, as `touch; chmod 666` would. */
struct squat_child {
	const char *path;
};

static int squat_main(void *p)
{
	const struct squat_child *c = p;
	if (become(&squatter) != 0)
		return TU_CHILD_FAIL(10, "become: %s", strerror(errno));
	int fd = open(c->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
	if (fd < 0 || fchmod(fd, 0666) != 0)
		return TU_CHILD_FAIL(11, "create %s: %s", c->path, strerror(errno));
	close(fd);
	return 0;
}

/* Opens the bus as w with the given mode and owner options, under umask
 * 022, and expects `want`. On success publishes SEC_SEQ (a holder's
 * subscription checks it), checks the file's mode when want_mode is set,
 * and closes. */
struct open_child {
	const char *url;
	struct who w;
	uint32_t mode, owner;
	int want;
	mode_t want_mode;
};

static int open_main(void *p)
{
	const struct open_child *c = p;
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	msgbus_bus *bus = NULL;
	char path[128];
	struct stat st;

	if (become(&c->w) != 0)
		return TU_CHILD_FAIL(10, "become: %s", strerror(errno));
	umask(022);
	o.mode = c->mode;
	o.owner = c->owner;
	int rc = msgbus_open(&bus, c->url, &o);
	if (rc != c->want)
		return TU_CHILD_FAIL(11, "uid %u opening %s: %s, want %s", (unsigned)c->w.uid,
		                     c->url, msgbus_strerror(rc), msgbus_strerror(c->want));
	if (rc != MSGBUS_OK)
		return 0;
	tu_shm_path(path, sizeof(path), c->url);
	if (c->want_mode && (stat(path, &st) != 0 || (st.st_mode & 07777) != c->want_mode))
		return TU_CHILD_FAIL(12, "mode %o, want %o", (unsigned)(st.st_mode & 07777),
		                     (unsigned)c->want_mode);
	struct tu_seqmsg v = { c->w.uid, SEC_SEQ };
	rc = msgbus_publish(bus, SEC_SUBJECT, &v, sizeof(v), TU_WAIT_MS);
	if (rc != MSGBUS_OK)
		return TU_CHILD_FAIL(13, "publish: %s", msgbus_strerror(rc));
	msgbus_close(bus);
	return 0;
}

/* Runs one open_child to the end and asserts it saw what it wanted. */
static void open_as(const char *url, const struct who *w, uint32_t mode, uint32_t own, int want,
                    mode_t want_mode)
{
	struct open_child c = { url, *w, mode, own, want, want_mode };
	pid_t pid = tu_spawn(open_main, &c);
	TU_ASSERT_CHILD_OK(pid, 2 * TU_WAIT_MS);
}

/* Creates (or attaches to) the bus as w with `mode` under `mask`,
 * subscribes to SEC_SUBJECT and says ready; then, told HOLD_RECV, expects
 * one message with SEC_SEQ and closes; HOLD_CLOSE closes at once;
 * HOLD_DIE exits without closing, leaving a stale segment. */
enum hold_end { HOLD_RECV = 1, HOLD_CLOSE, HOLD_DIE };

struct hold_child {
	const char *url;
	struct who w;
	uint32_t mode;
	mode_t mask;
	const char *crash_at; /* MSGBUS_CRASH_AT for the open, or NULL */
	struct tu_pipe ready, go;
	pid_t pid;
};

static int hold_main(void *p)
{
	struct hold_child *c = p;
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	msgbus_bus *bus = NULL;
	msgbus_sub *sub = NULL;
	msgbus_msg *m = NULL;
	struct tu_seqmsg v;
	int end;

	if (become(&c->w) != 0)
		return TU_CHILD_FAIL(10, "become: %s", strerror(errno));
	umask(c->mask);
	if (c->crash_at)
		setenv("MSGBUS_CRASH_AT", c->crash_at, 1);
	o.mode = c->mode;
	int rc = msgbus_open(&bus, c->url, &o);
	if (rc == MSGBUS_OK)
		rc = msgbus_subscribe(bus, SEC_SUBJECT, 0, &sub);
	if (rc != MSGBUS_OK)
		return TU_CHILD_FAIL(11, "open/subscribe: %s", msgbus_strerror(rc));
	tu_pipe_put(&c->ready, 1);
	if (tu_pipe_get(&c->go, 6 * TU_WAIT_MS, &end) != 0)
		return TU_CHILD_FAIL(12, "no go");
	if (end == HOLD_DIE)
		_exit(0);
	if (end == HOLD_RECV) {
		rc = msgbus_recv(sub, &m, TU_WAIT_MS);
		if (rc != MSGBUS_OK)
			return TU_CHILD_FAIL(13, "recv: %s", msgbus_strerror(rc));
		if (tu_get_seqmsg(m, &v) != 0 || v.seq != SEC_SEQ)
			return TU_CHILD_FAIL(14, "wrong message");
		msgbus_msg_release(m);
	}
	msgbus_close(bus);
	return 0;
}

static void hold_spawn(struct hold_child *c, const char *url, const struct who *w, uint32_t mode,
                       mode_t mask, const char *crash_at)
{
	c->url = url;
	c->w = *w;
	c->mode = mode;
	c->mask = mask;
	c->crash_at = crash_at;
	tu_pipe_init(&c->ready);
	tu_pipe_init(&c->go);
	c->pid = tu_spawn(hold_main, c);
}

static void hold_ready(struct hold_child *c)
{
	int x;
	ck_assert_msg(tu_pipe_get(&c->ready, TU_WAIT_MS, &x) == 0, "holder uid %u did not open",
	              (unsigned)c->w.uid);
}

static void hold_start(struct hold_child *c, const char *url, const struct who *w, uint32_t mode,
                       mode_t mask)
{
	hold_spawn(c, url, w, mode, mask, NULL);
	hold_ready(c);
}

static void hold_end(struct hold_child *c, enum hold_end how)
{
	tu_pipe_put(&c->go, how);
	TU_ASSERT_CHILD_OK(c->pid, 2 * TU_WAIT_MS);
	tu_pipe_close(&c->ready);
	tu_pipe_close(&c->go);
}

/* ---- squatting --------------------------------------------------------- */

/* Another user plants an empty file 0666 at the name: the victim, whatever
 * mode it asks for, gets EPERM, and neither writes, resizes, nor unlinks
 * the file. */
START_TEST(test_squatter_file)
{
	char url[96], path[128];
	struct snap before;
	if (skip_unless_root("squatter file"))
		return;
	tu_unique_url(url, sizeof(url), "shm");
	tu_shm_path(path, sizeof(path), url);
	struct squat_child sq = { path };
	TU_ASSERT_CHILD_OK(tu_spawn(squat_main, &sq), TU_WAIT_MS);
	take_snap(path, &before);
	ck_assert_uint_eq(before.uid, SQUAT_UID);
	ck_assert_uint_eq(before.mode, 0666);

	open_as(url, &victim, 0, 0, MSGBUS_EPERM, 0);
	open_as(url, &victim, 0666, 0, MSGBUS_EPERM, 0);
	ASSERT_SAME_FILE(path, &before);

	ck_assert_int_eq(unlink(path), 0);
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

/* Another user creates the real bus first, with mode 0666, and keeps it
 * open (loop 0) or dies leaving it stale (loop 1): the victim gets EPERM
 * and does not reinitialise the stale one. */
START_TEST(test_foreign_bus)
{
	char url[96], path[128];
	struct hold_child h;
	struct snap before;
	if (skip_unless_root("foreign bus"))
		return;
	tu_unique_url(url, sizeof(url), "shm");
	tu_shm_path(path, sizeof(path), url);
	hold_start(&h, url, &squatter, 0666, 0); /* an attacker sets its umask */
	if (_i == 1)
		hold_end(&h, HOLD_DIE);
	take_snap(path, &before);
	ck_assert_uint_eq(before.uid, SQUAT_UID);
	ck_assert_uint_eq(before.mode, 0666);

	open_as(url, &victim, 0, 0, MSGBUS_EPERM, 0);
	open_as(url, &victim, 0666, 0, MSGBUS_EPERM, 0);
	ASSERT_SAME_FILE(path, &before);

	if (_i == 0) {
		hold_end(&h, HOLD_CLOSE);
	} else {
		ck_assert_int_eq(unlink(path), 0);
	}
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

/* A symlink at the name, to a file (loop 0) or to nothing (loop 1), and a
 * second hard link to a live bus (loop 2) are refused with EPERM and left
 * as they were. Needs no second user. */
START_TEST(test_planted_link)
{
	char url[96], path[128], turl[96], target[128];
	msgbus_bus *bus = NULL;
	struct stat st;

	tu_unique_url(url, sizeof(url), "shm");
	tu_shm_path(path, sizeof(path), url);
	tu_unique_url(turl, sizeof(turl), "shm");
	tu_shm_path(target, sizeof(target), turl);
	if (_i == 0) {
		int fd = open(target, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		ck_assert_msg(fd >= 0, "create %s: %s", target, strerror(errno));
		close(fd);
	}
	if (_i == 2) {
		bus = tu_open(turl, NULL);
		ck_assert_int_eq(link(target, path), 0);
	} else {
		ck_assert_int_eq(symlink(target, path), 0);
	}

	TU_ASSERT_RC(msgbus_open(&bus, url, NULL), MSGBUS_EPERM);

	ck_assert_int_eq(lstat(path, &st), 0);
	ck_assert_msg(_i == 2 ? S_ISREG(st.st_mode) : S_ISLNK(st.st_mode), "the link changed");
	if (_i == 0) {
		ck_assert_int_eq(stat(target, &st), 0);
		ck_assert_int_eq(st.st_size, 0);
	}
	if (_i == 1)
		ck_assert_msg(!tu_path_exists(target), "created through a dangling symlink");
	ck_assert_int_eq(unlink(path), 0);
	if (_i == 2)
		TU_ASSERT_OK(msgbus_close(bus));
	if (_i == 0)
		ck_assert_int_eq(unlink(target), 0);
	TU_ASSERT_NO_SEGMENT(url);
	TU_ASSERT_NO_SEGMENT(turl);
}
END_TEST

/* ---- mode and owner ------------------------------------------------------ */

/* Created with mode 0660 under umask 022, the file is 0660. A member of
 * the owner's group attaches when it names the owner and the mode, and
 * its message reaches the owner; without naming the owner, or asking for
 * 0600, it gets EPERM. */
START_TEST(test_group_member)
{
	char url[96], path[128];
	struct hold_child h;
	struct stat st;
	if (skip_unless_root("group member"))
		return;
	tu_unique_url(url, sizeof(url), "shm");
	tu_shm_path(path, sizeof(path), url);
	hold_start(&h, url, &owner, 0660, 022);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_msg((st.st_mode & 07777) == 0660, "mode %o under umask 022, want 0660",
	              (unsigned)(st.st_mode & 07777));
	ck_assert_uint_eq(st.st_uid, OWNER_UID);

	open_as(url, &member, 0660, 0, MSGBUS_EPERM, 0);         /* not the member's bus */
	open_as(url, &member, 0, OWNER_UID, MSGBUS_EPERM, 0);    /* wider than 0600 */
	open_as(url, &member, 0660, OWNER_UID, MSGBUS_OK, 0);
	hold_end(&h, HOLD_RECV);
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

/* A bus whose users all died is reclaimed by the next open of its owner,
 * an unprivileged uid here, which also gives it the mode that open asks
 * for (loop 0: 0600 again, loop 1: 0660). */
START_TEST(test_own_stale_reclaimed)
{
	static const uint32_t modes[] = { 0600, 0660 };
	char url[96], path[128];
	struct hold_child h;
	struct snap stale;
	if (skip_unless_root("own stale segment"))
		return;
	tu_unique_url(url, sizeof(url), "shm");
	tu_shm_path(path, sizeof(path), url);
	hold_start(&h, url, &victim, 0600, 022);
	hold_end(&h, HOLD_DIE);
	take_snap(path, &stale);
	ck_assert_uint_eq(stale.uid, VICTIM_UID);

	open_as(url, &victim, modes[_i], 0, MSGBUS_OK, modes[_i]);
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

/* Root is held to the same rule: it attaches to a user's bus only when it
 * names that user, and leaves the user's file to the user when it closes
 * last. A user attaches to root's bus only when it names
 * MSGBUS_OWNER_ROOT. Naming an owner whose bus does not exist yields
 * ENOENT and creates nothing. */
START_TEST(test_root_and_user)
{
	char url[96], url2[96], url3[96];
	struct hold_child h;
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	msgbus_bus *bus = NULL;
	const struct who root_group_user = { MEMBER_UID, 0 };
	if (skip_unless_root("root and user"))
		return;
	tu_unique_url(url, sizeof(url), "shm");
	hold_start(&h, url, &owner, 0600, 022);
	TU_ASSERT_RC(msgbus_open(&bus, url, NULL), MSGBUS_EPERM);
	o.owner = OWNER_UID;
	bus = tu_open(url, &o);
	struct tu_seqmsg v = { 0, SEC_SEQ };
	TU_ASSERT_OK(msgbus_publish(bus, SEC_SUBJECT, &v, sizeof(v), TU_WAIT_MS));
	hold_end(&h, HOLD_RECV);
	/* root is the last to close the user's bus: the file stays the
	 * user's, stale, and the user's next open reclaims it */
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_SEGMENT(url);
	open_as(url, &owner, 0600, 0, MSGBUS_OK, 0600);
	TU_ASSERT_NO_SEGMENT(url);

	tu_unique_url(url2, sizeof(url2), "shm");
	o.owner = 0;
	o.mode = 0660;
	bus = tu_open(url2, &o);
	open_as(url2, &root_group_user, 0660, 0, MSGBUS_EPERM, 0);
	open_as(url2, &root_group_user, 0660, MSGBUS_OWNER_ROOT, MSGBUS_OK, 0);
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url2);

	tu_unique_url(url3, sizeof(url3), "shm");
	open_as(url3, &member, 0660, OWNER_UID, MSGBUS_ENOENT, 0);
	o.owner = OWNER_UID;
	TU_ASSERT_RC(msgbus_open(&bus, url3, &o), MSGBUS_ENOENT);
	TU_ASSERT_NO_SEGMENT(url3);
}
END_TEST

/* The creator is killed (loop 0) or stopped (loop 1) after creating the
 * file, before giving it mode 0660: the file is still 0600 and empty. A
 * group member waits a while for the mode, then gets EPERM. The owner's
 * next open reclaims the file with mode 0660; or the stopped creator,
 * let go, finishes, and then the member attaches. */
START_TEST(test_creator_before_mode)
{
	char url[96], path[128];
	struct hold_child h;
	struct snap half;
	int st;
	char why[96];
	if (skip_unless_root("creator before mode"))
		return;
	tu_unique_url(url, sizeof(url), "shm");
	tu_shm_path(path, sizeof(path), url);
	hold_spawn(&h, url, &owner, 0660, 022, _i == 0 ? "before_mode" : "stop:before_mode");
	if (_i == 0) {
		ck_assert_msg(tu_wait_child(h.pid, TU_WAIT_MS, &st) == 0, "creator not killed");
		ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "creator %s",
		              tu_status_str(why, sizeof(why), st));
	} else {
		ck_assert_int_eq(tu_wait_stopped(h.pid, TU_WAIT_MS), 0);
	}
	take_snap(path, &half);
	ck_assert_uint_eq(half.uid, OWNER_UID);
	ck_assert_uint_eq(half.mode, 0600);
	ck_assert_int_eq(half.size, 0);

	double t0 = tu_now_ms();
	open_as(url, &member, 0660, OWNER_UID, MSGBUS_EPERM, 0);
	ck_assert_msg(tu_now_ms() - t0 >= 150, "refused after %.0f ms without waiting",
	              tu_now_ms() - t0);
	if (_i == 0) {
		tu_pipe_close(&h.ready);
		tu_pipe_close(&h.go);
		open_as(url, &owner, 0660, 0, MSGBUS_OK, 0660);
	} else {
		ck_assert_int_eq(kill(h.pid, SIGCONT), 0);
		hold_ready(&h);
		open_as(url, &member, 0660, OWNER_UID, MSGBUS_OK, 0660);
		hold_end(&h, HOLD_RECV);
	}
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

/* A caller built against the header before the owner option passes a
 * smaller size: whatever lies beyond it is not read, and the owner is the
 * caller. */
START_TEST(test_options_without_owner)
{
	char url[96];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	o.size = offsetof(msgbus_options, owner);
	o.owner = 12345; /* not the caller's, and beyond o.size */
	tu_unique_url(url, sizeof(url), "shm");
	msgbus_bus *bus = tu_open(url, &o);
	msgbus_bus *again = tu_open(url, &o);
	TU_ASSERT_OK(msgbus_close(again));
	TU_ASSERT_OK(msgbus_close(bus));
	TU_ASSERT_NO_SEGMENT(url);
}
END_TEST

/* Links open handles of their own on the bus: on a bus made with mode
 * 0660 they must accept what the application accepted, or no link comes
 * up. Needs no second user. */
START_TEST(test_links_on_group_bus)
{
	char a_url[96], b_url[96], tcp[64];
	msgbus_options o = MSGBUS_OPTIONS_INIT;
	msgbus_link_stats st;
	msgbus_sub *sub = NULL;
	int port = -1;

	tu_unique_url(a_url, sizeof(a_url), "shm");
	tu_unique_url(b_url, sizeof(b_url), "shm");
	o.mode = 0660;
	msgbus_bus *a = tu_open(a_url, &o);
	msgbus_bus *b = tu_open(b_url, &o);
	TU_ASSERT_OK(msgbus_subscribe(a, SEC_SUBJECT, 0, &sub));
	TU_ASSERT_OK(msgbus_listen(a, "tcp://127.0.0.1:0", &port));
	snprintf(tcp, sizeof(tcp), "tcp://127.0.0.1:%d", port);
	TU_ASSERT_OK(msgbus_connect(b, tcp));
	double end = tu_now_ms() + TU_WAIT_MS;
	do {
		TU_ASSERT_OK(msgbus_link_stats_get(b, &st));
		if (st.links_up == 1 && st.remote_subs >= 1)
			break;
		tu_sleep_ms(1);
	} while (tu_now_ms() < end);
	ck_assert_msg(st.links_up == 1 && st.remote_subs >= 1,
	              "no link between 0660 buses: links_up %u remote_subs %u", st.links_up,
	              st.remote_subs);
	struct tu_seqmsg v = { 0, SEC_SEQ };
	TU_ASSERT_OK(msgbus_publish(b, SEC_SUBJECT, &v, sizeof(v), TU_WAIT_MS));
	TU_RECV_SEQ(sub, SEC_SUBJECT, SEC_SEQ);
	TU_ASSERT_OK(msgbus_close(b));
	TU_ASSERT_OK(msgbus_close(a));
	TU_ASSERT_NO_SEGMENT(a_url);
	TU_ASSERT_NO_SEGMENT(b_url);
}
END_TEST

Suite *suite_security(void)
{
	Suite *s = suite_create("security");
	TCase *tc;

	tc = tu_tcase("squatting", TU_CASE_TIMEOUT);
	tcase_add_test(tc, test_squatter_file);
	tcase_add_loop_test(tc, test_foreign_bus, 0, 2);
	tcase_add_loop_test(tc, test_planted_link, 0, 3);
	suite_add_tcase(s, tc);

	tc = tu_tcase("mode and owner", TU_CASE_TIMEOUT);
	tcase_add_test(tc, test_group_member);
	tcase_add_loop_test(tc, test_own_stale_reclaimed, 0, 2);
	tcase_add_test(tc, test_root_and_user);
	tcase_add_loop_test(tc, test_creator_before_mode, 0, 2);
	tcase_add_test(tc, test_options_without_owner);
	tcase_add_test(tc, test_links_on_group_bus);
	suite_add_tcase(s, tc);
	return s;
}
