// SPDX-License-Identifier: MIT
/* Unit tests for user/nft.c. Root only (skip with a message otherwise).
 * Every test builds its own network namespace (unshared by a helper thread,
 * held by an fd: it disappears with the test process, so nothing is left
 * behind even on a crash) and proves the rules with real loopback traffic
 * inside it. The "host" mode tests pretend that private netns is the host
 * and use a test cgroup under the cgroup2 root, removed at the end. The
 * caller's own netns is never touched. */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "nft.h"
#include "sandbox.h"
/* Included to build deny sets the policy API would refuse (metadata
 * removed) for the update test. */
#include "../../user/denyset.c"

#define LISTENER_PORT 15001
#define DNS_PORT 15053
#define OTHER_PORT 8080
#define CONNECT_TIMEOUT_MS 300

static void need_root(void)
{
	if (geteuid() != 0)
		cr_skip_test("needs root (network namespaces, nftables)");
}

static void unique_id(char *buf, size_t len, const char *prefix)
{
	unsigned int r = 0;

	if (getrandom(&r, sizeof(r), 0) != sizeof(r))
		r = (unsigned int)rand();
	snprintf(buf, len, "%s%d_%08x", prefix, (int)getpid(), r);
}

struct ns_job {
	int fd;
	int err;
};

/* Unshare a netns on a throwaway thread, bring lo up, put the fake
 * metadata addresses on lo (so only nftables stands between a connect and
 * success), and hand back an fd holding it. */
static void *ns_thread(void *arg)
{
	struct ns_job *j = arg;
	struct ifreq ifr = { 0 };
	int s;

	if (unshare(CLONE_NEWNET)) {
		j->err = errno;
		return NULL;
	}
	s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr)) {
		j->err = errno;
		return NULL;
	}
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(s, SIOCSIFFLAGS, &ifr)) {
		j->err = errno;
		return NULL;
	}
	close(s);
	/* system() forks from this thread: the child runs in this netns. */
	if (system("ip addr add 169.254.169.254/32 dev lo && "
		   "ip -6 addr add fd00:ec2::254/128 dev lo nodad")) {
		j->err = EIO;
		return NULL;
	}
	j->fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	if (j->fd < 0)
		j->err = errno;
	return NULL;
}

/* A fresh netns: fd and a path ("/proc/self/fd/N") nft_* can open. */
static int netns_new(char *path, size_t len)
{
	struct ns_job j = { .fd = -1 };
	pthread_t th;

	cr_assert_eq(pthread_create(&th, NULL, ns_thread, &j), 0);
	pthread_join(th, NULL);
	cr_assert_eq(j.err, 0, "netns setup: %s", strerror(j.err));
	snprintf(path, len, "/proc/self/fd/%d", j.fd);
	return j.fd;
}

static void enter_netns(int fd)
{
	cr_assert_eq(setns(fd, CLONE_NEWNET), 0, "setns: %s", strerror(errno));
}

static socklen_t make_addr(struct sockaddr_storage *ss, const char *ip, uint16_t port)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, ip, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		return sizeof(*sin);
	}
	cr_assert_eq(inet_pton(AF_INET6, ip, &sin6->sin6_addr), 1, "bad address %s", ip);
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(port);
	return sizeof(*sin6);
}

/* A TCP listener in the calling thread's netns. */
static int listen_on(const char *ip, uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t sl = make_addr(&ss, ip, port);
	int one = 1, fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	cr_assert_eq(bind(fd, (struct sockaddr *)&ss, sl), 0, "bind %s:%u: %s", ip, port,
		     strerror(errno));
	cr_assert_eq(listen(fd, 64), 0);
	return fd;
}

/* 0 when a TCP connect completes within the timeout, else -errno
 * (-ETIMEDOUT when nothing came back: the SYN was dropped). */
static int try_connect(const char *ip, uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t sl = make_addr(&ss, ip, port), el = sizeof(int);
	struct pollfd p;
	int fd, ret, e = 0;

	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (!connect(fd, (struct sockaddr *)&ss, sl)) {
		close(fd);
		return 0;
	}
	if (errno != EINPROGRESS) {
		ret = -errno;
		close(fd);
		return ret;
	}
	p = (struct pollfd){ .fd = fd, .events = POLLOUT };
	ret = poll(&p, 1, CONNECT_TIMEOUT_MS);
	if (ret == 0) {
		close(fd);
		return -ETIMEDOUT;
	}
	getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el);
	close(fd);
	return -e;
}

