// SPDX-License-Identifier: MIT
/*
 * tls: the CA, leaf minting with an LRU cache, and the two SSL_CTXs.
 *
 * Leaves are minted on the first handshake for a name, outside any lock, and
 * kept as X509 objects in a bounded LRU; the servername callback puts the
 * cached leaf plus the shared leaf key on the SSL. All leaves share one key
 * generated at start (in memory only), so minting is one ECDSA signature.
 * Extensions that are the same for every leaf are built once at init.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "tls.h"

#define TLS_CA_DAYS		3652		/* ~10 years */
#define TLS_LEAF_DAYS		90
#define TLS_BACKDATE_SECS	3600
#define TLS_LEAF_REFRESH_SECS	86400		/* re-mint a cached leaf this close to expiry */
#define TLS_CACHE_DEFAULT	1024
#define TLS_CACHE_MAX		(1U << 20)
#define TLS_SESSION_CACHE_SIZE	256		/* upstream hosts with a resumable session */
#define TLS_PEM_MAX		(64 * 1024)	/* ca.pem / ca.key read limit */
#define TLS_CN_MAX		64		/* X.520 ub-common-name */

#define TLS_ALPN_H1		"http/1.1"

/* The leaf key is ECDSA, so only ECDHE-ECDSA suites can ever be chosen. */
#define TLS_SERVER_CIPHERS12                                                                     \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES256-GCM-SHA384"
#define TLS_SERVER_CIPHERS13                                                                     \
	"TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384"

/* --- a small LRU map: string key -> owned value, with an expiry time --- */

struct tls_lru_entry {
	struct tls_lru_entry *hnext;
	struct tls_lru_entry *prev;	/* toward most recently used */
	struct tls_lru_entry *next;	/* toward least recently used */
	void *val;
	time_t expires;
	char key[];
};

struct tls_lru {
	struct tls_lru_entry **buckets;
	size_t mask;
	struct tls_lru_entry *head;	/* most recently used */
	struct tls_lru_entry *tail;
	unsigned count;
	unsigned cap;
	void (*val_free)(void *val);
};

/* Per-SSL data (both directions), freed with the SSL by the ex_data hook. */
struct tls_conn {
	struct tls *t;
	char fallback[TLS_NAME_MAX + 1];	/* server: normalised name used without SNI */
	int fallback_kind;			/* its tls_name_kind; 0: no fallback */
	char name[TLS_NAME_MAX + 1];		/* server: name served; client: host */
};

struct tls {
	X509 *ca_cert;
	EVP_PKEY *ca_key;
	const EVP_MD *ca_md;			/* NULL for EdDSA CAs */
	EVP_PKEY *leaf_key;
	STACK_OF(X509_EXTENSION) *leaf_exts;	/* same for every leaf */
	SSL_CTX *server_ctx;
	SSL_CTX *client_ctx;
	char *ca_path;

	pthread_mutex_t leaf_lock;
	struct tls_lru leaves;			/* name -> X509 * */
	unsigned long hits;
	unsigned long misses;

	pthread_mutex_t sess_lock;
	struct tls_lru sessions;		/* upstream host -> SSL_SESSION * */
};

static int tls_ex_idx = -1;
static pthread_once_t tls_ex_once = PTHREAD_ONCE_INIT;

static void tls_conn_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
			     void *argp)
{
	free(ptr);
}

static void tls_ex_init(void)
{
	tls_ex_idx = CRYPTO_get_ex_new_index(CRYPTO_EX_INDEX_SSL, 0, NULL, NULL, NULL,
					     tls_conn_ex_free);
}

static uint64_t tls_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

static int tls_lru_init(struct tls_lru *l, unsigned cap, void (*val_free)(void *))
{
	size_t n = 16;

	while (n < (size_t)cap * 2)
		n <<= 1;
	l->buckets = calloc(n, sizeof(*l->buckets));
	if (!l->buckets)
		return -ENOMEM;
	l->mask = n - 1;
	l->head = l->tail = NULL;
	l->count = 0;
	l->cap = cap;
	l->val_free = val_free;
	return 0;
}

static void tls_lru_unlink(struct tls_lru *l, struct tls_lru_entry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		l->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		l->tail = e->prev;
	e->prev = e->next = NULL;
}

static void tls_lru_push_front(struct tls_lru *l, struct tls_lru_entry *e)
{
	e->prev = NULL;
	e->next = l->head;
	if (l->head)
		l->head->prev = e;
	l->head = e;
	if (!l->tail)
		l->tail = e;
}

static struct tls_lru_entry **tls_lru_slot(struct tls_lru *l, const char *key)
{
	struct tls_lru_entry **pp = &l->buckets[tls_hash(key) & l->mask];

	while (*pp && strcmp((*pp)->key, key) != 0)
		pp = &(*pp)->hnext;
	return pp;
}

static void tls_lru_remove(struct tls_lru *l, struct tls_lru_entry **slot)
{
	struct tls_lru_entry *e = *slot;

	*slot = e->hnext;
	tls_lru_unlink(l, e);
	l->count--;
	l->val_free(e->val);
	free(e);
}

/* The live value for key (moved to the front), or NULL. Expired entries go. */
static void *tls_lru_get(struct tls_lru *l, const char *key, time_t now)
{
	struct tls_lru_entry **slot = tls_lru_slot(l, key);
	struct tls_lru_entry *e = *slot;

	if (!e)
		return NULL;
	if (e->expires <= now) {
		tls_lru_remove(l, slot);
		return NULL;
	}
	if (l->head != e) {
		tls_lru_unlink(l, e);
		tls_lru_push_front(l, e);
	}
	return e->val;
}

