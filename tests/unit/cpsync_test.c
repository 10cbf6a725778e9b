/* SPDX-License-Identifier: MIT */
/*
 * cpsync: the control-plane client against the reference control plane
 * (scripts/sluice-control-plane.py, started per test on loopback port 0 with a
 * temp state file; over TLS with a client certificate for the tls_ tests, with
 * certificates the openssl CLI makes per test), plus pol_load_buffer_ex()
 * (controlplane: secrets) and the response checks reached directly (this file
 * includes cpsync.c).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../../user/cpsync.c"

#define TOKEN "test-token-0123"

/* ---- the reference control plane as a subprocess ---- */

struct cp {
	pid_t pid;
	char dir[64];
	char sync[80], admin[80], url[128];
	bool tls;               /* sync over TLS, client certificate required */
	/* what node_start() gives the client when tls: the CA of the server's
	 * certificate, and a client certificate (cert[0] == 0: none) */
	char ca[96], cert[96], key[96];
};

static const char *script_path(void)
{
	static char path[PATH_MAX];
	char exe[PATH_MAX];
	ssize_t n;

	if (getenv("SLUICE_CONTROL_PLANE"))
		return getenv("SLUICE_CONTROL_PLANE");
	if (!access("scripts/sluice-control-plane.py", R_OK))
		return "scripts/sluice-control-plane.py";
	/* build/tests/cpsync_test -> ../../scripts */
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = '\0';
		*strrchr(exe, '/') = '\0';
		snprintf(path, sizeof(path), "%s/../../scripts/sluice-control-plane.py", exe);
	}
	return path;
}

static void json_field(const char *txt, const char *key, char *out, size_t outlen)
{
	json_t *j = json_loads(txt, 0, NULL);

	cr_assert_not_null(j, "bad JSON: %s", txt);
	snprintf(out, outlen, "%s", json_string_value(json_object_get(j, key)));
	json_decref(j);
}

/*
 * Certificates in dir (openssl CLI; keys 0600): CAs cpca (the server's),
 * clientca (the clients' the server trusts) and otherca; leaves server
 * (cpca, IP:127.0.0.1), node (clientca) and stranger (otherca), as
 * NAME.pem + NAME.key.
 */
static void certs_make(const char *dir)
{
	char cmd[2048];

	snprintf(cmd, sizeof(cmd),
		 "cd '%s' && umask 077 && { "
		 "ca() { openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
		 "-days 2 -subj \"/CN=$1\" -keyout $1.key -out $1.pem "
		 "-addext basicConstraints=critical,CA:TRUE "
		 "-addext keyUsage=critical,keyCertSign,cRLSign; } && "
		 "leaf() { openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
		 "-subj \"/CN=$1\" -keyout $1.key -out $1.csr && printf '%%s\\n' \"$3\" >$1.ext && "
		 "openssl x509 -req -in $1.csr -CA $2.pem -CAkey $2.key -CAcreateserial -days 2 "
		 "-extfile $1.ext -out $1.pem; } && "
		 "ca cpca && ca clientca && ca otherca && "
		 "leaf server cpca subjectAltName=IP:127.0.0.1 && "
		 "leaf node clientca extendedKeyUsage=clientAuth && "
		 "leaf stranger otherca extendedKeyUsage=clientAuth && chmod 600 *.key; "
		 "} >certs.log 2>&1",
		 dir);
	cr_assert_eq(system(cmd), 0, "making test certificates with openssl failed: %s/certs.log",
		     dir);
}

static void cp_launch(struct cp *cp, bool tls)
{
	char state[128], ready[128], buf[512], tcert[96], tkey[96], cca[96];
	const char *argv[24];
	unsigned k = 0;
	int fd;
	ssize_t n = 0;

	memset(cp, 0, sizeof(*cp));
	snprintf(cp->dir, sizeof(cp->dir), "/tmp/cpsync-test-XXXXXX");
	cr_assert_not_null(mkdtemp(cp->dir));
	snprintf(state, sizeof(state), "%s/state.json", cp->dir);
	snprintf(ready, sizeof(ready), "%s/ready", cp->dir);
	argv[k++] = "python3";
	argv[k++] = script_path();
	argv[k++] = "--listen";
	argv[k++] = "127.0.0.1:0";
	argv[k++] = "--token";
	argv[k++] = TOKEN;
	argv[k++] = "--state";
	argv[k++] = state;
	argv[k++] = "--ready-file";
	argv[k++] = ready;
	argv[k++] = "--max-conns";
	argv[k++] = "16";
	if (tls) {
		certs_make(cp->dir);
		cp->tls = true;
		snprintf(tcert, sizeof(tcert), "%s/server.pem", cp->dir);
		snprintf(tkey, sizeof(tkey), "%s/server.key", cp->dir);
		snprintf(cca, sizeof(cca), "%s/clientca.pem", cp->dir);
		snprintf(cp->ca, sizeof(cp->ca), "%s/cpca.pem", cp->dir);
		snprintf(cp->cert, sizeof(cp->cert), "%s/node.pem", cp->dir);
		snprintf(cp->key, sizeof(cp->key), "%s/node.key", cp->dir);
		argv[k++] = "--tls-cert";
		argv[k++] = tcert;
		argv[k++] = "--tls-key";
		argv[k++] = tkey;
		argv[k++] = "--client-ca";
		argv[k++] = cca;
	}
	argv[k] = NULL;
	cp->pid = fork();
	cr_assert(cp->pid >= 0);
	if (!cp->pid) {
		int null = open("/dev/null", O_WRONLY);

		if (null >= 0)
			dup2(null, 1); /* its "listening on" line; errors stay on stderr */
		execvp("python3", (char **)argv);
		_exit(127);
	}
	for (int i = 0; i < 200; i++) { /* 10 s */
		fd = open(ready, O_RDONLY);
		if (fd >= 0) {
			n = read(fd, buf, sizeof(buf) - 1);
			close(fd);
			break;
		}
		usleep(50000);
	}
	cr_assert(n > 0, "control plane did not start");
	buf[n] = '\0';
	json_field(buf, "sync", cp->sync, sizeof(cp->sync));
	json_field(buf, "admin", cp->admin, sizeof(cp->admin));
	snprintf(cp->url, sizeof(cp->url), "%s://%s", tls ? "https" : "http", cp->sync);
}

static void cp_start(struct cp *cp) { cp_launch(cp, false); }
static void cp_start_tls(struct cp *cp) { cp_launch(cp, true); }

static void cp_stop(struct cp *cp)
{
	char cmd[128];
	int st;

	if (cp->pid > 0) {
		kill(cp->pid, SIGTERM);
		for (int i = 0; i < 100 && waitpid(cp->pid, &st, WNOHANG) == 0; i++)
			usleep(50000);
		if (waitpid(cp->pid, &st, WNOHANG) == 0) {
			kill(cp->pid, SIGKILL);
			waitpid(cp->pid, &st, 0);
		}
	}
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", cp->dir);
	cr_expect_eq(system(cmd), 0);
}

struct resp {
	char buf[1 << 20];
	size_t len;
};

static size_t resp_write(char *p, size_t s, size_t n, void *u)
{
	struct resp *r = u;
	size_t k = s * n;

	if (k > sizeof(r->buf) - 1 - r->len)
		k = sizeof(r->buf) - 1 - r->len;
	memcpy(r->buf + r->len, p, k);
	r->len += k;
	r->buf[r->len] = '\0';
	return s * n;
}

/* One admin call; returns the HTTP status, the body in *r (when given). */
static long cp_admin(struct cp *cp, const char *method, const char *path, const char *body,
		     struct resp *r)
{
	static struct resp scratch;
	struct curl_slist *h = curl_slist_append(NULL, "Authorization: Bearer " TOKEN);
	CURL *e = curl_easy_init();
	char url[256];
	long code = 0;

	if (!r)
		r = &scratch;
	r->len = 0;
	r->buf[0] = '\0';
	snprintf(url, sizeof(url), "http://%s%s", cp->admin, path);
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 10000L);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, resp_write);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
	if (body)
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
	cr_assert_eq(curl_easy_perform(e), CURLE_OK, "admin %s %s", method, path);
	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
	curl_easy_cleanup(e);
	curl_slist_free_all(h);
	return code;
}

