/* SPDX-License-Identifier: MIT */
/*
 * cpsync: the control-plane client (see cpsync.h, docs/control-plane.md).
 *
 * One thread, one libcurl multi handle with one easy handle reused across
 * rounds (keep-alive to the control plane). The multi interface is used only
 * so cps_stop() can interrupt a request in flight with curl_multi_wakeup().
 * Rounds are numbered; a sync_now waiter records the number of the next
 * round to start and is completed when a round with at least that number
 * ends, which makes the barrier exact.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "cpsync.h"
#include "policy.h"

#define CPS_TOKEN_MAX 4096
#define CPS_NODE_MAX 253
#define CPS_URL_MAX 2048
#define CPS_SECRET_NAME_MAX 64
#define CPS_PEM_MAX (1024 * 1024) /* bytes of a client certificate or key file */

struct cps_waiter {
	struct cps_waiter *next;
	uint64_t round;         /* completed by the end of this round or a later one */
	void (*cb)(void *arg, bool ok, const char *error);
	void *arg;
};

struct cps {
	char *sync_url, *auth_header, *node, *ca_file, *cert_file, *key_file;
	unsigned interval_ms, jitter_pct, backoff_min_ms, backoff_max_ms;
	unsigned connect_timeout_ms, timeout_ms;
	struct cps_hooks hooks;

	CURLM *multi;
	CURL *easy;
	struct curl_slist *headers;
	pthread_t thread;

	pthread_mutex_t lock;
	pthread_cond_t cond;    /* CLOCK_MONOTONIC */
	bool stop;              /* under lock; also read atomically by the transfer loop */
	bool want_now;
	uint64_t rounds_started;
	struct cps_waiter *waiters, **waiters_tail;
	unsigned nwaiters;
	struct cps_stats stats;
	uint64_t rng;
};

/* ---- small helpers ---- */

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t unix_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t rng_next(uint64_t *s)
{
	/* xorshift64*: jitter only, not a secret */
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545F4914F6CDD1DULL;
}

static bool printable(const char *s, size_t len, bool space_ok)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch < 0x20 || ch == 0x7f || (!space_ok && ch == ' '))
			return false;
	}
	return true;
}

