/* SPDX-License-Identifier: MIT */
/*
 * test_auth.c - unit tests for core/auth.c (included, to reach the throttle
 * table, the flights and the worker hook): SASL PLAIN and base64 decoding,
 * throttling per client prefix and per account (attempts in flight count),
 * and auth_verify() through real io loops on both backends: right, wrong
 * and unknown users, over-long input, callbacks never synchronous, the
 * success cache, cache expiry, a password change defeating the cache;
 * single flight (identical attempts join one verification and count once,
 * distinct ones count each, joiners refused at the limit, the queue bound),
 * cancellation (of the starter, of a joiner, after the result was posted,
 * of everyone, from inside a callback) and waiters on two loops.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/auth.c"
#include "core/users.h"

static uint64_t mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* --- PLAIN and base64. --- */

/* Decode the PLAIN message raw (n bytes) after base64-encoding it. */
static int plain(const char *raw, size_t n, char *user, size_t ucap, char *pass, size_t pcap,
                 size_t *plen)
{
    char b64[4096];

    assert_true(auth_b64_encode(raw, n, b64, sizeof(b64)) > 0 || n == 0);
    return auth_plain_decode(b64, strlen(b64), user, ucap, pass, pcap, plen);
}

static void test_plain_decode(void **state)
{
    char user[321], pass[257];
    size_t plen = 99;

    assert_int_equal(plain("\0alice@example.com\0pw", 21, user, sizeof(user), pass, sizeof(pass), &plen), 0);
    assert_string_equal(user, "alice@example.com");
    assert_string_equal(pass, "pw");
    assert_int_equal(plen, 2);

    /* authzid equal to authcid is fine; a different one is not. */
    assert_int_equal(plain("al\0al\0secret", 12, user, sizeof(user), pass, sizeof(pass), &plen), 0);
    assert_string_equal(user, "al");
    assert_string_equal(pass, "secret");
    assert_int_equal(plen, 6);
    assert_int_equal(plain("bob\0al\0secret", 13, user, sizeof(user), pass, sizeof(pass), &plen), -1);
    assert_string_equal(user, "");
    assert_int_equal(plen, 0);
    assert_int_equal(plain("alx\0al\0secret", 13, user, sizeof(user), pass, sizeof(pass), &plen), -1);
    assert_int_equal(plain("a\0al\0secret", 11, user, sizeof(user), pass, sizeof(pass), &plen), -1);

    /* Structure: two NULs, non-empty authcid and passwd, no NUL in passwd. */
    assert_int_equal(plain("\0\0pw", 4, user, sizeof(user), pass, sizeof(pass), &plen), -1);
    assert_int_equal(plain("\0al\0", 4, user, sizeof(user), pass, sizeof(pass), &plen), -1);
    assert_int_equal(plain("\0al\0p\0w", 7, user, sizeof(user), pass, sizeof(pass), &plen), -1);
    assert_int_equal(plain("al\0pw", 5, user, sizeof(user), pass, sizeof(pass), &plen), -1);
    assert_int_equal(plain("alpw", 4, user, sizeof(user), pass, sizeof(pass), &plen), -1);
    assert_int_equal(plain("", 0, user, sizeof(user), pass, sizeof(pass), &plen), -1);

    /* Capacities: the NUL must fit too. */
    assert_int_equal(plain("\0abcd\0pw", 8, user, 4, pass, sizeof(pass), &plen), -1);
    assert_int_equal(plain("\0abcd\0pw", 8, user, 5, pass, sizeof(pass), &plen), 0);
    assert_int_equal(plain("\0abcd\0pw", 8, user, sizeof(user), pass, 2, &plen), -1);
    assert_int_equal(plain("\0abcd\0pw", 8, user, sizeof(user), pass, 3, &plen), 0);

    /* Base64 errors. */
    assert_int_equal(auth_plain_decode("!!!!", 4, user, sizeof(user), pass, sizeof(pass), &plen), -1);
    /* "\0al\0pw" is AGFsAHB3; drop padding-free variants and add junk. */
    assert_int_equal(auth_plain_decode("AGFsAHB3", 8, user, sizeof(user), pass, sizeof(pass), &plen), 0);
    assert_int_equal(auth_plain_decode("AGFsAHB3 ", 9, user, sizeof(user), pass, sizeof(pass), &plen), -1);
    assert_int_equal(auth_plain_decode("AGFsAHB3x", 9, user, sizeof(user), pass, sizeof(pass), &plen), -1);
    /* "\0al\0p" = AGFsAHA= : padding required in the original variant. */
    assert_int_equal(auth_plain_decode("AGFsAHA=", 8, user, sizeof(user), pass, sizeof(pass), &plen), 0);
    assert_string_equal(pass, "p");
    assert_int_equal(auth_plain_decode("AGFsAHA", 7, user, sizeof(user), pass, sizeof(pass), &plen), -1);
    /* Only the given length is read. */
    assert_int_equal(auth_plain_decode("AGFsAHB3AAAA", 8, user, sizeof(user), pass, sizeof(pass), &plen), 0);
    assert_string_equal(pass, "pw");

    /* Over-long input. */
    {
        char big[3000];
        static char bigpass[2100];
        memset(big, 'Q', sizeof(big));
        big[0] = '\0';
        big[10] = '\0'; /* authcid of 9 bytes, 1989-byte password */
        assert_int_equal(plain(big, 2000, user, sizeof(user), bigpass, sizeof(bigpass), &plen), -1);
        assert_int_equal(plain(big, 300, user, sizeof(user), bigpass, sizeof(bigpass), &plen), 0);
        assert_int_equal(plen, 289);
        assert_int_equal(plain(big, 300, user, sizeof(user), pass, sizeof(pass), &plen), -1);
    }
}

