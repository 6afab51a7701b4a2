/* SPDX-License-Identifier: MIT */
/*
 * test_smtp_reply.c - unit tests of delivery/smtp_reply.c: replies fed whole,
 * at every split point and byte by byte give the same results; several
 * replies in one read; enhanced status codes; every bound and malformed
 * line; EHLO keywords.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "delivery/smtp_reply.h"

/* What a stream of bytes parsed into: up to 8 replies or an error. */
struct parsed {
    int n;
    int codes[8];
    char enhanced[8][12];
    char text[8][SMTP_REPLY_TEXT_MAX + 1];
    unsigned nlines[8];
    size_t ends[8]; /* stream offset just past each reply */
    int err;        /* first error, or 0 */
    size_t rest;    /* bytes after the last reply (an incomplete one) */
};

/* Parse buf fed in pieces: cuts[] are the piece boundaries (ascending). */
static void parse_pieces(const char *buf, size_t len, const size_t *cuts, size_t ncuts,
                         struct parsed *out)
{
    static struct smtp_reply_parser p;
    size_t start = 0, last_end = 0;

    memset(out, 0, sizeof *out);
    smtp_reply_parser_init(&p);
    for (size_t c = 0; c <= ncuts; c++) {
        size_t end = c < ncuts ? cuts[c] : len, pos = start;
        while (pos < end) {
            size_t used = 0;
            int rc = smtp_reply_parse(&p, buf + pos, end - pos, &used);
            if (rc < 0) {
                out->err = rc;
                return;
            }
            assert_true(used <= end - pos);
            pos += used;
            if (rc == SMTP_R_DONE) {
                assert_true(out->n < 8);
                out->codes[out->n] = p.reply.code;
                strcpy(out->enhanced[out->n], p.reply.enhanced);
                strcpy(out->text[out->n], p.reply.text);
                assert_int_equal(strlen(p.reply.text), p.reply.text_len);
                out->nlines[out->n] = p.reply.nlines;
                out->ends[out->n] = pos;
                last_end = pos;
                out->n++;
            } else {
                assert_int_equal(rc, SMTP_R_AGAIN);
                assert_int_equal(pos, end);
            }
        }
        start = end;
    }
    out->rest = len - last_end;
}

static void parse_whole(const char *buf, size_t len, struct parsed *out)
{
    parse_pieces(buf, len, NULL, 0, out);
}

static void assert_same(const struct parsed *a, const struct parsed *b)
{
    assert_int_equal(a->n, b->n);
    assert_int_equal(a->err, b->err);
    assert_int_equal(a->rest, b->rest);
    for (int i = 0; i < a->n; i++) {
        assert_int_equal(a->codes[i], b->codes[i]);
        assert_string_equal(a->enhanced[i], b->enhanced[i]);
        assert_string_equal(a->text[i], b->text[i]);
        assert_int_equal(a->nlines[i], b->nlines[i]);
        assert_int_equal(a->ends[i], b->ends[i]);
    }
}

/* Whole, split at every point into two, in three at every pair of points
 * (short inputs), and byte by byte: all alike. */
static void check_all_splits(const char *buf, struct parsed *whole)
{
    size_t len = strlen(buf);
    static struct parsed got;
    size_t cuts[2];

    parse_whole(buf, len, whole);
    for (size_t k = 0; k <= len; k++) {
        cuts[0] = k;
        parse_pieces(buf, len, cuts, 1, &got);
        assert_same(whole, &got);
    }
    if (len <= 120) {
        for (size_t a = 0; a <= len; a++) {
            for (size_t b = a; b <= len; b++) {
                cuts[0] = a;
                cuts[1] = b;
                parse_pieces(buf, len, cuts, 2, &got);
                assert_same(whole, &got);
            }
        }
    }
    {
        size_t *all = malloc(len * sizeof *all);
        for (size_t i = 0; i < len; i++)
            all[i] = i + 1;
        parse_pieces(buf, len, all, len, &got);
        assert_same(whole, &got);
        free(all);
    }
}

