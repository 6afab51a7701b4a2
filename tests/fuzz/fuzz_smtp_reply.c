/* SPDX-License-Identifier: MIT */
/*
 * fuzz_smtp_reply.c - libFuzzer target for delivery/smtp_reply.c.  The input
 * is what a server might send; it is parsed as a stream of replies whole and
 * again cut at two points taken from the input, and every complete reply
 * goes through the EHLO keyword reader.  Besides memory errors (ASan/UBSan),
 * the target traps when an invariant breaks: the results (codes, texts,
 * where each reply ends, the error) do not depend on the cuts; a code is in
 * 200..599; the text is NUL-terminated, bounded and free of CR/LF/NUL; an
 * enhanced code agrees with the reply's class.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "delivery/smtp_reply.c"

#define CHECK(x) do { if (!(x)) __builtin_trap(); } while (0)
#define MAX_REPLIES 64

struct run {
    int n, err;
    int codes[MAX_REPLIES];
    size_t ends[MAX_REPLIES];
    uint64_t text_hash[MAX_REPLIES];
};

static uint64_t hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static void check_reply(const struct smtp_reply *r)
{
    struct smtp_ehlo e;

    CHECK(r->code >= 200 && r->code <= 599);
    CHECK(r->nlines >= 1 && r->nlines <= SMTP_REPLY_LINES_MAX);
    CHECK(r->text_len <= SMTP_REPLY_TEXT_MAX && r->text[r->text_len] == '\0');
    CHECK(strlen(r->text) == r->text_len);
    CHECK(memchr(r->text, '\r', r->text_len) == NULL);
    if (r->enhanced[0] != '\0')
        CHECK(r->enhanced[0] - '0' == r->code / 100 && r->enhanced[1] == '.');
    smtp_ehlo_parse(r, &e);
    CHECK((e.ext & ~0x1ffu) == 0 && (e.auth & ~3u) == 0);
}

static void run_cuts(const char *d, size_t n, size_t c1, size_t c2, struct run *out)
{
    static struct smtp_reply_parser p;
    size_t cuts[3] = {c1, c2, n}, start = 0;

    memset(out, 0, sizeof *out);
    smtp_reply_parser_init(&p);
    for (int c = 0; c < 3; c++) {
        size_t end = cuts[c], pos = start;
        while (pos < end) {
            size_t used = 0;
            int rc = smtp_reply_parse(&p, d + pos, end - pos, &used);
            if (rc < 0) {
                out->err = rc;
                return;
            }
            CHECK(used <= end - pos);
            pos += used;
            if (rc == SMTP_R_DONE) {
                check_reply(&p.reply);
                if (out->n < MAX_REPLIES) {
                    out->codes[out->n] = p.reply.code;
                    out->ends[out->n] = pos;
                    out->text_hash[out->n] = hash(p.reply.text, p.reply.text_len);
                }
                out->n++;
                CHECK(used > 0);
            } else {
                CHECK(rc == SMTP_R_AGAIN && pos == end);
            }
        }
        start = end;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct run a, b;
    size_t c1, c2;

    if (size < 2)
        return 0;
    c1 = size > 2 ? data[0] % (size - 1) : 0;
    c2 = c1 + (size > 2 ? data[1] % (size - c1) : 0);
    run_cuts((const char *)data + 2, size - 2, size - 2, size - 2, &a);
    if (c1 > size - 2)
        c1 = size - 2;
    if (c2 > size - 2)
        c2 = size - 2;
    if (c2 < c1)
        c2 = c1;
    run_cuts((const char *)data + 2, size - 2, c1, c2, &b);
    CHECK(a.n == b.n && a.err == b.err);
    for (int i = 0; i < a.n && i < MAX_REPLIES; i++)
        CHECK(a.codes[i] == b.codes[i] && a.ends[i] == b.ends[i] &&
              a.text_hash[i] == b.text_hash[i]);
    return 0;
}
