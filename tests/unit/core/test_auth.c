/* SPDX-License-Identifier: MIT */
/*
 * test_auth.c - unit tests for core/auth.c: SASL PLAIN and base64 decoding,
 * throttling per client prefix and per account (attempts in flight count), and auth_verify() through a
 * real io loop (right, wrong and unknown users, over-long input, callbacks
 * never synchronous, the success cache making a second verification fast,
 * cache expiry, a password change defeating the cache).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/auth.h"
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

/* n failed attempts from client k as user u. */
static void fail_n(struct auth *a, const struct limits_key *k, const char *u, int n)
{
    for (int i = 0; i < n; i++) {
        assert_int_equal(auth_attempt_begin(a, k, u), AUTH_GATE_OK);
        auth_attempt_end(a, k, u, AUTH_OUTCOME_FAILED);
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
    assert_int_equal(auth_attempt_begin(a, &k1, "u3@x"), AUTH_GATE_CLIENT);
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
    auth_attempt_end(a, &k1, "u1@x", AUTH_OUTCOME_OK);
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
        admitted += auth_attempt_begin(a, &k, "victim@x") == AUTH_GATE_OK;
    assert_int_equal(admitted, 5);
    assert_true(auth_client_throttled(a, &k));
    assert_false(auth_client_throttled(a, &other));
    /* Aborted attempts (queue full) give their place back. */
    auth_attempt_end(a, &k, "victim@x", AUTH_OUTCOME_ABORTED);
    assert_false(auth_client_throttled(a, &k));
    for (int i = 0; i < 4; i++)
        auth_attempt_end(a, &k, "victim@x", AUTH_OUTCOME_FAILED);
    assert_false(auth_client_throttled(a, &k));   /* 4 failures */
    assert_int_equal(auth_attempt_begin(a, &k, "victim@x"), AUTH_GATE_OK);
    assert_true(auth_client_throttled(a, &k));
    auth_attempt_end(a, &k, "victim@x", AUTH_OUTCOME_FAILED);
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
    assert_int_equal(auth_attempt_begin(a, &k, "alice@example.test"), AUTH_GATE_ACCOUNT);
    assert_int_equal(auth_attempt_begin(a, &k, "Alice@example.test"), AUTH_GATE_OK);
    auth_attempt_end(a, &k, "Alice@example.test", AUTH_OUTCOME_FAILED);
    auth_free(a);

    a = throttle_auth(5, 2, 60);
    k = v4key(203, 0, 113, 60);
    fail_n(a, &k, "bob@x", 1);
    assert_int_equal(auth_attempt_begin(a, &k, "bob@x"), AUTH_GATE_OK);
    auth_attempt_end(a, &k, "bob@x", AUTH_OUTCOME_OK);
    fail_n(a, &k, "bob@x", 1);
    assert_int_equal(auth_attempt_begin(a, &k, "bob@x"), AUTH_GATE_OK);
    auth_attempt_end(a, &k, "bob@x", AUTH_OUTCOME_ABORTED);
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
        assert_int_equal(auth_attempt_begin(a, NULL, "app-a@x"), AUTH_GATE_OK);
        auth_attempt_end(a, NULL, "app-a@x", AUTH_OUTCOME_FAILED);
    }
    assert_int_equal(auth_attempt_begin(a, NULL, "app-a@x"), AUTH_GATE_ACCOUNT);
    assert_false(auth_client_throttled(a, NULL));
    assert_int_equal(auth_attempt_begin(a, NULL, "app-b@x"), AUTH_GATE_OK);
    auth_attempt_end(a, NULL, "app-b@x", AUTH_OUTCOME_OK);
    /* Nothing was counted against the address itself. */
    assert_false(auth_client_throttled(a, &lo));
    assert_int_equal(auth_attempt_begin(a, &lo, "app-c@x"), AUTH_GATE_OK);
    auth_attempt_end(a, &lo, "app-c@x", AUTH_OUTCOME_OK);
    auth_free(a);
}

/* --- auth_verify through a real loop. --- */

struct fixture {
    char dir[64];
    struct users *users;
    struct io_loop *loop;
};

struct pending {
    struct auth_req req;
    int done;        /* callbacks seen */
    bool ok;
    uint64_t t_done; /* mono_us() at the callback */
};

static bool in_verify;  /* true while inside auth_verify() */
static int outstanding; /* requests whose callback has not run */

static void on_verified(struct auth_req *req, bool ok)
{
    struct pending *p = req->owner;

    assert_false(in_verify); /* never synchronous */
    p->done++;
    p->ok = ok;
    p->t_done = mono_us();
    if (--outstanding == 0)
        io_loop_stop(req->loop);
}

static void start(struct auth *a, struct fixture *f, struct pending *p, const char *user,
                  size_t ulen, const char *pass, size_t plen)
{
    memset(p, 0, sizeof(*p));
    p->req.owner = p;
    outstanding++;
    in_verify = true;
    assert_int_equal(auth_verify(a, &p->req, f->loop, user, ulen, pass, plen, on_verified), 0);
    in_verify = false;
    assert_int_equal(p->done, 0);
}

static void run_loop(struct fixture *f)
{
    assert_int_equal(io_loop_run(f->loop), 0);
    assert_int_equal(outstanding, 0);
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
    *state = f;
    return 0;
}

static int loop_teardown(void **state)
{
    struct fixture *f = *state;

    io_loop_free(f->loop);
    users_free(f->users);
    nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
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
    /* The password copies were wiped. */
    for (int i = 0; i < 6; i++) {
        assert_int_equal(p[i].req.pass_len, 0);
        assert_int_equal(p[i].req.pass[0], 0);
    }

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
    start(a, f, &p, "alice@example.com", 17, "right", 5);
    run_loop(f);
    assert_true(p.ok);
    slow = p.t_done - t0;

    /* Second time: answered from the cache, still through the loop. */
    t0 = mono_us();
    start(a, f, &p, "alice@example.com", 17, "right", 5);
    run_loop(f);
    assert_int_equal(p.done, 1);
    assert_true(p.ok);
    fast = p.t_done - t0;
    print_message("argon2 verify %llu us, cached %llu us\n", (unsigned long long)slow,
                  (unsigned long long)fast);
    assert_true(fast < 5000);
    assert_true(slow > 5000);

    /* A wrong password is not cached as anything. */
    start(a, f, &p, "alice@example.com", 17, "wrong", 5);
    run_loop(f);
    assert_false(p.ok);
    start(a, f, &p, "alice@example.com", 17, "wrong", 5);
    run_loop(f);
    assert_false(p.ok);

    /* After the ttl the cache entry is gone: argon2 again. */
    sleep_ms(1100);
    t0 = mono_us();
    start(a, f, &p, "alice@example.com", 17, "right", 5);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_decode),
        cmocka_unit_test(test_b64),
        cmocka_unit_test(test_throttle),
        cmocka_unit_test(test_throttle_in_flight),
        cmocka_unit_test(test_throttle_account),
        cmocka_unit_test(test_throttle_no_client),
        cmocka_unit_test_setup_teardown(test_verify, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_cache, loop_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_unknown_timing, loop_setup, loop_teardown),
        /* The same through the epoll backend. */
        cmocka_unit_test_setup_teardown(test_verify, epoll_setup, loop_teardown),
        cmocka_unit_test_setup_teardown(test_cache, epoll_setup, loop_teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
