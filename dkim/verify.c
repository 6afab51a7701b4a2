/* SPDX-License-Identifier: MIT */
/*
 * verify.c - the incremental DKIM verifier (see verify.h).
 *
 * Why not libopendkim: it takes the public key record as text at the end
 * of every message and decodes the RSA key anew (d2i_PUBKEY_bio; OpenSSL
 * 3.0 builds a decoder chain per call), which cost three quarters of the
 * inbound checks' CPU, and it has no way to take a key parsed once.  So
 * the verification is done here, the way dkim/sign.c signs: ortoo's own
 * canonicalization (dkim/canon.c), tag parsing (dkim/tags.c) and keys
 * parsed once per reactor (dkim/pubkey.c).  libopendkim stays as the
 * independent verifier in the tests, which run every case through both.
 *
 * Flow of bytes: stored wire form -> dkim_unstuff_feed -> on_bytes: in the
 * header block, appended to hdr until its empty line; then header_end()
 * splits the block (dkim/header.c), notes the From and Authentication-
 * Results facts, parses the first max_sigs DKIM-Signature fields and
 * computes each one's header hash (RFC 6376 3.7: the fields h= names,
 * picked from the bottom up, then the signature field with b= emptied),
 * and frees the block.  Body bytes go to one canonicalizer + SHA-256 per
 * distinct (c= body algorithm, l=), shared by the signatures that agree.
 * dkim_verify_finish() compares the body hashes and checks the signatures
 * with the keys the caller set.  A message without signatures skips the
 * body.
 *
 * Results (RFC 8601 2.7.1), the same mapping as the libopendkim verifier
 * this replaced: an unusable signature field (syntax, a missing or unknown
 * tag, From not signed, i= outside d=, expired, from the future) is
 * neutral; a body or signature mismatch is fail; no key or an unusable key
 * record (revoked, undecodable, wrong type, h= or s= that exclude us) is
 * permerror; a key that could not be fetched is temperror; a key we refuse
 * (RSA below 1024 bits, RFC 8301 3.2), an i= below d= against t=s, and
 * rsa-sha1 (RFC 8301 3.1: verifiers must not consider it valid) are
 * policy.
 */
#include "dkim/verify.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/evp.h>

#include "dkim/canon.h"
#include "dkim/keys.h"
#include "dkim/pubkey.h"
#include "dkim/sign.h"
#include "dkim/tags.h"

#define CLOCK_DRIFT 300         /* seconds a t= may lie ahead of our clock */

enum vstate {
    VS_HEADER = 0,          /* collecting the header block */
    VS_BODY,                /* signatures found: hashing the body */
    VS_SKIP,                /* nothing more to do with the bytes */
};

enum hdr_pos { HP_BOL = 0, HP_BOL_CR, HP_TEXT };

struct dkim_verify_lib {
    struct dkim_pubkey_cache *cache;
};

/* A key the caller looks up.  Invariant: txt is set iff st == FOUND. */
struct vkey {
    char name[DKIM_DOMAIN_MAX + 1];
    enum dkim_key_status st;
    char *txt;              /* owned */
    size_t len;
    uint32_t ttl;
};

/* One body hash, shared by the signatures with its algorithm and l=.
 * Invariant: hashed <= l when has_l; hashed <= total. */
struct vbody {
    enum dkim_canon canon;
    bool has_l;
    uint64_t l;
    EVP_MD_CTX *md;         /* owned */
    struct dkim_body_canon bc;
    uint64_t total;         /* canonical bytes produced */
    uint64_t hashed;        /* of which hashed (l= stops it) */
    unsigned char digest[32];
};

/*
 * One signature field.  Invariant: when decided, status and why are final
 * and key is not used; otherwise body and key index bodies[] and keys[],
 * and hhash holds the header hash (has_body says whether body is set).  The slices in sig (h,
 * b_raw, b_val) point into the header block and are stale once it is
 * freed: only the decoded parts are used after header_end().
 */
struct vsig {
    struct dkim_sig sig;
    bool decided;
    enum dkim_vstatus status;
    const char *why;
    char b64[16];           /* the first base64 characters of b= */
    unsigned char hhash[32];
    unsigned body, key;
    bool has_body;          /* body is set (the signature was hashed) */
    bool testing;           /* its key has t=y */
};