static bool name_ok(const char *s, size_t len)
{
	if (!len || len > CPS_SECRET_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char ch = s[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' || ch == '-'))
			return false;
	}
	return true;
}

static bool hash_ok(const char *s)
{
	if (strncmp(s, "sha256:", 7) || strlen(s) != 7 + 64)
		return false;
	for (const char *p = s + 7; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return false;
	return true;
}

/* Zero a string jansson owns (secret values) before the tree is freed. */
static void json_string_wipe(json_t *v)
{
	if (json_is_string(v))
		explicit_bzero((char *)json_string_value(v), json_string_length(v));
}

/* ---- the config hash ---- */

struct cps_kv {
	const char *name, *value;
	size_t len;
};

static int kv_cmp(const void *a, const void *b)
{
	return strcmp(((const struct cps_kv *)a)->name, ((const struct cps_kv *)b)->name);
}

/* F(x) = decimal byte length ":" x "\n" */
static int hash_field(EVP_MD_CTX *md, const void *s, size_t len)
{
	char pre[32];
	int n = snprintf(pre, sizeof(pre), "%zu:", len);

	if (!EVP_DigestUpdate(md, pre, (size_t)n) || !EVP_DigestUpdate(md, s, len) ||
	    !EVP_DigestUpdate(md, "\n", 1))
		return -ENOMEM;
	return 0;
}

static int config_hash_kv(const char *id, const char *status, const char *principal,
			  const char *policy, size_t policy_len, struct cps_kv *kv, unsigned n,
			  char out[80])
{
	unsigned char d[32];
	unsigned dlen = 0;
	char cnt[16];
	EVP_MD_CTX *md;
	int rc = -ENOMEM;

	qsort(kv, n, sizeof(*kv), kv_cmp);
	for (unsigned i = 1; i < n; i++)
		if (!strcmp(kv[i - 1].name, kv[i].name))
			return -EINVAL;
	md = EVP_MD_CTX_new();
	if (!md)
		return -ENOMEM;
	if (!EVP_DigestInit_ex(md, EVP_sha256(), NULL) ||
	    !EVP_DigestUpdate(md, "sluice-config-v1\n", 17))
		goto out_free;
	snprintf(cnt, sizeof(cnt), "%u", n);
	if (hash_field(md, id, strlen(id)) || hash_field(md, status, strlen(status)) ||
	    hash_field(md, principal, strlen(principal)) || hash_field(md, policy, policy_len) ||
	    hash_field(md, cnt, strlen(cnt)))
		goto out_free;
	for (unsigned i = 0; i < n; i++)
		if (hash_field(md, kv[i].name, strlen(kv[i].name)) ||
		    hash_field(md, kv[i].value, kv[i].len))
			goto out_free;
	if (!EVP_DigestFinal_ex(md, d, &dlen) || dlen != 32)
		goto out_free;
	memcpy(out, "sha256:", 7);
	for (unsigned i = 0; i < 32; i++)
		snprintf(out + 7 + 2 * i, 3, "%02x", d[i]);
	rc = 0;
out_free:
	EVP_MD_CTX_free(md);
	return rc;
}

int cps_config_hash(const char *id, const char *status, const char *principal,
		    const char *policy, size_t policy_len, const char *const *names,
		    const char *const *values, const size_t *lens, unsigned n, char out[80])
{
	struct cps_kv *kv = calloc(n ? n : 1, sizeof(*kv));
	int rc;

	if (!kv)
		return -ENOMEM;
	for (unsigned i = 0; i < n; i++)
		kv[i] = (struct cps_kv){ names[i], values[i], lens[i] };
	rc = config_hash_kv(id, status, principal, policy, policy_len, kv, n, out);
	free(kv);
	return rc;
}

int cps_secret_value(void *ctx, const char *source, const unsigned char **ret_val,
		     size_t *ret_len)
{
	const struct cps_sandbox_cfg *c = ctx;

	if (!c || strncmp(source, "controlplane:", 13))
		return -ENOENT;
	for (unsigned i = 0; i < c->nsecrets; i++)
		if (!strcmp(c->secret_names[i], source + 13)) {
			*ret_val = (const unsigned char *)c->secret_values[i];
			*ret_len = c->secret_lens[i];
			return 0;
		}
	return -ENOENT;
}

/* ---- one response entry ---- */

static const char *const full_keys[] = { "id", "policy", "principal", "secrets", "status",
					 "config_hash" };

/*
 * Check a non-"unchanged" entry, verify its hash and apply it. 0 (applied),
 * or -errno with a message in err; *rejected says whether the entry itself
 * was bad (versus the apply hook refusing it).
 */
static int entry_apply(struct cps *c, const char *id, json_t *e, char *err, size_t errlen,
		       bool *rejected)
{
	json_t *jstatus = json_object_get(e, "status"), *jprin, *jhash, *jpol, *jsec, *v;
	const char *key, *status = json_string_value(jstatus);
	struct cps_sandbox_cfg cfg = { 0 };
	struct cps_kv *kv = NULL;
	const char **names = NULL, **values = NULL;
	size_t *lens = NULL;
	char computed[80];
	unsigned n = 0;
	int rc = -EINVAL;

	*rejected = true;
	json_object_foreach(e, key, v) {
		bool known = false;

		for (unsigned i = 0; i < sizeof(full_keys) / sizeof(full_keys[0]); i++)
			known = known || !strcmp(key, full_keys[i]);
		if (!known) {
			snprintf(err, errlen, "unknown key '%.64s'", key);
			return -EINVAL;
		}
	}
	for (unsigned i = 1; i < sizeof(full_keys) / sizeof(full_keys[0]); i++)
		if (!json_object_get(e, full_keys[i])) {
			snprintf(err, errlen, "missing '%s'", full_keys[i]);
			return -EINVAL;
		}
	jprin = json_object_get(e, "principal");
	jhash = json_object_get(e, "config_hash");
	jpol = json_object_get(e, "policy");
	jsec = json_object_get(e, "secrets");
	if (!json_is_string(jprin) || !json_string_length(jprin) ||
	    json_string_length(jprin) > CPS_PRINCIPAL_MAX ||
	    !printable(json_string_value(jprin), json_string_length(jprin), true)) {
		snprintf(err, errlen, "'principal' must be 1 to %d printable bytes",
			 CPS_PRINCIPAL_MAX);
		return -EINVAL;
	}
	if (!json_is_string(jhash) || !hash_ok(json_string_value(jhash))) {
		snprintf(err, errlen, "'config_hash' must be \"sha256:<64 lower-case hex>\"");
		return -EINVAL;
	}
	if (!json_is_string(jpol) || json_string_length(jpol) > POL_FILE_MAX) {
		snprintf(err, errlen, "'policy' must be a string of at most %d bytes",
			 POL_FILE_MAX);
		return -EINVAL;
	}
	if (!json_is_object(jsec) || json_object_size(jsec) > POL_SECRETS_MAX) {
		snprintf(err, errlen, "'secrets' must be an object of at most %d strings",
			 POL_SECRETS_MAX);
		return -EINVAL;
	}
	n = (unsigned)json_object_size(jsec);
	kv = calloc(n ? n : 1, sizeof(*kv));
	names = calloc(n ? n : 1, sizeof(*names));
	values = calloc(n ? n : 1, sizeof(*values));
	lens = calloc(n ? n : 1, sizeof(*lens));
	if (!kv || !names || !values || !lens) {
		snprintf(err, errlen, "out of memory");
		rc = -ENOMEM;
		*rejected = false;
		goto out_free;
	}
	n = 0;
	json_object_foreach(jsec, key, v) {
		if (!name_ok(key, strlen(key))) {
			snprintf(err, errlen, "invalid secret name '%.64s': 1 to %d of "
				 "[A-Za-z0-9_.-]", key, CPS_SECRET_NAME_MAX);
			goto out_free;
		}
		if (!json_is_string(v) || json_string_length(v) > POL_SECRET_VALUE_MAX) {
			snprintf(err, errlen, "secret '%s' must be a string of at most %d bytes",
				 key, POL_SECRET_VALUE_MAX);
			goto out_free;
		}
		kv[n++] = (struct cps_kv){ key, json_string_value(v), json_string_length(v) };
	}
	rc = config_hash_kv(id, status, json_string_value(jprin), json_string_value(jpol),
			    json_string_length(jpol), kv, n, computed);
	if (rc) {
		snprintf(err, errlen, "cannot compute the config hash");
		*rejected = rc == -EINVAL;
		goto out_free;
	}
	if (strcmp(computed, json_string_value(jhash))) {
		snprintf(err, errlen, "config_hash mismatch: sent %s, computed %s",
			 json_string_value(jhash), computed);
		rc = -EBADMSG;
		goto out_free;
	}
	for (unsigned i = 0; i < n; i++) {
		names[i] = kv[i].name;
		values[i] = kv[i].value;
		lens[i] = kv[i].len;
	}
	cfg = (struct cps_sandbox_cfg){
		.id = id,
		.status = status,
		.principal = json_string_value(jprin),
		.config_hash = json_string_value(jhash),
		.policy_yaml = json_string_value(jpol),
		.policy_len = json_string_length(jpol),
		.secret_names = names,
		.secret_values = values,
		.secret_lens = lens,
		.nsecrets = n,
	};
	*rejected = false;
	err[0] = '\0';
	rc = c->hooks.apply(c->hooks.opaque, &cfg, err, errlen);
	if (rc) {
		if (rc > 0)
			rc = -EINVAL;
		if (!err[0])
			snprintf(err, errlen, "apply failed: %s", strerror(-rc));
	}
out_free:
	free(kv);
	free(names);
	free(values);
	free(lens);
	return rc;
}

/* ---- the response ---- */

static void reject(struct cps *c, const char *id, const char *msg)
{
	if (c->hooks.rejected)
		c->hooks.rejected(c->hooks.opaque, id, msg);
}

/* Keep the first per-sandbox error of the round. */
static void note_error(char *rerr, size_t rerrlen, const char *id, const char *msg)
{
	if (!rerr[0])
		snprintf(rerr, rerrlen, "sandbox %s: %s", id, msg);
}

/*
 * Process a parsed 200 response against what was reported. Returns true when
 * every entry for a reported sandbox was applied or unchanged.
 */
static bool response_apply(struct cps *c, json_t *root, json_t *reported, char *rerr,
			   size_t rerrlen)
{
	json_t *arr, *e, *seen;
	const char *key;
	size_t i;
	json_t *v;
	bool ok = true;

	if (!json_is_object(root)) {
		snprintf(rerr, rerrlen, "response: not a JSON object");
		return false;
	}
	json_object_foreach(root, key, v)
		if (strcmp(key, "sandboxes")) {
			snprintf(rerr, rerrlen, "response: unknown key '%.64s'", key);
			return false;
		}
	arr = json_object_get(root, "sandboxes");
	if (!json_is_array(arr) || json_array_size(arr) > CPS_SANDBOXES_MAX) {
		snprintf(rerr, rerrlen, "response: 'sandboxes' must be an array of at most %d",
			 CPS_SANDBOXES_MAX);
		return false;
	}
	seen = json_object();
	if (!seen) {
		snprintf(rerr, rerrlen, "out of memory");
		return false;
	}
	/* pass 1: shape of the list itself; a list naming a sandbox twice is
	 * refused whole (which of the two would be right?) */
	json_array_foreach(arr, i, e) {
		json_t *jid = json_object_get(e, "id");

		if (!json_is_object(e) || !json_is_string(jid) || !json_string_length(jid) ||
		    json_string_length(jid) > CPS_ID_MAX ||
		    strlen(json_string_value(jid)) != json_string_length(jid)) {
			snprintf(rerr, rerrlen, "response: sandboxes[%zu] has no valid 'id'", i);
			ok = false;
			goto out_seen;
		}
		if (json_object_get(seen, json_string_value(jid))) {
			snprintf(rerr, rerrlen, "response: sandbox '%.64s' appears twice",
				 json_string_value(jid));
			ok = false;
			goto out_seen;
		}
		if (json_object_set_new(seen, json_string_value(jid), json_true())) {
			snprintf(rerr, rerrlen, "out of memory");
			ok = false;
			goto out_seen;
		}
	}
	/* pass 2: each entry for a sandbox we reported */
	json_array_foreach(arr, i, e) {
		const char *id = json_string_value(json_object_get(e, "id"));
		json_t *applied = json_object_get(reported, id);
		const char *status = json_string_value(json_object_get(e, "status"));
		char err[512];
		bool rejected = true;
		int rc;

		if (!applied)
			continue; /* not ours (any more): ignored */
		err[0] = '\0';
		if (!status) {
			snprintf(err, sizeof(err), "missing 'status'");
		} else if (!strcmp(status, "unchanged")) {
			json_t *h = json_object_get(e, "config_hash");

			if (json_object_size(e) != 3 || !json_is_string(h))
				snprintf(err, sizeof(err), "an 'unchanged' entry has exactly 'id', "
					 "'status' and 'config_hash'");
			else if (!json_is_string(applied) ||
				 strcmp(json_string_value(h), json_string_value(applied)))
				snprintf(err, sizeof(err), "'unchanged' but config_hash %.80s "
					 "is not the applied hash", json_string_value(h));
		} else if (strcmp(status, "active") && strcmp(status, "disabled") &&
			   strcmp(status, "revoked")) {
			snprintf(err, sizeof(err), "unknown status '%.32s'", status);
		} else {
			rc = entry_apply(c, id, e, err, sizeof(err), &rejected);
			if (!rc)
				err[0] = '\0';
		}
		if (err[0]) {
			ok = false;
			note_error(rerr, rerrlen, id, err);
			if (rejected)
				reject(c, id, err);
		}
	}
	/* reported sandboxes the control plane did not answer for: they keep
	 * what they have (or stay not synced); not a failure of the round */
	json_object_foreach(reported, key, v)
		if (!json_object_get(seen, key))
			reject(c, key, "the control plane did not answer for this sandbox");
out_seen:
	json_decref(seen);
	return ok;
}

/* ---- the request ---- */

struct cps_body {
	char *buf;
	size_t len, cap;
	bool too_big;
};

static void body_wipe(struct cps_body *b)
{
	if (b->buf) {
		explicit_bzero(b->buf, b->cap);
		free(b->buf);
	}
	*b = (struct cps_body){ 0 };
}

static size_t body_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct cps_body *b = userdata;
	size_t n = size * nmemb;

	if (n > CPS_BODY_MAX - b->len) {
		b->too_big = true;
		return 0;
	}
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 16384;
		char *nb;

		while (cap < b->len + n + 1)
			cap *= 2;
		if (cap > CPS_BODY_MAX + 1)
			cap = CPS_BODY_MAX + 1;
		/* not realloc: the old buffer may hold secret values, zero it */
		nb = malloc(cap);
		if (!nb)
			return 0;
		if (b->buf) {
			memcpy(nb, b->buf, b->len);
			explicit_bzero(b->buf, b->cap);
			free(b->buf);
		}
		b->buf = nb;
		b->cap = cap;
	}
	memcpy(b->buf + b->len, ptr, n);
	b->len += n;
	b->buf[b->len] = '\0';
	return n;
}