/* Insert or replace; takes ownership of val (freed on failure too). */
static int tls_lru_put(struct tls_lru *l, const char *key, void *val, time_t expires)
{
	struct tls_lru_entry **slot = tls_lru_slot(l, key);
	struct tls_lru_entry *e = *slot;
	size_t klen;

	if (e) {
		l->val_free(e->val);
		e->val = val;
		e->expires = expires;
		tls_lru_unlink(l, e);
		tls_lru_push_front(l, e);
		return 0;
	}
	klen = strlen(key);
	e = malloc(sizeof(*e) + klen + 1);
	if (!e) {
		l->val_free(val);
		return -ENOMEM;
	}
	memcpy(e->key, key, klen + 1);
	e->val = val;
	e->expires = expires;
	e->hnext = NULL;
	*slot = e;
	tls_lru_push_front(l, e);
	l->count++;
	while (l->count > l->cap && l->tail)
		tls_lru_remove(l, tls_lru_slot(l, l->tail->key));
	return 0;
}

static void tls_lru_destroy(struct tls_lru *l)
{
	struct tls_lru_entry *e, *next;

	if (!l->buckets)
		return;
	for (e = l->head; e; e = next) {
		next = e->next;
		l->val_free(e->val);
		free(e);
	}
	free(l->buckets);
	l->buckets = NULL;
	l->head = l->tail = NULL;
	l->count = 0;
}

static void tls_x509_free(void *p)
{
	X509_free(p);
}

static void tls_session_free(void *p)
{
	SSL_SESSION_free(p);
}

/* --- names --- */

enum tls_name_kind {
	TLS_NAME_DNS = 1,
	TLS_NAME_IP4 = 2,
	TLS_NAME_IP6 = 3,
};

static bool tls_dns_char_ok(unsigned char c, bool allow_star)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
	       c == '_' || (allow_star && c == '*');
}

/*
 * Normalise a name into out (TLS_NAME_MAX + 1 bytes): lower-case, one
 * trailing dot dropped, IPv6 brackets dropped, IP literals in canonical form.
 * DNS names: 1..253 bytes of [a-z0-9.-_*] (no '*' unless allow_star), no
 * empty label, labels up to 63. Returns the tls_name_kind or -EINVAL.
 */
static int tls_name_normalize(const char *in, bool allow_star, char *out)
{
	char buf[TLS_NAME_MAX + 4];
	unsigned char addr[16];
	size_t len, i, label = 0;
	char *p = buf;

	if (!in)
		return -EINVAL;
	len = strnlen(in, sizeof(buf));
	if (len == 0 || len >= sizeof(buf))
		return -EINVAL;
	for (i = 0; i < len; i++)
		buf[i] = (char)tolower((unsigned char)in[i]);
	buf[len] = '\0';
	if (buf[0] == '[' && buf[len - 1] == ']' && len > 2) {
		buf[len - 1] = '\0';
		p = buf + 1;
		if (inet_pton(AF_INET6, p, addr) != 1)
			return -EINVAL;
		inet_ntop(AF_INET6, addr, out, TLS_NAME_MAX + 1);
		return TLS_NAME_IP6;
	}
	if (inet_pton(AF_INET, p, addr) == 1) {
		inet_ntop(AF_INET, addr, out, TLS_NAME_MAX + 1);
		return TLS_NAME_IP4;
	}
	if (inet_pton(AF_INET6, p, addr) == 1) {
		inet_ntop(AF_INET6, addr, out, TLS_NAME_MAX + 1);
		return TLS_NAME_IP6;
	}
	if (buf[len - 1] == '.')
		buf[--len] = '\0';
	if (len == 0 || len > TLS_NAME_MAX)
		return -EINVAL;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)buf[i];

		if (!tls_dns_char_ok(c, allow_star))
			return -EINVAL;
		if (c == '.') {
			if (label == 0)
				return -EINVAL;
			label = 0;
		} else if (++label > 63) {
			return -EINVAL;
		}
	}
	memcpy(out, buf, len + 1);
	return TLS_NAME_DNS;
}

/* --- errors --- */

static int tls_fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	ERR_clear_error();
	return rc;
}

/* Like tls_fail, appending OpenSSL's last reason (what: reason). */
static int tls_fail_ssl(char *err, size_t errlen, int rc, const char *what)
{
	unsigned long e = ERR_peek_last_error();
	const char *reason = e ? ERR_reason_error_string(e) : NULL;

	return tls_fail(err, errlen, rc, "%s: %s", what, reason ? reason : "OpenSSL error");
}

/* --- certificate building --- */

static int tls_add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, ctx, nid, value);
	int ok;

	if (!ext)
		return -EINVAL;
	ok = X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	return ok ? 0 : -ENOMEM;
}

/* A random positive serial of 128 bits (top bit clear, never zero). */
static int tls_set_serial(X509 *x)
{
	unsigned char raw[16];
	ASN1_INTEGER *ai = NULL;
	BIGNUM *bn;
	int rc = -EIO;

	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return -EIO;
	raw[0] &= 0x7f;
	raw[0] |= 0x40;
	bn = BN_bin2bn(raw, sizeof(raw), NULL);
	if (!bn)
		return -ENOMEM;
	ai = BN_to_ASN1_INTEGER(bn, NULL);
	if (ai && X509_set_serialNumber(x, ai))
		rc = 0;
	ASN1_INTEGER_free(ai);
	BN_free(bn);
	return rc;
}

static int tls_set_cn(X509 *x, const char *cn)
{
	X509_NAME *name = X509_get_subject_name(x);
	size_t len = strlen(cn);

	if (len > TLS_CN_MAX)
		len = TLS_CN_MAX;
	if (!X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn,
					(int)len, -1, 0))
		return -EINVAL;
	return 0;
}

