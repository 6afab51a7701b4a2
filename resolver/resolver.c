/* SPDX-License-Identifier: MIT */
/*
 * resolver.c - the per-reactor resolver context: libunbound on the loop,
 * requests and their waits, shared queries, the answer cache and the
 * lookup deadline (see resolver.h for the contract).
 *
 * How a lookup flows.  A req waits for one answer per stage through a
 * struct res_wait: the wait is satisfied from the cache, or joins the query
 * already in flight for the same (type, name), or starts a new query.  A
 * query (struct res_query) is handed to libunbound with ub_resolve_async
 * (at most max_inflight at once; the rest wait in ctx->queued).  libunbound
 * resolves on its own thread and writes the result to a pipe; the loop polls
 * that pipe (ub_fd) and on_ub_readable runs ub_process, which calls
 * on_ub_result for each finished query: the result becomes an answer
 * (answer.c), goes into the cache, and every wait of the query moves to the
 * ready list.  drain() then completes the waits: a req whose stage is done
 * either starts its next stage (MX without an MX RRset: A and AAAA) or runs
 * its callback.  Waits made ready inside res_lookup (cache hits, failures
 * to start) are drained from a deferred op on a later turn, which keeps
 * callbacks out of the submit call.
 *
 * Why our own cache when libunbound has one: libunbound's cache lives on
 * its thread behind a pipe round trip (and its locks); ours answers the
 * common case - many messages to one domain - on the reactor, with no
 * syscall.  It is small, bounded (LRU), per context, lock-free.
 *
 * Why our own deadline: libunbound retries a silent server with backoff for
 * a long time; a mail session or a delivery attempt wants an answer in
 * bounded time.  One timer per context covers every query, since all
 * queries share one timeout and ctx->queries is in deadline order.
 */
#include "resolver/resolver.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unbound.h>
#include <unistd.h>

#include "io/log.h"
#include "io/metrics.h"
#include "resolver/res_internal.h"

#define DNS_CLASS_IN 1
#define QUERY_BUCKETS 1024 /* power of two */

enum { WAIT_IDLE = 0, WAIT_QUERY, WAIT_READY };
enum { REQ_PLAIN = 0, REQ_MX, REQ_MX_ADDR };
enum { Q_QUEUED = 0, Q_SENDING, Q_SENT };

#define container_of(p, type, member) ((type *)((char *)(p) - offsetof(type, member)))

/* One cached answer.  Invariant: in exactly one hash chain and the LRU. */
struct cache_ent {
    struct cache_ent *hnext;        /* hash chain */
    struct res_link lru;            /* ctx->lru, most recently used first */
    uint32_t hash;
    uint64_t expires_ns;            /* loop clock */
    const struct res_answer *ans;   /* one reference */
};

/*
 * One DNS question in flight.  Invariants: in ctx's hash and ctx->queries
 * from creation to completion; in ctx->queued exactly in state Q_QUEUED,
 * counted in ctx->inflight exactly in Q_SENT; freed when completed (answer,
 * deadline, failure to send) or, still queued, when its last waiter
 * cancels.  libunbound holds q as its callback argument only in Q_SENT; a
 * timed-out query is ub_cancel'ed first, so no callback reaches a freed q.
 */
struct res_query {
    struct res_link all;            /* ctx->queries, in deadline order */
    struct res_link fifo;           /* ctx->queued while not sent */
    struct res_query *hnext;        /* hash chain */
    struct res_ctx *ctx;
    uint32_t hash;
    enum res_type type;
    uint8_t state;                  /* Q_* */
    int async_id;                   /* libunbound's id while sent */
    uint64_t deadline_ns;
    struct res_link waiters;        /* struct res_wait.link */
    char name[];
};

/*
 * Invariants: every busy req has each of its waits either in a query's
 * waiters (WAIT_QUERY), in ready or batch (WAIT_READY), or done and
 * holding its answer (WAIT_IDLE with ans set) until the stage completes.
 * batch is non-empty only inside drain().
 */
struct res_ctx {
    struct io_loop *loop;
    struct ub_ctx *ub;
    struct io_op poll_op;           /* multishot poll on ub_fd */
    struct io_op defer_op;          /* drains ready from a later turn */
    struct io_op timer_op;          /* deadline of the oldest query */
    uint64_t timeout_ns;
    unsigned max_inflight;
    unsigned inflight;              /* queries sent to libunbound */
    size_t nqueued;
    struct res_query *qtab[QUERY_BUCKETS];
    struct res_link queries;        /* all queries, oldest first */
    struct res_link queued;         /* not yet sent, oldest first */
    struct res_link ready;          /* waits done, callbacks due */
    struct res_link batch;          /* waits being completed by drain() */
    struct cache_ent **ctab;        /* cache hash, cmask + 1 buckets */
    size_t cmask;
    size_t cache_max;
    size_t ncached;
    struct res_link lru;
    struct res_stats st;
    bool closing;                   /* res_ctx_free: queries stay for it to free */
    bool broken;                    /* libunbound's pipe failed: no more queries */
};

