/* SPDX-License-Identifier: MIT */
/*
 * auth.c - SMTP AUTH machinery (see auth.h): password verification on a
 * worker pool, single-flight for identical attempts, a cache of recent
 * successes, throttling per client prefix and per account, and the SASL
 * PLAIN / base64 decoding the session needs.
 *
 * Flow of auth_verify(), on a reactor: the user's hash is looked up in the
 * current users table and a keyed BLAKE2b digest of (user, password, hash)
 * is made.  Then, under the queue lock: the throttle admits the attempt or
 * refuses it (-EAGAIN); an admitted attempt whose digest is that of a
 * verification in flight joins it (a waiter in the flight's group for the
 * caller's loop); else a success cached under the digest answers it; else
 * a new flight (the only clear copy of the password) joins the queue
 * served by N worker threads that run argon2id (crypto_pwhash_str_verify,
 * tens of ms and 64 MiB each).  Unknown users are verified against a dummy
 * hash made at start-up so that they cost the same time.
 *
 * Results travel per loop: a worker that has a result posts each group of
 * waiters to its loop with io_loop_post(); on_group_done() hands the result
 * to the waiters there one by one.  A waiter leaves its group on delivery
 * or auth_cancel(), both on its own loop's thread, under the queue lock, so
 * a session may go away at any time: the verification completes, counts,
 * and touches only the group (which struct auth owns), never the session.
 * An immediate answer (cache, invalid input) goes through a group of its
 * own for the same reason: the callback is never inline and always
 * cancellable.
 *
 * Accounting (issue 8): an attempt counts from the moment it is admitted
 * (failures + verifications in flight against the maximum), so attempts
 * sent in parallel cannot outrun the limit.  A verification counts once:
 * one in flight, then one failure or one success, for the account and for
 * the prefix of the attempt that started it.  Attempts that join it count
 * nothing of their own: they are the same guess, and learn only its
 * result.  Counting them would lock a bulk sender that opens 50
 * connections with one correct password out of its own account; not
 * counting them gives an attacker nothing: a joiner must know the exact
 * password in flight, it is admitted only while its own prefix and the
 * account are under their maximum (at the limit it gets 454 like any
 * attempt, so a throttled client cannot probe what is in flight), and
 * every distinct password is a flight of its own and counts.
 *
 * The queue is bounded (max_queue flights): past it auth_verify() answers
 * -EBUSY and the session says 454 at once, so a flood of checks costs the
 * flooder, not every other user's AUTH; joiners take no queue place.
 *
 * The cache and the throttle table are small fixed-size open-addressing
 * tables (bounded memory, oldest entry in the probe window evicted); the
 * flight table is chained, one entry per flight (at most max_queue plus
 * one per worker).  Locks, always taken in this order: mu (queue, flights,
 * groups), throttle_mu, cache_mu.  AUTH is not the hot path.
 */
#include "core/auth.h"

#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core/users.h"
#include "io/log.h"
#include "io/metrics.h"

#define AUTH_CACHE_SLOTS 4096   /* power of two */
#define AUTH_THROTTLE_SLOTS 1024 /* power of two */
#define AUTH_FLIGHT_BUCKETS 256 /* power of two: chains of the flight table */
#define AUTH_PROBE 8            /* slots examined per lookup */
#define AUTH_ID_BYTES 16        /* throttle key: keyed BLAKE2b of the key material */
#define AUTH_USER_MAX 321       /* user names longer than this are cut for the key */
#define AUTH_PASS_MAX 256       /* longer passwords cannot be anyone's: they fail */
#define AUTH_PLAIN_MAX 1024     /* decoded PLAIN response bytes accepted */
#define AUTH_WORKER_NICE 10     /* password threads yield to the reactors */
#define AUTH_POST_TRIES 1000    /* a worker's tries (10 ms apart) to post a result */

enum auth_outcome { AUTH_OUTCOME_OK = 0, AUTH_OUTCOME_FAILED };

/* A cached success: key = BLAKE2b_k(user \0 pass \0 hash). */
struct auth_cache_slot {
    unsigned char key[crypto_generichash_BYTES]; /* valid when expiry_ms != 0 */
    uint64_t expiry_ms;   /* monotonic ms; 0 = empty slot */
    uint64_t inserted_ms; /* for choosing a victim */
};

/* Failures and attempts in flight of one client prefix or one account,
 * under an id that does not reveal which.  Empty when !used. */
struct auth_throttle_slot {
    unsigned char id[AUTH_ID_BYTES]; /* BLAKE2b_k("c" prefix key | "u" user) */
    bool used;
    uint64_t window_start_ms;   /* start of the current fixed window */
    uint64_t last_ms;           /* last change, for choosing a victim */
    unsigned failures;          /* failures since window_start_ms */
    unsigned inflight;          /* attempts admitted and not ended */
};

