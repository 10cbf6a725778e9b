// SPDX-License-Identifier: MIT
/* Unit tests for user/denyset.c: parsing, the default entries and their
 * reasons, the derived IPv6 spellings, removals (allowed and refused),
 * merging and lookups. Pure: no root, no network. */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

/* Included to reach the static default tables. */
#include "../../user/denyset.c"

static struct ds_cidr cidr(const char *s)
{
	struct ds_cidr c;

	cr_assert_eq(ds_parse_cidr(s, &c), 0, "parse %s", s);
	return c;
}

static struct denyset *build(const struct ds_opts *o)
{
	struct denyset *d = NULL;
	char err[256] = "";

	cr_assert_eq(ds_build(o, &d, err, sizeof(err)), 0, "ds_build: %s", err);
	cr_assert_not_null(d);
	return d;
}

/* The entry of d that is exactly s, or NULL. */
static const struct ds_cidr *exact(const struct denyset *d, const char *s)
{
	struct ds_cidr c = cidr(s);

	for (unsigned i = 0; i < ds_count(d, c.family); i++) {
		const struct ds_cidr *e = ds_at(d, c.family, i);

		if (e->prefix == c.prefix && !memcmp(e->addr, c.addr, 16))
			return e;
	}
	return NULL;
}

static bool denied(const struct denyset *d, const char *ip)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6 };

	if (inet_pton(AF_INET, ip, &sin.sin_addr) == 1)
		return ds_contains(d, (struct sockaddr *)&sin);
	cr_assert_eq(inet_pton(AF_INET6, ip, &sin6.sin6_addr), 1, "bad test address %s", ip);
	return ds_contains(d, (struct sockaddr *)&sin6);
}

Test(denyset, parse)
{
	static const struct {
		const char *s;
		int ret, family;
		unsigned prefix;
	} t[] = {
		{ "169.254.0.0/16", 0, AF_INET, 16 },
		{ "192.0.0.192", 0, AF_INET, 32 },
		{ "0.0.0.0/0", 0, AF_INET, 0 },
		{ "fd00:ec2::/32", 0, AF_INET6, 32 },
		{ "fd20:ce::254", 0, AF_INET6, 128 },
		{ "::ffff:169.254.0.0/112", 0, AF_INET6, 112 },
		{ "::/0", 0, AF_INET6, 0 },
		{ "10.1.2.3/8", -EINVAL, 0, 0 },	/* host bits set */
		{ "10.0.0.0/33", -EINVAL, 0, 0 },
		{ "fe80::/129", -EINVAL, 0, 0 },
		{ "10.0.0.0/", -EINVAL, 0, 0 },
		{ "10.0.0.0/+8", -EINVAL, 0, 0 },
		{ "10.0.0.0/0008", -EINVAL, 0, 0 },
		{ "10.0.0.0/8 ", -EINVAL, 0, 0 },
		{ " 10.0.0.0/8", -EINVAL, 0, 0 },
		{ "10.0.0/8", -EINVAL, 0, 0 },
		{ "2852039166", -EINVAL, 0, 0 },	/* decimal spelling is not a CIDR */
		{ "", -EINVAL, 0, 0 },
		{ "/8", -EINVAL, 0, 0 },
		{ "example.com", -EINVAL, 0, 0 },
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct ds_cidr c = { .family = -1 };
		int ret = ds_parse_cidr(t[i].s, &c);

		cr_assert_eq(ret, t[i].ret, "%s: %d", t[i].s, ret);
		if (ret) {
			cr_assert_eq(c.family, -1, "%s: out-param written on failure", t[i].s);
			continue;
		}
		cr_assert_eq(c.family, t[i].family, "%s", t[i].s);
		cr_assert_eq(c.prefix, t[i].prefix, "%s", t[i].s);
		cr_assert_null(c.reason);
	}
	cr_assert_eq(ds_parse_cidr(NULL, NULL), -EINVAL);
}

