// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for user/http1.c: the input is fed to a request parser and
 * to a response parser in pieces whose sizes come from the input's first
 * bytes, following the proxy's rules (after HTTP1_EV_DONE call http1_next();
 * stop on error or after an upgrade/CONNECT, where the proxy stops parsing).
 * Every head is checked: strings NUL-terminated inside the store, counts and
 * lengths within their bounds; and the helpers the proxy runs on a head
 * (http1_get, http1_is_hop_by_hop, http1_split_authority on Host and on a
 * CONNECT target, http1_parse_absolute on the target) run on it.
 *
 * Input layout: byte 0 flags (bit 0: response no_body as for HEAD; bits 1-2:
 * head limit 64/512/8192/65536), bytes 1-4 seed for the piece sizes, rest is
 * the stream.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"

#define CHECK(c)                                                                  \
	do {                                                                      \
		if (!(c)) {                                                       \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, \
				__LINE__, #c);                                    \
			abort();                                                  \
		}                                                                 \
	} while (0)

static uint32_t rng(uint32_t *s)
{
	/* xorshift32: deterministic piece sizes from the input's seed */
	uint32_t x = *s ? *s : 0x9e3779b9u;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	*s = x;
	return x;
}

static void check_str(const struct http1_head *h, uint32_t off, uint32_t len)
{
	/* store has cap + 2 bytes; a string and its NUL must lie inside it */
	CHECK((uint64_t)off + len + 1 <= (uint64_t)h->cap + 2);
	CHECK(h->store[off + len] == 0);
}

static void check_head(const struct http1_head *h, bool response)
{
	char host[256];
	uint16_t port;
	size_t vl, path_off;
	bool tls;
	const char *v;

	CHECK(h->used <= h->cap + 1);
	CHECK(h->nf <= HTTP1_MAX_HEADERS);
	CHECK(h->url_len <= h->cap);
	check_str(h, h->url_off, h->url_len);
	for (unsigned i = 0; i < h->nf; i++) {
		CHECK(h->f[i].name_len <= h->cap && h->f[i].value_len <= h->cap);
		check_str(h, h->f[i].name_off, h->f[i].name_len);
		check_str(h, h->f[i].value_off, h->f[i].value_len);
		(void)http1_is_hop_by_hop(h, i);
	}
	v = http1_get(h, "host", &vl);
	if (v) {
		CHECK(v >= h->store && v + vl <= h->store + h->cap + 1);
		if (http1_split_authority(v, vl, 80, host, sizeof(host), &port) == 0)
			CHECK(strlen(host) < sizeof(host) && port != 0);
	}
	v = http1_get(h, "connection", &vl);
	if (v) {
		(void)http1_list_has(v, vl, "close");
		(void)http1_list_has(v, vl, "upgrade");
	}
	if (response) {
		CHECK(h->status >= 0 && h->status <= 999);
		return;
	}
	if (http1_parse_absolute(http1_url(h), h->url_len, &tls, host, sizeof(host), &port,
				 &path_off) == 0) {
		CHECK(path_off <= h->url_len);
		CHECK(strlen(host) < sizeof(host) && port != 0);
	}
	if (h->method == HTTP_CONNECT &&
	    http1_split_authority(http1_url(h), h->url_len, 0, host, sizeof(host), &port) == 0)
		CHECK(strlen(host) > 0);
}

static void run(const uint8_t *data, size_t len, bool response, bool no_body, size_t max_head,
		uint32_t seed)
{
	struct http1_parser hp;
	size_t off = 0;
	unsigned guard = 0;

	if (http1_init(&hp, response, max_head) < 0)
		return;
	hp.no_body = no_body;
	while (off < len && guard++ < 100000) {
		static const size_t caps[4] = { 1, 16, 256, SIZE_MAX };
		size_t left = len - off, cap = caps[rng(&seed) & 3];
		size_t piece = 1 + rng(&seed) % (left < cap ? left : cap);
		enum http1_event ev;
		ssize_t used;

		if (piece > len - off)
			piece = len - off;
		used = http1_feed(&hp, (const char *)data + off, piece, &ev);
		CHECK(used >= 0 && (size_t)used <= piece);
		if (ev == HTTP1_EV_ERROR) {
			CHECK(hp.err_status >= 400 && hp.err_reason);
			/* Once in error, it stays there and consumes nothing. */
			CHECK(http1_feed(&hp, (const char *)data + off, piece, &ev) == 0);
			CHECK(ev == HTTP1_EV_ERROR);
			break;
		}
		if (ev == HTTP1_EV_NONE && !hp.done)
			CHECK((size_t)used == piece); /* "need more" means all consumed */
		off += (size_t)used;
		if (ev == HTTP1_EV_HEAD || hp.done)
			check_head(&hp.head, response);
		if (hp.done) {
			/* The proxy stops parsing at an upgrade / CONNECT / 101. */
			if (hp.head.upgrade || (response && hp.head.status == 101))
				break;
			if (!response && hp.head.method == HTTP_CONNECT)
				break;
			http1_next(&hp);
		} else if (used == 0 && ev == HTTP1_EV_NONE) {
			break; /* no progress: would stall the proxy, do not spin */
		}
	}
	if (!hp.err_status)
		(void)http1_eof(&hp);
	http1_free(&hp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t limits[4] = { 64, 512, 8192, 65536 };
	uint32_t seed;
	uint8_t flags;

	if (size < 5)
		return 0;
	flags = data[0];
	memcpy(&seed, data + 1, 4);
	data += 5;
	size -= 5;
	run(data, size, false, false, limits[(flags >> 1) & 3], seed);
	run(data, size, true, flags & 1, limits[(flags >> 1) & 3], seed);
	return 0;
}
