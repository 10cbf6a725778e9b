// SPDX-License-Identifier: MIT
/*
 * sluicectl: the command line for sluiced. Talks to it over the ctl socket
 * (run_dir/sluiced.sock) and does the sandbox plumbing for `run` itself:
 * cgroup, netns pin, attach, the command, detach, cleanup.
 *
 * Exit codes: 0 ok, 1 sluiced answered ERR, 2 usage, 69 sluiced not running,
 * 70 internal error; `run` exits with its command's status (128+signal when
 * it was killed, 127 when it could not be executed).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ctl.h"
#include "policy.h"
#include "sandbox.h"

#define EXIT_OK 0
#define EXIT_ERR 1
#define EXIT_USAGE 2
#define EXIT_NOT_RUNNING 69
#define EXIT_INTERNAL 70
#define EXIT_EXEC 127

#define DEFAULT_RUN_DIR "/run/sluice"
#define CGROUP_PARENT_NAME "sluice.sandboxes"

static const char *const ca_env_vars[] = { "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE",
					   "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE" };

static char run_dir[PATH_MAX] = DEFAULT_RUN_DIR;
static char sock_path[PATH_MAX + 16];

/* The command `run` waits for; read by the signal forwarder. */
static volatile sig_atomic_t child_pid;
/* A signal that arrived while `run` was still setting up (no child yet). */
static volatile sig_atomic_t early_signal;

static void die_internal(const char *what, int err)
{
	fprintf(stderr, "sluicectl: %s: %s\n", what, strerror(err));
	exit(EXIT_INTERNAL);
}

/* One request to sluiced. Returns 0 with the reply text, or prints the one
 * line that explains the failure and returns the exit code to use. */
static int request(const char *line, char *reply, size_t len)
{
	int rc = ctl_request(sock_path, line, reply, len);

	if (rc == 0)
		return EXIT_OK;
	if (rc == 1) {
		fprintf(stderr, "sluicectl: %s\n", reply);
		return EXIT_ERR;
	}
	if (rc == -ENOENT || rc == -ECONNREFUSED) {
		fprintf(stderr, "sluicectl: sluiced is not running (no socket at %s)\n", sock_path);
		return EXIT_NOT_RUNNING;
	}
	if (rc == -EMSGSIZE) {
		fprintf(stderr, "sluicectl: request too long (paths with newlines or over %d bytes)\n",
			CTL_LINE_MAX);
		return EXIT_USAGE;
	}
	fprintf(stderr, "sluicectl: cannot talk to sluiced at %s: %s\n", sock_path, strerror(-rc));
	return EXIT_INTERNAL;
}

/* request() with a formatted line; an overlong one is a usage error. */
__attribute__((format(printf, 3, 4))) static int requestf(char *reply, size_t len,
							  const char *fmt, ...)
{
	char line[CTL_LINE_MAX];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0 || n >= (int)sizeof(line)) {
		fprintf(stderr, "sluicectl: request too long (over %d bytes)\n", CTL_LINE_MAX);
		return EXIT_USAGE;
	}
	return request(line, reply, len);
}

/* Paths go into tab-separated request lines. */
static bool field_ok(const char *s)
{
	return !strpbrk(s, "\t\n\r");
}

static uint32_t fnv1a32(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 16777619u;
	}
	return h;
}

/* Sandbox id for an existing cgroup: its sanitised basename (so a human
 * recognises it) plus a hash of the full path (so two cgroups with the same
 * basename do not collide). attach and detach --cgroup derive the same id. */
static void derive_id(const char *cgroup, char out[SB_ID_MAX + 1])
{
	char base[41];
	const char *end = cgroup + strlen(cgroup), *start;
	size_t n = 0;

	while (end > cgroup && end[-1] == '/')
		end--;
	start = end;
	while (start > cgroup && start[-1] != '/')
		start--;
	for (const char *p = start; p < end && n < sizeof(base) - 1; p++) {
		char c = *p;
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';

		base[n++] = ok ? c : '_';
	}
	base[n] = '\0';
	if (n == 0 || !strcmp(base, ".") || !strcmp(base, ".."))
		strcpy(base, "cgroup");
	snprintf(out, SB_ID_MAX + 1, "%s-%08x", base, fnv1a32(cgroup));
}

/* Canonical form of a user-given path: realpath when it exists, else the
 * path without trailing slashes (a cgroup may be gone by detach time). */
