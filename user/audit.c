// SPDX-License-Identifier: MIT
/*
 * audit: record formatting and the log writer.
 *
 * The queue is one byte ring holding whole lines. Submitters copy a line in
 * under the lock (never any I/O); the writer thread write()s straight out of
 * the ring without the lock (submitters only touch free space) and frees
 * space as each write() returns. Because every queued line ends in its only
 * '\n', "the last byte written was '\n'" tells the writer it is between two
 * records: that is the only moment it switches files after audit_reopen.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit.h"

/* ---- formatting ---------------------------------------------------------- */

struct jbuf {
	char *p, *end;          /* end: last byte usable for text (one kept for the NUL) */
	bool over;
};

static void jb_putn(struct jbuf *b, const void *s, size_t n)
{
	if (b->over || (size_t)(b->end - b->p) < n) {
		b->over = true;
		return;
	}
	memcpy(b->p, s, n);
	b->p += n;
}

static void jb_puts(struct jbuf *b, const char *s)
{
	jb_putn(b, s, strlen(s));
}

static void jb_putc(struct jbuf *b, char c)
{
	jb_putn(b, &c, 1);
}

/*
 * Length of the UTF-8 sequence at p (Unicode Table 3-7: no overlongs, no
 * surrogates, nothing above U+10FFFF). When it is invalid, *ok is false and
 * the length is that of the maximal ill-formed subpart (at least 1), which
 * becomes one U+FFFD (Unicode's recommended practice).
 */
static size_t utf8_seq(const unsigned char *p, size_t n, bool *ok)
{
	unsigned char c = p[0], lo = 0x80, hi = 0xBF;
	size_t need;

	if (c >= 0xC2 && c <= 0xDF) {
		need = 1;
	} else if (c >= 0xE0 && c <= 0xEF) {
		need = 2;
		if (c == 0xE0)
			lo = 0xA0;
		else if (c == 0xED)
			hi = 0x9F;
	} else if (c >= 0xF0 && c <= 0xF4) {
		need = 3;
		if (c == 0xF0)
			lo = 0x90;
		else if (c == 0xF4)
			hi = 0x8F;
	} else {
		*ok = false;
		return 1;
	}
	for (size_t i = 1; i <= need; i++) {
		unsigned char min = i == 1 ? lo : 0x80, max = i == 1 ? hi : 0xBF;

		if (i >= n || p[i] < min || p[i] > max) {
			*ok = false;
			return i;
		}
	}
	*ok = true;
	return need + 1;
}

/* A JSON string of the n bytes at s; NULL is "". */
static void jb_str(struct jbuf *b, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s, *e = p + n;
	char esc[8];

	jb_putc(b, '"');
	while (p < e && !b->over) {
		unsigned char c = *p;
		size_t k;
		bool ok;

		if (c < 0x80) {
			switch (c) {
			case '"': jb_putn(b, "\\\"", 2); break;
			case '\\': jb_putn(b, "\\\\", 2); break;
			case '\b': jb_putn(b, "\\b", 2); break;
			case '\f': jb_putn(b, "\\f", 2); break;
			case '\n': jb_putn(b, "\\n", 2); break;
			case '\r': jb_putn(b, "\\r", 2); break;
			case '\t': jb_putn(b, "\\t", 2); break;
			default:
				if (c < 0x20 || c == 0x7f) {
					snprintf(esc, sizeof(esc), "\\u%04x", c);
					jb_putn(b, esc, 6);
				} else {
					jb_putc(b, (char)c);
				}
			}
			p++;
			continue;
		}
		k = utf8_seq(p, (size_t)(e - p), &ok);
		if (!ok)
			jb_putn(b, "\xEF\xBF\xBD", 3);
		else if (k == 3 && p[0] == 0xE2 && p[1] == 0x80 && (p[2] == 0xA8 || p[2] == 0xA9))
			/* Valid JSON, but a line break to JavaScript and some log tools. */
			jb_puts(b, p[2] == 0xA8 ? "\\u2028" : "\\u2029");
		else
			jb_putn(b, p, k);
		p += k;
	}
	jb_putc(b, '"');
}

static void jb_key_str(struct jbuf *b, const char *key, const char *s)
{
	jb_puts(b, key);
	jb_str(b, s ? s : "", s ? strlen(s) : 0);
}

