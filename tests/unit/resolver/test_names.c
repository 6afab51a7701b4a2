/* SPDX-License-Identifier: MIT */
/*
 * test_names.c - unit tests for resolver/names.c: domain and zone names,
 * server addresses in libunbound's form, reverse names, the res_conf
 * builders and the type/status names.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "resolver/names.c"

static void test_name_normalize(void **state)
{
    char out[RES_NAME_MAX + 1];

    assert_int_equal(res_name_normalize("Example.TEST.", out, sizeof(out)), 12);
    assert_string_equal(out, "example.test");
    assert_int_equal(res_name_normalize("_25._tcp.mx.example.test", out, sizeof(out)), 24);
    assert_string_equal(out, "_25._tcp.mx.example.test");
    assert_int_equal(res_name_normalize("a-b.c", out, sizeof(out)), 5);
    const char *bad[] = {"", ".", "a..b", ".a", "a b", "a\\.b", "é.test", "a.b..", "a;b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
        assert_int_equal(res_name_normalize(bad[i], out, sizeof(out)), -EINVAL);
    /* 63-character labels pass, 64 do not; 253 characters at most. */
    char l63[80], l64[80], big[300];
    memset(l63, 'a', 63);
    strcpy(l63 + 63, ".test");
    memset(l64, 'a', 64);
    strcpy(l64 + 64, ".test");
    assert_true(res_name_normalize(l63, out, sizeof(out)) > 0);
    assert_int_equal(res_name_normalize(l64, out, sizeof(out)), -EINVAL);
    size_t n = 0;
    while (n + 4 <= 253) {
        memcpy(big + n, "abc.", 4);
        n += 4;
    }
    big[n - 1] = '\0'; /* 251 characters */
    assert_int_equal(res_name_normalize(big, out, sizeof(out)), 251);
    strcpy(big + n - 1, ".abc"); /* 255 */
    assert_int_equal(res_name_normalize(big, out, sizeof(out)), -EINVAL);
}

/* Internationalized names become A-labels (RFC 5891, UTS #46 mapping);
 * ASCII names go through unchanged; what IDNA2008 refuses is -EINVAL. */
