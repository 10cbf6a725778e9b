// SPDX-License-Identifier: MIT
/*
 * policy: YAML → compiled, immutable policy.
 *
 * Two passes. yaml_to_tree() turns libyaml's event stream into a small tree
 * of nodes carrying line:col, refusing what the language never needs (anchors,
 * aliases, tags, several documents, nesting deeper than POL_DEPTH_MAX) at the
 * first event that shows it, so alias bombs and deep nesting cost nothing.
 * compile_*() then walks the tree against the schema (docs/policy.md) and
 * fills a struct pol whose strings live in one arena. The first problem found
 * in file order is the error; there is no error recovery.
 *
 * Matching: each class of rules (allow, passthrough) has three hash tables
 * keyed by normalised name: exact names, "*." suffixes and "**." suffixes.
 * A lookup probes the exact name, the name minus its first label, and every
 * dot-suffix of the name: O(labels) probes, then the rules under those keys
 * in file order. Path globs are split into segments at compile time and
 * matched with the greedy star algorithm at both levels ("**" over segments,
 * "*" over bytes of one segment): O(pattern × path) worst case, never
 * exponential.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <idn2.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>
#include <openssl/evp.h>

#include "policy.h"
#include "netaddr.h"
#include "policy_internal.h"

/* Per-item limits (docs/policy.md). */
#define PORTS_MAX 64
#define METHODS_MAX 32
#define METHOD_LEN_MAX 32
#define PATHS_MAX 256
#define GLOB_LEN_MAX 1024
#define GLOB_SEGS_MAX 128
#define SECRET_HOSTS_MAX 64
#define SECRET_NAMES_MAX 64     /* headers, query names */
#define SECRET_NAME_LEN_MAX 128 /* a header or query parameter name */
#define BODY_TYPES_MAX 16
#define BODY_MAX_BYTES_MAX (16u * 1024 * 1024)
#define BODY_MAX_BYTES_DEF (1024u * 1024)
#define PLACEHOLDER_MIN 8
#define PLACEHOLDER_MAX 256
#define ID_MAX 64               /* rule and secret names */

void (*pol_test_secret_free_hook)(unsigned char *value, size_t len);

/* ---- arena: every string and array of a policy, freed at once ---- */

struct arena_chunk {
	struct arena_chunk *next;
	size_t used, cap;
	max_align_t data[];
};

struct arena {
	struct arena_chunk *head;
};

