// SPDX-License-Identifier: MIT
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <openssl/err.h>

#include "conn.h"

void conn_init(struct conn *c, int fd, SSL *ssl)
{
	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->rd_ready = true;
	c->wr_ready = true;
	if (ssl)
		conn_start_tls(c, ssl);
	else
		c->handshake_done = true;
}

/*
 * Watch the socket BIO under OpenSSL: a read() that returned fewer bytes than
 * asked for drained the socket, so the next SSL_read() need not be tried
 * until epoll reports more (saves an EAGAIN syscall per request; with
 * read-ahead OpenSSL asks for a whole buffer, so a short read is meaningful).
 */
static long conn_bio_cb(BIO *b, int oper, const char *argp, size_t len, int argi, long argl,
			int ret, size_t *processed)
{
	struct conn *c = (struct conn *)BIO_get_callback_arg(b);

	(void)argp;
	(void)argi;
	(void)argl;
	if (!c)
		return ret;
	if (oper == (BIO_CB_READ | BIO_CB_RETURN)) {
		if (ret <= 0 || (processed && *processed < len))
			c->rd_ready = false;
	} else if (oper == (BIO_CB_WRITE | BIO_CB_RETURN)) {
		if (ret <= 0 || (processed && *processed < len))
			c->wr_ready = false;
	}
	return ret;
}

void conn_start_tls(struct conn *c, SSL *ssl)
{
	BIO *bio;

	c->ssl = ssl;
	c->handshake_done = false;
	SSL_set_fd(ssl, c->fd);
	SSL_set_read_ahead(ssl, 1);
	/* A peer that closes without close_notify reads as EOF; HTTP framing
	 * (http1_eof) decides whether a message was cut short. */
	SSL_set_options(ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
	bio = SSL_get_rbio(ssl);
	if (bio) {
		BIO_set_callback_arg(bio, (char *)c);
		BIO_set_callback_ex(bio, conn_bio_cb);
	}
	/* No SSL_MODE_RELEASE_BUFFERS: it costs a malloc/free per record. */
	SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	c->rd_ready = true;
	c->wr_ready = true;
}

void conn_close(struct conn *c)
{
	if (!c)
		return;
	if (c->ssl) {
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0) {
		close(c->fd);
		c->fd = -1;
	}
}

/* Map an SSL_get_error() result; returns 0 to retry later or -errno. */
static int ssl_result(struct conn *c, int ret)
{
	int e = SSL_get_error(c->ssl, ret);

	switch (e) {
	case SSL_ERROR_WANT_READ:
		c->want = EPOLLIN;
		return 0;
	case SSL_ERROR_WANT_WRITE:
		c->want = EPOLLOUT;
		return 0;
	case SSL_ERROR_ZERO_RETURN:
		c->eof = true;
		return 0;
	case SSL_ERROR_SYSCALL:
		c->ssl_err = ERR_peek_last_error();
		ERR_clear_error();
		if (errno == EAGAIN) {
			c->want = EPOLLIN;
			return 0;
		}
		if (ret == 0 || errno == 0) {
			/* EOF without close_notify: treat as EOF, framing decides. */
			c->eof = true;
			return 0;
		}
		return -errno;
	default:
		c->ssl_err = ERR_peek_last_error();
		ERR_clear_error();
		return -EPROTO;
	}
}

int conn_handshake(struct conn *c)
{
	int r;

	if (c->handshake_done)
		return 1;
	c->want = 0;
	ERR_clear_error();
	r = SSL_do_handshake(c->ssl);
	if (r == 1) {
		c->handshake_done = true;
		/* read-ahead may already hold the first application records */
		c->rd_ready = true;
		return 1;
	}
	r = ssl_result(c, r);
	if (r < 0 || c->eof)
		return -EPROTO;
	return 0;
}

void conn_note_events(struct conn *c, uint32_t events)
{
	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) {
		c->rd_ready = true;
		if (c->write_wants_read)
			c->wr_ready = true;
	}
	if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
		c->wr_ready = true;
		if (c->read_wants_write)
			c->rd_ready = true;
	}
}

bool conn_can_read(const struct conn *c)
{
	return !c->eof && (c->rd_ready || conn_pending(c));
}

ssize_t conn_read(struct conn *c, void *buf, size_t len)
{
	ssize_t n;

	c->want = 0;
	if (c->eof)
		return 0;
	if (!c->ssl) {
		n = recv(c->fd, buf, len, 0);
		if (n > 0) {
			/* A short read means the socket is drained: skip the EAGAIN. */
			if ((size_t)n < len)
				c->rd_ready = false;
			return n;
		}
		if (n == 0) {
			c->eof = true;
			return 0;
		}
		if (errno == EAGAIN || errno == EINTR) {
			c->want = EPOLLIN;
			c->rd_ready = false;
			return 0;
		}
		return -errno;
	}
	ERR_clear_error();
	n = SSL_read(c->ssl, buf, (int)(len > 1 << 30 ? 1 << 30 : len));
	if (n > 0) {
		/* the BIO callback cleared rd_ready if the socket ran dry; data
		 * already decrypted or buffered keeps reads going */
		if (SSL_has_pending(c->ssl))
			c->rd_ready = true;
		return n;
	}
	n = ssl_result(c, (int)n);
	if (n == 0 && c->want) {
		c->rd_ready = false;
		c->read_wants_write = c->want == EPOLLOUT;
	}
	return n;
}

ssize_t conn_write(struct conn *c, const void *buf, size_t len)
{
	ssize_t n;

	c->want = 0;
	if (!c->ssl) {
		n = send(c->fd, buf, len, MSG_NOSIGNAL);
		if (n >= 0) {
			if ((size_t)n < len)
				c->wr_ready = false;
			return n;
		}
		if (errno == EAGAIN || errno == EINTR) {
			c->want = EPOLLOUT;
			c->wr_ready = false;
			return 0;
		}
		return -errno;
	}
	ERR_clear_error();
	n = SSL_write(c->ssl, buf, (int)(len > 1 << 30 ? 1 << 30 : len));
	if (n > 0)
		return n;
	n = ssl_result(c, (int)n);
	if (n == 0 && c->eof)
		return -EPIPE;
	if (n == 0 && c->want) {
		c->wr_ready = false;
		c->write_wants_read = c->want == EPOLLIN;
	}
	return n;
}

bool conn_pending(const struct conn *c)
{
	return c->ssl && SSL_pending(c->ssl) > 0;
}

void conn_shutdown_write(struct conn *c)
{
	if (c->ssl) {
		ERR_clear_error();
		SSL_shutdown(c->ssl);
		ERR_clear_error();
		return; /* close() right after sends the FIN */
	}
	shutdown(c->fd, SHUT_WR);
}

const char *conn_error(const struct conn *c, char *buf, size_t len)
{
	if (c->ssl_err) {
		const char *reason = ERR_reason_error_string(c->ssl_err);

		snprintf(buf, len, "%s", reason ? reason : "TLS error");
		if (c->ssl) {
			long v = SSL_get_verify_result(c->ssl);

			if (v != X509_V_OK)
				snprintf(buf, len, "certificate verify failed: %s",
					 X509_verify_cert_error_string(v));
		}
		return buf;
	}
	snprintf(buf, len, "%s", "connection error");
	return buf;
}
