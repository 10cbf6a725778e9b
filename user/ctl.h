/* SPDX-License-Identifier: MIT */
/*
 * ctl: the minimal control channel between sluicectl and sluiced, over a
 * Unix stream socket (run_dir/sluiced.sock, 0600, peers checked with
 * SO_PEERCRED: uid 0, or sluiced's own euid when it is not root). One request
 * line, one reply line:
 *
 *   PING                               -> OK pong
 *   CA                                 -> OK <path of the CA certificate>
 *   STATUS                             -> OK <one-line JSON>
 *   ATTACH\t<id>\t<cgroup>\t<netns|->[\t<policy|->]  -> OK | ERR <message>
 *   RELOAD[\t<id>]                    -> OK <summary> | ERR <message>
 *   DETACH\t<id>                       -> OK | ERR <message>
 *
 * Lines are at most CTL_LINE_MAX bytes including the '\n'; fields may not
 * contain tab or newline. Other failures: "ERR line too long", "ERR unknown
 * command", "ERR usage: ...", "ERR invalid sandbox id", "ERR permission
 * denied" (peer uid not allowed). A client has 5 s to send its line.
 * The full management API (HTTP + JSON) replaces this later.
 */
#ifndef SLUICE_CTL_H
#define SLUICE_CTL_H

#include <stddef.h>

#define CTL_LINE_MAX 8192

/* Called from the ctl server thread, one request at a time. attach/detach:
 * 0, or -errno with an optional one-line message written into err (empty:
 * strerror is sent). The id has been checked with sb_id_valid. A NULL op
 * answers "ERR not supported". */
struct ctl_ops {
	/* netns NULL means the sandbox shares the host netns. */
	/* policy NULL: the daemon's default policy. */
	int (*attach)(void *opaque, const char *id, const char *cgroup, const char *netns,
		      const char *policy, char *err, size_t errlen);
	/* Recompile the policy of id (NULL: every sandbox); out gets a summary
	 * or the file:line:col error. The old generation keeps serving on error. */
	int (*reload)(void *opaque, const char *id, char *out, size_t outlen);
	int (*detach)(void *opaque, const char *id, char *err, size_t errlen);
	/* Write one line of JSON (no newline) into out. */
	int (*status)(void *opaque, char *out, size_t outlen);
	const char *(*ca_path)(void *opaque);
};

struct ctl_server;

/* Bind the socket (replacing a stale one: a socket file nobody listens on),
 * start a thread serving requests one at a time. 0, -EADDRINUSE when a live
 * server already listens there, -EEXIST when path is not a socket, -errno. */
int ctl_server_start(const char *sock_path, const struct ctl_ops *ops, void *opaque,
		     struct ctl_server **ret_srv);
/* Wake and join the thread (waits for the current request, if any), close,
 * unlink the socket, free. NULL is fine. */
void ctl_server_stop(struct ctl_server *srv);

/* Client: send one request line (without newline), read the reply line.
 * Returns 0 when the reply starts with "OK" (rest copied to reply), a
 * positive 1 when it starts with "ERR" (message copied to reply), -ECONNREFUSED
 * / -ENOENT when sluiced is not running, -EMSGSIZE when line is too long or
 * holds a newline (nothing sent), -ETIMEDOUT after 10 s without a reply,
 * -EPROTO for a malformed reply, other -errno on failure. */
int ctl_request(const char *sock_path, const char *line, char *reply, size_t replylen);

#endif
