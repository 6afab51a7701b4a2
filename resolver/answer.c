/* SPDX-License-Identifier: MIT */
/*
 * answer.c - struct res_answer: built from libunbound's results (the rdata
 * of each record, in wire form, parsed here per type), copied for one MX
 * request with equal preferences shuffled, or made up for the RFC 5321 5.1
 * implicit MX; and the reference counting that lets an answer outlive the
 * callback, the cache entry and even the context it came from.
 *
 * An answer owns a chain of blocks (struct res_blk) holding its arrays and
 * strings, so that freeing it is one walk.  The rdata is checked byte by
 * byte: libunbound hands over the records of a validated (or insecure)
 * RRset, but a malformed record is skipped, never read past.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resolver/res_internal.h"

#define RCODE_NXDOMAIN 3

/* One allocation owned by an answer. */
struct res_blk {
    struct res_blk *next;
    max_align_t data[];
};

/* What every answer says when memory ran out making a real one. */
static struct res_answer nomem_answer = {
    .status = RES_ERROR, .sec = RES_SEC_INSECURE, .name = "", .canon = "",
    .why = "out of memory", .rcode = -1, .refs = 0,
};

/* n zeroed bytes owned by a (freed with it), or NULL. */
static void *ans_alloc(struct res_answer *a, size_t n)
{
    struct res_blk *b = calloc(1, sizeof(*b) + n + 1);
    if (b == NULL)
        return NULL;
    b->next = a->mem;
    a->mem = b;
    return b->data;
}

static char *ans_strdup(struct res_answer *a, const char *s, size_t len)
{
    char *d = ans_alloc(a, len + 1);
    if (d != NULL)
        memcpy(d, s, len); /* NUL from calloc */
    return d;
}

static void answer_free(struct res_answer *a)
{
    struct res_blk *b = a->mem;
    while (b != NULL) {
        struct res_blk *next = b->next;
        free(b);
        b = next;
    }
    if (a->parent != NULL)
        res_answer_unref(a->parent);
    free(a);
}

const struct res_answer *res_answer_ref(const struct res_answer *ans)
{
    struct res_answer *a = (struct res_answer *)ans;
    if (a->refs > 0)
        a->refs++;
    return ans;
}

void res_answer_unref(const struct res_answer *ans)
{
    struct res_answer *a = (struct res_answer *)ans;
    if (a == NULL || a->refs == 0)
        return;
    if (--a->refs == 0)
        answer_free(a);
}

/* A fresh answer for (type, name) with one reference; NULL on ENOMEM. */
static struct res_answer *answer_new(enum res_type type, const char *name)
{
    struct res_answer *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return NULL;
    a->refs = 1;
    a->type = type;
    a->rcode = -1;
    if ((a->name = ans_strdup(a, name, strlen(name))) == NULL) {
        free(a);
        return NULL;
    }
    a->canon = a->name;
    return a;
}

struct res_answer *answer_error(enum res_type type, const char *name, enum res_status status,
                                const char *why)
{
    struct res_answer *a = answer_new(type, name);
    if (a == NULL)
        return &nomem_answer;
    a->status = status;
    a->sec = status == RES_BOGUS ? RES_SEC_BOGUS : RES_SEC_INSECURE;
    if (why != NULL && (a->why = ans_strdup(a, why, strlen(why))) == NULL) {
        answer_free(a);
        return &nomem_answer;
    }
    return a;
}

int wire_name_text(const unsigned char *p, size_t len, char *out, size_t outlen)
{
    size_t i = 0, o = 0;

    for (;;) {
        if (i >= len)
            return -1;
        unsigned lab = p[i++];
        if (lab == 0)
            break;
        if (lab > 63 || lab > len - i)
            return -1; /* compression pointers never appear in rdata here */
        if (o > 0) {
            if (o + 1 >= outlen)
                return -1;
            out[o++] = '.';
        }
        for (unsigned k = 0; k < lab; k++) {
            unsigned char c = p[i++];
            bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                         (c >= '0' && c <= '9') || c == '-' || c == '_';
            if (o + (plain ? 1 : 4) >= outlen)
                return -1;
            if (plain)
                out[o++] = (char)c;
            else
                o += (size_t)snprintf(out + o, outlen - o, "\\%03u", c);
        }
        if (i > 255)
            return -1; /* RFC 1035 3.1: 255 octets at most */
    }
    out[o] = '\0';
    return (int)i;
}

