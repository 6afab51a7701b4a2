/* SPDX-License-Identifier: MIT */
/*
 * test_smtp_parse.c - unit tests for core/smtp_parse.c: command lines at every
 * split point, overlong lines and skipping, bare LF/CR, verbs, MAIL/RCPT paths
 * and parameters, the mailbox grammar (dot-string, quoted string, domains,
 * address literals, UTF-8), BDAT arguments, the DATA terminator scanner
 * (every split point, smuggling sequences, line lengths) and the BDAT
 * dot-stuffer.  Includes the source to run against exactly this file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/smtp_parse.c"

#define S(lit) (lit), (sizeof(lit) - 1)

/* ---------------------------------------------------------------------- */
/* Lines                                                                   */

static void test_line_basic(void **state)
{
    size_t ll, used;

    assert_int_equal(smtp_line_next(S("NOOP\r\n"), 512, &ll, &used), SMTP_P_OK);
    assert_int_equal(ll, 4);
    assert_int_equal(used, 6);
    assert_int_equal(smtp_line_next(S("\r\n"), 512, &ll, &used), SMTP_P_OK);
    assert_int_equal(ll, 0);
    assert_int_equal(used, 2);
    assert_int_equal(smtp_line_next(S("NOOP\r"), 512, &ll, &used), SMTP_P_AGAIN);
    assert_int_equal(used, 0);
    assert_int_equal(smtp_line_next(S(""), 512, &ll, &used), SMTP_P_AGAIN);
    /* Two lines: only the first. */
    assert_int_equal(smtp_line_next(S("A\r\nB\r\n"), 512, &ll, &used), SMTP_P_OK);
    assert_int_equal(ll, 1);
    assert_int_equal(used, 3);
}

static void test_line_bare(void **state)
{
    size_t ll, used;

    assert_int_equal(smtp_line_next(S("NOOP\nQUIT\r\n"), 512, &ll, &used), SMTP_P_EBARELF);
    assert_int_equal(used, 5);
    assert_int_equal(smtp_line_next(S("\n"), 512, &ll, &used), SMTP_P_EBARELF);
    assert_int_equal(used, 1);
    /* Bare CR inside the line. */
    assert_int_equal(smtp_line_next(S("NO\rOP\r\n"), 512, &ll, &used), SMTP_P_EBARELF);
    assert_int_equal(used, 7);
    assert_int_equal(smtp_line_next(S("NOOP\r\r\n"), 512, &ll, &used), SMTP_P_EBARELF);
    assert_int_equal(used, 7);
    /* Bare CR with no LF yet: wait for the line end. */
    assert_int_equal(smtp_line_next(S("NO\rOP"), 512, &ll, &used), SMTP_P_AGAIN);
}

static void test_line_long(void **state)
{
    char buf[2048];
    size_t ll, used;

    /* Exactly max including CRLF: fine. */
    memset(buf, 'a', sizeof(buf));
    memcpy(buf + 510, "\r\n", 2);
    assert_int_equal(smtp_line_next(buf, 512, 512, &ll, &used), SMTP_P_OK);
    assert_int_equal(ll, 510);
    assert_int_equal(used, 512);
    /* One more: too long, max bytes dropped, then skip to the LF. */
    memset(buf, 'a', sizeof(buf));
    memcpy(buf + 511, "\r\nNOOP\r\n", 8);
    assert_int_equal(smtp_line_next(buf, 519, 512, &ll, &used), SMTP_P_ETOOLONG);
    assert_int_equal(used, 512);
    size_t sk;
    assert_int_equal(smtp_line_skip(buf + 512, 7, &sk), SMTP_P_OK);
    assert_int_equal(sk, 1);
    assert_int_equal(smtp_line_next(buf + 513, 6, 512, &ll, &used), SMTP_P_OK);
    assert_int_equal(ll, 4);
    /* Not enough bytes yet: wait. */
    assert_int_equal(smtp_line_next(buf, 511, 512, &ll, &used), SMTP_P_AGAIN);
    /* A long line arriving in pieces, skipped across reads. */
    memset(buf, 'x', sizeof(buf));
    assert_int_equal(smtp_line_next(buf, 600, 512, &ll, &used), SMTP_P_ETOOLONG);
    assert_int_equal(used, 512);
    assert_int_equal(smtp_line_skip(buf + 512, 88, &sk), SMTP_P_AGAIN);
    assert_int_equal(sk, 88);
    assert_int_equal(smtp_line_skip(S("xxxx\r\nQUIT\r\n"), &sk), SMTP_P_OK);
    assert_int_equal(sk, 6);
    assert_int_equal(smtp_line_skip(S(""), &sk), SMTP_P_AGAIN);
    assert_int_equal(sk, 0);
}

/* Feed a stream split at one point, as a session would; collect the results
 * as text: "L:<line>" / "B" (bare) / "T" (too long, skipped). */
static void feed_lines(const char *stream, size_t n, size_t cut1, size_t cut2, size_t max,
                       char *res, size_t rescap)
{
    char pend[4096];
    size_t plen = 0, pos = 0;
    size_t cuts[3] = {cut1, cut2, n};
    bool skipping = false;

    res[0] = '\0';
    for (int c = 0; c < 3; c++) {
        size_t to = cuts[c];
        if (to < pos)
            continue;
        memcpy(pend + plen, stream + pos, to - pos);
        plen += to - pos;
        pos = to;
        for (;;) {
            size_t ll, used;
            int rc;
            if (skipping) {
                rc = smtp_line_skip(pend, plen, &used);
                if (rc == SMTP_P_OK)
                    skipping = false;
            } else {
                rc = smtp_line_next(pend, plen, max, &ll, &used);
                if (rc == SMTP_P_OK) {
                    strcat(res, "L:");
                    strncat(res, pend, ll);
                    strcat(res, "|");
                } else if (rc == SMTP_P_EBARELF) {
                    strcat(res, "B|");
                } else if (rc == SMTP_P_ETOOLONG) {
                    strcat(res, "T|");
                    skipping = true;
                }
            }
            assert_true(used <= plen);
            memmove(pend, pend + used, plen - used);
            plen -= used;
            if (rc == SMTP_P_AGAIN)
                break;
        }
    }
    (void)rescap;
}

