/* SPDX-License-Identifier: MIT */
/*
 * metrics.h - counters every module may bump, and their sums for a scrape.
 *
 * The storage and the counting API live here, in the lowest module, so that
 * the spool, the resolver, DKIM, TLS and delivery can count without knowing
 * about the server; naming the figures and serving them (Prometheus text on
 * an HTTP port, `ortoo stats`) is core's (core/stats.c, core/metrics_http.c,
 * docs/metrics.md).
 *
 * Hot path: reactors share nothing mutable, and counting keeps it so.  Each
 * thread that counts owns a block of counter cells (one cache-line-aligned
 * allocation, taken from a registry the first time the thread counts); only
 * that thread writes it, with a relaxed atomic load and store, which on
 * x86-64 and arm64 compile to a plain load, add and store (no lock prefix,
 * no shared cache line).  A scrape sums every block with relaxed loads; a
 * thread's increments show up there a few nanoseconds late at worst.  A
 * thread that exits gives its block back to the registry with its counts,
 * and the next new thread continues from them, so sums never go backwards
 * and the number of blocks is bounded by the threads alive at once.
 *
 * Cells: one enum of counters.  A family with a label (connections by
 * listener role, rejections by reason, ...) is a run of consecutive cells,
 * base + index, in the order its label values are documented below; core
 * names them (docs/metrics.md).  Histograms are their own enum, each a run
 * of bucket cells plus a sum, with fixed bucket bounds.
 *
 * Threads: metrics_inc/add/observe on any thread (they touch only the
 * calling thread's block); metrics_sum from any thread (takes the registry
 * lock; never call it on a reactor's hot path).
 */
#ifndef ORTOO_METRICS_H
#define ORTOO_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Why a message was refused (maillog_rejected's reason; docs/metrics.md).
 * A reason not in this list counts as OTHER (tests/e2e/test_metrics.py
 * checks that every reason the code logs is listed). */
enum metrics_reject {
    METRICS_REJECT_EARLY_TALKER = 0, /* "early-talker": spoke before the greeting */
    METRICS_REJECT_NO_SUCH_USER,     /* "no-such-user" */
    METRICS_REJECT_RELAY_DENIED,     /* "relay-denied" */
    METRICS_REJECT_BARE_LF_OR_CR,    /* "bare-lf-or-cr" */
    METRICS_REJECT_TOO_BIG,          /* "too-big" */
    METRICS_REJECT_LINE_TOO_LONG,    /* "line-too-long" */
    METRICS_REJECT_TOO_MANY_HOPS,    /* "too-many-hops": over 100 Received: fields, a loop */
    METRICS_REJECT_BODY_MEMORY,      /* "body-memory" ([limits] body_memory) */
    METRICS_REJECT_BAD_SRS,          /* "bad-srs": a forged or expired SRS bounce address */
    METRICS_REJECT_SPF,              /* "spf": SPF fail with [checks] spf_reject */
    METRICS_REJECT_DMARC,            /* "dmarc": DMARC fail under p=reject */
    METRICS_REJECT_DMARC_TEMPFAIL,   /* "dmarc-tempfail": DMARC fail maybe from a temperror */
    METRICS_REJECT_DMARC_FROM,       /* "dmarc-several-from": several From fields/authors */
    METRICS_REJECT_OTHER,            /* any other reason */
    METRICS_REJECT_N
};

/*
 * Why a delivery attempt for a recipient did not succeed: the `class`
 * label of the deferred and bounced counters.  metrics_dclass_of() derives
 * it from an SMTP client result; the scheduler passes DNS, EXPIRED and
 * LOCAL itself (docs/metrics.md says where).
 */
enum metrics_dclass {
    METRICS_DCLASS_4XX = 0,   /* "4xx": the server answered 4xx */
    METRICS_DCLASS_5XX,       /* "5xx": the server answered 5xx */
    METRICS_DCLASS_CONNECT,   /* "connect": no connection, or none to the greeting */
    METRICS_DCLASS_TLS,       /* "tls": STARTTLS missing when required, handshake
                                 or certificate (DANE, verify) failure */
    METRICS_DCLASS_DNS,       /* "dns": MX/A/AAAA/TLSA lookup failed or bogus,
                                 no such domain, null MX */
    METRICS_DCLASS_PROTOCOL,  /* "protocol": the connection broke or timed out
                                 in the dialog without a reply */
    METRICS_DCLASS_EXPIRED,   /* "expired": queued longer than allowed */
    METRICS_DCLASS_LOCAL,     /* "local": decided here (bad domain, the
                                 administrator, local delivery) */
    METRICS_DCLASS_N
};

