// SPDX-License-Identifier: MIT
/* Unit tests for user/clienthello.c. Real ClientHellos captured from curl,
 * python3 ssl, node 20 and openssl s_client talking to a recording listener
 * on 127.0.0.1 (tests/unit/data/clienthello/capture.py, test names only),
 * plus hand-built hellos for every error path. Pure: no root, no network. */
#include <criterion/criterion.h>

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clienthello.h"

#define DATA_REL "tests/unit/data/clienthello"
#define CAP_MAX 4096

struct capture {
	const char *file;
	const char *sni; /* NULL: no server_name */
	const char *alpn;
	bool tls13;
	unsigned records;
};

static const struct capture captures[] = {
	{ "curl_h2.bin", "api.example.test", "h2,http/1.1", true, 1 },
	{ "curl_h1.bin", "api.example.test", "http/1.1", true, 1 },
	{ "curl_h2_split2.bin", "api.example.test", "h2,http/1.1", true, 2 },
	{ "python3_ssl.bin", "py.example.test", "http/1.1", true, 1 },
	{ "node20_https.bin", "node.example.test", "", true, 1 },
	{ "openssl_tls12.bin", "tls12.example.test", "", false, 1 },
	{ "openssl_default.bin", "openssl.example.test", "h2,http/1.1", true, 1 },
	{ "openssl_nosni.bin", NULL, "", true, 1 },
	/* sent as "MiXed.Example.TEST." */
	{ "openssl_mixedcase.bin", "mixed.example.test", "", true, 1 },
};
#define NCAP (sizeof(captures) / sizeof(captures[0]))

/* The data directory: relative to the repo root (make runs tests from there),
 * else found from the binary (BUILD/tests/NAME -> repo root). */
static size_t load(const char *file, unsigned char *out, size_t cap)
{
	char path[PATH_MAX], exe[PATH_MAX];
	FILE *f;
	size_t n;
	ssize_t el;

	snprintf(path, sizeof(path), "%s/%s", DATA_REL, file);
	f = fopen(path, "rb");
	if (!f && (el = readlink("/proc/self/exe", exe, sizeof(exe) - 1)) > 0) {
		exe[el] = '\0';
		snprintf(path, sizeof(path), "%s/../../%s/%s", dirname(exe), DATA_REL, file);
		f = fopen(path, "rb");
	}
	cr_assert_not_null(f, "cannot open %s (run from the repo root)", file);
	n = fread(out, 1, cap, f);
	fclose(f);
	cr_assert(n > 0 && n < cap, "%s: %zu bytes", file, n);
	return n;
}

/* What any answer must satisfy, whatever the input. */
static void check_sane(ssize_t r, size_t len, const struct ch_info *ci, const char *why,
		       const char *ctx)
{
	if (r > 0) {
		size_t sl = strnlen(ci->sni, sizeof(ci->sni));

		cr_assert((size_t)r <= len, "%s: %zd > %zu", ctx, r, len);
		cr_assert(sl < sizeof(ci->sni), "%s: sni not terminated", ctx);
		cr_assert_eq(ci->has_sni, sl > 0, "%s", ctx);
		for (size_t i = 0; i < sl; i++)
			cr_assert(ci->sni[i] > 0x20 && ci->sni[i] < 0x7f &&
					  !(ci->sni[i] >= 'A' && ci->sni[i] <= 'Z'),
				  "%s: sni byte %zu", ctx, i);
		cr_assert(sl == 0 || ci->sni[sl - 1] != '.', "%s", ctx);
		cr_assert(strnlen(ci->alpn, sizeof(ci->alpn)) < sizeof(ci->alpn), "%s", ctx);
		return;
	}
	cr_assert(r == -EAGAIN || r == -EINVAL || r == -EMSGSIZE, "%s: %zd", ctx, r);
	if (r != -EAGAIN)
		cr_assert(why && *why, "%s: no reason", ctx);
}

