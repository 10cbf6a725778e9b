// SPDX-License-Identifier: MIT
/*
 * mgmt: the management API server. One thread, one loop.h loop, one
 * connection state machine per client:
 *
 *   READ  -> (request complete) -> WAIT (an op holds a call) -> WRITE -> READ
 *                               \-> WRITE (answered by the server itself)
 *
 * An op answers through mgmt_reply() from any thread; the reply is posted
 * back to the loop, which writes it if the connection still waits for that
 * call. Call lifetime: a call is owned by its op until mgmt_reply() and is
 * referenced (weakly) by its connection until answered; the struct mgmt
 * itself stays allocated until the last call of a stopped server replied.
 */
#include "mgmt.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h> /* isfinite */
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "http1.h"
#include "loop.h"
#include "sandbox.h"

/* From the first byte of a request to its last. */
#define MGMT_READ_TIMEOUT_MS 10000
/* A keep-alive connection with no request in progress. */
#define MGMT_IDLE_TIMEOUT_MS 60000
/* A response the client does not read. */
#define MGMT_WRITE_TIMEOUT_MS 10000
/* Every op but sync?wait must answer within this. */
#define MGMT_OP_TIMEOUT_MS 60000
/* At a sync deadline, the status op gets this long to describe the state. */
#define MGMT_STATUS_GRACE_MS 2000
#define MGMT_READ_CHUNK 16384
#define MGMT_MIN_TOKEN 16
#define MGMT_MAX_PEER_GROUPS 1024

enum call_kind {
	CALL_OP = 1,             /* an op's reply is the response */
	CALL_SYNC_WAIT = 2,      /* 504 with the status at the deadline */
	CALL_TIMEOUT_STATUS = 3, /* the status op run for a sync deadline */
};

enum conn_state {
	CONN_READ = 1,
	CONN_WAIT = 2,
	CONN_WRITE = 3,
};

struct mgmt_conn;

struct mgmt_call {
	struct mgmt *m;
	struct mgmt_conn *conn; /* loop thread only; NULL once detached */
	enum call_kind kind;
	uint64_t deadline;      /* monotonic ms; immutable */
	int wait_ms;
	atomic_bool gone;
	atomic_bool replied;
	/* The reply, written by the replying thread before the post. */
	int status;
	json_t *json;
	char *text;
	size_t text_len;
	char ctype[64];
};

struct mgmt_conn {
	struct mgmt *m;
	struct mgmt_conn *prev, *next;
	struct loop_io io;
	struct loop_defer defer; /* resume parsing after a response */
	bool tcp;
	bool peer_ok;            /* Unix: SO_PEERCRED passed */
	enum conn_state state;
	struct http1_parser hp;
	char *in;
	size_t in_len;
	char *body;
	size_t body_len, body_cap;
	bool body_too_big;
	bool in_request;         /* bytes of a request seen, not yet complete */
	char *out;
	size_t out_len, out_off;
	bool close_after;
	uint64_t deadline;       /* read / idle / write deadline */
	struct mgmt_call *call;
};

struct mgmt {
	struct loop *loop;
	pthread_t thread;
	bool thread_started;
	bool loop_done;          /* the thread has exited: free conns at once */
	struct mgmt_ops ops;
	void *opaque;
	struct loop_io unix_io, tcp_io, timer_io;
	int unix_fd, tcp_fd, timer_fd;
	char unix_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	bool unlink_on_stop;
	int unix_gid;
	uid_t euid;
	unsigned char token_sha[SHA256_DIGEST_LENGTH];
	size_t max_body;
	char *ca_path;
	struct mgmt_conn *conns;
	unsigned nconns;
	uint64_t timer_at;       /* armed deadline, 0: disarmed */
	/* lock guards stopped and refs; refs = 1 (the server) + live calls. */
	pthread_mutex_t lock;
	bool stopped;
	unsigned refs;
};

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static const char *reason(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 413: return "Content Too Large";
	case 415: return "Unsupported Media Type";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default: return status < 300 ? "OK" : status < 500 ? "Client Error" : "Server Error";
	}
}

static void m_unref(struct mgmt *m)
{
	bool last;

	pthread_mutex_lock(&m->lock);
	last = --m->refs == 0;
	pthread_mutex_unlock(&m->lock);
	if (!last)
		return;
	pthread_mutex_destroy(&m->lock);
	free(m->ca_path);
	free(m);
}

/* ---- calls ---- */

static struct mgmt_call *call_new(struct mgmt *m, enum call_kind kind, int timeout_ms)
{
	struct mgmt_call *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->m = m;
	c->kind = kind;
	c->deadline = mono_ms() + (uint64_t)timeout_ms;
	pthread_mutex_lock(&m->lock);
	m->refs++;
	pthread_mutex_unlock(&m->lock);
	return c;
}

static void call_free(struct mgmt_call *c)
{
	struct mgmt *m = c->m;

	json_decref(c->json);
	free(c->text);
	free(c);
	m_unref(m);
}

bool mgmt_call_gone(const struct mgmt_call *c)
{
	return atomic_load(&c->gone);
}

int mgmt_call_deadline_ms(const struct mgmt_call *c)
{
	uint64_t now = mono_ms();

	return c->deadline > now ? (int)(c->deadline - now) : 0;
}

static void call_deliver(void *arg);

