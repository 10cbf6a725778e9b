// SPDX-License-Identifier: MIT
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/timerfd.h>

#include "dns.h"
#include "dnsmsg.h"

#define DNS_TIMEOUT_MS_DEFAULT 3000
#define DNS_INFLIGHT_DEFAULT 1024
#define DNS_INFLIGHT_MAX 32768
#define DNS_TCP_IDLE_MS_DEFAULT 10000
#define DNS_TCP_CONNS_DEFAULT 128
#define DNS_UDP_BATCH 64        /* datagrams per wake-up, then let others run */
#define DNS_ACCEPT_BATCH 16
#define DNS_ID_TRIES 64
#define DNS_ANSWER_MAX 65535

struct dns_listener {
	struct loop_io io;
	struct dns *d;
	bool tcp;
	struct dns_listener *next;
	char sandbox[DNS_SANDBOX_ID_MAX + 1];
};

struct dns_pending;

struct dns_slot {
	struct dns_pending *p;  /* in flight, or NULL */
	uint8_t *ans;           /* length-prefixed answer once ready */
	size_t len, sent;
};

struct dns_tcp {
	struct loop_io io;
	struct dns *d;
	struct dns_tcp *prev, *next;    /* least recently active first */
	uint64_t last_ms;
	bool eof, dead, parsing;
	size_t inlen;
	unsigned head, count;   /* ring of outstanding queries, in arrival order */
	struct dns_slot slots[DNS_TCP_PIPELINE];
	char sandbox[DNS_SANDBOX_ID_MAX + 1];   /* the listener's owner */
	char who[DNS_SANDBOX_ID_MAX + 1];       /* the sandbox that connected */
	uint8_t in[2 + DNS_QUERY_MAX];
};

/* Where an answer goes: a datagram to peer via listener ul, or slot of tc. */
struct dns_client {
	struct dns_listener *ul;
	struct sockaddr_storage peer;
	socklen_t peerlen;
	struct dns_tcp *tc;
	unsigned slot;
};

/* One upstream UDP socket, connected to one resolver: the default one
 * (cfg.resolver, made first and so last in the list, kept for the
 * instance's life) and one
 * per other resolver a sandbox's policy names, made on first use. */
struct dns_upstream {
	struct loop_io io;
	struct dns *d;
	struct dns_upstream *next;
	struct sockaddr_storage addr;
	socklen_t len;
	unsigned inflight;      /* queries sent to it, UDP and TCP, not answered yet */
	uint64_t last_ms;
};

struct dns_pending {
	struct dns *d;
	struct dns_upstream *uu;        /* the resolver it went to */
	struct dns_pending *prev, *next;        /* by deadline (= arrival) */
	uint64_t deadline;
	uint16_t id;
	struct dns_client cl;
	const char *sandbox;    /* = who */
	char who[DNS_SANDBOX_ID_MAX + 1];
	struct dnsmsg_question q;
	uint8_t *query;         /* the client's query, original ID */
	size_t qlen;
	/* TCP upstream: one connection per query */
	struct loop_io up;
	int up_fd;
	uint8_t *upbuf;         /* out: prefixed query; in: prefixed answer */
	size_t up_len, up_done;
	bool up_reading;
};

struct dns {
	struct loop *loop;
	struct dns_cfg cfg;
	struct dns_hooks hooks;
	bool freeing;
	struct dns_upstream *ups;       /* newest first; the default resolver last */
	unsigned nups;
	struct loop_io timer_io;
	uint64_t armed_ms;
	struct dns_pending **by_id;     /* 65536 slots */
	unsigned inflight;
	struct dns_pending *fifo_head, *fifo_tail;
	struct dns_listener *listeners;
	struct dns_tcp *tcp_head, *tcp_tail;
	unsigned ntcp;
	uint16_t rnd[256];
	unsigned rnd_left;
	struct dns_stats st;
	uint8_t rbuf[DNS_ANSWER_MAX + 1];
};

static void tcp_flush(struct dns_tcp *tc);
static void tcp_parse(struct dns_tcp *tc);
static void tcp_close(struct dns_tcp *tc);
static void tcp_update_events(struct dns_tcp *tc);

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void dns_cfg_defaults(struct dns_cfg *cfg)
{
	cfg->timeout_ms = DNS_TIMEOUT_MS_DEFAULT;
	cfg->max_inflight = DNS_INFLIGHT_DEFAULT;
	cfg->tcp_idle_ms = DNS_TCP_IDLE_MS_DEFAULT;
	cfg->max_tcp_conns = DNS_TCP_CONNS_DEFAULT;
}

/* ---- the one timer: earliest query deadline or TCP idle deadline ---- */

