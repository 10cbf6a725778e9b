// SPDX-License-Identifier: MIT
/* dnsmsg: header, question parse table (compression, loops, label and name
 * limits, truncation, escaping), question comparison, error synthesis. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "dnsmsg.h"

/* Header: id 0x1234, RD, QDCOUNT 1 */
#define HDR_Q1 0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00

struct name_case {
	const char *what;
	uint8_t msg[600];
	size_t len;
	int ret;
	const char *name;
	uint16_t qtype;
};

static size_t put_name(uint8_t *p, const char *dotted)
{
	size_t o = 0;

	while (*dotted) {
		const char *dot = strchr(dotted, '.');
		size_t l = dot ? (size_t)(dot - dotted) : strlen(dotted);

		p[o++] = (uint8_t)l;
		memcpy(p + o, dotted, l);
		o += l;
		dotted += l + (dot ? 1 : 0);
	}
	p[o++] = 0;
	return o;
}

static size_t build_query(uint8_t *m, uint16_t id, const char *name, uint16_t qtype)
{
	uint8_t h[] = { HDR_Q1 };
	size_t o;

	memcpy(m, h, sizeof(h));
	dnsmsg_put16(m, id);
	o = 12 + put_name(m + 12, name);
	dnsmsg_put16(m + o, qtype);
	dnsmsg_put16(m + o + 2, 1);
	return o + 4;
}

Test(dnsmsg, header)
{
	uint8_t m[] = { 0xab, 0xcd, 0x81, 0x83, 0, 1, 0, 2, 0, 3, 0, 4 };
	struct dnsmsg_header h;

	cr_assert_eq(dnsmsg_parse_header(m, 11, &h), -EBADMSG);
	cr_assert_eq(dnsmsg_parse_header(m, 12, &h), 0);
	cr_assert_eq(h.id, 0xabcd);
	cr_assert_eq(h.flags & DNSMSG_F_RCODE, 3);
	cr_assert(h.flags & DNSMSG_F_QR);
	cr_assert_eq(h.qdcount, 1);
	cr_assert_eq(h.ancount, 2);
	cr_assert_eq(h.nscount, 3);
	cr_assert_eq(h.arcount, 4);
}

Test(dnsmsg, simple_and_case_folding)
{
	uint8_t m[512];
	size_t n = build_query(m, 7, "WwW.Example.COM", 28);
	struct dnsmsg_question q;
	struct dnsmsg_header h;

	cr_assert_eq(dnsmsg_parse_question(m, n, &h, &q), 0);
	cr_assert_str_eq(q.name, "www.example.com");
	cr_assert_eq(q.qtype, 28);
	cr_assert_eq(q.qclass, 1);
	cr_assert_eq(q.end, n);
	cr_assert_eq(q.wire_len, 17);
	cr_assert_eq(memcmp(q.wire, "\3www\7example\3com", 17), 0);
	cr_assert_eq(h.id, 7);

	/* root */
	n = build_query(m, 7, "", 2);
	cr_assert_eq(dnsmsg_parse_question(m, n, &h, &q), 0);
	cr_assert_str_eq(q.name, "");
	cr_assert_eq(q.wire_len, 1);
}

Test(dnsmsg, escaping_keeps_labels_apart)
{
	/* one label "a.b" must not read as the two labels a, b */
	uint8_t m[64] = { HDR_Q1, 3, 'a', '.', 'b', 4, 't', 'e', 's', 't', 0, 0, 1, 0, 1 };
	uint8_t m2[64] = { HDR_Q1, 4, 'a', 0, ' ', '\\', 0, 0, 1, 0, 1 };
	struct dnsmsg_question q;
	struct dnsmsg_header h;

	cr_assert_eq(dnsmsg_parse_question(m, 12 + 14, &h, &q), 0);
	cr_assert_str_eq(q.name, "a\\.b.test");
	cr_assert_eq(dnsmsg_parse_question(m2, 12 + 10, &h, &q), 0);
	cr_assert_str_eq(q.name, "a\\000\\032\\\\");
}