/* Hand a completed call to the loop (or drop it when the server stopped). */
static void call_post(struct mgmt_call *c)
{
	struct mgmt *m = c->m;

	if (atomic_exchange(&c->replied, true))
		abort(); /* a second reply for one call is a bug in an op */
	pthread_mutex_lock(&m->lock);
	if (!m->stopped && loop_post(m->loop, call_deliver, c) == 0) {
		pthread_mutex_unlock(&m->lock);
		return;
	}
	pthread_mutex_unlock(&m->lock);
	atomic_store(&c->gone, true);
	call_free(c);
}

void mgmt_reply(struct mgmt_call *c, int status, json_t *body)
{
	c->status = status;
	c->json = body;
	call_post(c);
}

void mgmt_reply_error(struct mgmt_call *c, int status, const char *code, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	mgmt_reply(c, status, json_pack("{s:s, s:s}", "error", code, "message", msg));
}

void mgmt_reply_text(struct mgmt_call *c, int status, const char *content_type, const char *text,
		     size_t len)
{
	c->status = status;
	snprintf(c->ctype, sizeof(c->ctype), "%s", content_type ? content_type : "text/plain");
	c->text = malloc(len + 1);
	if (c->text) {
		memcpy(c->text, text, len);
		c->text_len = len;
	} else {
		c->status = 500;
		c->json = json_pack("{s:s, s:s}", "error", "internal", "message", "out of memory");
	}
	call_post(c);
}

/* ---- connections: output ---- */

static void conn_close(struct mgmt_conn *conn);
static void conn_process(struct mgmt_conn *conn);
static void rearm_timer(struct mgmt *m);

static void conn_set_events(struct mgmt_conn *conn, uint32_t ev)
{
	if (loop_io_set(conn->m->loop, &conn->io, ev) < 0)
		conn_close(conn);
}

/* Write what is pending; when done, close or go back to reading. */
static void conn_flush(struct mgmt_conn *conn)
{
	while (conn->out_off < conn->out_len) {
		ssize_t w = send(conn->io.fd, conn->out + conn->out_off,
				 conn->out_len - conn->out_off, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN) {
			conn_set_events(conn, EPOLLOUT | EPOLLRDHUP);
			return;
		}
		if (w <= 0) {
			conn_close(conn);
			return;
		}
		conn->out_off += (size_t)w;
	}
	free(conn->out);
	conn->out = NULL;
	conn->out_len = conn->out_off = 0;
	if (conn->close_after) {
		conn_close(conn);
		return;
	}
	http1_next(&conn->hp);
	conn->body_len = 0;
	conn->in_request = false;
	conn->state = CONN_READ;
	conn->deadline = mono_ms() + MGMT_IDLE_TIMEOUT_MS;
	conn_set_events(conn, EPOLLIN | EPOLLRDHUP);
	if (conn->io.fd < 0)
		return;
	/* Pipelined bytes may already be buffered: parse them on the next turn
	 * rather than recursing from here. */
	if (conn->in_len)
		loop_defer(conn->m->loop, &conn->defer);
}

/* Queue a complete response and start writing it. extra: header lines,
 * each ending in CRLF, or NULL. */
static void conn_respond(struct mgmt_conn *conn, int status, const char *ctype, const char *body,
			 size_t len, const char *extra)
{
	bool keep = conn->hp.head.keep_alive && !conn->close_after;
	char head[512];
	int n;

	if (status == 204 || status == 304)
		len = 0;
	if (!keep)
		conn->close_after = true;
	n = snprintf(head, sizeof(head),
		     "HTTP/1.1 %d %s\r\n%s%s%s"
		     "Cache-Control: no-store\r\n%s%s",
		     status, reason(status), len ? "Content-Type: " : "", len ? ctype : "",
		     len ? "\r\n" : "", extra ? extra : "", keep ? "" : "Connection: close\r\n");
	if (status != 204 && status != 304)
		n += snprintf(head + n, sizeof(head) - (size_t)n, "Content-Length: %zu\r\n", len);
	n += snprintf(head + n, sizeof(head) - (size_t)n, "\r\n");
	free(conn->out);
	conn->out = malloc((size_t)n + len);
	if (!conn->out) {
		conn_close(conn);
		return;
	}
	memcpy(conn->out, head, (size_t)n);
	if (len)
		memcpy(conn->out + n, body, len);
	conn->out_len = (size_t)n + len;
	conn->out_off = 0;
	conn->state = CONN_WRITE;
	conn->deadline = mono_ms() + MGMT_WRITE_TIMEOUT_MS;
	conn_flush(conn);
}

/* A JSON response; j is stolen (NULL: empty body). */
static void conn_respond_json(struct mgmt_conn *conn, int status, json_t *j, const char *extra)
{
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;

	if (j && !s) {
		conn->close_after = true;
		s = strdup("{\"error\":\"internal\",\"message\":\"cannot encode the reply\"}");
		status = 500;
	}
	if (s) {
		size_t n = strlen(s);
		char *b = realloc(s, n + 2);

		if (b) {
			s = b;
			s[n++] = '\n';
			s[n] = '\0';
		}
		conn_respond(conn, status, "application/json", s, n, extra);
	} else {
		conn_respond(conn, status, "application/json", "", 0, extra);
	}
	free(s);
	json_decref(j);
}

