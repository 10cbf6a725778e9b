// SPDX-License-Identifier: MIT
/* log: level parsing, line format (ISO-8601 UTC time with ms, level), level
 * filtering, truncation to one line, whole lines across threads. stderr is
 * captured through a pipe dup2()ed over fd 2. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

TestSuite(log, .timeout = 10);

Test(log, parse_level_table)
{
	static const struct {
		const char *s;
		int want;       /* level, or -1 for -EINVAL */
	} t[] = {
		{ "error", LOG_ERROR }, { "warn", LOG_WARN }, { "info", LOG_INFO },
		{ "debug", LOG_DEBUG }, { "", -1 }, { "warning", -1 }, { "err", -1 },
		{ "info ", -1 }, { " info", -1 }, { "trace", -1 }, { "3", -1 },
		{ "debugx", -1 }, { "inf", -1 },
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		enum log_level lvl = (enum log_level)77;
		int r = log_parse_level(t[i].s, &lvl);

		if (t[i].want < 0) {
			cr_assert_eq(r, -EINVAL, "'%s' -> %d", t[i].s, r);
			cr_assert_eq((int)lvl, 77, "'%s': ret_level written on failure", t[i].s);
		} else {
			cr_assert_eq(r, 0, "'%s' -> %d", t[i].s, r);
			cr_assert_eq((int)lvl, t[i].want, "'%s' -> %d", t[i].s, (int)lvl);
		}
	}
}

/* Capture fd 2 into a pipe; returns the saved fd 2. */
static int cap_fds[2], saved_err = -1;

static void capture_start(void)
{
	cr_assert_eq(pipe2(cap_fds, O_CLOEXEC), 0);
	fcntl(cap_fds[0], F_SETFL, O_NONBLOCK);
	fflush(stderr);
	saved_err = dup(2);
	cr_assert(saved_err >= 0);
	cr_assert_eq(dup2(cap_fds[1], 2), 2);
}

/* Stop capturing; returns what was written (malloc'd, NUL-terminated). */
static char *capture_end(void)
{
	size_t cap = 1 << 20, len = 0;
	char *out = malloc(cap + 1);
	ssize_t n;

	cr_assert_not_null(out);
	fflush(stderr);
	dup2(saved_err, 2);
	close(saved_err);
	close(cap_fds[1]);
	while (len < cap && (n = read(cap_fds[0], out + len, cap - len)) > 0)
		len += (size_t)n;
	close(cap_fds[0]);
	out[len] = 0;
	return out;
}

static const char *LINE_RE =
	"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z sluiced "
	"(error|warn|info|debug): ";

static void assert_line(const char *line, const char *level, const char *msg)
{
	regex_t re;
	char want[256];
	const char *p;
	struct tm tm = { 0 };
	time_t t, now = time(NULL);

	cr_assert_eq(regcomp(&re, LINE_RE, REG_EXTENDED | REG_NOSUB), 0);
	cr_assert_eq(regexec(&re, line, 0, NULL, 0), 0, "bad line format: '%s'", line);
	regfree(&re);
	snprintf(want, sizeof(want), "sluiced %s: %s", level, msg);
	p = strchr(line, ' ');
	cr_assert_not_null(p);
	cr_assert_str_eq(p + 1, want);
	/* The time is UTC and now (within a few seconds). */
	cr_assert_not_null(strptime(line, "%Y-%m-%dT%H:%M:%S", &tm));
	t = timegm(&tm);
	cr_assert(t >= now - 5 && t <= now + 1, "log time %ld vs now %ld", (long)t, (long)now);
}

Test(log, line_has_iso_time_and_level)
{
	enum log_level saved = log_max_level;
	char *out, *nl, *line;

	log_max_level = LOG_DEBUG;
	capture_start();
	log_error("boom %d", 42);
	log_warn("careful %s", "there");
	log_info("hello");
	log_debug("details %u", 7u);
	out = capture_end();
	log_max_level = saved;

	static const char *const want[][2] = {
		{ "error", "boom 42" }, { "warn", "careful there" },
		{ "info", "hello" }, { "debug", "details 7" },
	};
	line = out;
	for (int i = 0; i < 4; i++) {
		nl = strchr(line, '\n');
		cr_assert_not_null(nl, "line %d missing in '%s'", i, out);
		*nl = 0;
		assert_line(line, want[i][0], want[i][1]);
		line = nl + 1;
	}
	cr_assert_str_eq(line, "", "extra output: '%s'", line);
	free(out);
}