Test(denyset, cidr_str)
{
	struct ds_cidr c = cidr("2002:6464:64c8::/48");
	char buf[64];

	cr_assert_str_eq(ds_cidr_str(&c, buf, sizeof(buf)), "2002:6464:64c8::/48");
	c = cidr("100.100.100.200");
	cr_assert_str_eq(ds_cidr_str(&c, buf, sizeof(buf)), "100.100.100.200/32");
}

/* With every private range removed, each protected default is an entry of
 * its own with its documented reason; with defaults, each lies inside an
 * entry. */
Test(denyset, defaults_present_with_reason)
{
	struct ds_cidr rm[] = { cidr("10.0.0.0/8"), cidr("172.16.0.0/12"), cidr("192.168.0.0/16"),
				cidr("100.64.0.0/10"), cidr("fc00::/7") };
	struct ds_opts o = { .remove = rm, .nremove = 5 };
	struct denyset *all = build(NULL), *d = build(&o);

	for (size_t i = 0; i < sizeof(ds_protected) / sizeof(ds_protected[0]); i++) {
		const struct ds_cidr *e = exact(d, ds_protected[i].cidr);
		struct ds_cidr c = cidr(ds_protected[i].cidr);

		cr_assert_not_null(e, "%s missing", ds_protected[i].cidr);
		cr_assert_str_eq(e->reason, ds_protected[i].reason);
		cr_assert(ds_list_find_container(c.family == AF_INET ? &all->v4 : &all->v6, &c),
			  "%s not covered by the default set", ds_protected[i].cidr);
	}
	for (size_t i = 0; i < sizeof(ds_private) / sizeof(ds_private[0]); i++) {
		const struct ds_cidr *e = exact(all, ds_private[i].cidr);

		cr_assert_not_null(e, "%s missing from defaults", ds_private[i].cidr);
		cr_assert_str_eq(e->reason, ds_private[i].reason);
		cr_assert_null(exact(d, ds_private[i].cidr), "%s not removed", ds_private[i].cidr);
	}
	/* Reasons the docs promise by name. */
	cr_assert(strstr(exact(d, "169.254.0.0/16")->reason, "169.254.170.2"));
	cr_assert(strstr(exact(d, "fd00:ec2::/32")->reason, "fd00:ec2::254"));
	ds_free(all);
	ds_free(d);
}

Test(denyset, derived_forms)
{
	struct ds_cidr rm = cidr("100.64.0.0/10");
	struct ds_opts o = { .remove = &rm, .nremove = 1 };
	struct denyset *d = build(NULL), *r = build(&o);
	const struct ds_cidr *e;

	/* 169.254.0.0/16 in every spelling. */
	e = exact(d, "::ffff:169.254.0.0/112");
	cr_assert_not_null(e);
	cr_assert(strstr(e->reason, "IPv4-mapped form of 169.254.0.0/16"), "%s", e->reason);
	e = exact(d, "64:ff9b::a9fe:0/112");
	cr_assert_not_null(e);
	cr_assert(strstr(e->reason, "NAT64 form of 169.254.0.0/16"), "%s", e->reason);
	e = exact(d, "2002:a9fe::/32");
	cr_assert_not_null(e);
	cr_assert(strstr(e->reason, "6to4 form of 169.254.0.0/16"), "%s", e->reason);
	cr_assert(denied(d, "169.254.169.254"));
	cr_assert(denied(d, "::ffff:169.254.169.254"));
	cr_assert(denied(d, "64:ff9b::169.254.169.254"));
	cr_assert(denied(d, "2002:a9fe:a9fe::1"));
	cr_assert(denied(d, "2002:a9fe:a9fe:1234:5678::9"));

	/* 100.100.100.200/32: inside 100.64/10 by default; an entry of its
	 * own once 100.64/10 is allowed. */
	cr_assert_null(exact(d, "2002:6464:64c8::/48"));
	cr_assert(denied(d, "2002:6464:64c8::1"));
	cr_assert_not_null(exact(r, "100.100.100.200/32"));
	cr_assert_not_null(exact(r, "::ffff:100.100.100.200/128"));
	cr_assert_not_null(exact(r, "64:ff9b::6464:64c8/128"));
	e = exact(r, "2002:6464:64c8::/48");
	cr_assert_not_null(e);
	cr_assert(strstr(e->reason, "Alibaba"), "%s", e->reason);
	cr_assert(denied(r, "2002:6464:64c8::1"));
	cr_assert_not(denied(r, "2002:6464:64c9::1"));
	cr_assert_not(denied(r, "100.100.100.201"));
	cr_assert_not(denied(r, "::ffff:100.100.100.201"));

	/* Other derived forms of the always-denied single addresses. */
	cr_assert_not_null(exact(d, "2002:a83f:8110::/48"));	/* 168.63.129.16 */
	cr_assert_not_null(exact(d, "::ffff:192.0.0.192/128"));
	cr_assert_not_null(exact(d, "2002:ffff:ffff::/48"));	/* 255.255.255.255 */
	cr_assert_not_null(exact(d, "::ffff:127.0.0.0/104"));
	cr_assert_not_null(exact(d, "2002:e000::/20"));	/* 224/4 */
	ds_free(d);
	ds_free(r);
}