/* An error response; close ends the connection after it. */
static void conn_error(struct mgmt_conn *conn, int status, const char *code, const char *extra,
		       bool close, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void conn_error(struct mgmt_conn *conn, int status, const char *code, const char *extra,
		       bool close, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	json_t *j;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (close)
		conn->close_after = true;
	j = json_pack("{s:s, s:s}", "error", code, "message", msg);
	conn_respond_json(conn, status, j, extra);
}

/* ---- calls meet connections (loop thread) ---- */

static void call_detach(struct mgmt_call *c)
{
	if (c->conn)
		c->conn->call = NULL;
	c->conn = NULL;
	atomic_store(&c->gone, true);
}

static void answer_timeout(struct mgmt_conn *conn, int wait_ms, json_t *status)
{
	json_t *j = json_object();

	if (status && json_is_object(status))
		json_object_update(j, status);
	json_object_set_new(j, "error", json_string("sync_timeout"));
	json_object_set_new(j, "message",
			    json_sprintf("no sync completed and was applied within %d.%03d s",
					 wait_ms / 1000, wait_ms % 1000));
	conn_respond_json(conn, 504, j, NULL);
}

static void answer(struct mgmt_conn *conn, struct mgmt_call *c)
{
	if (c->kind == CALL_TIMEOUT_STATUS) {
		answer_timeout(conn, c->wait_ms,
			       c->status >= 200 && c->status < 300 ? c->json : NULL);
		return;
	}
	if (c->text) {
		conn_respond(conn, c->status, c->ctype, c->text, c->text_len, NULL);
		return;
	}
	if (c->status < 100 || c->status > 599) {
		conn_error(conn, 500, "internal", NULL, false, "operation answered status %d",
			   c->status);
		return;
	}
	conn_respond_json(conn, c->status, json_incref(c->json), NULL);
}

static void call_deliver(void *arg)
{
	struct mgmt_call *c = arg;
	struct mgmt_conn *conn = c->conn;

	if (conn) {
		call_detach(c);
		answer(conn, c);
		rearm_timer(c->m);
	}
	call_free(c);
}

/* Attach a new call to conn and set the connection waiting for it. */
static struct mgmt_call *conn_call(struct mgmt_conn *conn, enum call_kind kind, int timeout_ms)
{
	struct mgmt_call *c = call_new(conn->m, kind, timeout_ms);

	if (!c) {
		conn_error(conn, 500, "internal", NULL, true, "out of memory");
		return NULL;
	}
	c->conn = conn;
	conn->call = c;
	conn->state = CONN_WAIT;
	/* Only a hang-up matters while the op works: the next request waits. */
	conn_set_events(conn, EPOLLRDHUP);
	rearm_timer(conn->m);
	return c;
}

/* A call's deadline passed (loop thread). */
static void call_expire(struct mgmt *m, struct mgmt_call *c)
{
	struct mgmt_conn *conn = c->conn;
	struct mgmt_call *c2;
	int wait_ms = c->wait_ms;

	call_detach(c);
	switch (c->kind) {
	case CALL_SYNC_WAIT:
		if (!m->ops.status) {
			answer_timeout(conn, wait_ms, NULL);
			return;
		}
		c2 = conn_call(conn, CALL_TIMEOUT_STATUS, MGMT_STATUS_GRACE_MS);
		if (!c2)
			return;
		c2->wait_ms = wait_ms;
		m->ops.status(m->opaque, c2);
		return;
	case CALL_TIMEOUT_STATUS:
		answer_timeout(conn, wait_ms, NULL);
		return;
	case CALL_OP:
		conn_error(conn, 500, "internal", NULL, true,
			   "the operation did not complete within %d s", MGMT_OP_TIMEOUT_MS / 1000);
		return;
	}
}

static void rearm_timer(struct mgmt *m)
{
	struct itimerspec its = { 0 };
	uint64_t at = 0;

	for (struct mgmt_conn *c = m->conns; c; c = c->next)
		if (c->call && (!at || c->call->deadline < at))
			at = c->call->deadline;
	if (at == m->timer_at)
		return;
	m->timer_at = at;
	its.it_value.tv_sec = (time_t)(at / 1000);
	its.it_value.tv_nsec = (long)(at % 1000) * 1000000;
	if (!at) /* zero disarms */
		its.it_value.tv_nsec = 0;
	timerfd_settime(m->timer_fd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void timer_cb(struct loop_io *io, uint32_t events)
{
	struct mgmt *m = container_of(io, struct mgmt, timer_io);
	uint64_t v, now = mono_ms();
	bool again = true;

	(void)events;
	while (read(io->fd, &v, sizeof(v)) > 0)
		;
	m->timer_at = 0;
	/* call_expire may start a new call on the same conn: rescan. */
	while (again) {
		again = false;
		for (struct mgmt_conn *c = m->conns; c; c = c->next) {
			if (c->call && c->call->deadline <= now) {
				call_expire(m, c->call);
				again = true;
				break;
			}
		}
	}
	rearm_timer(m);
}

/* ---- requests ---- */

static bool content_type_json(const struct http1_head *h)
{
	size_t len;
	const char *v = http1_get(h, "Content-Type", &len);

	if (!v || len < 16 || strncasecmp(v, "application/json", 16))
		return false;
	return len == 16 || v[16] == ';' || v[16] == ' ' || v[16] == '\t';
}

/* Authorization: Bearer <token>, compared as SHA-256 digests in constant
 * time so neither content nor length leaks. */
static bool token_ok(const struct mgmt *m, const struct http1_head *h)
{
	unsigned char d[SHA256_DIGEST_LENGTH];
	size_t len;
	const char *v = http1_get(h, "Authorization", &len);

	if (!v || len < 7 || strncasecmp(v, "Bearer ", 7))
		return false;
	v += 7;
	len -= 7;
	while (len && *v == ' ') {
		v++;
		len--;
	}
	if (!len)
		return false;
	SHA256((const unsigned char *)v, len, d);
	return CRYPTO_memcmp(d, m->token_sha, sizeof(d)) == 0;
}

/* Parse the body as a JSON object (NULL body: *ret = NULL). false when an
 * error was answered. */
static bool parse_body(struct mgmt_conn *conn, json_t **ret)
{
	json_error_t jerr;
	json_t *j;

	*ret = NULL;
	if (!conn->body_len)
		return true;
	j = json_loadb(conn->body, conn->body_len, JSON_REJECT_DUPLICATES, &jerr);
	if (!j) {
		conn_error(conn, 400, "bad_json", NULL, false, "line %d column %d: %s", jerr.line,
			   jerr.column, jerr.text);
		return false;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		conn_error(conn, 400, "bad_request", NULL, false, "the body must be a JSON object");
		return false;
	}
	*ret = j;
	return true;
}

static bool str_or_null(const json_t *v)
{
	return !v || json_is_null(v) || json_is_string(v);
}

/* Check an attach body; NULL when fine, else the reason. */
static const char *attach_invalid(const json_t *b)
{
	const char *key;
	json_t *v;

	if (!b)
		return "a JSON body {\"id\",\"cgroup\",\"netns\",\"policy\"} is required";
	json_object_foreach((json_t *)b, key, v) {
		if (strcmp(key, "id") && strcmp(key, "cgroup") && strcmp(key, "netns") &&
		    strcmp(key, "policy"))
			return "unknown field (allowed: id, cgroup, netns, policy)";
	}
	v = json_object_get(b, "id");
	if (!json_is_string(v) || !sb_id_valid(json_string_value(v)))
		return "id must be a string of 1-64 characters [A-Za-z0-9_.-]";
	v = json_object_get(b, "cgroup");
	if (!json_is_string(v) || json_string_value(v)[0] != '/')
		return "cgroup must be an absolute path";
	if (!str_or_null(json_object_get(b, "netns")) || !str_or_null(json_object_get(b, "policy")))
		return "netns and policy must be strings or null";
	v = json_object_get(b, "netns");
	if (json_is_string(v) && json_string_value(v)[0] != '/')
		return "netns must be an absolute path";
	v = json_object_get(b, "policy");
	if (json_is_string(v) && !json_string_value(v)[0])
		return "policy must not be empty";
	return NULL;
}

/* ?wait=SECONDS (0 < SECONDS <= MGMT_MAX_WAIT_S, decimals allowed).
 * Returns wait in ms, 0 without a query, -1 when malformed. */
static int parse_wait(const char *q)
{
	char *end;
	double v;

	if (!q || !*q)
		return 0;
	if (strncmp(q, "wait=", 5))
		return -1;
	errno = 0;
	v = strtod(q + 5, &end);
	if (errno || end == q + 5 || *end || !isfinite(v) || v <= 0 || v > MGMT_MAX_WAIT_S)
		return -1;
	return (int)(v * 1000 + 0.999);
}

#define OP_OR_501(name)                                                                  \
	do {                                                                               \
		if (!m->ops.name) {                                                        \
			conn_error(conn, 501, "not_implemented", NULL, false,              \
				   "this daemon does not implement %s", #name);             \
			goto out;                                                          \
		}                                                                          \
	} while (0)

static bool method_is(const struct http1_head *h, int method, const char *allow,
		      struct mgmt_conn *conn)
{
	char extra[96];

	if (h->method == method)
		return true;
	snprintf(extra, sizeof(extra), "Allow: %s\r\n", allow);
	conn_error(conn, 405, "method_not_allowed", extra, false, "allowed: %s", allow);
	return false;
}

/* The request is complete: authorise, route, validate, run. */
static void conn_dispatch(struct mgmt_conn *conn)
{
	struct mgmt *m = conn->m;
	const struct http1_head *h = &conn->hp.head;
	const char *url = http1_url(h);
	char path[256], id[SB_ID_MAX + 1];
	const char *q = strchr(url, '?');
	size_t plen = q ? (size_t)(q - url) : strlen(url);
	struct mgmt_call *c;
	json_t *body = NULL;
	int wait_ms;

	if (q)
		q++;
	if (url[0] != '/' || plen >= sizeof(path)) {
		conn_error(conn, 404, "not_found", NULL, false, "no such endpoint");
		return;
	}
	memcpy(path, url, plen);
	path[plen] = '\0';

	/* Probes say only "up" and "ready": any peer that can connect may ask. */
	if (!strcmp(path, "/healthz")) {
		if (method_is(h, HTTP_GET, "GET", conn))
			conn_respond_json(conn, 200, json_pack("{s:s}", "status", "ok"), NULL);
		return;
	}
	if (!strcmp(path, "/readyz")) {
		if (!method_is(h, HTTP_GET, "GET", conn))
			return;
		if (m->ops.ready && !m->ops.ready(m->opaque))
			conn_error(conn, 503, "not_ready", NULL, false, "sluiced is not ready");
		else
			conn_respond_json(conn, 200, json_pack("{s:s}", "status", "ready"), NULL);
		return;
	}
	if (conn->tcp && !token_ok(m, h)) {
		conn_error(conn, 401, "unauthorized", "WWW-Authenticate: Bearer realm=\"sluiced\"\r\n",
			   true, "a valid Authorization: Bearer token is required");
		return;
	}
	if (!conn->tcp && !conn->peer_ok) {
		conn_error(conn, 403, "forbidden", NULL, true,
			   "peer not allowed (root, sluiced's user or the management group)");
		return;
	}
	if (h->method == HTTP_POST && conn->body_len && !content_type_json(h)) {
		conn_error(conn, 415, "unsupported_media_type", NULL, false,
			   "POST bodies must be Content-Type: application/json");
		return;
	}

	if (!strcmp(path, "/v1/status")) {
		if (!method_is(h, HTTP_GET, "GET", conn))
			return;
		OP_OR_501(status);
		if ((c = conn_call(conn, CALL_OP, MGMT_OP_TIMEOUT_MS)))
			m->ops.status(m->opaque, c);
	} else if (!strcmp(path, "/v1/sandboxes")) {
		if (h->method == HTTP_GET) {
			OP_OR_501(sandboxes);
			if ((c = conn_call(conn, CALL_OP, MGMT_OP_TIMEOUT_MS)))
				m->ops.sandboxes(m->opaque, c, NULL);
		} else if (method_is(h, HTTP_POST, "GET, POST", conn)) {
			const char *why;

			if (!parse_body(conn, &body))
				return;
			why = attach_invalid(body);
			if (why) {
				conn_error(conn, 400, "bad_request", NULL, false, "%s", why);
				goto out;
			}
			OP_OR_501(attach);
			if ((c = conn_call(conn, CALL_OP, MGMT_OP_TIMEOUT_MS)))
				m->ops.attach(m->opaque, c, body);
		}
	} else if (!strncmp(path, "/v1/sandboxes/", 14)) {
		if (h->method != HTTP_GET && !method_is(h, HTTP_DELETE, "GET, DELETE", conn))
			return;
		if (!sb_id_valid(path + 14)) {
			conn_error(conn, 400, "bad_request", NULL, false,
				   "a sandbox id has 1-64 characters [A-Za-z0-9_.-]");
			return;
		}
		snprintf(id, sizeof(id), "%s", path + 14);
		if (h->method == HTTP_GET) {
			OP_OR_501(sandboxes);
			if ((c = conn_call(conn, CALL_OP, MGMT_OP_TIMEOUT_MS)))
				m->ops.sandboxes(m->opaque, c, id);
		} else {
			OP_OR_501(detach);
			if ((c = conn_call(conn, CALL_OP, MGMT_OP_TIMEOUT_MS)))
				m->ops.detach(m->opaque, c, id);
		}
	} else if (!strcmp(path, "/v1/reload")) {
		json_t *v;

		if (!method_is(h, HTTP_POST, "POST", conn) || !parse_body(conn, &body))
			return;
		v = body ? json_object_get(body, "id") : NULL;
		if ((body && json_object_size(body) != (v ? 1u : 0u)) ||
		    (v && (!json_is_string(v) || !sb_id_valid(json_string_value(v))))) {
			conn_error(conn, 400, "bad_request", NULL, false,
				   "the body is empty or {\"id\": \"<sandbox id>\"}");
			goto out;
		}
		OP_OR_501(reload);
		if ((c = conn_call(conn, CALL_OP, MGMT_OP_TIMEOUT_MS)))
			m->ops.reload(m->opaque, c, v ? json_string_value(v) : NULL);
	} else if (!strcmp(path, "/v1/sync")) {
		if (!method_is(h, HTTP_POST, "POST", conn) || !parse_body(conn, &body))
			return;
		wait_ms = parse_wait(q);
		if (wait_ms < 0) {
			conn_error(conn, 400, "bad_request", NULL, false,
				   "the only parameter is wait=SECONDS, 0 < SECONDS <= %d",
				   MGMT_MAX_WAIT_S);
			goto out;
		}
		OP_OR_501(sync);
		c = conn_call(conn, wait_ms ? CALL_SYNC_WAIT : CALL_OP,
			      wait_ms ? wait_ms : MGMT_OP_TIMEOUT_MS);
		if (c) {
			c->wait_ms = wait_ms;
			m->ops.sync(m->opaque, c, wait_ms);
		}
	} else if (!strcmp(path, "/v1/ca")) {
		if (!method_is(h, HTTP_GET, "GET", conn))
			return;
		if (!m->ca_path)
			conn_error(conn, 404, "not_found", NULL, false, "no CA certificate configured");
		else
			conn_respond_json(conn, 200, json_pack("{s:s}", "ca_cert", m->ca_path), NULL);
	} else if (!strcmp(path, "/metrics")) {
		if (!method_is(h, HTTP_GET, "GET", conn))
			return;
		OP_OR_501(metrics);
		if ((c = conn_call(conn, CALL_OP, MGMT_OP_TIMEOUT_MS)))
			m->ops.metrics(m->opaque, c);
	} else {
		conn_error(conn, 404, "not_found", NULL, false, "no such endpoint");
	}
out:
	json_decref(body);
}

/* The head is complete: refuse early what cannot be served. */
static bool conn_head(struct mgmt_conn *conn)
{
	const struct http1_head *h = &conn->hp.head;
	size_t len;
	const char *v;

	if (h->content_length > (int64_t)conn->m->max_body) {
		conn_error(conn, 413, "body_too_large", NULL, true, "the body limit is %zu bytes",
			   conn->m->max_body);
		return false;
	}
	if (h->upgrade) {
		conn_error(conn, 400, "bad_request", NULL, true, "upgrades are not supported");
		return false;
	}
	v = http1_get(h, "Expect", &len);
	if (v && len == 12 && !strncasecmp(v, "100-continue", 12) && !conn->hp.done) {
		/* Tiny and before any response bytes: a best-effort direct send. */
		static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
		ssize_t w = send(conn->io.fd, cont, sizeof(cont) - 1, MSG_NOSIGNAL);

		(void)w;
	}
	return true;
}

static int body_cb(void *opaque, const char *at, size_t len)
{
	struct mgmt_conn *conn = opaque;
	size_t cap;
	char *b;

	if (len > conn->m->max_body - conn->body_len) {
		conn->body_too_big = true;
		return -1;
	}
	if (conn->body_len + len > conn->body_cap) {
		cap = conn->body_cap ? conn->body_cap : 4096;
		while (cap < conn->body_len + len)
			cap *= 2;
		if (cap > conn->m->max_body)
			cap = conn->m->max_body;
		b = realloc(conn->body, cap);
		if (!b)
			return -1;
		conn->body = b;
		conn->body_cap = cap;
	}
	memcpy(conn->body + conn->body_len, at, len);
	conn->body_len += len;
	return 0;
}

/* Parse buffered bytes and read more while in CONN_READ. */
static void conn_process(struct mgmt_conn *conn)
{
	for (int rounds = 0; conn->state == CONN_READ && rounds < 64; rounds++) {
		if (conn->in_len) {
			enum http1_event ev;
			ssize_t used = http1_feed(&conn->hp, conn->in, conn->in_len, &ev);

			if (!conn->in_request) {
				conn->in_request = true;
				conn->deadline = mono_ms() + MGMT_READ_TIMEOUT_MS;
			}
			if (used > 0) {
				memmove(conn->in, conn->in + used, conn->in_len - (size_t)used);
				conn->in_len -= (size_t)used;
			}
			if (ev == HTTP1_EV_ERROR) {
				if (conn->body_too_big)
					conn_error(conn, 413, "body_too_large", NULL, true,
						   "the body limit is %zu bytes", conn->m->max_body);
				else if (conn->hp.err_status == 431)
					conn_error(conn, 431, "header_too_large", NULL, true,
						   "the request head limit is %d bytes",
						   MGMT_MAX_HEAD);
				else
					conn_error(conn, 400, "bad_request", NULL, true,
						   "malformed HTTP request: %s",
						   conn->hp.err_reason ? conn->hp.err_reason : "?");
				return;
			}
			if (ev == HTTP1_EV_HEAD && !conn_head(conn))
				return;
			if (conn->hp.done) {
				conn_dispatch(conn);
				return;
			}
			if (ev != HTTP1_EV_NONE)
				continue;
		}
		{
			ssize_t r = recv(conn->io.fd, conn->in + conn->in_len,
					 MGMT_READ_CHUNK - conn->in_len, 0);

			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0 && errno == EAGAIN)
				return;
			if (r <= 0) {
				conn_close(conn);
				return;
			}
			conn->in_len += (size_t)r;
		}
	}
	/* Many rounds in one go: yield to other connections. */
	if (conn->state == CONN_READ)
		loop_defer(conn->m->loop, &conn->defer);
}

static void conn_defer_cb(struct loop_defer *d)
{
	struct mgmt_conn *conn = container_of(d, struct mgmt_conn, defer);

	conn_process(conn);
}

static void conn_io_cb(struct loop_io *io, uint32_t events)
{
	struct mgmt_conn *conn = container_of(io, struct mgmt_conn, io);

	switch (conn->state) {
	case CONN_WAIT:
		/* The client left (or half-closed) while its op works. */
		if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
			conn_close(conn);
		return;
	case CONN_WRITE:
		if (events & EPOLLERR)
			conn_close(conn);
		else
			conn_flush(conn);
		return;
	case CONN_READ:
		conn_process(conn);
		return;
	}
}

static void conn_free(void *p)
{
	struct mgmt_conn *conn = p;

	http1_free(&conn->hp);
	free(conn->in);
	free(conn->body);
	free(conn->out);
	free(conn);
}

static void conn_close(struct mgmt_conn *conn)
{
	struct mgmt *m = conn->m;

	if (conn->io.fd < 0)
		return;
	if (conn->call) {
		call_detach(conn->call);
		rearm_timer(m);
	}
	loop_defer_cancel(m->loop, &conn->defer);
	loop_io_del(m->loop, &conn->io);
	close(conn->io.fd);
	conn->io.fd = -1;
	conn->state = CONN_WAIT; /* inert until freed */
	if (conn->prev)
		conn->prev->next = conn->next;
	else
		m->conns = conn->next;
	if (conn->next)
		conn->next->prev = conn->prev;
	m->nconns--;
	if (m->loop_done)
		conn_free(conn);
	else if (loop_free_later(m->loop, conn, conn_free) < 0)
		conn->m = NULL; /* leak rather than free under a queued event */
}

/* ---- accept ---- */

static bool peer_allowed(const struct mgmt *m, int fd)
{
	gid_t groups[MGMT_MAX_PEER_GROUPS];
	socklen_t gl = sizeof(groups);
	struct ucred cred;
	socklen_t cl = sizeof(cred);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl))
		return false;
	if (cred.uid == 0 || cred.uid == m->euid)
		return true;
	if (m->unix_gid < 0)
		return false;
	if (cred.gid == (gid_t)m->unix_gid)
		return true;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &gl))
		return false;
	for (size_t i = 0; i < gl / sizeof(gid_t); i++)
		if (groups[i] == (gid_t)m->unix_gid)
			return true;
	return false;
}

