/* SPDX-License-Identifier: MIT */
/*
 * server.c - the daemon (`ortoo serve`): the process around the reactors.
 *
 * The main thread loads the configuration, the users and the certificates,
 * binds the listeners (resolving port 0 once so that every reactor listens
 * on the same port), starts one reactor thread per CPU (pinned), waits for
 * all of them to be ready, logs the listening addresses and `event=ready`,
 * tells systemd (READY=1 on $NOTIFY_SOCKET), and then only handles signals,
 * the control socket (core/control.c) and the maildrop pickup
 * (core/maildrop.c): SIGTERM/SIGINT stop the reactors gracefully, SIGHUP or
 * `reload` on the control socket re-read the configuration, the
 * certificates, the users and the DKIM keys (settings that need a restart are named in
 * the log and the answer), and a timer rotates the TLS ticket keys.
 * Started as root, it drops to [server] user after binding its ports and
 * loading its certificates, before the reactors open the spool
 * (core/privdrop.c).  It also watches domains/ with inotify (core/watch.c):
 * a changed users or aliases file reloads after a short quiet period,
 * without a command.
 *
 * A reactor owns its io_loop, its spool shard, its resolver context and one
 * SO_REUSEPORT socket per configured listener; the kernel spreads
 * connections between them.  Reactors share nothing mutable on the hot path.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/auth.h"
#include "core/checks.h"
#include "core/config.h"
#include "core/control.h"
#include "core/maildrop.h"
#include "core/local.h"
#include "core/metrics_http.h"
#include "core/privdrop.h"
#include "core/limits.h"
#include "core/psl.h"
#include "core/queue_ctl.h"
#include "core/server.h"
#include "core/smtp_session.h"
#include "core/stats.h"
#include "core/users.h"
#include "delivery/scheduler.h"
#include "dkim/keys.h"
#include "core/watch.h"
#include "io/log.h"
#include "io/loop.h"
#include "io/tls.h"
#include "resolver/resolver.h"
#include "spool/spool.h"

#define SERVER_BACKLOG 4096
#define SERVER_WATCH_QUIET_MS 100   /* quiet time after a domains/ change before reloading */

struct reactor;

/* One listening socket of one reactor. */
struct listener {
    struct io_op op;              /* multishot accept */
    struct io_op retry;           /* timer to re-arm after EMFILE and the like */
    int fd;                       /* listening socket (owned) */
    enum listen_role role;
    struct reactor *reactor;
};

/* A reactor thread.  Invariant: everything here is touched only by its thread
 * once it runs, except `ready`/`failed` (before start-up completes). */
struct reactor {
    struct smtp_reactor ctx;      /* what sessions see */
    pthread_t thread;
    struct listener *listeners;   /* one per configured listener */
    size_t nlisteners;
    int cpu;                      /* CPU to pin to, -1: none */
    struct sched *sched;          /* delivery scheduler (delivery/scheduler.h) */
    bool sessions_drained;        /* shutdown: the last session is gone */
    bool sched_stopped;           /* shutdown: the scheduler let go of everything */
    struct server *srv;
};

struct server {
    struct config *cfg;
    struct limits *limits;        /* shared by every reactor (core/limits.h) */
    struct users *users;
    struct tls_server *tls;
    struct auth *auth;
    struct dkim_keys *dkim;       /* DKIM keys (our reference) */
    struct queue_ctl *qctl;       /* `queue flush|delete|bounce` (core/queue_ctl.h) */
    struct local *local;          /* local delivery: Maildir workers (core/local.h) */
    struct psl *psl;              /* Public Suffix List for DMARC (read at start) or NULL */
    struct users **old_users;     /* replaced tables, freed at exit (see reload) */
    size_t nold_users;
    struct config **old_cfgs;     /* replaced configurations, freed at exit (reload) */
    size_t nold_cfgs;
    struct control *ctl;          /* control socket and the main thread's poll set */
    struct maildrop *md;          /* local submission pickup */
    struct stats *stats;          /* figures: `stats` command, metrics endpoint */
    struct metrics_http *metrics; /* [listen] metrics, or NULL */
    struct smtp_reactor **rctx;   /* &reactors[i].ctx, for the pickup */
    bool verbose_cli;             /* -v: the log level stays debug across reloads */
    bool stopping;                /* SIGTERM/SIGINT seen */
    struct reactor *reactors;
    unsigned nreactors;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned nready;              /* reactors that finished start-up */
    int start_error;              /* first start-up error (-errno) */
    char start_msg[256];
};

/* ---- listeners ---- */

static int listen_socket(const struct sockaddr_storage *addr, socklen_t len)
{
    int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
        goto fail;
    if (addr->ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)addr, len) < 0)
        goto fail;
    if (listen(fd, SERVER_BACKLOG) < 0)
        goto fail;
    return fd;
fail:;
    int err = -errno;
    close(fd);
    return err;
}

static int addr_port(const struct sockaddr_storage *a)
{
    if (a->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)a)->sin6_port);
    return ntohs(((const struct sockaddr_in *)a)->sin_port);
}

static void addr_set_port(struct sockaddr_storage *a, int port)
{
    if (a->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)a)->sin6_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in *)a)->sin_port = htons((uint16_t)port);
}

static void addr_text(const struct sockaddr_storage *a, char *out, size_t cap)
{
    char ip[INET6_ADDRSTRLEN];
    if (a->ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)a)->sin6_addr, ip, sizeof(ip));
        snprintf(out, cap, "[%s]:%d", ip, addr_port(a));
    } else {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)a)->sin_addr, ip, sizeof(ip));
        snprintf(out, cap, "%s:%d", ip, addr_port(a));
    }
}

static void on_accept(struct io_op *op, int res, const char *data, unsigned flags);

static void on_accept_retry(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct listener *l = op->owner;
    if (res < 0)
        return;
    if (!io_op_busy(&l->op))
        io_accept_start(l->reactor->ctx.loop, &l->op, l->fd, on_accept);
}

