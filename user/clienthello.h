/* SPDX-License-Identifier: MIT */
/*
 * clienthello: a pure parser for the TLS ClientHello at the start of a
 * connection, so sluiced can learn SNI and ALPN from bytes it only peeked at
 * (recv MSG_PEEK) and then either hand the untouched stream to OpenSSL or
 * splice it to the upstream. No allocation, no I/O, no logs.
 *
 * Strict on framing (every length checked against its container; the message
 * must end exactly at a record boundary), lenient on content (unknown and
 * GREASE extensions are skipped). With Encrypted Client Hello the name seen
 * here is the *outer* SNI (the public name of the client-facing server):
 * has_ech tells the caller the real destination name is hidden from it.
 */
#ifndef SLUICE_CLIENTHELLO_H
#define SLUICE_CLIENTHELLO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CH_SNI_MAX 255
#define CH_ALPN_MAX 128
#define CH_RECORD_HEADER 5
/* Largest ClientHello handshake message accepted (its 4-byte header included). */
#define CH_MAX_HELLO 16384
/* Largest number of wire bytes ch_parse() will ask for: the message plus room
 * for 64 record headers (a hello cut into many small records). A caller that
 * peeks into a buffer of CH_MAX_BYTES always gets an answer other than -EAGAIN
 * once the buffer is full. */
#define CH_MAX_BYTES (CH_MAX_HELLO + 64 * CH_RECORD_HEADER)

struct ch_info {
	/* host_name of the server_name extension, "" if none. Only visible ASCII
	 * (0x21-0x7e) is accepted; lower-cased, one trailing dot removed, empty
	 * labels refused. IP literals are passed through (policy decides). */
	char sni[CH_SNI_MAX + 1];
	bool has_sni;
	/* Offered ALPN protocols, comma-joined in the client's order ("h2,http/1.1"),
	 * "" if none. A protocol that is not visible ASCII, contains ',' or does not
	 * fit is left out, and alpn_partial is set. */
	char alpn[CH_ALPN_MAX];
	bool alpn_partial;
	uint16_t legacy_version;        /* ClientHello.legacy_version (0x0303 for TLS 1.2/1.3) */
	bool tls13_offered;             /* supported_versions contains 0x0304 */
	bool has_ech;                   /* encrypted_client_hello (0xfe0d) present: sni is the outer one */
};

/*
 * Parse the ClientHello at the start of buf[0, len): the first handshake
 * message, possibly fragmented over several handshake records. Returns
 *   > 0        the number of bytes (record headers included) of the records
 *              that carry the ClientHello; *ret is filled (only in this case);
 *   -EAGAIN    every byte so far is consistent with a ClientHello: need more;
 *   -EINVAL    not a TLS ClientHello, or malformed; *ret_reason (when not
 *              NULL) points at a static string saying what is wrong;
 *   -EMSGSIZE  the ClientHello needs more than CH_MAX_BYTES (or its message is
 *              longer than CH_MAX_HELLO); *ret_reason set as for -EINVAL.
 * The answer depends only on the bytes given: any prefix of a ClientHello
 * gives -EAGAIN. Bytes after the returned count (early data, CCS) are not read.
 * Uses about CH_MAX_HELLO bytes of stack.
 */
ssize_t ch_parse(const unsigned char *buf, size_t len, struct ch_info *ret,
		 const char **ret_reason);

#endif