static void *arena_alloc(struct arena *a, size_t n)
{
	struct arena_chunk *c = a->head;
	size_t al = (n + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
	void *p;

	if (n > SIZE_MAX / 2)
		return NULL;
	if (!c || c->cap - c->used < al) {
		size_t cap = al > 16384 ? al : 16384;

		c = calloc(1, sizeof(*c) + cap);
		if (!c)
			return NULL;
		c->cap = cap;
		c->next = a->head;
		a->head = c;
	}
	p = (char *)c->data + c->used;
	c->used += al;
	return p;
}

static char *arena_strndup(struct arena *a, const char *s, size_t n)
{
	char *d = arena_alloc(a, n + 1);

	if (d) {
		memcpy(d, s, n);
		d[n] = '\0';
	}
	return d;
}

static void arena_free(struct arena *a)
{
	struct arena_chunk *c = a->head, *next;

	for (; c; c = next) {
		next = c->next;
		free(c);
	}
	a->head = NULL;
}

/* ---- compiled policy ---- */

enum host_kind { HK_EXACT = 0, HK_ONE = 1, HK_ANY = 2 };

struct host_pat {
	enum host_kind kind;
	const char *name;       /* exact name, or the suffix after "*." / "**." */
};

struct gseg {
	const char *s;
	unsigned len;
	bool dstar;             /* "**": any number of segments */
};

struct glob {
	struct gseg *segs;
	unsigned nseg;
};

struct pol_rule {
	const char *name;
	struct host_pat host;
	uint16_t *ports;
	unsigned nports;
	const char **methods;   /* nmethods == 0: any */
	unsigned nmethods;
	struct glob *paths;     /* npaths == 0: any */
	unsigned npaths;
	const char *why_port, *why_method, *why_path;
};

struct hent {
	const char *key;        /* NULL: empty slot */
	uint32_t *idx;          /* rule indexes, ascending */
	uint32_t n;
};

struct htab {
	struct hent *slots;
	uint32_t mask;
};

struct hostidx {
	struct htab t[3];       /* by enum host_kind */
};

struct secret {
	struct pol_secret pub;
	struct host_pat *hosts;
	unsigned nhosts;
	unsigned char *value;   /* malloc'd apart from the arena: zeroed on free */
};

struct pol {
	atomic_uint refs;
	bool allow_all;
	struct arena arena;
	const char *source;
	char hash[80];
	struct pol_rule *rules, *pts;
	unsigned nrules, npts;
	struct hostidx rule_idx, pt_idx;
	struct secret *secrets;
	unsigned nsecrets;
	struct pol_limits limits;
	const char *upstream_ca;
	enum pol_dns_mode dns_mode;
	const char *dns_resolver;
	struct cidr *net_deny, *net_allow;
	unsigned nnet_deny, nnet_allow;
	struct pol_udp_rule *udp;
	unsigned nudp;
	struct pol_error *warnings;
	unsigned nwarnings;
};

static const struct pol_limits default_limits = {
	.max_header_bytes = 32768,
	.body_buffer_bytes = 65536,
	.max_connections = 512,
	.idle_timeout_s = 60,
	.request_timeout_s = 300,
};

static struct pol_rule allow_all_rule = { .name = "builtin:allow-all" };

/* ---- diagnostics ---- */

struct cc {
	const char *name;
	const char *buf;
	size_t len;
	struct arena tmp;       /* the YAML tree; freed after compile */
	struct pol *p;
	struct pol_error *err;
	/* controlplane:NAME values (pol_load_buffer_ex); NULL: none available */
	int (*secret_value)(void *ctx, const char *source, const unsigned char **ret_val,
			    size_t *ret_len);
	void *secret_ctx;
};

static void err_set(struct pol_error *e, const char *file, unsigned line, unsigned col,
		    const char *fmt, va_list ap)
{
	if (!e)
		return;
	snprintf(e->file, sizeof(e->file), "%s", file);
	e->line = line;
	e->col = col;
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
}

__attribute__((format(printf, 5, 6))) static int fail_at(struct cc *c, int rc, unsigned line,
							 unsigned col, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	err_set(c->err, c->name, line, col, fmt, ap);
	va_end(ap);
	return rc;
}

/* Printable, bounded copy of user text for messages. */
static const char *q(const char *s, size_t n, char *out, size_t outlen)
{
	size_t o = 0, i;

	for (i = 0; i < n && o + 4 < outlen; i++)
		out[o++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	if (i < n) {
		if (o > outlen - 4)
			o = outlen - 4;
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
	return out;
}

/* ---- YAML → tree ---- */

enum ytype { Y_SCALAR = 1, Y_SEQ = 2, Y_MAP = 3 };

struct ynode {
	struct ynode *child, *last, *next;
	char *s;                /* scalars: NUL-terminated value */
	uint32_t len, line, col, n;
	uint8_t type;
	bool null;              /* plain "", "~", "null" */
};

#define FAILN(c, node, ...) fail_at((c), -EINVAL, (node)->line, (node)->col, __VA_ARGS__)

static void offset_to_linecol(const char *buf, size_t len, size_t off, unsigned *line,
			      unsigned *col)
{
	size_t ls = 0;

	*line = 1;
	if (off > len)
		off = len;
	for (size_t i = 0; i < off; i++)
		if (buf[i] == '\n') {
			(*line)++;
			ls = i + 1;
		}
	*col = (unsigned)(off - ls) + 1;
}

static int yaml_fail(struct cc *c, const yaml_parser_t *yp)
{
	const char *problem = yp->problem ? yp->problem : "malformed YAML";
	unsigned line, col;

	if (yp->error == YAML_MEMORY_ERROR)
		return fail_at(c, -ENOMEM, 1, 1, "out of memory while parsing");
	if (yp->error == YAML_READER_ERROR) {
		offset_to_linecol(c->buf, c->len, yp->problem_offset, &line, &col);
		if (yp->problem_value >= 0)
			return fail_at(c, -EINVAL, line, col, "%s (byte 0x%02x); the file must be UTF-8 text",
				       problem, (unsigned)yp->problem_value & 0xff);
		return fail_at(c, -EINVAL, line, col, "%s; the file must be UTF-8 text", problem);
	}
	if (yp->context)
		return fail_at(c, -EINVAL, (unsigned)yp->problem_mark.line + 1,
			       (unsigned)yp->problem_mark.column + 1, "%s %s (line %u)", problem,
			       yp->context, (unsigned)yp->context_mark.line + 1);
	return fail_at(c, -EINVAL, (unsigned)yp->problem_mark.line + 1,
		       (unsigned)yp->problem_mark.column + 1, "%s", problem);
}

static struct ynode *ynode_new(struct cc *c, uint8_t type, const yaml_mark_t *m)
{
	struct ynode *n = arena_alloc(&c->tmp, sizeof(*n));

	if (n) {
		memset(n, 0, sizeof(*n));
		n->type = type;
		n->line = (uint32_t)m->line + 1;
		n->col = (uint32_t)m->column + 1;
	}
	return n;
}

static int check_props(struct cc *c, const yaml_event_t *ev, const yaml_char_t *anchor,
		       const yaml_char_t *tag)
{
	char b[64];

	if (anchor)
		return fail_at(c, -EINVAL, (unsigned)ev->start_mark.line + 1,
			       (unsigned)ev->start_mark.column + 1,
			       "anchors and aliases are not allowed (anchor '&%s')",
			       q((const char *)anchor, strlen((const char *)anchor), b, sizeof(b)));
	if (tag)
		return fail_at(c, -EINVAL, (unsigned)ev->start_mark.line + 1,
			       (unsigned)ev->start_mark.column + 1, "tags are not allowed (tag '%s')",
			       q((const char *)tag, strlen((const char *)tag), b, sizeof(b)));
	return 0;
}

static int yaml_to_tree(struct cc *c, struct ynode **ret_root)
{
	struct ynode *stack[POL_DEPTH_MAX], *root = NULL, *n;
	unsigned depth = 0, ndocs = 0;
	yaml_parser_t yp;
	yaml_event_t ev;
	bool done = false;
	int rc = 0;

	if (!yaml_parser_initialize(&yp))
		return fail_at(c, -ENOMEM, 1, 1, "out of memory");
	yaml_parser_set_input_string(&yp, (const unsigned char *)c->buf, c->len);
	while (!done && !rc) {
		if (!yaml_parser_parse(&yp, &ev)) {
			rc = yaml_fail(c, &yp);
			break;
		}
		n = NULL;
		switch (ev.type) {
		case YAML_STREAM_END_EVENT:
			done = true;
			break;
		case YAML_DOCUMENT_START_EVENT:
			if (ndocs++)
				rc = fail_at(c, -EINVAL, (unsigned)ev.start_mark.line + 1,
					     (unsigned)ev.start_mark.column + 1,
					     "multiple YAML documents are not allowed; a policy is one document");
			else if (ev.data.document_start.tag_directives.start !=
				 ev.data.document_start.tag_directives.end)
				rc = fail_at(c, -EINVAL, (unsigned)ev.start_mark.line + 1,
					     (unsigned)ev.start_mark.column + 1,
					     "%%TAG directives are not allowed");
			break;
		case YAML_ALIAS_EVENT:
			rc = fail_at(c, -EINVAL, (unsigned)ev.start_mark.line + 1,
				     (unsigned)ev.start_mark.column + 1,
				     "anchors and aliases are not allowed (alias '*%s')",
				     q((const char *)ev.data.alias.anchor,
				       strlen((const char *)ev.data.alias.anchor), (char[64]){ 0 }, 64));
			break;
		case YAML_SCALAR_EVENT: {
			const char *v = (const char *)ev.data.scalar.value;
			size_t len = ev.data.scalar.length;

			rc = check_props(c, &ev, ev.data.scalar.anchor, ev.data.scalar.tag);
			if (rc)
				break;
			if (memchr(v, '\0', len)) {
				rc = fail_at(c, -EINVAL, (unsigned)ev.start_mark.line + 1,
					     (unsigned)ev.start_mark.column + 1,
					     "NUL characters are not allowed in values");
				break;
			}
			n = ynode_new(c, Y_SCALAR, &ev.start_mark);
			if (!n || !(n->s = arena_strndup(&c->tmp, v, len))) {
				rc = fail_at(c, -ENOMEM, 1, 1, "out of memory");
				break;
			}
			n->len = (uint32_t)len;
			n->null = ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
				  (!len || !strcmp(v, "~") || !strcmp(v, "null") ||
				   !strcmp(v, "Null") || !strcmp(v, "NULL"));
			break;
		}
		case YAML_SEQUENCE_START_EVENT:
		case YAML_MAPPING_START_EVENT: {
			bool seq = ev.type == YAML_SEQUENCE_START_EVENT;

			rc = seq ? check_props(c, &ev, ev.data.sequence_start.anchor,
					       ev.data.sequence_start.tag)
				 : check_props(c, &ev, ev.data.mapping_start.anchor,
					       ev.data.mapping_start.tag);
			if (rc)
				break;
			if (depth == POL_DEPTH_MAX) {
				rc = fail_at(c, -EINVAL, (unsigned)ev.start_mark.line + 1,
					     (unsigned)ev.start_mark.column + 1,
					     "nesting deeper than %d levels", POL_DEPTH_MAX);
				break;
			}
			n = ynode_new(c, seq ? Y_SEQ : Y_MAP, &ev.start_mark);
			if (!n)
				rc = fail_at(c, -ENOMEM, 1, 1, "out of memory");
			break;
		}
		case YAML_SEQUENCE_END_EVENT:
		case YAML_MAPPING_END_EVENT:
			if (depth)
				depth--;
			break;
		default:
			break;
		}
		if (!rc && n) {
			if (!depth) {
				root = n;
			} else {
				struct ynode *parent = stack[depth - 1];

				if (parent->type == Y_MAP && !(parent->n & 1) && n->type != Y_SCALAR)
					rc = FAILN(c, n, "mapping keys must be plain scalars");
				if (parent->last)
					parent->last->next = n;
				else
					parent->child = n;
				parent->last = n;
				parent->n++;
			}
			if (n->type != Y_SCALAR)
				stack[depth++] = n;
		}
		yaml_event_delete(&ev);
	}
	yaml_parser_delete(&yp);
	if (rc)
		return rc;
	if (!root)
		return fail_at(c, -EINVAL, 1, 1,
			       "empty policy; expected a mapping starting with 'version: 1'");
	*ret_root = root;
	return 0;
}

/* ---- schema helpers ---- */

static const char *ytype_name(const struct ynode *n)
{
	if (n->type == Y_SEQ)
		return "a sequence";
	if (n->type == Y_MAP)
		return "a mapping";
	return n->null ? "nothing (null)" : "a scalar";
}

static int want(struct cc *c, const struct ynode *n, uint8_t type, const char *what)
{
	static const char *const names[] = { "", "a scalar", "a sequence", "a mapping" };

	if (n->type == type && !(type == Y_SCALAR && n->null))
		return 0;
	return FAILN(c, n, "%s must be %s, got %s", what, names[type], ytype_name(n));
}

/*
 * Look up the keys of mapping map against keys[]: vals[i] is the value of
 * keys[i] or NULL. Unknown, duplicate and non-string keys are errors, found
 * in file order. O(keys in map × nkeys): nkeys is a small constant.
 */
static int map_keys(struct cc *c, const struct ynode *map, const char *where,
		    const char *const *keys, unsigned nkeys, const struct ynode **vals)
{
	const struct ynode *seen[16] = { 0 };
	char b[64];

	for (unsigned i = 0; i < nkeys; i++)
		vals[i] = NULL;
	for (const struct ynode *k = map->child; k && k->next; k = k->next->next) {
		unsigned i;

		if (k->null)
			return FAILN(c, k, "empty key in %s", where);
		for (i = 0; i < nkeys && strcmp(keys[i], k->s); i++)
			;
		if (i == nkeys) {
			char valid[200];
			size_t o = 0;

			for (unsigned j = 0; j < nkeys && o < sizeof(valid); j++)
				o += (size_t)snprintf(valid + o, sizeof(valid) - o, "%s%s",
						      j ? ", " : "", keys[j]);
			return FAILN(c, k, "unknown key '%s' in %s; valid keys: %s",
				     q(k->s, k->len, b, sizeof(b)), where, valid);
		}
		if (seen[i])
			return FAILN(c, k, "duplicate key '%s' in %s (first at line %u)", keys[i],
				     where, seen[i]->line);
		seen[i] = k;
		vals[i] = k->next;
	}
	return 0;
}

/* Plain decimal digits (no sign, no spaces) making a value in min..max. */
static bool dec_ok(const char *s, size_t len, unsigned long min, unsigned long max,
		   unsigned long *ret)
{
	unsigned long v = 0;

	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9' || v > (ULONG_MAX - 9) / 10)
			return false;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (!len || v < min || v > max)
		return false;
	*ret = v;
	return true;
}

static int get_uint(struct cc *c, const struct ynode *n, const char *what, unsigned long min,
		    unsigned long max, unsigned long *ret)
{
	char b[64];
	int rc = want(c, n, Y_SCALAR, what);

	if (rc)
		return rc;
	if (!dec_ok(n->s, n->len, min, max, ret))
		return FAILN(c, n, "%s must be an integer from %lu to %lu, got '%s'", what, min,
			     max, q(n->s, n->len, b, sizeof(b)));
	return 0;
}

static int get_bool(struct cc *c, const struct ynode *n, const char *what, bool *ret)
{
	char b[64];
	int rc = want(c, n, Y_SCALAR, what);

	if (rc)
		return rc;
	if (!strcmp(n->s, "true") || !strcmp(n->s, "false")) {
		*ret = n->s[0] == 't';
		return 0;
	}
	return FAILN(c, n, "%s must be true or false, got '%s'", what, q(n->s, n->len, b, sizeof(b)));
}

/* A sequence of at most max items (empty allowed only if allow_empty). */
static int get_seq(struct cc *c, const struct ynode *n, const char *what, unsigned max,
		   bool allow_empty)
{
	int rc = want(c, n, Y_SEQ, what);

	if (rc)
		return rc;
	if (!n->n && !allow_empty)
		return FAILN(c, n, "%s must not be empty", what);
	if (n->n > max) {
		const struct ynode *x = n->child;

		for (unsigned i = 0; i < max; i++)
			x = x->next;
		return FAILN(c, x, "%s has more than %u items", what, max);
	}
	return 0;
}

static bool id_ok(const char *s, size_t len, size_t min, size_t max)
{
	if (len < min || len > max)
		return false;
	for (size_t i = 0; i < len; i++) {
		char ch = s[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' || ch == '-'))
			return false;
	}
	return true;
}

static bool is_tchar(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static char *astr(struct cc *c, const char *s, size_t n)
{
	return arena_strndup(&c->p->arena, s, n);
}

#define OOM(c) fail_at((c), -ENOMEM, 1, 1, "out of memory")

/* A formatted string in the policy arena (rule names are at most ID_MAX). */
__attribute__((format(printf, 2, 3))) static char *afmt(struct cc *c, const char *fmt, ...)
{
	char b[160];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(b, sizeof(b), fmt, ap);
	va_end(ap);
	return astr(c, b, strlen(b));
}

/* ---- unique-name set (rule names, secret names) ---- */

struct nset {
	const struct ynode **slots;
	uint32_t mask;
};

static uint32_t hash_str(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 16777619u;
	}
	return h;
}

static int nset_init(struct cc *c, struct nset *s, unsigned n)
{
	uint32_t cap = 16;

	while (cap < 2 * n + 2)
		cap <<= 1;
	s->slots = arena_alloc(&c->tmp, cap * sizeof(*s->slots));
	if (!s->slots)
		return OOM(c);
	memset(s->slots, 0, cap * sizeof(*s->slots));
	s->mask = cap - 1;
	return 0;
}

/* Insert node (whose ->s is the name, or name when given); returns the node
 * already holding that name, or NULL after inserting. */
static const struct ynode *nset_add(struct nset *s, const char *name, const struct ynode *node)
{
	uint32_t i = hash_str(name) & s->mask;

	for (; s->slots[i]; i = (i + 1) & s->mask)
		if (!strcmp((const char *)s->slots[i]->s, name))
			return s->slots[i];
	s->slots[i] = node;
	return NULL;
}

/* ---- host names ---- */

static bool is_ip_literal(const char *s)
{
	unsigned char a[16];

	return inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1;
}

/* pol_normalize_host() with a static reason. */
static int host_normalize(const char *in, size_t len, char *out, size_t outlen, const char **why)
{
	char tmp[1024], *idn = NULL;
	unsigned char a[16];
	const char *w = NULL;
	size_t n, lab = 0;
	bool ascii = true;

	if (!in || !len) {
		w = "empty host";
		goto out_inval;
	}
	if (len >= sizeof(tmp)) {
		w = "host name longer than 253 bytes";
		goto out_inval;
	}
	if (memchr(in, '\0', len)) {
		w = "NUL in host name";
		goto out_inval;
	}
	memcpy(tmp, in, len);
	tmp[len] = '\0';
	/* IP literals: canonical text, no brackets */
	if (tmp[0] == '[' || strchr(tmp, ':')) {
		char *s = tmp;

		if (tmp[0] == '[') {
			if (tmp[len - 1] != ']') {
				w = "unbalanced '[' in IPv6 literal";
				goto out_inval;
			}
			tmp[len - 1] = '\0';
			s = tmp + 1;
		}
		if (inet_pton(AF_INET6, s, a) != 1) {
			w = strstr(tmp, "://") ? "invalid character ':' (a host name, not a URL)"
					       : "invalid character ':' (ports go under 'ports')";
			goto out_inval;
		}
		if (outlen < INET6_ADDRSTRLEN)
			return -ENAMETOOLONG;
		inet_ntop(AF_INET6, a, out, (socklen_t)outlen);
		return 0;
	}
	if (inet_pton(AF_INET, tmp, a) == 1) {
		if (outlen < INET_ADDRSTRLEN)
			return -ENAMETOOLONG;
		inet_ntop(AF_INET, a, out, (socklen_t)outlen);
		return 0;
	}
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)tmp[i] >= 0x80)
			ascii = false;
	if (!ascii) {
		int rc = idn2_to_ascii_8z(tmp, &idn, IDN2_NONTRANSITIONAL);

		if (rc != IDN2_OK) {
			w = "not a valid internationalised domain name (IDNA2008/UTS#46)";
			goto out_inval;
		}
		n = strlen(idn);
		if (n >= sizeof(tmp)) {
			free(idn);
			w = "host name longer than 253 bytes";
			goto out_inval;
		}
		memcpy(tmp, idn, n + 1);
		free(idn);
		len = n;
	}
	if (len && tmp[len - 1] == '.')
		tmp[--len] = '\0';
	if (!len) {
		w = "empty host";
		goto out_inval;
	}
	if (len > POL_HOST_MAX) {
		w = "host name longer than 253 bytes";
		goto out_inval;
	}
	for (size_t i = 0; i <= len; i++) {
		char ch = tmp[i];

		if (ch == '.' || ch == '\0') {
			if (!lab) {
				w = "empty label in host name (\"..\" or a leading dot)";
				goto out_inval;
			}
			if (lab > 63) {
				w = "label longer than 63 bytes in host name";
				goto out_inval;
			}
			lab = 0;
			continue;
		}
		if (ch >= 'A' && ch <= 'Z')
			tmp[i] = (char)(ch - 'A' + 'a');
		else if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' ||
			   ch == '_')) {
			w = ch == '/' ? "invalid character '/' (a host name, not a URL or path)"
				      : ch == '*' ? "'*' is only allowed as a whole first label ('*.' or '**.')"
						  : "invalid character in host name (allowed: letters, digits, '-', '_', '.')";
			goto out_inval;
		}
		lab++;
	}
	if (len + 1 > outlen)
		return -ENAMETOOLONG;
	memcpy(out, tmp, len + 1);
	return 0;
out_inval:
	if (why)
		*why = w;
	return -EINVAL;
}

