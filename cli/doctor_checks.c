/* SPDX-License-Identifier: MIT */
/*
 * doctor_checks.c - how `ortoo doctor` judges what it gathered (see
 * cli/doctor.h): one function per check, in the order they are printed,
 * each adding findings with what was found, why it matters, and the exact
 * record to publish (zone-file form) or the thing to do.  Also the small
 * parsers of the TXT records involved: the tag-lists of DKIM (RFC 6376
 * 3.2, 3.6.1), DMARC (RFC 7489 6.3-6.4), MTA-STS (RFC 8461 3.1) and TLS-RPT
 * (RFC 8460 3).
 *
 * Pure: reads the gathered answers and the facts loaded from disk, does no
 * I/O, so the unit tests (tests/unit/cli/test_doctor_checks.c) call it with
 * answers they make up.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cli/doctor.h"
#include "core/config.h"
#include "core/dmarc.h"
#include "core/recipients.h"
#include "core/users.h"
#include "dkim/keys.h"
#include "io/tls.h"
#include "resolver/spf_record.h"

const char *dr_status_name(enum dr_status s)
{
    return s == DR_OK ? "OK" : s == DR_WARN ? "WARN" : "FAIL";
}

int doctor_addr_add(struct doctor *dr, int af, const void *ip)
{
    size_t len = af == AF_INET ? sizeof(struct in_addr) : sizeof(struct in6_addr);
    for (size_t i = 0; i < dr->naddrs; i++)
        if (dr->addrs[i].af == af && memcmp(&dr->addrs[i].ip, ip, len) == 0)
            return 0;
    if (dr->naddrs == DR_ADDRS_MAX)
        return -E2BIG;
    struct dr_addr *a = &dr->addrs[dr->naddrs++];
    memset(a, 0, sizeof(*a));
    a->af = af;
    memcpy(&a->ip, ip, len);
    inet_ntop(af, ip, a->text, sizeof(a->text));
    return 0;
}

/* ---- building findings ---- */

/* printf into a new string; NULL (and dr->oom) when out of memory. */
static char *fmt(struct doctor *dr, const char *f, ...) __attribute__((format(printf, 2, 3)));
static char *fmt(struct doctor *dr, const char *f, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, f);
    if (vasprintf(&s, f, ap) < 0) {
        s = NULL;
        dr->oom = true;
    }
    va_end(ap);
    return s;
}

/* Add a finding.  Takes detail and fix (may be NULL); copies why. */
static void add(struct doctor *dr, enum dr_status st, const char *name, const char *subject,
                char *detail, const char *why, char *fix)
{
    if (dr->nchecks == dr->cap) {
        size_t cap = dr->cap ? dr->cap * 2 : 32;
        struct dr_check *n = realloc(dr->checks, cap * sizeof(*n));
        if (n == NULL) {
            dr->oom = true;
            free(detail);
            free(fix);
            return;
        }
        dr->checks = n;
        dr->cap = cap;
    }
    struct dr_check *c = &dr->checks[dr->nchecks++];
    c->name = name;
    c->status = st;
    c->subject = strdup(subject);
    c->detail = detail != NULL ? detail : strdup("(out of memory)");
    c->why = why != NULL ? strdup(why) : NULL;
    c->fix = fix;
    if (c->subject == NULL || c->detail == NULL || (why != NULL && c->why == NULL))
        dr->oom = true;
}

void doctor_checks_free(struct doctor *dr)
{
    for (size_t i = 0; i < dr->nchecks; i++) {
        free(dr->checks[i].subject);
        free(dr->checks[i].detail);
        free(dr->checks[i].why);
        free(dr->checks[i].fix);
    }
    free(dr->checks);
    dr->checks = NULL;
    dr->nchecks = dr->cap = 0;
}

/* ---- answers ---- */

static const struct res_answer *ans_of(const struct dr_lookup *lk)
{
    return lk != NULL ? lk->ans : NULL;
}

/* True when the lookup failed in a way that tells nothing about the
 * records (no answer, server failure, timeout, bogus, local error). */
static bool ans_failed(const struct res_answer *a)
{
    return a == NULL || a->status == RES_SERVFAIL || a->status == RES_TIMEOUT ||
           a->status == RES_BOGUS || a->status == RES_ERROR;
}

/* Why a failed lookup failed, one phrase. */
static char *ans_failure(struct doctor *dr, const struct res_answer *a, const char *what)
{
    if (a == NULL)
        return fmt(dr, "no answer for %s before the deadline", what);
    if (a->status == RES_BOGUS)
        return fmt(dr, "DNSSEC validation failed for %s (bogus: %s)", what,
                   a->why ? a->why : "no reason given");
    return fmt(dr, "the lookup of %s failed (%s%s%s)", what, res_status_name(a->status),
               a->why ? ": " : "", a->why ? a->why : "");
}

/* Report a failed lookup as a finding; true when it did. */
static bool lookup_failed(struct doctor *dr, const char *name, const char *subject,
                          const struct res_answer *a, const char *what, enum dr_status st)
{
    if (!ans_failed(a))
        return false;
    add(dr, st, name, subject, ans_failure(dr, a, what),
        a != NULL && a->status == RES_BOGUS
            ? "a record that fails DNSSEC validation is invisible to validating resolvers"
            : "the check cannot be made without the answer; try again, and if it persists "
              "check that your DNS servers answer",
        NULL);
    return true;
}

static bool name_eq(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 0 && a[la - 1] == '.')
        la--;
    if (lb > 0 && b[lb - 1] == '.')
        lb--;
    return la == lb && strncasecmp(a, b, la) == 0;
}

/* Does the A or AAAA answer hold addr? */
static bool ans_has_addr(const struct res_answer *a, const struct dr_addr *addr)
{
    if (a == NULL || a->status != RES_OK)
        return false;
    for (size_t i = 0; i < a->n; i++) {
        if (a->type == RES_A && addr->af == AF_INET &&
            memcmp(&a->a[i], &addr->ip.v4, sizeof(struct in_addr)) == 0)
            return true;
        if (a->type == RES_AAAA && addr->af == AF_INET6 &&
            memcmp(&a->aaaa[i], &addr->ip.v6, sizeof(struct in6_addr)) == 0)
            return true;
    }
    return false;
}

/* The TXT strings of a record, quoted for a zone file ("a" "b"). */
static char *txt_quoted(struct doctor *dr, const char *value)
{
    char *q = dkim_txt_quote(value);
    if (q == NULL)
        dr->oom = true;
    return q;
}

/* A zone-file TXT line: "NAME. IN TXT "value"". */
static char *txt_record(struct doctor *dr, const char *name, const char *value)
{
    char *q = txt_quoted(dr, value);
    char *s = q != NULL ? fmt(dr, "%s. IN TXT %s", name, q) : NULL;
    free(q);
    return s;
}

/* A record's text in quotes, shortened for a one-line detail, into buf. */
#define DR_SHORT_MAX 160
static const char *txt_short(const struct res_txt *t, char buf[DR_SHORT_MAX])
{
    if (t->len > 120)
        snprintf(buf, DR_SHORT_MAX, "\"%.100s...\" (%zu bytes)", t->text, t->len);
    else
        snprintf(buf, DR_SHORT_MAX, "\"%s\"", t->text);
    return buf;
}

static bool starts_with_tag(const char *text, size_t len, const char *name, const char *value);

/*
 * The TXT records of a that are of one kind: version NULL, SPF records
 * (spf_record_is_spf: "v=spf1", any case, RFC 7208 4.5); else records
 * whose first tag is v=<version>, exactly (DMARC1, STSv1, TLSRPTv1: the
 * version strings are case-sensitive).  Returns how many; idx[] gets the
 * first max indexes.
 */
static size_t txt_select(const struct res_answer *a, const char *version, size_t *idx,
                         size_t max)
{
    size_t n = 0;
    if (a == NULL || a->status != RES_OK)
        return 0;
    for (size_t i = 0; i < a->n; i++) {
        const struct res_txt *t = &a->txt[i];
        if (version == NULL ? !spf_record_is_spf(t->text, t->len)
                            : !starts_with_tag(t->text, t->len, "v", version))
            continue;
        if (n < max)
            idx[n] = i;
        n++;
    }
    return n;
}

