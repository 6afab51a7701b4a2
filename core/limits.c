/* SPDX-License-Identifier: MIT */
/*
 * limits.c - connection counts per client prefix and in total, the
 * body-memory budget, the penalty box and the sending rates, shared by
 * every reactor (see limits.h).
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
 *
 * The penalty box and the rates are two fixed tables of the same shape
 * (struct limits_table): sets of LIMITS_WAYS slots, a key's set chosen by
 * the same keyed hash, each set guarded by one of the table's stripes.  An
 * entry carries the moment from which it means nothing any more (`forget`:
 * a box remembered past its end, a rate whose budget is whole again); a
 * new key takes such a slot, or else the one whose `until` comes first.
 * Nothing is allocated after limits_new(), so their memory is fixed
 * whatever the number of prefixes an attacker uses.
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
#define LIMITS_WAYS 8                  /* slots per set of a limits_table */
#define LIMITS_SLOTS_DEFAULT 4096u
#define LIMITS_SLOTS_MAX (1u << 24)
#define LIMITS_LEVEL_MAX 62            /* doublings counted (time_ns << 62 saturates) */
#define NS_PER_HOUR 3600000000000ull

/* One client prefix with live connections.  Invariant: count > 0. */
struct limits_entry {
    struct limits_key key;
    unsigned count;                /* connections counted from this prefix */
    struct limits_entry *next;     /* chain of its bucket */
};

/* One entry of a limits_table.  Empty when !used; an entry whose forget
 * has passed is as good as empty. */
struct limits_slot {
    struct limits_key key;
    bool used;
    uint8_t level;                 /* box: doublings of its last box */
    uint64_t until;                /* box: when it ends; rate: GCRA's theoretical
                                      arrival time (budget whole when <= now) */
    uint64_t forget;               /* the entry means nothing from then on */
};

/* A fixed set-associative table.  Invariant: the slots of set i are read
 * and written only under stripes[i % LIMITS_STRIPES]. */
struct limits_table {
    struct limits_slot *slots;     /* nsets * LIMITS_WAYS */
    size_t nsets;                  /* power of two */
    pthread_mutex_t stripes[LIMITS_STRIPES];
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
    struct limits_table box;               /* the penalty box, by prefix */
    struct limits_table rate;              /* sending rates, by account or prefix */
};

/* Allocate t with at least want slots (0: the default), in whole sets. */
static int table_init(struct limits_table *t, unsigned want)
{
    size_t slots = want ? want : LIMITS_SLOTS_DEFAULT;
    if (slots > LIMITS_SLOTS_MAX)
        slots = LIMITS_SLOTS_MAX;
    size_t sets = 1;
    while (sets * LIMITS_WAYS < slots)
        sets *= 2;
    t->nsets = sets;
    t->slots = calloc(sets * LIMITS_WAYS, sizeof(*t->slots));
    if (t->slots == NULL)
        return -1;
    for (size_t i = 0; i < LIMITS_STRIPES; i++)
        pthread_mutex_init(&t->stripes[i], NULL);
    return 0;
}

