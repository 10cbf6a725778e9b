/* SPDX-License-Identifier: MIT */
/*
 * nft: the nftables half of containment, spoken directly over netlink
 * (libmnl + libnftnl; the `nft` binary is never run). Every change is one
 * netlink batch, so the kernel applies it whole or not at all and a packet
 * never sees a half-made ruleset.
 *
 * Sandbox netns mode (netns_path set): table inet "sluice_<id>" in that netns,
 *   chain output (hook output, priority 0, policy drop):
 *     oif lo, daddr 127.0.0.1/::1, tcp/udp dport <listener port>   accept
 *     oif lo, saddr 127.0.0.1/::1, tcp/udp sport <listener port>   accept
 *     ip daddr @deny4 counter drop ; ip6 daddr @deny6 counter drop
 *     (everything else: policy drop)
 * Host netns mode (netns_path NULL): table inet "sluice" in the caller's
 *   netns, base chain output (policy accept) with one rule per sandbox
 *     socket cgroupv2 level L == <cgroup id>  jump sb_<id>
 *   and chain sb_<id>: the same accepts, deny sets deny4_<id>/deny6_<id>,
 *   then counter drop.
 * The listener accepts come before the deny drops because the deny set holds
 * 127.0.0.0/8 and ::1 itself; they are exact (address, port, oif lo) and
 * reach only sluiced. No logging; -errno returns with a message in err.
 */
#ifndef SLUICE_NFT_H
#define SLUICE_NFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct denyset;

#define NFT_MAX_PORTS 4

struct nft_sandbox_cfg {
	const char *netns_path;		/* sandbox netns; NULL = caller's netns, cgroup matching */
	uint64_t cgroup_id;		/* host mode: the sandbox cgroup's id (inode number) */
	unsigned cgroup_level;		/* host mode: its depth below the cgroup2 root (>= 1) */
	const char *sandbox_id;		/* [A-Za-z0-9_.-]{1,64} */
	uint16_t tcp_ports[NFT_MAX_PORTS];	/* sluiced listener ports on loopback */
	unsigned ntcp;
	uint16_t udp_ports[NFT_MAX_PORTS];
	unsigned nudp;
	const struct denyset *deny;	/* entries go into the deny4/deny6 interval sets */
};

/* Create, or replace atomically, the sandbox's table (netns mode) or chain,
 * sets and jump rule (host mode), deny sets filled, in ONE batch. An
 * existing table is replaced in place inside that transaction: table and
 * base chain stay hooked, their rules and set elements are flushed and
 * re-added (deleting and re-adding a hooked table in one batch lets packets
 * through on current kernels). Calling it again with the same cfg is safe
 * (a restarted sluiced re-applies without a gap). 0, -EINVAL (bad cfg), or
 * the kernel's -errno with the failing step in err. */
int nft_sandbox_apply(const struct nft_sandbox_cfg *c, char *err, size_t errlen);

/* Replace the contents of the deny sets only, atomically (flush + add in one
 * batch). Nothing applied yet: -ENOENT. */
int nft_sandbox_update_deny(const struct nft_sandbox_cfg *c, char *err, size_t errlen);

/* Delete the sandbox's table (netns mode) or its jump rule, chain and sets
 * (host mode; the shared "sluice" table stays). Missing: 0. */
int nft_sandbox_remove(const struct nft_sandbox_cfg *c, char *err, size_t errlen);

/* true when the sandbox's table (netns mode) or chain (host mode) exists. */
bool nft_sandbox_present(const struct nft_sandbox_cfg *c);

/* Packets dropped so far by the sandbox's deny-set rules (IPv4 + IPv6), for
 * metrics and tests. Nothing applied: -ENOENT. */
int nft_sandbox_deny_packets(const struct nft_sandbox_cfg *c, uint64_t *ret_packets);

#endif /* SLUICE_NFT_H */
