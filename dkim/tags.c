/* SPDX-License-Identifier: MIT */
/*
 * tags.c - tag lists, DKIM-Signature fields and key records (see tags.h).
 *
 * Keywords inside values (a=, c=, k=, h=, s=, q=, t= and v=DKIM1) are
 * compared without case, as ABNF strings are (RFC 5234 2.3); tag names
 * with case (RFC 6376 3.2).  Every loop is bounded by the input length.
 */
#include "dkim/tags.h"

#include <string.h>
#include <strings.h>

static bool is_fws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* ---- the tag list (RFC 6376 3.2) ---- */

void dkim_tag_iter_init(struct dkim_tag_iter *it, const char *s, size_t len)
{
    it->p = s;
    it->end = s + len;
}

int dkim_tag_next(struct dkim_tag_iter *it, struct dkim_tag *t)
{
    const char *p = it->p, *end = it->end;

    while (p < end && is_fws(*p))
        p++;
    if (p == end) {
        it->p = p;
        return 0;
    }
    /* tag-name = ALPHA *ALNUMPUNC */
    if (!is_alpha(*p))
        return -1;
    t->name = p;
    while (p < end && (is_alpha(*p) || is_digit(*p) || *p == '_'))
        p++;
    t->name_len = (size_t)(p - t->name);
    while (p < end && is_fws(*p))
        p++;
    if (p == end || *p != '=')
        return -1;
    p++;
    /* The raw value: up to ';' or the end; VALCHAR and FWS only. */
    const char *raw = p;
    while (p < end && *p != ';') {
        unsigned char c = (unsigned char)*p;
        if (!is_fws((char)c) && (c < 0x21 || c > 0x7e))
            return -1;
        p++;
    }
    t->raw = raw;
    t->raw_len = (size_t)(p - raw);
    const char *v = raw, *ve = p;
    while (v < ve && is_fws(*v))
        v++;
    while (ve > v && is_fws(ve[-1]))
        ve--;
    t->val = v;
    t->val_len = (size_t)(ve - v);
    it->p = p < end ? p + 1 : p;
    return 1;
}

bool dkim_tag_is(const struct dkim_tag *t, const char *name)
{
    return strlen(name) == t->name_len && memcmp(t->name, name, t->name_len) == 0;
}

/* The value is `word` (any case). */
static bool val_is(const char *v, size_t len, const char *word)
{
    return strlen(word) == len && strncasecmp(v, word, len) == 0;
}

/*
 * The next item of a colon-separated list in *p..end (h=, q=, and the key
 * record's h=, s=, t=), FWS around it removed.  *p becomes NULL after the
 * last item.  Returns false when there is none left.
 */
bool dkim_list_next(const char **p, const char *end, const char **item, size_t *len)
{
    const char *s = *p;
    if (s == NULL)
        return false;
    const char *colon = memchr(s, ':', (size_t)(end - s));
    const char *e = colon != NULL ? colon : end;
    *p = colon != NULL ? colon + 1 : NULL;
    while (s < e && is_fws(*s))
        s++;
    while (e > s && is_fws(e[-1]))
        e--;
    *item = s;
    *len = (size_t)(e - s);
    return true;
}

/* ---- base64 ---- */

/* Base64 digit values plus one (0: not base64), B64_FWS for FWS (skipped),
 * B64_PAD for '='. */
