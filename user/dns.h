/* SPDX-License-Identifier: MIT */
/*
 * dns: sluiced's DNS listener/forwarder for sandboxes. The BPF programs send a
 * sandbox's DNS (UDP and TCP to port 53, any address) to listeners sluiced
 * opened inside the sandbox's netns; this module reads the queries from those
 * fds, answers NXDOMAIN itself for names the allowlist hook refuses, forwards
 * the rest (from sluiced's own netns) to the sandbox's resolver (the
 * resolver hook: its policy's dns.resolver) or the configured default, and
 * relays the answers. Every query ends in exactly one audit hook call.
 *
 * One struct dns per worker loop; every function below except dns_new /
 * dns_get_stats must run on that loop's thread (use loop_post). Hooks are
 * called on the loop thread; with several workers they run concurrently
 * and must be thread-safe.
 *
 * Sharing: a UDP or TCP listening fd may be given to every worker's dns
 * (registered with EPOLLEXCLUSIVE; a datagram is answered from the fd it
 * came in on by whichever worker read it), or to one worker only.
 *
 * UDP: one connected upstream UDP socket per resolver (cfg.resolver, and
 * each sandbox's own from hooks.resolver, at most DNS_RESOLVERS_MAX, the
 * least recently used idle one closed to make room; when none is idle the
 * query gets SERVFAIL: it never goes to another resolver); each forwarded query
 * gets a fresh random 16-bit ID (restored on the answer); an answer must
 * match an in-flight query's ID and question (QNAME case-insensitively,
 * QTYPE, QCLASS) and arrive on the socket connected to the resolver, else it
 * is ignored. TCP: every forwarded TCP query gets its own upstream TCP
 * connection (DNS over TCP is the rare truncation fallback); answers go back
 * on the client's connection in query order.
 *
 * Allowlist mode (hooks->allowed set): a QNAME holding an octet that is no
 * host-name character (dnsmsg writes it escaped: "\.", "\DDD") gets
 * NXDOMAIN without asking the hook, so the hook only ever sees names made
 * of printable octets and real label dots.
 *
 * Limits: in-flight queries per instance (max_inflight, beyond: REFUSED),
 * query size DNS_QUERY_MAX (beyond: FORMERR), TCP client connections per
 * instance (max_tcp_conns, beyond: closed at once), DNS_TCP_PIPELINE queries
 * outstanding per TCP connection (beyond: not read until one is answered),
 * idle TCP connections closed after tcp_idle_ms.
 */
#ifndef SLUICE_DNS_H
#define SLUICE_DNS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "loop.h"

#define DNS_QUERY_MAX 4096
#define DNS_TCP_PIPELINE 8
#define DNS_SANDBOX_ID_MAX 127
#define DNS_RESOLVERS_MAX 32    /* upstream UDP sockets (resolvers) per instance */

struct dns_cfg {
	/* Resolver address (UDP and TCP, port included). */
	struct sockaddr_storage resolver;
	socklen_t resolver_len;
	unsigned timeout_ms;    /* per query; SERVFAIL to the client after. 0 = 3000 */
	unsigned max_inflight;  /* per instance; beyond: REFUSED. 0 = 1024, max 32768 */
	unsigned tcp_idle_ms;   /* idle TCP client connection closed. 0 = 10000 */
	unsigned max_tcp_conns; /* per instance. 0 = 128 */
};

struct dns_query_info {
	const char *sandbox;
	const char *qname;      /* lower-case, no trailing dot; "" when unparsable */
	unsigned qtype;         /* 0 when unparsable */
	const char *transport;  /* "udp" | "tcp" */
	/* "forward" (answer relayed), "nxdomain" (allowlist), "servfail"
	 * (timeout, upstream failure), "refused" (limit, opcode), "formerr"
	 * (malformed query, answered), "dropped" (not answered: not a query,
	 * short header, malformed TCP stream, client or listener went away) */
	const char *decision;
	const char *reason;     /* short token: "answered", "not_allowed", "timeout", ... */
};

