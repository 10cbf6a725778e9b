// SPDX-License-Identifier: MIT
/*
 * sluicectl: the command line for sluiced. Talks to it over the management
 * API (HTTP/1.1 + JSON on run_dir/sluiced.sock, docs/management-api.md) and
 * does the sandbox plumbing for `run` itself: cgroup, netns pin, attach, the
 * command, detach, cleanup.
 *
 * Exit codes: 0 ok, 1 sluiced refused (an HTTP error answer), 2 usage,
 * 69 sluiced not running, 70 internal error, 75 `sync --wait` timed out; `run` exits with its command's status (128+signal when
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
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "policy.h"
#include "sandbox.h"

#define EXIT_OK 0
#define EXIT_ERR 1
#define EXIT_USAGE 2
#define EXIT_NOT_RUNNING 69
#define EXIT_INTERNAL 70
#define EXIT_TIMEOUT 75 /* sync --wait: nothing applied in time (EX_TEMPFAIL) */
#define EXIT_EXEC 127

#define DEFAULT_RUN_DIR "/run/sluice"
#define CGROUP_PARENT_NAME "sluice.sandboxes"

static const char *const ca_env_vars[] = { "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE",
					   "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE" };

static char run_dir[PATH_MAX] = DEFAULT_RUN_DIR;
/* --url / $SLUICE_URL: sluiced's TCP management listener instead of the
 * Unix socket; the bearer token comes from $SLUICE_MANAGEMENT_TOKEN (never
 * from the command line, where other users could read it in ps). */
static char api_url[256];
static char api_auth[512];
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

/* ---- the management API (HTTP/1.1 + JSON on sluiced.sock) ---- */

/* Replies larger than this are refused (a status of thousands of sandboxes
 * is well under it). */
#define API_MAX_REPLY (64u << 20)
#define API_TIMEOUT_S 30

struct api_resp {
	long status;
	char *body;
	size_t len;
	bool too_big;
};

static size_t api_write_cb(char *p, size_t sz, size_t n, void *ud)
{
	struct api_resp *r = ud;
	size_t len = sz * n;
	char *b;

	if (len > API_MAX_REPLY - r->len) {
		r->too_big = true;
		return 0;
	}
	b = realloc(r->body, r->len + len + 1);
	if (!b)
		return 0;
	memcpy(b + r->len, p, len);
	r->body = b;
	r->len += len;
	r->body[r->len] = '\0';
	return len;
}

/* Why connecting failed, in the words sluicectl has always used. */
static int api_connect_failed(void)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd, err = 0;

	if (api_url[0]) {
		fprintf(stderr, "sluicectl: sluiced is not running (nothing listens at %s)\n",
			api_url);
		return EXIT_NOT_RUNNING;
	}
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", sock_path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sun, sizeof(sun)))
		err = errno;
	if (fd >= 0)
		close(fd);
	if (err == 0 || err == ENOENT || err == ECONNREFUSED) {
		fprintf(stderr, "sluicectl: sluiced is not running (no socket at %s)\n", sock_path);
		return EXIT_NOT_RUNNING;
	}
	fprintf(stderr, "sluicectl: cannot talk to sluiced at %s: %s\n", sock_path, strerror(err));
	return EXIT_INTERNAL;
}

/*
 * One HTTP request to sluiced. body: JSON text or NULL. Any HTTP answer
 * returns EXIT_OK with r filled (the caller frees r->body); a transport
 * failure prints its one line and returns the exit code to use.
 */
static int api_call(const char *method, const char *path, const char *body, long timeout_s,
		    struct api_resp *r)
{
	static bool inited;
	struct curl_slist *hdrs = NULL;
	char url[512];
	CURLcode cc;
	CURL *h;
	int ex = EXIT_OK;