/*
 * One message.  Invariants: hdr is NULL outside VS_HEADER; sigs has nsigs
 * entries (nsigs <= max_sigs); nbodies, nkeys <= nsigs; sigs, bodies and
 * keys are allocated together at the end of the header block (all NULL
 * before, or when there is no signature).
 */
struct dkim_verifier {
    struct dkim_verify_lib *lib;
    unsigned max_sigs;
    char authserv_id[256];
    enum vstate state;
    bool header_done;
    bool finished;
    struct dkim_unstuff unstuff;
    const char *error;          /* static: why verification could not run */

    char *hdr;                  /* header block so far (owned) */
    size_t hdr_len, hdr_cap;
    enum hdr_pos hpos;

    enum dkim_from_status from;
    char from_domain[DKIM_DOMAIN_MAX + 1];
    unsigned foreign_ar;

    struct vsig *sigs;          /* owned; nsigs of them */
    unsigned nsigs, ignored;
    struct vbody *bodies;       /* owned; room for nsigs */
    unsigned nbodies;
    struct vkey *keys;          /* owned; room for nsigs */
    unsigned nkeys;
};

const char *dkim_vstatus_name(enum dkim_vstatus s)
{
    switch (s) {
    case DKIM_V_PASS: return "pass";
    case DKIM_V_FAIL: return "fail";
    case DKIM_V_NEUTRAL: return "neutral";
    case DKIM_V_POLICY: return "policy";
    case DKIM_V_TEMPERROR: return "temperror";
    case DKIM_V_PERMERROR: return "permerror";
    }
    return "?";
}

/* ---- the per-reactor part ---- */

struct dkim_verify_lib *dkim_verify_lib_new(char *err, size_t errlen)
{
    struct dkim_verify_lib *l = calloc(1, sizeof(*l));
    if (l == NULL || (l->cache = dkim_pubkey_cache_new(0)) == NULL) {
        snprintf(err, errlen, "dkim: out of memory");
        free(l);
        return NULL;
    }
    return l;
}

void dkim_verify_lib_free(struct dkim_verify_lib *l)
{
    if (l == NULL)
        return;
    dkim_pubkey_cache_free(l->cache);
    free(l);
}

void dkim_verify_lib_stats(const struct dkim_verify_lib *l, struct dkim_pubkey_stats *out)
{
    dkim_pubkey_cache_stats(l->cache, out);
}

/* ---- the verifier ---- */

struct dkim_verifier *dkim_verify_open(struct dkim_verify_lib *lib, unsigned max_sigs,
                                       const char *authserv_id)
{
    struct dkim_verifier *v = calloc(1, sizeof(*v));
    if (v == NULL)
        return NULL;
    v->lib = lib;
    v->max_sigs = max_sigs == 0 ? 1 : max_sigs > DKIM_VERIFY_SIGS_MAX ? DKIM_VERIFY_SIGS_MAX
                                                                       : max_sigs;
    snprintf(v->authserv_id, sizeof(v->authserv_id), "%s", authserv_id ? authserv_id : "");
    v->from = DKIM_FROM_NONE;
    dkim_unstuff_init(&v->unstuff);
    return v;
}

void dkim_verify_free(struct dkim_verifier *v)
{
    if (v == NULL)
        return;
    for (unsigned i = 0; i < v->nbodies; i++)
        EVP_MD_CTX_free(v->bodies[i].md);
    for (unsigned i = 0; i < v->nkeys; i++)
        free(v->keys[i].txt);
    free(v->bodies);
    free(v->keys);
    free(v->sigs);
    free(v->hdr);
    free(v);
}

static void hdr_release(struct dkim_verifier *v)
{
    free(v->hdr);
    v->hdr = NULL;
    v->hdr_len = v->hdr_cap = 0;
}

static void verify_skip(struct dkim_verifier *v, const char *why)
{
    v->state = VS_SKIP;
    if (why != NULL && v->error == NULL)
        v->error = why;
    hdr_release(v);
}

/* The authserv-id of an Authentication-Results field (RFC 8601 2.2): the
 * first token of the value, after CFWS. */
