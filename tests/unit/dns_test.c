// SPDX-License-Identifier: MIT
/*
 * dns: the forwarder against a fake resolver thread on 127.0.0.1 (UDP and
 * TCP on one port). The resolver answers "N.allowed.test"/"allowed.test"
 * with A 10.0.0.N (1 by default), answers "delay.*" after 300 ms, never
 * answers "slow.test", and for "spoof.test" first sends an answer with a
 * wrong ID and one with a wrong question (A 6.6.6.6), then the real one
 * (A 10.0.0.2). The dns instance runs on its own loop thread; clients are
 * plain blocking sockets with receive timeouts. Loopback only.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "dns.h"
#include "dnsmsg.h"
#include "loop.h"

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- fake resolver ---- */

#define RES_MAX_CONNS 16
#define RES_MAX_DELAYED 64

struct delayed {
	uint64_t due;
	int fd;         /* -1: UDP */
	struct sockaddr_in to;
	uint8_t msg[512];
	size_t len;
};

static struct {
	int udp, tcp;
	uint16_t port;
	pthread_t thread;
	atomic_int stop;
	atomic_int queries;     /* every query seen, UDP and TCP */
	atomic_int tcp_queries;
	int conns[RES_MAX_CONNS];
	struct delayed delayed[RES_MAX_DELAYED];
	int ndelayed;
} R;

static size_t res_answer(const uint8_t *q, size_t qlen, uint16_t id, const char *name_override,
			 const uint8_t ip[4], uint8_t *out)
{
	struct dnsmsg_header h;
	struct dnsmsg_question qq;
	size_t o;

	if (dnsmsg_parse_question(q, qlen, &h, &qq) < 0)
		return 0;
	dnsmsg_put16(out, id);
	dnsmsg_put16(out + 2, 0x8180);
	dnsmsg_put16(out + 4, 1);
	dnsmsg_put16(out + 6, 1);
	dnsmsg_put16(out + 8, 0);
	dnsmsg_put16(out + 10, 0);
	memcpy(out + 12, q + 12, qq.end - 12);
	o = qq.end;
	if (name_override)      /* flip the last letter of the first label */
		out[12 + out[12]] ^= 1;
	memcpy(out + o, "\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04", 12);
	memcpy(out + o + 12, ip, 4);
	return o + 16;
}

static void res_send(int fd, const struct sockaddr_in *to, const uint8_t *m, size_t len,
		     unsigned delay_ms)
{
	if (delay_ms) {
		struct delayed *dl;

		if (R.ndelayed == RES_MAX_DELAYED)
			return;
		dl = &R.delayed[R.ndelayed++];
		dl->due = now_ms() + delay_ms;
		dl->fd = fd;
		if (to)
			dl->to = *to;
		memcpy(dl->msg, m, len);
		dl->len = len;
		return;
	}
	if (fd < 0) {
		(void)!sendto(R.udp, m, len, 0, (const struct sockaddr *)to, sizeof(*to));
	} else {
		uint8_t b[514];

		dnsmsg_put16(b, (uint16_t)len);
		memcpy(b + 2, m, len);
		(void)!send(fd, b, len + 2, MSG_NOSIGNAL);
	}
}

/* fd -1 = UDP reply to `to` */
static void res_handle(int fd, const struct sockaddr_in *to, const uint8_t *q, size_t qlen)
{
	struct dnsmsg_header h;
	struct dnsmsg_question qq;
	uint8_t out[512];
	uint8_t ip[4] = { 10, 0, 0, 1 };
	size_t n;

	if (dnsmsg_parse_question(q, qlen, &h, &qq) < 0)
		return;
	R.queries++;
	if (fd >= 0)
		R.tcp_queries++;
	if (strcmp(qq.name, "slow.test") == 0)
		return;
	if (strcmp(qq.name, "spoof.test") == 0) {
		uint8_t bad[4] = { 6, 6, 6, 6 }, good[4] = { 10, 0, 0, 2 };

		n = res_answer(q, qlen, h.id ^ 1, NULL, bad, out);
		res_send(fd, to, out, n, 0);
		n = res_answer(q, qlen, h.id, "x", bad, out);
		res_send(fd, to, out, n, 0);
		n = res_answer(q, qlen, h.id, NULL, good, out);
		res_send(fd, to, out, n, 50);
		return;
	}
	if (qq.name[0] >= '0' && qq.name[0] <= '9')
		ip[3] = (uint8_t)atoi(qq.name);
	n = res_answer(q, qlen, h.id, NULL, ip, out);
	res_send(fd, to, out, n, strncmp(qq.name, "delay.", 6) == 0 ? 300 : 0);
}

static void *res_main(void *arg)
{
	(void)arg;
	while (!R.stop) {
		struct pollfd pf[2 + RES_MAX_CONNS];
		int n = 0;
		uint64_t now;

		pf[n++] = (struct pollfd){ .fd = R.udp, .events = POLLIN };
		pf[n++] = (struct pollfd){ .fd = R.tcp, .events = POLLIN };
		for (int i = 0; i < RES_MAX_CONNS; i++)
			pf[n++] = (struct pollfd){ .fd = R.conns[i], .events = POLLIN };
		poll(pf, (nfds_t)n, 10);
		if (pf[0].revents & POLLIN) {
			uint8_t b[4096];
			struct sockaddr_in from;
			socklen_t fl = sizeof(from);
			ssize_t r = recvfrom(R.udp, b, sizeof(b), MSG_DONTWAIT,
					     (struct sockaddr *)&from, &fl);

			if (r > 0)
				res_handle(-1, &from, b, (size_t)r);
		}
		if (pf[1].revents & POLLIN) {
			int c = accept(R.tcp, NULL, NULL);

			for (int i = 0; c >= 0 && i < RES_MAX_CONNS; i++) {
				if (R.conns[i] < 0) {
					R.conns[i] = c;
					c = -1;
				}
			}
			if (c >= 0)
				close(c);
		}
		for (int i = 0; i < RES_MAX_CONNS; i++) {
			uint8_t b[2 + 4096];
			size_t got = 0, need = 2;

			if (R.conns[i] < 0 || !(pf[2 + i].revents & (POLLIN | POLLHUP)))
				continue;
			/* one whole frame, blocking: our peer writes it at once */
			while (got < need) {
				ssize_t r = recv(R.conns[i], b + got, need - got, 0);

				if (r <= 0)
					break;
				got += (size_t)r;
				if (got == 2)
					need = 2 + dnsmsg_get16(b);
			}
			if (got < need || need == 2) {
				close(R.conns[i]);
				R.conns[i] = -1;
				continue;
			}
			res_handle(R.conns[i], NULL, b + 2, need - 2);
		}
		now = now_ms();
		for (int i = 0; i < R.ndelayed;) {
			struct delayed *dl = &R.delayed[i];

			if (dl->due > now) {
				i++;
				continue;
			}
			res_send(dl->fd, &dl->to, dl->msg, dl->len, 0);
			R.delayed[i] = R.delayed[--R.ndelayed];
		}
	}
	return NULL;
}

static void res_start(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);
	int one = 1;

	memset(&R, 0, sizeof(R));
	for (int i = 0; i < RES_MAX_CONNS; i++)
		R.conns[i] = -1;
	for (int tries = 0;; tries++) {
		cr_assert_lt(tries, 20, "no free port for UDP+TCP");
		R.udp = socket(AF_INET, SOCK_DGRAM, 0);
		R.tcp = socket(AF_INET, SOCK_STREAM, 0);
		setsockopt(R.tcp, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		a.sin_port = 0;
		cr_assert_eq(bind(R.udp, (struct sockaddr *)&a, sizeof(a)), 0);
		getsockname(R.udp, (struct sockaddr *)&a, &al);
		if (bind(R.tcp, (struct sockaddr *)&a, sizeof(a)) == 0)
			break;
		close(R.udp);
		close(R.tcp);
	}
	cr_assert_eq(listen(R.tcp, 16), 0);
	R.port = ntohs(a.sin_port);
	cr_assert_eq(pthread_create(&R.thread, NULL, res_main, NULL), 0);
}

static void res_stop(void)
{
	R.stop = 1;
	pthread_join(R.thread, NULL);
	for (int i = 0; i < RES_MAX_CONNS; i++)
		if (R.conns[i] >= 0)
			close(R.conns[i]);
	close(R.udp);
	close(R.tcp);
}

/* ---- audit and allowlist hooks ---- */

struct audit_rec {
	char sandbox[32], qname[64], transport[8], decision[16], reason[32];
	unsigned qtype;
};