Test(dnsmsg, compression_in_names)
{
	/* question "example.com" at 12; a name at the end: "www" + ptr->12 */
	uint8_t m[128];
	size_t n = build_query(m, 1, "example.com", 1), end;
	struct dnsmsg_question q;

	m[n] = 3;
	memcpy(m + n + 1, "www", 3);
	m[n + 4] = 0xc0;
	m[n + 5] = 12;
	cr_assert_eq(dnsmsg_parse_name(m, n + 6, n, &q, &end), 0);
	cr_assert_str_eq(q.name, "www.example.com");
	cr_assert_eq(end, n + 6);
	/* pointer to a pointer (backwards each time) */
	m[n + 6] = 0xc0;
	m[n + 7] = (uint8_t)n;
	cr_assert_eq(dnsmsg_parse_name(m, n + 8, n + 6, &q, &end), 0);
	cr_assert_str_eq(q.name, "www.example.com");
	cr_assert_eq(end, n + 8);
}

Test(dnsmsg, parse_table)
{
	static struct name_case cases[] = {
		{ "short header", { 0x12, 0x34, 1, 0, 0, 1 }, 6, -EBADMSG },
		{ "qdcount 0", { 0x12, 0x34, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1 }, 17,
		  -EBADMSG },
		{ "qdcount 2", { 0x12, 0x34, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1 }, 17,
		  -EBADMSG },
		{ "no question", { HDR_Q1 }, 12, -EBADMSG },
		{ "label runs past end", { HDR_Q1, 5, 'a', 'b' }, 15, -EBADMSG },
		{ "no root byte", { HDR_Q1, 1, 'a' }, 14, -EBADMSG },
		{ "qtype truncated", { HDR_Q1, 1, 'a', 0, 0, 1, 0 }, 18, -EBADMSG },
		{ "ok minimal", { HDR_Q1, 1, 'a', 0, 0, 1, 0, 1 }, 19, 0, "a", 1 },
		{ "trailing bytes ok", { HDR_Q1, 1, 'a', 0, 0, 5, 0, 1, 9, 9 }, 21, 0, "a", 5 },
		{ "self loop", { HDR_Q1, 0xc0, 12, 0, 1, 0, 1 }, 18, -EBADMSG },
		{ "loop via label", { HDR_Q1, 1, 'a', 0xc0, 12, 0, 1, 0, 1 }, 20, -EBADMSG },
		{ "pointer forwards", { HDR_Q1, 0xc0, 14, 1, 'a', 0, 0, 1, 0, 1 }, 22, -EBADMSG },
		{ "pointer into header", { HDR_Q1, 0xc0, 2, 0, 1, 0, 1 }, 18, -EBADMSG },
		{ "pointer truncated", { HDR_Q1, 0xc0 }, 13, -EBADMSG },
		{ "label type 0x40", { HDR_Q1, 0x41, 'a', 0, 0, 1, 0, 1 }, 20, -EBADMSG },
		{ "label type 0x80", { HDR_Q1, 0x81, 'a', 0, 0, 1, 0, 1 }, 20, -EBADMSG },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct dnsmsg_question q;
		struct dnsmsg_header h;
		int r = dnsmsg_parse_question(cases[i].msg, cases[i].len, &h, &q);

		cr_expect_eq(r, cases[i].ret, "%s: got %d", cases[i].what, r);
		if (r == 0 && cases[i].ret == 0) {
			cr_expect_str_eq(q.name, cases[i].name, "%s", cases[i].what);
			cr_expect_eq(q.qtype, cases[i].qtype, "%s", cases[i].what);
		}
		/* every prefix of a message is rejected or parses the same way */
		for (size_t k = 0; k < cases[i].len; k++)
			cr_expect_eq(dnsmsg_parse_question(cases[i].msg, k, &h, &q) == 0 &&
					     q.end > k,
				     0, "%s: prefix %zu", cases[i].what, k);
	}
}

