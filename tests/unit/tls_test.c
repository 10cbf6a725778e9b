// SPDX-License-Identifier: MIT
/*
 * tls: CA creation/reload/refusal, leaf minting and verification, the leaf
 * LRU, and in-memory handshakes (BIO pairs) between tls_server_new() and
 * tls_client_new(). Each test works in its own temp dir.
 * Includes the .c to reach the static leaf/cache/name helpers.
 */
#include <criterion/criterion.h>

#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tls.c"

static char tmpdir[PATH_MAX];
static char state[PATH_MAX + 16];

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/sluice-tls-test.XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir));
	snprintf(state, sizeof(state), "%s/state", tmpdir);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void teardown(void)
{
	if (tmpdir[0])
		nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(tls, .init = setup, .fini = teardown);

static struct tls *init_ok(const struct tls_opts *o)
{
	char err[256] = "";
	struct tls *t = NULL;
	int rc = tls_init(o, &t, err, sizeof(err));

	cr_assert_eq(rc, 0, "tls_init: %d %s", rc, err);
	cr_assert_not_null(t);
	return t;
}

static struct tls *init_state(unsigned cap)
{
	struct tls_opts o = { .state_dir = state, .cert_cache_size = cap };

	return init_ok(&o);
}

static mode_t mode_of(const char *dir, const char *name)
{
	char path[PATH_MAX * 2];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	cr_assert_eq(stat(path, &st), 0, "stat %s", path);
	return st.st_mode & 07777;
}

/* --- CA --- */

Test(tls, ca_generated_with_modes)
{
	struct tls *t = init_state(0);
	X509 *ca = tls_ca_cert(t);
	char cn[128];
	char want[PATH_MAX * 2];

	cr_assert_eq(mode_of(tmpdir, "state"), 0700);
	cr_assert_eq(mode_of(state, "ca.key"), 0600);
	cr_assert_eq(mode_of(state, "ca.pem"), 0644);
	snprintf(want, sizeof(want), "%s/ca.pem", state);
	cr_assert_str_eq(tls_ca_path(t), want);

	cr_assert_eq(X509_check_ca(ca), 1);
	cr_assert(X509_get_extension_flags(ca) & EXFLAG_CA);
	cr_assert_eq(X509_get_pathlen(ca), 0);
	cr_assert(X509_get_key_usage(ca) & KU_KEY_CERT_SIGN);
	cr_assert_not_null(X509_get0_subject_key_id(ca));
	cr_assert(X509_NAME_get_text_by_NID(X509_get_subject_name(ca), NID_commonName, cn,
					    sizeof(cn)) > 0);
	cr_assert(strncmp(cn, "sluice local CA ", 16) == 0, "CN %s", cn);
	cr_assert(EVP_PKEY_is_a(X509_get0_pubkey(ca), "EC"));
	/* ~10 years, backdated */
	cr_assert_lt(X509_cmp_time(X509_get0_notBefore(ca), NULL), 0);
	time_t in9y = time(NULL) + 9L * 365 * 86400;
	cr_assert_gt(X509_cmp_time(X509_get0_notAfter(ca), &in9y), 0);
	tls_free(t);
}

Test(tls, ca_reloaded_on_second_init)
{
	struct tls *a = init_state(0);
	X509 *first = X509_dup(tls_ca_cert(a));

	tls_free(a);
	struct tls *b = init_state(0);

	cr_assert_eq(X509_cmp(first, tls_ca_cert(b)), 0, "CA changed across inits");
	X509_free(first);
	tls_free(b);
}

Test(tls, ca_key_too_open_refused)
{
	struct tls_opts o = { .state_dir = state };
	char path[PATH_MAX * 2], err[256] = "";
	struct tls *t = init_state(0);

	tls_free(t);
	t = NULL;
	snprintf(path, sizeof(path), "%s/ca.key", state);
	cr_assert_eq(chmod(path, 0644), 0);
	cr_assert_eq(tls_init(&o, &t, err, sizeof(err)), -EPERM);
	cr_assert_null(t);
	cr_assert_str_eq(err, "ca.key: permission 0644 is too open");
}

Test(tls, ca_pem_without_key_refused)
{
	struct tls_opts o = { .state_dir = state };
	char path[PATH_MAX * 2], err[256] = "";
	struct tls *t = init_state(0);

	tls_free(t);
	t = NULL;
	snprintf(path, sizeof(path), "%s/ca.key", state);
	cr_assert_eq(unlink(path), 0);
	cr_assert_eq(tls_init(&o, &t, err, sizeof(err)), -ENOENT);
	cr_assert_null(t);
}

Test(tls, explicit_ca_files)
{
	char cert[PATH_MAX * 2], key[PATH_MAX * 2], other[PATH_MAX * 2], err[256] = "";
	struct tls *t = init_state(0);
	X509 *first = X509_dup(tls_ca_cert(t));
	char otherdir[PATH_MAX + 16];

	tls_free(t);
	snprintf(cert, sizeof(cert), "%s/ca.pem", state);
	snprintf(key, sizeof(key), "%s/ca.key", state);

	struct tls_opts o = { .ca_cert = cert, .ca_key = key };
	t = init_ok(&o);
	cr_assert_eq(X509_cmp(first, tls_ca_cert(t)), 0);
	cr_assert_str_eq(tls_ca_path(t), cert);
	tls_free(t);
	X509_free(first);

	/* a key from another CA does not match */
	snprintf(otherdir, sizeof(otherdir), "%s/other", tmpdir);
	struct tls_opts oo = { .state_dir = otherdir };
	tls_free(init_ok(&oo));
	snprintf(other, sizeof(other), "%s/ca.key", otherdir);
	struct tls_opts bad = { .ca_cert = cert, .ca_key = other };
	t = NULL;
	cr_assert_eq(tls_init(&bad, &t, err, sizeof(err)), -EINVAL);
	cr_assert_null(t);
	cr_assert(strstr(err, "does not match"), "err: %s", err);

	/* cert without key */
	struct tls_opts half = { .ca_cert = cert };
	cr_assert_eq(tls_init(&half, &t, err, sizeof(err)), -EINVAL);
}

/* --- names --- */

Test(tls, name_normalize)
{
	char out[TLS_NAME_MAX + 1], big[300];

	cr_assert_eq(tls_name_normalize("Example.TEST.", true, out), TLS_NAME_DNS);
	cr_assert_str_eq(out, "example.test");
	cr_assert_eq(tls_name_normalize("198.18.0.2", true, out), TLS_NAME_IP4);
	cr_assert_str_eq(out, "198.18.0.2");
	cr_assert_eq(tls_name_normalize("[2001:DB8:0::1]", true, out), TLS_NAME_IP6);
	cr_assert_str_eq(out, "2001:db8::1");
	cr_assert_eq(tls_name_normalize("*.wild_card.test", true, out), TLS_NAME_DNS);
	cr_assert_eq(tls_name_normalize("*.wild.test", false, out), -EINVAL);
	cr_assert_eq(tls_name_normalize("a b.test", true, out), -EINVAL);
	cr_assert_eq(tls_name_normalize("a..test", true, out), -EINVAL);
	cr_assert_eq(tls_name_normalize(".", true, out), -EINVAL);
	cr_assert_eq(tls_name_normalize("", true, out), -EINVAL);
	cr_assert_eq(tls_name_normalize("caf\xc3\xa9.test", true, out), -EINVAL);
	/* 253 is fine (with labels <= 63), 254 is not */
	memset(big, 'a', sizeof(big));
	for (int i = 63; i < 300; i += 64)
		big[i] = '.';
	big[253] = '\0';
	cr_assert_eq(tls_name_normalize(big, true, out), TLS_NAME_DNS);
	big[253] = 'a';
	big[254] = '\0';
	cr_assert_eq(tls_name_normalize(big, true, out), -EINVAL);
}

/* --- leaves --- */

static int verify_leaf(struct tls *t, X509 *leaf)
{
	X509_STORE *store = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	int ok;

	cr_assert(X509_STORE_add_cert(store, tls_ca_cert(t)));
	cr_assert(X509_STORE_CTX_init(ctx, store, leaf, NULL));
	X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER);
	X509_VERIFY_PARAM_set_flags(X509_STORE_CTX_get0_param(ctx), X509_V_FLAG_X509_STRICT);
	ok = X509_verify_cert(ctx);
	if (ok != 1)
		cr_log_error("verify: %s",
			     X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	return ok;
}

static void assert_leaf_common(struct tls *t, X509 *x)
{
	const ASN1_INTEGER *serial = X509_get0_serialNumber(x);
	BIGNUM *bn = ASN1_INTEGER_to_BN(serial, NULL);
	time_t in89d = time(NULL) + 89L * 86400, in91d = time(NULL) + 91L * 86400;

	cr_assert_eq(X509_get_version(x), X509_VERSION_3);
	cr_assert(!BN_is_negative(bn) && BN_num_bits(bn) > 120 && BN_num_bits(bn) <= 128);
	BN_free(bn);
	cr_assert_lt(X509_cmp_time(X509_get0_notBefore(x), NULL), 0);
	cr_assert_gt(X509_cmp_time(X509_get0_notAfter(x), &in89d), 0);
	cr_assert_lt(X509_cmp_time(X509_get0_notAfter(x), &in91d), 0);
	cr_assert_lt(ASN1_TIME_compare(X509_get0_notAfter(x), X509_get0_notAfter(tls_ca_cert(t))),
		     0);
	cr_assert(X509_get_extended_key_usage(x) & XKU_SSL_SERVER);
	cr_assert_eq(X509_check_ca(x), 0);
	cr_assert_not_null(X509_get0_authority_key_id(x));
	cr_assert_eq(ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(x),
					   X509_get0_subject_key_id(tls_ca_cert(t))), 0);
	cr_assert_eq(EVP_PKEY_eq(X509_get0_pubkey(x), t->leaf_key), 1);
	cr_assert_eq(verify_leaf(t, x), 1);
}

