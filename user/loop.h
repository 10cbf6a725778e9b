/* SPDX-License-Identifier: MIT */
/*
 * loop: one epoll event loop per worker thread. It knows only fds, deferred
 * callbacks, a once-a-second tick and functions posted from other threads.
 * Level-triggered: a callback that stops early must loop_defer() itself.
 */
#ifndef SLUICE_LOOP_H
#define SLUICE_LOOP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>

struct loop;
struct loop_io;

typedef void (*loop_io_cb)(struct loop_io *io, uint32_t events);

/* Embed in the owner; container_of gets back to it in the callback. */
struct loop_io {
	int fd;
	uint32_t events;        /* currently registered EPOLL* mask */
	bool registered;
	loop_io_cb cb;
};

struct loop_defer {
	struct loop_defer *next;
	bool queued;
	void (*cb)(struct loop_defer *d);
};

#define container_of(ptr, type, member) ((type *)((char *)(ptr) - __builtin_offsetof(type, member)))

int loop_new(struct loop **ret_loop);
void loop_free(struct loop *l);

/* Register fd with events (may be 0); 0 or -errno. */
int loop_io_add(struct loop *l, struct loop_io *io, int fd, uint32_t events, loop_io_cb cb);
/* Change the mask; a no-op when unchanged. */
int loop_io_set(struct loop *l, struct loop_io *io, uint32_t events);
/* Unregister (the caller closes the fd). Safe on an unregistered io. */
void loop_io_del(struct loop *l, struct loop_io *io);

/* Run d->cb once before the loop next sleeps. Idempotent while queued. */
void loop_defer(struct loop *l, struct loop_defer *d);
/* Remove d from the defer queue if queued (before freeing its owner). */
void loop_defer_cancel(struct loop *l, struct loop_defer *d);

/* Free ptr with fn after the current batch of events: an object whose
 * loop_io was deleted may still have an event queued in this batch. */
int loop_free_later(struct loop *l, void *ptr, void (*fn)(void *ptr));

/* Called about once a second on the loop thread (timeouts). */
void loop_set_tick(struct loop *l, void (*cb)(void *arg), void *arg);

/* From any thread: run fn(arg) on the loop's thread. 0 or -ENOMEM. */
int loop_post(struct loop *l, void (*fn)(void *arg), void *arg);

/* Monotonic milliseconds, cached per loop iteration. */
uint64_t loop_now_ms(struct loop *l);

/* Run until loop_stop() (callable from any thread). A stop is permanent: a
 * stop sent before loop_run() is not lost, and loop_run() on a stopped loop
 * returns at once. */
int loop_run(struct loop *l);
void loop_stop(struct loop *l);

#endif
