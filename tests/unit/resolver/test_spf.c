/* SPDX-License-Identifier: MIT */
/*
 * test_spf.c - unit tests for resolver/spf.c against a fake asynchronous
 * resolver: res_lookup and res_cancel are replaced (before spf.c is
 * included) by functions that queue the request; the test answers the
 * queue from a small in-memory zone, one answer per "loop turn", so every
 * callback runs outside the submit call as with the real resolver.
 *
 * Cases: the examples of RFC 7208 appendix A (A.1 mechanisms on the
 * example.com / example.org zone, A.3 DNSBL-style exists with macros, A.4
 * multiple requirements with negated includes), include and redirect
 * results, the 10-lookup limit (at 10 and at 11), include and redirect
 * loops, void lookups, too many MX hosts, PTR names past the tenth, no
 * implicit MX, exp= explanations with macros, %{p}, none / permerror /
 * temperror cases, IPv6, and cancellation in the middle of an evaluation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#define res_lookup fake_res_lookup
#define res_cancel fake_res_cancel
#include "resolver/spf.c"
#undef res_lookup
#undef res_cancel

#include "fake_res.h"

/* RFC 7208 appendix A's zone. */
static void zone_rfc(void)
{
    zclear();
    zadd("example.com", RES_A, "192.0.2.10");
    zadd("example.com", RES_A, "192.0.2.11");
    zadd("amy.example.com", RES_A, "192.0.2.65");
    zadd("bob.example.com", RES_A, "192.0.2.66");
    zadd("mail-a.example.com", RES_A, "192.0.2.129");
    zadd("mail-b.example.com", RES_A, "192.0.2.130");
    zadd("mail-c.example.org", RES_A, "192.0.2.140");
    zadd("example.com", RES_MX, "10 mail-a.example.com");
    zadd("example.com", RES_MX, "20 mail-b.example.com");
    zadd("example.org", RES_MX, "10 mail-c.example.org");
    zadd("10.2.0.192.in-addr.arpa", RES_PTR, "example.com");
    zadd("11.2.0.192.in-addr.arpa", RES_PTR, "example.com");
    zadd("65.2.0.192.in-addr.arpa", RES_PTR, "amy.example.com");
    zadd("66.2.0.192.in-addr.arpa", RES_PTR, "bob.example.com");
    zadd("129.2.0.192.in-addr.arpa", RES_PTR, "mail-a.example.com");
    zadd("130.2.0.192.in-addr.arpa", RES_PTR, "mail-b.example.com");
    zadd("140.2.0.192.in-addr.arpa", RES_PTR, "mail-c.example.org");
    zadd("10.0.0.10.in-addr.arpa", RES_PTR, "bob.example.com");
    zadd("example.com", RES_TXT, "v=spf1 +all");
}

/* ---- running check_host() ---- */

static int ncallbacks;
static enum spf_result cb_result;

static void on_done(struct spf_req *req, enum spf_result r)
{
    ncallbacks++;
    cb_result = r;
    assert_false(spf_req_busy(req));
}

static struct spf_req req;

/* check_host(ip, domain, sender) to the end; returns the result. */
static enum spf_result check(const char *ip, const char *domain, const char *sender)
{
    unsigned char a[16];
    int fam = strchr(ip, ':') ? AF_INET6 : AF_INET;
    assert_int_equal(inet_pton(fam, ip, a), 1);
    char snd[300];
    if (sender == NULL) {
        snprintf(snd, sizeof(snd), "strong-bad@%s", domain);
        sender = snd;
    }
    struct spf_params p = {.family = fam, .ip = a, .domain = domain, .sender = sender,
                           .helo = "mx.example.org", .receiver = "mx.receiver.test"};
    spf_req_init(&req, NULL);
    ncallbacks = 0;
    nlookups = 0;
    int rc = spf_check(NULL, &req, &p, on_done);
    assert_true(rc == 0 || rc == 1);
    if (rc == 1) {
        assert_int_equal(nqueue, 0);
        return req.result;
    }
    assert_int_equal(ncallbacks, 0); /* never inside spf_check */
    int turns = 0;
    while (turn())
        assert_true(++turns < 1000);
    assert_int_equal(ncallbacks, 1);
    assert_int_equal(cb_result, req.result);
    assert_null(req.ev);
    return req.result;
}

