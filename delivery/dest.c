/* SPDX-License-Identifier: MIT */
/*
 * dest.c - the scheduler's destinations (see scheduler.h): ready queues,
 * connections, the walk over MX hosts and addresses, the TLS policy per
 * host, the rate limit and the backoff of a destination that cannot be
 * reached.
 *
 * A connection (struct conn) starts with its own walk, as Postfix's smtp
 * client does, on the resolver's cached answers:
 *
 *   MX of the domain (routes: the route's host; an IP literal skips DNS)
 *     -> per host, in preference order (equal preferences shuffled by the
 *        resolver): A and AAAA at once ([delivery] ipv6 = off: A only)
 *     -> TLSA at _<port>._tcp.<host> when tls = dane, the MX RRset (or its
 *        denial, for an implicit MX) and the host's address records are
 *        DNSSEC-secure (RFC 7672 2.2)
 *     -> connect to the host's addresses in turn (IPv6 first), at most
 *        SCHED_ADDR_LIMIT addresses for the whole walk.
 *
 * Downgrade resistance (RFC 7672 2.2, as Postfix does it): when DANE could
 * apply, a bogus or failed lookup of the host's addresses or of its TLSA
 * records is a temporary failure of that host (the walk goes on with the
 * next), never a fallback to unauthenticated TLS or to clear text.  With a
 * secure TLSA RRset the client requires TLS and a matching record.
 *
 * Outcomes of a walk: ready (the connection takes jobs); a permanent DNS
 * answer (null MX, no such domain, no mail host): every queued job of the
 * destination is failed (5.1.10, 5.1.2); a temporary failure: if no other
 * connection of the destination is alive, the destination is "dead" for
 * the retry interval of its consecutive failures, and every queued job, and
 * every job that arrives meanwhile, is deferred until then.
 *
 * Dispatch: idle connections take queued jobs in order, as the rate limit
 * allows (GCRA, a burst of one second's worth); new connections are opened
 * while jobs wait and fewer than max_connections exist, but only one at a
 * time until one of them reached ready (a first probe of a destination that
 * may be down).  After max_messages_per_connection a connection says QUIT;
 * an idle one is kept until [delivery] timeout_idle (the client QUITs).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "delivery/sched_internal.h"
#include "io/log.h"
#include "io/maillog.h"

#define DEST_HOLD_S 5          /* after a failed walk beside live connections,
                                  no new connection for this long */

enum conn_state {
    CS_MX = 0,      /* MX lookup */
    CS_HOST,        /* A/AAAA lookups of the current host */
    CS_TLSA,        /* TLSA lookup of the current host */
    CS_CONNECT,     /* a client is connecting (greeting, EHLO, TLS) */
    CS_READY,       /* ready: idle or delivering */
    CS_QUIT,        /* QUIT sent after the last message */
};

/*
 * One connection of a destination, from its first lookup to its close.
 * Invariants: cl != NULL from CS_CONNECT on; job != NULL only in CS_READY
 * and then the client is not idle; refs on answers are held only during
 * the walk.
 */
struct conn {
    struct dest *d;
    struct conn *prev, *next;
    enum conn_state st;
    struct res_req rq_mx, rq_a, rq_aaaa, rq_tlsa;
    const struct res_answer *mx;        /* MX answer (MX destinations) */
    bool mx_secure;                     /* DNSSEC-secure MX RRset or denial */
    size_t host_i, nhosts;
    char host[RES_NAME_MAX + 1];        /* the current host */
    unsigned pending;                   /* A/AAAA lookups outstanding */
    const struct res_answer *a, *aaaa;
    struct sockaddr_storage addrs[SCHED_ADDR_LIMIT];
    socklen_t addr_lens[SCHED_ADDR_LIMIT];
    size_t naddrs, addr_i;
    unsigned tried;                     /* addresses tried in this walk */
    enum smtp_tls_policy policy;
    const struct res_answer *tlsa;      /* secure TLSA RRset (DANE) */
    struct smtp_client *cl;
    struct job *job;                    /* in flight */
    unsigned sent;                      /* messages on this connection */
    bool idle;
    char addr_text[64];
    char fail_status[12];               /* why the walk failed, so far */
    int fail_class;                     /* ... its enum metrics_dclass */
    char fail_text[300];
};

static void dispatch(struct dest *d);
static void walk_next_host(struct conn *c);
static void walk_try_addr(struct conn *c);

