/* SPDX-License-Identifier: MIT */
/*
 * Structures shared by the BPF programs (bpf/sluice.bpf.c) and userspace
 * (user/bpf_loader.c). Fixed-width fields, explicit padding, no pointers.
 *
 * Files that must change together with this one:
 *   bpf/sluice.bpf.c, bpf/lib/ headers, user/bpf_loader.c, user/bpf_loader.h
 */
#ifndef SLUICE_KERN_USER_H
#define SLUICE_KERN_USER_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define SLUICE_AF_INET  2
#define SLUICE_AF_INET6 10

/*
 * Single-entry config array, key 0. Written by sluiced before any attach.
 * The DNS listener (UDP and TCP) uses the same addresses as the proxy
 * listener. dns_port took the place of a padding field: the layout (and so a
 * pinned map of an older sluiced) is unchanged, and 0 means "no DNS
 * listener", which makes the programs refuse DNS (fail closed). udp_port
 * took half of the old pad1 the same way: 0 means "no UDP relay", and then
 * every non-DNS datagram is refused, allowed destinations included.
 */
struct sluice_cfg {
	__be32 listen_addr4;    /* listener IPv4 address (127.0.0.1) */
	__be16 listen_port;     /* listener TCP port, network order */
	__be16 dns_port;        /* DNS listener port (UDP + TCP), network order; 0: none */
	__u8 listen_addr6[16];  /* listener IPv6 address (::1) */
	__u32 flags;            /* reserved, 0 */
	__be16 udp_port;        /* UDP relay listener port, network order; 0: none */
	__u16 pad1;
};

/*
 * Original destination of a redirected connect(). Kept in socket local
 * storage (for getpeername) and published in the conn map (for sluiced).
 * addr holds a v4 address in its first 4 bytes when family == AF_INET;
 * IPv4-mapped IPv6 destinations are stored as AF_INET with
 * SLUICE_ORIG_F_V4MAPPED set so getpeername6 can hand back the mapped form.
 */
#define SLUICE_ORIG_F_V4MAPPED 0x1
/*
 * A UDP socket pinned to this allowed destination: its datagrams go to the
 * UDP relay, the relay's replies get this address as their source, and a
 * datagram to any other destination is refused (one destination per socket).
 */
#define SLUICE_ORIG_F_UDP_RELAY 0x2
/*
 * Kernel-internal: set by connect4/6, cleared by sockops once the connect()
 * has passed every cgroup hook. Lets a second sluice program in the same
 * connect() (nested sandbox cgroups) keep the first one's record. Never set
 * in entries sluiced reads from the conn map.
 */
#define SLUICE_ORIG_F_PENDING 0x80000000u
struct sluice_orig {
	__u8 addr[16];
	__be16 port;
	__u16 family;
	__u32 flags;
	__u64 cgroup_id;        /* cgroup of the socket (fixed at socket()) */
};

/*
 * Key of the conn map: the client end of the redirected connection as the
 * listener sees it (accept() peer address), plus the netns cookie of the
 * socket (SO_NETNS_COOKIE on the accepted socket gives the same value), so
 * equal loopback addresses in different sandbox netns never collide.
 * v4-mapped client addresses are normalised to AF_INET.
 */
struct sluice_conn_key {
	__u64 netns_cookie;
	__u8 addr[16];
	__be16 port;
	__u16 family;
	__u32 pad;
};

#define SLUICE_CONN_MAP_MAX 65536

/*
 * Deny set: one LPM trie per family serves every sandbox. The key is the
 * socket's cgroup id followed by the address, and an entry for CIDR a/n of
 * sandbox c is inserted with prefixlen = 64 + n, so a lookup with
 * {64 + 32 (or 128), c, dst} matches only c's entries. cgroup_id is the
 * __u64 in host byte order, copied as bytes (the trie compares bytes; only
 * all 64 bits matter, so the order is irrelevant as long as both halves
 * agree). Packed layout, no padding: data must follow prefixlen directly.
 */
#define SLUICE_DENY_CG_BITS 64
struct sluice_deny4_key {
	__u32 prefixlen;        /* 64 + IPv4 prefix length (0..32) */
	__u8 cgroup_id[8];
	__u8 addr[4];
};

struct sluice_deny6_key {
	__u32 prefixlen;        /* 64 + IPv6 prefix length (0..128) */
	__u8 cgroup_id[8];
	__u8 addr[16];
};

/* Value of a deny entry: reserved (a rule number later), 0 today. */
struct sluice_deny_val {
	__u32 flags;
};

#define SLUICE_DENY_MAP_MAX 65536

/* Attached sandbox cgroup ids (key __u64 cgroup id, value __u32 0). */
#define SLUICE_SANDBOX_MAP_MAX 4096

/*
 * UDP destinations a sandbox's policy allows (network.udp): two more LPM
 * tries with the deny tries' keys, one entry per distinct CIDR. An entry's
 * port ranges already include those of every shorter allowed prefix that
 * covers it (sluiced merges them), because an LPM lookup only returns the
 * longest match. Ports in host order, lo <= hi; nranges <= SLUICE_UDP_RANGES_MAX.
 */
#define SLUICE_UDP_RANGES_MAX 16
struct sluice_udp_range {
	__u16 lo;
	__u16 hi;
};

struct sluice_udp_allow_val {
	__u32 nranges;
	struct sluice_udp_range r[SLUICE_UDP_RANGES_MAX];
};

#define SLUICE_UDP_ALLOW_MAP_MAX 16384

/*
 * UDP relay flows: the sandbox socket's address as the relay sees it (same
 * key as the conn map: netns cookie, source address, source port) -> the
 * pinned destination. Published by the cgroup_skb/egress program for every
 * datagram a pinned socket sends to the relay (it knows the source port,
 * which connect4/6 does not), read by sluiced for each datagram it relays.
 */
#define SLUICE_UDP_FLOW_MAP_MAX 65536

#ifndef __VMLINUX_H__
_Static_assert(sizeof(struct sluice_cfg) == 32, "sluice_cfg layout");
_Static_assert(sizeof(struct sluice_orig) == 32, "sluice_orig layout");
_Static_assert(sizeof(struct sluice_conn_key) == 32, "sluice_conn_key layout");
_Static_assert(sizeof(struct sluice_deny4_key) == 16, "sluice_deny4_key layout");
_Static_assert(sizeof(struct sluice_deny6_key) == 28, "sluice_deny6_key layout");
_Static_assert(sizeof(struct sluice_udp_allow_val) == 4 + 4 * SLUICE_UDP_RANGES_MAX,
	       "sluice_udp_allow_val layout");
#endif

#endif
