// SPDX-License-Identifier: MIT
/*
 * clienthello: TLS ClientHello parser (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2,
 * RFC 6066 §3 server_name, RFC 7301 ALPN). Two steps: gather the handshake
 * message out of its records into a stack buffer (so fragmentation is handled
 * once, in one place), then walk the message with a bounds-checked cursor.
 */
#include <errno.h>
#include <string.h>

#include "clienthello.h"

#define CH_CT_HANDSHAKE 22
#define CH_HT_CLIENT_HELLO 1
#define CH_RECORD_MAX 16384 /* 2^14: largest TLSPlaintext fragment */

#define CH_EXT_SERVER_NAME 0
#define CH_EXT_ALPN 16
#define CH_EXT_SUPPORTED_VERSIONS 43
#define CH_EXT_ECH 0xfe0d

/* A read-only view of n bytes at p; every read checks n first. */
struct ch_cur {
	const unsigned char *p;
	size_t n;
};

static bool cur_u8(struct ch_cur *c, unsigned *v)
{
	if (c->n < 1)
		return false;
	*v = c->p[0];
	c->p++;
	c->n--;
	return true;
}

static bool cur_u16(struct ch_cur *c, unsigned *v)
{
	if (c->n < 2)
		return false;
	*v = (unsigned)c->p[0] << 8 | c->p[1];
	c->p += 2;
	c->n -= 2;
	return true;
}

static bool cur_skip(struct ch_cur *c, size_t k)
{
	if (c->n < k)
		return false;
	c->p += k;
	c->n -= k;
	return true;
}

/* A vector with a 1- or 2-byte length prefix; false if the prefix or the
 * body runs past the container. */
static bool cur_vec(struct ch_cur *c, int prefix, struct ch_cur *ret_sub)
{
	struct ch_cur save = *c;
	unsigned len;

	if (!(prefix == 1 ? cur_u8(c, &len) : cur_u16(c, &len)) || c->n < len) {
		*c = save;
		return false;
	}
	ret_sub->p = c->p;
	ret_sub->n = len;
	c->p += len;
	c->n -= len;
	return true;
}

/* RFC 6066: ServerNameList with exactly one host_name (as OpenSSL insists
 * too: anything looser lets us and the upstream disagree on the name). */
static const char *parse_server_name(struct ch_cur ext, struct ch_info *ci)
{
	struct ch_cur list, name;
	unsigned type;
	size_t n;

	if (!cur_vec(&ext, 2, &list))
		return "server_name list length overflows";
	if (ext.n)
		return "data after server_name list";
	if (!list.n)
		return "server_name list is empty";
	if (!cur_u8(&list, &type) || type != 0)
		return "server_name type is not host_name";
	if (!cur_vec(&list, 2, &name))
		return "host_name length overflows";
	if (list.n)
		return "server_name list holds more than one name";
	n = name.n;
	if (n > CH_SNI_MAX)
		return "host_name longer than 255 bytes";
	for (size_t i = 0; i < n; i++) {
		if (name.p[i] == 0)
			return "host_name contains NUL";
		if (name.p[i] < 0x21 || name.p[i] > 0x7e)
			return "host_name has a byte that is not visible ASCII";
	}
	if (n && name.p[n - 1] == '.')
		n--;
	if (!n)
		return "host_name is empty";
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = name.p[i];

		if (ch == '.' && (i == 0 || i == n - 1 || name.p[i + 1] == '.'))
			return "host_name has an empty label";
		ci->sni[i] = (ch >= 'A' && ch <= 'Z') ? ch + ('a' - 'A') : ch;
	}
	ci->sni[n] = '\0';
	ci->has_sni = true;
	return NULL;
}