#define R(x) SPF_R_##x

static int teardown(void **state)
{
    made_free();
    nqueue = 0;
    return 0;
}

/* ---- RFC 7208 A.1 ---- */

static void expect_ips(const char *record, const char *const *pass_ips, const char *const *fail_ips)
{
    zset_txt("example.com", record);
    for (size_t i = 0; pass_ips[i] != NULL; i++) {
        enum spf_result r = check(pass_ips[i], "example.com", NULL);
        if (r != R(PASS))
            fail_msg("%s from %s: %s (%s)", record, pass_ips[i], spf_result_name(r), req.why);
    }
    for (size_t i = 0; fail_ips[i] != NULL; i++) {
        enum spf_result r = check(fail_ips[i], "example.com", NULL);
        if (r != R(FAIL))
            fail_msg("%s from %s: %s (%s), expected fail", record, fail_ips[i],
                     spf_result_name(r), req.why);
    }
}

static void test_rfc_a1(void **state)
{
    zone_rfc();
    const char *all[] = {"192.0.2.10", "192.0.2.11", "192.0.2.65", "192.0.2.66", "192.0.2.129",
                         "192.0.2.130", "192.0.2.140", "10.0.0.10", NULL};
    const char *none[] = {NULL};
    expect_ips("v=spf1 +all", all, none);
    expect_ips("v=spf1 a -all", (const char *[]){"192.0.2.10", "192.0.2.11", NULL},
               (const char *[]){"192.0.2.65", "192.0.2.129", "10.0.0.10", NULL});
    expect_ips("v=spf1 a:example.org -all", none,
               (const char *[]){"192.0.2.10", "192.0.2.140", NULL});
    expect_ips("v=spf1 mx -all", (const char *[]){"192.0.2.129", "192.0.2.130", NULL},
               (const char *[]){"192.0.2.10", "192.0.2.140", NULL});
    expect_ips("v=spf1 mx:example.org -all", (const char *[]){"192.0.2.140", NULL},
               (const char *[]){"192.0.2.129", NULL});
    expect_ips("v=spf1 mx mx:example.org -all",
               (const char *[]){"192.0.2.129", "192.0.2.130", "192.0.2.140", NULL},
               (const char *[]){"192.0.2.10", NULL});
    expect_ips("v=spf1 mx/30 mx:example.org/30 -all",
               (const char *[]){"192.0.2.128", "192.0.2.131", "192.0.2.141", NULL},
               (const char *[]){"192.0.2.132", "192.0.2.10", NULL});
    expect_ips("v=spf1 ptr -all",
               (const char *[]){"192.0.2.10", "192.0.2.11", "192.0.2.65", "192.0.2.66",
                                "192.0.2.129", "192.0.2.130", NULL},
               (const char *[]){"192.0.2.140", "10.0.0.10", NULL});
    expect_ips("v=spf1 ip4:192.0.2.128/28 -all",
               (const char *[]){"192.0.2.128", "192.0.2.140", "192.0.2.143", NULL},
               (const char *[]){"192.0.2.127", "192.0.2.144", "192.0.2.10", NULL});
}