/* ---- destinations ------------------------------------------------------------ */

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;

    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static struct dest *dest_find(struct sched *s, const char *key)
{
    for (struct dest *d = s->dtab[hash_str(key) & (s->dcap - 1)]; d != NULL; d = d->hnext)
        if (strcmp(d->key, key) == 0)
            return d;
    return NULL;
}

static void dest_rehash(struct sched *s)
{
    size_t nc = s->dcap * 2;
    struct dest **nt = calloc(nc, sizeof *nt);

    if (nt == NULL)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < s->dcap; i++) {
        for (struct dest *d = s->dtab[i], *next; d != NULL; d = next) {
            next = d->hnext;
            size_t h = hash_str(d->key) & (nc - 1);
            d->hnext = nt[h];
            nt[h] = d;
        }
    }
    free(s->dtab);
    s->dtab = nt;
    s->dcap = nc;
}

static void on_rate_timer(struct io_op *op, int res, const char *data, unsigned flags);

int dest_literal_ip(const char *domain, char *ip, size_t cap)
{
    size_t n = strlen(domain);
    char inner[INET6_ADDRSTRLEN + 8];
    unsigned char bin[sizeof(struct in6_addr)];
    int af = AF_INET;
    const char *p;

    if (n < 3 || domain[0] != '[' || domain[n - 1] != ']' || n - 2 >= sizeof inner)
        return -1;
    memcpy(inner, domain + 1, n - 2);
    inner[n - 2] = '\0';
    p = inner;
    if (strncasecmp(p, "IPv6:", 5) == 0) {
        af = AF_INET6;
        p += 5;
    }
    if (inet_pton(af, p, bin) != 1 || inet_ntop(af, bin, ip, (socklen_t)cap) == NULL)
        return -1;
    return af;
}

struct dest *dest_get(struct sched *s, const char *domain)
{
    const struct route *rt = route_lookup(s->conf, domain);
    char key[RES_NAME_MAX + 16];
    struct dest *d;

    snprintf(key, sizeof key, "%s%s", rt ? "route:" : "", rt ? rt->domain : domain);
    if ((d = dest_find(s, key)) != NULL)
        return d;
    if ((d = calloc(1, sizeof *d)) == NULL)
        return NULL;
    d->s = s;
    d->route = rt;
    d->key = strdup(key);
    d->domain = rt ? NULL : strdup(domain);
    char ip[INET6_ADDRSTRLEN];
    bool literal = rt == NULL && dest_literal_ip(domain, ip, sizeof ip) > 0;
    if (literal)
        d->literal = strdup(ip);
    if (d->key == NULL || (rt == NULL && d->domain == NULL) || (literal && d->literal == NULL)) {
        free(d->key);
        free(d->domain);
        free(d->literal);
        free(d);
        return NULL;
    }
    d->lim = route_limits_for(s->conf, rt ? rt->domain : domain, &d->rdest);
    io_op_init(&d->rate_timer, d);
    d->idle_since = sched_now();
    if (s->ndests >= s->dcap)
        dest_rehash(s);
    size_t h = hash_str(key) & (s->dcap - 1);
    d->hnext = s->dtab[h];
    s->dtab[h] = d;
    s->ndests++;
    return d;
}

static void queue_push(struct dest *d, struct job *j)
{
    j->next = NULL;
    j->queued = true;
    if (d->qtail != NULL)
        d->qtail->next = j;
    else
        d->qhead = j;
    d->qtail = j;
    d->qlen++;
}

static struct job *queue_pop(struct dest *d)
{
    struct job *j = d->qhead;

    if (j == NULL)
        return NULL;
    d->qhead = j->next;
    if (d->qhead == NULL)
        d->qtail = NULL;
    d->qlen--;
    j->next = NULL;
    j->queued = false;
    return j;
}

bool dest_unqueue(struct job *j)
{
    struct dest *d = j->d;
    struct job *prev = NULL;

    if (!j->queued || d == NULL)
        return false;
    for (struct job *x = d->qhead; x != NULL; prev = x, x = x->next) {
        if (x != j)
            continue;
        if (prev != NULL)
            prev->next = j->next;
        else
            d->qhead = j->next;
        if (d->qtail == j)
            d->qtail = prev;
        d->qlen--;
        j->queued = false;
        j->next = NULL;
        return true;
    }
    return false;
}

/* Defer every queued job until the destination's backoff ends. */
static void defer_queue(struct dest *d)
{
    struct job *j;

    while ((j = queue_pop(d)) != NULL) {
        j->defer_until = d->dead_until;
        j->dclass = d->dead_class;
        sched_job_fail(j, SMTP_OUT_TEMP, SMTP_STAGE_CONNECT, d->dead_status, "%s",
                       d->dead_reason);
    }
}

