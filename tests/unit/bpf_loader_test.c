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

#include <linux/if_ether.h>
#include <linux/netlink.h>
#include <netinet/in.h>

#include <bpf/bpf.h>

#include "bpf_loader.h"

/* `sluicectl run`'s capability drop is static in sluicectl.c: test it in place. */
#define main sluicectl_main
#include "sluicectl.c"
#undef main

#define PORT 15001
#define DNS_PORT 15053
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
	int dns_u4, dns_u6, dns_t4, dns_t6; /* DNS listeners, opened by tests that use them */
	pid_t kids[NKIDS_MAX];
	int nkids;
} T = { .host_ns = -1,
	.sb_ns = -1,
	.lfd4 = -1,
	.lfd6 = -1,
	.dns_u4 = -1,
	.dns_u6 = -1,
	.dns_t4 = -1,
	.dns_t6 = -1 };

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

/* A socket inside the sandbox netns, as sluiced opens it: setns, socket, setns back. */
static int sock_in_ns(const char *ip, uint16_t port, int type)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd, one = 1;

	ss = sa(ip, port, &len);
	cr_assert_eq(setns(T.sb_ns, CLONE_NEWNET), 0);
	fd = socket(ss.ss_family, type | SOCK_CLOEXEC, 0);
	cr_assert_eq(setns(T.host_ns, CLONE_NEWNET), 0);
	cr_assert_geq(fd, 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	cr_assert_eq(bind(fd, (struct sockaddr *)&ss, len), 0, "bind %s: %s", ip, strerror(errno));
	if (type == SOCK_STREAM)
		cr_assert_eq(listen(fd, 128), 0);
	return fd;
}

static int listen_in_ns(const char *ip)
{
	return sock_in_ns(ip, PORT, SOCK_STREAM);
}

/* A test stand-in for sluiced's DNS listener: UDP and TCP, v4 and v6. */
static void dns_listeners(void)
{
	T.dns_u4 = sock_in_ns("127.0.0.1", DNS_PORT, SOCK_DGRAM);
	T.dns_u6 = sock_in_ns("::1", DNS_PORT, SOCK_DGRAM);
	T.dns_t4 = sock_in_ns("127.0.0.1", DNS_PORT, SOCK_STREAM);
	T.dns_t6 = sock_in_ns("::1", DNS_PORT, SOCK_STREAM);
}

static struct bpfl *loader_open(void)
{
	struct bpfl_opts o = { .pin_dir = T.pin_dir, .listen_port = PORT, .dns_port = DNS_PORT };
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
	if (T.dns_u4 >= 0)
		close(T.dns_u4);
	if (T.dns_u6 >= 0)
		close(T.dns_u6);
	if (T.dns_t4 >= 0)
		close(T.dns_t4);
	if (T.dns_t6 >= 0)
		close(T.dns_t6);
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

/* UDP other than DNS is refused at connect with EACCES (QUIC falls back to TCP). */
Test(bpf_loader, udp_non_dns_refused)
{
	struct client c;

	NEED_ROOT();
	client_run(&c, T.cg, SOCK_DGRAM, "198.18.0.9", 443);
	cr_assert_eq(c.res.err, EACCES, "got %s", strerror(c.res.err));
	client_end(&c);
	client_run(&c, T.cg, SOCK_DGRAM, "2001:db8::1", 443);
	cr_assert_eq(c.res.err, EACCES, "got %s", strerror(c.res.err));
	client_end(&c);
	client_run(&c, T.cg, SOCK_DGRAM, "::ffff:198.18.0.9", 443);
	cr_assert_eq(c.res.err, EACCES, "got %s", strerror(c.res.err));
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
	/* this kernel (6.x with BTF) must take the socket-cgroup programs: a
	 * verifier refusal would fall back silently */
	cr_assert(bpfl_uses_socket_cgroup(T.b), "the loader fell back to the task's cgroup");
	cr_assert(bpfl_uses_set_retval(T.b));
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

/* ---- enforcement: sockets, deny set, UDP/DNS, bind, capabilities ---- */

#ifndef IPPROTO_MPTCP
#define IPPROTO_MPTCP 262
#endif
#ifndef IPPROTO_UDPLITE
#define IPPROTO_UDPLITE 136
#endif

/* What a job child reports: a few errnos, a few addresses, a little data. */
struct jres {
	int v[32];
	struct sockaddr_storage ss[2];
	char data[8];
};

struct job {
	pid_t pid;
	int rd;
	struct jres res;
};

typedef void (*job_fn)(const void *arg, struct jres *res);

/* Fork a child that joins cgroup cg (if not NULL) and the sandbox netns, then runs fn. */
static void job_start(struct job *j, const char *cg, job_fn fn, const void *arg)
{
	struct jres res = {};
	char procs[PATH_MAX + 16];
	int p[2], fd;

	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	cr_assert_lt(T.nkids, NKIDS_MAX);
	j->pid = fork();
	cr_assert_geq(j->pid, 0);
	if (j->pid == 0) {
		close(p[0]);
		alarm(30);
		if (cg) {
			snprintf(procs, sizeof(procs), "%s/cgroup.procs", cg);
			fd = open(procs, O_WRONLY | O_CLOEXEC);
			if (fd < 0 || write(fd, "0", 1) != 1)
				_exit(3);
			close(fd);
		}
		if (setns(T.sb_ns, CLONE_NEWNET) < 0)
			_exit(3);
		fn(arg, &res);
		if (write(p[1], &res, sizeof(res)) != sizeof(res))
			_exit(5);
		_exit(0);
	}
	T.kids[T.nkids++] = j->pid;
	close(p[1]);
	j->rd = p[0];
}

static void job_wait(struct job *j)
{
	int r = read_full(j->rd, &j->res, sizeof(j->res));

	cr_assert_eq(r, 0, "job result: %s", strerror(-r));
	close(j->rd);
}

static void job_run(struct job *j, const char *cg, job_fn fn, const void *arg)
{
	job_start(j, cg, fn, arg);
	job_wait(j);
}

static void assert_quiet(int fd, const char *what)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	cr_assert_eq(poll(&p, 1, 0), 0, "%s saw traffic", what);
}

/* -- sock_create: the decision table of bpf/lib/sock.h -- */

struct sock_row {
	int family, type, proto;
	bool allowed;
	const char *what;
};

static const struct sock_row sock_rows[] = {
	{ AF_INET, SOCK_STREAM, 0, true, "tcp4" },
	{ AF_INET, SOCK_STREAM, IPPROTO_TCP, true, "tcp4 explicit" },
	{ AF_INET6, SOCK_STREAM, 0, true, "tcp6" },
	{ AF_INET6, SOCK_STREAM, IPPROTO_TCP, true, "tcp6 explicit" },
	{ AF_INET, SOCK_DGRAM, 0, true, "udp4" },
	{ AF_INET, SOCK_DGRAM, IPPROTO_UDP, true, "udp4 explicit" },
	{ AF_INET6, SOCK_DGRAM, IPPROTO_UDP, true, "udp6" },
	{ AF_UNIX, SOCK_STREAM, 0, true, "unix stream" },
	{ AF_UNIX, SOCK_DGRAM, 0, true, "unix dgram" },
	{ AF_NETLINK, SOCK_RAW, NETLINK_ROUTE, true, "netlink route" },
	/* The hook never sees AF_PACKET: CAP_NET_RAW (dropped by sluicectl run) guards it. */
	{ AF_PACKET, SOCK_RAW, 0, true, "packet (capability-guarded)" },
	{ AF_INET, SOCK_RAW, IPPROTO_ICMP, false, "raw4 icmp" },
	{ AF_INET, SOCK_RAW, IPPROTO_RAW, false, "raw4 raw" },
	{ AF_INET, SOCK_RAW, IPPROTO_UDP, false, "raw4 udp" },
	{ AF_INET6, SOCK_RAW, IPPROTO_ICMPV6, false, "raw6 icmpv6" },
	{ AF_INET, SOCK_DGRAM, IPPROTO_ICMP, false, "ping4" },
	{ AF_INET6, SOCK_DGRAM, IPPROTO_ICMPV6, false, "ping6" },
	{ AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE, false, "udplite4" },
	{ AF_INET6, SOCK_DGRAM, IPPROTO_UDPLITE, false, "udplite6" },
	{ AF_INET, SOCK_STREAM, IPPROTO_MPTCP, false, "mptcp4" },
	{ AF_INET6, SOCK_STREAM, IPPROTO_MPTCP, false, "mptcp6" },
	{ AF_INET, SOCK_STREAM, IPPROTO_SCTP, false, "sctp4 stream" },
	{ AF_INET, SOCK_SEQPACKET, IPPROTO_SCTP, false, "sctp4 seqpacket" },
	{ AF_INET6, SOCK_STREAM, IPPROTO_SCTP, false, "sctp6 stream" },
};
#define NSOCK_ROWS (sizeof(sock_rows) / sizeof(sock_rows[0]))

static void sock_table_fn(const void *arg, struct jres *res)
{
	size_t i;
	int fd;

	(void)arg;
	/* Ping sockets are refused by the netns' ping_group_range before the hook runs. */
	fd = open("/proc/sys/net/ipv4/ping_group_range", O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "0 2147483647", 12) != 12)
		_exit(7);
	close(fd);
	for (i = 0; i < NSOCK_ROWS; i++) {
		fd = socket(sock_rows[i].family, sock_rows[i].type | SOCK_CLOEXEC,
			    sock_rows[i].family == AF_PACKET ? htons(ETH_P_ALL) : sock_rows[i].proto);
		res->v[i] = fd < 0 ? errno : 0;
		if (fd >= 0)
			close(fd);
	}
}

