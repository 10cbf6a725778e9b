// SPDX-License-Identifier: MIT
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "swap.h"

/* ---- helpers ---- */

struct bytes {
	unsigned char *p;
	size_t len, cap;
};

static void bytes_add(struct bytes *b, const unsigned char *p, size_t n)
{
	if (b->len + n > b->cap) {
		size_t nc = b->cap ? b->cap : 256;

		while (nc < b->len + n)
			nc *= 2;
		b->p = realloc(b->p, nc);
		cr_assert_not_null(b->p);
		b->cap = nc;
	}
	if (n)
		memcpy(b->p + b->len, p, n);
	b->len += n;
}

static bool same(const void *a, size_t al, const void *b, size_t bl)
{
	return al == bl && (!al || !memcmp(a, b, al));
}

static struct swap_set *mkset(const char *const *from, const char *const *to, unsigned n)
{
	struct swap_pair pairs[SWAP_MAX_PAIRS];
	struct swap_set *s = NULL;

	for (unsigned i = 0; i < n; i++) {
		pairs[i] = (struct swap_pair){ (const unsigned char *)from[i], strlen(from[i]),
					       (const unsigned char *)to[i], strlen(to[i]), i };
	}
	cr_assert_eq(swap_set_new(pairs, n, &s), 0);
	return s;
}

/* The obvious quadratic reference: at each position the longest pattern that
 * starts there wins, else the byte is copied. */
static size_t naive(const struct swap_pair *pairs, unsigned n, const unsigned char *in, size_t len,
		    struct bytes *out, uint64_t *mask)
{
	size_t count = 0;

	*mask = 0;
	for (size_t i = 0; i < len;) {
		int best = -1;

		for (unsigned k = 0; k < n; k++) {
			if (pairs[k].from_len <= len - i &&
			    !memcmp(in + i, pairs[k].from, pairs[k].from_len) &&
			    (best < 0 || pairs[k].from_len > pairs[best].from_len))
				best = (int)k;
		}
		if (best < 0) {
			bytes_add(out, in + i, 1);
			i++;
			continue;
		}
		bytes_add(out, pairs[best].to, pairs[best].to_len);
		*mask |= 1ull << pairs[best].id;
		count++;
		i += pairs[best].from_len;
	}
	return count;
}

static int sink_all(void *arg, const unsigned char *p, size_t n)
{
	bytes_add(arg, p, n);
	return 0;
}

/* Stream the input cut at the given offsets (sorted), unbounded sink. */
static void stream_cuts(const struct swap_set *s, const unsigned char *in, size_t len,
			const size_t *cuts, unsigned ncuts, struct bytes *out, uint64_t *mask,
			size_t *count)
{
	struct swap_stream *st;
	size_t prev = 0;

	cr_assert_eq(swap_stream_new(s, &st), 0);
	for (unsigned c = 0; c <= ncuts; c++) {
		size_t end = c < ncuts ? cuts[c] : len;

		cr_assert_eq(swap_stream_feed(st, in + prev, end - prev, sink_all, out),
			     (ssize_t)(end - prev));
		cr_assert(!swap_stream_pending(st));
		prev = end;
	}
	cr_assert_eq(swap_stream_finish(st, sink_all, out), 0);
	*mask = swap_stream_hits(st);
	*count = swap_stream_replacements(st);
	swap_stream_free(st);
}

/* A bounded sink: takes at most `budget` bytes per round, all or nothing. */
struct bounded {
	struct bytes b;
	size_t budget, left;
	unsigned calls;
};

static int sink_bounded(void *arg, const unsigned char *p, size_t n)
{
	struct bounded *bd = arg;

	bd->calls++;
	if (n > bd->left)
		return -ENOBUFS;
	bytes_add(&bd->b, p, n);
	bd->left -= n;
	return 0;
}

/* Stream with a sink of k bytes per round, feeding in pieces of `step`;
 * the caller retries exactly the bytes not taken. */
static void stream_bounded(const struct swap_set *s, const unsigned char *in, size_t len,
			   size_t step, size_t k, struct bytes *out, uint64_t *mask,
			   size_t *count)
{
	struct bounded bd = { .budget = k };
	struct swap_stream *st;
	size_t off = 0, rounds = 0, limit = 64 + 4 * (len + 1) * 1000;

	cr_assert_eq(swap_stream_new(s, &st), 0);
	while (off < len || swap_stream_pending(st)) {
		size_t n = len - off < step ? len - off : step;
		ssize_t got;

		bd.left = k; /* the consumer drained the buffer */
		got = swap_stream_feed(st, in + off, n, sink_bounded, &bd);
		cr_assert(got >= 0 && (size_t)got <= n, "feed returned %zd of %zu", got, n);
		off += (size_t)got;
		cr_assert(++rounds < limit, "no progress");
	}
	for (;;) {
		bd.left = k;
		if (swap_stream_finish(st, sink_bounded, &bd) == 0)
			break;
		cr_assert(++rounds < limit, "no progress in finish");
	}
	cr_assert_eq(swap_stream_feed(st, in, 0, sink_bounded, &bd), -EINVAL);
	*out = bd.b;
	*mask = swap_stream_hits(st);
	*count = swap_stream_replacements(st);
	swap_stream_free(st);
}

