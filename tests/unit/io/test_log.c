/* SPDX-License-Identifier: MIT */
/*
 * test_log.c - the escaping of client-supplied values in log lines
 * (log_escape, log_q): what stays bare, what is quoted, what is escaped,
 * cutting, and the thread-local slots.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "io/log.h"

static void assert_esc(const char *in, size_t len, const char *want)
{
    char out[LOG_Q_MAX];
    size_t n = log_escape(out, sizeof(out), in, len);
    assert_string_equal(out, want);
    assert_int_equal(n, strlen(want));
}

static void test_bare(void **state)
{
    assert_esc("alice@example.test", 18, "alice@example.test");
    assert_esc("203.0.113.7", 11, "203.0.113.7");
    assert_esc("[IPv6:2001:db8::1]", 18, "[IPv6:2001:db8::1]");
    /* UTF-8 (SMTPUTF8 addresses) stays readable. */
    assert_esc("j\xc3\xb6rg@b\xc3\xbc" "cher.test", 18, "j\xc3\xb6rg@b\xc3\xbc" "cher.test");
}

static void test_quoted(void **state)
{
    assert_esc("", 0, "\"\"");
    assert_esc("a b", 3, "\"a b\"");
    assert_esc("a=b", 3, "\"a=b\"");
    assert_esc("say \"hi\"", 8, "\"say \\\"hi\\\"\"");
    assert_esc("back\\slash", 10, "\"back\\\\slash\"");
}

static void test_control(void **state)
{
    /* The forged-line attack of issue 8: one value, one line. */
    const char *u = "x\nlevel=info event=auth-failed user=root client=203.0.113.7\r\t\x01\x7f";
    assert_esc(u, strlen(u),
               "\"x\\nlevel=info event=auth-failed user=root client=203.0.113.7\\r\\t\\x01\\x7f\"");
    assert_esc("a\0b", 3, "\"a\\x00b\"");
    /* Invalid UTF-8, an overlong '/', a surrogate, and U+2028 / U+0085. */
    assert_esc("\xff", 1, "\"\\xff\"");
    assert_esc("\xc0\xaf", 2, "\"\\xc0\\xaf\"");
    assert_esc("\xed\xa0\x80", 3, "\"\\xed\\xa0\\x80\"");
    assert_esc("a\xe2\x80\xa8" "b", 5, "\"a\\xe2\\x80\\xa8b\"");
    assert_esc("\xc2\x85", 2, "\"\\xc2\\x85\"");
    /* A truncated sequence at the end. */
    assert_esc("ok\xc3", 3, "\"ok\\xc3\"");
}

static void test_cut(void **state)
{
    char big[3000];
    char out[64];
    memset(big, 'a', sizeof(big));
    big[5] = ' ';
    size_t n = log_escape(out, sizeof(out), big, sizeof(big));
    assert_true(n < sizeof(out));
    assert_int_equal(strlen(out), n);
    assert_int_equal(out[0], '"');
    assert_memory_equal(out + n - 4, "...\"", 4);
    /* Bare but too long: quoted and cut, never an unterminated value. */
    memset(big, 'b', sizeof(big));
    n = log_escape(out, sizeof(out), big, sizeof(big));
    assert_int_equal(out[0], '"');
    assert_memory_equal(out + n - 4, "...\"", 4);
    /* No escape sequence is split by the cut. */
    memset(big, '\n', sizeof(big));
    n = log_escape(out, sizeof(out), big, sizeof(big));
    assert_memory_equal(out + n - 4, "...\"", 4);
    assert_int_equal(out[n - 5], 'n');
}

static void test_slots(void **state)
{
    const char *p[LOG_Q_SLOTS];
    char want[16];
    for (int i = 0; i < LOG_Q_SLOTS; i++) {
        snprintf(want, sizeof(want), "v %d", i);
        p[i] = log_q(want);
    }
    for (int i = 0; i < LOG_Q_SLOTS; i++) {
        snprintf(want, sizeof(want), "\"v %d\"", i);
        assert_string_equal(p[i], want);
    }
    assert_string_equal(log_q(NULL), "-");
    assert_string_equal(log_qn("abc=", 3), "abc");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bare),    cmocka_unit_test(test_quoted),
        cmocka_unit_test(test_control), cmocka_unit_test(test_cut),
        cmocka_unit_test(test_slots),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