/* RFC 7301: ProtocolNameList<2..2^16-1> of ProtocolName<1..2^8-1>. */
static const char *parse_alpn(struct ch_cur ext, struct ch_info *ci)
{
	struct ch_cur list, proto;
	size_t pos = 0;

	if (!cur_vec(&ext, 2, &list))
		return "ALPN list length overflows";
	if (ext.n)
		return "data after ALPN list";
	if (!list.n)
		return "ALPN list is empty";
	while (list.n) {
		bool ok = true;

		if (!cur_vec(&list, 1, &proto))
			return "ALPN protocol length overflows";
		if (!proto.n)
			return "ALPN protocol is empty";
		for (size_t i = 0; i < proto.n && ok; i++)
			ok = proto.p[i] >= 0x21 && proto.p[i] <= 0x7e && proto.p[i] != ',';
		/* separator + name + NUL must fit */
		if (!ok || pos + (pos ? 1 : 0) + proto.n + 1 > sizeof(ci->alpn)) {
			ci->alpn_partial = true;
			continue;
		}
		if (pos)
			ci->alpn[pos++] = ',';
		memcpy(ci->alpn + pos, proto.p, proto.n);
		pos += proto.n;
		ci->alpn[pos] = '\0';
	}
	return NULL;
}

/* RFC 8446 §4.2.1, ClientHello form: ProtocolVersion versions<2..254>. */
static const char *parse_supported_versions(struct ch_cur ext, struct ch_info *ci)
{
	struct ch_cur list;
	unsigned v;

	if (!cur_vec(&ext, 1, &list))
		return "supported_versions length overflows";
	if (ext.n)
		return "data after supported_versions list";
	if (list.n < 2 || list.n % 2)
		return "supported_versions length is invalid";
	while (cur_u16(&list, &v))
		if (v == 0x0304)
			ci->tls13_offered = true;
	return NULL;
}

static const char *parse_extensions(struct ch_cur exts, struct ch_info *ci)
{
	uint64_t seen = 0; /* types below 64; the ones above are rare enough to not care */
	struct ch_cur data;
	unsigned type;
	const char *why;

	while (exts.n) {
		if (!cur_u16(&exts, &type))
			return "extension header truncated";
		if (!cur_vec(&exts, 2, &data))
			return "extension length overflows";
		if (type < 64) {
			if (seen & (1ULL << type))
				return "duplicate extension";
			seen |= 1ULL << type;
		}
		why = NULL;
		switch (type) {
		case CH_EXT_SERVER_NAME:
			why = parse_server_name(data, ci);
			break;
		case CH_EXT_ALPN:
			why = parse_alpn(data, ci);
			break;
		case CH_EXT_SUPPORTED_VERSIONS:
			why = parse_supported_versions(data, ci);
			break;
		case CH_EXT_ECH:
			if (ci->has_ech)
				return "duplicate extension";
			ci->has_ech = true;
			break;
		default:
			break;
		}
		if (why)
			return why;
	}
	return NULL;
}

/* The ClientHello body (after the 4-byte handshake header). */
static const char *parse_body(struct ch_cur c, struct ch_info *ci)
{
	struct ch_cur v, exts;
	unsigned ver;

	if (!cur_u16(&c, &ver) || !cur_skip(&c, 32))
		return "ClientHello truncated";
	if (ver >> 8 != 3)
		return "ClientHello version is not TLS";
	ci->legacy_version = ver;
	if (c.n && c.p[0] > 32)
		return "session id longer than 32 bytes";
	if (!cur_vec(&c, 1, &v))
		return "session id length overflows";
	if (!cur_vec(&c, 2, &v))
		return "cipher suites length overflows";
	if (!v.n || v.n % 2)
		return "cipher suites length is invalid";
	if (!cur_vec(&c, 1, &v))
		return "compression methods length overflows";
	if (!v.n)
		return "no compression methods";
	if (!c.n) /* extensions are optional before TLS 1.3 */
		return NULL;
	if (!cur_vec(&c, 2, &exts))
		return "extensions length overflows";
	if (c.n)
		return "data after extensions";
	return parse_extensions(exts, ci);
}

