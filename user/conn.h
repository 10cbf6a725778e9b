/* SPDX-License-Identifier: MIT */
/*
 * conn: one byte stream, plain TCP or OpenSSL over TCP, behind the same
 * non-blocking read/write/handshake calls. Protocol code uses only these and
 * never sees the SSL object or the fd. After each call, conn_wants() says
 * which readiness (EPOLLIN/EPOLLOUT) the stream waits for.
 */
#ifndef SLUICE_CONN_H
#define SLUICE_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/types.h>
#include <openssl/ssl.h>

struct conn {
	int fd;
	SSL *ssl;               /* NULL: plain */
	uint32_t want;          /* EPOLLIN/EPOLLOUT the last call blocked on */
	bool eof;               /* peer closed (or TLS close_notify) */
	bool rd_ready;          /* a read may make progress (epoll said so) */
	bool wr_ready;          /* a write may make progress */
	bool read_wants_write;  /* TLS read blocked on the socket's write side */
	bool write_wants_read;
	bool handshake_done;
	unsigned long ssl_err;  /* last OpenSSL error code, for messages */
};

/* Wrap fd (owned from now on). ssl may be NULL; when set, the conn owns it
 * and binds it to fd. */
void conn_init(struct conn *c, int fd, SSL *ssl);
/* Close the fd and free the SSL (no TLS close_notify wait). NULL-safe. */
void conn_close(struct conn *c);

/* Start TLS on an established plain conn (after CONNECT, or upstream). */
void conn_start_tls(struct conn *c, SSL *ssl);

/* 1 done, 0 in progress (see want), -EPROTO failed (see conn_error). */
int conn_handshake(struct conn *c);

/* >0 bytes read, 0 would block (see want) or EOF (see c->eof), -errno. */
ssize_t conn_read(struct conn *c, void *buf, size_t len);
/* >0 bytes written, 0 would block (see want), -errno (-EPIPE on reset).
 * After 0 on TLS, retry with the same bytes (or more): OpenSSL requires it.
 * OpenSSL writes with write(2): the process must ignore SIGPIPE (sluiced
 * does) for a reset peer to show up as -EPIPE instead of a signal. */
ssize_t conn_write(struct conn *c, const void *buf, size_t len);

/* Record what epoll reported for c->fd, so reads and writes are only tried
 * when they can progress (no EAGAIN round trips). */
void conn_note_events(struct conn *c, uint32_t events);
/* true when a read is worth trying now. */
bool conn_can_read(const struct conn *c);

/* true when decrypted bytes wait inside the TLS layer (epoll cannot see them). */
bool conn_pending(const struct conn *c);

/* Half-close the write side (plain: shutdown(SHUT_WR); TLS: close_notify). */
void conn_shutdown_write(struct conn *c);

/* A short text for the last failure (OpenSSL reason or strerror). */
const char *conn_error(const struct conn *c, char *buf, size_t len);

#endif
