// SPDX-License-Identifier: MIT
/*
 * udprelay: see udprelay.h. A flow is keyed by the listener a datagram came
 * in on (its netns) and the datagram's source (the sandbox socket). A flow
 * is either open (an upstream socket connected to the destination) or
 * refused (no socket: it only remembers that the refusal was audited, so a
 * sandbox that keeps sending costs one audit line, not one per datagram).
 *
 * Known race, accepted: the kernel record is keyed by the source address, so
 * if a sandbox socket closes with datagrams still queued here and another
 * socket (in the same netns) takes its port and sends before they are read,
 * those queued datagrams are relayed to the new socket's destination, after
 * the check for the new socket's sandbox.
 */
#include "udprelay.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

#define UR_BUCKETS 1024
#define UR_BATCH 64             /* datagrams per readiness event, per socket */

struct ur_listener {
	struct ur_listener *next;
	struct udprelay *r;
	struct loop_io io;
	int fd;
	uint64_t netns_cookie;
	char owner[UDPRELAY_SANDBOX_MAX + 1];
};

struct ur_flow {
	struct ur_flow *hnext;          /* hash chain */
	struct ur_flow *next, *prev;    /* all flows, for the tick */
	struct udprelay *r;
	struct ur_listener *l;
	struct loop_io io;              /* upstream socket; fd -1 when refused */
	int ufd;
	struct sockaddr_storage src;
	socklen_t srclen;
	struct sluice_orig dst;         /* valid when has_dst */
	bool has_dst;
	struct sockaddr_storage dsa;
	socklen_t dlen;
	char sandbox[UDPRELAY_SANDBOX_MAX + 1];
	char rule[UDPRELAY_RULE_MAX + 1];
	bool sticky;                    /* refused until it idles out, whatever the check says */
	uint64_t start_ms, last_ms;
	struct timespec start;
	uint64_t bytes_in, bytes_out;
};

struct udprelay {
	struct loop *loop;
	struct udprelay_cfg cfg;
	struct udprelay_hooks hooks;
	struct ur_listener *listeners;
	struct ur_flow *buckets[UR_BUCKETS];
	struct ur_flow *flows;          /* list head */
	unsigned nflows;
	struct udprelay_stats st;
	unsigned char buf[UDPRELAY_DGRAM_MAX];
};

/* ---- flow table ---- */

/* IPv4 sources arrive as AF_INET; a v4-mapped source is folded to that. */
static void ur_norm(struct sockaddr_storage *ss, socklen_t *len)
{
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	struct sockaddr_in s4 = { .sin_family = AF_INET };

	if (ss->ss_family != AF_INET6 || !IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
		return;
	s4.sin_port = s6->sin6_port;
	memcpy(&s4.sin_addr, &s6->sin6_addr.s6_addr[12], 4);
	memset(ss, 0, sizeof(*ss));
	memcpy(ss, &s4, sizeof(s4));
	*len = sizeof(s4);
}

static bool ur_src_eq(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;

		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;

	return x->sin6_port == y->sin6_port &&
	       !memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr));
}

static unsigned ur_hash(const struct ur_listener *l, const struct sockaddr_storage *src)
{
	const unsigned char *p;
	size_t n;
	uint64_t h = 1469598103934665603ull ^ (uintptr_t)l;

	if (src->ss_family == AF_INET) {
		p = (const unsigned char *)&((const struct sockaddr_in *)src)->sin_port;
		n = 6; /* port + address, adjacent in sockaddr_in */
	} else {
		const struct sockaddr_in6 *s6 = (const void *)src;

		h ^= s6->sin6_port;
		p = s6->sin6_addr.s6_addr;
		n = 16;
	}
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 1099511628211ull;
	return (unsigned)(h % UR_BUCKETS);
}

static struct ur_flow *ur_find(struct udprelay *r, const struct ur_listener *l,
			       const struct sockaddr_storage *src)
{
	struct ur_flow *f;

	for (f = r->buckets[ur_hash(l, src)]; f; f = f->hnext)
		if (f->l == l && ur_src_eq(&f->src, src))
			return f;
	return NULL;
}

/* One more open flow for sandbox would pass a limit. */
static bool ur_at_limit(struct udprelay *r, const char *sandbox)
{
	unsigned n = 0;

	if (r->st.flows_open >= r->cfg.max_flows)
		return true;
	for (struct ur_flow *f = r->flows; f; f = f->next)
		n += f->ufd >= 0 && !strcmp(f->sandbox, sandbox);
	return n >= r->cfg.max_flows_per_sandbox;
}

