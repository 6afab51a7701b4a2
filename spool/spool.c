/* SPDX-License-Identifier: MIT */
/*
 * spool.c - a reactor's spool shard: group commit of message records into
 * append-only segment files and of state changes into the journal, the
 * in-memory index of live messages, and recovery at start-up.
 *
 * Group commit.  Each append-only file (the current segment, the journal)
 * is an `appender` with two batches: the open one, which spool_submit() and
 * spool_mark() add to, and at most one in flight.  Closing the open batch
 * writes all its iovecs at the file's end with io_write_sync (write +
 * fdatasync; split in IOV_MAX pieces, all in flight together) and only when
 * every piece completed do the callbacks run, all with the same result.
 * While a batch is in flight, new commits gather in the next one: under load
 * one fdatasync covers everything that arrived during the previous one.
 * A segment batch closes when it holds batch_max_bytes, at the loop's idle
 * hook (batch_delay_us = 0) or when the batch timer fires (> 0).  The
 * journal closes at the idle hook.  A segment whose messages are all final
 * (journal) is deleted, at once or at the next recovery.
 *
 * Failure.  If any piece fails, every commit of the batch gets the error,
 * the file is cut back to where the batch began (ftruncate, best effort) and
 * the append offset stays there, so the next batch overwrites whatever the
 * failed one left: the file up to the append offset always holds whole,
 * acknowledged records, and anything beyond is a torn tail for recovery.
 * After an error other than ENOSPC the segment is not trusted further (an
 * fsync error may have dropped pages) and a new one is started.
 *
 * Durability of names.  A new segment or shard directory is created with
 * O_EXCL and its directory fsync'ed before anything in it is written, so a
 * record acknowledged in a new file cannot vanish with the file's name.
 * Rotation does this synchronously (once per segment_max_bytes).
 *
 * Recovery (spool_shard_open) replays every journal, walks the segments of
 * every owned shard directory (K % nshards == index), cuts torn tails and
 * rebuilds the index; new records always go to a fresh segment.
 */
#include "spool/spool.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/log.h"
#include "spool/record.h"

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif
#define SPOOL_IOV_MAX (IOV_MAX < 1024 ? IOV_MAX : 1024)
#define SPOOL_PIECE_MAX (1u << 30) /* bytes per io_write_sync */

#define SPOOL_DEF_BATCH_MAX (1u << 20)
#define SPOOL_DEF_SEGMENT_MAX (64ull << 20)

/*
 * Test seam: when set, every io_write_sync completion result goes through
 * it (tests turn a success into -ENOSPC or -EIO after the bytes were
 * written, the worst case for cleanup).
 */
static int (*spool_write_res_hook)(int fd, int res);
/* io_write_sync calls made by this process (for the group-commit test). */
static uint64_t spool_nwrites;

/* A live message in the index. */
struct smsg {
    struct idmap_node node; /* id */
    unsigned shard;         /* shard directory K holding the record */
    uint32_t seg;           /* segment number */
    uint64_t off, len;      /* record offset and padded length */
    uint32_t nrcpts;
    uint8_t *st;            /* per-recipient spool_rcpt_state */
    int64_t *until;         /* per-recipient DEFERRED until */
};

/*
 * Live messages of one segment, so that a segment whose messages are all
 * final can be deleted.  Only `clean` segments (every byte whole records,
 * every record indexed) are ever deleted: a segment with an unreadable part
 * or a record that could not be indexed stays for a person to look at.
 */
struct segcnt {
    unsigned shard;         /* shard directory K */
    uint32_t seg;
    uint32_t live;          /* messages of it in the index */
    bool clean;
};

/* One commit in a batch. */
struct bent {
    struct spool_commit *c; /* NULL for a mark without callback */
    uint64_t rel;           /* record offset from the batch start */
    uint64_t len;           /* padded record length */
    uint32_t nrcpts;
};

