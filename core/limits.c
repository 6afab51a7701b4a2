/* SPDX-License-Identifier: MIT */
/*
 * limits.c - connection counts per client prefix and in total, and the
 * body-memory budget, shared by every reactor (see limits.h).
 *
 * The per-prefix counts live in a chained hash table whose buckets are
 * guarded by LIMITS_STRIPES mutexes (bucket index modulo the stripe count),
 * so two reactors accepting from different clients rarely meet on a lock,
 * and the lock is held for a few loads and stores only, once per accept and
 * once per close.  The hash is SipHash (libsodium crypto_shorthash) under a
 * per-process random key, so a client cannot choose addresses that pile up
 * in one chain.  An entry exists only while its count is above zero, so the
 * table holds at most max_connections entries.
 *
 * The total and the body budget are plain atomics.  A lock-free hash table
 * would save the mutex but not a cache-line transfer, and connection
 * accounting is nowhere near the per-byte hot path.
 */
#include "core/limits.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIMITS_STRIPES 64
#define LIMITS_BUCKETS_MIN 1024u
#define LIMITS_BUCKETS_MAX (1u << 20)

/* One client prefix with live connections.  Invariant: count > 0. */
struct limits_entry {
    struct limits_key key;
    unsigned count;                /* connections counted from this prefix */
    struct limits_entry *next;     /* chain of its bucket */
};

/*
 * Invariants: bucket b is read and written only under stripes[b %
 * LIMITS_STRIPES]; total <= params.max_connections except transiently
 * inside limits_conn_acquire; body_used <= params.body_memory.
 */
struct limits {
    struct limits_params params;
    unsigned char hash_key[crypto_shorthash_KEYBYTES];
    size_t nbuckets;                       /* power of two */
    struct limits_entry **buckets;
    pthread_mutex_t stripes[LIMITS_STRIPES];
    atomic_uint total;                     /* connections counted */
    _Atomic uint64_t body_used;            /* bytes charged */
};

struct limits *limits_new(const struct limits_params *p)
{
    if (sodium_init() < 0)
        return NULL;
    struct limits *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    l->params = *p;
    size_t n = LIMITS_BUCKETS_MIN;
    while (n < LIMITS_BUCKETS_MAX && n < 2 * (size_t)p->max_connections)
        n *= 2;
    l->nbuckets = n;
    l->buckets = calloc(n, sizeof(*l->buckets));
    if (l->buckets == NULL) {
        free(l);
        return NULL;
    }
    for (size_t i = 0; i < LIMITS_STRIPES; i++)
        pthread_mutex_init(&l->stripes[i], NULL);
    randombytes_buf(l->hash_key, sizeof(l->hash_key));
    atomic_init(&l->total, 0);
    atomic_init(&l->body_used, 0);
    return l;
}

void limits_free(struct limits *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->nbuckets; i++) {
        struct limits_entry *e = l->buckets[i];
        while (e != NULL) {
            struct limits_entry *next = e->next;
            free(e);
            e = next;
        }
    }
    for (size_t i = 0; i < LIMITS_STRIPES; i++)
        pthread_mutex_destroy(&l->stripes[i]);
    free(l->buckets);
    free(l);
}

/* Clear the bits of addr (len bytes) past plen. */
static void mask_prefix(uint8_t *addr, size_t len, unsigned plen)
{
    for (size_t i = 0; i < len; i++) {
        unsigned bits = i * 8 >= plen ? 0 : plen - i * 8;
        if (bits < 8)
            addr[i] &= (uint8_t)(0xFF00u >> bits);
    }
}

void limits_key_of(const struct limits *l, const struct sockaddr_storage *peer,
                   struct limits_key *out)
{
    memset(out, 0, sizeof(*out));
    if (peer->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)peer;
        if (IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr)) {
            out->family = AF_INET;
            memcpy(out->addr, &a6->sin6_addr.s6_addr[12], 4);
        } else {
            out->family = AF_INET6;
            memcpy(out->addr, &a6->sin6_addr, 16);
        }
    } else if (peer->ss_family == AF_INET) {
        const struct sockaddr_in *a4 = (const struct sockaddr_in *)peer;
        out->family = AF_INET;
        memcpy(out->addr, &a4->sin_addr, 4);
    }
    if (out->family == AF_INET) {
        out->plen = (uint8_t)l->params.ipv4_prefix;
        mask_prefix(out->addr, 4, out->plen);
    } else if (out->family == AF_INET6) {
        out->plen = (uint8_t)l->params.ipv6_prefix;
        mask_prefix(out->addr, 16, out->plen);
    }
}

