/* SPDX-License-Identifier: MIT */
/* buf: a bounded byte buffer (data[off, off+len) of cap bytes). Every buffer
 * a peer can fill has a fixed cap: a full buffer stops reading that peer. */
#ifndef SLUICE_BUF_H
#define SLUICE_BUF_H

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct buf {
	char *data;
	size_t off;
	size_t len;
	size_t cap;
};

static inline int buf_init(struct buf *b, size_t cap)
{
	b->data = malloc(cap);
	if (!b->data)
		return -ENOMEM;
	b->off = b->len = 0;
	b->cap = cap;
	return 0;
}

/* Free; with wipe, zero it first (it may have held a real secret value). */
static inline void buf_free_wipe(struct buf *b, int wipe)
{
	if (b->data && wipe)
		explicit_bzero(b->data, b->cap);
	free(b->data);
	b->data = NULL;
	b->off = b->len = b->cap = 0;
}

static inline void buf_free(struct buf *b)
{
	/* buffers may have held real secret values on their way upstream */
	if (b->data)
		explicit_bzero(b->data, b->cap);
	free(b->data);
	b->data = NULL;
	b->off = b->len = b->cap = 0;
}

static inline char *buf_head(const struct buf *b) { return b->data + b->off; }

/* Make the free space contiguous at the tail. */
static inline void buf_compact(struct buf *b)
{
	if (b->off && b->len)
		memmove(b->data, b->data + b->off, b->len);
	b->off = 0;
}

static inline size_t buf_space(struct buf *b)
{
	if (b->off + b->len == b->cap || (b->len == 0 && b->off))
		buf_compact(b);
	return b->cap - b->off - b->len;
}

static inline size_t buf_free_total(const struct buf *b) { return b->cap - b->len; }

static inline char *buf_tail(struct buf *b) { return b->data + b->off + b->len; }

static inline void buf_consume(struct buf *b, size_t n)
{
	b->off += n;
	b->len -= n;
	if (!b->len)
		b->off = 0;
}

/* Append n bytes; -ENOBUFS if they do not fit (nothing appended). */
static inline int buf_append(struct buf *b, const void *p, size_t n)
{
	if (buf_free_total(b) < n)
		return -ENOBUFS;
	if (b->cap - b->off - b->len < n)
		buf_compact(b);
	memcpy(buf_tail(b), p, n);
	b->len += n;
	return 0;
}

#endif
