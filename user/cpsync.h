/* SPDX-License-Identifier: MIT */
/*
 * cpsync: managed mode's control-plane client. One thread polls
 * POST <url>/v1/sync (docs/control-plane.md is the protocol) with jitter,
 * backs off exponentially on errors, and syncs at once on request. For each
 * sandbox the control plane sent a new config for, it checks the whole entry
 * (schema, limits, config_hash) and only then hands it to the daemon's apply
 * hook; a sandbox whose entry is bad is never applied (its last good config
 * stays), and a round that went wrong anywhere reports done(ok=false).
 *
 * The daemon sees no libcurl: it gets hooks called on the sync thread, and
 * sync_now waiters completed exactly once (after an applied round that
 * started after the call, after a failed one, or when the client stops).
 * The module never logs: errors reach the daemon through the hooks.
 */
#ifndef SLUICE_CPSYNC_H
#define SLUICE_CPSYNC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Limits of the protocol (docs/control-plane.md lists them all). */
#define CPS_BODY_MAX (4 * 1024 * 1024)  /* bytes of a response body */
#define CPS_SANDBOXES_MAX 4096          /* entries in a request or a response */
#define CPS_ID_MAX 255                  /* bytes of a sandbox id */
#define CPS_PRINCIPAL_MAX 256           /* bytes of a principal */
#define CPS_WAITERS_MAX 1024            /* pending cps_sync_now() calls */

/*
 * One sandbox's new config, valid only during the apply call. status is
 * "active", "disabled" or "revoked" (never "unchanged": those are not
 * applied). config_hash ("sha256:<64 hex>") has been checked against the
 * other fields. Secrets are sorted by name (bytewise); values are not
 * NUL-terminated and are zeroed by the client after the call: copy what you
 * keep. policy_yaml is not NUL-terminated either.
 */
struct cps_sandbox_cfg {
	const char *id;
	const char *status;
	const char *principal;
	const char *config_hash;
	const char *policy_yaml;
	size_t policy_len;
	const char *const *secret_names;
	const char *const *secret_values;
	const size_t *secret_lens;
	unsigned nsecrets;
};

struct cps_hooks {
	/* Append one object {"id": "<id>", "applied_hash": "sha256:..." | null} per
	 * sandbox to report (applied_hash: the config_hash last applied, null
	 * before the first). 0, or -errno to fail the round. Sync thread. */
	int (*report)(void *opaque, json_t *sandboxes_array);
	/* Apply one sandbox's new config atomically (compile + swap; see
	 * cps_secret_value()). 0, or -errno with a reason in err (the old config
	 * must then keep serving). Sync thread. */
	int (*apply)(void *opaque, const struct cps_sandbox_cfg *c, char *err, size_t errlen);
	/* Optional (may be NULL): a reported sandbox got no usable config this
	 * round (its entry was invalid, its hash did not match, or the control
	 * plane did not answer for it); for its last_error. Sync thread. */
	void (*rejected)(void *opaque, const char *id, const char *error);
	/* A round finished; error is NULL when ok. For status (last_sync_at,
	 * last_error). Sync thread. */
	void (*done)(void *opaque, bool ok, const char *error);
	void *opaque;
};

/* Zero (or NULL) means the default. */
struct cps_opts {
	const char *url;               /* https://host[:port][/prefix]; http:// only to loopback */
	const char *token;             /* bearer token, printable ASCII, no spaces */
	const char *node;              /* this node's name */
	unsigned interval_ms;          /* 5000: between successful rounds */
	unsigned jitter_pct;           /* 20: each delay is randomised by +-this percent */
	unsigned backoff_max_ms;       /* 60000: the longest delay after failures */
	const char *ca_file;           /* NULL: the system trust store */
	const char *cert_file;         /* client certificate (PEM; a chain may follow), for
					* control planes that require one (mTLS); with key_file */
	const char *key_file;          /* its private key: PEM, unencrypted, a regular file
					* owned by us with no group/other permission */
	unsigned backoff_min_ms;       /* 1000: the delay after the first failure, doubling */
	unsigned connect_timeout_ms;   /* 5000 */
	unsigned timeout_ms;           /* 10000: whole request, connect included */
};

struct cps;

/*
 * Check the options without starting anything, as cps_start() does: url,
 * token and node; ca_file a readable regular file; cert_file and key_file
 * both or neither, only with an https:// url, readable, the certificate and
 * the unencrypted key parse and match, the key file is owned by us and has
 * no group/other permission. For a daemon to refuse to start early. Returns
 * 0, or -EINVAL (bad option or file content), -EPERM (key file permission or
 * owner), -EFBIG (a PEM file over 1 MiB), -ENOMEM, or the -errno of open(2);
 * err says which option and file. Initialises libcurl globally on first use.
 */
int cps_opts_check(const struct cps_opts *o, char *err, size_t errlen);

/*
 * Check the options (cps_opts_check()) and start the sync thread; the first
 * round starts at once. Returns 0 and the client in *ret, or an error of
 * cps_opts_check(), -EINVAL (missing hooks), -ENOMEM, or another -errno. The
 * hooks and the strings of o are copied; hooks->opaque must outlive
 * cps_stop(). The certificate files are checked here, and libcurl reads them
 * again for each new connection to the control plane.
 */
int cps_start(const struct cps_opts *o, const struct cps_hooks *h, struct cps **ret, char *err,
	      size_t errlen);

/*
 * Stop: abort a request in flight, join the thread, complete every pending
 * waiter with ok=false ("stopped"), free c. A hook running at that moment
 * finishes first. NULL is a no-op. Not from a hook or a waiter callback.
 */
void cps_stop(struct cps *c);

/*
 * Ask for a sync now (the poll timer and any backoff are skipped).
 * done_cb(arg, ok, error) runs exactly once, on the sync thread: after a round
 * that STARTED after this call has finished and its configs have been applied
 * (a barrier: the caller's next request sees the new config; ok=false when
 * that round failed anywhere), or with ok=false when the client stops.
 * Returns 0, -ESHUTDOWN when stopping (done_cb is then never called),
 * -EAGAIN with CPS_WAITERS_MAX waiters pending, -ENOMEM. Any thread, hooks
 * and waiter callbacks included.
 */
int cps_sync_now(struct cps *c, void (*done_cb)(void *arg, bool ok, const char *error),
		 void *arg);

struct cps_stats {
	uint64_t attempts, failures, last_success_unix_ms;
	unsigned consecutive_failures;
	unsigned next_delay_ms; /* the delay chosen after the last round (jitter included) */
};
/* A consistent snapshot; any thread. */
void cps_get_stats(struct cps *c, struct cps_stats *ret);

/*
 * A ready-made secret_value callback for pol_load_buffer_ex(): ctx is the
 * const struct cps_sandbox_cfg * being applied; "controlplane:NAME" resolves
 * to the secret NAME the control plane sent. 0 and the value, or -ENOENT.
 */
int cps_secret_value(void *ctx, const char *source, const unsigned char **ret_val,
		     size_t *ret_len);

/*
 * The config hash of docs/control-plane.md ("sha256:" + 64 lower-case hex, 72
 * bytes + NUL into out) over id, status, principal, policy and the secrets
 * (names/values/lens, any order: sorted internally). 0, -ENOMEM, -EINVAL.
 */
int cps_config_hash(const char *id, const char *status, const char *principal,
		    const char *policy, size_t policy_len, const char *const *names,
		    const char *const *values, const size_t *lens, unsigned n, char out[80]);

#endif /* SLUICE_CPSYNC_H */
