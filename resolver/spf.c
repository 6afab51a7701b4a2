/* SPDX-License-Identifier: MIT */
/*
 * spf.c - SPF check_host() (RFC 7208) as a state machine on the resolver
 * (see spf.h for the contract).
 *
 * Written here, not taken from a library: the SPF libraries Debian has
 * (libspf2, and the SPF code inside libopendmarc) run their DNS queries
 * themselves, blocking, inside the evaluation - a reactor thread cannot
 * wait for them, and a worker thread per evaluation would still have to
 * be cancelled when the client goes away.  Here every DNS query is a
 * res_lookup() whose answer resumes the evaluation, and a session that
 * closes just cancels.  The record syntax and the macros come from
 * resolver/spf_record.c.
 *
 * The state lives in one heap block (struct spf_eval) while an evaluation
 * runs: a stack of frames, one per check_host() in progress (the root,
 * then one per "include" being evaluated; "redirect" replaces the top
 * frame, as it is a tail call), the parsed record of the top frame, and
 * the step the one pending lookup is for.  A frame keeps its TXT answer
 * (a reference) and the index of its next term; when an include returns,
 * the parent's record is parsed again from that answer (cheap, and it
 * keeps a frame small).  The depth is bounded by the lookup limit, since
 * each include counts.
 *
 * run() is the driver: it feeds the answer of the pending step, then
 * evaluates terms until one needs DNS (a lookup starts: wait) or the
 * result is known.  Names that cannot be looked up at all (res_lookup
 * says -EINVAL: a label with a character DNS names here do not have, or
 * too long after macro expansion) are answered by a made-up NXDOMAIN in
 * the same loop, never by recursion.
 */
#include "resolver/spf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "resolver/spf_record.h"

#define SPF_DEPTH_MAX (SPF_MAX_LOOKUPS + 2) /* root + includes (each counts) */
#define SPF_TEXT_MAX 512                    /* sender, helo, receiver copies */

/* What the pending lookup is for. */
enum step {
    ST_NONE = 0,
    ST_RECORD,      /* TXT of the top frame's domain (root, include, redirect) */
    ST_A,           /* "a": A/AAAA of the target */
    ST_MX,          /* "mx": MX of the target */
    ST_MX_ADDR,     /* "mx": A/AAAA of held->mx[hi] */
    ST_PTR,         /* "ptr": PTR of <ip> */
    ST_PTR_ADDR,    /* "ptr": A/AAAA of held->ptr[hi] */
    ST_EXISTS,      /* "exists": A of the target */
    ST_P_PTR,       /* %{p}: PTR of <ip> */
    ST_P_ADDR,      /* %{p}: A/AAAA of held->ptr[hi] */
    ST_EXP,         /* exp=: TXT of the explanation */
};

/* What run() does next. */
enum run_state { R_WAIT = 0, R_NEXT, R_BADNAME, R_DONE };

/* Why a frame's record is looked up. */
enum frame_kind { FK_ROOT = 0, FK_INCLUDE, FK_REDIRECT };

/*
 * One check_host() in progress.  Invariant: ans holds the TXT answer
 * (a reference) once the frame's record was found; rec_at is the SPF
 * record's index in it; next <= the record's term count.
 */
struct spf_frame {
    const struct res_answer *ans;   /* TXT answer (reference) or NULL */
    size_t rec_at;                  /* which TXT record is the SPF one */
    size_t next;                    /* next term to evaluate */
    enum frame_kind kind;           /* how the record was reached */
    char domain[SPF_DOMAIN_MAX + 1];/* <domain> of this check_host() */
};

/*
 * The evaluation state.  Invariants: 1 <= depth <= SPF_DEPTH_MAX once the
 * root frame exists; rec is the parse of frames[depth-1]'s record whenever
 * that frame has one; held is a reference (MX or PTR answer) only in the
 * *_ADDR steps; hn <= SPF_MAX_NAMES.
 */
