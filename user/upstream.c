// SPDX-License-Identifier: MIT
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include "denyset.h"
#include "tls.h"
#include "upstream.h"
#include "netaddr.h"

static atomic_ulong stat_dials, stat_reuses;

void up_stats(unsigned long *ret_dials, unsigned long *ret_reuses)
{
	*ret_dials = atomic_load(&stat_dials);
	*ret_reuses = atomic_load(&stat_reuses);
}

struct up_pool {
	struct loop *loop;
	struct tls *tls;
	struct upconn *idle;    /* most recently used first */
	unsigned nidle, idle_max, idle_timeout_ms;
};

struct up_pool *up_pool_new(struct loop *l, struct tls *tls, unsigned idle_max,
			    unsigned idle_timeout_ms)
{
	struct up_pool *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->loop = l;
	p->tls = tls;
	p->idle_max = idle_max;
	p->idle_timeout_ms = idle_timeout_ms;
	return p;
}

static void up_free(struct upconn *u)
{
	loop_io_del(u->pool->loop, &u->io);
	conn_close(&u->c);
	if (loop_free_later(u->pool->loop, u, free) < 0)
		u->owner = NULL; /* leaked on ENOMEM rather than freed under the batch */
}

static void idle_unlink(struct upconn *u)
{
	struct up_pool *p = u->pool;

	if (u->prev)
		u->prev->next = u->next;
	else
		p->idle = u->next;
	if (u->next)
		u->next->prev = u->prev;
	u->next = u->prev = NULL;
	p->nidle--;
}

void up_pool_free(struct up_pool *p)
{
	if (!p)
		return;
	while (p->idle) {
		struct upconn *u = p->idle;

		idle_unlink(u);
		up_free(u);
	}
	free(p);
}

void up_pool_tick(struct up_pool *p)
{
	uint64_t now = loop_now_ms(p->loop);
	struct upconn *u = p->idle, *next;

	for (; u; u = next) {
		next = u->next;
		if (now - u->idle_since_ms >= p->idle_timeout_ms) {
			idle_unlink(u);
			up_free(u);
		}
	}
}

static bool v4_allowed(uint32_t a)
{
	uint8_t b0 = (uint8_t)(a >> 24), b1 = (uint8_t)(a >> 16);

	if (b0 == 0 || b0 == 127)       /* this host, loopback */
		return false;
	if (b0 == 169 && b1 == 254)     /* link-local: AWS/GCP/Azure/OpenStack metadata */
		return false;
	if (a == 0x646464c8u ||         /* 100.100.100.200: Alibaba metadata */
	    a == 0xa83f8110u ||         /* 168.63.129.16: Azure wire server */
	    a == 0xc00000c0u)           /* 192.0.0.192: Oracle metadata */
		return false;
	if (b0 >= 224)                  /* multicast, reserved, broadcast */
		return false;
	return true;
}

/* IPv4 embedded in IPv6 forms a client may use to reach a v4 address:
 * v4-mapped ::ffff:0:0/96, v4-compatible ::/96, NAT64 64:ff9b::/96 and 6to4
 * 2002::/16 (v4 in bits 16..47). */
static bool v6_embedded_v4(const struct in6_addr *a, uint32_t *ret_v4)
{
	static const unsigned char nat64[12] = { 0x00, 0x64, 0xff, 0x9b };

	if (IN6_IS_ADDR_V4MAPPED(a) || IN6_IS_ADDR_V4COMPAT(a) || !memcmp(a->s6_addr, nat64, 12)) {
		memcpy(ret_v4, &a->s6_addr[12], 4);
		*ret_v4 = ntohl(*ret_v4);
		return true;
	}
	if (a->s6_addr[0] == 0x20 && a->s6_addr[1] == 0x02) {
		memcpy(ret_v4, &a->s6_addr[2], 4);
		*ret_v4 = ntohl(*ret_v4);
		return true;
	}
	return false;
}

