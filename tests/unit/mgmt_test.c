// SPDX-License-Identifier: MIT
/* Unit tests for user/mgmt.c over real sockets in a temp dir, with fake ops;
 * plus end-to-end checks of the sluicectl binary against that server
 * (skipped when it is not built: set SLUICECTL or run from the repo root). */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <grp.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
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

#include "mgmt.h"
#include "sandbox.h"

#define TOKEN "0123456789abcdef-test-token"

enum sync_mode { SYNC_AFTER_200MS = 1, SYNC_NEVER = 2 };

struct fake {
	pthread_mutex_t lock;
	enum sync_mode sync_mode;
	struct mgmt_call *pending; /* a sync call never answered */
	int attaches, detaches, reloads, syncs, last_wait_ms;
	char attach_id[128], attach_cgroup[4096], detach_id[128], reload_id[128];
	bool attach_netns_null;
	int attach_status;
	const char *attach_msg;
	bool ready;
};

static struct fake fake;
static struct mgmt *srv;
static char dir[256], sock[300];

static json_t *fake_status_json(void)
{
	return json_pack("{s:s, s:i, s:s, s:s, s:[{s:s, s:i, s:s, s:s, s:b, s:s, s:n, s:i}]}",
			 "version", "test", "uptime_s", 5, "mode", "managed", "ca",
			 "/tmp/sluice test/ca.pem", "sandboxes", "id", "sb1", "policy_generation", 3,
			 "policy_hash", "0123456789abcdef0123", "principal", "alice", "synced_once",
			 1, "last_sync_at", "2025-01-01T00:00:00Z", "last_error",
			 "open_connections", 2);
}

static void fake_status(void *opaque, struct mgmt_call *c)
{
	mgmt_reply(c, 200, fake_status_json());
}

static json_t *fake_sandbox(void)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:i}", "id", "sb1", "cgroup",
			 "/sys/fs/cgroup/sb1", "netns", "/run/netns/sb1", "policy", "default",
			 "policy_hash", "0123456789abcdef0123", "open_connections", 2);
}

static void fake_sandboxes(void *opaque, struct mgmt_call *c, const char *id)
{
	if (!id)
		mgmt_reply(c, 200, json_pack("{s:[o]}", "sandboxes", fake_sandbox()));
	else if (!strcmp(id, "sb1"))
		mgmt_reply(c, 200, fake_sandbox());
	else
		mgmt_reply_error(c, 404, "unknown_sandbox", "no sandbox '%s'", id);
}

static void fake_attach(void *opaque, struct mgmt_call *c, const json_t *body)
{
	const char *id = json_string_value(json_object_get(body, "id"));
	json_t *ns = json_object_get(body, "netns");

	pthread_mutex_lock(&fake.lock);
	fake.attaches++;
	snprintf(fake.attach_id, sizeof(fake.attach_id), "%s", id);
	snprintf(fake.attach_cgroup, sizeof(fake.attach_cgroup), "%s",
		 json_string_value(json_object_get(body, "cgroup")));
	fake.attach_netns_null = !json_is_string(ns);
	pthread_mutex_unlock(&fake.lock);
	if (fake.attach_status)
		mgmt_reply_error(c, fake.attach_status, "bad_request", "%s", fake.attach_msg);
	else if (!strcmp(id, "taken"))
		mgmt_reply_error(c, 409, "conflict", "sandbox 'taken' is already attached");
	else
		mgmt_reply(c, 201, json_pack("{s:s}", "id", id));
}

static void fake_detach(void *opaque, struct mgmt_call *c, const char *id)
{
	pthread_mutex_lock(&fake.lock);
	fake.detaches++;
	snprintf(fake.detach_id, sizeof(fake.detach_id), "%s", id);
	pthread_mutex_unlock(&fake.lock);
	if (!strcmp(id, "nope"))
		mgmt_reply_error(c, 404, "unknown_sandbox", "no sandbox '%s'", id);
	else
		mgmt_reply(c, 204, NULL);
}

static void fake_reload(void *opaque, struct mgmt_call *c, const char *id)
{
	pthread_mutex_lock(&fake.lock);
	fake.reloads++;
	snprintf(fake.reload_id, sizeof(fake.reload_id), "%s", id ? id : "(all)");
	pthread_mutex_unlock(&fake.lock);
	mgmt_reply(c, 200, json_pack("{s:i, s:s}", "reloaded", 1, "message", "reloaded 1 sandbox"));
}

static void *late_reply(void *arg)
{
	struct timespec ts = { 0, 200 * 1000000 };

	nanosleep(&ts, NULL);
	mgmt_reply(arg, 200, fake_status_json());
	return NULL;
}

static void fake_sync(void *opaque, struct mgmt_call *c, int wait_ms)
{
	pthread_t t;

	pthread_mutex_lock(&fake.lock);
	fake.syncs++;
	fake.last_wait_ms = wait_ms;
	pthread_mutex_unlock(&fake.lock);
	if (!wait_ms) {
		mgmt_reply(c, 202, json_pack("{s:s}", "sync", "requested"));
	} else if (fake.sync_mode == SYNC_AFTER_200MS) {
		cr_assert_eq(pthread_create(&t, NULL, late_reply, c), 0);
		pthread_detach(t);
	} else {
		pthread_mutex_lock(&fake.lock);
		cr_assert_null(fake.pending);
		fake.pending = c;
		pthread_mutex_unlock(&fake.lock);
	}
}

static void fake_metrics(void *opaque, struct mgmt_call *c)
{
	static const char text[] = "# TYPE sluice_up gauge\nsluice_up 1\n";

	mgmt_reply_text(c, 200, "text/plain; version=0.0.4", text, sizeof(text) - 1);
}