static void test_single_line(void **state)
{
    static struct parsed r;

    check_all_splits("220 mx.example.test ESMTP ready\r\n", &r);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.codes[0], 220);
    assert_string_equal(r.text[0], "mx.example.test ESMTP ready");
    assert_int_equal(r.nlines[0], 1);
    assert_int_equal(r.ends[0], 33);
    assert_int_equal(r.rest, 0);
    assert_string_equal(r.enhanced[0], "");

    check_all_splits("354\r\n", &r); /* code alone */
    assert_int_equal(r.codes[0], 354);
    assert_string_equal(r.text[0], "");
    check_all_splits("250 \r\n", &r);
    assert_string_equal(r.text[0], "");
}

static void test_multi_line(void **state)
{
    static struct parsed r;
    static const char ehlo[] = "250-mx.example.test Hello\r\n"
                               "250-PIPELINING\r\n"
                               "250-SIZE 10240000\r\n"
                               "250-8BITMIME\r\n"
                               "250 CHUNKING\r\n";

    check_all_splits(ehlo, &r);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.codes[0], 250);
    assert_int_equal(r.nlines[0], 5);
    assert_string_equal(r.text[0], "mx.example.test Hello\nPIPELINING\nSIZE 10240000\n"
                                   "8BITMIME\nCHUNKING");
    assert_int_equal(r.ends[0], sizeof(ehlo) - 1);
}

/* Pipelined replies arrive in one read: each reply ends where it ends, and
 * an incomplete one waits. */
static void test_several_replies(void **state)
{
    static struct parsed r;

    check_all_splits("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550-5.1.1 No such\r\n550 5.1.1 user\r\n"
                     "354 End data with <CR><LF>.<CR><LF>\r\n421 4.4.2 ti",
                     &r);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.n, 4);
    assert_int_equal(r.codes[0], 250);
    assert_string_equal(r.enhanced[0], "2.1.0");
    assert_int_equal(r.ends[0], 14);
    assert_int_equal(r.codes[1], 250);
    assert_string_equal(r.enhanced[1], "2.1.5");
    assert_int_equal(r.codes[2], 550);
    assert_string_equal(r.enhanced[2], "5.1.1");
    assert_string_equal(r.text[2], "5.1.1 No such\n5.1.1 user");
    assert_int_equal(r.codes[3], 354);
    assert_int_equal(r.rest, strlen("421 4.4.2 ti"));
}

static void test_enhanced(void **state)
{
    static const struct {
        const char *in;
        const char *want;
    } cases[] = {
        {"550 5.1.1 User unknown\r\n", "5.1.1"},
        {"250 2.0.0\r\n", "2.0.0"},
        {"452 4.5.3 Too many recipients\r\n", "4.5.3"},
        {"550 5.123.456 x\r\n", "5.123.456"},
        {"550 4.1.1 class disagrees\r\n", ""},
        {"250 2.0.0x\r\n", ""},
        {"550 5.1234.1 too long\r\n", ""},
        {"550 5..1 x\r\n", ""},
        {"550 5.1. x\r\n", ""},
        {"550 5.1\r\n", ""},
        {"550 3.1.1 x\r\n", ""},
        {"550 User unknown\r\n", ""},
        {"550-User\r\n550 5.1.1 only on the second line\r\n", ""},
    };
    static struct parsed r;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        parse_whole(cases[i].in, strlen(cases[i].in), &r);
        assert_int_equal(r.n, 1);
        if (strcmp(r.enhanced[0], cases[i].want) != 0)
            fail_msg("%s: got \"%s\"", cases[i].in, r.enhanced[0]);
    }
}

/* The last line's code is the reply's (Postfix reads replies this way). */
static void test_mixed_codes(void **state)
{
    static struct parsed r;

    check_all_splits("250-first\r\n251 second\r\n", &r);
    assert_int_equal(r.codes[0], 251);
    assert_int_equal(r.nlines[0], 2);
}

