/* SPDX-License-Identifier: MIT */
/*
 * shard.h - private to spool/: the in-memory structures of a shard and the
 * functions its files share.
 *
 *   spool.c   open/close, group commit (appenders and batches), submit, marks,
 *             bounces, the index and the per-segment counts
 *   load.c    reading a shard directory: snapshot, journals, segment walk
 *             with resynchronisation and quarantine; spool_scan
 *   sched.c   the due heap, views, listing
 *   maint.c   the helper thread, rotation, reaping, checkpoints, compaction
 *
 * Ownership: a shard owns its directories (struct sdir), each directory its
 * segment counters (struct segcnt) and appenders; the index owns the live
 * messages (struct smsg).  Everything is touched on the loop thread only,
 * except what maint.c hands to its helper thread (a job owns its memory).
 */
#ifndef ORTOO_SPOOL_SHARD_H
#define ORTOO_SPOOL_SHARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/loop.h"
#include "spool/record.h"
#include "spool/spool.h"

#define SPOOL_HEAP_NONE SIZE_MAX

struct sdir;
struct segcnt;
struct spool_maint;

/* One recipient of a live message. */
struct srcpt {
    uint8_t st;             /* enum spool_rcpt_state, never DELETED */
    bool bouncing;          /* named by a bounce record not yet durable */
    uint32_t attempts;
    int64_t next_at, last_at;
    char *reply;            /* escaped last reply (malloc'ed) or NULL */
};

/*
 * A live message.  Invariants: in the shard's index iff live (some
 * recipient not final, not deleted); on its segment's list (sc) iff sc is
 * set; in the due heap iff !out (heap_idx then valid).
 */
struct smsg {
    struct idmap_node node; /* id (first member: the index casts) */
    struct sdir *dir;       /* directory holding the record */
    struct segcnt *sc;      /* its segment (NULL while loading) */
    struct smsg *sprev, *snext; /* sc's list */
    uint32_t seg;           /* segment number */
    uint64_t off, len;      /* record offset and padded length */
    uint64_t size;          /* wire-form data bytes */
    int64_t received_at;
    int64_t due;            /* heap key: earliest next_at of a non-final rcpt */
    size_t heap_idx;        /* SPOOL_HEAP_NONE when not in the heap */
    uint32_t nrcpts;
    uint32_t mflags;        /* SPOOL_MF_* */
    uint32_t views;         /* open views */
    bool out;               /* checked out (spool_due_next) */
    bool deleted;           /* loading: a DELETE entry was replayed */
    bool moving;            /* a compaction copy is in flight */
    bool unverified;        /* loading: from the snapshot, record not read yet */
    struct srcpt r[];       /* nrcpts */
};

/*
 * One segment file of a directory.  live/live_bytes count the messages
 * located in it (their list is head).  A segment is deleted when nothing is
 * live or pinned in it, it is clean (every byte is whole records or was
 * quarantined) and it is not being written.
 */
struct segcnt {
    struct sdir *dir;
    uint32_t seg;
    int fd;                 /* open for views (owned), or -1 */
    uint32_t live;
    uint64_t live_bytes;
    uint64_t live_rcpts;    /* recipients of those messages */
    uint64_t size;          /* bytes of whole records in the file */
    uint32_t pins;          /* open views, unjournaled bounce effects, copies */
    bool clean;
    bool current;           /* the directory's append segment */
    bool reaping;           /* unlink queued */
    int64_t born;           /* unix time it was created (or found) */
    struct smsg *head;
    void *map;              /* compaction: the file mapped, or NULL */
    size_t map_len;
    void *vmap;             /* views: the whole segment mapped once (at
                               least segment_max_bytes, past EOF included),
                               or NULL; unmapped when the segment goes */
    size_t vmap_len;
};

/* One commit in a batch. */
enum { BE_RECORD = 1, BE_COPY, BE_MARK };
struct bounce_fx {          /* a bounce record's effect, applied when durable */
    char orig[SPOOL_ID_LEN + 1];
    size_t n;
    uint32_t idx[];
};
struct bent {
    uint8_t kind;           /* BE_* */
    struct spool_commit *c; /* NULL for internal entries */
    uint64_t rel;           /* offset from the batch start */
    uint64_t len;           /* padded length */
    uint32_t nrcpts;        /* RECORD */
    uint64_t size;          /* RECORD: data bytes */
    int64_t received_at;    /* RECORD */
    char id[SPOOL_ID_LEN + 1]; /* RECORD, COPY */
    struct bounce_fx *fx;   /* RECORD of a bounce (owned) */
    struct segcnt *from;    /* COPY: source segment; MARK: segment to unpin */
    uint64_t from_off;      /* COPY */
};