int pol_normalize_host(const char *in, size_t len, char *out, size_t outlen)
{
	return host_normalize(in, len, out, outlen, NULL);
}

static int compile_host_pat(struct cc *c, const struct ynode *n, const char *what,
			    struct host_pat *pat)
{
	char norm[POL_HOST_MAX + 1], b[80];
	const char *s, *why = "invalid host";
	struct in_addr ia;
	size_t off = 0;
	int rc = want(c, n, Y_SCALAR, what);

	if (rc)
		return rc;
	s = n->s;
	pat->kind = HK_EXACT;
	if (!strncmp(s, "**.", 3)) {
		pat->kind = HK_ANY;
		off = 3;
	} else if (!strncmp(s, "*.", 2)) {
		pat->kind = HK_ONE;
		off = 2;
	} else if (!strcmp(s, "*") || !strcmp(s, "**")) {
		return FAILN(c, n, "%s '%s' needs a suffix: '*.example.com' (one label) or "
			     "'**.example.com' (any depth)", what, s);
	}
	if (!n->len)
		return FAILN(c, n, "%s must not be empty", what);
	rc = host_normalize(s + off, n->len - off, norm, sizeof(norm), &why);
	if (rc)
		return FAILN(c, n, "invalid %s '%s': %s", what, q(s, n->len, b, sizeof(b)),
			     rc == -EINVAL ? why : "host name too long");
	if (is_ip_literal(norm)) {
		if (off)
			return FAILN(c, n, "invalid %s '%s': wildcards do not apply to IP addresses",
				     what, q(s, n->len, b, sizeof(b)));
	} else if (inet_aton(norm, &ia)) {
		/* "127.1", "0x7f.0.0.1": resolvers read these as addresses */
		return FAILN(c, n, "invalid %s '%s': ambiguous IPv4 spelling; write a.b.c.d", what,
			     q(s, n->len, b, sizeof(b)));
	}
	pat->name = astr(c, norm, strlen(norm));
	return pat->name ? 0 : OOM(c);
}

/* Does normalised host match pat? */
static bool host_pat_match(const struct host_pat *pat, const char *host, size_t hlen)
{
	size_t sl;
	const char *pre_end;

	if (pat->kind == HK_EXACT)
		return !strcmp(pat->name, host);
	sl = strlen(pat->name);
	if (hlen < sl + 2 || host[hlen - sl - 1] != '.' || strcmp(host + hlen - sl, pat->name))
		return false;
	pre_end = host + hlen - sl - 1;
	if (pat->kind == HK_ONE)
		return !memchr(host, '.', (size_t)(pre_end - host));
	return true;
}

/* ---- paths ---- */

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

int pol_path_check(const char *path, size_t len, const char **ret_reason)
{
	const char *why;
	size_t i = 1;

	if (!path || !len || path[0] != '/') {
		why = "path must start with '/'";
		goto out_inval;
	}
	while (i <= len) {
		size_t start = i, dots = 0;
		bool only_dots = true, params = false;

		for (; i < len && path[i] != '/'; i++) {
			unsigned char ch = (unsigned char)path[i];
			int v = ch;

			if (ch < 0x20 || ch == 0x7f) {
				why = "control character in path";
				goto out_inval;
			}
			if (ch == '\\') {
				why = "backslash in path";
				goto out_inval;
			}
			if (ch == '%') {
				int hi = i + 2 < len ? hexval(path[i + 1]) : -1;
				int lo = i + 2 < len ? hexval(path[i + 2]) : -1;

				if (hi < 0 || lo < 0) {
					why = "malformed percent-escape in path";
					goto out_inval;
				}
				v = hi * 16 + lo;
				i += 2;
				if (v == '/' || v == '\\') {
					why = "encoded slash or backslash in path";
					goto out_inval;
				}
				if (v < 0x20 || v == 0x7f) {
					why = "encoded control character in path";
					goto out_inval;
				}
				if (v == 0xc0 || v == 0xc1) {
					why = "overlong UTF-8 in path";
					goto out_inval;
				}
			}
			if (params)
				continue;
			if (v == ';')
				params = true; /* "..;x" is ".." to some servers */
			else if (v == '.')
				dots++;
			else
				only_dots = false;
		}
		if (i == start && i < len) {
			why = "empty path segment (\"//\")";
			goto out_inval;
		}
		if (only_dots && (dots == 1 || dots == 2)) {
			why = "dot segment (\".\" or \"..\") in path";
			goto out_inval;
		}
		i++;
	}
	return 0;
out_inval:
	if (ret_reason)
		*ret_reason = why;
	return -EINVAL;
}

static int compile_glob(struct cc *c, const struct ynode *n, struct glob *g)
{
	const char *s, *why;
	unsigned nseg = 1, k = 0;
	char b[80];
	int rc = want(c, n, Y_SCALAR, "a path glob");

	if (rc)
		return rc;
	s = n->s;
	q(s, n->len, b, sizeof(b));
	if (s[0] != '/')
		return FAILN(c, n, "invalid path glob '%s': must start with '/'", b);
	if (n->len > GLOB_LEN_MAX)
		return FAILN(c, n, "invalid path glob '%s': longer than %d bytes", b, GLOB_LEN_MAX);
	if (strchr(s, '?') || strchr(s, '#'))
		return FAILN(c, n, "invalid path glob '%s': '?' and '#' are not allowed (queries are "
			     "not matched; '*' matches within a segment)", b);
	if (strstr(s, "***"))
		return FAILN(c, n, "invalid path glob '%s': '***' is not a glob; use '*' (within "
			     "one segment) or '**' (any depth)", b);
	if (pol_path_check(s, n->len, &why))
		return FAILN(c, n, "invalid path glob '%s': %s; no request can match it", b, why);
	for (const char *p = s + 1; *p; p++)
		nseg += *p == '/';
	if (nseg > GLOB_SEGS_MAX)
		return FAILN(c, n, "invalid path glob '%s': more than %d segments", b, GLOB_SEGS_MAX);
	g->segs = arena_alloc(&c->p->arena, nseg * sizeof(*g->segs));
	if (!g->segs)
		return OOM(c);
	for (const char *p = s + 1;;) {
		const char *e = strchr(p, '/');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		bool ds = len == 2 && p[0] == '*' && p[1] == '*';

		if (!ds && memmem(p, len, "**", 2))
			return FAILN(c, n, "invalid path glob '%s': '**' must be a whole segment, as "
				     "in '/a/**' (not '/a/**b')", b);
		if (!(ds && k && g->segs[k - 1].dstar)) { /* consecutive "**" segments: keep one */
			g->segs[k].s = p;
			g->segs[k].len = (unsigned)len;
			g->segs[k].dstar = ds;
			k++;
		}
		if (!e)
			break;
		p = e + 1;
	}
	/* segment texts point into the tree: copy them into the policy */
	for (unsigned i = 0; i < k; i++) {
		g->segs[i].s = astr(c, g->segs[i].s, g->segs[i].len);
		if (!g->segs[i].s)
			return OOM(c);
	}
	g->nseg = k;
	return 0;
}

/* Greedy '*' match of one segment: O(len(p) × len(s)) worst case. */
static bool seg_match(const char *p, size_t pl, const char *s, size_t sl)
{
	size_t i = 0, j = 0, star = SIZE_MAX, mark = 0;

	while (j < sl) {
		if (i < pl && p[i] == '*') {
			star = i++;
			mark = j;
		} else if (i < pl && p[i] == s[j]) {
			i++;
			j++;
		} else if (star != SIZE_MAX) {
			i = star + 1;
			j = ++mark;
		} else {
			return false;
		}
	}
	while (i < pl && p[i] == '*')
		i++;
	return i == pl;
}

static size_t seg_end(const char *path, size_t pos, size_t len)
{
	const char *e = pos < len ? memchr(path + pos, '/', len - pos) : NULL;

	return e ? (size_t)(e - path) : len;
}