	memset(r, 0, sizeof(*r));
	if (!inited) {
		if (curl_global_init(CURL_GLOBAL_NOTHING))
			die_internal("curl_global_init", ENOMEM);
		inited = true;
	}
	h = curl_easy_init();
	if (!h)
		die_internal("curl_easy_init", ENOMEM);
	if (api_url[0]) {
		snprintf(url, sizeof(url), "%s%s", api_url, path);
		hdrs = curl_slist_append(hdrs, api_auth);
	} else {
		/* The host part is ignored on a Unix socket. */
		snprintf(url, sizeof(url), "http://sluiced%s", path);
		curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, sock_path);
	}
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, timeout_s);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, api_write_cb);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http");
	hdrs = curl_slist_append(hdrs, "Expect:");
	if (body) {
		hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	} else if (!strcmp(method, "POST")) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
	}
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	cc = curl_easy_perform(h);
	if (cc == CURLE_COULDNT_CONNECT) {
		ex = api_connect_failed();
	} else if (cc == CURLE_OPERATION_TIMEDOUT) {
		fprintf(stderr, "sluicectl: sluiced at %s did not answer within %ld s\n",
			api_url[0] ? api_url : sock_path, timeout_s);
		ex = EXIT_INTERNAL;
	} else if (cc != CURLE_OK) {
		fprintf(stderr, "sluicectl: cannot talk to sluiced at %s: %s\n",
			api_url[0] ? api_url : sock_path,
			r->too_big ? "reply too large" : curl_easy_strerror(cc));
		ex = EXIT_INTERNAL;
	} else {
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
	}
	if (ex) {
		free(r->body);
		r->body = NULL;
		r->len = 0;
	}
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	return ex;
}

/* Print an error answer as "sluicectl: MESSAGE" (the stable code is in the
 * --json output and the docs). */
static void api_print_error(const struct api_resp *r)
{
	json_t *j = r->body ? json_loadb(r->body, r->len, 0, NULL) : NULL;
	const char *msg = json_string_value(json_object_get(j, "message"));
	const char *code = json_string_value(json_object_get(j, "error"));

	if (msg && msg[0])
		fprintf(stderr, "sluicectl: %s\n", msg);
	else if (code)
		fprintf(stderr, "sluicectl: %s (HTTP %ld)\n", code, r->status);
	else
		fprintf(stderr, "sluicectl: sluiced answered HTTP %ld\n", r->status);
	json_decref(j);
}

/* Parse a reply body (NULL when empty). EXIT_OK or EXIT_INTERNAL. */
static int api_parse(const struct api_resp *r, json_t **ret)
{
	json_t *j = NULL;

	if (r->len && !(j = json_loadb(r->body, r->len, 0, NULL))) {
		fprintf(stderr, "sluicectl: sluiced sent a reply that is not JSON\n");
		return EXIT_INTERNAL;
	}
	*ret = j;
	return EXIT_OK;
}

/*
 * A request whose 2xx answer is wanted. EXIT_OK with the parsed JSON body in
 * *ret (NULL when empty; the caller decrefs; ret may be NULL), EXIT_ERR after
 * printing the daemon's message for other statuses, or a transport code.
 */
static int api(const char *method, const char *path, const json_t *body, json_t **ret)
{
	struct api_resp r;
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_t *j = NULL;
	int ex;

	if (body && !text)
		die_internal("json_dumps", ENOMEM);
	ex = api_call(method, path, text, API_TIMEOUT_S, &r);
	free(text);
	if (ex)
		return ex;
	if (r.status < 200 || r.status > 299) {
		api_print_error(&r);
		free(r.body);
		return EXIT_ERR;
	}
	ex = api_parse(&r, &j);
	free(r.body);
	if (ex)
		return ex;
	if (ret)
		*ret = j;
	else
		json_decref(j);
	return EXIT_OK;
}

/* ---- human output ---- */

/* A JSON value as one table cell ("-" for null, missing or empty). */
static char *cell(const json_t *v)
{
	char *s = NULL;

	if (!v || json_is_null(v))
		s = strdup("-");
	else if (json_is_string(v))
		s = strdup(json_string_value(v)[0] ? json_string_value(v) : "-");
	else if (json_is_true(v))
		s = strdup("yes");
	else if (json_is_false(v))
		s = strdup("no");
	else if (json_is_integer(v))
		s = asprintf(&s, "%lld", (long long)json_integer_value(v)) < 0 ? NULL : s;
	else if (json_is_real(v))
		s = asprintf(&s, "%g", json_real_value(v)) < 0 ? NULL : s;
	else
		s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	if (!s)
		die_internal("out of memory", ENOMEM);
	for (char *p = s; *p; p++)
		if (*p == '\n' || *p == '\t' || *p == '\r')
			*p = ' ';
	return s;
}

struct column {
	const char *title;
	const char *key;
	size_t max; /* cut cells to this many bytes; 0: no limit */
};

