// SPDX-License-Identifier: MIT
/* Unit tests for user/sandbox.c. The cgroup and netns tests need root; they
 * skip (with a message) otherwise. Every name is unique per run and removed
 * at the end of its test. */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Included to reach the static fallback killer (kernels without cgroup.kill). */
#include "../../user/sandbox.c"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

static void need_root(void)
{
	if (geteuid() != 0)
		cr_skip_test("needs root (cgroup v2 / network namespaces)");
}

static void unique_name(char *buf, size_t len, const char *prefix)
{
	unsigned int r = 0;

	if (getrandom(&r, sizeof(r), 0) != sizeof(r))
		r = (unsigned int)rand();
	snprintf(buf, len, "%s-%d-%08x", prefix, (int)getpid(), r);
}

static ino_t ino_of(const char *path)
{
	struct stat st;

	cr_assert_eq(stat(path, &st), 0, "stat %s: %s", path, strerror(errno));
	return st.st_ino;
}

Test(sandbox, id_valid)
{
	static const struct {
		const char *id;
		bool ok;
	} cases[] = {
		{ "a", true },
		{ "run-123-deadbeef", true },
		{ "A.b_c-9", true },
		{ "...", true },
		{ "0123456789012345678901234567890123456789012345678901234567890123", true },
		{ "01234567890123456789012345678901234567890123456789012345678901234", false },
		{ "", false },
		{ ".", false },
		{ "..", false },
		{ "a/b", false },
		{ "a b", false },
		{ "a\tb", false },
		{ "a\nb", false },
		{ "é", false },
		{ "x:y", false },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		cr_expect_eq(sb_id_valid(cases[i].id), cases[i].ok, "id '%s'", cases[i].id);
	cr_expect_not(sb_id_valid(NULL));
}

Test(sandbox, cgroup2_root_found)
{
	char root[4096], small[4];

	cr_assert_eq(sb_cgroup2_root(root, sizeof(root)), 0);
	cr_expect(sb_is_cgroup2_dir(root), "%s is not cgroup2", root);
	cr_expect_eq(sb_cgroup2_root(small, sizeof(small)), -ENAMETOOLONG);
	cr_expect_not(sb_is_cgroup2_dir("/proc"));
	cr_expect_not(sb_is_cgroup2_dir("/nonexistent/sluice"));
}

Test(sandbox, cgroup_lifecycle)
{
	char root[4096], name[64], top[4300], cg[4400], sub[4500], want[4600], line[4600];
	pid_t pid;
	FILE *f;
	int status;
	bool found = false;

	need_root();
	cr_assert_eq(sb_cgroup2_root(root, sizeof(root)), 0);
	unique_name(name, sizeof(name), "sluice-test");
	snprintf(top, sizeof(top), "%s/%s", root, name);
	snprintf(cg, sizeof(cg), "%s/box", top);
	snprintf(sub, sizeof(sub), "%s/inner/deeper", cg);

	cr_assert_eq(sb_cgroup_create(cg), 0);
	cr_assert_eq(sb_cgroup_create(cg), 0, "existing cgroup is fine");
	cr_assert(sb_is_cgroup2_dir(cg));
	cr_assert_eq(sb_cgroup_create(sub), 0);

	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		for (int i = 0; i < 100; i++) /* bounded: 10 s at most */
			usleep(100000);
		_exit(0);
	}
	cr_assert_eq(sb_cgroup_enter(cg, pid), 0);
	snprintf(line, sizeof(line), "/proc/%d/cgroup", (int)pid);
	snprintf(want, sizeof(want), "0::/%s/box\n", name);
	f = fopen(line, "r");
	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f))
		if (!strcmp(line, want))
			found = true;
	fclose(f);
	cr_expect(found, "child not in %s", cg);

	/* Kills the child, removes inner/deeper, inner and box. */
	cr_assert_eq(sb_cgroup_remove(cg), 0);
	cr_expect_eq(access(cg, F_OK), -1);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_expect(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "status %#x", status);

	cr_expect_eq(sb_cgroup_remove(cg), 0, "missing cgroup is fine");
	cr_expect_eq(sb_cgroup_remove("/tmp"), -ENOTDIR);
	cr_expect_eq(sb_cgroup_remove(root), -EPERM);
	cr_expect_eq(sb_cgroup_enter("/nonexistent/sluice", 0), -ENOENT);
	cr_assert_eq(sb_cgroup_remove(top), 0);
}

static pid_t sleeper_in(const char *cg)
{
	pid_t pid = fork();

	cr_assert_geq(pid, 0);
	if (pid == 0) {
		for (int i = 0; i < 100; i++) /* bounded: 10 s at most */
			usleep(100000);
		_exit(0);
	}
	cr_assert_eq(sb_cgroup_enter(cg, pid), 0);
	return pid;
}

