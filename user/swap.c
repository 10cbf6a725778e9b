// SPDX-License-Identifier: MIT
/*
 * swap: Aho-Corasick over the pair patterns, plus a leftmost-longest choice.
 *
 * The automaton reports every occurrence (by its end) in one pass. Each
 * occurrence is noted at its start position: `lp[start]` = pattern + 1, and
 * since occurrences are reported in order of their end, a later note at the
 * same start is a longer pattern and overwrites. A position is *decided* once
 * no occurrence starting there can still be reported: it lies more than
 * `depth(state)` bytes back (every occurrence still open is a suffix of the
 * automaton's state), or a full max_from back. Decided positions are walked
 * greedily: a noted pattern is replaced and the walk jumps past it, anything
 * else is a literal byte. That is exactly leftmost-longest, in linear time,
 * with a lookahead of at most max_from - 1 bytes.
 *
 * States are numbered in BFS order; the first `ndense` (the shallowest, where
 * a scan spends its time) have full 256-entry rows; deeper states keep their
 * sorted child edges and a failure link. State values carry ST_OUT when some
 * pattern ends there (directly or through a dictionary link), so the hot loop
 * tests one bit.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "swap.h"

#define ST_OUT 0x80000000u
#define ST_IDX 0x7fffffffu
#define NONE UINT32_MAX
#ifndef DENSE_MAX
#define DENSE_MAX 512 /* dense rows: at most 512 * 1 KiB per set (the fuzzer lowers it) */
#endif

struct swap_pat {
	unsigned char *from;
	size_t from_len;
	unsigned char *to;
	size_t to_len;
	unsigned id;
};

struct swap_set {
	unsigned npat;
	struct swap_pat *pat;
	size_t max_from;
	uint32_t nstates, ndense;
	uint32_t *dense;      /* ndense * 256 state values */
	uint32_t *fail;       /* state value of the failure link */
	uint32_t *edge_start; /* nstates + 1: children of i are [edge_start[i], edge_start[i+1]) */
	unsigned char *edge_byte;
	uint32_t *edge_to;    /* state values */
	uint32_t *depth;
	uint32_t *out_pat;    /* pattern ending exactly here, or NONE */
	uint32_t *dict;       /* nearest proper suffix state with out_pat, or NONE */
};

void swap_free_secret(void *p, size_t len)
{
	if (!p)
		return;
	explicit_bzero(p, len);
	free(p);
}

static void *dup_bytes(const unsigned char *p, size_t n)
{
	unsigned char *r = malloc(n ? n : 1);

	if (r && n)
		memcpy(r, p, n);
	return r;
}

void swap_set_free(struct swap_set *s)
{
	size_t nst;

	if (!s)
		return;
	nst = s->nstates;
	for (unsigned i = 0; s->pat && i < s->npat; i++) {
		swap_free_secret(s->pat[i].from, s->pat[i].from_len);
		swap_free_secret(s->pat[i].to, s->pat[i].to_len);
	}
	free(s->pat);
	/* The tables spell the patterns (real values, in the response direction). */
	swap_free_secret(s->dense, (size_t)s->ndense * 256 * sizeof(uint32_t));
	swap_free_secret(s->fail, nst * sizeof(uint32_t));
	swap_free_secret(s->edge_start, (nst + 1) * sizeof(uint32_t));
	swap_free_secret(s->edge_byte, nst ? nst : 1);
	swap_free_secret(s->edge_to, nst * sizeof(uint32_t));
	swap_free_secret(s->depth, nst * sizeof(uint32_t));
	swap_free_secret(s->out_pat, nst * sizeof(uint32_t));
	swap_free_secret(s->dict, nst * sizeof(uint32_t));
	free(s);
}

size_t swap_set_max_from(const struct swap_set *s)
{
	return s->max_from;
}

/* Transition from state value st on byte b (failure links below the dense rows). */
static inline uint32_t go(const struct swap_set *s, uint32_t st, unsigned char b)
{
	for (;;) {
		uint32_t i = st & ST_IDX;

		if (i < s->ndense)
			return s->dense[(size_t)i * 256 + b];
		for (uint32_t e = s->edge_start[i]; e < s->edge_start[i + 1]; e++)
			if (s->edge_byte[e] == b)
				return s->edge_to[e];
		st = s->fail[i];
	}
}

