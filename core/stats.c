/* SPDX-License-Identifier: MIT */
/*
 * stats.c - gathering a snapshot of the daemon's figures and rendering it
 * (see stats.h; every name is documented in docs/metrics.md).
 *
 * A round: one struct stats_round with a slot per reactor.  stats_collect
 * starts one when none is in flight and queues its waiter on it; each
 * reactor's posted job fills its slot and the last one posts round_done
 * to the main thread, which sums the counters (metrics_sum), reads /proc,
 * calls the waiters and frees the round.  The counters are read after the
 * gauges, on the main thread: a counter may be a little ahead of a gauge
 * in the same snapshot, never behind what an earlier snapshot showed.
 *
 * The exposition follows the Prometheus text format 0.0.4: per family one
 * "# HELP" and one "# TYPE" line, then its samples; label values escaped
 * (backslash, double quote, newline); histograms as cumulative _bucket
 * series with an le="+Inf" bucket equal to _count, then _sum and _count.
 */
#include "core/stats.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "core/config.h"
#include "core/control.h"
#include "core/smtp_session.h"
#include "core/version.h"
#include "dkim/keys.h"
#include "io/log.h"
#include "io/loop.h"
#include "spool/spool.h"

/* The runs of io/metrics.h follow these enums' orders. */
_Static_assert(ROLE_SMTP == 0 && ROLE_SUBMISSION == 1 && ROLE_SUBMISSIONS == 2, "roles");
_Static_assert(RES_SEC_INSECURE == 0 && RES_SEC_SECURE == 1 && RES_SEC_BOGUS == 2, "res_sec");
_Static_assert(RES_OK == 0 && RES_ERROR == 7, "res_status");
_Static_assert(DKIM_ALGO_RSA == 0 && DKIM_ALGO_ED25519 == 1, "dkim_algo");

struct stats_round;
static void round_done(void *arg);

/* One reactor's part of a round.  Written by the reactor's thread until it
 * decrements the round's pending count; read by the main thread after. */
struct round_slot {
    struct stats_round *round;
    struct smtp_reactor *r;
    bool answered;
    uint64_t sessions;
    struct spool_totals queue;
    struct res_stats dns;
};

/* A round.  Invariant: pending counts the slots still to answer; the last
 * one to answer posts task; the round is freed by round_done only. */
struct stats_round {
    struct stats *st;              /* NULL once abandoned by stats_free */
    struct control *ctl;
    atomic_uint pending;
    struct control_task task;
    struct stats_waiter *waiters;  /* list, linked through pprev */
    unsigned n;
    struct round_slot slot[];
};

struct stats {
    struct control *ctl;
    struct smtp_reactor **r;       /* borrowed */
    unsigned nr;
    const char *io;
    struct stats_round *round;     /* in flight, or NULL */
};

/* ---- text buffer ---- */

