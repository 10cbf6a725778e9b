// SPDX-License-Identifier: MIT
// fuzz-sources: user/clienthello.c
/*
 * libFuzzer target for ch_parse(): the input is the first bytes of a
 * connection. Invariants: the answer is > 0 and <= len, or one of -EAGAIN,
 * -EINVAL, -EMSGSIZE (the last two with a reason); a parsed name is a
 * terminated, lower-case, visible-ASCII string without a trailing dot; the
 * answer depends only on the bytes it covers (parsing exactly those gives the
 * same result, one byte fewer needs more); and cutting the same handshake
 * message into records of another size gives the same ch_info.
 * Seeds: tests/fuzz/corpus/clienthello/ (the unit-test captures).
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clienthello.h"

#define CHECK(c)                                                                   \
	do {                                                                       \
		if (!(c)) {                                                        \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, \
				__LINE__, #c);                                     \
			abort();                                                   \
		}                                                                  \
	} while (0)

/* ch_parse on an exactly-sized heap copy, so ASan sees any over-read. */
static ssize_t parse_copy(const uint8_t *data, size_t len, struct ch_info *ci, const char **why)
{
	uint8_t *x = malloc(len ? len : 1);
	ssize_t r;

	CHECK(x);
	memcpy(x, data, len);
	memset(ci, 0, sizeof(*ci));
	*why = NULL;
	r = ch_parse(x, len, ci, why);
	free(x);
	return r;
}

static void check_answer(ssize_t r, size_t len, const struct ch_info *ci, const char *why)
{
	size_t sl;

	if (r <= 0) {
		CHECK(r == -EAGAIN || r == -EINVAL || r == -EMSGSIZE);
		if (r != -EAGAIN)
			CHECK(why && *why);
		if (r == -EAGAIN)
			CHECK(len < CH_MAX_BYTES);
		return;
	}
	CHECK((size_t)r <= len);
	CHECK((size_t)r <= CH_MAX_BYTES);
	sl = strnlen(ci->sni, sizeof(ci->sni));
	CHECK(sl < sizeof(ci->sni));
	CHECK(ci->has_sni == (sl > 0));
	for (size_t i = 0; i < sl; i++)
		CHECK(ci->sni[i] > 0x20 && ci->sni[i] < 0x7f &&
		      !(ci->sni[i] >= 'A' && ci->sni[i] <= 'Z'));
	CHECK(sl == 0 || (ci->sni[sl - 1] != '.' && ci->sni[0] != '.' && !strstr(ci->sni, "..")));
	CHECK(strnlen(ci->alpn, sizeof(ci->alpn)) < sizeof(ci->alpn));
	CHECK(!strstr(ci->alpn, ",,") && ci->alpn[0] != ',');
	CHECK((ci->legacy_version >> 8) == 3);
}

static bool same_info(const struct ch_info *a, const struct ch_info *b)
{
	return a->has_sni == b->has_sni && !strcmp(a->sni, b->sni) && !strcmp(a->alpn, b->alpn) &&
	       a->alpn_partial == b->alpn_partial && a->legacy_version == b->legacy_version &&
	       a->tls13_offered == b->tls13_offered && a->has_ech == b->has_ech;
}

/* Re-cut the handshake bytes of the records in data[0, r) into records of
 * frag bytes; returns the new length. */
static size_t recut(const uint8_t *data, size_t r, size_t frag, uint8_t *out)
{
	static uint8_t hs[CH_MAX_BYTES];
	size_t hl = 0, o = 0;

	for (size_t off = 0; off + CH_RECORD_HEADER <= r;) {
		size_t rl = (size_t)data[off + 3] << 8 | data[off + 4];

		CHECK(off + CH_RECORD_HEADER + rl <= r);
		memcpy(hs + hl, data + off + CH_RECORD_HEADER, rl);
		hl += rl;
		off += CH_RECORD_HEADER + rl;
	}
	for (size_t p = 0; p < hl; p += frag) {
		size_t k = hl - p < frag ? hl - p : frag;

		memcpy(out + o, data, 3);
		out[o + 3] = k >> 8;
		out[o + 4] = k & 0xff;
		memcpy(out + o + CH_RECORD_HEADER, hs + p, k);
		o += CH_RECORD_HEADER + k;
	}
	return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t cut[CH_MAX_BYTES * 6 + 64];
	struct ch_info ci, ci2;
	const char *why, *why2;
	ssize_t r, r2;

	r = parse_copy(data, size, &ci, &why);
	check_answer(r, size, &ci, why);
	if (r == -EAGAIN && size > 0) {
		/* a prefix of "need more" needs more too */
		CHECK(parse_copy(data, size / 2, &ci2, &why2) == -EAGAIN);
		return 0;
	}
	if (r <= 0)
		return 0;
	/* only the covered bytes matter */
	r2 = parse_copy(data, r, &ci2, &why2);
	CHECK(r2 == r && same_info(&ci, &ci2));
	CHECK(parse_copy(data, r - 1, &ci2, &why2) == -EAGAIN);
	CHECK(parse_copy(data, r / 2, &ci2, &why2) == -EAGAIN);
	/* another fragmentation of the same message, same answer */
	{
		size_t frag = 1 + data[r - 1] % 97, m = recut(data, r, frag, cut);

		CHECK(m <= sizeof(cut));
		r2 = parse_copy(cut, m, &ci2, &why2);
		if (m <= CH_MAX_BYTES) {
			CHECK(r2 == (ssize_t)m);
			CHECK(same_info(&ci, &ci2));
		} else {
			CHECK(r2 == -EMSGSIZE);
		}
	}
	return 0;
}
