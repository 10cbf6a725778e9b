/* SPDX-License-Identifier: MIT */
/*
 * cidr: one address block, the shape every module passes CIDRs in (policy
 * lists, BPF trie entries), and the few questions asked of them. IPv4
 * blocks compare with IPv6 ones through their IPv4-mapped form
 * (::ffff:a.b.c.d/(96+n)), which is how a dual-stack socket spells them.
 */
#ifndef SLUICE_CIDR_H
#define SLUICE_CIDR_H

#include <stdbool.h>

/* family AF_INET (addr[0..3] used, the rest zero) or AF_INET6; network
 * byte order; prefix 0..32 or 0..128; host bits zero unless said. */
struct cidr {
	int family;
	unsigned char addr[16];
	unsigned prefix;
};

/* c as IPv6: an IPv4 block becomes its ::ffff:0:0/96 form; IPv6 unchanged. */
struct cidr cidr_as_v6(const struct cidr *c);

/* An IPv4-mapped IPv6 block of prefix >= 96 as the IPv4 block it is;
 * anything else unchanged. */
struct cidr cidr_unmap(const struct cidr *c);

/* The two blocks share at least one address (across families, see above). */
bool cidr_overlap(const struct cidr *x, const struct cidr *y);

/* Every address of inner lies in outer (across families, see above). */
bool cidr_covers(const struct cidr *outer, const struct cidr *inner);

/* addr (4 bytes for AF_INET, 16 for AF_INET6) lies in c. */
bool cidr_contains(const struct cidr *c, int family, const unsigned char *addr);

#endif