static EVP_PKEY *tls_gen_p256(void)
{
	return EVP_EC_gen("P-256");
}

static const EVP_MD *tls_md_for(EVP_PKEY *key)
{
	if (EVP_PKEY_is_a(key, "ED25519") || EVP_PKEY_is_a(key, "ED448"))
		return NULL;
	return EVP_sha256();
}

static X509 *tls_ca_generate(EVP_PKEY *key)
{
	char host[256] = "";
	char cn[TLS_CN_MAX + 1];
	X509V3_CTX ctx;
	X509 *x;

	if (gethostname(host, sizeof(host) - 1) != 0 || !host[0])
		snprintf(host, sizeof(host), "unknown");
	snprintf(cn, sizeof(cn), "sluice local CA %.48s", host);

	x = X509_new();
	if (!x)
		return NULL;
	if (!X509_set_version(x, X509_VERSION_3) || tls_set_serial(x) ||
	    !X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "O", MBSTRING_ASC,
					(const unsigned char *)"sluice", -1, -1, 0) ||
	    tls_set_cn(x, cn) || !X509_set_issuer_name(x, X509_get_subject_name(x)) ||
	    !X509_gmtime_adj(X509_getm_notBefore(x), -TLS_BACKDATE_SECS) ||
	    !X509_time_adj_ex(X509_getm_notAfter(x), TLS_CA_DAYS, 0, NULL) ||
	    !X509_set_pubkey(x, key))
		goto out_free;
	X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
	if (tls_add_ext(x, &ctx, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") ||
	    tls_add_ext(x, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign") ||
	    tls_add_ext(x, &ctx, NID_subject_key_identifier, "hash") ||
	    tls_add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always"))
		goto out_free;
	if (X509_sign(x, key, EVP_sha256()) <= 0)
		goto out_free;
	return x;

out_free:
	X509_free(x);
	return NULL;
}

/* Extensions every leaf carries; the AKID points at the CA. */
static STACK_OF(X509_EXTENSION) *tls_leaf_exts(X509 *ca, EVP_PKEY *leaf_key)
{
	static const struct {
		int nid;
		const char *value;
	} defs[] = {
		{ NID_basic_constraints, "critical,CA:FALSE" },
		{ NID_key_usage, "critical,digitalSignature" },
		{ NID_ext_key_usage, "serverAuth" },
		{ NID_subject_key_identifier, "hash" },
	};
	STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
	X509_EXTENSION *ext;
	X509V3_CTX ctx;
	X509 *dummy;
	size_t i;

	dummy = X509_new();
	if (!exts || !dummy || !X509_set_pubkey(dummy, leaf_key))
		goto out_free;
	X509V3_set_ctx(&ctx, ca, dummy, NULL, NULL, 0);
	for (i = 0; i < sizeof(defs) / sizeof(defs[0]); i++) {
		ext = X509V3_EXT_nconf_nid(NULL, &ctx, defs[i].nid, defs[i].value);
		if (!ext || !sk_X509_EXTENSION_push(exts, ext)) {
			X509_EXTENSION_free(ext);
			goto out_free;
		}
	}
	/* A CA without a subjectKeyIdentifier gets issuer+serial instead. */
	ext = X509V3_EXT_nconf_nid(NULL, &ctx, NID_authority_key_identifier, "keyid:always");
	if (!ext)
		ext = X509V3_EXT_nconf_nid(NULL, &ctx, NID_authority_key_identifier,
					   "issuer:always");
	if (!ext || !sk_X509_EXTENSION_push(exts, ext)) {
		X509_EXTENSION_free(ext);
		goto out_free;
	}
	ERR_clear_error();
	X509_free(dummy);
	return exts;

out_free:
	X509_free(dummy);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	return NULL;
}

static int tls_add_san(X509 *x, const char *name, int kind)
{
	GENERAL_NAMES *gens = GENERAL_NAMES_new();
	GENERAL_NAME *gen = GENERAL_NAME_new();
	ASN1_STRING *str = NULL;
	unsigned char addr[16];
	int rc = -ENOMEM;

	if (!gens || !gen)
		goto out_free;
	if (kind == TLS_NAME_DNS) {
		str = ASN1_IA5STRING_new();
		if (!str || !ASN1_STRING_set(str, name, (int)strlen(name)))
			goto out_free;
		GENERAL_NAME_set0_value(gen, GEN_DNS, str);
	} else {
		int af = kind == TLS_NAME_IP4 ? AF_INET : AF_INET6;

		str = ASN1_OCTET_STRING_new();
		if (!str || inet_pton(af, name, addr) != 1 ||
		    !ASN1_OCTET_STRING_set(str, addr, af == AF_INET ? 4 : 16))
			goto out_free;
		GENERAL_NAME_set0_value(gen, GEN_IPADD, str);
	}
	str = NULL;
	if (!sk_GENERAL_NAME_push(gens, gen))
		goto out_free;
	gen = NULL;
	if (X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_APPEND) == 1)
		rc = 0;

out_free:
	ASN1_STRING_free(str);
	GENERAL_NAME_free(gen);
	GENERAL_NAMES_free(gens);
	return rc;
}

/* A new leaf for a normalised name, signed by the CA; NULL on failure. */
static X509 *tls_leaf_mint(struct tls *t, const char *name, int kind, time_t *ret_not_after)
{
	const ASN1_TIME *ca_after = X509_get0_notAfter(t->ca_cert);
	time_t now = time(NULL);
	time_t not_after = now + (time_t)TLS_LEAF_DAYS * 86400;
	X509 *x;
	int i;

	x = X509_new();
	if (!x)
		return NULL;
	if (!X509_set_version(x, X509_VERSION_3) || tls_set_serial(x) ||
	    !X509_set_issuer_name(x, X509_get_subject_name(t->ca_cert)) ||
	    !X509_time_adj(X509_getm_notBefore(x), -TLS_BACKDATE_SECS, &now) ||
	    !X509_time_adj(X509_getm_notAfter(x), 0, &not_after) || tls_set_cn(x, name) ||
	    !X509_set_pubkey(x, t->leaf_key))
		goto out_free;
	/* Never outlive the CA. */
	if (ASN1_TIME_compare(ca_after, X509_get0_notAfter(x)) < 0) {
		struct tm tm;

		if (!X509_set1_notAfter(x, ca_after) || !ASN1_TIME_to_tm(ca_after, &tm))
			goto out_free;
		not_after = timegm(&tm);
	}
	for (i = 0; i < sk_X509_EXTENSION_num(t->leaf_exts); i++)
		if (!X509_add_ext(x, sk_X509_EXTENSION_value(t->leaf_exts, i), -1))
			goto out_free;
	if (tls_add_san(x, name, kind))
		goto out_free;
	if (X509_sign(x, t->ca_key, t->ca_md) <= 0)
		goto out_free;
	*ret_not_after = not_after;
	return x;

out_free:
	X509_free(x);
	ERR_clear_error();
	return NULL;
}

/*
 * The leaf for a normalised name, with a reference for the caller, minted on
 * a miss. The mint happens outside the lock; when two threads race on one
 * name, the first insert wins and the loser's cert is dropped.
 */
static X509 *tls_leaf_get(struct tls *t, const char *name, int kind)
{
	time_t now = time(NULL);
	time_t not_after;
	X509 *x, *mine;

	pthread_mutex_lock(&t->leaf_lock);
	x = tls_lru_get(&t->leaves, name, now);
	if (x) {
		X509_up_ref(x);
		t->hits++;
	} else {
		t->misses++;
	}
	pthread_mutex_unlock(&t->leaf_lock);
	if (x)
		return x;

	mine = tls_leaf_mint(t, name, kind, &not_after);
	if (!mine)
		return NULL;

	pthread_mutex_lock(&t->leaf_lock);
	x = tls_lru_get(&t->leaves, name, now);
	if (x) {
		X509_up_ref(x);
	} else {
		X509_up_ref(mine);
		tls_lru_put(&t->leaves, name, mine, not_after - TLS_LEAF_REFRESH_SECS);
	}
	pthread_mutex_unlock(&t->leaf_lock);
	if (x) {
		X509_free(mine);
		return x;
	}
	return mine;
}

/* --- CA loading and storing --- */

/* Read a whole small file from an open fd into a fresh buffer. */
static int tls_read_fd(int fd, char **ret_buf, size_t *ret_len)
{
	char *buf = malloc(TLS_PEM_MAX);
	size_t len = 0;
	ssize_t n;

	if (!buf)
		return -ENOMEM;
	for (;;) {
		n = read(fd, buf + len, TLS_PEM_MAX - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int rc = -errno;

			OPENSSL_cleanse(buf, len);
			free(buf);
			return rc;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len == TLS_PEM_MAX) {
			OPENSSL_cleanse(buf, len);
			free(buf);
			return -EFBIG;
		}
	}
	*ret_buf = buf;
	*ret_len = len;
	return 0;
}

/*
 * Open a private key file and check it is a regular file owned by us and
 * not readable by group/other. dfd/nofollow: see openat(2).
 */
static int tls_load_key(int dfd, const char *path, bool nofollow, const char *label,
			EVP_PKEY **ret_key, char *err, size_t errlen)
{
	int flags = O_RDONLY | O_CLOEXEC | (nofollow ? O_NOFOLLOW : 0);
	EVP_PKEY *key = NULL;
	struct stat st;
	size_t len;
	char *buf;
	BIO *bio;
	int fd, rc;

	fd = openat(dfd, path, flags);
	if (fd < 0)
		return tls_fail(err, errlen, -errno, "%s: %s", label, strerror(errno));
	if (fstat(fd, &st) != 0) {
		rc = tls_fail(err, errlen, -errno, "%s: %s", label, strerror(errno));
		goto out_close;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = tls_fail(err, errlen, -EINVAL, "%s: not a regular file", label);
		goto out_close;
	}
	if (st.st_mode & 077) {
		rc = tls_fail(err, errlen, -EPERM, "%s: permission %04o is too open", label,
			      (unsigned)(st.st_mode & 07777));
		goto out_close;
	}
	if (st.st_uid != geteuid()) {
		rc = tls_fail(err, errlen, -EPERM, "%s: owned by uid %u, not %u", label,
			      (unsigned)st.st_uid, (unsigned)geteuid());
		goto out_close;
	}
	rc = tls_read_fd(fd, &buf, &len);
	if (rc) {
		rc = tls_fail(err, errlen, rc, "%s: %s", label, strerror(-rc));
		goto out_close;
	}
	bio = BIO_new_mem_buf(buf, (int)len);
	if (bio)
		key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
	BIO_free(bio);
	OPENSSL_cleanse(buf, len);
	free(buf);
	if (!key) {
		rc = tls_fail_ssl(err, errlen, -EINVAL, label);
		goto out_close;
	}
	*ret_key = key;
	rc = 0;

out_close:
	close(fd);
	return rc;
}

static int tls_load_cert(int dfd, const char *path, bool nofollow, const char *label,
			 X509 **ret_cert, char *err, size_t errlen)
{
	int flags = O_RDONLY | O_CLOEXEC | (nofollow ? O_NOFOLLOW : 0);
	X509 *cert = NULL;
	size_t len;
	char *buf;
	BIO *bio;
	int fd, rc;

	fd = openat(dfd, path, flags);
	if (fd < 0)
		return tls_fail(err, errlen, -errno, "%s: %s", label, strerror(errno));
	rc = tls_read_fd(fd, &buf, &len);
	close(fd);
	if (rc)
		return tls_fail(err, errlen, rc, "%s: %s", label, strerror(-rc));
	bio = BIO_new_mem_buf(buf, (int)len);
	if (bio)
		cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	BIO_free(bio);
	free(buf);
	if (!cert)
		return tls_fail_ssl(err, errlen, -EINVAL, label);
	*ret_cert = cert;
	return 0;
}

/* The CA must be a CA, match its key, and not be expired. */
static int tls_ca_check(X509 *cert, EVP_PKEY *key, char *err, size_t errlen)
{
	if (X509_check_ca(cert) != 1)
		return tls_fail(err, errlen, -EINVAL,
				"CA certificate lacks basicConstraints CA:TRUE");
	if (X509_check_private_key(cert, key) != 1)
		return tls_fail(err, errlen, -EINVAL, "CA key does not match the CA certificate");
	if (X509_cmp_current_time(X509_get0_notAfter(cert)) <= 0)
		return tls_fail(err, errlen, -EKEYEXPIRED, "CA certificate has expired");
	return 0;
}

/* Write buf to dir/name atomically: temp file (O_EXCL, mode), fsync, rename. */
static int tls_write_atomic(int dfd, const char *name, const void *buf, size_t len, mode_t mode)
{
	char tmp[64];
	size_t off = 0;
	ssize_t n;
	int fd, rc = 0;

	snprintf(tmp, sizeof(tmp), ".%s.tmp.%ld", name, (long)getpid());
	unlinkat(dfd, tmp, 0);
	fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	if (fchmod(fd, mode) != 0) {
		rc = -errno;
		goto out_unlink;
	}
	while (off < len) {
		n = write(fd, (const char *)buf + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			goto out_unlink;
		}
		off += (size_t)n;
	}
	if (fsync(fd) != 0) {
		rc = -errno;
		goto out_unlink;
	}
	if (close(fd) != 0) {
		fd = -1;
		rc = -errno;
		goto out_unlink;
	}
	fd = -1;
	if (renameat(dfd, tmp, dfd, name) != 0) {
		rc = -errno;
		goto out_unlink;
	}
	fsync(dfd);
	return 0;

out_unlink:
	if (fd >= 0)
		close(fd);
	unlinkat(dfd, tmp, 0);
	return rc;
}

/* PEM of a key (PKCS#8) or cert into a fresh buffer. */
static int tls_pem(EVP_PKEY *key, X509 *cert, char **ret_buf, size_t *ret_len)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data, *buf;
	long len;
	int ok;

	if (!bio)
		return -ENOMEM;
	if (key)
		ok = PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL);
	else
		ok = PEM_write_bio_X509(bio, cert);
	len = BIO_get_mem_data(bio, &data);
	if (!ok || len <= 0 || !(buf = malloc((size_t)len))) {
		BIO_free(bio);
		return -ENOMEM;
	}
	memcpy(buf, data, (size_t)len);
	OPENSSL_cleanse(data, (size_t)len);
	BIO_free(bio);
	*ret_buf = buf;
	*ret_len = (size_t)len;
	return 0;
}

