// SPDX-License-Identifier: MIT
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "http1.h"

/* Feed the whole input in pieces of `step` bytes; collect body bytes as the
 * proxy would (everything consumed between HEAD and DONE). */
struct run {
	int heads, dones;
	char body[4096];
	size_t body_len;
	size_t head_bytes;
};

static void feed_all(struct http1_parser *hp, const char *in, size_t len, size_t step,
		     struct run *r)
{
	size_t off = 0;
	int guard = 0;

	memset(r, 0, sizeof(*r));
	while (off < len && guard++ < 100000) {
		size_t n = len - off < step ? len - off : step;
		enum http1_event ev;
		bool body_phase = hp->in_body && hp->head_seen;
		ssize_t used = http1_feed(hp, in + off, n, &ev);

		cr_assert(used >= 0);
		cr_assert_neq(ev, HTTP1_EV_ERROR, "error %s", hp->err_reason);
		if (body_phase) {
			memcpy(r->body + r->body_len, in + off, (size_t)used);
			r->body_len += (size_t)used;
		} else {
			r->head_bytes += (size_t)used;
		}
		off += (size_t)used;
		if (ev == HTTP1_EV_HEAD)
			r->heads++;
		if (hp->done) {
			r->dones++;
			http1_next(hp);
		}
	}
}

Test(http1, pipelined_requests_with_bodies_every_split)
{
	const char *in = "POST /a HTTP/1.1\r\nHost: x.test\r\nContent-Length: 5\r\n\r\nhello"
			 "GET /b HTTP/1.1\r\nHost: x.test\r\n\r\n"
			 "POST /c HTTP/1.1\r\nHost: x.test\r\nTransfer-Encoding: chunked\r\n\r\n"
			 "3\r\nabc\r\n0\r\n\r\n";
	struct http1_parser hp;
	struct run r;

	for (size_t step = 1; step <= strlen(in); step++) {
		cr_assert_eq(http1_init(&hp, false, 8192), 0);
		feed_all(&hp, in, strlen(in), step, &r);
		cr_assert_eq(r.heads, 3, "step %zu heads %d", step, r.heads);
		cr_assert_eq(r.dones, 3, "step %zu", step);
		cr_assert_eq(r.body_len, 5 + strlen("3\r\nabc\r\n0\r\n\r\n"), "step %zu len %zu", step,
			     r.body_len);
		cr_assert(memcmp(r.body, "hello3\r\nabc\r\n0\r\n\r\n", r.body_len) == 0);
		http1_free(&hp);
	}
}

Test(http1, head_fields_and_lookup)
{
	const char *in = "GET http://a.test:8080/p?q HTTP/1.1\r\nHost: A.Test:8080\r\n"
			 "X-Empty:\r\nX-Pad: v  \r\nConnection: keep-alive, X-Pad\r\n\r\n";
	struct http1_parser hp;
	enum http1_event ev;
	size_t vl;

	cr_assert_eq(http1_init(&hp, false, 8192), 0);
	cr_assert_eq(http1_feed(&hp, in, strlen(in), &ev), (ssize_t)strlen(in));
	cr_assert_eq(ev, HTTP1_EV_HEAD);
	cr_assert(hp.done);
	cr_assert_str_eq(http1_url(&hp.head), "http://a.test:8080/p?q");
	cr_assert_str_eq(http1_get(&hp.head, "host", &vl), "A.Test:8080");
	cr_assert_str_eq(http1_get(&hp.head, "x-empty", &vl), "");
	cr_assert_eq(vl, 0);
	cr_assert_str_eq(http1_get(&hp.head, "x-pad", &vl), "v");
	cr_assert(http1_is_hop_by_hop(&hp.head, 2)); /* X-Pad named by Connection */
	cr_assert(http1_is_hop_by_hop(&hp.head, 3));
	cr_assert_not(http1_is_hop_by_hop(&hp.head, 0));
	http1_free(&hp);
}