static struct {
	pthread_mutex_t lock;
	struct audit_rec recs[64];
	int n;
	atomic_int allowed_calls;
} A = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void audit_hook(void *opaque, const struct dns_query_info *q)
{
	struct audit_rec *r;

	cr_assert_eq(opaque, &A);
	pthread_mutex_lock(&A.lock);
	if (A.n < 64) {
		r = &A.recs[A.n++];
		snprintf(r->sandbox, sizeof(r->sandbox), "%s", q->sandbox);
		snprintf(r->qname, sizeof(r->qname), "%s", q->qname);
		snprintf(r->transport, sizeof(r->transport), "%s", q->transport);
		snprintf(r->decision, sizeof(r->decision), "%s", q->decision);
		snprintf(r->reason, sizeof(r->reason), "%s", q->reason);
		r->qtype = q->qtype;
	}
	pthread_mutex_unlock(&A.lock);
}

static int audit_count(void)
{
	int n;

	pthread_mutex_lock(&A.lock);
	n = A.n;
	pthread_mutex_unlock(&A.lock);
	return n;
}

/* Policy: allowed.test and its subdomains, and the test-only names. */
static bool allowed_hook(void *opaque, const char *sandbox, const char *qname)
{
	size_t n = strlen(qname);

	A.allowed_calls++;
	cr_assert_str_eq(sandbox, "sb1");
	if (strcmp(qname, "allowed.test") == 0 || strcmp(qname, "slow.test") == 0 ||
	    strcmp(qname, "spoof.test") == 0)
		return true;
	return n > 13 && strcmp(qname + n - 13, ".allowed.test") == 0;
}

/* ---- the instance under test ---- */

static struct loop *L;
static struct dns *D;
static pthread_t LT;
static int udp_listener, tcp_listener;
static struct sockaddr_in udp_addr, tcp_addr;

static void *loop_main(void *arg)
{
	(void)arg;
	loop_run(L);
	return NULL;
}

/* The resolver hook start() installs (hooks.resolver); NULL: none. */
static bool (*start_resolver)(void *opaque, const char *sandbox, struct sockaddr_storage *ret,
			      socklen_t *ret_len);

