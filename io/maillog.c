/* SPDX-License-Identifier: MIT */
/*
 * maillog.c - the mail event lines (see maillog.h).  Addresses are printed
 * inside <> so that an empty sender stays visible and spaces in quoted local
 * parts cannot shift the key=value pairs.
 */
#include "io/maillog.h"

#include "io/log.h"
#include "io/metrics.h"

void maillog_queued(const char *msgid, const char *session, const char *client,
                    const char *sender, size_t nrcpts, uint64_t size, const char *user)
{
    metrics_received(nrcpts, size);
    log_info("msgid=%s session=%s event=queued client=%s from=<%s> nrcpt=%zu size=%llu%s%s",
             msgid, session, client, sender, nrcpts, (unsigned long long)size,
             user ? " user=" : "", user ? user : "");
}

void maillog_rejected(const char *session, const char *client, const char *stage,
                      const char *addr, const char *reply, const char *reason)
{
    metrics_rejected(reason);
    log_info("session=%s event=rejected stage=%s client=%s addr=<%s> reply=\"%s\" reason=%s",
             session, stage, client, addr ? addr : "", reply, reason);
}