/*
 * A batch of appends.  Invariants: iov[i] points into buf when
 * boff[i] != SIZE_MAX (fixed up when the batch starts, since buf moves while
 * it grows); bytes is the sum of all iov lengths and a multiple of 8; ops
 * has one entry at least (for the failure path) and grows to one per piece
 * when the batch starts.
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
    bool urgent;            /* journal: an entry that may not wait (a waiter,
                               a delete): close at the next idle hook */
    struct io_op *ops;      /* one per IOV_MAX piece while in flight */
    uint64_t *opexp;        /* bytes each piece must report */
    int opcap, pending;     /* pieces allocated, pieces still in flight */
    int err;                /* first error of the pieces */
    uint64_t base;          /* file offset of the batch */
    struct segcnt *sc;      /* segment written to */
    uint64_t started_ns;    /* io_loop_now at batch_start (metrics) */
};

/* An append-only file with group commit (spool.c's file comment). */
struct appender {
    struct sdir *dir;
    bool is_seg;            /* a segment (else the journal) */
    int fd;                 /* borrowed: owned by the segcnt or the sdir */
    uint64_t end;           /* append offset: everything before is durable */
    struct batch b[2];
    struct batch *open;     /* collecting */
    struct batch *fly;      /* written now, or NULL */
    uint8_t hold;           /* do not start batches: HOLD_* bits (maint.c) */
    bool due;               /* journal: the lazy delay of its open batch is
                               over (the journal timer fired) */
};

/* One shard directory <spool>/shard-<k> owned by this shard. */
struct sdir {
    struct spool_shard *sh;
    unsigned k;
    int dirfd;
    uint8_t key[REC_KEY_LEN];
    bool has_key;           /* key file read or made (else tags unchecked) */
    struct appender seg;    /* current segment (cur) */
    uint32_t seg_no;        /* its number */
    struct segcnt *cur;
    int spare_fd;           /* seg_no + 1, made ahead by the helper, or -1 */
    bool spare_busy;        /* its creation is queued */
    struct appender jr[2];  /* journals: jr[jcur] current, the other one
                               draining after a checkpoint's switch */
    int jfd[2];             /* their files (owned), or -1 */
    int jcur;
    uint64_t jrn_gen;       /* generation of the current one (journal-<gen>) */
    uint64_t jrn_bytes;     /* appended since the last snapshot */
    uint64_t snap_bytes;    /* size of the last snapshot */
    bool jrn_failed;        /* an entry failed: a snapshot must record the state */
    struct segcnt **segs;
    size_t nsegs, segscap;
    int ckpt;               /* checkpoint step (maint.c), 0 when none */
    int64_t ckpt_retry;     /* unix time before which none is tried again */
    uint64_t no_ckpt;       /* > 0: a record could not be indexed; no snapshot */
};

/* The journal marks go to. */
static inline struct appender *sdir_jrn(struct sdir *d) { return &d->jr[d->jcur]; }

/* What recovery found and did (the recovery report). */
struct load_stats {
    uint64_t records;       /* valid records read */
    uint64_t live;          /* messages live after replay */
    uint64_t snap_msgs;     /* messages from the snapshot */
    uint64_t quarantined;   /* bytes copied to corrupt/ (or that would be) */
    uint64_t regions;       /* bad regions */
    uint64_t torn;          /* bytes cut off as torn tails */
    uint64_t jrn_entries;   /* journal entries replayed */
    uint64_t jrn_skipped;   /* bad journal regions skipped */
    uint64_t lost;          /* snapshot messages whose record is unreadable */
};

struct spool_shard {
    struct io_loop *loop;
    char *spool_dir;
    unsigned index, nshards;
    struct spool_params p;
    struct sdir **dirs;     /* owned directories; dirs[0] is shard-<index> */
    size_t ndirs, dirscap;
    struct idmap idx;       /* live messages (struct smsg) */
    uint64_t seq;           /* for message ids */
    struct io_op *timer;    /* batch timer; heap: may outlive the shard */
    bool timer_due;         /* the timer fired while a batch was in flight */
    struct io_op *jtimer;   /* journal timer (lazy entries); heap: may outlive
                               the shard */
    bool idle_set;          /* the loop's idle hook is ours */
    struct smsg **heap;     /* due heap on (due, id) */
    size_t heap_len, heap_cap;
    spool_ready_cb ready_fn;
    void *ready_arg;
    struct io_op *ready_op; /* deferred ready call; heap: may outlive */
    bool ready_new;         /* new mail became due in this batch */
    uint32_t nviews;        /* open views */
    struct spool_maint *mt; /* helper thread, compaction (maint.c) */
    bool closing;
    struct load_stats rstats; /* what recovery found (for tests) */
    void (*quiesce_fn)(void *arg); /* spool_shard_quiesce */
    void *quiesce_arg;
    bool quiescing;
};