static void expect_buf(const struct swap_set *s, const char *in, const char *want,
		       uint64_t want_mask, int want_count)
{
	unsigned char *out;
	size_t olen;
	uint64_t mask;
	int r = swap_buffer(s, (const unsigned char *)in, strlen(in), &out, &olen, &mask);

	cr_assert_eq(r, want_count, "%s: count %d want %d", in, r, want_count);
	cr_assert(olen == strlen(want) && !memcmp(out, want, olen), "%s -> %.*s, want %s", in,
		  (int)olen, out, want);
	cr_assert_eq(mask, want_mask, "%s: mask %lx", in, (unsigned long)mask);
	swap_free_secret(out, olen);
}

/* ---- set construction ---- */

Test(swap, set_errors)
{
	struct swap_set *s = NULL;
	struct swap_pair p[2] = {
		{ (const unsigned char *)"abc", 3, (const unsigned char *)"x", 1, 0 },
		{ (const unsigned char *)"abc", 3, (const unsigned char *)"y", 1, 1 },
	};

	cr_assert_eq(swap_set_new(p, 2, &s), -EEXIST);
	p[1].from_len = 0;
	cr_assert_eq(swap_set_new(p, 2, &s), -EINVAL);
	p[1].from_len = 2;
	p[1].id = 64;
	cr_assert_eq(swap_set_new(p, 2, &s), -EINVAL);
	p[1].id = 1;
	p[1].from = NULL;
	cr_assert_eq(swap_set_new(p, 2, &s), -EINVAL);
	p[1].from = (const unsigned char *)"ab";
	p[1].to = NULL;
	cr_assert_eq(swap_set_new(p, 2, &s), -EINVAL);
	p[1].to_len = 0; /* deletion is fine */
	cr_assert_eq(swap_set_new(p, 2, &s), 0);
	cr_assert_eq(swap_set_max_from(s), 3);
	expect_buf(s, "xabcyabz", "xxyz", 3, 2);
	swap_set_free(s);
	cr_assert_eq(swap_set_new(NULL, 0, &s), 0);
	cr_assert_eq(swap_set_max_from(s), 0);
	expect_buf(s, "anything", "anything", 0, 0);
	swap_set_free(s);
	swap_set_free(NULL);
	swap_stream_free(NULL);
	swap_free_secret(NULL, 0);
}

/* ---- the matching rule ---- */

Test(swap, prefixes_longest_wins)
{
	const char *from[] = { "abc", "abcdef" }, *to[] = { "1", "2" };
	struct swap_set *s = mkset(from, to, 2);

	expect_buf(s, "abcdefg", "2g", 2, 1);
	expect_buf(s, "abcdeabc", "1de1", 1, 2);
	expect_buf(s, "abcabcdef", "12", 3, 2);
	expect_buf(s, "ababcdefabc", "ab21", 3, 2);
	expect_buf(s, "abcde", "1de", 1, 1);
	swap_set_free(s);
}

Test(swap, overlapping_and_adjacent)
{
	const char *from[] = { "aaa" }, *to[] = { "X" };
	struct swap_set *s = mkset(from, to, 1);

	expect_buf(s, "aaaaa", "Xaa", 1, 1);
	expect_buf(s, "aaaaaa", "XX", 1, 2);
	expect_buf(s, "aaaaaaa", "XXa", 1, 2);
	expect_buf(s, "aa", "aa", 0, 0);
	expect_buf(s, "", "", 0, 0);
	swap_set_free(s);

	const char *f2[] = { "abc", "bcd", "cde" }, *t2[] = { "1", "2", "3" };

	s = mkset(f2, t2, 3);
	expect_buf(s, "abcde", "1de", 1, 1); /* leftmost beats the overlaps */
	expect_buf(s, "xbcde", "x2e", 2, 1);
	expect_buf(s, "abcbcdcde", "123", 7, 3); /* adjacent */
	swap_set_free(s);
}

Test(swap, start_end_and_suffixes)
{
	const char *from[] = { "xbcd", "bcd", "cd" }, *to[] = { "<1>", "<2>", "<3>" };
	struct swap_set *s = mkset(from, to, 3);

	expect_buf(s, "xbcd", "<1>", 1, 1);
	expect_buf(s, "bcd", "<2>", 2, 1);
	expect_buf(s, "cd", "<3>", 4, 1);
	expect_buf(s, "cdxbcdbcdcd", "<3><1><2><3>", 7, 4);
	expect_buf(s, "xxbc", "xxbc", 0, 0);
	expect_buf(s, "c", "c", 0, 0);
	/* A shorter pattern that ends inside a longer one starting earlier. */
	swap_set_free(s);
	const char *f2[] = { "abcd", "bc" }, *t2[] = { "L", "S" };

	s = mkset(f2, t2, 2);
	expect_buf(s, "abcd", "L", 1, 1);
	expect_buf(s, "abce", "aSe", 2, 1);
	expect_buf(s, "abcabcd", "aSL", 3, 2);
	swap_set_free(s);
}

