// SPDX-License-Identifier: MIT
/* Unit tests for user/cidr.c: the IPv4-mapped widening and narrowing,
 * overlap, cover and contains, across families and off byte boundaries.
 * Pure: no root, no network. */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>

#include "cidr.h"

static struct cidr mk(const char *a, unsigned prefix)
{
	struct cidr c = { .prefix = prefix };

	if (inet_pton(AF_INET, a, c.addr) == 1) {
		c.family = AF_INET;
	} else {
		cr_assert_eq(inet_pton(AF_INET6, a, c.addr), 1, "address %s", a);
		c.family = AF_INET6;
	}
	return c;
}

static bool has(const struct cidr *c, const char *a)
{
	unsigned char b[16] = { 0 };

	if (inet_pton(AF_INET, a, b) == 1)
		return cidr_contains(c, AF_INET, b);
	cr_assert_eq(inet_pton(AF_INET6, a, b), 1, "address %s", a);
	return cidr_contains(c, AF_INET6, b);
}

Test(cidr, as_v6_and_unmap)
{
	struct cidr v4 = mk("10.1.0.0", 16), w = cidr_as_v6(&v4), back;
	struct cidr m = mk("::ffff:10.1.0.0", 112), u = cidr_unmap(&m);
	struct cidr short6 = mk("::ffff:0:0", 95), v6 = mk("2001:db8::", 32);

	cr_assert_eq(w.family, AF_INET6);
	cr_assert_eq(w.prefix, 112);
	cr_assert(!memcmp(w.addr, m.addr, 16));
	cr_assert_eq(u.family, AF_INET);
	cr_assert_eq(u.prefix, 16);
	cr_assert(!memcmp(u.addr, v4.addr, 16), "unmapped bytes past the v4 address are zero");
	back = cidr_unmap(&w);
	cr_assert(back.family == AF_INET && back.prefix == 16 && !memcmp(back.addr, v4.addr, 16),
		  "widen then narrow gives the block back");
	/* below /96 a ::ffff: block is not one IPv4 block: left alone */
	cr_assert_eq(cidr_unmap(&short6).family, AF_INET6);
	cr_assert_eq(cidr_unmap(&v6).family, AF_INET6);
	cr_assert_eq(cidr_as_v6(&v6).prefix, 32);
}

Test(cidr, overlap)
{
	struct cidr a = mk("10.0.0.0", 8), b = mk("10.200.0.0", 16), c = mk("11.0.0.0", 8);
	struct cidr md = mk("::ffff:169.254.0.0", 112), all4 = mk("0.0.0.0", 0);
	struct cidr ll = mk("169.254.169.254", 32), v6 = mk("2001:db8::", 32);

	cr_assert(cidr_overlap(&a, &b));
	cr_assert(cidr_overlap(&b, &a));
	cr_assert(!cidr_overlap(&a, &c));
	cr_assert(cidr_overlap(&md, &ll), "mapped spelling overlaps the v4 block");
	cr_assert(cidr_overlap(&all4, &ll));
	cr_assert(!cidr_overlap(&v6, &ll));
}

Test(cidr, covers)
{
	struct cidr a = mk("10.0.0.0", 8), b = mk("10.128.0.0", 9), c = mk("10.0.0.0", 7);
	struct cidr m = mk("::ffff:10.0.0.0", 104), v6 = mk("2001:db8::", 32);
	struct cidr v6s = mk("2001:db8:8000::", 33);

	cr_assert(cidr_covers(&a, &b));
	cr_assert(!cidr_covers(&b, &a), "a longer prefix never covers a shorter one");
	cr_assert(cidr_covers(&c, &a));
	cr_assert(cidr_covers(&a, &a));
	cr_assert(cidr_covers(&m, &a) && cidr_covers(&a, &m), "the same block in two spellings");
	cr_assert(cidr_covers(&v6, &v6s));
	cr_assert(!cidr_covers(&v6, &a));
	cr_assert(!cidr_covers(&a, &v6));
}

Test(cidr, contains)
{
	struct cidr n25 = mk("192.0.2.128", 25), v6 = mk("2001:db8::", 61);
	struct cidr m = mk("::ffff:192.0.2.0", 120);
	unsigned char junk[16] = { 0 };

	cr_assert(has(&n25, "192.0.2.200"));
	cr_assert(has(&n25, "192.0.2.128"));
	cr_assert(!has(&n25, "192.0.2.127"), "bit 25 differs");
	cr_assert(has(&n25, "::ffff:192.0.2.255"), "a mapped address is the v4 one");
	cr_assert(has(&m, "192.0.2.7"));
	cr_assert(has(&v6, "2001:db8:0:7::1"));
	cr_assert(!has(&v6, "2001:db8:0:8::1"), "bit 61 differs");
	cr_assert(!cidr_contains(&n25, AF_UNIX, junk));
}