static void jb_key_u64(struct jbuf *b, const char *key, uint64_t v)
{
	char num[24];

	jb_puts(b, key);
	jb_putn(b, num, (size_t)snprintf(num, sizeof(num), "%" PRIu64, v));
}

static void jb_time(struct jbuf *b, const struct timespec *ts)
{
	time_t t = ts->tv_sec;
	long us = ts->tv_nsec / 1000;
	char s[64];
	struct tm tm;
	int n;

	if (!gmtime_r(&t, &tm)) {
		t = 0;
		gmtime_r(&t, &tm);
	}
	if (us < 0 || us > 999999)
		us = 0;
	n = snprintf(s, sizeof(s), "\"%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ\"", tm.tm_year + 1900,
		     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, us);
	jb_putn(b, s, (size_t)n);
}

/* The query (and a fragment, which a request should not carry) never reach the log. */
static size_t path_len(const char *path)
{
	return path ? strcspn(path, "?#") : 0;
}

int audit_format(const struct audit_rec *r, char *buf, size_t len)
{
	struct jbuf b = { .p = buf, .end = buf + (len ? len - 1 : 0), .over = len == 0 };
	char num[16];

	jb_puts(&b, "{\"time\":");
	jb_time(&b, &r->time);
	jb_key_str(&b, ",\"kind\":", r->kind);
	jb_key_str(&b, ",\"sandbox\":", r->sandbox);
	jb_key_str(&b, ",\"cgroup\":", r->cgroup);
	jb_key_str(&b, ",\"principal\":", r->principal);
	jb_key_str(&b, ",\"method\":", r->method);
	jb_key_str(&b, ",\"scheme\":", r->scheme);
	jb_key_str(&b, ",\"host\":", r->host);
	jb_key_u64(&b, ",\"port\":", r->port);
	jb_puts(&b, ",\"path\":");
	jb_str(&b, r->path ? r->path : "", path_len(r->path));
	jb_puts(&b, ",\"status\":");
	jb_putn(&b, num, (size_t)snprintf(num, sizeof(num), "%d", r->status));
	jb_key_u64(&b, ",\"bytes_in\":", r->bytes_in);
	jb_key_u64(&b, ",\"bytes_out\":", r->bytes_out);
	jb_key_u64(&b, ",\"duration_us\":", r->duration_us);
	jb_key_str(&b, ",\"decision\":", r->decision);
	jb_key_str(&b, ",\"rule\":", r->rule);
	jb_key_str(&b, ",\"reason\":", r->reason);
	jb_puts(&b, ",\"secrets\":[");
	for (unsigned i = 0; r->secrets && i < r->nsecrets; i++) {
		if (i)
			jb_putc(&b, ',');
		jb_str(&b, r->secrets[i] ? r->secrets[i] : "",
		       r->secrets[i] ? strlen(r->secrets[i]) : 0);
	}
	jb_putc(&b, ']');
	jb_key_u64(&b, ",\"redactions\":", r->redactions);
	jb_key_str(&b, ",\"tls_mode\":", r->tls_mode);
	jb_key_str(&b, ",\"upstream_addr\":", r->upstream_addr);
	jb_putn(&b, "}\n", 2);
	if (b.over)
		return -ENOBUFS;
	*b.p = 0;
	return (int)(b.p - buf);
}

static size_t str_bound(const char *s, size_t n)
{
	(void)s;
	return 2 + 6 * n;       /* quotes; a byte becomes at most \u00XX */
}

size_t audit_line_bound(const struct audit_rec *r)
{
	const char *strs[] = { r->kind, r->sandbox, r->cgroup, r->principal, r->method, r->scheme,
			       r->host, r->decision, r->rule, r->reason, r->tls_mode,
			       r->upstream_addr };
	/* Keys, punctuation, the time and the numbers take well under 512 bytes. */
	size_t n = 512 + str_bound(r->path, path_len(r->path));

	for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
		n += str_bound(strs[i], strs[i] ? strlen(strs[i]) : 0);
	for (unsigned i = 0; r->secrets && i < r->nsecrets; i++)
		n += 1 + str_bound(r->secrets[i], r->secrets[i] ? strlen(r->secrets[i]) : 0);
	return n;
}

/* ---- the writer ------------------------------------------------------------ */

#define BACKOFF_MIN_MS 10
#define BACKOFF_MAX_MS 1000
#define POST_RETRY_MS 10

struct audit_waiter {
	struct audit_waiter *next;
	struct loop *l;
	void (*cb)(void *arg);
	void *arg;
};