/* Fail every queued job for good (a permanent DNS answer). */
static void fail_queue(struct dest *d, const char *status, const char *text)
{
    struct job *j;

    while ((j = queue_pop(d)) != NULL) {
        j->dclass = METRICS_DCLASS_DNS; /* only DNS answers are permanent for a whole
                                           destination */
        sched_job_fail(j, SMTP_OUT_PERM, SMTP_STAGE_NONE, status, "%s", text);
    }
}

void dest_enqueue(struct dest *d, struct job *j)
{
    queue_push(d, j);
    dispatch(d);
}

void dest_flush_domain(struct sched *s, const char *domain)
{
    const struct route *rt = route_lookup(s->conf, domain);
    char key[RES_NAME_MAX + 16];
    struct dest *d;

    snprintf(key, sizeof key, "%s%s", rt ? "route:" : "", rt ? rt->domain : domain);
    if ((d = dest_find(s, key)) != NULL) {
        d->dead_until = 0;
        d->failures = 0;
    }
}

/* ---- rate ------------------------------------------------------------------------ */

/* GCRA (a leaky bucket as a virtual scheduling time): one message every
 * T = 60 s / rate, with a burst of one second's worth. */
static uint64_t rate_interval_ns(const struct dest *d)
{
    return 60000000000ull / d->lim.max_per_minute;
}

static uint64_t rate_tau_ns(const struct dest *d)
{
    unsigned burst = d->lim.max_per_minute / 60;

    return burst > 1 ? rate_interval_ns(d) * (burst - 1) : 0;
}

/* 0: a message may go now; else ns to wait. */
static uint64_t rate_wait_ns(struct dest *d)
{
    if (d->lim.max_per_minute == 0)
        return 0;
    uint64_t now = io_loop_now(d->s->loop), tau = rate_tau_ns(d);
    if (d->tat_ns <= now + tau)
        return 0;
    return d->tat_ns - tau - now;
}

static void rate_take(struct dest *d)
{
    if (d->lim.max_per_minute == 0)
        return;
    uint64_t now = io_loop_now(d->s->loop);
    d->tat_ns = (d->tat_ns > now ? d->tat_ns : now) + rate_interval_ns(d);
}

static void on_rate_timer(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct dest *d = op->owner;

    d->rate_wait = false;
    if (res == 0 && !d->s->stopping)
        dispatch(d);
}

/* ---- connections --------------------------------------------------------------- */

static void conn_release_answers(struct conn *c)
{
    res_cancel(&c->rq_mx);
    res_cancel(&c->rq_a);
    res_cancel(&c->rq_aaaa);
    res_cancel(&c->rq_tlsa);
    if (c->mx != NULL)
        res_answer_unref(c->mx);
    if (c->a != NULL)
        res_answer_unref(c->a);
    if (c->aaaa != NULL)
        res_answer_unref(c->aaaa);
    if (c->tlsa != NULL)
        res_answer_unref(c->tlsa);
    c->mx = c->a = c->aaaa = c->tlsa = NULL;
}

/* Unlink and free a connection whose client is gone (or never was). */
static void conn_free(struct conn *c)
{
    struct dest *d = c->d;

    conn_release_answers(c);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        d->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    d->nconns--;
    d->s->nconns--;
    if (c->st == CS_READY || c->st == CS_QUIT)
        d->nready--;
    if (c->idle)
        d->nidle--;
    if (d->qlen == 0 && d->nconns == 0)
        d->idle_since = sched_now();
    free(c);
}

/* Remember why the walk failed (the last reason is reported): status, the
 * metrics class (enum metrics_dclass) and the text. */
