// SPDX-License-Identifier: MIT
/* Unit tests for user/policy.c: every schema key, every hostile input with
 * its exact line:col, the matchers (hosts, ports, methods, globs), path
 * checks, secret sources, placeholder overlap, refcount and zeroing, and
 * every example under policy/. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include "policy.h"
#include "policy_internal.h"

TestSuite(policy, .timeout = 30);

static struct pol *load_ok(const char *yaml)
{
	struct pol_error e = { 0 };
	struct pol *p = NULL;
	int rc = pol_load_buffer("t.yaml", yaml, strlen(yaml), &p, &e);

	cr_assert_eq(rc, 0, "rc=%d %s:%u:%u: %s\n--- input:\n%s", rc, e.file, e.line, e.col,
		     e.msg, yaml);
	cr_assert_not_null(p);
	return p;
}

static void load_err_len(const char *yaml, size_t len, int want_rc, unsigned line,
			 unsigned col, const char *substr)
{
	struct pol_error e = { 0 };
	struct pol *p = NULL;
	int rc = pol_load_buffer("t.yaml", yaml, len, &p, &e);

	cr_assert_eq(rc, want_rc, "rc=%d (want %d) %u:%u: %s\n--- input:\n%.300s", rc, want_rc,
		     e.line, e.col, e.msg, yaml);
	cr_assert_null(p);
	cr_assert_str_eq(e.file, "t.yaml");
	cr_expect(strstr(e.msg, substr), "message '%s' lacks '%s'\n--- input:\n%.300s", e.msg,
		  substr, yaml);
	cr_expect(e.line == line && e.col == col, "at %u:%u, want %u:%u (%s)\n--- input:\n%.300s",
		  e.line, e.col, line, col, e.msg, yaml);
}

static void load_err(const char *yaml, unsigned line, unsigned col, const char *substr)
{
	load_err_len(yaml, strlen(yaml), -EINVAL, line, col, substr);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static char tmpdir[64];

static void mk_tmpdir(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/sluice-policy-test-XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir));
}

static void rm_tmpdir(void)
{
	char cmd[128];

	if (tmpdir[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
		cr_expect_eq(system(cmd), 0);
	}
}

static void write_file(const char *path, const char *data, size_t len)
{
	FILE *f = fopen(path, "w");

	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	cr_assert_eq(fwrite(data, 1, len, f), len);
	fclose(f);
}

/* ---- every key ---- */

Test(policy, every_key)
{
	static const char yaml[] =
		"version: 1\n"
		"default: deny\n"
		"allow:\n"
		"  - name: github-api\n"
		"    host: API.GitHub.com.\n"
		"    ports: [443, 8443]\n"
		"    methods: [GET, POST]\n"
		"    paths: [\"/repos/**\", \"/user\"]\n"
		"  - host: \"*.example.com\"\n"
		"passthrough:\n"
		"  - host: \"**.googlevideo.com\"\n"
		"    ports: [443]\n"
		"    name: video\n"
		"  - host: 192.0.2.7\n"
		"secrets:\n"
		"  - name: openai\n"
		"    placeholder: SLUICE_PH_OPENAI_7f3a\n"
		"    source: env:SLUICE_POLICY_TEST_KEY\n"
		"    hosts: [api.openai.com, \"*.openai.com\"]\n"
		"    in:\n"
		"      headers: [Authorization, X-Api-Key]\n"
		"      any_header: true\n"
		"      basic_auth: [password, user]\n"
		"      query: [api_key]\n"
		"      body:\n"
		"        content_types: [application/JSON, application/x-www-form-urlencoded]\n"
		"        max_bytes: 2048\n"
		"    allow_plaintext: true\n"
		"limits:\n"
		"  max_header_bytes: 1024\n"
		"  body_buffer_bytes: 16777216\n"
		"  max_connections: 7\n"
		"  idle_timeout_s: 86400\n"
		"  request_timeout_s: 1\n"
		"upstream_ca: /etc/ssl/certs/ca-certificates.crt\n"
		"dns:\n"
		"  mode: allowlist\n"
		"  resolver: 198.18.0.53\n"
		"network:\n"
		"  deny: [\"203.0.113.0/24\", \"2001:db8::/32\", 198.51.100.7]\n"
		"  allow: [\"10.0.0.0/8\"]\n";
	const struct pol_secret *s;
	const struct pol_limits *l;
	const struct cidr *cidr;
	const struct pol_rule *r = NULL;
	struct pol *p;
	unsigned char want4[4] = { 203, 0, 113, 0 };

	setenv("SLUICE_POLICY_TEST_KEY", "sk-real-value", 1);
	p = load_ok(yaml);
	cr_expect_eq(pol_nwarnings(p), 0);
	cr_expect_eq(pol_nallow(p), 2);
	cr_expect_eq(pol_npassthrough(p), 2);
	cr_expect_str_eq(pol_source(p), "t.yaml");
	cr_expect_eq(strncmp(pol_hash(p), "sha256:", 7), 0);
	cr_expect_eq(strlen(pol_hash(p)), 7 + 64);

	cr_expect_eq(pol_match_conn(p, "api.github.com", 8443, &r), POL_ALLOW);
	cr_expect_str_eq(pol_rule_name(r), "github-api");
	cr_expect_eq(pol_match_conn(p, "api.github.com", 80, &r), POL_DENY);
	cr_expect_eq(pol_match_conn(p, "www.example.com", 80, &r), POL_ALLOW);
	cr_expect_str_eq(pol_rule_name(r), "allow[1]");
	cr_expect_eq(pol_match_conn(p, "a.b.googlevideo.com", 443, &r), POL_PASSTHROUGH);
	cr_expect_str_eq(pol_rule_name(r), "video");
	cr_expect_eq(pol_match_conn(p, "192.0.2.7", 443, &r), POL_PASSTHROUGH);
	cr_expect_str_eq(pol_rule_name(r), "passthrough[1]");
	cr_expect_eq(pol_match_conn(p, "192.0.2.7", 80, &r), POL_DENY); /* passthrough: [443] */

	cr_assert_eq(pol_nsecrets(p), 1);
	s = pol_secret_at(p, 0);
	cr_assert_not_null(s);
	cr_expect_null(pol_secret_at(p, 1));
	cr_expect_str_eq(s->name, "openai");
	cr_expect_str_eq(s->placeholder, "SLUICE_PH_OPENAI_7f3a");
	cr_assert_not_null(s->value);
	cr_expect_eq(s->value_len, 13);
	cr_expect_eq(memcmp(s->value, "sk-real-value", 13), 0);
	cr_expect_null(s->unavailable_reason);
	cr_expect(s->in_any_header && s->in_basic_user && s->in_basic_password);
	cr_expect(s->allow_plaintext);
	cr_assert_eq(s->nheaders, 2);
	cr_expect_str_eq(s->headers[0], "authorization");
	cr_expect_str_eq(s->headers[1], "x-api-key");
	cr_assert_eq(s->nquery, 1);
	cr_expect_str_eq(s->query[0], "api_key");
	cr_assert_eq(s->nbody_types, 2);
	cr_expect_str_eq(s->body_types[0], "application/json");
	cr_expect_str_eq(s->body_types[1], "application/x-www-form-urlencoded");
	cr_expect_eq(s->body_max, 2048);
	cr_expect(pol_secret_host_ok(p, 0, "api.openai.com"));
	cr_expect(pol_secret_host_ok(p, 0, "Files.OpenAI.com."));
	cr_expect_not(pol_secret_host_ok(p, 0, "a.b.openai.com"));
	cr_expect_not(pol_secret_host_ok(p, 0, "openai.com"));
	cr_expect_not(pol_secret_host_ok(p, 0, "api.openai.com.evil.test"));
	cr_expect_not(pol_secret_host_ok(p, 1, "api.openai.com"));

	l = pol_limits(p);
	cr_expect_eq(l->max_header_bytes, 1024);
	cr_expect_eq(l->body_buffer_bytes, 16777216);
	cr_expect_eq(l->max_connections, 7);
	cr_expect_eq(l->idle_timeout_s, 86400);
	cr_expect_eq(l->request_timeout_s, 1);
	cr_expect_str_eq(pol_upstream_ca(p), "/etc/ssl/certs/ca-certificates.crt");
	cr_expect_eq(pol_dns_mode(p), POL_DNS_ALLOWLIST);
	cr_expect_str_eq(pol_dns_resolver(p), "198.18.0.53:53");

	cr_assert_eq(pol_net_deny_count(p), 3);
	cidr = pol_net_deny_at(p, 0);
	cr_expect_eq(cidr->family, AF_INET);
	cr_expect_eq(cidr->prefix, 24);
	cr_expect_eq(memcmp(cidr->addr, want4, 4), 0);
	cr_expect_eq(pol_net_deny_at(p, 1)->family, AF_INET6);
	cr_expect_eq(pol_net_deny_at(p, 1)->prefix, 32);
	cr_expect_eq(pol_net_deny_at(p, 2)->prefix, 32);
	cr_expect_null(pol_net_deny_at(p, 3));
	cr_assert_eq(pol_net_allow_count(p), 1);
	cr_expect_eq(pol_net_allow_at(p, 0)->prefix, 8);

	cr_expect(pol_host_in_policy(p, "api.github.com"));
	cr_expect(pol_host_in_policy(p, "x.example.com"));
	cr_expect(pol_host_in_policy(p, "r1.sn-abc.googlevideo.com"));
	cr_expect_not(pol_host_in_policy(p, "example.com"));
	cr_expect_not(pol_host_in_policy(p, "evil.test"));
	pol_unref(p);
	unsetenv("SLUICE_POLICY_TEST_KEY");
}

Test(policy, defaults)
{
	struct pol *p = load_ok("version: 1\n");
	const struct pol_limits *l = pol_limits(p);
	const struct pol_rule *r = NULL;
	const char *why = NULL;

	cr_expect_eq(l->max_header_bytes, 32768);
	cr_expect_eq(l->body_buffer_bytes, 65536);
	cr_expect_eq(l->max_connections, 512);
	cr_expect_eq(l->idle_timeout_s, 60);
	cr_expect_eq(l->request_timeout_s, 300);
	cr_expect_null(pol_upstream_ca(p));
	cr_expect_eq(pol_dns_mode(p), POL_DNS_FORWARD);
	cr_expect_null(pol_dns_resolver(p));
	cr_expect_eq(pol_nsecrets(p), 0);
	cr_expect_eq(pol_net_deny_count(p), 0);
	cr_expect_eq(pol_net_allow_count(p), 0);
	cr_expect_eq(pol_net_udp_count(p), 0);
	cr_expect_null(pol_net_udp_at(p, 0));
	cr_expect_null(pol_udp_match(p, AF_INET, (const unsigned char[16]){ 10, 0, 0, 1 }, 123));
	cr_expect_eq(pol_nwarnings(p), 0);
	cr_expect_null(pol_warning(p, 0));
	/* default deny */
	cr_expect_eq(pol_match_conn(p, "example.com", 443, &r), POL_DENY);
	cr_expect_eq(pol_match_request(p, "example.com", 443, "GET", "/", 1, &r, &why), POL_DENY);
	cr_expect_str_eq(why, "no rule allows host");
	cr_expect_not(pol_host_in_policy(p, "example.com"));
	pol_unref(p);

	/* empty lists are fine */
	p = load_ok("version: 1\nallow: []\npassthrough: []\nsecrets: []\n"
		    "network: {deny: [], allow: [], udp: []}\nlimits: {}\ndns: {}\n");
	cr_expect_eq(pol_nallow(p), 0);
	cr_expect_eq(pol_net_udp_count(p), 0);
	pol_unref(p);
}

