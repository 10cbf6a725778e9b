/* SPDX-License-Identifier: MIT */
/*
 * bpf_loader: the one module that owns the libbpf skeleton of
 * bpf/sluice.bpf.c (open -> load -> pin -> attach -> close). The rest of the
 * daemon talks to the kernel half only through these functions.
 *
 * Pin layout under pin_dir (default /sys/fs/bpf/sluice, bpffs mounted at
 * /sys/fs/bpf by bpfl_open if missing):
 *   pin_dir/maps/<map>            maps, reused by a restarted sluiced
 *   pin_dir/links/<sandbox-id>/<prog>   one bpf_link per program and cgroup
 * Links stay pinned while sluiced is down: the sandbox's connects are then
 * still redirected to the (closed) listener port and fail; they never bypass.
 */
#ifndef SLUICE_BPF_LOADER_H
#define SLUICE_BPF_LOADER_H

#include <stdbool.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sluice/sluice_kern_user.h>

#include "cidr.h"

struct bpfl;

struct bpfl_opts {
	const char *pin_dir;       /* NULL: /sys/fs/bpf/sluice */
	uint16_t listen_port;      /* host order */
	uint16_t dns_port;         /* host order; DNS listener (UDP + TCP) on the same
				    * addresses. 0: no DNS listener, DNS is refused */
	uint16_t udp_port;         /* host order; UDP relay listener on the same addresses.
				    * 0: no relay, every non-DNS datagram is refused */
	struct in_addr listen_addr4;   /* normally 127.0.0.1 */
	struct in6_addr listen_addr6;  /* normally ::1 */
};

/*
 * Load the programs, reusing pinned maps when present, pin the maps, write
 * the config map. Returns 0 and *ret_bpfl, or -errno (message to stderr is
 * the caller's job: use bpfl_strerror-like context in the log).
 */
int bpfl_open(const struct bpfl_opts *opts, struct bpfl **ret_bpfl);
void bpfl_close(struct bpfl *b);

/*
 * Attach every program to the cgroup at cgroup_path and pin the links under
 * links/<sandbox_id>/. Idempotent: links already pinned for that id are kept
 * (a restarted daemon calls this again; the kept links are switched to the
 * programs loaded by this bpfl, atomically). Returns 0, -EINVAL (bad id),
 * -ENOENT (not a cgroup2 directory), -ELOOP (the calling process itself is in
 * that cgroup or below it: its own connects would loop back to it), or
 * -errno. On error, links pinned so far are kept (still fail-closed); call
 * bpfl_detach_cgroup to remove them.
 */
int bpfl_attach_cgroup(struct bpfl *b, const char *sandbox_id, const char *cgroup_path);

/*
 * Detach (synchronously, BPF_LINK_DETACH) and unpin the links of sandbox_id.
 * Missing id: 0.
 */
int bpfl_detach_cgroup(struct bpfl *b, const char *sandbox_id);

/* true when links for sandbox_id are pinned. */
bool bpfl_is_attached(struct bpfl *b, const char *sandbox_id);

/*
 * For a socket just returned by accept() on a sluice listener: find the
 * original destination the sandbox asked for, and delete the entry (so the
 * map never fills with served connections). Uses SO_NETNS_COOKIE and the
 * peer address of accepted_fd. Returns 0 and *ret_orig, -ENOENT when the
 * connection was not redirected by sluice (sluiced closes it), or -errno.
 * Thread-safe.
 */
int bpfl_conn_take(struct bpfl *b, int accepted_fd, struct sluice_orig *ret_orig);

/*
 * Deny set of one sandbox, keyed by the cgroup id its sockets carry (the id
 * in sluice_orig.cgroup_id, bpfl_cgroup_id() of the sandbox cgroup). The
 * connect and sendmsg programs refuse a destination in it with EACCES (EPERM
 * on kernels before 5.18) before any redirect. Entries are exact per cgroup:
 * a sub-cgroup of the sandbox needs its own call. A v4-mapped IPv6
 * destination is checked against both the IPv4 entries and the IPv6 entries
 * (so ::ffff:a.b.c.d/(96+n) entries work too); an AF_INET socket only
 * against the IPv4 entries.
 */
/* Entries are struct cidr (cidr.h); host bits are ignored. */

#define BPFL_DENY_MAX 4096 /* entries per bpfl_set_deny call */

