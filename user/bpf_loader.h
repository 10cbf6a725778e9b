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

struct bpfl;

struct bpfl_opts {
	const char *pin_dir;       /* NULL: /sys/fs/bpf/sluice */
	uint16_t listen_port;      /* host order */
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

/* Cgroup id (inode number of the cgroup2 directory) of path; 0 on error. */
uint64_t bpfl_cgroup_id(const char *cgroup_path);

#endif