Test(policy, allow_all)
{
	struct pol *p = pol_allow_all();
	const struct pol_rule *r = NULL;
	const char *why = NULL;

	cr_assert_not_null(p);
	cr_expect_str_eq(pol_hash(p), "builtin:allow-all");
	cr_expect_str_eq(pol_source(p), "builtin");
	cr_expect_eq(pol_match_conn(p, "anything.test", 1, &r), POL_ALLOW);
	cr_expect_str_eq(pol_rule_name(r), "builtin:allow-all");
	cr_expect_eq(pol_match_request(p, "x.test", 8080, "PATCH", "/a/b", 4, &r, &why),
		     POL_ALLOW);
	cr_expect_eq(pol_match_request(p, "x.test", 80, "GET", "/a/../b", 7, &r, &why), POL_DENY);
	cr_expect_str_eq(why, "invalid path");
	cr_expect_eq(pol_match_conn(p, "bad host", 443, &r), POL_DENY);
	cr_expect(pol_host_in_policy(p, "x.test"));
	cr_expect_eq(pol_nsecrets(p), 0);
	cr_expect_eq(pol_dns_mode(p), POL_DNS_FORWARD);
	cr_expect_eq(pol_limits(p)->max_connections, 512);
	/* allow-all never opened UDP, and still does not */
	cr_expect_eq(pol_net_udp_count(p), 0);
	cr_expect_null(pol_udp_match(p, AF_INET, (const unsigned char[16]){ 10, 0, 0, 1 }, 123));
	cr_expect_eq(pol_ref(p), p);
	pol_unref(p);
	pol_unref(p);
	pol_unref(NULL);
}

/* ---- hostile files ---- */

struct bad {
	const char *yaml;
	unsigned line, col;
	const char *msg;
};

