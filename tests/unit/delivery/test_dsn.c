/* SPDX-License-Identifier: MIT */
/*
 * test_dsn.c - unit tests of delivery/dsn.c: the NOTIFY rules, xtext
 * decoding, and DSN messages checked line by line and parsed back by
 * Python's email package (an independent MIME parser).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "delivery/dsn.h"
#include "spool/spool.h"

static const char ORIG[] = "From: a@example.test\r\n"
                           "To: b@remote.test\r\n"
                           "Subject: hello\r\n"
                           "\r\n"
                           "..a line that started with a dot\r\n"
                           "body\r\n";

static struct dsn_params params(enum dsn_kind kind, uint8_t ret)
{
    return (struct dsn_params){
        .kind = kind,
        .reporting_mta = "mx.example.test",
        .queue_id = "0123456789abcdefABCD",
        .sender = "a@example.test",
        .envid = "env+2Bid",
        .ret = ret,
        .arrival = 1764633600,
        .now = 1764637200,
        .retry_until = kind == DSN_DELAYED ? 1765065600 : 0,
    };
}

/* No line longer than 998 octets, every line CRLF, no bare CR/LF, and
 * no generated line starting with a single '.' (stuffed). */
static void check_wire(const char *m, size_t len)
{
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        if (m[i] == '\n') {
            assert_true(i > 0 && m[i - 1] == '\r');
            assert_true(i - 1 - start <= 998);
            start = i + 1;
        } else if (m[i] == '\r') {
            assert_true(i + 1 < len && m[i + 1] == '\n');
        }
    }
    assert_int_equal(start, len); /* ends with CRLF */
}

/* Unstuff and hand the message to Python's email parser; return the
 * script's output (what it printed) in out. */
static int python_parse(const char *m, size_t len, const char *script, char *out, size_t cap)
{
    char path[] = "/tmp/ortoo-dsn-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        if (m[i] == '\n') {
            const char *line = m + start;
            size_t n = i + 1 - start;
            if (n >= 3 && line[0] == '.')
                line++, n--;
            fwrite(line, 1, n, f);
            start = i + 1;
        }
    }
    fclose(f);
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c '\nimport email, email.policy, sys\n"
             "m = email.message_from_binary_file(open(\"%s\", \"rb\"), policy=email.policy.default)\n"
             "%s' 2>&1",
             path, script);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t got = fread(out, 1, cap - 1, p);
    out[got] = '\0';
    int rc = pclose(p);
    unlink(path);
    return rc;
}

static void test_wanted(void **state)
{
    (void)state;
    assert_false(dsn_wanted(DSN_FAILED, "", 0));
    assert_false(dsn_wanted(DSN_FAILED, NULL, 0));
    assert_true(dsn_wanted(DSN_FAILED, "a@b", 0));
    assert_false(dsn_wanted(DSN_FAILED, "a@b", SPOOL_NOTIFY_NEVER));
    assert_false(dsn_wanted(DSN_FAILED, "a@b", SPOOL_NOTIFY_SUCCESS));
    assert_true(dsn_wanted(DSN_FAILED, "a@b", SPOOL_NOTIFY_FAILURE | SPOOL_NOTIFY_DELAY));
    assert_true(dsn_wanted(DSN_DELAYED, "a@b", 0));
    assert_false(dsn_wanted(DSN_DELAYED, "a@b", SPOOL_NOTIFY_FAILURE));
    assert_true(dsn_wanted(DSN_DELAYED, "a@b", SPOOL_NOTIFY_DELAY));
    assert_false(dsn_wanted(DSN_DELIVERED, "a@b", 0));
    assert_true(dsn_wanted(DSN_DELIVERED, "a@b", SPOOL_NOTIFY_SUCCESS));
    assert_true(dsn_wanted(DSN_RELAYED, "a@b", SPOOL_NOTIFY_SUCCESS));
    assert_false(dsn_wanted(DSN_RELAYED, "", SPOOL_NOTIFY_SUCCESS));
}

static void test_xtext(void **state)
{
    char out[64];
    (void)state;
    assert_int_equal(dsn_xtext_decode("a+2Bb", 5, out, sizeof out), 3);
    assert_string_equal(out, "a+b");
    assert_int_equal(dsn_xtext_decode("x+0Dy", 5, out, sizeof out), 3);
    assert_string_equal(out, "x?y"); /* a CR never reaches a header */
    assert_int_equal(dsn_xtext_decode("tail+2", 6, out, sizeof out), 6);
    assert_string_equal(out, "tail+2"); /* a cut escape stays as it is */
    assert_int_equal(dsn_xtext_decode("abcdef", 6, out, 4), 3);
    assert_string_equal(out, "abc");
}

