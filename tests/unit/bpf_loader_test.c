// SPDX-License-Identifier: MIT
/*
 * bpf_loader + bpf/sluice.bpf.c, for real: each test loads the object with its
 * own pin dir, makes its own cgroup and network namespace (loopback only, so
 * nothing can leave even if redirection failed), attaches, and runs clients
 * in the cgroup. Needs root; skips otherwise.
 *
 * Everything is named after the test process's pid (Criterion runs each test
 * in its own process) and removed in teardown; leftovers of killed runs are
 * swept at setup.
 */
#include <criterion/criterion.h>
#include <criterion/hooks.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "bpf_loader.h"

#define PORT 15001
#define NKIDS_MAX 64
#define IO_TIMEOUT_MS 5000

static struct {
	bool skip;
	bool tfo; /* clients use sendto(MSG_FASTOPEN) instead of connect() */
	const char *move_to; /* clients move to this cgroup between socket() and connect() */
	char cg_root[256];
	char cg[384];
	char cg_inner[512];
	char cg2[400];
	char pin_dir[256];
	int host_ns, sb_ns;
	struct bpfl *b;
	int lfd4, lfd6;
	pid_t kids[NKIDS_MAX];
	int nkids;
} T = { .host_ns = -1, .sb_ns = -1, .lfd4 = -1, .lfd6 = -1 };

/* Child's view of one connect(). */
struct cres {
	int err;
	int peer_err;
	struct sockaddr_storage local;
	struct sockaddr_storage peer;
};

struct client {
	pid_t pid;
	int rd;   /* result pipe */
	int hold; /* child keeps its socket until this closes */
	struct cres res;
};