static void canon_path(const char *in, char out[PATH_MAX])
{
	size_t n;

	if (realpath(in, out))
		return;
	snprintf(out, PATH_MAX, "%s", in);
	n = strlen(out);
	while (n > 1 && out[n - 1] == '/')
		out[--n] = '\0';
}

/* Print s as one single-quoted shell word. */
static void print_shell_quoted(const char *s)
{
	putchar('\'');
	for (; *s; s++) {
		if (*s == '\'')
			fputs("'\\''", stdout);
		else
			putchar(*s);
	}
	putchar('\'');
}

static int bad_option(const char *sub, char **argv)
{
	fprintf(stderr, "sluicectl %s: bad option or missing argument '%s' (see --help)\n", sub,
		argv[optind - 1]);
	return EXIT_USAGE;
}

/* ---- run ---- */

static const char run_help[] =
	"usage: sluicectl run [--policy FILE] [--netns new|host] [--id ID] [--cgroup-parent PATH]\n"
	"                     [--hosts FILE] [--no-ca-env] -- CMD [ARGS...]\n"
	"Run CMD in a fresh sandbox: a new cgroup under PATH (default <cgroup2 root>/"
	CGROUP_PARENT_NAME ")\n"
	"and, with --netns new (the default), a network namespace holding only loopback,\n"
	"pinned at RUN_DIR/netns/ID. sluiced is attached before CMD starts and detached,\n"
	"and the sandbox removed, when CMD exits. SSL_CERT_FILE, REQUESTS_CA_BUNDLE,\n"
	"NODE_EXTRA_CA_CERTS and CURL_CA_BUNDLE point at sluiced's CA unless --no-ca-env.\n"
	"--policy FILE: the sandbox's policy (sluiced compiles it; a bad file stops the run\n"
	"before CMD starts); without it, sluiced's default policy applies.\n"
	"--hosts FILE: CMD sees FILE as /etc/hosts (a private mount namespace of its own).\n"
	"CMD runs without CAP_NET_RAW, CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF and with\n"
	"no_new_privs.\n"
	"Exits with CMD's status (128+N when killed by signal N, 127 when not executable).\n";

/* Signals sent to sluicectl alone (kill, timeout, systemd) go on to CMD.
 * Terminal signals (SI_KERNEL) already reach CMD, which is in the same
 * foreground process group; forwarding those would deliver them twice. */
static void forward_signal(int sig, siginfo_t *si, void *uc)
{
	int saved = errno;

	if (child_pid <= 0)
		early_signal = sig;
	else if (si->si_code != SI_KERNEL)
		kill(child_pid, sig);
	errno = saved;
}

static const int forwarded_signals[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };

/*
 * Capabilities the command loses (it still runs as root otherwise: the
 * operator chose that). Each one is a way around the kernel half:
 *   CAP_NET_RAW     raw and packet sockets (sock_create only sees inet ones)
 *   CAP_NET_ADMIN   nftables, routes, interfaces of the sandbox netns
 *   CAP_SYS_ADMIN   setns() out of the sandbox netns, mounts, bpf() on old kernels
 *   CAP_BPF         detaching or replacing sluice's programs, editing its maps
 *   CAP_SYS_PTRACE  pidfd_getfd()/ptrace on sluiced or any process outside the
 *                   sandbox, to borrow a socket whose cgroup is not the sandbox's
 *   CAP_SYS_MODULE  a kernel module undoes all of the above
 */
#ifndef CAP_BPF
#define CAP_BPF 39 /* 5.8+; older UAPI headers lack it */
#endif
static const int run_dropped_caps[] = { CAP_NET_RAW,	CAP_NET_ADMIN,	CAP_SYS_ADMIN,
					CAP_SYS_PTRACE, CAP_SYS_MODULE, CAP_BPF };

/*
 * Drop run_dropped_caps from the bounding set (so exec of a root process
 * cannot get them back), the ambient set, and the effective, permitted and
 * inheritable sets (capset(2) directly, no libcap), then set no_new_privs so
 * no setuid or file-capability binary can regain them. Returns 0 or -errno.
 * A capability this kernel does not know (CAP_BPF before 5.8) is skipped.
 */
