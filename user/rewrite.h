/* SPDX-License-Identifier: MIT */
/*
 * rewrite: what a policy's secrets mean for one HTTP message.
 *
 * A generation (rw_gen) is compiled once per policy load: the matcher for
 * every placeholder (to detect them anywhere), one swap set per secret (to
 * replace them only where that secret is allowed), and the redaction set
 * (real value -> placeholder) for responses. Connections pin the generation
 * they started with.
 *
 * Requests: every placeholder found in the target or any header value
 * (Basic credentials decoded) must belong to a secret scoped to the request's
 * host, be available, and (for plain http) allow plaintext; otherwise the
 * request is refused before anything goes upstream. Placeholders are then
 * replaced only in the places the secret names (headers, any header, Basic
 * user/password, query parameters); a body rewrite is set up when the secret
 * allows the request's content type. Responses: real values in header values
 * become placeholders; bodies go through rw_body_set(..., false).
 * Pure: no I/O, no logs.
 */
#ifndef SLUICE_REWRITE_H
#define SLUICE_REWRITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http1.h"

struct pol;
struct swap_set;
struct rw_gen;

/* Compile the generation for pol (takes its own reference). 0, -E2BIG (more
 * than 64 secrets), -ENOMEM. */
int rw_gen_new(struct pol *pol, struct rw_gen **ret_gen);
struct rw_gen *rw_gen_ref(struct rw_gen *g);
void rw_gen_unref(struct rw_gen *g);
struct pol *rw_gen_pol(const struct rw_gen *g);
/* true when the policy has at least one available secret (bodies of
 * responses must then be scanned for real values). */
bool rw_gen_redacts(const struct rw_gen *g);
/* Worst-case growth of a body through the request (placeholder -> value) or
 * response (value -> placeholder) set: output <= input * ratio + held-back. */
size_t rw_gen_ratio(const struct rw_gen *g, bool request);
/* Set for body streams: request=true is built per request (rw_req.body_set);
 * request=false is the shared redaction set. */
const struct swap_set *rw_gen_redact_set(const struct rw_gen *g);
/* The sandbox deny set that goes with this generation (owned by it from now
 * on; freed with it). Checked at every upstream dial (DNS rebinding). */
struct denyset;
void rw_gen_set_deny(struct rw_gen *g, struct denyset *d);
const struct denyset *rw_gen_deny(const struct rw_gen *g);

/* The policy's upstream trust store (opaque; freed with the generation by
 * free_fn). NULL: the daemon's default. */
void rw_gen_set_upstream_tls(struct rw_gen *g, void *tc, void (*free_fn)(void *));
void *rw_gen_upstream_tls(const struct rw_gen *g);

/* Managed mode: who the sandbox belongs to, and whether it may talk at all.
 * RW_ACTIVE is the only state that serves requests. */
enum rw_state { RW_ACTIVE = 1, RW_PENDING = 2, RW_DISABLED = 3, RW_REVOKED = 4 };
void rw_gen_set_principal(struct rw_gen *g, const char *principal, enum rw_state st);
const char *rw_gen_principal(const struct rw_gen *g);
enum rw_state rw_gen_state(const struct rw_gen *g);

/* Names of the secrets in mask, comma-free array for audit (max n). */
unsigned rw_secret_names(const struct rw_gen *g, uint64_t mask, const char **names, unsigned n);

struct rw_field {
	unsigned index;         /* header index in the http1_head */
	char *value;            /* new value (may hold a real secret) */
	size_t len;
};

struct rw_req {
	/* refusal: status 0 = go on */
	int status;
	const char *code;       /* secret_out_of_scope | secret_unavailable | ... */
	const char *pstype;     /* RFC 9209 error type */
	const char *secret;     /* name of the secret concerned */
	uint64_t found;         /* every secret whose placeholder is in the head */
	char detail[300];
	/* rewrites (all may hold real values; rw_req_clear() zeroes them) */
	struct rw_field *fields;
	unsigned nfields;
	char *target;           /* new request target when the query changed */
	size_t target_len;
	struct swap_set *body_set;      /* non-NULL: stream the body through it */
	uint64_t body_mask;
	size_t body_max;                /* smallest max_bytes of the body secrets */
	/* encoded forms sluice built (Basic tokens): redact them in the response */
	struct swap_set *resp_set;      /* NULL: the generation's redaction set */
	char *extra_from[8], *extra_to[8];
	size_t extra_from_len[8], extra_to_len[8];
	unsigned extra_id[8], nextra;
	uint64_t swapped;       /* secrets replaced in the head */
};

/*
 * Decide and rewrite one request head. host is the normalised upstream
 * name, plaintext true for http://. target is the origin-form target.
 * Returns 0 (res->status tells refusal), -ENOMEM.
 */
int rw_request(const struct rw_gen *g, const char *host, bool plaintext,
	       const struct http1_head *h, const char *target, size_t tlen, struct rw_req *res);
void rw_req_clear(struct rw_req *res);

/*
 * Response head: new values for header values that contain a real secret.
 * ret_values[i] is NULL (unchanged) or a new value of ret_lens[i] bytes;
 * arrays have h->nf entries, allocated here (rw_resp_free). Returns the
 * number of replacements, -ENOMEM.
 */
int rw_response_headers(const struct swap_set *redact, const struct http1_head *h,
			char ***ret_values, size_t **ret_lens);
/* The detector of every placeholder (hits = secret indexes), for bodies. */
const struct swap_set *rw_gen_detect_set(const struct rw_gen *g);
unsigned rw_gen_nsecrets(const struct rw_gen *g);
/* A body carried these placeholders (mask) to host: 0 when fine, else a
 * refusal in res (status/code/detail) — out of scope, or in scope but in a
 * body sluice did not rewrite (over max_bytes). */
int rw_body_check(const struct rw_gen *g, const char *host, uint64_t mask, struct rw_req *res);
void rw_resp_free(char **values, size_t *lens, unsigned n);

#endif
