/* SPDX-License-Identifier: MIT */
/*
 * checks.c - inbound SPF, iprev, DKIM and DMARC for one connection, and
 * the Authentication-Results field (see checks.h for the contract).
 *
 * Everything that needs DNS is started as early as its inputs are known
 * and runs on the reactor's resolver while the client goes on sending:
 * iprev and the two SPF evaluations at MAIL (resolver/fcrdns.c,
 * resolver/spf.c), the DKIM keys and the DMARC policy record when the
 * header block of the message has ended (dkim/verify.c names the keys and
 * finds the From domain).  The final dot usually finds them all answered;
 * otherwise checks_end() arms a timer and the answers, or the timer, end
 * the wait.  Deciding is then CPU only: the DKIM signature checks
 * (dkim_verify_finish), the DMARC evaluation (core/dmarc.c) and the
 * policy knobs.
 *
 * Every lookup is an object embedded here (or in the keys array owned
 * here), so checks_free() cancels them all at once (res_cancel,
 * spf_cancel, fcrdns_cancel: none of them runs a callback afterwards).
 * The one exception is the timer, an io_op the loop finishes later: a
 * struct checks freed while it is armed is marked dead and freed by the
 * timer's cancelled callback.
 */
#include "core/checks.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/config.h"
#include "core/dmarc.h"
#include "core/psl.h"
#include "dkim/verify.h"
#include "io/log.h"
#include "io/loop.h"
#include "resolver/fcrdns.h"
#include "resolver/resolver.h"
#include "resolver/spf.h"

#define CHECKS_ADDR_MAX 512     /* MAIL FROM address kept (SMTP allows 256) */
#define CHECKS_COMMENT_MAX 120  /* characters of a reason in a comment */

/* Invariant: dead holds the freed checks whose timer has not finished. */
struct checks_reactor {
    struct io_loop *loop;
    struct res_ctx *res;
    struct dkim_verify_lib *dkim;
    const struct psl *psl;      /* shared, read-only; NULL: implicit rule */
    struct checks *dead;        /* freed, waiting for the timer's callback */
};

/* One DKIM key lookup.  Invariant: rr is busy exactly while its key is
 * being looked up (counted in keys_pending). */
struct key_lookup {
    struct res_req rr;
    struct checks *c;
    unsigned idx;               /* the verifier's key index */
};

enum dm_state {
    DM_IDLE = 0,                /* nothing to look up (yet) */
    DM_FROM,                    /* _dmarc.<From domain> in flight */
    DM_ORG,                     /* _dmarc.<organizational domain> in flight */
    DM_DONE,
};

/*
 * One connection's checks.  Invariants: X_started && !X_done exactly while
 * X's request is busy (iprev, helo, mail); keys_pending counts the busy
 * key lookups; dm is DM_FROM or DM_ORG exactly while dm_rr is busy;
 * waiting is set between a checks_end() that returned 1 and its cb; dead
 * is set only while the timer is busy, and then nothing else is.
 */
struct checks {
    struct checks_reactor *cr;
    const struct config *cfg;
    char sid[32];
    int family;
    unsigned char ip[16];
    char ip_text[INET6_ADDRSTRLEN];

    /* iprev (once per connection) */
    struct fcrdns_req fcrdns;
    bool iprev_started, iprev_done;

    /* SPF of the HELO identity (again only when the name changes) */
    struct spf_req spf_helo;
    char helo[256];
    bool helo_started, helo_done;

    /* SPF of the MAIL FROM identity (per transaction) */
    struct spf_req spf_mail;
    char sender[CHECKS_ADDR_MAX];
    char mail_domain[CHECKS_ADDR_MAX];
    bool mail_started, mail_done, mail_null;

    /* DKIM (per message) */
    struct dkim_verifier *dkim;
    struct key_lookup *keys;
    unsigned nkeys, keys_pending;
    bool keys_started;

