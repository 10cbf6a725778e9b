/* SPDX-License-Identifier: MIT */
/*
 * upstream: sluiced's connections to real servers — resolve, check the
 * address, connect, TLS with verification, and a per-worker pool of idle
 * keep-alive connections. Pool keys always include the sandbox id: a
 * connection is never reused across sandboxes.
 */
#ifndef SLUICE_UPSTREAM_H
#define SLUICE_UPSTREAM_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "conn.h"
#include "loop.h"
#include "resolve.h"

struct tls;

enum up_state {
	UP_RESOLVING = 1,
	UP_CONNECTING = 2,
	UP_HANDSHAKE = 3,
	UP_READY = 4,
	UP_FAILED = 5,
};

#define UP_KEY_MAX 400

struct up_pool;

struct upconn {
	struct conn c;
	struct loop_io io;
	struct up_pool *pool;
	enum up_state state;
	char key[UP_KEY_MAX];
	char host[256];
	uint16_t port;
	bool tls;
	bool reused;            /* came out of the pool */
	bool orphan;            /* owner left while resolving: free on answer */
	struct resolve_result res;
	const struct denyset *deny;     /* the sandbox's; pinned by the owner */
	const struct tls_client *tc;
	int ai;                 /* address being tried */
	int last_err;           /* errno of the last failed attempt */
	char addr_text[64];     /* address connected to, for logs */
	/* failure: status to answer (403/502/504), stable code, detail */
	int fail_status;
	const char *fail_code;
	char fail_detail[200];
	void (*notify)(void *owner);
	void *owner;
	struct upconn *next, *prev;     /* pool list */
	uint64_t idle_since_ms;
};

/* One pool per worker loop. idle_max: total idle connections kept,
 * idle_timeout_ms: close idle ones after this. */
struct up_pool *up_pool_new(struct loop *l, struct tls *tls, unsigned idle_max,
			    unsigned idle_timeout_ms);
void up_pool_free(struct up_pool *p);
/* Close idle connections past their timeout (call from the loop tick). */
void up_pool_tick(struct up_pool *p);

/*
 * Get a connection for key (sandbox|scheme|host|port): an idle pooled one
 * (state UP_READY, reused=true) or a new one being set up. notify(owner) runs
 * on every event while owned. Returns NULL only on allocation failure.
 */
struct denyset;
struct tls_client;
/* deny: the sandbox's deny set; tc: the policy's trust store (NULL: default).
 * Both are pinned by the owner for the connection's life. */
struct upconn *up_acquire(struct up_pool *p, const char *key, const char *host, uint16_t port,
			  bool tls, const struct denyset *deny, const struct tls_client *tc,
			  void (*notify)(void *owner), void *owner);

/* Drive connect/handshake forward; call from the owner's notify. */
void up_progress(struct upconn *u);

/* Watch for readiness while owned (EPOLLIN/EPOLLOUT). */
void up_set_events(struct upconn *u, uint32_t events);

/* Give back: reusable ones go to the idle pool, others are closed. */
void up_release(struct upconn *u, bool reusable);

/* For a connection parked between requests that got an event: true when the
 * event was stale (nothing to read, not closed), so it is still usable. */
bool up_idle_alive(struct upconn *u);

/* Process-wide counters: new upstream connections, and pool hits. */
void up_stats(unsigned long *ret_dials, unsigned long *ret_reuses);

/* true when the address may be dialled: outside the sandbox's deny set
 * (deny may be NULL) and up_addr_allowed(). */
bool up_dial_allowed(const struct sockaddr_storage *ss, const struct denyset *deny);

/* true when the address may be dialled: never loopback, unspecified,
 * link-local (cloud metadata), multicast or broadcast, in any v4/v6 form. */
bool up_addr_allowed(const struct sockaddr_storage *ss);

#endif