static void timer_rearm(struct dns *d)
{
	struct itimerspec its = { 0 };
	uint64_t next = UINT64_MAX;

	if (d->freeing)
		return;
	if (d->fifo_head)
		next = d->fifo_head->deadline;
	if (d->tcp_head && d->tcp_head->last_ms + d->cfg.tcp_idle_ms < next)
		next = d->tcp_head->last_ms + d->cfg.tcp_idle_ms;
	if (next == d->armed_ms)
		return;
	d->armed_ms = next;
	if (next != UINT64_MAX) {
		its.it_value.tv_sec = (time_t)(next / 1000);
		its.it_value.tv_nsec = (long)(next % 1000) * 1000000;
		if (!its.it_value.tv_sec && !its.it_value.tv_nsec)
			its.it_value.tv_nsec = 1;
	}
	timerfd_settime(d->timer_io.fd, TFD_TIMER_ABSTIME, &its, NULL);
}

/* ---- audit ---- */

static void audit(struct dns *d, const char *sandbox, const struct dnsmsg_question *q, bool tcp,
		  const char *decision, const char *reason)
{
	struct dns_query_info info = {
		.sandbox = sandbox,
		.qname = q ? q->name : "",
		.qtype = q ? q->qtype : 0,
		.transport = tcp ? "tcp" : "udp",
		.decision = decision,
		.reason = reason,
	};

	if (d->hooks.audit)
		d->hooks.audit(d->hooks.opaque, &info);
}

/* ---- answering a client ---- */

/* Send msg (ID already the client's) to cl. For TCP it fills the slot and
 * flushes, which may close the connection (tc->dead). */
static void client_reply(struct dns *d, struct dns_client *cl, const uint8_t *msg, size_t len)
{
	struct dns_slot *s;

	if (!cl->tc) {
		/* UDP: best effort, a full socket buffer drops like the network */
		(void)sendto(cl->ul->io.fd, msg, len, MSG_DONTWAIT | MSG_NOSIGNAL,
			     (struct sockaddr *)&cl->peer, cl->peerlen);
		return;
	}
	s = &cl->tc->slots[cl->slot];
	s->p = NULL;
	s->ans = malloc(len + 2);
	if (!s->ans) {
		tcp_close(cl->tc);
		return;
	}
	dnsmsg_put16(s->ans, (uint16_t)len);
	memcpy(s->ans + 2, msg, len);
	s->len = len + 2;
	s->sent = 0;
	tcp_flush(cl->tc);
}

static void client_error(struct dns *d, struct dns_client *cl, const uint8_t *query, size_t qlen,
			 unsigned rcode)
{
	uint8_t out[DNS_QUERY_MAX];
	int n = dnsmsg_make_error(query, qlen, rcode, out, sizeof(out));

	if (n > 0)
		client_reply(d, cl, out, (size_t)n);
	else if (cl->tc)
		tcp_close(cl->tc);
}

/* ---- in-flight queries ---- */

static void pending_free_mem(void *ptr)
{
	struct dns_pending *p = ptr;

	free(p->query);
	free(p->upbuf);
	free(p);
}

/* Unlink p from every table and release it; the caller has answered (or
 * decided not to answer) the client already or does so from its copy. */
static void pending_release(struct dns_pending *p)
{
	struct dns *d = p->d;

	if (d->by_id[p->id] == p)
		d->by_id[p->id] = NULL;
	if (p->prev)
		p->prev->next = p->next;
	else
		d->fifo_head = p->next;
	if (p->next)
		p->next->prev = p->prev;
	else
		d->fifo_tail = p->prev;
	d->inflight--;
	if (p->uu)
		p->uu->inflight--;
	if (p->cl.tc && p->cl.tc->slots[p->cl.slot].p == p)
		p->cl.tc->slots[p->cl.slot].p = NULL;
	if (p->up_fd >= 0) {
		loop_io_del(d->loop, &p->up);
		close(p->up_fd);
		p->up_fd = -1;
		if (!d->freeing && loop_free_later(d->loop, p, pending_free_mem) == 0)
			return;
		if (!d->freeing)
			return; /* leak rather than free under a queued event */
	}
	pending_free_mem(p);
}

/* Answer relayed: restore the client's ID. ans may be modified. */
static void pending_answer(struct dns_pending *p, uint8_t *ans, size_t len)
{
	struct dns *d = p->d;
	struct dns_client cl = p->cl;
	struct dnsmsg_question q = p->q;
	const char *sandbox = p->sandbox;

	dnsmsg_put16(ans, dnsmsg_get16(p->query));
	pending_release(p);
	audit(d, sandbox, &q, cl.tc != NULL, "forward", "answered");
	client_reply(d, &cl, ans, len);
}

static void pending_fail(struct dns_pending *p, const char *reason)
{
	struct dns *d = p->d;
	struct dns_client cl = p->cl;
	struct dnsmsg_question q = p->q;
	const char *sandbox = p->sandbox;
	uint8_t *query = p->query;
	size_t qlen = p->qlen;

	p->query = NULL;
	d->st.servfail++;
	pending_release(p);
	audit(d, sandbox, &q, cl.tc != NULL, "servfail", reason);
	client_error(d, &cl, query, qlen, DNSMSG_SERVFAIL);
	free(query);
}

