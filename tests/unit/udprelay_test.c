// SPDX-License-Identifier: MIT
/*
 * udprelay: the relay with real UDP sockets on loopback, all in this
 * process's netns. A "listener" socket is handed to udprelay_add_listener
 * (in sluiced it lives in the sandbox's netns; the BPF programs steer the
 * sandbox's datagrams to it), "sandbox" sockets send to it, and an
 * "upstream" socket that the test itself reads and answers stands for the
 * destination.
 *
 * The four hooks are test doubles, on purpose: the kernel record (lookup,
 * forget: the BPF flow map in sluiced) is a small table the test fills per
 * sandbox source address, and the policy (check: the sandbox's generation,
 * deny set and network.udp rules in sluiced) is "allow" or one refusal
 * reason the test sets. The sandbox name is derived from the cgroup id in
 * the record ("sb<id>"). The audit hook records every event.
 *
 * The relay runs on its own loop thread (no loop tick: tests call
 * udprelay_tick through loop_post when they mean to). Every wait is bounded.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "loop.h"
#include "udprelay.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

#define WAIT_MS 3000  /* upper bound of any wait for something that must happen */
#define QUIET_MS 200  /* how long "nothing arrives" is watched */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- addresses ---- */

static struct sockaddr_storage sa(const char *ip, uint16_t port, socklen_t *len)
{
	struct sockaddr_storage ss = { 0 };
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

	if (inet_pton(AF_INET, ip, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		*len = sizeof(*s4);
	} else {
		cr_assert_eq(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1, "bad ip %s", ip);
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		*len = sizeof(*s6);
	}
	return ss;
}

static uint16_t port_of(const struct sockaddr_storage *ss)
{
	return ntohs(ss->ss_family == AF_INET ? ((const struct sockaddr_in *)ss)->sin_port
					      : ((const struct sockaddr_in6 *)ss)->sin6_port);
}

/* Same family, address and port (what a UDP peer is). */
static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;

		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;

		return x->sin6_port == y->sin6_port &&
		       !memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr));
	}
	return false;
}

static const char *fmt(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN] = "?";

	if (ss->ss_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, ip, sizeof(ip));
	else if (ss->ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, ip, sizeof(ip));
	snprintf(buf, len, "%s/%u", ip, port_of(ss));
	return buf;
}

#define ASSERT_ADDR(got, want, what)                                                     \
	do {                                                                             \
		char g_[64], w_[64];                                                     \
		cr_assert(same_addr((got), (want)), "%s: %s, want %s", (what),           \
			  fmt((got), g_, sizeof(g_)), fmt((want), w_, sizeof(w_)));     \
	} while (0)

/* ---- sockets ---- */

struct sock {
	int fd;
	struct sockaddr_storage addr;
	socklen_t len;
};

/* A UDP socket bound to ip, port 0. v6only: 0 makes a dual-stack "::" socket. */
static struct sock udp_sock(const char *ip, int v6only)
{
	struct sock s;
	int big = 1 << 20;

	s.addr = sa(ip, 0, &s.len);
	s.fd = socket(s.addr.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(s.fd, 0);
	if (s.addr.ss_family == AF_INET6)
		cr_assert_eq(setsockopt(s.fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only)), 0);
	/* room for a few maximum-size datagrams */
	setsockopt(s.fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	setsockopt(s.fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
	cr_assert_eq(bind(s.fd, (struct sockaddr *)&s.addr, s.len), 0, "bind %s: %s", ip,
		     strerror(errno));
	s.len = sizeof(s.addr);
	cr_assert_eq(getsockname(s.fd, (struct sockaddr *)&s.addr, &s.len), 0);
	return s;
}

static void send_to(const struct sock *from, const void *buf, size_t n,
		    const struct sockaddr_storage *to)
{
	socklen_t len = to->ss_family == AF_INET ? sizeof(struct sockaddr_in)
						 : sizeof(struct sockaddr_in6);
	ssize_t r = sendto(from->fd, buf, n, 0, (const struct sockaddr *)to, len);

	cr_assert_eq(r, (ssize_t)n, "sendto: %s", r < 0 ? strerror(errno) : "short");
}

/* One datagram within ms; its length, -1 when none came. */
static ssize_t recv_wait(const struct sock *s, void *buf, size_t cap,
			 struct sockaddr_storage *from, unsigned ms)
{
	struct pollfd p = { .fd = s->fd, .events = POLLIN };
	struct sockaddr_storage dummy;
	socklen_t l = sizeof(dummy);

	if (poll(&p, 1, (int)ms) != 1)
		return -1;
	return recvfrom(s->fd, buf, cap, MSG_DONTWAIT, (struct sockaddr *)(from ? from : &dummy),
			&l);
}

static void assert_quiet(const struct sock *s, const char *what)
{
	char b[64];

	cr_assert_lt(recv_wait(s, b, sizeof(b), NULL, QUIET_MS), 0, "%s got a datagram", what);
}

static uint64_t netns_cookie(int fd)
{
	uint64_t c = 0;
	socklen_t l = sizeof(c);

	cr_assert_eq(getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &c, &l), 0);
	return c;
}

/* ---- hook doubles ---- */

#define NREC 16
#define NEV 64
#define NFORGET 16

struct ev {
	char sandbox[UDPRELAY_SANDBOX_MAX + 1], rule[UDPRELAY_RULE_MAX + 1];
	char decision[16], reason[64];
	uint64_t cgroup_id;
	bool has_dst;
	struct sockaddr_storage dst;
	struct timespec start;
	uint64_t bytes_in, bytes_out, duration_us;
};

static struct {
	pthread_mutex_t lock;
	/* the kernel record: sandbox source -> destination */
	struct {
		bool used;
		struct sockaddr_storage src;
		struct sluice_orig dst;
	} rec[NREC];
	int lookups, checks;
	int dsa_wrong;          /* checks whose socket address was not the record's */
	uint64_t last_cookie;
	struct sockaddr_storage last_src;
	/* the policy: NULL allows, else the refusal reason ("": none given) */
	const char *refuse;
	struct {
		uint64_t cookie;
		struct sockaddr_storage src;
	} forgot[NFORGET];
	int nforgot;
	struct ev ev[NEV];
	int nev;
} H = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void copy_sa(struct sockaddr_storage *to, const struct sockaddr *from)
{
	memset(to, 0, sizeof(*to));
	if (from->sa_family == AF_INET)
		memcpy(to, from, sizeof(struct sockaddr_in));
	else if (from->sa_family == AF_INET6)
		memcpy(to, from, sizeof(struct sockaddr_in6));
	else
		to->ss_family = from->sa_family;
}

static int lookup_hook(void *opaque, uint64_t cookie, const struct sockaddr *src,
		       struct sluice_orig *ret)
{
	struct sockaddr_storage s;
	int r = -ENOENT;