static struct denyset *default_deny(void)
{
	struct denyset *d = NULL;
	char err[256] = "";

	cr_assert_eq(ds_build(NULL, &d, err, sizeof(err)), 0, "%s", err);
	return d;
}

/* The default set without the entry holding 169.254.169.254. */
static struct denyset *deny_without_metadata(void)
{
	struct denyset *d = default_deny();
	struct ds_list *l = &d->v4;

	for (unsigned i = 0; i < l->n; i++) {
		if (!strcmp(ds_cidr_str(&l->v[i], (char[64]){ 0 }, 64), "169.254.0.0/16")) {
			free((char *)l->v[i].reason);
			memmove(&l->v[i], &l->v[i + 1], (l->n - i - 1) * sizeof(l->v[0]));
			l->n--;
			return d;
		}
	}
	cr_assert_fail("169.254.0.0/16 not in the default set");
	return NULL;
}

static void cfg_init(struct nft_sandbox_cfg *c, const char *netns_path, const char *id,
		     const struct denyset *d)
{
	memset(c, 0, sizeof(*c));
	c->netns_path = netns_path;
	c->sandbox_id = id;
	c->tcp_ports[0] = LISTENER_PORT;
	c->ntcp = 1;
	c->udp_ports[0] = DNS_PORT;
	c->nudp = 1;
	c->deny = d;
}

static void apply_ok(const struct nft_sandbox_cfg *c)
{
	char err[256] = "";
	int ret = nft_sandbox_apply(c, err, sizeof(err));

	cr_assert_eq(ret, 0, "apply: %d %s", ret, err);
}

static uint64_t deny_packets(const struct nft_sandbox_cfg *c)
{
	uint64_t n = 0;
	int ret = nft_sandbox_deny_packets(c, &n);

	cr_assert_eq(ret, 0, "deny_packets: %s", strerror(-ret));
	return n;
}

static void dump_ruleset(void)
{
	if (getenv("V") && !access("/usr/sbin/nft", X_OK))
		(void)!system("nft list ruleset");
}

Test(nft, bad_config)
{
	struct nft_sandbox_cfg c;
	struct denyset *d = default_deny();
	char err[256];

	cfg_init(&c, "/proc/self/ns/net", "bad/id", d);
	cr_assert_eq(nft_sandbox_apply(&c, err, sizeof(err)), -EINVAL);
	cfg_init(&c, "/proc/self/ns/net", "", d);
	cr_assert_eq(nft_sandbox_apply(&c, err, sizeof(err)), -EINVAL);
	cfg_init(&c, "/proc/self/ns/net", "ok", NULL);
	cr_assert_eq(nft_sandbox_apply(&c, err, sizeof(err)), -EINVAL);
	cfg_init(&c, "/proc/self/ns/net", "ok", d);
	c.ntcp = 5;
	cr_assert_eq(nft_sandbox_apply(&c, err, sizeof(err)), -EINVAL);
	cfg_init(&c, "/proc/self/ns/net", "ok", d);
	c.tcp_ports[0] = 0;
	cr_assert_eq(nft_sandbox_apply(&c, err, sizeof(err)), -EINVAL);
	cfg_init(&c, NULL, "ok", d);	/* host mode without a cgroup */
	cr_assert_eq(nft_sandbox_apply(&c, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "cgroup"), "%s", err);
	ds_free(d);
}

Test(nft, netns_missing)
{
	struct nft_sandbox_cfg c;
	struct denyset *d = default_deny();
	char err[256] = "";

	need_root();
	cfg_init(&c, "/nonexistent/sluice-netns", "gone", d);
	cr_assert_eq(nft_sandbox_apply(&c, err, sizeof(err)), -ENOENT);
	cr_assert(strstr(err, "/nonexistent/sluice-netns"), "%s", err);
	cr_assert_not(nft_sandbox_present(&c));
	cr_assert_eq(nft_sandbox_remove(&c, err, sizeof(err)), 0);
	ds_free(d);
}