static bool stopping(struct cps *c)
{
	return __atomic_load_n(&c->stop, __ATOMIC_ACQUIRE);
}

/* Build the request from the report hook; fills reported (id → applied hash). */
static int request_build(struct cps *c, json_t *reported, char **ret_body, char *rerr,
			 size_t rerrlen)
{
	json_t *arr = json_array(), *req = NULL, *e;
	char *body;
	size_t i;
	int rc;

	if (!arr)
		goto out_oom;
	rc = c->hooks.report(c->hooks.opaque, arr);
	if (rc) {
		snprintf(rerr, rerrlen, "report: %s", strerror(rc < 0 ? -rc : rc));
		json_decref(arr);
		return rc < 0 ? rc : -rc;
	}
	if (json_array_size(arr) > CPS_SANDBOXES_MAX) {
		snprintf(rerr, rerrlen, "report: more than %d sandboxes", CPS_SANDBOXES_MAX);
		json_decref(arr);
		return -E2BIG;
	}
	json_array_foreach(arr, i, e) {
		json_t *id = json_object_get(e, "id"), *h = json_object_get(e, "applied_hash");

		if (!json_is_object(e) || json_object_size(e) != 2 || !json_is_string(id) ||
		    !json_string_length(id) || json_string_length(id) > CPS_ID_MAX ||
		    !(json_is_null(h) || (json_is_string(h) && hash_ok(json_string_value(h)))) ||
		    json_object_get(reported, json_string_value(id))) {
			snprintf(rerr, rerrlen, "report: entry %zu is not {id, applied_hash} or "
				 "repeats an id", i);
			json_decref(arr);
			return -EINVAL;
		}
		if (json_object_set(reported, json_string_value(id), h))
			goto out_oom;
	}
	req = json_pack("{s:s, s:o}", "node", c->node, "sandboxes", arr);
	arr = NULL; /* stolen by json_pack, even on failure */
	if (!req)
		goto out_oom;
	body = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	if (!body)
		goto out_oom;
	*ret_body = body;
	return 0;
out_oom:
	json_decref(arr);
	snprintf(rerr, rerrlen, "out of memory");
	return -ENOMEM;
}

