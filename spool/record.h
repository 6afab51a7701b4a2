/* SPDX-License-Identifier: MIT */
/*
 * record.h - private to spool/: the on-disk formats of the spool (message
 * records in segments, journal entries), crc32c, message ids, an id-keyed
 * hash map, and the segment/journal walker shared by recovery
 * (spool_shard_open) and the read-only spool_scan.
 *
 * All integers on disk are little-endian.
 *
 * Message record (REC_HDR_LEN-byte header, then envelope, data, padding):
 *   0  u32 magic REC_MAGIC          20 char id[SPOOL_ID_LEN]
 *   4  u16 version REC_VERSION      40 u32 hdr_crc  = crc32c(bytes 0..39)
 *   6  u16 reserved (0)             44 u32 body_crc = crc32c(env ++ data),
 *   8  u32 env_len                         seeded with hdr_crc
 *   12 u64 data_len
 * followed by env_len envelope bytes, data_len message bytes and zero
 * padding up to a multiple of 8.  The header crc is checked before the
 * lengths are trusted, so a torn or corrupted length never makes a reader
 * look past what it was given.
 *
 * Envelope: u32 nrcpts, u32 flags, i64 received_at, then the strings
 * sender, helo, client_addr, auth_user, received, rcpts[0..nrcpts) each as
 * u32 len + len bytes + NUL (len REC_STR_NULL: a NULL string, no bytes).  The
 * NUL is stored so that decoding hands out pointers into the buffer.
 *
 * Journal entry (JRN_ENTRY_LEN bytes):
 *   0  u32 magic JRN_MAGIC    8  i32 rcpt_idx (-1: whole message)
 *   4  u8  state (jrn_state)  12 u32 reserved (0)
 *   5  u8[3] reserved (0)     16 i64 until
 *   24 char id[SPOOL_ID_LEN]  44 u32 crc = crc32c(bytes 0..43)
 */
#ifndef ORTOO_SPOOL_RECORD_H
#define ORTOO_SPOOL_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "spool/spool.h"

#define REC_MAGIC 0x3152534fu /* "OSR1" */
#define REC_VERSION 1
#define REC_HDR_LEN 48
#define REC_ALIGN 8
#define REC_STR_NULL 0xffffffffu
#define REC_ENV_FIXED 16 /* nrcpts, flags, received_at */

#define JRN_MAGIC 0x314a534fu /* "OSJ1" */
#define JRN_ENTRY_LEN 48

/* Padding after a record of this unpadded length. */
static inline size_t rec_pad(uint64_t len) { return (size_t)(-len & (REC_ALIGN - 1)); }

/* --- crc32c (Castagnoli, reflected, as iSCSI / ext4) --- */

/* Continue a crc32c over buf (crc = 0 to start).  Uses SSE4.2 when present. */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);
/* The portable table version (for tests: must equal crc32c()). */
uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len);

/* --- message ids --- */

/*
 * Make a new message id into out (SPOOL_ID_LEN chars + NUL): base62 of the
 * unix time (6 chars, so ids sort by time), shard (2), seq (4) and 47 random
 * bits from libsodium (8): unique across restarts even after kill -9.
 */
void rec_id_make(char out[SPOOL_ID_LEN + 1], int64_t now, unsigned shard, uint64_t seq);
/* True if id has SPOOL_ID_LEN chars of [0-9A-Za-z] (need not be NUL-terminated). */
bool rec_id_valid(const char *id);

/* --- envelope --- */

/* Decoded envelope; strings point into the decoded buffer; rcpts owned. */
struct rec_env {
    const char *sender, *helo, *client_addr, *auth_user, *received;
    const char **rcpts; /* malloc'ed array of nrcpts pointers */
    size_t nrcpts;
    uint32_t flags;
    int64_t received_at;
};

/* Encoded size of env, or 0 if too large (> UINT32_MAX) or env is invalid. */
size_t rec_env_size(const struct spool_envelope *env);
/* Encode env into out (rec_env_size(env) bytes). */
void rec_env_encode(const struct spool_envelope *env, uint8_t *out);
/*
 * Decode len bytes at buf (borrowed: must outlive out) into out.  Returns 0,
 * -EBADMSG on malformed input (never reads past buf+len), -ENOMEM.
 */
int rec_env_decode(const uint8_t *buf, size_t len, struct rec_env *out);
/* Only the recipient count (cheap); returns -EBADMSG if malformed. */
int rec_env_nrcpts(const uint8_t *buf, size_t len, uint32_t *nrcpts);
void rec_env_free(struct rec_env *e);

/* --- records --- */

/* A record found in a buffer (pointers into it). */
struct rec_view {
    char id[SPOOL_ID_LEN + 1];
    const uint8_t *env;
    uint32_t env_len;
    const uint8_t *data;
    uint64_t data_len;
    uint64_t total; /* header + env + data + padding */
};

/*
 * Fill the REC_HDR_LEN-byte header hdr for a record of id with env_len bytes
 * of envelope (env) and the data iovecs; computes both crcs.
 */