/* The text of the name filling rdata[0..len) exactly; NULL if malformed. */
static char *rdata_name(struct res_answer *a, const unsigned char *p, size_t len, bool *is_root)
{
    char text[4 * 255 + 1];
    int used = wire_name_text(p, len, text, sizeof(text));
    if (used < 0 || (size_t)used != len)
        return NULL;
    if (is_root != NULL)
        *is_root = text[0] == '\0';
    return ans_strdup(a, text, strlen(text));
}

/* ---- per type: fill a->n and the array; return -1 on ENOMEM ---- */

static int parse_addrs(struct res_answer *a, const struct ub_result *r, size_t count, size_t alen)
{
    unsigned char *arr = ans_alloc(a, count * alen);
    if (arr == NULL)
        return -1;
    for (size_t i = 0; i < count; i++) {
        if ((size_t)r->len[i] != alen)
            continue; /* malformed */
        memcpy(arr + a->n * alen, r->data[i], alen);
        a->n++;
    }
    if (alen == 4)
        a->a = (const struct in_addr *)arr;
    else
        a->aaaa = (const struct in6_addr *)arr;
    return 0;
}

static int parse_mx(struct res_answer *a, const struct ub_result *r, size_t count, bool *null_mx)
{
    struct res_mx *mx = ans_alloc(a, count * sizeof(*mx));
    if (mx == NULL)
        return -1;
    *null_mx = false;
    for (size_t i = 0; i < count; i++) {
        const unsigned char *p = (const unsigned char *)r->data[i];
        size_t len = (size_t)r->len[i];
        bool root;
        if (len < 3)
            continue;
        char *host = rdata_name(a, p + 2, len - 2, &root);
        if (host == NULL)
            continue; /* malformed (or ENOMEM: the host is lost, not misread) */
        if (root) {
            *null_mx = true; /* RFC 7505 3: "." is no host */
            continue;
        }
        /* Insertion keeps the RRset order among equal preferences. */
        uint16_t pref = (uint16_t)(p[0] << 8 | p[1]);
        size_t j = a->n;
        while (j > 0 && mx[j - 1].pref > pref) {
            mx[j] = mx[j - 1];
            j--;
        }
        mx[j].pref = pref;
        mx[j].host = host;
        a->n++;
    }
    a->mx = mx;
    return 0;
}

static int parse_ptr(struct res_answer *a, const struct ub_result *r, size_t count)
{
    const char **names = ans_alloc(a, count * sizeof(*names));
    if (names == NULL)
        return -1;
    for (size_t i = 0; i < count; i++) {
        char *name = rdata_name(a, (const unsigned char *)r->data[i], (size_t)r->len[i], NULL);
        if (name != NULL)
            names[a->n++] = name;
    }
    a->ptr = names;
    return 0;
}

static int parse_tlsa(struct res_answer *a, const struct ub_result *r, size_t count)
{
    struct res_tlsa *t = ans_alloc(a, count * sizeof(*t));
    if (t == NULL)
        return -1;
    for (size_t i = 0; i < count; i++) {
        const unsigned char *p = (const unsigned char *)r->data[i];
        size_t len = (size_t)r->len[i];
        if (len < 4)
            continue; /* RFC 6698 2.1: usage, selector, type, then data */
        uint8_t *data = ans_alloc(a, len - 3);
        if (data == NULL)
            return -1;
        memcpy(data, p + 3, len - 3);
        t[a->n] = (struct res_tlsa){
            .usage = p[0], .selector = p[1], .mtype = p[2], .data = data, .len = len - 3};
        a->n++;
    }
    a->tlsa = t;
    return 0;
}