Test(tls, leaf_dns_verifies)
{
	struct tls *t = init_state(0);
	X509 *x = tls_leaf_get(t, "example.test", TLS_NAME_DNS);
	GENERAL_NAMES *san;
	GENERAL_NAME *g;
	char cn[128];

	cr_assert_not_null(x);
	assert_leaf_common(t, x);
	cr_assert_eq(X509_check_host(x, "example.test", 0, 0, NULL), 1);
	cr_assert_neq(X509_check_host(x, "other.test", 0, 0, NULL), 1);
	san = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	cr_assert_not_null(san);
	cr_assert_eq(sk_GENERAL_NAME_num(san), 1);
	g = sk_GENERAL_NAME_value(san, 0);
	cr_assert_eq(g->type, GEN_DNS);
	cr_assert_str_eq((const char *)ASN1_STRING_get0_data(g->d.dNSName), "example.test");
	GENERAL_NAMES_free(san);
	X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn));
	cr_assert_str_eq(cn, "example.test");
	X509_free(x);
	tls_free(t);
}

Test(tls, leaf_ip_verifies)
{
	struct tls *t = init_state(0);
	X509 *x = tls_leaf_get(t, "198.18.0.2", TLS_NAME_IP4);
	GENERAL_NAMES *san;
	GENERAL_NAME *g;
	static const unsigned char want[4] = { 198, 18, 0, 2 };

	cr_assert_not_null(x);
	assert_leaf_common(t, x);
	cr_assert_eq(X509_check_ip_asc(x, "198.18.0.2", 0), 1);
	san = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	cr_assert_eq(sk_GENERAL_NAME_num(san), 1);
	g = sk_GENERAL_NAME_value(san, 0);
	cr_assert_eq(g->type, GEN_IPADD);
	cr_assert_eq(ASN1_STRING_length(g->d.iPAddress), 4);
	cr_assert_eq(memcmp(ASN1_STRING_get0_data(g->d.iPAddress), want, 4), 0);
	GENERAL_NAMES_free(san);
	X509_free(x);

	x = tls_leaf_get(t, "2001:db8::1", TLS_NAME_IP6);
	cr_assert_not_null(x);
	cr_assert_eq(X509_check_ip_asc(x, "2001:db8::1", 0), 1);
	X509_free(x);
	tls_free(t);
}

