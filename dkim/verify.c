/* SPDX-License-Identifier: MIT */
/*
 * verify.c - incoming DKIM signatures verified with libopendkim, the keys
 * supplied by the caller (see verify.h).
 *
 * libopendkim is set up so that it never queries DNS: the library handle
 * has DKIM_LIBFLAGS_DELAYSIGPROC (without it, dkim_eoh() already fetches
 * the keys, before the caller could have looked them up) and a key lookup
 * callback (dkim_set_key_lookup) that answers from the TXT records the
 * caller set; a prescreen callback (dkim_set_prescreen) sees the
 * signatures at the end of the header block, keeps the first max_sigs and
 * names their keys.  So dkim_eom() at the final dot is pure CPU.
 *
 * Flow of bytes: stored wire form -> dkim_unstuff_feed -> on_bytes: in
 * the header block, appended to hdr until its empty line; then the block
 * is split (dkim/header.c), each field goes to dkim_header() and the From
 * and Authentication-Results facts are noted; after dkim_eoh(), body bytes
 * go straight to dkim_body().  A message without signatures skips the body.
 */
#include "dkim/verify.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <opendkim/dkim.h>

#include "dkim/canon.h"
#include "dkim/sign.h"
#include "io/text.h"

enum vstate {
    VS_HEADER = 0,          /* collecting the header block */
    VS_BODY,                /* signatures found: body to libopendkim */
    VS_SKIP,                /* nothing more to do with the bytes */
};

enum hdr_pos { HP_BOL = 0, HP_BOL_CR, HP_TEXT };

struct dkim_verify_lib {
    DKIM_LIB *lib;
};

/* A key the caller looks up.  Invariant: txt is set iff st == FOUND. */
struct vkey {
    char name[DKIM_DOMAIN_MAX + 1];
    enum dkim_key_status st;
    char *txt;              /* owned */
};

/*
 * One message.  Invariants: dkim is non-NULL from the end of the header
 * block while signatures are being verified; hdr.p is NULL outside
 * VS_HEADER; nkeys <= max_sigs.
 */
struct dkim_verifier {
    struct dkim_verify_lib *lib;
    unsigned max_sigs;
    char authserv_id[256];
    enum vstate state;
    bool header_done;
    bool finished;
    struct dkim_unstuff unstuff;
    DKIM *dkim;                 /* libopendkim's handle, or NULL */
    const char *error;          /* static: why verification could not run */
    bool nomem;

    struct text_buf hdr;        /* header block so far */
    enum hdr_pos hpos;

    enum dkim_from_status from;
    char from_domain[DKIM_DOMAIN_MAX + 1];
    unsigned foreign_ar;

    struct vkey keys[DKIM_VERIFY_SIGS_MAX];
    unsigned nkeys;
    unsigned nsigs_seen;        /* signatures libopendkim found */
};

/* libopendkim's library setup touches OpenSSL's and its own globals. */
static pthread_mutex_t lib_mu = PTHREAD_MUTEX_INITIALIZER;

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

/* ---- libopendkim callbacks ---- */

