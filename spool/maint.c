/* SPDX-License-Identifier: MIT */
/*
 * maint.c - the shard's file maintenance, kept off the hot path: a helper
 * thread for every blocking file operation, segment rotation, reaping,
 * checkpoints (snapshot + fresh journal) and compaction.
 *
 * The helper thread.  Creating a file (and fsyncing its directory so the
 * name is durable), unlinking, truncating and writing a snapshot block; the
 * reactor never waits for them.  Each is a job: queued under a mutex, run by
 * the one helper thread of the shard, its result posted back to the loop
 * (io_loop_post).  A job owns what it needs (a dup of the directory's fd, a
 * dup of a file's fd, the snapshot bytes), so nothing it touches can go away
 * under it; its result reaches the shard through a small refcounted mailbox
 * that spool_shard_close orphans, so a result arriving after the close only
 * frees itself.
 *
 * Rotation.  Each directory keeps a spare segment file made ahead by the
 * helper (created with O_EXCL, directory fsynced); rotating is a swap.  If
 * the spare is not ready the current segment keeps growing for a while,
 * except after a write error, when the appender holds its batches until the
 * spare comes.  A current segment that holds nothing live and has grown past
 * SPOOL_ROTATE_IDLE is rotated away so that it can be deleted: disk use
 * follows live mail even when every message was delivered.
 *
 * Checkpoint.  When the journal and the last snapshot together exceed twice
 * the size a new snapshot would have by checkpoint_bytes (so the cost per
 * entry stays constant, and a snapshot grown stale as the queue emptied is
 * replaced):
 *   1. the helper creates journal-<G+1> and fsyncs the directory;
 *   2. on the loop, new entries switch to it (the old journal drains its
 *      batches), and the live state is serialized at that instant, with the
 *      walk point (current segment, its durable end): records at or after it
 *      were not indexed yet and are found by walking the segments;
 *   3. the helper writes snapshot.tmp, fdatasyncs it, renames it to
 *      snapshot, fsyncs the directory and unlinks the journals before G+1.
 * A crash at any point leaves either the old snapshot with every journal it
 * needs, or the new one (recovery deletes what a crash left behind).
 *
 * Compaction.  A segment that is not being written, older than
 * compact_min_age and with less than compact_live_pct of its bytes live is
 * mapped and its live records are copied, unchanged, to the directory's
 * current segment, at most compact_turn_bytes per loop turn, through the
 * ordinary group commit.  When a copy is durable the message points at it;
 * when the old segment holds nothing live it is deleted.  A message with an
 * open view is not moved.  Recovery finds a copy after the walk point and
 * prefers it (load.c), so a snapshot naming the old place stays correct
 * after that place is gone.  No checkpoint starts while a copy is queued or
 * being written: a copy of a message that died before the snapshot must not
 * land after its walk point, where recovery would take it for new mail.
 */
#include "spool/shard.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/log.h"

#define SPOOL_ROTATE_IDLE (1u << 20) /* rotate a dead current segment past this */
#define SPOOL_RETRY_S 10             /* after a failed checkpoint or copy */

/* Bits of appender.hold. */
#define HOLD_TRUNC 0x1  /* a truncate after a failed batch is running */
#define HOLD_ROTATE 0x2 /* the segment must be left before the next write */

/*
 * Test seam: called at each step of writing a snapshot (helper thread, or
 * the loop thread at start-up) with the CK_STEP_* just completed; tests kill
 * the process there.
 */
void (*spool_ckpt_hook)(int step);

/*
 * Test seam: called on the loop thread when compaction queues the copy of
 * message id (its record is "moving" until the copy's write completes), so
 * that a test can act while a copy is in flight without polling for it.
 */
void (*spool_compact_hook)(const char *id);
enum { CK_STEP_TMP_WRITTEN = 1, CK_STEP_TMP_SYNCED, CK_STEP_RENAMED, CK_STEP_DIR_SYNCED,
       CK_STEP_JOURNALS_GONE };

/* Checkpoint steps (sdir.ckpt). */
enum { CK_NONE = 0, CK_NEWJ, CK_WRITE };

/* Where a job's result goes: the shard, or NULL once it was closed. */
struct mbox {
    struct spool_shard *sh;
    unsigned refs;          /* jobs not yet back on the loop, + 1 for the shard */
};

