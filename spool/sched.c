/* SPDX-License-Identifier: MIT */
/*
 * sched.c - what delivery reads from a shard: the due heap (which message
 * to try next), views of stored messages (the envelope decoded, the data
 * mapped from its segment with its fd and offset for sendfile/splice), the
 * state of recipients, and the listing for the control socket.
 *
 * The heap holds every live message that is not checked out, keyed by the
 * earliest next_at of its recipients that are neither final nor being
 * bounced, ties broken by id (so ids, which start with the receive time,
 * come out oldest first).  A message's key changes only through heap_update
 * (marks, attempts, reschedule) or when it is released.
 *
 * A view reads its record through one mapping of the whole segment
 * (sc->vmap: mmap, MAP_SHARED, read-only, made at the first view of the
 * segment and kept until the segment goes), and pins the record's segment
 * (sc->pins), so neither the reaper nor compaction takes the file away
 * under it; the recipients' states are copied at open.  A mapping per view
 * cost an mmap and an munmap per delivered message, and every munmap in a
 * process with several reactor threads is a TLB shootdown on every CPU
 * (measured: 14% of the relay's samples).  A record past the segment's
 * mapping (a segment grown beyond segment_max_bytes by one big record) gets
 * a mapping of its own, as before.
 */
#include "spool/shard.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "io/log.h"

/* ------------------------------------------------------------ the heap */

int64_t smsg_key(const struct smsg *m)
{
    int64_t k = INT64_MAX;

    for (uint32_t i = 0; i < m->nrcpts; i++)
        if (!st_final(m->r[i].st) && !m->r[i].bouncing && m->r[i].next_at < k)
            k = m->r[i].next_at;
    return k;
}

static bool before(const struct smsg *a, const struct smsg *b)
{
    if (a->due != b->due)
        return a->due < b->due;
    return memcmp(a->node.id, b->node.id, SPOOL_ID_LEN) < 0;
}

static void hset(struct spool_shard *sh, size_t i, struct smsg *m)
{
    sh->heap[i] = m;
    m->heap_idx = i;
}

static void sift_up(struct spool_shard *sh, size_t i)
{
    struct smsg *m = sh->heap[i];

    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!before(m, sh->heap[p]))
            break;
        hset(sh, i, sh->heap[p]);
        i = p;
    }
    hset(sh, i, m);
}

static void sift_down(struct spool_shard *sh, size_t i)
{
    struct smsg *m = sh->heap[i];

    for (;;) {
        size_t l = 2 * i + 1, best = l;
        if (l >= sh->heap_len)
            break;
        if (l + 1 < sh->heap_len && before(sh->heap[l + 1], sh->heap[l]))
            best = l + 1;
        if (!before(sh->heap[best], m))
            break;
        hset(sh, i, sh->heap[best]);
        i = best;
    }
    hset(sh, i, m);
}

void heap_add(struct spool_shard *sh, struct smsg *m)
{
    m->due = smsg_key(m);
    if (grow((void **)&sh->heap, &sh->heap_cap, sh->heap_len + 1, sizeof *sh->heap) < 0) {
        /* Out of memory: the message waits for a reschedule or a restart. */
        log_warnx("spool: id=%s out of memory scheduling", m->node.id);
        m->heap_idx = SPOOL_HEAP_NONE;
        return;
    }
    sh->heap[sh->heap_len++] = m;
    sift_up(sh, sh->heap_len - 1);
}

void heap_remove(struct spool_shard *sh, struct smsg *m)
{
    size_t i = m->heap_idx;

    if (i == SPOOL_HEAP_NONE)
        return;
    m->heap_idx = SPOOL_HEAP_NONE;
    struct smsg *last = sh->heap[--sh->heap_len];
    if (i == sh->heap_len)
        return;
    hset(sh, i, last);
    if (i > 0 && before(last, sh->heap[(i - 1) / 2]))
        sift_up(sh, i);
    else
        sift_down(sh, i);
}

void heap_update(struct spool_shard *sh, struct smsg *m)
{
    if (m->out)
        return;
    if (m->heap_idx == SPOOL_HEAP_NONE) {
        heap_add(sh, m);
        return;
    }
    m->due = smsg_key(m);
    size_t i = m->heap_idx;
    if (i > 0 && before(m, sh->heap[(i - 1) / 2]))
        sift_up(sh, i);
    else
        sift_down(sh, i);
}