static void accept_one(struct mgmt *m, int lfd, bool tcp)
{
	struct mgmt_conn *conn;
	int fd;

	for (int i = 0; i < 32; i++) {
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0)
			return; /* EAGAIN, ECONNABORTED, EMFILE: the next event retries */
		if (m->nconns >= MGMT_MAX_CONNS) {
			close(fd);
			continue;
		}
		conn = calloc(1, sizeof(*conn));
		if (!conn) {
			close(fd);
			continue;
		}
		conn->m = m;
		conn->tcp = tcp;
		conn->peer_ok = !tcp && peer_allowed(m, fd);
		conn->state = CONN_READ;
		conn->defer.cb = conn_defer_cb;
		conn->deadline = mono_ms() + MGMT_IDLE_TIMEOUT_MS;
		conn->in = malloc(MGMT_READ_CHUNK);
		if (!conn->in || http1_init(&conn->hp, false, MGMT_MAX_HEAD) < 0) {
			free(conn->in);
			free(conn);
			close(fd);
			continue;
		}
		conn->hp.body_cb = body_cb;
		conn->hp.body_opaque = conn;
		if (loop_io_add(m->loop, &conn->io, fd, EPOLLIN | EPOLLRDHUP, conn_io_cb) < 0) {
			conn_free(conn);
			close(fd);
			continue;
		}
		conn->next = m->conns;
		if (m->conns)
			m->conns->prev = conn;
		m->conns = conn;
		m->nconns++;
	}
}

