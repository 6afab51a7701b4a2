/* SPDX-License-Identifier: MIT */
/*
 * record.h - private to spool/: the on-disk formats of the spool (message
 * records in segments, journal entries, the snapshot, the directory key),
 * crc32c, message ids, escaping of reply text, and the small id-keyed hash
 * map the spool's indexes are made of.  Everything here is pure (no I/O).
 *
 * All integers on disk are little-endian.
 *
 * Message record, version 2 (REC2_HDR_LEN-byte header, envelope, data,
 * zero padding up to a multiple of 8):
 *   0  u32 magic REC_MAGIC          20 char id[SPOOL_ID_LEN]
 *   4  u16 version 2                40 u32 hdr_crc  = crc32c(bytes 0..39)
 *   6  u16 reserved (0)             44 u32 body_crc = crc32c(env ++ data),
 *   8  u32 env_len                         seeded with hdr_crc
 *   12 u64 data_len                 48 u64 tag = SipHash-2-4(dir key, 0..47)
 * Version 1 is the same without the tag (REC_HDR_LEN = 48 bytes).  The header
 * crc is checked before the lengths are trusted, so a torn or corrupted
 * length never makes a reader look past what it was given.  The tag is what
 * recovery requires of a header it finds by resynchronising after a bad
 * record: message data is attacker-chosen bytes and may contain a
 * well-formed record with correct crcs, but not one with a correct tag
 * under the directory's secret key.  Walking from a known record boundary
 * does not need the tag (so a lost key file costs only resync strength).
 *
 * Envelope, version 1: u32 nrcpts, u32 flags, i64 received_at, then the
 * strings sender, helo, client_addr, auth_user, received, rcpts[0..nrcpts),
 * each as u32 len + len bytes + NUL (len REC_STR_NULL: a NULL string, no
 * bytes).  The NUL is stored so that decoding hands out pointers into the
 * buffer.
 * Envelope, version 2: u32 nrcpts, u32 flags, i64 received_at, u8 dsn_ret,
 * u8 reserved, u16 reserved, u32 nbounce, then the strings sender, helo,
 * client_addr, auth_user, headers, dsn_envid, bounce_of; per recipient the
 * string address, u8 notify and the string orcpt; then nbounce u32 recipient
 * indexes (of the message bounce_of names).
 *
 * Journal entry, version 2 (variable length, a multiple of 8):
 *   0  u32 magic JRN2_MAGIC   28 i32 rcpt_idx (-1: every recipient)
 *   4  u16 len (whole entry)  32 u32 reserved (0)
 *   6  u8  type (JRN_T_*)     36 u32 mflags (JRN_T_MFLAGS)
 *   7  u8  state              40 i64 next_at
 *   8  char id[SPOOL_ID_LEN]  48 i64 last_at (JRN_T_ATTEMPT)
 *   56 u16 reply_len, 58 u16 reserved, 60 reply bytes, zero padding, and in
 *   the last 4 bytes u32 crc = crc32c(bytes 0..len-4).
 * Journal entry, version 1 (JRN_ENTRY_LEN bytes, replayed, never written):
 *   0  u32 magic JRN_MAGIC    8  i32 rcpt_idx (-1: whole message)
 *   4  u8  state (jrn_state)  12 u32 reserved (0)
 *   5  u8[3] reserved (0)     16 i64 until
 *   24 char id[SPOOL_ID_LEN]  44 u32 crc = crc32c(bytes 0..43)
 * A reply is stored escaped (printable ASCII only), so no journal entry can
 * hide inside another: the length field's high byte is always < 0x20.
 *
 * Snapshot (one file per shard directory, written whole, renamed into place):
 *   0  u32 magic SNAP_MAGIC   24 u64 jrn_gen: journals replayed after it
 *   4  u16 version 1          32 u64 count of messages
 *   6  u16 reserved           40 u64 body_len
 *   8  u32 shard K            48 u32 body_crc = crc32c(body)
 *   12 u32 walk_seg           52 u32[2] reserved
 *   16 u64 walk_off           60 u32 hdr_crc = crc32c(bytes 0..59)
 * then the body: per message SNAP_MSG_LEN bytes (id, u32 seg, u64 off, u64
 * len, u64 size, i64 received_at, u32 nrcpts, u32 mflags) and per recipient
 * SNAP_RCPT_LEN bytes (u8 state, u8 0, u16 reply_len, u32 attempts, i64
 * next_at, i64 last_at) followed by the reply bytes.  Records at or after
 * (walk_seg, walk_off) were not durable when the snapshot was taken and are
 * found by walking the segments from there.
 *
 * Key file: u32 KEY_MAGIC, 16 key bytes, u32 crc32c of the 20 bytes before.
 */