/*
 * The waiters of one result on one loop.  While the verification runs the
 * group hangs off its flight (next: the flight's groups); once the result
 * is known it is posted to loop and listed in auth.posted (prev/next) until
 * on_group_done() has run, or freed at once if nobody waits any more.
 * waiters (doubly linked through auth_req.prev/next) and the links are
 * guarded by auth.mu; a waiter is added, delivered and cancelled only on
 * loop's thread.
 */
struct auth_group {
    struct auth *a;
    struct io_loop *loop;            /* where the waiters' callbacks run */
    struct auth_req *waiters;        /* head; NULL: nobody waits */
    bool ok;                         /* the result, valid once posted */
    struct auth_group *prev, *next;
};

/*
 * One verification in flight: in the flight table under key from
 * admission until the worker has the result, and in the queue until a
 * worker takes it.  pass is the only clear copy of the password, wiped as
 * soon as argon2id returns.  The throttle ids are those of the attempt
 * that started it (the one that counts).
 */
struct auth_flight {
    unsigned char key[crypto_generichash_BYTES]; /* BLAKE2b_k(user \0 pass \0 hash) */
    char hash[crypto_pwhash_STRBYTES];  /* the user's stored hash; "" if unknown */
    char pass[AUTH_PASS_MAX + 1];
    size_t pass_len;
    unsigned char cid[AUTH_ID_BYTES];   /* the starter's prefix, if has_client */
    unsigned char uid[AUTH_ID_BYTES];   /* the account */
    bool has_client;
    struct auth_group *groups;          /* one per loop with waiters, or emptied */
    struct auth_flight *next_queued;    /* queue link */
    struct auth_flight *next_in_bucket; /* flight table chain */
};

/*
 * The process-wide AUTH state.  Invariants, under mu: head..tail is a
 * singly linked FIFO of queued flights (tail NULL iff head NULL, queued
 * its length); every flight queued or being verified is in flights[] (by
 * key, no two with one key) and no other is; posted lists the groups
 * handed to a loop whose on_group_done has not run.  Workers exit once
 * stopping is set.  cache[] is guarded by cache_mu, throttle[] by
 * throttle_mu, which is only changed with mu held too (so admission and
 * joining are one step); keys and dummy_hash never change after auth_new().
 */
struct auth {
    pthread_mutex_t mu;           /* queue, flights, groups */
    pthread_cond_t cv;            /* signalled when a flight is queued / stopping */
    struct auth_flight *head, *tail; /* flights waiting for a worker */
    unsigned queued;              /* flights between head and tail */
    unsigned max_queue;           /* 0: unbounded */
    bool stopping;                /* auth_free() in progress */
    pthread_t *threads;           /* nthreads workers */
    unsigned nthreads;
    struct auth_flight *flights[AUTH_FLIGHT_BUCKETS]; /* in flight, by key */
    struct auth_group *posted;    /* results on their way to a loop */

    _Atomic(const struct users *) users; /* current table, borrowed */
    char dummy_hash[crypto_pwhash_STRBYTES];  /* verified for unknown users */

    unsigned cache_ttl_ms;        /* 0: cache disabled */
    unsigned char cache_secret[crypto_generichash_KEYBYTES]; /* also keys flights */
    pthread_mutex_t cache_mu;
    struct auth_cache_slot cache[AUTH_CACHE_SLOTS];

    unsigned max_failures;        /* per client prefix; 0: throttling disabled */
    unsigned account_max_failures; /* per account; 0: disabled */
    uint64_t window_ms;
    unsigned char throttle_secret[crypto_generichash_KEYBYTES];
    pthread_mutex_t throttle_mu;
    struct auth_throttle_slot throttle[AUTH_THROTTLE_SLOTS];
};

/* Tests: runs on a worker before each argon2id (to hold a flight in
 * flight).  NULL in the server. */
static void (*auth_verify_hook)(void);

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

const char *auth_path_name(enum auth_path p)
{
    switch (p) {
    case AUTH_PATH_ARGON2ID:
        return "argon2id";
    case AUTH_PATH_SHARED:
        return "shared";
    case AUTH_PATH_CACHE:
        return "cache";
    case AUTH_PATH_INVALID:
        return "invalid";
    }
    return "?";
}

/* --- Success cache. --- */

/* The digest of one guess at one stored hash: the cache key and the flight
 * key.  user holds no NUL; hash is "" for an unknown user. */
