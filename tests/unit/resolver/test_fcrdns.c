/* SPDX-License-Identifier: MIT */
/*
 * test_fcrdns.c - unit tests for resolver/fcrdns.c on the fake resolver of
 * fake_res.h: pass (IPv4, IPv6, the second name), fail, permerror (no PTR),
 * temperror (PTR failure; a forward failure with no other confirmation),
 * the name limit, and cancellation at each step.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#define res_lookup fake_res_lookup
#define res_cancel fake_res_cancel
#include "resolver/fcrdns.c"
#undef res_lookup
#undef res_cancel

#include <stdlib.h>

#include "fake_res.h"

static struct fcrdns_req req;
static int ncb;

static void on_done(struct fcrdns_req *r, enum fcrdns_result res)
{
    ncb++;
    assert_int_equal(res, r->result);
}

static enum fcrdns_result check(const char *ip)
{
    unsigned char a[16];
    int fam = strchr(ip, ':') ? AF_INET6 : AF_INET;
    assert_int_equal(inet_pton(fam, ip, a), 1);
    fcrdns_req_init(&req, NULL);
    ncb = 0;
    nlookups = 0;
    assert_int_equal(fcrdns_check(NULL, &req, fam, a, on_done), 0);
    assert_int_equal(ncb, 0);
    int turns = 0;
    while (turn())
        assert_true(++turns < 100);
    assert_int_equal(ncb, 1);
    assert_null(req.ptr);
    return req.result;
}

static int teardown(void **state)
{
    made_free();
    nqueue = 0;
    return 0;
}

static void test_results(void **state)
{
    zclear();
    zadd("5.0.0.127.in-addr.arpa", RES_PTR, "mail.example.test");
    zadd("mail.example.test", RES_A, "127.0.0.5");
    assert_int_equal(check("127.0.0.5"), FCRDNS_PASS);
    assert_string_equal(req.name, "mail.example.test");
    /* The second name confirms. */
    zadd("6.0.0.127.in-addr.arpa", RES_PTR, "wrong.example.test");
    zadd("6.0.0.127.in-addr.arpa", RES_PTR, "right.example.test");
    zadd("wrong.example.test", RES_A, "127.0.0.99");
    zadd("right.example.test", RES_A, "127.0.0.6");
    assert_int_equal(check("127.0.0.6"), FCRDNS_PASS);
    assert_string_equal(req.name, "right.example.test");
    /* A name that does not come back: fail, the PTR name kept. */
    zadd("7.0.0.127.in-addr.arpa", RES_PTR, "wrong.example.test");
    assert_int_equal(check("127.0.0.7"), FCRDNS_FAIL);
    assert_string_equal(req.name, "wrong.example.test");
    /* No PTR: permerror. */
    assert_int_equal(check("127.0.0.8"), FCRDNS_PERMERROR);
    assert_string_equal(req.name, "");
    /* PTR SERVFAIL: temperror; a forward timeout and no other name too. */
    zadd("9.0.0.127.in-addr.arpa", RES_PTR, "!servfail");
    assert_int_equal(check("127.0.0.9"), FCRDNS_TEMPERROR);
    zadd("10.0.0.127.in-addr.arpa", RES_PTR, "slow.example.test");
    zadd("slow.example.test", RES_A, "!timeout");
    assert_int_equal(check("127.0.0.10"), FCRDNS_TEMPERROR);
    /* IPv6 uses AAAA. */
    zadd("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", RES_PTR,
         "six.example.test");
    zadd("six.example.test", RES_A, "127.0.0.1");
    zadd("six.example.test", RES_AAAA, "2001:db8::1");
    assert_int_equal(check("2001:db8::1"), FCRDNS_PASS);
}

static void test_name_limit(void **state)
{
    zclear();
    for (int i = 0; i < 12; i++) {
        char name[64];
        snprintf(name, sizeof(name), "n%d.example.test", i);
        zadd("11.0.0.127.in-addr.arpa", RES_PTR, name);
        zadd(name, RES_A, i == 11 ? "127.0.0.11" : "127.0.0.200");
    }
    assert_int_equal(check("127.0.0.11"), FCRDNS_FAIL);
    assert_int_equal(nlookups, 1 + FCRDNS_MAX_NAMES);
}

static void test_cancel(void **state)
{
    zclear();
    zadd("5.0.0.127.in-addr.arpa", RES_PTR, "a.example.test");
    zadd("5.0.0.127.in-addr.arpa", RES_PTR, "b.example.test");
    unsigned char a[4] = {127, 0, 0, 5};
    for (int stop = 0; stop < 3; stop++) {
        fcrdns_req_init(&req, NULL);
        ncb = 0;
        assert_int_equal(fcrdns_check(NULL, &req, AF_INET, a, on_done), 0);
        for (int i = 0; i < stop; i++)
            turn();
        assert_true(fcrdns_req_busy(&req));
        fcrdns_cancel(&req);
        assert_false(fcrdns_req_busy(&req));
        assert_null(req.ptr);
        assert_int_equal(nqueue, 0);
        assert_int_equal(ncb, 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_results, teardown),
        cmocka_unit_test_teardown(test_name_limit, teardown),
        cmocka_unit_test_teardown(test_cancel, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
