/* SPDX-License-Identifier: MIT */
/*
 * test_spf_record.c - unit tests for resolver/spf_record.c: the macro examples
 * of RFC 7208 section 7.4 (IPv4 and IPv6), URL escaping, the explanation
 * only macros, truncation of long domain-specs, and record parsing: the
 * records of RFC 7208 appendix A and the syntax errors that are permerrors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "resolver/spf_record.h"

static unsigned char ip4[4], ip6[16];

/* RFC 7208 7.4: sender strong-bad@email.example.com, IP 192.0.2.3. */
static struct spf_macro_ctx ctx4(void)
{
    inet_pton(AF_INET, "192.0.2.3", ip4);
    return (struct spf_macro_ctx){.sender = "strong-bad@email.example.com",
                                  .domain = "email.example.com", .family = AF_INET, .ip = ip4,
                                  .helo = "mx.example.org", .now = 1700000000};
}

static const char *X(const struct spf_macro_ctx *c, const char *s, bool explain)
{
    static char out[1024];
    int rc = spf_macro_expand(s, strlen(s), c, explain, false, out, sizeof(out));
    if (rc < 0)
        snprintf(out, sizeof(out), "error %d", rc);
    else
        assert_int_equal((size_t)rc, strlen(out));
    return out;
}

static void test_rfc_examples(void **state)
{
    struct spf_macro_ctx c = ctx4();

    assert_string_equal(X(&c, "%{s}", false), "strong-bad@email.example.com");
    assert_string_equal(X(&c, "%{o}", false), "email.example.com");
    assert_string_equal(X(&c, "%{d}", false), "email.example.com");
    assert_string_equal(X(&c, "%{d4}", false), "email.example.com");
    assert_string_equal(X(&c, "%{d3}", false), "email.example.com");
    assert_string_equal(X(&c, "%{d2}", false), "example.com");
    assert_string_equal(X(&c, "%{d1}", false), "com");
    assert_string_equal(X(&c, "%{dr}", false), "com.example.email");
    assert_string_equal(X(&c, "%{d2r}", false), "example.email");
    assert_string_equal(X(&c, "%{l}", false), "strong-bad");
    assert_string_equal(X(&c, "%{l-}", false), "strong.bad");
    assert_string_equal(X(&c, "%{lr}", false), "strong-bad");
    assert_string_equal(X(&c, "%{lr-}", false), "bad.strong");
    assert_string_equal(X(&c, "%{l1r-}", false), "strong");

    assert_string_equal(X(&c, "%{ir}.%{v}._spf.%{d2}", false),
                        "3.2.0.192.in-addr._spf.example.com");
    assert_string_equal(X(&c, "%{lr-}.lp._spf.%{d2}", false), "bad.strong.lp._spf.example.com");
    assert_string_equal(X(&c, "%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", false),
                        "bad.strong.lp.3.2.0.192.in-addr._spf.example.com");
    assert_string_equal(X(&c, "%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", false),
                        "3.2.0.192.in-addr.strong.lp._spf.example.com");
    assert_string_equal(X(&c, "%{d2}.trusted-domains.example.net", false),
                        "example.com.trusted-domains.example.net");

    /* The IPv6 example: 2001:db8::cb01. */
    inet_pton(AF_INET6, "2001:db8::cb01", ip6);
    c.family = AF_INET6;
    c.ip = ip6;
    assert_string_equal(X(&c, "%{ir}.%{v}._spf.%{d2}", false),
                        "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf."
                        "example.com");
}

static void test_macro_details(void **state)
{
    struct spf_macro_ctx c = ctx4();

    assert_string_equal(X(&c, "%%-%_-%-", false), "%- -%20");
    assert_string_equal(X(&c, "%{h}.%{p}", false), "mx.example.org.unknown");
    c.validated = "mail.example.com";
    assert_string_equal(X(&c, "%{p2}", false), "example.com");
    /* Uppercase: URL-escaped (RFC 3986 unreserved kept). */
    c.sender = "a b+c@example.com";
    assert_string_equal(X(&c, "%{L}", false), "a%20b%2Bc");
    assert_string_equal(X(&c, "%{l}", false), "a b+c");
    assert_string_equal(X(&c, "%{l+}", false), "a b.c");
    /* No local part: "postmaster" (4.3). */
    c.sender = "example.com";
    assert_string_equal(X(&c, "%{l}@%{o}", false), "postmaster@example.com");
    /* More parts asked than there are: all of them. */
    assert_string_equal(X(&c, "%{d9}", false), "email.example.com");
    assert_string_equal(X(&c, "%{d100r}", false), "com.example.email");

    /* c, r, t only in explanations, where spaces are literal. */
    assert_string_equal(X(&c, "%{c}", false), "error -22");
    assert_string_equal(X(&c, "%{r}", false), "error -22");
    assert_string_equal(X(&c, "%{t}", false), "error -22");
    assert_string_equal(X(&c, "%{i} is not one of %{d}'s senders at %{t} (%{c}, %{r})", true),
                        "192.0.2.3 is not one of email.example.com's senders at 1700000000 "
                        "(192.0.2.3, unknown)");
    c.family = AF_INET6;
    inet_pton(AF_INET6, "2001:db8::cb01", ip6);
    c.ip = ip6;
    assert_string_equal(X(&c, "%{c}", true), "2001:db8::cb01");
    assert_string_equal(X(&c, "a b", false), "error -22");

    /* Syntax errors: permerror. */
    static const char *const bad[] = {"%",      "%x",     "%{",    "%{d",   "%{z}",  "%{d0}",
                                      "%{d2x}", "%{dr2}", "%{}",   "a\tb",  "%{d*}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char out[64];
        int rc = spf_macro_expand(bad[i], strlen(bad[i]), &c, false, false, out, sizeof(out));
        if (rc != -EINVAL)
            fail_msg("'%s': %d", bad[i], rc);
    }
    char small[8];
    assert_int_equal(spf_macro_expand("%{d}", 4, &c, false, false, small, sizeof(small)),
                     -ENOSPC);
}