static void unix_accept_cb(struct loop_io *io, uint32_t events)
{
	(void)events;
	accept_one(container_of(io, struct mgmt, unix_io), io->fd, false);
}

static void tcp_accept_cb(struct loop_io *io, uint32_t events)
{
	(void)events;
	accept_one(container_of(io, struct mgmt, tcp_io), io->fd, true);
}

/* Once a second: requests too slow, idle keep-alive, unread responses. */
static void tick_cb(void *arg)
{
	struct mgmt *m = arg;
	uint64_t now = mono_ms();
	struct mgmt_conn *c, *next;

	for (c = m->conns; c; c = next) {
		next = c->next;
		if (c->state == CONN_WAIT || c->deadline > now)
			continue;
		if (c->state == CONN_READ && c->in_request) {
			/* next may be closed by conn_error's flush: restart scan. */
			conn_error(c, 408, "request_timeout", NULL, true,
				   "the request did not arrive within %d s",
				   MGMT_READ_TIMEOUT_MS / 1000);
			next = m->conns;
			now = mono_ms();
		} else {
			conn_close(c);
		}
	}
}

static void *server_thread(void *arg)
{
	struct mgmt *m = arg;

	loop_run(m->loop);
	return NULL;
}

/* ---- start / stop ---- */

static int fill_unix(const char *path, struct sockaddr_un *sun)
{
	size_t n = strlen(path);

	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	if (n == 0 || n >= sizeof(sun->sun_path))
		return -ENAMETOOLONG;
	memcpy(sun->sun_path, path, n + 1);
	return 0;
}

