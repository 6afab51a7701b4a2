/* SPDX-License-Identifier: MIT */
/*
 * maildrop.c - the daemon's pickup of the drop files sendmail writes (see
 * maildrop.h for the directory's permissions and why; the file format is in
 * maildrop_format.c).
 *
 * The pickup runs on the main thread, next to the control socket: it reads a
 * file (blocking file I/O is fine there, never on a reactor), checks it, and
 * posts the message to a reactor, whose loop hands it to its spool shard
 * (md_on_reactor: the one place that calls spool_submit for local
 * submission).  The commit's callback comes back to the main thread through
 * control_post, which deletes the file (and syncs the directory) only now
 * that the message is durable, and answers the sendmail client waiting on
 * `pickup NAME`.  A crash between the commit and the unlink queues the
 * message twice at the next start: at least once, never lost.
 */
#include "core/maildrop.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "core/config.h"
#include "core/control.h"
#include "io/maillog.h"
#include "io/metrics.h"
#include "core/smtp_session.h"
#include "io/log.h"
#include "io/loop.h"
#include "spool/spool.h"

#define MD_INFLIGHT_BYTES (64u << 20)  /* a scan stops taking files past this */
#define MD_DONE_RING 64                /* recently queued names, for late `pickup NAME` */
#define MD_HEADER_SLACK 4096

/* ---- the daemon's pickup ---- */

/*
 * One message on its way from a drop file into a spool shard.  Owned by the
 * main thread except between the post to the reactor and the post back,
 * when the reactor owns it.  buf holds the file; msg, env and iov point
 * into it.
 */
struct md_job {
    struct maildrop *md;
    struct md_job *next;                 /* in flight list (main thread) */
    char name[MAILDROP_NAME_LEN + 1];
    uid_t uid;                           /* the submitter (file owner) */
    char user[64];                       /* its name, or the number */
    char *buf;
    size_t len;
    struct maildrop_msg msg;
    char *received;                      /* our Received: field (owned) */
    struct spool_envelope env;
    struct iovec iov;
    struct spool_commit commit;
    struct control_task task;
    struct smtp_reactor *r;
    int res;                             /* the commit's result */
    struct control_req *waiter;          /* a `pickup NAME` waiting, or NULL */
};

struct md_done {
    char name[MAILDROP_NAME_LEN + 1];
    char id[SPOOL_ID_LEN + 1];
};

struct maildrop {
    struct control *ctl;
    const struct config *cfg;
    struct smtp_reactor *const *reactors;
    size_t nreactors, next_reactor;
    char dir[PATH_MAX];
    char quarantine[PATH_MAX];
    int dirfd;
    int tfd;                             /* periodic scan timer */
    struct md_job *inflight;
    size_t ninflight;
    uint64_t inflight_bytes;
    bool stopping;
    struct md_done done[MD_DONE_RING];   /* recently queued */
    size_t done_pos;
};

static void md_job_free(struct md_job *job)
{
    free(job->msg.rcpts);
    free(job->received);
    free(job->buf);
    free(job);
}

/* Move a bad file out of the way (never delete what someone submitted). */
static void md_quarantine(struct maildrop *md, const char *name, uid_t uid, const char *why)
{
    char to[PATH_MAX + 64];
    metrics_inc(METRICS_MAILDROP_REJECTED);
    if (mkdir(md->quarantine, 0700) < 0 && errno != EEXIST)
        log_warn("event=maildrop-quarantine-failed path=%s", md->quarantine);
    snprintf(to, sizeof(to), "%s/maildrop-%s", md->quarantine, name);
    if (renameat(md->dirfd, name, AT_FDCWD, to) < 0) {
        log_warn("event=maildrop-quarantine-failed file=%s", name);
        return;
    }
    log_warnx("event=maildrop-rejected file=%s uid=%ld reason=\"%s\" moved_to=%s", name,
              (long)uid, why, to);
}

static void md_on_done(void *arg);

/* Runs on the reactor: the one call into the spool for local submission. */
static void md_on_commit(struct spool_commit *c, int res)
{
    struct md_job *job = c->owner;
    job->res = res;
    control_post(job->md->ctl, &job->task, md_on_done, job);
}

static void md_on_reactor(void *arg)
{
    struct md_job *job = arg;
    job->commit.cb = md_on_commit;
    job->commit.owner = job;
    int rc = spool_submit(job->r->spool, &job->commit, &job->env, &job->iov,
                          job->iov.iov_len ? 1 : 0);
    if (rc < 0) {
        job->res = rc;
        control_post(job->md->ctl, &job->task, md_on_done, job);
    }
}

