/* SPDX-License-Identifier: MIT */
/*
 * tags.h - the DKIM tag=value lists (RFC 6376 3.2) and the two records
 * written in them: the DKIM-Signature field (3.5) and the key record
 * published in DNS (3.6.1, RFC 8463 for Ed25519), plus the base64 those
 * carry (with folding white space inside, 3.5 b=).
 *
 * Pure functions over the caller's bytes: no I/O, no allocation, no
 * globals; fuzzed (tests/fuzz/fuzz_dkim_tags.c).  Errors come back as a
 * static reason, used as the comment of the Authentication-Results entry.
 */
#ifndef ORTOO_DKIM_TAGS_H
#define ORTOO_DKIM_TAGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dkim/canon.h"
#include "dkim/header.h"

/* ---- the tag list ---- */

/* One tag: the name, its value without the surrounding FWS (inner FWS is
 * kept: b=, h= and p= may be folded), and the raw span between '=' and the
 * ';' or the end (what "b= value deleted" removes, RFC 6376 3.5). */
struct dkim_tag {
    const char *name;
    size_t name_len;
    const char *val;
    size_t val_len;
    const char *raw;
    size_t raw_len;
};

/* Iteration state over s[0..len). */
struct dkim_tag_iter {
    const char *p, *end;
};

void dkim_tag_iter_init(struct dkim_tag_iter *it, const char *s, size_t len);

/*
 * The next tag.  Returns 1 with *t filled, 0 at the end of the list (a
 * final ';' and FWS are allowed), -1 on a syntax error: a tag name that is
 * not ALPHA *(ALPHA / DIGIT / "_"), no '=', an empty tag-spec (";;"), or a
 * value byte that is not VALCHAR (%x21-3A / %x3C-7E) or FWS.
 */
int dkim_tag_next(struct dkim_tag_iter *it, struct dkim_tag *t);

/* The tag's name is `name` (tag names are case-sensitive, 3.2). */
bool dkim_tag_is(const struct dkim_tag *t, const char *name);

/*
 * The next item of a colon-separated list (h=, q=, the key record's h=,
 * s=, t=) in *p..end, FWS around it removed.  Start with *p at the list;
 * *p becomes NULL after the last item.  Returns false when none is left.
 * An empty list has one empty item.
 */
bool dkim_list_next(const char **p, const char *end, const char **item, size_t *len);

/* ---- base64 with FWS (RFC 2045 6.8 alphabet) ---- */

/*
 * Decode s[0..len) into out (at most cap bytes), skipping SP, HTAB, CR and
 * LF anywhere.  Padding ('=') only at the end, and only where it belongs.
 * Returns the decoded length, or -1 for a bad character, bad padding, a
 * length that is not a whole number of quanta, or more than cap bytes.
 */
long dkim_b64_decode(const char *s, size_t len, unsigned char *out, size_t cap);

/* ---- the DKIM-Signature field (RFC 6376 3.5) ---- */

enum dkim_sig_algo {
    DKIM_SIG_RSA_SHA256 = 0,
    DKIM_SIG_ED25519_SHA256,    /* RFC 8463 */
    DKIM_SIG_RSA_SHA1,          /* parsed, never valid (RFC 8301 3.1) */
};

#define DKIM_SIG_B_MAX 1024     /* signature bytes: RSA-8192 */
#define DKIM_SIG_SELECTOR_MAX 253
#define DKIM_SIG_HFIELDS_MAX 256 /* names in h=: more is refused (CPU bound) */

/*
 * A parsed signature.  Slices (h, b_raw, b_val) point into the field the
 * parser was given; the rest is decoded.  Invariants after a successful
 * parse: domain and selector are non-empty, lower-case domain; bh_len is
 * the hash length of algo; hcount in 1..DKIM_SIG_HFIELDS_MAX and "from" is
 * among the names.
 */
struct dkim_sig {
    enum dkim_sig_algo algo;
    bool algo_known;                     /* a= was one of the three */
    enum dkim_canon hcanon, bcanon;      /* c=, default simple/simple */
    unsigned char b[DKIM_SIG_B_MAX];     /* b= decoded */
    size_t b_len;
    unsigned char bh[32];                /* bh= decoded */
    size_t bh_len;
    char domain[DKIM_DOMAIN_MAX + 1];    /* d=, lower case */
    char selector[DKIM_SIG_SELECTOR_MAX + 1]; /* s= */
    char auid_domain[DKIM_DOMAIN_MAX + 1]; /* the domain of i= (default d=) */
    const char *h;                       /* h= value (inner FWS kept) */
    size_t h_len;
    unsigned hcount;                     /* names in h= */
    const char *b_raw;                   /* b='s raw span (to delete); set
                                            whenever b= was seen */
    size_t b_raw_len;
    const char *b_val;                   /* b='s value (FWS inside) */
    size_t b_val_len;
    bool has_l;                          /* l= given */
    uint64_t l;                          /* l= (saturated at UINT64_MAX) */
    bool has_t, has_x;
    int64_t t, x;                        /* t=, x= (saturated) */
};

/*
 * Parse the value of a DKIM-Signature field, value[0..len) (everything
 * after the colon, folds included).  Required: v=1, a=, b=, bh=, d=, h=, s=.
 * Checked: a= known, c= known, bh= of the hash's length, h= lists From
 * (RFC 6376 5.4; 6.1.1), i= in d= or a subdomain of it, q= offers dns/txt,
 * x= after t=, no known tag twice.  Unknown tags are ignored (3.2).
 * Returns 0, or -1 with *why (static text): the signature is unusable
 * (RFC 8601 "neutral").  domain, selector and algo are filled as far as
 * they were read, even on failure (for the result's header.d/s/a).
 */
int dkim_sig_parse(const char *value, size_t len, struct dkim_sig *sig, const char **why);

/* ---- the key record (RFC 6376 3.6.1, RFC 8463 4) ---- */

enum dkim_key_type {
    DKIM_KEYTYPE_RSA = 0,
    DKIM_KEYTYPE_ED25519,
};

/* A parsed key record; p is a slice of the record (base64, FWS inside). */
struct dkim_keyrec {
    enum dkim_key_type type;             /* k=, default rsa */
    const char *p;                       /* p= value */
    size_t p_len;                        /* 0: revoked (3.6.1) */
    bool sha1_ok, sha256_ok;             /* h=: hashes allowed (default all) */
    bool email_ok;                       /* s= has "email" or "*" (default) */
    bool testing;                        /* t=y */
    bool strict;                         /* t=s: i= domain must be d= itself */
};

/*
 * Parse a key record txt[0..len).  v= is optional but must be "DKIM1" and
 * the first tag when present; p= is required; unknown tags, hash names,
 * service types and flags are ignored.  Returns 0, or -1 with *why
 * (static): no usable key (RFC 8601 "permerror").
 */
int dkim_keyrec_parse(const char *txt, size_t len, struct dkim_keyrec *rec, const char **why);

#endif