/* libunbound keeps process-wide state (its log settings, lock setup) that
 * context creation and deletion touch: one at a time across reactors. */
static pthread_mutex_t ub_global_mu = PTHREAD_MUTEX_INITIALIZER;

/* ---- lists ---- */

static void list_init(struct res_link *l) { l->prev = l->next = l; }
static bool list_empty(const struct res_link *l) { return l->next == l; }

static void list_push_tail(struct res_link *head, struct res_link *n)
{
    n->prev = head->prev;
    n->next = head;
    head->prev->next = n;
    head->prev = n;
}

static void list_unlink(struct res_link *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    list_init(n);
}

/* Move every node of from to the tail of to. */
static void list_splice_tail(struct res_link *to, struct res_link *from)
{
    if (list_empty(from))
        return;
    from->next->prev = to->prev;
    to->prev->next = from->next;
    from->prev->next = to;
    to->prev = from->prev;
    list_init(from);
}

/* ---- keys ---- */

static uint32_t key_hash(enum res_type type, const char *name)
{
    uint32_t h = 2166136261u ^ (uint32_t)type; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)name; *p != '\0'; p++) {
        h ^= *p;
        h *= 16777619u;
    }
    return h;
}

/* ---- cache ---- */

static void cache_unlink(struct res_ctx *ctx, struct cache_ent *e)
{
    struct cache_ent **pp = &ctx->ctab[e->hash & ctx->cmask];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    list_unlink(&e->lru);
    res_answer_unref(e->ans);
    free(e);
    ctx->ncached--;
}

static struct cache_ent *cache_find(struct res_ctx *ctx, enum res_type type, const char *name,
                                    uint32_t hash)
{
    for (struct cache_ent *e = ctx->ctab[hash & ctx->cmask]; e != NULL; e = e->hnext)
        if (e->hash == hash && e->ans->type == type && strcmp(e->ans->name, name) == 0)
            return e;
    return NULL;
}

/* A fresh cached answer for the key, or NULL (expired entries go). */
static const struct res_answer *cache_get(struct res_ctx *ctx, enum res_type type,
                                          const char *name, uint32_t hash)
{
    struct cache_ent *e = cache_find(ctx, type, name, hash);
    if (e == NULL)
        return NULL;
    if (e->expires_ns <= io_loop_now(ctx->loop)) {
        cache_unlink(ctx, e);
        return NULL;
    }
    list_unlink(&e->lru);
    list_push_tail(&ctx->lru, &e->lru); /* tail = most recent */
    return e->ans;
}

/* Answers worth keeping: the DNS said something definite.  Failures
 * (SERVFAIL, bogus, timeouts) are retried by the next lookup; libunbound
 * keeps its own short memory of them. */
static bool cacheable(const struct res_answer *a)
{
    return a->refs > 0 && a->ttl > 0 &&
           (a->status == RES_OK || a->status == RES_NXDOMAIN || a->status == RES_NODATA ||
            a->status == RES_NULLMX);
}

static void cache_put(struct res_ctx *ctx, uint32_t hash, const struct res_answer *ans)
{
    if (ctx->cache_max == 0 || !cacheable(ans))
        return;
    struct cache_ent *old = cache_find(ctx, ans->type, ans->name, hash);
    if (old != NULL)
        cache_unlink(ctx, old);
    if (ctx->ncached >= ctx->cache_max) /* evict the least recently used */
        cache_unlink(ctx, container_of(ctx->lru.next, struct cache_ent, lru));
    struct cache_ent *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return; /* not cached: no harm */
    uint32_t ttl = ans->ttl < RES_CACHE_TTL_MAX ? ans->ttl : RES_CACHE_TTL_MAX;
    e->hash = hash;
    e->expires_ns = io_loop_now(ctx->loop) + (uint64_t)ttl * 1000000000u;
    e->ans = res_answer_ref(ans);
    e->hnext = ctx->ctab[hash & ctx->cmask];
    ctx->ctab[hash & ctx->cmask] = e;
    list_push_tail(&ctx->lru, &e->lru);
    ctx->ncached++;
}

/* ---- waits and the ready list ---- */

static void on_defer(struct io_op *op, int res, const char *data, unsigned flags);

