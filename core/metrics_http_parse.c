/* SPDX-License-Identifier: MIT */
/*
 * metrics_http_parse.c - the request head parser of the metrics endpoint
 * (metrics_http_parse, see metrics_http.h): pure, no I/O, so that it is
 * unit-tested at every split point and fuzzed (tests/fuzz/fuzz_metrics_http.c).
 *
 * It reads just what a GET responder needs from RFC 9112: the request line
 * (method, target, version), header fields checked for syntax, the Host
 * rule, and the empty line; bodies, transfer codings and keep-alive are not
 * read because every answer closes the connection.
 */
#include "core/metrics_http.h"

#include <stdint.h>
#include <string.h>
#include <strings.h>

/* RFC 9110 5.6.2 tchar. */
static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool is_token(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!is_tchar((unsigned char)s[i]))
            return false;
    return true;
}

/* Parse the request line [p, p+n).  Sets out; returns false on bad syntax. */
static bool parse_request_line(const char *p, size_t n, struct metrics_http_req *out,
                               int *minor)
{
    const char *sp1 = memchr(p, ' ', n);
    if (sp1 == NULL)
        return false;
    const char *rest = sp1 + 1;
    const char *sp2 = memchr(rest, ' ', (size_t)(p + n - rest));
    if (sp2 == NULL)
        return false;
    size_t mlen = (size_t)(sp1 - p), tlen = (size_t)(sp2 - rest);
    const char *ver = sp2 + 1;
    size_t vlen = (size_t)(p + n - ver);
    if (!is_token(p, mlen) || tlen == 0)
        return false;
    for (size_t i = 0; i < tlen; i++) {
        unsigned char c = (unsigned char)rest[i];
        if (c <= ' ' || c >= 0x7f)
            return false;
    }
    /* RFC 9112 2.3: HTTP-version = "HTTP/" DIGIT "." DIGIT */
    if (vlen != 8 || memcmp(ver, "HTTP/", 5) != 0 || ver[5] < '0' || ver[5] > '9' ||
        ver[6] != '.' || ver[7] < '0' || ver[7] > '9')
        return false;
    *minor = ver[7] - '0';
    if (ver[5] != '1') {
        out->status = 505;
        return true;
    }
    /* RFC 9112 3.2: origin-form, or absolute-form (taken by its path). */
    const char *path = rest;
    size_t plen = tlen;
    if (tlen > 7 && strncasecmp(rest, "http://", 7) == 0) {
        const char *slash = memchr(rest + 7, '/', tlen - 7);
        path = slash != NULL ? slash : "/";
        plen = slash != NULL ? (size_t)(rest + tlen - slash) : 1;
    }
    if (path[0] != '/')
        return false;
    const char *q = memchr(path, '?', plen);
    size_t pl = q != NULL ? (size_t)(q - path) : plen;
    if (pl == 8 && memcmp(path, "/metrics", 8) == 0)
        out->target = METRICS_HTTP_T_METRICS;
    else if (pl == 1)
        out->target = METRICS_HTTP_T_ROOT;
    else
        out->target = METRICS_HTTP_T_OTHER;
    if (mlen == 3 && memcmp(p, "GET", 3) == 0)
        out->status = 200;
    else if (mlen == 4 && memcmp(p, "HEAD", 4) == 0)
        out->status = 200, out->head = true;
    else
        out->status = 405; /* methods are case-sensitive (RFC 9110 9.1) */
    return true;
}

/* A header field line (RFC 9112 5): name ":" OWS value OWS; no space
 * before the colon; no obs-fold; no control characters but HTAB. */
static bool parse_field(const char *p, size_t n, bool *is_host)
{
    const char *colon = memchr(p, ':', n);
    if (colon == NULL || !is_token(p, (size_t)(colon - p)))
        return false;
    for (const char *v = colon + 1; v < p + n; v++) {
        unsigned char c = (unsigned char)*v;
        if ((c < ' ' && c != '\t') || c == 0x7f)
            return false;
    }
    *is_host = colon - p == 4 && strncasecmp(p, "host", 4) == 0;
    return true;
}

int metrics_http_parse(const char *buf, size_t len, struct metrics_http_req *out)
{
    size_t pos = 0;
    bool have_line = false;
    int minor = 0, hosts = 0;

    memset(out, 0, sizeof(*out));
    if (len > METRICS_HTTP_REQ_MAX)
        len = METRICS_HTTP_REQ_MAX;
    for (;;) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        if (nl == NULL)
            break;
        size_t n = (size_t)(nl - (buf + pos));
        const char *line = buf + pos;
        pos += n + 1;
        if (n > 0 && line[n - 1] == '\r')
            n--;
        if (memchr(line, '\r', n) != NULL || memchr(line, '\0', n) != NULL) {
            out->status = 400; /* bare CR, NUL (RFC 9112 2.2) */
            return 1;
        }
        if (!have_line) {
            if (n == 0)
                continue; /* RFC 9112 2.2: empty lines before the request line */
            if (!parse_request_line(line, n, out, &minor)) {
                out->status = 400;
                return 1;
            }
            if (out->status == 505)
                return 1;
            have_line = true;
            continue;
        }
        if (n == 0) {
            /* End of the head.  RFC 9112 3.2: HTTP/1.1 needs exactly one
             * Host; more than one is wrong in any version. */
            if (hosts > 1 || (minor >= 1 && hosts == 0))
                out->status = 400;
            else if (out->status == 200 && out->target == METRICS_HTTP_T_OTHER)
                out->status = 404;
            return 1;
        }
        bool is_host = false;
        if (line[0] == ' ' || line[0] == '\t' || !parse_field(line, n, &is_host)) {
            out->status = 400; /* obs-fold or a malformed field (RFC 9112 5.1, 5.2) */
            return 1;
        }
        hosts += is_host;
    }
    if (len >= METRICS_HTTP_REQ_MAX) {
        out->status = have_line ? 431 : 414;
        return 1;
    }
    return 0;
}
