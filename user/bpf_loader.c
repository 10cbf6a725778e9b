// SPDX-License-Identifier: MIT
/*
 * bpf_loader: owns the skeleton of bpf/sluice.bpf.c. See bpf_loader.h for the
 * pin layout and the contracts.
 *
 * Link semantics relied on (kernel cgroup-bpf): a bpf_link on a cgroup is
 * always attached in BPF_F_ALLOW_MULTI mode, so two sandboxes (two cgroups)
 * and nested cgroups each get their own links and never replace each other;
 * a socket runs the programs of its cgroup first, then those of each
 * ancestor. A pinned link stays attached after its fd is closed and after
 * sluiced exits; removing the pin file drops the last reference and detaches
 * it. When the cgroup is removed, the link is auto-detached (defunct).
 */
#include "bpf_loader.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "sluice.skel.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif
#ifndef BPF_FS_MAGIC
#define BPF_FS_MAGIC 0xcafe4a11
#endif
#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

#define BPFL_BPFFS "/sys/fs/bpf"
#define BPFL_PIN_DIR_DEFAULT BPFL_BPFFS "/sluice"

struct bpfl {
	struct sluice_bpf *skel;
	char pin_dir[PATH_MAX];
	int conn_fd;
	int deny4_fd, deny6_fd;
	int uallow4_fd, uallow6_fd, udp_flows_fd;
	int sandboxes_fd;
	bool sk_cgroup, set_retval;     /* what the loaded programs could keep */
};

/*
 * Attach order: the helpers first (conn entry, getpeername, recvmsg), then
 * the refusals (bind, sock_create, sendmsg), the connect hooks last, so that
 * by the time a connect is redirected everything it relies on is in place.
 */
static struct bpf_program *bpfl_progs(struct bpfl *b, size_t i)
{
	struct bpf_program *p[] = {
		b->skel->progs.sluice_sockops,	   b->skel->progs.sluice_egress,
		b->skel->progs.sluice_getpeer4,
		b->skel->progs.sluice_getpeer6,	   b->skel->progs.sluice_recvmsg4,
		b->skel->progs.sluice_recvmsg6,	   b->skel->progs.sluice_bind4,
		b->skel->progs.sluice_bind6,	   b->skel->progs.sluice_sock_create,
		b->skel->progs.sluice_sendmsg4,	   b->skel->progs.sluice_sendmsg6,
		b->skel->progs.sluice_connect4,	   b->skel->progs.sluice_connect6,
	};

	return i < sizeof(p) / sizeof(p[0]) ? p[i] : NULL;
}

/*
 * libbpf prints through one process-wide callback. This module must not spam
 * stderr: only warnings, and only when SLUICE_BPF_DEBUG is set (then debug
 * output too when it is "2").
 */
static int bpfl_libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	const char *dbg = getenv("SLUICE_BPF_DEBUG");

	if (!dbg || !*dbg || !strcmp(dbg, "0"))
		return 0;
	if (level == LIBBPF_DEBUG && strcmp(dbg, "2"))
		return 0;
	return vfprintf(stderr, fmt, ap);
}

static int bpfl_path(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	return 0;
}