    /* DMARC (per message) */
    struct res_req dm_rr;
    enum dm_state dm;
    enum dkim_from_status from_st;
    char from_domain[DMARC_DOMAIN_MAX + 1];
    char org_domain[DMARC_DOMAIN_MAX + 1];
    struct dmarc_record dm_rec;
    bool dm_has_rec, dm_at_org, dm_temp;

    /* The wait at the final dot */
    struct io_op timer;
    struct checks *dead_prev, *dead_next; /* cr->dead while dead */
    uint64_t deadline_ns;
    bool waiting, dead;
    checks_cb cb;
    void *cb_arg;

    /* The verdict */
    bool tx;                    /* checks_mail ran for this transaction */
    bool decided;
    int code;
    const char *status;         /* "550 5.7.1" ... (static) */
    const char *reason;
    char reply[600];
    char *header;               /* owned */
};

static void maybe_done(struct checks *c);

/* ---- the per-reactor part ---- */

struct checks_reactor *checks_reactor_new(struct io_loop *loop, struct res_ctx *res,
                                          const struct psl *psl, char *err, size_t errlen)
{
    struct checks_reactor *cr = calloc(1, sizeof(*cr));
    if (cr == NULL) {
        snprintf(err, errlen, "checks: out of memory");
        return NULL;
    }
    cr->loop = loop;
    cr->res = res;
    cr->psl = psl;
    cr->dkim = dkim_verify_lib_new(err, errlen);
    if (cr->dkim == NULL) {
        free(cr);
        return NULL;
    }
    return cr;
}

void checks_reactor_free(struct checks_reactor *cr)
{
    if (cr == NULL)
        return;
    /* The loop has stopped: timers it still held will never call back. */
    while (cr->dead != NULL) {
        struct checks *c = cr->dead;
        cr->dead = c->dead_next;
        free(c);
    }
    dkim_verify_lib_free(cr->dkim);
    free(cr);
}

/* ---- small helpers ---- */

/* A growable string for the header field. */
struct sb {
    char *p;
    size_t len, cap;
    bool failed;
};

