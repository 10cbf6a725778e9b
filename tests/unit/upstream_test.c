// SPDX-License-Identifier: MIT
/* upstream: the dial-time address filter, and the pool against a real TCP
 * server. up_acquire() never dials loopback, so each pool test moves its own
 * process into a private network namespace (unshare), puts 198.18.77.1/32 on
 * that namespace's lo and serves from there: nothing leaves the test's netns.
 * Root only (skipped otherwise). Each test runs one bounded loop_run driven by
 * a 10 ms timerfd that calls the test's step function. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "loop.h"
#include "resolve.h"
#include "upstream.h"

TestSuite(upstream, .timeout = 20);

/* ---- address filter ---- */

static bool allowed(const char *ip)
{
	struct sockaddr_storage ss;

	cr_assert_eq(resolve_literal(ip, 443, &ss), 0, "bad literal %s", ip);
	return up_addr_allowed(&ss);
}

Test(upstream, addr_allowed_table)
{
	static const char *const denied[] = {
		"127.0.0.1", "127.1.2.3", "0.0.0.0", "0.1.2.3", "169.254.169.254",
		"169.254.170.2", "169.254.0.1", "224.0.0.1", "239.255.255.250", "240.0.0.1",
		"255.255.255.255", "::1", "::", "fe80::1", "febf::1", "ff02::1", "ff05::2",
		"::ffff:169.254.169.254", "::ffff:127.0.0.1", "::ffff:0.0.0.0",
		"::ffff:224.0.0.1", "::169.254.169.254", "::127.0.0.1",
	};
	static const char *const ok[] = {
		"198.18.0.2", "93.184.216.34", "10.0.0.1", "192.168.1.1", "1.1.1.1",
		"169.253.255.255", "169.255.0.1", "126.255.255.255", "128.0.0.1",
		"223.255.255.255", "2001:db8::1", "2606:4700::1111", "::ffff:93.184.216.34",
	};
	struct sockaddr_storage ss = { .ss_family = AF_UNIX };

	for (size_t i = 0; i < sizeof(denied) / sizeof(denied[0]); i++)
		cr_assert_not(allowed(denied[i]), "%s must not be dialled", denied[i]);
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		cr_assert(allowed(ok[i]), "%s must be allowed", ok[i]);
	cr_assert_not(up_addr_allowed(&ss), "a non-inet family");
}

Test(upstream, addr_allowed_cloud_metadata_ipv6)
{
	/* AWS IMDS over IPv6 (a ULA, not link-local) and its v4 forms. */
	cr_assert_not(allowed("fd00:ec2::254"));
	cr_assert_not(allowed("::ffff:169.254.169.254"));
}

/* ---- pool against a server in a private netns ---- */

#define UP_IP "198.18.77.1"
#define UP_PORT 8080
#define DEAD_PORT 8081

static int run_cmd(const char *const argv[])
{
	pid_t pid = fork();
	int st;

	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		if (null >= 0) {
			dup2(null, 1);
			dup2(null, 2);
		}
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &st, 0) < 0)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A private netns with lo up and UP_IP on it; skip when not possible. */
static void private_netns_or_skip(void)
{
	static const char *const up[] = { "/usr/sbin/ip", "link", "set", "lo", "up", NULL };
	static const char *const addr[] = { "/usr/sbin/ip", "addr", "add", UP_IP "/32", "dev",
					    "lo", NULL };

	if (geteuid() != 0)
		cr_skip("not root: the pool tests need a private network namespace");
	if (unshare(CLONE_NEWNET) < 0)
		cr_skip("unshare(CLONE_NEWNET): %s", strerror(errno));
	if (access(up[0], X_OK) < 0)
		cr_skip("%s not found", up[0]);
	cr_assert_eq(run_cmd(up), 0, "ip link set lo up");
	cr_assert_eq(run_cmd(addr), 0, "ip addr add " UP_IP "/32 dev lo");
}

/* An echo server; counts accepted and closed connections. */
struct server {
	int lfd;
	int stop_pipe[2];
	pthread_t th;
	int accepted, closed, close_all;
};

