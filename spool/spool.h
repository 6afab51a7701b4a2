/* SPDX-License-Identifier: MIT */
/*
 * spool.h - the durable message store.
 *
 * One shard per reactor.  A shard directory <spool>/shard-<K>/ holds
 * append-only segment files (seg-<N>) of message records, a journal of state
 * changes (journal-<G>), a snapshot of the live state (snapshot) and the key
 * that authenticates its record headers (key).  A record is: fixed header
 * (magic, lengths, crc32c, a keyed tag), the envelope, the wire-form message
 * (CRLF lines, dot-stuffed, exactly as received after DATA; without the final
 * ".\r\n").  A directory is self-contained: its snapshot and journal speak only
 * of the records in its segments.
 *
 * Group commit: spool_submit() adds a record to the shard's open batch; the
 * batch is closed when it holds enough bytes or when the loop goes idle
 * (after at most batch_delay_us), written with one writev and made durable
 * with one fdatasync (io_write_sync).  Only then does each submitter's
 * callback run with res = 0: that is when the session may answer 250.
 * State changes (spool_mark, spool_attempt, spool_msg_flags) go to the
 * journal the same way; one that nobody waits for (c NULL) may wait up to
 * journal_delay_ms for company, so that one fdatasync covers the results of
 * many deliveries.
 *
 * Invariant: a record whose callback reported 0 survives kill -9 and power
 * loss.  A journal entry without a callback that was not yet durable may be
 * lost: after a restart its recipient is as it was before (tried again: a
 * duplicate delivery at worst, never a lost message; a bounce's FAILED
 * marks come back from the bounce's record).  Recovery keeps every valid record: only a torn tail of the last
 * segment (nothing valid after it) was never acknowledged and is cut; a bad
 * record anywhere else is copied to <spool>/corrupt/ and skipped by
 * resynchronising on the next valid header.
 *
 * Adoption: when ortoo runs with N reactors, reactor i owns every shard
 * directory K with K % N == i.  It recovers them, keeps their messages in its
 * index and due heap, writes their state changes (and bounces of their
 * messages) to their own journal and segments, and writes new messages to
 * shard i.  A directory is only ever touched by the reactor that owns it.
 *
 * Threads: every function here runs on the shard's loop thread (except
 * spool_scan, which any process may call).  Callbacks run on that thread,
 * never inside the call that registered them.
 */
#ifndef ORTOO_SPOOL_H
#define ORTOO_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "io/loop.h"

#define SPOOL_ID_LEN 20    /* message id: 20 chars [0-9A-Za-z], NUL extra */
#define SPOOL_REPLY_MAX 512 /* bytes of a recipient's last reply kept (escaped) */

struct spool_shard;
struct spool_commit;

/* --- DSN parameters (RFC 3461) --- */

enum spool_dsn_ret { SPOOL_RET_NONE = 0, SPOOL_RET_FULL, SPOOL_RET_HDRS };

/* NOTIFY of one recipient (RFC 3461 4.1); 0 = no NOTIFY given (the default). */
#define SPOOL_NOTIFY_SUCCESS 0x1
#define SPOOL_NOTIFY_FAILURE 0x2
#define SPOOL_NOTIFY_DELAY   0x4
#define SPOOL_NOTIFY_NEVER   0x8

/*
 * The NOTIFY flags of a NOTIFY= value ("NEVER", or a comma list of SUCCESS,
 * FAILURE, DELAY; case-insensitive; the session's parser validated it).
 * NULL or len 0 gives 0 (not given).  Unknown words are ignored.
 */
uint8_t spool_notify_parse(const char *s, size_t len);

/* Envelope of one message (all strings borrowed by spool_submit). */
struct spool_envelope {
    const char *sender;        /* reverse-path, "" for the null sender */
    const char *const *rcpts;  /* forward-paths */
    size_t nrcpts;
    const char *helo;          /* EHLO/HELO argument */
    const char *client_addr;   /* "ip" of the client */
    const char *auth_user;     /* authenticated user or NULL */
    const char *headers;       /* header fields ortoo prepends when sending
                                  (Received, later DKIM-Signature,
                                  Authentication-Results), each CRLF-terminated;
                                  "" or NULL for none */
    uint32_t flags;            /* SPOOL_F_* */
    int64_t received_at;       /* unix time, seconds */
    uint8_t dsn_ret;           /* enum spool_dsn_ret (MAIL RET=) */
    const char *dsn_envid;     /* MAIL ENVID= xtext as given, or NULL */
    const uint8_t *dsn_notify; /* per recipient SPOOL_NOTIFY_*, or NULL (all 0) */
    const char *const *dsn_orcpt; /* per recipient ORCPT= "addr-type;xtext" as
                                     given (entries may be NULL), or NULL */
};

