/* SPDX-License-Identifier: MIT */
/*
 * test_smtp_body.c - unit tests of delivery/smtp_body.c: un-stuffing on the
 * fly gives the reference message whatever the run and chunk sizes, chunk
 * sizes counted ahead match what the runs produce, runs point into the
 * caller's bytes, DATA mode passes the stored form through.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "delivery/smtp_body.h"

static const char prefix[] = "X-A: 1\r\n";
/* A stored wire form full of stuffed lines, ending with a lone stuffing
 * dot (a broken tail: the cursor must not trip on it). */
static const char data[] = ".\r\n..\r\n.x\r\nplain\r\n\r\n...\r\n. \r\nend.\r\n.";

/* The reference: the first '.' of every line dropped, prefix and data as
 * one stream. */
static size_t reference(char *out)
{
    size_t n = 0, total = sizeof prefix - 1 + sizeof data - 1;
    bool bol = true;

    for (size_t i = 0; i < total; i++) {
        char ch = i < sizeof prefix - 1 ? prefix[i] : data[i - (sizeof prefix - 1)];
        if (!(bol && ch == '.'))
            out[n++] = ch;
        bol = ch == '\n';
    }
    return n;
}

static void test_unstuff_every_cut(void **state)
{
    char ref[256], out[256];
    size_t rlen = reference(ref);

    for (size_t max = 1; max <= 40; max++) {
        for (uint64_t chunk = 1; chunk <= 40; chunk++) {
            struct smtp_body b;
            size_t olen = 0;
            int guard = 0;

            smtp_body_init(&b, prefix, sizeof prefix - 1, data, sizeof data - 1, true);
            while (olen < rlen && guard++ < 1000) {
                bool last;
                uint64_t want = smtp_body_count(&b, chunk, &last), got = 0;
                const char *p;
                size_t off, n;

                while (got < want &&
                       (n = smtp_body_run(&b, (size_t)(want - got < max ? want - got : max), &p,
                                          &off)) > 0) {
                    assert_true(olen + n <= sizeof out);
                    memcpy(out + olen, p, n);
                    if (off != SIZE_MAX)
                        assert_ptr_equal(p, data + off); /* a pointer into the caller's bytes */
                    else
                        assert_true(p >= prefix && p + n <= prefix + sizeof prefix - 1);
                    smtp_body_advance(&b, p, n);
                    olen += n;
                    got += n;
                }
                assert_int_equal(got, want);
                assert_int_equal(last, olen == rlen);
            }
            assert_int_equal(olen, rlen);
            assert_memory_equal(out, ref, rlen);
        }
    }
}

/* DATA mode: the stored bytes as they are, runs never crossing the seam. */
static void test_data_mode(void **state)
{
    struct smtp_body b;
    char out[256];
    size_t olen = 0, n, off;
    const char *p;

    smtp_body_init(&b, prefix, sizeof prefix - 1, data, sizeof data - 1, false);
    while ((n = smtp_body_run(&b, 5, &p, &off)) > 0) {
        assert_true(n <= 5);
        assert_true(off == SIZE_MAX ? p + n <= prefix + sizeof prefix - 1
                                    : p + n <= data + sizeof data - 1);
        memcpy(out + olen, p, n);
        smtp_body_advance(&b, p, n);
        olen += n;
    }
    assert_int_equal(olen, sizeof prefix - 1 + sizeof data - 1);
    assert_memory_equal(out, prefix, sizeof prefix - 1);
    assert_memory_equal(out + sizeof prefix - 1, data, sizeof data - 1);
    assert_false(smtp_body_ends_line(&b));
}

/* A body without leading dots is one run per part; an empty one has none;
 * max 0 gives nothing. */
static void test_runs_and_edges(void **state)
{
    static const char plain[] = "Subject: x\r\n\r\nhello\r\nworld\r\n";
    struct smtp_body b;
    const char *p;
    size_t off;
    bool last;

    smtp_body_init(&b, NULL, 0, plain, sizeof plain - 1, true);
    assert_int_equal(smtp_body_run(&b, 0, &p, &off), 0);
    assert_int_equal(smtp_body_count(&b, 1000, &last), sizeof plain - 1);
    assert_true(last);
    assert_int_equal(smtp_body_count(&b, 10, &last), 10);
    assert_false(last);
    assert_int_equal(smtp_body_run(&b, SIZE_MAX, &p, &off), sizeof plain - 1);
    assert_ptr_equal(p, plain);
    assert_int_equal(off, 0);
    smtp_body_advance(&b, p, sizeof plain - 1);
    assert_int_equal(smtp_body_run(&b, SIZE_MAX, &p, &off), 0);
    assert_true(smtp_body_ends_line(&b));

    smtp_body_init(&b, NULL, 0, NULL, 0, true);
    assert_int_equal(smtp_body_count(&b, 1000, &last), 0);
    assert_true(last);
    assert_int_equal(smtp_body_run(&b, 100, &p, &off), 0);
    assert_true(smtp_body_ends_line(&b));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unstuff_every_cut),
        cmocka_unit_test(test_data_mode),
        cmocka_unit_test(test_runs_and_edges),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
