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