static void expect(const struct capture *c, const unsigned char *b, size_t n, size_t want_r)
{
	struct ch_info ci;
	const char *why = NULL;
	ssize_t r = ch_parse(b, n, &ci, &why);

	cr_assert_eq(r, (ssize_t)want_r, "%s: r=%zd (%s)", c->file, r, why ? why : "");
	cr_assert_eq(ci.has_sni, c->sni != NULL, "%s", c->file);
	cr_assert_str_eq(ci.sni, c->sni ? c->sni : "", "%s", c->file);
	cr_assert_str_eq(ci.alpn, c->alpn, "%s", c->file);
	cr_assert_not(ci.alpn_partial, "%s", c->file);
	cr_assert_eq(ci.tls13_offered, c->tls13, "%s", c->file);
	cr_assert_eq(ci.legacy_version, 0x0303, "%s", c->file);
	cr_assert_not(ci.has_ech, "%s", c->file);
}

/* Count the records of a capture; they must all be handshake records. */
static unsigned count_records(const unsigned char *b, size_t n)
{
	unsigned k = 0;

	for (size_t off = 0; off + 5 <= n; off += 5 + ((size_t)b[off + 3] << 8 | b[off + 4]))
		k++;
	return k;
}

/* Re-cut the handshake bytes of b[0, n) into records of at most frag bytes
 * (cuts[] if given: explicit sizes). Returns the new length. */
static size_t refragment(const unsigned char *b, size_t n, const size_t *cuts, size_t ncuts,
			 size_t frag, unsigned char *out, size_t cap)
{
	static unsigned char hs[65536];
	size_t hl = 0, o = 0, off = 0, ci = 0;

	while (off + 5 <= n) {
		size_t rl = (size_t)b[off + 3] << 8 | b[off + 4];

		cr_assert(hl + rl <= sizeof(hs));
		memcpy(hs + hl, b + off + 5, rl);
		hl += rl;
		off += 5 + rl;
	}
	for (size_t p = 0; p < hl;) {
		size_t k = ncuts ? (ci < ncuts ? cuts[ci++] : hl - p) : frag;

		if (k > hl - p)
			k = hl - p;
		cr_assert(o + 5 + k <= cap);
		out[o] = 0x16;
		out[o + 1] = b[1];
		out[o + 2] = b[2];
		out[o + 3] = k >> 8;
		out[o + 4] = k & 0xff;
		memcpy(out + o + 5, hs + p, k);
		o += 5 + k;
		p += k;
	}
	return o;
}

Test(clienthello, captures)
{
	unsigned char b[CAP_MAX + 16];

	for (size_t i = 0; i < NCAP; i++) {
		size_t n = load(captures[i].file, b, CAP_MAX);

		cr_assert_eq(count_records(b, n), captures[i].records, "%s", captures[i].file);
		expect(&captures[i], b, n, n);
		/* A ChangeCipherSpec record right behind (middlebox compat) is not
		 * part of the answer. */
		memcpy(b + n, "\x14\x03\x03\x00\x01\x01", 6);
		expect(&captures[i], b, n + 6, n);
		/* NULL out-params are fine */
		cr_assert_eq(ch_parse(b, n, NULL, NULL), (ssize_t)n);
	}
}

Test(clienthello, every_prefix_needs_more)
{
	unsigned char b[CAP_MAX];

	for (size_t i = 0; i < NCAP; i++) {
		size_t n = load(captures[i].file, b, sizeof(b));

		for (size_t k = 0; k < n; k++) {
			struct ch_info ci;
			const char *why = "untouched";
			ssize_t r;

			/* an exactly-sized copy, so ASan builds see any over-read */
			unsigned char *x = malloc(k ? k : 1);

			cr_assert_not_null(x);
			memcpy(x, b, k);
			memset(&ci, 0x5a, sizeof(ci));
			r = ch_parse(x, k, &ci, &why);
			free(x);
			cr_assert_eq(r, -EAGAIN, "%s: prefix %zu: %zd (%s)", captures[i].file, k,
				     r, why);
			cr_assert_str_eq(why, "untouched");
			cr_assert_eq(((unsigned char *)&ci)[0], 0x5a, "ret written on -EAGAIN");
		}
	}
}

/* Every way of cutting each hello into two records, into 1-byte records, and
 * into 7-byte records (a handshake header split across records) gives the
 * same answer; every prefix of a two-record form still needs more. */