static bool fake_ready(void *opaque)
{
	return fake.ready;
}

static const struct mgmt_ops fake_ops = {
	.status = fake_status,
	.sandboxes = fake_sandboxes,
	.attach = fake_attach,
	.detach = fake_detach,
	.reload = fake_reload,
	.sync = fake_sync,
	.metrics = fake_metrics,
	.ready = fake_ready,
};

static int free_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001) };
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	cr_assert_geq(fd, 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

static int tcp_port;

static void start_server(bool tcp, int gid)
{
	char err[256] = "", listen[64];
	struct mgmt_opts o = { .unix_path = sock, .unix_gid = gid, .ca_path = "/tmp/sluice test/ca.pem" };
	int r;

	if (tcp) {
		tcp_port = free_port();
		snprintf(listen, sizeof(listen), "127.0.0.1:%d", tcp_port);
		o.tcp_listen = listen;
		o.token = TOKEN;
	}
	r = mgmt_start(&o, &fake_ops, &fake, &srv, err, sizeof(err));
	cr_assert_eq(r, 0, "mgmt_start: %d %s", r, err);
}

static void setup_common(void)
{
	strcpy(dir, "/tmp/sluice-mgmt-test-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	/* The server creates run/ itself (0750). */
	snprintf(sock, sizeof(sock), "%s/run/sluiced.sock", dir);
	memset(&fake, 0, sizeof(fake));
	pthread_mutex_init(&fake.lock, NULL);
	fake.ready = true;
	fake.sync_mode = SYNC_AFTER_200MS;
	signal(SIGPIPE, SIG_IGN);
}

static void setup(void)
{
	setup_common();
	start_server(false, -1);
}

static void setup_tcp(void)
{
	setup_common();
	start_server(true, -1);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void teardown(void)
{
	struct mgmt_call *pending;
	char netns_dir[300];

	mgmt_stop(srv);
	srv = NULL;
	/* A call still held by an op after the stop: its reply is dropped. */
	pthread_mutex_lock(&fake.lock);
	pending = fake.pending;
	fake.pending = NULL;
	pthread_mutex_unlock(&fake.lock);
	if (pending) {
		cr_expect(mgmt_call_gone(pending));
		mgmt_reply(pending, 200, json_object());
	}
	snprintf(netns_dir, sizeof(netns_dir), "%s/run/netns", dir);
	umount2(netns_dir, MNT_DETACH);
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

/* ---- a tiny HTTP client ---- */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int connect_unix(void)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = 5 };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	strcpy(sun.sun_path, sock);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun))) {
		close(fd);
		return -errno;
	}
	return fd;
}

static int connect_tcp(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(tcp_port),
				  .sin_addr.s_addr = htonl(0x7f000001) };
	struct timeval tv = { .tv_sec = 5 };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "%s", strerror(errno));
	return fd;
}

static void send_all(int fd, const char *s, size_t len)
{
	while (len) {
		ssize_t w = send(fd, s, len, MSG_NOSIGNAL);

		if (w <= 0)
			return; /* the server may answer and close early */
		s += w;
		len -= (size_t)w;
	}
}

static void send_str(int fd, const char *s)
{
	send_all(fd, s, strlen(s));
}

struct resp {
	int status;
	char head[4096];
	char body[65536];
	size_t body_len;
};

/* Read one response (Content-Length framed). Returns status or -1. */
static int read_resp(int fd, struct resp *r)
{
	static char buf[70000];
	size_t n = 0, cl = 0;
	char *end = NULL, *p;

	memset(r, 0, sizeof(*r));
	/* Byte at a time up to the head's end: the next response stays queued. */
	while (!end && n < sizeof(buf) - 1) {
		ssize_t k = recv(fd, buf + n, 1, 0);

		if (k <= 0)
			return -1;
		n++;
		buf[n] = '\0';
		if (n >= 4 && !memcmp(buf + n - 4, "\r\n\r\n", 4))
			end = buf + n;
	}
	if (!end)
		return -1;
	snprintf(r->head, sizeof(r->head), "%.*s", (int)(end - buf), buf);
	if (sscanf(buf, "HTTP/1.1 %d", &r->status) != 1)
		return -1;
	if (r->status == 100)
		return read_resp(fd, r);
	p = strcasestr(r->head, "\r\nContent-Length: ");
	if (p)
		cl = strtoul(p + 18, NULL, 10);
	cr_assert_lt(cl, sizeof(r->body));
	while (r->body_len < cl) {
		ssize_t k = recv(fd, r->body + r->body_len, cl - r->body_len, 0);

		if (k <= 0)
			return -1;
		r->body_len += (size_t)k;
	}
	r->body[r->body_len] = '\0';
	return r->status;
}

/* One request on a fresh Unix connection. */
static int req(const char *method, const char *path, const char *ctype, const char *body,
	       struct resp *r)
{
	char head[2048];
	int fd = connect_unix(), st;
	size_t bl = body ? strlen(body) : 0;

	cr_assert_geq(fd, 0, "connect: %s", strerror(-fd));
	snprintf(head, sizeof(head), "%s %s HTTP/1.1\r\nHost: x\r\n%s%s%sContent-Length: %zu\r\n\r\n",
		 method, path, ctype ? "Content-Type: " : "", ctype ? ctype : "",
		 ctype ? "\r\n" : "", bl);
	send_all(fd, head, strlen(head));
	if (bl)
		send_all(fd, body, bl);
	st = read_resp(fd, r);
	close(fd);
	return st;
}