const char *limits_key_text(const struct limits_key *k, char *buf, size_t cap)
{
    char ip[INET6_ADDRSTRLEN] = "unknown";
    if (k->family == AF_INET || k->family == AF_INET6)
        inet_ntop(k->family, k->addr, ip, sizeof(ip));
    snprintf(buf, cap, "%s/%u", ip, k->plen);
    return buf;
}

static size_t key_bucket(const struct limits *l, const struct limits_key *k)
{
    unsigned char h[crypto_shorthash_BYTES];
    uint64_t v;
    crypto_shorthash(h, (const unsigned char *)k, sizeof(*k), l->hash_key);
    memcpy(&v, h, sizeof(v));
    return (size_t)v & (l->nbuckets - 1);
}

enum limits_verdict limits_conn_acquire(struct limits *l, const struct limits_key *k)
{
    unsigned prev = atomic_fetch_add(&l->total, 1);
    if (prev >= l->params.max_connections) {
        atomic_fetch_sub(&l->total, 1);
        return LIMITS_TOTAL;
    }
    size_t b = key_bucket(l, k);
    pthread_mutex_t *mu = &l->stripes[b % LIMITS_STRIPES];
    enum limits_verdict v = LIMITS_OK;
    pthread_mutex_lock(mu);
    struct limits_entry *e = l->buckets[b];
    while (e != NULL && memcmp(&e->key, k, sizeof(*k)) != 0)
        e = e->next;
    if (e == NULL) {
        e = malloc(sizeof(*e));
        if (e == NULL) {
            v = LIMITS_NOMEM;
        } else {
            e->key = *k;
            e->count = 1;
            e->next = l->buckets[b];
            l->buckets[b] = e;
        }
    } else if (e->count >= l->params.per_address) {
        v = LIMITS_PER_ADDRESS;
    } else {
        e->count++;
    }
    pthread_mutex_unlock(mu);
    if (v != LIMITS_OK)
        atomic_fetch_sub(&l->total, 1);
    return v;
}

void limits_conn_release(struct limits *l, const struct limits_key *k)
{
    size_t b = key_bucket(l, k);
    pthread_mutex_t *mu = &l->stripes[b % LIMITS_STRIPES];
    pthread_mutex_lock(mu);
    struct limits_entry **pp = &l->buckets[b];
    while (*pp != NULL && memcmp(&(*pp)->key, k, sizeof(*k)) != 0)
        pp = &(*pp)->next;
    struct limits_entry *e = *pp;
    if (e != NULL && --e->count == 0) {
        *pp = e->next;
        free(e);
    }
    pthread_mutex_unlock(mu);
    if (e != NULL)
        atomic_fetch_sub(&l->total, 1);
}

unsigned limits_conn_total(const struct limits *l)
{
    return atomic_load(&l->total);
}

bool limits_body_charge(struct limits *l, uint64_t n)
{
    uint64_t used = atomic_load_explicit(&l->body_used, memory_order_relaxed);
    do {
        if (n > l->params.body_memory || used > l->params.body_memory - n)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(&l->body_used, &used, used + n,
                                                    memory_order_relaxed,
                                                    memory_order_relaxed));
    return true;
}

void limits_body_uncharge(struct limits *l, uint64_t n)
{
    atomic_fetch_sub_explicit(&l->body_used, n, memory_order_relaxed);
}

uint64_t limits_body_free(const struct limits *l)
{
    uint64_t used = atomic_load_explicit(&((struct limits *)l)->body_used, memory_order_relaxed);
    return used >= l->params.body_memory ? 0 : l->params.body_memory - used;
}