/* The client went away: no answer. */
static void pending_drop(struct dns_pending *p, const char *reason)
{
	struct dns *d = p->d;
	struct dnsmsg_question q = p->q;
	bool tcp = p->cl.tc != NULL;
	const char *sandbox = p->sandbox;

	if (!d->freeing)
		audit(d, sandbox, &q, tcp, "dropped", reason);
	pending_release(p);
}

static int fresh_id(struct dns *d, uint16_t *ret_id)
{
	for (unsigned i = 0; i < DNS_ID_TRIES; i++) {
		uint16_t id;

		if (!d->rnd_left) {
			if (getrandom(d->rnd, sizeof(d->rnd), 0) != (ssize_t)sizeof(d->rnd))
				return -EIO;
			d->rnd_left = sizeof(d->rnd) / sizeof(d->rnd[0]);
		}
		id = d->rnd[--d->rnd_left];
		if (!d->by_id[id]) {
			*ret_id = id;
			return 0;
		}
	}
	return -EBUSY;
}

/* ---- TCP upstream, one connection per query ---- */

static void up_tcp_cb(struct loop_io *io, uint32_t events)
{
	struct dns_pending *p = container_of(io, struct dns_pending, up);
	struct dns *d = p->d;
	ssize_t n;

	if (!p->up_reading) {
		n = send(p->up_fd, p->upbuf + p->up_done, p->up_len - p->up_done,
			 MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			pending_fail(p, "upstream_error");
			goto out;
		}
		p->up_done += (size_t)n;
		if (p->up_done < p->up_len)
			return;
		free(p->upbuf);
		p->upbuf = malloc(2 + DNS_ANSWER_MAX);
		if (!p->upbuf) {
			pending_fail(p, "upstream_error");
			goto out;
		}
		p->up_reading = true;
		p->up_len = 2;
		p->up_done = 0;
		loop_io_set(d->loop, &p->up, EPOLLIN);
		return;
	}
	n = recv(p->up_fd, p->upbuf + p->up_done, p->up_len - p->up_done, MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n < 0) {
		pending_fail(p, "upstream_error");
		goto out;
	}
	if (n == 0) {
		pending_fail(p, "upstream_closed");
		goto out;
	}
	p->up_done += (size_t)n;
	if (p->up_done < p->up_len)
		return;
	if (p->up_len == 2) {
		p->up_len = 2 + (size_t)dnsmsg_get16(p->upbuf);
		if (p->up_len > 2)
			return;
	}
	{
		struct dnsmsg_header h;
		struct dnsmsg_question q;
		uint8_t *ans = p->upbuf + 2;
		size_t len = p->up_len - 2;

		if (dnsmsg_parse_question(ans, len, &h, &q) < 0 || !(h.flags & DNSMSG_F_QR) ||
		    h.id != p->id || !dnsmsg_same_question(&q, &p->q)) {
			d->st.ignored++;
			pending_fail(p, "upstream_mismatch");
			goto out;
		}
		/* ans lives in p->upbuf, freed with p after the batch */
		p->upbuf = NULL;
		pending_answer(p, ans, len);
		free(ans - 2);
	}
out:
	timer_rearm(d);
}

static int up_tcp_start(struct dns_pending *p, const uint8_t *query, size_t qlen)
{
	struct dns *d = p->d;
	int fd, r;

	p->upbuf = malloc(qlen + 2);
	if (!p->upbuf)
		return -ENOMEM;
	dnsmsg_put16(p->upbuf, (uint16_t)qlen);
	memcpy(p->upbuf + 2, query, qlen);
	dnsmsg_put16(p->upbuf + 2, p->id);
	p->up_len = qlen + 2;
	p->up_done = 0;
	fd = socket(p->uu->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&p->uu->addr, p->uu->len) < 0 &&
	    errno != EINPROGRESS) {
		r = -errno;
		goto out_close;
	}
	r = loop_io_add(d->loop, &p->up, fd, EPOLLOUT, up_tcp_cb);
	if (r < 0)
		goto out_close;
	p->up_fd = fd;
	return 0;

out_close:
	close(fd);
	return r;
}

/* ---- upstream UDP sockets, one per resolver ---- */

static void udp_upstream_cb(struct loop_io *io, uint32_t events);

