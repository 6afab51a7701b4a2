/* SPDX-License-Identifier: MIT */
/*
 * spool.c - a reactor's spool shard: group commit of message records into
 * append-only segment files and of state changes into journals, the index
 * of live messages, marks and attempts, bounces, and opening (recovery).
 *
 * Group commit.  Each append-only file (a directory's current segment, its
 * journal) is an `appender` with two batches: the open one, which
 * spool_submit() and the marks add to, and at most one in flight.  Closing
 * the open batch writes all its iovecs at the file's end with io_write_sync
 * (write + fdatasync; split in IOV_MAX pieces, all in flight together) and
 * only when every piece completed do the callbacks run, all with the same
 * result.  While a batch is in flight, new commits gather in the next one:
 * under load one fdatasync covers everything that arrived during the
 * previous one.  A segment batch closes when it holds batch_max_bytes, at
 * the loop's idle hook (batch_delay_us = 0) or when the batch timer fires
 * (> 0).  A journal batch closes at the idle hook once it holds an entry
 * that may not wait (jrn_lazy: one with a commit callback, a delete) or the
 * journal timer fired (journal_delay_ms after the first entry that may
 * wait), or when it holds batch_max_bytes: the scheduler's results of many
 * loop turns share one fdatasync instead of taking one each, and leave the
 * disk to the segment batches that sessions wait on.
 *
 * Failure.  If any piece fails, every commit of the batch gets the error,
 * the file is cut back to where the batch began (off the loop thread; the
 * appender holds its next batch until the cut is done) and the append offset
 * stays there, so the next batch overwrites whatever the failed one left: the
 * file up to the append offset always holds whole, acknowledged records.
 * After an error other than ENOSPC the segment is not trusted further (an
 * fsync error may have dropped pages) and the next one is started.
 *
 * Segments.  A segment is deleted (by the helper thread, maint.c) once no
 * live message is located in it and nothing pins it: an open view, a
 * journal entry that made one of its messages final and is not durable yet
 * (so that recovery never finds a snapshot or journal naming a message whose
 * record is gone), or a bounce whose FAILED marks are not journaled yet.
 *
 * Bounces.  spool_submit_bounce writes one record that is both the DSN
 * message and the FAILED marks of the recipients it reports on: when it is
 * durable the marks are applied in memory and journaled (the record stays
 * pinned until they are durable, so the effect survives the bounce's own
 * delivery); recovery applies the marks of every valid bounce record.
 *
 * Recovery (spool_shard_open) loads every owned directory (load.c), builds
 * the index and the due heap, writes a first checkpoint, and logs a report;
 * new records always go to a fresh segment.
 */
#include "spool/shard.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <sys/mman.h>
#include <unistd.h>

#include "io/log.h"
#include "io/metrics.h"

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif
#define SPOOL_IOV_MAX (IOV_MAX < 1024 ? IOV_MAX : 1024)
#define SPOOL_PIECE_MAX (1u << 30) /* bytes per io_write_sync */

#define SPOOL_DEF_BATCH_MAX (1u << 20)
#define SPOOL_DEF_SEGMENT_MAX (64ull << 20)
#define SPOOL_DEF_CKPT_BYTES (4ull << 20)
#define SPOOL_DEF_COMPACT_AGE 60
#define SPOOL_DEF_COMPACT_PCT 50
#define SPOOL_DEF_COMPACT_TURN (1u << 20)

/*
 * Test seam: when set, every io_write_sync completion result goes through
 * it (tests turn a success into -ENOSPC or -EIO after the bytes were
 * written, the worst case for cleanup).
 */
int (*spool_write_res_hook)(int fd, int res);
/* io_write_sync calls made by this process (for the group-commit test). */
uint64_t spool_nwrites;

/* ------------------------------------------------------------- helpers */

int grow(void **p, size_t *cap, size_t need, size_t elem)
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

bool st_final(uint8_t st) { return st == SPOOL_RCPT_DELIVERED || st == SPOOL_RCPT_FAILED; }

struct smsg *smsg_new(uint32_t nrcpts)
{
    struct smsg *m = calloc(1, sizeof *m + (size_t)nrcpts * sizeof m->r[0]);

    if (m) {
        m->nrcpts = nrcpts;
        m->heap_idx = SPOOL_HEAP_NONE;
    }
    return m;
}

void smsg_free(struct smsg *m)
{
    if (!m)
        return;
    for (uint32_t i = 0; i < m->nrcpts; i++)
        free(m->r[i].reply);
    free(m);
}

static void smsg_free_node(struct idmap_node *n) { smsg_free((struct smsg *)n); }

/* --------------------------------------------------------- segment counts */

struct segcnt *segcnt_get(struct sdir *d, uint32_t seg, bool create)
{
    for (size_t i = d->nsegs; i-- > 0;) /* recent segments are at the end */
        if (d->segs[i]->seg == seg)
            return d->segs[i];
    if (!create || grow((void **)&d->segs, &d->segscap, d->nsegs + 1, sizeof *d->segs) < 0)
        return NULL;
    struct segcnt *sc = calloc(1, sizeof *sc);
    if (!sc)
        return NULL;
    sc->dir = d;
    sc->seg = seg;
    sc->fd = -1;
    sc->born = (int64_t)time(NULL);
    d->segs[d->nsegs++] = sc;
    return sc;
}

void seg_detach(struct smsg *m)
{
    struct segcnt *sc = m->sc;

    if (!sc)
        return;
    if (m->sprev)
        m->sprev->snext = m->snext;
    else
        sc->head = m->snext;
    if (m->snext)
        m->snext->sprev = m->sprev;
    m->sprev = m->snext = NULL;
    sc->live--;
    sc->live_bytes -= m->len;
    sc->live_rcpts -= m->nrcpts;
    m->sc = NULL;
    segcnt_maybe_reap(sc);
}

