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

#endif
