/* SPDX-License-Identifier: MIT */
/*
 * maint.c - the shard's file maintenance: segment rotation, reaping of
 * segments with nothing live, cutting a file back after a failed write, and
 * opening a fresh journal at start-up.
 */
#include "spool/shard.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/log.h"

int maint_start(struct spool_shard *sh) { return 0; }
void maint_stop(struct spool_shard *sh) {}
bool maint_idle(const struct spool_shard *sh) { return true; }
void maint_turn(struct spool_shard *sh) {}
void maint_copies_done(struct spool_shard *sh, struct batch *b, int err) {}
void maint_journal_grew(struct sdir *d) {}

static void segcnt_remove(struct segcnt *sc)
{
    struct sdir *d = sc->dir;

    for (size_t i = 0; i < d->nsegs; i++)
        if (d->segs[i] == sc) {
            d->segs[i] = d->segs[--d->nsegs];
            break;
        }
    if (sc->fd >= 0)
        close(sc->fd);
    free(sc);
}

void maint_reap(struct segcnt *sc)
{
    struct sdir *d = sc->dir;
    char name[32];

    snprintf(name, sizeof name, "seg-%08" PRIu32, sc->seg);
    if (unlinkat(d->dirfd, name, 0) < 0 && errno != ENOENT) {
        log_warn("spool: shard=%u unlink %s", d->k, name);
        sc->clean = false; /* do not try again */
        return;
    }
    log_debug("spool: shard=%u removed %s", d->k, name);
    segcnt_remove(sc);
}

int maint_rotate(struct sdir *d)
{
    char name[32];
    uint32_t next = d->seg_no + 1;
    struct segcnt *sc;
    int fd;

    snprintf(name, sizeof name, "seg-%08" PRIu32, next);
    fd = openat(d->dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd < 0)
        return -errno;
    if (fsync(d->dirfd) < 0 || !(sc = segcnt_get(d, next, true))) {
        int r = errno ? -errno : -ENOMEM;
        close(fd);
        unlinkat(d->dirfd, name, 0);
        return r;
    }
    sc->fd = fd;
    sc->current = true;
    sc->clean = true;
    struct segcnt *old = d->cur;
    d->cur = sc;
    d->seg_no = next;
    d->seg.fd = fd;
    d->seg.end = 0;
    if (old) {
        old->current = false;
        segcnt_maybe_reap(old);
    }
    log_debug("spool: shard=%u segment=%s", d->k, name);
    return 0;
}

void maint_truncate(struct appender *a, uint64_t off)
{
    if (ftruncate(a->fd, (off_t)off) < 0)
        log_warn("spool: shard=%u truncate after failed write", a->dir->k);
}

int maint_checkpoint_now(struct sdir *d)
{
    char name[40];
    uint64_t gen = d->jrn_gen + 1;

    snprintf(name, sizeof name, "journal-%08" PRIu64, gen);
    int fd = openat(d->dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd < 0)
        return -errno;
    if (fsync(d->dirfd) < 0) {
        int r = -errno;
        close(fd);
        return r;
    }
    d->jrn_fd = fd;
    d->jrn.fd = fd;
    d->jrn.end = 0;
    d->jrn_gen = gen;
    return 0;
}