/* Unlink path if it is a socket nobody listens on. */
static int remove_stale_socket(const char *path, const struct sockaddr_un *sun)
{
	struct stat st;
	int fd, ret = 0;

	if (lstat(path, &st))
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (!connect(fd, (const struct sockaddr *)sun, sizeof(*sun)))
		ret = -EADDRINUSE;
	else if (errno == ECONNREFUSED && unlink(path) && errno != ENOENT)
		ret = -errno;
	close(fd);
	return ret;
}

/* The socket's directory: created 0750 (group gid) when missing. */
static int make_dir(const char *path, int gid)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return 0;
	*slash = '\0';
	if (mkdir(dir, 0750) < 0)
		return errno == EEXIST ? 0 : -errno;
	/* mkdir honours the umask; the mode is part of the contract. */
	if (chmod(dir, 0750) < 0 || (gid >= 0 && chown(dir, (uid_t)-1, (gid_t)gid) < 0))
		return -errno;
	return 0;
}

static int open_unix(struct mgmt *m, const struct mgmt_opts *o, char *err, size_t errlen)
{
	struct sockaddr_un sun;
	int fd, r;

	r = fill_unix(o->unix_path, &sun);
	if (r) {
		snprintf(err, errlen, "socket path too long: %s", o->unix_path);
		return r;
	}
	r = make_dir(o->unix_path, o->unix_gid);
	if (r) {
		snprintf(err, errlen, "cannot create the directory of %s: %s", o->unix_path,
			 strerror(-r));
		return r;
	}
	r = remove_stale_socket(o->unix_path, &sun);
	if (r) {
		snprintf(err, errlen, "%s: %s", o->unix_path,
			 r == -EADDRINUSE ? "another sluiced is listening there"
			 : r == -EEXIST	  ? "exists and is not a socket"
					  : strerror(-r));
		return r;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		r = -errno;
		snprintf(err, errlen, "socket: %s", strerror(-r));
		return r;
	}
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun))) {
		r = -errno;
		snprintf(err, errlen, "bind %s: %s", o->unix_path, strerror(-r));
		goto out_close;
	}
	m->unlink_on_stop = true;
	/* The mode is a belt; SO_PEERCRED is the check that counts. */
	if (chmod(o->unix_path, 0660) ||
	    (o->unix_gid >= 0 && chown(o->unix_path, (uid_t)-1, (gid_t)o->unix_gid)) ||
	    listen(fd, 64)) {
		r = -errno;
		snprintf(err, errlen, "%s: %s", o->unix_path, strerror(-r));
		goto out_close;
	}
	m->unix_fd = fd;
	return 0;

