/* SPDX-License-Identifier: MIT */
/*
 * sandbox: the OS plumbing of a sandbox — cgroup v2 directories, network
 * namespaces pinned by bind mount, listening sockets opened inside a
 * sandbox's netns, and the on-disk record of attached sandboxes that lets a
 * restarted sluiced reopen its listeners. No logging; -errno returns.
 */
#ifndef SLUICE_SANDBOX_H
#define SLUICE_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define SB_ID_MAX 64

/* true when id matches [A-Za-z0-9_.-]{1,64} and is not "." or "..". */
bool sb_id_valid(const char *id);

/* Mount point of cgroup v2, found in /proc/mounts (/sys/fs/cgroup or
 * /sys/fs/cgroup/unified on hybrid hosts). 0 or -ENOENT. */
int sb_cgroup2_root(char *buf, size_t len);

/* true when path is a directory on a cgroup2 filesystem. */
bool sb_is_cgroup2_dir(const char *path);

/* mkdir -p of a cgroup directory (0755). Existing: 0. -ENOTDIR when the
 * result is not on cgroup2. */
int sb_cgroup_create(const char *path);

/* Move the process pid (0: the calling process, all its threads) into the
 * cgroup at path. */
int sb_cgroup_enter(const char *path, int pid);

/* Kill what is left in the cgroup and below it (cgroup.kill, else SIGKILL
 * each pid in cgroup.procs, repeated), wait up to 2 s for it to empty, then
 * rmdir its child directories depth-first and itself. Missing: 0. Still
 * populated after the wait: -EBUSY. Not on cgroup2: -ENOTDIR. The cgroup2
 * root itself: -EPERM. */
int sb_cgroup_remove(const char *path);

/* Create a network namespace holding only loopback (brought up), pinned by
 * a bind mount at pin_path (parent dirs created 0755). Like `ip netns add`,
 * the pin's parent directory is made a shared mount point (bind-mounted onto
 * itself if it is not one yet) so the unmount in sb_netns_remove reaches
 * mount namespaces cloned meanwhile. The caller's own netns is unchanged.
 * An existing pin_path: -EEXIST. 0 or -errno. */
int sb_netns_create(const char *pin_path);

/* Unmount and remove a netns pin. Missing: 0. */
int sb_netns_remove(const char *pin_path);

/* Run the calling thread in the netns at path (NULL: no change) for the
 * duration of one socket() + bind() + listen(): returns the listening fd
 * (non-blocking, CLOEXEC, SO_REUSEADDR) or -errno. The thread is always back
 * in its original netns on return. */
int sb_listen_in_netns(const char *netns_path, const struct sockaddr *addr,
		       socklen_t addrlen, int backlog);

/* Same for any socket type: SOCK_STREAM listens, SOCK_DGRAM is only bound. */
int sb_socket_in_netns(const char *netns_path, const struct sockaddr *addr, socklen_t addrlen,
		       int type, int backlog);

/* Records of attached sandboxes under run_dir/sandboxes/<id> (dir 0700):
 * key=value lines (id, cgroup, netns), written to a temp file and renamed
 * into place, 0600. save: -EINVAL for an invalid id, an empty cgroup or a
 * newline in a path. remove: missing is 0. foreach skips malformed files. */
struct sb_record {
	char id[SB_ID_MAX + 1];
	char cgroup[4096];
	char netns[4096];   /* empty: the host netns */
	char policy[4096];  /* empty: the daemon's default policy */
};
int sb_record_save(const char *run_dir, const struct sb_record *r);
int sb_record_remove(const char *run_dir, const char *id);
/* Calls cb for each valid record; stops and returns cb's value if non-zero. */
int sb_record_foreach(const char *run_dir, int (*cb)(const struct sb_record *r, void *opaque),
		      void *opaque);

#endif
