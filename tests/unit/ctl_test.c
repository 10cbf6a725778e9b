// SPDX-License-Identifier: MIT
/* Unit tests for user/ctl.c, plus end-to-end checks of the sluicectl binary
 * against a ctl server with fake ops (skipped when the binary is not built:
 * set SLUICECTL=path or run from the repository root after `make`). */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"
#include "sandbox.h"

struct fake {
	pthread_mutex_t lock;
	int attaches, detaches;
	int attach_rc;
	const char *attach_msg;
	char id[128], cgroup[4096], netns[4096];
	bool netns_null;
	/* What the sandbox looked like when attach was called. */
	bool cgroup_existed, pin_existed;
	char detach_id[128];
};

static int fake_attach(void *opaque, const char *id, const char *cgroup, const char *netns,
		       const char *policy, char *err, size_t errlen)
{
	struct fake *f = opaque;

	(void)policy;
	pthread_mutex_lock(&f->lock);
	f->attaches++;
	snprintf(f->id, sizeof(f->id), "%s", id);
	snprintf(f->cgroup, sizeof(f->cgroup), "%s", cgroup);
	f->netns_null = !netns;
	snprintf(f->netns, sizeof(f->netns), "%s", netns ? netns : "");
	f->cgroup_existed = sb_is_cgroup2_dir(cgroup);
	f->pin_existed = netns && access(netns, F_OK) == 0;
	if (f->attach_msg)
		snprintf(err, errlen, "%s", f->attach_msg);
	pthread_mutex_unlock(&f->lock);
	return f->attach_rc;
}

static int fake_detach(void *opaque, const char *id, char *err, size_t errlen)
{
	struct fake *f = opaque;

	pthread_mutex_lock(&f->lock);
	f->detaches++;
	snprintf(f->detach_id, sizeof(f->detach_id), "%s", id);
	pthread_mutex_unlock(&f->lock);
	if (!strcmp(id, "nope")) {
		snprintf(err, errlen, "no such sandbox: %s", id);
		return -ENOENT;
	}
	return 0;
}

static int fake_status(void *opaque, char *out, size_t outlen)
{
	snprintf(out, outlen, "{\"sandboxes\":0,\"version\":\"test\"}");
	return 0;
}

static const char *fake_ca(void *opaque)
{
	return "/tmp/sluice test/ca.pem";
}

static const struct ctl_ops fake_ops = {
	.attach = fake_attach,
	.detach = fake_detach,
	.status = fake_status,
	.ca_path = fake_ca,
};

static char dir[256], sock[300];
static struct fake fake;
static struct ctl_server *srv;

