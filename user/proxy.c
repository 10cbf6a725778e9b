// SPDX-License-Identifier: MIT
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "audit.h"
#include "bpf_loader.h"
#include "buf.h"
#include "clienthello.h"
#include "conn.h"
#include "dns.h"
#include "http1.h"
#include "log.h"
#include "loop.h"
#include "policy.h"
#include "proxy.h"
#include "netaddr.h"
#include "resolve.h"
#include "rewrite.h"
#include "swap.h"
#include "tls.h"
#include "upstream.h"

#define SANDBOX_MAX 4096
#define SB_ID_LEN 64
#define CLIENT_IN_BUF 16384
#define UP_IN_BUF 16384
#define PUMP_ROUNDS 16
#define AUDIT_BACKLOG_MAX 256   /* per worker; beyond it sessions wait */
#define AUDIT_PATH_MAX 2048

/* An attached sandbox. Sessions hold a reference; the registry holds one. */
struct sbx {
	atomic_int refs;
	char id[SB_ID_LEN + 1];
	char cgroup[512];
	uint64_t cgroup_id;
	struct rw_gen *gen;     /* current policy generation; under proxy.sb_lock */
	atomic_uint conns;
	atomic_ulong conns_total;
};

/* A body being rewritten (secret swap upstream, redaction downstream): the
 * decoded body goes through a swap stream into stage, and leaves framed as
 * chunks (or raw for close-delimited HTTP/1.0 answers). */
struct xform {
	bool active;
	bool chunked_out;
	bool finishing;         /* message ended: drain the stream */
	bool ended;             /* terminator queued */
	struct swap_stream *st;
	struct buf stage;
	size_t ratio, maxfrom;
	struct swap_set *owned; /* request bodies: the per-request set */
};

struct aline {
	struct aline *next;
	size_t len;
	char data[];
};

struct listener {
	int fd;
	int kind;               /* PROXY_L_* */
	char owner[SB_ID_LEN + 1];
	struct listener *next;
};

struct worker;

/* One worker's registration of a shared listening socket. */
struct wlisten {
	struct loop_io io;
	struct worker *w;
	struct listener *l;
	struct wlisten *next;
};

struct sess;

struct worker {
	struct proxy *p;
	unsigned idx;
	pthread_t thread;
	struct loop *loop;
	struct up_pool *pool;
	struct dns *dns;        /* NULL when DNS is off */
	struct udprelay *udp;   /* first worker only; NULL when the relay is off */
	struct wlisten *listens;
	struct sess *sessions;
	unsigned nsessions;
	/* audit lines the writer had no room for yet, in order */
	struct aline *ab_head, *ab_tail;
	unsigned ab_n;
	bool ab_waiting;
};

struct proxy {
	struct proxy_cfg cfg;
	struct tls *tls;
	struct bpfl *bpfl;
	struct worker *workers;
	unsigned nworkers;
	struct audit *audit;
	pthread_rwlock_t sb_lock;
	struct sbx *sandboxes[SANDBOX_MAX];
	unsigned sb_high;       /* slots [0, sb_high) may be in use */
	pthread_mutex_t l_lock;
	struct listener *listeners;
	atomic_uint open_conns;
	atomic_bool draining;
	atomic_ulong total_conns, total_requests, refused_conns, upstream_errors, tls_handshakes;
	atomic_ulong denied_requests, secrets_swapped, redactions, audit_dropped;
	atomic_ulong lat_hist[16], lat_sum_us;
	atomic_ulong req_allow, req_deny, req_error, req_passthrough;
};

#define LAT_BUCKETS 12
static const double lat_bounds_us[LAT_BUCKETS] = { 250, 500, 1000, 2500, 5000, 10000,
						   25000, 50000, 100000, 250000, 1000000,
						   5000000 };

enum sess_state {
	S_SNIFF = 1,
	S_HANDSHAKE = 2,
	S_HTTP = 3,
	S_CONNECT_REPLY = 4,
	S_TUNNEL = 5,
	S_CLOSING = 6,
};

struct sess {
	struct worker *w;
	struct loop_io io;
	struct loop_defer kick;
	struct conn c;
	struct upconn *up;
	struct sess *next, *prev;
	enum sess_state state;
	bool dead;

	char sb_id[SB_ID_LEN + 1];
	uint64_t cgroup_id;
	struct sbx *sbx;
	bool wipe;              /* the policy has secrets: zero buffers on free */
	struct rw_gen *gen;     /* the policy generation this connection started with */
	struct pol *pol;
	size_t head_reserve;
	unsigned idle_ms, request_ms;
	char orig_ip[INET6_ADDRSTRLEN];
	char orig_cert_name[INET6_ADDRSTRLEN + 8]; /* as the client wrote it (v4-mapped) */
	uint16_t orig_port;
	bool orig_is_listener;

	bool tls;
	bool passthrough;       /* spliced without decryption (policy passthrough) */
	bool peek_wait;         /* ClientHello incomplete: wait for more (edge-triggered) */
	bool have_sni;
	bool sni_mismatch;
	char sni[256];
	bool via_connect;
	char connect_host[256];
	uint16_t connect_port;

	struct buf cin, cout, uout, uin;
	struct http1_parser req, resp;

	/* the request in flight */
	bool req_active;
	bool req_done;
	bool resp_head_sent;
	bool resp_done;
	bool close_after;
	bool is_head;
	bool upgrade_req;
	bool req_has_body;
	bool retried;
	bool up_eof_seen;
	char up_name[256];
	uint16_t up_port;
	bool up_tls;
	char key[UP_KEY_MAX];
	char *retry_head;
	size_t retry_head_len, retry_head_cap;
	uint64_t last_ms, req_start_ms;
	unsigned requests;

	/* audit of the request in flight */
	bool audited;
	bool audit_paused;
	struct timespec req_rt;
	char method[24];
	char *apath;
	uint64_t a_in, a_out;
	int a_status;
	const char *a_decision, *a_rule, *a_reason;
	uint64_t a_secrets;
	unsigned a_redactions;

	struct rw_req rw;       /* secret decisions and rewrites of the request */
	struct xform rx, tx;    /* request body / response body rewriting */
	/* request bodies when the policy has secrets: every placeholder is looked
	 * for; the upstream is not dialled until the body is in (or the buffer is
	 * full), so a refused body sends nothing upstream */
	struct swap_stream *detect;
	bool hold;
	uint64_t body_decoded;
	int body_fail;
};

static void sess_pump(struct sess *s);
static void unmap_v4(char *name, size_t len);
static bool dns_allowed_hook(void *opaque, const char *sandbox, const char *qname);
static bool dns_resolver_hook(void *opaque, const char *sandbox, struct sockaddr_storage *ret,
			      socklen_t *ret_len);
static bool dns_identify_hook(void *opaque, int fd, const struct sockaddr *peer,
			      socklen_t peerlen, char *ret, size_t len);
static const struct udprelay_hooks udp_hooks;
static void dns_audit_hook(void *opaque, const struct dns_query_info *q);

void proxy_cfg_defaults(struct proxy_cfg *cfg)
{
	cfg->max_header_bytes = 32768;
	cfg->body_buffer = 65536;
	cfg->idle_timeout_ms = 60000;
	cfg->io_timeout_ms = 60000;
	cfg->connect_timeout_ms = 10000;
	cfg->handshake_timeout_ms = 10000;
	cfg->pool_idle_max = 256;
	cfg->pool_idle_timeout_ms = 30000;
	cfg->max_conns = 16384;
}

/* ---- small helpers ---- */

static size_t json_escape(char *out, size_t outlen, const char *in)
{
	size_t o = 0;

	for (; *in && o + 7 < outlen; in++) {
		unsigned char c = (unsigned char)*in;

		if (c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = (char)c;
		} else if (c < 0x20 || c >= 0x7f) {
			o += (size_t)snprintf(out + o, outlen - o, "\\u%04x", c);
		} else {
			out[o++] = (char)c;
		}
	}
	out[o] = 0;
	return o;
}

/* Proxy-Status "details" is an sf-string: printable ASCII, " and \ escaped. */
static void sf_escape(char *out, size_t outlen, const char *in)
{
	size_t o = 0;

	for (; *in && o + 3 < outlen; in++) {
		unsigned char c = (unsigned char)*in;

		if (c < 0x20 || c >= 0x7f)
			continue;
		if (c == '"' || c == '\\')
			out[o++] = '\\';
		out[o++] = (char)c;
	}
	out[o] = 0;
}

static void sess_touch(struct sess *s) { s->last_ms = loop_now_ms(s->w->loop); }

static void audit_room_cb(void *arg);

/* Queue one audit line; keep it in order behind earlier ones when the writer
 * has no room (the worker then stops starting new requests: nothing is
 * dropped, traffic waits). */
static void audit_emit(struct worker *w, const char *line, size_t len)
{
	struct proxy *p = w->p;
	struct aline *al;
	int r;

	if (!w->ab_head) {
		r = audit_submit(p->audit, line, len);
		if (r == 0)
			return;
		if (r != -EAGAIN) {
			atomic_fetch_add(&p->audit_dropped, 1);
			log_error("audit record not written (%s): %.*s", strerror(-r),
				  (int)(len > 300 ? 300 : len), line);
			return;
		}
	}
	al = malloc(sizeof(*al) + len);
	if (!al) {
		atomic_fetch_add(&p->audit_dropped, 1);
		log_error("audit record lost: out of memory");
		return;
	}
	al->next = NULL;
	al->len = len;
	memcpy(al->data, line, len);
	if (w->ab_tail)
		w->ab_tail->next = al;
	else
		w->ab_head = al;
	w->ab_tail = al;
	w->ab_n++;
	if (!w->ab_waiting) {
		w->ab_waiting = true;
		audit_wait(p->audit, w->loop, audit_room_cb, w);
	}
}

static void audit_room_cb(void *arg)
{
	struct worker *w = arg;
	bool was_full = w->ab_n >= AUDIT_BACKLOG_MAX;

	w->ab_waiting = false;
	while (w->ab_head) {
		struct aline *al = w->ab_head;
		int r = audit_submit(w->p->audit, al->data, al->len);

		if (r == -EAGAIN) {
			w->ab_waiting = true;
			audit_wait(w->p->audit, w->loop, audit_room_cb, w);
			break;
		}
		if (r < 0) {
			atomic_fetch_add(&w->p->audit_dropped, 1);
			log_error("audit record not written: %s", strerror(-r));
		}
		w->ab_head = al->next;
		if (!w->ab_head)
			w->ab_tail = NULL;
		w->ab_n--;
		free(al);
	}
	if (was_full && w->ab_n < AUDIT_BACKLOG_MAX)
		for (struct sess *s = w->sessions; s; s = s->next)
			if (s->audit_paused)
				loop_defer(w->loop, &s->kick);
}

static bool audit_backlogged(struct worker *w) { return w->ab_n >= AUDIT_BACKLOG_MAX; }

/* Format one record and queue it. A stack buffer serves ordinary lines; a
 * longer one gets its exact bound on the heap, so no record is cut short. */
static void audit_emit_rec(struct worker *w, const struct audit_rec *r)
{
	char stack[4096], *line = stack;
	size_t cap = audit_line_bound(r);
	int n;

	if (cap > sizeof(stack)) {
		line = malloc(cap);
		if (!line) {
			atomic_fetch_add(&w->p->audit_dropped, 1);
			log_error("audit record lost: out of memory");
			return;
		}
	} else {
		cap = sizeof(stack);
	}
	n = audit_format(r, line, cap);
	if (n > 0) {
		audit_emit(w, line, (size_t)n);
	} else {
		atomic_fetch_add(&w->p->audit_dropped, 1);
		log_error("audit record lost: cannot format it (%s)", strerror(-n));
	}
	if (line != stack)
		free(line);
}

/* The one audit line of the request in flight (idempotent per request). */
static void sess_audit(struct sess *s, int status, const char *decision, const char *rule,
		       const char *reason)
{
	struct proxy *p = s->w->p;
	const char *names[64];
	struct audit_rec r = { 0 };
	struct timespec now;
	char upaddr[64] = "";

	if (s->audited || !p->audit || !s->req_active)
		return;
	s->audited = true;
	clock_gettime(CLOCK_REALTIME, &now);
	if (s->up && s->up->addr_text[0])
		snprintf(upaddr, sizeof(upaddr), "%s", s->up->addr_text);
	r.kind = "request";
	r.time = s->req_rt;
	r.sandbox = s->sb_id;
	r.cgroup = s->sbx ? s->sbx->cgroup : "";
	r.principal = s->gen ? rw_gen_principal(s->gen) : "";
	r.method = s->method;
	r.scheme = s->up_tls ? "https" : "http";
	r.host = s->up_name;
	r.port = s->up_port;
	r.path = s->apath ? s->apath : "";
	r.status = status;
	r.bytes_in = s->a_in;
	r.bytes_out = s->a_out;
	r.duration_us = (uint64_t)((now.tv_sec - s->req_rt.tv_sec) * 1000000LL +
				   (now.tv_nsec - s->req_rt.tv_nsec) / 1000);
	{
		unsigned b = 0;

		while (b < LAT_BUCKETS && (double)r.duration_us > lat_bounds_us[b])
			b++;
		atomic_fetch_add(&p->lat_hist[b], 1);
		atomic_fetch_add(&p->lat_sum_us, r.duration_us);
	}
	r.decision = decision;
	if (s->passthrough)
		atomic_fetch_add(&p->req_passthrough, 1);
	else if (!strcmp(decision, "allow"))
		atomic_fetch_add(&p->req_allow, 1);
	else if (!strcmp(decision, "deny"))
		atomic_fetch_add(&p->req_deny, 1);
	else
		atomic_fetch_add(&p->req_error, 1);
	r.rule = rule ? rule : "";
	r.reason = reason ? reason : "";
	r.nsecrets = s->gen ? rw_secret_names(s->gen, s->a_secrets, names, 64) : 0;
	r.secrets = names;
	r.redactions = s->a_redactions;
	r.tls_mode = s->passthrough ? "passthrough" : s->tls ? "mitm" : "none";
	if (s->passthrough) {
		r.kind = "connection";
		r.method = "";
		r.scheme = "https";
		r.path = "";
		if (!strcmp(decision, "allow"))
			r.decision = "passthrough";
	}
	r.upstream_addr = upaddr;
	audit_emit_rec(s->w, &r);
}