/* The same greedy algorithm over segments, "**" being the star. path starts
 * with '/'; its segments are the pieces between slashes ("/" has one empty
 * segment). */
static bool glob_match(const struct glob *g, const char *path, size_t len)
{
	size_t pos = 1, star_pos = 0;
	unsigned pi = 0, star_pi = UINT_MAX;

	while (pos <= len) {
		size_t end = seg_end(path, pos, len);

		if (pi < g->nseg && g->segs[pi].dstar) {
			star_pi = pi++;
			star_pos = pos;
		} else if (pi < g->nseg &&
			   seg_match(g->segs[pi].s, g->segs[pi].len, path + pos, end - pos)) {
			pi++;
			pos = end + 1;
		} else if (star_pi != UINT_MAX) {
			pi = star_pi + 1;
			star_pos = seg_end(path, star_pos, len) + 1;
			pos = star_pos;
		} else {
			return false;
		}
	}
	while (pi < g->nseg && g->segs[pi].dstar)
		pi++;
	return pi == g->nseg;
}

/* ---- rules ---- */

static int compile_ports(struct cc *c, const struct ynode *n, struct pol_rule *r)
{
	unsigned long v;
	unsigned i = 0;
	int rc = get_seq(c, n, "'ports'", PORTS_MAX, false);

	if (rc)
		return rc;
	r->ports = arena_alloc(&c->p->arena, n->n * sizeof(*r->ports));
	if (!r->ports)
		return OOM(c);
	for (const struct ynode *x = n->child; x; x = x->next) {
		rc = get_uint(c, x, "a port", 1, 65535, &v);
		if (rc)
			return rc;
		r->ports[i++] = (uint16_t)v;
	}
	r->nports = i;
	return 0;
}

static int compile_methods(struct cc *c, const struct ynode *n, struct pol_rule *r)
{
	unsigned i = 0;
	char b[64];
	int rc = get_seq(c, n, "'methods'", METHODS_MAX, false);

	if (rc)
		return rc;
	r->methods = arena_alloc(&c->p->arena, n->n * sizeof(*r->methods));
	if (!r->methods)
		return OOM(c);
	for (const struct ynode *x = n->child; x; x = x->next) {
		bool lower = false, bad = false;

		rc = want(c, x, Y_SCALAR, "a method");
		if (rc)
			return rc;
		for (uint32_t j = 0; j < x->len; j++) {
			lower |= x->s[j] >= 'a' && x->s[j] <= 'z';
			bad |= !(x->s[j] >= 'A' && x->s[j] <= 'Z') && x->s[j] != '-' &&
			       x->s[j] != '_';
		}
		if (lower)
			return FAILN(c, x, "method '%s' must be upper-case (HTTP methods are "
				     "case-sensitive)", q(x->s, x->len, b, sizeof(b)));
		if (bad || x->len > METHOD_LEN_MAX)
			return FAILN(c, x, "invalid method '%s': 1 to %d upper-case letters",
				     q(x->s, x->len, b, sizeof(b)), METHOD_LEN_MAX);
		if (!(r->methods[i++] = astr(c, x->s, x->len)))
			return OOM(c);
	}
	r->nmethods = i;
	return 0;
}

static int compile_rule(struct cc *c, const struct ynode *n, bool pt, unsigned idx,
			struct pol_rule *r, struct nset *names)
{
	static const char *const akeys[] = { "name", "host", "ports", "methods", "paths" };
	static const char *const pkeys[] = { "name", "host", "ports" };
	static const uint16_t def_allow[] = { 443, 80 }, def_pt[] = { 443 };
	const char *cls = pt ? "passthrough" : "allow";
	const struct ynode *v[5], *dup;
	char where[48], b[80];
	int rc;

	snprintf(where, sizeof(where), "%s[%u]", cls, idx);
	rc = want(c, n, Y_MAP, where);
	if (!rc)
		rc = map_keys(c, n, where, pt ? pkeys : akeys, pt ? 3 : 5, v);
	if (rc)
		return rc;
	if (v[0]) {
		rc = want(c, v[0], Y_SCALAR, "'name'");
		if (rc)
			return rc;
		if (!id_ok(v[0]->s, v[0]->len, 1, ID_MAX))
			return FAILN(c, v[0], "invalid rule name '%s': 1 to %d of [A-Za-z0-9_.-]",
				     q(v[0]->s, v[0]->len, b, sizeof(b)), ID_MAX);
		r->name = astr(c, v[0]->s, v[0]->len);
		if (!r->name)
			return OOM(c);
		dup = nset_add(names, r->name, v[0]);
		if (dup)
			return FAILN(c, v[0], "duplicate rule name '%s' (first at line %u)", r->name,
				     dup->line);
	} else {
		r->name = astr(c, where, strlen(where));
		if (!r->name)
			return OOM(c);
	}
	if (!v[1])
		return FAILN(c, n, "%s has no 'host'", where);
	rc = compile_host_pat(c, v[1], "host", &r->host);
	if (rc)
		return rc;
	if (v[2]) {
		rc = compile_ports(c, v[2], r);
	} else {
		r->ports = (uint16_t *)(pt ? def_pt : def_allow);
		r->nports = pt ? 1 : 2;
	}
	if (!rc && !pt && v[3])
		rc = compile_methods(c, v[3], r);
	if (!rc && !pt && v[4]) {
		rc = get_seq(c, v[4], "'paths'", PATHS_MAX, false);
		if (rc)
			return rc;
		r->paths = arena_alloc(&c->p->arena, v[4]->n * sizeof(*r->paths));
		if (!r->paths)
			return OOM(c);
		for (const struct ynode *x = v[4]->child; x && !rc; x = x->next)
			rc = compile_glob(c, x, &r->paths[r->npaths++]);
	}
	if (rc)
		return rc;
	r->why_port = afmt(c, "port not allowed by rule %s", r->name);
	r->why_method = afmt(c, "method not allowed by rule %s", r->name);
	r->why_path = afmt(c, "path not allowed by rule %s", r->name);
	return r->why_port && r->why_method && r->why_path ? 0 : OOM(c);
}

static int rules_index(struct cc *c, const struct pol_rule *rules, unsigned n,
		       struct hostidx *hi);

static int compile_rules(struct cc *c, const struct ynode *n, bool pt, struct nset *names)
{
	struct pol *p = c->p;
	struct pol_rule *rules;
	unsigned i = 0;
	int rc = get_seq(c, n, pt ? "'passthrough'" : "'allow'", POL_RULES_MAX, true);

	if (rc)
		return rc;
	rules = arena_alloc(&p->arena, (n->n ? n->n : 1) * sizeof(*rules));
	if (!rules)
		return OOM(c);
	memset(rules, 0, (n->n ? n->n : 1) * sizeof(*rules));
	for (const struct ynode *x = n->child; x; x = x->next, i++) {
		rc = compile_rule(c, x, pt, i, &rules[i], names);
		if (rc)
			return rc;
	}
	if (pt) {
		p->pts = rules;
		p->npts = i;
	} else {
		p->rules = rules;
		p->nrules = i;
	}
	return rules_index(c, rules, i, pt ? &p->pt_idx : &p->rule_idx);
}

/* ---- host index ---- */

struct hkey {
	const char *name;
	uint32_t idx;
	enum host_kind kind;
};

