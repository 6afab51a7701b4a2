/* SPDX-License-Identifier: MIT */
/*
 * local.c - local delivery (see local.h).
 *
 * One struct ljob per scheduler job: per recipient its pending operations
 * and worst outcome so far; the Maildir requests (one per mailbox), the
 * commands (one per pipe target and recipient), and the forwards (one new
 * message per distinct sender).  Invariant: pending
 * counts the operations whose callback has not run; when it drops to 0 the
 * outcomes go to the scheduler (sched_local_done) and the job is freed.
 * The scheduler keeps the message's view open until then, so the Maildir
 * and command workers may read its segment and the spool may borrow its bytes.
 */
#include "core/local.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/config.h"
#include "core/recipients.h"
#include "core/smtp_session.h"
#include "delivery/maildir.h"
#include "delivery/pipe.h"
#include "delivery/scheduler.h"
#include "io/log.h"
#include "spool/spool.h"

#define LOCAL_SENDER_MAX 1024

struct local {
    struct maildir_pool *pool;
    struct pipe_pool *pipes;   /* commands: a pool of their own, so that a
                                  slow one never holds up a Maildir write */
};

struct ljob;

/* One recipient of the job. */
struct lrcpt {
    unsigned pending;          /* operations not finished */
    enum smtp_outcome out;     /* worst so far (OK < TEMP < PERM by rank) */
    char enhanced[12];
    char text[256];
};

/* A Maildir file for one recipient. */
struct lmaildir {
    struct maildir_req req;
    struct ljob *job;
    size_t rcpt;               /* index in the job */
    char *domain, *user, *to;  /* owned path elements and Delivered-To */
};

/* A command for one recipient ("|command" alias target).  The strings are
 * owned copies: a reload may free the table while the command runs. */
struct lpipe {
    struct pipe_req req;
    struct ljob *job;
    size_t rcpt;               /* index in the job */
    char *command, *recipient, *original, *local, *domain, *extension;
};

/* A forwarded copy (one per distinct envelope sender). */
struct lfwd {
    struct spool_commit commit;
    struct ljob *job;
    char *sender;
    char **addrs;
    size_t naddrs;
    size_t *rcpts;             /* job recipients it serves */
    size_t nrcpts;
};

struct ljob {
    struct local *l;
    struct smtp_reactor *r;
    struct sched_local_job *j;
    const struct spool_msg_view *v;
    size_t n;
    struct lrcpt *rc;
    struct lmaildir **md;
    size_t nmd;
    struct lfwd **fw;
    size_t nfw;
    struct lpipe **pp;
    size_t npp;
    unsigned pending;
};

static int rank(enum smtp_outcome o)
{
    return o == SMTP_OUT_PERM ? 3 : o == SMTP_OUT_TEMP ? 2 : o == SMTP_OUT_OK ? 1 : 0;
}

static void rcpt_set(struct lrcpt *rc, enum smtp_outcome out, const char *enh, const char *fmt,
                     ...) __attribute__((format(printf, 4, 5)));

static void rcpt_set(struct lrcpt *rc, enum smtp_outcome out, const char *enh, const char *fmt,
                     ...)
{
    va_list ap;

    if (rank(out) < rank(rc->out) || (rank(out) == rank(rc->out) && out == SMTP_OUT_OK &&
                                      rc->text[0] != '\0'))
        return;
    rc->out = out;
    snprintf(rc->enhanced, sizeof rc->enhanced, "%s", enh);
    va_start(ap, fmt);
    vsnprintf(rc->text, sizeof rc->text, fmt, ap);
    va_end(ap);
}

static void ljob_free(struct ljob *lj)
{
    for (size_t i = 0; i < lj->nmd; i++) {
        free(lj->md[i]->domain);
        free(lj->md[i]->user);
        free(lj->md[i]->to);
        free(lj->md[i]);
    }
    for (size_t i = 0; i < lj->nfw; i++) {
        struct lfwd *f = lj->fw[i];
        for (size_t k = 0; k < f->naddrs; k++)
            free(f->addrs[k]);
        free(f->addrs);
        free(f->rcpts);
        free(f->sender);
        free(f);
    }
    for (size_t i = 0; i < lj->npp; i++) {
        struct lpipe *p = lj->pp[i];
        free(p->command);
        free(p->recipient);
        free(p->original);
        free(p->local);
        free(p->domain);
        free(p->extension);
        free(p);
    }
    free(lj->md);
    free(lj->fw);
    free(lj->pp);
    free(lj->rc);
    free(lj);
}

