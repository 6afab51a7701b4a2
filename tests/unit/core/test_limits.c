/* SPDX-License-Identifier: MIT */
/*
 * test_limits.c - unit tests for core/limits.c: prefix keys (IPv4 /32 and
 * shorter, IPv6 /64, v4-mapped addresses), the per-prefix and total
 * connection counts (release gives the slot back, an entry goes when its
 * count reaches zero), the body budget, and both counts staying exact under
 * several threads at once; the penalty box (first box, doubling, the cap,
 * forgetting, no doubling without escalate, a fixed table whatever the
 * number of prefixes) and the sending rates (burst, steady rate, refund,
 * account keys), on a clock the test drives.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/limits.h"

static struct sockaddr_storage v4(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    a->sin_family = AF_INET;
    assert_int_equal(inet_pton(AF_INET, ip, &a->sin_addr), 1);
    return ss;
}

static struct sockaddr_storage v6(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    a->sin6_family = AF_INET6;
    assert_int_equal(inet_pton(AF_INET6, ip, &a->sin6_addr), 1);
    return ss;
}

static struct limits *mk(unsigned total, unsigned per, unsigned p4, unsigned p6, uint64_t body)
{
    struct limits_params p = {.max_connections = total, .per_address = per,
                              .ipv4_prefix = p4, .ipv6_prefix = p6, .body_memory = body};
    struct limits *l = limits_new(&p);
    assert_non_null(l);
    return l;
}

static void test_keys(void **state)
{
    struct limits *l = mk(100, 10, 32, 64, 0);
    struct limits_key a, b;
    char text[64];
    struct sockaddr_storage ss;

    ss = v4("192.0.2.7");
    limits_key_of(l, &ss, &a);
    assert_string_equal(limits_key_text(&a, text, sizeof(text)), "192.0.2.7/32");
    ss = v6("::ffff:192.0.2.7");
    limits_key_of(l, &ss, &b);
    assert_memory_equal(&a, &b, sizeof(a)); /* v4-mapped is IPv4 */
    ss = v6("2001:db8:1:2:aaaa::1");
    limits_key_of(l, &ss, &a);
    assert_string_equal(limits_key_text(&a, text, sizeof(text)), "2001:db8:1:2::/64");
    ss = v6("2001:db8:1:2:bbbb:cccc:dddd:eeee");
    limits_key_of(l, &ss, &b);
    assert_memory_equal(&a, &b, sizeof(a));
    ss = v6("2001:db8:1:3::1");
    limits_key_of(l, &ss, &b);
    assert_memory_not_equal(&a, &b, sizeof(a));
    limits_free(l);

    l = mk(100, 10, 24, 56, 0);
    ss = v4("198.51.100.200");
    limits_key_of(l, &ss, &a);
    assert_string_equal(limits_key_text(&a, text, sizeof(text)), "198.51.100.0/24");
    ss = v6("2001:db8:aa:bbff::1");
    limits_key_of(l, &ss, &a);
    assert_string_equal(limits_key_text(&a, text, sizeof(text)), "2001:db8:aa:bb00::/56");
    limits_free(l);
}

static void test_counts(void **state)
{
    struct limits *l = mk(5, 3, 32, 64, 0);
    struct limits_key a, b, c;
    struct sockaddr_storage ss;

    ss = v4("192.0.2.1");
    limits_key_of(l, &ss, &a);
    ss = v6("2001:db8::1");
    limits_key_of(l, &ss, &b);
    ss = v6("2001:db8::2"); /* same /64 as b */
    limits_key_of(l, &ss, &c);

    for (int i = 0; i < 3; i++)
        assert_int_equal(limits_conn_acquire(l, &a), LIMITS_OK);
    assert_int_equal(limits_conn_acquire(l, &a), LIMITS_PER_ADDRESS);
    assert_int_equal(limits_conn_acquire(l, &b), LIMITS_OK);
    assert_int_equal(limits_conn_acquire(l, &c), LIMITS_OK);
    assert_int_equal(limits_conn_total(l), 5);
    assert_int_equal(limits_conn_acquire(l, &c), LIMITS_TOTAL);
    limits_conn_release(l, &a);
    assert_int_equal(limits_conn_total(l), 4);
    assert_int_equal(limits_conn_acquire(l, &c), LIMITS_OK); /* b's /64: 3 now */
    assert_int_equal(limits_conn_acquire(l, &a), LIMITS_TOTAL);
    limits_conn_release(l, &b);
    limits_conn_release(l, &c);
    assert_int_equal(limits_conn_acquire(l, &c), LIMITS_OK);
    for (int i = 0; i < 2; i++)
        limits_conn_release(l, &a);
    for (int i = 0; i < 2; i++)
        limits_conn_release(l, &c);
    assert_int_equal(limits_conn_total(l), 0);
    limits_free(l);
}

