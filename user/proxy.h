/* SPDX-License-Identifier: MIT */
/*
 * proxy: the data path in userspace. Worker threads (one epoll loop each)
 * accept redirected connections from sandbox listeners, recover the original
 * destination from the kernel half, sniff TLS / plain HTTP / CONNECT,
 * terminate TLS, relay HTTP/1.1 to upstreams with bounded buffers, and
 * answer failures with a JSON body and a Proxy-Status header.
 */
#ifndef SLUICE_PROXY_H
#define SLUICE_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dns.h"
#include "udprelay.h"

struct tls;
struct bpfl;
struct proxy;
struct rw_gen;
struct audit;

struct proxy_cfg {
	size_t max_header_bytes;        /* request/response head limit (431/502) */
	size_t body_buffer;             /* per direction body buffer */
	unsigned idle_timeout_ms;       /* client keep-alive idle */
	unsigned io_timeout_ms;         /* no progress during a request */
	unsigned connect_timeout_ms;    /* upstream connect + TLS */
	unsigned handshake_timeout_ms;  /* client TLS handshake */
	unsigned pool_idle_max;         /* idle upstream conns per worker */
	unsigned pool_idle_timeout_ms;
	unsigned max_conns;             /* open client connections, all sandboxes */
	bool dns_enabled;               /* serve DNS listeners (resolver in dns) */
	struct dns_cfg dns;
	bool udp_enabled;               /* serve UDP relay listeners (network.udp) */
	struct udprelay_cfg udp;
};

void proxy_cfg_defaults(struct proxy_cfg *cfg);

int proxy_new(const struct proxy_cfg *cfg, struct tls *tls, struct bpfl *bpfl,
	      struct proxy **ret_proxy);
/* Start nworkers threads. 0 or -errno. */
int proxy_start(struct proxy *p, unsigned nworkers);
/* Stop workers, close everything. */
void proxy_free(struct proxy *p);

/* Sandboxes: connections whose socket cgroup is not registered are closed.
 * gen is the sandbox's compiled policy (a reference is taken). */
int proxy_sandbox_add(struct proxy *p, const char *id, uint64_t cgroup_id, const char *cgroup,
		      struct rw_gen *gen);
/* Reload: new connections use gen; open ones finish on the one they pinned. */
int proxy_sandbox_set_gen(struct proxy *p, const char *id, struct rw_gen *gen);
void proxy_sandbox_remove(struct proxy *p, const char *id);
/* Audit log for request and connection records (NULL: none). Before start. */
void proxy_set_audit(struct proxy *p, struct audit *a);

/* Hand a listening fd to every worker (the proxy owns it from now on).
 * kind: PROXY_L_HTTP (the interception listener), PROXY_L_DNS_UDP,
 * PROXY_L_DNS_TCP (the sandbox's DNS, served by the workers' dns). */
#define PROXY_L_HTTP 1
#define PROXY_L_DNS_UDP 2
#define PROXY_L_DNS_TCP 3
#define PROXY_L_UDP_RELAY 4 /* UDP relay (network.udp), served by the first worker */
int proxy_listener_add(struct proxy *p, int fd, int kind, const char *owner_id);
/* Remove and close every listener added for owner_id; returns when no worker
 * can still accept on them. */
void proxy_listener_remove(struct proxy *p, const char *owner_id);

/* SIGTERM: stop accepting, let open exchanges finish (Connection: close),
 * close idle keep-alive connections; wait up to timeout_ms. Returns the
 * number of connections still open at the deadline. */
int proxy_drain(struct proxy *p, unsigned timeout_ms);

/* Open client connections of sandbox id (0 if unknown). */
unsigned proxy_sandbox_conns(struct proxy *p, const char *id);
/* Prometheus text for the proxy's counters; bytes written or -ENOBUFS. */
int proxy_metrics_text(struct proxy *p, char *out, size_t len);

/* Counters for the management API's status (a momentary snapshot). */
struct proxy_status {
	unsigned sandboxes, open_connections, workers;
	unsigned long total_connections, total_requests, refused_connections;
	unsigned long upstream_errors, tls_handshakes, upstream_dials, upstream_pool_reuses;
	unsigned long denied_requests, secrets_swapped, redactions, audit_dropped;
	unsigned long udp_flows_open, udp_flows_total;
};
void proxy_get_status(struct proxy *p, struct proxy_status *ret);

#endif