Test(log, level_filter)
{
	enum log_level saved = log_max_level;
	char *out;

	log_max_level = LOG_WARN;
	capture_start();
	log_info("not shown");
	log_debug("not shown");
	log_msg(LOG_INFO, "not shown either");
	log_warn("shown");
	out = capture_end();
	log_max_level = saved;
	cr_assert_not_null(strstr(out, "warn: shown\n"), "got '%s'", out);
	cr_assert_null(strstr(out, "not shown"), "got '%s'", out);
	free(out);

	log_max_level = LOG_ERROR;
	capture_start();
	log_warn("hidden");
	log_error("err");
	out = capture_end();
	log_max_level = saved;
	cr_assert_null(strstr(out, "hidden"));
	cr_assert_not_null(strstr(out, "error: err\n"));
	free(out);
}

Test(log, long_message_is_one_truncated_line)
{
	enum log_level saved = log_max_level;
	size_t n = 10000;
	char *big = malloc(n + 1), *out;

	memset(big, 'a', n);
	big[n] = 0;
	log_max_level = LOG_INFO;
	capture_start();
	log_info("%s", big);
	log_info("after");
	out = capture_end();
	log_max_level = saved;
	char *nl = strchr(out, '\n');

	cr_assert_not_null(nl);
	cr_assert_lt((size_t)(nl - out), 2048, "line of %zu bytes", (size_t)(nl - out));
	cr_assert_gt((size_t)(nl - out), 1000);
	*nl = 0;
	cr_assert_eq(strlen(out), (size_t)(nl - out), "NUL inside the line");
	cr_assert_not_null(strstr(out, "sluiced info: aaaa"));
	cr_assert_not_null(strstr(nl + 1, "info: after\n"), "second line lost");
	free(big);
	free(out);
}

#define NTHREADS 4
#define NLINES 300

static void *log_thread(void *arg)
{
	for (int i = 0; i < NLINES; i++)
		log_warn("thread %d line %d padding-padding-padding-padding", (int)(intptr_t)arg, i);
	return NULL;
}

static void *drain(void *arg)
{
	char **ret = arg;
	size_t cap = 1 << 20, len = 0;
	char *out = malloc(cap + 1);
	ssize_t n;
	int fd = cap_fds[0];

	fcntl(fd, F_SETFL, 0);
	while (len < cap && (n = read(fd, out + len, cap - len)) > 0)
		len += (size_t)n;
	out[len] = 0;
	*ret = out;
	return NULL;
}

Test(log, lines_stay_whole_across_threads)
{
	pthread_t t[NTHREADS], d;
	char *out = NULL, *save = NULL, *line;
	int count[NTHREADS] = { 0 }, lines = 0;
	regex_t re;

	capture_start();
	cr_assert_eq(pthread_create(&d, NULL, drain, &out), 0);
	for (int i = 0; i < NTHREADS; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, log_thread, (void *)(intptr_t)i), 0);
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(t[i], NULL);
	fflush(stderr);
	dup2(saved_err, 2);
	close(saved_err);
	close(cap_fds[1]);
	pthread_join(d, NULL);
	close(cap_fds[0]);

	cr_assert_eq(regcomp(&re,
			     "^[0-9T:.Z-]{24} sluiced warn: thread ([0-3]) line [0-9]+ "
			     "padding-padding-padding-padding$",
			     REG_EXTENDED), 0);
	for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		regmatch_t m[2];

		cr_assert_eq(regexec(&re, line, 2, m, 0), 0, "torn line: '%s'", line);
		count[line[m[1].rm_so] - '0']++;
		lines++;
	}
	regfree(&re);
	cr_assert_eq(lines, NTHREADS * NLINES);
	for (int i = 0; i < NTHREADS; i++)
		cr_assert_eq(count[i], NLINES);
	free(out);
}