Test(dnsmsg, label_and_name_limits)
{
	uint8_t m[600] = { HDR_Q1 };
	struct dnsmsg_question q;
	struct dnsmsg_header h;
	size_t o;

	/* label of 63: ok; 64 is the 0x40 type bits, rejected */
	m[12] = 63;
	memset(m + 13, 'x', 63);
	m[76] = 0;
	dnsmsg_put16(m + 77, 1);
	dnsmsg_put16(m + 79, 1);
	cr_assert_eq(dnsmsg_parse_question(m, 81, &h, &q), 0);
	cr_assert_eq(strlen(q.name), 63);
	m[12] = 64;
	memset(m + 13, 'x', 64);
	m[77] = 0;
	dnsmsg_put16(m + 78, 1);
	dnsmsg_put16(m + 80, 1);
	cr_assert_eq(dnsmsg_parse_question(m, 82, &h, &q), -EBADMSG);

	/* name of exactly 255 octets: 3*(1+63) + (1+61) + root = 255 */
	o = 12;
	for (int i = 0; i < 3; i++) {
		m[o++] = 63;
		memset(m + o, 'a', 63);
		o += 63;
	}
	m[o++] = 61;
	memset(m + o, 'b', 61);
	o += 61;
	m[o++] = 0;
	cr_assert_eq(o - 12, 255);
	dnsmsg_put16(m + o, 1);
	dnsmsg_put16(m + o + 2, 1);
	cr_assert_eq(dnsmsg_parse_question(m, o + 4, &h, &q), 0);
	cr_assert_eq(q.wire_len, 255);
	cr_assert_eq(strlen(q.name), 3 * 64 + 61);
	/* 256 octets */
	m[12 + 3 * 64] = 62;
	memset(m + 12 + 3 * 64 + 1, 'b', 62);
	m[12 + 256 - 1] = 0;
	dnsmsg_put16(m + 12 + 256, 1);
	dnsmsg_put16(m + 12 + 258, 1);
	cr_assert_eq(dnsmsg_parse_question(m, 12 + 260, &h, &q), -EBADMSG);
}

Test(dnsmsg, name_too_long_through_pointers)
{
	/* Pointers chained backwards can rebuild a long name: still capped at 255.
	 * Layout from 12: four 63-byte labels each followed by a pointer to the
	 * previous one; the question is the last pointer. */
	uint8_t m[600] = { 0x12, 0x34, 0, 0, 0, 1 };
	struct dnsmsg_question q;
	size_t o = 12, prev = 0, end;

	for (int i = 0; i < 5; i++) {
		size_t here = o;

		m[o++] = 63;
		memset(m + o, 'a' + i, 63);
		o += 63;
		if (prev) {
			m[o++] = (uint8_t)(0xc0 | prev >> 8);
			m[o++] = (uint8_t)prev;
		} else {
			m[o++] = 0;
		}
		prev = here;
	}
	cr_assert_eq(dnsmsg_parse_name(m, o, prev, &q, &end), -EBADMSG);
	cr_assert_eq(dnsmsg_parse_name(m, o, 12 + 65 + 66 + 66, &q, &end), -EBADMSG);
	/* three of them fit: c.b.a, 3*64 + 1 */
	cr_assert_eq(dnsmsg_parse_name(m, o, 12 + 65 + 66, &q, &end), 0);
	cr_assert_eq(q.wire_len, 3 * 64 + 1);
	cr_assert_eq(end, 12 + 65 + 66 + 66);
}

Test(dnsmsg, many_hops_bounded)
{
	/* 200 pointers each to the one before: rejected by the hop cap */
	uint8_t m[12 + 2 + 2 * 200] = { 0x12, 0x34, 0, 0, 0, 1 };
	struct dnsmsg_question q;
	size_t end;

	m[12] = 1;
	m[13] = 'a';
	m[14] = 0;
	for (int i = 0; i < 199; i++) {
		size_t at = 15 + 2 * (size_t)i;
		size_t target = i == 0 ? 12 : at - 2;

		m[at] = (uint8_t)(0xc0 | target >> 8);
		m[at + 1] = (uint8_t)target;
	}
	cr_assert_eq(dnsmsg_parse_name(m, 15 + 2 * 199, 15 + 2 * 198, &q, &end), -EBADMSG);
	cr_assert_eq(dnsmsg_parse_name(m, 15 + 2 * 199, 15 + 2 * 10, &q, &end), 0);
	cr_assert_str_eq(q.name, "a");
}