Test(denyset, private_denied_by_default_and_removable)
{
	struct ds_cidr rm[] = { cidr("10.1.0.0/16"), cidr("192.168.0.0/16"), cidr("fd12:3456::/32") };
	struct ds_opts o = { .remove = rm, .nremove = 3 };
	struct denyset *d = build(NULL), *r = build(&o);

	static const char *const priv[] = { "10.1.2.3", "172.16.0.1", "172.31.255.254",
					     "192.168.1.1", "100.64.0.1", "100.127.255.255",
					     "fc00::1", "fd12:3456::1", "::ffff:10.1.2.3",
					     "64:ff9b::192.168.1.1", "2002:c0a8:0101::1" };

	for (size_t i = 0; i < sizeof(priv) / sizeof(priv[0]); i++)
		cr_assert(denied(d, priv[i]), "%s not denied by default", priv[i]);

	/* Removed, in every spelling. */
	cr_assert_not(denied(r, "10.1.2.3"));
	cr_assert_not(denied(r, "::ffff:10.1.2.3"));
	cr_assert_not(denied(r, "64:ff9b::10.1.2.3"));
	cr_assert_not(denied(r, "2002:0a01:0203::1"));
	cr_assert_not(denied(r, "192.168.1.1"));
	cr_assert_not(denied(r, "2002:c0a8:0101::1"));
	cr_assert_not(denied(r, "fd12:3456::1"));
	/* The rest of 10/8 and of fc00::/7 stays. */
	cr_assert(denied(r, "10.0.255.255"));
	cr_assert(denied(r, "10.2.0.0"));
	cr_assert(denied(r, "10.255.255.255"));
	cr_assert(denied(r, "::ffff:10.2.0.1"));
	cr_assert(denied(r, "fd12:3457::1"));
	cr_assert(denied(r, "172.16.0.1"));
	/* 10/8 minus 10.1/16 is 10.0/16 10.2/15 10.4/14 ... 10.128/9 */
	cr_assert_not_null(exact(r, "10.0.0.0/16"));
	cr_assert_not_null(exact(r, "10.2.0.0/15"));
	cr_assert_not_null(exact(r, "10.128.0.0/9"));
	cr_assert_null(exact(r, "10.0.0.0/8"));
	ds_free(d);
	ds_free(r);
}

Test(denyset, protected_survive_removed_range)
{
	struct ds_cidr rm[] = { cidr("fc00::/7"), cidr("100.64.0.0/10") };
	struct ds_cidr add = cidr("10.9.9.0/24");
	struct ds_cidr rm10 = cidr("10.0.0.0/8");
	struct ds_opts o = { .remove = rm, .nremove = 2 };
	struct ds_opts o2 = { .add = &add, .nadd = 1, .remove = &rm10, .nremove = 1 };
	struct denyset *d = build(&o), *d2 = build(&o2);

	cr_assert_not(denied(d, "fd12::1"));
	cr_assert(denied(d, "fd00:ec2::254"));
	cr_assert(denied(d, "fd20:ce::254"));
	cr_assert_not(denied(d, "fd20:ce::253"));
	cr_assert(denied(d, "100.100.100.200"));
	cr_assert_not(denied(d, "100.100.100.199"));
	/* A policy addition inside a removed range wins (deny wins). */
	cr_assert(denied(d2, "10.9.9.9"));
	cr_assert_str_eq(exact(d2, "10.9.9.0/24")->reason, "added by policy");
	cr_assert_not(denied(d2, "10.9.10.1"));
	ds_free(d);
	ds_free(d2);
}