static const char *POLICY_FMT =
	"version: 1\n"
	"allow:\n"
	"  - host: api.%s.test\n"
	"secrets:\n"
	"  - name: key\n"
	"    placeholder: SLUICE_PH_KEY_0001\n"
	"    source: controlplane:KEY\n"
	"    hosts: [api.%s.test]\n"
	"    in: {headers: [authorization]}\n";

/* PUT a sandbox; returns its config hash in hash (when given). */
static void cp_put(struct cp *cp, const char *id, const char *principal, const char *status,
		   char *hash)
{
	char pol[1024], key[128], path[128], *body;
	json_t *j;
	struct resp *r = malloc(sizeof(*r));

	snprintf(pol, sizeof(pol), POLICY_FMT, principal, principal);
	snprintf(key, sizeof(key), "real-key-of-%s", principal);
	j = json_pack("{s:s, s:s, s:s, s:{s:s, s:s}}", "principal", principal, "status", status,
		      "policy", pol, "secrets", "KEY", key, "OTHER", "other-value");
	body = json_dumps(j, 0);
	json_decref(j);
	snprintf(path, sizeof(path), "/admin/sandboxes/%s", id);
	cr_assert_eq(cp_admin(cp, "PUT", path, body, r), 200, "%s", r->buf);
	if (hash)
		json_field(r->buf, "config_hash", hash, 80);
	free(body);
	free(r);
}

static void cp_fault(struct cp *cp, const char *fault, unsigned ms, bool content_length)
{
	char body[160];

	snprintf(body, sizeof(body), "{\"fault\": \"%s\", \"ms\": %u, \"content_length\": %s}",
		 fault, ms, content_length ? "true" : "false");
	cr_assert_eq(cp_admin(cp, "POST", "/admin/fault", body, NULL), 200);
}

/* ---- a fake daemon: the hooks ---- */

#define NSB 4

struct node {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct cps *cps;
	unsigned nsb;
	char ids[NSB][32];
	char applied[NSB][80];
	char principal[NSB][300];
	char status[NSB][16];
	char key[NSB][128];     /* the KEY secret, as the compiled policy resolved it */
	unsigned applies, dones, oks, fails, rejects;
	char last_error[1024], last_reject[1024];
	unsigned delays[64], ndelays;
	int apply_rc;
};

static void node_init(struct node *n, unsigned nsb)
{
	memset(n, 0, sizeof(*n));
	pthread_mutex_init(&n->mu, NULL);
	pthread_cond_init(&n->cv, NULL);
	n->nsb = nsb;
	for (unsigned i = 0; i < nsb; i++)
		snprintf(n->ids[i], sizeof(n->ids[i]), "sb%u", i + 1);
}

static int hook_report(void *opaque, json_t *arr)
{
	struct node *n = opaque;

	pthread_mutex_lock(&n->mu);
	for (unsigned i = 0; i < n->nsb; i++)
		json_array_append_new(arr, json_pack("{s:s, s:o}", "id", n->ids[i], "applied_hash",
						     n->applied[i][0] ? json_string(n->applied[i])
								      : json_null()));
	pthread_mutex_unlock(&n->mu);
	return 0;
}

static int hook_apply(void *opaque, const struct cps_sandbox_cfg *c, char *err, size_t errlen)
{
	struct node *n = opaque;
	struct pol_error perr;
	struct pol *p = NULL;
	const struct pol_secret *s;
	int rc;

	rc = pol_load_buffer_ex(c->id, c->policy_yaml, c->policy_len, cps_secret_value,
				(void *)c, &p, &perr);
	if (rc) {
		snprintf(err, errlen, "policy %u:%u: %s", perr.line, perr.col, perr.msg);
		return rc;
	}
	s = pol_secret_at(p, 0);
	pthread_mutex_lock(&n->mu);
	rc = n->apply_rc;
	for (unsigned i = 0; !rc && i < n->nsb; i++) {
		if (strcmp(n->ids[i], c->id))
			continue;
		snprintf(n->applied[i], sizeof(n->applied[i]), "%s", c->config_hash);
		snprintf(n->principal[i], sizeof(n->principal[i]), "%s", c->principal);
		snprintf(n->status[i], sizeof(n->status[i]), "%s", c->status);
		snprintf(n->key[i], sizeof(n->key[i]), "%.*s",
			 s && s->value ? (int)s->value_len : 0,
			 s && s->value ? (const char *)s->value : "");
	}
	if (rc)
		snprintf(err, errlen, "refused by the test");
	else
		n->applies++;
	pthread_cond_broadcast(&n->cv);
	pthread_mutex_unlock(&n->mu);
	pol_unref(p);
	return rc;
}

static void hook_rejected(void *opaque, const char *id, const char *error)
{
	struct node *n = opaque;

	pthread_mutex_lock(&n->mu);
	n->rejects++;
	snprintf(n->last_reject, sizeof(n->last_reject), "%s: %s", id, error);
	pthread_mutex_unlock(&n->mu);
}

static void hook_done(void *opaque, bool ok, const char *error)
{
	struct node *n = opaque;
	struct cps *c = __atomic_load_n(&n->cps, __ATOMIC_ACQUIRE);
	struct cps_stats st;

	if (c)
		cps_get_stats(c, &st);
	pthread_mutex_lock(&n->mu);
	n->dones++;
	if (ok) {
		n->oks++;
	} else {
		n->fails++;
		snprintf(n->last_error, sizeof(n->last_error), "%s", error);
	}
	if (c && n->ndelays < 64)
		n->delays[n->ndelays++] = st.next_delay_ms;
	pthread_cond_broadcast(&n->cv);
	pthread_mutex_unlock(&n->mu);
}

static uint64_t now_ms(void)
{
	return mono_ms();
}

/* Wait (bounded) until *counter >= target; returns whether it got there. */
static bool node_wait(struct node *n, unsigned *counter, unsigned target, unsigned timeout_ms)
{
	uint64_t end = now_ms() + timeout_ms;
	bool ok;

	pthread_mutex_lock(&n->mu);
	while (*counter < target && now_ms() < end) {
		pthread_mutex_unlock(&n->mu);
		usleep(5000);
		pthread_mutex_lock(&n->mu);
	}
	ok = *counter >= target;
	pthread_mutex_unlock(&n->mu);
	return ok;
}

static unsigned node_get(struct node *n, unsigned *counter)
{
	unsigned v;

	pthread_mutex_lock(&n->mu);
	v = *counter;
	pthread_mutex_unlock(&n->mu);
	return v;
}

static struct cps *node_start(struct node *n, struct cp *cp, struct cps_opts *o)
{
	struct cps_hooks h = { .report = hook_report, .apply = hook_apply,
			       .rejected = hook_rejected, .done = hook_done, .opaque = n };
	struct cps_opts d = { .url = cp->url, .token = TOKEN, .node = "node-a",
			      .interval_ms = 100, .jitter_pct = 1, .backoff_min_ms = 20,
			      .backoff_max_ms = 160, .timeout_ms = 2000 };
	struct cps *c = NULL;
	char err[256];

	if (o) {
		if (!o->url)
			o->url = d.url;
		if (!o->token)
			o->token = d.token;
		if (!o->node)
			o->node = d.node;
		d = *o;
	}
	if (cp->tls) {
		if (!d.ca_file)
			d.ca_file = cp->ca;
		if (!d.cert_file && cp->cert[0]) {
			d.cert_file = cp->cert;
			d.key_file = cp->key;
		}
	}
	cr_assert_eq(cps_start(&d, &h, &c, err, sizeof(err)), 0, "%s", err);
	__atomic_store_n(&n->cps, c, __ATOMIC_RELEASE);
	return c;
}

static void node_stop(struct node *n, struct cps *c)
{
	__atomic_store_n(&n->cps, NULL, __ATOMIC_RELEASE);
	cps_stop(c);
}

/* ---- tests against the reference control plane ---- */

