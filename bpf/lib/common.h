/* SPDX-License-Identifier: MIT */
/*
 * Small definitions the BPF side needs that vmlinux.h does not carry
 * (errno values and address-family macros are #defines, not BTF types).
 */
#ifndef SLUICE_BPF_COMMON_H
#define SLUICE_BPF_COMMON_H

#define EPERM 1
#define ENOENT 2
#define ENOMEM 12

/* Return values of cgroup hooks: 1 lets the syscall go on, 0 refuses it (EPERM). */
#define SL_ALLOW 1
#define SL_DENY 0

/* ::ffff:a.b.c.d — the third 32-bit word of an IPv4-mapped IPv6 address. */
#define SL_V4MAPPED_W2 bpf_htonl(0x0000ffff)

static __always_inline bool sl_ip6_is_v4mapped(const __u32 w[4])
{
	return w[0] == 0 && w[1] == 0 && w[2] == SL_V4MAPPED_W2;
}

static __always_inline struct sluice_cfg *sl_cfg_get(void)
{
	__u32 key = 0;

	return bpf_map_lookup_elem(&sluice_cfg_map, &key);
}

#endif