static void test_name_to_ascii(void **state)
{
    char out[RES_NAME_MAX + 1], inplace[RES_NAME_MAX + 1];

    assert_int_equal(res_name_to_ascii("b\xc3\xbc" "cher.example", out, sizeof(out)), 21);
    assert_string_equal(out, "xn--bcher-kva.example");
    assert_true(res_name_to_ascii("B\xc3\x9c" "CHER.Example.", out, sizeof(out)) > 0); /* BÜCHER */
    assert_string_equal(out, "xn--bcher-kva.example");
    assert_true(res_name_to_ascii("mx.\xe4\xbe\x8b\xe5\xad\x90" ".test", out, sizeof(out)) > 0); /* 例子 */
    assert_string_equal(out, "mx.xn--fsqu00a.test");
    assert_true(res_name_to_ascii("stra\xc3\x9f" "e.test", out, sizeof(out)) > 0); /* ß kept */
    assert_string_equal(out, "xn--strae-oqa.test");
    assert_int_equal(res_name_to_ascii("Example.TEST", out, sizeof(out)), 12);
    assert_string_equal(out, "example.test");
    strcpy(inplace, "b\xc3\xbc" "cher.example");
    assert_int_equal(res_name_to_ascii(inplace, inplace, sizeof(inplace)), 21);
    assert_string_equal(inplace, "xn--bcher-kva.example");
    const char *bad[] = {
        "a\xe2\x98\x83" "b.test", /* a snowman: a symbol, disallowed */
        "\xff\xfe.test",           /* not UTF-8 */
        "b\xc3\xbc" "cher..test",  /* an empty label */
        "-b\xc3\xbc" "cher.test",  /* a leading hyphen */
        "a b\xc3\xbc" ".test",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
        assert_int_equal(res_name_to_ascii(bad[i], out, sizeof(out)), -EINVAL);
}

static void test_zone_normalize(void **state)
{
    char out[RES_NAME_MAX + 2];

    assert_int_equal(res_zone_normalize("Example.Test", out, sizeof(out)), 13);
    assert_string_equal(out, "example.test.");
    assert_int_equal(res_zone_normalize("0.0.127.in-addr.arpa.", out, sizeof(out)), 21);
    assert_string_equal(out, "0.0.127.in-addr.arpa.");
    assert_int_equal(res_zone_normalize(".", out, sizeof(out)), 1);
    assert_string_equal(out, ".");
    assert_int_equal(res_zone_normalize("a..b", out, sizeof(out)), -EINVAL);
}

static void test_parse_server(void **state)
{
    char out[64];

    assert_int_equal(res_parse_server("127.0.0.1", out, sizeof(out)), 0);
    assert_string_equal(out, "127.0.0.1");
    assert_int_equal(res_parse_server("127.0.0.1@5353", out, sizeof(out)), 0);
    assert_string_equal(out, "127.0.0.1@5353");
    assert_int_equal(res_parse_server("::1@53", out, sizeof(out)), 0);
    assert_string_equal(out, "::1@53");
    assert_int_equal(res_parse_server("[0:0::1]@5300", out, sizeof(out)), 0);
    assert_string_equal(out, "::1@5300");
    const char *bad[] = {"", "@53", "localhost", "127.0.0.1@", "127.0.0.1@0",
                         "127.0.0.1@65536", "127.0.0.1@5x", "127.0.0.1:53", "1.2.3",
                         "[::1", "::1@999999", "127.0.0.1@@53"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
        if (res_parse_server(bad[i], out, sizeof(out)) != -EINVAL)
            fail_msg("'%s' accepted", bad[i]);
    assert_int_equal(res_parse_server("127.0.0.1@53", out, 5), -ENAMETOOLONG);
}

static void test_ptr_name(void **state)
{
    char out[128];
    struct in_addr a4;
    struct in6_addr a6;

    inet_pton(AF_INET, "127.0.0.5", &a4);
    assert_int_equal(res_ptr_name(AF_INET, &a4, out, sizeof(out)), 22);
    assert_string_equal(out, "5.0.0.127.in-addr.arpa");
    inet_pton(AF_INET6, "2001:db8::abcd", &a6);
    assert_true(res_ptr_name(AF_INET6, &a6, out, sizeof(out)) > 0);
    assert_string_equal(out, "d.c.b.a.0.0.0.0.0.0.0.0.0.0.0.0."
                             "0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa");
    assert_int_equal(res_ptr_name(AF_INET6, &a6, out, 40), -ENAMETOOLONG);
    assert_int_equal(res_ptr_name(AF_UNIX, &a6, out, sizeof(out)), -EINVAL);
}

static void test_conf(void **state)
{
    struct res_conf c;
    char err[256];

    res_conf_init(&c);
    assert_true(c.dnssec);
    assert_int_equal(res_conf_add_forward(&c, "127.0.0.1@5353", err, sizeof(err)), 0);
    assert_int_equal(res_conf_add_forward(&c, "127.0.0.1@5353", err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "twice"));
    assert_int_equal(res_conf_add_forward(&c, "nope", err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "bad server 'nope'"));
    assert_int_equal(res_conf_add_stub(&c, "Example.Test", "::1@53", err, sizeof(err)), 0);
    assert_int_equal(res_conf_add_stub(&c, "example.test.", "127.0.0.1", err, sizeof(err)), 0);
    assert_int_equal(res_conf_add_stub(&c, "bad..zone", "127.0.0.1", err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "bad zone name 'bad..zone'"));
    assert_int_equal(res_conf_add_stub(&c, "x.test", "1.2.3.4@0", err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "bad server '1.2.3.4@0' for zone x.test."));
    assert_int_equal(c.nforwards, 1);
    assert_int_equal(c.nstubs, 2);
    assert_string_equal(c.stubs[0].zone, "example.test.");
    assert_string_equal(c.stubs[0].addr, "::1@53");
    assert_string_equal(c.stubs[1].addr, "127.0.0.1");
    res_conf_clear(&c);
    assert_int_equal(c.nstubs, 0);
    assert_true(c.dnssec);
}

static void test_names_of(void **state)
{
    enum res_type t;

    assert_int_equal(res_type_parse("mx", &t), 0);
    assert_int_equal(t, RES_MX);
    assert_int_equal(res_type_parse("TLSA", &t), 0);
    assert_int_equal(t, RES_TLSA);
    assert_int_equal(res_type_parse("SOA", &t), -EINVAL);
    assert_string_equal(res_type_name(RES_AAAA), "AAAA");
    assert_string_equal(res_status_name(RES_NULLMX), "nullmx");
    assert_string_equal(res_sec_name(RES_SEC_BOGUS), "bogus");
    assert_true(res_status_temporary(RES_BOGUS));
    assert_true(res_status_temporary(RES_TIMEOUT));
    assert_true(res_status_temporary(RES_SERVFAIL));
    assert_false(res_status_temporary(RES_NXDOMAIN));
    assert_false(res_status_temporary(RES_NULLMX));
    assert_false(res_status_temporary(RES_NODATA));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_normalize), cmocka_unit_test(test_name_to_ascii),
        cmocka_unit_test(test_zone_normalize),
        cmocka_unit_test(test_parse_server),   cmocka_unit_test(test_ptr_name),
        cmocka_unit_test(test_conf),           cmocka_unit_test(test_names_of),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