static void ur_orig_sockaddr(const struct sluice_orig *o, struct sockaddr_storage *ss,
			     socklen_t *len)
{
	memset(ss, 0, sizeof(*ss));
	if (o->family == SLUICE_AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

		s4->sin_family = AF_INET;
		s4->sin_port = o->port;
		memcpy(&s4->sin_addr, o->addr, 4);
		*len = sizeof(*s4);
	} else {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

		s6->sin6_family = AF_INET6;
		s6->sin6_port = o->port;
		memcpy(&s6->sin6_addr, o->addr, 16);
		*len = sizeof(*s6);
	}
}

static bool ur_orig_eq(const struct sluice_orig *a, const struct sluice_orig *b)
{
	return a->family == b->family && a->port == b->port && a->cgroup_id == b->cgroup_id &&
	       !memcmp(a->addr, b->addr, sizeof(a->addr));
}

static void ur_audit(struct udprelay *r, const struct ur_flow *f, const char *decision,
		     const char *reason)
{
	struct udprelay_event e = {
		.sandbox = f->sandbox,
		.cgroup_id = f->has_dst ? f->dst.cgroup_id : 0,
		.dst = f->has_dst ? (const struct sockaddr *)&f->dsa : NULL,
		.rule = f->rule,
		.decision = decision,
		.reason = reason,
		.start = f->start,
		.bytes_in = f->bytes_in,
		.bytes_out = f->bytes_out,
		.duration_us = (loop_now_ms(r->loop) - f->start_ms) * 1000,
	};

	if (r->hooks.audit)
		r->hooks.audit(r->hooks.opaque, &e);
}

static void ur_flow_free(struct udprelay *r, struct ur_flow *f, bool audit_close)
{
	struct ur_flow **pp = &r->buckets[ur_hash(f->l, &f->src)];

	while (*pp && *pp != f)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = f->hnext;
	if (f->prev)
		f->prev->next = f->next;
	else
		r->flows = f->next;
	if (f->next)
		f->next->prev = f->prev;
	r->nflows--;
	if (f->ufd >= 0) {
		if (audit_close)
			ur_audit(r, f, "allow", "udp_flow_closed");
		loop_io_del(r->loop, &f->io);
		close(f->ufd);
		f->ufd = -1;
		r->st.flows_open--;
	}
	loop_free_later(r->loop, f, free);
}

static struct ur_flow *ur_flow_new(struct udprelay *r, struct ur_listener *l,
				   const struct sockaddr_storage *src, socklen_t srclen)
{
	struct ur_flow *f = calloc(1, sizeof(*f));
	unsigned h;

	if (!f)
		return NULL;
	f->r = r;
	f->l = l;
	f->ufd = -1;
	f->src = *src;
	f->srclen = srclen;
	f->start_ms = f->last_ms = loop_now_ms(r->loop);
	clock_gettime(CLOCK_REALTIME, &f->start);
	h = ur_hash(l, src);
	f->hnext = r->buckets[h];
	r->buckets[h] = f;
	f->next = r->flows;
	if (r->flows)
		r->flows->prev = f;
	r->flows = f;
	r->nflows++;
	return f;
}

/* A refused flow: audited once, its datagrams dropped until it idles out. */
static void ur_refuse(struct udprelay *r, struct ur_flow *f, const char *reason)
{
	r->st.flows_refused++;
	ur_audit(r, f, "deny", reason);
}

/* A new flow for src going to dst (NULL: unknown), as the check named it. */
static struct ur_flow *ur_flow_start(struct udprelay *r, struct ur_listener *l,
				     const struct sockaddr_storage *src, socklen_t srclen,
				     const struct sluice_orig *dst, const struct sockaddr_storage *dsa,
				     socklen_t dlen, const struct udprelay_verdict *v)
{
	struct ur_flow *f = ur_flow_new(r, l, src, srclen);

	if (!f || !dst)
		return f;
	f->dst = *dst;
	f->has_dst = true;
	f->dsa = *dsa;
	f->dlen = dlen;
	snprintf(f->sandbox, sizeof(f->sandbox), "%s", v->sandbox);
	snprintf(f->rule, sizeof(f->rule), "%s", v->rule);
	return f;
}

/* ---- upstream side ---- */