static int run_drop_privileges(void)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
	size_t i;

	for (i = 0; i < sizeof(run_dropped_caps) / sizeof(run_dropped_caps[0]); i++) {
		int cap = run_dropped_caps[i];

		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
			return -errno;
		if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_LOWER, cap, 0, 0) < 0 && errno != EINVAL)
			return -errno;
	}
	if (syscall(SYS_capget, &hdr, data) < 0)
		return -errno;
	for (i = 0; i < sizeof(run_dropped_caps) / sizeof(run_dropped_caps[0]); i++) {
		unsigned w = run_dropped_caps[i] / 32;
		uint32_t bit = 1u << (run_dropped_caps[i] % 32);

		data[w].effective &= ~bit;
		data[w].permitted &= ~bit;
		data[w].inheritable &= ~bit;
	}
	if (syscall(SYS_capset, &hdr, data) < 0)
		return -errno;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -errno;
	return 0;
}

/* In the child: enter the sandbox and exec CMD. Never returns. */
/* --hosts FILE: the command sees FILE as /etc/hosts, in a mount namespace of
 * its own (nothing changes for anyone else), like docker run --add-host. */
static int private_hosts(const char *hosts)
{
	if (unshare(CLONE_NEWNS) < 0)
		return -errno;
	/* never let the bind below propagate back to the host */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return -errno;
	if (mount(hosts, "/etc/hosts", NULL, MS_BIND, NULL) < 0)
		return -errno;
	return 0;
}

static const char *run_hosts; /* --hosts FILE, or NULL */

static void run_child(const char *cgroup, const char *pin, const char *ca, char **cmd)
{
	struct sigaction dfl = { .sa_handler = SIG_DFL };
	sigset_t none;
	int rc, fd;

	for (size_t i = 0; i < sizeof(forwarded_signals) / sizeof(forwarded_signals[0]); i++)
		sigaction(forwarded_signals[i], &dfl, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);

	rc = sb_cgroup_enter(cgroup, 0);
	if (rc) {
		fprintf(stderr, "sluicectl: cannot enter cgroup %s: %s\n", cgroup, strerror(-rc));
		_exit(EXIT_INTERNAL);
	}
	if (pin) {
		fd = open(pin, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || setns(fd, CLONE_NEWNET)) {
			fprintf(stderr, "sluicectl: cannot enter netns %s: %s\n", pin,
				strerror(errno));
			_exit(EXIT_INTERNAL);
		}
		close(fd);
	}
	if (run_hosts) {
		rc = private_hosts(run_hosts);
		if (rc) {
			fprintf(stderr, "sluicectl: --hosts %s: %s\n", run_hosts, strerror(-rc));
			_exit(EXIT_INTERNAL);
		}
	}
	if (ca) {
		for (size_t i = 0; i < sizeof(ca_env_vars) / sizeof(ca_env_vars[0]); i++)
			if (setenv(ca_env_vars[i], ca, 1)) {
				fprintf(stderr, "sluicectl: setenv: %s\n", strerror(errno));
				_exit(EXIT_INTERNAL);
			}
	}
	/* Last: entering the netns above needs CAP_SYS_ADMIN. */
	rc = run_drop_privileges();
	if (rc) {
		fprintf(stderr, "sluicectl: cannot drop capabilities: %s\n", strerror(-rc));
		_exit(EXIT_INTERNAL);
	}
	execvp(cmd[0], cmd);
	fprintf(stderr, "sluicectl: cannot run %s: %s\n", cmd[0], strerror(errno));
	_exit(EXIT_EXEC);
}

/* From the start of `run`: a signal never kills sluicectl half-way (which
 * would leave the cgroup and pin behind); before CMD exists it is noted and
 * `run` stops after cleaning up, afterwards it is forwarded. */
static void install_forwarder(void)
{
	struct sigaction sa = { .sa_sigaction = forward_signal, .sa_flags = SA_SIGINFO | SA_RESTART };

	for (size_t i = 0; i < sizeof(forwarded_signals) / sizeof(forwarded_signals[0]); i++)
		sigaction(forwarded_signals[i], &sa, NULL);
}