static int tls_ca_store(int dfd, EVP_PKEY *key, X509 *cert, char *err, size_t errlen)
{
	size_t len;
	char *buf;
	int rc;

	rc = tls_pem(key, NULL, &buf, &len);
	if (rc)
		return tls_fail(err, errlen, rc, "ca.key: cannot encode");
	rc = tls_write_atomic(dfd, "ca.key", buf, len, 0600);
	OPENSSL_cleanse(buf, len);
	free(buf);
	if (rc)
		return tls_fail(err, errlen, rc, "ca.key: %s", strerror(-rc));
	rc = tls_pem(NULL, cert, &buf, &len);
	if (rc)
		return tls_fail(err, errlen, rc, "ca.pem: cannot encode");
	rc = tls_write_atomic(dfd, "ca.pem", buf, len, 0644);
	free(buf);
	if (rc)
		return tls_fail(err, errlen, rc, "ca.pem: %s", strerror(-rc));
	return 0;
}

/* Open (creating 0700 if missing) state_dir; refuse one others may write. */
static int tls_state_dir(const char *dir, int *ret_fd, char *err, size_t errlen)
{
	struct stat st;
	int fd;

	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return tls_fail(err, errlen, -errno, "%s: %s", dir, strerror(errno));
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return tls_fail(err, errlen, -errno, "%s: %s", dir, strerror(errno));
	if (fstat(fd, &st) != 0) {
		int rc = -errno;

		close(fd);
		return tls_fail(err, errlen, rc, "%s: %s", dir, strerror(-rc));
	}
	if (st.st_mode & 022) {
		close(fd);
		return tls_fail(err, errlen, -EPERM, "%s: permission %04o is too open", dir,
				(unsigned)(st.st_mode & 07777));
	}
	*ret_fd = fd;
	return 0;
}