static void on_accept(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct listener *l = op->owner;
    struct smtp_reactor *r = &l->reactor->ctx;
    if (res >= 0) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof(peer);
        memset(&peer, 0, sizeof(peer));
        if (getpeername(res, (struct sockaddr *)&peer, &plen) < 0) {
            close(res); /* already gone */
        } else {
            smtp_session_start(r, res, l->role, &peer, plen);
        }
    } else if (res != -ECANCELED) {
        log_warnx("reactor=%u event=accept-error err=%s", r->index, strerror(-res));
    }
    if (!(flags & IO_F_MORE) && res != -ECANCELED && !r->stopping) {
        /* The multishot ended (error or backend limit): re-arm, after a pause
         * when it was an error such as EMFILE, so we do not spin. */
        if (res < 0)
            io_timer_start(r->loop, &l->retry, 100, on_accept_retry);
        else
            io_accept_start(r->loop, &l->op, l->fd, on_accept);
    }
}

/* ---- reactor threads ---- */

/* Local recipients: delivered by core/local.c on this reactor. */
static int reactor_local(void *arg, struct sched_local_job *j)
{
    struct reactor *re = arg;
    return local_deliver(re->srv->local, &re->ctx, j);
}

/* The scheduler asks which recipient domains are ours (never sent out). */
static bool reactor_is_local(void *arg, const char *domain)
{
    struct reactor *re = arg;
    return users_is_local_domain(re->ctx.users, domain, strlen(domain));
}

static void reactor_report(struct server *srv, int err, const char *msg)
{
    pthread_mutex_lock(&srv->lock);
    if (err < 0 && srv->start_error == 0) {
        srv->start_error = err;
        snprintf(srv->start_msg, sizeof(srv->start_msg), "%s", msg);
    }
    srv->nready++;
    pthread_cond_broadcast(&srv->cond);
    pthread_mutex_unlock(&srv->lock);
}

static void *reactor_main(void *arg)
{
    struct reactor *re = arg;
    struct server *srv = re->srv;
    const struct config *cfg = srv->cfg;
    char err[256] = "";

    if (re->cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(re->cpu, &set);
        pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    }
    re->ctx.loop = io_loop_new(cfg->io, 0);
    if (re->ctx.loop == NULL) {
        int e = errno ? -errno : -EINVAL;
        snprintf(err, sizeof(err), "reactor %u: cannot create the %s event loop: %s",
                 re->ctx.index, io_backend_name(cfg->io), strerror(-e));
        reactor_report(srv, e, err);
        return NULL;
    }
    /* The resolver context reads its trust anchors now (start-up). */
    re->ctx.res = res_ctx_new(re->ctx.loop, &cfg->resolver, err, sizeof(err));
    if (re->ctx.res == NULL) {
        reactor_report(srv, -EINVAL, err);
        return NULL;
    }
    /* Inbound checks (core/checks.h): a DKIM key cache per reactor. */
    re->ctx.checks = checks_reactor_new(re->ctx.loop, re->ctx.res, srv->psl, err, sizeof(err));
    if (re->ctx.checks == NULL) {
        reactor_report(srv, -EINVAL, err);
        return NULL;
    }
    struct spool_params sp = {.batch_delay_us = cfg->batch_delay_us,
                              .segment_max_bytes = cfg->spool_opts.segment_size,
                              .checkpoint_bytes = cfg->spool_opts.checkpoint_size,
                              .compact_min_age = cfg->spool_opts.compact_min_age,
                              .compact_live_pct = cfg->spool_opts.compact_live_pct,
                              .journal_delay_ms = cfg->spool_opts.journal_delay_ms
                                                      ? cfg->spool_opts.journal_delay_ms
                                                      : SPOOL_JOURNAL_DELAY_NONE};
    int rc = spool_shard_open(re->ctx.loop, cfg->spool, re->ctx.index, srv->nreactors, &sp,
                              &re->ctx.spool, err, sizeof(err));
    if (rc < 0) {
        reactor_report(srv, rc, err);
        return NULL;
    }
    /* Delivery: one scheduler per reactor, on its shard and resolver.  It
     * builds its TLS client context now (reads the CA store). */
    struct sched_params schp = {
        .loop = re->ctx.loop,
        .spool = re->ctx.spool,
        .res = re->ctx.res,
        .conf = &cfg->delivery,
        .hostname = cfg->hostname,
        .index = re->ctx.index,
        .is_local = reactor_is_local,
        .local = reactor_local,
        .arg = re,
    };
    re->sched = sched_new(&schp, err, sizeof(err));
    if (re->sched == NULL) {
        char msg[256];
        snprintf(msg, sizeof(msg), "reactor %u: delivery: %.200s", re->ctx.index, err);
        reactor_report(srv, -EINVAL, msg);
        return NULL;
    }
    for (size_t i = 0; i < re->nlisteners; i++) {
        struct listener *l = &re->listeners[i];
        io_op_init(&l->op, l);
        io_op_init(&l->retry, l);
        rc = io_accept_start(re->ctx.loop, &l->op, l->fd, on_accept);
        if (rc < 0) {
            snprintf(err, sizeof(err), "reactor %u: accept: %s", re->ctx.index, strerror(-rc));
            reactor_report(srv, rc, err);
            return NULL;
        }
    }
    log_info("reactor=%u event=started io=%s spool_messages=%zu", re->ctx.index,
             io_backend_name(io_loop_backend(re->ctx.loop)), spool_shard_count(re->ctx.spool));
    reactor_report(srv, 0, NULL);
    rc = io_loop_run(re->ctx.loop);
    if (rc < 0)
        log_warnx("reactor=%u event=loop-failed err=%s", re->ctx.index, strerror(-rc));
    return NULL;
}

/* ---- shutdown ---- */

static void on_spool_quiet(void *arg)
{
    struct smtp_reactor *r = arg;
    io_loop_stop(r->loop);
}

