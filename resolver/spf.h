/* SPDX-License-Identifier: MIT */
/*
 * spf.h - SPF (RFC 7208) check_host() evaluated asynchronously on the
 * reactor's resolver (resolver.h), for the MAIL FROM and the HELO
 * identities of inbound mail.
 *
 * An evaluation is a struct spf_req embedded in its owner, like struct
 * res_req:
 *  - spf_check() starts it.  It returns 1 when the result is known at once
 *    (a malformed or single-label <domain> gives "none", RFC 7208 4.3; the
 *    resolver refusing the first query gives "temperror"): the result is in
 *    req->result and the callback will NOT run.  Otherwise it
 *    returns 0 and the callback runs exactly once, later, on the loop's
 *    thread, never inside spf_check();
 *  - the req is busy from a 0 return until its callback starts; the
 *    callback may start a new evaluation on the req or free its owner;
 *  - spf_cancel() makes a busy req idle at once: its callback never runs,
 *    nothing holds a pointer to it any more, and the owner may free it
 *    right after (an SMTP session closing in the middle of an evaluation).
 *    Cancelling an idle req is a no-op.
 *
 * What it implements: the record lookup and selection (4.4, 4.5), the
 * mechanisms all, include, a, mx, ptr, ip4, ip6, exists (5) with their
 * dual CIDR lengths, the modifiers redirect= and exp= (6), macros (7, with
 * resolver/spf_record.h's expander; %{p} is validated with the PTR and
 * address lookups of 5.5 when a domain-spec uses it), and the processing
 * limits of 4.6.4: at most SPF_MAX_LOOKUPS terms that cause DNS queries
 * (include, a, mx, ptr, exists, redirect), at most SPF_MAX_VOID void
 * lookups (NXDOMAIN or no answer), at most SPF_MAX_NAMES MX hosts per "mx"
 * (more is a permerror) and PTR names per "ptr" (the rest is ignored).
 * Beyond the RFC, every evaluation makes at most SPF_MAX_QUERIES DNS queries
 * (the RFC limits imply about 130), so the work per message is bounded
 * whatever the records say; the time is bounded by the resolver's own
 * deadline per query and by the owner, who cancels when it stops waiting.
 *
 * Results (2.6): none, neutral, pass, fail, softfail, temperror, permerror.
 * For a "fail" whose record has exp=, req->explanation holds the expanded
 * explanation (printable ASCII, bounded), else "".  req->why says in a few
 * words what decided (for logs and the Authentication-Results comment).
 *
 * Threads: like resolver.h, a req belongs to the thread of its context.
 */
#ifndef ORTOO_RESOLVER_SPF_H
#define ORTOO_RESOLVER_SPF_H

#include <stdbool.h>
#include <stddef.h>

#include "resolver/resolver.h"

#define SPF_MAX_LOOKUPS 10      /* RFC 7208 4.6.4: DNS-querying terms */
#define SPF_MAX_VOID 2          /* RFC 7208 4.6.4: void lookups */
#define SPF_MAX_NAMES 10        /* RFC 7208 4.6.4: MX / PTR names per term */
#define SPF_MAX_QUERIES 128     /* DNS queries per evaluation, all kinds */
#define SPF_EXPLANATION_MAX 256 /* bytes of explanation kept (with the NUL) */

/* check_host() results (RFC 7208 2.6). */
enum spf_result {
    SPF_R_NONE = 0,
    SPF_R_NEUTRAL,
    SPF_R_PASS,
    SPF_R_FAIL,
    SPF_R_SOFTFAIL,
    SPF_R_TEMPERROR,
    SPF_R_PERMERROR,
};

struct spf_req;
struct spf_eval;

/* Completion callback: the result is also in req->result. */
typedef void (*spf_cb)(struct spf_req *req, enum spf_result result);

/* The arguments of check_host() (RFC 7208 4.1), borrowed by spf_check(),
 * which copies what it keeps. */
struct spf_params {
    int family;                 /* AF_INET or AF_INET6 (map v4-mapped v6 to v4 first) */
    const unsigned char *ip;    /* <ip>: 4 or 16 bytes, network order */
    const char *domain;         /* <domain>: the MAIL FROM domain, or the HELO name */
    const char *sender;         /* <sender>: "local@domain"; for <> "postmaster@<helo>" */
    const char *helo;           /* HELO/EHLO name (%{h}) */
    const char *receiver;       /* our host name (%{r} in explanations) */
};

/*
 * One evaluation.  Embed it in its owner; zero it (or spf_req_init) once.
 * The fields above 'private' are the caller's to read once the evaluation
 * is over (callback run, or spf_check() returned 1).
 */
struct spf_req {
    spf_cb cb;                  /* set by spf_check */
    void *owner;                /* for the owner, never touched here */
    enum spf_result result;     /* the result once done */
    unsigned lookups;           /* DNS-querying terms evaluated (4.6.4) */
    unsigned void_lookups;      /* void lookups seen (4.6.4) */
    unsigned queries;           /* DNS queries made */
    char why[160];              /* what decided, printable ASCII */
    char explanation[SPF_EXPLANATION_MAX]; /* exp= text for a fail, or "" */
    /* private: */
    struct res_ctx *ctx;
    struct res_req rr;          /* the one lookup in flight */
    struct spf_eval *ev;        /* evaluation state (owned) while busy */
    bool busy;
};

/* Zero a req and set its owner. */
void spf_req_init(struct spf_req *req, void *owner);

/* True while an evaluation is in flight. */
static inline bool spf_req_busy(const struct spf_req *req) { return req->busy; }

/*
 * Start check_host(p->ip, p->domain, p->sender) on ctx.  Returns 0 (cb runs
 * later), 1 (the result is known now, in req->result; cb will not run),
 * -EBUSY (req busy), -EINVAL (bad family or missing argument) or -ENOMEM.
 * Never blocks.
 */
int spf_check(struct res_ctx *ctx, struct spf_req *req, const struct spf_params *p, spf_cb cb);

/* Stop a busy evaluation now; its callback never runs.  No-op when idle. */
void spf_cancel(struct spf_req *req);

/* "none", "neutral", "pass", "fail", "softfail", "temperror", "permerror". */
const char *spf_result_name(enum spf_result r);

#endif
