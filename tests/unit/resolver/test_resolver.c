/* SPDX-License-Identifier: MIT */
/*
 * test_resolver.c - unit tests for resolver/resolver.c on a real loop (both
 * backends) and a real libunbound context, against a tiny authoritative DNS
 * server written here: a UDP socket on 127.0.0.1:0, polled by the same loop,
 * answering from a table (A, MX, null MX, NODATA, NXDOMAIN, or silence).
 * The context has dnssec = off and one stub zone, example.test., pointing at
 * it, so nothing leaves the machine.
 *
 * What is checked: callbacks never run inside res_lookup; answers come from
 * the cache within the TTL and from the server after it; concurrent lookups
 * share one query; the cache is bounded; a cancelled req never sees its
 * callback (in flight, ready, or cancelled from another callback), and a
 * context freed with queries in flight leaks nothing (run under ASan);
 * the deadline gives RES_TIMEOUT; MX falls back to A/AAAA; queries beyond
 * max_inflight wait their turn.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "resolver/resolver.c"

#include <netinet/in.h>
#include <sys/socket.h>
#include <ctype.h>
#include <time.h>

#define WATCHDOG_MS 10000
#define TTL_DEFAULT 300

static enum io_backend be_uring = IO_BACKEND_URING;
static enum io_backend be_epoll = IO_BACKEND_EPOLL;

/* ---- the fake authoritative server ---- */

enum rule_kind { R_A, R_MX, R_NULLMX, R_NODATA, R_NXDOMAIN, R_DROP };

struct rule {
    const char *name;   /* lower case, no final dot */
    uint16_t qtype;     /* 0: any */
    enum rule_kind kind;
    uint32_t ttl;
};

static const struct rule rules[] = {
    {"www.example.test", RES_A, R_A, TTL_DEFAULT},
    {"www.example.test", 0, R_NODATA, TTL_DEFAULT},
    {"short.example.test", RES_A, R_A, 1},
    {"a1.example.test", RES_A, R_A, TTL_DEFAULT},
    {"a2.example.test", RES_A, R_A, TTL_DEFAULT},
    {"a3.example.test", RES_A, R_A, TTL_DEFAULT},
    {"mx.example.test", RES_MX, R_MX, TTL_DEFAULT},
    {"null.example.test", RES_MX, R_NULLMX, TTL_DEFAULT},
    {"aonly.example.test", RES_A, R_A, TTL_DEFAULT},
    {"aonly.example.test", 0, R_NODATA, TTL_DEFAULT},
    {"nohost.example.test", 0, R_NODATA, TTL_DEFAULT},
    {"drop.example.test", 0, R_DROP, 0},
    {"drop2.example.test", 0, R_DROP, 0},
};

struct fake_dns {
    int fd;
    uint16_t port;
    struct io_op op;
    unsigned queries;           /* questions received */
    unsigned by_name[sizeof(rules) / sizeof(rules[0]) + 1]; /* per matching rule */
};

static size_t put_name(unsigned char *p, const char *name)
{
    size_t o = 0;
    while (*name != '\0') {
        const char *dot = strchr(name, '.');
        size_t l = dot ? (size_t)(dot - name) : strlen(name);
        p[o++] = (unsigned char)l;
        memcpy(p + o, name, l);
        o += l;
        name += l + (dot != NULL);
    }
    p[o++] = 0;
    return o;
}

static size_t put16(unsigned char *p, unsigned v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
    return 2;
}

static size_t put32(unsigned char *p, uint32_t v)
{
    put16(p, v >> 16);
    put16(p + 2, v & 0xffff);
    return 4;
}

/* An RR for the question name (compression pointer to offset 12). */
static size_t put_rr_head(unsigned char *p, unsigned type, uint32_t ttl)
{
    size_t o = put16(p, 0xc00c);
    o += put16(p + o, type);
    o += put16(p + o, 1);
    o += put32(p + o, ttl);
    return o;
}

