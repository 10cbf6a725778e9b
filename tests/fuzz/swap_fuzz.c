// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for user/swap.c. The first bytes of the input build a set,
 * the rest is text:
 *   byte 0        number of pairs (1 + b % 8)
 *   per pair      from_len (1 + b % 24), to_len (b % 16), from bytes, to bytes
 *   next byte     output sink: 0 = unbounded, else k = b % 8 + 1 bytes per round
 *   next byte     number of feed cuts (b % 6), then 2 bytes per cut (offset
 *                 modulo the text length, sorted)
 *   rest          text
 * Invariants: swap_buffer() equals a naive leftmost-longest reference; the
 * stream, cut where the fuzzer says and with the chosen sink, produces the
 * same bytes, hits and count; swap_scan() sees every replaced id; the
 * inverse set (to -> from, when valid) round-trips the replacements'
 * positions harmlessly. swap_query() and swap_basic_auth() run on the text
 * for memory safety (their results are checked for shape only).
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Few dense rows, so the sparse states (failure links) are fuzzed too. */
#define DENSE_MAX 6
#include "swap.c" /* self-contained: the fuzz build links only its own sources */

#define CHECK(c)                                                                  \
	do {                                                                      \
		if (!(c)) {                                                       \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, \
				__LINE__, #c);                                    \
			abort();                                                  \
		}                                                                 \
	} while (0)

struct obuf {
	unsigned char *p;
	size_t len, cap;
	size_t left; /* bounded sink budget for this round */
	bool bounded;
};