void rec_hdr_build(uint8_t *hdr, const char *id, const uint8_t *env, uint32_t env_len,
                   const struct iovec *data, int iovcnt, uint64_t data_len);

/*
 * Parse the record at buf (avail bytes readable).  Returns 0 with *v filled,
 * -EAGAIN if avail is too short for the record the header announces (a torn
 * tail), -EBADMSG if the header or a crc is wrong.  Never reads past avail.
 */
int rec_parse(const uint8_t *buf, size_t avail, struct rec_view *v);

/* --- journal --- */

/* Journal states: the recipient states plus a whole-message delete. */
enum jrn_state { JRN_PENDING = SPOOL_RCPT_PENDING, JRN_DELIVERED = SPOOL_RCPT_DELIVERED,
                 JRN_DEFERRED = SPOOL_RCPT_DEFERRED, JRN_FAILED = SPOOL_RCPT_FAILED,
                 JRN_DELETED = SPOOL_RCPT_DELETED };

struct jrn_entry {
    char id[SPOOL_ID_LEN + 1];
    int32_t rcpt_idx;
    uint8_t state;
    int64_t until;
};

void jrn_encode(uint8_t out[JRN_ENTRY_LEN], const struct jrn_entry *e);
/* 0 or -EBADMSG (magic, crc, state, id); -EAGAIN if avail < JRN_ENTRY_LEN. */
int jrn_decode(const uint8_t *buf, size_t avail, struct jrn_entry *e);

/* --- id-keyed hash map (chained; nodes embedded in their owners) --- */

struct idmap_node {
    struct idmap_node *next;
    char id[SPOOL_ID_LEN + 1];
};

struct idmap {
    struct idmap_node **b; /* nb buckets, nb a power of two (0 when empty) */
    size_t nb, n;
};

struct idmap_node *idmap_get(const struct idmap *m, const char *id);
/* Insert n (its id set; not already present).  0 or -ENOMEM. */
int idmap_put(struct idmap *m, struct idmap_node *n);
/* Unlink n (must be present). */
void idmap_del(struct idmap *m, struct idmap_node *n);
/* Call fn on every node (fn may free it); then free the buckets. */
void idmap_clear(struct idmap *m, void (*fn)(struct idmap_node *n));

/* --- state of messages from the journals (scan.c) --- */

/* Journal-derived state of one message id. */
struct jstate {
    struct idmap_node node;
    bool deleted;
    uint8_t all_st;     /* whole-message mark (rcpt_idx -1), JRN_PENDING if none */
    int64_t all_until;
    uint32_t n;         /* entries in st/until */
    uint8_t *st;        /* per-recipient state */
    int64_t *until;
};

/* Merge a journal entry into the map.  0 or -ENOMEM. */
int jstate_apply(struct idmap *jm, const struct jrn_entry *e);
/*
 * Read the journal file at path into jm.  Stops at the first bad or torn
 * entry; if repair, truncates the file there (logging).  A missing journal is
 * not an error.  Returns 0 or -errno.
 */
int jstate_load(struct idmap *jm, const char *path, bool repair);
/* Read the journal of every shard-* directory under spool_dir. */
int jstate_load_all(struct idmap *jm, const char *spool_dir, unsigned repair_index,
                    unsigned nshards);
void jstate_free_all(struct idmap *jm);
/*
 * Recipient states of a message with nrcpts recipients: fill st[i] and
 * until[i].  Returns true if the message is live (not deleted, some recipient
 * not final).
 */
bool jstate_resolve(const struct idmap *jm, const char *id, uint32_t nrcpts, uint8_t *st,
                    int64_t *until);

/* --- walking a spool --- */

/*
 * Called for each valid record: shard dir, segment, offset, the record; and
 * once at the end of each segment with v NULL and off UINT64_MAX if every
 * byte of the segment was whole records (after a repair cut), or else the
 * offset of the bad record.
 */
typedef int (*walk_fn)(void *arg, unsigned shard, uint32_t seg, uint64_t off,
                       const struct rec_view *v);

/*
 * Walk the segments of directory shard_dir (shard number shard) in order,
 * calling fn for every valid record.  The first bad record ends a segment:
 * if repair and it is the last segment, the file is truncated there;
 * otherwise a warning is logged and the rest of that segment is skipped.
 * Empty segments are removed when repair.  *max_seg gets the highest segment
 * number seen (0 if none).  Returns 0, fn's non-zero return, or -errno.
 */
int walk_shard(const char *shard_dir, unsigned shard, bool repair, walk_fn fn, void *arg,
               uint32_t *max_seg);

/* Sorted numbers K of the shard-<K> directories in spool_dir (*ks malloc'ed). */
int walk_list_shards(const char *spool_dir, unsigned **ks, size_t *n);

/* Parse "shard-<K>" into *k; false if name is not a shard directory. */
bool walk_shard_name(const char *name, unsigned *k);

#endif