/* mkdir -p, mode 0700 for what it creates. */
static int bpfl_mkdirs(const char *path)
{
	char tmp[PATH_MAX];
	char *p;
	int r;

	r = bpfl_path(tmp, sizeof(tmp), "%s", path);
	if (r < 0)
		return r;
	for (p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/*
 * First mount of fstype type (and at mountpoint at, if not NULL) in
 * /proc/mounts; its mountpoint into buf. 0 or -ENOENT.
 */
static int bpfl_mount_find(const char *type, const char *at, char *buf, size_t len)
{
	char dev[256], mnt[PATH_MAX], fstype[64];
	int r = -ENOENT;
	FILE *f;

	f = fopen("/proc/mounts", "re");
	if (!f)
		return -errno;
	while (fscanf(f, "%255s %4095s %63s %*[^\n]", dev, mnt, fstype) == 3) {
		if (strcmp(fstype, type) || (at && strcmp(mnt, at)))
			continue;
		r = bpfl_path(buf, len, "%s", mnt);
		break;
	}
	fclose(f);
	return r;
}

static bool bpfl_bpffs_mounted(void)
{
	char mnt[PATH_MAX];

	return bpfl_mount_find("bpf", BPFL_BPFFS, mnt, sizeof(mnt)) == 0;
}

static int bpfl_ensure_bpffs(const char *pin_dir)
{
	struct statfs st;
	int r;

	if (!bpfl_bpffs_mounted() && mount("bpf", BPFL_BPFFS, "bpf", 0, "mode=0700") < 0 &&
	    errno != EBUSY)
		return -errno;
	r = bpfl_mkdirs(pin_dir);
	if (r < 0)
		return r;
	if (statfs(pin_dir, &st) < 0)
		return -errno;
	if ((unsigned long)st.f_type != BPF_FS_MAGIC)
		return -EINVAL; /* pins outside bpffs would not survive us */
	return 0;
}

/* One path component, so links/<id>/ can never escape pin_dir. */
static bool bpfl_id_valid(const char *id)
{
	size_t n;

	if (!id)
		return false;
	n = strlen(id);
	if (n == 0 || n > 64 || !strcmp(id, ".") || !strcmp(id, ".."))
		return false;
	return strchr(id, '/') == NULL;
}

/*
 * A pin left by an older sluiced whose map definition differs (new value
 * layout, new size) would make the load fail for good. Drop it: a new map is
 * made and pinned; links still running the old programs keep the old map
 * until bpfl_attach_cgroup moves them to the new programs. Connections in
 * flight meanwhile find no entry and are closed by sluiced (fail closed).
 */
static void bpfl_unpin_incompatible(const struct bpf_map *map, const char *path)
{
	struct bpf_map_info info = {};
	__u32 len = sizeof(info);
	int fd;

	fd = bpf_obj_get(path);
	if (fd < 0)
		return;
	if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0 &&
	    (info.type != bpf_map__type(map) || info.key_size != bpf_map__key_size(map) ||
	     info.value_size != bpf_map__value_size(map) ||
	     info.max_entries != bpf_map__max_entries(map) ||
	     info.map_flags != bpf_map__map_flags(map)))
		unlink(path);
	close(fd);
}

static int bpfl_set_pins(struct bpfl *b)
{
	struct bpf_map *maps[] = {
		b->skel->maps.sluice_cfg_map,
		b->skel->maps.sluice_orig_map,
		b->skel->maps.sluice_conn_map,
		b->skel->maps.sluice_deny4,
		b->skel->maps.sluice_deny6,
		b->skel->maps.sluice_uallow4,
		b->skel->maps.sluice_uallow6,
		b->skel->maps.sluice_udp_flows,
		b->skel->maps.sluice_sandboxes,
	};
	char path[PATH_MAX];
	size_t i;
	int r;

	for (i = 0; i < sizeof(maps) / sizeof(maps[0]); i++) {
		r = bpfl_path(path, sizeof(path), "%s/maps/%s", b->pin_dir,
			      bpf_map__name(maps[i]));
		if (r < 0)
			return r;
		bpfl_unpin_incompatible(maps[i], path);
		r = bpf_map__set_pin_path(maps[i], path);
		if (r < 0)
			return r;
	}
	return 0;
}

/* open + load the skeleton into b->skel; on error b->skel is NULL. */
static int bpfl_load(struct bpfl *b, bool cgroup_from_sk, bool set_retval)
{
	int r;

	b->skel = sluice_bpf__open();
	if (!b->skel)
		return errno ? -errno : -EINVAL;
	b->skel->rodata->sl_cgroup_from_sk = cgroup_from_sk;
	b->skel->rodata->sl_use_set_retval = set_retval;
	/* Pin paths before load: libbpf then reuses compatible pinned maps. */
	r = bpfl_set_pins(b);
	if (r < 0)
		goto out_destroy;
	r = sluice_bpf__load(b->skel);
	if (r < 0)
		goto out_destroy;
	return 0;

out_destroy:
	sluice_bpf__destroy(b->skel);
	b->skel = NULL;
	return r;
}

int bpfl_open(const struct bpfl_opts *opts, struct bpfl **ret_bpfl)
{
	struct sluice_cfg cfg = {};
	struct bpfl *b;
	char path[PATH_MAX];
	__u32 key = 0;
	int r;

	if (!opts || !ret_bpfl || !opts->listen_port)
		return -EINVAL;
	libbpf_set_print(bpfl_libbpf_print);

	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->conn_fd = -1;
	r = bpfl_path(b->pin_dir, sizeof(b->pin_dir), "%s",
		      opts->pin_dir ? opts->pin_dir : BPFL_PIN_DIR_DEFAULT);
	if (r < 0)
		goto out_free;
	r = bpfl_ensure_bpffs(b->pin_dir);
	if (r < 0)
		goto out_free;
	r = bpfl_path(path, sizeof(path), "%s/maps", b->pin_dir);
	if (r < 0)
		goto out_free;
	r = bpfl_mkdirs(path);
	if (r < 0)
		goto out_free;
	r = bpfl_path(path, sizeof(path), "%s/links", b->pin_dir);
	if (r < 0)
		goto out_free;
	r = bpfl_mkdirs(path);
	if (r < 0)
		goto out_free;

	/*
	 * Fallbacks, each only if the verifier refused the previous try: a kernel
	 * that refuses the socket-cgroup BTF walk (task cgroup instead), then one
	 * that also refuses bpf_set_retval (refusals become plain EPERM). The
	 * CO-RE guard in bpf/lib/common.h normally makes the last one unneeded.
	 */
	b->sk_cgroup = b->set_retval = true;
	r = bpfl_load(b, true, true);
	if (r == -EACCES || r == -EINVAL) {
		b->sk_cgroup = false;
		r = bpfl_load(b, false, true);
	}
	if (r == -EACCES || r == -EINVAL) {
		b->set_retval = false;
		r = bpfl_load(b, false, false);
	}
	if (r < 0)
		goto out_free;

	cfg.listen_addr4 = opts->listen_addr4.s_addr;
	cfg.listen_port = htons(opts->listen_port);
	cfg.dns_port = htons(opts->dns_port);
	cfg.udp_port = htons(opts->udp_port);
	memcpy(cfg.listen_addr6, &opts->listen_addr6, sizeof(cfg.listen_addr6));
	r = bpf_map__update_elem(b->skel->maps.sluice_cfg_map, &key, sizeof(key), &cfg,
				 sizeof(cfg), BPF_ANY);
	if (r < 0)
		goto out_destroy;
	b->conn_fd = bpf_map__fd(b->skel->maps.sluice_conn_map);
	b->deny4_fd = bpf_map__fd(b->skel->maps.sluice_deny4);
	b->deny6_fd = bpf_map__fd(b->skel->maps.sluice_deny6);
	b->uallow4_fd = bpf_map__fd(b->skel->maps.sluice_uallow4);
	b->uallow6_fd = bpf_map__fd(b->skel->maps.sluice_uallow6);
	b->udp_flows_fd = bpf_map__fd(b->skel->maps.sluice_udp_flows);
	b->sandboxes_fd = bpf_map__fd(b->skel->maps.sluice_sandboxes);
	*ret_bpfl = b;
	return 0;

out_destroy:
	sluice_bpf__destroy(b->skel);
out_free:
	free(b);
	return r;
}

/* Maps and links stay pinned: a restarted sluiced picks them up. */
void bpfl_close(struct bpfl *b)
{
	if (!b)
		return;
	sluice_bpf__destroy(b->skel);
	free(b);
}

/*
 * Keep a pinned link if it still serves cgroup cg_id, moving it to the
 * program loaded now (bpf_link_update swaps atomically: no window without a
 * program). Returns 0 when kept, -ENOENT when the caller must attach anew.
 */
static int bpfl_link_reuse(const char *path, struct bpf_program *prog, uint64_t cg_id)
{
	struct bpf_link_info info = {};
	__u32 len = sizeof(info);
	struct bpf_link *link;
	int r;

	link = bpf_link__open(path);
	if (!link)
		return -ENOENT;
	r = bpf_obj_get_info_by_fd(bpf_link__fd(link), &info, &len);
	if (r < 0 || info.type != BPF_LINK_TYPE_CGROUP || info.cgroup.cgroup_id != cg_id) {
		r = -ENOENT;
		goto out_link;
	}
	r = bpf_link__update_program(link, prog) < 0 ? -ENOENT : 0;
out_link:
	bpf_link__destroy(link); /* closes our fd only; the pin keeps it attached */
	return r;
}

/*
 * true when the calling process's own cgroup is cg_id or below it: attaching
 * there would send sluiced's own upstream dials back to its listener. Best
 * effort: false when our cgroup cannot be resolved (e.g. a cgroup namespace
 * that does not match the mount).
 */
static bool bpfl_cgroup_holds_self(uint64_t cg_id)
{
	char root[PATH_MAX], line[PATH_MAX], path[PATH_MAX];
	bool found = false;
	size_t rootlen;
	char *p;
	FILE *f;
	int i;

	if (bpfl_mount_find("cgroup2", NULL, root, sizeof(root)) < 0)
		return false;
	f = fopen("/proc/self/cgroup", "re");
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "0::/", 4)) {
			line[strcspn(line, "\n")] = '\0';
			found = bpfl_path(path, sizeof(path), "%s%s", root, line + 3) == 0;
			break;
		}
	}
	fclose(f);
	if (!found)
		return false;
	rootlen = strlen(root);
	for (i = 0; i < 256; i++) {
		if (bpfl_cgroup_id(path) == cg_id)
			return true;
		p = strrchr(path, '/');
		if (!p || (size_t)(p - path) < rootlen)
			break;
		*p = '\0';
	}
	return false;
}

