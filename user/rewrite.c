// SPDX-License-Identifier: MIT
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "denyset.h"
#include "policy.h"
#include "rewrite.h"
#include "swap.h"

#define RW_MAX_SECRETS 64 /* hit masks are 64-bit */

struct rw_gen {
	atomic_int refs;
	struct pol *pol;
	unsigned n;
	struct swap_set *detect;        /* every placeholder -> itself, id = index */
	struct swap_set **one;          /* per secret: placeholder -> value (NULL: unavailable) */
	struct swap_set *redact;        /* every available value -> its placeholder */
	struct swap_pair *red_pairs;    /* kept to build per-request sets */
	unsigned nred;
	size_t req_ratio, resp_ratio;
	bool redacts;
	struct denyset *deny;
	void *up_tls;
	void (*up_tls_free)(void *);
	char principal[257];
	enum rw_state state;
};

static size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }
static int refuse(struct rw_req *res, int status, const char *code, const char *pstype,
		  const char *secret, const char *fmt, const char *a, const char *b);

int rw_gen_new(struct pol *pol, struct rw_gen **ret_gen)
{
	struct swap_pair det[RW_MAX_SECRETS], red[RW_MAX_SECRETS];
	unsigned nred = 0;
	struct rw_gen *g;
	int r;

	if (pol_nsecrets(pol) > RW_MAX_SECRETS)
		return -E2BIG;
	g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	atomic_init(&g->refs, 1);
	g->state = RW_ACTIVE;
	g->pol = pol_ref(pol);
	g->n = pol_nsecrets(pol);
	g->req_ratio = 1;
	g->resp_ratio = 1;
	g->one = calloc(g->n ? g->n : 1, sizeof(*g->one));
	if (!g->one) {
		r = -ENOMEM;
		goto out_free;
	}
	for (unsigned i = 0; i < g->n; i++) {
		const struct pol_secret *s = pol_secret_at(pol, i);
		size_t pl = strlen(s->placeholder);

		det[i] = (struct swap_pair){ (const unsigned char *)s->placeholder, pl,
					     (const unsigned char *)s->placeholder, pl, i };
		if (!s->value)
			continue;
		struct swap_pair one = { (const unsigned char *)s->placeholder, pl, s->value,
					 s->value_len, i };

		r = swap_set_new(&one, 1, &g->one[i]);
		if (r < 0)
			goto out_free;
		red[nred++] = (struct swap_pair){ s->value, s->value_len,
						  (const unsigned char *)s->placeholder, pl, i };
		if (ceil_div(s->value_len, pl) > g->req_ratio)
			g->req_ratio = ceil_div(s->value_len, pl);
		if (ceil_div(pl, s->value_len) > g->resp_ratio)
			g->resp_ratio = ceil_div(pl, s->value_len);
	}
	r = swap_set_new(det, g->n, &g->detect);
	if (r < 0)
		goto out_free;
	/* Two secrets with the same real value redact to the first's placeholder. */
	r = swap_set_new(red, nred, &g->redact);
	if (r == -EEXIST) {
		unsigned m = 0;

		for (unsigned i = 0; i < nred; i++) {
			bool dup = false;

			for (unsigned j = 0; j < m; j++)
				dup |= red[j].from_len == red[i].from_len &&
				       !memcmp(red[j].from, red[i].from, red[i].from_len);
			if (!dup)
				red[m++] = red[i];
		}
		nred = m;
		r = swap_set_new(red, nred, &g->redact);
	}
	if (r < 0)
		goto out_free;
	g->redacts = nred > 0;
	g->nred = nred;
	g->red_pairs = calloc(nred ? nred : 1, sizeof(*g->red_pairs));
	if (!g->red_pairs) {
		r = -ENOMEM;
		goto out_free;
	}
	memcpy(g->red_pairs, red, nred * sizeof(*red)); /* point into pol: pinned by g */
	*ret_gen = g;
	return 0;

out_free:
	rw_gen_unref(g);
	return r;
}

struct rw_gen *rw_gen_ref(struct rw_gen *g)
{
	atomic_fetch_add(&g->refs, 1);
	return g;
}