/* --- spool.c --- */
int grow(void **p, size_t *cap, size_t need, size_t elem);
void smsg_free(struct smsg *m);
struct smsg *smsg_new(uint32_t nrcpts);
bool st_final(uint8_t st);
/* Attach m to segment sc (counts, list); detach from its old one. */
void seg_attach(struct smsg *m, struct segcnt *sc);
void seg_detach(struct smsg *m);
struct segcnt *segcnt_get(struct sdir *d, uint32_t seg, bool create);
/* Reap sc if nothing is live or pinned in it (maybe via the helper). */
void segcnt_maybe_reap(struct segcnt *sc);
void segcnt_unpin(struct segcnt *sc);
/* Drop m from the index (it became final or deleted). */
void index_drop(struct spool_shard *sh, struct smsg *m);
void batch_start(struct appender *a);
int batch_reserve(struct batch *b, size_t nbuf, int niov);
size_t batch_put_own(struct batch *b, size_t len);
void batch_put_ext(struct batch *b, const struct iovec *v);
/* Ask the loop to run the ready callback on its next turn. */
void ready_kick(struct spool_shard *sh);

/* --- sched.c --- */
int64_t smsg_key(const struct smsg *m);
void heap_add(struct spool_shard *sh, struct smsg *m);
void heap_remove(struct spool_shard *sh, struct smsg *m);
void heap_update(struct spool_shard *sh, struct smsg *m);

/* --- load.c --- */

/* A segment seen while loading a directory. */
struct lseg {
    uint32_t seg;
    uint64_t size;          /* bytes of whole records (after a cut) */
    bool clean;
};

/* A directory as loaded (messages not yet attached to segments). */
struct ldir {
    unsigned k;
    struct idmap idx;       /* live struct smsg (dir, sc NULL) */
    struct lseg *segs;
    size_t nsegs, segscap;
    uint32_t max_seg;
    uint64_t max_gen;       /* highest journal generation seen */
    uint64_t snap_size;
    bool has_snap;          /* a valid snapshot was read */
    uint64_t snap_gen;      /* journals from it on were replayed */
};

/*
 * Load shard directory k (path dir, open as dirfd) with its key (or NULL):
 * snapshot, journals, segments.  repair: cut the torn tail of the last
 * segment, copy bad regions to <spool_dir>/corrupt/ and log at error level
 * (recovery); else read only.  Returns 0 or -errno (out is then freed).
 */
int load_dir(const char *spool_dir, unsigned k, int dirfd, const uint8_t *key, bool repair,
             struct ldir *out, struct load_stats *st);
void ldir_free(struct ldir *d);
/* Read (or, if create, make durably) the key of a directory. */
int key_load(int dirfd, bool create, uint8_t key[REC_KEY_LEN]);
/* Sorted numbers K of the shard-<K> directories in spool_dir (*ks malloc'ed). */
int walk_list_shards(const char *spool_dir, unsigned **ks, size_t *n);
bool walk_shard_name(const char *name, unsigned *k);
/* Apply a journal entry to a message (recovery and the live path agree). */
void smsg_apply(struct smsg *m, const struct jrn_entry *e);
/* True if some recipient is not final. */
bool smsg_live(const struct smsg *m);

/* --- maint.c --- */
int maint_start(struct spool_shard *sh);
void maint_stop(struct spool_shard *sh);
bool maint_idle(const struct spool_shard *sh);
/* Per loop turn (idle hook): compaction and checkpoints. */
void maint_turn(struct spool_shard *sh);
/* A segment batch completed: compaction bookkeeping of its copies. */
void maint_copies_done(struct spool_shard *sh, struct batch *b, int err);
/* Queue the unlink of sc's file; frees sc when done. */
void maint_reap(struct segcnt *sc);
/* Rotate d's segment to the spare (0), or -EAGAIN if none is ready yet
 * (one is requested). */
int maint_rotate(struct sdir *d);
/* A segment batch of d failed with an error other than ENOSPC: leave the
 * segment before the next write (holding the appender until a spare comes). */
void maint_after_seg_error(struct sdir *d);
/* After a failed batch of a: cut the file back to b->base off-thread;
 * a->hold until then. */
void maint_truncate(struct appender *a, uint64_t off);
/* A journal batch of d completed (on appender a): maybe start a checkpoint,
 * close a drained old journal. */
void maint_journal_done(struct sdir *d, struct appender *a);
/* Serialize the live state of d as a snapshot (malloc'ed) whose journals
 * start at generation gen. */
int snap_build(struct sdir *d, uint64_t gen, uint8_t **buf, size_t *len);
/* Start-up, before the loop runs: make d's first segment and journal and
 * write a snapshot of what was recovered (blocking). */
int maint_checkpoint_now(struct sdir *d);

#endif