/* ---- tag-lists ---- */

static bool is_wsp(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int dr_taglist_parse(const char *text, size_t len, struct dr_tag *tags, size_t max,
                     const char **err)
{
    const char *p = text, *end = text + len;
    size_t n = 0;
    *err = NULL;
    for (;;) {
        while (p < end && is_wsp(*p))
            p++;
        if (p == end)
            break;
        /* tag-name = ALPHA *ALNUMPUNC (RFC 6376 3.2) */
        const char *name = p;
        if (!isalpha((unsigned char)*p)) {
            *err = "a tag name must start with a letter";
            return -EINVAL;
        }
        while (p < end && (isalnum((unsigned char)*p) || *p == '_'))
            p++;
        size_t name_len = (size_t)(p - name);
        while (p < end && is_wsp(*p))
            p++;
        if (p == end || *p != '=') {
            *err = "expected '=' after a tag name";
            return -EINVAL;
        }
        p++;
        while (p < end && is_wsp(*p))
            p++;
        const char *value = p;
        while (p < end && *p != ';') {
            unsigned char c = (unsigned char)*p;
            if (c < 0x20 && !is_wsp((char)c)) {
                *err = "a control character in a value";
                return -EINVAL;
            }
            p++;
        }
        const char *vend = p;
        while (vend > value && is_wsp(vend[-1]))
            vend--;
        for (size_t i = 0; i < n; i++) {
            if (tags[i].name_len == name_len && memcmp(tags[i].name, name, name_len) == 0) {
                *err = "a tag appears twice";
                return -EINVAL;
            }
        }
        if (n == max) {
            *err = "too many tags";
            return -E2BIG;
        }
        tags[n].name = name;
        tags[n].name_len = name_len;
        tags[n].value = value;
        tags[n].value_len = (size_t)(vend - value);
        n++;
        if (p < end)
            p++; /* the ';' */
    }
    return (int)n;
}

const struct dr_tag *dr_tag_find(const struct dr_tag *tags, size_t n, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < n; i++)
        if (tags[i].name_len == len && memcmp(tags[i].name, name, len) == 0)
            return &tags[i];
    return NULL;
}

static bool tag_is(const struct dr_tag *t, const char *value)
{
    return t != NULL && t->value_len == strlen(value) &&
           strncasecmp(t->value, value, t->value_len) == 0;
}

/* Does text start with the tag "name=value" (blanks around '=' allowed)? */
static bool starts_with_tag(const char *text, size_t len, const char *name, const char *value)
{
    const char *p = text, *end = text + len;
    size_t nl = strlen(name), vl = strlen(value);
    while (p < end && is_wsp(*p))
        p++;
    if ((size_t)(end - p) < nl || memcmp(p, name, nl) != 0)
        return false;
    p += nl;
    while (p < end && is_wsp(*p))
        p++;
    if (p == end || *p != '=')
        return false;
    p++;
    while (p < end && is_wsp(*p))
        p++;
    if ((size_t)(end - p) < vl || memcmp(p, value, vl) != 0)
        return false;
    p += vl;
    return p == end || *p == ';' || is_wsp(*p);
}

int dr_mailto(const char *uri, size_t len, char *out, size_t cap)
{
    while (len > 0 && is_wsp(*uri)) {
        uri++;
        len--;
    }
    while (len > 0 && is_wsp(uri[len - 1]))
        len--;
    if (len < 7 || strncasecmp(uri, "mailto:", 7) != 0)
        return 0;
    uri += 7;
    len -= 7;
    const char *bang = memchr(uri, '!', len); /* "!10m": a size limit (RFC 7489 6.2) */
    if (bang != NULL)
        len = (size_t)(bang - uri);
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = uri[i];
        if (c == '%' && i + 2 < len && isxdigit((unsigned char)uri[i + 1]) &&
            isxdigit((unsigned char)uri[i + 2])) {
            char hex[3] = {uri[i + 1], uri[i + 2], 0};
            c = (char)strtol(hex, NULL, 16);
            i += 2;
        }
        if ((unsigned char)c <= 0x20 || c == 0x7f || c == '?' || o + 1 >= cap)
            return -EINVAL;
        out[o++] = c;
    }
    out[o] = '\0';
    char *at = strrchr(out, '@');
    if (at == NULL || at == out || at[1] == '\0')
        return -EINVAL;
    return 1;
}

int dr_dmarc_lint(const char *text, size_t len, char *rua, size_t ruacap, const char **err)
{
    struct dr_tag tags[DR_TAGS_MAX];
    static const char *const policies[] = {"none", "quarantine", "reject"};
    *err = NULL;
    if (ruacap > 0)
        rua[0] = '\0';
    if (!dmarc_record_is(text, len))
        return -ENOENT;
    int n = dr_taglist_parse(text, len, tags, DR_TAGS_MAX, err);
    if (n < 0)
        return -EINVAL;
    const struct dr_tag *t = dr_tag_find(tags, (size_t)n, "p");
    if (t == NULL) {
        *err = "no p= tag (the policy)";
        return -EINVAL;
    }
    static const char *const ptags[] = {"p", "sp"};
    for (size_t k = 0; k < 2; k++) {
        if ((t = dr_tag_find(tags, (size_t)n, ptags[k])) == NULL)
            continue;
        bool ok = false;
        for (size_t i = 0; i < 3; i++)
            ok = ok || tag_is(t, policies[i]);
        if (!ok) {
            *err = k == 0 ? "p= must be none, quarantine or reject"
                          : "sp= must be none, quarantine or reject";
            return -EINVAL;
        }
    }
    if ((t = dr_tag_find(tags, (size_t)n, "pct")) != NULL) {
        unsigned v = 0;
        bool ok = t->value_len > 0 && t->value_len <= 3;
        for (size_t i = 0; ok && i < t->value_len; i++) {
            ok = isdigit((unsigned char)t->value[i]);
            v = v * 10 + (unsigned)(t->value[i] - '0');
        }
        if (!ok || v > 100) {
            *err = "pct= must be a number from 0 to 100";
            return -EINVAL;
        }
    }
    static const char *const align[] = {"adkim", "aspf"};
    for (size_t k = 0; k < 2; k++) {
        if ((t = dr_tag_find(tags, (size_t)n, align[k])) != NULL && !tag_is(t, "r") &&
            !tag_is(t, "s")) {
            *err = k == 0 ? "adkim= must be r or s" : "aspf= must be r or s";
            return -EINVAL;
        }
    }
    if ((t = dr_tag_find(tags, (size_t)n, "rua")) != NULL) {
        char copy[1024], box[USERS_KEY_MAX + 1];
        if (t->value_len >= sizeof(copy) || t->value_len >= ruacap) {
            *err = "rua= is too long";
            return -EINVAL;
        }
        memcpy(copy, t->value, t->value_len);
        copy[t->value_len] = '\0';
        memcpy(rua, copy, t->value_len + 1);
        for (char *save = NULL, *u = strtok_r(copy, ",", &save); u != NULL;
             u = strtok_r(NULL, ",", &save)) {
            if (dr_mailto(u, strlen(u), box, sizeof(box)) <= 0) {
                *err = "rua= must list mailto: addresses";
                return -EINVAL;
            }
        }
    }
    return 0;
}

