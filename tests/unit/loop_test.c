// SPDX-License-Identifier: MIT
/* loop: io callbacks, masks, defers (incl. fairness and cancel), posts from
 * other threads, stop, free_later batch guarantees and the tick. Every run is
 * bounded: a watchdog io (timerfd) stops the loop if a test hangs. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "loop.h"

static struct loop *L;

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Watchdog: a timerfd that stops the loop and records that it fired. */
static struct loop_io wd_io;
static int wd_fired;

static void wd_cb(struct loop_io *io, uint32_t events)
{
	uint64_t v;

	(void)events;
	if (read(io->fd, &v, sizeof(v)) < 0)
		return;
	wd_fired = 1;
	loop_stop(L);
}

static void arm_watchdog(unsigned ms)
{
	struct itimerspec its = { .it_value = { .tv_sec = ms / 1000,
						.tv_nsec = (long)(ms % 1000) * 1000000 } };
	int fd;

	if (wd_io.registered) {
		loop_io_del(L, &wd_io);
		close(wd_io.fd);
	}
	fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	cr_assert(fd >= 0);
	cr_assert_eq(timerfd_settime(fd, 0, &its, NULL), 0);
	wd_fired = 0;
	cr_assert_eq(loop_io_add(L, &wd_io, fd, EPOLLIN, wd_cb), 0);
}

static void setup(void)
{
	cr_assert_eq(loop_new(&L), 0);
	arm_watchdog(3000);
}

static void teardown(void)
{
	loop_io_del(L, &wd_io);
	close(wd_io.fd);
	loop_free(L);
	L = NULL;
}

TestSuite(loop, .init = setup, .fini = teardown, .timeout = 10);

/* loop_stop is sticky (a stop that races loop_run's start is never lost), so
 * a test that runs twice moves io to a new loop, re-adding it with its mask. */
static void fresh_loop_keep(struct loop_io *io, unsigned wd_ms)
{
	int fd = io->fd;
	uint32_t ev = io->events;
	loop_io_cb cb = io->cb;

	loop_io_del(L, io);
	teardown();
	cr_assert_eq(loop_new(&L), 0);
	arm_watchdog(wd_ms);
	cr_assert_eq(loop_io_add(L, io, fd, ev, cb), 0);
}

Test(loop, stop_before_run_is_not_lost)
{
	uint64_t t0 = now_ms();

	loop_stop(L);
	cr_assert_eq(loop_run(L), 0);
	cr_assert_not(wd_fired);
	cr_assert_lt(now_ms() - t0, 500);
}

/* ---- io callbacks ---- */

struct pipe_io {
	struct loop_io io;
	int calls;
	uint32_t last_events;
	int stop_after;
};

static void pipe_cb(struct loop_io *io, uint32_t events)
{
	struct pipe_io *p = container_of(io, struct pipe_io, io);
	char b[64];

	p->calls++;
	p->last_events = events;
	if (events & EPOLLIN)
		while (read(io->fd, b, sizeof(b)) > 0)
			;
	if (p->calls >= p->stop_after)
		loop_stop(L);
}