static void setup(void)
{
	strcpy(dir, "/tmp/sluice-ctl-test-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(sock, sizeof(sock), "%s/sluiced.sock", dir);
	memset(&fake, 0, sizeof(fake));
	pthread_mutex_init(&fake.lock, NULL);
	cr_assert_eq(ctl_server_start(sock, &fake_ops, &fake, &srv), 0);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void teardown(void)
{
	char netns_dir[300];

	ctl_server_stop(srv);
	srv = NULL;
	/* sluicectl run makes dir/netns a mount point (see sb_netns_create). */
	snprintf(netns_dir, sizeof(netns_dir), "%s/netns", dir);
	umount2(netns_dir, MNT_DETACH);
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

/* Per-test .init/.fini, not suite-wide: Criterion runs both a suite's and a
 * test's .init, and a test that skips in .init must have made nothing. */

Test(ctl, ping_ca_status, .init = setup, .fini = teardown)
{
	char reply[CTL_LINE_MAX];
	struct stat st;

	cr_assert_eq(stat(sock, &st), 0);
	cr_expect(S_ISSOCK(st.st_mode));
	cr_expect_eq(st.st_mode & 0777, 0600);

	cr_assert_eq(ctl_request(sock, "PING", reply, sizeof(reply)), 0);
	cr_expect_str_eq(reply, "pong");
	cr_assert_eq(ctl_request(sock, "CA", reply, sizeof(reply)), 0);
	cr_expect_str_eq(reply, "/tmp/sluice test/ca.pem");
	cr_assert_eq(ctl_request(sock, "STATUS", reply, sizeof(reply)), 0);
	cr_expect_str_eq(reply, "{\"sandboxes\":0,\"version\":\"test\"}");
	/* A short reply buffer truncates, it does not overflow. */
	cr_assert_eq(ctl_request(sock, "PING", reply, 3), 0);
	cr_expect_str_eq(reply, "po");
}

Test(ctl, attach_detach, .init = setup, .fini = teardown)
{
	char reply[CTL_LINE_MAX];

	cr_assert_eq(ctl_request(sock, "ATTACH\tbox-1\t/sys/fs/cgroup/a b\t-", reply,
				 sizeof(reply)),
		     0, "%s", reply);
	cr_expect_str_eq(reply, "");
	cr_expect_eq(fake.attaches, 1);
	cr_expect_str_eq(fake.id, "box-1");
	cr_expect_str_eq(fake.cgroup, "/sys/fs/cgroup/a b");
	cr_expect(fake.netns_null);

	cr_assert_eq(ctl_request(sock, "ATTACH\tbox-2\t/cg\t/run/netns/x", reply, sizeof(reply)),
		     0);
	cr_expect_not(fake.netns_null);
	cr_expect_str_eq(fake.netns, "/run/netns/x");

	fake.attach_rc = -EBUSY;
	fake.attach_msg = "cgroup busy\nreally";
	cr_assert_eq(ctl_request(sock, "ATTACH\tbox-3\t/cg\t-", reply, sizeof(reply)), 1);
	cr_expect_str_eq(reply, "cgroup busy really", "newlines in messages are flattened");
	fake.attach_msg = NULL;
	cr_assert_eq(ctl_request(sock, "ATTACH\tbox-3\t/cg\t-", reply, sizeof(reply)), 1);
	cr_expect_str_eq(reply, strerror(EBUSY));

	cr_assert_eq(ctl_request(sock, "DETACH\tbox-1", reply, sizeof(reply)), 0);
	cr_expect_str_eq(fake.detach_id, "box-1");
	cr_assert_eq(ctl_request(sock, "DETACH\tnope", reply, sizeof(reply)), 1);
	cr_expect_str_eq(reply, "no such sandbox: nope");
}

Test(ctl, bad_requests, .init = setup, .fini = teardown)
{
	static const struct {
		const char *line, *reply;
	} cases[] = {
		{ "FROB", "unknown command" },
		{ "", "unknown command" },
		{ "ping", "unknown command" },
		{ "PING\textra", "usage: PING" },
		{ "ATTACH\tbox\t/cg", "usage: ATTACH<tab>id<tab>cgroup<tab>netns|-[<tab>policy|-]" },
		{ "ATTACH\tbox\t/cg\t-\t/p\textra",
		  "usage: ATTACH<tab>id<tab>cgroup<tab>netns|-[<tab>policy|-]" },
		{ "ATTACH\tbox\t/cg\t-\t", "usage: ATTACH<tab>id<tab>cgroup<tab>netns|-[<tab>policy|-]" },
		{ "ATTACH\tbox\t\t-", "usage: ATTACH<tab>id<tab>cgroup<tab>netns|-[<tab>policy|-]" },
		{ "ATTACH\t../x\t/cg\t-", "invalid sandbox id" },
		{ "ATTACH\t\t/cg\t-", "invalid sandbox id" },
		{ "DETACH", "usage: DETACH<tab>id" },
		{ "DETACH\ta/b", "invalid sandbox id" },
	};
	char reply[CTL_LINE_MAX];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cr_expect_eq(ctl_request(sock, cases[i].line, reply, sizeof(reply)), 1, "'%s'",
			     cases[i].line);
		cr_expect_str_eq(reply, cases[i].reply, "'%s'", cases[i].line);
	}
	cr_expect_eq(fake.attaches, 0);
	cr_expect_eq(fake.detaches, 0);
}

/* Send raw bytes, read the reply line. */
static void raw_request(const char *buf, size_t len, char *reply, size_t replylen)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	size_t n = 0;
	ssize_t r;
	int fd;

	strcpy(sun.sun_path, sock);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	cr_assert_geq(fd, 0);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	cr_assert_eq(send(fd, buf, len, MSG_NOSIGNAL), (ssize_t)len);
	while (n < replylen - 1 && (r = read(fd, reply + n, replylen - 1 - n)) > 0)
		n += (size_t)r;
	reply[n] = '\0';
	close(fd);
}

Test(ctl, line_limits, .init = setup, .fini = teardown)
{
	size_t big = CTL_LINE_MAX + 100;
	char *line = malloc(big + 1), reply[CTL_LINE_MAX];

	cr_assert_not_null(line);
	memset(line, 'A', big);
	line[big] = '\0';
	cr_expect_eq(ctl_request(sock, line, reply, sizeof(reply)), -EMSGSIZE);
	cr_expect_eq(ctl_request(sock, "PING\nPING", reply, sizeof(reply)), -EMSGSIZE);

	/* The server's own check, for clients that are not ctl_request. */
	raw_request(line, big, reply, sizeof(reply));
	cr_expect_str_eq(reply, "ERR line too long\n");
	/* CTL_LINE_MAX including the newline is still a line. */
	line[CTL_LINE_MAX - 1] = '\n';
	raw_request(line, CTL_LINE_MAX, reply, sizeof(reply));
	cr_expect_str_eq(reply, "ERR unknown command\n");
	cr_expect_eq(ctl_request(sock, "PING", reply, sizeof(reply)), 0, "server still serves");
	free(line);
}

Test(ctl, not_running, .init = setup, .fini = teardown)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	char path[300], reply[64];
	struct ctl_server *s2;
	int fd;

	snprintf(path, sizeof(path), "%s/nothing.sock", dir);
	cr_expect_eq(ctl_request(path, "PING", reply, sizeof(reply)), -ENOENT);

	/* A stale socket: bound once, nobody listening any more. */
	snprintf(path, sizeof(path), "%s/stale.sock", dir);
	strcpy(sun.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	close(fd);
	cr_expect_eq(ctl_request(path, "PING", reply, sizeof(reply)), -ECONNREFUSED);

	/* The server replaces the stale one, but never a live one. */
	cr_assert_eq(ctl_server_start(path, &fake_ops, &fake, &s2), 0);
	cr_expect_eq(ctl_request(path, "PING", reply, sizeof(reply)), 0);
	cr_expect_eq(ctl_server_start(sock, &fake_ops, &fake, &srv), -EADDRINUSE);
	ctl_server_stop(s2);
	cr_expect_eq(access(path, F_OK), -1, "stop unlinks the socket");
	cr_expect_eq(ctl_request(path, "PING", reply, sizeof(reply)), -ENOENT);

	snprintf(path, sizeof(path), "%s/regular", dir);
	fd = open(path, O_CREAT | O_WRONLY, 0600);
	close(fd);
	cr_expect_eq(ctl_server_start(path, &fake_ops, &fake, &s2), -EEXIST);
}

static void root_setup(void)
{
	if (geteuid() != 0)
		cr_skip_test("needs root to switch to another uid");
	setup();
}

Test(ctl, non_root_peer_refused, .init = root_setup, .fini = teardown)
{
	char reply[128];
	int status;
	pid_t pid;

	/* Open the door so only SO_PEERCRED stands in the way. */
	cr_assert_eq(chmod(dir, 0755), 0);
	cr_assert_eq(chmod(sock, 0666), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		if (setgid(65534) || setuid(65534))
			_exit(10);
		int rc = ctl_request(sock, "PING", reply, sizeof(reply));

		if (rc != 1)
			_exit(rc < 0 ? 100 + (-rc % 100) : 11);
		_exit(strcmp(reply, "permission denied") ? 12 : 0);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %#x", status);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

Test(ctl, stop_with_idle_client, .init = setup, .fini = teardown)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	double t0;
	int fd;

	strcpy(sun.sun_path, sock);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	usleep(100000); /* let the server pick it up and wait for a line */
	t0 = now_s();
	ctl_server_stop(srv);
	srv = NULL;
	cr_expect_lt(now_s() - t0, 1.0, "stop waited for the idle client");
	close(fd);
}

/* ---- sluicectl end to end ---- */

static const char *sluicectl_path(void)
{
	const char *p = getenv("SLUICECTL");

	if (p && p[0])
		return p;
	return "build/sluicectl";
}

static char cg_parent[4200];

/* Skips before setup() makes anything: a skipped test does not run .fini. */
static void e2e_setup(void)
{
	char root[4096], name[64];

	if (geteuid() != 0)
		cr_skip_test("needs root (cgroups, netns)");
	if (access(sluicectl_path(), X_OK))
		cr_skip_test("%s not built (set SLUICECTL)", sluicectl_path());
	cr_assert_eq(sb_cgroup2_root(root, sizeof(root)), 0);
	snprintf(name, sizeof(name), "sluice-ctl-test-%d", (int)getpid());
	snprintf(cg_parent, sizeof(cg_parent), "%s/%s", root, name);
	setup();
}

/* Run sluicectl with args (a shell-quoted string); capture stdout. */
static int run_ctl(const char *args, char *out, size_t outlen)
{
	char cmd[8192];
	size_t n = 0;
	FILE *p;
	int status;

	snprintf(cmd, sizeof(cmd), "'%s' --run-dir '%s' %s", sluicectl_path(), dir, args);
	p = popen(cmd, "r");
	cr_assert_not_null(p);
	if (out) {
		n = fread(out, 1, outlen - 1, p);
		out[n] = '\0';
	} else {
		char sink[256];

		while (fread(sink, 1, sizeof(sink), p) > 0)
			;
	}
	status = pclose(p);
	cr_assert(WIFEXITED(status), "status %#x", status);
	return WEXITSTATUS(status);
}

static void expect_clean(void)
{
	char path[4400];

	snprintf(path, sizeof(path), "%s/%s", cg_parent, fake.id);
	cr_expect_eq(access(path, F_OK), -1, "cgroup %s left behind", path);
	snprintf(path, sizeof(path), "%s/netns/%s", dir, fake.id);
	cr_expect_eq(access(path, F_OK), -1, "netns pin %s left behind", path);
}

Test(ctl, sluicectl_run_exit_status_and_cleanup, .init = e2e_setup, .fini = teardown)
{
	char args[8192], out[8192];

	snprintf(args, sizeof(args), "run --cgroup-parent '%s' -- sh -c 'exit 7'", cg_parent);
	cr_expect_eq(run_ctl(args, NULL, 0), 7);
	cr_expect_eq(fake.attaches, 1);
	cr_expect_eq(fake.detaches, 1);
	cr_expect_str_eq(fake.detach_id, fake.id);
	cr_expect(fake.cgroup_existed, "cgroup missing at attach time");
	cr_expect(fake.pin_existed, "netns pin missing at attach time");
	cr_expect_eq(strncmp(fake.id, "run-", 4), 0, "id %s", fake.id);
	expect_clean();

	/* What the command sees: its cgroup, a netns with only lo, CA env. */
	snprintf(args, sizeof(args),
		 "run --id e2e-1 --cgroup-parent '%s' -- sh -c "
		 "'cat /proc/self/cgroup; tail -n +3 /proc/net/dev | cut -d: -f1; "
		 "echo \"ca=$SSL_CERT_FILE|$CURL_CA_BUNDLE\"'",
		 cg_parent);
	cr_expect_eq(run_ctl(args, out, sizeof(out)), 0);
	cr_expect_str_eq(fake.id, "e2e-1");
	cr_expect_not_null(strstr(out, "/e2e-1\n"), "%s", out);
	cr_expect_not_null(strstr(out, "ca=/tmp/sluice test/ca.pem|/tmp/sluice test/ca.pem\n"),
			   "%s", out);
	cr_expect_not_null(strstr(out, "    lo\n"), "%s", out);
	cr_expect_null(strstr(out, "eth"), "%s", out);
	expect_clean();

	/* --netns host --no-ca-env: no pin, netns "-", no CA variables. */
	unsetenv("SSL_CERT_FILE");
	snprintf(args, sizeof(args),
		 "run --netns host --no-ca-env --cgroup-parent '%s' -- sh -c "
		 "'echo \"ca=${SSL_CERT_FILE-unset}\"'",
		 cg_parent);
	cr_expect_eq(run_ctl(args, out, sizeof(out)), 0);
	cr_expect(fake.netns_null);
	cr_expect_str_eq(out, "ca=unset\n");
	expect_clean();

	/* Not executable: 127, still cleaned up. */
	snprintf(args, sizeof(args), "run --cgroup-parent '%s' -- /nonexistent/cmd 2>/dev/null",
		 cg_parent);
	cr_expect_eq(run_ctl(args, NULL, 0), 127);
	expect_clean();
	cr_expect_eq(rmdir(cg_parent), 0, "%s", strerror(errno));
}

Test(ctl, sluicectl_run_signal_and_leftovers, .init = e2e_setup, .fini = teardown)
{
	char args[8192];
	double t0;

	/* SIGTERM sent to sluicectl alone reaches the command (sh dies: 143);
	 * the orphaned sleep is killed with the cgroup. */
	snprintf(args, sizeof(args),
		 "run --cgroup-parent '%s' -- sh -c 'sleep 30 & kill -TERM $PPID; sleep 20'",
		 cg_parent);
	t0 = now_s();
	cr_expect_eq(run_ctl(args, NULL, 0), 143);
	cr_expect_lt(now_s() - t0, 5.0);
	cr_expect_eq(fake.detaches, 1);
	expect_clean();
	cr_expect_eq(rmdir(cg_parent), 0, "%s", strerror(errno));
}

Test(ctl, sluicectl_attach_refused_cleans_up, .init = e2e_setup, .fini = teardown)
{
	char args[8192], marker[400];

	fake.attach_rc = -EPERM;
	fake.attach_msg = "policy says no";
	snprintf(marker, sizeof(marker), "%s/ran", dir);
	snprintf(args, sizeof(args), "run --cgroup-parent '%s' -- touch '%s' 2>/dev/null",
		 cg_parent, marker);
	cr_expect_eq(run_ctl(args, NULL, 0), 1);
	cr_expect_eq(access(marker, F_OK), -1, "command ran although attach failed");
	cr_expect_eq(fake.detaches, 0);
	expect_clean();
	cr_expect_eq(rmdir(cg_parent), 0, "%s", strerror(errno));
}

Test(ctl, sluicectl_other_commands, .init = e2e_setup, .fini = teardown)
{
	char args[8192], out[8192], cg[4400], id[128];

	cr_expect_eq(run_ctl("ping", out, sizeof(out)), 0);
	cr_expect_str_eq(out, "pong\n");
	cr_expect_eq(run_ctl("status", out, sizeof(out)), 0);
	cr_expect_str_eq(out, "{\"sandboxes\":0,\"version\":\"test\"}\n");
	cr_expect_eq(run_ctl("env", out, sizeof(out)), 0);
	cr_expect_str_eq(out, "export SSL_CERT_FILE='/tmp/sluice test/ca.pem'\n"
			      "export REQUESTS_CA_BUNDLE='/tmp/sluice test/ca.pem'\n"
			      "export NODE_EXTRA_CA_CERTS='/tmp/sluice test/ca.pem'\n"
			      "export CURL_CA_BUNDLE='/tmp/sluice test/ca.pem'\n");

	snprintf(cg, sizeof(cg), "%s/my box", cg_parent);
	cr_assert_eq(sb_cgroup_create(cg), 0);
	snprintf(args, sizeof(args), "attach --cgroup '%s/'", cg);
	cr_expect_eq(run_ctl(args, out, sizeof(out)), 0);
	cr_expect_eq(strncmp(out, "my_box-", 7), 0, "%s", out);
	cr_expect_eq(strlen(out), strlen("my_box-") + 8 + 1, "%s", out);
	cr_expect_str_eq(fake.cgroup, cg);
	cr_expect(fake.netns_null);
	snprintf(id, sizeof(id), "%s", fake.id);
	snprintf(args, sizeof(args), "detach --cgroup '%s'", cg);
	cr_expect_eq(run_ctl(args, NULL, 0), 0);
	cr_expect_str_eq(fake.detach_id, id, "detach --cgroup derives attach's id");
	cr_expect_eq(run_ctl("detach --id nope 2>/dev/null", NULL, 0), 1);
	cr_expect_eq(run_ctl("attach --cgroup /tmp 2>/dev/null", NULL, 0), 2);
	cr_expect_eq(run_ctl("frob 2>/dev/null", NULL, 0), 2);
	cr_assert_eq(sb_cgroup_remove(cg_parent), 0);

	ctl_server_stop(srv);
	srv = NULL;
	cr_expect_eq(run_ctl("ping 2>&1", out, sizeof(out)), 69);
	snprintf(args, sizeof(args), "sluicectl: sluiced is not running (no socket at %s)\n", sock);
	cr_expect_str_eq(out, args);
}
