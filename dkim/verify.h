/* SPDX-License-Identifier: MIT */
/*
 * verify.h - DKIM verification of an incoming message as it is received
 * (RFC 6376 6, RFC 8463, RFC 8301), and the header facts the inbound
 * checks need from the same parse (the From domains for DMARC,
 * Authentication-Results fields that claim to be ours).
 *
 * The verifier does no DNS: the caller looks the public keys up on its own
 * asynchronous resolver and hands the TXT records over before the end.
 * The flow, for one message:
 *
 *   v = dkim_verify_open(lib, max_sigs, authserv_id);   DATA / first BDAT
 *   dkim_verify_feed(v, bytes, n);        every append, stored wire form;
 *                                         once dkim_verify_header_done(v):
 *       look up dkim_verify_key_name(v, i) (TXT) for i < dkim_verify_nkeys(v)
 *       and dkim_verify_set_key(v, i, ...) as the answers come
 *   dkim_verify_eof(v);                   the final dot (a header block that
 *                                         never ended is complete now: look
 *                                         its keys up if not done yet)
 *   dkim_verify_finish(v, &res);          once the keys are set (a key never
 *                                         set counts as a temporary failure)
 *   dkim_verify_free(v);
 *
 * Bytes are dot-unstuffed on the fly (dkim/canon.h); the header block is
 * kept until its empty line (at most DKIM_HEADER_MAX bytes), then split;
 * the DKIM-Signature fields are parsed (dkim/tags.h) and the hash of each
 * signature's header data is computed at once, so the block is freed; the
 * body is canonicalized and hashed in the chunks it arrives in, once per
 * distinct (body canonicalization, l=) among the signatures.  At most
 * max_sigs DKIM-Signature fields are verified (the first ones; the rest
 * are counted and ignored), so the key lookups and the RSA work per
 * message are bounded.  At the end only the signature checks remain:
 * one RSA or Ed25519 verification per signature, with keys parsed once per
 * reactor (dkim/pubkey.h).
 *
 * A verifier is used by one thread.  A struct dkim_verify_lib holds the
 * reactor's key cache; make one per reactor.
 */
#ifndef ORTOO_DKIM_VERIFY_H
#define ORTOO_DKIM_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dkim/header.h"

#define DKIM_VERIFY_SIGS_MAX 16     /* the largest max_sigs */
#define DKIM_VERIFY_FROM_MAX 4      /* distinct From domains told apart */

struct dkim_verify_lib;
struct dkim_verifier;

/* One signature's result (RFC 8601 2.7.1). */
enum dkim_vstatus {
    DKIM_V_PASS = 0,
    DKIM_V_FAIL,                /* the signature or the body hash does not match */
    DKIM_V_NEUTRAL,             /* unusable signature (syntax, expired, ...) */
    DKIM_V_POLICY,              /* usable but not acceptable (key too small, ...) */
    DKIM_V_TEMPERROR,           /* the key could not be fetched now */
    DKIM_V_PERMERROR,           /* no key, or a broken key record */
};

/* What the caller found for a key name. */
enum dkim_key_status {
    DKIM_KEY_PENDING = 0,       /* not looked up (yet) */
    DKIM_KEY_FOUND,             /* the TXT record given */
    DKIM_KEY_NONE,              /* NXDOMAIN, no TXT: no key */
    DKIM_KEY_TEMPFAIL,          /* SERVFAIL, timeout, DNSSEC bogus */
};

/* The From field(s), as DMARC (RFC 7489 6.6.1) needs them. */
enum dkim_from_status {
    DKIM_FROM_ONE = 0,          /* one author domain (one or more mailboxes) */
    DKIM_FROM_NONE,             /* no From field, or no header block */
    DKIM_FROM_MANY,             /* several From fields or domains */
    DKIM_FROM_BAD,              /* a From field without a usable domain */
};