static void ready_push(struct res_ctx *ctx, struct res_wait *w)
{
    w->state = WAIT_READY;
    list_push_tail(&ctx->ready, &w->link);
    if (!io_op_busy(&ctx->defer_op))
        io_defer(ctx->loop, &ctx->defer_op, on_defer);
}

/* ---- queries ---- */

static void query_unhash(struct res_ctx *ctx, struct res_query *q)
{
    struct res_query **pp = &ctx->qtab[q->hash & (QUERY_BUCKETS - 1)];
    while (*pp != q)
        pp = &(*pp)->hnext;
    *pp = q->hnext;
}

/* Take q out of every list and free it (its waiters must be gone). */
static void query_free(struct res_ctx *ctx, struct res_query *q)
{
    assert(list_empty(&q->waiters));
    query_unhash(ctx, q);
    list_unlink(&q->all);
    if (q->state == Q_QUEUED) {
        list_unlink(&q->fifo);
        ctx->nqueued--;
    } else if (q->state == Q_SENT) {
        ctx->inflight--;
    }
    free(q);
}

/* q is finished with ans (one reference, taken): its waiters become ready. */
static void query_complete(struct res_ctx *ctx, struct res_query *q, struct res_answer *ans)
{
    while (!list_empty(&q->waiters)) {
        struct res_wait *w = container_of(q->waiters.next, struct res_wait, link);
        list_unlink(&w->link);
        w->q = NULL;
        w->ans = res_answer_ref(ans);
        ready_push(ctx, w);
    }
    query_free(ctx, q);
    res_answer_unref(ans);
}

static void on_ub_result(void *arg, int err, struct ub_result *r)
{
    struct res_query *q = arg;
    struct res_ctx *ctx = q->ctx;
    struct res_answer *ans = answer_from_ub(q->type, q->name, err, r);

    ub_resolve_free(r);
    /* name was validated (letters, digits, '-', '_', '.'): no escaping needed */
    log_debug("resolver: name=%s type=%s status=%s dnssec=%s ttl=%u n=%zu", q->name,
              res_type_name(q->type), res_status_name(ans->status), res_sec_name(ans->sec),
              ans->ttl, ans->n);
    cache_put(ctx, q->hash, ans);
    query_complete(ctx, q, ans);
}

static void query_send(struct res_ctx *ctx, struct res_query *q)
{
    int rc = ctx->broken ? UB_PIPE
                         : ub_resolve_async(ctx->ub, q->name, (int)q->type, DNS_CLASS_IN, q,
                                            on_ub_result, &q->async_id);
    if (rc != 0) {
        query_complete(ctx, q, answer_error(q->type, q->name, RES_ERROR, ub_strerror(rc)));
        return;
    }
    q->state = Q_SENT;
    ctx->inflight++;
    ctx->st.queries++;
}

/* Hand queued queries to libunbound while there is room. */
static void send_queued(struct res_ctx *ctx)
{
    while (ctx->inflight < ctx->max_inflight && !list_empty(&ctx->queued)) {
        struct res_query *q = container_of(ctx->queued.next, struct res_query, fifo);
        list_unlink(&q->fifo);
        ctx->nqueued--;
        q->state = Q_SENDING;
        query_send(ctx, q);
    }
}

static void on_timer(struct io_op *op, int res, const char *data, unsigned flags);

static void timer_arm(struct res_ctx *ctx)
{
    if (io_op_busy(&ctx->timer_op) || list_empty(&ctx->queries))
        return;
    struct res_query *q = container_of(ctx->queries.next, struct res_query, all);
    uint64_t now = io_loop_now(ctx->loop);
    uint64_t ms = q->deadline_ns > now ? (q->deadline_ns - now + 999999) / 1000000 : 0;
    if (io_timer_start(ctx->loop, &ctx->timer_op, ms, on_timer) < 0)
        log_warnx("resolver: cannot arm the lookup timer");
}

/* A new query, queued (send_queued hands it to libunbound), or NULL on
 * ENOMEM. */
static struct res_query *query_new(struct res_ctx *ctx, enum res_type type, const char *name,
                                   uint32_t hash)
{
    size_t len = strlen(name);
    struct res_query *q = calloc(1, sizeof(*q) + len + 1);
    if (q == NULL)
        return NULL;
    memcpy(q->name, name, len + 1);
    q->ctx = ctx;
    q->hash = hash;
    q->type = type;
    q->state = Q_QUEUED;
    q->deadline_ns = io_loop_now(ctx->loop) + ctx->timeout_ns;
    list_init(&q->waiters);
    list_init(&q->fifo);
    q->hnext = ctx->qtab[hash & (QUERY_BUCKETS - 1)];
    ctx->qtab[hash & (QUERY_BUCKETS - 1)] = q;
    list_push_tail(&ctx->queries, &q->all);
    list_push_tail(&ctx->queued, &q->fifo);
    ctx->nqueued++;
    timer_arm(ctx);
    return q;
}