static size_t put_soa(unsigned char *p, uint32_t ttl)
{
    size_t o = put_name(p, "example.test");
    o += put16(p + o, 6);
    o += put16(p + o, 1);
    o += put32(p + o, ttl);
    unsigned char rd[200];
    size_t r = put_name(rd, "ns.example.test");
    r += put_name(rd + r, "hostmaster.example.test");
    r += put32(rd + r, 1);
    r += put32(rd + r, 3600);
    r += put32(rd + r, 900);
    r += put32(rd + r, 604800);
    r += put32(rd + r, ttl);
    o += put16(p + o, (unsigned)r);
    memcpy(p + o, rd, r);
    return o + r;
}

static void on_dns_query(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct fake_dns *s = op->owner;
    unsigned char q[512], a[1024];
    struct sockaddr_storage from;
    socklen_t flen;

    if (res < 0)
        return;
    for (;;) {
        flen = sizeof(from);
        ssize_t n = recvfrom(s->fd, q, sizeof(q), MSG_DONTWAIT, (struct sockaddr *)&from, &flen);
        if (n < 17)
            return;
        /* Question: name at 12, then type and class. */
        char name[256];
        size_t i = 12, o = 0;
        while (i < (size_t)n && q[i] != 0) {
            size_t l = q[i++];
            if (o > 0)
                name[o++] = '.';
            for (size_t k = 0; k < l && i < (size_t)n; k++)
                name[o++] = (char)tolower(q[i++]);
        }
        name[o] = '\0';
        size_t qend = i + 5;
        if (qend > (size_t)n)
            return;
        unsigned qtype = (unsigned)(q[i + 1] << 8 | q[i + 2]);
        s->queries++;
        size_t ri = sizeof(rules) / sizeof(rules[0]);
        for (size_t k = 0; k < sizeof(rules) / sizeof(rules[0]); k++) {
            if (strcmp(rules[k].name, name) == 0 &&
                (rules[k].qtype == 0 || rules[k].qtype == qtype)) {
                ri = k;
                break;
            }
        }
        s->by_name[ri]++;
        enum rule_kind kind = ri < sizeof(rules) / sizeof(rules[0]) ? rules[ri].kind : R_NXDOMAIN;
        uint32_t ttl = ri < sizeof(rules) / sizeof(rules[0]) ? rules[ri].ttl : TTL_DEFAULT;
        if (kind == R_DROP)
            continue;
        memcpy(a, q, qend); /* id, question */
        a[2] = (unsigned char)(0x84 | (q[2] & 0x01)); /* QR AA, RD copied */
        a[3] = kind == R_NXDOMAIN ? 3 : 0;
        size_t p = qend, an = 0, ns = 0;
        switch (kind) {
        case R_A:
            p += put_rr_head(a + p, 1, ttl);
            p += put16(a + p, 4);
            memcpy(a + p, "\x7f\x00\x00\x02", 4);
            p += 4;
            an = 1;
            break;
        case R_MX:
            for (int h = 0; h < 2; h++) {
                unsigned char rd[100];
                size_t r = put16(rd, h == 0 ? 10 : 20);
                r += put_name(rd + r, h == 0 ? "a1.example.test" : "a2.example.test");
                p += put_rr_head(a + p, 15, ttl);
                p += put16(a + p, (unsigned)r);
                memcpy(a + p, rd, r);
                p += r;
                an++;
            }
            break;
        case R_NULLMX:
            p += put_rr_head(a + p, 15, ttl);
            p += put16(a + p, 3);
            memcpy(a + p, "\x00\x00\x00", 3);
            p += 3;
            an = 1;
            break;
        default: /* NODATA, NXDOMAIN: the SOA for the negative TTL */
            p += put_soa(a + p, ttl);
            ns = 1;
            break;
        }
        put16(a + 4, 1);
        put16(a + 6, (unsigned)an);
        put16(a + 8, (unsigned)ns);
        put16(a + 10, 0);
        sendto(s->fd, a, p, 0, (struct sockaddr *)&from, flen);
    }
}

