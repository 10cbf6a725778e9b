/* SPDX-License-Identifier: MIT */
/*
 * policy internals exposed for tests only. Nothing in the daemon uses this.
 */
#ifndef SLUICE_POLICY_INTERNAL_H
#define SLUICE_POLICY_INTERNAL_H

#include <stddef.h>

/*
 * When set, called with each secret value buffer after it was zeroed
 * (explicit_bzero) on the last pol_unref(), instead of free(): the hook owns
 * the buffer. Lets a test check that the bytes really are zero. NULL in
 * production.
 */
extern void (*pol_test_secret_free_hook)(unsigned char *value, size_t len);

#endif /* SLUICE_POLICY_INTERNAL_H */