Test(tls, leaf_long_name_truncates_cn)
{
	char name[200];
	struct tls *t = init_state(0);
	X509 *x;
	char cn[128];

	snprintf(name, sizeof(name), "%s.%s.test", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		 "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
	x = tls_leaf_get(t, name, TLS_NAME_DNS);
	cr_assert_not_null(x);
	cr_assert_eq(X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn,
					       sizeof(cn)), 64);
	cr_assert_eq(X509_check_host(x, name, 0, 0, NULL), 1);
	cr_assert_eq(verify_leaf(t, x), 1);
	X509_free(x);
	tls_free(t);
}

/* --- cache --- */

static void lookup(struct tls *t, const char *name)
{
	X509 *x = tls_leaf_get(t, name, TLS_NAME_DNS);

	cr_assert_not_null(x);
	X509_free(x);
}

Test(tls, cache_hits_misses_eviction)
{
	unsigned long hits, misses;
	struct tls *t = init_state(2);
	X509 *a1, *a2;

	lookup(t, "a.test");		/* miss */
	lookup(t, "b.test");		/* miss */
	lookup(t, "a.test");		/* hit; b is now least recent */
	tls_cache_stats(t, &hits, &misses);
	cr_assert_eq(hits, 1);
	cr_assert_eq(misses, 2);
	lookup(t, "c.test");		/* miss, evicts b */
	cr_assert_eq(t->leaves.count, 2);
	a1 = tls_leaf_get(t, "a.test", TLS_NAME_DNS);	/* hit: a survived */
	lookup(t, "b.test");		/* miss: b was evicted (evicts c) */
	a2 = tls_leaf_get(t, "a.test", TLS_NAME_DNS);	/* hit, same cert */
	cr_assert_eq(a1, a2);
	X509_free(a1);
	X509_free(a2);
	tls_cache_stats(t, &hits, &misses);
	cr_assert_eq(hits, 3);
	cr_assert_eq(misses, 4);
	cr_assert_eq(t->leaves.count, 2);
	tls_free(t);
}