static void setup(void)
{
	unsetenv("http_proxy");
	unsetenv("HTTP_PROXY");
	unsetenv("https_proxy");
	unsetenv("HTTPS_PROXY");
	unsetenv("all_proxy");
	unsetenv("ALL_PROXY");
}

TestSuite(cpsync, .init = setup, .timeout = 120);

Test(cpsync, happy_path_and_unchanged)
{
	struct cp cp;
	struct node n;
	struct cps *c;
	char hash[80], recomputed[80];
	struct resp *r = malloc(sizeof(*r));
	struct cps_stats st;

	cp_start(&cp);
	cp_put(&cp, "sb1", "alice", "active", hash);
	node_init(&n, 1);
	c = node_start(&n, &cp, NULL);
	cr_assert(node_wait(&n, &n.applies, 1, 10000), "%s", n.last_error);
	pthread_mutex_lock(&n.mu);
	cr_expect_str_eq(n.principal[0], "alice");
	cr_expect_str_eq(n.status[0], "active");
	cr_expect_str_eq(n.applied[0], hash);
	cr_expect_str_eq(n.key[0], "real-key-of-alice", "controlplane:KEY resolved");
	pthread_mutex_unlock(&n.mu);

	/* the same hash, computed here from the fields */
	{
		char pol[1024];
		const char *names[] = { "OTHER", "KEY" }, *vals[] = { "other-value",
								      "real-key-of-alice" };
		size_t lens[] = { 11, 17 };

		snprintf(pol, sizeof(pol), POLICY_FMT, "alice", "alice");
		cr_assert_eq(cps_config_hash("sb1", "active", "alice", pol, strlen(pol), names,
					     vals, lens, 2, recomputed), 0);
		cr_expect_str_eq(recomputed, hash);
	}

	/* unchanged: more rounds, no more applies */
	unsigned oks = node_get(&n, &n.oks);

	cr_assert(node_wait(&n, &n.oks, oks + 3, 10000));
	cr_expect_eq(node_get(&n, &n.applies), 1);
	cr_expect_eq(node_get(&n, &n.fails), 0);
	cps_get_stats(c, &st);
	cr_expect(st.attempts >= oks + 3, "%llu", (unsigned long long)st.attempts);
	cr_expect_eq(st.failures, 0);
	cr_expect(st.last_success_unix_ms > 0);
	cr_expect(st.next_delay_ms >= 99 && st.next_delay_ms <= 101, "%u", st.next_delay_ms);

	/* the control plane saw the node report the applied hash, and answered unchanged */
	cr_assert_eq(cp_admin(&cp, "GET", "/admin/log", NULL, r), 200);
	cr_expect(strstr(r->buf, "\"node\": \"node-a\""));
	cr_expect(strstr(r->buf, "\"status\": \"unchanged\""));
	cr_expect(strstr(r->buf, hash));
	cr_expect_null(strstr(r->buf, "real-key-of"), "the log holds no secrets");
	node_stop(&n, c);
	cp_stop(&cp);
	free(r);
}

Test(cpsync, unknown_and_unanswered_sandboxes)
{
	struct cp cp;
	struct node n;
	struct cps *c;

	cp_start(&cp);
	cp_put(&cp, "sb1", "alice", "active", NULL);
	cp_put(&cp, "elsewhere", "zed", "active", NULL);
	node_init(&n, 2); /* sb2 is unknown to the control plane */
	c = node_start(&n, &cp, NULL);
	cr_assert(node_wait(&n, &n.oks, 2, 10000), "%s", n.last_error);
	cr_expect_eq(node_get(&n, &n.applies), 1);
	cr_expect_eq(node_get(&n, &n.fails), 0, "an unanswered sandbox is not a failed round");
	pthread_mutex_lock(&n.mu);
	cr_expect_str_eq(n.applied[1], "");
	cr_expect(strstr(n.last_reject, "sb2: the control plane did not answer"), "%s",
		  n.last_reject);
	pthread_mutex_unlock(&n.mu);
	node_stop(&n, c);
	cp_stop(&cp);
}

Test(cpsync, revoked_and_disabled_are_applied)
{
	struct cp cp;
	struct node n;
	struct cps *c;

	cp_start(&cp);
	cp_put(&cp, "sb1", "alice", "active", NULL);
	node_init(&n, 1);
	c = node_start(&n, &cp, NULL);
	cr_assert(node_wait(&n, &n.applies, 1, 10000));
	cp_put(&cp, "sb1", "alice", "revoked", NULL);
	cr_assert(node_wait(&n, &n.applies, 2, 10000));
	pthread_mutex_lock(&n.mu);
	cr_expect_str_eq(n.status[0], "revoked");
	pthread_mutex_unlock(&n.mu);
	cp_put(&cp, "sb1", "alice", "disabled", NULL);
	cr_assert(node_wait(&n, &n.applies, 3, 10000));
	pthread_mutex_lock(&n.mu);
	cr_expect_str_eq(n.status[0], "disabled");
	pthread_mutex_unlock(&n.mu);
	node_stop(&n, c);
	cp_stop(&cp);
}

/*
 * A fault: the good config of alice is applied; the control plane changes to
 * bob and breaks. Rounds fail (done ok=false), apply is never called, alice
 * stays, the delay doubles up to the maximum; clearing the fault recovers.
 */
static void fault_case_ex(const char *fault, unsigned ms, bool content_length,
			  const char *want, bool tls)
{
	struct cp cp;
	struct node n;
	struct cps *c;
	struct cps_opts o = { .interval_ms = 100, .jitter_pct = 1, .backoff_min_ms = 20,
			      .backoff_max_ms = 160, .timeout_ms = 500 };
	struct cps_stats st;
	unsigned fails0, d;

	cp_launch(&cp, tls);
	cp_put(&cp, "sb1", "alice", "active", NULL);
	node_init(&n, 1);
	c = node_start(&n, &cp, &o);
	cr_assert(node_wait(&n, &n.applies, 1, 10000), "%s", n.last_error);

	cp_fault(&cp, fault, ms, content_length);
	cp_put(&cp, "sb1", "bob", "active", NULL);
	fails0 = node_get(&n, &n.fails);
	cr_assert(node_wait(&n, &n.fails, fails0 + 5, 20000), "%s: only %u failures", fault,
		  node_get(&n, &n.fails));
	cps_get_stats(c, &st);
	cr_expect(st.consecutive_failures >= 5, "%s: %u", fault, st.consecutive_failures);
	cr_expect(st.next_delay_ms >= 158 && st.next_delay_ms <= 162, "%s: backoff %u", fault,
		  st.next_delay_ms);
	pthread_mutex_lock(&n.mu);
	cr_expect_eq(n.applies, 1, "%s: apply called on a failed round", fault);
	cr_expect_str_eq(n.principal[0], "alice", "%s: last good kept", fault);
	cr_expect_str_eq(n.key[0], "real-key-of-alice");
	cr_expect(strstr(n.last_error, want), "%s: error '%s' lacks '%s'", fault, n.last_error,
		  want);
	/* the backoff doubled: 20, 40, 80, 160 (+-1%) somewhere in the record */
	d = 0;
	for (unsigned i = 0; i + 3 < n.ndelays; i++)
		if (n.delays[i] >= 19 && n.delays[i] <= 21 && n.delays[i + 1] >= 39 &&
		    n.delays[i + 1] <= 41 && n.delays[i + 2] >= 79 && n.delays[i + 2] <= 81 &&
		    n.delays[i + 3] >= 158 && n.delays[i + 3] <= 162)
			d++;
	cr_expect_eq(d, 1, "%s: no 20/40/80/160 backoff sequence", fault);
	pthread_mutex_unlock(&n.mu);

	cp_fault(&cp, "none", 0, false);
	cr_assert(node_wait(&n, &n.applies, 2, 20000), "%s: no recovery: %s", fault, n.last_error);
	pthread_mutex_lock(&n.mu);
	cr_expect_str_eq(n.principal[0], "bob");
	cr_expect_str_eq(n.key[0], "real-key-of-bob");
	pthread_mutex_unlock(&n.mu);
	cr_assert(node_wait(&n, &n.oks, node_get(&n, &n.oks) + 1, 10000));
	cps_get_stats(c, &st);
	cr_expect_eq(st.consecutive_failures, 0);
	cr_expect(st.next_delay_ms >= 99 && st.next_delay_ms <= 101, "%u", st.next_delay_ms);
	node_stop(&n, c);
	cp_stop(&cp);
}