int bpfl_attach_cgroup(struct bpfl *b, const char *sandbox_id, const char *cgroup_path)
{
	struct bpf_program *prog;
	struct bpf_link *link;
	char dir[PATH_MAX], path[PATH_MAX];
	uint64_t cg_id;
	size_t i;
	int cg_fd, r;

	if (!b || !bpfl_id_valid(sandbox_id) || !cgroup_path)
		return -EINVAL;
	cg_id = bpfl_cgroup_id(cgroup_path);
	if (!cg_id)
		return -ENOENT;
	if (bpfl_cgroup_holds_self(cg_id))
		return -ELOOP;
	cg_fd = open(cgroup_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cg_fd < 0)
		return -errno;
	r = bpfl_path(dir, sizeof(dir), "%s/links/%s", b->pin_dir, sandbox_id);
	if (r < 0)
		goto out_close;
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		goto out_close;
	}

	/*
	 * On error, links pinned so far stay: a half-attached sandbox still fails
	 * closed (redirected connects without a conn entry are closed by sluiced).
	 * The caller removes them with bpfl_detach_cgroup.
	 */
	for (i = 0; (prog = bpfl_progs(b, i)); i++) {
		r = bpfl_path(path, sizeof(path), "%s/%s", dir, bpf_program__name(prog));
		if (r < 0)
			goto out_close;
		if (bpfl_link_reuse(path, prog, cg_id) == 0)
			continue;
		/* Stale pin (other cgroup, cgroup recreated, defunct link): replace. */
		if (unlink(path) < 0 && errno != ENOENT) {
			r = -errno;
			goto out_close;
		}
		link = bpf_program__attach_cgroup(prog, cg_fd);
		if (!link) {
			r = -errno;
			goto out_close;
		}
		r = bpf_link__pin(link, path);
		bpf_link__destroy(link); /* detaches unless pinned */
		if (r < 0)
			goto out_close;
	}
	r = 0;