static struct dns_upstream *upstream_new(struct dns *d, const struct sockaddr_storage *addr,
					 socklen_t len)
{
	struct dns_upstream *u = calloc(1, sizeof(*u));
	int fd;

	if (!u)
		return NULL;
	u->d = d;
	u->addr = *addr;
	u->len = len;
	fd = socket(addr->ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto out_free;
	/* Connected: the kernel drops datagrams from any other source. */
	if (connect(fd, (const struct sockaddr *)addr, len) < 0 ||
	    loop_io_add(d->loop, &u->io, fd, EPOLLIN, udp_upstream_cb) < 0) {
		close(fd);
		goto out_free;
	}
	u->next = d->ups;
	d->ups = u;
	d->nups++;
	return u;

out_free:
	free(u);
	return NULL;
}

static void upstream_free(struct dns *d, struct dns_upstream *u)
{
	struct dns_upstream **pp = &d->ups;

	while (*pp && *pp != u)
		pp = &(*pp)->next;
	if (*pp)
		*pp = u->next;
	d->nups--;
	loop_io_del(d->loop, &u->io);
	close(u->io.fd);
	/* an event for it may still be queued in this batch: leak rather than
	 * free under it when loop_free_later has no memory */
	if (d->freeing)
		free(u);
	else
		(void)loop_free_later(d->loop, u, free);
}

/*
 * The resolver for sandbox's queries: its policy's own (hooks.resolver), or
 * the default. A sandbox whose resolver cannot be served (no socket, all
 * DNS_RESOLVERS_MAX slots busy) gets NULL: its query fails, it is never
 * sent to another resolver than the one its policy names.
 */
static struct dns_upstream *upstream_for(struct dns *d, const char *sandbox)
{
	struct dns_upstream *u, *lru = NULL, *dflt = NULL;
	struct sockaddr_storage ss;
	socklen_t len = 0;

	for (u = d->ups; u; u = u->next)
		dflt = u; /* the default was made first: it is last in the list */
	memset(&ss, 0, sizeof(ss));
	if (!d->hooks.resolver || !d->hooks.resolver(d->hooks.opaque, sandbox, &ss, &len))
		return dflt;
	for (u = d->ups; u; u = u->next) {
		if (u->len == len && !memcmp(&u->addr, &ss, len)) {
			u->last_ms = mono_ms();
			return u;
		}
		if (u != dflt && !u->inflight && (!lru || u->last_ms < lru->last_ms))
			lru = u;
	}
	if (d->nups >= DNS_RESOLVERS_MAX) {
		if (!lru)
			return NULL;
		upstream_free(d, lru);
	}
	u = upstream_new(d, &ss, len);
	if (u)
		u->last_ms = mono_ms();
	return u;
}

/* ---- queries from clients ---- */

/*
 * Handle one query from a client. Returns false when it was dropped
 * unanswered (a TCP caller then closes the connection); for TCP the slot
 * in cl is filled now (local answer) or later (forwarded).
 */
static bool handle_query(struct dns *d, const uint8_t *msg, size_t len, const char *sandbox,
			 struct dns_client *cl)
{
	bool tcp = cl->tc != NULL;
	struct dnsmsg_header h;
	struct dnsmsg_question q;
	struct dns_pending *p;
	struct dns_upstream *uu;
	uint8_t fwd[DNS_QUERY_MAX];
	uint16_t id;
	int r;

	d->st.queries++;
	if (dnsmsg_parse_header(msg, len, &h) < 0) {
		d->st.malformed++;
		audit(d, sandbox, NULL, tcp, "dropped", "short_header");
		return false;
	}
	if (h.flags & DNSMSG_F_QR) {
		/* never answer an answer: no reflection loops */
		d->st.malformed++;
		audit(d, sandbox, NULL, tcp, "dropped", "not_a_query");
		return false;
	}
	if (len > DNS_QUERY_MAX) {
		d->st.malformed++;
		audit(d, sandbox, NULL, tcp, "formerr", "too_large");
		client_error(d, cl, msg, DNSMSG_HDR_LEN, DNSMSG_FORMERR);
		return true;
	}
	r = dnsmsg_parse_question(msg, len, &h, &q);
	if (dnsmsg_opcode(h.flags) != 0) {
		d->st.refused++;
		audit(d, sandbox, r == 0 ? &q : NULL, tcp, "refused", "opcode");
		client_error(d, cl, msg, len, DNSMSG_REFUSED);
		return true;
	}
	if (r < 0) {
		d->st.malformed++;
		audit(d, sandbox, NULL, tcp, "formerr", "malformed");
		client_error(d, cl, msg, len, DNSMSG_FORMERR);
		return true;
	}
	if (!sandbox[0]) {
		/* a shared listener's datagram from no sandbox socket */
		d->st.refused++;
		audit(d, sandbox, &q, tcp, "refused", "unknown_sender");
		client_error(d, cl, msg, len, DNSMSG_REFUSED);
		return true;
	}
	/* An escaped octet ("\." inside a label, controls, spaces) is in no
	 * host name; refusing it keeps a suffix match from taking the labels
	 * "x.allowed" + "test" for a subdomain of allowed.test. */
	if (d->hooks.allowed && strchr(q.name, '\\')) {
		d->st.nxdomain++;
		audit(d, sandbox, &q, tcp, "nxdomain", "bad_name");
		client_error(d, cl, msg, len, DNSMSG_NXDOMAIN);
		return true;
	}
	if (d->hooks.allowed && !d->hooks.allowed(d->hooks.opaque, sandbox, q.name)) {
		d->st.nxdomain++;
		audit(d, sandbox, &q, tcp, "nxdomain", "not_allowed");
		client_error(d, cl, msg, len, DNSMSG_NXDOMAIN);
		return true;
	}
	if (d->inflight >= d->cfg.max_inflight || fresh_id(d, &id) < 0) {
		d->st.refused++;
		audit(d, sandbox, &q, tcp, "refused", "max_inflight");
		client_error(d, cl, msg, len, DNSMSG_REFUSED);
		return true;
	}
	uu = upstream_for(d, sandbox);
	if (!uu) {
		d->st.servfail++;
		audit(d, sandbox, &q, tcp, "servfail", "resolver_unavailable");
		client_error(d, cl, msg, len, DNSMSG_SERVFAIL);
		return true;
	}

	p = calloc(1, sizeof(*p));
	if (!p || !(p->query = malloc(len))) {
		free(p);
		d->st.servfail++;
		audit(d, sandbox, &q, tcp, "servfail", "no_memory");
		client_error(d, cl, msg, len, DNSMSG_SERVFAIL);
		return true;
	}
	p->d = d;
	p->uu = uu;
	uu->inflight++;
	p->id = id;
	p->cl = *cl;
	snprintf(p->who, sizeof(p->who), "%s", sandbox);
	p->sandbox = p->who;
	p->q = q;
	p->up_fd = -1;
	memcpy(p->query, msg, len);
	p->qlen = len;
	p->deadline = mono_ms() + d->cfg.timeout_ms;
	d->by_id[id] = p;
	p->prev = d->fifo_tail;
	if (d->fifo_tail)
		d->fifo_tail->next = p;
	else
		d->fifo_head = p;
	d->fifo_tail = p;
	d->inflight++;
	if (tcp)
		cl->tc->slots[cl->slot].p = p;

	if (tcp) {
		r = up_tcp_start(p, msg, len);
	} else {
		memcpy(fwd, msg, len);
		dnsmsg_put16(fwd, id);
		r = send(uu->io.fd, fwd, len, MSG_DONTWAIT | MSG_NOSIGNAL) == (ssize_t)len ?
			    0 : -errno;
	}
	if (r < 0) {
		pending_fail(p, "upstream_error");
		return true;
	}
	d->st.forwarded++;
	return true;
}

/* ---- UDP ---- */

/* A listener several sandboxes share (owner "@host"): each query's sandbox
 * comes from the identify hook. */
static bool listener_shared(const struct dns_listener *l)
{
	return l->sandbox[0] == '@' && l->d->hooks.identify;
}

static void udp_listener_cb(struct loop_io *io, uint32_t events)
{
	struct dns_listener *ul = container_of(io, struct dns_listener, io);
	struct dns *d = ul->d;

	for (unsigned i = 0; i < DNS_UDP_BATCH && io->registered; i++) {
		struct dns_client cl = { .ul = ul, .peerlen = sizeof(cl.peer) };
		ssize_t n = recvfrom(io->fd, d->rbuf, sizeof(d->rbuf), MSG_DONTWAIT | MSG_TRUNC,
				     (struct sockaddr *)&cl.peer, &cl.peerlen);

		if (n < 0)
			break;          /* EAGAIN: another worker took it, or empty */
		if ((size_t)n > sizeof(d->rbuf))
			n = sizeof(d->rbuf);   /* > DNS_QUERY_MAX anyway: FORMERR */
		if (!listener_shared(ul)) {
			handle_query(d, d->rbuf, (size_t)n, ul->sandbox, &cl);
		} else {
			char who[DNS_SANDBOX_ID_MAX + 1] = "";

			if (!d->hooks.identify(d->hooks.opaque, io->fd, (struct sockaddr *)&cl.peer,
					       cl.peerlen, who, sizeof(who)))
				who[0] = '\0';
			handle_query(d, d->rbuf, (size_t)n, who, &cl);
		}
	}
	timer_rearm(d);
}

static void udp_upstream_cb(struct loop_io *io, uint32_t events)
{
	struct dns_upstream *u = container_of(io, struct dns_upstream, io);
	struct dns *d = u->d;

	for (unsigned i = 0; i < DNS_UDP_BATCH; i++) {
		struct dnsmsg_header h;
		struct dnsmsg_question q;
		struct dns_pending *p;
		ssize_t n = recv(io->fd, d->rbuf, sizeof(d->rbuf), MSG_DONTWAIT);

		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			continue;       /* ICMP error (ECONNREFUSED): the query times out */
		}
		if (dnsmsg_parse_question(d->rbuf, (size_t)n, &h, &q) < 0 ||
		    !(h.flags & DNSMSG_F_QR)) {
			d->st.ignored++;
			continue;
		}
		p = d->by_id[h.id];
		/* Spoofing: the ID and the whole question must match, on the
		 * socket of the resolver it was sent to, and a TCP query's answer
		 * never comes by UDP. */
		if (!p || p->uu != u || p->up_fd >= 0 || p->cl.tc ||
		    !dnsmsg_same_question(&q, &p->q)) {
			d->st.ignored++;
			continue;
		}
		pending_answer(p, d->rbuf, (size_t)n);
	}
	timer_rearm(d);
}

