/* SPDX-License-Identifier: MIT */
/*
 * log.c - ortoo's line logger.
 *
 * Every line reads
 *
 *     2026-11-30T02:40:00.123Z ortoo[1234]: level=info <caller's key=value text>
 *
 * and goes to stderr (journald under systemd) with exactly one write(2), so
 * lines from different threads never interleave.  The line is formatted in a
 * buffer on the caller's stack; nothing here takes a lock.  A line longer
 * than LOG_LINE_MAX is cut and ends with "...".  errno is preserved across
 * every call so that logging never changes what the caller sees.
 *
 * Values that come from outside (a client's names and addresses, a remote
 * server's replies) go through log_escape()/log_q() first: quoted and
 * escaped logfmt-style, so that no value can end a line or fake a key.
 */
#include "io/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 4096   /* one line, including the newline */
#define LOG_NAME_MAX 32     /* program name, truncated beyond */

/* Set once by log_init() before threads start; read by every thread. */
static char log_progname[LOG_NAME_MAX] = "ortoo";
static atomic_int log_level = LOG_LVL_INFO;

void log_init(const char *progname, enum log_level level)
{
    if (progname != NULL && progname[0] != '\0') {
        const char *slash = strrchr(progname, '/');
        snprintf(log_progname, sizeof(log_progname), "%s",
                 slash != NULL ? slash + 1 : progname);
    }
    atomic_store(&log_level, (int)level);
}

/* Write all of buf with one write(2); retried only when a signal cut it. */
static void line_write(const char *buf, size_t len)
{
    ssize_t n;

    do {
        n = write(STDERR_FILENO, buf, len);
    } while (n < 0 && errno == EINTR);
}

/*
 * Format one line and write it.  errnum >= 0 appends ": strerror(errnum)".
 * Borrows fmt/ap; never fails (a line that does not fit is cut).
 */
static void log_vline(const char *level, int errnum, const char *fmt, va_list ap)
{
    char line[LOG_LINE_MAX];
    size_t len = 0;
    struct timespec ts;
    struct tm tm;
    int n;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = snprintf(line, sizeof(line),
                 "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s[%ld]: level=%s ",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                 tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L, log_progname,
                 (long)getpid(), level);
    if (n > 0)
        len = (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;

    /* Keep 2 bytes: room for the newline and the terminating NUL. */
    n = vsnprintf(line + len, sizeof(line) - len - 1, fmt, ap);
    if (n > 0)
        len += (size_t)n < sizeof(line) - len - 1 ? (size_t)n : sizeof(line) - len - 2;

    if (errnum >= 0 && len < sizeof(line) - 2) {
        char ebuf[128];
        const char *msg = strerror_r(errnum, ebuf, sizeof(ebuf));

        n = snprintf(line + len, sizeof(line) - len - 1, ": %s", msg);
        if (n > 0)
            len += (size_t)n < sizeof(line) - len - 1 ? (size_t)n : sizeof(line) - len - 2;
    }
    if (len >= sizeof(line) - 2) {
        /* Cut: say so rather than end mid-value silently. */
        len = sizeof(line) - 2;
        memcpy(line + len - 3, "...", 3);
    }
    line[len++] = '\n';
    line_write(line, len);
}

void log_warn(const char *fmt, ...)
{
    int saved = errno;
    va_list ap;

    va_start(ap, fmt);
    log_vline("warn", saved, fmt, ap);
    va_end(ap);
    errno = saved;
}

void log_warnx(const char *fmt, ...)
{
    int saved = errno;
    va_list ap;

    va_start(ap, fmt);
    log_vline("warn", -1, fmt, ap);
    va_end(ap);
    errno = saved;
}

void log_errx(const char *fmt, ...)
{
    int saved = errno;
    va_list ap;

    va_start(ap, fmt);
    log_vline("error", -1, fmt, ap);
    va_end(ap);
    errno = saved;
}

void log_info(const char *fmt, ...)
{
    int saved = errno;
    va_list ap;

    if (atomic_load_explicit(&log_level, memory_order_relaxed) < LOG_LVL_INFO)
        return;
    va_start(ap, fmt);
    log_vline("info", -1, fmt, ap);
    va_end(ap);
    errno = saved;
}

void log_debug(const char *fmt, ...)
{
    int saved = errno;
    va_list ap;

    if (atomic_load_explicit(&log_level, memory_order_relaxed) < LOG_LVL_DEBUG)
        return;
    va_start(ap, fmt);
    log_vline("debug", -1, fmt, ap);
    va_end(ap);
    errno = saved;
}

_Noreturn void fatal(const char *fmt, ...)
{
    int saved = errno;
    va_list ap;

    va_start(ap, fmt);
    log_vline("fatal", saved, fmt, ap);
    va_end(ap);
    exit(1);
}

_Noreturn void fatalx(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vline("fatal", -1, fmt, ap);
    va_end(ap);
    exit(1);
}

enum log_level log_get_level(void)
{
    return (enum log_level)atomic_load(&log_level);
}

/* ---- escaping client-supplied values (see log.h) ---- */

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if invalid, or if it
 * encodes a Unicode line break (U+0085, U+2028, U+2029) that some readers
 * split lines on.  Overlong forms and surrogates are invalid (RFC 3629 4). */
static size_t utf8_ok(const unsigned char *s, size_t len)
{
    unsigned char c = s[0];
    size_t n;
    uint32_t cp;

    if (c < 0xC2 || c > 0xF4)
        return 0;
    n = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (len < n)
        return 0;
    cp = c & (0x7F >> n);
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF) || cp == 0x85 || cp == 0x2028 || cp == 0x2029)
        return 0;
    return n;
}

