/* SPDX-License-Identifier: MIT */
/*
 * log.h - ortoo's logging: one line per event, key=value pairs, to stderr
 * (journald picks it up under systemd).  Thread-safe: each line is formatted
 * into a local buffer and written with a single write(2).
 *
 * The lowest module: everything else may include it.
 */
#ifndef ORTOO_LOG_H
#define ORTOO_LOG_H

#include <stdarg.h>
#include <stddef.h>

enum log_level { LOG_LVL_WARN = 0, LOG_LVL_INFO = 1, LOG_LVL_DEBUG = 2 };

/* Set the program name shown on each line and the most verbose level printed. */
void log_init(const char *progname, enum log_level level);
/* The level in force. */
enum log_level log_get_level(void);

/* Warn with ": strerror(errno)" appended. */
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Warn without errno. */
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* An error that needs a person (data quarantined, state lost); never filtered. */
void log_errx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Log with errno and exit(1). */
_Noreturn void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Log without errno and exit(1). */
_Noreturn void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Escaping for values a client or a remote server supplied (names,
 * addresses, replies), so that one line is always one event (logfmt
 * convention): a value is printed as is when it is non-empty and holds only
 * printable ASCII other than space, '"', '=' and '\\', and valid UTF-8;
 * otherwise it is put in double quotes with '"' and '\\' escaped by a
 * backslash, \n \r \t as such, and every other control character, DEL,
 * invalid UTF-8 and the Unicode line separators (U+0085, U+2028, U+2029) as
 * \xHH per byte.  Every log call that prints such a value goes through here.
 */
#define LOG_Q_SLOTS 8      /* log_q results alive at once per thread */
#define LOG_Q_MAX 1024     /* bytes of one log_q result, NUL included */

/*
 * Escape len bytes of s into out (cap bytes, NUL-terminated, cap >= 8).  A
 * value that does not fit is cut and ends with "..." (inside the quotes).
 * Returns the length written.  Thread-safe, never fails.
 */
size_t log_escape(char *out, size_t cap, const char *s, size_t len);

/*
 * log_escape() into a thread-local buffer: the result stays valid until
 * LOG_Q_SLOTS more log_q/log_qn calls on the same thread, so one log line
 * may use up to LOG_Q_SLOTS of them.  NULL prints as "-".
 *     log_info("session=%s user=%s", id, log_q(user));
 */
const char *log_q(const char *s);
const char *log_qn(const char *s, size_t len);

#endif