out_close:
	close(cg_fd);
	return r;
}

/*
 * Dropping the pin drops the last reference, but the kernel releases links
 * from a workqueue, so the programs would keep running for a moment after
 * unlink(). BPF_LINK_DETACH (5.9+) detaches synchronously first; if it fails
 * the unlink still detaches, a little later.
 */
static void bpfl_link_detach_now(const char *path)
{
	int fd = bpf_obj_get(path);

	if (fd < 0)
		return;
	bpf_link_detach(fd);
	close(fd);
}

int bpfl_detach_cgroup(struct bpfl *b, const char *sandbox_id)
{
	char dir[PATH_MAX], path[PATH_MAX];
	struct dirent *de;
	DIR *d;
	int r = 0;

	if (!b || !bpfl_id_valid(sandbox_id))
		return -EINVAL;
	r = bpfl_path(dir, sizeof(dir), "%s/links/%s", b->pin_dir, sandbox_id);
	if (r < 0)
		return r;
	d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (bpfl_path(path, sizeof(path), "%s/%s", dir, de->d_name) < 0)
			continue;
		bpfl_link_detach_now(path);
		if (unlink(path) < 0 && errno != ENOENT && !r)
			r = -errno;
	}
	closedir(d);
	if (rmdir(dir) < 0 && errno != ENOENT && !r)
		r = -errno;
	return r;
}

