/* SPDX-License-Identifier: MIT */
/*
 * dsn.c - building delivery status notifications (RFC 3464).
 *
 * The output is written line by line into a growing buffer through
 * out_line(), which dot-stuffs (RFC 5321 4.5.2) every generated line, so the
 * result is in the spool's wire form like any received message.  The
 * original message is copied as stored: it is already in that form.
 *
 * Values that came from outside (recipients, the remote reply, ENVID) go
 * into header fields and the report; they are made safe there: control
 * characters become '?', and long values are folded or cut so that no line
 * exceeds RFC 5322's 998 octets.
 */
#include "delivery/dsn.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "spool/spool.h"

#define DSN_LINE_MAX 998 /* RFC 5322 2.1.1 */
#define DSN_FOLD_AT 76   /* fold generated values around here */

/* A growing output buffer; err latches the first allocation failure. */
struct out {
    char *b;
    size_t len, cap;
    int err;
};

static void out_put(struct out *o, const char *s, size_t n)
{
    if (o->err || n == 0)
        return;
    if (o->len + n > o->cap) {
        size_t cap = o->cap ? o->cap : 4096;
        while (cap < o->len + n)
            cap *= 2;
        char *b = realloc(o->b, cap);
        if (!b) {
            o->err = -ENOMEM;
            return;
        }
        o->b = b;
        o->cap = cap;
    }
    memcpy(o->b + o->len, s, n);
    o->len += n;
}

/* One generated line (without CRLF; must not contain CR or LF): stuffed. */
static void out_line(struct out *o, const char *s, size_t n)
{
    if (n > 0 && s[0] == '.')
        out_put(o, ".", 1);
    out_put(o, s, n);
    out_put(o, "\r\n", 2);
}

static void out_linef(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_linef(struct out *o, const char *fmt, ...)
{
    char line[DSN_LINE_MAX + 1];
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof line)
        n = (int)sizeof line - 1;
    out_line(o, line, (size_t)n);
}

/*
 * A value from outside made safe for a header field: control characters
 * and bytes >= 0x80 become '?' (the report is 7-bit), cut to cap - 1.
 */
static void safe_copy(char *dst, size_t cap, const char *s)
{
    size_t i = 0;

    for (; s && *s && i + 1 < cap; s++)
        dst[i++] = ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f) ? '?' : *s;
    dst[i] = '\0';
}

/*
 * A header field "Name: value" with value folded at spaces near
 * DSN_FOLD_AT columns (RFC 5322 2.2.3); a run without spaces longer than a
 * line is cut at DSN_LINE_MAX.  name NULL: plain text indented by four
 * spaces, wrapped the same way.
 */
static void out_field(struct out *o, const char *name, const char *value)
{
    char line[DSN_LINE_MAX + 1];
    size_t len = (size_t)snprintf(line, sizeof line, name ? "%s: " : "    ", name ? name : "");
    size_t lead = len;
    const char *v = value;

    while (*v) {
        const char *sp = strchr(v, ' ');
        size_t word = sp ? (size_t)(sp - v) : strlen(v);
        if (len + word > DSN_FOLD_AT && len > lead) {
            out_line(o, line, len);
            len = 0;
            line[len++] = ' ';
            if (!name)
                while (len < lead)
                    line[len++] = ' ';
        }
        if (len + word > DSN_LINE_MAX)
            word = DSN_LINE_MAX - len;
        memcpy(line + len, v, word);
        len += word;
        v += word;
        while (*v == ' ')
            v++;
        if (*v && len < DSN_LINE_MAX)
            line[len++] = ' ';
    }
    while (len > 0 && line[len - 1] == ' ')
        len--;
    out_line(o, line, len);
}

/* RFC 5322 3.3 date-time in UTC. */
static void fmt_date(char *buf, size_t cap, int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;

    gmtime_r(&tt, &tm);
    strftime(buf, cap, "%a, %d %b %Y %H:%M:%S +0000", &tm);
}