Test(bpf_loader, sock_create_table)
{
	struct job in, out;
	size_t i;

	NEED_ROOT();
	cr_assert_eq(mkdir(T.cg2, 0755), 0); /* control: same netns, no programs */
	job_run(&in, T.cg, sock_table_fn, NULL);
	job_run(&out, T.cg2, sock_table_fn, NULL);
	for (i = 0; i < NSOCK_ROWS; i++) {
		const struct sock_row *r = &sock_rows[i];

		if (getenv("SLUICE_TEST_VERBOSE"))
			fprintf(stderr, "%-28s sandbox %-24s control %s\n", r->what,
				strerror(in.res.v[i]), strerror(out.res.v[i]));

		if (r->allowed) {
			cr_assert_eq(in.res.v[i], 0, "%s: %s", r->what, strerror(in.res.v[i]));
			continue;
		}
		/* Raw and ping must work without sluice, or the row proves nothing. */
		if (r->type == SOCK_RAW || r->proto == IPPROTO_ICMP || r->proto == IPPROTO_ICMPV6)
			cr_assert_eq(out.res.v[i], 0, "control %s: %s", r->what,
				     strerror(out.res.v[i]));
		if (out.res.v[i] == 0)
			cr_assert_eq(in.res.v[i], EPERM, "%s: %s", r->what, strerror(in.res.v[i]));
		else /* protocol not built into this kernel: refused either way */
			cr_assert_neq(in.res.v[i], 0, "%s allowed", r->what);
	}
}

/* -- deny set -- */

static struct cidr cidr(const char *s)
{
	struct cidr c = {};
	char ip[64];
	const char *slash = strchr(s, '/');

	cr_assert(slash && (size_t)(slash - s) < sizeof(ip));
	memcpy(ip, s, slash - s);
	ip[slash - s] = '\0';
	c.prefix = (unsigned)atoi(slash + 1);
	if (inet_pton(AF_INET, ip, c.addr) == 1)
		c.family = AF_INET;
	else if (inet_pton(AF_INET6, ip, c.addr) == 1)
		c.family = AF_INET6;
	else
		cr_assert_fail("bad cidr %s", s);
	return c;
}

static void set_deny(const char *cg, const char *const *list, unsigned n)
{
	struct cidr c[16];
	unsigned i;
	int r;

	cr_assert_leq(n, 16);
	for (i = 0; i < n; i++)
		c[i] = cidr(list[i]);
	r = bpfl_set_deny(T.b, bpfl_cgroup_id(cg), c, n);
	cr_assert_eq(r, 0, "bpfl_set_deny: %s", strerror(-r));
}

static void expect_connect_err(const char *cg, int type, const char *ip, uint16_t port, int err)
{
	struct client c;

	client_run(&c, cg, type, ip, port);
	cr_assert_eq(c.res.err, err, "connect %s:%u: got %s, want %s", ip, port,
		     strerror(c.res.err), strerror(err));
	client_end(&c);
}

/* Entries of cgroup cg in the pinned deny map of one family. */
static unsigned deny_count(const char *cg, int family)
{
	char path[PATH_MAX];
	unsigned char key[28], next[28];
	uint64_t id = bpfl_cgroup_id(cg), kid;
	unsigned n = 0, i;
	void *prev = NULL;
	int fd;

	snprintf(path, sizeof(path), "%s/maps/%s", T.pin_dir,
		 family == AF_INET ? "sluice_deny4" : "sluice_deny6");
	fd = bpf_obj_get(path);
	cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
	for (i = 0; i < 100000 && bpf_map_get_next_key(fd, prev, next) == 0; i++) {
		memcpy(key, next, sizeof(key));
		prev = key;
		memcpy(&kid, key + 4, 8);
		n += kid == id;
	}
	close(fd);
	return n;
}

Test(bpf_loader, deny_refuses_with_eacces)
{
	static const char *const deny[] = { "203.0.113.7/32", "169.254.0.0/16",
					    "::ffff:169.254.0.0/112", "2001:db8:dead::/48" };

	NEED_ROOT();
	set_deny(T.cg, deny, 4);
	expect_connect_err(T.cg, SOCK_STREAM, "203.0.113.7", 443, EACCES);
	expect_connect_err(T.cg, SOCK_STREAM, "169.254.169.254", 80, EACCES);
	expect_connect_err(T.cg, SOCK_STREAM, "::ffff:169.254.169.254", 80, EACCES);
	expect_connect_err(T.cg, SOCK_STREAM, "::ffff:203.0.113.7", 443, EACCES); /* v4 entry */
	expect_connect_err(T.cg, SOCK_STREAM, "2001:db8:dead::1", 443, EACCES);
	/* DNS is steered to sluiced whatever the address (a VPC resolver may sit
	 * in a denied range; it is never contacted): no refusal for port 53. */
	expect_connect_err(T.cg, SOCK_DGRAM, "169.254.169.253", 53, 0);
	/* other UDP to a denied address: refused */
	expect_connect_err(T.cg, SOCK_DGRAM, "169.254.169.254", 123, EACCES);
	/* Fast Open connects through sendto(): same refusal. */
	T.tfo = true;
	expect_connect_err(T.cg, SOCK_STREAM, "203.0.113.7", 443, EACCES);
	T.tfo = false;
	assert_quiet(T.lfd4, "v4 listener");
	assert_quiet(T.lfd6, "v6 listener");
	/* Neighbours of denied addresses are still intercepted. */
	check_redirect(T.cg, "203.0.113.8", "203.0.113.8", T.lfd4, 0, "203.0.113.8");
	check_redirect(T.cg, "2001:db8:beef::1", "2001:db8:beef::1", T.lfd6, 0,
		       "2001:db8:beef::1");
}