/* Once the sessions and the scheduler are both done, and the spool has
 * finished what it started (journal entries, helper jobs), stop the loop
 * (this may run inside a spool callback, so the shard is closed by the main
 * thread after the join). */
static void reactor_maybe_stop(struct reactor *re)
{
    if (re->sessions_drained && re->sched_stopped)
        spool_shard_quiesce(re->ctx.spool, on_spool_quiet, &re->ctx);
}

static void on_drained(struct smtp_reactor *r)
{
    struct reactor *re = (struct reactor *)((char *)r - offsetof(struct reactor, ctx));
    re->sessions_drained = true;
    reactor_maybe_stop(re);
}

static void on_sched_stopped(void *arg)
{
    struct reactor *re = arg;
    re->sched_stopped = true;
    reactor_maybe_stop(re);
}

/* Runs on the reactor (posted by the main thread at SIGTERM/SIGINT). */
static void reactor_shutdown(void *arg)
{
    struct reactor *re = arg;
    for (size_t i = 0; i < re->nlisteners; i++) {
        io_cancel(re->ctx.loop, &re->listeners[i].op);
        io_cancel(re->ctx.loop, &re->listeners[i].retry);
    }
    /* Deliveries in flight are dropped: their state in the spool is as
     * before the attempt, so they are tried again after a restart. */
    sched_stop(re->sched, on_sched_stopped, re);
    smtp_session_close_all(&re->ctx);
}

/* ---- reload (SIGHUP, `ortoo reload`) ---- */

static void notify_systemd(const char *msg);

/*
 * One reload.  The main thread loads everything, then every reactor takes
 * the new state between events (on_reactor_swap); the last one to do so
 * posts reload_finish back to the main thread, which answers `ortoo reload`
 * only then: when the command returns, every new connection gets the new
 * certificates and limits.
 */
struct reload_job {
    struct server *srv;
    struct control_req *req;      /* `reload` on the control socket, or NULL (SIGHUP) */
    atomic_uint pending;          /* reactors that have not swapped yet */
    struct control_task task;
    bool failed;                  /* something could not be reloaded */
    char done[256];               /* what was reloaded, for the answer */
    char errors[1024];            /* "what: why; ..." */
    char restart[256];            /* settings that need a restart */
};

/* What a reactor takes at a reload; NULL fields stay as they are. */
struct reactor_swap {
    struct reactor *re;
    const struct config *cfg;     /* owned by the server */
    struct tls_server *tls;       /* one reference, handed to the reactor */
    const struct users *users;    /* owned by the server */
    struct dkim_keys *dkim;       /* one reference, handed to the reactor */
    struct reload_job *job;
};

static void reload_finish(void *arg);

/* On the reactor, between events: take the new context and table.  Our
 * reference to the old TLS context is dropped; connections made from it keep
 * theirs (tls.c counts references), so a pending handshake is safe. */
static void on_reactor_swap(void *arg)
{
    struct reactor_swap *sw = arg;
    struct reload_job *job = sw->job;
    if (sw->tls != NULL) {
        struct tls_server *old = sw->re->ctx.tls;
        sw->re->ctx.tls = sw->tls;
        if (old != NULL)
            tls_server_free(old);
    }
    if (sw->users != NULL)
        sw->re->ctx.users = sw->users;
    if (sw->dkim != NULL) {
        /* Signers in flight hold their own reference to the old set. */
        dkim_keys_free(sw->re->ctx.dkim);
        sw->re->ctx.dkim = sw->dkim;
    }
    if (sw->cfg != NULL) {
        sw->re->ctx.cfg = sw->cfg;
        sched_set_conf(sw->re->sched, &sw->cfg->delivery);
    }
    free(sw);
    if (atomic_fetch_sub(&job->pending, 1) == 1)
        control_post(job->srv->ctl, &job->task, reload_finish, job);
}