static void test_b64(void **state)
{
    char out[64], back[64];

    assert_int_equal(auth_b64_encode("hello", 5, out, sizeof(out)), 8);
    assert_string_equal(out, "aGVsbG8=");
    assert_int_equal(auth_b64_decode(out, 8, back, sizeof(back)), 5);
    assert_memory_equal(back, "hello", 5);
    assert_int_equal(auth_b64_encode("", 0, out, sizeof(out)), 0);
    assert_string_equal(out, "");
    assert_int_equal(auth_b64_decode("", 0, back, sizeof(back)), 0);
    /* Too small an output. */
    assert_int_equal(auth_b64_encode("hello", 5, out, 8), 0);
    assert_string_equal(out, "");
    assert_int_equal(auth_b64_encode("hello", 5, out, 9), 8);
    assert_int_equal(auth_b64_decode("aGVsbG8=", 8, back, 4), -1);
    /* LOGIN's "Username:" prompt. */
    assert_int_equal(auth_b64_encode("Username:", 9, out, sizeof(out)), 12);
    assert_string_equal(out, "VXNlcm5hbWU6");
    assert_int_equal(auth_b64_decode("VXNlcm5hbWU6", 12, back, sizeof(back)), 9);
    assert_int_equal(auth_b64_decode("VXNlcm5hbWU", 11, back, sizeof(back)), -1);
    assert_int_equal(auth_b64_decode("VXNl*m5hbWU6", 12, back, sizeof(back)), -1);
}

/* --- Throttling. --- */

static struct limits_key v4key(int a, int b, int c, int d)
{
    struct limits_key k = {.family = 2 /* AF_INET */, .plen = 32, .addr = {a, b, c, d}};
    return k;
}

static struct auth *throttle_auth(unsigned max, unsigned account_max, unsigned window)
{
    struct auth_params p = {.workers = 1, .max_failures = max,
                            .account_max_failures = account_max, .window = window};
    return auth_new(&p);
}

/* The throttle steps auth_verify takes, one at a time: admit one attempt
 * of client k (NULL: none) as user u and count it in flight ... */
static enum auth_gate attempt_begin(struct auth *a, const struct limits_key *k, const char *u)
{
    unsigned char cid[AUTH_ID_BYTES], uid[AUTH_ID_BYTES];
    uint64_t now = now_ms();
    enum auth_gate g;

    if (k != NULL)
        client_id(a, k, cid);
    account_id(a, u, strlen(u), uid);
    pthread_mutex_lock(&a->throttle_mu);
    g = gate_locked(a, k != NULL ? cid : NULL, uid, now);
    if (g == AUTH_GATE_OK)
        count_begin_locked(a, k != NULL ? cid : NULL, uid, now);
    pthread_mutex_unlock(&a->throttle_mu);
    return g;
}

/* ... and end it as a worker does. */
static void attempt_end(struct auth *a, const struct limits_key *k, const char *u, bool ok)
{
    unsigned char cid[AUTH_ID_BYTES], uid[AUTH_ID_BYTES];

    if (k != NULL)
        client_id(a, k, cid);
    account_id(a, u, strlen(u), uid);
    pthread_mutex_lock(&a->throttle_mu);
    count_end_locked(a, k != NULL ? cid : NULL, uid, ok ? AUTH_OUTCOME_OK : AUTH_OUTCOME_FAILED,
                     now_ms());
    pthread_mutex_unlock(&a->throttle_mu);
}

/* The account's failures (in the window) and attempts in flight. */
static void account_counts(struct auth *a, const char *u, unsigned *failures, unsigned *inflight)
{
    unsigned char uid[AUTH_ID_BYTES];
    struct auth_throttle_slot *s;

    account_id(a, u, strlen(u), uid);
    pthread_mutex_lock(&a->throttle_mu);
    s = throttle_find(a, uid, false);
    *failures = s != NULL ? slot_failures(a, s, now_ms()) : 0;
    *inflight = s != NULL ? s->inflight : 0;
    pthread_mutex_unlock(&a->throttle_mu);
}

/* n failed attempts from client k as user u. */
static void fail_n(struct auth *a, const struct limits_key *k, const char *u, int n)
{
    for (int i = 0; i < n; i++) {
        assert_int_equal(attempt_begin(a, k, u), AUTH_GATE_OK);
        attempt_end(a, k, u, false);
    }
}

static void test_throttle(void **state)
{
    struct auth *a = throttle_auth(3, 100, 1); /* 3 failures per 1 s */
    struct limits_key k1 = v4key(192, 0, 2, 1), k2 = v4key(192, 0, 2, 2);

    assert_non_null(a);
    assert_false(auth_client_throttled(a, &k1));
    fail_n(a, &k1, "u1@x", 2);
    assert_false(auth_client_throttled(a, &k1));
    fail_n(a, &k1, "u2@x", 1);
    assert_true(auth_client_throttled(a, &k1));
    assert_int_equal(attempt_begin(a, &k1, "u3@x"), AUTH_GATE_CLIENT);
    assert_false(auth_client_throttled(a, &k2));

    /* The window passes: the address may try again. */
    sleep_ms(1100);
    assert_false(auth_client_throttled(a, &k1));
    fail_n(a, &k1, "u1@x", 1); /* a new window: 1 failure */
    assert_false(auth_client_throttled(a, &k1));
    fail_n(a, &k1, "u1@x", 2);
    assert_true(auth_client_throttled(a, &k1));

    /* A success does not clear the client's count (one good account must
     * not buy guesses at others). */
    attempt_end(a, &k1, "u1@x", true);
    assert_true(auth_client_throttled(a, &k1));

    /* The table is bounded: thousands of addresses, no failure; the most
     * recent ones are still tracked. */
    struct limits_key k;
    char user[32];
    for (int i = 0; i < 20000; i++) {
        k = v4key(10, i >> 16, (i >> 8) & 255, i & 255);
        snprintf(user, sizeof(user), "u%d@x", i);
        fail_n(a, &k, user, 3);
    }
    assert_true(auth_client_throttled(a, &k));
    auth_free(a);

    /* max_failures 0 disables throttling. */
    a = throttle_auth(0, 0, 60);
    assert_non_null(a);
    k = v4key(192, 0, 2, 9);
    fail_n(a, &k, "u@x", 10);
    assert_false(auth_client_throttled(a, &k));
    auth_free(a);
}

