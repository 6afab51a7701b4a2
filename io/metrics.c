/* SPDX-License-Identifier: MIT */
/*
 * metrics.c - per-thread counter blocks and their registry (see metrics.h).
 *
 * The registry is a list of every block ever made, under one mutex that is
 * taken only when a thread attaches or exits and when a scrape sums.  A
 * thread finds its block through a thread-local pointer; a pthread key's
 * destructor marks the block free when the thread exits, and the next
 * thread to attach takes a free block before making a new one, so blocks
 * are never freed and their counts never lost.
 */
#include "io/metrics.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

_Thread_local struct metrics_block *metrics_self;

/* A block in the registry.  Invariant: in_use iff a live thread has it as
 * metrics_self; cells may only be written by that thread. */
struct metrics_slot {
    struct metrics_block b;        /* first: the slot is the block */
    struct metrics_slot *next;     /* registry list */
    bool in_use;
};

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct metrics_slot *reg_head;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static pthread_key_t slot_key;
static bool key_ok;
/* When a block cannot be allocated: shared, so counts from such threads may
 * be lost to races (never torn: the cells are atomic). */
static struct metrics_slot spare;

static void on_thread_exit(void *arg)
{
    struct metrics_slot *s = arg;
    /* Counts made by later destructors of this thread go to the spare. */
    metrics_self = &spare.b;
    pthread_mutex_lock(&reg_lock);
    s->in_use = false;
    pthread_mutex_unlock(&reg_lock);
}

static void key_make(void)
{
    key_ok = pthread_key_create(&slot_key, on_thread_exit) == 0;
}

struct metrics_block *metrics_attach(void)
{
    struct metrics_slot *s;

    if (metrics_self != NULL)
        return metrics_self;
    pthread_once(&key_once, key_make);
    pthread_mutex_lock(&reg_lock);
    for (s = reg_head; s != NULL; s = s->next)
        if (!s->in_use)
            break;
    if (s == NULL) {
        /* Whole cache lines: no two threads' cells share one. */
        size_t size = (sizeof(*s) + 63) & ~(size_t)63;
        s = aligned_alloc(64, size);
        if (s != NULL) {
            memset(s, 0, size);
            s->next = reg_head;
            reg_head = s;
        }
    }
    if (s != NULL)
        s->in_use = true;
    pthread_mutex_unlock(&reg_lock);
    if (s == NULL) {
        metrics_self = &spare.b;
        return metrics_self;
    }
    if (key_ok)
        pthread_setspecific(slot_key, s);
    metrics_self = &s->b;
    return metrics_self;
}

void metrics_sum(uint64_t *out)
{
    memset(out, 0, METRICS_NCELLS * sizeof(*out));
    pthread_mutex_lock(&reg_lock);
    for (struct metrics_slot *s = reg_head; s != NULL; s = s->next)
        for (size_t i = 0; i < METRICS_NCELLS; i++)
            out[i] += atomic_load_explicit(&s->b.c[i], memory_order_relaxed);
    pthread_mutex_unlock(&reg_lock);
    for (size_t i = 0; i < METRICS_NCELLS; i++)
        out[i] += atomic_load_explicit(&spare.b.c[i], memory_order_relaxed);
}

/* ---- histograms ---- */

/* Entries per batch: powers of two. */
static const uint64_t entries_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
/* Sync latency: 50 us to 2.5 s (a disk's fdatasync is 0.05-20 ms; a
 * saturated one, much more). */
static const uint64_t sync_bounds[] = {
    50000,    100000,    250000,    500000,    1000000,    2500000,
    5000000,  10000000,  25000000,  50000000,  100000000,  250000000,
    500000000, 1000000000, 2500000000,
};
_Static_assert(sizeof(sync_bounds) / sizeof(sync_bounds[0]) <= METRICS_HIST_MAX_BOUNDS,
               "sync_bounds");
_Static_assert(sizeof(entries_bounds) / sizeof(entries_bounds[0]) <= METRICS_HIST_MAX_BOUNDS,
               "entries_bounds");

const uint64_t *metrics_hist_bounds(enum metrics_hist h, size_t *n)
{
    if (h == METRICS_H_SPOOL_ENTRIES || h == METRICS_H_SPOOL_ENTRIES + 1) {
        *n = sizeof(entries_bounds) / sizeof(entries_bounds[0]);
        return entries_bounds;
    }
    *n = sizeof(sync_bounds) / sizeof(sync_bounds[0]);
    return sync_bounds;
}

void metrics_observe(enum metrics_hist h, uint64_t v)
{
    size_t n, i;
    const uint64_t *b = metrics_hist_bounds(h, &n);

    for (i = 0; i < n && v > b[i]; i++)
        ;
    metrics_inc(metrics_hist_cell(h, i));
    metrics_add(metrics_hist_sum_cell(h), v);
}

/* ---- helpers ---- */