enum { B64_FWS = 65, B64_PAD = 66 };
static const unsigned char b64_table[256] = {
    ['A'] = 1, ['B'] = 2, ['C'] = 3, ['D'] = 4, ['E'] = 5, ['F'] = 6, ['G'] = 7, ['H'] = 8,
    ['I'] = 9, ['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14, ['O'] = 15,
    ['P'] = 16, ['Q'] = 17, ['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22,
    ['W'] = 23, ['X'] = 24, ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29,
    ['d'] = 30, ['e'] = 31, ['f'] = 32, ['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36,
    ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40, ['o'] = 41, ['p'] = 42, ['q'] = 43,
    ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48, ['w'] = 49, ['x'] = 50,
    ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56, ['4'] = 57,
    ['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['+'] = 63, ['/'] = 64,
    [' '] = B64_FWS, ['\t'] = B64_FWS, ['\r'] = B64_FWS, ['\n'] = B64_FWS, ['='] = B64_PAD,
};

long dkim_b64_decode(const char *s, size_t len, unsigned char *out, size_t cap)
{
    uint32_t acc = 0;
    size_t n = 0, o = 0, pad = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned v = b64_table[(unsigned char)s[i]];
        if (v >= 1 && v <= 64) {
            if (pad > 0)
                return -1; /* data after padding */
            acc = acc << 6 | (v - 1);
            if (++n % 4 == 0) {
                if (o + 3 > cap)
                    return -1;
                out[o++] = (unsigned char)(acc >> 16);
                out[o++] = (unsigned char)(acc >> 8);
                out[o++] = (unsigned char)acc;
                acc = 0;
            }
        } else if (v == B64_PAD) {
            pad++;
        } else if (v != B64_FWS) {
            return -1;
        }
    }
    size_t rest = n % 4;
    if ((rest == 0 && pad != 0) || rest == 1 || (rest > 0 && rest + pad != 4))
        return -1;
    if (rest == 2) {
        if (o + 1 > cap)
            return -1;
        out[o++] = (unsigned char)(acc >> 4);
    } else if (rest == 3) {
        if (o + 2 > cap)
            return -1;
        out[o++] = (unsigned char)(acc >> 10);
        out[o++] = (unsigned char)(acc >> 2);
    }
    return (long)o;
}

/* ---- numbers and names ---- */

/* Decimal digits only, saturated at max.  False for none or a non-digit. */
static bool number_parse(const char *v, size_t len, uint64_t max, uint64_t *out)
{
    uint64_t n = 0;
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!is_digit(v[i]))
            return false;
        unsigned d = (unsigned)(v[i] - '0');
        n = n > (max - d) / 10 ? max : n * 10 + d;
    }
    *out = n;
    return true;
}

/*
 * A domain or selector: dot-separated labels of letters, digits, '-' and
 * '_' (selectors and some signing domains use '_'), no empty label, at most
 * cap - 1 bytes.  Copied to out, lower-cased when lower.
 */
static bool name_copy(const char *v, size_t len, char *out, size_t cap, bool lower)
{
    if (len == 0 || len >= cap || v[0] == '.' || v[len - 1] == '.')
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = v[i];
        if (c == '.' && v[i - 1] == '.')
            return false;
        if (!is_alpha(c) && !is_digit(c) && c != '-' && c != '_' && c != '.')
            return false;
        out[i] = lower && c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
    }
    out[len] = '\0';
    return true;
}

/* A header field name (RFC 5322 2.2: printable ASCII but colon). */
static bool field_name_ok(const char *v, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)v[i] <= 32 || (unsigned char)v[i] >= 127)
            return false;
    return true;
}

/* ---- the DKIM-Signature field (RFC 6376 3.5) ---- */

enum sig_tag { ST_V = 0, ST_A, ST_B, ST_BH, ST_C, ST_D, ST_H, ST_I, ST_L, ST_Q, ST_S, ST_T, ST_X, ST_N };

static const char *const sig_tag_names[ST_N] = {"v", "a", "b", "bh", "c", "d", "h",
                                                "i", "l", "q", "s", "t", "x"};

static bool canon_word(const char *v, size_t len, enum dkim_canon *out)
{
    if (val_is(v, len, "simple"))
        *out = DKIM_C14N_SIMPLE;
    else if (val_is(v, len, "relaxed"))
        *out = DKIM_C14N_RELAXED;
    else
        return false;
    return true;
}

/* c= (3.5): "header[/body]"; a lone header algorithm means body simple. */
static bool canon_parse(const char *v, size_t len, struct dkim_sig *sig)
{
    const char *slash = memchr(v, '/', len);
    sig->bcanon = DKIM_C14N_SIMPLE;
    if (slash == NULL)
        return canon_word(v, len, &sig->hcanon);
    return canon_word(v, (size_t)(slash - v), &sig->hcanon) &&
           canon_word(slash + 1, len - (size_t)(slash - v) - 1, &sig->bcanon);
}

/* h=: names valid, at most DKIM_SIG_HFIELDS_MAX, From among them. */
static const char *h_check(struct dkim_sig *sig)
{
    const char *p = sig->h, *end = sig->h + sig->h_len, *item;
    size_t len;
    bool from = false;

    sig->hcount = 0;
    while (dkim_list_next(&p, end, &item, &len)) {
        if (!field_name_ok(item, len))
            return "bad header field name in h=";
        if (++sig->hcount > DKIM_SIG_HFIELDS_MAX)
            return "too many header fields in h=";
        from = from || val_is(item, len, "from");
    }
    return from ? NULL : "From field not signed (h=)";
}

/* i= (3.5): [local-part] "@" domain, the domain d= or below it. */
static const char *auid_check(const char *v, size_t len, struct dkim_sig *sig)
{
    const char *at = NULL;
    for (size_t i = 0; i < len; i++)
        if (v[i] == '@')
            at = v + i;
    if (at == NULL)
        return "bad i=";
    if (!name_copy(at + 1, len - (size_t)(at + 1 - v), sig->auid_domain,
                   sizeof(sig->auid_domain), true))
        return "bad i= domain";
    return NULL;
}