Test(denyset, removal_refused)
{
	static const char *const bad[] = {
		"169.254.0.0/16", "169.254.169.254", "100.100.100.200", "168.63.129.16",
		"192.0.0.192", "127.0.0.0/8", "0.0.0.0/8", "224.0.0.0/4", "255.255.255.255",
		"fd00:ec2::/32", "fd00:ec2::254", "fd20:ce::254", "fe80::/10", "::1",
		"ff00::/8", "8.8.8.0/24", "0.0.0.0/0", "::/0", "::ffff:10.0.0.0/104",
		"2002:0a00::/24",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct ds_cidr c = cidr(bad[i]);
		struct ds_opts o = { .remove = &c, .nremove = 1 };
		struct denyset *d = (struct denyset *)0x1;
		char err[256] = "";

		cr_assert_eq(ds_build(&o, &d, err, sizeof(err)), -EPERM, "%s not refused", bad[i]);
		cr_assert_eq(d, (struct denyset *)0x1, "out-param written on failure");
		cr_assert(strstr(err, "cannot allow"), "%s: %s", bad[i], err);
	}
	{
		struct ds_cidr c = cidr("fd00:ec2::254");
		struct ds_opts o = { .remove = &c, .nremove = 1 };
		struct denyset *d;
		char err[256] = "";

		cr_assert_eq(ds_build(&o, &d, err, sizeof(err)), -EPERM);
		cr_assert(strstr(err, "AWS"), "%s", err);
	}
	{	/* a policy addition is protected from the same policy's removals */
		struct ds_cidr a = cidr("10.9.0.0/16"), c = cidr("10.9.1.0/24");
		struct ds_opts o = { .add = &a, .nadd = 1, .remove = &c, .nremove = 1 };
		struct denyset *d;

		cr_assert_eq(ds_build(&o, &d, NULL, 0), -EPERM);
	}
	{	/* malformed input */
		struct ds_cidr c = cidr("10.0.0.0/8");
		struct ds_opts o = { .add = &c, .nadd = 1 };
		struct denyset *d;

		c.prefix = 4;
		cr_assert_eq(ds_build(&o, &d, NULL, 0), -EINVAL);
		c.prefix = 8;
		c.family = AF_UNIX;
		cr_assert_eq(ds_build(&o, &d, NULL, 0), -EINVAL);
	}
}

Test(denyset, merge_sorted_disjoint)
{
	struct ds_cidr add[] = { cidr("10.0.0.5"), cidr("10.0.0.0/9"), cidr("8.8.8.8"),
				 cidr("8.8.8.0/24"), cidr("8.8.9.0/24"), cidr("fe80::1"),
				 cidr("2001:db8::/32"), cidr("2001:db8:1::/48") };
	struct ds_opts o = { .add = add, .nadd = 8 };
	struct denyset *d = build(&o);
	const int fams[] = { AF_INET, AF_INET6 };

	cr_assert_not_null(exact(d, "8.8.8.0/24"));
	cr_assert_not_null(exact(d, "8.8.9.0/24"));
	cr_assert_null(exact(d, "8.8.8.8/32"));
	cr_assert_null(exact(d, "10.0.0.5/32"));
	cr_assert_str_eq(exact(d, "10.0.0.0/8")->reason, "private network (RFC 1918)");
	cr_assert_null(exact(d, "fe80::1/128"));
	cr_assert_null(exact(d, "2001:db8:1::/48"));
	cr_assert_not_null(exact(d, "2001:db8::/32"));
	/* 8.8.8.8's derived forms merged into 8.8.8.0/24's */
	cr_assert_not_null(exact(d, "::ffff:8.8.8.0/120"));
	cr_assert_null(exact(d, "::ffff:8.8.8.8/128"));

	for (size_t f = 0; f < 2; f++) {
		unsigned n = ds_count(d, fams[f]);

		cr_assert_gt(n, 5);
		cr_assert_null(ds_at(d, fams[f], n));
		for (unsigned i = 1; i < n; i++) {
			const struct ds_cidr *a = ds_at(d, fams[f], i - 1), *b = ds_at(d, fams[f], i);

			cr_assert_lt(memcmp(a->addr, b->addr, 16), 0, "not sorted at %u", i);
			cr_assert_not(ds_cidr_contains(a, fams[f], b->addr), "overlap at %u", i);
			cr_assert_eq(a->family, fams[f]);
			cr_assert_not_null(a->reason);
		}
	}
	cr_assert_eq(ds_count(d, AF_UNIX), 0);
	cr_assert_null(ds_at(d, AF_UNIX, 0));
	ds_free(d);
	ds_free(NULL);
}