void metrics_received(uint64_t nrcpts, uint64_t bytes)
{
    metrics_inc(METRICS_MSG_RECEIVED);
    metrics_add(METRICS_MSG_RECEIVED_RCPTS, nrcpts);
    metrics_add(METRICS_MSG_RECEIVED_BYTES, bytes);
}

static const char *const reject_names[METRICS_REJECT_N] = {
    [METRICS_REJECT_EARLY_TALKER] = "early-talker",
    [METRICS_REJECT_NO_SUCH_USER] = "no-such-user",
    [METRICS_REJECT_RELAY_DENIED] = "relay-denied",
    [METRICS_REJECT_BARE_LF_OR_CR] = "bare-lf-or-cr",
    [METRICS_REJECT_TOO_BIG] = "too-big",
    [METRICS_REJECT_LINE_TOO_LONG] = "line-too-long",
    [METRICS_REJECT_TOO_MANY_HOPS] = "too-many-hops",
    [METRICS_REJECT_BODY_MEMORY] = "body-memory",
    [METRICS_REJECT_BAD_SRS] = "bad-srs",
    [METRICS_REJECT_SPF] = "spf",
    [METRICS_REJECT_DMARC] = "dmarc",
    [METRICS_REJECT_DMARC_TEMPFAIL] = "dmarc-tempfail",
    [METRICS_REJECT_DMARC_FROM] = "dmarc-several-from",
    [METRICS_REJECT_OTHER] = "other",
};

const char *metrics_reject_name(enum metrics_reject r)
{
    return (unsigned)r < METRICS_REJECT_N ? reject_names[r] : NULL;
}

enum metrics_reject metrics_reject_of(const char *reason)
{
    if (reason != NULL)
        for (unsigned i = 0; i < METRICS_REJECT_OTHER; i++)
            if (strcmp(reason, reject_names[i]) == 0)
                return (enum metrics_reject)i;
    return METRICS_REJECT_OTHER;
}

void metrics_rejected(const char *reason)
{
    metrics_inc(METRICS_MSG_REJECTED + metrics_reject_of(reason));
}

static const char *const dclass_names[METRICS_DCLASS_N] = {
    [METRICS_DCLASS_4XX] = "4xx",         [METRICS_DCLASS_5XX] = "5xx",
    [METRICS_DCLASS_CONNECT] = "connect", [METRICS_DCLASS_TLS] = "tls",
    [METRICS_DCLASS_DNS] = "dns",         [METRICS_DCLASS_PROTOCOL] = "protocol",
    [METRICS_DCLASS_EXPIRED] = "expired", [METRICS_DCLASS_LOCAL] = "local",
};

const char *metrics_dclass_name(enum metrics_dclass c)
{
    return (unsigned)c < METRICS_DCLASS_N ? dclass_names[c] : NULL;
}

enum metrics_dclass metrics_dclass_of(int code, const char *stage)
{
    if (code >= 400 && code <= 499)
        return METRICS_DCLASS_4XX;
    if (code >= 500 && code <= 599)
        return METRICS_DCLASS_5XX;
    if (stage == NULL || stage[0] == '\0' || strcmp(stage, "none") == 0)
        return METRICS_DCLASS_LOCAL;
    if (strcmp(stage, "connect") == 0 || strcmp(stage, "greeting") == 0)
        return METRICS_DCLASS_CONNECT;
    if (strcmp(stage, "starttls") == 0 || strcmp(stage, "tls") == 0 ||
        strcmp(stage, "tls-verify") == 0)
        return METRICS_DCLASS_TLS;
    return METRICS_DCLASS_PROTOCOL;
}

void metrics_delivered(void)
{
    metrics_inc(METRICS_DELIVERED);
}

void metrics_deferred(enum metrics_dclass c)
{
    metrics_inc(METRICS_DEFERRED + ((unsigned)c < METRICS_DCLASS_N ? c : METRICS_DCLASS_LOCAL));
}

void metrics_bounced(enum metrics_dclass c)
{
    metrics_inc(METRICS_BOUNCED + ((unsigned)c < METRICS_DCLASS_N ? c : METRICS_DCLASS_LOCAL));
}

void metrics_tls_handshake(bool client, bool ok, bool resumed)
{
    unsigned i = !ok ? 2 : resumed ? 1 : 0;
    metrics_inc(METRICS_TLS_HANDSHAKES + (client ? 3 : 0) + i);
}

void metrics_spool_batch(bool segment, size_t entries, uint64_t bytes, uint64_t ns, int err)
{
    unsigned f = segment ? 0 : 1;
    if (err != 0) {
        metrics_inc(METRICS_SPOOL_ERRORS + f);
        return;
    }
    metrics_add(METRICS_SPOOL_BYTES + f, bytes);
    metrics_observe(METRICS_H_SPOOL_ENTRIES + f, entries);
    metrics_observe(METRICS_H_SPOOL_SYNC + f, ns);
}
