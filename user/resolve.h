/* SPDX-License-Identifier: MIT */
/*
 * resolve: sluiced's own name resolution for upstream dials. IP literals and
 * names in the --hosts overrides (/etc/hosts format) answer at once; other
 * names go to getaddrinfo() on a small thread pool, and the answer is posted
 * back to the asking loop. Not a cache: the system resolver caches.
 */
#ifndef SLUICE_RESOLVE_H
#define SLUICE_RESOLVE_H

#include <stdint.h>
#include <sys/socket.h>

#include "loop.h"

#define RESOLVE_MAX_ADDRS 8

struct resolve_result {
	int err;                /* 0, or -errno / -EHOSTUNREACH when no address */
	int n;
	struct sockaddr_storage addr[RESOLVE_MAX_ADDRS];
};

/* Load overrides from hosts_file (NULL: none); start threads. 0 or -errno
 * with a file:line reason in err. */
int resolve_init(const char *hosts_file, char *err, size_t errlen);

/*
 * Resolve name for port. Returns 0 when *res is filled now, 1 when the
 * answer will be written to *res and cb(arg) run on loop l later (res and arg
 * must stay valid until then), or -errno.
 */
int resolve_start(struct loop *l, const char *name, uint16_t port, struct resolve_result *res,
		  void (*cb)(void *arg), void *arg);

/* Parse an IP literal into ss with port; 0 or -EINVAL. */
int resolve_literal(const char *name, uint16_t port, struct sockaddr_storage *ss);

#endif
