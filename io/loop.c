/* SPDX-License-Identifier: MIT */
/*
 * loop.c - the common part of ortoo's reactor: op bookkeeping, the timer
 * heap, the deferred queue, the cross-thread post queue, the idle hook,
 * backend selection and the loop turn itself.  The kernel-facing work lives
 * in loop_uring.c and loop_epoll.c behind struct io_backend_ops
 * (loop_internal.h).
 *
 * One turn of io_loop_run():
 *   1. refresh the cached clock;
 *   2. fire the timers that were due (only those armed before the turn);
 *   3. deliver the final results queued before the turn (io_defer(), timer
 *      cancels, results known inside a submit call);
 *   4. run the idle hook;
 *   5. let the backend submit, wait (until the nearest timer, or not at all
 *      when something is queued) and dispatch completions.
 * Anything queued during a turn is delivered on a later turn, which is what
 * keeps "a callback never runs synchronously inside a submit" true.
 *
 * The loop's eventfd is watched by an ordinary multishot poll op; writing to
 * it (io_loop_post, io_loop_stop, the epoll backend's write helper) wakes the
 * loop, whose poll callback drains the cross-thread queues.
 */
#include "io/loop.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/sendfile.h>
#include <time.h>
#include <unistd.h>

#include "io/log.h"
#include "io/loop_internal.h"

#define IO_DEFAULT_QUEUE_DEPTH 4096

void (*io_write_trace)(const struct io_write_event *ev); /* loop_internal.h */
#define IO_HEAP_NONE SIZE_MAX     /* heap_idx of a timer not in the heap */

static uint64_t mono_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void io_op_init(struct io_op *op, void *owner)
{
    memset(op, 0, sizeof(*op));
    op->owner = owner;
}

const char *io_backend_name(enum io_backend b)
{
    switch (b) {
    case IO_BACKEND_URING:
        return "uring";
    case IO_BACKEND_EPOLL:
        return "epoll";
    default:
        return "auto";
    }
}

enum io_backend io_loop_backend(const struct io_loop *loop)
{
    return loop->backend;
}

uint64_t io_loop_now(struct io_loop *loop)
{
    /* Fresh, not the value cached at the top of the turn: completions are
     * dispatched after the backend's wait, which may have slept for long.
     * clock_gettime(CLOCK_MONOTONIC) is a vDSO call (tens of ns). */
    loop->now_ns = mono_now_ns();
    return loop->now_ns;
}

size_t io_iov_total(const struct iovec *iov, int iovcnt)
{
    size_t total = 0;

    for (int i = 0; i < iovcnt; i++) {
        if (iov[i].iov_len > SIZE_MAX - total)
            return SIZE_MAX;
        total += iov[i].iov_len;
    }
    return total;
}

/* ---- final results ------------------------------------------------------ */

void io_loop_finish(struct io_loop *loop, struct io_op *op, int res)
{
    io_cb cb = op->cb;

    (void)loop;
    op->busy = false;
    op->kind = IO_OP_NONE;
    op->next = NULL;
    /* Idle before the call: the callback may resubmit the same op. */
    cb(op, res, NULL, 0);
}

void io_loop_queue_final(struct io_loop *loop, struct io_op *op, int res)
{
    op->res = res;
    op->kind |= IO_OP_F_QUEUED;
    op->next = NULL;
    if (loop->dq_tail != NULL)
        loop->dq_tail->next = op;
    else
        loop->dq_head = op;
    loop->dq_tail = op;
}

/* Wake the loop from any thread (a counter bump on the eventfd). */
static void loop_wake(struct io_loop *loop)
{
    uint64_t one = 1;
    ssize_t n;

    do {
        n = write(loop->efd, &one, sizeof(one));
    } while (n < 0 && errno == EINTR);
    /* EAGAIN means the counter is already huge: the loop is awake anyway. */
}

void io_loop_remote_final(struct io_loop *loop, struct io_op *op, int res)
{
    op->res = res;
    op->next = NULL;
    pthread_mutex_lock(&loop->post_mu);
    if (loop->remote_tail != NULL)
        loop->remote_tail->next = op;
    else
        loop->remote_head = op;
    loop->remote_tail = op;
    pthread_mutex_unlock(&loop->post_mu);
    loop_wake(loop);
}