bool up_addr_allowed(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return v4_allowed(ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr));
	if (ss->ss_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
		uint32_t v4;

		if (v6_embedded_v4(a, &v4) && !v4_allowed(v4))
			return false;
		if (IN6_IS_ADDR_LOOPBACK(a) || IN6_IS_ADDR_UNSPECIFIED(a) ||
		    IN6_IS_ADDR_LINKLOCAL(a) || IN6_IS_ADDR_MULTICAST(a))
			return false;
		/* fd00:ec2::/32 (AWS IMDS over IPv6), fd20:ce::254 (GCP metadata) */
		if (a->s6_addr[0] == 0xfd && a->s6_addr[1] == 0x00 && a->s6_addr[2] == 0x0e &&
		    a->s6_addr[3] == 0xc2)
			return false;
		{
			static const unsigned char gcp[16] = { 0xfd, 0x20, 0x00, 0xce, [15] = 0x54,
							       [14] = 0x02 };

			if (!memcmp(a->s6_addr, gcp, 16))
				return false;
		}
		return true;
	}
	return false;
}

bool up_dial_allowed(const struct sockaddr_storage *ss, const struct denyset *deny)
{
	return up_addr_allowed(ss) && !(deny && ds_contains(deny, (const struct sockaddr *)ss));
}

static void fail(struct upconn *u, int status, const char *code, const char *fmt, const char *arg)
{
	u->state = UP_FAILED;
	u->fail_status = status;
	u->fail_code = code;
	snprintf(u->fail_detail, sizeof(u->fail_detail), fmt, arg);
	loop_io_del(u->pool->loop, &u->io);
	conn_close(&u->c);
}

bool up_idle_alive(struct upconn *u)
{
	char b;
	ssize_t n = recv(u->c.fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);

	/* An event can be stale: it was queued before the response bytes were
	 * read in this same batch. Only EAGAIN proves the connection is quiet. */
	return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && !conn_pending(&u->c);
}

static void io_cb(struct loop_io *io, uint32_t events)
{
	struct upconn *u = container_of(io, struct upconn, io);

	conn_note_events(&u->c, events);
	if (!u->owner) {
		/* Idle in the pool: the server closed it or sent junk. */
		if (up_idle_alive(u))
			return;
		idle_unlink(u);
		up_free(u);
		return;
	}
	u->notify(u->owner);
}

/* Try addresses from u->ai on; ends in UP_CONNECTING or UP_FAILED. */
static void start_connect(struct upconn *u)
{
	int last_err = u->last_err;
	bool any_allowed = false;

	for (int i = 0; i < u->res.n; i++)
		any_allowed |= up_dial_allowed(&u->res.addr[i], u->deny);
	for (; u->ai < u->res.n; u->ai++) {
		struct sockaddr_storage *ss = &u->res.addr[u->ai];
		socklen_t sl = ss->ss_family == AF_INET ? sizeof(struct sockaddr_in)
							: sizeof(struct sockaddr_in6);
		int fd, one = 1;

		if (!up_dial_allowed(ss, u->deny))
			continue;
		fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			last_err = errno;
			continue;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (connect(fd, (struct sockaddr *)ss, sl) < 0 && errno != EINPROGRESS) {
			last_err = errno;
			close(fd);
			continue;
		}
		netaddr_str(ss, u->addr_text, sizeof(u->addr_text));
		conn_init(&u->c, fd, NULL);
		u->c.handshake_done = false;
		if (loop_io_add(u->pool->loop, &u->io, fd, EPOLLOUT, io_cb) < 0) {
			last_err = errno;
			conn_close(&u->c);
			continue;
		}
		u->state = UP_CONNECTING;
		return;
	}
	if (!any_allowed) {
		fail(u, 403, "upstream_address_denied",
		     "%s resolves only to denied addresses (metadata, loopback, private or "
		     "policy-denied ranges)", u->host);
		return;
	}
	fail(u, 502, "upstream_connect_failed", "%s", strerror(last_err ? last_err : ECONNREFUSED));
}

static void resolved(void *arg)
{
	struct upconn *u = arg;

	if (u->orphan) {
		free(u);
		return;
	}
	if (u->res.err || !u->res.n) {
		fail(u, 502, "upstream_dns_failed", "cannot resolve %s", u->host);
	} else {
		u->ai = 0;
		start_connect(u);
	}
	u->notify(u->owner);
}