int dkim_sig_parse(const char *value, size_t len, struct dkim_sig *sig, const char **why)
{
    struct dkim_tag_iter it;
    struct dkim_tag t;
    struct dkim_tag tags[ST_N];
    bool seen[ST_N] = {false};
    const char *err = NULL;
    int rc;

    memset(sig, 0, sizeof(*sig));
    sig->hcanon = sig->bcanon = DKIM_C14N_SIMPLE;
    dkim_tag_iter_init(&it, value, len);
    while ((rc = dkim_tag_next(&it, &t)) == 1) {
        int k;
        for (k = 0; k < ST_N && !dkim_tag_is(&t, sig_tag_names[k]); k++)
            ;
        if (k == ST_N)
            continue; /* unknown tags are ignored (3.2) */
        if (seen[k]) {
            err = err ? err : "a tag appears twice";
            continue;
        }
        seen[k] = true;
        tags[k] = t;
        /* What the result names even when the signature is unusable. */
        if (k == ST_D && !name_copy(t.val, t.val_len, sig->domain, sizeof(sig->domain), true))
            err = err ? err : "bad d=";
        if (k == ST_S &&
            !name_copy(t.val, t.val_len, sig->selector, sizeof(sig->selector), false))
            err = err ? err : "bad s=";
        if (k == ST_A) {
            sig->algo_known = true;
            if (val_is(t.val, t.val_len, "rsa-sha256"))
                sig->algo = DKIM_SIG_RSA_SHA256;
            else if (val_is(t.val, t.val_len, "ed25519-sha256"))
                sig->algo = DKIM_SIG_ED25519_SHA256;
            else if (val_is(t.val, t.val_len, "rsa-sha1"))
                sig->algo = DKIM_SIG_RSA_SHA1;
            else
                sig->algo_known = false;
            if (!sig->algo_known)
                err = err ? err : "unknown algorithm (a=)";
        }
        if (k == ST_B) {
            sig->b_raw = t.raw;
            sig->b_raw_len = t.raw_len;
            sig->b_val = t.val;
            sig->b_val_len = t.val_len;
        }
    }
    if (rc < 0) {
        *why = "signature syntax error";
        return -1;
    }
    if (err != NULL)
        goto fail;
    static const enum sig_tag required[] = {ST_V, ST_A, ST_B, ST_BH, ST_D, ST_H, ST_S};
    static const char *const missing[] = {"no v=", "no a=", "no b=", "no bh=",
                                          "no d=", "no h=", "no s="};
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++)
        if (!seen[required[i]]) {
            err = missing[i];
            goto fail;
        }
    if (!val_is(tags[ST_V].val, tags[ST_V].val_len, "1")) {
        err = "unsupported version (v=)";
        goto fail;
    }
    /* b=: the signature; its raw span is what the header hash leaves out. */
    long n = dkim_b64_decode(sig->b_val, sig->b_val_len, sig->b, sizeof(sig->b));
    if (n <= 0) {
        err = n == 0 ? "empty b=" : "bad base64 in b=";
        goto fail;
    }
    sig->b_len = (size_t)n;
    unsigned char bh[64];
    n = dkim_b64_decode(tags[ST_BH].val, tags[ST_BH].val_len, bh, sizeof(bh));
    if (n <= 0) {
        err = n == 0 ? "empty bh=" : "bad base64 in bh=";
        goto fail;
    }
    /* A bh= of the wrong length cannot match: a failed body hash, found
     * when the body is done (bh_len stays as decoded, up to 32). */
    sig->bh_len = (size_t)n > sizeof(sig->bh) ? sizeof(sig->bh) + 1 : (size_t)n;
    memcpy(sig->bh, bh, (size_t)n > sizeof(sig->bh) ? sizeof(sig->bh) : (size_t)n);
    if (seen[ST_C] && !canon_parse(tags[ST_C].val, tags[ST_C].val_len, sig)) {
        err = "unknown canonicalization (c=)";
        goto fail;
    }
    sig->h = tags[ST_H].val;
    sig->h_len = tags[ST_H].val_len;
    if ((err = h_check(sig)) != NULL)
        goto fail;
    /* i=: the AUID's domain is d= or a subdomain of it (3.5). */
    if (seen[ST_I]) {
        if ((err = auid_check(tags[ST_I].val, tags[ST_I].val_len, sig)) != NULL)
            goto fail;
        size_t al = strlen(sig->auid_domain), dl = strlen(sig->domain);
        if (!(al == dl && strcmp(sig->auid_domain, sig->domain) == 0) &&
            !(al > dl && sig->auid_domain[al - dl - 1] == '.' &&
              strcmp(sig->auid_domain + al - dl, sig->domain) == 0)) {
            err = "i= is not within d=";
            goto fail;
        }
    } else {
        memcpy(sig->auid_domain, sig->domain, sizeof(sig->domain));
    }
    if (seen[ST_L]) {
        if (!number_parse(tags[ST_L].val, tags[ST_L].val_len, UINT64_MAX, &sig->l)) {
            err = "bad l=";
            goto fail;
        }
        sig->has_l = true;
    }
    if (seen[ST_Q]) {
        const char *p = tags[ST_Q].val, *end = p + tags[ST_Q].val_len, *item;
        size_t il;
        bool dns = false;
        while (dkim_list_next(&p, end, &item, &il))
            dns = dns || val_is(item, il, "dns/txt") || val_is(item, il, "dns");
        if (!dns) {
            err = "no known query method (q=)";
            goto fail;
        }
    }
    uint64_t u;
    if (seen[ST_T]) {
        if (!number_parse(tags[ST_T].val, tags[ST_T].val_len, INT64_MAX, &u)) {
            err = "bad t=";
            goto fail;
        }
        sig->has_t = true;
        sig->t = (int64_t)u;
    }
    if (seen[ST_X]) {
        if (!number_parse(tags[ST_X].val, tags[ST_X].val_len, INT64_MAX, &u)) {
            err = "bad x=";
            goto fail;
        }
        sig->has_x = true;
        sig->x = (int64_t)u;
        if (sig->has_t && sig->x < sig->t) {
            err = "x= is before t=";
            goto fail;
        }
    }
    *why = NULL;
    return 0;
