/* SPDX-License-Identifier: MIT */
/*
 * test_canon.c - dkim/canon.c: the dot-unstuffing feeder at every chunk
 * split, and the simple and relaxed canonicalizations (RFC 6376 3.4.1-
 * 3.4.4) against hand-made vectors, fed whole, in 1-byte chunks and split
 * at every point.
 * Buffers are malloc'ed to their exact length so ASan sees any overread.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dkim/canon.h"

/* A byte sink collecting into a buffer. */
struct sink {
    char buf[1 << 17];
    size_t len;
    size_t calls;
};

static void sink_add(void *arg, const char *data, size_t len)
{
    struct sink *s = arg;
    assert_true(len > 0);
    assert_true(s->len + len <= sizeof(s->buf));
    memcpy(s->buf + s->len, data, len);
    s->len += len;
    s->calls++;
}

/* Exact-size heap copy, so ASan catches reads past the chunk. */
static char *dup_exact(const char *p, size_t n)
{
    char *d = malloc(n ? n : 1);
    assert_non_null(d);
    memcpy(d, p, n);
    return d;
}

/* ---- unstuffing ---- */

static void unstuff_in_chunks(const char *in, size_t len, const size_t *cuts, size_t ncuts,
                              struct sink *out)
{
    struct dkim_unstuff u;
    size_t prev = 0;

    dkim_unstuff_init(&u);
    out->len = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        char *chunk = dup_exact(in + prev, end - prev);
        dkim_unstuff_feed(&u, chunk, end - prev, sink_add, out);
        free(chunk);
        prev = end;
    }
}

static void check_unstuff(const char *stuffed, const char *want)
{
    size_t len = strlen(stuffed), wlen = strlen(want);
    static struct sink out;

    /* Whole, every 2-chunk split, every 3-chunk split, 1-byte chunks. */
    unstuff_in_chunks(stuffed, len, NULL, 0, &out);
    assert_int_equal(out.len, wlen);
    assert_memory_equal(out.buf, want, wlen);
    for (size_t a = 0; a <= len; a++) {
        size_t cuts[1] = {a};
        unstuff_in_chunks(stuffed, len, cuts, 1, &out);
        assert_int_equal(out.len, wlen);
        assert_memory_equal(out.buf, want, wlen);
        for (size_t b = a; b <= len; b++) {
            size_t cuts2[2] = {a, b};
            unstuff_in_chunks(stuffed, len, cuts2, 2, &out);
            assert_int_equal(out.len, wlen);
            assert_memory_equal(out.buf, want, wlen);
        }
    }
    size_t *ones = calloc(len + 1, sizeof(*ones));
    for (size_t i = 0; i < len; i++)
        ones[i] = i;
    unstuff_in_chunks(stuffed, len, ones, len, &out);
    free(ones);
    assert_int_equal(out.len, wlen);
    assert_memory_equal(out.buf, want, wlen);

    /* The in-place copy variant. */
    char *copy = dup_exact(stuffed, len);
    struct dkim_unstuff u;
    dkim_unstuff_init(&u);
    size_t n = dkim_unstuff_copy(&u, copy, len, copy);
    assert_int_equal(n, wlen);
    assert_memory_equal(copy, want, wlen);
    free(copy);
}

static void test_unstuff(void **state)
{
    check_unstuff("", "");
    check_unstuff("abc\r\n", "abc\r\n");
    check_unstuff("..\r\n", ".\r\n");
    check_unstuff("...\r\n", "..\r\n");
    check_unstuff("..a\r\n..\r\n...\r\nb.c\r\n", ".a\r\n.\r\n..\r\nb.c\r\n");
    check_unstuff("From: a\r\n\r\n..hidden\r\nx..y\r\n....\r\n", "From: a\r\n\r\n.hidden\r\nx..y\r\n...\r\n");
    check_unstuff("a\r\n..\r\n..\r\n..\r\n", "a\r\n.\r\n.\r\n.\r\n");
    /* A dot after a bare LF also starts a line (the BDAT stuffer's rule). */
    check_unstuff("a\n..b\r\n", "a\n.b\r\n");
    /* A dot not at a line start is kept. */
    check_unstuff("a.\r\n.b.\r\n", "a.\r\nb.\r\n");
}

/* ---- header ---- */

static void check_header(const char *field, bool crlf, const char *want)
{
    size_t len = strlen(field);
    char *in = dup_exact(field, len);
    char *out = malloc(len + 2);
    size_t n = dkim_canon_header(in, len, crlf, out);
    assert_int_equal(n, strlen(want));
    assert_memory_equal(out, want, n);
    free(in);
    free(out);
}