Test(sandbox, cgroup_kill_fallback)
{
	char root[4096], name[64], cg[4200], sub[4300];
	pid_t a, b;
	int status;

	need_root();
	cr_assert_eq(sb_cgroup2_root(root, sizeof(root)), 0);
	unique_name(name, sizeof(name), "sluice-test");
	snprintf(cg, sizeof(cg), "%s/%s", root, name);
	snprintf(sub, sizeof(sub), "%s/sub", cg);
	cr_assert_eq(sb_cgroup_create(sub), 0);
	a = sleeper_in(cg);
	b = sleeper_in(sub);
	cgroup_kill_procs(cg, 0);
	cr_assert_eq(waitpid(a, &status, 0), a);
	cr_expect(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	cr_assert_eq(waitpid(b, &status, 0), b);
	cr_expect(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	cr_assert_eq(sb_cgroup_remove(cg), 0);
}

/* A temp dir for netns pins; its netns/ subdir becomes a mount point. */
static char pin_dir[256];

static void pin_dir_setup(void)
{
	strcpy(pin_dir, "/tmp/sluice-sb-test-XXXXXX");
	cr_assert_not_null(mkdtemp(pin_dir));
}

/* Skip before anything is made: a skipped test does not run .fini. */
static void root_pin_dir_setup(void)
{
	need_root();
	pin_dir_setup();
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void pin_dir_teardown(void)
{
	char netns_dir[300];

	if (!pin_dir[0])
		return;
	snprintf(netns_dir, sizeof(netns_dir), "%s/netns", pin_dir);
	umount2(netns_dir, MNT_DETACH);
	nftw(pin_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

/* In a child: join the netns at pin and check it holds only lo, up. */
static int check_only_lo(const char *pin)
{
	struct if_nameindex *ifs;
	struct ifreq ifr = { 0 };
	int fd, n = 0, s;

	fd = open(pin, O_RDONLY);
	if (fd < 0 || setns(fd, CLONE_NEWNET))
		return 10;
	ifs = if_nameindex();
	if (!ifs)
		return 11;
	for (struct if_nameindex *i = ifs; i->if_index; i++, n++)
		if (strcmp(i->if_name, "lo"))
			return 12;
	if (n != 1)
		return 13;
	s = socket(AF_INET, SOCK_DGRAM, 0);
	strcpy(ifr.ifr_name, "lo");
	if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) || !(ifr.ifr_flags & IFF_UP))
		return 14;
	return 0;
}

/* In a child: join the netns at pin and connect to 127.0.0.1:port. */
static int connect_in(const char *pin, uint16_t port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd, s;

	fd = open(pin, O_RDONLY);
	if (fd < 0 || setns(fd, CLONE_NEWNET))
		return 10;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	s = socket(AF_INET, SOCK_STREAM, 0);
	if (s < 0 || connect(s, (struct sockaddr *)&sin, sizeof(sin)))
		return 11;
	return 0;
}

static int in_child(int (*fn)(const char *, uint16_t), const char *pin, uint16_t port)
{
	int status;
	pid_t pid = fork();

	cr_assert_geq(pid, 0);
	if (pid == 0)
		_exit(fn(pin, port));
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static int check_only_lo_adapter(const char *pin, uint16_t port)
{
	return check_only_lo(pin);
}

static uint64_t netns_cookie(int fd)
{
	uint64_t cookie = 0;
	socklen_t len = sizeof(cookie);

	cr_assert_eq(getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len), 0, "%s",
		     strerror(errno));
	return cookie;
}

Test(sandbox, netns_pin_listen_remove, .init = root_pin_dir_setup, .fini = pin_dir_teardown)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sin);
	char pin[400], name[64];
	ino_t self_before;
	int lfd, hfd;

	unique_name(name, sizeof(name), "ns");
	snprintf(pin, sizeof(pin), "%s/netns/%s", pin_dir, name);
	self_before = ino_of("/proc/thread-self/ns/net");

	cr_assert_eq(sb_netns_create(pin), 0);
	cr_expect_eq(ino_of("/proc/thread-self/ns/net"), self_before, "caller's netns changed");
	cr_expect_neq(ino_of(pin), self_before, "pin is our own netns");
	cr_expect_eq(sb_netns_create(pin), -EEXIST);
	cr_expect_eq(in_child(check_only_lo_adapter, pin, 0), 0);

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	lfd = sb_listen_in_netns(pin, (struct sockaddr *)&sin, sizeof(sin), 8);
	cr_assert_geq(lfd, 0, "listen: %s", strerror(-lfd));
	cr_expect_eq(ino_of("/proc/thread-self/ns/net"), self_before, "thread left in sandbox");
	cr_expect(fcntl(lfd, F_GETFL) & O_NONBLOCK);
	cr_expect(fcntl(lfd, F_GETFD) & FD_CLOEXEC);
	hfd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_geq(hfd, 0);
	cr_expect_neq(netns_cookie(lfd), netns_cookie(hfd), "listener is in our netns");
	cr_assert_eq(getsockname(lfd, (struct sockaddr *)&sin, &sl), 0);
	cr_expect_eq(in_child(connect_in, pin, ntohs(sin.sin_port)), 0,
		     "cannot connect to the listener from inside the sandbox");
	close(hfd);
	close(lfd);
	/* sluiced also listens on [::1]: lo up must give the netns ::1 too. */
	{
		struct sockaddr_in6 s6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };

		lfd = sb_listen_in_netns(pin, (struct sockaddr *)&s6, sizeof(s6), 8);
		cr_expect_geq(lfd, 0, "listen on [::1]: %s", strerror(-lfd));
		if (lfd >= 0)
			close(lfd);
	}

	cr_assert_eq(sb_netns_remove(pin), 0);
	cr_expect_eq(access(pin, F_OK), -1);
	cr_expect_eq(sb_netns_remove(pin), 0, "missing pin is fine");
}