int spool_due_next(struct spool_shard *sh, int64_t now, char id_out[SPOOL_ID_LEN + 1])
{
    if (sh->heap_len == 0 || sh->heap[0]->due > now)
        return 0;
    struct smsg *m = sh->heap[0];
    heap_remove(sh, m);
    m->out = true;
    memcpy(id_out, m->node.id, SPOOL_ID_LEN + 1);
    return 1;
}

void spool_due_release(struct spool_shard *sh, const char *id)
{
    struct smsg *m;

    if (!rec_id_ok(id) || !(m = (struct smsg *)idmap_get(&sh->idx, id)) || !m->out)
        return;
    m->out = false;
    heap_add(sh, m);
}

int64_t spool_due_earliest(const struct spool_shard *sh)
{
    return sh->heap_len ? sh->heap[0]->due : INT64_MAX;
}

static void resched_one(struct spool_shard *sh, struct smsg *m, int64_t when)
{
    for (uint32_t i = 0; i < m->nrcpts; i++)
        if (!st_final(m->r[i].st))
            m->r[i].next_at = when;
    heap_update(sh, m);
}

struct resched_all {
    struct spool_shard *sh;
    int64_t when;
    int n;
};

static int resched_node(struct idmap_node *n, void *arg)
{
    struct resched_all *ra = arg;
    struct smsg *m = (struct smsg *)n;

    for (uint32_t i = 0; i < m->nrcpts; i++)
        if (!st_final(m->r[i].st))
            m->r[i].next_at = ra->when;
    m->due = smsg_key(m);
    ra->n++;
    return 0;
}

int spool_reschedule(struct spool_shard *sh, const char *id, int64_t when)
{
    if (id) {
        struct smsg *m;
        if (!rec_id_ok(id) || !(m = (struct smsg *)idmap_get(&sh->idx, id)))
            return -ENOENT;
        resched_one(sh, m, when);
        ready_kick(sh);
        return 1;
    }
    struct resched_all ra = {sh, when, 0};
    idmap_each(&sh->idx, resched_node, &ra);
    /* every key changed: rebuild the heap in place (Floyd) */
    for (size_t i = sh->heap_len / 2; i-- > 0;)
        sift_down(sh, i);
    ready_kick(sh);
    return ra.n;
}

/* ----------------------------------------------------------------- views */

/* What a view owns besides the caller-visible fields. */
struct view_priv {
    void *map;
    size_t map_len;
    struct segcnt *sc;
    struct rec_env env;
    struct spool_rcpt_info *rcpt;
    char *replies;
};

int spool_rcpt_get(struct spool_shard *sh, const char *id, size_t idx,
                   struct spool_rcpt_info *out)
{
    struct smsg *m;

    if (!rec_id_ok(id) || !(m = (struct smsg *)idmap_get(&sh->idx, id)))
        return -ENOENT;
    if (idx >= m->nrcpts)
        return -EINVAL;
    const struct srcpt *r = &m->r[idx];
    *out = (struct spool_rcpt_info){r->bouncing ? SPOOL_RCPT_FAILED : r->st, r->attempts,
                                    r->next_at, r->last_at, r->reply};
    return 0;
}

#define SPOOL_WILLNEED_MIN (64 * 1024) /* records read ahead with madvise */

