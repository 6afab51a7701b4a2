/* SPDX-License-Identifier: MIT */
/*
 * canon.c - dot-unstuffing and the canonicalizations (see canon.h).
 *
 * Written here rather than taken from libopendkim: its canonicalizer is tied
 * to its signing and verifying handles, which parse a key again for every
 * message (the cost that made ortoo sign and verify on its own, see
 * dkim/sign.c and dkim/verify.c).  The rules are RFC 6376 3.4.1-3.4.4; the
 * unit tests check the output against hand-made vectors, every signature
 * made against libopendkim, and every verification against libopendkim's.
 */
#include "dkim/canon.h"

#include <string.h>

/* ---- dot-unstuffing ---- */

void dkim_unstuff_init(struct dkim_unstuff *u)
{
    u->bol = true;
}

void dkim_unstuff_feed(struct dkim_unstuff *u, const char *in, size_t len, dkim_bytes_cb cb,
                       void *arg)
{
    size_t start = 0, i = 0;

    if (len == 0)
        return;
    if (u->bol) {
        /* RFC 5321 4.5.2: the receiver deletes the first '.' of a line. */
        if (in[0] == '.')
            start = i = 1;
        u->bol = false;
    }
    while (i < len) {
        const char *lf = memchr(in + i, '\n', len - i);
        if (lf == NULL)
            break;
        size_t j = (size_t)(lf - in) + 1; /* first byte of the next line */
        if (j == len) {
            u->bol = true; /* the next chunk starts a line */
            break;
        }
        if (in[j] == '.') {
            if (j > start)
                cb(arg, in + start, j - start);
            start = j + 1;
        }
        i = j;
    }
    if (len > start)
        cb(arg, in + start, len - start);
}

/* Copy sink for dkim_unstuff_copy; memmove because out may alias in. */
struct copy_sink {
    char *out;
    size_t len;
};

static void copy_bytes(void *arg, const char *data, size_t len)
{
    struct copy_sink *c = arg;
    memmove(c->out + c->len, data, len);
    c->len += len;
}

size_t dkim_unstuff_copy(struct dkim_unstuff *u, const char *in, size_t len, char *out)
{
    struct copy_sink c = {.out = out, .len = 0};
    dkim_unstuff_feed(u, in, len, copy_bytes, &c);
    return c.len;
}

/* ---- header ---- */

static bool is_wsp(char c)
{
    return c == ' ' || c == '\t';
}

