/* SPDX-License-Identifier: MIT */
/*
 * maillog.h - one function per mail event, so that every line about a
 * message has the same keys in the same order (what log readers and
 * fail2ban-style filters match on).  Lines go through io/log.h at info.
 *
 * Receiving: queued, rejected.  Sending: one line per delivery attempt per
 * recipient (delivered, deferred, bounced, expired) with the relay, the TLS
 * facts, the reply, the time in the queue and the attempt number; one line
 * per notice (a DSN ortoo queued) and per dropped bounce.  Values a remote
 * party supplied (addresses, host names, replies) are escaped logfmt-style
 * (quoted when they hold a space, '"', '=' or a backslash; control bytes as
 * \xHH), so one line is always one event.
 *
 * Each event is also counted (io/metrics.h), so that the metrics and the
 * log cannot disagree.
 */
#ifndef ORTOO_MAILLOG_H
#define ORTOO_MAILLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A message was made durable and acknowledged with 250. */
void maillog_queued(const char *msgid, const char *session, const char *client,
                    const char *sender, size_t nrcpts, uint64_t size, const char *user);

/* A recipient, a sender or a whole message was refused (reply: the code and
 * enhanced code sent, e.g. "550 5.7.1"). */
void maillog_rejected(const char *session, const char *client, const char *stage,
                      const char *addr, const char *reply, const char *reason);

/* One delivery attempt for one recipient (strings borrowed for the call;
 * NULL fields are printed as "-" or left out). */
struct maillog_attempt {
    const char *msgid;
    const char *rcpt;          /* the recipient */
    const char *relay;         /* MX host or route host, NULL: none reached */
    const char *addr;          /* "192.0.2.1:25", "[2001:db8::1]:25", or NULL */
    const char *tls;           /* "TLSv1.3", or NULL: clear text */
    bool resumed;              /* TLS session resumed */
    bool dane;                 /* the server was authenticated through TLSA */
    const char *stage;         /* where it ended (smtp_stage_name), or NULL */
    int code;                  /* reply code, 0: a local reason */
    const char *status;        /* enhanced status "4.4.1", or NULL */
    const char *reply;         /* the reply text or the local reason */
    int64_t delay;             /* seconds since the message was received */
    uint32_t attempt;          /* attempt number for this recipient (1-based) */
    int dclass;                /* enum metrics_dclass of a failure (the metrics'
                                  class label), < 0: from code and stage */
};

/* event=delivered (dsn: "relayed" when the server lacks DSN and SUCCESS was
 * asked, else NULL). */
void maillog_delivered(const struct maillog_attempt *a);
/* event=deferred; next: unix time of the next attempt. */
void maillog_deferred(const struct maillog_attempt *a, int64_t next);
/* event=bounced: failed for good (5xx, or a local permanent reason). */
void maillog_bounced(const struct maillog_attempt *a);
/* event=expired: still failing after [delivery] expire; bounced as 4.4.7. */
void maillog_expired(const struct maillog_attempt *a);

/* A DSN ortoo queued about msgid: kind "failed", "delayed", "delivered",
 * "relayed"; dsn_id the new message. */
void maillog_notice(const char *msgid, const char *kind, const char *dsn_id, const char *to,
                    size_t nrcpts);

/* A connection to one address of a destination failed before it was ready
 * (the walk goes on with the next address or host). */
void maillog_connect_failed(const char *dest, const char *host, const char *addr,
                            const char *stage, const char *status, const char *reason);

/* A destination is backed off as a whole until `until` (unix time): no
 * host could be reached; its queued jobs are deferred together. */
void maillog_dest_backoff(const char *dest, int64_t until, unsigned failures,
                          const char *status, const char *reason, size_t jobs);

#endif