#ifndef ORTOO_SPOOL_RECORD_H
#define ORTOO_SPOOL_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "spool/spool.h"

#define REC_MAGIC 0x3152534fu /* "OSR1" */
#define REC_VERSION 2          /* written; 1 is still read */
#define REC_HDR_LEN 48         /* version 1 */
#define REC2_HDR_LEN 56        /* version 2 */
#define REC_HDR_MAX 56
#define REC_ALIGN 8
#define REC_STR_NULL 0xffffffffu
#define REC_ENV_FIXED 16  /* version 1: nrcpts, flags, received_at */
#define REC_ENV2_FIXED 24 /* version 2: ... dsn_ret, reserved, nbounce */
#define REC_KEY_LEN 16

#define JRN_MAGIC 0x314a534fu  /* "OSJ1" */
#define JRN_ENTRY_LEN 48       /* version 1 */
#define JRN2_MAGIC 0x324a534fu /* "OSJ2" */
#define JRN2_FIXED 60
#define JRN2_MIN 64
#define JRN2_MAX (JRN2_FIXED + SPOOL_REPLY_MAX + 4 + 7)

#define SNAP_MAGIC 0x3153534fu /* "OSS1" */
#define SNAP_HDR_LEN 64
#define SNAP_MSG_LEN 64
#define SNAP_RCPT_LEN 24

#define KEY_MAGIC 0x314b534fu /* "OSK1" */
#define KEY_FILE_LEN (4 + REC_KEY_LEN + 4)

/* Padding after a record of this unpadded length. */
static inline size_t rec_pad(uint64_t len) { return (size_t)(-len & (REC_ALIGN - 1)); }

/* --- little-endian helpers --- */

static inline void rec_put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline void rec_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline void rec_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t rec_get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t rec_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t rec_get64(const uint8_t *p)
{
    return rec_get32(p) | (uint64_t)rec_get32(p + 4) << 32;
}

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
/* True if id is a NUL-terminated valid id. */
bool rec_id_ok(const char *id);

/* --- reply text --- */

/*
 * Escape len bytes of s into out (cap bytes, cap >= 1; NUL-terminated) as
 * spool_attempt documents, stopping before an escape that would not fit in
 * min(cap - 1, SPOOL_REPLY_MAX) bytes.  Returns the escaped length.
 */
size_t rec_reply_escape(char *out, size_t cap, const char *s, size_t len);

/* --- envelope --- */

/* What an envelope is encoded from: the submitter's envelope and, for a
 * bounce, the message and recipients it reports on. */
struct rec_env_in {
    const struct spool_envelope *env;
    const char *bounce_of;        /* NULL unless a bounce */
    const uint32_t *bounce_idx;
    size_t nbounce;
};

/*
 * Decoded envelope.  Strings point into the decoded buffer; the arrays are
 * one allocation (mem) owned by the struct.  A version-1 envelope decodes
 * with headers = its Received field, no DSN parameters and no bounce.
 */
struct rec_env {
    uint16_t version;
    const char *sender, *helo, *client_addr, *auth_user, *headers;
    const char **rcpts;           /* nrcpts */
    size_t nrcpts;
    uint32_t flags;
    int64_t received_at;
    uint8_t dsn_ret;
    const char *dsn_envid;        /* or NULL */
    uint8_t *dsn_notify;          /* nrcpts */
    const char **dsn_orcpt;       /* nrcpts, entries may be NULL */
    const char *bounce_of;        /* or NULL */
    uint32_t *bounce_idx;         /* nbounce */
    size_t nbounce;
    void *mem;
};

/* Encoded (version 2) size of in, or 0 if too large (> UINT32_MAX) or invalid. */
size_t rec_env_size(const struct rec_env_in *in);
/* Encode in into out (rec_env_size(in) bytes). */
void rec_env_encode(const struct rec_env_in *in, uint8_t *out);
/*
 * Decode len bytes at buf (borrowed: must outlive out), of record version
 * `version`, into out.  Returns 0, -EBADMSG on malformed input (never reads
 * past buf+len), -ENOMEM.
 */
int rec_env_decode(const uint8_t *buf, size_t len, uint16_t version, struct rec_env *out);
/* Only the recipient count and the receive time (cheap); -EBADMSG if malformed. */
int rec_env_peek(const uint8_t *buf, size_t len, uint16_t version, uint32_t *nrcpts,
                 int64_t *received_at);