typedef ssize_t (*audit_write_fn)(void *arg, int fd, const void *buf, size_t len);

struct audit {
	pthread_mutex_t lock;
	pthread_cond_t work;            /* writer: data, reopen, stop */
	pthread_cond_t drained;         /* audit_drain: queue became empty */
	pthread_t thread;
	char *path;
	char *ring;
	size_t cap;
	uint64_t head, tail;            /* queued up to head; written up to tail */
	int fd, next_fd;                /* next_fd: from audit_reopen, -1 when none */
	bool at_boundary;               /* the writer is between two records */
	bool idle;                      /* the writer sleeps until signalled */
	bool stop;
	struct audit_waiter *waiters, **waiters_tail;
	audit_write_fn write_fn;
	void *write_arg;
	struct audit_stats st;
};

static ssize_t sys_write(void *arg, int fd, const void *buf, size_t len)
{
	ssize_t n = write(fd, buf, len);

	(void)arg;
	return n < 0 ? -errno : n;
}

static void __attribute__((format(printf, 3, 4))) set_err(char *err, size_t errlen, const char *fmt,
								 ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* Open path for appending and check it is ours alone. 0 and *ret_fd, or -errno. */
static int open_log(const char *path, int *ret_fd, char *err, size_t errlen)
{
	struct stat st;
	int fd, r;

	/* O_NONBLOCK: a FIFO planted at path must not hang us in open(); it is refused below. */
	fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY |
			O_NONBLOCK, 0600);
	if (fd < 0) {
		r = -errno;
		if (r == -ELOOP)
			set_err(err, errlen, "audit log %s: is a symlink, refused", path);
		else
			set_err(err, errlen, "audit log %s: %s", path, strerror(-r));
		return r;
	}
	if (fstat(fd, &st) < 0) {
		r = -errno;
		set_err(err, errlen, "audit log %s: fstat: %s", path, strerror(-r));
		goto out_close;
	}
	r = -EPERM;
	if (!S_ISREG(st.st_mode)) {
		set_err(err, errlen, "audit log %s: not a regular file, refused", path);
		goto out_close;
	}
	if (st.st_uid != geteuid()) {
		set_err(err, errlen, "audit log %s: not owned by us, refused", path);
		goto out_close;
	}
	if (st.st_mode & 077) {
		set_err(err, errlen,
			"audit log %s: group/other may access it, refused (make it 0600)",
			path);
		goto out_close;
	}
	if (st.st_nlink != 1) {
		set_err(err, errlen, "audit log %s: has other hard links, refused", path);
		goto out_close;
	}
	if (fcntl(fd, F_SETFL, O_APPEND) < 0) {
		r = -errno;
		set_err(err, errlen, "audit log %s: fcntl: %s", path, strerror(-r));
		goto out_close;
	}
	*ret_fd = fd;
	return 0;

out_close:
	close(fd);
	return r;
}

static void deadline_in(struct timespec *ts, unsigned ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts->tv_nsec >= 1000000000) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000;
	}
}

static bool has_room(const struct audit *a)
{
	return a->cap - (a->head - a->tail) >= a->cap / 2;
}

/* Post every waiter while there is room. Called with the lock held, so a
 * successful audit_wait_cancel() really means "not posted". false when a post
 * failed (ENOMEM) and some waiters are left for later. */
static bool wake_waiters(struct audit *a)
{
	struct audit_waiter *w;

	if (!has_room(a))
		return true;
	while ((w = a->waiters)) {
		if (loop_post(w->l, w->cb, w->arg) < 0)
			return false;
		a->waiters = w->next;
		if (!a->waiters)
			a->waiters_tail = &a->waiters;
		free(w);
	}
	return true;
}

static uint64_t count_lines(const char *p, size_t n)
{
	const char *e = p + n;
	uint64_t c = 0;

	while (p < e && (p = memchr(p, '\n', (size_t)(e - p)))) {
		c++;
		p++;
	}
	return c;
}

