// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for http1_split_authority() and http1_parse_absolute():
 * the input (byte 0 picks the host buffer size, the rest is the text) goes
 * through both; on success the host must be a NUL-terminated, lower-case
 * string that fits the buffer, without brackets or a trailing dot, the port
 * non-zero, and the path offset inside the input. Splitting the host back
 * ("host:port", bracketed when it holds a ':') must give the same answer.
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

static void check_host(const char *host, size_t hostlen, uint16_t port)
{
	size_t hl = strnlen(host, hostlen);
	char again[300], host2[300];
	uint16_t port2 = 0;

	CHECK(hl < hostlen);
	CHECK(hl > 0);
	CHECK(port != 0);
	CHECK(host[0] != '[' && host[hl - 1] != ']');
	/* no trailing dot, no empty label (tests/fuzz/crashes/authority-trailing-dots
	 * was the reproducer of the bug this guards) */
	CHECK(host[hl - 1] != '.');
	for (size_t i = 0; i < hl; i++)
		CHECK(!(host[i] >= 'A' && host[i] <= 'Z'));
	/* Round trip: the normalised form splits to itself. */
	if (strchr(host, ':'))
		snprintf(again, sizeof(again), "[%s]:%u", host, port);
	else
		snprintf(again, sizeof(again), "%s:%u", host, port);
	CHECK(http1_split_authority(again, strlen(again), 1, host2, sizeof(host2), &port2) == 0);
	CHECK(port2 == port);
	CHECK(strcmp(host2, host) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t sizes[4] = { 1, 16, 64, 256 };
	char *host, *text;
	size_t hostlen, len, path_off = 0;
	uint16_t port = 0;
	bool tls = false;
	int r;

	if (size < 1)
		return 0;
	hostlen = sizes[data[0] & 3];
	len = size - 1;
	/* Exact-size heap copies so ASan sees any read or write past either. */
	text = malloc(len ? len : 1);
	host = malloc(hostlen);
	if (!text || !host)
		goto out;
	memcpy(text, data + 1, len);

	r = http1_split_authority(text, len, (uint16_t)(data[0] >> 2 | 1), host, hostlen, &port);
	CHECK(r == 0 || r == -22);
	if (r == 0)
		check_host(host, hostlen, port);

	r = http1_parse_absolute(text, len, &tls, host, hostlen, &port, &path_off);
	CHECK(r == 0 || r == -22 || r == -2);
	if (r == 0) {
		check_host(host, hostlen, port);
		CHECK(path_off <= len);
		CHECK(path_off == len || text[path_off] == '/' || text[path_off] == '?' ||
		      text[path_off] == '#');
		CHECK(tls == (text[4] == 's' || text[4] == 'S'));
	}
out:
	free(text);
	free(host);
	return 0;
}