enum jkind { J_SPARE = 1, J_UNLINK, J_TRUNCATE, J_JOURNAL, J_SNAPSHOT };

struct mjob {
    enum jkind kind;
    struct mbox *mb;
    struct io_loop *loop;
    int dirfd;              /* dup of the directory's fd (owned) */
    unsigned k;             /* the directory */
    int slot;               /* J_TRUNCATE: -1 the segment, 0/1 a journal */
    char name[48];
    int fd;                 /* J_TRUNCATE: dup (owned); SPARE, JOURNAL: result */
    uint64_t off, gen;
    uint8_t *buf;           /* J_SNAPSHOT: the bytes (owned) */
    size_t len;
    int res;
    struct mjob *next;
};

struct spool_maint {
    struct spool_shard *sh;
    struct mbox *mb;
    pthread_t thr;
    bool started;
    pthread_mutex_t mu;     /* guards head, tail, quit */
    pthread_cond_t cv;
    struct mjob *head, *tail;
    bool quit;
    unsigned inflight;      /* jobs queued, running or posted back */
    struct segcnt *csc;     /* segment being compacted, or NULL */
    unsigned copies;        /* its copies in flight */
    bool cabort;            /* a copy failed: stop with this one */
    int64_t next_check;     /* unix time of the next look for work */
};

/* ------------------------------------------------------------ the helper */