Test(nft, sandbox_netns_traffic, .timeout = 60)
{
	char path[64], id[48], err[256] = "";
	struct nft_sandbox_cfg c;
	struct denyset *d = default_deny();
	uint64_t before, after;
	int ns;

	need_root();
	unique_id(id, sizeof(id), "t");
	ns = netns_new(path, sizeof(path));
	cfg_init(&c, path, id, d);

	/* Applied from outside (the test thread is still in its own netns). */
	cr_assert_not(nft_sandbox_present(&c));
	apply_ok(&c);
	cr_assert(nft_sandbox_present(&c));
	cr_assert_eq(deny_packets(&c), 0);

	enter_netns(ns);
	dump_ruleset();
	listen_on("127.0.0.1", LISTENER_PORT);
	listen_on("::1", LISTENER_PORT);
	listen_on("127.0.0.1", OTHER_PORT);
	listen_on("169.254.169.254", 80);
	listen_on("fd00:ec2::254", 80);

	cr_assert_eq(try_connect("127.0.0.1", LISTENER_PORT), 0, "listener port blocked");
	cr_assert_eq(try_connect("::1", LISTENER_PORT), 0, "v6 listener port blocked");
	cr_assert_neq(try_connect("127.0.0.1", OTHER_PORT), 0, "other loopback port reachable");
	cr_assert_neq(try_connect("::1", OTHER_PORT), 0);

	before = deny_packets(&c);
	cr_assert_neq(try_connect("169.254.169.254", 80), 0, "metadata reachable");
	after = deny_packets(&c);
	cr_assert_gt(after, before, "deny counter did not move (%lu)", (unsigned long)after);
	before = after;
	cr_assert_neq(try_connect("fd00:ec2::254", 80), 0, "v6 metadata reachable");
	cr_assert_gt(deny_packets(&c), before, "v6 deny counter did not move");

	/* Apply again: replaced in one transaction, counters start over. */
	apply_ok(&c);
	apply_ok(&c);
	cr_assert_eq(try_connect("127.0.0.1", LISTENER_PORT), 0);
	cr_assert_neq(try_connect("169.254.169.254", 80), 0);

	cr_assert_eq(nft_sandbox_remove(&c, err, sizeof(err)), 0, "remove: %s", err);
	cr_assert_not(nft_sandbox_present(&c));
	cr_assert_eq(nft_sandbox_deny_packets(&c, &after), -ENOENT);
	/* Without the table, the fake metadata server answers: proves the
	 * refusals above were the rules, not the setup. */
	cr_assert_eq(try_connect("169.254.169.254", 80), 0, "setup broken: metadata unreachable");
	cr_assert_eq(try_connect("127.0.0.1", OTHER_PORT), 0);
	cr_assert_eq(nft_sandbox_remove(&c, err, sizeof(err)), 0, "second remove: %s", err);
	close(ns);
	ds_free(d);
}