static void table_free(struct limits_table *t)
{
    if (t->slots == NULL)
        return;
    for (size_t i = 0; i < LIMITS_STRIPES; i++)
        pthread_mutex_destroy(&t->stripes[i]);
    free(t->slots);
    t->slots = NULL;
}

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
    if (l->buckets == NULL || table_init(&l->box, p->box_slots) < 0 ||
        table_init(&l->rate, p->rate_slots) < 0) {
        table_free(&l->box);
        free(l->buckets);
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
    table_free(&l->box);
    table_free(&l->rate);
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

static uint64_t key_hash(const struct limits *l, const struct limits_key *k)
{
    unsigned char h[crypto_shorthash_BYTES];
    uint64_t v;
    crypto_shorthash(h, (const unsigned char *)k, sizeof(*k), l->hash_key);
    memcpy(&v, h, sizeof(v));
    return v;
}

static size_t key_bucket(const struct limits *l, const struct limits_key *k)
{
    return (size_t)key_hash(l, k) & (l->nbuckets - 1);
}

void limits_key_account(const struct limits *l, const char *name, size_t len,
                        struct limits_key *out)
{
    memset(out, 0, sizeof(*out));
    out->family = LIMITS_KEY_ACCOUNT;
    crypto_generichash(out->addr, sizeof(out->addr), (const unsigned char *)name, len,
                       l->hash_key, sizeof(l->hash_key));
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

/* ---- the fixed tables: penalty box and rates ---- */

/* Lock k's set of t; returns the set's first slot (unlock with set_unlock). */
static struct limits_slot *set_lock(struct limits *l, struct limits_table *t,
                                    const struct limits_key *k, pthread_mutex_t **mu)
{
    size_t set = (size_t)key_hash(l, k) & (t->nsets - 1);
    *mu = &t->stripes[set % LIMITS_STRIPES];
    pthread_mutex_lock(*mu);
    return &t->slots[set * LIMITS_WAYS];
}

/* k's slot in the locked set, or NULL. */
static struct limits_slot *set_find(struct limits_slot *set, const struct limits_key *k)
{
    for (size_t i = 0; i < LIMITS_WAYS; i++)
        if (set[i].used && memcmp(&set[i].key, k, sizeof(*k)) == 0)
            return &set[i];
    return NULL;
}

/* A slot for k in the locked set: an empty or forgotten one, else the one
 * whose `until` comes first (the box that ends first; the rate with the most
 * budget left).  Returned zeroed but for the key. */
static struct limits_slot *set_claim(struct limits_slot *set, const struct limits_key *k,
                                     uint64_t now)
{
    struct limits_slot *victim = &set[0];
    for (size_t i = 0; i < LIMITS_WAYS; i++) {
        struct limits_slot *s = &set[i];
        if (!s->used || s->forget <= now) {
            victim = s;
            break;
        }
        if (s->until < victim->until)
            victim = s;
    }
    memset(victim, 0, sizeof(*victim));
    victim->key = *k;
    victim->used = true;
    return victim;
}

uint64_t limits_box_left(struct limits *l, const struct limits_key *k, uint64_t now)
{
    pthread_mutex_t *mu;
    struct limits_slot *s = set_find(set_lock(l, &l->box, k, &mu), k);
    uint64_t left = s != NULL && s->until > now ? s->until - now : 0;
    pthread_mutex_unlock(mu);
    return left;
}

uint64_t limits_box_add(struct limits *l, const struct limits_key *k,
                        const struct limits_box_rule *rule, uint64_t now, unsigned *level)
{
    if (level != NULL)
        *level = 0;
    if (rule->time_ns == 0)
        return 0;
    uint64_t max = rule->max_ns > rule->time_ns ? rule->max_ns : rule->time_ns;
    pthread_mutex_t *mu;
    struct limits_slot *set = set_lock(l, &l->box, k, &mu);
    struct limits_slot *s = set_find(set, k);
    if (s != NULL && s->until > now) {
        pthread_mutex_unlock(mu); /* boxed already: a session from before the box */
        return 0;
    }
    unsigned lv = 0;
    if (s != NULL && rule->escalate && now < s->forget)
        lv = s->level < LIMITS_LEVEL_MAX ? s->level + 1u : LIMITS_LEVEL_MAX;
    if (s == NULL)
        s = set_claim(set, k, now);
    uint64_t box = rule->time_ns;
    for (unsigned i = 0; i < lv && box < max; i++)
        box = box > max / 2 ? max : box * 2;
    if (box > max)
        box = max;
    s->level = (uint8_t)lv;
    s->until = now + box;
    s->forget = s->until + max;
    pthread_mutex_unlock(mu);
    if (level != NULL)
        *level = lv;
    return box;
}

/* GCRA: a message is due every hour/per_hour; per_hour - 1 of them may come
 * early (the burst).  Kept as the theoretical arrival time alone. */
bool limits_rate_take(struct limits *l, const struct limits_key *k, unsigned per_hour,
                      uint64_t now)
{
    if (per_hour == 0)
        return true;
    uint64_t step = NS_PER_HOUR / per_hour;
    uint64_t burst = (uint64_t)(per_hour - 1) * step;
    pthread_mutex_t *mu;
    struct limits_slot *set = set_lock(l, &l->rate, k, &mu);
    struct limits_slot *s = set_find(set, k);
    uint64_t tat = s != NULL && s->until > now ? s->until : now;
    if (tat - now > burst) {
        pthread_mutex_unlock(mu);
        return false;
    }
    if (s == NULL)
        s = set_claim(set, k, now);
    s->until = s->forget = tat + step;
    pthread_mutex_unlock(mu);
    return true;
}

void limits_rate_refund(struct limits *l, const struct limits_key *k, unsigned per_hour,
                        uint64_t now)
{
    if (per_hour == 0)
        return;
    uint64_t step = NS_PER_HOUR / per_hour;
    pthread_mutex_t *mu;
    struct limits_slot *s = set_find(set_lock(l, &l->rate, k, &mu), k);
    if (s != NULL) {
        if (s->until > now + step)
            s->until = s->forget = s->until - step;
        else
            s->used = false; /* the budget is whole again */
    }
    pthread_mutex_unlock(mu); /* evicted meanwhile: its count went with it */
}