static void guess_key(const struct auth *a, const char *user, size_t user_len, const char *pass,
                      size_t pass_len, const char *hash,
                      unsigned char out[crypto_generichash_BYTES])
{
    crypto_generichash_state st;

    crypto_generichash_init(&st, a->cache_secret, sizeof(a->cache_secret), crypto_generichash_BYTES);
    crypto_generichash_update(&st, (const unsigned char *)user, user_len);
    crypto_generichash_update(&st, (const unsigned char *)"", 1);
    crypto_generichash_update(&st, (const unsigned char *)pass, pass_len);
    crypto_generichash_update(&st, (const unsigned char *)"", 1);
    crypto_generichash_update(&st, (const unsigned char *)hash, strlen(hash));
    crypto_generichash_final(&st, out, crypto_generichash_BYTES);
    sodium_memzero(&st, sizeof(st));
}

static size_t slot_index(const unsigned char *key, size_t mask)
{
    uint64_t v;

    memcpy(&v, key, sizeof(v)); /* the key is a keyed hash: uniform */
    return (size_t)v & mask;
}

static bool cache_lookup(struct auth *a, const unsigned char *key)
{
    size_t base = slot_index(key, AUTH_CACHE_SLOTS - 1);
    uint64_t now = now_ms();
    bool hit = false;

    pthread_mutex_lock(&a->cache_mu);
    for (size_t i = 0; i < AUTH_PROBE && !hit; i++) {
        struct auth_cache_slot *s = &a->cache[(base + i) & (AUTH_CACHE_SLOTS - 1)];
        hit = s->expiry_ms > now && sodium_memcmp(s->key, key, sizeof(s->key)) == 0;
    }
    pthread_mutex_unlock(&a->cache_mu);
    return hit;
}

static void cache_insert(struct auth *a, const unsigned char *key)
{
    size_t base = slot_index(key, AUTH_CACHE_SLOTS - 1);
    uint64_t now = now_ms();
    struct auth_cache_slot *victim = NULL;

    pthread_mutex_lock(&a->cache_mu);
    for (size_t i = 0; i < AUTH_PROBE; i++) {
        struct auth_cache_slot *s = &a->cache[(base + i) & (AUTH_CACHE_SLOTS - 1)];
        if (s->expiry_ms != 0 && sodium_memcmp(s->key, key, sizeof(s->key)) == 0) {
            victim = s; /* refresh */
            break;
        }
        if (s->expiry_ms <= now) { /* empty or expired */
            if (victim == NULL || victim->expiry_ms > now)
                victim = s;
        } else if (victim == NULL ||
                   (victim->expiry_ms > now && s->inserted_ms < victim->inserted_ms)) {
            victim = s;
        }
    }
    memcpy(victim->key, key, sizeof(victim->key));
    victim->inserted_ms = now;
    victim->expiry_ms = now + a->cache_ttl_ms;
    pthread_mutex_unlock(&a->cache_mu);
}

/* --- Throttling. --- */

/* The slot id of a client prefix. */
static void client_id(const struct auth *a, const struct limits_key *k,
                      unsigned char id[AUTH_ID_BYTES])
{
    crypto_generichash_state st;

    crypto_generichash_init(&st, a->throttle_secret, sizeof(a->throttle_secret), AUTH_ID_BYTES);
    crypto_generichash_update(&st, (const unsigned char *)"c", 1);
    crypto_generichash_update(&st, (const unsigned char *)k, sizeof(*k));
    crypto_generichash_final(&st, id, AUTH_ID_BYTES);
}

/* The slot id of an account: the name (len bytes, up to a NUL, cut at
 * AUTH_USER_MAX - 1) with its domain lower-cased (the users table's rule:
 * the local part is exact). */