static void conn_note(struct conn *c, const char *status, int cls, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void conn_note(struct conn *c, const char *status, int cls, const char *fmt, ...)
{
    va_list ap;

    c->fail_class = cls;
    snprintf(c->fail_status, sizeof c->fail_status, "%s", status);
    va_start(ap, fmt);
    vsnprintf(c->fail_text, sizeof c->fail_text, fmt, ap);
    va_end(ap);
}

/* The walk is over without a ready connection. */
static void walk_failed(struct conn *c, bool perm)
{
    struct dest *d = c->d;
    struct sched *s = d->s;
    char status[12], text[300];
    int64_t now = sched_now();

    int c_class = c->fail_status[0] ? c->fail_class : METRICS_DCLASS_CONNECT;

    snprintf(status, sizeof status, "%s", c->fail_status[0] ? c->fail_status : "4.4.1");
    snprintf(text, sizeof text, "%s", c->fail_text[0] ? c->fail_text : "no host could be reached");
    conn_free(c);
    if (perm) {
        fail_queue(d, status, text);
        return;
    }
    if (d->nconns > 0) {
        /* Others are alive or trying: they take the queue.  Do not open
         * another connection at once (no reconnect storm). */
        d->hold_until = now + DEST_HOLD_S;
        dispatch(d);
        return;
    }
    d->failures++;
    d->dead_until = now + route_retry_after(s->conf, d->failures);
    snprintf(d->dead_status, sizeof d->dead_status, "%s", status);
    d->dead_class = c_class;
    snprintf(d->dead_reason, sizeof d->dead_reason, "%s", text);
    maillog_dest_backoff(d->key, d->dead_until, d->failures, status, text, d->qlen);
    defer_queue(d);
}

static const struct smtp_client_ops conn_ops;

static void conn_client_params(struct conn *c, size_t i, struct smtp_client_params *p,
                               struct tls_tlsa *tl, const char **names)
{
    struct dest *d = c->d;
    struct sched *s = d->s;
    const struct route_conf *rc = s->conf;
    const struct route_timeouts *t = &rc->timeouts;
    const struct sockaddr_storage *ss = &c->addrs[i];
    size_t nn = 0;

    memset(p, 0, sizeof *p);
    p->addr = (const struct sockaddr *)ss;
    p->addr_len = c->addr_lens[i];
    if (ss->ss_family == AF_INET && rc->has_source4) {
        p->source = (const struct sockaddr *)&rc->source4;
        p->source_len = sizeof(struct sockaddr_in);
    } else if (ss->ss_family == AF_INET6 && rc->has_source6) {
        p->source = (const struct sockaddr *)&rc->source6;
        p->source_len = sizeof(struct sockaddr_in6);
    }
    p->mx_host = c->host;
    p->helo_name = s->helo;
    p->tls = c->policy;
    p->tls_ctx = s->tls;
    if (c->policy == SMTP_TLS_DANE && c->tlsa != NULL) {
        for (size_t k = 0; k < c->tlsa->n; k++)
            tl[k] = (struct tls_tlsa){c->tlsa->tlsa[k].usage, c->tlsa->tlsa[k].selector,
                                      c->tlsa->tlsa[k].mtype, c->tlsa->tlsa[k].data,
                                      c->tlsa->tlsa[k].len};
        p->tlsa = tl;
        p->ntlsa = c->tlsa->n;
        /* RFC 7672 3.2.2: the TLSA base domain and the MX host name. */
        names[nn++] = c->host;
        if (c->tlsa->canon && strcmp(c->tlsa->canon, c->tlsa->name) != 0)
            names[nn++] = c->tlsa->canon;
    } else if (c->policy == SMTP_TLS_VERIFY) {
        names[nn++] = c->host;
        if (d->domain != NULL && strcmp(d->domain, c->host) != 0)
            names[nn++] = d->domain;
    }
    if (nn > 0) {
        p->tls_names = names;
        p->ntls_names = nn;
    }
    p->tls_no_resume = !d->lim.resumption;
    if (d->rdest != NULL && d->rdest->auth_user != NULL) {
        p->auth_user = d->rdest->auth_user;
        p->auth_pass = d->rdest->auth_pass;
    }
    unsigned cmd = t->command * 1000, data = t->data * 1000;
    p->timeouts = (struct smtp_timeouts){
        .connect = t->connect * 1000,
        .greeting = cmd, .helo = cmd, .starttls = cmd, .mail = cmd, .rcpt = cmd,
        .rset = cmd, .quit = cmd,
        .data_init = data, .data_xfer = data, .data_done = data,
        .idle = t->idle * 1000,
    };
    p->log_id = NULL;
}

/* Text of an address with its port, "192.0.2.1:25" / "[2001:db8::1]:25". */
static void addr_format(const struct sockaddr_storage *ss, char *out, size_t cap)
{
    char ip[INET6_ADDRSTRLEN] = "?";

    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
        snprintf(out, cap, "[%s]:%u", ip, ntohs(a->sin6_port));
    } else {
        const struct sockaddr_in *a = (const void *)ss;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
        snprintf(out, cap, "%s:%u", ip, ntohs(a->sin_port));
    }
}