int dr_dkim_p(const char *text, size_t len, char *out, size_t cap, char *k, size_t kcap)
{
    struct dr_tag tags[DR_TAGS_MAX];
    const char *err;
    int n = dr_taglist_parse(text, len, tags, DR_TAGS_MAX, &err);
    if (n <= 0)
        return -EINVAL;
    /* RFC 6376 3.6.1: v=, when present, is first and is "DKIM1". */
    const struct dr_tag *v = dr_tag_find(tags, (size_t)n, "v");
    if (v != NULL && (v != &tags[0] || !tag_is(v, "DKIM1")))
        return -EINVAL;
    const struct dr_tag *kt = dr_tag_find(tags, (size_t)n, "k");
    snprintf(k, kcap, "%.*s", kt ? (int)kt->value_len : 3, kt ? kt->value : "rsa");
    const struct dr_tag *p = dr_tag_find(tags, (size_t)n, "p");
    if (p == NULL)
        return -ENOENT;
    size_t o = 0;
    for (size_t i = 0; i < p->value_len; i++) {
        if (is_wsp(p->value[i]))
            continue; /* base64 may be folded (RFC 6376 3.6.1) */
        if (o + 1 >= cap)
            return -EINVAL;
        out[o++] = p->value[i];
    }
    out[o] = '\0';
    return (int)o;
}

/* ---- the checks ---- */

/* When a file could not be read for want of permission, the fix is to run
 * doctor as the server reads its files; NULL otherwise. */
static char *perm_fix(struct doctor *dr, const char *text)
{
    if (strstr(text, strerror(EACCES)) == NULL)
        return NULL;
    return fmt(dr, "run doctor as root (or as the server's user, %s): sudo ortoo doctor %s",
               dr->cfg->user ? dr->cfg->user : "ortoo", dr->domain);
}

static void check_domain(struct doctor *dr)
{
    const char *d = dr->domain;
    if (dr->users == NULL) {
        char *fix = perm_fix(dr, dr->users_err);
        add(dr, DR_WARN, "domain", d, fmt(dr, "the local domains cannot be read: %s", dr->users_err),
            "this server refuses mail for domains it cannot read",
            fix ? fix : fmt(dr, "ortoo check"));
    } else if (users_is_local_domain(dr->users, d, strlen(d))) {
        add(dr, DR_OK, "domain", d, fmt(dr, "%s is a local domain of this server", d), NULL, NULL);
    } else {
        add(dr, DR_WARN, "domain", d, fmt(dr, "%s is not a local domain of this server", d),
            "this server refuses mail for it (fine if it only sends for it)",
            fmt(dr, "ortoo domain add %s", d));
    }
}

/* The MX record to publish. */
static char *mx_record(struct doctor *dr)
{
    return fmt(dr, "%s. IN MX 10 %s.", dr->domain, dr->hostname);
}

/* Is the host name one of the MX hosts, and the most preferred one? */
static bool mx_points_here(const struct doctor *dr, bool *best)
{
    const struct res_answer *a = ans_of(dr->mx);
    *best = false;
    if (a == NULL || a->status != RES_OK)
        return false;
    for (size_t i = 0; i < a->n; i++) {
        if (name_eq(a->mx[i].host, dr->hostname)) {
            *best = a->mx[i].pref == a->mx[0].pref;
            return true;
        }
    }
    return false;
}

static void check_mx(struct doctor *dr)
{
    const struct res_answer *a = ans_of(dr->mx);
    const char *d = dr->domain;
    const char *why_none = "other servers do not know where to deliver mail for the domain";

    if (lookup_failed(dr, "mx", d, a, "the MX", DR_FAIL))
        return;
    switch (a->status) {
    case RES_NXDOMAIN:
        add(dr, DR_FAIL, "mx", d, fmt(dr, "%s does not exist in the DNS", d), why_none,
            mx_record(dr));
        return;
    case RES_NULLMX:
        add(dr, DR_FAIL, "mx", d,
            fmt(dr, "%s publishes a null MX (\"0 .\", RFC 7505): it accepts no mail", d),
            "senders bounce every message to the domain at once",
            fmt(dr, "replace the null MX with:\n%s. IN MX 10 %s.", d, dr->hostname));
        return;
    case RES_NODATA:
        add(dr, DR_FAIL, "mx", d, fmt(dr, "%s has no MX record (and no address)", d), why_none,
            mx_record(dr));
        return;
    default:
        break;
    }
    if (a->implicit_mx) {
        bool self = name_eq(d, dr->hostname);
        add(dr, self ? DR_WARN : DR_FAIL, "mx", d,
            fmt(dr, "%s has no MX record: senders fall back to its own address (implicit MX)%s",
                d, self ? ", which is this server" : ", which is not this server's name"),
            self ? "it works, but an explicit MX is what receivers and tools expect"
                 : "mail for the domain goes to the domain's web address, not here",
            mx_record(dr));
        return;
    }
    char list[1024] = "";
    size_t len = 0;
    for (size_t i = 0; i < a->n && len < sizeof(list) - 1; i++)
        len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%u %s", i ? ", " : "",
                                a->mx[i].pref, a->mx[i].host);
    bool best;
    if (!mx_points_here(dr, &best)) {
        add(dr, DR_FAIL, "mx", d,
            fmt(dr, "%s MX %s: not this server (%s)", d, list, dr->hostname),
            "mail for the domain goes to another server", mx_record(dr));
    } else if (!best) {
        add(dr, DR_WARN, "mx", d,
            fmt(dr, "%s MX %s: %s comes first, this server (%s) later", d, list, a->mx[0].host,
                dr->hostname),
            "senders try the most preferred host first: mail reaches this server only when "
            "it is down",
            fmt(dr, "%s. IN MX 10 %s.   (the lowest preference, or the only one)", d,
                dr->hostname));
    } else {
        add(dr, DR_OK, "mx", d, fmt(dr, "%s MX %s (DNSSEC: %s)", d, list, res_sec_name(a->sec)),
            NULL, NULL);
    }
}

static void check_host_addresses(struct doctor *dr)
{
    const struct res_answer *a4 = ans_of(dr->host_a), *a6 = ans_of(dr->host_aaaa);
    const char *h = dr->hostname;
    if (lookup_failed(dr, "address", h, a4, "the A record", DR_FAIL) ||
        lookup_failed(dr, "address", h, a6, "the AAAA record", DR_FAIL))
        return;
    if (dr->naddrs == 0) {
        add(dr, DR_FAIL, "address", h,
            fmt(dr, "this server's public addresses are unknown (%s)", dr->addrs_from),
            "without them the A/AAAA, reverse DNS and SPF checks cannot be made",
            fmt(dr, "ortoo doctor %s --ip YOUR.PUBLIC.ADDRESS", dr->domain));
        return;
    }
    char have[1024] = "", fix[2048] = "";
    size_t hl = 0, fl = 0;
    bool missing4 = false, missing6 = false, extra = false;
    char ip[INET6_ADDRSTRLEN];
    for (size_t i = 0; i < a4->n; i++) {
        inet_ntop(AF_INET, &a4->a[i], ip, sizeof(ip));
        hl += (size_t)snprintf(have + hl, sizeof(have) - hl, "%s%s", hl ? ", " : "", ip);
    }
    for (size_t i = 0; i < a6->n && hl < sizeof(have); i++) {
        inet_ntop(AF_INET6, &a6->aaaa[i], ip, sizeof(ip));
        hl += (size_t)snprintf(have + hl, sizeof(have) - hl, "%s%s", hl ? ", " : "", ip);
    }
    for (size_t i = 0; i < dr->naddrs && fl < sizeof(fix); i++) {
        const struct dr_addr *x = &dr->addrs[i];
        if (ans_has_addr(x->af == AF_INET ? a4 : a6, x))
            continue;
        *(x->af == AF_INET ? &missing4 : &missing6) = true;
        fl += (size_t)snprintf(fix + fl, sizeof(fix) - fl, "%s%s. IN %s %s", fl ? "\n" : "", h,
                               x->af == AF_INET ? "A" : "AAAA", x->text);
    }
    /* Addresses of the name that are not this server's. */
    for (int fam = 0; fam < 2; fam++) {
        const struct res_answer *a = fam == 0 ? a4 : a6;
        for (size_t i = 0; i < a->n && fl < sizeof(fix); i++) {
            struct dr_addr probe = {.af = fam == 0 ? AF_INET : AF_INET6};
            if (fam == 0)
                probe.ip.v4 = a->a[i];
            else
                probe.ip.v6 = a->aaaa[i];
            bool ours = false;
            for (size_t k = 0; k < dr->naddrs && !ours; k++) {
                const struct dr_addr *x = &dr->addrs[k];
                ours = x->af == probe.af &&
                       memcmp(&x->ip, &probe.ip,
                              probe.af == AF_INET ? sizeof(struct in_addr) : sizeof(struct in6_addr)) == 0;
            }
            if (ours)
                continue;
            extra = true;
            inet_ntop(probe.af, &probe.ip, ip, sizeof(ip));
            fl += (size_t)snprintf(fix + fl, sizeof(fix) - fl, "%sremove: %s. IN %s %s",
                                   fl ? "\n" : "", h, fam == 0 ? "A" : "AAAA", ip);
        }
    }
    char ours[1024] = "";
    size_t ol = 0;
    for (size_t i = 0; i < dr->naddrs && ol < sizeof(ours); i++)
        ol += (size_t)snprintf(ours + ol, sizeof(ours) - ol, "%s%s", ol ? ", " : "",
                               dr->addrs[i].text);
    char *detail = fmt(dr, "%s has %s; this server is %s (%s)", h, hl ? have : "no address", ours,
                       dr->addrs_from);
    if (a4->status == RES_NXDOMAIN) {
        free(detail);
        add(dr, DR_FAIL, "address", h, fmt(dr, "%s does not exist in the DNS", h),
            "the MX names a host nobody can find: mail cannot reach this server",
            fmt(dr, "%s", fix));
    } else if (missing4 || extra) {
        add(dr, DR_FAIL, "address", h, detail,
            extra ? "mail for the domain would go to an address that is not this server"
                  : "senders look the name up and cannot reach this server at this address",
            fmt(dr, "%s", fix));
    } else if (missing6) {
        add(dr, DR_WARN, "address", h, detail,
            "mail over IPv6 cannot reach this server; publish AAAA only with a matching PTR",
            fmt(dr, "%s", fix));
    } else {
        add(dr, DR_OK, "address", h, detail, NULL, NULL);
    }
}

