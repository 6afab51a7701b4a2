/* SPDX-License-Identifier: MIT */
/*
 * users.h - local domains, their users and their aliases: the table the
 * reactors answer RCPT and AUTH from.
 *
 * A local domain is a directory <config>/domains/<domain>/ (made by `ortoo
 * domain add`); its users file holds one "address:argon2id-string" per line
 * (libsodium crypto_pwhash_str), '#' comments and blank lines allowed; its
 * aliases file is described in core/aliases.h.  Loaded into an immutable
 * table (a reload builds a new one and the reactors swap it in); lookups are
 * case-insensitive on the domain, and on the local part too unless the table
 * was loaded case-sensitive ([local] case_sensitive = on).  Resolving a
 * recipient through users, aliases and the catch-all is core/recipients.h.
 */
#ifndef ORTOO_USERS_H
#define ORTOO_USERS_H

#include <stdbool.h>
#include <stddef.h>

#define USERS_KEY_MAX 320 /* "local@domain": 64 + 1 + 255 (RFC 5321 4.5.3.1) */

struct users;
struct aliases;

/* How a table is loaded (from [local]). */
struct users_opts {
    bool case_sensitive;          /* local parts compare exactly */
    bool allow_pipe;              /* "|command" alias targets allowed */
    const char *plus_separator;   /* characters that start a +tag ("" off;
                                     NULL: "+") */
    /* Problems that do not stop the load (an alias target that names
     * nobody), one "file:line: message" per call; NULL: not reported. */
    void (*warn)(void *arg, const char *msg);
    void *warn_arg;
};

/*
 * Load every domain under config_dir/domains: users, then aliases, then the
 * checks of core/recipients.c (alias loops and chain depth are errors).
 * opts NULL: the defaults (case-insensitive, no pipes).  Returns 0 with *out,
 * or -1 with "file:line: message" in err.  Blocking (reads files).
 */
int users_load_opts(const char *config_dir, const struct users_opts *opts, struct users **out,
                    char *err, size_t errlen);
/* users_load_opts() with the defaults. */
int users_load(const char *config_dir, struct users **out, char *err, size_t errlen);
void users_free(struct users *u);

/* The aliases of every local domain (owned by the table). */
const struct aliases *users_aliases(const struct users *u);

/* True when local parts compare exactly in this table. */
bool users_case_sensitive(const struct users *u);

/* The plus-addressing separators of this table ("" when off). */
const char *users_plus_separator(const struct users *u);

/*
 * The table's key for addr (len bytes, "local@domain", last '@'): domain
 * lowercased, local part lowercased unless case-sensitive.  Writes it with a
 * NUL into key[USERS_KEY_MAX + 1] and returns its length, or -1 when addr
 * has no '@', holds a NUL or is too long.
 */
int users_key(const struct users *u, const char *addr, size_t len, char *key);

/* The address of the first user listed in domain's users file (the
 * domain's owner for postmaster@ and abuse@), or NULL. */
const char *users_first(const struct users *u, const char *domain, size_t len);

/* The local domains in order (lowercase names), i < users_domain_count(). */
size_t users_domain_count(const struct users *u);
const char *users_domain_at(const struct users *u, size_t i);

/* True if d (len bytes) is a syntactically valid domain name: labels of
 * letters, digits and inner hyphens, 1..63 octets each, <= 253 in all (RFC
 * 1035 2.3.1, RFC 1123 2.1); also what keeps it safe as a path element. */
bool users_domain_valid(const char *d, size_t len);

/* True if a and b name the same mailbox: local part and domain compared
 * without case (what an authenticated sender may use as MAIL FROM; a
 * case-sensitive table still lets Alice send as alice). */
bool users_addr_equal(const char *a, size_t alen, const char *b, size_t blen);

/* True if domain (len bytes) is one of ours. */
bool users_is_local_domain(const struct users *u, const char *domain, size_t len);

/* Hash string for address "local@domain" (len bytes), or NULL if none.
 * The returned string belongs to the table. */
const char *users_hash(const struct users *u, const char *addr, size_t len);

/* The user's address as the table keys it (owned by the table), or NULL. */
const char *users_find(const struct users *u, const char *addr, size_t len);

/* --- Editing the users file (CLI). --- */

/* Add or replace a user (a line whose address differs only in the case of
 * its local part is replaced too).  The domain must be local already: its
 * directory domains/<domain>/ must exist (else -1 with err "... is not a
 * local domain").  The file is rewritten atomically (temp file + fsync +
 * rename).  Returns 0 or -1 with err. */
int users_file_set(const char *config_dir, const char *addr, const char *hash,
                   char *err, size_t errlen);
/* Remove a user (local part compared without case).  Returns 0, 1 if
 * absent, -1 on error. */
int users_file_del(const char *config_dir, const char *addr, char *err, size_t errlen);

/*
 * Find domain's directory under config_dir/domains (its name compared
 * without case) and write its path into path[cap].  Returns 0, 1 when the
 * domain is not local, or -1 with errno.  Blocking.
 */
int users_domain_dir(const char *config_dir, const char *domain, char *path, size_t cap);

/*
 * Make domain local: create domains/<domain>/ (lowercase name, mode 0750,
 * the config directory's group) with a commented aliases file, fsync'ed.
 * Returns 0, 1 if it is local already, -1 with err.  Blocking.
 */
int users_domain_add(const char *config_dir, const char *domain, char *err, size_t errlen);

/*
 * Remove domain's directory.  Without force only an empty domain goes: no
 * user, no alias and nothing else in the directory (comment-only users and
 * aliases files count as empty); otherwise 2 with err saying what is in
 * it.  Returns 0, 1 if the domain is not local, 2 (not empty), or -1 with
 * err.  Blocking.
 */
int users_domain_del(const char *config_dir, const char *domain, bool force, char *err,
                     size_t errlen);

/* Hash a password with argon2id (crypto_pwhash_str, interactive limits).
 * Blocking (tens of ms).  Returns 0 or -1. */
int users_hash_password(const char *pw, size_t len, char out[128]);
/* Verify a password against a hash.  Blocking.  Returns true if it matches. */
bool users_verify_password(const char *hash, const char *pw, size_t len);

#endif
