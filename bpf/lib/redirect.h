/* SPDX-License-Identifier: MIT */
/*
 * connect4/6 and sendmsg4/6: refuse denied destinations, remember where the
 * sandbox wanted to go (socket local storage) and send the connect (or the
 * datagram) to sluice's listener instead:
 *
 *   socket  destination                      result
 *   TCP     port 53 (any address)            DNS listener (TCP), recorded
 *   TCP     in the sandbox's deny set        EACCES
 *   TCP     anything else                    proxy listener, recorded
 *   UDP     the DNS or UDP relay listener    unchanged if a sluice program sent it there
 *                                            (nested sandboxes); else EACCES
 *   UDP     socket pinned to a destination   that destination, still allowed: UDP relay;
 *                                            anything else: EACCES
 *   UDP     port 53 (any address)            DNS listener (UDP), recorded for recvmsg
 *   UDP     in the sandbox's deny set        EACCES
 *   UDP     allowed by network.udp           UDP relay, socket pinned to it
 *   UDP     anything else (QUIC, NTP, ...)   EACCES (QUIC clients fall back to TCP)
 *   other   (SCTP, MPTCP, ping, UDP-Lite)    EPERM (also refused at socket())
 *
 * DNS comes first: sluiced answers it and never contacts the address the
 * sandbox asked for, so a resolver in a denied range (a VPC resolver in
 * 10.0.0.0/8, AWS's 169.254.169.253) must not make name lookups fail.
 * Otherwise the deny set is checked before anything else except the listener:
 * in nested sandboxes an outer cgroup's program sees the listener address
 * the inner one wrote, which must not be refused by a deny entry covering
 * loopback. No configured listener (or DNS listener for DNS): EPERM, closed.
 */
#ifndef SLUICE_BPF_REDIRECT_H
#define SLUICE_BPF_REDIRECT_H

/*
 * The sandbox a socket belongs to: the innermost cgroup registered in
 * sluice_sandboxes among the socket's cgroup and its ancestors. A sandbox
 * is its whole cgroup subtree: a container runtime, a pod or the workload
 * itself may put processes in child cgroups, and the programs attached to
 * the sandbox cgroup run for those too. The id found keys the deny and
 * allow tries and is what sluiced sees in the original-destination record.
 * Deeper than SL_CG_DEPTH_MAX below the root, or registered nowhere (a
 * race with detach): the socket's own cgroup, which sluiced knows nothing
 * of, so its connections are closed (fail closed).
 *
 * The socket's cgroup (fixed at socket(), what the programs were attached
 * for) rather than the caller's: an fd handed to a process in another cgroup
 * (SCM_RIGHTS, pidfd_getfd) keeps its sandbox. bpf_sk_cgroup_id() is not
 * offered to cgroup/connect* programs, so the cgroup is read through BTF
 * (bpf_skc_to_tcp_sock() gives a BTF pointer; the loads are fault-safe).
 * sock_cgroup_data.cgroup exists since 5.15 and cgroup.ancestors[] since
 * 6.2; older layouts, or a kernel whose verifier refuses the BTF walk here
 * (the loader then reloads with sl_cgroup_from_sk = false, and the verifier
 * drops the dead branch), fall back to the current task's cgroup and its
 * ancestors, which are the same in every other case. UDP sockets have no
 * bpf_skc_to_*() cast on every family, so they use the task's too.
 */
const volatile bool sl_cgroup_from_sk = true;

#define SL_CG_DEPTH_MAX 16

static __always_inline bool sl_is_sandbox(__u64 id)
{
	return id && bpf_map_lookup_elem(&sluice_sandboxes, &id);
}

static __always_inline __u64 sl_task_sandbox_id(void)
{
	/* level i > the task's level gives 0; from the innermost down */
#pragma unroll
	for (int i = SL_CG_DEPTH_MAX - 1; i >= 0; i--) {
		__u64 id = bpf_get_current_ancestor_cgroup_id(i);

		if (sl_is_sandbox(id))
			return id;
	}
	return bpf_get_current_cgroup_id();
}