static void fault_case(const char *fault, unsigned ms, bool content_length, const char *want)
{
	fault_case_ex(fault, ms, content_length, want, false);
}

Test(cpsync, fault_500) { fault_case("500", 0, false, "HTTP 500"); }
Test(cpsync, fault_malformed) { fault_case("malformed", 0, false, "invalid JSON"); }
Test(cpsync, fault_oversized) { fault_case("oversized", 0, false, "larger than 4194304"); }
Test(cpsync, fault_oversized_content_length)
{
	fault_case("oversized", 0, true, "larger than 4194304");
}
Test(cpsync, fault_wrong_hash) { fault_case("wrong_hash", 0, false, "config_hash mismatch"); }
Test(cpsync, fault_down) { fault_case("down", 0, false, "control plane: "); }
Test(cpsync, fault_slow_beyond_timeout) { fault_case("slow", 1500, false, "timed out"); }
Test(cpsync, fault_hang) { fault_case("hang", 0, false, "timed out"); }

/* the same faults over TLS with a client certificate */
Test(cpsync, tls_fault_500) { fault_case_ex("500", 0, false, "HTTP 500", true); }
Test(cpsync, tls_fault_malformed) { fault_case_ex("malformed", 0, false, "invalid JSON", true); }
Test(cpsync, tls_fault_oversized)
{
	fault_case_ex("oversized", 0, false, "larger than 4194304", true);
}
Test(cpsync, tls_fault_oversized_content_length)
{
	fault_case_ex("oversized", 0, true, "larger than 4194304", true);
}
Test(cpsync, tls_fault_wrong_hash)
{
	fault_case_ex("wrong_hash", 0, false, "config_hash mismatch", true);
}
Test(cpsync, tls_fault_down) { fault_case_ex("down", 0, false, "control plane: ", true); }
Test(cpsync, tls_fault_slow_beyond_timeout)
{
	fault_case_ex("slow", 1500, false, "timed out", true);
}
Test(cpsync, tls_fault_hang) { fault_case_ex("hang", 0, false, "timed out", true); }

/*
 * Mutual TLS: with the client certificate the rounds work; without one,
 * with one from another CA, or trusting another CA for the server, every
 * round fails in the handshake, nothing is applied, and the control plane
 * never saw a request.
 */
Test(cpsync, tls_client_certificate)
{
	struct cp cp;
	struct node n;
	struct cps *c;
	struct resp *r = malloc(sizeof(*r));
	char other_ca[96], stranger[96], stranger_key[96];
	struct {
		const char *what, *ca, *cert, *key, *want;
	} bad[] = {
		{ "no client certificate", NULL, "", "", "alert certificate required" },
		{ "a client certificate of another CA", NULL, stranger, stranger_key,
		  "alert unknown ca" },
		{ "the server not trusted", other_ca, NULL, NULL, "SSL certificate problem" },
	};

	cp_start_tls(&cp);
	snprintf(other_ca, sizeof(other_ca), "%s/otherca.pem", cp.dir);
	snprintf(stranger, sizeof(stranger), "%s/stranger.pem", cp.dir);
	snprintf(stranger_key, sizeof(stranger_key), "%s/stranger.key", cp.dir);
	cp_put(&cp, "sb1", "alice", "active", NULL);

	node_init(&n, 1);
	c = node_start(&n, &cp, NULL);
	cr_assert(node_wait(&n, &n.applies, 1, 10000), "%s", n.last_error);
	pthread_mutex_lock(&n.mu);
	cr_expect_str_eq(n.key[0], "real-key-of-alice");
	pthread_mutex_unlock(&n.mu);
	node_stop(&n, c);

	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct cps_opts o = { .interval_ms = 100, .jitter_pct = 1, .backoff_min_ms = 20,
				      .backoff_max_ms = 40, .ca_file = bad[i].ca };
		char cert[96], key[96];

		snprintf(cert, sizeof(cert), "%s", cp.cert);
		snprintf(key, sizeof(key), "%s", cp.key);
		if (bad[i].cert) {
			snprintf(cp.cert, sizeof(cp.cert), "%s", bad[i].cert);
			snprintf(cp.key, sizeof(cp.key), "%s", bad[i].key);
		}
		cr_assert_eq(cp_admin(&cp, "DELETE", "/admin/log", NULL, NULL), 200);
		node_init(&n, 1);
		c = node_start(&n, &cp, &o);
		cr_assert(node_wait(&n, &n.fails, 2, 10000), "%s", bad[i].what);
		node_stop(&n, c);
		cr_expect_eq(n.applies, 0, "%s: applied", bad[i].what);
		cr_expect(strstr(n.last_error, bad[i].want), "%s: '%s' lacks '%s'", bad[i].what,
			  n.last_error, bad[i].want);
		cr_assert_eq(cp_admin(&cp, "GET", "/admin/log", NULL, r), 200);
		cr_expect_str_eq(r->buf, "{\"requests\": []}", "%s: a request got through",
				 bad[i].what);
		snprintf(cp.cert, sizeof(cp.cert), "%s", cert);
		snprintf(cp.key, sizeof(cp.key), "%s", key);
	}
	cp_stop(&cp);
	free(r);
}

Test(cpsync, slow_within_timeout)
{
	struct cp cp;
	struct node n;
	struct cps *c;
	struct cps_opts o = { .interval_ms = 100, .jitter_pct = 1, .timeout_ms = 3000 };

	cp_start(&cp);
	cp_put(&cp, "sb1", "alice", "active", NULL);
	cp_fault(&cp, "slow", 300, false);
	node_init(&n, 1);
	c = node_start(&n, &cp, &o);
	cr_assert(node_wait(&n, &n.applies, 1, 10000), "%s", n.last_error);
	cr_expect_eq(node_get(&n, &n.fails), 0);
	node_stop(&n, c);
	cp_stop(&cp);
}

Test(cpsync, wrong_token)
{
	struct cp cp;
	struct node n;
	struct cps *c;
	struct cps_opts o = { .token = "not-the-token", .interval_ms = 100, .jitter_pct = 1,
			      .backoff_min_ms = 20, .backoff_max_ms = 40 };

	cp_start(&cp);
	cp_put(&cp, "sb1", "alice", "active", NULL);
	node_init(&n, 1);
	c = node_start(&n, &cp, &o);
	cr_assert(node_wait(&n, &n.fails, 2, 10000));
	cr_expect_eq(node_get(&n, &n.applies), 0);
	pthread_mutex_lock(&n.mu);
	cr_expect(strstr(n.last_error, "HTTP 401 (check the token)"), "%s", n.last_error);
	pthread_mutex_unlock(&n.mu);
	node_stop(&n, c);
	cp_stop(&cp);
}

Test(cpsync, apply_refused_keeps_failing)
{
	struct cp cp;
	struct node n;
	struct cps *c;

	cp_start(&cp);
	cp_put(&cp, "sb1", "alice", "active", NULL);
	node_init(&n, 1);
	n.apply_rc = -EINVAL;
	c = node_start(&n, &cp, NULL);
	cr_assert(node_wait(&n, &n.fails, 2, 10000));
	pthread_mutex_lock(&n.mu);
	cr_expect(strstr(n.last_error, "sandbox sb1: refused by the test"), "%s", n.last_error);
	cr_expect_str_eq(n.applied[0], "");
	n.apply_rc = 0;
	pthread_mutex_unlock(&n.mu);
	cr_assert(node_wait(&n, &n.applies, 1, 10000));
	node_stop(&n, c);
	cp_stop(&cp);
}

/* ---- sync_now ---- */

struct waiter {
	struct node *n;
	pthread_mutex_t mu;
	unsigned calls, misses, oks;
	char want[64];
	char error[256];
};

