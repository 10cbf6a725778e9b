// SPDX-License-Identifier: MIT
/*
 * ctl: one-line request/reply control channel over a Unix socket. The server
 * is a single thread serving one client at a time; every wait in it is
 * bounded (CTL_CLIENT_TIMEOUT_MS per client) or woken by ctl_server_stop.
 */
#include "ctl.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "sandbox.h"

/* A client has this long to send its request line. */
#define CTL_CLIENT_TIMEOUT_MS 5000
/* ctl_request waits this long for sluiced's reply. */
#define CTL_REQUEST_TIMEOUT_S 10
#define CTL_MAX_FIELDS 5

struct ctl_server {
	int listen_fd;
	int wake_fd;
	pthread_t thread;
	struct ctl_ops ops;
	void *opaque;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

static int fill_addr(const char *path, struct sockaddr_un *sun)
{
	size_t n = strlen(path);

	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	if (n == 0 || n >= sizeof(sun->sun_path))
		return -ENAMETOOLONG;
	memcpy(sun->sun_path, path, n + 1);
	return 0;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Send all of buf; replies are short and the socket has a send timeout. */
static int send_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t w = send(fd, buf, len, MSG_NOSIGNAL);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
		}
		buf += w;
		len -= (size_t)w;
	}
	return 0;
}

static void send_reply(int fd, const char *status, const char *msg)
{
	char out[CTL_LINE_MAX + 8];
	int n;

	if (msg && msg[0])
		n = snprintf(out, sizeof(out), "%s %s", status, msg);
	else
		n = snprintf(out, sizeof(out), "%s", status);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(out) - 1)
		n = (int)sizeof(out) - 2;
	/* A reply is one line whatever an op wrote into its message. */
	for (int i = 0; i < n; i++)
		if (out[i] == '\n' || out[i] == '\r')
			out[i] = ' ';
	out[n++] = '\n';
	send_all(fd, out, (size_t)n);
}

/* Run one request line; fills the reply message, returns true for OK. */
static bool dispatch(struct ctl_server *srv, char *line, char *msg, size_t msglen)
{
	char *f[CTL_MAX_FIELDS], *tok;
	int nf = 0, rc;

	/* strsep, not strtok: empty fields must stay visible as errors. */
	for (tok = line; tok && nf < CTL_MAX_FIELDS; nf++)
		f[nf] = strsep(&tok, "\t");
	if (tok)
		nf = CTL_MAX_FIELDS + 1;

#define FAIL(...) do { snprintf(msg, msglen, __VA_ARGS__); return false; } while (0)
	if (!strcmp(f[0], "PING")) {
		if (nf != 1)
			FAIL("usage: PING");
		snprintf(msg, msglen, "pong");
		return true;
	}
	if (!strcmp(f[0], "CA")) {
		const char *ca = srv->ops.ca_path ? srv->ops.ca_path(srv->opaque) : NULL;

		if (nf != 1)
			FAIL("usage: CA");
		if (!ca || !ca[0])
			FAIL("no CA certificate configured");
		snprintf(msg, msglen, "%s", ca);
		return true;
	}
	if (!strcmp(f[0], "STATUS")) {
		if (nf != 1)
			FAIL("usage: STATUS");
		if (!srv->ops.status)
			FAIL("not supported");
		rc = srv->ops.status(srv->opaque, msg, msglen);
		if (rc < 0)
			FAIL("%s", strerror(-rc));
		msg[msglen - 1] = '\0';
		return true;
	}
	if (!strcmp(f[0], "ATTACH")) {
		if ((nf != 4 && nf != 5) || !f[2][0] || !f[3][0] || (nf == 5 && !f[4][0]))
			FAIL("usage: ATTACH<tab>id<tab>cgroup<tab>netns|-[<tab>policy|-]");
		if (!sb_id_valid(f[1]))
			FAIL("invalid sandbox id");
		if (!srv->ops.attach)
			FAIL("not supported");
		rc = srv->ops.attach(srv->opaque, f[1], f[2], strcmp(f[3], "-") ? f[3] : NULL,
				     nf == 5 && strcmp(f[4], "-") ? f[4] : NULL, msg, msglen);
		if (rc < 0 && !msg[0])
			FAIL("%s", strerror(-rc));
		if (rc < 0)
			return false;
		msg[0] = '\0';
		return true;
	}
	if (!strcmp(f[0], "RELOAD")) {
		if (nf > 2 || (nf == 2 && !sb_id_valid(f[1])))
			FAIL("usage: RELOAD[<tab>id]");
		if (!srv->ops.reload)
			FAIL("not supported");
		msg[0] = '\0';
		rc = srv->ops.reload(srv->opaque, nf == 2 ? f[1] : NULL, msg, msglen);
		if (rc < 0 && !msg[0])
			FAIL("%s", strerror(-rc));
		return rc >= 0;
	}
	if (!strcmp(f[0], "DETACH")) {
		if (nf != 2)
			FAIL("usage: DETACH<tab>id");
		if (!sb_id_valid(f[1]))
			FAIL("invalid sandbox id");
		if (!srv->ops.detach)
			FAIL("not supported");
		rc = srv->ops.detach(srv->opaque, f[1], msg, msglen);
		if (rc < 0 && !msg[0])
			FAIL("%s", strerror(-rc));
		if (rc < 0)
			return false;
		msg[0] = '\0';
		return true;
	}
	FAIL("unknown command");
#undef FAIL
}

