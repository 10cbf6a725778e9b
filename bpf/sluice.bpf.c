// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/*
 * sluice kernel half: cgroup programs attached to each sandbox cgroup (see
 * user/bpf_loader.c). Entry points are thin; the logic is in bpf/lib/ headers.
 * Minimum kernel: 5.15 (bpf_get_netns_cookie from sockops).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include <sluice/sluice_kern_user.h>

#include "lib/maps.h"
#include "lib/common.h"
#include "lib/redirect.h"
#include "lib/peer.h"
#include "lib/conn.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Any error (no config, storage full, non-TCP stream) refuses the connect: fail closed. */
SEC("cgroup/connect4")
int sluice_connect4(struct bpf_sock_addr *ctx)
{
	return sl_redirect4(ctx) < 0 ? SL_DENY : SL_ALLOW;
}

SEC("cgroup/connect6")
int sluice_connect6(struct bpf_sock_addr *ctx)
{
	return sl_redirect6(ctx) < 0 ? SL_DENY : SL_ALLOW;
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