static void fake_dns_start(struct io_loop *loop, struct fake_dns *s)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);

    memset(s, 0, sizeof(*s));
    s->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(s->fd >= 0);
    assert_int_equal(bind(s->fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(getsockname(s->fd, (struct sockaddr *)&sin, &len), 0);
    s->port = ntohs(sin.sin_port);
    io_op_init(&s->op, s);
    assert_int_equal(io_poll_start(loop, &s->op, s->fd, POLLIN, on_dns_query), 0);
}

static unsigned rule_hits(const struct fake_dns *s, const char *name, uint16_t qtype)
{
    unsigned n = 0;
    for (size_t k = 0; k < sizeof(rules) / sizeof(rules[0]); k++)
        if (strcmp(rules[k].name, name) == 0 && (qtype == 0 || rules[k].qtype == qtype))
            n += s->by_name[k];
    return n;
}

/* ---- fixture ---- */

struct fx {
    struct io_loop *loop;
    struct fake_dns dns;
    struct res_ctx *ctx;
    struct io_op watchdog;
    struct io_op pause;
    bool timed_out;
    bool in_submit;         /* a callback seen while true is a bug */
    unsigned done, want;
};

/* One lookup and what its callback saw. */
struct rec {
    struct res_req req;
    struct fx *fx;
    unsigned calls;
    const struct res_answer *ans; /* last answer (one reference) */
    void (*then)(struct rec *r);  /* run inside the callback */
    struct rec *other;
};

static void on_rec(struct res_req *req, const struct res_answer *ans)
{
    struct rec *r = req->owner;
    assert_false(r->fx->in_submit);
    assert_false(res_req_busy(req));
    r->calls++;
    if (r->ans != NULL)
        res_answer_unref(r->ans);
    r->ans = res_answer_ref(ans);
    if (r->then != NULL)
        r->then(r);
    if (++r->fx->done >= r->fx->want)
        io_loop_stop(r->fx->loop);
}

static void rec_init(struct fx *fx, struct rec *r)
{
    memset(r, 0, sizeof(*r));
    res_req_init(&r->req, r);
    r->fx = fx;
}

static void rec_clear(struct rec *r)
{
    res_cancel(&r->req);
    if (r->ans != NULL)
        res_answer_unref(r->ans);
    r->ans = NULL;
}

static int submit(struct fx *fx, struct rec *r, enum res_type type, const char *name)
{
    fx->in_submit = true;
    int rc = res_lookup(fx->ctx, &r->req, type, name, on_rec);
    fx->in_submit = false;
    return rc;
}

static void on_watchdog(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct fx *fx = op->owner;
    if (res < 0)
        return;
    fx->timed_out = true;
    io_loop_stop(fx->loop);
}

/* Run the loop until `more` further callbacks have run. */
static void run_for(struct fx *fx, unsigned more)
{
    fx->want = fx->done + more;
    if (!io_op_busy(&fx->watchdog))
        assert_int_equal(io_timer_start(fx->loop, &fx->watchdog, WATCHDOG_MS, on_watchdog), 0);
    assert_int_equal(io_loop_run(fx->loop), 0);
    if (fx->timed_out)
        fail_msg("timed out waiting for %u callbacks (have %u)", fx->want, fx->done);
}

static void on_pause(struct io_op *op, int res, const char *data, unsigned flags)
{
    io_loop_stop(((struct fx *)op->owner)->loop);
}

/* Run the loop for ms milliseconds (callbacks may come meanwhile). */
static void run_ms(struct fx *fx, unsigned ms)
{
    fx->want = UINT32_MAX;
    assert_int_equal(io_timer_start(fx->loop, &fx->pause, ms, on_pause), 0);
    assert_int_equal(io_loop_run(fx->loop), 0);
}

static void make_ctx(struct fx *fx, unsigned timeout_ms, size_t cache_max, unsigned inflight)
{
    struct res_conf conf;
    char err[512], server[64];

    res_conf_init(&conf);
    conf.dnssec = false;
    conf.timeout_ms = timeout_ms;
    conf.cache_max = cache_max;
    conf.max_inflight = inflight;
    snprintf(server, sizeof(server), "127.0.0.1@%u", fx->dns.port);
    assert_int_equal(res_conf_add_stub(&conf, "example.test", server, err, sizeof(err)), 0);
    fx->ctx = res_ctx_new(fx->loop, &conf, err, sizeof(err));
    if (fx->ctx == NULL)
        fail_msg("res_ctx_new: %s", err);
    res_conf_clear(&conf);
}

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    /* The kernel frees an io_uring ring after its process closes it: right
     * after other ring-heavy tests, locked-memory accounting may refuse a
     * new ring for a moment.  Wait for it (bounded) instead of failing. */
    for (int tries = 0; (fx->loop = io_loop_new(*(enum io_backend *)*state, 64)) == NULL &&
                        (errno == ENOMEM || errno == EAGAIN) && tries < 40;
         tries++)
        usleep(50 * 1000);
    if (fx->loop == NULL)
        fail_msg("io_loop_new: %s", strerror(errno));
    io_op_init(&fx->watchdog, fx);
    io_op_init(&fx->pause, fx);
    fake_dns_start(fx->loop, &fx->dns);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    res_ctx_free(fx->ctx); /* the loop has stopped: the resolver's ops go with it */
    close(fx->dns.fd);
    io_loop_free(fx->loop);
    free(fx);
    return 0;
}