out_close:
	close(fd);
	return r;
}

static int open_tcp(struct mgmt *m, const struct mgmt_opts *o, char *err, size_t errlen)
{
	struct sockaddr_storage ss = { 0 };
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
	char host[128];
	uint16_t port = 0;
	socklen_t sl;
	int fd, one = 1, r;

	if (http1_split_authority(o->tcp_listen, strlen(o->tcp_listen), 0, host, sizeof(host),
				  &port) < 0 ||
	    !port) {
		snprintf(err, errlen, "management listen address '%s': want ADDR:PORT",
			 o->tcp_listen);
		return -EINVAL;
	}
	if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		sl = sizeof(*s4);
	} else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		sl = sizeof(*s6);
	} else {
		snprintf(err, errlen, "management listen address '%s': not a numeric address",
			 o->tcp_listen);
		return -EINVAL;
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		r = -errno;
		snprintf(err, errlen, "socket: %s", strerror(-r));
		return r;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sl) || listen(fd, 64)) {
		r = -errno;
		snprintf(err, errlen, "management listen %s: %s", o->tcp_listen, strerror(-r));
		close(fd);
		return r;
	}
	m->tcp_fd = fd;
	return 0;
}

int mgmt_start(const struct mgmt_opts *o, const struct mgmt_ops *ops, void *opaque,
	       struct mgmt **ret, char *err, size_t errlen)
{
	struct mgmt *m;
	int r;