/* ---- TCP clients ---- */

static void tcp_touch(struct dns_tcp *tc)
{
	struct dns *d = tc->d;

	tc->last_ms = mono_ms();
	if (d->tcp_tail == tc)
		return;
	/* unlink, append at the tail */
	if (tc->prev)
		tc->prev->next = tc->next;
	else
		d->tcp_head = tc->next;
	tc->next->prev = tc->prev;
	tc->prev = d->tcp_tail;
	tc->next = NULL;
	d->tcp_tail->next = tc;
	d->tcp_tail = tc;
}

static void tcp_free_mem(void *ptr) { free(ptr); }

static void tcp_close(struct dns_tcp *tc)
{
	struct dns *d = tc->d;

	if (tc->dead)
		return;
	tc->dead = true;
	for (unsigned i = 0; i < DNS_TCP_PIPELINE; i++) {
		struct dns_slot *s = &tc->slots[i];

		if (s->p)
			pending_drop(s->p, "client_closed");
		free(s->ans);
		s->ans = NULL;
	}
	loop_io_del(d->loop, &tc->io);
	close(tc->io.fd);
	if (tc->prev)
		tc->prev->next = tc->next;
	else
		d->tcp_head = tc->next;
	if (tc->next)
		tc->next->prev = tc->prev;
	else
		d->tcp_tail = tc->prev;
	d->ntcp--;
	if (d->freeing)
		free(tc);
	else
		loop_free_later(d->loop, tc, tcp_free_mem);    /* on -ENOMEM: leak, not UAF */
}

