/* SPDX-License-Identifier: MIT */
/*
 * test_stats.c - unit tests for core/stats.c.
 *
 * The exposition: a snapshot with a distinct value in every counter cell is
 * rendered and read back by a strict parser of the Prometheus text format
 * 0.0.4 written here (HELP then TYPE once per family before its samples,
 * samples of a family together, valid metric and label names, escaped label
 * values, numbers that parse, no duplicate series, counters named _total,
 * histogram buckets ascending and cumulative with +Inf equal to _count);
 * every counter cell must show up, so a cell added to io/metrics.h but not
 * rendered fails here.  Label values that need escaping are escaped.
 *
 * The gathering: two reactor threads on real loops answer a round posted by
 * stats_collect; waiters run later, never inside the call; two waiters
 * share one round; a cancelled one is not called; a round with no reactors
 * still answers on a later turn.  The `stats` control command answers
 * through control_call() in both forms.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/control.h"
#include "core/smtp_session.h"
#include "core/stats.h"
#include "io/loop.h"

/* ---- a strict reader of the text format ---- */

#define MAX_FAMILIES 128
#define MAX_SERIES 1024

struct family {
    char name[128];
    char type[16];
    bool help, typed, done;
};

struct series {
    char key[512];                 /* name{labels} as written */
    double value;
};

struct exposition {
    struct family fam[MAX_FAMILIES];
    size_t nfam;
    struct series ser[MAX_SERIES];
    size_t nser;
    int cur;                       /* family of the last line, -1 */
};

static bool name_ok(const char *s, size_t n, bool label)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                     (!label && c == ':');
        if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
            return false;
    }
    return !(label && n >= 2 && s[0] == '_' && s[1] == '_');
}

static int family_find(struct exposition *e, const char *name, size_t n)
{
    for (size_t i = 0; i < e->nfam; i++)
        if (strlen(e->fam[i].name) == n && memcmp(e->fam[i].name, name, n) == 0)
            return (int)i;
    return -1;
}

static double value_parse(const char *s)
{
    if (strcmp(s, "+Inf") == 0)
        return INFINITY;
    if (strcmp(s, "-Inf") == 0)
        return -INFINITY;
    if (strcmp(s, "NaN") == 0)
        return NAN;
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end != '\0')
        fail_msg("bad value '%s'", s);
    return v;
}

/* The family a sample name belongs to (histograms: _bucket/_sum/_count). */
static int sample_family(struct exposition *e, const char *name, size_t n)
{
    int f = family_find(e, name, n);
    if (f >= 0)
        return f;
    static const char *const sfx[] = {"_bucket", "_sum", "_count"};
    for (size_t k = 0; k < 3; k++) {
        size_t l = strlen(sfx[k]);
        if (n > l && memcmp(name + n - l, sfx[k], l) == 0) {
            f = family_find(e, name, n - l);
            if (f >= 0 && strcmp(e->fam[f].type, "histogram") == 0)
                return f;
        }
    }
    return -1;
}