/* Temporary trie: first-child / next-sibling lists, insertion order. */
struct trie {
	uint32_t *first, *next, *term;
	unsigned char *byte;
	uint32_t n;
};

static uint32_t trie_child(const struct trie *t, uint32_t u, unsigned char b)
{
	for (uint32_t c = t->first[u]; c != NONE; c = t->next[c])
		if (t->byte[c] == b)
			return c;
	return NONE;
}

static void trie_free(struct trie *t, size_t cap)
{
	swap_free_secret(t->first, cap * sizeof(uint32_t));
	swap_free_secret(t->next, cap * sizeof(uint32_t));
	swap_free_secret(t->term, cap * sizeof(uint32_t));
	swap_free_secret(t->byte, cap);
}

/* BFS renumbering, failure and dictionary links, dense rows, sparse edges. */
static int compile(struct swap_set *s, struct trie *t)
{
	uint32_t n = t->n, *order = NULL, *newid = NULL, *parent_of = NULL;
	unsigned char *byte_of = NULL;
	uint32_t head = 0, tail = 0, ne = 0;
	int r = -ENOMEM;

	order = malloc(n * sizeof(*order));
	newid = malloc(n * sizeof(*newid));
	s->ndense = n < DENSE_MAX ? n : DENSE_MAX;
	s->dense = malloc((size_t)s->ndense * 256 * sizeof(uint32_t));
	s->fail = malloc(n * sizeof(uint32_t));
	s->edge_start = malloc((n + 1) * sizeof(uint32_t));
	s->edge_byte = malloc(n);
	s->edge_to = malloc(n * sizeof(uint32_t));
	s->depth = malloc(n * sizeof(uint32_t));
	s->out_pat = malloc(n * sizeof(uint32_t));
	s->dict = malloc(n * sizeof(uint32_t));
	if (!order || !newid || !s->dense || !s->fail || !s->edge_start || !s->edge_byte ||
	    !s->edge_to || !s->depth || !s->out_pat || !s->dict)
		goto out_free;
	s->nstates = n;

	/* BFS over the trie, children in byte order, so the edge lists come out
	 * sorted and every state's failure target precedes it. */
	order[tail++] = 0;
	newid[0] = 0;
	while (head < tail) {
		uint32_t u = order[head++], first = tail;

		/* Append the children, then insertion-sort them by byte. */
		for (uint32_t c = t->first[u]; c != NONE; c = t->next[c]) {
			uint32_t k = tail++;

			while (k > first && t->byte[order[k - 1]] > t->byte[c]) {
				order[k] = order[k - 1];
				k--;
			}
			order[k] = c;
		}
		for (uint32_t k = first; k < tail; k++)
			newid[order[k]] = k;
	}
	/* Per new state: trie node, parent, byte into it. */
	parent_of = malloc(n * sizeof(*parent_of));
	byte_of = malloc(n);
	if (!parent_of || !byte_of)
		goto out_free;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t u = order[i];

		s->out_pat[i] = t->term[u];
		for (uint32_t c = t->first[u]; c != NONE; c = t->next[c]) {
			parent_of[newid[c]] = i;
			byte_of[newid[c]] = t->byte[c];
		}
	}
	/* Edges: children of state i are the states whose parent is i; in BFS
	 * order they are contiguous and sorted by byte. */
	for (uint32_t i = 0, j = 1; i < n; i++) {
		s->edge_start[i] = ne;
		while (j < n && parent_of[j] == i) {
			s->edge_byte[ne] = byte_of[j];
			s->edge_to[ne++] = j; /* flags added below */
			j++;
		}
	}
	s->edge_start[n] = ne;

	s->depth[0] = 0;
	s->fail[0] = 0;
	s->dict[0] = NONE;
	for (uint32_t i = 0; i < n; i++) {
		/* Links of the children of i (their failure targets are shallower,
		 * hence complete, including their dense rows). */
		for (uint32_t e = s->edge_start[i]; e < s->edge_start[i + 1]; e++) {
			uint32_t v = s->edge_to[e], f, fi;

			s->depth[v] = s->depth[i] + 1;
			f = i == 0 ? 0 : go(s, s->fail[i], s->edge_byte[e]);
			fi = f & ST_IDX;
			s->fail[v] = f;
			s->dict[v] = s->out_pat[fi] != NONE ? fi : s->dict[fi];
			if (s->out_pat[v] != NONE || s->dict[v] != NONE)
				s->edge_to[e] = v | ST_OUT;
		}
		if (i < s->ndense) {
			uint32_t *row = s->dense + (size_t)i * 256;

			if (i == 0) {
				for (unsigned b = 0; b < 256; b++)
					row[b] = 0;
			} else {
				memcpy(row, s->dense + (size_t)(s->fail[i] & ST_IDX) * 256,
				       256 * sizeof(uint32_t));
			}
			for (uint32_t e = s->edge_start[i]; e < s->edge_start[i + 1]; e++)
				row[s->edge_byte[e]] = s->edge_to[e];
		}
	}
	r = 0;
