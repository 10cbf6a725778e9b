/* SPDX-License-Identifier: MIT */
/*
 * http1: HTTP/1.1 message framing over llhttp, as a pure state machine.
 * http1_feed() stops at two points of every message: right after the head
 * (HTTP1_EV_HEAD: the head is in p->head) and right after the message
 * (HTTP1_EV_DONE). Every byte consumed between those two points is body in
 * its wire form (chunk framing included), so a proxy can forward body bytes
 * verbatim and only rewrite heads. No allocation after init, no I/O, no logs.
 */
#ifndef SLUICE_HTTP1_H
#define SLUICE_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <llhttp.h>

#define HTTP1_MAX_HEADERS 128

struct http1_field {
	uint32_t name_off, name_len;
	uint32_t value_off, value_len;
};

struct http1_head {
	char *store;            /* url/reason + names + values, max_bytes */
	uint32_t used, cap;
	uint32_t url_off, url_len;      /* request target, or response reason */
	struct http1_field f[HTTP1_MAX_HEADERS];
	unsigned nf;
	int method;             /* llhttp_method_t (requests) */
	int status;             /* responses */
	int http_major, http_minor;
	bool keep_alive;        /* llhttp_should_keep_alive() at head end */
	bool upgrade;           /* Upgrade/CONNECT as llhttp sees it */
	bool needs_eof;         /* body ends at EOF (responses without framing) */
	bool chunked;
	int64_t content_length; /* -1 when absent */
};

enum http1_event {
	HTTP1_EV_NONE = 0,      /* all bytes consumed, need more */
	HTTP1_EV_HEAD = 1,      /* head complete; body (if any) follows */
	HTTP1_EV_DONE = 2,      /* message complete; parser paused */
	HTTP1_EV_ERROR = 3,     /* malformed; see err_status/err_reason */
};

struct http1_parser {
	llhttp_t p;
	llhttp_settings_t s;
	struct http1_head head;
	bool response;
	bool no_body;           /* responses: set before feeding (HEAD request) */
	bool in_body;           /* between HEAD and DONE */
	bool paused;
	bool head_seen;         /* HEAD event reported for the current message */
	bool done;              /* DONE reached, awaiting http1_next() */
	bool field_open;        /* last callback was a header name/value part */
	bool in_value;
	int err_status;         /* 400, 431 (head too large) ... */
	const char *err_reason; /* static string */
	/* Optional: decoded body bytes (chunk framing removed) are handed here
	 * during http1_feed(); return 0, or -1 to stop with an error. A caller
	 * that sets it rewrites bodies instead of forwarding wire bytes. */
	int (*body_cb)(void *opaque, const char *at, size_t len);
	void *body_opaque;
};

/* response: false parses requests. max_head_bytes bounds the head (431). */
int http1_init(struct http1_parser *hp, bool response, size_t max_head_bytes);
void http1_free(struct http1_parser *hp);

/*
 * Feed up to len bytes. Returns bytes consumed (>= 0) and the event in
 * *ret_ev. After HTTP1_EV_HEAD the caller inspects p->head and feeds on;
 * after HTTP1_EV_DONE nothing is consumed until http1_next().
 */
ssize_t http1_feed(struct http1_parser *hp, const char *data, size_t len,
		   enum http1_event *ret_ev);

/* The peer closed: 1 if that completes the message (EOF-delimited body),
 * 0 if nothing was in progress, -1 if a message was cut short. */
int http1_eof(struct http1_parser *hp);

/* Start on the next message (keep-alive / pipelining). */
void http1_next(struct http1_parser *hp);

/* Header lookup (case-insensitive). Returns value and length, or NULL. */
const char *http1_get(const struct http1_head *h, const char *name, size_t *ret_len);
static inline const char *http1_name(const struct http1_head *h, unsigned i)
{
	return h->store + h->f[i].name_off;
}
static inline const char *http1_value(const struct http1_head *h, unsigned i)
{
	return h->store + h->f[i].value_off;
}
static inline const char *http1_url(const struct http1_head *h) { return h->store + h->url_off; }

/* true when token (case-insensitive) appears in the comma list value. */
bool http1_list_has(const char *value, size_t len, const char *token);

/* true for hop-by-hop fields a proxy never forwards (Connection, Keep-Alive,
 * Proxy-Connection, Proxy-Authorization, Proxy-Authenticate, TE, Trailer,
 * Upgrade) or fields named by the message's Connection header. */
bool http1_is_hop_by_hop(const struct http1_head *h, unsigned i);

/*
 * Split an authority "host", "host:port", "[v6]:port" into a normalised
 * host (lower case, no trailing dot, no brackets) and port (default_port when
 * absent). 0, or -EINVAL on a malformed authority or bad port.
 */
int http1_split_authority(const char *s, size_t len, uint16_t default_port, char *ret_host,
			  size_t hostlen, uint16_t *ret_port);

/* Parse an absolute-form target "http://authority/path?q". Writes the
 * scheme's TLS-ness, host, port and the origin-form path (offset into url).
 * 0, -ENOENT when url is not absolute-form, -EINVAL when malformed. */
int http1_parse_absolute(const char *url, size_t len, bool *ret_tls, char *ret_host,
			 size_t hostlen, uint16_t *ret_port, size_t *ret_path_off);

/* Reason phrase for the statuses sluice emits itself. */
const char *http1_reason(int status);

#endif
