/* SPDX-License-Identifier: MIT */
/*
 * auth.h - SMTP AUTH support for the reactors: SASL PLAIN/LOGIN decoding,
 * password verification off the reactor thread, a cache of recent
 * successful verifications, and per-client-address throttling.
 *
 * One struct auth per process, shared by the reactors.  The verification
 * itself (argon2id, ~50 ms) runs on a small worker pool; the result is
 * posted back to the requesting reactor's loop with io_loop_post().  The
 * cache keys are keyed BLAKE2b hashes (crypto_generichash) of user and
 * password under a per-process random secret: no plaintext is kept.
 */
#ifndef ORTOO_AUTH_H
#define ORTOO_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/limits.h"
#include "io/loop.h"

struct auth;
struct users;
struct auth_req;

typedef void (*auth_cb)(struct auth_req *req, bool ok);

/* A verification request, embedded in the session. */
struct auth_req {
    auth_cb cb;              /* runs on loop's thread, never inside auth_verify */
    void *owner;
    struct io_loop *loop;    /* where cb runs */
    /* private: */
    char user[321];
    char pass[257];
    size_t pass_len;
    const char *hash;        /* borrowed from users table */
    bool ok;
    struct auth_req *next;
};

/* What auth_new() needs (from ortoo.conf [auth]). */
struct auth_params {
    unsigned workers;              /* argon2id threads (>= 1) */
    unsigned cache_ttl;            /* seconds a success stays cached; 0: no cache */
    unsigned max_failures;         /* per client prefix per window; 0: no throttle */
    unsigned account_max_failures; /* per account (user name) per window; 0: none */
    unsigned window;               /* seconds of the fixed failure window */
    unsigned max_queue;            /* verifications waiting for a worker; 0: no bound */
};

/* Create the worker pool.  Returns NULL on failure. */
struct auth *auth_new(const struct auth_params *p);
void auth_free(struct auth *a);

/* Point the verifier at a users table (borrowed; swap on reload).  Not
 * thread-safe against in-flight verifications of the old table: call from
 * the main thread while reactors hold the old table until they swap. */
void auth_set_users(struct auth *a, const struct users *u);

/*
 * Start verifying user/password.  The request is copied into req; cb runs
 * later on req->loop with ok.  Unknown users are verified against a dummy
 * hash so that timing does not reveal them.  Returns 0, -EBUSY when
 * max_queue verifications already wait for a worker (cb will not run: the
 * caller answers 454 at once), or -errno.
 */
int auth_verify(struct auth *a, struct auth_req *req, struct io_loop *loop,
                const char *user, size_t user_len, const char *pass,
                size_t pass_len, auth_cb cb);

/*
 * Throttling (thread-safe).  Failures are counted per client prefix (the
 * limits_key: IPv4 /32, IPv6 /64 by default) and per account (the user name
 * as given, domain lower-cased) in a fixed window.  An attempt counts from
 * the moment it is admitted, not when argon2id finishes, so parallel
 * attempts cannot get past the limit: a key is throttled while
 * failures + attempts in flight >= its maximum.  client may be NULL: the
 * attempt then counts for the account only (core/policy.h: a trusted
 * network has no per-prefix limit, so one local app's failures do not
 * lock out the others).  The same client (or NULL) must be given to
 * auth_attempt_end as to auth_attempt_begin.
 */
enum auth_gate { AUTH_GATE_OK = 0, AUTH_GATE_CLIENT, AUTH_GATE_ACCOUNT };
enum auth_outcome { AUTH_OUTCOME_OK = 0, AUTH_OUTCOME_FAILED, AUTH_OUTCOME_ABORTED };

/* True when the client prefix may not try now (checked at the AUTH command,
 * before the user name is known); false for a NULL client. */
bool auth_client_throttled(struct auth *a, const struct limits_key *client);

/* Admit one attempt for client and user: AUTH_GATE_OK counts it in flight
 * against both (end it with auth_attempt_end exactly once); otherwise
 * nothing is counted and the verdict names the key that is throttled. */
enum auth_gate auth_attempt_begin(struct auth *a, const struct limits_key *client,
                                  const char *user);
/* The attempt is over: FAILED adds a failure to both keys; OK clears the
 * account's failures (the client prefix's stay: one good account must not
 * buy guesses at others); ABORTED (never verified, e.g. queue full) only
 * ends the in-flight count. */
void auth_attempt_end(struct auth *a, const struct limits_key *client, const char *user,
                      enum auth_outcome outcome);

/*
 * Decode SASL PLAIN initial response (base64 "authzid\0authcid\0passwd",
 * RFC 4616).  Writes into user/pass (NUL-terminated).  Returns 0 or -1.
 */
int auth_plain_decode(const char *b64, size_t len, char *user, size_t user_cap,
                      char *pass, size_t pass_cap, size_t *pass_len);

/* Base64 decode/encode helpers (libsodium, original variant).  decode
 * returns decoded length or -1. */
long auth_b64_decode(const char *in, size_t len, char *out, size_t cap);
size_t auth_b64_encode(const void *in, size_t len, char *out, size_t cap);

#endif