static void test_failed_headers_only(void **state)
{
    (void)state;
    struct dsn_params p = params(DSN_FAILED, 0);
    struct dsn_rcpt r[2] = {
        {.rcpt = "b@remote.test", .orcpt = "rfc822;B+40remote.test", .status = "5.1.1",
         .remote_mta = "mx1.remote.test", .diagnostic = "550 5.1.1 <b@remote.test>: no such user",
         .last_attempt = 1764637100},
        {.rcpt = "c@remote.test", .status = "5.7.1", .remote_mta = "mx1.remote.test",
         .diagnostic = "554 5.7.1 rejected"},
    };
    char *m;
    size_t len;
    bool eight = true;
    const char *hdrs = "Received: from x by y; Mon, 1 Dec 2025 00:00:00 +0000\r\n";

    assert_int_equal(dsn_build(&p, r, 2, hdrs, strlen(hdrs), ORIG, strlen(ORIG), &m, &len, &eight), 0);
    check_wire(m, len);
    assert_false(eight);
    assert_non_null(memmem(m, len, "Action: failed\r\n", 16));
    assert_non_null(memmem(m, len, "Original-Recipient: rfc822; B@remote.test\r\n", 43));
    assert_non_null(memmem(m, len, "Final-Recipient: rfc822; c@remote.test\r\n", 40));
    assert_non_null(memmem(m, len, "Original-Envelope-Id: env+id\r\n", 30));
    assert_non_null(memmem(m, len, "text/rfc822-headers", 19));
    assert_null(memmem(m, len, "a line that started", 19)); /* header only */
    assert_non_null(memmem(m, len, "Received: from x by y", 21));

    char out[4096];
    int rc = python_parse(m, len,
                          "assert m.get_content_type() == \"multipart/report\"\n"
                          "assert m.get_param(\"report-type\") == \"delivery-status\"\n"
                          "parts = list(m.iter_parts())\n"
                          "print(len(parts), parts[0].get_content_type(), parts[1].get_content_type(), parts[2].get_content_type())\n"
                          "st = parts[1].get_payload()\n"
                          "print(len(st), st[1][\"Status\"], st[2][\"Status\"], st[1][\"Remote-MTA\"])\n"
                          "print(m[\"To\"], m[\"Auto-Submitted\"])\n",
                          out, sizeof out);
    assert_int_equal(rc, 0);
    assert_string_equal(out, "3 text/plain message/delivery-status text/rfc822-headers\n"
                             "3 5.1.1 5.7.1 dns; mx1.remote.test\n"
                             "a@example.test auto-replied\n");
    free(m);
}

static void test_full_and_stuffing(void **state)
{
    (void)state;
    struct dsn_params p = params(DSN_FAILED, SPOOL_RET_FULL);
    struct dsn_rcpt r = {.rcpt = ".dot@remote.test", .status = "5.0.0"};
    char *m;
    size_t len;

    assert_int_equal(dsn_build(&p, &r, 1, NULL, 0, ORIG, strlen(ORIG), &m, &len, NULL), 0);
    check_wire(m, len);
    assert_non_null(memmem(m, len, "message/rfc822", 14));
    /* the stored (stuffed) line is copied as stored */
    assert_non_null(memmem(m, len, "\r\n..a line that started with a dot\r\n", 36));
    char out[4096];
    int rc = python_parse(m, len,
                          "parts = list(m.iter_parts())\n"
                          "inner = parts[2].get_payload()[0]\n"
                          "print(inner[\"Subject\"], repr(inner.get_content()))\n",
                          out, sizeof out);
    assert_int_equal(rc, 0);
    assert_string_equal(out, "hello '.a line that started with a dot\\nbody\\n'\n");
    free(m);

    /* Too big for RET=FULL: headers only. */
    size_t big = DSN_FULL_MAX + 10;
    char *orig = malloc(big);
    memcpy(orig, ORIG, strlen(ORIG));
    for (size_t i = strlen(ORIG); i < big; i++)
        orig[i] = (i % 80 == 78) ? '\r' : (i % 80 == 79) ? '\n' : 'x';
    orig[big - 2] = '\r';
    orig[big - 1] = '\n';
    assert_int_equal(dsn_build(&p, &r, 1, NULL, 0, orig, big, &m, &len, NULL), 0);
    assert_non_null(memmem(m, len, "text/rfc822-headers", 19));
    assert_true(len < 8192);
    free(m);
    free(orig);
}

static void test_delayed_and_hostile(void **state)
{
    (void)state;
    struct dsn_params p = params(DSN_DELAYED, 0);
    char diag[3000];
    memset(diag, 'A', sizeof diag - 1);
    diag[sizeof diag - 1] = '\0';
    memcpy(diag, "451 4.3.0 \r\nX-Injected: yes ", 28);
    for (int i = 100; i < 2900; i += 90)
        diag[i] = ' ';
    struct dsn_rcpt r = {.rcpt = "b@remote.test\r\nBcc: evil@x", .status = "4.3.0",
                         .remote_mta = "mx\n.remote.test", .diagnostic = diag};
    char *m;
    size_t len;
    bool eight = false;
    char orig8[] = "Subject: caf\xc3\xa9\r\n\r\nbody\r\n";

    assert_int_equal(dsn_build(&p, &r, 1, NULL, 0, orig8, strlen(orig8), &m, &len, &eight), 0);
    check_wire(m, len);
    assert_true(eight);
    assert_non_null(memmem(m, len, "Action: delayed\r\n", 17));
    assert_non_null(memmem(m, len, "Will-Retry-Until: ", 18));
    assert_null(memmem(m, len, "\r\nBcc:", 6));
    assert_null(memmem(m, len, "\r\nX-Injected:", 13));
    char out[4096];
    int rc = python_parse(m, len,
                          "parts = list(m.iter_parts())\n"
                          "st = parts[1].get_payload()\n"
                          "print(st[1][\"Action\"], st[1][\"Final-Recipient\"])\n"
                          "print(m[\"Subject\"])\n",
                          out, sizeof out);
    assert_int_equal(rc, 0);
    assert_string_equal(out, "delayed rfc822; b@remote.test??Bcc: evil@x\n"
                             "Delayed Mail (still being retried)\n");
    free(m);

    /* Never to the null sender. */
    p.sender = "";
    assert_int_equal(dsn_build(&p, &r, 1, NULL, 0, ORIG, strlen(ORIG), &m, &len, NULL), -EINVAL);
    p.sender = "a@b";
    assert_int_equal(dsn_build(&p, &r, 0, NULL, 0, ORIG, strlen(ORIG), &m, &len, NULL), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wanted),
        cmocka_unit_test(test_xtext),
        cmocka_unit_test(test_failed_headers_only),
        cmocka_unit_test(test_full_and_stuffing),
        cmocka_unit_test(test_delayed_and_hostile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