/* A connection sluice refused before any request (kind "connection"). */
static void audit_connection(struct worker *w, const char *sandbox, const char *cgroup,
			     const char *host, uint16_t port, const char *reason)
{
	struct audit_rec r = { 0 };

	if (!w->p->audit)
		return;
	r.kind = "connection";
	clock_gettime(CLOCK_REALTIME, &r.time);
	r.sandbox = sandbox;
	r.cgroup = cgroup;
	r.principal = "";
	r.host = host;
	r.port = port;
	r.decision = "deny";
	r.reason = reason;
	r.tls_mode = "none";
	audit_emit_rec(w, &r);
}

/*
 * Answer the current request ourselves and close afterwards. status/code are
 * the HTTP status and our stable error code; pstype is the RFC 9209
 * Proxy-Status error type. If the upstream's response head already went out,
 * all we can do is cut the connection.
 */
static void sess_fail(struct sess *s, int status, const char *code, const char *pstype,
		      const char *detail)
{
	char body[1024], edetail[512], ehost[300], sfd[300], head[1024];
	int bl, hl;

	if (s->up) {
		up_release(s->up, false);
		s->up = NULL;
	}
	if (s->resp_head_sent || s->state == S_TUNNEL) {
		sess_audit(s, s->resp.head.status, "error", s->a_rule, code);
		s->dead = true;
		return;
	}
	json_escape(edetail, sizeof(edetail), detail ? detail : "");
	json_escape(ehost, sizeof(ehost), s->up_name);
	bl = snprintf(body, sizeof(body),
		      "{\"error\":\"%s\",\"status\":%d,\"detail\":\"%s\",\"host\":\"%s\","
		      "\"rule\":\"%s\",\"sandbox\":\"%s\"}\n",
		      code, status, edetail, ehost, s->a_rule ? s->a_rule : "", s->sb_id);
	sf_escape(sfd, sizeof(sfd), detail ? detail : "");
	hl = snprintf(head, sizeof(head),
		      "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
		      "Proxy-Status: sluice; error=%s; details=\"%s\"\r\nCache-Control: no-store\r\n"
		      "Connection: close\r\n\r\n",
		      status, http1_reason(status), bl, pstype, sfd);
	/* cout always has head_reserve free when a head can be produced */
	if (buf_append(&s->cout, head, (size_t)hl) < 0 ||
	    buf_append(&s->cout, body, (size_t)bl) < 0) {
		s->dead = true;
		return;
	}
	s->resp_head_sent = true;
	s->state = S_CLOSING;
	s->a_out += (uint64_t)hl + (uint64_t)bl;
	sess_audit(s, status, status == 403 || status == 421 || status == 400 || status == 431
				      ? "deny" : "error", s->a_rule, code);
	if (status >= 500)
		atomic_fetch_add(&s->w->p->upstream_errors, 1);
	log_info("sandbox=%s %d %s host=%s: %s", s->sb_id, status, code, s->up_name,
		 detail ? detail : "");
}

/* ---- body rewriting ---- */

static int xform_stage_out(void *arg, const unsigned char *p, size_t n)
{
	return buf_append(&((struct xform *)arg)->stage, p, n);
}

static int xform_body_cb(void *opaque, const char *at, size_t len)
{
	struct xform *x = opaque;
	ssize_t r = swap_stream_feed(x->st, (const unsigned char *)at, len, xform_stage_out, x);

	/* the feed bound guarantees room; anything else is a bug: fail closed */
	return r == (ssize_t)len ? 0 : -1;
}

static void xform_end(struct xform *x)
{
	swap_stream_free(x->st);
	swap_set_free(x->owned);
	buf_free(&x->stage);
	memset(x, 0, sizeof(*x));
}

static int xform_start(struct xform *x, const struct swap_set *set, struct swap_set *owned,
		       size_t ratio, size_t body_buffer, bool chunked_out)
{
	size_t need;

	xform_end(x);
	x->owned = owned;
	x->ratio = ratio ? ratio : 1;
	x->maxfrom = swap_set_max_from(set);
	need = (x->maxfrom + 64) * x->ratio + 64;
	if (swap_stream_new(set, &x->st) < 0 ||
	    buf_init(&x->stage, need > body_buffer ? need : body_buffer) < 0) {
		xform_end(x);
		return -ENOMEM;
	}
	x->active = true;
	x->chunked_out = chunked_out;
	return 0;
}

/* Input bytes that may be fed now without the stage overflowing. */
static size_t xform_feed_bound(struct xform *x)
{
	size_t space = buf_free_total(&x->stage), per;

	if (swap_stream_pending(x->st))
		return 0;
	per = space / x->ratio;
	return per > x->maxfrom + 16 ? per - x->maxfrom - 16 : 0;
}

/* Move staged bytes into out as chunks; at the end, the terminator. Returns
 * bytes written to out (for the audit byte counts). */
static size_t xform_flush(struct xform *x, struct buf *out)
{
	size_t wrote = 0;

	for (int round = 0; round < 4; round++) {
		if (swap_stream_pending(x->st))
			swap_stream_feed(x->st, NULL, 0, xform_stage_out, x);
		if (x->finishing && !swap_stream_pending(x->st))
			swap_stream_finish(x->st, xform_stage_out, x);
		if (x->stage.len) {
			size_t room = buf_free_total(out), n = x->stage.len;
			char hdr[24];
			int hl = 0;

			if (x->chunked_out) {
				if (room < 32)
					break;
				if (n > room - 32)
					n = room - 32;
				hl = snprintf(hdr, sizeof(hdr), "%zx\r\n", n);
				buf_append(out, hdr, (size_t)hl);
			} else if (n > room) {
				n = room;
			}
			if (!n)
				break;
			buf_append(out, buf_head(&x->stage), n);
			explicit_bzero(buf_head(&x->stage), n);
			buf_consume(&x->stage, n);
			if (x->chunked_out)
				buf_append(out, "\r\n", 2);
			wrote += n + (size_t)hl + (x->chunked_out ? 2 : 0);
			continue;
		}
		if (x->finishing && !x->ended && !swap_stream_pending(x->st) &&
		    swap_stream_finish(x->st, xform_stage_out, x) == 0 && !x->stage.len) {
			if (x->chunked_out) {
				if (buf_free_total(out) < 5)
					break;
				buf_append(out, "0\r\n\r\n", 5);
				wrote += 5;
			}
			x->ended = true;
		}
		break;
	}
	return wrote;
}

static bool xform_busy(const struct xform *x) { return x->active && !x->ended; }

/* ---- request side ---- */

/* An IPv4-mapped IPv6 literal names an IPv4 host: dial and verify it as one. */
static void unmap_v4(char *name, size_t len)
{
	struct in6_addr a;

	if (strchr(name, ':') && inet_pton(AF_INET6, name, &a) == 1 && IN6_IS_ADDR_V4MAPPED(&a))
		inet_ntop(AF_INET, &a.s6_addr[12], name, (socklen_t)len);
}

static int sess_route(struct sess *s, const struct http1_head *h, const char **ret_target,
		      size_t *ret_target_len)
{
	char hhost[256] = "", ahost[256], why[400];
	uint16_t hport = 0, aport = 0;
	bool has_host = false, abs = false, abs_tls = false;
	const char *url = http1_url(h), *hv = NULL;
	size_t hl = 0, path_off = 0;
	int nhost = 0, r;

	for (unsigned i = 0; i < h->nf; i++) {
		if (h->f[i].name_len == 4 && strncasecmp(http1_name(h, i), "host", 4) == 0) {
			nhost++;
			hv = http1_value(h, i);
			hl = h->f[i].value_len;
		}
	}
	if (nhost > 1) {
		sess_fail(s, 400, "bad_request", "http_request_error", "more than one Host header");
		return -1;
	}
	if (nhost == 1) {
		if (http1_split_authority(hv, hl, 0, hhost, sizeof(hhost), &hport) < 0) {
			sess_fail(s, 400, "bad_request", "http_request_error", "invalid Host header");
			return -1;
		}
		has_host = true;
	}
	r = http1_parse_absolute(url, h->url_len, &abs_tls, ahost, sizeof(ahost), &aport, &path_off);
	if (r == -EINVAL) {
		sess_fail(s, 400, "bad_request", "http_request_error", "invalid request target");
		return -1;
	}
	abs = r == 0;
	*ret_target = abs ? url + path_off : url;
	*ret_target_len = abs ? h->url_len - path_off : h->url_len;
	if (!abs && (h->url_len == 0 || url[0] != '/') && !(h->url_len == 1 && url[0] == '*')) {
		sess_fail(s, 400, "bad_request", "http_request_error", "invalid request target");
		return -1;
	}

	if (s->tls) {
		s->up_tls = true;
		s->up_port = s->via_connect ? s->connect_port : s->orig_port;
		if (s->sni_mismatch) {
			snprintf(why, sizeof(why), "TLS server name %s does not match CONNECT %s",
				 s->sni, s->connect_host);
			goto misdirected;
		}
		if (s->have_sni) {
			snprintf(s->up_name, sizeof(s->up_name), "%s", s->sni);
		} else if (s->via_connect) {
			snprintf(s->up_name, sizeof(s->up_name), "%s", s->connect_host);
		} else if (has_host) {
			snprintf(s->up_name, sizeof(s->up_name), "%s", hhost);
		} else {
			snprintf(s->up_name, sizeof(s->up_name), "%s", s->sni);
		}
		if (has_host && strcmp(hhost, s->up_name) != 0) {
			snprintf(why, sizeof(why), "Host %s does not match %s %s", hhost,
				 s->have_sni ? "TLS server name" : "CONNECT authority", s->up_name);
			goto misdirected;
		}
		if (abs && strcmp(ahost, s->up_name) != 0) {
			snprintf(why, sizeof(why), "request target host %s does not match %s", ahost,
				 s->up_name);
			goto misdirected;
		}
	} else if (abs) {
		s->up_tls = abs_tls;
		snprintf(s->up_name, sizeof(s->up_name), "%s", ahost);
		s->up_port = aport;
		if (s->via_connect && strcmp(ahost, s->connect_host) != 0) {
			snprintf(why, sizeof(why), "request target host %s does not match CONNECT %s",
				 ahost, s->connect_host);
			goto misdirected;
		}
	} else if (has_host) {
		s->up_tls = false;
		snprintf(s->up_name, sizeof(s->up_name), "%s", hhost);
		if (s->via_connect && strcmp(hhost, s->connect_host) != 0) {
			snprintf(why, sizeof(why), "Host %s does not match CONNECT %s", hhost,
				 s->connect_host);
			goto misdirected;
		}
		if (hport)
			s->up_port = hport;
		else if (s->via_connect)
			s->up_port = s->connect_port;
		else if (!s->orig_is_listener)
			s->up_port = s->orig_port; /* what the program actually dialled */
		else
			s->up_port = 80;
	} else if (s->via_connect) {
		s->up_tls = false;
		snprintf(s->up_name, sizeof(s->up_name), "%s", s->connect_host);
		s->up_port = s->connect_port;
	} else if (!s->orig_is_listener) {
		s->up_tls = false;
		snprintf(s->up_name, sizeof(s->up_name), "%s", s->orig_ip);
		s->up_port = s->orig_port;
	} else {
		sess_fail(s, 400, "bad_request", "http_request_error",
			  "no Host header and no destination");
		return -1;
	}
	/* the generation is in the key: a reload (new deny set) never reuses a
	 * connection dialled under the old one */
	unmap_v4(s->up_name, sizeof(s->up_name));
	snprintf(s->key, sizeof(s->key), "%s|%p|%c|%s|%u", s->sb_id, (void *)s->gen,
		 s->up_tls ? 's' : 'p', s->up_name, s->up_port);
	return 0;

misdirected:
	sess_fail(s, 421, "host_mismatch", "http_request_denied", why);
	return -1;
}

static int put(char *out, size_t cap, size_t *len, const char *p, size_t n)
{
	if (*len + n > cap)
		return -ENOBUFS;
	memcpy(out + *len, p, n);
	*len += n;
	return 0;
}

static int put_str(char *out, size_t cap, size_t *len, const char *p)
{
	return put(out, cap, len, p, strlen(p));
}

static void upstream_notify(void *owner)
{
	struct sess *s = owner;

	if (!s->req_active && s->up && s->up->state == UP_READY && !up_idle_alive(s->up)) {
		/* Parked between keep-alive requests and the server closed it. */
		up_release(s->up, false);
		s->up = NULL;
	}
	sess_pump(s);
}