out_free:
	free(order);
	free(newid);
	free(parent_of);
	swap_free_secret(byte_of, n);
	return r;
}

int swap_set_new(const struct swap_pair *pairs, unsigned n, struct swap_set **ret)
{
	struct trie t = { 0 };
	struct swap_set *s;
	size_t cap = 1;
	int r;

	if (n > SWAP_MAX_PAIRS || (n && !pairs))
		return -EINVAL;
	for (unsigned i = 0; i < n; i++) {
		if (!pairs[i].from || !pairs[i].from_len || pairs[i].from_len > SWAP_MAX_FROM ||
		    pairs[i].to_len > SWAP_MAX_TO || (pairs[i].to_len && !pairs[i].to) ||
		    pairs[i].id >= SWAP_MAX_PAIRS)
			return -EINVAL;
		cap += pairs[i].from_len;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	r = -ENOMEM;
	s->pat = calloc(n ? n : 1, sizeof(*s->pat));
	if (!s->pat)
		goto out_free_set;
	s->npat = n;
	for (unsigned i = 0; i < n; i++) {
		struct swap_pat *p = &s->pat[i];

		p->from = dup_bytes(pairs[i].from, pairs[i].from_len);
		p->to = dup_bytes(pairs[i].to, pairs[i].to_len);
		if (!p->from || !p->to)
			goto out_free_set;
		p->from_len = pairs[i].from_len;
		p->to_len = pairs[i].to_len;
		p->id = pairs[i].id;
		if (p->from_len > s->max_from)
			s->max_from = p->from_len;
	}

	t.first = malloc(cap * sizeof(uint32_t));
	t.next = malloc(cap * sizeof(uint32_t));
	t.term = malloc(cap * sizeof(uint32_t));
	t.byte = malloc(cap);
	if (!t.first || !t.next || !t.term || !t.byte)
		goto out_free_trie;
	t.n = 1;
	t.first[0] = t.next[0] = t.term[0] = NONE;
	t.byte[0] = 0;
	for (unsigned i = 0; i < n; i++) {
		uint32_t u = 0;

		for (size_t k = 0; k < s->pat[i].from_len; k++) {
			unsigned char b = s->pat[i].from[k];
			uint32_t c = trie_child(&t, u, b);

			if (c == NONE) {
				c = t.n++;
				t.first[c] = t.term[c] = NONE;
				t.byte[c] = b;
				t.next[c] = t.first[u];
				t.first[u] = c;
			}
			u = c;
		}
		if (t.term[u] != NONE) {
			r = -EEXIST;
			goto out_free_trie;
		}
		t.term[u] = i;
	}
	r = compile(s, &t);
	if (r)
		goto out_free_trie;
	trie_free(&t, cap);
	*ret = s;
	return 0;

out_free_trie:
	trie_free(&t, cap);
out_free_set:
	swap_set_free(s);
	return r;
}

/* ---- one-shot ---- */

/* Note every occurrence at its start: lp[start] = pattern + 1 (longest wins
 * because occurrences come in order of their end). */
static void note_all(const struct swap_set *s, const unsigned char *in, size_t len,
		     unsigned char *lp)
{
	uint32_t st = 0;

	for (size_t i = 0; i < len; i++) {
		st = go(s, st, in[i]);
		if (st & ST_OUT) {
			uint32_t j = st & ST_IDX;

			if (s->out_pat[j] == NONE)
				j = s->dict[j];
			for (; j != NONE; j = s->dict[j]) {
				uint32_t k = s->out_pat[j];

				lp[i + 1 - s->pat[k].from_len] = (unsigned char)(k + 1);
			}
		}
	}
}

uint64_t swap_scan(const struct swap_set *s, const unsigned char *in, size_t len)
{
	uint64_t mask = 0;
	uint32_t st = 0;

	for (size_t i = 0; i < len; i++) {
		st = go(s, st, in[i]);
		if (st & ST_OUT) {
			uint32_t j = st & ST_IDX;

			if (s->out_pat[j] == NONE)
				j = s->dict[j];
			for (; j != NONE; j = s->dict[j])
				mask |= 1ull << s->pat[s->out_pat[j]].id;
		}
	}
	return mask;
}

/* Match list of a whole buffer: the greedy walk over note_all()'s notes. */
struct swap_match {
	size_t start;
	unsigned pat;
};

static int find_matches(const struct swap_set *s, const unsigned char *in, size_t len,
			struct swap_match **ret_m, size_t *ret_n)
{
	struct swap_match *m = NULL;
	unsigned char *lp;
	size_t n = 0, cap = 0;

	lp = calloc(len ? len : 1, 1);
	if (!lp)
		return -ENOMEM;
	note_all(s, in, len, lp);
	for (size_t i = 0; i < len;) {
		if (!lp[i]) {
			i++;
			continue;
		}
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 8;
			struct swap_match *nm = realloc(m, nc * sizeof(*m));

			if (!nm) {
				free(m);
				free(lp);
				return -ENOMEM;
			}
			m = nm;
			cap = nc;
		}
		m[n].start = i;
		m[n].pat = lp[i] - 1u;
		i += s->pat[m[n].pat].from_len;
		n++;
	}
	free(lp);
	*ret_m = m;
	*ret_n = n;
	return 0;
}