/* The PTR to ask the provider for. */
static char *ptr_fix(struct doctor *dr, const struct dr_addr *x, const char *other)
{
    char rev[RES_NAME_MAX + 1];
    if (res_ptr_name(x->af, &x->ip, rev, sizeof(rev)) < 0)
        rev[0] = '\0';
    return fmt(dr,
               "at your server provider (reverse DNS is set there, not in your zone): %s -> %s\n"
               "%s. IN PTR %s.%s%s%s",
               x->text, dr->hostname, rev, dr->hostname,
               other ? "\n(or make " : "", other ? other : "",
               other ? " the server's name: [server] hostname)" : "");
}

static void check_ptr(struct doctor *dr, const struct dr_addr *x)
{
    const char *h = dr->hostname, *name = x->fc.name;
    static const char why_ptr[] = "Gmail, Outlook and others refuse or junk mail from an address "
                                  "without matching reverse DNS";
    static const char why_fcrdns[] =
        "receivers check that the name leads back to the address (FCrDNS)";
    if (!x->fc_done) {
        add(dr, DR_FAIL, "ptr", x->text,
            fmt(dr, "no answer for the reverse DNS of %s before the deadline", x->text),
            "the check cannot be made without the answer; try again", NULL);
        return;
    }
    switch (x->fc.result) {
    case FCRDNS_PERMERROR:
        add(dr, DR_FAIL, "ptr", x->text, fmt(dr, "%s has no reverse DNS (PTR)", x->text), why_ptr,
            ptr_fix(dr, x, NULL));
        return;
    case FCRDNS_TEMPERROR:
        add(dr, DR_FAIL, "ptr", x->text,
            fmt(dr, "the reverse DNS of %s could not be looked up (temperror%s%s)", x->text,
                name[0] ? ": " : "", name),
            "receivers that cannot confirm the name defer or refuse the mail", NULL);
        return;
    case FCRDNS_PASS:
        if (name_eq(name, h))
            add(dr, DR_OK, "ptr", x->text,
                fmt(dr, "%s -> %s -> %s (forward-confirmed, matches the EHLO name)", x->text, h,
                    x->text),
                NULL, NULL);
        else
            add(dr, DR_FAIL, "ptr", x->text,
                fmt(dr, "%s -> %s (forward-confirmed), but this server says EHLO %s", x->text,
                    name, h),
                "receivers compare the reverse name with the EHLO name; a mismatch looks like a "
                "hijacked or dynamic address",
                ptr_fix(dr, x, name));
        return;
    case FCRDNS_FAIL:
    default:
        if (name_eq(name, h))
            add(dr, DR_FAIL, "ptr", x->text,
                fmt(dr, "%s -> %s, but %s does not resolve to %s", x->text, h, h, x->text),
                why_fcrdns, fmt(dr, "%s. IN %s %s", h, x->af == AF_INET ? "A" : "AAAA", x->text));
        else
            add(dr, DR_FAIL, "ptr", x->text,
                fmt(dr, "%s -> %s, which does not resolve back to %s", x->text, name, x->text),
                why_fcrdns, ptr_fix(dr, x, NULL));
        return;
    }
}

/* The SPF record to suggest.  existing: the record published (one, it
 * parses) or NULL.  A published record keeps its terms: the addresses
 * that do not pass go first, so they pass whatever follows. */
static char *spf_suggest(struct doctor *dr, const char *existing, const bool *passing)
{
    char terms[1024] = "";
    size_t tl = 0;
    for (size_t i = 0; i < dr->naddrs && tl < sizeof(terms); i++) {
        const struct dr_addr *x = &dr->addrs[i];
        if (passing != NULL && passing[i])
            continue;
        tl += (size_t)snprintf(terms + tl, sizeof(terms) - tl, " %s:%s",
                               x->af == AF_INET ? "ip4" : "ip6", x->text);
    }
    if (existing != NULL) {
        const char *rest = existing;
        while (*rest == ' ')
            rest++;
        rest += 6; /* "v=spf1" */
        return fmt(dr, "v=spf1%s%s", terms, rest);
    }
    bool best, all_in_dns = dr->naddrs > 0;
    for (size_t i = 0; i < dr->naddrs; i++)
        all_in_dns = all_in_dns &&
                     ans_has_addr(ans_of(dr->addrs[i].af == AF_INET ? dr->host_a : dr->host_aaaa),
                                  &dr->addrs[i]);
    if ((mx_points_here(dr, &best) && all_in_dns) || dr->naddrs == 0)
        return fmt(dr, "%s", DR_SPF_SUGGEST);
    return fmt(dr, "v=spf1%s -all", terms);
}

