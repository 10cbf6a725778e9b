// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for user/dnsmsg.c: the input is a DNS message. The
 * question parse must stay inside the input and, on success, give a wire
 * name of 1..255 octets with labels <= 63 ending in the root byte, and a
 * lower-case presentation name that unescapes back to exactly that wire form
 * (so label boundaries can't be forged with an escaped dot). Every name at
 * the first offsets must parse within bounds or fail cleanly. An error reply
 * keeps the ID, sets QR and the rcode, and carries the same question.
 *
 * scripts/fuzz.sh links only user/http1.c into targets, so this one pulls in
 * the parser's source itself.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../user/dnsmsg.c"

#define CHECK(c)                                                                  \
	do {                                                                      \
		if (!(c)) {                                                       \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, \
				__LINE__, #c);                                    \
			abort();                                                  \
		}                                                                 \
	} while (0)

/* Presentation name back to wire form; returns its length. */
static size_t unescape(const char *name, uint8_t *wire, size_t cap)
{
	size_t o = 0, lab = 0;

	if (!*name) {
		CHECK(cap >= 1);
		wire[0] = 0;
		return 1;
	}
	wire[o++] = 0;  /* length of the first label, fixed below */
	for (const char *p = name; *p; p++) {
		uint8_t c;

		CHECK(o + 2 < cap);
		if (*p == '.') {
			wire[lab] = (uint8_t)(o - lab - 1);
			lab = o;
			wire[o++] = 0;
			continue;
		}
		if (*p == '\\') {
			p++;
			if (*p >= '0' && *p <= '9') {
				CHECK(p[1] >= '0' && p[1] <= '9' && p[2] >= '0' && p[2] <= '9');
				c = (uint8_t)((p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0'));
				CHECK(c < 0x21 || c > 0x7e);
				p += 2;
			} else {
				CHECK(*p == '.' || *p == '\\');
				c = (uint8_t)*p;
			}
		} else {
			c = (uint8_t)*p;
			CHECK(c >= 0x21 && c <= 0x7e);
			CHECK(!(c >= 'A' && c <= 'Z'));
		}
		wire[o++] = c;
	}
	wire[lab] = (uint8_t)(o - lab - 1);
	wire[o++] = 0;
	return o;
}

static void check_question(const struct dnsmsg_question *q)
{
	uint8_t again[2 * DNSMSG_NAME_WIRE_MAX];
	size_t pos = 0, n, nl = strnlen(q->name, sizeof(q->name));

	CHECK(nl < sizeof(q->name));
	CHECK(q->wire_len >= 1 && q->wire_len <= DNSMSG_NAME_WIRE_MAX);
	while (q->wire[pos]) {
		CHECK(q->wire[pos] <= DNSMSG_LABEL_MAX);
		pos += 1 + q->wire[pos];
		CHECK(pos < q->wire_len);
	}
	CHECK(pos + 1 == q->wire_len);
	CHECK(nl == 0 || q->name[nl - 1] != '.' || (nl >= 2 && q->name[nl - 2] == '\\'));
	n = unescape(q->name, again, sizeof(again));
	CHECK(n == q->wire_len);
	CHECK(memcmp(again, q->wire, n) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dnsmsg_question q, q2;
	struct dnsmsg_header h, h2;
	uint8_t out[DNSMSG_HDR_LEN + 4 + 1024];
	int r;

	if (dnsmsg_parse_question(data, size, &h, &q) == 0) {
		CHECK(q.end <= size);
		CHECK(h.qdcount == 1);
		check_question(&q);
	}
	for (size_t off = DNSMSG_HDR_LEN; off < size && off < DNSMSG_HDR_LEN + 64; off++) {
		size_t end;

		if (dnsmsg_parse_name(data, size, off, &q2, &end) == 0) {
			CHECK(end > off && end <= size);
			check_question(&q2);
		}
	}
	r = dnsmsg_make_error(data, size, DNSMSG_NXDOMAIN, out, sizeof(out));
	if (size < DNSMSG_HDR_LEN) {
		CHECK(r == -EBADMSG);
		return 0;
	}
	if (r == -ENOSPC)
		return 0;
	CHECK(r >= DNSMSG_HDR_LEN && (size_t)r <= sizeof(out));
	CHECK(dnsmsg_parse_header(out, (size_t)r, &h2) == 0);
	CHECK(h2.id == dnsmsg_get16(data));
	CHECK(h2.flags & DNSMSG_F_QR);
	CHECK((h2.flags & DNSMSG_F_RCODE) == DNSMSG_NXDOMAIN);
	CHECK(h2.ancount == 0 && h2.nscount == 0 && h2.arcount == 0);
	if (dnsmsg_parse_question(data, size, &h, &q) == 0) {
		CHECK(dnsmsg_parse_question(out, (size_t)r, &h2, &q2) == 0);
		CHECK(dnsmsg_same_question(&q, &q2));
		CHECK(strcmp(q.name, q2.name) == 0);
	} else {
		CHECK(r == DNSMSG_HDR_LEN && h2.qdcount == 0);
	}
	return 0;
}