static void key_name(const char *selector, const char *domain, char *out, size_t cap)
{
    snprintf(out, cap, "%s._domainkey.%s", selector, domain);
    for (char *p = out; *p != '\0'; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
}

static struct vkey *key_find(struct dkim_verifier *v, const char *name)
{
    for (unsigned i = 0; i < v->nkeys; i++)
        if (strcmp(v->keys[i].name, name) == 0)
            return &v->keys[i];
    return NULL;
}

/* End of the header block: keep the first max_sigs signatures. */
static DKIM_CBSTAT on_prescreen(DKIM *dkim, DKIM_SIGINFO **sigs, int nsigs)
{
    struct dkim_verifier *v = dkim_get_user_context(dkim);
    v->nsigs_seen = (unsigned)nsigs;
    for (int i = 0; i < nsigs; i++) {
        if ((unsigned)i >= v->max_sigs) {
            dkim_sig_ignore(sigs[i]);
            continue;
        }
        const char *d = (const char *)dkim_sig_getdomain(sigs[i]);
        const char *s = (const char *)dkim_sig_getselector(sigs[i]);
        if (d == NULL || s == NULL)
            continue; /* a broken signature: libopendkim reports it */
        char name[DKIM_DOMAIN_MAX + 1];
        key_name(s, d, name, sizeof(name));
        if (key_find(v, name) == NULL && v->nkeys < v->max_sigs)
            snprintf(v->keys[v->nkeys++].name, sizeof(name), "%s", name);
    }
    return DKIM_CBSTAT_CONTINUE;
}

/* dkim_eom() wants a key: answer from what the caller set. */
static DKIM_CBSTAT on_key_lookup(DKIM *dkim, DKIM_SIGINFO *sig, u_char *buf, size_t buflen)
{
    struct dkim_verifier *v = dkim_get_user_context(dkim);
    char name[DKIM_DOMAIN_MAX + 1];
    const char *d = (const char *)dkim_sig_getdomain(sig);
    const char *s = (const char *)dkim_sig_getselector(sig);
    if (d == NULL || s == NULL)
        return DKIM_CBSTAT_NOTFOUND;
    key_name(s, d, name, sizeof(name));
    struct vkey *k = key_find(v, name);
    if (k == NULL || k->st == DKIM_KEY_NONE)
        return DKIM_CBSTAT_NOTFOUND;
    if (k->st != DKIM_KEY_FOUND)
        return DKIM_CBSTAT_TRYAGAIN;
    size_t len = strlen(k->txt);
    if (len >= buflen)
        return DKIM_CBSTAT_ERROR;
    memcpy(buf, k->txt, len + 1);
    return DKIM_CBSTAT_CONTINUE;
}

struct dkim_verify_lib *dkim_verify_lib_new(char *err, size_t errlen)
{
    struct dkim_verify_lib *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        snprintf(err, errlen, "dkim: out of memory");
        return NULL;
    }
    pthread_mutex_lock(&lib_mu);
    l->lib = dkim_init(NULL, NULL);
    pthread_mutex_unlock(&lib_mu);
    if (l->lib == NULL) {
        snprintf(err, errlen, "dkim: libopendkim's dkim_init failed");
        free(l);
        return NULL;
    }
    uint32_t flags = DKIM_LIBFLAGS_DELAYSIGPROC;
    if (dkim_options(l->lib, DKIM_OP_SETOPT, DKIM_OPTS_FLAGS, &flags, sizeof(flags)) != DKIM_STAT_OK ||
        dkim_set_prescreen(l->lib, on_prescreen) != DKIM_STAT_OK ||
        dkim_set_key_lookup(l->lib, on_key_lookup) != DKIM_STAT_OK) {
        snprintf(err, errlen, "dkim: cannot set up libopendkim for verification");
        dkim_verify_lib_free(l);
        return NULL;
    }
    return l;
}

void dkim_verify_lib_free(struct dkim_verify_lib *l)
{
    if (l == NULL)
        return;
    pthread_mutex_lock(&lib_mu);
    dkim_close(l->lib);
    pthread_mutex_unlock(&lib_mu);
    free(l);
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
    if (v->dkim != NULL)
        dkim_free(v->dkim);
    for (unsigned i = 0; i < v->nkeys; i++)
        free(v->keys[i].txt);
    text_free(&v->hdr);
    free(v);
}