struct spf_eval {
    struct spf_frame frames[SPF_DEPTH_MAX];
    unsigned depth;
    struct spf_record rec;          /* the top frame's record, parsed */
    enum step step;                 /* the pending lookup's purpose */
    const struct res_answer *held;  /* MX or PTR answer being walked */
    size_t hi, hn;                  /* next name in held, names to look at */
    char target[SPF_DOMAIN_MAX + 1];/* "ptr" target-name */
    bool p_done;                    /* %{p} validated (or found unknown) */
    char p_name[SPF_DOMAIN_MAX + 1];/* validated name for %{p}, "" = unknown */
    int p_rank;                     /* how good p_name is (see p_consider) */
    int family;
    unsigned char ip[16];
    char sender[SPF_TEXT_MAX];
    char helo[SPF_TEXT_MAX];
    char receiver[SPF_TEXT_MAX];
};

/* The answer for a name res_lookup refuses: it cannot exist. */
static const struct res_answer badname_answer = {
    .status = RES_NXDOMAIN, .sec = RES_SEC_INSECURE, .name = "", .canon = "", .rcode = -1,
};

static void on_answer(struct res_req *rr, const struct res_answer *ans);

const char *spf_result_name(enum spf_result r)
{
    switch (r) {
    case SPF_R_NONE: return "none";
    case SPF_R_NEUTRAL: return "neutral";
    case SPF_R_PASS: return "pass";
    case SPF_R_FAIL: return "fail";
    case SPF_R_SOFTFAIL: return "softfail";
    case SPF_R_TEMPERROR: return "temperror";
    case SPF_R_PERMERROR: return "permerror";
    }
    return "?";
}

void spf_req_init(struct spf_req *req, void *owner)
{
    memset(req, 0, sizeof(*req));
    req->owner = owner;
    res_req_init(&req->rr, req);
}

/* ---- small helpers ---- */

