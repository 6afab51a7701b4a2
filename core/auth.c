/* SPDX-License-Identifier: MIT */
/*
 * auth.c - SMTP AUTH machinery (see auth.h): password verification on a
 * worker pool, a cache of recent successes, per-client throttling, and the
 * SASL PLAIN / base64 decoding the session needs.
 *
 * Flow of auth_verify(): the reactor copies user and password into the
 * request and looks the user's hash up in the current users table.  If a
 * keyed BLAKE2b of (user, password, hash) is in the success cache and not
 * expired, the result is posted back to the reactor's loop at once (never
 * called inline).  Otherwise the request joins a queue served by N worker
 * threads that run argon2id (crypto_pwhash_str_verify, tens of ms) and post
 * the result with io_loop_post().  Unknown users are verified against a
 * dummy hash made at start-up so that they cost the same time.  Passwords are
 * wiped (sodium_memzero) as soon as they are no longer needed.
 *
 * The queue is bounded (max_queue): past it auth_verify() answers -EBUSY
 * and the session says 454 at once, so a flood of checks costs the flooder,
 * not every other user's AUTH.  The throttle counts an attempt from the
 * moment it is admitted (auth_attempt_begin), per client prefix and per
 * account, so attempts sent in parallel cannot outrun it.
 *
 * The cache and the throttle table are small fixed-size open-addressing
 * tables (bounded memory, oldest entry in the probe window evicted), each
 * behind its own mutex: AUTH is not the hot path.
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

#define AUTH_CACHE_SLOTS 4096   /* power of two */
#define AUTH_THROTTLE_SLOTS 1024 /* power of two */
#define AUTH_PROBE 8            /* slots examined per lookup */
#define AUTH_ID_BYTES 16        /* throttle key: keyed BLAKE2b of the key material */
#define AUTH_USER_MAX 321       /* user names longer than this are cut for the key */
#define AUTH_PLAIN_MAX 1024     /* decoded PLAIN response bytes accepted */
#define AUTH_WORKER_NICE 10     /* password threads yield to the reactors */

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
 * The process-wide AUTH state.  Invariants: head..tail is a singly linked
 * FIFO of queued requests (tail NULL iff head NULL), guarded by mu; workers
 * exit once stopping is set; cache[] is guarded by cache_mu, throttle[] by
 * throttle_mu; keys and dummy_hash never change after auth_new().
 */
struct auth {
    pthread_mutex_t mu;           /* queue lock */
    pthread_cond_t cv;            /* signalled when a request is queued / stopping */
    struct auth_req *head, *tail; /* pending requests */
    unsigned queued;              /* requests between head and tail */
    unsigned max_queue;           /* 0: unbounded */
    bool stopping;                /* auth_free() in progress */
    pthread_t *threads;           /* nthreads workers */
    unsigned nthreads;

    _Atomic(const struct users *) users; /* current table, borrowed */
    char dummy_hash[crypto_pwhash_STRBYTES];  /* verified for unknown users */

    unsigned cache_ttl_ms;        /* 0: cache disabled */
    unsigned char cache_secret[crypto_generichash_KEYBYTES];
    pthread_mutex_t cache_mu;
    struct auth_cache_slot cache[AUTH_CACHE_SLOTS];

    unsigned max_failures;        /* per client prefix; 0: throttling disabled */
    unsigned account_max_failures; /* per account; 0: disabled */
    uint64_t window_ms;
    unsigned char throttle_secret[crypto_generichash_KEYBYTES];
    pthread_mutex_t throttle_mu;
    struct auth_throttle_slot throttle[AUTH_THROTTLE_SLOTS];
};

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* --- Success cache. --- */

