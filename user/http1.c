// SPDX-License-Identifier: MIT
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>

#include "http1.h"

static struct http1_parser *hp_of(llhttp_t *p) { return p->data; }

static int fail(struct http1_parser *hp, int status, const char *reason)
{
	hp->err_status = status;
	hp->err_reason = reason;
	return -1;
}

/* Append part of the head; the store is the head size limit. */
static int store(struct http1_parser *hp, const char *at, size_t len)
{
	struct http1_head *h = &hp->head;

	if (len > h->cap - h->used)
		return fail(hp, hp->response ? 502 : 431, "header section too large");
	memcpy(h->store + h->used, at, len);
	h->used += (uint32_t)len;
	return 0;
}

static int on_message_begin(llhttp_t *p)
{
	struct http1_parser *hp = hp_of(p);
	struct http1_head *h = &hp->head;

	h->used = 0;
	h->nf = 0;
	h->url_off = 0;
	h->url_len = 0;
	h->content_length = -1;
	hp->head_seen = false;
	hp->in_body = false;
	hp->field_open = false;
	hp->in_value = false;
	return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
	struct http1_parser *hp = hp_of(p);

	hp->head.url_len += (uint32_t)len;
	return store(hp, at, len);
}

static int on_url_complete(llhttp_t *p)
{
	return store(hp_of(p), "", 1);
}

static int on_field(llhttp_t *p, const char *at, size_t len)
{
	struct http1_parser *hp = hp_of(p);
	struct http1_head *h = &hp->head;

	if (!hp->field_open) {
		if (h->nf == HTTP1_MAX_HEADERS)
			return fail(hp, hp->response ? 502 : 431, "too many header fields");
		h->f[h->nf].name_off = h->used;
		h->f[h->nf].name_len = 0;
		h->f[h->nf].value_off = 0;
		h->f[h->nf].value_len = 0;
		hp->field_open = true;
		hp->in_value = false;
	}
	h->f[h->nf].name_len += (uint32_t)len;
	return store(hp, at, len);
}

static int on_field_complete(llhttp_t *p)
{
	return store(hp_of(p), "", 1);
}

static int on_value(llhttp_t *p, const char *at, size_t len)
{
	struct http1_parser *hp = hp_of(p);
	struct http1_head *h = &hp->head;

	if (!hp->in_value) {
		h->f[h->nf].value_off = h->used;
		hp->in_value = true;
	}
	h->f[h->nf].value_len += (uint32_t)len;
	return store(hp, at, len);
}

static int on_value_complete(llhttp_t *p)
{
	struct http1_parser *hp = hp_of(p);
	struct http1_head *h = &hp->head;

	if (!hp->in_value)
		h->f[h->nf].value_off = h->used;
	/* llhttp strips leading whitespace; trailing OWS may remain. */
	while (h->f[h->nf].value_len &&
	       (h->store[h->f[h->nf].value_off + h->f[h->nf].value_len - 1] == ' ' ||
		h->store[h->f[h->nf].value_off + h->f[h->nf].value_len - 1] == '\t')) {
		h->f[h->nf].value_len--;
		h->used--;
	}
	h->nf++;
	hp->field_open = false;
	hp->in_value = false;
	return store(hp, "", 1);
}

static int on_headers_complete(llhttp_t *p)
{
	struct http1_parser *hp = hp_of(p);
	struct http1_head *h = &hp->head;
	bool body;

	if (!h->url_len)
		h->url_off = 0;
	if (store(hp, "", 1) < 0) /* keeps url valid when empty */
		return -1;
	h->method = p->method;
	h->status = p->status_code;
	h->http_major = p->http_major;
	h->http_minor = p->http_minor;
	h->keep_alive = llhttp_should_keep_alive(p);
	h->upgrade = p->upgrade;
	h->chunked = (p->flags & F_CHUNKED) != 0;
	h->content_length = (p->flags & F_CONTENT_LENGTH) ? (int64_t)p->content_length : -1;
	h->needs_eof = hp->response && !hp->no_body && llhttp_message_needs_eof(p);
	hp->head_seen = true;

	if (hp->response) {
		if (hp->no_body)
			return 1;
		body = !(h->status < 200 || h->status == 204 || h->status == 304) &&
		       (h->chunked || h->content_length > 0 || h->needs_eof);
	} else {
		body = !p->upgrade && (h->chunked || h->content_length > 0);
	}
	if (!body)
		return 0;       /* message completes in this same call */
	hp->in_body = true;
	return HPE_PAUSED;      /* stop exactly at the head/body boundary */
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
	struct http1_parser *hp = hp_of(p);

	if (hp->body_cb && hp->body_cb(hp->body_opaque, at, len) < 0)
		return fail(hp, 502, "body rewrite failed");
	return 0;
}

