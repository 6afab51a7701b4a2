/* SPDX-License-Identifier: MIT */
/*
 * spf_record.h - the pure half of SPF (RFC 7208): parsing a "v=spf1" TXT
 * record into terms, and expanding macros (section 7).  No DNS here: the
 * evaluator that walks the terms with asynchronous lookups (libunbound,
 * the 10-lookup and void-lookup limits) builds on these two functions.
 *
 * The parse checks the record against the ABNF of RFC 7208 section 12
 * (mechanism names without case, dual CIDR lengths, domain-spec ending in a
 * top label or a macro, redirect= and exp= at most once, unknown modifiers
 * syntax-checked and ignored): any error is a "permerror" (4.6).  Slices of
 * the record are kept, unexpanded: macros are expanded when the term is
 * evaluated, with the <domain> of that moment.
 *
 * Pure functions over caller memory; thread-safe; no allocation.
 */
#ifndef ORTOO_SPF_RECORD_H
#define ORTOO_SPF_RECORD_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define SPF_TERMS_MAX 256      /* directives per record (a TXT record is small) */
#define SPF_DOMAIN_MAX 253     /* an expanded domain-spec is cut to this (7.3) */

enum spf_qualifier {
    SPF_PASS = '+',
    SPF_FAIL = '-',
    SPF_SOFTFAIL = '~',
    SPF_NEUTRAL = '?',
};

enum spf_mech {
    SPF_M_ALL = 0,
    SPF_M_INCLUDE,
    SPF_M_A,
    SPF_M_MX,
    SPF_M_PTR,
    SPF_M_IP4,
    SPF_M_IP6,
    SPF_M_EXISTS,
};

/* A slice of the record text (not NUL-terminated); len 0: absent. */
struct spf_slice {
    const char *p;
    size_t len;
};

/* One directive.  Invariant: domain is set for include and exists, may be
 * for a, mx and ptr, never for all, ip4 and ip6; cidr4 <= 32, cidr6 <= 128. */
struct spf_term {
    enum spf_qualifier qualifier;
    enum spf_mech mech;
    struct spf_slice domain;      /* the domain-spec, macros unexpanded */
    unsigned cidr4, cidr6;        /* a, mx, ip4, ip6: prefix lengths (default 32, 128) */
    struct in_addr ip4;           /* ip4 */
    struct in6_addr ip6;          /* ip6 */
};

/* A parsed record; slices point into the text given to spf_record_parse(). */
struct spf_record {
    struct spf_term terms[SPF_TERMS_MAX]; /* the directives, in order */
    size_t nterms;
    struct spf_slice redirect;    /* redirect= domain-spec, or absent */
    struct spf_slice exp;         /* exp= domain-spec, or absent */
};

/* True when txt[0..len) is an SPF record: "v=spf1" (any case) alone or
 * followed by a space (4.5).  Other TXT records at the name are ignored. */
bool spf_record_is_spf(const char *txt, size_t len);

/*
 * Parse txt[0..len) (the TXT strings of one record, concatenated).
 * Returns 0 with *out filled, -ENOENT when it is not an SPF record, or
 * -EINVAL (permerror; *err_at, if not NULL, points at the offending term)
 * or -E2BIG (more than SPF_TERMS_MAX directives).  out borrows txt.
 */
int spf_record_parse(const char *txt, size_t len, struct spf_record *out, const char **err_at);

/* What the macros expand to (7.2). */
struct spf_macro_ctx {
    const char *sender;       /* <sender>: "local@domain" (for the null sender,
                                 "postmaster@<helo>", 2.4) */
    const char *domain;       /* <domain>: the domain being checked now */
    int family;               /* AF_INET or AF_INET6 */
    const unsigned char *ip;  /* 4 or 16 bytes, network order */
    const char *helo;         /* HELO/EHLO name */
    const char *validated;    /* %{p}: a validated name, or NULL ("unknown") */
    const char *receiver;     /* %{r} (exp only): our host name, or NULL */
    time_t now;               /* %{t} (exp only) */
};

/*
 * Expand the macro-string s[0..len) into out[cap] (NUL-terminated).
 * explain: the string is an explanation (exp= TXT): spaces are literal and
 * %{c}, %{r}, %{t} are allowed; otherwise they are permerrors.  domain: the
 * string is a domain-spec: a result longer than SPF_DOMAIN_MAX loses labels
 * on the left (7.3).  Returns the length, -EINVAL (bad syntax: permerror) or
 * -ENOSPC.
 */
int spf_macro_expand(const char *s, size_t len, const struct spf_macro_ctx *ctx, bool explain,
                     bool domain, char *out, size_t cap);

#endif