static void cache_key(const struct auth *a, const struct auth_req *req,
                      unsigned char out[crypto_generichash_BYTES])
{
    crypto_generichash_state st;

    crypto_generichash_init(&st, a->cache_secret, sizeof(a->cache_secret), crypto_generichash_BYTES);
    crypto_generichash_update(&st, (const unsigned char *)req->user, strlen(req->user) + 1);
    crypto_generichash_update(&st, (const unsigned char *)req->pass, req->pass_len);
    crypto_generichash_update(&st, (const unsigned char *)"", 1);
    crypto_generichash_update(&st, (const unsigned char *)req->hash, strlen(req->hash));
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

/* --- Completion and workers. --- */

/* Runs on req->loop: hand the result to the session. */
static void on_done(void *arg)
{
    struct auth_req *req = arg;

    req->cb(req, req->ok);
}

/* Post req's completion.  A worker (may_wait) retries for a while if the
 * loop is out of memory; the reactor itself never sleeps. */
static int post_done(struct auth_req *req, bool may_wait)
{
    for (int tries = 0;; tries++) {
        int r = io_loop_post(req->loop, on_done, req);
        if (r == 0 || !may_wait || tries >= 1000)
            return r;
        nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
    }
}

static void wipe_pass(struct auth_req *req)
{
    sodium_memzero(req->pass, sizeof(req->pass));
    req->pass_len = 0;
}

static void verify_one(struct auth *a, struct auth_req *req)
{
    const char *hash = req->hash ? req->hash : a->dummy_hash;
    char buf[crypto_pwhash_STRBYTES] = {0};
    size_t hlen = strnlen(hash, sizeof(buf));
    bool match = false;

    /* The prototype takes char[crypto_pwhash_STRBYTES]; table strings are
     * shorter, so copy into a full-size buffer. */
    if (hlen < sizeof(buf)) {
        memcpy(buf, hash, hlen);
        match = crypto_pwhash_str_verify(buf, req->pass, req->pass_len) == 0;
    }
    req->ok = req->hash != NULL && match;
    if (req->ok && a->cache_ttl_ms != 0) {
        unsigned char key[crypto_generichash_BYTES];
        cache_key(a, req, key);
        cache_insert(a, key);
        sodium_memzero(key, sizeof(key));
    }
    wipe_pass(req);
    (void)post_done(req, true); /* nothing better to do if the loop cannot take it */
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
        struct auth_req *req;

        while (!a->stopping && a->head == NULL)
            pthread_cond_wait(&a->cv, &a->mu);
        if (a->stopping)
            break;
        req = a->head;
        a->queued--;
        a->head = req->next;
        if (a->head == NULL)
            a->tail = NULL;
        req->next = NULL;
        pthread_mutex_unlock(&a->mu);
        verify_one(a, req);
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
    /* Requests still queued are dropped without a callback: the reactors
     * are gone by now.  Their passwords are wiped all the same. */
    for (struct auth_req *r = a->head; r != NULL; r = r->next)
        wipe_pass(r);
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

int auth_verify(struct auth *a, struct auth_req *req, struct io_loop *loop, const char *user,
                size_t user_len, const char *pass, size_t pass_len, auth_cb cb)
{
    unsigned char key[crypto_generichash_BYTES];

    req->cb = cb;
    req->loop = loop;
    req->ok = false;
    req->hash = NULL;
    req->next = NULL;
    req->user[0] = '\0';
    req->pass_len = 0;

    /* Over-long or NUL-carrying input cannot name a user: fail, later. */
    if (user_len >= sizeof(req->user) || pass_len >= sizeof(req->pass) ||
        memchr(user, '\0', user_len) != NULL)
        return post_done(req, false);

    memcpy(req->user, user, user_len);
    req->user[user_len] = '\0';
    memcpy(req->pass, pass, pass_len);
    req->pass[pass_len] = '\0';
    req->pass_len = pass_len;
    req->hash = users_hash(atomic_load(&a->users), req->user, user_len);

    if (req->hash != NULL && a->cache_ttl_ms != 0) {
        bool hit;
        cache_key(a, req, key);
        hit = cache_lookup(a, key);
        sodium_memzero(key, sizeof(key));
        if (hit) {
            wipe_pass(req);
            req->ok = true;
            return post_done(req, false);
        }
    }

    pthread_mutex_lock(&a->mu);
    if (a->max_queue != 0 && a->queued >= a->max_queue) {
        /* A flood of checks must not stall everyone's AUTH for minutes. */
        pthread_mutex_unlock(&a->mu);
        wipe_pass(req);
        return -EBUSY;
    }
    a->queued++;
    if (a->tail != NULL)
        a->tail->next = req;
    else
        a->head = req;
    a->tail = req;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
    return 0;
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

/* The slot id of an account: the name with its domain lower-cased (the
 * users table's rule: the local part is exact). */
static void account_id(const struct auth *a, const char *user, unsigned char id[AUTH_ID_BYTES])
{
    char norm[AUTH_USER_MAX];
    size_t n = strnlen(user, sizeof(norm) - 1);
    crypto_generichash_state st;

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

enum auth_gate auth_attempt_begin(struct auth *a, const struct limits_key *client,
                                  const char *user)
{
    unsigned char cid[AUTH_ID_BYTES], uid[AUTH_ID_BYTES];
    enum auth_gate g = AUTH_GATE_OK;
    uint64_t now = now_ms();

    if (client != NULL)
        client_id(a, client, cid);
    account_id(a, user, uid);
    pthread_mutex_lock(&a->throttle_mu);
    if (client != NULL && slot_full(a, cid, a->max_failures, now))
        g = AUTH_GATE_CLIENT;
    else if (slot_full(a, uid, a->account_max_failures, now))
        g = AUTH_GATE_ACCOUNT;
    if (g == AUTH_GATE_OK) {
        struct auth_throttle_slot *s;
        if (client != NULL) {
            s = throttle_find(a, cid, true);
            s->inflight++;
            s->last_ms = now;
        }
        s = throttle_find(a, uid, true);
        s->inflight++;
        s->last_ms = now;
    }
    pthread_mutex_unlock(&a->throttle_mu);
    return g;
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

void auth_attempt_end(struct auth *a, const struct limits_key *client, const char *user,
                      enum auth_outcome outcome)
{
    unsigned char cid[AUTH_ID_BYTES], uid[AUTH_ID_BYTES];
    uint64_t now = now_ms();

    if (client != NULL)
        client_id(a, client, cid);
    account_id(a, user, uid);
    pthread_mutex_lock(&a->throttle_mu);
    if (client != NULL)
        slot_end(a, cid, outcome, false, now);
    slot_end(a, uid, outcome, true, now);
    pthread_mutex_unlock(&a->throttle_mu);
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