/* A.2-style: a second domain includes the first. */
static void test_include(void **state)
{
    zone_rfc();
    zset_txt("example.com", "v=spf1 mx -all");
    zadd("example.net", RES_TXT, "v=spf1 include:example.com ip4:192.0.2.200 -all");
    assert_int_equal(check("192.0.2.129", "example.net", NULL), R(PASS));
    assert_string_equal(req.why, "include:example.com matched");
    /* The included record's "-all" does not end the includer's evaluation. */
    assert_int_equal(check("192.0.2.200", "example.net", NULL), R(PASS));
    assert_int_equal(check("192.0.2.201", "example.net", NULL), R(FAIL));
    /* ~include: with a passing include gives the include's qualifier. */
    zset_txt("example.net", "v=spf1 ~include:example.com ?all");
    assert_int_equal(check("192.0.2.130", "example.net", NULL), R(SOFTFAIL));
    assert_int_equal(check("192.0.2.10", "example.net", NULL), R(NEUTRAL));
    /* An include without a record is a permerror (5.2). */
    zset_txt("example.net", "v=spf1 include:nothing.example.com -all");
    assert_int_equal(check("192.0.2.10", "example.net", NULL), R(PERMERROR));
    /* A temporary failure inside an include ends everything. */
    zadd("broken.example.com", RES_TXT, "!servfail");
    zset_txt("example.net", "v=spf1 include:broken.example.com +all");
    assert_int_equal(check("192.0.2.10", "example.net", NULL), R(TEMPERROR));
    /* A permerror inside an include too. */
    zadd("syntax.example.com", RES_TXT, "v=spf1 ip4:300.1.1.1 +all");
    zset_txt("example.net", "v=spf1 include:syntax.example.com +all");
    assert_int_equal(check("192.0.2.10", "example.net", NULL), R(PERMERROR));
}

/* A.3: DNSBL-style exists with macros. */
static void test_rfc_a3_exists(void **state)
{
    zone_rfc();
    zset_txt("example.com", "v=spf1 mx -all exists:%{ir}.%{l1r+-}._spf.%{d}");
    /* mx decides first. */
    assert_int_equal(check("192.0.2.129", "example.com", NULL), R(PASS));
    assert_int_equal(check("192.0.2.10", "example.com", NULL), R(FAIL));
    zset_txt("example.com", "v=spf1 mx exists:%{ir}.%{l1r+-}._spf.%{d} -all");
    zadd("10.2.0.192.strong._spf.example.com", RES_A, "127.0.0.2");
    /* sender strong-bad: %{l1r+-} is "strong" (RFC 7208 7.4). */
    assert_int_equal(check("192.0.2.10", "example.com", NULL), R(PASS));
    assert_int_equal(check("192.0.2.11", "example.com", NULL), R(FAIL));
    /* A local part that cannot be a DNS label: no match, no error. */
    zset_txt("example.com", "v=spf1 exists:%{l}.x.%{d} -all");
    assert_int_equal(check("192.0.2.10", "example.com", "we!rd@example.com"), R(FAIL));
}

/* A.4: multiple requirements with negated includes. */
static void test_rfc_a4(void **state)
{
    zone_rfc();
    zset_txt("example.com", "v=spf1 -include:ip4._spf.%{d} -include:ptr._spf.%{d} +all");
    zadd("ip4._spf.example.com", RES_TXT, "v=spf1 -ip4:192.0.2.0/24 +all");
    zadd("ptr._spf.example.com", RES_TXT, "v=spf1 -ptr:example.com +all");
    /* In 192.0.2.0/24 with a validated PTR in example.com: both includes
     * fail, so neither -include matches, and +all passes. */
    assert_int_equal(check("192.0.2.10", "example.com", NULL), R(PASS));
    /* Outside the /24: the first include passes, so -include fails it. */
    assert_int_equal(check("10.0.0.10", "example.com", NULL), R(FAIL));
    /* Inside the /24, PTR not in example.com (mail-c.example.org): the
     * second include passes: fail. */
    assert_int_equal(check("192.0.2.140", "example.com", NULL), R(FAIL));
}

static void test_redirect(void **state)
{
    zone_rfc();
    zset_txt("example.com", "v=spf1 mx -all");
    zadd("example.net", RES_TXT, "v=spf1 ip4:192.0.2.200 redirect=example.com");
    assert_int_equal(check("192.0.2.200", "example.net", NULL), R(PASS));
    assert_int_equal(check("192.0.2.129", "example.net", NULL), R(PASS));
    assert_int_equal(check("192.0.2.10", "example.net", NULL), R(FAIL));
    /* redirect= is ignored when a term matches first, even all. */
    zset_txt("example.net", "v=spf1 ?all redirect=example.com");
    assert_int_equal(check("192.0.2.129", "example.net", NULL), R(NEUTRAL));
    /* A redirect to a domain without a record is a permerror (6.1). */
    zset_txt("example.net", "v=spf1 redirect=nothing.example.com");
    assert_int_equal(check("192.0.2.10", "example.net", NULL), R(PERMERROR));
    assert_non_null(strstr(req.why, "redirect"));
}