static int hkey_cmp(const void *a, const void *b)
{
	const struct hkey *x = a, *y = b;
	int d = (int)x->kind - (int)y->kind;

	if (d)
		return d;
	d = strcmp(x->name, y->name);
	if (d)
		return d;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static int rules_index(struct cc *c, const struct pol_rule *rules, unsigned n,
		       struct hostidx *hi)
{
	struct hkey *keys;
	unsigned cnt[3] = { 0 };

	if (!n)
		return 0;
	keys = arena_alloc(&c->tmp, n * sizeof(*keys));
	if (!keys)
		return OOM(c);
	for (unsigned i = 0; i < n; i++) {
		keys[i] = (struct hkey){ rules[i].host.name, i, rules[i].host.kind };
		cnt[rules[i].host.kind]++;
	}
	qsort(keys, n, sizeof(*keys), hkey_cmp);
	for (unsigned k = 0; k < 3; k++) {
		uint32_t cap = 4;

		while (cap < 2 * cnt[k] + 2)
			cap <<= 1;
		hi->t[k].slots = arena_alloc(&c->p->arena, cap * sizeof(struct hent));
		if (!hi->t[k].slots)
			return OOM(c);
		memset(hi->t[k].slots, 0, cap * sizeof(struct hent));
		hi->t[k].mask = cap - 1;
	}
	for (unsigned i = 0; i < n;) {
		unsigned j = i;
		struct htab *t = &hi->t[keys[i].kind];
		struct hent *e;
		uint32_t h;

		while (j < n && keys[j].kind == keys[i].kind && !strcmp(keys[j].name, keys[i].name))
			j++;
		for (h = hash_str(keys[i].name) & t->mask; t->slots[h].key; h = (h + 1) & t->mask)
			;
		e = &t->slots[h];
		e->key = keys[i].name;
		e->n = j - i;
		e->idx = arena_alloc(&c->p->arena, e->n * sizeof(*e->idx));
		if (!e->idx)
			return OOM(c);
		for (unsigned k = i; k < j; k++)
			e->idx[k - i] = keys[k].idx;
		i = j;
	}
	return 0;
}

static const struct hent *htab_get(const struct htab *t, const char *key)
{
	if (!t->slots)
		return NULL;
	for (uint32_t h = hash_str(key) & t->mask; t->slots[h].key; h = (h + 1) & t->mask)
		if (!strcmp(t->slots[h].key, key))
			return &t->slots[h];
	return NULL;
}

#define CAND_MAX (POL_HOST_MAX / 2 + 4)

/* The index entries whose pattern matches normalised host. */
static unsigned host_candidates(const struct hostidx *hi, const char *host,
				const struct hent **out)
{
	const struct hent *e;
	const char *dot;
	unsigned n = 0;

	if ((e = htab_get(&hi->t[HK_EXACT], host)))
		out[n++] = e;
	if (is_ip_literal(host))
		return n;
	dot = strchr(host, '.');
	if (dot && (e = htab_get(&hi->t[HK_ONE], dot + 1)))
		out[n++] = e;
	for (; dot && n < CAND_MAX; dot = strchr(dot + 1, '.'))
		if ((e = htab_get(&hi->t[HK_ANY], dot + 1)))
			out[n++] = e;
	return n;
}

static bool port_ok(const struct pol_rule *r, uint16_t port)
{
	for (unsigned i = 0; i < r->nports; i++)
		if (r->ports[i] == port)
			return true;
	return false;
}

/* First rule (lowest index) among the candidates that allows port. */
static const struct pol_rule *first_port_match(const struct pol_rule *rules,
					       const struct hostidx *hi, const char *host,
					       uint16_t port)
{
	const struct hent *cand[CAND_MAX];
	unsigned nc = host_candidates(hi, host, cand);
	uint32_t best = UINT32_MAX;

	for (unsigned k = 0; k < nc; k++)
		for (uint32_t j = 0; j < cand[k]->n && cand[k]->idx[j] < best; j++)
			if (port_ok(&rules[cand[k]->idx[j]], port)) {
				best = cand[k]->idx[j];
				break;
			}
	return best == UINT32_MAX ? NULL : &rules[best];
}

/* ---- secrets ---- */

static void secret_value_free(unsigned char *v, size_t n)
{
	if (!v)
		return;
	explicit_bzero(v, n);
	if (pol_test_secret_free_hook)
		pol_test_secret_free_hook(v, n);
	else
		free(v);
}

static int add_warning(struct cc *c, const struct ynode *n, const char *fmt, ...)
{
	struct pol *p = c->p;
	struct pol_error *w;
	va_list ap;

	w = realloc(p->warnings, (p->nwarnings + 1) * sizeof(*w));
	if (!w)
		return OOM(c);
	p->warnings = w;
	va_start(ap, fmt);
	err_set(&w[p->nwarnings], c->name, n->line, n->col, fmt, ap);
	va_end(ap);
	p->nwarnings++;
	return 0;
}

/* Read the real value; a missing source leaves the secret unavailable. */
static int secret_read(struct cc *c, struct secret *s, const struct ynode *src)
{
	unsigned char *val = NULL;
	const char *why = NULL;
	char whybuf[200], errbuf[100];
	size_t n = 0, alloc = 0;

	if (!strncmp(src->s, "controlplane:", 13)) {
		const unsigned char *cv = NULL;
		size_t cn = 0;

		/* a value the control plane sent; absent: unavailable, never an error */
		if (!c->secret_value || c->secret_value(c->secret_ctx, src->s, &cv, &cn) || !cv)
			why = "was not sent by the control plane";
		else if (!(n = cn))
			why = "is empty";
		else if (n > POL_SECRET_VALUE_MAX)
			why = "is longer than 65536 bytes";
		else if (!(val = malloc(n)))
			return OOM(c);
		else
			memcpy(val, cv, (alloc = n));
	} else if (!strncmp(src->s, "env:", 4)) {
		const char *e = getenv(src->s + 4);

		if (!e)
			why = "is not set";
		else if (!(n = strlen(e)))
			why = "is empty";
		else if (n > POL_SECRET_VALUE_MAX)
			why = "is longer than 65536 bytes";
		else if (!(val = malloc(n)))
			return OOM(c);
		else
			memcpy(val, e, (alloc = n));
	} else {
		int fd = open(src->s + 5, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
		struct stat st;
		ssize_t r = 0;

		if (fd < 0) {
			snprintf(errbuf, sizeof(errbuf), "cannot be opened (%s)", strerror(errno));
			why = errbuf;
		} else if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
			why = "is not a regular file";
		} else if (!(val = malloc(POL_SECRET_VALUE_MAX + 2))) {
			close(fd);
			return OOM(c);
		} else {
			alloc = POL_SECRET_VALUE_MAX + 2;
			while (n < POL_SECRET_VALUE_MAX + 2 &&
			       (r = read(fd, val + n, POL_SECRET_VALUE_MAX + 2 - n)) > 0)
				n += (size_t)r;
			if (r < 0) {
				snprintf(errbuf, sizeof(errbuf), "cannot be read (%s)", strerror(errno));
				why = errbuf;
			}
			else if (n && val[n - 1] == '\n')
				n--;
			if (!why && n > POL_SECRET_VALUE_MAX)
				why = "is longer than 65536 bytes";
			else if (!why && !n)
				why = "is empty";
		}
		if (fd >= 0)
			close(fd);
	}
	/* headers: a CR or LF in a value would split the request */
	if (!why && (memchr(val, '\r', n) || memchr(val, '\n', n) || memchr(val, '\0', n)))
		why = "contains CR, LF or NUL";
	if (!why && alloc > n) { /* the file buffer: keep an exact copy */
		unsigned char *exact = malloc(n);

		if (!exact) {
			secret_value_free(val, alloc);
			return OOM(c);
		}
		memcpy(exact, val, n);
		secret_value_free(val, alloc);
		val = exact;
	}
	if (why) {
		secret_value_free(val, alloc);
		snprintf(whybuf, sizeof(whybuf), "source %s %s", src->s, why);
		s->pub.unavailable_reason = astr(c, whybuf, strlen(whybuf));
		if (!s->pub.unavailable_reason)
			return OOM(c);
		return add_warning(c, src, "secret '%s': %s", s->pub.name, whybuf);
	}
	s->value = val;
	s->pub.value = val;
	s->pub.value_len = n;
	return 0;
}

/* A list of names (headers, query parameters, content types). */
static int name_list(struct cc *c, const struct ynode *n, const char *what, unsigned max,
		     bool lower, bool media, const char *const **ret, unsigned *ret_n)
{
	const char **out;
	unsigned i = 0;
	char b[80];
	int rc = get_seq(c, n, what, max, false);

	if (rc)
		return rc;
	out = arena_alloc(&c->p->arena, n->n * sizeof(*out));
	if (!out)
		return OOM(c);
	for (const struct ynode *x = n->child; x; x = x->next) {
		char *s;
		bool ok = x->len && x->len <= SECRET_NAME_LEN_MAX;
		unsigned slashes = 0;

		rc = want(c, x, Y_SCALAR, what);
		if (rc)
			return rc;
		for (uint32_t j = 0; ok && j < x->len; j++) {
			unsigned char ch = (unsigned char)x->s[j];

			if (media && ch == '/' && j && j + 1 < x->len)
				slashes++;
			else if (lower) /* header names and media types: RFC 9110 tokens */
				ok = is_tchar(ch);
			else /* query names: no separators of the query syntax */
				ok = ch > 0x20 && ch < 0x7f && !strchr("&=#%+?", ch);
		}
		if (!ok || (media && slashes != 1))
			return FAILN(c, x, "invalid %s '%s'%s", what, q(x->s, x->len, b, sizeof(b)),
				     media ? " (type/subtype, no parameters)" : "");
		s = astr(c, x->s, x->len);
		if (!s)
			return OOM(c);
		for (char *p = s; lower && *p; p++)
			if (*p >= 'A' && *p <= 'Z')
				*p = (char)(*p - 'A' + 'a');
		out[i++] = s;
	}
	*ret = out;
	*ret_n = i;
	return 0;
}

static int compile_in(struct cc *c, const struct ynode *n, struct pol_secret *s)
{
	static const char *const keys[] = { "headers", "any_header", "basic_auth", "query", "body" };
	static const char *const bkeys[] = { "content_types", "max_bytes" };
	const struct ynode *v[5], *bv[2];
	char b[64];
	int rc = want(c, n, Y_MAP, "'in'");

	if (!rc)
		rc = map_keys(c, n, "'in'", keys, 5, v);
	if (!rc && v[0])
		rc = name_list(c, v[0], "header name", SECRET_NAMES_MAX, true, false, &s->headers,
			       &s->nheaders);
	if (!rc && v[1])
		rc = get_bool(c, v[1], "'any_header'", &s->in_any_header);
	if (!rc && v[2]) {
		rc = get_seq(c, v[2], "'basic_auth'", 2, false);
		for (const struct ynode *x = v[2]->child; x && !rc; x = x->next) {
			rc = want(c, x, Y_SCALAR, "a basic_auth item");
			if (rc)
				break;
			if (!strcmp(x->s, "user"))
				s->in_basic_user = true;
			else if (!strcmp(x->s, "password"))
				s->in_basic_password = true;
			else
				rc = FAILN(c, x, "basic_auth items are 'user' and 'password', got '%s'",
					   q(x->s, x->len, b, sizeof(b)));
		}
	}
	if (!rc && v[3])
		rc = name_list(c, v[3], "query parameter name", SECRET_NAMES_MAX, false, false,
			       &s->query, &s->nquery);
	if (!rc && v[4]) {
		unsigned long mb = BODY_MAX_BYTES_DEF;

		rc = want(c, v[4], Y_MAP, "'body'");
		if (!rc)
			rc = map_keys(c, v[4], "'body'", bkeys, 2, bv);
		if (!rc && !bv[0])
			rc = FAILN(c, v[4], "'body' needs 'content_types' (e.g. [application/json])");
		if (!rc)
			rc = name_list(c, bv[0], "content type", BODY_TYPES_MAX, true, true,
				       &s->body_types, &s->nbody_types);
		if (!rc && bv[1])
			rc = get_uint(c, bv[1], "'max_bytes'", 1, BODY_MAX_BYTES_MAX, &mb);
		s->body_max = mb;
	}
	if (rc)
		return rc;
	if (!s->nheaders && !s->in_any_header && !s->in_basic_user && !s->in_basic_password &&
	    !s->nquery && !s->nbody_types)
		return FAILN(c, n, "secret '%s': 'in' names no place to look; the placeholder "
			     "would never be swapped", s->name);
	return 0;
}

static int compile_secret(struct cc *c, const struct ynode *n, unsigned idx, struct secret *s,
			  struct nset *names)
{
	static const char *const keys[] = { "name",  "placeholder", "source",
					    "hosts", "in",          "allow_plaintext" };
	const struct ynode *v[6], *dup;
	char where[32], b[80];
	int rc;

	snprintf(where, sizeof(where), "secrets[%u]", idx);
	rc = want(c, n, Y_MAP, where);
	if (!rc)
		rc = map_keys(c, n, where, keys, 6, v);
	if (rc)
		return rc;
	for (unsigned i = 0; i < 5; i++)
		if (!v[i])
			return FAILN(c, n, "%s has no '%s' (required: name, placeholder, source, "
				     "hosts, in)", where, keys[i]);
	for (unsigned i = 0; i < 3; i++)
		if ((rc = want(c, v[i], Y_SCALAR, keys[i])))
			return rc;
	if (!id_ok(v[0]->s, v[0]->len, 1, ID_MAX))
		return FAILN(c, v[0], "invalid secret name '%s': 1 to %d of [A-Za-z0-9_.-]",
			     q(v[0]->s, v[0]->len, b, sizeof(b)), ID_MAX);
	if ((dup = nset_add(names, v[0]->s, v[0])))
		return FAILN(c, v[0], "duplicate secret name '%s' (first at line %u)", v[0]->s,
			     dup->line);
	if (!id_ok(v[1]->s, v[1]->len, PLACEHOLDER_MIN, PLACEHOLDER_MAX))
		return FAILN(c, v[1], "invalid placeholder '%s': %d to %d of [A-Za-z0-9_.-]",
			     q(v[1]->s, v[1]->len, b, sizeof(b)), PLACEHOLDER_MIN, PLACEHOLDER_MAX);
	s->pub.name = astr(c, v[0]->s, v[0]->len);
	s->pub.placeholder = astr(c, v[1]->s, v[1]->len);
	if (!s->pub.name || !s->pub.placeholder)
		return OOM(c);
	if (!strncmp(v[2]->s, "env:", 4)) {
		const char *e = v[2]->s + 4;
		bool ok = *e && !(*e >= '0' && *e <= '9');

		for (; ok && *e; e++)
			ok = (*e >= 'a' && *e <= 'z') || (*e >= 'A' && *e <= 'Z') ||
			     (*e >= '0' && *e <= '9') || *e == '_';
		if (!ok)
			return FAILN(c, v[2], "invalid source '%s': env:NAME needs a variable name "
				     "([A-Za-z_][A-Za-z0-9_]*)", q(v[2]->s, v[2]->len, b, sizeof(b)));
	} else if (!strncmp(v[2]->s, "file:", 5)) {
		if (v[2]->s[5] != '/' || v[2]->len - 5 >= PATH_MAX)
			return FAILN(c, v[2], "invalid source '%s': file: needs an absolute path",
				     q(v[2]->s, v[2]->len, b, sizeof(b)));
	} else if (!strncmp(v[2]->s, "controlplane:", 13)) {
		if (!id_ok(v[2]->s + 13, v[2]->len - 13, 1, ID_MAX))
			return FAILN(c, v[2], "invalid source '%s': controlplane:NAME needs a name "
				     "(1 to %d of [A-Za-z0-9_.-])", q(v[2]->s, v[2]->len, b, sizeof(b)),
				     ID_MAX);
	} else {
		return FAILN(c, v[2], "invalid source '%s': use env:NAME or file:/absolute/path "
			     "(controlplane:NAME in managed mode)",
			     q(v[2]->s, v[2]->len, b, sizeof(b)));
	}
	rc = get_seq(c, v[3], "'hosts'", SECRET_HOSTS_MAX, false);
	if (rc)
		return rc;
	s->hosts = arena_alloc(&c->p->arena, v[3]->n * sizeof(*s->hosts));
	if (!s->hosts)
		return OOM(c);
	for (const struct ynode *x = v[3]->child; x; x = x->next)
		if ((rc = compile_host_pat(c, x, "host", &s->hosts[s->nhosts++])))
			return rc;
	rc = compile_in(c, v[4], &s->pub);
	if (!rc && v[5])
		rc = get_bool(c, v[5], "'allow_plaintext'", &s->pub.allow_plaintext);
	if (!rc)
		rc = secret_read(c, s, v[2]);
	return rc;
}

static const struct ynode *map_get(const struct ynode *map, const char *key)
{
	for (const struct ynode *k = map->child; k && k->next; k = k->next->next)
		if (k->type == Y_SCALAR && !strcmp(k->s, key))
			return k->next;
	return NULL;
}

static int compile_secrets(struct cc *c, const struct ynode *n)
{
	struct pol *p = c->p;
	const struct ynode **ph;
	struct nset names;
	unsigned i = 0;
	int rc = get_seq(c, n, "'secrets'", POL_SECRETS_MAX, true);

	if (rc)
		return rc;
	if (!n->n)
		return 0;
	p->secrets = arena_alloc(&p->arena, n->n * sizeof(*p->secrets));
	ph = arena_alloc(&c->tmp, n->n * sizeof(*ph));
	if (!p->secrets || !ph)
		return OOM(c);
	memset(p->secrets, 0, n->n * sizeof(*p->secrets));
	rc = nset_init(c, &names, n->n);
	for (const struct ynode *x = n->child; x && !rc; x = x->next, i++) {
		p->nsecrets = i + 1; /* so a failure frees the values read so far */
		rc = compile_secret(c, x, i, &p->secrets[i], &names);
		if (!rc)
			ph[i] = map_get(x, "placeholder");
	}
	if (rc)
		return rc;
	/*
	 * No placeholder may contain another: the swap scans for every
	 * placeholder, and with "ABC_TOKEN" and "ABC_TOKEN_2" the bytes of the
	 * longer one would also be a hit for the shorter one. O(n² × 256).
	 */
	for (unsigned a = 0; a < i; a++)
		for (unsigned b = 0; b < a; b++) {
			const char *pa = p->secrets[a].pub.placeholder;
			const char *pb = p->secrets[b].pub.placeholder;

			if (!strcmp(pa, pb))
				return FAILN(c, ph[a], "secret '%s' has the same placeholder as secret "
					     "'%s' (line %u)", p->secrets[a].pub.name,
					     p->secrets[b].pub.name, ph[b]->line);
			if (strstr(pa, pb) || strstr(pb, pa))
				return FAILN(c, ph[a], "placeholder of secret '%s' %s the placeholder "
					     "of secret '%s' (line %u); placeholders must not be "
					     "substrings or prefixes of one another, or a swap would "
					     "be ambiguous", p->secrets[a].pub.name,
					     strstr(pa, pb) ? "contains" : "is contained in",
					     p->secrets[b].pub.name, ph[b]->line);
		}
	return 0;
}

/* ---- limits, upstream CA, DNS, network ---- */

static int compile_limits(struct cc *c, const struct ynode *n)
{
	static const char *const keys[] = { "max_header_bytes", "body_buffer_bytes",
					    "max_connections", "idle_timeout_s",
					    "request_timeout_s" };
	static const unsigned long lo[] = { 1024, 4096, 1, 1, 1 };
	static const unsigned long hi[] = { 1048576, 16777216, 65536, 86400, 86400 };
	struct pol_limits *l = &c->p->limits;
	const struct ynode *v[5];
	unsigned long x[5] = { l->max_header_bytes, l->body_buffer_bytes, l->max_connections,
			       l->idle_timeout_s, l->request_timeout_s };
	char what[40];
	int rc = want(c, n, Y_MAP, "'limits'");

	if (!rc)
		rc = map_keys(c, n, "'limits'", keys, 5, v);
	for (unsigned i = 0; i < 5 && !rc; i++) {
		snprintf(what, sizeof(what), "'%s'", keys[i]);
		if (v[i])
			rc = get_uint(c, v[i], what, lo[i], hi[i], &x[i]);
	}
	if (rc)
		return rc;
	l->max_header_bytes = x[0];
	l->body_buffer_bytes = x[1];
	l->max_connections = (unsigned)x[2];
	l->idle_timeout_s = (unsigned)x[3];
	l->request_timeout_s = (unsigned)x[4];
	return 0;
}

static int compile_upstream_ca(struct cc *c, const struct ynode *n)
{
	char b[80];
	struct stat st;
	int fd, rc = want(c, n, Y_SCALAR, "'upstream_ca'");

	if (rc)
		return rc;
	q(n->s, n->len, b, sizeof(b));
	if (n->s[0] != '/' || n->len >= PATH_MAX)
		return FAILN(c, n, "upstream_ca '%s' must be an absolute path", b);
	fd = open(n->s, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return FAILN(c, n, "upstream_ca '%s' cannot be opened: %s", b, strerror(errno));
	rc = fstat(fd, &st) ? -errno : 0;
	close(fd);
	if (rc || !S_ISREG(st.st_mode))
		return FAILN(c, n, "upstream_ca '%s' is not a regular file", b);
	c->p->upstream_ca = astr(c, n->s, n->len);
	return c->p->upstream_ca ? 0 : OOM(c);
}

static int compile_dns(struct cc *c, const struct ynode *n)
{
	static const char *const keys[] = { "mode", "resolver" };
	const struct ynode *v[2];
	char b[80];
	int rc = want(c, n, Y_MAP, "'dns'");

	if (!rc)
		rc = map_keys(c, n, "'dns'", keys, 2, v);
	if (!rc && v[0]) {
		rc = want(c, v[0], Y_SCALAR, "'mode'");
		if (!rc && !strcmp(v[0]->s, "forward"))
			c->p->dns_mode = POL_DNS_FORWARD;
		else if (!rc && !strcmp(v[0]->s, "allowlist"))
			c->p->dns_mode = POL_DNS_ALLOWLIST;
		else if (!rc)
			rc = FAILN(c, v[0], "dns mode must be forward or allowlist, got '%s'",
				   q(v[0]->s, v[0]->len, b, sizeof(b)));
	}
	if (!rc && v[1]) {
		struct sockaddr_storage ss;
		char out[NETADDR_STR_MAX];
		socklen_t sl;

		rc = want(c, v[1], Y_SCALAR, "'resolver'");
		if (rc)
			return rc;
		q(v[1]->s, v[1]->len, b, sizeof(b));
		if (strlen(v[1]->s) != v[1]->len || netaddr_parse(v[1]->s, 53, &ss, &sl) < 0)
			goto out_bad_resolver;
		netaddr_str(&ss, out, sizeof(out)); /* one spelling: "ip:port", "[v6]:port" */
		c->p->dns_resolver = astr(c, out, strlen(out));
		if (!c->p->dns_resolver)
			return OOM(c);
	}
	return rc;
out_bad_resolver:
	return FAILN(c, v[1], "invalid dns resolver '%s': use ip, ip:port or [ipv6]:port", b);
}

static int parse_cidr(const char *s, struct cidr *out, const char **why)
{
	char addr[64];
	const char *slash = strchr(s, '/');
	size_t al = slash ? (size_t)(slash - s) : strlen(s);
	unsigned long pfx;
	unsigned max;

	*why = "not an address or CIDR (a.b.c.d/n or ipv6/n)";
	if (!al || al >= sizeof(addr))
		return -EINVAL;
	memcpy(addr, s, al);
	addr[al] = '\0';
	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, addr, out->addr) == 1)
		out->family = AF_INET;
	else if (inet_pton(AF_INET6, addr, out->addr) == 1)
		out->family = AF_INET6;
	else
		return -EINVAL;
	max = out->family == AF_INET ? 32 : 128;
	pfx = max;
	if (slash) {
		char *end;

		if (slash[1] < '0' || slash[1] > '9' || strlen(slash + 1) > 3)
			return -EINVAL;
		pfx = strtoul(slash + 1, &end, 10);
		if (*end || pfx > max) {
			*why = "prefix length out of range";
			return -EINVAL;
		}
	}
	out->prefix = (unsigned)pfx;
	for (unsigned bit = (unsigned)pfx; bit < max; bit++)
		if (out->addr[bit / 8] & (0x80 >> (bit % 8))) {
			*why = "host bits are set after the prefix";
			return -EINVAL;
		}
	return 0;
}