#define MAX_COLUMNS 16

/* A table of rows (an array of objects), columns sized to their content. */
static void print_table(const json_t *rows, const struct column *cols, size_t ncols)
{
	size_t nrows = json_array_size(rows), w[MAX_COLUMNS] = { 0 };
	char **cells = calloc(nrows * ncols + 1, sizeof(char *));

	if (!cells || ncols > MAX_COLUMNS)
		die_internal("out of memory", ENOMEM);
	for (size_t c = 0; c < ncols; c++)
		w[c] = strlen(cols[c].title);
	for (size_t r = 0; r < nrows; r++) {
		for (size_t c = 0; c < ncols; c++) {
			char *s = cell(json_object_get(json_array_get(rows, r), cols[c].key));

			if (cols[c].max && strlen(s) > cols[c].max)
				s[cols[c].max] = '\0';
			cells[r * ncols + c] = s;
			if (strlen(s) > w[c])
				w[c] = strlen(s);
		}
	}
	for (size_t r = 0; r <= nrows; r++) {
		for (size_t c = 0; c < ncols; c++) {
			const char *v = r ? cells[(r - 1) * ncols + c] : cols[c].title;

			if (c + 1 < ncols)
				printf("%-*s  ", (int)w[c], v);
			else
				printf("%s\n", v);
		}
	}
	for (size_t i = 0; i < nrows * ncols; i++)
		free(cells[i]);
	free(cells);
}

static void print_json(const json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);

	if (!s)
		die_internal("json_dumps", ENOMEM);
	printf("%s\n", s);
	free(s);
}

static const struct column status_cols[] = {
	{ "ID", "id", 0 },
	{ "GEN", "policy_generation", 0 },
	{ "POLICY HASH", "policy_hash", 12 },
	{ "PRINCIPAL", "principal", 0 },
	{ "SYNCED", "synced_once", 0 },
	{ "LAST SYNC", "last_sync_at", 0 },
	{ "CONNS", "open_connections", 0 },
	{ "LAST ERROR", "last_error", 60 },
};

/* The status object for a human: one summary line, then a table. */
static void print_status(const json_t *st)
{
	const json_t *sbs = json_object_get(st, "sandboxes");
	char *ver = cell(json_object_get(st, "version"));
	char *mode = cell(json_object_get(st, "mode"));
	long long up = json_integer_value(json_object_get(st, "uptime_s"));
	size_t n = json_array_size(sbs);

	printf("sluiced %s, mode %s, up %lldd%02lldh%02lldm%02llds, %zu sandbox%s\n", ver, mode,
	       up / 86400, up / 3600 % 24, up / 60 % 60, up % 60, n, n == 1 ? "" : "es");
	free(ver);
	free(mode);
	if (n)
		print_table(sbs, status_cols, sizeof(status_cols) / sizeof(status_cols[0]));
}

/* ---- requests shared by several commands ---- */

static int api_attach(const char *id, const char *cgroup, const char *netns, const char *policy)
{
	json_t *b = json_pack("{s:s, s:s, s:s?, s:s?}", "id", id, "cgroup", cgroup, "netns",
			      netns && netns[0] ? netns : NULL, "policy",
			      policy && policy[0] ? policy : NULL);
	int ex;

	if (!b) {
		fprintf(stderr, "sluicectl: paths must be valid UTF-8\n");
		return EXIT_USAGE;
	}
	ex = api("POST", "/v1/sandboxes", b, NULL);
	json_decref(b);
	return ex;
}

static int api_detach(const char *id)
{
	char path[32 + SB_ID_MAX];

	snprintf(path, sizeof(path), "/v1/sandboxes/%s", id);
	return api("DELETE", path, NULL, NULL);
}