/* Write len bytes fully at offset 0; 0 or -errno. */
static int write_all(int fd, const uint8_t *p, size_t len)
{
    size_t done = 0;

    while (done < len) {
        ssize_t n = pwrite(fd, p + done, len - done, (off_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        done += (size_t)n;
    }
    return 0;
}

static void hook(int step)
{
    if (spool_ckpt_hook)
        spool_ckpt_hook(step);
}

/* Unlink the journals of dirfd older than generation gen. */
static void journals_drop(int dirfd, uint64_t gen)
{
    DIR *d = fdopendir(dup(dirfd));
    struct dirent *de;

    if (!d)
        return;
    rewinddir(d); /* the dup shares its offset with every other reader */
    while ((de = readdir(d))) {
        char *end;
        if (strcmp(de->d_name, "journal") == 0) {
            unlinkat(dirfd, de->d_name, 0);
        } else if (strncmp(de->d_name, "journal-", 8) == 0) {
            unsigned long long g = strtoull(de->d_name + 8, &end, 10);
            if (!*end && g < gen)
                unlinkat(dirfd, de->d_name, 0);
        }
    }
    closedir(d);
}

/*
 * Write a snapshot into dirfd: snapshot.tmp, fdatasync, rename over
 * snapshot, fsync the directory, drop the journals it replaces.  Blocks.
 */
static int snap_write(int dirfd, const uint8_t *buf, size_t len, uint64_t gen)
{
    int fd = openat(dirfd, "snapshot.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    int r;

    if (fd < 0)
        return -errno;
    r = write_all(fd, buf, len);
    hook(CK_STEP_TMP_WRITTEN);
    if (r == 0 && fdatasync(fd) < 0)
        r = -errno;
    close(fd);
    if (r < 0)
        return r;
    hook(CK_STEP_TMP_SYNCED);
    if (renameat(dirfd, "snapshot.tmp", dirfd, "snapshot") < 0)
        return -errno;
    hook(CK_STEP_RENAMED);
    if (fsync(dirfd) < 0)
        return -errno;
    hook(CK_STEP_DIR_SYNCED);
    journals_drop(dirfd, gen);
    hook(CK_STEP_JOURNALS_GONE);
    return 0;
}

/* Create file name in dirfd (O_EXCL) and make its name durable. */
static int file_create(int dirfd, const char *name, int *out)
{
    int fd = openat(dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);

    if (fd < 0)
        return -errno;
    if (fsync(dirfd) < 0) {
        int r = -errno;
        close(fd);
        unlinkat(dirfd, name, 0);
        return r;
    }
    *out = fd;
    return 0;
}

static void job_run(struct mjob *j)
{
    switch (j->kind) {
    case J_SPARE:
    case J_JOURNAL:
        j->res = file_create(j->dirfd, j->name, &j->fd);
        break;
    case J_UNLINK:
        j->res = unlinkat(j->dirfd, j->name, 0) < 0 && errno != ENOENT ? -errno : 0;
        break;
    case J_TRUNCATE:
        j->res = ftruncate(j->fd, (off_t)j->off) < 0 ? -errno : 0;
        break;
    case J_SNAPSHOT:
        j->res = snap_write(j->dirfd, j->buf, j->len, j->gen);
        break;
    }
}

static void job_back(void *arg);

static void *helper_main(void *arg)
{
    struct spool_maint *mt = arg;
    sigset_t all;

    /* Signals belong to the main thread (signalfd there). */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    pthread_mutex_lock(&mt->mu);
    for (;;) {
        while (!mt->head && !mt->quit)
            pthread_cond_wait(&mt->cv, &mt->mu);
        if (mt->quit)
            break;
        struct mjob *j = mt->head;
        mt->head = j->next;
        if (!mt->head)
            mt->tail = NULL;
        pthread_mutex_unlock(&mt->mu);
        job_run(j);
        while (io_loop_post(j->loop, job_back, j) < 0)
            usleep(1000); /* out of memory: the result must get back */
        pthread_mutex_lock(&mt->mu);
    }
    pthread_mutex_unlock(&mt->mu);
    return NULL;
}

static struct mjob *job_new(struct sdir *d, enum jkind kind)
{
    struct mjob *j = calloc(1, sizeof *j);

    if (!j)
        return NULL;
    j->dirfd = dup(d->dirfd);
    if (j->dirfd < 0) {
        free(j);
        return NULL;
    }
    j->kind = kind;
    j->k = d->k;
    j->fd = -1;
    j->slot = -1;
    return j;
}

static void job_free(struct mjob *j)
{
    if (j->fd >= 0)
        close(j->fd);
    if (j->dirfd >= 0)
        close(j->dirfd);
    free(j->buf);
    free(j);
}

/* Hand j to the helper thread. */
static void job_submit(struct spool_shard *sh, struct mjob *j)
{
    struct spool_maint *mt = sh->mt;

    j->mb = mt->mb;
    j->loop = sh->loop;
    mt->mb->refs++;
    mt->inflight++;
    pthread_mutex_lock(&mt->mu);
    j->next = NULL;
    if (mt->tail)
        mt->tail->next = j;
    else
        mt->head = j;
    mt->tail = j;
    pthread_cond_signal(&mt->cv);
    pthread_mutex_unlock(&mt->mu);
}

static struct sdir *dir_of(struct spool_shard *sh, unsigned k)
{
    for (size_t i = 0; i < sh->ndirs; i++)
        if (sh->dirs[i]->k == k)
            return sh->dirs[i];
    return NULL;
}

static void spare_request(struct sdir *d);
static void ckpt_newj_done(struct sdir *d, struct mjob *j);
static void ckpt_write_done(struct sdir *d, struct mjob *j);

static void appender_release(struct appender *a, uint8_t bit)
{
    a->hold &= (uint8_t)~bit;
    if (!a->hold && !a->fly && a->open->nent && a->fd >= 0)
        batch_start(a);
}

/* A job's result, on the loop thread. */
static void job_back(void *arg)
{
    struct mjob *j = arg;
    struct mbox *mb = j->mb;
    struct spool_shard *sh = mb->sh;
    struct sdir *d = sh ? dir_of(sh, j->k) : NULL;

    if (sh)
        sh->mt->inflight--;
    if (d) {
        switch (j->kind) {
        case J_SPARE:
            d->spare_busy = false;
            if (j->res < 0) {
                log_warnx("spool: shard=%u create %s: %s (retried)", d->k, j->name,
                          strerror(-j->res));
                break;
            }
            d->spare_fd = j->fd;
            j->fd = -1;
            if (d->seg.hold & HOLD_ROTATE) {
                maint_rotate(d);
                appender_release(&d->seg, HOLD_ROTATE);
            }
            break;
        case J_UNLINK:
            if (j->res < 0)
                log_warnx("spool: shard=%u unlink %s: %s", d->k, j->name, strerror(-j->res));
            else
                log_debug("spool: shard=%u removed %s", d->k, j->name);
            break;
        case J_TRUNCATE:
            if (j->res < 0)
                log_warnx("spool: shard=%u truncate after a failed write: %s", d->k,
                          strerror(-j->res));
            appender_release(j->slot < 0 ? &d->seg : &d->jr[j->slot], HOLD_TRUNC);
            break;
        case J_JOURNAL:
            ckpt_newj_done(d, j);
            break;
        case J_SNAPSHOT:
            ckpt_write_done(d, j);
            break;
        }
    }
    job_free(j);
    if (--mb->refs == 0)
        free(mb);
}

int maint_start(struct spool_shard *sh)
{
    struct spool_maint *mt = calloc(1, sizeof *mt);
    int r;

    if (!mt || !(mt->mb = calloc(1, sizeof *mt->mb))) {
        free(mt);
        return -ENOMEM;
    }
    mt->sh = sh;
    mt->mb->sh = sh;
    mt->mb->refs = 1;
    pthread_mutex_init(&mt->mu, NULL);
    pthread_cond_init(&mt->cv, NULL);
    if ((r = -pthread_create(&mt->thr, NULL, helper_main, mt)) < 0) {
        pthread_mutex_destroy(&mt->mu);
        pthread_cond_destroy(&mt->cv);
        free(mt->mb);
        free(mt);
        return r;
    }
    mt->started = true;
    sh->mt = mt;
    return 0;
}

static void compact_end(struct spool_maint *mt);

void maint_stop(struct spool_shard *sh)
{
    struct spool_maint *mt = sh->mt;

    if (!mt)
        return;
    pthread_mutex_lock(&mt->mu);
    mt->quit = true;
    pthread_cond_signal(&mt->cv);
    pthread_mutex_unlock(&mt->mu);
    if (mt->started)
        pthread_join(mt->thr, NULL);
    /* Jobs never run: nothing depends on them any more. */
    for (struct mjob *j = mt->head, *next; j; j = next) {
        next = j->next;
        job_free(j);
        mt->mb->refs--;
    }
    if (mt->csc)
        compact_end(mt);
    /* Results already posted find the mailbox empty and free themselves. */
    mt->mb->sh = NULL;
    if (--mt->mb->refs == 0)
        free(mt->mb);
    pthread_mutex_destroy(&mt->mu);
    pthread_cond_destroy(&mt->cv);
    free(mt);
    sh->mt = NULL;
}

bool maint_idle(const struct spool_shard *sh)
{
    const struct spool_maint *mt = sh->mt;

    if (!mt)
        return true;
    if (mt->inflight || mt->copies)
        return false;
    for (size_t i = 0; i < sh->ndirs; i++)
        if (sh->dirs[i]->ckpt != CK_NONE)
            return false;
    return true;
}

/* ------------------------------------------------------------- segments */

static void segcnt_remove(struct segcnt *sc)
{
    struct sdir *d = sc->dir;

    for (size_t i = 0; i < d->nsegs; i++)
        if (d->segs[i] == sc) {
            d->segs[i] = d->segs[--d->nsegs];
            break;
        }
    if (sc->vmap)
        munmap(sc->vmap, sc->vmap_len);
    if (sc->fd >= 0)
        close(sc->fd);
    free(sc);
}

void maint_reap(struct segcnt *sc)
{
    struct sdir *d = sc->dir;
    struct mjob *j = job_new(d, J_UNLINK);

    if (!j)
        return; /* kept; found empty and removed at the next start */
    snprintf(j->name, sizeof j->name, "seg-%08" PRIu32, sc->seg);
    sc->reaping = true;
    segcnt_remove(sc);
    job_submit(d->sh, j);
}

static void spare_request(struct sdir *d)
{
    struct mjob *j;

    if (d->spare_fd >= 0 || d->spare_busy || d->sh->closing || !(j = job_new(d, J_SPARE)))
        return;
    snprintf(j->name, sizeof j->name, "seg-%08" PRIu32, d->seg_no + 1);
    d->spare_busy = true;
    job_submit(d->sh, j);
}

int maint_rotate(struct sdir *d)
{
    struct segcnt *sc;

    if (d->spare_fd < 0) {
        spare_request(d);
        return -EAGAIN;
    }
    if (!(sc = segcnt_get(d, d->seg_no + 1, true)))
        return -ENOMEM;
    sc->fd = d->spare_fd;
    d->spare_fd = -1;
    sc->current = true;
    sc->clean = true;
    struct segcnt *old = d->cur;
    d->cur = sc;
    d->seg_no = sc->seg;
    d->seg.fd = sc->fd;
    d->seg.end = 0;
    if (old) {
        old->current = false;
        segcnt_maybe_reap(old);
    }
    log_debug("spool: shard=%u segment=seg-%08" PRIu32, d->k, sc->seg);
    spare_request(d);
    return 0;
}

/* Start-up: make the next segment now (the loop is not running yet). */
static int rotate_now(struct sdir *d)
{
    char name[32];
    int fd, r;

    if (d->spare_fd < 0) {
        snprintf(name, sizeof name, "seg-%08" PRIu32, d->seg_no + 1);
        if ((r = file_create(d->dirfd, name, &fd)) < 0)
            return r;
        d->spare_fd = fd;
    }
    return maint_rotate(d);
}

void maint_truncate(struct appender *a, uint64_t off)
{
    struct sdir *d = a->dir;
    struct mjob *j = job_new(d, J_TRUNCATE);

    if (j && (j->fd = dup(a->fd)) < 0) {
        job_free(j);
        j = NULL;
    }
    if (!j) {
        /* No way to cut it now: the next batch overwrites from off anyway;
         * a longer failed batch may leave records found at recovery. */
        log_warnx("spool: shard=%u cannot cut after a failed write", d->k);
        return;
    }
    j->off = off;
    j->slot = a == &d->seg ? -1 : (int)(a - d->jr);
    a->hold |= HOLD_TRUNC;
    job_submit(d->sh, j);
}

/* A failed write of a segment batch other than ENOSPC: the file is not
 * trusted further (an fsync error may have dropped pages). */
static void must_rotate(struct sdir *d)
{
    if (maint_rotate(d) == -EAGAIN)
        d->seg.hold |= HOLD_ROTATE;
}

/* ----------------------------------------------------------- checkpoints */

int snap_build(struct sdir *d, uint64_t gen, uint8_t **out, size_t *outlen)
{
    size_t len = SNAP_HDR_LEN;
    uint64_t count = 0;

    for (size_t i = 0; i < d->nsegs; i++)
        for (struct smsg *m = d->segs[i]->head; m; m = m->snext) {
            len += SNAP_MSG_LEN + (size_t)m->nrcpts * SNAP_RCPT_LEN;
            for (uint32_t k = 0; k < m->nrcpts; k++)
                len += m->r[k].reply ? strlen(m->r[k].reply) : 0;
            count++;
        }
    uint8_t *buf = malloc(len), *p = buf + SNAP_HDR_LEN;
    if (!buf)
        return -ENOMEM;
    for (size_t i = 0; i < d->nsegs; i++)
        for (struct smsg *m = d->segs[i]->head; m; m = m->snext) {
            memcpy(p, m->node.id, SPOOL_ID_LEN);
            rec_put32(p + 20, m->seg);
            rec_put64(p + 24, m->off);
            rec_put64(p + 32, m->len);
            rec_put64(p + 40, m->size);
            rec_put64(p + 48, (uint64_t)m->received_at);
            rec_put32(p + 56, m->nrcpts);
            rec_put32(p + 60, m->mflags);
            p += SNAP_MSG_LEN;
            for (uint32_t k = 0; k < m->nrcpts; k++) {
                const struct srcpt *r = &m->r[k];
                size_t rl = r->reply ? strlen(r->reply) : 0;
                p[0] = r->st;
                p[1] = 0;
                rec_put16(p + 2, (uint16_t)rl);
                rec_put32(p + 4, r->attempts);
                rec_put64(p + 8, (uint64_t)r->next_at);
                rec_put64(p + 16, (uint64_t)r->last_at);
                memcpy(p + SNAP_RCPT_LEN, r->reply ? r->reply : "", rl);
                p += SNAP_RCPT_LEN + rl;
            }
        }
    memset(buf, 0, SNAP_HDR_LEN);
    rec_put32(buf, SNAP_MAGIC);
    rec_put16(buf + 4, 1);
    rec_put32(buf + 8, d->k);
    rec_put32(buf + 12, d->seg_no);
    rec_put64(buf + 16, d->seg.end);
    rec_put64(buf + 24, gen);
    rec_put64(buf + 32, count);
    rec_put64(buf + 40, len - SNAP_HDR_LEN);
    rec_put32(buf + 48, crc32c(0, buf + SNAP_HDR_LEN, len - SNAP_HDR_LEN));
    rec_put32(buf + 60, crc32c(0, buf, 60));
    *out = buf;
    *outlen = len;
    return 0;
}

int maint_checkpoint_now(struct sdir *d)
{
    char name[40];
    uint64_t gen = d->jrn_gen + 1;
    uint8_t *buf;
    size_t len;
    int fd, r;

    if ((r = rotate_now(d)) < 0) /* the walk point is the fresh segment */
        return r;
    snprintf(name, sizeof name, "journal-%08" PRIu64, gen);
    if ((r = file_create(d->dirfd, name, &fd)) < 0)
        return r;
    d->jfd[d->jcur] = fd;
    d->jr[d->jcur].fd = fd;
    d->jr[d->jcur].end = 0;
    d->jrn_gen = gen;
    d->jrn_bytes = 0;
    if (d->no_ckpt || (r = snap_build(d, gen, &buf, &len)) < 0)
        return 0; /* the old journals stay: nothing is lost */
    r = snap_write(d->dirfd, buf, len, gen);
    free(buf);
    if (r < 0)
        log_warnx("spool: shard=%u snapshot: %s (journals kept)", d->k, strerror(-r));
    else
        d->snap_bytes = len;
    return 0;
}

static bool ckpt_wanted(const struct sdir *d)
{
    const struct spool_shard *sh = d->sh;

    if (d->ckpt != CK_NONE || d->no_ckpt || sh->closing || sh->quiescing)
        return false;
    /* A compaction copy queued or being written lands after the walk point
     * of a snapshot taken now; if its message died before, recovery would
     * take the copy for a new message.  Wait until the copies are done. */
    if (sh->mt->copies)
        return false;
    const struct appender *other = &d->jr[1 - d->jcur];
    if (other->fd >= 0 || other->fly || other->open->nent)
        return false; /* the previous switch has not drained yet */
    if (d->jrn_failed)
        return true;
    /* Worth it once the bytes it frees (journal and old snapshot, minus the
     * new snapshot) exceed what it writes by checkpoint_bytes: the cost per
     * entry stays constant, and disk use follows the live state when it
     * shrinks. */
    uint64_t est = SNAP_HDR_LEN;
    for (size_t i = 0; i < d->nsegs; i++)
        est += (uint64_t)d->segs[i]->live * SNAP_MSG_LEN +
               d->segs[i]->live_rcpts * SNAP_RCPT_LEN;
    return d->jrn_bytes + d->snap_bytes >= 2 * est + sh->p.checkpoint_bytes;
}

static void ckpt_start(struct sdir *d)
{
    struct mjob *j = job_new(d, J_JOURNAL);

    if (!j)
        return;
    j->gen = d->jrn_gen + 1;
    snprintf(j->name, sizeof j->name, "journal-%08" PRIu64, j->gen);
    d->ckpt = CK_NEWJ;
    job_submit(d->sh, j);
}

/* Close the journal of slot s if it is not current and has drained. */
static void jslot_close_drained(struct sdir *d, int s)
{
    struct appender *a = &d->jr[s];

    if (s != d->jcur && a->fd >= 0 && !a->fly && !a->open->nent && !a->hold) {
        close(d->jfd[s]);
        d->jfd[s] = -1;
        a->fd = -1;
    }
}

static void ckpt_newj_done(struct sdir *d, struct mjob *j)
{
    uint8_t *buf;
    size_t len;
    int r;

    if (j->res < 0) {
        log_warnx("spool: shard=%u checkpoint: create %s: %s", d->k, j->name, strerror(-j->res));
        d->ckpt = CK_NONE;
        d->ckpt_retry = (int64_t)time(NULL) + SPOOL_RETRY_S;
        return;
    }
    /* The switch: from here on entries go to the new journal. */
    int nw = 1 - d->jcur;
    d->jfd[nw] = j->fd;
    j->fd = -1;
    d->jr[nw].fd = d->jfd[nw];
    d->jr[nw].end = 0;
    d->jcur = nw;
    d->jrn_gen = j->gen;
    d->jrn_bytes = 0;
    bool failed = d->jrn_failed;
    d->jrn_failed = false;
    jslot_close_drained(d, 1 - nw);
    /* ... and the state at this instant. */
    if ((r = snap_build(d, d->jrn_gen, &buf, &len)) < 0) {
        d->ckpt = CK_NONE;
        d->jrn_failed = failed;
        d->ckpt_retry = (int64_t)time(NULL) + SPOOL_RETRY_S;
        return;
    }
    struct mjob *w = job_new(d, J_SNAPSHOT);
    if (!w) {
        free(buf);
        d->ckpt = CK_NONE;
        d->jrn_failed = failed;
        return;
    }
    w->buf = buf;
    w->len = len;
    w->gen = d->jrn_gen;
    w->off = failed;
    d->ckpt = CK_WRITE;
    job_submit(d->sh, w);
}

static void ckpt_write_done(struct sdir *d, struct mjob *j)
{
    d->ckpt = CK_NONE;
    if (j->res < 0) {
        log_warnx("spool: shard=%u checkpoint: snapshot: %s (journals kept)", d->k,
                  strerror(-j->res));
        d->ckpt_retry = (int64_t)time(NULL) + SPOOL_RETRY_S;
        if (j->off)
            d->jrn_failed = true;
        return;
    }
    d->snap_bytes = j->len;
    log_debug("spool: shard=%u checkpoint journal=%" PRIu64 " snapshot_bytes=%zu", d->k,
              j->gen, j->len);
    /* the journal may have grown enough meanwhile: no need to wait for
     * the next event */
    if (ckpt_wanted(d))
        ckpt_start(d);
}

void maint_journal_done(struct sdir *d, struct appender *a)
{
    jslot_close_drained(d, (int)(a - d->jr));
    if (ckpt_wanted(d) && (int64_t)time(NULL) >= d->ckpt_retry)
        ckpt_start(d);
}

/* ------------------------------------------------------------ compaction */

static void compact_end(struct spool_maint *mt)
{
    struct segcnt *sc = mt->csc;

    mt->csc = NULL;
    mt->cabort = false;
    if (sc->map)
        munmap(sc->map, sc->map_len);
    sc->map = NULL;
    segcnt_unpin(sc);
}

/* The sparsest segment worth compacting, or NULL. */
static struct segcnt *compact_pick(struct spool_shard *sh, int64_t now)
{
    struct segcnt *best = NULL;
    double best_ratio = 2;

    for (size_t i = 0; i < sh->ndirs; i++) {
        struct sdir *d = sh->dirs[i];
        for (size_t k = 0; k < d->nsegs; k++) {
            struct segcnt *sc = d->segs[k];
            if (sc->current || sc->reaping || !sc->clean || !sc->live || sc->pins ||
                !sc->size || sc->born + (int64_t)sh->p.compact_min_age > now ||
                sc->live_bytes * 100 >= sc->size * sh->p.compact_live_pct)
                continue;
            double ratio = (double)sc->live_bytes / (double)sc->size;
            if (ratio < best_ratio) {
                best = sc;
                best_ratio = ratio;
            }
        }
    }
    return best;
}

static bool compact_begin(struct spool_maint *mt, struct segcnt *sc)
{
    if (sc->fd < 0) {
        char name[32];
        snprintf(name, sizeof name, "seg-%08" PRIu32, sc->seg);
        sc->fd = openat(sc->dir->dirfd, name, O_RDONLY | O_CLOEXEC);
        if (sc->fd < 0)
            return false;
    }
    sc->map_len = (size_t)sc->size;
    sc->map = mmap(NULL, sc->map_len, PROT_READ, MAP_SHARED, sc->fd, 0);
    if (sc->map == MAP_FAILED) {
        sc->map = NULL;
        return false;
    }
    madvise(sc->map, sc->map_len, MADV_SEQUENTIAL);
    sc->pins++;
    mt->csc = sc;
    log_debug("spool: shard=%u compact seg-%08" PRIu32 " live=%u live_bytes=%" PRIu64
              " size=%" PRIu64, sc->dir->k, sc->seg, sc->live, sc->live_bytes, sc->size);
    return true;
}

/* Queue copies of the next live records of the segment being compacted. */
static void compact_step(struct spool_maint *mt)
{
    struct segcnt *sc = mt->csc;
    struct sdir *d = sc->dir;
    struct appender *a = &d->seg;
    struct batch *b = a->open;
    size_t budget = d->sh->p.compact_turn_bytes;

    if (a->hold || mt->cabort)
        return;
    for (struct smsg *m = sc->head; m && budget; m = m->snext) {
        if (m->moving || m->views)
            continue;
        if (m->off + m->len > sc->size || batch_reserve(b, 0, 1) < 0)
            break;
        struct iovec v = {(uint8_t *)sc->map + m->off, (size_t)m->len};
        uint64_t rel = b->bytes;
        batch_put_ext(b, &v);
        struct bent *e = &b->ent[b->nent++];
        *e = (struct bent){.kind = BE_COPY, .rel = rel, .len = m->len, .from = sc,
                           .from_off = m->off};
        memcpy(e->id, m->node.id, SPOOL_ID_LEN + 1);
        m->moving = true;
        mt->copies++;
        if (spool_compact_hook)
            spool_compact_hook(m->node.id);
        budget = budget > m->len ? budget - (size_t)m->len : 0;
    }
    if (b->nent && !a->fly && !a->hold)
        batch_start(a);
}

void maint_copies_done(struct spool_shard *sh, struct batch *b, int err)
{
    struct spool_maint *mt = sh->mt;

    for (size_t i = 0; i < b->nent; i++) {
        struct bent *e = &b->ent[i];
        if (e->kind != BE_COPY)
            continue;
        mt->copies--;
        struct smsg *m = (struct smsg *)idmap_get(&sh->idx, e->id);
        if (!m || !m->moving || m->sc != e->from || m->off != e->from_off)
            continue; /* final meanwhile: the copy is dead weight */
        m->moving = false;
        if (err) {
            mt->cabort = true;
            continue;
        }
        m->off = b->base + e->rel;
        seg_attach(m, b->sc);
    }
    if (mt->csc && !mt->copies && (!mt->csc->live || mt->cabort)) {
        /* the next candidate at once, or after a pause if this failed */
        mt->next_check = mt->cabort ? (int64_t)time(NULL) + SPOOL_RETRY_S : 0;
        compact_end(mt);
    }
    if (!mt->copies) /* checkpoints wait for copies (ckpt_wanted) */
        for (size_t i = 0; i < sh->ndirs; i++)
            if (ckpt_wanted(sh->dirs[i]) && (int64_t)time(NULL) >= sh->dirs[i]->ckpt_retry)
                ckpt_start(sh->dirs[i]);
}

void maint_turn(struct spool_shard *sh)
{
    struct spool_maint *mt = sh->mt;

    if (!mt || sh->closing)
        return;
    if (mt->csc) {
        if (sh->quiescing) {
            if (!mt->copies)
                compact_end(mt);
        } else {
            compact_step(mt);
        }
        return;
    }
    if (sh->quiescing)
        return;
    int64_t now = (int64_t)time(NULL);
    if (now < mt->next_check)
        return;
    mt->next_check = now + 1;
    for (size_t i = 0; i < sh->ndirs; i++) {
        struct sdir *d = sh->dirs[i];
        if (ckpt_wanted(d) && now >= d->ckpt_retry)
            ckpt_start(d);
        /* Everything in the current segment is final: leave it so that it
         * can go (disk use follows live mail). */
        if (d->cur && !d->cur->live && d->cur->size >= SPOOL_ROTATE_IDLE && !d->seg.fly &&
            !d->seg.hold && !d->seg.open->nent)
            maint_rotate(d);
        if (d->spare_fd < 0)
            spare_request(d);
    }
    struct segcnt *sc = compact_pick(sh, now);
    if (sc && compact_begin(mt, sc))
        compact_step(mt);
}

/* After a failed segment batch that was not ENOSPC. */
void maint_after_seg_error(struct sdir *d) { must_rotate(d); }