static void test_loops_and_limit(void **state)
{
    zclear();
    /* Ten DNS-querying terms are allowed; the eleventh is a permerror. */
    char rec[600] = "v=spf1";
    for (int i = 0; i < 10; i++) {
        char name[64];
        snprintf(name, sizeof(name), "i%d.example.test", i);
        zadd(name, RES_TXT, "v=spf1 -all");
        snprintf(rec + strlen(rec), sizeof(rec) - strlen(rec), " include:%s", name);
    }
    zadd("ten.example.test", RES_TXT, rec);
    snprintf(rec + strlen(rec), sizeof(rec) - strlen(rec), " +all");
    zset_txt("ten.example.test", rec);
    assert_int_equal(check("192.0.2.1", "ten.example.test", NULL), R(PASS));
    assert_int_equal(req.lookups, 10);
    rec[strlen(rec) - 5] = '\0';
    strcat(rec, " a +all");
    zadd("eleven.example.test", RES_TXT, rec);
    zadd("eleven.example.test", RES_A, "192.0.2.9");
    assert_int_equal(check("192.0.2.1", "eleven.example.test", NULL), R(PERMERROR));
    assert_non_null(strstr(req.why, "more than 10"));
    /* An include loop ends on the limit. */
    zadd("loop1.example.test", RES_TXT, "v=spf1 include:loop2.example.test -all");
    zadd("loop2.example.test", RES_TXT, "v=spf1 include:loop1.example.test -all");
    assert_int_equal(check("192.0.2.1", "loop1.example.test", NULL), R(PERMERROR));
    assert_true(req.queries <= SPF_MAX_QUERIES);
    /* So does a redirect loop. */
    zadd("r1.example.test", RES_TXT, "v=spf1 redirect=r2.example.test");
    zadd("r2.example.test", RES_TXT, "v=spf1 redirect=r1.example.test");
    assert_int_equal(check("192.0.2.1", "r1.example.test", NULL), R(PERMERROR));
    assert_int_equal(req.lookups, 11);
}

static void test_void_lookups(void **state)
{
    zclear();
    zadd("v2.example.test", RES_TXT, "v=spf1 a:no1.example.test a:no2.example.test -all");
    assert_int_equal(check("192.0.2.1", "v2.example.test", NULL), R(FAIL));
    assert_int_equal(req.void_lookups, 2);
    zadd("v3.example.test", RES_TXT,
         "v=spf1 a:no1.example.test mx:no2.example.test exists:no3.example.test +all");
    assert_int_equal(check("192.0.2.1", "v3.example.test", NULL), R(PERMERROR));
    assert_non_null(strstr(req.why, "void"));
    /* NODATA counts too (a name with only a TXT record). */
    zadd("txtonly.example.test", RES_TXT, "hello");
    zadd("v4.example.test", RES_TXT,
         "v=spf1 a:txtonly.example.test a:txtonly.example.test a:txtonly.example.test +all");
    assert_int_equal(check("192.0.2.1", "v4.example.test", NULL), R(PERMERROR));
}

static void test_mx_limits(void **state)
{
    zclear();
    for (int i = 0; i < 11; i++) {
        char host[64], mx[80];
        snprintf(host, sizeof(host), "mx%d.example.test", i);
        snprintf(mx, sizeof(mx), "%d %s", i, host);
        zadd("many.example.test", RES_MX, mx);
        zadd(host, RES_A, "192.0.2.50");
    }
    zadd("many.example.test", RES_TXT, "v=spf1 mx -all");
    assert_int_equal(check("192.0.2.50", "many.example.test", NULL), R(PERMERROR));
    /* No MX RRset: the implicit MX of RFC 5321 is not used (5.4). */
    zadd("nomx.example.test", RES_A, "192.0.2.60");
    zadd("nomx.example.test", RES_TXT, "v=spf1 mx -all");
    assert_int_equal(check("192.0.2.60", "nomx.example.test", NULL), R(FAIL));
    /* A temporary failure on an MX host's address: temperror. */
    zadd("tmx.example.test", RES_MX, "10 down.example.test");
    zadd("down.example.test", RES_A, "!timeout");
    zadd("tmx.example.test", RES_TXT, "v=spf1 mx -all");
    assert_int_equal(check("192.0.2.60", "tmx.example.test", NULL), R(TEMPERROR));
}

