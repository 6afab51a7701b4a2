/* SPDX-License-Identifier: MIT */
/*
 * aliases.c - parsing domains/<domain>/aliases and the alias table (see
 * aliases.h for the format).
 *
 * The parser works on the whole file in memory: it joins an entry's first
 * line with its indented continuation lines, splits the result at commas
 * outside double quotes, and classifies each target.  Entries go into one
 * growable array for every domain; aliases_finish() sorts it by (domain,
 * name), so that a domain's aliases are contiguous, lookups are bsearch()es,
 * and a name defined twice sits next to its twin.
 *
 * Ownership: the table owns every string (one allocation per entry holds
 * the key and its targets' texts); file names are kept once per file.
 */
#include "core/aliases.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/smtp_parse.h"
#include "io/text.h"

#define ALIAS_NAME_MAX 64      /* a local part (RFC 5321 4.5.3.1.1) */
#define ALIAS_DOMAIN_MAX 255

/* An entry as stored: the public view plus its storage. */
struct alias_entry {
    struct alias pub;
    const char *domain;           /* into pub.addr */
    size_t domain_len;
    char *store;                  /* owns addr and the targets' texts */
    struct alias_target *targets; /* owned */
};

/*
 * The table.  Invariants: after aliases_finish(), entries[] is sorted by
 * (domain, name) with no duplicate pair and `finished` is set; before it,
 * only the parser appends.  files[] owns the file names entries point at.
 */
struct aliases {
    struct alias_entry *entries;
    size_t n, cap;
    char **files;
    size_t nfiles;
    bool case_sensitive;
    bool allow_pipe;
    bool finished;
};

struct aliases *aliases_new(bool case_sensitive, bool allow_pipe)
{
    struct aliases *a = calloc(1, sizeof(*a));
    if (a != NULL) {
        a->case_sensitive = case_sensitive;
        a->allow_pipe = allow_pipe;
    }
    return a;
}

void aliases_free(struct aliases *a)
{
    if (a == NULL)
        return;
    for (size_t i = 0; i < a->n; i++) {
        free(a->entries[i].store);
        free(a->entries[i].targets);
    }
    for (size_t i = 0; i < a->nfiles; i++)
        free(a->files[i]);
    free(a->entries);
    free(a->files);
    free(a);
}

/* ---- parsing ---- */

static bool is_blank(char c) { return c == ' ' || c == '\t'; }

static void trim(const char **s, size_t *len)
{
    while (*len > 0 && (is_blank((*s)[0]) || (*s)[0] == '\r'))
        (*s)++, (*len)--;
    while (*len > 0 && (is_blank((*s)[*len - 1]) || (*s)[*len - 1] == '\r'))
        (*len)--;
}

/* The parse of one file in progress. */
struct parser {
    struct aliases *a;
    const char *file;             /* owned by a->files */
    const char *domain;
    size_t domain_len;
    unsigned seq;                 /* entries so far in this file */
    char *err;
    size_t errlen;
};

/* A name: "*" or a local part we can match (no blanks, controls, ':',
 * '@', '"', ',' or '\\'), at most 64 octets. */
static bool name_ok(const char *s, size_t len)
{
    if (len == 1 && s[0] == '*')
        return true;
    if (len == 0 || len > ALIAS_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c == 0x7f || strchr(":@\",\\*|", c) != NULL)
            return false;
    }
    return true;
}

/*
 * Classify one target (unquoted already) and append it to the entry's
 * target list, with its text into store.  key is the entry's own
 * "name@domain" (for the self-reference rule).
 */
static int target_add(struct parser *ps, unsigned line, const char *t, size_t len,
                      const char *key, struct alias_target **tv, size_t *tn, size_t *tcap,
                      struct text_buf *store, size_t **offs)
{
    struct aliases *a = ps->a;
    enum alias_target_kind kind = ALIAS_T_ADDR;
    char addr[ALIAS_NAME_MAX + 1 + ALIAS_DOMAIN_MAX + 1];
    size_t alen = 0, local_len = 0;
    const char *text = t;
    size_t tlen = len;

