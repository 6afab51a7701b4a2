/* SPDX-License-Identifier: MIT */
/*
 * maildir.c - Maildir delivery (see maildir.h): the blocking writer and the
 * worker pool that keeps it off the reactors.
 *
 * maildir_write() opens the Maildir directory once and works relative to
 * it (openat, renameat2), so a path is resolved once per delivery.  The
 * message is streamed through one 64 KB buffer: the added header fields,
 * then the stored bytes with the stuffing dots removed (a '.' at the start
 * of a stored line is always one: RFC 5321 4.5.2).  The syscalls that can
 * fail on a full or broken disk (write, fsync, rename, pread) go through
 * maildir_sys so that the unit tests inject ENOSPC and EIO.  The same
 * content stream feeds pipe delivery (maildir_stream, to a sink, in LF
 * line ends).
 *
 * The pool: a FIFO under a mutex, N threads; each result is handed to the
 * requesting loop with io_loop_post(), whose callback runs the owner's cb.
 */
#include "delivery/maildir.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/loop.h"
#include "io/workq.h"

#define MAILDIR_BUF (64 * 1024)
#define MAILDIR_NAME_TRIES 8          /* new names tried when one exists */

static int sys_renameat2(int ofd, const char *from, int nfd, const char *to, unsigned flags)
{
    return renameat2(ofd, from, nfd, to, flags);
}

/* Test seam for the calls a full or failing disk makes fail. */
static struct {
    ssize_t (*write)(int fd, const void *buf, size_t len);
    int (*fsync)(int fd);
    int (*renameat2)(int ofd, const char *from, int nfd, const char *to, unsigned flags);
    ssize_t (*pread)(int fd, void *buf, size_t len, off_t off);
} maildir_sys = {write, fsync, sys_renameat2, pread};

static _Atomic unsigned long maildir_seq; /* Q<n>: deliveries in this process */

/* One path element we will create: not empty, ".", "..", no '/' or NUL,
 * not longer than NAME_MAX. */
static bool elem_ok(const char *s)
{
    size_t len = s ? strlen(s) : 0;
    return len > 0 && len <= NAME_MAX && strcmp(s, ".") != 0 && strcmp(s, "..") != 0 &&
           strchr(s, '/') == NULL;
}

/* ---- directories ---- */