int swap_buffer(const struct swap_set *s, const unsigned char *in, size_t len,
		unsigned char **ret_out, size_t *ret_len, uint64_t *ret_hit_mask)
{
	struct swap_match *m = NULL;
	unsigned char *out;
	size_t n, olen = len, o = 0, i = 0;
	uint64_t mask = 0;
	int r;

	r = find_matches(s, in, len, &m, &n);
	if (r)
		return r;
	for (size_t k = 0; k < n; k++)
		olen = olen - s->pat[m[k].pat].from_len + s->pat[m[k].pat].to_len;
	out = malloc(olen ? olen : 1);
	if (!out) {
		free(m);
		return -ENOMEM;
	}
	for (size_t k = 0; k < n; k++) {
		const struct swap_pat *p = &s->pat[m[k].pat];

		if (m[k].start > i)
			memcpy(out + o, in + i, m[k].start - i);
		o += m[k].start - i;
		if (p->to_len)
			memcpy(out + o, p->to, p->to_len);
		o += p->to_len;
		i = m[k].start + p->from_len;
		mask |= 1ull << p->id;
	}
	if (len > i)
		memcpy(out + o, in + i, len - i);
	free(m);
	*ret_out = out;
	*ret_len = olen;
	if (ret_hit_mask)
		*ret_hit_mask = mask;
	return (int)(n > INT32_MAX ? INT32_MAX : n);
}

/* ---- streaming ---- */

/*
 * Absolute positions: [emit, pos) is kept in the ring (emit <= walk <= pos);
 * [emit, walk) is decided literal output not yet accepted by out(); [walk,
 * pos) is undecided. While `repl` is set its replacement is being pushed and
 * emit == walk. lp mirrors the ring with note_all()'s notes.
 */
