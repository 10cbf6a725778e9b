/* SPDX-License-Identifier: MIT */
/*
 * dnsmsg: pure DNS message helpers (RFC 1035 §4): the header, one question
 * (QNAME with compression pointers, QTYPE, QCLASS) and error replies
 * synthesised from a query. No allocation, no I/O; every read is bounded by
 * the message length. Answer records are never parsed: sluice only relays them.
 */
#ifndef SLUICE_DNSMSG_H
#define SLUICE_DNSMSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DNSMSG_HDR_LEN 12
#define DNSMSG_LABEL_MAX 63
#define DNSMSG_NAME_WIRE_MAX 255        /* RFC 1035 §3.1, root byte included */
/* Presentation form: every octet may need "\DDD"; 255 wire octets give at
 * most 1012 characters. */
#define DNSMSG_NAME_TEXT_MAX 1024
#define DNSMSG_PTR_HOPS_MAX 128

#define DNSMSG_F_QR 0x8000
#define DNSMSG_F_OPCODE 0x7800
#define DNSMSG_F_AA 0x0400
#define DNSMSG_F_TC 0x0200
#define DNSMSG_F_RD 0x0100
#define DNSMSG_F_RA 0x0080
#define DNSMSG_F_AD 0x0020
#define DNSMSG_F_CD 0x0010
#define DNSMSG_F_RCODE 0x000f

enum dnsmsg_rcode {
	DNSMSG_NOERROR = 0,
	DNSMSG_FORMERR = 1,
	DNSMSG_SERVFAIL = 2,
	DNSMSG_NXDOMAIN = 3,
	DNSMSG_NOTIMP = 4,
	DNSMSG_REFUSED = 5,
};

struct dnsmsg_header {
	uint16_t id;
	uint16_t flags;
	uint16_t qdcount, ancount, nscount, arcount;
};

struct dnsmsg_question {
	/* Uncompressed wire form, ASCII lower-cased, root byte included. */
	uint8_t wire[DNSMSG_NAME_WIRE_MAX];
	size_t wire_len;
	/* Presentation form: lower-case, no trailing dot, root is "". Octets
	 * outside '!'..'~' are written "\DDD", '.' and '\' as "\." and "\\",
	 * so a label holding a dot can never pass for two labels. */
	char name[DNSMSG_NAME_TEXT_MAX];
	uint16_t qtype, qclass;
	size_t end;             /* message offset just past QCLASS */
};

static inline uint16_t dnsmsg_get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static inline void dnsmsg_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline unsigned dnsmsg_opcode(uint16_t flags) { return (flags & DNSMSG_F_OPCODE) >> 11; }

/* Read the 12-byte header. 0, or -EBADMSG when len < 12. */
int dnsmsg_parse_header(const uint8_t *msg, size_t len, struct dnsmsg_header *ret_hdr);

/*
 * Read the domain name at msg[off]. Compression pointers must point into the
 * message body (>= 12) and strictly before the start of the labels that led
 * to them, so loops are impossible; hops are capped as well. Labels > 63,
 * names > 255 octets, the reserved 0x40/0x80 label types and truncation give
 * -EBADMSG. On success ret_q->wire/wire_len/name are filled, *ret_end is the
 * offset just past the name where it started (past the first pointer).
 */
int dnsmsg_parse_name(const uint8_t *msg, size_t len, size_t off, struct dnsmsg_question *ret_q,
		      size_t *ret_end);

/*
 * Parse the header and the single question of msg (query or answer).
 * QDCOUNT must be exactly 1 (-EBADMSG otherwise); other sections are not
 * looked at. 0 or -EBADMSG; out-params written only on success.
 */
int dnsmsg_parse_question(const uint8_t *msg, size_t len, struct dnsmsg_header *ret_hdr,
			  struct dnsmsg_question *ret_q);

/* Same name (case-insensitive, already folded), QTYPE and QCLASS. */
bool dnsmsg_same_question(const struct dnsmsg_question *a, const struct dnsmsg_question *b);

/*
 * Build the reply with rcode to query into out: ID, OPCODE, RD and CD kept;
 * QR and RA set; AA/TC/AD clear. When the query's question parses, it is
 * copied verbatim (QDCOUNT 1), else QDCOUNT is 0 (e.g. FORMERR for a bad
 * name). No other records. Returns the reply length, -EBADMSG when query is
 * shorter than a header, -ENOSPC when out is too small.
 */
int dnsmsg_make_error(const uint8_t *query, size_t qlen, unsigned rcode, uint8_t *out,
		      size_t outcap);

#endif