void stats_buf_printf(struct stats_buf *b, const char *fmt, ...)
{
    va_list ap;
    if (b->oom)
        return;
    for (;;) {
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        int n = vsnprintf(b->cap ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len <= (size_t)n)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

/* ---- the process ---- */

/* Read a small /proc file into buf (NUL-terminated); length or -1. */
static ssize_t read_small(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
    return (ssize_t)n;
}

static void process_read(struct stats_process *p)
{
    char buf[4096];
    memset(p, 0, sizeof(*p));
    long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    if (tck <= 0)
        tck = 100;
    if (page <= 0)
        page = 4096;
    /* proc(5): the fields after the command name, which may hold spaces
     * and parentheses: start after the last ')'. */
    if (read_small("/proc/self/stat", buf, sizeof(buf)) > 0) {
        char *s = strrchr(buf, ')');
        unsigned long long v[25] = {0};
        int field = 3;
        char *save = NULL;
        for (char *tok = s ? strtok_r(s + 1, " ", &save) : NULL; tok != NULL && field < 25;
             tok = strtok_r(NULL, " ", &save), field++)
            v[field] = strtoull(tok, NULL, 10);
        p->cpu_seconds = (double)(v[14] + v[15]) / (double)tck;
        p->vsize_bytes = v[23];
        p->rss_bytes = v[24] * (unsigned long long)page;
        double btime = 0;
        if (read_small("/proc/stat", buf, sizeof(buf)) > 0) {
            const char *b = strstr(buf, "\nbtime ");
            if (b != NULL)
                btime = strtod(b + 7, NULL);
        }
        if (btime > 0)
            p->start_time = btime + (double)v[22] / (double)tck;
    }
    DIR *d = opendir("/proc/self/fd");
    if (d != NULL) {
        uint64_t n = 0;
        for (struct dirent *de; (de = readdir(d)) != NULL;)
            if (de->d_name[0] != '.')
                n++;
        closedir(d);
        p->open_fds = n > 0 ? n - 1 : 0; /* not the directory's own fd */
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        p->max_fds = rl.rlim_cur == RLIM_INFINITY ? 0 : (uint64_t)rl.rlim_cur;
}

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- rounds ---- */

/* On a reactor: fill this reactor's slot. */
static void slot_fill(void *arg)
{
    struct round_slot *sl = arg;
    struct stats_round *rd = sl->round;
    struct smtp_reactor *r = sl->r;

    sl->sessions = r->nsessions;
    if (r->spool != NULL)
        spool_shard_totals(r->spool, &sl->queue);
    if (r->res != NULL)
        res_ctx_stats(r->res, &sl->dns);
    sl->answered = true;
    if (atomic_fetch_sub(&rd->pending, 1) == 1)
        control_post(rd->ctl, &rd->task, round_done, rd);
}

/* Main thread: every reactor answered (or could not be asked). */
static void round_done(void *arg)
{
    struct stats_round *rd = arg;
    struct stats *st = rd->st;
    struct stats_snapshot snap;

    memset(&snap, 0, sizeof(snap));
    snap.nreactors = rd->n;
    snap.io = st != NULL && st->io != NULL ? st->io : "";
    for (unsigned i = 0; i < rd->n; i++) {
        const struct round_slot *sl = &rd->slot[i];
        if (!sl->answered)
            continue;
        snap.nanswered++;
        snap.sessions += sl->sessions;
        snap.queue_messages += sl->queue.messages;
        snap.queue_bytes += sl->queue.bytes;
        if (sl->queue.oldest != 0 &&
            (snap.queue_oldest == 0 || sl->queue.oldest < snap.queue_oldest))
            snap.queue_oldest = sl->queue.oldest;
        snap.dns.lookups += sl->dns.lookups;
        snap.dns.cache_hits += sl->dns.cache_hits;
        snap.dns.coalesced += sl->dns.coalesced;
        snap.dns.queries += sl->dns.queries;
        snap.dns.timeouts += sl->dns.timeouts;
        snap.dns.cached += sl->dns.cached;
        snap.dns.inflight += sl->dns.inflight;
        snap.dns.queued += sl->dns.queued;
    }
    metrics_sum(snap.cells);
    process_read(&snap.proc);
    snap.now = wall_now();
    if (st != NULL && st->round == rd)
        st->round = NULL;
    /* Callbacks may ask again: that starts a new round. */
    while (rd->waiters != NULL) {
        struct stats_waiter *w = rd->waiters;
        stats_cancel(w);
        w->cb(&snap, w->arg);
    }
    free(rd);
}

static struct stats_round *round_start(struct stats *st)
{
    struct stats_round *rd = calloc(1, sizeof(*rd) + st->nr * sizeof(rd->slot[0]));
    if (rd == NULL)
        return NULL;
    rd->st = st;
    rd->ctl = st->ctl;
    rd->n = st->nr;
    /* One extra count held while posting, so that no reactor can finish
     * the round before every job is out. */
    atomic_init(&rd->pending, st->nr + 1);
    for (unsigned i = 0; i < st->nr; i++) {
        rd->slot[i].round = rd;
        rd->slot[i].r = st->r[i];
        if (io_loop_post(st->r[i]->loop, slot_fill, &rd->slot[i]) < 0) {
            log_warnx("event=stats-partial reactor=%u err=\"cannot post\"", i);
            atomic_fetch_sub(&rd->pending, 1);
        }
    }
    if (atomic_fetch_sub(&rd->pending, 1) == 1)
        control_post(st->ctl, &rd->task, round_done, rd);
    return rd;
}

int stats_collect(struct stats *st, struct stats_waiter *w, stats_cb cb, void *arg)
{
    w->cb = cb;
    w->arg = arg;
    w->next = NULL;
    w->pprev = NULL;
    if (st->round == NULL)
        st->round = round_start(st);
    if (st->round == NULL) {
        log_warnx("event=stats-failed err=\"out of memory\"");
        return -ENOMEM;
    }
    w->next = st->round->waiters;
    if (w->next != NULL)
        w->next->pprev = &w->next;
    w->pprev = &st->round->waiters;
    st->round->waiters = w;
    return 0;
}

void stats_cancel(struct stats_waiter *w)
{
    if (w->pprev == NULL)
        return;
    *w->pprev = w->next;
    if (w->next != NULL)
        w->next->pprev = w->pprev;
    w->next = NULL;
    w->pprev = NULL;
}

/* ---- the `stats` control command ---- */

struct stats_cmd {
    struct stats_waiter w;
    struct control_req *req;
    bool prometheus;
};

static void on_cmd_snapshot(const struct stats_snapshot *snap, void *arg)
{
    struct stats_cmd *job = arg;
    struct stats_buf b = {0};

    if (job->prometheus)
        stats_render_prometheus(snap, &b);
    else
        stats_render_text(snap, &b);
    if (b.oom) {
        control_done(job->req, false, "out of memory");
    } else {
        for (char *line = b.p, *nl; line != NULL && *line != '\0'; line = nl + 1) {
            nl = strchr(line, '\n');
            if (nl == NULL)
                break;
            *nl = '\0';
            control_reply(job->req, "%s", line);
        }
        control_done(job->req, true, NULL);
    }
    free(b.p);
    free(job);
}

static void on_ctl_stats(struct control_req *req, int argc, char **argv, void *arg)
{
    struct stats *st = arg;
    bool prom = argc == 2 && strcmp(argv[1], "prometheus") == 0;
    if (argc > 2 || (argc == 2 && !prom)) {
        control_done(req, false, "usage: stats [prometheus]");
        return;
    }
    struct stats_cmd *job = calloc(1, sizeof(*job));
    if (job == NULL) {
        control_done(req, false, "out of memory");
        return;
    }
    job->req = req;
    job->prometheus = prom;
    if (stats_collect(st, &job->w, on_cmd_snapshot, job) < 0) {
        control_done(req, false, "out of memory");
        free(job);
    }
}

struct stats *stats_new(struct control *ctl)
{
    struct stats *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return NULL;
    st->ctl = ctl;
    st->io = "";
    if (control_register(ctl, "stats", 0,
                         "the server's figures: stats (for a person) or stats prometheus",
                         on_ctl_stats, st) < 0) {
        free(st);
        return NULL;
    }
    return st;
}

void stats_attach(struct stats *st, struct smtp_reactor **r, unsigned n, const char *io)
{
    st->r = r;
    st->nr = n;
    st->io = io != NULL ? io : "";
}

void stats_free(struct stats *st, int timeout_ms)
{
    if (st == NULL)
        return;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (st->round != NULL) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        long left = timeout_ms - ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
        if (left <= 0)
            break;
        control_wait_posted(st->ctl, (int)left);
    }
    if (st->round != NULL) {
        /* Reactors may still write into it: leave it allocated. */
        log_warnx("event=stats-abandoned (a reactor did not answer in time)");
        st->round->st = NULL;
        st->round->waiters = NULL;
    }
    free(st);
}

/* ---- Prometheus text ---- */

/* A label value, escaped (text format: backslash, double quote, newline). */
static void put_escaped(struct stats_buf *b, const char *s)
{
    for (; *s != '\0'; s++) {
        if (*s == '\\')
            stats_buf_printf(b, "\\\\");
        else if (*s == '"')
            stats_buf_printf(b, "\\\"");
        else if (*s == '\n')
            stats_buf_printf(b, "\\n");
        else
            stats_buf_printf(b, "%c", *s);
    }
}

static void head(struct stats_buf *b, const char *name, const char *type, const char *help)
{
    stats_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A double as Prometheus reads it (Go's ParseFloat). */
static void put_double(struct stats_buf *b, double v)
{
    if (v == (double)(int64_t)v && v > -9007199254740992.0 && v < 9007199254740992.0)
        stats_buf_printf(b, "%" PRId64, (int64_t)v);
    else
        stats_buf_printf(b, "%.15g", v);
}

/* Nanoseconds as decimal seconds, exactly, trailing zeros cut ("0.00005"). */
static void ns_text(uint64_t ns, char *out, size_t cap)
{
    snprintf(out, cap, "%" PRIu64 ".%09" PRIu64, ns / 1000000000u, ns % 1000000000u);
    char *e = out + strlen(out) - 1;
    while (*e == '0')
        *e-- = '\0';
    if (*e == '.')
        *e = '\0';
}

static void gauge(struct stats_buf *b, const char *name, const char *help, double v)
{
    head(b, name, "gauge", help);
    stats_buf_printf(b, "%s ", name);
    put_double(b, v);
    stats_buf_printf(b, "\n");
}

static void counter1(struct stats_buf *b, const char *name, const char *help, uint64_t v)
{
    head(b, name, "counter", help);
    stats_buf_printf(b, "%s %" PRIu64 "\n", name, v);
}

/* A counter family with one label: values[i] is the label value of cell
 * base + i. */
static void counterv(struct stats_buf *b, const struct stats_snapshot *s, const char *name,
                     const char *help, const char *label, const char *const *values, size_t n,
                     unsigned base)
{
    head(b, name, "counter", help);
    for (size_t i = 0; i < n; i++) {
        stats_buf_printf(b, "%s{%s=\"", name, label);
        put_escaped(b, values[i]);
        stats_buf_printf(b, "\"} %" PRIu64 "\n", s->cells[base + i]);
    }
}

/* A histogram with a `file` label (segment, journal); ns: observations
 * are nanoseconds shown as seconds. */
static void histogram(struct stats_buf *b, const struct stats_snapshot *s, const char *name,
                      const char *help, enum metrics_hist h0, bool ns)
{
    static const char *const files[] = {"segment", "journal"};
    head(b, name, "histogram", help);
    for (unsigned f = 0; f < 2; f++) {
        enum metrics_hist h = (enum metrics_hist)(h0 + f);
        size_t n;
        const uint64_t *bounds = metrics_hist_bounds(h, &n);
        uint64_t cum = 0;
        char le[32];
        for (size_t i = 0; i <= n; i++) {
            cum += s->cells[metrics_hist_cell(h, i)];
            if (i == n)
                snprintf(le, sizeof(le), "+Inf");
            else if (ns)
                ns_text(bounds[i], le, sizeof(le));
            else
                snprintf(le, sizeof(le), "%" PRIu64, bounds[i]);
            stats_buf_printf(b, "%s_bucket{file=\"%s\",le=\"%s\"} %" PRIu64 "\n", name,
                             files[f], le, cum);
        }
        uint64_t sum = s->cells[metrics_hist_sum_cell(h)];
        if (ns) {
            ns_text(sum, le, sizeof(le));
            stats_buf_printf(b, "%s_sum{file=\"%s\"} %s\n", name, files[f], le);
        } else {
            stats_buf_printf(b, "%s_sum{file=\"%s\"} %" PRIu64 "\n", name, files[f], sum);
        }
        stats_buf_printf(b, "%s_count{file=\"%s\"} %" PRIu64 "\n", name, files[f], cum);
    }
}

static const char *const role_names[] = {"smtp", "submission", "submissions"};
static const char *const refused_names[] = {"max_connections", "connections_per_address",
                                             "memory", "penalty_box"};
static const char *const auth_names[] = {"success", "failure", "throttled"};
static const char *const auth_verify_names[] = {"argon2id", "shared", "cache"};
static const char *const maildrop_names[] = {"queued", "rejected", "failed"};
static const char *const file_names[] = {"segment", "journal"};

void stats_render_prometheus(const struct stats_snapshot *s, struct stats_buf *b)
{
    const char *reject[METRICS_REJECT_N], *dclass[METRICS_DCLASS_N];
    const char *sec[3], *status[8], *dkim[2];
    for (unsigned i = 0; i < METRICS_REJECT_N; i++)
        reject[i] = metrics_reject_name(i);
    for (unsigned i = 0; i < METRICS_DCLASS_N; i++)
        dclass[i] = metrics_dclass_name(i);
    for (unsigned i = 0; i < 3; i++)
        sec[i] = res_sec_name(i);
    for (unsigned i = 0; i < 8; i++)
        status[i] = res_status_name(i);
    for (unsigned i = 0; i < 2; i++)
        dkim[i] = dkim_algo_sig_name(i);

    head(b, "ortoo_info", "gauge", "Always 1; the version and the io backend in labels.");
    stats_buf_printf(b, "ortoo_info{version=\"");
    put_escaped(b, ORTOO_VERSION);
    stats_buf_printf(b, "\",io=\"");
    put_escaped(b, s->io != NULL ? s->io : "");
    stats_buf_printf(b, "\"} 1\n");
    gauge(b, "ortoo_uptime_seconds", "Seconds since the process started.",
          s->proc.start_time > 0 && s->now > s->proc.start_time ? s->now - s->proc.start_time
                                                                 : 0);
    gauge(b, "ortoo_reactors", "Reactor threads.", s->nreactors);

    /* Connections. */
    counterv(b, s, "ortoo_connections_accepted_total",
             "TCP connections accepted, by listener role (including those then refused by a "
             "limit).",
             "role", role_names, 3, METRICS_CONN_ACCEPTED);
    counterv(b, s, "ortoo_connections_refused_total",
             "Connections refused at once by a limit (421), by the limit.", "reason",
             refused_names, 4, METRICS_CONN_REFUSED);
    gauge(b, "ortoo_connections_open", "SMTP sessions open now.", (double)s->sessions);

    /* Receiving. */
    counter1(b, "ortoo_messages_received_total",
             "Messages queued: made durable and acknowledged with 250 (SMTP and local "
             "submission).",
             s->cells[METRICS_MSG_RECEIVED]);
    counter1(b, "ortoo_messages_received_recipients_total", "Recipients of the messages queued.",
             s->cells[METRICS_MSG_RECEIVED_RCPTS]);
    counter1(b, "ortoo_messages_received_bytes_total",
             "Bytes of the messages queued (wire form, as stored).",
             s->cells[METRICS_MSG_RECEIVED_BYTES]);
    counterv(b, s, "ortoo_messages_rejected_total",
             "Messages and recipients refused (event=rejected log lines), by reason.", "reason",
             reject, METRICS_REJECT_N, METRICS_MSG_REJECTED);

    /* Delivery. */
    counter1(b, "ortoo_recipients_delivered_total",
             "Recipients delivered (one per recipient and successful attempt).",
             s->cells[METRICS_DELIVERED]);
    counterv(b, s, "ortoo_recipients_deferred_total",
             "Delivery attempts that failed temporarily, per recipient, by class.", "class",
             dclass, METRICS_DCLASS_N, METRICS_DEFERRED);
    counterv(b, s, "ortoo_recipients_bounced_total",
             "Recipients that failed for good (a DSN follows unless suppressed), by class.",
             "class", dclass, METRICS_DCLASS_N, METRICS_BOUNCED);

    /* Queue. */
    gauge(b, "ortoo_queue_messages", "Messages in the queue (not yet final for every recipient).",
          (double)s->queue_messages);
    gauge(b, "ortoo_queue_bytes", "Bytes of the messages in the queue.",
          (double)s->queue_bytes);
    gauge(b, "ortoo_queue_oldest_age_seconds",
          "Age of the oldest message in the queue (0 when it is empty).",
          s->queue_oldest > 0 && s->now > (double)s->queue_oldest
              ? (double)(int64_t)(s->now - (double)s->queue_oldest)
              : 0);

    /* TLS. */
    head(b, "ortoo_tls_handshakes_total", "counter",
         "TLS handshakes by side (server: inbound STARTTLS and port 465; client: outbound) "
         "and result (full, resumed, failed).");
    static const char *const results[] = {"full", "resumed", "failed"};
    for (unsigned side = 0; side < 2; side++)
        for (unsigned i = 0; i < 3; i++)
            stats_buf_printf(b, "ortoo_tls_handshakes_total{side=\"%s\",result=\"%s\"} %" PRIu64
                                "\n",
                             side ? "client" : "server", results[i],
                             s->cells[METRICS_TLS_HANDSHAKES + side * 3 + i]);

    /* DNS. */
    counterv(b, s, "ortoo_dns_lookups_total", "DNS lookups answered, by DNSSEC state.", "dnssec",
             sec, 3, METRICS_DNS_SEC);
    counterv(b, s, "ortoo_dns_lookup_results_total", "DNS lookups answered, by result.",
             "status", status, 8, METRICS_DNS_STATUS);
    counter1(b, "ortoo_dns_cache_hits_total", "DNS lookups answered from ortoo's cache.",
             s->dns.cache_hits);
    counter1(b, "ortoo_dns_queries_total", "DNS queries handed to the resolver library.",
             s->dns.queries);
    counter1(b, "ortoo_dns_timeouts_total", "DNS queries that hit ortoo's deadline.",
             s->dns.timeouts);
    gauge(b, "ortoo_dns_cache_entries", "Answers in ortoo's DNS cache.", (double)s->dns.cached);
    gauge(b, "ortoo_dns_queries_inflight", "DNS queries in flight or waiting for a slot.",
          (double)(s->dns.inflight + s->dns.queued));

    /* DKIM, AUTH, local submission. */
    counterv(b, s, "ortoo_dkim_signatures_total", "DKIM signatures made, by algorithm.",
             "algorithm", dkim, 2, METRICS_DKIM_SIGNED);
    counterv(b, s, "ortoo_auth_attempts_total",
             "SMTP AUTH attempts: success, failure (wrong credentials), throttled (refused "
             "before checking after too many failures).",
             "result", auth_names, 3, METRICS_AUTH);
    counterv(b, s, "ortoo_auth_verifications_total",
             "How admitted SMTP AUTH attempts were checked: argon2id (a new password "
             "verification), shared (joined an identical one in flight), cache (a recent "
             "success).",
             "by", auth_verify_names, 3, METRICS_AUTH_VERIFY);
    counterv(b, s, "ortoo_maildrop_pickups_total",
             "Local submissions (sendmail) picked up from the maildrop: queued, rejected "
             "(quarantined), failed (the spool refused; retried).",
             "result", maildrop_names, 3, METRICS_MAILDROP);

    /* Spool. */
    histogram(b, s, "ortoo_spool_batch_entries",
              "Entries per group-commit batch (messages for segment files, state changes for "
              "journals).",
              METRICS_H_SPOOL_ENTRIES, false);
    histogram(b, s, "ortoo_spool_sync_seconds",
              "Time from the start of a group-commit batch to the end of its fdatasync.",
              METRICS_H_SPOOL_SYNC, true);
    counterv(b, s, "ortoo_spool_written_bytes_total", "Bytes made durable by group commits.",
             "file", file_names, 2, METRICS_SPOOL_BYTES);
    counterv(b, s, "ortoo_spool_write_errors_total",
             "Group-commit batches that failed (every commit in them got the error).", "file",
             file_names, 2, METRICS_SPOOL_ERRORS);

    /* The process (names as Prometheus client libraries use them). */
    gauge(b, "process_start_time_seconds", "Start time of the process since the Unix epoch.",
          s->proc.start_time);
    head(b, "process_cpu_seconds_total", "counter", "User and system CPU time spent, seconds.");
    stats_buf_printf(b, "process_cpu_seconds_total ");
    put_double(b, s->proc.cpu_seconds);
    stats_buf_printf(b, "\n");
    gauge(b, "process_resident_memory_bytes", "Resident memory size in bytes.",
          (double)s->proc.rss_bytes);
    gauge(b, "process_virtual_memory_bytes", "Virtual memory size in bytes.",
          (double)s->proc.vsize_bytes);
    gauge(b, "process_open_fds", "Open file descriptors.", (double)s->proc.open_fds);
    gauge(b, "process_max_fds", "Limit of open file descriptors.", (double)s->proc.max_fds);
}

/* ---- for a person ---- */

/* "12", "12.3 KB", "4.5 MB" ... */
static const char *human_bytes(uint64_t v, char *out, size_t cap)
{
    static const char *const units[] = {"B", "KB", "MB", "GB", "TB"};
    double d = (double)v;
    unsigned u = 0;
    while (d >= 1000 && u < 4) {
        d /= 1000;
        u++;
    }
    if (u == 0)
        snprintf(out, cap, "%" PRIu64 " B", v);
    else
        snprintf(out, cap, "%.1f %s", d, units[u]);
    return out;
}

/* "3d 4h", "2h 5m", "4m 7s", "12s". */
static const char *human_age(double secs, char *out, size_t cap)
{
    uint64_t s = secs > 0 ? (uint64_t)secs : 0;
    if (s >= 86400)
        snprintf(out, cap, "%" PRIu64 "d %" PRIu64 "h", s / 86400, s % 86400 / 3600);
    else if (s >= 3600)
        snprintf(out, cap, "%" PRIu64 "h %" PRIu64 "m", s / 3600, s % 3600 / 60);
    else if (s >= 60)
        snprintf(out, cap, "%" PRIu64 "m %" PRIu64 "s", s / 60, s % 60);
    else
        snprintf(out, cap, "%" PRIu64 "s", s);
    return out;
}

/* " (a 1, b 2)" listing the non-zero cells base..base+n-1, or nothing. */
static void breakdown(struct stats_buf *b, const struct stats_snapshot *s, unsigned base,
                      const char *const *names, size_t n)
{
    bool any = false;
    for (size_t i = 0; i < n; i++) {
        uint64_t v = s->cells[base + i];
        if (v == 0)
            continue;
        stats_buf_printf(b, "%s%s %" PRIu64, any ? ", " : " (", names[i], v);
        any = true;
    }
    if (any)
        stats_buf_printf(b, ")");
}

static uint64_t cells_sum(const struct stats_snapshot *s, unsigned base, size_t n)
{
    uint64_t t = 0;
    for (size_t i = 0; i < n; i++)
        t += s->cells[base + i];
    return t;
}

/* The upper bound (ns) of the bucket holding quantile q of h, or 0. */
static uint64_t hist_quantile(const struct stats_snapshot *s, enum metrics_hist h, double q,
                              bool *over)
{
    size_t n;
    const uint64_t *bounds = metrics_hist_bounds(h, &n);
    uint64_t total = 0, cum = 0;
    for (size_t i = 0; i <= n; i++)
        total += s->cells[metrics_hist_cell(h, i)];
    *over = false;
    if (total == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        cum += s->cells[metrics_hist_cell(h, i)];
        if ((double)cum >= q * (double)total)
            return bounds[i];
    }
    *over = true;
    return bounds[n - 1];
}

static void spool_line(struct stats_buf *b, const struct stats_snapshot *s, unsigned f)
{
    enum metrics_hist he = (enum metrics_hist)(METRICS_H_SPOOL_ENTRIES + f);
    enum metrics_hist hs = (enum metrics_hist)(METRICS_H_SPOOL_SYNC + f);
    size_t n;
    metrics_hist_bounds(he, &n);
    uint64_t batches = 0;
    for (size_t i = 0; i <= n; i++)
        batches += s->cells[metrics_hist_cell(he, i)];
    stats_buf_printf(b, "%s %" PRIu64 " batches", file_names[f], batches);
    if (batches > 0) {
        bool over50, over99;
        uint64_t p50 = hist_quantile(s, hs, 0.5, &over50);
        uint64_t p99 = hist_quantile(s, hs, 0.99, &over99);
        stats_buf_printf(b, ", %.1f entries each, sync avg %.2f ms, p50 %s%.2f ms, p99 %s%.2f ms",
                         (double)s->cells[metrics_hist_sum_cell(he)] / (double)batches,
                         (double)s->cells[metrics_hist_sum_cell(hs)] / (double)batches / 1e6,
                         over50 ? "> " : "<= ", (double)p50 / 1e6, over99 ? "> " : "<= ",
                         (double)p99 / 1e6);
    }
    uint64_t errs = s->cells[METRICS_SPOOL_ERRORS + f];
    if (errs > 0)
        stats_buf_printf(b, ", %" PRIu64 " failed", errs);
}

void stats_render_text(const struct stats_snapshot *s, struct stats_buf *b)
{
    char t1[32], t2[32];
    const char *reject[METRICS_REJECT_N], *dclass[METRICS_DCLASS_N];
    const char *sec[3], *dkim[2];
    for (unsigned i = 0; i < METRICS_REJECT_N; i++)
        reject[i] = metrics_reject_name(i);
    for (unsigned i = 0; i < METRICS_DCLASS_N; i++)
        dclass[i] = metrics_dclass_name(i);
    for (unsigned i = 0; i < 3; i++)
        sec[i] = res_sec_name(i);
    for (unsigned i = 0; i < 2; i++)
        dkim[i] = dkim_algo_sig_name(i);

    stats_buf_printf(b, "server:      ortoo %s, up %s, %u reactors, io %s\n", ORTOO_VERSION,
                     human_age(s->proc.start_time > 0 ? s->now - s->proc.start_time : 0, t1,
                               sizeof(t1)),
                     s->nreactors, s->io != NULL && s->io[0] ? s->io : "-");
    if (s->nanswered < s->nreactors)
        stats_buf_printf(b, "warning:     %u of %u reactors did not answer: sessions and "
                            "queue are partial\n",
                         s->nreactors - s->nanswered, s->nreactors);
    stats_buf_printf(b, "connections: %" PRIu64 " open, %" PRIu64 " accepted",
                     s->sessions, cells_sum(s, METRICS_CONN_ACCEPTED, 3));
    breakdown(b, s, METRICS_CONN_ACCEPTED, role_names, 3);
    stats_buf_printf(b, ", %" PRIu64 " refused by a limit", cells_sum(s, METRICS_CONN_REFUSED, 4));
    breakdown(b, s, METRICS_CONN_REFUSED, refused_names, 4);
    stats_buf_printf(b, "\nreceived:    %" PRIu64 " messages, %" PRIu64 " recipients, %s\n",
                     s->cells[METRICS_MSG_RECEIVED], s->cells[METRICS_MSG_RECEIVED_RCPTS],
                     human_bytes(s->cells[METRICS_MSG_RECEIVED_BYTES], t1, sizeof(t1)));
    stats_buf_printf(b, "rejected:    %" PRIu64,
                     cells_sum(s, METRICS_MSG_REJECTED, METRICS_REJECT_N));
    breakdown(b, s, METRICS_MSG_REJECTED, reject, METRICS_REJECT_N);
    stats_buf_printf(b, "\ndelivered:   %" PRIu64 " recipients\n", s->cells[METRICS_DELIVERED]);
    stats_buf_printf(b, "deferred:    %" PRIu64,
                     cells_sum(s, METRICS_DEFERRED, METRICS_DCLASS_N));
    breakdown(b, s, METRICS_DEFERRED, dclass, METRICS_DCLASS_N);
    stats_buf_printf(b, "\nbounced:     %" PRIu64, cells_sum(s, METRICS_BOUNCED, METRICS_DCLASS_N));
    breakdown(b, s, METRICS_BOUNCED, dclass, METRICS_DCLASS_N);
    stats_buf_printf(b, "\nqueue:       %" PRIu64 " messages, %s", s->queue_messages,
                     human_bytes(s->queue_bytes, t1, sizeof(t1)));
    if (s->queue_oldest > 0)
        stats_buf_printf(b, ", oldest %s",
                         human_age(s->now - (double)s->queue_oldest, t2, sizeof(t2)));
    stats_buf_printf(b, "\ntls:         server %" PRIu64 " full, %" PRIu64 " resumed, %" PRIu64
                        " failed; client %" PRIu64 " full, %" PRIu64 " resumed, %" PRIu64
                        " failed\n",
                     s->cells[METRICS_TLS_SERVER_FULL], s->cells[METRICS_TLS_SERVER_RESUMED],
                     s->cells[METRICS_TLS_SERVER_FAILED], s->cells[METRICS_TLS_CLIENT_FULL],
                     s->cells[METRICS_TLS_CLIENT_RESUMED], s->cells[METRICS_TLS_CLIENT_FAILED]);
    stats_buf_printf(b, "dns:         %" PRIu64 " lookups", cells_sum(s, METRICS_DNS_SEC, 3));
    breakdown(b, s, METRICS_DNS_SEC, sec, 3);
    stats_buf_printf(b, ", %" PRIu64 " from the cache, %" PRIu64 " queries, %" PRIu64
                        " timeouts\n",
                     s->dns.cache_hits, s->dns.queries, s->dns.timeouts);
    stats_buf_printf(b, "dkim:        %" PRIu64 " signatures", cells_sum(s, METRICS_DKIM_SIGNED, 2));
    breakdown(b, s, METRICS_DKIM_SIGNED, dkim, 2);
    stats_buf_printf(b, "\nauth:        %" PRIu64 " succeeded, %" PRIu64 " failed, %" PRIu64
                        " throttled; %" PRIu64 " password checks, %" PRIu64 " shared, %" PRIu64
                        " cached\n",
                     s->cells[METRICS_AUTH_SUCCESS], s->cells[METRICS_AUTH_FAILURE],
                     s->cells[METRICS_AUTH_THROTTLED], s->cells[METRICS_AUTH_VERIFY + 0],
                     s->cells[METRICS_AUTH_VERIFY + 1], s->cells[METRICS_AUTH_VERIFY + 2]);
    stats_buf_printf(b, "maildrop:    %" PRIu64 " queued, %" PRIu64 " rejected, %" PRIu64
                        " failed\n",
                     s->cells[METRICS_MAILDROP_QUEUED], s->cells[METRICS_MAILDROP_REJECTED],
                     s->cells[METRICS_MAILDROP_FAILED]);
    stats_buf_printf(b, "spool:       ");
    spool_line(b, s, 0);
    stats_buf_printf(b, "; ");
    spool_line(b, s, 1);
    stats_buf_printf(b, "; %s written\n",
                     human_bytes(cells_sum(s, METRICS_SPOOL_BYTES, 2), t1, sizeof(t1)));
    stats_buf_printf(b, "process:     pid %ld, rss %s, %" PRIu64 " fds open", (long)getpid(),
                     human_bytes(s->proc.rss_bytes, t1, sizeof(t1)), s->proc.open_fds);
    if (s->proc.max_fds > 0)
        stats_buf_printf(b, " (limit %" PRIu64 ")", s->proc.max_fds);
    stats_buf_printf(b, ", cpu %.2f s\n", s->proc.cpu_seconds);
}