static json_t *body_json(const struct resp *r)
{
	json_error_t e;
	json_t *j = json_loads(r->body, 0, &e);

	cr_assert_not_null(j, "not JSON: %s (%s)", r->body, e.text);
	return j;
}

static void expect_error(const struct resp *r, int status, const char *code)
{
	json_t *j;

	cr_expect_eq(r->status, status, "want %d got %d: %s", status, r->status, r->body);
	cr_expect_not_null(strstr(r->head, "Content-Type: application/json"), "%s", r->head);
	j = body_json(r);
	cr_expect_str_eq(json_string_value(json_object_get(j, "error")), code, "%s", r->body);
	cr_expect(json_is_string(json_object_get(j, "message")), "%s", r->body);
	json_decref(j);
}

/* ---- tests ---- */

Test(mgmt, socket_and_dir_modes, .init = setup, .fini = teardown)
{
	char d[300];
	struct stat st;

	cr_assert_eq(lstat(sock, &st), 0);
	cr_expect(S_ISSOCK(st.st_mode));
	cr_expect_eq(st.st_mode & 0777, 0660, "%o", st.st_mode & 0777);
	snprintf(d, sizeof(d), "%s/run", dir);
	cr_assert_eq(stat(d, &st), 0);
	cr_expect_eq(st.st_mode & 0777, 0750, "%o", st.st_mode & 0777);
}

Test(mgmt, endpoints, .init = setup, .fini = teardown)
{
	struct resp r;
	json_t *j;

	cr_expect_eq(req("GET", "/v1/status", NULL, NULL, &r), 200);
	cr_expect_not_null(strstr(r.head, "Content-Type: application/json\r\n"));
	j = body_json(&r);
	cr_expect_str_eq(json_string_value(json_object_get(j, "version")), "test");
	json_decref(j);

	cr_expect_eq(req("GET", "/v1/sandboxes", NULL, NULL, &r), 200);
	cr_expect_not_null(strstr(r.body, "\"sandboxes\":[{"), "%s", r.body);
	cr_expect_eq(req("GET", "/v1/sandboxes/sb1", NULL, NULL, &r), 200);
	cr_expect_eq(req("POST", "/v1/sandboxes", "application/json",
			 "{\"id\":\"new1\",\"cgroup\":\"/sys/fs/cgroup/x\",\"netns\":null}", &r),
		     201, "%s", r.body);
	cr_expect_str_eq(fake.attach_id, "new1");
	cr_expect(fake.attach_netns_null);
	cr_expect_eq(req("DELETE", "/v1/sandboxes/sb1", NULL, NULL, &r), 204);
	cr_expect_eq(r.body_len, 0);
	cr_expect_null(strstr(r.head, "Content-Length"), "%s", r.head);
	cr_expect_str_eq(fake.detach_id, "sb1");

	cr_expect_eq(req("POST", "/v1/reload", NULL, NULL, &r), 200);
	cr_expect_str_eq(fake.reload_id, "(all)");
	cr_expect_eq(req("POST", "/v1/reload", "application/json", "{\"id\":\"sb1\"}", &r), 200);
	cr_expect_str_eq(fake.reload_id, "sb1");
	cr_expect_eq(req("POST", "/v1/sync", NULL, NULL, &r), 202);
	cr_expect_eq(fake.last_wait_ms, 0);
	cr_expect_eq(req("POST", "/v1/sync", "application/json; charset=utf-8", "{}", &r), 202);

	cr_expect_eq(req("GET", "/metrics", NULL, NULL, &r), 200);
	cr_expect_not_null(strstr(r.head, "Content-Type: text/plain; version=0.0.4\r\n"));
	cr_expect_str_eq(r.body, "# TYPE sluice_up gauge\nsluice_up 1\n");
	cr_expect_eq(req("GET", "/healthz", NULL, NULL, &r), 200);
	cr_expect_eq(req("GET", "/readyz", NULL, NULL, &r), 200);
	fake.ready = false;
	req("GET", "/readyz", NULL, NULL, &r);
	expect_error(&r, 503, "not_ready");
	cr_expect_eq(req("GET", "/v1/ca", NULL, NULL, &r), 200);
	cr_expect_str_eq(r.body, "{\"ca_cert\":\"/tmp/sluice test/ca.pem\"}\n");
}

Test(mgmt, methods_not_allowed, .init = setup, .fini = teardown)
{
	static const struct {
		const char *path, *allow;
		const char *bad[3];
	} m[] = {
		{ "/v1/status", "GET", { "POST", "DELETE", "PUT" } },
		{ "/v1/sandboxes", "GET, POST", { "DELETE", "PUT", "PATCH" } },
		{ "/v1/sandboxes/sb1", "GET, DELETE", { "POST", "PUT", "PATCH" } },
		{ "/v1/reload", "POST", { "GET", "DELETE", "PUT" } },
		{ "/v1/sync", "POST", { "GET", "DELETE", "PUT" } },
		{ "/v1/ca", "GET", { "POST", "DELETE", "PUT" } },
		{ "/metrics", "GET", { "POST", "DELETE", "PUT" } },
		{ "/healthz", "GET", { "POST", "DELETE", "PUT" } },
		{ "/readyz", "GET", { "POST", "DELETE", "PUT" } },
	};
	char allow[64];
	struct resp r;

	for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
		for (int k = 0; k < 3; k++) {
			req(m[i].bad[k], m[i].path, NULL, NULL, &r);
			expect_error(&r, 405, "method_not_allowed");
			snprintf(allow, sizeof(allow), "\r\nAllow: %s\r\n", m[i].allow);
			cr_expect_not_null(strstr(r.head, allow), "%s %s: %s", m[i].bad[k],
					   m[i].path, r.head);
		}
	}
	req("GET", "/v2/status", NULL, NULL, &r);
	expect_error(&r, 404, "not_found");
	req("GET", "/v1/status/", NULL, NULL, &r);
	expect_error(&r, 404, "not_found");
}