void rw_gen_unref(struct rw_gen *g)
{
	if (!g || atomic_fetch_sub(&g->refs, 1) != 1)
		return;
	for (unsigned i = 0; g->one && i < g->n; i++)
		swap_set_free(g->one[i]);
	free(g->one);
	swap_set_free(g->detect);
	swap_set_free(g->redact);
	free(g->red_pairs);
	ds_free(g->deny);
	if (g->up_tls_free)
		g->up_tls_free(g->up_tls);
	pol_unref(g->pol);
	free(g);
}

struct pol *rw_gen_pol(const struct rw_gen *g) { return g->pol; }

void rw_gen_set_deny(struct rw_gen *g, struct denyset *d)
{
	ds_free(g->deny);
	g->deny = d;
}

const struct denyset *rw_gen_deny(const struct rw_gen *g) { return g->deny; }

void rw_gen_set_upstream_tls(struct rw_gen *g, void *tc, void (*free_fn)(void *))
{
	if (g->up_tls_free)
		g->up_tls_free(g->up_tls);
	g->up_tls = tc;
	g->up_tls_free = free_fn;
}

void *rw_gen_upstream_tls(const struct rw_gen *g) { return g->up_tls; }

void rw_gen_set_principal(struct rw_gen *g, const char *principal, enum rw_state st)
{
	snprintf(g->principal, sizeof(g->principal), "%s", principal ? principal : "");
	g->state = st;
}

const char *rw_gen_principal(const struct rw_gen *g) { return g->principal; }
enum rw_state rw_gen_state(const struct rw_gen *g) { return g->state; }
bool rw_gen_redacts(const struct rw_gen *g) { return g->redacts; }
size_t rw_gen_ratio(const struct rw_gen *g, bool request)
{
	return request ? g->req_ratio : g->resp_ratio;
}
const struct swap_set *rw_gen_redact_set(const struct rw_gen *g) { return g->redact; }
const struct swap_set *rw_gen_detect_set(const struct rw_gen *g) { return g->detect; }
unsigned rw_gen_nsecrets(const struct rw_gen *g) { return g->n; }

/* The response redaction set of one request: the generation's pairs plus the
 * Basic tokens sluice encoded (real token -> placeholder token). */
static int add_resp_pair(const struct rw_gen *g, struct rw_req *res, const char *real_tok,
			 size_t rl, const char *ph_tok, size_t pl, unsigned id)
{
	struct swap_pair pairs[RW_MAX_SECRETS + 8];
	unsigned n = 0;
	struct swap_set *set;

	if (g->nred + 1 > RW_MAX_SECRETS + 8 || res->nextra >= 8)
		return 0;
	for (unsigned i = 0; i < g->nred; i++)
		pairs[n++] = g->red_pairs[i];
	for (unsigned i = 0; i < res->nextra; i++)
		pairs[n++] = (struct swap_pair){ (unsigned char *)res->extra_from[i],
						 res->extra_from_len[i],
						 (unsigned char *)res->extra_to[i],
						 res->extra_to_len[i], res->extra_id[i] };
	res->extra_from[res->nextra] = malloc(rl);
	res->extra_to[res->nextra] = malloc(pl);
	if (!res->extra_from[res->nextra] || !res->extra_to[res->nextra])
		return -ENOMEM;
	memcpy(res->extra_from[res->nextra], real_tok, rl);
	memcpy(res->extra_to[res->nextra], ph_tok, pl);
	res->extra_from_len[res->nextra] = rl;
	res->extra_to_len[res->nextra] = pl;
	res->extra_id[res->nextra] = id;
	pairs[n++] = (struct swap_pair){ (unsigned char *)res->extra_from[res->nextra], rl,
					 (unsigned char *)res->extra_to[res->nextra], pl, id };
	res->nextra++;
	if (swap_set_new(pairs, n, &set) < 0)
		return 0; /* same token twice: the set already covers it */
	swap_set_free(res->resp_set);
	res->resp_set = set;
	return 0;
}

static const char *basic_token(const char *v, size_t len, size_t *ret_len)
{
	size_t i = 0;

	while (i < len && (v[i] == ' ' || v[i] == '\t'))
		i++;
	i += 5; /* "basic" */
	while (i < len && (v[i] == ' ' || v[i] == '\t'))
		i++;
	*ret_len = len - i;
	while (*ret_len && (v[i + *ret_len - 1] == ' ' || v[i + *ret_len - 1] == '\t'))
		(*ret_len)--;
	return v + i;
}