static bool ar_is_ours(const struct dkim_verifier *v, const struct dkim_field *f)
{
    const char *p = f->p + f->name_len + 1, *end = f->p + f->len;
    int depth = 0;
    while (p < end) {
        if (depth > 0) {
            if (*p == '(')
                depth++;
            else if (*p == ')')
                depth--;
            p++;
        } else if (*p == '(') {
            depth = 1;
            p++;
        } else if (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') {
            p++;
        } else {
            break;
        }
    }
    const char *id = p;
    while (p < end && *p != ';' && *p != ' ' && *p != '\t' && *p != '\r' && *p != '\n' &&
           *p != '(')
        p++;
    size_t n = (size_t)(p - id), ours = strlen(v->authserv_id);
    return n > 0 && n == ours && strncasecmp(id, v->authserv_id, n) == 0;
}

/* The From facts (RFC 7489 6.6.1) and foreign Authentication-Results;
 * returns the number of DKIM-Signature fields. */
static unsigned header_facts(struct dkim_verifier *v, const struct dkim_field *f, long n)
{
    char doms[DKIM_VERIFY_FROM_MAX][DKIM_DOMAIN_MAX + 1];
    unsigned nfrom = 0, nsig = 0;
    int ndom = 0;

    for (long i = 0; i < n; i++) {
        if (dkim_field_is(&f[i], "from")) {
            if (nfrom++ == 0)
                ndom = dkim_from_domains(&f[i], doms, DKIM_VERIFY_FROM_MAX);
        } else if (dkim_field_is(&f[i], "authentication-results")) {
            if (ar_is_ours(v, &f[i]))
                v->foreign_ar++;
        } else if (dkim_field_is(&f[i], "dkim-signature")) {
            nsig++;
        }
    }
    if (nfrom == 0) {
        v->from = DKIM_FROM_NONE;
    } else if (nfrom > 1 || ndom > 1) {
        v->from = DKIM_FROM_MANY;
    } else if (ndom == 1) {
        v->from = DKIM_FROM_ONE;
        memcpy(v->from_domain, doms[0], sizeof(v->from_domain));
    } else {
        v->from = DKIM_FROM_BAD;
    }
    return nsig;
}

static void decide(struct vsig *s, enum dkim_vstatus st, const char *why)
{
    s->decided = true;
    s->status = st;
    s->why = why;
}

static bool name_eq(const char *a, size_t alen, const struct dkim_field *f)
{
    return alen == f->name_len && strncasecmp(a, f->p, alen) == 0;
}

/*
 * The header hash of signature s, whose field is f[self] (RFC 6376 3.7,
 * 5.4.2): each name of h= signs the next instance of that field from the
 * bottom up; a name with no instance left signs nothing; the signature's
 * own field is never picked that way.  Then the signature field, its b=
 * value deleted, canonicalized without its final CRLF.  buf holds at least
 * the longest field + 2 bytes, twice.
 */
static int header_hash(struct vsig *s, const struct dkim_field *f, long n, long self,
                       EVP_MD_CTX *md, char *buf, char *buf2)
{
    const struct dkim_sig *sig = &s->sig;
    const char *items[DKIM_SIG_HFIELDS_MAX];
    size_t ilen[DKIM_SIG_HFIELDS_MAX];
    long pos[DKIM_SIG_HFIELDS_MAX];   /* field picked by item k, or -1 */
    const char *p = sig->h, *item;
    size_t len;
    unsigned k = 0;

    if (EVP_DigestInit_ex(md, dkim_sha256(), NULL) != 1)
        return -EIO;
    while (dkim_list_next(&p, sig->h + sig->h_len, &item, &len) && k < DKIM_SIG_HFIELDS_MAX) {
        /* Start above the instance the previous same name took. */
        long start = n - 1;
        for (unsigned j = k; j-- > 0;)
            if (ilen[j] == len && strncasecmp(items[j], item, len) == 0) {
                start = pos[j] < 0 ? -1 : pos[j] - 1;
                break;
            }
        long at = -1;
        for (long i = start; i >= 0; i--)
            if (i != self && name_eq(item, len, &f[i])) {
                at = i;
                break;
            }
        items[k] = item;
        ilen[k] = len;
        pos[k++] = at;
        if (at < 0)
            continue;
        size_t c = dkim_canon_header_as(sig->hcanon, f[at].p, f[at].len, true, buf);
        if (EVP_DigestUpdate(md, buf, c) != 1)
            return -EIO;
    }
    /* The signature field with b='s value deleted (3.5 b=, 3.7). */
    size_t before = (size_t)(sig->b_raw - f[self].p);
    size_t after = before + sig->b_raw_len;
    memcpy(buf2, f[self].p, before);
    memcpy(buf2 + before, f[self].p + after, f[self].len - after);
    size_t c = dkim_canon_header_as(sig->hcanon, buf2, f[self].len - sig->b_raw_len, false, buf);
    unsigned hl = 0;
    if (EVP_DigestUpdate(md, buf, c) != 1 || EVP_DigestFinal_ex(md, s->hhash, &hl) != 1)
        return -EIO;
    return 0;
}

