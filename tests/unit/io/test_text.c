/* SPDX-License-Identifier: MIT */
/*
 * test_text.c - unit tests for io/text.c, the text helpers every layer
 * shares: error messages formatted into a caller's buffer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seterr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