    if (len > 0 && t[0] == '|') {
        if (!a->allow_pipe) {
            text_seterr(ps->err, ps->errlen,
                        "%s:%u: pipe target '%.*s' needs [local] allow_pipe = on", ps->file, line,
                        (int)(len > 80 ? 80 : len), t);
            return -1;
        }
        text = t + 1;
        tlen = len - 1;
        trim(&text, &tlen);
        if (tlen == 0) {
            text_seterr(ps->err, ps->errlen, "%s:%u: empty command after '|'", ps->file, line);
            return -1;
        }
        kind = ALIAS_T_PIPE;
    } else if (len > 0 && t[0] == '/') {
        text_seterr(ps->err, ps->errlen,
                    "%s:%u: file targets ('%.*s') are not supported; use a local user", ps->file,
                    line, (int)(len > 80 ? 80 : len), t);
        return -1;
    } else if (len >= 9 && strncasecmp(t, ":include:", 9) == 0) {
        text_seterr(ps->err, ps->errlen, "%s:%u: :include: is not supported", ps->file, line);
        return -1;
    } else {
        if (len > 0 && t[0] == '\\') {
            kind = ALIAS_T_MAILBOX;
            t++;
            len--;
        }
        const char *at = memrchr(t, '@', len);
        struct smtp_addr sa;
        if (at == NULL) {
            /* A bare name: a local part of this file's domain. */
            if (len == 0 || len + 1 + ps->domain_len >= sizeof(addr)) {
                text_seterr(ps->err, ps->errlen, "%s:%u: bad target '%.*s'", ps->file, line,
                            (int)(len > 80 ? 80 : len), t);
                return -1;
            }
            memcpy(addr, t, len);
            addr[len] = '@';
            memcpy(addr + len + 1, ps->domain, ps->domain_len);
            alen = len + 1 + ps->domain_len;
        } else {
            if (len >= sizeof(addr)) {
                text_seterr(ps->err, ps->errlen, "%s:%u: target too long", ps->file, line);
                return -1;
            }
            memcpy(addr, t, len);
            alen = len;
            /* Domains compare without case: store them lowercased. */
            for (size_t i = (size_t)(at - t) + 1; i < alen; i++)
                addr[i] = (char)tolower((unsigned char)addr[i]);
        }
        addr[alen] = '\0';
        if (smtp_addr_parse(addr, alen, true, &sa) != SMTP_P_OK) {
            text_seterr(ps->err, ps->errlen,
                        "%s:%u: '%.*s' is not an address (expected name, name@domain, \\name or "
                        "|command)",
                        ps->file, line, (int)(len > 80 ? 80 : len), t);
            return -1;
        }
        local_len = sa.local_len;
        text = addr;
        tlen = alen;
        /* "alice: alice, ..." keeps a copy in alice's own mailbox. */
        if (kind == ALIAS_T_ADDR && strlen(key) == alen) {
            size_t nl = (size_t)(strchr(key, '@') - key);
            if (nl == local_len &&
                (a->case_sensitive ? memcmp(key, addr, nl) == 0
                                   : strncasecmp(key, addr, nl) == 0) &&
                strcmp(key + nl, addr + nl) == 0)
                kind = ALIAS_T_MAILBOX;
        }
    }
    if (*tn == *tcap) {
        size_t cap = *tcap ? *tcap * 2 : 4;
        struct alias_target *v = realloc(*tv, cap * sizeof(*v));
        size_t *o = realloc(*offs, cap * sizeof(*o));
        if (v != NULL)
            *tv = v;
        if (o != NULL)
            *offs = o;
        if (v == NULL || o == NULL)
            goto nomem;
        *tcap = cap;
    }
    (*offs)[*tn] = store->len;
    if (text_add(store, text, tlen) < 0 || text_add(store, "", 1) < 0)
        goto nomem;
    (*tv)[*tn] = (struct alias_target){.kind = kind, .text = NULL, .local_len = local_len};
    (*tn)++;
    return 0;
nomem:
    text_seterr(ps->err, ps->errlen, "%s:%u: out of memory", ps->file, line);
    return -1;
}

/*
 * Split the joined value of an entry into targets at commas outside double
 * quotes.  A target wholly in double quotes loses them (\" and \\ stand for
 * " and \ inside); quotes within a target (a quoted local part) stay.
 */