Test(clienthello, refragmented)
{
	unsigned char b[CAP_MAX], f[CAP_MAX * 7];

	for (size_t i = 0; i < NCAP; i++) {
		size_t n = load(captures[i].file, b, sizeof(b));
		size_t hl = n - 5 * captures[i].records, m;

		for (size_t cut = 1; cut < hl; cut++) {
			m = refragment(b, n, &cut, 1, 0, f, sizeof(f));
			cr_assert_eq(m, hl + 10);
			expect(&captures[i], f, m, m);
			if (cut % 37 == 1)
				for (size_t k = 0; k < m; k++)
					cr_assert_eq(ch_parse(f, k, NULL, NULL), -EAGAIN,
						     "%s cut %zu prefix %zu", captures[i].file, cut,
						     k);
		}
		m = refragment(b, n, NULL, 0, 1, f, sizeof(f));
		cr_assert_eq(m, hl * 6);
		expect(&captures[i], f, m, m);
		m = refragment(b, n, NULL, 0, 3, f, sizeof(f));
		expect(&captures[i], f, m, m);
		for (size_t k = 0; k < m; k++)
			cr_assert_eq(ch_parse(f, k, NULL, NULL), -EAGAIN);
	}
}

/*
 * Length fields of a capture, found by walking it independently of the
 * parser. strict: the container is fixed, so any other value must be refused
 * (-EINVAL) or, for the record/handshake lengths, wait for bytes (-EAGAIN).
 */
struct lenfield {
	size_t off, size;
	bool strict;
};

static size_t be(const unsigned char *p, size_t k)
{
	size_t v = 0;

	while (k--)
		v = v << 8 | *p++;
	return v;
}

static size_t find_lengths(const unsigned char *b, size_t n, struct lenfield *lf, size_t max)
{
	size_t k = 0, p, end, ee;

#define ADD(o, s, st)                                                 \
	do {                                                          \
		cr_assert(k < max);                                   \
		lf[k++] = (struct lenfield){ .off = (o), .size = (s), .strict = (st) }; \
	} while (0)
	cr_assert_eq(count_records(b, n), 1, "walker handles one record");
	ADD(3, 2, false);               /* record length */
	ADD(6, 3, false);               /* handshake length */
	p = 9 + 2 + 32;
	ADD(p, 1, false);               /* session id */
	p += 1 + b[p];
	ADD(p, 2, false);               /* cipher suites */
	p += 2 + be(b + p, 2);
	ADD(p, 1, false);               /* compression */
	p += 1 + b[p];
	if (p == n)
		return k;
	ADD(p, 2, true);                /* extensions block */
	end = p + 2 + be(b + p, 2);
	cr_assert_eq(end, n);
	for (p += 2; p < end; p = ee) {
		size_t type = be(b + p, 2), el = be(b + p + 2, 2), q = p + 4;

		ADD(p + 2, 2, false);
		ee = q + el;
		if (type == 0) {
			ADD(q, 2, true);        /* ServerNameList */
			ADD(q + 3, 2, true);    /* HostName */
		} else if (type == 16) {
			ADD(q, 2, true);
			/* a protocol's length can re-cut the list validly */
			for (size_t r = q + 2; r < ee; r += 1 + b[r])
				ADD(r, 1, false);
		} else if (type == 43) {
			ADD(q, 1, true);
		}
	}
#undef ADD
	return k;
}

Test(clienthello, length_field_corruptions)
{
	unsigned char b[CAP_MAX], c[CAP_MAX];
	struct lenfield lf[128];
	unsigned refused = 0, waited = 0, accepted = 0;

	for (size_t i = 0; i < NCAP; i++) {
		size_t n = load(captures[i].file, b, sizeof(b)), nl;

		if (captures[i].records != 1)
			continue;
		nl = find_lengths(b, n, lf, 128);
		cr_assert(nl >= 6);
		for (size_t f = 0; f < nl; f++) {
			for (size_t byte = 0; byte < lf[f].size; byte++) {
				size_t at = lf[f].off + byte;

				for (unsigned v = 0; v < 256; v++) {
					struct ch_info ci;
					const char *why = NULL;
					char ctx[128];
					ssize_t r;

					if (v == b[at])
						continue;
					memcpy(c, b, n);
					c[at] = v;
					r = ch_parse(c, n, &ci, &why);
					snprintf(ctx, sizeof(ctx), "%s: byte %zu = %u", captures[i].file,
						 at, v);
					check_sane(r, n, &ci, why, ctx);
					if (lf[f].strict)
						cr_assert_eq(r, -EINVAL, "%s: %zd", ctx, r);
					refused += r == -EINVAL || r == -EMSGSIZE;
					waited += r == -EAGAIN;
					accepted += r > 0;
				}
			}
		}
	}
	cr_log_info("length corruptions: %u refused, %u need more, %u parsed", refused, waited,
		    accepted);
}