/* Run one transfer on the multi handle; abortable by cps_stop(). */
static CURLcode transfer(struct cps *c)
{
	CURLcode res = CURLE_OK;
	CURLMsg *m;
	int running = 1, left;

	if (curl_multi_add_handle(c->multi, c->easy) != CURLM_OK)
		return CURLE_OUT_OF_MEMORY;
	for (;;) {
		if (curl_multi_perform(c->multi, &running) != CURLM_OK) {
			res = CURLE_OUT_OF_MEMORY;
			break;
		}
		if (!running)
			break;
		if (stopping(c)) {
			res = CURLE_ABORTED_BY_CALLBACK;
			break;
		}
		curl_multi_poll(c->multi, NULL, 0, 1000, NULL);
	}
	while (!running && (m = curl_multi_info_read(c->multi, &left)))
		if (m->msg == CURLMSG_DONE)
			res = m->data.result;
	curl_multi_remove_handle(c->multi, c->easy);
	return res;
}

/* One round. true when everything reported was applied or unchanged. */
static bool round_run(struct cps *c, char *rerr, size_t rerrlen)
{
	json_t *reported = json_object(), *root = NULL;
	struct cps_body body = { 0 };
	char *req = NULL, cerr[CURL_ERROR_SIZE];
	json_error_t jerr;
	long code = 0;
	CURLcode res;
	bool ok = false;

	rerr[0] = '\0';
	if (!reported) {
		snprintf(rerr, rerrlen, "out of memory");
		return false;
	}
	if (request_build(c, reported, &req, rerr, rerrlen))
		goto out;
	cerr[0] = '\0';
	curl_easy_setopt(c->easy, CURLOPT_ERRORBUFFER, cerr);
	curl_easy_setopt(c->easy, CURLOPT_POSTFIELDS, req);
	curl_easy_setopt(c->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(req));
	curl_easy_setopt(c->easy, CURLOPT_WRITEDATA, &body);
	res = transfer(c);
	curl_easy_setopt(c->easy, CURLOPT_ERRORBUFFER, NULL);
	if (res == CURLE_ABORTED_BY_CALLBACK && stopping(c)) {
		snprintf(rerr, rerrlen, "stopped");
		goto out;
	}
	if (body.too_big || res == CURLE_FILESIZE_EXCEEDED) {
		snprintf(rerr, rerrlen, "control plane: response larger than %d bytes",
			 CPS_BODY_MAX);
		goto out;
	}
	if (res != CURLE_OK) {
		snprintf(rerr, rerrlen, "control plane: %s",
			 cerr[0] ? cerr : curl_easy_strerror(res));
		goto out;
	}
	curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &code);
	if (code != 200) {
		snprintf(rerr, rerrlen, "control plane: HTTP %ld%s", code,
			 code == 401 || code == 403 ? " (check the token)" : "");
		goto out;
	}
	root = json_loadb(body.buf ? body.buf : "", body.len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		snprintf(rerr, rerrlen, "control plane: invalid JSON at %d:%d: %s", jerr.line,
			 jerr.column, jerr.text);
		goto out;
	}
	ok = response_apply(c, root, reported, rerr, rerrlen);
