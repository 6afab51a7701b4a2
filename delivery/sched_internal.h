/* SPDX-License-Identifier: MIT */
/*
 * sched_internal.h - what scheduler.c (messages, jobs, outcomes, queue
 * control) and dest.c (destinations, connections, the MX walk, TLS policy,
 * rate and backoff) share.  Not a public header.
 */
#ifndef ORTOO_SCHED_INTERNAL_H
#define ORTOO_SCHED_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "delivery/route.h"
#include "delivery/scheduler.h"
#include "delivery/smtp_client.h"
#include "io/loop.h"
#include "io/metrics.h"
#include "io/tls.h"
#include "resolver/resolver.h"
#include "spool/spool.h"

struct dest;
struct conn;

/*
 * A checked-out message.  Invariants: view is open from checkout until
 * release; refs counts the jobs not finished plus one while the message is
 * being split (msg_start) or finished (msg_finish); the message is released
 * when refs drops to 0.
 */
struct amsg {
    struct sched *s;
    struct spool_msg_view v;
    unsigned refs;
    bool deleted;              /* queue delete: drop queued jobs, record nothing */
    bool bounce_req;           /* queue bounce: fail what is left at the end */
    bool local_parked;         /* local recipients left waiting (no local hook) */
    int64_t started;           /* unix time of the checkout */
    uint32_t *deferred;        /* recipients deferred in this round (for a delay
                                  warning) */
    size_t ndeferred, cap_deferred;
    struct amsg *prev, *next;  /* sched->active list */
};

/*
 * One message's due recipients for one destination (or for local
 * delivery).  Invariants: n >= 1; rcpts[i] is recipient idx[i] of the view;
 * while queued, the job is on its destination's list and no connection has
 * it; while sent, exactly one connection has it (conn->job).
 */
struct job {
    struct amsg *m;
    struct dest *d;            /* NULL: local */
    struct job *next;          /* destination queue */
    bool queued;               /* on d's queue */
    int dclass;                /* enum metrics_dclass of a failure decided
                                  here (DNS, local...), < 0: from the result */
    int64_t defer_until;       /* set: a deferral waits until then (a
                                  destination's backoff), not the retry list */
    size_t n;
    uint32_t *idx;             /* n recipient indexes */
    struct smtp_rcpt *rcpts;   /* n, with results */
    struct smtp_msg msg;       /* what the client sends */
    char notify[];             /* n * SCHED_NOTIFY_LEN: NOTIFY= texts */
};
#define SCHED_NOTIFY_LEN 32

/* Local delivery jobs are jobs (the public type is the same object). */
struct sched_local_job {
    struct job job;
};

/* Where an outcome came from, for the log lines and the DSNs. */
struct job_ctx {
    const char *relay;         /* host name, or NULL */
    const char *addr;          /* "ip:port", or NULL */
    const struct smtp_client_info *info; /* the connection, or NULL */
};

/*
 * A destination.  Invariants: queue holds the jobs waiting for a
 * connection, oldest first (qlen of them); conns lists every connection,
 * from its first lookup to its close; nconns counts them, nready those
 * that reached ready (idle or busy), nidle those idle.
 */
struct dest {
    struct sched *s;
    char *key;                 /* domain, or "route:" + the route's left side */
    char *domain;              /* MX destinations: the domain to look up */
    char *literal;             /* an address literal's IP (no DNS), or NULL */
    const struct route *route; /* routed destination, or NULL */
    struct route_limits lim;   /* effective settings */
    const struct route_dest *rdest; /* [destination] section (auth), or NULL */
    struct job *qhead, *qtail;
    size_t qlen;
    struct conn *conns;
    unsigned nconns, nready, nidle;
    int64_t dead_until;        /* backoff: unix time; 0: alive */
    unsigned failures;         /* backoffs in a row */
    char dead_status[12];      /* why, for the jobs deferred meanwhile */
    int dead_class;            /* ... and its enum metrics_dclass */
    char dead_reason[300];
    uint64_t tat_ns;           /* GCRA theoretical arrival time (monotonic ns) */
    struct io_op rate_timer;   /* wakes the queue when the rate allows */
    bool rate_wait;            /* rate_timer armed */
    int64_t idle_since;        /* unix time the destination went empty */
    int64_t hold_until;        /* no new connection before then (unless none
                                  is left) after a failed walk */
    struct dest *hnext;        /* hash chain */
};

/* The scheduler.  Invariants: nactive counts the active list; dests is a
 * hash table of dcap (a power of two) chains holding ndests. */
struct sched {
    struct io_loop *loop;
    struct spool_shard *sh;
    struct res_ctx *res;
    const struct route_conf *conf;
    char *hostname;
    const char *helo;
    unsigned index;
    bool (*is_local)(void *arg, const char *domain);
    sched_local_fn local;
    void *arg;
    struct tls_client *tls;
    struct amsg *active;       /* checked-out messages */
    size_t nactive;
    struct dest **dtab;
    size_t dcap, ndests;
    struct io_op wake_op;      /* deferred pump after the ready callback */
    bool wake_pending;
    struct io_op timer_op;     /* next due time; housekeeping */
    int64_t timer_at;          /* unix time the armed timer fires, 0: none */
    bool timer_rearm;          /* cancelled: arm again from its callback */
    bool stopping;
    void (*stopped)(void *arg);
    void *stopped_arg;
    struct io_op stop_op;      /* polls until the clients are gone */
    size_t nconns;             /* connections alive, every destination */
    struct sched_stats stats;
};

/* ---- dest.c ---- */

/* The destination of a remote recipient domain (lower case); NULL on ENOMEM. */
struct dest *dest_get(struct sched *s, const char *domain);
/* An address literal (RFC 5321 4.1.3: "[192.0.2.1]", "[IPv6:2001:db8::1]") as
 * the IP's text in ip; returns its address family, or -1 when domain is not
 * one (a general literal "[tag:...]" included). */
int dest_literal_ip(const char *domain, char *ip, size_t cap);
/* Take a job: send it, queue it, or finish it at once (dead destination). */
void dest_enqueue(struct dest *d, struct job *j);
/* Take a queued job off its destination's queue; false if it is not queued. */
bool dest_unqueue(struct job *j);
/* Clear the backoff of the destination of domain (queue flush DOMAIN). */
void dest_flush_domain(struct sched *s, const char *domain);
/* Drop every connection and free every destination (stop / free). */
void dest_stop_all(struct sched *s);
void dest_free_all(struct sched *s);
/* True while a destination's timer is still in flight (stop). */
bool dest_busy(const struct sched *s);
/* Free destinations idle since before `before` (housekeeping). */
void dest_sweep(struct sched *s, int64_t before);

/* ---- scheduler.c ---- */

/* A job ended: the outcome of each recipient is in j->rcpts[i].result.
 * Records them, frees the job, and releases the message when it was the
 * last.  ctx may be NULL (no connection). */
void sched_job_done(struct job *j, const struct job_ctx *ctx);
/* Drop a job without recording anything (stop, delete, bounce). */
void sched_job_drop(struct job *j);
/* Finish a job with the same outcome for every recipient (no connection). */
void sched_job_fail(struct job *j, enum smtp_outcome out, enum smtp_stage stage,
                    const char *enhanced, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* unix time */
int64_t sched_now(void);

#endif
