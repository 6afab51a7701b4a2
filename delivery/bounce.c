/* SPDX-License-Identifier: MIT */
/*
 * bounce.c - failing recipients for good (see bounce.h).
 *
 * One call makes one heap object holding the DSN bytes (borrowed by the
 * spool until its commit callback) and one spool_commit per durable step;
 * it frees itself when the last step reported.
 */
#include "delivery/bounce.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "delivery/dsn.h"
#include "io/log.h"
#include "io/maillog.h"

/* One call in flight.  Invariant: pending counts the commits whose
 * callback has not run; the object is freed when it drops to 0. */
struct bounce_job {
    bounce_cb cb;
    void *arg;
    int err;                   /* first error of the steps */
    size_t pending;
    char *dsn;                 /* DSN bytes (the spool borrows them) */
    size_t dsn_len;
    struct spool_commit *commits; /* one per step */
};

static void job_step_done(struct spool_commit *c, int res)
{
    struct bounce_job *j = c->owner;

    if (res < 0 && j->err == 0)
        j->err = res;
    if (--j->pending > 0)
        return;
    if (j->cb)
        j->cb(j->arg, j->err);
    free(j->dsn);
    free(j->commits);
    free(j);
}

int bounce_fail(struct spool_shard *sh, const struct spool_msg_view *v,
                const struct bounce_rcpt *f, size_t n, const char *hostname, int64_t now,
                bounce_cb cb, void *arg)
{
    struct bounce_job *j = NULL;
    struct dsn_rcpt *dr = NULL;
    uint32_t *didx = NULL;
    size_t nd = 0;
    int r;

    if (n == 0)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        struct spool_rcpt_info ri;
        if (f[i].idx >= v->nrcpts)
            return -EINVAL;
        if ((r = spool_rcpt_get(sh, v->id, f[i].idx, &ri)) < 0)
            return r;
        if (ri.state == SPOOL_RCPT_DELIVERED || ri.state == SPOOL_RCPT_FAILED)
            return -EALREADY;
    }
    j = calloc(1, sizeof *j);
    dr = calloc(n, sizeof *dr);
    didx = calloc(n, sizeof *didx);
    if (!j || !dr || !didx || !(j->commits = calloc(n + 1, sizeof *j->commits))) {
        r = -ENOMEM;
        goto fail;
    }
    j->cb = cb;
    j->arg = arg;

    /* Who gets told. */
    for (size_t i = 0; i < n; i++) {
        uint8_t notify = v->dsn_notify ? v->dsn_notify[f[i].idx] : 0;
        if (!dsn_wanted(DSN_FAILED, v->sender, notify))
            continue;
        didx[nd] = f[i].idx;
        dr[nd++] = (struct dsn_rcpt){
            .rcpt = v->rcpts[f[i].idx],
            .orcpt = v->dsn_orcpt ? v->dsn_orcpt[f[i].idx] : NULL,
            .status = f[i].status,
            .remote_mta = f[i].remote_mta,
            .diagnostic = f[i].diagnostic,
            .last_attempt = f[i].last_attempt,
        };
    }

    /* The DSN and its recipients' failure: one durable step. */
    if (nd > 0) {
        bool eight = false;
        struct dsn_params p = {
            .kind = DSN_FAILED,
            .reporting_mta = hostname,
            .queue_id = v->id,
            .sender = v->sender,
            .envid = v->dsn_envid,
            .ret = v->dsn_ret,
            .arrival = v->received_at,
            .now = now,
        };
        if ((r = dsn_build(&p, dr, nd, v->headers, v->headers_len, v->data, v->size, &j->dsn,
                           &j->dsn_len, &eight)) < 0)
            goto fail;
        const char *to[1];
        struct spool_envelope env;
        bounce_dsn_envelope(&env, to, v, hostname, eight, now);
        struct iovec iov = {j->dsn, j->dsn_len};
        struct spool_commit *c = &j->commits[0];
        c->cb = job_step_done;
        c->owner = j;
        if ((r = spool_submit_bounce(sh, c, v->id, didx, nd, &env, &iov, 1)) < 0)
            goto fail;
        j->pending++;
        maillog_notice(v->id, "failed", c->id, v->sender, nd);
    }

    /* The others: a failure without a DSN (NOTIFY said no, or a bounce
     * that bounced). */
    for (size_t i = 0, k = 1; i < n; i++) {
        bool told = false;
        for (size_t d = 0; d < nd; d++)
            told = told || didx[d] == f[i].idx;
        if (told)
            continue;
        struct spool_attempt a = {
            .state = SPOOL_RCPT_FAILED,
            .at = now,
            .reply = f[i].diagnostic,
            .reply_len = f[i].diagnostic ? strlen(f[i].diagnostic) : 0,
        };
        struct spool_commit *c = &j->commits[k++];
        c->cb = job_step_done;
        c->owner = j;
        r = spool_attempt(sh, c, v->id, (int)f[i].idx, &a);
        if (r < 0) {
            /* Validated above: only -ENOMEM can get here.  The steps taken
             * stand; report through cb. */
            if (j->err == 0)
                j->err = r;
            continue;
        }
        j->pending++;
        if (!*v->sender)
            log_info("msgid=%s event=bounce-dropped rcpt=#%u reason=\"null sender\"", v->id,
                     f[i].idx);
    }
    free(dr);
    free(didx);
    if (j->pending == 0) { /* every step failed synchronously */
        r = j->err ? j->err : -ENOMEM;
        goto fail_nodsn;
    }
    return 0;
fail:
    free(dr);
    free(didx);
fail_nodsn:
    if (j) {
        free(j->dsn);
        free(j->commits);
        free(j);
    }
    return r;
}

void bounce_dsn_envelope(struct spool_envelope *env, const char *to[1],
                         const struct spool_msg_view *v, const char *hostname, bool eight,
                         int64_t now)
{
    to[0] = v->sender;
    *env = (struct spool_envelope){
        .sender = "",
        .rcpts = to,
        .nrcpts = 1,
        .helo = hostname,
        .client_addr = "127.0.0.1",
        .headers = "",
        .flags = eight ? SPOOL_F_8BITMIME : 0,
        .received_at = now,
    };
}