/* Deliver the results that were queued before this point of the turn. */
static void run_deferred(struct io_loop *loop)
{
    struct io_op *op = loop->dq_head;

    loop->dq_head = loop->dq_tail = NULL;
    while (op != NULL) {
        struct io_op *next = op->next;
        int res = op->res;

        op->kind &= ~IO_OP_F_QUEUED;
        if (IO_OP_KIND(op) == IO_OP_DEFER && op->cancelled)
            res = -ECANCELED;
        io_loop_finish(loop, op, res);
        op = next;
    }
}

/* ---- timer heap: min-heap on (deadline_ns, seq kept in op->off) -------- */

static bool timer_before(const struct io_op *a, const struct io_op *b)
{
    if (a->deadline_ns != b->deadline_ns)
        return a->deadline_ns < b->deadline_ns;
    return a->off < b->off;
}

static void heap_set(struct io_loop *loop, size_t i, struct io_op *op)
{
    loop->heap[i] = op;
    op->heap_idx = i;
}

static void heap_up(struct io_loop *loop, size_t i)
{
    struct io_op *op = loop->heap[i];

    while (i > 0) {
        size_t parent = (i - 1) / 2;

        if (!timer_before(op, loop->heap[parent]))
            break;
        heap_set(loop, i, loop->heap[parent]);
        i = parent;
    }
    heap_set(loop, i, op);
}

static void heap_down(struct io_loop *loop, size_t i)
{
    struct io_op *op = loop->heap[i];

    for (;;) {
        size_t l = 2 * i + 1, best = l;

        if (l >= loop->heap_len)
            break;
        if (l + 1 < loop->heap_len && timer_before(loop->heap[l + 1], loop->heap[l]))
            best = l + 1;
        if (!timer_before(loop->heap[best], op))
            break;
        heap_set(loop, i, loop->heap[best]);
        i = best;
    }
    heap_set(loop, i, op);
}

static int heap_push(struct io_loop *loop, struct io_op *op)
{
    if (loop->heap_len == loop->heap_cap) {
        size_t cap = loop->heap_cap ? loop->heap_cap * 2 : 64;
        struct io_op **h = realloc(loop->heap, cap * sizeof(*h));

        if (h == NULL)
            return -ENOMEM;
        loop->heap = h;
        loop->heap_cap = cap;
    }
    loop->heap[loop->heap_len++] = op;
    heap_up(loop, loop->heap_len - 1);
    return 0;
}

static void heap_remove(struct io_loop *loop, struct io_op *op)
{
    size_t i = op->heap_idx;
    struct io_op *last;

    if (i == IO_HEAP_NONE || i >= loop->heap_len || loop->heap[i] != op)
        return;
    op->heap_idx = IO_HEAP_NONE;
    last = loop->heap[--loop->heap_len];
    if (i == loop->heap_len)
        return;
    heap_set(loop, i, last);
    if (i > 0 && timer_before(last, loop->heap[(i - 1) / 2]))
        heap_up(loop, i);
    else
        heap_down(loop, i);
}

/* Fire the due timers that were armed before the turn started. */
static void run_timers(struct io_loop *loop)
{
    uint64_t seq_limit = loop->timer_seq;

    while (loop->heap_len > 0) {
        struct io_op *op = loop->heap[0];

        if (op->deadline_ns > loop->now_ns || op->off >= seq_limit)
            break;
        heap_remove(loop, op);
        io_loop_finish(loop, op, 0);
    }
}

/* ---- cross-thread queue ------------------------------------------------- */