static void sess_handle_connect(struct sess *s, const struct http1_head *h)
{
	static const char ok[] = "HTTP/1.1 200 Connection Established\r\n\r\n";

	if (s->tls || s->via_connect || s->requests > 0) {
		sess_fail(s, 400, "bad_request", "http_request_error",
			  "CONNECT is only accepted as the first request of a plain connection");
		return;
	}
	if (http1_split_authority(http1_url(h), h->url_len, 0, s->connect_host,
				  sizeof(s->connect_host), &s->connect_port) < 0 ||
	    s->connect_port == 0) {
		sess_fail(s, 400, "bad_request", "http_request_error",
			  "CONNECT needs an authority host:port");
		return;
	}
	s->via_connect = true;
	snprintf(s->up_name, sizeof(s->up_name), "%s", s->connect_host);
	/* refuse what is already known to be refused, before saying 200 */
	{
		struct sockaddr_storage ss;
		const struct pol_rule *rule = NULL;
		char why[400];

		unmap_v4(s->up_name, sizeof(s->up_name));
		s->up_port = s->connect_port;
		s->req_active = true; /* the CONNECT itself is audited when refused */
		s->audited = false;
		clock_gettime(CLOCK_REALTIME, &s->req_rt);
		snprintf(s->method, sizeof(s->method), "CONNECT");
		if (resolve_literal(s->up_name, s->connect_port, &ss) == 0 &&
		    !up_dial_allowed(&ss, rw_gen_deny(s->gen))) {
			snprintf(why, sizeof(why), "CONNECT to %s:%u: a denied address", s->up_name,
				 s->connect_port);
			sess_fail(s, 403, "upstream_address_denied", "destination_ip_prohibited", why);
			return;
		}
		if (rw_gen_state(s->gen) == RW_ACTIVE &&
		    pol_match_conn(s->pol, s->up_name, s->connect_port, &rule) == POL_DENY) {
			s->a_rule = "default";
			snprintf(why, sizeof(why), "CONNECT to %s:%u: no rule allows it", s->up_name,
				 s->connect_port);
			sess_fail(s, 403, "denied_by_policy", "http_request_denied", why);
			return;
		}
		s->req_active = false;
	}
	buf_append(&s->cout, ok, sizeof(ok) - 1);
	s->state = S_CONNECT_REPLY;
	/* The tunnel starts a new byte stream: a fresh parser for it. */
	http1_free(&s->req);
	http1_init(&s->req, false, s->head_reserve - 1024);
}

/* Policy for one request: normalised path, then allow rules. 0 or -1 (answered). */
static int sess_policy(struct sess *s, const struct http1_head *h, const char *target,
		       size_t tlen)
{
	const struct pol_rule *rule = NULL;
	const char *reason = NULL, *q = memchr(target, '?', tlen);
	size_t plen = q ? (size_t)(q - target) : tlen;
	char why[400];

	(void)h;
	switch (rw_gen_state(s->gen)) {
	case RW_ACTIVE:
		break;
	case RW_PENDING:
		sess_fail(s, 503, "not_synced", "proxy_configuration_error",
			  "this sandbox has no configuration from the control plane yet");
		return -1;
	case RW_DISABLED:
		sess_fail(s, 403, "principal_disabled", "http_request_denied",
			  "the control plane disabled this sandbox's principal");
		return -1;
	default:
		sess_fail(s, 403, "principal_revoked", "http_request_denied",
			  "the control plane revoked this sandbox's principal");
		return -1;
	}
	if (pol_path_check(target, plen, &reason) < 0) {
		snprintf(why, sizeof(why), "request path refused: %s", reason ? reason : "invalid");
		sess_fail(s, 400, "path_not_normalized", "http_request_error", why);
		return -1;
	}
	if (pol_match_request(s->pol, s->up_name, s->up_port, s->method, target, plen, &rule,
			      &reason) != POL_ALLOW) {
		s->a_rule = rule ? pol_rule_name(rule) : "default";
		atomic_fetch_add(&s->w->p->denied_requests, 1);
		snprintf(why, sizeof(why), "%s %s:%u%.*s: %s", s->method, s->up_name, s->up_port,
			 (int)(plen > 200 ? 200 : plen), target,
			 reason ? reason : "no rule allows it");
		sess_fail(s, 403, "denied_by_policy", "http_request_denied", why);
		return -1;
	}
	s->a_rule = rule ? pol_rule_name(rule) : "";
	return 0;
}

/* Get (or keep the parked) upstream connection for the request in flight. */
static void sess_acquire(struct sess *s)
{
	if (s->up)
		s->up->reused = true;
	else
		s->up = up_acquire(s->w->pool, s->key, s->up_name, s->up_port, s->up_tls,
				   rw_gen_deny(s->gen), rw_gen_upstream_tls(s->gen), upstream_notify,
				   s);
	if (!s->up)
		sess_fail(s, 503, "out_of_memory", "proxy_internal_error", "cannot allocate");
}

static int discard_out(void *arg, const unsigned char *p, size_t n)
{
	(void)arg;
	(void)p;
	(void)n;
	return 0;
}

/* Decoded request body bytes: placeholder detection, then the secret swap. */
static int req_body_cb(void *opaque, const char *at, size_t len)
{
	struct sess *s = opaque;

	s->body_decoded += len;
	if (s->detect &&
	    swap_stream_feed(s->detect, (const unsigned char *)at, len, discard_out, NULL) !=
		    (ssize_t)len)
		return -1;
	if (s->rx.active) {
		if (s->rw.body_max && s->body_decoded > s->rw.body_max) {
			s->body_fail = 413; /* chunked body over the secret's max_bytes */
			return -1;
		}
		return xform_body_cb(&s->rx, at, len);
	}
	return 0;
}

/* Placeholders seen in the body so far; refuse when one may not go there. */
static bool sess_body_checked(struct sess *s)
{
	uint64_t hits;

	if (!s->detect)
		return true;
	if (s->req.done)
		swap_stream_finish(s->detect, discard_out, NULL);
	hits = swap_stream_hits(s->detect);
	if (!hits)
		return true;
	rw_body_check(s->gen, s->up_name, hits, &s->rw);
	if (!s->rw.status)
		return true;
	s->a_secrets |= hits;
	atomic_fetch_add(&s->w->p->denied_requests, 1);
	sess_fail(s, s->rw.status, s->rw.code, s->rw.pstype, s->rw.detail);
	return false;
}

/* Release a held body: dial once it is all in, or once the buffer is full. */
static void sess_hold_check(struct sess *s)
{
	if (!s->hold || s->state != S_HTTP)
		return;
	if (!s->req.done && buf_free_total(&s->uout) > s->head_reserve + 1024)
		return;
	if (!sess_body_checked(s))
		return;
	s->hold = false;
	sess_acquire(s);
}

/* The request head is complete: route it and queue the upstream head. */
static void sess_request_head(struct sess *s)
{
	struct proxy *p = s->w->p;
	const struct http1_head *h = &s->req.head;
	const char *target, *method = llhttp_method_name((llhttp_method_t)h->method);
	size_t tlen, len = 0, cap = buf_free_total(&s->uout);
	char *out;
	const char *upg = NULL;
	size_t upg_len = 0;
	bool has_host = false;
	int r = 0;

	if (h->method == HTTP_CONNECT) {
		sess_handle_connect(s, h);
		return;
	}
	s->req_active = true;
	s->req_start_ms = loop_now_ms(s->w->loop);
	s->requests++;
	atomic_fetch_add(&p->total_requests, 1);
	s->audited = false;
	clock_gettime(CLOCK_REALTIME, &s->req_rt);
	snprintf(s->method, sizeof(s->method), "%s", method);
	s->a_status = 0;
	s->a_decision = NULL;
	s->a_rule = NULL;
	s->a_reason = NULL;
	s->a_secrets = 0;
	s->a_redactions = 0;
	s->up_name[0] = 0;
	s->up_port = 0;
	if (s->apath)
		s->apath[0] = 0;
	if (sess_route(s, h, &target, &tlen) < 0)
		return;
	if (s->apath) {
		size_t pl = tlen;
		const char *q = memchr(target, '?', tlen);

		if (q)
			pl = (size_t)(q - target);
		if (pl >= AUDIT_PATH_MAX)
			pl = AUDIT_PATH_MAX - 1;
		memcpy(s->apath, target, pl);
		s->apath[pl] = 0;
	}
	if (sess_policy(s, h, target, tlen) < 0)
		return;
	rw_req_clear(&s->rw);
	xform_end(&s->rx);
	if (rw_request(s->gen, s->up_name, !s->up_tls, h, target, tlen, &s->rw) < 0) {
		sess_fail(s, 503, "out_of_memory", "proxy_internal_error", "cannot allocate");
		return;
	}
	if (s->rw.status) {
		s->a_secrets = s->rw.found; /* audit: the secrets whose placeholders were sent */
		atomic_fetch_add(&p->denied_requests, 1);
		sess_fail(s, s->rw.status, s->rw.code, s->rw.pstype, s->rw.detail);
		return;
	}
	if (s->rw.target) {
		target = s->rw.target;
		tlen = s->rw.target_len;
	}
	s->a_secrets = s->rw.swapped;
	if (s->rw.swapped)
		atomic_fetch_add(&p->secrets_swapped,
				 (unsigned long)__builtin_popcountll(s->rw.swapped));
	if (s->rw.body_set &&
	    xform_start(&s->rx, s->rw.body_set, NULL, rw_gen_ratio(s->gen, true),
			pol_limits(s->pol)->body_buffer_bytes, true) < 0) {
		sess_fail(s, 503, "out_of_memory", "proxy_internal_error", "cannot allocate");
		return;
	}
	swap_stream_free(s->detect);
	s->detect = NULL;
	s->hold = false;
	s->body_decoded = 0;
	s->body_fail = 0;
	if ((h->chunked || h->content_length > 0) && rw_gen_nsecrets(s->gen)) {
		if (swap_stream_new(rw_gen_detect_set(s->gen), &s->detect) < 0) {
			sess_fail(s, 503, "out_of_memory", "proxy_internal_error", "cannot allocate");
			return;
		}
		s->hold = true;
		/* the client may wait for 100 before sending the body we hold */
		{
			size_t el;
			const char *ev = http1_get(h, "expect", &el);

			if (ev && http1_list_has(ev, el, "100-continue"))
				buf_append(&s->cout, "HTTP/1.1 100 Continue\r\n\r\n", 25);
		}
	}
	s->req.body_cb = (s->rx.active || s->detect) ? req_body_cb : NULL;
	s->req.body_opaque = s;
	s->is_head = h->method == HTTP_HEAD;
	s->close_after = !h->keep_alive;
	s->req_has_body = h->chunked || h->content_length > 0;
	s->upgrade_req = false;
	upg = http1_get(h, "upgrade", &upg_len);
	if (upg && h->upgrade) {
		size_t cl;
		const char *cv = http1_get(h, "connection", &cl);

		s->upgrade_req = cv && http1_list_has(cv, cl, "upgrade");
	}

	if (buf_space(&s->uout) < cap)
		buf_compact(&s->uout);
	out = buf_tail(&s->uout);
	cap = s->uout.cap - s->uout.len;
	r |= put_str(out, cap, &len, method);
	r |= put(out, cap, &len, " ", 1);
	if (tlen)
		r |= put(out, cap, &len, target, tlen);
	else
		r |= put(out, cap, &len, "/", 1);
	r |= put_str(out, cap, &len, " HTTP/1.1\r\n");
	for (unsigned i = 0; i < h->nf; i++) {
		const char *v = http1_value(h, i);
		size_t vl = h->f[i].value_len;

		if (http1_is_hop_by_hop(h, i))
			continue;
		if (s->rx.active &&
		    ((h->f[i].name_len == 14 && !strncasecmp(http1_name(h, i), "content-length", 14)) ||
		     (h->f[i].name_len == 17 &&
		      !strncasecmp(http1_name(h, i), "transfer-encoding", 17))))
			continue; /* the rewritten body leaves chunked */
		if (h->f[i].name_len == 4 && strncasecmp(http1_name(h, i), "host", 4) == 0)
			has_host = true;
		if (s->hold && h->f[i].name_len == 6 && !strncasecmp(http1_name(h, i), "expect", 6))
			continue; /* answered by sluice itself (100 Continue) */
		for (unsigned k = 0; k < s->rw.nfields; k++) {
			if (s->rw.fields[k].index == i) {
				v = s->rw.fields[k].value;
				vl = s->rw.fields[k].len;
			}
		}
		r |= put(out, cap, &len, http1_name(h, i), h->f[i].name_len);
		r |= put(out, cap, &len, ": ", 2);
		r |= put(out, cap, &len, v, vl);
		r |= put(out, cap, &len, "\r\n", 2);
	}
	if (s->rx.active)
		r |= put_str(out, cap, &len, "Transfer-Encoding: chunked\r\n");
	if (!has_host) {
		char hb[300];

		snprintf(hb, sizeof(hb), "Host: %s%s%s\r\n", strchr(s->up_name, ':') ? "[" : "",
			 s->up_name, strchr(s->up_name, ':') ? "]" : "");
		r |= put_str(out, cap, &len, hb);
	}
	if (s->upgrade_req) {
		r |= put_str(out, cap, &len, "Connection: Upgrade\r\nUpgrade: ");
		r |= put(out, cap, &len, upg, upg_len);
		r |= put(out, cap, &len, "\r\n", 2);
	}
	r |= put(out, cap, &len, "\r\n", 2);
	if (r) {
		sess_fail(s, 431, "header_too_large", "http_request_error",
			  "request head too large after rewriting");
		return;
	}
	/* A bodiless request on a reused connection can be replayed once if the
	 * server had closed that connection meanwhile. */
	s->retry_head_len = 0;
	if (!s->req_has_body && !s->rw.swapped) { /* never keep a copy holding a real secret */
		if (s->retry_head_cap < len) {
			char *nb = realloc(s->retry_head, len);

			if (nb) {
				s->retry_head = nb;
				s->retry_head_cap = len;
			}
		}
		if (s->retry_head_cap >= len) {
			memcpy(s->retry_head, out, len);
			s->retry_head_len = len;
		}
	}
	s->uout.len += len;
	s->retried = false;
	s->up_eof_seen = false;
	s->resp_head_sent = false;
	s->resp_done = false;
	http1_next(&s->resp);
	s->resp.err_status = 0;
	s->resp.no_body = s->is_head;
	if (s->up && (strcmp(s->up->key, s->key) != 0 || s->up->state != UP_READY ||
		      s->up->c.eof)) {
		up_release(s->up, s->up->state == UP_READY && !s->up->c.eof);
		s->up = NULL;
	}
	if (!s->hold)
		sess_acquire(s);
	log_debug("sandbox=%s %s %s://%s:%u%.*s", s->sb_id, method, s->up_tls ? "https" : "http",
		  s->up_name, s->up_port, (int)(tlen > 200 ? 200 : tlen), target);
}