/* Attempts count while in flight: 40 parallel attempts with max 5 admit 5. */
static void test_throttle_in_flight(void **state)
{
    struct auth *a = throttle_auth(5, 1000, 60);
    struct limits_key k = v4key(198, 51, 100, 7), other = v4key(198, 51, 100, 8);
    int admitted = 0;

    for (int i = 0; i < 40; i++)
        admitted += attempt_begin(a, &k, "victim@x") == AUTH_GATE_OK;
    assert_int_equal(admitted, 5);
    assert_true(auth_client_throttled(a, &k));
    assert_false(auth_client_throttled(a, &other));
    /* Failures replace the attempts in flight one for one. */
    for (int i = 0; i < 4; i++)
        attempt_end(a, &k, "victim@x", false);
    assert_true(auth_client_throttled(a, &k));   /* 4 failures + 1 in flight */
    attempt_end(a, &k, "victim@x", true);
    assert_false(auth_client_throttled(a, &k));   /* 4 failures */
    assert_int_equal(attempt_begin(a, &k, "victim@x"), AUTH_GATE_OK);
    assert_true(auth_client_throttled(a, &k));
    attempt_end(a, &k, "victim@x", false);
    assert_true(auth_client_throttled(a, &k));
    auth_free(a);
}

/* Per account: many prefixes against one user name stop at its maximum;
 * the domain's case does not matter, a success clears the account. */
static void test_throttle_account(void **state)
{
    struct auth *a = throttle_auth(5, 4, 60);
    for (int i = 0; i < 4; i++) {
        struct limits_key k = v4key(203, 0, 113, i);
        fail_n(a, &k, i % 2 ? "alice@Example.TEST" : "alice@example.test", 1);
    }
    struct limits_key k = v4key(203, 0, 113, 50);
    assert_int_equal(attempt_begin(a, &k, "alice@example.test"), AUTH_GATE_ACCOUNT);
    assert_int_equal(attempt_begin(a, &k, "Alice@example.test"), AUTH_GATE_OK);
    attempt_end(a, &k, "Alice@example.test", false);
    auth_free(a);

    a = throttle_auth(5, 2, 60);
    k = v4key(203, 0, 113, 60);
    fail_n(a, &k, "bob@x", 1);
    assert_int_equal(attempt_begin(a, &k, "bob@x"), AUTH_GATE_OK);
    attempt_end(a, &k, "bob@x", true);
    fail_n(a, &k, "bob@x", 1);
    assert_int_equal(attempt_begin(a, &k, "bob@x"), AUTH_GATE_OK); /* the success cleared it */
    attempt_end(a, &k, "bob@x", false);
    assert_int_equal(attempt_begin(a, &k, "bob@x"), AUTH_GATE_ACCOUNT);
    auth_free(a);
}

/* Without a client key (a trusted network, core/policy.h) only the account
 * counts: app A's failures from one address leave app B alone there, and
 * A's own account still stops at its maximum. */
static void test_throttle_no_client(void **state)
{
    struct auth *a = throttle_auth(3, 5, 60);
    struct limits_key lo = v4key(127, 0, 0, 1);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(attempt_begin(a, NULL, "app-a@x"), AUTH_GATE_OK);
        attempt_end(a, NULL, "app-a@x", false);
    }
    assert_int_equal(attempt_begin(a, NULL, "app-a@x"), AUTH_GATE_ACCOUNT);
    assert_false(auth_client_throttled(a, NULL));
    assert_int_equal(attempt_begin(a, NULL, "app-b@x"), AUTH_GATE_OK);
    attempt_end(a, NULL, "app-b@x", true);
    /* Nothing was counted against the address itself. */
    assert_false(auth_client_throttled(a, &lo));
    assert_int_equal(attempt_begin(a, &lo, "app-c@x"), AUTH_GATE_OK);
    attempt_end(a, &lo, "app-c@x", true);
    auth_free(a);
}

/* --- auth_verify through real loops. --- */

struct fixture {
    char dir[64];
    struct users *users;
    struct io_loop *loop;
};

/* One request.  left counts the callbacks its loop still expects; the
 * callback that brings it to 0 stops that loop. */
struct pending {
    struct auth_req req;
    int done;            /* callbacks seen */
    bool ok;
    uint64_t t_done;     /* mono_us() at the callback */
    pthread_t thread;    /* where the callback ran */
    int *left;
    struct auth *a;      /* for callbacks that act on others */
    struct pending *partner;  /* test_cancel_in_callback */
};

static _Thread_local bool in_verify; /* true while inside auth_verify() */
static int outstanding;              /* main loop's callbacks still expected */

static void on_verified(struct auth_req *req, bool ok)
{
    struct pending *p = req->owner;

    assert_false(in_verify); /* never synchronous */
    p->done++;
    p->ok = ok;
    p->t_done = mono_us();
    p->thread = pthread_self();
    if (--*p->left == 0)
        io_loop_stop(req->loop);
}

/* Start p on loop (the calling thread's) as client k; the result must be
 * want (an enum auth_path or -errno).  A request whose callback will come
 * adds one to *left. */
