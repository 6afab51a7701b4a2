/* SPDX-License-Identifier: MIT */
/*
 * dmarc.c - DMARC records, alignment and evaluation (see dmarc.h for why
 * it is not libopendmarc).
 *
 * A record is a tag-value list (RFC 7489 6.4): "tag=value" pairs separated
 * by ';', whitespace around either allowed, tag names without case, the
 * "v=DMARC1" tag first.  Values of p/sp/adkim/aspf are matched exactly
 * (any case), not by prefix.
 */
#include "core/dmarc.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

#include "core/psl.h"

const char *dmarc_result_name(enum dmarc_result r)
{
    switch (r) {
    case DMARC_R_NONE: return "none";
    case DMARC_R_PASS: return "pass";
    case DMARC_R_FAIL: return "fail";
    case DMARC_R_TEMPERROR: return "temperror";
    case DMARC_R_PERMERROR: return "permerror";
    }
    return "?";
}

const char *dmarc_policy_name(enum dmarc_policy p)
{
    switch (p) {
    case DMARC_P_NONE: return "none";
    case DMARC_P_QUARANTINE: return "quarantine";
    case DMARC_P_REJECT: return "reject";
    }
    return "?";
}

static bool is_wsp(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

/* The slice s[0..*len) without surrounding whitespace. */
static const char *trim(const char *s, size_t *len)
{
    while (*len > 0 && is_wsp(s[0])) {
        s++;
        (*len)--;
    }
    while (*len > 0 && is_wsp(s[*len - 1]))
        (*len)--;
    return s;
}

static bool word_is(const char *s, size_t len, const char *w)
{
    return strlen(w) == len && strncasecmp(s, w, len) == 0;
}

/* The next tag: slices in *tag and *val; returns the bytes used, 0 at the end. */
static size_t next_tag(const char *txt, size_t len, const char **tag, size_t *tlen,
                       const char **val, size_t *vlen)
{
    if (len == 0)
        return 0;
    const char *semi = memchr(txt, ';', len);
    size_t used = semi != NULL ? (size_t)(semi - txt) + 1 : len;
    size_t plen = semi != NULL ? (size_t)(semi - txt) : len;
    const char *eq = memchr(txt, '=', plen);
    if (eq == NULL) {
        *tlen = plen;
        *tag = trim(txt, tlen);
        *val = "";
        *vlen = 0;
        return used;
    }
    *tlen = (size_t)(eq - txt);
    *tag = trim(txt, tlen);
    *vlen = (size_t)(txt + plen - (eq + 1));
    *val = trim(eq + 1, vlen);
    return used;
}

bool dmarc_record_is(const char *txt, size_t len)
{
    const char *tag, *val;
    size_t tlen, vlen;
    if (next_tag(txt, len, &tag, &tlen, &val, &vlen) == 0)
        return false;
    /* 6.4: "v" is the first tag, its value exactly DMARC1. */
    return word_is(tag, tlen, "v") && vlen == 6 && strncmp(val, "DMARC1", 6) == 0;
}

static int policy_parse(const char *v, size_t len, enum dmarc_policy *out)
{
    if (word_is(v, len, "none"))
        *out = DMARC_P_NONE;
    else if (word_is(v, len, "quarantine"))
        *out = DMARC_P_QUARANTINE;
    else if (word_is(v, len, "reject"))
        *out = DMARC_P_REJECT;
    else
        return -1;
    return 0;
}

int dmarc_record_parse(const char *txt, size_t len, struct dmarc_record *out)
{
    const char *tag, *val;
    size_t tlen, vlen, used;
    bool has_p = false, bad_p = false, has_sp = false, bad_sp = false, has_rua = false;
    enum dmarc_policy p = DMARC_P_NONE, sp = DMARC_P_NONE;

    if (!dmarc_record_is(txt, len))
        return -EINVAL;
    *out = (struct dmarc_record){.p = DMARC_P_NONE, .sp = DMARC_P_NONE, .pct = 100};
    while ((used = next_tag(txt, len, &tag, &tlen, &val, &vlen)) > 0) {
        txt += used;
        len -= used;
        if (word_is(tag, tlen, "p")) {
            has_p = true;
            bad_p = policy_parse(val, vlen, &p) < 0;
        } else if (word_is(tag, tlen, "sp")) {
            has_sp = true;
            bad_sp = policy_parse(val, vlen, &sp) < 0;
        } else if (word_is(tag, tlen, "adkim")) {
            out->adkim_strict = word_is(val, vlen, "s");
        } else if (word_is(tag, tlen, "aspf")) {
            out->aspf_strict = word_is(val, vlen, "s");
        } else if (word_is(tag, tlen, "pct")) {
            unsigned n = 0;
            size_t i = 0;
            while (i < vlen && val[i] >= '0' && val[i] <= '9' && n <= 100)
                n = n * 10 + (unsigned)(val[i++] - '0');
            if (i == vlen && vlen > 0 && n <= 100)
                out->pct = n;
        } else if (word_is(tag, tlen, "rua")) {
            has_rua = vlen > 0;
        }
    }
    if (!has_p || bad_p || bad_sp) {
        /* 6.6.3 step 6: a record meant for reports only counts as p=none. */
        if (!has_rua)
            return -EINVAL;
        out->p = out->sp = DMARC_P_NONE;
        return 0;
    }
    out->p = p;
    out->sp = has_sp ? sp : p;
    return 0;
}

bool dmarc_aligned(const struct psl *psl, const char *a, const char *b, bool strict)
{
    if (a == NULL || b == NULL || a[0] == '\0' || b[0] == '\0')
        return false;
    if (strcasecmp(a, b) == 0)
        return true;
    if (strict)
        return false;
    char oa[DMARC_DOMAIN_MAX + 1], ob[DMARC_DOMAIN_MAX + 1];
    if (psl_org_domain(psl, a, oa, sizeof(oa)) < 0 || psl_org_domain(psl, b, ob, sizeof(ob)) < 0)
        return false;
    return strcmp(oa, ob) == 0;
}

void dmarc_evaluate(const struct psl *psl, const struct dmarc_input *in, unsigned sample,
                    struct dmarc_outcome *out)
{
    *out = (struct dmarc_outcome){.result = DMARC_R_NONE};
    if (in->rec == NULL || in->from_domain == NULL || in->from_domain[0] == '\0')
        return;
    const struct dmarc_record *r = in->rec;
    out->policy = in->rec_at_org ? r->sp : r->p;
    out->spf_aligned =
        in->spf_pass && dmarc_aligned(psl, in->from_domain, in->spf_domain, r->aspf_strict);
    for (size_t i = 0; i < in->ndkim_pass && !out->dkim_aligned; i++)
        if (dmarc_aligned(psl, in->from_domain, in->dkim_pass[i], r->adkim_strict)) {
            out->dkim_aligned = true;
            out->dkim_domain = in->dkim_pass[i];
        }
    if (out->spf_aligned || out->dkim_aligned) {
        out->result = DMARC_R_PASS;
        out->disposition = DMARC_P_NONE;
        return;
    }
    out->result = DMARC_R_FAIL;
    out->disposition = out->policy;
    /* 6.6.4: pct= samples the messages the policy applies to; the others
     * get the next policy down. */
    if (sample >= r->pct && out->disposition != DMARC_P_NONE)
        out->disposition = out->disposition == DMARC_P_REJECT ? DMARC_P_QUARANTINE : DMARC_P_NONE;
}