static void job_append(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void job_append(char *buf, size_t cap, const char *fmt, ...)
{
    size_t len = strlen(buf);
    if (len + 3 >= cap)
        return;
    if (len > 0) {
        memcpy(buf + len, "; ", 3);
        len += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + len, cap - len, fmt, ap);
    va_end(ap);
}

/* Load the certificates again; NULL (logged, and noted in job) when they
 * are unusable. */
static struct tls_server *reload_tls(struct server *srv, const struct config *cfg,
                                     struct reload_job *job)
{
    char err[256];
    struct tls_server *tls = tls_server_new(cfg->cert_dir, cfg->hostname, err, sizeof(err));
    if (tls == NULL) {
        log_warnx("event=reload-failed what=tls err=\"%s\" (keeping the current certificates)",
                  err);
        bool need_tls = false;
        for (size_t i = 0; i < cfg->nlistens; i++)
            if (cfg->listens[i].role != ROLE_SMTP)
                need_tls = true;
        if (srv->tls == NULL && !need_tls) {
            /* Never had certificates and needs none: nothing broke. */
            job_append(job->done, sizeof(job->done), "no certificates (STARTTLS off)");
        } else {
            job->failed = true;
            job_append(job->errors, sizeof(job->errors),
                       "certificates: %s (still serving the previous ones)", err);
        }
    } else {
        log_info("event=reloaded what=tls certificates=%zu", tls_server_count(tls));
        job_append(job->done, sizeof(job->done), "certificates (%zu)", tls_server_count(tls));
    }
    return tls;
}

/* A problem in domains/ that does not stop the load (e.g. an alias target
 * that names nobody). */
static void on_users_warning(void *arg, const char *msg)
{
    log_warnx("event=domains-warning err=\"%s\"", msg);
}

/* Load users and aliases by the rules of [local]. */
static int load_users(const struct config *cfg, struct users **out, char *err, size_t errlen)
{
    const struct users_opts opts = {
        .case_sensitive = cfg->local.case_sensitive,
        .allow_pipe = cfg->local.allow_pipe,
        .plus_separator = cfg->local.plus_separator,
        .warn = on_users_warning,
    };
    return users_load_opts(cfg->dir, &opts, out, err, errlen);
}

/*
 * Load domains/ again (users and aliases, changed by `ortoo user`, `ortoo
 * domain` or by hand); NULL (logged, the current table stays) on failure.  The replaced table stays allocated until exit,
 * because a password verification in flight may still read a hash string
 * from it (a table is a few KB; a reload is rare).
 */
static struct users *reload_users(struct server *srv, const struct config *cfg,
                                  struct reload_job *job)
{
    char err[512];
    struct users *u = NULL;
    struct users **old = realloc(srv->old_users, (srv->nold_users + 1) * sizeof(*old));
    if (old == NULL) {
        log_warnx("event=reload-failed what=users err=\"out of memory\"");
        job->failed = true;
        job_append(job->errors, sizeof(job->errors), "users: out of memory");
        return NULL;
    }
    srv->old_users = old;
    if (load_users(cfg, &u, err, sizeof(err)) < 0) {
        log_warnx("event=reload-failed what=users err=\"%s\" (keeping the current users)", err);
        job->failed = true;
        job_append(job->errors, sizeof(job->errors), "users: %s (keeping the current users)",
                   err);
        return NULL;
    }
    log_info("event=reloaded what=users domains=%zu", users_domain_count(u));
    job_append(job->done, sizeof(job->done), "users");
    return u;
}

/* Load the DKIM keys again; NULL (logged, and noted in job) on failure. */
static struct dkim_keys *reload_dkim(const struct config *cfg, struct reload_job *job)
{
    char err[512];
    struct dkim_keys *ks = NULL;
    if (dkim_keys_load(cfg->dir, NULL, &ks, err, sizeof(err)) < 0) {
        log_warnx("event=reload-failed what=dkim err=\"%s\" (keeping the current keys)", err);
        job->failed = true;
        job_append(job->errors, sizeof(job->errors), "DKIM keys: %s (keeping the current keys)",
                   err);
        return NULL;
    }
    log_info("event=reloaded what=dkim keys=%zu domains=%zu", dkim_keys_count(ks),
             dkim_keys_domain_count(ks));
    job_append(job->done, sizeof(job->done), "DKIM keys (%zu)", dkim_keys_count(ks));
    return ks;
}

/*
 * ortoo.conf again.  Settings that need a restart keep their running values
 * (named in the log and the answer); the rest (limits, timeouts, hostname,
 * cert_dir, log_level) apply to new sessions and new commands.  NULL when
 * the file is broken (logged; the running configuration stays).
 */
static struct config *reload_config(struct server *srv, struct reload_job *job)
{
    char err[512];
    struct config *cfg = NULL;
    struct config **old = realloc(srv->old_cfgs, (srv->nold_cfgs + 1) * sizeof(*old));
    if (old == NULL) {
        job->failed = true;
        job_append(job->errors, sizeof(job->errors), "configuration: out of memory");
        return NULL;
    }
    srv->old_cfgs = old;
    if (config_load(srv->cfg->dir, &cfg, err, sizeof(err)) < 0) {
        log_warnx("event=reload-failed what=config err=\"%s\" (keeping the current settings)",
                  err);
        job->failed = true;
        job_append(job->errors, sizeof(job->errors), "configuration: %s (keeping the current "
                                                     "settings)", err);
        return NULL;
    }
    if (config_restart_diff(srv->cfg, cfg, job->restart, sizeof(job->restart)) > 0)
        log_warnx("event=reload-restart-needed settings=%s (they keep their running values "
                  "until a restart)",
                  job->restart);
    if (config_keep_restart_fields(cfg, srv->cfg) < 0) {
        config_free(cfg);
        job->failed = true;
        job_append(job->errors, sizeof(job->errors), "configuration: out of memory");
        return NULL;
    }
    log_info("event=reloaded what=config");
    job_append(job->done, sizeof(job->done), "configuration");
    return cfg;
}

/* The log level of a configuration (-v on the command line wins). */
static void apply_log_level(const struct server *srv, const struct config *cfg)
{
    if (srv->verbose_cli || cfg->log_level == NULL)
        return;
    enum log_level lvl = LOG_LVL_INFO;
    if (strcmp(cfg->log_level, "warn") == 0)
        lvl = LOG_LVL_WARN;
    else if (strcmp(cfg->log_level, "debug") == 0)
        lvl = LOG_LVL_DEBUG;
    log_init("ortoo", lvl);
}

/*
 * SIGHUP or `reload`: the configuration, the certificates, the users and
 * the DKIM keys.
 * req (may be NULL) is answered when every reactor has the new state.
 * Main thread.
 */
static void server_reload(struct server *srv, struct control_req *req)
{
    struct reload_job *job = calloc(1, sizeof(*job));
    if (job == NULL) {
        log_warnx("event=reload-failed err=\"out of memory\"");
        if (req != NULL)
            control_done(req, false, "out of memory");
        return;
    }
    char msg[64];
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000);
    notify_systemd(msg);
    job->srv = srv;
    job->req = req;

    struct config *cfg = reload_config(srv, job);
    const struct config *use = cfg != NULL ? cfg : srv->cfg;
    struct tls_server *tls = reload_tls(srv, use, job);
    struct users *users = reload_users(srv, use, job);
    struct dkim_keys *dkim = reload_dkim(use, job);
    if (tls == NULL && users == NULL && dkim == NULL && cfg == NULL) {
        atomic_init(&job->pending, 1);
        reload_finish(job);
        return;
    }
    atomic_init(&job->pending, srv->nreactors);
    for (unsigned i = 0; i < srv->nreactors; i++) {
        struct reactor_swap *sw = malloc(sizeof(*sw));
        if (sw == NULL)
            fatal("malloc"); /* a reactor left on the old state would be worse */
        sw->re = &srv->reactors[i];
        sw->cfg = cfg;
        sw->tls = tls != NULL ? tls_server_ref(tls) : NULL;
        sw->users = users;
        sw->dkim = dkim != NULL ? dkim_keys_ref(dkim) : NULL;
        sw->job = job;
        if (io_loop_post(srv->reactors[i].ctx.loop, on_reactor_swap, sw) < 0)
            fatal("io_loop_post");
    }
    if (cfg != NULL) {
        srv->old_cfgs[srv->nold_cfgs++] = srv->cfg;
        srv->cfg = cfg;
        apply_log_level(srv, cfg);
        if (srv->md != NULL)
            maildrop_set_config(srv->md, cfg);
    }
    if (tls != NULL) {
        if (srv->tls != NULL)
            tls_server_free(srv->tls);
        srv->tls = tls;
    }
    if (dkim != NULL) {
        dkim_keys_free(srv->dkim);
        srv->dkim = dkim;
    }
    if (users != NULL) {
        auth_set_users(srv->auth, users);
        srv->old_users[srv->nold_users++] = srv->users;
        srv->users = users;
    }
}

