/* SPDX-License-Identifier: MIT */
/*
 * test_limits.c - unit tests for core/limits.c: prefix keys (IPv4 /32 and
 * shorter, IPv6 /64, v4-mapped addresses), the per-prefix and total
 * connection counts (release gives the slot back, an entry goes when its
 * count reaches zero), the body budget, and both counts staying exact under
 * several threads at once.
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_counts),
        cmocka_unit_test(test_body),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