static void test_line_splits(void **state)
{
    static const struct {
        const char *in;
        size_t max;
        const char *want;
    } cases[] = {
        {"EHLO x\r\nMAIL FROM:<a@b>\r\nQUIT\r\n", 512,
         "L:EHLO x|L:MAIL FROM:<a@b>|L:QUIT|"},
        {"NOOP\nQUIT\r\n\r\n", 512, "B|L:QUIT|L:|"},
        {"0123456789ABC\r\nNOOP\r\n", 12, "T|L:NOOP|"},
        {"0123456789\r\nNOOP\r\n", 12, "L:0123456789|L:NOOP|"},
        {"01234567890\r\nNOOP\r\n", 12, "T|L:NOOP|"},
        {"0123456789012345678901234567890\r\nA\rB\r\nC\r\n", 12, "T|B|L:C|"},
    };
    char res[1024];

    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        size_t n = strlen(cases[k].in);
        for (size_t a = 0; a <= n; a++) {
            for (size_t b = a; b <= n; b++) {
                feed_lines(cases[k].in, n, a, b, cases[k].max, res, sizeof(res));
                if (strcmp(res, cases[k].want) != 0)
                    fail_msg("case %zu cuts %zu,%zu: got %s want %s", k, a, b, res,
                             cases[k].want);
            }
        }
    }
}

/* ---------------------------------------------------------------------- */
/* Commands                                                                */

static void test_cmd(void **state)
{
    struct smtp_cmd c;

    assert_int_equal(smtp_cmd_parse(S("ehlo example.com"), &c), SMTP_P_OK);
    assert_int_equal(c.verb, SMTP_V_EHLO);
    assert_int_equal(c.arg_len, 11);
    assert_memory_equal(c.arg, "example.com", 11);

    assert_int_equal(smtp_cmd_parse(S("QUIT"), &c), SMTP_P_OK);
    assert_int_equal(c.verb, SMTP_V_QUIT);
    assert_int_equal(c.arg_len, 0);
    assert_string_equal(c.arg, "");

    assert_int_equal(smtp_cmd_parse(S("DaTa  "), &c), SMTP_P_OK);
    assert_int_equal(c.verb, SMTP_V_DATA);
    assert_int_equal(c.arg_len, 0);

    assert_int_equal(smtp_cmd_parse(S("StartTLS"), &c), SMTP_P_OK);
    assert_int_equal(c.verb, SMTP_V_STARTTLS);

    assert_int_equal(smtp_cmd_parse(S("AUTH PLAIN AGZvbwBiYXI="), &c), SMTP_P_OK);
    assert_int_equal(c.verb, SMTP_V_AUTH);
    assert_int_equal(c.arg_len, strlen("PLAIN AGZvbwBiYXI="));

    assert_int_equal(smtp_cmd_parse(S("BDAT 100 LAST"), &c), SMTP_P_OK);
    assert_int_equal(c.verb, SMTP_V_BDAT);
    assert_memory_equal(c.arg, "100 LAST", c.arg_len);

    /* Verb must be followed by space or end. */
    assert_int_equal(smtp_cmd_parse(S("NOOPX"), &c), SMTP_P_OK);
    assert_int_equal(c.verb, SMTP_V_UNKNOWN);
    assert_int_equal(smtp_cmd_parse(S("QUIT\t"), &c), SMTP_P_OK);
    assert_int_equal(c.verb, SMTP_V_UNKNOWN);
    assert_int_equal(smtp_cmd_parse(S("XYZZY a"), &c), SMTP_P_OK);
    assert_int_equal(c.verb, SMTP_V_UNKNOWN);
    assert_int_equal(smtp_cmd_parse(S(""), &c), SMTP_P_OK);
    assert_int_equal(c.verb, SMTP_V_UNKNOWN);
    assert_int_equal(smtp_cmd_parse(S(" NOOP"), &c), SMTP_P_OK);
    assert_int_equal(c.verb, SMTP_V_UNKNOWN);

    /* NUL / CR / LF inside: syntax error. */
    assert_int_equal(smtp_cmd_parse("NOOP\0x", 6, &c), SMTP_P_ESYNTAX);
    assert_int_equal(smtp_cmd_parse(S("NOOP\rx"), &c), SMTP_P_ESYNTAX);
    assert_int_equal(smtp_cmd_parse(S("NOOP\nx"), &c), SMTP_P_ESYNTAX);

    assert_string_equal(smtp_verb_name(SMTP_V_RCPT), "RCPT");
    assert_string_equal(smtp_verb_name(SMTP_V_UNKNOWN), "UNKNOWN");
    assert_string_equal(smtp_verb_name((enum smtp_verb)99), "UNKNOWN");
}

static void test_cmd_mail_rcpt(void **state)
{
    struct smtp_cmd c;

    assert_int_equal(smtp_cmd_parse(S("MAIL FROM:<a@b>"), &c), SMTP_P_OK);
    assert_int_equal(c.verb, SMTP_V_MAIL);
    assert_memory_equal(c.arg, "<a@b>", c.arg_len);
    assert_int_equal(c.arg_len, 5);

    assert_int_equal(smtp_cmd_parse(S("mail from:  <a@b> SIZE=10  "), &c), SMTP_P_OK);
    assert_int_equal(c.verb, SMTP_V_MAIL);
    assert_int_equal(c.arg_len, strlen("<a@b> SIZE=10"));
    assert_memory_equal(c.arg, "<a@b> SIZE=10", c.arg_len);

    assert_int_equal(smtp_cmd_parse(S("RCPT TO:<x@y>"), &c), SMTP_P_OK);
    assert_int_equal(c.verb, SMTP_V_RCPT);
    assert_memory_equal(c.arg, "<x@y>", c.arg_len);

    assert_int_equal(smtp_cmd_parse(S("rCpT tO:<x@y>"), &c), SMTP_P_OK);
    assert_int_equal(c.verb, SMTP_V_RCPT);

    assert_int_equal(smtp_cmd_parse(S("MAIL"), &c), SMTP_P_ESYNTAX);
    assert_int_equal(c.verb, SMTP_V_MAIL);
    assert_int_equal(smtp_cmd_parse(S("MAIL "), &c), SMTP_P_ESYNTAX);
    assert_int_equal(smtp_cmd_parse(S("MAIL FROM"), &c), SMTP_P_ESYNTAX);
    assert_int_equal(smtp_cmd_parse(S("MAIL TO:<a@b>"), &c), SMTP_P_ESYNTAX);
    assert_int_equal(smtp_cmd_parse(S("MAIL FROM :<a@b>"), &c), SMTP_P_ESYNTAX);
    assert_int_equal(smtp_cmd_parse(S("RCPT FROM:<a@b>"), &c), SMTP_P_ESYNTAX);
    assert_int_equal(smtp_cmd_parse(S("RCPT"), &c), SMTP_P_ESYNTAX);
    /* Empty argument after the colon parses here; MAIL args reject it. */
    assert_int_equal(smtp_cmd_parse(S("MAIL FROM:"), &c), SMTP_P_OK);
    assert_int_equal(c.arg_len, 0);
}

