/* SPDX-License-Identifier: MIT */
/*
 * getpeername4/6 and recvmsg4/6: a redirected socket reports the address it
 * asked for, not the listener, so programs that check their peer (or log it,
 * or match DNS answers against the server they asked) see no change.
 */
#ifndef SLUICE_BPF_PEER_H
#define SLUICE_BPF_PEER_H

/* Returns 0 when the address was rewritten, -ENOENT for a socket sluice never steered. */
static __always_inline int sl_peer4(struct bpf_sock_addr *ctx)
{
	struct sluice_orig *st;
	__u32 a;

	st = bpf_sk_storage_get(&sluice_orig_map, ctx->sk, 0, 0);
	if (!st || st->family != SLUICE_AF_INET)
		return -ENOENT;
	__builtin_memcpy(&a, st->addr, 4);
	ctx->user_ip4 = a;
	ctx->user_port = st->port;
	return 0;
}

static __always_inline int sl_peer6(struct bpf_sock_addr *ctx)
{
	struct sluice_orig *st;
	__u32 a[4];

	st = bpf_sk_storage_get(&sluice_orig_map, ctx->sk, 0, 0);
	if (!st)
		return -ENOENT;
	if (st->family == SLUICE_AF_INET6) {
		__builtin_memcpy(a, st->addr, 16);
	} else if (st->family == SLUICE_AF_INET && (st->flags & SLUICE_ORIG_F_V4MAPPED)) {
		a[0] = 0;
		a[1] = 0;
		a[2] = SL_V4MAPPED_W2;
		__builtin_memcpy(&a[3], st->addr, 4);
	} else {
		return -ENOENT;
	}
	ctx->user_ip6[0] = a[0];
	ctx->user_ip6[1] = a[1];
	ctx->user_ip6[2] = a[2];
	ctx->user_ip6[3] = a[3];
	ctx->user_port = st->port;
	return 0;
}

/*
 * Which record answers for a datagram from sluiced's port (network order)?
 * The DNS listener's answers get the resolver the socket last sent a query
 * to; the UDP relay's datagrams get the destination the socket is pinned to.
 * NULL: leave the source alone.
 */
static __always_inline struct sluice_orig *sl_recv_orig(struct bpf_sock_addr *ctx,
							const struct sluice_cfg *cfg, __u16 port)
{
	struct sluice_orig *st;
	bool relay;

	if (cfg->dns_port && port == cfg->dns_port)
		relay = false;
	else if (cfg->udp_port && port == cfg->udp_port)
		relay = true;
	else
		return NULL;
	st = bpf_sk_storage_get(&sluice_orig_map, ctx->sk, 0, 0);
	if (!st || !!(st->flags & SLUICE_ORIG_F_UDP_RELAY) != relay)
		return NULL;
	return st;
}

/*
 * recvmsg4: a datagram from the DNS listener gets the source the socket last
 * sent its query to (glibc, musl, Go and c-ares drop answers from any other
 * address); one from the UDP relay gets the socket's pinned destination.
 * Everything else is left as it is. Only the last resolver is kept: a late
 * answer to an earlier query to another resolver, or an answer to a query
 * sent to the DNS listener's own address after a redirected one, shows the
 * last redirected resolver as its source.
 */
static __always_inline void sl_recv4(struct bpf_sock_addr *ctx)
{
	struct sluice_cfg *cfg = sl_cfg_get();
	struct sluice_orig *st;
	__u32 a;

	if (!cfg || ctx->user_ip4 != cfg->listen_addr4)
		return;
	st = sl_recv_orig(ctx, cfg, (__u16)ctx->user_port);
	if (!st || st->family != SLUICE_AF_INET)
		return;
	__builtin_memcpy(&a, st->addr, 4);
	ctx->user_ip4 = a;
	ctx->user_port = st->port;
}

/* recvmsg6: the same for ::1 and, on dual-stack sockets, ::ffff:127.0.0.1. */
static __always_inline void sl_recv6(struct bpf_sock_addr *ctx)
{
	struct sluice_cfg *cfg = sl_cfg_get();
	struct sluice_orig *st;
	__u32 s[4], l[4];

	if (!cfg)
		return;
	s[0] = ctx->user_ip6[0];
	s[1] = ctx->user_ip6[1];
	s[2] = ctx->user_ip6[2];
	s[3] = ctx->user_ip6[3];
	if (sl_ip6_is_v4mapped(s)) {
		if (s[3] != cfg->listen_addr4)
			return;
	} else {
		__builtin_memcpy(l, cfg->listen_addr6, 16);
		if (s[0] != l[0] || s[1] != l[1] || s[2] != l[2] || s[3] != l[3])
			return;
	}
	/* sl_peer6 writes the stored address in the form the socket asked for. */
	st = sl_recv_orig(ctx, cfg, (__u16)ctx->user_port);
	if (!st || (st->family == SLUICE_AF_INET) != sl_ip6_is_v4mapped(s))
		return;
	sl_peer6(ctx);
}

#endif
