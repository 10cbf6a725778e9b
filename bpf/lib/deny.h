/* SPDX-License-Identifier: MIT */
/*
 * Deny set lookups: is this destination in the socket's sandbox's deny set?
 * (And the UDP allow tries, which share the key layout.)
 * One trie per family for all sandboxes; the key starts with the cgroup id
 * (entries are stored with prefixlen = 64 + CIDR length, lookups use the full
 * 64 + address length), so a sandbox only ever matches its own entries.
 */
#ifndef SLUICE_BPF_DENY_H
#define SLUICE_BPF_DENY_H

static __always_inline bool sl_deny4(__u64 cg, __u32 addr)
{
	struct sluice_deny4_key k;

	k.prefixlen = SLUICE_DENY_CG_BITS + 32;
	__builtin_memcpy(k.cgroup_id, &cg, sizeof(k.cgroup_id));
	__builtin_memcpy(k.addr, &addr, sizeof(k.addr));
	return bpf_map_lookup_elem(&sluice_deny4, &k) != NULL;
}

static __always_inline bool sl_deny6(__u64 cg, const __u32 a[4])
{
	struct sluice_deny6_key k;

	k.prefixlen = SLUICE_DENY_CG_BITS + 128;
	__builtin_memcpy(k.cgroup_id, &cg, sizeof(k.cgroup_id));
	__builtin_memcpy(k.addr, a, sizeof(k.addr));
	return bpf_map_lookup_elem(&sluice_deny6, &k) != NULL;
}

/*
 * Is UDP to this destination allowed by the sandbox's policy? The trie gives
 * the longest allowed prefix holding the address; its ranges cover every
 * port allowed there (see sluice_kern_user.h). A v4-mapped destination is an
 * IPv4 one here: the v4 trie answers for it.
 */
static __always_inline bool sl_udp_allowed(__u64 cg, const __u32 a[4], bool v4, __u16 port_be)
{
	struct sluice_udp_allow_val *v;
	__u16 port = bpf_ntohs(port_be);

	if (v4) {
		struct sluice_deny4_key k;

		k.prefixlen = SLUICE_DENY_CG_BITS + 32;
		__builtin_memcpy(k.cgroup_id, &cg, sizeof(k.cgroup_id));
		__builtin_memcpy(k.addr, &a[3], sizeof(k.addr));
		v = bpf_map_lookup_elem(&sluice_uallow4, &k);
	} else {
		struct sluice_deny6_key k;

		k.prefixlen = SLUICE_DENY_CG_BITS + 128;
		__builtin_memcpy(k.cgroup_id, &cg, sizeof(k.cgroup_id));
		__builtin_memcpy(k.addr, a, sizeof(k.addr));
		v = bpf_map_lookup_elem(&sluice_uallow6, &k);
	}
	if (!v)
		return false;
	for (int i = 0; i < SLUICE_UDP_RANGES_MAX; i++) {
		if (i >= v->nranges)
			break;
		if (port >= v->r[i].lo && port <= v->r[i].hi)
			return true;
	}
	return false;
}

#endif