static __always_inline __u64 sl_sock_cgroup_id(struct bpf_sock_addr *ctx)
{
	struct tcp_sock *tp;
	struct cgroup *cg;
	int level;

	if (!sl_cgroup_from_sk || !bpf_core_field_exists(struct sock_cgroup_data, cgroup) ||
	    !bpf_core_field_exists(struct cgroup, ancestors))
		return sl_task_sandbox_id();
	tp = bpf_skc_to_tcp_sock(ctx->sk);
	if (!tp)
		return sl_task_sandbox_id();
	cg = tp->inet_conn.icsk_inet.sk.sk_cgrp_data.cgroup;
	level = cg->level;
#pragma unroll
	for (int i = SL_CG_DEPTH_MAX - 1; i >= 0; i--) {
		struct cgroup *a;
		__u64 id;

		if (i > level)
			continue;
		/* ancestors[] is a flexible array the verifier will not index
		 * through a BTF pointer: read it (and the chain) with probe reads */
		a = NULL;
		bpf_core_read(&a, sizeof(a), &cg->ancestors[i]);
		id = a ? BPF_CORE_READ(a, kn, id) : 0;
		if (sl_is_sandbox(id))
			return id;
	}
	return cg->kn->id;
}

enum {
	SL_KIND_TCP = 1,
	SL_KIND_UDP = 2,
};

/*
 * Which sockets sluice steers: TCP and UDP. Anything else that reaches a
 * connect hook (ping sockets have one; SCTP, MPTCP, UDP-Lite if a socket
 * was made before sock_create was attached) is refused: letting it through
 * would be a bypass.
 */
static __always_inline int sl_sock_kind(struct bpf_sock_addr *ctx)
{
	if (ctx->type == SOCK_STREAM && ctx->protocol == IPPROTO_TCP)
		return SL_KIND_TCP;
	if (ctx->type == SOCK_DGRAM && ctx->protocol == IPPROTO_UDP)
		return SL_KIND_UDP;
	return -EPERM;
}

/*
 * A destination in one shape for both families. v4: the address is a[3]
 * (a[0..2] hold ::ffff: when mapped, so the v6 trie can be asked too).
 */
struct sl_dst {
	__u32 a[4];
	__u16 port;   /* network order */
	bool v4;      /* IPv4, on an AF_INET socket or v4-mapped on AF_INET6 */
	bool mapped;  /* v4-mapped destination of an AF_INET6 socket */
};

static __always_inline void sl_dst_load4(struct bpf_sock_addr *ctx, struct sl_dst *d)
{
	d->v4 = true;
	/* sendmsg4 also runs for v4-mapped datagrams of AF_INET6 sockets. */
	d->mapped = ctx->family == SLUICE_AF_INET6;
	d->a[0] = 0;
	d->a[1] = 0;
	d->a[2] = d->mapped ? SL_V4MAPPED_W2 : 0;
	d->a[3] = ctx->user_ip4;
	d->port = (__u16)ctx->user_port; /* network order in the low 16 bits */
}

static __always_inline void sl_dst_load6(struct bpf_sock_addr *ctx, struct sl_dst *d)
{
	/* user_ip6 must be read with 4-byte loads, one word at a time. */
	d->a[0] = ctx->user_ip6[0];
	d->a[1] = ctx->user_ip6[1];
	d->a[2] = ctx->user_ip6[2];
	d->a[3] = ctx->user_ip6[3];
	d->port = (__u16)ctx->user_port;
	d->mapped = sl_ip6_is_v4mapped(d->a);
	d->v4 = d->mapped;
}

static __always_inline bool sl_dst_is_listener(const struct sluice_cfg *cfg,
					       const struct sl_dst *d)
{
	__u32 l[4];

	if (d->v4)
		return d->a[3] == cfg->listen_addr4;
	__builtin_memcpy(l, cfg->listen_addr6, 16);
	return d->a[0] == l[0] && d->a[1] == l[1] && d->a[2] == l[2] && d->a[3] == l[3];
}

/*
 * Point d at the listener on port: ::ffff:127.0.0.1 for a mapped
 * destination, so a dual-stack socket reaches the IPv4 listener.
 */
static __always_inline void sl_dst_to_listener(const struct sluice_cfg *cfg, struct sl_dst *d,
					       __u16 port)
{
	if (d->v4) {
		d->a[3] = cfg->listen_addr4;
	} else {
		__builtin_memcpy(d->a, cfg->listen_addr6, 16);
	}
	d->port = port;
}

static __always_inline bool sl_dst_denied(__u64 cg, const struct sl_dst *d)
{
	if (!d->v4)
		return sl_deny6(cg, d->a);
	/* A mapped destination matches v4 entries and their ::ffff: forms. */
	return sl_deny4(cg, d->a[3]) || (d->mapped && sl_deny6(cg, d->a));
}

