/* SPDX-License-Identifier: MIT */
/*
 * swap: the placeholder <-> real value transformer. Pure: no I/O, no logs, no
 * knowledge of policy. A caller compiles an array of (from, to) pairs into an
 * immutable set and runs it over header values, query strings, Basic
 * credentials or streamed bodies. The request direction uses pairs
 * (placeholder -> real value) of the secrets scoped to the request's host; the
 * response direction uses (real value -> placeholder) to redact echoes.
 *
 * Matching rule (the same everywhere: one-shot, streaming, helpers): scanning
 * left to right, the match that starts leftmost wins; among matches starting
 * at the same position the longest wins; scanning resumes right after the
 * replaced match (matches never overlap, replacement output is never
 * rescanned). So with "abc" and "abcdef", "abcdefg" replaces "abcdef"; with
 * "aaa", "aaaaa" is one replacement followed by "aa"; with "bcd" and "abc",
 * "abcd" replaces "abc" and leaves "d".
 *
 * Cost: an Aho-Corasick automaton (dense rows near the root, sparse deeper)
 * finds every occurrence in one pass; the leftmost-longest choice needs a
 * lookahead of at most swap_set_max_from() - 1 bytes. Time is linear in the
 * input plus the number of occurrences (at most SWAP_MAX_PAIRS per byte).
 *
 * Secrets hygiene: the set copies every pair and zeroes the copies (and the
 * automaton tables, which spell the patterns) when freed; streams zero their
 * hold-back buffers when freed. Buffers this module returns may hold real
 * values: release them with swap_free_secret().
 */
#ifndef SLUICE_SWAP_H
#define SLUICE_SWAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SWAP_MAX_PAIRS 64          /* pair ids are bits of a uint64_t hit mask */
#define SWAP_MAX_FROM (64 * 1024)  /* longest pattern (real values are <= 8 KiB) */
#define SWAP_MAX_TO (64 * 1024)    /* longest replacement */

struct swap_pair {
	const unsigned char *from;
	size_t from_len;
	const unsigned char *to;
	size_t to_len;
	unsigned id; /* < SWAP_MAX_PAIRS; bit `id` of every hit mask */
};

/* Immutable compiled multi-pattern matcher; safe to share between threads. */
struct swap_set;

/*
 * Compile n pairs (n may be 0: the set changes nothing). The pairs are copied;
 * the caller may free them at once. Patterns may be prefixes of, or overlap,
 * one another (see the matching rule above). Ids need not be distinct.
 * Returns 0 and *ret, or -EINVAL (an empty or too long pattern, a too long
 * replacement, id >= SWAP_MAX_PAIRS, n > SWAP_MAX_PAIRS, NULL bytes),
 * -EEXIST (two pairs with the same pattern: which one applies would be a
 * guess, so the caller must decide), -ENOMEM.
 */
int swap_set_new(const struct swap_pair *pairs, unsigned n, struct swap_set **ret);

/* Zero every copy of a pattern or replacement, free. NULL is fine. */
void swap_set_free(struct swap_set *s);

/* Length of the longest pattern (0 for an empty set). */
size_t swap_set_max_from(const struct swap_set *s);

/*
 * Whole-buffer transform (header values, query strings). *ret_out is
 * allocated (also when nothing changed; never NULL on success) and may hold
 * real values: free it with swap_free_secret(*ret_out, *ret_len).
 * *ret_hit_mask (may be NULL) gets bit `id` for every pair replaced.
 * Returns the number of replacements (>= 0) or -ENOMEM.
 */
int swap_buffer(const struct swap_set *s, const unsigned char *in, size_t len,
		unsigned char **ret_out, size_t *ret_len, uint64_t *ret_hit_mask);

/*
 * Find only: the ids of every pattern that occurs in the input, overlapping
 * occurrences included (a superset of what swap_buffer() would replace), so a
 * scope check built on it errs towards refusing.
 */
uint64_t swap_scan(const struct swap_set *s, const unsigned char *in, size_t len);