static int cg2_root(char *buf, size_t len)
{
	char dev[256], mnt[PATH_MAX], type[64];
	FILE *f = fopen("/proc/mounts", "re");
	int r = -ENOENT;

	if (!f)
		return -errno;
	while (fscanf(f, "%255s %4095s %63s %*[^\n]", dev, mnt, type) == 3) {
		if (!strcmp(type, "cgroup2") && strlen(mnt) < len) {
			memcpy(buf, mnt, strlen(mnt) + 1);
			r = 0;
			break;
		}
	}
	fclose(f);
	return r;
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

static void rm_tree(const char *path)
{
	nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* Remove pin dirs and cgroups of earlier runs whose process is gone. */
static void sweep_leftovers(void)
{
	char path[PATH_MAX];
	struct dirent *de;
	DIR *d;
	int pid;

	if ((d = opendir("/sys/fs/bpf"))) {
		while ((de = readdir(d))) {
			if (sscanf(de->d_name, "sluice-test-%d", &pid) == 1 && kill(pid, 0) < 0 &&
			    errno == ESRCH) {
				snprintf(path, sizeof(path), "/sys/fs/bpf/%s", de->d_name);
				rm_tree(path);
			}
		}
		closedir(d);
	}
	if ((d = opendir(T.cg_root))) {
		while ((de = readdir(d))) {
			if (sscanf(de->d_name, "sluice-bpft-%d", &pid) == 1 && kill(pid, 0) < 0 &&
			    errno == ESRCH) {
				snprintf(path, sizeof(path), "%s/%s/inner", T.cg_root, de->d_name);
				rmdir(path);
				snprintf(path, sizeof(path), "%s/%s", T.cg_root, de->d_name);
				rmdir(path);
			}
		}
		closedir(d);
	}
}

/* bpffs mounted once in the runner, before parallel tests could race on it. */
ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
	FILE *f;
	char line[512];
	bool found = false;

	(void)set;
	if (geteuid() != 0 || !(f = fopen("/proc/mounts", "re")))
		return;
	while (fgets(line, sizeof(line), f))
		if (strstr(line, " /sys/fs/bpf bpf "))
			found = true;
	fclose(f);
	if (!found)
		mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700");
}

static int lo_up(void)
{
	struct ifreq ifr = {};
	int fd, r = 0;

	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
		r = -errno;
	ifr.ifr_flags |= IFF_UP;
	if (!r && ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
		r = -errno;
	close(fd);
	return r;
}

static struct sockaddr_storage sa(const char *ip, uint16_t port, socklen_t *len)
{
	struct sockaddr_storage ss = {};
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

	if (inet_pton(AF_INET, ip, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		*len = sizeof(*s4);
	} else {
		cr_assert_eq(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1, "bad ip %s", ip);
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		*len = sizeof(*s6);
	}
	return ss;
}

/* Listener inside the sandbox netns, as sluiced opens it: setns, socket, setns back. */
static int listen_in_ns(const char *ip)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd, one = 1;

	ss = sa(ip, PORT, &len);
	cr_assert_eq(setns(T.sb_ns, CLONE_NEWNET), 0);
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_eq(setns(T.host_ns, CLONE_NEWNET), 0);
	cr_assert_geq(fd, 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	cr_assert_eq(bind(fd, (struct sockaddr *)&ss, len), 0, "bind %s: %s", ip, strerror(errno));
	cr_assert_eq(listen(fd, 128), 0);
	return fd;
}

static struct bpfl *loader_open(void)
{
	struct bpfl_opts o = { .pin_dir = T.pin_dir, .listen_port = PORT };
	struct bpfl *b = NULL;
	int r;

	inet_pton(AF_INET, "127.0.0.1", &o.listen_addr4);
	o.listen_addr6 = in6addr_loopback;
	r = bpfl_open(&o, &b);
	cr_assert_eq(r, 0, "bpfl_open: %s", strerror(-r));
	return b;
}

static void setup(void)
{
	int pid = getpid();

	if (geteuid() != 0) {
		T.skip = true;
		return;
	}
	cr_assert_eq(cg2_root(T.cg_root, sizeof(T.cg_root)), 0, "no cgroup2 mount");
	sweep_leftovers();
	snprintf(T.cg, sizeof(T.cg), "%s/sluice-bpft-%d", T.cg_root, pid);
	snprintf(T.cg_inner, sizeof(T.cg_inner), "%s/inner", T.cg);
	snprintf(T.cg2, sizeof(T.cg2), "%s/sluice-bpft-%d-b", T.cg_root, pid);
	snprintf(T.pin_dir, sizeof(T.pin_dir), "/sys/fs/bpf/sluice-test-%d", pid);
	cr_assert_eq(mkdir(T.cg, 0755), 0, "mkdir %s: %s", T.cg, strerror(errno));

	/* A fresh netns holding only loopback; the test process stays in the host one. */
	T.host_ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	cr_assert_geq(T.host_ns, 0);
	cr_assert_eq(unshare(CLONE_NEWNET), 0, "unshare: %s", strerror(errno));
	T.sb_ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	cr_assert_eq(lo_up(), 0);
	cr_assert_eq(setns(T.host_ns, CLONE_NEWNET), 0);
	cr_assert_geq(T.sb_ns, 0);

	T.b = loader_open();
	cr_assert_eq(bpfl_attach_cgroup(T.b, "sb", T.cg), 0);
	T.lfd4 = listen_in_ns("127.0.0.1");
	T.lfd6 = listen_in_ns("::1");
}

static void teardown(void)
{
	int i;

	if (T.skip)
		return;
	for (i = 0; i < T.nkids; i++) {
		kill(T.kids[i], SIGKILL);
		waitpid(T.kids[i], NULL, 0);
	}
	if (T.lfd4 >= 0)
		close(T.lfd4);
	if (T.lfd6 >= 0)
		close(T.lfd6);
	if (T.b) {
		bpfl_detach_cgroup(T.b, "sb");
		bpfl_detach_cgroup(T.b, "inner");
		bpfl_detach_cgroup(T.b, "sb2");
		bpfl_close(T.b);
	}
	rm_tree(T.pin_dir);
	rmdir(T.cg_inner);
	rmdir(T.cg);
	rmdir(T.cg2);
	if (T.sb_ns >= 0)
		close(T.sb_ns);
	if (T.host_ns >= 0)
		close(T.host_ns);
}

TestSuite(bpf_loader, .init = setup, .fini = teardown, .timeout = 60);

#define NEED_ROOT()                                                               \
	do {                                                                          \
		if (T.skip)                                                               \
			cr_skip_test("bpf_loader tests need root (cgroups, netns, bpf)"); \
	} while (0)

static int read_full(int fd, void *buf, size_t len)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	size_t got = 0;
	ssize_t n;

	while (got < len) {
		if (poll(&p, 1, IO_TIMEOUT_MS) != 1)
			return -ETIMEDOUT;
		n = read(fd, (char *)buf + got, len - got);
		if (n <= 0)
			return n < 0 ? -errno : -EPIPE;
		got += n;
	}
	return 0;
}

static void child_main(const char *cg, int type, const struct sockaddr_storage *dst, socklen_t len,
		       int wr, int hold)
{
	struct cres res = {};
	char procs[PATH_MAX + 16];
	socklen_t l;
	char c;
	int fd, cfd;

	alarm(30); /* never outlive a stuck test */
	snprintf(procs, sizeof(procs), "%s/cgroup.procs", cg);
	cfd = open(procs, O_WRONLY | O_CLOEXEC);
	if (cfd < 0 || write(cfd, "0", 1) != 1 || setns(T.sb_ns, CLONE_NEWNET) < 0)
		_exit(3);
	close(cfd);
	fd = socket(dst->ss_family, type | SOCK_CLOEXEC, 0);
	if (fd < 0)
		_exit(4);
	if (T.move_to) {
		snprintf(procs, sizeof(procs), "%s/cgroup.procs", T.move_to);
		cfd = open(procs, O_WRONLY | O_CLOEXEC);
		if (cfd < 0 || write(cfd, "0", 1) != 1)
			_exit(6);
		close(cfd);
	}
	/* MSG_FASTOPEN: connect inside sendto(); the hooks must cover it too. */
	if (T.tfo)
		res.err = sendto(fd, "x", 1, MSG_FASTOPEN, (const struct sockaddr *)dst, len) < 0
				  ? errno
				  : 0;
	else
		res.err = connect(fd, (const struct sockaddr *)dst, len) < 0 ? errno : 0;
	l = sizeof(res.local);
	getsockname(fd, (struct sockaddr *)&res.local, &l);
	l = sizeof(res.peer);
	res.peer_err = getpeername(fd, (struct sockaddr *)&res.peer, &l) < 0 ? errno : 0;
	if (write(wr, &res, sizeof(res)) != sizeof(res))
		_exit(5);
	while (read(hold, &c, 1) > 0)
		;
	_exit(0);
}

/* Fork a client in cgroup cg + the sandbox netns that connects to ip:port. */
static void client_start(struct client *c, const char *cg, int type, const char *ip, uint16_t port)
{
	struct sockaddr_storage dst;
	socklen_t len;
	int rp[2], hp[2];

	dst = sa(ip, port, &len);
	cr_assert_eq(pipe2(rp, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(hp, O_CLOEXEC), 0);
	cr_assert_lt(T.nkids, NKIDS_MAX);
	c->pid = fork();
	cr_assert_geq(c->pid, 0);
	if (c->pid == 0) {
		close(rp[0]);
		close(hp[1]);
		child_main(cg, type, &dst, len, rp[1], hp[0]);
	}
	T.kids[T.nkids++] = c->pid;
	close(rp[1]);
	close(hp[0]);
	c->rd = rp[0];
	c->hold = hp[1];
}

static void client_wait(struct client *c)
{
	int r = read_full(c->rd, &c->res, sizeof(c->res));

	cr_assert_eq(r, 0, "client result: %s", strerror(-r));
}

static void client_end(struct client *c)
{
	close(c->rd);
	close(c->hold);
}

static void client_run(struct client *c, const char *cg, int type, const char *ip, uint16_t port)
{
	client_start(c, cg, type, ip, port);
	client_wait(c);
}

static int accept_one(int lfd)
{
	struct pollfd p = { .fd = lfd, .events = POLLIN };
	int fd;

	cr_assert_eq(poll(&p, 1, IO_TIMEOUT_MS), 1, "nothing to accept");
	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	cr_assert_geq(fd, 0);
	return fd;
}

static void assert_sa(const struct sockaddr_storage *ss, const char *ip, uint16_t port)
{
	struct sockaddr_storage want;
	socklen_t len;
	char got[INET6_ADDRSTRLEN] = "?";

	want = sa(ip, port, &len);
	if (ss->ss_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)ss)->sin_addr, got, sizeof(got));
	else if (ss->ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)ss)->sin6_addr, got, sizeof(got));
	cr_assert_eq(memcmp(ss, &want, len), 0, "address %s, want %s port %u", got, ip, port);
}