static void tcp_update_events(struct dns_tcp *tc)
{
	struct dns_slot *h = &tc->slots[tc->head];
	uint32_t ev = 0;

	if (tc->dead)
		return;
	if (!tc->eof && tc->count < DNS_TCP_PIPELINE)
		ev |= EPOLLIN;
	if (tc->count && h->ans && h->sent < h->len)
		ev |= EPOLLOUT;
	loop_io_set(tc->d->loop, &tc->io, ev);
}

/* Write the answers that are ready, in query order; a freed slot lets the
 * frames still buffered in tc->in be taken. */
static void tcp_flush(struct dns_tcp *tc)
{
	bool freed = false;

	while (!tc->dead && tc->count) {
		struct dns_slot *s = &tc->slots[tc->head];
		ssize_t n;

		if (!s->ans)
			break;
		n = send(tc->io.fd, s->ans + s->sent, s->len - s->sent,
			 MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			break;
		if (n <= 0) {
			tcp_close(tc);
			return;
		}
		tcp_touch(tc);
		s->sent += (size_t)n;
		if (s->sent < s->len)
			break;
		free(s->ans);
		s->ans = NULL;
		tc->head = (tc->head + 1) % DNS_TCP_PIPELINE;
		tc->count--;
		freed = true;
	}
	if (tc->dead)
		return;
	if (freed && !tc->parsing && tc->inlen >= 2) {
		tcp_parse(tc);   /* answers it gives come back through here */
		return;
	}
	if (tc->eof && !tc->count) {
		tcp_close(tc);
		return;
	}
	tcp_update_events(tc);
}

/* Take the complete frames out of tc->in, as long as slots are free. */
static void tcp_parse(struct dns_tcp *tc)
{
	struct dns *d = tc->d;
	size_t off = 0;

	tc->parsing = true;
	while (!tc->dead && tc->count < DNS_TCP_PIPELINE && tc->inlen - off >= 2) {
		size_t flen = dnsmsg_get16(tc->in + off);
		struct dns_client cl = { .tc = tc };

		if (flen == 0 || flen > DNS_QUERY_MAX) {
			d->st.queries++;
			d->st.malformed++;
			audit(d, tc->sandbox, NULL, true, "dropped", "bad_frame");
			tcp_close(tc);
			break;
		}
		if (tc->inlen - off < 2 + flen)
			break;
		cl.slot = (tc->head + tc->count) % DNS_TCP_PIPELINE;
		tc->count++;
		if (!handle_query(d, tc->in + off + 2, flen, tc->who, &cl)) {
			tcp_close(tc);
			break;
		}
		off += 2 + flen;
	}
	tc->parsing = false;
	if (tc->dead)
		return;
	if (off) {
		memmove(tc->in, tc->in + off, tc->inlen - off);
		tc->inlen -= off;
	}
	tcp_flush(tc);
}

static void tcp_cb(struct loop_io *io, uint32_t events)
{
	struct dns_tcp *tc = container_of(io, struct dns_tcp, io);
	struct dns *d = tc->d;

	if (events & EPOLLOUT)
		tcp_flush(tc);
	if (!tc->dead && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !tc->eof &&
	    tc->count < DNS_TCP_PIPELINE) {
		ssize_t n = recv(io->fd, tc->in + tc->inlen, sizeof(tc->in) - tc->inlen,
				 MSG_DONTWAIT);

		if (n > 0) {
			tc->inlen += (size_t)n;
			tcp_touch(tc);
			tcp_parse(tc);
		} else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
			if (n < 0 || tc->inlen) {
				/* reset, or EOF inside a frame: nothing to answer into */
				if (tc->inlen) {
					d->st.queries++;
					d->st.malformed++;
					audit(d, tc->sandbox, NULL, true, "dropped", "truncated_frame");
				}
				tcp_close(tc);
			} else {
				tc->eof = true;  /* half-close: answer what we have, then close */
			}
		}
		if (!tc->dead)
			tcp_flush(tc);
	} else if (!tc->dead && (events & (EPOLLHUP | EPOLLERR)) && !(events & EPOLLOUT)) {
		tcp_close(tc);
	}
	timer_rearm(d);
}