static void parse_line(struct exposition *e, char *line)
{
    if (strncmp(line, "# HELP ", 7) == 0 || strncmp(line, "# TYPE ", 7) == 0) {
        bool help = line[2] == 'H';
        char *name = line + 7, *sp = strchr(name, ' ');
        assert_non_null(sp);
        size_t n = (size_t)(sp - name);
        assert_true(name_ok(name, n, false));
        int f = family_find(e, name, n);
        if (help) {
            if (f >= 0)
                fail_msg("second HELP for %.*s", (int)n, name);
            assert_true(e->nfam < MAX_FAMILIES);
            f = (int)e->nfam++;
            memcpy(e->fam[f].name, name, n);
            e->fam[f].help = true;
            /* HELP text: only \\ and \n escapes. */
            for (const char *p = sp + 1; *p; p++)
                if (*p == '\\') {
                    assert_true(p[1] == '\\' || p[1] == 'n');
                    p++;
                }
            assert_true(strlen(sp + 1) > 0);
        } else {
            if (f < 0 || e->fam[f].typed || e->cur != f)
                fail_msg("TYPE for %.*s without its HELP just before, or twice", (int)n, name);
            const char *t = sp + 1;
            assert_true(strcmp(t, "counter") == 0 || strcmp(t, "gauge") == 0 ||
                        strcmp(t, "histogram") == 0);
            snprintf(e->fam[f].type, sizeof(e->fam[f].type), "%s", t);
            e->fam[f].typed = true;
            if (strcmp(t, "counter") == 0 &&
                (n < 6 || memcmp(name + n - 6, "_total", 6) != 0))
                fail_msg("counter %.*s does not end in _total", (int)n, name);
        }
        e->cur = f;
        return;
    }
    assert_true(line[0] != '#' && line[0] != '\0');
    /* name [{labels}] SP value */
    char *p = line;
    while (*p && *p != '{' && *p != ' ')
        p++;
    size_t n = (size_t)(p - line);
    assert_true(name_ok(line, n, false));
    int f = sample_family(e, line, n);
    if (f < 0 || !e->fam[f].typed)
        fail_msg("sample %s before its TYPE", line);
    if (f != e->cur)
        fail_msg("sample %s apart from its family", line);
    if (*p == '{') {
        p++;
        bool first = true;
        while (*p != '}') {
            if (!first) {
                assert_int_equal(*p, ',');
                p++;
            }
            first = false;
            char *ln = p;
            while (*p && *p != '=')
                p++;
            assert_true(name_ok(ln, (size_t)(p - ln), true));
            assert_int_equal(p[0], '=');
            assert_int_equal(p[1], '"');
            p += 2;
            while (*p != '"') {
                assert_true(*p != '\0' && *p != '\n');
                if (*p == '\\') {
                    assert_true(p[1] == '\\' || p[1] == '"' || p[1] == 'n');
                    p++;
                }
                p++;
            }
            p++;
        }
        p++;
    }
    assert_int_equal(*p, ' ');
    *p = '\0';
    assert_true(e->nser < MAX_SERIES);
    for (size_t i = 0; i < e->nser; i++)
        if (strcmp(e->ser[i].key, line) == 0)
            fail_msg("duplicate series %s", line);
    snprintf(e->ser[e->nser].key, sizeof(e->ser[0].key), "%s", line);
    double v = value_parse(p + 1);
    e->ser[e->nser++].value = v;
    if (strcmp(e->fam[f].type, "counter") == 0)
        assert_true(v >= 0);
}

/* Histogram rules for every family of that type: per label set, buckets
 * in ascending le, cumulative, +Inf last and equal to _count. */
static void check_histograms(const struct exposition *e)
{
    for (size_t f = 0; f < e->nfam; f++) {
        if (strcmp(e->fam[f].type, "histogram") != 0)
            continue;
        char prefix[160];
        snprintf(prefix, sizeof(prefix), "%s_bucket{", e->fam[f].name);
        double last_le = -INFINITY, last_cum = 0;
        char last_set[256] = "";
        for (size_t i = 0; i < e->nser; i++) {
            const char *k = e->ser[i].key;
            if (strncmp(k, prefix, strlen(prefix)) != 0)
                continue;
            const char *le = strstr(k, ",le=\"");
            if (le == NULL)
                le = strstr(k, "{le=\"");
            assert_non_null(le);
            le++;
            char set[256];
            snprintf(set, sizeof(set), "%.*s", (int)(le - k), k);
            if (strcmp(set, last_set) != 0) {
                snprintf(last_set, sizeof(last_set), "%s", set);
                last_le = -INFINITY;
                last_cum = 0;
            }
            char lev[32];
            snprintf(lev, sizeof(lev), "%.*s", (int)strcspn(le + 4, "\""), le + 4);
            double l = value_parse(lev);
            assert_true(l > last_le);
            assert_true(e->ser[i].value >= last_cum);
            last_le = l;
            last_cum = e->ser[i].value;
            if (isinf(l)) {
                /* _count of the same label set equals the +Inf bucket. */
                char ck[512];
                const char *labels = set + strlen(prefix) - 1; /* "{file=...," */
                snprintf(ck, sizeof(ck), "%s_count%.*s}", e->fam[f].name,
                         (int)(strlen(labels) - 1), labels);
                bool found = false;
                for (size_t j = 0; j < e->nser; j++)
                    if (strcmp(e->ser[j].key, ck) == 0) {
                        assert_true(e->ser[j].value == last_cum);
                        found = true;
                    }
                if (!found)
                    fail_msg("no %s", ck);
            }
        }
        assert_true(isinf(last_le));
    }
}