struct swap_stream {
	const struct swap_set *set;
	uint32_t state;
	uint64_t pos, walk, emit;
	unsigned char *ring;
	unsigned char *lp;
	size_t cap; /* power of two, >= max_from + 4096 */
	long repl;  /* pattern being pushed, or -1 */
	size_t repl_off;
	uint64_t hits;
	size_t nrepl;
	size_t nnotes; /* non-zero lp slots at positions >= walk */
	bool blocked;
	bool finished;
};

int swap_stream_new(const struct swap_set *s, struct swap_stream **ret)
{
	struct swap_stream *st;
	size_t cap = 16384;

	while (cap < s->max_from + 4096)
		cap *= 2;
	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	st->ring = malloc(cap);
	st->lp = malloc(cap);
	if (!st->ring || !st->lp) {
		free(st->ring);
		free(st->lp);
		free(st);
		return -ENOMEM;
	}
	st->set = s;
	st->cap = cap;
	st->repl = -1;
	*ret = st;
	return 0;
}

void swap_stream_free(struct swap_stream *st)
{
	if (!st)
		return;
	swap_free_secret(st->ring, st->cap);
	swap_free_secret(st->lp, st->cap);
	free(st);
}

uint64_t swap_stream_hits(const struct swap_stream *st)
{
	return st->hits;
}

size_t swap_stream_replacements(const struct swap_stream *st)
{
	return st->nrepl;
}

bool swap_stream_pending(const struct swap_stream *st)
{
	return st->blocked;
}

/* Push n bytes, halving refused pieces; *ret_done gets what was accepted.
 * Returns 0 when all went out, -ENOBUFS when a single byte was refused. */
static int push(const unsigned char *p, size_t n, swap_out_fn out, void *arg, size_t *ret_done)
{
	size_t done = 0, piece = n;

	while (done < n) {
		if (piece > n - done)
			piece = n - done;
		if (out(arg, p + done, piece) == 0) {
			done += piece;
			continue;
		}
		piece /= 2;
		if (!piece) {
			*ret_done = done;
			return -ENOBUFS;
		}
	}
	*ret_done = done;
	return 0;
}

/* Take n bytes into the ring (room checked by the caller), noting occurrences. */
static void absorb(struct swap_stream *st, const unsigned char *in, size_t n)
{
	const struct swap_set *s = st->set;
	size_t mask = st->cap - 1, at = (size_t)(st->pos & mask), first = st->cap - at;
	uint64_t walk = st->walk, pos = st->pos;
	const uint32_t *dense = s->dense;
	uint32_t state = st->state, ndense = s->ndense;

	if (first > n)
		first = n;
	memcpy(st->ring + at, in, first);
	memcpy(st->ring, in + first, n - first);
	memset(st->lp + at, 0, first);
	memset(st->lp, 0, n - first);
	for (size_t i = 0; i < n; i++) {
		uint32_t x = state & ST_IDX;

		/* The hot loop: near the root every step is one dense lookup. */
		state = x < ndense ? dense[(size_t)x * 256 + in[i]] : go(s, state, in[i]);
		if (__builtin_expect(!!(state & ST_OUT), 0)) {
			uint32_t j = state & ST_IDX;
			uint64_t end = pos + i + 1;

			if (s->out_pat[j] == NONE)
				j = s->dict[j];
			for (; j != NONE; j = s->dict[j]) {
				uint32_t k = s->out_pat[j];
				uint64_t start = end - s->pat[k].from_len;

				/* Starts before walk are behind a decision (and their
				 * slots may already belong to newer bytes). */
				if (start >= walk) {
					unsigned char *slot = &st->lp[start & mask];

					st->nnotes += !*slot;
					*slot = (unsigned char)(k + 1);
				}
			}
		}
	}
	st->state = state;
	st->pos = pos + n;
}

