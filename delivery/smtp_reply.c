/* SPDX-License-Identifier: MIT */
/*
 * smtp_reply.c - the client's reply parser and EHLO keyword reader (see
 * smtp_reply.h).
 *
 * Bytes are gathered into the current line (bounded) until its LF; a
 * complete line is checked and its text appended to the reply; the line
 * whose fourth character is not '-' ends the reply (RFC 5321 4.2.1).  The
 * line copy costs little: replies are short, and it is what makes the
 * parser indifferent to how the bytes were split.
 */
#include "delivery/smtp_reply.h"

#include <string.h>
#include <strings.h>

void smtp_reply_parser_init(struct smtp_reply_parser *p)
{
    p->done = false;
    p->line_len = 0;
    p->reply.code = 0;
    p->reply.enhanced[0] = '\0';
    p->reply.nlines = 0;
    p->reply.truncated = false;
    p->reply.text_len = 0;
    p->reply.text[0] = '\0';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/*
 * RFC 2034 4 / RFC 3463 2: "class.subject.detail" at the start of the
 * text, class 2, 4 or 5 (agreeing with the reply code's class), subject
 * and detail of 1 to 3 digits, then a space or the end of the line.
 */
static void enhanced_take(struct smtp_reply *r, const char *t, size_t len, int code)
{
    size_t i = 0, n;

    if (len < 5 || (t[0] != '2' && t[0] != '4' && t[0] != '5') || t[0] - '0' != code / 100 ||
        t[1] != '.')
        return;
    i = 2;
    for (int part = 0; part < 2; part++) {
        for (n = 0; i < len && is_digit(t[i]) && n < 4; i++, n++)
            ;
        if (n == 0 || n > 3)
            return;
        if (part == 0) {
            if (i >= len || t[i] != '.')
                return;
            i++;
        }
    }
    if (i < len && t[i] != ' ')
        return;
    memcpy(r->enhanced, t, i);
    r->enhanced[i] = '\0';
}

/* Append a line's text to the reply, '\n'-separated, within the bound. */
static void text_append(struct smtp_reply *r, const char *t, size_t len)
{
    size_t room;

    if (r->nlines > 0) {
        if (r->text_len >= SMTP_REPLY_TEXT_MAX) {
            r->truncated = true;
            return;
        }
        r->text[r->text_len++] = '\n';
    }
    room = SMTP_REPLY_TEXT_MAX - r->text_len;
    if (len > room) {
        len = room;
        r->truncated = true;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)t[i];
        r->text[r->text_len++] = (ch < 0x20 && ch != '\t') || ch == 0x7f ? '?' : (char)ch;
    }
    r->text[r->text_len] = '\0';
}

/* A complete line (without CR LF).  Returns SMTP_R_DONE when it ends the
 * reply, SMTP_R_AGAIN when more lines follow, or an error. */
static int line_done(struct smtp_reply_parser *p, const char *l, size_t len)
{
    struct smtp_reply *r = &p->reply;
    bool last;
    int code;

    if (len < 3 || l[0] < '2' || l[0] > '5' || !is_digit(l[1]) || !is_digit(l[2]))
        return SMTP_R_ESYNTAX;
    if (len == 3 || l[3] == ' ')
        last = true;
    else if (l[3] == '-')
        last = false;
    else
        return SMTP_R_ESYNTAX;
    if (r->nlines >= SMTP_REPLY_LINES_MAX)
        return SMTP_R_ETOOMANY;
    code = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
    if (r->nlines == 0 && len > 4)
        enhanced_take(r, l + 4, len - 4, code);
    text_append(r, len > 4 ? l + 4 : "", len > 4 ? len - 4 : 0);
    r->nlines++;
    r->code = code;
    if (last && r->enhanced[0] != '\0' && r->enhanced[0] - '0' != code / 100)
        r->enhanced[0] = '\0'; /* a class that disagrees with the final code */
    return last ? SMTP_R_DONE : SMTP_R_AGAIN;
}