static void parse_exposition(char *text, struct exposition *e)
{
    memset(e, 0, sizeof(*e));
    e->cur = -1;
    size_t len = strlen(text);
    assert_true(len > 0 && text[len - 1] == '\n');
    for (char *line = text, *nl; *line != '\0'; line = nl + 1) {
        nl = strchr(line, '\n');
        *nl = '\0';
        parse_line(e, line);
    }
    for (size_t f = 0; f < e->nfam; f++)
        assert_true(e->fam[f].help && e->fam[f].typed);
    check_histograms(e);
}

static bool has_value(const struct exposition *e, double v)
{
    for (size_t i = 0; i < e->nser; i++)
        if (e->ser[i].value == v)
            return true;
    return false;
}

static const struct series *find_series(const struct exposition *e, const char *key)
{
    for (size_t i = 0; i < e->nser; i++)
        if (strcmp(e->ser[i].key, key) == 0)
            return &e->ser[i];
    return NULL;
}

/* ---- the exposition ---- */

static void snapshot_fill(struct stats_snapshot *s)
{
    memset(s, 0, sizeof(*s));
    for (unsigned i = 0; i < METRICS_NCOUNTERS; i++)
        s->cells[i] = 1000000 + i;
    for (unsigned h = 0; h < METRICS_NHIST; h++) {
        size_t n;
        metrics_hist_bounds(h, &n);
        for (size_t b = 0; b <= n; b++)
            s->cells[metrics_hist_cell(h, b)] = b % 3;
        s->cells[metrics_hist_sum_cell(h)] = 123456789;
    }
    s->now = 1700000100.5;
    s->nreactors = 2;
    s->nanswered = 2;
    s->io = "uring";
    s->sessions = 7;
    s->queue_messages = 12;
    s->queue_bytes = 34567;
    s->queue_oldest = 1700000000;
    s->dns.cache_hits = 5;
    s->proc.start_time = 1700000000.25;
    s->proc.cpu_seconds = 1.5;
    s->proc.rss_bytes = 1 << 20;
    s->proc.open_fds = 9;
    s->proc.max_fds = 1024;
}