/*
 * A batch of appends.  Invariants: iov[i] points into buf when
 * boff[i] != SIZE_MAX (fixed up when the batch starts, since buf moves while
 * it grows); bytes is the sum of all iov lengths and a multiple of 8 for
 * segments; ops has one entry at least (for the failure path) and grows
 * to one per piece when the batch starts.
 */
struct batch {
    struct appender *app;
    uint8_t *buf;           /* owned bytes: headers, envelopes, padding, entries */
    size_t blen, bcap;
    struct iovec *iov;
    size_t *boff;           /* per iov: offset in buf, or SIZE_MAX (caller data) */
    int niov, iovcap;
    struct bent *ent;
    size_t nent, entcap;
    uint64_t bytes;
    struct io_op *ops;      /* one per IOV_MAX piece while in flight */
    uint64_t *opexp;        /* bytes each piece must report */
    int opcap, pending;     /* pieces allocated, pieces still in flight */
    int err;                /* first error of the pieces */
    uint64_t base;          /* file offset of the batch */
    uint32_t seg;           /* segment written to */
};

/* An append-only file with group commit (see the file comment). */
struct appender {
    struct spool_shard *sh;
    bool is_seg;            /* the segment (else the journal) */
    int fd;
    uint64_t end;           /* append offset: everything before is durable */
    struct batch b[2];
    struct batch *open;     /* collecting */
    struct batch *fly;      /* written now, or NULL */
};

struct spool_shard {
    struct io_loop *loop;
    char *spool_dir;
    int dirfd;                 /* shard-<index> */
    unsigned index, nshards;
    struct spool_params p;
    struct appender seg;       /* current segment */
    uint32_t seg_no;
    struct appender jrn;       /* journal of shard-<index> */
    struct idmap idx;          /* live messages (struct smsg) */
    uint64_t seq;              /* for message ids */
    struct io_op *timer;       /* batch timer; heap: may outlive the shard */
    bool timer_due;            /* the timer fired while a batch was in flight */
    bool idle_set;             /* the loop's idle hook is ours */
    struct segcnt *segs;       /* per segment of the owned shards */
    size_t nsegs, segscap;
};

static void batch_start(struct appender *a);

/* ------------------------------------------------------------- helpers */

static void smsg_free(struct smsg *m)
{
    free(m->st);
    free(m->until);
    free(m);
}

static void smsg_free_node(struct idmap_node *n) { smsg_free((struct smsg *)n); }

static bool st_final(uint8_t st) { return st == SPOOL_RCPT_DELIVERED || st == SPOOL_RCPT_FAILED; }

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 16;
    while (n < need)
        n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q)
        return -ENOMEM;
    *p = q;
    *cap = n;
    return 0;
}

/* Make room for nbuf more bytes, niov more iovecs and one more entry. */
static int batch_reserve(struct batch *b, size_t nbuf, int niov)
{
    size_t icap = (size_t)b->iovcap, ocap = (size_t)b->opcap;

    if (grow((void **)&b->buf, &b->bcap, b->blen + nbuf, 1) < 0 ||
        grow((void **)&b->ent, &b->entcap, b->nent + 1, sizeof *b->ent) < 0)
        return -ENOMEM;
    size_t need = (size_t)b->niov + (size_t)niov;
    if (need > INT_MAX / 2)
        return -E2BIG;
    if (need > icap) {
        size_t c1 = icap, c2 = icap;
        if (grow((void **)&b->iov, &c1, need, sizeof *b->iov) < 0 ||
            grow((void **)&b->boff, &c2, need, sizeof *b->boff) < 0)
            return -ENOMEM;
        b->iovcap = (int)(c1 < c2 ? c1 : c2);
    }
    if (ocap == 0) { /* one op at least, for the failure path */
        size_t c1 = 0, c2 = 0;
        if (grow((void **)&b->ops, &c1, 1, sizeof *b->ops) < 0 ||
            grow((void **)&b->opexp, &c2, 1, sizeof *b->opexp) < 0)
            return -ENOMEM;
        b->opcap = (int)(c1 < c2 ? c1 : c2);
    }
    return 0;
}