/* The counter cells.  Runs are documented as "+ index (order)". */
enum metrics_counter {
    /* Connections (core/smtp_session.c). */
    METRICS_CONN_ACCEPTED = 0,          /* + enum listen_role: smtp, submission, submissions */
    METRICS_CONN_REFUSED = METRICS_CONN_ACCEPTED + 3, /* + max_connections,
                                                         connections_per_address, memory,
                                                         penalty_box */
    /* Receiving (io/maillog.c: every event=queued / event=rejected line). */
    METRICS_MSG_RECEIVED = METRICS_CONN_REFUSED + 4,  /* messages queued (250 after DATA) */
    METRICS_MSG_RECEIVED_RCPTS,         /* their recipients */
    METRICS_MSG_RECEIVED_BYTES,         /* their wire-form bytes */
    METRICS_MSG_REJECTED,               /* + enum metrics_reject */
    /* Delivery (the scheduler: per recipient and attempt). */
    METRICS_DELIVERED = METRICS_MSG_REJECTED + METRICS_REJECT_N,
    METRICS_DEFERRED,                   /* + enum metrics_dclass */
    METRICS_BOUNCED = METRICS_DEFERRED + METRICS_DCLASS_N, /* + enum metrics_dclass */
    /* TLS handshakes (io/tls.c): server full, resumed, failed; client the same. */
    METRICS_TLS_HANDSHAKES = METRICS_BOUNCED + METRICS_DCLASS_N,
    /* DNS lookups as their requester saw them (resolver/resolver.c). */
    METRICS_DNS_SEC = METRICS_TLS_HANDSHAKES + 6,     /* + enum res_sec (3) */
    METRICS_DNS_STATUS = METRICS_DNS_SEC + 3,         /* + enum res_status (8) */
    /* DKIM signatures made (dkim/sign.c): + enum dkim_algo: rsa, ed25519. */
    METRICS_DKIM_SIGNED = METRICS_DNS_STATUS + 8,
    /* AUTH (core/smtp_session.c): success, failure, throttled. */
    METRICS_AUTH = METRICS_DKIM_SIGNED + 2,
    /* How admitted AUTH attempts were checked (core/auth.c, + enum
     * auth_path): argon2id (a new verification), shared (joined one in
     * flight), cache. */
    METRICS_AUTH_VERIFY = METRICS_AUTH + 3,
    /* Local submission (core/maildrop.c): queued, rejected, failed. */
    METRICS_MAILDROP = METRICS_AUTH_VERIFY + 3,
    /* Spool group commit (spool/spool.c): + file: segment, journal. */
    METRICS_SPOOL_BYTES = METRICS_MAILDROP + 3,       /* bytes made durable */
    METRICS_SPOOL_ERRORS = METRICS_SPOOL_BYTES + 2,   /* batches that failed */
    METRICS_NCOUNTERS = METRICS_SPOOL_ERRORS + 2
};

/* Named cells of the runs above, for the callers. */
#define METRICS_CONN_REFUSED_TOTAL (METRICS_CONN_REFUSED + 0)
#define METRICS_CONN_REFUSED_PER_ADDRESS (METRICS_CONN_REFUSED + 1)
#define METRICS_CONN_REFUSED_MEMORY (METRICS_CONN_REFUSED + 2)
#define METRICS_CONN_REFUSED_PENALTY_BOX (METRICS_CONN_REFUSED + 3)
#define METRICS_TLS_SERVER_FULL (METRICS_TLS_HANDSHAKES + 0)
#define METRICS_TLS_SERVER_RESUMED (METRICS_TLS_HANDSHAKES + 1)
#define METRICS_TLS_SERVER_FAILED (METRICS_TLS_HANDSHAKES + 2)
#define METRICS_TLS_CLIENT_FULL (METRICS_TLS_HANDSHAKES + 3)
#define METRICS_TLS_CLIENT_RESUMED (METRICS_TLS_HANDSHAKES + 4)
#define METRICS_TLS_CLIENT_FAILED (METRICS_TLS_HANDSHAKES + 5)
#define METRICS_AUTH_SUCCESS (METRICS_AUTH + 0)
#define METRICS_AUTH_FAILURE (METRICS_AUTH + 1)
#define METRICS_AUTH_THROTTLED (METRICS_AUTH + 2)
#define METRICS_MAILDROP_QUEUED (METRICS_MAILDROP + 0)
#define METRICS_MAILDROP_REJECTED (METRICS_MAILDROP + 1)
#define METRICS_MAILDROP_FAILED (METRICS_MAILDROP + 2)

