/* SPDX-License-Identifier: MIT */
/*
 * text.c - the shared text helpers (see text.h).
 */
#include "io/text.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void text_seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

void text_free(struct text_buf *b)
{
    free(b->p);
    *b = (struct text_buf){0};
}

/* Make room for need more bytes and the NUL.  Returns 0 or -ENOMEM. */
static int buf_reserve(struct text_buf *b, size_t need)
{
    if (b->oom)
        return -ENOMEM;
    if (need > SIZE_MAX / 2 - b->len) {
        b->oom = true;
        return -ENOMEM;
    }
    if (b->len + need + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + need + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL) {
        b->oom = true;
        return -ENOMEM;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

int text_add(struct text_buf *b, const void *s, size_t len)
{
    if (buf_reserve(b, len) < 0)
        return -ENOMEM;
    if (len > 0)
        memcpy(b->p + b->len, s, len);
    b->len += len;
    b->p[b->len] = '\0';
    return 0;
}

int text_add_str(struct text_buf *b, const char *s)
{
    return text_add(b, s, strlen(s));
}

int text_printf(struct text_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (buf_reserve(b, 0) < 0)
        return -ENOMEM;
    /* Format into the room there is; when it does not fit, grow and again. */
    for (int pass = 0; pass < 2; pass++) {
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        n = vsnprintf(b->p + b->len, room, fmt, ap);
        va_end(ap);
        if (n < 0)
            break;
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return 0;
        }
        if (pass == 0 && buf_reserve(b, (size_t)n) < 0)
            break;
    }
    b->p[b->len] = '\0'; /* a cut attempt leaves nothing */
    b->oom = true;
    return -ENOMEM;
}

int text_read_file(const char *path, size_t max, struct text_buf *out, struct stat *st)
{
    struct stat sb;
    size_t start = out->len;
    int fd = open(path, O_RDONLY | O_CLOEXEC), rc = 0;

    if (fd < 0)
        return -errno;
    if (fstat(fd, st != NULL ? st : &sb) < 0) {
        rc = -errno;
        goto out;
    }
    for (;;) {
        /* At least a 64 KiB chunk of room each time; the NUL after it. */
        if (buf_reserve(out, 65536) < 0) {
            rc = -ENOMEM;
            goto out;
        }
        ssize_t n = read(fd, out->p + out->len, out->cap - out->len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            goto out;
        }
        out->len += (size_t)n;
        out->p[out->len] = '\0';
        if (n == 0)
            break;
        if (out->len - start > max) {
            rc = -EFBIG;
            goto out;
        }
    }
out:
    close(fd);
    return rc;
}

const char *text_hostname_check(const char *s, size_t len)
{
    size_t label = 0;

    if (len == 0 || len > 253)
        return "must be 1 to 253 characters";
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '.') {
            if (label == 0)
                return "has an empty label (leading, trailing or double dot)";
            if (s[i - 1] == '-')
                return "has a label ending with '-'";
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   c == '-') {
            if (c == '-' && label == 0)
                return "has a label starting with '-'";
            if (++label > 63)
                return "has a label longer than 63 characters";
        } else {
            return "may hold only letters, digits, hyphens and dots";
        }
    }
    if (label == 0)
        return "has an empty label (leading, trailing or double dot)";
    if (s[len - 1] == '-')
        return "has a label ending with '-'";
    return NULL;
}

int text_host_port(const char *s, const char **host, size_t *hostlen, bool *bracketed,
                   unsigned *port)
{
    const char *colon;
    unsigned v = 0;

    *bracketed = s[0] == '[';
    if (*bracketed) {
        const char *end = strchr(s, ']');
        if (end == NULL || end[1] != ':')
            return -1;
        *host = s + 1;
        *hostlen = (size_t)(end - *host);
        colon = end + 1;
    } else {
        /* An unbracketed IPv6 address has more than one colon. */
        colon = strchr(s, ':');
        if (colon == NULL || strchr(colon + 1, ':') != NULL)
            return -1;
        *host = s;
        *hostlen = (size_t)(colon - s);
    }
    size_t n = strlen(colon + 1);
    if (n == 0 || n > 5)
        return -1;
    for (const char *p = colon + 1; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (unsigned)(*p - '0');
    }
    if (v > 65535)
        return -1;
    *port = v;
    return 0;
}