/* Append len owned bytes (room reserved); returns their offset in buf. */
static size_t batch_put_own(struct batch *b, size_t len)
{
    size_t off = b->blen;
    int last = b->niov - 1;

    b->blen += len;
    b->bytes += len;
    if (last >= 0 && b->boff[last] != SIZE_MAX && b->boff[last] + b->iov[last].iov_len == off) {
        b->iov[last].iov_len += len; /* contiguous with the previous piece */
    } else {
        b->iov[b->niov] = (struct iovec){NULL, len};
        b->boff[b->niov++] = off;
    }
    return off;
}

static void batch_put_ext(struct batch *b, const struct iovec *v)
{
    b->iov[b->niov] = *v;
    b->boff[b->niov++] = SIZE_MAX;
    b->bytes += v->iov_len;
}

static void batch_reset(struct batch *b)
{
    b->blen = 0;
    b->niov = 0;
    b->nent = 0;
    b->bytes = 0;
    b->err = 0;
    b->pending = 0;
}

static void batch_free(struct batch *b)
{
    free(b->buf);
    free(b->iov);
    free(b->boff);
    free(b->ent);
    free(b->ops);
    free(b->opexp);
    memset(b, 0, sizeof *b);
}

static void appender_init(struct appender *a, struct spool_shard *sh, bool is_seg)
{
    memset(a, 0, sizeof *a);
    a->sh = sh;
    a->is_seg = is_seg;
    a->fd = -1;
    a->b[0].app = a;
    a->b[1].app = a;
    a->open = &a->b[0];
}

/* --------------------------------------------------------------- files */

static struct segcnt *segcnt_get(struct spool_shard *sh, unsigned shard, uint32_t seg,
                                 bool create)
{
    for (size_t i = sh->nsegs; i-- > 0;) /* recent segments are at the end */
        if (sh->segs[i].seg == seg && sh->segs[i].shard == shard)
            return &sh->segs[i];
    if (!create || grow((void **)&sh->segs, &sh->segscap, sh->nsegs + 1, sizeof *sh->segs) < 0)
        return NULL;
    struct segcnt *sc = &sh->segs[sh->nsegs++];
    *sc = (struct segcnt){shard, seg, 0, false};
    return sc;
}

/*
 * Delete the segment of sc if nothing in it is live any more (and it is not
 * the one being written).  The unlink blocks briefly; it happens once per
 * segment.  A crash before the journal entries that made its messages final
 * are durable loses nothing that was still to be delivered.
 */
static void segcnt_reap(struct spool_shard *sh, struct segcnt *sc)
{
    char path[4096];

    if (sc->live || !sc->clean || (sc->shard == sh->index && sc->seg == sh->seg_no))
        return;
    snprintf(path, sizeof path, "%s/shard-%u/seg-%08" PRIu32, sh->spool_dir, sc->shard, sc->seg);
    if (unlink(path) < 0 && errno != ENOENT) {
        log_warn("spool: unlink %s", path);
        sc->clean = false; /* do not try again */
        return;
    }
    log_debug("spool: shard=%u removed %s", sh->index, path);
    *sc = sh->segs[--sh->nsegs];
}

static void segcnt_drop(struct spool_shard *sh, unsigned shard, uint32_t seg)
{
    struct segcnt *sc = segcnt_get(sh, shard, seg, false);

    if (sc && sc->live > 0 && --sc->live == 0)
        segcnt_reap(sh, sc);
}

/*
 * Create segment seg_no+1 and make its name durable (blocks: rotation only).
 * On success the appender writes to it from offset 0.
 */
static int seg_rotate(struct spool_shard *sh)
{
    char name[32];
    uint32_t next = sh->seg_no + 1;
    int fd;

    snprintf(name, sizeof name, "seg-%08" PRIu32, next);
    fd = openat(sh->dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd < 0)
        return -errno;
    if (fsync(sh->dirfd) < 0) {
        int r = -errno;
        close(fd);
        unlinkat(sh->dirfd, name, 0);
        return r;
    }
    if (sh->seg.fd >= 0)
        close(sh->seg.fd);
    sh->seg.fd = fd;
    sh->seg.end = 0;
    uint32_t old = sh->seg_no;
    sh->seg_no = next;
    struct segcnt *sc = segcnt_get(sh, sh->index, old, false);
    if (sc)
        segcnt_reap(sh, sc);
    log_debug("spool: shard=%u segment=%s", sh->index, name);
    return 0;
}