/* ---- tests ---- */

/* Counter cell i now (io/metrics.h). */
static uint64_t metric(unsigned i)
{
    uint64_t v[METRICS_NCELLS];
    metrics_sum(v);
    return v[i];
}

static void test_lookup_and_cache(void **state)
{
    struct fx *fx = *state;
    struct rec r;
    struct res_stats st;
    uint64_t insecure = metric(METRICS_DNS_SEC + RES_SEC_INSECURE);
    uint64_t ok = metric(METRICS_DNS_STATUS + RES_OK);
    uint64_t nx = metric(METRICS_DNS_STATUS + RES_NXDOMAIN);
    uint64_t nodata = metric(METRICS_DNS_STATUS + RES_NODATA);

    make_ctx(fx, 0, 0, 0);
    rec_init(fx, &r);
    assert_int_equal(submit(fx, &r, RES_A, "WWW.Example.Test."), 0);
    assert_true(res_req_busy(&r.req));
    assert_int_equal(res_lookup(fx->ctx, &r.req, RES_A, "x.example.test", on_rec), -EBUSY);
    run_for(fx, 1);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.ans->status, RES_OK);
    assert_int_equal(r.ans->sec, RES_SEC_INSECURE);
    assert_string_equal(r.ans->name, "www.example.test");
    assert_int_equal(r.ans->n, 1);
    assert_int_equal(r.ans->a[0].s_addr, htonl(0x7f000002));
    assert_int_equal(r.ans->ttl, TTL_DEFAULT);
    assert_int_equal(fx->dns.queries, 1);

    /* Again: from our cache, still never inside the submit. */
    assert_int_equal(submit(fx, &r, RES_A, "www.example.test"), 0);
    assert_int_equal(r.calls, 1);
    run_for(fx, 1);
    assert_int_equal(r.calls, 2);
    assert_int_equal(r.ans->status, RES_OK);
    assert_int_equal(fx->dns.queries, 1);
    res_ctx_stats(fx->ctx, &st);
    assert_int_equal(st.lookups, 2);
    assert_int_equal(st.cache_hits, 1);
    assert_int_equal(st.queries, 1);
    assert_int_equal(st.cached, 1);

    /* NXDOMAIN and NODATA are cached too (by the SOA's negative TTL). */
    assert_int_equal(submit(fx, &r, RES_A, "nope.example.test"), 0);
    run_for(fx, 1);
    assert_int_equal(r.ans->status, RES_NXDOMAIN);
    assert_int_equal(submit(fx, &r, RES_AAAA, "www.example.test"), 0);
    run_for(fx, 1);
    assert_int_equal(r.ans->status, RES_NODATA);
    unsigned q = fx->dns.queries;
    assert_int_equal(submit(fx, &r, RES_A, "nope.example.test"), 0);
    run_for(fx, 1);
    assert_int_equal(r.ans->status, RES_NXDOMAIN);
    assert_int_equal(fx->dns.queries, q);

    assert_int_equal(res_lookup(fx->ctx, &r.req, RES_A, "bad name", on_rec), -EINVAL);
    assert_int_equal(res_lookup(fx->ctx, &r.req, (enum res_type)99, "a.test", on_rec), -EINVAL);
    assert_false(res_req_busy(&r.req));
    rec_clear(&r);
    /* Every answered lookup is counted, cache hits included (dnssec off:
     * insecure). */
    assert_int_equal(metric(METRICS_DNS_SEC + RES_SEC_INSECURE), insecure + 5);
    assert_int_equal(metric(METRICS_DNS_STATUS + RES_OK), ok + 2);
    assert_int_equal(metric(METRICS_DNS_STATUS + RES_NXDOMAIN), nx + 2);
    assert_int_equal(metric(METRICS_DNS_STATUS + RES_NODATA), nodata + 1);
}