static int dir_fsync(int dfd, const char *rel)
{
    int fd = openat(dfd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = maildir_sys.fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

/* mkdir path (0700) if missing; a directory made is made durable by an
 * fsync of its parent.  Returns 0 or -errno. */
static int mkdir_durable(const char *path)
{
    char parent[PATH_MAX];
    const char *slash = strrchr(path, '/');

    if (mkdir(path, 0700) < 0)
        return errno == EEXIST ? 0 : -errno;
    if (slash == NULL || slash == path)
        return 0;
    snprintf(parent, sizeof(parent), "%.*s", (int)(slash - path), path);
    return dir_fsync(AT_FDCWD, parent);
}

/* Every directory from root down to Maildir/{tmp,new,cur}. */
static int maildir_make(const char *md)
{
    char path[PATH_MAX];
    int rc;

    snprintf(path, sizeof(path), "%s", md);
    /* Parents first, from the top (root itself is created if missing). */
    for (char *p = path + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        rc = mkdir_durable(path);
        *p = '/';
        if (rc < 0)
            return rc;
    }
    if ((rc = mkdir_durable(path)) < 0)
        return rc;
    static const char *const subs[] = {"tmp", "new", "cur"};
    for (size_t i = 0; i < 3; i++) {
        if (snprintf(path, sizeof(path), "%s/%s", md, subs[i]) >= (int)sizeof(path))
            return -ENAMETOOLONG;
        if ((rc = mkdir_durable(path)) < 0)
            return rc;
    }
    return 0;
}

/* ---- the output stream ---- */

/*
 * Invariant: len <= sizeof(buf); once err is set nothing more is written.
 * The bytes go to fd, or to sink when it is set (maildir_stream).  With lf,
 * a CR is held back (cr) until the next byte shows whether it ends a line.
 */
struct out {
    int fd;
    maildir_sink_fn sink;     /* NULL: write to fd */
    void *sink_arg;
    int err;                  /* first -errno (or sink's negative value) */
    uint64_t total;           /* bytes handed to the file so far */
    bool bol;                 /* the next stored byte starts a line */
    bool lf;                  /* CRLF -> LF */
    bool cr;                  /* lf: a CR is held back */
    size_t len;
    char buf[MAILDIR_BUF];
};

static void out_flush(struct out *o)
{
    size_t off = 0;

    if (o->sink != NULL) {
        if (o->err == 0 && o->len > 0) {
            int rc = o->sink(o->sink_arg, o->buf, o->len);
            if (rc < 0)
                o->err = rc;
            else
                o->total += o->len;
        }
        o->len = 0;
        return;
    }
    while (o->err == 0 && off < o->len) {
        ssize_t n = maildir_sys.write(o->fd, o->buf + off, o->len - off);
        if (n < 0) {
            if (errno != EINTR)
                o->err = -errno;
            continue;
        }
        if (n == 0) {
            o->err = -EIO;
            break;
        }
        off += (size_t)n;
    }
    o->total += off;
    o->len = 0;
}

static void out_raw(struct out *o, const char *p, size_t len)
{
    while (len > 0 && o->err == 0) {
        size_t n = sizeof(o->buf) - o->len;
        if (n > len)
            n = len;
        memcpy(o->buf + o->len, p, n);
        o->len += n;
        p += n;
        len -= n;
        if (o->len == sizeof(o->buf))
            out_flush(o);
    }
}

/* Bytes of the content: as they are, or with CRLF turned into LF (a bare
 * CR stays). */
static void out_put(struct out *o, const char *p, size_t len)
{
    if (!o->lf) {
        out_raw(o, p, len);
        return;
    }
    while (len > 0) {
        if (o->cr) {
            o->cr = false;
            if (*p != '\n')
                out_raw(o, "\r", 1);
        }
        const char *r = memchr(p, '\r', len);
        size_t n = r ? (size_t)(r - p) : len;
        out_raw(o, p, n);
        if (r == NULL)
            break;
        o->cr = true;
        p += n + 1;
        len -= n + 1;
    }
}

/* Stored (dot-stuffed) bytes: drop the '.' that starts a line. */
static void out_unstuff(struct out *o, const char *p, size_t len)
{
    while (len > 0) {
        if (o->bol && *p == '.') {
            p++;
            len--;
            o->bol = false;
            continue;
        }
        const char *nl = memchr(p, '\n', len);
        size_t n = nl ? (size_t)(nl - p) + 1 : len;
        out_put(o, p, n);
        o->bol = nl != NULL;
        p += n;
        len -= n;
    }
}

static void out_header(struct out *o, const char *name, const char *value)
{
    out_put(o, name, strlen(name));
    out_put(o, ": <", 3);
    out_put(o, value, strlen(value));
    out_put(o, ">\r\n", 3);
}

/* The whole file content. */
static void write_content(struct out *o, const struct maildir_msg *m)
{
    out_header(o, "Return-Path", m->return_path);
    out_header(o, "Delivered-To", m->delivered_to);
    if (m->prefix != NULL)
        out_put(o, m->prefix, m->prefix_len);
    o->bol = true;
    if (m->iovcnt > 0) {
        for (int i = 0; i < m->iovcnt; i++)
            out_unstuff(o, m->iov[i].iov_base, m->iov[i].iov_len);
    } else {
        char rbuf[16384];
        uint64_t done = 0;
        while (done < m->len && o->err == 0) {
            size_t want = m->len - done < sizeof(rbuf) ? (size_t)(m->len - done) : sizeof(rbuf);
            ssize_t n = maildir_sys.pread(m->fd, rbuf, want, (off_t)(m->off + done));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                o->err = n < 0 ? -errno : -EIO; /* short file: the spool is damaged */
                break;
            }
            out_unstuff(o, rbuf, (size_t)n);
            done += (uint64_t)n;
        }
    }
    if (o->cr)
        out_raw(o, "\r", 1);
    o->cr = false;
    out_flush(o);
}

int maildir_stream(const struct maildir_msg *m, bool lf, maildir_sink_fn sink, void *arg)
{
    struct out *o;
    int rc;

    if (m->return_path == NULL || m->delivered_to == NULL || sink == NULL ||
        (m->iovcnt == 0 && m->fd < 0 && m->len > 0))
        return -EINVAL;
    if ((o = malloc(sizeof(*o))) == NULL)
        return -ENOMEM;
    *o = (struct out){.fd = -1, .sink = sink, .sink_arg = arg, .lf = lf};
    write_content(o, m);
    rc = o->err;
    free(o);
    return rc;
}

/* ---- names ---- */

/* host with '/' and ':' escaped as the Maildir convention asks. */
static void host_clean(const char *host, char *out, size_t cap)
{
    size_t n = 0;
    for (const char *p = host; *p != '\0' && n + 5 < cap; p++) {
        if (*p == '/' || *p == ':') {
            n += (size_t)snprintf(out + n, cap - n, "\\%03o", (unsigned char)*p);
        } else if ((unsigned char)*p > ' ' && *p != ',') {
            out[n++] = *p;
        }
    }
    out[n] = '\0';
    if (n == 0)
        snprintf(out, cap, "localhost");
}

static void unique_base(const char *host, char *out, size_t cap)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned long q = atomic_fetch_add(&maildir_seq, 1);
    snprintf(out, cap, "%lld.M%ldP%ldQ%lu.%s", (long long)ts.tv_sec, ts.tv_nsec / 1000,
             (long)getpid(), q, host);
}

/* ---- maildir_write ---- */