/* Only the v6 form is listed: a v4-mapped destination still matches it. */
Test(bpf_loader, deny_mapped_form_only)
{
	static const char *const deny[] = { "::ffff:169.254.0.0/112" };

	NEED_ROOT();
	set_deny(T.cg, deny, 1);
	expect_connect_err(T.cg, SOCK_STREAM, "::ffff:169.254.1.1", 80, EACCES);
	assert_quiet(T.lfd4, "v4 listener");
}

Test(bpf_loader, deny_is_per_sandbox)
{
	static const char *const deny[] = { "203.0.113.7/32", "::ffff:203.0.113.7/128" };

	NEED_ROOT();
	cr_assert_eq(mkdir(T.cg2, 0755), 0);
	cr_assert_eq(bpfl_attach_cgroup(T.b, "sb2", T.cg2), 0);
	set_deny(T.cg, deny, 2);
	expect_connect_err(T.cg, SOCK_STREAM, "203.0.113.7", 443, EACCES);
	check_redirect(T.cg2, "203.0.113.7", "203.0.113.7", T.lfd4, 0, "203.0.113.7");
	check_redirect(T.cg2, "::ffff:203.0.113.7", "::ffff:203.0.113.7", T.lfd4,
		       SLUICE_ORIG_F_V4MAPPED, "203.0.113.7");
}

Test(bpf_loader, deny_replace_and_clear)
{
	static const char *const a[] = { "203.0.113.7/32", "198.51.100.0/24" };
	/* Host bits set on purpose: the same /24 as above, not a new entry. */
	static const char *const b[] = { "198.51.100.77/24", "192.0.2.0/24", "2001:db8:bad::/48" };
	static const char *const sib[] = { "192.0.2.0/24" };
	struct cidr bad;

	NEED_ROOT();
	cr_assert_eq(mkdir(T.cg2, 0755), 0);
	cr_assert_eq(bpfl_attach_cgroup(T.b, "sb2", T.cg2), 0);
	set_deny(T.cg2, sib, 1);
	set_deny(T.cg, a, 2);
	cr_assert_eq(deny_count(T.cg, AF_INET), 2);
	expect_connect_err(T.cg, SOCK_STREAM, "203.0.113.7", 443, EACCES);
	expect_connect_err(T.cg, SOCK_STREAM, "198.51.100.9", 443, EACCES);

	set_deny(T.cg, b, 3);
	cr_assert_eq(deny_count(T.cg, AF_INET), 2);
	cr_assert_eq(deny_count(T.cg, AF_INET6), 1);
	check_redirect(T.cg, "203.0.113.7", "203.0.113.7", T.lfd4, 0, "203.0.113.7");
	expect_connect_err(T.cg, SOCK_STREAM, "198.51.100.9", 443, EACCES);
	expect_connect_err(T.cg, SOCK_STREAM, "192.0.2.1", 443, EACCES);
	expect_connect_err(T.cg, SOCK_STREAM, "2001:db8:bad::1", 443, EACCES);

	/* Bad input changes nothing. */
	bad = cidr("10.0.0.0/8");
	bad.prefix = 33;
	cr_assert_eq(bpfl_set_deny(T.b, bpfl_cgroup_id(T.cg), &bad, 1), -EINVAL);
	bad.family = AF_UNIX;
	cr_assert_eq(bpfl_set_deny(T.b, bpfl_cgroup_id(T.cg), &bad, 1), -EINVAL);
	cr_assert_eq(bpfl_set_deny(T.b, 0, NULL, 0), -EINVAL);
	cr_assert_eq(deny_count(T.cg, AF_INET), 2);

	cr_assert_eq(bpfl_clear_deny(T.b, bpfl_cgroup_id(T.cg)), 0);
	cr_assert_eq(deny_count(T.cg, AF_INET), 0);
	cr_assert_eq(deny_count(T.cg, AF_INET6), 0);
	check_redirect(T.cg, "192.0.2.1", "192.0.2.1", T.lfd4, 0, "192.0.2.1");
	/* The sibling's set is untouched. */
	cr_assert_eq(deny_count(T.cg2, AF_INET), 1);
	expect_connect_err(T.cg2, SOCK_STREAM, "192.0.2.1", 443, EACCES);
	/* Empty set = clear. */
	cr_assert_eq(bpfl_set_deny(T.b, bpfl_cgroup_id(T.cg2), NULL, 0), 0);
	cr_assert_eq(deny_count(T.cg2, AF_INET), 0);
}

/* -- UDP and DNS -- */

struct udp_arg {
	struct sockaddr_storage dst;
	socklen_t len;
	bool connect;
};