static void test_body(void **state)
{
    struct limits *l = mk(10, 10, 32, 64, 1000);
    assert_int_equal(limits_body_free(l), 1000);
    assert_true(limits_body_charge(l, 600));
    assert_false(limits_body_charge(l, 401));
    assert_true(limits_body_charge(l, 400));
    assert_int_equal(limits_body_free(l), 0);
    assert_false(limits_body_charge(l, 1));
    limits_body_uncharge(l, 600);
    assert_int_equal(limits_body_free(l), 600);
    assert_false(limits_body_charge(l, UINT64_MAX));
    limits_body_uncharge(l, 400);
    limits_free(l);
}

/* Several threads take and give back slots and budget at once: the counts
 * never go over their bounds and end at zero. */
struct worker {
    struct limits *l;
    int id;
    int over;          /* times a bound was seen exceeded */
};

#define W_THREADS 4
#define W_ROUNDS 20000

static void *worker_run(void *arg)
{
    struct worker *w = arg;
    struct limits_key k[4];
    for (int i = 0; i < 4; i++) {
        char ip[32];
        snprintf(ip, sizeof(ip), "10.0.%d.%d", w->id, i);
        struct sockaddr_storage ss = v4(ip);
        limits_key_of(w->l, &ss, &k[i]);
    }
    for (int r = 0; r < W_ROUNDS; r++) {
        struct limits_key *key = &k[r % 4];
        if (limits_conn_acquire(w->l, key) == LIMITS_OK) {
            if (limits_conn_total(w->l) > 64)
                w->over++;
            limits_conn_release(w->l, key);
        }
        if (limits_body_charge(w->l, 100)) {
            if (limits_body_free(w->l) > 1000)
                w->over++;
            limits_body_uncharge(w->l, 100);
        }
    }
    return NULL;
}

static void test_threads(void **state)
{
    struct limits *l = mk(64, 2, 32, 64, 1000);
    pthread_t t[W_THREADS];
    struct worker w[W_THREADS];
    for (int i = 0; i < W_THREADS; i++) {
        w[i] = (struct worker){.l = l, .id = i};
        assert_int_equal(pthread_create(&t[i], NULL, worker_run, &w[i]), 0);
    }
    for (int i = 0; i < W_THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].over, 0);
    }
    assert_int_equal(limits_conn_total(l), 0);
    assert_int_equal(limits_body_free(l), 1000);
    limits_free(l);
}

#define S 1000000000ull   /* one second in ns */

static struct limits_key key4(struct limits *l, const char *ip)
{
    struct limits_key k;
    struct sockaddr_storage ss = v4(ip);
    limits_key_of(l, &ss, &k);
    return k;
}

static void test_box(void **state)
{
    struct limits *l = mk(100, 10, 32, 64, 0);
    struct limits_key a = key4(l, "192.0.2.1"), b = key4(l, "192.0.2.2");
    const struct limits_box_rule rule = {.time_ns = 10 * S, .max_ns = 60 * S, .escalate = true};
    uint64_t t = 1000 * S;
    unsigned level = 99;

    assert_int_equal(limits_box_left(l, &a, t), 0);
    assert_true(limits_box_add(l, &a, &rule, t, &level) == 10 * S);
    assert_int_equal(level, 0);
    assert_true(limits_box_left(l, &a, t) == 10 * S);
    assert_true(limits_box_left(l, &a, t + 4 * S) == 6 * S);
    assert_int_equal(limits_box_left(l, &b, t), 0);      /* another prefix */
    /* An offence while boxed (a session from before the box) changes nothing. */
    assert_true(limits_box_add(l, &a, &rule, t + 5 * S, NULL) == 0);
    assert_true(limits_box_left(l, &a, t + 5 * S) == 5 * S);
    assert_int_equal(limits_box_left(l, &a, t + 10 * S), 0); /* over */
    /* Back and offending again: 20, 40, then the cap (60). */
    t += 11 * S;
    assert_true(limits_box_add(l, &a, &rule, t, &level) == 20 * S);
    assert_int_equal(level, 1);
    t += 21 * S;
    assert_true(limits_box_add(l, &a, &rule, t, &level) == 40 * S);
    t += 41 * S;
    assert_true(limits_box_add(l, &a, &rule, t, &level) == 60 * S);
    t += 61 * S;
    assert_true(limits_box_add(l, &a, &rule, t, &level) == 60 * S);
    assert_int_equal(level, 4);
    /* Clean for max_ns after the box ends: forgotten, 10 s again. */
    t += 60 * S + 60 * S;
    assert_true(limits_box_add(l, &a, &rule, t, &level) == 10 * S);
    assert_int_equal(level, 0);
    /* Without escalate (loopback): always time_ns. */
    const struct limits_box_rule flat = {.time_ns = 10 * S, .max_ns = 60 * S};
    t += 11 * S;
    assert_true(limits_box_add(l, &b, &flat, t, NULL) == 10 * S);
    t += 11 * S;
    assert_true(limits_box_add(l, &b, &flat, t, &level) == 10 * S);
    assert_int_equal(level, 0);
    /* time_ns 0: the box is off. */
    const struct limits_box_rule off = {.time_ns = 0, .max_ns = 60 * S, .escalate = true};
    struct limits_key c = key4(l, "192.0.2.3");
    assert_int_equal(limits_box_add(l, &c, &off, t, NULL), 0);
    assert_int_equal(limits_box_left(l, &c, t), 0);
    limits_free(l);
}