static bool client_fill(struct sess *s)
{
	ssize_t n;
	size_t space;

	if (s->c.eof || s->state == S_CLOSING || !conn_can_read(&s->c))
		return false;
	space = buf_space(&s->cin);
	if (!space)
		return false;
	n = conn_read(&s->c, buf_tail(&s->cin), space);
	if (n > 0) {
		s->cin.len += (size_t)n;
		sess_touch(s);
		return true;
	}
	if (n < 0) {
		s->dead = true;
		return false;
	}
	return s->c.eof;
}

static bool client_flush(struct sess *s)
{
	bool progress = false;

	while (s->cout.len && s->c.wr_ready) {
		ssize_t n = conn_write(&s->c, buf_head(&s->cout), s->cout.len);

		if (n < 0) {
			s->dead = true;
			return false;
		}
		if (n == 0)
			break;
		buf_consume(&s->cout, (size_t)n);
		sess_touch(s);
		progress = true;
	}
	return progress;
}

static bool request_parse(struct sess *s)
{
	enum http1_event ev;
	size_t room, n;
	bool body_phase;
	ssize_t used;

	if (s->state != S_HTTP || s->req.done || s->req.err_status)
		return false;
	if (!s->cin.len) {
		if (s->c.eof) {
			int e = http1_eof(&s->req);

			if (e == 0 && !s->req_active) {
				s->state = S_CLOSING; /* idle keep-alive closed by the client */
				return true;
			}
			if (e < 0) {
				s->dead = true; /* request cut short: nothing sane to answer */
				return false;
			}
		}
		return false;
	}
	if (!s->req_active && !s->req.head_seen && audit_backlogged(s->w)) {
		s->audit_paused = true; /* the audit writer is behind: wait for it */
		return false;
	}
	s->audit_paused = false;
	if (!s->req_active && !s->req.head_seen)
		s->a_in = 0;
	room = buf_free_total(&s->uout);
	if (room <= s->head_reserve) {
		sess_hold_check(s);
		return false;
	}
	n = s->cin.len < room - s->head_reserve ? s->cin.len : room - s->head_reserve;
	body_phase = s->req.in_body && s->req.head_seen;
	if (body_phase && s->rx.active) {
		size_t b;

		xform_flush(&s->rx, &s->uout);
		b = xform_feed_bound(&s->rx);
		if (n > b)
			n = b;
		if (!n)
			return false;
	}
	used = http1_feed(&s->req, buf_head(&s->cin), n, &ev);
	if (ev == HTTP1_EV_ERROR) {
		if (s->body_fail == 413) {
			char why[200];

			snprintf(why, sizeof(why), "request body over max_bytes (%zu) of a secret "
				 "swapped into it", s->rw.body_max);
			sess_fail(s, 413, "secret_body_too_large", "http_request_error", why);
			return true;
		}
		if (s->req.err_status == 431)
			sess_fail(s, 431, "header_too_large", "http_request_error",
				  s->req.err_reason);
		else
			sess_fail(s, 400, "bad_request", "http_request_error", s->req.err_reason);
		return true;
	}
	if (body_phase && used > 0 && !s->rx.active)
		buf_append(&s->uout, buf_head(&s->cin), (size_t)used);
	buf_consume(&s->cin, (size_t)used);
	s->a_in += (uint64_t)used;
	if (ev == HTTP1_EV_HEAD) {
		sess_request_head(s);
		if (s->state != S_HTTP)
			return true;
	}
	if (s->req.done && s->req_active) {
		s->req_done = true;
		if (s->rx.active && !s->rx.finishing) {
			s->rx.finishing = true;
			xform_flush(&s->rx, &s->uout);
		}
	}
	if (s->detect && body_phase && !sess_body_checked(s))
		return true; /* streamed past the hold: abort before the placeholder leaves */
	sess_hold_check(s);
	return used > 0 || ev != HTTP1_EV_NONE;
}

/* ---- upstream side ---- */

static bool up_retry(struct sess *s)
{
	if (s->retried || !s->up || !s->up->reused || !s->retry_head_len || s->resp.head_seen ||
	    s->uin.len)
		return false;
	up_release(s->up, false);
	s->retried = true;
	s->uout.len = 0;
	s->uout.off = 0;
	buf_append(&s->uout, s->retry_head, s->retry_head_len);
	/* bypass the pool: key gets a unique suffix for this one acquire */
	s->up = up_acquire(s->w->pool, "", s->up_name, s->up_port, s->up_tls, rw_gen_deny(s->gen),
			   rw_gen_upstream_tls(s->gen), upstream_notify, s);
	if (!s->up)
		return false;
	snprintf(s->up->key, sizeof(s->up->key), "%s", s->key);
	http1_next(&s->resp);
	s->resp.no_body = s->is_head;
	return true;
}

static void up_broken(struct sess *s, const char *what)
{
	char why[300];

	if (up_retry(s))
		return;
	snprintf(why, sizeof(why), "%s (%s)", what, s->up ? s->up->addr_text : "?");
	sess_fail(s, 502, "upstream_closed", "http_response_incomplete", why);
}

static bool upstream_io(struct sess *s)
{
	struct upconn *u = s->up;
	bool progress = false;
	enum up_state before;
	ssize_t n;

	if (!u)
		return false;
	before = u->state;
	if (u->state == UP_CONNECTING || u->state == UP_HANDSHAKE)
		up_progress(u);
	if (u->state != before)
		progress = true;
	if (u->state == UP_FAILED) {
		const char *ps = u->fail_status == 403 ? "destination_ip_prohibited"
				 : strcmp(u->fail_code, "upstream_dns_failed") == 0 ? "dns_error"
				 : strcmp(u->fail_code, "upstream_tls_failed") == 0
					 ? "tls_certificate_error"
					 : "connection_refused";
		char detail[sizeof(u->fail_detail)];

		snprintf(detail, sizeof(detail), "%s", u->fail_detail);
		sess_fail(s, u->fail_status, u->fail_code, ps, detail);
		return true;
	}
	if (u->state != UP_READY)
		return progress;
	if (xform_busy(&s->rx))
		xform_flush(&s->rx, &s->uout);
	while (s->uout.len && u->c.wr_ready && !s->hold) {
		n = conn_write(&u->c, buf_head(&s->uout), s->uout.len);
		if (n < 0) {
			up_broken(s, "upstream reset while sending the request");
			return true;
		}
		if (n == 0)
			break;
		buf_consume(&s->uout, (size_t)n);
		sess_touch(s);
		progress = true;
	}
	if (!s->resp_done && conn_can_read(&u->c)) {
		size_t space = buf_space(&s->uin);

		if (space) {
			n = conn_read(&u->c, buf_tail(&s->uin), space);
			if (n > 0) {
				s->uin.len += (size_t)n;
				sess_touch(s);
				progress = true;
			} else if (n < 0) {
				up_broken(s, "upstream reset");
				return true;
			} else if (u->c.eof) {
				progress = true;
			}
		}
	}
	return progress;
}

static void sess_response_head(struct sess *s)
{
	if (atomic_load(&s->w->p->draining))
		s->close_after = true; /* say Connection: close while draining */
	struct proxy *p = s->w->p;
	const struct http1_head *h = &s->resp.head;
	size_t len = 0, cap;
	char line[64], *out, **red = NULL;
	size_t *redl = NULL;
	bool final = h->status >= 200 || h->status == 101;
	bool switching = h->status == 101 && s->upgrade_req;
	bool rewrite_body = false;
	int r = 0, nred;

	(void)p;
	s->a_status = h->status;
	if (h->status == 101 && !s->upgrade_req) {
		sess_fail(s, 502, "upstream_bad_response", "http_protocol_error",
			  "101 Switching Protocols without an Upgrade request");
		return;
	}
	if (final && (h->needs_eof || !h->keep_alive))
		s->close_after = s->close_after || h->needs_eof;
	/* Real secret values never reach the sandbox: header values now, the
	 * body through a redaction stream (then framed as chunks). */
	nred = rw_response_headers(s->rw.resp_set ? s->rw.resp_set : rw_gen_redact_set(s->gen), h,
				   &red, &redl);
	if (nred < 0) {
		sess_fail(s, 502, "out_of_memory", "proxy_internal_error", "cannot allocate");
		return;
	}
	s->a_redactions += (unsigned)nred;
	xform_end(&s->tx);
	if (final && !switching && s->resp.in_body && (rw_gen_redacts(s->gen) || s->rw.resp_set)) {
		bool chunked = s->req.head.http_minor >= 1;

		if (xform_start(&s->tx, s->rw.resp_set ? s->rw.resp_set : rw_gen_redact_set(s->gen),
				NULL, rw_gen_ratio(s->gen, false) + 1,
				pol_limits(s->pol)->body_buffer_bytes, chunked) < 0) {
			rw_resp_free(red, redl, h->nf);
			sess_fail(s, 502, "out_of_memory", "proxy_internal_error", "cannot allocate");
			return;
		}
		if (!chunked)
			s->close_after = true; /* HTTP/1.0: the end is the close */
		rewrite_body = true;
	}
	s->resp.body_cb = s->tx.active ? xform_body_cb : NULL;
	s->resp.body_opaque = &s->tx;
	buf_compact(&s->cout);
	out = buf_tail(&s->cout);
	cap = s->cout.cap - s->cout.len;
	snprintf(line, sizeof(line), "HTTP/1.1 %d ", h->status);
	r |= put_str(out, cap, &len, line);
	r |= put(out, cap, &len, http1_url(h), h->url_len);
	r |= put(out, cap, &len, "\r\n", 2);
	for (unsigned i = 0; i < h->nf; i++) {
		if (http1_is_hop_by_hop(h, i))
			continue;
		if (rewrite_body &&
		    ((h->f[i].name_len == 14 && !strncasecmp(http1_name(h, i), "content-length", 14)) ||
		     (h->f[i].name_len == 17 &&
		      !strncasecmp(http1_name(h, i), "transfer-encoding", 17))))
			continue;
		r |= put(out, cap, &len, http1_name(h, i), h->f[i].name_len);
		r |= put(out, cap, &len, ": ", 2);
		if (red && red[i])
			r |= put(out, cap, &len, red[i], redl[i]);
		else
			r |= put(out, cap, &len, http1_value(h, i), h->f[i].value_len);
		r |= put(out, cap, &len, "\r\n", 2);
	}
	rw_resp_free(red, redl, h->nf);
	if (rewrite_body && s->tx.chunked_out)
		r |= put_str(out, cap, &len, "Transfer-Encoding: chunked\r\n");
	if (switching) {
		size_t ul;
		const char *uv = http1_get(h, "upgrade", &ul);

		r |= put_str(out, cap, &len, "Connection: Upgrade\r\n");
		if (uv) {
			r |= put_str(out, cap, &len, "Upgrade: ");
			r |= put(out, cap, &len, uv, ul);
			r |= put(out, cap, &len, "\r\n", 2);
		}
	} else if (final && s->close_after) {
		r |= put_str(out, cap, &len, "Connection: close\r\n");
	} else if (final && s->req.head.http_minor == 0) {
		r |= put_str(out, cap, &len, "Connection: keep-alive\r\n");
	}
	r |= put(out, cap, &len, "\r\n", 2);
	if (r) {
		sess_fail(s, 502, "upstream_bad_response", "http_response_header_section_size",
			  "response head too large");
		return;
	}
	s->cout.len += len;
	s->a_out += len;
	if (final)
		s->resp_head_sent = true;
}

