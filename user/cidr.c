// SPDX-License-Identifier: MIT
#include "cidr.h"

#include <string.h>
#include <sys/socket.h>

struct cidr cidr_as_v6(const struct cidr *c)
{
	struct cidr r = *c;

	if (c->family == AF_INET) {
		memset(r.addr, 0, 16);
		r.addr[10] = r.addr[11] = 0xff;
		memcpy(r.addr + 12, c->addr, 4);
		r.family = AF_INET6;
		r.prefix = c->prefix + 96;
	}
	return r;
}

struct cidr cidr_unmap(const struct cidr *c)
{
	static const unsigned char mapped[12] = { [10] = 0xff, [11] = 0xff };
	struct cidr r = *c;

	if (c->family == AF_INET6 && c->prefix >= 96 && !memcmp(c->addr, mapped, 12)) {
		memset(r.addr, 0, 16);
		memcpy(r.addr, c->addr + 12, 4);
		r.family = AF_INET;
		r.prefix = c->prefix - 96;
	}
	return r;
}

/* The first bits bits of a and b agree. */
static bool prefix_eq(const unsigned char *a, const unsigned char *b, unsigned bits)
{
	unsigned full = bits / 8, rest = bits % 8;

	return !memcmp(a, b, full) &&
	       (!rest || !((a[full] ^ b[full]) & (unsigned char)(0xff00 >> rest)));
}

bool cidr_overlap(const struct cidr *x, const struct cidr *y)
{
	struct cidr a = cidr_as_v6(x), b = cidr_as_v6(y);

	return prefix_eq(a.addr, b.addr, a.prefix < b.prefix ? a.prefix : b.prefix);
}

bool cidr_covers(const struct cidr *outer, const struct cidr *inner)
{
	struct cidr a = cidr_as_v6(outer), b = cidr_as_v6(inner);

	return a.prefix <= b.prefix && prefix_eq(a.addr, b.addr, a.prefix);
}

bool cidr_contains(const struct cidr *c, int family, const unsigned char *addr)
{
	struct cidr one = { .family = family, .prefix = family == AF_INET ? 32 : 128 };

	if (family != AF_INET && family != AF_INET6)
		return false;
	memcpy(one.addr, addr, family == AF_INET ? 4 : 16);
	return cidr_covers(c, &one);
}