/* The one SPF record published, or NULL (the findings say why). */
static const struct res_txt *check_spf_record(struct doctor *dr)
{
    char sh[DR_SHORT_MAX];
    const struct res_answer *a = ans_of(dr->spf_txt);
    const char *d = dr->domain;
    size_t idx[2];
    static const char why_none[] =
        "receivers cannot tell your mail from forgeries: it goes to spam or is refused (Gmail "
        "requires SPF or DKIM, bulk senders both)";

    if (lookup_failed(dr, "spf", d, a, "the SPF record", DR_FAIL))
        return NULL;
    size_t n = txt_select(a, NULL, idx, 2);
    if (n == 0) {
        char *rec = spf_suggest(dr, NULL, NULL);
        add(dr, DR_FAIL, "spf", d, fmt(dr, "%s has no SPF record", d), why_none,
            rec ? txt_record(dr, d, rec) : NULL);
        free(rec);
        return NULL;
    }
    if (n > 1) {
        char *rec = spf_suggest(dr, NULL, NULL);
        add(dr, DR_FAIL, "spf", d, fmt(dr, "%s has %zu SPF records", d, n),
            "more than one is a permanent error (RFC 7208 4.5): receivers treat it as broken",
            rec ? fmt(dr, "keep only one, e.g.:\n%s. IN TXT \"%s\"", d, rec) : NULL);
        free(rec);
        return NULL;
    }
    const struct res_txt *t = &a->txt[idx[0]];
    struct spf_record rec;
    const char *at = NULL;
    int rc = spf_record_parse(t->text, t->len, &rec, &at);
    if (rc < 0) {
        char *sug = spf_suggest(dr, NULL, NULL);
        size_t off = at != NULL && at >= t->text && at <= t->text + t->len ? (size_t)(at - t->text) : 0;
        add(dr, DR_FAIL, "spf", d,
            fmt(dr, "the SPF record %s does not parse (%s '%.40s')", txt_short(t, sh),
                rc == -E2BIG ? "too many terms, at" : "at", t->text + off),
            "a record with a syntax error is a permanent error (RFC 7208 4.6): no SPF at all",
            sug ? txt_record(dr, d, sug) : NULL);
        free(sug);
        return NULL;
    }
    bool plus_all = false;
    for (size_t i = 0; i < rec.nterms; i++)
        plus_all = plus_all || (rec.terms[i].mech == SPF_M_ALL && rec.terms[i].qualifier == SPF_PASS);
    if (plus_all) {
        char *sug = spf_suggest(dr, NULL, NULL);
        add(dr, DR_WARN, "spf", d, fmt(dr, "%s TXT %s ends in +all", d, txt_short(t, sh)),
            "+all lets anyone send as the domain; receivers treat such a record as no SPF",
            sug ? txt_record(dr, d, sug) : NULL);
        free(sug);
        return t;
    }
    add(dr, DR_OK, "spf", d, fmt(dr, "%s TXT %s", d, txt_short(t, sh)), NULL, NULL);
    return t;
}

/*
 * SPF evaluated for each sending address, as a receiver evaluates it for a
 * bounce from this server (check_host() with <sender> postmaster@DOMAIN,
 * resolver/spf.h): one finding per address.  Only when the record itself is
 * sound: a missing, doubled or broken record was reported already.
 */
static void check_spf_eval(struct doctor *dr, const struct res_txt *rec)
{
    bool passing[DR_ADDRS_MAX] = {false};
    for (size_t i = 0; i < dr->naddrs; i++)
        passing[i] = dr->addrs[i].spf_done && dr->addrs[i].spf.result == SPF_R_PASS;
    for (size_t i = 0; i < dr->naddrs; i++) {
        const struct dr_addr *x = &dr->addrs[i];
        const struct spf_req *r = &x->spf;
        if (!x->spf_done) {
            add(dr, DR_FAIL, "spf", x->text,
                fmt(dr, "no SPF result for %s before the deadline", x->text),
                "the check cannot be made without the answer; try again", NULL);
            continue;
        }
        const char *res = spf_result_name(r->result);
        char *why = fmt(dr, "%s%s%s", r->why, r->explanation[0] ? "; explanation: " : "",
                        r->explanation);
        if (r->result == SPF_R_PASS) {
            add(dr, DR_OK, "spf", x->text,
                fmt(dr, "SPF of %s gives pass for %s (%s)", dr->domain, x->text, why ? why : ""),
                NULL, NULL);
        } else if (r->result == SPF_R_TEMPERROR) {
            add(dr, DR_FAIL, "spf", x->text,
                fmt(dr, "SPF of %s gives temperror for %s (%s)", dr->domain, x->text,
                    why ? why : ""),
                "receivers defer the mail or take it without SPF; try again, and if it "
                "persists check the DNS of every name the record includes",
                NULL);
        } else {
            /* A permerror (lookup limits, a broken include) needs a record
             * of its own; otherwise the failing addresses go first. */
            char *sug = spf_suggest(dr, r->result == SPF_R_PERMERROR ? NULL : rec->text,
                                    r->result == SPF_R_PERMERROR ? NULL : passing);
            add(dr, DR_FAIL, "spf", x->text,
                fmt(dr, "SPF of %s gives %s for %s (%s)", dr->domain, res, x->text,
                    why ? why : ""),
                r->result == SPF_R_PERMERROR
                    ? "a permanent error counts as no SPF, or as a failure (RFC 7208 2.6.7)"
                    : "receivers send mail from this address to spam or refuse it",
                sug ? txt_record(dr, dr->domain, sug) : NULL);
            free(sug);
        }
        free(why);
    }
}

static void check_dkim(struct doctor *dr)
{
    const char *d = dr->domain;
    if (dr->keys == NULL && dr->keys_err[0] != '\0') {
        char *fix = perm_fix(dr, dr->keys_err);
        add(dr, DR_FAIL, "dkim", d, fmt(dr, "the DKIM keys cannot be loaded: %s", dr->keys_err),
            "mail is not signed while the keys cannot be read",
            fix ? fix : fmt(dr, "ortoo check"));
        return;
    }
    if (dr->ndkim == 0) {
        add(dr, DR_FAIL, "dkim", d, fmt(dr, "no DKIM key for %s on this server", d),
            "mail is not signed: Gmail and others require DKIM or SPF, DMARC needs one of them "
            "aligned, and forwarded mail keeps only DKIM",
            fmt(dr, "ortoo dkim keygen %s   (then publish the record it prints, and ortoo reload)",
                d));
        return;
    }
    for (size_t i = 0; i < dr->ndkim; i++) {
        const struct dkim_key *k = dr->dkim_key[i];
        const char *sel = dkim_key_selector(k);
        const struct res_answer *a = ans_of(dr->dkim[i]);
        char name[RES_NAME_MAX + 80], ours[2048], theirs[2048], kt[32], kt2[32];
        snprintf(name, sizeof(name), "%s._domainkey.%s", sel, d);
        char *value = dkim_key_record(k);
        if (value == NULL) {
            dr->oom = true;
            return;
        }
        if (dr_dkim_p(value, strlen(value), ours, sizeof(ours), kt, sizeof(kt)) < 0)
            ours[0] = '\0';
        static const char why_missing[] =
            "receivers cannot verify the signatures made with this key: DKIM fails";
        if (lookup_failed(dr, "dkim", name, a, "the DKIM record", DR_FAIL)) {
            free(value);
            continue;
        }
        size_t found = 0, match = 0, revoked = 0, bad = 0;
        for (size_t r = 0; a->status == RES_OK && r < a->n; r++) {
            int n = dr_dkim_p(a->txt[r].text, a->txt[r].len, theirs, sizeof(theirs), kt2,
                              sizeof(kt2));
            if (n == -EINVAL && !starts_with_tag(a->txt[r].text, a->txt[r].len, "v", "DKIM1"))
                continue; /* not a key record */
            found++;
            if (n < 0)
                bad++;
            else if (n == 0)
                revoked++;
            else if (strcmp(theirs, ours) == 0 && strcasecmp(kt, kt2) == 0)
                match++;
        }
        char *rec = txt_record(dr, name, value);
        free(value);
        if (found == 0) {
            add(dr, DR_FAIL, "dkim", name,
                fmt(dr, "no DKIM record at %s (key %s.key, %s)", name, sel, kt), why_missing, rec);
        } else if (found > 1) {
            add(dr, DR_FAIL, "dkim", name, fmt(dr, "%zu DKIM records at %s", found, name),
                "receivers pick one of them at random: signatures fail some of the time",
                fmt(dr, "keep only:\n%s", rec ? rec : ""));
            free(rec);
        } else if (match == 1) {
            add(dr, DR_OK, "dkim", name,
                fmt(dr, "%s matches the key on disk (%s.key, %s)", name, sel, kt), NULL, NULL);
            free(rec);
        } else if (revoked) {
            add(dr, DR_FAIL, "dkim", name, fmt(dr, "%s has an empty p=: the key is revoked", name),
                why_missing, rec);
        } else if (bad) {
            add(dr, DR_FAIL, "dkim", name,
                fmt(dr, "the record at %s is not a valid DKIM key record", name), why_missing, rec);
        } else {
            add(dr, DR_FAIL, "dkim", name,
                fmt(dr, "the key published at %s is not the key on disk (%s.key)", name, sel),
                "signatures made with the key on disk fail verification", rec);
        }
    }
}