/* Every operation is over: report and free. */
static void ljob_finish(struct ljob *lj)
{
    for (size_t i = 0; i < lj->n; i++) {
        struct lrcpt *rc = &lj->rc[i];
        if (rc->out == SMTP_OUT_NONE)
            rcpt_set(rc, SMTP_OUT_TEMP, "4.3.0", "local delivery gave no result");
        sched_local_result(lj->j, i, rc->out, rc->enhanced, rc->text);
    }
    struct sched_local_job *j = lj->j;
    ljob_free(lj);
    sched_local_done(j);
}

static void op_done(struct ljob *lj)
{
    if (--lj->pending == 0)
        ljob_finish(lj);
}

static void on_maildir(struct maildir_req *req, int res)
{
    struct lmaildir *m = req->owner;
    struct lrcpt *rc = &m->job->rc[m->rcpt];

    if (res == 0) {
        rcpt_set(rc, SMTP_OUT_OK, "2.0.0", "delivered to Maildir %s/%s as %s", m->domain,
                 m->user, req->name);
    } else if (res == -EDQUOT || res == -ENOSPC) {
        rcpt_set(rc, SMTP_OUT_TEMP, "4.2.2", "mailbox %s full: %s", m->to, strerror(-res));
    } else if (res == -EINVAL) {
        rcpt_set(rc, SMTP_OUT_PERM, "5.1.3", "mailbox %s cannot be a path", m->to);
    } else {
        rcpt_set(rc, SMTP_OUT_TEMP, "4.3.0", "Maildir of %s: %s", m->to, strerror(-res));
    }
    op_done(m->job);
}

static void on_pipe(struct pipe_req *req)
{
    struct lpipe *p = req->owner;
    struct lrcpt *rc = &p->job->rc[p->rcpt];
    char what[256];

    pipe_describe(&req->job, &req->result, what, sizeof what);
    switch (pipe_verdict(&req->result)) {
    case PIPE_DELIVERED:
        rcpt_set(rc, SMTP_OUT_OK, "2.0.0", "delivered to command of %s", p->recipient);
        break;
    case PIPE_PERMANENT:
        rcpt_set(rc, SMTP_OUT_PERM, "5.3.0", "%s", what);
        break;
    case PIPE_TEMPORARY:
    default:
        rcpt_set(rc, SMTP_OUT_TEMP, "4.3.0", "%s", what);
        break;
    }
    log_info("msgid=%s event=pipe rcpt=%s %s", p->job->v->id, p->recipient, what);
    op_done(p->job);
}

static void on_forward(struct spool_commit *c, int res)
{
    struct lfwd *f = c->owner;

    for (size_t k = 0; k < f->nrcpts; k++) {
        struct lrcpt *rc = &f->job->rc[f->rcpts[k]];
        if (res == 0)
            rcpt_set(rc, SMTP_OUT_OK, "2.0.0", "forwarded as %s", c->id);
        else
            rcpt_set(rc, SMTP_OUT_TEMP, "4.3.0", "forward not stored: %s", strerror(-res));
    }
    op_done(f->job);
}

static struct lfwd *fwd_for(struct ljob *lj, const char *sender)
{
    for (size_t i = 0; i < lj->nfw; i++)
        if (strcmp(lj->fw[i]->sender, sender) == 0)
            return lj->fw[i];
    struct lfwd **nf = realloc(lj->fw, (lj->nfw + 1) * sizeof *nf);
    if (nf == NULL)
        return NULL;
    lj->fw = nf;
    struct lfwd *f = calloc(1, sizeof *f);
    if (f == NULL || (f->sender = strdup(sender)) == NULL) {
        free(f);
        return NULL;
    }
    f->job = lj;
    lj->fw[lj->nfw++] = f;
    return f;
}

static int fwd_add(struct lfwd *f, const char *addr, size_t rcpt)
{
    bool have = false;

    for (size_t k = 0; k < f->naddrs && !have; k++)
        have = strcmp(f->addrs[k], addr) == 0;
    if (!have) {
        char **na = realloc(f->addrs, (f->naddrs + 1) * sizeof *na);
        if (na == NULL)
            return -ENOMEM;
        f->addrs = na;
        if ((f->addrs[f->naddrs] = strdup(addr)) == NULL)
            return -ENOMEM;
        f->naddrs++;
    }
    for (size_t k = 0; k < f->nrcpts; k++)
        if (f->rcpts[k] == rcpt)
            return 0;
    size_t *nr = realloc(f->rcpts, (f->nrcpts + 1) * sizeof *nr);
    if (nr == NULL)
        return -ENOMEM;
    f->rcpts = nr;
    f->rcpts[f->nrcpts++] = rcpt;
    return 0;
}

