/* SPDX-License-Identifier: MIT */
/*
 * recipients.c - resolving a recipient through users, aliases, plus
 * addressing, postmaster@, the catch-all and SRS (see recipients.h for the
 * order), and checking alias chains when a table is loaded.
 *
 * One lookup function, lookup(), answers "what does this name at this local
 * domain mean" (an alias, a user, or nothing) for both the resolver and the
 * loader's check, so that the check sees exactly the edges the resolver
 * will follow.  Expansion is a depth-first walk over alias targets that
 * appends destinations to the result, merging duplicates.
 */
#include "core/recipients.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/aliases.h"
#include "core/config.h"
#include "core/srs.h"
#include "core/users.h"
#include "io/text.h"
#include "resolver/resolver.h"

#define NAME_MAX_LEN 64      /* a local part */

const char *rcpt_status_name(int status)
{
    switch (status) {
    case RCPT_LOCAL: return "local";
    case RCPT_SRS: return "srs";
    case RCPT_NOT_LOCAL: return "not-local";
    case RCPT_UNKNOWN: return "unknown";
    case RCPT_SRS_INVALID: return "srs-invalid";
    default: return "error";
    }
}

void rcpt_result_free(struct rcpt_result *res)
{
    if (res == NULL)
        return;
    free(res->dests);
    free(res->srs_addr);
    memset(res, 0, sizeof(*res));
}

/* ---- lookup ---- */

enum hit_kind { HIT_NONE = 0, HIT_USER, HIT_ALIAS };

/* What a name at a local domain means. */
struct hit {
    enum hit_kind kind;
    const struct alias *alias;   /* HIT_ALIAS */
    const char *user;            /* HIT_USER: the user's key */
    const char *how;             /* which rule matched */
};

static bool word_ieq(const char *s, size_t len, const char *w)
{
    return strlen(w) == len && strncasecmp(s, w, len) == 0;
}

/* A user by local part and domain; its key or NULL. */
static const char *user_at(const struct users *u, const char *local, size_t llen,
                           const char *domain, size_t dlen)
{
    char addr[USERS_KEY_MAX + 1];
    if (llen + 1 + dlen > USERS_KEY_MAX)
        return NULL;
    memcpy(addr, local, llen);
    addr[llen] = '@';
    memcpy(addr + llen + 1, domain, dlen);
    return users_find(u, addr, llen + 1 + dlen);
}

/* An alias or a user by this exact name. */
static bool lookup_exact(const struct users *u, const char *local, size_t llen,
                         const char *domain, size_t dlen, struct hit *h, const char *how_alias,
                         const char *how_user)
{
    const struct alias *al = aliases_find(users_aliases(u), local, llen, domain, dlen);
    if (al != NULL) {
        *h = (struct hit){HIT_ALIAS, al, NULL, how_alias};
        return true;
    }
    const char *key = user_at(u, local, llen, domain, dlen);
    if (key != NULL) {
        *h = (struct hit){HIT_USER, NULL, key, how_user};
        return true;
    }
    return false;
}

/*
 * Steps 2-5 of recipients.h for local[0..llen) at a local domain (domain is
 * known to be local; any case).  top: the recipient itself (the catch-all
 * applies) rather than an alias target.
 */
static struct hit lookup(const struct users *u, const char *local, size_t llen,
                         const char *domain, size_t dlen, bool top)
{
    struct hit h = {HIT_NONE, NULL, NULL, "no-such-user"};
    const struct aliases *as = users_aliases(u);
    const char *seps = users_plus_separator(u);
    size_t base = llen;

    if (lookup_exact(u, local, llen, domain, dlen, &h, "alias", "user"))
        return h;
    /* user+tag: the part before the first separator (not at the start). */
    for (size_t i = 1; i < llen && seps[0] != '\0'; i++) {
        if (strchr(seps, local[i]) != NULL) {
            base = i;
            if (lookup_exact(u, local, base, domain, dlen, &h, "plus", "plus"))
                return h;
            break;
        }
    }
    if (word_ieq(local, base, "postmaster") || word_ieq(local, base, "abuse")) {
        const char *first = users_first(u, domain, dlen);
        const struct alias *al;
        if (first != NULL)
            return (struct hit){HIT_USER, NULL, first, "postmaster"};
        if ((al = aliases_find(as, "*", 1, domain, dlen)) != NULL ||
            (al = aliases_first(as, domain, dlen)) != NULL)
            return (struct hit){HIT_ALIAS, al, NULL, "postmaster"};
    }
    if (top) {
        const struct alias *al = aliases_find(as, "*", 1, domain, dlen);
        if (al != NULL)
            return (struct hit){HIT_ALIAS, al, NULL, "catch-all"};
    }
    return h;
}