Test(mgmt, bad_bodies, .init = setup, .fini = teardown)
{
	struct resp r;

	req("POST", "/v1/sandboxes", "application/json", "{\"id\":", &r);
	expect_error(&r, 400, "bad_json");
	req("POST", "/v1/sandboxes", "application/json", "{\"id\":\"a\",\"id\":\"b\"}", &r);
	expect_error(&r, 400, "bad_json");
	req("POST", "/v1/sandboxes", "application/json", "[1,2]", &r);
	expect_error(&r, 400, "bad_request");
	req("POST", "/v1/sandboxes", "text/plain", "{\"id\":\"x\",\"cgroup\":\"/x\"}", &r);
	expect_error(&r, 415, "unsupported_media_type");
	req("POST", "/v1/sandboxes", NULL, "{\"id\":\"x\",\"cgroup\":\"/x\"}", &r);
	expect_error(&r, 415, "unsupported_media_type");
	req("POST", "/v1/sandboxes", "application/json", NULL, &r);
	expect_error(&r, 400, "bad_request");
	req("POST", "/v1/sandboxes", "application/json", "{\"id\":\"../x\",\"cgroup\":\"/x\"}", &r);
	expect_error(&r, 400, "bad_request");
	req("POST", "/v1/sandboxes", "application/json", "{\"id\":\"x\",\"cgroup\":\"rel\"}", &r);
	expect_error(&r, 400, "bad_request");
	req("POST", "/v1/sandboxes", "application/json",
	    "{\"id\":\"x\",\"cgroup\":\"/x\",\"extra\":1}", &r);
	expect_error(&r, 400, "bad_request");
	req("POST", "/v1/sandboxes", "application/json", "{\"id\":\"x\",\"cgroup\":\"/x\",\"netns\":5}",
	    &r);
	expect_error(&r, 400, "bad_request");
	cr_expect_eq(fake.attaches, 0, "no invalid attach reached the op");
	req("POST", "/v1/sandboxes", "application/json", "{\"id\":\"taken\",\"cgroup\":\"/x\"}", &r);
	expect_error(&r, 409, "conflict");
	req("POST", "/v1/reload", "application/json", "{\"id\":7}", &r);
	expect_error(&r, 400, "bad_request");
	req("POST", "/v1/reload", "application/json", "{\"nope\":\"x\"}", &r);
	expect_error(&r, 400, "bad_request");
	cr_expect_eq(fake.reloads, 0);
}

Test(mgmt, unknown_and_invalid_sandbox, .init = setup, .fini = teardown)
{
	struct resp r;

	req("GET", "/v1/sandboxes/ghost", NULL, NULL, &r);
	expect_error(&r, 404, "unknown_sandbox");
	req("DELETE", "/v1/sandboxes/nope", NULL, NULL, &r);
	expect_error(&r, 404, "unknown_sandbox");
	req("GET", "/v1/sandboxes/a%2Fb", NULL, NULL, &r);
	expect_error(&r, 400, "bad_request");
	req("GET", "/v1/sandboxes/a/b", NULL, NULL, &r);
	expect_error(&r, 400, "bad_request");
}

Test(mgmt, limits, .init = setup, .fini = teardown)
{
	static char big[40000];
	struct resp r;
	int fd;

	/* Declared too large: refused before the body is sent. */
	fd = connect_unix();
	send_str(fd, "POST /v1/sandboxes HTTP/1.1\r\nContent-Type: application/json\r\n"
		     "Content-Length: 2000000\r\n\r\n");
	cr_expect_eq(read_resp(fd, &r), 413);
	expect_error(&r, 413, "body_too_large");
	cr_expect_not_null(strstr(r.head, "Connection: close"));
	close(fd);

	/* Chunked past the limit. */
	fd = connect_unix();
	send_str(fd, "POST /v1/sandboxes HTTP/1.1\r\nContent-Type: application/json\r\n"
		     "Transfer-Encoding: chunked\r\n\r\n");
	memset(big, 'a', sizeof(big));
	for (int i = 0; i < 30; i++) {
		char sz[16];

		snprintf(sz, sizeof(sz), "%zx\r\n", sizeof(big));
		send_all(fd, sz, strlen(sz));
		send_all(fd, big, sizeof(big));
		send_str(fd, "\r\n");
	}
	cr_expect_eq(read_resp(fd, &r), 413);
	close(fd);

	/* Head over 16 KiB. */
	fd = connect_unix();
	send_str(fd, "GET /v1/status HTTP/1.1\r\nX-Big: ");
	memset(big, 'b', 20000);
	send_all(fd, big, 20000);
	send_str(fd, "\r\n\r\n");
	cr_expect_eq(read_resp(fd, &r), 431);
	expect_error(&r, 431, "header_too_large");
	close(fd);

	/* Garbage. */
	fd = connect_unix();
	send_str(fd, "HELLO\r\n\r\n");
	cr_expect_eq(read_resp(fd, &r), 400);
	close(fd);

	/* And the server is fine. */
	cr_expect_eq(req("GET", "/healthz", NULL, NULL, &r), 200);
}