static int maildir_add(struct ljob *lj, size_t i, const struct rcpt_dest *d)
{
    struct lmaildir **nm = realloc(lj->md, (lj->nmd + 1) * sizeof *nm);
    if (nm == NULL)
        return -ENOMEM;
    lj->md = nm;
    struct lmaildir *m = calloc(1, sizeof *m);
    if (m == NULL)
        return -ENOMEM;
    lj->md[lj->nmd++] = m;
    m->job = lj;
    m->rcpt = i;
    m->user = strndup(d->addr, d->local_len);
    m->domain = strdup(d->addr + d->local_len + 1);
    m->to = strdup(d->addr);
    if (m->user == NULL || m->domain == NULL || m->to == NULL)
        return -ENOMEM;
    return 0;
}

/*
 * A command for recipient i (addr as the client gave it).  RECIPIENT is the
 * alias whose target the command is; EXTENSION the tag of addr when addr
 * is that alias plus a tag (bugs+tag@ for bugs@).
 */
static int pipe_add(struct ljob *lj, size_t i, const struct rcpt_dest *d, const char *addr)
{
    const char *alias = d->alias ? d->alias : addr;
    const char *at = strrchr(alias, '@');
    const char *aat = strrchr(addr, '@');
    const char *sep = lj->r->cfg->local.plus_separator;
    struct lpipe **np = realloc(lj->pp, (lj->npp + 1) * sizeof *np);

    if (np == NULL)
        return -ENOMEM;
    lj->pp = np;
    struct lpipe *p = calloc(1, sizeof *p);
    if (p == NULL)
        return -ENOMEM;
    lj->pp[lj->npp++] = p;
    p->job = lj;
    p->rcpt = i;
    p->command = strdup(d->addr);
    p->recipient = strdup(alias);
    p->original = strdup(addr);
    if (p->command == NULL || p->recipient == NULL || p->original == NULL)
        return -ENOMEM;
    if (at != NULL) {
        size_t llen = (size_t)(at - alias);
        if ((p->local = strndup(alias, llen)) == NULL || (p->domain = strdup(at + 1)) == NULL)
            return -ENOMEM;
        if (aat != NULL && (size_t)(aat - addr) > llen + 1 && strncasecmp(addr, alias, llen) == 0 &&
            sep[0] != '\0' && strchr(sep, addr[llen]) != NULL &&
            (p->extension = strndup(addr + llen + 1, (size_t)(aat - addr) - llen - 1)) == NULL)
            return -ENOMEM;
    }
    return 0;
}

/* Resolve recipient i and plan its operations. */
static int plan_rcpt(struct ljob *lj, size_t i, time_t now)
{
    const struct spool_msg_view *v = lj->v;
    const char *addr = v->rcpts[sched_local_rcpt(lj->j, i)];
    struct rcpt_result res = {0};
    char sender[LOCAL_SENDER_MAX];
    int st = recipients_resolve(lj->r->users, lj->r->cfg, addr, strlen(addr),
                                (time_t)v->received_at, &res);
    int rc = 0;

    switch (st) {
    case RCPT_LOCAL:
    case RCPT_SRS:
        for (size_t k = 0; k < res.ndests && rc == 0; k++) {
            const struct rcpt_dest *d = &res.dests[k];
            if (d->kind == RCPT_MAILBOX) {
                rc = maildir_add(lj, i, d);
            } else if (d->kind == RCPT_FORWARD) {
                int n = recipients_forward_sender(lj->r->cfg, v->sender, d, now, sender,
                                                  sizeof sender);
                if (n < 0)
                    snprintf(sender, sizeof sender, "%s", v->sender);
                struct lfwd *f = fwd_for(lj, sender);
                rc = f ? fwd_add(f, d->addr, i) : -ENOMEM;
            } else if (d->kind == RCPT_PIPE && lj->r->cfg->local.allow_pipe) {
                rc = pipe_add(lj, i, d, addr);
            } else {
                /* The table was loaded with pipes allowed, the config
                 * in use forbids them now. */
                rcpt_set(&lj->rc[i], SMTP_OUT_TEMP, "4.3.5",
                         "delivery to a command is off ([local] allow_pipe)");
            }
        }
        break;
    case RCPT_UNKNOWN:
    case RCPT_SRS_INVALID:
        rcpt_set(&lj->rc[i], SMTP_OUT_PERM, "5.1.1", "no such user here (%s)",
                 res.how ? res.how : rcpt_status_name(st));
        break;
    case RCPT_NOT_LOCAL:
        /* The domain stopped being local: the next round sends it out. */
        rcpt_set(&lj->rc[i], SMTP_OUT_TEMP, "4.3.0", "domain no longer local");
        break;
    default:
        rcpt_set(&lj->rc[i], SMTP_OUT_TEMP, "4.3.0", "recipient lookup failed: %s",
                 strerror(st < 0 ? -st : EINVAL));
        break;
    }
    rcpt_result_free(&res);
    return rc;
}