int smtp_reply_parse(struct smtp_reply_parser *p, const char *buf, size_t len, size_t *consumed)
{
    size_t i = 0;

    if (p->done)
        smtp_reply_parser_init(p);
    while (i < len) {
        const char *lf = memchr(buf + i, '\n', len - i);
        size_t take = lf != NULL ? (size_t)(lf - (buf + i)) : len - i;
        int rc;

        if (p->line_len + take >= SMTP_REPLY_LINE_MAX)
            return SMTP_R_ETOOLONG; /* the LF must fit too: CRLF counts */
        memcpy(p->line + p->line_len, buf + i, take);
        p->line_len += take;
        i += take;
        if (lf == NULL)
            break;
        i++; /* the LF */
        {
            size_t l = p->line_len;
            if (l > 0 && p->line[l - 1] == '\r')
                l--;
            p->line_len = 0;
            rc = line_done(p, p->line, l);
        }
        if (rc < 0)
            return rc;
        if (rc == SMTP_R_DONE) {
            p->done = true;
            *consumed = i;
            return SMTP_R_DONE;
        }
    }
    *consumed = len;
    return SMTP_R_AGAIN;
}

/* Does the keyword at line[0..len) equal kw (case-insensitive), followed by
 * the end, a space or (for AUTH=) an '='? */
static bool kw_is(const char *line, size_t len, const char *kw, size_t *after)
{
    size_t k = strlen(kw);

    if (len < k || strncasecmp(line, kw, k) != 0)
        return false;
    if (len > k && line[k] != ' ' && line[k] != '=')
        return false;
    *after = len > k ? k + 1 : k;
    return true;
}

/* Parse the AUTH mechanism list line[from..len). */
static unsigned auth_mechs(const char *line, size_t len, size_t from)
{
    unsigned m = 0;
    size_t i = from;

    while (i < len) {
        size_t s;
        while (i < len && line[i] == ' ')
            i++;
        s = i;
        while (i < len && line[i] != ' ')
            i++;
        if (i - s == 5 && strncasecmp(line + s, "PLAIN", 5) == 0)
            m |= SMTP_AUTH_PLAIN;
        else if (i - s == 5 && strncasecmp(line + s, "LOGIN", 5) == 0)
            m |= SMTP_AUTH_LOGIN;
    }
    return m;
}

void smtp_ehlo_parse(const struct smtp_reply *r, struct smtp_ehlo *out)
{
    static const struct {
        const char *kw;
        unsigned bit;
    } table[] = {
        {"PIPELINING", SMTP_EXT_PIPELINING}, {"8BITMIME", SMTP_EXT_8BITMIME},
        {"SMTPUTF8", SMTP_EXT_SMTPUTF8},     {"CHUNKING", SMTP_EXT_CHUNKING},
        {"STARTTLS", SMTP_EXT_STARTTLS},     {"DSN", SMTP_EXT_DSN},
        {"ENHANCEDSTATUSCODES", SMTP_EXT_ENHANCED},
    };
    const char *t = r->text, *end = r->text + r->text_len;
    bool first = true;

    out->ext = 0;
    out->size = 0;
    out->auth = 0;
    while (t < end) {
        const char *nl = memchr(t, '\n', (size_t)(end - t));
        size_t len = nl != NULL ? (size_t)(nl - t) : (size_t)(end - t), after;

        if (!first) {
            for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
                if (kw_is(t, len, table[i].kw, &after) && after == len)
                    out->ext |= table[i].bit;
            if (kw_is(t, len, "SIZE", &after)) {
                uint64_t v = 0;
                bool ok = true;
                for (size_t i = after; i < len && ok; i++) {
                    if (!is_digit(t[i]) || v > (UINT64_MAX - 9) / 10)
                        ok = false;
                    else
                        v = v * 10 + (uint64_t)(t[i] - '0');
                }
                out->ext |= SMTP_EXT_SIZE;
                out->size = ok ? v : 0; /* junk after SIZE: no usable limit */
            } else if (kw_is(t, len, "AUTH", &after)) {
                out->ext |= SMTP_EXT_AUTH;
                out->auth |= auth_mechs(t, len, after);
            }
        }
        first = false;
        if (nl == NULL)
            break;
        t = nl + 1;
    }
}