/* Is the mailbox box accepted by this server?  Returns 1 yes, 0 no, -1
 * not at a local domain. */
static int mailbox_accepted(const struct doctor *dr, const char *box)
{
    const char *at = strrchr(box, '@');
    if (dr->users == NULL || at == NULL ||
        !users_is_local_domain(dr->users, at + 1, strlen(at + 1)))
        return -1;
    struct rcpt_result res = {0};
    int rc = recipients_resolve(dr->users, dr->cfg, box, strlen(box), time(NULL), &res);
    rcpt_result_free(&res);
    return rc == RCPT_LOCAL || rc == RCPT_SRS ? 1 : 0;
}

/* Check each mailto: of a report URI list; adds one finding. */
static void check_report_boxes(struct doctor *dr, const char *name, const char *subject,
                               const char *list, const char *what)
{
    char buf[1024], box[USERS_KEY_MAX + 1], ok[1024] = "", bad[1024] = "", other[1024] = "";
    size_t okl = 0, badl = 0, otl = 0;
    snprintf(buf, sizeof(buf), "%s", list);
    for (char *save = NULL, *u = strtok_r(buf, ",", &save); u != NULL;
         u = strtok_r(NULL, ",", &save)) {
        if (dr_mailto(u, strlen(u), box, sizeof(box)) <= 0)
            continue;
        int acc = mailbox_accepted(dr, box);
        if (acc == 1)
            okl += (size_t)snprintf(ok + okl, sizeof(ok) - okl, "%s%s", okl ? ", " : "", box);
        else if (acc == 0)
            badl += (size_t)snprintf(bad + badl, sizeof(bad) - badl, "%s%s", badl ? ", " : "", box);
        else
            otl += (size_t)snprintf(other + otl, sizeof(other) - otl, "%s%s", otl ? ", " : "", box);
        if (okl >= sizeof(ok) || badl >= sizeof(bad) || otl >= sizeof(other))
            break;
    }
    if (badl > 0) {
        char *first = strdupa(bad);
        first[strcspn(first, ",")] = '\0';
        add(dr, DR_FAIL, name, subject,
            fmt(dr, "%s reports go to %s, which this server does not accept", what, bad),
            "the reports are refused with 550 and lost",
            fmt(dr, "ortoo user add %s   (or an alias in domains/%s/aliases)", first,
                strrchr(first, '@') + 1));
    } else if (okl > 0) {
        add(dr, DR_OK, name, subject,
            fmt(dr, "%s reports go to %s, accepted by this server%s%s", what, ok,
                otl ? "; also to " : "", other),
            NULL, NULL);
    } else if (otl > 0) {
        add(dr, DR_OK, name, subject,
            fmt(dr, "%s reports go to %s at another domain%s", what, other,
                strcmp(what, "DMARC") == 0
                    ? " (which must accept them: RFC 7489 7.1, <domain>._report._dmarc)"
                    : ""),
            NULL, NULL);
    }
}

static const char *policy_words(enum dmarc_policy p)
{
    return p == DMARC_P_REJECT       ? "refused"
           : p == DMARC_P_QUARANTINE ? "put in spam"
                                     : "delivered as usual (monitoring only)";
}

/*
 * DMARC: the record as receivers read it (core/dmarc.c, the parser of
 * ortoo's own inbound checks), explained in one line, after a strict look
 * at what was written (dr_dmarc_lint), then the report mailboxes.
 */
static void check_dmarc(struct doctor *dr)
{
    char sh[DR_SHORT_MAX];
    const struct res_answer *a = ans_of(dr->dmarc);
    char name[RES_NAME_MAX + 16], sug[RES_NAME_MAX + 128];
    snprintf(name, sizeof(name), "_dmarc.%s", dr->domain);
    snprintf(sug, sizeof(sug), "v=DMARC1; p=quarantine; rua=mailto:postmaster@%s", dr->domain);

    if (lookup_failed(dr, "dmarc", name, a, "the DMARC record", DR_FAIL))
        return;
    size_t n = 0, idx = 0;
    for (size_t i = 0; a->status == RES_OK && i < a->n; i++) {
        if (dmarc_record_is(a->txt[i].text, a->txt[i].len)) {
            if (n++ == 0)
                idx = i;
        }
    }
    if (n == 0) {
        add(dr, DR_FAIL, "dmarc", name, fmt(dr, "no DMARC record at %s", name),
            "Gmail and Yahoo require DMARC from bulk senders, and without it nothing asks "
            "receivers to refuse forgeries of the domain",
            txt_record(dr, name, sug));
        return;
    }
    if (n > 1) {
        add(dr, DR_FAIL, "dmarc", name, fmt(dr, "%zu DMARC records at %s", n, name),
            "with more than one, receivers apply none (RFC 7489 6.6.3)",
            fmt(dr, "keep only one, e.g.:\n%s. IN TXT \"%s\"", name, sug));
        return;
    }
    const struct res_txt *t = &a->txt[idx];
    struct dmarc_record rec;
    char rua[512];
    const char *err = NULL;
    bool usable = dmarc_record_parse(t->text, t->len, &rec) == 0;
    if (dr_dmarc_lint(t->text, t->len, rua, sizeof(rua), &err) < 0) {
        char why[128];
        if (usable)
            snprintf(why, sizeof(why), "receivers read it as p=%s, which is not what it says",
                     dmarc_policy_name(rec.p));
        else
            snprintf(why, sizeof(why), "receivers ignore a record they cannot use: as if "
                                       "there were none");
        add(dr, DR_FAIL, "dmarc", name,
            fmt(dr, "the DMARC record %s does not parse: %s", txt_short(t, sh),
                err ? err : "syntax error"),
            why, txt_record(dr, name, sug));
        return;
    }
    char pct[64] = "";
    if (rec.pct < 100)
        snprintf(pct, sizeof(pct), " (%u%% of it; the rest one step milder)", rec.pct);
    add(dr, DR_OK, "dmarc", name,
        fmt(dr,
            "p=%s: mail failing DMARC is %s%s; subdomains: %s; alignment: DKIM %s, SPF %s; "
            "%s%s",
            dmarc_policy_name(rec.p), policy_words(rec.p), pct,
            rec.sp == rec.p ? "the same" : dmarc_policy_name(rec.sp),
            rec.adkim_strict ? "strict" : "relaxed", rec.aspf_strict ? "strict" : "relaxed",
            rua[0] ? "reports to " : "no reports (no rua=)", rua),
        NULL, NULL);
    if (rua[0] != '\0')
        check_report_boxes(dr, "dmarc-rua", name, rua, "DMARC");
}

/* Does a TLSA record of a match the server's certificate?  Sets *usable. */
static bool tlsa_matches(const struct doctor *dr, const struct res_answer *a, bool *usable,
                         char *which, size_t cap)
{
    *usable = false;
    for (size_t i = 0; a != NULL && a->status == RES_OK && i < a->n; i++) {
        struct tls_tlsa r = {a->tlsa[i].usage, a->tlsa[i].selector, a->tlsa[i].mtype,
                             a->tlsa[i].data, a->tlsa[i].len};
        if (!tls_tlsa_usable(&r))
            continue;
        *usable = true;
        /* DANE-EE: the leaf; DANE-TA: a certificate of the chain above it. */
        size_t from = r.usage == 3 ? 0 : 1, to = r.usage == 3 ? 1 : dr->cert.nchain;
        for (size_t c = from; c < to && c < CLI_CERT_CHAIN_MAX; c++) {
            if (tls_tlsa_match_der(&r, dr->cert.der[c], dr->cert.der_len[c])) {
                snprintf(which, cap, "TLSA %u %u %u (%s)", r.usage, r.selector, r.mtype,
                         r.usage == 3 ? "DANE-EE" : "DANE-TA");
                return true;
            }
        }
    }
    return false;
}

