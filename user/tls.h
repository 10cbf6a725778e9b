/* SPDX-License-Identifier: MIT */
/*
 * tls: sluice's TLS material and OpenSSL contexts.
 *  - the CA: ECDSA P-256, generated on first start into state_dir
 *    (ca.pem 0644, ca.key 0600) unless ca_cert/ca_key are given;
 *  - leaf certificates minted per name (DNS SNI, or an IP literal when the
 *    client sent no SNI), all sharing one ECDSA P-256 leaf key, signed by the
 *    CA, kept in a bounded LRU cache (thread-safe);
 *  - the server SSL_CTX used toward the sandbox (ALPN: http/1.1 only) and the
 *    client SSL_CTX used toward upstreams (verification against the system
 *    trust store or upstream_ca, hostname checked, ALPN http/1.1, sessions
 *    resumed per exact host name).
 * Server side: TLS 1.2+, ECDHE (X25519, P-256, P-384) with ECDSA suites
 * only, stateless session tickets. Renegotiation is off both ways.
 * SSL_OP_IGNORE_UNEXPECTED_EOF is not set: a peer closing without
 * close_notify shows as SSL_ERROR_SSL (callers may set it per SSL).
 * Thread-safe: any function may be called from any thread once tls_init
 * has returned, except tls_free.
 * The module never logs; errors come back as -errno / NULL plus a message
 * written to the caller's buffer.
 */
#ifndef SLUICE_TLS_H
#define SLUICE_TLS_H

#include <stddef.h>
#include <openssl/ssl.h>

struct tls;

/* Longest DNS name (or IP literal) a leaf is minted for / an upstream host. */
#define TLS_NAME_MAX 253

struct tls_opts {
	const char *state_dir;     /* where ca.pem/ca.key live or are created */
	const char *ca_cert;       /* optional PEM path: use this CA instead */
	const char *ca_key;        /* optional PEM path, required with ca_cert */
	const char *upstream_ca;   /* optional PEM bundle; NULL: system store */
	unsigned cert_cache_size;  /* leaf LRU capacity; 0: 1024; max 1048576 */
};

/*
 * Returns 0 and *ret_tls, or -errno with a one-line reason in err (may be
 * NULL). CA source, in order: ca_cert+ca_key (checked: a CA, key matches,
 * key file not readable by group/other), else state_dir/ca.pem+ca.key, else
 * a new CA written there (state_dir created 0700; a group/other-writable
 * state_dir is refused with -EPERM). Errors: -EINVAL bad options or files,
 * -EPERM key/dir permissions or owner, -ENOENT ca.pem without ca.key,
 * -EKEYEXPIRED expired CA, other -errno from the file system.
 */
int tls_init(const struct tls_opts *opts, struct tls **ret_tls, char *err, size_t errlen);
/* Frees everything; NULL is fine. Every SSL made from t must be freed first. */
void tls_free(struct tls *t);

/* Path of the CA certificate (PEM) sandboxes must trust. */
const char *tls_ca_path(const struct tls *t);
/* The CA certificate itself (owned by t, no reference taken). */
X509 *tls_ca_cert(const struct tls *t);

/*
 * A new server-side SSL (accept state) for a client connection; the caller
 * attaches the fd/BIO and owns the SSL (SSL_free). The leaf is picked in the
 * handshake from the client's SNI; when the client sends none,
 * fallback_name (an IP literal of the original destination, "[v6]" ok, or
 * NULL; copied) is used. Names are lower-cased and a trailing dot dropped;
 * no name, a name over 253 bytes or with bytes outside [a-z0-9.-_*] (an
 * invalid SNI never falls back), or a mint failure fails the handshake with
 * an alert. An invalid fallback_name: NULL, errno EINVAL. ALPN: http/1.1 when the
 * client offers it, else none. Modes: partial writes and moving write
 * buffers are allowed. NULL with errno on failure.
 * After the handshake, tls_server_name() gives the name served.
 */
SSL *tls_server_new(struct tls *t, const char *fallback_name);
/* The normalised name the leaf was minted for (SNI or fallback), or NULL
 * before the ClientHello was processed. Valid for the SSL's lifetime.
 * On an SSL from tls_client_new(): the normalised upstream host. */
const char *tls_server_name(SSL *ssl);

/*
 * A new client-side SSL (connect state) toward an upstream: SNI = host
 * (unless host is an IP literal), certificate verified for host (name or
 * IP), ALPN http/1.1, TLS 1.2+. A session from an earlier connection to the
 * same host (exact normalised name, never another) is offered for
 * resumption; up to 256 hosts are remembered. NULL with errno EINVAL for
 * an invalid host ('*' refused), ENOMEM otherwise.
 */
SSL *tls_client_new(struct tls *t, const char *host);

/* A client context with its own trust store (a policy's upstream_ca):
 * certificates verified against ca_file only, no session resumption. */
struct tls_client;
int tls_client_ctx_new(struct tls *t, const char *ca_file, struct tls_client **ret, char *err,
		       size_t errlen);
void tls_client_ctx_free(void *tc);   /* void * so owners can keep it opaquely */
/* tls_client_new() with tc's trust store (tc NULL: the default context). */
SSL *tls_client_new_in(struct tls *t, const struct tls_client *tc, const char *host);

/* Counters for metrics/bench: leaf cache hits and misses (one lookup per
 * ClientHello processed — two after a HelloRetryRequest; hits + misses ==
 * lookups). Either pointer may be NULL. */
void tls_cache_stats(struct tls *t, unsigned long *ret_hits, unsigned long *ret_misses);

#endif