/* The local part without its quotes ("a b"@ -> a b): into buf, or as it is. */
static bool local_unquote(const char **local, size_t *llen, char *buf, size_t cap)
{
    const char *s = *local;
    size_t n = 0;

    if (*llen < 2 || s[0] != '"' || s[*llen - 1] != '"')
        return true;
    for (size_t i = 1; i + 1 < *llen; i++) {
        if (s[i] == '\\' && i + 2 < *llen)
            i++;
        if (n + 1 >= cap)
            return false;
        buf[n++] = s[i];
    }
    buf[n] = '\0';
    *local = buf;
    *llen = n;
    return true;
}

/* ---- expansion ---- */

struct walk {
    const struct users *u;
    struct rcpt_result *res;
};

static int emit(struct walk *w, enum rcpt_dest_kind kind, const char *addr, size_t local_len,
                const char *domain, const char *alias)
{
    struct rcpt_result *r = w->res;

    for (size_t i = 0; i < r->ndests; i++)
        if (r->dests[i].kind == kind && strcmp(r->dests[i].addr, addr) == 0)
            return 0;
    if (r->ndests >= RCPT_DESTS_MAX)
        return -E2BIG;
    if (r->ndests == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 4;
        struct rcpt_dest *d = realloc(r->dests, cap * sizeof(*d));
        if (d == NULL)
            return -ENOMEM;
        r->dests = d;
        r->cap = cap;
    }
    r->dests[r->ndests++] = (struct rcpt_dest){kind, addr, local_len, domain, alias};
    return 0;
}

static int emit_user(struct walk *w, const char *key)
{
    const char *at = strrchr(key, '@');
    return emit(w, RCPT_MAILBOX, key, (size_t)(at - key), at + 1, NULL);
}

static int expand(struct walk *w, const struct alias *al, unsigned depth);

/* A hit: a user's mailbox, or an alias's targets. */
static int take(struct walk *w, const struct hit *h, unsigned depth)
{
    if (h->kind == HIT_USER)
        return emit_user(w, h->user);
    if (h->kind == HIT_ALIAS)
        return expand(w, h->alias, depth + 1);
    return 0;
}