/* One TXT rdata: <len><bytes> strings (RFC 1035 3.3.14). */
static int parse_txt_one(struct res_answer *a, const unsigned char *p, size_t len,
                         struct res_txt *out)
{
    size_t nstr = 0, total = 0, i = 0;

    while (i < len) {
        size_t sl = p[i];
        if (sl > len - i - 1)
            return 1; /* malformed */
        i += 1 + sl;
        total += sl;
        nstr++;
    }
    if (nstr == 0)
        return 1;
    struct res_txt_str *strs = ans_alloc(a, nstr * sizeof(*strs));
    char *joined = ans_alloc(a, total + 1);
    if (strs == NULL || joined == NULL)
        return -1;
    size_t o = 0, k = 0;
    for (i = 0; i < len; k++) {
        size_t sl = p[i++];
        char *s = ans_strdup(a, (const char *)p + i, sl);
        if (s == NULL)
            return -1;
        strs[k] = (struct res_txt_str){.s = s, .len = sl};
        memcpy(joined + o, p + i, sl); /* RFC 7208 3.3: joined with nothing between */
        o += sl;
        i += sl;
    }
    *out = (struct res_txt){.text = joined, .len = total, .strings = strs, .nstrings = nstr};
    return 0;
}

static int parse_txt(struct res_answer *a, const struct ub_result *r, size_t count)
{
    struct res_txt *t = ans_alloc(a, count * sizeof(*t));
    if (t == NULL)
        return -1;
    for (size_t i = 0; i < count; i++) {
        int rc = parse_txt_one(a, (const unsigned char *)r->data[i], (size_t)r->len[i], &t[a->n]);
        if (rc < 0)
            return -1;
        if (rc == 0)
            a->n++;
    }
    a->txt = t;
    return 0;
}

/* "Example.COM." -> "example.com" into a's memory; NULL on ENOMEM. */
static const char *canon_text(struct res_answer *a, const char *s)
{
    size_t len = strlen(s);
    if (len > 1 && s[len - 1] == '.')
        len--;
    char *d = ans_strdup(a, s, len);
    if (d != NULL)
        for (char *p = d; *p != '\0'; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p - 'A' + 'a');
    return d;
}

struct res_answer *answer_from_ub(enum res_type type, const char *name, int err,
                                  const struct ub_result *r)
{
    if (err != 0 || r == NULL)
        return answer_error(type, name, RES_ERROR, err != 0 ? ub_strerror(err) : "no result");
    struct res_answer *a = answer_new(type, name);
    if (a == NULL)
        return &nomem_answer;
    a->rcode = r->rcode;
    /* Forged data comes with havedata=1 and bogus=1: bogus decides first. */
    if (r->bogus) {
        a->status = RES_BOGUS;
        a->sec = RES_SEC_BOGUS;
        const char *why = r->why_bogus != NULL ? r->why_bogus : "DNSSEC validation failed";
        if ((a->why = ans_strdup(a, why, strlen(why))) == NULL)
            goto nomem;
        return a;
    }
    a->sec = r->secure ? RES_SEC_SECURE : RES_SEC_INSECURE;
    if (r->canonname != NULL && (a->canon = canon_text(a, r->canonname)) == NULL)
        goto nomem;
    a->ttl = r->ttl > 0 ? (uint32_t)r->ttl : 0;
    if (r->rcode == RCODE_NXDOMAIN || r->nxdomain) {
        a->status = RES_NXDOMAIN;
        return a;
    }
    if (r->rcode != 0) {
        char why[64];
        snprintf(why, sizeof(why), "rcode %d%s", r->rcode, r->rcode == 2 ? " (SERVFAIL)" :
                                                           r->rcode == 5 ? " (REFUSED)" : "");
        a->status = RES_SERVFAIL;
        a->ttl = 0;
        if ((a->why = ans_strdup(a, why, strlen(why))) == NULL)
            goto nomem;
        return a;
    }
    size_t count = 0;
    while (r->havedata && r->data != NULL && r->data[count] != NULL)
        count++;
    if (count == 0) {
        a->status = RES_NODATA;
        return a;
    }
    bool null_mx = false;
    int rc = 0;
    switch (type) {
    case RES_A: rc = parse_addrs(a, r, count, 4); break;
    case RES_AAAA: rc = parse_addrs(a, r, count, 16); break;
    case RES_MX: rc = parse_mx(a, r, count, &null_mx); break;
    case RES_PTR: rc = parse_ptr(a, r, count); break;
    case RES_TLSA: rc = parse_tlsa(a, r, count); break;
    case RES_TXT: rc = parse_txt(a, r, count); break;
    }
    if (rc < 0)
        goto nomem;
    if (a->n > 0) {
        a->status = RES_OK;
    } else if (null_mx) {
        a->status = RES_NULLMX; /* RFC 7505 */
    } else {
        a->status = RES_ERROR;
        a->ttl = 0;
        a->why = "malformed records";
    }
    return a;
nomem:
    answer_free(a);
    return &nomem_answer;
}

