/* SPDX-License-Identifier: MIT */
/*
 * pubkey.h - DKIM public keys as the verifier uses them: the key record
 * (RFC 6376 3.6.1) parsed once into an OpenSSL EVP_PKEY with a verify
 * context ready (RSA) or the raw 32 bytes (Ed25519, RFC 8463), kept in a
 * per-reactor cache, and the signature check on a precomputed hash.
 *
 * Why a cache: decoding an RSA SubjectPublicKeyInfo under OpenSSL 3.0
 * builds a decoder chain per call and costs several times the RSA
 * verification itself (it was three quarters of inbound DKIM's CPU through
 * libopendkim).  Entries are keyed by the key name, selector._domainkey.
 * domain, and the exact record text, so an entry can never give a key that
 * DNS no longer publishes: a changed record is a different entry.  The
 * cache is bounded (max entries, least recently used evicted first) and
 * entries expire with the DNS TTL of the answer that brought them (an
 * expired entry that is asked for with the same text again is refreshed;
 * expired entries at the cold end are dropped when new ones come).
 *
 * A cache belongs to one thread (one per reactor): no locks.  Entries are
 * returned borrowed, valid until the next dkim_pubkey_get() on the same
 * cache (which may evict) or its free.
 */
#ifndef ORTOO_DKIM_PUBKEY_H
#define ORTOO_DKIM_PUBKEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dkim/tags.h"

#define DKIM_PUBKEY_CACHE_MAX 1024   /* default entries per reactor */
#define DKIM_PUBKEY_TTL_MAX 86400    /* longest time an entry is kept (s) */
#define DKIM_PUBKEY_RSA_MIN 1024     /* shorter RSA keys are refused (RFC 8301 3.2) */
#define DKIM_PUBKEY_RSA_MAX 8192     /* longer ones too (CPU bound) */

/* What the record gave. */
enum dkim_pubkey_status {
    DKIM_PUBKEY_OK = 0,
    DKIM_PUBKEY_PERMERROR,           /* no usable key: syntax, revoked, undecodable */
    DKIM_PUBKEY_POLICY,              /* a key we do not accept (size) */
};

struct evp_pkey_st;
struct evp_pkey_ctx_st;

/*
 * A parsed key.  The public fields are read-only for users; rec.p points
 * into the entry's own copy of the record.  Invariants: status == OK
 * implies pkey and ctx are set for RSA, ed is the key for Ed25519.
 */
struct dkim_pubkey {
    enum dkim_pubkey_status status;
    const char *why;                 /* static reason when not OK */
    struct dkim_keyrec rec;          /* k=, h=, s=, t= */
    unsigned bits;                   /* RSA modulus bits; 256 for Ed25519 */
    struct evp_pkey_st *pkey;        /* RSA (owned) */
    struct evp_pkey_ctx_st *ctx;     /* RSA verify context: PKCS#1 v1.5, SHA-256 */
    unsigned char ed[32];            /* Ed25519 */

    /* the cache's own */
    struct dkim_pubkey *hnext;       /* bucket chain */
    struct dkim_pubkey *prev, *next; /* LRU list, most recent first */
    uint64_t hash;
    uint64_t expires_ms;
    char *name;                      /* points into the allocation */
    char *txt;
    size_t txt_len;
};

struct dkim_pubkey_cache;

/* A cache of at most max entries (0: DKIM_PUBKEY_CACHE_MAX).  NULL on
 * ENOMEM. */
struct dkim_pubkey_cache *dkim_pubkey_cache_new(unsigned max);
void dkim_pubkey_cache_free(struct dkim_pubkey_cache *c);

/*
 * The key for name (lower case) published as txt[0..len): from the cache,
 * or parsed now and cached for ttl seconds (capped at DKIM_PUBKEY_TTL_MAX)
 * from now_ms (a monotonic clock in milliseconds).  A record that gives no
 * usable key is cached the same way (status says why).  Returns a borrowed
 * entry (see above), or NULL on ENOMEM.  Never blocks.
 */
const struct dkim_pubkey *dkim_pubkey_get(struct dkim_pubkey_cache *c, const char *name,
                                          const char *txt, size_t len, uint32_t ttl,
                                          uint64_t now_ms);

/* Parsing without a cache (tests, tools): fills *k; release with
 * dkim_pubkey_clear().  Returns 0, or -ENOMEM. */
int dkim_pubkey_parse(struct dkim_pubkey *k, const char *txt, size_t len);
void dkim_pubkey_clear(struct dkim_pubkey *k);

/*
 * Check sig[0..len) over the 32-byte SHA-256 hash of the signed header
 * data: RSASSA-PKCS1-v1_5 with SHA-256 (RFC 6376 3.3.1), or Ed25519 over
 * the hash itself (RFC 8463 3).  k must be OK.  Returns true when the
 * signature is valid.  Leaves OpenSSL's error queue as it found it.
 */
bool dkim_pubkey_verify(const struct dkim_pubkey *k, const unsigned char hash[32],
                        const unsigned char *sig, size_t len);

/* Counters since the cache was made. */
struct dkim_pubkey_stats {
    uint64_t hits, misses, evictions;
    unsigned entries;
};
void dkim_pubkey_cache_stats(const struct dkim_pubkey_cache *c, struct dkim_pubkey_stats *out);

#endif
