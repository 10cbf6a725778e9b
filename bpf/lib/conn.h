/* SPDX-License-Identifier: MIT */
/*
 * sockops: publish {netns cookie, client addr, client port} -> original
 * destination for the daemon's accept() path. The connect hooks cannot do it:
 * the local port is chosen only after they ran. TCP_CONNECT_CB runs in
 * tcp_connect() once the port is bound and before the SYN leaves (Fast Open
 * included), so the entry exists before the listener can accept().
 */
#ifndef SLUICE_BPF_CONN_H
#define SLUICE_BPF_CONN_H

/*
 * Build the key the way sluiced will see the connection: the accepted
 * socket's peer address. A dual-stack socket that connected to the mapped
 * v4 listener lands on the AF_INET listener, so ::ffff:a.b.c.d is folded to
 * AF_INET here. local_port is host order in bpf_sock_ops (remote_port is
 * network order), the key wants network order.
 */
static __always_inline int sl_conn_key(struct bpf_sock_ops *ctx, struct sluice_conn_key *key)
{
	__u32 l[4];
	__u32 a;

	__builtin_memset(key, 0, sizeof(*key));
	key->netns_cookie = bpf_get_netns_cookie(ctx);
	key->port = bpf_htons((__u16)ctx->local_port);
	if (ctx->family == SLUICE_AF_INET) {
		a = ctx->local_ip4;
		__builtin_memcpy(key->addr, &a, 4);
		key->family = SLUICE_AF_INET;
		return 0;
	}
	if (ctx->family != SLUICE_AF_INET6)
		return -ENOENT;
	l[0] = ctx->local_ip6[0];
	l[1] = ctx->local_ip6[1];
	l[2] = ctx->local_ip6[2];
	l[3] = ctx->local_ip6[3];
	if (sl_ip6_is_v4mapped(l)) {
		__builtin_memcpy(key->addr, &l[3], 4);
		key->family = SLUICE_AF_INET;
	} else {
		__builtin_memcpy(key->addr, l, 16);
		key->family = SLUICE_AF_INET6;
	}
	return 0;
}

static __always_inline int sl_conn_publish(struct bpf_sock_ops *ctx)
{
	struct sluice_conn_key key;
	struct sluice_orig val;
	struct bpf_sock *sk;
	struct sluice_orig *st;
	int r;

	sk = ctx->sk;
	if (!sk)
		return -ENOENT;
	st = bpf_sk_storage_get(&sluice_orig_map, sk, 0, 0);
	if (!st)
		return -ENOENT; /* not steered by sluice (e.g. connect hook not ours) */
	r = sl_conn_key(ctx, &key);
	if (r < 0)
		return r;
	/* This connect() has passed all cgroup hooks: the nesting marker is done. */
	st->flags &= ~SLUICE_ORIG_F_PENDING;
	val = *st;
	return bpf_map_update_elem(&sluice_conn_map, &key, &val, BPF_ANY);
}

#endif