static void start_on(struct auth *a, struct io_loop *loop, int *left, struct pending *p,
                     const struct limits_key *k, const char *user, size_t ulen, const char *pass,
                     size_t plen, int want)
{
    memset(p, 0, sizeof(*p));
    p->req.owner = p;
    p->left = left;
    p->a = a;
    in_verify = true;
    int rc = auth_verify(a, &p->req, loop, k, user, ulen, pass, plen, on_verified);
    in_verify = false;
    assert_int_equal(rc, want);
    assert_int_equal(p->done, 0);
    if (rc >= 0)
        ++*left;
}

static void start(struct auth *a, struct fixture *f, struct pending *p, const char *user,
                  size_t ulen, const char *pass, size_t plen)
{
    memset(p, 0, sizeof(*p));
    p->req.owner = p;
    p->left = &outstanding;
    outstanding++;
    in_verify = true;
    assert_true(auth_verify(a, &p->req, f->loop, NULL, user, ulen, pass, plen, on_verified) >= 0);
    in_verify = false;
    assert_int_equal(p->done, 0);
}

static void run_loop(struct fixture *f)
{
    assert_int_equal(io_loop_run(f->loop), 0);
    assert_int_equal(outstanding, 0);
}

/* Holding the workers: a flight stays in flight until release_workers(). */
static pthread_mutex_t hold_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hold_cv = PTHREAD_COND_INITIALIZER;
static bool held;
static int holding; /* workers waiting in the hook */

static void hold_hook(void)
{
    pthread_mutex_lock(&hold_mu);
    holding++;
    pthread_cond_broadcast(&hold_cv);
    while (held)
        pthread_cond_wait(&hold_cv, &hold_mu);
    holding--;
    pthread_mutex_unlock(&hold_mu);
}

static void hold_workers(void)
{
    pthread_mutex_lock(&hold_mu);
    held = true;
    pthread_mutex_unlock(&hold_mu);
    auth_verify_hook = hold_hook;
}

/* Wait (10 s at most) until n workers are held. */
static void wait_holding(int n)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    pthread_mutex_lock(&hold_mu);
    while (holding < n)
        if (pthread_cond_timedwait(&hold_cv, &hold_mu, &ts) != 0)
            break;
    assert_int_equal(holding, n);
    pthread_mutex_unlock(&hold_mu);
}

static void release_workers(void)
{
    pthread_mutex_lock(&hold_mu);
    held = false;
    pthread_cond_broadcast(&hold_cv);
    pthread_mutex_unlock(&hold_mu);
}

static unsigned nflights(struct auth *a)
{
    unsigned n = 0;

    pthread_mutex_lock(&a->mu);
    for (size_t i = 0; i < AUTH_FLIGHT_BUCKETS; i++)
        for (struct auth_flight *fl = a->flights[i]; fl != NULL; fl = fl->next_in_bucket)
            n++;
    pthread_mutex_unlock(&a->mu);
    return n;
}

/* Wait (20 s at most) until no verification is in flight. */
static void wait_no_flights(struct auth *a)
{
    for (int i = 0; i < 2000 && nflights(a) > 0; i++)
        sleep_ms(10);
    assert_int_equal(nflights(a), 0);
}

static unsigned nposted(struct auth *a)
{
    unsigned n = 0;

    pthread_mutex_lock(&a->mu);
    for (struct auth_group *g = a->posted; g != NULL; g = g->next)
        n++;
    pthread_mutex_unlock(&a->mu);
    return n;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(p);
}

static int write_users(const char *dir, const char *line)
{
    char path[PATH_MAX];
    FILE *fp;

    snprintf(path, sizeof(path), "%s/domains", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/domains/example.com", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/domains/example.com/users", dir);
    fp = fopen(path, "w");
    if (fp == NULL)
        return -1;
    fputs(line, fp);
    fclose(fp);
    return 0;
}

static enum io_backend backend = IO_BACKEND_AUTO;

static int loop_setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char hash[128], line[256], err[256];

    strcpy(f->dir, "/tmp/ortoo-auth-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    assert_int_equal(users_hash_password("right", 5, hash), 0);
    snprintf(line, sizeof(line), "# test\nalice@example.com:%s\n", hash);
    assert_int_equal(write_users(f->dir, line), 0);
    assert_int_equal(users_load(f->dir, &f->users, err, sizeof(err)), 0);
    f->loop = io_loop_new(backend, 0);
    assert_non_null(f->loop);
    if (backend != IO_BACKEND_AUTO)
        assert_int_equal(io_loop_backend(f->loop), backend);
    outstanding = 0;
    auth_verify_hook = NULL;
    held = false;
    holding = 0;
    *state = f;
    return 0;
}