/* Poll callback of the loop's eventfd: drain it and the queues it guards. */
static void on_efd(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct io_loop *loop = op->owner;
    struct io_post *posts;
    struct io_op *remote;
    uint64_t val;
    ssize_t n;

    do {
        n = read(loop->efd, &val, sizeof(val));
    } while (n < 0 && errno == EINTR);

    pthread_mutex_lock(&loop->post_mu);
    posts = loop->post_head;
    remote = loop->remote_head;
    loop->post_head = loop->post_tail = NULL;
    loop->remote_head = loop->remote_tail = NULL;
    pthread_mutex_unlock(&loop->post_mu);

    while (posts != NULL) {
        struct io_post *next = posts->next;

        posts->fn(posts->arg);
        free(posts);
        posts = next;
    }
    while (remote != NULL) {
        struct io_op *next = remote->next;

        io_loop_finish(loop, remote, remote->res);
        remote = next;
    }

    if (!(flags & IO_F_MORE) && res != -ECANCELED) {
        /* The watch ended on its own: re-arm it or the loop goes deaf. */
        int err = io_poll_start(loop, &loop->efd_op, loop->efd, POLLIN, on_efd);

        if (err < 0)
            log_warnx("io_loop event=efd_rearm error=\"%s\"", strerror(-err));
    }
}

int io_loop_post(struct io_loop *loop, io_post_fn fn, void *arg)
{
    struct io_post *p = malloc(sizeof(*p));

    if (p == NULL)
        return -ENOMEM;
    p->fn = fn;
    p->arg = arg;
    p->next = NULL;
    pthread_mutex_lock(&loop->post_mu);
    if (loop->post_tail != NULL)
        loop->post_tail->next = p;
    else
        loop->post_head = p;
    loop->post_tail = p;
    pthread_mutex_unlock(&loop->post_mu);
    loop_wake(loop);
    return 0;
}

void io_loop_stop(struct io_loop *loop)
{
    atomic_store(&loop->stop, true);
    loop_wake(loop);
}

bool io_loop_running(const struct io_loop *loop)
{
    return loop->running;
}

void io_loop_set_idle(struct io_loop *loop, io_idle_fn fn, void *arg)
{
    loop->idle_fn = fn;
    loop->idle_arg = arg;
}

/* ---- life cycle --------------------------------------------------------- */

struct io_loop *io_loop_new(enum io_backend backend, unsigned queue_depth)
{
    struct io_loop *loop;
    int err = 0;

    if (backend != IO_BACKEND_AUTO && backend != IO_BACKEND_URING &&
        backend != IO_BACKEND_EPOLL) {
        errno = EINVAL;
        return NULL;
    }
    if (queue_depth == 0)
        queue_depth = IO_DEFAULT_QUEUE_DEPTH;

    loop = calloc(1, sizeof(*loop));
    if (loop == NULL)
        return NULL;
    loop->efd = -1;
    pthread_mutex_init(&loop->post_mu, NULL);
    atomic_init(&loop->stop, false);
    loop->now_ns = mono_now_ns();
    loop->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (loop->efd < 0) {
        err = -errno;
        goto fail;
    }

    if (backend == IO_BACKEND_AUTO || backend == IO_BACKEND_URING) {
        err = io_uring_backend.init(loop, queue_depth);
        if (err == 0) {
            loop->ops = &io_uring_backend;
            loop->backend = IO_BACKEND_URING;
        } else if (backend == IO_BACKEND_AUTO) {
            log_warnx("io_loop backend=uring error=\"%s\" fallback=epoll",
                      strerror(-err));
        } else {
            goto fail;
        }
    }
    if (loop->ops == NULL) {
        err = io_epoll_backend.init(loop, queue_depth);
        if (err < 0)
            goto fail;
        loop->ops = &io_epoll_backend;
        loop->backend = IO_BACKEND_EPOLL;
    }

    io_op_init(&loop->efd_op, loop);
    err = io_poll_start(loop, &loop->efd_op, loop->efd, POLLIN, on_efd);
    if (err < 0) {
        loop->ops->fini(loop);
        goto fail;
    }
    return loop;

fail:
    if (loop->efd >= 0)
        close(loop->efd);
    pthread_mutex_destroy(&loop->post_mu);
    free(loop);
    errno = -err;
    return NULL;
}