#define SPOOL_F_8BITMIME 0x1
#define SPOOL_F_SMTPUTF8 0x2
#define SPOOL_F_BDAT     0x4 /* arrived through BDAT (stored dot-stuffed) */

typedef void (*spool_commit_cb)(struct spool_commit *c, int res);

/* A pending commit, embedded in the submitter (the SMTP session). */
struct spool_commit {
    spool_commit_cb cb;            /* runs once: 0 durable, < 0 -errno */
    void *owner;                   /* for the submitter */
    char id[SPOOL_ID_LEN + 1];     /* message id, set by spool_submit */
    /* private: */
    struct spool_commit *next;     /* batch list */
};

/* Tunables for a shard (zero fields take their defaults). */
struct spool_params {
    size_t batch_max_bytes;        /* close the batch at this size (default 1 MiB) */
    uint64_t batch_delay_us;       /* max wait for more commits (default 0: idle hook) */
    uint64_t segment_max_bytes;    /* start a new segment past this (default 64 MiB) */
    uint64_t checkpoint_bytes;     /* snapshot once the journal grew by this much
                                      and by the last snapshot's size (default 4 MiB) */
    uint32_t compact_min_age;      /* seconds before a full segment may be compacted
                                      (default 60) */
    uint32_t compact_live_pct;     /* compact a segment once its live bytes fall
                                      below this percentage (default 50) */
    size_t compact_turn_bytes;     /* bytes copied forward per loop turn at most
                                      (default 1 MiB) */
    uint32_t journal_delay_ms;     /* how long a journal entry that nobody waits
                                      for (no commit, not a delete) may wait for
                                      company before its batch is written
                                      (default 10; SPOOL_JOURNAL_DELAY_NONE: at
                                      the next idle hook, as entries with a
                                      commit) */
};

#define SPOOL_JOURNAL_DELAY_DEFAULT 10u
#define SPOOL_JOURNAL_DELAY_NONE UINT32_MAX

/*
 * Open (creating if needed) shard `index` of `nshards` under spool_dir,
 * recovering every shard directory it owns (see Adoption).  Runs recovery
 * and a first checkpoint synchronously (start-up only) and logs a recovery
 * report.  Returns 0 or -errno; *err gets a message.  params may be NULL.
 *
 * The shard takes the loop's idle hook (io_loop_set_idle: one per loop) to
 * close its open batches and to compact once per turn; nothing else may
 * install one on this loop while the shard is open.  It starts one helper
 * thread for its blocking file operations (create, unlink, truncate,
 * rename, directory fsync), whose results come back through io_loop_post.
 */
int spool_shard_open(struct io_loop *loop, const char *spool_dir, unsigned index,
                     unsigned nshards, const struct spool_params *params,
                     struct spool_shard **out, char *err, size_t errlen);

/*
 * True when nothing the shard started is still in flight: no batch open or
 * being written (internal journal entries and entries waiting for the
 * journal timer included), no helper job, no checkpoint, no compaction copy.
 */
bool spool_shard_idle(const struct spool_shard *sh);

/*
 * Stop starting internal work (checkpoints, compaction), write journal
 * entries without waiting for journal_delay_ms, and call fn(arg) on
 * the loop, once, as soon as spool_shard_idle() holds (never inside this
 * call).  For an orderly shutdown: stop the loop from fn, then close.
 */
void spool_shard_quiesce(struct spool_shard *sh, void (*fn)(void *arg), void *arg);

