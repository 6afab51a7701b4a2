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

/* Create the worker pool (nworkers threads).  cache_ttl seconds; throttle:
 * max_failures per window seconds per client address. */
struct auth *auth_new(unsigned nworkers, unsigned cache_ttl, unsigned max_failures,
                      unsigned window);
void auth_free(struct auth *a);

/* Point the verifier at a users table (borrowed; swap on reload).  Not
 * thread-safe against in-flight verifications of the old table: call from
 * the main thread while reactors hold the old table until they swap. */
void auth_set_users(struct auth *a, const struct users *u);

/*
 * Start verifying user/password.  The request is copied into req; cb runs
 * later on req->loop with ok.  Unknown users are verified against a dummy
 * hash so that timing does not reveal them.  Returns 0 or -errno.
 */
int auth_verify(struct auth *a, struct auth_req *req, struct io_loop *loop,
                const char *user, size_t user_len, const char *pass,
                size_t pass_len, auth_cb cb);

/* Throttling per client address (thread-safe).  auth_throttled() is true
 * when the address has too many recent failures. */
bool auth_throttled(struct auth *a, const char *client_addr);
void auth_note_failure(struct auth *a, const char *client_addr);
void auth_note_success(struct auth *a, const char *client_addr);

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
