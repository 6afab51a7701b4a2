/* SPDX-License-Identifier: MIT */
/*
 * test_dmarc.c - core/dmarc.c: record recognition and parsing (defaults,
 * whitespace and case, bad values, the rua-only record of RFC 7489 6.6.3,
 * prefixes that are not values), strict and relaxed alignment through the
 * organizational domain, and the evaluation: SPF or DKIM alignment passes,
 * p vs sp, pct sampling lowering the policy (6.6.4).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "core/dmarc.h"
#include "core/psl.h"

static int parse(const char *s, struct dmarc_record *r)
{
    return dmarc_record_parse(s, strlen(s), r);
}

static void test_records(void **state)
{
    struct dmarc_record r;
    assert_true(dmarc_record_is("v=DMARC1; p=none", 16));
    assert_true(dmarc_record_is(" v = DMARC1 ;p=none", 19));
    assert_false(dmarc_record_is("v=DMARC2; p=none", 16));
    assert_false(dmarc_record_is("p=none; v=DMARC1", 16));
    assert_false(dmarc_record_is("v=spf1 -all", 11));
    assert_false(dmarc_record_is("v=dmarc1; p=none", 16)); /* the value is case-sensitive */

    assert_int_equal(parse("v=DMARC1; p=reject", &r), 0);
    assert_int_equal(r.p, DMARC_P_REJECT);
    assert_int_equal(r.sp, DMARC_P_REJECT); /* sp defaults to p */
    assert_false(r.adkim_strict);
    assert_false(r.aspf_strict);
    assert_int_equal(r.pct, 100);

    assert_int_equal(parse("v=DMARC1;p=Quarantine; sp=none ;adkim=s;aspf=s;pct=25;"
                           "rua=mailto:d@example.com; fo=1; x=unknown", &r), 0);
    assert_int_equal(r.p, DMARC_P_QUARANTINE);
    assert_int_equal(r.sp, DMARC_P_NONE);
    assert_true(r.adkim_strict);
    assert_true(r.aspf_strict);
    assert_int_equal(r.pct, 25);
    /* Bad pct / adkim values keep the defaults. */
    assert_int_equal(parse("v=DMARC1; p=none; pct=250; adkim=x", &r), 0);
    assert_int_equal(r.pct, 100);
    assert_false(r.adkim_strict);
    /* No p, or a bad p / sp: unusable, unless rua= makes it p=none. */
    assert_int_equal(parse("v=DMARC1", &r), -EINVAL);
    assert_int_equal(parse("v=DMARC1; p=rej", &r), -EINVAL);
    assert_int_equal(parse("v=DMARC1; p=reject; sp=bogus", &r), -EINVAL);
    assert_int_equal(parse("v=DMARC1; p=bogus; rua=mailto:r@example.com", &r), 0);
    assert_int_equal(r.p, DMARC_P_NONE);
    assert_int_equal(parse("v=DMARC1; rua=mailto:r@example.com", &r), 0);
    assert_int_equal(r.sp, DMARC_P_NONE);
}

static void test_alignment(void **state)
{
    /* Without a list: the implicit rule (enough for .test names). */
    assert_true(dmarc_aligned(NULL, "example.test", "EXAMPLE.test", true));
    assert_false(dmarc_aligned(NULL, "example.test", "mail.example.test", true));
    assert_true(dmarc_aligned(NULL, "example.test", "mail.example.test", false));
    assert_true(dmarc_aligned(NULL, "a.example.test", "b.example.test", false));
    assert_false(dmarc_aligned(NULL, "example.test", "example2.test", false));
    assert_false(dmarc_aligned(NULL, "example.test", "", false));
    assert_false(dmarc_aligned(NULL, "example.test", NULL, false));
    char err[256];
    struct psl *psl = psl_load(PSL_DEFAULT_PATH, err, sizeof(err));
    assert_non_null(psl);
    /* co.uk is a suffix: two registrants under it do not align. */
    assert_false(dmarc_aligned(psl, "a.co.uk", "b.co.uk", false));
    assert_true(dmarc_aligned(psl, "bbc.co.uk", "news.bbc.co.uk", false));
    /* Nor does a suffix with its registrant (d=co.uk cannot vouch). */
    assert_false(dmarc_aligned(psl, "victim.co.uk", "co.uk", false));
    psl_free(psl);
}

static void test_evaluate(void **state)
{
    struct dmarc_record r = {.p = DMARC_P_REJECT, .sp = DMARC_P_QUARANTINE, .pct = 100};
    const char *dk[] = {"other.test", "mail.example.test"};
    struct dmarc_outcome o;
    struct dmarc_input in = {.from_domain = "example.test", .rec = &r};

    /* No record: none. */
    struct dmarc_input none = {.from_domain = "example.test"};
    dmarc_evaluate(NULL, &none, 0, &o);
    assert_int_equal(o.result, DMARC_R_NONE);
    /* Nothing aligned: fail, p applies. */
    dmarc_evaluate(NULL, &in, 0, &o);
    assert_int_equal(o.result, DMARC_R_FAIL);
    assert_int_equal(o.policy, DMARC_P_REJECT);
    assert_int_equal(o.disposition, DMARC_P_REJECT);
    /* Relaxed DKIM alignment passes; strict does not. */
    in.dkim_pass = dk;
    in.ndkim_pass = 2;
    dmarc_evaluate(NULL, &in, 0, &o);
    assert_int_equal(o.result, DMARC_R_PASS);
    assert_true(o.dkim_aligned);
    assert_string_equal(o.dkim_domain, "mail.example.test");
    assert_int_equal(o.disposition, DMARC_P_NONE);
    r.adkim_strict = true;
    dmarc_evaluate(NULL, &in, 0, &o);
    assert_int_equal(o.result, DMARC_R_FAIL);
    /* SPF: passes only when it passed and aligns. */
    in.spf_domain = "bounce.example.test";
    dmarc_evaluate(NULL, &in, 0, &o);
    assert_int_equal(o.result, DMARC_R_FAIL);
    in.spf_pass = true;
    dmarc_evaluate(NULL, &in, 0, &o);
    assert_int_equal(o.result, DMARC_R_PASS);
    assert_true(o.spf_aligned);
    assert_false(o.dkim_aligned);
    r.aspf_strict = true;
    dmarc_evaluate(NULL, &in, 0, &o);
    assert_int_equal(o.result, DMARC_R_FAIL);
    /* A record found at the organizational domain: sp applies. */
    in.rec_at_org = true;
    dmarc_evaluate(NULL, &in, 0, &o);
    assert_int_equal(o.policy, DMARC_P_QUARANTINE);
    /* pct: sampled in keeps the policy, sampled out lowers it. */
    in.rec_at_org = false;
    r.pct = 30;
    dmarc_evaluate(NULL, &in, 29, &o);
    assert_int_equal(o.disposition, DMARC_P_REJECT);
    dmarc_evaluate(NULL, &in, 30, &o);
    assert_int_equal(o.disposition, DMARC_P_QUARANTINE);
    r.p = DMARC_P_QUARANTINE;
    dmarc_evaluate(NULL, &in, 99, &o);
    assert_int_equal(o.disposition, DMARC_P_NONE);
    r.pct = 0;
    r.p = DMARC_P_REJECT;
    dmarc_evaluate(NULL, &in, 0, &o);
    assert_int_equal(o.disposition, DMARC_P_QUARANTINE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_records),
        cmocka_unit_test(test_alignment),
        cmocka_unit_test(test_evaluate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