Test(loop, io_callback_fires_on_readable_pipe)
{
	struct pipe_io p = { .stop_after = 1 };
	int fds[2];

	cr_assert_eq(pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
	cr_assert_eq(loop_io_add(L, &p.io, fds[0], EPOLLIN, pipe_cb), 0);
	cr_assert(p.io.registered);
	cr_assert_eq(p.io.events, EPOLLIN);
	cr_assert_eq(write(fds[1], "x", 1), 1);
	cr_assert_eq(loop_run(L), 0);
	cr_assert_not(wd_fired, "watchdog: callback never ran");
	cr_assert_eq(p.calls, 1);
	cr_assert(p.last_events & EPOLLIN);
	loop_io_del(L, &p.io);
	cr_assert_not(p.io.registered);
	loop_io_del(L, &p.io); /* safe twice */
	close(fds[0]);
	close(fds[1]);
}

Test(loop, io_callback_fires_on_eventfd)
{
	struct pipe_io p = { .stop_after = 1 };
	uint64_t one = 1;
	int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

	cr_assert(fd >= 0);
	cr_assert_eq(loop_io_add(L, &p.io, fd, EPOLLIN, pipe_cb), 0);
	cr_assert_eq(write(fd, &one, sizeof(one)), (ssize_t)sizeof(one));
	cr_assert_eq(loop_run(L), 0);
	cr_assert_not(wd_fired);
	cr_assert_eq(p.calls, 1);
	loop_io_del(L, &p.io);
	close(fd);
}

Test(loop, io_add_bad_fd_fails)
{
	struct pipe_io p = { 0 };

	cr_assert_lt(loop_io_add(L, &p.io, -1, EPOLLIN, pipe_cb), 0);
	cr_assert_not(p.io.registered);
	cr_assert_eq(loop_io_set(L, &p.io, EPOLLOUT), -EINVAL, "set on unregistered io");
}

/* Mask 0 first: a readable pipe must not call back; after loop_io_set(EPOLLIN)
 * it must. A one-shot defer checks "no callback" after the first round. */
struct mask_test {
	struct pipe_io p;
	struct loop_defer d;
	int rounds;
};

static struct mask_test *MT;

static void mask_defer(struct loop_defer *d)
{
	(void)d;
	MT->rounds++;
	if (MT->rounds < 5) {
		loop_defer(L, &MT->d); /* spin a few rounds with a readable, unwatched fd */
		return;
	}
	cr_assert_eq(MT->p.calls, 0, "callback with mask 0");
	cr_assert_eq(loop_io_set(L, &MT->p.io, EPOLLIN), 0);
	cr_assert_eq(MT->p.io.events, EPOLLIN);
}

Test(loop, io_set_changes_mask)
{
	struct mask_test mt = { .p.stop_after = 1, .d.cb = mask_defer };
	int fds[2];

	MT = &mt;
	cr_assert_eq(pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
	cr_assert_eq(loop_io_add(L, &mt.p.io, fds[0], 0, pipe_cb), 0);
	cr_assert_eq(write(fds[1], "x", 1), 1);
	loop_defer(L, &mt.d);
	cr_assert_eq(loop_run(L), 0);
	cr_assert_not(wd_fired);
	cr_assert_eq(mt.rounds, 5);
	cr_assert_eq(mt.p.calls, 1);
	/* Same mask again: a no-op that succeeds. */
	cr_assert_eq(loop_io_set(L, &mt.p.io, EPOLLIN), 0);
	/* Switch to EPOLLOUT on the read end of a pipe: never ready, so
	 * pending data no longer calls back. */
	cr_assert_eq(write(fds[1], "y", 1), 1);
	cr_assert_eq(loop_io_set(L, &mt.p.io, EPOLLOUT), 0);
	cr_assert_eq(mt.p.io.events, EPOLLOUT);
	mt.rounds = 0;
	mt.p.calls = 0;
	fresh_loop_keep(&mt.p.io, 300); /* stop is sticky: a new loop for a new run */
	cr_assert_eq(loop_run(L), 0);
	cr_assert(wd_fired, "loop should only end by the watchdog");
	cr_assert_eq(mt.p.calls, 0, "callback though mask is EPOLLOUT on a pipe read end");
	loop_io_del(L, &mt.p.io);
	close(fds[0]);
	close(fds[1]);
}

/* ---- defers ---- */

struct defer_rec {
	struct loop_defer d;
	int calls;
	int redefer;            /* re-defer itself this many times */
	int order[16];
	int norder;
};

static int seq[64], nseq;

static void rec_cb(struct loop_defer *d)
{
	struct defer_rec *r = container_of(d, struct defer_rec, d);

	r->calls++;
	if (nseq < 64)
		seq[nseq++] = r->redefer >= 0 ? (int)(intptr_t)r : 0;
	if (r->redefer > 0) {
		r->redefer--;
		loop_defer(L, d);
	}
}

static void stop_defer(struct loop_defer *d)
{
	(void)d;
	loop_stop(L);
}

Test(loop, defer_runs_once_and_is_idempotent)
{
	struct defer_rec a = { .d.cb = rec_cb };
	struct loop_defer stop = { .cb = stop_defer };

	loop_defer(L, &a.d);
	loop_defer(L, &a.d); /* idempotent while queued */
	cr_assert(a.d.queued);
	loop_defer(L, &stop);
	cr_assert_eq(loop_run(L), 0);
	cr_assert_not(wd_fired);
	cr_assert_eq(a.calls, 1);
	cr_assert_not(a.d.queued);
}

/* A defer runs before the loop sleeps: with nothing else to wake the loop
 * (no fd ready, tick 1 s away), a defer queued before loop_run must run at
 * once, not after the tick or the watchdog. */
static uint64_t t_defer_ran;

static void time_defer(struct loop_defer *d)
{
	(void)d;
	t_defer_ran = now_ms();
	loop_stop(L);
}

Test(loop, defer_runs_before_sleeping)
{
	struct loop_defer d = { .cb = time_defer };
	uint64_t t0 = now_ms();

	loop_defer(L, &d);
	cr_assert_eq(loop_run(L), 0);
	cr_assert_not(wd_fired);
	cr_assert_lt(t_defer_ran - t0, 200, "defer waited %llu ms",
		     (unsigned long long)(t_defer_ran - t0));
}

/* A defer that re-defers itself runs again next round, after the others of
 * this round, and ready fds are served between rounds: A (re-defers 3 times)
 * and B are queued; A's first call makes a pipe readable. Expected A B, then
 * the pipe (i), then A A A. A loop that drains defers until the queue is
 * empty starves the pipe (and would spin forever on a self-re-deferring
 * callback). */
struct fair {
	struct loop_defer a, b;
	int a_left;
	char log[32];
	int n;
	int wfd;
	struct loop_io io;
};

static struct fair *F;

static void fair_a(struct loop_defer *d)
{
	F->log[F->n++] = 'A';
	if (F->n == 1)
		cr_assert_eq(write(F->wfd, "x", 1), 1);
	if (F->a_left-- > 0)
		loop_defer(L, d);
	else
		loop_stop(L);
}

static void fair_b(struct loop_defer *d)
{
	(void)d;
	F->log[F->n++] = 'B';
}

static void fair_io(struct loop_io *io, uint32_t events)
{
	char b[8];

	(void)events;
	if (read(io->fd, b, sizeof(b)) > 0)
		F->log[F->n++] = 'i';
}

Test(loop, redefer_runs_next_round_no_starvation)
{
	struct fair f = { .a.cb = fair_a, .b.cb = fair_b, .a_left = 3 };
	int fds[2];

	F = &f;
	cr_assert_eq(pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
	f.wfd = fds[1];
	cr_assert_eq(loop_io_add(L, &f.io, fds[0], EPOLLIN, fair_io), 0);
	loop_defer(L, &f.a);
	loop_defer(L, &f.b);
	cr_assert_eq(loop_run(L), 0);
	cr_assert_not(wd_fired);
	f.log[f.n] = 0;
	cr_assert_str_eq(f.log, "ABiAAA");
	loop_io_del(L, &f.io);
	close(fds[0]);
	close(fds[1]);
}

Test(loop, defer_cancel)
{
	struct defer_rec a = { .d.cb = rec_cb }, b = { .d.cb = rec_cb }, c = { .d.cb = rec_cb };
	struct loop_defer stop = { .cb = stop_defer };

	loop_defer(L, &a.d);
	loop_defer(L, &b.d);
	loop_defer(L, &c.d);
	loop_defer_cancel(L, &c.d); /* the tail */
	loop_defer_cancel(L, &a.d); /* the head */
	cr_assert_not(a.d.queued);
	cr_assert_not(c.d.queued);
	loop_defer_cancel(L, &a.d); /* not queued: no-op */
	/* The queue must still be well formed: appending after the cancelled
	 * tail must run. */
	loop_defer(L, &stop);
	cr_assert_eq(loop_run(L), 0);
	cr_assert_not(wd_fired, "a defer queued after a cancelled tail was lost");
	cr_assert_eq(a.calls, 0);
	cr_assert_eq(b.calls, 1);
	cr_assert_eq(c.calls, 0);
}

/* Cancelling a defer from another defer's callback in the same round: the
 * owner of the cancelled one may be freed right after cancel (that is what
 * loop_defer_cancel is for), so its callback must not run. */
struct cancel_pair {
	struct loop_defer a;
	struct defer_rec *b;
};

static void cancel_other(struct loop_defer *d)
{
	struct cancel_pair *cp = container_of(d, struct cancel_pair, a);

	loop_defer_cancel(L, &cp->b->d);
	cp->b->calls = -100; /* an owner would free b here */
	loop_stop(L);
}

static void b_must_not_run(struct loop_defer *d)
{
	struct defer_rec *r = container_of(d, struct defer_rec, d);

	r->calls++;
}

Test(loop, defer_cancel_from_callback_same_round)
{
	/* BUG (lead to fix): user/loop.c:230 loop_run_defers detaches the queue
	 * and walks it with a `next` captured before each callback, while
	 * loop_defer_cancel (user/loop.c:158) searches only the live l->defers
	 * list. A defer cancelled by an earlier callback of the same round is
	 * therefore still called, and if its owner was freed after cancel (what
	 * cancel is for), that is a use-after-free. */
	struct defer_rec b = { .d.cb = b_must_not_run };
	struct cancel_pair cp = { .a.cb = cancel_other, .b = &b };

	loop_defer(L, &cp.a);
	loop_defer(L, &b.d);
	cr_assert_eq(loop_run(L), 0);
	cr_assert_eq(b.calls, -100, "cancelled defer ran");
}

/* ---- posts from other threads ---- */

#define NPOST 200

struct post_test {
	pthread_t loop_thread;
	int got[NPOST];
	int n;
	int wrong_thread;
};

static struct post_test PT;

static void post_fn(void *arg)
{
	if (!pthread_equal(pthread_self(), PT.loop_thread))
		PT.wrong_thread++;
	if (PT.n < NPOST)
		PT.got[PT.n] = (int)(intptr_t)arg;
	PT.n++;
	if (PT.n == NPOST)
		loop_stop(L);
}

static void *poster(void *arg)
{
	(void)arg;
	for (int i = 0; i < NPOST; i++) {
		if (loop_post(L, post_fn, (void *)(intptr_t)i) < 0)
			return (void *)1;
		if (i % 37 == 0)
			usleep(1000);
	}
	return NULL;
}

Test(loop, post_from_other_thread_runs_on_loop_thread_in_order)
{
	pthread_t t;
	void *tr;

	memset(&PT, 0, sizeof(PT));
	PT.loop_thread = pthread_self();
	cr_assert_eq(pthread_create(&t, NULL, poster, NULL), 0);
	cr_assert_eq(loop_run(L), 0);
	pthread_join(t, &tr);
	cr_assert_null(tr);
	cr_assert_not(wd_fired, "only %d of %d posts ran", PT.n, NPOST);
	cr_assert_eq(PT.n, NPOST);
	cr_assert_eq(PT.wrong_thread, 0);
	for (int i = 0; i < NPOST; i++)
		cr_assert_eq(PT.got[i], i, "post %d ran as %d", i, PT.got[i]);
}

static void *stopper(void *arg)
{
	(void)arg;
	usleep(100 * 1000);
	loop_stop(L);
	return NULL;
}

Test(loop, stop_from_other_thread_ends_run)
{
	pthread_t t;
	uint64_t t0 = now_ms();

	cr_assert_eq(pthread_create(&t, NULL, stopper, NULL), 0);
	cr_assert_eq(loop_run(L), 0);
	pthread_join(t, NULL);
	cr_assert_not(wd_fired, "loop_stop from another thread did not wake the loop");
	cr_assert_lt(now_ms() - t0, 900);
}

/* ---- free_later ---- */

/* Two fds ready in the same batch; whichever callback runs first deletes the
 * other's io and frees its owner with loop_free_later. The other callback
 * must not run, and the owner is freed after the batch (once). */
struct victim {
	struct loop_io io;
	int fds[2];
	int calls;
	struct victim *other;
};

static int freed, total_calls;
static struct victim *survivor;

static void victim_free(void *p)
{
	struct victim *v = p;

	freed++;
	close(v->fds[0]);
	close(v->fds[1]);
	memset(v, 0xa5, sizeof(*v));
	free(v);
}

static void victim_cb(struct loop_io *io, uint32_t events)
{
	struct victim *v = container_of(io, struct victim, io);

	(void)events;
	v->calls++;
	total_calls++;
	if (v->other) {
		survivor = v;
		struct victim *o = v->other;

		o->other = NULL;
		loop_io_del(L, &o->io);
		cr_assert_eq(loop_free_later(L, o, victim_free), 0);
		cr_assert_eq(freed, 0, "freed inside the batch");
		v->other = NULL;
	}
	loop_stop(L);
}

Test(loop, free_later_deleted_io_gets_no_callback_in_same_batch)
{
	for (int round = 0; round < 2; round++) {
		struct victim *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));

		freed = total_calls = 0;
		survivor = NULL;
		cr_assert(a && b);
		cr_assert_eq(pipe2(a->fds, O_NONBLOCK | O_CLOEXEC), 0);
		cr_assert_eq(pipe2(b->fds, O_NONBLOCK | O_CLOEXEC), 0);
		a->other = b;
		b->other = a;
		/* Register in both orders across rounds. */
		if (round == 0) {
			cr_assert_eq(loop_io_add(L, &a->io, a->fds[0], EPOLLIN, victim_cb), 0);
			cr_assert_eq(loop_io_add(L, &b->io, b->fds[0], EPOLLIN, victim_cb), 0);
		} else {
			cr_assert_eq(loop_io_add(L, &b->io, b->fds[0], EPOLLIN, victim_cb), 0);
			cr_assert_eq(loop_io_add(L, &a->io, a->fds[0], EPOLLIN, victim_cb), 0);
		}
		/* Both ready before the loop waits: one epoll_wait returns both. */
		cr_assert_eq(write(a->fds[1], "x", 1), 1);
		cr_assert_eq(write(b->fds[1], "x", 1), 1);
		cr_assert_eq(loop_run(L), 0);
		cr_assert_not(wd_fired);
		cr_assert_eq(freed, 1, "victim freed %d times after the batch", freed);
		cr_assert_eq(total_calls, 1, "deleted io still got its callback (round %d)", round);
		cr_assert_not_null(survivor);
		cr_assert_eq(survivor->calls, 1, "round %d", round);
		loop_io_del(L, &survivor->io);
		close(survivor->fds[0]);
		close(survivor->fds[1]);
		free(survivor);
		teardown();
		setup();
	}
}

/* loop_free_later from a defer callback also runs after the round. */
static int fl_count;

static void fl_fn(void *p)
{
	(void)p;
	fl_count++;
}

static void fl_defer(struct loop_defer *d)
{
	(void)d;
	cr_assert_eq(loop_free_later(L, NULL, fl_fn), 0);
	cr_assert_eq(fl_count, 0);
	loop_stop(L);
}

Test(loop, free_later_from_defer_runs_after_round)
{
	struct loop_defer d = { .cb = fl_defer };

	loop_defer(L, &d);
	cr_assert_eq(loop_run(L), 0);
	cr_assert_eq(fl_count, 1);
}

/* ---- tick and time ---- */

static uint64_t ticks[8];
static int nticks;

static void tick_cb(void *arg)
{
	cr_assert_eq(arg, (void *)&nticks);
	if (nticks < 8)
		ticks[nticks] = now_ms();
	nticks++;
	if (nticks == 2)
		loop_stop(L);
}

Test(loop, tick_fires_about_once_a_second)
{
	uint64_t t0 = now_ms(), l0 = loop_now_ms(L);

	arm_watchdog(2500);
	loop_set_tick(L, tick_cb, &nticks);
	cr_assert_eq(loop_run(L), 0);
	cr_assert_not(wd_fired, "only %d ticks in 2.5 s", nticks);
	cr_assert_eq(nticks, 2);
	cr_assert_geq(ticks[0] - t0, 900, "first tick after %llu ms",
		      (unsigned long long)(ticks[0] - t0));
	cr_assert_leq(ticks[0] - t0, 1300);
	cr_assert_geq(ticks[1] - ticks[0], 900);
	cr_assert_leq(ticks[1] - ticks[0], 1200);
	/* loop_now_ms advanced with the loop. */
	cr_assert_geq(loop_now_ms(L) - l0, 1800);
}