out:
	body_wipe(&body);
	if (root) {
		json_t *arr = json_object_get(root, "sandboxes"), *e, *v;
		const char *key;
		size_t i;

		json_array_foreach(arr, i, e)
			json_object_foreach(json_object_get(e, "secrets"), key, v)
				json_string_wipe(v);
		json_decref(root);
	}
	free(req);
	json_decref(reported);
	return ok;
}

/* ---- the thread ---- */

static unsigned jittered(struct cps *c, uint64_t ms)
{
	uint64_t j = c->jitter_pct, span;

	if (ms > 24ULL * 3600 * 1000)
		ms = 24ULL * 3600 * 1000;
	if (!j || !ms)
		return (unsigned)ms;
	span = ms * 2 * j / 100;
	return (unsigned)(ms - ms * j / 100 + (span ? rng_next(&c->rng) % (span + 1) : 0));
}

static void waiters_complete(struct cps_waiter *w, bool ok, const char *error)
{
	while (w) {
		struct cps_waiter *next = w->next;

		w->cb(w->arg, ok, error);
		free(w);
		w = next;
	}
}

/* Detach the waiters whose round is <= round (the list is in round order);
 * round UINT64_MAX takes them all. Under c->lock. */
static struct cps_waiter *waiters_take(struct cps *c, uint64_t round)
{
	struct cps_waiter *head = NULL, **tail = &head, *w;

	while ((w = c->waiters) && w->round <= round) {
		c->waiters = w->next;
		w->next = NULL;
		*tail = w;
		tail = &w->next;
		c->nwaiters--;
	}
	if (!c->waiters)
		c->waiters_tail = &c->waiters;
	return head;
}

static void *sync_thread(void *arg)
{
	struct cps *c = arg;
	uint64_t next_at = 0; /* the first round at once */
	char rerr[1024];

	pthread_mutex_lock(&c->lock);
	while (!c->stop) {
		struct cps_waiter *done;
		uint64_t round, now = mono_ms(), delay;
		bool ok;

		if (!c->want_now && now < next_at) {
			struct timespec ts;

			clock_gettime(CLOCK_MONOTONIC, &ts);
			ts.tv_sec += (time_t)((next_at - now) / 1000);
			ts.tv_nsec += (long)((next_at - now) % 1000) * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&c->cond, &c->lock, &ts);
			continue;
		}
		c->want_now = false;
		round = ++c->rounds_started;
		c->stats.attempts++;
		pthread_mutex_unlock(&c->lock);

		ok = round_run(c, rerr, sizeof(rerr));

		pthread_mutex_lock(&c->lock);
		if (ok) {
			c->stats.consecutive_failures = 0;
			c->stats.last_success_unix_ms = unix_ms();
			delay = c->interval_ms;
		} else {
			unsigned k = ++c->stats.consecutive_failures;

			c->stats.failures++;
			delay = c->backoff_min_ms;
			for (unsigned i = 1; i < k && delay < c->backoff_max_ms; i++)
				delay *= 2;
			if (delay > c->backoff_max_ms)
				delay = c->backoff_max_ms;
		}
		c->stats.next_delay_ms = jittered(c, delay);
		next_at = mono_ms() + c->stats.next_delay_ms;
		done = waiters_take(c, round);
		pthread_mutex_unlock(&c->lock);

		/* hooks and waiters run unlocked: they may call cps_sync_now() */
		c->hooks.done(c->hooks.opaque, ok, ok ? NULL : rerr);
		waiters_complete(done, ok, ok ? NULL : rerr);
		pthread_mutex_lock(&c->lock);
	}
	/* c->stop is set: cps_sync_now() adds no more waiters */
	{
		struct cps_waiter *rest = waiters_take(c, UINT64_MAX);

		pthread_mutex_unlock(&c->lock);
		waiters_complete(rest, false, "stopped");
	}
	return NULL;
}

