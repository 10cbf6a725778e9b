// SPDX-License-Identifier: MIT
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "loop.h"

struct loop_post_item {
	struct loop_post_item *next;
	void (*fn)(void *arg);
	void *arg;
};

struct loop {
	int epfd;
	struct loop_io wake;            /* eventfd: posts and stop */
	pthread_mutex_t post_lock;
	struct loop_post_item *posts, **posts_tail;
	struct loop_defer *defers, **defers_tail;
	struct loop_defer *running;     /* the round being run by loop_run_defers */
	struct loop_post_item *garbage;  /* fn(arg) after the batch */
	void (*tick_cb)(void *arg);
	void *tick_arg;
	uint64_t now_ms, next_tick_ms;
	atomic_int stop;
};

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void loop_run_posts(struct loop *l)
{
	struct loop_post_item *it, *next;

	pthread_mutex_lock(&l->post_lock);
	it = l->posts;
	l->posts = NULL;
	l->posts_tail = &l->posts;
	pthread_mutex_unlock(&l->post_lock);
	for (; it; it = next) {
		next = it->next;
		it->fn(it->arg);
		free(it);
	}
}

static void wake_cb(struct loop_io *io, uint32_t events)
{
	uint64_t v;

	(void)events;
	while (read(io->fd, &v, sizeof(v)) > 0)
		;
}

int loop_new(struct loop **ret_loop)
{
	struct loop *l;
	int fd, r;

	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0) {
		r = -errno;
		goto out_free;
	}
	fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		goto out_close_ep;
	}
	pthread_mutex_init(&l->post_lock, NULL);
	l->posts_tail = &l->posts;
	l->defers_tail = &l->defers;
	l->now_ms = mono_ms();
	l->next_tick_ms = l->now_ms + 1000;
	r = loop_io_add(l, &l->wake, fd, EPOLLIN, wake_cb);
	if (r < 0) {
		close(fd);
		goto out_close_ep;
	}
	*ret_loop = l;
	return 0;

out_close_ep:
	close(l->epfd);
out_free:
	free(l);
	return r;
}

void loop_free(struct loop *l)
{
	if (!l)
		return;
	loop_run_posts(l);
	close(l->wake.fd);
	close(l->epfd);
	pthread_mutex_destroy(&l->post_lock);
	free(l);
}

int loop_io_add(struct loop *l, struct loop_io *io, int fd, uint32_t events, loop_io_cb cb)
{
	struct epoll_event ev = { .events = events, .data.ptr = io };

	io->fd = fd;
	io->cb = cb;
	io->events = events;
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		return -errno;
	io->registered = true;
	return 0;
}

int loop_io_set(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = io };

	if (!io->registered)
		return -EINVAL;
	if (io->events == events)
		return 0;
	if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, io->fd, &ev) < 0)
		return -errno;
	io->events = events;
	return 0;
}

void loop_io_del(struct loop *l, struct loop_io *io)
{
	if (!io->registered)
		return;
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, io->fd, NULL);
	io->registered = false;
}

void loop_defer(struct loop *l, struct loop_defer *d)
{
	if (d->queued)
		return;
	d->queued = true;
	d->next = NULL;
	*l->defers_tail = d;
	l->defers_tail = &d->next;
}

static bool unlink_from(struct loop_defer **pp, struct loop_defer ***tail, struct loop_defer *d)
{
	for (; *pp; pp = &(*pp)->next) {
		if (*pp == d) {
			*pp = d->next;
			if (tail && *tail == &d->next)
				*tail = pp;
			return true;
		}
	}
	return false;
}

void loop_defer_cancel(struct loop *l, struct loop_defer *d)
{
	if (!d->queued)
		return;
	/* It may sit in the queue for the next round or in the round now running. */
	if (!unlink_from(&l->defers, &l->defers_tail, d))
		unlink_from(&l->running, NULL, d);
	d->queued = false;
}

void loop_set_tick(struct loop *l, void (*cb)(void *arg), void *arg)
{
	l->tick_cb = cb;
	l->tick_arg = arg;
}

int loop_post(struct loop *l, void (*fn)(void *arg), void *arg)
{
	struct loop_post_item *it = malloc(sizeof(*it));
	uint64_t one = 1;
	ssize_t n;

	if (!it)
		return -ENOMEM;
	it->fn = fn;
	it->arg = arg;
	it->next = NULL;
	pthread_mutex_lock(&l->post_lock);
	*l->posts_tail = it;
	l->posts_tail = &it->next;
	pthread_mutex_unlock(&l->post_lock);
	n = write(l->wake.fd, &one, sizeof(one));
	(void)n; /* EAGAIN means the counter is already non-zero: awake anyway */
	return 0;
}

uint64_t loop_now_ms(struct loop *l) { return l->now_ms; }

int loop_free_later(struct loop *l, void *ptr, void (*fn)(void *ptr))
{
	struct loop_post_item *it = malloc(sizeof(*it));

	if (!it) {
		/* Leaking is better than a use-after-free. */
		return -ENOMEM;
	}
	it->fn = fn;
	it->arg = ptr;
	it->next = l->garbage;
	l->garbage = it;
	return 0;
}

static void loop_collect(struct loop *l)
{
	struct loop_post_item *it = l->garbage, *next;

	l->garbage = NULL;
	for (; it; it = next) {
		next = it->next;
		it->fn(it->arg);
		free(it);
	}
}

static void loop_run_defers(struct loop *l)
{
	/* Take the current queue: callbacks that re-defer run next round, so a
	 * busy connection cannot starve the others. A callback may cancel a
	 * later entry of this round (loop_defer_cancel looks in l->running). */
	struct loop_defer *d;

	l->running = l->defers;
	l->defers = NULL;
	l->defers_tail = &l->defers;
	while ((d = l->running)) {
		l->running = d->next;
		d->queued = false;
		d->cb(d);
	}
}

int loop_run(struct loop *l)
{
	struct epoll_event evs[128];

	while (!atomic_load(&l->stop)) {
		int timeout, n;

		l->now_ms = mono_ms();
		if (l->now_ms >= l->next_tick_ms) {
			l->next_tick_ms = l->now_ms + 1000;
			if (l->tick_cb)
				l->tick_cb(l->tick_arg);
		}
		timeout = l->defers ? 0 : (int)(l->next_tick_ms - l->now_ms);
		n = epoll_wait(l->epfd, evs, 128, timeout);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		l->now_ms = mono_ms();
		for (int i = 0; i < n; i++) {
			struct loop_io *io = evs[i].data.ptr;

			if (io == &l->wake) {
				wake_cb(io, evs[i].events);
				loop_run_posts(l);
				continue;
			}
			/* Deleted earlier in this batch: its owner is going away. */
			if (!io->registered)
				continue;
			io->cb(io, evs[i].events);
		}
		loop_run_defers(l);
		loop_collect(l);
	}
	return 0;
}

void loop_stop(struct loop *l)
{
	uint64_t one = 1;
	ssize_t n;

	atomic_store(&l->stop, 1);
	n = write(l->wake.fd, &one, sizeof(one));
	(void)n;
}