int maildir_write(const struct maildir_msg *m, const char *host, char *name)
{
    char md[PATH_MAX], h[128], base[160], tmp[200], fin[220];
    struct out *o = NULL;
    int dfd = -1, fd = -1, rc;
    bool tmp_made = false;

    name[0] = '\0';
    if (m->root == NULL || m->root[0] != '/' || !elem_ok(m->domain) || !elem_ok(m->user) ||
        m->return_path == NULL || m->delivered_to == NULL ||
        (m->iovcnt == 0 && m->fd < 0 && m->len > 0))
        return -EINVAL;
    if (snprintf(md, sizeof(md), "%s/%s/%s/Maildir", m->root, m->domain, m->user) >=
        (int)sizeof(md))
        return -ENAMETOOLONG;
    host_clean(host ? host : "localhost", h, sizeof(h));

    dfd = open(md, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 && errno == ENOENT) {
        if ((rc = maildir_make(md)) < 0)
            return rc;
        dfd = open(md, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    }
    if (dfd < 0)
        return -errno;
    for (int tries = 0;; tries++) {
        unique_base(h, base, sizeof(base));
        snprintf(tmp, sizeof(tmp), "tmp/%s", base);
        fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0)
            break;
        rc = -errno;
        if (rc == -ENOENT && tries == 0) {
            /* Maildir/ without tmp/ (or new/): complete it. */
            if ((rc = maildir_make(md)) < 0)
                goto fail;
            continue;
        }
        if (rc != -EEXIST || tries >= MAILDIR_NAME_TRIES)
            goto fail;
    }
    tmp_made = true;
    if ((o = malloc(sizeof(*o))) == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    o->fd = fd;
    o->sink = NULL;
    o->err = 0;
    o->total = 0;
    o->lf = o->cr = false;
    o->len = 0;
    write_content(o, m);
    if ((rc = o->err) < 0)
        goto fail;
    if (maildir_sys.fsync(fd) < 0) {
        rc = -errno;
        goto fail;
    }
    if (close(fd) < 0) {
        fd = -1;
        rc = -errno;
        goto fail;
    }
    fd = -1;
    /* Into new/ under a name that says the size; never over another file. */
    for (int tries = 0;; tries++) {
        snprintf(fin, sizeof(fin), "new/%s,S=%llu", base, (unsigned long long)o->total);
        if (maildir_sys.renameat2(dfd, tmp, dfd, fin, RENAME_NOREPLACE) == 0)
            break;
        rc = -errno;
        if (rc == -EINVAL) {
            /* A file system without RENAME_NOREPLACE: link, then unlink. */
            if (linkat(dfd, tmp, dfd, fin, 0) == 0) {
                unlinkat(dfd, tmp, 0);
                break;
            }
            rc = -errno;
        }
        if (rc != -EEXIST || tries >= MAILDIR_NAME_TRIES)
            goto fail;
        unique_base(h, base, sizeof(base));
    }
    tmp_made = false;
    /* The rename is durable once new/ is. */
    if ((rc = dir_fsync(dfd, "new")) < 0) {
        /* Not durable: take it back so that a retry does not duplicate it. */
        unlinkat(dfd, fin, 0);
        goto fail;
    }
    snprintf(name, MAILDIR_NAME_MAX + 1, "%s", fin + 4);
    free(o);
    close(dfd);
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    if (tmp_made)
        unlinkat(dfd, tmp, 0);
    free(o);
    close(dfd);
    return rc;
}

/* ---- the pool ---- */

/*
 * Invariants: head..tail is the FIFO of queued requests (tail valid when
 * head is not NULL); stopping is set once, by maildir_pool_free(), after
 * which nothing is queued; workers exit when stopping and the queue is
 * empty.
 */
struct maildir_pool {
    struct workq *q;
    char host[128];
};

static void run_job(struct workq_item *it)
{
    struct maildir_req *req = (struct maildir_req *)((char *)it - offsetof(struct maildir_req, work));
    req->res = maildir_write(&req->msg, req->pool->host, req->name);
}

static void job_done(struct workq_item *it)
{
    struct maildir_req *req = (struct maildir_req *)((char *)it - offsetof(struct maildir_req, work));
    req->cb(req, req->res);
}

struct maildir_pool *maildir_pool_new(unsigned nworkers, const char *host)
{
    struct maildir_pool *p = calloc(1, sizeof(*p));

    if (p == NULL || (p->q = workq_new(nworkers)) == NULL) {
        free(p);
        return NULL;
    }
    snprintf(p->host, sizeof(p->host), "%s", host ? host : "localhost");
    return p;
}

void maildir_pool_free(struct maildir_pool *p)
{
    if (p == NULL)
        return;
    workq_free(p->q);
    free(p);
}

int maildir_deliver(struct maildir_pool *p, struct io_loop *loop, struct maildir_req *req,
                    maildir_cb cb)
{
    if (p == NULL || loop == NULL || req == NULL || cb == NULL)
        return -EINVAL;
    req->cb = cb;
    req->res = 0;
    req->name[0] = '\0';
    req->pool = p;
    req->work.run = run_job;
    req->work.done = job_done;
    return workq_submit(p->q, loop, &req->work);
}
