/* SPDX-License-Identifier: MIT */
/*
 * loop.h - the reactor: a completion-style event loop with two backends,
 * io_uring (liburing) and epoll, behind one API.
 *
 * Every asynchronous operation is a small command object (struct io_op)
 * embedded in its owner.  The owner fills nothing in by hand: it calls one of
 * the io_*() submit functions, and later the op's callback runs on the loop's
 * thread with the result (>= 0 success or a count, < 0 a -errno, as cqe->res).
 *
 * Rules that every backend keeps:
 *  - a callback never runs synchronously inside a submit call; at the
 *    earliest it runs on the next loop turn;
 *  - submissions are batched: the io_uring backend submits once per turn;
 *  - an op is "busy" from submit until its final callback (for multishot ops,
 *    the callback with IO_F_MORE clear).  A busy op must not be resubmitted or
 *    freed; io_cancel() makes it finish soon with -ECANCELED (or with a result
 *    that raced the cancel);
 *  - a buffer handed to the kernel is the kernel's until the final callback.
 *
 * One loop per thread; nothing here is thread-safe except io_loop_post() and
 * io_loop_stop().
 */
#ifndef ORTOO_IO_LOOP_H
#define ORTOO_IO_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

struct io_loop;
struct io_op;

enum io_backend { IO_BACKEND_AUTO = 0, IO_BACKEND_URING, IO_BACKEND_EPOLL };

/* Flags passed to callbacks. */
#define IO_F_MORE 0x1 /* multishot op: more completions will follow */

/*
 * Completion callback.  res: >= 0 success (accepted fd, byte count, ...),
 * < 0 -errno.  For io_recv_start() completions, data/len point to the bytes
 * received; they are borrowed for the duration of the call only (the buffer
 * goes back to the pool when the callback returns).  For other ops data is
 * NULL.
 */
typedef void (*io_cb)(struct io_op *op, int res, const char *data, unsigned flags);

/* Function posted to a loop from any thread. */
typedef void (*io_post_fn)(void *arg);

/* Hook run once per loop turn, just before the loop waits for events. */
typedef void (*io_idle_fn)(void *arg);

/*
 * An operation.  Embed it in its owner; zero it (or call io_op_init) once.
 * Fields below 'private' belong to the loop.
 */
struct io_op {
    io_cb cb;            /* completion callback; set by the submit call */
    void *owner;         /* for the owner's use, never touched by the loop */
    /* private: */
    int kind;            /* IO_OP_* of the op in flight, 0 when idle */
    int fd;              /* file descriptor the op works on */
    bool busy;           /* submitted and its final callback not yet run */
    bool cancelled;      /* io_cancel() was called */
    const char *buf;     /* send: next byte to send */
    size_t len;          /* send: bytes left; write: total */
    size_t done;         /* bytes done so far (send, write) */
    const struct iovec *iov; /* write: caller's iovec array (borrowed) */
    int iovcnt;          /* write: number of iovecs */
    uint64_t off;        /* write: file offset */
    uint32_t events;     /* poll: POLLIN/POLLOUT mask */
    uint64_t deadline_ns;/* timer: CLOCK_MONOTONIC deadline */
    size_t heap_idx;     /* timer: position in the timer heap */
    int res;             /* result kept for deferred delivery */
    struct io_op *next;  /* intrusive link for the loop's queues */
    int src_fd;          /* sendfile: the file the bytes come from */
};

/* Zero an op.  Equivalent to memset 0. */
void io_op_init(struct io_op *op, void *owner);

/* True while the op is in flight. */
static inline bool io_op_busy(const struct io_op *op) { return op->busy; }

/*
 * Create a loop.  backend AUTO tries io_uring and falls back to epoll,
 * logging why.  Returns NULL with errno set on failure.
 * queue_depth: io_uring SQ entries (0: default 4096).
 */
struct io_loop *io_loop_new(enum io_backend backend, unsigned queue_depth);
/* Free a loop that is not running; every op must be idle. */
void io_loop_free(struct io_loop *loop);
/* The backend actually in use (URING or EPOLL). */
enum io_backend io_loop_backend(const struct io_loop *loop);
/* "uring" or "epoll". */
const char *io_backend_name(enum io_backend b);

/* Run until io_loop_stop().  Returns 0, or -errno on a fatal loop error. */
int io_loop_run(struct io_loop *loop);
/* Ask the loop to return from io_loop_run() (thread-safe). */
void io_loop_stop(struct io_loop *loop);
/* True while io_loop_run() is running (for code that must not nest it). */
bool io_loop_running(const struct io_loop *loop);