/* Connect to the current address, or go on to the next address or host. */
static void walk_try_addr(struct conn *c)
{
    struct dest *d = c->d;

    while (c->addr_i < c->naddrs) {
        size_t i = c->addr_i;
        struct smtp_client_params p;
        struct tls_tlsa *tl = NULL;
        const char *names[SMTP_CLIENT_NAMES_MAX];

        if (c->tlsa != NULL && (tl = calloc(c->tlsa->n, sizeof *tl)) == NULL) {
            conn_note(c, "4.3.0", METRICS_DCLASS_LOCAL, "out of memory");
            c->addr_i = c->naddrs;
            break;
        }
        conn_client_params(c, i, &p, tl, names);
        addr_format(&c->addrs[i], c->addr_text, sizeof c->addr_text);
        c->tried++;
        c->st = CS_CONNECT;
        c->cl = smtp_client_connect(d->s->loop, &p, &conn_ops, c);
        free(tl);
        if (c->cl != NULL)
            return;
        conn_note(c, "4.3.0", METRICS_DCLASS_CONNECT, "cannot start a connection to %s: %s",
                  c->addr_text,
                  strerror(errno));
        c->addr_i++;
    }
    c->host_i++;
    walk_next_host(c);
}

static void on_tlsa(struct res_req *req, const struct res_answer *ans)
{
    struct conn *c = req->owner;

    switch (ans->status) {
    case RES_OK:
        if (ans->sec == RES_SEC_SECURE) {
            c->tlsa = res_answer_ref(ans);
            c->policy = SMTP_TLS_DANE;
        } else {
            c->policy = SMTP_TLS_MAY; /* an insecure TLSA RRset is unusable */
        }
        break;
    case RES_NXDOMAIN:
    case RES_NODATA:
        c->policy = SMTP_TLS_MAY;
        break;
    default:
        /* RFC 7672 2.2: a TLSA lookup that fails is not "no TLSA": this
         * host cannot be used now. */
        conn_note(c, "4.7.5", METRICS_DCLASS_DNS,
                  "TLSA lookup for %s failed (%s%s%s): not delivering without it",
                  c->host, res_status_name(ans->status), ans->why ? ": " : "",
                  ans->why ? ans->why : "");
        c->host_i++;
        walk_next_host(c);
        return;
    }
    walk_try_addr(c);
}

/* Add the addresses of an answer (budget permitting). */
static void add_addrs(struct conn *c, const struct res_answer *ans, uint16_t port)
{
    for (size_t k = 0; ans != NULL && ans->status == RES_OK && k < ans->n; k++) {
        if (c->naddrs >= SCHED_ADDR_LIMIT || c->tried + c->naddrs >= SCHED_ADDR_LIMIT)
            return;
        struct sockaddr_storage *ss = &c->addrs[c->naddrs];
        memset(ss, 0, sizeof *ss);
        if (ans->type == RES_AAAA) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
            a->sin6_family = AF_INET6;
            a->sin6_port = htons(port);
            a->sin6_addr = ans->aaaa[k];
            c->addr_lens[c->naddrs++] = sizeof *a;
        } else {
            struct sockaddr_in *a = (struct sockaddr_in *)ss;
            a->sin_family = AF_INET;
            a->sin_port = htons(port);
            a->sin_addr = ans->a[k];
            c->addr_lens[c->naddrs++] = sizeof *a;
        }
    }
}

static uint16_t dest_port(const struct dest *d)
{
    return d->route ? d->route->port : d->s->conf->mx_port;
}