static int sandbox_ok(const char *sandbox)
{
	return sandbox && strlen(sandbox) <= DNS_SANDBOX_ID_MAX;
}

int dns_add_tcp_conn(struct dns *d, int fd, const char *sandbox)
{
	struct dns_tcp *tc;
	int fl, r;

	if (!sandbox_ok(sandbox)) {
		r = -EINVAL;
		goto out_close;
	}
	if (d->ntcp >= d->cfg.max_tcp_conns) {
		r = -EMFILE;
		goto out_close;
	}
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		r = -errno;
		goto out_close;
	}
	tc = calloc(1, sizeof(*tc));
	if (!tc) {
		r = -ENOMEM;
		goto out_close;
	}
	tc->d = d;
	strcpy(tc->sandbox, sandbox);
	strcpy(tc->who, sandbox);
	if (sandbox[0] == '@' && d->hooks.identify &&
	    !d->hooks.identify(d->hooks.opaque, fd, NULL, 0, tc->who, sizeof(tc->who)))
		tc->who[0] = '\0'; /* its queries are refused */
	r = loop_io_add(d->loop, &tc->io, fd, EPOLLIN, tcp_cb);
	if (r < 0)
		goto out_free;
	tc->last_ms = mono_ms();
	tc->prev = d->tcp_tail;
	if (d->tcp_tail)
		d->tcp_tail->next = tc;
	else
		d->tcp_head = tc;
	d->tcp_tail = tc;
	d->ntcp++;
	timer_rearm(d);
	return 0;

out_free:
	free(tc);
out_close:
	close(fd);
	return r;
}

static void tcp_listener_cb(struct loop_io *io, uint32_t events)
{
	struct dns_listener *tl = container_of(io, struct dns_listener, io);

	for (unsigned i = 0; i < DNS_ACCEPT_BATCH && io->registered; i++) {
		int fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0)
			break;
		dns_add_tcp_conn(tl->d, fd, tl->sandbox);   /* closes fd on failure */
	}
}

/* ---- listeners ---- */

static int add_listener(struct dns *d, int fd, const char *sandbox, bool tcp)
{
	struct dns_listener *l;
	int r;

	if (!sandbox_ok(sandbox) || fd < 0)
		return -EINVAL;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->d = d;
	l->tcp = tcp;
	strcpy(l->sandbox, sandbox);
	/* EPOLLEXCLUSIVE: when several workers share the fd, one wakes. */
	r = loop_io_add(d->loop, &l->io, fd, EPOLLIN | EPOLLEXCLUSIVE,
			tcp ? tcp_listener_cb : udp_listener_cb);
	if (r < 0) {
		free(l);
		return r;
	}
	l->next = d->listeners;
	d->listeners = l;
	return 0;
}

int dns_add_udp_listener(struct dns *d, int fd, const char *sandbox)
{
	return add_listener(d, fd, sandbox, false);
}

int dns_add_tcp_listener(struct dns *d, int fd, const char *sandbox)
{
	return add_listener(d, fd, sandbox, true);
}