/*
 * Run fn(arg) on the loop's thread on a coming turn.  Thread-safe (a mutex
 * and an eventfd; not for the hot path between reactors).  Returns 0 or
 * -ENOMEM.
 */
int io_loop_post(struct io_loop *loop, io_post_fn fn, void *arg);

/* Install the per-turn idle hook (one per loop; NULL removes it). */
void io_loop_set_idle(struct io_loop *loop, io_idle_fn fn, void *arg);

/* CLOCK_MONOTONIC now in nanoseconds (read fresh; also refreshes the loop's cache). */
uint64_t io_loop_now(struct io_loop *loop);

/*
 * Multishot accept on a listening socket (non-blocking, bound).  cb runs with
 * res = new fd (non-blocking, close-on-exec) or -errno; IO_F_MORE while armed.
 */
int io_accept_start(struct io_loop *loop, struct io_op *op, int lfd, io_cb cb);

/*
 * Start receiving on a connected socket.  cb runs with res = bytes (data
 * points at them), 0 at EOF (final), or -errno (final).  IO_F_MORE is set
 * while more completions will come.  Stays armed until EOF, an error or
 * io_cancel().  The io_uring backend uses multishot recv with a provided
 * buffer ring; epoll reads into a loop-owned buffer.
 */
int io_recv_start(struct io_loop *loop, struct io_op *op, int fd, io_cb cb);

/*
 * Send len bytes of buf on fd.  The loop resubmits after short sends; cb
 * runs once with res = len, or -errno.  buf is borrowed until cb.
 */
int io_send(struct io_loop *loop, struct io_op *op, int fd, const void *buf,
            size_t len, io_cb cb);

/*
 * Write the iovecs at file offset off, then fdatasync(fd); cb runs once with
 * res = total bytes written, or -errno (-ENOSPC, -EIO...).  iov and the
 * memory it points at are borrowed until cb.  io_uring: linked WRITEV+FSYNC;
 * epoll: on a helper thread of this loop.
 */
int io_write_sync(struct io_loop *loop, struct io_op *op, int fd,
                  const struct iovec *iov, int iovcnt, uint64_t off, io_cb cb);

/*
 * Poll fd for events (POLLIN/POLLOUT).  Multishot: cb runs with res = revents
 * and IO_F_MORE each time the fd is ready, until io_cancel().
 */
int io_poll_start(struct io_loop *loop, struct io_op *op, int fd,
                  uint32_t events, io_cb cb);

/*
 * One-shot timer: cb runs with res = 0 after ms milliseconds, or -ECANCELED.
 * Timers live in a user-space heap in the loop (both backends).
 */
int io_timer_start(struct io_loop *loop, struct io_op *op, uint64_t ms, io_cb cb);

/* Run cb with res = 0 on the next loop turn. */
int io_defer(struct io_loop *loop, struct io_op *op, io_cb cb);

/*
 * Connect a non-blocking socket fd (created by the caller) to addr.  cb runs
 * once with res = 0 when the connection is established, or -errno
 * (-ECONNREFUSED, -ENETUNREACH, -ETIMEDOUT...).  addr is borrowed until cb.
 * There is no time limit here: the owner arms its own timer and cancels
 * (the result is then -ECANCELED).  io_uring: IORING_OP_CONNECT; epoll:
 * connect() then EPOLLOUT and SO_ERROR.
 */
int io_connect(struct io_loop *loop, struct io_op *op, int fd,
               const struct sockaddr *addr, socklen_t addrlen, io_cb cb);

/*
 * Send len bytes of the file filefd, from file offset off, on the connected
 * socket sockfd without copying them through user space.  The loop resumes
 * after short sends; cb runs once with res = len, or -errno (-EIO when the
 * file ends before off + len).  The file offset of filefd is not used or
 * moved.  Only one send, sendfile, connect or POLLOUT-only poll per socket
 * may be in flight (the epoll backend's writer slot; -EBUSY).  Both
 * backends call sendfile(2) on the loop's thread whenever the socket has
 * room (EPOLLOUT, or a one-shot IORING_OP_POLL_ADD): measured cheaper than
 * SPLICE through io_uring and than a send from mapped memory (see
 * loop_uring.c).  The file's pages should be in the page cache (recently
 * written spool segments are): a cold page is read synchronously.
 */
int io_sendfile(struct io_loop *loop, struct io_op *op, int sockfd, int filefd,
                uint64_t off, size_t len, io_cb cb);

/*
 * Cancel a busy op.  Its final callback still runs (normally with
 * -ECANCELED); the owner frees itself only after that.  No-op when idle.
 */
void io_cancel(struct io_loop *loop, struct io_op *op);

#endif