/* Ranges network.allow may never open: cloud metadata services, in every
 * form a socket can spell them (v4-mapped is covered by cidr_overlap). */
static const char *const metadata_ranges[] = {
	"169.254.0.0/16",       /* link-local: AWS/GCP/Azure/OCI IMDS 169.254.169.254 */
	"fe80::/10",            /* IPv6 link-local */
	"fd00:ec2::/32",        /* AWS IMDS over IPv6 (fd00:ec2::254) */
	"100.100.100.200/32",   /* Alibaba Cloud metadata */
	"168.63.129.16/32",     /* Azure WireServer */
	"64:ff9b::a9fe:0/112",  /* NAT64 spelling of 169.254.0.0/16 */
};

/* The first metadata range x overlaps (in any spelling), or NULL. */
static const char *metadata_overlap(const struct cidr *x)
{
	for (unsigned m = 0; m < sizeof(metadata_ranges) / sizeof(*metadata_ranges); m++) {
		struct cidr md;
		const char *why;

		parse_cidr(metadata_ranges[m], &md, &why);
		if (cidr_overlap(x, &md))
			return metadata_ranges[m];
	}
	return NULL;
}

static int compile_cidrs(struct cc *c, const struct ynode *n, bool allow)
{
	struct pol *p = c->p;
	struct cidr *out;
	unsigned i = 0;
	char b[80];
	int rc = get_seq(c, n, allow ? "'network.allow'" : "'network.deny'", POL_CIDRS_MAX, true);

	if (rc)
		return rc;
	out = arena_alloc(&p->arena, (n->n ? n->n : 1) * sizeof(*out));
	if (!out)
		return OOM(c);
	for (const struct ynode *x = n->child; x; x = x->next, i++) {
		const char *why, *md;

		rc = want(c, x, Y_SCALAR, "a CIDR");
		if (rc)
			return rc;
		if (parse_cidr(x->s, &out[i], &why))
			return FAILN(c, x, "invalid CIDR '%s': %s", q(x->s, x->len, b, sizeof(b)),
				     why);
		if (allow && (md = metadata_overlap(&out[i])))
			return FAILN(c, x, "network.allow '%s' overlaps the metadata range %s; "
				     "metadata addresses can never be allowed",
				     q(x->s, x->len, b, sizeof(b)), md);
	}
	if (allow) {
		p->net_allow = out;
		p->nnet_allow = i;
	} else {
		p->net_deny = out;
		p->nnet_deny = i;
	}
	return 0;
}