static void test_header(void **state)
{
    /* RFC 6376 3.4.5's example. */
    check_header("A: X\r\n", true, "a:X\r\n");
    check_header("B : Y\t\r\n\tZ  \r\n", true, "b:Y Z\r\n");
    check_header("Subject: a  b \t c\r\n", true, "subject:a b c\r\n");
    check_header("SUBJECT:   leading\r\n", true, "subject:leading\r\n");
    check_header("Subject:\r\n", true, "subject:\r\n");
    check_header("Subject: \t \r\n \r\n", true, "subject:\r\n");
    check_header("To: a@b,\r\n  c@d\r\n", true, "to:a@b, c@d\r\n");
    check_header("X-Mixed-Case: Value With CAPS\r\n", true, "x-mixed-case:Value With CAPS\r\n");
    check_header("DKIM-Signature: v=1;\r\n\tb=", false, "dkim-signature:v=1; b=");
    check_header("Subject: no crlf", true, "subject:no crlf\r\n");
    /* 8-bit bytes pass through. */
    check_header("Subject: caf\xc3\xa9  ok\r\n", true, "subject:caf\xc3\xa9 ok\r\n");
}

static void check_header_simple(const char *field, bool crlf, const char *want)
{
    size_t len = strlen(field);
    char *in = dup_exact(field, len);
    char *out = malloc(len + 2);
    size_t n = dkim_canon_header_as(DKIM_C14N_SIMPLE, in, len, crlf, out);
    assert_int_equal(n, strlen(want));
    assert_memory_equal(out, want, n);
    /* relaxed through the same entry point */
    n = dkim_canon_header_as(DKIM_C14N_RELAXED, in, len, crlf, out);
    char *r = malloc(len + 2);
    assert_int_equal(n, dkim_canon_header(in, len, crlf, r));
    assert_memory_equal(out, r, n);
    free(r);
    free(in);
    free(out);
}

static void test_header_simple(void **state)
{
    /* RFC 6376 3.4.5's example: nothing changes. */
    check_header_simple("A: X\r\n", true, "A: X\r\n");
    check_header_simple("B : Y\t\r\n\tZ  \r\n", true, "B : Y\t\r\n\tZ  \r\n");
    /* Without the final CRLF (the signature field itself), and a field
     * that had none gets one. */
    check_header_simple("DKIM-Signature: v=1;\r\n\tb=\r\n", false,
                        "DKIM-Signature: v=1;\r\n\tb=");
    check_header_simple("Subject: last", true, "Subject: last\r\n");
    check_header_simple("Subject: last", false, "Subject: last");
}

/* ---- body ---- */

static struct sink body_out;
static enum dkim_canon body_mode = DKIM_C14N_RELAXED;

/* Canonicalize in chunks ending at cuts[] and compare. */
static void body_in_chunks(const char *in, size_t len, const size_t *cuts, size_t ncuts,
                           const char *want, size_t wlen)
{
    struct dkim_body_canon b;
    size_t prev = 0;

    body_out.len = 0;
    if (body_mode == DKIM_C14N_RELAXED)
        dkim_body_canon_init(&b, sink_add, &body_out);
    else
        dkim_body_canon_init_as(&b, body_mode, sink_add, &body_out);
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        char *chunk = dup_exact(in + prev, end - prev);
        dkim_body_canon_feed(&b, chunk, end - prev);
        free(chunk);
        prev = end;
    }
    uint64_t total = dkim_body_canon_end(&b);
    assert_int_equal(total, wlen);
    assert_int_equal(body_out.len, wlen);
    assert_memory_equal(body_out.buf, want, wlen);
}

static void check_body(const char *in, const char *want)
{
    size_t len = strlen(in), wlen = strlen(want);

    body_in_chunks(in, len, NULL, 0, want, wlen);
    for (size_t a = 0; a <= len; a++) {
        size_t cuts[1] = {a};
        body_in_chunks(in, len, cuts, 1, want, wlen);
    }
    size_t *ones = calloc(len + 1, sizeof(*ones));
    for (size_t i = 0; i < len; i++)
        ones[i] = i;
    body_in_chunks(in, len, ones, len, want, wlen);
    free(ones);
}

