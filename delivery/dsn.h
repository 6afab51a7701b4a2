/* SPDX-License-Identifier: MIT */
/*
 * dsn.h - delivery status notifications (RFC 3464, RFC 3461): the bounce
 * and delay messages ortoo sends to an envelope sender.
 *
 * dsn_build() turns the outcome of some recipients of one stored message
 * into a complete new message, in the spool's wire form (CRLF lines,
 * dot-stuffed, without the final ".\r\n"), ready for spool_submit_bounce():
 *
 *   multipart/report; report-type=delivery-status
 *     1. text/plain: what happened, for a person
 *     2. message/delivery-status: Reporting-MTA, Arrival-Date,
 *        Original-Envelope-Id when given; per recipient Original-Recipient
 *        (only when ORCPT was given), Final-Recipient, Action, Status,
 *        Remote-MTA, Diagnostic-Code, Last-Attempt-Date, Will-Retry-Until
 *     3. the original message (message/rfc822, RET=FULL and small enough)
 *        or its header (text/rfc822-headers: RET=HDRS, no RET, or too big)
 *
 * The original is taken in its stored wire form: it is already CRLF and
 * dot-stuffed, so its lines are copied as they are.  Nothing here does I/O
 * or blocks; it allocates the output only.
 *
 * Never a DSN to the null sender (RFC 3461 6.2, RFC 5321 4.5.5): callers
 * check dsn_wanted() first, which also applies the recipients' NOTIFY.
 */
#ifndef ORTOO_DSN_H
#define ORTOO_DSN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What a DSN reports (RFC 3464 2.3.3 Action). */
enum dsn_kind {
    DSN_FAILED = 0,   /* "failed": the recipients will not get the message */
    DSN_DELAYED,      /* "delayed": still trying (a delay warning) */
    DSN_DELIVERED,    /* "delivered" (NOTIFY=SUCCESS) */
    DSN_RELAYED,      /* "relayed": handed to a server without DSN support */
};

/* Above this many stored bytes, RET=FULL returns only the header. */
#define DSN_FULL_MAX (512u * 1024)

/* One recipient's outcome (all strings borrowed for the call). */
struct dsn_rcpt {
    const char *rcpt;          /* the forward-path as received */
    const char *orcpt;         /* ORCPT "addr-type;xtext" as received, or NULL */
    const char *status;        /* enhanced status "5.1.1" (RFC 3463) */
    const char *remote_mta;    /* host that gave the reply, or NULL */
    const char *diagnostic;    /* the reply ("550 5.1.1 no such user"), or NULL */
    int64_t last_attempt;      /* unix time, 0 if never attempted */
};

/* The report as a whole (strings borrowed for the call). */
struct dsn_params {
    enum dsn_kind kind;
    const char *reporting_mta; /* this server's host name */
    const char *queue_id;      /* the original's spool id (for the text) */
    const char *sender;        /* the original envelope sender (the DSN's To) */
    const char *envid;         /* ENVID xtext as received, or NULL */
    uint8_t ret;               /* enum spool_dsn_ret of the original (0: none) */
    int64_t arrival;           /* unix time the original was received */
    int64_t now;               /* unix time of the report */
    int64_t retry_until;       /* DSN_DELAYED: when ortoo gives up (0: omit) */
    const char *message_id;    /* Message-ID of the DSN without <>, or NULL
                                  (then made from queue_id and reporting_mta) */
};

/*
 * Whether recipient notify flags (SPOOL_NOTIFY_*, 0 = not given) ask for a
 * DSN of this kind, and the sender can receive one: false for the null
 * sender always; failed: unless NOTIFY was given without FAILURE (NEVER
 * included); delayed: only with NOTIFY=DELAY... or without NOTIFY (RFC 3461
 * 4.1 leaves the default to the MTA: ortoo warns then, as Postfix can);
 * delivered: only with SUCCESS; relayed: only with SUCCESS.
 */
bool dsn_wanted(enum dsn_kind kind, const char *sender, uint8_t notify);

/*
 * Decode an xtext (RFC 3461 4: "+XX" hex escapes) of len bytes into out
 * (cap bytes, NUL-terminated, cut if needed), replacing control characters
 * by '?' so that the result is safe in a header field.  Returns the length.
 */
size_t dsn_xtext_decode(const char *s, size_t len, char *out, size_t cap);

/*
 * Build the DSN for n >= 1 recipients of one message.  orig is the stored
 * message (wire form, orig_len bytes) and orig_headers the header fields
 * ortoo prepended to it (may be NULL); both are borrowed.  On success
 * *out is a malloc'ed buffer of *out_len bytes in wire form (caller frees)
 * and, if eight_bit is not NULL, *eight_bit tells whether the DSN carries
 * 8-bit bytes (send it with BODY=8BITMIME).  Returns 0, -EINVAL (n == 0, no
 * sender) or -ENOMEM.
 */
int dsn_build(const struct dsn_params *p, const struct dsn_rcpt *r, size_t n,
              const char *orig_headers, size_t orig_headers_len, const char *orig,
              size_t orig_len, char **out, size_t *out_len, bool *eight_bit);

#endif