/* True when s can be printed bare: non-empty, and no byte that needs quoting. */
static bool value_is_bare(const unsigned char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len;) {
        unsigned char c = s[i];
        if (c >= 0x80) {
            size_t n = utf8_ok(s + i, len - i);
            if (n == 0)
                return false;
            i += n;
            continue;
        }
        if (c <= ' ' || c == 0x7F || c == '"' || c == '=' || c == '\\')
            return false;
        i++;
    }
    return true;
}

size_t log_escape(char *out, size_t cap, const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t o = 0;

    if (cap < 8) {
        if (cap > 0)
            out[0] = '\0';
        return 0;
    }
    if (value_is_bare(s, len) && len < cap) {
        memcpy(out, s, len);
        out[len] = '\0';
        return len;
    }
    /* Room kept for the closing quote, "..." and the NUL. */
    size_t lim = cap - 5;
    out[o++] = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = s[i];
        char esc[8];
        size_t n;

        if (c >= 0x80 && (n = utf8_ok(s + i, len - i)) > 0) {
            if (o + n > lim)
                goto cut;
            memcpy(out + o, s + i, n);
            o += n;
            i += n - 1;
            continue;
        }
        if (c == '"' || c == '\\') {
            esc[0] = '\\', esc[1] = (char)c, n = 2;
        } else if (c == '\n') {
            esc[0] = '\\', esc[1] = 'n', n = 2;
        } else if (c == '\r') {
            esc[0] = '\\', esc[1] = 'r', n = 2;
        } else if (c == '\t') {
            esc[0] = '\\', esc[1] = 't', n = 2;
        } else if (c < ' ' || c >= 0x7F) {
            static const char hex[] = "0123456789abcdef";
            esc[0] = '\\', esc[1] = 'x', esc[2] = hex[c >> 4], esc[3] = hex[c & 15], n = 4;
        } else {
            esc[0] = (char)c, n = 1;
        }
        if (o + n > lim)
            goto cut;
        memcpy(out + o, esc, n);
        o += n;
    }
    out[o++] = '"';
    out[o] = '\0';
    return o;
cut:
    memcpy(out + o, "...\"", 4);
    o += 4;
    out[o] = '\0';
    return o;
}

const char *log_qn(const char *s, size_t len)
{
    static _Thread_local char slots[LOG_Q_SLOTS][LOG_Q_MAX];
    static _Thread_local unsigned next;
    char *out = slots[next++ % LOG_Q_SLOTS];

    if (s == NULL)
        return "-";
    log_escape(out, LOG_Q_MAX, s, len);
    return out;
}

const char *log_q(const char *s)
{
    return log_qn(s, s != NULL ? strlen(s) : 0);
}