static int on_message_complete(llhttp_t *p)
{
	struct http1_parser *hp = hp_of(p);

	hp->done = true;
	return HPE_PAUSED;
}

int http1_init(struct http1_parser *hp, bool response, size_t max_head_bytes)
{
	memset(hp, 0, sizeof(*hp));
	hp->head.store = malloc(max_head_bytes + 2);
	if (!hp->head.store)
		return -ENOMEM;
	hp->head.cap = (uint32_t)max_head_bytes;
	hp->head.store[0] = 0;
	hp->response = response;
	llhttp_settings_init(&hp->s);
	hp->s.on_message_begin = on_message_begin;
	hp->s.on_url = on_url;
	hp->s.on_status = on_url;
	hp->s.on_url_complete = on_url_complete;
	hp->s.on_status_complete = on_url_complete;
	hp->s.on_header_field = on_field;
	hp->s.on_header_field_complete = on_field_complete;
	hp->s.on_header_value = on_value;
	hp->s.on_header_value_complete = on_value_complete;
	hp->s.on_headers_complete = on_headers_complete;
	hp->s.on_message_complete = on_message_complete;
	hp->s.on_body = on_body;
	llhttp_init(&hp->p, response ? HTTP_RESPONSE : HTTP_REQUEST, &hp->s);
	hp->p.data = hp;
	return 0;
}

void http1_free(struct http1_parser *hp)
{
	if (!hp)
		return;
	free(hp->head.store);
	hp->head.store = NULL;
}

ssize_t http1_feed(struct http1_parser *hp, const char *data, size_t len,
		   enum http1_event *ret_ev)
{
	bool head_before = hp->head_seen;
	llhttp_errno_t e;
	size_t used;

	*ret_ev = HTTP1_EV_NONE;
	if (hp->done || hp->err_status)
		return hp->err_status ? (*ret_ev = HTTP1_EV_ERROR, 0) : 0;
	if (!len)
		return 0;
	e = llhttp_execute(&hp->p, data, len);
	switch (e) {
	case HPE_OK:
		used = len;
		break;
	case HPE_PAUSED:
	case HPE_PAUSED_UPGRADE:
		used = (size_t)(llhttp_get_error_pos(&hp->p) - data);
		hp->paused = true;
		if (!hp->done) {
			/* Paused at the head/body boundary: go on at the next feed. */
			llhttp_resume(&hp->p);
			hp->paused = false;
		}
		break;
	default:
		if (!hp->err_status) {
			hp->err_status = hp->response ? 502 : 400;
			hp->err_reason = llhttp_get_error_reason(&hp->p);
			if (!hp->err_reason)
				hp->err_reason = llhttp_errno_name(e);
		}
		*ret_ev = HTTP1_EV_ERROR;
		return 0;
	}
	if (hp->head_seen && !head_before)
		*ret_ev = HTTP1_EV_HEAD;   /* caller checks hp->done for bodiless */
	else if (hp->done)
		*ret_ev = HTTP1_EV_DONE;
	return (ssize_t)used;
}

int http1_eof(struct http1_parser *hp)
{
	if (hp->done)
		return 0;
	if (hp->in_body && hp->head.needs_eof) {
		hp->done = true;
		return 1;
	}
	if (!hp->head_seen && hp->head.used == 0 && !hp->field_open &&
	    llhttp_get_errno(&hp->p) == HPE_OK && hp->p.finish != HTTP_FINISH_UNSAFE)
		return 0;
	return -1;
}

void http1_next(struct http1_parser *hp)
{
	llhttp_errno_t e = llhttp_get_errno(&hp->p);

	if (e == HPE_PAUSED)
		llhttp_resume(&hp->p);
	else if (e == HPE_PAUSED_UPGRADE)
		llhttp_resume_after_upgrade(&hp->p);
	hp->paused = false;
	hp->done = false;
	hp->head_seen = false;
	hp->in_body = false;
	hp->head.used = 0;
	hp->head.nf = 0;
}

const char *http1_get(const struct http1_head *h, const char *name, size_t *ret_len)
{
	size_t nl = strlen(name);

	for (unsigned i = 0; i < h->nf; i++) {
		if (h->f[i].name_len == nl && strncasecmp(h->store + h->f[i].name_off, name, nl) == 0) {
			if (ret_len)
				*ret_len = h->f[i].value_len;
			return h->store + h->f[i].value_off;
		}
	}
	return NULL;
}

bool http1_list_has(const char *v, size_t len, const char *token)
{
	size_t tl = strlen(token), i = 0;

	while (i < len) {
		size_t s, e;

		while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		s = i;
		while (i < len && v[i] != ',')
			i++;
		e = i;
		while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
			e--;
		if (e - s == tl && strncasecmp(v + s, token, tl) == 0)
			return true;
	}
	return false;
}