bool bpfl_is_attached(struct bpfl *b, const char *sandbox_id)
{
	struct bpf_program *prog;
	char path[PATH_MAX];
	size_t i;

	if (!b || !bpfl_id_valid(sandbox_id))
		return false;
	for (i = 0; (prog = bpfl_progs(b, i)); i++) {
		if (bpfl_path(path, sizeof(path), "%s/links/%s/%s", b->pin_dir, sandbox_id,
			      bpf_program__name(prog)) < 0)
			return false;
		if (access(path, F_OK) < 0)
			return false;
	}
	return true;
}

/*
 * A conn-map or UDP-flow key: netns cookie plus the sandbox socket's
 * address as the daemon sees it, v4-mapped folded to AF_INET the way
 * bpf/lib/conn.h (sockops) and bpf/lib/udp.h (an IPv4 datagram) key it.
 */
static int bpfl_key(uint64_t netns_cookie, const struct sockaddr *sa, struct sluice_conn_key *key)
{
	memset(key, 0, sizeof(*key));
	key->netns_cookie = netns_cookie;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

		memcpy(key->addr, &sin->sin_addr, 4);
		key->port = sin->sin_port;
		key->family = SLUICE_AF_INET;
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

		if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
			memcpy(key->addr, &sin6->sin6_addr.s6_addr[12], 4);
			key->family = SLUICE_AF_INET;
		} else {
			memcpy(key->addr, &sin6->sin6_addr, 16);
			key->family = SLUICE_AF_INET6;
		}
		key->port = sin6->sin6_port;
	} else {
		return -EAFNOSUPPORT;
	}
	return 0;
}

/* The key of an accepted connection: its netns cookie and peer address. */
static int bpfl_conn_key(int fd, struct sluice_conn_key *key)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(__u64);
	__u64 cookie;

	if (getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) < 0)
		return -errno;
	len = sizeof(ss);
	if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
		return -errno;
	return bpfl_key(cookie, (struct sockaddr *)&ss, key);
}

int bpfl_conn_take(struct bpfl *b, int accepted_fd, struct sluice_orig *ret_orig)
{
	struct sluice_conn_key key;
	struct sluice_orig val;
	int r;

	if (!b || !ret_orig)
		return -EINVAL;
	r = bpfl_conn_key(accepted_fd, &key);
	if (r < 0)
		return r;
	r = bpf_map_lookup_and_delete_elem(b->conn_fd, &key, &val);
	/* Hash maps support lookup-and-delete since 5.14; before, two steps. */
	if (r == -EINVAL || r == -EOPNOTSUPP || r == -524 /* ENOTSUPP */) {
		r = bpf_map_lookup_elem(b->conn_fd, &key, &val);
		if (r == 0)
			bpf_map_delete_elem(b->conn_fd, &key);
	}
	if (r < 0)
		return r == -ENOENT ? -ENOENT : r;
	val.flags &= ~SLUICE_ORIG_F_PENDING;
	*ret_orig = val;
	return 0;
}

uint64_t bpfl_cgroup_id(const char *cgroup_path)
{
	struct statfs sfs;
	struct stat st;

	/* On cgroup2 the directory's inode number is the kernfs id = cgroup id. */
	if (!cgroup_path || statfs(cgroup_path, &sfs) < 0 ||
	    (unsigned long)sfs.f_type != CGROUP2_SUPER_MAGIC)
		return 0;
	if (stat(cgroup_path, &st) < 0 || !S_ISDIR(st.st_mode))
		return 0;
	return st.st_ino;
}

/*
 * Deny sets. Both tries hold every sandbox's entries; a sandbox's keys start
 * with its cgroup id (see sluice_kern_user.h), so replacing one sandbox's set
 * means: insert the new keys, then walk the trie and delete the keys of that
 * cgroup that are not in the new set. At no moment does the sandbox have
 * fewer entries than min(old, new): there is no window in which an address
 * in both sets is allowed.
 */
struct bpfl_deny_key {
	union {
		struct sluice_deny4_key k4;
		struct sluice_deny6_key k6;
	};
};

