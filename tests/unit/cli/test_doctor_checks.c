/* SPDX-License-Identifier: MIT */
/*
 * test_doctor_checks.c - unit tests of `ortoo doctor`'s judging
 * (cli/doctor_checks.c, included to reach its statics): the tag-list,
 * DMARC, mailto: and DKIM key record parsers, and checks fed with answers
 * made up here (the resolver's struct res_answer is plain data; refs 0
 * marks them static).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "cli/doctor_checks.c"

/* ---- parsers ---- */

static void test_taglist(void **state)
{
    struct dr_tag t[DR_TAGS_MAX];
    const char *err;
    const char *s = " v=DKIM1 ;k = rsa;\tp=MIIB\r\n ABCD ; ";
    int n = dr_taglist_parse(s, strlen(s), t, DR_TAGS_MAX, &err);
    assert_int_equal(n, 3);
    const struct dr_tag *p = dr_tag_find(t, (size_t)n, "p");
    assert_non_null(p);
    assert_int_equal(p->value_len, strlen("MIIB\r\n ABCD"));
    assert_memory_equal(p->value, "MIIB\r\n ABCD", p->value_len);
    assert_null(dr_tag_find(t, (size_t)n, "P")); /* tag names are case-sensitive */
    assert_int_equal(dr_taglist_parse("", 0, t, DR_TAGS_MAX, &err), 0);

    static const char *const bad[] = {"v=1; v=2", "=x", "1a=b", "v", "v=a\001b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(dr_taglist_parse(bad[i], strlen(bad[i]), t, DR_TAGS_MAX, &err),
                         -EINVAL);
        assert_non_null(err);
    }
    assert_int_equal(dr_taglist_parse("a=1;b=2;c=3", 11, t, 2, &err), -E2BIG);
}

static void test_dmarc_lint(void **state)
{
    char rua[128];
    const char *err;
    const char *s = "v=DMARC1; p=reject; sp=none; pct=20; adkim=s; rua=mailto:a@x.test,"
                    "mailto:b%40c@y.test!10m";
    assert_int_equal(dr_dmarc_lint(s, strlen(s), rua, sizeof(rua), &err), 0);
    assert_string_equal(rua, "mailto:a@x.test,mailto:b%40c@y.test!10m");
    s = "v=DMARC1;p=none";
    assert_int_equal(dr_dmarc_lint(s, strlen(s), rua, sizeof(rua), &err), 0);
    assert_string_equal(rua, "");

    s = "v=spf1 -all"; /* not DMARC at all */
    assert_int_equal(dr_dmarc_lint(s, strlen(s), rua, sizeof(rua), &err), -ENOENT);
    s = "p=none; v=DMARC1"; /* v= must come first */
    assert_int_equal(dr_dmarc_lint(s, strlen(s), rua, sizeof(rua), &err), -ENOENT);

    /* what receivers forgive (a missing or bad p= with rua= reads as
     * p=none, a bad pct= as 100) is still an error here */
    static const char *const bad[] = {
        "v=DMARC1", "v=DMARC1; p=maybe; rua=mailto:a@x.test", "v=DMARC1; p=none; pct=101",
        "v=DMARC1; p=none; pct=x", "v=DMARC1; p=none; adkim=x", "v=DMARC1; p=none; rua=http://x",
        "v=DMARC1; p=none; sp=", "v=DMARC1; p=none; rua=mailto:nobody", "v=DMARC1; p=none; p=none",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(dr_dmarc_lint(bad[i], strlen(bad[i]), rua, sizeof(rua), &err), -EINVAL);
        assert_non_null(err);
    }
    s = "v=DMARC1; p=none; rua=mailto:averyveryverylongname@example.test";
    assert_int_equal(dr_dmarc_lint(s, strlen(s), rua, 16, &err), -EINVAL);
}