static void test_body_vectors(void **state)
{
    /* Empty body: nothing (RFC 6376 3.4.4, relaxed). */
    check_body("", "");
    check_body("\r\n", "");
    check_body("\r\n\r\n\r\n", "");
    check_body("  \r\n\t\r\n", "");
    /* RFC 6376 3.4.6's example. */
    check_body(" C \r\nD \t E\r\n\r\n\r\n", " C\r\nD E\r\n");
    /* Whitespace runs, leading WSP kept as one SP, trailing dropped. */
    check_body("a  b\t\tc \t \r\n", "a b c\r\n");
    check_body("\t\tindented\r\n", " indented\r\n");
    /* Inner empty lines are kept, trailing ones dropped. */
    check_body("a\r\n\r\n\r\nb\r\n\r\n", "a\r\n\r\n\r\nb\r\n");
    check_body("a\r\n \r\nb\r\n", "a\r\n\r\nb\r\n");
    /* No CRLF at the end: one is added. */
    check_body("abc", "abc\r\n");
    check_body("abc   ", "abc\r\n");
    check_body("a\r\n\r\nlast", "a\r\n\r\nlast\r\n");
    /* A body of only dots (already unstuffed). */
    check_body(".\r\n..\r\n...\r\n", ".\r\n..\r\n...\r\n");
    /* Bare CR and bare LF are ordinary bytes. */
    check_body("a\rb\r\n", "a\rb\r\n");
    check_body("a\nb\r\n", "a\nb\r\n");
    check_body("a \r\r\n", "a \r\r\n");
    check_body("end\r", "end\r\r\n");
    /* 8-bit bytes pass through. */
    check_body("caf\xc3\xa9 \xff\r\n", "caf\xc3\xa9 \xff\r\n");
}

static void test_body_simple(void **state)
{
    body_mode = DKIM_C14N_SIMPLE;
    /* RFC 6376 3.4.3: an empty body is one CRLF. */
    check_body("", "\r\n");
    check_body("\r\n", "\r\n");
    check_body("\r\n\r\n\r\n", "\r\n");
    /* RFC 6376 3.4.6's example. */
    check_body(" C \r\nD \t E\r\n\r\n\r\n", " C \r\nD \t E\r\n");
    /* WSP is kept, lines of only WSP are not empty lines. */
    check_body("a  b\t\tc \t \r\n", "a  b\t\tc \t \r\n");
    check_body("  \r\n\t\r\n", "  \r\n\t\r\n");
    check_body("a\r\n \r\n\r\n", "a\r\n \r\n");
    /* Inner empty lines kept, trailing ones dropped. */
    check_body("a\r\n\r\n\r\nb\r\n\r\n", "a\r\n\r\n\r\nb\r\n");
    /* No CRLF at the end: one is added. */
    check_body("abc", "abc\r\n");
    check_body("abc   ", "abc   \r\n");
    check_body("a\r\n\r\nlast", "a\r\n\r\nlast\r\n");
    /* Dots, bare CR / LF, 8-bit. */
    check_body(".\r\n..\r\n", ".\r\n..\r\n");
    check_body("a\rb\r\n", "a\rb\r\n");
    check_body("a\nb\r\n", "a\nb\r\n");
    check_body("end\r", "end\r\r\n");
    check_body("caf\xc3\xa9 \xff\r\n", "caf\xc3\xa9 \xff\r\n");
    body_mode = DKIM_C14N_RELAXED;
}

static void test_body_long(void **state)
{
    /* Lines longer than the staging buffer, runs of every length. */
    static char in[70000], want[70000];
    size_t i = 0, w = 0;
    for (int line = 0; line < 40; line++) {
        int n = 1 + line * 97 % 1500;
        for (int k = 0; k < n; k++) {
            in[i++] = (char)('a' + k % 26);
            want[w++] = (char)('a' + k % 26);
            if (k % 50 == 49) {
                for (int s = 0; s < 1 + k % 3; s++)
                    in[i++] = (s & 1) ? '\t' : ' ';
                if (k < n - 1)
                    want[w++] = ' ';
            }
        }
        in[i++] = ' ';
        in[i++] = '\r';
        in[i++] = '\n';
        want[w++] = '\r';
        want[w++] = '\n';
    }
    in[i] = want[w] = '\0';
    /* Whole and in 1-byte chunks (every split is too slow at this size). */
    body_in_chunks(in, i, NULL, 0, want, w);
    size_t *ones = calloc(i + 1, sizeof(*ones));
    for (size_t k = 0; k < i; k++)
        ones[k] = k;
    body_in_chunks(in, i, ones, i, want, w);
    /* Chunks of 7 bytes. */
    size_t n7 = 0;
    for (size_t k = 7; k < i; k += 7)
        ones[n7++] = k;
    body_in_chunks(in, i, ones, n7, want, w);
    free(ones);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unstuff),
        cmocka_unit_test(test_header),
        cmocka_unit_test(test_header_simple),
        cmocka_unit_test(test_body_vectors),
        cmocka_unit_test(test_body_simple),
        cmocka_unit_test(test_body_long),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