	(void)opaque;
	copy_sa(&s, src);
	pthread_mutex_lock(&H.lock);
	H.lookups++;
	H.last_cookie = cookie;
	H.last_src = s;
	for (int i = 0; i < NREC; i++) {
		if (H.rec[i].used && same_addr(&H.rec[i].src, &s)) {
			*ret = H.rec[i].dst;
			r = 0;
			break;
		}
	}
	pthread_mutex_unlock(&H.lock);
	return r;
}

/* The socket address handed with the record names the same destination. */
static bool dsa_matches(const struct sluice_orig *o, const struct sockaddr_storage *ss)
{
	if (o->family == SLUICE_AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;

		return ss->ss_family == AF_INET && s4->sin_port == o->port &&
		       !memcmp(&s4->sin_addr, o->addr, 4);
	}
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;

	return ss->ss_family == AF_INET6 && s6->sin6_port == o->port &&
	       !memcmp(&s6->sin6_addr, o->addr, 16);
}

static int check_hook(void *opaque, const struct sluice_orig *dst,
		      const struct sockaddr_storage *dsa, struct udprelay_verdict *v)
{
	int r = 0;

	(void)opaque;
	snprintf(v->sandbox, sizeof(v->sandbox), "sb%llu", (unsigned long long)dst->cgroup_id);
	pthread_mutex_lock(&H.lock);
	H.checks++;
	H.dsa_wrong += !dsa_matches(dst, dsa);
	if (H.refuse) {
		v->reason = *H.refuse ? H.refuse : NULL; /* "": refuse without a reason */
		r = -EACCES;
	} else {
		snprintf(v->rule, sizeof(v->rule), "rule%u", ntohs(dst->port));
	}
	pthread_mutex_unlock(&H.lock);
	return r;
}

static void forget_hook(void *opaque, uint64_t cookie, const struct sockaddr *src)
{
	(void)opaque;
	pthread_mutex_lock(&H.lock);
	if (H.nforgot < NFORGET) {
		H.forgot[H.nforgot].cookie = cookie;
		copy_sa(&H.forgot[H.nforgot].src, src);
		H.nforgot++;
	}
	pthread_mutex_unlock(&H.lock);
}

static void audit_hook(void *opaque, const struct udprelay_event *e)
{
	struct ev *x;

	(void)opaque;
	pthread_mutex_lock(&H.lock);
	if (H.nev < NEV) {
		x = &H.ev[H.nev++];
		memset(x, 0, sizeof(*x));
		snprintf(x->sandbox, sizeof(x->sandbox), "%s", e->sandbox ? e->sandbox : "(null)");
		snprintf(x->rule, sizeof(x->rule), "%s", e->rule ? e->rule : "(null)");
		snprintf(x->decision, sizeof(x->decision), "%s", e->decision);
		snprintf(x->reason, sizeof(x->reason), "%s", e->reason);
		x->cgroup_id = e->cgroup_id;
		x->has_dst = e->dst != NULL;
		if (e->dst)
			copy_sa(&x->dst, e->dst);
		x->start = e->start;
		x->bytes_in = e->bytes_in;
		x->bytes_out = e->bytes_out;
		x->duration_us = e->duration_us;
	}
	pthread_mutex_unlock(&H.lock);
}

/* The kernel record for sandbox source src: going to dst, socket of cgroup cg. */
static void record(const struct sock *src, const struct sock *dst, uint64_t cg)
{
	struct sluice_orig o = { .cgroup_id = cg, .flags = SLUICE_ORIG_F_UDP_RELAY };
	int i;

	if (dst->addr.ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const void *)&dst->addr;

		o.family = SLUICE_AF_INET;
		memcpy(o.addr, &s4->sin_addr, 4);
		o.port = s4->sin_port;
	} else {
		const struct sockaddr_in6 *s6 = (const void *)&dst->addr;

		o.family = SLUICE_AF_INET6;
		memcpy(o.addr, &s6->sin6_addr, 16);
		o.port = s6->sin6_port;
	}
	pthread_mutex_lock(&H.lock);
	for (i = 0; i < NREC; i++)
		if (H.rec[i].used && same_addr(&H.rec[i].src, &src->addr))
			break;
	if (i == NREC)
		for (i = 0; i < NREC && H.rec[i].used; i++)
			;
	cr_assert_lt(i, NREC);
	H.rec[i].used = true;
	H.rec[i].src = src->addr;
	H.rec[i].dst = o;
	pthread_mutex_unlock(&H.lock);
}

static void set_refuse(const char *reason)
{
	pthread_mutex_lock(&H.lock);
	H.refuse = reason;
	pthread_mutex_unlock(&H.lock);
}

static int nevents(const char *reason)
{
	int n = 0;

	pthread_mutex_lock(&H.lock);
	for (int i = 0; i < H.nev; i++)
		n += !reason || !strcmp(H.ev[i].reason, reason);
	pthread_mutex_unlock(&H.lock);
	return n;
}

/* A copy of the k-th event (0-based) with this reason; fails the test if none. */
static struct ev event(const char *reason, int k)
{
	struct ev e = { 0 };
	bool found = false;

	pthread_mutex_lock(&H.lock);
	for (int i = 0; i < H.nev && !found; i++)
		if (!strcmp(H.ev[i].reason, reason) && k-- == 0) {
			e = H.ev[i];
			found = true;
		}
	pthread_mutex_unlock(&H.lock);
	cr_assert(found, "no event %s", reason);
	return e;
}