static void on_synced(void *arg, bool ok, const char *error)
{
	struct waiter *w = arg;
	bool hit;

	/* the barrier: the config the caller asked about is already applied */
	pthread_mutex_lock(&w->n->mu);
	hit = !strcmp(w->n->principal[0], w->want) && w->n->key[0][0] &&
	      !strcmp(w->n->key[0] + strlen("real-key-of-"), w->want);
	pthread_mutex_unlock(&w->n->mu);
	pthread_mutex_lock(&w->mu);
	w->calls++;
	if (ok)
		w->oks++;
	if (!ok || !hit)
		w->misses++;
	snprintf(w->error, sizeof(w->error), "%s", error ? error : "");
	pthread_mutex_unlock(&w->mu);
}

static bool waiter_wait(struct waiter *w, unsigned calls, unsigned timeout_ms)
{
	uint64_t end = now_ms() + timeout_ms;
	bool ok;

	for (;;) {
		pthread_mutex_lock(&w->mu);
		ok = w->calls >= calls;
		pthread_mutex_unlock(&w->mu);
		if (ok || now_ms() >= end)
			return ok;
		usleep(1000);
	}
}

Test(cpsync, sync_now_barrier_100)
{
	struct cp cp;
	struct node n;
	struct cps *c;
	/* a long interval: only sync_now moves things */
	struct cps_opts o = { .interval_ms = 60000, .jitter_pct = 1 };
	struct waiter w = { .n = &n };
	char who[64];

	pthread_mutex_init(&w.mu, NULL);
	cp_start(&cp);
	cp_put(&cp, "sb1", "user0", "active", NULL);
	node_init(&n, 1);
	c = node_start(&n, &cp, &o);
	cr_assert(node_wait(&n, &n.applies, 1, 10000), "%s", n.last_error);
	for (unsigned i = 1; i <= 100; i++) {
		snprintf(who, sizeof(who), "user%u", i);
		cp_put(&cp, "sb1", who, "active", NULL); /* the reassignment */
		pthread_mutex_lock(&w.mu);
		snprintf(w.want, sizeof(w.want), "%s", who);
		pthread_mutex_unlock(&w.mu);
		cr_assert_eq(cps_sync_now(c, on_synced, &w), 0);
		cr_assert(waiter_wait(&w, i, 10000), "waiter %u never completed", i);
	}
	cr_expect_eq(w.calls, 100);
	cr_expect_eq(w.oks, 100, "%s", w.error);
	cr_expect_eq(w.misses, 0, "%u of 100 callbacks ran before the new principal applied",
		     w.misses);
	cr_expect_eq(node_get(&n, &n.applies), 101);
	node_stop(&n, c);
	cp_stop(&cp);
}

/* sync_now waiters registered while a round is already running wait for the next one */
Test(cpsync, sync_now_during_round_waits_for_next)
{
	struct cp cp;
	struct node n;
	struct cps *c;
	struct cps_opts o = { .interval_ms = 60000, .jitter_pct = 1, .timeout_ms = 5000 };
	struct waiter w = { .n = &n };
	struct resp *r = malloc(sizeof(*r));

	pthread_mutex_init(&w.mu, NULL);
	cp_start(&cp);
	cp_put(&cp, "sb1", "alice", "active", NULL);
	node_init(&n, 1);
	c = node_start(&n, &cp, &o);
	cr_assert(node_wait(&n, &n.applies, 1, 10000));
	/* a slow round in flight, started before the change */
	cp_fault(&cp, "slow", 600, false);
	snprintf(w.want, sizeof(w.want), "alice");
	cr_assert_eq(cps_sync_now(c, on_synced, &w), 0);
	for (int i = 0; i < 400; i++) { /* until the control plane has seen it */
		cr_assert_eq(cp_admin(&cp, "GET", "/admin/log", NULL, r), 200);
		if (strstr(r->buf, "\"fault\": \"slow\""))
			break;
		usleep(5000);
	}
	cp_put(&cp, "sb1", "bob", "active", NULL);
	cp_fault(&cp, "none", 0, false);
	{
		struct waiter w2 = { .n = &n };

		pthread_mutex_init(&w2.mu, NULL);
		snprintf(w2.want, sizeof(w2.want), "bob");
		cr_assert_eq(cps_sync_now(c, on_synced, &w2), 0);
		cr_assert(waiter_wait(&w2, 1, 10000));
		cr_expect_eq(w2.misses, 0, "second waiter completed by the round already running");
		cr_assert(waiter_wait(&w, 1, 10000));
		cr_expect_eq(w.calls, 1);
	}
	node_stop(&n, c);
	cp_stop(&cp);
	free(r);
}

Test(cpsync, hang_completes_waiter_with_failure)
{
	struct cp cp;
	struct node n;
	struct cps *c;
	struct cps_opts o = { .interval_ms = 60000, .jitter_pct = 1, .timeout_ms = 300,
			      .backoff_min_ms = 60000, .backoff_max_ms = 60000 };
	struct waiter w = { .n = &n };
	uint64_t t0;

	pthread_mutex_init(&w.mu, NULL);
	cp_start(&cp);
	cp_put(&cp, "sb1", "alice", "active", NULL);
	node_init(&n, 1);
	c = node_start(&n, &cp, &o);
	cr_assert(node_wait(&n, &n.applies, 1, 10000));
	cp_fault(&cp, "hang", 0, false);
	cp_put(&cp, "sb1", "bob", "active", NULL);
	snprintf(w.want, sizeof(w.want), "bob");
	t0 = now_ms();
	cr_assert_eq(cps_sync_now(c, on_synced, &w), 0);
	cr_assert(waiter_wait(&w, 1, 5000), "waiter blocked by a hanging control plane");
	cr_expect(now_ms() - t0 < 3000);
	cr_expect_eq(w.oks, 0);
	cr_expect(strstr(w.error, "timed out"), "%s", w.error);
	cr_expect_eq(node_get(&n, &n.applies), 1);
	/* sync_now skips the (long) backoff */
	cp_fault(&cp, "none", 0, false);
	cr_assert_eq(cps_sync_now(c, on_synced, &w), 0);
	cr_assert(waiter_wait(&w, 2, 5000));
	cr_expect_eq(w.oks, 1, "%s", w.error);
	cr_expect_eq(w.misses, 1);
	node_stop(&n, c);
	cp_stop(&cp);
}

Test(cpsync, stop_completes_pending_waiters)
{
	struct cp cp;
	struct node n;
	struct cps *c;
	struct cps_opts o = { .interval_ms = 60000, .jitter_pct = 1, .timeout_ms = 30000 };
	struct waiter w = { .n = &n };
	uint64_t t0;

	pthread_mutex_init(&w.mu, NULL);
	cp_start(&cp);
	cp_put(&cp, "sb1", "alice", "active", NULL);
	node_init(&n, 1);
	c = node_start(&n, &cp, &o);
	cr_assert(node_wait(&n, &n.applies, 1, 10000));
	cp_fault(&cp, "hang", 0, false);
	for (int i = 0; i < 5; i++)
		cr_assert_eq(cps_sync_now(c, on_synced, &w), 0);
	usleep(200000); /* a round is hanging now */
	t0 = now_ms();
	node_stop(&n, c);
	cr_expect(now_ms() - t0 < 2000, "cps_stop took %llu ms",
		  (unsigned long long)(now_ms() - t0));
	cr_expect_eq(w.calls, 5, "every waiter exactly once");
	cr_expect_eq(w.oks, 0);
	cr_expect_str_eq(w.error, "stopped");
	cp_stop(&cp);
}

/* ---- option checks ---- */

static int no_report(void *o, json_t *a) { return 0; }
static int no_apply(void *o, const struct cps_sandbox_cfg *c, char *e, size_t l) { return 0; }
static void no_done(void *o, bool ok, const char *e) {}