struct upconn *up_acquire(struct up_pool *p, const char *key, const char *host, uint16_t port,
			  bool tls, const struct denyset *deny, const struct tls_client *tc,
			  void (*notify)(void *owner), void *owner)
{
	struct upconn *u;
	int r;

	for (u = p->idle; u; u = u->next) {
		if (strcmp(u->key, key) == 0) {
			idle_unlink(u);
			atomic_fetch_add(&stat_reuses, 1);
			u->reused = true;
			u->notify = notify;
			u->owner = owner;
			return u;
		}
	}
	u = calloc(1, sizeof(*u));
	if (!u)
		return NULL;
	atomic_fetch_add(&stat_dials, 1);
	u->pool = p;
	u->c.fd = -1;
	snprintf(u->key, sizeof(u->key), "%s", key);
	snprintf(u->host, sizeof(u->host), "%s", host);
	u->port = port;
	u->tls = tls;
	u->deny = deny;
	u->tc = tc;
	u->notify = notify;
	u->owner = owner;
	u->state = UP_RESOLVING;
	r = resolve_start(p->loop, host, port, &u->res, resolved, u);
	if (r == 0) {
		u->ai = 0;
		start_connect(u);
	} else if (r < 0) {
		fail(u, 502, "upstream_dns_failed", "cannot resolve %s", host);
	}
	return u;
}

void up_progress(struct upconn *u)
{
	int r;

	if (u->state == UP_CONNECTING) {
		int err = 0;
		socklen_t el = sizeof(err);

		if (getsockopt(u->c.fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
			err = errno;
		if (err == EINPROGRESS || err == EALREADY)
			return;
		if (err == 0) {
			/* Writable with no error means connected, unless still pending. */
			struct sockaddr_storage peer;
			socklen_t pl = sizeof(peer);

			if (getpeername(u->c.fd, (struct sockaddr *)&peer, &pl) < 0) {
				if (errno == ENOTCONN)
					return;
				err = errno;
			}
		}
		if (err) {
			loop_io_del(u->pool->loop, &u->io);
			conn_close(&u->c);
			u->last_err = err;
			u->ai++;
			start_connect(u);
			if (u->state == UP_FAILED)
				snprintf(u->fail_detail, sizeof(u->fail_detail),
					 "connect to %s:%u: %s", u->host, u->port, strerror(err));
			return;
		}
		if (!u->tls) {
			u->c.handshake_done = true;
			u->state = UP_READY;
			return;
		}
		SSL *ssl = tls_client_new_in(u->pool->tls, u->tc, u->host);

		if (!ssl) {
			fail(u, 502, "upstream_tls_failed", "cannot set up TLS for %s", u->host);
			return;
		}
		conn_start_tls(&u->c, ssl);
		u->state = UP_HANDSHAKE;
	}
	if (u->state == UP_HANDSHAKE) {
		r = conn_handshake(&u->c);
		if (r == 1) {
			u->state = UP_READY;
		} else if (r < 0) {
			char why[160];

			conn_error(&u->c, why, sizeof(why));
			fail(u, 502, "upstream_tls_failed", "%s", why);
		} else {
			loop_io_set(u->pool->loop, &u->io, u->c.want);
		}
	}
}

void up_set_events(struct upconn *u, uint32_t events)
{
	if (u->state == UP_READY)
		loop_io_set(u->pool->loop, &u->io, events);
	else if (u->state == UP_CONNECTING)
		loop_io_set(u->pool->loop, &u->io, EPOLLOUT);
	else if (u->state == UP_HANDSHAKE)
		loop_io_set(u->pool->loop, &u->io, u->c.want ? u->c.want : EPOLLIN);
}

void up_release(struct upconn *u, bool reusable)
{
	struct up_pool *p;

	if (!u)
		return;
	p = u->pool;
	if (u->state == UP_RESOLVING) {
		/* The resolver still holds u: it frees it when it answers. */
		u->orphan = true;
		return;
	}
	u->owner = NULL;
	u->notify = NULL;
	if (!reusable || u->state != UP_READY || u->c.eof || p->idle_max == 0) {
		if (u->state == UP_FAILED)
			loop_free_later(p->loop, u, free);
		else
			up_free(u);
		return;
	}
	if (p->nidle >= p->idle_max) {
		/* Evict the least recently used (tail). */
		struct upconn *t = p->idle;

		while (t && t->next)
			t = t->next;
		if (t) {
			idle_unlink(t);
			up_free(t);
		}
	}
	u->idle_since_ms = loop_now_ms(p->loop);
	loop_io_set(p->loop, &u->io, EPOLLIN | EPOLLRDHUP);
	u->prev = NULL;
	u->next = p->idle;
	if (p->idle)
		p->idle->prev = u;
	p->idle = u;
	p->nidle++;
}