static void account_id(const struct auth *a, const char *user, size_t len,
                       unsigned char id[AUTH_ID_BYTES])
{
    char norm[AUTH_USER_MAX];
    size_t n = len < sizeof(norm) - 1 ? len : sizeof(norm) - 1;
    const char *nul = memchr(user, '\0', n);
    crypto_generichash_state st;

    if (nul != NULL)
        n = (size_t)(nul - user);
    memcpy(norm, user, n);
    norm[n] = '\0';
    char *at = strrchr(norm, '@');
    for (char *p = at; p != NULL && *p != '\0'; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    crypto_generichash_init(&st, a->throttle_secret, sizeof(a->throttle_secret), AUTH_ID_BYTES);
    crypto_generichash_update(&st, (const unsigned char *)"u", 1);
    crypto_generichash_update(&st, (const unsigned char *)norm, n);
    crypto_generichash_final(&st, id, AUTH_ID_BYTES);
}

/* Find the slot of id; with create, claim one (evicting, in the probe
 * window, an idle entry with the oldest change, else the oldest).  Called
 * with throttle_mu held. */
static struct auth_throttle_slot *throttle_find(struct auth *a, const unsigned char *id,
                                                bool create)
{
    struct auth_throttle_slot *victim = NULL;
    size_t base = slot_index(id, AUTH_THROTTLE_SLOTS - 1);

    for (size_t i = 0; i < AUTH_PROBE; i++) {
        struct auth_throttle_slot *s = &a->throttle[(base + i) & (AUTH_THROTTLE_SLOTS - 1)];
        if (s->used && memcmp(s->id, id, AUTH_ID_BYTES) == 0)
            return s;
        if (victim == NULL || (victim->used &&
                               (!s->used || (s->inflight == 0 && victim->inflight > 0) ||
                                ((s->inflight == 0) == (victim->inflight == 0) &&
                                 s->last_ms < victim->last_ms))))
            victim = s;
    }
    if (!create)
        return NULL;
    memset(victim, 0, sizeof(*victim));
    memcpy(victim->id, id, AUTH_ID_BYTES);
    victim->used = true;
    return victim;
}

/* Failures in the current window (0 once it has passed). */
static unsigned slot_failures(const struct auth *a, const struct auth_throttle_slot *s,
                              uint64_t now)
{
    return now - s->window_start_ms < a->window_ms ? s->failures : 0;
}

/* True when the slot of id is at max (failures + in flight). */
static bool slot_full(struct auth *a, const unsigned char *id, unsigned max, uint64_t now)
{
    struct auth_throttle_slot *s = throttle_find(a, id, false);
    return max != 0 && s != NULL && slot_failures(a, s, now) + s->inflight >= max;
}

bool auth_client_throttled(struct auth *a, const struct limits_key *client)
{
    unsigned char id[AUTH_ID_BYTES];
    bool full;

    if (a->max_failures == 0 || client == NULL)
        return false;
    client_id(a, client, id);
    pthread_mutex_lock(&a->throttle_mu);
    full = slot_full(a, id, a->max_failures, now_ms());
    pthread_mutex_unlock(&a->throttle_mu);
    return full;
}

/* May an attempt of prefix cid (NULL: none) on account uid go ahead?
 * Counts nothing.  throttle_mu held. */
static enum auth_gate gate_locked(struct auth *a, const unsigned char *cid,
                                  const unsigned char *uid, uint64_t now)
{
    if (cid != NULL && slot_full(a, cid, a->max_failures, now))
        return AUTH_GATE_CLIENT;
    if (slot_full(a, uid, a->account_max_failures, now))
        return AUTH_GATE_ACCOUNT;
    return AUTH_GATE_OK;
}

/* One more attempt in flight for cid (if any) and uid.  throttle_mu held. */
static void count_begin_locked(struct auth *a, const unsigned char *cid,
                               const unsigned char *uid, uint64_t now)
{
    struct auth_throttle_slot *s;

    if (cid != NULL) {
        s = throttle_find(a, cid, true);
        s->inflight++;
        s->last_ms = now;
    }
    s = throttle_find(a, uid, true);
    s->inflight++;
    s->last_ms = now;
}

/* End one attempt on the slot of id (it may have been evicted: then the
 * failure starts a new entry). */
static void slot_end(struct auth *a, const unsigned char *id, enum auth_outcome outcome,
                     bool clear_on_ok, uint64_t now)
{
    struct auth_throttle_slot *s = throttle_find(a, id, outcome == AUTH_OUTCOME_FAILED);

    if (s == NULL)
        return;
    if (s->inflight > 0)
        s->inflight--;
    s->last_ms = now;
    if (outcome == AUTH_OUTCOME_FAILED) {
        if (s->failures == 0 || now - s->window_start_ms >= a->window_ms) {
            s->window_start_ms = now; /* a new fixed window */
            s->failures = 0;
        }
        s->failures++;
    } else if (outcome == AUTH_OUTCOME_OK && clear_on_ok) {
        s->failures = 0;
    }
    if (s->failures == 0 && s->inflight == 0)
        s->used = false;
}

/* The attempt counted by count_begin_locked is over: FAILED adds a failure
 * to both keys; OK clears the account's failures (the client prefix's
 * stay: one good account must not buy guesses at others).  throttle_mu
 * held. */
static void count_end_locked(struct auth *a, const unsigned char *cid, const unsigned char *uid,
                             enum auth_outcome outcome, uint64_t now)
{
    if (cid != NULL)
        slot_end(a, cid, outcome, false, now);
    slot_end(a, uid, outcome, true, now);
}

/* --- Flights, groups and delivery. --- */

static struct auth_flight **flight_bucket(struct auth *a, const unsigned char *key)
{
    return &a->flights[slot_index(key, AUTH_FLIGHT_BUCKETS - 1)];
}

/* The flight verifying key, or NULL.  mu held. */
static struct auth_flight *flight_find(struct auth *a, const unsigned char *key)
{
    for (struct auth_flight *f = *flight_bucket(a, key); f != NULL; f = f->next_in_bucket)
        if (sodium_memcmp(f->key, key, sizeof(f->key)) == 0)
            return f;
    return NULL;
}

/* Take f out of the flight table.  mu held. */
static void flight_unlink(struct auth *a, struct auth_flight *f)
{
    struct auth_flight **pp = flight_bucket(a, f->key);

    while (*pp != f)
        pp = &(*pp)->next_in_bucket;
    *pp = f->next_in_bucket;
    f->next_in_bucket = NULL;
}

static void flight_free(struct auth_flight *f)
{
    sodium_memzero(f, sizeof(*f));
    free(f);
}

static struct auth_group *group_new(struct auth *a, struct io_loop *loop)
{
    struct auth_group *g = calloc(1, sizeof(*g));

    if (g != NULL) {
        g->a = a;
        g->loop = loop;
    }
    return g;
}

/* f's group for loop, made if there is none yet (NULL: out of memory).
 * mu held. */
static struct auth_group *flight_group(struct auth *a, struct auth_flight *f,
                                       struct io_loop *loop)
{
    struct auth_group *g;

    for (g = f->groups; g != NULL; g = g->next)
        if (g->loop == loop)
            return g;
    g = group_new(a, loop);
    if (g != NULL) {
        g->next = f->groups;
        f->groups = g;
    }
    return g;
}

/* mu held. */
static void waiter_link(struct auth_group *g, struct auth_req *req)
{
    req->group = g;
    req->prev = NULL;
    req->next = g->waiters;
    if (g->waiters != NULL)
        g->waiters->prev = req;
    g->waiters = req;
}

/* mu held. */
static void waiter_unlink(struct auth_req *req)
{
    struct auth_group *g = req->group;

    if (req->prev != NULL)
        req->prev->next = req->next;
    else
        g->waiters = req->next;
    if (req->next != NULL)
        req->next->prev = req->prev;
    req->prev = req->next = NULL;
    req->group = NULL;
}

/* mu held. */
static void posted_add(struct auth *a, struct auth_group *g)
{
    g->prev = NULL;
    g->next = a->posted;
    if (a->posted != NULL)
        a->posted->prev = g;
    a->posted = g;
}

/* mu held. */
static void posted_unlink(struct auth *a, struct auth_group *g)
{
    if (g->prev != NULL)
        g->prev->next = g->next;
    else
        a->posted = g->next;
    if (g->next != NULL)
        g->next->prev = g->prev;
    g->prev = g->next = NULL;
}

/* Runs on g->loop: hand the result to each waiter still there.  The lock
 * is let go around each callback, which may start or cancel other
 * requests (even of this group) or free its own. */
static void on_group_done(void *arg)
{
    struct auth_group *g = arg;
    struct auth *a = g->a;
    struct auth_req *req;

    pthread_mutex_lock(&a->mu);
    while ((req = g->waiters) != NULL) {
        bool ok = g->ok;
        waiter_unlink(req);
        req->ok = ok;
        pthread_mutex_unlock(&a->mu);
        req->cb(req, ok);
        pthread_mutex_lock(&a->mu);
    }
    posted_unlink(a, g);
    pthread_mutex_unlock(&a->mu);
    free(g);
}

/*
 * Post g's result (g->ok) to its loop, or free g when nobody waits any
 * more.  mu held.  A worker (may_wait) retries for a while when the loop
 * is out of memory, letting go of mu meanwhile (waiters may leave); the
 * reactor itself never sleeps.  Returns 0 (posted or freed) or -ENOMEM (g
 * untouched, not posted).
 */
static int group_post_locked(struct auth *a, struct auth_group *g, bool may_wait)
{
    for (int tries = 0;; tries++) {
        if (g->waiters == NULL) {
            free(g);
            return 0;
        }
        /* on_group_done needs mu: it cannot run before we let go. */
        if (io_loop_post(g->loop, on_group_done, g) == 0) {
            posted_add(a, g);
            return 0;
        }
        if (!may_wait || tries >= AUTH_POST_TRIES)
            return -ENOMEM;
        pthread_mutex_unlock(&a->mu);
        nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
        pthread_mutex_lock(&a->mu);
    }
}

/* Answer req now (cache, invalid input) through a group of its own, so
 * that cb is never inline and auth_cancel works as for any wait.  mu
 * held.  Returns 0 or -ENOMEM (nothing pending). */
static int deliver_now_locked(struct auth *a, struct auth_req *req, bool ok)
{
    struct auth_group *g = group_new(a, req->loop);

    if (g == NULL)
        return -ENOMEM;
    g->ok = ok;
    waiter_link(g, req);
    if (group_post_locked(a, g, false) < 0) {
        waiter_unlink(req);
        free(g);
        return -ENOMEM;
    }
    return 0;
}

/* --- Workers. --- */

/* argon2id, on a worker; wipes the password. */
static bool flight_check(struct auth *a, struct auth_flight *f)
{
    bool known = f->hash[0] != '\0';
    bool match;

    if (auth_verify_hook != NULL)
        auth_verify_hook();
    match = crypto_pwhash_str_verify(known ? f->hash : a->dummy_hash, f->pass, f->pass_len) == 0;
    sodium_memzero(f->pass, sizeof(f->pass));
    f->pass_len = 0;
    return known && match;
}

/* f has its result: count it, take f out of the table and send the result
 * to every loop that waits.  On a worker, mu not held. */
static void flight_finish(struct auth *a, struct auth_flight *f, bool ok)
{
    /* Into the cache before leaving the table: an attempt that no longer
     * finds the flight finds the success, never a second argon2id. */
    if (ok && a->cache_ttl_ms != 0)
        cache_insert(a, f->key);
    pthread_mutex_lock(&a->mu);
    flight_unlink(a, f);
    pthread_mutex_lock(&a->throttle_mu);
    count_end_locked(a, f->has_client ? f->cid : NULL, f->uid,
                     ok ? AUTH_OUTCOME_OK : AUTH_OUTCOME_FAILED, now_ms());
    pthread_mutex_unlock(&a->throttle_mu);
    /* From here on nobody else finds f: its groups are ours to hand out. */
    struct auth_group *g = f->groups, *next;
    f->groups = NULL;
    for (; g != NULL; g = next) {
        next = g->next;
        g->next = NULL;
        g->ok = ok;
        if (group_post_locked(a, g, true) < 0) {
            /* Its waiters hear nothing; they can still cancel, and
             * auth_free() frees the group. */
            log_warnx("event=auth-result-lost why=out-of-memory");
            posted_add(a, g);
        }
    }
    pthread_mutex_unlock(&a->mu);
    flight_free(f);
}

static void *worker_main(void *arg)
{
    struct auth *a = arg;

    /* argon2id is bulk work: on a small machine it must not take the CPU
     * from the reactors (nice applies per thread on Linux). */
    if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), AUTH_WORKER_NICE) < 0)
        (void)0; /* not fatal: the checks just compete at normal priority */

    pthread_mutex_lock(&a->mu);
    for (;;) {
        struct auth_flight *f;

        while (!a->stopping && a->head == NULL)
            pthread_cond_wait(&a->cv, &a->mu);
        if (a->stopping)
            break;
        f = a->head;
        a->queued--;
        a->head = f->next_queued;
        if (a->head == NULL)
            a->tail = NULL;
        f->next_queued = NULL;
        pthread_mutex_unlock(&a->mu);
        flight_finish(a, f, flight_check(a, f));
        pthread_mutex_lock(&a->mu);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* --- Life cycle. --- */

struct auth *auth_new(const struct auth_params *p)
{
    struct auth *a;
    unsigned char pw[16];
    unsigned nworkers = p->workers;

    if (sodium_init() < 0)
        return NULL;
    a = calloc(1, sizeof(*a));
    if (a == NULL)
        return NULL;
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    pthread_mutex_init(&a->cache_mu, NULL);
    pthread_mutex_init(&a->throttle_mu, NULL);
    atomic_init(&a->users, NULL);
    a->cache_ttl_ms = p->cache_ttl * 1000u;
    a->max_failures = p->max_failures;
    a->account_max_failures = p->account_max_failures;
    a->window_ms = (uint64_t)p->window * 1000u;
    a->max_queue = p->max_queue;
    randombytes_buf(a->cache_secret, sizeof(a->cache_secret));
    randombytes_buf(a->throttle_secret, sizeof(a->throttle_secret));

    /* Same algorithm and limits as real hashes, so timing is alike. */
    randombytes_buf(pw, sizeof(pw));
    if (users_hash_password((const char *)pw, sizeof(pw), a->dummy_hash) < 0)
        goto fail;
    sodium_memzero(pw, sizeof(pw));

    if (nworkers == 0)
        nworkers = 1;
    a->threads = calloc(nworkers, sizeof(*a->threads));
    if (a->threads == NULL)
        goto fail;
    for (; a->nthreads < nworkers; a->nthreads++) {
        if (pthread_create(&a->threads[a->nthreads], NULL, worker_main, a) != 0)
            goto fail;
    }
    return a;
fail:
    auth_free(a);
    return NULL;
}

void auth_free(struct auth *a)
{
    if (a == NULL)
        return;
    pthread_mutex_lock(&a->mu);
    a->stopping = true;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    for (unsigned i = 0; i < a->nthreads; i++)
        pthread_join(a->threads[i], NULL);
    /* Flights still queued are dropped without a callback (the contract:
     * nobody waits for them any more); their passwords are wiped all the
     * same.  Those are all that is left in the table: a worker finishes the
     * flight it holds before it looks at stopping. */
    for (struct auth_flight *f = a->head, *fnext; f != NULL; f = fnext) {
        fnext = f->next_queued;
        for (struct auth_group *g = f->groups, *gnext; g != NULL; g = gnext) {
            gnext = g->next;
            free(g);
        }
        flight_free(f);
    }
    /* Results whose loop never ran them. */
    for (struct auth_group *g = a->posted, *gnext; g != NULL; g = gnext) {
        gnext = g->next;
        free(g);
    }
    free(a->threads);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    pthread_mutex_destroy(&a->cache_mu);
    pthread_mutex_destroy(&a->throttle_mu);
    sodium_memzero(a, sizeof(*a));
    free(a);
}

void auth_set_users(struct auth *a, const struct users *u)
{
    atomic_store(&a->users, u);
}

/* --- Verification. --- */

int auth_verify(struct auth *a, struct auth_req *req, struct io_loop *loop,
                const struct limits_key *client, const char *user, size_t user_len,
                const char *pass, size_t pass_len, auth_cb cb)
{
    unsigned char key[crypto_generichash_BYTES], cid[AUTH_ID_BYTES], uid[AUTH_ID_BYTES];
    const unsigned char *cidp = NULL;
    const char *hash = NULL;
    struct auth_flight *f = NULL;
    struct auth_group *g;
    uint64_t now = now_ms();
    int ret;

    req->cb = cb;
    req->loop = loop;
    req->user[0] = '\0';
    req->gate = AUTH_GATE_OK;
    req->ok = false;
    req->group = NULL;
    req->prev = req->next = NULL;

    /* Over-long or NUL-carrying input cannot name a user or be a password:
     * once admitted, it fails (and counts as a failure). */
    bool valid = user_len < sizeof(req->user) && pass_len <= AUTH_PASS_MAX &&
                 memchr(user, '\0', user_len) == NULL;
    if (valid) {
        memcpy(req->user, user, user_len);
        req->user[user_len] = '\0';
        hash = users_hash(atomic_load(&a->users), req->user, user_len);
        if (hash != NULL && strnlen(hash, crypto_pwhash_STRBYTES) >= crypto_pwhash_STRBYTES)
            hash = NULL; /* not a hash string argon2id could have made */
        guess_key(a, req->user, user_len, pass, pass_len, hash != NULL ? hash : "", key);
    }
    if (client != NULL) {
        client_id(a, client, cid);
        cidp = cid;
    }
    account_id(a, user, user_len, uid);

    pthread_mutex_lock(&a->mu);
    pthread_mutex_lock(&a->throttle_mu);
    /* Joiners pass the gate too: at the limit nobody learns anything, not
     * even whether the same guess is being verified. */
    enum auth_gate gate = gate_locked(a, cidp, uid, now);
    if (gate != AUTH_GATE_OK) {
        pthread_mutex_unlock(&a->throttle_mu);
        req->gate = gate;
        ret = -EAGAIN;
        goto out;
    }
    if (!valid) {
        count_begin_locked(a, cidp, uid, now);
        count_end_locked(a, cidp, uid, AUTH_OUTCOME_FAILED, now);
        pthread_mutex_unlock(&a->throttle_mu);
        ret = deliver_now_locked(a, req, false) < 0 ? -ENOMEM : AUTH_PATH_INVALID;
        goto out;
    }
    f = flight_find(a, key);
    if (f != NULL) {
        /* The same guess at the same hash is being verified: wait for it.
         * It was counted when it started; this one adds nothing. */
        pthread_mutex_unlock(&a->throttle_mu);
        g = flight_group(a, f, loop);
        if (g == NULL) {
            ret = -ENOMEM;
            goto out;
        }
        waiter_link(g, req);
        ret = AUTH_PATH_SHARED;
        goto out;
    }
    if (hash != NULL && a->cache_ttl_ms != 0 && cache_lookup(a, key)) {
        count_begin_locked(a, cidp, uid, now);
        count_end_locked(a, cidp, uid, AUTH_OUTCOME_OK, now);
        pthread_mutex_unlock(&a->throttle_mu);
        ret = deliver_now_locked(a, req, true) < 0 ? -ENOMEM : AUTH_PATH_CACHE;
        goto out;
    }
    if (a->max_queue != 0 && a->queued >= a->max_queue) {
        /* A flood of checks must not stall everyone's AUTH for minutes. */
        pthread_mutex_unlock(&a->throttle_mu);
        ret = -EBUSY;
        goto out;
    }
    f = calloc(1, sizeof(*f));
    g = f != NULL ? group_new(a, loop) : NULL;
    if (g == NULL) {
        pthread_mutex_unlock(&a->throttle_mu);
        free(f);
        ret = -ENOMEM;
        goto out;
    }
    count_begin_locked(a, cidp, uid, now);
    pthread_mutex_unlock(&a->throttle_mu);
    memcpy(f->key, key, sizeof(key));
    if (hash != NULL)
        memcpy(f->hash, hash, strlen(hash) + 1);
    memcpy(f->pass, pass, pass_len);
    f->pass_len = pass_len;
    f->has_client = cidp != NULL;
    if (cidp != NULL)
        memcpy(f->cid, cid, sizeof(cid));
    memcpy(f->uid, uid, sizeof(uid));
    f->groups = g;
    waiter_link(g, req);
    struct auth_flight **bucket = flight_bucket(a, key);
    f->next_in_bucket = *bucket;
    *bucket = f;
    a->queued++;
    if (a->tail != NULL)
        a->tail->next_queued = f;
    else
        a->head = f;
    a->tail = f;
    pthread_cond_signal(&a->cv);
    ret = AUTH_PATH_ARGON2ID;
out:
    pthread_mutex_unlock(&a->mu);
    sodium_memzero(key, sizeof(key));
    if (ret == AUTH_PATH_ARGON2ID || ret == AUTH_PATH_SHARED || ret == AUTH_PATH_CACHE)
        metrics_inc(METRICS_AUTH_VERIFY + (unsigned)ret);
    return ret;
}

void auth_cancel(struct auth *a, struct auth_req *req)
{
    pthread_mutex_lock(&a->mu);
    if (req->group != NULL)
        waiter_unlink(req);
    pthread_mutex_unlock(&a->mu);
}

/* --- SASL PLAIN and base64. --- */

long auth_b64_decode(const char *in, size_t len, char *out, size_t cap)
{
    size_t bin_len = 0;
    const char *end = NULL;

    if (sodium_base642bin((unsigned char *)out, cap, in, len, NULL, &bin_len, &end,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        end != in + len)
        return -1;
    return (long)bin_len;
}

size_t auth_b64_encode(const void *in, size_t len, char *out, size_t cap)
{
    size_t need = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);

    if (cap < need) {
        if (cap > 0)
            out[0] = '\0';
        return 0;
    }
    sodium_bin2base64(out, cap, in, len, sodium_base64_VARIANT_ORIGINAL);
    return need - 1;
}

/* RFC 4616 2: message = [authzid] UTF8NUL authcid UTF8NUL passwd, where
 * authcid and passwd are 1*SAFE (no NUL).  We act for authcid only: an
 * authzid naming someone else is refused. */
int auth_plain_decode(const char *b64, size_t len, char *user, size_t user_cap, char *pass,
                      size_t pass_cap, size_t *pass_len)
{
    char buf[AUTH_PLAIN_MAX];
    const char *zid, *cid, *pw, *nul1, *nul2;
    size_t zlen, clen, plen;
    long n;
    int ret = -1;

    if (user_cap > 0)
        user[0] = '\0';
    if (pass_cap > 0)
        pass[0] = '\0';
    *pass_len = 0;
    n = auth_b64_decode(b64, len, buf, sizeof(buf));
    if (n <= 0)
        goto fail;
    zid = buf;
    nul1 = memchr(buf, '\0', (size_t)n);
    if (nul1 == NULL)
        goto fail;
    zlen = (size_t)(nul1 - zid);
    cid = nul1 + 1;
    nul2 = memchr(cid, '\0', (size_t)(buf + n - cid));
    if (nul2 == NULL)
        goto fail;
    clen = (size_t)(nul2 - cid);
    pw = nul2 + 1;
    plen = (size_t)(buf + n - pw);
    if (clen == 0 || plen == 0 || memchr(pw, '\0', plen) != NULL)
        goto fail;
    if (zlen != 0 && (zlen != clen || memcmp(zid, cid, clen) != 0))
        goto fail;
    if (clen >= user_cap || plen >= pass_cap)
        goto fail;
    memcpy(user, cid, clen);
    user[clen] = '\0';
    memcpy(pass, pw, plen);
    pass[plen] = '\0';
    *pass_len = plen;
    ret = 0;
fail:
    sodium_memzero(buf, sizeof(buf));
    return ret;
}
