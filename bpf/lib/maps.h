/* SPDX-License-Identifier: MIT */
/*
 * Maps of the sluice BPF object. Names are kept <= 15 characters (the
 * kernel's BPF_OBJ_NAME_LEN) because user/bpf_loader.c pins them under
 * pin_dir/maps/<name> and a restarted sluiced reuses them by that name.
 * Layout of keys and values: include/sluice/sluice_kern_user.h.
 */
#ifndef SLUICE_BPF_MAPS_H
#define SLUICE_BPF_MAPS_H

/* Single entry (key 0): the listener connects are redirected to. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sluice_cfg);
} sluice_cfg_map SEC(".maps");

/*
 * Original destination per socket. Socket local storage lives and dies with
 * the socket, so getpeername works for the socket's whole life and nothing
 * leaks when the sandbox never gets to accept().
 */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sluice_orig);
} sluice_orig_map SEC(".maps");

/*
 * Client end of a redirected connection -> original destination, for the
 * daemon's accept() path. LRU: entries of connections that never reach
 * accept() (listener down, backlog full) are evicted instead of filling it.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SLUICE_CONN_MAP_MAX);
	__type(key, struct sluice_conn_key);
	__type(value, struct sluice_orig);
} sluice_conn_map SEC(".maps");

/*
 * Deny sets of every sandbox, keyed {cgroup id, address} (see
 * sluice_kern_user.h). LPM tries must be created without preallocation.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, SLUICE_DENY_MAP_MAX);
	__type(key, struct sluice_deny4_key);
	__type(value, struct sluice_deny_val);
} sluice_deny4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, SLUICE_DENY_MAP_MAX);
	__type(key, struct sluice_deny6_key);
	__type(value, struct sluice_deny_val);
} sluice_deny6 SEC(".maps");

/*
 * The attached sandbox cgroups (id -> reserved 0): a socket in a
 * descendant cgroup belongs to the innermost of them above it.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SLUICE_SANDBOX_MAP_MAX);
	__type(key, __u64);
	__type(value, __u32);
} sluice_sandboxes SEC(".maps");

/* UDP destinations allowed per sandbox, same keys as the deny tries. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, SLUICE_UDP_ALLOW_MAP_MAX);
	__type(key, struct sluice_deny4_key);
	__type(value, struct sluice_udp_allow_val);
} sluice_uallow4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, SLUICE_UDP_ALLOW_MAP_MAX);
	__type(key, struct sluice_deny6_key);
	__type(value, struct sluice_udp_allow_val);
} sluice_uallow6 SEC(".maps");

/*
 * Sandbox UDP socket (as the relay sees it) -> pinned destination. LRU:
 * flows of sockets long closed fall out; sluiced also deletes entries of
 * flows it expired.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SLUICE_UDP_FLOW_MAP_MAX);
	__type(key, struct sluice_conn_key);
	__type(value, struct sluice_orig);
} sluice_udp_flows SEC(".maps");

#endif
