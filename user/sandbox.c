// SPDX-License-Identifier: MIT
/*
 * sandbox: cgroup v2 directories, network namespaces pinned by bind mount,
 * listeners opened inside a sandbox's netns, and the on-disk records of
 * attached sandboxes. See sandbox.h for the contracts.
 */
#include "sandbox.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

/* How long sb_cgroup_remove waits for killed processes to go away. */
#define SB_CGROUP_KILL_WAIT_MS 2000
#define SB_CGROUP_POLL_MS 10
/* Depth bound for the recursive walks over a sandbox's cgroup subtree. */
#define SB_CGROUP_MAX_DEPTH 16
/* A record file is small; anything bigger is not ours. */
#define SB_RECORD_MAX 16384

bool sb_id_valid(const char *id)
{
	size_t n;

	if (!id)
		return false;
	n = strlen(id);
	if (n == 0 || n > SB_ID_MAX)
		return false;
	if (!strcmp(id, ".") || !strcmp(id, ".."))
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = id[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '.' || c == '-'))
			return false;
	}
	return true;
}

/* /proc/mounts escapes space, tab, newline and backslash as \ooo; decode in place. */
static void unescape_mount_path(char *s)
{
	char *w = s;

	for (char *r = s; *r; r++) {
		if (r[0] == '\\' && r[1] >= '0' && r[1] <= '7' && r[2] >= '0' && r[2] <= '7' &&
		    r[3] >= '0' && r[3] <= '7') {
			*w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
			r += 3;
		} else {
			*w++ = *r;
		}
	}
	*w = '\0';
}

int sb_cgroup2_root(char *buf, size_t len)
{
	char line[4096 + 512];
	int ret = -ENOENT;
	FILE *f;

	f = fopen("/proc/mounts", "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		char *save = NULL, *dev, *dir, *type;

		dev = strtok_r(line, " ", &save);
		dir = strtok_r(NULL, " ", &save);
		type = strtok_r(NULL, " ", &save);
		if (!dev || !dir || !type || strcmp(type, "cgroup2"))
			continue;
		unescape_mount_path(dir);
		if (strlen(dir) >= len) {
			ret = -ENAMETOOLONG;
			break;
		}
		memcpy(buf, dir, strlen(dir) + 1);
		ret = 0;
		break;
	}
	fclose(f);
	return ret;
}

bool sb_is_cgroup2_dir(const char *path)
{
	struct statfs sfs;
	struct stat st;

	if (stat(path, &st) || !S_ISDIR(st.st_mode))
		return false;
	if (statfs(path, &sfs))
		return false;
	return sfs.f_type == CGROUP2_SUPER_MAGIC;
}

/* mkdir -p; existing directories are fine. */
static int mkdir_p(const char *path, mode_t mode)
{
	char tmp[PATH_MAX];
	size_t n = strlen(path);

	if (n == 0 || n >= sizeof(tmp))
		return -ENAMETOOLONG;
	memcpy(tmp, path, n + 1);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, mode) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, mode) && errno != EEXIST)
		return -errno;
	return 0;
}

int sb_cgroup_create(const char *path)
{
	int ret;

	ret = mkdir_p(path, 0755);
	if (ret)
		return ret;
	if (!sb_is_cgroup2_dir(path))
		return -ENOTDIR;
	return 0;
}

/* Write a short string to a cgroup control file. */
static int write_file(const char *dir, const char *name, const char *val)
{
	char path[PATH_MAX];
	size_t n = strlen(val);
	ssize_t w;
	int fd, ret = 0;

	if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	w = write(fd, val, n);
	if (w < 0)
		ret = -errno;
	else if ((size_t)w != n)
		ret = -EIO;
	close(fd);
	return ret;
}

int sb_cgroup_enter(const char *path, int pid)
{
	char val[32];

	snprintf(val, sizeof(val), "%d\n", pid);
	return write_file(path, "cgroup.procs", val);
}

/* true while any process lives in the cgroup or below it. */
static bool cgroup_populated(const char *path)
{
	char p[PATH_MAX], line[128];
	bool populated = false;
	FILE *f;

	if (snprintf(p, sizeof(p), "%s/cgroup.events", path) >= (int)sizeof(p))
		return false;
	f = fopen(p, "re");
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "populated ", 10)) {
			populated = line[10] == '1';
			break;
		}
	}
	fclose(f);
	return populated;
}