static int tls_ca_setup(struct tls *t, const struct tls_opts *opts, char *err, size_t errlen)
{
	struct stat st;
	bool have_key, have_cert;
	int dfd = -1, rc;

	if (opts->ca_cert || opts->ca_key) {
		if (!opts->ca_cert || !opts->ca_key)
			return tls_fail(err, errlen, -EINVAL,
					"ca_cert and ca_key must be given together");
		rc = tls_load_cert(AT_FDCWD, opts->ca_cert, false, opts->ca_cert, &t->ca_cert,
				   err, errlen);
		if (!rc)
			rc = tls_load_key(AT_FDCWD, opts->ca_key, false, opts->ca_key, &t->ca_key,
					  err, errlen);
		if (!rc)
			rc = tls_ca_check(t->ca_cert, t->ca_key, err, errlen);
		if (rc)
			return rc;
		t->ca_path = strdup(opts->ca_cert);
		return t->ca_path ? 0 : tls_fail(err, errlen, -ENOMEM, "out of memory");
	}
	if (!opts->state_dir || !opts->state_dir[0])
		return tls_fail(err, errlen, -EINVAL, "no state_dir and no ca_cert/ca_key");

	rc = tls_state_dir(opts->state_dir, &dfd, err, errlen);
	if (rc)
		return rc;
	have_key = fstatat(dfd, "ca.key", &st, AT_SYMLINK_NOFOLLOW) == 0;
	have_cert = fstatat(dfd, "ca.pem", &st, AT_SYMLINK_NOFOLLOW) == 0;
	if (have_cert && !have_key) {
		rc = tls_fail(err, errlen, -ENOENT, "ca.key: missing while ca.pem exists");
		goto out_close;
	}
	if (have_cert) {
		rc = tls_load_key(dfd, "ca.key", true, "ca.key", &t->ca_key, err, errlen);
		if (!rc)
			rc = tls_load_cert(dfd, "ca.pem", true, "ca.pem", &t->ca_cert, err,
					   errlen);
		if (!rc)
			rc = tls_ca_check(t->ca_cert, t->ca_key, err, errlen);
		if (rc)
			goto out_close;
	} else {
		/* A ca.key without ca.pem is a crash between the two renames. */
		t->ca_key = tls_gen_p256();
		if (!t->ca_key) {
			rc = tls_fail_ssl(err, errlen, -ENOMEM, "CA key generation");
			goto out_close;
		}
		t->ca_cert = tls_ca_generate(t->ca_key);
		if (!t->ca_cert) {
			rc = tls_fail_ssl(err, errlen, -ENOMEM, "CA certificate generation");
			goto out_close;
		}
		rc = tls_ca_store(dfd, t->ca_key, t->ca_cert, err, errlen);
		if (rc)
			goto out_close;
	}
	if (asprintf(&t->ca_path, "%s/ca.pem", opts->state_dir) < 0) {
		t->ca_path = NULL;
		rc = tls_fail(err, errlen, -ENOMEM, "out of memory");
	}

out_close:
	close(dfd);
	return rc;
}