/* Both address lookups of the current host are in. */
static void host_addrs(struct conn *c)
{
    struct dest *d = c->d;
    bool dane_possible = d->lim.tls == ROUTE_TLS_DANE && c->mx_secure;
    bool secure = true;
    const struct res_answer *ans[2] = {c->aaaa, c->a};

    c->naddrs = c->addr_i = 0;
    for (int k = 0; k < 2; k++) {
        if (ans[k] == NULL)
            continue;
        if (res_status_temporary(ans[k]->status)) {
            if (dane_possible) {
                conn_note(c, "4.4.3", METRICS_DCLASS_DNS, "address lookup for %s failed (%s%s%s)",
                          c->host,
                          res_status_name(ans[k]->status), ans[k]->why ? ": " : "",
                          ans[k]->why ? ans[k]->why : "");
                goto next_host;
            }
            secure = false;
            continue;
        }
        if (ans[k]->sec != RES_SEC_SECURE)
            secure = false;
    }
    add_addrs(c, c->aaaa, dest_port(d));
    add_addrs(c, c->a, dest_port(d));
    if (c->naddrs == 0) {
        const struct res_answer *x = c->a != NULL ? c->a : c->aaaa;
        if (c->fail_text[0] == '\0' || x == NULL || !res_status_temporary(x->status))
            conn_note(c, "4.4.4", METRICS_DCLASS_DNS, "no address for mail host %s", c->host);
        goto next_host;
    }
    switch (d->lim.tls) {
    case ROUTE_TLS_NONE: c->policy = SMTP_TLS_NONE; break;
    case ROUTE_TLS_OPPORTUNISTIC: c->policy = SMTP_TLS_MAY; break;
    case ROUTE_TLS_ENCRYPT: c->policy = SMTP_TLS_ENCRYPT; break;
    case ROUTE_TLS_VERIFY: c->policy = SMTP_TLS_VERIFY; break;
    case ROUTE_TLS_DANE:
        c->policy = SMTP_TLS_MAY;
        if (dane_possible && secure) {
            char name[RES_NAME_MAX + 16];
            snprintf(name, sizeof name, "_%u._tcp.%s", dest_port(d), c->host);
            c->st = CS_TLSA;
            if (res_lookup(d->s->res, &c->rq_tlsa, RES_TLSA, name, on_tlsa) == 0)
                return;
            conn_note(c, "4.7.5", METRICS_DCLASS_DNS, "cannot look up the TLSA records of %s",
                      c->host);
            goto next_host;
        }
        break;
    }
    walk_try_addr(c);
    return;
next_host:
    c->host_i++;
    walk_next_host(c);
}

static void on_addr(struct res_req *req, const struct res_answer *ans)
{
    struct conn *c = req->owner;

    if (req == &c->rq_a)
        c->a = res_answer_ref(ans);
    else
        c->aaaa = res_answer_ref(ans);
    if (--c->pending == 0)
        host_addrs(c);
}

/* Look the current host up, or end the walk when no host is left. */
static void walk_next_host(struct conn *c)
{
    struct dest *d = c->d;
    struct sched *s = d->s;

    if (c->a != NULL)
        res_answer_unref(c->a);
    if (c->aaaa != NULL)
        res_answer_unref(c->aaaa);
    if (c->tlsa != NULL)
        res_answer_unref(c->tlsa);
    c->a = c->aaaa = c->tlsa = NULL;
    if (c->host_i >= c->nhosts || c->tried >= SCHED_ADDR_LIMIT) {
        walk_failed(c, false);
        return;
    }
    if (d->route != NULL)
        snprintf(c->host, sizeof c->host, "%s", d->route->host);
    else
        snprintf(c->host, sizeof c->host, "%s", c->mx->mx[c->host_i].host);
    c->st = CS_HOST;
    c->pending = 0;
    if (res_lookup(s->res, &c->rq_a, RES_A, c->host, on_addr) == 0)
        c->pending++;
    if (s->conf->ipv6 && res_lookup(s->res, &c->rq_aaaa, RES_AAAA, c->host, on_addr) == 0)
        c->pending++;
    if (c->pending == 0) {
        conn_note(c, "4.4.4", METRICS_DCLASS_DNS, "bad mail host name %s", c->host);
        c->host_i++;
        walk_next_host(c);
    }
}

static void on_mx(struct res_req *req, const struct res_answer *ans)
{
    struct conn *c = req->owner;
    struct dest *d = c->d;

    switch (ans->status) {
    case RES_OK:
        c->mx = res_answer_ref(ans);
        c->mx_secure = ans->sec == RES_SEC_SECURE;
        c->nhosts = ans->n;
        c->host_i = 0;
        walk_next_host(c);
        return;
    case RES_NULLMX:
        conn_note(c, "5.1.10", METRICS_DCLASS_DNS,
                  "recipient domain %s accepts no mail (null MX, RFC 7505)",
                  d->domain);
        walk_failed(c, true);
        return;
    case RES_NXDOMAIN:
        conn_note(c, "5.1.2", METRICS_DCLASS_DNS, "recipient domain %s does not exist",
                  d->domain);
        walk_failed(c, true);
        return;
    case RES_NODATA:
        conn_note(c, "5.1.2", METRICS_DCLASS_DNS, "recipient domain %s has no mail host",
                  d->domain);
        walk_failed(c, true);
        return;
    default:
        conn_note(c, "4.4.3", METRICS_DCLASS_DNS, "MX lookup for %s failed (%s%s%s)",
                  d->domain,
                  res_status_name(ans->status), ans->why ? ": " : "", ans->why ? ans->why : "");
        walk_failed(c, false);
        return;
    }
}