Test(cpsync, start_refuses_bad_options)
{
	struct cps_hooks h = { .report = no_report, .apply = no_apply, .done = no_done };
	struct { const char *url, *token, *node, *want; } bad[] = {
		{ "http://cp.example.test", "t", "n", "https://" },
		{ "http://10.0.0.1:80", "t", "n", "https://" },
		{ "ftp://127.0.0.1", "t", "n", "https://" },
		{ "https://cp.test/?x=1", "t", "n", "no query" },
		{ "https://u:p@cp.test/", "t", "n", "user info" },
		{ "not a url", "t", "n", "not a valid URL" },
		{ "https://cp.test", "", "n", "token" },
		{ "https://cp.test", "a b", "n", "token" },
		{ "https://cp.test", "a\r\nX: y", "n", "token" },
		{ "https://cp.test", "t", "", "node name" },
	};
	struct cps *c = NULL;
	char err[256];

	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct cps_opts o = { .url = bad[i].url, .token = bad[i].token,
				      .node = bad[i].node };

		err[0] = '\0';
		cr_expect_eq(cps_start(&o, &h, &c, err, sizeof(err)), -EINVAL, "%s", bad[i].url);
		cr_expect(strstr(err, bad[i].want), "%u: '%s' lacks '%s'", i, err, bad[i].want);
		cr_expect_null(c);
	}
	/* https anywhere, http to loopback: accepted (nothing is listening) */
	{
		struct cps_opts o = { .url = "http://127.0.0.1:1/", .token = "t", .node = "n",
				      .connect_timeout_ms = 100 };

		cr_assert_eq(cps_start(&o, &h, &c, err, sizeof(err)), 0, "%s", err);
		cr_expect_str_eq(c->sync_url, "http://127.0.0.1:1/v1/sync");
		cps_stop(c);
	}
}

/*
 * The client certificate options: both or neither, https only, readable
 * regular files, a certificate and an unencrypted key that match, the key
 * private to us. cps_opts_check() and cps_start() give the same answer.
 */
Test(cpsync, client_cert_options)
{
	struct cps_hooks h = { .report = no_report, .apply = no_apply, .done = no_done };
	char dir[64] = "/tmp/cpsync-certs-XXXXXX", cmd[512], f[12][128];
	enum { CERT, KEY, OTHER_KEY, OPEN_KEY, GROUP_KEY, ENC_KEY, JUNK, CA, NONE, KEY_MISSING };
	static const char *const names[] = { "node.pem", "node.key", "stranger.key",
					     "open.key", "group.key", "enc.key", "junk.pem",
					     "cpca.pem", "none.pem", "none.key" };
	struct cps *c = NULL;
	char err[512];
	struct {
		const char *url;
		int cert, key, ca; /* index in f, or -1 */
		int rc;
		const char *want;
	} cases[] = {
		{ "https://cp.test", CERT, -1, -1, -EINVAL, "go together (a certificate without" },
		{ "https://cp.test", -1, KEY, -1, -EINVAL, "go together (a key without" },
		{ "http://127.0.0.1:1", CERT, KEY, -1, -EINVAL, "needs an https:// URL" },
		{ "https://cp.test", NONE, KEY, -1, -ENOENT, "client certificate " },
		{ "https://cp.test", CERT, KEY_MISSING, -1, -ENOENT, "client key " },
		{ "https://cp.test", CERT, KEY, NONE, -ENOENT, "CA bundle " },
		{ "https://cp.test", 11, KEY, -1, -EINVAL, "not a regular file" },
		{ "https://cp.test", CERT, OPEN_KEY, -1, -EPERM, "permission 0644 is too open" },
		{ "https://cp.test", CERT, GROUP_KEY, -1, -EPERM, "permission 0640 is too open" },
		{ "https://cp.test", CERT, OTHER_KEY, -1, -EINVAL, "does not match the cert" },
		{ "https://cp.test", JUNK, KEY, -1, -EINVAL, "no PEM certificate" },
		{ "https://cp.test", CERT, JUNK, -1, -EINVAL, "not an unencrypted PEM private key" },
		{ "https://cp.test", CERT, ENC_KEY, -1, -EINVAL, "not an unencrypted PEM" },
	};

	cr_assert_not_null(mkdtemp(dir));
	certs_make(dir);
	for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		snprintf(f[i], sizeof(f[i]), "%s/%s", dir, names[i]);
	snprintf(f[11], sizeof(f[11]), "%s", dir); /* a directory */
	snprintf(cmd, sizeof(cmd),
		 "cd '%s' && cp node.key open.key && chmod 644 open.key && cp node.key group.key && "
		 "chmod 640 group.key && echo junk >junk.pem && chmod 600 junk.pem && "
		 "openssl pkey -in node.key -aes256 -passout pass:secret -out enc.key "
		 "2>/dev/null && chmod 600 enc.key", dir);
	cr_assert_eq(system(cmd), 0);

	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct cps_opts o = { .url = cases[i].url, .token = "t", .node = "n",
				      .cert_file = cases[i].cert >= 0 ? f[cases[i].cert] : NULL,
				      .key_file = cases[i].key >= 0 ? f[cases[i].key] : NULL,
				      .ca_file = cases[i].ca >= 0 ? f[cases[i].ca] : NULL };

		err[0] = '\0';
		cr_expect_eq(cps_opts_check(&o, err, sizeof(err)), cases[i].rc, "%u: %s", i, err);
		cr_expect(strstr(err, cases[i].want), "%u: '%s' lacks '%s'", i, err, cases[i].want);
		err[0] = '\0';
		cr_expect_eq(cps_start(&o, &h, &c, err, sizeof(err)), cases[i].rc, "%u: %s", i, err);
		cr_expect(strstr(err, cases[i].want), "%u: '%s' lacks '%s'", i, err, cases[i].want);
		cr_expect_null(c);
	}
	/* the error names the file */
	{
		struct cps_opts o = { .url = "https://cp.test", .token = "t", .node = "n",
				      .cert_file = f[CERT], .key_file = f[OPEN_KEY] };

		cps_opts_check(&o, err, sizeof(err));
		cr_expect(strstr(err, f[OPEN_KEY]), "%s", err);
	}
	/* not ours: refused like sluiced's CA key (only root can make one here) */
	if (geteuid() == 0) {
		struct cps_opts o = { .url = "https://cp.test", .token = "t", .node = "n",
				      .cert_file = f[CERT], .key_file = f[GROUP_KEY] };

		cr_assert_eq(chmod(f[GROUP_KEY], 0600), 0);
		cr_assert_eq(chown(f[GROUP_KEY], 1, 1), 0);
		cr_expect_eq(cps_opts_check(&o, err, sizeof(err)), -EPERM, "%s", err);
		cr_expect(strstr(err, "owned by uid 1"), "%s", err);
	} else {
		/* unreadable for us (root reads anything) */
		struct cps_opts o = { .url = "https://cp.test", .token = "t", .node = "n",
				      .cert_file = f[CERT], .key_file = f[KEY] };

		cr_assert_eq(chmod(f[CERT], 0), 0);
		cr_expect_eq(cps_opts_check(&o, err, sizeof(err)), -EACCES, "%s", err);
		cr_expect(strstr(err, "Permission denied"), "%s", err);
		cr_assert_eq(chmod(f[CERT], 0600), 0);
	}
	/* good: checked, started, the files kept for libcurl */
	{
		struct cps_opts o = { .url = "https://127.0.0.1:1", .token = "t", .node = "n",
				      .cert_file = f[CERT], .key_file = f[KEY], .ca_file = f[CA],
				      .connect_timeout_ms = 100 };

		cr_expect_eq(cps_opts_check(&o, err, sizeof(err)), 0, "%s", err);
		cr_assert_eq(cps_start(&o, &h, &c, err, sizeof(err)), 0, "%s", err);
		cr_expect_str_eq(c->cert_file, f[CERT]);
		cr_expect_str_eq(c->key_file, f[KEY]);
		cr_expect_str_eq(c->ca_file, f[CA]);
		cps_stop(c);
	}
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_expect_eq(system(cmd), 0);
}

/* ---- the response checks, without a server ---- */

struct fake {
	unsigned applies, rejects, unanswered;
	char reject[512];
};

static int fake_apply(void *o, const struct cps_sandbox_cfg *c, char *e, size_t l)
{
	((struct fake *)o)->applies++;
	return 0;
}

static void fake_rejected(void *o, const char *id, const char *error)
{
	struct fake *f = o;

	if (strstr(error, "did not answer")) { /* sb1 or sb2 left out: counted apart */
		f->unanswered++;
		return;
	}
	f->rejects++;
	snprintf(f->reject, sizeof(f->reject), "%s: %s", id, error);
}