Test(nft, update_deny_swaps_sets, .timeout = 60)
{
	char path[64], id[48], err[256] = "";
	struct denyset *d = default_deny(), *open_md = deny_without_metadata();
	struct nft_sandbox_cfg c;
	int ns;

	need_root();
	unique_id(id, sizeof(id), "u");
	ns = netns_new(path, sizeof(path));
	cfg_init(&c, path, id, d);
	cr_assert_eq(nft_sandbox_update_deny(&c, err, sizeof(err)), -ENOENT, "%s", err);
	apply_ok(&c);
	enter_netns(ns);
	listen_on("169.254.169.254", 80);
	cr_assert_neq(try_connect("169.254.169.254", 80), 0);

	/* The chain's policy drops the connect either way, so the deny-rule
	 * counter is what shows which set is live: swap the metadata entry
	 * out, then back in. */
	c.deny = open_md;
	cr_assert_eq(nft_sandbox_update_deny(&c, err, sizeof(err)), 0, "update: %s", err);
	{
		uint64_t before = deny_packets(&c);

		cr_assert_neq(try_connect("169.254.169.254", 80), 0, "policy drop still applies");
		cr_assert_eq(deny_packets(&c), before, "metadata still in the deny set");
	}
	c.deny = d;
	cr_assert_eq(nft_sandbox_update_deny(&c, err, sizeof(err)), 0, "update back: %s", err);
	{
		uint64_t before = deny_packets(&c);

		cr_assert_neq(try_connect("169.254.169.254", 80), 0);
		cr_assert_gt(deny_packets(&c), before, "metadata not back in the deny set");
	}
	/* Update twice in a row (flush + add of the same content). */
	cr_assert_eq(nft_sandbox_update_deny(&c, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(nft_sandbox_remove(&c, err, sizeof(err)), 0, "%s", err);
	close(ns);
	ds_free(d);
	ds_free(open_md);
}

/* Host mode, in a private netns standing in for the host: a process in the
 * sandbox cgroup is held to the listener ports and the deny set; a process
 * outside it is untouched. With the metadata entry removed from the deny set
 * and the sandbox chain otherwise identical, the deny counter proves the set
 * is what refuses it. */
Test(nft, host_mode_cgroup_match, .timeout = 60)
{
	char path[64], id[48], root[512], cg[600], err[256] = "";
	struct nft_sandbox_cfg c;
	struct denyset *d = default_deny();
	struct stat st;
	uint64_t before;
	int ns, status;
	pid_t pid;

	need_root();
	cr_assert_eq(sb_cgroup2_root(root, sizeof(root)), 0, "no cgroup2 mount");
	unique_id(id, sizeof(id), "h");
	snprintf(cg, sizeof(cg), "%s/sltnft_%s", root, id);
	cr_assert_eq(sb_cgroup_create(cg), 0, "mkdir %s", cg);
	cr_assert_eq(stat(cg, &st), 0);

	ns = netns_new(path, sizeof(path));
	enter_netns(ns);	/* "the host" from here on */
	cfg_init(&c, NULL, id, d);
	c.cgroup_id = st.st_ino;
	c.cgroup_level = 1;
	apply_ok(&c);
	apply_ok(&c);	/* replace: still one jump rule */
	cr_assert(nft_sandbox_present(&c));
	dump_ruleset();

	listen_on("127.0.0.1", LISTENER_PORT);
	listen_on("127.0.0.1", OTHER_PORT);
	listen_on("169.254.169.254", 80);

	/* Outside the cgroup: everything reachable. */
	cr_assert_eq(try_connect("127.0.0.1", OTHER_PORT), 0, "host process blocked");
	cr_assert_eq(try_connect("169.254.169.254", 80), 0, "host process blocked");
	before = deny_packets(&c);

	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int bad = 0;

		if (sb_cgroup_enter(cg, 0))
			_exit(100);
		if (try_connect("127.0.0.1", LISTENER_PORT) != 0)
			bad |= 1;
		if (try_connect("127.0.0.1", OTHER_PORT) == 0)
			bad |= 2;
		if (try_connect("169.254.169.254", 80) == 0)
			bad |= 4;
		_exit(bad);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status));
	cr_assert_neq(WEXITSTATUS(status), 100, "could not enter the test cgroup");
	cr_assert_eq(WEXITSTATUS(status) & 1, 0, "sandboxed process cannot reach the listener");
	cr_assert_eq(WEXITSTATUS(status) & 2, 0, "sandboxed process reached another port");
	cr_assert_eq(WEXITSTATUS(status) & 4, 0, "sandboxed process reached metadata");
	cr_assert_gt(deny_packets(&c), before, "deny counter did not move");

	cr_assert_eq(nft_sandbox_remove(&c, err, sizeof(err)), 0, "remove: %s", err);
	cr_assert_not(nft_sandbox_present(&c));
	cr_assert_eq(nft_sandbox_remove(&c, err, sizeof(err)), 0, "second remove: %s", err);
	dump_ruleset();

	/* Removed: the same sandboxed process gets through. */
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		if (sb_cgroup_enter(cg, 0))
			_exit(100);
		_exit(try_connect("127.0.0.1", OTHER_PORT) == 0 ? 0 : 1);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "rules left after remove");
	cr_assert_eq(sb_cgroup_remove(cg), 0);
	close(ns);
	ds_free(d);
}