Test(swap, binary_values)
{
	static const unsigned char real[] = { 's', 0, 'k', 0xff, 0, '\n', 0x80 };
	static const unsigned char text[] = { 0, 's', 0, 'k', 0xff, 0, '\n', 0x80, 0 };
	struct swap_pair p[2] = {
		{ real, sizeof(real), (const unsigned char *)"PLACEHOLDER_1", 13, 5 },
		{ (const unsigned char *)"\0\0", 2, (const unsigned char *)"Z", 1, 9 },
	};
	struct swap_set *s, *inv;
	struct swap_pair ip = { (const unsigned char *)"PLACEHOLDER_1", 13, real, sizeof(real), 5 };
	unsigned char *out, *back;
	size_t olen, blen;
	uint64_t mask;

	cr_assert_eq(swap_set_new(p, 2, &s), 0);
	cr_assert_eq(swap_buffer(s, text, sizeof(text), &out, &olen, &mask), 1);
	cr_assert_eq(olen, 15);
	cr_assert(!memcmp(out, "\0PLACEHOLDER_1\0", 15));
	cr_assert_eq(mask, 1u << 5);
	cr_assert_eq(swap_set_new(&ip, 1, &inv), 0);
	cr_assert_eq(swap_buffer(inv, out, olen, &back, &blen, &mask), 1);
	cr_assert(blen == sizeof(text) && !memcmp(back, text, blen));
	cr_assert_eq(swap_scan(s, (const unsigned char *)"\0\0\0", 3), 1u << 9);
	swap_free_secret(out, olen);
	swap_free_secret(back, blen);
	swap_set_free(s);
	swap_set_free(inv);
}

Test(swap, scan_reports_every_occurrence)
{
	const char *from[] = { "abc", "bcd", "zz", "abcdef" }, *to[] = { "1", "2", "3", "4" };
	struct swap_set *s = mkset(from, to, 4);

	/* swap_buffer replaces only "abc"; the scan also sees the overlapping "bcd". */
	cr_assert_eq(swap_scan(s, (const unsigned char *)"abcd", 4), 3);
	cr_assert_eq(swap_scan(s, (const unsigned char *)"xabcdefzz", 9), 0xf);
	cr_assert_eq(swap_scan(s, (const unsigned char *)"ab", 2), 0);
	cr_assert_eq(swap_scan(s, (const unsigned char *)"", 0), 0);
	expect_buf(s, "abcd", "1d", 1, 1);
	swap_set_free(s);
}

Test(swap, many_patterns_deep_states)
{
	/* More states than the dense rows hold: the sparse path must agree. */
	struct swap_pair p[SWAP_MAX_PAIRS];
	static unsigned char from[SWAP_MAX_PAIRS][40];
	struct swap_set *s;
	struct bytes text = { 0 }, want = { 0 };
	unsigned char *out;
	size_t olen;
	uint64_t mask, wmask;
	size_t cnt;

	for (unsigned i = 0; i < SWAP_MAX_PAIRS; i++) {
		for (unsigned k = 0; k < 40; k++)
			from[i][k] = (unsigned char)('a' + (i * 7 + k * (i % 5 + 1)) % 26);
		p[i] = (struct swap_pair){ from[i], 10 + i % 30, (const unsigned char *)"#", 1, i };
	}
	cr_assert_eq(swap_set_new(p, SWAP_MAX_PAIRS, &s), 0);
	for (unsigned r = 0; r < 200; r++) {
		unsigned i = (r * 37) % SWAP_MAX_PAIRS;

		bytes_add(&text, from[i], p[i].from_len - (r % 3 == 0));
		bytes_add(&text, (const unsigned char *)"ab", r % 2 + 1);
	}
	cnt = naive(p, SWAP_MAX_PAIRS, text.p, text.len, &want, &wmask);
	cr_assert_eq(swap_buffer(s, text.p, text.len, &out, &olen, &mask), (int)cnt);
	cr_assert(same(out, olen, want.p, want.len));
	cr_assert_eq(mask, wmask);
	swap_free_secret(out, olen);
	free(text.p);
	free(want.p);
	swap_set_free(s);
}

/* ---- streaming: splits ---- */

/* Text with several occurrences of pattern P (length n) and near misses. */
static void build_split_text(const unsigned char *pat, size_t n, struct bytes *t)
{
	bytes_add(t, pat, n);                   /* at the very start */
	bytes_add(t, (const unsigned char *)"-x-", 3);
	bytes_add(t, pat, n > 1 ? n - 1 : 0);   /* a near miss */
	bytes_add(t, (const unsigned char *)"y", 1);
	bytes_add(t, pat, n);
	bytes_add(t, pat, n);                   /* adjacent */
	bytes_add(t, (const unsigned char *)"z", 1);
	bytes_add(t, pat, n);                   /* at the very end */
}

static void check_splits(size_t n, bool three)
{
	unsigned char *pat = malloc(n), *pre = malloc(n);
	const unsigned char real[] = "REAL\0VALUE";
	struct swap_pair p[2];
	struct swap_set *s;
	struct bytes t = { 0 };
	unsigned char *one;
	size_t olen;
	uint64_t omask;
	int ocount;

	for (size_t i = 0; i < n; i++)
		pat[i] = (unsigned char)("PH_abcdefghijklmnopqrstuvwxyz0123456789"[i % 39]);
	memcpy(pre, pat, n);
	p[0] = (struct swap_pair){ pat, n, real, sizeof(real), 0 };
	/* and a prefix of it, so the lookahead matters */
	p[1] = (struct swap_pair){ pre, n / 2 ? n / 2 : 1, (const unsigned char *)"<p>", 3, 1 };
	cr_assert_eq(swap_set_new(p, n / 2 ? 2 : 1, &s), 0);
	build_split_text(pat, n, &t);
	ocount = swap_buffer(s, t.p, t.len, &one, &olen, &omask);
	{
		struct bytes ref = { 0 };
		uint64_t rm;

		cr_assert_eq(naive(p, n / 2 ? 2 : 1, t.p, t.len, &ref, &rm), (size_t)ocount);
		cr_assert(same(ref.p, ref.len, one, olen) && rm == omask);
		cr_assert_geq(ocount, 4);
		free(ref.p);
	}
	for (size_t a = 0; a <= t.len; a++) {
		size_t cuts[2] = { a, 0 };
		struct bytes o = { 0 };
		uint64_t m;
		size_t c;

		stream_cuts(s, t.p, t.len, cuts, 1, &o, &m, &c);
		cr_assert(same(o.p, o.len, one, olen), "n=%zu split at %zu", n, a);
		cr_assert_eq(m, omask);
		cr_assert_eq(c, (size_t)ocount);
		free(o.p);
		for (size_t b = a; three && b <= t.len; b++) {
			struct bytes o3 = { 0 };

			cuts[1] = b;
			stream_cuts(s, t.p, t.len, cuts, 2, &o3, &m, &c);
			cr_assert(same(o3.p, o3.len, one, olen),
				  "n=%zu splits at %zu,%zu", n, a, b);
			cr_assert_eq(c, (size_t)ocount);
			free(o3.p);
		}
	}
	swap_free_secret(one, olen);
	free(t.p);
	free(pat);
	free(pre);
	swap_set_free(s);
}