static void start(bool allowlist, unsigned timeout_ms, unsigned max_inflight, unsigned idle_ms)
{
	struct dns_cfg cfg = { 0 };
	struct dns_hooks hooks = { .audit = audit_hook, .opaque = &A };
	struct sockaddr_in *ra = (struct sockaddr_in *)&cfg.resolver;
	socklen_t al = sizeof(struct sockaddr_in);

	pthread_mutex_lock(&A.lock);
	A.n = 0;
	A.allowed_calls = 0;
	pthread_mutex_unlock(&A.lock);
	res_start();
	dns_cfg_defaults(&cfg);
	ra->sin_family = AF_INET;
	ra->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ra->sin_port = htons(R.port);
	cfg.resolver_len = sizeof(*ra);
	if (timeout_ms)
		cfg.timeout_ms = timeout_ms;
	if (max_inflight)
		cfg.max_inflight = max_inflight;
	if (idle_ms)
		cfg.tcp_idle_ms = idle_ms;
	if (allowlist)
		hooks.allowed = allowed_hook;
	hooks.resolver = start_resolver;
	cr_assert_eq(loop_new(&L), 0);
	cr_assert_eq(dns_new(L, &cfg, &hooks, &D), 0);

	/* the "sandbox" listeners: blocking fds on purpose (the module must not care) */
	udp_addr = (struct sockaddr_in){ .sin_family = AF_INET,
					 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	udp_listener = socket(AF_INET, SOCK_DGRAM, 0);
	cr_assert_eq(bind(udp_listener, (struct sockaddr *)&udp_addr, sizeof(udp_addr)), 0);
	getsockname(udp_listener, (struct sockaddr *)&udp_addr, &al);
	tcp_addr = udp_addr;
	tcp_addr.sin_port = 0;
	tcp_listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	cr_assert_eq(bind(tcp_listener, (struct sockaddr *)&tcp_addr, sizeof(tcp_addr)), 0);
	al = sizeof(tcp_addr);
	getsockname(tcp_listener, (struct sockaddr *)&tcp_addr, &al);
	cr_assert_eq(listen(tcp_listener, 16), 0);
	cr_assert_eq(dns_add_udp_listener(D, udp_listener, "sb1"), 0);
	cr_assert_eq(dns_add_tcp_listener(D, tcp_listener, "sb1"), 0);
	cr_assert_eq(pthread_create(&LT, NULL, loop_main, NULL), 0);
}

static void stop(void)
{
	if (!L)
		return;
	loop_stop(L);
	pthread_join(LT, NULL);
	dns_free(D);
	loop_free(L);
	L = NULL;
	close(udp_listener);
	close(tcp_listener);
	res_stop();
}

struct stats_op {
	struct dns_stats st;
	sem_t done;
};

static void stats_on_loop(void *arg)
{
	struct stats_op *op = arg;

	dns_get_stats(D, &op->st);
	sem_post(&op->done);
}

static struct dns_stats stats(void)
{
	struct stats_op op;

	sem_init(&op.done, 0, 0);
	cr_assert_eq(loop_post(L, stats_on_loop, &op), 0);
	sem_wait(&op.done);
	sem_destroy(&op.done);
	return op.st;
}

/* ---- client helpers ---- */

static size_t build_query(uint8_t *m, uint16_t id, const char *name, uint16_t qtype, bool rd)
{
	size_t o = 12;

	memset(m, 0, 12);
	dnsmsg_put16(m, id);
	m[2] = rd ? 1 : 0;
	m[5] = 1;
	while (*name) {
		const char *dot = strchr(name, '.');
		size_t l = dot ? (size_t)(dot - name) : strlen(name);

		m[o++] = (uint8_t)l;
		memcpy(m + o, name, l);
		o += l;
		name += l + (dot ? 1 : 0);
	}
	m[o++] = 0;
	dnsmsg_put16(m + o, qtype);
	dnsmsg_put16(m + o + 2, 1);
	return o + 4;
}

static void set_rcvtimeo(int fd, unsigned ms)
{
	struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

static int udp_client(void)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	cr_assert_geq(fd, 0);
	cr_assert_eq(connect(fd, (struct sockaddr *)&udp_addr, sizeof(udp_addr)), 0);
	set_rcvtimeo(fd, 3000);
	return fd;
}

static int tcp_client(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	cr_assert_geq(fd, 0);
	cr_assert_eq(connect(fd, (struct sockaddr *)&tcp_addr, sizeof(tcp_addr)), 0);
	set_rcvtimeo(fd, 3000);
	return fd;
}

/* Read one length-prefixed answer; its length, 0 on EOF, -1 on timeout. */
static ssize_t tcp_read_answer(int fd, uint8_t *b, size_t cap)
{
	size_t got = 0, need = 2;

	while (got < need) {
		ssize_t r = recv(fd, b + got, need - got, 0);

		if (r == 0)
			return 0;
		if (r < 0)
			return -1;
		got += (size_t)r;
		if (got == 2) {
			need = 2 + dnsmsg_get16(b);
			cr_assert_leq(need, cap);
		}
	}
	memmove(b, b + 2, need - 2);
	return (ssize_t)(need - 2);
}

/* Check an A answer for name with id, return the address's last octet. */
static int check_answer(const uint8_t *m, size_t n, uint16_t id, const char *name)
{
	struct dnsmsg_header h;
	struct dnsmsg_question q;

	cr_assert_eq(dnsmsg_parse_question(m, n, &h, &q), 0);
	cr_assert_eq(h.id, id, "id %#x want %#x", h.id, id);
	cr_assert(h.flags & DNSMSG_F_QR);
	cr_assert_str_eq(q.name, name);
	if ((h.flags & DNSMSG_F_RCODE) != 0)
		return -(int)(h.flags & DNSMSG_F_RCODE);
	cr_assert_eq(h.ancount, 1);
	cr_assert_eq(n, q.end + 16);
	cr_assert_eq(m[q.end + 12], 10);
	return m[n - 1];
}

static int rcode_of(const uint8_t *m, size_t n)
{
	struct dnsmsg_header h;

	cr_assert_eq(dnsmsg_parse_header(m, n, &h), 0);
	return h.flags & DNSMSG_F_RCODE;
}

/* ---- tests ---- */

TestSuite(dns, .fini = stop, .timeout = 30);

Test(dns, forward_udp_restores_id)
{
	uint8_t q[512], a[4096];
	size_t n;
	ssize_t r;
	int fd;
	struct dns_stats st;

	start(false, 0, 0, 0);
	fd = udp_client();
	n = build_query(q, 0xabcd, "Allowed.Test", 1, true);
	cr_assert_eq(send(fd, q, n, 0), (ssize_t)n);
	r = recv(fd, a, sizeof(a), 0);
	cr_assert_gt(r, 0, "no answer: %s", strerror(errno));
	cr_assert_eq(check_answer(a, (size_t)r, 0xabcd, "allowed.test"), 1);
	cr_assert_eq(R.queries, 1);
	st = stats();
	cr_assert_eq(st.queries, 1);
	cr_assert_eq(st.forwarded, 1);
	cr_assert_eq(st.nxdomain + st.servfail + st.refused + st.malformed + st.ignored, 0);
	cr_assert_eq(audit_count(), 1);
	cr_assert_str_eq(A.recs[0].decision, "forward");
	cr_assert_str_eq(A.recs[0].qname, "allowed.test");
	cr_assert_str_eq(A.recs[0].transport, "udp");
	cr_assert_str_eq(A.recs[0].sandbox, "sb1");
	cr_assert_eq(A.recs[0].qtype, 1);
	close(fd);
}

Test(dns, concurrent_clients_colliding_ids)
{
	enum { N = 8 };
	int fds[N];
	char name[N][32];

	start(false, 0, 0, 0);
	for (int i = 0; i < N; i++) {
		uint8_t q[512];
		size_t n;

		fds[i] = udp_client();
		/* the same client ID everywhere; two clients ask the same name */
		snprintf(name[i], sizeof(name[i]), "%d.allowed.test", i < 2 ? 1 : i + 1);
		n = build_query(q, 0x4242, name[i], 1, true);
		cr_assert_eq(send(fds[i], q, n, 0), (ssize_t)n);
	}
	for (int i = 0; i < N; i++) {
		uint8_t a[4096];
		ssize_t r = recv(fds[i], a, sizeof(a), 0);

		cr_assert_gt(r, 0, "client %d: no answer", i);
		cr_assert_eq(check_answer(a, (size_t)r, 0x4242, name[i]), i < 2 ? 1 : i + 1);
		/* exactly one answer each */
		set_rcvtimeo(fds[i], 100);
		cr_assert_lt(recv(fds[i], a, sizeof(a), 0), 0);
		close(fds[i]);
	}
	cr_assert_eq(R.queries, N);
	cr_assert_eq(stats().forwarded, N);
	cr_assert_eq(audit_count(), N);
}

Test(dns, allowlist_nxdomain_without_resolver)
{
	uint8_t q[512], a[4096];
	size_t n;
	ssize_t r;
	int fd;
	struct dnsmsg_header h;
	struct dns_stats st;

	start(true, 0, 0, 0);
	fd = udp_client();
	n = build_query(q, 0x1111, "EVIL.test", 28, true);
	cr_assert_eq(send(fd, q, n, 0), (ssize_t)n);
	r = recv(fd, a, sizeof(a), 0);
	cr_assert_gt(r, 0);
	cr_assert_eq((size_t)r, n);
	cr_assert_eq(dnsmsg_parse_header(a, (size_t)r, &h), 0);
	cr_assert_eq(h.id, 0x1111);
	cr_assert(h.flags & DNSMSG_F_QR);
	cr_assert(h.flags & DNSMSG_F_RD);
	cr_assert(h.flags & DNSMSG_F_RA);
	cr_assert_eq(h.flags & DNSMSG_F_RCODE, DNSMSG_NXDOMAIN);
	cr_assert_eq(memcmp(a + 12, q + 12, n - 12), 0, "question echoed verbatim");
	cr_assert_eq(R.queries, 0, "the resolver was asked");

	/* a name under the allowlist goes through */
	n = build_query(q, 0x2222, "7.allowed.test", 1, true);
	cr_assert_eq(send(fd, q, n, 0), (ssize_t)n);
	r = recv(fd, a, sizeof(a), 0);
	cr_assert_gt(r, 0);
	cr_assert_eq(check_answer(a, (size_t)r, 0x2222, "7.allowed.test"), 7);
	cr_assert_eq(R.queries, 1);
	/* suffix trickery: "notallowed.test" is not under allowed.test */
	n = build_query(q, 0x3333, "notallowed.test", 1, false);
	cr_assert_eq(send(fd, q, n, 0), (ssize_t)n);
	r = recv(fd, a, sizeof(a), 0);
	cr_assert_gt(r, 0);
	cr_assert_eq(rcode_of(a, (size_t)r), DNSMSG_NXDOMAIN);
	cr_assert_not(a[2] & 1, "RD copied from the query");
	/* a label holding a dot must not pass for a subdomain of allowed.test:
	 * labels "x.allowed" + "test" read "x\\.allowed.test", which a naive
	 * suffix match would take; escaped names are refused before the hook */
	{
		uint8_t m[64] = { 0x44, 0x44, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 9, 'x', '.',
				  'a', 'l', 'l', 'o', 'w', 'e', 'd', 4, 't', 'e', 's',
				  't', 0, 0, 1, 0, 1 };

		cr_assert_eq(send(fd, m, 32, 0), 32);
		r = recv(fd, a, sizeof(a), 0);
		cr_assert_gt(r, 0);
		cr_assert_eq(rcode_of(a, (size_t)r), DNSMSG_NXDOMAIN);
	}
	cr_assert_eq(R.queries, 1);

	st = stats();
	cr_assert_eq(st.queries, 4);
	cr_assert_eq(st.nxdomain, 3);
	cr_assert_eq(st.forwarded, 1);
	cr_assert_eq(audit_count(), 4);
	cr_assert_str_eq(A.recs[0].decision, "nxdomain");
	cr_assert_str_eq(A.recs[0].qname, "evil.test");
	cr_assert_str_eq(A.recs[0].reason, "not_allowed");
	cr_assert_eq(A.recs[0].qtype, 28);
	cr_assert_str_eq(A.recs[1].decision, "forward");
	cr_assert_str_eq(A.recs[1].qname, "7.allowed.test");
	cr_assert_str_eq(A.recs[2].decision, "nxdomain");
	cr_assert_str_eq(A.recs[3].qname, "x\\.allowed.test");
	cr_assert_str_eq(A.recs[3].reason, "bad_name");
	cr_assert_eq(A.allowed_calls, 3);
	close(fd);
}

Test(dns, timeout_gives_servfail)
{
	uint8_t q[512], a[4096];
	size_t n;
	ssize_t r;
	int fd;
	uint64_t t0, dt;
	struct dns_stats st;

	start(false, 300, 0, 0);
	fd = udp_client();
	n = build_query(q, 0x5151, "slow.test", 1, true);
	t0 = now_ms();
	cr_assert_eq(send(fd, q, n, 0), (ssize_t)n);
	r = recv(fd, a, sizeof(a), 0);
	dt = now_ms() - t0;
	cr_assert_gt(r, 0);
	cr_assert_eq(dnsmsg_get16(a), 0x5151);
	cr_assert_eq(rcode_of(a, (size_t)r), DNSMSG_SERVFAIL);
	cr_assert_geq(dt, 290, "SERVFAIL after %llu ms", (unsigned long long)dt);
	cr_assert_leq(dt, 300 + 700, "SERVFAIL after %llu ms", (unsigned long long)dt);
	st = stats();
	cr_assert_eq(st.timeouts, 1);
	cr_assert_eq(st.servfail, 1);
	cr_assert_eq(st.forwarded, 1);
	cr_assert_eq(audit_count(), 1);
	cr_assert_str_eq(A.recs[0].decision, "servfail");
	cr_assert_str_eq(A.recs[0].reason, "timeout");
	close(fd);
}

Test(dns, spoofed_answers_ignored)
{
	uint8_t q[512], a[4096];
	size_t n;
	ssize_t r;
	int fd;
	struct dns_stats st;

	start(false, 0, 0, 0);
	fd = udp_client();
	n = build_query(q, 0x7777, "spoof.test", 1, true);
	cr_assert_eq(send(fd, q, n, 0), (ssize_t)n);
	r = recv(fd, a, sizeof(a), 0);
	cr_assert_gt(r, 0);
	cr_assert_eq(check_answer(a, (size_t)r, 0x7777, "spoof.test"), 2, "a spoofed answer got through");
	set_rcvtimeo(fd, 200);
	cr_assert_lt(recv(fd, a, sizeof(a), 0), 0, "a second answer");
	st = stats();
	cr_assert_eq(st.ignored, 2);
	cr_assert_eq(st.forwarded, 1);
	cr_assert_eq(audit_count(), 1);
	close(fd);
}

Test(dns, malformed_queries)
{
	uint8_t q[512], a[4096];
	size_t n;
	ssize_t r;
	int fd;
	struct dns_stats st;

	start(false, 0, 0, 0);
	fd = udp_client();
	set_rcvtimeo(fd, 200);
	/* short header: dropped */
	cr_assert_eq(send(fd, "\x12\x34\x01", 3, 0), 3);
	cr_assert_lt(recv(fd, a, sizeof(a), 0), 0);
	/* an answer sent to the listener: dropped, never answered */
	n = build_query(q, 0x1, "allowed.test", 1, true);
	q[2] |= 0x80;
	cr_assert_eq(send(fd, q, n, 0), (ssize_t)n);
	cr_assert_lt(recv(fd, a, sizeof(a), 0), 0);
	/* QDCOUNT 2: FORMERR with the ID */
	n = build_query(q, 0x2, "allowed.test", 1, true);
	q[5] = 2;
	cr_assert_eq(send(fd, q, n, 0), (ssize_t)n);
	r = recv(fd, a, sizeof(a), 0);
	cr_assert_eq(r, 12);
	cr_assert_eq(dnsmsg_get16(a), 2);
	cr_assert_eq(rcode_of(a, 12), DNSMSG_FORMERR);
	/* compression loop in the question: FORMERR */
	memcpy(q, "\x00\x03\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01", 18);
	cr_assert_eq(send(fd, q, 18, 0), 18);
	r = recv(fd, a, sizeof(a), 0);
	cr_assert_eq(r, 12);
	cr_assert_eq(rcode_of(a, 12), DNSMSG_FORMERR);
	/* oversized query: FORMERR */
	{
		static uint8_t big[5000];

		n = build_query(big, 0x4, "allowed.test", 1, true);
		cr_assert_eq(send(fd, big, sizeof(big), 0), (ssize_t)sizeof(big));
		r = recv(fd, a, sizeof(a), 0);
		cr_assert_eq(r, 12);
		cr_assert_eq(rcode_of(a, 12), DNSMSG_FORMERR);
	}
	/* opcode NOTIFY: REFUSED */
	n = build_query(q, 0x5, "allowed.test", 6, false);
	q[2] = 4 << 3;
	cr_assert_eq(send(fd, q, n, 0), (ssize_t)n);
	r = recv(fd, a, sizeof(a), 0);
	cr_assert_gt(r, 0);
	cr_assert_eq(rcode_of(a, (size_t)r), DNSMSG_REFUSED);
	/* still serving */
	set_rcvtimeo(fd, 3000);
	n = build_query(q, 0x6, "allowed.test", 1, true);
	cr_assert_eq(send(fd, q, n, 0), (ssize_t)n);
	r = recv(fd, a, sizeof(a), 0);
	cr_assert_eq(check_answer(a, (size_t)r, 0x6, "allowed.test"), 1);
	cr_assert_eq(R.queries, 1);
	st = stats();
	cr_assert_eq(st.queries, 7);
	cr_assert_eq(st.malformed, 5);
	cr_assert_eq(st.refused, 1);
	cr_assert_eq(st.forwarded, 1);
	cr_assert_eq(audit_count(), 7);
	cr_assert_str_eq(A.recs[0].decision, "dropped");
	cr_assert_str_eq(A.recs[1].decision, "dropped");
	cr_assert_str_eq(A.recs[2].decision, "formerr");
	cr_assert_str_eq(A.recs[5].decision, "refused");
	close(fd);
}

Test(dns, max_inflight_refused)
{
	uint8_t q[512], a[4096];
	size_t n;
	ssize_t r;
	int fd;

	start(false, 400, 2, 0);
	fd = udp_client();
	for (uint16_t id = 1; id <= 3; id++) {
		n = build_query(q, id, "slow.test", 1, true);
		cr_assert_eq(send(fd, q, n, 0), (ssize_t)n);
	}
	/* the third is refused at once, the first two time out later */
	r = recv(fd, a, sizeof(a), 0);
	cr_assert_gt(r, 0);
	cr_assert_eq(dnsmsg_get16(a), 3);
	cr_assert_eq(rcode_of(a, (size_t)r), DNSMSG_REFUSED);
	for (int i = 0; i < 2; i++) {
		r = recv(fd, a, sizeof(a), 0);
		cr_assert_gt(r, 0);
		cr_assert_eq(rcode_of(a, (size_t)r), DNSMSG_SERVFAIL);
	}
	cr_assert_eq(stats().refused, 1);
	cr_assert_eq(stats().timeouts, 2);
	close(fd);
}

Test(dns, tcp_pipelined_in_order)
{
	uint8_t b[1024], a[4096];
	size_t n1, n2;
	ssize_t r;
	int fd;

	start(false, 0, 0, 0);
	fd = tcp_client();
	/* the first answer comes 300 ms after the second: order must hold */
	n1 = build_query(b + 2, 0x0101, "delay.allowed.test", 1, true);
	dnsmsg_put16(b, (uint16_t)n1);
	n2 = build_query(b + 2 + n1 + 2, 0x0202, "9.allowed.test", 1, true);
	dnsmsg_put16(b + 2 + n1, (uint16_t)n2);
	cr_assert_eq(send(fd, b, n1 + n2 + 4, 0), (ssize_t)(n1 + n2 + 4));
	r = tcp_read_answer(fd, a, sizeof(a));
	cr_assert_gt(r, 0);
	cr_assert_eq(check_answer(a, (size_t)r, 0x0101, "delay.allowed.test"), 1);
	r = tcp_read_answer(fd, a, sizeof(a));
	cr_assert_gt(r, 0);
	cr_assert_eq(check_answer(a, (size_t)r, 0x0202, "9.allowed.test"), 9);
	cr_assert_eq(R.tcp_queries, 2, "TCP queries go upstream over TCP");
	cr_assert_eq(audit_count(), 2);
	cr_assert_str_eq(A.recs[0].transport, "tcp");
	close(fd);
}

Test(dns, tcp_length_prefix_split)
{
	uint8_t b[1024], a[4096];
	size_t n;
	ssize_t r;
	int fd, one = 1;

	start(false, 0, 0, 0);
	fd = tcp_client();
	setsockopt(fd, IPPROTO_TCP, 1 /* TCP_NODELAY */, &one, sizeof(one));
	n = build_query(b + 2, 0x3131, "5.allowed.test", 1, true);
	dnsmsg_put16(b, (uint16_t)n);
	cr_assert_eq(send(fd, b, 1, 0), 1);
	usleep(50000);
	cr_assert_eq(send(fd, b + 1, 6, 0), 6);
	usleep(50000);
	cr_assert_eq(send(fd, b + 7, n + 2 - 7, 0), (ssize_t)(n + 2 - 7));
	r = tcp_read_answer(fd, a, sizeof(a));
	cr_assert_gt(r, 0);
	cr_assert_eq(check_answer(a, (size_t)r, 0x3131, "5.allowed.test"), 5);
	/* the connection stays usable */
	n = build_query(b + 2, 0x3232, "6.allowed.test", 1, true);
	dnsmsg_put16(b, (uint16_t)n);
	cr_assert_eq(send(fd, b, n + 2, 0), (ssize_t)(n + 2));
	r = tcp_read_answer(fd, a, sizeof(a));
	cr_assert_eq(check_answer(a, (size_t)r, 0x3232, "6.allowed.test"), 6);
	close(fd);
}

Test(dns, tcp_allowlist_timeout_and_many_pipelined)
{
	enum { N = 20 };        /* more than DNS_TCP_PIPELINE */
	uint8_t b[4096], a[4096];
	size_t o = 0;
	ssize_t r;
	int fd;
	struct dns_stats st;

	start(true, 300, 0, 0);
	fd = tcp_client();
	for (int i = 0; i < N; i++) {
		char name[32];
		size_t n;

		if (i == 3)
			snprintf(name, sizeof(name), "slow.test");
		else if (i % 2)
			snprintf(name, sizeof(name), "evil%d.test", i);
		else
			snprintf(name, sizeof(name), "%d.allowed.test", i + 1);
		n = build_query(b + o + 2, (uint16_t)(0x100 + i), name, 1, true);
		dnsmsg_put16(b + o, (uint16_t)n);
		o += n + 2;
	}
	cr_assert_eq(send(fd, b, o, 0), (ssize_t)o);
	for (int i = 0; i < N; i++) {
		r = tcp_read_answer(fd, a, sizeof(a));
		cr_assert_gt(r, 0, "answer %d", i);
		cr_assert_eq(dnsmsg_get16(a), 0x100 + i, "answer %d out of order", i);
		if (i == 3)
			cr_assert_eq(rcode_of(a, (size_t)r), DNSMSG_SERVFAIL);
		else if (i % 2)
			cr_assert_eq(rcode_of(a, (size_t)r), DNSMSG_NXDOMAIN);
		else
			cr_assert_eq(a[r - 1], i + 1);
	}
	st = stats();
	cr_assert_eq(st.queries, N);
	cr_assert_eq(st.nxdomain, N / 2 - 1);
	cr_assert_eq(st.servfail, 1);
	cr_assert_eq(st.timeouts, 1);
	cr_assert_eq(st.forwarded, N / 2 + 1);
	cr_assert_eq(R.tcp_queries, N / 2 + 1);
	cr_assert_eq(audit_count(), N);
	close(fd);
}

Test(dns, tcp_idle_close_and_bad_frame)
{
	uint8_t b[1024], a[4096];
	size_t n;
	ssize_t r;
	int fd;
	uint64_t t0, dt;

	start(false, 0, 0, 300);
	/* idle from the start */
	fd = tcp_client();
	t0 = now_ms();
	cr_assert_eq(recv(fd, a, sizeof(a), 0), 0, "not closed");
	dt = now_ms() - t0;
	cr_assert_geq(dt, 250);
	cr_assert_leq(dt, 1500);
	close(fd);
	/* idle after an answer */
	fd = tcp_client();
	n = build_query(b + 2, 0x4141, "allowed.test", 1, true);
	dnsmsg_put16(b, (uint16_t)n);
	cr_assert_eq(send(fd, b, n + 2, 0), (ssize_t)(n + 2));
	r = tcp_read_answer(fd, a, sizeof(a));
	cr_assert_gt(r, 0);
	cr_assert_eq(recv(fd, a, sizeof(a), 0), 0, "not closed");
	close(fd);
	/* zero-length frame: closed at once */
	fd = tcp_client();
	cr_assert_eq(send(fd, "\0\0", 2, 0), 2);
	t0 = now_ms();
	cr_assert_eq(recv(fd, a, sizeof(a), 0), 0);
	cr_assert_lt(now_ms() - t0, 200);
	close(fd);
	/* half-close after a query: still answered */
	fd = tcp_client();
	n = build_query(b + 2, 0x4242, "3.allowed.test", 1, true);
	dnsmsg_put16(b, (uint16_t)n);
	cr_assert_eq(send(fd, b, n + 2, 0), (ssize_t)(n + 2));
	shutdown(fd, SHUT_WR);
	r = tcp_read_answer(fd, a, sizeof(a));
	cr_assert_eq(check_answer(a, (size_t)r, 0x4242, "3.allowed.test"), 3);
	cr_assert_eq(recv(fd, a, sizeof(a), 0), 0);
	close(fd);
	cr_assert_eq(stats().malformed, 1);
}

static void remove_on_loop(void *arg)
{
	dns_remove_listeners(D, "sb1");
	sem_post(arg);
}

Test(dns, remove_listeners_stops_serving)
{
	uint8_t q[512], a[4096];
	size_t n;
	int fd, tfd;
	sem_t done;

	start(false, 5000, 0, 0);
	fd = udp_client();
	tfd = tcp_client();
	n = build_query(q, 0x9999, "slow.test", 1, true);
	cr_assert_eq(send(fd, q, n, 0), (ssize_t)n);
	while (stats().forwarded < 1)
		usleep(10000);
	sem_init(&done, 0, 0);
	cr_assert_eq(loop_post(L, remove_on_loop, &done), 0);
	sem_wait(&done);
	sem_destroy(&done);
	/* the TCP connection is closed, the query in flight dropped */
	cr_assert_eq(recv(tfd, a, sizeof(a), 0), 0);
	cr_assert_eq(audit_count(), 1);
	cr_assert_str_eq(A.recs[0].decision, "dropped");
	cr_assert_str_eq(A.recs[0].reason, "listener_removed");
	/* nobody reads the listener any more */
	set_rcvtimeo(fd, 300);
	n = build_query(q, 0x9998, "allowed.test", 1, true);
	cr_assert_eq(send(fd, q, n, 0), (ssize_t)n);
	cr_assert_lt(recv(fd, a, sizeof(a), 0), 0);
	cr_assert_eq(stats().queries, 1);
	close(fd);
	close(tfd);
}

static int v6_fd;

static void add_v6_on_loop(void *arg)
{
	cr_assert_eq(dns_add_udp_listener(D, v6_fd, "sb1"), 0);
	sem_post(arg);
}

Test(dns, ipv6_listener)
{
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	socklen_t al = sizeof(a6);
	uint8_t q[512], a[4096];
	size_t n;
	ssize_t r;
	sem_t done;
	int fd;

	start(true, 0, 0, 0);
	v6_fd = socket(AF_INET6, SOCK_DGRAM, 0);
	cr_assert_eq(bind(v6_fd, (struct sockaddr *)&a6, sizeof(a6)), 0);
	getsockname(v6_fd, (struct sockaddr *)&a6, &al);
	sem_init(&done, 0, 0);
	cr_assert_eq(loop_post(L, add_v6_on_loop, &done), 0);
	sem_wait(&done);
	sem_destroy(&done);
	fd = socket(AF_INET6, SOCK_DGRAM, 0);
	cr_assert_eq(connect(fd, (struct sockaddr *)&a6, sizeof(a6)), 0);
	set_rcvtimeo(fd, 3000);
	n = build_query(q, 0x6666, "4.allowed.test", 28, true);
	cr_assert_eq(send(fd, q, n, 0), (ssize_t)n);
	r = recv(fd, a, sizeof(a), 0);
	cr_assert_gt(r, 0);
	cr_assert_eq(check_answer(a, (size_t)r, 0x6666, "4.allowed.test"), 4);
	n = build_query(q, 0x6667, "evil.test", 1, true);
	cr_assert_eq(send(fd, q, n, 0), (ssize_t)n);
	r = recv(fd, a, sizeof(a), 0);
	cr_assert_gt(r, 0);
	cr_assert_eq(rcode_of(a, (size_t)r), DNSMSG_NXDOMAIN);
	close(fd);
	stop();         /* unregisters v6_fd before it is closed */
	close(v6_fd);
}

/* ---- per-sandbox resolvers ----
 *
 * R (above) is R1, the default cfg.resolver. Sandboxes get their own
 * listeners ("a", "b", "s0"...) next to start()'s "sb1"; start_resolver
 * names their resolvers. The other resolvers are plain sockets on
 * 127.0.0.1 that the test thread reads and answers itself. */

/* A resolver the test drives: UDP and TCP on one loopback port. */
struct tres {
	int udp, tcp;
	struct sockaddr_in addr;
};

static void tres_open(struct tres *t)
{
	socklen_t al = sizeof(t->addr);
	int one = 1;

	for (int tries = 0;; tries++) {
		cr_assert_lt(tries, 20, "no free port for UDP+TCP");
		t->addr = (struct sockaddr_in){ .sin_family = AF_INET,
						.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		t->udp = socket(AF_INET, SOCK_DGRAM, 0);
		t->tcp = socket(AF_INET, SOCK_STREAM, 0);
		cr_assert(t->udp >= 0 && t->tcp >= 0);
		setsockopt(t->tcp, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		cr_assert_eq(bind(t->udp, (struct sockaddr *)&t->addr, sizeof(t->addr)), 0);
		getsockname(t->udp, (struct sockaddr *)&t->addr, &al);
		if (bind(t->tcp, (struct sockaddr *)&t->addr, sizeof(t->addr)) == 0)
			break;
		close(t->udp);
		close(t->tcp);
	}
	cr_assert_eq(listen(t->tcp, 16), 0);
}

static void tres_close(struct tres *t)
{
	close(t->udp);
	close(t->tcp);
}

/* One datagram on fd within ms: its length and source, or -1. */
static ssize_t udp_wait(int fd, uint8_t *b, size_t cap, struct sockaddr_in *from, unsigned ms)
{
	struct pollfd pf = { .fd = fd, .events = POLLIN };
	socklen_t fl = sizeof(*from);

	if (poll(&pf, 1, (int)ms) != 1)
		return -1;
	return recvfrom(fd, b, cap, MSG_DONTWAIT, (struct sockaddr *)from, &fl);
}

/* Read and count the datagrams waiting on fd. */
static int udp_drain(int fd)
{
	uint8_t b[4096];
	int n = 0;

	while (recv(fd, b, sizeof(b), MSG_DONTWAIT) >= 0)
		n++;
	return n;
}

/* A connection on listening socket fd within ms, or -1. */
static int tcp_accept_wait(int fd, unsigned ms)
{
	struct pollfd pf = { .fd = fd, .events = POLLIN };
	int c;

	if (poll(&pf, 1, (int)ms) != 1)
		return -1;
	c = accept(fd, NULL, NULL);
	if (c >= 0)
		set_rcvtimeo(c, 3000);
	return c;
}

/* The UDP sockets of this process connected to a: the dns module's
 * upstream sockets (nothing else here connects to a resolver). The local
 * port of one in *ret_port. */
static int upstream_socks(const struct sockaddr_in *a, uint16_t *ret_port)
{
	DIR *dir = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	cr_assert_not_null(dir);
	while ((e = readdir(dir))) {
		struct sockaddr_in p, l;
		socklen_t pl = sizeof(p), ll = sizeof(l), tl = sizeof(int);
		int fd = atoi(e->d_name), type;

		if (e->d_name[0] < '0' || e->d_name[0] > '9' || fd == dirfd(dir))
			continue;
		if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != SOCK_DGRAM)
			continue;
		if (getpeername(fd, (struct sockaddr *)&p, &pl) < 0 || p.sin_family != AF_INET ||
		    p.sin_addr.s_addr != a->sin_addr.s_addr || p.sin_port != a->sin_port)
			continue;
		n++;
		if (ret_port && getsockname(fd, (struct sockaddr *)&l, &ll) == 0)
			*ret_port = ntohs(l.sin_port);
	}
	closedir(dir);
	return n;
}

static struct sockaddr_in r1_addr(void)
{
	return (struct sockaddr_in){ .sin_family = AF_INET,
				     .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
				     .sin_port = htons(R.port) };
}

struct listener_op {
	int fd;
	const char *sandbox;
	bool tcp;
	int r;
	sem_t done;
};

static void add_listener_on_loop(void *arg)
{
	struct listener_op *op = arg;

	op->r = op->tcp ? dns_add_tcp_listener(D, op->fd, op->sandbox) :
			  dns_add_udp_listener(D, op->fd, op->sandbox);
	sem_post(&op->done);
}

/* A listener on 127.0.0.1 for sandbox, served by D (running); its fd (close
 * it after stop()) and address. */
static int add_sandbox_listener(const char *sandbox, bool tcp, struct sockaddr_in *ret)
{
	struct listener_op op = { .sandbox = sandbox, .tcp = tcp };
	socklen_t al = sizeof(*ret);
	struct timespec ts;

	*ret = (struct sockaddr_in){ .sin_family = AF_INET,
				     .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	op.fd = socket(AF_INET, tcp ? SOCK_STREAM | SOCK_NONBLOCK : SOCK_DGRAM, 0);
	cr_assert_geq(op.fd, 0);
	cr_assert_eq(bind(op.fd, (struct sockaddr *)ret, sizeof(*ret)), 0);
	getsockname(op.fd, (struct sockaddr *)ret, &al);
	if (tcp)
		cr_assert_eq(listen(op.fd, 16), 0);
	sem_init(&op.done, 0, 0);
	cr_assert_eq(loop_post(L, add_listener_on_loop, &op), 0);
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 3;
	cr_assert_eq(sem_timedwait(&op.done, &ts), 0, "the loop did not run the post");
	sem_destroy(&op.done);
	cr_assert_eq(op.r, 0, "listener for %s: %d", sandbox, op.r);
	return op.fd;
}

static int udp_client_to(const struct sockaddr_in *a, unsigned rcvtimeo_ms)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	cr_assert_geq(fd, 0);
	cr_assert_eq(connect(fd, (const struct sockaddr *)a, sizeof(*a)), 0);
	set_rcvtimeo(fd, rcvtimeo_ms);
	return fd;
}

static int tcp_client_to(const struct sockaddr_in *a)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	cr_assert_geq(fd, 0);
	cr_assert_eq(connect(fd, (const struct sockaddr *)a, sizeof(*a)), 0);
	set_rcvtimeo(fd, 3000);
	return fd;
}

/* Until D's ignored counter reaches want, at most ms. */
static bool wait_ignored(uint64_t want, unsigned ms)
{
	uint64_t end = now_ms() + ms;

	do {
		if (stats().ignored >= want)
			return true;
		usleep(5000);
	} while (now_ms() < end);
	return false;
}

static const struct audit_rec *audit_find(const char *sandbox)
{
	for (int i = 0; i < audit_count(); i++)
		if (strcmp(A.recs[i].sandbox, sandbox) == 0)
			return &A.recs[i];
	return NULL;
}

/* "a" has its own resolver (R2), everyone else uses the default (R1). */
static struct tres R2;
static atomic_int resolver_calls;

static bool resolver_ab(void *opaque, const char *sandbox, struct sockaddr_storage *ret,
			socklen_t *ret_len)
{
	cr_assert_eq(opaque, &A);
	resolver_calls++;
	if (strcmp(sandbox, "a") != 0)
		return false;
	memcpy(ret, &R2.addr, sizeof(R2.addr));
	*ret_len = sizeof(R2.addr);
	return true;
}

static void start_ab(void)
{
	tres_open(&R2);
	resolver_calls = 0;
	start_resolver = resolver_ab;
	start(false, 0, 0, 0);
}

Test(dns, sandbox_resolver_udp)
{
	uint8_t q[512], a[4096], fq[4096], out[512];
	uint8_t ip222[4] = { 10, 0, 0, 222 };
	struct sockaddr_in la, lb, from, from2, r1;
	struct dnsmsg_header h;
	struct dnsmsg_question qq;
	struct dns_stats st;
	const struct audit_rec *rec;
	int la_fd, lb_fd, ca, cb;
	size_t n;
	ssize_t r;

	start_ab();
	r1 = r1_addr();
	la_fd = add_sandbox_listener("a", false, &la);
	lb_fd = add_sandbox_listener("b", false, &lb);
	ca = udp_client_to(&la, 3000);
	cb = udp_client_to(&lb, 3000);

	/* "a": to R2, whose answer reaches the client with the client's ID */
	n = build_query(q, 0xa001, "7.allowed.test", 1, true);
	cr_assert_eq(send(ca, q, n, 0), (ssize_t)n);
	r = udp_wait(R2.udp, fq, sizeof(fq), &from, 3000);
	cr_assert_gt(r, 0, "R2 did not get sandbox a's query");
	cr_assert_eq(dnsmsg_parse_question(fq, (size_t)r, &h, &qq), 0);
	cr_assert_str_eq(qq.name, "7.allowed.test");
	n = res_answer(fq, (size_t)r, h.id, NULL, ip222, out);
	cr_assert_eq(sendto(R2.udp, out, n, 0, (struct sockaddr *)&from, sizeof(from)), (ssize_t)n);
	r = recv(ca, a, sizeof(a), 0);
	cr_assert_gt(r, 0, "R2's answer did not reach the client");
	cr_assert_eq(check_answer(a, (size_t)r, 0xa001, "7.allowed.test"), 222);

	/* "b": to R1 (R answers 10.0.0.8 itself) */
	n = build_query(q, 0xb001, "8.allowed.test", 1, true);
	cr_assert_eq(send(cb, q, n, 0), (ssize_t)n);
	r = recv(cb, a, sizeof(a), 0);
	cr_assert_gt(r, 0, "no answer for sandbox b");
	cr_assert_eq(check_answer(a, (size_t)r, 0xb001, "8.allowed.test"), 8);
	/* R saw b's query only (a's, sent first, would have been counted first) */
	cr_assert_eq(R.queries, 1, "R1 saw %d queries", (int)R.queries);
	cr_assert_lt(udp_wait(R2.udp, fq, sizeof(fq), &from2, 200), 0, "R2 got a second query");

	/* a second query of "a" goes out on the same socket: one per resolver */
	n = build_query(q, 0xa002, "9.allowed.test", 1, true);
	cr_assert_eq(send(ca, q, n, 0), (ssize_t)n);
	r = udp_wait(R2.udp, fq, sizeof(fq), &from2, 3000);
	cr_assert_gt(r, 0, "R2 did not get a's second query");
	cr_assert_eq(from2.sin_port, from.sin_port, "a new socket for the same resolver");
	cr_assert_eq(dnsmsg_parse_question(fq, (size_t)r, &h, &qq), 0);
	n = res_answer(fq, (size_t)r, h.id, NULL, ip222, out);
	cr_assert_eq(sendto(R2.udp, out, n, 0, (struct sockaddr *)&from2, sizeof(from2)), (ssize_t)n);
	r = recv(ca, a, sizeof(a), 0);
	cr_assert_gt(r, 0);
	cr_assert_eq(check_answer(a, (size_t)r, 0xa002, "9.allowed.test"), 222);
	cr_assert_eq(upstream_socks(&r1, NULL), 1);
	cr_assert_eq(upstream_socks(&R2.addr, NULL), 1);
	cr_assert_eq(R.queries, 1);
	cr_assert_eq(resolver_calls, 3);

	st = stats();
	cr_assert_eq(st.queries, 3);
	cr_assert_eq(st.forwarded, 3);
	cr_assert_eq(st.servfail + st.ignored, 0);
	cr_assert_eq(audit_count(), 3);
	rec = audit_find("a");
	cr_assert_not_null(rec);
	cr_assert_str_eq(rec->decision, "forward");
	rec = audit_find("b");
	cr_assert_not_null(rec);
	cr_assert_str_eq(rec->decision, "forward");
	close(ca);
	close(cb);
	stop();
	close(la_fd);
	close(lb_fd);
	tres_close(&R2);
}

Test(dns, sandbox_resolver_tcp)
{
	uint8_t b[1024], a[4096], fq[4096], out[514];
	uint8_t ip223[4] = { 10, 0, 0, 223 };
	struct sockaddr_in la, lb, from;
	struct dnsmsg_header h;
	struct dnsmsg_question qq;
	int la_fd, lb_fd, ca, cb, up;
	size_t n;
	ssize_t r;

	start_ab();
	la_fd = add_sandbox_listener("a", true, &la);
	lb_fd = add_sandbox_listener("b", true, &lb);

	/* "a" over TCP: a connection to R2's TCP port */
	ca = tcp_client_to(&la);
	n = build_query(b + 2, 0xa101, "3.allowed.test", 1, true);
	dnsmsg_put16(b, (uint16_t)n);
	cr_assert_eq(send(ca, b, n + 2, 0), (ssize_t)(n + 2));
	up = tcp_accept_wait(R2.tcp, 3000);
	cr_assert_geq(up, 0, "no TCP connection to R2 for sandbox a");
	r = tcp_read_answer(up, fq, sizeof(fq));
	cr_assert_gt(r, 0, "no query on the connection to R2");
	cr_assert_eq(dnsmsg_parse_question(fq, (size_t)r, &h, &qq), 0);
	cr_assert_str_eq(qq.name, "3.allowed.test");
	n = res_answer(fq, (size_t)r, h.id, NULL, ip223, out + 2);
	dnsmsg_put16(out, (uint16_t)n);
	cr_assert_eq(send(up, out, n + 2, MSG_NOSIGNAL), (ssize_t)(n + 2));
	r = tcp_read_answer(ca, a, sizeof(a));
	cr_assert_gt(r, 0, "R2's TCP answer did not reach the client");
	cr_assert_eq(check_answer(a, (size_t)r, 0xa101, "3.allowed.test"), 223);

	/* "b" over TCP: R1 */
	cb = tcp_client_to(&lb);
	n = build_query(b + 2, 0xb101, "4.allowed.test", 1, true);
	dnsmsg_put16(b, (uint16_t)n);
	cr_assert_eq(send(cb, b, n + 2, 0), (ssize_t)(n + 2));
	r = tcp_read_answer(cb, a, sizeof(a));
	cr_assert_gt(r, 0, "no answer for sandbox b");
	cr_assert_eq(check_answer(a, (size_t)r, 0xb101, "4.allowed.test"), 4);
	cr_assert_eq(R.tcp_queries, 1, "R1 saw %d TCP queries", (int)R.tcp_queries);
	cr_assert_eq(R.queries, 1);
	cr_assert_lt(tcp_accept_wait(R2.tcp, 200), 0, "a second connection to R2");
	cr_assert_lt(udp_wait(R2.udp, fq, sizeof(fq), &from, 0), 0, "R2 got a UDP query");
	cr_assert_eq(stats().forwarded, 2);
	cr_assert_eq(audit_count(), 2);
	cr_assert_str_eq(audit_find("a")->transport, "tcp");
	cr_assert_str_eq(audit_find("a")->decision, "forward");
	close(up);
	close(ca);
	close(cb);
	stop();
	close(la_fd);
	close(lb_fd);
	tres_close(&R2);
}

Test(dns, sandbox_resolver_answer_from_other_resolver_ignored)
{
	uint8_t q[512], a[4096], fq[4096], out[512];
	uint8_t bad[4] = { 6, 6, 6, 6 }, good[4] = { 10, 0, 0, 5 };
	struct sockaddr_in la, from, r1, dflt;
	struct dnsmsg_header h;
	struct dns_stats st;
	uint16_t dport = 0;
	int la_fd, ca;
	size_t n, fqlen;
	ssize_t r;

	start_ab();
	r1 = r1_addr();
	la_fd = add_sandbox_listener("a", false, &la);
	ca = udp_client_to(&la, 3000);
	n = build_query(q, 0xa201, "5.allowed.test", 1, true);
	cr_assert_eq(send(ca, q, n, 0), (ssize_t)n);
	r = udp_wait(R2.udp, fq, sizeof(fq), &from, 3000);
	cr_assert_gt(r, 0, "R2 did not get sandbox a's query");
	fqlen = (size_t)r;
	cr_assert_eq(dnsmsg_parse_header(fq, fqlen, &h), 0);

	/* R1 answers it (right ID, right question) to the default socket,
	 * which is connected to R1 and so takes it */
	cr_assert_eq(upstream_socks(&r1, &dport), 1);
	dflt = (struct sockaddr_in){ .sin_family = AF_INET,
				     .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
				     .sin_port = htons(dport) };
	n = res_answer(fq, fqlen, h.id, NULL, bad, out);
	cr_assert_eq(sendto(R.udp, out, n, 0, (struct sockaddr *)&dflt, sizeof(dflt)), (ssize_t)n);
	set_rcvtimeo(ca, 300);
	r = recv(ca, a, sizeof(a), 0);
	cr_assert_lt(r, 0, "R1's answer to a query sent to R2 reached the client (last octet %d)",
		     r > 0 ? a[r - 1] : -1);
	cr_assert(wait_ignored(1, 2000), "the answer from R1 was not counted as ignored");

	/* R2's own answer still gets through */
	cr_assert_eq(udp_drain(R2.udp), 0, "the query went to R2 twice");
	n = res_answer(fq, fqlen, h.id, NULL, good, out);
	cr_assert_eq(sendto(R2.udp, out, n, 0, (struct sockaddr *)&from, sizeof(from)), (ssize_t)n);
	set_rcvtimeo(ca, 3000);
	r = recv(ca, a, sizeof(a), 0);
	cr_assert_gt(r, 0, "R2's answer did not reach the client");
	cr_assert_eq(check_answer(a, (size_t)r, 0xa201, "5.allowed.test"), 5);
	st = stats();
	cr_assert_eq(st.ignored, 1);
	cr_assert_eq(st.forwarded, 1);
	cr_assert_eq(st.servfail, 0);
	cr_assert_eq(R.queries, 0);
	cr_assert_eq(audit_count(), 1);
	cr_assert_str_eq(A.recs[0].decision, "forward");
	close(ca);
	stop();
	close(la_fd);
	tres_close(&R2);
}

/* Sandboxes "s0".."s40", each with its own resolver: a socket on
 * 127.0.0.1 that nobody answers from, so their queries stay in flight. */
enum { NSB = DNS_RESOLVERS_MAX + 9 };
static struct sockaddr_in many_res[NSB];

static bool resolver_many(void *opaque, const char *sandbox, struct sockaddr_storage *ret,
			  socklen_t *ret_len)
{
	int i;

	cr_assert_eq(opaque, &A);
	if (sandbox[0] != 's' || sandbox[1] < '0' || sandbox[1] > '9')
		return false;
	i = atoi(sandbox + 1);
	if (i >= NSB)
		return false;
	memcpy(ret, &many_res[i], sizeof(many_res[i]));
	*ret_len = sizeof(many_res[i]);
	return true;
}

/* Upstream sockets to all of many_res and to R1. */
static int upstream_socks_all(void)
{
	struct sockaddr_in r1 = r1_addr();
	int n = upstream_socks(&r1, NULL);

	for (int i = 0; i < NSB; i++)
		n += upstream_socks(&many_res[i], NULL);
	return n;
}

Test(dns, sandbox_resolvers_limit_and_lru)
{
	enum { EXTRA = DNS_RESOLVERS_MAX - 1, NEW = NSB - 1 };
	int rfd[NSB], lfd[NSB], cfd[NSB];
	uint16_t port[NSB], p, dport = 0, dport2 = 0;
	uint8_t q[512], a[4096], b[4096];
	struct sockaddr_in la, from, r1;
	struct dns_stats st;
	int i, n_unavail = 0;
	size_t n;
	ssize_t r;

	for (i = 0; i < NSB; i++) {
		socklen_t al = sizeof(many_res[i]);

		many_res[i] = (struct sockaddr_in){ .sin_family = AF_INET,
						    .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		rfd[i] = socket(AF_INET, SOCK_DGRAM, 0);
		cr_assert_geq(rfd[i], 0);
		cr_assert_eq(bind(rfd[i], (struct sockaddr *)&many_res[i], sizeof(many_res[i])), 0);
		getsockname(rfd[i], (struct sockaddr *)&many_res[i], &al);
	}
	start_resolver = resolver_many;
	start(false, 1500, 0, 0);
	r1 = r1_addr();
	for (i = 0; i < NSB; i++) {
		char sb[8];

		snprintf(sb, sizeof(sb), "s%d", i);
		lfd[i] = add_sandbox_listener(sb, false, &la);
		/* an answer made here comes in microseconds; a timeout's after 1.5 s */
		cfd[i] = udp_client_to(&la, 500);
	}
	cr_assert_eq(upstream_socks(&r1, &dport), 1, "the default socket");

	/* s0..s30 take the 31 slots besides the default one; their queries
	 * stay in flight. Spaced so each socket's last use is distinct. */
	for (i = 0; i < EXTRA; i++) {
		n = build_query(q, (uint16_t)(0x100 + i), "slow.test", 1, true);
		cr_assert_eq(send(cfd[i], q, n, 0), (ssize_t)n);
		r = udp_wait(rfd[i], b, sizeof(b), &from, 3000);
		cr_assert_gt(r, 0, "s%d's query did not reach its resolver", i);
		port[i] = ntohs(from.sin_port);
		usleep(3000);
	}
	cr_assert_eq(upstream_socks_all(), DNS_RESOLVERS_MAX);

	/* s31..s39: every slot busy, SERVFAIL at once, sent nowhere */
	for (; i < NEW; i++) {
		n = build_query(q, (uint16_t)(0x100 + i), "slow.test", 1, true);
		cr_assert_eq(send(cfd[i], q, n, 0), (ssize_t)n);
		r = recv(cfd[i], a, sizeof(a), 0);
		cr_assert_gt(r, 0, "s%d: no immediate answer with all slots busy", i);
		cr_assert_eq(dnsmsg_get16(a), 0x100 + i);
		cr_assert_eq(rcode_of(a, (size_t)r), DNSMSG_SERVFAIL, "s%d: rcode", i);
	}
	st = stats();
	cr_assert_eq(st.forwarded, EXTRA);
	cr_assert_eq(st.servfail, NEW - EXTRA);
	cr_assert_eq(st.timeouts, 0);
	cr_assert_eq(audit_count(), NEW - EXTRA);
	for (int k = 0; k < audit_count(); k++) {
		char sb[8];

		snprintf(sb, sizeof(sb), "s%d", EXTRA + k);
		cr_assert_str_eq(A.recs[k].sandbox, sb);
		cr_assert_str_eq(A.recs[k].decision, "servfail");
		cr_assert_str_eq(A.recs[k].reason, "resolver_unavailable", "%s: %s", sb,
				 A.recs[k].reason);
		cr_assert_str_eq(A.recs[k].qname, "slow.test");
	}
	cr_assert_eq(upstream_socks_all(), DNS_RESOLVERS_MAX);

	/* the 31 in flight time out */
	for (i = 0; i < EXTRA; i++) {
		set_rcvtimeo(cfd[i], 3000);
		r = recv(cfd[i], a, sizeof(a), 0);
		cr_assert_gt(r, 0, "s%d: no SERVFAIL after the timeout", i);
		cr_assert_eq(dnsmsg_get16(a), 0x100 + i);
		cr_assert_eq(rcode_of(a, (size_t)r), DNSMSG_SERVFAIL);
		set_rcvtimeo(cfd[i], 500);
	}
	st = stats();
	cr_assert_eq(st.timeouts, EXTRA);
	cr_assert_eq(st.forwarded, EXTRA);
	for (int k = 0; k < audit_count(); k++)
		if (strcmp(A.recs[k].reason, "resolver_unavailable") == 0)
			n_unavail++;
	cr_assert_eq(n_unavail, NEW - EXTRA);
	cr_assert_eq(audit_count(), NEW);
	/* nothing went anywhere else: one query for each of s0..s30's
	 * resolvers (read above), none for the others, none for R1 */
	for (i = 0; i < NSB; i++)
		cr_assert_eq(udp_drain(rfd[i]), 0, "resolver %d got a query it should not have", i);
	cr_assert_eq(R.queries, 0, "R1 got %d queries", (int)R.queries);

	/* s0 again: its socket, idle, is reused; answered, so idle again but
	 * now the most recently used */
	n = build_query(q, 0x200, "slow.test", 1, true);
	cr_assert_eq(send(cfd[0], q, n, 0), (ssize_t)n);
	r = udp_wait(rfd[0], b, sizeof(b), &from, 3000);
	cr_assert_gt(r, 0, "s0's second query did not reach its resolver");
	cr_assert_eq(ntohs(from.sin_port), port[0], "s0 got a new socket");
	{
		uint8_t ip[4] = { 10, 0, 0, 100 }, out[512];
		struct dnsmsg_header h;

		cr_assert_eq(dnsmsg_parse_header(b, (size_t)r, &h), 0);
		n = res_answer(b, (size_t)r, h.id, NULL, ip, out);
		cr_assert_eq(sendto(rfd[0], out, n, 0, (struct sockaddr *)&from, sizeof(from)),
			     (ssize_t)n);
		set_rcvtimeo(cfd[0], 3000);
		r = recv(cfd[0], a, sizeof(a), 0);
		cr_assert_gt(r, 0, "s0: its resolver's answer did not arrive");
		cr_assert_eq(check_answer(a, (size_t)r, 0x200, "slow.test"), 100);
	}
	usleep(3000);

	/* a new sandbox's resolver: s1's socket, the least recently used (all
	 * are idle), is closed to make room; the default stays */
	n = build_query(q, 0x201, "slow.test", 1, true);
	cr_assert_eq(send(cfd[NEW], q, n, 0), (ssize_t)n);
	r = udp_wait(rfd[NEW], b, sizeof(b), &from, 3000);
	cr_assert_gt(r, 0, "s%d not served after the others went idle", NEW);
	cr_assert_lt(recv(cfd[NEW], a, sizeof(a), MSG_DONTWAIT), 0, "s%d answered at once", NEW);
	cr_assert_eq(upstream_socks(&many_res[1], NULL), 0, "s1's socket (least recently used) kept");
	for (i = 0; i < EXTRA; i++) {
		if (i == 1)
			continue;
		p = 0;
		cr_assert_eq(upstream_socks(&many_res[i], &p), 1, "s%d's socket closed", i);
		cr_assert_eq(p, port[i], "s%d's socket replaced", i);
	}
	cr_assert_eq(upstream_socks(&many_res[NEW], NULL), 1);
	cr_assert_eq(upstream_socks(&r1, &dport2), 1, "the default socket closed");
	cr_assert_eq(dport2, dport, "the default socket replaced");
	cr_assert_eq(upstream_socks_all(), DNS_RESOLVERS_MAX);

	/* and s1 once more: s2's socket goes now */
	usleep(3000);
	n = build_query(q, 0x202, "slow.test", 1, true);
	cr_assert_eq(send(cfd[1], q, n, 0), (ssize_t)n);
	r = udp_wait(rfd[1], b, sizeof(b), &from, 3000);
	cr_assert_gt(r, 0, "s1 not served again");
	cr_assert_eq(upstream_socks(&many_res[2], NULL), 0, "s2's socket kept");
	cr_assert_eq(upstream_socks_all(), DNS_RESOLVERS_MAX);

	/* the default resolver still serves sb1 */
	{
		int fd = udp_client();

		n = build_query(q, 0x203, "2.allowed.test", 1, true);
		cr_assert_eq(send(fd, q, n, 0), (ssize_t)n);
		r = recv(fd, a, sizeof(a), 0);
		cr_assert_gt(r, 0, "sb1: no answer from the default resolver");
		cr_assert_eq(check_answer(a, (size_t)r, 0x203, "2.allowed.test"), 2);
		close(fd);
	}
	st = stats();
	cr_assert_eq(st.forwarded, EXTRA + 4);
	cr_assert_eq(st.servfail, NEW);
	for (i = 0; i < NSB; i++)
		cr_assert_eq(udp_drain(rfd[i]), 0, "resolver %d got a query it should not have", i);

	stop();
	for (i = 0; i < NSB; i++) {
		close(cfd[i]);
		close(lfd[i]);
		close(rfd[i]);
	}
}