/* Main thread, once every reactor has swapped: log, tell systemd, answer. */
static void reload_finish(void *arg)
{
    struct reload_job *job = arg;
    if (job->failed)
        log_warnx("event=reload-done ok=0 errors=\"%s\"", job->errors);
    else
        log_info("event=reload-done ok=1 reloaded=\"%s\"", job->done);
    if (!job->srv->stopping)
        notify_systemd("READY=1");
    if (job->req != NULL) {
        if (job->done[0] != '\0')
            control_reply(job->req, "reloaded: %s", job->done);
        if (job->restart[0] != '\0')
            control_reply(job->req,
                          "needs a restart (running values kept): %s", job->restart);
        if (job->failed)
            control_done(job->req, false, "%s", job->errors);
        else
            control_done(job->req, true, "reloaded");
    }
    free(job);
}

/* `reload` on the control socket. */
static void on_ctl_reload(struct control_req *req, int argc, char **argv, void *arg)
{
    if (argc != 1) {
        control_done(req, false, "usage: reload");
        return;
    }
    server_reload(arg, req);
}

/* ---- systemd ---- */

/* sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET. */
static void notify_systemd(const char *msg)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (path == NULL || (path[0] != '/' && path[0] != '@'))
        return;
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len >= sizeof(sun.sun_path))
        return;
    memcpy(sun.sun_path, path, len);
    if (sun.sun_path[0] == '@')
        sun.sun_path[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sun,
           (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len));
    close(fd);
}

/* ---- pid file ---- */

/* Write our pid (atomically: temp file + rename) for scripts and monitoring
 * (`ortoo reload` uses the control socket). */
static void write_pid_file(const char *path)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL) {
        log_warn("event=pid-file path=%s", tmp);
        return;
    }
    fprintf(f, "%ld\n", (long)getpid());
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        log_warn("event=pid-file path=%s", path);
        unlink(tmp);
    }
}

/* ---- control socket ---- */

/*
 * <spool>/control (0660, the daemon's user and [server] control_group) for
 * the administrator's commands, <spool>/pickup (0666, public commands only)
 * for sendmail.  Made before the privilege drop, so that root can give them
 * any group.  Returns 0 or -1 with err.
 */
static int start_control(struct server *srv, const struct priv_target *priv, char *err,
                         size_t errlen)
{
    char path[4200];
    srv->ctl = control_new();
    if (srv->ctl == NULL) {
        snprintf(err, errlen, "cannot create the control socket: out of memory");
        return -1;
    }
    if (control_register(srv->ctl, "reload", 0,
                         "re-read the configuration, certificates and users", on_ctl_reload,
                         srv) < 0) {
        snprintf(err, errlen, "cannot register the reload command");
        return -1;
    }
    if ((srv->stats = stats_new(srv->ctl)) == NULL) {
        snprintf(err, errlen, "cannot register the stats command");
        return -1;
    }
    /* Bound here, before the privilege drop, like the SMTP ports. */
    if (srv->cfg->metrics.enabled &&
        metrics_http_start(srv->ctl, srv->stats, &srv->cfg->metrics, &srv->metrics, err,
                           errlen) < 0)
        return -1;
    bool root = geteuid() == 0;
    snprintf(path, sizeof(path), "%s/%s", srv->cfg->spool, CONTROL_SOCKET_NAME);
    if (control_listen(srv->ctl, path, 0660, root ? priv->uid : (uid_t)-1, priv->control_gid,
                       false, err, errlen) < 0)
        return -1;
    snprintf(path, sizeof(path), "%s/%s", srv->cfg->spool, CONTROL_PUBLIC_SOCKET_NAME);
    if (control_listen(srv->ctl, path, 0666, root ? priv->uid : (uid_t)-1,
                       root ? priv->gid : (gid_t)-1, true, err, errlen) < 0)
        return -1;
    return 0;
}

/* ---- one daemon per spool ---- */

/* mkdir -p path (0750 for what it makes).  Returns 0 or -errno. */
static int mkdir_p(const char *path)
{
    char buf[4096];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof(buf))
        return -ENAMETOOLONG;
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0750) < 0 && errno != EEXIST)
            return -errno;
        buf[i] = c;
    }
    return 0;
}

/*
 * Take the spool's lock: flock(LOCK_EX | LOCK_NB) on <spool>/ortoo.lock,
 * then write our pid into it.  Two daemons on one spool would both append
 * to the same shard files and corrupt them (SO_REUSEPORT would even let the
 * second one bind the same ports), so the second one stops here, before
 * recovery touches anything, and names the first.  The lock is released by
 * the kernel when the process ends, also at kill -9: no stale lock.
 * Returns the fd (held until exit) or -1 with one line on stderr.
 */