/* ---- start / stop ---- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static bool host_is_loopback(const char *h)
{
	return !strcasecmp(h, "localhost") || !strncmp(h, "127.", 4) || !strcmp(h, "[::1]") ||
	       !strcmp(h, "::1");
}

/* https://, or http:// to a loopback host; no query, fragment or userinfo. */
static int url_check(const char *url, char *err, size_t errlen)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL, *part = NULL;
	int rc = -EINVAL;

	if (!u)
		return -ENOMEM;
	if (strlen(url) > CPS_URL_MAX || curl_url_set(u, CURLUPART_URL, url, 0) ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0)) {
		snprintf(err, errlen, "control plane URL '%.200s' is not a valid URL", url);
		goto out;
	}
	if (!curl_url_get(u, CURLUPART_QUERY, &part, 0) ||
	    !curl_url_get(u, CURLUPART_FRAGMENT, &part, 0) ||
	    !curl_url_get(u, CURLUPART_USER, &part, 0)) {
		snprintf(err, errlen, "control plane URL must have no query, fragment or "
			 "user info");
		goto out;
	}
	if (strcmp(scheme, "https") && !(!strcmp(scheme, "http") && host_is_loopback(host))) {
		snprintf(err, errlen, "control plane URL must be https:// (http:// only to a "
			 "loopback address): the token would travel in clear");
		goto out;
	}
	rc = 0;
out:
	curl_free(part);
	curl_free(host);
	curl_free(scheme);
	curl_url_cleanup(u);
	return rc;
}

/* ---- the files: checked before start, read by libcurl per connection ---- */

/*
 * Open path for a check; "what" names it in err. secret (the private key):
 * a regular file owned by us with no group/other permission, as sluiced's
 * CA key. O_NONBLOCK: a FIFO must not block the open. Returns the fd, or
 * -errno with err set.
 */
static int file_open_checked(const char *path, const char *what, bool secret, char *err,
			     size_t errlen)
{
	struct stat st;
	int fd, rc;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "control plane %s %s: %s", what, path, strerror(-rc));
		return rc;
	}
	if (fstat(fd, &st)) {
		rc = -errno;
		snprintf(err, errlen, "control plane %s %s: %s", what, path, strerror(-rc));
		goto out_close;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "control plane %s %s: not a regular file", what, path);
		rc = -EINVAL;
		goto out_close;
	}
	if (secret && (st.st_mode & 077)) {
		snprintf(err, errlen, "control plane %s %s: permission %04o is too open: group and "
			 "other must have no access (chmod 600)", what, path,
			 (unsigned)(st.st_mode & 07777));
		rc = -EPERM;
		goto out_close;
	}
	if (secret && st.st_uid != geteuid()) {
		snprintf(err, errlen, "control plane %s %s: owned by uid %u, not %u", what, path,
			 (unsigned)st.st_uid, (unsigned)geteuid());
		rc = -EPERM;
		goto out_close;
	}
	if (st.st_size > CPS_PEM_MAX) {
		snprintf(err, errlen, "control plane %s %s: larger than %d bytes", what, path,
			 CPS_PEM_MAX);
		rc = -EFBIG;
		goto out_close;
	}
	return fd;
out_close:
	close(fd);
	return rc;
}

/* Read a checked PEM file into a BIO (the caller frees it; the bytes of a
 * key are zeroed on the way). 0, or -errno with err set. */
static int pem_bio_read(const char *path, const char *what, bool secret, BIO **ret_bio,
			char *err, size_t errlen)
{
	char *buf;
	size_t len = 0;
	ssize_t n = 0;
	BIO *bio;
	int fd, rc = 0;

	fd = file_open_checked(path, what, secret, err, errlen);
	if (fd < 0)
		return fd;
	buf = malloc(CPS_PEM_MAX + 1);
	if (!buf) {
		close(fd);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	while (len < CPS_PEM_MAX + 1 &&
	       ((n = read(fd, buf + len, CPS_PEM_MAX + 1 - len)) > 0 || (n < 0 && errno == EINTR)))
		if (n > 0)
			len += (size_t)n;
	if (n < 0) {
		rc = -errno;
		snprintf(err, errlen, "control plane %s %s: %s", what, path, strerror(-rc));
	} else if (len > CPS_PEM_MAX) {
		rc = -EFBIG;
		snprintf(err, errlen, "control plane %s %s: larger than %d bytes", what, path,
			 CPS_PEM_MAX);
	}
	close(fd);
	if (!rc) {
		/* a BIO of its own (not a view of buf): buf is wiped right below */
		bio = BIO_new(BIO_s_mem());
		if (!bio || BIO_write(bio, buf, (int)len) != (int)len) {
			BIO_free(bio);
			snprintf(err, errlen, "out of memory");
			rc = -ENOMEM;
		} else {
			*ret_bio = bio;
		}
	}
	explicit_bzero(buf, len);
	free(buf);
	return rc;
}

/* An encrypted key would make OpenSSL (and libcurl) ask for a passphrase. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf, (void)size, (void)rwflag, (void)u;
	return -1;
}

/* The client certificate and key parse and belong together. */
static int client_cert_check(const char *cert_file, const char *key_file, char *err,
			     size_t errlen)
{
	EVP_PKEY *key = NULL;
	X509 *cert = NULL;
	BIO *bio = NULL;
	int rc;

	rc = pem_bio_read(cert_file, "client certificate", false, &bio, err, errlen);
	if (rc)
		return rc;
	cert = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL);
	BIO_free(bio);
	bio = NULL;
	if (!cert) {
		snprintf(err, errlen, "control plane client certificate %s: no PEM certificate in "
			 "it", cert_file);
		rc = -EINVAL;
		goto out;
	}
	rc = pem_bio_read(key_file, "client key", true, &bio, err, errlen);
	if (rc)
		goto out;
	key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
	BIO_free(bio); /* BIO_s_mem: OpenSSL clears the buffer it frees */
	if (!key) {
		snprintf(err, errlen, "control plane client key %s: not an unencrypted PEM private "
			 "key", key_file);
		rc = -EINVAL;
		goto out;
	}
	if (X509_check_private_key(cert, key) != 1) {
		snprintf(err, errlen, "control plane client key %s does not match the certificate "
			 "%s", key_file, cert_file);
		rc = -EINVAL;
		goto out;
	}
	rc = 0;
out:
	ERR_clear_error(); /* failed parses leave entries on this thread's queue */
	EVP_PKEY_free(key);
	X509_free(cert);
	return rc;
}