void io_loop_free(struct io_loop *loop)
{
    struct io_post *p;

    if (loop == NULL)
        return;
    /* The backend drops its kernel state, the eventfd watch included. */
    loop->ops->fini(loop);
    close(loop->efd);
    p = loop->post_head;
    while (p != NULL) {
        struct io_post *next = p->next;

        free(p);
        p = next;
    }
    free(loop->heap);
    pthread_mutex_destroy(&loop->post_mu);
    free(loop);
}

int io_loop_run(struct io_loop *loop)
{
    int err = 0;

    if (loop->running)
        return -EBUSY;
    loop->running = true;
    while (!atomic_load(&loop->stop)) {
        int64_t timeout = -1;

        loop->now_ns = mono_now_ns();
        run_timers(loop);
        run_deferred(loop);
        if (atomic_load(&loop->stop))
            break;
        if (loop->idle_fn != NULL)
            loop->idle_fn(loop->idle_arg);

        if (loop->dq_head != NULL || atomic_load(&loop->stop)) {
            timeout = 0;
        } else if (loop->heap_len > 0) {
            uint64_t now = mono_now_ns(), due = loop->heap[0]->deadline_ns;

            timeout = due > now ? (int64_t)(due - now) : 0;
        }
        err = loop->ops->wait(loop, timeout);
        if (err < 0) {
            log_warnx("io_loop event=fatal backend=%s error=\"%s\"",
                      loop->ops->name, strerror(-err));
            break;
        }
    }
    atomic_store(&loop->stop, false);
    loop->running = false;
    return err;
}

/* ---- submits ------------------------------------------------------------ */

/* Check that op may be submitted and reset it for a new kind.  */
static int op_begin(struct io_op *op, int kind, int fd, io_cb cb)
{
    void *owner;

    if (op->busy)
        return -EBUSY;
    if (cb == NULL)
        return -EINVAL;
    owner = op->owner;
    memset(op, 0, sizeof(*op));
    op->owner = owner;
    op->cb = cb;
    op->kind = kind;
    op->fd = fd;
    op->heap_idx = IO_HEAP_NONE;
    op->busy = true;
    return 0;
}

/* Undo op_begin() after a refused submit. */
static int op_abort(struct io_op *op, int err)
{
    op->busy = false;
    op->kind = IO_OP_NONE;
    return err;
}

int io_accept_start(struct io_loop *loop, struct io_op *op, int lfd, io_cb cb)
{
    int err;

    if (lfd < 0)
        return -EBADF;
    err = op_begin(op, IO_OP_ACCEPT, lfd, cb);
    if (err < 0)
        return err;
    err = loop->ops->accept_start(loop, op);
    return err < 0 ? op_abort(op, err) : 0;
}

int io_recv_start(struct io_loop *loop, struct io_op *op, int fd, io_cb cb)
{
    int err;

    if (fd < 0)
        return -EBADF;
    err = op_begin(op, IO_OP_RECV, fd, cb);
    if (err < 0)
        return err;
    err = loop->ops->recv_start(loop, op);
    return err < 0 ? op_abort(op, err) : 0;
}

int io_send(struct io_loop *loop, struct io_op *op, int fd, const void *buf,
            size_t len, io_cb cb)
{
    int err;

    if (fd < 0)
        return -EBADF;
    if (len > INT_MAX || (buf == NULL && len > 0))
        return -EINVAL;
    err = op_begin(op, IO_OP_SEND, fd, cb);
    if (err < 0)
        return err;
    op->buf = buf;
    op->len = len;
    if (len == 0) {
        io_loop_queue_final(loop, op, 0);
        return 0;
    }
    err = loop->ops->send(loop, op);
    return err < 0 ? op_abort(op, err) : 0;
}

int io_write_sync(struct io_loop *loop, struct io_op *op, int fd,
                  const struct iovec *iov, int iovcnt, uint64_t off, io_cb cb)
{
    size_t total;
    int err;

    if (fd < 0)
        return -EBADF;
    if (iov == NULL || iovcnt <= 0 || iovcnt > IOV_MAX || off > INT64_MAX)
        return -EINVAL;
    total = io_iov_total(iov, iovcnt);
    if (total > INT_MAX)
        return -EINVAL;
    err = op_begin(op, IO_OP_WRITE, fd, cb);
    if (err < 0)
        return err;
    op->iov = iov;
    op->iovcnt = iovcnt;
    op->off = off;
    op->len = total;
    err = loop->ops->write_sync(loop, op);
    return err < 0 ? op_abort(op, err) : 0;
}