int rw_body_check(const struct rw_gen *g, const char *host, uint64_t mask, struct rw_req *res)
{
	for (unsigned k = 0; k < g->n; k++) {
		const struct pol_secret *s = pol_secret_at(g->pol, k);

		if (!(mask & (1ULL << k)))
			continue;
		if (!pol_secret_host_ok(g->pol, k, host))
			return refuse(res, 403, "secret_out_of_scope", "http_request_denied", s->name,
				      "the placeholder of secret '%s' (in the request body) may not be "
				      "sent to %s", s->name, host);
		if (s->nbody_types && !(res->body_mask & (1ULL << k)))
			return refuse(res, 413, "secret_body_too_large", "http_request_error",
				      s->name,
				      "the body carrying secret '%s' is not rewritten (over max_bytes "
				      "or not a listed content type) for %s", s->name, host);
	}
	return 0;
}

unsigned rw_secret_names(const struct rw_gen *g, uint64_t mask, const char **names, unsigned n)
{
	unsigned k = 0;

	for (unsigned i = 0; i < g->n && k < n; i++)
		if (mask & (1ULL << i))
			names[k++] = pol_secret_at(g->pol, i)->name;
	return k;
}

static bool name_in(const char *name, size_t nl, const char *const *list, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (strlen(list[i]) == nl && strncasecmp(list[i], name, nl) == 0)
			return true;
	return false;
}

static bool is_basic(const char *v, size_t len)
{
	while (len && (*v == ' ' || *v == '\t')) {
		v++;
		len--;
	}
	return len >= 6 && strncasecmp(v, "basic", 5) == 0 && (v[5] == ' ' || v[5] == '\t');
}

/* Every secret whose placeholder appears anywhere in the head. */
static uint64_t scan_head(const struct rw_gen *g, const struct http1_head *h, const char *target,
			  size_t tlen)
{
	uint64_t mask = swap_scan(g->detect, (const unsigned char *)target, tlen);

	for (unsigned i = 0; i < h->nf; i++) {
		const char *v = http1_value(h, i);
		size_t vl = h->f[i].value_len;

		mask |= swap_scan(g->detect, (const unsigned char *)v, vl);
		if (h->f[i].name_len == 13 && !strncasecmp(http1_name(h, i), "authorization", 13) &&
		    is_basic(v, vl)) {
			char *out = NULL;
			size_t ol = 0;
			uint64_t m = 0;

			if (swap_basic_auth(g->detect, v, vl, SWAP_BASIC_USER | SWAP_BASIC_PASSWORD,
					    &out, &ol, &m) == 0)
				mask |= m;
			if (out)
				swap_free_secret(out, ol);
		}
	}
	return mask;
}

static int refuse(struct rw_req *res, int status, const char *code, const char *pstype,
		  const char *secret, const char *fmt, const char *a, const char *b)
{
	res->status = status;
	res->code = code;
	res->pstype = pstype;
	res->secret = secret;
	snprintf(res->detail, sizeof(res->detail), fmt, a, b);
	return 0;
}

static int set_field(struct rw_req *res, unsigned index, char *value, size_t len)
{
	for (unsigned i = 0; i < res->nfields; i++) {
		if (res->fields[i].index == index) {
			swap_free_secret(res->fields[i].value, res->fields[i].len);
			res->fields[i].value = value;
			res->fields[i].len = len;
			return 0;
		}
	}
	struct rw_field *nf = realloc(res->fields, (res->nfields + 1) * sizeof(*nf));

	if (!nf) {
		swap_free_secret(value, len);
		return -ENOMEM;
	}
	res->fields = nf;
	res->fields[res->nfields++] = (struct rw_field){ index, value, len };
	return 0;
}

static const char *field_value(const struct rw_req *res, const struct http1_head *h, unsigned i,
			       size_t *ret_len)
{
	for (unsigned k = 0; k < res->nfields; k++) {
		if (res->fields[k].index == i) {
			*ret_len = res->fields[k].len;
			return res->fields[k].value;
		}
	}
	*ret_len = h->f[i].value_len;
	return http1_value(h, i);
}

