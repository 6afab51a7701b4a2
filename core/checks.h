/* SPDX-License-Identifier: MIT */
/*
 * checks.h - the inbound checks of mail from outside (port 25, no AUTH):
 * iprev (forward-confirmed reverse DNS of the client), SPF of the HELO and
 * MAIL FROM identities (RFC 7208), DKIM verification (RFC 6376) and DMARC
 * (RFC 7489), recorded in one Authentication-Results field (RFC 8601) and,
 * by the [checks] policy knobs, a reason to refuse the message.
 *
 * The SMTP session (core/smtp_session.c) owns one struct checks per
 * connection that needs them (made at the first MAIL) and calls:
 *
 *   checks_mail(c, cfg, helo, sender)    MAIL accepted: iprev (once per
 *                                        connection), SPF of HELO (again only
 *                                        when the name changed) and of MAIL FROM
 *                                        start, on the reactor's resolver, in
 *                                        parallel with the rest of the
 *                                        transaction
 *   checks_data(c)                       DATA / first BDAT: a DKIM verifier
 *   checks_feed(c, bytes, n)             every message append (stored wire
 *                                        form); at the end of the header block
 *                                        the DKIM keys and the DMARC policy
 *                                        are looked up
 *   checks_end(c, cb, arg)               the final dot: 0 when every result is
 *                                        in (the verdict is ready), 1 when the
 *                                        session must wait for cb (WAIT_CHECKS)
 *   checks_verdict(c, &v)                accept with v.header prepended, or
 *                                        refuse with v.code / v.reply
 *   checks_reset(c)                      end of the transaction (RSET, EHLO,
 *                                        after the message)
 *   checks_free(c)                       the session ends, maybe in the middle
 *                                        of everything: all is cancelled, cb
 *                                        never runs
 *
 * The wait at the final dot is bounded: [checks] timeout after the dot,
 * the results still missing become temperror and cb runs with a verdict.
 * cb never runs inside a checks_* call; it runs at most once per
 * checks_end() returning 1, and never after checks_reset() or checks_free().
 *
 * A transaction for which checks_mail() was not called (the client
 * authenticated, or [checks] enabled went off at a reload) is not checked:
 * checks_end() returns 0 and the verdict is accept, without a header.
 *
 * Verdicts: accept (with the Authentication-Results field), or
 *  - 550 5.7.1 when DMARC fails and the policy that applies after pct= is
 *    reject ([checks] dmarc_reject, on by default); 451 4.7.1 instead when a
 *    temporary error (SPF temperror, a DKIM key not fetched) may be why;
 *  - 550 5.7.1 for several From fields or author domains (RFC 7489 6.6.1,
 *    a known way around DMARC) under dmarc_reject;
 *  - 550 5.7.23 (RFC 7372) when SPF of MAIL FROM fails and DMARC did not
 *    pass ([checks] spf_reject, off by default).  Given at the end of DATA,
 *    not at MAIL: a message whose aligned DKIM signature makes DMARC pass is
 *    not refused for an SPF fail (RFC 7489 10.1, forwarded mail).
 *
 * Incoming Authentication-Results fields that carry our authserv-id (the
 * host name) are never read by ortoo, cannot be removed (the stored bytes
 * are not rewritten) and are counted in the log (event=foreign-ar); ours is
 * prepended above them, so a reader taking the topmost field with our
 * authserv-id gets ours (RFC 8601 5).
 *
 * Threads: a struct checks lives on its session's reactor; struct
 * checks_reactor is per reactor.  Nothing here blocks.
 */
#ifndef ORTOO_CORE_CHECKS_H
#define ORTOO_CORE_CHECKS_H

#include <stdbool.h>
#include <stddef.h>

struct io_loop;
struct res_ctx;
struct psl;
struct config;
struct checks;
struct checks_reactor;

/*
 * The per-reactor part: the resolver and loop of the reactor, its DKIM
 * public key cache, the shared Public Suffix List (may be NULL:
 * the implicit rule only).  Made at reactor start-up.  NULL with err.
 */
struct checks_reactor *checks_reactor_new(struct io_loop *loop, struct res_ctx *res,
                                          const struct psl *psl, char *err, size_t errlen);
/* After the reactor's loop stopped, its sessions gone. */
void checks_reactor_free(struct checks_reactor *cr);

/*
 * Checks for one connection from client_addr (IPv4 or IPv6 text).
 * session_id is copied for logs.  NULL on ENOMEM or when the address is
 * not an IP address (the session then goes on without checks).
 */
struct checks *checks_new(struct checks_reactor *cr, const char *session_id,
                          const char *client_addr);

/* Free, cancelling whatever is in flight; cb never runs afterwards.  NULL
 * is a no-op.  The memory may go a loop turn later (a cancelled timer). */
void checks_free(struct checks *c);

/* MAIL FROM:<sender> was accepted ("" for <>), after EHLO/HELO helo.
 * cfg is the configuration the session runs with (borrowed; it outlives
 * the session). */
void checks_mail(struct checks *c, const struct config *cfg, const char *helo,
                 const char *sender);

/* The message starts (DATA, or the first BDAT chunk). */
void checks_data(struct checks *c);

/* Message bytes, stored wire form (borrowed). */
void checks_feed(struct checks *c, const char *data, size_t len);

/* The session's callback when a waited-for verdict is ready. */
typedef void (*checks_cb)(struct checks *c, void *arg);

/*
 * The final dot (the message is otherwise acceptable).  Returns 0 when the
 * verdict is ready now, 1 when cb(c, arg) will run once it is (at most
 * [checks] timeout later).
 */
int checks_end(struct checks *c, checks_cb cb, void *arg);

/* What to do with the message. */
struct checks_verdict {
    int code;                   /* 0: accept; 550 or 451: refuse with reply */
    const char *status;         /* "550 5.7.23" and the like (static), for logs */
    const char *reply;          /* the reply line, no CRLF (borrowed) */
    const char *reason;         /* a word for the mail log (static) */
    const char *header;         /* Authentication-Results field, CRLF-terminated
                                   (borrowed until checks_reset), or NULL */
};

/* The verdict of the last checks_end (ready). */
void checks_verdict(const struct checks *c, struct checks_verdict *out);

/* The transaction is over: what belongs to it goes (MAIL FROM's SPF,
 * the DKIM verifier, the DMARC lookups, the verdict).  iprev and the HELO
 * result stay for the connection's next messages. */
void checks_reset(struct checks *c);

#endif
