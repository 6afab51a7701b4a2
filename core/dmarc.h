/* SPDX-License-Identifier: MIT */
/*
 * dmarc.h - DMARC (RFC 7489): the policy record, identifier alignment and
 * the evaluation of one message from its SPF and DKIM results.  Pure: the
 * record lookups (_dmarc.<From domain>, then _dmarc.<organizational
 * domain>, 6.6.3) are the caller's, on the asynchronous resolver
 * (core/checks.c), which hands the TXT records over.
 *
 * Written here rather than with libopendmarc, which Debian has: its
 * policy lookups are blocking (usable only by handing it records, as
 * here), but also its relaxed alignment is a string-prefix test of the
 * reversed names instead of a comparison of organizational domains
 * (RFC 7489 3.1), its public suffix lookup has no implicit "*" rule and
 * takes a process-wide mutex for every name, opendmarc_policy_store_dkim()
 * reads adkim before the record may have been stored, and pct= is left to
 * the caller.  The part needed - a tag list, two alignment tests and the
 * policy choice of 6.6.4 - is small.
 */
#ifndef ORTOO_CORE_DMARC_H
#define ORTOO_CORE_DMARC_H

#include <stdbool.h>
#include <stddef.h>

struct psl;

#define DMARC_DOMAIN_MAX 253

enum dmarc_policy {
    DMARC_P_NONE = 0,
    DMARC_P_QUARANTINE,
    DMARC_P_REJECT,
};

/* Results (RFC 7489 11.2, the "dmarc" method of RFC 8601). */
enum dmarc_result {
    DMARC_R_NONE = 0,           /* no policy record (or no From domain) */
    DMARC_R_PASS,
    DMARC_R_FAIL,
    DMARC_R_TEMPERROR,          /* the record could not be fetched now */
    DMARC_R_PERMERROR,          /* no single author domain */
};

/* A parsed policy record (RFC 7489 6.3), defaults applied. */
struct dmarc_record {
    enum dmarc_policy p;        /* p= */
    enum dmarc_policy sp;       /* sp=, or p when absent */
    bool adkim_strict;          /* adkim=s (default r) */
    bool aspf_strict;           /* aspf=s (default r) */
    unsigned pct;               /* pct= 0..100 (default 100) */
};

/* txt[0..len) starts with the "v=DMARC1" tag (6.6.3 step 2). */
bool dmarc_record_is(const char *txt, size_t len);

/*
 * Parse a record.  Unknown tags are ignored; bad adkim/aspf/pct values
 * take the defaults.  A record without a valid p= (or with a bad sp=) is
 * read as p=none when it has a rua= tag, else it is unusable (6.6.3 step
 * 6).  Returns 0, or -EINVAL (not a DMARC record, or unusable).
 */
int dmarc_record_parse(const char *txt, size_t len, struct dmarc_record *out);

/*
 * Identifier alignment (3.1): strict, the names are equal (any case);
 * relaxed, their organizational domains (psl.h) are.
 */
bool dmarc_aligned(const struct psl *psl, const char *a, const char *b, bool strict);

/* What one message brings to the evaluation. */
struct dmarc_input {
    const char *from_domain;    /* the RFC5322.From domain */
    const struct dmarc_record *rec; /* the policy found, NULL: none */
    bool rec_at_org;            /* rec came from the organizational domain's
                                   name and From is below it: sp= applies */
    bool spf_pass;              /* SPF passed for spf_domain */
    const char *spf_domain;     /* the MAIL FROM domain (HELO for <>), or NULL */
    const char *const *dkim_pass; /* d= of the DKIM signatures that passed */
    size_t ndkim_pass;
};

/* The verdict. */
struct dmarc_outcome {
    enum dmarc_result result;   /* pass / fail (none when rec is NULL) */
    enum dmarc_policy policy;   /* p= or sp=, the one that applies */
    enum dmarc_policy disposition; /* what to do after pct= (6.6.4): none on
                                   a pass, a sampled-out policy lowered */
    bool spf_aligned;           /* SPF passed and aligned */
    bool dkim_aligned;          /* a passing DKIM signature aligned */
    const char *dkim_domain;    /* that signature's d= (borrowed), or NULL */
};

/*
 * Evaluate (6.6.2, 6.6.4).  sample: a number 0..99 drawn by the caller;
 * the policy applies when sample < pct, else it is lowered one step
 * (reject -> quarantine -> none).  Fills *out.
 */
void dmarc_evaluate(const struct psl *psl, const struct dmarc_input *in, unsigned sample,
                    struct dmarc_outcome *out);

/* "none", "pass", "fail", "temperror", "permerror". */
const char *dmarc_result_name(enum dmarc_result r);
/* "none", "quarantine", "reject". */
const char *dmarc_policy_name(enum dmarc_policy p);

#endif