#define NTHREADS 4
#define NLOOKUPS 200
#define NNAMES 50

struct hammer_arg {
	struct tls *t;
	int idx;
};

static void *hammer(void *arg)
{
	struct hammer_arg *h = arg;
	struct tls *t = h->t;
	char name[64];
	uintptr_t bad = 0;

	for (int i = 0; i < NLOOKUPS; i++) {
		snprintf(name, sizeof(name), "host%d.example.test", (i * 7 + h->idx * 13) % NNAMES);
		X509 *x = tls_leaf_get(t, name, TLS_NAME_DNS);

		if (!x || X509_check_host(x, name, 0, 0, NULL) != 1)
			bad++;
		X509_free(x);
	}
	return (void *)bad;
}

static void concurrency_run(unsigned cap)
{
	pthread_t th[NTHREADS];
	struct hammer_arg args[NTHREADS];
	unsigned long hits, misses;
	struct tls *t = init_state(cap);
	void *bad;

	for (int i = 0; i < NTHREADS; i++) {
		args[i] = (struct hammer_arg){ .t = t, .idx = i };
		cr_assert_eq(pthread_create(&th[i], NULL, hammer, &args[i]), 0);
	}
	for (int i = 0; i < NTHREADS; i++) {
		pthread_join(th[i], &bad);
		cr_assert_eq((uintptr_t)bad, 0, "thread %d: wrong or missing leaves", i);
	}
	tls_cache_stats(t, &hits, &misses);
	cr_assert_eq(hits + misses, NTHREADS * NLOOKUPS);
	cr_assert_geq(misses, NNAMES);
	cr_assert_leq(t->leaves.count, cap);
	tls_free(t);
}