/* Open one more connection to d. */
static void conn_start(struct dest *d)
{
    struct sched *s = d->s;
    struct conn *c = calloc(1, sizeof *c);

    if (c == NULL)
        return;
    c->d = d;
    res_req_init(&c->rq_mx, c);
    res_req_init(&c->rq_a, c);
    res_req_init(&c->rq_aaaa, c);
    res_req_init(&c->rq_tlsa, c);
    c->next = d->conns;
    if (d->conns != NULL)
        d->conns->prev = c;
    d->conns = c;
    d->nconns++;
    s->nconns++;
    if (d->literal != NULL || (d->route != NULL && d->route->host_is_ip)) {
        /* An IP literal (a route's host, or the recipient's address
         * literal on the MX port): no DNS, no DANE. */
        struct sockaddr_storage *ss = &c->addrs[0];
        snprintf(c->host, sizeof c->host, "%s", d->literal ? d->literal : d->route->host);
        memset(ss, 0, sizeof *ss);
        struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
        if (inet_pton(AF_INET, c->host, &a4->sin_addr) == 1) {
            a4->sin_family = AF_INET;
            a4->sin_port = htons(dest_port(d));
            c->addr_lens[0] = sizeof *a4;
        } else {
            inet_pton(AF_INET6, c->host, &a6->sin6_addr);
            a6->sin6_family = AF_INET6;
            a6->sin6_port = htons(dest_port(d));
            c->addr_lens[0] = sizeof *a6;
        }
        c->naddrs = 1;
        c->nhosts = 1;
        switch (d->lim.tls) {
        case ROUTE_TLS_NONE: c->policy = SMTP_TLS_NONE; break;
        case ROUTE_TLS_ENCRYPT: c->policy = SMTP_TLS_ENCRYPT; break;
        case ROUTE_TLS_VERIFY: c->policy = SMTP_TLS_VERIFY; break;
        default: c->policy = SMTP_TLS_MAY; break;
        }
        walk_try_addr(c);
        return;
    }
    if (d->route != NULL) {
        c->nhosts = 1;
        c->mx_secure = true; /* the route names the host: its own records decide */
        walk_next_host(c);
        return;
    }
    c->st = CS_MX;
    if (res_lookup(s->res, &c->rq_mx, RES_MX, d->domain, on_mx) < 0) {
        conn_note(c, "5.1.2", METRICS_DCLASS_DNS, "bad recipient domain %s", d->domain);
        walk_failed(c, true);
    }
}

/* ---- the client's callbacks ---------------------------------------------------- */

static void conn_ready(struct smtp_client *cl, void *arg)
{
    struct conn *c = arg;
    struct dest *d = c->d;

    conn_release_answers(c);
    c->st = CS_READY;
    c->idle = true;
    d->nready++;
    d->nidle++;
    d->failures = 0;
    d->dead_until = 0;
    d->s->stats.connections++;
    dispatch(d);
}

static void conn_done(struct smtp_client *cl, struct smtp_msg *m, void *arg)
{
    struct conn *c = arg;
    struct dest *d = c->d;
    struct job *j = m->owner;
    struct job_ctx ctx = {.relay = c->host, .addr = c->addr_text, .info = smtp_client_info(cl)};

    c->job = NULL;
    c->sent++;
    sched_job_done(j, &ctx);
    if (!smtp_client_idle(cl))
        return; /* closing: closed() follows */
    if (c->sent >= d->lim.max_per_connection || d->s->stopping) {
        c->st = CS_QUIT;
        if (smtp_client_quit(cl) == 0)
            return;
    }
    c->idle = true;
    d->nidle++;
    dispatch(d);
}

static void conn_closed(struct smtp_client *cl, const struct smtp_result *why, void *arg)
{
    struct conn *c = arg;
    struct dest *d = c->d;

    c->cl = NULL;
    if (c->st == CS_CONNECT) {
        /* The walk goes on: next address, then next host. */
        maillog_connect_failed(d->key, c->host, c->addr_text, smtp_stage_name(why->stage),
                               why->enhanced, why->text);
        if (why->code > 0)
            conn_note(c, "4.4.2", metrics_dclass_of(why->code, smtp_stage_name(why->stage)),
                      "%s[%s] said at %s: %d %s", c->host, c->addr_text,
                      smtp_stage_name(why->stage), why->code, why->text);
        else
            conn_note(c, why->stage == SMTP_STAGE_CONNECT ? "4.4.1" : "4.7.5",
                      metrics_dclass_of(0, smtp_stage_name(why->stage)),
                      "%s[%s]: %s (at %s)", c->host, c->addr_text, why->text,
                      smtp_stage_name(why->stage));
        c->addr_i++;
        walk_try_addr(c);
        return;
    }
    conn_free(c);
    if (d->qlen > 0)
        dispatch(d);
}