static struct res_query *query_find(struct res_ctx *ctx, enum res_type type, const char *name,
                                    uint32_t hash)
{
    for (struct res_query *q = ctx->qtab[hash & (QUERY_BUCKETS - 1)]; q != NULL; q = q->hnext)
        if (q->hash == hash && q->type == type && strcmp(q->name, name) == 0)
            return q;
    return NULL;
}

/* Make w wait for (type, name): from the cache, a query in flight or a new
 * one.  Never runs a callback. */
static void wait_start(struct res_ctx *ctx, struct res_req *req, struct res_wait *w,
                       enum res_type type, const char *name)
{
    uint32_t hash = key_hash(type, name);

    w->req = req;
    w->q = NULL;
    w->ans = NULL;
    const struct res_answer *hit = cache_get(ctx, type, name, hash);
    if (hit != NULL) {
        ctx->st.cache_hits++;
        w->ans = res_answer_ref(hit);
        ready_push(ctx, w);
        return;
    }
    struct res_query *q = query_find(ctx, type, name, hash);
    bool fresh = q == NULL;
    if (fresh && (q = query_new(ctx, type, name, hash)) == NULL) {
        w->ans = answer_error(type, name, RES_ERROR, "out of memory");
        ready_push(ctx, w);
        return;
    }
    if (!fresh)
        ctx->st.coalesced++;
    w->q = q;
    w->state = WAIT_QUERY;
    list_push_tail(&q->waiters, &w->link);
    if (fresh)
        send_queued(ctx); /* may complete q at once (send failure): w goes to ready */
}

/* Drop a wait's answer and detach it from wherever it is. */
static void wait_reset(struct res_ctx *ctx, struct res_wait *w)
{
    if (w->state == WAIT_QUERY) {
        struct res_query *q = w->q;
        list_unlink(&w->link);
        w->q = NULL;
        /* A query already at libunbound goes on and fills the cache. */
        if (list_empty(&q->waiters) && q->state == Q_QUEUED && !ctx->closing)
            query_free(ctx, q);
    } else if (w->state == WAIT_READY) {
        list_unlink(&w->link);
    }
    w->state = WAIT_IDLE;
    if (w->ans != NULL) {
        res_answer_unref(w->ans);
        w->ans = NULL;
    }
}

/* The req is done: idle first (the callback may resubmit or free it). */
static void req_finish(struct res_req *req, const struct res_answer *ans)
{
    metrics_inc(METRICS_DNS_SEC + ans->sec);
    metrics_inc(METRICS_DNS_STATUS + ans->status);
    req->busy = false;
    req->cb(req, ans);
    res_answer_unref(ans);
}

/* Every wait of the req's stage is done: next stage or callback. */
static void req_stage_done(struct res_ctx *ctx, struct res_req *req)
{
    const struct res_answer *a0 = req->w[0].ans, *a1 = req->w[1].ans;
    req->w[0].ans = req->w[1].ans = NULL;

    switch (req->stage) {
    case REQ_PLAIN:
        req_finish(req, a0);
        return;
    case REQ_MX:
        if (a0->status == RES_OK) {
            struct res_answer *mine = answer_mx_shuffled(a0);
            res_answer_unref(a0);
            req_finish(req, mine);
        } else if (a0->status == RES_NODATA) {
            /* RFC 5321 5.1: no MX RRset, the domain itself is the host. */
            req->stage = REQ_MX_ADDR;
            req->held = a0;
            req->pending = 2;
            wait_start(ctx, req, &req->w[0], RES_A, req->name);
            wait_start(ctx, req, &req->w[1], RES_AAAA, req->name);
        } else {
            req_finish(req, a0); /* NULLMX, NXDOMAIN, failures */
        }
        return;
    case REQ_MX_ADDR: {
        const struct res_answer *mx = req->held;
        req->held = NULL;
        struct res_answer *ans = answer_implicit_mx(mx, a0, a1);
        res_answer_unref(mx);
        res_answer_unref(a0);
        res_answer_unref(a1);
        req_finish(req, ans);
        return;
    }
    }
}

/* Complete the waits that were ready when it started (waits made ready by
 * the callbacks it runs wait for the next turn: no unbounded loop). */