Test(mgmt, keep_alive_and_pipelining, .init = setup, .fini = teardown)
{
	static const char two[] = "GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n"
				  "POST /v1/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
	struct resp r;
	int fd = connect_unix();

	send_str(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
	cr_expect_eq(read_resp(fd, &r), 200);
	cr_expect_null(strstr(r.head, "Connection: close"));
	send_str(fd, "GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n");
	cr_expect_eq(read_resp(fd, &r), 200);
	send_all(fd, two, sizeof(two) - 1);
	cr_expect_eq(read_resp(fd, &r), 200);
	cr_expect_not_null(strstr(r.body, "\"version\""));
	cr_expect_eq(read_resp(fd, &r), 200);
	cr_expect_not_null(strstr(r.body, "reloaded"));
	/* HTTP/1.0 without keep-alive: closed after the answer. */
	send_str(fd, "GET /healthz HTTP/1.0\r\n\r\n");
	cr_expect_eq(read_resp(fd, &r), 200);
	cr_expect_not_null(strstr(r.head, "Connection: close"));
	{
		char c;

		cr_expect_eq(recv(fd, &c, 1, 0), 0);
	}
	close(fd);
}

Test(mgmt, sync_wait_answered, .init = setup, .fini = teardown)
{
	struct resp r;
	double t0 = now_s(), dt;
	json_t *j;

	cr_expect_eq(req("POST", "/v1/sync?wait=5", NULL, NULL, &r), 200, "%s", r.body);
	dt = now_s() - t0;
	cr_expect_geq(dt, 0.19);
	cr_expect_lt(dt, 2.0);
	cr_expect_eq(fake.last_wait_ms, 5000);
	j = body_json(&r);
	cr_expect_str_eq(json_string_value(json_object_get(j, "mode")), "managed");
	json_decref(j);
}

Test(mgmt, sync_wait_deadline, .init = setup, .fini = teardown)
{
	struct resp r;
	double t0 = now_s(), dt;
	json_t *j;

	fake.sync_mode = SYNC_NEVER;
	req("POST", "/v1/sync?wait=0.8", NULL, NULL, &r);
	dt = now_s() - t0;
	expect_error(&r, 504, "sync_timeout");
	cr_expect_geq(dt, 0.79);
	cr_expect_lt(dt, 2.5);
	cr_expect_eq(fake.last_wait_ms, 800);
	/* The 504 carries the current status. */
	j = body_json(&r);
	cr_expect_str_eq(json_string_value(json_object_get(j, "version")), "test", "%s", r.body);
	cr_expect(json_is_array(json_object_get(j, "sandboxes")));
	json_decref(j);
	cr_assert_not_null(fake.pending);
	cr_expect(mgmt_call_gone(fake.pending));
	cr_expect_eq(mgmt_call_deadline_ms(fake.pending), 0);
	/* The late reply is dropped. */
	mgmt_reply(fake.pending, 200, json_object());
	fake.pending = NULL;
	cr_expect_eq(req("GET", "/healthz", NULL, NULL, &r), 200);
}

Test(mgmt, sync_wait_range, .init = setup, .fini = teardown)
{
	static const char *const bad[] = { "wait=0", "wait=301", "wait=-1", "wait=abc", "wait=",
					   "wait=nan", "wait=inf", "foo=1", "wait=1&x=2" };
	char path[64];
	struct resp r;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(path, sizeof(path), "/v1/sync?%s", bad[i]);
		req("POST", path, NULL, NULL, &r);
		expect_error(&r, 400, "bad_request");
	}
	cr_expect_eq(fake.syncs, 0);
	cr_expect_eq(req("POST", "/v1/sync?wait=300", NULL, NULL, &r), 200);
	cr_expect_eq(fake.last_wait_ms, 300000);
}

