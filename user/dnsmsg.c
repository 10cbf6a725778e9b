// SPDX-License-Identifier: MIT
#include <errno.h>
#include <string.h>

#include "dnsmsg.h"

int dnsmsg_parse_header(const uint8_t *msg, size_t len, struct dnsmsg_header *ret_hdr)
{
	if (len < DNSMSG_HDR_LEN)
		return -EBADMSG;
	ret_hdr->id = dnsmsg_get16(msg);
	ret_hdr->flags = dnsmsg_get16(msg + 2);
	ret_hdr->qdcount = dnsmsg_get16(msg + 4);
	ret_hdr->ancount = dnsmsg_get16(msg + 6);
	ret_hdr->nscount = dnsmsg_get16(msg + 8);
	ret_hdr->arcount = dnsmsg_get16(msg + 10);
	return 0;
}

static char fold(uint8_t c) { return (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c); }

/* Append one label octet in presentation form; false when text is full. */
static bool text_put(char *text, size_t *tl, uint8_t c)
{
	size_t need = 1;

	if (c == '.' || c == '\\')
		need = 2;
	else if (c < 0x21 || c > 0x7e)
		need = 4;
	if (*tl + need >= DNSMSG_NAME_TEXT_MAX)
		return false;
	if (need == 1) {
		text[(*tl)++] = fold(c);
	} else if (need == 2) {
		text[(*tl)++] = '\\';
		text[(*tl)++] = (char)c;
	} else {
		text[(*tl)++] = '\\';
		text[(*tl)++] = (char)('0' + c / 100);
		text[(*tl)++] = (char)('0' + c / 10 % 10);
		text[(*tl)++] = (char)('0' + c % 10);
	}
	return true;
}

int dnsmsg_parse_name(const uint8_t *msg, size_t len, size_t off, struct dnsmsg_question *ret_q,
		      size_t *ret_end)
{
	uint8_t wire[DNSMSG_NAME_WIRE_MAX];
	char text[DNSMSG_NAME_TEXT_MAX];
	size_t pos = off, limit = off, wl = 0, tl = 0, end = 0;
	unsigned hops = 0;

	for (;;) {
		uint8_t c;

		if (pos >= len)
			return -EBADMSG;
		c = msg[pos];
		if ((c & 0xc0) == 0xc0) {
			size_t target;

			if (pos + 1 >= len)
				return -EBADMSG;
			target = (size_t)(c & 0x3f) << 8 | msg[pos + 1];
			if (!end)
				end = pos + 2;
			/* Strictly backwards from where these labels began:
			 * anything else re-reads them, i.e. a loop. */
			if (target < DNSMSG_HDR_LEN || target >= limit || ++hops > DNSMSG_PTR_HOPS_MAX)
				return -EBADMSG;
			pos = limit = target;
			continue;
		}
		if (c & 0xc0)           /* 0x40 extended, 0x80 reserved */
			return -EBADMSG;
		if (c == 0) {
			wire[wl++] = 0;
			if (!end)
				end = pos + 1;
			break;
		}
		if (pos + 1 + c > len || wl + 1 + c + 1 > DNSMSG_NAME_WIRE_MAX)
			return -EBADMSG;
		if (tl && tl + 1 < DNSMSG_NAME_TEXT_MAX)
			text[tl++] = '.';
		wire[wl++] = c;
		for (size_t i = 0; i < c; i++) {
			uint8_t o = msg[pos + 1 + i];

			wire[wl++] = (uint8_t)fold(o);
			if (!text_put(text, &tl, o))
				return -EBADMSG;   /* cannot happen within 255 octets */
		}
		pos += 1 + (size_t)c;
	}
	text[tl] = 0;
	memcpy(ret_q->wire, wire, wl);
	ret_q->wire_len = wl;
	memcpy(ret_q->name, text, tl + 1);
	*ret_end = end;
	return 0;
}

int dnsmsg_parse_question(const uint8_t *msg, size_t len, struct dnsmsg_header *ret_hdr,
			  struct dnsmsg_question *ret_q)
{
	struct dnsmsg_header h;
	size_t end;
	int r;

	r = dnsmsg_parse_header(msg, len, &h);
	if (r < 0)
		return r;
	if (h.qdcount != 1)
		return -EBADMSG;
	r = dnsmsg_parse_name(msg, len, DNSMSG_HDR_LEN, ret_q, &end);
	if (r < 0)
		return r;
	if (end + 4 > len)
		return -EBADMSG;
	ret_q->qtype = dnsmsg_get16(msg + end);
	ret_q->qclass = dnsmsg_get16(msg + end + 2);
	ret_q->end = end + 4;
	*ret_hdr = h;
	return 0;
}

bool dnsmsg_same_question(const struct dnsmsg_question *a, const struct dnsmsg_question *b)
{
	return a->qtype == b->qtype && a->qclass == b->qclass && a->wire_len == b->wire_len &&
	       memcmp(a->wire, b->wire, a->wire_len) == 0;
}

int dnsmsg_make_error(const uint8_t *query, size_t qlen, unsigned rcode, uint8_t *out,
		      size_t outcap)
{
	struct dnsmsg_question q;
	struct dnsmsg_header h;
	size_t qd = 0;
	uint16_t flags;

	if (dnsmsg_parse_header(query, qlen, &h) < 0)
		return -EBADMSG;
	/* The question cannot use compression (nothing precedes it), so its
	 * bytes are self-contained and keep the client's 0x20 casing. */
	if (dnsmsg_parse_question(query, qlen, &h, &q) == 0)
		qd = q.end - DNSMSG_HDR_LEN;
	if (outcap < DNSMSG_HDR_LEN + qd)
		return -ENOSPC;
	flags = (uint16_t)(DNSMSG_F_QR | (h.flags & (DNSMSG_F_OPCODE | DNSMSG_F_RD | DNSMSG_F_CD)) |
			   DNSMSG_F_RA | (rcode & DNSMSG_F_RCODE));
	memset(out, 0, DNSMSG_HDR_LEN);
	dnsmsg_put16(out, h.id);
	dnsmsg_put16(out + 2, flags);
	dnsmsg_put16(out + 4, qd ? 1 : 0);
	memcpy(out + DNSMSG_HDR_LEN, query + DNSMSG_HDR_LEN, qd);
	return (int)(DNSMSG_HDR_LEN + qd);
}
