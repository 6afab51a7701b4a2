/* SPDX-License-Identifier: MIT */
/*
 * load.c - reading a shard directory from disk: its key, its snapshot, the
 * records of its segments after the snapshot's walk point, its journals
 * replayed in order onto the messages, the effects of bounce records; and
 * spool_scan(), the read-only listing the CLI uses while the daemon runs.
 *
 * With a snapshot, start-up reads only what follows it: the messages it
 * lists (each record read once to check it is still there), the records
 * written after its walk point, and the journals from its generation on.
 * Segments before the walk point are not read at all, so start-up time
 * follows live mail, not past traffic.
 *
 * Recovery keeps every valid record.  After a bad record (or journal entry)
 * the walk resynchronises on the next valid header, and with repair on
 * (spool_shard_open in spool.c) the bad bytes are copied to <spool>/corrupt/
 * with a log line at error level; only a torn tail of the last segment (a
 * bad stretch with nothing valid after it) is cut, after a copy too.
 * spool_scan never modifies anything and reads files with pread (not mmap),
 * so a daemon cutting a file under it cannot fault it (SIGBUS).
 *
 * A directory is self-contained: its journals speak only of the records in
 * its own segments (entries for other ids, which journals written before
 * directories were self-contained may hold, are ignored).  Replay is in
 * journal order, a final state (DELIVERED, FAILED) is never changed again,
 * and DELETE drops the message whatever came before.
 */
#include "spool/shard.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "io/log.h"

/* ------------------------------------------------------------- helpers */

