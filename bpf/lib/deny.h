/* SPDX-License-Identifier: MIT */
/*
 * Deny set lookups: is this destination in the socket's sandbox's deny set?
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

#endif