static void body_sink(void *arg, const char *data, size_t len)
{
    struct vbody *b = arg;
    b->total += len;
    if (b->has_l) {
        if (b->hashed >= b->l)
            return;
        if (len > b->l - b->hashed)
            len = (size_t)(b->l - b->hashed);
    }
    EVP_DigestUpdate(b->md, data, len);
    b->hashed += len;
}

/* The body hash for s: an existing one with the same algorithm and l=, or
 * a new one.  Returns its index, or -1 (ENOMEM). */
static int body_for(struct dkim_verifier *v, const struct dkim_sig *sig)
{
    for (unsigned i = 0; i < v->nbodies; i++) {
        struct vbody *b = &v->bodies[i];
        if (b->canon == sig->bcanon && b->has_l == sig->has_l && (!b->has_l || b->l == sig->l))
            return (int)i;
    }
    struct vbody *b = &v->bodies[v->nbodies];
    memset(b, 0, sizeof(*b));
    b->canon = sig->bcanon;
    b->has_l = sig->has_l;
    b->l = sig->l;
    if ((b->md = EVP_MD_CTX_new()) == NULL || EVP_DigestInit_ex(b->md, dkim_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(b->md);
        return -1;
    }
    dkim_body_canon_init_as(&b->bc, b->canon, body_sink, b);
    return (int)v->nbodies++;
}

/* The key for s: "selector._domainkey.domain" in lower case, shared by the
 * signatures that name it.  Returns its index, or -1 (name too long). */
static int key_for(struct dkim_verifier *v, const struct dkim_sig *sig)
{
    char name[DKIM_DOMAIN_MAX + 2];
    int n = snprintf(name, sizeof(name), "%s._domainkey.%s", sig->selector, sig->domain);
    if (n < 0 || (size_t)n > DKIM_DOMAIN_MAX)
        return -1;
    for (char *p = name; *p != '\0'; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    for (unsigned i = 0; i < v->nkeys; i++)
        if (strcmp(v->keys[i].name, name) == 0)
            return (int)i;
    memcpy(v->keys[v->nkeys].name, name, (size_t)n + 1);
    return (int)v->nkeys++;
}

/* The first base64 characters of b= (FWS skipped), for header.b. */
static void b64_prefix(struct vsig *s)
{
    size_t o = 0;
    for (size_t i = 0; i < s->sig.b_val_len && o < sizeof(s->b64) - 1; i++) {
        char c = s->sig.b_val[i];
        if (c != ' ' && c != '\t' && c != '\r' && c != '\n')
            s->b64[o++] = c;
    }
    s->b64[o] = '\0';
}

/* Parse signature field f[self] into s, and hash its header data. */
static int sig_setup(struct dkim_verifier *v, struct vsig *s, const struct dkim_field *f, long n,
                     long self, EVP_MD_CTX *md, char *buf, char *buf2)
{
    const char *why;
    const struct dkim_field *sf = &f[self];
    int rc = dkim_sig_parse(sf->p + sf->name_len + 1, sf->len - sf->name_len - 1, &s->sig, &why);

    b64_prefix(s);
    if (rc < 0) {
        decide(s, DKIM_V_NEUTRAL, why);
        return 0;
    }
    if (s->sig.algo == DKIM_SIG_RSA_SHA1) {
        decide(s, DKIM_V_POLICY, "rsa-sha1 is not accepted (RFC 8301)");
        return 0;
    }
    if ((rc = header_hash(s, f, n, self, md, buf, buf2)) < 0)
        return rc;
    int k = key_for(v, &s->sig);
    if (k < 0) {
        decide(s, DKIM_V_PERMERROR, "no key (name too long)");
        return 0;
    }
    int b = body_for(v, &s->sig);
    if (b < 0)
        return -ENOMEM;
    s->key = (unsigned)k;
    s->body = (unsigned)b;
    s->has_body = true;
    return 0;
}

/* The header block block[0..len) (without its empty line) is complete. */
static void header_end(struct dkim_verifier *v, const char *block, size_t len)
{
    struct dkim_field *f = NULL;
    long n = dkim_fields_split(block, len, &f);
    char *buf = NULL;
    EVP_MD_CTX *md = NULL;
    bool need_body = false;

    v->header_done = true;
    if (n < 0) {
        v->from = DKIM_FROM_BAD;
        verify_skip(v, n == -ENOMEM ? "out of memory" : "malformed header block");
        return;
    }
    unsigned nsig = header_facts(v, f, n);
    if (nsig == 0) {
        free(f);
        verify_skip(v, NULL);
        return;
    }
    v->nsigs = nsig < v->max_sigs ? nsig : v->max_sigs;
    v->ignored = nsig - v->nsigs;
    size_t longest = 0;
    for (long i = 0; i < n; i++)
        longest = f[i].len > longest ? f[i].len : longest;
    /* Sized here: most messages have one signature or none. */
    v->sigs = calloc(v->nsigs, sizeof(*v->sigs));
    v->bodies = calloc(v->nsigs, sizeof(*v->bodies));
    v->keys = calloc(v->nsigs, sizeof(*v->keys));
    buf = malloc(2 * (longest + 2));
    md = EVP_MD_CTX_new();
    if (v->sigs == NULL || v->bodies == NULL || v->keys == NULL || buf == NULL || md == NULL)
        goto nomem;
    unsigned j = 0;
    for (long i = 0; i < n && j < v->nsigs; i++) {
        if (!dkim_field_is(&f[i], "dkim-signature"))
            continue;
        struct vsig *s = &v->sigs[j++];
        if (sig_setup(v, s, f, n, i, md, buf, buf + longest + 2) < 0)
            goto nomem;
        need_body = need_body || !s->decided;
    }
    free(buf);
    EVP_MD_CTX_free(md);
    free(f);
    hdr_release(v);
    v->state = need_body ? VS_BODY : VS_SKIP;
    return;
nomem:
    free(buf);
    EVP_MD_CTX_free(md);
    free(f);
    for (unsigned i = 0; i < v->nbodies; i++)
        EVP_MD_CTX_free(v->bodies[i].md);
    free(v->bodies);
    free(v->keys);
    free(v->sigs);
    v->sigs = NULL;
    v->bodies = NULL;
    v->keys = NULL;
    v->nsigs = v->nbodies = v->nkeys = 0;
    verify_skip(v, "out of memory");
}

static int hdr_append(struct dkim_verifier *v, const char *data, size_t len)
{
    if (v->hdr_len + len > DKIM_HEADER_MAX)
        return -E2BIG;
    if (v->hdr_len + len > v->hdr_cap) {
        size_t cap = v->hdr_cap ? v->hdr_cap : 2048;
        while (cap < v->hdr_len + len)
            cap *= 2;
        char *p = realloc(v->hdr, cap);
        if (p == NULL)
            return -ENOMEM;
        v->hdr = p;
        v->hdr_cap = cap;
    }
    memcpy(v->hdr + v->hdr_len, data, len);
    v->hdr_len += len;
    return 0;
}

/* Unstuffed message bytes (the callback of dkim_unstuff_feed). */
static void on_bytes(void *arg, const char *data, size_t len)
{
    struct dkim_verifier *v = arg;

    if (v->state == VS_BODY) {
        for (unsigned i = 0; i < v->nbodies; i++)
            dkim_body_canon_feed(&v->bodies[i].bc, data, len);
        return;
    }
    if (v->state != VS_HEADER)
        return;
    /* Find the empty line that ends the header block (RFC 5322 2.1). */
    size_t i = 0;
    bool end = false;
    while (i < len) {
        if (v->hpos == HP_TEXT) {
            const char *lf = memchr(data + i, '\n', len - i);
            if (lf == NULL) {
                i = len;
                break;
            }
            i = (size_t)(lf - data) + 1;
            v->hpos = HP_BOL;
            continue;
        }
        char c = data[i++];
        if (v->hpos == HP_BOL_CR && c == '\n') {
            end = true;
            break;
        }
        v->hpos = (v->hpos == HP_BOL && c == '\r') ? HP_BOL_CR : HP_TEXT;
        if (c == '\n')
            v->hpos = HP_BOL;
    }
    int rc = hdr_append(v, data, i);
    if (rc < 0) {
        v->header_done = true;
        v->from = DKIM_FROM_BAD;
        verify_skip(v, rc == -E2BIG ? "header block too large" : "out of memory");
        return;
    }
    if (!end)
        return;
    /* hdr ends with the empty line's CRLF: the fields are before it. */
    header_end(v, v->hdr, v->hdr_len - 2);
    if (i < len)
        on_bytes(v, data + i, len - i);
}

void dkim_verify_feed(struct dkim_verifier *v, const char *data, size_t len)
{
    if (v->state == VS_SKIP || v->finished)
        return;
    dkim_unstuff_feed(&v->unstuff, data, len, on_bytes, v);
}

bool dkim_verify_header_done(const struct dkim_verifier *v) { return v->header_done; }

unsigned dkim_verify_nkeys(const struct dkim_verifier *v) { return v->nkeys; }

const char *dkim_verify_key_name(const struct dkim_verifier *v, unsigned i)
{
    return i < v->nkeys ? v->keys[i].name : NULL;
}

void dkim_verify_set_key(struct dkim_verifier *v, unsigned i, enum dkim_key_status st,
                         const char *txt, size_t len, uint32_t ttl)
{
    if (i >= v->nkeys)
        return;
    struct vkey *k = &v->keys[i];
    free(k->txt);
    k->txt = NULL;
    k->st = st;
    if (st != DKIM_KEY_FOUND)
        return;
    if ((k->txt = malloc(len + 1)) == NULL) {
        k->st = DKIM_KEY_TEMPFAIL; /* out of memory: try again later */
        return;
    }
    memcpy(k->txt, txt, len);
    k->txt[len] = '\0';
    k->len = len;
    k->ttl = ttl;
}

enum dkim_from_status dkim_verify_from(const struct dkim_verifier *v, const char **domain)
{
    *domain = v->from == DKIM_FROM_ONE ? v->from_domain : "";
    return v->from;
}

unsigned dkim_verify_foreign_ar(const struct dkim_verifier *v) { return v->foreign_ar; }

void dkim_verify_eof(struct dkim_verifier *v)
{
    if (v->state != VS_HEADER || v->header_done)
        return;
    /* No empty line: the message is all header. */
    header_end(v, v->hdr != NULL ? v->hdr : "", v->hdr_len);
}

static uint64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The checks of one signature, its header and body hashes done. */
static void sig_check(struct dkim_verifier *v, struct vsig *s, int64_t now, uint64_t now_ms)
{
    const struct dkim_sig *sig = &s->sig;

    /* RFC 6376 3.5 x=, t=; 6.1.1. */
    if (sig->has_x && now > sig->x) {
        decide(s, DKIM_V_NEUTRAL, "signature expired (x=)");
        return;
    }
    if (sig->has_t && sig->t > now + CLOCK_DRIFT) {
        decide(s, DKIM_V_NEUTRAL, "signature from the future (t=)");
        return;
    }
    /* 6.1.2: the key. */
    struct vkey *vk = &v->keys[s->key];
    if (vk->st == DKIM_KEY_PENDING || vk->st == DKIM_KEY_TEMPFAIL) {
        decide(s, DKIM_V_TEMPERROR, "key lookup failed");
        return;
    }
    if (vk->st == DKIM_KEY_NONE) {
        decide(s, DKIM_V_PERMERROR, "no key");
        return;
    }
    const struct dkim_pubkey *k =
        dkim_pubkey_get(v->lib->cache, vk->name, vk->txt, vk->len, vk->ttl, now_ms);
    if (k == NULL) {
        decide(s, DKIM_V_TEMPERROR, "out of memory");
        return;
    }
    s->testing = k->rec.testing;
    if (k->status != DKIM_PUBKEY_OK) {
        decide(s, k->status == DKIM_PUBKEY_POLICY ? DKIM_V_POLICY : DKIM_V_PERMERROR, k->why);
        return;
    }
    enum dkim_key_type want =
        sig->algo == DKIM_SIG_ED25519_SHA256 ? DKIM_KEYTYPE_ED25519 : DKIM_KEYTYPE_RSA;
    if (k->rec.type != want) {
        decide(s, DKIM_V_PERMERROR, "key type does not match a=");
        return;
    }
    if (!k->rec.sha256_ok) {
        decide(s, DKIM_V_PERMERROR, "key does not allow sha256 (h=)");
        return;
    }
    if (!k->rec.email_ok) {
        decide(s, DKIM_V_PERMERROR, "key is not for email (s=)");
        return;
    }
    if (k->rec.strict && strcmp(sig->auid_domain, sig->domain) != 0) {
        decide(s, DKIM_V_POLICY, "i= is below d= but the key has t=s");
        return;
    }
    /* 6.1.3: the body hash, then the signature. */
    const struct vbody *b = &v->bodies[s->body];
    if (sig->has_l && b->total < sig->l) {
        decide(s, DKIM_V_NEUTRAL, "l= is longer than the body");
        return;
    }
    if (sig->bh_len != sizeof(b->digest) || memcmp(sig->bh, b->digest, sizeof(b->digest)) != 0) {
        decide(s, DKIM_V_FAIL, "body hash did not verify");
        return;
    }
    if (!dkim_pubkey_verify(k, s->hhash, sig->b, sig->b_len)) {
        decide(s, DKIM_V_FAIL, "signature did not verify");
        return;
    }
    bool partial = sig->has_l && b->total > sig->l;
    decide(s, DKIM_V_PASS,
           k->rec.testing && partial ? "key in testing mode (t=y); l= leaves part of the body unsigned"
           : k->rec.testing          ? "key in testing mode (t=y)"
           : partial                 ? "l= leaves part of the body unsigned"
                                     : NULL);
}

static const char *algo_name(const struct dkim_sig *sig)
{
    if (!sig->algo_known)
        return NULL;
    switch (sig->algo) {
    case DKIM_SIG_RSA_SHA256: return "rsa-sha256";
    case DKIM_SIG_ED25519_SHA256: return "ed25519-sha256";
    case DKIM_SIG_RSA_SHA1: return "rsa-sha1";
    }
    return NULL;
}

int dkim_verify_finish(struct dkim_verifier *v, struct dkim_verify_result *res)
{
    /* Not the whole of sigs[] (16 x 560 bytes): each one used is filled. */
    memset(res, 0, offsetof(struct dkim_verify_result, sigs));
    if (v->finished)
        return 0;
    dkim_verify_eof(v);
    v->finished = true;
    res->error = v->error;
    res->ignored = v->ignored;
    for (unsigned i = 0; i < v->nbodies; i++) {
        struct vbody *b = &v->bodies[i];
        unsigned hl = 0;
        dkim_body_canon_end(&b->bc);
        if (EVP_DigestFinal_ex(b->md, b->digest, &hl) != 1)
            memset(b->digest, 0, sizeof(b->digest)); /* cannot match a real bh= */
    }
    int64_t now = (int64_t)time(NULL);
    uint64_t now_ms = monotonic_ms();
    for (unsigned i = 0; i < v->nsigs; i++) {
        struct vsig *s = &v->sigs[i];
        if (!s->decided)
            sig_check(v, s, now, now_ms);
        struct dkim_verify_sig *o = &res->sigs[res->nsigs++];
        memset(o, 0, sizeof(*o));
        o->status = s->status;
        o->why = s->why;
        snprintf(o->domain, sizeof(o->domain), "%s", s->sig.domain);
        snprintf(o->selector, sizeof(o->selector), "%s", s->sig.selector);
        o->algo = algo_name(&s->sig);
        o->testing = s->testing;
        o->has_l = s->sig.has_l;
        o->l = s->sig.l;
        o->body_len = s->has_body ? v->bodies[s->body].total : 0;
        /* header.b (RFC 6008 2): at least 8 characters, more while
         * another signature starts the same. */
        size_t n = strlen(s->b64) < 8 ? strlen(s->b64) : 8;
        for (unsigned j = 0; j < v->nsigs; j++)
            while (j != i && n < strlen(s->b64) && strncmp(s->b64, v->sigs[j].b64, n) == 0)
                n++;
        snprintf(o->b, sizeof(o->b), "%.*s", (int)n, s->b64);
    }
    return 0;
}