/* Read a whole file into a malloc'ed buffer; *len gets its length. */
static int file_read_all(int fd, uint8_t **out, size_t *len)
{
    struct stat stt;
    uint8_t *buf;
    size_t got = 0;

    if (fstat(fd, &stt) < 0)
        return -errno;
    buf = malloc(stt.st_size ? (size_t)stt.st_size : 1);
    if (!buf)
        return -ENOMEM;
    while (got < (size_t)stt.st_size) {
        ssize_t n = pread(fd, buf + got, (size_t)stt.st_size - got, (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int r = -errno;
            free(buf);
            return r;
        }
        if (n == 0)
            break; /* shrank under us: use what we have */
        got += (size_t)n;
    }
    *out = buf;
    *len = got;
    return 0;
}

bool walk_shard_name(const char *name, unsigned *k)
{
    char *end;

    if (strncmp(name, "shard-", 6) != 0 || name[6] < '0' || name[6] > '9')
        return false;
    errno = 0;
    unsigned long v = strtoul(name + 6, &end, 10);
    if (*end || errno || v > 65535)
        return false;
    *k = (unsigned)v;
    return true;
}

/* "<prefix><digits>" -> *v; false otherwise. */
static bool name_num(const char *name, const char *prefix, uint64_t max, uint64_t *v)
{
    size_t pl = strlen(prefix);
    char *end;

    if (strncmp(name, prefix, pl) != 0 || name[pl] < '0' || name[pl] > '9')
        return false;
    errno = 0;
    unsigned long long x = strtoull(name + pl, &end, 10);
    if (*end || errno || x > max)
        return false;
    *v = x;
    return true;
}

static void sort_u64(uint64_t *v, size_t n)
{
    for (size_t i = 1; i < n; i++) /* insertion sort: directories hold few entries */
        for (size_t j = i; j > 0 && v[j - 1] > v[j]; j--) {
            uint64_t t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
}

int walk_list_shards(const char *spool_dir, unsigned **ks, size_t *n)
{
    DIR *d = opendir(spool_dir);
    struct dirent *de;
    uint64_t *v = NULL;
    size_t cnt = 0, cap = 0;

    *ks = NULL;
    *n = 0;
    if (!d)
        return -errno;
    while ((de = readdir(d))) {
        unsigned k;
        if (!walk_shard_name(de->d_name, &k))
            continue;
        if (grow((void **)&v, &cap, cnt + 1, sizeof *v) < 0) {
            free(v);
            closedir(d);
            return -ENOMEM;
        }
        v[cnt++] = k;
    }
    closedir(d);
    sort_u64(v, cnt);
    unsigned *out = malloc((cnt ? cnt : 1) * sizeof *out);
    if (!out) {
        free(v);
        return -ENOMEM;
    }
    for (size_t i = 0; i < cnt; i++)
        out[i] = (unsigned)v[i];
    free(v);
    *ks = out;
    *n = cnt;
    return 0;
}

/* The files of a shard directory. */
struct dlist {
    uint64_t *segs;         /* segment numbers, sorted */
    size_t nsegs, segscap;
    uint64_t *gens;         /* journal generations, sorted (0: "journal") */
    size_t ngens, gcap;
};

static int dir_list(int dirfd, struct dlist *l)
{
    DIR *d = fdopendir(dup(dirfd));
    struct dirent *de;
    int r = 0;

    memset(l, 0, sizeof *l);
    if (!d)
        return -errno;
    rewinddir(d); /* the dup shares its offset with every other reader */
    while ((de = readdir(d)) && r == 0) {
        uint64_t v;
        if (name_num(de->d_name, "seg-", UINT32_MAX, &v)) {
            if ((r = grow((void **)&l->segs, &l->segscap, l->nsegs + 1, sizeof *l->segs)) == 0)
                l->segs[l->nsegs++] = v;
        } else if (strcmp(de->d_name, "journal") == 0 ||
                   name_num(de->d_name, "journal-", UINT64_MAX / 2, &v)) {
            if (de->d_name[7] == '\0')
                v = 0;
            if ((r = grow((void **)&l->gens, &l->gcap, l->ngens + 1, sizeof *l->gens)) == 0)
                l->gens[l->ngens++] = v;
        }
    }
    closedir(d);
    sort_u64(l->segs, l->nsegs);
    sort_u64(l->gens, l->ngens);
    return r;
}

static void dlist_free(struct dlist *l)
{
    free(l->segs);
    free(l->gens);
}

/* ----------------------------------------------------------------- key */

int key_load(int dirfd, bool create, uint8_t key[REC_KEY_LEN])
{
    uint8_t buf[KEY_FILE_LEN + 1];
    int fd = openat(dirfd, "key", O_RDONLY | O_CLOEXEC);
    int r;

    if (fd >= 0) {
        ssize_t n = pread(fd, buf, sizeof buf, 0);
        close(fd);
        if (n >= 0 && key_decode(buf, (size_t)n, key) == 0)
            return 0;
        if (!create)
            return -EBADMSG;
        /* A new key: records found by resynchronising under the old one
         * are quarantined instead of trusted (see record.h). */
        log_errx("spool: bad directory key file: replaced (kept as key.bad)");
        renameat(dirfd, "key", dirfd, "key.bad");
    } else if (errno != ENOENT || !create) {
        return -errno;
    }
    randombytes_buf(key, REC_KEY_LEN);
    key_encode(buf, key);
    fd = openat(dirfd, "key.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    r = 0;
    if (pwrite(fd, buf, KEY_FILE_LEN, 0) != KEY_FILE_LEN)
        r = errno ? -errno : -EIO;
    else if (fsync(fd) < 0)
        r = -errno;
    close(fd);
    if (r == 0 && renameat(dirfd, "key.tmp", dirfd, "key") < 0)
        r = -errno;
    if (r == 0 && fsync(dirfd) < 0)
        r = -errno;
    return r;
}

/* --------------------------------------------------------- applying state */

bool smsg_live(const struct smsg *m)
{
    if (m->deleted)
        return false;
    for (uint32_t i = 0; i < m->nrcpts; i++)
        if (!st_final(m->r[i].st))
            return true;
    return false;
}

void smsg_apply(struct smsg *m, const struct jrn_entry *e)
{
    switch (e->type) {
    case JRN_T_DELETE:
        m->deleted = true;
        return;
    case JRN_T_MFLAGS:
        m->mflags |= e->mflags;
        return;
    default:
        break;
    }
    for (uint32_t i = 0; i < m->nrcpts; i++) {
        struct srcpt *r = &m->r[i];
        if ((e->rcpt_idx >= 0 && (uint32_t)e->rcpt_idx != i) || st_final(r->st))
            continue;
        r->st = e->state;
        r->next_at = e->next_at;
        if (e->type == JRN_T_ATTEMPT) {
            r->attempts++;
            r->last_at = e->last_at;
            free(r->reply);
            r->reply = NULL;
            if (e->reply_len && (r->reply = malloc((size_t)e->reply_len + 1))) {
                memcpy(r->reply, e->reply, e->reply_len);
                r->reply[e->reply_len] = '\0';
            }
        }
    }
}

/* ------------------------------------------------------------- loading */

/* A bounce record's effect, met while walking. */
struct lfx {
    char orig[SPOOL_ID_LEN + 1];
    uint32_t *idx;
    size_t n;
};

struct lctx {
    const char *spool_dir;
    unsigned k;
    int dirfd;
    const uint8_t *key;
    bool repair;
    struct ldir *ld;
    struct load_stats *st;
    struct lfx *fx;
    size_t nfx, fxcap;
};

static struct lseg *lseg_add(struct ldir *ld, uint32_t seg)
{
    if (grow((void **)&ld->segs, &ld->segscap, ld->nsegs + 1, sizeof *ld->segs) < 0)
        return NULL;
    struct lseg *s = &ld->segs[ld->nsegs++];
    *s = (struct lseg){.seg = seg, .clean = true};
    if (seg > ld->max_seg)
        ld->max_seg = seg;
    return s;
}

/* A valid record at (seg, off). */
static int record_found(struct lctx *lc, uint32_t seg, uint64_t off, const struct rec_view *v)
{
    struct ldir *ld = lc->ld;
    struct smsg *m;
    uint32_t n;
    int64_t ra;

    lc->st->records++;
    if (rec_env_peek(v->env, v->env_len, v->version, &n, &ra) < 0 || n == 0) {
        log_warnx("spool: bad envelope id=%s shard=%u seg=%" PRIu32, v->id, lc->k, seg);
        return 1; /* not indexed: the segment must stay */
    }
    m = (struct smsg *)idmap_get(&ld->idx, v->id);
    if (m) {
        /* A copy (compaction writes records forward): the later one wins,
         * both hold the same bytes. */
        m->seg = seg;
        m->off = off;
        m->len = v->total;
        m->unverified = false;
        return 0;
    }
    m = smsg_new(n);
    if (!m)
        return -ENOMEM;
    memcpy(m->node.id, v->id, SPOOL_ID_LEN + 1);
    m->seg = seg;
    m->off = off;
    m->len = v->total;
    m->size = v->data_len;
    m->received_at = ra;
    if (idmap_put(&ld->idx, &m->node) < 0) {
        smsg_free(m);
        return -ENOMEM;
    }
    if (v->version == 2 && rec_get32(v->env + 20) != 0) {
        /* a bounce: remember which recipients it failed */
        struct rec_env env;
        if (rec_env_decode(v->env, v->env_len, v->version, &env) == 0 && env.bounce_of) {
            struct lfx *f;
            if (grow((void **)&lc->fx, &lc->fxcap, lc->nfx + 1, sizeof *lc->fx) < 0 ||
                !(lc->fx[lc->nfx].idx = malloc(env.nbounce * sizeof(uint32_t)))) {
                rec_env_free(&env);
                return -ENOMEM;
            }
            f = &lc->fx[lc->nfx++];
            memcpy(f->orig, env.bounce_of, SPOOL_ID_LEN + 1);
            memcpy(f->idx, env.bounce_idx, env.nbounce * sizeof(uint32_t));
            f->n = env.nbounce;
        }
        rec_env_free(&env);
    }
    return 0;
}

/* Cut a file at off and make the cut durable (recovery only). */
static int file_cut(int fd, const char *name, unsigned k, uint64_t off, uint64_t size)
{
    log_warnx("spool: torn tail shard=%u file=%s offset=%" PRIu64 " cut=%" PRIu64 " bytes", k,
              name, off, size - off);
    if (ftruncate(fd, (off_t)off) < 0 || fsync(fd) < 0) {
        int r = -errno;
        log_warn("spool: truncate shard-%u/%s", k, name);
        return r;
    }
    return 0;
}

/*
 * Copy n bad bytes p, found at offset off of file `name` of shard k, to
 * <spool>/corrupt/shard-<k>-<name>-<off>[-torn] and make the copy durable.
 * A copy made by an earlier recovery (the name exists) counts as done.
 * Returns 0 or -errno.
 */
static int quarantine(struct lctx *lc, const char *name, uint64_t off, const uint8_t *p,
                      size_t n, bool torn)
{
    char path[4096], qn[128];
    int dfd, fd, r = 0;

    snprintf(path, sizeof path, "%s/corrupt", lc->spool_dir);
    if (mkdir(path, 0750) == 0) {
        int sfd = open(lc->spool_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (sfd >= 0) {
            fsync(sfd);
            close(sfd);
        }
    } else if (errno != EEXIST) {
        r = -errno;
        goto out;
    }
    dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        r = -errno;
        goto out;
    }
    snprintf(qn, sizeof qn, "shard-%u-%s-%012" PRIu64 "%s", lc->k, name, off,
             torn ? "-torn" : "");
    fd = openat(dfd, qn, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd < 0) {
        r = errno == EEXIST ? 0 : -errno;
        close(dfd);
        goto out;
    }
    for (size_t done = 0; done < n && r == 0;) {
        ssize_t w = write(fd, p + done, n - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            r = w < 0 ? -errno : -EIO;
        else
            done += (size_t)w;
    }
    if (r == 0 && fsync(fd) < 0)
        r = -errno;
    close(fd);
    if (r == 0 && fsync(dfd) < 0)
        r = -errno;
    if (r < 0)
        unlinkat(dfd, qn, 0);
    close(dfd);
out:
    if (r < 0)
        log_errx("spool: shard=%u file=%s offset=%" PRIu64 " bytes=%zu event=quarantine-failed"
                 " error=\"%s\" (left in place)", lc->k, name, off, n, strerror(-r));
    else if (torn)
        log_warnx("spool: shard=%u file=%s offset=%" PRIu64 " bytes=%zu event=torn-tail"
                  " copy=corrupt/%s", lc->k, name, off, n, qn);
    else
        log_errx("spool: shard=%u file=%s offset=%" PRIu64 " bytes=%zu event=quarantined"
                 " copy=corrupt/%s", lc->k, name, off, n, qn);
    return r;
}

/*
 * Is the record at buf a header recovery may resynchronise on?  Message
 * data may hold anything, a record with correct crcs included; a version-2
 * candidate must carry the tag of the directory's key (record.h).  Version-1
 * records have no tag: they are trusted only in a segment that holds no
 * version-2 record (a segment from before version 2).
 */
static bool resync_ok(const struct lctx *lc, const struct rec_view *v, bool seg_v2)
{
    if (v->version == 2)
        return v->tag_ok || !lc->key;
    return !seg_v2;
}

/* Does the buffer hold a version-2 record with a valid tag anywhere? */
static bool has_v2(const struct lctx *lc, const uint8_t *buf, size_t len)
{
    struct rec_view v;

    for (size_t q = 0; q + REC2_HDR_LEN <= len; q += REC_ALIGN)
        if (rec_get32(buf + q) == REC_MAGIC && rec_get16(buf + q + 4) == 2 &&
            rec_parse(buf + q, len - q, lc->key, &v) == 0 && (v.tag_ok || !lc->key))
            return true;
    return false;
}

/* The next offset > off (8-aligned) holding a record to resynchronise on,
 * or len if none. */
static uint64_t resync_seg(const struct lctx *lc, const uint8_t *buf, size_t len, uint64_t off,
                           bool seg_v2)
{
    struct rec_view v;

    for (uint64_t q = off + REC_ALIGN; q < len; q += REC_ALIGN)
        if (rec_get32(buf + q) == REC_MAGIC && len - q >= REC_HDR_LEN &&
            rec_parse(buf + q, len - q, lc->key, &v) == 0 && resync_ok(lc, &v, seg_v2))
            return q;
    return len;
}

/*
 * Walk one segment file from offset `from`.  last: no later segment has
 * bytes, so a bad tail with nothing valid after it may be a torn write.
 * Every valid record is found: after a bad one the walk resynchronises on
 * the next valid header (resync_seg); the bytes in between are quarantined
 * (repair) and the walk goes on.  Only the torn tail of the last segment is
 * cut (after a copy, too: a torn tail cannot be told from a corrupted last
 * record).
 */
static int walk_segment(struct lctx *lc, uint32_t seg, uint64_t from, bool last)
{
    char name[32];
    uint8_t *buf = NULL;
    size_t len = 0;
    uint64_t off = from;
    bool clean = true, seg_v2 = false, probed = false;
    int fd, r;

    snprintf(name, sizeof name, "seg-%08" PRIu32, seg);
    fd = openat(lc->dirfd, name, (lc->repair ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno; /* removed by the daemon meanwhile */
    if ((r = file_read_all(fd, &buf, &len)) < 0)
        goto out;
    if (len == 0 && lc->repair) {
        unlinkat(lc->dirfd, name, 0);
        goto out;
    }
    struct lseg *ls = lseg_add(lc->ld, seg);
    if (!ls) {
        r = -ENOMEM;
        goto out;
    }
    ls->size = len;
    while (off < len) {
        struct rec_view v;
        if (rec_parse(buf + off, len - off, lc->key, &v) == 0) {
            seg_v2 |= v.version == 2;
            if ((r = record_found(lc, seg, off, &v)) < 0)
                goto out;
            if (r > 0)
                clean = false;
            r = 0;
            off += v.total;
            continue;
        }
        if (!probed && !seg_v2) {
            seg_v2 = has_v2(lc, buf, len);
            probed = true;
        }
        uint64_t next = resync_seg(lc, buf, len, off, seg_v2);
        if (next == len && last) {
            /* nothing valid after it: a torn tail, never acknowledged */
            lc->st->torn += len - off;
            if (lc->repair) {
                if (quarantine(lc, name, off, buf + off, len - off, true) < 0 ||
                    file_cut(fd, name, lc->k, off, len) < 0)
                    clean = false;
                else
                    ls->size = off;
            }
            break;
        }
        lc->st->quarantined += next - off;
        lc->st->regions++;
        if (lc->repair && quarantine(lc, name, off, buf + off, next - off, false) < 0)
            clean = false;
        off = next;
    }
    ls->clean = clean;
out:
    free(buf);
    close(fd);
    return r;
}

/* The next offset > off (8-aligned) where a journal entry decodes, or len. */
static size_t resync_jrn(const uint8_t *buf, size_t len, size_t off)
{
    for (size_t q = off + 8; q < len; q += 8) {
        struct jrn_entry e;
        size_t el;
        uint32_t m = len - q >= 4 ? rec_get32(buf + q) : 0;
        if ((m == JRN_MAGIC || m == JRN2_MAGIC) && jrn_decode(buf + q, len - q, &e, &el) == 0)
            return q;
    }
    return len;
}

/*
 * Replay journal generation gen onto the loaded messages.  A bad entry is
 * skipped by resynchronising on the next valid one (the bytes are
 * quarantined); a bad tail with nothing valid after it is a torn write and
 * is only skipped (no journal is appended to after a restart).
 */
static int replay_journal(struct lctx *lc, uint64_t gen)
{
    char name[40];
    uint8_t *buf = NULL;
    size_t len = 0, off = 0;
    int fd, r;

    if (gen == 0)
        snprintf(name, sizeof name, "journal");
    else
        snprintf(name, sizeof name, "journal-%08" PRIu64, gen);
    fd = openat(lc->dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    if ((r = file_read_all(fd, &buf, &len)) < 0)
        goto out;
    while (off < len) {
        struct jrn_entry e;
        size_t el;
        if (jrn_decode(buf + off, len - off, &e, &el) == 0) {
            struct smsg *m = (struct smsg *)idmap_get(&lc->ld->idx, e.id);
            if (m)
                smsg_apply(m, &e);
            lc->st->jrn_entries++;
            off += el;
            continue;
        }
        size_t next = resync_jrn(buf, len, off);
        if (next == len) {
            log_warnx("spool: shard=%u file=%s offset=%zu bytes=%zu event=torn-journal-tail"
                      " (skipped)", lc->k, name, off, len - off);
            lc->st->torn += len - off;
            break;
        }
        lc->st->jrn_skipped++;
        lc->st->quarantined += next - off;
        if (lc->repair)
            quarantine(lc, name, off, buf + off, next - off, false);
        off = next;
    }
out:
    free(buf);
    close(fd);
    return r;
}

/*
 * Read the snapshot of the directory into lc->ld (messages marked
 * unverified: their records are read after the walk).  Returns 1 with the
 * walk point and journal generation set, 0 if there is none, -EBADMSG if it
 * is damaged (a person must look: quarantined by the caller), -errno.
 */
static int snap_load(struct lctx *lc, uint32_t *walk_seg, uint64_t *walk_off, uint64_t *gen)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int fd = openat(lc->dirfd, "snapshot", O_RDONLY | O_CLOEXEC), r;

    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    r = file_read_all(fd, &buf, &len);
    close(fd);
    if (r < 0)
        return r;
    r = -EBADMSG;
    if (len < SNAP_HDR_LEN || rec_get32(buf) != SNAP_MAGIC || rec_get16(buf + 4) != 1 ||
        rec_get32(buf + 60) != crc32c(0, buf, 60) || rec_get32(buf + 8) != lc->k ||
        rec_get64(buf + 40) != len - SNAP_HDR_LEN ||
        rec_get32(buf + 48) != crc32c(0, buf + SNAP_HDR_LEN, len - SNAP_HDR_LEN))
        goto bad;
    *walk_seg = rec_get32(buf + 12);
    *walk_off = rec_get64(buf + 16);
    *gen = rec_get64(buf + 24);
    uint64_t count = rec_get64(buf + 32);
    size_t pos = SNAP_HDR_LEN;
    for (uint64_t i = 0; i < count; i++) {
        if (len - pos < SNAP_MSG_LEN)
            goto bad;
        const uint8_t *p = buf + pos;
        uint32_t n = rec_get32(p + 56);
        if (!rec_id_valid((const char *)p) || n == 0 || n > (len - pos) / SNAP_RCPT_LEN)
            goto bad;
        struct smsg *m = smsg_new(n);
        if (!m) {
            r = -ENOMEM;
            goto bad;
        }
        memcpy(m->node.id, p, SPOOL_ID_LEN);
        m->seg = rec_get32(p + 20);
        m->off = rec_get64(p + 24);
        m->len = rec_get64(p + 32);
        m->size = rec_get64(p + 40);
        m->received_at = (int64_t)rec_get64(p + 48);
        m->mflags = rec_get32(p + 60);
        m->unverified = true;
        pos += SNAP_MSG_LEN;
        bool ok = m->len >= REC_HDR_LEN && m->len % REC_ALIGN == 0 &&
                  !idmap_get(&lc->ld->idx, m->node.id);
        for (uint32_t k = 0; k < n && ok; k++) {
            const uint8_t *q = buf + pos;
            size_t rl;
            if (len - pos < SNAP_RCPT_LEN || q[0] > SPOOL_RCPT_FAILED || q[1] ||
                (rl = rec_get16(q + 2)) > SPOOL_REPLY_MAX || len - pos - SNAP_RCPT_LEN < rl) {
                ok = false;
                break;
            }
            struct srcpt *x = &m->r[k];
            x->st = q[0];
            x->attempts = rec_get32(q + 4);
            x->next_at = (int64_t)rec_get64(q + 8);
            x->last_at = (int64_t)rec_get64(q + 16);
            if (rl && (x->reply = malloc(rl + 1))) {
                memcpy(x->reply, q + SNAP_RCPT_LEN, rl);
                x->reply[rl] = '\0';
            }
            pos += SNAP_RCPT_LEN + rl;
        }
        if (!ok || idmap_put(&lc->ld->idx, &m->node) < 0) {
            smsg_free(m);
            r = ok ? -ENOMEM : -EBADMSG;
            goto bad;
        }
        lc->st->snap_msgs++;
    }
    if (pos != len)
        goto bad;
    lc->ld->snap_size = len;
    free(buf);
    return 1;
bad:
    if (r == -EBADMSG && lc->repair)
        quarantine(lc, "snapshot", 0, buf, len, false);
    free(buf);
    /* what was read of it goes: the walk finds every record again */
    ldir_free(lc->ld);
    lc->ld->k = lc->k;
    lc->st->snap_msgs = 0;
    return r;
}

/*
 * Read the record of every message that came from the snapshot and was not
 * met again by the walk: it was verified when written or recovered before,
 * but the disk may have lost it since.  An unreadable one is reported lost
 * (its bytes quarantined when there are any) and dropped.
 */
static int verify_snapshot(struct lctx *lc)
{
    struct ldir *ld = lc->ld;
    uint8_t *buf = NULL;
    size_t cap = 0;
    int r = 0;

    for (size_t i = 0; i < ld->idx.nb; i++) {
        struct idmap_node **pp = &ld->idx.b[i];
        while (*pp) {
            struct smsg *m = (struct smsg *)*pp;
            struct rec_view v;
            char name[32];
            bool good = false;
            ssize_t got = -1;
            if (!m->unverified) {
                pp = &(*pp)->next;
                continue;
            }
            snprintf(name, sizeof name, "seg-%08" PRIu32, m->seg);
            int fd = openat(lc->dirfd, name, O_RDONLY | O_CLOEXEC);
            if (fd >= 0 && m->len <= (64ull << 30) &&
                grow((void **)&buf, &cap, (size_t)m->len, 1) == 0) {
                got = pread(fd, buf, (size_t)m->len, (off_t)m->off);
                good = got == (ssize_t)m->len && rec_parse(buf, m->len, NULL, &v) == 0 &&
                       v.total == m->len && strcmp(v.id, m->node.id) == 0;
            }
            if (fd >= 0)
                close(fd);
            if (good) {
                m->unverified = false;
                pp = &(*pp)->next;
                continue;
            }
            log_errx("spool: shard=%u id=%s file=%s offset=%" PRIu64 " event=lost"
                     " (the snapshot names a record that cannot be read)",
                     lc->k, m->node.id, name, m->off);
            if (got > 0 && lc->repair)
                quarantine(lc, name, m->off, buf, (size_t)got, false);
            lc->st->lost++;
            *pp = m->node.next;
            ld->idx.n--;
            smsg_free(m);
        }
    }
    free(buf);
    return r;
}

/* Drop the messages that are not live any more. */
static void drop_dead(struct ldir *ld)
{
    for (size_t i = 0; i < ld->idx.nb; i++) {
        struct idmap_node **pp = &ld->idx.b[i];
        while (*pp) {
            struct smsg *m = (struct smsg *)*pp;
            if (smsg_live(m)) {
                pp = &(*pp)->next;
                continue;
            }
            *pp = m->node.next;
            ld->idx.n--;
            smsg_free(m);
        }
    }
}

void ldir_free(struct ldir *d)
{
    for (size_t i = 0; i < d->idx.nb; i++) {
        struct idmap_node *x = d->idx.b[i], *next;
        for (; x; x = next) {
            next = x->next;
            smsg_free((struct smsg *)x);
        }
    }
    free(d->idx.b);
    free(d->segs);
    memset(d, 0, sizeof *d);
}

int load_dir(const char *spool_dir, unsigned k, int dirfd, const uint8_t *key, bool repair,
             struct ldir *out, struct load_stats *st)
{
    struct lctx lc = {.spool_dir = spool_dir, .k = k, .dirfd = dirfd, .key = key,
                      .repair = repair, .ld = out, .st = st};
    struct dlist dl;
    uint32_t walk_seg = 0;
    uint64_t walk_off = 0, gen = 0;
    int r;

    memset(out, 0, sizeof *out);
    out->k = k;
    if ((r = dir_list(dirfd, &dl)) < 0)
        return r;
    r = snap_load(&lc, &walk_seg, &walk_off, &gen);
    if (r == -EBADMSG) {
        log_errx("spool: shard=%u event=bad-snapshot: recovering from every segment and"
                 " journal left (messages delivered before it may be delivered again)", k);
        r = 0;
    } else if (r > 0) {
        out->has_snap = true;
        out->snap_gen = gen;
        r = 0;
    }
    if (repair)
        unlinkat(dirfd, "snapshot.tmp", 0); /* a checkpoint cut short */
    for (size_t i = 0; i < dl.nsegs && r == 0; i++) {
        uint32_t seg = (uint32_t)dl.segs[i];
        if (seg > out->max_seg)
            out->max_seg = seg;
        if (out->has_snap && seg < walk_seg) {
            /* wholly before the walk point: what is live in it the snapshot
             * says; nothing to read */
            char name[32];
            struct stat sst;
            snprintf(name, sizeof name, "seg-%08" PRIu32, seg);
            if (fstatat(dirfd, name, &sst, 0) < 0)
                continue;
            struct lseg *ls = lseg_add(out, seg);
            if (!ls)
                r = -ENOMEM;
            else
                ls->size = (uint64_t)sst.st_size;
            continue;
        }
        /* Only the last segment written to can have a torn tail; the fresh
         * segments a restart makes may follow it, empty. */
        bool last = true;
        for (size_t j = i + 1; j < dl.nsegs && last; j++) {
            char p2[32];
            struct stat st2;
            snprintf(p2, sizeof p2, "seg-%08" PRIu64, dl.segs[j]);
            if (fstatat(dirfd, p2, &st2, 0) == 0 && st2.st_size > 0)
                last = false;
        }
        r = walk_segment(&lc, seg, out->has_snap && seg == walk_seg ? walk_off : 0, last);
    }
    for (size_t i = 0; i < dl.ngens && r == 0; i++) {
        if (dl.gens[i] > out->max_gen)
            out->max_gen = dl.gens[i];
        if (out->has_snap && dl.gens[i] < gen) {
            /* replaced by the snapshot; a crash left it behind */
            if (repair) {
                char name[40];
                if (dl.gens[i] == 0)
                    snprintf(name, sizeof name, "journal");
                else
                    snprintf(name, sizeof name, "journal-%08" PRIu64, dl.gens[i]);
                unlinkat(dirfd, name, 0);
            }
            continue;
        }
        r = replay_journal(&lc, dl.gens[i]);
    }
    if (gen > out->max_gen)
        out->max_gen = gen - 1;
    for (size_t i = 0; i < lc.nfx; i++) {
        struct smsg *m = (struct smsg *)idmap_get(&out->idx, lc.fx[i].orig);
        for (size_t j = 0; m && j < lc.fx[i].n; j++)
            if (lc.fx[i].idx[j] < m->nrcpts)
                m->r[lc.fx[i].idx[j]].st = SPOOL_RCPT_FAILED;
        free(lc.fx[i].idx);
    }
    free(lc.fx);
    dlist_free(&dl);
    if (r < 0) {
        ldir_free(out);
        return r;
    }
    drop_dead(out);
    if (repair)
        verify_snapshot(&lc);
    return 0;
}

/* ------------------------------------------------------------ spool_scan */

static int cmp_loc(const void *a, const void *b)
{
    const struct smsg *x = *(struct smsg *const *)a, *y = *(struct smsg *const *)b;
    if (x->seg != y->seg)
        return x->seg < y->seg ? -1 : 1;
    return x->off < y->off ? -1 : x->off > y->off;
}

/* Read every live message of a loaded directory and call cb. */
static int scan_dir(int dirfd, unsigned k, struct ldir *ld, spool_scan_cb cb, void *arg)
{
    struct smsg **v = malloc((ld->idx.n ? ld->idx.n : 1) * sizeof *v);
    size_t n = 0;
    uint8_t *buf = NULL;
    size_t cap = 0;
    int fd = -1, r = 0;
    uint32_t fdseg = 0;

    if (!v)
        return -ENOMEM;
    for (size_t i = 0; i < ld->idx.nb; i++)
        for (struct idmap_node *x = ld->idx.b[i]; x; x = x->next)
            v[n++] = (struct smsg *)x;
    qsort(v, n, sizeof *v, cmp_loc);
    for (size_t i = 0; i < n && r == 0; i++) {
        struct smsg *m = v[i];
        struct rec_view rv;
        struct rec_env env;
        if (fd < 0 || fdseg != m->seg) {
            char name[32];
            if (fd >= 0)
                close(fd);
            snprintf(name, sizeof name, "seg-%08" PRIu32, m->seg);
            fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
            fdseg = m->seg;
        }
        if (fd < 0)
            continue; /* removed meanwhile */
        if (grow((void **)&buf, &cap, m->len, 1) < 0) {
            r = -ENOMEM;
            break;
        }
        if (pread(fd, buf, m->len, (off_t)m->off) != (ssize_t)m->len ||
            rec_parse(buf, m->len, NULL, &rv) < 0 ||
            rec_env_decode(rv.env, rv.env_len, rv.version, &env) < 0)
            continue;
        enum spool_rcpt_state *est = calloc(env.nrcpts, sizeof *est);
        struct spool_rcpt_info *ri = calloc(env.nrcpts, sizeof *ri);
        if (!est || !ri || env.nrcpts != m->nrcpts) {
            free(est);
            free(ri);
            rec_env_free(&env);
            if (env.nrcpts != m->nrcpts)
                continue;
            r = -ENOMEM;
            break;
        }
        for (size_t j = 0; j < env.nrcpts; j++) {
            est[j] = (enum spool_rcpt_state)m->r[j].st;
            ri[j] = (struct spool_rcpt_info){est[j], m->r[j].attempts, m->r[j].next_at,
                                             m->r[j].last_at, m->r[j].reply};
        }
        struct spool_msg_info mi = {
            .id = m->node.id,
            .shard = k,
            .sender = env.sender,
            .rcpts = env.rcpts,
            .rcpt_state = est,
            .rcpt = ri,
            .nrcpts = env.nrcpts,
            .helo = env.helo,
            .client_addr = env.client_addr,
            .auth_user = env.auth_user,
            .headers = env.headers,
            .flags = env.flags,
            .received_at = env.received_at,
            .dsn_ret = env.dsn_ret,
            .dsn_envid = env.dsn_envid,
            .dsn_notify = env.dsn_notify,
            .dsn_orcpt = env.dsn_orcpt,
            .bounce_of = env.bounce_of,
            .msg_flags = m->mflags,
            .size = rv.data_len,
            .data = (const char *)rv.data,
        };
        r = cb(&mi, arg);
        free(est);
        free(ri);
        rec_env_free(&env);
    }
    if (fd >= 0)
        close(fd);
    free(buf);
    free(v);
    return r;
}

int spool_scan(const char *spool_dir, spool_scan_cb cb, void *arg)
{
    unsigned *ks = NULL;
    size_t n = 0;
    int r;

    if ((r = walk_list_shards(spool_dir, &ks, &n)) < 0)
        return r;
    for (size_t i = 0; i < n && r == 0; i++) {
        char path[4096];
        uint8_t key[REC_KEY_LEN];
        struct load_stats st = {0};
        struct ldir ld;
        snprintf(path, sizeof path, "%s/shard-%u", spool_dir, ks[i]);
        int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0) {
            r = errno == ENOENT ? 0 : -errno;
            continue;
        }
        bool has_key = key_load(dfd, false, key) == 0;
        /* A checkpoint replacing the snapshot and journals while we read
         * them could show a mix: read again if the snapshot changed. */
        for (int tries = 0;; tries++) {
            struct stat a, b;
            bool had = fstatat(dfd, "snapshot", &a, 0) == 0;
            r = load_dir(spool_dir, ks[i], dfd, has_key ? key : NULL, false, &ld, &st);
            bool has = fstatat(dfd, "snapshot", &b, 0) == 0;
            if (r < 0 || tries == 3 ||
                (had == has && (!had || (a.st_ino == b.st_ino &&
                                         a.st_mtim.tv_nsec == b.st_mtim.tv_nsec &&
                                         a.st_mtim.tv_sec == b.st_mtim.tv_sec))))
                break;
            ldir_free(&ld);
        }
        if (r == 0) {
            r = scan_dir(dfd, ks[i], &ld, cb, arg);
            ldir_free(&ld);
        } else if (r == -ENOENT) {
            r = 0;
        }
        close(dfd);
    }
    free(ks);
    return r;
}