static void test_bare_lf_and_controls(void **state)
{
    static struct parsed r;

    check_all_splits("250-a\n250 b\r\n", &r);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.text[0], "a\nb");
    /* A CR inside a line and other control bytes are kept as '?'. */
    parse_whole("250 x\ry\x01z\tw\x7f\r\n", 14, &r);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.text[0], "x?y?z\tw?");
    {
        static const char nul[] = "250 a\0b\r\n";
        parse_whole(nul, sizeof(nul) - 1, &r);
        assert_string_equal(r.text[0], "a?b");
    }
}

static void test_malformed(void **state)
{
    static const char *const bad[] = {
        "25\r\n", "25O ok\r\n", "250x\r\n", "150 info\r\n", "650 x\r\n", "\r\n", "hello\r\n",
        "250-ok\r\n25 x\r\n", " 250 ok\r\n", "2a0 x\r\n",
    };
    static struct parsed r, g;

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t len = strlen(bad[i]);
        parse_whole(bad[i], len, &r);
        if (r.err != SMTP_R_ESYNTAX)
            fail_msg("\"%s\": %d", bad[i], r.err);
        for (size_t k = 0; k <= len; k++) {
            parse_pieces(bad[i], len, &k, 1, &g);
            assert_int_equal(g.err, SMTP_R_ESYNTAX);
        }
    }
}

static void test_bounds(void **state)
{
    static char buf[SMTP_REPLY_LINE_MAX * 2 + SMTP_REPLY_LINES_MAX * 16];
    static struct parsed r;
    size_t n;

    /* The longest line accepted: SMTP_REPLY_LINE_MAX bytes with CRLF. */
    memcpy(buf, "250 ", 4);
    memset(buf + 4, 'x', SMTP_REPLY_LINE_MAX - 6);
    memcpy(buf + SMTP_REPLY_LINE_MAX - 2, "\r\n", 3);
    check_all_splits(buf, &r);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.codes[0], 250);
    /* One more byte is refused, wherever the line was cut, even without
     * its end having arrived. */
    memcpy(buf, "250 ", 4);
    memset(buf + 4, 'x', SMTP_REPLY_LINE_MAX - 5);
    memcpy(buf + SMTP_REPLY_LINE_MAX - 1, "\r\n", 3);
    check_all_splits(buf, &r);
    assert_int_equal(r.err, SMTP_R_ETOOLONG);
    buf[SMTP_REPLY_LINE_MAX] = '\0';
    parse_whole(buf, SMTP_REPLY_LINE_MAX - 1, &r);
    assert_int_equal(r.err, 0); /* 2047 bytes may still end with CRLF... */
    parse_whole(buf, SMTP_REPLY_LINE_MAX, &r);
    assert_int_equal(r.err, SMTP_R_ETOOLONG); /* ...2048 without LF cannot */

    /* Lines per reply. */
    n = 0;
    for (int i = 0; i < SMTP_REPLY_LINES_MAX - 1; i++)
        n += (size_t)sprintf(buf + n, "250-l%d\r\n", i);
    n += (size_t)sprintf(buf + n, "250 last\r\n");
    parse_whole(buf, n, &r);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.nlines[0], SMTP_REPLY_LINES_MAX);
    n = 0;
    for (int i = 0; i < SMTP_REPLY_LINES_MAX; i++)
        n += (size_t)sprintf(buf + n, "250-l%d\r\n", i);
    n += (size_t)sprintf(buf + n, "250 last\r\n");
    parse_whole(buf, n, &r);
    assert_int_equal(r.err, SMTP_R_ETOOMANY);
}