/* Decide what can be decided and push it. Returns 0 or -ENOBUFS. */
static int drain(struct swap_stream *st, bool final, swap_out_fn out, void *arg)
{
	const struct swap_set *s = st->set;
	size_t mask = st->cap - 1, done;
	uint64_t limit;
	int r;

	/* Positions below `limit` can no longer start an unseen occurrence. */
	limit = st->pos - s->depth[st->state & ST_IDX];
	if (s->max_from && st->pos + 1 >= s->max_from &&
	    st->pos + 1 - s->max_from > limit)
		limit = st->pos + 1 - s->max_from;
	if (final)
		limit = st->pos;
	for (;;) {
		if (st->repl >= 0) {
			const struct swap_pat *p = &s->pat[st->repl];

			r = push(p->to + st->repl_off, p->to_len - st->repl_off, out, arg, &done);
			st->repl_off += done;
			if (r)
				return r;
			st->repl = -1;
		}
		if (!st->nnotes) {
			if (st->walk < limit)
				st->walk = limit;
		} else {
			while (st->walk < limit && !st->lp[st->walk & mask])
				st->walk++;
		}
		while (st->emit < st->walk) {
			size_t at = (size_t)(st->emit & mask), n = (size_t)(st->walk - st->emit);

			if (n > st->cap - at)
				n = st->cap - at;
			r = push(st->ring + at, n, out, arg, &done);
			st->emit += done;
			if (r)
				return r;
		}
		if (st->walk >= limit)
			return 0;
		/* A replacement starts at walk. */
		st->repl = st->lp[st->walk & mask] - 1;
		st->repl_off = 0;
		st->hits |= 1ull << s->pat[st->repl].id;
		st->nrepl++;
		/* Notes inside the replaced span are dead. */
		for (uint64_t q = st->walk; q < st->walk + s->pat[st->repl].from_len; q++)
			st->nnotes -= !!st->lp[q & mask];
		st->walk += s->pat[st->repl].from_len;
		st->emit = st->walk;
	}
}

ssize_t swap_stream_feed(struct swap_stream *st, const unsigned char *in, size_t len,
			 swap_out_fn out, void *arg)
{
	size_t used = 0;

	if (st->finished)
		return -EINVAL;
	for (;;) {
		size_t room, n;

		st->blocked = drain(st, false, out, arg) != 0;
		if (st->blocked || used == len)
			return (ssize_t)used;
		room = st->cap - (size_t)(st->pos - st->emit);
		n = len - used < room ? len - used : room;
		absorb(st, in + used, n);
		used += n;
	}
}

int swap_stream_finish(struct swap_stream *st, swap_out_fn out, void *arg)
{
	if (st->finished)
		return 0;
	st->blocked = drain(st, true, out, arg) != 0;
	if (st->blocked)
		return -ENOBUFS;
	st->finished = true;
	return 0;
}

/* ---- HTTP helpers ---- */

/* A growable NUL-terminated buffer whose old copies are zeroed on growth. */
struct sbuf {
	char *p;
	size_t len, cap;
};

static int sb_add(struct sbuf *b, const void *d, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t nc = b->cap ? b->cap : 64;
		char *np;

		while (nc < b->len + n + 1)
			nc *= 2;
		np = malloc(nc);
		if (!np)
			return -ENOMEM;
		if (b->len)
			memcpy(np, b->p, b->len);
		swap_free_secret(b->p, b->cap);
		b->p = np;
		b->cap = nc;
	}
	if (n)
		memcpy(b->p + b->len, d, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

static const char b64_alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64_val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Standard alphabet; '=' padding optional but, when present, complete. */
static int b64_decode(const char *in, size_t n, unsigned char **ret, size_t *ret_len)
{
	size_t pad = 0, o = 0;
	unsigned char *out;
	uint32_t acc = 0;
	unsigned bits = 0;

	while (n && in[n - 1] == '=' && pad < 2) {
		n--;
		pad++;
	}
	if ((pad && (n + pad) % 4) || n % 4 == 1)
		return -EINVAL;
	out = malloc(n / 4 * 3 + 3);
	if (!out)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		int v = b64_val((unsigned char)in[i]);

		if (v < 0) {
			swap_free_secret(out, o);
			return -EINVAL;
		}
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	*ret = out;
	*ret_len = o;
	return 0;
}

static int b64_encode(struct sbuf *b, const unsigned char *in, size_t n)
{
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16;
		char q[4];

		if (i + 1 < n)
			v |= (uint32_t)in[i + 1] << 8;
		if (i + 2 < n)
			v |= in[i + 2];
		q[0] = b64_alpha[(v >> 18) & 63];
		q[1] = b64_alpha[(v >> 12) & 63];
		q[2] = i + 1 < n ? b64_alpha[(v >> 6) & 63] : '=';
		q[3] = i + 2 < n ? b64_alpha[v & 63] : '=';
		if (sb_add(b, q, 4))
			return -ENOMEM;
	}
	return 0;
}

