/* SPDX-License-Identifier: MIT */
/*
 * maillog.c - the mail event lines (see maillog.h).  Addresses are printed
 * inside <> so that an empty sender stays visible, and every value the
 * client chose goes through log_q (io/log.h): quoted and escaped when it
 * holds a space, a quote, '=' or a control character, so that a quoted
 * local part or a name with a newline cannot shift the key=value pairs or
 * start a line of its own.
 */
#include "io/maillog.h"

#include <stdio.h>

#include "io/log.h"
#include "io/metrics.h"

/* "<addr>" escaped for a log value (a thread-local log_q slot). */
static const char *angle(const char *addr)
{
    char buf[LOG_Q_MAX];
    snprintf(buf, sizeof(buf), "<%s>", addr != NULL ? addr : "");
    return log_q(buf);
}

void maillog_queued(const char *msgid, const char *session, const char *client,
                    const char *sender, size_t nrcpts, uint64_t size, const char *user)
{
    metrics_received(nrcpts, size);
    if (log_get_level() < LOG_LVL_INFO)
        return;
    log_info("msgid=%s session=%s event=queued client=%s from=%s nrcpt=%zu size=%llu%s%s",
             msgid, session, client, angle(sender), nrcpts, (unsigned long long)size,
             user ? " user=" : "", user ? log_q(user) : "");
}

void maillog_rejected(const char *session, const char *client, const char *stage,
                      const char *addr, const char *reply, const char *reason)
{
    metrics_rejected(reason);
    log_info("session=%s event=rejected stage=%s client=%s addr=%s reply=%s reason=%s",
             session, stage, client, angle(addr), log_q(reply), reason);
}

static void attempt_line(const char *event, const struct maillog_attempt *a, const char *extra)
{
    char code[16] = "-";

    if (log_get_level() < LOG_LVL_INFO)
        return; /* the line would be dropped: its values are not even formatted */
    if (a->code > 0)
        snprintf(code, sizeof code, "%d", a->code);
    log_info("msgid=%s event=%s rcpt=%s relay=%s addr=%s tls=%s resumed=%s dane=%s stage=%s "
             "code=%s status=%s reply=%s delay=%llds attempt=%u%s",
             a->msgid, event, angle(a->rcpt), log_q(a->relay), a->addr ? a->addr : "-",
             a->tls ? a->tls : "none", a->resumed ? "yes" : "no", a->dane ? "yes" : "no",
             a->stage ? a->stage : "-", code, log_q(a->status && *a->status ? a->status : NULL),
             log_q(a->reply), (long long)a->delay, a->attempt, extra ? extra : "");
}

/* The class label of a failed attempt (docs/metrics.md). */
static enum metrics_dclass attempt_class(const struct maillog_attempt *a)
{
    if (a->dclass >= 0 && a->dclass < METRICS_DCLASS_N)
        return (enum metrics_dclass)a->dclass;
    return metrics_dclass_of(a->code, a->stage);
}

void maillog_delivered(const struct maillog_attempt *a)
{
    metrics_delivered();
    attempt_line("delivered", a, NULL);
}

void maillog_deferred(const struct maillog_attempt *a, int64_t next)
{
    char extra[48];

    metrics_deferred(attempt_class(a));
    snprintf(extra, sizeof extra, " next=%lld", (long long)next);
    attempt_line("deferred", a, extra);
}

void maillog_bounced(const struct maillog_attempt *a)
{
    metrics_bounced(attempt_class(a));
    attempt_line("bounced", a, NULL);
}

void maillog_expired(const struct maillog_attempt *a)
{
    metrics_bounced(METRICS_DCLASS_EXPIRED);
    attempt_line("expired", a, NULL);
}

void maillog_notice(const char *msgid, const char *kind, const char *dsn_id, const char *to,
                    size_t nrcpts)
{
    log_info("msgid=%s event=notice kind=%s dsn=%s to=%s nrcpt=%zu", msgid, kind, dsn_id,
             angle(to), nrcpts);
}

void maillog_connect_failed(const char *dest, const char *host, const char *addr,
                            const char *stage, const char *status, const char *reason)
{
    log_info("event=connect-failed dest=%s host=%s addr=%s stage=%s status=%s reason=%s",
             log_q(dest), log_q(host), addr ? addr : "-", stage ? stage : "-",
             log_q(status && *status ? status : NULL), log_q(reason));
}

void maillog_dest_backoff(const char *dest, int64_t until, unsigned failures,
                          const char *status, const char *reason, size_t jobs)
{
    log_info("event=dest-backoff dest=%s until=%lld failures=%u status=%s reason=%s jobs=%zu",
             log_q(dest), (long long)until, failures, log_q(status && *status ? status : NULL),
             log_q(reason), jobs);
}