Test(swap, split_two_feeds_every_offset)
{
	static const size_t lens[] = { 1, 2, 3, 8, 17, 64, 256, 1000 };

	for (unsigned i = 0; i < sizeof(lens) / sizeof(lens[0]); i++)
		check_splits(lens[i], false);
}

Test(swap, split_three_feeds_every_pair)
{
	static const size_t lens[] = { 1, 2, 8, 13, 32 };

	for (unsigned i = 0; i < sizeof(lens) / sizeof(lens[0]); i++)
		check_splits(lens[i], true);
}

Test(swap, holdback_bounded)
{
	/* No match in the text: after each feed everything but the last
	 * max_from - 1 bytes has gone out, and they are a possible prefix. */
	const char *from[] = { "PLACEHOLDER_ABCDEFGH", "XY" }, *to[] = { "r", "s" };
	struct swap_set *s = mkset(from, to, 2);
	struct swap_stream *st;
	struct bytes o = { 0 };
	const char *text = "aaaPLACEHOLDER_ABCDEFG"
			   "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
	size_t n = strlen(text), m = swap_set_max_from(s);

	cr_assert_eq(swap_stream_new(s, &st), 0);
	for (size_t i = 0; i < n; i++) {
		const unsigned char *b = (const unsigned char *)text + i;

		cr_assert_eq(swap_stream_feed(st, b, 1, sink_all, &o), 1);
		cr_assert(o.len + (m - 1) >= i + 1, "held %zu bytes at %zu", i + 1 - o.len, i);
		cr_assert(!memcmp(o.p ? o.p : (unsigned char *)"", text, o.len));
	}
	/* A plain byte that cannot start anything goes out at once. */
	cr_assert_eq(o.len, n);
	cr_assert_eq(swap_stream_feed(st, (const unsigned char *)"PLACE", 5, sink_all, &o), 5);
	cr_assert_eq(o.len, n);
	cr_assert_eq(swap_stream_finish(st, sink_all, &o), 0);
	cr_assert_eq(swap_stream_finish(st, sink_all, &o), 0);
	cr_assert_eq(o.len, n + 5);
	swap_stream_free(st);
	free(o.p);
	swap_set_free(s);
}

/* ---- streaming: bounded output ---- */

Test(swap, bounded_output_k_1_to_7)
{
	static unsigned char big[8192];
	struct swap_pair p[3] = {
		{ (const unsigned char *)"PH_ONE_12345678", 15,
		  (const unsigned char *)"sk-live-1", 9, 0 },
		{ (const unsigned char *)"PH_BIG_abcdefgh", 15, big, sizeof(big), 1 },
		{ (const unsigned char *)"PH_", 3, (const unsigned char *)"", 0, 2 },
	};
	struct swap_set *s;
	struct bytes t = { 0 };
	unsigned char *one;
	size_t olen;
	uint64_t omask;
	int ocount;

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (unsigned char)(i * 31 + 7);
	cr_assert_eq(swap_set_new(p, 3, &s), 0);
	for (unsigned r = 0; r < 40; r++) {
		bytes_add(&t, (const unsigned char *)"hello PH_ONE_12345678 world PH_", 31);
		if (r % 4 == 0)
			bytes_add(&t, (const unsigned char *)"PH_BIG_abcdefgh", 15);
		bytes_add(&t, (const unsigned char *)"PH_ONE_1234567", r % 3 * 7);
	}
	ocount = swap_buffer(s, t.p, t.len, &one, &olen, &omask);
	cr_assert(ocount > 80);
	for (size_t k = 1; k <= 7; k++) {
		static const size_t steps[] = { 1, 2, 5, 16, 100, 100000 };

		for (unsigned si = 0; si < sizeof(steps) / sizeof(steps[0]); si++) {
			struct bytes o;
			uint64_t m;
			size_t c;

			stream_bounded(s, t.p, t.len, steps[si], k, &o, &m, &c);
			cr_assert(same(o.p, o.len, one, olen),
				  "k=%zu step=%zu: %zu bytes, want %zu", k, steps[si], o.len, olen);
			cr_assert_eq(m, omask);
			cr_assert_eq(c, (size_t)ocount);
			free(o.p);
		}
	}
	swap_free_secret(one, olen);
	free(t.p);
	swap_set_free(s);
}