/* Fallback for kernels without cgroup.kill (< 5.14): SIGKILL every pid in the
 * subtree. Processes forking meanwhile are caught by the caller's next round. */
static void cgroup_kill_procs(const char *path, int depth)
{
	char p[PATH_MAX];
	struct dirent *de;
	DIR *d;
	FILE *f;
	int pid;

	if (depth > SB_CGROUP_MAX_DEPTH)
		return;
	if (snprintf(p, sizeof(p), "%s/cgroup.procs", path) < (int)sizeof(p)) {
		f = fopen(p, "re");
		if (f) {
			while (fscanf(f, "%d", &pid) == 1)
				if (pid > 0)
					kill(pid, SIGKILL);
			fclose(f);
		}
	}
	d = opendir(path);
	if (!d)
		return;
	while ((de = readdir(d))) {
		if (de->d_type != DT_DIR || de->d_name[0] == '.')
			continue;
		if (snprintf(p, sizeof(p), "%s/%s", path, de->d_name) < (int)sizeof(p))
			cgroup_kill_procs(p, depth + 1);
	}
	closedir(d);
}

/* rmdir the cgroup's child directories depth-first, then the cgroup itself. */
static int cgroup_rmdir_tree(const char *path, int depth)
{
	char p[PATH_MAX];
	struct dirent *de;
	int ret = 0, r;
	DIR *d;

	if (depth > SB_CGROUP_MAX_DEPTH)
		return -ELOOP;
	d = opendir(path);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((de = readdir(d))) {
		if (de->d_type != DT_DIR || de->d_name[0] == '.')
			continue;
		if (snprintf(p, sizeof(p), "%s/%s", path, de->d_name) >= (int)sizeof(p)) {
			ret = -ENAMETOOLONG;
			continue;
		}
		r = cgroup_rmdir_tree(p, depth + 1);
		if (r && !ret)
			ret = r;
	}
	closedir(d);
	if (rmdir(path) && errno != ENOENT && !ret)
		ret = -errno;
	return ret;
}

int sb_cgroup_remove(const char *path)
{
	struct timespec ts = { 0, SB_CGROUP_POLL_MS * 1000000L };
	char parent[PATH_MAX];
	bool have_kill;
	struct stat st;

	if (stat(path, &st))
		return errno == ENOENT ? 0 : -errno;
	if (!sb_is_cgroup2_dir(path))
		return -ENOTDIR;
	/* Never the whole hierarchy: killing everything on the host by a bad
	 * path is not a mistake we can take back. */
	if (snprintf(parent, sizeof(parent), "%s/..", path) >= (int)sizeof(parent))
		return -ENAMETOOLONG;
	if (!sb_is_cgroup2_dir(parent))
		return -EPERM;

	have_kill = write_file(path, "cgroup.kill", "1") == 0;
	for (int i = 0; i < SB_CGROUP_KILL_WAIT_MS / SB_CGROUP_POLL_MS; i++) {
		if (!cgroup_populated(path))
			break;
		if (!have_kill)
			cgroup_kill_procs(path, 0);
		nanosleep(&ts, NULL);
	}
	if (cgroup_populated(path))
		return -EBUSY;
	return cgroup_rmdir_tree(path, 0);
}

/* Make dir a shared mount point, as `ip netns add` does for /run/netns: a pin
 * mounted under it then propagates to (and its unmount from) mount namespaces
 * cloned later, so one umount frees the namespace everywhere. A directory
 * that is not yet a mount point becomes one by a bind mount onto itself. */
static int make_shared_mount_dir(const char *dir)
{
	if (!mount("", dir, "none", MS_SHARED | MS_REC, NULL))
		return 0;
	if (errno != EINVAL)
		return -errno;
	if (mount(dir, dir, "none", MS_BIND | MS_REC, NULL))
		return -errno;
	if (mount("", dir, "none", MS_SHARED | MS_REC, NULL))
		return -errno;
	return 0;
}

/* Bring lo up in the calling thread's netns. */
static int loopback_up(void)
{
	struct ifreq ifr = { 0 };
	int fd, ret = 0;

	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
	if (ioctl(fd, SIOCGIFFLAGS, &ifr)) {
		ret = -errno;
		goto out_close_fd;
	}
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(fd, SIOCSIFFLAGS, &ifr))
		ret = -errno;