/*
 * Close a shard with no view open.  No commit may be pending that the caller
 * still waits for.  If the shard is not idle (internal journal entries,
 * helper jobs, a checkpoint or compaction in flight), it stops starting new
 * work and runs the loop until it is (bounded: 30 s), so call it outside
 * io_loop_run (server: after spool_shard_quiesce's callback stopped the
 * loop, when nothing is left to run).  Removes the idle hook and stops the
 * helper thread.  With batch_delay_us > 0 a batch timer may still be armed:
 * it is cancelled and its callback (which no longer touches the shard) runs
 * on a later turn, so run the loop once more before io_loop_free().
 */
void spool_shard_close(struct spool_shard *sh);

/*
 * Queue a message for durable storage.  env is serialized (copied) now; the
 * data iovecs are borrowed until c->cb runs.  c->id is set before return.
 * Returns 0 (cb will run later, never inside this call) or -errno.  Once
 * durable the message is PENDING for every recipient and due at once (see
 * spool_set_ready_cb).
 */
int spool_submit(struct spool_shard *sh, struct spool_commit *c,
                 const struct spool_envelope *env, const struct iovec *data,
                 int iovcnt);

/* Number of messages currently live in the shard(s) this one owns. */
size_t spool_shard_count(const struct spool_shard *sh);

/* What the live messages of this shard add up to (metrics, `ortoo stats`). */
struct spool_totals {
    size_t messages;               /* live messages (spool_shard_count) */
    uint64_t bytes;                /* their wire-form bytes */
    int64_t oldest;                /* earliest received_at (unix s), 0 if none */
};

/* Fill out by walking the in-memory index (no I/O; about a millisecond per
 * 100,000 messages, so for a scrape, not for every message). */
void spool_shard_totals(const struct spool_shard *sh, struct spool_totals *out);

/* --- Recipient state --- */

enum spool_rcpt_state { SPOOL_RCPT_PENDING = 0, SPOOL_RCPT_DELIVERED,
                        SPOOL_RCPT_DEFERRED, SPOOL_RCPT_FAILED,
                        SPOOL_RCPT_DELETED /* spool_mark only, rcpt_idx -1 */ };

/* Per-message durable flags (spool_msg_flags). */
#define SPOOL_MF_DELAY_WARNED 0x1 /* a delay DSN was sent (RFC 3464 "delayed") */

/* State of one recipient. */
struct spool_rcpt_info {
    enum spool_rcpt_state state;
    uint32_t attempts;             /* delivery attempts recorded */
    int64_t next_at;               /* earliest next attempt (unix s); 0: now */
    int64_t last_at;               /* last attempt (unix s); 0: never */
    const char *reply;             /* last reply, escaped (printable ASCII, see
                                      spool_attempt), or NULL */
};

/*
 * Record a state change in the message's journal: recipient rcpt_idx of
 * message id goes to st (DELIVERED, DEFERRED with until = unix time of the
 * next try, FAILED); rcpt_idx -1 applies st to every recipient, or with
 * SPOOL_RCPT_DELETED drops the whole message.  A final state (DELIVERED,
 * FAILED) is never changed again; marking a final recipient is a no-op.
 * The in-memory state changes now (a message whose recipients are all final,
 * or deleted, leaves the shard's index and count at once, and its views stay
 * valid until closed); the journal entry is group-committed like records.
 * c may be NULL; if not, c->cb runs later (never inside this call) with 0
 * once the entry is durable or -errno (c->id is set to id).  Without c the
 * entry (other than a delete) may wait up to journal_delay_ms for more
 * entries to share its fdatasync; a crash before then loses it (see the
 * invariant above).  Returns 0,
 * -ENOENT (id not live in this shard), -EINVAL (bad rcpt_idx or state), or
 * -ENOMEM.
 */
int spool_mark(struct spool_shard *sh, struct spool_commit *c, const char *id, int rcpt_idx,
               enum spool_rcpt_state st, int64_t until);

/* The result of one delivery attempt to one recipient (or all). */
struct spool_attempt {
    enum spool_rcpt_state state;   /* DELIVERED, DEFERRED or FAILED */
    int64_t next_at;               /* DEFERRED: unix time of the next try */
    int64_t at;                    /* unix time of the attempt (0: now) */
    const char *reply;             /* the remote reply or local reason, or NULL */
    size_t reply_len;              /* bytes of reply (need not be NUL-terminated) */
};

