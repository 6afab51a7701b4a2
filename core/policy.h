/* SPDX-License-Identifier: MIT */
/*
 * policy.h - who may do what on the SMTP server: relaying without AUTH from
 * trusted networks, what counts as a submission (signed with DKIM, given a
 * Date and a Message-ID), sender ownership, sending rates, the AUTH
 * throttle's client key and the penalty box.
 *
 * The session (core/smtp_session.c) keeps one struct policy_client per
 * connection and calls in at a few points: at accept (policy_admit), at
 * MAIL (policy_mail), when a transaction ends (policy_mail_end) and when it
 * closes a client for abuse (policy_abuse); the rest are predicates.  The
 * rules, in one place (docs/config.md, [relay] and [limits]):
 *
 *  - Relaying (a recipient outside the local domains) needs AUTH, or a
 *    client address in [relay] trusted_networks (Postfix's mynetworks).  A
 *    trusted client needs neither STARTTLS nor AUTH, on the smtp and the
 *    submission listeners alike; on submissions (465) TLS is the transport,
 *    so it has TLS, and needs no AUTH after it.
 *  - A submission is mail from an authenticated or a trusted client: it is
 *    signed when the domain of its From field has DKIM keys and gets Date
 *    and Message-ID when it lacks them (RFC 6409 8).  Other mail (inbound
 *    on port 25) is never changed.
 *  - An authenticated user sends as the addresses it owns (553 5.7.1
 *    otherwise).  A trusted client that did not authenticate may use any
 *    sender: the operator vouched for everything on that network, and a
 *    compromised app there can send as anyone -- the documented risk.  A
 *    trusted client that does authenticate is held to its user's rules.
 *  - Sending rate: [relay] messages_per_hour (or the user's entry in
 *    user_messages_per_hour) per account, and per client prefix for a
 *    trusted client without AUTH; past it MAIL gets 452 4.7.1.  Counted
 *    across reactors (core/limits.h); a message counts from its MAIL and is
 *    given back when the transaction ends without it being queued.
 *  - AUTH failures count per client prefix and per account (core/auth.h),
 *    except that a trusted client has no per-prefix count: from there a
 *    guessed password buys nothing the client does not have already, and
 *    one local app's failures must not lock out the other apps.  The
 *    per-account count stays (it guards the password itself).
 *  - Penalty box: a client prefix closed for abuse (junk or command limit,
 *    too many errors, early talker, replies left unread until the
 *    deadline) is refused at accept for [limits] penalty_time, doubling up
 *    to penalty_max while it keeps coming back to offend.  Trusted networks
 *    are never boxed; loopback addresses not in them are boxed for
 *    penalty_time at most, so a local app with a bug is back soon.
 *
 * Everything here runs on the reactor thread, never blocks, and touches
 * only the shared tables of core/limits.c (striped locks).
 */
#ifndef ORTOO_POLICY_H
#define ORTOO_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/config.h"
#include "core/limits.h"

struct users;

/*
 * What the policy knows of one client, kept in its session.  Invariant:
 * rate_taken implies rate_per_hour > 0 and that one message was counted
 * under rate_key, not yet queued or given back.
 */
struct policy_client {
    bool trusted;                  /* address in [relay] trusted_networks */
    bool loopback;                 /* 127.0.0.0/8 or ::1 (or v4-mapped) */
    bool rate_taken;               /* this transaction's message is counted */
    unsigned rate_per_hour;        /* the rate it was counted under */
    struct limits_key rate_key;    /* the account or prefix it was counted for */
};

/* True when peer is in one of cfg's trusted networks. */
bool policy_trusted(const struct config *cfg, const struct sockaddr_storage *peer);

/*
 * At accept, before any session state exists: fill *pc for peer (whose
 * prefix key is k) and return how long (ns, from now) its prefix is still
 * in the penalty box; 0 admits it.  Trusted clients are never boxed.
 */
uint64_t policy_admit(struct policy_client *pc, const struct config *cfg, struct limits *l,
                      const struct sockaddr_storage *peer, const struct limits_key *k,
                      uint64_t now);

/* May this client relay (name recipients outside the local domains)? */
static inline bool policy_may_relay(const struct policy_client *pc, bool authed)
{
    return authed || pc->trusted;
}

/* Is what this client sends a submission (DKIM, added Date/Message-ID)? */
static inline bool policy_is_submission(const struct policy_client *pc, bool authed)
{
    return authed || pc->trusted;
}

/* Must this client authenticate before MAIL on a listener of this role? */
static inline bool policy_needs_auth(const struct policy_client *pc, enum listen_role role,
                                     bool authed)
{
    return (role == ROLE_SUBMISSION || role == ROLE_SUBMISSIONS) && !authed && !pc->trusted;
}

/* Must this client use STARTTLS before MAIL on a listener of this role? */
static inline bool policy_needs_tls(const struct policy_client *pc, enum listen_role role,
                                    bool tls_active)
{
    return role == ROLE_SUBMISSION && !tls_active && !pc->trusted;
}

/* The client key to give the AUTH throttle (core/auth.h): k, or NULL for a
 * trusted client (no per-prefix count; the per-account one stays). */
static inline const struct limits_key *policy_auth_client(const struct policy_client *pc,
                                                          const struct limits_key *k)
{
    return pc->trusted ? NULL : k;
}

/* Verdicts of policy_mail(). */
enum policy_mail { POLICY_MAIL_OK = 0, POLICY_MAIL_NOT_OWNER, POLICY_MAIL_RATE };

/*
 * MAIL FROM:<sender> (len bytes; is_null for <>) from this client, which
 * authenticated as auth_user (NULL: it did not) and whose prefix key is k.
 * NOT_OWNER: an authenticated user's sender is not its own (553 5.7.1).
 * RATE: the account or trusted prefix is over its messages per hour (452
 * 4.7.1; nothing counted).  OK: go on; when a rate applies, one message is
 * counted, and policy_mail_end must be called once for the transaction.
 * users (borrowed) gives the account's canonical form.
 */
enum policy_mail policy_mail(struct policy_client *pc, const struct config *cfg,
                             struct limits *l, const struct users *users,
                             const char *auth_user, const struct limits_key *k,
                             const char *sender, size_t len, bool is_null, uint64_t now);

/*
 * The transaction is over: queued (the message is stored: it stays
 * counted) or not (RSET, an error, the client left: it is given back).
 * Nothing to do when no message was counted; safe to call again.
 */
void policy_mail_end(struct policy_client *pc, struct limits *l, bool queued, uint64_t now);

/*
 * The session is being closed for abuse: box its prefix k (see the file
 * header).  Returns the new box's length in ns, or 0 when none was set
 * (trusted, box off, or boxed already); *level gets the doublings.
 */
uint64_t policy_abuse(const struct policy_client *pc, const struct config *cfg,
                      struct limits *l, const struct limits_key *k, uint64_t now,
                      unsigned *level);

#endif