Test(swap, bounded_output_refuses_everything_then_recovers)
{
	const char *from[] = { "PLACEHOLDER" }, *to[] = { "real-secret-value" };
	struct swap_set *s = mkset(from, to, 1);
	struct swap_stream *st;
	struct bounded bd = { 0 };
	const char *in = "xx PLACEHOLDER yy";

	cr_assert_eq(swap_stream_new(s, &st), 0);
	bd.left = 0;
	cr_assert_eq(swap_stream_feed(st, (const unsigned char *)in, strlen(in), sink_bounded, &bd),
		     (ssize_t)strlen(in)); /* taken into the stream, nothing out */
	cr_assert(swap_stream_pending(st));
	cr_assert_eq(swap_stream_finish(st, sink_bounded, &bd), -ENOBUFS);
	bd.left = 5;
	cr_assert_eq(swap_stream_feed(st, NULL, 0, sink_bounded, &bd), 0);
	cr_assert_eq(bd.b.len, 5);
	bd.left = 1000;
	cr_assert_eq(swap_stream_finish(st, sink_bounded, &bd), 0);
	cr_assert(!swap_stream_pending(st));
	cr_assert_eq(bd.b.len, strlen("xx real-secret-value yy"));
	cr_assert(!memcmp(bd.b.p, "xx real-secret-value yy", bd.b.len));
	swap_stream_free(st);
	free(bd.b.p);
	swap_set_free(s);
}

Test(swap, large_input_bounded_retry)
{
	/* More than one ring of input in one feed, with a small output buffer. */
	const char *from[] = { "TOKEN_PLACEHOLDER_0001" }, *to[] = { "t0k3n" };
	struct swap_set *s = mkset(from, to, 1);
	struct bytes t = { 0 }, o;
	unsigned char *one;
	size_t olen, c;
	uint64_t m;

	for (unsigned i = 0; i < 20000; i++) {
		const char *piece = i % 7 ? "abcdefgh" : "TOKEN_PLACEHOLDER_0001";

		bytes_add(&t, (const unsigned char *)piece, strlen(piece));
	}
	cr_assert_eq(swap_buffer(s, t.p, t.len, &one, &olen, &m), 2858);
	stream_bounded(s, t.p, t.len, t.len, 4093, &o, &m, &c);
	cr_assert(same(o.p, o.len, one, olen));
	cr_assert_eq(c, 2858);
	free(o.p);
	swap_free_secret(one, olen);
	free(t.p);
	swap_set_free(s);
}

/* ---- randomized differential test ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	uint64_t x = rng_state;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return rng_state = x;
}

static void rand_bytes(unsigned char *p, size_t n, unsigned alpha)
{
	for (size_t i = 0; i < n; i++) {
		unsigned v = (unsigned)(rnd() % alpha);

		p[i] = v == alpha - 1 && alpha > 3 ? 0 : (unsigned char)('a' + v);
	}
}

/* One case: set -> compare naive, swap_buffer, stream (random cuts, sometimes
 * a bounded sink). */
static void diff_case(const struct swap_pair *p, unsigned n, const unsigned char *in, size_t len,
		      unsigned caseno)
{
	struct swap_set *s;
	struct bytes want = { 0 }, o = { 0 };
	unsigned char *one;
	size_t olen, wcount, c;
	uint64_t wmask, m;
	int r = swap_set_new(p, n, &s);

	if (r == -EEXIST)
		return; /* random duplicate pattern */
	cr_assert_eq(r, 0);
	wcount = naive(p, n, in, len, &want, &wmask);
	cr_assert_eq(swap_buffer(s, in, len, &one, &olen, &m), (int)wcount, "case %u", caseno);
	cr_assert(same(one, olen, want.p, want.len), "case %u", caseno);
	cr_assert_eq(m, wmask, "case %u", caseno);
	cr_assert_eq(swap_scan(s, in, len) & wmask, wmask); /* at least what was replaced */
	if (rnd() % 4) {
		size_t cuts[4];
		unsigned nc = (unsigned)(rnd() % 5);

		for (unsigned i = 0; i < nc; i++)
			cuts[i] = len ? (size_t)(rnd() % (len + 1)) : 0;
		for (unsigned i = 1; i < nc; i++) /* sort */
			for (unsigned j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) {
				size_t x = cuts[j];

				cuts[j] = cuts[j - 1];
				cuts[j - 1] = x;
			}
		stream_cuts(s, in, len, cuts, nc, &o, &m, &c);
	} else {
		stream_bounded(s, in, len, 1 + rnd() % 9, 1 + rnd() % 7, &o, &m, &c);
	}
	cr_assert(same(o.p, o.len, want.p, want.len), "case %u stream", caseno);
	cr_assert_eq(m, wmask, "case %u", caseno);
	cr_assert_eq(c, wcount, "case %u", caseno);
	free(o.p);
	free(want.p);
	swap_free_secret(one, olen);
	swap_set_free(s);
}

Test(swap, randomized_differential, .timeout = 120)
{
	static unsigned char from[8][12], to[8][12], text[300];
	struct swap_pair fw[8], bw[8];

	for (unsigned caseno = 0; caseno < 20000; caseno++) {
		unsigned n = 1 + (unsigned)(rnd() % 6), alpha = 2 + (unsigned)(rnd() % 4);
		size_t len = (size_t)(rnd() % (caseno % 10 ? 40 : 300));

		for (unsigned i = 0; i < n; i++) {
			size_t fl = 1 + (size_t)(rnd() % 6), tl = 1 + (size_t)(rnd() % 8);

			rand_bytes(from[i], fl, alpha);
			rand_bytes(to[i], tl, alpha + 2);
			fw[i] = (struct swap_pair){ from[i], fl, to[i], tl, i * 9 % 64 };
			bw[i] = (struct swap_pair){ to[i], tl, from[i], fl, i * 9 % 64 };
		}
		rand_bytes(text, len, alpha);
		/* plant some whole patterns */
		for (unsigned k = 0; k < 3 && len > 12; k++) {
			unsigned i = (unsigned)(rnd() % n);
			size_t at = (size_t)(rnd() % (len - fw[i].from_len));

			memcpy(text + at, fw[i].from, fw[i].from_len);
		}
		diff_case(fw, n, text, len, caseno); /* request direction */
		/* response direction: the real values back to placeholders, on the
		 * forward output (what an echo would return) */
		{
			struct bytes echo = { 0 };
			uint64_t m;

			naive(fw, n, text, len, &echo, &m);
			diff_case(bw, n, echo.p ? echo.p : text, echo.len, caseno);
			free(echo.p);
		}
	}
}