static void ob_add(struct obuf *b, const unsigned char *p, size_t n)
{
	if (!n)
		return;
	if (b->len + n > b->cap) {
		size_t nc = b->cap ? b->cap : 256;

		while (nc < b->len + n)
			nc *= 2;
		b->p = realloc(b->p, nc);
		CHECK(b->p);
		b->cap = nc;
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

static int sink(void *arg, const unsigned char *p, size_t n)
{
	struct obuf *b = arg;

	if (b->bounded) {
		if (n > b->left)
			return -ENOBUFS;
		b->left -= n;
	}
	ob_add(b, p, n);
	return 0;
}

static size_t naive(const struct swap_pair *pairs, unsigned n, const unsigned char *in, size_t len,
		    struct obuf *out, uint64_t *mask)
{
	size_t count = 0;

	*mask = 0;
	for (size_t i = 0; i < len;) {
		int best = -1;

		for (unsigned k = 0; k < n; k++)
			if (pairs[k].from_len <= len - i &&
			    !memcmp(in + i, pairs[k].from, pairs[k].from_len) &&
			    (best < 0 || pairs[k].from_len > pairs[best].from_len))
				best = (int)k;
		if (best < 0) {
			ob_add(out, in + i, 1);
			i++;
			continue;
		}
		ob_add(out, pairs[best].to, pairs[best].to_len);
		*mask |= 1ull << pairs[best].id;
		count++;
		i += pairs[best].from_len;
	}
	return count;
}

static void run_stream(const struct swap_set *s, const unsigned char *in, size_t len,
		       const size_t *cuts, unsigned ncuts, size_t k, struct obuf *o,
		       uint64_t *ret_hits, size_t *ret_count)
{
	struct swap_stream *st;
	size_t prev = 0, rounds = 0, limit = 1000 + 100 * (len + 1) * (k ? 1 : 0) * 64;

	CHECK(swap_stream_new(s, &st) == 0);
	o->bounded = k != 0;
	for (unsigned c = 0; c <= ncuts; c++) {
		size_t end = c < ncuts ? cuts[c] : len;

		while (prev < end || swap_stream_pending(st)) {
			ssize_t got;

			o->left = k;
			got = swap_stream_feed(st, in + prev, end - prev, sink, o);
			CHECK(got >= 0 && (size_t)got <= end - prev);
			CHECK(k || (size_t)got == end - prev);
			prev += (size_t)got;
			CHECK(++rounds < limit);
		}
	}
	for (;;) {
		o->left = k;
		if (swap_stream_finish(st, sink, o) == 0)
			break;
		CHECK(k);
		CHECK(++rounds < limit);
	}
	*ret_hits = swap_stream_hits(st);
	*ret_count = swap_stream_replacements(st);
	swap_stream_free(st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct swap_pair pairs[8], inv[8];
	struct swap_set *s = NULL, *is = NULL;
	size_t off = 0, cuts[6], k, len, olen, wcount, count;
	struct obuf want = { 0 }, o = { 0 };
	const unsigned char *text;
	unsigned char *one;
	unsigned n, ncuts;
	uint64_t mask, wmask, hits;
	int r;

	if (size < 1)
		return 0;
	n = 1 + data[off++] % 8;
	for (unsigned i = 0; i < n; i++) {
		size_t fl, tl;

		if (off + 2 > size)
			return 0;
		fl = 1 + data[off] % 24;
		tl = data[off + 1] % 16;
		off += 2;
		if (off + fl + tl > size)
			return 0;
		pairs[i] = (struct swap_pair){ data + off, fl, data + off + fl, tl, i * 9 % 64 };
		inv[i] = (struct swap_pair){ data + off + fl, tl, data + off, fl, i * 9 % 64 };
		off += fl + tl;
	}
	if (off + 2 > size)
		return 0;
	k = data[off] ? data[off] % 8 + 1 : 0;
	ncuts = data[off + 1] % 6;
	off += 2;
	if (off + 2 * ncuts > size)
		return 0;
	text = data + off + 2 * ncuts;
	len = size - off - 2 * ncuts;
	for (unsigned c = 0; c < ncuts; c++) {
		size_t v = (size_t)data[off + 2 * c] << 8 | data[off + 2 * c + 1];

		cuts[c] = len ? v % (len + 1) : 0;
		for (unsigned j = c; j > 0 && cuts[j - 1] > cuts[j]; j--) {
			size_t x = cuts[j];

			cuts[j] = cuts[j - 1];
			cuts[j - 1] = x;
		}
	}

	r = swap_set_new(pairs, n, &s);
	if (r == -EEXIST)
		return 0;
	CHECK(r == 0);

	wcount = naive(pairs, n, text, len, &want, &wmask);
	r = swap_buffer(s, text, len, &one, &olen, &mask);
	CHECK(r == (int)wcount);
	CHECK(olen == want.len && (!olen || !memcmp(one, want.p, olen)));
	CHECK(mask == wmask);
	CHECK((swap_scan(s, text, len) & wmask) == wmask);

	run_stream(s, text, len, cuts, ncuts, k, &o, &hits, &count);
	CHECK(o.len == want.len && (!o.len || !memcmp(o.p, want.p, o.len)));
	CHECK(hits == wmask && count == wcount);

	/* The other direction on the output (what an echo returns). */
	if (swap_set_new(inv, n, &is) == 0) {
		struct obuf w2 = { 0 }, o2 = { 0 };
		size_t c2 = naive(inv, n, one, olen, &w2, &wmask);

		run_stream(is, one, olen, cuts, 0, k, &o2, &hits, &count);
		CHECK(o2.len == w2.len && (!o2.len || !memcmp(o2.p, w2.p, o2.len)));
		CHECK(hits == wmask && count == c2);
		free(w2.p);
		free(o2.p);
		swap_set_free(is);
	}

	/* Helpers: memory safety and shape. */
	{
		const char *names[] = { "a", "api_key", "" };
		char *q = NULL;
		size_t qlen = 0;

		if (swap_query(s, (const char *)text, len, names, 3, &q, &qlen, &mask) == 0 && q) {
			CHECK(strlen(q) <= qlen && mask);
			swap_free_secret(q, qlen);
		}
		q = NULL;
		r = swap_basic_auth(s, (const char *)text, len, k & 3, &q, &qlen, &mask);
		CHECK(r == 0 || r == -EINVAL);
		if (r == 0 && q) {
			CHECK(!strncmp(q, "Basic ", 6) && qlen % 4 == 2 && mask);
			swap_free_secret(q, qlen);
		}
	}

	swap_free_secret(one, olen);
	free(want.p);
	free(o.p);
	swap_set_free(s);
	return 0;
}