/* ------------------------------------------------------------ batching */

static void on_timer(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct spool_shard *sh = op->owner;

    if (!sh) { /* orphaned by spool_shard_close */
        free(op);
        return;
    }
    if (res < 0)
        return;
    sh->timer_due = true;
    if (!sh->seg.fly && sh->seg.open->nent)
        batch_start(&sh->seg);
}

static void timer_arm(struct spool_shard *sh)
{
    if (!sh->p.batch_delay_us || io_op_busy(sh->timer))
        return;
    uint64_t ms = (sh->p.batch_delay_us + 999) / 1000;
    if (io_timer_start(sh->loop, sh->timer, ms, on_timer) < 0)
        sh->timer_due = true; /* no timer: close at the next chance */
}

/* Index the records of a durable segment batch. */
static void batch_index(struct spool_shard *sh, struct batch *b)
{
    struct segcnt *sc = segcnt_get(sh, sh->index, b->seg, true);

    if (sc && sc->live == 0 && b->base == 0)
        sc->clean = true;
    for (size_t i = 0; i < b->nent; i++) {
        struct bent *e = &b->ent[i];
        struct smsg *m = calloc(1, sizeof *m);
        if (m) {
            m->st = calloc(e->nrcpts, 1);
            m->until = calloc(e->nrcpts, sizeof *m->until);
        }
        if (!m || !m->st || !m->until) {
            log_warnx("spool: id=%s out of memory indexing: found again at restart",
                      e->c->id);
            if (m)
                smsg_free(m);
            if (sc)
                sc->clean = false; /* never delete it under this message */
            continue;
        }
        memcpy(m->node.id, e->c->id, SPOOL_ID_LEN + 1);
        m->shard = sh->index;
        m->seg = b->seg;
        m->off = b->base + e->rel;
        m->len = e->len;
        m->nrcpts = e->nrcpts;
        if (idmap_put(&sh->idx, &m->node) < 0) {
            log_warnx("spool: id=%s out of memory indexing: found again at restart",
                      e->c->id);
            smsg_free(m);
            if (sc)
                sc->clean = false;
            continue;
        }
        if (sc)
            sc->live++;
    }
}

/* Every piece of the in-flight batch b completed. */
static void batch_done(struct batch *b)
{
    struct appender *a = b->app;
    struct spool_shard *sh = a->sh;
    struct spool_commit *head = NULL, **tail = &head;
    int err = b->err;

    assert(a->fly == b);
    if (err == 0) {
        a->end = b->base + b->bytes;
        if (a->is_seg)
            batch_index(sh, b);
    } else {
        log_warnx("spool: shard=%u %s write failed offset=%" PRIu64 " bytes=%" PRIu64
                  " commits=%zu error=\"%s\"",
                  sh->index, a->is_seg ? "segment" : "journal", b->base, b->bytes, b->nent,
                  strerror(-err));
        /* Cut what the failed batch may have left; the next batch overwrites
         * from b->base anyway. */
        if (ftruncate(a->fd, (off_t)b->base) < 0)
            log_warn("spool: shard=%u truncate after failed write", sh->index);
        if (a->is_seg && err != -ENOSPC && seg_rotate(sh) < 0)
            log_warn("spool: shard=%u new segment after write error", sh->index);
    }
    for (size_t i = 0; i < b->nent; i++) {
        struct spool_commit *c = b->ent[i].c;
        if (c) {
            *tail = c;
            tail = &c->next;
        }
    }
    *tail = NULL;
    batch_reset(b);
    a->fly = NULL;
    /* Callbacks may submit again (to the open batch) or start it. */
    while (head) {
        struct spool_commit *c = head;
        head = c->next;
        c->next = NULL;
        c->cb(c, err);
    }
    if (a->fly || !a->open->nent)
        return;
    if (a->open->bytes >= sh->p.batch_max_bytes || (a->is_seg && sh->timer_due))
        batch_start(a);
    else if (a->is_seg)
        timer_arm(sh);
}