/* Back on the main thread with the commit's result. */
static void md_on_done(void *arg)
{
    struct md_job *job = arg;
    struct maildrop *md = job->md;

    for (struct md_job **p = &md->inflight; *p != NULL; p = &(*p)->next) {
        if (*p == job) {
            *p = job->next;
            break;
        }
    }
    md->ninflight--;
    md->inflight_bytes -= job->len;
    if (job->res == 0) {
        /* Durable in the spool: now the drop file may go. */
        if (unlinkat(md->dirfd, job->name, 0) < 0)
            log_warn("event=maildrop-unlink-failed file=%s msgid=%s", job->name, job->commit.id);
        else if (fsync(md->dirfd) < 0)
            log_warn("event=maildrop-sync-failed");
        metrics_inc(METRICS_MAILDROP_QUEUED);
        maillog_queued(job->commit.id, "maildrop", "local", job->msg.sender, job->msg.nrcpts,
                       job->msg.size, job->user);
        struct md_done *d = &md->done[md->done_pos++ % MD_DONE_RING];
        memcpy(d->name, job->name, sizeof(d->name));
        memcpy(d->id, job->commit.id, sizeof(d->id));
        if (job->waiter != NULL)
            control_done(job->waiter, true, "queued as %s", job->commit.id);
    } else {
        metrics_inc(METRICS_MAILDROP_FAILED);
        log_warnx("event=maildrop-spool-failed file=%s err=\"%s\" (left in the maildrop; "
                  "retried at the next scan)",
                  job->name, strerror(-job->res));
        if (job->waiter != NULL)
            control_done(job->waiter, false,
                         "the spool could not store the message (%s); it stays in the "
                         "maildrop and will be retried",
                         strerror(-job->res));
    }
    md_job_free(job);
}

static bool md_inflight(struct maildrop *md, const char *name, struct md_job **out)
{
    for (struct md_job *j = md->inflight; j != NULL; j = j->next) {
        if (strcmp(j->name, name) == 0) {
            if (out != NULL)
                *out = j;
            return true;
        }
    }
    return false;
}

/* The Received: field of a locally submitted message (RFC 5321 4.4). */
static char *md_received(const struct config *cfg, const char *name, const char *user, uid_t uid)
{
    char date[64], *hdr = NULL;
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
    if (asprintf(&hdr, "Received: by %s (ortoo, from userid %ld %s)\r\n\tid %s; %s\r\n",
                 cfg->hostname, (long)uid, user, name, date) < 0)
        return NULL;
    return hdr;
}

/*
 * Take one drop file: read, check, post to a reactor.  waiter (may be NULL)
 * gets the answer when the commit is done.  Returns 0 (in flight), -ENOENT,
 * -EAGAIN (incomplete, left for later), -EINVAL (quarantined: reason in
 * why), or another -errno.
 */
