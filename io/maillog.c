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
