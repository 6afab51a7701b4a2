/* SPDX-License-Identifier: MIT */
/*
 * text.h - small text helpers that every layer shares, so that each one is
 * written once: a message formatted into the caller's error buffer (the
 * "char *err, size_t errlen" convention of the loaders and the CLI).
 *
 * Pure functions, no I/O, no locks; one of the lowest modules with io/log.h,
 * so everything may include it.
 */
#ifndef ORTOO_TEXT_H
#define ORTOO_TEXT_H

#include <stddef.h>

/*
 * printf into err[errlen], cut to fit and always NUL-terminated; does
 * nothing when err is NULL or errlen is 0.  For functions that return -1
 * "with err set".
 */
void text_seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
