/* SPDX-License-Identifier: MIT */
/*
 * spool.h - the durable message store.
 *
 * One shard per reactor.  A shard is a directory <spool>/shard-<K>/ holding
 * append-only segment files (seg-<N>) of message records and an append-only
 * journal of state changes.  A record is: fixed header (magic, lengths,
 * crc32c), the envelope, the wire-form message (CRLF lines, dot-stuffed,
 * exactly as received after DATA; without the final ".\r\n").
 *
 * Group commit: spool_submit() adds a record to the shard's open batch; the
 * batch is closed when it holds enough bytes or when the loop goes idle
 * (after at most batch_delay_us), written with one writev and made durable
 * with one fdatasync (io_write_sync).  Only then does each submitter's
 * callback run with res = 0: that is when the session may answer 250.
 *
 * Invariant: a record whose callback reported 0 survives kill -9 and power
 * loss; a torn record (bad length or checksum at the tail) was never
 * acknowledged and is cut off on recovery.
 *
 * Adoption: when ortoo runs with N reactors, reactor i owns every shard
 * directory K with K % N == i (it recovers them all and writes to shard i).
 */
#ifndef ORTOO_SPOOL_H
#define ORTOO_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "io/loop.h"

#define SPOOL_ID_LEN 20 /* message id: 20 chars [0-9A-Za-z], NUL extra */

struct spool_shard;
struct spool_commit;

/* Envelope of one message (all strings borrowed by spool_submit). */
struct spool_envelope {
    const char *sender;        /* reverse-path, "" for the null sender */
    const char *const *rcpts;  /* forward-paths */
    size_t nrcpts;
    const char *helo;          /* EHLO/HELO argument */
    const char *client_addr;   /* "ip" of the client */
    const char *auth_user;     /* authenticated user or NULL */
    const char *received;      /* Received: header field(s), CRLF-terminated */
    uint32_t flags;            /* SPOOL_F_* */
    int64_t received_at;       /* unix time, seconds */
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

/* Tunables for a shard. */
struct spool_params {
    size_t batch_max_bytes;        /* close the batch at this size (default 1 MiB) */
    uint64_t batch_delay_us;       /* max wait for more commits (default 0: idle hook) */
    uint64_t segment_max_bytes;    /* start a new segment past this (default 64 MiB) */
};

/*
 * Open (creating if needed) shard `index` of `nshards` under spool_dir,
 * recovering every shard directory it owns (see Adoption).  Runs recovery
 * synchronously (start-up only).  Returns 0 or -errno; *err gets a message.
 * params may be NULL (defaults); zero fields take their defaults.
 *
 * The shard takes the loop's idle hook (io_loop_set_idle: one per loop) to
 * close its open batch once per turn; nothing else may install one on this
 * loop while the shard is open.
 */
int spool_shard_open(struct io_loop *loop, const char *spool_dir, unsigned index,
                     unsigned nshards, const struct spool_params *params,
                     struct spool_shard **out, char *err, size_t errlen);

/*
 * Close a shard (no commit or mark may be pending: run the loop until every
 * callback ran).  Removes the idle hook.  With batch_delay_us > 0 a batch
 * timer may still be armed: it is cancelled and its callback (which no
 * longer touches the shard) runs on a later turn, so run the loop once more
 * before io_loop_free().
 */
void spool_shard_close(struct spool_shard *sh);

/*
 * Queue a message for durable storage.  env is serialized (copied) now; the
 * data iovecs are borrowed until c->cb runs.  c->id is set before return.
 * Returns 0 (cb will run later, never inside this call) or -errno.
 */
int spool_submit(struct spool_shard *sh, struct spool_commit *c,
                 const struct spool_envelope *env, const struct iovec *data,
                 int iovcnt);

/* Number of messages currently live in the shard(s) this one owns. */
size_t spool_shard_count(const struct spool_shard *sh);

/* --- Reading (CLI, recovery, tests); works while the daemon runs. --- */

enum spool_rcpt_state { SPOOL_RCPT_PENDING = 0, SPOOL_RCPT_DELIVERED,
                        SPOOL_RCPT_DEFERRED, SPOOL_RCPT_FAILED,
                        SPOOL_RCPT_DELETED /* spool_mark only, rcpt_idx -1 */ };

/*
 * Record a state change in the shard's journal: recipient rcpt_idx of message
 * id goes to st (DELIVERED, DEFERRED with until = unix time of the next try,
 * FAILED); rcpt_idx -1 applies st to every recipient, or with
 * SPOOL_RCPT_DELETED drops the whole message.  The in-memory state changes
 * now (a message whose recipients are all final, or deleted, leaves the
 * shard's index and count at once); the journal entry is group-committed
 * like records (write + fdatasync through the loop).  c may be NULL; if not,
 * c->cb runs later (never inside this call) with 0 once the entry is durable
 * or -errno (c->id is set to id).  Returns 0, -ENOENT (id not live in this
 * shard), -EINVAL (bad rcpt_idx or state), or -ENOMEM.
 */
int spool_mark(struct spool_shard *sh, struct spool_commit *c, const char *id, int rcpt_idx,
               enum spool_rcpt_state st, int64_t until);

/* One message as found on disk (all pointers valid during the callback only). */
struct spool_msg_info {
    const char *id;
    unsigned shard;
    const char *sender;
    const char *const *rcpts;
    const enum spool_rcpt_state *rcpt_state;
    size_t nrcpts;
    const char *helo, *client_addr, *auth_user, *received;
    uint32_t flags;
    int64_t received_at;
    uint64_t size;                 /* wire-form message bytes */
    const char *data;              /* wire-form bytes (mapped), size long */
};

typedef int (*spool_scan_cb)(const struct spool_msg_info *m, void *arg);

/*
 * Call cb for every live message in every shard under spool_dir (read-only;
 * torn tails are skipped, not cut).  A non-zero return from cb stops the scan
 * and is returned.  Returns 0, or -errno.
 */
int spool_scan(const char *spool_dir, spool_scan_cb cb, void *arg);

#endif
