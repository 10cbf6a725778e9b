/* SPDX-License-Identifier: MIT */
/*
 * udprelay: sluiced's relay for the UDP destinations a sandbox's policy
 * allows (network.udp). The BPF programs pin such a socket to its
 * destination and send its datagrams to a relay socket sluiced bound inside
 * the sandbox's netns (127.0.0.1 / ::1, --udp-port); the egress program
 * publishes {netns cookie, source} -> destination. This module reads those
 * datagrams, asks the kernel record (lookup hook) where each was going, asks
 * the daemon whether that is still allowed (check hook, every datagram), and
 * relays it from sluiced's own netns over one connected UDP socket per flow
 * (one flow per sandbox socket). Replies go back from the relay socket; the
 * sandbox's recvmsg4/6 program shows them as coming from the destination.
 *
 * Audit (audit hook): one event when a flow opens, one when it closes (idle,
 * policy change, listener removed, shutdown) with its byte counts, and one
 * per refused flow (no kernel record, not allowed, address denied, limit),
 * never one per datagram.
 *
 * One instance on one loop; every function except udprelay_new and
 * udprelay_get_stats must run on that loop's thread.
 *
 * Limits: flows per sandbox (max_flows_per_sandbox, beyond: refused with
 * "udp_flow_limit"; the refused flow opens once a slot is free), open flows
 * in all (max_flows), flow table entries (open and refused) 2 * max_flows
 * (beyond: datagrams of new flows dropped without a record, counted in
 * dropped), idle_ms without a datagram either way closes a flow (swept by
 * udprelay_tick, so up to a tick later). A flow whose upstream socket could
 * not be made stays refused until it idles out.
 */
#ifndef SLUICE_UDPRELAY_H
#define SLUICE_UDPRELAY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#include <sluice/sluice_kern_user.h>

#include "loop.h"

#define UDPRELAY_DGRAM_MAX 65535
#define UDPRELAY_SANDBOX_MAX 127
#define UDPRELAY_RULE_MAX 64

struct udprelay_cfg {
	unsigned idle_ms;               /* 0 = 60000 */
	unsigned max_flows_per_sandbox; /* 0 = 256 */
	unsigned max_flows;             /* 0 = 4096 */
};

/* The daemon's answer for one datagram to dst (a kernel record). */
struct udprelay_verdict {
	char sandbox[UDPRELAY_SANDBOX_MAX + 1]; /* "" when the cgroup is no sandbox */
	char rule[UDPRELAY_RULE_MAX + 1];       /* the network.udp rule that allows it */
	const char *reason;                     /* refusals: a short static token */
};

struct udprelay_event {
	const char *sandbox;            /* "" when unknown */
	uint64_t cgroup_id;             /* 0 when unknown */
	const struct sockaddr *dst;     /* NULL when unknown (no kernel record) */
	const char *rule;
	const char *decision;           /* "allow" | "deny" */
	/* "udp_flow_open", "udp_flow_closed", or the refusal reason */
	const char *reason;
	struct timespec start;          /* CLOCK_REALTIME when the flow opened */
	uint64_t bytes_in, bytes_out;   /* payload from / to the sandbox */
	uint64_t duration_us;
};

struct udprelay_hooks {
	/* Where the socket that sent from src was going: 0, or -ENOENT. */
	int (*lookup)(void *opaque, uint64_t netns_cookie, const struct sockaddr *src,
		      struct sluice_orig *ret);
	/* 0: relay it (v->sandbox, v->rule filled); -EACCES: refuse (v->reason,
	 * v->sandbox if known). dst is the record, dsa the same destination as
	 * a socket address (port included). Called for every datagram from a
	 * sandbox and every second for each open flow. */
	int (*check)(void *opaque, const struct sluice_orig *dst,
		     const struct sockaddr_storage *dsa, struct udprelay_verdict *v);
	/* Flow expired: the kernel record may go (the next datagram re-adds it). */
	void (*forget)(void *opaque, uint64_t netns_cookie, const struct sockaddr *src);
	void (*audit)(void *opaque, const struct udprelay_event *e);
	void *opaque;
};

struct udprelay_stats {
	uint64_t flows_opened, flows_open, flows_refused;
	uint64_t dgrams_up, dgrams_down, bytes_up, bytes_down;
	uint64_t dropped;       /* refused flows' datagrams, send errors, truncated */
};

struct udprelay;

/* New instance on loop l; cfg and hooks are copied. 0, -EINVAL or -ENOMEM. */
int udprelay_new(struct loop *l, const struct udprelay_cfg *cfg,
		 const struct udprelay_hooks *hooks, struct udprelay **ret);

/* Close every flow (audited as closed) and free. Listener fds are the
 * caller's. NULL is fine. On the loop thread or after the loop stopped. */
void udprelay_free(struct udprelay *r);

/* Relay datagrams arriving on UDP socket fd (bound in a sandbox netns) for
 * owner (copied). The caller keeps owning fd: udprelay_remove_listeners()
 * first, then close it. 0, -EINVAL, -ENOMEM or -errno. */
int udprelay_add_listener(struct udprelay *r, int fd, const char *owner);

/* Stop serving owner's listeners and close their flows (audited). */
void udprelay_remove_listeners(struct udprelay *r, const char *owner);

/* Once a second: expire idle flows, close flows the check hook refuses now. */
void udprelay_tick(struct udprelay *r);

/* Counters; plain reads (a momentary snapshot off the loop thread). */
void udprelay_get_stats(struct udprelay *r, struct udprelay_stats *ret);

#endif
