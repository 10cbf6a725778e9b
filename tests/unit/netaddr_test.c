// SPDX-License-Identifier: MIT
/* Unit tests for user/netaddr.c: address text both ways (the cases moved
 * here from dns_test when the parser left dns.c). Pure. */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

#include "netaddr.h"

Test(netaddr, parse)
{
	static const struct {
		const char *spec;
		int family;
		const char *ip;
		unsigned port;
	} ok[] = {
		{ "198.18.0.53", AF_INET, "198.18.0.53", 53 },
		{ "198.18.0.53:5353", AF_INET, "198.18.0.53", 5353 },
		{ "1.2.3.4:65535", AF_INET, "1.2.3.4", 65535 },
		{ "[2001:db8::1]:53", AF_INET6, "2001:db8::1", 53 },
		{ "[2001:db8::1]:5353", AF_INET6, "2001:db8::1", 5353 },
		{ "[::1]", AF_INET6, "::1", 53 },
		{ "2001:db8::1", AF_INET6, "2001:db8::1", 53 },
	};
	static const char *const bad[] = {
		"", "1.2.3.4:", "1.2.3.4:0", "1.2.3.4:65536", "1.2.3.4:53x", "[::1", "[::1]x",
		"host.name", "1.2.3.4.5", "[::1]:", "[]:53", ":53", "1.2.3.4:-1", "1.2.3.4: 53",
		"1.2.3.4:99999999999999999999", "[2001:db8::1]:53:53",
		"[0000:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000]",
	};
	struct sockaddr_storage ss;
	socklen_t len;

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		const uint8_t *b = (const uint8_t *)&ss;
		socklen_t want_len = ok[i].family == AF_INET ? sizeof(struct sockaddr_in) :
							       sizeof(struct sockaddr_in6);
		uint8_t ip[16];

		memset(&ss, 0xa5, sizeof(ss));
		len = 0;
		cr_assert_eq(netaddr_parse(ok[i].spec, 53, &ss, &len), 0, "'%s' refused", ok[i].spec);
		cr_assert_eq(ss.ss_family, ok[i].family, "'%s': family", ok[i].spec);
		cr_assert_eq(len, want_len, "'%s': length %u", ok[i].spec, (unsigned)len);
		cr_assert_eq(inet_pton(ok[i].family, ok[i].ip, ip), 1);
		if (ok[i].family == AF_INET) {
			struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

			cr_assert_eq(ntohs(s4->sin_port), ok[i].port, "'%s': port", ok[i].spec);
			cr_assert_eq(memcmp(&s4->sin_addr, ip, 4), 0, "'%s': address", ok[i].spec);
		} else {
			struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

			cr_assert_eq(ntohs(s6->sin6_port), ok[i].port, "'%s': port", ok[i].spec);
			cr_assert_eq(memcmp(&s6->sin6_addr, ip, 16), 0, "'%s': address", ok[i].spec);
			cr_assert_eq(s6->sin6_flowinfo, 0);
			cr_assert_eq(s6->sin6_scope_id, 0);
		}
		/* zeroed first: the padding and everything past len compare equal
		 * (the resolver hook's addresses are matched with memcmp) */
		if (ok[i].family == AF_INET)
			for (size_t k = 0; k < sizeof(((struct sockaddr_in *)0)->sin_zero); k++)
				cr_assert_eq(((struct sockaddr_in *)&ss)->sin_zero[k], 0);
		for (size_t k = want_len; k < sizeof(ss); k++)
			cr_assert_eq(b[k], 0, "'%s': byte %zu past the address not zeroed", ok[i].spec, k);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		len = 77;
		cr_assert_eq(netaddr_parse(bad[i], 53, &ss, &len), -EINVAL, "'%s' accepted", bad[i]);
		cr_assert_eq(len, 77, "'%s': length written on failure", bad[i]);
	}
	cr_assert_eq(netaddr_parse(NULL, 53, &ss, &len), -EINVAL);
	cr_assert_eq(netaddr_parse("1.2.3.4", 53, NULL, &len), -EINVAL);
	cr_assert_eq(netaddr_parse("1.2.3.4", 53, &ss, NULL), -EINVAL);
}

Test(netaddr, default_port)
{
	struct sockaddr_storage ss;
	socklen_t len;

	cr_assert_eq(netaddr_parse("198.18.0.53", 853, &ss, &len), 0);
	cr_assert_eq(ntohs(((struct sockaddr_in *)&ss)->sin_port), 853);
	cr_assert_eq(netaddr_parse("[::1]", 853, &ss, &len), 0);
	cr_assert_eq(ntohs(((struct sockaddr_in6 *)&ss)->sin6_port), 853);
	cr_assert_eq(netaddr_parse("198.18.0.53:54", 853, &ss, &len), 0);
	cr_assert_eq(ntohs(((struct sockaddr_in *)&ss)->sin_port), 54);
	cr_assert_eq(netaddr_parse("[1.2.3.4]:53", 53, &ss, &len), -EINVAL,
		     "brackets hold IPv6 only");
}

Test(netaddr, str_round_trip)
{
	static const char *const in[] = { "198.18.0.53:53", "[2001:db8::1]:5353",
					  "[::ffff:10.0.0.1]:1", "0.0.0.0:65535" };
	struct sockaddr_storage ss = { .ss_family = AF_UNIX };
	char buf[NETADDR_STR_MAX];
	socklen_t len;

	for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
		cr_assert_eq(netaddr_parse(in[i], 53, &ss, &len), 0, "%s", in[i]);
		cr_assert_str_eq(netaddr_str(&ss, buf, sizeof(buf)), in[i]);
	}
	cr_assert_eq(netaddr_parse("[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535", 53,
				   &ss, &len), 0);
	cr_assert_str_eq(netaddr_str(&ss, buf, sizeof(buf)),
			 "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
			 "the longest text fits NETADDR_STR_MAX");
	ss.ss_family = AF_UNIX;
	cr_assert_str_eq(netaddr_str(&ss, buf, sizeof(buf)), "?");
}