/* One udp port item: an integer 1..65535 or a string "lo-hi", never 53. */
static int compile_udp_port(struct cc *c, const struct ynode *n, struct pol_port_range *r)
{
	const char *dash;
	unsigned long lo, hi;
	char b[64];
	int rc = want(c, n, Y_SCALAR, "a udp port");

	if (rc)
		return rc;
	dash = memchr(n->s, '-', n->len);
	if (!dash) {
		if (!dec_ok(n->s, n->len, 1, 65535, &lo))
			goto out_bad;
		hi = lo;
	} else if (!dec_ok(n->s, (size_t)(dash - n->s), 1, 65535, &lo) ||
		   !dec_ok(dash + 1, n->len - (size_t)(dash + 1 - n->s), lo, 65535, &hi)) {
		goto out_bad;
	}
	if (lo <= 53 && 53 <= hi)
		return FAILN(c, n, "port 53 is DNS: sandbox DNS always goes to sluiced's DNS "
			     "listener");
	r->lo = (uint16_t)lo;
	r->hi = (uint16_t)hi;
	return 0;
out_bad:
	return FAILN(c, n, "a udp port must be an integer from 1 to 65535 or a string \"lo-hi\" "
		     "with 1 <= lo <= hi <= 65535, got '%s'", q(n->s, n->len, b, sizeof(b)));
}

static int compile_udp_rule(struct cc *c, const struct ynode *n, unsigned idx,
			    struct pol_udp_rule *r, struct nset *names)
{
	static const char *const keys[] = { "name", "to", "ports" };
	const struct ynode *v[3], *dup;
	const char *why, *md;
	char where[48], b[80];
	int rc;

	snprintf(where, sizeof(where), "network.udp[%u]", idx);
	rc = want(c, n, Y_MAP, where);
	if (!rc)
		rc = map_keys(c, n, where, keys, 3, v);
	if (rc)
		return rc;
	if (v[0]) {
		rc = want(c, v[0], Y_SCALAR, "'name'");
		if (rc)
			return rc;
		if (!id_ok(v[0]->s, v[0]->len, 1, POL_UDP_NAME_MAX))
			return FAILN(c, v[0], "invalid rule name '%s': 1 to %d of [A-Za-z0-9_.-]",
				     q(v[0]->s, v[0]->len, b, sizeof(b)), POL_UDP_NAME_MAX);
		dup = nset_add(names, v[0]->s, v[0]);
		if (dup)
			return FAILN(c, v[0], "duplicate rule name '%s' (first at line %u)",
				     v[0]->s, dup->line);
		memcpy(r->name, v[0]->s, v[0]->len);
		r->name[v[0]->len] = '\0';
	} else {
		snprintf(r->name, sizeof(r->name), "udp[%u]", idx);
	}
	if (!v[1])
		return FAILN(c, n, "%s has no 'to' (a CIDR or an address)", where);
	if (!v[2])
		return FAILN(c, n, "%s has no 'ports'", where);
	rc = want(c, v[1], Y_SCALAR, "'to'");
	if (rc)
		return rc;
	if (parse_cidr(v[1]->s, &r->to, &why))
		return FAILN(c, v[1], "invalid CIDR '%s': %s", q(v[1]->s, v[1]->len, b, sizeof(b)),
			     why);
	if ((md = metadata_overlap(&r->to)))
		return FAILN(c, v[1], "network.udp 'to: %s' overlaps the metadata range %s; "
			     "metadata addresses can never be allowed",
			     q(v[1]->s, v[1]->len, b, sizeof(b)), md);
	/* ::ffff:a.b.c.d/n is the IPv4 CIDR a.b.c.d/(n-96): one spelling for the
	 * daemon (a shorter prefix would cover 169.254.0.0/16, refused above) */
	r->to = cidr_unmap(&r->to);
	rc = get_seq(c, v[2], "'ports'", POL_UDP_PORTS_MAX, false);
	for (const struct ynode *x = v[2]->child; x && !rc; x = x->next)
		rc = compile_udp_port(c, x, &r->ports[r->nports++]);
	return rc;
}

static int compile_udp(struct cc *c, const struct ynode *n, struct nset *names)
{
	struct pol *p = c->p;
	unsigned i = 0;
	int rc = get_seq(c, n, "'network.udp'", POL_UDP_RULES_MAX, true);

	if (rc || !n->n)
		return rc;
	p->udp = arena_alloc(&p->arena, n->n * sizeof(*p->udp));
	if (!p->udp)
		return OOM(c);
	memset(p->udp, 0, n->n * sizeof(*p->udp));
	for (const struct ynode *x = n->child; x; x = x->next, i++) {
		rc = compile_udp_rule(c, x, i, &p->udp[i], names);
		if (rc)
			return rc;
	}
	p->nudp = i;
	return 0;
}

static int compile_network(struct cc *c, const struct ynode *n, struct nset *names)
{
	static const char *const keys[] = { "deny", "allow", "udp" };
	const struct ynode *v[3];
	int rc = want(c, n, Y_MAP, "'network'");

	if (!rc)
		rc = map_keys(c, n, "'network'", keys, 3, v);
	if (!rc && v[0])
		rc = compile_cidrs(c, v[0], false);
	if (!rc && v[1])
		rc = compile_cidrs(c, v[1], true);
	if (!rc && v[2])
		rc = compile_udp(c, v[2], names);
	return rc;
}

/* ---- top level ---- */

static int compile_root(struct cc *c, const struct ynode *root)
{
	static const char *const keys[] = { "version", "default", "allow", "passthrough",
					    "secrets", "limits",  "upstream_ca", "dns",
					    "network" };
	const struct ynode *v[9], *udp;
	struct nset names;
	unsigned long ver;
	char b[64];
	int rc;

	if (root->type != Y_MAP)
		return FAILN(c, root, "the top level must be a mapping (version, allow, ...), got %s",
			     ytype_name(root));
	rc = map_keys(c, root, "the top level", keys, 9, v);
	if (rc)
		return rc;
	if (!v[0])
		return FAILN(c, root, "missing required key 'version' (add 'version: 1')");
	rc = want(c, v[0], Y_SCALAR, "'version'");
	if (rc)
		return rc;
	if (get_uint(c, v[0], "'version'", 0, 999, &ver) || ver != 1)
		return FAILN(c, v[0], "unsupported version '%s'; the only version is 1",
			     q(v[0]->s, v[0]->len, b, sizeof(b)));
	if (v[1] && (want(c, v[1], Y_SCALAR, "'default'") || strcmp(v[1]->s, "deny")))
		return FAILN(c, v[1], "'default' must be deny (the only default; list what to "
			     "allow under 'allow')");
	/* rule names are unique across allow, passthrough and network.udp */
	udp = v[8] && v[8]->type == Y_MAP ? map_get(v[8], "udp") : NULL;
	rc = nset_init(c, &names, (v[2] ? v[2]->n : 0) + (v[3] ? v[3]->n : 0) +
				  (udp ? udp->n : 0));
	if (!rc && v[2])
		rc = compile_rules(c, v[2], false, &names);
	if (!rc && v[3])
		rc = compile_rules(c, v[3], true, &names);
	if (!rc && v[4])
		rc = compile_secrets(c, v[4]);
	if (!rc && v[5])
		rc = compile_limits(c, v[5]);
	if (!rc && v[6])
		rc = compile_upstream_ca(c, v[6]);
	if (!rc && v[7])
		rc = compile_dns(c, v[7]);
	if (!rc && v[8])
		rc = compile_network(c, v[8], &names);
	return rc;
}

static struct pol *pol_new(const char *source)
{
	struct pol *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	atomic_init(&p->refs, 1);
	p->limits = default_limits;
	p->dns_mode = POL_DNS_FORWARD;
	p->source = arena_strndup(&p->arena, source, strlen(source));
	if (!p->source) {
		free(p);
		return NULL;
	}
	return p;
}

static void pol_free(struct pol *p)
{
	for (unsigned i = 0; i < p->nsecrets; i++)
		secret_value_free(p->secrets[i].value, p->secrets[i].pub.value_len);
	free(p->warnings);
	arena_free(&p->arena);
	free(p);
}

int pol_load_buffer(const char *name, const char *buf, size_t len, struct pol **ret_pol,
		    struct pol_error *err)
{
	return pol_load_buffer_ex(name, buf, len, NULL, NULL, ret_pol, err);
}