/* Index of the first event with this reason in the order seen, -1 if none. */
static int event_pos(const char *reason, const struct sockaddr_storage *dst)
{
	int pos = -1;

	pthread_mutex_lock(&H.lock);
	for (int i = 0; i < H.nev && pos < 0; i++)
		if (!strcmp(H.ev[i].reason, reason) &&
		    (!dst || (H.ev[i].has_dst && same_addr(&H.ev[i].dst, dst))))
			pos = i;
	pthread_mutex_unlock(&H.lock);
	return pos;
}

/* ---- the instance under test ---- */

static struct loop *L;
static struct udprelay *U;
static pthread_t LT;

static void *loop_main(void *arg)
{
	(void)arg;
	loop_run(L);
	return NULL;
}

static void start(unsigned idle_ms, unsigned per_sandbox, unsigned max_flows)
{
	struct udprelay_cfg cfg = { .idle_ms = idle_ms,
				    .max_flows_per_sandbox = per_sandbox,
				    .max_flows = max_flows };
	struct udprelay_hooks hooks = { .lookup = lookup_hook,
					.check = check_hook,
					.forget = forget_hook,
					.audit = audit_hook,
					.opaque = &H };

	cr_assert_eq(loop_new(&L), 0);
	cr_assert_eq(udprelay_new(L, &cfg, &hooks, &U), 0);
	cr_assert_eq(pthread_create(&LT, NULL, loop_main, NULL), 0);
}

static void stop(void)
{
	if (!L)
		return;
	loop_stop(L);
	pthread_join(LT, NULL);
	udprelay_free(U);
	loop_free(L);
	L = NULL;
	U = NULL;
}

struct loop_op {
	void (*fn)(void *);
	void *arg;
	sem_t done;
};

static void loop_op_run(void *p)
{
	struct loop_op *o = p;

	o->fn(o->arg);
	sem_post(&o->done);
}

/* Run fn(arg) on the loop thread and wait (bounded) until it ran. */
static void on_loop(void (*fn)(void *), void *arg)
{
	struct loop_op op = { .fn = fn, .arg = arg };
	struct timespec until;

	sem_init(&op.done, 0, 0);
	cr_assert_eq(loop_post(L, loop_op_run, &op), 0);
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += WAIT_MS / 1000;
	cr_assert_eq(sem_timedwait(&op.done, &until), 0, "the loop thread did not answer");
	sem_destroy(&op.done);
}

struct listener_op {
	int fd;
	const char *owner;
	int rc;
};

static void add_listener_fn(void *arg)
{
	struct listener_op *op = arg;

	op->rc = udprelay_add_listener(U, op->fd, op->owner);
}

static void add_listener(const struct sock *l, const char *owner)
{
	struct listener_op op = { .fd = l->fd, .owner = owner };

	on_loop(add_listener_fn, &op);
	cr_assert_eq(op.rc, 0, "udprelay_add_listener: %s", strerror(-op.rc));
}

static void remove_listeners_fn(void *arg)
{
	udprelay_remove_listeners(U, arg);
}

static void tick_fn(void *arg)
{
	(void)arg;
	udprelay_tick(U);
}

static void tick(void)
{
	on_loop(tick_fn, NULL);
}

static void stats_fn(void *arg)
{
	udprelay_get_stats(U, arg);
}

static struct udprelay_stats stats(void)
{
	struct udprelay_stats st;

	on_loop(stats_fn, &st);
	return st;
}

/* Bounded wait until the relay has read n datagrams it dropped. */
static void wait_dropped(uint64_t n)
{
	uint64_t until = now_ms() + WAIT_MS;
	struct udprelay_stats st;

	do {
		st = stats();
		if (st.dropped >= n)
			break;
		usleep(5000);
	} while (now_ms() < until);
	cr_assert_eq(st.dropped, n, "dropped %llu, want %llu", (unsigned long long)st.dropped,
		     (unsigned long long)n);
}

/*
 * One exchange over an open or opening flow: sb sends msg to the listener,
 * up receives it (from the relay's upstream socket, returned in *relay_src)
 * and answers reply; sb gets the reply from the listener's address.
 */
static void exchange(const struct sock *sb, const struct sock *lst, const struct sock *up,
		     const char *msg, const char *reply, struct sockaddr_storage *relay_src)
{
	struct sockaddr_storage from, rs;
	char b[256];
	ssize_t n;

	send_to(sb, msg, strlen(msg), &lst->addr);
	n = recv_wait(up, b, sizeof(b), &rs, WAIT_MS);
	cr_assert_eq(n, (ssize_t)strlen(msg), "upstream got %zd bytes", n);
	cr_assert_eq(memcmp(b, msg, (size_t)n), 0);
	/* relayed from sluiced's own socket: neither the sandbox's nor the listener's */
	cr_assert_not(same_addr(&rs, &sb->addr), "upstream saw the sandbox's address");
	cr_assert_not(same_addr(&rs, &lst->addr), "upstream saw the listener's address");
	send_to(up, reply, strlen(reply), &rs);
	n = recv_wait(sb, b, sizeof(b), &from, WAIT_MS);
	cr_assert_eq(n, (ssize_t)strlen(reply), "sandbox got %zd bytes", n);
	cr_assert_eq(memcmp(b, reply, (size_t)n), 0);
	ASSERT_ADDR(&from, &lst->addr, "reply source");
	if (relay_src)
		*relay_src = rs;
}

static void assert_open_event(int k, const char *sandbox, uint64_t cg, const struct sock *up)
{
	struct ev e = event("udp_flow_open", k);
	char rule[16];

	snprintf(rule, sizeof(rule), "rule%u", port_of(&up->addr));
	cr_assert_str_eq(e.decision, "allow");
	cr_assert_str_eq(e.sandbox, sandbox);
	cr_assert_str_eq(e.rule, rule);
	cr_assert_eq(e.cgroup_id, cg);
	cr_assert(e.has_dst);
	ASSERT_ADDR(&e.dst, &up->addr, "open event dst");
	cr_assert_eq(e.bytes_in, 0);
	cr_assert_eq(e.bytes_out, 0);
}

