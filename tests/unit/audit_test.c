// SPDX-License-Identifier: MIT
/* audit: line format (every field, escaping, invalid UTF-8, long paths, query
 * cut, secrets, buffer bounds; every line checked by python3's json module),
 * and the writer: file checks (0600, O_NOFOLLOW, refusals), 8 threads x 5000
 * whole lines, backpressure through audit_wait on a running loop, write errors
 * and partial writes retried, reopen between records, bounded close. Every
 * wait is bounded; files live in a fresh temp dir per test. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "loop.h"

TestSuite(audit, .timeout = 60);

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

/* Hot-loop assertion: Criterion reports every cr_assert to its runner, which
 * is slow at 10^5 calls; this only calls into Criterion on failure. */
#define CHECK(cond, ...) do { if (!(cond)) cr_assert_fail(__VA_ARGS__); } while (0)

/* ---- helpers: temp dir, files, python ---------------------------------- */

static char dir[64];

static void mkdir_tmp(void)
{
	strcpy(dir, "/tmp/sluice-audit-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void rm_tmp(void)
{
	char cmd[128];

	if (!dir[0])
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
	dir[0] = 0;
}

static char *pathf(const char *name)
{
	static char p[4][128];
	static int i;

	i = (i + 1) % 4;
	snprintf(p[i], sizeof(p[i]), "%s/%s", dir, name);
	return p[i];
}

/* Whole file, NUL-terminated; *ret_len its length. */
static char *slurp(const char *path, size_t *ret_len)
{
	FILE *f = fopen(path, "rb");
	size_t cap = 1 << 16, len = 0, n;
	char *buf = malloc(cap + 1);

	cr_assert_not_null(f, "open %s: %s", path, strerror(errno));
	cr_assert_not_null(buf);
	while ((n = fread(buf + len, 1, cap - len, f)) > 0) {
		len += n;
		if (len == cap) {
			cap *= 2;
			buf = realloc(buf, cap + 1);
			cr_assert_not_null(buf);
		}
	}
	fclose(f);
	buf[len] = 0;
	if (ret_len)
		*ret_len = len;
	return buf;
}

static void spit(const char *path, const char *s, size_t n)
{
	FILE *f = fopen(path, "wb");

	cr_assert_not_null(f);
	cr_assert_eq(fwrite(s, 1, n, f), n);
	fclose(f);
}

/* The order of keys docs/audit.md promises. */
#define KEYS "['time','kind','sandbox','cgroup','principal','method','scheme','host','port'," \
	     "'path','status','bytes_in','bytes_out','duration_us','decision','rule','reason'," \
	     "'secrets','redactions','tls_mode','upstream_addr']"

/*
 * Run python3 over file: every line must be strict UTF-8 and one JSON object
 * with exactly KEYS in order; then `extra` (python, may use `objs`) runs.
 * Returns python's exit status.
 */
static int py_check(const char *file, const char *extra)
{
	char script[8192], cmd[256];
	char *sp = pathf("check.py");
	int st;

	snprintf(script, sizeof(script),
		 "import json, sys\n"
		 "data = open(sys.argv[1], 'rb').read()\n"
		 "text = data.decode('utf-8', errors='strict')\n"
		 "assert text.endswith('\\n') or text == '', 'no final newline'\n"
		 "objs = []\n"
		 "for line in text.split('\\n')[:-1]:\n"
		 "    o = json.loads(line)\n"
		 "    assert list(o.keys()) == %s, list(o.keys())\n"
		 "    objs.append(o)\n"
		 "%s\n",
		 KEYS, extra ? extra : "");
	spit(sp, script, strlen(script));
	snprintf(cmd, sizeof(cmd), "python3 '%s' '%s' >&2", sp, file);
	st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static int py_check_line(const char *line, const char *extra)
{
	char *f = pathf("line.json");

	spit(f, line, strlen(line));
	return py_check(f, extra);
}

/* ---- format ------------------------------------------------------------ */

static const struct audit_rec base = {
	.kind = "request",
	.time = { 1795425154, 123456789 },
	.sandbox = "sb-1",
	.cgroup = "/sys/fs/cgroup/unified/sluice/sb-1",
	.principal = "",
	.method = "GET",
	.scheme = "https",
	.host = "api.example.com",
	.port = 443,
	.path = "/v1/models?key=PLACEHOLDER",
	.status = 200,
	.bytes_in = 512,
	.bytes_out = 18446744073709551615ull,
	.duration_us = 12345,
	.decision = "allow",
	.rule = "allow[0]",
	.reason = "",
	.secrets = (const char *const[]){ "openai", "github" },
	.nsecrets = 2,
	.redactions = 3,
	.tls_mode = "mitm",
	.upstream_addr = "198.18.0.2:443",
};

Test(audit, format_all_fields_exact)
{
	static const char want[] =
		"{\"time\":\"2026-11-23T09:12:34.123456Z\",\"kind\":\"request\",\"sandbox\":\"sb-1\","
		"\"cgroup\":\"/sys/fs/cgroup/unified/sluice/sb-1\",\"principal\":\"\","
		"\"method\":\"GET\",\"scheme\":\"https\",\"host\":\"api.example.com\",\"port\":443,"
		"\"path\":\"/v1/models\",\"status\":200,\"bytes_in\":512,"
		"\"bytes_out\":18446744073709551615,\"duration_us\":12345,\"decision\":\"allow\","
		"\"rule\":\"allow[0]\",\"reason\":\"\",\"secrets\":[\"openai\",\"github\"],"
		"\"redactions\":3,\"tls_mode\":\"mitm\",\"upstream_addr\":\"198.18.0.2:443\"}\n";
	char buf[2048];
	int n;

	mkdir_tmp();
	n = audit_format(&base, buf, sizeof(buf));
	cr_assert_eq(n, (int)strlen(want), "%d: %s", n, buf);
	cr_assert_str_eq(buf, want);
	cr_assert_eq(py_check_line(buf, "assert objs[0]['bytes_out'] == 2**64 - 1\n"
					"assert objs[0]['secrets'] == ['openai', 'github']\n"), 0);
	rm_tmp();
}

Test(audit, format_refused_connection_nulls_and_status_0)
{
	struct audit_rec r = {
		.kind = "connection",
		.time = { 0, 999999999 },
		.sandbox = "sb-2",
		.host = "169.254.169.254",
		.port = 80,
		.decision = "deny",
		.reason = "address_denied",
		.tls_mode = "none",
	};
	char buf[2048];
	int n;

	mkdir_tmp();
	n = audit_format(&r, buf, sizeof(buf));
	cr_assert_gt(n, 0);
	cr_assert_str_eq(buf,
		"{\"time\":\"1970-01-01T00:00:00.999999Z\",\"kind\":\"connection\","
		"\"sandbox\":\"sb-2\",\"cgroup\":\"\",\"principal\":\"\",\"method\":\"\","
		"\"scheme\":\"\",\"host\":\"169.254.169.254\",\"port\":80,\"path\":\"\","
		"\"status\":0,\"bytes_in\":0,\"bytes_out\":0,\"duration_us\":0,"
		"\"decision\":\"deny\",\"rule\":\"\",\"reason\":\"address_denied\","
		"\"secrets\":[],\"redactions\":0,\"tls_mode\":\"none\",\"upstream_addr\":\"\"}\n");
	cr_assert_eq(py_check_line(buf, "assert objs[0]['status'] == 0\n"), 0);
	rm_tmp();
}

Test(audit, format_query_and_fragment_cut)
{
	static const struct {
		const char *path, *want;
	} t[] = {
		{ "/a/b?token=SECRET", "\"path\":\"/a/b\"" },
		{ "/a/b#frag", "\"path\":\"/a/b\"" },
		{ "/a?b#c", "\"path\":\"/a\"" },
		{ "?only=query", "\"path\":\"\"" },
		{ "/no/query", "\"path\":\"/no/query\"" },
		{ "/trailing?", "\"path\":\"/trailing\"" },
	};
	char buf[2048];

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct audit_rec r = base;

		r.path = t[i].path;
		cr_assert_gt(audit_format(&r, buf, sizeof(buf)), 0);
		cr_assert_not_null(strstr(buf, t[i].want), "%s -> %s", t[i].path, buf);
		cr_assert_null(strstr(buf, "SECRET"));
		cr_assert_null(strstr(buf, "frag"));
	}
}

Test(audit, format_secrets_list)
{
	const char *three[] = { "a", "quote\"d", NULL };
	struct audit_rec r = base;
	char buf[2048];

	r.secrets = three;
	r.nsecrets = 3;
	cr_assert_gt(audit_format(&r, buf, sizeof(buf)), 0);
	cr_assert_not_null(strstr(buf, "\"secrets\":[\"a\",\"quote\\\"d\",\"\"],"), "%s", buf);
	r.nsecrets = 0;
	cr_assert_gt(audit_format(&r, buf, sizeof(buf)), 0);
	cr_assert_not_null(strstr(buf, "\"secrets\":[],"), "%s", buf);
	r.secrets = NULL;
	r.nsecrets = 5;
	cr_assert_gt(audit_format(&r, buf, sizeof(buf)), 0);
	cr_assert_not_null(strstr(buf, "\"secrets\":[],"), "%s", buf);
}

Test(audit, format_escaping_exact)
{
	static const struct {
		const char *in, *want;  /* want: the JSON string body */
	} t[] = {
		{ "q\"b\\s/", "q\\\"b\\\\s/" },
		{ "\b\f\n\r\t", "\\b\\f\\n\\r\\t" },
		{ "\x01\x1f\x7f", "\\u0001\\u001f\\u007f" },
		{ "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80" },
		{ "\xe2\x80\xa8|\xe2\x80\xa9", "\\u2028|\\u2029" },
		{ "\xff", "\xef\xbf\xbd" },                               /* never valid */
		{ "\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd" },               /* overlong */
		{ "\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" }, /* surrogate */
		{ "\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },
		{ "a\xe2\x82", "a\xef\xbf\xbd" },                         /* cut at the end: one */
		{ "\xe2\x82z", "\xef\xbf\xbdz" },                         /* cut mid-string: one */
		{ "\xf0\x9f\x98", "\xef\xbf\xbd" },
		{ "\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd" },               /* lone continuations */
		{ "\xf8\x88\x80\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },
	};
	size_t nt = sizeof(t) / sizeof(t[0]), used = 0;
	char buf[2048], want[256], all[32768];
	char extra[128];

	mkdir_tmp();
	for (size_t i = 0; i < nt; i++) {
		struct audit_rec r = base;
		int n;

		r.host = t[i].in;
		n = audit_format(&r, buf, sizeof(buf));
		cr_assert_gt(n, 0);
		snprintf(want, sizeof(want), "\"host\":\"%s\",", t[i].want);
		cr_assert_not_null(strstr(buf, want), "case %zu: %s", i, buf);
		cr_assert_lt(used + (size_t)n, sizeof(all));
		memcpy(all + used, buf, (size_t)n + 1);
		used += (size_t)n;
	}
	/* One python run for all cases (startup is slow); it names the bad line. */
	snprintf(extra, sizeof(extra), "assert len(objs) == %zu\n", nt);
	cr_assert_eq(py_check_line(all, extra), 0, "not valid JSON:\n%s", all);
	rm_tmp();
}

/* Every byte value in every string field; python must read it back as the
 * same text wherever the input was valid UTF-8. */
Test(audit, format_every_byte_everywhere_is_valid_json)
{
	char all[256], buf[16384];
	struct audit_rec r = base;
	int n;

	mkdir_tmp();
	for (int i = 1; i < 256; i++)
		all[i - 1] = (char)i;
	all[255] = 0;
	r.kind = r.sandbox = r.cgroup = r.principal = r.method = r.scheme = r.host = all;
	r.decision = r.rule = r.reason = r.tls_mode = r.upstream_addr = all;
	r.path = all + 64;      /* after '?' (0x3f) and '#' (0x23): the whole tail */
	r.secrets = (const char *const[]){ all, all };
	n = audit_format(&r, buf, sizeof(buf));
	cr_assert_gt(n, 0);
	cr_assert_lt((size_t)n, audit_line_bound(&r));
	cr_assert_null(memchr(buf, '\n', (size_t)n - 1), "raw newline inside the line");
	cr_assert_eq(py_check_line(buf,
		"o = objs[0]\n"
		"ascii = ''.join(chr(i) for i in range(1, 128))\n"
		"assert o['host'].startswith(ascii), repr(o['host'][:130])\n"
		"assert o['host'][127:] == '\\ufffd' * 128, repr(o['host'][127:])\n"
		"assert o['path'] == ascii[64:] + '\\ufffd' * 128, repr(o['path'])\n"
		"assert o['secrets'] == [o['host'], o['host']]\n"), 0);
	rm_tmp();
}

Test(audit, format_10k_path)
{
	size_t plen = 10 * 1024;
	char *path = malloc(plen + 32), *buf;
	struct audit_rec r = base;
	int n;

	mkdir_tmp();
	cr_assert_not_null(path);
	for (size_t i = 0; i < plen; i++)
		path[i] = "/a\"\\\x01\xc3\xa9z"[i % 8];
	/* keep the é pairs whole: positions 5,6 of each 8 */
	strcpy(path + plen, "?q=1");
	r.path = path;
	buf = malloc(audit_line_bound(&r));
	cr_assert_not_null(buf);
	n = audit_format(&r, buf, audit_line_bound(&r));
	cr_assert_gt(n, (int)plen);
	cr_assert_eq(py_check_line(buf,
		"exp = ('/a\"\\\\\\x01\\u00e9z' * 1280)\n"
		"assert objs[0]['path'] == exp, (len(objs[0]['path']), len(exp))\n"), 0);
	free(buf);
	free(path);
	rm_tmp();
}

Test(audit, format_enobufs_at_every_short_length)
{
	char buf[2048], small[2048];
	int n = audit_format(&base, buf, sizeof(buf));

	cr_assert_gt(n, 0);
	cr_assert_geq(audit_line_bound(&base), (size_t)n + 1);
	for (int len = 0; len <= n; len++)
		cr_assert_eq(audit_format(&base, small, (size_t)len), -ENOBUFS, "len %d", len);
	cr_assert_eq(audit_format(&base, small, (size_t)n + 1), n);
	cr_assert_str_eq(small, buf);
}

Test(audit, format_bound_holds_for_worst_case)
{
	char ctl[200];
	struct audit_rec r = base;
	char *buf;
	size_t bound;

	memset(ctl, 0x01, sizeof(ctl) - 1);
	ctl[sizeof(ctl) - 1] = 0;
	r.kind = r.sandbox = r.cgroup = r.principal = r.method = r.scheme = r.host = ctl;
	r.decision = r.rule = r.reason = r.tls_mode = r.upstream_addr = r.path = ctl;
	r.secrets = (const char *const[]){ ctl, ctl, ctl };
	r.nsecrets = 3;
	r.time.tv_sec = 253402300799;   /* 9999-12-31T23:59:59 */
	r.status = -2147483647 - 1;
	r.bytes_in = r.bytes_out = r.duration_us = UINT64_MAX;
	r.port = 65535;
	r.redactions = 4294967295u;
	bound = audit_line_bound(&r);
	buf = malloc(bound);
	cr_assert_not_null(buf);
	cr_assert_gt(audit_format(&r, buf, bound), 0);
	free(buf);
}

/* ---- writer: opening --------------------------------------------------- */

Test(audit, open_creates_0600_and_appends)
{
	struct audit *a = NULL;
	char err[256], line[2048];
	struct stat st;
	char *got;
	int n;

	mkdir_tmp();
	umask(0);
	cr_assert_eq(audit_open(pathf("new.log"), 0, &a, err, sizeof(err)), 0, "%s", err);
	umask(022);
	cr_assert_eq(stat(pathf("new.log"), &st), 0);
	cr_assert_eq(st.st_mode & 07777, 0600, "mode %o", st.st_mode & 07777);
	cr_assert(S_ISREG(st.st_mode));
	audit_close(a);

	/* An existing 0600 file is appended to, not truncated. */
	spit(pathf("old.log"), "earlier\n", 8);
	cr_assert_eq(chmod(pathf("old.log"), 0600), 0);
	cr_assert_eq(audit_open(pathf("old.log"), 4096, &a, err, sizeof(err)), 0, "%s", err);
	n = audit_format(&base, line, sizeof(line));
	cr_assert_eq(audit_submit(a, line, (size_t)n), 0);
	audit_close(a);
	got = slurp(pathf("old.log"), NULL);
	cr_assert_eq(strncmp(got, "earlier\n", 8), 0);
	cr_assert_str_eq(got + 8, line);
	free(got);
	rm_tmp();
}

Test(audit, open_refusals)
{
	struct audit *a = (struct audit *)0x1;
	char err[256];

	mkdir_tmp();
	/* symlink to a fine file, and a dangling one: both ELOOP, target untouched */
	spit(pathf("target"), "t\n", 2);
	cr_assert_eq(chmod(pathf("target"), 0600), 0);
	cr_assert_eq(symlink(pathf("target"), pathf("link.log")), 0);
	cr_assert_eq(audit_open(pathf("link.log"), 0, &a, err, sizeof(err)), -ELOOP);
	cr_assert_not_null(strstr(err, "symlink"), "%s", err);
	cr_assert_eq(symlink(pathf("nowhere"), pathf("dangling.log")), 0);
	cr_assert_eq(audit_open(pathf("dangling.log"), 0, &a, err, sizeof(err)), -ELOOP);
	cr_assert_eq(access(pathf("nowhere"), F_OK), -1, "dangling symlink target was created");

	/* group/other permissions */
	spit(pathf("wide.log"), "", 0);
	cr_assert_eq(chmod(pathf("wide.log"), 0644), 0);
	err[0] = 0;
	cr_assert_eq(audit_open(pathf("wide.log"), 0, &a, err, sizeof(err)), -EPERM);
	cr_assert_not_null(strstr(err, "group/other"), "%s", err);
	cr_assert_eq(chmod(pathf("wide.log"), 0640), 0);
	cr_assert_eq(audit_open(pathf("wide.log"), 0, &a, err, sizeof(err)), -EPERM);
	cr_assert_eq(chmod(pathf("wide.log"), 0602), 0);
	cr_assert_eq(audit_open(pathf("wide.log"), 0, &a, err, sizeof(err)), -EPERM);

	/* not ours */
	spit(pathf("theirs.log"), "", 0);
	cr_assert_eq(chmod(pathf("theirs.log"), 0600), 0);
	cr_assert_eq(chown(pathf("theirs.log"), 65534, 65534), 0);
	cr_assert_eq(audit_open(pathf("theirs.log"), 0, &a, err, sizeof(err)), -EPERM);
	cr_assert_not_null(strstr(err, "owned"), "%s", err);

	/* a FIFO (no reader) must not hang open(), and is refused */
	cr_assert_eq(mkfifo(pathf("fifo.log"), 0600), 0);
	cr_assert_lt(audit_open(pathf("fifo.log"), 0, &a, err, sizeof(err)), 0);

	/* a directory, a hard link */
	cr_assert_eq(mkdir(pathf("dir.log"), 0700), 0);
	cr_assert_lt(audit_open(pathf("dir.log"), 0, &a, err, sizeof(err)), 0);
	cr_assert_eq(link(pathf("target"), pathf("hard.log")), 0);
	cr_assert_eq(audit_open(pathf("hard.log"), 0, &a, err, sizeof(err)), -EPERM);
	cr_assert_not_null(strstr(err, "link"), "%s", err);

	/* stdout/stderr, relative, queue size */
	cr_assert_eq(audit_open(NULL, 0, &a, err, sizeof(err)), -EINVAL);
	cr_assert_eq(audit_open("-", 0, &a, err, sizeof(err)), -EINVAL);
	cr_assert_not_null(strstr(err, "stderr"), "%s", err);
	cr_assert_eq(audit_open("audit.log", 0, &a, err, sizeof(err)), -EINVAL);
	cr_assert_eq(audit_open(pathf("q.log"), 100, &a, err, sizeof(err)), -EINVAL);
	cr_assert_eq(audit_open(pathf("q.log"), 0, &a, NULL, 0) == 0 ? 0 : 1, 0);
	audit_close(a);
	a = (struct audit *)0x1;
	/* no directory */
	cr_assert_eq(audit_open(pathf("missing/x.log"), 0, &a, err, sizeof(err)), -ENOENT);
	cr_assert_eq(a, (struct audit *)0x1, "ret written on failure");
	rm_tmp();
}

Test(audit, submit_validation)
{
	struct audit *a;
	char big[3000];

	mkdir_tmp();
	cr_assert_eq(audit_open(pathf("v.log"), 4096, &a, NULL, 0), 0);
	cr_assert_eq(audit_submit(a, "", 0), -EINVAL);
	cr_assert_eq(audit_submit(a, "no newline", 10), -EINVAL);
	cr_assert_eq(audit_submit(a, "two\nlines\n", 10), -EINVAL);
	memset(big, 'x', sizeof(big));
	big[sizeof(big) - 1] = '\n';
	cr_assert_eq(audit_submit(a, big, sizeof(big)), -EMSGSIZE);
	cr_assert_eq(audit_submit(a, big + sizeof(big) - 2048, 2048), 0);   /* exactly half */
	audit_close(a);
	rm_tmp();
}

/* ---- writer: lines in, lines out ---------------------------------------- */

/* Record j of producer t: sandbox "t<t>", rule "<j>", a path whose length varies. */
static int make_line(char *buf, size_t len, int t, int j)
{
	char sb[16], rule[16], path[80];
	struct audit_rec r = base;

	snprintf(sb, sizeof(sb), "t%d", t);
	snprintf(rule, sizeof(rule), "%d", j);
	snprintf(path, sizeof(path), "/%.*s", j % 61,
		 "pppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppp");
	r.sandbox = sb;
	r.rule = rule;
	r.path = path;
	return audit_format(&r, buf, len);
}

/*
 * Check file(s) hold exactly nthreads x per records, each line whole and
 * parseable by us, each producer's records in order. Files are read in the
 * given order (rotations): the sequence continues across them.
 */
static void check_lines(const char *const *files, int nfiles, int nthreads, int per)
{
	int *next = calloc((size_t)nthreads, sizeof(int));
	size_t total = 0;

	cr_assert_not_null(next);
	for (int f = 0; f < nfiles; f++) {
		size_t len;
		char *data = slurp(files[f], &len), *p = data, *nl;

		cr_assert(len == 0 || data[len - 1] == '\n', "%s: torn last line", files[f]);
		for (; (nl = strchr(p, '\n')); p = nl + 1) {
			char *s, *ru;
			int t, j;

			*nl = 0;        /* before strstr: keeps the scan to this line */
			s = strstr(p, "\"sandbox\":\"t");
			ru = strstr(p, "\"rule\":\"");
			CHECK(strncmp(p, "{\"time\":", 8) == 0 && nl[-1] == '}', "torn: %s", p);
			CHECK(s && ru, "line without fields: %s", p);
			CHECK(sscanf(s, "\"sandbox\":\"t%d\"", &t) == 1, "%s", p);
			CHECK(sscanf(ru, "\"rule\":\"%d\"", &j) == 1, "%s", p);
			CHECK(t >= 0 && t < nthreads, "%s", p);
			CHECK(j == next[t], "thread %d: got %d want %d", t, j, next[t]);
			next[t]++;
			total++;
		}
		cr_assert_eq(*p, 0, "%s: trailing bytes", files[f]);
		free(data);
	}
	for (int t = 0; t < nthreads; t++)
		cr_assert_eq(next[t], per, "thread %d: %d records", t, next[t]);
	cr_assert_eq(total, (size_t)nthreads * (size_t)per);
	free(next);
}

struct producer {
	struct audit *a;
	struct loop *l;         /* NULL: spin on -EAGAIN; else audit_wait on it */
	int t, per;
	sem_t room;
	int waited;
};

static void room_cb(void *arg)
{
	struct producer *p = arg;

	sem_post(&p->room);
}

static void *produce(void *arg)
{
	struct producer *p = arg;
	char line[1024];

	for (int j = 0; j < p->per; j++) {
		int n = make_line(line, sizeof(line), p->t, j), r;
		uint64_t deadline = now_ms() + 20000;

		CHECK(n > 0, "format %d", n);
		while ((r = audit_submit(p->a, line, (size_t)n)) == -EAGAIN) {
			CHECK(now_ms() < deadline, "producer %d stuck at %d", p->t, j);
			if (!p->l) {
				/* no loop: poll (a short sleep, so spinners cannot starve the writer) */
				sleep_ms(1);
				continue;
			}
			struct timespec ts;

			CHECK(audit_wait(p->a, p->l, room_cb, p) == 0, "audit_wait");
			p->waited++;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += 20;
			CHECK(sem_timedwait(&p->room, &ts) == 0, "room callback never came");
		}
		CHECK(r == 0, "submit %d", r);
	}
	return NULL;
}

static void run_producers(struct audit *a, struct loop *l, int nthreads, int per,
			  struct producer *ps)
{
	pthread_t th[16];

	cr_assert_leq(nthreads, 16);
	for (int t = 0; t < nthreads; t++) {
		ps[t] = (struct producer){ .a = a, .l = l, .t = t, .per = per };
		sem_init(&ps[t].room, 0, 0);
		cr_assert_eq(pthread_create(&th[t], NULL, produce, &ps[t]), 0);
	}
	for (int t = 0; t < nthreads; t++)
		pthread_join(th[t], NULL);
}

Test(audit, eight_threads_40000_whole_lines)
{
	struct producer ps[8];
	struct audit_stats st;
	struct audit *a;
	char err[256];

	mkdir_tmp();
	/* 64 KiB: the ring wraps many times and fills now and then. */
	cr_assert_eq(audit_open(pathf("mt.log"), 64 * 1024, &a, err, sizeof(err)), 0, "%s", err);
	run_producers(a, NULL, 8, 5000, ps);
	cr_assert_eq(audit_drain(a, 10000), 0);
	audit_stats(a, &st);
	cr_assert_eq(st.records, 40000);
	cr_assert_eq(st.queued, 0);
	cr_assert_eq(st.write_errors, 0);
	audit_close(a);
	check_lines((const char *const[]){ pathf("mt.log") }, 1, 8, 5000);
	cr_assert_eq(py_check(pathf("mt.log"), "assert len(objs) == 40000\n"), 0);
	rm_tmp();
}

/* ---- writer: a controllable write(2) ------------------------------------ */

struct hook {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool blocked;           /* writes wait while set */
	int fail;               /* > 0: fail this many more calls with err */
	int err;
	int fail_every;         /* > 0: every n-th call fails with err */
	size_t max_chunk;       /* > 0: partial writes of at most this */
	unsigned calls, failures, in_block;
};

static struct hook H;

static void hook_reset(void)
{
	pthread_mutex_init(&H.lock, NULL);
	pthread_cond_init(&H.cond, NULL);
	H.blocked = false;
	H.fail = H.fail_every = 0;
	H.err = 0;
	H.max_chunk = 0;
	H.calls = H.failures = H.in_block = 0;
}

static void hook_set_blocked(bool b)
{
	pthread_mutex_lock(&H.lock);
	H.blocked = b;
	pthread_cond_broadcast(&H.cond);
	pthread_mutex_unlock(&H.lock);
}

static ssize_t hook_write(void *arg, int fd, const void *buf, size_t len)
{
	uint64_t deadline = now_ms() + 30000;
	int fail = 0;
	ssize_t n;

	(void)arg;
	pthread_mutex_lock(&H.lock);
	H.calls++;
	while (H.blocked && now_ms() < deadline) {
		struct timespec ts;

		H.in_block = 1;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 50000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&H.cond, &H.lock, &ts);
	}
	H.in_block = 0;
	if (H.fail > 0) {
		H.fail--;
		fail = H.err;
	} else if (H.fail_every > 0 && H.calls % (unsigned)H.fail_every == 0) {
		fail = H.err;
	}
	if (fail)
		H.failures++;
	if (H.max_chunk && len > H.max_chunk)
		len = H.max_chunk;
	pthread_mutex_unlock(&H.lock);
	if (fail)
		return -fail;
	n = write(fd, buf, len);
	return n < 0 ? -errno : n;
}

static unsigned hook_get(unsigned *field)
{
	unsigned v;

	pthread_mutex_lock(&H.lock);
	v = *field;
	pthread_mutex_unlock(&H.lock);
	return v;
}

static pthread_t loop_th;

static void *loop_main(void *arg)
{
	loop_run(arg);
	return NULL;
}

static struct loop *loop_start(void)
{
	struct loop *l;

	cr_assert_eq(loop_new(&l), 0);
	cr_assert_eq(pthread_create(&loop_th, NULL, loop_main, l), 0);
	return l;
}

static void loop_end(struct loop *l)
{
	loop_stop(l);
	pthread_join(loop_th, NULL);
	loop_free(l);
}

static atomic_int fired;

static void fired_cb(void *arg)
{
	atomic_fetch_add(&fired, 1);
	(void)arg;
}

Test(audit, backpressure_eagain_then_wait_callback)
{
	struct audit_stats st;
	struct audit *a;
	struct loop *l;
	char line[1024];
	int n, queued = 0, r;
	uint64_t deadline;

	mkdir_tmp();
	hook_reset();
	atomic_store(&fired, 0);
	l = loop_start();
	cr_assert_eq(audit_open(pathf("bp.log"), 4096, &a, NULL, 0), 0);
	audit_set_write_fn(a, hook_write, NULL);

	/* Room now: the callback is posted at once. */
	cr_assert_eq(audit_wait(a, l, fired_cb, NULL), 0);
	for (deadline = now_ms() + 5000; atomic_load(&fired) == 0 && now_ms() < deadline;)
		sleep_ms(5);
	cr_assert_eq(atomic_load(&fired), 1);

	/* Writer stuck in write(): the queue fills and submit says -EAGAIN. */
	hook_set_blocked(true);
	while ((r = audit_submit(a, line, (size_t)(n = make_line(line, sizeof(line), 0, queued)))) == 0)
		cr_assert_lt(++queued, 100);
	cr_assert_eq(r, -EAGAIN);
	cr_assert_gt(queued, 4096 / 500);
	cr_assert_eq(audit_wait(a, l, fired_cb, NULL), 0);
	sleep_ms(200);
	cr_assert_eq(atomic_load(&fired), 1, "callback while the writer is still stuck");
	audit_stats(a, &st);
	cr_assert_eq(st.waits, 1);
	cr_assert_geq(st.full, 1);

	/* Writer resumes: the callback fires, the record goes in. */
	hook_set_blocked(false);
	for (deadline = now_ms() + 5000; atomic_load(&fired) == 1 && now_ms() < deadline;)
		sleep_ms(5);
	cr_assert_eq(atomic_load(&fired), 2);
	cr_assert_eq(audit_submit(a, line, (size_t)n), 0);
	queued++;
	cr_assert_eq(audit_drain(a, 5000), 0);
	audit_close(a);
	loop_end(l);
	check_lines((const char *const[]){ pathf("bp.log") }, 1, 1, queued);
	rm_tmp();
}

Test(audit, wait_cancel)
{
	struct audit *a;
	struct loop *l;
	char line[1024];
	int n, j = 0;

	mkdir_tmp();
	hook_reset();
	atomic_store(&fired, 0);
	l = loop_start();
	cr_assert_eq(audit_open(pathf("wc.log"), 4096, &a, NULL, 0), 0);
	audit_set_write_fn(a, hook_write, NULL);
	hook_set_blocked(true);
	while ((n = make_line(line, sizeof(line), 0, j)) > 0 && audit_submit(a, line, (size_t)n) == 0)
		cr_assert_lt(++j, 100);
	cr_assert_eq(audit_wait(a, l, fired_cb, &j), 0);
	cr_assert_eq(audit_wait(a, l, fired_cb, &n), 0);
	cr_assert_eq(audit_wait_cancel(a, l, fired_cb, &j), 1);
	cr_assert_eq(audit_wait_cancel(a, l, fired_cb, &j), 0);
	hook_set_blocked(false);
	cr_assert_eq(audit_drain(a, 5000), 0);
	sleep_ms(100);
	cr_assert_eq(atomic_load(&fired), 1, "only the uncancelled waiter runs");
	cr_assert_eq(audit_wait_cancel(a, l, fired_cb, &n), 0);
	audit_close(a);
	loop_end(l);
	rm_tmp();
}

static void *unblock_later(void *arg)
{
	(void)arg;
	sleep_ms(300);
	hook_set_blocked(false);
	return NULL;
}

/* Several producers through a 4 KiB queue and a slow, partial, first-stuck
 * writer, waiting with audit_wait on one loop: nothing lost, per-thread order. */
Test(audit, backpressure_many_producers_in_order)
{
	struct producer ps[4];
	struct audit_stats st;
	struct audit *a;
	pthread_t unblocker;
	struct loop *l;
	int waited = 0;

	mkdir_tmp();
	hook_reset();
	H.max_chunk = 37;       /* every record takes several write()s */
	l = loop_start();
	cr_assert_eq(audit_open(pathf("mp.log"), 4096, &a, NULL, 0), 0);
	audit_set_write_fn(a, hook_write, NULL);
	hook_set_blocked(true);
	cr_assert_eq(pthread_create(&unblocker, NULL, unblock_later, NULL), 0);
	run_producers(a, l, 4, 1500, ps);
	pthread_join(unblocker, NULL);
	cr_assert_eq(audit_drain(a, 20000), 0);
	audit_stats(a, &st);
	for (int t = 0; t < 4; t++)
		waited += ps[t].waited;
	cr_assert_gt(waited, 0);
	cr_assert_gt(st.waits, 0);
	cr_assert_leq(st.waits, (uint64_t)waited);
	cr_assert_gt(st.full, 0);
	cr_assert_eq(st.records, 6000);
	audit_close(a);
	loop_end(l);
	check_lines((const char *const[]){ pathf("mp.log") }, 1, 4, 1500);
	rm_tmp();
}

Test(audit, write_errors_counted_and_retried)
{
	struct audit_stats st;
	struct audit *a;
	char line[1024];
	uint64_t deadline;

	mkdir_tmp();
	hook_reset();
	H.fail = 1000000;       /* ENOSPC until told otherwise */
	H.err = ENOSPC;
	cr_assert_eq(audit_open(pathf("we.log"), 64 * 1024, &a, NULL, 0), 0);
	audit_set_write_fn(a, hook_write, NULL);
	for (int j = 0; j < 100; j++) {
		int n = make_line(line, sizeof(line), 0, j);

		cr_assert_eq(audit_submit(a, line, (size_t)n), 0);
	}
	for (deadline = now_ms() + 5000; now_ms() < deadline;) {
		audit_stats(a, &st);
		if (st.write_errors >= 3)
			break;
		sleep_ms(10);
	}
	audit_stats(a, &st);
	cr_assert_geq(st.write_errors, 3, "backoff retries: %" PRIu64, st.write_errors);
	cr_assert_eq(st.records, 0);
	cr_assert_gt(st.queued, 0);
	cr_assert_eq(audit_drain(a, 100), -ETIMEDOUT);

	/* The disk has room again: everything arrives, in order. */
	pthread_mutex_lock(&H.lock);
	H.fail = 0;
	pthread_mutex_unlock(&H.lock);
	cr_assert_eq(audit_drain(a, 5000), 0);
	audit_stats(a, &st);
	cr_assert_eq(st.records, 100);
	cr_assert_eq(st.write_errors, hook_get(&H.failures));
	audit_close(a);
	check_lines((const char *const[]){ pathf("we.log") }, 1, 1, 100);
	rm_tmp();
}

/* Failures between partial writes: every line still whole, none lost. */
Test(audit, errors_between_partial_writes)
{
	struct audit_stats st;
	struct producer ps[2];
	struct audit *a;

	mkdir_tmp();
	hook_reset();
	H.max_chunk = 97;
	H.fail_every = 4;
	H.err = EIO;
	cr_assert_eq(audit_open(pathf("pe.log"), 16 * 1024, &a, NULL, 0), 0);
	audit_set_write_fn(a, hook_write, NULL);
	/* Short backoff still adds up: keep the count modest. */
	run_producers(a, NULL, 2, 80, ps);
	cr_assert_eq(audit_drain(a, 30000), 0);
	audit_stats(a, &st);
	cr_assert_eq(st.records, 160);
	cr_assert_gt(st.write_errors, 0);
	audit_close(a);
	check_lines((const char *const[]){ pathf("pe.log") }, 1, 2, 80);
	cr_assert_eq(py_check(pathf("pe.log"), "assert len(objs) == 160\n"), 0);
	rm_tmp();
}

Test(audit, reopen_after_rename)
{
	struct audit_stats st;
	struct audit *a;
	char line[1024];

	mkdir_tmp();
	cr_assert_eq(audit_open(pathf("r.log"), 0, &a, NULL, 0), 0);
	for (int j = 0; j < 100; j++) {
		int n = make_line(line, sizeof(line), 0, j);

		cr_assert_eq(audit_submit(a, line, (size_t)n), 0);
	}
	cr_assert_eq(audit_drain(a, 5000), 0);
	cr_assert_eq(rename(pathf("r.log"), pathf("r.log.1")), 0);
	cr_assert_eq(audit_reopen(a), 0);
	for (int j = 100; j < 250; j++) {
		int n = make_line(line, sizeof(line), 0, j);

		cr_assert_eq(audit_submit(a, line, (size_t)n), 0);
	}
	cr_assert_eq(audit_drain(a, 5000), 0);
	audit_stats(a, &st);
	cr_assert_eq(st.reopen_errors, 0);

	/* A reopen that fails (someone made the path 0644) keeps the old file. */
	cr_assert_eq(rename(pathf("r.log"), pathf("r.log.2")), 0);
	spit(pathf("r.log"), "", 0);
	cr_assert_eq(chmod(pathf("r.log"), 0644), 0);
	cr_assert_eq(audit_reopen(a), -EPERM);
	audit_stats(a, &st);
	cr_assert_eq(st.reopen_errors, 1);
	for (int j = 250; j < 300; j++) {
		int n = make_line(line, sizeof(line), 0, j);

		cr_assert_eq(audit_submit(a, line, (size_t)n), 0);
	}
	audit_close(a);
	{
		size_t len;
		char *empty = slurp(pathf("r.log"), &len);

		cr_assert_eq(len, 0, "refused file was written to");
		free(empty);
	}
	/* r.log.1: 0..99; r.log.2: 100..299 */
	check_lines((const char *const[]){ pathf("r.log.1"), pathf("r.log.2") }, 2, 1, 300);
	{
		size_t len;
		char *one = slurp(pathf("r.log.1"), &len);
		int lines = 0;

		for (size_t i = 0; i < len; i++)
			lines += one[i] == '\n';
		cr_assert_eq(lines, 100);
		free(one);
	}
	rm_tmp();
}

/* Rotate five times while producers run and writes are partial: the writer
 * only switches between records, so every file holds whole lines and the
 * files in rotation order hold every record exactly once, in order. */
Test(audit, reopen_under_load_switches_between_records)
{
	struct producer ps[3];
	struct audit_stats st;
	const char *files[6];
	pthread_t th[3];
	struct audit *a;

	mkdir_tmp();
	hook_reset();
	H.max_chunk = 41;
	cr_assert_eq(audit_open(pathf("rl.log"), 8192, &a, NULL, 0), 0);
	audit_set_write_fn(a, hook_write, NULL);
	for (int t = 0; t < 3; t++) {
		ps[t] = (struct producer){ .a = a, .t = t, .per = 3000 };
		cr_assert_eq(pthread_create(&th[t], NULL, produce, &ps[t]), 0);
	}
	for (int k = 0; k < 5; k++) {
		char name[32];

		sleep_ms(40);
		snprintf(name, sizeof(name), "rl.log.%d", k);
		files[k] = strdup(pathf(name));
		cr_assert_eq(rename(pathf("rl.log"), files[k]), 0);
		cr_assert_eq(audit_reopen(a), 0);
	}
	for (int t = 0; t < 3; t++)
		pthread_join(th[t], NULL);
	cr_assert_eq(audit_drain(a, 20000), 0);
	audit_stats(a, &st);
	cr_assert_eq(st.records, 9000);
	audit_close(a);
	files[5] = strdup(pathf("rl.log"));
	check_lines(files, 6, 3, 3000);
	{
		int nonempty = 0;
		struct stat fst;

		for (int k = 0; k < 6; k++)
			nonempty += stat(files[k], &fst) == 0 && fst.st_size > 0;
		cr_assert_geq(nonempty, 3, "rotations did not happen under load");
	}
	for (int k = 0; k < 6; k++)
		free((void *)files[k]);
	rm_tmp();
}

Test(audit, close_is_bounded_when_the_disk_never_recovers)
{
	struct audit *a;
	char line[1024];
	uint64_t t0, el;
	int n;

	mkdir_tmp();
	hook_reset();
	H.fail = 1000000;
	H.err = EIO;
	cr_assert_eq(audit_open(pathf("cb.log"), 0, &a, NULL, 0), 0);
	audit_set_write_fn(a, hook_write, NULL);
	n = make_line(line, sizeof(line), 0, 0);
	cr_assert_eq(audit_submit(a, line, (size_t)n), 0);
	t0 = now_ms();
	audit_close(a);
	el = now_ms() - t0;
	cr_assert(el >= AUDIT_CLOSE_WAIT_MS - 100 && el < AUDIT_CLOSE_WAIT_MS + 2000, "%" PRIu64 " ms",
		  el);
	rm_tmp();
}