static const struct bad bad_cases[] = {
	/* structure */
	{ "", 1, 1, "empty policy" },
	{ "# only a comment\n", 1, 1, "empty policy" },
	{ "---\n", 2, 1, "top level must be a mapping (version, allow, ...), got nothing (null)" },
	{ "- a\n- b\n", 1, 1, "top level must be a mapping" },
	{ "just text\n", 1, 1, "top level must be a mapping" },
	{ "version: 1\n---\nversion: 1\n", 2, 1, "multiple YAML documents" },
	{ "allow: []\n", 1, 1, "missing required key 'version'" },
	{ "version: 2\n", 1, 10, "unsupported version '2'" },
	{ "version: one\n", 1, 10, "unsupported version 'one'" },
	{ "version: [1]\n", 1, 10, "'version' must be a scalar, got a sequence" },
	{ "version: 1\ndefault: allow\n", 2, 10, "'default' must be deny" },
	/* unknown / duplicate keys */
	{ "version: 1\nalow: []\n", 2, 1,
	  "unknown key 'alow' in the top level; valid keys: version, default, allow, passthrough, "
	  "secrets, limits, upstream_ca, dns, network" },
	{ "version: 1\nallow:\n  - host: a.test\n    hots: b\n", 4, 5,
	  "unknown key 'hots' in allow[0]; valid keys: name, host, ports, methods, paths" },
	{ "version: 1\nallow:\n  - host: a.test\n    host: b.test\n", 4, 5,
	  "duplicate key 'host' in allow[0] (first at line 3)" },
	{ "version: 1\nversion: 1\n", 2, 1, "duplicate key 'version'" },
	{ "version: 1\npassthrough:\n  - host: a.test\n    methods: [GET]\n", 4, 5,
	  "unknown key 'methods' in passthrough[0]; valid keys: name, host, ports" },
	{ "version: 1\nlimits:\n  max_conns: 3\n", 3, 3, "unknown key 'max_conns' in 'limits'" },
	{ "version: 1\n? [a, b]\n: c\n", 2, 3, "mapping keys must be plain scalars" },
	/* wrong types */
	{ "version: 1\nallow: a.test\n", 2, 8, "'allow' must be a sequence, got a scalar" },
	{ "version: 1\nallow:\n", 2, 7, "'allow' must be a sequence, got nothing (null)" },
	{ "version: 1\nallow:\n  - a.test\n", 3, 5, "allow[0] must be a mapping, got a scalar" },
	{ "version: 1\nallow:\n  - host: [a.test]\n", 3, 11, "host must be a scalar, got a sequence" },
	{ "version: 1\nallow:\n  - host: a.test\n    ports: 443\n", 4, 12,
	  "'ports' must be a sequence, got a scalar" },
	{ "version: 1\nallow:\n  - host: a.test\n    ports: {a: 1}\n", 4, 12,
	  "'ports' must be a sequence, got a mapping" },
	{ "version: 1\nlimits: [1]\n", 2, 9, "'limits' must be a mapping, got a sequence" },
	{ "version: 1\nsecrets: {}\n", 2, 10, "'secrets' must be a sequence, got a mapping" },
	/* hosts */
	{ "version: 1\nallow:\n  - host: \"\"\n", 3, 11, "host must not be empty" },
	{ "version: 1\nallow:\n  - host:\n", 3, 10, "host must be a scalar, got nothing (null)" },
	{ "version: 1\nallow:\n  - ports: [443]\n", 3, 5, "allow[0] has no 'host'" },
	{ "version: 1\nallow:\n  - host: a b.test\n", 3, 11, "invalid host 'a b.test'" },
	{ "version: 1\nallow:\n  - host: https://a.test/\n", 3, 11, "not a URL" },
	{ "version: 1\nallow:\n  - host: a.test:443\n", 3, 11, "ports go under 'ports'" },
	{ "version: 1\nallow:\n  - host: a..test\n", 3, 11, "empty label" },
	{ "version: 1\nallow:\n  - host: \"*\"\n", 3, 11, "needs a suffix" },
	{ "version: 1\nallow:\n  - host: \"a.*.test\"\n", 3, 11, "'*' is only allowed" },
	{ "version: 1\nallow:\n  - host: \"***.test\"\n", 3, 11, "'*' is only allowed" },
	{ "version: 1\nallow:\n  - host: \"*.10.0.0.1\"\n", 3, 11, "wildcards do not apply" },
	{ "version: 1\nallow:\n  - host: 127.1\n", 3, 11, "ambiguous IPv4" },
	{ "version: 1\nallow:\n  - host: xn--zz.test\x80\n", 3, 22, "UTF-8" },
	/* ports, methods */
	{ "version: 1\nallow:\n  - host: a.test\n    ports: [0]\n", 4, 13,
	  "a port must be an integer from 1 to 65535, got '0'" },
	{ "version: 1\nallow:\n  - host: a.test\n    ports: [443, 65536]\n", 4, 18,
	  "got '65536'" },
	{ "version: 1\nallow:\n  - host: a.test\n    ports: [-1]\n", 4, 13, "got '-1'" },
	{ "version: 1\nallow:\n  - host: a.test\n    ports: [99999999999999999999999]\n", 4, 13,
	  "from 1 to 65535" },
	{ "version: 1\nallow:\n  - host: a.test\n    ports: []\n", 4, 12, "must not be empty" },
	{ "version: 1\nallow:\n  - host: a.test\n    methods: [get]\n", 4, 15,
	  "method 'get' must be upper-case" },
	{ "version: 1\nallow:\n  - host: a.test\n    methods: [\"GE T\"]\n", 4, 15,
	  "invalid method 'GE T'" },
	/* globs */
	{ "version: 1\nallow:\n  - host: a.test\n    paths: [\"/***\"]\n", 4, 13, "'***'" },
	{ "version: 1\nallow:\n  - host: a.test\n    paths: [\"/a/**b\"]\n", 4, 13,
	  "'**' must be a whole segment" },
	{ "version: 1\nallow:\n  - host: a.test\n    paths: [\"/a**\"]\n", 4, 13,
	  "'**' must be a whole segment" },
	{ "version: 1\nallow:\n  - host: a.test\n    paths: [a/b]\n", 4, 13,
	  "must start with '/'" },
	{ "version: 1\nallow:\n  - host: a.test\n    paths: [\"/a?b=1\"]\n", 4, 13, "'?'" },
	{ "version: 1\nallow:\n  - host: a.test\n    paths: [\"/a/../b\"]\n", 4, 13,
	  "dot segment" },
	{ "version: 1\nallow:\n  - host: a.test\n    paths: [\"/a//b\"]\n", 4, 13,
	  "empty path segment" },
	/* rule names */
	{ "version: 1\nallow:\n  - host: a.test\n    name: x\n  - host: b.test\n    name: x\n", 6, 11,
	  "duplicate rule name 'x' (first at line 4)" },
	{ "version: 1\nallow:\n  - host: a.test\n    name: x\npassthrough:\n  - host: b.test\n"
	  "    name: x\n", 7, 11, "duplicate rule name 'x'" },
	{ "version: 1\nallow:\n  - host: a.test\n    name: \"a b\"\n", 4, 11, "invalid rule name" },
	/* YAML features that are refused */
	{ "version: 1\nallow: &a []\n", 2, 8, "anchors and aliases are not allowed" },
	{ "version: 1\nallow: *a\n", 2, 8, "anchors and aliases are not allowed" },
	{ "version: !!int 1\n", 1, 10, "tags are not allowed" },
	{ "version: 1\nallow: !!seq []\n", 2, 8, "tags are not allowed" },
	{ "%TAG !e! tag:example.com,2000:\n---\nversion: 1\n", 1, 1, "%TAG directives" },
	{ "version: \"1\\0\"\n", 1, 10, "NUL characters" },
	/* malformed YAML */
	{ "version: 1\nallow: [a, b\n", 3, 1, "did not find expected ',' or ']'" },
	{ "version: 1\n  bad: indent\n", 2, 6, "mapping values are not allowed" },
	{ "version: 1\nallow: \"open\n", 3, 1, "found unexpected end of stream" },
	{ "version: 1\n\tallow: []\n", 2, 1, "found a tab character" },
	/* limits */
	{ "version: 1\nlimits:\n  max_header_bytes: 1023\n", 3, 21,
	  "'max_header_bytes' must be an integer from 1024 to 1048576, got '1023'" },
	{ "version: 1\nlimits:\n  body_buffer_bytes: 16777217\n", 3, 22, "from 4096 to 16777216" },
	{ "version: 1\nlimits:\n  max_connections: 0\n", 3, 20, "from 1 to 65536" },
	{ "version: 1\nlimits:\n  idle_timeout_s: 86401\n", 3, 19, "from 1 to 86400" },
	{ "version: 1\nlimits:\n  request_timeout_s: 1.5\n", 3, 22, "got '1.5'" },
	/* upstream_ca, dns, network */
	{ "version: 1\nupstream_ca: /nonexistent/ca.pem\n", 2, 14, "cannot be opened" },
	{ "version: 1\nupstream_ca: ca.pem\n", 2, 14, "must be an absolute path" },
	{ "version: 1\nupstream_ca: /etc\n", 2, 14, "not a regular file" },
	{ "version: 1\ndns:\n  mode: block\n", 3, 9, "dns mode must be forward or allowlist" },
	{ "version: 1\ndns:\n  resolver: dns.google\n", 3, 13, "invalid dns resolver" },
	{ "version: 1\ndns:\n  resolver: 1.2.3.4:0\n", 3, 13, "invalid dns resolver" },
	{ "version: 1\nnetwork:\n  deny: [10.0.0.1/8]\n", 3, 10, "host bits are set" },
	{ "version: 1\nnetwork:\n  deny: [10.0.0.0/33]\n", 3, 10, "prefix length out of range" },
	{ "version: 1\nnetwork:\n  deny: [example.com]\n", 3, 10, "invalid CIDR" },
	{ "version: 1\nnetwork:\n  allow: [169.254.0.0/16]\n", 3, 11,
	  "overlaps the metadata range 169.254.0.0/16" },
	{ "version: 1\nnetwork:\n  allow: [169.254.169.254]\n", 3, 11, "metadata" },
	{ "version: 1\nnetwork:\n  allow: [0.0.0.0/0]\n", 3, 11, "metadata" },
	{ "version: 1\nnetwork:\n  allow: [\"::ffff:169.254.169.254\"]\n", 3, 11, "metadata" },
	{ "version: 1\nnetwork:\n  allow: [\"fd00:ec2::254\"]\n", 3, 11, "fd00:ec2::/32" },
	{ "version: 1\nnetwork:\n  allow: [\"::/0\"]\n", 3, 11, "metadata" },
	{ "version: 1\nnetwork:\n  udp2: []\n", 3, 3,
	  "unknown key 'udp2' in 'network'; valid keys: deny, allow, udp" },
	/* network.udp: structure */
	{ "version: 1\nnetwork:\n  udp: {to: 10.0.0.1}\n", 3, 8,
	  "'network.udp' must be a sequence, got a mapping" },
	{ "version: 1\nnetwork:\n  udp:\n    - 10.0.0.1\n", 4, 7,
	  "network.udp[0] must be a mapping, got a scalar" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: 10.0.0.1\n      port: [1]\n", 5, 7,
	  "unknown key 'port' in network.udp[0]; valid keys: name, to, ports" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: 10.0.0.1\n      ports: [1]\n"
	  "      to: 10.0.0.2\n", 6, 7, "duplicate key 'to' in network.udp[0] (first at line 4)" },
	{ "version: 1\nnetwork:\n  udp:\n    - ports: [123]\n", 4, 7,
	  "network.udp[0] has no 'to'" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: 10.0.0.1\n", 4, 7,
	  "network.udp[0] has no 'ports'" },
	{ "version: 1\nnetwork:\n  udp:\n    - {to: 10.0.0.1, ports: [1]}\n    - {ports: [1]}\n",
	  5, 7, "network.udp[1] has no 'to'" },
	/* network.udp: to */
	{ "version: 1\nnetwork:\n  udp:\n    - to: example.com\n      ports: [1]\n", 4, 11,
	  "invalid CIDR 'example.com': not an address or CIDR" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: 10.0.0.1/8\n      ports: [1]\n", 4, 11,
	  "invalid CIDR '10.0.0.1/8': host bits are set after the prefix" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: \"2001:db8::/129\"\n      ports: [1]\n", 4, 11,
	  "prefix length out of range" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: [10.0.0.1]\n      ports: [1]\n", 4, 11,
	  "'to' must be a scalar, got a sequence" },
	{ "version: 1\nnetwork:\n  udp:\n    - to:\n      ports: [1]\n", 4, 10,
	  "'to' must be a scalar, got nothing (null)" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: 169.254.169.254\n      ports: [123]\n", 4, 11,
	  "network.udp 'to: 169.254.169.254' overlaps the metadata range 169.254.0.0/16; "
	  "metadata addresses can never be allowed" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: \"::ffff:169.254.169.254\"\n      ports: [1]\n",
	  4, 11, "network.udp 'to: ::ffff:169.254.169.254' overlaps the metadata range "
	  "169.254.0.0/16" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: \"::ffff:a9fe:0/112\"\n      ports: [1]\n",
	  4, 11, "overlaps the metadata range 169.254.0.0/16" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: fd00:ec2::254\n      ports: [1]\n", 4, 11,
	  "network.udp 'to: fd00:ec2::254' overlaps the metadata range fd00:ec2::/32" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: fe80::1\n      ports: [1]\n", 4, 11,
	  "overlaps the metadata range fe80::/10" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: 100.100.100.200\n      ports: [1]\n", 4, 11,
	  "overlaps the metadata range 100.100.100.200/32" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: 168.63.0.0/16\n      ports: [1]\n", 4, 11,
	  "overlaps the metadata range 168.63.129.16/32" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: \"64:ff9b::a9fe:a9fe\"\n      ports: [1]\n",
	  4, 11, "overlaps the metadata range 64:ff9b::a9fe:0/112" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: 0.0.0.0/0\n      ports: [1]\n", 4, 11,
	  "network.udp 'to: 0.0.0.0/0' overlaps the metadata range 169.254.0.0/16" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: \"::/0\"\n      ports: [1]\n", 4, 11,
	  "network.udp 'to: ::/0' overlaps the metadata range 169.254.0.0/16" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: \"::fffe:0:0/95\"\n      ports: [1]\n", 4, 11,
	  "overlaps the metadata range 169.254.0.0/16" },
	/* network.udp: ports */
	{ "version: 1\nnetwork:\n  udp:\n    - to: 10.0.0.1\n      ports: []\n", 5, 14,
	  "'ports' must not be empty" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: 10.0.0.1\n      ports: 123\n", 5, 14,
	  "'ports' must be a sequence, got a scalar" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: 10.0.0.1\n      ports: [0]\n", 5, 15,
	  "a udp port must be an integer from 1 to 65535 or a string \"lo-hi\" with "
	  "1 <= lo <= hi <= 65535, got '0'" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: 10.0.0.1\n      ports: [123, 65536]\n", 5, 20,
	  "got '65536'" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: 10.0.0.1\n      ports: [-1]\n", 5, 15,
	  "got '-1'" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: 10.0.0.1\n      ports: [ntp]\n", 5, 15,
	  "got 'ntp'" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: 10.0.0.1\n      ports: [1.5]\n", 5, 15,
	  "got '1.5'" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: 10.0.0.1\n      ports: [\"200-100\"]\n", 5, 15,
	  "got '200-100'" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: 10.0.0.1\n      ports: [\"100-\"]\n", 5, 15,
	  "got '100-'" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: 10.0.0.1\n      ports: [\"0-100\"]\n", 5, 15,
	  "got '0-100'" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: 10.0.0.1\n      ports: [\"100-65536\"]\n", 5, 15,
	  "got '100-65536'" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: 10.0.0.1\n      ports: [\"1-2-3\"]\n", 5, 15,
	  "got '1-2-3'" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: 10.0.0.1\n      ports: [\"100 - 200\"]\n", 5, 15,
	  "got '100 - 200'" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: 10.0.0.1\n      ports: [\"\"]\n", 5, 15,
	  "got ''" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: 10.0.0.1\n      ports: [[1, 2]]\n", 5, 15,
	  "a udp port must be a scalar, got a sequence" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: 10.0.0.1\n      ports: [53]\n", 5, 15,
	  "port 53 is DNS: sandbox DNS always goes to sluiced's DNS listener" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: 10.0.0.1\n      ports: [123, \"1-100\"]\n", 5,
	  20, "port 53 is DNS: sandbox DNS always goes to sluiced's DNS listener" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: 10.0.0.1\n      ports: [53-53]\n", 5, 15,
	  "port 53 is DNS" },
	{ "version: 1\nnetwork:\n  udp:\n    - to: 10.0.0.1\n      ports: [\"53\"]\n", 5, 15,
	  "port 53 is DNS" },
	/* network.udp: names */
	{ "version: 1\nnetwork:\n  udp:\n    - name: \"a b\"\n      to: 10.0.0.1\n"
	  "      ports: [1]\n", 4, 13, "invalid rule name 'a b': 1 to 64 of [A-Za-z0-9_.-]" },
	{ "version: 1\nnetwork:\n  udp:\n    - name: \"\"\n      to: 10.0.0.1\n      ports: [1]\n",
	  4, 13, "invalid rule name ''" },
	{ "version: 1\nnetwork:\n  udp:\n    - name: "
	  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n"
	  "      to: 10.0.0.1\n      ports: [1]\n", 4, 13, "invalid rule name" },
	{ "version: 1\nnetwork:\n  udp:\n    - name: \"udp[1]\"\n      to: 10.0.0.1\n"
	  "      ports: [1]\n", 4, 13, "invalid rule name 'udp[1]'" },
	{ "version: 1\nnetwork:\n  udp:\n    - name: ntp\n      to: 10.0.0.1\n      ports: [123]\n"
	  "    - name: ntp\n      to: 10.0.0.2\n      ports: [123]\n", 7, 13,
	  "duplicate rule name 'ntp' (first at line 4)" },
	{ "version: 1\nallow:\n  - {name: ntp, host: a.test}\nnetwork:\n  udp:\n"
	  "    - name: ntp\n      to: 10.0.0.1\n      ports: [123]\n", 6, 13,
	  "duplicate rule name 'ntp' (first at line 3)" },
	{ "version: 1\npassthrough:\n  - {name: ntp, host: a.test}\nnetwork:\n  udp:\n"
	  "    - name: ntp\n      to: 10.0.0.1\n      ports: [123]\n", 6, 13,
	  "duplicate rule name 'ntp' (first at line 3)" },
	/* secrets */
	{ "version: 1\nsecrets:\n  - name: a\n", 3, 5, "secrets[0] has no 'placeholder'" },
	{ "version: 1\nsecrets:\n  - name: a\n    placeholder: SHORT\n    source: env:X\n"
	  "    hosts: [a.test]\n    in: {any_header: true}\n", 4, 18, "invalid placeholder 'SHORT'" },
	{ "version: 1\nsecrets:\n  - name: a\n    placeholder: PLACEHOLDER_A\n    source: X\n"
	  "    hosts: [a.test]\n    in: {any_header: true}\n", 5, 13,
	  "use env:NAME or file:/absolute/path" },
	{ "version: 1\nsecrets:\n  - name: a\n    placeholder: PLACEHOLDER_A\n"
	  "    source: file:rel/path\n    hosts: [a.test]\n    in: {any_header: true}\n", 5, 13,
	  "absolute path" },
	{ "version: 1\nsecrets:\n  - name: a\n    placeholder: PLACEHOLDER_A\n"
	  "    source: env:1X\n    hosts: [a.test]\n    in: {any_header: true}\n", 5, 13,
	  "needs a variable name" },
	{ "version: 1\nsecrets:\n  - name: a\n    placeholder: PLACEHOLDER_A\n    source: env:X\n"
	  "    hosts: []\n    in: {any_header: true}\n", 6, 12, "'hosts' must not be empty" },
	{ "version: 1\nsecrets:\n  - name: a\n    placeholder: PLACEHOLDER_A\n    source: env:X\n"
	  "    hosts: [a.test]\n    in: {any_header: false}\n", 7, 9,
	  "'in' names no place to look" },
	{ "version: 1\nsecrets:\n  - name: a\n    placeholder: PLACEHOLDER_A\n    source: env:X\n"
	  "    hosts: [a.test]\n    in: {basic_auth: [pass]}\n", 7, 23,
	  "basic_auth items are 'user' and 'password'" },
	{ "version: 1\nsecrets:\n  - name: a\n    placeholder: PLACEHOLDER_A\n    source: env:X\n"
	  "    hosts: [a.test]\n    in: {headers: [\"Bad Header\"]}\n", 7, 20,
	  "invalid header name 'Bad Header'" },
	{ "version: 1\nsecrets:\n  - name: a\n    placeholder: PLACEHOLDER_A\n    source: env:X\n"
	  "    hosts: [a.test]\n    in: {body: {max_bytes: 10}}\n", 7, 16, "needs 'content_types'" },
	{ "version: 1\nsecrets:\n  - name: a\n    placeholder: PLACEHOLDER_A\n    source: env:X\n"
	  "    hosts: [a.test]\n    in: {body: {content_types: [json]}}\n", 7, 33,
	  "invalid content type 'json'" },
	{ "version: 1\nsecrets:\n  - name: a\n    placeholder: PLACEHOLDER_A\n    source: env:X\n"
	  "    hosts: [a.test]\n    in: {any_header: yes}\n", 7, 22, "must be true or false" },
	{ "version: 1\nsecrets:\n  - name: a\n    placeholder: PLACEHOLDER_A\n    source: env:X\n"
	  "    hosts: [a.test]\n    in: {any_header: true}\n"
	  "  - name: a\n    placeholder: PLACEHOLDER_B\n    source: env:X\n"
	  "    hosts: [a.test]\n    in: {any_header: true}\n", 8, 11,
	  "duplicate secret name 'a' (first at line 3)" },
	/* placeholders that overlap */
	{ "version: 1\nsecrets:\n  - name: a\n    placeholder: PLACEHOLDER_A\n    source: env:X\n"
	  "    hosts: [a.test]\n    in: {any_header: true}\n"
	  "  - name: b\n    placeholder: PLACEHOLDER_A\n    source: env:X\n"
	  "    hosts: [a.test]\n    in: {any_header: true}\n", 9, 18,
	  "secret 'b' has the same placeholder as secret 'a' (line 4)" },
	{ "version: 1\nsecrets:\n  - name: a\n    placeholder: PLACEHOLDER_A\n    source: env:X\n"
	  "    hosts: [a.test]\n    in: {any_header: true}\n"
	  "  - name: b\n    placeholder: PLACEHOLDER_A_2\n    source: env:X\n"
	  "    hosts: [a.test]\n    in: {any_header: true}\n", 9, 18,
	  "placeholder of secret 'b' contains the placeholder of secret 'a' (line 4)" },
	{ "version: 1\nsecrets:\n  - name: a\n    placeholder: XX_PLACEHOLDER_A_YY\n"
	  "    source: env:X\n    hosts: [a.test]\n    in: {any_header: true}\n"
	  "  - name: b\n    placeholder: PLACEHOLDER_A\n    source: env:X\n"
	  "    hosts: [a.test]\n    in: {any_header: true}\n", 9, 18,
	  "placeholder of secret 'b' is contained in the placeholder of secret 'a'" },
};

Test(policy, hostile_table)
{
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++)
		load_err(bad_cases[i].yaml, bad_cases[i].line, bad_cases[i].col, bad_cases[i].msg);
}

Test(policy, non_utf8)
{
	/* an invalid UTF-8 byte on line 3 column 9 */
	load_err("version: 1\nallow:\n  - host\xff: a.test\n", 3, 9, "the file must be UTF-8");
	/* a truncated sequence at the end of the file */
	load_err("version: 1\n# caf\xc3", 2, 6, "UTF-8");
	/* a control character */
	load_err("version: 1\nallow: [\x01]\n", 2, 9, "control characters are not allowed");
	/* a raw NUL byte */
	load_err_len("version: 1\n\0", 12, -EINVAL, 2, 1, "control characters are not allowed");
}

/* 16-byte address buffers for pol_udp_match() (four live at a time) */
static const unsigned char *v4(unsigned char a, unsigned char b, unsigned char c, unsigned char d)
{
	static unsigned char buf[4][16];
	static unsigned k;
	unsigned char *r = buf[k++ % 4];

	memset(r, 0, 16);
	r[0] = a;
	r[1] = b;
	r[2] = c;
	r[3] = d;
	return r;
}

static const unsigned char *v6(const char *s)
{
	static unsigned char buf[4][16];
	static unsigned k;
	unsigned char *r = buf[k++ % 4];

	cr_assert_eq(inet_pton(AF_INET6, s, r), 1, "%s", s);
	return r;
}

Test(policy, count_limits)
{
	size_t cap = 1024 * 1024, n = 0;
	char *buf = malloc(cap);

	cr_assert_not_null(buf);
	/* 10001 allow rules in flow style fit in 1 MiB */
	n += (size_t)snprintf(buf + n, cap - n, "version: 1\nallow:\n");
	for (int i = 0; i <= POL_RULES_MAX; i++)
		n += (size_t)snprintf(buf + n, cap - n, "- {host: h%d.t}\n", i);
	load_err_len(buf, n, -EINVAL, 3 + POL_RULES_MAX, 3, "'allow' has more than 10000 items");
	/* exactly 10000 are fine */
	n = (size_t)snprintf(buf, cap, "version: 1\nallow:\n");
	for (int i = 0; i < POL_RULES_MAX; i++)
		n += (size_t)snprintf(buf + n, cap - n, "- {host: h%d.t}\n", i);
	{
		struct pol *p = NULL;
		struct pol_error e;

		cr_assert_eq(pol_load_buffer("t.yaml", buf, n, &p, &e), 0, "%s", e.msg);
		cr_expect_eq(pol_nallow(p), POL_RULES_MAX);
		cr_expect_eq(pol_match_conn(p, "h9999.t", 443, NULL), POL_ALLOW);
		cr_expect_eq(pol_match_conn(p, "h10000.t", 443, NULL), POL_DENY);
		pol_unref(p);
	}
	/* 1001 CIDRs */
	n = (size_t)snprintf(buf, cap, "version: 1\nnetwork:\n deny:\n");
	for (int i = 0; i <= POL_CIDRS_MAX; i++)
		n += (size_t)snprintf(buf + n, cap - n, " - 10.%d.%d.0/24\n", i / 256, i % 256);
	load_err_len(buf, n, -EINVAL, 4 + POL_CIDRS_MAX, 4, "more than 1000 items");
	/* 257 udp rules; 256 are fine */
	n = (size_t)snprintf(buf, cap, "version: 1\nnetwork:\n udp:\n");
	for (int i = 0; i <= POL_UDP_RULES_MAX; i++)
		n += (size_t)snprintf(buf + n, cap - n, " - {to: 10.0.%d.%d, ports: [1]}\n",
				      i / 256, i % 256);
	load_err_len(buf, n, -EINVAL, 4 + POL_UDP_RULES_MAX, 4,
		     "'network.udp' has more than 256 items");
	n = (size_t)snprintf(buf, cap, "version: 1\nnetwork:\n udp:\n");
	for (int i = 0; i < POL_UDP_RULES_MAX; i++)
		n += (size_t)snprintf(buf + n, cap - n, " - {to: 10.0.%d.%d, ports: [1]}\n",
				      i / 256, i % 256);
	{
		struct pol *p = NULL;
		struct pol_error e;

		cr_assert_eq(pol_load_buffer("t.yaml", buf, n, &p, &e), 0, "%s", e.msg);
		cr_expect_eq(pol_net_udp_count(p), POL_UDP_RULES_MAX);
		cr_expect_str_eq(pol_net_udp_at(p, 255)->name, "udp[255]");
		cr_expect_eq(pol_udp_match(p, AF_INET, v4(10, 0, 0, 255), 1),
			     pol_net_udp_at(p, 255));
		cr_expect_null(pol_udp_match(p, AF_INET, v4(10, 0, 1, 0), 1));
		pol_unref(p);
	}
	/* 9 ports in a udp rule; 8 are fine */
	load_err("version: 1\nnetwork:\n  udp:\n    - to: 10.0.0.1\n"
		 "      ports: [1, 2, 3, 4, 5, 6, 7, 8, 9]\n", 5, 39,
		 "'ports' has more than 8 items");
	{
		struct pol *p = load_ok("version: 1\nnetwork:\n  udp:\n    - to: 10.0.0.1\n"
					"      ports: [1, 2, 3, 4, 5, 6, 7, \"54-65535\"]\n");

		cr_expect_eq(pol_net_udp_at(p, 0)->nports, POL_UDP_PORTS_MAX);
		pol_unref(p);
	}
	/* 65 secrets */
	n = (size_t)snprintf(buf, cap, "version: 1\nsecrets:\n");
	for (int i = 0; i <= POL_SECRETS_MAX; i++)
		n += (size_t)snprintf(buf + n, cap - n,
				      "- {name: s%d, placeholder: PH_%05d_X, source: env:NOPE_%d, "
				      "hosts: [a.test], in: {any_header: true}}\n", i, i, i);
	load_err_len(buf, n, -EINVAL, 3 + POL_SECRETS_MAX, 3, "more than 64 items");
	free(buf);
}

/* ---- network.udp ---- */

static const char udp_yaml[] =
	"version: 1\n"
	"allow:\n"
	"  - name: web\n"
	"    host: a.test\n"
	"network:\n"
	"  allow: [\"10.0.0.0/8\"]\n"
	"  udp:\n"
	"    - name: ntp\n"
	"      to: 10.1.2.3\n"
	"      ports: [123]\n"
	"    - to: 2001:db8::/64\n"
	"      ports: [\"60000-61000\", 4433]\n"
	"    - to: \"::ffff:192.0.2.0/120\"\n"
	"      ports: [\"5000-5000\", \"7000\"]\n"
	"    - name: wide.v4_-1\n"
	"      to: 10.0.0.0/8\n"
	"      ports: [1-52, 54-65535]\n"
	"    - {to: 198.51.100.128/25, ports: [9]}\n"
	"    - {to: \"2001:db8:1:8::/61\", ports: [9]}\n";

Test(policy, udp_rules)
{
	struct pol *p = load_ok(udp_yaml);
	const struct pol_udp_rule *r;
	unsigned char want[16] = { 0 };

	cr_expect_eq(pol_nallow(p), 1);
	cr_expect_eq(pol_net_allow_count(p), 1);
	cr_assert_eq(pol_net_udp_count(p), 6);
	cr_expect_null(pol_net_udp_at(p, 6));

	r = pol_net_udp_at(p, 0);
	cr_expect_str_eq(r->name, "ntp");
	cr_expect_eq(r->to.family, AF_INET);
	cr_expect_eq(r->to.prefix, 32);
	cr_expect_eq(memcmp(r->to.addr, (unsigned char[4]){ 10, 1, 2, 3 }, 4), 0);
	cr_assert_eq(r->nports, 1);
	cr_expect(r->ports[0].lo == 123 && r->ports[0].hi == 123);

	r = pol_net_udp_at(p, 1);
	cr_expect_str_eq(r->name, "udp[1]");
	cr_expect_eq(r->to.family, AF_INET6);
	cr_expect_eq(r->to.prefix, 64);
	inet_pton(AF_INET6, "2001:db8::", want);
	cr_expect_eq(memcmp(r->to.addr, want, 16), 0);
	cr_assert_eq(r->nports, 2);
	cr_expect(r->ports[0].lo == 60000 && r->ports[0].hi == 61000);
	cr_expect(r->ports[1].lo == 4433 && r->ports[1].hi == 4433);

	/* an IPv4-mapped `to` is stored as IPv4 */
	r = pol_net_udp_at(p, 2);
	cr_expect_str_eq(r->name, "udp[2]");
	cr_expect_eq(r->to.family, AF_INET);
	cr_expect_eq(r->to.prefix, 24);
	memset(want, 0, sizeof(want));
	memcpy(want, (unsigned char[4]){ 192, 0, 2, 0 }, 4);
	cr_expect_eq(memcmp(r->to.addr, want, 16), 0);
	cr_assert_eq(r->nports, 2);
	cr_expect(r->ports[0].lo == 5000 && r->ports[0].hi == 5000);
	cr_expect(r->ports[1].lo == 7000 && r->ports[1].hi == 7000);

	r = pol_net_udp_at(p, 3);
	cr_expect_str_eq(r->name, "wide.v4_-1");
	cr_expect_eq(r->to.prefix, 8);
	cr_assert_eq(r->nports, 2);
	cr_expect(r->ports[0].lo == 1 && r->ports[0].hi == 52);
	cr_expect(r->ports[1].lo == 54 && r->ports[1].hi == 65535);

	cr_expect_str_eq(pol_net_udp_at(p, 4)->name, "udp[4]");
	cr_expect_str_eq(pol_net_udp_at(p, 5)->name, "udp[5]");
	pol_unref(p);

	/* a 64-byte name is the longest; udp without allow/deny */
	p = load_ok("version: 1\nnetwork:\n  udp:\n    - name: "
		    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n"
		    "      to: \"2001:db8::1\"\n      ports: [65535]\n");
	r = pol_net_udp_at(p, 0);
	cr_expect_eq(strlen(r->name), POL_UDP_NAME_MAX);
	cr_expect_eq(r->to.prefix, 128);
	cr_expect_eq(pol_net_allow_count(p), 0);
	pol_unref(p);
}

Test(policy, udp_match)
{
	struct pol *p = load_ok(udp_yaml);
	const struct pol_udp_rule *ntp, *r1, *r2, *wide, *r4, *r5;

	ntp = pol_net_udp_at(p, 0);
	r1 = pol_net_udp_at(p, 1);
	r2 = pol_net_udp_at(p, 2);
	wide = pol_net_udp_at(p, 3);
	r4 = pol_net_udp_at(p, 4);
	r5 = pol_net_udp_at(p, 5);

	/* hit; first match in file order (wide also allows 10.1.2.3:123) */
	cr_expect_eq(pol_udp_match(p, AF_INET, v4(10, 1, 2, 3), 123), ntp);
	/* ntp's port misses: the next rule in order that allows it */
	cr_expect_eq(pol_udp_match(p, AF_INET, v4(10, 1, 2, 3), 124), wide);
	cr_expect_eq(pol_udp_match(p, AF_INET, v4(10, 200, 0, 1), 123), wide);
	/* port miss on every rule */
	cr_expect_null(pol_udp_match(p, AF_INET, v4(10, 1, 2, 3), 53));
	cr_expect_null(pol_udp_match(p, AF_INET, v4(10, 1, 2, 3), 0));
	/* address miss */
	cr_expect_null(pol_udp_match(p, AF_INET, v4(11, 1, 2, 3), 123));
	/* a v4-mapped query matches the v4 rule */
	cr_expect_eq(pol_udp_match(p, AF_INET6, v6("::ffff:10.1.2.3"), 123), ntp);
	cr_expect_eq(pol_udp_match(p, AF_INET6, v6("::ffff:10.1.2.3"), 9999), wide);
	cr_expect_null(pol_udp_match(p, AF_INET6, v6("::ffff:11.1.2.3"), 123));
	/* not v4-mapped: ::10.1.2.3 (v4-compatible) and NAT64 are other addresses */
	cr_expect_null(pol_udp_match(p, AF_INET6, v6("::10.1.2.3"), 123));
	cr_expect_null(pol_udp_match(p, AF_INET6, v6("64:ff9b::10.1.2.3"), 123));
	/* a rule written v4-mapped matches both spellings */
	cr_expect_eq(pol_udp_match(p, AF_INET, v4(192, 0, 2, 77), 5000), r2);
	cr_expect_eq(pol_udp_match(p, AF_INET6, v6("::ffff:192.0.2.77"), 7000), r2);
	cr_expect_null(pol_udp_match(p, AF_INET, v4(192, 0, 2, 77), 5001));
	cr_expect_null(pol_udp_match(p, AF_INET, v4(192, 0, 3, 1), 5000));
	/* v6 ranges, both ends */
	cr_expect_eq(pol_udp_match(p, AF_INET6, v6("2001:db8::1"), 60000), r1);
	cr_expect_eq(pol_udp_match(p, AF_INET6, v6("2001:db8::ffff:ffff:ffff:ffff"), 61000), r1);
	cr_expect_eq(pol_udp_match(p, AF_INET6, v6("2001:db8::1"), 4433), r1);
	cr_expect_null(pol_udp_match(p, AF_INET6, v6("2001:db8::1"), 59999));
	cr_expect_null(pol_udp_match(p, AF_INET6, v6("2001:db8::1"), 61001));
	cr_expect_null(pol_udp_match(p, AF_INET6, v6("2001:db8:0:1::1"), 60000));
	/* the v4 address whose bytes are 20 01 0d b8 is not 2001:db8:: */
	cr_expect_null(pol_udp_match(p, AF_INET, v4(0x20, 0x01, 0x0d, 0xb8), 60000));
	/* prefixes that are not byte-aligned */
	cr_expect_eq(pol_udp_match(p, AF_INET, v4(198, 51, 100, 128), 9), r4);
	cr_expect_eq(pol_udp_match(p, AF_INET, v4(198, 51, 100, 255), 9), r4);
	cr_expect_null(pol_udp_match(p, AF_INET, v4(198, 51, 100, 127), 9));
	cr_expect_eq(pol_udp_match(p, AF_INET6, v6("2001:db8:1:8::1"), 9), r5);
	cr_expect_eq(pol_udp_match(p, AF_INET6, v6("2001:db8:1:f:ffff::"), 9), r5);
	cr_expect_null(pol_udp_match(p, AF_INET6, v6("2001:db8:1:7::1"), 9));
	cr_expect_null(pol_udp_match(p, AF_INET6, v6("2001:db8:1:10::1"), 9));
	/* nonsense arguments */
	cr_expect_null(pol_udp_match(p, AF_UNIX, v4(10, 1, 2, 3), 123));
	cr_expect_null(pol_udp_match(p, AF_INET, NULL, 123));
	pol_unref(p);
}

/* ---- size, depth, bombs: each refused in well under a second ---- */

Test(policy, ten_megabytes)
{
	size_t len = 10 * 1024 * 1024;
	char *buf = malloc(len), path[128];
	struct pol_error e;
	struct pol *p = NULL;
	double t0 = now_s();

	cr_assert_not_null(buf);
	memset(buf, '#', len);
	load_err_len(buf, len, -EFBIG, 1, 1, "policy file is 10485760 bytes; the limit is 1048576");
	mk_tmpdir();
	snprintf(path, sizeof(path), "%s/big.yaml", tmpdir);
	write_file(path, buf, len);
	cr_expect_eq(pol_load_file(path, &p, &e), -EFBIG);
	cr_expect_str_eq(e.msg, "policy file is 10485760 bytes; the limit is 1048576");
	cr_expect_eq(e.line, 1);
	cr_expect_str_eq(e.file, path);
	cr_expect_null(p);
	/* exactly at the limit is parsed (and here it is only a comment) */
	cr_expect_eq(pol_load_buffer("t.yaml", buf, POL_FILE_MAX, &p, &e), -EINVAL);
	cr_expect(strstr(e.msg, "empty policy"), "%s", e.msg);
	cr_expect_lt(now_s() - t0, 1.0);
	free(buf);
	rm_tmpdir();
}

Test(policy, deep_nesting)
{
	size_t depth = 10000, n = 0;
	char *buf = malloc(2 * depth + 32);
	double t0 = now_s();

	cr_assert_not_null(buf);
	n += (size_t)sprintf(buf, "version: 1\nx: ");
	for (size_t i = 0; i < depth; i++)
		buf[n++] = '[';
	for (size_t i = 0; i < depth; i++)
		buf[n++] = ']';
	buf[n++] = '\n';
	/* the root mapping is level 1, so the 16th '[' (column 19) is level 17 */
	load_err_len(buf, n, -EINVAL, 2, 19, "nesting deeper than 16 levels");
	/* block style: 30 nested mappings; level 17 starts on line 18 column 17 */
	n = (size_t)sprintf(buf, "version: 1\n");
	for (size_t i = 0; i < 30; i++) {
		memset(buf + n, ' ', i);
		n += i;
		n += (size_t)sprintf(buf + n, "k:\n");
	}
	load_err_len(buf, n, -EINVAL, 18, 17, "nesting deeper than 16 levels");
	cr_expect_lt(now_s() - t0, 1.0);
	free(buf);
}

Test(policy, billion_laughs)
{
	static const char bomb[] =
		"version: 1\n"
		"a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
		"b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
		"c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
		"d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
		"e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
		"f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
		"g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
		"h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"
		"i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n";
	double t0 = now_s();

	load_err(bomb, 2, 4, "anchors and aliases are not allowed (anchor '&a')");
	/* an alias alone, without its anchor */
	load_err("version: 1\nallow:\n  - *rule\n", 3, 5, "alias '*rule'");
	cr_expect_lt(now_s() - t0, 1.0);
}

/* ---- host normalisation and matching ---- */

Test(policy, normalize_host)
{
	static const struct {
		const char *in, *out;
	} ok[] = {
		{ "Example.COM", "example.com" },
		{ "example.com.", "example.com" },
		{ "bücher.example", "xn--bcher-kva.example" },
		{ "BÜCHER.example.", "xn--bcher-kva.example" },
		{ "xn--bcher-kva.example", "xn--bcher-kva.example" },
		{ "straße.de", "xn--strae-oqa.de" },  /* non-transitional: ß kept */
		{ "_dmarc.example.com", "_dmarc.example.com" },
		{ "10.0.0.1", "10.0.0.1" },
		{ "[2001:DB8::1]", "2001:db8::1" },
		{ "2001:db8:0:0::1", "2001:db8::1" },
		{ "localhost", "localhost" },
	};
	static const char *const bad[] = { "", ".", "a..b", ".a", "a b", "a/b", "a:b", "[::1",
					   "a\xff.test", "*.a.test", "xn--zz\xc3\xa9.test" };
	char out[300];

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		cr_expect_eq(pol_normalize_host(ok[i].in, strlen(ok[i].in), out, sizeof(out)), 0,
			     "%s", ok[i].in);
		cr_expect_str_eq(out, ok[i].out, "%s", ok[i].in);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_expect_eq(pol_normalize_host(bad[i], strlen(bad[i]), out, sizeof(out)), -EINVAL,
			     "'%s' accepted as '%s'", bad[i], out);
	memset(out, 'a', 64);
	out[64] = '\0';
	cr_expect_eq(pol_normalize_host(out, 64, out + 100, 100), -EINVAL); /* label > 63 */
	cr_expect_eq(pol_normalize_host("example.com", 11, out, 5), -ENAMETOOLONG);
	/* len is honoured: no NUL needed */
	cr_expect_eq(pol_normalize_host("a.test-garbage", 6, out, sizeof(out)), 0);
	cr_expect_str_eq(out, "a.test");
}

Test(policy, host_matching)
{
	static const char yaml[] =
		"version: 1\n"
		"allow:\n"
		"  - {name: exact, host: api.example.com}\n"
		"  - {name: one, host: \"*.one.test\"}\n"
		"  - {name: any, host: \"**.any.test\"}\n"
		"  - {name: idn, host: bücher.example}\n"
		"  - {name: v6, host: \"[2001:db8::1]\"}\n"
		"  - {name: v4, host: 192.0.2.1, ports: [8080]}\n"
		"  - {name: high, host: Upper.Example.COM., ports: [1, 65535]}\n";
	static const struct {
		const char *host;
		uint16_t port;
		const char *rule; /* NULL: denied */
	} t[] = {
		{ "api.example.com", 443, "exact" },
		{ "api.example.com", 80, "exact" },       /* default ports */
		{ "api.example.com", 8443, NULL },
		{ "API.EXAMPLE.COM", 443, "exact" },      /* case */
		{ "api.example.com.", 443, "exact" },     /* trailing dot */
		{ "x.api.example.com", 443, NULL },
		{ "example.com", 443, NULL },
		{ "a.one.test", 443, "one" },
		{ "one.test", 443, NULL },                /* '*' needs one label */
		{ "a.b.one.test", 443, NULL },            /* exactly one */
		{ "xone.test", 443, NULL },
		{ "a.any.test", 443, "any" },
		{ "a.b.c.any.test", 443, "any" },
		{ "any.test", 443, NULL },                /* '**' needs at least one */
		{ "aany.test", 443, NULL },
		{ "xn--bcher-kva.example", 443, "idn" },  /* punycode SNI vs Unicode rule */
		{ "bücher.example", 443, "idn" },
		{ "BÜCHER.example", 443, "idn" },
		{ "2001:db8::1", 443, "v6" },
		{ "[2001:db8:0::1]", 443, "v6" },
		{ "192.0.2.1", 8080, "v4" },
		{ "192.0.2.1", 443, NULL },
		{ "upper.example.com", 1, "high" },
		{ "upper.example.com", 65535, "high" },
		{ "upper.example.com", 443, NULL },
		{ "", 443, NULL },
		{ "bad host", 443, NULL },
	};
	struct pol *p = load_ok(yaml);

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		const struct pol_rule *r = NULL;
		enum pol_verdict v = pol_match_conn(p, t[i].host, t[i].port, &r);

		if (!t[i].rule) {
			cr_expect_eq(v, POL_DENY, "%s:%u allowed by %s", t[i].host, t[i].port,
				     r ? pol_rule_name(r) : "?");
			continue;
		}
		cr_expect_eq(v, POL_ALLOW, "%s:%u denied", t[i].host, t[i].port);
		if (v == POL_ALLOW)
			cr_expect_str_eq(pol_rule_name(r), t[i].rule, "%s:%u", t[i].host,
					 t[i].port);
	}
	cr_expect_eq(pol_match_conn(p, NULL, 443, NULL), POL_DENY);
	pol_unref(p);
}

Test(policy, first_rule_wins_and_passthrough_first)
{
	static const char yaml[] =
		"version: 1\n"
		"allow:\n"
		"  - {name: r0, host: \"**.example.com\", methods: [GET]}\n"
		"  - {name: r1, host: \"*.example.com\", methods: [GET, POST]}\n"
		"  - {name: r2, host: a.example.com}\n"
		"  - {name: r3, host: b.example.com, paths: [\"/x\"]}\n"
		"passthrough:\n"
		"  - {name: p0, host: video.example.com}\n";
	struct pol *p = load_ok(yaml);
	const struct pol_rule *r = NULL;
	const char *why = NULL;

	cr_expect_eq(pol_match_request(p, "a.example.com", 443, "GET", "/", 1, &r, &why),
		     POL_ALLOW);
	cr_expect_str_eq(pol_rule_name(r), "r0");
	cr_expect_eq(pol_match_request(p, "a.example.com", 443, "POST", "/", 1, &r, &why),
		     POL_ALLOW);
	cr_expect_str_eq(pol_rule_name(r), "r1");
	cr_expect_eq(pol_match_request(p, "a.example.com", 443, "PUT", "/", 1, &r, &why),
		     POL_ALLOW);
	cr_expect_str_eq(pol_rule_name(r), "r2");
	cr_expect_eq(pol_match_request(p, "b.example.com", 443, "PUT", "/y", 2, &r, &why),
		     POL_DENY);
	cr_expect_str_eq(why, "method not allowed by rule r0"); /* the first rule naming the host */
	cr_expect_eq(pol_match_request(p, "x.y.example.com", 443, "PUT", "/", 1, &r, &why),
		     POL_DENY);
	cr_expect_str_eq(why, "method not allowed by rule r0");
	cr_expect_eq(pol_match_conn(p, "video.example.com", 443, &r), POL_PASSTHROUGH);
	cr_expect_str_eq(pol_rule_name(r), "p0");
	cr_expect_eq(pol_match_conn(p, "video.example.com", 80, &r), POL_ALLOW);
	cr_expect_str_eq(pol_rule_name(r), "r0");
	/* requests never match passthrough rules */
	cr_expect_eq(pol_match_request(p, "video.example.com", 443, "GET", "/", 1, &r, &why),
		     POL_ALLOW);
	cr_expect_str_eq(pol_rule_name(r), "r0");
	pol_unref(p);
}

Test(policy, request_matching)
{
	static const char yaml[] =
		"version: 1\n"
		"allow:\n"
		"  - name: gh\n"
		"    host: api.github.com\n"
		"    ports: [443]\n"
		"    methods: [GET, POST]\n"
		"    paths: [\"/repos/**\", \"/user\", \"/orgs/*/repos\", \"/a/*.json\", \"/**/raw\","
		" \"/\", \"/x/**/y/**/z\"]\n";
	static const struct {
		const char *method, *path, *why; /* why NULL: allowed */
		uint16_t port;
	} t[] = {
		{ "GET", "/repos", NULL, 443 },          /* "**" matches zero segments */
		{ "GET", "/repos/", NULL, 443 },
		{ "GET", "/repos/o/r/issues/1", NULL, 443 },
		{ "POST", "/repos/o", NULL, 443 },
		{ "GET", "/reposx", "path not allowed by rule gh", 443 },
		{ "GET", "/user", NULL, 443 },
		{ "GET", "/user/", "path not allowed by rule gh", 443 },
		{ "GET", "/user/x", "path not allowed by rule gh", 443 },
		{ "GET", "/users", "path not allowed by rule gh", 443 },
		{ "GET", "/orgs/acme/repos", NULL, 443 },
		{ "GET", "/orgs//repos", "invalid path", 443 },
		{ "GET", "/orgs/a/b/repos", "path not allowed by rule gh", 443 },
		{ "GET", "/a/x.json", NULL, 443 },
		{ "GET", "/a/.json", NULL, 443 },
		{ "GET", "/a/x.jsonp", "path not allowed by rule gh", 443 },
		{ "GET", "/a/b/x.json", "path not allowed by rule gh", 443 },
		{ "GET", "/raw", NULL, 443 },
		{ "GET", "/q/w/e/raw", NULL, 443 },
		{ "GET", "/q/w/e/raw/", "path not allowed by rule gh", 443 },
		{ "GET", "/", NULL, 443 },
		{ "GET", "/x/y/z", NULL, 443 },
		{ "GET", "/x/1/2/y/3/z", NULL, 443 },
		{ "GET", "/x/y/y/z/z", NULL, 443 },
		{ "GET", "/x/z/y", "path not allowed by rule gh", 443 },
		{ "DELETE", "/user", "method not allowed by rule gh", 443 },
		{ "get", "/user", "method not allowed by rule gh", 443 },
		{ "GET", "/user", "port not allowed by rule gh", 80 },
		{ "GET", "/repos/../admin", "invalid path", 443 },
		{ "GET", "/repos/%2e%2e/admin", "invalid path", 443 },
		{ "GET", "/repos/a%20b", NULL, 443 },
	};
	struct pol *p = load_ok(yaml);

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		const struct pol_rule *r = NULL;
		const char *why = NULL;
		enum pol_verdict v = pol_match_request(p, "api.github.com", t[i].port, t[i].method,
						       t[i].path, strlen(t[i].path), &r, &why);

		if (!t[i].why) {
			cr_expect_eq(v, POL_ALLOW, "%s %s denied: %s", t[i].method, t[i].path,
				     why);
		} else {
			cr_expect_eq(v, POL_DENY, "%s %s allowed", t[i].method, t[i].path);
			if (v == POL_DENY)
				cr_expect_str_eq(why, t[i].why, "%s %s", t[i].method, t[i].path);
		}
	}
	{
		const char *why = NULL;

		cr_expect_eq(pol_match_request(p, "other.test", 443, "GET", "/", 1, NULL, &why),
			     POL_DENY);
		cr_expect_str_eq(why, "no rule allows host");
		cr_expect_eq(pol_match_request(p, "bad host", 443, "GET", "/", 1, NULL, &why),
			     POL_DENY);
		cr_expect_str_eq(why, "invalid host");
		/* path_len is honoured: "/user?x" cut at 5 */
		cr_expect_eq(pol_match_request(p, "api.github.com", 443, "GET", "/user?x", 5, NULL,
					       &why), POL_ALLOW);
	}
	pol_unref(p);
}

Test(policy, pathological_globs)
{
	static const char yaml[] =
		"version: 1\n"
		"allow:\n"
		"  - host: a.test\n"
		"    paths: [\"/**/**/**/**/x\", \"/**/a*a*a*a*a*a*a*a*b/**/c\","
		" \"/*a*a*a*a*a*a*a*a*a*a*a*a*b\"]\n";
	struct pol *p = load_ok(yaml);
	size_t segs = 1000, n = 0;
	char *path = malloc(segs * 40 + 16);
	double t0 = now_s();
	const char *why;

	cr_assert_not_null(path);
	for (size_t i = 0; i < segs; i++)
		n += (size_t)sprintf(path + n, "/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	/* no match: every strategy that backtracks exponentially would hang here */
	cr_expect_eq(pol_match_request(p, "a.test", 443, "GET", path, n, NULL, &why), POL_DENY);
	n += (size_t)sprintf(path + n, "/x");
	cr_expect_eq(pol_match_request(p, "a.test", 443, "GET", path, n, NULL, &why), POL_ALLOW);
	memset(path, 'a', 4000);
	path[0] = '/';
	cr_expect_eq(pol_match_request(p, "a.test", 443, "GET", path, 4000, NULL, &why), POL_DENY);
	cr_expect_lt(now_s() - t0, 1.0, "took %.3f s", now_s() - t0);
	free(path);
	pol_unref(p);
}

Test(policy, path_check)
{
	static const struct {
		const char *path;
		bool ok;
	} t[] = {
		{ "/", true },
		{ "/a/b/c", true },
		{ "/a/b/", true },
		{ "/a%20b", true },
		{ "/%41%42", true },
		{ "/a.b/c..d/...", true },
		{ "/.well-known/x", true },
		{ "/a/b.", true },
		{ "/%25", true },
		{ "/caf%C3%A9", true },
		{ "/a;b=c", true },
		{ "", false },
		{ "a/b", false },
		{ "*", false },
		{ "/a/../b", false },
		{ "/..", false },
		{ "/./a", false },
		{ "/a/.", false },
		{ "/%2e%2e/", false },
		{ "/%2E%2E/x", false },
		{ "/%2E./", false },
		{ "/.%2e", false },
		{ "/%2e", false },
		{ "/a/..;jsessionid=1/b", false },
		{ "/a%2fb", false },
		{ "/a%2Fb", false },
		{ "/a%5cb", false },
		{ "/a%5C..", false },
		{ "/a\\b", false },
		{ "/a//b", false },
		{ "//a", false },
		{ "/a%00b", false },
		{ "/a%0d%0a", false },
		{ "/a%", false },
		{ "/a%2", false },
		{ "/a%zz", false },
		{ "/%c0%ae%c0%ae/", false },
		{ "/a\tb", false },
		{ "/a\x7f", false },
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		const char *why = NULL;
		int rc = pol_path_check(t[i].path, strlen(t[i].path), &why);

		if (t[i].ok)
			cr_expect_eq(rc, 0, "'%s' refused: %s", t[i].path, why);
		else
			cr_expect(rc == -EINVAL && why && *why, "'%s' accepted", t[i].path);
	}
	{
		const char *why = NULL;

		cr_expect_eq(pol_path_check("/a\0b", 4, &why), -EINVAL);
		cr_expect_str_eq(why, "control character in path");
		cr_expect_eq(pol_path_check("/a/../b", 7, &why), -EINVAL);
		cr_expect_str_eq(why, "dot segment (\".\" or \"..\") in path");
		cr_expect_eq(pol_path_check("/a%2fb", 6, &why), -EINVAL);
		cr_expect_str_eq(why, "encoded slash or backslash in path");
		cr_expect_eq(pol_path_check("/a/../b", 2, NULL), 0); /* len honoured: "/a" */
	}
}

/* ---- secrets ---- */

static char *secret_yaml(const char *source)
{
	static char buf[1024];

	snprintf(buf, sizeof(buf),
		 "version: 1\n"
		 "secrets:\n"
		 "  - name: s\n"
		 "    placeholder: SLUICE_PLACEHOLDER_S\n"
		 "    source: %s\n"
		 "    hosts: [api.test]\n"
		 "    in: {headers: [Authorization]}\n", source);
	return buf;
}

Test(policy, secret_sources)
{
	const struct pol_secret *s;
	struct pol *p;
	char path[128], src[160];

	/* env set */
	setenv("SLUICE_POLICY_TEST_ENV", "real-env-value", 1);
	p = load_ok(secret_yaml("env:SLUICE_POLICY_TEST_ENV"));
	s = pol_secret_at(p, 0);
	cr_expect_eq(s->value_len, 14);
	cr_expect_eq(memcmp(s->value, "real-env-value", 14), 0);
	cr_expect_eq(pol_nwarnings(p), 0);
	pol_unref(p);

	/* env unset: compiles, unavailable, with a warning at the source */
	unsetenv("SLUICE_POLICY_TEST_ENV");
	p = load_ok(secret_yaml("env:SLUICE_POLICY_TEST_ENV"));
	s = pol_secret_at(p, 0);
	cr_expect_null(s->value);
	cr_expect_eq(s->value_len, 0);
	cr_expect_str_eq(s->unavailable_reason, "source env:SLUICE_POLICY_TEST_ENV is not set");
	cr_assert_eq(pol_nwarnings(p), 1);
	cr_expect_eq(pol_warning(p, 0)->line, 5);
	cr_expect_eq(pol_warning(p, 0)->col, 13);
	cr_expect_str_eq(pol_warning(p, 0)->file, "t.yaml");
	cr_expect_str_eq(pol_warning(p, 0)->msg,
			 "secret 's': source env:SLUICE_POLICY_TEST_ENV is not set");
	pol_unref(p);

	/* env empty */
	setenv("SLUICE_POLICY_TEST_ENV", "", 1);
	p = load_ok(secret_yaml("env:SLUICE_POLICY_TEST_ENV"));
	cr_expect_str_eq(pol_secret_at(p, 0)->unavailable_reason,
			 "source env:SLUICE_POLICY_TEST_ENV is empty");
	pol_unref(p);
	/* a value with a newline could split a header: unavailable */
	setenv("SLUICE_POLICY_TEST_ENV", "a\r\nX-Evil: 1", 1);
	p = load_ok(secret_yaml("env:SLUICE_POLICY_TEST_ENV"));
	cr_expect_null(pol_secret_at(p, 0)->value);
	cr_expect(strstr(pol_secret_at(p, 0)->unavailable_reason, "contains CR, LF or NUL"));
	pol_unref(p);
	unsetenv("SLUICE_POLICY_TEST_ENV");

	mk_tmpdir();
	/* file with one trailing newline: stripped (only one) */
	snprintf(path, sizeof(path), "%s/key", tmpdir);
	write_file(path, "file-value\n", 11);
	snprintf(src, sizeof(src), "file:%s", path);
	p = load_ok(secret_yaml(src));
	s = pol_secret_at(p, 0);
	cr_assert_not_null(s->value);
	cr_expect_eq(s->value_len, 10);
	cr_expect_eq(memcmp(s->value, "file-value", 10), 0);
	pol_unref(p);
	/* two trailing newlines: the second one stays, so the value is refused */
	write_file(path, "file-value\n\n", 12);
	p = load_ok(secret_yaml(src));
	cr_expect_null(pol_secret_at(p, 0)->value);
	pol_unref(p);
	/* no newline */
	write_file(path, "v", 1);
	p = load_ok(secret_yaml(src));
	cr_expect_eq(pol_secret_at(p, 0)->value_len, 1);
	pol_unref(p);
	/* empty file */
	write_file(path, "", 0);
	p = load_ok(secret_yaml(src));
	cr_expect(strstr(pol_secret_at(p, 0)->unavailable_reason, "is empty"));
	pol_unref(p);
	/* too large */
	{
		char *big = malloc(POL_SECRET_VALUE_MAX + 1);

		memset(big, 'x', POL_SECRET_VALUE_MAX + 1);
		write_file(path, big, POL_SECRET_VALUE_MAX + 1);
		p = load_ok(secret_yaml(src));
		cr_expect(strstr(pol_secret_at(p, 0)->unavailable_reason, "longer than 65536"));
		pol_unref(p);
		write_file(path, big, POL_SECRET_VALUE_MAX);
		p = load_ok(secret_yaml(src));
		cr_expect_eq(pol_secret_at(p, 0)->value_len, POL_SECRET_VALUE_MAX);
		pol_unref(p);
		free(big);
	}
	/* missing file */
	snprintf(src, sizeof(src), "file:%s/missing", tmpdir);
	p = load_ok(secret_yaml(src));
	s = pol_secret_at(p, 0);
	cr_expect_null(s->value);
	cr_expect(strstr(s->unavailable_reason, "cannot be opened (No such file or directory)"),
		  "%s", s->unavailable_reason);
	cr_expect_eq(pol_nwarnings(p), 1);
	pol_unref(p);
	/* unreadable: a directory (root reads mode-000 files, so use a directory) */
	snprintf(src, sizeof(src), "file:%s", tmpdir);
	p = load_ok(secret_yaml(src));
	cr_expect(strstr(pol_secret_at(p, 0)->unavailable_reason, "is not a regular file"));
	pol_unref(p);
	/* a FIFO must not hang the compile */
	snprintf(path, sizeof(path), "%s/fifo", tmpdir);
	cr_assert_eq(mkfifo(path, 0600), 0);
	snprintf(src, sizeof(src), "file:%s", path);
	p = load_ok(secret_yaml(src));
	cr_expect(strstr(pol_secret_at(p, 0)->unavailable_reason, "is not a regular file"));
	pol_unref(p);
	rm_tmpdir();
}

Test(policy, placeholders_distinct_ok)
{
	/* similar but not overlapping placeholders are fine */
	static const char yaml[] =
		"version: 1\nsecrets:\n"
		"  - {name: a, placeholder: PH_AAAA_1, source: env:X_UNSET_A, hosts: [a.test],"
		" in: {any_header: true}}\n"
		"  - {name: b, placeholder: PH_AAAA_2, source: env:X_UNSET_B, hosts: [a.test],"
		" in: {query: [k]}}\n";
	struct pol *p = load_ok(yaml);

	cr_expect_eq(pol_nsecrets(p), 2);
	cr_expect_eq(pol_nwarnings(p), 2);
	cr_expect_eq(pol_warning(p, 1)->line, 4);
	pol_unref(p);
}

static unsigned freed_count;
static bool freed_all_zero;

static void check_zero_hook(unsigned char *v, size_t n)
{
	freed_count++;
	for (size_t i = 0; i < n; i++)
		if (v[i])
			freed_all_zero = false;
	free(v);
}

Test(policy, refcount_and_zeroing)
{
	static const char yaml[] =
		"version: 1\nsecrets:\n"
		"  - {name: a, placeholder: PH_ZERO_A, source: env:SLUICE_ZERO_A, hosts: [a.test],"
		" in: {any_header: true}}\n"
		"  - {name: b, placeholder: PH_ZERO_B, source: env:SLUICE_ZERO_UNSET, hosts: [a.test],"
		" in: {any_header: true}}\n";
	struct pol *p, *p2;

	setenv("SLUICE_ZERO_A", "top-secret-value", 1);
	unsetenv("SLUICE_ZERO_UNSET");
	freed_count = 0;
	freed_all_zero = true;
	pol_test_secret_free_hook = check_zero_hook;
	p = load_ok(yaml);
	p2 = pol_ref(p);
	cr_expect_eq(p2, p);
	pol_unref(p);
	cr_expect_eq(freed_count, 0, "freed while a reference is held");
	cr_expect_eq(memcmp(pol_secret_at(p2, 0)->value, "top-secret-value", 16), 0);
	pol_unref(p2);
	cr_expect_eq(freed_count, 1); /* the one available value */
	cr_expect(freed_all_zero, "a secret value was freed without being zeroed");
	/* a compile that fails after reading a value zeroes it too */
	freed_count = 0;
	load_err("version: 1\nsecrets:\n"
		 "  - {name: a, placeholder: PH_ZERO_A, source: env:SLUICE_ZERO_A, hosts: [a.test],"
		 " in: {any_header: true}}\nlimits: {max_connections: 0}\n",
		 4, 27, "max_connections");
	cr_expect_eq(freed_count, 1);
	cr_expect(freed_all_zero);
	pol_test_secret_free_hook = NULL;
	unsetenv("SLUICE_ZERO_A");
}

Test(policy, concurrent_refs)
{
	/* many refs/unrefs balance out; the value is freed exactly once */
	struct pol *p;

	setenv("SLUICE_ZERO_A", "v", 1);
	freed_count = 0;
	freed_all_zero = true;
	pol_test_secret_free_hook = check_zero_hook;
	p = load_ok("version: 1\nsecrets:\n  - {name: a, placeholder: PH_ZERO_A, "
		    "source: env:SLUICE_ZERO_A, hosts: [a.test], in: {any_header: true}}\n");
	for (int i = 0; i < 1000; i++)
		pol_ref(p);
	for (int i = 0; i < 1000; i++)
		pol_unref(p);
	cr_expect_eq(freed_count, 0);
	pol_unref(p);
	cr_expect_eq(freed_count, 1);
	pol_test_secret_free_hook = NULL;
}

/* ---- files ---- */

Test(policy, load_file_errors)
{
	struct pol_error e;
	struct pol *p = NULL;
	char path[128];

	cr_expect_eq(pol_load_file("/nonexistent/policy.yaml", &p, &e), -ENOENT);
	cr_expect_eq(e.line, 0);
	cr_expect_str_eq(e.file, "/nonexistent/policy.yaml");
	cr_expect(strstr(e.msg, "No such file"));
	cr_expect_eq(pol_load_file("/tmp", &p, &e), -EISDIR);
	cr_expect_eq(pol_load_file("/dev/null", &p, &e), -ENOTSUP);
	mk_tmpdir();
	snprintf(path, sizeof(path), "%s/p.yaml", tmpdir);
	write_file(path, "version: 1\nallow:\n  - host: a.test\n    port: [1]\n", 48);
	cr_expect_eq(pol_load_file(path, &p, &e), -EINVAL);
	cr_expect_str_eq(e.file, path);
	cr_expect_eq(e.line, 4);
	cr_expect_eq(e.col, 5);
	write_file(path, "version: 1\n", 11);
	cr_assert_eq(pol_load_file(path, &p, &e), 0);
	cr_expect_str_eq(pol_source(p), path);
	/* sha256("version: 1\n") */
	cr_expect_str_eq(pol_hash(p), "sha256:09bfcc6a14b83e2192b8673677725c84883ee9cd0c70e45c9ec09daa8f2b2847");
	pol_unref(p);
	rm_tmpdir();
}

Test(policy, every_example_in_policy_dir)
{
	char dir[4096];
	const char *f = __FILE__, *cut = strstr(f, "tests/unit/");
	unsigned seen = 0;
	struct dirent *de;
	DIR *d;

	snprintf(dir, sizeof(dir), "%.*spolicy", cut ? (int)(cut - f) : 0, f);
	d = opendir(dir);
	cr_assert_not_null(d, "%s: %s", dir, strerror(errno));
	while ((de = readdir(d))) {
		size_t n = strlen(de->d_name);
		char path[8192];
		struct pol_error e;
		struct pol *p = NULL;

		if (n < 6 || strcmp(de->d_name + n - 5, ".yaml"))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		cr_expect_eq(pol_load_file(path, &p, &e), 0, "%s:%u:%u: %s", e.file, e.line, e.col,
			     e.msg);
		pol_unref(p);
		seen++;
	}
	closedir(d);
	cr_expect_geq(seen, 3, "only %u examples in %s", seen, dir);
}

Test(policy, demo_policy_semantics)
{
	char path[4096];
	const char *f = __FILE__, *cut = strstr(f, "tests/unit/");
	const struct pol_secret *s;
	struct pol_error e;
	struct pol *p = NULL;
	const char *why;

	snprintf(path, sizeof(path), "%.*spolicy/demo.yaml", cut ? (int)(cut - f) : 0, f);
	setenv("SLUICE_DEMO_TOKEN", "demo-real-token", 1);
	cr_assert_eq(pol_load_file(path, &p, &e), 0, "%s", e.msg);
	cr_assert_eq(pol_nsecrets(p), 1);
	s = pol_secret_at(p, 0);
	cr_expect_str_eq(s->name, "demo-token");
	cr_expect_str_eq(s->placeholder, "SLUICE_DEMO_TOKEN_PLACEHOLDER");
	cr_expect_eq(memcmp(s->value, "demo-real-token", 15), 0);
	cr_expect(pol_secret_host_ok(p, 0, "api.example.test"));
	cr_expect_not(pol_secret_host_ok(p, 0, "other.example.test"));
	cr_expect_eq(pol_match_request(p, "other.example.test", 443, "GET", "/", 1, NULL, &why),
		     POL_ALLOW);
	cr_expect_eq(pol_match_request(p, "api.example.test", 80, "POST", "/x", 2, NULL, &why),
		     POL_ALLOW);
	cr_expect_eq(s->nheaders, 2);
	cr_expect_eq(s->nquery, 1);
	cr_expect_eq(s->nbody_types, 1);
	cr_expect_not(s->allow_plaintext);
	pol_unref(p);
	unsetenv("SLUICE_DEMO_TOKEN");
}

Test(policy, long_rule_name_reasons)
{
	/* regression (fuzzer): deny reasons for a 64-byte rule name */
	static const char yaml[] =
		"version: 1\nallow:\n  - name: "
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n"
		"    host: a.test\n    methods: [GET]\n";
	struct pol *p = load_ok(yaml);
	const char *why = NULL;

	cr_expect_eq(pol_match_request(p, "a.test", 443, "PUT", "/", 1, NULL, &why), POL_DENY);
	cr_expect_str_eq(why, "method not allowed by rule "
			      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	pol_unref(p);
	load_err("version: 1\nallow:\n  - name: "
		 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n"
		 "    host: a.test\n", 3, 11, "invalid rule name");
}

/* ---- sluicectl policy check ---- */

static int run_check(const char *file, char *out, size_t outlen)
{
	const char *bin = getenv("SLUICECTL");
	char cmd[512];
	FILE *f;
	size_t n;
	int st;

	snprintf(cmd, sizeof(cmd), "%s policy check '%s' 2>&1", bin && *bin ? bin : "build/sluicectl",
		 file);
	f = popen(cmd, "r");
	cr_assert_not_null(f);
	n = fread(out, 1, outlen - 1, f);
	out[n] = '\0';
	st = pclose(f);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(policy, sluicectl_policy_check)
{
	const char *bin = getenv("SLUICECTL");
	char path[128], out[4096];

	if (access(bin && *bin ? bin : "build/sluicectl", X_OK))
		cr_skip_test("build/sluicectl not built (set SLUICECTL)");
	mk_tmpdir();
	snprintf(path, sizeof(path), "%s/p.yaml", tmpdir);
	write_file(path, "version: 1\nallow:\n  - host: a.test\n", 35);
	cr_expect_eq(run_check(path, out, sizeof(out)), 0, "%s", out);
	cr_expect(strstr(out, "policy OK: 1 allow rules, 0 passthrough, 0 secrets, hash sha256:"),
		  "%s", out);
	write_file(path, "version: 1\nallow:\n  - host: a.test\n    port: [1]\n", 48);
	cr_expect_eq(run_check(path, out, sizeof(out)), 2, "%s", out);
	cr_expect(strstr(out, ":4:5: error: unknown key 'port' in allow[0]"), "%s", out);
	unsetenv("SLUICE_CHECK_UNSET");
	write_file(path, "version: 1\nsecrets:\n  - {name: a, placeholder: PLACEHOLDER_A, "
			 "source: env:SLUICE_CHECK_UNSET, hosts: [a.test], in: {any_header: true}}\n",
		   135);
	cr_expect_eq(run_check(path, out, sizeof(out)), 0, "%s", out);
	cr_expect(strstr(out, ":3:51: warning: secret 'a': source env:SLUICE_CHECK_UNSET is not "
			      "set"), "%s", out);
	cr_expect(strstr(out, "policy OK: 0 allow rules, 0 passthrough, 1 secrets"), "%s", out);
	snprintf(path, sizeof(path), "%s/missing.yaml", tmpdir);
	cr_expect_eq(run_check(path, out, sizeof(out)), 1, "%s", out);
	cr_expect(strstr(out, "missing.yaml: error: cannot open: No such file or directory"), "%s",
		  out);
	rm_tmpdir();
}