fail:
    *why = err;
    return -1;
}

/* ---- the key record (RFC 6376 3.6.1) ---- */

enum key_tag { KT_V = 0, KT_H, KT_K, KT_N, KT_P, KT_S, KT_T, KT_N_ };

static const char *const key_tag_names[KT_N_] = {"v", "h", "k", "n", "p", "s", "t"};

int dkim_keyrec_parse(const char *txt, size_t len, struct dkim_keyrec *rec, const char **why)
{
    struct dkim_tag_iter it;
    struct dkim_tag t;
    bool seen[KT_N_] = {false}, first = true;
    int rc;

    memset(rec, 0, sizeof(*rec));
    rec->type = DKIM_KEYTYPE_RSA;
    rec->sha1_ok = rec->sha256_ok = rec->email_ok = true;
    *why = NULL;
    dkim_tag_iter_init(&it, txt, len);
    while ((rc = dkim_tag_next(&it, &t)) == 1) {
        int k;
        bool was_first = first;
        first = false;
        for (k = 0; k < KT_N_ && !dkim_tag_is(&t, key_tag_names[k]); k++)
            ;
        if (k == KT_N_)
            continue;
        if (seen[k]) {
            *why = "a tag appears twice in the key record";
            return -1;
        }
        seen[k] = true;
        const char *p = t.val, *end = t.val + t.val_len, *item;
        size_t il;
        switch (k) {
        case KT_V:
            if (!was_first || !val_is(t.val, t.val_len, "DKIM1")) {
                *why = "bad key record version (v=)";
                return -1;
            }
            break;
        case KT_H:
            rec->sha1_ok = rec->sha256_ok = false;
            while (dkim_list_next(&p, end, &item, &il)) {
                rec->sha1_ok = rec->sha1_ok || val_is(item, il, "sha1");
                rec->sha256_ok = rec->sha256_ok || val_is(item, il, "sha256");
            }
            break;
        case KT_K:
            if (val_is(t.val, t.val_len, "rsa")) {
                rec->type = DKIM_KEYTYPE_RSA;
            } else if (val_is(t.val, t.val_len, "ed25519")) {
                rec->type = DKIM_KEYTYPE_ED25519;
            } else {
                *why = "unknown key type (k=)";
                return -1;
            }
            break;
        case KT_P:
            rec->p = t.val;
            rec->p_len = t.val_len;
            break;
        case KT_S:
            rec->email_ok = false;
            while (dkim_list_next(&p, end, &item, &il))
                rec->email_ok = rec->email_ok || val_is(item, il, "*") || val_is(item, il, "email");
            break;
        case KT_T:
            while (dkim_list_next(&p, end, &item, &il)) {
                rec->testing = rec->testing || val_is(item, il, "y");
                rec->strict = rec->strict || val_is(item, il, "s");
            }
            break;
        default:
            break; /* n= notes */
        }
    }
    if (rc < 0) {
        *why = "key record syntax error";
        return -1;
    }
    if (!seen[KT_P]) {
        *why = "no p= in the key record";
        return -1;
    }
    return 0;
}