static void *writer_main(void *arg)
{
	struct audit *a = arg;
	unsigned backoff_ms = 0;
	struct timespec ts;

	pthread_mutex_lock(&a->lock);
	for (;;) {
		audit_write_fn fn;
		size_t off, n;
		void *warg;
		ssize_t w;
		int fd;

		if (a->stop)
			break;
		if (a->next_fd >= 0 && a->at_boundary) {
			close(a->fd);
			a->fd = a->next_fd;
			a->next_fd = -1;
		}
		if (!wake_waiters(a)) {
			deadline_in(&ts, POST_RETRY_MS);
			pthread_cond_timedwait(&a->work, &a->lock, &ts);
			continue;
		}
		if (a->head == a->tail) {
			pthread_cond_broadcast(&a->drained);
			a->idle = true;
			pthread_cond_wait(&a->work, &a->lock);
			a->idle = false;
			continue;
		}
		off = (size_t)(a->tail % a->cap);
		n = (size_t)(a->head - a->tail);
		if (n > a->cap - off)
			n = a->cap - off;       /* up to the wrap; the rest next round */
		fd = a->fd;
		fn = a->write_fn;
		warg = a->write_arg;
		pthread_mutex_unlock(&a->lock);
		w = fn(warg, fd, a->ring + off, n);
		pthread_mutex_lock(&a->lock);
		if (w > 0) {
			if ((size_t)w > n)
				w = (ssize_t)n;
			a->st.records += count_lines(a->ring + off, (size_t)w);
			a->st.bytes += (uint64_t)w;
			a->at_boundary = a->ring[off + (size_t)w - 1] == '\n';
			a->tail += (uint64_t)w;
			backoff_ms = 0;
			continue;
		}
		if (w == -EINTR)
			continue;
		/* Keep the bytes, count, retry later; reopen/stop wake us early. */
		a->st.write_errors++;
		backoff_ms = backoff_ms ? backoff_ms * 2 : BACKOFF_MIN_MS;
		if (backoff_ms > BACKOFF_MAX_MS)
			backoff_ms = BACKOFF_MAX_MS;
		deadline_in(&ts, backoff_ms);
		pthread_cond_timedwait(&a->work, &a->lock, &ts);
	}
	pthread_mutex_unlock(&a->lock);
	return NULL;
}

static int cond_init_mono(pthread_cond_t *c)
{
	pthread_condattr_t ca;
	int r;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	r = -pthread_cond_init(c, &ca);
	pthread_condattr_destroy(&ca);
	return r;
}

