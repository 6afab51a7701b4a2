/* SPDX-License-Identifier: MIT */
/*
 * pubkey.c - parsed DKIM public keys and their per-reactor cache (see
 * pubkey.h).
 *
 * The cache is a hash table (SipHash of name and record, keyed at random
 * per cache, so a sender who controls selectors and records cannot make
 * one long chain) plus an LRU list.  Each entry is one allocation holding
 * the struct, the name and the record text.
 */
#include "dkim/pubkey.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <sodium.h>

#include "dkim/keys.h"

/*
 * Invariants: n entries, each in exactly one bucket chain and in the LRU
 * list (head most recently used); n <= max; nbuckets a power of two.
 */
struct dkim_pubkey_cache {
    struct dkim_pubkey **buckets;
    size_t nbuckets;
    struct dkim_pubkey *head, *tail;
    unsigned n, max;
    unsigned char key[crypto_shorthash_KEYBYTES];
    struct dkim_pubkey_stats stats;
};

/* ---- parsing ---- */

static void fail(struct dkim_pubkey *k, enum dkim_pubkey_status st, const char *why)
{
    k->status = st;
    k->why = why;
}

/* RSA: p= is a DER SubjectPublicKeyInfo (RFC 6376 3.6.1); a bare PKCS#1
 * RSAPublicKey, which some publish, is accepted too. */
static void rsa_load(struct dkim_pubkey *k, const unsigned char *der, size_t len)
{
    const unsigned char *p = der;
    EVP_PKEY *pkey = d2i_PUBKEY(NULL, &p, (long)len);
    if (pkey == NULL) {
        p = der;
        pkey = d2i_PublicKey(EVP_PKEY_RSA, NULL, &p, (long)len);
    }
    ERR_clear_error();
    if (pkey == NULL) {
        fail(k, DKIM_PUBKEY_PERMERROR, "key cannot be decoded (p=)");
        return;
    }
    k->pkey = pkey;
    if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA) {
        fail(k, DKIM_PUBKEY_PERMERROR, "not an RSA key (p=)");
        return;
    }
    int bits = EVP_PKEY_get_bits(pkey);
    k->bits = bits > 0 ? (unsigned)bits : 0;
    if (k->bits < DKIM_PUBKEY_RSA_MIN) {
        fail(k, DKIM_PUBKEY_POLICY, "RSA key shorter than 1024 bits (RFC 8301)");
        return;
    }
    if (k->bits > DKIM_PUBKEY_RSA_MAX) {
        fail(k, DKIM_PUBKEY_POLICY, "RSA key longer than 8192 bits");
        return;
    }
    /* The context is made once: per message only EVP_PKEY_verify runs. */
    k->ctx = EVP_PKEY_CTX_new(pkey, NULL);
    if (k->ctx == NULL || EVP_PKEY_verify_init(k->ctx) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(k->ctx, RSA_PKCS1_PADDING) != 1 ||
        EVP_PKEY_CTX_set_signature_md(k->ctx, dkim_sha256()) != 1) {
        ERR_clear_error();
        fail(k, DKIM_PUBKEY_PERMERROR, "key cannot be used");
    }
}

int dkim_pubkey_parse(struct dkim_pubkey *k, const char *txt, size_t len)
{
    const char *why;

    memset(k, 0, sizeof(*k));
    if (dkim_keyrec_parse(txt, len, &k->rec, &why) < 0) {
        fail(k, DKIM_PUBKEY_PERMERROR, why);
        return 0;
    }
    if (k->rec.p_len == 0) {
        fail(k, DKIM_PUBKEY_PERMERROR, "key revoked (empty p=)");
        return 0;
    }
    size_t cap = k->rec.p_len / 4 * 3 + 3;
    unsigned char *der = malloc(cap);
    if (der == NULL)
        return -ENOMEM;
    long n = dkim_b64_decode(k->rec.p, k->rec.p_len, der, cap);
    if (n <= 0) {
        fail(k, DKIM_PUBKEY_PERMERROR, "bad base64 in p=");
    } else if (k->rec.type == DKIM_KEYTYPE_ED25519) {
        /* RFC 8463 4.2: the raw 32-byte public key. */
        if (n != 32) {
            fail(k, DKIM_PUBKEY_PERMERROR, "Ed25519 key is not 32 bytes (p=)");
        } else {
            memcpy(k->ed, der, 32);
            k->bits = 256;
        }
    } else {
        rsa_load(k, der, (size_t)n);
    }
    free(der);
    return 0;
}

void dkim_pubkey_clear(struct dkim_pubkey *k)
{
    EVP_PKEY_CTX_free(k->ctx);
    EVP_PKEY_free(k->pkey);
    k->ctx = NULL;
    k->pkey = NULL;
}