Test(dnsmsg, same_question)
{
	uint8_t a[128], b[128];
	struct dnsmsg_question qa, qb;
	struct dnsmsg_header h;

	dnsmsg_parse_question(a, build_query(a, 1, "Allowed.Test", 1), &h, &qa);
	dnsmsg_parse_question(b, build_query(b, 2, "allowed.test", 1), &h, &qb);
	cr_assert(dnsmsg_same_question(&qa, &qb));
	dnsmsg_parse_question(b, build_query(b, 2, "allowed.test", 28), &h, &qb);
	cr_assert_not(dnsmsg_same_question(&qa, &qb));
	dnsmsg_parse_question(b, build_query(b, 2, "allowed.tesu", 1), &h, &qb);
	cr_assert_not(dnsmsg_same_question(&qa, &qb));
	dnsmsg_parse_question(b, build_query(b, 2, "allowed.test", 1), &h, &qb);
	qb.qclass = 3;
	cr_assert_not(dnsmsg_same_question(&qa, &qb));
}

Test(dnsmsg, nxdomain_synthesis)
{
	uint8_t m[128], out[128];
	struct dnsmsg_question q, rq;
	struct dnsmsg_header h, rh;
	size_t n = build_query(m, 0xbeef, "Evil.Test", 1);
	int r;

	/* add an EDNS OPT record in additional: not copied */
	m[5] = 1;
	m[11] = 1;
	memcpy(m + n, "\0\0\x29\x10\0\0\0\0\0\0\0", 11);
	n += 11;
	m[2] = 0x01;    /* RD */
	m[3] = 0x10;    /* CD */
	r = dnsmsg_make_error(m, n, DNSMSG_NXDOMAIN, out, sizeof(out));
	cr_assert_gt(r, 0);
	cr_assert_eq(dnsmsg_parse_question(out, (size_t)r, &rh, &rq), 0);
	dnsmsg_parse_question(m, n, &h, &q);
	cr_assert_eq(rh.id, 0xbeef);
	cr_assert(rh.flags & DNSMSG_F_QR);
	cr_assert(rh.flags & DNSMSG_F_RA);
	cr_assert(rh.flags & DNSMSG_F_RD);
	cr_assert(rh.flags & DNSMSG_F_CD);
	cr_assert_not(rh.flags & (DNSMSG_F_AA | DNSMSG_F_TC | DNSMSG_F_AD));
	cr_assert_eq(rh.flags & DNSMSG_F_RCODE, DNSMSG_NXDOMAIN);
	cr_assert_eq(rh.ancount + rh.nscount + rh.arcount, 0);
	cr_assert(dnsmsg_same_question(&q, &rq));
	/* the client's casing survives (0x20 randomisation) */
	cr_assert_eq(memcmp(out + 12, "\4Evil\4Test", 10), 0);
	cr_assert_eq((size_t)r, q.end);

	/* RD clear stays clear */
	m[2] = 0;
	r = dnsmsg_make_error(m, n, DNSMSG_SERVFAIL, out, sizeof(out));
	cr_assert_gt(r, 0);
	dnsmsg_parse_header(out, (size_t)r, &rh);
	cr_assert_not(rh.flags & DNSMSG_F_RD);
	cr_assert_eq(rh.flags & DNSMSG_F_RCODE, DNSMSG_SERVFAIL);

	cr_assert_eq(dnsmsg_make_error(m, n, DNSMSG_REFUSED, out, 20), -ENOSPC);
	cr_assert_eq(dnsmsg_make_error(m, 11, DNSMSG_FORMERR, out, sizeof(out)), -EBADMSG);
}

Test(dnsmsg, formerr_without_question)
{
	uint8_t m[] = { 0x55, 0x66, 0x01, 0x00, 0, 2, 0, 0, 0, 0, 0, 0, 0xc0, 12 };
	uint8_t out[64];
	struct dnsmsg_header h;
	int r = dnsmsg_make_error(m, sizeof(m), DNSMSG_FORMERR, out, sizeof(out));

	cr_assert_eq(r, 12);
	dnsmsg_parse_header(out, 12, &h);
	cr_assert_eq(h.id, 0x5566);
	cr_assert_eq(h.qdcount, 0);
	cr_assert_eq(h.flags & DNSMSG_F_RCODE, DNSMSG_FORMERR);
}