static bool response_parse(struct sess *s)
{
	enum http1_event ev;
	size_t room, n;
	bool body_phase;
	ssize_t used;

	if (s->state != S_HTTP || !s->up || s->up->state != UP_READY || s->resp_done)
		return false;
	if (!s->uin.len) {
		if (s->up->c.eof && !s->up_eof_seen) {
			int e = http1_eof(&s->resp);

			s->up_eof_seen = true;
			if (e == 1) {
				s->resp_done = true;
				s->close_after = true;
				if (s->tx.active && !s->tx.finishing) {
					s->tx.finishing = true;
					s->a_out += xform_flush(&s->tx, &s->cout);
				}
				return true;
			}
			if (s->resp_head_sent) {
				s->dead = true; /* body cut short: the client must see it */
				return false;
			}
			up_broken(s, "upstream closed the connection before answering");
			return true;
		}
		return false;
	}
	room = buf_free_total(&s->cout);
	if (room <= s->head_reserve)
		return false;
	n = s->uin.len < room - s->head_reserve ? s->uin.len : room - s->head_reserve;
	body_phase = s->resp.in_body && s->resp.head_seen;
	if (body_phase && s->tx.active) {
		size_t b;

		s->a_out += xform_flush(&s->tx, &s->cout);
		b = xform_feed_bound(&s->tx);
		if (n > b)
			n = b;
		if (!n)
			return false;
	}
	used = http1_feed(&s->resp, buf_head(&s->uin), n, &ev);
	if (ev == HTTP1_EV_ERROR) {
		char why[200];

		snprintf(why, sizeof(why), "malformed response: %s", s->resp.err_reason);
		sess_fail(s, 502, "upstream_bad_response", "http_protocol_error", why);
		return true;
	}
	if (body_phase && used > 0 && !s->tx.active) {
		buf_append(&s->cout, buf_head(&s->uin), (size_t)used);
		s->a_out += (uint64_t)used;
	}
	buf_consume(&s->uin, (size_t)used);
	if (ev == HTTP1_EV_HEAD) {
		sess_response_head(s);
		if (s->state != S_HTTP)
			return true;
	}
	if (s->resp.done) {
		int st = s->resp.head.status;

		if (st == 101 && s->upgrade_req) {
			s->resp_done = true;
			sess_audit(s, 101, "allow", s->a_rule, "upgraded");
			s->state = S_TUNNEL;
			/* what the client sent after the upgrade request goes up as-is */
			buf_append(&s->uout, buf_head(&s->cin), s->cin.len);
			buf_consume(&s->cin, s->cin.len);
			buf_append(&s->cout, buf_head(&s->uin), s->uin.len);
			buf_consume(&s->uin, s->uin.len);
			return true;
		}
		if (st < 200) {
			http1_next(&s->resp); /* interim (100 Continue): the final one follows */
			s->resp.no_body = s->is_head;
		} else {
			s->resp_done = true;
			if (s->tx.active && !s->tx.finishing) {
				s->tx.finishing = true;
				s->a_out += xform_flush(&s->tx, &s->cout);
			}
		}
	}
	return used > 0 || ev != HTTP1_EV_NONE;
}

/* Both halves of the exchange are over: recycle or close. */
static bool exchange_finish(struct sess *s)
{
	bool reusable;

	if (s->state != S_HTTP || !s->req_active || !s->resp_done)
		return false;
	if (!s->req_done) {
		/* Answered before the request body ended: neither side is reusable. */
		sess_audit(s, s->a_status, "allow", s->a_rule, NULL);
		up_release(s->up, false);
		s->up = NULL;
		s->state = S_CLOSING;
		return true;
	}
	if (xform_busy(&s->tx))
		s->a_out += xform_flush(&s->tx, &s->cout);
	if (s->uout.len || xform_busy(&s->rx) || xform_busy(&s->tx))
		return false;
	s->a_redactions += s->tx.active ? (unsigned)swap_stream_replacements(s->tx.st) : 0;
	if (s->rx.active)
		s->a_secrets |= swap_stream_hits(s->rx.st);
	if (s->a_redactions)
		atomic_fetch_add(&s->w->p->redactions, s->a_redactions);
	sess_audit(s, s->a_status, "allow", s->a_rule, NULL);
	reusable = s->resp.head.keep_alive && !s->resp.head.needs_eof && !s->uin.len;
	if (!reusable || s->close_after) {
		up_release(s->up, reusable);
		s->up = NULL;
	}
	/* else: parked on this session for its next request (no pool round trip);
	 * it goes back to the pool if the next request wants another upstream. */
	s->req_active = false;
	s->req_done = false;
	s->resp_done = false;
	s->resp_head_sent = false;
	xform_end(&s->rx);
	xform_end(&s->tx);
	rw_req_clear(&s->rw);
	swap_stream_free(s->detect);
	s->detect = NULL;
	s->hold = false;
	s->req.body_cb = NULL;
	s->resp.body_cb = NULL;
	if (s->close_after || atomic_load(&s->w->p->draining)) {
		s->state = S_CLOSING;
		return true;
	}
	http1_next(&s->req);
	return true;
}

/* ---- states ---- */

/*
 * A policy passthrough host: read the ClientHello without consuming it
 * (MSG_PEEK), and when its SNI is marked passthrough, dial the upstream and
 * splice bytes both ways undecrypted. Returns 1 spliced, 0 terminate TLS as
 * usual, -1 wait for more of the ClientHello.
 */
static int sess_try_passthrough(struct sess *s)
{
	unsigned char buf[CH_MAX_BYTES];
	const struct pol_rule *rule = NULL;
	const char *reason = NULL;
	struct ch_info ci;
	ssize_t n = recv(s->c.fd, buf, sizeof(buf), MSG_PEEK);
	ssize_t r;
	uint16_t port;

	if (n <= 0)
		return 0;
	r = ch_parse(buf, (size_t)n, &ci, &reason);
	if (r == -EAGAIN) {
		s->peek_wait = true; /* edge-triggered until more bytes arrive */
		return -1;
	}
	s->peek_wait = false;
	if (r < 0 || !ci.has_sni)
		return 0; /* let OpenSSL answer a bad hello with an alert */
	port = s->via_connect ? s->connect_port : s->orig_port;
	if (pol_match_conn(s->pol, ci.sni, port, &rule) != POL_PASSTHROUGH)
		return 0;
	s->passthrough = true;
	s->req_active = true;
	s->audited = false;
	clock_gettime(CLOCK_REALTIME, &s->req_rt);
	snprintf(s->method, sizeof(s->method), "%s", "");
	snprintf(s->up_name, sizeof(s->up_name), "%s", ci.sni);
	s->up_port = port;
	s->up_tls = true;
	s->a_rule = rule ? pol_rule_name(rule) : "";
	s->up = up_acquire(s->w->pool, "", s->up_name, s->up_port, false, rw_gen_deny(s->gen), NULL,
			   upstream_notify, s);
	if (!s->up) {
		s->dead = true;
		return 1;
	}
	s->state = S_TUNNEL;
	log_debug("sandbox=%s passthrough %s:%u (rule %s)", s->sb_id, s->up_name, port, s->a_rule);
	return 1;
}

static bool st_sniff(struct sess *s)
{
	unsigned char b;
	ssize_t n;

	if (s->cin.len) {
		/* bytes left after CONNECT: only plain HTTP can follow unread */
		if ((unsigned char)buf_head(&s->cin)[0] == 0x16) {
			s->dead = true;
			return false;
		}
		s->state = S_HTTP;
		return true;
	}
	n = recv(s->c.fd, &b, 1, MSG_PEEK);
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
		s->dead = true;
		return false;
	}
	if (n < 0)
		return false;
	sess_touch(s);
	if (b == 0x16 && pol_npassthrough(s->pol) > 0) {
		int pt = sess_try_passthrough(s);

		if (pt < 0)
			return false;   /* waiting for the rest of the ClientHello */
		if (pt > 0)
			return true;    /* spliced */
	}
	if (b == 0x16) {
		const char *fallback = s->via_connect ? s->connect_host
				       : s->orig_is_listener ? NULL : s->orig_cert_name;
		SSL *ssl = tls_server_new(s->w->p->tls, fallback);

		if (!ssl) {
			s->dead = true;
			return false;
		}
		conn_start_tls(&s->c, ssl);
		s->tls = true;
		s->state = S_HANDSHAKE;
	} else {
		s->state = S_HTTP;
	}
	return true;
}

static bool st_handshake(struct sess *s)
{
	int r = conn_handshake(&s->c);
	const char *name;

	if (r == 0)
		return false;
	if (r < 0) {
		char why[200];

		log_debug("sandbox=%s client TLS handshake failed: %s", s->sb_id,
			  conn_error(&s->c, why, sizeof(why)));
		s->dead = true;
		return false;
	}
	atomic_fetch_add(&s->w->p->tls_handshakes, 1);
	sess_touch(s);
	name = tls_server_name(s->c.ssl);
	snprintf(s->sni, sizeof(s->sni), "%s", name ? name : "");
	s->have_sni = SSL_get_servername(s->c.ssl, TLSEXT_NAMETYPE_host_name) != NULL;
	if (s->via_connect && s->have_sni && strcmp(s->sni, s->connect_host) != 0)
		s->sni_mismatch = true;
	s->state = S_HTTP;
	return true;
}

static bool st_http(struct sess *s)
{
	bool p = false;

	p |= client_fill(s);
	if (s->dead)
		return false;
	/* Parse everything available before writing, so a head and the body
	 * bytes behind it leave in one write (one TLS record). */
	for (int i = 0; i < 8 && request_parse(s); i++) {
		p = true;
		if (s->dead || s->state != S_HTTP)
			return true;
	}
	if (s->dead || s->state != S_HTTP)
		return true;
	p |= upstream_io(s);
	if (s->dead || s->state != S_HTTP)
		return true;
	for (int i = 0; i < 8 && response_parse(s); i++) {
		p = true;
		if (s->dead || s->state != S_HTTP)
			return true;
	}
	if (s->dead)
		return false;
	if (xform_busy(&s->tx))
		s->a_out += xform_flush(&s->tx, &s->cout);
	p |= client_flush(s);
	if (s->dead)
		return false;
	p |= exchange_finish(s);
	return p;
}

static bool st_connect_reply(struct sess *s)
{
	bool p = client_flush(s);

	if (s->dead)
		return false;
	if (!s->cout.len) {
		s->state = S_SNIFF;
		return true;
	}
	return p;
}

static bool st_tunnel(struct sess *s)
{
	struct upconn *u = s->up;
	bool p = false;
	ssize_t n;

	if (u && s->passthrough && u->state != UP_READY) {
		enum up_state before = u->state;

		if (u->state == UP_CONNECTING)
			up_progress(u);
		if (u->state == UP_FAILED) {
			sess_audit(s, 0, u->fail_status == 403 ? "deny" : "error", s->a_rule,
				   u->fail_code);
			s->dead = true;
			return false;
		}
		if (u->state != UP_READY)
			return u->state != before;
	}
	if (!u || u->state != UP_READY) {
		s->dead = true;
		return false;
	}
	p |= client_fill(s);
	if (s->cin.len) {
		size_t m = buf_free_total(&s->uout) < s->cin.len ? buf_free_total(&s->uout) : s->cin.len;

		buf_append(&s->uout, buf_head(&s->cin), m);
		buf_consume(&s->cin, m);
		s->a_in += m;
	}
	if (conn_can_read(&u->c) && buf_space(&s->uin)) {
		n = conn_read(&u->c, buf_tail(&s->uin), buf_space(&s->uin));
		if (n > 0) {
			s->uin.len += (size_t)n;
			p = true;
		} else if (n < 0) {
			s->dead = true;
			return false;
		}
	}
	if (s->uin.len) {
		size_t m = buf_free_total(&s->cout) < s->uin.len ? buf_free_total(&s->cout) : s->uin.len;

		buf_append(&s->cout, buf_head(&s->uin), m);
		buf_consume(&s->uin, m);
		s->a_out += m;
	}
	while (s->uout.len && u->c.wr_ready) {
		n = conn_write(&u->c, buf_head(&s->uout), s->uout.len);
		if (n < 0) {
			s->dead = true;
			return false;
		}
		if (!n)
			break;
		buf_consume(&s->uout, (size_t)n);
		p = true;
	}
	p |= client_flush(s);
	if (s->dead)
		return false;
	if ((s->c.eof && !s->cin.len && !s->uout.len) || (u->c.eof && !s->uin.len && !s->cout.len)) {
		/* one side finished: a WebSocket close ends the exchange */
		s->state = S_CLOSING;
		return true;
	}
	if (p)
		sess_touch(s);
	return p;
}

static bool st_closing(struct sess *s)
{
	bool p = client_flush(s);

	if (s->dead)
		return false;
	if (!s->cout.len) {
		conn_shutdown_write(&s->c);
		s->dead = true;
	}
	return p;
}

/* ---- session lifecycle ---- */

static void sbx_unref(struct sbx *x)
{
	if (x && atomic_fetch_sub(&x->refs, 1) == 1) {
		rw_gen_unref(x->gen);
		free(x);
	}
}

static void sess_free_mem(void *ptr)
{
	struct sess *s = ptr;

	free(s->apath);
	xform_end(&s->rx);
	xform_end(&s->tx);
	rw_req_clear(&s->rw);
	swap_stream_free(s->detect);
	if (s->retry_head)
		explicit_bzero(s->retry_head, s->retry_head_cap);
	/* Real secret values can only have passed through these when the
	 * sandbox's policy has secrets: then every buffer is wiped. */
	buf_free_wipe(&s->cin, s->wipe);
	buf_free_wipe(&s->cout, s->wipe);
	buf_free_wipe(&s->uout, s->wipe);
	buf_free_wipe(&s->uin, s->wipe);
	if (s->wipe && s->resp.head.store)
		explicit_bzero(s->resp.head.store, s->resp.head.cap);
	http1_free(&s->req);
	http1_free(&s->resp);
	free(s->retry_head);
	free(s);
}