/* --- SSL contexts --- */

static struct tls_conn *tls_conn_of(SSL *ssl)
{
	if (tls_ex_idx < 0)
		return NULL;
	return SSL_get_ex_data(ssl, tls_ex_idx);
}

/* ALPN: http/1.1 when offered; otherwise no ALPN at all (never a fatal alert). */
static int tls_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
			   const unsigned char *in, unsigned int inlen, void *arg)
{
	unsigned int i = 0, l;

	while (i < inlen) {
		l = in[i];
		if (l == 0 || l > inlen - i - 1)
			break;
		if (l == sizeof(TLS_ALPN_H1) - 1 && memcmp(in + i + 1, TLS_ALPN_H1, l) == 0) {
			*out = in + i + 1;
			*outlen = (unsigned char)l;
			return SSL_TLSEXT_ERR_OK;
		}
		i += 1 + l;
	}
	return SSL_TLSEXT_ERR_NOACK;
}

/*
 * Runs for every ClientHello (SNI or not), before the certificate is chosen:
 * pick the name (SNI, else the fallback), put its leaf and the leaf key on
 * the SSL. No usable name: unrecognized_name alert.
 */
static int tls_servername_cb(SSL *ssl, int *al, void *arg)
{
	struct tls *t = arg;
	struct tls_conn *c = tls_conn_of(ssl);
	const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	char name[TLS_NAME_MAX + 1];
	int kind, ok;
	X509 *x;

	if (!c) {
		*al = SSL_AD_INTERNAL_ERROR;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	if (sni && sni[0]) {
		kind = tls_name_normalize(sni, true, name);
	} else if (c->fallback_kind) {
		kind = c->fallback_kind;
		memcpy(name, c->fallback, sizeof(name));
	} else {
		kind = -EINVAL;
	}
	if (kind < 0) {
		*al = SSL_AD_UNRECOGNIZED_NAME;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	x = tls_leaf_get(t, name, kind);
	if (!x) {
		*al = SSL_AD_INTERNAL_ERROR;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	ok = SSL_use_cert_and_key(ssl, x, t->leaf_key, NULL, 1);
	X509_free(x);
	if (ok != 1) {
		*al = SSL_AD_INTERNAL_ERROR;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	memcpy(c->name, name, sizeof(name));
	return SSL_TLSEXT_ERR_OK;
}

static int tls_server_ctx(struct tls *t, char *err, size_t errlen)
{
	static const unsigned char sid_ctx[] = "sluice";
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	if (!ctx)
		return tls_fail_ssl(err, errlen, -ENOMEM, "server SSL_CTX");
	t->server_ctx = ctx;
	/* Server order (AES-128-GCM first: cheapest with AES-NI), but a client
	 * that puts ChaCha20 first (no AES hardware) gets it. */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
					 SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_PRIORITIZE_CHACHA);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
				      SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
	    !SSL_CTX_set1_groups_list(ctx, "X25519:P-256:P-384") ||
	    !SSL_CTX_set_cipher_list(ctx, TLS_SERVER_CIPHERS12) ||
	    !SSL_CTX_set_ciphersuites(ctx, TLS_SERVER_CIPHERS13) ||
	    !SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1))
		return tls_fail_ssl(err, errlen, -EINVAL, "server SSL_CTX setup");
	/* Stateless tickets for TLS 1.2 and 1.3; one ticket per 1.3 handshake.
	 * No server-side session-ID cache: it is one locked table shared by all
	 * workers and OpenSSL walks it whole every 255 handshakes (measured:
	 * OPENSSL_LH_doall_arg in the new-connection profile); tickets resume
	 * without it. */
	SSL_CTX_set_num_tickets(ctx, 1);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_alpn_select_cb(ctx, tls_alpn_select, t);
	SSL_CTX_set_tlsext_servername_callback(ctx, tls_servername_cb);
	SSL_CTX_set_tlsext_servername_arg(ctx, t);
	return 0;
}

/*
 * A client session (TLS 1.2 handshake or TLS 1.3 ticket) for its host goes
 * into our LRU, keyed by the exact host (never shared by name). We keep a
 * copy: OpenSSL marks the connection's own session not resumable when the
 * SSL is freed without a close_notify, which upstream relays often do.
 */
static int tls_new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
	struct tls_conn *c = tls_conn_of(ssl);
	SSL_SESSION *copy;
	time_t expires;

	if (!c || !c->name[0] || !SSL_SESSION_is_resumable(sess))
		return 0;
	copy = SSL_SESSION_dup(sess);
	if (!copy) {
		ERR_clear_error();
		return 0;
	}
	expires = (time_t)SSL_SESSION_get_time(copy) + (time_t)SSL_SESSION_get_timeout(copy);
	pthread_mutex_lock(&c->t->sess_lock);
	tls_lru_put(&c->t->sessions, c->name, copy, expires);
	pthread_mutex_unlock(&c->t->sess_lock);
	return 0;
}