/* The path of sluiced's CA certificate into ca (PATH_MAX bytes). */
static int api_ca(char *ca)
{
	json_t *j = NULL;
	const char *v;
	int ex = api("GET", "/v1/ca", NULL, &j);

	if (ex)
		return ex;
	v = json_string_value(json_object_get(j, "ca_cert"));
	if (!v || strlen(v) >= PATH_MAX) {
		fprintf(stderr, "sluicectl: sluiced did not name its CA certificate\n");
		json_decref(j);
		return EXIT_INTERNAL;
	}
	strcpy(ca, v);
	json_decref(j);
	return EXIT_OK;
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
	"--hosts FILE: CMD sees FILE as /etc/hosts. CMD runs in a mount namespace of its\n"
	"own where the cgroup2 mount is read-only (it cannot leave its cgroup).\n"
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
/*
 * The command's own mount namespace (nothing changes for anyone else):
 * - the cgroup2 mount is read-only in it, so the command cannot write its pid
 *   into another cgroup's cgroup.procs and leave the sandbox cgroup (and with
 *   it sluice's BPF programs); without CAP_SYS_ADMIN it cannot remount it;
 * - --hosts FILE: it sees FILE as /etc/hosts, like docker run --add-host.
 */
static int private_mounts(const char *hosts)
{
	char cg2[PATH_MAX];

	if (unshare(CLONE_NEWNS) < 0)
		return -errno;
	/* never let the mounts below propagate back to the host */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return -errno;
	if (sb_cgroup2_root(cg2, sizeof(cg2)) == 0 &&
	    mount(NULL, cg2, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV |
				    MS_NOEXEC, NULL) < 0)
		return -errno;
	if (hosts && mount(hosts, "/etc/hosts", NULL, MS_BIND, NULL) < 0)
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
	rc = private_mounts(run_hosts);
	if (rc) {
		fprintf(stderr, "sluicectl: sandbox mounts%s%s: %s\n", run_hosts ? " --hosts " : "",
			run_hosts ? run_hosts : "", strerror(-rc));
		_exit(EXIT_INTERNAL);
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
	char ca[PATH_MAX] = "";
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
	    snprintf(pin, sizeof(pin), "%s/netns/%s", run_dir, id) >= (int)sizeof(pin)) {
		fprintf(stderr, "sluicectl run: cgroup or run-dir path too long\n");
		return EXIT_USAGE;
	}

	install_forwarder();
	/* Ask first: no plumbing is made when sluiced is not there. */
	ex = ca_env ? api_ca(ca) : api("GET", "/healthz", NULL, NULL);
	if (ex)
		return ex;

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

	ex = api_attach(id, cgroup, new_netns ? pin : NULL, policy);
	if (ex)
		goto out_remove_netns;

	ex = run_and_wait(cgroup, new_netns ? pin : NULL, ca_env ? ca : NULL, argv + optind);

	if (api_detach(id))
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
	if (!id[0])
		derive_id(cgroup, id);
	ex = api_attach(id, cgroup, netns, policy);
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
	return api_detach(id);
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
	char ca[PATH_MAX];
	int ex = cmd_simple(argc, argv, env_help);

	if (ex)
		return ex < 0 ? EXIT_OK : ex;
	ex = api_ca(ca);
	if (ex)
		return ex;
	for (size_t i = 0; i < sizeof(ca_env_vars) / sizeof(ca_env_vars[0]); i++) {
		printf("export %s=", ca_env_vars[i]);
		print_shell_quoted(ca);
		putchar('\n');
	}
	return EXIT_OK;
}

/* Parse "--json" as the only option of a command with no arguments.
 * Returns EXIT_OK, -1 after printing help, or EXIT_USAGE. */
static int json_flag(int argc, char **argv, const char *help, bool *ret_json)
{
	*ret_json = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			fputs(help, stdout);
			return -1;
		}
		if (strcmp(argv[i], "--json")) {
			fputs(help, stderr);
			return EXIT_USAGE;
		}
		*ret_json = true;
	}
	return EXIT_OK;
}

static const char reload_help[] =
	"usage: sluicectl reload [--id ID] [--json]\n"
	"Recompile the policy of one sandbox (or of every sandbox) from its file. A file\n"
	"that does not compile is refused with file:line:col and the old policy keeps\n"
	"serving; open connections finish on the policy they started with.\n";