static void sess_destroy(struct sess *s)
{
	struct worker *w = s->w;

	if (s->passthrough && !s->audited)
		sess_audit(s, 0, "allow", s->a_rule, "spliced");
	else if (s->req_active && !s->audited)
		sess_audit(s, s->resp_head_sent ? s->a_status : 0, "error", s->a_rule,
			   s->c.eof ? "client_closed" : "connection_aborted");
	if (s->sbx)
		atomic_fetch_sub(&s->sbx->conns, 1);
	sbx_unref(s->sbx);
	rw_gen_unref(s->gen);
	s->sbx = NULL;
	s->gen = NULL;
	loop_io_del(w->loop, &s->io);
	loop_defer_cancel(w->loop, &s->kick);
	if (s->up) {
		/* parked between requests: still good for someone else */
		up_release(s->up, !s->req_active && s->state != S_TUNNEL &&
					  s->up->state == UP_READY && !s->up->c.eof);
		s->up = NULL;
	}
	conn_close(&s->c);
	if (s->prev)
		s->prev->next = s->next;
	else
		w->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	w->nsessions--;
	atomic_fetch_sub(&w->p->open_conns, 1);
	if (loop_free_later(w->loop, s, sess_free_mem) < 0)
		log_error("out of memory: leaking a session");
}

static void sess_set_events(struct sess *s)
{
	uint32_t ev = 0, uev = 0;
	struct upconn *u = s->up;

	switch (s->state) {
	case S_SNIFF:
		ev = EPOLLIN | (s->peek_wait ? EPOLLET : 0);
		break;
	case S_HANDSHAKE:
		ev = s->c.want ? s->c.want : EPOLLIN;
		break;
	default:
		if (s->state != S_CLOSING && !s->c.eof && buf_free_total(&s->cin))
			ev |= EPOLLIN;
		if (s->cout.len || s->c.read_wants_write)
			ev |= EPOLLOUT;
		break;
	}
	loop_io_set(s->w->loop, &s->io, ev);
	if (u && u->state == UP_READY) {
		if (!u->c.eof && !s->resp_done && buf_free_total(&s->uin))
			uev |= EPOLLIN;
		if (s->state == S_TUNNEL && !u->c.eof && buf_free_total(&s->uin))
			uev |= EPOLLIN;
		if (s->uout.len || u->c.read_wants_write)
			uev |= EPOLLOUT;
		if (!s->req_active && s->state == S_HTTP)
			uev = EPOLLIN; /* parked: any event means it closed */
		uev |= EPOLLRDHUP; /* constant bit: no epoll_ctl toggling per request */
		up_set_events(u, uev);
		if (conn_pending(&u->c) && buf_free_total(&s->uin))
			loop_defer(s->w->loop, &s->kick);
	} else if (u) {
		up_set_events(u, 0);
	}
	if (s->state >= S_HTTP && conn_pending(&s->c) && buf_free_total(&s->cin))
		loop_defer(s->w->loop, &s->kick);
}

static void sess_pump(struct sess *s)
{
	for (int i = 0; i < PUMP_ROUNDS && !s->dead; i++) {
		bool progress = false;

		switch (s->state) {
		case S_SNIFF:
			progress = st_sniff(s);
			break;
		case S_HANDSHAKE:
			progress = st_handshake(s);
			break;
		case S_HTTP:
			progress = st_http(s);
			break;
		case S_CONNECT_REPLY:
			progress = st_connect_reply(s);
			break;
		case S_TUNNEL:
			progress = st_tunnel(s);
			break;
		case S_CLOSING:
			progress = st_closing(s);
			break;
		}
		if (!progress)
			break;
		if (i == PUMP_ROUNDS - 1)
			loop_defer(s->w->loop, &s->kick); /* let the others run first */
	}
	if (s->dead) {
		sess_destroy(s);
		return;
	}
	sess_set_events(s);
}

static void sess_io_cb(struct loop_io *io, uint32_t events)
{
	struct sess *s = container_of(io, struct sess, io);

	conn_note_events(&s->c, events);
	sess_pump(s);
}

static void sess_kick_cb(struct loop_defer *d)
{
	sess_pump(container_of(d, struct sess, kick));
}

/* The registered sandbox with this id, or NULL (slot in *ret_slot if not
 * NULL). The caller holds p->sb_lock. */
static struct sbx *sbx_by_id_locked(struct proxy *p, const char *id, unsigned *ret_slot)
{
	for (unsigned i = 0; i < p->sb_high; i++) {
		if (p->sandboxes[i] && strcmp(p->sandboxes[i]->id, id) == 0) {
			if (ret_slot)
				*ret_slot = i;
			return p->sandboxes[i];
		}
	}
	return NULL;
}

/* The sandbox of a cgroup, with its current generation, both referenced. */
static struct sbx *sandbox_lookup(struct proxy *p, uint64_t cgid, struct rw_gen **ret_gen)
{
	struct sbx *x = NULL;

	pthread_rwlock_rdlock(&p->sb_lock);
	for (unsigned i = 0; i < p->sb_high; i++) {
		if (p->sandboxes[i] && p->sandboxes[i]->cgroup_id == cgid) {
			x = p->sandboxes[i];
			atomic_fetch_add(&x->refs, 1);
			*ret_gen = rw_gen_ref(x->gen);
			break;
		}
	}
	pthread_rwlock_unlock(&p->sb_lock);
	return x;
}

static void sess_new(struct worker *w, int fd)
{
	struct proxy *p = w->p;
	struct sluice_orig orig;
	struct sess *s;
	int r, one = 1;

	r = bpfl_conn_take(p->bpfl, fd, &orig);
	if (r < 0) {
		/* Not sent here by sluice's BPF programs (or the entry is gone):
		 * nothing tells us whose it is or where it was going. */
		log_info("closing a connection with no sluice redirect record: %s", strerror(-r));
		atomic_fetch_add(&p->refused_conns, 1);
		close(fd);
		return;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		close(fd);
		return;
	}
	s->sbx = sandbox_lookup(p, orig.cgroup_id, &s->gen);
	if (!s->sbx) {
		char cg[32];

		log_info("closing a connection from cgroup %llu: not an attached sandbox",
			 (unsigned long long)orig.cgroup_id);
		snprintf(cg, sizeof(cg), "%llu", (unsigned long long)orig.cgroup_id);
		audit_connection(w, "", cg, "", ntohs(orig.port), "not_an_attached_sandbox");
		atomic_fetch_add(&p->refused_conns, 1);
		free(s);
		close(fd);
		return;
	}
	memcpy(s->sb_id, s->sbx->id, sizeof(s->sb_id));
	s->pol = rw_gen_pol(s->gen);
	s->wipe = rw_gen_nsecrets(s->gen) > 0;
	{
		const struct pol_limits *lim = pol_limits(s->pol);
		const char *why = NULL;

		if (atomic_load(&p->open_conns) >= p->cfg.max_conns)
			why = "daemon_connection_limit";
		else if (atomic_fetch_add(&s->sbx->conns, 1) >= lim->max_connections) {
			atomic_fetch_sub(&s->sbx->conns, 1);
			why = "sandbox_connection_limit";
		}
		if (why) {
			log_warn("sandbox=%s connection refused: %s", s->sb_id, why);
			audit_connection(w, s->sb_id, s->sbx->cgroup, "", ntohs(orig.port), why);
			atomic_fetch_add(&p->refused_conns, 1);
			sbx_unref(s->sbx);
			rw_gen_unref(s->gen);
			free(s);
			close(fd);
			return;
		}
		atomic_fetch_add(&s->sbx->conns_total, 1);
		s->head_reserve = lim->max_header_bytes + 1024;
		s->idle_ms = lim->idle_timeout_s * 1000u;
		s->request_ms = lim->request_timeout_s * 1000u;
	}
	s->w = w;
	s->cgroup_id = orig.cgroup_id;
	s->orig_port = ntohs(orig.port);
	if (orig.family == SLUICE_AF_INET)
		inet_ntop(AF_INET, orig.addr, s->orig_ip, sizeof(s->orig_ip));
	else
		inet_ntop(AF_INET6, orig.addr, s->orig_ip, sizeof(s->orig_ip));
	/* a client that dialled ::ffff:a.b.c.d checks the leaf against that form */
	snprintf(s->orig_cert_name, sizeof(s->orig_cert_name), "%s%s",
		 (orig.flags & SLUICE_ORIG_F_V4MAPPED) ? "::ffff:" : "", s->orig_ip);
	{
		struct sockaddr_storage local;
		socklen_t ll = sizeof(local);
		char lip[INET6_ADDRSTRLEN] = "";
		uint16_t lport = 0;

		if (getsockname(fd, (struct sockaddr *)&local, &ll) == 0) {
			if (local.ss_family == AF_INET) {
				inet_ntop(AF_INET, &((struct sockaddr_in *)&local)->sin_addr, lip,
					  sizeof(lip));
				lport = ntohs(((struct sockaddr_in *)&local)->sin_port);
			} else {
				inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&local)->sin6_addr,
					  lip, sizeof(lip));
				lport = ntohs(((struct sockaddr_in6 *)&local)->sin6_port);
			}
		}
		s->orig_is_listener = lport == s->orig_port && strcmp(lip, s->orig_ip) == 0;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	conn_init(&s->c, fd, NULL);
	if (buf_init(&s->cin, CLIENT_IN_BUF) < 0 ||
	    buf_init(&s->cout, pol_limits(s->pol)->body_buffer_bytes + s->head_reserve) < 0 ||
	    buf_init(&s->uout, pol_limits(s->pol)->body_buffer_bytes + s->head_reserve) < 0 ||
	    buf_init(&s->uin, UP_IN_BUF) < 0 ||
	    http1_init(&s->req, false, s->head_reserve - 1024) < 0 ||
	    http1_init(&s->resp, true, s->head_reserve - 1024) < 0 ||
	    !(s->apath = calloc(1, AUDIT_PATH_MAX))) {
		atomic_fetch_sub(&s->sbx->conns, 1);
		sbx_unref(s->sbx);
		rw_gen_unref(s->gen);
		conn_close(&s->c);
		sess_free_mem(s);
		return;
	}
	s->kick.cb = sess_kick_cb;
	s->state = S_SNIFF;
	if (loop_io_add(w->loop, &s->io, fd, EPOLLIN, sess_io_cb) < 0) {
		conn_close(&s->c);
		sess_free_mem(s);
		return;
	}
	s->next = w->sessions;
	if (w->sessions)
		w->sessions->prev = s;
	w->sessions = s;
	w->nsessions++;
	atomic_fetch_add(&p->open_conns, 1);
	atomic_fetch_add(&p->total_conns, 1);
	sess_touch(s);
	log_debug("sandbox=%s accepted, original destination %s:%u", s->sb_id, s->orig_ip,
		  s->orig_port);
}

static void listen_cb(struct loop_io *io, uint32_t events)
{
	struct wlisten *wl = container_of(io, struct wlisten, io);

	(void)events;
	for (int i = 0; i < 64; i++) {
		int fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE)
				log_warn("accept: %s", strerror(errno));
			return;
		}
		sess_new(wl->w, fd);
	}
}