static bool media_type_in(const char *ct, size_t len, const char *const *types, unsigned n)
{
	size_t e = 0;

	while (e < len && ct[e] != ';' && ct[e] != ' ' && ct[e] != '\t')
		e++;
	return name_in(ct, e, types, n);
}

int rw_request(const struct rw_gen *g, const char *host, bool plaintext,
	       const struct http1_head *h, const char *target, size_t tlen, struct rw_req *res)
{
	struct pol *pol = g->pol;
	uint64_t mask;
	int r;

	memset(res, 0, sizeof(*res));
	if (!g->n)
		return 0;
	mask = scan_head(g, h, target, tlen);
	res->found = mask;
	for (unsigned k = 0; k < g->n; k++) {
		const struct pol_secret *s = pol_secret_at(pol, k);

		if (!(mask & (1ULL << k)))
			continue;
		if (!pol_secret_host_ok(pol, k, host))
			return refuse(res, 403, "secret_out_of_scope", "http_request_denied", s->name,
				      "the placeholder of secret '%s' may not be sent to %s", s->name,
				      host);
		if (!s->value)
			return refuse(res, 503, "secret_unavailable", "proxy_internal_error", s->name,
				      "secret '%s' is unavailable: %s", s->name,
				      s->unavailable_reason ? s->unavailable_reason : "no value");
		if (plaintext && !s->allow_plaintext)
			return refuse(res, 403, "secret_plaintext_refused", "http_request_denied",
				      s->name,
				      "secret '%s' is never sent over plain http to %s (allow_plaintext)",
				      s->name, host);
	}

	/* Replace, each secret only where its policy lets it be. */
	for (unsigned i = 0; mask && i < h->nf; i++) {
		const char *name = http1_name(h, i);
		size_t nl = h->f[i].name_len;
		bool authz = nl == 13 && !strncasecmp(name, "authorization", 13);

		for (unsigned k = 0; k < g->n; k++) {
			const struct pol_secret *s = pol_secret_at(pol, k);
			const char *v;
			size_t vl;
			unsigned char *out = NULL;
			size_t ol = 0;
			uint64_t m = 0;

			if (!(mask & (1ULL << k)) || !g->one[k])
				continue;
			v = field_value(res, h, i, &vl);
			if (s->in_any_header || name_in(name, nl, s->headers, s->nheaders)) {
				r = swap_buffer(g->one[k], (const unsigned char *)v, vl, &out, &ol, &m);
				if (r < 0)
					return r;
				if (r > 0) {
					res->swapped |= m;
					if (set_field(res, i, (char *)out, ol) < 0)
						return -ENOMEM;
				} else {
					swap_free_secret(out, ol);
				}
				v = field_value(res, h, i, &vl);
			}
			if (authz && (s->in_basic_user || s->in_basic_password) && is_basic(v, vl)) {
				char *bo = NULL;
				size_t bl = 0;
				unsigned which = (s->in_basic_user ? SWAP_BASIC_USER : 0) |
						 (s->in_basic_password ? SWAP_BASIC_PASSWORD : 0);

				m = 0;
				if (swap_basic_auth(g->one[k], v, vl, which, &bo, &bl, &m) == 0 && bo) {
					size_t tl, nl2;
					const char *t = basic_token(v, vl, &tl);
					const char *nt = basic_token(bo, bl, &nl2);

					res->swapped |= m;
					/* the upstream may echo the token it got: redact it */
					if (add_resp_pair(g, res, nt, nl2, t, tl, k) < 0) {
						swap_free_secret(bo, bl);
						return -ENOMEM;
					}
					if (set_field(res, i, bo, bl) < 0)
						return -ENOMEM;
				}
			}
		}
	}

	/* Query parameters. */
	{
		const char *q = memchr(target, '?', tlen);

		for (unsigned k = 0; q && k < g->n; k++) {
			const struct pol_secret *s = pol_secret_at(pol, k);
			const char *cur = res->target ? res->target : target;
			size_t cl = res->target ? res->target_len : tlen;
			const char *cq = memchr(cur, '?', cl);
			char *out = NULL;
			size_t ol = 0;
			uint64_t m = 0;

			if (!(mask & (1ULL << k)) || !g->one[k] || !s->nquery || !cq)
				continue;
			if (swap_query(g->one[k], cq + 1, cl - (size_t)(cq + 1 - cur), s->query,
				       s->nquery, &out, &ol, &m) < 0)
				return -ENOMEM;
			if (!out)
				continue;
			{
				size_t pre = (size_t)(cq + 1 - cur);
				char *nt = malloc(pre + ol + 1);

				if (!nt) {
					swap_free_secret(out, ol);
					return -ENOMEM;
				}
				memcpy(nt, cur, pre);
				memcpy(nt + pre, out, ol);
				nt[pre + ol] = 0;
				swap_free_secret(out, ol);
				if (res->target)
					swap_free_secret(res->target, res->target_len);
				res->target = nt;
				res->target_len = pre + ol;
				res->swapped |= m;
			}
		}
	}

	/* Body: the secrets scoped here whose policy allows this content type. */
	if (h->chunked || h->content_length > 0) {
		size_t ctl = 0;
		const char *ct = http1_get(h, "content-type", &ctl);
		struct swap_pair pairs[RW_MAX_SECRETS];
		unsigned np = 0;

		for (unsigned k = 0; ct && k < g->n; k++) {
			const struct pol_secret *s = pol_secret_at(pol, k);

			if (!s->value || !s->nbody_types || !pol_secret_host_ok(pol, k, host) ||
			    (plaintext && !s->allow_plaintext) ||
			    !media_type_in(ct, ctl, s->body_types, s->nbody_types) ||
			    (h->content_length > 0 && (size_t)h->content_length > s->body_max))
				continue;
			/* chunked bodies: the proxy enforces max_bytes while streaming */
			if (!res->body_max || s->body_max < res->body_max)
				res->body_max = s->body_max;
			pairs[np++] = (struct swap_pair){ (const unsigned char *)s->placeholder,
							  strlen(s->placeholder), s->value,
							  s->value_len, k };
			res->body_mask |= 1ULL << k;
		}
		if (np && swap_set_new(pairs, np, &res->body_set) < 0)
			return -ENOMEM;
	}
	return 0;
}