static void test_truncation(void **state)
{
    struct spf_macro_ctx c = ctx4();
    char label[64], dom[300], out[512];

    memset(label, 'a', 60);
    label[60] = '\0';
    /* 4 labels of 60 + ".example.com": 4 * 61 + 11 = 255 > 253. */
    snprintf(dom, sizeof(dom), "%s.%s.%s.%s.example.com", label, label, label, label);
    c.domain = dom;
    int n = spf_macro_expand("%{d}", 4, &c, false, true, out, sizeof(out));
    assert_int_equal(n, 3 * 61 + 11);
    assert_true(strncmp(out, label, 60) == 0);
    assert_string_equal(out + 3 * 61, "example.com");
    /* Not a domain-spec: kept whole. */
    n = spf_macro_expand("%{d}", 4, &c, false, false, out, sizeof(out));
    assert_int_equal(n, (int)strlen(dom));
}

static void test_appendix_a(void **state)
{
    static struct spf_record r;
    const char *at;
    const char *rec;

    rec = "v=spf1 +all";
    assert_int_equal(spf_record_parse(rec, strlen(rec), &r, &at), 0);
    assert_int_equal(r.nterms, 1);
    assert_int_equal(r.terms[0].mech, SPF_M_ALL);
    assert_int_equal(r.terms[0].qualifier, SPF_PASS);

    rec = "v=spf1 a -all";
    assert_int_equal(spf_record_parse(rec, strlen(rec), &r, &at), 0);
    assert_int_equal(r.nterms, 2);
    assert_int_equal(r.terms[0].mech, SPF_M_A);
    assert_null(r.terms[0].domain.p);
    assert_int_equal(r.terms[0].cidr4, 32);
    assert_int_equal(r.terms[0].cidr6, 128);
    assert_int_equal(r.terms[1].qualifier, SPF_FAIL);

    rec = "v=spf1 a:example.org -all";
    assert_int_equal(spf_record_parse(rec, strlen(rec), &r, &at), 0);
    assert_int_equal(r.terms[0].domain.len, 11);
    assert_memory_equal(r.terms[0].domain.p, "example.org", 11);

    rec = "v=spf1 mx mx:example.org -all";
    assert_int_equal(spf_record_parse(rec, strlen(rec), &r, &at), 0);
    assert_int_equal(r.nterms, 3);
    assert_int_equal(r.terms[1].mech, SPF_M_MX);

    rec = "v=spf1 mx/30 mx:example.org/30 -all";
    assert_int_equal(spf_record_parse(rec, strlen(rec), &r, &at), 0);
    assert_int_equal(r.terms[0].cidr4, 30);
    assert_null(r.terms[0].domain.p);
    assert_int_equal(r.terms[1].cidr4, 30);
    assert_int_equal(r.terms[1].domain.len, 11);

    rec = "v=spf1 ptr -all";
    assert_int_equal(spf_record_parse(rec, strlen(rec), &r, &at), 0);
    assert_int_equal(r.terms[0].mech, SPF_M_PTR);

    rec = "v=spf1 ip4:192.0.2.128/28 -all";
    assert_int_equal(spf_record_parse(rec, strlen(rec), &r, &at), 0);
    assert_int_equal(r.terms[0].mech, SPF_M_IP4);
    assert_int_equal(r.terms[0].cidr4, 28);
    assert_int_equal(ntohl(r.terms[0].ip4.s_addr), 0xC0000280);

    /* A.2 and friends: include, exists with macros, redirect, exp. */
    rec = "v=spf1 include:_spf.example.com ~all";
    assert_int_equal(spf_record_parse(rec, strlen(rec), &r, &at), 0);
    assert_int_equal(r.terms[0].mech, SPF_M_INCLUDE);
    assert_int_equal(r.terms[1].qualifier, SPF_SOFTFAIL);
    rec = "v=spf1 exists:%{ir}.%{l1r+-}._spf.%{d} ?all";
    assert_int_equal(spf_record_parse(rec, strlen(rec), &r, &at), 0);
    assert_int_equal(r.terms[0].mech, SPF_M_EXISTS);
    assert_int_equal(r.terms[1].qualifier, SPF_NEUTRAL);
    rec = "v=spf1 -ip6:2001:db8::/32 a:mail.example.com//64 a/24//64 mx:%{d}/28 "
          "redirect=_spf.example.com exp=explain._spf.%{d} other.mod=x%{d}y";
    assert_int_equal(spf_record_parse(rec, strlen(rec), &r, &at), 0);
    assert_int_equal(r.nterms, 4);
    assert_int_equal(r.terms[0].mech, SPF_M_IP6);
    assert_int_equal(r.terms[0].cidr6, 32);
    assert_int_equal(r.terms[1].cidr4, 32);
    assert_int_equal(r.terms[1].cidr6, 64);
    assert_int_equal(r.terms[1].domain.len, 16);
    assert_int_equal(r.terms[2].cidr4, 24);
    assert_int_equal(r.terms[2].cidr6, 64);
    assert_int_equal(r.terms[3].domain.len, 4);
    assert_int_equal(r.terms[3].cidr4, 28);
    assert_memory_equal(r.redirect.p, "_spf.example.com", r.redirect.len);
    assert_memory_equal(r.exp.p, "explain._spf.%{d}", r.exp.len);
    /* Case, extra spaces. */
    rec = "V=SPF1  MX:Example.ORG   IP4:10.0.0.1  -ALL ";
    assert_int_equal(spf_record_parse(rec, strlen(rec), &r, &at), 0);
    assert_int_equal(r.nterms, 3);
    rec = "v=spf1";
    assert_int_equal(spf_record_parse(rec, strlen(rec), &r, &at), 0);
    assert_int_equal(r.nterms, 0);
}