/*
 * ::ffff:a.b.c.d from a dual-stack socket is an IPv4 destination: stored as
 * AF_INET with SLUICE_ORIG_F_V4MAPPED (the daemon needs no second code path;
 * getpeername6/recvmsg6 hand back the mapped form).
 */
static __always_inline void sl_orig_make(struct sluice_orig *o, const struct sl_dst *d, __u64 cg,
					 __u32 flags)
{
	__builtin_memset(o, 0, sizeof(*o));
	if (d->v4) {
		__builtin_memcpy(o->addr, &d->a[3], 4);
		o->family = SLUICE_AF_INET;
		if (d->mapped)
			flags |= SLUICE_ORIG_F_V4MAPPED;
	} else {
		__builtin_memcpy(o->addr, d->a, 16);
		o->family = SLUICE_AF_INET6;
	}
	o->port = d->port;
	o->flags = flags;
	o->cgroup_id = cg;
}

/*
 * Record orig in the socket's storage. When the destination already is the
 * listener, an entry made by another sluice program earlier in this same
 * connect() (nested sandbox cgroups: the child's program runs first, then the
 * parent's sees the rewritten address) still carries SLUICE_ORIG_F_PENDING
 * and is kept; otherwise the sandbox uses the listener as an explicit proxy
 * and orig = listener is recorded.
 */
