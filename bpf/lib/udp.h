/* SPDX-License-Identifier: MIT */
/*
 * cgroup_skb/egress: publish UDP relay flows, and who sends to the DNS
 * listener. A pinned socket's datagram to the relay (or a steered socket's
 * query to the DNS listener: the host netns's listener is shared by every
 * host-netns sandbox, and sluiced must know whose query it answers) carries
 * the socket's source port, which connect4/6 never saw
 * (a UDP socket is bound after its connect hook runs, and a connected
 * socket's datagrams pass no sendmsg hook). Writing {netns cookie, source
 * address, source port} -> pinned destination here, before the datagram is
 * queued to the relay, lets sluiced look the flow up for each datagram it
 * reads. The program never drops: connect4/6 and sendmsg4/6 already decided,
 * and a datagram the relay finds no entry for is dropped there (closed).
 */
#ifndef SLUICE_BPF_UDP_H
#define SLUICE_BPF_UDP_H

#define SL_IPPROTO_UDP 17

static __always_inline int sl_udp_publish(struct __sk_buff *skb)
{
	struct sluice_cfg *cfg = sl_cfg_get();
	struct sluice_conn_key key;
	struct sluice_orig *st;
	struct bpf_sock *sk;
	__u16 ports[2]; /* UDP source, destination (network order) */
	__u32 off;

	if (!cfg || (!cfg->udp_port && !cfg->dns_port))
		return 0;
	__builtin_memset(&key, 0, sizeof(key));
	if (skb->protocol == SL_ETH_P_IP) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			return 0;
		if (ip.protocol != SL_IPPROTO_UDP || ip.daddr != cfg->listen_addr4)
			return 0;
		off = ip.ihl * 4;
		__builtin_memcpy(key.addr, &ip.saddr, 4);
		key.family = SLUICE_AF_INET;
	} else if (skb->protocol == SL_ETH_P_IPV6) {
		struct ipv6hdr ip6;
		__u32 d[4], l[4];

		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
			return 0;
		/* The relay's datagrams never carry extension headers. */
		__builtin_memcpy(d, &ip6.daddr, 16);
		__builtin_memcpy(l, cfg->listen_addr6, 16);
		if (ip6.nexthdr != SL_IPPROTO_UDP || d[0] != l[0] || d[1] != l[1] ||
		    d[2] != l[2] || d[3] != l[3])
			return 0;
		off = sizeof(ip6);
		__builtin_memcpy(key.addr, &ip6.saddr, 16);
		key.family = SLUICE_AF_INET6;
	} else {
		return 0;
	}
	if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)))
		return 0;
	if (!(cfg->udp_port && ports[1] == cfg->udp_port) &&
	    !(cfg->dns_port && ports[1] == cfg->dns_port))
		return 0;
	sk = skb->sk;
	if (!sk)
		return 0;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return 0;
	st = bpf_sk_storage_get(&sluice_orig_map, sk, 0, 0);
	if (!st || !!(st->flags & SLUICE_ORIG_F_UDP_RELAY) != (ports[1] == cfg->udp_port))
		return 0;
	key.port = ports[0];
	key.netns_cookie = bpf_get_netns_cookie(skb);
	return bpf_map_update_elem(&sluice_udp_flows, &key, st, BPF_ANY);
}

#endif