TestSuite(udprelay, .fini = stop, .timeout = 30);

/* ---- tests ---- */

Test(udprelay, relays_both_ways_one_open_event)
{
	struct sock lst, sb, up;
	struct sockaddr_storage rs1, rs2;
	struct udprelay_stats st;
	struct timespec now;
	struct ev e;

	start(0, 0, 0);
	lst = udp_sock("127.0.0.1", 1);
	sb = udp_sock("127.0.0.1", 1);
	up = udp_sock("127.0.0.1", 1);
	add_listener(&lst, "sb7");
	record(&sb, &up, 7);

	exchange(&sb, &lst, &up, "hello", "world!", &rs1);
	exchange(&sb, &lst, &up, "again", "and back", &rs2);
	/* one flow: the same upstream socket both times */
	ASSERT_ADDR(&rs2, &rs1, "second datagram's relay source");

	/* lookup got the listener's netns and the sandbox socket's address */
	pthread_mutex_lock(&H.lock);
	cr_assert_eq(H.last_cookie, netns_cookie(lst.fd));
	ASSERT_ADDR(&H.last_src, &sb.addr, "lookup src");
	cr_assert_eq(H.lookups, 2);
	cr_assert_eq(H.checks, 2, "check runs for every datagram");
	cr_assert_eq(H.dsa_wrong, 0, "the check got the record's destination as an address");
	pthread_mutex_unlock(&H.lock);

	cr_assert_eq(nevents(NULL), 1);
	cr_assert_eq(nevents("udp_flow_open"), 1);
	assert_open_event(0, "sb7", 7, &up);
	e = event("udp_flow_open", 0);
	clock_gettime(CLOCK_REALTIME, &now);
	cr_assert_leq(e.start.tv_sec, now.tv_sec);
	cr_assert_geq(e.start.tv_sec, now.tv_sec - 10);

	st = stats();
	cr_assert_eq(st.flows_opened, 1);
	cr_assert_eq(st.flows_open, 1);
	cr_assert_eq(st.flows_refused, 0);
	cr_assert_eq(st.dgrams_up, 2);
	cr_assert_eq(st.dgrams_down, 2);
	cr_assert_eq(st.bytes_up, 5 + 5);
	cr_assert_eq(st.bytes_down, 6 + 8);
	cr_assert_eq(st.dropped, 0);

	/* free closes the flow with its byte counts */
	stop();
	cr_assert_eq(nevents("udp_flow_closed"), 1);
	e = event("udp_flow_closed", 0);
	cr_assert_str_eq(e.decision, "allow");
	cr_assert_eq(e.bytes_in, 10);
	cr_assert_eq(e.bytes_out, 14);
	ASSERT_ADDR(&e.dst, &up.addr, "closed event dst");
	close(lst.fd);
	close(sb.fd);
	close(up.fd);
}

Test(udprelay, no_record_denied_once)
{
	struct sock lst, sb, up;
	struct udprelay_stats st;
	struct ev e;

	start(0, 0, 0);
	lst = udp_sock("127.0.0.1", 1);
	sb = udp_sock("127.0.0.1", 1);
	up = udp_sock("127.0.0.1", 1);
	add_listener(&lst, "sb1");
	/* no record for sb */
	for (int i = 0; i < 10; i++)
		send_to(&sb, "x", 1, &lst.addr);
	wait_dropped(10);
	assert_quiet(&up, "upstream");
	assert_quiet(&sb, "sandbox");
	cr_assert_eq(nevents(NULL), 1);
	e = event("udp_no_record", 0);
	cr_assert_str_eq(e.decision, "deny");
	cr_assert_not(e.has_dst);
	cr_assert_eq(e.cgroup_id, 0);
	/* a netns listener belongs to one sandbox: the line names it */
	cr_assert_str_eq(e.sandbox, "sb1");
	pthread_mutex_lock(&H.lock);
	cr_assert_eq(H.lookups, 10);
	cr_assert_eq(H.checks, 0, "nothing to check without a record");
	pthread_mutex_unlock(&H.lock);
	st = stats();
	cr_assert_eq(st.flows_refused, 1);
	cr_assert_eq(st.flows_opened, 0);
	cr_assert_eq(st.dgrams_up, 0);

	/* the record appears (the BPF program published it): the flow opens */
	record(&sb, &up, 1);
	exchange(&sb, &lst, &up, "now", "ok", NULL);
	cr_assert_eq(nevents("udp_flow_open"), 1);
	cr_assert_eq(nevents("udp_no_record"), 1);
	close(lst.fd);
	close(sb.fd);
	close(up.fd);
}

/* A listener shared by several sandboxes ("@host") cannot name one. */
Test(udprelay, no_record_shared_listener_unattributed)
{
	struct sock lst, sb;

	start(0, 0, 0);
	lst = udp_sock("127.0.0.1", 1);
	sb = udp_sock("127.0.0.1", 1);
	add_listener(&lst, "@host");
	send_to(&sb, "x", 1, &lst.addr);
	wait_dropped(1);
	cr_assert_eq(nevents("udp_no_record"), 1);
	cr_assert_str_eq(event("udp_no_record", 0).sandbox, "");
	close(lst.fd);
	close(sb.fd);
}

