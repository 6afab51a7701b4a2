/* SPDX-License-Identifier: MIT */
/*
 * text.h - small text helpers that every layer shares, so that each one is
 * written once: a message formatted into the caller's error buffer (the
 * "char *err, size_t errlen" convention of the loaders and the CLI) and a
 * growable string (struct text_buf) for whatever is assembled piece by
 * piece: file contents, rewritten files, header fields, rendered figures;
 * the host-name syntax that domains, selectors and the greeting name
 * share; the "HOST:PORT" form of listeners and command-line servers; and
 * a whole small file read into memory (the loaders' config, users and
 * aliases files).
 *
 * No locks, no I/O but text_read_file's; one of the lowest modules with
 * io/log.h, so everything may include it.
 */
#ifndef ORTOO_TEXT_H
#define ORTOO_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>

/*
 * printf into err[errlen], cut to fit and always NUL-terminated; does
 * nothing when err is NULL or errlen is 0.  For functions that return -1
 * "with err set".
 */
void text_seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * A growable byte string.  Zero it to start ({0}); free(p) when done.
 * Invariants: p is NULL until the first append, then NUL-terminated at
 * p[len] (the NUL not counted; the bytes before it may hold NULs of their
 * own); len < cap.  Once an append has failed, oom is set and every later
 * append fails too without changing anything, so a run of appends may be
 * checked once at the end.
 */
struct text_buf {
    char *p;        /* owned */
    size_t len;     /* bytes held, the final NUL excluded */
    size_t cap;     /* bytes allocated */
    bool oom;       /* an append failed: the text is cut */
};

/* Free p and zero b, ready for reuse. */
void text_free(struct text_buf *b);
/* Append len bytes of s (len 0 still makes p a valid empty string).
 * Returns 0, or -ENOMEM (oom set). */
int text_add(struct text_buf *b, const void *s, size_t len);
/* Append the C string s.  Returns 0 or -ENOMEM. */
int text_add_str(struct text_buf *b, const char *s);
/* Append printf output, of any length.  Returns 0 or -ENOMEM. */
int text_printf(struct text_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Append the whole file at path to out (see text_add: NUL-terminated, a
 * valid empty string for an empty file).  At most max bytes: a larger file
 * is -EFBIG.  st, when not NULL, gets the file's fstat.  Returns 0 or
 * -errno: open(2)'s (-ENOENT for a missing file), read(2)'s, -EFBIG or
 * -ENOMEM; out may then hold part of the file (the caller frees it).
 * Blocking.
 */
int text_read_file(const char *path, size_t max, struct text_buf *out, struct stat *st);

/*
 * Host-name syntax (RFC 1035 2.3.1, RFC 1123 2.1): dot-separated labels of
 * ASCII letters, digits and hyphens, 1 to 63 octets each, none starting or
 * ending with a hyphen, at most 253 octets in all, no trailing dot.  Such a
 * name is also safe as a path element.  Returns NULL when s[0..len) is one,
 * else why not, as a phrase to follow the name ("has a label starting with
 * '-'"; static text).
 */
const char *text_hostname_check(const char *s, size_t len);

/*
 * Split "HOST:PORT" or "[HOST]:PORT" (brackets around an IPv6 literal; a
 * HOST without them holds no ':').  *host and *hostlen point into s (HOST
 * may be empty: the caller decides), *bracketed says whether it was in
 * brackets, *port is PORT: 1 to 5 digits, at most 65535 (0 passes).
 * Returns 0, or -1 when s has no such shape.
 */
int text_host_port(const char *s, const char **host, size_t *hostlen, bool *bracketed,
                   unsigned *port);

#endif
