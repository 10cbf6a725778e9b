/* SPDX-License-Identifier: MIT */
/*
 * policy: the policy language. A YAML file (libyaml) compiles into an
 * immutable, reference-counted struct pol: allow rules (host, ports, methods,
 * path globs), passthrough hosts, secrets (read from their sources at compile
 * time), limits, upstream CA, DNS mode, extra CIDRs and allowed UDP
 * destinations. docs/policy.md is the reference for the file format; this
 * header is the contract for the daemon.
 *
 * A compiled policy never changes: a reload compiles a new one and swaps the
 * pointer; holders of the old one keep it alive with pol_ref()/pol_unref().
 * Every function taking a const struct pol * is safe to call from any thread.
 * The module never logs: errors and warnings come back as struct pol_error.
 */
#ifndef SLUICE_POLICY_H
#define SLUICE_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cidr.h"

/* Hard limits of the language (docs/policy.md lists them all). */
#define POL_FILE_MAX (1024 * 1024)      /* bytes of YAML */
#define POL_DEPTH_MAX 16                /* nested sequences/mappings */
#define POL_RULES_MAX 10000             /* allow rules; passthrough rules likewise */
#define POL_SECRETS_MAX 64     /* the proxy tracks secrets in 64-bit masks */
#define POL_CIDRS_MAX 1000              /* per list (network.deny, network.allow) */
#define POL_SECRET_VALUE_MAX 65536      /* bytes of a real secret value */
#define POL_HOST_MAX 253
#define POL_UDP_RULES_MAX 256           /* network.udp rules */
#define POL_UDP_PORTS_MAX 8             /* port items per udp rule */
#define POL_UDP_NAME_MAX 64

struct pol;

/*
 * One diagnostic. line and col are 1-based (col counts characters); line 0
 * means the file could not be opened or read (a file too large is 1:1). msg never ends with a newline and
 * carries no "error:"/"warning:" prefix (the printer adds it).
 */
struct pol_error {
	char file[256];
	unsigned line, col;
	char msg[256];
};

/*
 * Compile the policy at path. Returns 0 and a new policy (refcount 1) in
 * *ret_pol, or a negative errno with *err filled (when err is not NULL):
 *   -EINVAL  the file is not a valid policy (err has file:line:col)
 *   -EFBIG   the file is larger than POL_FILE_MAX (err line 0)
 *   -ENOMEM  out of memory
 *   other    the file could not be opened or read (-ENOENT, -EACCES, ...)
 * A secret whose source is missing is not an error: it compiles as
 * unavailable and is reported as a warning (pol_nwarnings()).
 */
int pol_load_file(const char *path, struct pol **ret_pol, struct pol_error *err);

/* Same as pol_load_file() on an in-memory buffer; name is used in messages
 * and as pol_source(). buf need not be NUL-terminated. */
int pol_load_buffer(const char *name, const char *buf, size_t len, struct pol **ret_pol,
		    struct pol_error *err);

/*
 * pol_load_buffer() with a third kind of secret source: "controlplane:NAME"
 * (NAME = 1..64 of [A-Za-z0-9_.-]), a value sent by the control plane in
 * managed mode (docs/control-plane.md). For each such source the compiler
 * calls secret_value(ctx, "controlplane:NAME", &val, &len): 0 with val set is
 * the value (copied; the caller keeps ownership), anything else means "not
 * sent" and the secret compiles as unavailable (a warning, 503
 * secret_unavailable at request time), never as an error. The same checks as
 * for env:/file: apply (empty, > 65536 bytes, CR/LF/NUL: unavailable).
 * secret_value may be NULL (every controlplane: secret is unavailable; this is
 * what pol_load_buffer() and pol_load_file() do). env: and file: sources are
 * read as before. Called synchronously, on the caller's thread.
 */
int pol_load_buffer_ex(const char *name, const char *buf, size_t len,
		       int (*secret_value)(void *ctx, const char *source,
					   const unsigned char **ret_val, size_t *ret_len),
		       void *ctx, struct pol **ret_pol, struct pol_error *err);

/* Warnings of a successful compile (e.g. unavailable secrets), in file order.
 * pol_warning() returns NULL when i is out of range. */