static void test_ttl_expiry(void **state)
{
    struct fx *fx = *state;
    struct rec r;
    struct res_stats st;

    make_ctx(fx, 0, 0, 0);
    rec_init(fx, &r);
    assert_int_equal(submit(fx, &r, RES_A, "short.example.test"), 0);
    run_for(fx, 1);
    assert_int_equal(r.ans->ttl, 1);
    assert_int_equal(submit(fx, &r, RES_A, "short.example.test"), 0);
    run_for(fx, 1);
    res_ctx_stats(fx->ctx, &st);
    assert_int_equal(st.cache_hits, 1);
    run_ms(fx, 1100);
    /* Expired in our cache: asked of libunbound again. */
    assert_int_equal(submit(fx, &r, RES_A, "short.example.test"), 0);
    run_for(fx, 1);
    assert_int_equal(r.ans->status, RES_OK);
    res_ctx_stats(fx->ctx, &st);
    assert_int_equal(st.cache_hits, 1);
    assert_int_equal(st.queries, 2);
    rec_clear(&r);
}

static void test_cache_bound(void **state)
{
    struct fx *fx = *state;
    struct rec r;
    struct res_stats st;
    const char *names[] = {"a1.example.test", "a2.example.test", "a3.example.test"};

    make_ctx(fx, 0, 2, 0);
    rec_init(fx, &r);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(submit(fx, &r, RES_A, names[i]), 0);
        run_for(fx, 1);
    }
    res_ctx_stats(fx->ctx, &st);
    assert_int_equal(st.cached, 2);
    /* a1 was evicted (least recently used): asked of libunbound again
     * (which answers from its own cache: the server is not asked). */
    assert_int_equal(submit(fx, &r, RES_A, names[0]), 0);
    run_for(fx, 1);
    res_ctx_stats(fx->ctx, &st);
    assert_int_equal(st.cache_hits, 0);
    assert_int_equal(st.queries, 4);
    assert_int_equal(st.cached, 2);
    /* a3 stayed. */
    assert_int_equal(submit(fx, &r, RES_A, names[2]), 0);
    run_for(fx, 1);
    res_ctx_stats(fx->ctx, &st);
    assert_int_equal(st.cache_hits, 1);
    rec_clear(&r);
}

static void test_coalesce(void **state)
{
    struct fx *fx = *state;
    struct rec r[3];
    struct res_stats st;

    make_ctx(fx, 0, 0, 0);
    for (int i = 0; i < 3; i++) {
        rec_init(fx, &r[i]);
        assert_int_equal(submit(fx, &r[i], RES_A, "a1.example.test"), 0);
    }
    res_ctx_stats(fx->ctx, &st);
    assert_int_equal(st.queries, 1);
    assert_int_equal(st.coalesced, 2);
    run_for(fx, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].ans->status, RES_OK);
        rec_clear(&r[i]);
    }
    assert_int_equal(rule_hits(&fx->dns, "a1.example.test", RES_A), 1);
}