/* v[0] connect errno, v[1] send errno, v[2] recv errno; ss[0] reply source, ss[1] peer. */
static void udp_fn(const void *arg, struct jres *res)
{
	const struct udp_arg *a = arg;
	struct pollfd p;
	socklen_t l;
	ssize_t n;
	int fd;

	fd = socket(a->dst.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		_exit(4);
	if (a->connect && connect(fd, (const struct sockaddr *)&a->dst, a->len) < 0) {
		res->v[0] = errno;
		return;
	}
	if (a->connect)
		n = send(fd, "q", 1, 0);
	else
		n = sendto(fd, "q", 1, 0, (const struct sockaddr *)&a->dst, a->len);
	if (n != 1) {
		res->v[1] = n < 0 ? errno : EIO;
		return;
	}
	p = (struct pollfd){ .fd = fd, .events = POLLIN };
	if (poll(&p, 1, IO_TIMEOUT_MS) != 1) {
		res->v[2] = ETIMEDOUT;
		return;
	}
	l = sizeof(res->ss[0]);
	n = recvfrom(fd, res->data, sizeof(res->data) - 1, 0, (struct sockaddr *)&res->ss[0], &l);
	if (n < 0)
		res->v[2] = errno;
	l = sizeof(res->ss[1]);
	if (getpeername(fd, (struct sockaddr *)&res->ss[1], &l) < 0)
		res->v[3] = errno;
	close(fd);
}

/* The DNS listener answers one query: "q" in, "a" back to whoever sent it. */
static void dns_answer(int ufd)
{
	struct pollfd p = { .fd = ufd, .events = POLLIN };
	struct sockaddr_storage from;
	socklen_t l = sizeof(from);
	char buf[8];

	cr_assert_eq(poll(&p, 1, IO_TIMEOUT_MS), 1, "the DNS listener got no query");
	cr_assert_eq(recvfrom(ufd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &l), 1);
	cr_assert_eq(buf[0], 'q');
	cr_assert_eq(sendto(ufd, "a", 1, 0, (struct sockaddr *)&from, l), 1);
}

/* One DNS exchange from the sandbox to ip:port, answered by listener ufd. */
static void check_dns(const char *ip, uint16_t port, bool conn, int ufd, const char *src_ip,
		      uint16_t src_port)
{
	struct udp_arg a = { .connect = conn };
	struct job j;

	a.dst = sa(ip, port, &a.len);
	job_start(&j, T.cg, udp_fn, &a);
	dns_answer(ufd);
	job_wait(&j);
	cr_assert_eq(j.res.v[0], 0, "%s connect: %s", ip, strerror(j.res.v[0]));
	cr_assert_eq(j.res.v[1], 0, "%s send: %s", ip, strerror(j.res.v[1]));
	cr_assert_eq(j.res.v[2], 0, "%s recv: %s", ip, strerror(j.res.v[2]));
	cr_assert_str_eq(j.res.data, "a");
	assert_sa(&j.res.ss[0], src_ip, src_port);
	if (conn) {
		cr_assert_eq(j.res.v[3], 0);
		assert_sa(&j.res.ss[1], src_ip, src_port);
	}
}

Test(bpf_loader, udp_dns_sendto)
{
	NEED_ROOT();
	dns_listeners();
	check_dns("198.18.0.53", 53, false, T.dns_u4, "198.18.0.53", 53);
	check_dns("2001:db8::53", 53, false, T.dns_u6, "2001:db8::53", 53);
	check_dns("::ffff:198.18.0.53", 53, false, T.dns_u4, "::ffff:198.18.0.53", 53);
	assert_quiet(T.dns_u4, "v4 DNS listener");
	assert_quiet(T.dns_u6, "v6 DNS listener");
}

Test(bpf_loader, udp_dns_connected)
{
	NEED_ROOT();
	dns_listeners();
	check_dns("198.18.0.53", 53, true, T.dns_u4, "198.18.0.53", 53);
	check_dns("2001:db8::53", 53, true, T.dns_u6, "2001:db8::53", 53);
	check_dns("::ffff:198.18.0.53", 53, true, T.dns_u4, "::ffff:198.18.0.53", 53);
}

/*
 * The DNS listener addressed directly by a socket no sluice program steered
 * there is refused (only nested sandboxes' already-steered datagrams pass),
 * and nothing reaches it.
 */
Test(bpf_loader, udp_dns_listener_direct)
{
	static const char *const ips[] = { "127.0.0.1", "::1" };
	struct udp_arg a = {};
	struct job j;

	NEED_ROOT();
	dns_listeners();
	for (size_t i = 0; i < 2; i++) {
		a.dst = sa(ips[i], DNS_PORT, &a.len);
		a.connect = false;
		job_run(&j, T.cg, udp_fn, &a);
		cr_assert_eq(j.res.v[1], EACCES, "sendto %s:%d: %s", ips[i], DNS_PORT,
			     strerror(j.res.v[1]));
		a.connect = true;
		job_run(&j, T.cg, udp_fn, &a);
		cr_assert_eq(j.res.v[0], EACCES, "connect %s:%d: %s", ips[i], DNS_PORT,
			     strerror(j.res.v[0]));
	}
	assert_quiet(T.dns_u4, "v4 DNS listener");
	assert_quiet(T.dns_u6, "v6 DNS listener");
}

Test(bpf_loader, udp_other_ports_refused)
{
	static const char *const ips[] = { "198.18.0.9", "2001:db8::1", "::ffff:198.18.0.9" };
	struct udp_arg a = {};
	struct job j;
	size_t i;

	NEED_ROOT();
	dns_listeners();
	for (i = 0; i < 3; i++) {
		a.dst = sa(ips[i], 443, &a.len);
		a.connect = false;
		job_run(&j, T.cg, udp_fn, &a);
		cr_assert_eq(j.res.v[1], EACCES, "sendto %s:443: %s", ips[i], strerror(j.res.v[1]));
		a.connect = true;
		job_run(&j, T.cg, udp_fn, &a);
		cr_assert_eq(j.res.v[0], EACCES, "connect %s:443: %s", ips[i], strerror(j.res.v[0]));
	}
	/* Loopback UDP to some other port (a local service) is refused too. */
	a.dst = sa("127.0.0.1", 9999, &a.len);
	a.connect = false;
	job_run(&j, T.cg, udp_fn, &a);
	cr_assert_eq(j.res.v[1], EACCES);
	assert_quiet(T.dns_u4, "v4 DNS listener");
	assert_quiet(T.dns_u6, "v6 DNS listener");
}

/* DNS over TCP lands on the DNS listener (TCP), recorded like any redirect. */
static void check_tcp_dns(const char *ip, int lfd, uint32_t flags, const char *orig_ip)
{
	struct sluice_orig o;
	struct client c;
	int fd, r;

	client_run(&c, T.cg, SOCK_STREAM, ip, 53);
	cr_assert_eq(c.res.err, 0, "connect %s: %s", ip, strerror(c.res.err));
	assert_sa(&c.res.peer, ip, 53);
	fd = accept_one(lfd);
	r = bpfl_conn_take(T.b, fd, &o);
	cr_assert_eq(r, 0, "conn_take: %s", strerror(-r));
	assert_orig(&o, orig_ip, 53, flags, T.cg);
	close(fd);
	client_end(&c);
}

Test(bpf_loader, tcp_dns_to_dns_listener)
{
	NEED_ROOT();
	dns_listeners();
	check_tcp_dns("198.18.0.53", T.dns_t4, 0, "198.18.0.53");
	check_tcp_dns("2001:db8::53", T.dns_t6, 0, "2001:db8::53");
	check_tcp_dns("::ffff:198.18.0.53", T.dns_t4, SLUICE_ORIG_F_V4MAPPED, "198.18.0.53");
	assert_quiet(T.lfd4, "proxy listener");
	assert_quiet(T.lfd6, "proxy listener");
}

/* -- bind -- */

struct bind_case {
	int type;
	const char *ip;
	uint16_t port;
	int err; /* in the sandbox */
};

static const struct bind_case bind_cases[] = {
	{ SOCK_STREAM, "0.0.0.0", PORT, EACCES },     { SOCK_STREAM, "127.0.0.1", PORT, EACCES },
	{ SOCK_STREAM, "::", PORT, EACCES },	      { SOCK_STREAM, "::1", PORT, EACCES },
	{ SOCK_DGRAM, "0.0.0.0", DNS_PORT, EACCES },  { SOCK_DGRAM, "::", DNS_PORT, EACCES },
	{ SOCK_STREAM, "127.0.0.1", DNS_PORT, EACCES }, { SOCK_DGRAM, "127.0.0.1", PORT, EACCES },
	{ SOCK_STREAM, "0.0.0.0", 0, 0 },	      { SOCK_STREAM, "127.0.0.1", 18080, 0 },
	{ SOCK_DGRAM, "::", 0, 0 },		      { SOCK_DGRAM, "0.0.0.0", 18053, 0 },
};
#define NBIND (sizeof(bind_cases) / sizeof(bind_cases[0]))

static void bind_fn(const void *arg, struct jres *res)
{
	struct sockaddr_storage ss = {};
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
	socklen_t len;
	size_t i;
	int fd;

	(void)arg;
	for (i = 0; i < NBIND; i++) {
		memset(&ss, 0, sizeof(ss));
		if (inet_pton(AF_INET, bind_cases[i].ip, &s4->sin_addr) == 1) {
			s4->sin_family = AF_INET;
			s4->sin_port = htons(bind_cases[i].port);
			len = sizeof(*s4);
		} else {
			inet_pton(AF_INET6, bind_cases[i].ip, &s6->sin6_addr);
			s6->sin6_family = AF_INET6;
			s6->sin6_port = htons(bind_cases[i].port);
			len = sizeof(*s6);
		}
		fd = socket(ss.ss_family, bind_cases[i].type | SOCK_CLOEXEC, 0);
		if (fd < 0)
			_exit(4);
		res->v[i] = bind(fd, (struct sockaddr *)&ss, len) < 0 ? errno : 0;
		close(fd);
	}
}

Test(bpf_loader, bind_guards_listener_ports)
{
	struct job in, out;
	size_t i;

	NEED_ROOT();
	/* No listeners in the netns: without the hook every bind would succeed. */
	close(T.lfd4);
	T.lfd4 = -1;
	close(T.lfd6);
	T.lfd6 = -1;
	cr_assert_eq(mkdir(T.cg2, 0755), 0);
	job_run(&in, T.cg, bind_fn, NULL);
	job_run(&out, T.cg2, bind_fn, NULL);
	for (i = 0; i < NBIND; i++) {
		cr_assert_eq(out.res.v[i], 0, "control bind %s:%u: %s", bind_cases[i].ip,
			     bind_cases[i].port, strerror(out.res.v[i]));
		cr_assert_eq(in.res.v[i], bind_cases[i].err, "bind %s:%u: %s", bind_cases[i].ip,
			     bind_cases[i].port, strerror(in.res.v[i]));
	}
}

/* -- sluicectl run's capability drop -- */

static uint64_t status_hex(const char *status, const char *field)
{
	const char *p = strstr(status, field);

	cr_assert(p, "%s missing", field);
	return strtoull(p + strlen(field), NULL, 16);
}

Test(bpf_loader, run_drops_capabilities)
{
	static const int dropped[] = { CAP_NET_RAW,    CAP_NET_ADMIN,  CAP_SYS_ADMIN,
				       CAP_SYS_PTRACE, CAP_SYS_MODULE, CAP_BPF };
	char status[8192] = "";
	int rp[2], op[2], v[3], st;
	size_t got = 0, i;
	ssize_t n;
	pid_t pid;

	NEED_ROOT();
	cr_assert_eq(pipe2(rp, O_CLOEXEC), 0);
	cr_assert_eq(pipe(op), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int fd;

		alarm(30);
		close(rp[0]);
		close(op[0]);
		/* Outside the sandbox cgroup and netns: only the capabilities stop these. */
		v[0] = run_drop_privileges();
		fd = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP);
		v[1] = fd < 0 ? errno : 0;
		fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
		v[2] = fd < 0 ? errno : 0;
		if (write(rp[1], v, sizeof(v)) != sizeof(v))
			_exit(5);
		/* After exec (root gets its bounding set back on exec: it must stay dropped). */
		if (dup2(op[1], 1) < 0)
			_exit(6);
		execl("/bin/cat", "cat", "/proc/self/status", (char *)NULL);
		_exit(127);
	}
	close(rp[1]);
	close(op[1]);
	cr_assert_eq(read_full(rp[0], v, sizeof(v)), 0);
	close(rp[0]);
	while (got < sizeof(status) - 1 &&
	       (n = read(op[0], status + got, sizeof(status) - 1 - got)) > 0)
		got += n;
	close(op[0]);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x", st);
	cr_assert_eq(v[0], 0, "drop: %s", strerror(-v[0]));
	cr_assert_eq(v[1], EPERM, "raw socket: %s", strerror(v[1]));
	cr_assert_eq(v[2], EPERM, "packet socket: %s", strerror(v[2]));
	cr_assert(strstr(status, "NoNewPrivs:\t1"), "no_new_privs not set:\n%s", status);
	for (i = 0; i < sizeof(dropped) / sizeof(dropped[0]); i++) {
		uint64_t bit = 1ull << dropped[i];

		cr_assert_eq(status_hex(status, "CapEff:\t") & bit, 0, "cap %d effective", dropped[i]);
		cr_assert_eq(status_hex(status, "CapPrm:\t") & bit, 0, "cap %d permitted", dropped[i]);
		cr_assert_eq(status_hex(status, "CapInh:\t") & bit, 0, "cap %d inheritable",
			     dropped[i]);
		cr_assert_eq(status_hex(status, "CapBnd:\t") & bit, 0, "cap %d bounding", dropped[i]);
		cr_assert_eq(status_hex(status, "CapAmb:\t") & bit, 0, "cap %d ambient", dropped[i]);
	}
	/* Still root otherwise. */
	cr_assert_neq(status_hex(status, "CapEff:\t") & (1ull << CAP_CHOWN), 0);
	cr_assert_neq(status_hex(status, "CapEff:\t") & (1ull << CAP_DAC_OVERRIDE), 0);
}