bool dsn_wanted(enum dsn_kind kind, const char *sender, uint8_t notify)
{
    if (!sender || !*sender)
        return false; /* never to the null sender */
    if (notify & SPOOL_NOTIFY_NEVER)
        return false;
    switch (kind) {
    case DSN_FAILED:
        return notify == 0 || (notify & SPOOL_NOTIFY_FAILURE);
    case DSN_DELAYED:
        return notify == 0 || (notify & SPOOL_NOTIFY_DELAY);
    case DSN_DELIVERED:
    case DSN_RELAYED:
        return (notify & SPOOL_NOTIFY_SUCCESS) != 0;
    }
    return false;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

size_t dsn_xtext_decode(const char *s, size_t len, char *out, size_t cap)
{
    size_t o = 0;

    if (cap == 0)
        return 0;
    for (size_t i = 0; i < len && o + 1 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '+' && i + 2 < len && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            c = (unsigned char)(hexval(s[i + 1]) << 4 | hexval(s[i + 2]));
            i += 2;
        }
        out[o++] = (c < 0x20 || c >= 0x7f) ? '?' : (char)c;
    }
    out[o] = '\0';
    return o;
}

static const char *action_name(enum dsn_kind k)
{
    static const char *const names[] = {"failed", "delayed", "delivered", "relayed"};
    return names[k];
}

/* The end of the header block of a wire-form message (offset of the blank
 * line's first byte, or len if there is none). */
static size_t header_end(const char *m, size_t len)
{
    if (len >= 2 && m[0] == '\r' && m[1] == '\n')
        return 0;
    for (size_t i = 0; i + 3 < len; i++) {
        const char *p = memchr(m + i, '\r', len - i - 3);
        if (!p)
            break;
        i = (size_t)(p - m);
        if (p[1] == '\n' && p[2] == '\r' && p[3] == '\n')
            return i + 2;
    }
    return len;
}

static bool has_8bit(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] & 0x80)
            return true;
    return false;
}

/* The human-readable part. */
static void text_part(struct out *o, const struct dsn_params *p, const struct dsn_rcpt *r,
                      size_t n)
{
    char addr[DSN_LINE_MAX], diag[DSN_LINE_MAX], host[256];

    out_linef(o, "This is the mail system at host %s.", p->reporting_mta);
    out_line(o, "", 0);
    switch (p->kind) {
    case DSN_FAILED:
        out_line(o, "I'm sorry to have to inform you that your message could not", 60);
        out_line(o, "be delivered to one or more recipients. The details follow.", 59);
        break;
    case DSN_DELAYED:
        out_line(o, "Your message could not be delivered yet to one or more", 54);
        out_line(o, "recipients. Delivery will be retried; you do not need to", 56);
        out_line(o, "send it again.", 14);
        if (p->retry_until > 0) {
            char d[64];
            fmt_date(d, sizeof d, p->retry_until);
            out_linef(o, "The mail system will give up at %s.", d);
        }
        break;
    case DSN_DELIVERED:
    case DSN_RELAYED:
        out_line(o, "Your message was delivered to the recipients below (as you asked", 64);
        out_line(o, "with a delivery status notification request).", 46);
        break;
    }
    out_line(o, "", 0);
    out_linef(o, "Queue id: %s", p->queue_id ? p->queue_id : "-");
    out_line(o, "", 0);
    for (size_t i = 0; i < n; i++) {
        safe_copy(addr, sizeof addr - 40, r[i].rcpt);
        out_linef(o, "<%s>: %s", addr, action_name(p->kind));
        if (r[i].remote_mta) {
            safe_copy(host, sizeof host, r[i].remote_mta);
            out_linef(o, "    host %s said:", host);
        }
        if (r[i].diagnostic) {
            safe_copy(diag, sizeof diag, r[i].diagnostic);
            out_field(o, NULL, diag);
        }
        out_line(o, "", 0);
    }
}