/* Run response_apply() over text with sb1 (applied hash H0) and sb2 (null) reported. */
#define H0 "sha256:0000000000000000000000000000000000000000000000000000000000000000"
static bool respond(struct fake *f, const char *text, char *rerr, size_t rerrlen)
{
	struct cps c = { .hooks = { .apply = fake_apply, .rejected = fake_rejected, .opaque = f } };
	json_t *reported = json_pack("{s:s, s:n}", "sb1", H0, "sb2");
	json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
	bool ok;

	memset(f, 0, sizeof(*f));
	rerr[0] = '\0';
	if (!root) {
		json_decref(reported);
		snprintf(rerr, rerrlen, "unparsable");
		return false;
	}
	ok = response_apply(&c, root, reported, rerr, rerrlen);
	json_decref(root);
	json_decref(reported);
	return ok;
}

/* A valid full entry for sb2 with the given principal/secrets, hash computed. */
static char *entry_text(const char *id, const char *principal, const char *extra)
{
	const char *names[] = { "A" }, *vals[] = { "v" };
	size_t lens[] = { 1 };
	char h[80], *out;

	cr_assert_eq(cps_config_hash(id, "active", principal, "version: 1\n", 11, names, vals,
				     lens, 1, h), 0);
	cr_assert(asprintf(&out, "{\"id\":\"%s\",\"status\":\"active\",\"principal\":\"%s\","
			   "\"config_hash\":\"%s\",\"policy\":\"version: 1\\n\","
			   "\"secrets\":{\"A\":\"v\"}%s}", id, principal, h, extra) > 0);
	return out;
}

Test(cpsync, response_schema)
{
	struct fake f;
	char rerr[1024], *good = entry_text("sb2", "alice", ""), *txt;
	struct {
		const char *fmt;
		bool ok;
		unsigned applies, rejects;
		const char *want;
	} cases[] = {
		{ "{\"sandboxes\":[%s]}", true, 1, 0, "" },
		/* unknown ids are ignored, whatever they hold */
		{ "{\"sandboxes\":[%s,{\"id\":\"zz\",\"junk\":1}]}", true, 1, 0, "" },
		{ "{\"sandboxes\":[%s],\"extra\":1}", false, 0, 0, "unknown key 'extra'" },
		{ "[%s]", false, 0, 0, "not a JSON object" },
		{ "{\"sandboxes\":[%s,%s]}", false, 0, 0, "appears twice" },
		{ "{\"sandboxes\":[%s,{\"status\":\"active\"}]}", false, 0, 0, "no valid 'id'" },
		{ "{\"sandboxes\":{\"x\":%s}}", false, 0, 0, "must be an array" },
		/* unchanged: exactly id/status/config_hash, and the hash we applied */
		{ "{\"sandboxes\":[%s,{\"id\":\"sb1\",\"status\":\"unchanged\",\"config_hash\":\""
		  H0 "\"}]}", true, 1, 0, "" },
		{ "{\"sandboxes\":[%s,{\"id\":\"sb1\",\"status\":\"unchanged\",\"config_hash\":\""
		  "sha256:1111111111111111111111111111111111111111111111111111111111111111\"}]}",
		  false, 1, 1, "not the applied hash" },
		{ "{\"sandboxes\":[%s,{\"id\":\"sb1\",\"status\":\"unchanged\"}]}", false, 1, 1,
		  "exactly 'id'" },
		{ "{\"sandboxes\":[%s,{\"id\":\"sb1\",\"status\":\"paused\"}]}", false, 1, 1,
		  "unknown status" },
		{ "{\"sandboxes\":[%s,{\"id\":\"sb1\"}]}", false, 1, 1, "missing 'status'" },
		{ "{\"sandboxes\":[%s,{\"id\":\"sb1\",\"status\":\"active\",\"principal\":\"p\","
		  "\"policy\":\"\",\"secrets\":{}}]}", false, 1, 1, "missing 'config_hash'" },
	};

	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cr_assert(asprintf(&txt, cases[i].fmt, good, good) > 0);
		cr_expect_eq(respond(&f, txt, rerr, sizeof(rerr)), cases[i].ok, "%u: %s", i, rerr);
		cr_expect_eq(f.applies, cases[i].applies, "%u: applies", i);
		cr_expect_eq(f.rejects, cases[i].rejects, "%u: rejects %s", i, f.reject);
		cr_expect(strstr(rerr, cases[i].want), "%u: '%s' lacks '%s'", i, rerr,
			  cases[i].want);
		free(txt);
	}
	free(good);
}

Test(cpsync, response_entry_checks)
{
	struct fake f;
	char rerr[1024], *txt, h[80];
	struct { const char *extra_or_entry; const char *want; } bad[] = {
		{ ",\"more\":1", "unknown key 'more'" },
	};
	const char *entries[] = {
		/* each field wrong in turn (hash is valid-looking, schema checked first) */
		"{\"id\":\"sb2\",\"status\":\"active\",\"principal\":\"\",\"config_hash\":\"" H0
		"\",\"policy\":\"\",\"secrets\":{}}",
		"{\"id\":\"sb2\",\"status\":\"active\",\"principal\":\"a\\u0001b\","
		"\"config_hash\":\"" H0 "\",\"policy\":\"\",\"secrets\":{}}",
		"{\"id\":\"sb2\",\"status\":\"active\",\"principal\":\"p\","
		"\"config_hash\":\"md5:x\",\"policy\":\"\",\"secrets\":{}}",
		"{\"id\":\"sb2\",\"status\":\"active\",\"principal\":\"p\",\"config_hash\":\"" H0
		"\",\"policy\":7,\"secrets\":{}}",
		"{\"id\":\"sb2\",\"status\":\"active\",\"principal\":\"p\",\"config_hash\":\"" H0
		"\",\"policy\":\"\",\"secrets\":[]}",
		"{\"id\":\"sb2\",\"status\":\"active\",\"principal\":\"p\",\"config_hash\":\"" H0
		"\",\"policy\":\"\",\"secrets\":{\"bad name\":\"v\"}}",
		"{\"id\":\"sb2\",\"status\":\"active\",\"principal\":\"p\",\"config_hash\":\"" H0
		"\",\"policy\":\"\",\"secrets\":{\"A\":1}}",
		"{\"id\":\"sb2\",\"status\":\"active\",\"principal\":\"p\",\"config_hash\":\"" H0
		"\",\"policy\":\"\",\"secrets\":{}}",
	};
	const char *wants[] = { "'principal'", "'principal'", "'config_hash'", "'policy'",
				"'secrets'", "invalid secret name", "secret 'A'",
				"config_hash mismatch" };
	char *e;

	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		e = entry_text("sb2", "alice", bad[i].extra_or_entry);
		cr_assert(asprintf(&txt, "{\"sandboxes\":[%s]}", e) > 0);
		cr_expect_not(respond(&f, txt, rerr, sizeof(rerr)));
		cr_expect_eq(f.applies, 0);
		cr_expect_eq(f.rejects, 1);
		cr_expect(strstr(rerr, bad[i].want), "'%s'", rerr);
		free(txt);
		free(e);
	}
	for (unsigned i = 0; i < sizeof(entries) / sizeof(entries[0]); i++) {
		cr_assert(asprintf(&txt, "{\"sandboxes\":[%s]}", entries[i]) > 0);
		cr_expect_not(respond(&f, txt, rerr, sizeof(rerr)), "%u", i);
		cr_expect_eq(f.applies, 0, "%u", i);
		cr_expect_eq(f.rejects, 1, "%u", i);
		cr_expect(strstr(rerr, "sandbox sb2: ") && strstr(rerr, wants[i]),
			  "%u: '%s' lacks '%s'", i, rerr, wants[i]);
		free(txt);
	}
	/* 65 secrets: over the limit */
	{
		json_t *sec = json_object(), *ent;
		char name[8];

		for (int i = 0; i < 65; i++) {
			snprintf(name, sizeof(name), "S%d", i);
			json_object_set_new(sec, name, json_string("v"));
		}
		ent = json_pack("{s:[{s:s, s:s, s:s, s:s, s:s, s:o}]}", "sandboxes", "id", "sb2",
				"status", "active", "principal", "p", "config_hash", H0, "policy",
				"", "secrets", sec);
		txt = json_dumps(ent, 0);
		json_decref(ent);
		cr_expect_not(respond(&f, txt, rerr, sizeof(rerr)));
		cr_expect(strstr(rerr, "at most 64"), "%s", rerr);
		free(txt);
	}
	/* the hash covers every field: one changed byte anywhere is a mismatch */
	cr_assert_eq(cps_config_hash("sb2", "active", "p", "", 0, NULL, NULL, NULL, 0, h), 0);
	{
		const char *variants[] = { "revoked", "active" };
		char h2[80];

		cr_assert_eq(cps_config_hash("sb2", variants[0], "p", "", 0, NULL, NULL, NULL, 0,
					     h2), 0);
		cr_expect_str_neq(h, h2);
		cr_assert_eq(cps_config_hash("sb1", variants[1], "p", "", 0, NULL, NULL, NULL, 0,
					     h2), 0);
		cr_expect_str_neq(h, h2);
	}
	/* known answer: the canonical form of docs/control-plane.md */
	{
		const char *names[] = { "B", "A" }, *vals[] = { "2", "1" };
		size_t lens[] = { 1, 1 };

		cr_assert_eq(cps_config_hash("sb1", "active", "alice", "version: 1\n", 11, names,
					     vals, lens, 2, h), 0);
		/* sha256 of "sluice-config-v1\n3:sb1\n6:active\n5:alice\n11:version: 1\n\n"
		 * "1:2\n1:A\n1:1\n1:B\n1:2\n" */
		{
			const char canon[] = "sluice-config-v1\n3:sb1\n6:active\n5:alice\n"
					     "11:version: 1\n\n1:2\n1:A\n1:1\n1:B\n1:2\n";
			unsigned char d[32];
			char hex[80];

			EVP_Digest(canon, sizeof(canon) - 1, d, NULL, EVP_sha256(), NULL);
			strcpy(hex, "sha256:");
			for (int i = 0; i < 32; i++)
				sprintf(hex + 7 + 2 * i, "%02x", d[i]);
			cr_expect_str_eq(h, hex);
		}
	}
}