/* -- UDP destinations allowed by policy (network.udp) -- */

#define UDP_PORT 15054

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

/* One allow entry: cidr text, one port range (add more with uallow_range). */
static struct bpfl_udp_allow uallow(const char *c, uint16_t lo, uint16_t hi)
{
	struct bpfl_udp_allow a = { .cidr = cidr(c), .nranges = 1 };

	a.ranges[0].lo = lo;
	a.ranges[0].hi = hi;
	return a;
}

static void uallow_range(struct bpfl_udp_allow *a, uint16_t lo, uint16_t hi)
{
	cr_assert_lt(a->nranges, SLUICE_UDP_RANGES_MAX);
	a->ranges[a->nranges].lo = lo;
	a->ranges[a->nranges].hi = hi;
	a->nranges++;
}

static void set_uallow(const char *cg, const struct bpfl_udp_allow *v, unsigned n)
{
	int r = bpfl_set_udp_allow(T.b, bpfl_cgroup_id(cg), v, n);

	cr_assert_eq(r, 0, "bpfl_set_udp_allow: %s", strerror(-r));
}

static int uallow_map(int family)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/maps/%s", T.pin_dir,
		 family == AF_INET ? "sluice_uallow4" : "sluice_uallow6");
	fd = bpf_obj_get(path);
	cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
	return fd;
}

/* Entries of cgroup cg in the pinned UDP allow trie of one family. */
static unsigned uallow_count(const char *cg, int family)
{
	unsigned char key[28], next[28];
	uint64_t id = bpfl_cgroup_id(cg), kid;
	unsigned n = 0, i;
	void *prev = NULL;
	int fd = uallow_map(family);

	for (i = 0; i < 100000 && bpf_map_get_next_key(fd, prev, next) == 0; i++) {
		memcpy(key, next, sizeof(key));
		prev = key;
		memcpy(&kid, key + 4, 8);
		n += kid == id;
	}
	close(fd);
	return n;
}

/*
 * The entry of cgroup cg for exactly CIDR c (host bits ignored), found by
 * walking the keys (a lookup alone could answer with a covering prefix).
 */
static bool uallow_get(const char *cg, const char *c, struct sluice_udp_allow_val *ret)
{
	struct cidr x = cidr(c);
	unsigned char want[28] = {}, key[28], next[28];
	uint64_t id = bpfl_cgroup_id(cg);
	unsigned alen = x.family == AF_INET ? 4 : 16, ksz = 12 + alen, i;
	uint32_t plen = 64 + x.prefix;
	void *prev = NULL;
	bool found = false;
	int fd = uallow_map(x.family);

	memcpy(want, &plen, 4);
	memcpy(want + 4, &id, 8);
	for (i = 0; i < alen; i++) {
		unsigned bits = x.prefix > i * 8 ? x.prefix - i * 8 : 0;

		want[12 + i] = bits >= 8 ? x.addr[i] : x.addr[i] & (unsigned char)(0xff00 >> bits);
	}
	for (i = 0; i < 100000 && bpf_map_get_next_key(fd, prev, next) == 0; i++) {
		memcpy(key, next, sizeof(key));
		prev = key;
		if (!memcmp(key, want, ksz)) {
			found = true;
			break;
		}
	}
	if (found)
		cr_assert_eq(bpf_map_lookup_elem(fd, want, ret), 0);
	close(fd);
	return found;
}

/* The entry for c exists and holds exactly these ranges ({lo, hi} pairs). */
static void assert_uallow(const char *cg, const char *c, unsigned n, const uint16_t (*r)[2])
{
	struct sluice_udp_allow_val v;
	unsigned i;

	cr_assert(uallow_get(cg, c, &v), "no UDP allow entry %s", c);
	cr_assert_eq(v.nranges, n, "%s: %u ranges, want %u", c, v.nranges, n);
	for (i = 0; i < n; i++) {
		cr_assert_eq(v.r[i].lo, r[i][0], "%s range %u lo %u", c, i, v.r[i].lo);
		cr_assert_eq(v.r[i].hi, r[i][1], "%s range %u hi %u", c, i, v.r[i].hi);
	}
}