/* Map the record of m and decode its header and envelope into vp. */
static int view_map(struct smsg *m, struct view_priv *vp, struct rec_view *rv)
{
    static long pagesz;
    struct segcnt *sc = m->sc;
    int r;

    if (!pagesz)
        pagesz = sysconf(_SC_PAGESIZE);
    if (sc->fd < 0) {
        char name[32];
        snprintf(name, sizeof name, "seg-%08" PRIu32, sc->seg);
        sc->fd = openat(sc->dir->dirfd, name, O_RDONLY | O_CLOEXEC);
        if (sc->fd < 0)
            return -errno;
    }
    const uint8_t *rec;
    if (sc->vmap == NULL) {
        /* Mapping past EOF is allowed; only records (whole, durable) are
         * ever read. */
        uint64_t segmax = sc->dir->sh->p.segment_max_bytes;
        uint64_t want = segmax > m->off + m->len ? segmax : m->off + m->len;
        size_t len = (size_t)((want + (uint64_t)pagesz - 1) & ~(uint64_t)(pagesz - 1));
        void *p = mmap(NULL, len, PROT_READ, MAP_SHARED, sc->fd, 0);
        if (p != MAP_FAILED) {
            sc->vmap = p;
            sc->vmap_len = len;
        }
    }
    if (sc->vmap != NULL && m->off + m->len <= sc->vmap_len) {
        vp->map = NULL;
        vp->map_len = 0;
        rec = (const uint8_t *)sc->vmap + m->off;
        if (m->len > SPOOL_WILLNEED_MIN) {
            /* A short record costs a fault or two, less than the call. */
            uint64_t pg = m->off & ~(uint64_t)(pagesz - 1);
            madvise((uint8_t *)sc->vmap + pg, (size_t)(m->off - pg + m->len), MADV_WILLNEED);
        }
    } else {
        uint64_t pg = m->off & ~(uint64_t)(pagesz - 1);
        vp->map_len = (size_t)(m->off - pg + m->len);
        vp->map = mmap(NULL, vp->map_len, PROT_READ, MAP_SHARED, sc->fd, (off_t)pg);
        if (vp->map == MAP_FAILED) {
            vp->map = NULL;
            return -errno;
        }
        madvise(vp->map, vp->map_len, MADV_WILLNEED);
        rec = (const uint8_t *)vp->map + (m->off - pg);
    }
    if (rec_parse_hdr(rec, m->len, rv) < 0 || rv->total != m->len ||
        strcmp(rv->id, m->node.id) != 0) {
        r = -EIO;
        goto fail;
    }
    if ((r = rec_env_decode(rv->env, rv->env_len, rv->version, &vp->env)) < 0 ||
        vp->env.nrcpts != m->nrcpts) {
        if (r == 0)
            rec_env_free(&vp->env);
        r = r == -ENOMEM ? r : -EIO;
        goto fail;
    }
    return 0;
fail:
    if (r == -EIO)
        log_errx("spool: id=%s shard=%u seg=%" PRIu32 " offset=%" PRIu64
                 " event=unreadable-record", m->node.id, sc->dir->k, sc->seg, m->off);
    if (vp->map)
        munmap(vp->map, vp->map_len);
    vp->map = NULL;
    return r;
}

int spool_msg_open(struct spool_shard *sh, const char *id, struct spool_msg_view *v)
{
    struct smsg *m;
    struct view_priv *vp;
    struct rec_view rv;
    size_t rlen = 0;
    int r;

    memset(v, 0, sizeof *v);
    v->fd = -1;
    if (!rec_id_ok(id) || !(m = (struct smsg *)idmap_get(&sh->idx, id)))
        return -ENOENT;
    if (!(vp = calloc(1, sizeof *vp)))
        return -ENOMEM;
    if ((r = view_map(m, vp, &rv)) < 0) {
        free(vp);
        return r;
    }
    for (uint32_t i = 0; i < m->nrcpts; i++)
        rlen += m->r[i].reply ? strlen(m->r[i].reply) + 1 : 0;
    vp->rcpt = calloc(m->nrcpts, sizeof *vp->rcpt);
    vp->replies = malloc(rlen ? rlen : 1);
    if (!vp->rcpt || !vp->replies) {
        free(vp->rcpt);
        free(vp->replies);
        rec_env_free(&vp->env);
        if (vp->map)
            munmap(vp->map, vp->map_len);
        free(vp);
        return -ENOMEM;
    }
    char *p = vp->replies;
    for (uint32_t i = 0; i < m->nrcpts; i++) {
        const struct srcpt *x = &m->r[i];
        vp->rcpt[i] = (struct spool_rcpt_info){x->bouncing ? SPOOL_RCPT_FAILED : x->st,
                                               x->attempts, x->next_at, x->last_at, NULL};
        if (x->reply) {
            size_t l = strlen(x->reply) + 1;
            memcpy(p, x->reply, l);
            vp->rcpt[i].reply = p;
            p += l;
        }
    }
    vp->sc = m->sc;
    vp->sc->pins++;
    m->views++;
    sh->nviews++;

    const struct rec_env *e = &vp->env;
    memcpy(v->id, m->node.id, SPOOL_ID_LEN + 1);
    v->shard = m->dir->k;
    v->sender = e->sender;
    v->rcpts = e->rcpts;
    v->nrcpts = e->nrcpts;
    v->helo = e->helo;
    v->client_addr = e->client_addr;
    v->auth_user = e->auth_user;
    v->headers = e->headers;
    v->headers_len = strlen(e->headers);
    v->flags = e->flags;
    v->received_at = e->received_at;
    v->dsn_ret = e->dsn_ret;
    v->dsn_envid = e->dsn_envid;
    v->dsn_notify = e->dsn_notify;
    v->dsn_orcpt = e->dsn_orcpt;
    v->bounce_of = e->bounce_of;
    v->bounce_rcpts = e->bounce_idx;
    v->bounce_nrcpts = e->nbounce;
    v->msg_flags = m->mflags;
    v->rcpt = vp->rcpt;
    v->data = (const char *)rv.data;
    v->size = rv.data_len;
    v->fd = vp->sc->fd;
    v->data_off = m->off + rv.hdr_len + rv.env_len;
    v->priv = vp;
    return 0;
}