Test(swap, overlap_across_ring_wrap)
{
	/* An occurrence that starts inside an already replaced match and ends
	 * in a feed longer than the stream's ring must not be noted (its slot
	 * would alias a byte of the new feed and fake a match there). */
	const char *from[] = { "aa" }, *to[] = { "X" };
	struct swap_set *s = mkset(from, to, 1);
	static const size_t sizes[] = { 1000, 16383, 16384, 16385, 40000, 70000 };

	for (unsigned z = 0; z < sizeof(sizes) / sizeof(sizes[0]); z++) {
		struct bytes in = { 0 }, o = { 0 };
		unsigned char *one;
		size_t olen, c, cuts[1] = { 3 };
		uint64_t m;

		bytes_add(&in, (const unsigned char *)"xaa", 3);
		bytes_add(&in, (const unsigned char *)"a", 1);
		for (size_t i = 0; i < sizes[z]; i++)
			bytes_add(&in, (const unsigned char *)"b", 1);
		cr_assert_eq(swap_buffer(s, in.p, in.len, &one, &olen, &m), 1);
		stream_cuts(s, in.p, in.len, cuts, 1, &o, &m, &c);
		cr_assert(same(o.p, o.len, one, olen), "size %zu", sizes[z]);
		cr_assert_eq(c, 1);
		free(o.p);
		free(in.p);
		swap_free_secret(one, olen);
	}
	swap_set_free(s);
}

Test(swap, long_random_streams, .timeout = 120)
{
	/* Texts longer than the ring, random feed sizes up to 3 rings. */
	static unsigned char from[6][300], to[6][12];
	struct swap_pair p[6];

	for (unsigned caseno = 0; caseno < 60; caseno++) {
		unsigned n = 1 + (unsigned)(rnd() % 6), alpha = 2 + (unsigned)(rnd() % 2);
		size_t len = 20000 + (size_t)(rnd() % 60000), off = 0;
		unsigned char *text = malloc(len);
		struct bytes want = { 0 }, o = { 0 };
		struct swap_set *s;
		struct swap_stream *st;
		uint64_t wmask;
		size_t wcount;

		for (unsigned i = 0; i < n; i++) {
			size_t fl = 1 + (size_t)(rnd() % (caseno % 3 ? 5 : 300));

			rand_bytes(from[i], fl, alpha);
			rand_bytes(to[i], 12, 26);
			p[i] = (struct swap_pair){ from[i], fl, to[i], 1 + i, i };
		}
		if (swap_set_new(p, n, &s)) {
			free(text);
			continue;
		}
		rand_bytes(text, len, alpha);
		wcount = naive(p, n, text, len, &want, &wmask);
		cr_assert_eq(swap_stream_new(s, &st), 0);
		while (off < len) {
			size_t k = 1 + (size_t)(rnd() % (rnd() % 2 ? 50000 : 50));

			if (k > len - off)
				k = len - off;
			cr_assert_eq(swap_stream_feed(st, text + off, k, sink_all, &o), (ssize_t)k);
			off += k;
		}
		cr_assert_eq(swap_stream_finish(st, sink_all, &o), 0);
		cr_assert(same(o.p, o.len, want.p, want.len), "case %u", caseno);
		cr_assert_eq(swap_stream_replacements(st), wcount);
		cr_assert_eq(swap_stream_hits(st), wmask);
		swap_stream_free(st);
		swap_set_free(s);
		free(o.p);
		free(want.p);
		free(text);
	}
}

/* ---- Basic auth ---- */

static const char *ph_from[] = { "PH_USER_0000001", "PH_PASS_0000001" };
static const char *ph_to[] = { "alice", "s3cr:t" };

static void expect_basic(const char *in, unsigned which, int want_r, const char *want,
			 uint64_t want_mask)
{
	struct swap_set *s = mkset(ph_from, ph_to, 2);
	char *out = (char *)1;
	size_t olen = 99;
	uint64_t mask = 99;
	int r = swap_basic_auth(s, in, strlen(in), which, &out, &olen, &mask);

	cr_assert_eq(r, want_r, "%s: r=%d", in, r);
	if (!r && !want) {
		cr_assert_null(out, "%s", in);
		cr_assert_eq(olen, 0);
		cr_assert_eq(mask, 0);
	} else if (!r) {
		cr_assert_str_eq(out, want, "%s", in);
		cr_assert_eq(olen, strlen(want));
		cr_assert_eq(mask, want_mask);
		swap_free_secret(out, olen);
	}
	swap_set_free(s);
}