static void test_exposition(void **state)
{
    struct stats_snapshot s;
    struct stats_buf b = {0};
    struct exposition *e = calloc(1, sizeof(*e));

    snapshot_fill(&s);
    stats_render_prometheus(&s, &b);
    assert_false(b.oom);
    parse_exposition(b.p, e);
    /* Every counter cell is rendered. */
    for (unsigned i = 0; i < METRICS_NCOUNTERS; i++)
        if (!has_value(e, 1000000 + i))
            fail_msg("counter cell %u is not rendered", i);
    assert_non_null(find_series(e, "ortoo_connections_accepted_total{role=\"smtp\"}"));
    assert_true(find_series(e, "ortoo_connections_accepted_total{role=\"submission\"}")->value ==
                1000000 + METRICS_CONN_ACCEPTED + 1);
    assert_true(find_series(e, "ortoo_messages_rejected_total{reason=\"no-such-user\"}")->value ==
                1000000 + METRICS_MSG_REJECTED + METRICS_REJECT_NO_SUCH_USER);
    assert_true(find_series(e, "ortoo_recipients_bounced_total{class=\"expired\"}")->value ==
                1000000 + METRICS_BOUNCED + METRICS_DCLASS_EXPIRED);
    assert_true(find_series(e, "ortoo_dns_lookups_total{dnssec=\"secure\"}")->value ==
                1000000 + METRICS_DNS_SEC + 1);
    assert_true(find_series(e, "ortoo_dns_lookup_results_total{status=\"bogus\"}")->value ==
                1000000 + METRICS_DNS_STATUS + 6);
    assert_true(find_series(e, "ortoo_dkim_signatures_total{algorithm=\"ed25519-sha256\"}")
                    ->value == 1000000 + METRICS_DKIM_SIGNED + 1);
    assert_true(find_series(e, "ortoo_tls_handshakes_total{side=\"client\",result=\"resumed\"}")
                    ->value == 1000000 + METRICS_TLS_CLIENT_RESUMED);
    assert_true(find_series(e, "ortoo_connections_open")->value == 7);
    assert_true(find_series(e, "ortoo_queue_oldest_age_seconds")->value == 100);
    assert_true(find_series(e, "ortoo_uptime_seconds")->value == 100.25);
    assert_true(find_series(e, "process_start_time_seconds")->value == 1700000000.25);
    /* Nanosecond sums are shown in seconds, exactly. */
    assert_true(find_series(e, "ortoo_spool_sync_seconds_sum{file=\"segment\"}")->value ==
                0.123456789);
    assert_non_null(find_series(e, "ortoo_spool_sync_seconds_bucket{file=\"journal\",le=\"0.00005\"}"));
    assert_non_null(find_series(e, "ortoo_spool_batch_entries_bucket{file=\"segment\",le=\"+Inf\"}"));
    assert_non_null(find_series(e, "ortoo_info{version=\"" "0.1.0-dev" "\",io=\"uring\"}"));
    free(b.p);
    free(e);
}

/* Label values that need escaping come out escaped and parse back. */
static void test_escaping(void **state)
{
    struct stats_snapshot s;
    struct stats_buf b = {0};
    struct exposition *e = calloc(1, sizeof(*e));

    snapshot_fill(&s);
    s.io = "a\"b\\c\nd";
    stats_render_prometheus(&s, &b);
    assert_non_null(strstr(b.p, "io=\"a\\\"b\\\\c\\nd\""));
    parse_exposition(b.p, e);
    free(b.p);
    free(e);
}