struct res_answer *answer_mx_shuffled(const struct res_answer *raw)
{
    struct res_answer *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return &nomem_answer;
    *a = *raw;
    a->refs = 1;
    a->mem = NULL;
    a->parent = res_answer_ref(raw);
    struct res_mx *mx = ans_alloc(a, raw->n * sizeof(*mx));
    if (mx == NULL) {
        answer_free(a);
        return &nomem_answer;
    }
    memcpy(mx, raw->mx, raw->n * sizeof(*mx));
    /* RFC 5321 5.1: hosts of equal preference in random order (Fisher-Yates
     * within each run of equal preference; the array is sorted). */
    for (size_t lo = 0, hi; lo < raw->n; lo = hi) {
        for (hi = lo + 1; hi < raw->n && mx[hi].pref == mx[lo].pref; hi++)
            ;
        for (size_t i = hi - 1; i > lo; i--) {
            size_t j = lo + arc4random_uniform((uint32_t)(i - lo + 1));
            struct res_mx t = mx[i];
            mx[i] = mx[j];
            mx[j] = t;
        }
    }
    a->mx = mx;
    return a;
}

struct res_answer *answer_implicit_mx(const struct res_answer *mx, const struct res_answer *a4,
                                      const struct res_answer *a6)
{
    if (a4->status != RES_OK && a6->status != RES_OK) {
        /* No address: a failure of either lookup is temporary and wins
         * over "no data", which would bounce the mail. */
        const struct res_answer *why = NULL;
        const struct res_answer *order[] = {a4, a6};
        for (int i = 0; i < 2 && why == NULL; i++)
            if (order[i]->status == RES_BOGUS)
                why = order[i];
        for (int i = 0; i < 2 && why == NULL; i++)
            if (res_status_temporary(order[i]->status))
                why = order[i];
        if (why != NULL) {
            struct res_answer *e = answer_error(RES_MX, mx->name, why->status, why->why);
            return e;
        }
        struct res_answer *e = answer_error(RES_MX, mx->name, RES_NODATA, NULL);
        if (e != &nomem_answer) {
            e->sec = mx->sec;
            e->ttl = mx->ttl;
            e->rcode = mx->rcode;
        }
        return e;
    }
    struct res_answer *a = answer_new(RES_MX, mx->name);
    if (a == NULL)
        return &nomem_answer;
    struct res_mx *host = ans_alloc(a, sizeof(*host));
    if (host == NULL) {
        answer_free(a);
        return &nomem_answer;
    }
    host->host = a->name;
    host->pref = 0;
    a->mx = host;
    a->n = 1;
    a->implicit_mx = true;
    a->status = RES_OK;
    a->sec = mx->sec;
    a->rcode = mx->rcode;
    a->ttl = mx->ttl;
    if (a4->status == RES_OK && a4->ttl < a->ttl)
        a->ttl = a4->ttl;
    if (a6->status == RES_OK && a6->ttl < a->ttl)
        a->ttl = a6->ttl;
    return a;
}