static int targets_split(struct parser *ps, unsigned line, const char *v, size_t len,
                         const char *key, struct alias_target **tv, size_t *tn,
                         struct text_buf *store, size_t **offs)
{
    size_t tcap = 0, i = 0;
    struct text_buf item = {0};
    int rc = -1;

    while (i <= len) {
        size_t start = i;
        bool in_q = false;
        for (; i < len; i++) {
            if (in_q && v[i] == '\\' && i + 1 < len)
                i++;
            else if (v[i] == '"')
                in_q = !in_q;
            else if (!in_q && v[i] == ',')
                break;
        }
        if (in_q) {
            text_seterr(ps->err, ps->errlen, "%s:%u: unterminated quote", ps->file, line);
            goto out;
        }
        const char *t = v + start;
        size_t tl = i - start;
        trim(&t, &tl);
        if (tl >= 2 && t[0] == '"' && t[tl - 1] == '"') {
            /* "|command, with commas" or "name@domain": unquote.  (A quoted
             * local part ends with its domain, not with a quote.) */
            item.len = 0;
            for (size_t k = 1; k + 1 < tl; k++) {
                if (t[k] == '\\' && k + 2 < tl && (t[k + 1] == '"' || t[k + 1] == '\\'))
                    k++;
                if (text_add(&item, &t[k], 1) < 0)
                    goto nomem;
            }
            t = item.p ? item.p : "";
            tl = item.len;
        }
        if (tl > 0 && target_add(ps, line, t, tl, key, tv, tn, &tcap, store, offs) < 0)
            goto out;
        i++; /* past ',' (or the end) */
    }
    if (*tn == 0) {
        text_seterr(ps->err, ps->errlen, "%s:%u: alias without a target", ps->file, line);
        goto out;
    }
    rc = 0;
    goto out;
nomem:
    text_seterr(ps->err, ps->errlen, "%s:%u: out of memory", ps->file, line);
out:
    free(item.p);
    return rc;
}

/* One logical entry "name: value" (continuations joined) starting at line. */
static int entry_add(struct parser *ps, unsigned line, const char *s, size_t len)
{
    struct aliases *a = ps->a;
    const char *colon = memchr(s, ':', len), *name = s, *at;
    size_t nlen;
    struct text_buf store = {0};
    struct alias_target *tv = NULL;
    size_t tn = 0, *offs = NULL;
    struct alias_entry *e;

    if (colon == NULL) {
        text_seterr(ps->err, ps->errlen, "%s:%u: expected 'name: target, ...'", ps->file, line);
        return -1;
    }
    nlen = (size_t)(colon - s);
    trim(&name, &nlen);
    /* "name@<this domain>" is the same as "name". */
    at = memrchr(name, '@', nlen);
    if (at != NULL) {
        size_t dl = nlen - (size_t)(at - name) - 1;
        if (dl != ps->domain_len || strncasecmp(at + 1, ps->domain, dl) != 0) {
            text_seterr(ps->err, ps->errlen,
                        "%s:%u: alias '%.*s' is not in domain %s (this file holds the aliases of "
                        "%s only)",
                        ps->file, line, (int)(nlen > 80 ? 80 : nlen), name, ps->domain,
                        ps->domain);
            return -1;
        }
        nlen = (size_t)(at - name);
    }
    if (!name_ok(name, nlen)) {
        text_seterr(ps->err, ps->errlen, "%s:%u: '%.*s' is not an alias name (a local part, or * "
                                         "for the catch-all)",
                    ps->file, line, (int)(nlen > 80 ? 80 : nlen), name);
        return -1;
    }
    /* The key: name (lowercased unless case-sensitive) @ domain. */
    for (size_t i = 0; i < nlen; i++) {
        char c = a->case_sensitive ? name[i] : (char)tolower((unsigned char)name[i]);
        if (text_add(&store, &c, 1) < 0)
            goto nomem;
    }
    if (text_add(&store, "@", 1) < 0 || text_add(&store, ps->domain, ps->domain_len) < 0 ||
        text_add(&store, "", 1) < 0)
        goto nomem;
    {
        char key[ALIAS_NAME_MAX + 1 + ALIAS_DOMAIN_MAX + 1];
        snprintf(key, sizeof(key), "%s", store.p);
        const char *v = colon + 1;
        if (targets_split(ps, line, v, len - (size_t)(v - s), key, &tv, &tn, &store, &offs) < 0)
            goto fail;
    }
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        e = realloc(a->entries, cap * sizeof(*e));
        if (e == NULL)
            goto nomem;
        a->entries = e;
        a->cap = cap;
    }
    /* The store is final: point the texts into it. */
    for (size_t i = 0; i < tn; i++)
        tv[i].text = store.p + offs[i];
    e = &a->entries[a->n++];
    *e = (struct alias_entry){
        .pub = {.addr = store.p, .name_len = nlen, .targets = tv, .ntargets = tn,
                .file = ps->file, .line = line, .seq = ps->seq++},
        .domain = store.p + nlen + 1,
        .domain_len = ps->domain_len,
        .store = store.p,
        .targets = tv,
    };
    free(offs);
    return 0;