void dns_remove_listeners(struct dns *d, const char *sandbox)
{
	struct dns_listener **pp = &d->listeners;
	struct dns_pending *p, *pn;
	struct dns_tcp *tc, *tn;

	for (tc = d->tcp_head; tc; tc = tn) {
		tn = tc->next;
		if (strcmp(tc->sandbox, sandbox) == 0)
			tcp_close(tc);
	}
	for (p = d->fifo_head; p; p = pn) {
		pn = p->next;
		if (!p->cl.tc && strcmp(p->cl.ul->sandbox, sandbox) == 0)
			pending_drop(p, "listener_removed");
	}
	while (*pp) {
		struct dns_listener *l = *pp;

		if (strcmp(l->sandbox, sandbox) != 0) {
			pp = &l->next;
			continue;
		}
		*pp = l->next;
		loop_io_del(d->loop, &l->io);
		if (d->freeing)
			free(l);
		else
			loop_free_later(d->loop, l, free);
	}
	timer_rearm(d);
}

/* ---- timer ---- */

static void timer_cb(struct loop_io *io, uint32_t events)
{
	struct dns *d = container_of(io, struct dns, timer_io);
	uint64_t v, now = mono_ms();
	struct dns_tcp *tc;
	unsigned n;

	(void)!read(io->fd, &v, sizeof(v));
	d->armed_ms = UINT64_MAX;       /* fired: one-shot */
	while (d->fifo_head && d->fifo_head->deadline <= now) {
		d->st.timeouts++;
		pending_fail(d->fifo_head, "timeout");
	}
	/* Bounded: each connection is looked at once. */
	for (n = d->ntcp; n && (tc = d->tcp_head) && tc->last_ms + d->cfg.tcp_idle_ms <= now; n--) {
		bool busy = false;

		for (unsigned i = 0; i < DNS_TCP_PIPELINE; i++)
			busy |= tc->slots[i].p != NULL;
		if (busy)
			tcp_touch(tc);  /* its queries time out on their own */
		else
			tcp_close(tc);
	}
	timer_rearm(d);
}

/* ---- lifecycle ---- */

int dns_new(struct loop *l, const struct dns_cfg *cfg, const struct dns_hooks *hooks,
	    struct dns **ret)
{
	struct dns *d;
	int fd, r;

	if ((cfg->resolver.ss_family == AF_INET && cfg->resolver_len < sizeof(struct sockaddr_in)) ||
	    (cfg->resolver.ss_family == AF_INET6 &&
	     cfg->resolver_len < sizeof(struct sockaddr_in6)) ||
	    (cfg->resolver.ss_family != AF_INET && cfg->resolver.ss_family != AF_INET6) ||
	    cfg->resolver_len > sizeof(cfg->resolver))
		return -EINVAL;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->loop = l;
	d->cfg = *cfg;
	if (!d->cfg.timeout_ms)
		d->cfg.timeout_ms = DNS_TIMEOUT_MS_DEFAULT;
	if (!d->cfg.max_inflight)
		d->cfg.max_inflight = DNS_INFLIGHT_DEFAULT;
	if (d->cfg.max_inflight > DNS_INFLIGHT_MAX)
		d->cfg.max_inflight = DNS_INFLIGHT_MAX;
	if (!d->cfg.tcp_idle_ms)
		d->cfg.tcp_idle_ms = DNS_TCP_IDLE_MS_DEFAULT;
	if (!d->cfg.max_tcp_conns)
		d->cfg.max_tcp_conns = DNS_TCP_CONNS_DEFAULT;
	if (hooks)
		d->hooks = *hooks;
	d->armed_ms = UINT64_MAX;
	d->by_id = calloc(65536, sizeof(*d->by_id));
	if (!d->by_id) {
		r = -ENOMEM;
		goto out_free;
	}

	if (!upstream_new(d, &cfg->resolver, cfg->resolver_len)) {
		r = errno ? -errno : -ENOMEM;
		goto out_free_ids;
	}

	fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		goto out_del_udp;
	}
	r = loop_io_add(l, &d->timer_io, fd, EPOLLIN, timer_cb);
	if (r < 0) {
		close(fd);
		goto out_del_udp;
	}
	*ret = d;
	return 0;

out_del_udp:
	upstream_free(d, d->ups);
out_free_ids:
	free(d->by_id);
out_free:
	free(d);
	return r;
}

void dns_free(struct dns *d)
{
	struct dns_listener *l, *ln;

	if (!d)
		return;
	d->freeing = true;
	while (d->tcp_head)
		tcp_close(d->tcp_head);
	while (d->fifo_head)
		pending_drop(d->fifo_head, "shutdown");
	for (l = d->listeners; l; l = ln) {
		ln = l->next;
		loop_io_del(d->loop, &l->io);
		free(l);
	}
	while (d->ups)
		upstream_free(d, d->ups);
	loop_io_del(d->loop, &d->timer_io);
	close(d->timer_io.fd);
	free(d->by_id);
	free(d);
}

void dns_get_stats(struct dns *d, struct dns_stats *ret) { *ret = d->st; }