/* The message/delivery-status part (RFC 3464 2.1-2.3). */
static void status_part(struct out *o, const struct dsn_params *p, const struct dsn_rcpt *r,
                        size_t n)
{
    char buf[DSN_LINE_MAX + 16], val[DSN_LINE_MAX], d[64];

    out_linef(o, "Reporting-MTA: dns; %s", p->reporting_mta);
    if (p->envid) {
        dsn_xtext_decode(p->envid, strlen(p->envid), buf, 200);
        out_linef(o, "Original-Envelope-Id: %s", buf);
    }
    if (p->queue_id)
        out_linef(o, "X-Ortoo-Queue-ID: %s", p->queue_id);
    fmt_date(d, sizeof d, p->arrival);
    out_linef(o, "Arrival-Date: %s", d);
    for (size_t i = 0; i < n; i++) {
        out_line(o, "", 0); /* each recipient's fields are a block of their own */
        if (r[i].orcpt) {
            const char *semi = strchr(r[i].orcpt, ';');
            if (semi) {
                char type[64];
                size_t tl = (size_t)(semi - r[i].orcpt);
                if (tl >= sizeof type)
                    tl = sizeof type - 1;
                memcpy(type, r[i].orcpt, tl);
                type[tl] = '\0';
                safe_copy(val, sizeof val, type);
                dsn_xtext_decode(semi + 1, strlen(semi + 1), buf, 600);
                char f[2 * DSN_LINE_MAX + 32];
                snprintf(f, sizeof f, "%s; %s", val, buf);
                out_field(o, "Original-Recipient", f);
            }
        }
        safe_copy(val, 600, r[i].rcpt);
        snprintf(buf, sizeof buf, "rfc822; %s", val);
        out_field(o, "Final-Recipient", buf);
        out_linef(o, "Action: %s", action_name(p->kind));
        safe_copy(val, 16, r[i].status ? r[i].status
                                        : p->kind == DSN_FAILED ? "5.0.0"
                                        : p->kind == DSN_DELAYED ? "4.0.0" : "2.0.0");
        out_linef(o, "Status: %s", val);
        if (r[i].remote_mta) {
            safe_copy(val, 256, r[i].remote_mta);
            out_linef(o, "Remote-MTA: dns; %s", val);
        }
        if (r[i].diagnostic) {
            safe_copy(val, 900, r[i].diagnostic);
            snprintf(buf, sizeof buf, "smtp; %s", val);
            out_field(o, "Diagnostic-Code", buf);
        }
        if (r[i].last_attempt > 0) {
            fmt_date(d, sizeof d, r[i].last_attempt);
            out_linef(o, "Last-Attempt-Date: %s", d);
        }
        if (p->kind == DSN_DELAYED && p->retry_until > 0) {
            fmt_date(d, sizeof d, p->retry_until);
            out_linef(o, "Will-Retry-Until: %s", d);
        }
    }
}