static void on_write(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct batch *b = op->owner;
    int i = (int)(op - b->ops);

    if (spool_write_res_hook)
        res = spool_write_res_hook(b->app->fd, res);
    if (res >= 0 && (uint64_t)res != b->opexp[i])
        res = -EIO; /* io_write_sync reports the full length or an error */
    if (res < 0 && b->err == 0)
        b->err = res;
    if (--b->pending == 0)
        batch_done(b);
}

static void on_start_failed(struct io_op *op, int res, const char *data, unsigned flags)
{
    batch_done(op->owner);
}

/* Close the open batch of a (nothing in flight) and write it. */
static void batch_start(struct appender *a)
{
    struct spool_shard *sh = a->sh;
    struct batch *b = a->open;
    uint64_t off;
    int r;

    assert(!a->fly && b->nent);
    if (a->is_seg) {
        sh->timer_due = false;
        if (a->end > 0 && a->end + b->bytes > sh->p.segment_max_bytes &&
            (r = seg_rotate(sh)) < 0)
            log_warnx("spool: shard=%u rotate: %s (segment keeps growing)", sh->index,
                      strerror(-r));
        b->seg = sh->seg_no;
    }
    a->fly = b;
    a->open = b == &a->b[0] ? &a->b[1] : &a->b[0];
    b->base = a->end;
    b->err = 0;
    b->pending = 0;
    for (int i = 0; i < b->niov; i++)
        if (b->boff[i] != SIZE_MAX)
            b->iov[i].iov_base = b->buf + b->boff[i];
    /* Pieces of at most SPOOL_IOV_MAX iovecs and SPOOL_PIECE_MAX bytes
     * (io_write_sync reports an int); all go out at once. */
    int npieces = 0;
    for (int i = 0; i < b->niov;) {
        int cnt = 0;
        uint64_t len = 0;
        while (i + cnt < b->niov && cnt < SPOOL_IOV_MAX &&
               (cnt == 0 || len + b->iov[i + cnt].iov_len <= SPOOL_PIECE_MAX))
            len += b->iov[i + cnt++].iov_len;
        i += cnt;
        npieces++;
    }
    size_t c1 = (size_t)b->opcap, c2 = (size_t)b->opcap;
    if (grow((void **)&b->ops, &c1, (size_t)npieces, sizeof *b->ops) < 0 ||
        grow((void **)&b->opexp, &c2, (size_t)npieces, sizeof *b->opexp) < 0)
        b->err = -ENOMEM;
    b->opcap = (int)(c1 < c2 ? c1 : c2);
    off = b->base;
    for (int i = 0, k = 0; i < b->niov && b->err == 0; k++) {
        int cnt = 0;
        uint64_t len = 0;
        while (i + cnt < b->niov && cnt < SPOOL_IOV_MAX &&
               (cnt == 0 || len + b->iov[i + cnt].iov_len <= SPOOL_PIECE_MAX))
            len += b->iov[i + cnt++].iov_len;
        io_op_init(&b->ops[k], b);
        b->opexp[k] = len;
        r = io_write_sync(sh->loop, &b->ops[k], a->fd, b->iov + i, cnt, off, on_write);
        if (r < 0) {
            b->err = r;
            break;
        }
        spool_nwrites++;
        b->pending++;
        off += len;
        i += cnt;
    }
    if (b->pending == 0) { /* nothing went out: fail on the next turn */
        io_op_init(&b->ops[0], b);
        r = io_defer(sh->loop, &b->ops[0], on_start_failed);
        assert(r == 0);
        (void)r;
    }
}