Test(swap, basic_auth)
{
	/* "PH_USER_0000001:PH_PASS_0000001" */
	const char *both = "UEhfVVNFUl8wMDAwMDAxOlBIX1BBU1NfMDAwMDAwMQ==";
	char v[200];

	snprintf(v, sizeof(v), "Basic %s", both);
	/* "alice:s3cr:t" */
	expect_basic(v, SWAP_BASIC_USER | SWAP_BASIC_PASSWORD, 0, "Basic YWxpY2U6czNjcjp0", 3);
	/* "alice:PH_PASS_0000001" */
	expect_basic(v, SWAP_BASIC_USER, 0, "Basic YWxpY2U6UEhfUEFTU18wMDAwMDAx", 1);
	/* "PH_USER_0000001:s3cr:t" */
	expect_basic(v, SWAP_BASIC_PASSWORD, 0, "Basic UEhfVVNFUl8wMDAwMDAxOnMzY3I6dA==", 2);
	expect_basic(v, 0, 0, NULL, 0);
	snprintf(v, sizeof(v), "bAsIc \t %s  ", both);
	expect_basic(v, 3, 0, "Basic YWxpY2U6czNjcjp0", 3);
	snprintf(v, sizeof(v), "BASIC UEhfVVNFUl8wMDAwMDAxOlBIX1BBU1NfMDAwMDAwMQ");
	expect_basic(v, 3, 0, "Basic YWxpY2U6czNjcjp0", 3); /* padding left out */
	/* "u:PH_PASS_0000001x" -> padding "=" variants */
	expect_basic("Basic dTpQSF9QQVNTXzAwMDAwMDF4", 2, 0, "Basic dTpzM2NyOnR4", 2);
	/* "u:PH_PASS_0000001" (17 bytes: one '=' ) */
	expect_basic("Basic dTpQSF9QQVNTXzAwMDAwMDE=", 2, 0, "Basic dTpzM2NyOnQ=", 2);
	expect_basic("Basic dTpQSF9QQVNTXzAwMDAwMDE", 2, 0, "Basic dTpzM2NyOnQ=", 2);
	/* nothing to swap */
	expect_basic("Basic dXNlcjpwYXNz", 3, 0, NULL, 0); /* user:pass */
	/* invalid */
	expect_basic("Bearer dXNlcjpwYXNz", 3, -EINVAL, NULL, 0);
	expect_basic("Basic", 3, -EINVAL, NULL, 0);
	expect_basic("Basic ", 3, -EINVAL, NULL, 0);
	expect_basic("Basicx dXNlcjpwYXNz", 3, -EINVAL, NULL, 0);
	expect_basic("Basic dXNlcjpwYXNz=", 3, -EINVAL, NULL, 0);  /* bad padding */
	expect_basic("Basic dXNlcjpwYXN===", 3, -EINVAL, NULL, 0);
	expect_basic("Basic dXNl cjpwYXNz", 3, -EINVAL, NULL, 0);  /* space inside */
	expect_basic("Basic dXNl*cjpwYXNz", 3, -EINVAL, NULL, 0);  /* bad character */
	expect_basic("Basic dXNlcjpwYXNzA", 3, -EINVAL, NULL, 0);  /* length 4k+1 */
	expect_basic("Basic dXNlcnBhc3M=", 3, -EINVAL, NULL, 0);   /* "userpass": no ':' */
	expect_basic("Basic =dXNlcjpwYXNz", 3, -EINVAL, NULL, 0);
}

/* ---- query ---- */

static void expect_query(const char *in, const char *const *names, unsigned nn, const char *want,
			 uint64_t want_mask)
{
	const char *from[] = { "PH_KEY_00000001", "PH_TOK_00000002" };
	const char *to[] = { "k&y=1 2/é", "tok-._~" };
	struct swap_set *s = mkset(from, to, 2);
	char *out = (char *)1;
	size_t olen = 99;
	uint64_t mask = 99;

	cr_assert_eq(swap_query(s, in, strlen(in), names, nn, &out, &olen, &mask), 0, "%s", in);
	if (!want) {
		cr_assert_null(out, "%s -> %s", in, out);
		cr_assert_eq(mask, 0);
	} else {
		cr_assert_str_eq(out, want, "%s", in);
		cr_assert_eq(olen, strlen(want));
		cr_assert_eq(mask, want_mask);
		swap_free_secret(out, olen);
	}
	swap_set_free(s);
}

Test(swap, query)
{
	const char *k[] = { "api_key" }, *kt[] = { "api_key", "token" };

	expect_query("a=1&api_key=PH_KEY_00000001&b=2", k, 1,
		     "a=1&api_key=k%26y%3D1%202%2F%C3%A9&b=2", 1);
	/* only named params touched */
	expect_query("a=PH_KEY_00000001&api_key=PH_TOK_00000002", k, 1,
		     "a=PH_KEY_00000001&api_key=tok-._~", 2);
	expect_query("a=PH_KEY_00000001", k, 1, NULL, 0);
	/* percent-encoded name and value; other encoded bytes left as they were */
	expect_query("api%5Fkey=%50H_KEY_0000000%31%2Fx&q=%41", k, 1,
		     "api%5Fkey=k%26y%3D1%202%2F%C3%A9%2Fx&q=%41", 1);
	expect_query("api_key=x%2", k, 1, NULL, 0);
	/* repeated params, several names */
	expect_query("api_key=PH_KEY_00000001&api_key=PH_KEY_00000001&token=PH_TOK_00000002",
		     kt, 2,
		     "api_key=k%26y%3D1%202%2F%C3%A9&api_key=k%26y%3D1%202%2F%C3%A9&token=tok-._~",
		     3);
	/* value text around the placeholder kept */
	expect_query("token=Bearer+PH_TOK_00000002;v", kt, 2, "token=Bearer+tok-._~;v", 2);
	/* empty values, params without '=', empty params */
	expect_query("api_key=&api_key&&=PH_KEY_00000001&", k, 1, NULL, 0);
	expect_query("api_key&api_key=PH_KEY_00000001&", k, 1,
		     "api_key&api_key=k%26y%3D1%202%2F%C3%A9&", 1);
	expect_query("", k, 1, NULL, 0);
	expect_query("PH_KEY_00000001", k, 1, NULL, 0); /* a name, not a value */
	/* name compared exactly after decoding */
	expect_query("API_KEY=PH_KEY_00000001&api_key2=PH_KEY_00000001", k, 1, NULL, 0);
	expect_query("api_key=PH_KEY_00000001", NULL, 0, NULL, 0);
}

