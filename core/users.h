/* SPDX-License-Identifier: MIT */
/*
 * users.h - local domains and their users.
 *
 * A local domain is a directory <config>/domains/<domain>/ ; its users file
 * holds one "address:argon2id-string" per line (libsodium
 * crypto_pwhash_str), '#' comments and blank lines allowed.  Loaded once into
 * an immutable table (reload builds a new one); lookups are case-insensitive
 * on the domain and exact on the local part.
 */
#ifndef ORTOO_USERS_H
#define ORTOO_USERS_H

#include <stdbool.h>
#include <stddef.h>

struct users;

/* Load every domain under config_dir/domains.  Returns 0 or -1 with err. */
int users_load(const char *config_dir, struct users **out, char *err, size_t errlen);
void users_free(struct users *u);

/* True if d (len bytes) is a syntactically valid domain name: labels of
 * letters, digits and inner hyphens, 1..63 octets each, <= 253 in all (RFC
 * 1035 2.3.1, RFC 1123 2.1); also what keeps it safe as a path element. */
bool users_domain_valid(const char *d, size_t len);

/* True if a and b name the same mailbox by the table's rule: local part
 * exact, domain case-insensitive. */
bool users_addr_equal(const char *a, size_t alen, const char *b, size_t blen);

/* True if domain (len bytes) is one of ours. */
bool users_is_local_domain(const struct users *u, const char *domain, size_t len);

/* Hash string for address "local@domain" (len bytes), or NULL if none. */
const char *users_hash(const struct users *u, const char *addr, size_t len);

/* --- Editing the users file (CLI). --- */

/* Add or replace a user; creates the domain directory if needed.  The file
 * is rewritten atomically (temp file + fsync + rename).  Returns 0 or -1
 * with err. */
int users_file_set(const char *config_dir, const char *addr, const char *hash,
                   char *err, size_t errlen);
/* Remove a user.  Returns 0, 1 if absent, -1 on error. */
int users_file_del(const char *config_dir, const char *addr, char *err, size_t errlen);

/* Hash a password with argon2id (crypto_pwhash_str, interactive limits).
 * Blocking (tens of ms).  Returns 0 or -1. */
int users_hash_password(const char *pw, size_t len, char out[128]);
/* Verify a password against a hash.  Blocking.  Returns true if it matches. */
bool users_verify_password(const char *hash, const char *pw, size_t len);

#endif
