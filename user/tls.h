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
 *    trust store or upstream_ca, hostname checked, ALPN http/1.1).
 * The module never logs; errors come back as -errno / NULL plus a message
 * written to the caller's buffer.
 */
#ifndef SLUICE_TLS_H
#define SLUICE_TLS_H

#include <stddef.h>
#include <openssl/ssl.h>

struct tls;

struct tls_opts {
	const char *state_dir;     /* where ca.pem/ca.key live or are created */
	const char *ca_cert;       /* optional PEM path: use this CA instead */
	const char *ca_key;        /* optional PEM path, required with ca_cert */
	const char *upstream_ca;   /* optional PEM bundle; NULL: system store */
	unsigned cert_cache_size;  /* leaf LRU capacity; 0: 1024 */
};

/* Returns 0 and *ret_tls, or -errno with a one-line reason in err. */
int tls_init(const struct tls_opts *opts, struct tls **ret_tls, char *err, size_t errlen);
void tls_free(struct tls *t);

/* Path of the CA certificate (PEM) sandboxes must trust. */
const char *tls_ca_path(const struct tls *t);

/*
 * A new server-side SSL (accept state) for a client connection. The leaf is
 * picked in the handshake from the client's SNI; when the client sends none,
 * fallback_name (an IP literal of the original destination, or NULL) is
 * used. After the handshake, tls_server_name() gives the name served.
 */
SSL *tls_server_new(struct tls *t, const char *fallback_name);
/* The name the leaf was minted for (SNI or fallback), or NULL. */
const char *tls_server_name(SSL *ssl);

/*
 * A new client-side SSL (connect state) toward an upstream: SNI = host
 * (unless host is an IP literal), certificate verified for host.
 */
SSL *tls_client_new(struct tls *t, const char *host);

/* Counters for metrics/bench: leaf cache hits and misses. */
void tls_cache_stats(struct tls *t, unsigned long *ret_hits, unsigned long *ret_misses);

#endif