nomem:
    text_seterr(ps->err, ps->errlen, "%s:%u: out of memory", ps->file, line);
fail:
    free(store.p);
    free(tv);
    free(offs);
    return -1;
}

int aliases_parse(struct aliases *a, const char *file, const char *domain, const char *text,
                  size_t len, char *err, size_t errlen)
{
    struct parser ps = {.a = a, .domain = domain, .domain_len = strlen(domain), .err = err,
                        .errlen = errlen};
    struct text_buf entry = {0};
    unsigned lineno = 0, entry_line = 0;
    const char *p = text, *end = text + len;
    char **files;
    int rc = -1;

    if (a->finished) {
        text_seterr(err, errlen, "%s: the alias table is already finished", file);
        return -1;
    }
    if (memchr(text, '\0', len) != NULL) {
        text_seterr(err, errlen, "%s: NUL byte in the file", file);
        return -1;
    }
    files = realloc(a->files, (a->nfiles + 1) * sizeof(*files));
    if (files == NULL || (files[a->nfiles] = strdup(file)) == NULL) {
        if (files != NULL)
            a->files = files;
        text_seterr(err, errlen, "%s: out of memory", file);
        return -1;
    }
    a->files = files;
    ps.file = files[a->nfiles++];

    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t llen = nl ? (size_t)(nl - p) : (size_t)(end - p);
        const char *l = p;
        size_t tl = llen;
        bool indented = is_blank(p[0]);
        lineno++;
        p += llen + (nl ? 1 : 0);
        trim(&l, &tl);
        if (tl == 0 || l[0] == '#')
            continue;
        if (indented) {
            /* An indented line continues the entry (aliases(5)). */
            if (entry_line == 0) {
                text_seterr(err, errlen, "%s:%u: indented line without an alias before it", ps.file,
                            lineno);
                goto out;
            }
            if (text_add(&entry, " ", 1) < 0 || text_add(&entry, l, tl) < 0)
                goto nomem;
            continue;
        }
        if (entry_line != 0 && entry_add(&ps, entry_line, entry.p, entry.len) < 0)
            goto out;
        entry.len = 0;
        entry_line = lineno;
        if (text_add(&entry, l, tl) < 0)
            goto nomem;
    }
    if (entry_line != 0 && entry_add(&ps, entry_line, entry.p, entry.len) < 0)
        goto out;
    rc = 0;
    goto out;
nomem:
    text_seterr(err, errlen, "%s:%u: out of memory", ps.file, lineno);
out:
    free(entry.p);
    return rc;
}

int aliases_load_file(struct aliases *a, const char *path, const char *domain, char *err,
                      size_t errlen)
{
    struct text_buf buf = {0};
    int rc = text_read_file(path, ALIASES_FILE_MAX, &buf, NULL);

    if (rc == 0)
        rc = aliases_parse(a, path, domain, buf.p, buf.len, err, errlen);
    else if (rc == -ENOENT)
        rc = 0;
    else
        text_seterr(err, errlen, "%s: %s", path,
                    rc == -EFBIG ? "larger than 4 MB" : strerror(-rc));
    text_free(&buf);
    return rc < 0 ? -1 : rc;
}

/* ---- the table ---- */