static void drain(struct res_ctx *ctx)
{
    assert(list_empty(&ctx->batch));
    list_splice_tail(&ctx->batch, &ctx->ready);
    while (!list_empty(&ctx->batch)) {
        struct res_wait *w = container_of(ctx->batch.next, struct res_wait, link);
        list_unlink(&w->link);
        w->state = WAIT_IDLE;
        struct res_req *req = w->req;
        if (--req->pending == 0)
            req_stage_done(ctx, req);
    }
    if (!list_empty(&ctx->ready) && !io_op_busy(&ctx->defer_op))
        io_defer(ctx->loop, &ctx->defer_op, on_defer);
}

static void on_defer(struct io_op *op, int res, const char *data, unsigned flags)
{
    drain(op->owner);
}

static void on_timer(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct res_ctx *ctx = op->owner;
    if (res < 0)
        return;
    uint64_t now = io_loop_now(ctx->loop);
    while (!list_empty(&ctx->queries)) {
        struct res_query *q = container_of(ctx->queries.next, struct res_query, all);
        if (q->deadline_ns > now)
            break;
        if (q->state == Q_SENT)
            ub_cancel(ctx->ub, q->async_id); /* its callback never comes */
        ctx->st.timeouts++;
        char why[64];
        snprintf(why, sizeof(why), "no answer within %llu ms",
                 (unsigned long long)(ctx->timeout_ns / 1000000));
        query_complete(ctx, q, answer_error(q->type, q->name, RES_TIMEOUT, why));
    }
    send_queued(ctx);
    timer_arm(ctx);
    drain(ctx);
}

static void on_ub_readable(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct res_ctx *ctx = op->owner;
    int rc = 0;

    if (ctx->broken)
        return;
    if (res < 0) {
        log_warnx("resolver: poll on libunbound's pipe: %s; lookups fail from now on",
                  strerror(-res));
        ctx->broken = true;
        io_cancel(ctx->loop, &ctx->poll_op);
        return;
    }
    if (!(flags & IO_F_MORE)) /* a multishot poll the kernel ended: again */
        rc = io_poll_start(ctx->loop, &ctx->poll_op, ub_fd(ctx->ub), POLLIN, on_ub_readable);
    if (rc < 0) {
        log_warnx("resolver: cannot poll libunbound's pipe: %s; lookups fail from now on",
                  strerror(-rc));
        ctx->broken = true;
    }
    rc = ub_process(ctx->ub); /* runs on_ub_result for each answer */
    if (rc != 0 && !ctx->broken) {
        /* libunbound's thread is gone (the pipe is at EOF): stop polling a
         * pipe that stays readable. */
        log_warnx("resolver: ub_process: %s; lookups fail from now on", ub_strerror(rc));
        ctx->broken = true;
        io_cancel(ctx->loop, &ctx->poll_op);
    }
    send_queued(ctx);
    drain(ctx);
}

/* ---- requests ---- */

void res_req_init(struct res_req *req, void *owner)
{
    memset(req, 0, sizeof(*req));
    req->owner = owner;
}

int res_lookup(struct res_ctx *ctx, struct res_req *req, enum res_type type, const char *name,
               res_cb cb)
{
    char norm[RES_NAME_MAX + 1];
    unsigned char addr[sizeof(struct in6_addr)];

    if (req->busy)
        return -EBUSY;
    if (strcmp(res_type_name(type), "?") == 0 || cb == NULL)
        return -EINVAL;
    if (type == RES_PTR && inet_pton(AF_INET, name, addr) == 1) {
        if (res_ptr_name(AF_INET, addr, norm, sizeof(norm)) < 0)
            return -EINVAL;
    } else if (type == RES_PTR && inet_pton(AF_INET6, name, addr) == 1) {
        if (res_ptr_name(AF_INET6, addr, norm, sizeof(norm)) < 0)
            return -EINVAL;
    } else if (res_name_normalize(name, norm, sizeof(norm)) < 0) {
        return -EINVAL;
    }
    memcpy(req->name, norm, strlen(norm) + 1);
    req->ctx = ctx;
    req->cb = cb;
    req->type = type;
    req->busy = true;
    req->stage = type == RES_MX ? REQ_MX : REQ_PLAIN;
    req->pending = 1;
    req->held = NULL;
    req->w[0].state = req->w[1].state = WAIT_IDLE;
    req->w[0].ans = req->w[1].ans = NULL;
    ctx->st.lookups++;
    wait_start(ctx, req, &req->w[0], type, req->name);
    return 0;
}

