/* SPDX-License-Identifier: MIT */
/*
 * smtp_body.h - the body of a message as it goes out: the stream
 * [prefix][stored wire form] read in contiguous runs, as it is (DATA) or
 * un-dot-stuffed on the fly (BDAT, RFC 3030 2: chunk data is not stuffed).
 * Pure: no I/O, no allocation; the runs point into the caller's bytes, so
 * that the client can hand long runs to the kernel or to SSL_write without
 * a copy.
 *
 * The stored wire form is CRLF lines, dot-stuffed (RFC 5321 4.5.2): every
 * line that starts with '.' has had one more '.' put in front.  Un-stuffing
 * drops the first '.' of every line, across the prefix/data seam and across
 * any cut between runs.
 */
#ifndef ORTOO_SMTP_BODY_H
#define ORTOO_SMTP_BODY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * A cursor.  Invariants: pos <= total == prefix_len + len; with unstuff,
 * bol is true when pos is 0 or the byte before pos is LF, and a '.' at pos
 * with bol set is a stuffing dot (skipped by the next smtp_body_run).
 */
struct smtp_body {
    const char *prefix;  /* borrowed */
    size_t prefix_len;
    const char *data;    /* borrowed */
    size_t len;
    bool unstuff;        /* drop stuffing dots */
    bool bol;            /* at the start of a line */
    size_t pos;          /* offset in the stream */
    size_t total;        /* prefix_len + len */
};

/* A cursor at the start of [prefix][data] (borrowed for its life). */
void smtp_body_init(struct smtp_body *b, const char *prefix, size_t prefix_len, const char *data,
                    size_t len, bool unstuff);

/*
 * The next run of output bytes at the cursor, at most max long: never
 * across the prefix/data seam, and with unstuff never past a line end that
 * a stuffing dot follows (a stuffing dot at the cursor is skipped first).
 * Returns the run's length (0 at the end of the stream, or when max is 0),
 * *p its first byte, *data_off its offset in data (SIZE_MAX in the prefix).
 * The cursor moves only through smtp_body_advance().
 */
size_t smtp_body_run(struct smtp_body *b, size_t max, const char **p, size_t *data_off);

/* Move the cursor past the first n bytes of the run at p. */
void smtp_body_advance(struct smtp_body *b, const char *p, size_t n);

/* Output bytes from the cursor on, up to max (a counting pass: the size of
 * the next BDAT chunk), and whether they reach the end of the stream. */
uint64_t smtp_body_count(const struct smtp_body *b, uint64_t max, bool *reaches_end);

/* True when the stream is empty or ends with LF (DATA then needs only
 * ".\r\n" after it, else "\r\n.\r\n"). */
bool smtp_body_ends_line(const struct smtp_body *b);

#endif
