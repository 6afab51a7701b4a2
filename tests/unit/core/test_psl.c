/* SPDX-License-Identifier: MIT */
/*
 * test_psl.c - core/psl.c: the list's algorithm on a small list of our own
 * (normal rules, wildcards, exceptions, the implicit "*", comments, case,
 * a trailing dot, names that are suffixes themselves, malformed names),
 * the test vectors of publicsuffix.org's checkPublicSuffix on Debian's
 * list, and a missing file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/psl.h"

static const char *org(const struct psl *psl, const char *d)
{
    static char out[256];
    int rc = psl_org_domain(psl, d, out, sizeof(out));
    if (rc < 0)
        snprintf(out, sizeof(out), "(%d)", rc);
    return out;
}

static void test_own_list(void **state)
{
    char path[] = "/tmp/ortoo-test-psl-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *list = "// comment\n\ncom\nuk\nco.uk\n*.ck\n!www.ck\n  jp  // trailing\n"
                       "*.kawasaki.jp\n!city.kawasaki.jp\nGitHub.io\n";
    assert_int_equal(write(fd, list, strlen(list)), (ssize_t)strlen(list));
    close(fd);
    char err[256];
    struct psl *psl = psl_load(path, err, sizeof(err));
    unlink(path);
    assert_non_null(psl);
    assert_int_equal(psl_count(psl), 9);

    assert_string_equal(org(psl, "example.com"), "example.com");
    assert_string_equal(org(psl, "a.b.Example.COM"), "example.com");
    assert_string_equal(org(psl, "mail.example.com."), "example.com");
    assert_string_equal(org(psl, "www.bbc.co.uk"), "bbc.co.uk");
    assert_string_equal(org(psl, "co.uk"), "(-22)");
    assert_string_equal(org(psl, "com"), "(-22)");
    /* Wildcards and their exceptions. */
    assert_string_equal(org(psl, "a.b.ck"), "a.b.ck");
    assert_string_equal(org(psl, "b.ck"), "(-22)");
    assert_string_equal(org(psl, "www.ck"), "www.ck");
    assert_string_equal(org(psl, "x.www.ck"), "www.ck");
    assert_string_equal(org(psl, "a.b.kawasaki.jp"), "a.b.kawasaki.jp");
    assert_string_equal(org(psl, "x.city.kawasaki.jp"), "city.kawasaki.jp");
    /* "*.kawasaki.jp" needs a label more: here "jp" is the suffix. */
    assert_string_equal(org(psl, "kawasaki.jp"), "kawasaki.jp");
    /* A private-section style rule, any case. */
    assert_string_equal(org(psl, "me.github.io"), "me.github.io");
    /* The implicit "*": an unknown top label. */
    assert_string_equal(org(psl, "mx.example.test"), "example.test");
    assert_string_equal(org(psl, "test"), "(-22)");
    /* Malformed. */
    assert_string_equal(org(psl, ""), "(-22)");
    assert_string_equal(org(psl, "a..example.com"), "(-22)");
    assert_string_equal(org(psl, ".example.com"), "(-22)");
    char small[4];
    assert_int_equal(psl_org_domain(psl, "example.com", small, sizeof(small)), -ENAMETOOLONG);
    /* No list: the implicit rule only. */
    assert_string_equal(org(NULL, "www.bbc.co.uk"), "co.uk");
    psl_free(psl);
}

static void test_debian_list(void **state)
{
    char err[256];
    struct psl *psl = psl_load(PSL_DEFAULT_PATH, err, sizeof(err));
    if (psl == NULL)
        fail_msg("%s (the publicsuffix package is in .ci/deps)", err);
    assert_true(psl_count(psl) > 5000);
    /* From publicsuffix.org's test vectors (registrable domains). */
    assert_string_equal(org(psl, "example.com"), "example.com");
    assert_string_equal(org(psl, "b.example.com"), "example.com");
    assert_string_equal(org(psl, "a.b.example.com"), "example.com");
    assert_string_equal(org(psl, "uk.com"), "(-22)");
    assert_string_equal(org(psl, "example.uk.com"), "example.uk.com");
    assert_string_equal(org(psl, "b.example.uk.com"), "example.uk.com");
    assert_string_equal(org(psl, "c.kobe.jp"), "(-22)");
    assert_string_equal(org(psl, "b.c.kobe.jp"), "b.c.kobe.jp");
    assert_string_equal(org(psl, "a.b.c.kobe.jp"), "b.c.kobe.jp");
    assert_string_equal(org(psl, "city.kobe.jp"), "city.kobe.jp");
    assert_string_equal(org(psl, "www.city.kobe.jp"), "city.kobe.jp");
    assert_string_equal(org(psl, "ck"), "(-22)");
    assert_string_equal(org(psl, "test.ck"), "(-22)");
    assert_string_equal(org(psl, "b.test.ck"), "b.test.ck");
    assert_string_equal(org(psl, "www.ck"), "www.ck");
    assert_string_equal(org(psl, "www.www.ck"), "www.ck");
    assert_string_equal(org(psl, "us"), "(-22)");
    assert_string_equal(org(psl, "test.ak.us"), "test.ak.us");
    assert_string_equal(org(psl, "www.test.ak.us"), "test.ak.us");
    assert_string_equal(org(psl, "www.bbc.co.uk"), "bbc.co.uk");
    psl_free(psl);
}

static void test_missing(void **state)
{
    char err[256];
    assert_null(psl_load("/nonexistent/psl.dat", err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent/psl.dat"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_own_list),
        cmocka_unit_test(test_debian_list),
        cmocka_unit_test(test_missing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