static void *server_main(void *arg)
{
	struct server *s = arg;
	struct pollfd p[34];
	int nc = 0;
	uint64_t guard = 0;

	for (;;) {
		p[0] = (struct pollfd){ .fd = s->stop_pipe[0], .events = POLLIN };
		p[1] = (struct pollfd){ .fd = s->lfd, .events = POLLIN };
		if (poll(p, (nfds_t)(2 + nc), 50) < 0 || p[0].revents || ++guard > 100000)
			break;
		if (__atomic_load_n(&s->close_all, __ATOMIC_SEQ_CST)) {
			for (int i = 0; i < nc; i++) {
				close(p[2 + i].fd);
				__atomic_add_fetch(&s->closed, 1, __ATOMIC_SEQ_CST);
			}
			nc = 0;
			__atomic_store_n(&s->close_all, 0, __ATOMIC_SEQ_CST);
			continue;
		}
		if ((p[1].revents & POLLIN) && nc < 32) {
			int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);

			if (fd >= 0) {
				p[2 + nc++] = (struct pollfd){ .fd = fd, .events = POLLIN };
				__atomic_add_fetch(&s->accepted, 1, __ATOMIC_SEQ_CST);
			}
		}
		for (int i = 0; i < nc; i++) {
			char buf[4096];
			ssize_t n;

			if (!p[2 + i].revents)
				continue;
			n = read(p[2 + i].fd, buf, sizeof(buf));
			if (n > 0) {
				if (write(p[2 + i].fd, buf, (size_t)n) < 0)
					n = 0;
			}
			if (n <= 0) {
				close(p[2 + i].fd);
				__atomic_add_fetch(&s->closed, 1, __ATOMIC_SEQ_CST);
				p[2 + i] = p[2 + nc - 1];
				p[2 + i].revents = 0;
				nc--;
				i--;
			}
		}
	}
	for (int i = 0; i < nc; i++)
		close(p[2 + i].fd);
	return NULL;
}

static void server_start(struct server *s)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(UP_PORT) };
	int one = 1;

	memset(s, 0, sizeof(*s));
	inet_pton(AF_INET, UP_IP, &sin.sin_addr);
	s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert(s->lfd >= 0);
	setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	cr_assert_eq(bind(s->lfd, (struct sockaddr *)&sin, sizeof(sin)), 0, "bind: %s",
		     strerror(errno));
	cr_assert_eq(listen(s->lfd, 16), 0);
	cr_assert_eq(pipe(s->stop_pipe), 0);
	cr_assert_eq(pthread_create(&s->th, NULL, server_main, s), 0);
}

static void server_stop(struct server *s)
{
	cr_assert_eq(write(s->stop_pipe[1], "x", 1), 1);
	pthread_join(s->th, NULL);
	close(s->lfd);
	close(s->stop_pipe[0]);
	close(s->stop_pipe[1]);
}

static int load(int *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }

/* The world of one test: loop, pool, server, a step driver. */
struct world {
	struct loop *l;
	struct up_pool *pool;
	struct server srv;
	struct loop_io drv;
	int phase;
	uint64_t t0, mark;
	bool (*step)(struct world *w);  /* true: done */
	bool timed_out;
	struct upconn *a, *b, *c;
	int notified;
};

static void notify(void *owner)
{
	struct upconn **slot = owner;
	/* The owner is the slot holding the upconn. */
	up_progress(*slot);
}

static void drive(struct world *w)
{
	if (w->step(w))
		loop_stop(w->l);
}

static void drv_cb(struct loop_io *io, uint32_t events)
{
	struct world *w = container_of(io, struct world, drv);
	uint64_t v;

	(void)events;
	if (read(io->fd, &v, sizeof(v)) < 0)
		return;
	if (loop_now_ms(w->l) - w->t0 > 8000) {
		w->timed_out = true;
		loop_stop(w->l);
		return;
	}
	drive(w);
}

