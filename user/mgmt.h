/* SPDX-License-Identifier: MIT */
/*
 * mgmt: sluiced's management API — HTTP/1.1 + JSON on a Unix socket (peers
 * authorised by SO_PEERCRED) and optionally on TCP (bearer token). One thread
 * runs a loop.h loop; connections are non-blocking, one request at a time
 * each, keep-alive. Routing, limits, auth, errors and the wire format live
 * here; the daemon supplies the operations as callbacks that answer through
 * a completion handle, so a long operation (sync?wait) never blocks the
 * server. The endpoints and error codes are in docs/management-api.md.
 */
#ifndef SLUICE_MGMT_H
#define SLUICE_MGMT_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>

struct mgmt;
struct mgmt_call; /* one in-flight request */

/* Request limits. */
#define MGMT_MAX_HEAD 16384            /* request line + fields: 431 beyond */
#define MGMT_DEFAULT_MAX_BODY (1u << 20) /* 413 beyond */
#define MGMT_MAX_WAIT_S 300            /* sync?wait upper bound */
#define MGMT_MAX_CONNS 128             /* further connections are closed at once */

/*
 * Operations. Each runs on the mgmt thread and must call mgmt_reply*()
 * exactly once for its call, either before returning or later from any
 * thread. Arguments are validated before the op runs (ids match
 * sb_id_valid, bodies are JSON objects of the documented shape); borrowed
 * pointers are valid only until the op returns. A NULL op answers
 * 501 not_implemented (ready: NULL means always ready).
 *
 * Reply shapes the API documents (docs/management-api.md):
 *   status     200 object (version, uptime_s, mode, sandboxes: [...], ...)
 *   sandboxes  200 {"sandboxes":[...]} for the list, 200 one object for an
 *              id; 404 "unknown_sandbox" when the id is not attached
 *   attach     201 the new sandbox object; 409 "conflict" (id or cgroup in
 *              use); 400 "bad_request" (bad path/policy: message says why)
 *   detach     204 (NULL body) or 200 object; 404 "unknown_sandbox"
 *   reload     200 {"reloaded": N, "message": "..."}; 400 "policy_invalid"
 *              with file:line:col in message; 404 "unknown_sandbox"
 *   sync       wait_ms == 0: 202 at once ({"sync":"requested"}). wait_ms > 0:
 *              200 with the applied status once a sync has completed and
 *              been applied. Doing nothing is fine: at the deadline the
 *              server answers 504 "sync_timeout" with the current status
 *              (it calls the status op itself) and ignores the late reply.
 *   metrics    200 via mgmt_reply_text("text/plain; version=0.0.4")
 */
struct mgmt_ops {
	void (*status)(void *opaque, struct mgmt_call *c);
	void (*sandboxes)(void *opaque, struct mgmt_call *c, const char *id /* NULL: list */);
	/* body: {"id": str, "cgroup": str, "netns": str|null, "policy": str|null} */
	void (*attach)(void *opaque, struct mgmt_call *c, const json_t *body);
	void (*detach)(void *opaque, struct mgmt_call *c, const char *id);
	void (*reload)(void *opaque, struct mgmt_call *c, const char *id /* NULL: all */);
	void (*sync)(void *opaque, struct mgmt_call *c, int wait_ms /* 0: don't wait */);
	void (*metrics)(void *opaque, struct mgmt_call *c);
	/* Synchronous and cheap: GET /readyz answers 200 or 503 "not_ready". */
	bool (*ready)(void *opaque);
};

struct mgmt_opts {
	/* Unix socket path (required). Its directory is created 0750 when
	 * missing; the socket is 0660. A stale socket file is replaced. */
	const char *unix_path;
	/* Group allowed besides uid 0 and the daemon's euid (-1: none); also
	 * the group owner of the socket and of a directory created for it. */
	int unix_gid;
	/* "ADDR:PORT" / "[V6]:PORT" numeric address, or NULL for no TCP. */
	const char *tcp_listen;
	/* Bearer token for TCP (at least 16 bytes); required with tcp_listen. */
	const char *token;
	/* Request body limit; 0 means MGMT_DEFAULT_MAX_BODY. */
	size_t max_body;
	/* CA certificate path served by GET /v1/ca (NULL: 404). Copied. */
	const char *ca_path;
};

/*
 * Bind the listeners and start the server thread. Strings in o are copied.
 * 0, or -errno with a one-line reason in err: -EINVAL (bad option, TCP
 * without a token, malformed address), -EADDRINUSE (a live server owns the
 * Unix socket, or the TCP port is taken), -EEXIST (unix_path exists and is
 * not a socket), other -errno from socket calls.
 */
int mgmt_start(const struct mgmt_opts *o, const struct mgmt_ops *ops, void *opaque,
	       struct mgmt **ret, char *err, size_t errlen);

/*
 * Stop the thread, close every connection and the listeners, unlink the
 * socket. Calls still held by ops stay valid: their mgmt_reply() is then a
 * no-op that frees the call; the last one frees what is left. NULL is fine.
 */
void mgmt_stop(struct mgmt *m);

/* Complete c (any thread, exactly once). body is stolen (NULL: no body;
 * 204 never has one). After this c must not be used. */
void mgmt_reply(struct mgmt_call *c, int status, json_t *body);

/* mgmt_reply() with {"error": code, "message": printf(fmt, ...)}. */
void mgmt_reply_error(struct mgmt_call *c, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Complete c with a non-JSON body (copied); content_type e.g.
 * "text/plain; version=0.0.4". */
void mgmt_reply_text(struct mgmt_call *c, int status, const char *content_type, const char *text,
		     size_t len);

/* true once nobody will read the answer (client left, deadline passed,
 * server stopped). A reply is still required; it is dropped. Any thread. */
bool mgmt_call_gone(const struct mgmt_call *c);

/* Milliseconds left before the server stops waiting for this call (>= 0).
 * Any thread. */
int mgmt_call_deadline_ms(const struct mgmt_call *c);

#endif