struct dns_hooks {
	/* Allowlist decision for (sandbox, qname): true = forward.
	 * NULL = forward everything. */
	bool (*allowed)(void *opaque, const char *sandbox, const char *qname);
	/* The sandbox's own resolver (its policy's dns.resolver): true with
	 * *ret (zeroed by the caller; port set) and *ret_len, or false for
	 * cfg.resolver. NULL = cfg.resolver for everyone. */
	bool (*resolver)(void *opaque, const char *sandbox, struct sockaddr_storage *ret,
			 socklen_t *ret_len);
	/* One call per query, when its outcome is known. May be NULL. */
	void (*audit)(void *opaque, const struct dns_query_info *q);
	/* Listeners several sandboxes share (owner id starting with '@'): which
	 * sandbox sent this. UDP: fd is the listener, peer the datagram's
	 * source; TCP: fd is the accepted connection, peer NULL. true with the
	 * sandbox id in ret; false: unknown, its queries get REFUSED (audit
	 * reason "unknown_sender"). NULL: queries carry the owner id. */
	bool (*identify)(void *opaque, int fd, const struct sockaddr *peer, socklen_t peerlen,
			 char *ret, size_t len);
	void *opaque;
};

struct dns_stats {
	uint64_t queries;       /* messages received from clients */
	uint64_t forwarded;     /* sent to the resolver */
	uint64_t nxdomain, servfail, refused;
	uint64_t timeouts;      /* also counted in servfail */
	uint64_t malformed;     /* FORMERR or dropped */
	uint64_t ignored;       /* upstream answers matching no in-flight query */
};

struct dns;

/* Fill cfg's limits with the defaults (resolver left alone). */
void dns_cfg_defaults(struct dns_cfg *cfg);

/*
 * New instance on loop l (call before the loop runs, or on its thread).
 * cfg and hooks are copied. Opens the upstream UDP socket (connected to
 * cfg->resolver) in the caller's netns. 0, -EINVAL (bad resolver family or
 * length), or -errno.
 */
int dns_new(struct loop *l, const struct dns_cfg *cfg, const struct dns_hooks *hooks,
	    struct dns **ret);

/* Close everything the instance owns (not the listener fds). Queries in
 * flight are dropped without audit. Call on the loop thread or after the
 * loop stopped. NULL is fine. */
void dns_free(struct dns *d);

/*
 * Serve queries arriving on the UDP socket fd (bound in the sandbox's netns)
 * for sandbox (copied, at most DNS_SANDBOX_ID_MAX). The caller keeps owning
 * fd: call dns_remove_listeners() on every instance holding it, then close.
 * The fd's blocking mode is not touched (MSG_DONTWAIT is used).
 * 0, -EINVAL, -ENOMEM or -errno from epoll.
 */
int dns_add_udp_listener(struct dns *d, int fd, const char *sandbox);

/*
 * Accept DNS-over-TCP connections on listening socket fd for sandbox and
 * serve them as dns_add_tcp_conn() does. Ownership as for UDP listeners.
 */
int dns_add_tcp_listener(struct dns *d, int fd, const char *sandbox);

/*
 * Serve an accepted DNS-over-TCP connection (2-byte length prefix, several
 * queries, possibly pipelined; answered in order; closed after tcp_idle_ms
 * idle or on a malformed frame). The instance owns fd from the call on, also
 * on failure (it is closed). 0, -EINVAL, -EMFILE (max_tcp_conns reached),
 * -ENOMEM or -errno.
 */
int dns_add_tcp_conn(struct dns *d, int fd, const char *sandbox);

/* Stop serving sandbox: unregister its listeners (fds stay open, the caller
 * closes them), close its TCP connections, drop its queries in flight. */
void dns_remove_listeners(struct dns *d, const char *sandbox);

/* Counters since dns_new. Plain reads: exact on the loop thread, a
 * momentary snapshot elsewhere. */
void dns_get_stats(struct dns *d, struct dns_stats *ret);

#endif