/* Histograms: fixed buckets (metrics_hist_bounds), + file: segment, journal. */
enum metrics_hist {
    METRICS_H_SPOOL_ENTRIES = 0,  /* entries per group-commit batch */
    METRICS_H_SPOOL_SYNC = 2,     /* batch start to durable, nanoseconds */
    METRICS_NHIST = 4
};

#define METRICS_HIST_MAX_BOUNDS 16  /* finite bounds of one histogram, at most */

/*
 * Cell layout: counters first, then for each histogram its finite buckets
 * (non-cumulative counts), the +Inf bucket and the sum.
 */
#define METRICS_HIST_CELLS (METRICS_HIST_MAX_BOUNDS + 2)
#define METRICS_NCELLS (METRICS_NCOUNTERS + METRICS_NHIST * METRICS_HIST_CELLS)

/* One thread's cells (private: use the functions below). */
struct metrics_block {
    _Atomic uint64_t c[METRICS_NCELLS];
};

extern _Thread_local struct metrics_block *metrics_self;

/* The calling thread's block, taken from the registry (never fails: a
 * static spare block serves when memory runs out). */
struct metrics_block *metrics_attach(void);

/* Add n to counter cell id of the calling thread.  Never blocks; allocates
 * only the first time a thread counts. */
static inline void metrics_add(unsigned id, uint64_t n)
{
    struct metrics_block *b = metrics_self;
    if (__builtin_expect(b == NULL, 0))
        b = metrics_attach();
    /* Only this thread writes the cell: load + store, not a locked add. */
    uint64_t v = atomic_load_explicit(&b->c[id], memory_order_relaxed);
    atomic_store_explicit(&b->c[id], v + n, memory_order_relaxed);
}

static inline void metrics_inc(unsigned id)
{
    metrics_add(id, 1);
}

/* Record one observation v (in the histogram's unit) in histogram h. */
void metrics_observe(enum metrics_hist h, uint64_t v);

/* The finite upper bounds of histogram h, ascending (le="..."), and their
 * count through *n.  Bounds of METRICS_H_SPOOL_SYNC are nanoseconds. */
const uint64_t *metrics_hist_bounds(enum metrics_hist h, size_t *n);

/* Cell index of bucket i of h (i == n: +Inf), and of its sum. */
static inline unsigned metrics_hist_cell(enum metrics_hist h, size_t i)
{
    return METRICS_NCOUNTERS + (unsigned)h * METRICS_HIST_CELLS + (unsigned)i;
}
static inline unsigned metrics_hist_sum_cell(enum metrics_hist h)
{
    return METRICS_NCOUNTERS + (unsigned)h * METRICS_HIST_CELLS + METRICS_HIST_CELLS - 1;
}

/*
 * The sums over every thread, past and present, into out[METRICS_NCELLS].
 * Takes the registry lock (not for a reactor's hot path).
 */
void metrics_sum(uint64_t *out);

/* ---- helpers for the callers ---- */

/* A message was queued (io/maillog.c). */
void metrics_received(uint64_t nrcpts, uint64_t bytes);

/* A message or recipient was refused for reason (maillog_rejected's
 * reason string; one not in enum metrics_reject counts as "other"). */
void metrics_rejected(const char *reason);
enum metrics_reject metrics_reject_of(const char *reason);
/* "no-such-user", ... (the label value); NULL when out of range. */
const char *metrics_reject_name(enum metrics_reject r);

/* Delivery results, one per recipient and attempt (the scheduler). */
void metrics_delivered(void);
void metrics_deferred(enum metrics_dclass c);
void metrics_bounced(enum metrics_dclass c);
/* "4xx", "5xx", ... (the label value); NULL when out of range. */
const char *metrics_dclass_name(enum metrics_dclass c);

/*
 * The class of a failed attempt from an SMTP client result: code is the
 * reply code (0: none came), stage the client's stage name
 * (smtp_stage_name: "connect", "greeting", "starttls", "tls",
 * "tls-verify", "ehlo", "mail", ...; NULL or "none": no connection was
 * tried).  4xx/5xx by the code when there is one; else connect for
 * "connect"/"greeting", tls for the TLS stages, local without a stage,
 * protocol otherwise.
 */
enum metrics_dclass metrics_dclass_of(int code, const char *stage);

/* A TLS handshake ended: ok (resumed or full) or failed, on which side. */
void metrics_tls_handshake(bool client, bool ok, bool resumed);

/* One group-commit batch of the spool was written: segment (else the
 * journal) file, entries in it, bytes, nanoseconds from its start to the
 * end of its sync, err (0 or -errno). */
void metrics_spool_batch(bool segment, size_t entries, uint64_t bytes, uint64_t ns, int err);

#endif