static void verify_skip(struct dkim_verifier *v, const char *why)
{
    v->state = VS_SKIP;
    if (why != NULL && v->error == NULL)
        v->error = why;
    text_free(&v->hdr);
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

/* The header block block[0..len) (without its empty line) is complete. */
static void header_end(struct dkim_verifier *v, const char *block, size_t len)
{
    struct dkim_field *f = NULL;
    long n = dkim_fields_split(block, len, &f);

    v->header_done = true;
    if (n < 0) {
        v->from = DKIM_FROM_BAD;
        verify_skip(v, n == -ENOMEM ? "out of memory" : "malformed header block");
        return;
    }
    /* The From facts (RFC 7489 6.6.1) and foreign Authentication-Results. */
    char doms[DKIM_VERIFY_FROM_MAX][DKIM_DOMAIN_MAX + 1];
    unsigned nfrom = 0;
    int ndom = 0;
    bool has_sig = false;
    for (long i = 0; i < n; i++) {
        if (dkim_field_is(&f[i], "from")) {
            if (nfrom++ == 0)
                ndom = dkim_from_domains(&f[i], doms, DKIM_VERIFY_FROM_MAX);
        } else if (dkim_field_is(&f[i], "authentication-results")) {
            if (ar_is_ours(v, &f[i]))
                v->foreign_ar++;
        } else if (dkim_field_is(&f[i], "dkim-signature")) {
            has_sig = true;
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
    if (!has_sig) {
        free(f);
        verify_skip(v, NULL);
        return;
    }
    DKIM_STAT st;
    v->dkim = dkim_verify(v->lib->lib, (const u_char *)"ortoo", NULL, &st);
    if (v->dkim == NULL) {
        free(f);
        verify_skip(v, "libopendkim could not start");
        return;
    }
    dkim_set_user_context(v->dkim, v);
    for (long i = 0; i < n; i++) {
        size_t l = f[i].len;
        if (l >= 2 && f[i].p[l - 2] == '\r' && f[i].p[l - 1] == '\n')
            l -= 2; /* libopendkim takes a field without its final CRLF */
        st = dkim_header(v->dkim, (u_char *)f[i].p, l);
        if (st != DKIM_STAT_OK)
            break;
    }
    free(f);
    if (st == DKIM_STAT_OK)
        st = dkim_eoh(v->dkim);
    if (st == DKIM_STAT_NOSIG) {
        verify_skip(v, NULL); /* no usable signature field */
        return;
    }
    if (st != DKIM_STAT_OK) {
        verify_skip(v, "the header block cannot be verified");
        return;
    }
    text_free(&v->hdr);
    v->state = VS_BODY;
}

static int hdr_append(struct dkim_verifier *v, const char *data, size_t len)
{
    if (v->hdr.len + len > DKIM_HEADER_MAX)
        return -E2BIG;
    return text_add(&v->hdr, data, len);
}

/* Unstuffed message bytes (the callback of dkim_unstuff_feed). */
static void on_bytes(void *arg, const char *data, size_t len)
{
    struct dkim_verifier *v = arg;

    if (v->state == VS_BODY) {
        if (dkim_body(v->dkim, (u_char *)data, len) != DKIM_STAT_OK && v->error == NULL)
            v->error = "libopendkim refused the body";
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
    header_end(v, v->hdr.p, v->hdr.len - 2);
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
                         const char *txt, size_t len)
{
    if (i >= v->nkeys)
        return;
    struct vkey *k = &v->keys[i];
    free(k->txt);
    k->txt = NULL;
    k->st = st;
    if (st != DKIM_KEY_FOUND)
        return;
    /* A NUL inside the record ends it for libopendkim anyway. */
    if ((k->txt = strndup(txt, len)) == NULL)
        k->st = DKIM_KEY_TEMPFAIL; /* out of memory: try again later */
}

enum dkim_from_status dkim_verify_from(const struct dkim_verifier *v, const char **domain)
{
    *domain = v->from == DKIM_FROM_ONE ? v->from_domain : "";
    return v->from;
}

unsigned dkim_verify_foreign_ar(const struct dkim_verifier *v) { return v->foreign_ar; }

/* libopendkim's per-signature outcome in RFC 8601 terms. */
static enum dkim_vstatus sig_status(struct dkim_verifier *v, DKIM_SIGINFO *sig)
{
    char name[DKIM_DOMAIN_MAX + 1];
    const char *d = (const char *)dkim_sig_getdomain(sig);
    const char *s = (const char *)dkim_sig_getselector(sig);
    if (d != NULL && s != NULL) {
        key_name(s, d, name, sizeof(name));
        struct vkey *k = key_find(v, name);
        if (k != NULL && (k->st == DKIM_KEY_PENDING || k->st == DKIM_KEY_TEMPFAIL))
            return DKIM_V_TEMPERROR;
    }
    if ((dkim_sig_getflags(sig) & DKIM_SIGFLAG_PASSED) != 0 &&
        dkim_sig_getbh(sig) == DKIM_SIGBH_MATCH)
        return DKIM_V_PASS;
    if (dkim_sig_getbh(sig) == DKIM_SIGBH_MISMATCH)
        return DKIM_V_FAIL;
    switch (dkim_sig_geterror(sig)) {
    case DKIM_SIGERROR_BADSIG:
        return DKIM_V_FAIL;
    case DKIM_SIGERROR_KEYFAIL:
        return DKIM_V_TEMPERROR;
    case DKIM_SIGERROR_NOKEY:
    case DKIM_SIGERROR_DNSSYNTAX:
    case DKIM_SIGERROR_MULTIREPLY:
    case DKIM_SIGERROR_KEYVERSION:
    case DKIM_SIGERROR_KEYUNKNOWNHASH:
    case DKIM_SIGERROR_KEYHASHMISMATCH:
    case DKIM_SIGERROR_NOTEMAILKEY:
    case DKIM_SIGERROR_KEYTYPEMISSING:
    case DKIM_SIGERROR_KEYTYPEUNKNOWN:
    case DKIM_SIGERROR_KEYREVOKED:
    case DKIM_SIGERROR_KEYDECODE:
        return DKIM_V_PERMERROR;
    case DKIM_SIGERROR_KEYTOOSMALL:
    case DKIM_SIGERROR_SUBDOMAIN:
    case DKIM_SIGERROR_MBSFAILED:
        return DKIM_V_POLICY;
    default:
        return DKIM_V_NEUTRAL;
    }
}

void dkim_verify_eof(struct dkim_verifier *v)
{
    if (v->state != VS_HEADER || v->header_done)
        return;
    /* No empty line: the message is all header. */
    size_t len = v->hdr.len;
    if (len >= 2 && v->hdr.p[len - 2] == '\r' && v->hdr.p[len - 1] == '\n')
        len -= 2;
    header_end(v, v->hdr.p != NULL ? v->hdr.p : "", len);
}

int dkim_verify_finish(struct dkim_verifier *v, struct dkim_verify_result *res)
{
    memset(res, 0, sizeof(*res));
    if (v->finished)
        return 0;
    dkim_verify_eof(v);
    v->finished = true;
    res->error = v->error;
    if (v->dkim == NULL || v->state != VS_BODY)
        return 0;
    DKIM_STAT st = dkim_eom(v->dkim, NULL);
    (void)st; /* the per-signature results say it all */
    DKIM_SIGINFO **sigs = NULL;
    int nsigs = 0;
    if (dkim_getsiglist(v->dkim, &sigs, &nsigs) != DKIM_STAT_OK)
        return 0;
    for (int i = 0; i < nsigs; i++) {
        DKIM_SIGINFO *sig = sigs[i];
        if ((dkim_sig_getflags(sig) & DKIM_SIGFLAG_IGNORE) != 0) {
            res->ignored++;
            continue;
        }
        if (res->nsigs == DKIM_VERIFY_SIGS_MAX)
            break;
        struct dkim_verify_sig *o = &res->sigs[res->nsigs++];
        o->status = sig_status(v, sig);
        const char *d = (const char *)dkim_sig_getdomain(sig);
        const char *s = (const char *)dkim_sig_getselector(sig);
        snprintf(o->domain, sizeof(o->domain), "%s", d != NULL ? d : "");
        for (char *p = o->domain; *p != '\0'; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p - 'A' + 'a');
        snprintf(o->selector, sizeof(o->selector), "%s", s != NULL ? s : "");
        /* libopendkim gives at least 8 characters, more when two
         * signatures start alike (RFC 6008 2). */
        char b[64] = "";
        size_t blen = sizeof(b) - 1;
        if (dkim_get_sigsubstring(v->dkim, sig, b, &blen) == DKIM_STAT_OK)
            snprintf(o->b, sizeof(o->b), "%.*s", (int)(blen < sizeof(o->b) ? blen : sizeof(o->b) - 1), b);
        dkim_alg_t alg = 0;
        o->algo = "rsa-sha256";
        if (dkim_sig_getsignalg(sig, &alg) == DKIM_STAT_OK)
            o->algo = alg == DKIM_SIGN_ED25519SHA256 ? "ed25519-sha256"
                      : alg == DKIM_SIGN_RSASHA1     ? "rsa-sha1"
                                                     : "rsa-sha256";
        int err = dkim_sig_geterror(sig);
        o->why = o->status == DKIM_V_PASS || err <= 0 ? NULL : dkim_sig_geterrorstr(err);
    }
    return 0;
}
