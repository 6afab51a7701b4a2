/* SPDX-License-Identifier: MIT */
/*
 * scheduler.c - the scheduler's message side (see scheduler.h): checking
 * due messages out of the spool, splitting them into jobs per destination,
 * recording every recipient's outcome, bounces, notices, delay warnings,
 * releasing messages, and the queue control operations.  The destination
 * side (connections, the MX walk, TLS policy, rate and backoff) is dest.c.
 *
 * Wake-ups: the shard's ready callback (new mail made durable, a
 * reschedule) defers a pump to the next loop turn; one timer is armed at
 * the earliest due time in the shard's heap (at most SCHED_TICK seconds
 * away, for housekeeping).  A pump checks messages out until nothing is due
 * or SCHED_ACTIVE_MAX are active; a release defers another pump.  Pumps
 * never run inside a callback chain that started in a pump (always
 * deferred), so msg_start cannot recurse through a job that fails at once.
 *
 * Outcomes (RFC 5321 4.2.1, 6.1; RFC 3464): 2xx -> DELIVERED (a "relayed"
 * notice when NOTIFY=SUCCESS was asked and the server does not do DSN);
 * 5xx or a permanent local reason -> bounce_fail (a DSN unless NOTIFY or a
 * null sender says otherwise); 4xx or no answer -> DEFERRED with the next
 * attempt from [delivery] retry by the recipient's attempt number (plus up
 * to 10% jitter, and never past the expiry); past [delivery] expire ->
 * bounce_fail with 4.4.7.  A delay warning ("delayed" DSN) goes out once
 * per message, when a round leaves recipients deferred after
 * [delivery] delay_warning.
 */
#include "delivery/scheduler.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "delivery/bounce.h"
#include "delivery/notice.h"
#include "delivery/sched_internal.h"
#include "io/log.h"
#include "io/maillog.h"

#define SCHED_TICK 60          /* seconds between housekeeping wake-ups */
#define SCHED_DEST_IDLE 300    /* seconds an empty destination is kept */
#define SCHED_PARK (10LL * 365 * 86400) /* local recipients without local delivery */

static void pump(struct sched *s);
static void msg_unref(struct amsg *m);

