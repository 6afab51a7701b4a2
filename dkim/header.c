/* SPDX-License-Identifier: MIT */
/*
 * header.c - header fields and the From domain (see header.h), shared by
 * the signer (sign.c) and the verifier (verify.c).
 */
#include "dkim/header.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

bool dkim_field_is(const struct dkim_field *f, const char *name)
{
    return strlen(name) == f->name_len && strncasecmp(f->p, name, f->name_len) == 0;
}

long dkim_fields_split(const char *block, size_t len, struct dkim_field **out)
{
    struct dkim_field *f = NULL;
    size_t n = 0, cap = 0, i = 0;

    *out = NULL;
    while (i < len) {
        const char *lf = memchr(block + i, '\n', len - i);
        size_t end = lf != NULL ? (size_t)(lf - block) + 1 : len;
        if (block[i] == ' ' || block[i] == '\t') {
            if (n == 0)
                goto bad;
            f[n - 1].len += end - i;
            i = end;
            continue;
        }
        size_t j = i;
        while (j < end && block[j] != ':' && (unsigned char)block[j] > 32 &&
               (unsigned char)block[j] < 127)
            j++;
        if (j == i || j == end || block[j] != ':')
            goto bad;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 32;
            struct dkim_field *nf = realloc(f, ncap * sizeof(*nf));
            if (nf == NULL) {
                free(f);
                return -ENOMEM;
            }
            f = nf;
            cap = ncap;
        }
        f[n++] = (struct dkim_field){.p = block + i, .len = end - i, .name_len = j - i};
        i = end;
    }
    *out = f;
    return (long)n;
bad:
    free(f);
    return -1;
}

/* Where a scan of an address field is: in a quoted string, or how deep in
 * comments (RFC 5322 3.2.4, 3.2.2). */
struct addr_scan {
    int depth;
    bool quoted;
};

/*
 * Step over *p when it belongs to a quoted string or a comment (a
 * quoted-pair included) or opens one: true then, with *p on the last byte
 * taken.  False for a byte of the field's own structure.
 */
static bool scan_skip(struct addr_scan *sc, const char **p, const char *end)
{
    char c = **p;

    if (sc->quoted || sc->depth > 0) {
        if (c == '\\' && *p + 1 < end)
            (*p)++;
        else if (sc->quoted && c == '"')
            sc->quoted = false;
        else if (!sc->quoted && c == '(')
            sc->depth++;
        else if (!sc->quoted && c == ')')
            sc->depth--;
        return true;
    }
    if (c == '"')
        sc->quoted = true;
    else if (c == '(')
        sc->depth = 1;
    else
        return false;
    return true;
}

/* The domain of the one mailbox in p[0..end) (see dkim_from_domain). */
static bool mailbox_domain(const char *p, const char *end, char *out, size_t cap)
{
    const char *spec = NULL, *spec_end = NULL;
    const char *at = NULL;
    struct addr_scan sc = {0};
    bool in_angle = false, had_angle = false;

    /* The last '@' of the addr-spec outside quotes and comments. */
    const char *last_at = NULL;
    for (; p < end; p++) {
        if (scan_skip(&sc, &p, end))
            continue;
        char c = *p;
        if (c == '<') {
            if (had_angle)
                return false; /* two addresses */
            in_angle = had_angle = true;
            spec = p + 1;
            last_at = NULL;
        } else if (c == '>') {
            if (!in_angle)
                return false;
            in_angle = false;
            spec_end = p;
            at = last_at;
        } else if (c == ',' && !in_angle) {
            return false; /* a mailbox list */
        } else if (c == '@') {
            last_at = p;
        }
    }
    if (sc.quoted || sc.depth > 0 || in_angle)
        return false;
    if (!had_angle) {
        at = last_at;
        spec_end = end;
    } else if (spec == NULL || spec_end == NULL) {
        return false;
    }
    if (at == NULL)
        return false;
    /* The domain: after '@' up to WSP, CR/LF, '(' or the end of the spec. */
    const char *d = at + 1;
    while (d < spec_end && (*d == ' ' || *d == '\t' || *d == '\r' || *d == '\n'))
        d++;
    size_t n = 0;
    while (d + n < spec_end && d[n] != ' ' && d[n] != '\t' && d[n] != '\r' && d[n] != '\n' &&
           d[n] != '(' && d[n] != '>')
        n++;
    if (n == 0 || n >= cap)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = d[i];
        if (c == '[' || c == '"' || c == '@' || c == ';' || c == ',')
            return false; /* a literal or garbage: not a domain we sign for */
        out[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    if (out[n - 1] == '.')
        n--; /* a trailing root dot */
    out[n] = '\0';
    return n > 0;
}

bool dkim_from_domain(const struct dkim_field *f, char *out, size_t cap)
{
    return mailbox_domain(f->p + f->name_len + 1, f->p + f->len, out, cap);
}

int dkim_from_domains(const struct dkim_field *f, char (*out)[DKIM_DOMAIN_MAX + 1], size_t max)
{
    const char *p = f->p + f->name_len + 1, *end = f->p + f->len, *start = p;
    struct addr_scan sc = {0};
    bool in_angle = false;
    size_t n = 0;

    /* Split at commas outside quotes, comments and angle brackets. */
    for (;; p++) {
        if (p < end) {
            if (scan_skip(&sc, &p, end))
                continue;
            if (*p == '<')
                in_angle = true;
            else if (*p == '>')
                in_angle = false;
            if (*p != ',' || in_angle)
                continue;
        }
        char d[DKIM_DOMAIN_MAX + 1];
        if (!mailbox_domain(start, p, d, sizeof(d)))
            return -1;
        bool seen = false;
        for (size_t i = 0; i < n; i++)
            seen = seen || strcmp(out[i], d) == 0;
        if (!seen) {
            if (n == max)
                return -1;
            memcpy(out[n++], d, sizeof(d));
        }
        if (p >= end)
            break;
        start = p + 1;
    }
    return (int)n;
}