/* Fork CMD after attach succeeded and wait for it, forwarding signals. */
static int run_and_wait(const char *cgroup, const char *pin, const char *ca, char **cmd)
{
	sigset_t block, old;
	int status;
	pid_t pid;

	sigemptyset(&block);
	for (size_t i = 0; i < sizeof(forwarded_signals) / sizeof(forwarded_signals[0]); i++)
		sigaddset(&block, forwarded_signals[i]);
	/* Blocked across fork so a signal is never lost between fork and
	 * child_pid being set, nor run by the child on the parent's handler. */
	sigprocmask(SIG_BLOCK, &block, &old);
	if (early_signal) {
		sigprocmask(SIG_SETMASK, &old, NULL);
		return 128 + early_signal;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		int err = errno;

		sigprocmask(SIG_SETMASK, &old, NULL);
		fprintf(stderr, "sluicectl: fork: %s\n", strerror(err));
		return EXIT_INTERNAL;
	}
	if (pid == 0)
		run_child(cgroup, pin, ca, cmd);
	child_pid = pid;
	sigprocmask(SIG_SETMASK, &old, NULL);

	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			fprintf(stderr, "sluicectl: waitpid: %s\n", strerror(errno));
			return EXIT_INTERNAL;
		}
	}
	child_pid = 0;
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return EXIT_INTERNAL;
}

