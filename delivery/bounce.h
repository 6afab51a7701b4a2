/* SPDX-License-Identifier: MIT */
/*
 * bounce.h - failing recipients for good: the one place where ortoo decides
 * whether a failure produces a DSN, builds it (delivery/dsn.c) and stores it
 * together with the failure (spool_submit_bounce), or records the failure
 * alone.  The scheduler calls it when a recipient gets a 5xx or expires; the
 * control socket's `queue bounce` and `queue delete --bounce` call it too.
 *
 * The rules (RFC 3461, RFC 5321 6.1-6.2, RFC 3834):
 *  - a DSN goes to the envelope sender of the original, from the null
 *    sender <>, only for recipients whose NOTIFY asks for failures (no
 *    NOTIFY counts as FAILURE);
 *  - never to the null sender: a bounce that bounces is dropped (the
 *    recipient is marked FAILED and a line is logged);
 *  - one DSN per call, covering every recipient of the call that wants one;
 *    the DSN and the FAILED marks of its recipients are one durable step,
 *    so a crash never loses the DSN nor sends it twice.
 */
#ifndef ORTOO_BOUNCE_H
#define ORTOO_BOUNCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spool/spool.h"

/* One recipient that failed (strings borrowed for the call). */
struct bounce_rcpt {
    uint32_t idx;              /* recipient index in the message */
    const char *status;        /* enhanced status, e.g. "5.1.1" */
    const char *remote_mta;    /* host that refused, or NULL (local reason) */
    const char *diagnostic;    /* the reply or the local reason */
    int64_t last_attempt;      /* unix time of the last attempt, or 0 */
};

/* Runs once, on the shard's loop, when every durable step of the call is
 * done: res 0, or the first -errno (the failures whose step failed stay as
 * they were, to be retried by whoever called). */
typedef void (*bounce_cb)(void *arg, int res);

/*
 * Fail recipients f[0..n) of the open message v for good.  Recipients that
 * want a DSN are covered by one DSN (stored with spool_submit_bounce, which
 * marks them FAILED); the others are marked FAILED with spool_attempt
 * (their reply kept).  hostname is the Reporting-MTA.  Borrows v and f for
 * the call only (the DSN is built before return).  cb may be NULL.
 * Returns 0 (cb runs later, never inside this call), or -errno with nothing
 * done (-EINVAL for n == 0 or a bad index, -EALREADY if a recipient is
 * final already, -ENOMEM).
 */
int bounce_fail(struct spool_shard *sh, const struct spool_msg_view *v,
                const struct bounce_rcpt *f, size_t n, const char *hostname, int64_t now,
                bounce_cb cb, void *arg);

/*
 * The envelope of a DSN (or delay notice) about v: from <>, to v's sender
 * (through to[0], which must outlive env), as this host (hostname), with
 * 8BITMIME when the DSN's text needs it (eight), received now.
 */
void bounce_dsn_envelope(struct spool_envelope *env, const char *to[1],
                         const struct spool_msg_view *v, const char *hostname, bool eight,
                         int64_t now);

#endif