static void test_cancel_in_flight(void **state)
{
    struct fx *fx = *state;
    struct rec r, other;
    struct res_stats st;

    make_ctx(fx, 0, 0, 0);
    rec_init(fx, &r);
    rec_init(fx, &other);
    assert_int_equal(submit(fx, &r, RES_A, "drop.example.test"), 0);
    run_ms(fx, 150); /* the query reaches the (silent) server */
    assert_true(rule_hits(&fx->dns, "drop.example.test", 0) >= 1);
    res_cancel(&r.req);
    assert_false(res_req_busy(&r.req));
    res_cancel(&r.req); /* idle: no-op */
    /* The req is reusable at once, while the old query is still out. */
    assert_int_equal(submit(fx, &r, RES_A, "a2.example.test"), 0);
    run_for(fx, 1);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.ans->status, RES_OK);
    /* Another in-flight lookup is left for res_ctx_free (teardown) to drop. */
    assert_int_equal(submit(fx, &other, RES_MX, "drop2.example.test"), 0);
    run_ms(fx, 100);
    assert_int_equal(other.calls, 0);
    res_ctx_stats(fx->ctx, &st);
    assert_int_equal(st.inflight, 2); /* drop (cancelled but out) and drop2 */
    rec_clear(&r);
    /* Free the context under the busy req: dropped, no callback, no leak. */
    res_ctx_free(fx->ctx);
    fx->ctx = NULL;
    assert_false(res_req_busy(&other.req));
    assert_int_equal(other.calls, 0);
}

/* In A's callback, cancel B (ready in the same batch): B never runs. */
static void cancel_other(struct rec *r)
{
    res_cancel(&r->other->req);
}

static void test_cancel_ready(void **state)
{
    struct fx *fx = *state;
    struct rec a, b, c;

    make_ctx(fx, 0, 0, 0);
    rec_init(fx, &a);
    rec_init(fx, &b);
    rec_init(fx, &c);
    assert_int_equal(submit(fx, &a, RES_A, "a3.example.test"), 0);
    run_for(fx, 1);
    /* Now cached: both become ready on submit. */
    a.then = cancel_other;
    a.other = &b;
    assert_int_equal(submit(fx, &a, RES_A, "a3.example.test"), 0);
    assert_int_equal(submit(fx, &b, RES_A, "a3.example.test"), 0);
    /* c is cancelled right after a cache hit, before any turn. */
    assert_int_equal(submit(fx, &c, RES_A, "a3.example.test"), 0);
    res_cancel(&c.req);
    run_for(fx, 1);
    run_ms(fx, 50);
    assert_int_equal(a.calls, 2);
    assert_int_equal(b.calls, 0);
    assert_int_equal(c.calls, 0);
    assert_false(res_req_busy(&b.req));
    rec_clear(&a);
    rec_clear(&b);
    rec_clear(&c);
}