static void test_mailto(void **state)
{
    char box[64];
    assert_int_equal(dr_mailto(" mailto:dmarc@example.test ", 27, box, sizeof(box)), 1);
    assert_string_equal(box, "dmarc@example.test");
    const char *u = "MAILTO:a%2Cb@example.test!50k";
    assert_int_equal(dr_mailto(u, strlen(u), box, sizeof(box)), 1);
    assert_string_equal(box, "a,b@example.test");
    u = "https://reports.example.test/tlsrpt";
    assert_int_equal(dr_mailto(u, strlen(u), box, sizeof(box)), 0);
    static const char *const bad[] = {"mailto:", "mailto:@x", "mailto:a@", "mailto:a b@x",
                                      "mailto:a@x?subject=hi"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(dr_mailto(bad[i], strlen(bad[i]), box, sizeof(box)), -EINVAL);
    u = "mailto:averyveryverylongname@example.test";
    assert_int_equal(dr_mailto(u, strlen(u), box, 10), -EINVAL);
}

static void test_dkim_p(void **state)
{
    char p[64], k[16];
    const char *s = "v=DKIM1; k=ed25519; p=abc def\r\n ghi=";
    assert_int_equal(dr_dkim_p(s, strlen(s), p, sizeof(p), k, sizeof(k)), 10);
    assert_string_equal(p, "abcdefghi=");
    assert_string_equal(k, "ed25519");
    s = "p=xyz"; /* no v=, no k=: an RSA key */
    assert_int_equal(dr_dkim_p(s, strlen(s), p, sizeof(p), k, sizeof(k)), 3);
    assert_string_equal(k, "rsa");
    s = "v=DKIM1; p="; /* revoked */
    assert_int_equal(dr_dkim_p(s, strlen(s), p, sizeof(p), k, sizeof(k)), 0);
    s = "v=DKIM1; k=rsa";
    assert_int_equal(dr_dkim_p(s, strlen(s), p, sizeof(p), k, sizeof(k)), -ENOENT);
    s = "k=rsa; v=DKIM1; p=x"; /* v= not first */
    assert_int_equal(dr_dkim_p(s, strlen(s), p, sizeof(p), k, sizeof(k)), -EINVAL);
    s = "v=DKIM2; p=x";
    assert_int_equal(dr_dkim_p(s, strlen(s), p, sizeof(p), k, sizeof(k)), -EINVAL);
    s = "google-site-verification=abc";
    assert_int_equal(dr_dkim_p(s, strlen(s), p, sizeof(p), k, sizeof(k)), -EINVAL);
}

/* ---- checks on made-up answers ---- */

static struct config cfg;

static void doctor_init(struct doctor *dr, const char *domain, const char *host)
{
    memset(dr, 0, sizeof(*dr));
    memset(&cfg, 0, sizeof(cfg));
    cfg.cert_dir = (char *)"/nonexistent";
    dr->cfg = &cfg;
    snprintf(dr->domain, sizeof(dr->domain), "%s", domain);
    dr->hostname = host;
    dr->addrs_from = "given with --ip";
}

static void add_addr(struct doctor *dr, const char *text)
{
    struct in6_addr ip;
    if (inet_pton(AF_INET, text, &ip) == 1)
        assert_int_equal(doctor_addr_add(dr, AF_INET, &ip), 0);
    else
        assert_true(inet_pton(AF_INET6, text, &ip) == 1 &&
                    doctor_addr_add(dr, AF_INET6, &ip) == 0);
}

static struct dr_lookup *lookup_with(struct dr_lookup *lk, struct res_answer *a)
{
    memset(lk, 0, sizeof(*lk));
    lk->ans = a;
    return lk;
}

static void test_mx(void **state)
{
    struct doctor dr;
    struct dr_lookup lk;
    struct res_mx mx[2] = {{"backup.example.test", 5}, {"mail.example.test", 10}};
    struct res_answer a = {.type = RES_MX, .status = RES_OK, .sec = RES_SEC_SECURE,
                           .name = "example.test", .canon = "example.test", .n = 2};
    a.mx = mx;

    doctor_init(&dr, "example.test", "mail.example.test");
    dr.mx = lookup_with(&lk, &a);
    check_mx(&dr);
    assert_int_equal(dr.nchecks, 1);
    assert_int_equal(dr.checks[0].status, DR_WARN); /* listed, but not first */
    assert_non_null(strstr(dr.checks[0].detail, "backup.example.test comes first"));
    doctor_checks_free(&dr);

    mx[0].pref = 10; /* equal preference: fine */
    check_mx(&dr);
    assert_int_equal(dr.checks[0].status, DR_OK);
    assert_non_null(strstr(dr.checks[0].detail, "DNSSEC: secure"));
    doctor_checks_free(&dr);

    a.n = 1; /* only the backup */
    check_mx(&dr);
    assert_int_equal(dr.checks[0].status, DR_FAIL);
    assert_string_equal(dr.checks[0].fix, "example.test. IN MX 10 mail.example.test.");
    doctor_checks_free(&dr);

    /* the answer never came */
    dr.mx = NULL;
    check_mx(&dr);
    assert_int_equal(dr.checks[0].status, DR_FAIL);
    assert_non_null(strstr(dr.checks[0].detail, "deadline"));
    doctor_checks_free(&dr);

    /* implicit MX on the host itself */
    struct res_mx self = {"example.test", 0};
    struct res_answer imp = {.type = RES_MX, .status = RES_OK, .name = "example.test",
                             .canon = "example.test", .implicit_mx = true, .n = 1};
    imp.mx = &self;
    doctor_init(&dr, "example.test", "example.test");
    dr.mx = lookup_with(&lk, &imp);
    check_mx(&dr);
    assert_int_equal(dr.checks[0].status, DR_WARN);
    doctor_checks_free(&dr);
}

static void test_host_addresses(void **state)
{
    struct doctor dr;
    struct dr_lookup l4, l6;
    struct in_addr v4[2];
    inet_pton(AF_INET, "192.0.2.25", &v4[0]);
    inet_pton(AF_INET, "192.0.2.99", &v4[1]);
    struct res_answer a4 = {.type = RES_A, .status = RES_OK, .name = "mail.example.test", .n = 1};
    a4.a = v4;
    struct res_answer a6 = {.type = RES_AAAA, .status = RES_NODATA, .name = "mail.example.test"};

    doctor_init(&dr, "example.test", "mail.example.test");
    add_addr(&dr, "192.0.2.25");
    dr.host_a = lookup_with(&l4, &a4);
    dr.host_aaaa = lookup_with(&l6, &a6);
    check_host_addresses(&dr);
    assert_int_equal(dr.checks[0].status, DR_OK);
    doctor_checks_free(&dr);

    add_addr(&dr, "2001:db8::25"); /* an IPv6 address without AAAA: a warning */
    check_host_addresses(&dr);
    assert_int_equal(dr.checks[0].status, DR_WARN);
    assert_string_equal(dr.checks[0].fix, "mail.example.test. IN AAAA 2001:db8::25");
    doctor_checks_free(&dr);

    a4.n = 2; /* an address that is not ours */
    check_host_addresses(&dr);
    assert_int_equal(dr.checks[0].status, DR_FAIL);
    assert_non_null(strstr(dr.checks[0].fix, "remove: mail.example.test. IN A 192.0.2.99"));
    doctor_checks_free(&dr);
}

static void test_ptr(void **state)
{
    struct doctor dr;
    doctor_init(&dr, "example.test", "mail.example.test");
    add_addr(&dr, "192.0.2.25");
    struct dr_addr *x = &dr.addrs[0];

    check_ptr(&dr, x); /* not done */
    assert_int_equal(dr.checks[0].status, DR_FAIL);
    doctor_checks_free(&dr);

    x->fc_done = true;
    x->fc.result = FCRDNS_PASS;
    snprintf(x->fc.name, sizeof(x->fc.name), "MAIL.example.test");
    check_ptr(&dr, x);
    assert_int_equal(dr.checks[0].status, DR_OK);
    doctor_checks_free(&dr);

    x->fc.result = FCRDNS_PERMERROR;
    x->fc.name[0] = '\0';
    check_ptr(&dr, x);
    assert_int_equal(dr.checks[0].status, DR_FAIL);
    assert_non_null(strstr(dr.checks[0].fix, "25.2.0.192.in-addr.arpa. IN PTR mail.example.test."));
    doctor_checks_free(&dr);

    x->fc.result = FCRDNS_FAIL;
    snprintf(x->fc.name, sizeof(x->fc.name), "mail.example.test");
    check_ptr(&dr, x);
    assert_string_equal(dr.checks[0].fix, "mail.example.test. IN A 192.0.2.25");
    doctor_checks_free(&dr);
}

static void test_spf_suggest(void **state)
{
    struct doctor dr;
    doctor_init(&dr, "example.test", "mail.example.test");
    add_addr(&dr, "192.0.2.25");
    add_addr(&dr, "2001:db8::25");
    char *s = spf_suggest(&dr, NULL, NULL);
    assert_string_equal(s, "v=spf1 ip4:192.0.2.25 ip6:2001:db8::25 -all");
    free(s);
    bool passing[2] = {true, false};
    s = spf_suggest(&dr, "v=spf1 include:_spf.example.net ~all", passing);
    assert_string_equal(s, "v=spf1 ip6:2001:db8::25 include:_spf.example.net ~all");
    free(s);
}

static void test_dmarc_check(void **state)
{
    struct doctor dr;
    struct dr_lookup lk;
    struct res_txt t[2] = {{.text = "v=DMARC1; p=quarantine; pct=50"}, {.text = "v=DMARC1; p=none"}};
    t[0].len = strlen(t[0].text);
    t[1].len = strlen(t[1].text);
    struct res_answer a = {.type = RES_TXT, .status = RES_OK, .name = "_dmarc.example.test",
                           .n = 1};
    a.txt = t;
    doctor_init(&dr, "example.test", "mail.example.test");
    dr.dmarc = lookup_with(&lk, &a);
    check_dmarc(&dr);
    assert_int_equal(dr.nchecks, 1); /* no rua: no report check */
    assert_int_equal(dr.checks[0].status, DR_OK);
    assert_non_null(strstr(dr.checks[0].detail, "50% of it"));
    assert_non_null(strstr(dr.checks[0].detail, "no reports"));
    doctor_checks_free(&dr);

    a.n = 2;
    check_dmarc(&dr);
    assert_int_equal(dr.checks[0].status, DR_FAIL);
    assert_non_null(strstr(dr.checks[0].why, "6.6.3"));
    doctor_checks_free(&dr);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_taglist),     cmocka_unit_test(test_dmarc_lint),
        cmocka_unit_test(test_mailto),      cmocka_unit_test(test_dkim_p),
        cmocka_unit_test(test_mx),          cmocka_unit_test(test_host_addresses),
        cmocka_unit_test(test_ptr),         cmocka_unit_test(test_spf_suggest),
        cmocka_unit_test(test_dmarc_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