static int cmd_run(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "netns", required_argument, NULL, 'n' },
		{ "id", required_argument, NULL, 'i' },
		{ "cgroup-parent", required_argument, NULL, 'c' },
		{ "no-ca-env", no_argument, NULL, 'E' },
		{ "policy", required_argument, NULL, 'p' },
		{ "hosts", required_argument, NULL, 'H' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	static char hosts[PATH_MAX];
	char id[SB_ID_MAX + 1] = "", parent[PATH_MAX] = "", cgroup[PATH_MAX], pin[PATH_MAX];
	char policy[PATH_MAX] = "";
	char reply[CTL_LINE_MAX], ca[CTL_LINE_MAX] = "";
	bool new_netns = true, ca_env = true;
	int opt, rc, ex;
	struct stat st;

	while ((opt = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (opt) {
		case 'n':
			if (!strcmp(optarg, "new")) {
				new_netns = true;
			} else if (!strcmp(optarg, "host")) {
				new_netns = false;
			} else {
				fprintf(stderr, "sluicectl run: --netns takes new or host\n");
				return EXIT_USAGE;
			}
			break;
		case 'i':
			if (!sb_id_valid(optarg)) {
				fprintf(stderr,
					"sluicectl run: invalid id '%s' ([A-Za-z0-9_.-], 1-%d chars)\n",
					optarg, SB_ID_MAX);
				return EXIT_USAGE;
			}
			strcpy(id, optarg);
			break;
		case 'c':
			if (optarg[0] != '/' || strlen(optarg) >= sizeof(parent)) {
				fprintf(stderr, "sluicectl run: --cgroup-parent needs an absolute path\n");
				return EXIT_USAGE;
			}
			strcpy(parent, optarg);
			break;
		case 'E':
			ca_env = false;
			break;
		case 'p':
			canon_path(optarg, policy);
			break;
		case 'H':
			canon_path(optarg, hosts);
			if (access(hosts, R_OK) < 0) {
				fprintf(stderr, "sluicectl run: --hosts %s: %s\n", hosts,
					strerror(errno));
				return EXIT_USAGE;
			}
			run_hosts = hosts;
			break;
		case 'h':
			fputs(run_help, stdout);
			return EXIT_OK;
		default:
			return bad_option("run", argv);
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "sluicectl run: missing command (sluicectl run [OPTIONS] -- CMD ...)\n");
		return EXIT_USAGE;
	}

	if (!id[0]) {
		uint32_t rnd;

		if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
			die_internal("getrandom", errno);
		snprintf(id, sizeof(id), "run-%d-%08x", (int)getpid(), rnd);
	}
	if (!parent[0]) {
		rc = sb_cgroup2_root(parent, sizeof(parent) - sizeof(CGROUP_PARENT_NAME) - 1);
		if (rc)
			die_internal("cannot find the cgroup v2 mount", -rc);
		strcat(parent, "/" CGROUP_PARENT_NAME);
	}
	if (snprintf(cgroup, sizeof(cgroup), "%s/%s", parent, id) >= (int)sizeof(cgroup) ||
	    snprintf(pin, sizeof(pin), "%s/netns/%s", run_dir, id) >= (int)sizeof(pin) ||
	    !field_ok(cgroup) || !field_ok(pin)) {
		fprintf(stderr, "sluicectl run: cgroup or run-dir path too long or has tabs\n");
		return EXIT_USAGE;
	}

	install_forwarder();
	/* Ask first: no plumbing is made when sluiced is not there. */
	ex = request(ca_env ? "CA" : "PING", reply, sizeof(reply));
	if (ex)
		return ex;
	if (ca_env)
		snprintf(ca, sizeof(ca), "%s", reply);

	if (!stat(cgroup, &st)) {
		fprintf(stderr, "sluicectl run: %s already exists (id in use?)\n", cgroup);
		return EXIT_USAGE;
	}
	rc = sb_cgroup_create(parent);
	if (!rc)
		rc = sb_cgroup_create(cgroup);
	if (rc) {
		fprintf(stderr, "sluicectl: cannot create cgroup %s: %s\n", cgroup, strerror(-rc));
		return EXIT_INTERNAL;
	}
	if (new_netns) {
		rc = sb_netns_create(pin);
		if (rc) {
			fprintf(stderr, "sluicectl: cannot create netns pin %s: %s\n", pin,
				strerror(-rc));
			ex = EXIT_INTERNAL;
			goto out_remove_cgroup;
		}
	}

	if (!field_ok(policy)) {
		fprintf(stderr, "sluicectl run: paths may not contain tabs or newlines\n");
		ex = EXIT_USAGE;
		goto out_remove_netns;
	}
	ex = requestf(reply, sizeof(reply), "ATTACH\t%s\t%s\t%s\t%s", id, cgroup,
		      new_netns ? pin : "-", policy[0] ? policy : "-");
	if (ex)
		goto out_remove_netns;

	ex = run_and_wait(cgroup, new_netns ? pin : NULL, ca_env ? ca : NULL, argv + optind);

	if (requestf(reply, sizeof(reply), "DETACH\t%s", id))
		fprintf(stderr, "sluicectl: warning: detach of %s failed\n", id);
out_remove_netns:
	if (new_netns) {
		rc = sb_netns_remove(pin);
		if (rc)
			fprintf(stderr, "sluicectl: warning: cannot remove netns pin %s: %s\n", pin,
				strerror(-rc));
	}
out_remove_cgroup:
	rc = sb_cgroup_remove(cgroup);
	if (rc)
		fprintf(stderr, "sluicectl: warning: cannot remove cgroup %s: %s\n", cgroup,
			strerror(-rc));
	return ex;
}

/* ---- attach / detach ---- */

static const char attach_help[] =
	"usage: sluicectl attach --cgroup PATH [--netns PATH] [--id ID] [--policy FILE]\n"
	"Put an existing cgroup v2 (and optionally its network namespace, e.g.\n"
	"/run/netns/NAME) under sluiced. Without --netns it shares the host netns.\n"
	"The id defaults to the cgroup's name plus a hash of its path. Prints the id.\n";

static int cmd_attach(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "cgroup", required_argument, NULL, 'c' },
		{ "netns", required_argument, NULL, 'n' },
		{ "id", required_argument, NULL, 'i' },
		{ "policy", required_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	char cgroup[PATH_MAX] = "", netns[PATH_MAX] = "", id[SB_ID_MAX + 1] = "";
	char policy[PATH_MAX] = "";
	char reply[CTL_LINE_MAX];
	struct stat st;
	int opt, ex;

	while ((opt = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			canon_path(optarg, cgroup);
			break;
		case 'n':
			canon_path(optarg, netns);
			break;
		case 'p':
			canon_path(optarg, policy);
			break;
		case 'i':
			if (!sb_id_valid(optarg)) {
				fprintf(stderr, "sluicectl attach: invalid id '%s'\n", optarg);
				return EXIT_USAGE;
			}
			strcpy(id, optarg);
			break;
		case 'h':
			fputs(attach_help, stdout);
			return EXIT_OK;
		default:
			return bad_option("attach", argv);
		}
	}
	if (!cgroup[0] || optind != argc) {
		fputs(attach_help, stderr);
		return EXIT_USAGE;
	}
	if (!sb_is_cgroup2_dir(cgroup)) {
		fprintf(stderr, "sluicectl attach: %s is not a cgroup v2 directory\n", cgroup);
		return EXIT_USAGE;
	}
	if (netns[0] && stat(netns, &st)) {
		fprintf(stderr, "sluicectl attach: %s: %s\n", netns, strerror(errno));
		return EXIT_USAGE;
	}
	if (!field_ok(cgroup) || !field_ok(netns) || !field_ok(policy)) {
		fprintf(stderr, "sluicectl attach: paths may not contain tabs or newlines\n");
		return EXIT_USAGE;
	}
	if (!id[0])
		derive_id(cgroup, id);
	ex = requestf(reply, sizeof(reply), "ATTACH\t%s\t%s\t%s\t%s", id, cgroup,
		      netns[0] ? netns : "-", policy[0] ? policy : "-");
	if (ex)
		return ex;
	printf("%s\n", id);
	return EXIT_OK;
}

static const char detach_help[] =
	"usage: sluicectl detach --id ID | --cgroup PATH\n"
	"Detach sluiced from a sandbox; --cgroup derives the id as attach does.\n";

static int cmd_detach(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "cgroup", required_argument, NULL, 'c' },
		{ "id", required_argument, NULL, 'i' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	char cgroup[PATH_MAX] = "", id[SB_ID_MAX + 1] = "";
	char reply[CTL_LINE_MAX];
	int opt;

	while ((opt = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			canon_path(optarg, cgroup);
			break;
		case 'i':
			if (!sb_id_valid(optarg)) {
				fprintf(stderr, "sluicectl detach: invalid id '%s'\n", optarg);
				return EXIT_USAGE;
			}
			strcpy(id, optarg);
			break;
		case 'h':
			fputs(detach_help, stdout);
			return EXIT_OK;
		default:
			return bad_option("detach", argv);
		}
	}
	if (!cgroup[0] == !id[0] || optind != argc) {
		fputs(detach_help, stderr);
		return EXIT_USAGE;
	}
	if (cgroup[0])
		derive_id(cgroup, id);
	return requestf(reply, sizeof(reply), "DETACH\t%s", id);
}

/* ---- env / status / ping ---- */

static int cmd_simple(int argc, char **argv, const char *help)
{
	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		fputs(help, stdout);
		return -1;
	}
	if (argc != 1) {
		fputs(help, stderr);
		return EXIT_USAGE;
	}
	return EXIT_OK;
}