int cps_opts_check(const struct cps_opts *o, char *err, size_t errlen)
{
	int rc;

	if (!o || !o->url || !o->token || !o->node) {
		snprintf(err, errlen, "control plane: url, token and node are required");
		return -EINVAL;
	}
	if (!*o->token || strlen(o->token) > CPS_TOKEN_MAX ||
	    !printable(o->token, strlen(o->token), false)) {
		snprintf(err, errlen, "control plane token must be 1 to %d printable ASCII bytes "
			 "without spaces", CPS_TOKEN_MAX);
		return -EINVAL;
	}
	if (!*o->node || strlen(o->node) > CPS_NODE_MAX ||
	    !printable(o->node, strlen(o->node), false)) {
		snprintf(err, errlen, "node name must be 1 to %d printable bytes without spaces",
			 CPS_NODE_MAX);
		return -EINVAL;
	}
	pthread_once(&curl_once, curl_init);
	if (curl_init_rc) {
		snprintf(err, errlen, "libcurl: %s", curl_easy_strerror(curl_init_rc));
		return -ENOMEM;
	}
	rc = url_check(o->url, err, errlen);
	if (rc)
		return rc;
	if (!!o->cert_file != !!o->key_file) {
		snprintf(err, errlen, "control plane client certificate and key go together (%s "
			 "without a %s)", o->cert_file ? "a certificate" : "a key",
			 o->cert_file ? "key" : "certificate");
		return -EINVAL;
	}
	if (o->cert_file && strncasecmp(o->url, "https://", 8)) {
		snprintf(err, errlen, "a control plane client certificate needs an https:// URL");
		return -EINVAL;
	}
	if (o->ca_file) {
		rc = file_open_checked(o->ca_file, "CA bundle", false, err, errlen);
		if (rc < 0)
			return rc;
		close(rc);
	}
	if (o->cert_file)
		return client_cert_check(o->cert_file, o->key_file, err, errlen);
	return 0;
}

static int easy_setup(struct cps *c)
{
	CURL *e = c->easy;
	bool ok = true;

	ok = ok && !curl_easy_setopt(e, CURLOPT_URL, c->sync_url);
	ok = ok && !curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	ok = ok && !curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	ok = ok && !curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	ok = ok && !curl_easy_setopt(e, CURLOPT_POST, 1L);
	ok = ok && !curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers);
	ok = ok && !curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)c->connect_timeout_ms);
	ok = ok && !curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)c->timeout_ms);
	ok = ok && !curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)CPS_BODY_MAX);
	ok = ok && !curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, body_write);
	ok = ok && !curl_easy_setopt(e, CURLOPT_USERAGENT, "sluiced-cpsync/1");
	ok = ok && !curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	ok = ok && !curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	if (c->ca_file)
		ok = ok && !curl_easy_setopt(e, CURLOPT_CAINFO, c->ca_file);
	if (c->cert_file) {
		ok = ok && !curl_easy_setopt(e, CURLOPT_SSLCERT, c->cert_file);
		ok = ok && !curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
		ok = ok && !curl_easy_setopt(e, CURLOPT_SSLKEY, c->key_file);
		ok = ok && !curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
	}
	return ok ? 0 : -EINVAL;
}