void res_cancel(struct res_req *req)
{
    if (!req->busy)
        return;
    for (int i = 0; i < 2; i++)
        wait_reset(req->ctx, &req->w[i]);
    if (req->held != NULL) {
        res_answer_unref(req->held);
        req->held = NULL;
    }
    req->busy = false;
}

/* ---- context ---- */

/* Zones libunbound 1.17 answers locally unless told otherwise (its
 * services/localzone.c: localhost, the loopback reverse zones, RFC 6761 /
 * 7686 names, and the AS112 zones of RFC 6303 and RFC 6598). */
static const char *const default_local_zones[] = {
    "localhost.", "127.in-addr.arpa.",
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa.",
    "onion.", "test.", "invalid.",
    "10.in-addr.arpa.", "16.172.in-addr.arpa.", "17.172.in-addr.arpa.",
    "18.172.in-addr.arpa.", "19.172.in-addr.arpa.", "20.172.in-addr.arpa.",
    "21.172.in-addr.arpa.", "22.172.in-addr.arpa.", "23.172.in-addr.arpa.",
    "24.172.in-addr.arpa.", "25.172.in-addr.arpa.", "26.172.in-addr.arpa.",
    "27.172.in-addr.arpa.", "28.172.in-addr.arpa.", "29.172.in-addr.arpa.",
    "30.172.in-addr.arpa.", "31.172.in-addr.arpa.", "168.192.in-addr.arpa.",
    "0.in-addr.arpa.", "254.169.in-addr.arpa.", "2.0.192.in-addr.arpa.",
    "100.51.198.in-addr.arpa.", "113.0.203.in-addr.arpa.", "255.255.255.255.in-addr.arpa.",
    "64.100.in-addr.arpa.", "65.100.in-addr.arpa.", "66.100.in-addr.arpa.",
    "67.100.in-addr.arpa.", "68.100.in-addr.arpa.", "69.100.in-addr.arpa.",
    "70.100.in-addr.arpa.", "71.100.in-addr.arpa.", "72.100.in-addr.arpa.",
    "73.100.in-addr.arpa.", "74.100.in-addr.arpa.", "75.100.in-addr.arpa.",
    "76.100.in-addr.arpa.", "77.100.in-addr.arpa.", "78.100.in-addr.arpa.",
    "79.100.in-addr.arpa.", "80.100.in-addr.arpa.", "81.100.in-addr.arpa.",
    "82.100.in-addr.arpa.", "83.100.in-addr.arpa.", "84.100.in-addr.arpa.",
    "85.100.in-addr.arpa.", "86.100.in-addr.arpa.", "87.100.in-addr.arpa.",
    "88.100.in-addr.arpa.", "89.100.in-addr.arpa.", "90.100.in-addr.arpa.",
    "91.100.in-addr.arpa.", "92.100.in-addr.arpa.", "93.100.in-addr.arpa.",
    "94.100.in-addr.arpa.", "95.100.in-addr.arpa.", "96.100.in-addr.arpa.",
    "97.100.in-addr.arpa.", "98.100.in-addr.arpa.", "99.100.in-addr.arpa.",
    "100.100.in-addr.arpa.", "101.100.in-addr.arpa.", "102.100.in-addr.arpa.",
    "103.100.in-addr.arpa.", "104.100.in-addr.arpa.", "105.100.in-addr.arpa.",
    "106.100.in-addr.arpa.", "107.100.in-addr.arpa.", "108.100.in-addr.arpa.",
    "109.100.in-addr.arpa.", "110.100.in-addr.arpa.", "111.100.in-addr.arpa.",
    "112.100.in-addr.arpa.", "113.100.in-addr.arpa.", "114.100.in-addr.arpa.",
    "115.100.in-addr.arpa.", "116.100.in-addr.arpa.", "117.100.in-addr.arpa.",
    "118.100.in-addr.arpa.", "119.100.in-addr.arpa.", "120.100.in-addr.arpa.",
    "121.100.in-addr.arpa.", "122.100.in-addr.arpa.", "123.100.in-addr.arpa.",
    "124.100.in-addr.arpa.", "125.100.in-addr.arpa.", "126.100.in-addr.arpa.",
    "127.100.in-addr.arpa.",
    "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa.",
    "d.f.ip6.arpa.", "8.e.f.ip6.arpa.", "9.e.f.ip6.arpa.", "a.e.f.ip6.arpa.",
    "b.e.f.ip6.arpa.", "8.b.d.0.1.0.0.2.ip6.arpa.", "home.arpa.",
};

/* Is a (a zone name with its final dot) equal to or under b?  "." holds all. */
static bool zone_within(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (strcmp(b, ".") == 0)
        return true;
    if (la < lb || strcasecmp(a + la - lb, b) != 0)
        return false;
    return la == lb || a[la - lb - 1] == '.';
}