/* Read one '\n'-terminated line (terminator stripped) within the deadline.
 * 0: line in buf; -EMSGSIZE: too long; -ESHUTDOWN: the server is stopping;
 * other -errno: give up on this client silently. */
static int read_line(struct ctl_server *srv, int fd, char *buf, size_t len)
{
	int64_t deadline = now_ms() + CTL_CLIENT_TIMEOUT_MS;
	size_t n = 0;

	for (;;) {
		struct pollfd p[2] = { { .fd = fd, .events = POLLIN },
				       { .fd = srv->wake_fd, .events = POLLIN } };
		int64_t left = deadline - now_ms();
		char *nl;
		ssize_t r;

		if (left <= 0)
			return -ETIMEDOUT;
		if (poll(p, 2, (int)left) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (p[1].revents)
			return -ESHUTDOWN;
		if (!p[0].revents)
			continue;
		r = recv(fd, buf + n, len - n, MSG_DONTWAIT);
		if (r < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -errno;
		}
		if (r == 0)
			return -ECONNRESET;
		nl = memchr(buf + n, '\n', (size_t)r);
		n += (size_t)r;
		if (nl) {
			*nl = '\0';
			return 0;
		}
		if (n == len)
			return -EMSGSIZE;
	}
}

static void serve_client(struct ctl_server *srv, int fd)
{
	struct timeval tv = { .tv_sec = CTL_CLIENT_TIMEOUT_MS / 1000 };
	struct ucred cred;
	socklen_t cl = sizeof(cred);
	char *line, *msg;
	bool ok;
	int rc;

	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	/* root, or the server's own user (who owns the daemon anyway). */
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) ||
	    (cred.uid != 0 && cred.uid != geteuid())) {
		send_reply(fd, "ERR", "permission denied");
		return;
	}
	/* Request line (CTL_LINE_MAX includes its '\n') and reply message. */
	line = malloc(2 * CTL_LINE_MAX);
	if (!line) {
		send_reply(fd, "ERR", "out of memory");
		return;
	}
	msg = line + CTL_LINE_MAX;
	rc = read_line(srv, fd, line, CTL_LINE_MAX);
	if (rc == -EMSGSIZE) {
		send_reply(fd, "ERR", "line too long");
	} else if (rc == 0) {
		/* "OK " + msg + '\n' fits in CTL_LINE_MAX + 8. */
		msg[0] = '\0';
		ok = dispatch(srv, line, msg, CTL_LINE_MAX - 4);
		send_reply(fd, ok ? "OK" : "ERR", msg);
	}
	free(line);
}

static void *server_thread(void *arg)
{
	struct ctl_server *srv = arg;

	for (;;) {
		struct pollfd p[2] = { { .fd = srv->listen_fd, .events = POLLIN },
				       { .fd = srv->wake_fd, .events = POLLIN } };
		int fd;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents)
			break;
		if (!p[0].revents)
			continue;
		fd = accept4(srv->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue; /* ECONNABORTED, EMFILE, ...: the next poll retries */
		serve_client(srv, fd);
		close(fd);
	}
	return NULL;
}

/* Unlink path if it is a socket nobody listens on. A live one: -EADDRINUSE;
 * something that is not a socket: -EEXIST. */
static int remove_stale_socket(const char *path, const struct sockaddr_un *sun)
{
	struct stat st;
	int fd, ret = 0;

	if (lstat(path, &st))
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (!connect(fd, (const struct sockaddr *)sun, sizeof(*sun)))
		ret = -EADDRINUSE;
	else if (errno == ECONNREFUSED && unlink(path) && errno != ENOENT)
		ret = -errno;
	close(fd);
	return ret;
}