/*
 * Record an attempt: for recipient rcpt_idx (-1: every recipient not final)
 * the attempt count goes up by one, last_at = a->at, the reply is kept
 * (escaped to printable ASCII: backslash, CR, LF, tab as \\ \r \n \t, other
 * bytes as \xNN; then cut to SPOOL_REPLY_MAX bytes, never inside an escape)
 * and the state becomes a->state with a->next_at.  Durable, in memory and
 * with c exactly as spool_mark.  Returns 0, -ENOENT, -EINVAL (bad index or
 * state), -EALREADY (that recipient is final), -ENOMEM.
 */
int spool_attempt(struct spool_shard *sh, struct spool_commit *c, const char *id,
                  int rcpt_idx, const struct spool_attempt *a);

/*
 * Set per-message flags (SPOOL_MF_*, or'ed into the present ones) durably,
 * with c as spool_mark.  Returns 0, -ENOENT, -ENOMEM.
 */
int spool_msg_flags(struct spool_shard *sh, struct spool_commit *c, const char *id,
                    uint32_t flags);

/* --- Reading a message back (delivery) --- */

/*
 * An open message: the decoded envelope, its recipients' states as of
 * spool_msg_open, and the stored wire-form bytes mapped from the segment.
 * Everything stays valid until spool_msg_close, even if the message is
 * marked final or deleted meanwhile.  Holding a view pins the segment: it is
 * neither deleted nor compacted away under it.
 */
struct spool_msg_view {
    char id[SPOOL_ID_LEN + 1];
    unsigned shard;                /* shard directory K holding the record */
    const char *sender;            /* "" for the null sender */
    const char *const *rcpts;
    size_t nrcpts;
    const char *helo, *client_addr, *auth_user; /* auth_user may be NULL */
    const char *headers;           /* prepended header fields ("" if none) */
    size_t headers_len;
    uint32_t flags;                /* SPOOL_F_* */
    int64_t received_at;
    uint8_t dsn_ret;               /* enum spool_dsn_ret */
    const char *dsn_envid;         /* or NULL */
    const uint8_t *dsn_notify;     /* nrcpts SPOOL_NOTIFY_* */
    const char *const *dsn_orcpt;  /* nrcpts entries, each may be NULL */
    const char *bounce_of;         /* a DSN: the id it reports on, else NULL */
    const uint32_t *bounce_rcpts;  /* ... and the recipient indexes failed */
    size_t bounce_nrcpts;
    uint32_t msg_flags;            /* SPOOL_MF_* */
    const struct spool_rcpt_info *rcpt; /* nrcpts states (copied at open) */
    const char *data;              /* wire-form bytes (mapped, read-only) */
    uint64_t size;                 /* bytes at data */
    int fd;                        /* the segment, for sendfile/splice (borrowed:
                                      read it at data_off, never write or close) */
    uint64_t data_off;             /* file offset of data in fd */
    /* private: */
    void *priv;
};

/*
 * Open message id (live in this shard) for reading.  Maps the record
 * (mmap; no copy, and no checksum: records were verified when recovered or
 * written) and advises the kernel to read it ahead.  Touching data may still
 * fault pages in from disk when they are not cached.  Returns 0, -ENOENT,
 * -ENOMEM, or -EIO (the record no longer parses: it is logged).
 */
int spool_msg_open(struct spool_shard *sh, const char *id, struct spool_msg_view *v);

/* Close a view (unmaps, unpins; may let a segment be reclaimed). */
void spool_msg_close(struct spool_shard *sh, struct spool_msg_view *v);

/* State of recipient idx of a live message now (reply borrowed until the
 * next spool_* call).  Returns 0, -ENOENT or -EINVAL. */
int spool_rcpt_get(struct spool_shard *sh, const char *id, size_t idx,
                   struct spool_rcpt_info *out);

/* --- Scheduling: which message is due next --- */

/*
 * Each shard keeps its live messages (its own and adopted ones) in a
 * min-heap keyed by the earliest next_at of their recipients that are not
 * final (PENDING recipients count as next_at, 0 for new mail).  A message is
 * "checked out" between spool_due_next and spool_due_release: it is not in
 * the heap and is not returned again.
 */