Test(bpf_loader, udp_allow_replace_and_clear)
{
	static const uint16_t r123[][2] = { { 123, 123 } };
	static const uint16_t r53[][2] = { { 53, 53 } };
	static const uint16_t rmix[][2] = { { 1000, 2000 }, { 4433, 4433 } };
	static const uint16_t rhi[][2] = { { 60000, 61000 } };
	static const uint16_t r5000[][2] = { { 5000, 5001 } };
	static const uint16_t rall[][2] = { { 1, 65535 } };
	static const char *const deny[] = { "203.0.113.0/24" };
	struct bpfl_udp_allow a[3], b[2], sib, bad[2], *many;
	struct {
		struct bpfl_udp_allow a;
		uint16_t extra[2]; /* a 17th range, for an implementation that reads one */
	} over;
	uint64_t id;
	unsigned i;

	NEED_ROOT();
	id = bpfl_cgroup_id(T.cg);
	cr_assert_eq(mkdir(T.cg2, 0755), 0);
	sib = uallow("192.0.2.0/24", 53, 53);
	set_uallow(T.cg2, &sib, 1);
	set_deny(T.cg, deny, 1);

	a[0] = uallow("203.0.113.7/32", 123, 123);
	a[1] = uallow("198.51.100.0/24", 1000, 2000);
	uallow_range(&a[1], 4433, 4433);
	a[2] = uallow("2001:db8::/64", 60000, 61000);
	set_uallow(T.cg, a, 3);
	cr_assert_eq(uallow_count(T.cg, AF_INET), 2);
	cr_assert_eq(uallow_count(T.cg, AF_INET6), 1);
	assert_uallow(T.cg, "203.0.113.7/32", 1, r123);
	assert_uallow(T.cg, "198.51.100.0/24", 2, rmix);
	assert_uallow(T.cg, "2001:db8::/64", 1, rhi);

	/* Replace: host bits set on purpose (the same /24, new ranges), a new v6 prefix. */
	b[0] = uallow("198.51.100.77/24", 5000, 5001);
	b[1] = uallow("2001:db8:1::/48", 1, 65535);
	set_uallow(T.cg, b, 2);
	cr_assert_eq(uallow_count(T.cg, AF_INET), 1);
	cr_assert_eq(uallow_count(T.cg, AF_INET6), 1);
	cr_assert_not(uallow_get(T.cg, "203.0.113.7/32", &(struct sluice_udp_allow_val){}));
	cr_assert_not(uallow_get(T.cg, "2001:db8::/64", &(struct sluice_udp_allow_val){}));
	assert_uallow(T.cg, "198.51.100.0/24", 1, r5000);
	assert_uallow(T.cg, "2001:db8:1::/48", 1, rall);
	/* The sibling's entries and this sandbox's deny set are untouched. */
	cr_assert_eq(uallow_count(T.cg2, AF_INET), 1);
	assert_uallow(T.cg2, "192.0.2.0/24", 1, r53);
	cr_assert_eq(deny_count(T.cg, AF_INET), 1);

	/* Bad input changes nothing, not even the valid entry before the bad one. */
	bad[0] = uallow("10.9.0.0/16", 7, 7);
	bad[1] = uallow("10.10.0.0/16", 7, 7);
	bad[1].nranges = 0;
	cr_assert_eq(bpfl_set_udp_allow(T.b, id, bad, 2), -EINVAL, "nranges 0");
	bad[1].nranges = SLUICE_UDP_RANGES_MAX + 1;
	cr_assert_eq(bpfl_set_udp_allow(T.b, id, bad, 2), -EINVAL, "nranges > max");
	/* Same, with a valid range where a 17th would be read: only the count refuses it. */
	over.a = uallow("10.9.0.0/16", 7, 7);
	over.a.nranges = SLUICE_UDP_RANGES_MAX + 1;
	over.extra[0] = 1;
	over.extra[1] = 2;
	cr_assert_eq(bpfl_set_udp_allow(T.b, id, &over.a, 1), -EINVAL, "nranges > max, alone");
	bad[1] = uallow("10.10.0.0/16", 9, 8);
	cr_assert_eq(bpfl_set_udp_allow(T.b, id, bad, 2), -EINVAL, "lo > hi");
	bad[1] = uallow("10.10.0.0/16", 8, 9);
	uallow_range(&bad[1], 100, 99);
	cr_assert_eq(bpfl_set_udp_allow(T.b, id, bad, 2), -EINVAL, "second range lo > hi");
	bad[1] = uallow("10.10.0.0/16", 7, 7);
	bad[1].cidr.prefix = 33;
	cr_assert_eq(bpfl_set_udp_allow(T.b, id, bad, 2), -EINVAL, "prefix 33");
	bad[1].cidr.family = AF_UNIX;
	cr_assert_eq(bpfl_set_udp_allow(T.b, id, bad, 2), -EINVAL, "family");
	cr_assert_eq(bpfl_set_udp_allow(T.b, 0, bad, 1), -EINVAL, "cgroup 0");
	cr_assert_eq(bpfl_set_udp_allow(T.b, id, NULL, 1), -EINVAL, "no entries");
	cr_assert_eq(bpfl_set_udp_allow(NULL, id, bad, 1), -EINVAL, "no loader");
	/* One entry over the limit, every one of them valid. */
	many = calloc(BPFL_UDP_ALLOW_MAX + 1, sizeof(*many));
	cr_assert_not_null(many);
	for (i = 0; i <= BPFL_UDP_ALLOW_MAX; i++) {
		many[i] = uallow("10.0.0.0/24", 7, 7);
		many[i].cidr.addr[1] = (unsigned char)(i >> 8);
		many[i].cidr.addr[2] = (unsigned char)i;
	}
	cr_assert_eq(bpfl_set_udp_allow(T.b, id, many, BPFL_UDP_ALLOW_MAX + 1), -EINVAL,
		     "n > BPFL_UDP_ALLOW_MAX");
	free(many);
	cr_assert_eq(uallow_count(T.cg, AF_INET), 1);
	cr_assert_eq(uallow_count(T.cg, AF_INET6), 1);
	cr_assert_not(uallow_get(T.cg, "10.9.0.0/16", &(struct sluice_udp_allow_val){}));
	assert_uallow(T.cg, "198.51.100.0/24", 1, r5000);
	/* The most ranges an entry holds is fine. */
	bad[0] = uallow("10.9.0.0/16", 1, 1);
	for (i = 1; i < SLUICE_UDP_RANGES_MAX; i++)
		uallow_range(&bad[0], (uint16_t)(i * 10), (uint16_t)(i * 10 + 5));
	set_uallow(T.cg, bad, 1);
	cr_assert_eq(uallow_count(T.cg, AF_INET), 1);
	cr_assert_eq(uallow_count(T.cg, AF_INET6), 0);
	{
		struct sluice_udp_allow_val v;

		cr_assert(uallow_get(T.cg, "10.9.0.0/16", &v));
		cr_assert_eq(v.nranges, SLUICE_UDP_RANGES_MAX);
		cr_assert_eq(v.r[SLUICE_UDP_RANGES_MAX - 1].lo, (SLUICE_UDP_RANGES_MAX - 1) * 10);
		cr_assert_eq(v.r[SLUICE_UDP_RANGES_MAX - 1].hi, (SLUICE_UDP_RANGES_MAX - 1) * 10 + 5);
	}

	/* Clear: this sandbox's entries go, the sibling's and the deny set stay. */
	cr_assert_eq(bpfl_clear_udp_allow(T.b, id), 0);
	cr_assert_eq(uallow_count(T.cg, AF_INET), 0);
	cr_assert_eq(uallow_count(T.cg, AF_INET6), 0);
	cr_assert_eq(bpfl_clear_udp_allow(T.b, id), 0, "clearing nothing is fine");
	cr_assert_eq(uallow_count(T.cg2, AF_INET), 1);
	cr_assert_eq(deny_count(T.cg, AF_INET), 1);
	cr_assert_eq(bpfl_clear_udp_allow(T.b, 0), -EINVAL);
	/* Empty set = clear. */
	cr_assert_eq(bpfl_set_udp_allow(T.b, bpfl_cgroup_id(T.cg2), NULL, 0), 0);
	cr_assert_eq(uallow_count(T.cg2, AF_INET), 0);
}