size_t dkim_canon_header(const char *field, size_t len, bool crlf, char *out)
{
    const char *colon = memchr(field, ':', len);
    size_t o = 0;

    size_t nlen = colon != NULL ? (size_t)(colon - field) : len;
    while (nlen > 0 && is_wsp(field[nlen - 1]))
        nlen--;
    for (size_t i = 0; i < nlen; i++) {
        char c = field[i];
        out[o++] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    if (colon == NULL) {
        /* Not a field (the caller's bug): the lower-cased bytes, within bounds. */
        if (crlf) {
            out[o++] = '\r';
            out[o++] = '\n';
        }
        return o;
    }
    out[o++] = ':';
    /* The value: unfold (drop CR and LF), one SP per WSP run, none at the
     * ends.  A WSP run is output only when something follows it. */
    bool wsp = false, started = false;
    for (const char *p = colon + 1; p < field + len; p++) {
        char c = *p;
        if (c == '\r' || c == '\n')
            continue;
        if (is_wsp(c)) {
            wsp = true;
            continue;
        }
        if (wsp && started)
            out[o++] = ' ';
        wsp = false;
        started = true;
        out[o++] = c;
    }
    if (crlf) {
        out[o++] = '\r';
        out[o++] = '\n';
    }
    return o;
}

size_t dkim_canon_header_as(enum dkim_canon c, const char *field, size_t len, bool crlf,
                            char *out)
{
    if (c == DKIM_C14N_RELAXED)
        return dkim_canon_header(field, len, crlf, out);
    /* 3.4.1: no change at all. */
    bool has_crlf = len >= 2 && field[len - 2] == '\r' && field[len - 1] == '\n';
    size_t n = has_crlf ? len - 2 : len;
    memcpy(out, field, n);
    if (crlf) {
        out[n++] = '\r';
        out[n++] = '\n';
    }
    return n;
}

/* ---- body ---- */

void dkim_body_canon_init_as(struct dkim_body_canon *b, enum dkim_canon c, dkim_bytes_cb sink,
                             void *arg)
{
    memset(b, 0, sizeof(*b));
    b->simple = c == DKIM_C14N_SIMPLE;
    b->sink = sink;
    b->sink_arg = arg;
}

void dkim_body_canon_init(struct dkim_body_canon *b, dkim_bytes_cb sink, void *arg)
{
    dkim_body_canon_init_as(b, DKIM_C14N_RELAXED, sink, arg);
}

static void out_flush(struct dkim_body_canon *b)
{
    if (b->out_len > 0) {
        b->sink(b->sink_arg, b->out, b->out_len);
        b->out_bytes += b->out_len;
        b->out_len = 0;
    }
}

static void out_byte(struct dkim_body_canon *b, char c)
{
    b->out[b->out_len++] = c;
    if (b->out_len == DKIM_CANON_OUT)
        out_flush(b);
}

/* Output a run of text bytes (no WSP, CR or LF among them, except a bare CR
 * passed alone), after the line ends and the WSP run pending before it. */
static void out_text(struct dkim_body_canon *b, const char *p, size_t n)
{
    for (; b->pending_crlf > 0; b->pending_crlf--) {
        out_byte(b, '\r');
        out_byte(b, '\n');
    }
    if (b->pending_wsp) {
        out_byte(b, ' ');
        b->pending_wsp = false;
    }
    b->any_text = true;
    if (n >= DKIM_CANON_OUT) {
        out_flush(b);
        b->sink(b->sink_arg, p, n);
        b->out_bytes += n;
        return;
    }
    if (b->out_len + n > DKIM_CANON_OUT)
        out_flush(b);
    memcpy(b->out + b->out_len, p, n);
    b->out_len += n;
    if (b->out_len == DKIM_CANON_OUT)
        out_flush(b);
}

/* The bytes that end a run of text. */
static const unsigned char special[256] = {['\t'] = 1, [' '] = 1, ['\r'] = 1, ['\n'] = 1};
static const unsigned char special_simple[256] = {['\r'] = 1, ['\n'] = 1};

void dkim_body_canon_feed(struct dkim_body_canon *b, const char *data, size_t len)
{
    size_t i = 0;

    while (i < len) {
        char c = data[i];
        if (b->pending_cr) {
            b->pending_cr = false;
            if (c == '\n') {
                /* End of line: WSP before it is dropped (3.4.4 a). */
                b->pending_wsp = false;
                b->pending_crlf++;
                i++;
                continue;
            }
            out_text(b, "\r", 1); /* a bare CR is an ordinary byte */
        }
        if (c == '\r') {
            b->pending_cr = true;
            i++;
        } else if (is_wsp(c) && !b->simple) {
            b->pending_wsp = true;
            i++;
        } else {
            /* Simple: WSP is text (3.4.3 changes only the end). */
            const unsigned char *stop = b->simple ? special_simple : special;
            size_t j = i + 1;
            while (j < len && !stop[(unsigned char)data[j]])
                j++;
            out_text(b, data + i, j - i); /* includes a bare LF, alone */
            i = j;
        }
    }
}

uint64_t dkim_body_canon_end(struct dkim_body_canon *b)
{
    if (b->pending_cr) {
        b->pending_cr = false;
        out_text(b, "\r", 1);
    }
    /* 3.4.4 c: trailing empty lines (and a last line of only WSP) go; a
     * non-empty body ends with one CRLF, added if the last line had none.
     * 3.4.3: the same, but an empty body is one CRLF. */
    b->pending_wsp = false;
    b->pending_crlf = 0;
    if (b->any_text || b->simple) {
        out_byte(b, '\r');
        out_byte(b, '\n');
    }
    out_flush(b);
    return b->out_bytes;
}