static void on_idle(void *arg)
{
    struct spool_shard *sh = arg;

    if (!sh->seg.fly && sh->seg.open->nent && (sh->p.batch_delay_us == 0 || sh->timer_due))
        batch_start(&sh->seg);
    if (!sh->jrn.fly && sh->jrn.open->nent)
        batch_start(&sh->jrn);
}

/* ------------------------------------------------------------ submitting */

int spool_submit(struct spool_shard *sh, struct spool_commit *c,
                 const struct spool_envelope *env, const struct iovec *data, int iovcnt)
{
    struct batch *b = sh->seg.open;
    uint64_t data_len = 0;
    size_t env_len;
    int r;

    if (iovcnt < 0 || (iovcnt > 0 && !data) || !c || !c->cb || env->nrcpts == 0)
        return -EINVAL;
    env_len = rec_env_size(env);
    if (env_len == 0)
        return -EINVAL;
    for (int i = 0; i < iovcnt; i++)
        data_len += data[i].iov_len;
    if ((r = batch_reserve(b, REC_HDR_LEN + env_len + REC_ALIGN, iovcnt + 2)) < 0)
        return r;

    rec_id_make(c->id, (int64_t)time(NULL), sh->index, sh->seq++);
    uint64_t rel = b->bytes;
    size_t hoff = batch_put_own(b, REC_HDR_LEN + env_len);
    uint8_t *hdr = b->buf + hoff;
    rec_env_encode(env, hdr + REC_HDR_LEN);
    rec_hdr_build(hdr, c->id, hdr + REC_HDR_LEN, (uint32_t)env_len, data, iovcnt, data_len);
    for (int i = 0; i < iovcnt; i++)
        if (data[i].iov_len)
            batch_put_ext(b, &data[i]);
    size_t pad = rec_pad(REC_HDR_LEN + env_len + data_len);
    if (pad)
        memset(b->buf + batch_put_own(b, pad), 0, pad);
    c->next = NULL;
    b->ent[b->nent++] = (struct bent){c, rel, b->bytes - rel, (uint32_t)env->nrcpts};

    if (b->bytes >= sh->p.batch_max_bytes && !sh->seg.fly)
        batch_start(&sh->seg);
    else if (b->nent == 1)
        timer_arm(sh);
    return 0;
}

int spool_mark(struct spool_shard *sh, struct spool_commit *c, const char *id, int rcpt_idx,
               enum spool_rcpt_state st, int64_t until)
{
    struct batch *b = sh->jrn.open;
    struct smsg *m;
    int r;

    if (!id || strlen(id) != SPOOL_ID_LEN || !rec_id_valid(id))
        return -EINVAL;
    if (st == SPOOL_RCPT_PENDING || st > SPOOL_RCPT_DELETED || rcpt_idx < -1 ||
        (st == SPOOL_RCPT_DELETED && rcpt_idx != -1) || (c && !c->cb))
        return -EINVAL;
    m = (struct smsg *)idmap_get(&sh->idx, id);
    if (!m)
        return -ENOENT;
    if (rcpt_idx >= 0 && (uint32_t)rcpt_idx >= m->nrcpts)
        return -EINVAL;
    if ((r = batch_reserve(b, JRN_ENTRY_LEN, 1)) < 0)
        return r;

    struct jrn_entry e = {.rcpt_idx = rcpt_idx, .state = (uint8_t)st, .until = until};
    memcpy(e.id, id, SPOOL_ID_LEN + 1);
    uint64_t rel = b->bytes;
    jrn_encode(b->buf + batch_put_own(b, JRN_ENTRY_LEN), &e);
    if (c) {
        memcpy(c->id, id, SPOOL_ID_LEN + 1);
        c->next = NULL;
    }
    b->ent[b->nent++] = (struct bent){c, rel, JRN_ENTRY_LEN, 0};