unsigned pol_nwarnings(const struct pol *p);
const struct pol_error *pol_warning(const struct pol *p, unsigned i);

/* The built-in default: every host, port, method and path allowed (valid
 * paths only, see pol_path_check), nothing passthrough, no secrets, default
 * limits, DNS forward. Used until a sandbox gets a policy file. NULL with
 * errno ENOMEM on allocation failure. */
struct pol *pol_allow_all(void);

/* Take / drop a reference. pol_unref(NULL) is a no-op. The last unref zeroes
 * every secret value (explicit_bzero) and frees everything. */
struct pol *pol_ref(struct pol *p);
void pol_unref(struct pol *p);

/* "sha256:<64 hex>" of the file bytes, or "builtin:allow-all". */
const char *pol_hash(const struct pol *p);
/* The path or buffer name given at load, or "builtin". */
const char *pol_source(const struct pol *p);

/*
 * Normalise a host name: lower-case, one trailing dot removed, IDNA to
 * A-labels (libidn2, UTS#46 non-transitional) when it is not ASCII; an IP
 * literal (optionally in brackets) becomes its canonical text without
 * brackets. Labels are [a-z0-9_-]{1,63}, the whole name at most 253 bytes.
 * Writes a NUL-terminated result to out. Returns 0, -EINVAL for a name that is
 * not valid, -ENAMETOOLONG when out is too small. ASCII input never allocates.
 */
int pol_normalize_host(const char *in, size_t len, char *out, size_t outlen);

/*
 * Check a request path (origin-form, query already removed). Refused, never
 * resolved: not starting with "/", dot segments "." and ".." in any spelling
 * ("%2e", "%2E", ".%2e", ...), encoded slashes and backslashes inside a
 * segment ("%2f", "%5c"), a raw backslash, NUL or other control bytes (also
 * encoded as "%00".."%1f", "%7f"), empty segments ("//"), malformed
 * percent-escapes, and overlong UTF-8 lead bytes ("%c0", "%c1").
 * Returns 0, or -EINVAL with a static reason in *ret_reason (when not NULL).
 */
int pol_path_check(const char *path, size_t len, const char **ret_reason);

struct pol_rule;
/* The rule's name: its "name" key or "allow[<i>]" / "passthrough[<i>]";
 * "builtin:allow-all" for pol_allow_all(). Lives as long as the policy. */
const char *pol_rule_name(const struct pol_rule *r);

enum pol_verdict { POL_DENY = 1, POL_ALLOW = 2, POL_PASSTHROUGH = 3 };

/*
 * Connection level, on the SNI / CONNECT / Host name (or IP literal): is
 * host:port passthrough (checked first: an operator who lists a host as
 * passthrough asked for no decryption), or allowed by some allow rule
 * (method and path ignored)? *ret_rule (when not NULL) is set for
 * ALLOW/PASSTHROUGH to the first matching rule in file order. host need not
 * be normalised. Cost: O(labels of host + rules naming that host).
 */
enum pol_verdict pol_match_conn(const struct pol *p, const char *host, uint16_t port,
				const struct pol_rule **ret_rule);

/*
 * Request level: ALLOW with the first allow rule (file order) matching host,
 * port, method and path, or DENY with a reason that lives as long as the
 * policy: "invalid host", "invalid path: <why>", "no rule allows host",
 * "port not allowed by rule <name>", "method not allowed by rule <name>",
 * "path not allowed by rule <name>" (<name> is the first rule whose host
 * matched). path is the path without the query; it is checked with
 * pol_path_check() first. Passthrough rules never match here.
 */
enum pol_verdict pol_match_request(const struct pol *p, const char *host, uint16_t port,
				   const char *method, const char *path, size_t path_len,
				   const struct pol_rule **ret_rule, const char **ret_reason);

/* DNS allowlist mode: does host match any allow or passthrough host pattern
 * (ports ignored)? Always true for pol_allow_all(). */
bool pol_host_in_policy(const struct pol *p, const char *host);

