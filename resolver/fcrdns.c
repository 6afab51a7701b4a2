/* SPDX-License-Identifier: MIT */
/*
 * fcrdns.c - forward-confirmed reverse DNS (see fcrdns.h): a PTR lookup,
 * then one address lookup per name until one comes back to the client's
 * address.  One res_req is reused for every step, so a check holds one
 * lookup at a time and cancelling it is cancelling that one lookup.
 */
#include "resolver/fcrdns.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

static void on_answer(struct res_req *rr, const struct res_answer *ans);

const char *fcrdns_result_name(enum fcrdns_result r)
{
    switch (r) {
    case FCRDNS_PASS: return "pass";
    case FCRDNS_FAIL: return "fail";
    case FCRDNS_TEMPERROR: return "temperror";
    case FCRDNS_PERMERROR: return "permerror";
    }
    return "?";
}

void fcrdns_req_init(struct fcrdns_req *req, void *owner)
{
    memset(req, 0, sizeof(*req));
    req->owner = owner;
    res_req_init(&req->rr, req);
}

static void release(struct fcrdns_req *req)
{
    res_answer_unref(req->ptr);
    req->ptr = NULL;
}

/* Does the answer hold the client's address? */
static bool has_ip(const struct fcrdns_req *req, const struct res_answer *ans)
{
    if (ans->status != RES_OK)
        return false;
    for (size_t i = 0; i < ans->n; i++) {
        const void *a = ans->type == RES_A ? (const void *)&ans->a[i] : (const void *)&ans->aaaa[i];
        if (memcmp(a, req->ip, req->family == AF_INET ? 4 : 16) == 0)
            return true;
    }
    return false;
}

/* Look up the next PTR name's address.  False when no name is left. */
static bool next_name(struct fcrdns_req *req)
{
    while (req->next < req->count) {
        const char *name = req->ptr->ptr[req->next];
        if (res_lookup(req->ctx, &req->rr, req->family == AF_INET ? RES_A : RES_AAAA, name,
                       on_answer) == 0)
            return true;
        req->next++; /* a name that cannot be looked up cannot confirm */
    }
    return false;
}

static void done(struct fcrdns_req *req, enum fcrdns_result r)
{
    release(req);
    req->result = r;
    req->busy = false;
    req->cb(req, r); /* last: the owner may free req */
}

static void on_answer(struct res_req *rr, const struct res_answer *ans)
{
    struct fcrdns_req *req = rr->owner;

    if (req->ptr == NULL) {
        /* The PTR answer. */
        if (res_status_temporary(ans->status)) {
            done(req, FCRDNS_TEMPERROR);
            return;
        }
        if (ans->status != RES_OK) {
            done(req, FCRDNS_PERMERROR); /* RFC 8601 3: no PTR data */
            return;
        }
        req->ptr = res_answer_ref(ans);
        req->count = ans->n < FCRDNS_MAX_NAMES ? ans->n : FCRDNS_MAX_NAMES;
        req->next = 0;
        snprintf(req->name, sizeof(req->name), "%s", ans->ptr[0]);
        if (!next_name(req))
            done(req, FCRDNS_FAIL);
        return;
    }
    /* The address answer of ptr->ptr[next]. */
    if (has_ip(req, ans)) {
        snprintf(req->name, sizeof(req->name), "%s", req->ptr->ptr[req->next]);
        done(req, FCRDNS_PASS);
        return;
    }
    if (res_status_temporary(ans->status))
        req->temp_seen = true;
    req->next++;
    if (!next_name(req))
        done(req, req->temp_seen ? FCRDNS_TEMPERROR : FCRDNS_FAIL);
}

int fcrdns_check(struct res_ctx *ctx, struct fcrdns_req *req, int family, const void *ip,
                 fcrdns_cb cb)
{
    char text[INET6_ADDRSTRLEN];

    if (req->busy)
        return -EBUSY;
    if ((family != AF_INET && family != AF_INET6) || ip == NULL || cb == NULL ||
        inet_ntop(family, ip, text, sizeof(text)) == NULL)
        return -EINVAL;
    req->ctx = ctx;
    req->cb = cb;
    req->family = family;
    memcpy(req->ip, ip, family == AF_INET ? 4 : 16);
    req->name[0] = '\0';
    req->temp_seen = false;
    req->ptr = NULL;
    req->rr.owner = req;
    int rc = res_lookup(ctx, &req->rr, RES_PTR, text, on_answer);
    if (rc < 0)
        return rc;
    req->busy = true;
    return 0;
}

void fcrdns_cancel(struct fcrdns_req *req)
{
    if (!req->busy)
        return;
    res_cancel(&req->rr);
    release(req);
    req->busy = false;
}