/* Every byte of every capture set to a few values: answers stay sane. */
Test(clienthello, any_byte_corruption)
{
	static const int deltas[] = { 1, -1, 0x80, 0xff };
	unsigned char b[CAP_MAX], c[CAP_MAX];

	for (size_t i = 0; i < NCAP; i++) {
		size_t n = load(captures[i].file, b, sizeof(b));

		for (size_t at = 0; at < n; at++) {
			for (size_t d = 0; d < 6; d++) {
				struct ch_info ci;
				const char *why = NULL;
				ssize_t r;

				memcpy(c, b, n);
				c[at] = d < 4 ? (unsigned char)(b[at] + deltas[d]) : d == 4 ? 0 : 0xff;
				r = ch_parse(c, n, &ci, &why);
				check_sane(r, n, &ci, why, captures[i].file);
			}
		}
	}
}

/* ---- hand-built hellos ---- */

struct hb {
	unsigned char b[40000];
	size_t n;
};

static void put(struct hb *h, const void *p, size_t k)
{
	cr_assert(h->n + k <= sizeof(h->b));
	memcpy(h->b + h->n, p, k);
	h->n += k;
}

static void put8(struct hb *h, unsigned v)
{
	unsigned char x = v;

	put(h, &x, 1);
}

static void put16(struct hb *h, unsigned v)
{
	put8(h, v >> 8);
	put8(h, v);
}

static void put24(struct hb *h, unsigned v)
{
	put8(h, v >> 16);
	put16(h, v);
}

static void ext(struct hb *e, unsigned type, const void *data, size_t k)
{
	put16(e, type);
	put16(e, k);
	put(e, data, k);
}

static void ext_sni(struct hb *e, const char *name, size_t k)
{
	struct hb d = { .n = 0 };

	put16(&d, k + 3);
	put8(&d, 0);
	put16(&d, k);
	put(&d, name, k);
	ext(e, 0, d.b, d.n);
}

/* ALPN from "a,b,c"-style text where '|' separates entries (so ',' can be
 * inside one). */
static void ext_alpn(struct hb *e, const char *list)
{
	struct hb d = { .n = 0 }, l = { .n = 0 };
	char tmp[512];

	snprintf(tmp, sizeof(tmp), "%s", list);
	for (char *s = tmp, *t; s; s = t) {
		t = strchr(s, '|');
		if (t)
			*t++ = '\0';
		put8(&l, strlen(s));
		put(&l, s, strlen(s));
	}
	put16(&d, l.n);
	put(&d, l.b, l.n);
	ext(e, 16, d.b, d.n);
}

/* A whole single-record hello around extension bytes (exts NULL: no block). */
static void hello(struct hb *h, const struct hb *exts)
{
	struct hb body = { .n = 0 };
	unsigned char random[32] = { 0 };

	put16(&body, 0x0303);
	put(&body, random, 32);
	put8(&body, 0);                                 /* session id */
	put16(&body, 4);
	put(&body, "\x13\x01\x0a\x0a", 4);              /* suites, one GREASE */
	put8(&body, 1);
	put8(&body, 0);                                 /* null compression */
	if (exts) {
		put16(&body, exts->n);
		put(&body, exts->b, exts->n);
	}
	h->n = 0;
	put(h, "\x16\x03\x01", 3);
	put16(h, body.n + 4);
	put8(h, 1);
	put24(h, body.n);
	put(h, body.b, body.n);
}

static ssize_t parse(const struct hb *h, struct ch_info *ci, const char **why)
{
	*why = NULL;
	memset(ci, 0, sizeof(*ci));
	return ch_parse(h->b, h->n, ci, why);
}

