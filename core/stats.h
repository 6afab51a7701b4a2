/* SPDX-License-Identifier: MIT */
/*
 * stats.h - the daemon's figures: gathered, named and rendered.
 *
 * One snapshot holds everything a scrape or `ortoo stats` shows: the sums
 * of the counters every thread keeps (io/metrics.h), the gauges only a
 * reactor may read (its sessions, its spool shard's queue, its resolver's
 * cache), and the process's own figures from /proc.  Both renderings (the
 * Prometheus text exposition format 0.0.4 for core/metrics_http.c, and
 * lines for a person for the `stats` control command) are made from the
 * same snapshot, so they always agree.  Names, types and labels are listed
 * in docs/metrics.md.
 *
 * Gathering is asynchronous: stats_collect() posts a small job to every
 * reactor (io_loop_post); each fills its part on its own thread between
 * events, the last one posts back to the main thread (control_post), and
 * there the counters are summed and the waiters called.  Requests that
 * arrive while a round is in flight join it.  Nothing is added to a
 * reactor's hot path: a round costs each reactor one posted call and a walk
 * over its spool index (spool_shard_totals).
 *
 * Threads: everything here runs on the main thread (the one that runs the
 * control loop), except the posted reactor jobs.
 */
#ifndef ORTOO_STATS_H
#define ORTOO_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/metrics.h"
#include "resolver/resolver.h"

struct control;
struct smtp_reactor;
struct stats;

/* The process, from /proc/self (zero where unreadable). */
struct stats_process {
    double start_time;             /* unix time the process started, seconds */
    double cpu_seconds;            /* user + system CPU time */
    uint64_t rss_bytes;            /* resident set size */
    uint64_t vsize_bytes;          /* virtual memory size */
    uint64_t open_fds;             /* entries in /proc/self/fd */
    uint64_t max_fds;              /* RLIMIT_NOFILE soft limit */
};

/* Everything one scrape shows.  Plain data: copy it freely. */
struct stats_snapshot {
    uint64_t cells[METRICS_NCELLS]; /* io/metrics.h sums */
    double now;                    /* unix time of the snapshot, seconds */
    unsigned nreactors;            /* reactors asked */
    unsigned nanswered;            /* reactors whose gauges are included */
    const char *io;                /* "uring" / "epoll" (static) */
    uint64_t sessions;             /* SMTP sessions open */
    uint64_t queue_messages;       /* live messages in the spool */
    uint64_t queue_bytes;          /* their wire-form bytes */
    int64_t queue_oldest;          /* earliest received_at (unix s), 0: empty */
    struct res_stats dns;          /* the reactors' resolver counters, summed */
    struct stats_process proc;
};

/* A growable text buffer (renderings).  Zero it to start; free p. */
struct stats_buf {
    char *p;                       /* NUL-terminated when len > 0 */
    size_t len, cap;
    bool oom;                      /* an append failed: the text is cut */
};

typedef void (*stats_cb)(const struct stats_snapshot *snap, void *arg);

/*
 * A request for a snapshot, embedded in its owner (an HTTP client, a
 * control request).  Fields are private.
 */
struct stats_waiter {
    stats_cb cb;
    void *arg;
    struct stats_waiter *next, **pprev; /* in a round's list while waiting */
};

/*
 * The gatherer, on ctl's (main) thread; registers the `stats` control
 * command (`stats` for a person, `stats prometheus` for the exposition
 * text).  Reactors are given later with stats_attach (before that, a
 * snapshot has the counters and the process only).  NULL on ENOMEM or if
 * the command cannot be registered.
 */
struct stats *stats_new(struct control *ctl);

/* The reactors to ask (borrowed: they must outlive st or the next
 * stats_attach).  io: the backend name shown. */
void stats_attach(struct stats *st, struct smtp_reactor **r, unsigned n, const char *io);

/*
 * Free.  A round still in flight is waited for up to timeout_ms (its jobs
 * are on reactors that must still run); if it does not finish, its memory
 * is left allocated rather than freed under a reactor.  Waiters still
 * queued are dropped without a call.
 */
void stats_free(struct stats *st, int timeout_ms);

/*
 * Ask for a snapshot: cb(snap, arg) runs later on the main thread (never
 * inside this call), once, unless stats_cancel(w) is called first.  w must
 * stay valid until then.  Returns 0, or -ENOMEM (no round could start; cb
 * will not run).
 */
int stats_collect(struct stats *st, struct stats_waiter *w, stats_cb cb, void *arg);

/* Drop a waiting request (no-op when it is not waiting). */
void stats_cancel(struct stats_waiter *w);

/* Append the Prometheus text exposition (format 0.0.4) of snap to b. */
void stats_render_prometheus(const struct stats_snapshot *snap, struct stats_buf *b);

/* Append the figures for a person, one line per subject, to b. */
void stats_render_text(const struct stats_snapshot *snap, struct stats_buf *b);

/* printf into b (grows it; sets b->oom when it cannot). */
void stats_buf_printf(struct stats_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