/* Per-second timeouts: no session waits forever on a silent peer. */
static void worker_tick(void *arg)
{
	struct worker *w = arg;
	struct proxy *p = w->p;
	uint64_t now = loop_now_ms(w->loop);
	struct sess *s, *next;

	up_pool_tick(w->pool);
	if (w->udp)
		udprelay_tick(w->udp);
	for (s = w->sessions; s; s = next) {
		uint64_t quiet = now - s->last_ms;

		next = s->next;
		if (s->state == S_SNIFF || s->state == S_HANDSHAKE) {
			if (quiet > p->cfg.handshake_timeout_ms)
				s->dead = true;
		} else if (s->state == S_HTTP && s->req_active) {
			if (s->up && s->up->state != UP_READY &&
			    now - s->req_start_ms > p->cfg.connect_timeout_ms) {
				sess_fail(s, 504, "upstream_connect_timeout", "connection_timeout",
					  "upstream did not accept the connection in time");
			} else if (!s->resp_head_sent && now - s->req_start_ms > s->request_ms) {
				sess_fail(s, 504, "upstream_timeout", "http_response_timeout",
					  "no response head within the request timeout");
			} else if (quiet > s->idle_ms) {
				sess_fail(s, 504, "upstream_timeout", "http_response_timeout",
					  "no progress on the request");
			}
		} else if (quiet > s->idle_ms ||
			   (atomic_load(&p->draining) && s->state == S_HTTP && !s->req_active &&
			    !s->cin.len)) {
			s->dead = true;
		}
		if (s->dead)
			sess_destroy(s);
		else
			sess_pump(s);
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	char name[16];

	snprintf(name, sizeof(name), "sluice-w%u", w->idx);
	pthread_setname_np(pthread_self(), name);
	loop_run(w->loop);
	/* Shutdown: open UDP flows get their closing audit line (the audit log
	 * is closed after the workers, and drains what they queued). */
	udprelay_free(w->udp);
	w->udp = NULL;
	return NULL;
}

int proxy_new(const struct proxy_cfg *cfg, struct tls *tls, struct bpfl *bpfl,
	      struct proxy **ret_proxy)
{
	struct proxy *p = calloc(1, sizeof(*p));

	if (!p)
		return -ENOMEM;
	p->cfg = *cfg;
	p->tls = tls;
	p->bpfl = bpfl;
	pthread_rwlock_init(&p->sb_lock, NULL);
	pthread_mutex_init(&p->l_lock, NULL);
	*ret_proxy = p;
	return 0;
}

int proxy_start(struct proxy *p, unsigned nworkers)
{
	int r;

	p->workers = calloc(nworkers, sizeof(*p->workers));
	if (!p->workers)
		return -ENOMEM;
	for (unsigned i = 0; i < nworkers; i++) {
		struct worker *w = &p->workers[i];

		w->p = p;
		w->idx = i;
		r = loop_new(&w->loop);
		if (r < 0)
			return r;
		w->pool = up_pool_new(w->loop, p->tls, p->cfg.pool_idle_max,
				      p->cfg.pool_idle_timeout_ms);
		if (!w->pool)
			return -ENOMEM;
		if (p->cfg.dns_enabled) {
			struct dns_hooks hooks = { .allowed = dns_allowed_hook,
						   .resolver = dns_resolver_hook,
						   .identify = dns_identify_hook,
						   .audit = dns_audit_hook, .opaque = w };

			r = dns_new(w->loop, &p->cfg.dns, &hooks, &w->dns);
			if (r < 0)
				return r;
		}
		if (p->cfg.udp_enabled && i == 0) {
			struct udprelay_hooks uh = udp_hooks;

			uh.opaque = w;
			r = udprelay_new(w->loop, &p->cfg.udp, &uh, &w->udp);
			if (r < 0)
				return r;
		}
		loop_set_tick(w->loop, worker_tick, w);
		p->nworkers = i + 1;
		r = pthread_create(&w->thread, NULL, worker_main, w);
		if (r)
			return -r;
	}
	return 0;
}

void proxy_free(struct proxy *p)
{
	if (!p)
		return;
	for (unsigned i = 0; i < p->nworkers; i++)
		loop_stop(p->workers[i].loop);
	for (unsigned i = 0; i < p->nworkers; i++)
		pthread_join(p->workers[i].thread, NULL);
	/* Sessions and pools die with the process; the daemon exits next. */
	free(p->workers);
	free(p);
}

int proxy_sandbox_add(struct proxy *p, const char *id, uint64_t cgroup_id, const char *cgroup,
		      struct rw_gen *gen)
{
	int slot = -1;
	struct sbx *x;

	if (strlen(id) > SB_ID_LEN)
		return -EINVAL;
	x = calloc(1, sizeof(*x));
	if (!x)
		return -ENOMEM;
	atomic_init(&x->refs, 1);
	snprintf(x->id, sizeof(x->id), "%s", id);
	snprintf(x->cgroup, sizeof(x->cgroup), "%s", cgroup);
	x->cgroup_id = cgroup_id;
	x->gen = rw_gen_ref(gen);
	pthread_rwlock_wrlock(&p->sb_lock);
	for (unsigned i = 0; i < SANDBOX_MAX; i++) {
		if (p->sandboxes[i] && strcmp(p->sandboxes[i]->id, id) == 0) {
			pthread_rwlock_unlock(&p->sb_lock);
			sbx_unref(x);
			return -EEXIST;
		}
		if (!p->sandboxes[i] && slot < 0)
			slot = (int)i;
	}
	if (slot < 0) {
		pthread_rwlock_unlock(&p->sb_lock);
		sbx_unref(x);
		return -ENOSPC;
	}
	p->sandboxes[slot] = x;
	if ((unsigned)slot >= p->sb_high)
		p->sb_high = (unsigned)slot + 1;
	pthread_rwlock_unlock(&p->sb_lock);
	return 0;
}

int proxy_sandbox_set_gen(struct proxy *p, const char *id, struct rw_gen *gen)
{
	struct rw_gen *old = NULL;
	struct sbx *x;
	int r = -ENOENT;

	pthread_rwlock_wrlock(&p->sb_lock);
	x = sbx_by_id_locked(p, id, NULL);
	if (x) {
		old = x->gen;
		x->gen = rw_gen_ref(gen);
		r = 0;
	}
	pthread_rwlock_unlock(&p->sb_lock);
	rw_gen_unref(old); /* connections that pinned it keep it alive */
	return r;
}

void proxy_sandbox_remove(struct proxy *p, const char *id)
{
	struct sbx *dead;
	unsigned slot;

	pthread_rwlock_wrlock(&p->sb_lock);
	dead = sbx_by_id_locked(p, id, &slot); /* ids are unique: proxy_sandbox_add */
	if (dead)
		p->sandboxes[slot] = NULL;
	pthread_rwlock_unlock(&p->sb_lock);
	sbx_unref(dead);
}

void proxy_set_audit(struct proxy *p, struct audit *a) { p->audit = a; }

/* DNS allowlist: the sandbox's current policy decides (thread-safe: the
 * registry lock; the policy itself is immutable). */
static bool dns_allowed_hook(void *opaque, const char *sandbox, const char *qname)
{
	struct worker *w = opaque;
	struct proxy *p = w->p;
	bool ok = false, found = false;
	struct sbx *x;

	pthread_rwlock_rdlock(&p->sb_lock);
	x = sbx_by_id_locked(p, sandbox, NULL);
	if (x) {
		struct pol *pol = rw_gen_pol(x->gen);

		found = true;
		ok = pol_dns_mode(pol) != POL_DNS_ALLOWLIST || pol_host_in_policy(pol, qname);
	}
	pthread_rwlock_unlock(&p->sb_lock);
	/* an unknown sandbox id (detached meanwhile): refuse */
	return found && ok;
}

/* The sandbox's policy names its own resolver (dns.resolver): use it. */
static bool dns_resolver_hook(void *opaque, const char *sandbox, struct sockaddr_storage *ret,
			      socklen_t *ret_len)
{
	struct worker *w = opaque;
	struct proxy *p = w->p;
	char spec[80] = ""; /* "[v6]:port" at most 54 bytes */
	struct sbx *x;

	pthread_rwlock_rdlock(&p->sb_lock);
	x = sbx_by_id_locked(p, sandbox, NULL);
	if (x && pol_dns_resolver(rw_gen_pol(x->gen)))
		snprintf(spec, sizeof(spec), "%s", pol_dns_resolver(rw_gen_pol(x->gen)));
	pthread_rwlock_unlock(&p->sb_lock);
	/* the policy compiler checked the address: a parse failure cannot happen */
	return spec[0] && netaddr_parse(spec, 53, ret, ret_len) == 0;
}

/*
 * The host netns's DNS listener is shared by every host-netns sandbox: the
 * kernel's record of the sending socket (the egress program's entry for a
 * datagram, the sockops entry for a TCP connection) names its cgroup.
 */
static bool dns_identify_hook(void *opaque, int fd, const struct sockaddr *peer,
			      socklen_t peerlen, char *ret, size_t len)
{
	struct worker *w = opaque;
	struct sluice_orig o;
	struct rw_gen *gen = NULL;
	struct sbx *x;
	uint64_t cookie;
	socklen_t cl = sizeof(cookie);
	int r;

	(void)peerlen;
	if (peer) {
		if (getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &cl) < 0)
			return false;
		r = bpfl_udp_flow_lookup(w->p->bpfl, cookie, peer, &o);
	} else {
		r = bpfl_conn_take(w->p->bpfl, fd, &o);
	}
	if (r < 0)
		return false;
	x = sandbox_lookup(w->p, o.cgroup_id, &gen);
	if (!x)
		return false;
	snprintf(ret, len, "%s", x->id);
	sbx_unref(x);
	rw_gen_unref(gen);
	return true;
}

static void dns_audit_hook(void *opaque, const struct dns_query_info *q)
{
	struct worker *w = opaque;
	struct audit_rec r = { 0 };
	char qt[16];

	if (!w->p->audit)
		return;
	switch (q->qtype) {
	case 1: snprintf(qt, sizeof(qt), "A"); break;
	case 2: snprintf(qt, sizeof(qt), "NS"); break;
	case 5: snprintf(qt, sizeof(qt), "CNAME"); break;
	case 6: snprintf(qt, sizeof(qt), "SOA"); break;
	case 12: snprintf(qt, sizeof(qt), "PTR"); break;
	case 15: snprintf(qt, sizeof(qt), "MX"); break;
	case 16: snprintf(qt, sizeof(qt), "TXT"); break;
	case 28: snprintf(qt, sizeof(qt), "AAAA"); break;
	case 33: snprintf(qt, sizeof(qt), "SRV"); break;
	case 64: snprintf(qt, sizeof(qt), "SVCB"); break;
	case 65: snprintf(qt, sizeof(qt), "HTTPS"); break;
	default: snprintf(qt, sizeof(qt), "TYPE%u", q->qtype); break;
	}
	char cg[512] = "";
	struct sbx *x;

	pthread_rwlock_rdlock(&w->p->sb_lock);
	x = sbx_by_id_locked(w->p, q->sandbox, NULL);
	if (x)
		snprintf(cg, sizeof(cg), "%s", x->cgroup);
	pthread_rwlock_unlock(&w->p->sb_lock);
	r.kind = "dns";
	clock_gettime(CLOCK_REALTIME, &r.time);
	r.sandbox = q->sandbox;
	r.cgroup = cg;
	r.principal = "";
	r.method = qt;
	r.scheme = q->transport;
	r.host = q->qname;
	r.port = 53;
	r.decision = strcmp(q->decision, "forward") == 0 ? "allow"
		     : strcmp(q->decision, "nxdomain") == 0 ? "deny" : "error";
	r.reason = q->reason;
	r.rule = q->decision;
	r.tls_mode = "none";
	audit_emit_rec(w, &r);
}

/* ---- UDP relay hooks (first worker's thread) ---- */

static int udp_lookup_hook(void *opaque, uint64_t netns_cookie, const struct sockaddr *src,
			   struct sluice_orig *ret)
{
	struct worker *w = opaque;

	return bpfl_udp_flow_lookup(w->p->bpfl, netns_cookie, src, ret);
}

static void udp_forget_hook(void *opaque, uint64_t netns_cookie, const struct sockaddr *src)
{
	struct worker *w = opaque;

	bpfl_udp_flow_forget(w->p->bpfl, netns_cookie, src);
}

/*
 * The sandbox's current generation decides, as for a new connection: an
 * active principal, the deny set (the same check as an upstream dial) and a
 * network.udp rule for the address and port.
 */
static int udp_check_hook(void *opaque, const struct sluice_orig *o,
			  const struct sockaddr_storage *dsa, struct udprelay_verdict *v)
{
	struct worker *w = opaque;
	const struct pol_udp_rule *rule;
	struct rw_gen *gen = NULL;
	struct sbx *x;
	int r = -EACCES;

	x = sandbox_lookup(w->p, o->cgroup_id, &gen);
	if (!x) {
		v->reason = "not_an_attached_sandbox";
		return -EACCES;
	}
	snprintf(v->sandbox, sizeof(v->sandbox), "%s", x->id);
	rule = pol_udp_match(rw_gen_pol(gen),
			     o->family == SLUICE_AF_INET ? AF_INET : AF_INET6, o->addr,
			     ntohs(o->port));
	if (rw_gen_state(gen) != RW_ACTIVE)
		v->reason = rw_gen_state(gen) == RW_PENDING ? "not_synced" : "principal_not_active";
	else if (!up_dial_allowed(dsa, rw_gen_deny(gen)))
		v->reason = "udp_address_denied";
	else if (!rule)
		v->reason = "udp_not_allowed";
	else
		r = 0;
	if (rule)
		snprintf(v->rule, sizeof(v->rule), "%s", rule->name);
	sbx_unref(x);
	rw_gen_unref(gen);
	return r;
}

static void udp_audit_hook(void *opaque, const struct udprelay_event *e)
{
	struct worker *w = opaque;
	struct audit_rec r = { 0 };
	char cg[512] = "", host[INET6_ADDRSTRLEN] = "", up[NETADDR_STR_MAX] = "";
	uint16_t port = 0;
	struct sbx *x;

	if (!w->p->audit)
		return;
	pthread_rwlock_rdlock(&w->p->sb_lock);
	x = sbx_by_id_locked(w->p, e->sandbox, NULL);
	if (x)
		snprintf(cg, sizeof(cg), "%s", x->cgroup);
	else if (e->cgroup_id)
		snprintf(cg, sizeof(cg), "%llu", (unsigned long long)e->cgroup_id);
	pthread_rwlock_unlock(&w->p->sb_lock);
	if (e->dst && e->dst->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)e->dst;

		inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
		port = ntohs(s4->sin_port);
	} else if (e->dst) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)e->dst;

		inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
		port = ntohs(s6->sin6_port);
	}
	if (e->dst)
		netaddr_str((const struct sockaddr_storage *)e->dst, up, sizeof(up));
	r.kind = "udp";
	r.time = e->start;
	r.sandbox = e->sandbox;
	r.cgroup = cg;
	r.principal = "";
	r.method = "";
	r.scheme = "udp";
	r.host = host;
	r.port = port;
	r.bytes_in = e->bytes_in;
	r.bytes_out = e->bytes_out;
	r.duration_us = e->duration_us;
	r.decision = e->decision;
	r.rule = e->rule;
	r.reason = e->reason;
	r.tls_mode = "none";
	r.upstream_addr = strcmp(e->decision, "allow") == 0 ? up : "";
	audit_emit_rec(w, &r);
}

static const struct udprelay_hooks udp_hooks = {
	.lookup = udp_lookup_hook,
	.check = udp_check_hook,
	.forget = udp_forget_hook,
	.audit = udp_audit_hook,
};