/* Order: domain, then name (bytes). */
static int cmp_key(const char *d1, size_t dl1, const char *n1, size_t nl1, const char *d2,
                   size_t dl2, const char *n2, size_t nl2)
{
    int c = memcmp(d1, d2, dl1 < dl2 ? dl1 : dl2);
    if (c != 0 || dl1 != dl2)
        return c != 0 ? c : (dl1 < dl2 ? -1 : 1);
    c = memcmp(n1, n2, nl1 < nl2 ? nl1 : nl2);
    if (c != 0 || nl1 != nl2)
        return c != 0 ? c : (nl1 < nl2 ? -1 : 1);
    return 0;
}

static int cmp_entry(const void *x, const void *y)
{
    const struct alias_entry *a = x, *b = y;
    return cmp_key(a->domain, a->domain_len, a->pub.addr, a->pub.name_len, b->domain,
                   b->domain_len, b->pub.addr, b->pub.name_len);
}

int aliases_finish(struct aliases *a, char *err, size_t errlen)
{
    if (a->n > 0)
        qsort(a->entries, a->n, sizeof(*a->entries), cmp_entry);
    for (size_t i = 1; i < a->n; i++) {
        const struct alias *p = &a->entries[i - 1].pub, *q = &a->entries[i].pub;
        if (cmp_entry(&a->entries[i - 1], &a->entries[i]) == 0) {
            /* Report the later one, pointing at the earlier. */
            if (q->line < p->line) {
                const struct alias *t = p;
                p = q;
                q = t;
            }
            text_seterr(err, errlen, "%s:%u: alias %s is already defined at line %u%s", q->file,
                        q->line, q->addr, p->line,
                        a->case_sensitive ? "" : " (names compare without case)");
            return -1;
        }
    }
    a->finished = true;
    return 0;
}

/* Lowercase name into buf unless case-sensitive; false when too long. */
static bool norm(const struct aliases *a, const char *s, size_t len, char *buf, size_t cap,
                 bool fold)
{
    if (len >= cap)
        return false;
    for (size_t i = 0; i < len; i++)
        buf[i] = fold ? (char)tolower((unsigned char)s[i]) : s[i];
    buf[len] = '\0';
    return true;
}

const struct alias *aliases_find(const struct aliases *a, const char *name, size_t nlen,
                                 const char *domain, size_t dlen)
{
    char n[ALIAS_NAME_MAX + 1], d[ALIAS_DOMAIN_MAX + 1];
    size_t lo = 0, hi;

    if (a == NULL || !a->finished || a->n == 0 ||
        !norm(a, name, nlen, n, sizeof(n), !a->case_sensitive) ||
        !norm(a, domain, dlen, d, sizeof(d), true))
        return NULL;
    hi = a->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct alias_entry *e = &a->entries[mid];
        int c = cmp_key(d, dlen, n, nlen, e->domain, e->domain_len, e->pub.addr,
                        e->pub.name_len);
        if (c == 0)
            return &e->pub;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const struct alias *aliases_first(const struct aliases *a, const char *domain, size_t dlen)
{
    char d[ALIAS_DOMAIN_MAX + 1];
    const struct alias *best = NULL;
    size_t lo = 0, hi;

    if (a == NULL || !a->finished || !norm(a, domain, dlen, d, sizeof(d), true))
        return NULL;
    /* The first entry of the domain's range, then scan it. */
    hi = a->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct alias_entry *e = &a->entries[mid];
        if (cmp_key(e->domain, e->domain_len, "", 0, d, dlen, "", 0) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t i = lo; i < a->n; i++) {
        const struct alias_entry *e = &a->entries[i];
        if (e->domain_len != dlen || memcmp(e->domain, d, dlen) != 0)
            break;
        if (e->pub.name_len == 1 && e->pub.addr[0] == '*')
            continue;
        if (best == NULL || e->pub.seq < best->seq)
            best = &e->pub;
    }
    return best;
}

size_t aliases_count(const struct aliases *a) { return a ? a->n : 0; }

size_t aliases_index(const struct aliases *a, const struct alias *al)
{
    /* pub is the first member of an entry. */
    const struct alias_entry *e = (const struct alias_entry *)(const void *)al;
    assert(e >= a->entries && e < a->entries + a->n);
    return (size_t)(e - a->entries);
}

const struct alias *aliases_at(const struct aliases *a, size_t i)
{
    return a != NULL && i < a->n ? &a->entries[i].pub : NULL;
}
