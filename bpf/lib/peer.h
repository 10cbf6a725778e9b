/* SPDX-License-Identifier: MIT */
/*
 * getpeername4/6: a redirected socket reports the address it asked for, not
 * the listener, so programs that check their peer (or log it) see no change.
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

#endif