struct listen_op {
	struct worker *w;
	struct listener *l;
	const char *owner;
	sem_t *done;
};

static void listen_add_on_worker(void *arg)
{
	struct listen_op *op = arg;
	struct wlisten *wl = calloc(1, sizeof(*wl));

	if (wl && op->l->kind == PROXY_L_UDP_RELAY) {
		int r = op->w->udp ? udprelay_add_listener(op->w->udp, op->l->fd, op->l->owner) : 0;

		if (r < 0)
			log_warn("sandbox=%s: UDP relay listener not served: %s", op->l->owner,
				 strerror(-r));
		free(wl);
	} else if (wl && op->l->kind != PROXY_L_HTTP) {
		int r = -EINVAL;

		if (op->w->dns && op->l->kind == PROXY_L_DNS_UDP)
			r = dns_add_udp_listener(op->w->dns, op->l->fd, op->l->owner);
		else if (op->w->dns && op->l->kind == PROXY_L_DNS_TCP)
			r = dns_add_tcp_listener(op->w->dns, op->l->fd, op->l->owner);
		if (r < 0)
			log_warn("sandbox=%s: DNS listener not served: %s", op->l->owner,
				 strerror(-r));
		free(wl);
	} else if (wl) {
		wl->w = op->w;
		wl->l = op->l;
		/* EPOLLEXCLUSIVE: one worker wakes per new connection. */
		if (loop_io_add(op->w->loop, &wl->io, op->l->fd, EPOLLIN | EPOLLEXCLUSIVE,
				listen_cb) < 0) {
			free(wl);
		} else {
			wl->next = op->w->listens;
			op->w->listens = wl;
		}
	}
	sem_post(op->done);
	free(op);
}

static void listen_remove_on_worker(void *arg)
{
	struct listen_op *op = arg;
	struct wlisten **pp = &op->w->listens;

	if (op->w->dns)
		dns_remove_listeners(op->w->dns, op->owner);
	if (op->w->udp)
		udprelay_remove_listeners(op->w->udp, op->owner);
	while (*pp) {
		struct wlisten *wl = *pp;

		if (strcmp(wl->l->owner, op->owner) == 0) {
			*pp = wl->next;
			loop_io_del(op->w->loop, &wl->io);
			loop_free_later(op->w->loop, wl, free);
		} else {
			pp = &wl->next;
		}
	}
	sem_post(op->done);
	free(op);
}

static void run_on_all_workers(struct proxy *p, void (*fn)(void *), struct listener *l,
			       const char *owner)
{
	sem_t done;
	unsigned posted = 0;

	sem_init(&done, 0, 0);
	for (unsigned i = 0; i < p->nworkers; i++) {
		struct listen_op *op = calloc(1, sizeof(*op));

		if (!op)
			continue;
		op->w = &p->workers[i];
		op->l = l;
		op->owner = owner;
		op->done = &done;
		if (loop_post(op->w->loop, fn, op) == 0)
			posted++;
		else
			free(op);
	}
	while (posted--)
		while (sem_wait(&done) < 0 && errno == EINTR)
			;
	sem_destroy(&done);
}

int proxy_listener_add(struct proxy *p, int fd, int kind, const char *owner_id)
{
	struct listener *l = calloc(1, sizeof(*l));

	if (!l)
		return -ENOMEM;
	l->fd = fd;
	l->kind = kind;
	snprintf(l->owner, sizeof(l->owner), "%s", owner_id);
	pthread_mutex_lock(&p->l_lock);
	l->next = p->listeners;
	p->listeners = l;
	pthread_mutex_unlock(&p->l_lock);
	run_on_all_workers(p, listen_add_on_worker, l, owner_id);
	return 0;
}

void proxy_listener_remove(struct proxy *p, const char *owner_id)
{
	struct listener **pp, *dead = NULL;

	run_on_all_workers(p, listen_remove_on_worker, NULL, owner_id);
	pthread_mutex_lock(&p->l_lock);
	pp = &p->listeners;
	while (*pp) {
		struct listener *l = *pp;

		if (strcmp(l->owner, owner_id) == 0) {
			*pp = l->next;
			l->next = dead;
			dead = l;
		} else {
			pp = &l->next;
		}
	}
	pthread_mutex_unlock(&p->l_lock);
	while (dead) {
		struct listener *n = dead->next;

		if (dead->fd >= 0)
			close(dead->fd);
		free(dead);
		dead = n;
	}
}

static void drain_on_worker(void *arg)
{
	struct listen_op *op = arg;
	struct wlisten *wl, *next;

	/* stop accepting; idle keep-alive connections close at the next tick */
	for (wl = op->w->listens; wl; wl = next) {
		next = wl->next;
		loop_io_del(op->w->loop, &wl->io);
		loop_free_later(op->w->loop, wl, free);
	}
	op->w->listens = NULL;
	sem_post(op->done);
	free(op);
}

int proxy_drain(struct proxy *p, unsigned timeout_ms)
{
	struct timespec ts = { 0, 50 * 1000 * 1000 };
	unsigned waited = 0;

	atomic_store(&p->draining, true);
	run_on_all_workers(p, drain_on_worker, NULL, "");
	/* no worker watches them now: close, so new connects are refused at once */
	pthread_mutex_lock(&p->l_lock);
	for (struct listener *l = p->listeners; l; l = l->next) {
		if (l->kind == PROXY_L_HTTP && l->fd >= 0) {
			close(l->fd);
			l->fd = -1;
		}
	}
	pthread_mutex_unlock(&p->l_lock);
	while (atomic_load(&p->open_conns) > 0 && waited < timeout_ms) {
		nanosleep(&ts, NULL);
		waited += 50;
	}
	return (int)atomic_load(&p->open_conns);
}

unsigned proxy_sandbox_conns(struct proxy *p, const char *id)
{
	unsigned n = 0;
	struct sbx *x;

	pthread_rwlock_rdlock(&p->sb_lock);
	x = sbx_by_id_locked(p, id, NULL);
	if (x)
		n = atomic_load(&x->conns);
	pthread_rwlock_unlock(&p->sb_lock);
	return n;
}

int proxy_metrics_text(struct proxy *p, char *out, size_t len)
{
	size_t n = 0;
	unsigned long dials, reuses;

#define M(...) do { if (n < len) n += (size_t)snprintf(out + n, len - n, __VA_ARGS__); } while (0)
	up_stats(&dials, &reuses);
	M("# HELP sluice_connections_active Open client connections per sandbox.\n"
	  "# TYPE sluice_connections_active gauge\n");
	pthread_rwlock_rdlock(&p->sb_lock);
	for (unsigned i = 0; i < p->sb_high; i++)
		if (p->sandboxes[i])
			M("sluice_connections_active{sandbox=\"%s\"} %u\n", p->sandboxes[i]->id,
			  atomic_load(&p->sandboxes[i]->conns));
	M("# HELP sluice_sandbox_connections_total Client connections accepted per sandbox.\n"
	  "# TYPE sluice_sandbox_connections_total counter\n");
	for (unsigned i = 0; i < p->sb_high; i++)
		if (p->sandboxes[i])
			M("sluice_sandbox_connections_total{sandbox=\"%s\"} %lu\n",
			  p->sandboxes[i]->id, atomic_load(&p->sandboxes[i]->conns_total));
	pthread_rwlock_unlock(&p->sb_lock);
	M("# HELP sluice_connections_total Client connections accepted.\n"
	  "# TYPE sluice_connections_total counter\nsluice_connections_total %lu\n"
	  "# HELP sluice_connections_refused_total Connections closed at accept.\n"
	  "# TYPE sluice_connections_refused_total counter\nsluice_connections_refused_total %lu\n",
	  atomic_load(&p->total_conns), atomic_load(&p->refused_conns));
	M("# HELP sluice_requests_total Requests (and spliced connections) by decision.\n"
	  "# TYPE sluice_requests_total counter\n"
	  "sluice_requests_total{decision=\"allow\"} %lu\n"
	  "sluice_requests_total{decision=\"deny\"} %lu\n"
	  "sluice_requests_total{decision=\"error\"} %lu\n"
	  "sluice_requests_total{decision=\"passthrough\"} %lu\n",
	  atomic_load(&p->req_allow), atomic_load(&p->req_deny), atomic_load(&p->req_error),
	  atomic_load(&p->req_passthrough));
	M("# HELP sluice_upstream_errors_total Requests answered 5xx by sluice.\n"
	  "# TYPE sluice_upstream_errors_total counter\nsluice_upstream_errors_total %lu\n"
	  "# HELP sluice_tls_handshakes_total Client TLS handshakes completed.\n"
	  "# TYPE sluice_tls_handshakes_total counter\nsluice_tls_handshakes_total %lu\n"
	  "# HELP sluice_upstream_dials_total New upstream connections.\n"
	  "# TYPE sluice_upstream_dials_total counter\nsluice_upstream_dials_total %lu\n"
	  "# HELP sluice_upstream_pool_reuses_total Upstream connections reused.\n"
	  "# TYPE sluice_upstream_pool_reuses_total counter\nsluice_upstream_pool_reuses_total %lu\n"
	  "# HELP sluice_secrets_swapped_total Secret placeholders replaced.\n"
	  "# TYPE sluice_secrets_swapped_total counter\nsluice_secrets_swapped_total %lu\n"
	  "# HELP sluice_redactions_total Real secret values redacted in responses.\n"
	  "# TYPE sluice_redactions_total counter\nsluice_redactions_total %lu\n"
	  "# HELP sluice_audit_dropped_total Audit records that could not be queued.\n"
	  "# TYPE sluice_audit_dropped_total counter\nsluice_audit_dropped_total %lu\n",
	  atomic_load(&p->upstream_errors), atomic_load(&p->tls_handshakes), dials, reuses,
	  atomic_load(&p->secrets_swapped), atomic_load(&p->redactions),
	  atomic_load(&p->audit_dropped));
	if (p->nworkers && p->workers[0].udp) {
		struct udprelay_stats us;

		udprelay_get_stats(p->workers[0].udp, &us);
		M("# HELP sluice_udp_flows_open UDP relay flows open (network.udp).\n"
		  "# TYPE sluice_udp_flows_open gauge\nsluice_udp_flows_open %lu\n"
		  "# HELP sluice_udp_flows_total UDP relay flows by decision.\n"
		  "# TYPE sluice_udp_flows_total counter\n"
		  "sluice_udp_flows_total{decision=\"allow\"} %lu\n"
		  "sluice_udp_flows_total{decision=\"deny\"} %lu\n"
		  "# HELP sluice_udp_datagrams_total UDP datagrams relayed, by direction.\n"
		  "# TYPE sluice_udp_datagrams_total counter\n"
		  "sluice_udp_datagrams_total{direction=\"up\"} %lu\n"
		  "sluice_udp_datagrams_total{direction=\"down\"} %lu\n"
		  "# HELP sluice_udp_datagrams_dropped_total UDP datagrams the relay dropped.\n"
		  "# TYPE sluice_udp_datagrams_dropped_total counter\n"
		  "sluice_udp_datagrams_dropped_total %lu\n",
		  us.flows_open, us.flows_opened, us.flows_refused, us.dgrams_up, us.dgrams_down,
		  us.dropped);
	}
	M("# HELP sluice_request_duration_seconds Time from request head to audit.\n"
	  "# TYPE sluice_request_duration_seconds histogram\n");
	{
		unsigned long cum = 0;

		for (unsigned b = 0; b < LAT_BUCKETS; b++) {
			cum += atomic_load(&p->lat_hist[b]);
			M("sluice_request_duration_seconds_bucket{le=\"%g\"} %lu\n",
			  lat_bounds_us[b] / 1e6, cum);
		}
		cum += atomic_load(&p->lat_hist[LAT_BUCKETS]);
		M("sluice_request_duration_seconds_bucket{le=\"+Inf\"} %lu\n"
		  "sluice_request_duration_seconds_sum %.6f\n"
		  "sluice_request_duration_seconds_count %lu\n",
		  cum, atomic_load(&p->lat_sum_us) / 1e6, cum);
	}
#undef M
	return n < len ? (int)n : -ENOBUFS;
}

void proxy_get_status(struct proxy *p, struct proxy_status *ret)
{
	struct proxy_status st = { .workers = p->nworkers };

	up_stats(&st.upstream_dials, &st.upstream_pool_reuses);
	pthread_rwlock_rdlock(&p->sb_lock);
	for (unsigned i = 0; i < p->sb_high; i++)
		st.sandboxes += p->sandboxes[i] != NULL;
	pthread_rwlock_unlock(&p->sb_lock);
	st.open_connections = atomic_load(&p->open_conns);
	st.total_connections = atomic_load(&p->total_conns);
	st.total_requests = atomic_load(&p->total_requests);
	st.refused_connections = atomic_load(&p->refused_conns);
	st.upstream_errors = atomic_load(&p->upstream_errors);
	st.tls_handshakes = atomic_load(&p->tls_handshakes);
	st.denied_requests = atomic_load(&p->denied_requests);
	st.secrets_swapped = atomic_load(&p->secrets_swapped);
	st.redactions = atomic_load(&p->redactions);
	st.audit_dropped = atomic_load(&p->audit_dropped);
	if (p->nworkers && p->workers[0].udp) {
		struct udprelay_stats us;

		udprelay_get_stats(p->workers[0].udp, &us);
		st.udp_flows_open = us.flows_open;
		st.udp_flows_total = us.flows_opened;
	}
	*ret = st;
}