static void ur_upstream_cb(struct loop_io *io, uint32_t events)
{
	struct ur_flow *f = container_of(io, struct ur_flow, io);
	struct udprelay *r = f->r;

	for (int i = 0; i < UR_BATCH && f->ufd >= 0; i++) {
		ssize_t n = recv(f->ufd, r->buf, sizeof(r->buf), MSG_DONTWAIT | MSG_TRUNC);

		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			continue; /* ICMP errors (ECONNREFUSED...): UDP carries on */
		}
		if ((size_t)n > sizeof(r->buf)) {
			r->st.dropped++;
			continue;
		}
		if (sendto(f->l->fd, r->buf, (size_t)n, MSG_DONTWAIT, (struct sockaddr *)&f->src,
			   f->srclen) < 0) {
			r->st.dropped++;
			continue;
		}
		f->bytes_out += (uint64_t)n;
		f->last_ms = loop_now_ms(r->loop);
		r->st.dgrams_down++;
		r->st.bytes_down += (uint64_t)n;
	}
	(void)events;
}

/* Open the flow's upstream socket (sluiced's netns). 0 or -errno. */
static int ur_flow_open(struct udprelay *r, struct ur_flow *f)
{
	int fd;

	fd = socket(f->dsa.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&f->dsa, f->dlen) < 0 ||
	    loop_io_add(r->loop, &f->io, fd, EPOLLIN, ur_upstream_cb) < 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	f->ufd = fd;
	r->st.flows_opened++;
	r->st.flows_open++;
	ur_audit(r, f, "allow", "udp_flow_open");
	return 0;
}

/* ---- sandbox side ---- */

/* The flow one datagram from src belongs to, opened or refused; NULL: drop
 * it (out of memory or a refused flow). */
static struct ur_flow *ur_flow_for(struct udprelay *r, struct ur_listener *l,
				   const struct sockaddr_storage *src, socklen_t srclen)
{
	struct udprelay_verdict v;
	struct sockaddr_storage dsa;
	struct sluice_orig o;
	struct ur_flow *f = ur_find(r, l, src);
	socklen_t dlen;
	int rc;

	rc = r->hooks.lookup(r->hooks.opaque, l->netns_cookie, (const struct sockaddr *)src, &o);
	if (rc < 0 && f && !f->has_dst)
		return NULL; /* still no record, already audited */
	if (f && (rc < 0 || !f->has_dst || !ur_orig_eq(&f->dst, &o))) {
		/* Another socket took this source port, or the record went: start over. */
		ur_flow_free(r, f, true);
		f = NULL;
	}
	if (rc < 0) {
		f = ur_flow_start(r, l, src, srclen, NULL, NULL, 0, NULL);
		if (f) {
			/* A netns listener belongs to one sandbox: name it in the line. */
			if (l->owner[0] != '@')
				snprintf(f->sandbox, sizeof(f->sandbox), "%s", l->owner);
			ur_refuse(r, f, "udp_no_record");
		}
		return NULL;
	}
	memset(&v, 0, sizeof(v));
	ur_orig_sockaddr(&o, &dsa, &dlen);
	rc = r->hooks.check(r->hooks.opaque, &o, &dsa, &v);
	if (f && f->ufd >= 0 && rc == 0)
		return f; /* the common case: an open flow, still allowed */
	if (f && f->ufd < 0 && (rc < 0 || f->sticky || ur_at_limit(r, v.sandbox)))
		return NULL; /* still refused, already audited */
	if (f)
		ur_flow_free(r, f, true); /* allowed now, or not any more */
	if (r->nflows >= 2 * r->cfg.max_flows)
		return NULL; /* the table is full of refused flows: drop, unrecorded */
	f = ur_flow_start(r, l, src, srclen, &o, &dsa, dlen, &v);
	if (!f)
		return NULL;
	if (rc < 0) {
		ur_refuse(r, f, v.reason ? v.reason : "udp_not_allowed");
		return NULL;
	}
	if (ur_at_limit(r, f->sandbox)) {
		ur_refuse(r, f, "udp_flow_limit");
		return NULL;
	}
	rc = ur_flow_open(r, f);
	if (rc < 0) {
		f->sticky = true; /* no retry per datagram: after it idles out */
		ur_refuse(r, f, "udp_upstream_error");
		return NULL;
	}
	return f;
}

static void ur_listener_cb(struct loop_io *io, uint32_t events)
{
	struct ur_listener *l = container_of(io, struct ur_listener, io);
	struct udprelay *r = l->r;

	for (int i = 0; i < UR_BATCH; i++) {
		struct sockaddr_storage src;
		socklen_t srclen = sizeof(src);
		struct ur_flow *f;
		ssize_t n;

		n = recvfrom(l->fd, r->buf, sizeof(r->buf), MSG_DONTWAIT | MSG_TRUNC,
			     (struct sockaddr *)&src, &srclen);
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			continue;
		}
		ur_norm(&src, &srclen);
		if ((size_t)n > sizeof(r->buf) ||
		    (src.ss_family != AF_INET && src.ss_family != AF_INET6)) {
			r->st.dropped++;
			continue;
		}
		f = ur_flow_for(r, l, &src, srclen);
		if (!f) {
			r->st.dropped++;
			continue;
		}
		f->last_ms = loop_now_ms(r->loop);
		if (send(f->ufd, r->buf, (size_t)n, MSG_DONTWAIT) < 0) {
			r->st.dropped++; /* full socket buffer, ICMP error: UDP may lose it */
			continue;
		}
		f->bytes_in += (uint64_t)n;
		r->st.dgrams_up++;
		r->st.bytes_up += (uint64_t)n;
	}
	(void)events;
}