Test(tls, concurrent_lookups)
{
	concurrency_run(1024);
}

Test(tls, concurrent_lookups_small_cache)
{
	concurrency_run(8);
}

/* --- handshakes over a BIO pair --- */

/* A second tls (same CA) whose client side trusts the CA. */
static struct tls *init_client_side(void)
{
	char ca[PATH_MAX * 2];
	struct tls_opts o = { .state_dir = state, .upstream_ca = ca };

	snprintf(ca, sizeof(ca), "%s/ca.pem", state);
	return init_ok(&o);
}

static void pair(SSL *srv, SSL *cli)
{
	BIO *bs, *bc;

	cr_assert(BIO_new_bio_pair(&bs, 0, &bc, 0));
	SSL_set_bio(srv, bs, bs);
	SSL_set_bio(cli, bc, bc);
}

static bool step(SSL *s, int *done)
{
	int r, e;

	if (*done)
		return true;
	r = SSL_do_handshake(s);
	if (r == 1) {
		*done = 1;
		return true;
	}
	e = SSL_get_error(s, r);
	return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
}

/* 0 when both sides finished; -1 when either failed. */
static int handshake(SSL *srv, SSL *cli)
{
	int sd = 0, cd = 0;

	pair(srv, cli);
	for (int i = 0; i < 100 && !(sd && cd); i++)
		if (!step(cli, &cd) || !step(srv, &sd)) {
			ERR_clear_error();
			return -1;
		}
	return sd && cd ? 0 : -1;
}

/* Move application data (and TLS 1.3 tickets) server -> client. */
static void exchange(SSL *srv, SSL *cli)
{
	char buf[16];

	cr_assert_eq(SSL_write(srv, "hi", 2), 2);
	cr_assert_eq(SSL_read(cli, buf, sizeof(buf)), 2);
	cr_assert_eq(memcmp(buf, "hi", 2), 0);
}

static void assert_alpn(SSL *s, const char *want)
{
	const unsigned char *p;
	unsigned int len;

	SSL_get0_alpn_selected(s, &p, &len);
	if (!want) {
		cr_assert_eq(len, 0, "unexpected ALPN %.*s", (int)len, p);
		return;
	}
	cr_assert_eq(len, strlen(want));
	cr_assert_eq(memcmp(p, want, len), 0);
}

Test(tls, handshake_sni)
{
	struct tls *t = init_state(0), *c = init_client_side();
	SSL *srv = tls_server_new(t, NULL);
	SSL *cli = tls_client_new(c, "A.Example.Test.");

	cr_assert_not_null(srv);
	cr_assert_not_null(cli);
	cr_assert_null(tls_server_name(srv));
	cr_assert_eq(handshake(srv, cli), 0);
	cr_assert_eq(SSL_get_verify_result(cli), X509_V_OK);
	cr_assert_str_eq(tls_server_name(srv), "a.example.test");
	assert_alpn(srv, "http/1.1");
	assert_alpn(cli, "http/1.1");
	cr_assert_geq(SSL_version(srv), TLS1_2_VERSION);
	exchange(srv, cli);
	SSL_free(srv);
	SSL_free(cli);
	tls_free(c);
	tls_free(t);
}

