/* SPDX-License-Identifier: MIT */
/*
 * psl.c - the Public Suffix List as an open-addressing hash set of rules
 * (see psl.h).  Each entry is a name with flags: a normal rule, the base of
 * a wildcard ("ck" for "*.ck"), an exception ("www.ck" for "!www.ck").
 * Finding the public suffix of a.b.c walks its suffixes c, b.c, a.b.c and
 * checks each against the set: one probe per label, no allocation.
 *
 * Written here rather than with libpsl: the lookup is twenty lines over a
 * table we build once, and libpsl's Debian build pulls libidn2 and
 * libunistring for the IDNA work this table leaves out (see psl.h).
 */
#include "core/psl.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define F_RULE 1u       /* "name" */
#define F_WILD 2u       /* "*.name" */
#define F_EXCEPT 4u     /* "!name" */
#define NAME_MAX_LEN 253

struct ent {
    char *name;         /* lower case, owned; NULL: empty slot */
    unsigned flags;
};

/* Invariant: n < cap / 2 (cap a power of two), so probes end. */
struct psl {
    struct ent *tab;
    size_t cap, n;
};

static uint32_t hash(const char *s, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c - 'A' + 'a');
        h ^= c;
        h *= 16777619u;
    }
    return h;
}

static struct ent *slot(const struct psl *psl, const char *s, size_t len)
{
    size_t mask = psl->cap - 1;
    for (size_t i = hash(s, len) & mask;; i = (i + 1) & mask) {
        struct ent *e = &psl->tab[i];
        if (e->name == NULL || (strlen(e->name) == len && strncasecmp(e->name, s, len) == 0))
            return e;
    }
}

static int grow(struct psl *psl)
{
    size_t cap = psl->cap ? psl->cap * 2 : 16384;
    struct ent *old = psl->tab;
    size_t oldcap = psl->cap;
    psl->tab = calloc(cap, sizeof(*psl->tab));
    if (psl->tab == NULL) {
        psl->tab = old;
        return -ENOMEM;
    }
    psl->cap = cap;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].name != NULL)
            *slot(psl, old[i].name, strlen(old[i].name)) = old[i];
    free(old);
    return 0;
}

static int add(struct psl *psl, const char *name, size_t len, unsigned flag)
{
    if (len == 0 || len > NAME_MAX_LEN)
        return 0; /* not a rule we can match */
    if ((psl->n + 1) * 2 >= psl->cap && grow(psl) < 0)
        return -ENOMEM;
    struct ent *e = slot(psl, name, len);
    if (e->name == NULL) {
        if ((e->name = strndup(name, len)) == NULL)
            return -ENOMEM;
        for (char *p = e->name; *p != '\0'; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p - 'A' + 'a');
        psl->n++;
    }
    e->flags |= flag;
    return 0;
}

struct psl *psl_load(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        snprintf(err, errlen, "public suffix list %s: %s", path, strerror(errno));
        return NULL;
    }
    struct psl *psl = calloc(1, sizeof(*psl));
    char line[1024];
    int rc = psl != NULL ? 0 : -ENOMEM;
    while (rc == 0 && fgets(line, sizeof(line), f) != NULL) {
        /* A rule is the first word of a line; "//" starts a comment. */
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (p[0] == '/' && p[1] == '/')
            continue;
        size_t len = strcspn(p, " \t\r\n");
        if (len == 0)
            continue;
        if (p[0] == '!')
            rc = add(psl, p + 1, len - 1, F_EXCEPT);
        else if (len > 2 && p[0] == '*' && p[1] == '.')
            rc = add(psl, p + 2, len - 2, F_WILD);
        else
            rc = add(psl, p, len, F_RULE);
    }
    bool bad = ferror(f);
    fclose(f);
    if (rc < 0 || bad || psl->n == 0) {
        snprintf(err, errlen, "public suffix list %s: %s", path,
                 rc < 0 ? "out of memory" : bad ? "read error" : "no rule in the file");
        psl_free(psl);
        return NULL;
    }
    return psl;
}

void psl_free(struct psl *psl)
{
    if (psl == NULL)
        return;
    for (size_t i = 0; i < psl->cap; i++)
        free(psl->tab[i].name);
    free(psl->tab);
    free(psl);
}

size_t psl_count(const struct psl *psl) { return psl != NULL ? psl->n : 0; }

static unsigned flags_of(const struct psl *psl, const char *s, size_t len)
{
    if (psl == NULL || psl->cap == 0)
        return 0;
    const struct ent *e = slot(psl, s, len);
    return e->name != NULL ? e->flags : 0;
}

int psl_org_domain(const struct psl *psl, const char *domain, char *out, size_t cap)
{
    size_t len = strlen(domain);
    if (len > 0 && domain[len - 1] == '.')
        len--;
    if (len == 0 || len > NAME_MAX_LEN || domain[0] == '.')
        return -EINVAL;
    /* Label starts, right to left: starts[0] is the last label. */
    size_t starts[128], nlab = 0;
    for (size_t i = len; i > 0 && nlab < 128; i--) {
        if (domain[i - 1] == '.') {
            if (i == len || domain[i] == '.')
                return -EINVAL; /* an empty label */
            starts[nlab++] = i;
        }
    }
    if (nlab == 128)
        return -EINVAL;
    starts[nlab++] = 0;

    /* The public suffix's label count: the longest matching rule, an
     * exception winning over everything; the implicit "*" gives 1. */
    size_t suffix = 1;
    for (size_t k = 1; k <= nlab; k++) {
        const char *s = domain + starts[k - 1];
        size_t slen = len - starts[k - 1];
        unsigned fl = flags_of(psl, s, slen);
        if (fl & F_EXCEPT) {
            suffix = k - 1;
            break;
        }
        if (fl & F_RULE)
            suffix = k;
        if (k < nlab) {
            /* "*.s" matches the name one label longer. */
            if (fl & F_WILD)
                suffix = k + 1;
        }
    }
    if (suffix >= nlab)
        return -EINVAL; /* the domain is a public suffix itself */
    const char *org = domain + starts[suffix];
    size_t olen = len - starts[suffix];
    if (olen + 1 > cap)
        return -ENAMETOOLONG;
    for (size_t i = 0; i < olen; i++)
        out[i] = (org[i] >= 'A' && org[i] <= 'Z') ? (char)(org[i] - 'A' + 'a') : org[i];
    out[olen] = '\0';
    return (int)olen;
}