static void test_ptr_names(void **state)
{
    zclear();
    /* Eleven PTR names; only the eleventh resolves back: ignored (4.6.4). */
    for (int i = 0; i < 11; i++) {
        char name[64];
        snprintf(name, sizeof(name), "h%d.example.test", i);
        zadd("7.2.0.192.in-addr.arpa", RES_PTR, name);
        zadd(name, RES_A, i == 10 ? "192.0.2.7" : "192.0.2.99");
    }
    zadd("example.test", RES_TXT, "v=spf1 ptr -all");
    assert_int_equal(check("192.0.2.7", "example.test", NULL), R(FAIL));
    /* A PTR failure makes ptr not match, not a temperror (5.5). */
    zadd("8.2.0.192.in-addr.arpa", RES_PTR, "!servfail");
    zset_txt("example.test", "v=spf1 ptr ?all");
    assert_int_equal(check("192.0.2.8", "example.test", NULL), R(NEUTRAL));
}

static void test_exp(void **state)
{
    zone_rfc();
    zset_txt("example.com", "v=spf1 mx -all exp=explain._spf.%{d}");
    zadd("explain._spf.example.com", RES_TXT,
         "%{i} is not one of %{d}'s designated mail servers.");
    assert_int_equal(check("192.0.2.10", "example.com", NULL), R(FAIL));
    assert_string_equal(req.explanation,
                        "192.0.2.10 is not one of example.com's designated mail servers.");
    /* Not on a pass. */
    assert_int_equal(check("192.0.2.129", "example.com", NULL), R(PASS));
    assert_string_equal(req.explanation, "");
    /* Two TXT records: no explanation, still a fail. */
    zadd("explain._spf.example.com", RES_TXT, "other");
    assert_int_equal(check("192.0.2.10", "example.com", NULL), R(FAIL));
    assert_string_equal(req.explanation, "");
}

static void test_p_macro(void **state)
{
    zone_rfc();
    zset_txt("example.com", "v=spf1 exists:%{p}.allow.example.com -all");
    zadd("amy.example.com.allow.example.com", RES_A, "127.0.0.2");
    assert_int_equal(check("192.0.2.65", "example.com", NULL), R(PASS));
    /* bob resolves to .66, not 10.0.0.10: p is "unknown". */
    zadd("unknown.allow.example.com", RES_A, "127.0.0.2");
    assert_int_equal(check("10.0.0.10", "example.com", NULL), R(PASS));
    assert_int_equal(check("192.0.2.66", "example.com", NULL), R(FAIL));
}

static void test_none_and_errors(void **state)
{
    zclear();
    /* No TXT at all, and TXT without v=spf1. */
    assert_int_equal(check("192.0.2.1", "nothing.example.test", NULL), R(NONE));
    zadd("other.example.test", RES_TXT, "google-site-verification=x");
    assert_int_equal(check("192.0.2.1", "other.example.test", NULL), R(NONE));
    /* "v=spf10" is not a record. */
    zadd("ten.example.test", RES_TXT, "v=spf10 -all");
    assert_int_equal(check("192.0.2.1", "ten.example.test", NULL), R(NONE));
    /* Not checkable domains: none at once, no lookup. */
    assert_int_equal(check("192.0.2.1", "localhost", NULL), R(NONE));
    assert_int_equal(nlookups, 0);
    assert_int_equal(check("192.0.2.1", "[192.0.2.1]", NULL), R(NONE));
    /* Two SPF records: permerror (4.5). */
    zadd("two.example.test", RES_TXT, "v=spf1 -all");
    zadd("two.example.test", RES_TXT, "v=spf1 +all");
    assert_int_equal(check("192.0.2.1", "two.example.test", NULL), R(PERMERROR));
    /* A syntax error anywhere: permerror before any mechanism runs. */
    zadd("syn.example.test", RES_TXT, "v=spf1 +all foo:bar");
    assert_int_equal(check("192.0.2.1", "syn.example.test", NULL), R(PERMERROR));
    /* SERVFAIL and timeouts on the record: temperror. */
    zadd("sf.example.test", RES_TXT, "!servfail");
    assert_int_equal(check("192.0.2.1", "sf.example.test", NULL), R(TEMPERROR));
    zadd("to.example.test", RES_TXT, "!timeout");
    assert_int_equal(check("192.0.2.1", "to.example.test", NULL), R(TEMPERROR));
    /* ... and on an "a" lookup. */
    zadd("ta.example.test", RES_TXT, "v=spf1 a:sf.example.test +all");
    assert_int_equal(check("192.0.2.1", "ta.example.test", NULL), R(TEMPERROR));
    /* No match and no all: neutral (4.7). */
    zadd("neu.example.test", RES_TXT, "v=spf1 ip4:10.0.0.0/8");
    assert_int_equal(check("192.0.2.1", "neu.example.test", NULL), R(NEUTRAL));
}