static const char env_help[] = "usage: sluicectl env\n"
			       "Print shell exports that make common TLS clients trust sluiced's CA:\n"
			       "  eval \"$(sluicectl env)\"\n";

static int cmd_env(int argc, char **argv)
{
	char reply[CTL_LINE_MAX];
	int ex = cmd_simple(argc, argv, env_help);

	if (ex)
		return ex < 0 ? EXIT_OK : ex;
	ex = request("CA", reply, sizeof(reply));
	if (ex)
		return ex;
	for (size_t i = 0; i < sizeof(ca_env_vars) / sizeof(ca_env_vars[0]); i++) {
		printf("export %s=", ca_env_vars[i]);
		print_shell_quoted(reply);
		putchar('\n');
	}
	return EXIT_OK;
}

static const char reload_help[] =
	"usage: sluicectl reload [--id ID]\n"
	"Recompile the policy of one sandbox (or of every sandbox) from its file. A file\n"
	"that does not compile is refused with file:line:col and the old policy keeps\n"
	"serving; open connections finish on the policy they started with.\n";

static int cmd_reload(int argc, char **argv)
{
	char reply[CTL_LINE_MAX];
	int ex;

	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		fputs(reload_help, stdout);
		return EXIT_OK;
	}
	if (argc == 1) {
		ex = requestf(reply, sizeof(reply), "RELOAD");
	} else if (argc == 3 && !strcmp(argv[1], "--id") && sb_id_valid(argv[2])) {
		ex = requestf(reply, sizeof(reply), "RELOAD\t%s", argv[2]);
	} else {
		fputs(reload_help, stderr);
		return EXIT_USAGE;
	}
	if (!ex && reply[0])
		printf("%s\n", reply);
	return ex;
}

static const char status_help[] = "usage: sluicectl status\nPrint sluiced's status as JSON.\n";
static const char ping_help[] = "usage: sluicectl ping\nCheck that sluiced answers.\n";

static int cmd_print(int argc, char **argv, const char *help, const char *verb)
{
	char reply[CTL_LINE_MAX];
	int ex = cmd_simple(argc, argv, help);

	if (ex)
		return ex < 0 ? EXIT_OK : ex;
	ex = request(verb, reply, sizeof(reply));
	if (ex)
		return ex;
	printf("%s\n", reply);
	return EXIT_OK;
}

static int cmd_status(int argc, char **argv)
{
	return cmd_print(argc, argv, status_help, "STATUS");
}

static int cmd_ping(int argc, char **argv)
{
	return cmd_print(argc, argv, ping_help, "PING");
}