int64_t sched_now(void)
{
    return (int64_t)time(NULL);
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* xorshift64 for the retry jitter (no need for quality). */
static uint32_t jitter_rand(void)
{
    static _Thread_local uint64_t x;

    if (x == 0)
        x = (uint64_t)now_ms() * 0x9E3779B97F4A7C15ull | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return (uint32_t)(x >> 32);
}

/* ---- wake-ups ------------------------------------------------------------ */

static void on_wake(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct sched *s = op->owner;

    s->wake_pending = false;
    if (res == 0 && !s->stopping)
        pump(s);
}

static void wake(struct sched *s)
{
    if (s->wake_pending || s->stopping)
        return;
    if (io_defer(s->loop, &s->wake_op, on_wake) == 0)
        s->wake_pending = true;
}

static void on_ready(struct spool_shard *sh, void *arg)
{
    wake(arg);
}

static void timer_arm(struct sched *s);

static void on_timer(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct sched *s = op->owner;

    s->timer_at = 0;
    if (s->stopping)
        return;
    if (res == -ECANCELED) {
        if (s->timer_rearm) {
            s->timer_rearm = false;
            timer_arm(s);
        }
        return;
    }
    dest_sweep(s, sched_now() - SCHED_DEST_IDLE);
    pump(s);
}

/* Arm the timer at the earliest due time (or the next tick). */
static void timer_arm(struct sched *s)
{
    int64_t now = sched_now(), want = now + SCHED_TICK;
    int64_t earliest = spool_due_earliest(s->sh);

    if (s->stopping)
        return;
    if (earliest > now && earliest < want)
        want = earliest;
    if (io_op_busy(&s->timer_op)) {
        if (s->timer_at != 0 && s->timer_at <= want)
            return;
        if (!s->timer_rearm) {
            s->timer_rearm = true;
            io_cancel(s->loop, &s->timer_op);
        }
        return;
    }
    int64_t ms = want * 1000 - now_ms();
    if (ms < 1)
        ms = 1;
    if (io_timer_start(s->loop, &s->timer_op, (uint64_t)ms, on_timer) == 0)
        s->timer_at = want;
}

/* ---- jobs ------------------------------------------------------------------ */

/* NOTIFY= of a recipient (RFC 3461 4.1), or NULL when none was given. */
static const char *notify_text(uint8_t f, char *buf)
{
    if (f == 0)
        return NULL;
    if (f & SPOOL_NOTIFY_NEVER)
        return "NEVER";
    buf[0] = '\0';
    if (f & SPOOL_NOTIFY_SUCCESS)
        strcat(buf, "SUCCESS");
    if (f & SPOOL_NOTIFY_FAILURE)
        strcat(buf, buf[0] ? ",FAILURE" : "FAILURE");
    if (f & SPOOL_NOTIFY_DELAY)
        strcat(buf, buf[0] ? ",DELAY" : "DELAY");
    return buf[0] ? buf : NULL;
}

/* A job for recipients idx[0..n) of m, to d (NULL: local). */
static struct job *job_new(struct amsg *m, struct dest *d, const uint32_t *idx, size_t n)
{
    const struct spool_msg_view *v = &m->v;
    struct job *j = calloc(1, sizeof *j + n * SCHED_NOTIFY_LEN);

    if (j == NULL)
        return NULL;
    j->idx = malloc(n * sizeof *j->idx);
    j->rcpts = calloc(n, sizeof *j->rcpts);
    if (j->idx == NULL || j->rcpts == NULL) {
        free(j->idx);
        free(j->rcpts);
        free(j);
        return NULL;
    }
    j->m = m;
    j->d = d;
    j->n = n;
    j->dclass = d == NULL ? METRICS_DCLASS_LOCAL : -1;
    for (size_t k = 0; k < n; k++) {
        uint32_t i = idx[k];
        j->idx[k] = i;
        j->rcpts[k].addr = v->rcpts[i];
        j->rcpts[k].notify =
            notify_text(v->dsn_notify ? v->dsn_notify[i] : 0, j->notify + k * SCHED_NOTIFY_LEN);
        j->rcpts[k].orcpt = v->dsn_orcpt ? v->dsn_orcpt[i] : NULL;
    }
    j->msg = (struct smtp_msg){
        .sender = v->sender,
        .rcpts = j->rcpts,
        .nrcpts = n,
        .flags = ((v->flags & SPOOL_F_8BITMIME) ? SMTP_MSG_8BITMIME : 0) |
                 ((v->flags & SPOOL_F_SMTPUTF8) ? SMTP_MSG_SMTPUTF8 : 0),
        .dsn_ret = v->dsn_ret == SPOOL_RET_FULL ? "FULL"
                   : v->dsn_ret == SPOOL_RET_HDRS ? "HDRS"
                                                  : NULL,
        .dsn_envid = v->dsn_envid,
        .prefix = v->headers_len ? v->headers : NULL,
        .prefix_len = v->headers_len,
        .data = v->data,
        .len = (size_t)v->size,
        .fd = v->fd,
        .off = v->data_off,
        .owner = j,
    };
    m->refs++;
    return j;
}

static void job_free(struct job *j)
{
    free(j->idx);
    free(j->rcpts);
    free(j);
}

/* Drop a job without recording anything (stop, delete); releases its
 * message's reference. */
void sched_job_drop(struct job *j)
{
    struct amsg *m = j->m;

    job_free(j);
    msg_unref(m);
}

void sched_job_fail(struct job *j, enum smtp_outcome out, enum smtp_stage stage,
                    const char *enhanced, const char *fmt, ...)
{
    char text[SMTP_RESULT_TEXT_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    for (size_t k = 0; k < j->n; k++) {
        struct smtp_result *r = &j->rcpts[k].result;
        r->outcome = out;
        r->stage = stage;
        r->code = 0;
        snprintf(r->enhanced, sizeof r->enhanced, "%s", enhanced ? enhanced : "");
        snprintf(r->text, sizeof r->text, "%s", text);
    }
    sched_job_done(j, NULL);
}

/* "550 5.1.1 text", "4.4.1 text" (no code: a local reason). */
static void result_reply(const struct smtp_result *r, char *out, size_t cap)
{
    if (r->code > 0)
        snprintf(out, cap, "%d%s%s %s", r->code, r->enhanced[0] ? " " : "", r->enhanced,
                 r->text);
    else
        snprintf(out, cap, "%s%s%s", r->enhanced, r->enhanced[0] ? " " : "", r->text);
}

static void note_deferred(struct amsg *m, uint32_t idx)
{
    if (m->ndeferred == m->cap_deferred) {
        size_t nc = m->cap_deferred ? m->cap_deferred * 2 : 4;
        uint32_t *nd = realloc(m->deferred, nc * sizeof *nd);
        if (nd == NULL)
            return; /* only the delay warning misses it */
        m->deferred = nd;
        m->cap_deferred = nc;
    }
    m->deferred[m->ndeferred++] = idx;
}

/* Record one recipient's attempt in the spool. */
static void record_attempt(struct sched *s, const char *id, uint32_t idx,
                           enum spool_rcpt_state st, int64_t next, int64_t now, const char *reply)
{
    struct spool_attempt a = {
        .state = st, .next_at = next, .at = now, .reply = reply, .reply_len = strlen(reply)};
    int r = spool_attempt(s->sh, NULL, id, (int)idx, &a);

    if (r < 0 && r != -ENOENT && r != -EALREADY)
        log_warnx("msgid=%s event=spool-error op=attempt rcpt=%u err=%s", id, idx, strerror(-r));
}

void sched_job_done(struct job *j, const struct job_ctx *ctx)
{
    struct amsg *m = j->m;
    struct sched *s = m->s;
    const struct spool_msg_view *v = &m->v;
    int64_t now = sched_now();
    struct bounce_rcpt *fail = NULL, *told = NULL;
    char (*diag)[SMTP_RESULT_TEXT_MAX + 32] = NULL;
    size_t nfail = 0, ntold = 0;

    /* (While stopping only local jobs end here: what they wrote is recorded.) */
    if (m->deleted)
        goto out;
    fail = calloc(j->n, sizeof *fail);
    told = calloc(j->n, sizeof *told);
    diag = calloc(j->n, sizeof *diag);
    for (size_t k = 0; k < j->n; k++) {
        const struct smtp_result *r = &j->rcpts[k].result;
        uint32_t idx = j->idx[k];
        char *reply = diag ? diag[k] : (char[SMTP_RESULT_TEXT_MAX + 32]){0};
        const struct smtp_client_info *info = ctx ? ctx->info : NULL;
        struct maillog_attempt la = {
            .msgid = v->id,
            .rcpt = v->rcpts[idx],
            .relay = ctx ? ctx->relay : NULL,
            .addr = ctx ? ctx->addr : NULL,
            .tls = info && info->tls ? info->tls_version : NULL,
            .resumed = info && info->tls_resumed,
            .dane = info && info->dane_verified,
            .stage = r->stage != SMTP_STAGE_NONE ? smtp_stage_name(r->stage) : NULL,
            .code = r->code,
            .status = r->enhanced,
            .reply = r->text,
            .delay = now - v->received_at,
            .attempt = v->rcpt[idx].attempts + 1,
            .dclass = j->dclass,
        };
        uint8_t notify = v->dsn_notify ? v->dsn_notify[idx] : 0;

        result_reply(r, reply, SMTP_RESULT_TEXT_MAX + 32);
        if (r->outcome == SMTP_OUT_OK) {
            record_attempt(s, v->id, idx, SPOOL_RCPT_DELIVERED, 0, now, reply);
            maillog_delivered(&la);
            s->stats.delivered++;
            if ((notify & SPOOL_NOTIFY_SUCCESS) && !j->msg.dsn_passed && told != NULL)
                told[ntold++] = (struct bounce_rcpt){
                    .idx = idx,
                    .status = r->enhanced[0] == '2' ? r->enhanced : "2.0.0",
                    .remote_mta = la.relay,
                    .diagnostic = reply,
                    .last_attempt = now,
                };
        } else if (r->outcome == SMTP_OUT_PERM ||
                   now - v->received_at >= (int64_t)s->conf->expire) {
            bool expired = r->outcome != SMTP_OUT_PERM;
            if (expired)
                maillog_expired(&la);
            else
                maillog_bounced(&la);
            s->stats.bounced++;
            if (fail == NULL) {
                record_attempt(s, v->id, idx, SPOOL_RCPT_FAILED, 0, now, reply);
                continue;
            }
            fail[nfail++] = (struct bounce_rcpt){
                .idx = idx,
                .status = expired ? "4.4.7" : r->enhanced[0] == '5' ? r->enhanced : "5.0.0",
                .remote_mta = r->code > 0 ? la.relay : NULL,
                .diagnostic = reply,
                .last_attempt = now,
            };
        } else {
            uint32_t wait = route_retry_after(s->conf, la.attempt);
            int64_t next = now + wait + (wait >= 10 ? jitter_rand() % (wait / 10 + 1) : 0);
            if (j->defer_until > now)
                next = j->defer_until;
            int64_t until = v->received_at + (int64_t)s->conf->expire;
            if (next > until)
                next = until > now ? until : now + 1;
            record_attempt(s, v->id, idx, SPOOL_RCPT_DEFERRED, next, now, reply);
            maillog_deferred(&la, next);
            s->stats.deferred++;
            note_deferred(m, idx);
        }
    }
    if (nfail > 0) {
        int r = bounce_fail(s->sh, v, fail, nfail, s->hostname, now, NULL, NULL);
        if (r < 0 && r != -EALREADY)
            log_warnx("msgid=%s event=bounce-error err=%s", v->id, strerror(-r));
    }
    if (ntold > 0) {
        int r = notice_send(s->sh, v, j->d == NULL ? DSN_DELIVERED : DSN_RELAYED, told, ntold,
                            s->hostname, now, 0, NULL, NULL);
        if (r < 0)
            log_warnx("msgid=%s event=notice-error err=%s", v->id, strerror(-r));
    }
out:
    free(fail);
    free(told);
    free(diag);
    sched_job_drop(j);
}

/* ---- messages -------------------------------------------------------------- */

/* The recipient's domain, lower case, into out; false when there is none
 * (no '@', or an empty domain). */
static bool rcpt_domain(const char *rcpt, char *out, size_t cap)
{
    const char *at = strrchr(rcpt, '@');
    size_t n;

    if (at == NULL || at[1] == '\0' || (n = strlen(at + 1)) >= cap)
        return false;
    for (size_t i = 0; i <= n; i++)
        out[i] = (char)tolower((unsigned char)at[1 + i]);
    return true;
}

static bool domain_is_local(struct sched *s, const char *domain)
{
    return s->is_local != NULL && s->is_local(s->arg, domain);
}

/* Fail recipients idx[0..n) of m at once (expired, bad domain). */
static void fail_now(struct amsg *m, const uint32_t *idx, size_t n, const char *status,
                     const char *why, bool expired)
{
    struct sched *s = m->s;
    int64_t now = sched_now();
    struct bounce_rcpt *f = calloc(n, sizeof *f);
    char (*diag)[SPOOL_REPLY_MAX + 64] = calloc(n, sizeof *diag);

    for (size_t k = 0; k < n; k++) {
        struct spool_rcpt_info ri = m->v.rcpt[idx[k]];
        struct maillog_attempt la = {
            .msgid = m->v.id,
            .rcpt = m->v.rcpts[idx[k]],
            .status = status,
            .reply = why,
            .delay = now - m->v.received_at,
            .attempt = ri.attempts,
            .dclass = expired ? METRICS_DCLASS_EXPIRED : METRICS_DCLASS_LOCAL,
        };
        if (expired)
            maillog_expired(&la);
        else
            maillog_bounced(&la);
        s->stats.bounced++;
        if (f == NULL || diag == NULL)
            continue;
        if (ri.reply != NULL && ri.reply[0] != '\0')
            snprintf(diag[k], sizeof diag[k], "%s; last reply: %s", why, ri.reply);
        else
            snprintf(diag[k], sizeof diag[k], "%s", why);
        f[k] = (struct bounce_rcpt){.idx = idx[k], .status = status, .diagnostic = diag[k],
                                    .last_attempt = ri.last_at};
    }
    if (f != NULL && diag != NULL) {
        int r = bounce_fail(s->sh, &m->v, f, n, s->hostname, now, NULL, NULL);
        if (r < 0 && r != -EALREADY)
            log_warnx("msgid=%s event=bounce-error err=%s", m->v.id, strerror(-r));
    } else {
        for (size_t k = 0; k < n; k++)
            record_attempt(s, m->v.id, idx[k], SPOOL_RCPT_FAILED, 0, now, why);
    }
    free(f);
    free(diag);
}

/* Check message id out and hand its due recipients to destinations. */
static void msg_start(struct sched *s, const char *id)
{
    struct amsg *m = calloc(1, sizeof *m);
    uint32_t *expired = NULL, *local = NULL, *baddom = NULL, *idx = NULL;
    struct dest **rd = NULL;
    size_t nexp = 0, nloc = 0, nbad = 0;
    int r;

    if (m == NULL) {
        spool_due_release(s->sh, id);
        return;
    }
    if ((r = spool_msg_open(s->sh, id, &m->v)) < 0) {
        log_warnx("msgid=%s event=open-failed err=%s", id, strerror(-r));
        free(m);
        spool_due_release(s->sh, id);
        return;
    }
    m->s = s;
    m->refs = 1;
    m->started = sched_now();
    m->next = s->active;
    if (s->active != NULL)
        s->active->prev = m;
    s->active = m;
    s->nactive++;

    size_t n = m->v.nrcpts;
    expired = malloc(n * sizeof *expired);
    local = malloc(n * sizeof *local);
    baddom = malloc(n * sizeof *baddom);
    idx = malloc(n * sizeof *idx);
    rd = calloc(n, sizeof *rd);
    if (!expired || !local || !baddom || !idx || !rd)
        goto out; /* released untouched: tried again at the next pump */
    for (uint32_t i = 0; i < n; i++) {
        const struct spool_rcpt_info *ri = &m->v.rcpt[i];
        char domain[RES_NAME_MAX + 2], lit[INET6_ADDRSTRLEN];

        if (ri->state == SPOOL_RCPT_DELIVERED || ri->state == SPOOL_RCPT_FAILED ||
            ri->next_at > m->started)
            continue;
        bool named = rcpt_domain(m->v.rcpts[i], domain, sizeof domain), valid;

        /* Checked and normalised; an internationalized domain (SMTPUTF8) is
         * looked up, routed and queued under its A-labels, the address is
         * sent as it was given.  Unchanged when not valid (refused below). */
        if (!named)
            valid = false;
        else if (domain[0] == '[')
            valid = dest_literal_ip(domain, lit, sizeof lit) > 0;
        else
            valid = res_name_to_ascii(domain, domain, sizeof domain) >= 0;
        if (!named || domain_is_local(s, domain)) {
            local[nloc++] = i;
        } else if (m->started - m->v.received_at >= (int64_t)s->conf->expire) {
            expired[nexp++] = i;
        } else if (!valid) {
            baddom[nbad++] = i;
        } else if ((rd[i] = dest_get(s, domain)) == NULL) {
            goto out;
        }
    }
    if (nexp > 0)
        fail_now(m, expired, nexp, "4.4.7", "delivery time expired", true);
    if (nbad > 0)
        fail_now(m, baddom, nbad, "5.1.2", "bad destination domain (not a valid domain, IDN "
                                           "name or IPv4/IPv6 address literal)", false);
    if (nloc > 0) {
        struct job *lj = s->local ? job_new(m, NULL, local, nloc) : NULL;
        if (lj != NULL) {
            if (s->local(s->arg, (struct sched_local_job *)lj) < 0)
                sched_job_fail(lj, SMTP_OUT_TEMP, SMTP_STAGE_NONE, "4.3.0",
                               "local delivery is not available now");
        } else {
            m->local_parked = true;
        }
    }
    /* One job per destination, recipients in their order in the message. */
    for (uint32_t i = 0; i < n; i++) {
        struct dest *d = rd[i];
        size_t k = 0;
        if (d == NULL)
            continue;
        for (uint32_t x = i; x < n; x++) {
            if (rd[x] == d) {
                idx[k++] = x;
                rd[x] = NULL;
            }
        }
        struct job *j = job_new(m, d, idx, k);
        if (j == NULL)
            break; /* the rest is tried again at the next round */
        dest_enqueue(d, j);
    }
out:
    free(expired);
    free(local);
    free(baddom);
    free(idx);
    free(rd);
    msg_unref(m);
}

/* Local recipients left waiting: keep the message out of the way until a
 * flush or a restart, but no later than its next remote retry. */
static void park_local(struct amsg *m)
{
    struct sched *s = m->s;
    int64_t when = m->started + SCHED_PARK;

    for (size_t i = 0; i < m->v.nrcpts; i++) {
        struct spool_rcpt_info ri;
        char domain[RES_NAME_MAX + 2];
        if (spool_rcpt_get(s->sh, m->v.id, i, &ri) < 0)
            return; /* gone */
        if (ri.state == SPOOL_RCPT_DELIVERED || ri.state == SPOOL_RCPT_FAILED)
            continue;
        if (!rcpt_domain(m->v.rcpts[i], domain, sizeof domain) || domain_is_local(s, domain))
            continue;
        if (ri.next_at < when)
            when = ri.next_at > m->started ? ri.next_at : m->started + 1;
    }
    spool_reschedule(s->sh, m->v.id, when);
}

/* The delay warning (RFC 3464 "delayed"), once per message. */
static void delay_warning(struct amsg *m)
{
    struct sched *s = m->s;
    int64_t now = sched_now();
    const struct route_conf *c = s->conf;

    if (c->delay_warning == 0 || m->ndeferred == 0 || (m->v.msg_flags & SPOOL_MF_DELAY_WARNED) ||
        now - m->v.received_at < (int64_t)c->delay_warning)
        return;
    struct bounce_rcpt *w = calloc(m->ndeferred, sizeof *w);
    char (*diag)[SPOOL_REPLY_MAX + 1] = calloc(m->ndeferred, sizeof *diag);
    size_t n = 0;
    if (w == NULL || diag == NULL)
        goto out;
    for (size_t k = 0; k < m->ndeferred; k++) {
        struct spool_rcpt_info ri;
        if (spool_rcpt_get(s->sh, m->v.id, m->deferred[k], &ri) < 0 ||
            ri.state != SPOOL_RCPT_DEFERRED)
            continue;
        snprintf(diag[n], sizeof diag[n], "%s", ri.reply ? ri.reply : "");
        w[n] = (struct bounce_rcpt){.idx = m->deferred[k],
                                    .status = "4.0.0",
                                    .diagnostic = diag[n],
                                    .last_attempt = ri.last_at};
        n++;
    }
    if (n > 0) {
        int r = notice_send(s->sh, &m->v, DSN_DELAYED, w, n, s->hostname, now,
                            m->v.received_at + (int64_t)c->expire, NULL, NULL);
        if (r < 0)
            log_warnx("msgid=%s event=notice-error err=%s", m->v.id, strerror(-r));
    }
out:
    free(w);
    free(diag);
}

/* An administrator's bounce: fail what is still not final. */
static void admin_bounce(struct sched *s, const struct spool_msg_view *v)
{
    struct bounce_rcpt *f = calloc(v->nrcpts, sizeof *f);
    int64_t now = sched_now();
    size_t n = 0;

    if (f == NULL)
        return;
    for (size_t i = 0; i < v->nrcpts; i++) {
        struct spool_rcpt_info ri;
        if (spool_rcpt_get(s->sh, v->id, i, &ri) < 0)
            break;
        if (ri.state == SPOOL_RCPT_DELIVERED || ri.state == SPOOL_RCPT_FAILED)
            continue;
        f[n++] = (struct bounce_rcpt){.idx = (uint32_t)i,
                                      .status = "5.0.0",
                                      .diagnostic = "bounced by the administrator",
                                      .last_attempt = ri.last_at};
        struct maillog_attempt la = {.msgid = v->id, .rcpt = v->rcpts[i], .status = "5.0.0",
                                     .reply = "bounced by the administrator",
                                     .delay = now - v->received_at, .attempt = ri.attempts,
                                     .dclass = METRICS_DCLASS_LOCAL};
        maillog_bounced(&la);
    }
    if (n > 0) {
        int r = bounce_fail(s->sh, v, f, n, s->hostname, now, NULL, NULL);
        if (r < 0)
            log_warnx("msgid=%s event=bounce-error err=%s", v->id, strerror(-r));
    }
    free(f);
}

/* The last job of m is over: finish the round and release the message. */
static void msg_finish(struct amsg *m)
{
    struct sched *s = m->s;
    char id[SPOOL_ID_LEN + 1];

    if (!s->stopping && !m->deleted) {
        if (m->bounce_req)
            admin_bounce(s, &m->v);
        else
            delay_warning(m);
        if (m->local_parked)
            park_local(m);
    }
    memcpy(id, m->v.id, sizeof id);
    spool_msg_close(s->sh, &m->v);
    spool_due_release(s->sh, id);
    if (m->prev != NULL)
        m->prev->next = m->next;
    else
        s->active = m->next;
    if (m->next != NULL)
        m->next->prev = m->prev;
    s->nactive--;
    free(m->deferred);
    free(m);
    wake(s);
}

static void msg_unref(struct amsg *m)
{
    if (--m->refs == 0)
        msg_finish(m);
}

static void pump(struct sched *s)
{
    char id[SPOOL_ID_LEN + 1];
    int64_t now = sched_now();

    if (s->conf->hold)
        return; /* [delivery] hold: everything stays queued */
    while (!s->stopping && s->nactive < SCHED_ACTIVE_MAX && spool_due_next(s->sh, now, id) == 1)
        msg_start(s, id);
    timer_arm(s);
}

/* ---- life -------------------------------------------------------------------- */

struct sched *sched_new(const struct sched_params *p, char *err, size_t errlen)
{
    struct sched *s = calloc(1, sizeof *s);
    struct tls_client_opts o = {.ca_file = p->ca_file};

    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->loop = p->loop;
    s->sh = p->spool;
    s->res = p->res;
    s->conf = p->conf;
    s->index = p->index;
    s->is_local = p->is_local;
    s->local = p->local;
    s->arg = p->arg;
    s->hostname = strdup(p->hostname ? p->hostname : "localhost");
    s->dcap = 64;
    s->dtab = calloc(s->dcap, sizeof *s->dtab);
    if (s->hostname == NULL || s->dtab == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    s->helo = p->conf->helo_name ? p->conf->helo_name : s->hostname;
    s->tls = tls_client_new_opts(&o, err, errlen);
    if (s->tls == NULL)
        goto fail;
    io_op_init(&s->wake_op, s);
    io_op_init(&s->timer_op, s);
    io_op_init(&s->stop_op, s);
    spool_set_ready_cb(s->sh, on_ready, s);
    wake(s);
    return s;
fail:
    free(s->dtab);
    free(s->hostname);
    free(s);
    return NULL;
}

static void on_stop_poll(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct sched *s = op->owner;

    /* The attempts, bounces and notices written lately must be on disk
     * (their journal batches done) before the reactor may stop. */
    if (smtp_client_count() > 0 || io_op_busy(&s->wake_op) || io_op_busy(&s->timer_op) ||
        dest_busy(s) || s->nactive > 0 || !spool_shard_idle(s->sh)) {
        io_timer_start(s->loop, &s->stop_op, 5, on_stop_poll);
        return;
    }
    if (s->stopped != NULL)
        s->stopped(s->stopped_arg);
}

void sched_stop(struct sched *s, void (*done)(void *arg), void *arg)
{
    s->stopping = true;
    s->stopped = done;
    s->stopped_arg = arg;
    spool_set_ready_cb(s->sh, NULL, NULL);
    io_cancel(s->loop, &s->wake_op);
    io_cancel(s->loop, &s->timer_op);
    /* Drops every remote job: their messages finish and are released.  A
     * message with a local job out waits for it (a Maildir worker may be
     * reading its segment). */
    dest_stop_all(s);
    io_defer(s->loop, &s->stop_op, on_stop_poll);
}

void sched_set_conf(struct sched *s, const struct route_conf *conf)
{
    bool unhold = s->conf->hold && !conf->hold;

    s->conf = conf;
    if (unhold)
        wake(s);
    s->helo = conf->helo_name ? conf->helo_name : s->hostname;
    for (size_t i = 0; i < s->dcap; i++) {
        for (struct dest *d = s->dtab[i]; d != NULL; d = d->hnext) {
            const char *lhs = d->route ? d->route->domain : d->domain;
            if (d->route != NULL) {
                const struct route *nr = route_lookup(conf, d->route->domain);
                if (nr != NULL && strcmp(nr->domain, d->route->domain) == 0)
                    d->route = nr;
                lhs = d->route->domain;
            }
            d->lim = route_limits_for(conf, lhs, &d->rdest);
        }
    }
}

void sched_free(struct sched *s)
{
    if (s == NULL)
        return;
    dest_free_all(s);
    free(s->dtab);
    if (s->tls != NULL)
        tls_client_free(s->tls);
    free(s->hostname);
    free(s);
}

void sched_get_stats(const struct sched *s, struct sched_stats *out)
{
    *out = s->stats;
    out->active = s->nactive;
    out->dests = s->ndests;
    out->conns = s->nconns;
}

/* ---- queue control --------------------------------------------------------- */

static struct amsg *active_find(struct sched *s, const char *id)
{
    for (struct amsg *m = s->active; m != NULL; m = m->next)
        if (strcmp(m->v.id, id) == 0)
            return m;
    return NULL;
}

/* Drop the queued (not yet sent) jobs of an active message. */
static void drop_queued(struct sched *s, struct amsg *m)
{
    m->refs++; /* keep m while its jobs go */
    for (size_t i = 0; i < s->dcap; i++) {
        for (struct dest *d = s->dtab[i]; d != NULL; d = d->hnext) {
            struct job *j = d->qhead, *next;
            for (; j != NULL; j = next) {
                next = j->next;
                if (j->m == m && dest_unqueue(j))
                    sched_job_drop(j);
            }
        }
    }
    msg_unref(m);
}

static bool looks_like_id(const char *s)
{
    size_t n = 0;

    for (; s[n]; n++)
        if (!isalnum((unsigned char)s[n]))
            return false;
    return n == SPOOL_ID_LEN;
}

/* Collects the ids of messages with a live recipient at a domain. */
struct flush_scan {
    const char *domain;
    char (*ids)[SPOOL_ID_LEN + 1];
    size_t n, cap;
};

static int flush_scan_cb(const struct spool_msg_info *mi, void *arg)
{
    struct flush_scan *fs = arg;
    char domain[RES_NAME_MAX + 2];

    for (size_t i = 0; i < mi->nrcpts; i++) {
        enum spool_rcpt_state st = mi->rcpt_state[i];
        if (st == SPOOL_RCPT_DELIVERED || st == SPOOL_RCPT_FAILED)
            continue;
        if (!rcpt_domain(mi->rcpts[i], domain, sizeof domain) || strcmp(domain, fs->domain) != 0)
            continue;
        if (fs->n == fs->cap) {
            size_t nc = fs->cap ? fs->cap * 2 : 64;
            void *ni = realloc(fs->ids, nc * sizeof *fs->ids);
            if (ni == NULL)
                return -ENOMEM;
            fs->ids = ni;
            fs->cap = nc;
        }
        memcpy(fs->ids[fs->n++], mi->id, SPOOL_ID_LEN + 1);
        break;
    }
    return 0;
}

int sched_flush(struct sched *s, const char *target)
{
    int64_t now = sched_now();
    int n;

    if (s->stopping)
        return 0;
    if (target == NULL) {
        for (size_t i = 0; i < s->dcap; i++)
            for (struct dest *d = s->dtab[i]; d != NULL; d = d->hnext)
                d->dead_until = 0;
        n = spool_reschedule(s->sh, NULL, now);
        return n < 0 ? 0 : n;
    }
    if (looks_like_id(target)) {
        /* The destinations of its recipients come out of backoff too, or
         * the flush would only defer it again at once. */
        struct spool_msg_view v;
        if (spool_msg_open(s->sh, target, &v) == 0) {
            for (size_t i = 0; i < v.nrcpts; i++) {
                char domain[RES_NAME_MAX + 2];
                if (rcpt_domain(v.rcpts[i], domain, sizeof domain) &&
                    res_name_normalize(domain, domain, sizeof domain) >= 0)
                    dest_flush_domain(s, domain);
            }
            spool_msg_close(s->sh, &v);
        }
        n = spool_reschedule(s->sh, target, now);
        return n < 0 ? 0 : n;
    }
    char domain[RES_NAME_MAX + 2];
    struct flush_scan fs = {.domain = domain};
    if (res_name_normalize(target, domain, sizeof domain) < 0)
        return -EINVAL;
    dest_flush_domain(s, domain);
    if (spool_foreach(s->sh, flush_scan_cb, &fs) < 0) {
        free(fs.ids);
        return -ENOMEM;
    }
    n = 0;
    for (size_t i = 0; i < fs.n; i++)
        if (spool_reschedule(s->sh, fs.ids[i], now) > 0)
            n++;
    free(fs.ids);
    return n;
}

int sched_delete(struct sched *s, const char *id)
{
    struct amsg *m = active_find(s, id);
    int r;

    if (s->stopping)
        return -ENOENT;
    if (m != NULL) {
        m->deleted = true;
        drop_queued(s, m);
    }
    r = spool_mark(s->sh, NULL, id, -1, SPOOL_RCPT_DELETED, 0);
    if (r < 0)
        return r == -ENOENT ? -ENOENT : r;
    log_info("msgid=%s event=deleted by=admin", id);
    return 1;
}

int sched_bounce(struct sched *s, const char *id)
{
    struct amsg *m = active_find(s, id);
    struct spool_msg_view v;
    int r;

    if (s->stopping)
        return -ENOENT;
    if (m != NULL) {
        m->bounce_req = true;
        drop_queued(s, m);
        return 1;
    }
    if ((r = spool_msg_open(s->sh, id, &v)) < 0)
        return r == -ENOENT ? -ENOENT : r;
    admin_bounce(s, &v);
    spool_msg_close(s->sh, &v);
    return 1;
}

/* ---- local jobs ---------------------------------------------------------------- */

const struct spool_msg_view *sched_local_view(const struct sched_local_job *j)
{
    return &j->job.m->v;
}

size_t sched_local_count(const struct sched_local_job *j)
{
    return j->job.n;
}

uint32_t sched_local_rcpt(const struct sched_local_job *j, size_t i)
{
    return j->job.idx[i];
}

void sched_local_result(struct sched_local_job *j, size_t i, enum smtp_outcome out,
                        const char *enhanced, const char *text)
{
    struct smtp_result *r;

    if (i >= j->job.n)
        return;
    r = &j->job.rcpts[i].result;
    r->outcome = out;
    r->stage = SMTP_STAGE_DATA;
    r->code = 0;
    snprintf(r->enhanced, sizeof r->enhanced, "%s", enhanced ? enhanced : "");
    snprintf(r->text, sizeof r->text, "%s", text ? text : "");
}

void sched_local_done(struct sched_local_job *j)
{
    struct job_ctx ctx = {.relay = "local"};

    for (size_t i = 0; i < j->job.n; i++) {
        struct smtp_result *r = &j->job.rcpts[i].result;
        if (r->outcome == SMTP_OUT_NONE) {
            r->outcome = SMTP_OUT_TEMP;
            snprintf(r->enhanced, sizeof r->enhanced, "4.3.0");
            snprintf(r->text, sizeof r->text, "local delivery gave no result");
        }
    }
    sched_job_done(&j->job, &ctx);
}