Test(bpf_loader, udp_flow_map_empty)
{
	struct sockaddr_in s4 = { .sin_family = AF_INET, .sin_port = htons(40000) };
	struct sockaddr_in6 s6 = { .sin6_family = AF_INET6, .sin6_port = htons(40000),
				   .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	struct sockaddr su = { .sa_family = AF_UNIX };
	struct sluice_orig o;

	NEED_ROOT();
	s4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(bpfl_udp_flow_lookup(T.b, 1, (struct sockaddr *)&s4, &o), -ENOENT);
	cr_assert_eq(bpfl_udp_flow_lookup(T.b, 1, (struct sockaddr *)&s6, &o), -ENOENT);
	cr_assert_eq(bpfl_udp_flow_forget(T.b, 1, (struct sockaddr *)&s4), 0);
	cr_assert_eq(bpfl_udp_flow_forget(T.b, 1, (struct sockaddr *)&s6), 0);
	cr_assert_eq(bpfl_udp_flow_lookup(T.b, 1, &su, &o), -EAFNOSUPPORT);
	cr_assert_eq(bpfl_udp_flow_forget(T.b, 1, &su), -EAFNOSUPPORT);
	cr_assert_eq(bpfl_udp_flow_lookup(T.b, 1, NULL, &o), -EINVAL);
	cr_assert_eq(bpfl_udp_flow_lookup(T.b, 1, (struct sockaddr *)&s4, NULL), -EINVAL);
	cr_assert_eq(bpfl_udp_flow_lookup(NULL, 1, (struct sockaddr *)&s4, &o), -EINVAL);
	cr_assert_eq(bpfl_udp_flow_forget(T.b, 1, NULL), -EINVAL);
}

/* The daemon restarted with the UDP relay on (--udp-port): reopen, attach again. */
static void relay_on(void)
{
	struct bpfl_opts o = { .pin_dir = T.pin_dir,
			       .listen_port = PORT,
			       .dns_port = DNS_PORT,
			       .udp_port = UDP_PORT };
	int r;

	bpfl_close(T.b);
	T.b = NULL;
	inet_pton(AF_INET, "127.0.0.1", &o.listen_addr4);
	o.listen_addr6 = in6addr_loopback;
	r = bpfl_open(&o, &T.b);
	cr_assert_eq(r, 0, "bpfl_open: %s", strerror(-r));
	cr_assert_eq(bpfl_attach_cgroup(T.b, "sb", T.cg), 0);
}

static uint64_t netns_cookie(int fd)
{
	uint64_t c = 0;
	socklen_t l = sizeof(c);

	cr_assert_eq(getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &c, &l), 0, "%s",
		     strerror(errno));
	return c;
}

/*
 * One datagram from the sandbox to ip:port, read by relay socket ufd: the
 * kernel record for its source names the destination, the relay's answer
 * shows the destination as its source; forget removes the record.
 */
static void check_relay(const char *ip, uint16_t port, bool conn, int ufd, uint32_t flags,
			const char *orig_ip)
{
	struct udp_arg a = { .connect = conn };
	struct pollfd p = { .fd = ufd, .events = POLLIN };
	struct sockaddr_storage from;
	socklen_t l = sizeof(from);
	struct sluice_orig o;
	char buf[8];
	struct job j;
	int r;

	a.dst = sa(ip, port, &a.len);
	job_start(&j, T.cg, udp_fn, &a);
	cr_assert_eq(poll(&p, 1, IO_TIMEOUT_MS), 1, "the relay got nothing for %s", ip);
	cr_assert_eq(recvfrom(ufd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &l), 1);
	cr_assert_eq(buf[0], 'q');
	r = bpfl_udp_flow_lookup(T.b, netns_cookie(ufd), (struct sockaddr *)&from, &o);
	cr_assert_eq(r, 0, "udp flow lookup %s: %s", ip, strerror(-r));
	assert_orig(&o, orig_ip, port, flags, T.cg);
	cr_assert_eq(bpfl_udp_flow_lookup(T.b, netns_cookie(ufd) + 1, (struct sockaddr *)&from, &o),
		     -ENOENT, "another netns' relay must not see this flow");
	cr_assert_eq(sendto(ufd, "a", 1, 0, (struct sockaddr *)&from, l), 1);
	job_wait(&j);
	cr_assert_eq(j.res.v[0], 0, "%s connect: %s", ip, strerror(j.res.v[0]));
	cr_assert_eq(j.res.v[1], 0, "%s send: %s", ip, strerror(j.res.v[1]));
	cr_assert_eq(j.res.v[2], 0, "%s recv: %s", ip, strerror(j.res.v[2]));
	cr_assert_str_eq(j.res.data, "a");
	assert_sa(&j.res.ss[0], ip, port);
	if (conn) {
		cr_assert_eq(j.res.v[3], 0);
		assert_sa(&j.res.ss[1], ip, port);
	}
	cr_assert_eq(bpfl_udp_flow_forget(T.b, netns_cookie(ufd), (struct sockaddr *)&from), 0);
	cr_assert_eq(bpfl_udp_flow_lookup(T.b, netns_cookie(ufd), (struct sockaddr *)&from, &o),
		     -ENOENT);
}

Test(bpf_loader, udp_allowed_steered_to_relay)
{
	struct bpfl_udp_allow a[2];
	int u4, u6;

	NEED_ROOT();
	relay_on();
	u4 = sock_in_ns("127.0.0.1", UDP_PORT, SOCK_DGRAM);
	u6 = sock_in_ns("::1", UDP_PORT, SOCK_DGRAM);
	a[0] = uallow("198.18.0.0/16", 123, 123);
	uallow_range(&a[0], 5000, 5010);
	a[1] = uallow("2001:db8::/64", 60000, 61000);
	set_uallow(T.cg, a, 2);
	check_relay("198.18.0.7", 123, false, u4, SLUICE_ORIG_F_UDP_RELAY, "198.18.0.7");
	check_relay("198.18.0.8", 5005, true, u4, SLUICE_ORIG_F_UDP_RELAY, "198.18.0.8");
	check_relay("2001:db8::7", 60001, false, u6, SLUICE_ORIG_F_UDP_RELAY, "2001:db8::7");
	check_relay("2001:db8::8", 61000, true, u6, SLUICE_ORIG_F_UDP_RELAY, "2001:db8::8");
	check_relay("::ffff:198.18.0.9", 123, false, u4,
		    SLUICE_ORIG_F_UDP_RELAY | SLUICE_ORIG_F_V4MAPPED, "198.18.0.9");
	assert_quiet(u4, "v4 relay");
	assert_quiet(u6, "v6 relay");
	assert_quiet(T.lfd4, "proxy listener");
	close(u4);
	close(u6);
}

struct udp_multi_arg {
	struct sockaddr_storage dst[4];
	socklen_t len[4];
	int n;
};

/* One socket sends "q" to each destination in turn; v[i] = errno of sendto i. */
static void udp_multi_fn(const void *arg, struct jres *res)
{
	const struct udp_multi_arg *a = arg;
	int fd, i;

	fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		_exit(4);
	for (i = 0; i < a->n; i++)
		res->v[i] = sendto(fd, "q", 1, 0, (const struct sockaddr *)&a->dst[i], a->len[i]) == 1
				    ? 0
				    : errno;
	close(fd);
}