bool dkim_pubkey_verify(const struct dkim_pubkey *k, const unsigned char hash[32],
                        const unsigned char *sig, size_t len)
{
    if (k->status != DKIM_PUBKEY_OK)
        return false;
    if (k->rec.type == DKIM_KEYTYPE_ED25519)
        return len == crypto_sign_BYTES &&
               crypto_sign_verify_detached(sig, hash, 32, k->ed) == 0;
    int rc = EVP_PKEY_verify(k->ctx, sig, len, hash, 32);
    if (rc != 1)
        ERR_clear_error(); /* the queue is the thread's: TLS reads it */
    return rc == 1;
}

/* ---- the cache ---- */

struct dkim_pubkey_cache *dkim_pubkey_cache_new(unsigned max)
{
    if (sodium_init() < 0)
        return NULL;
    struct dkim_pubkey_cache *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->max = max ? max : DKIM_PUBKEY_CACHE_MAX;
    c->nbuckets = 16;
    while (c->nbuckets < c->max)
        c->nbuckets *= 2;
    c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
    if (c->buckets == NULL) {
        free(c);
        return NULL;
    }
    crypto_shorthash_keygen(c->key);
    return c;
}

static void lru_unlink(struct dkim_pubkey_cache *c, struct dkim_pubkey *e)
{
    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push(struct dkim_pubkey_cache *c, struct dkim_pubkey *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head != NULL)
        c->head->prev = e;
    c->head = e;
    if (c->tail == NULL)
        c->tail = e;
}

static void entry_free(struct dkim_pubkey *e)
{
    dkim_pubkey_clear(e);
    free(e);
}

static void entry_drop(struct dkim_pubkey_cache *c, struct dkim_pubkey *e)
{
    struct dkim_pubkey **pp = &c->buckets[e->hash & (c->nbuckets - 1)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    lru_unlink(c, e);
    c->n--;
    c->stats.evictions++;
    entry_free(e);
}

void dkim_pubkey_cache_free(struct dkim_pubkey_cache *c)
{
    if (c == NULL)
        return;
    while (c->head != NULL) {
        struct dkim_pubkey *e = c->head;
        c->head = e->next;
        entry_free(e);
    }
    free(c->buckets);
    free(c);
}

static uint64_t entry_hash(const struct dkim_pubkey_cache *c, const char *name, const char *txt,
                           size_t len)
{
    uint64_t a, b;
    crypto_shorthash((unsigned char *)&a, (const unsigned char *)name, strlen(name), c->key);
    crypto_shorthash((unsigned char *)&b, (const unsigned char *)txt, len, c->key);
    return a ^ (b * 0x9e3779b97f4a7c15ull);
}

const struct dkim_pubkey *dkim_pubkey_get(struct dkim_pubkey_cache *c, const char *name,
                                          const char *txt, size_t len, uint32_t ttl,
                                          uint64_t now_ms)
{
    uint64_t h = entry_hash(c, name, txt, len);
    uint64_t expires = now_ms + (uint64_t)(ttl < DKIM_PUBKEY_TTL_MAX ? ttl : DKIM_PUBKEY_TTL_MAX) * 1000;
    struct dkim_pubkey **bucket = &c->buckets[h & (c->nbuckets - 1)];

    for (struct dkim_pubkey *e = *bucket; e != NULL; e = e->hnext) {
        if (e->hash != h || e->txt_len != len || strcmp(e->name, name) != 0 ||
            memcmp(e->txt, txt, len) != 0)
            continue;
        /* The same record again: DNS vouches for it anew, for ttl. */
        if (expires > e->expires_ms || e->expires_ms <= now_ms)
            e->expires_ms = expires;
        lru_unlink(c, e);
        lru_push(c, e);
        c->stats.hits++;
        return e;
    }
    c->stats.misses++;
    /* Room: expired entries at the cold end go, then the least recent. */
    while (c->tail != NULL && (c->n >= c->max || c->tail->expires_ms <= now_ms))
        entry_drop(c, c->tail);
    size_t nlen = strlen(name);
    struct dkim_pubkey *e = malloc(sizeof(*e) + nlen + 1 + len + 1);
    if (e == NULL)
        return NULL;
    char *name_copy = (char *)(e + 1), *txt_copy = name_copy + nlen + 1;
    memcpy(name_copy, name, nlen + 1);
    memcpy(txt_copy, txt, len);
    txt_copy[len] = '\0';
    if (dkim_pubkey_parse(e, txt_copy, len) < 0) {
        free(e);
        return NULL;
    }
    e->name = name_copy;
    e->txt = txt_copy;
    e->txt_len = len;
    e->hash = h;
    e->expires_ms = expires;
    e->hnext = *bucket;
    *bucket = e;
    lru_push(c, e);
    c->n++;
    return e;
}

void dkim_pubkey_cache_stats(const struct dkim_pubkey_cache *c, struct dkim_pubkey_stats *out)
{
    *out = c->stats;
    out->entries = c->n;
}