static void world_init(struct world *w, const char *hosts, unsigned idle_max,
		       unsigned idle_timeout_ms)
{
	char path[64] = "/tmp/sluice-up-test-XXXXXX", err[256] = "";
	struct itimerspec its = { .it_interval = { .tv_nsec = 10000000 },
				  .it_value = { .tv_nsec = 10000000 } };
	int fd;

	memset(w, 0, sizeof(*w));
	private_netns_or_skip();
	fd = mkstemp(path);
	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, hosts, strlen(hosts)), (ssize_t)strlen(hosts));
	close(fd);
	cr_assert_eq(resolve_init(path, err, sizeof(err)), 0, "%s", err);
	unlink(path);
	server_start(&w->srv);
	cr_assert_eq(loop_new(&w->l), 0);
	w->pool = up_pool_new(w->l, NULL, idle_max, idle_timeout_ms);
	cr_assert_not_null(w->pool);
	fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	cr_assert(fd >= 0);
	cr_assert_eq(timerfd_settime(fd, 0, &its, NULL), 0);
	cr_assert_eq(loop_io_add(w->l, &w->drv, fd, EPOLLIN, drv_cb), 0);
	w->t0 = loop_now_ms(w->l);
}

static void world_run(struct world *w)
{
	cr_assert_eq(loop_run(w->l), 0);
	cr_assert_not(w->timed_out, "timed out in phase %d", w->phase);
}

static void world_free(struct world *w)
{
	up_pool_free(w->pool);
	loop_io_del(w->l, &w->drv);
	close(w->drv.fd);
	loop_free(w->l);
	server_stop(&w->srv);
}

static const char HOSTS[] = "198.18.77.1 up.test\n"
			    "169.254.169.254 meta.test\n"
			    "127.0.0.1 local.test\n"
			    "169.254.169.254 mixed.test\n"
			    "198.18.77.1 mixed.test\n";

#define KEY_A "sb1|http|up.test|8080"
#define KEY_B "sb2|http|up.test|8080"

static struct upconn *acquire(struct world *w, struct upconn **slot, const char *key,
			      const char *host, uint16_t port)
{
	*slot = up_acquire(w->pool, key, host, port, false, NULL, NULL, notify, slot);
	cr_assert_not_null(*slot);
	return *slot;
}

/* Echo "ping" through u: write once, then poll-read (bounded). */
static void echo_check(struct upconn *u)
{
	char buf[16];
	ssize_t n = 0;
	struct pollfd p = { .fd = u->c.fd, .events = POLLIN };

	cr_assert_eq(conn_write(&u->c, "ping", 4), 4);
	for (int i = 0; i < 100 && n == 0; i++) {
		poll(&p, 1, 20);
		n = conn_read(&u->c, buf, sizeof(buf));
	}
	cr_assert_eq(n, 4, "echo: %zd", n);
	cr_assert(memcmp(buf, "ping", 4) == 0);
}