static void check_certificate(struct doctor *dr)
{
    const struct cli_cert *c = &dr->cert;
    const char *h = dr->hostname;
    char *fix_issue = fmt(dr,
                          "a certificate for %s from acme.sh or certbot in %s/%s/ "
                          "(fullchain.pem, privkey.pem; docs/setup.md, section 5), then "
                          "ortoo reload",
                          h, dr->cfg->cert_dir, h);
    static const char why_broken[] =
        "without a usable certificate STARTTLS is off: mail arrives in plain text, and "
        "senders that require TLS do not deliver";
    char *perm = perm_fix(dr, dr->cert_notes);
    if (perm != NULL) {
        free(fix_issue);
        fix_issue = perm;
    }
    if (!c->has_leaf || !c->has_key || !c->key_matches || c->expired || c->not_yet_valid) {
        add(dr, DR_FAIL, "certificate", h,
            fmt(dr, "%s", dr->cert_notes[0] ? dr->cert_notes : "unusable"), why_broken,
            fix_issue);
        return;
    }
    if (!c->name_ok) {
        add(dr, DR_FAIL, "certificate", h,
            fmt(dr, "%s holds a certificate that is not for %s", c->chain_path, h),
            "senders that verify (MTA-STS, DANE-TA) refuse a certificate for another name",
            fix_issue);
        return;
    }
    if (c->days_left < CLI_CERT_EXPIRY_WARN_DAYS) {
        add(dr, DR_WARN, "certificate", h,
            fmt(dr, "valid for %s, but only %d days left", h, c->days_left),
            "it should have been renewed by now: check the renewal job and its reload hook",
            fix_issue);
        return;
    }
    if (!dr->cert_trusted) {
        bool usable;
        char which[64];
        bool dane = ans_of(dr->tlsa) != NULL && ans_of(dr->tlsa)->sec == RES_SEC_SECURE &&
                    tlsa_matches(dr, ans_of(dr->tlsa), &usable, which, sizeof(which));
        if (dane) {
            free(fix_issue);
            add(dr, DR_OK, "certificate", h,
                fmt(dr, "valid for %s, %d days left, %s%s; not trusted by this host's CAs "
                        "(%s), but authenticated by DANE: %s",
                    h, c->days_left, c->self_signed ? "self-signed" : "issued by ",
                    c->self_signed ? "" : dr->cert_issuer, dr->cert_trust_err, which),
                NULL, NULL);
            return;
        }
        add(dr, DR_WARN, "certificate", h,
            fmt(dr, "valid for %s, %d days left, but not trusted: %s", h, c->days_left,
                c->self_signed ? "self-signed" : dr->cert_trust_err),
            "most senders still deliver over TLS, but those that verify (MTA-STS) refuse it",
            fix_issue);
        return;
    }
    free(fix_issue);
    add(dr, DR_OK, "certificate", h,
        fmt(dr, "valid for %s, %d days left, issued by %s", h, c->days_left, dr->cert_issuer),
        NULL, NULL);
}

static void check_dnssec(struct doctor *dr)
{
    const struct res_answer *a = ans_of(dr->mx);
    const char *d = dr->domain;
    if (a == NULL || (ans_failed(a) && a->status != RES_BOGUS))
        a = ans_of(dr->spf_txt);
    if (a == NULL || (ans_failed(a) && a->status != RES_BOGUS)) {
        add(dr, DR_WARN, "dnssec", d, ans_failure(dr, a, "the zone"),
            "the DNSSEC state cannot be told without an answer", NULL);
        return;
    }
    const struct res_answer *h = ans_of(dr->host_a);
    char *host = h != NULL && !name_eq(dr->hostname, d)
                     ? fmt(dr, "; %s: %s", dr->hostname, res_sec_name(h->sec))
                     : NULL;
    if (a->sec == RES_SEC_BOGUS) {
        add(dr, DR_FAIL, "dnssec", d,
            fmt(dr, "DNSSEC validation fails for %s: %s%s", d, a->why ? a->why : "bogus",
                host ? host : ""),
            "validating resolvers see none of the domain's records: mail to it fails",
            fmt(dr, "check the DS record at your registrar against the zone's keys (or remove "
                    "the DS while the zone is unsigned)"));
    } else if (a->sec == RES_SEC_SECURE) {
        add(dr, DR_OK, "dnssec", d,
            fmt(dr, "%s is signed and validates (secure)%s", d, host ? host : ""), NULL, NULL);
    } else {
        add(dr, DR_OK, "dnssec", d,
            fmt(dr, "%s is not signed (insecure): optional; signing it would let senders "
                    "authenticate this server with DANE%s",
                d, host ? host : ""),
            NULL, NULL);
    }
    free(host);
}

static void check_tlsa(struct doctor *dr)
{
    const struct res_answer *a = ans_of(dr->tlsa), *h = ans_of(dr->host_a);
    char name[RES_NAME_MAX + 16], rec[RES_NAME_MAX + 128] = "";
    snprintf(name, sizeof(name), "_25._tcp.%s", dr->hostname);
    if (dr->cert_spki_sha256[0] != '\0')
        snprintf(rec, sizeof(rec), "%s. IN TLSA 3 1 1 %s", name, dr->cert_spki_sha256);

    if (lookup_failed(dr, "tlsa", name, a, "the TLSA record",
                      a != NULL && a->status == RES_BOGUS ? DR_FAIL : DR_WARN))
        return;
    bool host_secure = h != NULL && h->sec == RES_SEC_SECURE;
    if (a->status != RES_OK) {
        if (host_secure && rec[0] != '\0')
            add(dr, DR_OK, "tlsa", name,
                fmt(dr, "no TLSA record: DANE is not in use (optional; to use it: %s)", rec),
                NULL, NULL);
        else
            add(dr, DR_OK, "tlsa", name,
                fmt(dr, "no TLSA record%s", host_secure ? "" : " (DANE needs a signed zone)"),
                NULL, NULL);
        return;
    }
    if (a->sec != RES_SEC_SECURE) {
        add(dr, DR_WARN, "tlsa", name,
            fmt(dr, "%zu TLSA record%s, but the zone is not DNSSEC-signed", a->n,
                a->n == 1 ? "" : "s"),
            "senders use TLSA records only when they validate (RFC 7672): these are ignored",
            fmt(dr, "sign the zone of %s, or remove the TLSA records", dr->hostname));
        return;
    }
    if (!dr->cert.has_leaf) {
        add(dr, DR_FAIL, "tlsa", name, fmt(dr, "TLSA records, but no certificate to match them"),
            "senders that use DANE will not deliver to this server", NULL);
        return;
    }
    bool usable;
    char which[64];
    if (tlsa_matches(dr, a, &usable, which, sizeof(which))) {
        add(dr, DR_OK, "tlsa", name,
            fmt(dr, "%s matches the certificate (DANE for inbound mail)", which), NULL, NULL);
    } else if (!usable) {
        add(dr, DR_WARN, "tlsa", name,
            fmt(dr, "no usable TLSA record (SMTP uses usages 2 and 3 only, RFC 7672 3.1.3)"),
            "senders encrypt but do not authenticate this server",
            rec[0] ? fmt(dr, "%s", rec) : NULL);
    } else {
        add(dr, DR_FAIL, "tlsa", name,
            fmt(dr, "no TLSA record matches the certificate in %s", dr->cert.chain_path),
            "senders that use DANE refuse to deliver to this server until one matches",
            rec[0] ? fmt(dr, "%s\n(publish the new record next to the old one before a key "
                             "changes; keep the key across renewals)",
                         rec)
                   : NULL);
    }
}

