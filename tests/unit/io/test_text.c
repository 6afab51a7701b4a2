/* SPDX-License-Identifier: MIT */
/*
 * test_text.c - unit tests for io/text.c, the text helpers every layer
 * shares: error messages formatted into a caller's buffer; the growable
 * string (NUL-terminated after every append, embedded NULs kept, printf of
 * any length, a failed append sticky); host-name syntax and its reasons;
 * the HOST:PORT split; reading a whole file (empty, appended, too large,
 * missing).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "io/text.h"

static void test_seterr(void **state)
{
    char err[8];

    text_seterr(err, sizeof(err), "%s:%d", "f", 12);
    assert_string_equal(err, "f:12");
    /* Cut to fit, always terminated. */
    text_seterr(err, sizeof(err), "%s", "a longer message");
    assert_string_equal(err, "a longe");
    /* No buffer: nothing written, no crash. */
    text_seterr(NULL, 0, "%s", "x");
    memcpy(err, "keep", 5);
    text_seterr(err, 0, "%s", "x");
    assert_string_equal(err, "keep");
}

static void test_buf(void **state)
{
    struct text_buf b = {0};

    /* An empty append still makes a valid empty string. */
    assert_int_equal(text_add(&b, "", 0), 0);
    assert_non_null(b.p);
    assert_string_equal(b.p, "");
    assert_int_equal(text_add(&b, "a\0b", 3), 0);
    assert_int_equal(b.len, 3);
    assert_memory_equal(b.p, "a\0b", 4);
    assert_int_equal(text_add_str(&b, "cd"), 0);
    assert_int_equal(b.len, 5);
    assert_int_equal(b.p[5], '\0');
    text_free(&b);
    assert_null(b.p);
    assert_int_equal(b.len, 0);

    /* printf: short, then longer than the first allocation. */
    char big[3000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(text_printf(&b, "%d-%s", 42, "y"), 0);
    assert_int_equal(text_printf(&b, "[%s]", big), 0);
    assert_int_equal(b.len, 4 + 1 + sizeof(big) - 1 + 1);
    assert_memory_equal(b.p, "42-y[xxx", 8);
    assert_int_equal(b.p[b.len - 1], ']');
    assert_int_equal(b.p[b.len], '\0');
    assert_false(b.oom);

    /* Once failed, every append fails and changes nothing. */
    size_t len = b.len;
    b.oom = true;
    assert_int_equal(text_add(&b, "z", 1), -ENOMEM);
    assert_int_equal(text_printf(&b, "%s", "z"), -ENOMEM);
    assert_int_equal(b.len, len);
    text_free(&b);
    assert_false(b.oom);
}

static bool host_ok(const char *s)
{
    return text_hostname_check(s, strlen(s)) == NULL;
}

static void test_hostname(void **state)
{
    char long_label[70], long_name[260];

    assert_true(host_ok("example.com"));
    assert_true(host_ok("Mail-1.Example.COM"));
    assert_true(host_ok("localhost"));
    assert_true(host_ok("a"));
    assert_true(host_ok("1.2.3"));
    assert_false(host_ok(""));
    assert_false(host_ok("."));
    assert_false(host_ok("a..b"));
    assert_false(host_ok(".a"));
    assert_false(host_ok("a."));        /* no root dot */
    assert_false(host_ok("-a.b"));
    assert_false(host_ok("a-.b"));
    assert_false(host_ok("a.b-"));
    assert_false(host_ok("a_b.c"));     /* underscore: not a host name */
    assert_false(host_ok("a b"));
    assert_false(host_ok("b\xc3\xbc" "cher.test"));
    /* Only len bytes count: a NUL or anything after them is not looked at. */
    assert_null(text_hostname_check("ab\0", 2));
    assert_non_null(text_hostname_check("a\0b", 3));
    assert_null(text_hostname_check("a.b-", 3));

    memset(long_label, 'x', 63);
    long_label[63] = '\0';
    assert_true(host_ok(long_label));
    long_label[63] = 'x';
    long_label[64] = '\0';
    assert_string_equal(text_hostname_check(long_label, 64),
                        "has a label longer than 63 characters");
    for (size_t i = 0; i < 253; i++)
        long_name[i] = i % 2 ? '.' : 'a';
    long_name[253] = '\0';
    assert_true(host_ok(long_name));            /* 253 octets: the most */
    long_name[253] = 'a';
    long_name[254] = '\0';
    assert_string_equal(text_hostname_check(long_name, 254), "must be 1 to 253 characters");

    assert_string_equal(text_hostname_check("a..b", 4),
                        "has an empty label (leading, trailing or double dot)");
    assert_string_equal(text_hostname_check("-a", 2), "has a label starting with '-'");
    assert_string_equal(text_hostname_check("a-.b", 4), "has a label ending with '-'");
    assert_string_equal(text_hostname_check("a_b", 3),
                        "may hold only letters, digits, hyphens and dots");
}

static void hp_ok(const char *s, const char *host, bool bracketed, unsigned port)
{
    const char *h;
    size_t hl;
    bool b;
    unsigned p;

    assert_int_equal(text_host_port(s, &h, &hl, &b, &p), 0);
    assert_int_equal(hl, strlen(host));
    assert_memory_equal(h, host, hl);
    assert_int_equal(b, bracketed);
    assert_int_equal(p, port);
}

static void test_host_port(void **state)
{
    const char *h;
    size_t hl;
    bool b;
    unsigned p;

    hp_ok("127.0.0.1:25", "127.0.0.1", false, 25);
    hp_ok("mail.example.com:587", "mail.example.com", false, 587);
    hp_ok("[::1]:2525", "::1", true, 2525);
    hp_ok(":25", "", false, 25);            /* empty host: the caller decides */
    hp_ok("[]:25", "", true, 25);
    hp_ok("h:0", "h", false, 0);
    hp_ok("h:65535", "h", false, 65535);
    hp_ok("h:00025", "h", false, 25);
    static const char *const bad[] = {
        "h", "h:", "h:65536", "h:000025", "h:2x", "h:+25", "h: 25", "::1:25", "[::1]25",
        "[::1:25", "[::1]", "a:b:25",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(text_host_port(bad[i], &h, &hl, &b, &p), -1);
}

static void test_read_file(void **state)
{
    char dir[] = "/tmp/test_text.XXXXXX", path[64];
    struct text_buf b = {0};
    struct stat st;

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/f", dir);

    /* Missing. */
    assert_int_equal(text_read_file(path, 100, &b, NULL), -ENOENT);
    text_free(&b);

    /* Empty: a valid empty string. */
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(text_read_file(path, 100, &b, &st), 0);
    assert_non_null(b.p);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.p, "");
    assert_true(S_ISREG(st.st_mode));
    text_free(&b);

    /* Larger than the first chunk, appended after what b holds; exactly
     * max bytes pass, one more does not. */
    size_t n = 200000;
    f = fopen(path, "w");
    for (size_t i = 0; i < n; i++)
        fputc('a' + (int)(i % 26), f);
    fclose(f);
    assert_int_equal(text_add_str(&b, "head:"), 0);
    assert_int_equal(text_read_file(path, n, &b, NULL), 0);
    assert_int_equal(b.len, 5 + n);
    assert_memory_equal(b.p, "head:abc", 8);
    assert_int_equal(b.p[b.len - 1], 'a' + (int)((n - 1) % 26));
    assert_int_equal(b.p[b.len], '\0');
    text_free(&b);
    assert_int_equal(text_read_file(path, n - 1, &b, NULL), -EFBIG);
    text_free(&b);

    /* A directory opens but does not read. */
    assert_int_equal(text_read_file(dir, 100, &b, NULL), -EISDIR);
    text_free(&b);

    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seterr),
        cmocka_unit_test(test_buf),
        cmocka_unit_test(test_hostname),
        cmocka_unit_test(test_host_port),
        cmocka_unit_test(test_read_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