Test(udprelay, check_refusal_once_then_allowed)
{
	struct sock lst, sb, up;
	struct ev e;

	start(0, 0, 0);
	lst = udp_sock("127.0.0.1", 1);
	sb = udp_sock("127.0.0.1", 1);
	up = udp_sock("127.0.0.1", 1);
	add_listener(&lst, "sb1");
	record(&sb, &up, 3);
	set_refuse("udp_address_denied");
	for (int i = 0; i < 8; i++)
		send_to(&sb, "blocked", 7, &lst.addr);
	wait_dropped(8);
	assert_quiet(&up, "upstream");
	cr_assert_eq(nevents(NULL), 1);
	e = event("udp_address_denied", 0);
	cr_assert_str_eq(e.decision, "deny");
	cr_assert_str_eq(e.sandbox, "sb3");
	cr_assert_eq(e.cgroup_id, 3);
	cr_assert(e.has_dst);
	ASSERT_ADDR(&e.dst, &up.addr, "deny event dst");
	pthread_mutex_lock(&H.lock);
	cr_assert_eq(H.checks, 8, "the policy is asked for every datagram");
	pthread_mutex_unlock(&H.lock);
	cr_assert_eq(stats().flows_refused, 1);

	/* a reload allows it again: the next datagram opens the flow */
	set_refuse(NULL);
	exchange(&sb, &lst, &up, "allowed", "yes", NULL);
	cr_assert_eq(nevents(NULL), 2);
	cr_assert_eq(nevents("udp_flow_open"), 1);
	assert_open_event(0, "sb3", 3, &up);
	cr_assert_eq(event_pos("udp_address_denied", NULL), 0);
	cr_assert_eq(event_pos("udp_flow_open", NULL), 1);
	close(lst.fd);
	close(sb.fd);
	close(up.fd);
}

/* The default reason when the check gives none. */
Test(udprelay, check_refusal_default_reason)
{
	struct sock lst, sb, up;

	start(0, 0, 0);
	lst = udp_sock("127.0.0.1", 1);
	sb = udp_sock("127.0.0.1", 1);
	up = udp_sock("127.0.0.1", 1);
	add_listener(&lst, "sb1");
	record(&sb, &up, 3);
	set_refuse("");
	send_to(&sb, "x", 1, &lst.addr);
	wait_dropped(1);
	cr_assert_eq(nevents(NULL), 1);
	cr_assert_eq(nevents("udp_not_allowed"), 1);
	cr_assert_str_eq(event("udp_not_allowed", 0).decision, "deny");
	close(lst.fd);
	close(sb.fd);
	close(up.fd);
}

Test(udprelay, record_change_reopens)
{
	struct sock lst, sb, a, b;
	struct ev c;
	char buf[16];

	start(0, 0, 0);
	lst = udp_sock("127.0.0.1", 1);
	sb = udp_sock("127.0.0.1", 1);
	a = udp_sock("127.0.0.1", 1);
	b = udp_sock("127.0.0.1", 1);
	add_listener(&lst, "sb1");
	record(&sb, &a, 1);
	exchange(&sb, &lst, &a, "to-a", "from-a!", NULL);
	/* the source port now belongs to a socket pinned elsewhere */
	record(&sb, &b, 1);
	exchange(&sb, &lst, &b, "to-b", "from-b", NULL);
	cr_assert_lt(recv_wait(&a, buf, sizeof(buf), NULL, 0), 0, "old destination got more");

	cr_assert_eq(nevents(NULL), 3);
	cr_assert_eq(nevents("udp_flow_closed"), 1);
	c = event("udp_flow_closed", 0);
	ASSERT_ADDR(&c.dst, &a.addr, "closed flow");
	cr_assert_eq(c.bytes_in, 4);
	cr_assert_eq(c.bytes_out, 7);
	cr_assert_eq(nevents("udp_flow_open"), 2);
	/* order: open a, closed a, open b */
	cr_assert_eq(event_pos("udp_flow_open", &a.addr), 0);
	cr_assert_eq(event_pos("udp_flow_closed", &a.addr), 1);
	cr_assert_eq(event_pos("udp_flow_open", &b.addr), 2);
	cr_assert_eq(stats().flows_open, 1);
	close(lst.fd);
	close(sb.fd);
	close(a.fd);
	close(b.fd);
}

/* Three sandbox sockets of one sandbox, limit 2: the third is refused. */
static void limit_setup(struct sock *lst, struct sock sb[3], struct sock *up)
{
	start(0, 2, 0);
	*lst = udp_sock("127.0.0.1", 1);
	*up = udp_sock("127.0.0.1", 1);
	add_listener(lst, "sb1");
	for (int i = 0; i < 3; i++) {
		sb[i] = udp_sock("127.0.0.1", 1);
		record(&sb[i], up, 1);
	}
	exchange(&sb[0], lst, up, "one", "1", NULL);
	exchange(&sb[1], lst, up, "two", "2", NULL);
}

Test(udprelay, flow_limit_per_sandbox)
{
	struct sock lst, sb[3], up, other;
	struct ev e;

	limit_setup(&lst, sb, &up);
	send_to(&sb[2], "three", 5, &lst.addr);
	wait_dropped(1);
	assert_quiet(&up, "upstream");
	cr_assert_eq(nevents("udp_flow_limit"), 1);
	e = event("udp_flow_limit", 0);
	cr_assert_str_eq(e.decision, "deny");
	cr_assert_str_eq(e.sandbox, "sb1");
	cr_assert_eq(stats().flows_open, 2);
	/* the first two still work */
	exchange(&sb[0], &lst, &up, "one", "1", NULL);
	/* another sandbox has its own budget */
	other = udp_sock("127.0.0.1", 1);
	record(&other, &up, 2);
	exchange(&other, &lst, &up, "other", "o", NULL);
	cr_assert_eq(nevents("udp_flow_open"), 3);
	assert_open_event(2, "sb2", 2, &up);
	close(other.fd);
	close(lst.fd);
	for (int i = 0; i < 3; i++)
		close(sb[i].fd);
	close(up.fd);
}

/* "Once per flow, not per datagram" holds for the flow limit too. */
Test(udprelay, flow_limit_audited_once)
{
	struct sock lst, sb[3], up;

	limit_setup(&lst, sb, &up);
	for (int i = 0; i < 5; i++)
		send_to(&sb[2], "three", 5, &lst.addr);
	wait_dropped(5);
	assert_quiet(&up, "upstream");
	cr_assert_eq(nevents("udp_flow_limit"), 1, "%d udp_flow_limit events for 5 datagrams",
		     nevents("udp_flow_limit"));
	cr_assert_eq(stats().flows_refused, 1);
	close(lst.fd);
	for (int i = 0; i < 3; i++)
		close(sb[i].fd);
	close(up.fd);
}