static void cps_free(struct cps *c)
{
	if (!c)
		return;
	if (c->easy)
		curl_easy_cleanup(c->easy);
	if (c->multi)
		curl_multi_cleanup(c->multi);
	curl_slist_free_all(c->headers);
	if (c->auth_header) {
		explicit_bzero(c->auth_header, strlen(c->auth_header));
		free(c->auth_header);
	}
	free(c->sync_url);
	free(c->node);
	free(c->ca_file);
	free(c->cert_file);
	free(c->key_file);
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

int cps_start(const struct cps_opts *o, const struct cps_hooks *h, struct cps **ret, char *err,
	      size_t errlen)
{
	pthread_condattr_t ca;
	sigset_t all, old;
	struct curl_slist *l;
	struct cps *c;
	size_t ulen;
	int rc;

	if (!o || !h || !h->report || !h->apply || !h->done || !o->url || !o->token ||
	    !o->node) {
		snprintf(err, errlen, "control plane: url, token, node and the report, apply "
			 "and done hooks are required");
		return -EINVAL;
	}
	rc = cps_opts_check(o, err, errlen);
	if (rc)
		return rc;

	c = calloc(1, sizeof(*c));
	if (!c)
		goto out_oom_nofree;
	pthread_mutex_init(&c->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->cond, &ca);
	pthread_condattr_destroy(&ca);
	c->waiters_tail = &c->waiters;
	c->hooks = *h;
	c->interval_ms = o->interval_ms ? o->interval_ms : 5000;
	c->jitter_pct = o->jitter_pct ? o->jitter_pct : 20;
	if (c->jitter_pct > 100)
		c->jitter_pct = 100;
	c->backoff_min_ms = o->backoff_min_ms ? o->backoff_min_ms : 1000;
	c->backoff_max_ms = o->backoff_max_ms ? o->backoff_max_ms : 60000;
	if (c->backoff_max_ms < c->backoff_min_ms)
		c->backoff_max_ms = c->backoff_min_ms;
	c->connect_timeout_ms = o->connect_timeout_ms ? o->connect_timeout_ms : 5000;
	c->timeout_ms = o->timeout_ms ? o->timeout_ms : 10000;
	if (getrandom(&c->rng, sizeof(c->rng), GRND_NONBLOCK) != sizeof(c->rng) || !c->rng)
		c->rng = mono_ms() | 1;

	ulen = strlen(o->url);
	while (ulen && o->url[ulen - 1] == '/')
		ulen--;
	if (asprintf(&c->sync_url, "%.*s/v1/sync", (int)ulen, o->url) < 0) {
		c->sync_url = NULL;
		goto out_oom;
	}
	if (asprintf(&c->auth_header, "Authorization: Bearer %s", o->token) < 0) {
		c->auth_header = NULL;
		goto out_oom;
	}
	c->node = strdup(o->node);
	if (!c->node || (o->ca_file && !(c->ca_file = strdup(o->ca_file))) ||
	    (o->cert_file && !(c->cert_file = strdup(o->cert_file))) ||
	    (o->key_file && !(c->key_file = strdup(o->key_file))))
		goto out_oom;
	/* curl copies header strings into each request */
	l = curl_slist_append(NULL, c->auth_header);
	if (l)
		c->headers = l;
	l = l ? curl_slist_append(l, "Content-Type: application/json") : NULL;
	l = l ? curl_slist_append(l, "Accept: application/json") : NULL;
	l = l ? curl_slist_append(l, "Expect:") : NULL;
	if (!l)
		goto out_oom;
	c->multi = curl_multi_init();
	c->easy = curl_easy_init();
	if (!c->multi || !c->easy)
		goto out_oom;
	if (easy_setup(c)) {
		snprintf(err, errlen, "libcurl refused an option (too old?)");
		rc = -EINVAL;
		goto out_free;
	}
	/* the sync thread takes no signals: the daemon's main thread handles them */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = -pthread_create(&c->thread, NULL, sync_thread, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc) {
		snprintf(err, errlen, "cannot start the sync thread: %s", strerror(-rc));
		goto out_free;
	}
	*ret = c;
	return 0;
out_oom:
	snprintf(err, errlen, "out of memory");
	rc = -ENOMEM;
out_free:
	cps_free(c);
	return rc;
out_oom_nofree:
	snprintf(err, errlen, "out of memory");
	return -ENOMEM;
}

void cps_stop(struct cps *c)
{
	struct cps_waiter *w;

	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	__atomic_store_n(&c->stop, true, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	curl_multi_wakeup(c->multi);
	pthread_join(c->thread, NULL);
	/* the thread completed every waiter on its way out; defensive only */
	pthread_mutex_lock(&c->lock);
	w = waiters_take(c, UINT64_MAX);
	pthread_mutex_unlock(&c->lock);
	waiters_complete(w, false, "stopped");
	cps_free(c);
}

int cps_sync_now(struct cps *c, void (*done_cb)(void *arg, bool ok, const char *error),
		 void *arg)
{
	struct cps_waiter *w;

	if (!c || !done_cb)
		return -EINVAL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->cb = done_cb;
	w->arg = arg;
	pthread_mutex_lock(&c->lock);
	if (c->stop) {
		pthread_mutex_unlock(&c->lock);
		free(w);
		return -ESHUTDOWN;
	}
	if (c->nwaiters >= CPS_WAITERS_MAX) {
		pthread_mutex_unlock(&c->lock);
		free(w);
		return -EAGAIN;
	}
	w->round = c->rounds_started + 1;
	*c->waiters_tail = w;
	c->waiters_tail = &w->next;
	c->nwaiters++;
	c->want_now = true;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	return 0;
}

void cps_get_stats(struct cps *c, struct cps_stats *ret)
{
	pthread_mutex_lock(&c->lock);
	*ret = c->stats;
	pthread_mutex_unlock(&c->lock);
}