/* ---------------------------------------------------------------------- */
/* Addresses                                                               */

static int addr(const char *s, bool utf8, struct smtp_addr *a)
{
    return smtp_addr_parse(s, strlen(s), utf8, a);
}

static void test_addr_ok(void **state)
{
    struct smtp_addr a;
    static const char *const good[] = {
        "a@b", "user@example.com", "first.last@sub.example.co.uk",
        "!#$%&'*+-/=?^_`{|}~@example.com", "a@b-c.d", "a@1.2.3.4",
        "\"\"@example.com", "\"a b\"@example.com", "\"a\\\"b\"@example.com",
        "\"a@b\"@example.com", "\"a\\\\b\"@example.com", "x@[192.0.2.1]",
        "x@[IPv6:2001:db8::1]", "x@[ipv6:::1]", "x@[IPv6:::ffff:192.0.2.1]",
        "x@xn--bcher-kva.example", "a@0-0.0", "a@localhost",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (addr(good[i], false, &a) != SMTP_P_OK)
            fail_msg("rejected %s", good[i]);

    assert_int_equal(addr("user@example.com", false, &a), SMTP_P_OK);
    assert_int_equal(a.local_len, 4);
    assert_memory_equal(a.local, "user", 4);
    assert_int_equal(a.domain_len, 11);
    assert_memory_equal(a.domain, "example.com", 11);
    assert_false(a.is_utf8);
    assert_false(a.is_null);

    assert_int_equal(addr("\"a@b\"@[IPv6:::1]", false, &a), SMTP_P_OK);
    assert_int_equal(a.local_len, 5);
    assert_memory_equal(a.local, "\"a@b\"", 5);
    assert_memory_equal(a.domain, "[IPv6:::1]", a.domain_len);
}

static void test_addr_bad(void **state)
{
    struct smtp_addr a;
    static const char *const bad[] = {
        "", "a", "a@", "@b", "a@@b", ".a@b", "a.@b", "a..b@c", "a b@c", "a@b c",
        "a@.b", "a@b.", "a@b..c", "a@-b", "a@b-", "a@b.-c", "a@b_c", "a(b)@c",
        "a,b@c", "a@b@c", "\"a@b", "\"a\"b@c", "\"a\\\x01\"@b", "\"a\tb\"@c",
        "a@[]", "a@[1.2.3]", "a@[1.2.3.256]", "a@[01.2.3.4]", "a@[IPv6:1.2.3.4]",
        "a@[IPv6:]", "a@[IPv6:gggg::1]", "a@[IPv6:1:2:3:4:5:6:7:8:9]", "a@[::1]",
        "a@[IPv6:fe80::1%eth0]", "a@[X-tag:abc]", "a@[1.2.3.4", "a@1.2.3.4]",
        "a@[1.2.3.4]x", "<a@b>", "a@b\x7f", "a\x7f@b",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (addr(bad[i], true, &a) != SMTP_P_EADDR)
            fail_msg("accepted \"%s\"", bad[i]);
    /* NUL inside. */
    assert_int_equal(smtp_addr_parse("a\0b@c", 5, true, &a), SMTP_P_EADDR);
    assert_int_equal(smtp_addr_parse("a@b\0c", 5, true, &a), SMTP_P_EADDR);
    assert_int_equal(smtp_addr_parse("a@[1.2.3.4\0]", 12, true, &a), SMTP_P_EADDR);
}

static void test_addr_lengths(void **state)
{
    char buf[600];
    struct smtp_addr a;

    /* Local part: 255 ok (SRS and VERP paths exceed the RFC's 64), 256 not. */
    memset(buf, 'l', 65);
    strcpy(buf + 65, "@example.com");
    assert_int_equal(addr(buf, false, &a), SMTP_P_OK);
    memset(buf, 'l', 255);
    strcpy(buf + 255, "@example.com");
    assert_int_equal(addr(buf, false, &a), SMTP_P_OK);
    memset(buf, 'l', 256);
    strcpy(buf + 256, "@example.com");
    assert_int_equal(addr(buf, false, &a), SMTP_P_EADDR);
    /* Quoted local part counts as written (with its quotes). */
    buf[0] = '"';
    memset(buf + 1, 'q', 253);
    strcpy(buf + 254, "\"@b");
    assert_int_equal(addr(buf, false, &a), SMTP_P_OK);
    buf[0] = '"';
    memset(buf + 1, 'q', 254);
    strcpy(buf + 255, "\"@b");
    assert_int_equal(addr(buf, false, &a), SMTP_P_EADDR);
    /* Label: 63 ok, 64 not. */
    strcpy(buf, "a@");
    memset(buf + 2, 'd', 63);
    strcpy(buf + 65, ".com");
    assert_int_equal(addr(buf, false, &a), SMTP_P_OK);
    strcpy(buf, "a@");
    memset(buf + 2, 'd', 64);
    strcpy(buf + 66, ".com");
    assert_int_equal(addr(buf, false, &a), SMTP_P_EADDR);
    /* Domain: 255 ok, 256 not (labels of 63 + dots). */
    strcpy(buf, "a@");
    char *p = buf + 2;
    for (int i = 0; i < 4; i++) {
        memset(p, 'd', 63);
        p += 63;
        *p++ = '.';
    }
    /* 4*64 = 256 so far: trim to 255 with a last label of 'x' length... */
    p -= 2;              /* drop the final dot and one 'd': 254 */
    *p++ = 'e';          /* 255 */
    *p = '\0';
    assert_int_equal(strlen(buf + 2), 255);
    assert_int_equal(addr(buf, false, &a), SMTP_P_OK);
    *p++ = 'f';
    *p = '\0';
    assert_int_equal(strlen(buf + 2), 256);
    assert_int_equal(addr(buf, false, &a), SMTP_P_EADDR);
}

static void test_addr_utf8(void **state)
{
    struct smtp_addr a;

    /* RFC 6531: UTF-8 in the local part and in labels. */
    static const char *const good[] = {
        "j\xc3\xb6rg@example.com",              /* jörg */
        "user@b\xc3\xbc" "cher.example",        /* bücher */
        "\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9\xbf\xe5\x91\x8a",
        "\"\xc3\xa9 x\"@example.com",
        "a\xf0\x9f\x98\x80@example.com",        /* U+1F600 */
        "a\xf4\x8f\xbf\xbf@b",                  /* U+10FFFF */
        "a\xee\x80\x80@b",                      /* U+E000 */
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        if (addr(good[i], true, &a) != SMTP_P_OK)
            fail_msg("rejected utf8 #%zu", i);
        assert_true(a.is_utf8);
        if (addr(good[i], false, &a) != SMTP_P_EADDR)
            fail_msg("accepted utf8 #%zu without allow_utf8", i);
    }
    static const char *const bad[] = {
        "a\x80@b",                  /* lone continuation */
        "a\xc3@b",                  /* truncated */
        "a\xc3",                    /* truncated at end */
        "a@b\xc3",
        "a\xc0\xaf@b",              /* overlong '/' */
        "a\xc1\xbf@b",
        "a\xe0\x80\xaf@b",          /* overlong 3-byte */
        "a\xed\xa0\x80@b",          /* surrogate D800 */
        "a\xf0\x80\x80\xaf@b",      /* overlong 4-byte */
        "a\xf4\x90\x80\x80@b",      /* above U+10FFFF */
        "a\xf5\x80\x80\x80@b",
        "a\xff@b",
        "a\xe2\x82@b",              /* truncated 3-byte */
        "\"\xc3\"@b",
        "a@\xc3\xa9-",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (addr(bad[i], true, &a) != SMTP_P_EADDR)
            fail_msg("accepted bad utf8 #%zu", i);

    assert_int_equal(addr("ascii@example.com", true, &a), SMTP_P_OK);
    assert_false(a.is_utf8);
}

/* ---------------------------------------------------------------------- */
/* MAIL / RCPT                                                             */

static int mail(const char *s, struct smtp_mail_args *m)
{
    return smtp_mail_parse(s, strlen(s), m);
}

static int rcpt(const char *s, bool utf8, struct smtp_rcpt_args *r)
{
    return smtp_rcpt_parse(s, strlen(s), utf8, r);
}

static void test_mail(void **state)
{
    struct smtp_mail_args m;

    assert_int_equal(mail("<a@b.c>", &m), SMTP_P_OK);
    assert_int_equal(m.path_len, 5);
    assert_memory_equal(m.path, "a@b.c", 5);
    assert_memory_equal(m.addr.domain, "b.c", 3);
    assert_false(m.has_size);
    assert_int_equal(m.body, SMTP_BODY_NONE);
    assert_false(m.smtputf8);

    assert_int_equal(mail("  <a@b.c>  ", &m), SMTP_P_OK);
    assert_int_equal(m.path_len, 5);

    assert_int_equal(mail("<>", &m), SMTP_P_OK);
    assert_true(m.addr.is_null);
    assert_int_equal(m.path_len, 0);
    assert_string_equal(m.path, "");

    /* Source route ignored. */
    assert_int_equal(mail("<@r1.example,@r2.example:u@d.example>", &m), SMTP_P_OK);
    assert_int_equal(m.path_len, strlen("u@d.example"));
    assert_memory_equal(m.path, "u@d.example", m.path_len);
    assert_int_equal(mail("<@r1.example:u@d.example>", &m), SMTP_P_OK);
    assert_int_equal(mail("<@:u@d>", &m), SMTP_P_EADDR);
    assert_int_equal(mail("<@r1,u@d>", &m), SMTP_P_EADDR);
    assert_int_equal(mail("<@r1,@:u@d>", &m), SMTP_P_EADDR);
    assert_int_equal(mail("<@r1>", &m), SMTP_P_EADDR);
    assert_int_equal(mail("<@r1:>", &m), SMTP_P_EADDR);

    /* Quoted local part with '>' inside. */
    assert_int_equal(mail("<\"a>b\"@c> SIZE=1", &m), SMTP_P_OK);
    assert_memory_equal(m.path, "\"a>b\"@c", m.path_len);
    assert_int_equal(m.size, 1);

    /* Strict brackets. */
    assert_int_equal(mail("a@b", &m), SMTP_P_ESYNTAX);
    assert_int_equal(mail("<a@b", &m), SMTP_P_ESYNTAX);
    assert_int_equal(mail("a@b>", &m), SMTP_P_ESYNTAX);
    assert_int_equal(mail("", &m), SMTP_P_ESYNTAX);
    assert_int_equal(mail("<a@b>SIZE=1", &m), SMTP_P_ESYNTAX);
    assert_int_equal(mail("<a@b>>", &m), SMTP_P_ESYNTAX);
    assert_int_equal(mail("<a b@c>", &m), SMTP_P_EADDR);
    assert_int_equal(mail("<a@b.>", &m), SMTP_P_EADDR);
    assert_int_equal(mail("<\"ab@c>", &m), SMTP_P_EADDR);
    assert_int_equal(mail("<\"ab\\", &m), SMTP_P_EADDR);
}

static void test_mail_params(void **state)
{
    struct smtp_mail_args m;

    assert_int_equal(mail("<a@b> SIZE=12345 BODY=8BITMIME SMTPUTF8 AUTH=<> RET=HDRS "
                          "ENVID=QQ+2Bx",
                          &m),
                     SMTP_P_OK);
    assert_true(m.has_size);
    assert_int_equal(m.size, 12345);
    assert_int_equal(m.body, SMTP_BODY_8BITMIME);
    assert_true(m.smtputf8);
    assert_memory_equal(m.auth, "<>", m.auth_len);
    assert_int_equal(m.auth_len, 2);
    assert_memory_equal(m.ret, "HDRS", m.ret_len);
    assert_memory_equal(m.envid, "QQ+2Bx", m.envid_len);

    assert_int_equal(mail("<a@b>   size=0   body=7bit  ret=full", &m), SMTP_P_OK);
    assert_int_equal(m.size, 0);
    assert_true(m.has_size);
    assert_int_equal(m.body, SMTP_BODY_7BIT);
    assert_int_equal(mail("<a@b> BODY=BINARYMIME", &m), SMTP_P_OK);
    assert_int_equal(m.body, SMTP_BODY_BINARYMIME);
    assert_int_equal(mail("<a@b> AUTH=user+40example.com", &m), SMTP_P_OK);

    /* SIZE: digits only, 1..20, saturating beyond 2^64-1. */
    assert_int_equal(mail("<a@b> SIZE=18446744073709551615", &m), SMTP_P_OK);
    assert_true(m.size == UINT64_MAX);
    assert_int_equal(mail("<a@b> SIZE=18446744073709551616", &m), SMTP_P_OK);
    assert_true(m.size == UINT64_MAX);
    assert_int_equal(mail("<a@b> SIZE=99999999999999999999", &m), SMTP_P_OK);
    assert_true(m.size == UINT64_MAX);
    assert_int_equal(mail("<a@b> SIZE=00000000000000000001", &m), SMTP_P_OK);
    assert_int_equal(m.size, 1);
    assert_int_equal(mail("<a@b> SIZE=100000000000000000000", &m), SMTP_P_ESYNTAX);
    assert_int_equal(mail("<a@b> SIZE=-1", &m), SMTP_P_ESYNTAX);
    assert_int_equal(mail("<a@b> SIZE=+1", &m), SMTP_P_ESYNTAX);
    assert_int_equal(mail("<a@b> SIZE=1k", &m), SMTP_P_ESYNTAX);
    assert_int_equal(mail("<a@b> SIZE=", &m), SMTP_P_ESYNTAX);
    assert_int_equal(mail("<a@b> SIZE", &m), SMTP_P_ESYNTAX);

    assert_int_equal(mail("<a@b> BODY=9BIT", &m), SMTP_P_ESYNTAX);
    assert_int_equal(mail("<a@b> SMTPUTF8=yes", &m), SMTP_P_ESYNTAX);
    assert_int_equal(mail("<a@b> RET=ALL", &m), SMTP_P_ESYNTAX);
    assert_int_equal(mail("<a@b> AUTH=a=b", &m), SMTP_P_ESYNTAX);
    assert_int_equal(mail("<a@b> AUTH=a+zz", &m), SMTP_P_ESYNTAX);
    assert_int_equal(mail("<a@b> ENVID=a+4", &m), SMTP_P_ESYNTAX);

    /* ENVID at most 100. */
    char buf[256];
    strcpy(buf, "<a@b> ENVID=");
    memset(buf + 12, 'e', 100);
    buf[112] = '\0';
    assert_int_equal(mail(buf, &m), SMTP_P_OK);
    buf[112] = 'e';
    buf[113] = '\0';
    assert_int_equal(mail(buf, &m), SMTP_P_ESYNTAX);

    /* Duplicates, unknowns, malformed keywords. */
    assert_int_equal(mail("<a@b> SIZE=1 SIZE=2", &m), SMTP_P_ESYNTAX);
    assert_int_equal(mail("<a@b> SMTPUTF8 smtputf8", &m), SMTP_P_ESYNTAX);
    assert_int_equal(mail("<a@b> FOO=bar", &m), SMTP_P_EPARAM);
    assert_int_equal(mail("<a@b> X-FOO", &m), SMTP_P_EPARAM);
    assert_int_equal(mail("<a@b> -X", &m), SMTP_P_ESYNTAX);
    assert_int_equal(mail("<a@b> =1", &m), SMTP_P_ESYNTAX);
    assert_int_equal(mail("<a@b> SIZE=1=2", &m), SMTP_P_ESYNTAX);
    assert_int_equal(mail("<a@b> SIZE=1\t", &m), SMTP_P_ESYNTAX);
    assert_int_equal(mail("<a@b> S_IZE=1", &m), SMTP_P_ESYNTAX);
}

static void test_mail_utf8(void **state)
{
    struct smtp_mail_args m;

    assert_int_equal(mail("<j\xc3\xb6rg@example.com>", &m), SMTP_P_EADDR);
    assert_int_equal(mail("<j\xc3\xb6rg@example.com> SMTPUTF8", &m), SMTP_P_OK);
    assert_true(m.addr.is_utf8);
    assert_int_equal(mail("<j\xc3\xb6rg@example.com> BODY=8BITMIME SMTPUTF8", &m),
                     SMTP_P_OK);
    assert_int_equal(mail("<j\xc3@example.com> SMTPUTF8", &m), SMTP_P_EADDR);
    assert_int_equal(mail("<a@b> SMTPUTF8", &m), SMTP_P_OK);
    assert_false(m.addr.is_utf8);
}

static void test_rcpt(void **state)
{
    struct smtp_rcpt_args r;

    assert_int_equal(rcpt("<x@y.z>", false, &r), SMTP_P_OK);
    assert_memory_equal(r.path, "x@y.z", r.path_len);
    assert_false(r.is_postmaster);
    assert_int_equal(rcpt("<>", false, &r), SMTP_P_EADDR);
    assert_int_equal(rcpt("x@y", false, &r), SMTP_P_ESYNTAX);

    assert_int_equal(rcpt("<Postmaster>", false, &r), SMTP_P_OK);
    assert_true(r.is_postmaster);
    assert_int_equal(r.addr.local_len, 10);
    assert_int_equal(r.addr.domain_len, 0);
    assert_int_equal(rcpt("<pOSTMASTER>", false, &r), SMTP_P_OK);
    assert_true(r.is_postmaster);
    assert_int_equal(rcpt("<postmaster@example.com>", false, &r), SMTP_P_OK);
    assert_false(r.is_postmaster);
    assert_int_equal(rcpt("<postmaste>", false, &r), SMTP_P_EADDR);
    assert_int_equal(rcpt("<@a:Postmaster>", false, &r), SMTP_P_EADDR);

    assert_int_equal(rcpt("<@a,@b:x@y>", false, &r), SMTP_P_OK);
    assert_memory_equal(r.path, "x@y", r.path_len);

    /* UTF-8 only with the transaction's SMTPUTF8. */
    assert_int_equal(rcpt("<\xc3\xa9@example.com>", false, &r), SMTP_P_EADDR);
    assert_int_equal(rcpt("<\xc3\xa9@example.com>", true, &r), SMTP_P_OK);
    assert_true(r.addr.is_utf8);
}

static void test_rcpt_params(void **state)
{
    struct smtp_rcpt_args r;

    assert_int_equal(rcpt("<x@y> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;x+40y", false, &r),
                     SMTP_P_OK);
    assert_memory_equal(r.notify, "SUCCESS,FAILURE,DELAY", r.notify_len);
    assert_memory_equal(r.orcpt, "rfc822;x+40y", r.orcpt_len);
    assert_int_equal(rcpt("<x@y> NOTIFY=never", false, &r), SMTP_P_OK);
    assert_int_equal(rcpt("<x@y> notify=delay", false, &r), SMTP_P_OK);
    assert_int_equal(rcpt("<x@y> NOTIFY=FAILURE,success", false, &r), SMTP_P_OK);
    assert_int_equal(rcpt("<x@y> NOTIFY=NEVER,SUCCESS", false, &r), SMTP_P_ESYNTAX);
    assert_int_equal(rcpt("<x@y> NOTIFY=SUCCESS,", false, &r), SMTP_P_ESYNTAX);
    assert_int_equal(rcpt("<x@y> NOTIFY=,SUCCESS", false, &r), SMTP_P_ESYNTAX);
    assert_int_equal(rcpt("<x@y> NOTIFY=SUCCESS,SUCCESS", false, &r), SMTP_P_ESYNTAX);
    assert_int_equal(rcpt("<x@y> NOTIFY=ALWAYS", false, &r), SMTP_P_ESYNTAX);
    assert_int_equal(rcpt("<x@y> NOTIFY", false, &r), SMTP_P_ESYNTAX);
    assert_int_equal(rcpt("<x@y> NOTIFY=NEVER NOTIFY=NEVER", false, &r), SMTP_P_ESYNTAX);
    assert_int_equal(rcpt("<x@y> ORCPT=rfc822", false, &r), SMTP_P_ESYNTAX);
    assert_int_equal(rcpt("<x@y> ORCPT=;x", false, &r), SMTP_P_ESYNTAX);
    assert_int_equal(rcpt("<x@y> ORCPT=rfc822;", false, &r), SMTP_P_ESYNTAX);
    assert_int_equal(rcpt("<x@y> ORCPT=rfc(822;x", false, &r), SMTP_P_ESYNTAX);
    assert_int_equal(rcpt("<x@y> ORCPT=rfc822;a+4", false, &r), SMTP_P_ESYNTAX);
    assert_int_equal(rcpt("<x@y> SIZE=1", false, &r), SMTP_P_EPARAM);
    assert_int_equal(rcpt("<x@y> FOO", false, &r), SMTP_P_EPARAM);
    assert_int_equal(rcpt("<x@y>NOTIFY=NEVER", false, &r), SMTP_P_ESYNTAX);

    char buf[700];
    strcpy(buf, "<x@y> ORCPT=rfc822;");
    size_t n = strlen(buf);
    memset(buf + n, 'o', 500 - 7);
    buf[n + 493] = '\0';
    assert_int_equal(rcpt(buf, false, &r), SMTP_P_OK);
    assert_int_equal(r.orcpt_len, 500);
    buf[n + 493] = 'o';
    buf[n + 494] = '\0';
    assert_int_equal(rcpt(buf, false, &r), SMTP_P_ESYNTAX);
}

static void test_xtext(void **state)
{
    assert_true(smtp_xtext_valid(S("")));
    assert_true(smtp_xtext_valid(S("abc+2B+3D!~")));
    assert_false(smtp_xtext_valid(S("a+2b")));
    assert_false(smtp_xtext_valid(S("a+2")));
    assert_false(smtp_xtext_valid(S("a+")));
    assert_false(smtp_xtext_valid(S("a=b")));
    assert_false(smtp_xtext_valid(S("a b")));
    assert_false(smtp_xtext_valid(S("a\x7f")));
    assert_false(smtp_xtext_valid(S("\xc3\xa9")));
}

static void test_bdat(void **state)
{
    uint64_t n;
    bool last;

    assert_int_equal(smtp_bdat_parse(S("100"), &n, &last), SMTP_P_OK);
    assert_int_equal(n, 100);
    assert_false(last);
    assert_int_equal(smtp_bdat_parse(S("0 LAST"), &n, &last), SMTP_P_OK);
    assert_int_equal(n, 0);
    assert_true(last);
    assert_int_equal(smtp_bdat_parse(S("7 last"), &n, &last), SMTP_P_OK);
    assert_true(last);
    assert_int_equal(smtp_bdat_parse(S("18446744073709551615 LAST"), &n, &last), SMTP_P_OK);
    assert_true(n == UINT64_MAX);
    assert_int_equal(smtp_bdat_parse(S("18446744073709551616"), &n, &last), SMTP_P_ESYNTAX);
    assert_int_equal(smtp_bdat_parse(S("99999999999999999999999"), &n, &last),
                     SMTP_P_ESYNTAX);
    assert_int_equal(smtp_bdat_parse(S(""), &n, &last), SMTP_P_ESYNTAX);
    assert_int_equal(smtp_bdat_parse(S("LAST"), &n, &last), SMTP_P_ESYNTAX);
    assert_int_equal(smtp_bdat_parse(S("-1"), &n, &last), SMTP_P_ESYNTAX);
    assert_int_equal(smtp_bdat_parse(S("+1"), &n, &last), SMTP_P_ESYNTAX);
    assert_int_equal(smtp_bdat_parse(S("1x"), &n, &last), SMTP_P_ESYNTAX);
    assert_int_equal(smtp_bdat_parse(S("1 LASTX"), &n, &last), SMTP_P_ESYNTAX);
    assert_int_equal(smtp_bdat_parse(S("1 LAST x"), &n, &last), SMTP_P_ESYNTAX);
    assert_int_equal(smtp_bdat_parse(S("1 FIRST"), &n, &last), SMTP_P_ESYNTAX);
    assert_int_equal(smtp_bdat_parse(S("1\tLAST"), &n, &last), SMTP_P_ESYNTAX);
    assert_int_equal(smtp_bdat_parse(S("1 2"), &n, &last), SMTP_P_ESYNTAX);
}

/* ---------------------------------------------------------------------- */
/* DATA                                                                    */

/* Reference: the end is the first ".\r\n" at offset 0 or after "\r\n". */
struct ref {
    bool done;
    size_t msg_len, consumed;
    bool bad, long_line;
};

static struct ref ref_scan(const char *s, size_t n)
{
    struct ref r = {0};
    size_t end = n;
    for (size_t p = 0; p + 3 <= n; p++) {
        if (memcmp(s + p, ".\r\n", 3) == 0 &&
            (p == 0 || (p >= 2 && s[p - 2] == '\r' && s[p - 1] == '\n'))) {
            r.done = true;
            r.msg_len = p;
            r.consumed = p + 3;
            end = p;
            break;
        }
    }
    size_t line = 0;
    for (size_t k = 0; k < end; k++) {
        if (s[k] == '\n' && (k == 0 || s[k - 1] != '\r'))
            r.bad = true;
        if (s[k] == '\r' && k + 1 < n && s[k + 1] != '\n')
            r.bad = true;
        line++;
        if (line > SMTP_MAX_TEXT_LINE)
            r.long_line = true;
        if (s[k] == '\n')
            line = 0;
    }
    if (!r.done)
        r.msg_len = n;
    return r;
}

/* Feed s in pieces ending at cuts[], as a session would (keeping bytes the
 * scanner hands back); compare with the reference. */
static void feed_data(const char *s, size_t n, const size_t *cuts, size_t ncuts, const char *what)
{
    struct smtp_data_scan sc;
    char pend[8192], msg[8192];
    size_t plen = 0, mlen = 0, pos = 0, base = 0;
    bool done = false;
    size_t done_at = 0;
    struct ref want = ref_scan(s, n);

    smtp_data_scan_init(&sc);
    for (size_t c = 0; c <= ncuts && !done; c++) {
        size_t to = c < ncuts ? cuts[c] : n;
        if (to < pos)
            continue;
        memcpy(pend + plen, s + pos, to - pos);
        plen += to - pos;
        pos = to;
        size_t ml, used;
        int rc = smtp_data_scan(&sc, pend, plen, &ml, &used);
        assert_true(ml <= used && used <= plen);
        memcpy(msg + mlen, pend, ml);
        mlen += ml;
        if (rc == SMTP_P_DONE) {
            done = true;
            done_at = base + used;
            assert_int_equal(used, ml + 3);
            assert_memory_equal(pend + ml, ".\r\n", 3);
        } else {
            assert_int_equal(rc, SMTP_P_AGAIN);
            assert_int_equal(ml, used);
            assert_true(plen - used <= 2);
        }
        memmove(pend, pend + used, plen - used);
        plen -= used;
        base += used;
    }
    if (done != want.done)
        fail_msg("%s: done %d want %d", what, done, want.done);
    if (done) {
        assert_int_equal(done_at, want.consumed);
        assert_int_equal(mlen, want.msg_len);
    } else {
        /* Without an end, everything but a held-back "." / ".\r" is message. */
        assert_true(mlen + plen == n);
    }
    assert_memory_equal(msg, s, mlen);
    assert_int_equal(sc.bytes, mlen);
    if (sc.bad != want.bad)
        fail_msg("%s: bad %d want %d", what, sc.bad, want.bad);
    assert_int_equal(sc.long_line, want.long_line);
}

static const char *const data_cases[] = {
    ".\r\n",
    "\r\n.\r\n",
    "Subject: x\r\n\r\nbody\r\n.\r\n",
    "Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n",
    "a\r\n..\r\n.b\r\n.\r\n",
    "..\r\n.\r\n",
    "a\r\n.\r\r\n.\r\n",
    /* smuggling: none of these ends before the real end */
    "a\r\n.\nb\r\n.\r\n",
    "a\n.\r\nb\r\n.\r\n",
    "a\n.\nb\r\n.\r\n",
    "a\r.\r\nb\r\n.\r\n",
    "a\r\n.\rb\r\n.\r\n",
    "a\r\n\r.\r\n\r\n.\r\n",
    "a\r\n.\r.\r\n.\r\n",
    ".\n.\r\n",
    "\n.\r\n\r\n.\r\n",
    /* no end at all */
    "abc\r\n",
    "abc\r\n.",
    "abc\r\n.\r",
    "abc\r\n.\n",
    "\r\n.\r",
    ".",
    ".\r",
    "",
    /* bare CR / LF followed by a real end */
    "x\ny\r\n.\r\n",
    "x\ry\r\n.\r\n",
    "x\r\r\n.\r\n",
    "x\r\n\r\n\r\n.\r\n",
};

static void test_data_all_splits(void **state)
{
    char what[64];
    for (size_t k = 0; k < sizeof(data_cases) / sizeof(data_cases[0]); k++) {
        const char *s = data_cases[k];
        size_t n = strlen(s);
        for (size_t a = 0; a <= n; a++) {
            for (size_t b = a; b <= n; b++) {
                size_t cuts[2] = {a, b};
                snprintf(what, sizeof(what), "case %zu cuts %zu,%zu", k, a, b);
                feed_data(s, n, cuts, 2, what);
            }
        }
        /* One byte at a time. */
        size_t cuts[64];
        for (size_t i = 0; i < n && i < 64; i++)
            cuts[i] = i + 1;
        snprintf(what, sizeof(what), "case %zu bytewise", k);
        feed_data(s, n, cuts, n < 64 ? n : 64, what);
    }
}

static void test_data_smuggling(void **state)
{
    struct smtp_data_scan sc;
    size_t ml, used;

    /* "\r\n.\n" and "\n.\r\n" are not ends; only CRLF.CRLF is. */
    smtp_data_scan_init(&sc);
    assert_int_equal(smtp_data_scan(&sc, S("a\r\n.\nMAIL FROM:<x@y>\r\n"), &ml, &used),
                     SMTP_P_AGAIN);
    assert_true(sc.bad);
    assert_int_equal(ml, strlen("a\r\n.\nMAIL FROM:<x@y>\r\n"));

    smtp_data_scan_init(&sc);
    assert_int_equal(smtp_data_scan(&sc, S("a\n.\r\nMAIL FROM:<x@y>\r\n"), &ml, &used),
                     SMTP_P_AGAIN);
    assert_true(sc.bad);

    /* The first line may be the end: empty message. */
    smtp_data_scan_init(&sc);
    assert_int_equal(smtp_data_scan(&sc, S(".\r\nQUIT\r\n"), &ml, &used), SMTP_P_DONE);
    assert_int_equal(ml, 0);
    assert_int_equal(used, 3);
    assert_false(sc.bad);

    /* msg_len includes the CRLF before the dot. */
    smtp_data_scan_init(&sc);
    assert_int_equal(smtp_data_scan(&sc, S("hi\r\n.\r\n"), &ml, &used), SMTP_P_DONE);
    assert_int_equal(ml, 4);
    assert_int_equal(used, 7);
    assert_int_equal(sc.bytes, 4);
}

static void test_data_long_lines(void **state)
{
    static char buf[6000];
    struct smtp_data_scan sc;
    size_t ml, used;

    /* 998 + CRLF = 1000: fine. */
    memset(buf, 'a', 998);
    memcpy(buf + 998, "\r\n.\r\n", 5);
    smtp_data_scan_init(&sc);
    assert_int_equal(smtp_data_scan(&sc, buf, 1003, &ml, &used), SMTP_P_DONE);
    assert_false(sc.long_line);
    assert_int_equal(ml, 1000);

    /* 999 + CRLF = 1001: long. */
    memset(buf, 'a', 999);
    memcpy(buf + 999, "\r\n.\r\n", 5);
    smtp_data_scan_init(&sc);
    assert_int_equal(smtp_data_scan(&sc, buf, 1004, &ml, &used), SMTP_P_DONE);
    assert_true(sc.long_line);

    /* Long line split across calls; every split of a 1001-octet line. */
    for (size_t cut = 0; cut <= 1004; cut += 7) {
        size_t cuts[1] = {cut};
        feed_data(buf, 1004, cuts, 1, "long");
    }
    /* Many short lines never add up to a long one. */
    size_t n = 0;
    for (int i = 0; i < 500; i++) {
        memcpy(buf + n, "abcdefgh\r\n", 10);
        n += 10;
    }
    memcpy(buf + n, ".\r\n", 3);
    n += 3;
    smtp_data_scan_init(&sc);
    assert_int_equal(smtp_data_scan(&sc, buf, n, &ml, &used), SMTP_P_DONE);
    assert_false(sc.long_line);
    assert_int_equal(ml, 5000);
}

/* ---------------------------------------------------------------------- */
/* BDAT stuffing                                                           */

static void stuff_all(const char *in, size_t n, const size_t *cuts, size_t ncuts, char *out,
                      size_t *olen, struct smtp_data_scan *sc)
{
    size_t pos = 0;
    *olen = 0;
    smtp_data_scan_init(sc);
    for (size_t c = 0; c <= ncuts; c++) {
        size_t to = c < ncuts ? cuts[c] : n;
        if (to < pos)
            continue;
        *olen += smtp_bdat_stuff(sc, in + pos, to - pos, out + *olen);
        pos = to;
    }
}

static void test_count_received(void **state)
{
    const char *m = "Received: from a by b; Mon, 1 Jan 2026 00:00:00 +0000\r\n"
                    "RECEIVED : from c\r\n\tby d\r\n"
                    "X-Received: not one\r\n"
                    "Received-SPF: pass\r\n"
                    "received:x\r\n"
                    "Subject: Received: in a value\r\n"
                    "\r\n"
                    "Received: in the body\r\n";
    assert_int_equal(smtp_count_received(m, strlen(m), 100), 3);
    assert_int_equal(smtp_count_received(m, strlen(m), 2), 2); /* stops early */
    assert_int_equal(smtp_count_received("", 0, 100), 0);
    assert_int_equal(smtp_count_received("\r\nReceived: x\r\n", 16, 100), 0); /* no header */
    const char *cut = "Received: a\r\nReceived"; /* no line end: a name only */
    assert_int_equal(smtp_count_received(cut, strlen(cut), 100), 1);
    char big[4096];
    size_t n = 0;
    for (int i = 0; i < 150; i++)
        n += (size_t)snprintf(big + n, sizeof big - n, "Received: %d\r\n", i);
    assert_int_equal(smtp_count_received(big, n, SMTP_MAX_HOPS + 1), SMTP_MAX_HOPS + 1);
}

static void test_bdat_stuff(void **state)
{
    static const struct {
        const char *in, *out;
        bool bad;
    } cases[] = {
        {"", "", false},
        {"abc\r\n", "abc\r\n", false},
        {".\r\n", "..\r\n", false},
        {"a\r\n.b\r\n..\r\n", "a\r\n..b\r\n...\r\n", false},
        {"a.b\r\n", "a.b\r\n", false},
        {"a\r\n.", "a\r\n..", false},
        {"a\n.b\r\n", "a\n..b\r\n", true},
        {"a\r.b\r\n", "a\r.b\r\n", true},
        {"a\r\r\n", "a\r\r\n", true},
        {"\n", "\n", true},
        {"a\r", "a\r", false},   /* pending CR: not yet known to be bare */
    };
    char out[256];
    size_t olen;
    struct smtp_data_scan sc;

    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        size_t n = strlen(cases[k].in);
        for (size_t a = 0; a <= n; a++) {
            for (size_t b = a; b <= n; b++) {
                size_t cuts[2] = {a, b};
                stuff_all(cases[k].in, n, cuts, 2, out, &olen, &sc);
                if (olen != strlen(cases[k].out) || memcmp(out, cases[k].out, olen) != 0)
                    fail_msg("stuff case %zu cuts %zu,%zu", k, a, b);
                assert_int_equal(sc.bad, cases[k].bad);
                assert_int_equal(sc.bytes, olen);
            }
        }
    }
    /* Stuffed output, scanned as DATA with a terminator, gives back the
     * same bytes and no early end. */
    const char *in = ".\r\n.\r\n..\r\nx\r\n";
    stuff_all(in, strlen(in), NULL, 0, out, &olen, &sc);
    memcpy(out + olen, ".\r\n", 3);
    struct smtp_data_scan ds;
    size_t ml, used;
    smtp_data_scan_init(&ds);
    assert_int_equal(smtp_data_scan(&ds, out, olen + 3, &ml, &used), SMTP_P_DONE);
    assert_int_equal(ml, olen);

    /* Worst case stays within 2*len. */
    char big_in[300], big_out[600];
    for (size_t i = 0; i < sizeof(big_in); i += 3)
        memcpy(big_in + i, ".\r\n", 3);
    smtp_data_scan_init(&sc);
    olen = smtp_bdat_stuff(&sc, big_in, sizeof(big_in), big_out);
    assert_int_equal(olen, 400);

    /* Long line tracking. */
    static char longl[1100], longo[2200];
    memset(longl, 'z', sizeof(longl));
    smtp_data_scan_init(&sc);
    smtp_bdat_stuff(&sc, longl, 999, longo);
    assert_false(sc.long_line);
    smtp_bdat_stuff(&sc, "\r\n", 2, longo);
    assert_true(sc.long_line);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line_basic),
        cmocka_unit_test(test_line_bare),
        cmocka_unit_test(test_line_long),
        cmocka_unit_test(test_line_splits),
        cmocka_unit_test(test_cmd),
        cmocka_unit_test(test_cmd_mail_rcpt),
        cmocka_unit_test(test_addr_ok),
        cmocka_unit_test(test_addr_bad),
        cmocka_unit_test(test_addr_lengths),
        cmocka_unit_test(test_addr_utf8),
        cmocka_unit_test(test_mail),
        cmocka_unit_test(test_mail_params),
        cmocka_unit_test(test_mail_utf8),
        cmocka_unit_test(test_rcpt),
        cmocka_unit_test(test_rcpt_params),
        cmocka_unit_test(test_xtext),
        cmocka_unit_test(test_bdat),
        cmocka_unit_test(test_data_all_splits),
        cmocka_unit_test(test_data_smuggling),
        cmocka_unit_test(test_data_long_lines),
        cmocka_unit_test(test_bdat_stuff),
        cmocka_unit_test(test_count_received),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
