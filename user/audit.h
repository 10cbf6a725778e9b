/* SPDX-License-Identifier: MIT */
/*
 * audit: the audit log. One JSON line per request and per refused connection
 * (schema and OCSF mapping: docs/audit.md).
 *
 * audit_format() turns a record into a line. The writer (audit_open) owns the
 * file and a bounded in-memory queue; a thread of its own does the write()s,
 * so workers never block on the disk. Nothing is dropped: when the queue is
 * full, audit_submit() refuses (-EAGAIN) and the caller waits (audit_wait),
 * and a record whose write() fails stays queued and is retried. A full or
 * broken disk therefore stalls traffic, on purpose (fail closed).
 *
 * The module never logs; failures come back as -errno, a reason string, or in
 * audit_stats().
 */
#ifndef SLUICE_AUDIT_H
#define SLUICE_AUDIT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "loop.h"

#define AUDIT_QUEUE_DEFAULT (1024 * 1024)       /* bytes, when audit_open gets 0 */
#define AUDIT_QUEUE_MIN 1024
#define AUDIT_QUEUE_MAX (1024 * 1024 * 1024)
#define AUDIT_CLOSE_WAIT_MS 5000                /* audit_close drains this long at most */

/* One request or one refused connection. NULL strings are written as "". */
struct audit_rec {
	const char *kind;               /* "request" | "connection" | "dns" */
	struct timespec time;           /* CLOCK_REALTIME at request start */
	const char *sandbox, *cgroup, *principal;       /* principal "" until managed mode */
	const char *method, *scheme, *host;
	uint16_t port;
	const char *path;               /* WITHOUT the query: the writer cuts at '?' or '#' anyway */
	int status;                     /* 0 when no HTTP status (connection refused) */
	uint64_t bytes_in, bytes_out;   /* bytes from the sandbox / to the sandbox */
	uint64_t duration_us;
	const char *decision;           /* "allow" | "deny" | "passthrough" | "error" */
	const char *rule, *reason;
	const char *const *secrets;     /* names of secrets swapped (never values) */
	unsigned nsecrets;
	unsigned redactions;
	const char *tls_mode;           /* "mitm" | "passthrough" | "none" */
	const char *upstream_addr;      /* "198.18.0.2:443" or "" */
};

/*
 * Format r as one JSON line ending in '\n', NUL-terminated, into buf. Time is
 * RFC 3339 UTC with microseconds; every string is JSON-escaped (quotes,
 * backslash, control characters, DEL, U+2028/U+2029) and invalid UTF-8 becomes
 * U+FFFD, so the line is always valid JSON with no raw newline inside. Keys
 * come in the fixed order of docs/audit.md. Returns the line's length
 * (without the NUL), or -ENOBUFS when len is too small (buf content is then
 * unspecified). audit_line_bound(r) bytes are always enough.
 */
int audit_format(const struct audit_rec *r, char *buf, size_t len);

/* An upper bound of the buffer audit_format(r, ...) needs, NUL included. */
size_t audit_line_bound(const struct audit_rec *r);

struct audit;

/*
 * Open the log at path (absolute; NULL, "-" or a relative path is -EINVAL:
 * stdout/stderr may be the sandbox's) with O_WRONLY|O_CREAT|O_APPEND|
 * O_NOFOLLOW|O_CLOEXEC, mode 0600, and start the writer thread. An existing
 * file is refused (-EPERM) when it is not a regular file, not owned by our
 * euid, has any group/other permission bit, or has more than one link; a
 * symlink at path is refused (-ELOOP). queue_bytes bounds the queue (0:
 * AUDIT_QUEUE_DEFAULT; outside [AUDIT_QUEUE_MIN, AUDIT_QUEUE_MAX]: -EINVAL).
 * Returns 0 and *ret, or -errno with a one-line reason in err (if not NULL).
 */
int audit_open(const char *path, size_t queue_bytes, struct audit **ret, char *err,
	       size_t errlen);

/*
 * Wait up to timeout_ms for the queue to be written out. 0 when empty,
 * -ETIMEDOUT otherwise (the daemon logs that before audit_close).
 */
int audit_drain(struct audit *a, int timeout_ms);

/*
 * Drain (at most AUDIT_CLOSE_WAIT_MS), stop the writer, close the file, free.
 * Callers must have stopped submitting. Pending audit_wait callbacks are
 * dropped without being called. NULL is fine.
 */
void audit_close(struct audit *a);

/*
 * Queue one line (len bytes, ending in '\n' with no other '\n': what
 * audit_format makes) without blocking on I/O. Thread-safe. Returns
 *   0        queued; it will be written whole, in submit order
 *   -EAGAIN  the queue is full: nothing was queued; call audit_wait() and
 *            submit again when its callback runs
 *   -EINVAL  not exactly one line
 *   -EMSGSIZE longer than half the queue (could never be queued reliably)
 */
int audit_submit(struct audit *a, const char *line, size_t len);

/*
 * Have cb(arg) run once on loop l (via loop_post) when the queue has room
 * again: at least half of it free. If it has room now, cb is posted at once.
 * Any thread. 0, or -ENOMEM. A submit after cb may still see -EAGAIN when
 * other threads took the room first; then wait again.
 */
int audit_wait(struct audit *a, struct loop *l, void (*cb)(void *arg), void *arg);

/*
 * Withdraw a pending audit_wait(a, l, cb, arg). Returns 1 when it was removed
 * (cb will not run), 0 when cb was already posted to l (it will run; an owner
 * freeing arg should loop_post its free after this call: posts run in order).
 */
int audit_wait_cancel(struct audit *a, struct loop *l, void (*cb)(void *arg), void *arg);

/*
 * logrotate: reopen the path (same checks as audit_open). The new file is
 * opened here, in the caller's thread; the writer switches to it between two
 * records (never inside one) and closes the old one. On failure the old file
 * keeps serving, reopen_errors is counted and -errno returned.
 */
int audit_reopen(struct audit *a);

struct audit_stats {
	uint64_t records;               /* lines written whole */
	uint64_t bytes;                 /* bytes written */
	uint64_t write_errors;          /* failed write() calls (each retried) */
	uint64_t reopen_errors;
	uint64_t waits;                 /* audit_wait calls that had to wait */
	uint64_t full;                  /* audit_submit calls refused with -EAGAIN */
	uint64_t queued;                /* bytes in the queue now */
};

void audit_stats(struct audit *a, struct audit_stats *ret);

/*
 * Test hook: replace write(2). fn returns bytes written or -errno; NULL
 * restores write(2). Safe to call at any time.
 */
void audit_set_write_fn(struct audit *a,
			ssize_t (*fn)(void *arg, int fd, const void *buf, size_t len), void *arg);

#endif