/* ---- pol_load_buffer_ex: controlplane: secrets ---- */

static const char *CP_POLICY =
	"version: 1\n"
	"allow:\n"
	"  - host: api.test\n"
	"secrets:\n"
	"  - name: k\n"
	"    placeholder: SLUICE_PH_K_000001\n"
	"    source: controlplane:KEY\n"
	"    hosts: [api.test]\n"
	"    in: {headers: [authorization]}\n";

static int one_secret(void *ctx, const char *source, const unsigned char **ret_val,
		      size_t *ret_len)
{
	const char *v = ctx;

	if (strcmp(source, "controlplane:KEY") || !v)
		return -ENOENT;
	*ret_val = (const unsigned char *)v;
	*ret_len = strlen(v);
	return 0;
}

Test(cpsync, policy_controlplane_secrets)
{
	struct pol *p = NULL;
	struct pol_error err;
	const struct pol_secret *s;
	char val[] = "the-real-value";
	struct { const char *val; const char *why; } unavail[] = {
		{ NULL, "was not sent by the control plane" },
		{ "", "is empty" },
		{ "a\r\nX-Evil: 1", "contains CR, LF or NUL" },
	};

	cr_assert_eq(pol_load_buffer_ex("cp", CP_POLICY, strlen(CP_POLICY), one_secret, val, &p,
					&err), 0, "%s", err.msg);
	s = pol_secret_at(p, 0);
	cr_assert_not_null(s);
	cr_assert_not_null(s->value);
	cr_expect_eq(s->value_len, strlen(val));
	cr_expect_eq(memcmp(s->value, val, s->value_len), 0);
	cr_expect_null(s->unavailable_reason);
	cr_expect_eq(pol_nwarnings(p), 0);
	/* the policy holds a copy */
	memset(val, 'x', sizeof(val) - 1);
	cr_expect_eq(memcmp(s->value, "the-real-value", s->value_len), 0);
	pol_unref(p);

	for (unsigned i = 0; i < sizeof(unavail) / sizeof(unavail[0]); i++) {
		p = NULL;
		cr_assert_eq(pol_load_buffer_ex("cp", CP_POLICY, strlen(CP_POLICY), one_secret,
						(void *)unavail[i].val, &p, &err), 0);
		s = pol_secret_at(p, 0);
		cr_expect_null(s->value);
		cr_expect(s->unavailable_reason && strstr(s->unavailable_reason, unavail[i].why),
			  "%u: %s", i, s->unavailable_reason);
		cr_expect_eq(pol_nwarnings(p), 1);
		cr_expect(strstr(pol_warning(p, 0)->msg, "controlplane:KEY"));
		pol_unref(p);
	}
	/* no callback, and plain pol_load_buffer(): unavailable, not an error */
	cr_assert_eq(pol_load_buffer_ex("cp", CP_POLICY, strlen(CP_POLICY), NULL, NULL, &p, &err),
		     0);
	cr_expect_null(pol_secret_at(p, 0)->value);
	pol_unref(p);
	cr_assert_eq(pol_load_buffer("cp", CP_POLICY, strlen(CP_POLICY), &p, &err), 0);
	cr_expect_null(pol_secret_at(p, 0)->value);
	cr_expect_eq(pol_nwarnings(p), 1);
	pol_unref(p);

	/* a bad controlplane: name is a compile error with line:col */
	{
		const char *bad[] = { "controlplane:", "controlplane:a b", "controlplane:x/y" };

		for (unsigned i = 0; i < 3; i++) {
			char *y;

			cr_assert(asprintf(&y, "version: 1\nsecrets:\n  - name: k\n"
					   "    placeholder: SLUICE_PH_K_000001\n"
					   "    source: \"%s\"\n    hosts: [api.test]\n"
					   "    in: {headers: [authorization]}\n", bad[i]) > 0);
			p = NULL;
			cr_expect_eq(pol_load_buffer_ex("cp", y, strlen(y), one_secret, val, &p,
							&err), -EINVAL, "%s", bad[i]);
			cr_expect_eq(err.line, 5);
			cr_expect(strstr(err.msg, "controlplane:NAME needs a name"), "%s", err.msg);
			cr_expect_null(p);
			free(y);
		}
	}
	/* env: sources still work through _ex */
	{
		const char *y = "version: 1\nsecrets:\n  - name: k\n"
				"    placeholder: SLUICE_PH_K_000001\n"
				"    source: env:SLUICE_CPSYNC_TEST_ENV\n    hosts: [api.test]\n"
				"    in: {headers: [authorization]}\n";

		setenv("SLUICE_CPSYNC_TEST_ENV", "env-value", 1);
		cr_assert_eq(pol_load_buffer_ex("cp", y, strlen(y), one_secret, val, &p, &err), 0);
		cr_expect_eq(memcmp(pol_secret_at(p, 0)->value, "env-value", 9), 0);
		pol_unref(p);
		unsetenv("SLUICE_CPSYNC_TEST_ENV");
	}
}

/* cps_secret_value: the ready-made callback */
Test(cpsync, secret_value_callback)
{
	const char *names[] = { "A", "KEY" }, *vals[] = { "1", "secret" };
	size_t lens[] = { 1, 6 };
	struct cps_sandbox_cfg c = { .secret_names = names, .secret_values = vals,
				     .secret_lens = lens, .nsecrets = 2 };
	const unsigned char *v = NULL;
	size_t n = 0;

	cr_expect_eq(cps_secret_value(&c, "controlplane:KEY", &v, &n), 0);
	cr_expect_eq(n, 6);
	cr_expect_eq(memcmp(v, "secret", 6), 0);
	cr_expect_eq(cps_secret_value(&c, "controlplane:NOPE", &v, &n), -ENOENT);
	cr_expect_eq(cps_secret_value(&c, "env:KEY", &v, &n), -ENOENT);
	cr_expect_eq(cps_secret_value(NULL, "controlplane:KEY", &v, &n), -ENOENT);
}
