/* SPDX-License-Identifier: MIT */
/*
 * netaddr: socket addresses as text, both ways, in the one spelling the
 * project uses for them: "a.b.c.d:port" and "[v6]:port" (policy files,
 * --dns-resolver, the audit log's upstream_addr, error messages).
 */
#ifndef SLUICE_NETADDR_H
#define SLUICE_NETADDR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Longest text netaddr_str() writes, NUL included: "[" v6 "]:" 65535. */
#define NETADDR_STR_MAX (46 + 8)

/*
 * Parse "IP", "IP:PORT", "[IPv6]" or "[IPv6]:PORT" (also a bare IPv6
 * address; brackets hold IPv6 only); default_port when none is given. 0
 * with *ret (unused bytes zero) and *ret_len, or -EINVAL with neither
 * touched.
 */
int netaddr_parse(const char *spec, uint16_t default_port, struct sockaddr_storage *ret,
		  socklen_t *ret_len);

/* ss as "a.b.c.d:port" or "[v6]:port" into buf ("?" for another family).
 * Returns buf. */
const char *netaddr_str(const struct sockaddr_storage *ss, char *buf, size_t len);

#endif