static int spool_lock(const char *spool)
{
    char path[4200];
    int rc = mkdir_p(spool);
    if (rc < 0) {
        fprintf(stderr, "ortoo: cannot create the spool %s: %s\n", spool, strerror(-rc));
        return -1;
    }
    snprintf(path, sizeof(path), "%s/%s", spool, SERVER_LOCK_FILE);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        fprintf(stderr, "ortoo: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        char text[32] = "";
        ssize_t n = e == EWOULDBLOCK ? pread(fd, text, sizeof(text) - 1, 0) : -1;
        long pid = n > 0 ? strtol(text, NULL, 10) : 0;
        if (e != EWOULDBLOCK)
            fprintf(stderr, "ortoo: cannot lock %s: %s\n", path, strerror(e));
        else if (pid > 0)
            fprintf(stderr,
                    "ortoo: another ortoo (pid %ld) is already serving the spool %s; "
                    "one daemon per spool: stop it first\n",
                    pid, spool);
        else
            fprintf(stderr,
                    "ortoo: another ortoo is already serving the spool %s (it holds %s); "
                    "one daemon per spool: stop it first\n",
                    spool, path);
        close(fd);
        return -1;
    }
    char text[32];
    int len = snprintf(text, sizeof(text), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, text, (size_t)len, 0) != len)
        log_warn("event=lock-file path=%s", path); /* the lock itself holds */
    return fd;
}