	if (errlen)
		err[0] = '\0';
	if (!o->unix_path || !o->unix_path[0]) {
		snprintf(err, errlen, "no management socket path");
		return -EINVAL;
	}
	if (o->tcp_listen && (!o->token || strlen(o->token) < MGMT_MIN_TOKEN)) {
		snprintf(err, errlen,
			 "a TCP management listener needs a bearer token of at least %d "
			 "characters (SLUICE_MANAGEMENT_TOKEN)", MGMT_MIN_TOKEN);
		return -EINVAL;
	}
	m = calloc(1, sizeof(*m));
	if (!m) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&m->lock, NULL);
	m->refs = 1;
	m->ops = *ops;
	m->opaque = opaque;
	m->unix_fd = m->tcp_fd = m->timer_fd = -1;
	m->unix_gid = o->unix_gid;
	m->euid = geteuid();
	m->max_body = o->max_body ? o->max_body : MGMT_DEFAULT_MAX_BODY;
	snprintf(m->unix_path, sizeof(m->unix_path), "%s", o->unix_path);
	if (o->token)
		SHA256((const unsigned char *)o->token, strlen(o->token), m->token_sha);
	if (o->ca_path && !(m->ca_path = strdup(o->ca_path))) {
		r = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto out_free;
	}
	r = loop_new(&m->loop);
	if (r < 0) {
		snprintf(err, errlen, "event loop: %s", strerror(-r));
		goto out_free;
	}
	m->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (m->timer_fd < 0) {
		r = -errno;
		snprintf(err, errlen, "timerfd: %s", strerror(-r));
		goto out_loop;
	}
	r = loop_io_add(m->loop, &m->timer_io, m->timer_fd, EPOLLIN, timer_cb);
	if (r < 0)
		goto out_timer;
	if (o->tcp_listen) {
		r = open_tcp(m, o, err, errlen);
		if (r < 0)
			goto out_timer;
		r = loop_io_add(m->loop, &m->tcp_io, m->tcp_fd, EPOLLIN, tcp_accept_cb);
		if (r < 0)
			goto out_tcp;
	}
	r = open_unix(m, o, err, errlen);
	if (r < 0)
		goto out_tcp;
	r = loop_io_add(m->loop, &m->unix_io, m->unix_fd, EPOLLIN, unix_accept_cb);
	if (r < 0)
		goto out_unix;
	loop_set_tick(m->loop, tick_cb, m);
	r = -pthread_create(&m->thread, NULL, server_thread, m);
	if (r) {
		snprintf(err, errlen, "thread: %s", strerror(-r));
		goto out_unix;
	}
	m->thread_started = true;
	*ret = m;
	return 0;

out_unix:
	close(m->unix_fd);
	unlink(m->unix_path);
out_tcp:
	if (m->tcp_fd >= 0)
		close(m->tcp_fd);
out_timer:
	if (r < 0 && !err[0])
		snprintf(err, errlen, "%s", strerror(-r));
	close(m->timer_fd);
out_loop:
	loop_free(m->loop);
out_free:
	free(m->ca_path);
	pthread_mutex_destroy(&m->lock);
	free(m);
	return r;
}

void mgmt_stop(struct mgmt *m)
{
	if (!m)
		return;
	loop_stop(m->loop);
	if (m->thread_started)
		pthread_join(m->thread, NULL);
	m->loop_done = true;
	pthread_mutex_lock(&m->lock);
	m->stopped = true;
	pthread_mutex_unlock(&m->lock);
	while (m->conns)
		conn_close(m->conns);
	close(m->unix_fd);
	if (m->unlink_on_stop)
		unlink(m->unix_path);
	if (m->tcp_fd >= 0)
		close(m->tcp_fd);
	close(m->timer_fd);
	/* Runs replies posted before the stop (their calls are detached) and
	 * the conns freed above. */
	loop_free(m->loop);
	m->loop = NULL;
	m_unref(m);
}