struct dkim_verify_sig {
    enum dkim_vstatus status;
    char domain[DKIM_DOMAIN_MAX + 1];   /* d=, lower case */
    char selector[DKIM_DOMAIN_MAX + 1]; /* s= */
    char b[16];                 /* the start of b= (header.b, RFC 6008) */
    const char *algo;           /* "rsa-sha256", "ed25519-sha256", "rsa-sha1"
                                   (static), or NULL: a= missing or unknown */
    const char *why;            /* the reason (static), or NULL; for a pass,
                                   a caveat (t=y, l= shorter than the body) */
    bool testing;               /* the key says t=y (RFC 6376 3.6.1) */
    bool has_l;                 /* the signature has l= (RFC 6376 3.5) */
    uint64_t l;                 /* its value */
    uint64_t body_len;          /* the canonical body's length (with l=) */
};

struct dkim_verify_result {
    unsigned nsigs;             /* signatures verified (<= max_sigs) */
    unsigned ignored;           /* signatures past max_sigs */
    const char *error;          /* message-level failure (static) or NULL */
    struct dkim_verify_sig sigs[DKIM_VERIFY_SIGS_MAX];
};

/* A reactor's verification context (its public key cache).  NULL with
 * err. */
struct dkim_verify_lib *dkim_verify_lib_new(char *err, size_t errlen);
void dkim_verify_lib_free(struct dkim_verify_lib *lib);

/* The key cache's counters (dkim/pubkey.h). */
struct dkim_pubkey_stats;
void dkim_verify_lib_stats(const struct dkim_verify_lib *lib, struct dkim_pubkey_stats *out);

/*
 * A verifier for one message.  max_sigs: 1..DKIM_VERIFY_SIGS_MAX (clamped).
 * authserv_id: our name in Authentication-Results (copied), for
 * dkim_verify_foreign_ar().  NULL on ENOMEM.  Never blocks.
 */
struct dkim_verifier *dkim_verify_open(struct dkim_verify_lib *lib, unsigned max_sigs,
                                       const char *authserv_id);

/* Message bytes in stored wire form (borrowed).  Never fails: a problem
 * is remembered and reported by dkim_verify_finish. */
void dkim_verify_feed(struct dkim_verifier *v, const char *data, size_t len);

/* No more bytes will come (the final dot): a header block that never
 * ended is taken as complete (a message without a body), so that the key
 * names and the From facts are known before dkim_verify_finish(). */
void dkim_verify_eof(struct dkim_verifier *v);

/* The header block has ended (or was too large): the facts below and the
 * key names are known. */
bool dkim_verify_header_done(const struct dkim_verifier *v);

/* Key names to look up (TXT), "selector._domainkey.domain", distinct.
 * Borrowed from v.  0 before the header block is done. */
unsigned dkim_verify_nkeys(const struct dkim_verifier *v);
const char *dkim_verify_key_name(const struct dkim_verifier *v, unsigned i);

/*
 * What the lookup of key name i gave.  For DKIM_KEY_FOUND, txt[0..len) is
 * the TXT record (strings joined), copied, and ttl its DNS TTL in seconds
 * (how long the parsed key may stay in the reactor's cache).  Several TXT
 * records: pass the one to use (RFC 6376 3.6.2.2 leaves the choice to the
 * verifier).
 */
void dkim_verify_set_key(struct dkim_verifier *v, unsigned i, enum dkim_key_status st,
                         const char *txt, size_t len, uint32_t ttl);

/* The From domains: *domain is the single author domain for
 * DKIM_FROM_ONE (borrowed from v), else "". */
enum dkim_from_status dkim_verify_from(const struct dkim_verifier *v, const char **domain);

/* Authentication-Results fields in the message whose authserv-id is ours
 * (RFC 8601 5: forged, or from a loop). */
unsigned dkim_verify_foreign_ar(const struct dkim_verifier *v);

/*
 * The message is complete: verify, on the caller's thread.  The body and
 * header hashes are done by now; what remains is one signature check per
 * signature (RSA-2048 ~20 us, Ed25519 ~50 us here), plus parsing a key
 * the reactor's cache does not hold yet (an RSA key costs several RSA
 * verifications to decode under OpenSSL 3.0).  Fills *res.  Call once.
 * Returns 0, or -ENOMEM.
 */
int dkim_verify_finish(struct dkim_verifier *v, struct dkim_verify_result *res);

void dkim_verify_free(struct dkim_verifier *v);

/* "pass", "fail", "neutral", "policy", "temperror", "permerror". */
const char *dkim_vstatus_name(enum dkim_vstatus s);

#endif
