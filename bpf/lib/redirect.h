/* SPDX-License-Identifier: MIT */
/*
 * connect4/connect6: remember where the sandbox wanted to go (socket local
 * storage) and send the connect to sluice's listener instead.
 */
#ifndef SLUICE_BPF_REDIRECT_H
#define SLUICE_BPF_REDIRECT_H

/*
 * The socket's cgroup (fixed at socket(), what the programs were attached
 * for) rather than the caller's: an fd handed to a process in another cgroup
 * (SCM_RIGHTS, pidfd_getfd) keeps its sandbox. bpf_sk_cgroup_id() is not
 * offered to cgroup/connect* programs, so the cgroup is read through BTF
 * (bpf_skc_to_tcp_sock() gives a BTF pointer; the loads are fault-safe).
 * sock_cgroup_data.cgroup exists since 5.15; older layouts, or a kernel whose
 * verifier refuses the BTF walk here (the loader then reloads with
 * sl_cgroup_from_sk = false, and the verifier drops the dead branch), fall
 * back to the current task's cgroup, which is the same in every other case.
 */
const volatile bool sl_cgroup_from_sk = true;

static __always_inline __u64 sl_sock_cgroup_id(struct bpf_sock_addr *ctx)
{
	struct tcp_sock *tp;

	if (!sl_cgroup_from_sk || !bpf_core_field_exists(struct sock_cgroup_data, cgroup))
		return bpf_get_current_cgroup_id();
	tp = bpf_skc_to_tcp_sock(ctx->sk);
	if (!tp)
		return bpf_get_current_cgroup_id();
	return tp->inet_conn.icsk_inet.sk.sk_cgrp_data.cgroup->kn->id;
}

/*
 * Which connects sluice steers. TCP only; UDP is left alone for now (a later
 * change adds DNS redirection and refuses the rest). Any other stream
 * protocol (SCTP, MPTCP) is refused: letting it through would be a bypass.
 * Returns 1 to steer, 0 to leave alone, -EPERM to refuse.
 */
static __always_inline int sl_connect_kind(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_STREAM)
		return 0;
	if (ctx->protocol != IPPROTO_TCP)
		return -EPERM;
	return 1;
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

static __always_inline int sl_redirect4(struct bpf_sock_addr *ctx)
{
	struct sluice_orig o = {};
	struct sluice_cfg *cfg;
	__u32 dst = ctx->user_ip4;
	__u16 port = (__u16)ctx->user_port; /* network order in the low 16 bits */
	bool to_listener;
	int r;

	r = sl_connect_kind(ctx);
	if (r <= 0)
		return r;
	cfg = sl_cfg_get();
	if (!cfg || !cfg->listen_port)
		return -EPERM; /* no listener configured yet: fail closed */

	to_listener = dst == cfg->listen_addr4 && port == cfg->listen_port;
	__builtin_memcpy(o.addr, &dst, 4);
	o.port = port;
	o.family = SLUICE_AF_INET;
	o.flags = SLUICE_ORIG_F_PENDING;
	o.cgroup_id = sl_sock_cgroup_id(ctx);
	r = sl_orig_store(ctx, &o, to_listener);
	if (r < 0)
		return r;

	ctx->user_ip4 = cfg->listen_addr4;
	ctx->user_port = cfg->listen_port;
	return 0;
}

static __always_inline int sl_redirect6(struct bpf_sock_addr *ctx)
{
	struct sluice_orig o = {};
	struct sluice_cfg *cfg;
	__u32 dst[4], lst[4];
	__u16 port = (__u16)ctx->user_port;
	bool mapped, to_listener;
	int r;

	r = sl_connect_kind(ctx);
	if (r <= 0)
		return r;
	cfg = sl_cfg_get();
	if (!cfg || !cfg->listen_port)
		return -EPERM;

	/* user_ip6 must be read with 4-byte loads, one word at a time. */
	dst[0] = ctx->user_ip6[0];
	dst[1] = ctx->user_ip6[1];
	dst[2] = ctx->user_ip6[2];
	dst[3] = ctx->user_ip6[3];
	mapped = sl_ip6_is_v4mapped(dst);

	/*
	 * ::ffff:a.b.c.d from a dual-stack socket is an IPv4 connect: stored as
	 * AF_INET (the daemon needs no second code path) and sent to the v4
	 * listener in mapped form, which the v6 socket can reach.
	 */
	if (mapped) {
		lst[0] = 0;
		lst[1] = 0;
		lst[2] = SL_V4MAPPED_W2;
		lst[3] = cfg->listen_addr4;
		__builtin_memcpy(o.addr, &dst[3], 4);
		o.family = SLUICE_AF_INET;
		o.flags = SLUICE_ORIG_F_V4MAPPED;
	} else {
		__builtin_memcpy(lst, cfg->listen_addr6, 16);
		__builtin_memcpy(o.addr, dst, 16);
		o.family = SLUICE_AF_INET6;
	}
	to_listener = port == cfg->listen_port && dst[0] == lst[0] && dst[1] == lst[1] &&
		      dst[2] == lst[2] && dst[3] == lst[3];
	o.port = port;
	o.flags |= SLUICE_ORIG_F_PENDING;
	o.cgroup_id = sl_sock_cgroup_id(ctx);
	r = sl_orig_store(ctx, &o, to_listener);
	if (r < 0)
		return r;

	ctx->user_ip6[0] = lst[0];
	ctx->user_ip6[1] = lst[1];
	ctx->user_ip6[2] = lst[2];
	ctx->user_ip6[3] = lst[3];
	ctx->user_port = cfg->listen_port;
	return 0;
}

#endif