/* Does the trust anchor file hold at least one DS or DNSKEY record?
 * (An empty one would turn every answer insecure without a word.) */
static int anchor_file_check(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        int e = errno;
        if (strcmp(path, RES_ROOT_KEY_FILE) == 0)
            snprintf(err, errlen,
                     "DNSSEC root trust anchor %s: %s (install the dns-root-data package, or "
                     "set trust_anchor or dnssec = off in [resolver])",
                     path, strerror(e));
        else
            snprintf(err, errlen, "[resolver] trust_anchor %s: %s", path, strerror(e));
        return -e;
    }
    char line[4096];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        char *save = NULL;
        char *c = strchr(line, ';');
        if (c != NULL)
            *c = '\0';
        for (char *t = strtok_r(line, " \t\r\n", &save); t != NULL;
             t = strtok_r(NULL, " \t\r\n", &save))
            if (strcasecmp(t, "DS") == 0 || strcasecmp(t, "DNSKEY") == 0)
                found = true;
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        snprintf(err, errlen, "trust anchor file %s: read error", path);
        return -EIO;
    }
    if (!found) {
        snprintf(err, errlen, "trust anchor file %s holds no DS or DNSKEY record", path);
        return -EINVAL;
    }
    return 0;
}

/* Configure and finalise ub from conf; the global mutex is held. */
static int ub_setup(struct ub_ctx *ub, const struct res_conf *conf, char *err, size_t errlen)
{
    int rc;
#define UB_TRY(call, what)                                                                    \
    do {                                                                                      \
        if ((rc = (call)) != 0) {                                                             \
            snprintf(err, errlen, "resolver: %s: %s", what, ub_strerror(rc));                 \
            return -EINVAL;                                                                   \
        }                                                                                     \
    } while (0)

    /* Resolving runs on libunbound's thread (not a forked process). */
    UB_TRY(ub_ctx_async(ub, 1), "async mode");
    /* Stubs and forwarders on loopback (tests, a local resolver). */
    UB_TRY(ub_ctx_set_option(ub, "do-not-query-localhost:", "no"), "do-not-query-localhost");
    /* A server that timed out is probed again, one query at a time, rather
     * than answered SERVFAIL for infra-host-ttl (15 minutes by default): a
     * mail server often has one forwarder, and a moment of overload there
     * must not turn a quarter of an hour of lookups into temperrors and
     * deferrals.  The host cache entry expires after a minute too. */
    UB_TRY(ub_ctx_set_option(ub, "infra-keep-probing:", "yes"), "infra-keep-probing");
    UB_TRY(ub_ctx_set_option(ub, "infra-host-ttl:", "60"), "infra-host-ttl");
    if (conf->dnssec) {
        const char *ta = conf->trust_anchor != NULL ? conf->trust_anchor : RES_ROOT_KEY_FILE;
        if (anchor_file_check(ta, err, errlen) < 0)
            return -EINVAL;
        UB_TRY(ub_ctx_add_ta_file(ub, ta), "trust anchor");
    } else {
        UB_TRY(ub_ctx_set_option(ub, "module-config:", "iterator"), "module-config");
    }
    for (size_t i = 0; i < conf->nforwards; i++)
        UB_TRY(ub_ctx_set_fwd(ub, conf->forwards[i]), conf->forwards[i]);
    for (size_t i = 0; i < conf->nstubs; i++) {
        const char *zone = conf->stubs[i].zone;
        UB_TRY(ub_ctx_set_stub(ub, zone, conf->stubs[i].addr, 0), zone);
        bool seen = false;
        for (size_t j = 0; j < i; j++)
            seen = seen || strcmp(conf->stubs[j].zone, zone) == 0;
        if (seen)
            continue;
        /* The stub zone itself transparent: it wins over a default zone
         * above it (closest match); default zones at or below it too. */
        char lz[RES_NAME_MAX + 32];
        snprintf(lz, sizeof(lz), "%s transparent", zone);
        UB_TRY(ub_ctx_set_option(ub, "local-zone:", lz), lz);
        for (size_t k = 0; k < sizeof(default_local_zones) / sizeof(*default_local_zones); k++) {
            const char *d = default_local_zones[k];
            if (strcasecmp(d, zone) != 0 && zone_within(d, zone)) {
                snprintf(lz, sizeof(lz), "%s transparent", d);
                UB_TRY(ub_ctx_set_option(ub, "local-zone:", lz), lz);
            }
        }
    }
    /* Finalise now (reads the anchors, builds the local zones): every
     * local-zone call finalises first, and removing a zone that cannot
     * exist changes nothing. */
    rc = ub_ctx_zone_remove(ub, "finalize.ortoo.invalid.");
    if (rc != 0) {
        snprintf(err, errlen, "resolver: cannot initialise libunbound: %s%s%s", ub_strerror(rc),
                 conf->dnssec ? " (check the trust anchor file " : "",
                 conf->dnssec ? (conf->trust_anchor ? conf->trust_anchor : RES_ROOT_KEY_FILE)
                              : "");
        if (conf->dnssec)
            strncat(err, ")", errlen - strlen(err) - 1);
        return -EINVAL;
    }
    return 0;
#undef UB_TRY
}