int pol_load_buffer_ex(const char *name, const char *buf, size_t len,
		       int (*secret_value)(void *ctx, const char *source,
					   const unsigned char **ret_val, size_t *ret_len),
		       void *ctx, struct pol **ret_pol, struct pol_error *err)
{
	struct cc c = { .name = name ? name : "<buffer>", .buf = buf, .len = len, .err = err,
			.secret_value = secret_value, .secret_ctx = ctx };
	unsigned char md[32];
	unsigned mdlen = 0;
	struct ynode *root = NULL;
	int rc;

	if (len > POL_FILE_MAX)
		return fail_at(&c, -EFBIG, 1, 1, "policy file is %zu bytes; the limit is %d", len,
			       POL_FILE_MAX);
	c.p = pol_new(c.name);
	if (!c.p)
		return fail_at(&c, -ENOMEM, 1, 1, "out of memory");
	rc = yaml_to_tree(&c, &root);
	if (!rc)
		rc = compile_root(&c, root);
	if (!rc && !EVP_Digest(buf, len, md, &mdlen, EVP_sha256(), NULL))
		rc = fail_at(&c, -ENOMEM, 1, 1, "cannot compute sha256");
	arena_free(&c.tmp);
	if (rc) {
		pol_free(c.p);
		return rc;
	}
	strcpy(c.p->hash, "sha256:");
	for (unsigned i = 0; i < mdlen; i++)
		snprintf(c.p->hash + 7 + 2 * i, 3, "%02x", md[i]);
	*ret_pol = c.p;
	return 0;
}

int pol_load_file(const char *path, struct pol **ret_pol, struct pol_error *err)
{
	struct cc c = { .name = path, .err = err };
	struct stat st;
	char *buf = NULL;
	size_t n = 0;
	ssize_t r;
	int fd, rc;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		rc = -errno;
		return fail_at(&c, rc, 0, 0, "cannot open: %s", strerror(-rc));
	}
	if (fstat(fd, &st)) {
		rc = fail_at(&c, -errno, 0, 0, "cannot stat: %s", strerror(errno));
		goto out_close;
	}
	if (S_ISDIR(st.st_mode)) {
		rc = fail_at(&c, -EISDIR, 0, 0, "is a directory");
		goto out_close;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = fail_at(&c, -ENOTSUP, 0, 0, "not a regular file");
		goto out_close;
	}
	if (st.st_size > POL_FILE_MAX) {
		rc = fail_at(&c, -EFBIG, 1, 1, "policy file is %lld bytes; the limit is %d",
			     (long long)st.st_size, POL_FILE_MAX);
		goto out_close;
	}
	buf = malloc(POL_FILE_MAX + 1);
	if (!buf) {
		rc = fail_at(&c, -ENOMEM, 0, 0, "out of memory");
		goto out_close;
	}
	/* bounded: the file may grow while we read, never past the limit + 1 */
	while (n <= POL_FILE_MAX && (r = read(fd, buf + n, POL_FILE_MAX + 1 - n)) != 0) {
		if (r < 0) {
			if (errno == EINTR)
				continue;
			rc = fail_at(&c, -errno, 0, 0, "cannot read: %s", strerror(errno));
			goto out_free;
		}
		n += (size_t)r;
	}
	if (n > POL_FILE_MAX) {
		rc = fail_at(&c, -EFBIG, 1, 1, "policy file is over %d bytes; the limit is %d",
			     POL_FILE_MAX, POL_FILE_MAX);
		goto out_free;
	}
	rc = pol_load_buffer(path, buf, n, ret_pol, err);
out_free:
	free(buf);
out_close:
	close(fd);
	return rc;
}

struct pol *pol_allow_all(void)
{
	struct pol *p = pol_new("builtin");

	if (!p) {
		errno = ENOMEM;
		return NULL;
	}
	p->allow_all = true;
	strcpy(p->hash, "builtin:allow-all");
	return p;
}

struct pol *pol_ref(struct pol *p)
{
	if (p)
		atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
	return p;
}

void pol_unref(struct pol *p)
{
	if (p && atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1)
		pol_free(p);
}

/* ---- matching ---- */

enum pol_verdict pol_match_conn(const struct pol *p, const char *host, uint16_t port,
				const struct pol_rule **ret_rule)
{
	char h[POL_HOST_MAX + 1 + 64];
	const struct pol_rule *r;

	if (!host || host_normalize(host, strlen(host), h, sizeof(h), NULL))
		return POL_DENY;
	if (p->allow_all) {
		if (ret_rule)
			*ret_rule = &allow_all_rule;
		return POL_ALLOW;
	}
	if ((r = first_port_match(p->pts, &p->pt_idx, h, port))) {
		if (ret_rule)
			*ret_rule = r;
		return POL_PASSTHROUGH;
	}
	if ((r = first_port_match(p->rules, &p->rule_idx, h, port))) {
		if (ret_rule)
			*ret_rule = r;
		return POL_ALLOW;
	}
	return POL_DENY;
}

static bool method_ok(const struct pol_rule *r, const char *method)
{
	if (!r->nmethods)
		return true;
	for (unsigned i = 0; i < r->nmethods; i++)
		if (!strcmp(r->methods[i], method))
			return true;
	return false;
}

static bool path_ok(const struct pol_rule *r, const char *path, size_t len)
{
	if (!r->npaths)
		return true;
	for (unsigned i = 0; i < r->npaths; i++)
		if (glob_match(&r->paths[i], path, len))
			return true;
	return false;
}

enum pol_verdict pol_match_request(const struct pol *p, const char *host, uint16_t port,
				   const char *method, const char *path, size_t path_len,
				   const struct pol_rule **ret_rule, const char **ret_reason)
{
	char h[POL_HOST_MAX + 1 + 64];
	const struct hent *cand[CAND_MAX];
	const char *why = NULL, *reason = "no rule allows host";
	uint32_t best = UINT32_MAX, why_idx = UINT32_MAX;
	unsigned nc;

	if (!host || host_normalize(host, strlen(host), h, sizeof(h), NULL)) {
		reason = "invalid host";
		goto out_deny;
	}
	if (!path || pol_path_check(path, path_len, &why)) {
		reason = "invalid path";
		goto out_deny;
	}
	if (!method)
		method = "";
	if (p->allow_all) {
		if (ret_rule)
			*ret_rule = &allow_all_rule;
		return POL_ALLOW;
	}
	nc = host_candidates(&p->rule_idx, h, cand);
	for (unsigned k = 0; k < nc; k++)
		for (uint32_t j = 0; j < cand[k]->n && cand[k]->idx[j] < best; j++) {
			uint32_t i = cand[k]->idx[j];
			const struct pol_rule *r = &p->rules[i];
			const char *fail = !port_ok(r, port)		   ? r->why_port
					   : !method_ok(r, method)	   ? r->why_method
					   : !path_ok(r, path, path_len) ? r->why_path
									   : NULL;

			if (!fail) {
				best = i;
				break;
			}
			if (i < why_idx) {
				why_idx = i;
				reason = fail;
			}
		}
	if (best != UINT32_MAX) {
		if (ret_rule)
			*ret_rule = &p->rules[best];
		return POL_ALLOW;
	}
out_deny:
	if (ret_reason)
		*ret_reason = reason;
	return POL_DENY;
}

bool pol_host_in_policy(const struct pol *p, const char *host)
{
	char h[POL_HOST_MAX + 1 + 64];
	const struct hent *cand[CAND_MAX];

	if (!host || host_normalize(host, strlen(host), h, sizeof(h), NULL))
		return false;
	if (p->allow_all)
		return true;
	return host_candidates(&p->rule_idx, h, cand) || host_candidates(&p->pt_idx, h, cand);
}

const char *pol_rule_name(const struct pol_rule *r)
{
	return r ? r->name : NULL;
}

/* ---- accessors ---- */

unsigned pol_nwarnings(const struct pol *p)
{
	return p->nwarnings;
}

const struct pol_error *pol_warning(const struct pol *p, unsigned i)
{
	return i < p->nwarnings ? &p->warnings[i] : NULL;
}

const char *pol_hash(const struct pol *p)
{
	return p->hash;
}

const char *pol_source(const struct pol *p)
{
	return p->source;
}

unsigned pol_nsecrets(const struct pol *p)
{
	return p->nsecrets;
}

const struct pol_secret *pol_secret_at(const struct pol *p, unsigned i)
{
	return i < p->nsecrets ? &p->secrets[i].pub : NULL;
}

bool pol_secret_host_ok(const struct pol *p, unsigned i, const char *host)
{
	char h[POL_HOST_MAX + 1 + 64];
	size_t hl;

	if (i >= p->nsecrets || !host || host_normalize(host, strlen(host), h, sizeof(h), NULL))
		return false;
	hl = strlen(h);
	for (unsigned k = 0; k < p->secrets[i].nhosts; k++)
		if (host_pat_match(&p->secrets[i].hosts[k], h, hl))
			return true;
	return false;
}

const struct pol_limits *pol_limits(const struct pol *p)
{
	return &p->limits;
}

const char *pol_upstream_ca(const struct pol *p)
{
	return p->upstream_ca;
}

enum pol_dns_mode pol_dns_mode(const struct pol *p)
{
	return p->dns_mode;
}

const char *pol_dns_resolver(const struct pol *p)
{
	return p->dns_resolver;
}

unsigned pol_net_deny_count(const struct pol *p)
{
	return p->nnet_deny;
}

const struct cidr *pol_net_deny_at(const struct pol *p, unsigned i)
{
	return i < p->nnet_deny ? &p->net_deny[i] : NULL;
}

unsigned pol_net_allow_count(const struct pol *p)
{
	return p->nnet_allow;
}

const struct cidr *pol_net_allow_at(const struct pol *p, unsigned i)
{
	return i < p->nnet_allow ? &p->net_allow[i] : NULL;
}

unsigned pol_net_udp_count(const struct pol *p)
{
	return p->nudp;
}

const struct pol_udp_rule *pol_net_udp_at(const struct pol *p, unsigned i)
{
	return i < p->nudp ? &p->udp[i] : NULL;
}

const struct pol_udp_rule *pol_udp_match(const struct pol *p, int family,
					 const unsigned char addr[16], uint16_t port)
{
	if (!p || !addr || !port || (family != AF_INET && family != AF_INET6))
		return NULL;
	for (unsigned i = 0; i < p->nudp; i++) {
		const struct pol_udp_rule *r = &p->udp[i];

		if (!cidr_contains(&r->to, family, addr))
			continue;
		for (unsigned k = 0; k < r->nports; k++)
			if (r->ports[k].lo <= port && port <= r->ports[k].hi)
				return r;
	}
	return NULL;
}

unsigned pol_nallow(const struct pol *p)
{
	return p->nrules;
}

unsigned pol_npassthrough(const struct pol *p)
{
	return p->npts;
}
