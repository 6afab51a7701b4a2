/* SPDX-License-Identifier: MIT */
/*
 * scheduler.h - the delivery scheduler of one reactor: it takes due
 * messages out of the reactor's spool shard, splits their recipients by
 * destination, delivers them over SMTP (delivery/smtp_client.h) with the
 * resolver's answers (resolver/resolver.h), and writes every outcome back
 * to the spool: delivered, deferred until the next retry, or failed with a
 * DSN (delivery/bounce.h).
 *
 * Structure (details in scheduler.c and dest.c):
 *  - active messages: at most SCHED_ACTIVE_MAX checked out of the shard's
 *    due heap at once (spool_due_next), each held open as a view (the
 *    stored bytes are sent from its mapping or its segment fd);
 *  - jobs: one per (message, destination) with that message's due
 *    recipients for it; a message is released (spool_due_release) when all
 *    its jobs finished;
 *  - destinations: one per recipient domain delivered by MX, one per route
 *    entry with a host; each has a FIFO ready queue of jobs, its
 *    connections (up to max_connections, several messages each), a rate
 *    limit (messages per minute, GCRA) and a backoff: when no connection to
 *    any of its hosts can be made, every queued job is deferred together
 *    until the backoff ends (a "dead" destination, as Postfix calls it);
 *  - connections: each walks the destination's MX hosts in preference
 *    order and each host's addresses in turn (at most SCHED_ADDR_LIMIT
 *    addresses per connection), deciding the TLS policy per host (DANE when
 *    DNSSEC allows it, RFC 7672), and is kept idle for reuse until
 *    [delivery] timeout_idle.
 *
 * Threads: everything runs on the reactor's loop thread; nothing here is
 * thread-safe.  Callbacks of the spool, the resolver and the client are the
 * only entry points besides the functions below.
 */
#ifndef ORTOO_SCHEDULER_H
#define ORTOO_SCHEDULER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "delivery/route.h"
#include "delivery/smtp_client.h"
#include "spool/spool.h"

struct io_loop;
struct res_ctx;
struct sched;
struct sched_local_job;

#define SCHED_ACTIVE_MAX 10000 /* messages checked out at once per reactor
                                  (Postfix's qmgr_message_active_limit is
                                  20000 for the whole server) */
#define SCHED_ADDR_LIMIT 5     /* addresses tried per connection (Postfix's
                                  smtp_mx_address_limit) */

/*
 * Local delivery, wired by core: called with the due recipients of one
 * message whose domain is local.  The callee delivers them (off the
 * reactor if it blocks), sets each recipient's outcome with
 * sched_local_result() and finishes with sched_local_done(), on the loop's
 * thread, later or at once.  Returns 0, or < 0 when it cannot take the job
 * now (the recipients are deferred).
 */
typedef int (*sched_local_fn)(void *arg, struct sched_local_job *j);

/* What a scheduler works with (borrowed for its life). */
struct sched_params {
    struct io_loop *loop;
    struct spool_shard *spool;
    struct res_ctx *res;
    const struct route_conf *conf;
    const char *hostname;      /* Reporting-MTA; HELO unless conf->helo_name */
    unsigned index;            /* reactor number, for logs */
    /* Whether a recipient domain (lower case) is local: those recipients
     * never leave through SMTP. */
    bool (*is_local)(void *arg, const char *domain);
    /* Local delivery; NULL: local recipients stay queued (parked until a
     * flush or a restart), visible in `queue list`. */
    sched_local_fn local;
    void *arg;                 /* for is_local and local */
    const char *ca_file;       /* PKIX trust anchors for tls = verify, NULL:
                                  the system store */
};

/*
 * Make a scheduler and start it: it takes the shard's ready callback and
 * looks for due messages on the next loop turn.  Builds the reactor's TLS
 * client context (reads the CA store: blocking, start-up only).  Returns
 * NULL with a message in err.
 */
struct sched *sched_new(const struct sched_params *p, char *err, size_t errlen);

/*
 * Stop delivering: every connection is dropped (a message in flight keeps
 * its state in the spool and is tried again after a restart), every
 * checked-out message is released, lookups are cancelled.  done(arg) runs
 * on the loop, never inside this call, once nothing of the scheduler is in
 * flight any more (the clients gave their buffers back); run the loop until
 * then.
 */
void sched_stop(struct sched *s, void (*done)(void *arg), void *arg);

/*
 * A reload: use conf (borrowed; the previous one must stay allocated until
 * the scheduler is freed, as the daemon keeps old configurations).  Limits,
 * retry, expiry, TLS settings and routes apply to new connections and new
 * jobs; a destination made under the old routes keeps its route until it
 * goes idle.
 */
void sched_set_conf(struct sched *s, const struct route_conf *conf);

/* Free a stopped scheduler (after its loop stopped; before the loop is
 * freed and after spool_shard_close, which may run the loop). */
void sched_free(struct sched *s);

/* --- Queue control (on the loop's thread; for the control socket) --- */

/*
 * Make messages due now: target NULL: every message; a message id; or a
 * domain (every message with a recipient not final at that domain; its
 * destination's backoff is cleared).  Returns the number of messages made
 * due in this shard (0 when none is here).
 */
int sched_flush(struct sched *s, const char *target);

/* Delete message id from the queue without any notice (a delivery in
 * flight ends without being recorded).  Returns 1, or -ENOENT when it is
 * not in this shard. */
int sched_delete(struct sched *s, const char *id);

/* Fail every recipient of id that is not final, with a DSN to the sender
 * ("5.0.0 bounced by the administrator"); recipients being delivered right
 * now are failed when their attempt ends, unless it delivered them.
 * Returns 1, or -ENOENT when it is not in this shard. */
int sched_bounce(struct sched *s, const char *id);

/* Counters (for stats and tests). */
struct sched_stats {
    size_t active;             /* messages checked out */
    size_t dests;              /* destinations known */
    size_t conns;              /* connections open or being opened */
    uint64_t delivered, deferred, bounced; /* recipients */
    uint64_t connections;      /* connections made (reached ready) */
};
void sched_get_stats(const struct sched *s, struct sched_stats *out);

/* --- Local delivery jobs (see sched_local_fn) --- */

const struct spool_msg_view *sched_local_view(const struct sched_local_job *j);
size_t sched_local_count(const struct sched_local_job *j);
/* Recipient index (in the view) of the job's i-th recipient. */
uint32_t sched_local_rcpt(const struct sched_local_job *j, size_t i);
/* Outcome of the job's i-th recipient (OK, TEMP or PERM; enhanced "2.0.0";
 * text: the reason or the file written).  Strings copied. */
void sched_local_result(struct sched_local_job *j, size_t i, enum smtp_outcome out,
                        const char *enhanced, const char *text);
/* All results are in (recipients without one are deferred). */
void sched_local_done(struct sched_local_job *j);

#endif