static void sb_add(struct sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(struct sb *b, const char *fmt, ...)
{
    va_list ap;
    if (b->failed)
        return;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = true;
            return;
        }
        if (b->p != NULL && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 1024;
        while (cap < b->len + (size_t)n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

/* A comment: printable ASCII, no parentheses or backslashes, bounded. */
static void sb_comment(struct sb *b, const char *text)
{
    char out[CHECKS_COMMENT_MAX + 1];
    size_t o = 0;
    for (const char *p = text; *p != '\0' && o < CHECKS_COMMENT_MAX; p++) {
        unsigned char ch = (unsigned char)*p;
        out[o++] = (ch < 0x20 || ch > 0x7e || ch == '(' || ch == ')' || ch == '\\') ? '?' : (char)ch;
    }
    out[o] = '\0';
    if (o > 0)
        sb_add(b, " (%s)", out);
}

/* A value (RFC 8601 2.2, RFC 2045 5.1): a token when it is one, else a
 * quoted-string. */
static void sb_value(struct sb *b, const char *v)
{
    bool token = v[0] != '\0';
    for (const char *p = v; *p != '\0' && token; p++) {
        unsigned char ch = (unsigned char)*p;
        token = ch > 0x20 && ch < 0x7f && strchr("()<>@,;:\\\"/[]?=", ch) == NULL;
    }
    if (token) {
        sb_add(b, "%s", v);
        return;
    }
    sb_add(b, "\"");
    for (const char *p = v; *p != '\0'; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch == '"' || ch == '\\')
            sb_add(b, "\\%c", ch);
        else
            sb_add(b, "%c", (ch < 0x20 || ch > 0x7e) ? '?' : ch);
    }
    sb_add(b, "\"");
}

/* A domain name we can look up (letters, digits, '-', '_', dots). */
static bool domain_ok(const char *d)
{
    char norm[RES_NAME_MAX + 1];
    return res_name_normalize(d, norm, sizeof(norm)) > 0 && strchr(norm, '.') != NULL;
}

/* smtp.mailfrom: local@domain when the local part is a dot-atom (RFC 5322
 * 3.2.3) and the domain a name, else the whole address quoted. */
static void sb_mailfrom(struct sb *b, const char *addr)
{
    const char *at = strrchr(addr, '@');
    bool atom = at != NULL && at != addr && domain_ok(at + 1);
    for (const char *p = addr; atom && p < at; p++)
        atom = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
               (*p != '\0' && strchr("!#$%&'*+-/=?^_`{|}~.", *p) != NULL);
    if (atom)
        sb_add(b, "%s", addr);
    else
        sb_value(b, addr);
}

/* ---- per connection ---- */

struct checks *checks_new(struct checks_reactor *cr, const char *session_id,
                          const char *client_addr)
{
    struct checks *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    if (inet_pton(AF_INET, client_addr, c->ip) == 1) {
        c->family = AF_INET;
    } else if (inet_pton(AF_INET6, client_addr, c->ip) == 1) {
        c->family = AF_INET6;
    } else {
        free(c);
        return NULL;
    }
    c->cr = cr;
    snprintf(c->sid, sizeof(c->sid), "%s", session_id);
    inet_ntop(c->family, c->ip, c->ip_text, sizeof(c->ip_text));
    fcrdns_req_init(&c->fcrdns, c);
    spf_req_init(&c->spf_helo, c);
    spf_req_init(&c->spf_mail, c);
    res_req_init(&c->dm_rr, c);
    io_op_init(&c->timer, c);
    return c;
}

static void on_iprev(struct fcrdns_req *req, enum fcrdns_result r)
{
    struct checks *c = req->owner;
    c->iprev_done = true;
    maybe_done(c);
}

static void on_spf_helo(struct spf_req *req, enum spf_result r)
{
    struct checks *c = req->owner;
    c->helo_done = true;
    maybe_done(c);
}

static void on_spf_mail(struct spf_req *req, enum spf_result r)
{
    struct checks *c = req->owner;
    c->mail_done = true;
    maybe_done(c);
}

/* Start an SPF evaluation; *done is set when it ended at once. */
static void spf_start(struct checks *c, struct spf_req *req, const char *domain,
                      const char *sender, spf_cb cb, bool *done)
{
    struct spf_params p = {.family = c->family, .ip = c->ip, .domain = domain, .sender = sender,
                           .helo = c->helo, .receiver = c->cfg->hostname};
    int rc = spf_check(c->cr->res, req, &p, cb);
    if (rc == 0)
        return;
    if (rc < 0) {
        req->result = SPF_R_TEMPERROR;
        snprintf(req->why, sizeof(req->why), "could not start: %s", strerror(-rc));
    }
    *done = true;
}

void checks_mail(struct checks *c, const struct config *cfg, const char *helo,
                 const char *sender)
{
    char buf[CHECKS_ADDR_MAX + 16];

    c->cfg = cfg;
    c->tx = true;
    if (!c->iprev_started) {
        c->iprev_started = true;
        if (fcrdns_check(c->cr->res, &c->fcrdns, c->family, c->ip, on_iprev) < 0) {
            c->fcrdns.result = FCRDNS_TEMPERROR;
            c->iprev_done = true;
        }
    }
    /* RFC 7208 2.3: the HELO identity, with <sender> postmaster@helo. */
    if (!c->helo_started || strcmp(c->helo, helo) != 0) {
        spf_cancel(&c->spf_helo);
        snprintf(c->helo, sizeof(c->helo), "%s", helo);
        c->helo_started = true;
        c->helo_done = false;
        snprintf(buf, sizeof(buf), "postmaster@%s", c->helo);
        spf_start(c, &c->spf_helo, c->helo, buf, on_spf_helo, &c->helo_done);
    }
    /* RFC 7208 2.4: for <> the MAIL FROM result is the HELO one. */
    spf_cancel(&c->spf_mail);
    snprintf(c->sender, sizeof(c->sender), "%s", sender);
    c->mail_null = sender[0] == '\0';
    c->mail_started = c->mail_done = false;
    c->mail_domain[0] = '\0';
    if (c->mail_null)
        return;
    const char *at = strrchr(c->sender, '@');
    snprintf(c->mail_domain, sizeof(c->mail_domain), "%s", at != NULL ? at + 1 : c->sender);
    c->mail_started = true;
    spf_start(c, &c->spf_mail, c->mail_domain, c->sender, on_spf_mail, &c->mail_done);
}

static void message_reset(struct checks *c);

void checks_data(struct checks *c)
{
    message_reset(c); /* nothing of a previous message lingers */
    if (!c->tx)
        return;
    c->dkim = dkim_verify_open(c->cr->dkim, c->cfg->checks.dkim_max_signatures, c->cfg->hostname);
}

/* ---- the header block has ended: DKIM keys and the DMARC record ---- */

static void on_key(struct res_req *rr, const struct res_answer *ans)
{
    struct key_lookup *kl = rr->owner;
    struct checks *c = kl->c;

    if (ans->status == RES_OK) {
        /* RFC 6376 3.6.2.2: several records are ambiguous; take the first
         * that looks like a key. */
        size_t pick = 0;
        for (size_t i = 0; i < ans->n; i++)
            if (strstr(ans->txt[i].text, "p=") != NULL) {
                pick = i;
                break;
            }
        dkim_verify_set_key(c->dkim, kl->idx, DKIM_KEY_FOUND, ans->txt[pick].text,
                            ans->txt[pick].len, ans->ttl);
    } else if (ans->status == RES_NXDOMAIN || ans->status == RES_NODATA) {
        dkim_verify_set_key(c->dkim, kl->idx, DKIM_KEY_NONE, NULL, 0, 0);
    } else {
        dkim_verify_set_key(c->dkim, kl->idx, DKIM_KEY_TEMPFAIL, NULL, 0, 0);
    }
    c->keys_pending--;
    maybe_done(c);
}

static void on_dmarc(struct res_req *rr, const struct res_answer *ans);

/* Look up _dmarc.<domain>; false when it cannot be (name too long). */
static bool dmarc_lookup(struct checks *c, const char *domain, enum dm_state st)
{
    char name[RES_NAME_MAX + 16];
    if (snprintf(name, sizeof(name), "_dmarc.%s", domain) > RES_NAME_MAX)
        return false;
    if (res_lookup(c->cr->res, &c->dm_rr, RES_TXT, name, on_dmarc) < 0)
        return false;
    c->dm = st;
    return true;
}

/* RFC 7489 6.6.3: the policy record, at the From domain, else at the
 * organizational domain. */
static void on_dmarc(struct res_req *rr, const struct res_answer *ans)
{
    struct checks *c = rr->owner;
    enum dm_state was = c->dm;

    c->dm = DM_DONE;
    if (res_status_temporary(ans->status)) {
        c->dm_temp = true;
    } else {
        size_t n = 0, at = 0;
        for (size_t i = 0; ans->status == RES_OK && i < ans->n; i++)
            if (dmarc_record_is(ans->txt[i].text, ans->txt[i].len)) {
                n++;
                at = i;
            }
        if (n == 1) {
            c->dm_has_rec = dmarc_record_parse(ans->txt[at].text, ans->txt[at].len, &c->dm_rec) == 0;
            c->dm_at_org = was == DM_ORG;
        } else if (n == 0 && was == DM_FROM && c->org_domain[0] != '\0' &&
                   strcmp(c->org_domain, c->from_domain) != 0) {
            if (dmarc_lookup(c, c->org_domain, DM_ORG))
                return;
        }
        /* n > 1: step 5, no DMARC processing. */
    }
    maybe_done(c);
}

static void header_ready(struct checks *c)
{
    c->keys_started = true;
    unsigned n = dkim_verify_nkeys(c->dkim);
    if (n > 0 && (c->keys = calloc(n, sizeof(*c->keys))) != NULL) {
        c->nkeys = n;
        for (unsigned i = 0; i < n; i++) {
            struct key_lookup *kl = &c->keys[i];
            res_req_init(&kl->rr, kl);
            kl->c = c;
            kl->idx = i;
            if (res_lookup(c->cr->res, &kl->rr, RES_TXT, dkim_verify_key_name(c->dkim, i),
                           on_key) == 0)
                c->keys_pending++;
            else /* a name DNS cannot have: no key */
                dkim_verify_set_key(c->dkim, i, DKIM_KEY_NONE, NULL, 0, 0);
        }
    }
    /* (Out of memory for the lookups: the keys stay unset, temperror.) */

    const char *from;
    c->from_st = dkim_verify_from(c->dkim, &from);
    if (c->from_st == DKIM_FROM_ONE && !domain_ok(from))
        c->from_st = DKIM_FROM_BAD;
    if (c->from_st == DKIM_FROM_ONE) {
        snprintf(c->from_domain, sizeof(c->from_domain), "%s", from);
        if (psl_org_domain(c->cr->psl, c->from_domain, c->org_domain, sizeof(c->org_domain)) < 0)
            c->org_domain[0] = '\0';
        if (!dmarc_lookup(c, c->from_domain, DM_FROM))
            c->dm = DM_DONE;
    }
    unsigned foreign = dkim_verify_foreign_ar(c->dkim);
    if (foreign > 0)
        log_info("session=%s event=foreign-ar count=%u authserv_id=%s", c->sid, foreign,
                 c->cfg->hostname);
}

void checks_feed(struct checks *c, const char *data, size_t len)
{
    if (c->dkim == NULL)
        return;
    dkim_verify_feed(c->dkim, data, len);
    if (!c->keys_started && dkim_verify_header_done(c->dkim))
        header_ready(c);
}

/* ---- the verdict ---- */

static bool all_done(const struct checks *c)
{
    return (!c->iprev_started || c->iprev_done) && (!c->helo_started || c->helo_done) &&
           (!c->mail_started || c->mail_done) && c->keys_pending == 0 &&
           (c->dm == DM_IDLE || c->dm == DM_DONE);
}

/* The results still missing become temperror (the deadline passed). */
static void give_up(struct checks *c)
{
    const char *why = "no answer within the checks timeout";
    if (c->iprev_started && !c->iprev_done) {
        fcrdns_cancel(&c->fcrdns);
        c->fcrdns.result = FCRDNS_TEMPERROR;
        c->iprev_done = true;
    }
    if (c->helo_started && !c->helo_done) {
        spf_cancel(&c->spf_helo);
        c->spf_helo.result = SPF_R_TEMPERROR;
        snprintf(c->spf_helo.why, sizeof(c->spf_helo.why), "%s", why);
        c->helo_done = true;
    }
    if (c->mail_started && !c->mail_done) {
        spf_cancel(&c->spf_mail);
        c->spf_mail.result = SPF_R_TEMPERROR;
        snprintf(c->spf_mail.why, sizeof(c->spf_mail.why), "%s", why);
        c->mail_done = true;
    }
    for (unsigned i = 0; i < c->nkeys; i++)
        res_cancel(&c->keys[i].rr); /* the key stays unset: temperror */
    c->keys_pending = 0;
    if (c->dm == DM_FROM || c->dm == DM_ORG) {
        res_cancel(&c->dm_rr);
        c->dm_temp = true;
        c->dm = DM_DONE;
    }
}

/* The SPF result that stands for MAIL FROM (RFC 7208 2.4), its domain. */
static const struct spf_req *mail_identity(const struct checks *c, const char **domain)
{
    if (c->mail_null || !c->mail_started) {
        *domain = c->helo;
        return &c->spf_helo;
    }
    *domain = c->mail_domain;
    return &c->spf_mail;
}

static void decide(struct checks *c)
{
    const struct config_checks *ck = &c->cfg->checks;
    struct dkim_verify_result dr;
    struct sb b = {0};

    memset(&dr, 0, sizeof(dr));
    if (c->dkim != NULL && dkim_verify_finish(c->dkim, &dr) < 0)
        dr.error = "out of memory";

    /* DMARC */
    const char *spf_domain;
    const struct spf_req *spf = mail_identity(c, &spf_domain);
    const char *passed[DKIM_VERIFY_SIGS_MAX];
    size_t npassed = 0;
    bool dkim_temp = false;
    for (unsigned i = 0; i < dr.nsigs; i++) {
        if (dr.sigs[i].status == DKIM_V_PASS)
            passed[npassed++] = dr.sigs[i].domain;
        dkim_temp = dkim_temp || dr.sigs[i].status == DKIM_V_TEMPERROR;
    }
    struct dmarc_outcome dm = {.result = DMARC_R_NONE};
    const char *dm_why = NULL;
    if (c->dkim == NULL) {
        dm_why = "no message";
    } else if (c->from_st == DKIM_FROM_NONE) {
        dm_why = "no From field";
    } else if (c->from_st == DKIM_FROM_MANY) {
        dm.result = DMARC_R_PERMERROR;
        dm_why = "several From fields or author domains";
    } else if (c->from_st == DKIM_FROM_BAD) {
        dm.result = DMARC_R_PERMERROR;
        dm_why = "no author domain in From";
    } else if (c->dm_temp) {
        dm.result = DMARC_R_TEMPERROR;
        dm_why = "policy record lookup failed";
    } else {
        struct dmarc_input in = {
            .from_domain = c->from_domain,
            .rec = c->dm_has_rec ? &c->dm_rec : NULL,
            .rec_at_org = c->dm_at_org && strcmp(c->from_domain, c->org_domain) != 0,
            .spf_pass = spf->result == SPF_R_PASS,
            .spf_domain = spf_domain,
            .dkim_pass = passed,
            .ndkim_pass = npassed,
        };
        dmarc_evaluate(c->cr->psl, &in, arc4random_uniform(100), &dm);
    }

    /* The Authentication-Results field (RFC 8601). */
    sb_add(&b, "Authentication-Results: %s;\r\n", c->cfg->hostname);
    sb_add(&b, "\tiprev=%s", c->iprev_started ? fcrdns_result_name(c->fcrdns.result) : "none");
    sb_add(&b, " policy.iprev=");
    sb_value(&b, c->ip_text);
    if (c->fcrdns.name[0] != '\0')
        sb_comment(&b, c->fcrdns.name);
    if (!c->mail_null && c->mail_started) {
        sb_add(&b, ";\r\n\tspf=%s", spf_result_name(c->spf_mail.result));
        sb_comment(&b, c->spf_mail.why);
        sb_add(&b, " smtp.mailfrom=");
        sb_mailfrom(&b, c->sender);
    }
    sb_add(&b, ";\r\n\tspf=%s", spf_result_name(c->spf_helo.result));
    sb_comment(&b, c->spf_helo.why);
    sb_add(&b, " smtp.helo=");
    sb_value(&b, c->helo);
    if (dr.nsigs == 0) {
        sb_add(&b, ";\r\n\tdkim=%s", dr.error != NULL ? "permerror" : "none");
        if (dr.error != NULL)
            sb_comment(&b, dr.error);
    }
    for (unsigned i = 0; i < dr.nsigs; i++) {
        const struct dkim_verify_sig *s = &dr.sigs[i];
        sb_add(&b, ";\r\n\tdkim=%s", dkim_vstatus_name(s->status));
        if (s->why != NULL)
            sb_comment(&b, s->why);
        if (s->domain[0] != '\0') {
            sb_add(&b, " header.d=");
            sb_value(&b, s->domain);
        }
        if (s->selector[0] != '\0') {
            sb_add(&b, " header.s=");
            sb_value(&b, s->selector);
        }
        if (s->algo != NULL)
            sb_add(&b, " header.a=%s", s->algo);
        if (s->b[0] != '\0') {
            sb_add(&b, " header.b=");
            sb_value(&b, s->b);
        }
    }
    sb_add(&b, ";\r\n\tdmarc=%s", dmarc_result_name(dm.result));
    if (dm.result == DMARC_R_PASS || dm.result == DMARC_R_FAIL) {
        char info[64];
        snprintf(info, sizeof(info), "p=%s dis=%s", dmarc_policy_name(dm.policy),
                 dmarc_policy_name(dm.disposition));
        sb_comment(&b, info);
    } else if (dm_why != NULL) {
        sb_comment(&b, dm_why);
    }
    if (c->from_st == DKIM_FROM_ONE)
        sb_add(&b, " header.from=%s", c->from_domain);
    sb_add(&b, "\r\n");
    free(c->header);
    c->header = b.failed ? NULL : b.p;
    if (b.failed)
        free(b.p);

    /* The verdict, by the [checks] knobs. */
    c->code = 0;
    c->status = NULL;
    c->reason = "accepted";
    c->reply[0] = '\0';
    if (ck->dmarc_reject && c->from_st == DKIM_FROM_MANY) {
        c->code = 550;
        c->status = "550 5.7.1";
        c->reason = "dmarc-several-from";
        snprintf(c->reply, sizeof(c->reply),
                 "550 5.7.1 Messages with several From fields or author domains are not "
                 "accepted (RFC 7489 6.6.1)");
    } else if (ck->dmarc_reject && dm.result == DMARC_R_FAIL &&
               dm.disposition == DMARC_P_REJECT) {
        bool maybe_temp = spf->result == SPF_R_TEMPERROR || dkim_temp;
        c->code = maybe_temp ? 451 : 550;
        c->status = maybe_temp ? "451 4.7.1" : "550 5.7.1";
        c->reason = maybe_temp ? "dmarc-tempfail" : "dmarc";
        if (maybe_temp)
            snprintf(c->reply, sizeof(c->reply),
                     "451 4.7.1 The DMARC policy of %s could not be checked (DNS), try again "
                     "later",
                     c->from_domain);
        else
            snprintf(c->reply, sizeof(c->reply),
                     "550 5.7.1 Message rejected: it fails the DMARC policy of %s", c->from_domain);
    } else if (ck->spf_reject && spf->result == SPF_R_FAIL && dm.result != DMARC_R_PASS) {
        /* RFC 7372 3.2; RFC 7208 8.4 puts the explanation in the reply. */
        char expl[SPF_EXPLANATION_MAX + 8] = "";
        if (spf->explanation[0] != '\0')
            snprintf(expl, sizeof(expl), ": %s", spf->explanation);
        c->code = 550;
        c->status = "550 5.7.23";
        c->reason = "spf";
        snprintf(c->reply, sizeof(c->reply), "550 5.7.23 SPF validation failed for %.253s%s",
                 spf_domain, expl);
    }
    c->decided = true;
    log_debug("session=%s event=checks iprev=%s spf=%s helo_spf=%s dkim_sigs=%u dkim_pass=%zu "
              "dmarc=%s from=%s verdict=%d",
              c->sid, fcrdns_result_name(c->fcrdns.result), spf_result_name(spf->result),
              spf_result_name(c->spf_helo.result), dr.nsigs, npassed, dmarc_result_name(dm.result),
              c->from_domain[0] ? c->from_domain : "-", c->code);
}

static void on_timer(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct checks *c = op->owner;
    if (c->dead) {
        if (c->dead_prev != NULL)
            c->dead_prev->dead_next = c->dead_next;
        else
            c->cr->dead = c->dead_next;
        if (c->dead_next != NULL)
            c->dead_next->dead_prev = c->dead_prev;
        free(c);
        return;
    }
    if (!c->waiting)
        return;
    uint64_t now = io_loop_now(c->cr->loop);
    if (now < c->deadline_ns &&
        io_timer_start(c->cr->loop, &c->timer, (c->deadline_ns - now) / 1000000 + 1, on_timer) == 0)
        return; /* an old timer's end, or woken early: wait on */
    c->waiting = false;
    give_up(c);
    decide(c);
    c->cb(c, c->cb_arg); /* last: the session may free c */
}

static void maybe_done(struct checks *c)
{
    if (!c->waiting || !all_done(c))
        return;
    c->waiting = false;
    io_cancel(c->cr->loop, &c->timer);
    decide(c);
    c->cb(c, c->cb_arg); /* last: the session may free c */
}

int checks_end(struct checks *c, checks_cb cb, void *arg)
{
    if (!c->tx)
        return 0; /* no checks for this transaction (AUTH, or turned off) */
    if (c->dkim != NULL) {
        dkim_verify_eof(c->dkim);
        if (!c->keys_started && dkim_verify_header_done(c->dkim))
            header_ready(c);
    }
    if (all_done(c)) {
        decide(c);
        return 0;
    }
    c->cb = cb;
    c->cb_arg = arg;
    c->deadline_ns = io_loop_now(c->cr->loop) + (uint64_t)c->cfg->checks.timeout_ms * 1000000u;
    c->waiting = true;
    /* A timer still busy (cancelled after the last message) re-arms
     * itself from its callback, since waiting is set. */
    if (!io_op_busy(&c->timer) &&
        io_timer_start(c->cr->loop, &c->timer, c->cfg->checks.timeout_ms, on_timer) < 0) {
        c->waiting = false;
        give_up(c);
        decide(c);
        return 0;
    }
    return 1;
}

void checks_verdict(const struct checks *c, struct checks_verdict *out)
{
    *out = (struct checks_verdict){
        .code = c->decided ? c->code : 0,
        .status = c->decided && c->status != NULL ? c->status : "250",
        .reply = c->reply,
        .reason = c->reason != NULL ? c->reason : "accepted",
        .header = c->decided ? c->header : NULL,
    };
}

/* What belongs to one message: DKIM, DMARC, the wait and the verdict. */
static void message_reset(struct checks *c)
{
    for (unsigned i = 0; i < c->nkeys; i++)
        res_cancel(&c->keys[i].rr);
    free(c->keys);
    c->keys = NULL;
    c->nkeys = c->keys_pending = 0;
    c->keys_started = false;
    dkim_verify_free(c->dkim);
    c->dkim = NULL;
    res_cancel(&c->dm_rr);
    c->dm = DM_IDLE;
    c->from_st = DKIM_FROM_NONE;
    c->from_domain[0] = c->org_domain[0] = '\0';
    c->dm_has_rec = c->dm_at_org = c->dm_temp = false;
    c->waiting = false; /* a timer in flight finds nothing to do */
    c->decided = false;
    free(c->header);
    c->header = NULL;
}

void checks_reset(struct checks *c)
{
    if (c == NULL)
        return;
    spf_cancel(&c->spf_mail);
    c->mail_started = c->mail_done = false;
    c->tx = false;
    message_reset(c);
}

void checks_free(struct checks *c)
{
    if (c == NULL)
        return;
    checks_reset(c);
    spf_cancel(&c->spf_helo);
    fcrdns_cancel(&c->fcrdns);
    if (io_op_busy(&c->timer)) {
        /* The loop holds the timer: free when it calls back, or with the
         * reactor if the loop stops first. */
        c->dead = true;
        c->dead_prev = NULL;
        c->dead_next = c->cr->dead;
        if (c->cr->dead != NULL)
            c->cr->dead->dead_prev = c;
        c->cr->dead = c;
        io_cancel(c->cr->loop, &c->timer);
        return;
    }
    free(c);
}