static int expand(struct walk *w, const struct alias *al, unsigned depth)
{
    const char *adom = al->addr + al->name_len + 1;
    int rc;

    if (depth > RCPT_DEPTH_MAX)
        return -ELOOP;
    for (size_t i = 0; i < al->ntargets; i++) {
        const struct alias_target *t = &al->targets[i];
        const char *tdom = t->text + t->local_len + 1;
        size_t tdlen;
        switch (t->kind) {
        case ALIAS_T_PIPE:
            rc = emit(w, RCPT_PIPE, t->text, 0, adom, al->addr);
            break;
        case ALIAS_T_MAILBOX: {
            const char *key = users_find(w->u, t->text, strlen(t->text));
            rc = key != NULL ? emit_user(w, key) : 0; /* warned at load */
            break;
        }
        case ALIAS_T_ADDR:
        default:
            tdlen = strlen(tdom);
            if (users_is_local_domain(w->u, tdom, tdlen)) {
                struct hit h = lookup(w->u, t->text, t->local_len, tdom, tdlen, false);
                rc = take(w, &h, depth);
            } else {
                rc = emit(w, RCPT_FORWARD, t->text, 0, adom, al->addr);
            }
            break;
        }
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* ---- resolve ---- */

/* The local domain postmaster@<hostname> belongs to: the longest local
 * domain the host name is under, else the first local domain. */
static const char *host_domain(const struct users *u, const char *host)
{
    size_t hl = strlen(host);
    const char *best = NULL;

    for (size_t i = 0; i < users_domain_count(u); i++) {
        const char *d = users_domain_at(u, i);
        size_t dl = strlen(d);
        if (dl <= hl && strcasecmp(host + hl - dl, d) == 0 &&
            (dl == hl || host[hl - dl - 1] == '.') && (best == NULL || dl > strlen(best)))
            best = d;
    }
    return best != NULL ? best : users_domain_at(u, 0);
}

static int srs_check(const struct config *cfg, const char *addr, size_t len, time_t now,
                     struct rcpt_result *res)
{
    const struct srs srs = {(const char *const *)cfg->srs.secrets, cfg->srs.nsecrets,
                            cfg->srs.max_age, cfg->srs.separator};
    char out[USERS_KEY_MAX * 2];
    int rc = srs_reverse(&srs, addr, len, now, out, sizeof(out));

    if (rc < 0) {
        res->status = RCPT_SRS_INVALID;
        res->how = rc == -EBADMSG ? "srs-forged" : rc == -ETIMEDOUT ? "srs-expired"
                                                                     : "srs-malformed";
        return RCPT_SRS_INVALID;
    }
    if ((res->srs_addr = strdup(out)) == NULL)
        return -ENOMEM;
    struct walk w = {NULL, res};
    if ((rc = emit(&w, RCPT_FORWARD, res->srs_addr, 0, NULL, NULL)) < 0)
        return rc;
    res->status = RCPT_SRS;
    res->how = "srs";
    return RCPT_SRS;
}

static int resolve(const struct users *u, const struct config *cfg, const char *addr,
                   size_t len, time_t now, struct rcpt_result *res)
{
    const char *at = len ? memrchr(addr, '@', len) : NULL;
    const char *local = addr, *domain;
    size_t llen, dlen;
    char unq[NAME_MAX_LEN * 2 + 1], alabels[RES_NAME_MAX + 1];

    res->status = RCPT_NOT_LOCAL;
    res->how = "not-local";
    if (at == NULL || at == addr || at == addr + len - 1)
        return RCPT_NOT_LOCAL;
    llen = (size_t)(at - addr);
    domain = at + 1;
    dlen = len - llen - 1;
    if (!local_unquote(&local, &llen, unq, sizeof(unq)))
        return (res->status = RCPT_UNKNOWN, res->how = "no-such-user", RCPT_UNKNOWN);
    if (dlen <= RES_NAME_MAX * 4 && !res_name_is_ascii(domain, dlen) &&
        !users_is_local_domain(u, domain, dlen)) {
        /* An internationalized domain (SMTPUTF8) is ours when its A-labels
         * are: domains are configured in ASCII. */
        char utf8[RES_NAME_MAX * 4 + 1];
        memcpy(utf8, domain, dlen);
        utf8[dlen] = '\0';
        int n = res_name_to_ascii(utf8, alabels, sizeof alabels);
        if (n > 0 && users_is_local_domain(u, alabels, (size_t)n)) {
            domain = alabels;
            dlen = (size_t)n;
        }
    }
    if (!users_is_local_domain(u, domain, dlen)) {
        /* RFC 5321 4.5.1: postmaster at the host name is ours too. */
        if (cfg == NULL || cfg->hostname == NULL || strlen(cfg->hostname) != dlen ||
            strncasecmp(cfg->hostname, domain, dlen) != 0 ||
            !(word_ieq(local, llen, "postmaster") || word_ieq(local, llen, "abuse")) ||
            (domain = host_domain(u, cfg->hostname)) == NULL)
            return RCPT_NOT_LOCAL;
        dlen = strlen(domain);
    }
    if (cfg != NULL && cfg->srs.nsecrets > 0 && srs_is_srs(local, llen))
        return srs_check(cfg, local, llen, now, res);

    struct hit h = lookup(u, local, llen, domain, dlen, true);
    struct walk w = {u, res};
    int rc = take(&w, &h, 0);
    if (rc < 0)
        return rc;
    if (h.kind == HIT_NONE || res->ndests == 0) {
        res->status = RCPT_UNKNOWN;
        res->how = h.kind == HIT_NONE ? "no-such-user" : "alias-empty";
        return RCPT_UNKNOWN;
    }
    res->status = RCPT_LOCAL;
    res->how = h.how;
    return RCPT_LOCAL;
}

int recipients_resolve(const struct users *u, const struct config *cfg, const char *addr,
                       size_t len, time_t now, struct rcpt_result *res)
{
    struct rcpt_result tmp = {0};
    int rc;

    if (res == NULL) {
        rc = resolve(u, cfg, addr, len, now, &tmp);
        rcpt_result_free(&tmp);
        return rc;
    }
    rcpt_result_free(res);
    rc = resolve(u, cfg, addr, len, now, res);
    if (rc < 0) {
        res->ndests = 0;
        res->how = rc == -ELOOP ? "alias-too-deep" : rc == -E2BIG ? "too-many-destinations"
                                                                  : "out-of-memory";
    }
    return rc;
}

int recipients_forward_sender(const struct config *cfg, const char *sender,
                              const struct rcpt_dest *dest, time_t now, char *out, size_t cap)
{
    size_t len = strlen(sender);

    if (cfg != NULL && cfg->srs.nsecrets > 0 && len > 0 && dest->kind == RCPT_FORWARD &&
        dest->domain != NULL) {
        const struct srs srs = {(const char *const *)cfg->srs.secrets, cfg->srs.nsecrets,
                                cfg->srs.max_age, cfg->srs.separator};
        return srs_forward(&srs, sender, len, dest->domain, now, out, cap);
    }
    if (len >= cap)
        return -ENOSPC;
    memcpy(out, sender, len + 1);
    return (int)len;
}

/* ---- verification at load ---- */

/*
 * The walk of recipients_verify().  Invariants: state[i] is 0 (not seen),
 * 1 (on the current path) or 2 (done, height[i] = the longest chain of
 * aliases starting at alias i, itself included); path[0..npath) is the
 * chain being explored.
 */
struct verify {
    const struct users *u;
    const struct aliases *as;        /* the table's aliases */
    unsigned char *state;
    unsigned *height;
    const struct alias *path[RCPT_DEPTH_MAX];
    size_t npath;
    void (*warn)(void *, const char *);
    void *warn_arg;
    char *err;
    size_t errlen;
};

static void path_text(const struct verify *v, const struct alias *last, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < v->npath && n < cap; i++)
        n += (size_t)snprintf(out + n, cap - n, "%s -> ", v->path[i]->addr);
    if (n < cap)
        snprintf(out + n, cap - n, "%s", last->addr);
}

static int verify_alias(struct verify *v, const struct alias *al);

/* One edge: al's target leads to alias next. */
static int verify_edge(struct verify *v, const struct alias *next, unsigned *h)
{
    size_t j = aliases_index(v->as, next);
    char text[1024];

    if (v->state[j] == 1) {
        path_text(v, next, text, sizeof(text));
        text_seterr(v->err, v->errlen, "%s:%u: alias loop: %s", v->path[0]->file, v->path[0]->line,
                    text);
        return -1;
    }
    if (v->state[j] == 0 && verify_alias(v, next) < 0)
        return -1;
    if (v->height[j] + 1 > *h)
        *h = v->height[j] + 1;
    return 0;
}

static void warn_target(struct verify *v, const struct alias *al, const struct alias_target *t,
                        const char *what)
{
    char msg[768];
    if (v->warn == NULL)
        return;
    snprintf(msg, sizeof(msg), "%s:%u: alias %s: target %s%s %s (ignored)", al->file, al->line,
             al->addr, t->kind == ALIAS_T_MAILBOX ? "\\" : "", t->text, what);
    v->warn(v->warn_arg, msg);
}

static int verify_alias(struct verify *v, const struct alias *al)
{
    size_t i = aliases_index(v->as, al);
    unsigned h = 1;
    char text[1024];

    if (v->npath == RCPT_DEPTH_MAX) {
        path_text(v, al, text, sizeof(text));
        text_seterr(v->err, v->errlen, "%s:%u: alias chain longer than %d: %s", v->path[0]->file,
                    v->path[0]->line, RCPT_DEPTH_MAX, text);
        return -1;
    }
    v->state[i] = 1;
    v->path[v->npath++] = al;
    for (size_t k = 0; k < al->ntargets; k++) {
        const struct alias_target *t = &al->targets[k];
        if (t->kind == ALIAS_T_PIPE)
            continue;
        if (t->kind == ALIAS_T_MAILBOX) {
            if (users_find(v->u, t->text, strlen(t->text)) == NULL)
                warn_target(v, al, t, "is not a user");
            continue;
        }
        const char *tdom = t->text + t->local_len + 1;
        size_t tdlen = strlen(tdom);
        if (!users_is_local_domain(v->u, tdom, tdlen))
            continue; /* remote */
        struct hit hit = lookup(v->u, t->text, t->local_len, tdom, tdlen, false);
        if (hit.kind == HIT_NONE)
            warn_target(v, al, t, "is neither a user nor an alias");
        else if (hit.kind == HIT_ALIAS && verify_edge(v, hit.alias, &h) < 0)
            return -1;
    }
    v->npath--;
    v->state[i] = 2;
    v->height[i] = h;
    if (h + v->npath > RCPT_DEPTH_MAX) {
        /* Long through aliases already checked (their height is known). */
        path_text(v, al, text, sizeof(text));
        text_seterr(v->err, v->errlen, "%s:%u: alias chain longer than %d: %s -> ... (%zu aliases)",
                    v->npath ? v->path[0]->file : al->file, v->npath ? v->path[0]->line : al->line,
                    RCPT_DEPTH_MAX, text, h + v->npath);
        return -1;
    }
    return 0;
}

int recipients_verify(const struct users *u, void (*warn)(void *arg, const char *msg),
                      void *warn_arg, char *err, size_t errlen)
{
    const struct aliases *as = users_aliases(u);
    size_t n = aliases_count(as);
    struct verify v = {.u = u, .as = as, .warn = warn, .warn_arg = warn_arg,
                       .err = err, .errlen = errlen};
    int rc = 0;

    if (n == 0)
        return 0;
    v.state = calloc(n, 1);
    v.height = calloc(n, sizeof(*v.height));
    if (v.state == NULL || v.height == NULL) {
        text_seterr(err, errlen, "out of memory");
        rc = -1;
        goto out;
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (v.state[i] == 0) {
            v.npath = 0;
            rc = verify_alias(&v, aliases_at(as, i));
        }
    }
out:
    free(v.state);
    free(v.height);
    return rc;
}