struct pol_secret {
	const char *name, *placeholder;
	const unsigned char *value;     /* NULL when unavailable */
	size_t value_len;
	const char *unavailable_reason; /* NULL when available */
	bool in_any_header, in_basic_user, in_basic_password, allow_plaintext;
	const char *const *headers;     /* lower-cased */
	unsigned nheaders;
	const char *const *query;
	unsigned nquery;
	const char *const *body_types;  /* lower-cased media types */
	unsigned nbody_types;           /* 0: never in bodies */
	size_t body_max;
};

/* Secrets in file order. pol_secret_at() returns NULL when i is out of
 * range; the struct lives as long as the policy. */
unsigned pol_nsecrets(const struct pol *p);
const struct pol_secret *pol_secret_at(const struct pol *p, unsigned i);
/* May secret i's real value be sent to host (one of its hosts patterns)?
 * false for an out-of-range i or an invalid host. */
bool pol_secret_host_ok(const struct pol *p, unsigned i, const char *host);

struct pol_limits {
	size_t max_header_bytes, body_buffer_bytes;
	unsigned max_connections, idle_timeout_s, request_timeout_s;
};
const struct pol_limits *pol_limits(const struct pol *p);

/* Absolute path of the upstream CA bundle, or NULL if unset. */
const char *pol_upstream_ca(const struct pol *p);

enum pol_dns_mode { POL_DNS_FORWARD = 1, POL_DNS_ALLOWLIST = 2 };
enum pol_dns_mode pol_dns_mode(const struct pol *p);
/* "ip:port" or "[ipv6]:port" (port defaults to 53), or NULL if unset. */
const char *pol_dns_resolver(const struct pol *p);

/* CIDRs: struct cidr (cidr.h); host bits are zero. */
unsigned pol_net_deny_count(const struct pol *p);
const struct cidr *pol_net_deny_at(const struct pol *p, unsigned i);
unsigned pol_net_allow_count(const struct pol *p);
const struct cidr *pol_net_allow_at(const struct pol *p, unsigned i);

/*
 * network.udp: UDP destinations a sandbox may send to (through sluiced's UDP
 * relay; docs/policy.md). A rule names one CIDR and up to POL_UDP_PORTS_MAX
 * port ranges. The compiler guarantees: to never overlaps a metadata range
 * (same list as network.allow), no range contains port 53, 1 <= nports <=
 * POL_UDP_PORTS_MAX, names are unique among allow, passthrough and udp rules.
 * A `to` written as an IPv4-mapped IPv6 CIDR (::ffff:a.b.c.d/n) is stored as
 * the IPv4 CIDR a.b.c.d/(n-96). The deny set is not consulted here: a rule may
 * allow an address that the sandbox's deny set still refuses (deny wins).
 */
struct pol_port_range {
	uint16_t lo, hi;                /* host order, 1 <= lo <= hi */
};

struct pol_udp_rule {
	char name[POL_UDP_NAME_MAX + 1];    /* "udp[<index>]" when the file gives none */
	struct cidr to;
	unsigned nports;
	struct pol_port_range ports[POL_UDP_PORTS_MAX];
};

/* Rules in file order; pol_net_udp_at() returns NULL when i is out of range.
 * The struct lives as long as the policy. pol_allow_all() has none. */
unsigned pol_net_udp_count(const struct pol *p);
const struct pol_udp_rule *pol_net_udp_at(const struct pol *p, unsigned i);
/* The first rule (file order) allowing UDP to addr:port (port in host order;
 * family AF_INET uses addr[0..3], AF_INET6 addr[0..15]; an IPv4-mapped IPv6
 * address ::ffff:a.b.c.d is matched as the IPv4 address), or NULL. NULL also
 * for another family, a NULL addr, port 0 and pol_allow_all(). Cost: O(rules x
 * ports), at most 256 x 8 comparisons. */
const struct pol_udp_rule *pol_udp_match(const struct pol *p, int family,
					 const unsigned char addr[16], uint16_t port);

/* Counts for summaries ("policy OK: N allow rules, ..."). */
unsigned pol_nallow(const struct pol *p);
unsigned pol_npassthrough(const struct pol *p);

#endif /* SLUICE_POLICY_H */
