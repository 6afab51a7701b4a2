/* SPDX-License-Identifier: MIT */
/*
 * auth.h - SMTP AUTH support for the reactors: SASL PLAIN/LOGIN decoding,
 * password verification off the reactor thread, a cache of recent
 * successful verifications, and throttling per client prefix and per
 * account.
 *
 * One struct auth per process, shared by the reactors.  The verification
 * itself (argon2id, ~50 ms and 64 MiB) runs on a small worker pool; the
 * result is posted back to the requesting reactor's loop with
 * io_loop_post().  Verifications are single-flight: an attempt with the
 * same user and password as one in flight waits for that one's result
 * instead of running argon2id again, whichever reactor it came from.  The
 * cache and the single-flight table are keyed by a keyed BLAKE2b hash
 * (crypto_generichash) of user, password and stored hash under a
 * per-process random secret: no plaintext is kept, and the one clear copy
 * of a password being verified is wiped when argon2id is done with it.
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
struct auth_group;

typedef void (*auth_cb)(struct auth_req *req, bool ok);

/* Which key refused an attempt (auth_verify's -EAGAIN). */
enum auth_gate { AUTH_GATE_OK = 0, AUTH_GATE_CLIENT, AUTH_GATE_ACCOUNT };

/* How an admitted attempt is answered (auth_verify's return value). */
enum auth_path {
    AUTH_PATH_ARGON2ID = 0, /* a new verification on the worker pool */
    AUTH_PATH_SHARED,       /* joined an identical verification in flight */
    AUTH_PATH_CACHE,        /* a recent success of the same user and password */
    AUTH_PATH_INVALID       /* input no user can have (over-long, NUL): fails */
};

/*
 * A verification request, embedded in the session.  Between auth_verify()
 * returning >= 0 and cb (or auth_cancel), the private part belongs to
 * struct auth: the owner must not free or reuse req without auth_cancel().
 */
struct auth_req {
    auth_cb cb;              /* runs on loop's thread, never inside auth_verify */
    void *owner;
    struct io_loop *loop;    /* where cb runs */
    char user[321];          /* the user name as given ("" if it was invalid) */
    enum auth_gate gate;     /* after -EAGAIN: the key that is throttled */
    /* private: */
    bool ok;
    struct auth_group *group;      /* waiting for this result; NULL when not */
    struct auth_req *prev, *next;  /* in group's waiters */
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
/* Stop the workers and free everything.  Call when no loop that may get a
 * result runs any more and no request waits (every auth_verify ended in a
 * callback or auth_cancel, or its loop is gone): results still queued to a
 * loop are dropped with their memory. */
void auth_free(struct auth *a);

/* Point the verifier at a users table (borrowed; swap on reload).  The
 * table must outlive the auth_verify calls that look users up in it (a
 * verification in flight keeps its own copy of the hash). */
void auth_set_users(struct auth *a, const struct users *u);

/*
 * Admit and start verifying one AUTH attempt of user/password from client
 * (the limits_key of its prefix, or NULL for a client without a per-prefix
 * count: core/policy.h).  Call on loop's thread; cb later runs there with
 * the result, never inside this call.  The password is borrowed for the
 * call only (the caller wipes its buffer); the user name is copied into
 * req->user.
 *
 * Throttling: failures are counted per client prefix (IPv4 /32, IPv6 /64
 * by default) and per account (the user name as given, domain
 * lower-cased) in a fixed window.  An attempt is refused while its prefix
 * or its account is at its maximum of failures + verifications in flight,
 * so attempts sent in parallel cannot outrun the limit.
 *
 * Single flight: an admitted attempt whose user and password are those of
 * a verification in flight (same keyed digest, same stored hash) joins it:
 * it gets the same result, on its own loop, and counts nothing of its own
 * (it is the same guess); the verification counts once, as one attempt
 * in flight and then one failure or one success, for the account and for
 * the prefix of the attempt that started it.  A distinct password is a
 * distinct verification and counts as such.
 *
 * Returns an enum auth_path (cb will run), or (cb will not run, nothing is
 * counted) -EAGAIN when the prefix or the account is throttled
 * (req->gate says which), -EBUSY when max_queue verifications already
 * wait for a worker, -ENOMEM.  Unknown users are verified against a dummy
 * hash so that timing does not reveal them.
 */
int auth_verify(struct auth *a, struct auth_req *req, struct io_loop *loop,
                const struct limits_key *client, const char *user, size_t user_len,
                const char *pass, size_t pass_len, auth_cb cb);

/*
 * Stop waiting: cb will not run for req, and req may be freed on return.
 * Call on req->loop's thread.  The verification itself goes on (other
 * attempts may share it) and its outcome still counts for the throttle:
 * a client that hangs up has still made its guess.  A no-op when req is
 * not waiting (never started, or its cb already ran).
 */
void auth_cancel(struct auth *a, struct auth_req *req);

/* "argon2id", "shared", "cache", "invalid" (for logs). */
const char *auth_path_name(enum auth_path p);

/* True when the client prefix may not try now (checked at the AUTH command,
 * before the user name is known; thread-safe); false for a NULL client. */
bool auth_client_throttled(struct auth *a, const struct limits_key *client);

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
