/* SPDX-License-Identifier: MIT */
/*
 * maillog.c - the mail event lines (see maillog.h).  Addresses are printed
 * inside <> so that an empty sender stays visible; values that a remote
 * party supplied go through mq(), which quotes and escapes them.
 */
#include "io/maillog.h"

#include <stdio.h>
#include <string.h>

#include "io/log.h"

#define MQ_SLOTS 8
#define MQ_MAX 1024

/*
 * A value for a key=value line: as it is when it holds only printable ASCII
 * other than space, '"', '=' and '\\'; otherwise in double quotes with '"'
 * and '\\' escaped, \n \r \t, other control bytes and non-ASCII bytes as
 * \xHH.  Results live in per-thread slots (one line may use MQ_SLOTS).
 * NULL prints as "-".
 */
static const char *mq(const char *s)
{
    static _Thread_local char slots[MQ_SLOTS][MQ_MAX];
    static _Thread_local unsigned next;
    char *out = slots[next++ % MQ_SLOTS];
    size_t o = 0;
    bool bare = s != NULL && *s != '\0';

    if (s == NULL)
        return "-";
    for (const unsigned char *p = (const unsigned char *)s; *p && bare; p++)
        bare = *p > 0x20 && *p < 0x7f && *p != '"' && *p != '=' && *p != '\\';
    if (bare && strlen(s) < MQ_MAX)
        return s;
    out[o++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (o + 8 >= MQ_MAX) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        if (*p == '"' || *p == '\\') {
            out[o++] = '\\';
            out[o++] = (char)*p;
        } else if (*p == '\n' || *p == '\r' || *p == '\t') {
            out[o++] = '\\';
            out[o++] = *p == '\n' ? 'n' : *p == '\r' ? 'r' : 't';
        } else if (*p < 0x20 || *p >= 0x7f) {
            o += (size_t)snprintf(out + o, 5, "\\x%02x", *p);
        } else {
            out[o++] = (char)*p;
        }
    }
    out[o++] = '"';
    out[o] = '\0';
    return out;
}

/* "<addr>" escaped as one value. */
static const char *mq_addr(const char *addr)
{
    char tmp[MQ_MAX];

    snprintf(tmp, sizeof tmp, "<%s>", addr ? addr : "");
    return mq(tmp);
}

void maillog_queued(const char *msgid, const char *session, const char *client,
                    const char *sender, size_t nrcpts, uint64_t size, const char *user)
{
    log_info("msgid=%s session=%s event=queued client=%s from=%s nrcpt=%zu size=%llu%s%s",
             msgid, session, client, mq_addr(sender), nrcpts, (unsigned long long)size,
             user ? " user=" : "", user ? mq(user) : "");
}

void maillog_rejected(const char *session, const char *client, const char *stage,
                      const char *addr, const char *reply, const char *reason)
{
    log_info("session=%s event=rejected stage=%s client=%s addr=%s reply=\"%s\" reason=%s",
             session, stage, client, mq_addr(addr), reply, reason);
}

static void attempt_line(const char *event, const struct maillog_attempt *a, const char *extra)
{
    char code[16] = "-";

    if (a->code > 0)
        snprintf(code, sizeof code, "%d", a->code);
    log_info("msgid=%s event=%s rcpt=%s relay=%s addr=%s tls=%s resumed=%s dane=%s stage=%s "
             "code=%s status=%s reply=%s delay=%llds attempt=%u%s",
             a->msgid, event, mq_addr(a->rcpt), mq(a->relay), a->addr ? a->addr : "-",
             a->tls ? a->tls : "none", a->resumed ? "yes" : "no", a->dane ? "yes" : "no",
             a->stage ? a->stage : "-", code, mq(a->status && *a->status ? a->status : NULL),
             mq(a->reply), (long long)a->delay, a->attempt, extra ? extra : "");
}

void maillog_delivered(const struct maillog_attempt *a)
{
    attempt_line("delivered", a, NULL);
}

void maillog_deferred(const struct maillog_attempt *a, int64_t next)
{
    char extra[48];

    snprintf(extra, sizeof extra, " next=%lld", (long long)next);
    attempt_line("deferred", a, extra);
}

void maillog_bounced(const struct maillog_attempt *a)
{
    attempt_line("bounced", a, NULL);
}

void maillog_expired(const struct maillog_attempt *a)
{
    attempt_line("expired", a, NULL);
}

void maillog_notice(const char *msgid, const char *kind, const char *dsn_id, const char *to,
                    size_t nrcpts)
{
    log_info("msgid=%s event=notice kind=%s dsn=%s to=%s nrcpt=%zu", msgid, kind, dsn_id,
             mq_addr(to), nrcpts);
}

void maillog_connect_failed(const char *dest, const char *host, const char *addr,
                            const char *stage, const char *status, const char *reason)
{
    log_info("event=connect-failed dest=%s host=%s addr=%s stage=%s status=%s reason=%s",
             mq(dest), mq(host), addr ? addr : "-", stage ? stage : "-",
             mq(status && *status ? status : NULL), mq(reason));
}

void maillog_dest_backoff(const char *dest, int64_t until, unsigned failures,
                          const char *status, const char *reason, size_t jobs)
{
    log_info("event=dest-backoff dest=%s until=%lld failures=%u status=%s reason=%s jobs=%zu",
             mq(dest), (long long)until, failures, mq(status && *status ? status : NULL),
             mq(reason), jobs);
}