void rw_req_clear(struct rw_req *res)
{
	for (unsigned i = 0; i < res->nfields; i++)
		swap_free_secret(res->fields[i].value, res->fields[i].len);
	free(res->fields);
	if (res->target)
		swap_free_secret(res->target, res->target_len);
	swap_set_free(res->body_set);
	swap_set_free(res->resp_set);
	for (unsigned i = 0; i < res->nextra; i++) {
		swap_free_secret(res->extra_from[i], res->extra_from_len[i]);
		free(res->extra_to[i]);
	}
	memset(res, 0, sizeof(*res));
}

int rw_response_headers(const struct swap_set *redact, const struct http1_head *h,
			char ***ret_values, size_t **ret_lens)
{
	char **vals;
	size_t *lens;
	int count = 0;

	*ret_values = NULL;
	*ret_lens = NULL;
	if (!redact || !swap_set_max_from(redact) || !h->nf)
		return 0;
	vals = calloc(h->nf, sizeof(*vals));
	lens = calloc(h->nf, sizeof(*lens));
	if (!vals || !lens) {
		free(vals);
		free(lens);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < h->nf; i++) {
		const unsigned char *v = (const unsigned char *)http1_value(h, i);
		unsigned char *out;
		size_t ol;
		int r;

		if (!swap_scan(redact, v, h->f[i].value_len))
			continue;
		r = swap_buffer(redact, v, h->f[i].value_len, &out, &ol, NULL);
		if (r < 0) {
			rw_resp_free(vals, lens, h->nf);
			return r;
		}
		vals[i] = (char *)out;
		lens[i] = ol;
		count += r;
	}
	*ret_values = vals;
	*ret_lens = lens;
	return count;
}

void rw_resp_free(char **values, size_t *lens, unsigned n)
{
	for (unsigned i = 0; values && i < n; i++)
		if (values[i])
			swap_free_secret(values[i], lens[i]);
	free(values);
	free(lens);
}
