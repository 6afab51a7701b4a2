/* SPDX-License-Identifier: MIT */
/*
 * recipients.h - what a recipient address means: refused, relayed, or
 * delivered to local mailboxes, forwarded, or piped.
 *
 * The session asks at RCPT time (accept or 550 5.1.1, never a later bounce:
 * no backscatter); delivery asks again when it delivers, because the spool
 * stores the recipient as the client gave it and the expansion is redone
 * then (aliases changed in between apply; an SRS address is checked against
 * the time the message was received).  For a local domain, in order:
 *
 *  1. SRS0=/SRS1= addresses (when an SRS secret is configured): a bounce to
 *     mail we forwarded; valid ones go back to the original sender, forged
 *     or expired ones are refused (RCPT_SRS_INVALID).
 *  2. The name as given: an alias (expanded), else a user (their mailbox).
 *  3. With plus-addressing, the name up to the first separator character
 *     ([local] plus_separator, default "+"): user+tag@ is user@.
 *  4. postmaster@ and abuse@ (RFC 5321 4.5.1; any case): the first user of
 *     the domain's users file, else the catch-all, else the domain's first
 *     alias.  postmaster@<our hostname> goes to the postmaster of the local
 *     domain the host name is under (else the first local domain).
 *  5. The catch-all alias "*", only when nothing above matched.
 *  6. Otherwise unknown: RCPT_UNKNOWN.
 *
 * Alias targets resolve by steps 2-4 (not by the catch-all, not by SRS);
 * a target that names nobody is skipped (recipients_verify() warns about it
 * at load), and an alias that expands to nothing at all is unknown.  Chains
 * are followed to RCPT_DEPTH_MAX; loops and deeper chains are refused when
 * the table is loaded.  Local parts compare without case unless the table is
 * case-sensitive; domains always do.  Duplicate destinations are merged.
 *
 * Pure lookups in an immutable table: no I/O, no locks; callable on a
 * reactor.  Strings in a result belong to the table (or to the result),
 * valid while both live.
 */
#ifndef ORTOO_RECIPIENTS_H
#define ORTOO_RECIPIENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

struct config;
struct users;

#define RCPT_DEPTH_MAX 8      /* alias -> alias -> ... links followed */
#define RCPT_DESTS_MAX 1000   /* destinations of one recipient */

enum rcpt_status {
    RCPT_LOCAL = 0,      /* accepted: dests says where it goes */
    RCPT_SRS,            /* accepted: a valid SRS address; dests[0] is the
                            address the bounce goes back to (RCPT_FORWARD) */
    RCPT_NOT_LOCAL,      /* not one of our domains: relay rules apply */
    RCPT_UNKNOWN,        /* local domain, nobody by that name: 550 5.1.1 */
    RCPT_SRS_INVALID,    /* forged, expired or malformed SRS address: 550 5.1.1 */
};

enum rcpt_dest_kind {
    RCPT_MAILBOX = 0,    /* a local user's Maildir */
    RCPT_FORWARD,        /* a remote address (send with an SRS sender) */
    RCPT_PIPE,           /* a command ("|command" alias target) */
};

/* One destination. */
struct rcpt_dest {
    enum rcpt_dest_kind kind;
    const char *addr;    /* MAILBOX: the user's address as the table keys it
                            ("local@domain", lowercased unless case-sensitive);
                            FORWARD: the remote address; PIPE: the command */
    size_t local_len;    /* MAILBOX: addr[0..local_len) is the local part
                            (addr + local_len + 1 the domain) */
    const char *domain;  /* FORWARD/PIPE: the local domain whose alias led
                            here (the SRS domain); NULL for an SRS bounce;
                            MAILBOX: the user's domain */
    const char *alias;   /* FORWARD/PIPE: the alias ("name@domain", as the
                            table keys it) whose target this is; NULL for an
                            SRS bounce and for MAILBOX.  With duplicates
                            merged, the first alias that led here */
};

/*
 * The answer.  Zero it before the first use; free with rcpt_result_free().
 * Invariant: ndests <= cap; ndests > 0 iff status is RCPT_LOCAL or RCPT_SRS.
 */
struct rcpt_result {
    enum rcpt_status status;
    const char *how;         /* for logs: "user", "alias", "plus", "postmaster",
                                "catch-all", "srs"; refusals: "no-such-user",
                                "alias-empty", "srs-forged", "srs-expired",
                                "srs-malformed"; "not-local" */
    struct rcpt_dest *dests; /* owned array */
    size_t ndests, cap;
    char *srs_addr;          /* owned: the reversed SRS address (RCPT_SRS) */
};

/*
 * Resolve addr (len bytes, "local@domain" as in RCPT TO, quoted local parts
 * allowed).  cfg gives the host name and the SRS secrets (cfg->srs, loaded
 * by config_srs_load()); NULL: neither.  now: the time SRS timestamps are
 * checked against (time(NULL) at RCPT; the reception time at delivery).
 * res may be NULL when only the status is wanted.  Returns the status
 * (>= 0; res->status too), or -ELOOP (a chain deeper than RCPT_DEPTH_MAX,
 * which a verified table does not have), -E2BIG (more than RCPT_DESTS_MAX
 * destinations) or -ENOMEM.  Never blocks.
 */
int recipients_resolve(const struct users *u, const struct config *cfg, const char *addr,
                       size_t len, time_t now, struct rcpt_result *res);

/* Free what res owns and zero it (safe on a zeroed result). */
void rcpt_result_free(struct rcpt_result *res);

/*
 * The envelope sender to use when sending to dest: for an RCPT_FORWARD made
 * by a local alias (dest->domain set), sender rewritten with SRS for that
 * domain (srs_forward()); otherwise, or for the null sender, or when SRS is
 * off (no secret in cfg), sender as it is.  Writes it NUL-terminated into
 * out[cap] and returns its length, or -ENOSPC / -EINVAL (a malformed
 * SRS sender; callers then keep the original).  now: time(NULL).
 */
int recipients_forward_sender(const struct config *cfg, const char *sender,
                              const struct rcpt_dest *dest, time_t now, char *out, size_t cap);

/* "local", "srs", "not-local", "unknown", "srs-invalid". */
const char *rcpt_status_name(int status);

/*
 * Check the alias chains of a freshly loaded table (called by
 * users_load_opts()): a loop or a chain longer than RCPT_DEPTH_MAX is an
 * error ("file:line: alias loop: a@d -> b@d -> a@d"); a local target that
 * names nobody, or a "\name" that is no user, is a warning passed to warn
 * (may be NULL).  Returns 0 or -1 with err.
 */
int recipients_verify(const struct users *u, void (*warn)(void *arg, const char *msg),
                      void *warn_arg, char *err, size_t errlen);

#endif