static bool is_ows(char c)
{
	return c == ' ' || c == '\t';
}

/* Apply s to [p, p+n) if `on`, appending the result; adds to *nrepl, *mask. */
static int swap_part(const struct swap_set *s, bool on, const unsigned char *p, size_t n,
		     struct sbuf *b, size_t *nrepl, uint64_t *mask)
{
	unsigned char *o;
	size_t olen;
	uint64_t m;
	int r;

	if (!on)
		return sb_add(b, p, n);
	r = swap_buffer(s, p, n, &o, &olen, &m);
	if (r < 0)
		return r;
	*nrepl += (size_t)r;
	*mask |= m;
	r = sb_add(b, o, olen);
	swap_free_secret(o, olen);
	return r;
}

int swap_basic_auth(const struct swap_set *s, const char *value, size_t len, unsigned which,
		    char **ret_out, size_t *ret_len, uint64_t *ret_hit_mask)
{
	struct sbuf plain = { 0 }, enc = { 0 };
	unsigned char *dec = NULL, *colon;
	size_t i = 0, declen = 0, nrepl = 0;
	uint64_t mask = 0;
	int r;

	while (len && is_ows(value[len - 1]))
		len--;
	while (i < len && is_ows(value[i]))
		i++;
	if (len - i < 7 || strncasecmp(value + i, "basic", 5) || !is_ows(value[i + 5]))
		return -EINVAL;
	i += 5;
	while (i < len && is_ows(value[i]))
		i++;
	r = b64_decode(value + i, len - i, &dec, &declen);
	if (r)
		return r;
	r = -EINVAL;
	colon = memchr(dec, ':', declen);
	if (!colon)
		goto out_free;
	r = swap_part(s, which & SWAP_BASIC_USER, dec, (size_t)(colon - dec), &plain, &nrepl,
		      &mask);
	if (!r)
		r = sb_add(&plain, ":", 1);
	if (!r)
		r = swap_part(s, which & SWAP_BASIC_PASSWORD, colon + 1,
			      declen - (size_t)(colon + 1 - dec), &plain, &nrepl, &mask);
	if (r || !nrepl)
		goto out_free;
	r = sb_add(&enc, "Basic ", 6);
	if (!r)
		r = b64_encode(&enc, (unsigned char *)plain.p, plain.len);
	if (r)
		goto out_free;
	*ret_out = enc.p;
	*ret_len = enc.len;
	enc.p = NULL;
	if (ret_hit_mask)
		*ret_hit_mask = mask;
	r = 0;
out_free:
	if (!r && !nrepl) {
		*ret_out = NULL;
		*ret_len = 0;
		if (ret_hit_mask)
			*ret_hit_mask = 0;
	}
	swap_free_secret(enc.p, enc.cap);
	swap_free_secret(plain.p, plain.cap);
	swap_free_secret(dec, declen);
	return r;
}

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decode [p, p+n) into dec; off (if not NULL, n + 1 entries) gets the
 * encoded offset of every decoded byte and off[declen] = n. Returns declen. */
