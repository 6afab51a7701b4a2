/* SPDX-License-Identifier: MIT */
/*
 * smtp_body.c - the outgoing body cursor (see smtp_body.h).
 *
 * Runs are found with memmem(run, "\n.") rather than byte by byte: a body
 * without lines that start with '.' (the common case) is one run per part,
 * whatever its size.
 */
#include "delivery/smtp_body.h"

#include <string.h>

void smtp_body_init(struct smtp_body *b, const char *prefix, size_t prefix_len, const char *data,
                    size_t len, bool unstuff)
{
    b->prefix = prefix;
    b->prefix_len = prefix != NULL ? prefix_len : 0;
    b->data = data;
    b->len = data != NULL ? len : 0;
    b->unstuff = unstuff;
    b->bol = true; /* the message starts a line */
    b->pos = 0;
    b->total = b->prefix_len + b->len;
}

/* The byte at stream offset i (< total). */
static char byte_at(const struct smtp_body *b, size_t i)
{
    return i < b->prefix_len ? b->prefix[i] : b->data[i - b->prefix_len];
}

size_t smtp_body_run(struct smtp_body *b, size_t max, const char **p, size_t *data_off)
{
    size_t end, n;

    if (b->unstuff && b->bol && b->pos < b->total && byte_at(b, b->pos) == '.') {
        b->pos++; /* RFC 5321 4.5.2: the receiver's side of transparency */
        b->bol = false;
    }
    if (b->pos >= b->total || max == 0)
        return 0;
    if (b->pos < b->prefix_len) {
        end = b->prefix_len;
        *p = b->prefix + b->pos;
        *data_off = SIZE_MAX;
    } else {
        end = b->total;
        *p = b->data + (b->pos - b->prefix_len);
        *data_off = b->pos - b->prefix_len;
    }
    n = end - b->pos;
    if (n > max)
        n = max;
    if (b->unstuff) {
        const char *dot = memmem(*p, n, "\n.", 2);
        if (dot != NULL)
            n = (size_t)(dot - *p) + 1; /* through the LF; the dot is skipped next */
    }
    return n;
}

void smtp_body_advance(struct smtp_body *b, const char *p, size_t n)
{
    b->pos += n;
    if (n > 0)
        b->bol = p[n - 1] == '\n';
}

uint64_t smtp_body_count(const struct smtp_body *b, uint64_t max, bool *reaches_end)
{
    struct smtp_body c = *b;
    uint64_t n = 0;
    const char *p;
    size_t off, r;

    while (n < max && (r = smtp_body_run(&c, (size_t)(max - n), &p, &off)) > 0) {
        smtp_body_advance(&c, p, r);
        n += r;
    }
    /* The end is reached when nothing but a final stuffing dot remains. */
    (void)smtp_body_run(&c, 1, &p, &off);
    *reaches_end = c.pos >= c.total;
    return n;
}

bool smtp_body_ends_line(const struct smtp_body *b)
{
    return b->total == 0 || byte_at(b, b->total - 1) == '\n';
}