Test(tls, handshake_no_sni_fallback_ip)
{
	struct tls *t = init_state(0), *c = init_client_side();
	SSL *srv = tls_server_new(t, "198.18.0.2");
	SSL *cli = tls_client_new(c, "198.18.0.2");	/* IP: no SNI, IP verified */

	cr_assert_eq(handshake(srv, cli), 0);
	cr_assert_null(SSL_get_servername(srv, TLSEXT_NAMETYPE_host_name));
	cr_assert_eq(SSL_get_verify_result(cli), X509_V_OK);
	cr_assert_str_eq(tls_server_name(srv), "198.18.0.2");
	SSL_free(srv);
	SSL_free(cli);
	tls_free(c);
	tls_free(t);
}

Test(tls, handshake_no_sni_no_fallback_fails)
{
	struct tls *t = init_state(0), *c = init_client_side();
	SSL *srv = tls_server_new(t, NULL);
	SSL *cli = tls_client_new(c, "198.18.0.2");

	cr_assert_eq(handshake(srv, cli), -1);
	cr_assert_null(tls_server_name(srv));
	SSL_free(srv);
	SSL_free(cli);
	tls_free(c);
	tls_free(t);
}

Test(tls, handshake_bad_sni_fails)
{
	struct tls *t = init_state(0), *c = init_client_side();
	SSL *srv = tls_server_new(t, "198.18.0.2");
	SSL *cli = tls_client_new(c, "ok.test");

	/* a byte outside [a-z0-9.-_*]: no fallback to the IP, the handshake fails */
	cr_assert(SSL_set_tlsext_host_name(cli, "bad!.test"));
	cr_assert_eq(handshake(srv, cli), -1);
	SSL_free(srv);
	SSL_free(cli);
	tls_free(c);
	tls_free(t);
}

Test(tls, handshake_alpn_choices)
{
	static const unsigned char both[] = "\x02h2\x08http/1.1";
	static const unsigned char h2[] = "\x02h2";
	struct tls *t = init_state(0), *c = init_client_side();
	SSL *srv = tls_server_new(t, NULL);
	SSL *cli = tls_client_new(c, "alpn.test");

	cr_assert_eq(SSL_set_alpn_protos(cli, both, sizeof(both) - 1), 0);
	cr_assert_eq(handshake(srv, cli), 0);
	assert_alpn(srv, "http/1.1");
	assert_alpn(cli, "http/1.1");
	SSL_free(srv);
	SSL_free(cli);

	srv = tls_server_new(t, NULL);
	cli = tls_client_new(c, "alpn.test");
	cr_assert_eq(SSL_set_alpn_protos(cli, h2, sizeof(h2) - 1), 0);
	cr_assert_eq(handshake(srv, cli), 0);
	assert_alpn(srv, NULL);
	assert_alpn(cli, NULL);
	SSL_free(srv);
	SSL_free(cli);
	tls_free(c);
	tls_free(t);
}

Test(tls, client_rejects_wrong_name)
{
	struct tls *t = init_state(0), *c = init_client_side();
	SSL *srv = tls_server_new(t, NULL);
	SSL *cli = tls_client_new(c, "right.test");

	/* the server mints for the SNI it sees; the client checks "right.test" */
	cr_assert(SSL_set_tlsext_host_name(cli, "wrong.test"));
	cr_assert_eq(handshake(srv, cli), -1);
	cr_assert_eq(SSL_get_verify_result(cli), X509_V_ERR_HOSTNAME_MISMATCH);
	SSL_free(srv);
	SSL_free(cli);
	tls_free(c);
	tls_free(t);
}

Test(tls, client_rejects_untrusted_ca)
{
	char other[PATH_MAX + 16];
	struct tls *t, *c = init_client_side();	/* trusts the CA in state/ */
	SSL *srv, *cli;

	snprintf(other, sizeof(other), "%s/other", tmpdir);
	struct tls_opts o = { .state_dir = other };
	t = init_ok(&o);
	srv = tls_server_new(t, NULL);
	cli = tls_client_new(c, "x.test");
	cr_assert_eq(handshake(srv, cli), -1);
	cr_assert_neq(SSL_get_verify_result(cli), X509_V_OK);
	SSL_free(srv);
	SSL_free(cli);
	tls_free(c);
	tls_free(t);
}