static void test_ipv6(void **state)
{
    zclear();
    zadd("six.example.test", RES_TXT, "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 a//64 -all");
    zadd("six.example.test", RES_AAAA, "2001:db9:1:2::1");
    assert_int_equal(check("2001:db8::cb01", "six.example.test", NULL), R(PASS));
    assert_int_equal(check("2001:db9:1:2:ffff::1", "six.example.test", NULL), R(PASS));
    assert_int_equal(check("2001:db9:1:3::1", "six.example.test", NULL), R(FAIL));
    /* ip4 never matches an IPv6 client and the other way round. */
    assert_int_equal(check("192.0.2.1", "six.example.test", NULL), R(PASS));
    zset_txt("six.example.test", "v=spf1 ip6:::/0 -all");
    assert_int_equal(check("192.0.2.1", "six.example.test", NULL), R(FAIL));
}

static void test_cancel(void **state)
{
    zone_rfc();
    zset_txt("example.com", "v=spf1 include:example.org mx -all");
    zadd("example.org", RES_TXT, "v=spf1 mx ~all");
    unsigned char a[4] = {192, 0, 2, 10};
    struct spf_params p = {.family = AF_INET, .ip = a, .domain = "example.com",
                           .sender = "x@example.com", .helo = "h"};
    /* Cancel after each number of turns: no callback, nothing held. */
    for (int stop = 0; stop < 6; stop++) {
        spf_req_init(&req, NULL);
        ncallbacks = 0;
        assert_int_equal(spf_check(NULL, &req, &p, on_done), 0);
        for (int i = 0; i < stop && spf_req_busy(&req); i++)
            turn();
        if (spf_req_busy(&req)) {
            spf_cancel(&req);
            assert_false(spf_req_busy(&req));
            assert_null(req.ev);
            assert_int_equal(nqueue, 0);
            assert_int_equal(ncallbacks, 0);
        }
        spf_cancel(&req); /* idle: no-op */
    }
    /* A req can be reused from its own callback's aftermath. */
    assert_int_equal(check("192.0.2.129", "example.com", NULL), R(PASS));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_rfc_a1, teardown),
        cmocka_unit_test_teardown(test_include, teardown),
        cmocka_unit_test_teardown(test_rfc_a3_exists, teardown),
        cmocka_unit_test_teardown(test_rfc_a4, teardown),
        cmocka_unit_test_teardown(test_redirect, teardown),
        cmocka_unit_test_teardown(test_loops_and_limit, teardown),
        cmocka_unit_test_teardown(test_void_lookups, teardown),
        cmocka_unit_test_teardown(test_mx_limits, teardown),
        cmocka_unit_test_teardown(test_ptr_names, teardown),
        cmocka_unit_test_teardown(test_exp, teardown),
        cmocka_unit_test_teardown(test_p_macro, teardown),
        cmocka_unit_test_teardown(test_none_and_errors, teardown),
        cmocka_unit_test_teardown(test_ipv6, teardown),
        cmocka_unit_test_teardown(test_cancel, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