/* ---- serve ---- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static unsigned online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

int server_run(const char *config_dir)
{
    char err[512];
    struct server srv;
    memset(&srv, 0, sizeof(srv));
    pthread_mutex_init(&srv.lock, NULL);
    pthread_cond_init(&srv.cond, NULL);

    if (config_load(config_dir, &srv.cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "ortoo: %s\n", err);
        return 1;
    }
    struct config *cfg = srv.cfg;
    srv.verbose_cli = log_get_level() == LOG_LVL_DEBUG; /* -v */
    apply_log_level(&srv, cfg);
    /* Message buffers are large and short-lived: serve them from mmap so
     * that freeing one gives the memory back (glibc's dynamic threshold
     * would otherwise move them into the heap after the first free, where
     * fragmentation keeps the RSS above the body budget). */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    struct priv_target priv;
    if (priv_resolve(cfg, &priv, err, sizeof(err)) < 0) {
        fprintf(stderr, "ortoo: %s\n", err);
        return 1;
    }
    int lock_fd = spool_lock(cfg->spool);
    if (lock_fd < 0)
        return 1;
    /* Smarthost credentials ([destination] auth_file): read once, now,
     * before privileges are dropped (like the SRS secrets). */
    if (route_conf_load_secrets(&cfg->delivery, err, sizeof(err)) < 0) {
        fprintf(stderr, "ortoo: %s\n", err);
        return 1;
    }
    if (config_srs_load(cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "ortoo: SRS: %s\n", err);
        return 1;
    }
    /* Watching starts before the first load: an edit made while it runs
     * is not missed (at worst it is loaded twice). */
    struct watch *watch = watch_new(cfg->dir);
    if (watch == NULL)
        log_warn("event=watch-off (changes to domains/ need `ortoo reload`)");
    if (load_users(cfg, &srv.users, err, sizeof(err)) < 0) {
        fprintf(stderr, "ortoo: %s\n", err);
        watch_free(watch);
        return 1;
    }
    struct limits_params lp = {
        .max_connections = cfg->max_connections,
        .per_address = cfg->limits.per_address,
        .ipv4_prefix = cfg->limits.ipv4_prefix,
        .ipv6_prefix = cfg->limits.ipv6_prefix,
        .body_memory = cfg->limits.body_memory,
        .box_slots = cfg->limits.penalty_slots,
    };
    srv.limits = limits_new(&lp);
    if (srv.limits == NULL) {
        fprintf(stderr, "ortoo: out of memory\n");
        return 1;
    }
    if (dkim_keys_load(cfg->dir, NULL, &srv.dkim, err, sizeof(err)) < 0) {
        fprintf(stderr, "ortoo: DKIM: %s\n", err);
        return 1;
    }
    /* DMARC's organizational domains.  Without the list (the publicsuffix
     * package) only the implicit rule applies: say so, unless it was asked
     * for by name. */
    srv.psl = psl_load(cfg->checks.public_suffix_list, err, sizeof(err));
    if (srv.psl == NULL && cfg->checks.public_suffix_list_set) {
        fprintf(stderr, "ortoo: [checks] %s\n", err);
        return 1;
    }
    if (srv.psl == NULL)
        log_warnx("event=psl-missing err=\"%s\" (DMARC uses the last two labels as the "
                  "organizational domain; install the publicsuffix package)",
                  err);
    bool need_tls = false;
    for (size_t i = 0; i < cfg->nlistens; i++)
        if (cfg->listens[i].role != ROLE_SMTP)
            need_tls = true;
    srv.tls = tls_server_new(cfg->cert_dir, cfg->hostname, err, sizeof(err));
    if (srv.tls == NULL) {
        if (need_tls) {
            fprintf(stderr, "ortoo: TLS: %s\n", err);
            return 1;
        }
        log_warnx("event=no-tls err=\"%s\" (STARTTLS disabled)", err);
    }
    /* Signals go to the main thread only (signalfd).  Blocked before any
     * thread starts (password workers, reactors), which inherit the mask;
     * a thread without it would take SIGTERM's default action. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
    if (sfd < 0)
        fatal("signalfd");
    struct auth_params ap = {
        .workers = cfg->auth_workers,
        .cache_ttl = cfg->auth_cache_ttl,
        .max_failures = cfg->auth_max_failures,
        .account_max_failures = cfg->limits.auth_account_failures,
        .window = cfg->auth_fail_window,
        .max_queue = cfg->limits.auth_queue,
    };
    srv.auth = auth_new(&ap);
    if (srv.auth == NULL) {
        fprintf(stderr, "ortoo: cannot start the password workers\n");
        return 1;
    }
    auth_set_users(srv.auth, srv.users);
    /* Local delivery's Maildir workers (threads: after the signal mask). */
    srv.local = local_new(2, cfg->hostname);
    if (srv.local == NULL) {
        fprintf(stderr, "ortoo: cannot start the local delivery workers\n");
        return 1;
    }

    srv.nreactors = cfg->reactors ? cfg->reactors : online_cpus();
    srv.reactors = calloc(srv.nreactors, sizeof(*srv.reactors));
    if (srv.reactors == NULL)
        fatal("calloc");
    unsigned ncpu = online_cpus();

    /* Bind: reactor 0 first, resolving port 0, then the others on that port. */
    for (unsigned i = 0; i < srv.nreactors; i++) {
        struct reactor *re = &srv.reactors[i];
        re->srv = &srv;
        re->cpu = (cfg->reactors == 0 || srv.nreactors <= ncpu) ? (int)(i % ncpu) : -1;
        re->ctx.index = i;
        re->ctx.cfg = cfg;
        re->ctx.users = srv.users;
        re->ctx.tls = srv.tls ? tls_server_ref(srv.tls) : NULL;
        re->ctx.auth = srv.auth;
        re->ctx.dkim = dkim_keys_ref(srv.dkim);
        re->ctx.limits = srv.limits;
        re->ctx.on_drained = on_drained;
        re->nlisteners = cfg->nlistens;
        re->listeners = calloc(cfg->nlistens, sizeof(*re->listeners));
        if (re->listeners == NULL)
            fatal("calloc");
    }
    for (size_t j = 0; j < cfg->nlistens; j++) {
        struct config_listen *cl = &cfg->listens[j];
        for (unsigned i = 0; i < srv.nreactors; i++) {
            int fd = listen_socket(&cl->addr, cl->addr_len);
            if (fd < 0) {
                fprintf(stderr, "ortoo: cannot listen on %s (%s): %s\n", cl->text,
                        config_role_name(cl->role), strerror(-fd));
                return 1;
            }
            if (addr_port(&cl->addr) == 0) {
                struct sockaddr_storage got;
                socklen_t glen = sizeof(got);
                if (getsockname(fd, (struct sockaddr *)&got, &glen) == 0)
                    addr_set_port(&cl->addr, addr_port(&got));
            }
            struct listener *l = &srv.reactors[i].listeners[j];
            l->fd = fd;
            l->role = cl->role;
            l->reactor = &srv.reactors[i];
        }
    }

    /* The control sockets, then the switch to [server] user: the reactors
     * open the spool as that user. */
    if (priv_prepare_spool(cfg->spool, &priv, err, sizeof(err)) < 0 ||
        start_control(&srv, &priv, err, sizeof(err)) < 0 ||
        priv_drop(&priv, err, sizeof(err)) < 0) {
        fprintf(stderr, "ortoo: %s\n", err);
        control_free(srv.ctl);
        return 1;
    }

    for (unsigned i = 0; i < srv.nreactors; i++) {
        if (pthread_create(&srv.reactors[i].thread, NULL, reactor_main, &srv.reactors[i]) != 0)
            fatal("pthread_create");
    }
    pthread_mutex_lock(&srv.lock);
    while (srv.nready < srv.nreactors)
        pthread_cond_wait(&srv.cond, &srv.lock);
    pthread_mutex_unlock(&srv.lock);
    if (srv.start_error < 0) {
        fprintf(stderr, "ortoo: %s\n", srv.start_msg);
        _exit(1); /* other reactors may be running: no orderly teardown */
    }
    /* Local submission: the maildrop is ready before the server says so. */
    srv.rctx = calloc(srv.nreactors, sizeof(*srv.rctx));
    if (srv.rctx == NULL)
        fatal("calloc");
    for (unsigned i = 0; i < srv.nreactors; i++)
        srv.rctx[i] = &srv.reactors[i].ctx;
    stats_attach(srv.stats, srv.rctx, srv.nreactors,
                 io_backend_name(io_loop_backend(srv.reactors[0].ctx.loop)));
    srv.md = maildrop_start(srv.ctl, cfg, srv.rctx, srv.nreactors, err, sizeof(err));
    if (srv.md == NULL) /* local submission off; SMTP still works */
        log_warnx("event=maildrop-disabled err=\"%s\"", err);
    /* Queue commands on the control socket, run by every reactor's scheduler. */
    {
        struct io_loop **loops = calloc(srv.nreactors, sizeof(*loops));
        struct sched **scheds = calloc(srv.nreactors, sizeof(*scheds));
        if (loops == NULL || scheds == NULL)
            fatal("calloc");
        for (unsigned i = 0; i < srv.nreactors; i++) {
            loops[i] = srv.reactors[i].ctx.loop;
            scheds[i] = srv.reactors[i].sched;
        }
        srv.qctl = queue_ctl_new(srv.ctl, srv.nreactors, loops, scheds);
        if (srv.qctl == NULL)
            log_warn("event=queue-commands-disabled");
        free(loops);
        free(scheds);
    }
    for (size_t j = 0; j < cfg->nlistens; j++) {
        char text[80];
        addr_text(&cfg->listens[j].addr, text, sizeof(text));
        log_info("event=listening role=%s addr=%s reactors=%u", config_role_name(cfg->listens[j].role),
                 text, srv.nreactors);
    }
    if (srv.metrics != NULL)
        log_info("event=listening role=metrics addr=%s path=/metrics%s",
                 metrics_http_addr(srv.metrics),
                 metrics_http_loopback(srv.metrics) ? "" : " exposed=yes (not loopback)");
    log_info("event=ready hostname=%s reactors=%u io=%s tls=%s spool=%s dkim_keys=%zu", cfg->hostname,
             srv.nreactors, io_backend_name(io_loop_backend(srv.reactors[0].ctx.loop)),
             srv.tls ? "on" : "off", cfg->spool, dkim_keys_count(srv.dkim));
    char pidpath[4096];
    snprintf(pidpath, sizeof(pidpath), "%s/%s", cfg->spool, SERVER_PID_FILE);
    write_pid_file(pidpath);
    if (cfg->srs.nsecrets == 0)
        log_warnx("event=srs-off (no SRS secret: mail forwarded to other domains would keep "
                  "its sender and fail SPF there; `ortoo init` makes srs.key)");
    uint64_t reload_at = 0; /* CLOCK_MONOTONIC ms of a pending domains/ reload, 0: none */
    notify_systemd("READY=1");

    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    if (tfd >= 0 && cfg->ticket_rotate > 0) {
        struct itimerspec its = {.it_interval = {.tv_sec = cfg->ticket_rotate},
                                 .it_value = {.tv_sec = cfg->ticket_rotate}};
        timerfd_settime(tfd, 0, &its, NULL);
    }
    int status = 0;
    for (;;) {
        /* Signals, the ticket timer, the domains/ watch, then the control
         * socket's fds (a negative fd, a timer that could not be made, is
         * skipped). */
        struct pollfd pfd[3 + CONTROL_MAX_POLLFDS] = {
            {.fd = sfd, .events = POLLIN},
            {.fd = tfd, .events = POLLIN},
            {.fd = watch ? watch_fd(watch) : -1, .events = POLLIN}};
        size_t nctl = control_pollfds(srv.ctl, pfd + 3, CONTROL_MAX_POLLFDS);
        int wait_ms = control_timeout(srv.ctl);
        if (reload_at != 0) {
            uint64_t now = now_ms();
            int w = now >= reload_at ? 0 : (int)(reload_at - now);
            if (wait_ms < 0 || w < wait_ms)
                wait_ms = w;
        }
        if (poll(pfd, 3 + nctl, wait_ms) < 0) {
            if (errno == EINTR)
                continue;
            fatal("poll");
        }
        control_dispatch(srv.ctl, pfd + 3, nctl);
        if (watch != NULL && (pfd[2].revents & POLLIN) && watch_read(watch))
            reload_at = now_ms() + SERVER_WATCH_QUIET_MS;
        if (reload_at != 0 && now_ms() >= reload_at) {
            reload_at = 0;
            server_reload(&srv, NULL);
        }
        if (tfd >= 0 && (pfd[1].revents & POLLIN)) {
            uint64_t n;
            if (read(tfd, &n, sizeof(n)) > 0 && srv.tls != NULL)
                tls_server_rotate_tickets(srv.tls);
        }
        if (!(pfd[0].revents & POLLIN))
            continue;
        struct signalfd_siginfo si;
        if (read(sfd, &si, sizeof(si)) != sizeof(si))
            continue;
        if (si.ssi_signo == SIGHUP) {
            server_reload(&srv, NULL);
            continue;
        }
        if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
            log_info("event=stopping signal=%s", si.ssi_signo == SIGTERM ? "TERM" : "INT");
            srv.stopping = true;
            notify_systemd("STOPPING=1");
            break;
        }
    }
    /* The figures first: a gathering round needs the reactors. */
    metrics_http_free(srv.metrics);
    stats_free(srv.stats, 2000);
    /* Local submissions in flight get their commit first (the reactors must
     * still run for that); the files of the others stay in the maildrop. */
    maildrop_stop(srv.md, 5000);
    /* Graceful: each reactor stops accepting, says 421 to its sessions and
     * stops its loop when they are gone; after 5 s we stop regardless. */
    for (unsigned i = 0; i < srv.nreactors; i++)
        if (io_loop_post(srv.reactors[i].ctx.loop, reactor_shutdown, &srv.reactors[i]) < 0)
            io_loop_stop(srv.reactors[i].ctx.loop);
    bool forced = false;
    for (unsigned i = 0; i < srv.nreactors; i++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 5;
        if (pthread_timedjoin_np(srv.reactors[i].thread, NULL, &ts) != 0) {
            forced = true;
            break;
        }
    }
    if (forced) {
        /* A client that does not read its 421 keeps a session alive.  What
         * was acknowledged is on disk: leave without the orderly teardown. */
        log_warnx("event=stopped forced=1 (sessions did not drain within 5 s)");
        unlink(pidpath);
        fflush(stderr);
        _exit(0);
    }
    for (unsigned i = 0; i < srv.nreactors; i++) {
        struct reactor *re = &srv.reactors[i];
        if (re->ctx.spool != NULL)
            spool_shard_close(re->ctx.spool);
        sched_free(re->sched);
        for (size_t j = 0; j < re->nlisteners; j++)
            close(re->listeners[j].fd);
        if (re->ctx.tls != NULL)
            tls_server_free(re->ctx.tls);
        dkim_keys_free(re->ctx.dkim);
        free(re->listeners);
        checks_reactor_free(re->ctx.checks);
        res_ctx_free(re->ctx.res);
        io_loop_free(re->ctx.loop);
    }
    free(srv.reactors);
    local_free(srv.local);
    auth_free(srv.auth);
    if (srv.tls != NULL)
        tls_server_free(srv.tls);
    users_free(srv.users);
    dkim_keys_free(srv.dkim);
    psl_free(srv.psl);
    for (size_t i = 0; i < srv.nold_users; i++)
        users_free(srv.old_users[i]);
    free(srv.old_users);
    control_run_posted(srv.ctl); /* reload answers the reactors posted before they stopped */
    control_free(srv.ctl);
    queue_ctl_free(srv.qctl);
    free(srv.rctx);
    for (size_t i = 0; i < srv.nold_cfgs; i++)
        config_free(srv.old_cfgs[i]);
    free(srv.old_cfgs);
    limits_free(srv.limits);
    config_free(srv.cfg);
    if (tfd >= 0)
        close(tfd);
    watch_free(watch);
    close(sfd);
    unlink(pidpath); /* ours: we hold the spool's lock (spool_lock) */
    close(lock_fd);
    log_info("event=stopped");
    return status;
}