/* Canonical key: host bits beyond the prefix cleared, so equal CIDRs compare equal. */
static int bpfl_deny_key(uint64_t cg_id, const struct cidr *c, struct bpfl_deny_key *k)
{
	unsigned alen, i;
	unsigned char *addr, *cg;

	memset(k, 0, sizeof(*k));
	if (c->family == AF_INET && c->prefix <= 32) {
		alen = 4;
		k->k4.prefixlen = SLUICE_DENY_CG_BITS + c->prefix;
		addr = k->k4.addr;
		cg = k->k4.cgroup_id;
	} else if (c->family == AF_INET6 && c->prefix <= 128) {
		alen = 16;
		k->k6.prefixlen = SLUICE_DENY_CG_BITS + c->prefix;
		addr = k->k6.addr;
		cg = k->k6.cgroup_id;
	} else {
		return -EINVAL;
	}
	memcpy(cg, &cg_id, sizeof(cg_id));
	for (i = 0; i < alen; i++) {
		unsigned bits = c->prefix > i * 8 ? c->prefix - i * 8 : 0;

		addr[i] = bits >= 8 ? c->addr[i] : c->addr[i] & (unsigned char)(0xff00 >> bits);
	}
	return 0;
}

static bool bpfl_deny_wanted(int family, const void *key, size_t ksz, uint64_t cg_id,
			     const struct cidr *cidrs, unsigned n)
{
	struct bpfl_deny_key k;
	unsigned i;

	for (i = 0; i < n; i++) {
		if (cidrs[i].family != family || bpfl_deny_key(cg_id, &cidrs[i], &k) < 0)
			continue;
		if (!memcmp(&k, key, ksz))
			return true;
	}
	return false;
}

/*
 * Delete the entries of cg_id in one trie that are not in cidrs (all of them
 * when n == 0). Keys are collected first, then deleted: deleting while
 * walking a trie with get_next_key could skip entries. Bounded by the map
 * size.
 */
static int bpfl_deny_prune(int fd, int family, uint64_t cg_id, const struct cidr *cidrs,
			   unsigned n)
{
	size_t ksz = family == AF_INET ? sizeof(struct sluice_deny4_key)
				       : sizeof(struct sluice_deny6_key);
	struct bpfl_deny_key cur, next;
	unsigned char *stale = NULL, *grown;
	size_t nstale = 0, cap = 0, i;
	void *prev = NULL;
	uint64_t kcg;
	int r = 0;

	for (i = 0; i <= SLUICE_DENY_MAP_MAX; i++) {
		if (bpf_map_get_next_key(fd, prev, &next) < 0) {
			if (errno != ENOENT)
				r = -errno;
			break;
		}
		cur = next;
		prev = &cur;
		/* cgroup_id sits right after prefixlen in both key layouts. */
		memcpy(&kcg, (const unsigned char *)&cur + sizeof(__u32), sizeof(kcg));
		if (kcg != cg_id || bpfl_deny_wanted(family, &cur, ksz, cg_id, cidrs, n))
			continue;
		if (nstale == cap) {
			cap = cap ? cap * 2 : 64;
			grown = realloc(stale, cap * ksz);
			if (!grown) {
				r = -ENOMEM;
				goto out_free;
			}
			stale = grown;
		}
		memcpy(stale + nstale++ * ksz, &cur, ksz);
	}
	for (i = 0; i < nstale; i++) {
		if (bpf_map_delete_elem(fd, stale + i * ksz) < 0 && errno != ENOENT && !r)
			r = -errno;
	}
out_free:
	free(stale);
	return r;
}

/*
 * Replace cgroup_id's entries in one pair of tries (deny or UDP allow) with
 * cidrs[0..n), values[i] (vsz bytes each) going with cidrs[i]: new entries
 * first, stale ones deleted after (see above).
 */
static int bpfl_trie_set(int fd4, int fd6, uint64_t cgroup_id, const struct cidr *cidrs,
			 const void *values, size_t vsz, unsigned n)
{
	struct bpfl_deny_key k;
	unsigned i;
	int r;

	for (i = 0; i < n; i++) {
		r = bpfl_deny_key(cgroup_id, &cidrs[i], &k);
		if (r < 0)
			return r;
	}
	for (i = 0; i < n; i++) {
		bpfl_deny_key(cgroup_id, &cidrs[i], &k);
		r = bpf_map_update_elem(cidrs[i].family == AF_INET ? fd4 : fd6, &k,
					(const char *)values + i * vsz, BPF_ANY);
		if (r < 0)
			return r; /* entries added so far stay */
	}
	r = bpfl_deny_prune(fd4, AF_INET, cgroup_id, cidrs, n);
	if (r < 0)
		return r;
	return bpfl_deny_prune(fd6, AF_INET6, cgroup_id, cidrs, n);
}