static int cmd_reload(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "id", required_argument, NULL, 'i' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	json_t *body = NULL, *reply = NULL;
	const char *msg;
	bool json = false;
	int opt, ex;

	while ((opt = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (opt) {
		case 'i':
			if (!sb_id_valid(optarg) || body) {
				fputs(reload_help, stderr);
				json_decref(body);
				return EXIT_USAGE;
			}
			body = json_pack("{s:s}", "id", optarg);
			break;
		case 'j':
			json = true;
			break;
		case 'h':
			fputs(reload_help, stdout);
			json_decref(body);
			return EXIT_OK;
		default:
			json_decref(body);
			fputs(reload_help, stderr);
			return EXIT_USAGE;
		}
	}
	if (optind != argc) {
		json_decref(body);
		fputs(reload_help, stderr);
		return EXIT_USAGE;
	}
	ex = api("POST", "/v1/reload", body, &reply);
	json_decref(body);
	if (ex)
		return ex;
	msg = json_string_value(json_object_get(reply, "message"));
	if (json && reply)
		print_json(reply);
	else if (msg)
		printf("%s\n", msg);
	else if (reply)
		print_json(reply);
	json_decref(reply);
	return EXIT_OK;
}

static const char status_help[] =
	"usage: sluicectl status [--json]\n"
	"Print sluiced's status: version, mode, uptime and, per sandbox, its policy\n"
	"generation and hash, principal, sync state, last error and open connections.\n"
	"--json prints the API's object as is (docs/management-api.md).\n";

static int cmd_status(int argc, char **argv)
{
	json_t *st = NULL;
	bool json;
	int ex = json_flag(argc, argv, status_help, &json);

	if (ex)
		return ex < 0 ? EXIT_OK : ex;
	ex = api("GET", "/v1/status", NULL, &st);
	if (ex)
		return ex;
	if (json)
		print_json(st);
	else
		print_status(st);
	json_decref(st);
	return EXIT_OK;
}

static const char sandboxes_help[] =
	"usage: sluicectl sandboxes [ID] [--json]\n"
	"List the sandboxes attached to sluiced, or show one by id.\n";

static const struct column sandbox_cols[] = {
	{ "ID", "id", 0 },
	{ "CGROUP", "cgroup", 0 },
	{ "NETNS", "netns", 0 },
	{ "POLICY", "policy", 0 },
	{ "POLICY HASH", "policy_hash", 12 },
	{ "CONNS", "open_connections", 0 },
};

static int cmd_sandboxes(int argc, char **argv)
{
	char path[32 + SB_ID_MAX];
	const char *id = NULL;
	bool json = false;
	json_t *j = NULL;
	const char *key;
	json_t *v;
	int ex;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			fputs(sandboxes_help, stdout);
			return EXIT_OK;
		} else if (!strcmp(argv[i], "--json")) {
			json = true;
		} else if (!id && argv[i][0] != '-' && sb_id_valid(argv[i])) {
			id = argv[i];
		} else {
			fputs(sandboxes_help, stderr);
			return EXIT_USAGE;
		}
	}
	snprintf(path, sizeof(path), "/v1/sandboxes%s%s", id ? "/" : "", id ? id : "");
	ex = api("GET", path, NULL, &j);
	if (ex)
		return ex;
	if (json) {
		print_json(j);
	} else if (id) {
		json_object_foreach(j, key, v) {
			char *c = cell(v);

			printf("%s: %s\n", key, c);
			free(c);
		}
	} else if (json_array_size(json_object_get(j, "sandboxes"))) {
		print_table(json_object_get(j, "sandboxes"), sandbox_cols,
			    sizeof(sandbox_cols) / sizeof(sandbox_cols[0]));
	} else {
		printf("no sandboxes\n");
	}
	json_decref(j);
	return EXIT_OK;
}

static const char sync_help[] =
	"usage: sluicectl sync [--wait SECONDS] [--json]\n"
	"Ask sluiced to sync from its control plane now. With --wait (0 < SECONDS <= 300),\n"
	"return once a sync has completed and been applied, and print the applied status;\n"
	"exit 75 when none was applied in time (the status is printed all the same).\n";

