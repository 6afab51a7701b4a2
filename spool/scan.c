/* SPDX-License-Identifier: MIT */
/*
 * scan.c - reading a spool from disk: journal replay into per-message
 * states, walking the segments of a shard directory record by record, and
 * spool_scan(), the read-only listing the CLI uses while the daemon runs.
 *
 * Recovery (spool_shard_open in spool.c) uses the same walker with repair
 * on: torn tails of the last segment and of the journal are cut there.
 * spool_scan never modifies anything and reads files with pread (not mmap),
 * so a daemon truncating a torn tail under it cannot fault it (SIGBUS).
 *
 * Journals of every shard directory are replayed, whoever owns it: message
 * ids are unique across shards, and a message adopted by another reactor
 * (after a change of the number of reactors) may have entries in the journal
 * of the shard that marked it.  The merge is order-independent across
 * journals: a final state (DELIVERED, FAILED) beats DEFERRED which beats
 * PENDING, and DELETED beats everything; within one journal a later entry of
 * equal rank wins.
 */
#include "spool/record.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/log.h"

#define JRN_MAX_RCPT 100000 /* entries for higher recipient indexes are ignored */

/* ------------------------------------------------------------- journal */

static int st_rank(uint8_t st)
{
    switch (st) {
    case JRN_DEFERRED: return 1;
    case JRN_DELIVERED:
    case JRN_FAILED: return 2;
    default: return 0;
    }
}

/* Merge a new state into st and until (see the file comment). */
static void st_merge(uint8_t *st, int64_t *until, uint8_t nst, int64_t nuntil)
{
    if (st_rank(nst) >= st_rank(*st)) {
        *st = nst;
        *until = nuntil;
    }
}

int jstate_apply(struct idmap *jm, const struct jrn_entry *e)
{
    struct jstate *js = (struct jstate *)idmap_get(jm, e->id);

    if (!js) {
        js = calloc(1, sizeof *js);
        if (!js)
            return -ENOMEM;
        memcpy(js->node.id, e->id, SPOOL_ID_LEN + 1);
        if (idmap_put(jm, &js->node) < 0) {
            free(js);
            return -ENOMEM;
        }
    }
    if (e->state == JRN_DELETED) {
        js->deleted = true;
        return 0;
    }
    if (e->rcpt_idx < 0) {
        st_merge(&js->all_st, &js->all_until, e->state, e->until);
        return 0;
    }
    if (e->rcpt_idx >= JRN_MAX_RCPT)
        return 0;
    uint32_t idx = (uint32_t)e->rcpt_idx;
    if (idx >= js->n) {
        uint32_t n = idx + 1;
        uint8_t *st = realloc(js->st, n);
        if (!st)
            return -ENOMEM;
        js->st = st;
        int64_t *until = realloc(js->until, n * sizeof *until);
        if (!until)
            return -ENOMEM;
        js->until = until;
        memset(js->st + js->n, JRN_PENDING, n - js->n);
        memset(js->until + js->n, 0, (n - js->n) * sizeof *until);
        js->n = n;
    }
    st_merge(&js->st[idx], &js->until[idx], e->state, e->until);
    return 0;
}

bool jstate_resolve(const struct idmap *jm, const char *id, uint32_t nrcpts, uint8_t *st,
                    int64_t *until)
{
    const struct jstate *js = (const struct jstate *)idmap_get(jm, id);
    bool live = false;

    if (js && js->deleted)
        return false;
    for (uint32_t i = 0; i < nrcpts; i++) {
        st[i] = JRN_PENDING;
        until[i] = 0;
        if (js) {
            st_merge(&st[i], &until[i], js->all_st, js->all_until);
            if (i < js->n)
                st_merge(&st[i], &until[i], js->st[i], js->until[i]);
        }
        if (st_rank(st[i]) < 2)
            live = true;
    }
    return live;
}

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

/* Cut a file at off and make the cut durable (recovery only). */
static int file_cut(int fd, const char *path, uint64_t off, uint64_t size)
{
    log_warnx("spool: torn tail file=%s offset=%" PRIu64 " cut=%" PRIu64 " bytes", path, off,
              size - off);
    if (ftruncate(fd, (off_t)off) < 0 || fsync(fd) < 0) {
        int r = -errno;
        log_warn("spool: truncate %s", path);
        return r;
    }
    return 0;
}