static void assert_orig(const struct sluice_orig *o, const char *ip, uint16_t port, uint32_t flags,
			const char *cg)
{
	struct in6_addr a6;
	struct in_addr a4;

	if (inet_pton(AF_INET, ip, &a4) == 1) {
		cr_assert_eq(o->family, SLUICE_AF_INET);
		cr_assert_eq(memcmp(o->addr, &a4, 4), 0);
		cr_assert_eq(memcmp(o->addr + 4, "\0\0\0\0\0\0\0\0\0\0\0\0", 12), 0);
	} else {
		cr_assert_eq(inet_pton(AF_INET6, ip, &a6), 1);
		cr_assert_eq(o->family, SLUICE_AF_INET6);
		cr_assert_eq(memcmp(o->addr, &a6, 16), 0);
	}
	cr_assert_eq(ntohs(o->port), port);
	cr_assert_eq(o->flags, flags, "flags %#x want %#x", o->flags, flags);
	cr_assert_eq(o->cgroup_id, bpfl_cgroup_id(cg), "cgroup id %llu want %llu",
		     (unsigned long long)o->cgroup_id, (unsigned long long)bpfl_cgroup_id(cg));
}

/* One redirected connect end to end: child view, daemon view, entry gone after. */
static void check_redirect(const char *cg, const char *ip, const char *peer_ip, int lfd,
			   uint32_t flags, const char *orig_ip)
{
	struct sluice_orig o;
	struct client c;
	int fd, r;

	client_run(&c, cg, SOCK_STREAM, ip, 443);
	cr_assert_eq(c.res.err, 0, "connect %s: %s", ip, strerror(c.res.err));
	cr_assert_eq(c.res.peer_err, 0);
	assert_sa(&c.res.peer, peer_ip, 443);
	fd = accept_one(lfd);
	r = bpfl_conn_take(T.b, fd, &o);
	cr_assert_eq(r, 0, "conn_take: %s", strerror(-r));
	assert_orig(&o, orig_ip, 443, flags, cg);
	cr_assert_eq(bpfl_conn_take(T.b, fd, &o), -ENOENT);
	if (T.tfo) {
		char x = 0;

		cr_assert_eq(read_full(fd, &x, 1), 0);
		cr_assert_eq(x, 'x', "Fast Open data reached the listener");
	}
	close(fd);
	client_end(&c);
}