int io_poll_start(struct io_loop *loop, struct io_op *op, int fd,
                  uint32_t events, io_cb cb)
{
    int err;

    if (fd < 0)
        return -EBADF;
    if (events == 0)
        return -EINVAL;
    err = op_begin(op, IO_OP_POLL, fd, cb);
    if (err < 0)
        return err;
    op->events = events;
    err = loop->ops->poll_start(loop, op);
    return err < 0 ? op_abort(op, err) : 0;
}

int io_timer_start(struct io_loop *loop, struct io_op *op, uint64_t ms, io_cb cb)
{
    int err;

    err = op_begin(op, IO_OP_TIMER, -1, cb);
    if (err < 0)
        return err;
    loop->now_ns = mono_now_ns(); /* see io_loop_now() */
    if (ms > (UINT64_MAX - loop->now_ns) / 1000000u)
        op->deadline_ns = UINT64_MAX;
    else
        op->deadline_ns = loop->now_ns + ms * 1000000u;
    op->off = loop->timer_seq++;
    err = heap_push(loop, op);
    return err < 0 ? op_abort(op, err) : 0;
}

int io_defer(struct io_loop *loop, struct io_op *op, io_cb cb)
{
    int err = op_begin(op, IO_OP_DEFER, -1, cb);

    if (err < 0)
        return err;
    io_loop_queue_final(loop, op, 0);
    return 0;
}

int io_connect(struct io_loop *loop, struct io_op *op, int fd,
               const struct sockaddr *addr, socklen_t addrlen, io_cb cb)
{
    int err;

    if (fd < 0)
        return -EBADF;
    if (addr == NULL || addrlen == 0)
        return -EINVAL;
    err = op_begin(op, IO_OP_CONNECT, fd, cb);
    if (err < 0)
        return err;
    op->buf = (const char *)addr;
    op->len = addrlen;
    err = loop->ops->connect(loop, op);
    return err < 0 ? op_abort(op, err) : 0;
}

int io_sendfile_now(struct io_op *op)
{
    while (op->done < op->len) {
        off_t off = (off_t)op->off;
        ssize_t n = sendfile(op->fd, op->src_fd, &off, op->len - op->done);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return -errno;
        }
        if (n == 0)
            return -EIO; /* the file ends before off + len */
        op->off += (uint64_t)n;
        op->done += (size_t)n;
    }
    return 1;
}

int io_sendfile(struct io_loop *loop, struct io_op *op, int sockfd, int filefd,
                uint64_t off, size_t len, io_cb cb)
{
    int err;

    if (sockfd < 0 || filefd < 0)
        return -EBADF;
    if (len > INT_MAX || off > INT64_MAX || len > (uint64_t)INT64_MAX - off)
        return -EINVAL;
    err = op_begin(op, IO_OP_SENDFILE, sockfd, cb);
    if (err < 0)
        return err;
    op->src_fd = filefd;
    op->off = off;
    op->len = len;
    if (len == 0) {
        io_loop_queue_final(loop, op, 0);
        return 0;
    }
    err = loop->ops->sendfile(loop, op);
    return err < 0 ? op_abort(op, err) : 0;
}

void io_cancel(struct io_loop *loop, struct io_op *op)
{
    if (!op->busy || op->cancelled)
        return;
    op->cancelled = true;
    if (op->kind & IO_OP_F_QUEUED)
        return; /* its result is already waiting; io_defer reads the flag */
    switch (IO_OP_KIND(op)) {
    case IO_OP_TIMER:
        heap_remove(loop, op);
        io_loop_queue_final(loop, op, -ECANCELED);
        break;
    case IO_OP_DEFER:
        break; /* always queued */
    default:
        loop->ops->cancel(loop, op);
        break;
    }
}
