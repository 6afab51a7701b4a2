/* SPDX-License-Identifier: MIT */
/*
 * spf_record.c - SPF record parsing and macro expansion (see spf_record.h).
 *
 * Written here because the SPF libraries Debian has (libspf2) do their own
 * blocking DNS inside the evaluation, which a reactor cannot use; the
 * syntax and the macros are the part worth sharing with an asynchronous
 * evaluator.  The parser is a loop over space-separated terms; each term is
 * matched against the mechanism names, then split into its domain-spec and
 * CIDR suffix.  Macro syntax is checked with the same scanner that expands,
 * run into a scratch buffer.
 */
#include "resolver/spf_record.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_alnum(char c) { return is_alpha(c) || is_digit(c); }
static bool is_delim(char c) { return c != '\0' && strchr(".-+,/_=", c) != NULL; }

bool spf_record_is_spf(const char *txt, size_t len)
{
    return len >= 6 && strncasecmp(txt, "v=spf1", 6) == 0 && (len == 6 || txt[6] == ' ');
}

/* ---- macro expansion (RFC 7208 7) ---- */

struct mout {
    char *p;
    size_t cap, len;
    bool full;
};

static void mput(struct mout *o, const char *s, size_t n)
{
    if (o->full || n >= o->cap - o->len) {
        o->full = true;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

/* The value of a macro letter (lowercase) into buf.  Returns its length or
 * -EINVAL. */
static int macro_value(char letter, const struct spf_macro_ctx *c, bool explain, char *buf,
                       size_t cap)
{
    const char *at = c->sender ? strrchr(c->sender, '@') : NULL;
    const unsigned char *ip = c->ip;

    switch (letter) {
    case 's':
        return snprintf(buf, cap, "%s", c->sender ? c->sender : "");
    case 'l':
        /* 4.3: a sender without a local part is "postmaster". */
        if (at == NULL || at == c->sender)
            return snprintf(buf, cap, "postmaster");
        return snprintf(buf, cap, "%.*s", (int)(at - c->sender), c->sender);
    case 'o':
        return snprintf(buf, cap, "%s", at ? at + 1 : (c->sender ? c->sender : ""));
    case 'd':
        return snprintf(buf, cap, "%s", c->domain ? c->domain : "");
    case 'i':
        if (c->family == AF_INET)
            return snprintf(buf, cap, "%u.%u.%u.%u", ip[0], ip[1], ip[2], ip[3]);
        {
            /* 7.3: IPv6 in dot format, one nibble per label. */
            size_t n = 0;
            for (int k = 0; k < 16 && n + 4 < cap; k++)
                n += (size_t)snprintf(buf + n, cap - n, "%s%x.%x", k ? "." : "", ip[k] >> 4,
                                      ip[k] & 15);
            return (int)n;
        }
    case 'p':
        return snprintf(buf, cap, "%s", c->validated ? c->validated : "unknown");
    case 'v':
        return snprintf(buf, cap, "%s", c->family == AF_INET ? "in-addr" : "ip6");
    case 'h':
        return snprintf(buf, cap, "%s", c->helo ? c->helo : "");
    case 'c':
        if (!explain)
            return -EINVAL;
        if (inet_ntop(c->family, ip, buf, (socklen_t)cap) == NULL)
            return -EINVAL;
        return (int)strlen(buf);
    case 'r':
        if (!explain)
            return -EINVAL;
        return snprintf(buf, cap, "%s", c->receiver ? c->receiver : "unknown");
    case 't':
        if (!explain)
            return -EINVAL;
        return snprintf(buf, cap, "%lld", (long long)c->now);
    default:
        return -EINVAL;
    }
}

/*
 * One "%{...}" at s (s[0] == '%', s[1] == '{'), len bytes available.
 * Appends the expansion to o; *used gets the bytes consumed.  Returns 0 or
 * -EINVAL.
 */
static int macro_one(const char *s, size_t len, const struct spf_macro_ctx *ctx, bool explain,
                     struct mout *o, size_t *used)
{
    char val[1024], delims[8] = "";
    size_t i = 2, ndelims = 0, keep = 0;
    bool reverse = false, upper;
    char letter;

    if (i >= len)
        return -EINVAL;
    letter = s[i++];
    upper = letter >= 'A' && letter <= 'Z';
    letter = (char)tolower((unsigned char)letter);
    if (i < len && is_digit(s[i])) {
        while (i < len && is_digit(s[i])) {
            if (keep < 1000)
                keep = keep * 10 + (size_t)(s[i] - '0');
            i++;
        }
        if (keep == 0)
            return -EINVAL; /* 7.3: the DIGIT transformer is nonzero */
    }
    if (i < len && (s[i] == 'r' || s[i] == 'R')) {
        reverse = true;
        i++;
    }
    while (i < len && is_delim(s[i])) {
        if (ndelims + 1 < sizeof(delims) && strchr(delims, s[i]) == NULL)
            delims[ndelims++] = s[i];
        i++;
    }
    if (i >= len || s[i] != '}')
        return -EINVAL;
    *used = i + 1;

    int vl = macro_value(letter, ctx, explain, val, sizeof(val));
    if (vl < 0)
        return vl;
    if ((size_t)vl >= sizeof(val))
        vl = (int)sizeof(val) - 1;
    if (ndelims == 0)
        delims[0] = '.';

    /* Split into parts, reverse and keep the rightmost `keep`, join with '.'. */
    const char *part[256];
    size_t plen[256], np = 0, start = 0;
    for (size_t k = 0; k <= (size_t)vl && np < 256; k++) {
        if (k == (size_t)vl || strchr(delims, val[k]) != NULL) {
            part[np] = val + start;
            plen[np++] = k - start;
            start = k + 1;
        }
    }
    if (reverse) {
        for (size_t a = 0, b = np - 1; a < b; a++, b--) {
            const char *tp = part[a];
            size_t tl = plen[a];
            part[a] = part[b];
            plen[a] = plen[b];
            part[b] = tp;
            plen[b] = tl;
        }
    }
    size_t first = (keep > 0 && keep < np) ? np - keep : 0;
    for (size_t k = first; k < np; k++) {
        if (k > first)
            mput(o, ".", 1);
        if (!upper) {
            mput(o, part[k], plen[k]);
            continue;
        }
        /* 7.3: uppercase letters URL-escape (RFC 3986 unreserved kept). */
        for (size_t j = 0; j < plen[k]; j++) {
            unsigned char ch = (unsigned char)part[k][j];
            char esc[4];
            if (is_alnum((char)ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~') {
                mput(o, (const char *)&ch, 1);
            } else {
                snprintf(esc, sizeof(esc), "%%%02X", ch);
                mput(o, esc, 3);
            }
        }
    }
    return 0;
}

int spf_macro_expand(const char *s, size_t len, const struct spf_macro_ctx *ctx, bool explain,
                     bool domain, char *out, size_t cap)
{
    struct mout o = {out, cap, 0, cap == 0};
    int rc;

    if (cap > 0)
        out[0] = '\0';
    for (size_t i = 0; i < len;) {
        char c = s[i];
        if (c == '%') {
            if (i + 1 >= len)
                return -EINVAL;
            switch (s[i + 1]) {
            case '%':
                mput(&o, "%", 1);
                i += 2;
                continue;
            case '_':
                mput(&o, " ", 1);
                i += 2;
                continue;
            case '-':
                mput(&o, "%20", 3);
                i += 2;
                continue;
            case '{': {
                size_t used = 0;
                if ((rc = macro_one(s + i, len - i, ctx, explain, &o, &used)) < 0)
                    return rc;
                i += used;
                continue;
            }
            default:
                return -EINVAL;
            }
        }
        /* macro-literal = %x21-24 / %x26-7E; explain-string adds SP. */
        if (!((c >= 0x21 && c <= 0x7e) || (explain && c == ' ')))
            return -EINVAL;
        mput(&o, &c, 1);
        i++;
    }
    if (o.full)
        return -ENOSPC;
    if (domain && o.len > SPF_DOMAIN_MAX) {
        /* Drop labels on the left until it fits (7.3). */
        size_t cut = 0;
        while (o.len - cut > SPF_DOMAIN_MAX) {
            const char *dot = memchr(out + cut, '.', o.len - cut);
            if (dot == NULL)
                return -EINVAL;
            cut = (size_t)(dot - out) + 1;
        }
        memmove(out, out + cut, o.len - cut + 1);
        o.len -= cut;
    }
    return (int)o.len;
}

/* ---- parsing (RFC 7208 12) ---- */

/* A macro-string is well formed (syntax only). */
static bool macro_string_ok(const char *s, size_t len)
{
    static const unsigned char ip[16];
    const struct spf_macro_ctx ctx = {.sender = "a@b", .domain = "b", .family = AF_INET,
                                      .ip = ip, .helo = "b"};
    char scratch[4096];
    /* Expansion into a scratch buffer checks the syntax; -ENOSPC only
     * means it is long. */
    int rc = spf_macro_expand(s, len, &ctx, false, false, scratch, sizeof(scratch));
    return rc >= 0 || rc == -ENOSPC;
}

/* domain-spec = macro-string domain-end;
 * domain-end = ( "." toplabel [ "." ] ) / macro-expand */
static bool domain_spec_ok(struct spf_slice d)
{
    size_t n = d.len, end, start;

    if (n == 0 || !macro_string_ok(d.p, n))
        return false;
    /* Does the macro-string end with a macro-expand? */
    bool last_macro = false;
    for (size_t i = 0; i < n;) {
        if (d.p[i] == '%' && i + 1 < n && d.p[i + 1] == '{') {
            const char *close = memchr(d.p + i, '}', n - i);
            i = (size_t)(close - d.p) + 1; /* well formed: checked above */
            last_macro = true;
        } else if (d.p[i] == '%') {
            i += 2; /* %%, %_, %- are macro-expands too */
            last_macro = true;
        } else {
            i++;
            last_macro = false;
        }
    }
    if (last_macro)
        return true;
    end = n;
    if (d.p[end - 1] == '.')
        end--;
    start = end;
    while (start > 0 && d.p[start - 1] != '.')
        start--;
    if (start == 0 || start == end)
        return false; /* no "." before the top label, or an empty one */
    /* toplabel = ( *alphanum ALPHA *alphanum ) /
     *            ( 1*alphanum "-" *( alphanum / "-" ) alphanum ) */
    bool alpha = false, hyphen = false;
    for (size_t k = start; k < end; k++) {
        char c = d.p[k];
        if (is_alpha(c))
            alpha = true;
        else if (c == '-')
            hyphen = true;
        else if (!is_digit(c))
            return false;
    }
    if (hyphen)
        return d.p[start] != '-' && d.p[end - 1] != '-';
    return alpha;
}

/* "/N" with no leading zero, N <= max.  Returns chars used, or 0. */
static size_t cidr_parse(const char *s, size_t len, unsigned max, unsigned *out)
{
    unsigned v = 0;
    size_t i = 1;

    if (len < 2 || s[0] != '/' || !is_digit(s[1]))
        return 0;
    if (s[1] == '0' && len > 2 && is_digit(s[2]))
        return 0;
    while (i < len && is_digit(s[i]) && i < 5)
        v = v * 10 + (unsigned)(s[i++] - '0');
    if (v > max)
        return 0;
    *out = v;
    return i;
}

/* dual-cidr-length = [ ip4-cidr-length ] [ "/" ip6-cidr-length ]; the
 * whole of s must be used. */
static bool dual_cidr(const char *s, size_t len, struct spf_term *t)
{
    size_t n = 0;
    if (len == 0)
        return true;
    if (len >= 2 && s[0] == '/' && s[1] != '/') {
        n = cidr_parse(s, len, 32, &t->cidr4);
        if (n == 0)
            return false;
    }
    if (n == len)
        return true;
    if (s[n] != '/')
        return false;
    size_t m = cidr_parse(s + n + 1, len - n - 1, 128, &t->cidr6);
    return m != 0 && n + 1 + m == len;
}

/* Where the CIDR suffix of a mechanism argument starts: the first '/'
 * outside a macro (a '/' may be a macro delimiter). */
static size_t cidr_start(const char *s, size_t len)
{
    bool in_macro = false;
    for (size_t i = 0; i < len; i++) {
        if (!in_macro && s[i] == '%' && i + 1 < len && s[i + 1] == '{')
            in_macro = true;
        else if (in_macro && s[i] == '}')
            in_macro = false;
        else if (!in_macro && s[i] == '/')
            return i;
    }
    return len;
}

static bool word_ieq(const char *s, size_t len, const char *w)
{
    return strlen(w) == len && strncasecmp(s, w, len) == 0;
}

/* One term s[0..len) (no spaces). */
static int term_parse(const char *s, size_t len, struct spf_record *r)
{
    static const struct {
        const char *name;
        enum spf_mech mech;
        char arg;  /* 'n': none, 'o': optional domain, 'r': required domain, 'i': ip */
        bool cidr; /* takes a dual CIDR length */
    } mechs[] = {
        {"all", SPF_M_ALL, 'n', false},         {"include", SPF_M_INCLUDE, 'r', false},
        {"a", SPF_M_A, 'o', true},              {"mx", SPF_M_MX, 'o', true},
        {"ptr", SPF_M_PTR, 'o', false},         {"ip4", SPF_M_IP4, 'i', true},
        {"ip6", SPF_M_IP6, 'i', true},          {"exists", SPF_M_EXISTS, 'r', false},
    };
    const char *eq = memchr(s, '=', len), *colon;
    size_t nlen;

    /* A modifier: name "=" macro-string, the name before any ':' or '/'. */
    nlen = 0;
    while (nlen < len && s[nlen] != ':' && s[nlen] != '/' && s[nlen] != '=')
        nlen++;
    if (eq != NULL && (size_t)(eq - s) == nlen) {
        struct spf_slice v = {eq + 1, len - nlen - 1};
        if (nlen == 0 || !is_alpha(s[0]))
            return -EINVAL;
        for (size_t k = 1; k < nlen; k++)
            if (!is_alnum(s[k]) && s[k] != '-' && s[k] != '_' && s[k] != '.')
                return -EINVAL;
        if (word_ieq(s, nlen, "redirect") || word_ieq(s, nlen, "exp")) {
            struct spf_slice *dst = word_ieq(s, nlen, "exp") ? &r->exp : &r->redirect;
            if (dst->p != NULL || !domain_spec_ok(v))
                return -EINVAL; /* 6: at most once each */
            *dst = v;
            return 0;
        }
        return macro_string_ok(v.p, v.len) ? 0 : -EINVAL; /* unknown: ignored */
    }

    struct spf_term t = {.qualifier = SPF_PASS, .cidr4 = 32, .cidr6 = 128};
    if (len > 0 && strchr("+-~?", s[0]) != NULL) {
        t.qualifier = (enum spf_qualifier)s[0];
        s++;
        len--;
    }
    colon = memchr(s, ':', len);
    nlen = 0;
    while (nlen < len && s[nlen] != ':' && s[nlen] != '/')
        nlen++;
    size_t m;
    for (m = 0; m < sizeof(mechs) / sizeof(mechs[0]); m++)
        if (word_ieq(s, nlen, mechs[m].name))
            break;
    if (m == sizeof(mechs) / sizeof(mechs[0]))
        return -EINVAL; /* unknown mechanism: permerror (5) */
    t.mech = mechs[m].mech;
    const char *arg = s + nlen;
    size_t alen = len - nlen;
    bool has_colon = colon != NULL && colon == arg;

    switch (mechs[m].arg) {
    case 'n':
        if (alen != 0)
            return -EINVAL;
        break;
    case 'r':
    case 'o': {
        if (!has_colon && (mechs[m].arg == 'r' || (alen > 0 && (!mechs[m].cidr || arg[0] != '/'))))
            return -EINVAL;
        size_t dstart = has_colon ? 1 : 0;
        size_t cs = mechs[m].cidr ? dstart + cidr_start(arg + dstart, alen - dstart) : alen;
        t.domain = (struct spf_slice){arg + dstart, cs - dstart};
        if (has_colon && !domain_spec_ok(t.domain))
            return -EINVAL;
        if (!has_colon)
            t.domain = (struct spf_slice){NULL, 0};
        if (!dual_cidr(arg + cs, alen - cs, &t))
            return -EINVAL;
        break;
    }
    case 'i': {
        char buf[INET6_ADDRSTRLEN + 1];
        if (!has_colon)
            return -EINVAL;
        size_t cs = 1;
        while (cs < alen && arg[cs] != '/')
            cs++;
        if (cs - 1 == 0 || cs - 1 >= sizeof(buf))
            return -EINVAL;
        memcpy(buf, arg + 1, cs - 1);
        buf[cs - 1] = '\0';
        if (t.mech == SPF_M_IP4) {
            if (inet_pton(AF_INET, buf, &t.ip4) != 1)
                return -EINVAL;
            if (cs < alen && (cidr_parse(arg + cs, alen - cs, 32, &t.cidr4) != alen - cs))
                return -EINVAL;
        } else {
            if (inet_pton(AF_INET6, buf, &t.ip6) != 1)
                return -EINVAL;
            if (cs < alen && (cidr_parse(arg + cs, alen - cs, 128, &t.cidr6) != alen - cs))
                return -EINVAL;
        }
        break;
    }
    }
    if (r->nterms == SPF_TERMS_MAX)
        return -E2BIG;
    r->terms[r->nterms++] = t;
    return 0;
}

int spf_record_parse(const char *txt, size_t len, struct spf_record *out, const char **err_at)
{
    size_t i = 6;

    memset(out, 0, sizeof(*out));
    if (err_at != NULL)
        *err_at = NULL;
    if (!spf_record_is_spf(txt, len))
        return -ENOENT;
    while (i < len) {
        if (txt[i] == ' ') {
            i++;
            continue;
        }
        size_t start = i;
        while (i < len && txt[i] != ' ')
            i++;
        int rc = term_parse(txt + start, i - start, out);
        if (rc < 0) {
            if (err_at != NULL)
                *err_at = txt + start;
            return rc;
        }
    }
    return 0;
}