/*
 * Streaming (bodies). A match split across feeds is found. The output
 * callback must take all n bytes (return 0) or none (return -ENOBUFS; any
 * other non-zero return is treated the same). When a piece is refused the
 * stream retries with halves of it, so a nearly full buffer is filled to the
 * last byte, and stops when a single byte is refused.
 */
typedef int (*swap_out_fn)(void *arg, const unsigned char *p, size_t n);
struct swap_stream;

/* A new stream over s; s must outlive it. Returns 0 or -ENOMEM. */
int swap_stream_new(const struct swap_set *s, struct swap_stream **ret);

/*
 * Feed len bytes. Returns the number of input bytes taken (0..len); the
 * caller must never feed those again and feeds the rest (in + ret) later.
 * Taken bytes are either already passed to out() or kept inside the stream;
 * nothing is lost or duplicated whatever out() refuses. A return < len means
 * out() refused: feed the rest once there is room. A return == len may still
 * leave decided output waiting (swap_stream_pending()): feed(st, NULL, 0, ...)
 * pushes it when there is room. When nothing is pending the stream holds back
 * at most swap_set_max_from() - 1 input bytes (a possible match prefix).
 * Returns -EINVAL after swap_stream_finish() succeeded.
 */
ssize_t swap_stream_feed(struct swap_stream *st, const unsigned char *in, size_t len,
			 swap_out_fn out, void *arg);

/*
 * End of body: decide and push everything held back. Returns 0 when all of
 * it went out, -ENOBUFS when out() refused (call again later: it resumes
 * where it stopped).
 */
int swap_stream_finish(struct swap_stream *st, swap_out_fn out, void *arg);

/* True when decided output waits for out() to accept it. */
bool swap_stream_pending(const struct swap_stream *st);

/* Bit `id` of every pair replaced so far. */
uint64_t swap_stream_hits(const struct swap_stream *st);

/* Number of replacements so far. */
size_t swap_stream_replacements(const struct swap_stream *st);

/* Zero the hold-back buffers and free. NULL is fine. */
void swap_stream_free(struct swap_stream *st);

/* Zero len bytes at p, then free(p). For every buffer this module returns. */
void swap_free_secret(void *p, size_t len);

/*
 * "Basic <base64>" header value (scheme case-insensitive, spaces/tabs around
 * and after the scheme allowed; base64 with or without '=' padding). Decodes
 * user:password (split at the first ':'), applies s to the user part and/or
 * the password part (which = SWAP_BASIC_USER | SWAP_BASIC_PASSWORD), and
 * re-encodes as "Basic " + padded base64. Returns 0 with *ret_out NULL,
 * *ret_len 0 and mask 0 when nothing was replaced; else 0 with a NUL-terminated
 * *ret_out (free with swap_free_secret(*ret_out, *ret_len)). -EINVAL when the
 * value is not valid Basic credentials (other scheme, bad base64, no ':');
 * -ENOMEM.
 */
#define SWAP_BASIC_USER 1
#define SWAP_BASIC_PASSWORD 2
int swap_basic_auth(const struct swap_set *s, const char *value, size_t len, unsigned which,
		    char **ret_out, size_t *ret_len, uint64_t *ret_hit_mask);

/*
 * Query string without the leading '?' ("a=1&api_key=PH&b=2"). Parameters are
 * split at '&', name and value at the first '='. Only values of parameters
 * whose percent-decoded name equals one of names[] are transformed: the value
 * is percent-decoded ('+' stays '+', a malformed '%' escape stays literal),
 * matched, and each replacement is percent-encoded (RFC 3986 unreserved bytes
 * kept, others as %XX); every byte outside a match is copied as it was.
 * Returns 0 with *ret_out NULL (len 0, mask 0) when nothing was replaced, else
 * 0 with a NUL-terminated *ret_out (free with swap_free_secret()); -ENOMEM.
 */
int swap_query(const struct swap_set *s, const char *query, size_t len, const char *const *names,
	       unsigned nnames, char **ret_out, size_t *ret_len, uint64_t *ret_hit_mask);

#endif
