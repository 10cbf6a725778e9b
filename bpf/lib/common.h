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
#define EACCES 13

/* Return values of cgroup hooks: 1 lets the syscall go on, 0 refuses it (EPERM). */
#define SL_ALLOW 1
#define SL_DENY 0

/* Address families seen by sock_create (vmlinux.h has no AF_* macros). */
#define SL_AF_UNIX 1
#define SL_AF_NETLINK 16

#define SL_DNS_PORT bpf_htons(53)

/* skb->protocol values (network order); vmlinux.h has no ETH_P_* macros. */
#define SL_ETH_P_IP bpf_htons(0x0800)
#define SL_ETH_P_IPV6 bpf_htons(0x86DD)

/*
 * bpf_set_retval (5.18+) lets a refusing program choose the errno the
 * syscall returns; without it a refusal is always EPERM. The CO-RE check
 * turns the call into dead code (which the verifier never visits) on a
 * kernel whose BTF lacks the helper; the rodata switch is the loader's last
 * resort when a kernel still refuses the object (bpf_loader.c clears it and
 * reloads).
 */
const volatile bool sl_use_set_retval = true;

/*
 * Turn a helper's result into the hook's verdict: >= 0 allows, -errno
 * refuses with that errno where the kernel can say it (EPERM otherwise).
 * Only for hooks that may call bpf_set_retval (not getpeername/recvmsg).
 */
static __always_inline int sl_verdict(int r)
{
	if (r >= 0)
		return SL_ALLOW;
	if (r != -EPERM && sl_use_set_retval &&
	    bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_set_retval))
		bpf_set_retval(r);
	return SL_DENY;
}

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