static bool step_reuse(struct world *w)
{
	switch (w->phase) {
	case 0:
		acquire(w, &w->a, KEY_A, UP_IP, UP_PORT);
		cr_assert_not(w->a->reused);
		cr_assert(w->a->state == UP_CONNECTING || w->a->state == UP_READY,
			  "state %d", w->a->state);
		w->phase = 1;
		return false;
	case 1:
		if (w->a->state == UP_FAILED)
			cr_assert_fail("connect failed: %d %s %s", w->a->fail_status, w->a->fail_code,
				 w->a->fail_detail);
		if (w->a->state != UP_READY)
			return false;
		cr_assert_str_eq(w->a->addr_text, UP_IP ":8080");
		cr_assert(w->a->c.handshake_done);
		echo_check(w->a);
		cr_assert_eq(load(&w->srv.accepted), 1);
		up_release(w->a, true);
		/* Same key: the very same connection, from the pool. */
		acquire(w, &w->b, KEY_A, "up.test", UP_PORT);
		cr_assert_eq(w->b, w->a, "same key did not reuse the idle connection");
		cr_assert(w->b->reused);
		cr_assert_eq(w->b->state, UP_READY);
		cr_assert_eq(w->b->owner, &w->b, "owner not updated on reuse");
		up_set_events(w->b, EPOLLIN);
		echo_check(w->b);
		/* Another sandbox, same host: never shares. */
		acquire(w, &w->c, KEY_B, "up.test", UP_PORT);
		cr_assert_neq(w->c, w->b);
		cr_assert_not(w->c->reused);
		w->phase = 2;
		return false;
	case 2:
		if (w->c->state == UP_FAILED)
			cr_assert_fail("connect failed: %s", w->c->fail_detail);
		if (w->c->state != UP_READY)
			return false;
		echo_check(w->c);
		cr_assert_eq(load(&w->srv.accepted), 2);
		up_release(w->b, true);
		up_release(w->c, false); /* not reusable: closed */
		w->phase = 3;
		return false;
	case 3:
		if (load(&w->srv.closed) < 1)
			return false;
		cr_assert_eq(load(&w->srv.closed), 1);
		/* B's connection is gone; A's is still pooled. */
		acquire(w, &w->c, KEY_B, "up.test", UP_PORT);
		cr_assert_not(w->c->reused);
		acquire(w, &w->a, KEY_A, "up.test", UP_PORT);
		cr_assert(w->a->reused);
		up_release(w->a, false);
		up_release(w->c, false);
		return true;
	}
	return true;
}

Test(upstream, pool_connect_reuse_and_keys)
{
	struct world w;

	world_init(&w, HOSTS, 8, 60000);
	w.step = step_reuse;
	world_run(&w);
	world_free(&w);
}

static bool step_idle(struct world *w)
{
	switch (w->phase) {
	case 0:
		acquire(w, &w->a, KEY_A, "up.test", UP_PORT);
		acquire(w, &w->b, KEY_B, "up.test", UP_PORT);
		w->phase = 1;
		return false;
	case 1:
		if (w->a->state != UP_READY || w->b->state != UP_READY) {
			cr_assert(w->a->state != UP_FAILED && w->b->state != UP_FAILED);
			return false;
		}
		up_release(w->a, true);
		up_release(w->b, true);
		w->mark = loop_now_ms(w->l);
		up_pool_tick(w->pool); /* too early: both stay */
		w->phase = 2;
		return false;
	case 2:
		cr_assert_eq(load(&w->srv.closed), 0, "closed before the idle timeout");
		if (loop_now_ms(w->l) - w->mark < 150)
			return false;
		up_pool_tick(w->pool);
		w->phase = 3;
		return false;
	case 3:
		if (load(&w->srv.closed) < 2)
			return false;
		/* Both gone from the pool: a new connection for A. */
		acquire(w, &w->a, KEY_A, "up.test", UP_PORT);
		cr_assert_not(w->a->reused, "an expired connection came out of the pool");
		up_release(w->a, false);
		return true;
	}
	return true;
}

Test(upstream, pool_idle_timeout_closes)
{
	struct world w;

	world_init(&w, HOSTS, 8, 100);
	w.step = step_idle;
	world_run(&w);
	world_free(&w);
}

static bool step_server_close(struct world *w)
{
	switch (w->phase) {
	case 0:
		acquire(w, &w->a, KEY_A, "up.test", UP_PORT);
		w->phase = 1;
		return false;
	case 1:
		if (w->a->state != UP_READY)
			return false;
		up_release(w->a, true);
		__atomic_store_n(&w->srv.close_all, 1, __ATOMIC_SEQ_CST);
		w->mark = loop_now_ms(w->l);
		w->phase = 2;
		return false;
	case 2:
		/* Give the loop time to see the idle connection's EOF. */
		if (load(&w->srv.closed) < 1 || loop_now_ms(w->l) - w->mark < 100)
			return false;
		acquire(w, &w->b, KEY_A, "up.test", UP_PORT);
		cr_assert_not(w->b->reused, "a connection the server closed was reused");
		up_release(w->b, false);
		return true;
	}
	return true;
}