Test(sandbox, listen_host_and_bad_netns)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	int fd, hfd;
	ino_t self_before = ino_of("/proc/thread-self/ns/net");

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = sb_listen_in_netns(NULL, (struct sockaddr *)&sin, sizeof(sin), 4);
	cr_assert_geq(fd, 0, "%s", strerror(-fd));
	hfd = socket(AF_INET, SOCK_STREAM, 0);
	cr_expect_eq(netns_cookie(fd), netns_cookie(hfd));
	close(hfd);
	close(fd);
	cr_expect_eq(sb_listen_in_netns("/nonexistent/pin", (struct sockaddr *)&sin, sizeof(sin), 4),
		     -ENOENT);
	/* Not a netns file: setns refuses, we stay where we were. */
	cr_expect_eq(sb_listen_in_netns("/proc/self/status", (struct sockaddr *)&sin, sizeof(sin),
					4),
		     -EINVAL);
	cr_expect_eq(ino_of("/proc/thread-self/ns/net"), self_before);
}

struct seen {
	int n;
	struct sb_record last;
};

static int count_cb(const struct sb_record *r, void *opaque)
{
	struct seen *s = opaque;

	s->n++;
	s->last = *r;
	return 0;
}

static int stop_cb(const struct sb_record *r, void *opaque)
{
	return 42;
}

Test(sandbox, records, .init = pin_dir_setup, .fini = pin_dir_teardown)
{
	struct sb_record r = { .id = "box-1", .cgroup = "/sys/fs/cgroup/x", .netns = "" };
	struct sb_record bad = { .id = "bad/id", .cgroup = "/x" };
	struct seen seen = { 0 };
	char path[512];
	struct stat st;
	FILE *f;

	cr_expect_eq(sb_record_foreach(pin_dir, count_cb, &seen), 0, "no dir yet");
	cr_expect_eq(seen.n, 0);
	cr_assert_eq(sb_record_save(pin_dir, &r), 0);
	snprintf(path, sizeof(path), "%s/sandboxes/box-1", pin_dir);
	cr_assert_eq(stat(path, &st), 0);
	cr_expect_eq(st.st_mode & 0777, 0600);

	strcpy(r.id, "box-2");
	strcpy(r.netns, "/run/sluice/netns/box-2");
	cr_assert_eq(sb_record_save(pin_dir, &r), 0);
	cr_assert_eq(sb_record_save(pin_dir, &r), 0, "overwrite");
	cr_expect_eq(sb_record_save(pin_dir, &bad), -EINVAL);
	strcpy(bad.id, "nl");
	strcpy(bad.cgroup, "/a\nb");
	cr_expect_eq(sb_record_save(pin_dir, &bad), -EINVAL);

	/* Junk and a leftover temp file are skipped. */
	snprintf(path, sizeof(path), "%s/sandboxes/junk", pin_dir);
	f = fopen(path, "w");
	fputs("hello\n", f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/sandboxes/.box-3.tmp.1", pin_dir);
	f = fopen(path, "w");
	fputs("id=box-3\ncgroup=/x\nnetns=\n", f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/sandboxes/mismatch", pin_dir);
	f = fopen(path, "w");
	fputs("id=other\ncgroup=/x\nnetns=\n", f);
	fclose(f);

	cr_assert_eq(sb_record_foreach(pin_dir, count_cb, &seen), 0);
	cr_expect_eq(seen.n, 2);
	cr_expect_eq(sb_record_foreach(pin_dir, stop_cb, NULL), 42);

	cr_assert_eq(sb_record_remove(pin_dir, "box-1"), 0);
	cr_assert_eq(sb_record_remove(pin_dir, "box-1"), 0, "missing is fine");
	cr_expect_eq(sb_record_remove(pin_dir, "../x"), -EINVAL);
	seen.n = 0;
	cr_assert_eq(sb_record_foreach(pin_dir, count_cb, &seen), 0);
	cr_expect_eq(seen.n, 1);
	cr_expect_str_eq(seen.last.id, "box-2");
	cr_expect_str_eq(seen.last.cgroup, "/sys/fs/cgroup/x");
	cr_expect_str_eq(seen.last.netns, "/run/sluice/netns/box-2");
}