int bpfl_set_deny(struct bpfl *b, uint64_t cgroup_id, const struct cidr *cidrs, unsigned n)
{
	struct sluice_deny_val *vals;
	int r;

	if (!b || !cgroup_id || (n && !cidrs) || n > BPFL_DENY_MAX)
		return -EINVAL;
	vals = calloc(n + 1, sizeof(*vals));
	if (!vals)
		return -ENOMEM;
	r = bpfl_trie_set(b->deny4_fd, b->deny6_fd, cgroup_id, cidrs, vals, sizeof(*vals), n);
	free(vals);
	return r;
}

int bpfl_clear_deny(struct bpfl *b, uint64_t cgroup_id)
{
	int r;

	if (!b || !cgroup_id)
		return -EINVAL;
	r = bpfl_deny_prune(b->deny4_fd, AF_INET, cgroup_id, NULL, 0);
	if (r < 0)
		return r;
	return bpfl_deny_prune(b->deny6_fd, AF_INET6, cgroup_id, NULL, 0);
}

int bpfl_set_udp_allow(struct bpfl *b, uint64_t cgroup_id, const struct bpfl_udp_allow *v,
		       unsigned n)
{
	struct sluice_udp_allow_val *vals;
	struct cidr *cidrs;
	unsigned i, j;
	int r = -ENOMEM;

	if (!b || !cgroup_id || (n && !v) || n > BPFL_UDP_ALLOW_MAX)
		return -EINVAL;
	for (i = 0; i < n; i++) {
		if (!v[i].nranges || v[i].nranges > SLUICE_UDP_RANGES_MAX)
			return -EINVAL;
		for (j = 0; j < v[i].nranges; j++)
			if (v[i].ranges[j].lo > v[i].ranges[j].hi)
				return -EINVAL;
	}
	cidrs = calloc(n + 1, sizeof(*cidrs));
	vals = calloc(n + 1, sizeof(*vals));
	if (!cidrs || !vals)
		goto out_free;
	for (i = 0; i < n; i++) {
		cidrs[i] = v[i].cidr;
		vals[i].nranges = v[i].nranges;
		for (j = 0; j < v[i].nranges; j++) {
			vals[i].r[j].lo = v[i].ranges[j].lo;
			vals[i].r[j].hi = v[i].ranges[j].hi;
		}
	}
	r = bpfl_trie_set(b->uallow4_fd, b->uallow6_fd, cgroup_id, cidrs, vals, sizeof(*vals), n);
out_free:
	free(cidrs);
	free(vals);
	return r;
}

int bpfl_clear_udp_allow(struct bpfl *b, uint64_t cgroup_id)
{
	return bpfl_set_udp_allow(b, cgroup_id, NULL, 0);
}

int bpfl_udp_flow_lookup(struct bpfl *b, uint64_t netns_cookie, const struct sockaddr *src,
			 struct sluice_orig *ret_orig)
{
	struct sluice_conn_key key;
	struct sluice_orig val;
	int r;

	if (!b || !src || !ret_orig)
		return -EINVAL;
	r = bpfl_key(netns_cookie, src, &key);
	if (r < 0)
		return r;
	if (bpf_map_lookup_elem(b->udp_flows_fd, &key, &val) < 0)
		return -errno;
	*ret_orig = val;
	return 0;
}

int bpfl_udp_flow_forget(struct bpfl *b, uint64_t netns_cookie, const struct sockaddr *src)
{
	struct sluice_conn_key key;
	int r;

	if (!b || !src)
		return -EINVAL;
	r = bpfl_key(netns_cookie, src, &key);
	if (r < 0)
		return r;
	if (bpf_map_delete_elem(b->udp_flows_fd, &key) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

int bpfl_sandbox_register(struct bpfl *b, uint64_t cgroup_id, bool on)
{
	__u32 v = 0;

	if (!b || !cgroup_id)
		return -EINVAL;
	if (on)
		return bpf_map_update_elem(b->sandboxes_fd, &cgroup_id, &v, BPF_ANY) < 0 ? -errno
											   : 0;
	if (bpf_map_delete_elem(b->sandboxes_fd, &cgroup_id) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

bool bpfl_uses_socket_cgroup(const struct bpfl *b)
{
	return b && b->sk_cgroup;
}

bool bpfl_uses_set_retval(const struct bpfl *b)
{
	return b && b->set_retval;
}