#define REFUSED(h, reason)                                                        \
	do {                                                                      \
		struct ch_info ci_;                                               \
		const char *why_;                                                 \
		ssize_t r_ = parse((h), &ci_, &why_);                             \
		cr_assert_eq(r_, -EINVAL, "r=%zd (%s)", r_, why_ ? why_ : "");   \
		cr_assert_str_eq(why_, (reason));                                 \
	} while (0)

static void sni_case(const char *name, size_t k, const char *want, const char *reason)
{
	struct hb e = { .n = 0 }, h;
	struct ch_info ci;
	const char *why;
	ssize_t r;

	ext_sni(&e, name, k);
	hello(&h, &e);
	r = parse(&h, &ci, &why);
	if (want) {
		cr_assert_eq(r, (ssize_t)h.n, "%.*s: %s", (int)k, name, why ? why : "");
		cr_assert_str_eq(ci.sni, want);
		cr_assert(ci.has_sni);
	} else {
		cr_assert_eq(r, -EINVAL, "%.*s", (int)k, name);
		cr_assert_str_eq(why, reason, "%.*s", (int)k, name);
	}
}

Test(clienthello, sni_rules)
{
	char big[300], want[300];

	sni_case("API.Example.TEST.", 17, "api.example.test", NULL);
	sni_case("a", 1, "a", NULL);
	sni_case("127.0.0.1", 9, "127.0.0.1", NULL);    /* policy decides */
	sni_case("xn--bcher-kva.example", 21, "xn--bcher-kva.example", NULL);
	sni_case("", 0, NULL, "host_name is empty");
	sni_case(".", 1, NULL, "host_name is empty");
	sni_case("a..", 3, NULL, "host_name has an empty label");
	sni_case(".a", 2, NULL, "host_name has an empty label");
	sni_case("a..b", 4, NULL, "host_name has an empty label");
	sni_case("a\0b", 3, NULL, "host_name contains NUL");
	sni_case("a b", 3, NULL, "host_name has a byte that is not visible ASCII");
	sni_case("b\xc3\xbc" "cher", 7, NULL, "host_name has a byte that is not visible ASCII");
	sni_case("a\x7f", 2, NULL, "host_name has a byte that is not visible ASCII");
	memset(big, 'a', sizeof(big));
	big[254] = '.';                                 /* 254 a's + '.' */
	big[255] = '\0';
	memset(want, 'a', 254);
	want[254] = '\0';
	sni_case(big, 255, want, NULL);
	big[253] = '.';                                 /* 253 a's + ".." */
	sni_case(big, 255, NULL, "host_name has an empty label");
	memset(big, 'a', sizeof(big));
	big[255] = '\0';
	sni_case(big, 255, big, NULL);                  /* 255 a's */
	big[255] = '.';
	big[256] = '\0';
	sni_case(big, 256, NULL, "host_name longer than 255 bytes");
}

Test(clienthello, sni_list_shape)
{
	struct hb e = { .n = 0 }, h, d = { .n = 0 };

	/* two host_names */
	put16(&d, 2 * 4);
	put8(&d, 0);
	put16(&d, 1);
	put8(&d, 'a');
	put8(&d, 0);
	put16(&d, 1);
	put8(&d, 'b');
	ext(&e, 0, d.b, d.n);
	hello(&h, &e);
	REFUSED(&h, "server_name list holds more than one name");

	/* name type 1 */
	e.n = d.n = 0;
	put16(&d, 4);
	put8(&d, 1);
	put16(&d, 1);
	put8(&d, 'a');
	ext(&e, 0, d.b, d.n);
	hello(&h, &e);
	REFUSED(&h, "server_name type is not host_name");

	/* empty extension (what a server sends) */
	e.n = 0;
	ext(&e, 0, "", 0);
	hello(&h, &e);
	REFUSED(&h, "server_name list length overflows");

	/* empty list */
	e.n = 0;
	ext(&e, 0, "\0\0", 2);
	hello(&h, &e);
	REFUSED(&h, "server_name list is empty");

	/* list shorter than the extension */
	e.n = d.n = 0;
	put16(&d, 4);
	put8(&d, 0);
	put16(&d, 1);
	put8(&d, 'a');
	put8(&d, 0);
	ext(&e, 0, d.b, d.n);
	hello(&h, &e);
	REFUSED(&h, "data after server_name list");

	/* the same extension twice: which one would the upstream believe? */
	e.n = 0;
	ext_sni(&e, "a.test", 6);
	ext_sni(&e, "b.test", 6);
	hello(&h, &e);
	REFUSED(&h, "duplicate extension");
}