static void set_why(struct spf_req *req, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_why(struct spf_req *req, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(req->why, sizeof(req->why), fmt, ap);
    va_end(ap);
    /* Names from DNS and from the client: keep the text printable. */
    for (char *p = req->why; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e || *p == '"' || *p == '\\')
            *p = '?';
}

static enum spf_result qualifier_result(enum spf_qualifier q)
{
    switch (q) {
    case SPF_PASS: return SPF_R_PASS;
    case SPF_FAIL: return SPF_R_FAIL;
    case SPF_SOFTFAIL: return SPF_R_SOFTFAIL;
    case SPF_NEUTRAL: return SPF_R_NEUTRAL;
    }
    return SPF_R_NEUTRAL;
}

static const char *mech_name(enum spf_mech m)
{
    static const char *const names[] = {"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"};
    return (unsigned)m < sizeof(names) / sizeof(names[0]) ? names[m] : "?";
}

/* The first `bits` bits of a and b are equal. */
static bool prefix_equal(const unsigned char *a, const unsigned char *b, unsigned bits)
{
    unsigned bytes = bits / 8, rest = bits % 8;
    if (memcmp(a, b, bytes) != 0)
        return false;
    if (rest == 0)
        return true;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (a[bytes] & mask) == (b[bytes] & mask);
}

/* Does an A / AAAA answer hold an address equal to <ip> on the prefix? */
static bool answer_has_ip(const struct spf_eval *ev, const struct res_answer *ans, unsigned cidr4,
                          unsigned cidr6)
{
    if (ans->status != RES_OK)
        return false;
    for (size_t i = 0; i < ans->n; i++) {
        if (ev->family == AF_INET && ans->type == RES_A &&
            prefix_equal((const unsigned char *)&ans->a[i], ev->ip, cidr4))
            return true;
        if (ev->family == AF_INET6 && ans->type == RES_AAAA &&
            prefix_equal(ans->aaaa[i].s6_addr, ev->ip, cidr6))
            return true;
    }
    return false;
}

/* name equals domain or is a subdomain of it (any case). */
static bool name_within(const char *name, const char *domain)
{
    size_t ln = strlen(name), ld = strlen(domain);
    if (ln < ld || strcasecmp(name + ln - ld, domain) != 0)
        return false;
    return ln == ld || name[ln - ld - 1] == '.';
}

static bool status_temporary(enum res_status s) { return res_status_temporary(s); }
static bool status_void(enum res_status s) { return s == RES_NXDOMAIN || s == RES_NODATA; }

static struct spf_frame *top(struct spf_eval *ev) { return &ev->frames[ev->depth - 1]; }

/* The address record type for <ip>'s family (RFC 7208 5.3). */
static enum res_type addr_type(const struct spf_eval *ev)
{
    return ev->family == AF_INET ? RES_A : RES_AAAA;
}

/* The TXT text of a frame's SPF record. */
static const struct res_txt *frame_txt(const struct spf_frame *f) { return &f->ans->txt[f->rec_at]; }

/* Release what the evaluation holds and free it. */
static void eval_free(struct spf_req *req)
{
    struct spf_eval *ev = req->ev;
    if (ev == NULL)
        return;
    for (unsigned i = 0; i < ev->depth; i++)
        res_answer_unref(ev->frames[i].ans);
    res_answer_unref(ev->held);
    free(ev);
    req->ev = NULL;
}

/* ---- lookups ---- */

/* Start the lookup of `step`.  R_WAIT, R_BADNAME (answer with
 * badname_answer now) or R_DONE (a hard limit or a local error ended it). */
static int finish(struct spf_req *req, enum spf_result r);

static int lookup(struct spf_req *req, enum step step, enum res_type type, const char *name)
{
    struct spf_eval *ev = req->ev;
    ev->step = step;
    if (req->queries >= SPF_MAX_QUERIES) {
        set_why(req, "more than %d DNS queries", SPF_MAX_QUERIES);
        return finish(req, SPF_R_PERMERROR);
    }
    req->queries++;
    int rc = res_lookup(req->ctx, &req->rr, type, name, on_answer);
    if (rc == -EINVAL)
        return R_BADNAME;
    if (rc < 0) {
        set_why(req, "resolver error %d", rc);
        return finish(req, SPF_R_TEMPERROR);
    }
    return R_WAIT;
}

/* Look up the PTR records of <ip> (res_lookup turns the literal into the
 * reverse name). */
static int lookup_ptr(struct spf_req *req, enum step step)
{
    char ip[INET6_ADDRSTRLEN];
    if (inet_ntop(req->ev->family, req->ev->ip, ip, sizeof(ip)) == NULL)
        return R_BADNAME;
    return lookup(req, step, RES_PTR, ip);
}

/* ---- macros ---- */

static void macro_ctx(const struct spf_eval *ev, struct spf_macro_ctx *mc)
{
    *mc = (struct spf_macro_ctx){
        .sender = ev->sender,
        .domain = ev->frames[ev->depth - 1].domain,
        .family = ev->family,
        .ip = ev->ip,
        .helo = ev->helo,
        .validated = ev->p_done && ev->p_name[0] ? ev->p_name : NULL,
        .receiver = ev->receiver,
        .now = time(NULL),
    };
}

/* Does the macro-string use %{p}? */
static bool uses_p(struct spf_slice s)
{
    for (size_t i = 0; i + 2 < s.len; i++)
        if (s.p[i] == '%' && s.p[i + 1] == '{' && (s.p[i + 2] == 'p' || s.p[i + 2] == 'P'))
            return true;
    return false;
}

/* Expand a domain-spec into out (SPF_DOMAIN_MAX + 1 bytes).  0 or -1. */
static int expand_domain(struct spf_eval *ev, struct spf_slice s, char *out)
{
    struct spf_macro_ctx mc;
    macro_ctx(ev, &mc);
    int n = spf_macro_expand(s.p, s.len, &mc, false, true, out, SPF_DOMAIN_MAX + 1);
    if (n <= 0)
        return -1;
    if (out[n - 1] == '.')
        out[n - 1] = '\0'; /* a trailing dot is the root, not part of the name */
    return out[0] != '\0' ? 0 : -1;
}

/* ---- the frame stack ---- */

/* Parse the top frame's record into ev->rec.  0 or -1 (permerror). */
static int frame_parse(struct spf_req *req)
{
    struct spf_eval *ev = req->ev;
    const struct res_txt *t = frame_txt(top(ev));
    const char *at = NULL;
    int rc = spf_record_parse(t->text, t->len, &ev->rec, &at);
    if (rc == 0)
        return 0;
    if (rc == -E2BIG)
        set_why(req, "record of %s has more than %d terms", top(ev)->domain, SPF_TERMS_MAX);
    else
        set_why(req, "syntax error in the record of %s at \"%.40s\"", top(ev)->domain,
                at != NULL ? at : "?");
    return -1;
}

/* The final result: start the explanation lookup for a fail, or end. */
static int finish(struct spf_req *req, enum spf_result r)
{
    struct spf_eval *ev = req->ev;
    req->result = r;
    if (r == SPF_R_FAIL && ev->depth == 1 && top(ev)->ans != NULL) {
        /* 6.2: the exp= of the record that produced the fail (the root's,
         * after any redirect; never an included record's). */
        char name[SPF_DOMAIN_MAX + 1];
        if (ev->rec.exp.len > 0 && !uses_p(ev->rec.exp) &&
            expand_domain(ev, ev->rec.exp, name) == 0 && req->queries < SPF_MAX_QUERIES) {
            ev->step = ST_EXP;
            req->queries++;
            if (res_lookup(req->ctx, &req->rr, RES_TXT, name, on_answer) == 0)
                return R_WAIT;
        }
    }
    eval_free(req);
    return R_DONE;
}

/*
 * The top frame ended with result r.  An included frame's result decides
 * its parent's include term (RFC 7208 5.2).  Returns R_NEXT (go on with the
 * parent's terms), R_WAIT or R_DONE.
 */
static int frame_result(struct spf_req *req, enum spf_result r)
{
    struct spf_eval *ev = req->ev;
    for (;;) {
        if (ev->depth == 1 || top(ev)->kind == FK_ROOT)
            return finish(req, r);
        /* Pop the included frame. */
        struct spf_frame *f = top(ev);
        char inc[SPF_DOMAIN_MAX + 1];
        snprintf(inc, sizeof(inc), "%s", f->domain);
        res_answer_unref(f->ans);
        f->ans = NULL;
        ev->depth--;
        if (frame_parse(req) < 0)
            return finish(req, SPF_R_PERMERROR); /* cannot happen: parsed before */
        struct spf_frame *parent = top(ev);
        const struct spf_term *t = &ev->rec.terms[parent->next];
        switch (r) {
        case SPF_R_PASS:
            set_why(req, "include:%s matched", inc);
            r = qualifier_result(t->qualifier);
            continue; /* the parent ends with the include's qualifier */
        case SPF_R_FAIL:
        case SPF_R_SOFTFAIL:
        case SPF_R_NEUTRAL:
            parent->next++;
            return R_NEXT;
        case SPF_R_TEMPERROR:
            return finish(req, SPF_R_TEMPERROR);
        case SPF_R_NONE:
            set_why(req, "include:%s has no SPF record", inc);
            return finish(req, SPF_R_PERMERROR);
        case SPF_R_PERMERROR:
            return finish(req, SPF_R_PERMERROR);
        }
        return finish(req, SPF_R_PERMERROR);
    }
}

/* The current term matched / did not. */
static int term_match(struct spf_req *req)
{
    struct spf_eval *ev = req->ev;
    const struct spf_term *t = &ev->rec.terms[top(ev)->next];
    char q[2] = {t->qualifier == SPF_PASS ? '\0' : (char)t->qualifier, '\0'};
    set_why(req, "%s%s matched in the record of %s", q, mech_name(t->mech), top(ev)->domain);
    return frame_result(req, qualifier_result(t->qualifier));
}

static int term_nomatch(struct spf_req *req)
{
    req->ev->frames[req->ev->depth - 1].next++;
    return R_NEXT;
}

/* A DNS-querying term (4.6.4).  False (and the evaluation over) past the
 * limit. */
static bool count_lookup(struct spf_req *req, int *rs)
{
    if (++req->lookups > SPF_MAX_LOOKUPS) {
        set_why(req, "more than %d DNS-querying terms", SPF_MAX_LOOKUPS);
        *rs = finish(req, SPF_R_PERMERROR);
        return false;
    }
    return true;
}

/* A void lookup (4.6.4).  False (and the evaluation over) past the limit. */
static bool count_void(struct spf_req *req, int *rs)
{
    if (++req->void_lookups > SPF_MAX_VOID) {
        set_why(req, "more than %d void lookups", SPF_MAX_VOID);
        *rs = finish(req, SPF_R_PERMERROR);
        return false;
    }
    return true;
}

/* Push a frame for an include (or replace the top one for a redirect) and
 * look up its record. */
static int frame_enter(struct spf_req *req, enum frame_kind kind, const char *domain)
{
    struct spf_eval *ev = req->ev;
    if (kind == FK_INCLUDE) {
        if (ev->depth == SPF_DEPTH_MAX) {
            set_why(req, "includes nested too deeply");
            return finish(req, SPF_R_PERMERROR);
        }
        ev->depth++;
    } else if (kind == FK_REDIRECT) {
        struct spf_frame *f = top(ev);
        res_answer_unref(f->ans);
        kind = f->kind == FK_INCLUDE ? FK_INCLUDE : FK_REDIRECT;
    }
    struct spf_frame *f = top(ev);
    *f = (struct spf_frame){.kind = kind};
    snprintf(f->domain, sizeof(f->domain), "%s", domain);
    return lookup(req, ST_RECORD, RES_TXT, domain);
}

/* ---- %{p} (RFC 7208 7.3, validated as in 5.5) ---- */

/* How well a validated name fits <domain>: 3 equal, 2 subdomain, 1 other. */
static int p_rank(const char *name, const char *domain)
{
    if (strcasecmp(name, domain) == 0)
        return 3;
    return name_within(name, domain) ? 2 : 1;
}

/* Look up the address of the next PTR name for %{p}, or end the search. */
static int p_next(struct spf_req *req)
{
    struct spf_eval *ev = req->ev;
    while (ev->hi < ev->hn) {
        const char *name = ev->held->ptr[ev->hi];
        if (p_rank(name, top(ev)->domain) > ev->p_rank)
            return lookup(req, ST_P_ADDR, addr_type(ev), name);
        ev->hi++;
    }
    res_answer_unref(ev->held);
    ev->held = NULL;
    ev->p_done = true;
    return R_NEXT; /* evaluate the term that needed %{p} again */
}

/* ---- terms ---- */

/* Evaluate the top frame's terms from its next one. */
static int eval_terms(struct spf_req *req)
{
    struct spf_eval *ev = req->ev;
    struct spf_frame *f = top(ev);
    char target[SPF_DOMAIN_MAX + 1];
    int rs = R_NEXT;

    if (f->next >= ev->rec.nterms) {
        /* 4.7 / 6.1: no match; a redirect= decides, else neutral. */
        if (ev->rec.redirect.len == 0) {
            set_why(req, "no term matched in the record of %s", f->domain);
            return frame_result(req, SPF_R_NEUTRAL);
        }
        if (uses_p(ev->rec.redirect) && !ev->p_done)
            return lookup_ptr(req, ST_P_PTR);
        if (!count_lookup(req, &rs))
            return rs;
        if (expand_domain(ev, ev->rec.redirect, target) < 0) {
            set_why(req, "bad redirect= target in the record of %s", f->domain);
            return finish(req, SPF_R_PERMERROR);
        }
        return frame_enter(req, FK_REDIRECT, target);
    }

    const struct spf_term *t = &ev->rec.terms[f->next];
    switch (t->mech) {
    case SPF_M_ALL:
        return term_match(req);
    case SPF_M_IP4:
        if (ev->family == AF_INET && prefix_equal((const unsigned char *)&t->ip4, ev->ip, t->cidr4))
            return term_match(req);
        return term_nomatch(req);
    case SPF_M_IP6:
        if (ev->family == AF_INET6 && prefix_equal(t->ip6.s6_addr, ev->ip, t->cidr6))
            return term_match(req);
        return term_nomatch(req);
    default:
        break;
    }

    /* The terms that query DNS: include, a, mx, ptr, exists. */
    if (t->domain.len > 0 && uses_p(t->domain) && !ev->p_done)
        return lookup_ptr(req, ST_P_PTR);
    if (!count_lookup(req, &rs))
        return rs;
    if (t->domain.len > 0) {
        if (expand_domain(ev, t->domain, target) < 0) {
            if (t->mech == SPF_M_INCLUDE) {
                set_why(req, "bad include: target in the record of %s", f->domain);
                return finish(req, SPF_R_PERMERROR);
            }
            /* An a/mx/ptr/exists name that expands to nothing: no match. */
            return term_nomatch(req);
        }
    } else {
        snprintf(target, sizeof(target), "%s", f->domain);
    }
    switch (t->mech) {
    case SPF_M_INCLUDE:
        return frame_enter(req, FK_INCLUDE, target);
    case SPF_M_A:
        return lookup(req, ST_A, addr_type(ev), target);
    case SPF_M_MX:
        return lookup(req, ST_MX, RES_MX, target);
    case SPF_M_PTR:
        snprintf(ev->target, sizeof(ev->target), "%s", target);
        return lookup_ptr(req, ST_PTR);
    case SPF_M_EXISTS:
        return lookup(req, ST_EXISTS, RES_A, target); /* 5.7: always A */
    default:
        break;
    }
    return term_nomatch(req);
}

/* Walk held's names from hi for "ptr": the next candidate's address. */
static int ptr_next(struct spf_req *req)
{
    struct spf_eval *ev = req->ev;
    while (ev->hi < ev->hn) {
        const char *name = ev->held->ptr[ev->hi];
        if (name_within(name, ev->target))
            return lookup(req, ST_PTR_ADDR, addr_type(ev), name);
        ev->hi++;
    }
    res_answer_unref(ev->held);
    ev->held = NULL;
    return term_nomatch(req);
}

static int mx_next(struct spf_req *req)
{
    struct spf_eval *ev = req->ev;
    if (ev->hi < ev->hn)
        return lookup(req, ST_MX_ADDR, addr_type(ev), ev->held->mx[ev->hi].host);
    res_answer_unref(ev->held);
    ev->held = NULL;
    return term_nomatch(req);
}

/* DNS trouble on a query whose failure ends the evaluation (RFC 7208 5). */
static int temperror(struct spf_req *req, const struct res_answer *ans, const char *what)
{
    set_why(req, "DNS %s for %s %s", res_status_name(ans->status), what, ans->name);
    return finish(req, SPF_R_TEMPERROR);
}

/* The record lookup of the top frame is answered (4.4, 4.5). */
static int record_answer(struct spf_req *req, const struct res_answer *ans)
{
    struct spf_eval *ev = req->ev;
    struct spf_frame *f = top(ev);
    int rs = R_NEXT;

    if (status_temporary(ans->status))
        return temperror(req, ans, "TXT");
    size_t nspf = 0, at = 0;
    if (ans->status == RES_OK)
        for (size_t i = 0; i < ans->n; i++)
            if (spf_record_is_spf(ans->txt[i].text, ans->txt[i].len)) {
                nspf++;
                at = i;
            }
    if (nspf == 0) {
        if (f->kind != FK_ROOT && status_void(ans->status) && !count_void(req, &rs))
            return rs;
        if (f->kind == FK_REDIRECT) {
            set_why(req, "redirect=%s has no SPF record", f->domain);
            return finish(req, SPF_R_PERMERROR); /* 6.1 */
        }
        if (f->kind == FK_ROOT)
            set_why(req, "no SPF record at %s", f->domain);
        return frame_result(req, SPF_R_NONE); /* include: permerror there */
    }
    if (nspf > 1) {
        set_why(req, "%zu SPF records at %s", nspf, f->domain);
        return finish(req, SPF_R_PERMERROR); /* 4.5 */
    }
    f->ans = res_answer_ref(ans);
    f->rec_at = at;
    f->next = 0;
    if (frame_parse(req) < 0)
        return finish(req, SPF_R_PERMERROR);
    return R_NEXT;
}

/* The answer of the pending step. */
static int step_answer(struct spf_req *req, const struct res_answer *ans)
{
    struct spf_eval *ev = req->ev;
    int rs = R_NEXT;
    enum step step = ev->step;
    ev->step = ST_NONE;

    switch (step) {
    case ST_RECORD:
        return record_answer(req, ans);
    case ST_A:
        if (status_temporary(ans->status))
            return temperror(req, ans, ev->family == AF_INET ? "A" : "AAAA");
        if (status_void(ans->status) && !count_void(req, &rs))
            return rs;
        {
            const struct spf_term *t = &ev->rec.terms[top(ev)->next];
            return answer_has_ip(ev, ans, t->cidr4, t->cidr6) ? term_match(req) : term_nomatch(req);
        }
    case ST_EXISTS:
        if (status_temporary(ans->status))
            return temperror(req, ans, "A");
        if (status_void(ans->status) && !count_void(req, &rs))
            return rs;
        return ans->status == RES_OK ? term_match(req) : term_nomatch(req);
    case ST_MX:
        if (status_temporary(ans->status))
            return temperror(req, ans, "MX");
        /* 5.4: no implicit MX; a domain without an MX RRset matches nothing. */
        if ((status_void(ans->status) || (ans->status == RES_OK && ans->implicit_mx)) &&
            !count_void(req, &rs))
            return rs;
        if (ans->status != RES_OK || ans->implicit_mx)
            return term_nomatch(req);
        if (ans->n > SPF_MAX_NAMES) {
            set_why(req, "%zu MX hosts at %s (more than %d)", ans->n, ans->name, SPF_MAX_NAMES);
            return finish(req, SPF_R_PERMERROR); /* 4.6.4 */
        }
        ev->held = res_answer_ref(ans);
        ev->hi = 0;
        ev->hn = ans->n;
        return mx_next(req);
    case ST_MX_ADDR: {
        if (status_temporary(ans->status))
            return temperror(req, ans, ev->family == AF_INET ? "A" : "AAAA");
        const struct spf_term *t = &ev->rec.terms[top(ev)->next];
        if (answer_has_ip(ev, ans, t->cidr4, t->cidr6)) {
            res_answer_unref(ev->held);
            ev->held = NULL;
            return term_match(req);
        }
        ev->hi++;
        return mx_next(req);
    }
    case ST_PTR:
        /* 5.5: a DNS error makes "ptr" not match (no temperror). */
        if (status_void(ans->status) && !count_void(req, &rs))
            return rs;
        if (ans->status != RES_OK)
            return term_nomatch(req);
        ev->held = res_answer_ref(ans);
        ev->hi = 0;
        ev->hn = ans->n < SPF_MAX_NAMES ? ans->n : SPF_MAX_NAMES; /* the rest is ignored */
        return ptr_next(req);
    case ST_PTR_ADDR:
        /* An error on one name skips it (5.5). */
        if (answer_has_ip(ev, ans, 32, 128)) {
            res_answer_unref(ev->held);
            ev->held = NULL;
            return term_match(req);
        }
        ev->hi++;
        return ptr_next(req);
    case ST_P_PTR:
        if (ans->status != RES_OK) {
            ev->p_done = true; /* "unknown" */
            return R_NEXT;
        }
        ev->held = res_answer_ref(ans);
        ev->hi = 0;
        ev->hn = ans->n < SPF_MAX_NAMES ? ans->n : SPF_MAX_NAMES;
        ev->p_rank = 0;
        return p_next(req);
    case ST_P_ADDR:
        if (answer_has_ip(ev, ans, 32, 128)) {
            const char *name = ev->held->ptr[ev->hi];
            int rank = p_rank(name, top(ev)->domain);
            if (rank > ev->p_rank && strlen(name) <= SPF_DOMAIN_MAX) {
                ev->p_rank = rank;
                snprintf(ev->p_name, sizeof(ev->p_name), "%s", name);
            }
        }
        ev->hi++;
        return p_next(req);
    case ST_EXP:
        /* 6.2: exactly one TXT record, else no explanation. */
        if (ans->status == RES_OK && ans->n == 1) {
            struct spf_macro_ctx mc;
            char text[SPF_EXPLANATION_MAX];
            macro_ctx(ev, &mc);
            int n = spf_macro_expand(ans->txt[0].text, ans->txt[0].len, &mc, true, false, text,
                                     sizeof(text));
            if (n >= 0) {
                size_t o = 0;
                for (int i = 0; i < n && o + 1 < sizeof(req->explanation); i++)
                    if ((unsigned char)text[i] >= 0x20 && (unsigned char)text[i] < 0x7f)
                        req->explanation[o++] = text[i];
                req->explanation[o] = '\0';
            }
        }
        eval_free(req);
        return R_DONE;
    case ST_NONE:
        break;
    }
    return R_NEXT;
}

/*
 * Drive the evaluation: feed ans (the pending step's answer, or NULL to
 * start at the root record), then go on until it waits or ends.  Returns
 * true when it ended (req->result set, state freed).
 */
static bool run(struct spf_req *req, const struct res_answer *ans)
{
    int rs = ans != NULL ? step_answer(req, ans) : R_NEXT;
    for (;;) {
        switch (rs) {
        case R_WAIT:
            return false;
        case R_DONE:
            return true;
        case R_BADNAME:
            rs = step_answer(req, &badname_answer);
            break;
        case R_NEXT:
            rs = eval_terms(req);
            break;
        }
    }
}

static void on_answer(struct res_req *rr, const struct res_answer *ans)
{
    struct spf_req *req = rr->owner;
    if (!run(req, ans))
        return;
    req->busy = false;
    req->cb(req, req->result); /* last: the owner may free req */
}

/* ---- entry points ---- */

/* RFC 7208 4.3: a <domain> that can be checked: a valid, multi-label name. */
static bool domain_ok(const char *d, char *out)
{
    if (res_name_normalize(d, out, RES_NAME_MAX + 1) < 0)
        return false;
    return strchr(out, '.') != NULL;
}

int spf_check(struct res_ctx *ctx, struct spf_req *req, const struct spf_params *p, spf_cb cb)
{
    char domain[RES_NAME_MAX + 1];

    if (req->busy)
        return -EBUSY;
    if (p->ip == NULL || p->domain == NULL || p->sender == NULL || cb == NULL ||
        (p->family != AF_INET && p->family != AF_INET6))
        return -EINVAL;
    req->result = SPF_R_NONE;
    req->lookups = req->void_lookups = req->queries = 0;
    req->why[0] = req->explanation[0] = '\0';
    if (!domain_ok(p->domain, domain)) {
        set_why(req, "not a domain name SPF can check");
        return 1;
    }
    struct spf_eval *ev = calloc(1, sizeof(*ev));
    if (ev == NULL)
        return -ENOMEM;
    ev->family = p->family;
    memcpy(ev->ip, p->ip, p->family == AF_INET ? 4 : 16);
    snprintf(ev->sender, sizeof(ev->sender), "%s", p->sender);
    snprintf(ev->helo, sizeof(ev->helo), "%s", p->helo != NULL ? p->helo : "");
    snprintf(ev->receiver, sizeof(ev->receiver), "%s", p->receiver != NULL ? p->receiver : "");
    ev->depth = 1;
    snprintf(ev->frames[0].domain, sizeof(ev->frames[0].domain), "%s", domain);
    ev->frames[0].kind = FK_ROOT;
    req->ev = ev;
    req->ctx = ctx;
    req->cb = cb;
    req->rr.owner = req;
    int rs = lookup(req, ST_RECORD, RES_TXT, domain);
    while (rs == R_BADNAME) /* cannot happen: the name was checked */
        rs = step_answer(req, &badname_answer);
    if (rs == R_WAIT) {
        req->busy = true;
        return 0;
    }
    /* Ended without waiting (a resolver error). */
    eval_free(req);
    return 1;
}

void spf_cancel(struct spf_req *req)
{
    if (!req->busy)
        return;
    res_cancel(&req->rr);
    eval_free(req);
    req->busy = false;
}