/* ---- instance ---- */

int udprelay_new(struct loop *l, const struct udprelay_cfg *cfg,
		 const struct udprelay_hooks *hooks, struct udprelay **ret)
{
	struct udprelay *r;

	if (!l || !hooks || !hooks->lookup || !hooks->check || !ret)
		return -EINVAL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->loop = l;
	if (cfg)
		r->cfg = *cfg;
	if (!r->cfg.idle_ms)
		r->cfg.idle_ms = 60000;
	if (!r->cfg.max_flows_per_sandbox)
		r->cfg.max_flows_per_sandbox = 256;
	if (!r->cfg.max_flows)
		r->cfg.max_flows = 4096;
	r->hooks = *hooks;
	*ret = r;
	return 0;
}

void udprelay_free(struct udprelay *r)
{
	struct ur_listener *l, *next;

	if (!r)
		return;
	while (r->flows) {
		struct ur_flow *f = r->flows;

		ur_flow_free(r, f, true);
	}
	for (l = r->listeners; l; l = next) {
		next = l->next;
		loop_io_del(r->loop, &l->io);
		free(l);
	}
	free(r);
}

int udprelay_add_listener(struct udprelay *r, int fd, const char *owner)
{
	struct ur_listener *l;
	socklen_t len = sizeof(uint64_t);
	int rc;

	if (!r || fd < 0 || !owner || strlen(owner) > UDPRELAY_SANDBOX_MAX)
		return -EINVAL;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	if (getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &l->netns_cookie, &len) < 0) {
		rc = -errno;
		free(l);
		return rc;
	}
	l->r = r;
	l->fd = fd;
	snprintf(l->owner, sizeof(l->owner), "%s", owner);
	rc = loop_io_add(r->loop, &l->io, fd, EPOLLIN, ur_listener_cb);
	if (rc < 0) {
		free(l);
		return rc;
	}
	l->next = r->listeners;
	r->listeners = l;
	return 0;
}

void udprelay_remove_listeners(struct udprelay *r, const char *owner)
{
	struct ur_listener **pp = &r->listeners;
	struct ur_flow *f, *next;

	while (*pp) {
		struct ur_listener *l = *pp;

		if (strcmp(l->owner, owner)) {
			pp = &l->next;
			continue;
		}
		for (f = r->flows; f; f = next) {
			next = f->next;
			if (f->l == l)
				ur_flow_free(r, f, true);
		}
		*pp = l->next;
		loop_io_del(r->loop, &l->io);
		loop_free_later(r->loop, l, free);
	}
}

void udprelay_tick(struct udprelay *r)
{
	uint64_t now = loop_now_ms(r->loop);
	struct ur_flow *f, *next;

	for (f = r->flows; f; f = next) {
		struct udprelay_verdict v;

		next = f->next;
		if (now - f->last_ms >= r->cfg.idle_ms) {
			if (r->hooks.forget)
				r->hooks.forget(r->hooks.opaque, f->l->netns_cookie,
						(const struct sockaddr *)&f->src);
			ur_flow_free(r, f, true);
			continue;
		}
		if (f->ufd < 0)
			continue;
		memset(&v, 0, sizeof(v));
		if (r->hooks.check(r->hooks.opaque, &f->dst, &f->dsa, &v) < 0) {
			/* Policy changed under an open flow: close it, remember the refusal. */
			struct sockaddr_storage src = f->src, dsa = f->dsa;
			socklen_t srclen = f->srclen, dlen = f->dlen;
			struct ur_listener *l = f->l;
			struct sluice_orig dst = f->dst;
			struct ur_flow *g;

			ur_flow_free(r, f, true);
			/* g goes to the list head, before next: this walk does not see it. */
			g = ur_flow_start(r, l, &src, srclen, &dst, &dsa, dlen, &v);
			if (g)
				ur_refuse(r, g, v.reason ? v.reason : "udp_not_allowed");
		}
	}
}

void udprelay_get_stats(struct udprelay *r, struct udprelay_stats *ret)
{
	*ret = r->st;
}