Test(clienthello, alpn_rules)
{
	struct hb e = { .n = 0 }, h;
	struct ch_info ci;
	const char *why;
	char list[400];

	ext_alpn(&e, "h2|http/1.1");
	hello(&h, &e);
	cr_assert_eq(parse(&h, &ci, &why), (ssize_t)h.n);
	cr_assert_str_eq(ci.alpn, "h2,http/1.1");
	cr_assert_not(ci.alpn_partial);
	cr_assert_not(ci.has_sni);

	/* a name with ',' or a control byte cannot be shown joined: left out */
	e.n = 0;
	ext_alpn(&e, "a,b|h2|x\ty|http/1.1");
	hello(&h, &e);
	cr_assert_eq(parse(&h, &ci, &why), (ssize_t)h.n);
	cr_assert_str_eq(ci.alpn, "h2,http/1.1");
	cr_assert(ci.alpn_partial);

	/* more than fits: whole names only, in order, always terminated */
	list[0] = '\0';
	for (int i = 0; i < 40; i++)
		snprintf(list + strlen(list), sizeof(list) - strlen(list), "%sproto%02d",
			 i ? "|" : "", i);
	e.n = 0;
	ext_alpn(&e, list);
	hello(&h, &e);
	cr_assert_eq(parse(&h, &ci, &why), (ssize_t)h.n);
	cr_assert(ci.alpn_partial);
	cr_assert(strlen(ci.alpn) < sizeof(ci.alpn));
	cr_assert_eq(strncmp(ci.alpn, "proto00,proto01,", 16), 0);
	cr_assert_eq(strlen(ci.alpn) % 8, 7, "%s", ci.alpn);

	e.n = 0;
	ext_alpn(&e, "h2||http/1.1");
	hello(&h, &e);
	REFUSED(&h, "ALPN protocol is empty");

	e.n = 0;
	ext(&e, 16, "\x00\x03\x03h2", 5);
	hello(&h, &e);
	REFUSED(&h, "ALPN protocol length overflows");

	e.n = 0;
	ext(&e, 16, "\x00\x00", 2);
	hello(&h, &e);
	REFUSED(&h, "ALPN list is empty");

	e.n = 0;
	ext(&e, 16, "\x00\x03\x02h2\x00", 6);
	hello(&h, &e);
	REFUSED(&h, "data after ALPN list");
}

Test(clienthello, versions_grease_ech)
{
	struct hb e = { .n = 0 }, h;
	struct ch_info ci;
	const char *why;

	ext(&e, 0x0a0a, "", 0);                                  /* GREASE ext */
	ext(&e, 43, "\x06\x3a\x3a\x03\x04\x03\x03", 7);          /* GREASE, 1.3, 1.2 */
	ext_sni(&e, "public.example.test", 19);
	ext(&e, 0xfe0d, "\x00\x00\x01\x00\x01\x01\x00\x00\x00\x00", 10);
	ext(&e, 0xfafa, "\x00", 1);                              /* GREASE ext */
	hello(&h, &e);
	cr_assert_eq(parse(&h, &ci, &why), (ssize_t)h.n, "%s", why);
	cr_assert(ci.tls13_offered);
	cr_assert(ci.has_ech);
	cr_assert_str_eq(ci.sni, "public.example.test");          /* the outer name */
	cr_assert_eq(ci.legacy_version, 0x0303);

	e.n = 0;
	ext(&e, 43, "\x02\x03\x03", 3);
	hello(&h, &e);
	cr_assert_eq(parse(&h, &ci, &why), (ssize_t)h.n);
	cr_assert_not(ci.tls13_offered);

	e.n = 0;
	ext(&e, 43, "\x03\x03\x04\x03", 4);
	hello(&h, &e);
	REFUSED(&h, "supported_versions length is invalid");

	e.n = 0;
	ext(&e, 43, "\x00", 1);
	hello(&h, &e);
	REFUSED(&h, "supported_versions length is invalid");

	e.n = 0;
	ext(&e, 0xfe0d, "", 0);
	ext(&e, 0xfe0d, "", 0);
	hello(&h, &e);
	REFUSED(&h, "duplicate extension");
}