static uint32_t prog_count(const char *cg, enum bpf_attach_type type, bool effective)
{
	__u32 ids[8], cnt = 8, aflags = 0;
	int fd = open(cg, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	cr_assert_geq(fd, 0);
	cr_assert_eq(bpf_prog_query(fd, type, effective ? BPF_F_QUERY_EFFECTIVE : 0, &aflags, ids,
				    &cnt),
		     0);
	close(fd);
	return cnt;
}

Test(bpf_loader, connect4_redirect)
{
	NEED_ROOT();
	check_redirect(T.cg, "198.18.0.9", "198.18.0.9", T.lfd4, 0, "198.18.0.9");
}

Test(bpf_loader, connect6_redirect)
{
	NEED_ROOT();
	check_redirect(T.cg, "2001:db8::1", "2001:db8::1", T.lfd6, 0, "2001:db8::1");
}

Test(bpf_loader, connect6_v4mapped)
{
	NEED_ROOT();
	check_redirect(T.cg, "::ffff:198.18.0.9", "::ffff:198.18.0.9", T.lfd4,
		       SLUICE_ORIG_F_V4MAPPED, "198.18.0.9");
}

Test(bpf_loader, explicit_proxy_use_records_listener)
{
	struct sluice_orig o;
	struct client c;
	int fd;

	NEED_ROOT();
	client_run(&c, T.cg, SOCK_STREAM, "127.0.0.1", PORT);
	cr_assert_eq(c.res.err, 0);
	assert_sa(&c.res.peer, "127.0.0.1", PORT);
	fd = accept_one(T.lfd4);
	cr_assert_eq(bpfl_conn_take(T.b, fd, &o), 0);
	assert_orig(&o, "127.0.0.1", PORT, 0, T.cg);
	close(fd);
	client_end(&c);
}

Test(bpf_loader, listener_closed_refuses)
{
	struct client c;

	NEED_ROOT();
	close(T.lfd4);
	T.lfd4 = -1;
	close(T.lfd6);
	T.lfd6 = -1;
	client_run(&c, T.cg, SOCK_STREAM, "198.18.0.9", 443);
	cr_assert_eq(c.res.err, ECONNREFUSED, "got %s", strerror(c.res.err));
	client_end(&c);
	client_run(&c, T.cg, SOCK_STREAM, "2001:db8::1", 443);
	cr_assert_eq(c.res.err, ECONNREFUSED, "got %s", strerror(c.res.err));
	client_end(&c);
}

Test(bpf_loader, no_config_fails_closed)
{
	struct sluice_cfg cfg = {};
	char path[PATH_MAX];
	struct client c;
	__u32 key = 0;
	int mfd;

	NEED_ROOT();
	snprintf(path, sizeof(path), "%s/maps/sluice_cfg_map", T.pin_dir);
	mfd = bpf_obj_get(path);
	cr_assert_geq(mfd, 0, "pinned cfg map: %s", strerror(errno));
	cr_assert_eq(bpf_map_update_elem(mfd, &key, &cfg, BPF_ANY), 0);
	close(mfd);
	client_run(&c, T.cg, SOCK_STREAM, "198.18.0.9", 443);
	cr_assert_eq(c.res.err, EPERM, "got %s", strerror(c.res.err));
	client_end(&c);
	client_run(&c, T.cg, SOCK_STREAM, "2001:db8::1", 443);
	cr_assert_eq(c.res.err, EPERM, "got %s", strerror(c.res.err));
	client_end(&c);
}

/* UDP is not steered yet: with only loopback in the netns it goes nowhere. */
Test(bpf_loader, udp_untouched)
{
	struct client c;

	NEED_ROOT();
	client_run(&c, T.cg, SOCK_DGRAM, "198.18.0.9", 53);
	cr_assert_eq(c.res.err, ENETUNREACH, "got %s", strerror(c.res.err));
	client_end(&c);
}

Test(bpf_loader, detach_unpins)
{
	struct client c;

	NEED_ROOT();
	cr_assert(bpfl_is_attached(T.b, "sb"));
	cr_assert_eq(prog_count(T.cg, BPF_CGROUP_INET4_CONNECT, false), 1);
	cr_assert_eq(bpfl_detach_cgroup(T.b, "sb"), 0);
	cr_assert_not(bpfl_is_attached(T.b, "sb"));
	cr_assert_eq(bpfl_detach_cgroup(T.b, "sb"), 0, "missing id is not an error");
	cr_assert_eq(prog_count(T.cg, BPF_CGROUP_INET4_CONNECT, false), 0);
	cr_assert_eq(prog_count(T.cg, BPF_CGROUP_SOCK_OPS, false), 0);
	client_run(&c, T.cg, SOCK_STREAM, "198.18.0.9", 443);
	cr_assert_eq(c.res.err, ENETUNREACH, "got %s", strerror(c.res.err));
	client_end(&c);
	cr_assert_eq(bpfl_attach_cgroup(T.b, "../x", T.cg), -EINVAL);
}

/* A restarted daemon: pinned links keep redirecting, pinned maps are reused. */
Test(bpf_loader, restart_keeps_links_and_maps)
{
	NEED_ROOT();
	bpfl_close(T.b);
	T.b = NULL;
	T.b = loader_open();
	cr_assert(bpfl_is_attached(T.b, "sb"));
	/* Links still run the old programs, which write the reused maps. */
	check_redirect(T.cg, "198.18.0.9", "198.18.0.9", T.lfd4, 0, "198.18.0.9");
	/* Attach again: idempotent, the links move to the new programs, no duplicates. */
	cr_assert_eq(bpfl_attach_cgroup(T.b, "sb", T.cg), 0);
	cr_assert_eq(prog_count(T.cg, BPF_CGROUP_INET4_CONNECT, false), 1);
	cr_assert_eq(prog_count(T.cg, BPF_CGROUP_INET6_CONNECT, false), 1);
	cr_assert_eq(prog_count(T.cg, BPF_CGROUP_SOCK_OPS, false), 1);
	check_redirect(T.cg, "2001:db8::1", "2001:db8::1", T.lfd6, 0, "2001:db8::1");
	check_redirect(T.cg, "::ffff:198.18.0.9", "::ffff:198.18.0.9", T.lfd4,
		       SLUICE_ORIG_F_V4MAPPED, "198.18.0.9");
}

/* A pinned map of an older, different definition is replaced, not a load failure. */
Test(bpf_loader, incompatible_pinned_map_replaced)
{
	char path[PATH_MAX];
	int fd;

	NEED_ROOT();
	bpfl_close(T.b);
	T.b = NULL;
	snprintf(path, sizeof(path), "%s/maps/sluice_conn_map", T.pin_dir);
	cr_assert_eq(unlink(path), 0);
	fd = bpf_map_create(BPF_MAP_TYPE_HASH, "sluice_conn_map", 8, 8, 16, NULL);
	cr_assert_geq(fd, 0);
	cr_assert_eq(bpf_obj_pin(fd, path), 0);
	close(fd);
	T.b = loader_open();
	cr_assert_eq(bpfl_attach_cgroup(T.b, "sb", T.cg), 0);
	check_redirect(T.cg, "198.18.0.9", "198.18.0.9", T.lfd4, 0, "198.18.0.9");
}

/*
 * Nested sandboxes: inner cgroup runs its programs, then the outer's (which
 * see the listener address). The original destination must survive.
 */
Test(bpf_loader, nested_cgroups)
{
	NEED_ROOT();
	cr_assert_eq(mkdir(T.cg_inner, 0755), 0);
	cr_assert_eq(bpfl_attach_cgroup(T.b, "inner", T.cg_inner), 0);
	cr_assert_eq(prog_count(T.cg_inner, BPF_CGROUP_INET4_CONNECT, true), 2);
	check_redirect(T.cg_inner, "198.18.0.9", "198.18.0.9", T.lfd4, 0, "198.18.0.9");
	check_redirect(T.cg_inner, "2001:db8::1", "2001:db8::1", T.lfd6, 0, "2001:db8::1");
	check_redirect(T.cg_inner, "::ffff:198.18.0.9", "::ffff:198.18.0.9", T.lfd4,
		       SLUICE_ORIG_F_V4MAPPED, "198.18.0.9");
	check_redirect(T.cg, "198.18.0.10", "198.18.0.10", T.lfd4, 0, "198.18.0.10");
	/* Inner detached: the outer sandbox's programs still cover it. */
	cr_assert_eq(bpfl_detach_cgroup(T.b, "inner"), 0);
	check_redirect(T.cg_inner, "198.18.0.11", "198.18.0.11", T.lfd4, 0, "198.18.0.11");
}

Test(bpf_loader, fastopen_redirect)
{
	NEED_ROOT();
	T.tfo = true;
	check_redirect(T.cg, "198.18.0.9", "198.18.0.9", T.lfd4, 0, "198.18.0.9");
	check_redirect(T.cg, "2001:db8::1", "2001:db8::1", T.lfd6, 0, "2001:db8::1");
}

/* A socket keeps the sandbox of its cgroup at socket() time, whoever connects it. */
Test(bpf_loader, socket_cgroup_not_task_cgroup)
{
	NEED_ROOT();
	cr_assert_eq(mkdir(T.cg2, 0755), 0);
	T.move_to = T.cg2; /* not attached */
	check_redirect(T.cg, "198.18.0.9", "198.18.0.9", T.lfd4, 0, "198.18.0.9");
}

/* Two sibling sandboxes: each keeps its own links and its own cgroup id. */
Test(bpf_loader, two_sandboxes)
{
	NEED_ROOT();
	cr_assert_eq(mkdir(T.cg2, 0755), 0);
	cr_assert_eq(bpfl_attach_cgroup(T.b, "sb2", T.cg2), 0);
	cr_assert_eq(prog_count(T.cg, BPF_CGROUP_INET4_CONNECT, true), 1);
	cr_assert_eq(prog_count(T.cg2, BPF_CGROUP_INET4_CONNECT, true), 1);
	check_redirect(T.cg2, "198.18.0.9", "198.18.0.9", T.lfd4, 0, "198.18.0.9");
	check_redirect(T.cg, "198.18.0.7", "198.18.0.7", T.lfd4, 0, "198.18.0.7");
	cr_assert_eq(bpfl_detach_cgroup(T.b, "sb2"), 0);
	check_redirect(T.cg, "2001:db8::7", "2001:db8::7", T.lfd6, 0, "2001:db8::7");
}

/* The daemon never attaches to a cgroup it is in itself (its dials would loop). */
Test(bpf_loader, refuses_own_cgroup)
{
	char procs[PATH_MAX];
	int st, fd;
	pid_t pid;

	NEED_ROOT();
	snprintf(procs, sizeof(procs), "%s/cgroup.procs", T.cg_inner);
	cr_assert_eq(mkdir(T.cg_inner, 0755), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		fd = open(procs, O_WRONLY);
		if (fd < 0 || write(fd, "0", 1) != 1)
			_exit(2);
		_exit(bpfl_attach_cgroup(T.b, "self", T.cg) == -ELOOP ? 0 : 1);
	}
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x", st);
	cr_assert_not(bpfl_is_attached(T.b, "self"));
}

#define NCONC 50

Test(bpf_loader, concurrent_connects)
{
	static struct client c[NCONC];
	char ip[NCONC][32];
	bool seen[NCONC] = {};
	struct sluice_orig o;
	struct sockaddr_in peer;
	socklen_t len;
	int i, j, fd;

	NEED_ROOT();
	for (i = 0; i < NCONC; i++) {
		snprintf(ip[i], sizeof(ip[i]), "198.18.%d.%d", i / 200, 1 + i % 200);
		client_start(&c[i], T.cg, SOCK_STREAM, ip[i], 1000 + i);
	}
	for (i = 0; i < NCONC; i++) {
		client_wait(&c[i]);
		cr_assert_eq(c[i].res.err, 0, "client %d: %s", i, strerror(c[i].res.err));
	}
	for (i = 0; i < NCONC; i++) {
		fd = accept_one(T.lfd4);
		len = sizeof(peer);
		cr_assert_eq(getpeername(fd, (struct sockaddr *)&peer, &len), 0);
		for (j = 0; j < NCONC; j++)
			if (((struct sockaddr_in *)&c[j].res.local)->sin_port == peer.sin_port)
				break;
		cr_assert_lt(j, NCONC, "accepted a connection no client made");
		cr_assert_not(seen[j]);
		seen[j] = true;
		cr_assert_eq(bpfl_conn_take(T.b, fd, &o), 0);
		assert_orig(&o, ip[j], 1000 + j, 0, T.cg);
		close(fd);
	}
	for (i = 0; i < NCONC; i++)
		client_end(&c[i]);
}