bool http1_is_hop_by_hop(const struct http1_head *h, unsigned i)
{
	static const char *const hop[] = { "connection", "keep-alive", "proxy-connection",
					   "proxy-authorization", "proxy-authenticate", "te",
					   "trailer", "upgrade" };
	const char *name = http1_name(h, i);
	size_t nl = h->f[i].name_len;
	const char *conn;
	size_t cl;

	for (unsigned k = 0; k < sizeof(hop) / sizeof(hop[0]); k++)
		if (strlen(hop[k]) == nl && strncasecmp(name, hop[k], nl) == 0)
			return true;
	/* Fields listed in Connection are hop-by-hop too (RFC 9110 7.6.1). */
	for (unsigned k = 0; k < h->nf; k++) {
		if (h->f[k].name_len != 10 || strncasecmp(http1_name(h, k), "connection", 10))
			continue;
		conn = http1_value(h, k);
		cl = h->f[k].value_len;
		char tok[64];

		if (nl >= sizeof(tok))
			continue;
		memcpy(tok, name, nl);
		tok[nl] = 0;
		if (http1_list_has(conn, cl, tok))
			return true;
	}
	return false;
}

static bool host_char_ok(unsigned char c)
{
	return isalnum(c) || c == '-' || c == '.' || c == '_';
}

int http1_split_authority(const char *s, size_t len, uint16_t default_port, char *ret_host,
			  size_t hostlen, uint16_t *ret_port)
{
	const char *host = s, *port = NULL;
	size_t hl = len, pl = 0;
	unsigned long pv;
	char tmp[INET6_ADDRSTRLEN];
	struct in6_addr a6;

	if (!len)
		return -EINVAL;
	if (s[0] == '[') {
		const char *rb = memchr(s, ']', len);

		if (!rb)
			return -EINVAL;
		host = s + 1;
		hl = (size_t)(rb - host);
		if (hl == 0 || hl >= sizeof(tmp))
			return -EINVAL;
		memcpy(tmp, host, hl);
		tmp[hl] = 0;
		if (inet_pton(AF_INET6, tmp, &a6) != 1)
			return -EINVAL;
		if ((size_t)(rb + 1 - s) < len) {
			if (rb[1] != ':')
				return -EINVAL;
			port = rb + 2;
			pl = len - (size_t)(port - s);
		}
	} else {
		const char *colon = memchr(s, ':', len);

		if (colon) {
			hl = (size_t)(colon - s);
			port = colon + 1;
			pl = len - hl - 1;
		}
		for (size_t i = 0; i < hl; i++)
			if (!host_char_ok((unsigned char)s[i]))
				return -EINVAL;
	}
	if (hl && host[hl - 1] == '.' && s[0] != '[')
		hl--;   /* one trailing dot: the root label */
	if (!hl || hl >= hostlen)
		return -EINVAL;
	if (s[0] != '[') {
		/* no empty labels: "..", a leading dot, or a second trailing dot */
		if (host[0] == '.' || host[hl - 1] == '.')
			return -EINVAL;
		for (size_t i = 1; i < hl; i++)
			if (host[i] == '.' && host[i - 1] == '.')
				return -EINVAL;
	}
	if (port) {
		if (!pl || pl > 5)
			return -EINVAL;
		pv = 0;
		for (size_t i = 0; i < pl; i++) {
			if (!isdigit((unsigned char)port[i]))
				return -EINVAL;
			pv = pv * 10 + (unsigned long)(port[i] - '0');
		}
		if (pv == 0 || pv > 65535)
			return -EINVAL;
	} else {
		pv = default_port;
	}
	for (size_t i = 0; i < hl; i++)
		ret_host[i] = (char)tolower((unsigned char)host[i]);
	ret_host[hl] = 0;
	*ret_port = (uint16_t)pv;
	return 0;
}

int http1_parse_absolute(const char *url, size_t len, bool *ret_tls, char *ret_host,
			 size_t hostlen, uint16_t *ret_port, size_t *ret_path_off)
{
	size_t off, end;
	bool tls;
	int r;

	if (len >= 7 && strncasecmp(url, "http://", 7) == 0) {
		tls = false;
		off = 7;
	} else if (len >= 8 && strncasecmp(url, "https://", 8) == 0) {
		tls = true;
		off = 8;
	} else {
		return -ENOENT;
	}
	end = off;
	while (end < len && url[end] != '/' && url[end] != '?' && url[end] != '#')
		end++;
	if (memchr(url + off, '@', end - off))
		return -EINVAL; /* userinfo in a proxy request: refuse, never guess */
	r = http1_split_authority(url + off, end - off, tls ? 443 : 80, ret_host, hostlen, ret_port);
	if (r < 0)
		return r;
	*ret_tls = tls;
	*ret_path_off = end;
	return 0;
}

const char *http1_reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 421: return "Misdirected Request";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default: return "Error";
	}
}