/* A freed slot lets the refused socket in with its next datagram. */
Test(udprelay, flow_limit_slot_freed)
{
	struct sock lst, sb[3], up;

	limit_setup(&lst, sb, &up);
	send_to(&sb[2], "three", 5, &lst.addr);
	wait_dropped(1);
	/* sb[0]'s port now has no record: its flow goes */
	pthread_mutex_lock(&H.lock);
	for (int i = 0; i < NREC; i++)
		if (H.rec[i].used && same_addr(&H.rec[i].src, &sb[0].addr))
			H.rec[i].used = false;
	pthread_mutex_unlock(&H.lock);
	send_to(&sb[0], "gone", 4, &lst.addr);
	wait_dropped(2);
	cr_assert_eq(nevents("udp_flow_closed"), 1);
	cr_assert_eq(stats().flows_open, 1);
	exchange(&sb[2], &lst, &up, "three", "3", NULL);
	cr_assert_eq(nevents("udp_flow_open"), 3);
	close(lst.fd);
	for (int i = 0; i < 3; i++)
		close(sb[i].fd);
	close(up.fd);
}

Test(udprelay, idle_expiry)
{
	struct sock lst, sb, up;
	char rule[16];
	uint64_t t0;
	struct ev e;

	start(300, 0, 0);
	lst = udp_sock("127.0.0.1", 1);
	sb = udp_sock("127.0.0.1", 1);
	up = udp_sock("127.0.0.1", 1);
	add_listener(&lst, "sb1");
	record(&sb, &up, 1);
	exchange(&sb, &lst, &up, "ping", "pong!!", NULL);
	t0 = now_ms();
	tick();
	cr_assert_eq(nevents("udp_flow_closed"), 0, "closed before idle_ms");
	/* past idle_ms (with margin), then a tick */
	usleep(450 * 1000);
	tick();
	cr_assert_eq(nevents("udp_flow_closed"), 1);
	e = event("udp_flow_closed", 0);
	cr_assert_str_eq(e.decision, "allow");
	cr_assert_str_eq(e.sandbox, "sb1");
	snprintf(rule, sizeof(rule), "rule%u", port_of(&up.addr));
	cr_assert_str_eq(e.rule, rule);
	cr_assert_eq(e.bytes_in, 4);
	cr_assert_eq(e.bytes_out, 6);
	cr_assert_geq(e.duration_us, 300 * 1000, "duration %llu us",
		      (unsigned long long)e.duration_us);
	cr_assert_leq(e.duration_us, (now_ms() - t0 + 1000) * 1000);
	ASSERT_ADDR(&e.dst, &up.addr, "closed event dst");
	pthread_mutex_lock(&H.lock);
	cr_assert_eq(H.nforgot, 1);
	cr_assert_eq(H.forgot[0].cookie, netns_cookie(lst.fd));
	ASSERT_ADDR(&H.forgot[0].src, &sb.addr, "forget src");
	pthread_mutex_unlock(&H.lock);
	cr_assert_eq(stats().flows_open, 0);

	/* the socket sends again: a new flow */
	exchange(&sb, &lst, &up, "ping", "pong", NULL);
	cr_assert_eq(nevents("udp_flow_open"), 2);
	close(lst.fd);
	close(sb.fd);
	close(up.fd);
}

/* Replies count as activity: a flow that only receives is not idle. */
Test(udprelay, idle_counts_replies)
{
	struct sock lst, sb, up;
	struct sockaddr_storage rs;
	char b[16];

	start(500, 0, 0);
	lst = udp_sock("127.0.0.1", 1);
	sb = udp_sock("127.0.0.1", 1);
	up = udp_sock("127.0.0.1", 1);
	add_listener(&lst, "sb1");
	record(&sb, &up, 1);
	exchange(&sb, &lst, &up, "sub", "ack", &rs);  /* t = 0 */
	usleep(300 * 1000);
	send_to(&up, "push", 4, &rs);                 /* t = 300: a reply only */
	cr_assert_eq(recv_wait(&sb, b, sizeof(b), NULL, WAIT_MS), 4);
	usleep(300 * 1000);
	tick();                                       /* t = 600: 300 ms since the reply */
	cr_assert_eq(nevents("udp_flow_closed"), 0, "closed although a reply came 300 ms ago");
	usleep(400 * 1000);
	tick();                                       /* t = 1000 */
	cr_assert_eq(nevents("udp_flow_closed"), 1);
	cr_assert_eq(event("udp_flow_closed", 0).bytes_out, 3 + 4);
	close(lst.fd);
	close(sb.fd);
	close(up.fd);
}

/* A refused flow expires too, and its next datagram is audited again. */
Test(udprelay, refused_flow_expires)
{
	struct sock lst, sb, up;

	start(200, 0, 0);
	lst = udp_sock("127.0.0.1", 1);
	sb = udp_sock("127.0.0.1", 1);
	up = udp_sock("127.0.0.1", 1);
	add_listener(&lst, "sb1");
	send_to(&sb, "x", 1, &lst.addr);
	wait_dropped(1);
	usleep(300 * 1000);
	tick();
	pthread_mutex_lock(&H.lock);
	cr_assert_eq(H.nforgot, 1);
	ASSERT_ADDR(&H.forgot[0].src, &sb.addr, "forget src");
	pthread_mutex_unlock(&H.lock);
	cr_assert_eq(nevents("udp_flow_closed"), 0, "a refused flow was never open");
	send_to(&sb, "x", 1, &lst.addr);
	wait_dropped(2);
	cr_assert_eq(nevents("udp_no_record"), 2);
	close(lst.fd);
	close(sb.fd);
	close(up.fd);
}

