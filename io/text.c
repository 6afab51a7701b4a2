/* SPDX-License-Identifier: MIT */
/*
 * text.c - the shared text helpers (see text.h).
 */
#include "io/text.h"

#include <stdarg.h>
#include <stdio.h>

void text_seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}