static void test_errors(void **state)
{
    static struct spf_record r;
    const char *at;
    static const struct {
        const char *rec, *at;
    } bad[] = {
        {"v=spf1 frob", "frob"},
        {"v=spf1 all:x", "all:x"},
        {"v=spf1 include", "include"},
        {"v=spf1 include:", "include:"},
        {"v=spf1 include:localhost", "include:localhost"},      /* no top label */
        {"v=spf1 a:example.123", "a:example.123"},              /* numeric top label */
        {"v=spf1 a:example.com/33", "a:example.com/33"},
        {"v=spf1 a:example.com/024", "a:example.com/024"},
        {"v=spf1 a//129", "a//129"},
        {"v=spf1 a/24/64", "a/24/64"},
        {"v=spf1 ptr/24", "ptr/24"},
        {"v=spf1 ip4:300.0.0.1", "ip4:300.0.0.1"},
        {"v=spf1 ip4:10.0.0.1/33", "ip4:10.0.0.1/33"},
        {"v=spf1 ip4:2001:db8::1", "ip4:2001:db8::1"},
        {"v=spf1 ip6:10.0.0.1", "ip6:10.0.0.1"},
        {"v=spf1 ip6:2001:db8::/129", "ip6:2001:db8::/129"},
        {"v=spf1 ip4", "ip4"},
        {"v=spf1 exists:%{z}.example.com", "exists:%{z}.example.com"},
        {"v=spf1 redirect=a.example redirect=b.example", "redirect=b.example"},
        {"v=spf1 exp=a.example exp=b.example", "exp=b.example"},
        {"v=spf1 redirect=", "redirect="},
        {"v=spf1 1bad=x", "1bad=x"},
        {"v=spf1 mod=%{", "mod=%{"},
        {"v=spf1 -", "-"},
        {"v=spf1 a:%{d}.example.com/24 mx:ex%{", "mx:ex%{"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = spf_record_parse(bad[i].rec, strlen(bad[i].rec), &r, &at);
        if (rc != -EINVAL)
            fail_msg("%s: %d", bad[i].rec, rc);
        assert_non_null(at);
        if (strncmp(at, bad[i].at, strlen(bad[i].at)) != 0)
            fail_msg("%s: error at '%s', want '%s'", bad[i].rec, at, bad[i].at);
    }
    /* Not SPF records at all. */
    assert_int_equal(spf_record_parse("v=spf10 a", 9, &r, &at), -ENOENT);
    assert_int_equal(spf_record_parse("v=DMARC1; p=none", 16, &r, &at), -ENOENT);
    assert_int_equal(spf_record_parse("", 0, &r, &at), -ENOENT);
    assert_true(spf_record_is_spf("v=spf1 -all", 11));
    assert_false(spf_record_is_spf("v=spf1-all", 10));
    /* Too many directives. */
    static char big[SPF_TERMS_MAX * 5 + 64];
    size_t n = (size_t)snprintf(big, sizeof(big), "v=spf1");
    for (int k = 0; k <= SPF_TERMS_MAX; k++)
        n += (size_t)snprintf(big + n, sizeof(big) - n, " a");
    assert_int_equal(spf_record_parse(big, n, &r, &at), -E2BIG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc_examples), cmocka_unit_test(test_macro_details),
        cmocka_unit_test(test_truncation),   cmocka_unit_test(test_appendix_a),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