    /* The same precedence as the replay (scan.c): a final state sticks. */
    bool live = false;
    for (uint32_t i = 0; i < m->nrcpts; i++) {
        if ((rcpt_idx < 0 || (uint32_t)rcpt_idx == i) && st != SPOOL_RCPT_DELETED &&
            !st_final(m->st[i])) {
            m->st[i] = (uint8_t)st;
            m->until[i] = until;
        }
        if (!st_final(m->st[i]))
            live = true;
    }
    if (st == SPOOL_RCPT_DELETED || !live) {
        idmap_del(&sh->idx, &m->node);
        segcnt_drop(sh, m->shard, m->seg);
        smsg_free(m);
    }
    return 0;
}

size_t spool_shard_count(const struct spool_shard *sh) { return sh->idx.n; }

/* ------------------------------------------------------------- recovery */

struct recover_ctx {
    struct spool_shard *sh;
    struct idmap jm;
};

static int recover_record(void *arg, unsigned shard, uint32_t seg, uint64_t off,
                          const struct rec_view *v)
{
    struct recover_ctx *rc = arg;
    struct spool_shard *sh = rc->sh;
    struct segcnt *sc = segcnt_get(sh, shard, seg, true);
    uint32_t n;
    struct smsg *m;

    if (!sc)
        return -ENOMEM;
    if (!v) { /* end of the segment */
        sc->clean = off == UINT64_MAX;
        return 0;
    }

    if (rec_env_nrcpts(v->env, v->env_len, &n) < 0 || n == 0) {
        log_warnx("spool: bad envelope id=%s shard=%u seg=%" PRIu32, v->id, shard, seg);
        return 0;
    }
    if (idmap_get(&sh->idx, v->id)) {
        log_warnx("spool: duplicate id=%s shard=%u seg=%" PRIu32 " offset=%" PRIu64
                  " (kept the first)", v->id, shard, seg, off);
        return 0;
    }
    m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    m->st = malloc(n);
    m->until = malloc(n * sizeof *m->until);
    if (!m->st || !m->until) {
        smsg_free(m);
        return -ENOMEM;
    }
    if (!jstate_resolve(&rc->jm, v->id, n, m->st, m->until)) {
        smsg_free(m);
        return 0;
    }
    memcpy(m->node.id, v->id, SPOOL_ID_LEN + 1);
    m->shard = shard;
    m->seg = seg;
    m->off = off;
    m->len = v->total;
    m->nrcpts = n;
    if (idmap_put(&sh->idx, &m->node) < 0) {
        smsg_free(m);
        return -ENOMEM;
    }
    sc->live++;
    return 0;
}

/* mkdir path if missing; *created tells whether it was made now. */
static int dir_make(const char *path, bool *created)
{
    *created = false;
    if (mkdir(path, 0750) == 0) {
        *created = true;
        return 0;
    }
    return errno == EEXIST ? 0 : -errno;
}

static int dir_sync(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int r = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return r;
}

int spool_shard_open(struct io_loop *loop, const char *spool_dir, unsigned index,
                     unsigned nshards, const struct spool_params *params,
                     struct spool_shard **out, char *err, size_t errlen)
{
    struct spool_shard *sh = NULL;
    struct recover_ctx rc = {0};
    char path[4096];
    const char *what = "";
    bool created;
    unsigned *ks = NULL;
    int r;

    *out = NULL;
    if (nshards == 0 || index >= nshards || nshards > 65536) {
        r = -EINVAL;
        what = "bad shard index";
        goto fail;
    }
    sh = calloc(1, sizeof *sh);
    if (!sh || !(sh->spool_dir = strdup(spool_dir)) || !(sh->timer = calloc(1, sizeof *sh->timer))) {
        r = -ENOMEM;
        what = "out of memory";
        goto fail;
    }
    sh->loop = loop;
    sh->dirfd = -1;
    sh->index = index;
    sh->nshards = nshards;
    if (params)
        sh->p = *params;
    if (!sh->p.batch_max_bytes)
        sh->p.batch_max_bytes = SPOOL_DEF_BATCH_MAX;
    if (!sh->p.segment_max_bytes)
        sh->p.segment_max_bytes = SPOOL_DEF_SEGMENT_MAX;
    io_op_init(sh->timer, sh);
    appender_init(&sh->seg, sh, true);
    appender_init(&sh->jrn, sh, false);

