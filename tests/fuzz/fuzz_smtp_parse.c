/* SPDX-License-Identifier: MIT */
/*
 * fuzz_smtp_parse.c - libFuzzer target for core/smtp_parse.c.  One input
 * drives every parser: it is cut into command lines (smtp_line_next /
 * smtp_line_skip), each line goes through smtp_cmd_parse and, by verb, the
 * MAIL/RCPT/BDAT argument parsers and the mailbox parser; then the same bytes
 * are scanned as DATA, whole and split at a point taken from the input, and
 * dot-stuffed as BDAT.  Besides memory errors (ASan/UBSan), the target checks
 * invariants and traps when one breaks: results do not depend on how the
 * bytes are split, message bytes are exactly the input's, and stuffed output
 * never holds a terminator before its end.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/smtp_parse.c"

#define CHECK(x) do { if (!(x)) __builtin_trap(); } while (0)

static void fuzz_args(const char *line, size_t len)
{
    struct smtp_cmd c;
    if (smtp_cmd_parse(line, len, &c) != SMTP_P_OK)
        return;
    CHECK(c.arg >= line && c.arg + c.arg_len <= line + len);
    switch (c.verb) {
    case SMTP_V_MAIL: {
        struct smtp_mail_args m;
        if (smtp_mail_parse(c.arg, c.arg_len, &m) == SMTP_P_OK && !m.addr.is_null) {
            CHECK(m.path >= c.arg && m.path + m.path_len <= c.arg + c.arg_len);
            CHECK(m.addr.local_len <= 64 && m.addr.domain_len <= 255);
            CHECK(m.smtputf8 || !m.addr.is_utf8);
        }
        break;
    }
    case SMTP_V_RCPT: {
        struct smtp_rcpt_args r;
        for (int u = 0; u < 2; u++) {
            if (smtp_rcpt_parse(c.arg, c.arg_len, u, &r) == SMTP_P_OK) {
                CHECK(r.path >= c.arg && r.path + r.path_len <= c.arg + c.arg_len);
                CHECK(u || !r.addr.is_utf8);
            }
        }
        break;
    }
    case SMTP_V_BDAT: {
        uint64_t n;
        bool last;
        smtp_bdat_parse(c.arg, c.arg_len, &n, &last);
        break;
    }
    default: {
        struct smtp_addr a;
        smtp_addr_parse(c.arg, c.arg_len, true, &a);
        smtp_xtext_valid(c.arg, c.arg_len);
        break;
    }
    }
    (void)smtp_verb_name(c.verb);
}

static void fuzz_lines(const char *d, size_t n, size_t max)
{
    bool skipping = false;
    size_t pos = 0;
    while (pos < n) {
        size_t ll = 0, used = 0;
        int rc;
        if (skipping) {
            rc = smtp_line_skip(d + pos, n - pos, &used);
            skipping = rc != SMTP_P_OK;
        } else {
            rc = smtp_line_next(d + pos, n - pos, max, &ll, &used);
            if (rc == SMTP_P_OK) {
                CHECK(ll + 2 == used && ll + 2 <= max);
                fuzz_args(d + pos, ll);
            } else if (rc == SMTP_P_ETOOLONG) {
                CHECK(used == max);
                skipping = true;
            } else if (rc == SMTP_P_EBARELF) {
                CHECK(used > 0 && d[pos + used - 1] == '\n');
            }
        }
        CHECK(used <= n - pos);
        if (rc == SMTP_P_AGAIN)
            break;
        CHECK(used > 0);
        pos += used;
    }
}

/* Scan d[0..n) as DATA in pieces cut at cut, as the session does. */
static int scan_split(const char *d, size_t n, size_t cut, struct smtp_data_scan *s,
                      size_t *msg_total, size_t *end)
{
    char *pend = malloc(n + 1);
    size_t plen = 0, base = 0, pos = 0;
    int rc = SMTP_P_AGAIN;
    smtp_data_scan_init(s);
    *msg_total = 0;
    for (int k = 0; k < 2 && rc == SMTP_P_AGAIN; k++) {
        size_t to = k == 0 ? cut : n;
        memcpy(pend + plen, d + pos, to - pos);
        plen += to - pos;
        pos = to;
        size_t ml, used;
        rc = smtp_data_scan(s, pend, plen, &ml, &used);
        CHECK(ml <= used && used <= plen);
        CHECK(memcmp(pend, d + base, ml) == 0);
        *msg_total += ml;
        if (rc == SMTP_P_DONE) {
            CHECK(used == ml + 3 && memcmp(pend + ml, ".\r\n", 3) == 0);
            *end = base + used;
        } else {
            CHECK(ml == used && plen - used <= 2);
        }
        memmove(pend, pend + used, plen - used);
        plen -= used;
        base += used;
    }
    free(pend);
    CHECK(s->bytes == *msg_total);
    return rc;
}

static void fuzz_data(const char *d, size_t n, size_t cut)
{
    struct smtp_data_scan a, b;
    size_t ma, mb, ea = 0, eb = 0;
    int ra = scan_split(d, n, n, &a, &ma, &ea);
    int rb = scan_split(d, n, cut, &b, &mb, &eb);
    CHECK(ra == rb && ma == mb && ea == eb);
    if (ra == SMTP_P_DONE)
        CHECK(a.bad == b.bad && a.long_line == b.long_line);
}

static void fuzz_stuff(const char *d, size_t n, size_t cut)
{
    struct smtp_data_scan s, t;
    char *out = malloc(2 * n + 8);
    size_t o = 0;
    smtp_data_scan_init(&s);
    o += smtp_bdat_stuff(&s, d, cut, out);
    o += smtp_bdat_stuff(&s, d + cut, n - cut, out + o);
    CHECK(o <= 2 * n && s.bytes == o);
    /* Terminate as a relay would and scan: the end is the appended one. */
    if (o < 2 || out[o - 2] != '\r' || out[o - 1] != '\n') {
        memcpy(out + o, "\r\n", 2);
        o += 2;
    }
    memcpy(out + o, ".\r\n", 3);
    o += 3;
    size_t ml, used;
    smtp_data_scan_init(&t);
    CHECK(smtp_data_scan(&t, out, o, &ml, &used) == SMTP_P_DONE);
    CHECK(used == o);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *d = (const char *)data;
    size_t cut = size > 0 ? ((size_t)data[0] * 257u) % (size + 1) : 0;

    fuzz_lines(d, size, SMTP_MAX_CMD_LINE);
    fuzz_lines(d, size, 16);
    fuzz_data(d, size, cut);
    fuzz_stuff(d, size, cut);
    return 0;
}