/* An attacker with more prefixes than the table has slots: the table
 * stays its size (64 slots here), at most that many prefixes are boxed at
 * once, and the latest offenders are among them. */
static void test_box_bounded(void **state)
{
    struct limits_params p = {.max_connections = 100, .per_address = 10, .ipv4_prefix = 32,
                              .ipv6_prefix = 64, .box_slots = 64};
    struct limits *l = limits_new(&p);
    assert_non_null(l);
    const struct limits_box_rule rule = {.time_ns = 600 * S, .max_ns = 600 * S, .escalate = true};
    uint64_t t = 1000 * S;
    enum { N = 5000 };
    static struct limits_key k[N];
    for (int i = 0; i < N; i++) {
        char ip[32];
        snprintf(ip, sizeof(ip), "10.%d.%d.1", i / 256, i % 256);
        k[i] = key4(l, ip);
        limits_box_add(l, &k[i], &rule, t + (uint64_t)i, NULL);
    }
    int boxed = 0, recent = 0;
    for (int i = 0; i < N; i++) {
        if (limits_box_left(l, &k[i], t + N) > 0) {
            boxed++;
            recent += i >= N - 8;
        }
    }
    assert_true(boxed <= 64);
    assert_true(boxed >= 32);
    assert_true(recent >= 4); /* the newest entry of each set is never the victim */
    assert_true(limits_box_left(l, &k[N - 1], t + N) > 0);
    limits_free(l);
}

static void test_rate(void **state)
{
    struct limits *l = mk(100, 10, 32, 64, 0);
    struct limits_key a, b, a2;
    limits_key_account(l, "app@example.com", 15, &a);
    limits_key_account(l, "other@example.com", 17, &b);
    limits_key_account(l, "app@example.com", 15, &a2);
    assert_memory_equal(&a, &a2, sizeof(a));
    assert_memory_not_equal(&a, &b, sizeof(a));
    assert_int_equal(a.family, LIMITS_KEY_ACCOUNT);

    uint64_t t = 5000 * S;
    /* 6 an hour: a burst of 6, then one every 10 minutes. */
    for (int i = 0; i < 6; i++)
        assert_true(limits_rate_take(l, &a, 6, t));
    assert_false(limits_rate_take(l, &a, 6, t));
    assert_true(limits_rate_take(l, &b, 6, t));          /* its own budget */
    assert_false(limits_rate_take(l, &a, 6, t + 599 * S));
    assert_true(limits_rate_take(l, &a, 6, t + 600 * S));
    assert_false(limits_rate_take(l, &a, 6, t + 601 * S));
    /* A refund gives one back. */
    limits_rate_refund(l, &a, 6, t + 601 * S);
    assert_true(limits_rate_take(l, &a, 6, t + 601 * S));
    assert_false(limits_rate_take(l, &a, 6, t + 601 * S));
    /* After an hour the whole burst is back. */
    t += 601 * S + 3600 * S;
    for (int i = 0; i < 6; i++)
        assert_true(limits_rate_take(l, &a, 6, t));
    assert_false(limits_rate_take(l, &a, 6, t));
    /* Refunds past a whole budget do not add to it. */
    struct limits_key c;
    limits_key_account(l, "c@example.com", 13, &c);
    limits_rate_refund(l, &c, 2, t);
    assert_true(limits_rate_take(l, &c, 2, t));
    assert_true(limits_rate_take(l, &c, 2, t));
    assert_false(limits_rate_take(l, &c, 2, t));
    /* 0: no limit. */
    for (int i = 0; i < 100; i++)
        assert_true(limits_rate_take(l, &c, 0, t));
    limits_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_counts),
        cmocka_unit_test(test_body),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_box),
        cmocka_unit_test(test_box_bounded),
        cmocka_unit_test(test_rate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
