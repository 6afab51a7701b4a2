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
 */
#include "io/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
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