static size_t pct_decode(const char *p, size_t n, unsigned char *dec, size_t *off)
{
	size_t o = 0;

	for (size_t i = 0; i < n;) {
		int hi, lo;

		if (off)
			off[o] = i;
		if (p[i] == '%' && i + 2 < n && (hi = hexval((unsigned char)p[i + 1])) >= 0 &&
		    (lo = hexval((unsigned char)p[i + 2])) >= 0) {
			dec[o++] = (unsigned char)(hi << 4 | lo);
			i += 3;
		} else {
			dec[o++] = (unsigned char)p[i++];
		}
	}
	if (off)
		off[o] = n;
	return o;
}

static bool is_unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_' || c == '~';
}

static int pct_encode(struct sbuf *b, const unsigned char *p, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";

	for (size_t i = 0; i < n; i++) {
		char e[3] = { '%', hex[p[i] >> 4], hex[p[i] & 15] };
		int r = is_unreserved(p[i]) ? sb_add(b, p + i, 1) : sb_add(b, e, 3);

		if (r)
			return r;
	}
	return 0;
}

static bool name_wanted(const char *name, size_t n, const char *const *names, unsigned nnames)
{
	unsigned char small[128], *dec = n <= sizeof(small) ? small : malloc(n);
	bool found = false;
	size_t dl;

	if (!dec)
		return true; /* cannot tell: treat as wanted, the caller errs towards refusing */
	dl = pct_decode(name, n, dec, NULL);
	for (unsigned k = 0; k < nnames && !found; k++)
		found = names[k] && strlen(names[k]) == dl && !memcmp(names[k], dec, dl);
	if (dec != small)
		free(dec);
	return found;
}

/* Transform one encoded value [v, v+n), appending to b. */
static int query_value(const struct swap_set *s, const char *v, size_t n, struct sbuf *b,
		       size_t *nrepl, uint64_t *mask)
{
	unsigned char *dec = malloc(n ? n : 1);
	size_t *off = malloc((n + 1) * sizeof(*off)), dl, at = 0, nm = 0;
	struct swap_match *m = NULL;
	int r = -ENOMEM;

	if (!dec || !off)
		goto out_free;
	dl = pct_decode(v, n, dec, off);
	r = find_matches(s, dec, dl, &m, &nm);
	if (r)
		goto out_free;
	for (size_t k = 0; k < nm && !r; k++) {
		const struct swap_pat *p = &s->pat[m[k].pat];

		r = sb_add(b, v + off[at], off[m[k].start] - off[at]);
		if (!r)
			r = pct_encode(b, p->to, p->to_len);
		at = m[k].start + p->from_len;
		*mask |= 1ull << p->id;
	}
	if (!r)
		r = sb_add(b, v + off[at], n - off[at]);
	*nrepl += nm;
out_free:
	free(m);
	free(off);
	swap_free_secret(dec, n);
	return r;
}

int swap_query(const struct swap_set *s, const char *query, size_t len, const char *const *names,
	       unsigned nnames, char **ret_out, size_t *ret_len, uint64_t *ret_hit_mask)
{
	struct sbuf b = { 0 };
	size_t i = 0, nrepl = 0;
	uint64_t mask = 0;
	int r = 0;

	for (; len;) {
		const char *amp = memchr(query + i, '&', len - i);
		size_t end = amp ? (size_t)(amp - query) : len;
		const char *eq = memchr(query + i, '=', end - i);

		if (eq && name_wanted(query + i, (size_t)(eq - query) - i, names, nnames)) {
			size_t vs = (size_t)(eq - query) + 1;

			r = sb_add(&b, query + i, vs - i);
			if (!r)
				r = query_value(s, query + vs, end - vs, &b, &nrepl, &mask);
		} else {
			r = sb_add(&b, query + i, end - i);
		}
		if (!r && amp)
			r = sb_add(&b, "&", 1);
		if (r || !amp)
			break;
		i = end + 1;
	}
	if (r || !nrepl) {
		swap_free_secret(b.p, b.cap);
		if (!r) {
			*ret_out = NULL;
			*ret_len = 0;
			if (ret_hit_mask)
				*ret_hit_mask = 0;
		}
		return r;
	}
	*ret_out = b.p;
	*ret_len = b.len;
	if (ret_hit_mask)
		*ret_hit_mask = mask;
	return 0;
}