Test(mgmt, client_leaves_during_wait, .init = setup, .fini = teardown)
{
	struct mgmt_call *c = NULL;
	struct resp r;
	int fd;

	fake.sync_mode = SYNC_NEVER;
	fd = connect_unix();
	send_str(fd, "POST /v1/sync?wait=30 HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
	for (int i = 0; i < 200 && !c; i++) {
		usleep(10000);
		pthread_mutex_lock(&fake.lock);
		c = fake.pending;
		pthread_mutex_unlock(&fake.lock);
	}
	cr_assert_not_null(c);
	cr_expect_not(mgmt_call_gone(c));
	cr_expect_gt(mgmt_call_deadline_ms(c), 25000);
	close(fd);
	for (int i = 0; i < 200 && !mgmt_call_gone(c); i++)
		usleep(10000);
	cr_expect(mgmt_call_gone(c), "the op learns its client left");
	cr_expect_eq(req("GET", "/v1/status", NULL, NULL, &r), 200);
	mgmt_reply(c, 200, json_object());
	fake.pending = NULL;
	cr_expect_eq(req("GET", "/healthz", NULL, NULL, &r), 200);
}

Test(mgmt, stop_with_call_in_flight, .init = setup, .fini = teardown)
{
	int fd;

	fake.sync_mode = SYNC_NEVER;
	fd = connect_unix();
	send_str(fd, "POST /v1/sync?wait=30 HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
	for (int i = 0; i < 200 && !fake.pending; i++)
		usleep(10000);
	cr_assert_not_null(fake.pending);
	close(fd);
	/* teardown stops the server first, then replies: must not crash. */
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	cr_assert_not_null(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

Test(mgmt, no_fd_leak, .init = setup, .fini = teardown)
{
	struct resp r;
	int before, after;

	req("GET", "/v1/status", NULL, NULL, &r);
	usleep(50000);
	before = count_fds();
	for (int i = 0; i < 200; i++) {
		static const char *const paths[] = { "/v1/status", "/v1/sandboxes", "/metrics",
						     "/nope" };

		cr_assert_gt(req("GET", paths[i % 4], NULL, NULL, &r), 0);
	}
	for (int i = 0; i < 100 && (after = count_fds()) != before; i++)
		usleep(10000);
	cr_expect_eq(after, before, "fds before %d after %d", before, after);
}

/* Run a child that drops to uid 65534 (with groups) and asks for status. */
static int status_as_nobody(gid_t group)
{
	pid_t pid;
	int st;

	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		struct resp r;
		gid_t g[1] = { group };

		if (setgroups(group ? 1 : 0, g) || setgid(65534) || setuid(65534))
			_exit(100);
		_exit(req("GET", "/v1/status", NULL, NULL, &r) == 200 ? 0
		      : r.status == 403 && strstr(r.body, "\"forbidden\"") ? 3
									 : 101);
	}
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st));
	return WEXITSTATUS(st);
}

static void open_up_socket(void)
{
	char d[300];

	/* Let other users reach the socket so SO_PEERCRED is what decides. */
	snprintf(d, sizeof(d), "%s/run", dir);
	cr_assert_eq(chmod(dir, 0755), 0);
	cr_assert_eq(chmod(d, 0755), 0);
	cr_assert_eq(chmod(sock, 0666), 0);
}

Test(mgmt, peer_credentials, .init = setup, .fini = teardown)
{
	struct resp r;

	if (geteuid() != 0)
		cr_skip_test("needs root");
	cr_expect_eq(req("GET", "/v1/status", NULL, NULL, &r), 200, "root gets through");
	open_up_socket();
	cr_expect_eq(status_as_nobody(0), 3, "uid 65534 gets 403");
	cr_expect_eq(status_as_nobody(4242), 3, "an unconfigured group gets 403");
}

static void setup_gid(void)
{
	setup_common();
	start_server(false, 4242);
}

Test(mgmt, peer_group, .init = setup_gid, .fini = teardown)
{
	struct stat st;

	if (geteuid() != 0)
		cr_skip_test("needs root");
	cr_assert_eq(stat(sock, &st), 0);
	cr_expect_eq(st.st_gid, 4242);
	open_up_socket();
	cr_expect_eq(status_as_nobody(4242), 0, "a member of the configured group gets through");
	cr_expect_eq(status_as_nobody(0), 3);
}

Test(mgmt, tcp_needs_token)
{
	struct mgmt_opts o = { .unix_path = "/tmp/sluice-mgmt-notoken.sock", .unix_gid = -1,
			       .tcp_listen = "127.0.0.1:1" };
	struct mgmt *m = NULL;
	char err[256] = "";

	cr_expect_eq(mgmt_start(&o, &fake_ops, &fake, &m, err, sizeof(err)), -EINVAL);
	cr_expect_not_null(strstr(err, "token"), "%s", err);
	o.token = "short";
	cr_expect_eq(mgmt_start(&o, &fake_ops, &fake, &m, err, sizeof(err)), -EINVAL);
	o.token = TOKEN;
	o.tcp_listen = "localhost:80";
	cr_expect_eq(mgmt_start(&o, &fake_ops, &fake, &m, err, sizeof(err)), -EINVAL);
	cr_expect_null(m);
	cr_expect_eq(access(o.unix_path, F_OK), -1);
}

static int tcp_req(const char *auth, struct resp *r)
{
	char head[512];
	int fd = connect_tcp(), st;

	snprintf(head, sizeof(head), "GET /v1/status HTTP/1.1\r\nHost: x\r\n%s%s%s\r\n",
		 auth ? "Authorization: " : "", auth ? auth : "", auth ? "\r\n" : "");
	send_all(fd, head, strlen(head));
	st = read_resp(fd, r);
	close(fd);
	return st;
}

Test(mgmt, tcp_bearer_token, .init = setup_tcp, .fini = teardown)
{
	struct resp r;
	int fd;

	tcp_req(NULL, &r);
	expect_error(&r, 401, "unauthorized");
	cr_expect_not_null(strstr(r.head, "WWW-Authenticate: Bearer"), "%s", r.head);
	tcp_req("Bearer wrong-token-of-some-length", &r);
	expect_error(&r, 401, "unauthorized");
	tcp_req("Bearer " TOKEN "x", &r);
	expect_error(&r, 401, "unauthorized");
	tcp_req("Basic " TOKEN, &r);
	expect_error(&r, 401, "unauthorized");
	cr_expect_eq(tcp_req("Bearer " TOKEN, &r), 200);
	cr_expect_eq(tcp_req("bearer  " TOKEN, &r), 200);
	/* Probes need no token. */
	fd = connect_tcp();
	send_str(fd, "GET /healthz HTTP/1.1\r\n\r\n");
	cr_expect_eq(read_resp(fd, &r), 200);
	close(fd);
	/* The Unix socket still works without one. */
	cr_expect_eq(req("GET", "/v1/status", NULL, NULL, &r), 200);
}

/* ---- sluicectl end to end ---- */

static const char *sluicectl_path(void)
{
	const char *p = getenv("SLUICECTL");

	return p && p[0] ? p : "build/sluicectl";
}

static void e2e_setup(void)
{
	if (access(sluicectl_path(), X_OK))
		cr_skip_test("%s not built (set SLUICECTL)", sluicectl_path());
	setup();
}

/* Run sluicectl with args (shell-quoted); capture stdout. */
static int run_ctl(const char *args, char *out, size_t outlen)
{
	char cmd[8192];
	size_t n = 0;
	FILE *p;
	int status;

	snprintf(cmd, sizeof(cmd), "'%s' --run-dir '%s/run' %s", sluicectl_path(), dir, args);
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

Test(mgmt, sluicectl_status_sandboxes_sync, .init = e2e_setup, .fini = teardown)
{
	char out[16384], want[512];
	json_t *j;

	cr_expect_eq(run_ctl("ping", out, sizeof(out)), 0);
	cr_expect_str_eq(out, "pong\n");

	cr_expect_eq(run_ctl("status", out, sizeof(out)), 0);
	cr_expect_not_null(strstr(out, "sluiced test, mode managed"), "%s", out);
	cr_expect_not_null(strstr(out, "managed"), "%s", out);
	cr_expect_not_null(strstr(out, "sb1"), "%s", out);
	cr_expect_not_null(strstr(out, "alice"), "%s", out);
	cr_expect_not_null(strstr(out, "ID"), "table header: %s", out);
	cr_expect_eq(run_ctl("status --json", out, sizeof(out)), 0);
	j = json_loads(out, 0, NULL);
	cr_expect_not_null(j, "%s", out);
	cr_expect_str_eq(json_string_value(json_object_get(j, "version")), "test");
	json_decref(j);

	cr_expect_eq(run_ctl("sandboxes", out, sizeof(out)), 0);
	cr_expect_not_null(strstr(out, "sb1"), "%s", out);
	cr_expect_not_null(strstr(out, "/sys/fs/cgroup/sb1"), "%s", out);
	cr_expect_eq(run_ctl("sandboxes --json", out, sizeof(out)), 0);
	cr_expect_eq(strncmp(out, "{\"sandboxes\":[", 14), 0, "%s", out);
	cr_expect_eq(run_ctl("sandboxes sb1", out, sizeof(out)), 0);
	cr_expect_not_null(strstr(out, "/run/netns/sb1"), "%s", out);
	cr_expect_eq(run_ctl("sandboxes ghost 2>&1", out, sizeof(out)), 1);
	cr_expect_not_null(strstr(out, "no sandbox 'ghost'"), "%s", out);

	cr_expect_eq(run_ctl("sync", out, sizeof(out)), 0);
	cr_expect_eq(fake.last_wait_ms, 0);
	cr_expect_eq(run_ctl("sync --wait 5", out, sizeof(out)), 0);
	cr_expect_eq(fake.last_wait_ms, 5000);
	cr_expect_not_null(strstr(out, "sb1"), "%s", out);
	cr_expect_eq(run_ctl("sync --wait 5 --json", out, sizeof(out)), 0);
	cr_expect_not_null(strstr(out, "\"principal\":\"alice\""), "%s", out);
	fake.sync_mode = SYNC_NEVER;
	cr_expect_eq(run_ctl("sync --wait 0.5 --json 2>/dev/null", out, sizeof(out)), 75);
	cr_expect_not_null(strstr(out, "\"error\":\"sync_timeout\""), "%s", out);
	mgmt_reply(fake.pending, 200, json_object());
	fake.pending = NULL;
	cr_expect_eq(run_ctl("sync --wait 0 2>/dev/null", NULL, 0), 2);
	cr_expect_eq(run_ctl("sync --wait 301 2>/dev/null", NULL, 0), 2);

	cr_expect_eq(run_ctl("reload", out, sizeof(out)), 0);
	cr_expect_str_eq(out, "reloaded 1 sandbox\n");
	cr_expect_eq(run_ctl("reload --id sb1", out, sizeof(out)), 0);
	cr_expect_str_eq(fake.reload_id, "sb1");
	cr_expect_eq(run_ctl("reload --json", out, sizeof(out)), 0);
	cr_expect_not_null(strstr(out, "\"reloaded\":1"), "%s", out);

	cr_expect_eq(run_ctl("env", out, sizeof(out)), 0);
	cr_expect_str_eq(out, "export SSL_CERT_FILE='/tmp/sluice test/ca.pem'\n"
			      "export REQUESTS_CA_BUNDLE='/tmp/sluice test/ca.pem'\n"
			      "export NODE_EXTRA_CA_CERTS='/tmp/sluice test/ca.pem'\n"
			      "export CURL_CA_BUNDLE='/tmp/sluice test/ca.pem'\n");

	mgmt_stop(srv);
	srv = NULL;
	cr_expect_eq(run_ctl("status 2>&1", out, sizeof(out)), 69);
	snprintf(want, sizeof(want), "sluicectl: sluiced is not running (no socket at %s)\n", sock);
	cr_expect_str_eq(out, want);
	cr_expect_eq(run_ctl("sync --wait 1 2>/dev/null", NULL, 0), 69);
}

Test(mgmt, sluicectl_attach_detach, .init = e2e_setup, .fini = teardown)
{
	char root[4096], cg_parent[4200], cg[4400], args[8192], out[8192], id[128];

	if (geteuid() != 0)
		cr_skip_test("needs root (cgroups)");
	cr_assert_eq(sb_cgroup2_root(root, sizeof(root)), 0);
	snprintf(cg_parent, sizeof(cg_parent), "%s/sluice-mgmt-test-%d", root, (int)getpid());
	snprintf(cg, sizeof(cg), "%s/my box", cg_parent);
	cr_assert_eq(sb_cgroup_create(cg_parent), 0);
	cr_assert_eq(sb_cgroup_create(cg), 0);

	snprintf(args, sizeof(args), "attach --cgroup '%s/'", cg);
	cr_expect_eq(run_ctl(args, out, sizeof(out)), 0);
	cr_expect_eq(strncmp(out, "my_box-", 7), 0, "%s", out);
	cr_expect_str_eq(fake.attach_cgroup, cg);
	cr_expect(fake.attach_netns_null);
	snprintf(id, sizeof(id), "%s", fake.attach_id);
	snprintf(args, sizeof(args), "detach --cgroup '%s'", cg);
	cr_expect_eq(run_ctl(args, NULL, 0), 0);
	cr_expect_str_eq(fake.detach_id, id, "detach --cgroup derives attach's id");
	cr_expect_eq(run_ctl("detach --id nope 2>/dev/null", NULL, 0), 1);
	cr_expect_eq(run_ctl("attach --cgroup /tmp 2>/dev/null", NULL, 0), 2);

	/* A refused attach: exit 1 with the daemon's message. */
	fake.attach_status = 400;
	fake.attach_msg = "policy says no";
	snprintf(args, sizeof(args), "attach --cgroup '%s' 2>&1", cg);
	cr_expect_eq(run_ctl(args, out, sizeof(out)), 1);
	cr_expect_not_null(strstr(out, "policy says no"), "%s", out);
	fake.attach_status = 0;

	/* run: attach, command, detach; exit status passes through. */
	snprintf(args, sizeof(args),
		 "run --id e2e-1 --cgroup-parent '%s' -- sh -c 'echo \"ca=$SSL_CERT_FILE\"; exit 7'",
		 cg_parent);
	cr_expect_eq(run_ctl(args, out, sizeof(out)), 7);
	cr_expect_str_eq(out, "ca=/tmp/sluice test/ca.pem\n");
	cr_expect_str_eq(fake.attach_id, "e2e-1");
	cr_expect_str_eq(fake.detach_id, "e2e-1");
	cr_expect_eq(sb_cgroup_remove(cg_parent), 0);
}

/* sluicectl run's plumbing (moved here from ctl_test with the switch to the
 * management API): the sandbox the command sees, signals, cleanup. */
static char run_parent[4200];

static void run_setup(void)
{
	char root[4096];

	if (geteuid() != 0)
		cr_skip_test("needs root (cgroups, netns)");
	if (access(sluicectl_path(), X_OK))
		cr_skip_test("%s not built (set SLUICECTL)", sluicectl_path());
	cr_assert_eq(sb_cgroup2_root(root, sizeof(root)), 0);
	snprintf(run_parent, sizeof(run_parent), "%s/sluice-mgmt-run-%d", root, (int)getpid());
	setup();
}

static void expect_clean(const char *id)
{
	char path[4400];

	snprintf(path, sizeof(path), "%s/%s", run_parent, id);
	cr_expect_eq(access(path, F_OK), -1, "cgroup %s left behind", path);
	snprintf(path, sizeof(path), "%s/run/netns/%s", dir, id);
	cr_expect_eq(access(path, F_OK), -1, "netns pin %s left behind", path);
}

Test(mgmt, sluicectl_run_sandbox, .init = run_setup, .fini = teardown)
{
	char args[8192], out[8192], marker[400];
	double t0;

	/* What the command sees: its cgroup, a netns with only lo, CA env. */
	snprintf(args, sizeof(args),
		 "run --id e2e-2 --cgroup-parent '%s' -- sh -c "
		 "'cat /proc/self/cgroup; tail -n +3 /proc/net/dev | cut -d: -f1; "
		 "echo \"ca=$SSL_CERT_FILE|$CURL_CA_BUNDLE\"'",
		 run_parent);
	cr_expect_eq(run_ctl(args, out, sizeof(out)), 0);
	cr_expect_str_eq(fake.attach_id, "e2e-2");
	cr_expect(!fake.attach_netns_null);
	cr_expect_not_null(strstr(out, "/e2e-2\n"), "%s", out);
	cr_expect_not_null(strstr(out, "ca=/tmp/sluice test/ca.pem|/tmp/sluice test/ca.pem\n"),
			   "%s", out);
	cr_expect_not_null(strstr(out, "    lo\n"), "%s", out);
	cr_expect_null(strstr(out, "eth"), "%s", out);
	cr_expect_str_eq(fake.detach_id, "e2e-2");
	expect_clean("e2e-2");

	/* --netns host --no-ca-env: netns null, no CA variables. */
	unsetenv("SSL_CERT_FILE");
	snprintf(args, sizeof(args),
		 "run --id e2e-3 --netns host --no-ca-env --cgroup-parent '%s' -- sh -c "
		 "'echo \"ca=${SSL_CERT_FILE-unset}\"'",
		 run_parent);
	cr_expect_eq(run_ctl(args, out, sizeof(out)), 0);
	cr_expect(fake.attach_netns_null);
	cr_expect_str_eq(out, "ca=unset\n");
	expect_clean("e2e-3");

	/* SIGTERM to sluicectl reaches the command (sh dies: 143). */
	snprintf(args, sizeof(args),
		 "run --id e2e-4 --cgroup-parent '%s' -- sh -c "
		 "'sleep 30 & kill -TERM $PPID; sleep 20'",
		 run_parent);
	t0 = now_s();
	cr_expect_eq(run_ctl(args, NULL, 0), 143);
	cr_expect_lt(now_s() - t0, 5.0);
	cr_expect_str_eq(fake.detach_id, "e2e-4");
	expect_clean("e2e-4");

	/* A refused attach: the command never runs, nothing is left. */
	fake.attach_status = 400;
	fake.attach_msg = "policy says no";
	snprintf(marker, sizeof(marker), "%s/ran", dir);
	snprintf(args, sizeof(args), "run --id e2e-5 --cgroup-parent '%s' -- touch '%s' 2>/dev/null",
		 run_parent, marker);
	cr_expect_eq(run_ctl(args, NULL, 0), 1);
	cr_expect_eq(access(marker, F_OK), -1, "command ran although attach failed");
	cr_expect_str_eq(fake.detach_id, "e2e-4");
	expect_clean("e2e-5");
	cr_expect_eq(rmdir(run_parent), 0, "%s", strerror(errno));
}
