// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/*
 * sluice kernel half: cgroup programs attached to each sandbox cgroup (see
 * user/bpf_loader.c). Entry points are thin; the logic is in bpf/lib/ headers.
 * Minimum kernel: 5.15 (bpf_get_netns_cookie from sockops). Refusals carry
 * a real errno (EACCES) from 5.18 on (bpf_set_retval); before, EPERM.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include <sluice/sluice_kern_user.h>

#include "lib/maps.h"
#include "lib/common.h"
#include "lib/deny.h"
#include "lib/redirect.h"
#include "lib/sock.h"
#include "lib/peer.h"
#include "lib/conn.h"
#include "lib/udp.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Only TCP and UDP inet sockets (table in lib/sock.h); the rest gets EPERM. */
SEC("cgroup/sock_create")
int sluice_sock_create(struct bpf_sock *ctx)
{
	return sl_sock_create(ctx) < 0 ? SL_DENY : SL_ALLOW;
}

/*
 * Any error (denied address, non-DNS UDP, no config, storage full, other
 * protocols) refuses the connect: fail closed. Table in lib/redirect.h.
 */
SEC("cgroup/connect4")
int sluice_connect4(struct bpf_sock_addr *ctx)
{
	return sl_verdict(sl_redirect4(ctx));
}

SEC("cgroup/connect6")
int sluice_connect6(struct bpf_sock_addr *ctx)
{
	return sl_verdict(sl_redirect6(ctx));
}

/* Unconnected UDP, per datagram: the same rules as a UDP connect. */
SEC("cgroup/sendmsg4")
int sluice_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sl_verdict(sl_sendmsg4(ctx));
}

SEC("cgroup/sendmsg6")
int sluice_sendmsg6(struct bpf_sock_addr *ctx)
{
	return sl_verdict(sl_sendmsg6(ctx));
}

/* The verifier only accepts 1 from recvmsg hooks. */
SEC("cgroup/recvmsg4")
int sluice_recvmsg4(struct bpf_sock_addr *ctx)
{
	sl_recv4(ctx);
	return SL_ALLOW;
}

SEC("cgroup/recvmsg6")
int sluice_recvmsg6(struct bpf_sock_addr *ctx)
{
	sl_recv6(ctx);
	return SL_ALLOW;
}

SEC("cgroup/bind4")
int sluice_bind4(struct bpf_sock_addr *ctx)
{
	return sl_verdict(sl_bind_check(ctx));
}

SEC("cgroup/bind6")
int sluice_bind6(struct bpf_sock_addr *ctx)
{
	return sl_verdict(sl_bind_check(ctx));
}

/* The verifier only accepts 1 from getpeername hooks. */
SEC("cgroup/getpeername4")
int sluice_getpeer4(struct bpf_sock_addr *ctx)
{
	sl_peer4(ctx);
	return SL_ALLOW;
}

SEC("cgroup/getpeername6")
int sluice_getpeer6(struct bpf_sock_addr *ctx)
{
	sl_peer6(ctx);
	return SL_ALLOW;
}

/*
 * A failed publish cannot refuse anything from here; sluiced closes an
 * accepted connection that has no entry, so the failure is still closed.
 */
SEC("sockops")
int sluice_sockops(struct bpf_sock_ops *ctx)
{
	if (ctx->op == BPF_SOCK_OPS_TCP_CONNECT_CB)
		sl_conn_publish(ctx);
	return 1;
}

/* UDP relay flows (lib/udp.h). Always lets the packet go: see there. */
SEC("cgroup_skb/egress")
int sluice_egress(struct __sk_buff *skb)
{
	sl_udp_publish(skb);
	return SL_ALLOW;
}
