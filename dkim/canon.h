/* SPDX-License-Identifier: MIT */
/*
 * canon.h - the byte-level pieces of DKIM signing and verifying:
 * dot-unstuffing of the stored wire form, and the canonicalizations of
 * RFC 6376 3.4: "simple" (3.4.1 header fields, 3.4.3 body) and "relaxed"
 * (3.4.2, 3.4.4).  The signer uses relaxed only; the verifier meets every
 * combination.
 *
 * Messages are stored as they arrived after DATA: CRLF lines, dot-stuffed
 * (RFC 5321 4.5.2; BDAT chunks are stuffed into the same form).  A verifier
 * sees the message unstuffed, so the signer unstuffs on the fly, feeding
 * slices of the caller's buffer onward without copying them.  The body
 * canonicalizer is incremental: any chunking of the same bytes gives the same
 * output, which goes to a sink (the SHA-256 of the body hash) in runs.
 *
 * Pure code: no I/O, no allocation, no globals.
 */
#ifndef ORTOO_DKIM_CANON_H
#define ORTOO_DKIM_CANON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- dot-unstuffing (RFC 5321 4.5.2) ---- */

/* State across chunks.  A line starts at the beginning of the message and
 * after every LF. */
struct dkim_unstuff {
    bool bol;                   /* the next byte starts a line */
};

typedef void (*dkim_bytes_cb)(void *arg, const char *data, size_t len);

void dkim_unstuff_init(struct dkim_unstuff *u);

/*
 * Pass in[0..len) to cb without the first '.' of each line (the stored form
 * doubles a line-start dot).  cb gets slices of `in` (borrowed, valid during
 * the call), in order, never empty; chunk boundaries may fall anywhere.
 */
void dkim_unstuff_feed(struct dkim_unstuff *u, const char *in, size_t len, dkim_bytes_cb cb,
                       void *arg);

/* Same, copying into out (which may be `in` itself: the output is never
 * longer than the input).  Returns the bytes written. */
size_t dkim_unstuff_copy(struct dkim_unstuff *u, const char *in, size_t len, char *out);

/* The two algorithms of RFC 6376 3.4 (the c= tag). */
enum dkim_canon {
    DKIM_C14N_SIMPLE = 0,
    DKIM_C14N_RELAXED,
};

/* ---- header canonicalization (RFC 6376 3.4.1, 3.4.2) ---- */

/*
 * Canonicalize one header field, field[0..len) = "Name: value" with its
 * folds and with or without the final CRLF: name lower-cased, WSP around the
 * colon removed, the value unfolded, runs of WSP made one SP, WSP at the
 * ends of the value removed; "\r\n" appended when crlf.  out must hold
 * len + 2 bytes.  Returns the bytes written.  The field should hold a
 * colon (the caller parsed it); without one, the name rule is applied to
 * all of it.
 */
size_t dkim_canon_header(const char *field, size_t len, bool crlf, char *out);

/*
 * The same with the algorithm chosen: relaxed as above; simple (3.4.1)
 * copies the field unchanged, its final CRLF removed when !crlf and added
 * when crlf and the field has none (the last field of a message that is all
 * header).  out must hold len + 2 bytes.  Returns the bytes written.
 */
size_t dkim_canon_header_as(enum dkim_canon c, const char *field, size_t len, bool crlf,
                            char *out);

/* ---- body canonicalization (RFC 6376 3.4.3, 3.4.4) ---- */

#define DKIM_CANON_OUT 512

/*
 * Incremental body canonicalizer.
 *
 * Relaxed (3.4.4): WSP at the end of lines is dropped, other runs of WSP
 * become one SP, empty lines at the end of the body are dropped, and a
 * non-empty body ends with exactly one CRLF (added when the last line has
 * none).  An empty body canonicalizes to nothing.
 *
 * Simple (3.4.3): the bytes unchanged, but empty lines at the end of the
 * body are dropped and the body ends with exactly one CRLF (added when the
 * last line has none); an empty body canonicalizes to one CRLF.
 *
 * In both, a CR that is not followed by LF, and an LF without CR, are
 * ordinary bytes (the session refuses such messages anyway).
 *
 * Invariants: pending_crlf counts the line ends since the last byte output;
 * pending_wsp is false in simple mode; out_len < DKIM_CANON_OUT between
 * calls.
 */
struct dkim_body_canon {
    bool simple;                /* 3.4.3 rather than 3.4.4 */
    dkim_bytes_cb sink;         /* receives the canonical body, in runs */
    void *sink_arg;
    uint64_t pending_crlf;      /* line ends not yet output (maybe trailing) */
    bool pending_wsp;           /* a run of WSP not yet output (maybe trailing) */
    bool pending_cr;            /* a CR that may start a CRLF */
    bool any_text;              /* some non-WSP byte was output */
    uint64_t out_bytes;         /* canonical bytes passed to sink so far */
    size_t out_len;             /* bytes staged in out */
    char out[DKIM_CANON_OUT];   /* staging, so that the sink gets runs */
};

/* A relaxed canonicalizer (the signer's). */
void dkim_body_canon_init(struct dkim_body_canon *b, dkim_bytes_cb sink, void *arg);
/* A canonicalizer for algorithm c. */
void dkim_body_canon_init_as(struct dkim_body_canon *b, enum dkim_canon c, dkim_bytes_cb sink,
                             void *arg);
/* Canonicalize body bytes (unstuffed). */
void dkim_body_canon_feed(struct dkim_body_canon *b, const char *data, size_t len);
/* End of body: flush, with the final CRLF rule.  Returns the canonical
 * length.  Feeding after this is a bug. */
uint64_t dkim_body_canon_end(struct dkim_body_canon *b);

#endif