/*
 * Check out the most overdue message whose key is <= now: copy its id to
 * id_out and return 1; return 0 when nothing is due.
 */
int spool_due_next(struct spool_shard *sh, int64_t now, char id_out[SPOOL_ID_LEN + 1]);

/*
 * Return a checked-out message: it is keyed again from its recipients'
 * states (call it after the attempt's spool_attempt/spool_mark calls).  A
 * no-op if the message left the index (all final, deleted) or is not
 * checked out.
 */
void spool_due_release(struct spool_shard *sh, const char *id);

/* The smallest key in the heap (unix s), or INT64_MAX when it is empty. */
int64_t spool_due_earliest(const struct spool_shard *sh);

/*
 * Callback run on the loop when messages became due that were not before:
 * once per durable batch of new messages (after their commit callbacks), and
 * once after spool_reschedule.  Lets the scheduler wake at once instead of at
 * its timer.  fn NULL removes it.
 */
typedef void (*spool_ready_cb)(struct spool_shard *sh, void *arg);
void spool_set_ready_cb(struct spool_shard *sh, spool_ready_cb fn, void *arg);

/*
 * Make message id (NULL: every live message) due at `when` (unix s): every
 * recipient not final gets next_at = when (in memory only: the next attempt
 * records the state durably).  Checked-out messages are re-keyed when
 * released.  Returns the number of messages changed, or -ENOENT for an id
 * not live here.
 */
int spool_reschedule(struct spool_shard *sh, const char *id, int64_t when);

/* --- Bounces --- */

/*
 * One durable step for a DSN: store a new message (the bounce, env and data
 * as spool_submit) whose record names orig_id and the recipient indexes
 * rcpt_idx[0..n) of it, and mark those recipients FAILED.  Recovery applies
 * FAILED to them if and only if the bounce record is valid, so a crash can
 * lose neither the bounce nor the failure, and cannot bounce twice.  The
 * record goes to orig's own shard directory.  The recipients become FAILED in
 * memory when the record is durable (before c->cb runs with 0); until then
 * they cannot be bounced again (-EALREADY).  Returns 0, -ENOENT (orig not
 * live), -EINVAL (bad index, n == 0, bad env), -EALREADY (a recipient is
 * final or being bounced), -ENOMEM.
 */
int spool_submit_bounce(struct spool_shard *sh, struct spool_commit *c, const char *orig_id,
                        const uint32_t *rcpt_idx, size_t n, const struct spool_envelope *env,
                        const struct iovec *data, int iovcnt);

/* --- Listing --- */

/* One message (pointers valid during the callback only). */
struct spool_msg_info {
    const char *id;
    unsigned shard;
    const char *sender;
    const char *const *rcpts;
    const enum spool_rcpt_state *rcpt_state;
    const struct spool_rcpt_info *rcpt; /* nrcpts, the full states */
    size_t nrcpts;
    const char *helo, *client_addr, *auth_user, *headers;
    uint32_t flags;
    int64_t received_at;
    uint8_t dsn_ret;
    const char *dsn_envid;
    const uint8_t *dsn_notify;
    const char *const *dsn_orcpt;
    const char *bounce_of;
    uint32_t msg_flags;
    bool checked_out;              /* spool_foreach: being delivered now */
    uint64_t size;                 /* wire-form message bytes */
    const char *data;              /* wire-form bytes, size long (NULL from
                                      spool_foreach) */
};

typedef int (*spool_scan_cb)(const struct spool_msg_info *m, void *arg);

/*
 * Daemon side (for the control socket's queue list/show): call cb for every
 * live message of this shard, in no particular order, with its envelope
 * (read from the segment's mapping: may fault pages in) and states.  cb must
 * not call other spool_* functions on this shard; collect ids and act after.
 * A non-zero return from cb stops and is returned.  Returns 0 or that.
 */
int spool_foreach(struct spool_shard *sh, spool_scan_cb cb, void *arg);

/*
 * Call cb for every live message in every shard under spool_dir (read-only:
 * nothing is repaired, cut or quarantined; safe while the daemon runs).  A
 * non-zero return from cb stops the scan and is returned.  Returns 0, or
 * -errno.
 */
int spool_scan(const char *spool_dir, spool_scan_cb cb, void *arg);

#endif