void spool_msg_close(struct spool_shard *sh, struct spool_msg_view *v)
{
    struct view_priv *vp = v->priv;
    struct smsg *m;

    if (!vp)
        return;
    if ((m = (struct smsg *)idmap_get(&sh->idx, v->id)) && m->views)
        m->views--;
    sh->nviews--;
    rec_env_free(&vp->env);
    if (vp->map)
        munmap(vp->map, vp->map_len);
    free(vp->rcpt);
    free(vp->replies);
    struct segcnt *sc = vp->sc;
    free(vp);
    memset(v, 0, sizeof *v);
    v->fd = -1;
    segcnt_unpin(sc);
}

/* --------------------------------------------------------------- listing */

struct each_ctx {
    struct spool_shard *sh;
    spool_scan_cb cb;
    void *arg;
};

static int each_node(struct idmap_node *n, void *arg)
{
    struct each_ctx *ec = arg;
    struct smsg *m = (struct smsg *)n;
    struct view_priv vp = {0};
    struct rec_view rv;
    int r;

    if (view_map(m, &vp, &rv) < 0)
        return 0; /* logged; nothing to show */
    enum spool_rcpt_state *est = calloc(m->nrcpts, sizeof *est);
    struct spool_rcpt_info *ri = calloc(m->nrcpts, sizeof *ri);
    if (!est || !ri) {
        r = -ENOMEM;
        goto out;
    }
    for (uint32_t i = 0; i < m->nrcpts; i++) {
        const struct srcpt *x = &m->r[i];
        est[i] = x->bouncing ? SPOOL_RCPT_FAILED : (enum spool_rcpt_state)x->st;
        ri[i] = (struct spool_rcpt_info){est[i], x->attempts, x->next_at, x->last_at, x->reply};
    }
    const struct rec_env *e = &vp.env;
    struct spool_msg_info mi = {
        .id = m->node.id,
        .shard = m->dir->k,
        .sender = e->sender,
        .rcpts = e->rcpts,
        .rcpt_state = est,
        .rcpt = ri,
        .nrcpts = m->nrcpts,
        .helo = e->helo,
        .client_addr = e->client_addr,
        .auth_user = e->auth_user,
        .headers = e->headers,
        .flags = e->flags,
        .received_at = e->received_at,
        .dsn_ret = e->dsn_ret,
        .dsn_envid = e->dsn_envid,
        .dsn_notify = e->dsn_notify,
        .dsn_orcpt = e->dsn_orcpt,
        .bounce_of = e->bounce_of,
        .msg_flags = m->mflags,
        .checked_out = m->out,
        .size = m->size,
        .data = NULL,
    };
    r = ec->cb(&mi, ec->arg);
out:
    free(est);
    free(ri);
    rec_env_free(&vp.env);
    if (vp.map)
        munmap(vp.map, vp.map_len);
    return r;
}

int spool_foreach(struct spool_shard *sh, spool_scan_cb cb, void *arg)
{
    struct each_ctx ec = {sh, cb, arg};

    return idmap_each(&sh->idx, each_node, &ec);
}

/* idmap_each callback of spool_shard_totals. */
static int totals_node(struct idmap_node *n, void *arg)
{
    const struct smsg *m = (const struct smsg *)n;
    struct spool_totals *t = arg;

    t->messages++;
    t->bytes += m->size;
    if (t->oldest == 0 || m->received_at < t->oldest)
        t->oldest = m->received_at;
    return 0;
}

void spool_shard_totals(const struct spool_shard *sh, struct spool_totals *out)
{
    memset(out, 0, sizeof(*out));
    idmap_each(&sh->idx, totals_node, out);
}
