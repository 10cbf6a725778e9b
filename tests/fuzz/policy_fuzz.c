// SPDX-License-Identifier: MIT
// fuzz-sources: user/policy.c user/cidr.c user/netaddr.c
// fuzz-libs: -lyaml -lidn2 -lcrypto
/*
 * libFuzzer target for user/policy.c: pol_load_buffer() on arbitrary bytes
 * must never crash, hang or leak, and must either fail with a diagnostic
 * (file "fuzz", line:col inside the input, a non-empty message) or return a
 * policy whose matchers can be run. On success the policy is exercised:
 * pol_match_conn/request, pol_host_in_policy and pol_secret_host_ok on a few
 * hosts and paths taken from the input's own scalars, and the network.udp
 * rules against pol_udp_match.
 *
 * Secrets: sources are env:/file: of whatever the input says; the fuzzer's
 * environment has no SLUICE_* variables, so they compile as unavailable.
 *
 * Build (scripts/fuzz.sh adds user/policy.c, user/cidr.c and user/netaddr.c;
 * link with -lyaml -lidn2 -lcrypto):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iuser -Iinclude \
 *     tests/fuzz/policy_fuzz.c user/policy.c user/cidr.c user/netaddr.c -lyaml -lidn2 -lcrypto
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"

#define CHECK(c)                                                                  \
	do {                                                                      \
		if (!(c)) {                                                       \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, \
				__LINE__, #c);                                    \
			abort();                                                  \
		}                                                                 \
	} while (0)

static void exercise(const struct pol *p, const uint8_t *data, size_t size)
{
	static const char *const hosts[] = { "a.test", "API.example.com.", "x.y.z.example.com",
					     "bücher.example", "10.0.0.1", "[::1]", "", "a..b" };
	static const char *const paths[] = { "/", "/a/b", "/repos/x/y", "/a/../b", "/%2e", "//" };
	const struct pol_rule *r;
	const char *why;
	char host[300];
	size_t n = size < sizeof(host) - 1 ? size : sizeof(host) - 1;

	/* the input itself as a host and a path, up to its first newline */
	memcpy(host, data, n);
	host[n] = '\0';
	host[strcspn(host, "\n")] = '\0';
	for (size_t i = 0; i <= sizeof(hosts) / sizeof(hosts[0]); i++) {
		const char *h = i < sizeof(hosts) / sizeof(hosts[0]) ? hosts[i] : host;

		for (uint16_t port = 79; port <= 81; port++) {
			enum pol_verdict v = pol_match_conn(p, h, port, &r);

			CHECK(v == POL_DENY || v == POL_ALLOW || v == POL_PASSTHROUGH);
			if (v != POL_DENY)
				CHECK(pol_rule_name(r) && pol_rule_name(r)[0]);
		}
		for (size_t k = 0; k <= sizeof(paths) / sizeof(paths[0]); k++) {
			const char *path = k < sizeof(paths) / sizeof(paths[0]) ? paths[k] : host;

			r = NULL;
			why = NULL;
			if (pol_match_request(p, h, 443, "GET", path, strlen(path), &r, &why) ==
			    POL_ALLOW)
				CHECK(r && pol_rule_name(r));
			else
				CHECK(why && why[0]);
		}
		(void)pol_host_in_policy(p, h);
		for (unsigned s = 0; s < pol_nsecrets(p); s++)
			(void)pol_secret_host_ok(p, s, h);
	}
	for (unsigned s = 0; s < pol_nsecrets(p); s++) {
		const struct pol_secret *sec = pol_secret_at(p, s);

		CHECK(sec && sec->name && sec->placeholder);
		CHECK(!sec->value == !!sec->unavailable_reason);
		for (unsigned i = 0; i < sec->nheaders; i++)
			CHECK(sec->headers[i]);
	}
	for (unsigned i = 0; i < pol_nwarnings(p); i++)
		CHECK(pol_warning(p, i)->msg[0]);
	/* network.udp: every rule sane, and each matches its own first port. */
	CHECK(pol_net_udp_count(p) <= POL_UDP_RULES_MAX);
	for (unsigned i = 0; i < pol_net_udp_count(p); i++) {
		const struct pol_udp_rule *u = pol_net_udp_at(p, i);

		CHECK(u && u->name[0] && u->nports >= 1 && u->nports <= POL_UDP_PORTS_MAX);
		for (unsigned k = 0; k < u->nports; k++)
			CHECK(u->ports[k].lo >= 1 && u->ports[k].lo <= u->ports[k].hi &&
			      (u->ports[k].hi < 53 || u->ports[k].lo > 53));
		CHECK(pol_udp_match(p, u->to.family, u->to.addr, u->ports[0].lo) != NULL);
	}
	CHECK(pol_net_udp_at(p, pol_net_udp_count(p)) == NULL);
	CHECK(pol_limits(p)->max_connections >= 1);
	CHECK(!strncmp(pol_hash(p), "sha256:", 7));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pol_error err;
	struct pol *p = NULL;
	int rc;

	memset(&err, 0, sizeof(err));
	rc = pol_load_buffer("fuzz", (const char *)data, size, &p, &err);
	if (rc) {
		CHECK(!p);
		CHECK(rc == -EINVAL || rc == -EFBIG || rc == -ENOMEM);
		CHECK(!strcmp(err.file, "fuzz"));
		CHECK(err.msg[0]);
		CHECK(err.line >= 1 && err.col >= 1);
		return 0;
	}
	CHECK(p);
	exercise(p, data, size);
	pol_ref(p);
	pol_unref(p);
	pol_unref(p);
	return 0;
}