Test(denyset, contains_table)
{
	struct denyset *d = build(NULL);
	static const struct {
		const char *ip;
		bool deny;
	} t[] = {
		{ "169.254.169.254", true },	{ "169.254.170.2", true },
		{ "::ffff:169.254.169.254", true }, { "::ffff:a9fe:a9fe", true },
		{ "64:ff9b::a9fe:a9fe", true },	{ "2002:a9fe:a9fe::", true },
		{ "100.100.100.200", true },	{ "168.63.129.16", true },
		{ "168.63.129.17", false },	{ "192.0.0.192", true },
		{ "192.0.0.193", false },	{ "fd00:ec2::254", true },
		{ "fd20:ce::254", true },	{ "fe80::1", true },
		{ "febf:ffff::1", true },	{ "fec0::1", false },
		{ "127.0.0.1", true },		{ "127.255.255.254", true },
		{ "::ffff:127.0.0.1", true },	{ "::1", true },
		{ "::", true },			{ "::2", false },
		{ "0.0.0.0", true },		{ "0.255.255.255", true },
		{ "224.0.0.1", true },		{ "239.255.255.255", true },
		{ "240.0.0.1", false },		{ "255.255.255.255", true },
		{ "255.255.255.254", false },	{ "ff02::1", true },
		{ "10.0.0.1", true },		{ "172.15.255.255", false },
		{ "172.32.0.0", false },	{ "100.63.255.255", false },
		{ "100.128.0.0", false },	{ "192.169.0.0", false },
		{ "93.184.216.34", false },	{ "::ffff:93.184.216.34", false },
		{ "64:ff9b::93.184.216.34", false }, { "2002:5db8:d822::1", false },
		{ "2606:4700::1111", false },	{ "1.1.1.1", false },
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		cr_assert_eq(denied(d, t[i].ip), t[i].deny, "%s: expected %s", t[i].ip,
			     t[i].deny ? "denied" : "allowed");
	{
		struct sockaddr_un_like {
			sa_family_t f;
			char p[20];
		} u = { .f = AF_UNIX };

		cr_assert_not(ds_contains(d, (struct sockaddr *)&u));
		cr_assert_not(ds_contains(NULL, (struct sockaddr *)&u));
	}
	ds_free(d);
}

Test(denyset, host_addrs)
{
	struct ds_opts o = { .include_host_addrs = true };
	struct ifaddrs *ifs, *ifa;
	struct denyset *d = build(&o);

	cr_assert_eq(getifaddrs(&ifs), 0);
	for (ifa = ifs; ifa; ifa = ifa->ifa_next) {
		if (!ifa->ifa_addr || (ifa->ifa_addr->sa_family != AF_INET &&
				       ifa->ifa_addr->sa_family != AF_INET6))
			continue;
		cr_assert(ds_contains(d, ifa->ifa_addr), "host address of %s not denied",
			  ifa->ifa_name);
	}
	freeifaddrs(ifs);
	ds_free(d);
}