int dsn_build(const struct dsn_params *p, const struct dsn_rcpt *r, size_t n,
              const char *orig_headers, size_t orig_headers_len, const char *orig,
              size_t orig_len, char **out, size_t *out_len, bool *eight_bit)
{
    struct out o = {0};
    char boundary[64], d[64], to[DSN_LINE_MAX], mid[DSN_LINE_MAX + 8];
    unsigned char rnd[12];

    *out = NULL;
    *out_len = 0;
    if (n == 0 || !p->sender || !*p->sender || !p->reporting_mta)
        return -EINVAL;
    if (!orig)
        orig_len = 0;
    if (!orig_headers)
        orig_headers_len = 0;

    randombytes_buf(rnd, sizeof rnd);
    int bl = snprintf(boundary, sizeof boundary, "%" PRId64 ".", p->now);
    for (size_t i = 0; i < sizeof rnd && bl + 2 < (int)sizeof boundary; i++)
        bl += snprintf(boundary + bl, sizeof boundary - (size_t)bl, "%02x", rnd[i]);
    boundary[bl] = '\0';
    strcat(boundary, "/ortoo");

    /* Header of the DSN itself. */
    fmt_date(d, sizeof d, p->now);
    out_linef(&o, "Date: %s", d);
    out_linef(&o, "From: Mail Delivery System <MAILER-DAEMON@%s>", p->reporting_mta);
    safe_copy(to, 600, p->sender);
    snprintf(mid, sizeof mid, "<%s>", to);
    out_field(&o, "To", mid);
    switch (p->kind) {
    case DSN_FAILED:
        out_line(&o, "Subject: Undelivered Mail Returned to Sender", 44);
        break;
    case DSN_DELAYED:
        out_line(&o, "Subject: Delayed Mail (still being retried)", 43);
        break;
    default:
        out_line(&o, "Subject: Successful Mail Delivery Report", 40);
        break;
    }
    if (p->message_id)
        safe_copy(mid, sizeof mid, p->message_id);
    else
        snprintf(mid, sizeof mid, "%s.%" PRId64 ".dsn@%s", p->queue_id ? p->queue_id : "x",
                 p->now, p->reporting_mta);
    out_linef(&o, "Message-ID: <%s>", mid);
    out_line(&o, "Auto-Submitted: auto-replied", 28); /* RFC 3834 5 */
    out_line(&o, "MIME-Version: 1.0", 17);
    out_line(&o, "Content-Type: multipart/report; report-type=delivery-status;", 60);
    out_linef(&o, "\tboundary=\"%s\"", boundary);
    out_line(&o, "", 0);
    out_line(&o, "This is a MIME-encapsulated message.", 36);
    out_line(&o, "", 0);

    /* 1. For a person. */
    out_linef(&o, "--%s", boundary);
    out_line(&o, "Content-Description: Notification", 33);
    out_line(&o, "Content-Type: text/plain; charset=us-ascii", 42);
    out_line(&o, "", 0);
    text_part(&o, p, r, n);

    /* 2. For a machine. */
    out_linef(&o, "--%s", boundary);
    out_line(&o, "Content-Description: Delivery report", 36);
    out_line(&o, "Content-Type: message/delivery-status", 37);
    out_line(&o, "", 0);
    status_part(&o, p, r, n);
    out_line(&o, "", 0);

    /* 3. The original: whole with RET=FULL when small enough, else its
     * header (RFC 3461 4.3: without RET the MTA may choose; ortoo returns
     * the header, which is enough to recognise the message). */
    bool full = p->ret == SPOOL_RET_FULL && orig_len + orig_headers_len <= DSN_FULL_MAX;
    size_t body_len = full ? orig_len : header_end(orig, orig_len);
    bool eight = has_8bit(orig_headers, orig_headers_len) || has_8bit(orig, body_len);
    out_linef(&o, "--%s", boundary);
    out_linef(&o, "Content-Description: %s", full ? "Undelivered Message" : "Undelivered Message Headers");
    out_linef(&o, "Content-Type: %s", full ? "message/rfc822" : "text/rfc822-headers");
    if (eight)
        out_line(&o, "Content-Transfer-Encoding: 8bit", 31);
    out_line(&o, "", 0);
    /* Stored bytes are CRLF and dot-stuffed already; prepended fields are
     * CRLF lines that never start with '.'. */
    out_put(&o, orig_headers, orig_headers_len);
    out_put(&o, orig, body_len);
    if (body_len > 0 && (body_len < 2 || orig[body_len - 2] != '\r' || orig[body_len - 1] != '\n'))
        out_put(&o, "\r\n", 2);
    out_line(&o, "", 0);
    out_linef(&o, "--%s--", boundary);

    if (o.err) {
        free(o.b);
        return o.err;
    }
    *out = o.b;
    *out_len = o.len;
    if (eight_bit)
        *eight_bit = eight;
    return 0;
}