/* Two sandboxes in one host table: removing one leaves the other whole. */
Test(nft, host_mode_two_sandboxes, .timeout = 60)
{
	char path[64], id1[48], id2[48], err[256] = "";
	struct nft_sandbox_cfg a, b;
	struct denyset *d = default_deny();
	int ns;

	need_root();
	unique_id(id1, sizeof(id1), "a");
	unique_id(id2, sizeof(id2), "b");
	ns = netns_new(path, sizeof(path));
	enter_netns(ns);
	cfg_init(&a, NULL, id1, d);
	a.cgroup_id = 1234567;
	a.cgroup_level = 1;
	cfg_init(&b, NULL, id2, d);
	b.cgroup_id = 7654321;
	b.cgroup_level = 2;
	apply_ok(&a);
	apply_ok(&b);
	cr_assert(nft_sandbox_present(&a) && nft_sandbox_present(&b));
	cr_assert_eq(nft_sandbox_update_deny(&a, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(nft_sandbox_remove(&a, err, sizeof(err)), 0, "%s", err);
	cr_assert_not(nft_sandbox_present(&a));
	cr_assert(nft_sandbox_present(&b));
	apply_ok(&b);
	cr_assert_eq(nft_sandbox_remove(&b, err, sizeof(err)), 0, "%s", err);
	cr_assert_not(nft_sandbox_present(&b));
	close(ns);
	ds_free(d);
}

struct hammer {
	volatile int stop;
	volatile unsigned sent, refused;
};

/* A child process (in cgroup cg when set) sending UDP datagrams to the fake
 * metadata address as fast as it can: sendto fails with EPERM the moment
 * the output chain drops, succeeds when no rule is there. Counts land in
 * shared memory. */
static struct hammer *hammer_start(const char *cg, pid_t *ret_pid)
{
	struct hammer *h = mmap(NULL, sizeof(*h), PROT_READ | PROT_WRITE,
				MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pid_t pid;

	cr_assert_neq(h, MAP_FAILED);
	memset((void *)h, 0, sizeof(*h));
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		struct sockaddr_storage ss;
		socklen_t sl = make_addr(&ss, "169.254.169.254", 9);
		time_t end = time(NULL) + 30;
		int fd;

		if (cg && sb_cgroup_enter(cg, 0))
			_exit(1);
		fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		while (!h->stop && time(NULL) < end) {
			if (sendto(fd, "x", 1, 0, (struct sockaddr *)&ss, sl) == 1)
				h->sent++;
			else
				h->refused++;
		}
		_exit(0);
	}
	/* Let it start before the first re-apply. */
	for (int i = 0; i < 200 && !h->refused && !h->sent; i++)
		usleep(5000);
	*ret_pid = pid;
	return h;
}

static void hammer_stop(struct hammer *h, pid_t pid)
{
	int st;

	h->stop = 1;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "hammer failed");
	cr_assert_gt(h->refused, 100, "hammer did not run (%u)", h->refused);
	cr_assert_eq(h->sent, 0, "%u of %u datagrams escaped during re-apply", h->sent,
		     h->sent + h->refused);
	munmap((void *)h, sizeof(*h));
}

/* Re-applying under fire never opens a window: not one datagram escapes.
 * (Deleting and re-adding the table in one transaction did let a few
 * through on 6.18, which is why apply replaces contents in place.) */
Test(nft, reapply_has_no_window, .timeout = 90)
{
	char path[64], id[48], err[256];
	struct nft_sandbox_cfg c;
	struct denyset *d = default_deny();
	struct hammer *h;
	pid_t pid;
	int ns;

	need_root();
	unique_id(id, sizeof(id), "w");
	ns = netns_new(path, sizeof(path));
	cfg_init(&c, path, id, d);
	apply_ok(&c);
	enter_netns(ns);
	h = hammer_start(NULL, &pid);
	for (int i = 0; i < 40; i++) {
		apply_ok(&c);
		cr_assert_eq(nft_sandbox_update_deny(&c, err, sizeof(err)), 0, "%s", err);
	}
	hammer_stop(h, pid);
	close(ns);
	ds_free(d);
}

Test(nft, host_reapply_has_no_window, .timeout = 90)
{
	char path[64], id[48], root[512], cg[600], err[256];
	struct nft_sandbox_cfg c;
	struct denyset *d = default_deny();
	struct hammer *h;
	struct stat st;
	pid_t pid;
	int ns;

	need_root();
	cr_assert_eq(sb_cgroup2_root(root, sizeof(root)), 0, "no cgroup2 mount");
	unique_id(id, sizeof(id), "hw");
	snprintf(cg, sizeof(cg), "%s/sltnft_%s", root, id);
	cr_assert_eq(sb_cgroup_create(cg), 0, "mkdir %s", cg);
	cr_assert_eq(stat(cg, &st), 0);
	ns = netns_new(path, sizeof(path));
	enter_netns(ns);
	cfg_init(&c, NULL, id, d);
	c.cgroup_id = st.st_ino;
	c.cgroup_level = 1;
	apply_ok(&c);
	h = hammer_start(cg, &pid);
	for (int i = 0; i < 40; i++) {
		apply_ok(&c);
		cr_assert_eq(nft_sandbox_update_deny(&c, err, sizeof(err)), 0, "%s", err);
	}
	hammer_stop(h, pid);
	cr_assert_eq(nft_sandbox_remove(&c, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(sb_cgroup_remove(cg), 0);
	close(ns);
	ds_free(d);
}
