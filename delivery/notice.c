/* SPDX-License-Identifier: MIT */
/*
 * notice.c - delivered, relayed and delayed notices (see notice.h).
 *
 * One call makes one heap object holding the notice's bytes (borrowed by
 * the spool until its commit callback) and its commits; it frees itself
 * when the last one reported.
 */
#include "delivery/notice.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "io/log.h"
#include "io/maillog.h"

/* Invariant: pending counts the commits whose callback has not run. */
struct notice_job {
    bounce_cb cb;
    void *arg;
    int err;
    int pending;
    char *dsn;
    size_t dsn_len;
    struct spool_commit submit, flags;
};

static void notice_step_done(struct spool_commit *c, int res)
{
    struct notice_job *j = c->owner;

    if (res < 0 && j->err == 0)
        j->err = res;
    if (--j->pending > 0)
        return;
    if (j->cb != NULL)
        j->cb(j->arg, j->err);
    free(j->dsn);
    free(j);
}

int notice_send(struct spool_shard *sh, const struct spool_msg_view *v, enum dsn_kind kind,
                const struct bounce_rcpt *r, size_t n, const char *hostname, int64_t now,
                int64_t retry_until, bounce_cb cb, void *arg)
{
    struct dsn_rcpt *dr = NULL;
    struct notice_job *j = NULL;
    size_t nd = 0;
    bool eight = false;
    int rc;

    if (kind == DSN_FAILED || n == 0)
        return -EINVAL;
    if ((dr = calloc(n, sizeof *dr)) == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (r[i].idx >= v->nrcpts) {
            free(dr);
            return -EINVAL;
        }
        uint8_t notify = v->dsn_notify ? v->dsn_notify[r[i].idx] : 0;
        if (!dsn_wanted(kind, v->sender, notify))
            continue;
        dr[nd++] = (struct dsn_rcpt){
            .rcpt = v->rcpts[r[i].idx],
            .orcpt = v->dsn_orcpt ? v->dsn_orcpt[r[i].idx] : NULL,
            .status = r[i].status,
            .remote_mta = r[i].remote_mta,
            .diagnostic = r[i].diagnostic,
            .last_attempt = r[i].last_attempt,
        };
    }
    if (nd == 0) {
        free(dr);
        return 0;
    }
    if ((j = calloc(1, sizeof *j)) == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    j->cb = cb;
    j->arg = arg;
    struct dsn_params p = {
        .kind = kind,
        .reporting_mta = hostname,
        .queue_id = v->id,
        .sender = v->sender,
        .envid = v->dsn_envid,
        .ret = v->dsn_ret,
        .arrival = v->received_at,
        .now = now,
        .retry_until = kind == DSN_DELAYED ? retry_until : 0,
    };
    if ((rc = dsn_build(&p, dr, nd, v->headers, v->headers_len, v->data, v->size, &j->dsn,
                        &j->dsn_len, &eight)) < 0)
        goto fail;
    const char *to[1];
    struct spool_envelope env;
    bounce_dsn_envelope(&env, to, v, hostname, eight, now);
    struct iovec iov = {j->dsn, j->dsn_len};
    j->submit.cb = notice_step_done;
    j->submit.owner = j;
    if ((rc = spool_submit(sh, &j->submit, &env, &iov, 1)) < 0)
        goto fail;
    j->pending = 1;
    if (kind == DSN_DELAYED) {
        j->flags.cb = notice_step_done;
        j->flags.owner = j;
        if (spool_msg_flags(sh, &j->flags, v->id, SPOOL_MF_DELAY_WARNED) == 0)
            j->pending++;
    }
    maillog_notice(v->id,
                   kind == DSN_DELAYED ? "delayed" : kind == DSN_RELAYED ? "relayed" : "delivered",
                   j->submit.id, v->sender, nd);
    free(dr);
    return (int)nd;
fail:
    free(dr);
    if (j != NULL) {
        free(j->dsn);
        free(j);
    }
    return rc;
}