Test(tls, client_invalid_host)
{
	struct tls *c = init_state(0);

	errno = 0;
	cr_assert_null(tls_client_new(c, "*.test"));
	cr_assert_eq(errno, EINVAL);
	cr_assert_null(tls_client_new(c, ""));
	tls_free(c);
}

static bool connect_once(struct tls *t, struct tls *c, const char *host)
{
	SSL *srv = tls_server_new(t, NULL);
	SSL *cli = tls_client_new(c, host);
	bool reused;

	cr_assert_eq(handshake(srv, cli), 0);
	exchange(srv, cli);	/* delivers the TLS 1.3 ticket */
	reused = SSL_session_reused(cli);
	cr_assert_eq(reused, (bool)SSL_session_reused(srv));
	cr_assert_str_eq(tls_server_name(srv), host);
	SSL_free(srv);
	SSL_free(cli);
	return reused;
}

Test(tls, client_session_resumed_per_host_only)
{
	struct tls *t = init_state(0), *c = init_client_side();

	cr_assert_not(connect_once(t, c, "one.test"));
	cr_assert(connect_once(t, c, "one.test"), "second connection not resumed");
	cr_assert_not(connect_once(t, c, "two.test"), "session shared across hosts");
	cr_assert(connect_once(t, c, "two.test"));
	tls_free(c);
	tls_free(t);
}

Test(tls, server_invalid_fallback)
{
	struct tls *t = init_state(0);

	errno = 0;
	cr_assert_null(tls_server_new(t, "bad name"));
	cr_assert_eq(errno, EINVAL);
	tls_free(t);
}

Test(tls, cache_size_limit)
{
	struct tls_opts o = { .state_dir = state, .cert_cache_size = (1U << 20) + 1 };
	struct tls *t = NULL;
	char err[128];

	cr_assert_eq(tls_init(&o, &t, err, sizeof(err)), -EINVAL);
	cr_assert_null(t);
}

Test(tls, fallback_ipv6_bracketed)
{
	struct tls *t = init_state(0), *c = init_client_side();
	SSL *srv = tls_server_new(t, "[2001:DB8::2]");
	SSL *cli = tls_client_new(c, "[2001:db8::2]");

	cr_assert_eq(handshake(srv, cli), 0);
	cr_assert_eq(SSL_get_verify_result(cli), X509_V_OK);
	cr_assert_str_eq(tls_server_name(srv), "2001:db8::2");
	SSL_free(srv);
	SSL_free(cli);
	tls_free(c);
	tls_free(t);
}

Test(tls, upstream_ca_missing_refused)
{
	char ca[PATH_MAX * 2], err[256] = "";
	struct tls_opts o = { .state_dir = state, .upstream_ca = ca };
	struct tls *t = NULL;

	snprintf(ca, sizeof(ca), "%s/nope.pem", tmpdir);
	cr_assert_eq(tls_init(&o, &t, err, sizeof(err)), -ENOENT);
	cr_assert(strstr(err, "nope.pem"), "err: %s", err);
	cr_assert_null(t);
}

Test(tls, system_trust_store_default)
{
	struct tls *t = init_state(0);	/* no upstream_ca: system default paths */
	SSL *cli = tls_client_new(t, "example.test");

	cr_assert_not_null(cli);
	cr_assert_eq(SSL_get_verify_mode(cli) & SSL_VERIFY_PEER, SSL_VERIFY_PEER);
	cr_assert_str_eq(SSL_get_servername(cli, TLSEXT_NAMETYPE_host_name), "example.test");
	SSL_free(cli);
	tls_free(t);
}