static void test_text(void **state)
{
    struct stats_snapshot s;
    struct stats_buf b = {0};

    snapshot_fill(&s);
    memset(s.cells, 0, sizeof(s.cells));
    s.cells[METRICS_CONN_ACCEPTED] = 10;
    s.cells[METRICS_CONN_ACCEPTED + 2] = 2;
    s.cells[METRICS_MSG_RECEIVED] = 4;
    s.cells[METRICS_MSG_RECEIVED_RCPTS] = 6;
    s.cells[METRICS_MSG_RECEIVED_BYTES] = 2500;
    s.cells[METRICS_MSG_REJECTED + METRICS_REJECT_RELAY_DENIED] = 3;
    s.cells[METRICS_DEFERRED + METRICS_DCLASS_4XX] = 1;
    s.cells[METRICS_TLS_SERVER_RESUMED] = 5;
    s.cells[metrics_hist_cell(METRICS_H_SPOOL_ENTRIES, 1)] = 4; /* 4 batches of 2 */
    s.cells[metrics_hist_sum_cell(METRICS_H_SPOOL_ENTRIES)] = 8;
    s.cells[metrics_hist_cell(METRICS_H_SPOOL_SYNC, 4)] = 4; /* <= 1 ms */
    s.cells[metrics_hist_sum_cell(METRICS_H_SPOOL_SYNC)] = 3200000;
    stats_render_text(&s, &b);
    assert_false(b.oom);
    const char *want[] = {
        "connections: 7 open, 12 accepted (smtp 10, submissions 2), 0 refused by a limit\n",
        "received:    4 messages, 6 recipients, 2.5 KB\n",
        "rejected:    3 (relay-denied 3)\n",
        "deferred:    1 (4xx 1)\n",
        "queue:       12 messages, 34.6 KB, oldest 1m 40s\n",
        "tls:         server 0 full, 5 resumed, 0 failed;",
        "spool:       segment 4 batches, 2.0 entries each, sync avg 0.80 ms, p50 <= 1.00 ms, "
        "p99 <= 1.00 ms; journal 0 batches;",
        "up 1m 40s, 2 reactors, io uring\n",
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        if (strstr(b.p, want[i]) == NULL)
            fail_msg("missing '%s' in:\n%s", want[i], b.p);
    free(b.p);
}

/* ---- gathering ---- */

static struct control *ctl;
static atomic_bool stop;
static pthread_t ctl_thread;
static char sock_dir[] = "/tmp/ortoo-stats-XXXXXX";
static char sock_path[256];

/* The main thread's loop, as core/server.c runs it. */
static void *ctl_main(void *arg)
{
    while (!atomic_load(&stop)) {
        struct pollfd pfd[CONTROL_MAX_POLLFDS];
        size_t n = control_pollfds(ctl, pfd, CONTROL_MAX_POLLFDS);
        int t = control_timeout(ctl);
        if (poll(pfd, n, t < 0 || t > 20 ? 20 : t) < 0 && errno != EINTR)
            break;
        control_dispatch(ctl, pfd, n);
    }
    return NULL;
}

struct fake_reactor {
    struct smtp_reactor r;
    pthread_t th;
};

static void *reactor_main(void *arg)
{
    struct fake_reactor *f = arg;
    io_loop_run(f->r.loop);
    return NULL;
}

struct got {
    atomic_int calls;
    struct stats_snapshot snap;
    bool inside;                   /* set while stats_collect runs */
    bool called_inside;
};

static void on_snap(const struct stats_snapshot *snap, void *arg)
{
    struct got *g = arg;
    if (g->inside)
        g->called_inside = true;
    g->snap = *snap;
    atomic_fetch_add(&g->calls, 1);
}

struct collect_job {
    struct stats *st;
    struct stats_waiter w[3];
    struct got g[3];
    bool cancel_third;
    struct control_task task;
};

/* Runs on the control thread (posted): stats is single-threaded there. */
static void collect_on_ctl(void *arg)
{
    struct collect_job *j = arg;
    for (int i = 0; i < 3; i++) {
        j->g[i].inside = true;
        assert_int_equal(stats_collect(j->st, &j->w[i], on_snap, &j->g[i]), 0);
        j->g[i].inside = false;
    }
    if (j->cancel_third)
        stats_cancel(&j->w[2]);
}

static bool wait_calls(struct got *g, int want)
{
    for (int i = 0; i < 500 && atomic_load(&g->calls) < want; i++)
        usleep(10000);
    return atomic_load(&g->calls) >= want;
}

struct lines {
    char buf[65536];
    size_t len;
};

static void on_line(const char *text, void *arg)
{
    struct lines *l = arg;
    l->len += (size_t)snprintf(l->buf + l->len, sizeof(l->buf) - l->len, "%s\n", text);
}

static void test_gather(void **state)
{
    struct fake_reactor fr[2];
    struct smtp_reactor *rs[2];
    memset(fr, 0, sizeof(fr));
    for (int i = 0; i < 2; i++) {
        fr[i].r.index = (unsigned)i;
        fr[i].r.loop = io_loop_new(IO_BACKEND_EPOLL, 0);
        assert_non_null(fr[i].r.loop);
        fr[i].r.nsessions = (size_t)(3 + i);
        rs[i] = &fr[i].r;
        assert_int_equal(pthread_create(&fr[i].th, NULL, reactor_main, &fr[i]), 0);
    }
    struct stats *st = stats_new(ctl);
    assert_non_null(st);
    stats_attach(st, rs, 2, "epoll");

    struct collect_job *j = calloc(1, sizeof(*j));
    j->st = st;
    j->cancel_third = true;
    control_post(ctl, &j->task, collect_on_ctl, j);
    assert_true(wait_calls(&j->g[0], 1));
    assert_true(wait_calls(&j->g[1], 1));
    usleep(50000);
    for (int i = 0; i < 2; i++) {
        assert_false(j->g[i].called_inside);
        assert_int_equal(atomic_load(&j->g[i].calls), 1);
        assert_int_equal(j->g[i].snap.nreactors, 2);
        assert_int_equal(j->g[i].snap.nanswered, 2);
        assert_int_equal(j->g[i].snap.sessions, 7);
        assert_string_equal(j->g[i].snap.io, "epoll");
        assert_true(j->g[i].snap.proc.rss_bytes > 0);
        assert_true(j->g[i].snap.proc.open_fds > 0);
        assert_true(j->g[i].snap.proc.start_time > 1e9);
    }
    assert_int_equal(atomic_load(&j->g[2].calls), 0); /* cancelled */

    /* The `stats` command, both forms, through the socket. */
    char status[256];
    struct lines *ln = calloc(1, sizeof(*ln));
    assert_int_equal(control_call(sock_path, "stats", 5000, on_line, ln, status, sizeof(status)),
                     0);
    assert_non_null(strstr(ln->buf, "connections: 7 open"));
    ln->len = 0;
    assert_int_equal(control_call(sock_path, "stats prometheus", 5000, on_line, ln, status,
                                  sizeof(status)),
                     0);
    struct exposition *e = calloc(1, sizeof(*e));
    parse_exposition(ln->buf, e);
    assert_true(find_series(e, "ortoo_connections_open")->value == 7);
    assert_true(find_series(e, "ortoo_reactors")->value == 2);
    free(e);
    assert_int_equal(control_call(sock_path, "stats bogus", 5000, NULL, NULL, status,
                                  sizeof(status)),
                     1);
    assert_string_equal(status, "usage: stats [prometheus]");

    for (int i = 0; i < 2; i++) {
        io_loop_stop(fr[i].r.loop);
        pthread_join(fr[i].th, NULL);
        io_loop_free(fr[i].r.loop);
    }
    /* No reactors: the answer still comes, later. */
    stats_attach(st, NULL, 0, "epoll");
    memset(j, 0, sizeof(*j));
    j->st = st;
    control_post(ctl, &j->task, collect_on_ctl, j);
    assert_true(wait_calls(&j->g[2], 1));
    assert_false(j->g[2].called_inside);
    assert_int_equal(j->g[2].snap.nreactors, 0);
    free(ln);
    free(j);
    /* stats_free and the command stay with ctl until teardown (the control
     * thread still serves it). */
    *state = st;
}

static int setup(void **state)
{
    assert_non_null(mkdtemp(sock_dir));
    snprintf(sock_path, sizeof(sock_path), "%s/control", sock_dir);
    ctl = control_new();
    assert_non_null(ctl);
    char err[256];
    assert_int_equal(control_listen(ctl, sock_path, 0600, (uid_t)-1, (gid_t)-1, false, err,
                                    sizeof(err)),
                     0);
    atomic_store(&stop, false);
    assert_int_equal(pthread_create(&ctl_thread, NULL, ctl_main, NULL), 0);
    return 0;
}

static int teardown(void **state)
{
    atomic_store(&stop, true);
    pthread_join(ctl_thread, NULL);
    if (*state != NULL)
        stats_free(*state, 100);
    control_free(ctl);
    rmdir(sock_dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exposition),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_text),
        cmocka_unit_test_setup_teardown(test_gather, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