Test(clienthello, body_shape)
{
	struct hb h, e = { .n = 0 };
	struct ch_info ci;
	const char *why;

	/* no extension block at all (TLS 1.0-era clients) */
	hello(&h, NULL);
	cr_assert_eq(parse(&h, &ci, &why), (ssize_t)h.n);
	cr_assert_not(ci.has_sni);
	cr_assert_str_eq(ci.alpn, "");
	cr_assert_not(ci.tls13_offered);

	/* empty extension block */
	hello(&h, &e);
	cr_assert_eq(parse(&h, &ci, &why), (ssize_t)h.n);

	/* extension header cut short inside the block */
	put(&e, "\x00", 1);
	hello(&h, &e);
	REFUSED(&h, "extension header truncated");

	e.n = 0;
	put(&e, "\x00\x17\x00\x05\x00", 5);
	hello(&h, &e);
	REFUSED(&h, "extension length overflows");

	/* byte 42 of the record is the session id length */
	hello(&h, NULL);
	h.b[5 + 4 + 34] = 33;
	REFUSED(&h, "session id longer than 32 bytes");
	hello(&h, NULL);
	h.b[5 + 4 + 34 + 1 + 1] = 3;                            /* odd suites length */
	REFUSED(&h, "cipher suites length is invalid");
	hello(&h, NULL);
	h.b[5 + 4 + 34 + 1 + 2 + 4] = 0;                        /* no compression */
	REFUSED(&h, "no compression methods");
	hello(&h, NULL);
	h.b[5 + 4] = 2;                                         /* legacy_version 2.3 */
	REFUSED(&h, "ClientHello version is not TLS");

	/* one stray byte after the compression methods */
	hello(&h, NULL);
	h.b[4]++;
	h.b[8]++;
	put8(&h, 0);
	REFUSED(&h, "extensions length overflows");

	/* a byte after the extension block */
	e.n = 0;
	hello(&h, &e);
	h.b[4]++;
	h.b[8]++;
	put8(&h, 0);
	REFUSED(&h, "data after extensions");

	/* a body shorter than version + random */
	h.n = 0;
	put(&h, "\x16\x03\x01\x00\x08\x01\x00\x00\x04\x03\x03\x00\x00", 13);
	REFUSED(&h, "ClientHello truncated");
}