int local_deliver(struct local *l, struct smtp_reactor *r, struct sched_local_job *j)
{
    struct ljob *lj = calloc(1, sizeof *lj);
    time_t now = time(NULL);

    if (lj == NULL)
        return -ENOMEM;
    lj->l = l;
    lj->r = r;
    lj->j = j;
    lj->v = sched_local_view(j);
    lj->n = sched_local_count(j);
    if ((lj->rc = calloc(lj->n, sizeof *lj->rc)) == NULL)
        goto nomem;
    for (size_t i = 0; i < lj->n; i++)
        if (plan_rcpt(lj, i, now) < 0)
            goto nomem;

    const struct spool_msg_view *v = lj->v;
    lj->pending = 1; /* held while starting the operations */
    for (size_t k = 0; k < lj->nmd; k++) {
        struct lmaildir *m = lj->md[k];
        m->req.owner = m;
        m->req.msg = (struct maildir_msg){
            .root = r->cfg->local.maildir_root,
            .domain = m->domain,
            .user = m->user,
            .return_path = v->sender,
            .delivered_to = m->to,
            .prefix = v->headers_len ? v->headers : NULL,
            .prefix_len = v->headers_len,
            .iovcnt = 0,
            .fd = v->fd,
            .off = v->data_off,
            .len = v->size,
        };
        int rc = maildir_deliver(l->pool, r->loop, &m->req, on_maildir);
        if (rc < 0) {
            rcpt_set(&lj->rc[m->rcpt], SMTP_OUT_TEMP, "4.3.0", "Maildir: %s", strerror(-rc));
            continue;
        }
        lj->pending++;
    }
    for (size_t k = 0; k < lj->npp; k++) {
        struct lpipe *p = lj->pp[k];
        p->req.owner = p;
        p->req.job = (struct pipe_job){
            .command = p->command,
            .sender = v->sender,
            .recipient = p->recipient,
            .original_recipient = p->original,
            .local = p->local,
            .domain = p->domain,
            .extension = p->extension,
            .msg = {
                .return_path = v->sender,
                .delivered_to = p->recipient,
                .prefix = v->headers_len ? v->headers : NULL,
                .prefix_len = v->headers_len,
                .iovcnt = 0,
                .fd = v->fd,
                .off = v->data_off,
                .len = v->size,
            },
            .timeout = r->cfg->local.pipe_timeout,
        };
        int rc = pipe_deliver(l->pipes, r->loop, &p->req, on_pipe);
        if (rc < 0) {
            rcpt_set(&lj->rc[p->rcpt], SMTP_OUT_TEMP, "4.3.0", "command: %s", strerror(-rc));
            continue;
        }
        lj->pending++;
    }
    for (size_t k = 0; k < lj->nfw; k++) {
        struct lfwd *f = lj->fw[k];
        struct iovec iov = {(void *)v->data, (size_t)v->size};
        struct spool_envelope env = {
            .sender = f->sender,
            .rcpts = (const char *const *)f->addrs,
            .nrcpts = f->naddrs,
            .helo = r->cfg->hostname,
            .client_addr = "127.0.0.1",
            .headers = v->headers,
            .flags = v->flags,
            .received_at = (int64_t)now,
        };
        f->commit.cb = on_forward;
        f->commit.owner = f;
        int rc = spool_submit(r->spool, &f->commit, &env, &iov, 1);
        if (rc < 0) {
            for (size_t x = 0; x < f->nrcpts; x++)
                rcpt_set(&lj->rc[f->rcpts[x]], SMTP_OUT_TEMP, "4.3.0", "forward: %s",
                         strerror(-rc));
            continue;
        }
        log_info("msgid=%s event=forward new=%s nrcpt=%zu", v->id, f->commit.id, f->naddrs);
        lj->pending++;
    }
    op_done(lj);
    return 0;
nomem:
    ljob_free(lj);
    return -ENOMEM;
}

struct local *local_new(unsigned nworkers, const char *host)
{
    struct local *l = calloc(1, sizeof *l);

    if (l == NULL)
        return NULL;
    if ((l->pool = maildir_pool_new(nworkers ? nworkers : 1, host)) == NULL) {
        free(l);
        return NULL;
    }
    if ((l->pipes = pipe_pool_new(nworkers ? nworkers : 1)) == NULL) {
        maildir_pool_free(l->pool);
        free(l);
        return NULL;
    }
    return l;
}

void local_free(struct local *l)
{
    if (l == NULL)
        return;
    maildir_pool_free(l->pool);
    pipe_pool_free(l->pipes);
    free(l);
}