static __always_inline int sl_orig_store(struct bpf_sock_addr *ctx, const struct sluice_orig *o,
					 bool to_listener)
{
	struct sluice_orig *st;

	st = bpf_sk_storage_get(&sluice_orig_map, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		return -ENOMEM;
	if (to_listener && (st->flags & SLUICE_ORIG_F_PENDING))
		return 0;
	*st = *o;
	return 0;
}

static __always_inline bool sl_orig_same(const struct sluice_orig *a, const struct sluice_orig *b)
{
	__u32 x[4], y[4];

	/* clang has no inline memcmp for BPF: compare words. */
	__builtin_memcpy(x, a->addr, 16);
	__builtin_memcpy(y, b->addr, 16);
	return a->family == b->family && a->port == b->port && x[0] == y[0] && x[1] == y[1] &&
	       x[2] == y[2] && x[3] == y[3];
}

/*
 * UDP to a destination network.udp allows: pin it to the socket (so the
 * egress program can publish the flow, recvmsg can restore the source and
 * no other destination is reachable from this socket) and send the datagram
 * to sluiced's UDP relay. Checked again for every unconnected datagram, so
 * a reload that drops the rule refuses the next sendto() at once (connected
 * sockets send without a hook: the relay drops those datagrams).
 */
static __always_inline int sl_steer_udp_relay(struct bpf_sock_addr *ctx,
					      const struct sluice_cfg *cfg, struct sl_dst *d,
					      __u64 cg, struct sluice_orig *pinned)
{
	struct sluice_orig o;
	int r;

	sl_orig_make(&o, d, cg, SLUICE_ORIG_F_UDP_RELAY);
	if (pinned && !sl_orig_same(pinned, &o))
		return -EACCES; /* one destination per socket */
	if (sl_dst_denied(cg, d) || !sl_udp_allowed(cg, d->a, d->v4, d->port))
		return -EACCES;
	if (!cfg->udp_port)
		return -EACCES; /* no relay: allowed destinations are refused too */
	if (!pinned) {
		r = sl_orig_store(ctx, &o, false);
		if (r < 0)
			return r;
	}
	sl_dst_to_listener(cfg, d, cfg->udp_port);
	return 1;
}

/*
 * UDP, for connect and for each unconnected datagram alike. Returns 1 when
 * d was rewritten, 0 to leave it, -errno to refuse. For DNS the storage
 * keeps the resolver the socket last sent to: recvmsg4/6 put it back as the
 * source of the DNS listener's answers (one outstanding resolver per socket,
 * which is what stub resolvers use).
 */
static __always_inline int sl_steer_udp(struct bpf_sock_addr *ctx, const struct sluice_cfg *cfg,
					struct sl_dst *d, __u64 cg)
{
	struct sluice_orig o, *st;
	int r;

	st = bpf_sk_storage_get(&sluice_orig_map, ctx->sk, 0, 0);
	if (sl_dst_is_listener(cfg, d)) {
		/*
		 * Nested sandbox cgroups: the inner cgroup's program ran first and
		 * sent the datagram here; it passes unchanged. A socket no sluice
		 * program steered (explicit use of a listener port) is refused:
		 * the relay would find no record of it anyway.
		 */
		if (cfg->udp_port && d->port == cfg->udp_port)
			return st && (st->flags & SLUICE_ORIG_F_UDP_RELAY) ? 0 : -EACCES;
		if (cfg->dns_port && d->port == cfg->dns_port)
			return st && !(st->flags & SLUICE_ORIG_F_UDP_RELAY) ? 0 : -EACCES;
	}
	if (st && (st->flags & SLUICE_ORIG_F_UDP_RELAY))
		return sl_steer_udp_relay(ctx, cfg, d, cg, st);
	if (d->port != SL_DNS_PORT)
		return sl_steer_udp_relay(ctx, cfg, d, cg, NULL);
	if (!cfg->dns_port)
		return -EPERM; /* no DNS listener configured: fail closed */
	sl_orig_make(&o, d, cg, 0);
	r = sl_orig_store(ctx, &o, false);
	if (r < 0)
		return r;
	sl_dst_to_listener(cfg, d, cfg->dns_port);
	return 1;
}

/* TCP connect (Fast Open included). Same returns as sl_steer_udp. */
static __always_inline int sl_steer_tcp(struct bpf_sock_addr *ctx, const struct sluice_cfg *cfg,
					struct sl_dst *d, __u64 cg)
{
	struct sluice_orig o;
	bool at, to_proxy, to_dns;
	__u16 port;
	int r;

	at = sl_dst_is_listener(cfg, d);
	to_proxy = at && d->port == cfg->listen_port;
	to_dns = at && cfg->dns_port && d->port == cfg->dns_port;
	if (!to_proxy && !to_dns && d->port != SL_DNS_PORT && sl_dst_denied(cg, d))
		return -EACCES;
	port = cfg->listen_port;
	if (to_dns || d->port == SL_DNS_PORT) {
		if (!cfg->dns_port)
			return -EPERM;
		port = cfg->dns_port; /* DNS over TCP: the DNS listener, recorded the same way */
	}
	sl_orig_make(&o, d, cg, SLUICE_ORIG_F_PENDING);
	r = sl_orig_store(ctx, &o, to_proxy || to_dns);
	if (r < 0)
		return r;
	sl_dst_to_listener(cfg, d, port);
	return 1;
}

static __always_inline int sl_steer(struct bpf_sock_addr *ctx, struct sl_dst *d)
{
	struct sluice_cfg *cfg;
	int kind;

	kind = sl_sock_kind(ctx);
	if (kind < 0)
		return kind;
	cfg = sl_cfg_get();
	if (!cfg || !cfg->listen_port)
		return -EPERM; /* no listener configured yet: fail closed */
	if (kind == SL_KIND_UDP)
		return sl_steer_udp(ctx, cfg, d, sl_sock_cgroup_id(ctx));
	return sl_steer_tcp(ctx, cfg, d, sl_sock_cgroup_id(ctx));
}

/* connect4, sendmsg4. Returns 0 (possibly rewritten) or -errno. */
static __always_inline int sl_redirect4(struct bpf_sock_addr *ctx)
{
	struct sl_dst d = {};
	int r;

	sl_dst_load4(ctx, &d);
	r = sl_steer(ctx, &d);
	if (r <= 0)
		return r;
	ctx->user_ip4 = d.a[3];
	ctx->user_port = d.port;
	return 0;
}

/* connect6, sendmsg6. Returns 0 (possibly rewritten) or -errno. */
static __always_inline int sl_redirect6(struct bpf_sock_addr *ctx)
{
	struct sl_dst d = {};
	int r;

	sl_dst_load6(ctx, &d);
	r = sl_steer(ctx, &d);
	if (r <= 0)
		return r;
	if (d.v4) {
		d.a[0] = 0;
		d.a[1] = 0;
		d.a[2] = SL_V4MAPPED_W2;
	}
	ctx->user_ip6[0] = d.a[0];
	ctx->user_ip6[1] = d.a[1];
	ctx->user_ip6[2] = d.a[2];
	ctx->user_ip6[3] = d.a[3];
	ctx->user_port = d.port;
	return 0;
}

/* sendmsg only ever sees UDP; a connected TCP path never runs it. */
static __always_inline int sl_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sl_redirect4(ctx);
}

static __always_inline int sl_sendmsg6(struct bpf_sock_addr *ctx)
{
	return sl_redirect6(ctx);
}

#endif
