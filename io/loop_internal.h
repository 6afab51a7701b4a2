/* SPDX-License-Identifier: MIT */
/*
 * loop_internal.h - the private interface between the common part of the
 * reactor (loop.c: op bookkeeping, timers, the deferred queue, the
 * cross-thread post queue, the turn itself) and its two backends
 * (loop_uring.c, loop_epoll.c).  Nothing outside io/loop*.c includes it.
 *
 * Division of work:
 *  - loop.c validates every submit, fills the op's common fields, marks it
 *    busy, and hands it to the backend; if the backend refuses, loop.c makes
 *    the op idle again and returns the error.  Timers and io_defer() never
 *    reach a backend.
 *  - A backend turns kernel events into callbacks.  It delivers non-final
 *    results by calling op->cb itself (with IO_F_MORE) and final results
 *    through io_loop_finish() (or io_loop_queue_final() when the result is
 *    known while still inside a submit call).
 *  - The loop's eventfd (posts, stop, helper-thread completions) is watched
 *    by an ordinary multishot poll op submitted through the backend.
 */
#ifndef ORTOO_IO_LOOP_INTERNAL_H
#define ORTOO_IO_LOOP_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "io/loop.h"

/* op->kind values (low byte) ... */
enum {
    IO_OP_NONE = 0,
    IO_OP_ACCEPT,
    IO_OP_RECV,
    IO_OP_SEND,
    IO_OP_WRITE,
    IO_OP_POLL,
    IO_OP_TIMER,
    IO_OP_DEFER,
    IO_OP_CONNECT,
    IO_OP_SENDFILE,
};
#define IO_OP_KIND_MASK 0xff
/* ... and a flag: the op's final result waits in the loop's deferred queue. */
#define IO_OP_F_QUEUED 0x100

#define IO_OP_KIND(op) ((op)->kind & IO_OP_KIND_MASK)

/* A function posted by io_loop_post(). */
struct io_post {
    io_post_fn fn;
    void *arg;
    struct io_post *next;
};

struct io_backend_ops;

/*
 * The loop.  Invariants:
 *  - every op in heap[] is a busy IO_OP_TIMER with heap[op->heap_idx] == op;
 *  - every op on the deferred queue (dq_head..dq_tail, linked by op->next)
 *    is busy and has IO_OP_F_QUEUED in kind; its final result is op->res;
 *  - post_head/remote_head lists are touched only under post_mu;
 *  - be is the backend's private state, owned by it.
 */
struct io_loop {
    const struct io_backend_ops *ops; /* the backend in use */
    enum io_backend backend;          /* URING or EPOLL */
    void *be;                         /* backend state */

    uint64_t now_ns;                  /* CLOCK_MONOTONIC, cached per turn */

    struct io_op **heap;              /* timer min-heap on (deadline, seq) */
    size_t heap_len, heap_cap;
    uint64_t timer_seq;               /* next timer's tie-break number */

    struct io_op *dq_head, *dq_tail;  /* final results for the next turn */

    io_idle_fn idle_fn;               /* per-turn hook, or NULL */
    void *idle_arg;

    pthread_mutex_t post_mu;          /* guards the two lists below */
    struct io_post *post_head, *post_tail;       /* io_loop_post() */
    struct io_op *remote_head, *remote_tail;     /* helper-thread results */
    int efd;                          /* eventfd: wakes the loop */
    struct io_op efd_op;              /* multishot poll on efd */

    atomic_bool stop;                 /* io_loop_stop() was called */
    bool running;                     /* inside io_loop_run() */
};

/*
 * A backend.  Each submit hook gets an op whose common fields (cb, fd, kind,
 * busy, buf/len/iov/off/events as relevant) are already set and returns 0 or
 * -errno (and then must not keep any reference to the op).  cancel() is
 * called for a busy, not yet queued op of one of the backend's kinds, with
 * op->cancelled already set; it must make the final callback come soon.
 * wait() submits what is pending, waits at most timeout_ns (-1: no limit,
 * 0: do not block) and runs the callbacks of what completed.  It returns 0
 * or a fatal -errno.
 */
struct io_backend_ops {
    const char *name;
    int (*init)(struct io_loop *loop, unsigned queue_depth);
    void (*fini)(struct io_loop *loop);
    int (*accept_start)(struct io_loop *loop, struct io_op *op);
    int (*recv_start)(struct io_loop *loop, struct io_op *op);
    int (*send)(struct io_loop *loop, struct io_op *op);
    int (*write_sync)(struct io_loop *loop, struct io_op *op);
    int (*poll_start)(struct io_loop *loop, struct io_op *op);
    void (*cancel)(struct io_loop *loop, struct io_op *op);
    int (*wait)(struct io_loop *loop, int64_t timeout_ns);
    /* connect(): op->buf/op->len hold the borrowed address and its length. */
    int (*connect)(struct io_loop *loop, struct io_op *op);
    /* sendfile(): op->fd the socket, op->src_fd the file, op->off the file
     * offset, op->len the byte count (> 0). */
    int (*sendfile)(struct io_loop *loop, struct io_op *op);
};

extern const struct io_backend_ops io_uring_backend;
extern const struct io_backend_ops io_epoll_backend;

/* Make op idle and run its final callback now (loop thread only). */
void io_loop_finish(struct io_loop *loop, struct io_op *op, int res);
/* Queue op's final callback, with res, for the next turn. */
void io_loop_queue_final(struct io_loop *loop, struct io_op *op, int res);
/*
 * From any thread: hand op's final result to the loop; the final callback
 * runs on the loop's thread.  Used by the epoll backend's write helper.
 */
void io_loop_remote_final(struct io_loop *loop, struct io_op *op, int res);

/*
 * sendfile(2) for an IO_OP_SENDFILE op as much as the socket takes, without
 * blocking (both backends call it on the loop's thread): op->len is the
 * total, op->done what went out, op->off the next file offset.  Returns 1
 * when all went out, 0 when the socket is full, or -errno (-EIO: the file
 * ends before off + len).
 */
int io_sendfile_now(struct io_op *op);

/* Total byte count of an iovec array (capped at SIZE_MAX). */
size_t io_iov_total(const struct iovec *iov, int iovcnt);

/*
 * Test seams for io_write_sync (both backends), so that tests can check that
 * nothing is reported durable before it is:
 *  - io_write_trace, when set, is called (from whichever thread did it) as
 *    each write or fdatasync of an io_write_sync completes, before the op's
 *    result can reach the loop: kind IO_WEV_WRITE with the file range
 *    [off, off + res) and whether the write itself was durable (RWF_DSYNC),
 *    or IO_WEV_SYNC (an fdatasync of fd) with its result;
 *  - io_uring_short_cap, when > 0, makes the io_uring backend take any write
 *    completion of more bytes as a short write of that many (the rest is
 *    written again), to exercise the resubmission path.
 */
enum { IO_WEV_WRITE = 1, IO_WEV_SYNC };
struct io_write_event {
    int kind;       /* IO_WEV_* */
    int fd;
    uint64_t off;   /* IO_WEV_WRITE: file offset written at */
    bool dsync;     /* IO_WEV_WRITE: durable on completion (RWF_DSYNC) */
    int res;        /* bytes written, or 0, or -errno */
};
extern void (*io_write_trace)(const struct io_write_event *ev);
extern size_t io_uring_short_cap;

#endif