Test(upstream, pool_drops_idle_conn_closed_by_server)
{
	struct world w;

	world_init(&w, HOSTS, 8, 60000);
	w.step = step_server_close;
	world_run(&w);
	world_free(&w);
}

static bool step_evict(struct world *w)
{
	switch (w->phase) {
	case 0:
		acquire(w, &w->a, KEY_A, "up.test", UP_PORT);
		acquire(w, &w->b, KEY_B, "up.test", UP_PORT);
		w->phase = 1;
		return false;
	case 1:
		if (w->a->state != UP_READY || w->b->state != UP_READY)
			return false;
		up_release(w->a, true);
		up_release(w->b, true); /* idle_max 1: A (least recent) goes */
		w->phase = 2;
		return false;
	case 2:
		if (load(&w->srv.closed) < 1)
			return false;
		acquire(w, &w->c, KEY_B, "up.test", UP_PORT);
		cr_assert(w->c->reused, "the most recent idle connection was evicted");
		acquire(w, &w->a, KEY_A, "up.test", UP_PORT);
		cr_assert_not(w->a->reused);
		up_release(w->a, false);
		up_release(w->c, false);
		return true;
	}
	return true;
}

Test(upstream, pool_idle_max_evicts_least_recent)
{
	struct world w;

	world_init(&w, HOSTS, 1, 60000);
	w.step = step_evict;
	world_run(&w);
	world_free(&w);
}

static bool step_refused(struct world *w)
{
	switch (w->phase) {
	case 0:
		acquire(w, &w->a, "sb1|http|up.test|8081", "up.test", DEAD_PORT);
		w->phase = 1;
		return false;
	case 1:
		if (w->a->state != UP_FAILED) {
			cr_assert_neq(w->a->state, UP_READY, "connected to a port with no listener");
			return false;
		}
		cr_assert_eq(w->a->fail_status, 502);
		cr_assert_str_eq(w->a->fail_code, "upstream_connect_failed");
		cr_assert_not_null(strstr(w->a->fail_detail, "refused"), "detail '%s'",
				   w->a->fail_detail);
		up_release(w->a, true); /* a failed one is never pooled */
		acquire(w, &w->b, "sb1|http|up.test|8081", "up.test", DEAD_PORT);
		cr_assert_not(w->b->reused);
		up_release(w->b, false);
		return true;
	}
	return true;
}

Test(upstream, connection_refused_is_502)
{
	struct world w;

	world_init(&w, HOSTS, 8, 60000);
	w.step = step_refused;
	world_run(&w);
	world_free(&w);
}

static bool step_denied(struct world *w)
{
	static const char *const hosts[] = { "meta.test", "169.254.169.254", "local.test",
					     "127.0.0.1", "::1", "::ffff:169.254.169.254" };

	for (size_t i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++) {
		/* Answered synchronously: the failure is there on return. */
		acquire(w, &w->a, "sb1|http|x|80", hosts[i], 80);
		cr_assert_eq(w->a->state, UP_FAILED, "%s: state %d", hosts[i], w->a->state);
		cr_assert_eq(w->a->fail_status, 403, "%s", hosts[i]);
		cr_assert_str_eq(w->a->fail_code, "upstream_address_denied");
		cr_assert_not_null(strstr(w->a->fail_detail, hosts[i]), "detail '%s'",
				   w->a->fail_detail);
		up_release(w->a, false);
	}
	cr_assert_eq(load(&w->srv.accepted), 0);
	/* A name with a denied and an allowed address dials only the allowed. */
	acquire(w, &w->b, "sb1|http|mixed.test|8080", "mixed.test", UP_PORT);
	cr_assert_neq(w->b->state, UP_FAILED, "%s", w->b->fail_detail);
	cr_assert_str_eq(w->b->addr_text, UP_IP ":8080");
	up_release(w->b, false);
	return true;
}

Test(upstream, metadata_and_loopback_are_403)
{
	struct world w;

	world_init(&w, HOSTS, 8, 60000);
	w.step = step_denied;
	world_run(&w);
	world_free(&w);
}