void seg_attach(struct smsg *m, struct segcnt *sc)
{
    if (m->sc == sc)
        return;
    seg_detach(m);
    m->sc = sc;
    m->seg = sc->seg;
    m->sprev = NULL;
    m->snext = sc->head;
    if (sc->head)
        sc->head->sprev = m;
    sc->head = m;
    sc->live++;
    sc->live_bytes += m->len;
    sc->live_rcpts += m->nrcpts;
}

void segcnt_maybe_reap(struct segcnt *sc)
{
    if (sc->live || sc->pins || !sc->clean || sc->current || sc->reaping ||
        sc->dir->sh->closing)
        return;
    maint_reap(sc);
}

void segcnt_unpin(struct segcnt *sc)
{
    assert(sc->pins > 0);
    sc->pins--;
    segcnt_maybe_reap(sc);
}

void index_drop(struct spool_shard *sh, struct smsg *m)
{
    idmap_del(&sh->idx, &m->node);
    if (m->heap_idx != SPOOL_HEAP_NONE)
        heap_remove(sh, m);
    seg_detach(m);
    smsg_free(m);
}

/* ------------------------------------------------------------ batching */

/* Make room for nbuf more bytes, niov more iovecs and one more entry. */
int batch_reserve(struct batch *b, size_t nbuf, int niov)
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
size_t batch_put_own(struct batch *b, size_t len)
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

void batch_put_ext(struct batch *b, const struct iovec *v)
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
    b->urgent = false;
    b->sc = NULL;
}

static void batch_free(struct batch *b)
{
    for (size_t i = 0; i < b->nent; i++)
        free(b->ent[i].fx);
    free(b->buf);
    free(b->iov);
    free(b->boff);
    free(b->ent);
    free(b->ops);
    free(b->opexp);
    memset(b, 0, sizeof *b);
}

static void appender_init(struct appender *a, struct sdir *d, bool is_seg)
{
    memset(a, 0, sizeof *a);
    a->dir = d;
    a->is_seg = is_seg;
    a->fd = -1;
    a->b[0].app = a;
    a->b[1].app = a;
    a->open = &a->b[0];
}

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
    for (size_t i = 0; i < sh->ndirs; i++) {
        struct appender *a = &sh->dirs[i]->seg;
        if (!a->fly && !a->hold && a->open->nent)
            batch_start(a);
    }
}

static void timer_arm(struct spool_shard *sh)
{
    if (!sh->p.batch_delay_us || io_op_busy(sh->timer))
        return;
    uint64_t ms = (sh->p.batch_delay_us + 999) / 1000;
    if (io_timer_start(sh->loop, sh->timer, ms, on_timer) < 0)
        sh->timer_due = true; /* no timer: close at the next chance */
}

/* The journal timer: every journal batch waiting for company is due now
 * (the idle hook of this turn starts those that can start). */
static void on_jtimer(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct spool_shard *sh = op->owner;

    if (!sh) { /* orphaned by spool_shard_close */
        free(op);
        return;
    }
    if (res < 0)
        return;
    for (size_t i = 0; i < sh->ndirs; i++)
        for (int j = 0; j < 2; j++)
            if (sh->dirs[i]->jr[j].open->nent)
                sh->dirs[i]->jr[j].due = true;
}

/*
 * May entry e (with waiter c, or none) wait for company?  An entry nobody
 * waits for (the scheduler's attempts and marks, a bounce's FAILED marks,
 * flags) may: losing it in a crash only repeats work (a recipient tried
 * again, a duplicate delivery; a bounce's marks come back from its record,
 * and a segment stays pinned until the entry that made its last message
 * final is durable).  An entry somebody waits for, or an administrator's
 * delete (a lost delete would deliver a message that was removed), may
 * not; nor may anything while the shard quiesces or closes.  A lazy entry
 * is covered by the journal timer, armed now if it is not yet: its batch
 * goes when the timer fires, when it is full, or with the next entry that
 * may not wait.  False also when no timer could be armed.
 */
static bool jrn_lazy(struct spool_shard *sh, const struct spool_commit *c,
                     const struct jrn_entry *e)
{
    if (c || e->type == JRN_T_DELETE || sh->p.journal_delay_ms == SPOOL_JOURNAL_DELAY_NONE ||
        sh->quiescing || sh->closing)
        return false;
    if (io_op_busy(sh->jtimer)) /* cancelled: it will not fire (one turn) */
        return !sh->jtimer->cancelled;
    return io_timer_start(sh->loop, sh->jtimer, sh->p.journal_delay_ms, on_jtimer) == 0;
}

/* Does an open journal batch hold entries (waiting, or not started yet)? */
static bool jrn_waiting(const struct spool_shard *sh)
{
    for (size_t i = 0; i < sh->ndirs; i++)
        if (sh->dirs[i]->jr[0].open->nent || sh->dirs[i]->jr[1].open->nent)
            return true;
    return false;
}

/* May the open batch of journal a be written now (jrn_lazy)? */
static bool jrn_ready(const struct spool_shard *sh, const struct appender *a)
{
    return a->open->urgent || a->due || a->open->bytes >= sh->p.batch_max_bytes ||
           sh->quiescing || sh->closing;
}

/* Append the journal entry e to d's open journal batch; the segments in
 * unpin (NULL entries allowed) are pinned until it is durable. */
static int jrn_append(struct sdir *d, struct spool_commit *c, const struct jrn_entry *e,
                      struct segcnt *unpin)
{
    struct batch *b = sdir_jrn(d)->open;
    size_t n = jrn_size(e);
    int r;

