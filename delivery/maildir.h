/* SPDX-License-Identifier: MIT */
/*
 * maildir.h - local delivery: one message into a user's Maildir, durably,
 * off the reactor.
 *
 * The mailbox is <root>/<domain>/<user>/Maildir ([local] maildir_root,
 * default /var/vmail), in the layout Dovecot and every Maildir reader
 * expect (cr.yp.to/proto/maildir.html): the message is written to tmp/
 * under a unique name, fsync'ed, renamed into new/ and new/ is fsync'ed;
 * missing directories are created (0700) and their parents fsync'ed.  Only
 * when all of that succeeded is the delivery reported done, so the caller
 * may then mark the recipient delivered in the spool.
 *
 * Names: <sec>.M<usec>P<pid>Q<n>.<host>,S=<size> where n counts deliveries
 * in this process, host is the server's name ('/' written \057, ':' \072)
 * and size is the file's size in bytes; a name that exists already is never
 * replaced (renameat2 RENAME_NOREPLACE; the next n is tried).
 *
 * Content: "Return-Path: <sender>" and "Delivered-To: <recipient>", then
 * the header fields ortoo added (the envelope's Received: and the like),
 * then the stored message, dot-unstuffed: exactly the bytes the client
 * sent, with their CRLF line ends (Dovecot reads CRLF Maildir files; S= is
 * the size on disk).
 *
 * The file system work is blocking, so it runs on a small pool of worker
 * threads; the result is posted back to the caller's loop (io_loop_post),
 * never run inside maildir_deliver().
 */
#ifndef ORTOO_MAILDIR_H
#define ORTOO_MAILDIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "io/workq.h"

struct io_loop;
struct maildir_pool;
struct maildir_req;

#define MAILDIR_NAME_MAX 255

/*
 * What to deliver.  Every pointer is borrowed until the request's callback
 * has run (maildir_deliver) or the call returns (maildir_write).
 * The message comes from memory (iovcnt > 0) or from a file (iovcnt == 0:
 * len bytes at offset off of fd, read with pread on the worker).
 */
struct maildir_msg {
    const char *root;           /* maildir_root, absolute */
    const char *domain;         /* lowercase domain: one path element */
    const char *user;           /* local part: one path element (no '/',
                                   not "." or "..", not empty) */
    const char *return_path;    /* envelope sender; "" for the null sender */
    const char *delivered_to;   /* the recipient, user@domain */
    const char *prefix;         /* header fields ortoo added, CRLF-terminated;
                                   NULL for none */
    size_t prefix_len;
    const struct iovec *iov;    /* the stored message (wire form: CRLF lines,
                                   dot-stuffed, without the final ".") */
    int iovcnt;
    int fd;                     /* iovcnt == 0: the file that holds it */
    uint64_t off, len;
};

/*
 * Write one message.  Blocking (this is what the workers run; tests call
 * it directly).  host: the name used in the file name.  On success returns
 * 0 and the file's name (in new/) in name[MAILDIR_NAME_MAX + 1]; on failure
 * -errno (-ENOSPC, -EIO, -EDQUOT, -EACCES..., -EINVAL for a bad path
 * element) with nothing left in new/ or tmp/.
 */
int maildir_write(const struct maildir_msg *m, const char *host, char *name);

/* Takes len bytes (borrowed for the call); returns 0, or a negative value
 * that stops the stream. */
typedef int (*maildir_sink_fn)(void *arg, const char *p, size_t len);

/*
 * The content maildir_write() would write (Return-Path, Delivered-To, the
 * prefix, the dot-unstuffed message), handed to sink in pieces of up to
 * 64 KB instead; with lf every CRLF becomes a bare LF (a lone CR stays), as
 * delivery agents give mail to commands (delivery/pipe.h).  Only
 * return_path, delivered_to, prefix and the message fields of m are used.
 * Blocking when sink blocks.  Returns 0, the first negative value sink
 * returned, -EINVAL, -ENOMEM, or -errno (-EIO for a short file) reading fd.
 */
int maildir_stream(const struct maildir_msg *m, bool lf, maildir_sink_fn sink, void *arg);

typedef void (*maildir_cb)(struct maildir_req *req, int res);

/* A delivery request, embedded in its owner. */
struct maildir_req {
    maildir_cb cb;              /* runs on loop's thread with res = 0 or -errno */
    void *owner;                /* for the owner */
    struct maildir_msg msg;     /* filled by the owner; borrowed until cb */
    char name[MAILDIR_NAME_MAX + 1]; /* result: the file name in new/ */
    /* private: */
    struct maildir_pool *pool;
    int res;
    struct workq_item work;
};

/* Start nworkers threads (>= 1) that write as host.  NULL when threads or
 * memory run out. */
struct maildir_pool *maildir_pool_new(unsigned nworkers, const char *host);

/* Stop the workers after the queued requests are written and their
 * callbacks posted.  The loops they post to must run those callbacks. */
void maildir_pool_free(struct maildir_pool *p);

/*
 * Queue req (msg filled in) for a worker; cb runs later on loop's thread.
 * Returns 0, or -EINVAL (missing fields) / -ESHUTDOWN (pool stopping),
 * in which case cb will not run.  Never blocks on I/O.
 */
int maildir_deliver(struct maildir_pool *p, struct io_loop *loop, struct maildir_req *req,
                    maildir_cb cb);

#endif