out_close_fd:
	close(fd);
	return ret;
}

struct netns_job {
	const char *pin_path;
	int ret;
};

/* Runs in a throwaway thread: unshare() moves only this thread into the new
 * netns, and the thread dies afterwards, so no other thread ever runs there
 * and there is nothing to switch back from. */
static void *netns_create_thread(void *arg)
{
	struct netns_job *job = arg;

	if (unshare(CLONE_NEWNET)) {
		job->ret = -errno;
		return NULL;
	}
	job->ret = loopback_up();
	if (job->ret)
		return NULL;
	if (mount("/proc/thread-self/ns/net", job->pin_path, "none", MS_BIND, NULL))
		job->ret = -errno;
	return NULL;
}

int sb_netns_create(const char *pin_path)
{
	struct netns_job job = { .pin_path = pin_path, .ret = 0 };
	char dir[PATH_MAX];
	pthread_t th;
	char *slash;
	int fd, ret;

	if (strlen(pin_path) >= sizeof(dir))
		return -ENAMETOOLONG;
	strcpy(dir, pin_path);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return -EINVAL;
	*slash = '\0';
	ret = mkdir_p(dir, 0755);
	if (ret)
		return ret;
	ret = make_shared_mount_dir(dir);
	if (ret)
		return ret;

	fd = open(pin_path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
	if (fd < 0)
		return -errno;
	close(fd);

	ret = -pthread_create(&th, NULL, netns_create_thread, &job);
	if (ret)
		goto out_unlink;
	pthread_join(th, NULL);
	ret = job.ret;
	if (ret)
		goto out_unlink;
	return 0;

out_unlink:
	unlink(pin_path);
	return ret;
}

int sb_netns_remove(const char *pin_path)
{
	/* EINVAL: not a mount point (a half-made pin); still unlink it. */
	if (umount2(pin_path, MNT_DETACH) && errno != EINVAL && errno != ENOENT)
		return -errno;
	if (unlink(pin_path) && errno != ENOENT)
		return -errno;
	return 0;
}

int sb_listen_in_netns(const char *netns_path, const struct sockaddr *addr, socklen_t addrlen,
		       int backlog)
{
	return sb_socket_in_netns(netns_path, addr, addrlen, SOCK_STREAM, backlog);
}

int sb_socket_in_netns(const char *netns_path, const struct sockaddr *addr, socklen_t addrlen,
		       int type, int backlog)
{
	int self_fd = -1, target_fd = -1, fd, ret, one = 1;

	if (netns_path) {
		self_fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
		if (self_fd < 0)
			return -errno;
		target_fd = open(netns_path, O_RDONLY | O_CLOEXEC);
		if (target_fd < 0) {
			ret = -errno;
			goto out_close_self;
		}
		if (setns(target_fd, CLONE_NEWNET)) {
			ret = -errno;
			goto out_close_target;
		}
	}

	fd = socket(addr->sa_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		ret = -errno;
		goto out_restore;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(fd, addr, addrlen) || (type == SOCK_STREAM && listen(fd, backlog))) {
		ret = -errno;
		close(fd);
		goto out_restore;
	}
	ret = fd;

out_restore:
	/* A thread left inside a sandbox's netns would open the daemon's
	 * upstream connections from there: never continue after that. */
	if (netns_path && setns(self_fd, CLONE_NEWNET))
		abort();
out_close_target:
	if (target_fd >= 0)
		close(target_fd);
out_close_self:
	if (self_fd >= 0)
		close(self_fd);
	return ret;
}

/* ---- records ---- */

static int records_dir(const char *run_dir, char *buf, size_t len)
{
	if (snprintf(buf, len, "%s/sandboxes", run_dir) >= (int)len)
		return -ENAMETOOLONG;
	return 0;
}

static bool field_ok(const char *s)
{
	return !strpbrk(s, "\n\r");
}

int sb_record_save(const char *run_dir, const struct sb_record *r)
{
	char dir[PATH_MAX], path[PATH_MAX], tmp[PATH_MAX];
	FILE *f;
	int fd, ret;

	if (!sb_id_valid(r->id) || !field_ok(r->cgroup) || !field_ok(r->netns) ||
	    r->cgroup[0] == '\0')
		return -EINVAL;
	ret = records_dir(run_dir, dir, sizeof(dir));
	if (ret)
		return ret;
	ret = mkdir_p(dir, 0700);
	if (ret)
		return ret;
	if (snprintf(path, sizeof(path), "%s/%s", dir, r->id) >= (int)sizeof(path) ||
	    snprintf(tmp, sizeof(tmp), "%s/.%s.tmp.%d", dir, r->id, (int)getpid()) >=
		    (int)sizeof(tmp))
		return -ENAMETOOLONG;

	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	f = fdopen(fd, "w");
	if (!f) {
		ret = -errno;
		close(fd);
		goto out_unlink;
	}
	fprintf(f, "id=%s\ncgroup=%s\nnetns=%s\npolicy=%s\n", r->id, r->cgroup, r->netns,
		r->policy);
	if (fflush(f) || fsync(fileno(f))) {
		ret = -errno;
		fclose(f);
		goto out_unlink;
	}
	if (fclose(f)) {
		ret = -errno;
		goto out_unlink;
	}
	if (rename(tmp, path)) {
		ret = -errno;
		goto out_unlink;
	}
	return 0;

out_unlink:
	unlink(tmp);
	return ret;
}

int sb_record_remove(const char *run_dir, const char *id)
{
	char dir[PATH_MAX], path[PATH_MAX];
	int ret;

	if (!sb_id_valid(id))
		return -EINVAL;
	ret = records_dir(run_dir, dir, sizeof(dir));
	if (ret)
		return ret;
	if (snprintf(path, sizeof(path), "%s/%s", dir, id) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	if (unlink(path) && errno != ENOENT)
		return -errno;
	return 0;
}

/* Parse one record file into *r (scratch: clobbered even on failure);
 * -EINVAL when it is not a well-formed record for id. */
static int record_load(int dirfd, const char *id, struct sb_record *r)
{
	char line[4096 + 16];
	bool have_id = false, have_cg = false, have_ns = false;
	struct stat st;
	FILE *f;
	int fd, ret = 0;

	memset(r, 0, sizeof(*r));
	fd = openat(dirfd, id, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_size > SB_RECORD_MAX) {
		close(fd);
		return -EINVAL;
	}
	f = fdopen(fd, "r");
	if (!f) {
		ret = -errno;
		close(fd);
		return ret;
	}
	while (fgets(line, sizeof(line), f)) {
		size_t n = strlen(line);
		char *val;

		if (n == 0 || line[n - 1] != '\n') {
			ret = -EINVAL;
			break;
		}
		line[n - 1] = '\0';
		val = strchr(line, '=');
		if (!val)
			continue;
		*val++ = '\0';
		if (!strcmp(line, "id") && strlen(val) <= SB_ID_MAX) {
			strcpy(r->id, val);
			have_id = true;
		} else if (!strcmp(line, "cgroup") && strlen(val) < sizeof(r->cgroup)) {
			strcpy(r->cgroup, val);
			have_cg = true;
		} else if (!strcmp(line, "netns") && strlen(val) < sizeof(r->netns)) {
			strcpy(r->netns, val);
			have_ns = true;
		} else if (!strcmp(line, "policy") && strlen(val) < sizeof(r->policy)) {
			strcpy(r->policy, val);
		}
	}
	fclose(f);
	if (ret)
		return ret;
	if (!have_id || !have_cg || !have_ns || strcmp(r->id, id) || r->cgroup[0] == '\0')
		return -EINVAL;
	return 0;
}

int sb_record_foreach(const char *run_dir, int (*cb)(const struct sb_record *r, void *opaque),
		      void *opaque)
{
	char dir[PATH_MAX];
	struct sb_record *r;
	struct dirent *de;
	int ret;
	DIR *d;

	ret = records_dir(run_dir, dir, sizeof(dir));
	if (ret)
		return ret;
	d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	/* struct sb_record is 8 KiB: keep it off the stack of daemon threads. */
	r = malloc(sizeof(*r));
	if (!r) {
		ret = -ENOMEM;
		goto out_closedir;
	}
	while ((de = readdir(d))) {
		/* Temp files start with '.', so they are skipped with . and .. */
		if (de->d_name[0] == '.' || !sb_id_valid(de->d_name))
			continue;
		if (record_load(dirfd(d), de->d_name, r))
			continue;
		ret = cb(r, opaque);
		if (ret)
			break;
	}
	free(r);
out_closedir:
	closedir(d);
	return ret;
}