static void test_timeout(void **state)
{
    struct fx *fx = *state;
    struct rec r;
    struct res_stats st;

    make_ctx(fx, 300, 0, 0);
    rec_init(fx, &r);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(submit(fx, &r, RES_TXT, "drop.example.test"), 0);
    run_for(fx, 1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    assert_int_equal(r.ans->status, RES_TIMEOUT);
    assert_true(res_status_temporary(r.ans->status));
    assert_non_null(strstr(r.ans->why, "300 ms"));
    assert_true(ms >= 290 && ms < 5000);
    res_ctx_stats(fx->ctx, &st);
    assert_int_equal(st.timeouts, 1);
    assert_int_equal(st.inflight, 0);
    assert_int_equal(st.cached, 0); /* a timeout is not cached */
    /* The context goes on working. */
    assert_int_equal(submit(fx, &r, RES_A, "www.example.test"), 0);
    run_for(fx, 1);
    assert_int_equal(r.ans->status, RES_OK);
    rec_clear(&r);
}

static void test_mx(void **state)
{
    struct fx *fx = *state;
    struct rec r;

    make_ctx(fx, 0, 0, 0);
    rec_init(fx, &r);
    assert_int_equal(submit(fx, &r, RES_MX, "mx.example.test"), 0);
    run_for(fx, 1);
    assert_int_equal(r.ans->status, RES_OK);
    assert_int_equal(r.ans->n, 2);
    assert_int_equal(r.ans->mx[0].pref, 10);
    assert_string_equal(r.ans->mx[0].host, "a1.example.test");
    assert_string_equal(r.ans->mx[1].host, "a2.example.test");
    assert_false(r.ans->implicit_mx);
    /* Kept past the callback, the answer outlives the next lookups. */
    const struct res_answer *kept = res_answer_ref(r.ans);

    assert_int_equal(submit(fx, &r, RES_MX, "null.example.test"), 0);
    run_for(fx, 1);
    assert_int_equal(r.ans->status, RES_NULLMX);

    assert_int_equal(submit(fx, &r, RES_MX, "aonly.example.test"), 0);
    run_for(fx, 1);
    assert_int_equal(r.ans->status, RES_OK);
    assert_true(r.ans->implicit_mx);
    assert_int_equal(r.ans->n, 1);
    assert_string_equal(r.ans->mx[0].host, "aonly.example.test");
    assert_int_equal(r.ans->mx[0].pref, 0);
    assert_true(rule_hits(&fx->dns, "aonly.example.test", 0) >= 3); /* MX, A, AAAA */

    assert_int_equal(submit(fx, &r, RES_MX, "nohost.example.test"), 0);
    run_for(fx, 1);
    assert_int_equal(r.ans->status, RES_NODATA);

    assert_int_equal(submit(fx, &r, RES_MX, "nx.example.test"), 0);
    run_for(fx, 1);
    assert_int_equal(r.ans->status, RES_NXDOMAIN);
    assert_string_equal(kept->mx[1].host, "a2.example.test");
    res_answer_unref(kept);

    /* Cancelled between the MX stage and the A/AAAA stage. */
    struct rec c;
    rec_init(fx, &c);
    assert_int_equal(submit(fx, &c, RES_MX, "nohost.example.test"), 0); /* MX cached */
    run_ms(fx, 0);     /* one turn: MX done, A/AAAA started (cached too) */
    res_cancel(&c.req);
    run_ms(fx, 50);
    assert_int_equal(c.calls, 0);
    rec_clear(&r);
    rec_clear(&c);
}

static void test_inflight_cap(void **state)
{
    struct fx *fx = *state;
    struct rec r[3];
    struct res_stats st;
    const char *names[] = {"a1.example.test", "a2.example.test", "a3.example.test"};

    make_ctx(fx, 0, 0, 1);
    for (int i = 0; i < 3; i++) {
        rec_init(fx, &r[i]);
        assert_int_equal(submit(fx, &r[i], RES_A, names[i]), 0);
    }
    res_ctx_stats(fx->ctx, &st);
    assert_int_equal(st.inflight, 1);
    assert_int_equal(st.queued, 2);
    /* A queued query whose only req cancels is dropped unsent. */
    res_cancel(&r[2].req);
    res_ctx_stats(fx->ctx, &st);
    assert_int_equal(st.queued, 1);
    run_for(fx, 2);
    assert_int_equal(r[0].ans->status, RES_OK);
    assert_int_equal(r[1].ans->status, RES_OK);
    assert_int_equal(r[2].calls, 0);
    res_ctx_stats(fx->ctx, &st);
    assert_int_equal(st.queries, 2);
    assert_int_equal(st.inflight, 0);
    assert_int_equal(st.queued, 0);
    for (int i = 0; i < 3; i++)
        rec_clear(&r[i]);
}

/* The callback looks up the next name with the same req. */
static void chain_next(struct rec *r)
{
    if (r->calls == 1)
        assert_int_equal(res_lookup(r->fx->ctx, &r->req, RES_A, "a2.example.test", on_rec), 0);
}

static void test_resubmit_in_callback(void **state)
{
    struct fx *fx = *state;
    struct rec r;

    make_ctx(fx, 0, 0, 0);
    rec_init(fx, &r);
    r.then = chain_next;
    assert_int_equal(submit(fx, &r, RES_A, "a1.example.test"), 0);
    run_for(fx, 2);
    assert_int_equal(r.calls, 2);
    assert_string_equal(r.ans->name, "a2.example.test");
    rec_clear(&r);
}

static void test_ptr_literal(void **state)
{
    struct fx *fx = *state;
    struct rec r;

    make_ctx(fx, 0, 0, 0);
    rec_init(fx, &r);
    /* 192.0.2.1: outside the stub; a default local zone of libunbound
     * (2.0.192.in-addr.arpa, RFC 6303) answers NXDOMAIN without traffic. */
    assert_int_equal(submit(fx, &r, RES_PTR, "192.0.2.1"), 0);
    run_for(fx, 1);
    assert_string_equal(r.ans->name, "1.2.0.192.in-addr.arpa");
    assert_int_equal(r.ans->status, RES_NXDOMAIN);
    assert_int_equal(submit(fx, &r, RES_PTR, "::1"), 0);
    run_for(fx, 1);
    assert_int_equal(r.ans->status, RES_OK); /* libunbound's ::1 -> localhost */
    assert_string_equal(r.ans->ptr[0], "localhost");
    assert_int_equal(res_lookup(fx->ctx, &r.req, RES_PTR, "192.0.2.1/24", on_rec), -EINVAL);
    rec_clear(&r);
}

static void test_free_busy(void **state)
{
    struct fx *fx = *state;
    struct rec r[4], warm;

    make_ctx(fx, 0, 0, 1);
    rec_init(fx, &warm);
    assert_int_equal(submit(fx, &warm, RES_A, "www.example.test"), 0);
    run_for(fx, 1);
    rec_clear(&warm);
    /* One ready (cached), one in flight, one queued, one MX: then free. */
    for (int i = 0; i < 4; i++)
        rec_init(fx, &r[i]);
    assert_int_equal(submit(fx, &r[0], RES_A, "www.example.test"), 0);
    assert_int_equal(submit(fx, &r[1], RES_A, "drop.example.test"), 0);
    assert_int_equal(submit(fx, &r[2], RES_A, "a1.example.test"), 0);
    assert_int_equal(submit(fx, &r[3], RES_MX, "mx.example.test"), 0);
    res_ctx_free(fx->ctx);
    fx->ctx = NULL;
    for (int i = 0; i < 4; i++) {
        assert_false(res_req_busy(&r[i].req));
        assert_int_equal(r[i].calls, 0);
    }
}

static void test_bad_anchor(void **state)
{
    struct fx *fx = *state;
    struct res_conf conf;
    char err[512];

    res_conf_init(&conf);
    conf.trust_anchor = strdup("/nonexistent/anchors.ds");
    assert_null(res_ctx_new(fx->loop, &conf, err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent/anchors.ds: No such file or directory"));
    res_conf_clear(&conf);
}

/* Our copy of libunbound's default local zones is the one this libunbound
 * has (it prints its zones; a new release with more fails here). */
static void test_default_local_zones(void **state)
{
    FILE *f = tmpfile();
    assert_non_null(f);
    pthread_mutex_lock(&ub_global_mu);
    struct ub_ctx *ub = ub_ctx_create();
    assert_non_null(ub);
    ub_ctx_debugout(ub, f);
    ub_ctx_debuglevel(ub, 1);
    assert_int_equal(ub_ctx_print_local_zones(ub), 0);
    ub_ctx_delete(ub);
    pthread_mutex_unlock(&ub_global_mu);
    rewind(f);
    char line[512];
    size_t seen = 0, n = sizeof(default_local_zones) / sizeof(*default_local_zones);
    while (fgets(line, sizeof(line), f) != NULL) {
        char *z = strstr(line, " zone ");
        if (strstr(line, "info: ") == NULL || z == NULL)
            continue;
        z += strlen(" zone ");
        z[strcspn(z, " \n")] = '\0';
        bool found = false;
        for (size_t k = 0; k < n && !found; k++)
            found = strcmp(default_local_zones[k], z) == 0;
        if (!found)
            fail_msg("libunbound serves %s locally; add it to default_local_zones", z);
        seen++;
    }
    fclose(f);
    assert_int_equal(seen, n);
}

#define T(fn, be) cmocka_unit_test_prestate_setup_teardown(fn, setup, teardown, &be)
#define BOTH(fn) T(fn, be_uring), T(fn, be_epoll)

int main(void)
{
    const struct CMUnitTest tests[] = {
        BOTH(test_lookup_and_cache), BOTH(test_ttl_expiry),     BOTH(test_cache_bound),
        BOTH(test_coalesce),         BOTH(test_cancel_in_flight), BOTH(test_cancel_ready),
        BOTH(test_timeout),          BOTH(test_mx),             BOTH(test_inflight_cap),
        BOTH(test_resubmit_in_callback), BOTH(test_ptr_literal), BOTH(test_free_busy),
        T(test_bad_anchor, be_epoll),
        cmocka_unit_test(test_default_local_zones),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