static int loop_teardown(void **state)
{
    struct fixture *f = *state;

    auth_verify_hook = NULL;
    io_loop_free(f->loop);
    users_free(f->users);
    nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static int auto_setup(void **state)
{
    backend = IO_BACKEND_AUTO;
    return loop_setup(state);
}

static int epoll_setup(void **state)
{
    backend = IO_BACKEND_EPOLL;
    return loop_setup(state);
}

static void test_verify(void **state)
{
    struct fixture *f = *state;
    struct auth *a = auth_new(&(struct auth_params){.workers = 2, .cache_ttl = 60, .max_failures = 5, .window = 60});
    struct pending p[6];
    char longuser[400], longpass[300];

    assert_non_null(a);
    auth_set_users(a, f->users);
    memset(longuser, 'u', sizeof(longuser));
    memset(longpass, 'p', sizeof(longpass));

    start(a, f, &p[0], "alice@example.com", 17, "right", 5);
    start(a, f, &p[1], "alice@example.com", 17, "wrong", 5);
    start(a, f, &p[2], "mallory@example.com", 19, "right", 5);
    start(a, f, &p[3], "alice@EXAMPLE.com", 17, "right", 5); /* domain any case */
    start(a, f, &p[4], longuser, sizeof(longuser), "right", 5);
    start(a, f, &p[5], "alice@example.com", 17, longpass, sizeof(longpass));
    run_loop(f);

    for (int i = 0; i < 6; i++)
        assert_int_equal(p[i].done, 1);
    assert_true(p[0].ok);
    assert_false(p[1].ok);
    assert_false(p[2].ok);
    assert_true(p[3].ok);
    assert_false(p[4].ok);
    assert_false(p[5].ok);
    assert_string_equal(p[3].req.user, "alice@EXAMPLE.com");
    assert_string_equal(p[4].req.user, "");
    /* Nothing is left behind: no flight, no result on its way. */
    assert_int_equal(nflights(a), 0);
    assert_int_equal(nposted(a), 0);

    /* Embedded NUL in the user name, and a user with NUL then a valid
     * address, fail. */
    start(a, f, &p[0], "alice@example.com\0x", 19, "right", 5);
    start(a, f, &p[1], "x\0alice@example.com", 19, "right", 5);
    run_loop(f);
    assert_false(p[0].ok);
    assert_false(p[1].ok);

    /* No users table at all: everything fails. */
    auth_set_users(a, NULL);
    start(a, f, &p[0], "alice@example.com", 17, "right", 5);
    run_loop(f);
    assert_int_equal(p[0].done, 1);
    assert_false(p[0].ok);
    auth_free(a);
}

static void test_cache(void **state)
{
    struct fixture *f = *state;
    struct auth *a = auth_new(&(struct auth_params){.workers = 1, .cache_ttl = 1, .max_failures = 5, .window = 60}); /* cache ttl 1 s */
    struct pending p;
    uint64_t t0, slow, fast, expired;
    struct users *u2;
    char hash[128], line[256], err[256];

    assert_non_null(a);
    auth_set_users(a, f->users);

    t0 = mono_us();
    start_on(a, f->loop, &outstanding, &p, NULL, "alice@example.com", 17, "right", 5,
             AUTH_PATH_ARGON2ID);
    run_loop(f);
    assert_true(p.ok);
    slow = p.t_done - t0;

    /* Second time: answered from the cache, still through the loop. */
    t0 = mono_us();
    start_on(a, f->loop, &outstanding, &p, NULL, "alice@example.com", 17, "right", 5,
             AUTH_PATH_CACHE);
    run_loop(f);
    assert_int_equal(p.done, 1);
    assert_true(p.ok);
    fast = p.t_done - t0;
    print_message("argon2 verify %llu us, cached %llu us\n", (unsigned long long)slow,
                  (unsigned long long)fast);
    assert_true(fast < 5000);
    assert_true(slow > 5000);

    /* A wrong password is not cached as anything. */
    start_on(a, f->loop, &outstanding, &p, NULL, "alice@example.com", 17, "wrong", 5,
             AUTH_PATH_ARGON2ID);
    run_loop(f);
    assert_false(p.ok);
    start_on(a, f->loop, &outstanding, &p, NULL, "alice@example.com", 17, "wrong", 5,
             AUTH_PATH_ARGON2ID);
    run_loop(f);
    assert_false(p.ok);

    /* After the ttl the cache entry is gone: argon2 again. */
    sleep_ms(1100);
    t0 = mono_us();
    start_on(a, f->loop, &outstanding, &p, NULL, "alice@example.com", 17, "right", 5,
             AUTH_PATH_ARGON2ID);
    run_loop(f);
    assert_true(p.ok);
    expired = p.t_done - t0;
    assert_true(expired > 5000);

    /* A new password (new hash) is not answered by the old cache entry. */
    assert_int_equal(users_hash_password("newpw", 5, hash), 0);
    snprintf(line, sizeof(line), "alice@example.com:%s\n", hash);
    assert_int_equal(write_users(f->dir, line), 0);
    assert_int_equal(users_load(f->dir, &u2, err, sizeof(err)), 0);
    auth_set_users(a, u2);
    start(a, f, &p, "alice@example.com", 17, "right", 5);
    run_loop(f);
    assert_false(p.ok);
    start(a, f, &p, "alice@example.com", 17, "newpw", 5);
    run_loop(f);
    assert_true(p.ok);
    auth_free(a);
    users_free(u2);
}

/* Unknown users cost about the same as known ones (dummy hash). */
static void test_unknown_timing(void **state)
{
    struct fixture *f = *state;
    struct auth *a = auth_new(&(struct auth_params){.workers = 1, .window = 60}); /* no cache */
    struct pending p;
    uint64_t t0, known, unknown;

    assert_non_null(a);
    auth_set_users(a, f->users);
    t0 = mono_us();
    start(a, f, &p, "alice@example.com", 17, "wrong", 5);
    run_loop(f);
    known = p.t_done - t0;
    t0 = mono_us();
    start(a, f, &p, "nobody@example.com", 18, "wrong", 5);
    run_loop(f);
    unknown = p.t_done - t0;
    assert_false(p.ok);
    print_message("known %llu us, unknown %llu us\n", (unsigned long long)known,
                  (unsigned long long)unknown);
    assert_true(unknown > known / 3);
    auth_free(a);
}

#define ALICE "alice@example.com", 17

/*
 * Single flight: while one verification of (user, password) is in flight,
 * identical attempts join it and count nothing; a distinct password is a
 * verification of its own.  40 identical wrong passwords are one guess:
 * one failure.  Joiners are refused like anyone at the limit.
 */
static void test_single_flight(void **state)
{
    struct fixture *f = *state;
    struct limits_key k = v4key(192, 0, 2, 77);
    struct auth *a = auth_new(&(struct auth_params){.workers = 1, .max_failures = 100,
                                                    .account_max_failures = 4, .window = 60});
    static struct pending p[64];
    unsigned fails, inflight;

    assert_non_null(a);
    auth_set_users(a, f->users);
    hold_workers();

    /* 40 identical wrong passwords: one verification. */
    start_on(a, f->loop, &outstanding, &p[0], &k, ALICE, "wrong1", 6, AUTH_PATH_ARGON2ID);
    wait_holding(1);
    for (int i = 1; i < 40; i++)
        start_on(a, f->loop, &outstanding, &p[i], &k, ALICE, "wrong1", 6, AUTH_PATH_SHARED);
    /* The same password for another user is another guess. */
    start_on(a, f->loop, &outstanding, &p[40], &k, "bob@example.com", 15, "wrong1", 6,
             AUTH_PATH_ARGON2ID);
    /* And so is another password for alice. */
    start_on(a, f->loop, &outstanding, &p[41], &k, ALICE, "wrong2", 6, AUTH_PATH_ARGON2ID);
    start_on(a, f->loop, &outstanding, &p[42], &k, ALICE, "wrong2", 6, AUTH_PATH_SHARED);
    assert_int_equal(nflights(a), 3);
    account_counts(a, "alice@example.com", &fails, &inflight);
    assert_int_equal(fails, 0);
    assert_int_equal(inflight, 2);
    release_workers();
    run_loop(f);
    for (int i = 0; i < 43; i++) {
        assert_int_equal(p[i].done, 1);
        assert_false(p[i].ok);
    }
    /* Two guesses at alice, two failures (not 41). */
    account_counts(a, "alice@example.com", &fails, &inflight);
    assert_int_equal(fails, 2);
    assert_int_equal(inflight, 0);

    /* At the limit (2 failures + 2 in flight of 4) an identical attempt is
     * refused like any other: a throttled client cannot probe what is in
     * flight. */
    hold_workers();
    start_on(a, f->loop, &outstanding, &p[0], &k, ALICE, "wrong3", 6, AUTH_PATH_ARGON2ID);
    wait_holding(1);
    start_on(a, f->loop, &outstanding, &p[1], &k, ALICE, "wrong4", 6, AUTH_PATH_ARGON2ID);
    start_on(a, f->loop, &outstanding, &p[2], &k, ALICE, "wrong3", 6, -EAGAIN);
    assert_int_equal(p[2].req.gate, AUTH_GATE_ACCOUNT);
    start_on(a, f->loop, &outstanding, &p[3], &k, ALICE, "right", 5, -EAGAIN);
    release_workers();
    run_loop(f);
    assert_int_equal(p[2].done, 0);
    assert_int_equal(p[3].done, 0);
    auth_free(a);

    /* A bulk sender: 50 connections, one correct password, tight limits
     * (2 per prefix, 2 per account): one verification, 50 successes. */
    a = auth_new(&(struct auth_params){.workers = 2, .cache_ttl = 60, .max_failures = 2,
                                       .account_max_failures = 2, .window = 60});
    assert_non_null(a);
    auth_set_users(a, f->users);
    hold_workers();
    start_on(a, f->loop, &outstanding, &p[0], &k, ALICE, "right", 5, AUTH_PATH_ARGON2ID);
    wait_holding(1);
    for (int i = 1; i < 50; i++)
        start_on(a, f->loop, &outstanding, &p[i], &k, ALICE, "right", 5, AUTH_PATH_SHARED);
    release_workers();
    run_loop(f);
    for (int i = 0; i < 50; i++) {
        assert_int_equal(p[i].done, 1);
        assert_true(p[i].ok);
    }
    /* Once it is over, the next one comes from the cache. */
    start_on(a, f->loop, &outstanding, &p[0], &k, ALICE, "right", 5, AUTH_PATH_CACHE);
    run_loop(f);
    assert_true(p[0].ok);
    account_counts(a, "alice@example.com", &fails, &inflight);
    assert_int_equal(fails + inflight, 0);
    auth_free(a);
}

/* Joiners take no place in the queue; distinct checks do. */
static void test_queue_bound(void **state)
{
    struct fixture *f = *state;
    struct auth *a = auth_new(&(struct auth_params){.workers = 1, .max_queue = 1, .window = 60});
    struct pending p[8];
    unsigned fails, inflight;

    assert_non_null(a);
    auth_set_users(a, f->users);
    hold_workers();
    start_on(a, f->loop, &outstanding, &p[0], NULL, ALICE, "pw-a", 4, AUTH_PATH_ARGON2ID);
    wait_holding(1);                                        /* taken by the worker */
    start_on(a, f->loop, &outstanding, &p[1], NULL, ALICE, "pw-b", 4, AUTH_PATH_ARGON2ID);
    start_on(a, f->loop, &outstanding, &p[2], NULL, ALICE, "pw-c", 4, -EBUSY); /* queue full */
    start_on(a, f->loop, &outstanding, &p[3], NULL, ALICE, "pw-b", 4, AUTH_PATH_SHARED);
    start_on(a, f->loop, &outstanding, &p[4], NULL, ALICE, "pw-a", 4, AUTH_PATH_SHARED);
    /* The refused one was not counted. */
    account_counts(a, "alice@example.com", &fails, &inflight);
    assert_int_equal(inflight, 2);
    release_workers();
    run_loop(f);
    assert_int_equal(p[2].done, 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(p[i].done, i == 2 ? 0 : 1);
    account_counts(a, "alice@example.com", &fails, &inflight);
    assert_int_equal(fails, 2);
    assert_int_equal(inflight, 0);
    auth_free(a);
}

/* A callback that must never run (its request was cancelled and freed:
 * ASan catches any touch). */
static void on_never(struct auth_req *req, bool ok)
{
    fail_msg("callback of a cancelled request");
}

static struct pending *start_heap(struct auth *a, struct fixture *f, const char *pass, int want)
{
    struct pending *p = malloc(sizeof(*p));
    int dummy = 0;

    assert_non_null(p);
    start_on(a, f->loop, &dummy, p, NULL, ALICE, pass, strlen(pass), want);
    p->req.cb = on_never; /* (after the start: auth_verify sets cb) */
    return p;
}

static void cancel_free(struct auth *a, struct pending *p)
{
    auth_cancel(a, &p->req);
    assert_null(p->req.group);
    memset(p, 0x5a, sizeof(*p));
    free(p);
}

/* Cancelling: the starter, a joiner, after the result was posted, all
 * waiters; nothing touches a cancelled request (freed at once), the
 * verification still completes and counts. */
static void test_cancel(void **state)
{
    struct fixture *f = *state;
    struct auth *a = auth_new(&(struct auth_params){.workers = 1, .cache_ttl = 60,
                                                    .account_max_failures = 100, .window = 60});
    struct pending keep, keep2, *x, *y;
    unsigned fails, inflight;

    assert_non_null(a);
    auth_set_users(a, f->users);

    /* 1. The starter and a joiner go away before the result; a third
     * waiter gets it. */
    hold_workers();
    x = start_heap(a, f, "wrong", AUTH_PATH_ARGON2ID);
    wait_holding(1);
    y = start_heap(a, f, "wrong", AUTH_PATH_SHARED);
    start_on(a, f->loop, &outstanding, &keep, NULL, ALICE, "wrong", 5, AUTH_PATH_SHARED);
    cancel_free(a, x);
    cancel_free(a, y);
    release_workers();
    run_loop(f);
    assert_int_equal(keep.done, 1);
    assert_false(keep.ok);
    account_counts(a, "alice@example.com", &fails, &inflight);
    assert_int_equal(fails, 1);

    /* 2. The result is already posted to the loop (which has not run yet)
     * when one waiter goes away. */
    hold_workers();
    x = start_heap(a, f, "wrong-2", AUTH_PATH_ARGON2ID);
    wait_holding(1);
    start_on(a, f->loop, &outstanding, &keep, NULL, ALICE, "wrong-2", 7, AUTH_PATH_SHARED);
    release_workers();
    wait_no_flights(a);
    assert_int_equal(nposted(a), 1);
    cancel_free(a, x);
    run_loop(f);
    assert_int_equal(keep.done, 1);
    assert_int_equal(nposted(a), 0);

    /* 3. Everyone goes away: the check completes, is counted, and its
     * result goes nowhere (nothing leaks: LeakSanitizer). */
    hold_workers();
    x = start_heap(a, f, "wrong-3", AUTH_PATH_ARGON2ID);
    wait_holding(1);
    y = start_heap(a, f, "wrong-3", AUTH_PATH_SHARED);
    cancel_free(a, y);
    cancel_free(a, x);
    release_workers();
    wait_no_flights(a);
    assert_int_equal(nposted(a), 0);
    account_counts(a, "alice@example.com", &fails, &inflight);
    assert_int_equal(fails, 3);
    assert_int_equal(inflight, 0);

    /* 4. Answers given at once (cache, invalid input) are cancellable too. */
    start_on(a, f->loop, &outstanding, &keep, NULL, ALICE, "right", 5, AUTH_PATH_ARGON2ID);
    run_loop(f);
    assert_true(keep.ok);
    x = start_heap(a, f, "right", AUTH_PATH_CACHE);
    cancel_free(a, x);
    {
        char longpass[300];
        memset(longpass, 'p', sizeof(longpass));
        x = malloc(sizeof(*x));
        int dummy = 0;
        start_on(a, f->loop, &dummy, x, NULL, ALICE, longpass, sizeof(longpass),
                 AUTH_PATH_INVALID);
        x->req.cb = on_never;
        cancel_free(a, x);
    }
    /* The loop runs their (now empty) results; keep2 stops it. */
    start_on(a, f->loop, &outstanding, &keep2, NULL, ALICE, "right", 5, AUTH_PATH_CACHE);
    run_loop(f);
    assert_int_equal(keep2.done, 1);
    assert_int_equal(nposted(a), 0);

    /* 5. Cancelling what does not wait is a no-op: after the callback, and
     * a request never started. */
    auth_cancel(a, &keep2.req);
    memset(&keep, 0, sizeof(keep));
    auth_cancel(a, &keep.req);
    auth_free(a);
}

/* Two waiters of one result on one loop; whichever is called first
 * cancels and frees the other, which must then never be called. */
static int partner_calls;

static void on_partner(struct auth_req *req, bool ok)
{
    struct pending *p = req->owner;

    partner_calls++;
    cancel_free(p->a, p->partner);
    if (--*p->left == 0)
        io_loop_stop(req->loop);
    free(p);
}

/* A callback that starts the same check again, on the same request (a
 * client that retries in its pipelined input): a new verification, as
 * the old one is over. */
static int restarts;

static void on_restart(struct auth_req *req, bool ok)
{
    struct pending *p = req->owner;

    assert_false(ok);
    if (restarts++ == 0) {
        int rc = auth_verify(p->a, req, req->loop, NULL, ALICE, "wrong", 5, on_restart);
        assert_int_equal(rc, AUTH_PATH_ARGON2ID);
        return;
    }
    if (--*p->left == 0)
        io_loop_stop(req->loop);
}

static void test_cancel_in_callback(void **state)
{
    struct fixture *f = *state;
    struct auth *a = auth_new(&(struct auth_params){.workers = 1, .window = 60});
    struct pending *x = malloc(sizeof(*x)), *y = malloc(sizeof(*y)), r;

    assert_non_null(a);
    auth_set_users(a, f->users);
    hold_workers();
    start_on(a, f->loop, &outstanding, x, NULL, ALICE, "wrong", 5, AUTH_PATH_ARGON2ID);
    wait_holding(1);
    start_on(a, f->loop, &outstanding, y, NULL, ALICE, "wrong", 5, AUTH_PATH_SHARED);
    x->req.cb = y->req.cb = on_partner;
    x->partner = y;
    y->partner = x;
    outstanding = 1; /* one of the two is called */
    partner_calls = 0;
    release_workers();
    run_loop(f);
    assert_int_equal(partner_calls, 1);

    start_on(a, f->loop, &outstanding, &r, NULL, ALICE, "wrong", 5, AUTH_PATH_ARGON2ID);
    r.req.cb = on_restart;
    restarts = 0;
    run_loop(f);
    assert_int_equal(restarts, 2);
    auth_free(a);
}

/* Waiters on two loops (two reactors): each gets the result on its own
 * thread; one on the second loop goes away first. */
struct loop2 {
    struct auth *a;
    struct io_loop *loop;
    pthread_t thread;
    int left;                 /* callbacks loop 2 still expects */
    struct pending p[3];
    struct pending *gone;     /* cancelled on loop 2 */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int step;                 /* steps done on loop 2 */
};

static void loop2_step_done(struct loop2 *t)
{
    pthread_mutex_lock(&t->mu);
    t->step++;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static void loop2_wait_step(struct loop2 *t, int step)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    pthread_mutex_lock(&t->mu);
    while (t->step < step)
        if (pthread_cond_timedwait(&t->cv, &t->mu, &ts) != 0)
            break;
    assert_true(t->step >= step);
    pthread_mutex_unlock(&t->mu);
}

static void loop2_start(void *arg)
{
    struct loop2 *t = arg;

    start_on(t->a, t->loop, &t->left, &t->p[0], NULL, ALICE, "right", 5, AUTH_PATH_SHARED);
    start_on(t->a, t->loop, &t->left, &t->p[1], NULL, ALICE, "right", 5, AUTH_PATH_SHARED);
    t->gone = malloc(sizeof(*t->gone));
    int dummy = 0;
    start_on(t->a, t->loop, &dummy, t->gone, NULL, ALICE, "right", 5, AUTH_PATH_SHARED);
    t->gone->req.cb = on_never;
    loop2_step_done(t);
}

static void loop2_cancel(void *arg)
{
    struct loop2 *t = arg;

    cancel_free(t->a, t->gone);
    loop2_step_done(t);
}

static void *loop2_main(void *arg)
{
    struct loop2 *t = arg;

    assert_int_equal(io_loop_run(t->loop), 0);
    return NULL;
}

static void test_two_loops(void **state)
{
    struct fixture *f = *state;
    struct auth *a = auth_new(&(struct auth_params){.workers = 2, .account_max_failures = 3,
                                                    .window = 60});
    struct loop2 *t = calloc(1, sizeof(*t));
    struct pending p0;
    unsigned ngroups = 0;

    assert_non_null(a);
    auth_set_users(a, f->users);
    t->a = a;
    t->loop = io_loop_new(backend, 0);
    assert_non_null(t->loop);
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    assert_int_equal(pthread_create(&t->thread, NULL, loop2_main, t), 0);

    hold_workers();
    start_on(a, f->loop, &outstanding, &p0, NULL, ALICE, "right", 5, AUTH_PATH_ARGON2ID);
    wait_holding(1);
    assert_int_equal(io_loop_post(t->loop, loop2_start, t), 0);
    loop2_wait_step(t, 1);
    pthread_mutex_lock(&a->mu);
    for (size_t i = 0; i < AUTH_FLIGHT_BUCKETS; i++)
        for (struct auth_flight *fl = a->flights[i]; fl != NULL; fl = fl->next_in_bucket)
            for (struct auth_group *g = fl->groups; g != NULL; g = g->next)
                ngroups++;
    pthread_mutex_unlock(&a->mu);
    assert_int_equal(ngroups, 2); /* one flight, a group per loop */
    assert_int_equal(io_loop_post(t->loop, loop2_cancel, t), 0);
    loop2_wait_step(t, 2);
    /* 4 attempts on an account with a maximum of 3: they are one. */
    unsigned fails, inflight;
    account_counts(a, "alice@example.com", &fails, &inflight);
    assert_int_equal(inflight, 1);
    release_workers();
    run_loop(f);
    assert_int_equal(pthread_join(t->thread, NULL), 0); /* its last callback stops it */
    assert_int_equal(p0.done, 1);
    assert_true(p0.ok);
    assert_true(pthread_equal(p0.thread, pthread_self()));
    for (int i = 0; i < 2; i++) {
        assert_int_equal(t->p[i].done, 1);
        assert_true(t->p[i].ok);
        assert_true(pthread_equal(t->p[i].thread, t->thread));
    }
    assert_int_equal(t->left, 0);
    assert_int_equal(nposted(a), 0);
    auth_free(a);
    io_loop_free(t->loop);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_decode),
        cmocka_unit_test(test_b64),
        cmocka_unit_test(test_throttle),
        cmocka_unit_test(test_throttle_in_flight),
        cmocka_unit_test(test_throttle_account),
        cmocka_unit_test(test_throttle_no_client),
        cmocka_unit_test_setup_teardown(test_verify, auto_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_cache, auto_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_unknown_timing, auto_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_single_flight, auto_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_queue_bound, auto_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_cancel, auto_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_cancel_in_callback, auto_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_two_loops, auto_setup, loop_teardown),
        /* The same through the epoll backend. */
        cmocka_unit_test_setup_teardown(test_verify, epoll_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_cache, epoll_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_single_flight, epoll_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_queue_bound, epoll_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_cancel, epoll_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_cancel_in_callback, epoll_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_two_loops, epoll_setup, loop_teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