static int cmd_sync(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "wait", required_argument, NULL, 'w' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct api_resp r;
	char path[64] = "/v1/sync", *end;
	double wait = 0;
	bool json = false;
	json_t *j = NULL;
	int opt, ex;

	while ((opt = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (opt) {
		case 'w':
			errno = 0;
			wait = strtod(optarg, &end);
			if (errno || end == optarg || *end || !(wait > 0 && wait <= 300)) {
				fprintf(stderr, "sluicectl sync: --wait takes 0 < SECONDS <= 300\n");
				return EXIT_USAGE;
			}
			break;
		case 'j':
			json = true;
			break;
		case 'h':
			fputs(sync_help, stdout);
			return EXIT_OK;
		default:
			return bad_option("sync", argv);
		}
	}
	if (optind != argc) {
		fputs(sync_help, stderr);
		return EXIT_USAGE;
	}
	if (wait > 0)
		snprintf(path, sizeof(path), "/v1/sync?wait=%.3f", wait);
	/* The server answers by the deadline; allow for a slow status op. */
	ex = api_call("POST", path, NULL, (long)wait + API_TIMEOUT_S, &r);
	if (ex)
		return ex;
	if ((r.status < 200 || r.status > 299) && r.status != 504) {
		api_print_error(&r);
		free(r.body);
		return EXIT_ERR;
	}
	ex = api_parse(&r, &j);
	if (ex) {
		free(r.body);
		return ex;
	}
	if (json && j)
		print_json(j);
	if (r.status == 504) {
		api_print_error(&r);
		if (!json)
			print_status(j);
		ex = EXIT_TIMEOUT;
	} else if (!json && wait > 0) {
		print_status(j);
	} else if (!json) {
		printf("sync requested\n");
	}
	json_decref(j);
	free(r.body);
	return ex;
}

static const char ping_help[] = "usage: sluicectl ping\nCheck that sluiced answers.\n";

static int cmd_ping(int argc, char **argv)
{
	int ex = cmd_simple(argc, argv, ping_help);

	if (ex)
		return ex < 0 ? EXIT_OK : ex;
	ex = api("GET", "/healthz", NULL, NULL);
	if (ex)
		return ex;
	printf("pong\n");
	return EXIT_OK;
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
	{ "status", cmd_status, "print sluiced's status and its sandboxes" },
	{ "sandboxes", cmd_sandboxes, "list the attached sandboxes (or show one)" },
	{ "sync", cmd_sync, "sync from the control plane (--wait: until applied)" },
	{ "ping", cmd_ping, "check that sluiced is running" },
	{ "policy", cmd_policy, "policy check FILE: validate a policy file" },
	{ "reload", cmd_reload, "recompile sandbox policies from their files" },
};

static void usage(FILE *out)
{
	fprintf(out, "usage: sluicectl [--run-dir DIR | --url http://ADDR:PORT] COMMAND [ARGS...]\n"
		     "  --run-dir DIR  sluiced's run directory (default $SLUICE_RUN_DIR or "
		     DEFAULT_RUN_DIR ");\n"
		     "                 the management socket is DIR/sluiced.sock\n"
		     "  --url URL      sluiced's TCP management listener instead (default\n"
		     "                 $SLUICE_URL; SLUICE_MANAGEMENT_LISTEN on sluiced's side);\n"
		     "                 the token is read from $SLUICE_MANAGEMENT_TOKEN\n"
		     "commands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(out, "  %-9s %s\n", commands[i].name, commands[i].summary);
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

/* Only plain http://HOST:PORT (the listener has no TLS and no path). */
static int set_url(const char *url)
{
	const char *tok = getenv("SLUICE_MANAGEMENT_TOKEN");
	size_t n = strlen(url);

	while (n && url[n - 1] == '/')
		n--;
	if (strncmp(url, "http://", 7) || n <= 7 || n >= sizeof(api_url) ||
	    memchr(url + 7, '/', n - 7) || strpbrk(url, " \t\r\n")) {
		fprintf(stderr, "sluicectl: bad --url '%s' (want http://ADDR:PORT)\n", url);
		return EXIT_USAGE;
	}
	if (!tok || !tok[0] || strlen(tok) > sizeof(api_auth) - 32 || strpbrk(tok, "\r\n")) {
		fprintf(stderr, "sluicectl: --url needs the management token in "
				"$SLUICE_MANAGEMENT_TOKEN\n");
		return EXIT_USAGE;
	}
	memcpy(api_url, url, n);
	api_url[n] = '\0';
	snprintf(api_auth, sizeof(api_auth), "Authorization: Bearer %s", tok);
	return EXIT_OK;
}

int main(int argc, char **argv)
{
	const char *env = getenv("SLUICE_RUN_DIR");
	const char *url = getenv("SLUICE_URL");
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
		} else if (!strcmp(argv[i], "--url") && i + 1 < argc) {
			url = argv[i + 1];
			i += 2;
		} else if (!strncmp(argv[i], "--url=", 6)) {
			url = argv[i] + 6;
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
	if (url && url[0] && set_url(url))
		return EXIT_USAGE;

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