int ctl_server_start(const char *sock_path, const struct ctl_ops *ops, void *opaque,
		     struct ctl_server **ret_srv)
{
	struct ctl_server *srv;
	struct sockaddr_un sun;
	int ret;

	ret = fill_addr(sock_path, &sun);
	if (ret)
		return ret;
	srv = calloc(1, sizeof(*srv));
	if (!srv)
		return -ENOMEM;
	srv->ops = *ops;
	srv->opaque = opaque;
	strcpy(srv->path, sock_path);

	ret = remove_stale_socket(sock_path, &sun);
	if (ret)
		goto out_free;
	srv->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (srv->wake_fd < 0) {
		ret = -errno;
		goto out_free;
	}
	srv->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (srv->listen_fd < 0) {
		ret = -errno;
		goto out_close_wake;
	}
	if (bind(srv->listen_fd, (struct sockaddr *)&sun, sizeof(sun))) {
		ret = -errno;
		goto out_close_listen;
	}
	/* The mode is belt; SO_PEERCRED is the check that counts. */
	if (chmod(sock_path, 0600) || listen(srv->listen_fd, 16)) {
		ret = -errno;
		goto out_unlink;
	}
	ret = -pthread_create(&srv->thread, NULL, server_thread, srv);
	if (ret)
		goto out_unlink;
	*ret_srv = srv;
	return 0;

out_unlink:
	unlink(sock_path);
out_close_listen:
	close(srv->listen_fd);
out_close_wake:
	close(srv->wake_fd);
out_free:
	free(srv);
	return ret;
}

void ctl_server_stop(struct ctl_server *srv)
{
	uint64_t one = 1;

	if (!srv)
		return;
	if (write(srv->wake_fd, &one, sizeof(one)) != sizeof(one))
		abort(); /* eventfd write of 1 cannot fail short of a bug */
	pthread_join(srv->thread, NULL);
	close(srv->listen_fd);
	close(srv->wake_fd);
	unlink(srv->path);
	free(srv);
}

int ctl_request(const char *sock_path, const char *line, char *reply, size_t replylen)
{
	struct timeval tv = { .tv_sec = CTL_REQUEST_TIMEOUT_S };
	size_t len = strlen(line), n = 0;
	struct sockaddr_un sun;
	const char *rest;
	char *buf, *nl = NULL;
	int fd, ret;

	if (len + 1 > CTL_LINE_MAX || strchr(line, '\n'))
		return -EMSGSIZE;
	ret = fill_addr(sock_path, &sun);
	if (ret)
		return ret;
	/* Holds the request, then the reply (at most CTL_LINE_MAX + 8 bytes). */
	buf = malloc(CTL_LINE_MAX + 16);
	if (!buf)
		return -ENOMEM;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		ret = -errno;
		goto out_free;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun))) {
		ret = errno == EAGAIN ? -ETIMEDOUT : -errno;
		goto out_close;
	}
	memcpy(buf, line, len);
	buf[len] = '\n';
	ret = send_all(fd, buf, len + 1);
	/* The server may have answered and closed before reading our line
	 * (a refused peer): its reply is still in our receive queue. */
	if (ret && ret != -EPIPE && ret != -ECONNRESET)
		goto out_close;

	while (!nl && n < CTL_LINE_MAX + 15) {
		ssize_t r = recv(fd, buf + n, CTL_LINE_MAX + 15 - n, 0);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			ret = errno == EAGAIN ? -ETIMEDOUT : -errno;
			goto out_close;
		}
		if (r == 0)
			break;
		nl = memchr(buf + n, '\n', (size_t)r);
		n += (size_t)r;
	}
	if (!nl) {
		ret = ret ? ret : -EPROTO;
		goto out_close;
	}
	*nl = '\0';
	if (!strncmp(buf, "OK", 2) && (buf[2] == '\0' || buf[2] == ' ')) {
		ret = 0;
		rest = buf + 2;
	} else if (!strncmp(buf, "ERR", 3) && (buf[3] == '\0' || buf[3] == ' ')) {
		ret = 1;
		rest = buf + 3;
	} else {
		ret = -EPROTO;
		goto out_close;
	}
	if (*rest == ' ')
		rest++;
	if (reply && replylen > 0)
		snprintf(reply, replylen, "%s", rest);

out_close:
	close(fd);
out_free:
	free(buf);
	return ret;
}