Test(clienthello, records)
{
	struct hb h, e = { .n = 0 };
	struct ch_info ci;
	const char *why;
	ssize_t r;

	h.n = 0;
	put(&h, "GET / HTTP/1.1\r\n\r\n", 18);
	REFUSED(&h, "record type is not handshake");

	/* SSLv2 CLIENT-HELLO (RFC 6101 appendix E.2 framing) */
	h.n = 0;
	put(&h, "\x80\x2e\x01\x03\x01\x00\x15\x00\x00\x00\x10", 11);
	REFUSED(&h, "SSLv2 ClientHello not supported");
	h.n = 2;
	cr_assert_eq(parse(&h, &ci, &why), -EAGAIN);
	h.n = 0;
	put(&h, "\x80\x2e\x02", 3);
	REFUSED(&h, "record type is not handshake");

	h.n = 0;
	put(&h, "\x16\x02", 2);
	REFUSED(&h, "record version is not TLS");

	h.n = 0;
	put(&h, "\x16\x03\x01\x00\x00", 5);
	REFUSED(&h, "empty handshake record");

	h.n = 0;
	put(&h, "\x16\x03\x01\x40\x01", 5);
	REFUSED(&h, "record length exceeds 2^14");

	h.n = 0;
	put(&h, "\x16\x03\x01\x00\x04\x02\x00\x00\x00", 9);    /* ServerHello */
	REFUSED(&h, "handshake message is not ClientHello");

	/* a hello announcing more than CH_MAX_HELLO: refused from its header */
	h.n = 0;
	put(&h, "\x16\x03\x01\x40\x00\x01\x00\x40\x00", 9);
	r = parse(&h, &ci, &why);
	cr_assert_eq(r, -EMSGSIZE);
	cr_assert_str_eq(why, "ClientHello longer than CH_MAX_HELLO");

	/* the largest hello accepted: 16384-byte message, fragmented */
	{
		struct hb big = { .n = 0 }, pad = { .n = 0 };
		static unsigned char f[CH_MAX_BYTES + 64];
		size_t cut = 16000, m;

		hello(&h, &e);
		/* pad extension sized so the message is exactly CH_MAX_HELLO */
		put16(&pad, 21);
		put16(&pad, CH_MAX_HELLO - (h.n - 5) - 4);
		for (size_t i = 0; i < CH_MAX_HELLO - (h.n - 5) - 4; i++)
			put8(&pad, 0);
		hello(&big, &pad);
		cr_assert_eq(big.n, CH_MAX_HELLO + 5);
		cr_assert_eq(parse(&big, &ci, &why), (ssize_t)big.n, "%s", why);
		m = refragment(big.b, big.n, &cut, 1, 0, f, sizeof(f));
		cr_assert_eq(ch_parse(f, m, &ci, &why), (ssize_t)m);
		/* one byte more is too much (in two records: one cannot hold it) */
		pad.b[3]++;
		put8(&pad, 0);
		hello(&big, &pad);
		m = refragment(big.b, big.n, &cut, 1, 0, f, sizeof(f));
		r = ch_parse(f, m, &ci, &why);
		cr_assert_eq(r, -EMSGSIZE, "%zd %s %02x%02x", r, why, pad.b[2], pad.b[3]);
		cr_assert_str_eq(why, "ClientHello longer than CH_MAX_HELLO");
	}

	/* a hello cut into so many records that the headers pass CH_MAX_BYTES */
	{
		struct hb pad = { .n = 0 };
		static unsigned char f[CH_MAX_BYTES * 8];
		size_t m;

		put16(&pad, 21);
		put16(&pad, 8000);
		for (int i = 0; i < 8000; i++)
			put8(&pad, 0);
		hello(&h, &pad);
		m = refragment(h.b, h.n, NULL, 0, 100, f, sizeof(f));
		cr_assert_eq(ch_parse(f, m, &ci, &why), (ssize_t)m, "%s", why);
		m = refragment(h.b, h.n, NULL, 0, 2, f, sizeof(f));
		cr_assert_eq(ch_parse(f, m, &ci, &why), -EMSGSIZE);
		cr_assert_str_eq(why, "ClientHello spans more than CH_MAX_BYTES");
		/* and a full CH_MAX_BYTES peek buffer always gets an answer */
		cr_assert_eq(ch_parse(f, CH_MAX_BYTES, &ci, &why), -EMSGSIZE);
	}

	/* an alert between two fragments */
	{
		unsigned char f[CAP_MAX];
		size_t cut = 50, m;

		ext_sni(&e, "x.example.test", 14);
		hello(&h, &e);
		m = refragment(h.b, h.n, &cut, 1, 0, f, sizeof(f));
		memmove(f + 5 + cut + 7, f + 5 + cut, m - 5 - cut);
		memcpy(f + 5 + cut, "\x15\x03\x03\x00\x02\x01\x00", 7);
		cr_assert_eq(ch_parse(f, m + 7, &ci, &why), -EINVAL);
		cr_assert_str_eq(why, "record type is not handshake");
		/* ... known as soon as its first byte is there */
		cr_assert_eq(ch_parse(f, 5 + cut + 1, &ci, &why), -EINVAL);
	}

	/* another handshake message in the hello's last record */
	hello(&h, &e);
	h.b[4] += 4;
	put(&h, "\x0b\x00\x00\x00", 4);
	REFUSED(&h, "data after ClientHello in its record");
	/* the record header alone says so: no need to wait */
	h.n -= 4;
	REFUSED(&h, "data after ClientHello in its record");
}

Test(clienthello, out_params_untouched_on_error)
{
	struct hb h;
	struct ch_info ci;
	const char *why = "untouched";

	h.n = 0;
	put(&h, "\x17\x03\x03\x00\x01\x00", 6);
	memset(&ci, 0x5a, sizeof(ci));
	cr_assert_eq(ch_parse(h.b, h.n, &ci, NULL), -EINVAL);
	cr_assert_eq(((unsigned char *)&ci)[0], 0x5a);
	cr_assert_eq(ch_parse(h.b, 0, &ci, &why), -EAGAIN);
	cr_assert_str_eq(why, "untouched");
}