static int relay_drain(int ufd)
{
	struct pollfd p = { .fd = ufd, .events = POLLIN };
	char buf[8];
	int n = 0;

	while (poll(&p, 1, 200) == 1 && recv(ufd, buf, sizeof(buf), 0) >= 0)
		n++;
	return n;
}

Test(bpf_loader, udp_relay_refusals)
{
	static const char *const deny[] = { "198.18.0.66/32" };
	struct udp_multi_arg m = {};
	struct bpfl_udp_allow a = uallow("198.18.0.0/16", 123, 123);
	struct job j;
	int u4;

	NEED_ROOT();
	relay_on();
	u4 = sock_in_ns("127.0.0.1", UDP_PORT, SOCK_DGRAM);
	cr_assert_eq(mkdir(T.cg2, 0755), 0);
	cr_assert_eq(bpfl_attach_cgroup(T.b, "sb2", T.cg2), 0);
	set_uallow(T.cg, &a, 1);
	set_deny(T.cg, deny, 1);

	/* (v4-mapped: the socket is AF_INET6, see udp_multi_fn) */
	m.dst[0] = sa("::ffff:198.18.0.7", 124, &m.len[0]); /* port not allowed */
	m.dst[1] = sa("::ffff:198.18.0.66", 123, &m.len[1]); /* denied: deny wins */
	m.dst[2] = sa("::ffff:198.19.0.1", 123, &m.len[2]); /* outside the prefix */
	m.n = 3;
	job_run(&j, T.cg, udp_multi_fn, &m);
	cr_assert_eq(j.res.v[0], EACCES, "port 124: %s", strerror(j.res.v[0]));
	cr_assert_eq(j.res.v[1], EACCES, "denied address: %s", strerror(j.res.v[1]));
	cr_assert_eq(j.res.v[2], EACCES, "other prefix: %s", strerror(j.res.v[2]));
	cr_assert_eq(relay_drain(u4), 0);

	/* One destination per socket: the first allowed one pins it, DNS included. */
	m.dst[0] = sa("::ffff:198.18.0.7", 123, &m.len[0]);
	m.dst[1] = sa("::ffff:198.18.0.8", 123, &m.len[1]);
	m.dst[2] = sa("::ffff:198.18.0.53", 53, &m.len[2]);
	m.dst[3] = sa("::ffff:198.18.0.7", 123, &m.len[3]);
	m.n = 4;
	job_run(&j, T.cg, udp_multi_fn, &m);
	cr_assert_eq(j.res.v[0], 0, "first: %s", strerror(j.res.v[0]));
	cr_assert_eq(j.res.v[1], EACCES, "second destination: %s", strerror(j.res.v[1]));
	cr_assert_eq(j.res.v[2], EACCES, "DNS from a pinned socket: %s", strerror(j.res.v[2]));
	cr_assert_eq(j.res.v[3], 0, "the pinned destination again: %s", strerror(j.res.v[3]));
	cr_assert_eq(relay_drain(u4), 2);

	/* The sibling sandbox has no network.udp: refused. */
	m.dst[0] = sa("::ffff:198.18.0.7", 123, &m.len[0]);
	m.n = 1;
	job_run(&j, T.cg2, udp_multi_fn, &m);
	cr_assert_eq(j.res.v[0], EACCES, "sibling: %s", strerror(j.res.v[0]));

	/* Rule gone: refused at once. */
	cr_assert_eq(bpfl_clear_udp_allow(T.b, bpfl_cgroup_id(T.cg)), 0);
	job_run(&j, T.cg, udp_multi_fn, &m);
	cr_assert_eq(j.res.v[0], EACCES, "after clear: %s", strerror(j.res.v[0]));
	cr_assert_eq(relay_drain(u4), 0);
	close(u4);
}

/* --udp-port 0: no relay, so allowed destinations are refused too (fail closed). */
Test(bpf_loader, udp_allowed_without_relay_refused)
{
	struct bpfl_udp_allow a = uallow("198.18.0.0/16", 123, 123);
	struct udp_arg u = {};
	struct job j;

	NEED_ROOT();
	set_uallow(T.cg, &a, 1);
	u.dst = sa("198.18.0.7", 123, &u.len);
	job_run(&j, T.cg, udp_fn, &u);
	cr_assert_eq(j.res.v[1], EACCES, "sendto: %s", strerror(j.res.v[1]));
	u.connect = true;
	job_run(&j, T.cg, udp_fn, &u);
	cr_assert_eq(j.res.v[0], EACCES, "connect: %s", strerror(j.res.v[0]));
}

/* -- sandbox = cgroup subtree -- */

static uint64_t orig_cgroup_of_connect(const char *cg, const char *ip)
{
	struct sluice_orig o;
	struct client c;
	int fd, r;

	client_run(&c, cg, SOCK_STREAM, ip, 443);
	cr_assert_eq(c.res.err, 0, "connect %s from %s: %s", ip, cg, strerror(c.res.err));
	fd = accept_one(strchr(ip, ':') ? T.lfd6 : T.lfd4);
	r = bpfl_conn_take(T.b, fd, &o);
	cr_assert_eq(r, 0, "conn_take: %s", strerror(-r));
	close(fd);
	client_end(&c);
	return o.cgroup_id;
}

/*
 * A registered sandbox cgroup owns its descendants: a socket in a child
 * cgroup is recorded with the innermost registered ancestor's id, and that
 * sandbox's deny set applies to it. Unregistered: the socket's own cgroup,
 * as before (sluiced then closes such connections).
 */
Test(bpf_loader, registered_sandbox_owns_descendants)
{
	static const char *const deny[] = { "198.18.0.77/32" };
	uint64_t outer = bpfl_cgroup_id(T.cg), inner;

	NEED_ROOT();
	cr_assert_eq(mkdir(T.cg_inner, 0755), 0);
	inner = bpfl_cgroup_id(T.cg_inner);
	cr_assert_eq(orig_cgroup_of_connect(T.cg_inner, "198.18.0.9"), inner, "unregistered");
	cr_assert_eq(bpfl_sandbox_register(T.b, outer, true), 0);
	cr_assert_eq(orig_cgroup_of_connect(T.cg_inner, "198.18.0.9"), outer, "child of outer");
	cr_assert_eq(orig_cgroup_of_connect(T.cg_inner, "2001:db8::1"), outer, "child, IPv6");
	cr_assert_eq(orig_cgroup_of_connect(T.cg, "198.18.0.9"), outer, "outer itself");
	set_deny(T.cg, deny, 1);
	expect_connect_err(T.cg_inner, SOCK_STREAM, "198.18.0.77", 443, EACCES);
	/* the innermost registered cgroup wins: inner has no deny entries */
	cr_assert_eq(bpfl_sandbox_register(T.b, inner, true), 0);
	cr_assert_eq(orig_cgroup_of_connect(T.cg_inner, "198.18.0.77"), inner, "inner registered");
	cr_assert_eq(bpfl_sandbox_register(T.b, inner, false), 0);
	cr_assert_eq(bpfl_sandbox_register(T.b, inner, false), 0, "forgetting twice is fine");
	cr_assert_eq(bpfl_sandbox_register(T.b, 0, true), -EINVAL);
	cr_assert_eq(bpfl_sandbox_register(T.b, outer, false), 0);
	cr_assert_eq(orig_cgroup_of_connect(T.cg_inner, "198.18.0.9"), inner, "outer forgotten");
	cr_assert_eq(bpfl_clear_deny(T.b, outer), 0);
}