int jstate_load(struct idmap *jm, const char *path, bool repair)
{
    uint8_t *buf = NULL;
    size_t len = 0, off = 0;
    int fd, r;

    fd = open(path, (repair ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    if ((r = file_read_all(fd, &buf, &len)) < 0)
        goto out;
    while (off < len) {
        struct jrn_entry e;
        if (jrn_decode(buf + off, len - off, &e) < 0)
            break;
        if ((r = jstate_apply(jm, &e)) < 0)
            goto out;
        off += JRN_ENTRY_LEN;
    }
    if (off < len) {
        if (repair)
            r = file_cut(fd, path, off, len);
        else
            log_debug("spool: journal %s: stop at %zu of %zu", path, off, len);
    }
out:
    free(buf);
    close(fd);
    return r < 0 ? r : 0;
}

static void jstate_free_node(struct idmap_node *n)
{
    struct jstate *js = (struct jstate *)n;
    free(js->st);
    free(js->until);
    free(js);
}

void jstate_free_all(struct idmap *jm) { idmap_clear(jm, jstate_free_node); }

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

/* Sorted list of the numbers of the shard-* dirs (or seg-* files) in dir. */
static int list_numbers(const char *dir, bool shards, unsigned **out, size_t *n)
{
    DIR *d = opendir(dir);
    unsigned *v = NULL;
    size_t cnt = 0, cap = 0;
    struct dirent *de;

    *out = NULL;
    *n = 0;
    if (!d)
        return -errno;
    while ((de = readdir(d))) {
        unsigned k;
        if (shards) {
            if (!walk_shard_name(de->d_name, &k))
                continue;
        } else {
            char *end;
            if (strncmp(de->d_name, "seg-", 4) != 0 || de->d_name[4] < '0' ||
                de->d_name[4] > '9')
                continue;
            errno = 0;
            unsigned long x = strtoul(de->d_name + 4, &end, 10);
            if (*end || errno || x > UINT32_MAX)
                continue;
            k = (unsigned)x;
        }
        if (cnt == cap) {
            cap = cap ? cap * 2 : 16;
            unsigned *nv = realloc(v, cap * sizeof *v);
            if (!nv) {
                free(v);
                closedir(d);
                return -ENOMEM;
            }
            v = nv;
        }
        v[cnt++] = k;
    }
    closedir(d);
    /* insertion sort: directories hold few entries */
    for (size_t i = 1; i < cnt; i++)
        for (size_t j = i; j > 0 && v[j - 1] > v[j]; j--) {
            unsigned t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    *out = v;
    *n = cnt;
    return 0;
}

int walk_list_shards(const char *spool_dir, unsigned **ks, size_t *n)
{
    return list_numbers(spool_dir, true, ks, n);
}

int jstate_load_all(struct idmap *jm, const char *spool_dir, unsigned repair_index,
                    unsigned nshards)
{
    unsigned *ks;
    size_t n;
    int r = list_numbers(spool_dir, true, &ks, &n);

    if (r < 0)
        return r;
    for (size_t i = 0; i < n && r >= 0; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/shard-%u/journal", spool_dir, ks[i]);
        r = jstate_load(jm, path, nshards && ks[i] % nshards == repair_index);
    }
    free(ks);
    return r < 0 ? r : 0;
}

int walk_shard(const char *shard_dir, unsigned shard, bool repair, walk_fn fn, void *arg,
               uint32_t *max_seg)
{
    unsigned *segs;
    size_t nseg;
    int r = list_numbers(shard_dir, false, &segs, &nseg);

    *max_seg = 0;
    if (r < 0)
        return r;
    for (size_t i = 0; i < nseg && r == 0; i++) {
        char path[4096];
        uint8_t *buf = NULL;
        size_t len = 0;
        uint64_t off = 0;
        /* Only the last segment written to can have a torn tail; the
         * fresh segments a restart makes may follow it, empty. */
        bool last = true;
        for (size_t j = i + 1; j < nseg && last; j++) {
            char p2[4096];
            struct stat st2;
            snprintf(p2, sizeof p2, "%s/seg-%08u", shard_dir, segs[j]);
            if (stat(p2, &st2) == 0 && st2.st_size > 0)
                last = false;
        }

        if (segs[i] > *max_seg)
            *max_seg = segs[i];
        snprintf(path, sizeof path, "%s/seg-%08u", shard_dir, segs[i]);
        int fd = open(path, (repair ? O_RDWR : O_RDONLY) | O_CLOEXEC);
        if (fd < 0) {
            if (errno == ENOENT)
                continue; /* removed by the daemon meanwhile */
            r = -errno;
            break;
        }
        if ((r = file_read_all(fd, &buf, &len)) < 0) {
            close(fd);
            break;
        }
        if (len == 0 && repair) {
            unlink(path);
            close(fd);
            free(buf);
            continue;
        }
        while (off < len) {
            struct rec_view v;
            if (rec_parse(buf + off, len - off, &v) < 0)
                break;
            if ((r = fn(arg, shard, segs[i], off, &v)) != 0)
                break;
            off += v.total;
        }
        bool clean = off == len;
        if (r == 0 && off < len) {
            if (repair && last) {
                r = file_cut(fd, path, off, len);
                clean = r == 0;
            } else if (repair) {
                log_warnx("spool: bad record file=%s offset=%" PRIu64
                          ": the rest of the segment (%zu bytes) is skipped",
                          path, off, len - off);
            }
        }
        if (r == 0)
            r = fn(arg, shard, segs[i], clean ? UINT64_MAX : off, NULL);
        free(buf);
        close(fd);
    }
    free(segs);
    return r;
}

/* ------------------------------------------------------------ spool_scan */

struct scan_ctx {
    struct idmap jm;
    spool_scan_cb cb;
    void *arg;
};

static int scan_record(void *arg, unsigned shard, uint32_t seg, uint64_t off,
                       const struct rec_view *v)
{
    struct scan_ctx *sc = arg;
    struct rec_env env;
    uint8_t *st = NULL;
    int64_t *until = NULL;
    enum spool_rcpt_state *est = NULL;
    int r;

    if (!v)
        return 0; /* end of a segment */
    if (rec_env_decode(v->env, v->env_len, &env) < 0) {
        log_warnx("spool: bad envelope id=%s shard=%u seg=%u", v->id, shard, seg);
        return 0;
    }
    size_t n = env.nrcpts ? env.nrcpts : 1;
    st = malloc(n);
    until = malloc(n * sizeof *until);
    est = malloc(n * sizeof *est);
    if (!st || !until || !est) {
        r = -ENOMEM;
        goto out;
    }
    r = 0;
    if (!jstate_resolve(&sc->jm, v->id, (uint32_t)env.nrcpts, st, until))
        goto out;
    for (size_t i = 0; i < env.nrcpts; i++)
        est[i] = (enum spool_rcpt_state)st[i];
    struct spool_msg_info m = {
        .id = v->id,
        .shard = shard,
        .sender = env.sender,
        .rcpts = env.rcpts,
        .rcpt_state = est,
        .nrcpts = env.nrcpts,
        .helo = env.helo,
        .client_addr = env.client_addr,
        .auth_user = env.auth_user,
        .received = env.received,
        .flags = env.flags,
        .received_at = env.received_at,
        .size = v->data_len,
        .data = (const char *)v->data,
    };
    r = sc->cb(&m, sc->arg);
out:
    free(st);
    free(until);
    free(est);
    rec_env_free(&env);
    return r;
}

int spool_scan(const char *spool_dir, spool_scan_cb cb, void *arg)
{
    struct scan_ctx sc = {.cb = cb, .arg = arg};
    unsigned *ks = NULL;
    size_t n = 0;
    int r;

    if ((r = jstate_load_all(&sc.jm, spool_dir, 0, 0)) < 0)
        goto out;
    if ((r = list_numbers(spool_dir, true, &ks, &n)) < 0)
        goto out;
    for (size_t i = 0; i < n && r == 0; i++) {
        char path[4096];
        uint32_t max;
        snprintf(path, sizeof path, "%s/shard-%u", spool_dir, ks[i]);
        r = walk_shard(path, ks[i], false, scan_record, &sc, &max);
        if (r == -ENOENT)
            r = 0;
    }
out:
    free(ks);
    jstate_free_all(&sc.jm);
    return r;
}