    if ((r = batch_reserve(b, n, 1)) < 0)
        return r;
    uint64_t rel = b->bytes;
    jrn_encode(b->buf + batch_put_own(b, n), e);
    if (c) {
        memcpy(c->id, e->id, SPOOL_ID_LEN + 1);
        c->next = NULL;
    }
    if (!jrn_lazy(d->sh, c, e))
        b->urgent = true;
    b->ent[b->nent++] = (struct bent){.kind = BE_MARK, .c = c, .rel = rel, .len = n,
                                      .from = unpin};
    if (unpin)
        unpin->pins++;
    d->jrn_bytes += n;
    return 0;
}

/* A bounce record is durable: fail the recipients it names and journal it. */
static void bounce_apply(struct spool_shard *sh, const struct bounce_fx *fx, struct segcnt *bsc)
{
    struct smsg *o = (struct smsg *)idmap_get(&sh->idx, fx->orig);

    if (!o)
        return; /* gone meanwhile (deleted): the record says it all */
    for (size_t i = 0; i < fx->n; i++) {
        struct srcpt *r = &o->r[fx->idx[i]];
        struct jrn_entry e = {.type = JRN_T_STATE, .state = SPOOL_RCPT_FAILED,
                              .rcpt_idx = (int32_t)fx->idx[i]};
        r->bouncing = false;
        if (st_final(r->st))
            continue;
        r->st = SPOOL_RCPT_FAILED;
        memcpy(e.id, fx->orig, SPOOL_ID_LEN + 1);
        /* The bounce record keeps the effect until this entry is durable;
         * without room for the entry it stays pinned until restart. */
        if (jrn_append(o->dir, NULL, &e, bsc) < 0) {
            log_warnx("spool: id=%s out of memory journaling a bounce: kept by its record",
                      fx->orig);
            bsc->pins++;
        }
    }
    if (!smsg_live(o)) {
        /* o's record goes once the last FAILED entry is durable. */
        struct batch *jb = sdir_jrn(o->dir)->open;
        if (jb->nent && !jb->ent[jb->nent - 1].from) {
            jb->ent[jb->nent - 1].from = o->sc;
            o->sc->pins++;
        } else if (o->sc) {
            o->sc->pins++; /* no entry to tie it to: kept until restart */
        }
        index_drop(sh, o);
    } else {
        heap_update(sh, o);
    }
}

/* Index the records of a durable segment batch. */
static void batch_index(struct spool_shard *sh, struct batch *b)
{
    struct sdir *d = b->app->dir;
    struct segcnt *sc = b->sc;

    for (size_t i = 0; i < b->nent; i++) {
        struct bent *e = &b->ent[i];
        if (e->kind != BE_RECORD)
            continue;
        struct smsg *m = smsg_new(e->nrcpts);
        if (m)
            memcpy(m->node.id, e->id, SPOOL_ID_LEN + 1);
        if (!m || idmap_put(&sh->idx, &m->node) < 0) {
            /* The record is durable; recovery finds it.  A snapshot would
             * forget it: none is taken until then. */
            log_warnx("spool: id=%s out of memory indexing: found again at restart", e->id);
            smsg_free(m);
            sc->clean = false;
            d->no_ckpt++;
            continue;
        }
        m->dir = d;
        m->off = b->base + e->rel;
        m->len = e->len;
        m->size = e->size;
        m->received_at = e->received_at;
        seg_attach(m, sc);
        heap_add(sh, m);
        sh->ready_new = true;
        if (e->fx) {
            bounce_apply(sh, e->fx, sc);
            free(e->fx);
            e->fx = NULL;
        }
    }
}

/* A failed segment batch: undo what its entries announced. */
static void batch_unwind(struct spool_shard *sh, struct batch *b)
{
    for (size_t i = 0; i < b->nent; i++) {
        struct bent *e = &b->ent[i];
        if (e->kind == BE_RECORD && e->fx) {
            struct smsg *o = (struct smsg *)idmap_get(&sh->idx, e->fx->orig);
            for (size_t k = 0; o && k < e->fx->n; k++)
                o->r[e->fx->idx[k]].bouncing = false;
            if (o)
                heap_update(sh, o);
            free(e->fx);
            e->fx = NULL;
        }
    }
}

