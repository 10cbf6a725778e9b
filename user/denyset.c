// SPDX-License-Identifier: MIT
/*
 * denyset: default deny entries, policy additions/removals, derived IPv6
 * spellings of every IPv4 entry, and a sorted non-overlapping result.
 *
 * CIDR blocks either nest or are disjoint, so "merging" a list is dropping
 * every block that lies inside another one; removing a block from a larger
 * one splits the larger one into at most (removed prefix - prefix) halves.
 */
#include "denyset.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every entry built from a policy is bounded: a policy cannot make us
 * allocate without limit. Removals split blocks into at most 128 pieces. */
#define DS_MAX_POLICY_ENTRIES 4096

struct ds_list {
	struct ds_cidr *v;	/* reasons are heap strings owned by the list */
	unsigned n, cap;
};

struct denyset {
	struct ds_list v4, v6;
};

struct ds_default {
	const char *cidr;
	const char *reason;
};

/* Always denied, whatever the policy says (docs/security.md, "Deny set"). */
static const struct ds_default ds_protected[] = {
	{ "0.0.0.0/8", "\"this network\" (RFC 1122): 0.0.0.0 reaches local listeners on Linux" },
	{ "127.0.0.0/8", "IPv4 loopback: services on the host or in the sandbox's netns" },
	{ "169.254.0.0/16", "IPv4 link-local: cloud metadata (AWS, GCP, Azure, OpenStack "
			    "169.254.169.254; AWS ECS task metadata 169.254.170.2)" },
	{ "100.100.100.200/32", "Alibaba Cloud metadata service" },
	{ "168.63.129.16/32", "Azure WireServer (host agent, platform DNS)" },
	{ "192.0.0.192/32", "Oracle Cloud metadata service" },
	{ "224.0.0.0/4", "IPv4 multicast" },
	{ "255.255.255.255/32", "IPv4 limited broadcast" },
	{ "::/128", "IPv6 unspecified address: reaches local listeners on Linux" },
	{ "::1/128", "IPv6 loopback" },
	{ "fd00:ec2::/32", "AWS link services over IPv6 (IMDS fd00:ec2::254, DNS, NTP)" },
	{ "fd20:ce::254/128", "GCP metadata service over IPv6" },
	{ "fe80::/10", "IPv6 link-local" },
	{ "ff00::/8", "IPv6 multicast" },
};

/* Denied unless the policy removes them (all or part). */
static const struct ds_default ds_private[] = {
	{ "10.0.0.0/8", "private network (RFC 1918)" },
	{ "172.16.0.0/12", "private network (RFC 1918)" },
	{ "192.168.0.0/16", "private network (RFC 1918)" },
	{ "100.64.0.0/10", "shared address space, carrier-grade NAT (RFC 6598)" },
	{ "fc00::/7", "IPv6 unique local addresses (RFC 4193)" },
};