void rec_env_free(struct rec_env *e);

/* --- records --- */

/* A record found in a buffer (pointers into it). */
struct rec_view {
    char id[SPOOL_ID_LEN + 1];
    uint16_t version;
    uint32_t hdr_len;
    const uint8_t *env;
    uint32_t env_len;
    const uint8_t *data;
    uint64_t data_len;
    uint64_t total; /* header + env + data + padding */
    bool tag_ok;    /* version 2 and the tag matches the key given */
};

/* Header length of a record version (0 if unknown). */
static inline uint32_t rec_hdr_len(uint16_t version)
{
    return version == 1 ? REC_HDR_LEN : version == 2 ? REC2_HDR_LEN : 0;
}

/*
 * Fill the REC2_HDR_LEN-byte header hdr for a record of id with env_len bytes
 * of envelope (env) and the data iovecs; computes both crcs and the tag
 * under key (REC_KEY_LEN bytes).
 */
void rec_hdr_build(uint8_t *hdr, const uint8_t *key, const char *id, const uint8_t *env,
                   uint32_t env_len, const struct iovec *data, int iovcnt, uint64_t data_len);

/*
 * Parse the record at buf (avail bytes readable).  key (or NULL) is used to
 * check a version-2 tag (v->tag_ok); a wrong tag alone is not an error here.
 * Returns 0 with *v filled, -EAGAIN if avail is too short for the record the
 * header announces (or for a header that starts like one), -EBADMSG if the
 * header or a crc is wrong.  Never reads past avail.
 */
int rec_parse(const uint8_t *buf, size_t avail, const uint8_t *key, struct rec_view *v);

/*
 * Check only the header at buf (magic, version, header crc, id) and fill
 * v's id, version, hdr_len, lengths and total (env/data pointers set as if
 * buf held the whole record; nothing beyond the header is read).  For
 * records already verified once.  Returns 0 or -EBADMSG.
 */
int rec_parse_hdr(const uint8_t *buf, size_t avail, struct rec_view *v);

/* --- journal --- */

/* Journal states: the recipient states plus a whole-message delete. */
enum jrn_state { JRN_PENDING = SPOOL_RCPT_PENDING, JRN_DELIVERED = SPOOL_RCPT_DELIVERED,
                 JRN_DEFERRED = SPOOL_RCPT_DEFERRED, JRN_FAILED = SPOOL_RCPT_FAILED,
                 JRN_DELETED = SPOOL_RCPT_DELETED };

/* Entry types (version 1 entries decode as STATE or DELETE). */
enum { JRN_T_STATE = 1, JRN_T_ATTEMPT = 2, JRN_T_DELETE = 3, JRN_T_MFLAGS = 4 };

struct jrn_entry {
    char id[SPOOL_ID_LEN + 1];
    uint8_t type;          /* JRN_T_* */
    uint8_t state;         /* STATE, ATTEMPT: the new recipient state */
    int32_t rcpt_idx;      /* -1: every recipient */
    uint32_t mflags;       /* MFLAGS: or'ed into the message's flags */
    int64_t next_at;       /* STATE, ATTEMPT (v1: until) */
    int64_t last_at;       /* ATTEMPT: when (the count goes up by one) */
    const char *reply;     /* ATTEMPT: escaped reply (not NUL-terminated) */
    uint16_t reply_len;    /* <= SPOOL_REPLY_MAX */
};

/* Encoded size of e (version 2). */
size_t jrn_size(const struct jrn_entry *e);
/* Encode e (version 2) into out (jrn_size(e) bytes). */
void jrn_encode(uint8_t *out, const struct jrn_entry *e);
/*
 * Decode the entry (version 1 or 2) at buf; *len gets its length.  e->reply
 * points into buf.  0, -EBADMSG (magic, length, crc, fields), or -EAGAIN if
 * avail is shorter than the entry (or than a header that starts like one).
 */
int jrn_decode(const uint8_t *buf, size_t avail, struct jrn_entry *e, size_t *len);

/* --- key file --- */

void key_encode(uint8_t out[KEY_FILE_LEN], const uint8_t key[REC_KEY_LEN]);
/* 0 or -EBADMSG. */
int key_decode(const uint8_t *buf, size_t len, uint8_t key[REC_KEY_LEN]);

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
/* Call fn(n, arg) on every node; a non-zero return stops and is returned.
 * fn must not insert or delete. */
int idmap_each(const struct idmap *m, int (*fn)(struct idmap_node *n, void *arg), void *arg);

#endif