/* Every piece of the in-flight batch b completed. */
static void batch_done(struct batch *b)
{
    struct appender *a = b->app;
    struct sdir *d = a->dir;
    struct spool_shard *sh = d->sh;
    struct spool_commit *head = NULL, **tail = &head;
    int err = b->err;

    assert(a->fly == b);
    metrics_spool_batch(a->is_seg, b->nent, b->bytes, io_loop_now(sh->loop) - b->started_ns, err);
    if (err == 0) {
        a->end = b->base + b->bytes;
        if (a->is_seg) {
            b->sc->size = a->end;
            batch_index(sh, b);
            maint_copies_done(sh, b, 0);
        } else {
            for (size_t i = 0; i < b->nent; i++)
                if (b->ent[i].from)
                    segcnt_unpin(b->ent[i].from);
        }
    } else {
        log_warnx("spool: shard=%u %s write failed offset=%" PRIu64 " bytes=%" PRIu64
                  " commits=%zu error=\"%s\"",
                  d->k, a->is_seg ? "segment" : "journal", b->base, b->bytes, b->nent,
                  strerror(-err));
        if (a->is_seg) {
            batch_unwind(sh, b);
            maint_copies_done(sh, b, err);
        } else {
            /* Entries that made messages final are not durable: their
             * segments stay (pinned) and no segment is reaped before a
             * snapshot has the state. */
            d->jrn_failed = true;
        }
        /* Cut what the failed batch may have left; the next batch
         * overwrites from b->base anyway (and waits for the cut). */
        maint_truncate(a, b->base);
        if (a->is_seg && err != -ENOSPC)
            maint_after_seg_error(d);
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
    if (sh->ready_new) {
        sh->ready_new = false;
        if (sh->ready_fn)
            sh->ready_fn(sh, sh->ready_arg);
    }
    if (!a->is_seg)
        maint_journal_done(d, a);
    if (a->fly || a->hold || !a->open->nent || a->fd < 0)
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

/* Pieces of at most SPOOL_IOV_MAX iovecs and SPOOL_PIECE_MAX bytes
 * (io_write_sync reports an int) starting at iovec i: their count. */
static int piece_len(const struct batch *b, int i, uint64_t *len)
{
    int cnt = 0;

    *len = 0;
    while (i + cnt < b->niov && cnt < SPOOL_IOV_MAX &&
           (cnt == 0 || *len + b->iov[i + cnt].iov_len <= SPOOL_PIECE_MAX))
        *len += b->iov[i + cnt++].iov_len;
    return cnt;
}

/* Close the open batch of a (nothing in flight) and write it. */
void batch_start(struct appender *a)
{
    struct sdir *d = a->dir;
    struct spool_shard *sh = d->sh;
    struct batch *b = a->open;
    uint64_t off, len;
    int r;

    assert(!a->fly && !a->hold && b->nent);
    a->due = false;
    if (a->is_seg) {
        sh->timer_due = false;
        if (a->end > 0 && a->end + b->bytes > sh->p.segment_max_bytes &&
            (r = maint_rotate(d)) < 0 && r != -EAGAIN)
            log_warnx("spool: shard=%u rotate: %s (segment keeps growing)", d->k,
                      strerror(-r));
        b->sc = d->cur;
    }
    a->fly = b;
    a->open = b == &a->b[0] ? &a->b[1] : &a->b[0];
    b->started_ns = io_loop_now(sh->loop);
    b->base = a->end;
    b->err = 0;
    b->pending = 0;
    for (int i = 0; i < b->niov; i++)
        if (b->boff[i] != SIZE_MAX)
            b->iov[i].iov_base = b->buf + b->boff[i];
    int npieces = 0;
    for (int i = 0; i < b->niov; npieces++)
        i += piece_len(b, i, &len);
    size_t c1 = (size_t)b->opcap, c2 = (size_t)b->opcap;
    if (grow((void **)&b->ops, &c1, (size_t)npieces, sizeof *b->ops) < 0 ||
        grow((void **)&b->opexp, &c2, (size_t)npieces, sizeof *b->opexp) < 0)
        b->err = -ENOMEM;
    b->opcap = (int)(c1 < c2 ? c1 : c2);
    off = b->base;
    for (int i = 0, k = 0; i < b->niov && b->err == 0; k++) {
        int cnt = piece_len(b, i, &len);
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
        if (b->err == 0)
            b->err = -EIO;
        io_op_init(&b->ops[0], b);
        r = io_defer(sh->loop, &b->ops[0], on_start_failed);
        assert(r == 0);
        (void)r;
    }
}

static void on_idle(void *arg)
{
    struct spool_shard *sh = arg;

    for (size_t i = 0; i < sh->ndirs; i++) {
        struct sdir *d = sh->dirs[i];
        if (!d->seg.fly && !d->seg.hold && d->seg.open->nent &&
            (sh->p.batch_delay_us == 0 || sh->timer_due))
            batch_start(&d->seg);
        for (int j = 0; j < 2; j++) {
            struct appender *a = &d->jr[j];
            if (!a->fly && !a->hold && a->open->nent && a->fd >= 0 && jrn_ready(sh, a))
                batch_start(a);
        }
    }
    /* The journal timer covers entries waiting in open journal batches;
     * with none left (a batch took them) it would only keep the shard from
     * being idle. */
    if (io_op_busy(sh->jtimer) && !jrn_waiting(sh))
        io_cancel(sh->loop, sh->jtimer);
    maint_turn(sh);
    if (sh->quiescing && sh->quiesce_fn && spool_shard_idle(sh)) {
        void (*fn)(void *) = sh->quiesce_fn;
        sh->quiesce_fn = NULL;
        fn(sh->quiesce_arg);
    }
}

/* ------------------------------------------------------------ submitting */

static int submit_record(struct sdir *d, struct spool_commit *c, const struct rec_env_in *in,
                         const struct iovec *data, int iovcnt, struct bounce_fx *fx)
{
    struct spool_shard *sh = d->sh;
    struct batch *b = d->seg.open;
    const struct spool_envelope *env = in->env;
    uint64_t data_len = 0;
    size_t env_len;
    int r;

    if (iovcnt < 0 || (iovcnt > 0 && !data) || !c || !c->cb || env->nrcpts == 0 ||
        env->nrcpts > UINT32_MAX / 64)
        return -EINVAL;
    env_len = rec_env_size(in);
    if (env_len == 0)
        return -EINVAL;
    for (int i = 0; i < iovcnt; i++)
        data_len += data[i].iov_len;
    if ((r = batch_reserve(b, REC2_HDR_LEN + env_len + REC_ALIGN, iovcnt + 2)) < 0)
        return r;

    rec_id_make(c->id, (int64_t)time(NULL), sh->index, sh->seq++);
    uint64_t rel = b->bytes;
    size_t hoff = batch_put_own(b, REC2_HDR_LEN + env_len);
    uint8_t *hdr = b->buf + hoff;
    rec_env_encode(in, hdr + REC2_HDR_LEN);
    rec_hdr_build(hdr, d->key, c->id, hdr + REC2_HDR_LEN, (uint32_t)env_len, data, iovcnt,
                  data_len);
    for (int i = 0; i < iovcnt; i++)
        if (data[i].iov_len)
            batch_put_ext(b, &data[i]);
    size_t pad = rec_pad(REC2_HDR_LEN + env_len + data_len);
    if (pad)
        memset(b->buf + batch_put_own(b, pad), 0, pad);
    c->next = NULL;
    struct bent *e = &b->ent[b->nent++];
    *e = (struct bent){.kind = BE_RECORD, .c = c, .rel = rel, .len = b->bytes - rel,
                       .nrcpts = (uint32_t)env->nrcpts, .size = data_len,
                       .received_at = env->received_at, .fx = fx};
    memcpy(e->id, c->id, SPOOL_ID_LEN + 1);

    if (b->bytes >= sh->p.batch_max_bytes && !d->seg.fly && !d->seg.hold)
        batch_start(&d->seg);
    else if (b->nent == 1)
        timer_arm(sh);
    return 0;
}

int spool_submit(struct spool_shard *sh, struct spool_commit *c,
                 const struct spool_envelope *env, const struct iovec *data, int iovcnt)
{
    struct rec_env_in in = {.env = env};

    return submit_record(sh->dirs[0], c, &in, data, iovcnt, NULL);
}

int spool_submit_bounce(struct spool_shard *sh, struct spool_commit *c, const char *orig_id,
                        const uint32_t *rcpt_idx, size_t n, const struct spool_envelope *env,
                        const struct iovec *data, int iovcnt)
{
    struct smsg *o;
    struct bounce_fx *fx;
    int r;

    if (!rec_id_ok(orig_id) || n == 0 || !rcpt_idx)
        return -EINVAL;
    o = (struct smsg *)idmap_get(&sh->idx, orig_id);
    if (!o)
        return -ENOENT;
    for (size_t i = 0; i < n; i++) {
        if (rcpt_idx[i] >= o->nrcpts)
            return -EINVAL;
        for (size_t j = 0; j < i; j++)
            if (rcpt_idx[j] == rcpt_idx[i])
                return -EINVAL;
        if (st_final(o->r[rcpt_idx[i]].st) || o->r[rcpt_idx[i]].bouncing)
            return -EALREADY;
    }
    fx = malloc(sizeof *fx + n * sizeof fx->idx[0]);
    if (!fx)
        return -ENOMEM;
    memcpy(fx->orig, orig_id, SPOOL_ID_LEN + 1);
    fx->n = n;
    memcpy(fx->idx, rcpt_idx, n * sizeof fx->idx[0]);
    struct rec_env_in in = {.env = env, .bounce_of = orig_id, .bounce_idx = rcpt_idx,
                            .nbounce = n};
    if ((r = submit_record(o->dir, c, &in, data, iovcnt, fx)) < 0) {
        free(fx);
        return r;
    }
    for (size_t i = 0; i < n; i++)
        o->r[rcpt_idx[i]].bouncing = true;
    heap_update(sh, o);
    return 0;
}

size_t spool_shard_count(const struct spool_shard *sh) { return sh->idx.n; }

/* ----------------------------------------------------------------- marks */

/*
 * The message a mark names, for recipient rcpt_idx (-1: the whole message):
 * the common checks of spool_mark, spool_attempt and spool_msg_flags.
 * Returns 0 with *out, -EINVAL (a bad id or index, or c without a
 * callback) or -ENOENT.
 */
static int mark_find(struct spool_shard *sh, const struct spool_commit *c, const char *id,
                     int rcpt_idx, struct smsg **out)
{
    struct smsg *m;

    if (!rec_id_ok(id) || rcpt_idx < -1 || (c && !c->cb))
        return -EINVAL;
    m = (struct smsg *)idmap_get(&sh->idx, id);
    if (!m)
        return -ENOENT;
    if (rcpt_idx >= 0 && (uint32_t)rcpt_idx >= m->nrcpts)
        return -EINVAL;
    *out = m;
    return 0;
}

/*
 * Journal e for message m, id (and apply it): the common tail of spool_mark,
 * spool_attempt and spool_msg_flags.  A message that becomes final leaves the
 * index; its segment stays pinned until the entry is durable.
 */
static int mark_commit(struct spool_shard *sh, struct spool_commit *c, struct smsg *m,
                       const char *id, struct jrn_entry *e)
{
    struct sdir *d = m->dir;
    int r;

    memcpy(e->id, id, SPOOL_ID_LEN + 1);
    if ((r = jrn_append(d, c, e, NULL)) < 0)
        return r;
    smsg_apply(m, e);
    if (m->deleted || !smsg_live(m)) {
        struct batch *jb = sdir_jrn(d)->open;
        struct bent *be = &jb->ent[jb->nent - 1];
        if (m->sc) {
            be->from = m->sc;
            m->sc->pins++;
        }
        index_drop(sh, m);
    } else if (!m->out) {
        heap_update(sh, m);
    }
    return 0;
}

int spool_mark(struct spool_shard *sh, struct spool_commit *c, const char *id, int rcpt_idx,
               enum spool_rcpt_state st, int64_t until)
{
    struct smsg *m;
    int r;

    if (st == SPOOL_RCPT_PENDING || st > SPOOL_RCPT_DELETED ||
        (st == SPOOL_RCPT_DELETED && rcpt_idx != -1))
        return -EINVAL;
    if ((r = mark_find(sh, c, id, rcpt_idx, &m)) < 0)
        return r;
    struct jrn_entry e = {.type = st == SPOOL_RCPT_DELETED ? JRN_T_DELETE : JRN_T_STATE,
                          .state = (uint8_t)st, .rcpt_idx = rcpt_idx, .next_at = until};
    return mark_commit(sh, c, m, id, &e);
}

int spool_attempt(struct spool_shard *sh, struct spool_commit *c, const char *id,
                  int rcpt_idx, const struct spool_attempt *a)
{
    char reply[SPOOL_REPLY_MAX + 1];
    struct smsg *m;
    int r;

    if (!a || (a->state != SPOOL_RCPT_DELIVERED && a->state != SPOOL_RCPT_DEFERRED &&
               a->state != SPOOL_RCPT_FAILED))
        return -EINVAL;
    if ((r = mark_find(sh, c, id, rcpt_idx, &m)) < 0)
        return r;
    if (rcpt_idx >= 0 && st_final(m->r[rcpt_idx].st))
        return -EALREADY;
    struct jrn_entry e = {.type = JRN_T_ATTEMPT, .state = (uint8_t)a->state,
                          .rcpt_idx = rcpt_idx, .next_at = a->next_at,
                          .last_at = a->at ? a->at : (int64_t)time(NULL)};
    if (a->reply) {
        e.reply_len = (uint16_t)rec_reply_escape(reply, sizeof reply, a->reply, a->reply_len);
        e.reply = reply;
    }
    return mark_commit(sh, c, m, id, &e);
}

int spool_msg_flags(struct spool_shard *sh, struct spool_commit *c, const char *id,
                    uint32_t flags)
{
    struct smsg *m;
    int r;

    if ((r = mark_find(sh, c, id, -1, &m)) < 0)
        return r;
    struct jrn_entry e = {.type = JRN_T_MFLAGS, .rcpt_idx = -1, .mflags = flags};
    return mark_commit(sh, c, m, id, &e);
}

/* ---------------------------------------------------------------- ready */

static void on_ready(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct spool_shard *sh = op->owner;

    if (!sh) {
        free(op);
        return;
    }
    if (res == 0 && sh->ready_fn)
        sh->ready_fn(sh, sh->ready_arg);
}

void ready_kick(struct spool_shard *sh)
{
    if (!io_op_busy(sh->ready_op))
        io_defer(sh->loop, sh->ready_op, on_ready);
}

void spool_set_ready_cb(struct spool_shard *sh, spool_ready_cb fn, void *arg)
{
    sh->ready_fn = fn;
    sh->ready_arg = arg;
}

/* ------------------------------------------------------------- opening */

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

static void sdir_free(struct sdir *d)
{
    if (!d)
        return;
    for (int i = 0; i < 2; i++) {
        batch_free(&d->seg.b[i]);
        batch_free(&d->jr[0].b[i]);
        batch_free(&d->jr[1].b[i]);
    }
    for (size_t i = 0; i < d->nsegs; i++) {
        if (d->segs[i]->vmap)
            munmap(d->segs[i]->vmap, d->segs[i]->vmap_len);
        if (d->segs[i]->fd >= 0)
            close(d->segs[i]->fd);
        free(d->segs[i]);
    }
    free(d->segs);
    if (d->spare_fd >= 0)
        close(d->spare_fd);
    for (int j = 0; j < 2; j++)
        if (d->jfd[j] >= 0)
            close(d->jfd[j]);
    if (d->dirfd >= 0)
        close(d->dirfd);
    free(d);
}

/*
 * Remove an adopted directory that holds nothing live: our files in it,
 * then the directory (left in place if anything else is there).
 */
static void dir_retire(struct sdir *d, const char *path)
{
    DIR *dir = fdopendir(dup(d->dirfd));
    struct dirent *de;

    if (!dir)
        return;
    rewinddir(dir); /* the dup shares its offset with every other reader */
    while ((de = readdir(dir))) {
        const char *n = de->d_name;
        if (strncmp(n, "seg-", 4) == 0 || strncmp(n, "journal", 7) == 0 ||
            strcmp(n, "snapshot") == 0 || strcmp(n, "snapshot.tmp") == 0 ||
            strcmp(n, "key") == 0)
            unlinkat(d->dirfd, n, 0);
    }
    closedir(dir);
    if (rmdir(path) == 0)
        log_info("spool: shard=%u event=retired dir=%s", d->sh->index, path);
}

/*
 * Open directory k: load it, move its messages into the index and attach
 * them to their segments.  An adopted directory with nothing live in it and
 * nothing unreadable is removed instead.
 */
static int sdir_open(struct spool_shard *sh, unsigned k, struct load_stats *st,
                     const char **what)
{
    char path[4096];
    struct ldir ld = {0};
    struct sdir *d = calloc(1, sizeof *d);
    int r;

    if (!d)
        return -ENOMEM;
    d->sh = sh;
    d->k = k;
    d->dirfd = d->spare_fd = d->jfd[0] = d->jfd[1] = -1;
    appender_init(&d->seg, d, true);
    appender_init(&d->jr[0], d, false);
    appender_init(&d->jr[1], d, false);
    snprintf(path, sizeof path, "%s/shard-%u", sh->spool_dir, k);
    *what = "open shard directory";
    d->dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d->dirfd < 0) {
        r = -errno;
        goto fail;
    }
    *what = "read the directory key";
    if ((r = key_load(d->dirfd, true, d->key)) < 0)
        goto fail;
    d->has_key = true;
    *what = "recover";
    if ((r = load_dir(sh->spool_dir, k, d->dirfd, d->key, true, &ld, st)) < 0)
        goto fail;
    d->seg_no = ld.max_seg;
    d->jrn_gen = ld.max_gen;
    d->snap_bytes = ld.snap_size;

    /* Segments, then the messages into them and the index. */
    *what = "index";
    for (size_t i = 0; i < ld.nsegs; i++) {
        struct segcnt *sc = segcnt_get(d, ld.segs[i].seg, true);
        if (!sc) {
            r = -ENOMEM;
            goto fail;
        }
        sc->size = ld.segs[i].size;
        sc->clean = ld.segs[i].clean;
    }
    for (size_t i = 0; i < ld.idx.nb; i++) {
        struct idmap_node *x = ld.idx.b[i], *next;
        for (; x; x = next) {
            struct smsg *m = (struct smsg *)x;
            next = x->next;
            struct segcnt *sc = segcnt_get(d, m->seg, true);
            if (!sc || idmap_get(&sh->idx, m->node.id) || idmap_put(&sh->idx, &m->node) < 0) {
                if (sc && idmap_get(&sh->idx, m->node.id))
                    log_warnx("spool: duplicate id=%s shard=%u (kept the first)", m->node.id,
                              k);
                smsg_free(m);
                continue;
            }
            m->dir = d;
            seg_attach(m, sc);
            heap_add(sh, m);
        }
        ld.idx.b[i] = NULL;
    }
    ld.idx.n = 0;
    /* Descriptors for views of segments with live messages. */
    for (size_t i = 0; i < d->nsegs; i++) {
        struct segcnt *sc = d->segs[i];
        char name[32];
        if (!sc->live)
            continue;
        snprintf(name, sizeof name, "seg-%08" PRIu32, sc->seg);
        sc->fd = openat(d->dirfd, name, O_RDONLY | O_CLOEXEC);
        if (sc->fd < 0) {
            r = -errno;
            *what = "open a segment";
            goto fail;
        }
    }
    ldir_free(&ld);
    if (k != sh->index) {
        bool empty = true;
        for (size_t i = 0; i < d->nsegs && empty; i++)
            empty = d->segs[i]->live == 0 && d->segs[i]->clean;
        if (empty) {
            dir_retire(d, path);
            sdir_free(d);
            return 0;
        }
    }
    if (grow((void **)&sh->dirs, &sh->dirscap, sh->ndirs + 1, sizeof *sh->dirs) < 0) {
        r = -ENOMEM;
        goto fail_noload;
    }
    sh->dirs[sh->ndirs++] = d;
    return 0;
fail:
    ldir_free(&ld);
fail_noload:
    sdir_free(d);
    return r;
}

int spool_shard_open(struct io_loop *loop, const char *spool_dir, unsigned index,
                     unsigned nshards, const struct spool_params *params,
                     struct spool_shard **out, char *err, size_t errlen)
{
    struct spool_shard *sh = NULL;
    struct load_stats st = {0};
    char path[4096];
    const char *what = "";
    bool created;
    unsigned *ks = NULL;
    size_t nks = 0;
    uint64_t t0 = io_loop_now(loop);
    int r;

    *out = NULL;
    if (nshards == 0 || index >= nshards || nshards > 65536) {
        r = -EINVAL;
        what = "bad shard index";
        goto fail;
    }
    sh = calloc(1, sizeof *sh);
    if (!sh || !(sh->spool_dir = strdup(spool_dir)) ||
        !(sh->timer = calloc(1, sizeof *sh->timer)) ||
        !(sh->jtimer = calloc(1, sizeof *sh->jtimer)) ||
        !(sh->ready_op = calloc(1, sizeof *sh->ready_op))) {
        r = -ENOMEM;
        what = "out of memory";
        goto fail;
    }
    sh->loop = loop;
    sh->index = index;
    sh->nshards = nshards;
    if (params)
        sh->p = *params;
    if (!sh->p.batch_max_bytes)
        sh->p.batch_max_bytes = SPOOL_DEF_BATCH_MAX;
    if (!sh->p.segment_max_bytes)
        sh->p.segment_max_bytes = SPOOL_DEF_SEGMENT_MAX;
    if (!sh->p.checkpoint_bytes)
        sh->p.checkpoint_bytes = SPOOL_DEF_CKPT_BYTES;
    if (!sh->p.compact_min_age)
        sh->p.compact_min_age = SPOOL_DEF_COMPACT_AGE;
    if (!sh->p.compact_live_pct)
        sh->p.compact_live_pct = SPOOL_DEF_COMPACT_PCT;
    if (!sh->p.compact_turn_bytes)
        sh->p.compact_turn_bytes = SPOOL_DEF_COMPACT_TURN;
    if (!sh->p.journal_delay_ms)
        sh->p.journal_delay_ms = SPOOL_JOURNAL_DELAY_DEFAULT;
    io_op_init(sh->timer, sh);
    io_op_init(sh->jtimer, sh);
    io_op_init(sh->ready_op, sh);

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
    what = "start the helper thread";
    if ((r = maint_start(sh)) < 0)
        goto fail;

    /* Recovery: our own directory first (dirs[0]), then adopted ones. */
    what = "list shard directories";
    if ((r = walk_list_shards(spool_dir, &ks, &nks)) < 0)
        goto fail;
    if ((r = sdir_open(sh, index, &st, &what)) < 0)
        goto fail;
    for (size_t i = 0; i < nks; i++) {
        if (ks[i] % nshards != index || ks[i] == index)
            continue;
        if ((r = sdir_open(sh, ks[i], &st, &what)) < 0)
            goto fail;
    }

    /* A fresh segment and journal, and a checkpoint of what was recovered. */
    for (size_t i = 0; i < sh->ndirs; i++) {
        struct sdir *d = sh->dirs[i];
        what = "checkpoint";
        if ((r = maint_checkpoint_now(d)) < 0)
            goto fail;
        for (size_t j = d->nsegs; j-- > 0;) /* segments with nothing live left */
            segcnt_maybe_reap(d->segs[j]);
    }
    io_loop_set_idle(loop, on_idle, sh);
    sh->idle_set = true;
    st.live = sh->idx.n;
    sh->rstats = st;
    uint64_t ms = (io_loop_now(loop) - t0) / 1000000u;
    if (st.regions || st.jrn_skipped || st.lost)
        log_warnx("spool: shard=%u event=recovered dirs=%zu records=%" PRIu64
                  " snapshot_messages=%" PRIu64 " live=%" PRIu64 " quarantined_bytes=%" PRIu64
                  " bad_regions=%" PRIu64 " torn_bytes=%" PRIu64 " journal_entries=%" PRIu64
                  " journal_skipped=%" PRIu64 " lost=%" PRIu64 " ms=%" PRIu64,
                  index, sh->ndirs, st.records, st.snap_msgs, st.live, st.quarantined,
                  st.regions, st.torn, st.jrn_entries, st.jrn_skipped, st.lost, ms);
    else
        log_info("spool: shard=%u event=recovered dirs=%zu records=%" PRIu64
                 " snapshot_messages=%" PRIu64 " live=%" PRIu64 " quarantined_bytes=0"
                 " bad_regions=0 torn_bytes=%" PRIu64 " journal_entries=%" PRIu64
                 " journal_skipped=0 lost=0 ms=%" PRIu64,
                 index, sh->ndirs, st.records, st.snap_msgs, st.live, st.torn,
                 st.jrn_entries, ms);
    *out = sh;
    free(ks);
    return 0;
fail:
    snprintf(err, errlen, "spool %s: %s: %s", spool_dir, what, strerror(-r));
    free(ks);
    if (sh)
        spool_shard_close(sh);
    return r;
}

bool spool_shard_idle(const struct spool_shard *sh)
{
    if ((sh->ready_op && io_op_busy(sh->ready_op)) || (sh->timer && io_op_busy(sh->timer)) ||
        (sh->jtimer && io_op_busy(sh->jtimer)))
        return false;
    for (size_t i = 0; i < sh->ndirs; i++) {
        const struct sdir *d = sh->dirs[i];
        if (d->seg.fly || d->jr[0].fly || d->jr[1].fly || d->seg.open->nent ||
            d->jr[0].open->nent || d->jr[1].open->nent || d->seg.hold || d->jr[0].hold ||
            d->jr[1].hold)
            return false;
    }
    return maint_idle(sh);
}

void spool_shard_quiesce(struct spool_shard *sh, void (*fn)(void *arg), void *arg)
{
    sh->quiescing = true;
    sh->quiesce_fn = fn;
    sh->quiesce_arg = arg;
    /* the idle hook calls fn on a coming turn, once idle */
}

static void on_close_tick(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct spool_shard *sh = op->owner;

    if (!sh) { /* abandoned by a close that could not wait */
        free(op);
        return;
    }
    io_loop_stop(sh->loop);
}

/* Run the loop until the shard is idle (spool_shard_close's contract). */
static void close_drain(struct spool_shard *sh)
{
    struct io_op *t;

    if (spool_shard_idle(sh) || io_loop_running(sh->loop) || !(t = calloc(1, sizeof *t)))
        return;
    io_op_init(t, sh);
    sh->quiescing = true; /* no new checkpoint or compaction */
    for (int i = 0; i < 30000 && !spool_shard_idle(sh); i++) {
        if (!io_op_busy(t) && io_timer_start(sh->loop, t, 1, on_close_tick) < 0)
            break;
        if (io_loop_run(sh->loop) < 0)
            break;
    }
    if (io_op_busy(t)) { /* stopped by someone else's callback: take it back */
        io_cancel(sh->loop, t);
        for (int i = 0; i < 100 && io_op_busy(t); i++)
            if (io_loop_run(sh->loop) < 0)
                break;
    }
    if (io_op_busy(t))
        t->owner = NULL; /* on_close_tick frees it, if the loop ever runs */
    else
        free(t);
}

void spool_shard_close(struct spool_shard *sh)
{
    if (!sh)
        return;
    close_drain(sh);
    sh->closing = true;
    assert(sh->nviews == 0);
    for (size_t i = 0; i < sh->ndirs; i++)
        assert(!sh->dirs[i]->seg.fly && !sh->dirs[i]->jr[0].fly && !sh->dirs[i]->jr[1].fly);
    if (sh->idle_set)
        io_loop_set_idle(sh->loop, NULL, NULL);
    maint_stop(sh);
    if (sh->timer) {
        if (io_op_busy(sh->timer)) {
            sh->timer->owner = NULL; /* on_timer frees it */
            io_cancel(sh->loop, sh->timer);
        } else {
            free(sh->timer);
        }
    }
    if (sh->jtimer) {
        if (io_op_busy(sh->jtimer)) {
            sh->jtimer->owner = NULL; /* on_jtimer frees it */
            io_cancel(sh->loop, sh->jtimer);
        } else {
            free(sh->jtimer);
        }
    }
    if (sh->ready_op) {
        if (io_op_busy(sh->ready_op)) {
            sh->ready_op->owner = NULL; /* on_ready frees it */
            io_cancel(sh->loop, sh->ready_op);
        } else {
            free(sh->ready_op);
        }
    }
    for (size_t i = 0; i < sh->ndirs; i++)
        sdir_free(sh->dirs[i]);
    free(sh->dirs);
    idmap_clear(&sh->idx, smsg_free_node);
    free(sh->heap);
    free(sh->spool_dir);
    free(sh);
}
