/* SPDX-License-Identifier: MIT */
/*
 * fcrdns.h - forward-confirmed reverse DNS of a client address ("iprev",
 * RFC 8601 3; RFC 1912 2.1), asynchronously on the reactor's resolver.
 *
 * The PTR records of the address are looked up, then the A (IPv4) or AAAA
 * (IPv6) records of each name, one after the other, for at most
 * FCRDNS_MAX_NAMES names (the rest is ignored, as RFC 7208 4.6.4 does for
 * the same walk): the first name that resolves back to the address passes.
 * So one check makes at most 1 + FCRDNS_MAX_NAMES queries.
 *
 * Results (RFC 8601 3, "iprev"): pass; fail (PTR names, none resolving
 * back); temperror (a DNS failure decided it); permerror (no PTR record).
 *
 * A check is a struct fcrdns_req embedded in its owner, with the contract
 * of struct res_req (resolver.h): fcrdns_check() never runs the callback
 * itself; the callback runs exactly once unless fcrdns_cancel() made the
 * req idle first, after which the owner may free it at once.
 */
#ifndef ORTOO_RESOLVER_FCRDNS_H
#define ORTOO_RESOLVER_FCRDNS_H

#include <stdbool.h>

#include "resolver/resolver.h"

#define FCRDNS_MAX_NAMES 10

enum fcrdns_result {
    FCRDNS_PASS = 0,
    FCRDNS_FAIL,
    FCRDNS_TEMPERROR,
    FCRDNS_PERMERROR,
};

struct fcrdns_req;
typedef void (*fcrdns_cb)(struct fcrdns_req *req, enum fcrdns_result result);

/* One check.  Embed it; zero it (or fcrdns_req_init) once.  The fields
 * above 'private' are the caller's to read after the callback. */
struct fcrdns_req {
    fcrdns_cb cb;
    void *owner;                    /* for the owner, never touched here */
    enum fcrdns_result result;
    char name[RES_NAME_MAX + 1];    /* pass: the confirmed name; fail: the
                                       first PTR name; else "" */
    /* private: */
    struct res_ctx *ctx;
    struct res_req rr;
    const struct res_answer *ptr;   /* PTR answer being walked (reference) */
    size_t next, count;             /* next PTR name, names to try */
    bool temp_seen;                 /* a forward lookup failed temporarily */
    bool busy;
    int family;
    unsigned char ip[16];
};

void fcrdns_req_init(struct fcrdns_req *req, void *owner);
static inline bool fcrdns_req_busy(const struct fcrdns_req *req) { return req->busy; }

/*
 * Check ip (4 or 16 bytes for AF_INET / AF_INET6, network order).  Returns
 * 0 (cb runs later), -EBUSY, or -EINVAL (bad family).  Never blocks.
 */
int fcrdns_check(struct res_ctx *ctx, struct fcrdns_req *req, int family, const void *ip,
                 fcrdns_cb cb);

/* Stop a busy check now; its callback never runs.  No-op when idle. */
void fcrdns_cancel(struct fcrdns_req *req);

/* "pass", "fail", "temperror", "permerror". */
const char *fcrdns_result_name(enum fcrdns_result r);

#endif