struct res_ctx *res_ctx_new(struct io_loop *loop, const struct res_conf *conf, char *err,
                            size_t errlen)
{
    struct res_ctx *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL) {
        snprintf(err, errlen, "resolver: out of memory");
        return NULL;
    }
    ctx->loop = loop;
    ctx->timeout_ns = (uint64_t)(conf->timeout_ms ? conf->timeout_ms : RES_DEFAULT_TIMEOUT_MS) *
                      1000000u;
    ctx->max_inflight = conf->max_inflight ? conf->max_inflight : RES_DEFAULT_INFLIGHT;
    ctx->cache_max = conf->cache_max ? conf->cache_max : RES_DEFAULT_CACHE_MAX;
    list_init(&ctx->queries);
    list_init(&ctx->queued);
    list_init(&ctx->ready);
    list_init(&ctx->batch);
    list_init(&ctx->lru);
    io_op_init(&ctx->poll_op, ctx);
    io_op_init(&ctx->defer_op, ctx);
    io_op_init(&ctx->timer_op, ctx);
    size_t buckets = 16;
    while (buckets < ctx->cache_max)
        buckets <<= 1;
    ctx->cmask = buckets - 1;
    if ((ctx->ctab = calloc(buckets, sizeof(*ctx->ctab))) == NULL) {
        snprintf(err, errlen, "resolver: out of memory");
        free(ctx);
        return NULL;
    }

    pthread_mutex_lock(&ub_global_mu);
    ctx->ub = ub_ctx_create();
    int rc = ctx->ub != NULL ? ub_setup(ctx->ub, conf, err, errlen) : -ENOMEM;
    if (ctx->ub == NULL)
        snprintf(err, errlen, "resolver: cannot create a libunbound context");
    if (rc < 0 && ctx->ub != NULL) {
        ub_ctx_delete(ctx->ub);
        ctx->ub = NULL;
    }
    pthread_mutex_unlock(&ub_global_mu);
    if (rc < 0)
        goto fail;
    rc = io_poll_start(loop, &ctx->poll_op, ub_fd(ctx->ub), POLLIN, on_ub_readable);
    if (rc < 0) {
        snprintf(err, errlen, "resolver: cannot poll libunbound's pipe: %s", strerror(-rc));
        pthread_mutex_lock(&ub_global_mu);
        ub_ctx_delete(ctx->ub);
        pthread_mutex_unlock(&ub_global_mu);
        goto fail;
    }
    return ctx;
fail:
    free(ctx->ctab);
    free(ctx);
    return NULL;
}

/* Drop every wait on the list (res_ctx_free). */
static void drop_waits(struct res_ctx *ctx, struct res_link *list)
{
    while (!list_empty(list)) {
        struct res_wait *w = container_of(list->next, struct res_wait, link);
        res_cancel(w->req);
    }
}

void res_ctx_free(struct res_ctx *ctx)
{
    if (ctx == NULL)
        return;
    ctx->closing = true;
    drop_waits(ctx, &ctx->ready);
    drop_waits(ctx, &ctx->batch);
    /* Stop libunbound's thread first: no callback can reach a query after. */
    pthread_mutex_lock(&ub_global_mu);
    ub_ctx_delete(ctx->ub);
    pthread_mutex_unlock(&ub_global_mu);
    while (!list_empty(&ctx->queries)) {
        struct res_query *q = container_of(ctx->queries.next, struct res_query, all);
        drop_waits(ctx, &q->waiters);
        query_free(ctx, q);
    }
    while (!list_empty(&ctx->lru))
        cache_unlink(ctx, container_of(ctx->lru.next, struct cache_ent, lru));
    free(ctx->ctab);
    free(ctx);
}

void res_ctx_stats(const struct res_ctx *ctx, struct res_stats *out)
{
    *out = ctx->st;
    out->cached = ctx->ncached;
    out->inflight = ctx->inflight;
    out->queued = ctx->nqueued;
}