Test(udprelay, tick_recheck_closes)
{
	struct sock lst, sb, up;
	struct ev e;

	start(0, 0, 0);
	lst = udp_sock("127.0.0.1", 1);
	sb = udp_sock("127.0.0.1", 1);
	up = udp_sock("127.0.0.1", 1);
	add_listener(&lst, "sb1");
	record(&sb, &up, 4);
	exchange(&sb, &lst, &up, "abc", "defg", NULL);
	tick();
	cr_assert_eq(nevents(NULL), 1, "a tick closed an allowed flow");

	set_refuse("udp_not_allowed");
	tick();
	cr_assert_eq(nevents(NULL), 3);
	e = event("udp_flow_closed", 0);
	cr_assert_eq(e.bytes_in, 3);
	cr_assert_eq(e.bytes_out, 4);
	e = event("udp_not_allowed", 0);
	cr_assert_str_eq(e.decision, "deny");
	cr_assert_str_eq(e.sandbox, "sb4");
	ASSERT_ADDR(&e.dst, &up.addr, "deny event dst");
	cr_assert_lt(event_pos("udp_flow_closed", NULL), event_pos("udp_not_allowed", NULL));
	cr_assert_eq(stats().flows_open, 0);
	pthread_mutex_lock(&H.lock);
	cr_assert_eq(H.nforgot, 0, "not idle: the kernel record stays");
	pthread_mutex_unlock(&H.lock);

	/* its datagrams are dropped now, without another event */
	for (int i = 0; i < 4; i++)
		send_to(&sb, "late", 4, &lst.addr);
	wait_dropped(4);
	assert_quiet(&up, "upstream");
	tick();
	cr_assert_eq(nevents(NULL), 3);
	close(lst.fd);
	close(sb.fd);
	close(up.fd);
}

Test(udprelay, remove_listeners_closes_owner_flows)
{
	struct sock la, lb, sa1, sa2, sbb, up;
	char buf[16];

	start(0, 0, 0);
	la = udp_sock("127.0.0.1", 1);
	lb = udp_sock("127.0.0.1", 1);
	sa1 = udp_sock("127.0.0.1", 1);
	sa2 = udp_sock("127.0.0.1", 1);
	sbb = udp_sock("127.0.0.1", 1);
	up = udp_sock("127.0.0.1", 1);
	add_listener(&la, "A");
	add_listener(&lb, "B");
	record(&sa1, &up, 1);
	record(&sa2, &up, 1);
	record(&sbb, &up, 2);
	exchange(&sa1, &la, &up, "a1", "r1", NULL);
	exchange(&sa2, &la, &up, "a2", "r22", NULL);
	exchange(&sbb, &lb, &up, "b", "rb", NULL);
	cr_assert_eq(stats().flows_open, 3);

	on_loop(remove_listeners_fn, "A");
	cr_assert_eq(nevents("udp_flow_closed"), 2);
	cr_assert_str_eq(event("udp_flow_closed", 0).sandbox, "sb1");
	cr_assert_str_eq(event("udp_flow_closed", 1).sandbox, "sb1");
	cr_assert_eq(event("udp_flow_closed", 0).bytes_in + event("udp_flow_closed", 1).bytes_in,
		     4);
	cr_assert_eq(event("udp_flow_closed", 0).bytes_out + event("udp_flow_closed", 1).bytes_out,
		     5);
	cr_assert_eq(stats().flows_open, 1);
	/* B's flow carries on, on the same upstream socket */
	exchange(&sbb, &lb, &up, "b2", "rb2", NULL);
	cr_assert_eq(nevents("udp_flow_open"), 3);
	/* A's listener is not read any more */
	send_to(&sa1, "a1", 2, &la.addr);
	assert_quiet(&up, "upstream after removal");
	cr_assert_eq(recv_wait(&la, buf, sizeof(buf), NULL, WAIT_MS), 2,
		     "the datagram should still be queued on A's listener");
	/* removing an owner without listeners is a no-op */
	on_loop(remove_listeners_fn, "nobody");
	cr_assert_eq(nevents("udp_flow_closed"), 2);
	close(la.fd);
	close(lb.fd);
	close(sa1.fd);
	close(sa2.fd);
	close(sbb.fd);
	close(up.fd);
}

Test(udprelay, ipv6)
{
	struct sock lst, sb, up;
	struct ev e;

	start(0, 0, 0);
	lst = udp_sock("::1", 1);
	sb = udp_sock("::1", 1);
	up = udp_sock("::1", 1);
	add_listener(&lst, "sb1");
	record(&sb, &up, 6);
	exchange(&sb, &lst, &up, "hello6", "world6", NULL);
	pthread_mutex_lock(&H.lock);
	cr_assert_eq(H.last_src.ss_family, AF_INET6);
	ASSERT_ADDR(&H.last_src, &sb.addr, "lookup src");
	pthread_mutex_unlock(&H.lock);
	e = event("udp_flow_open", 0);
	cr_assert_eq(e.dst.ss_family, AF_INET6);
	assert_open_event(0, "sb6", 6, &up);
	close(lst.fd);
	close(sb.fd);
	close(up.fd);
}

/* A v6 sandbox socket to a v4 destination: the upstream socket is v4. */
Test(udprelay, ipv6_listener_v4_destination)
{
	struct sock lst, sb, up;

	start(0, 0, 0);
	lst = udp_sock("::1", 1);
	sb = udp_sock("::1", 1);
	up = udp_sock("127.0.0.1", 1);
	add_listener(&lst, "sb1");
	record(&sb, &up, 1);
	exchange(&sb, &lst, &up, "x6", "y4", NULL);
	cr_assert_eq(nevents("udp_flow_open"), 1);
	pthread_mutex_lock(&H.lock);
	cr_assert_eq(H.dsa_wrong, 0, "the check got the record's destination as an address");
	pthread_mutex_unlock(&H.lock);
	close(lst.fd);
	close(sb.fd);
	close(up.fd);
}