static void check_mta_sts(struct doctor *dr)
{
    char sh[DR_SHORT_MAX];
    const struct res_answer *a = ans_of(dr->mtasts);
    char name[RES_NAME_MAX + 16];
    snprintf(name, sizeof(name), "_mta-sts.%s", dr->domain);
    size_t idx[2];
    if (lookup_failed(dr, "mta-sts", name, a, "the MTA-STS record", DR_WARN))
        return;
    size_t n = txt_select(a, "STSv1", idx, 2);
    if (n == 0) {
        add(dr, DR_OK, "mta-sts", name, fmt(dr, "no MTA-STS record (optional)"), NULL, NULL);
        return;
    }
    char *fix = fmt(dr, "%s. IN TXT \"v=STSv1; id=%ld\"", name, (long)time(NULL));
    if (n > 1) {
        add(dr, DR_FAIL, "mta-sts", name, fmt(dr, "%zu MTA-STS records", n),
            "with more than one, senders ignore MTA-STS (RFC 8461 3.1)", fix);
        return;
    }
    const struct res_txt *t = &a->txt[idx[0]];
    struct dr_tag tags[DR_TAGS_MAX];
    const char *err = "no id= tag";
    int nt = dr_taglist_parse(t->text, t->len, tags, DR_TAGS_MAX, &err);
    const struct dr_tag *id = nt > 0 ? dr_tag_find(tags, (size_t)nt, "id") : NULL;
    bool id_ok = id != NULL && id->value_len >= 1 && id->value_len <= 32;
    for (size_t i = 0; id_ok && i < id->value_len; i++)
        id_ok = isalnum((unsigned char)id->value[i]);
    if (nt < 0 || !id_ok || !tag_is(&tags[0], "STSv1")) {
        add(dr, DR_FAIL, "mta-sts", name,
            fmt(dr, "the MTA-STS record %s does not parse: %s", txt_short(t, sh),
                nt < 0 ? err : "id= must be 1 to 32 letters and digits"),
            "senders ignore a record they cannot parse (RFC 8461 3.1)", fix);
        return;
    }
    free(fix);
    add(dr, DR_WARN, "mta-sts", name,
        fmt(dr, "published (id=%.*s); the policy was not fetched", (int)id->value_len, id->value),
        "the policy file decides what senders do, and a wrong one stops mail: check it by hand",
        fmt(dr, "curl https://mta-sts.%s/.well-known/mta-sts.txt   (mx: %s must be listed)",
            dr->domain, dr->hostname));
}

static void check_tls_rpt(struct doctor *dr)
{
    char sh[DR_SHORT_MAX];
    const struct res_answer *a = ans_of(dr->tlsrpt);
    char name[RES_NAME_MAX + 16];
    snprintf(name, sizeof(name), "_smtp._tls.%s", dr->domain);
    size_t idx[2];
    if (lookup_failed(dr, "tls-rpt", name, a, "the TLS-RPT record", DR_WARN))
        return;
    size_t n = txt_select(a, "TLSRPTv1", idx, 2);
    if (n == 0) {
        add(dr, DR_OK, "tls-rpt", name, fmt(dr, "no TLS-RPT record (optional)"), NULL, NULL);
        return;
    }
    char *fix = fmt(dr, "%s. IN TXT \"v=TLSRPTv1; rua=mailto:postmaster@%s\"", name, dr->domain);
    if (n > 1) {
        add(dr, DR_FAIL, "tls-rpt", name, fmt(dr, "%zu TLS-RPT records", n),
            "with more than one, senders send no reports (RFC 8460 3)", fix);
        return;
    }
    const struct res_txt *t = &a->txt[idx[0]];
    struct dr_tag tags[DR_TAGS_MAX];
    const char *err = "no rua= tag";
    int nt = dr_taglist_parse(t->text, t->len, tags, DR_TAGS_MAX, &err);
    const struct dr_tag *rua = nt > 0 ? dr_tag_find(tags, (size_t)nt, "rua") : NULL;
    bool ok = rua != NULL && rua->value_len > 0 && rua->value_len < 1024;
    char list[1024] = "", box[USERS_KEY_MAX + 1];
    if (ok) {
        snprintf(list, sizeof(list), "%.*s", (int)rua->value_len, rua->value);
        char *copy = strdupa(list);
        for (char *save = NULL, *u = strtok_r(copy, ",", &save); ok && u != NULL;
             u = strtok_r(NULL, ",", &save)) {
            while (is_wsp(*u))
                u++;
            ok = dr_mailto(u, strlen(u), box, sizeof(box)) == 1 || strncasecmp(u, "https:", 6) == 0;
        }
        if (!ok)
            err = "rua= must list mailto: or https: URIs";
    }
    if (nt < 0 || !ok) {
        add(dr, DR_FAIL, "tls-rpt", name,
            fmt(dr, "the TLS-RPT record %s does not parse: %s", txt_short(t, sh), err),
            "senders ignore a record they cannot parse", fix);
        return;
    }
    free(fix);
    size_t before = dr->nchecks;
    check_report_boxes(dr, "tls-rpt", name, list, "TLS");
    if (dr->nchecks == before) /* only https: */
        add(dr, DR_OK, "tls-rpt", name, fmt(dr, "TLS reports go to %s", list), NULL, NULL);
}

static void check_port25(struct doctor *dr)
{
    const struct dr_port25 *p = &dr->p25;
    if (!p->enabled)
        return;
    char target[RES_NAME_MAX * 3 + 64];
    if (p->by_mx)
        snprintf(target, sizeof(target), "the MX of %s (%s%s%s)", p->host,
                 p->mx_host[0] ? p->mx_host : "?", p->tried ? ", " : "", p->tried ? p->sa_text : "");
    else
        snprintf(target, sizeof(target), "%s", p->tried ? p->sa_text : p->host);
    static const char why_blocked[] =
        "many VPS providers block outbound port 25 (often on new accounts): without it this "
        "server cannot deliver mail to other servers";
    if (!p->tried) {
        const struct res_answer *a = p->mx != NULL && ans_of(p->mx) != NULL &&
                                             ans_of(p->mx)->status != RES_OK
                                         ? ans_of(p->mx)
                                         : p->aaaa != NULL ? ans_of(p->aaaa) : ans_of(p->a);
        add(dr, DR_WARN, "port25", p->host,
            a != NULL && a->status != RES_OK
                ? fmt(dr, "not tested: no address for %s (%s)", target, res_status_name(a->status))
                : fmt(dr, "not tested: no answer for %s before the deadline", target),
            "whether outbound port 25 is open is unknown",
            fmt(dr, "ortoo doctor %s --port25-target HOST:25", dr->domain));
        return;
    }
    if (p->result == 0) {
        add(dr, DR_OK, "port25", p->host,
            fmt(dr, "outbound port 25 is open: connected to %s", target), NULL, NULL);
    } else if (p->timed_out || p->result == -ECANCELED || p->result == -ETIMEDOUT) {
        add(dr, DR_FAIL, "port25", p->host,
            fmt(dr, "no answer from %s within %d s: outbound port 25 looks blocked", target,
                DR_PORT25_TIMEOUT_MS / 1000),
            why_blocked,
            fmt(dr, "ask your provider to open outbound port 25 (often a support ticket), or "
                    "send through a smarthost"));
    } else if (p->result == -ECONNREFUSED) {
        add(dr, DR_FAIL, "port25", p->host,
            fmt(dr, "%s refused the connection: blocked on the way, or nothing listens there",
                target),
            why_blocked,
            fmt(dr, "check your firewall's outbound rules; ask your provider to open outbound "
                    "port 25"));
    } else {
        add(dr, DR_FAIL, "port25", p->host,
            fmt(dr, "cannot connect to %s: %s", target, strerror(-p->result)), why_blocked,
            fmt(dr, "check this host's routes and firewall; ask your provider to open outbound "
                    "port 25"));
    }
}

int doctor_judge(struct doctor *dr)
{
    check_domain(dr);
    check_mx(dr);
    check_host_addresses(dr);
    for (size_t i = 0; i < dr->naddrs; i++)
        check_ptr(dr, &dr->addrs[i]);
    const struct res_txt *spf = check_spf_record(dr);
    if (spf != NULL)
        check_spf_eval(dr, spf);
    check_dkim(dr);
    check_dmarc(dr);
    check_certificate(dr);
    check_dnssec(dr);
    check_tlsa(dr);
    check_mta_sts(dr);
    check_tls_rpt(dr);
    check_port25(dr);
    return dr->oom ? -ENOMEM : 0;
}
