// SPDX-License-Identifier: MIT
#include "netaddr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int netaddr_parse(const char *spec, uint16_t default_port, struct sockaddr_storage *ret,
		  socklen_t *ret_len)
{
	char host[INET6_ADDRSTRLEN + 1];
	struct sockaddr_storage ss;
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
	const char *port_s = NULL, *colon, *end;
	unsigned long port = default_port;
	bool bracket = spec && spec[0] == '[';
	socklen_t len;
	size_t hlen;

	if (!spec || !ret || !ret_len)
		return -EINVAL;
	if (spec[0] == '[') {
		end = strchr(spec, ']');
		if (!end || (end[1] && end[1] != ':'))
			return -EINVAL;
		hlen = (size_t)(end - spec - 1);
		spec++;
		if (end[1] == ':')
			port_s = end + 2;
	} else if ((colon = strchr(spec, ':')) && colon == strrchr(spec, ':')) {
		hlen = (size_t)(colon - spec);
		port_s = colon + 1;
	} else {
		hlen = strlen(spec);
	}
	if (!hlen || hlen >= sizeof(host))
		return -EINVAL;
	memcpy(host, spec, hlen);
	host[hlen] = '\0';
	if (port_s) {
		char *e;

		if (*port_s < '0' || *port_s > '9')
			return -EINVAL;
		port = strtoul(port_s, &e, 10);
		if (*e || port == 0 || port > 65535)
			return -EINVAL;
	}
	memset(&ss, 0, sizeof(ss));
	if (!bracket && inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		len = sizeof(*s4);
	} else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		len = sizeof(*s6);
	} else {
		return -EINVAL;
	}
	*ret = ss;
	*ret_len = len;
	return 0;
}

const char *netaddr_str(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN];

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;

		inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
		snprintf(buf, len, "%s:%u", ip, ntohs(s4->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;

		inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
		snprintf(buf, len, "[%s]:%u", ip, ntohs(s6->sin6_port));
	} else {
		snprintf(buf, len, "?");
	}
	return buf;
}