/* Dual-stack listener, v4 sandbox socket: lookup sees AF_INET, replies get back. */
Test(udprelay, v4mapped_source_folded)
{
	struct sock lst, sb, up;
	struct sockaddr_storage to, from;
	socklen_t tl;
	char b[16];
	ssize_t n;

	start(100, 0, 0);
	lst = udp_sock("::", 0);
	sb = udp_sock("127.0.0.1", 1);
	up = udp_sock("127.0.0.1", 1);
	add_listener(&lst, "sb1");
	record(&sb, &up, 1);
	to = sa("127.0.0.1", port_of(&lst.addr), &tl);
	send_to(&sb, "mapped", 6, &to);
	n = recv_wait(&up, b, sizeof(b), &from, WAIT_MS);
	cr_assert_eq(n, 6, "upstream got %zd (lookup folded? the record is keyed AF_INET)", n);
	pthread_mutex_lock(&H.lock);
	cr_assert_eq(H.last_src.ss_family, AF_INET, "lookup got family %d",
		     H.last_src.ss_family);
	ASSERT_ADDR(&H.last_src, &sb.addr, "lookup src");
	pthread_mutex_unlock(&H.lock);
	send_to(&up, "back", 4, &from);
	n = recv_wait(&sb, b, sizeof(b), &from, WAIT_MS);
	cr_assert_eq(n, 4, "the reply did not reach the v4 sandbox socket");
	ASSERT_ADDR(&from, &to, "reply source");
	/* forget gets the folded form too */
	usleep(200 * 1000);
	tick();
	pthread_mutex_lock(&H.lock);
	cr_assert_eq(H.nforgot, 1);
	cr_assert_eq(H.forgot[0].src.ss_family, AF_INET);
	ASSERT_ADDR(&H.forgot[0].src, &sb.addr, "forget src");
	pthread_mutex_unlock(&H.lock);
	close(lst.fd);
	close(sb.fd);
	close(up.fd);
}

/*
 * The largest datagrams UDP can carry (65507 bytes over IPv4, 65527 over
 * IPv6) go through whole both ways, and so does an empty one. (Longer ones
 * cannot reach the relay: its 65535-byte buffer is never short, so the
 * MSG_TRUNC branch is not reachable from a test.)
 */
static void big_roundtrip(const char *ip, size_t size)
{
	static unsigned char out[65535], in[65536];
	struct sock lst, sb, up;
	struct sockaddr_storage rs, from;
	struct udprelay_stats st;
	ssize_t n;

	for (size_t i = 0; i < size; i++)
		out[i] = (unsigned char)(i * 7 + 3);
	lst = udp_sock(ip, 1);
	sb = udp_sock(ip, 1);
	up = udp_sock(ip, 1);
	add_listener(&lst, "sb1");
	record(&sb, &up, 1);
	send_to(&sb, out, size, &lst.addr);
	n = recv_wait(&up, in, sizeof(in), &rs, WAIT_MS);
	cr_assert_eq(n, (ssize_t)size, "upstream got %zd of %zu", n, size);
	cr_assert_eq(memcmp(in, out, size), 0);
	send_to(&up, out, size, &rs);
	n = recv_wait(&sb, in, sizeof(in), &from, WAIT_MS);
	cr_assert_eq(n, (ssize_t)size, "sandbox got %zd of %zu", n, size);
	cr_assert_eq(memcmp(in, out, size), 0);
	ASSERT_ADDR(&from, &lst.addr, "reply source");
	/* an empty datagram is a datagram */
	send_to(&sb, out, 0, &lst.addr);
	n = recv_wait(&up, in, sizeof(in), NULL, WAIT_MS);
	cr_assert_eq(n, 0);
	st = stats();
	cr_assert_eq(st.dgrams_up, 2);
	cr_assert_eq(st.bytes_up, size);
	cr_assert_eq(st.bytes_down, size);
	cr_assert_eq(st.dropped, 0);
	close(lst.fd);
	close(sb.fd);
	close(up.fd);
}

Test(udprelay, max_size_datagrams_v4)
{
	start(0, 0, 0);
	big_roundtrip("127.0.0.1", 65507);
}

Test(udprelay, max_size_datagrams_v6)
{
	start(0, 0, 0);
	big_roundtrip("::1", 65527);
}

/* Total flow limit (max_flows) across sandboxes. */
Test(udprelay, total_flow_limit)
{
	struct sock lst, s1, s2, up;

	start(0, 0, 1);
	lst = udp_sock("127.0.0.1", 1);
	s1 = udp_sock("127.0.0.1", 1);
	s2 = udp_sock("127.0.0.1", 1);
	up = udp_sock("127.0.0.1", 1);
	add_listener(&lst, "x");
	record(&s1, &up, 1);
	record(&s2, &up, 2);
	exchange(&s1, &lst, &up, "1", "1", NULL);
	send_to(&s2, "2", 1, &lst.addr);
	wait_dropped(1);
	assert_quiet(&up, "upstream");
	cr_assert_eq(nevents("udp_flow_limit"), 1);
	cr_assert_str_eq(event("udp_flow_limit", 0).sandbox, "sb2");
	close(lst.fd);
	close(s1.fd);
	close(s2.fd);
	close(up.fd);
}

Test(udprelay, bad_arguments)
{
	struct udprelay_hooks ok = { .lookup = lookup_hook, .check = check_hook };
	struct udprelay_hooks no_check = { .lookup = lookup_hook };
	struct udprelay *r = NULL;
	char owner[UDPRELAY_SANDBOX_MAX + 2];
	struct sock s;
	int p[2];

	cr_assert_eq(loop_new(&L), 0);
	cr_assert_eq(udprelay_new(L, NULL, &no_check, &r), -EINVAL);
	cr_assert_eq(udprelay_new(NULL, NULL, &ok, &r), -EINVAL);
	cr_assert_eq(udprelay_new(L, NULL, NULL, &r), -EINVAL);
	cr_assert_null(r);
	cr_assert_eq(udprelay_new(L, NULL, &ok, &r), 0);
	/* no loop thread: this thread is the loop's until loop_run */
	s = udp_sock("127.0.0.1", 1);
	memset(owner, 'o', sizeof(owner) - 1);
	owner[sizeof(owner) - 1] = '\0';
	cr_assert_eq(udprelay_add_listener(r, s.fd, owner), -EINVAL);
	cr_assert_eq(udprelay_add_listener(r, -1, "x"), -EINVAL);
	cr_assert_eq(udprelay_add_listener(r, s.fd, NULL), -EINVAL);
	/* not a socket: no netns cookie */
	cr_assert_eq(pipe(p), 0);
	cr_assert_eq(udprelay_add_listener(r, p[0], "x"), -ENOTSOCK);
	close(p[0]);
	close(p[1]);
	udprelay_free(r);
	udprelay_free(NULL);
	loop_free(L);
	L = NULL;
	close(s.fd);
}