/* A client SSL_CTX trusting upstream_ca (NULL: the system store). With
 * resume=false it keeps no sessions at all. */
static int tls_client_ctx_build(SSL_CTX **ret_ctx, const char *upstream_ca, bool resume, char *err,
				size_t errlen)
{
	static const unsigned char alpn[] = "\x08" TLS_ALPN_H1;
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (!ctx)
		return tls_fail_ssl(err, errlen, -ENOMEM, "client SSL_CTX");
	*ret_ctx = ctx;
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
				      SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
	    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1) != 0)
		return tls_fail_ssl(err, errlen, -EINVAL, "client SSL_CTX setup");
	if (upstream_ca) {
		if (access(upstream_ca, R_OK) != 0)
			return tls_fail(err, errlen, -errno, "%s: %s", upstream_ca,
					strerror(errno));
		if (!SSL_CTX_load_verify_file(ctx, upstream_ca))
			return tls_fail_ssl(err, errlen, -EINVAL, upstream_ca);
	} else if (!SSL_CTX_set_default_verify_paths(ctx)) {
		return tls_fail_ssl(err, errlen, -EINVAL, "system trust store");
	}
	if (!resume) {
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
		return 0;
	}
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
						    SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(ctx, tls_new_session_cb);
	return 0;
}

static int tls_client_ctx(struct tls *t, const char *upstream_ca, char *err, size_t errlen)
{
	return tls_client_ctx_build(&t->client_ctx, upstream_ca, true, err, errlen);
}

struct tls_client {
	SSL_CTX *ctx;
};

int tls_client_ctx_new(struct tls *t, const char *ca_file, struct tls_client **ret, char *err,
		       size_t errlen)
{
	struct tls_client *c = calloc(1, sizeof(*c));
	int r;

	(void)t;
	if (!c)
		return tls_fail(err, errlen, -ENOMEM, "out of memory");
	r = tls_client_ctx_build(&c->ctx, ca_file, false, err, errlen);
	if (r < 0) {
		SSL_CTX_free(c->ctx);
		free(c);
		return r;
	}
	*ret = c;
	return 0;
}

void tls_client_ctx_free(void *p)
{
	struct tls_client *c = p;

	if (!c)
		return;
	SSL_CTX_free(c->ctx);
	free(c);
}

/* --- exported --- */

int tls_init(const struct tls_opts *opts, struct tls **ret_tls, char *err, size_t errlen)
{
	unsigned cap = opts && opts->cert_cache_size ? opts->cert_cache_size : TLS_CACHE_DEFAULT;
	struct tls *t;
	int rc;

	if (err && errlen)
		err[0] = '\0';
	if (!opts || !ret_tls)
		return tls_fail(err, errlen, -EINVAL, "missing options");
	if (cap > TLS_CACHE_MAX)
		return tls_fail(err, errlen, -EINVAL, "cert_cache_size %u is over %u", cap,
				TLS_CACHE_MAX);
	pthread_once(&tls_ex_once, tls_ex_init);
	if (tls_ex_idx < 0)
		return tls_fail(err, errlen, -ENOMEM, "SSL ex_data index");

	t = calloc(1, sizeof(*t));
	if (!t)
		return tls_fail(err, errlen, -ENOMEM, "out of memory");
	pthread_mutex_init(&t->leaf_lock, NULL);
	pthread_mutex_init(&t->sess_lock, NULL);
	if (tls_lru_init(&t->leaves, cap, tls_x509_free) ||
	    tls_lru_init(&t->sessions, TLS_SESSION_CACHE_SIZE, tls_session_free)) {
		rc = tls_fail(err, errlen, -ENOMEM, "out of memory");
		goto out_free;
	}
	rc = tls_ca_setup(t, opts, err, errlen);
	if (rc)
		goto out_free;
	t->ca_md = tls_md_for(t->ca_key);
	t->leaf_key = tls_gen_p256();
	if (!t->leaf_key) {
		rc = tls_fail_ssl(err, errlen, -ENOMEM, "leaf key generation");
		goto out_free;
	}
	t->leaf_exts = tls_leaf_exts(t->ca_cert, t->leaf_key);
	if (!t->leaf_exts) {
		rc = tls_fail_ssl(err, errlen, -EINVAL, "leaf extensions");
		goto out_free;
	}
	rc = tls_server_ctx(t, err, errlen);
	if (!rc)
		rc = tls_client_ctx(t, opts->upstream_ca, err, errlen);
	if (rc)
		goto out_free;
	ERR_clear_error();
	*ret_tls = t;
	return 0;

out_free:
	tls_free(t);
	return rc;
}