static void ds_seterr(char *err, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void ds_seterr(char *err, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (!err || !len)
		return;
	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
}

static unsigned ds_bits(int family)
{
	return family == AF_INET ? 32 : 128;
}

static unsigned ds_bytes(int family)
{
	return family == AF_INET ? 4 : 16;
}

static bool ds_bit(const unsigned char *a, unsigned i)
{
	return a[i / 8] & (0x80 >> (i % 8));
}

static bool ds_host_bits_zero(const struct ds_cidr *c)
{
	for (unsigned i = c->prefix; i < ds_bits(c->family); i++)
		if (ds_bit(c->addr, i))
			return false;
	return true;
}

bool ds_cidr_contains(const struct ds_cidr *c, int family, const unsigned char *addr)
{
	unsigned full = c->prefix / 8, rest = c->prefix % 8;

	if (c->family != family)
		return false;
	if (memcmp(c->addr, addr, full))
		return false;
	if (rest && ((c->addr[full] ^ addr[full]) & (0xff00 >> rest) & 0xff))
		return false;
	return true;
}

/* true when b lies inside a (same family, b no larger than a). */
static bool ds_inside(const struct ds_cidr *b, const struct ds_cidr *a)
{
	return a->family == b->family && b->prefix >= a->prefix &&
	       ds_cidr_contains(a, b->family, b->addr);
}

int ds_parse_cidr(const char *s, struct ds_cidr *ret)
{
	char host[INET6_ADDRSTRLEN];
	struct ds_cidr c = { 0 };
	const char *slash;
	size_t hlen;

	if (!s)
		return -EINVAL;
	slash = strchr(s, '/');
	hlen = slash ? (size_t)(slash - s) : strlen(s);
	if (!hlen || hlen >= sizeof(host))
		return -EINVAL;
	memcpy(host, s, hlen);
	host[hlen] = '\0';

	if (inet_pton(AF_INET, host, c.addr) == 1)
		c.family = AF_INET;
	else if (inet_pton(AF_INET6, host, c.addr) == 1)
		c.family = AF_INET6;
	else
		return -EINVAL;

	c.prefix = ds_bits(c.family);
	if (slash) {
		const char *p = slash + 1;
		unsigned v = 0, nd = 0;

		for (; *p; p++, nd++) {
			if (*p < '0' || *p > '9' || nd >= 3)
				return -EINVAL;
			v = v * 10 + (unsigned)(*p - '0');
		}
		if (!nd || v > ds_bits(c.family))
			return -EINVAL;
		c.prefix = v;
	}
	if (!ds_host_bits_zero(&c))
		return -EINVAL;
	*ret = c;
	return 0;
}

const char *ds_cidr_str(const struct ds_cidr *c, char *buf, size_t len)
{
	char a[INET6_ADDRSTRLEN];

	if (!inet_ntop(c->family, c->addr, a, sizeof(a)))
		snprintf(a, sizeof(a), "?");
	snprintf(buf, len, "%s/%u", a, c->prefix);
	return buf;
}

/* ---- lists ---- */

static void ds_list_clear(struct ds_list *l)
{
	for (unsigned i = 0; i < l->n; i++)
		free((char *)l->v[i].reason);
	free(l->v);
	memset(l, 0, sizeof(*l));
}

/* Append c with a copy of reason. */
static int ds_list_push(struct ds_list *l, const struct ds_cidr *c, const char *reason)
{
	struct ds_cidr *nv;
	char *r;

	if (l->n == l->cap) {
		unsigned ncap = l->cap ? l->cap * 2 : 32;

		nv = realloc(l->v, ncap * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		l->v = nv;
		l->cap = ncap;
	}
	r = strdup(reason ? reason : "");
	if (!r)
		return -ENOMEM;
	l->v[l->n] = *c;
	l->v[l->n].reason = r;
	l->n++;
	return 0;
}

static int ds_list_push_fmt(struct ds_list *l, const struct ds_cidr *c, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int ds_list_push_fmt(struct ds_list *l, const struct ds_cidr *c, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	return ds_list_push(l, c, buf);
}

static int ds_cmp(const void *pa, const void *pb)
{
	const struct ds_cidr *a = pa, *b = pb;
	int r;

	if (a->family != b->family)
		return a->family < b->family ? -1 : 1;
	r = memcmp(a->addr, b->addr, ds_bytes(a->family));
	if (r)
		return r;
	if (a->prefix != b->prefix)
		return a->prefix < b->prefix ? -1 : 1;
	/* Same block twice: keep the choice of reason deterministic. */
	return strcmp(a->reason, b->reason);
}

/* Sort and drop every block that lies inside the previous kept one (CIDR
 * blocks nest or are disjoint, so that removes every overlap). */
static void ds_list_merge(struct ds_list *l)
{
	unsigned out = 0;

	if (!l->n)
		return;
	qsort(l->v, l->n, sizeof(*l->v), ds_cmp);
	for (unsigned i = 1; i < l->n; i++) {
		if (ds_inside(&l->v[i], &l->v[out])) {
			free((char *)l->v[i].reason);
			continue;
		}
		l->v[++out] = l->v[i];
	}
	l->n = out + 1;
}

/* Push a minus r onto l (a itself when disjoint, nothing when r covers it,
 * else the halves of a that do not contain r, recursively). */
static int ds_push_subtract(struct ds_list *l, const struct ds_cidr *a, const struct ds_cidr *r)
{
	struct ds_cidr lo, hi;
	int ret;

	if (a->family != r->family || (!ds_inside(r, a) && !ds_inside(a, r)))
		return ds_list_push(l, a, a->reason);
	if (ds_inside(a, r))
		return 0;
	/* r strictly inside a: split a in two. */
	lo = *a;
	lo.prefix = a->prefix + 1;
	hi = lo;
	hi.addr[a->prefix / 8] |= 0x80 >> (a->prefix % 8);
	ret = ds_push_subtract(l, &lo, r);
	if (!ret)
		ret = ds_push_subtract(l, &hi, r);
	return ret;
}

/* Replace l by l minus r. */
static int ds_list_subtract(struct ds_list *l, const struct ds_cidr *r)
{
	struct ds_list out = { 0 };
	int ret = 0;

	for (unsigned i = 0; i < l->n && !ret; i++)
		ret = ds_push_subtract(&out, &l->v[i], r);
	if (ret) {
		ds_list_clear(&out);
		return ret;
	}
	ds_list_clear(l);
	*l = out;
	return 0;
}

static int ds_push_defaults(struct ds_list *l, const struct ds_default *t, size_t n)
{
	struct ds_cidr c;
	int ret;

	for (size_t i = 0; i < n; i++) {
		ret = ds_parse_cidr(t[i].cidr, &c);
		if (ret)
			return ret;
		ret = ds_list_push(l, &c, t[i].reason);
		if (ret)
			return ret;
	}
	return 0;
}

/* The IPv4-mapped, NAT64 and 6to4 spellings of every IPv4 entry of src. */
static int ds_push_v6_forms(struct ds_list *dst, const struct ds_list *src)
{
	char s[64];
	int ret = 0;

	for (unsigned i = 0; i < src->n && !ret; i++) {
		const struct ds_cidr *c = &src->v[i];
		struct ds_cidr m = { .family = AF_INET6 }, n64, s6;

		if (c->family != AF_INET)
			continue;
		ds_cidr_str(c, s, sizeof(s));
		m.addr[10] = 0xff;
		m.addr[11] = 0xff;
		memcpy(m.addr + 12, c->addr, 4);
		m.prefix = 96 + c->prefix;
		n64 = m;
		n64.addr[10] = n64.addr[11] = 0;
		n64.addr[1] = 0x64;
		n64.addr[2] = 0xff;
		n64.addr[3] = 0x9b;
		s6 = (struct ds_cidr){ .family = AF_INET6, .prefix = 16 + c->prefix };
		s6.addr[0] = 0x20;
		s6.addr[1] = 0x02;
		memcpy(s6.addr + 2, c->addr, 4);

		ret = ds_list_push_fmt(dst, &m, "IPv4-mapped form of %s: %s", s, c->reason);
		if (!ret)
			ret = ds_list_push_fmt(dst, &n64, "NAT64 form of %s: %s", s, c->reason);
		if (!ret)
			ret = ds_list_push_fmt(dst, &s6, "6to4 form of %s: %s", s, c->reason);
	}
	return ret;
}

static int ds_push_host_addrs(struct ds_list *l4, struct ds_list *l6)
{
	struct ifaddrs *ifs, *ifa;
	int ret = 0;

	if (getifaddrs(&ifs))
		return -errno;
	for (ifa = ifs; ifa && !ret; ifa = ifa->ifa_next) {
		struct ds_cidr c = { 0 };

		if (!ifa->ifa_addr)
			continue;
		if (ifa->ifa_addr->sa_family == AF_INET) {
			c.family = AF_INET;
			c.prefix = 32;
			memcpy(c.addr, &((struct sockaddr_in *)ifa->ifa_addr)->sin_addr, 4);
			ret = ds_list_push_fmt(l4, &c, "host address (%s)", ifa->ifa_name);
		} else if (ifa->ifa_addr->sa_family == AF_INET6) {
			c.family = AF_INET6;
			c.prefix = 128;
			memcpy(c.addr, &((struct sockaddr_in6 *)ifa->ifa_addr)->sin6_addr, 16);
			ret = ds_list_push_fmt(l6, &c, "host address (%s)", ifa->ifa_name);
		}
	}
	freeifaddrs(ifs);
	return ret;
}

static const struct ds_cidr *ds_list_find_container(const struct ds_list *l,
						    const struct ds_cidr *c)
{
	for (unsigned i = 0; i < l->n; i++)
		if (ds_inside(c, &l->v[i]))
			return &l->v[i];
	return NULL;
}

/* A removal must lie inside a private default and not inside a protected
 * entry of the same family. */
static int ds_check_removal(const struct ds_cidr *r, const struct ds_list *priv,
			    const struct ds_list *prot, char *err, size_t errlen)
{
	const struct ds_cidr *p;
	char s[64], t[64];

	ds_cidr_str(r, s, sizeof(s));
	if (!ds_list_find_container(priv, r)) {
		ds_seterr(err, errlen,
			  "cannot allow %s: only private ranges (10.0.0.0/8, 172.16.0.0/12, "
			  "192.168.0.0/16, 100.64.0.0/10, fc00::/7) can be removed from the deny set",
			  s);
		return -EPERM;
	}
	p = ds_list_find_container(prot, r);
	if (p) {
		ds_seterr(err, errlen, "cannot allow %s: inside %s, which is always denied (%s)", s,
			  ds_cidr_str(p, t, sizeof(t)), p->reason);
		return -EPERM;
	}
	return 0;
}

static int ds_valid_input(const struct ds_cidr *c)
{
	if ((c->family != AF_INET && c->family != AF_INET6) || c->prefix > ds_bits(c->family) ||
	    !ds_host_bits_zero(c))
		return -EINVAL;
	if (c->family == AF_INET)
		for (unsigned i = 4; i < 16; i++)
			if (c->addr[i])
				return -EINVAL;
	return 0;
}

int ds_build(const struct ds_opts *o, struct denyset **ret_d, char *err, size_t errlen)
{
	static const struct ds_opts none = { 0 };
	struct ds_list prot = { 0 }, priv = { 0 }, priv_all = { 0 };
	struct denyset *d;
	int ret;

	if (!o)
		o = &none;
	if (o->nadd > DS_MAX_POLICY_ENTRIES || o->nremove > DS_MAX_POLICY_ENTRIES) {
		ds_seterr(err, errlen, "too many deny set changes (max %d each)",
			  DS_MAX_POLICY_ENTRIES);
		return -E2BIG;
	}
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;

	ret = ds_push_defaults(&prot, ds_protected, sizeof(ds_protected) / sizeof(ds_protected[0]));
	if (!ret)
		ret = ds_push_defaults(&priv, ds_private, sizeof(ds_private) / sizeof(ds_private[0]));
	if (ret)
		goto out_lists;
	for (unsigned i = 0; i < o->nadd; i++) {
		if (ds_valid_input(&o->add[i])) {
			ds_seterr(err, errlen, "deny set addition %u is not a valid CIDR block", i);
			ret = -EINVAL;
			goto out_lists;
		}
		ret = ds_list_push(&prot, &o->add[i],
				   o->add[i].reason ? o->add[i].reason : "added by policy");
		if (ret)
			goto out_lists;
	}
	if (o->include_host_addrs) {
		ret = ds_push_host_addrs(&prot, &prot);
		if (ret) {
			ds_seterr(err, errlen, "listing host addresses: %s", strerror(-ret));
			goto out_lists;
		}
	}

	/* Removals are checked against the untouched private defaults, then
	 * carved out of the private entries only: a protected entry inside a
	 * removed range (a host address in 10/8, fd00:ec2::/32 in fc00::/7,
	 * 100.100.100.200 in 100.64/10) stays denied. */
	for (unsigned i = 0; i < priv.n; i++) {
		ret = ds_list_push(&priv_all, &priv.v[i], priv.v[i].reason);
		if (ret)
			goto out_lists;
	}
	for (unsigned i = 0; i < o->nremove; i++) {
		if (ds_valid_input(&o->remove[i])) {
			ds_seterr(err, errlen, "deny set removal %u is not a valid CIDR block", i);
			ret = -EINVAL;
			goto out_lists;
		}
		ret = ds_check_removal(&o->remove[i], &priv_all, &prot, err, errlen);
		if (!ret)
			ret = ds_list_subtract(&priv, &o->remove[i]);
		if (ret)
			goto out_lists;
	}

	/* Split per family, add the IPv6 spellings of every IPv4 entry. */
	for (unsigned i = 0; i < prot.n + priv.n && !ret; i++) {
		const struct ds_cidr *c = i < prot.n ? &prot.v[i] : &priv.v[i - prot.n];

		ret = ds_list_push(c->family == AF_INET ? &d->v4 : &d->v6, c, c->reason);
	}
	if (!ret)
		ret = ds_push_v6_forms(&d->v6, &d->v4);
	if (ret)
		goto out_lists;
	ds_list_merge(&d->v4);
	ds_list_merge(&d->v6);

	ds_list_clear(&prot);
	ds_list_clear(&priv);
	ds_list_clear(&priv_all);
	*ret_d = d;
	return 0;

out_lists:
	ds_list_clear(&prot);
	ds_list_clear(&priv);
	ds_list_clear(&priv_all);
	ds_free(d);
	if (ret == -ENOMEM)
		ds_seterr(err, errlen, "out of memory building the deny set");
	return ret;
}

void ds_free(struct denyset *d)
{
	if (!d)
		return;
	ds_list_clear(&d->v4);
	ds_list_clear(&d->v6);
	free(d);
}

static const struct ds_list *ds_list_of(const struct denyset *d, int family)
{
	if (!d)
		return NULL;
	return family == AF_INET ? &d->v4 : family == AF_INET6 ? &d->v6 : NULL;
}

/* Binary search: the last entry starting at or below addr, if it holds it. */
static bool ds_list_lookup(const struct ds_list *l, int family, const unsigned char *addr)
{
	unsigned lo = 0, hi = l->n;

	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;

		if (memcmp(l->v[mid].addr, addr, ds_bytes(family)) <= 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo > 0 && ds_cidr_contains(&l->v[lo - 1], family, addr);
}

bool ds_contains(const struct denyset *d, const struct sockaddr *sa)
{
	static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	const unsigned char *a;

	if (!d || !sa)
		return false;
	if (sa->sa_family == AF_INET) {
		a = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
		return ds_list_lookup(&d->v4, AF_INET, a);
	}
	if (sa->sa_family != AF_INET6)
		return false;
	a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
	if (!memcmp(a, mapped, sizeof(mapped)) && ds_list_lookup(&d->v4, AF_INET, a + 12))
		return true;
	return ds_list_lookup(&d->v6, AF_INET6, a);
}

unsigned ds_count(const struct denyset *d, int family)
{
	const struct ds_list *l = ds_list_of(d, family);

	return l ? l->n : 0;
}

const struct ds_cidr *ds_at(const struct denyset *d, int family, unsigned i)
{
	const struct ds_list *l = ds_list_of(d, family);

	return l && i < l->n ? &l->v[i] : NULL;
}