static const char policy_help[] =
	"usage: sluicectl policy check FILE\n"
	"Compile a policy file without sluiced. Prints each problem as\n"
	"  FILE:LINE:COL: error: MESSAGE   or   FILE:LINE:COL: warning: MESSAGE\n"
	"on stderr and, when valid, one summary line on stdout.\n"
	"Exit 0 valid (warnings allowed), 2 invalid or usage, 1 the file cannot be read.\n";

static int cmd_policy(int argc, char **argv)
{
	struct pol_error err;
	struct pol *p = NULL;
	int rc;

	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		fputs(policy_help, stdout);
		return EXIT_OK;
	}
	if (argc != 3 || strcmp(argv[1], "check")) {
		fputs(policy_help, stderr);
		return EXIT_USAGE;
	}
	rc = pol_load_file(argv[2], &p, &err);
	if (rc) {
		if (err.line)
			fprintf(stderr, "%s:%u:%u: error: %s\n", err.file, err.line, err.col, err.msg);
		else
			fprintf(stderr, "%s: error: %s\n", err.file, err.msg);
		return rc == -EINVAL || rc == -EFBIG ? EXIT_USAGE : EXIT_ERR;
	}
	for (unsigned i = 0; i < pol_nwarnings(p); i++) {
		const struct pol_error *w = pol_warning(p, i);

		fprintf(stderr, "%s:%u:%u: warning: %s\n", w->file, w->line, w->col, w->msg);
	}
	printf("policy OK: %u allow rules, %u passthrough, %u secrets, hash %s\n", pol_nallow(p),
	       pol_npassthrough(p), pol_nsecrets(p), pol_hash(p));
	pol_unref(p);
	return EXIT_OK;
}

/* ---- main ---- */

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *summary;
} commands[] = {
	{ "run", cmd_run, "run a command in a new sandbox attached to sluiced" },
	{ "attach", cmd_attach, "attach sluiced to an existing cgroup (and netns)" },
	{ "detach", cmd_detach, "detach sluiced from a sandbox" },
	{ "env", cmd_env, "print CA environment exports for shells" },
	{ "status", cmd_status, "print sluiced's status (JSON)" },
	{ "ping", cmd_ping, "check that sluiced is running" },
	{ "policy", cmd_policy, "policy check FILE: validate a policy file" },
	{ "reload", cmd_reload, "recompile sandbox policies from their files" },
};

static void usage(FILE *out)
{
	fprintf(out, "usage: sluicectl [--run-dir DIR] COMMAND [ARGS...]\n"
		     "  --run-dir DIR  sluiced's run directory (default $SLUICE_RUN_DIR or "
		     DEFAULT_RUN_DIR ");\n"
		     "                 the control socket is DIR/sluiced.sock\n"
		     "commands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].summary);
	fprintf(out, "Run 'sluicectl COMMAND --help' for a command's options.\n");
}

static int set_run_dir(const char *dir)
{
	if (!dir[0] || strlen(dir) >= sizeof(run_dir) - 32) {
		fprintf(stderr, "sluicectl: bad run directory '%s'\n", dir);
		return EXIT_USAGE;
	}
	strcpy(run_dir, dir);
	return EXIT_OK;
}

int main(int argc, char **argv)
{
	const char *env = getenv("SLUICE_RUN_DIR");
	int i = 1;

	if (env && env[0] && set_run_dir(env))
		return EXIT_USAGE;
	while (i < argc && argv[i][0] == '-') {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(stdout);
			return EXIT_OK;
		} else if (!strcmp(argv[i], "--run-dir") && i + 1 < argc) {
			if (set_run_dir(argv[i + 1]))
				return EXIT_USAGE;
			i += 2;
		} else if (!strncmp(argv[i], "--run-dir=", 10)) {
			if (set_run_dir(argv[i] + 10))
				return EXIT_USAGE;
			i++;
		} else {
			fprintf(stderr, "sluicectl: unknown option '%s'\n", argv[i]);
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (i >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	snprintf(sock_path, sizeof(sock_path), "%s/sluiced.sock", run_dir);

	for (size_t c = 0; c < sizeof(commands) / sizeof(commands[0]); c++) {
		if (strcmp(argv[i], commands[c].name))
			continue;
		opterr = 0;
		optind = 0; /* GNU getopt: re-initialise for the subcommand's argv */
		return commands[c].fn(argc - i, argv + i);
	}
	fprintf(stderr, "sluicectl: unknown command '%s'\n", argv[i]);
	usage(stderr);
	return EXIT_USAGE;
}