/*
 * Replace the deny set of cgroup_id with cidrs[0..n): the new entries are
 * inserted first, then the stale ones deleted, so an address in both the old
 * and the new set is never allowed in between. Returns 0, -EINVAL (bad
 * family/prefix, n > BPFL_DENY_MAX, cgroup_id 0; nothing changed), -E2BIG /
 * -ENOMEM (map full: the entries inserted so far stay, more is denied, never
 * less), or -errno. Not thread-safe against itself for one cgroup_id.
 */
int bpfl_set_deny(struct bpfl *b, uint64_t cgroup_id, const struct cidr *cidrs, unsigned n);

/* Remove every deny entry of cgroup_id (call it on detach). 0 or -errno. */
int bpfl_clear_deny(struct bpfl *b, uint64_t cgroup_id);

/*
 * UDP destinations the sandbox's policy allows (network.udp). One entry per
 * distinct CIDR; its ranges must already include the ranges of every other
 * entry whose CIDR covers it (an LPM lookup sees only the longest match).
 * sendmsg4/6 and connect4/6 steer a datagram to the UDP relay when its
 * destination is not in the deny set and an entry allows its port, and pin
 * the socket to it. Replaced like the deny set (new entries first); n == 0
 * clears. 0, -EINVAL (bad entry, n > BPFL_UDP_ALLOW_MAX, cgroup_id 0;
 * nothing changed), -E2BIG / -ENOMEM (map full: the entries inserted so far
 * stay beside the old ones, so more is allowed than either set until the
 * next successful call; sluiced's relay re-checks the policy for every
 * datagram, so nothing more is relayed), or -errno.
 */
struct bpfl_udp_allow {
	struct cidr cidr;
	unsigned nranges;                 /* 1..SLUICE_UDP_RANGES_MAX */
	struct {
		uint16_t lo, hi;          /* host order, lo <= hi */
	} ranges[SLUICE_UDP_RANGES_MAX];
};

#define BPFL_UDP_ALLOW_MAX 1024 /* entries per bpfl_set_udp_allow call */

int bpfl_set_udp_allow(struct bpfl *b, uint64_t cgroup_id, const struct bpfl_udp_allow *v,
		       unsigned n);
int bpfl_clear_udp_allow(struct bpfl *b, uint64_t cgroup_id);

/*
 * The UDP relay's view of a datagram: src is its source as recvmsg() on the
 * relay socket gave it, netns_cookie that socket's SO_NETNS_COOKIE. Returns
 * 0 and the destination the sending socket is pinned to (with its cgroup
 * id), -ENOENT when no pinned socket sent it (sluiced drops it), or -errno.
 * forget deletes the entry (flow expired; the next datagram publishes it
 * again). Thread-safe.
 */
int bpfl_udp_flow_lookup(struct bpfl *b, uint64_t netns_cookie, const struct sockaddr *src,
			 struct sluice_orig *ret_orig);
int bpfl_udp_flow_forget(struct bpfl *b, uint64_t netns_cookie, const struct sockaddr *src);

/*
 * Register (on) or forget a sandbox cgroup. A socket created in that cgroup
 * or any descendant belongs to the innermost registered cgroup above it:
 * its id keys the deny and allow tries and is the cgroup_id sluiced gets in
 * the original-destination records. Register before bpfl_attach_cgroup,
 * forget after bpfl_detach_cgroup. 0, -EINVAL (cgroup_id 0), -E2BIG (more
 * than SLUICE_SANDBOX_MAP_MAX sandboxes) or -errno; forgetting an unknown
 * id is 0.
 */
int bpfl_sandbox_register(struct bpfl *b, uint64_t cgroup_id, bool on);

/*
 * What the loaded programs could keep on this kernel. socket cgroup: false
 * when the verifier refused the BTF walk to the socket's cgroup, so the
 * programs use the calling task's cgroup (a socket handed to a process in
 * another cgroup then counts as that cgroup's). set_retval: false when
 * refusals can only be EPERM (kernels before 5.18).
 */
bool bpfl_uses_socket_cgroup(const struct bpfl *b);
bool bpfl_uses_set_retval(const struct bpfl *b);

/* Cgroup id (inode number of the cgroup2 directory) of path; 0 on error. */
uint64_t bpfl_cgroup_id(const char *cgroup_path);

#endif