static ssize_t fail(int err, const char *why, const char **ret_reason)
{
	if (ret_reason)
		*ret_reason = why;
	return -err;
}

/* More bytes are needed: more than CH_MAX_BYTES in all if len is already there. */
static ssize_t need_more(size_t len, const char **ret_reason)
{
	if (len >= CH_MAX_BYTES)
		return fail(EMSGSIZE, "ClientHello spans more than CH_MAX_BYTES", ret_reason);
	return -EAGAIN;
}

ssize_t ch_parse(const unsigned char *buf, size_t len, struct ch_info *ret,
		 const char **ret_reason)
{
	unsigned char hs[CH_MAX_HELLO];
	size_t have = 0, total = 0, off = 0; /* total == 0: handshake header not seen yet */
	struct ch_info ci;
	const char *why;

	if (len == 0)
		return -EAGAIN;
	/* SSLv2 CLIENT-HELLO: 2-byte length with the top bit set, msg type 1. */
	if (buf[0] != CH_CT_HANDSHAKE && (buf[0] & 0x80)) {
		if (len < 3)
			return -EAGAIN;
		if (buf[2] == 1)
			return fail(EINVAL, "SSLv2 ClientHello not supported", ret_reason);
	}
	/* Each pass takes one record; each record is >= 6 bytes, so this ends. */
	for (;;) {
		size_t rlen, body, used = 0;

		if (len - off < 1)
			return need_more(len, ret_reason);
		if (buf[off] != CH_CT_HANDSHAKE)
			return fail(EINVAL, "record type is not handshake", ret_reason);
		if (len - off >= 2 && buf[off + 1] != 3)
			return fail(EINVAL, "record version is not TLS", ret_reason);
		if (len - off < CH_RECORD_HEADER)
			return need_more(len, ret_reason);
		rlen = (size_t)buf[off + 3] << 8 | buf[off + 4];
		if (rlen == 0)
			return fail(EINVAL, "empty handshake record", ret_reason);
		if (rlen > CH_RECORD_MAX)
			return fail(EINVAL, "record length exceeds 2^14", ret_reason);
		if (off + CH_RECORD_HEADER + rlen > CH_MAX_BYTES)
			return fail(EMSGSIZE, "ClientHello spans more than CH_MAX_BYTES", ret_reason);
		body = len - off - CH_RECORD_HEADER;
		if (body > rlen)
			body = rlen;
		while (used < body) {
			size_t target = total ? total : 4;
			size_t k = body - used;

			if (have == target)
				break;
			if (k > target - have)
				k = target - have;
			memcpy(hs + have, buf + off + CH_RECORD_HEADER + used, k);
			have += k;
			used += k;
			if (!total && have == 4) {
				size_t mlen = (size_t)hs[1] << 16 | (size_t)hs[2] << 8 | hs[3];

				if (hs[0] != CH_HT_CLIENT_HELLO)
					return fail(EINVAL, "handshake message is not ClientHello",
						    ret_reason);
				if (mlen > CH_MAX_HELLO - 4)
					return fail(EMSGSIZE, "ClientHello longer than CH_MAX_HELLO",
						    ret_reason);
				total = 4 + mlen;
			}
		}
		if (total && have == total) {
			/* Complete; the record must end with it (also when its tail
			 * has not arrived yet: the header already says it is there). */
			if (used < rlen)
				return fail(EINVAL, "data after ClientHello in its record",
					    ret_reason);
			off += CH_RECORD_HEADER + rlen;
			break;
		}
		if (body < rlen)
			return need_more(len, ret_reason);
		off += CH_RECORD_HEADER + rlen;
	}

	memset(&ci, 0, sizeof(ci));
	why = parse_body((struct ch_cur){ .p = hs + 4, .n = total - 4 }, &ci);
	if (why)
		return fail(EINVAL, why, ret_reason);
	if (ret)
		*ret = ci;
	return off;
}