    /* The directories, durable before anything is acknowledged in them. */
    what = "create spool directory";
    if ((r = dir_make(spool_dir, &created)) < 0)
        goto fail;
    snprintf(path, sizeof path, "%s/shard-%u", spool_dir, index);
    what = "create shard directory";
    if ((r = dir_make(path, &created)) < 0)
        goto fail;
    if (created && (r = dir_sync(spool_dir)) < 0)
        goto fail;
    sh->dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sh->dirfd < 0) {
        r = -errno;
        goto fail;
    }

    /* Recovery: journals first, then the records of every owned shard. */
    rc.sh = sh;
    what = "replay journals";
    if ((r = jstate_load_all(&rc.jm, spool_dir, index, nshards)) < 0)
        goto fail;
    what = "list shard directories";
    size_t nks = 0;
    if ((r = walk_list_shards(spool_dir, &ks, &nks)) < 0)
        goto fail;
    what = "recover segments";
    for (size_t i = 0; i < nks; i++) {
        uint32_t max = 0;
        if (ks[i] % nshards != index)
            continue;
        snprintf(path, sizeof path, "%s/shard-%u", spool_dir, ks[i]);
        if ((r = walk_shard(path, ks[i], true, recover_record, &rc, &max)) < 0)
            goto fail;
        if (ks[i] == index)
            sh->seg_no = max;
    }
    jstate_free_all(&rc.jm);

    /* The journal and a fresh segment. */
    what = "open journal";
    int jfd = openat(sh->dirfd, "journal", O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (jfd < 0) {
        r = -errno;
        goto fail;
    }
    sh->jrn.fd = jfd;
    struct stat stt;
    if (fstat(jfd, &stt) < 0) {
        r = -errno;
        goto fail;
    }
    sh->jrn.end = (uint64_t)stt.st_size - (uint64_t)stt.st_size % JRN_ENTRY_LEN;
    what = "create segment";
    if ((r = seg_rotate(sh)) < 0) /* fsyncs the directory: covers the journal too */
        goto fail;
    for (size_t i = sh->nsegs; i-- > 0;) /* segments with nothing live left */
        segcnt_reap(sh, &sh->segs[i]);
    io_loop_set_idle(loop, on_idle, sh);
    sh->idle_set = true;
    log_info("spool: shard=%u of=%u dir=%s messages=%zu segment=%" PRIu32, index, nshards,
             spool_dir, sh->idx.n, sh->seg_no);
    *out = sh;
    free(ks);
    return 0;
fail:
    snprintf(err, errlen, "spool %s: %s: %s", spool_dir, what, strerror(-r));
    jstate_free_all(&rc.jm);
    free(ks);
    if (sh)
        spool_shard_close(sh);
    return r;
}

void spool_shard_close(struct spool_shard *sh)
{
    if (!sh)
        return;
    assert(!sh->seg.fly && !sh->jrn.fly && !sh->seg.open->nent && !sh->jrn.open->nent);
    if (sh->idle_set)
        io_loop_set_idle(sh->loop, NULL, NULL);
    if (sh->timer) {
        if (io_op_busy(sh->timer)) {
            sh->timer->owner = NULL; /* on_timer frees it */
            io_cancel(sh->loop, sh->timer);
        } else {
            free(sh->timer);
        }
    }
    for (int i = 0; i < 2; i++) {
        batch_free(&sh->seg.b[i]);
        batch_free(&sh->jrn.b[i]);
    }
    if (sh->seg.fd >= 0)
        close(sh->seg.fd);
    if (sh->jrn.fd >= 0)
        close(sh->jrn.fd);
    if (sh->dirfd >= 0)
        close(sh->dirfd);
    idmap_clear(&sh->idx, smsg_free_node);
    free(sh->segs);
    free(sh->spool_dir);
    free(sh);
}