void tls_free(struct tls *t)
{
	if (!t)
		return;
	SSL_CTX_free(t->server_ctx);
	SSL_CTX_free(t->client_ctx);
	tls_lru_destroy(&t->leaves);
	tls_lru_destroy(&t->sessions);
	sk_X509_EXTENSION_pop_free(t->leaf_exts, X509_EXTENSION_free);
	EVP_PKEY_free(t->leaf_key);
	EVP_PKEY_free(t->ca_key);
	X509_free(t->ca_cert);
	free(t->ca_path);
	pthread_mutex_destroy(&t->leaf_lock);
	pthread_mutex_destroy(&t->sess_lock);
	free(t);
}

const char *tls_ca_path(const struct tls *t)
{
	return t->ca_path;
}

X509 *tls_ca_cert(const struct tls *t)
{
	return t->ca_cert;
}

static SSL *tls_ssl_new(struct tls *t, SSL_CTX *ctx, struct tls_conn **ret_conn)
{
	struct tls_conn *c;
	SSL *ssl;

	c = calloc(1, sizeof(*c));
	if (!c) {
		errno = ENOMEM;
		return NULL;
	}
	c->t = t;
	ssl = SSL_new(ctx);
	if (!ssl || !SSL_set_ex_data(ssl, tls_ex_idx, c)) {
		SSL_free(ssl);
		free(c);
		ERR_clear_error();
		errno = ENOMEM;
		return NULL;
	}
	*ret_conn = c;
	return ssl;
}

SSL *tls_server_new(struct tls *t, const char *fallback_name)
{
	char fallback[TLS_NAME_MAX + 1];
	int kind = 0;
	struct tls_conn *c;
	SSL *ssl;

	if (fallback_name) {
		kind = tls_name_normalize(fallback_name, false, fallback);
		if (kind < 0) {
			errno = EINVAL;
			return NULL;
		}
	}
	ssl = tls_ssl_new(t, t->server_ctx, &c);
	if (!ssl)
		return NULL;
	if (kind) {
		memcpy(c->fallback, fallback, sizeof(fallback));
		c->fallback_kind = kind;
	}
	SSL_set_accept_state(ssl);
	return ssl;
}

const char *tls_server_name(SSL *ssl)
{
	struct tls_conn *c = ssl ? tls_conn_of(ssl) : NULL;

	return c && c->name[0] ? c->name : NULL;
}

SSL *tls_client_new(struct tls *t, const char *host)
{
	return tls_client_new_in(t, NULL, host);
}

SSL *tls_client_new_in(struct tls *t, const struct tls_client *tc, const char *host)
{
	char name[TLS_NAME_MAX + 1];
	SSL_SESSION *sess, *cached;
	struct tls_conn *c;
	int kind;
	SSL *ssl;

	kind = tls_name_normalize(host, false, name);
	if (kind < 0) {
		errno = EINVAL;
		return NULL;
	}
	ssl = tls_ssl_new(t, tc ? tc->ctx : t->client_ctx, &c);
	if (!ssl)
		return NULL;
	memcpy(c->name, name, sizeof(name));
	if (kind == TLS_NAME_DNS) {
		if (!SSL_set_tlsext_host_name(ssl, name) || !SSL_set1_host(ssl, name))
			goto out_free;
		SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	} else if (!X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name)) {
		goto out_free;
	}

	/* A policy's own trust store never resumes from the shared cache: a
	 * resumed session skips verification against that store. */
	if (tc) {
		SSL_set_connect_state(ssl);
		return ssl;
	}
	/* Each connection resumes from its own copy: OpenSSL may mark the
	 * session it was given (unclean close), and cached copies stay pristine. */
	pthread_mutex_lock(&t->sess_lock);
	cached = tls_lru_get(&t->sessions, name, time(NULL));
	sess = cached ? SSL_SESSION_dup(cached) : NULL;
	pthread_mutex_unlock(&t->sess_lock);
	if (sess) {
		SSL_set_session(ssl, sess);
		SSL_SESSION_free(sess);
	} else if (cached) {
		ERR_clear_error();	/* no copy: a full handshake, not an error */
	}
	SSL_set_connect_state(ssl);
	return ssl;

out_free:
	SSL_free(ssl);
	ERR_clear_error();
	errno = ENOMEM;
	return NULL;
}

void tls_cache_stats(struct tls *t, unsigned long *ret_hits, unsigned long *ret_misses)
{
	pthread_mutex_lock(&t->leaf_lock);
	if (ret_hits)
		*ret_hits = t->hits;
	if (ret_misses)
		*ret_misses = t->misses;
	pthread_mutex_unlock(&t->leaf_lock);
}