static int md_take(struct maildrop *md, const char *name, struct control_req *waiter, char *why,
                   size_t whylen)
{
    const struct config *cfg = md->cfg;
    struct stat st;
    int rc;

    snprintf(why, whylen, "error");
    int fd = openat(md->dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        if (rc == -ENOENT)
            return rc;
        /* A symlink (ELOOP), a file we may not read: neither is a drop file. */
        uid_t owner = (uid_t)-1;
        if (fstatat(md->dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
            owner = st.st_uid;
        snprintf(why, whylen, "cannot open: %s", strerror(-rc));
        md_quarantine(md, name, owner, why);
        return -EINVAL;
    }
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    uint64_t limit = cfg->max_message_size + MD_HEADER_SLACK +
                     (uint64_t)cfg->max_recipients * (MAILDROP_ADDR_MAX + 8);
    if (!S_ISREG(st.st_mode) || st.st_nlink != 1 || (uint64_t)st.st_size > limit) {
        close(fd);
        snprintf(why, whylen, "%s", !S_ISREG(st.st_mode) ? "not a regular file"
                                    : st.st_nlink != 1   ? "has other hard links"
                                                         : "too large");
        md_quarantine(md, name, st.st_uid, why);
        return -EINVAL;
    }
    struct md_job *job = calloc(1, sizeof(*job));
    if (job == NULL || (job->buf = malloc((size_t)st.st_size + 1)) == NULL) {
        free(job);
        close(fd);
        return -ENOMEM;
    }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, job->buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    job->len = got;
    job->md = md;
    job->uid = st.st_uid;
    memcpy(job->name, name, MAILDROP_NAME_LEN + 1);
    char err[256];
    rc = maildrop_parse(job->buf, job->len, cfg->max_message_size, cfg->max_recipients,
                        &job->msg, err, sizeof(err));
    if (rc == 1) {
        md_job_free(job);
        if (time(NULL) - st.st_mtime > MAILDROP_STALE_S) {
            snprintf(why, whylen, "incomplete for more than %d s", MAILDROP_STALE_S);
            md_quarantine(md, name, st.st_uid, why);
            return -EINVAL;
        }
        snprintf(why, whylen, "the file is incomplete");
        return -EAGAIN;
    }
    if (rc < 0) {
        md_job_free(job);
        snprintf(why, whylen, "%s", err);
        md_quarantine(md, name, st.st_uid, why);
        return -EINVAL;
    }
    struct passwd *pw = getpwuid(job->uid);
    if (pw != NULL)
        snprintf(job->user, sizeof(job->user), "%s", pw->pw_name);
    else
        snprintf(job->user, sizeof(job->user), "%ld", (long)job->uid);
    job->received = md_received(cfg, name, job->user, job->uid);
    if (job->received == NULL) {
        md_job_free(job);
        return -ENOMEM;
    }
    job->env = (struct spool_envelope){
        .sender = job->msg.sender,
        .rcpts = job->msg.rcpts,
        .nrcpts = job->msg.nrcpts,
        .helo = "",
        .client_addr = "local",
        .auth_user = NULL,
        .headers = job->received,
        .flags = (job->msg.has_8bit ? SPOOL_F_8BITMIME : 0) |
                 (job->msg.has_utf8_addr ? SPOOL_F_SMTPUTF8 : 0),
        .received_at = (int64_t)time(NULL),
    };
    job->iov = (struct iovec){.iov_base = (void *)job->msg.data, .iov_len = job->msg.size};
    job->waiter = waiter;
    job->r = md->reactors[md->next_reactor++ % md->nreactors];
    job->next = md->inflight;
    md->inflight = job;
    md->ninflight++;
    md->inflight_bytes += job->len;
    rc = io_loop_post(job->r->loop, md_on_reactor, job);
    if (rc < 0) {
        md->inflight = job->next;
        md->ninflight--;
        md->inflight_bytes -= job->len;
        md_job_free(job);
        return rc;
    }
    return 0;
}

/* Take every complete file not yet in flight (bounded by MD_INFLIGHT_BYTES;
 * the rest waits for the next scan). */
static void md_scan(struct maildrop *md)
{
    if (md->stopping)
        return;
    int fd = dup(md->dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (d == NULL) {
        if (fd >= 0)
            close(fd);
        log_warn("event=maildrop-scan-failed path=%s", md->dir);
        return;
    }
    rewinddir(d);
    struct dirent *de;
    char why[256];
    while ((de = readdir(d)) != NULL && md->inflight_bytes < MD_INFLIGHT_BYTES) {
        if (de->d_name[0] == '.')
            continue;
        if (!maildrop_name_valid(de->d_name)) {
            md_quarantine(md, de->d_name, (uid_t)-1, "not a maildrop file name");
            continue;
        }
        if (md_inflight(md, de->d_name, NULL))
            continue;
        int rc = md_take(md, de->d_name, NULL, why, sizeof(why));
        if (rc < 0 && rc != -EAGAIN && rc != -EINVAL && rc != -ENOENT)
            log_warnx("event=maildrop-pickup-failed file=%s err=\"%s\"", de->d_name,
                      strerror(-rc));
    }
    closedir(d);
}

static void md_on_timer(int fd, short revents, void *arg)
{
    uint64_t n;
    (void)!read(fd, &n, sizeof(n));
    md_scan(arg);
}

/* `pickup [NAME]` (public): take NAME now and answer when it is queued;
 * without NAME, scan the directory. */
static void cmd_pickup(struct control_req *req, int argc, char **argv, void *arg)
{
    struct maildrop *md = arg;
    char why[256];

    if (md->stopping) {
        control_done(req, false, "shutting down; the file stays in the maildrop");
        return;
    }
    if (argc == 1) {
        md_scan(md);
        control_done(req, true, "scanned; %zu in flight", md->ninflight);
        return;
    }
    if (argc != 2 || !maildrop_name_valid(argv[1])) {
        control_done(req, false, "usage: pickup [NAME]");
        return;
    }
    struct md_job *job;
    if (md_inflight(md, argv[1], &job)) {
        if (job->waiter == NULL)
            job->waiter = req;
        else
            control_done(req, true, "in progress");
        return;
    }
    for (size_t i = 0; i < MD_DONE_RING; i++) {
        if (strcmp(md->done[i].name, argv[1]) == 0) {
            control_done(req, true, "queued as %s", md->done[i].id);
            return;
        }
    }
    int rc = md_take(md, argv[1], req, why, sizeof(why));
    if (rc == 0)
        return; /* answered when committed */
    if (rc == -ENOENT)
        control_done(req, false, "no such file in the maildrop");
    else if (rc == -EINVAL)
        control_done(req, false, "rejected: %s (moved to the quarantine)", why);
    else if (rc == -EAGAIN)
        control_done(req, false, "%s", why);
    else
        control_done(req, false, "cannot take the file: %s", strerror(-rc));
}

struct maildrop *maildrop_start(struct control *ctl, const struct config *cfg,
                                struct smtp_reactor *const *reactors, size_t nreactors,
                                char *err, size_t errlen)
{
    struct maildrop *md = calloc(1, sizeof(*md));
    struct stat st;

    if (md == NULL || nreactors == 0) {
        snprintf(err, errlen, "maildrop: out of memory");
        free(md);
        return NULL;
    }
    md->ctl = ctl;
    md->cfg = cfg;
    md->reactors = reactors;
    md->nreactors = nreactors;
    md->dirfd = md->tfd = -1;
    snprintf(md->dir, sizeof(md->dir), "%s/%s", cfg->spool, MAILDROP_DIR_NAME);
    snprintf(md->quarantine, sizeof(md->quarantine), "%s/quarantine", cfg->spool);
    if (mkdir(md->dir, 0700) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", md->dir, strerror(errno));
        goto fail;
    }
    if (lstat(md->dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "%s is not a directory", md->dir);
        goto fail;
    }
    if ((st.st_mode & 07777) != MAILDROP_DIR_MODE && chmod(md->dir, MAILDROP_DIR_MODE) < 0) {
        /* systemd's RestrictSUIDSGID refuses the set-group-ID bit: the
         * installed tmpfiles.d entry makes the directory instead. */
        log_warnx("event=maildrop-mode path=%s mode=%04o err=\"%s\" (want %04o: create it as "
                  "root with: install -d -m %04o -o %ld -g %ld %s)",
                  md->dir, (unsigned)(st.st_mode & 07777), strerror(errno), MAILDROP_DIR_MODE,
                  MAILDROP_DIR_MODE, (long)geteuid(), (long)getegid(), md->dir);
    }
    /* Others need to pass through the spool to reach the maildrop. */
    if (stat(cfg->spool, &st) == 0 && !(st.st_mode & S_IXOTH) &&
        chmod(cfg->spool, (st.st_mode & 07777) | S_IXOTH) == 0)
        log_info("event=spool-mode path=%s (added search permission for others: local "
                 "submission)",
                 cfg->spool);
    md->dirfd = open(md->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (md->dirfd < 0) {
        snprintf(err, errlen, "%s: %s", md->dir, strerror(errno));
        goto fail;
    }
    int rc = control_register(ctl, "pickup", CONTROL_PUBLIC,
                              "queue a file of the maildrop now: pickup [NAME]", cmd_pickup, md);
    if (rc < 0) {
        snprintf(err, errlen, "maildrop: cannot register pickup: %s", strerror(-rc));
        goto fail;
    }
    md->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (md->tfd >= 0) {
        struct itimerspec its = {
            .it_interval = {.tv_sec = MAILDROP_SCAN_MS / 1000,
                            .tv_nsec = (MAILDROP_SCAN_MS % 1000) * 1000000L},
            .it_value = {.tv_sec = MAILDROP_SCAN_MS / 1000,
                         .tv_nsec = (MAILDROP_SCAN_MS % 1000) * 1000000L}};
        timerfd_settime(md->tfd, 0, &its, NULL);
        if (control_watch(ctl, md->tfd, POLLIN, md_on_timer, md) < 0)
            log_warnx("event=maildrop-no-timer (picked up only at start and on request)");
    }
    md_scan(md);
    return md;
fail:
    if (md->dirfd >= 0)
        close(md->dirfd);
    free(md);
    return NULL;
}

void maildrop_set_config(struct maildrop *md, const struct config *cfg)
{
    md->cfg = cfg;
}

void maildrop_stop(struct maildrop *md, int timeout_ms)
{
    if (md == NULL)
        return;
    md->stopping = true;
    if (md->tfd >= 0)
        control_unwatch(md->ctl, md->tfd);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (md->ninflight > 0) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        long left = timeout_ms - ((t.tv_sec - t0.tv_sec) * 1000 +
                                  (t.tv_nsec - t0.tv_nsec) / 1000000);
        if (left <= 0)
            break;
        control_wait_posted(md->ctl, (int)left);
    }
    if (md->ninflight > 0) {
        /* The reactors may still hold them: leave them be (the files stay
         * in the maildrop and are queued at the next start). */
        log_warnx("event=maildrop-stop-timeout inflight=%zu", md->ninflight);
    }
    if (md->tfd >= 0)
        close(md->tfd);
    close(md->dirfd);
    if (md->ninflight == 0)
        free(md);
}