int audit_open(const char *path, size_t queue_bytes, struct audit **ret, char *err,
	       size_t errlen)
{
	sigset_t all, old;
	struct audit *a;
	int r;

	if (!path || strcmp(path, "-") == 0) {
		set_err(err, errlen, "audit log: a file path is required (stdout/stderr are refused)");
		return -EINVAL;
	}
	if (path[0] != '/') {
		set_err(err, errlen, "audit log %s: path must be absolute", path);
		return -EINVAL;
	}
	if (queue_bytes == 0)
		queue_bytes = AUDIT_QUEUE_DEFAULT;
	if (queue_bytes < AUDIT_QUEUE_MIN || queue_bytes > AUDIT_QUEUE_MAX) {
		set_err(err, errlen, "audit queue size %zu: must be 1 KiB..1 GiB", queue_bytes);
		return -EINVAL;
	}
	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	r = -ENOMEM;
	a->path = strdup(path);
	a->ring = malloc(queue_bytes);
	if (!a->path || !a->ring)
		goto out_free;
	a->cap = queue_bytes;
	a->next_fd = -1;
	a->at_boundary = true;
	a->waiters_tail = &a->waiters;
	a->write_fn = sys_write;
	r = open_log(path, &a->fd, err, errlen);
	if (r < 0)
		goto out_free;
	pthread_mutex_init(&a->lock, NULL);
	r = cond_init_mono(&a->work);
	if (r < 0)
		goto out_close;
	r = cond_init_mono(&a->drained);
	if (r < 0)
		goto out_cond_work;
	/* The writer takes no signals: SIGHUP & co. belong to the daemon's handler thread. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = -pthread_create(&a->thread, NULL, writer_main, a);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r < 0) {
		set_err(err, errlen, "audit log %s: writer thread: %s", path, strerror(-r));
		goto out_cond_drained;
	}
	*ret = a;
	return 0;

out_cond_drained:
	pthread_cond_destroy(&a->drained);
out_cond_work:
	pthread_cond_destroy(&a->work);
out_close:
	pthread_mutex_destroy(&a->lock);
	close(a->fd);
out_free:
	free(a->ring);
	free(a->path);
	free(a);
	return r;
}

int audit_drain(struct audit *a, int timeout_ms)
{
	struct timespec ts;
	int r;

	deadline_in(&ts, timeout_ms > 0 ? (unsigned)timeout_ms : 0);
	pthread_mutex_lock(&a->lock);
	while (a->head != a->tail) {
		if (pthread_cond_timedwait(&a->drained, &a->lock, &ts) == ETIMEDOUT)
			break;
	}
	r = a->head == a->tail ? 0 : -ETIMEDOUT;
	pthread_mutex_unlock(&a->lock);
	return r;
}

void audit_close(struct audit *a)
{
	struct audit_waiter *w, *next;

	if (!a)
		return;
	audit_drain(a, AUDIT_CLOSE_WAIT_MS);
	pthread_mutex_lock(&a->lock);
	a->stop = true;
	pthread_cond_signal(&a->work);
	pthread_mutex_unlock(&a->lock);
	pthread_join(a->thread, NULL);
	for (w = a->waiters; w; w = next) {
		next = w->next;
		free(w);
	}
	if (a->next_fd >= 0)
		close(a->next_fd);
	close(a->fd);
	pthread_cond_destroy(&a->drained);
	pthread_cond_destroy(&a->work);
	pthread_mutex_destroy(&a->lock);
	free(a->ring);
	free(a->path);
	free(a);
}

int audit_submit(struct audit *a, const char *line, size_t len)
{
	size_t off, first;

	if (len == 0 || line[len - 1] != '\n' || memchr(line, '\n', len - 1))
		return -EINVAL;
	if (len > a->cap / 2)
		return -EMSGSIZE;
	pthread_mutex_lock(&a->lock);
	if (a->cap - (a->head - a->tail) < len) {
		a->st.full++;
		pthread_mutex_unlock(&a->lock);
		return -EAGAIN;
	}
	off = (size_t)(a->head % a->cap);
	first = a->cap - off < len ? a->cap - off : len;
	memcpy(a->ring + off, line, first);
	memcpy(a->ring, line + first, len - first);
	a->head += len;
	if (a->idle)
		pthread_cond_signal(&a->work);
	pthread_mutex_unlock(&a->lock);
	return 0;
}

int audit_wait(struct audit *a, struct loop *l, void (*cb)(void *arg), void *arg)
{
	struct audit_waiter *w;
	int r = 0;

	pthread_mutex_lock(&a->lock);
	if (has_room(a)) {
		r = loop_post(l, cb, arg);
		goto out_unlock;
	}
	w = malloc(sizeof(*w));
	if (!w) {
		r = -ENOMEM;
		goto out_unlock;
	}
	w->next = NULL;
	w->l = l;
	w->cb = cb;
	w->arg = arg;
	*a->waiters_tail = w;
	a->waiters_tail = &w->next;
	a->st.waits++;
out_unlock:
	pthread_mutex_unlock(&a->lock);
	return r;
}

int audit_wait_cancel(struct audit *a, struct loop *l, void (*cb)(void *arg), void *arg)
{
	struct audit_waiter **pp, *w;
	int r = 0;

	pthread_mutex_lock(&a->lock);
	for (pp = &a->waiters; (w = *pp); pp = &w->next) {
		if (w->l == l && w->cb == cb && w->arg == arg) {
			*pp = w->next;
			if (a->waiters_tail == &w->next)
				a->waiters_tail = pp;
			free(w);
			r = 1;
			break;
		}
	}
	pthread_mutex_unlock(&a->lock);
	return r;
}

int audit_reopen(struct audit *a)
{
	int fd, r;

	r = open_log(a->path, &fd, NULL, 0);
	pthread_mutex_lock(&a->lock);
	if (r < 0) {
		a->st.reopen_errors++;
	} else {
		if (a->next_fd >= 0)
			close(a->next_fd);
		a->next_fd = fd;
		pthread_cond_signal(&a->work);
	}
	pthread_mutex_unlock(&a->lock);
	return r;
}

void audit_stats(struct audit *a, struct audit_stats *ret)
{
	pthread_mutex_lock(&a->lock);
	*ret = a->st;
	ret->queued = a->head - a->tail;
	pthread_mutex_unlock(&a->lock);
}

void audit_set_write_fn(struct audit *a,
			ssize_t (*fn)(void *arg, int fd, const void *buf, size_t len), void *arg)
{
	pthread_mutex_lock(&a->lock);
	a->write_fn = fn ? fn : sys_write;
	a->write_arg = fn ? arg : NULL;
	pthread_cond_signal(&a->work);
	pthread_mutex_unlock(&a->lock);
}