Test(http1, head_too_large_is_431)
{
	char in[4096];
	struct http1_parser hp;
	enum http1_event ev;

	snprintf(in, sizeof(in), "GET / HTTP/1.1\r\nX-Big: %0*d\r\n\r\n", 2000, 0);
	cr_assert_eq(http1_init(&hp, false, 1024), 0);
	http1_feed(&hp, in, strlen(in), &ev);
	cr_assert_eq(ev, HTTP1_EV_ERROR);
	cr_assert_eq(hp.err_status, 431);
	http1_free(&hp);
}

Test(http1, malformed_is_400)
{
	struct http1_parser hp;
	enum http1_event ev;
	const char *in = "GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";

	cr_assert_eq(http1_init(&hp, false, 1024), 0);
	http1_feed(&hp, in, strlen(in), &ev);
	cr_assert_eq(ev, HTTP1_EV_ERROR);
	cr_assert_eq(hp.err_status, 400);
	http1_free(&hp);
}

Test(http1, responses_head_1xx_eof)
{
	struct http1_parser hp;
	struct run r;
	const char *a = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
	const char *b = "HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n";
	const char *c = "HTTP/1.1 200 OK\r\n\r\nuntil-eof";
	enum http1_event ev;

	cr_assert_eq(http1_init(&hp, true, 4096), 0);
	feed_all(&hp, a, strlen(a), 7, &r);
	cr_assert_eq(r.heads, 2);
	cr_assert_eq(r.dones, 2);
	cr_assert_eq(r.body_len, 3);
	http1_free(&hp);

	cr_assert_eq(http1_init(&hp, true, 4096), 0);
	hp.no_body = true; /* response to HEAD */
	cr_assert_eq(http1_feed(&hp, b, strlen(b), &ev), (ssize_t)strlen(b));
	cr_assert_eq(ev, HTTP1_EV_HEAD);
	cr_assert(hp.done);
	http1_free(&hp);

	cr_assert_eq(http1_init(&hp, true, 4096), 0);
	ssize_t used = http1_feed(&hp, c, strlen(c), &ev);
	cr_assert_eq(used, (ssize_t)(strlen(c) - strlen("until-eof")));
	cr_assert_eq(ev, HTTP1_EV_HEAD);
	cr_assert(hp.head.needs_eof);
	cr_assert_eq(http1_feed(&hp, c + used, strlen(c) - (size_t)used, &ev), 9);
	cr_assert_eq(ev, HTTP1_EV_NONE);
	cr_assert_eq(http1_eof(&hp), 1);
	http1_free(&hp);
}

Test(http1, authority)
{
	char h[256];
	uint16_t p;
	bool tls;
	size_t off;

	cr_assert_eq(http1_split_authority("Example.COM.", 12, 443, h, sizeof(h), &p), 0);
	cr_assert_str_eq(h, "example.com");
	cr_assert_eq(p, 443);
	cr_assert_eq(http1_split_authority("[2001:db8::1]:8443", 18, 443, h, sizeof(h), &p), 0);
	cr_assert_str_eq(h, "2001:db8::1");
	cr_assert_eq(p, 8443);
	cr_assert_lt(http1_split_authority("a.test:99999", 12, 80, h, sizeof(h), &p), 0);
	cr_assert_lt(http1_split_authority("a b", 3, 80, h, sizeof(h), &p), 0);
	cr_assert_lt(http1_split_authority("[::1", 4, 80, h, sizeof(h), &p), 0);
	cr_assert_lt(http1_split_authority("..:1", 4, 80, h, sizeof(h), &p), 0);
	cr_assert_lt(http1_split_authority("a..:1", 5, 80, h, sizeof(h), &p), 0);
	cr_assert_lt(http1_split_authority(".a", 2, 80, h, sizeof(h), &p), 0);
	cr_assert_lt(http1_split_authority("a..b", 4, 80, h, sizeof(h), &p), 0);
	cr_assert_eq(http1_parse_absolute("http://u.test:81/x?y", 20, &tls, h, sizeof(h), &p, &off), 0);
	cr_assert_str_eq(h, "u.test");
	cr_assert_eq(p, 81);
	cr_assert_eq(off, 16);
	cr_assert_eq(http1_parse_absolute("/x", 2, &tls, h, sizeof(h), &p, &off), -ENOENT);
	cr_assert_lt(http1_parse_absolute("http://user@evil/", 17, &tls, h, sizeof(h), &p, &off), 0);
}