static const struct smtp_client_ops conn_ops = {
    .ready = conn_ready,
    .done = conn_done,
    .closed = conn_closed,
};

/* ---- dispatch ---------------------------------------------------------------------- */

static struct conn *idle_conn(struct dest *d)
{
    for (struct conn *c = d->conns; c != NULL; c = c->next)
        if (c->idle)
            return c;
    return NULL;
}

static void dispatch(struct dest *d)
{
    struct sched *s = d->s;
    int64_t now = sched_now();

    if (s->stopping)
        return;
    if (d->dead_until > now) {
        defer_queue(d);
        return;
    }
    while (d->qhead != NULL && d->nidle > 0) {
        uint64_t wait = rate_wait_ns(d);
        if (wait > 0) {
            if (!d->rate_wait &&
                io_timer_start(s->loop, &d->rate_timer, wait / 1000000 + 1, on_rate_timer) == 0)
                d->rate_wait = true;
            return;
        }
        struct conn *c = idle_conn(d);
        struct job *j = queue_pop(d);
        c->idle = false;
        d->nidle--;
        rate_take(d);
        c->job = j;
        int r = smtp_client_send(c->cl, &j->msg);
        if (r < 0) {
            c->job = NULL;
            c->idle = true;
            d->nidle++;
            j->dclass = METRICS_DCLASS_LOCAL;
            sched_job_fail(j, SMTP_OUT_PERM, SMTP_STAGE_MAIL, "5.5.2",
                           "the message cannot be sent (bad envelope: %s)", strerror(-r));
        }
    }
    if (d->rate_wait)
        return;
    unsigned connecting = d->nconns - d->nready;
    while (d->qlen > connecting && d->nconns < d->lim.max_connections &&
           (d->nready > 0 || connecting == 0) && (d->nconns == 0 || now >= d->hold_until)) {
        unsigned before = d->nconns;
        conn_start(d);
        if (d->nconns == before)
            break; /* finished at once (failed, or out of memory) */
        connecting = d->nconns - d->nready;
    }
}

/* ---- stop and housekeeping ------------------------------------------------------ */

static void dest_free(struct dest *d)
{
    free(d->key);
    free(d->domain);
    free(d->literal);
    free(d);
}

void dest_sweep(struct sched *s, int64_t before)
{
    int64_t now = sched_now();

    for (size_t i = 0; i < s->dcap; i++) {
        struct dest **pp = &s->dtab[i];
        while (*pp != NULL) {
            struct dest *d = *pp;
            if (d->qlen == 0 && d->nconns == 0 && !io_op_busy(&d->rate_timer) &&
                d->dead_until <= now && d->idle_since < before) {
                *pp = d->hnext;
                s->ndests--;
                dest_free(d);
                continue;
            }
            pp = &d->hnext;
        }
    }
}

void dest_stop_all(struct sched *s)
{
    for (size_t i = 0; i < s->dcap; i++) {
        for (struct dest *d = s->dtab[i]; d != NULL; d = d->hnext) {
            struct job *j;
            io_cancel(s->loop, &d->rate_timer);
            while (d->conns != NULL) {
                struct conn *c = d->conns;
                if (c->cl != NULL)
                    smtp_client_close(c->cl);
                c->cl = NULL;
                j = c->job;
                c->job = NULL;
                conn_free(c);
                if (j != NULL)
                    sched_job_drop(j);
            }
            while ((j = queue_pop(d)) != NULL)
                sched_job_drop(j);
        }
    }
}

bool dest_busy(const struct sched *s)
{
    for (size_t i = 0; i < s->dcap; i++)
        for (const struct dest *d = s->dtab[i]; d != NULL; d = d->hnext)
            if (io_op_busy(&d->rate_timer))
                return true;
    return false;
}

void dest_free_all(struct sched *s)
{
    for (size_t i = 0; i < s->dcap; i++) {
        while (s->dtab[i] != NULL) {
            struct dest *d = s->dtab[i];
            s->dtab[i] = d->hnext;
            dest_free(d);
        }
    }
    s->ndests = 0;
}