/* Long replies keep their first SMTP_REPLY_TEXT_MAX bytes of text. */
static void test_truncated_text(void **state)
{
    static struct smtp_reply_parser p;
    static char buf[8 * 1100];
    size_t n = 0, used;

    for (int i = 0; i < 7; i++) {
        n += (size_t)sprintf(buf + n, "250-");
        memset(buf + n, 'a' + i, 1000);
        n += 1000;
        n += (size_t)sprintf(buf + n, "\r\n");
    }
    n += (size_t)sprintf(buf + n, "250 end\r\n");
    smtp_reply_parser_init(&p);
    assert_int_equal(smtp_reply_parse(&p, buf, n, &used), SMTP_R_DONE);
    assert_int_equal(used, n);
    assert_true(p.reply.truncated);
    assert_int_equal(p.reply.text_len, SMTP_REPLY_TEXT_MAX);
    assert_int_equal(strlen(p.reply.text), SMTP_REPLY_TEXT_MAX);
    assert_int_equal(p.reply.nlines, 8);
}

static void ehlo_of(const char *text, struct smtp_ehlo *e)
{
    static struct smtp_reply_parser p;
    size_t used;

    smtp_reply_parser_init(&p);
    assert_int_equal(smtp_reply_parse(&p, text, strlen(text), &used), SMTP_R_DONE);
    smtp_ehlo_parse(&p.reply, e);
}

static void test_ehlo(void **state)
{
    struct smtp_ehlo e;

    ehlo_of("250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 35882577\r\n250-8BITMIME\r\n"
            "250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n250-SMTPUTF8\r\n"
            "250-AUTH LOGIN PLAIN XOAUTH2\r\n250 CHUNKING\r\n",
            &e);
    assert_int_equal(e.ext, SMTP_EXT_PIPELINING | SMTP_EXT_SIZE | SMTP_EXT_8BITMIME |
                                SMTP_EXT_STARTTLS | SMTP_EXT_ENHANCED | SMTP_EXT_DSN |
                                SMTP_EXT_SMTPUTF8 | SMTP_EXT_AUTH | SMTP_EXT_CHUNKING);
    assert_int_equal(e.size, 35882577);
    assert_int_equal(e.auth, SMTP_AUTH_PLAIN | SMTP_AUTH_LOGIN);

    /* Case, the old AUTH= form, SIZE without a limit. */
    ehlo_of("250-x\r\n250-pipelining\r\n250-Size\r\n250 AUTH=PLAIN\r\n", &e);
    assert_int_equal(e.ext, SMTP_EXT_PIPELINING | SMTP_EXT_SIZE | SMTP_EXT_AUTH);
    assert_int_equal(e.size, 0);
    assert_int_equal(e.auth, SMTP_AUTH_PLAIN);

    /* Near misses are not keywords; the first line (the greeting) is not
     * read; junk after SIZE gives no limit. */
    ehlo_of("250-PIPELINING\r\n250-PIPELININGX\r\n250-STARTTLS now\r\n250-SIZE 12x\r\n"
            "250-XCHUNKING\r\n250 AUTH GSSAPI\r\n",
            &e);
    assert_int_equal(e.ext, SMTP_EXT_SIZE | SMTP_EXT_AUTH);
    assert_int_equal(e.size, 0);
    assert_int_equal(e.auth, 0);

    /* A plain 250 (HELO-like): nothing. */
    ehlo_of("250 mx.example.test\r\n", &e);
    assert_int_equal(e.ext, 0);
    /* SIZE beyond 64 bits: no limit rather than a wrapped one. */
    ehlo_of("250-x\r\n250 SIZE 99999999999999999999999\r\n", &e);
    assert_int_equal(e.size, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_line),  cmocka_unit_test(test_multi_line),
        cmocka_unit_test(test_several_replies), cmocka_unit_test(test_enhanced),
        cmocka_unit_test(test_mixed_codes),  cmocka_unit_test(test_bare_lf_and_controls),
        cmocka_unit_test(test_malformed),    cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_truncated_text), cmocka_unit_test(test_ehlo),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