/* ---- performance ---- */

static unsigned long long sunk;

static int sink_count(void *arg, const unsigned char *p, size_t n)
{
	(void)arg;
	(void)p;
	sunk += n;
	return 0;
}

Test(swap, throughput_100mib_50_patterns, .timeout = 60)
{
	static const char alnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
				    "abcdefghijklmnopqrstuvwxyz0123456789";
	const size_t total = 100u << 20, chunk = 64 * 1024;
	static unsigned char from[50][32];
	struct swap_pair p[50];
	struct swap_set *s;
	struct swap_stream *st;
	unsigned char *data = malloc(total);
	struct timespec t0, t1, c0, c1;
	double secs, cpu;

	cr_assert_not_null(data);
	for (unsigned i = 0; i < 50; i++) {
		memcpy(from[i], "SLUICE_PH_", 10);
		for (unsigned k = 10; k < 32; k++)
			from[i][k] = (unsigned char)alnum[rnd() % 62];
		p[i] = (struct swap_pair){ from[i], 32,
					   (const unsigned char *)"sk-real-value-0123456789",
					   24, i };
	}
	for (size_t i = 0; i < total; i += 8) {
		uint64_t v = rnd();

		memcpy(data + i, &v, 8);
	}
	for (unsigned k = 0; k < 1000; k++) /* some real occurrences */
		memcpy(data + (size_t)k * (total / 1000) + 17, from[k % 50], 32);
	cr_assert_eq(swap_set_new(p, 50, &s), 0);
	cr_assert_eq(swap_stream_new(s, &st), 0);
	/* CPU time decides (a loaded machine must not fail the test); wall
	 * time is printed too. */
	clock_gettime(CLOCK_MONOTONIC, &t0);
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
	for (size_t off = 0; off < total; off += chunk)
		cr_assert_eq(swap_stream_feed(st, data + off, chunk, sink_count, NULL),
			     (ssize_t)chunk);
	cr_assert_eq(swap_stream_finish(st, sink_count, NULL), 0);
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	cpu = (double)(c1.tv_sec - c0.tv_sec) + (double)(c1.tv_nsec - c0.tv_nsec) / 1e9;
	cr_assert_geq(swap_stream_replacements(st), 1000);
	cr_assert_eq(sunk, total - swap_stream_replacements(st) * 8);
	printf("swap: stream 100 MiB, 50 patterns: cpu %.3f s (%.0f MB/s), wall %.3f s\n", cpu,
	       (double)total / 1e6 / cpu, secs);
	fflush(stdout);
	cr_assert_lt(cpu, 2.0, "too slow: %.3f s", cpu);
	swap_stream_free(st);
	swap_set_free(s);
	free(data);
}

Test(swap, throughput_redaction_long_values, .timeout = 60)
{
	/* Response direction: 50 real values of 8 KiB (sparse states). */
	const size_t total = 32u << 20, chunk = 16 * 1024;
	static unsigned char from[50][8192];
	struct swap_pair p[50];
	struct swap_set *s;
	struct swap_stream *st;
	unsigned char *data = malloc(total);
	struct timespec t0, t1;
	double secs;

	cr_assert_not_null(data);
	for (unsigned i = 0; i < 50; i++) {
		for (unsigned k = 0; k < sizeof(from[i]); k += 8) {
			uint64_t v = rnd();

			memcpy(from[i] + k, &v, 8);
		}
		p[i] = (struct swap_pair){ from[i], sizeof(from[i]),
					   (const unsigned char *)"PH_REDACTED_0001", 16, i };
	}
	for (size_t i = 0; i < total; i += 8) {
		uint64_t v = rnd();

		memcpy(data + i, &v, 8);
	}
	for (unsigned k = 0; k < 100; k++)
		memcpy(data + (size_t)k * (total / 100) + 5, from[k % 50], sizeof(from[0]));
	cr_assert_eq(swap_set_new(p, 50, &s), 0);
	cr_assert_eq(swap_stream_new(s, &st), 0);
	sunk = 0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (size_t off = 0; off < total; off += chunk)
		cr_assert_eq(swap_stream_feed(st, data + off, chunk, sink_count, NULL),
			     (ssize_t)chunk);
	cr_assert_eq(swap_stream_finish(st, sink_count, NULL), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	cr_assert_eq(swap_stream_replacements(st), 100);
	cr_assert_eq(sunk, total - 100 * (8192 - 16));
	printf("swap: redaction 32 MiB, 50 x 8 KiB values: %.3f s, %.0f MB/s\n", secs,
	       (double)total / 1e6 / secs);
	fflush(stdout);
	swap_stream_free(st);
	swap_set_free(s);
	free(data);
}
