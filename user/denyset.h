/* SPDX-License-Identifier: MIT */
/*
 * denyset: the set of destination addresses no sandbox may reach — cloud
 * metadata services in every address spelling, loopback, link-local,
 * multicast, the host's own addresses and (unless the policy allows them)
 * private ranges. Built once, immutable afterwards, shared by the BPF
 * connect programs (LPM tries), nftables (interval sets) and sluiced's
 * upstream dial check. Pure apart from the optional host-address query
 * (getifaddrs in the caller's network namespace). No logging; -errno returns.
 * docs/security.md lists every default entry and why it is there.
 */
#ifndef SLUICE_DENYSET_H
#define SLUICE_DENYSET_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* One CIDR block. addr holds the network address in network byte order:
 * 4 bytes for AF_INET (the rest zero), 16 for AF_INET6; host bits are zero.
 * reason says why it is denied (NULL allowed on input). */
struct ds_cidr {
	int family;
	unsigned char addr[16];
	unsigned prefix;
	const char *reason;
};

struct denyset;

/* Parse "a.b.c.d/n", "a.b.c.d" (= /32), "x::y/n" or "x::y" (= /128) into
 * *ret (reason NULL). Host bits set, a prefix out of range, spaces, or
 * anything else malformed: -EINVAL. */
int ds_parse_cidr(const char *s, struct ds_cidr *ret);

/* Format c as "a.b.c.d/n" or "x::y/n" into buf. Returns buf. */
const char *ds_cidr_str(const struct ds_cidr *c, char *buf, size_t len);

/* true when the address (family-sized bytes, network order) lies inside c. */
bool ds_cidr_contains(const struct ds_cidr *c, int family, const unsigned char *addr);

struct ds_opts {
	const struct ds_cidr *add;	/* extra denied blocks (policy); win over removals */
	unsigned nadd;
	const struct ds_cidr *remove;	/* private blocks the policy allows */
	unsigned nremove;
	bool include_host_addrs;	/* deny the caller's netns interface addresses */
};

/* Build a deny set: the default entries, plus o->add, minus o->remove, plus
 * the host's own addresses when o->include_host_addrs. Every IPv4 entry is
 * also entered in its IPv4-mapped (::ffff:0:0/96), NAT64 (64:ff9b::/96) and
 * 6to4 (2002::/16) forms. A removal must lie inside a private range
 * (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7) and not inside a
 * protected entry (metadata, host address, policy addition): else -EPERM
 * with the reason in err. Protected entries inside a removed range stay
 * denied. o may be NULL (defaults, no host addresses). A malformed entry:
 * -EINVAL. getifaddrs failure: its -errno. On success *ret_d is the caller's
 * (ds_free). err (may be NULL) gets a one-line message on failure. */
int ds_build(const struct ds_opts *o, struct denyset **ret_d, char *err, size_t errlen);

/* Free a deny set; NULL is fine. */
void ds_free(struct denyset *d);

/* true when sa (AF_INET or AF_INET6) is denied. An IPv4-mapped IPv6 address
 * is also checked as the IPv4 address it carries. Other families: false. */
bool ds_contains(const struct denyset *d, const struct sockaddr *sa);

/* Number of entries for AF_INET or AF_INET6 (else 0). The entries are
 * sorted by address and never overlap (a block inside another was merged
 * into it), so they feed nftables interval sets and BPF LPM tries as-is. */
unsigned ds_count(const struct denyset *d, int family);

/* Entry i of family (0 <= i < ds_count), or NULL. Owned by d. */
const struct ds_cidr *ds_at(const struct denyset *d, int family, unsigned i);

#endif /* SLUICE_DENYSET_H */
