/* SPDX-License-Identifier: MIT */
/*
 * sock_create and bind4/6: which sockets a sandbox may open at all, and which
 * local ports it may not take.
 */
#ifndef SLUICE_BPF_SOCK_H
#define SLUICE_BPF_SOCK_H

/*
 * Decision table of cgroup/sock_create (refusal = EPERM, the hook's own errno):
 *
 *   family            type         protocol              verdict
 *   AF_INET/AF_INET6  SOCK_STREAM  IPPROTO_TCP (or 0)    allow (steered by connect4/6)
 *   AF_INET/AF_INET6  SOCK_DGRAM   IPPROTO_UDP (or 0)    allow (DNS steered, rest refused)
 *   AF_INET/AF_INET6  SOCK_RAW     any                   refuse
 *   AF_INET/AF_INET6  SOCK_DGRAM   ICMP / ICMPV6 (ping)  refuse
 *   AF_INET/AF_INET6  SOCK_DGRAM   IPPROTO_UDPLITE       refuse
 *   AF_INET/AF_INET6  SOCK_STREAM  IPPROTO_MPTCP         refuse
 *   AF_INET/AF_INET6  any          IPPROTO_SCTP          refuse
 *   AF_INET/AF_INET6  anything else                      refuse
 *   AF_UNIX                                              allow (local IPC)
 *   AF_NETLINK                                           allow (see below)
 *   any other family (AF_PACKET, AF_VSOCK, ...)          refuse
 *
 * Kernel facts that shape it: the hook runs only from inet_create() and
 * inet6_create(), so the rows below AF_INET6 are what we would do if it ever
 * ran for them; today AF_PACKET and raw netlink are contained by the missing
 * capabilities (`sluicectl run` drops CAP_NET_RAW and CAP_NET_ADMIN: packet
 * sockets need CAP_NET_RAW, netlink changes need CAP_NET_ADMIN) and by the
 * sandbox netns. AF_NETLINK must stay usable: getaddrinfo (AI_ADDRCONFIG),
 * `ip` and Go's net package read routes and addresses over NETLINK_ROUTE.
 * inet_create() resolves protocol 0 to the type's default before the hook,
 * so 0 is accepted only defensively.
 */
static __always_inline int sl_sock_create(struct bpf_sock *ctx)
{
	__u32 family = ctx->family;
	__u32 type = ctx->type;
	__u32 proto = ctx->protocol;

	if (family == SL_AF_UNIX || family == SL_AF_NETLINK)
		return 0;
	if (family != SLUICE_AF_INET && family != SLUICE_AF_INET6)
		return -EPERM;
	if (type == SOCK_STREAM && (proto == IPPROTO_TCP || proto == 0))
		return 0;
	if (type == SOCK_DGRAM && (proto == IPPROTO_UDP || proto == 0))
		return 0;
	return -EPERM;
}

/*
 * bind4/6: the sandbox may not take the listener's or the DNS listener's
 * port on any address (while sluiced is down it could otherwise stand in for
 * it). Port 0 (kernel picks) is fine. EACCES, like an unprivileged low port.
 */
static __always_inline int sl_bind_check(struct bpf_sock_addr *ctx)
{
	struct sluice_cfg *cfg = sl_cfg_get();
	__u16 port = (__u16)ctx->user_port;

	if (!cfg || !port)
		return 0;
	if (port == cfg->listen_port || (cfg->dns_port && port == cfg->dns_port) ||
	    (cfg->udp_port && port == cfg->udp_port))
		return -EACCES;
	return 0;
}

#endif
