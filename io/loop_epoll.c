/* SPDX-License-Identifier: MIT */
/*
 * loop_epoll.c - the epoll backend of the reactor: readiness turned into
 * completions with non-blocking syscalls (accept4, recv, send).
 *
 * Each fd that has ops waiting has a record in fds[] (indexed by fd) with two
 * slots: 'rd' (an accept, a recv, or a poll that wants POLLIN) and 'wr' (a
 * send, or a poll that wants only POLLOUT).  The fd is registered
 * level-triggered for the union of what its slots want and removed from the
 * epoll set as soon as both slots are empty, so an owner may close the fd
 * after its final callbacks.  Each registration gets a fresh generation
 * number in the event's data, so an event for a closed-and-reused fd number
 * met later in the same batch is dropped.
 *
 * io_connect calls connect() at submit and, when it is in progress, waits
 * in the 'wr' slot for EPOLLOUT and reads SO_ERROR; io_sendfile runs
 * sendfile(2) in the 'wr' slot like a send.
 *
 * Level triggering keeps it simple and correct: a recv reads one buffer per
 * turn per fd (fair between connections), a send writes until EAGAIN, an
 * accept takes up to IO_EPOLL_ACCEPT_BATCH connections per turn; whatever is
 * left is reported again on the next turn.
 *
 * io_write_sync runs on one helper thread per loop (started on first use):
 * pwritev until done, then fdatasync; the result comes back through
 * io_loop_remote_final(), i.e. the loop's eventfd.
 *
 * Results known inside a submit (a send that completes at once) are queued
 * for the next turn; cancels queue -ECANCELED the same way.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "io/log.h"
#include "io/loop_internal.h"

#ifndef IO_EPOLL_BUF_SIZE
#define IO_EPOLL_BUF_SIZE (16 * 1024) /* the loop's read buffer */
#endif
#define IO_EPOLL_EVENTS 256           /* events taken per epoll_wait */
#define IO_EPOLL_ACCEPT_BATCH 64      /* connections accepted per turn */

/* Ops waiting on one fd; registered = the epoll mask now in the kernel. */
struct ep_fd {
    struct io_op *rd;     /* accept, recv, or poll wanting POLLIN */
    struct io_op *wr;     /* send, or poll wanting only POLLOUT */
    uint32_t registered;  /* 0: not in the epoll set */
    uint32_t gen;         /* bumped on every registration */
};

/*
 * Backend state.  The helper's queue (wq_*) and 'quit' are guarded by mu;
 * everything else belongs to the loop's thread.
 */
struct epoll_be {
    int epfd;
    struct ep_fd *fds;          /* indexed by fd, nfds entries */
    size_t nfds;
    char *rbuf;                 /* lent to one recv callback at a time */
    struct epoll_event evs[IO_EPOLL_EVENTS];

    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct io_op *wq_head, *wq_tail; /* writes not yet started */
    bool quit;
    bool thr_started;
    pthread_t thr;
};

static struct epoll_be *ep_of(struct io_loop *loop)
{
    return loop->be;
}

/* ---- the fd table ------------------------------------------------------- */

static struct ep_fd *fd_rec(struct epoll_be *be, int fd)
{
    if ((size_t)fd >= be->nfds) {
        size_t n = be->nfds ? be->nfds : 64;
        struct ep_fd *t;

        while (n <= (size_t)fd)
            n *= 2;
        t = realloc(be->fds, n * sizeof(*t));
        if (t == NULL)
            return NULL;
        memset(t + be->nfds, 0, (n - be->nfds) * sizeof(*t));
        be->fds = t;
        be->nfds = n;
    }
    return &be->fds[fd];
}

static uint32_t op_mask(const struct io_op *op)
{
    switch (IO_OP_KIND(op)) {
    case IO_OP_ACCEPT:
    case IO_OP_RECV:
        return EPOLLIN | EPOLLRDHUP;
    case IO_OP_SEND:
    case IO_OP_CONNECT:
    case IO_OP_SENDFILE:
        return EPOLLOUT;
    case IO_OP_POLL:
        return op->events & (EPOLLIN | EPOLLOUT | EPOLLPRI | EPOLLRDHUP);
    default:
        return 0;
    }
}

/* Bring the kernel's registration of fd in line with its slots. */
static int fd_sync(struct epoll_be *be, int fd)
{
    struct ep_fd *r = &be->fds[fd];
    uint32_t want = (r->rd ? op_mask(r->rd) : 0) | (r->wr ? op_mask(r->wr) : 0);
    struct epoll_event ev;
    int rc;

    if (r->rd != NULL || r->wr != NULL)
        want |= EPOLLERR | EPOLLHUP; /* always reported; keeps want != 0 */
    if (want == r->registered)
        return 0;
    if (want == 0) {
        /* EBADF/ENOENT: the owner closed the fd already; nothing to undo. */
        epoll_ctl(be->epfd, EPOLL_CTL_DEL, fd, NULL);
        r->registered = 0;
        return 0;
    }
    memset(&ev, 0, sizeof(ev));
    ev.events = want;
    if (r->registered == 0) {
        r->gen++;
        ev.data.u64 = (uint64_t)r->gen << 32 | (uint32_t)fd;
        rc = epoll_ctl(be->epfd, EPOLL_CTL_ADD, fd, &ev);
    } else {
        ev.data.u64 = (uint64_t)r->gen << 32 | (uint32_t)fd;
        rc = epoll_ctl(be->epfd, EPOLL_CTL_MOD, fd, &ev);
    }
    if (rc < 0)
        return -errno;
    r->registered = want;
    return 0;
}

/* Put op into its slot of its fd and register; -EBUSY if the slot is taken. */
static int slot_attach(struct epoll_be *be, struct io_op *op, bool write_slot)
{
    struct ep_fd *r = fd_rec(be, op->fd);
    struct io_op **slot;
    int err;

    if (r == NULL)
        return -ENOMEM;
    slot = write_slot ? &r->wr : &r->rd;
    if (*slot != NULL)
        return -EBUSY;
    *slot = op;
    err = fd_sync(be, op->fd);
    if (err < 0) {
        *slot = NULL;
        fd_sync(be, op->fd);
    }
    return err;
}

/* Take op out of its slot (if there) and update the registration. */
static bool slot_detach(struct epoll_be *be, struct io_op *op)
{
    struct ep_fd *r;

    if (op->fd < 0 || (size_t)op->fd >= be->nfds)
        return false;
    r = &be->fds[op->fd];
    if (r->rd == op)
        r->rd = NULL;
    else if (r->wr == op)
        r->wr = NULL;
    else
        return false;
    fd_sync(be, op->fd);
    return true;
}

static bool poll_is_write_only(const struct io_op *op)
{
    return !(op->events & (POLLIN | POLLPRI | POLLRDHUP));
}

/* Detach op and run its final callback. */
static void op_end(struct io_loop *loop, struct io_op *op, int res)
{
    slot_detach(ep_of(loop), op);
    io_loop_finish(loop, op, res);
}

/* ---- readiness handlers ------------------------------------------------- */

/* Is op still the one waiting in fd's slot?  (Callbacks may cancel it.) */
static bool still_armed(struct epoll_be *be, int fd, struct io_op *op)
{
    return (size_t)fd < be->nfds && (be->fds[fd].rd == op || be->fds[fd].wr == op);
}

static void do_accept(struct io_loop *loop, struct io_op *op)
{
    struct epoll_be *be = ep_of(loop);
    int lfd = op->fd;

    for (int i = 0; i < IO_EPOLL_ACCEPT_BATCH && still_armed(be, lfd, op); i++) {
        int nfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (nfd >= 0) {
            op->cb(op, nfd, NULL, IO_F_MORE);
            continue;
        }
        switch (errno) {
        case EINTR:
        /* accept(2): errors of the aborted connection, not of the socket. */
        case ECONNABORTED:
        case EPROTO:
        case ENETDOWN:
        case ENOPROTOOPT:
        case EHOSTDOWN:
        case ENONET:
        case EHOSTUNREACH:
        case EOPNOTSUPP:
        case ENETUNREACH:
            continue;
        case EAGAIN:
            return;
        default:
            op_end(loop, op, -errno);
            return;
        }
    }
}

static void do_recv(struct io_loop *loop, struct io_op *op)
{
    struct epoll_be *be = ep_of(loop);
    ssize_t n;

    do {
        n = recv(op->fd, be->rbuf, IO_EPOLL_BUF_SIZE, 0);
    } while (n < 0 && errno == EINTR);
    if (n > 0)
        op->cb(op, (int)n, be->rbuf, IO_F_MORE);
    else if (n == 0)
        op_end(loop, op, 0);
    else if (errno != EAGAIN && errno != EWOULDBLOCK)
        op_end(loop, op, -errno);
}

/*
 * Send as much as the socket takes.  Returns 1 when done, 0 when it must wait
 * for EPOLLOUT, or -errno.
 */
static int send_some(struct io_op *op)
{
    while (op->len > 0) {
        ssize_t n = send(op->fd, op->buf, op->len, MSG_NOSIGNAL | MSG_DONTWAIT);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return -errno;
        }
        op->buf += n;
        op->len -= (size_t)n;
        op->done += (size_t)n;
    }
    return 1;
}

/* A send or a sendfile, as much as the socket takes: 1 when all went out,
 * 0 when it must wait for EPOLLOUT, or -errno. */
static int send_more(struct io_op *op)
{
    return IO_OP_KIND(op) == IO_OP_SENDFILE ? io_sendfile_now(op) : send_some(op);
}

static void do_send(struct io_loop *loop, struct io_op *op)
{
    int rc = send_more(op);

    if (rc < 0)
        op_end(loop, op, rc);
    else if (rc > 0)
        op_end(loop, op, (int)op->done);
}

/* The outcome of a non-blocking connect, once the socket is writable. */
static void do_connect(struct io_loop *loop, struct io_op *op)
{
    int err = 0;
    socklen_t elen = sizeof(err);

    if (getsockopt(op->fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
        err = errno;
    op_end(loop, op, -err);
}

static void do_poll(struct io_op *op, uint32_t revents)
{
    uint32_t res = revents & (op->events | POLLERR | POLLHUP);

    if (res != 0)
        op->cb(op, (int)res, NULL, IO_F_MORE);
}

static void on_ready(struct io_loop *loop, struct io_op *op, uint32_t revents)
{
    switch (IO_OP_KIND(op)) {
    case IO_OP_ACCEPT:
        do_accept(loop, op);
        break;
    case IO_OP_RECV:
        do_recv(loop, op);
        break;
    case IO_OP_SEND:
    case IO_OP_SENDFILE:
        do_send(loop, op);
        break;
    case IO_OP_POLL:
        do_poll(op, revents);
        break;
    case IO_OP_CONNECT:
        do_connect(loop, op);
        break;
    default:
        break;
    }
}

static void ep_dispatch(struct io_loop *loop, const struct epoll_event *ev)
{
    struct epoll_be *be = ep_of(loop);
    int fd = (int)(uint32_t)ev->data.u64;
    uint32_t gen = (uint32_t)(ev->data.u64 >> 32);
    uint32_t e = ev->events;
    uint32_t trouble = EPOLLERR | EPOLLHUP;
    struct io_op *op;

    if ((size_t)fd >= be->nfds || be->fds[fd].gen != gen || be->fds[fd].registered == 0)
        return; /* an fd unregistered earlier in this batch */
    op = be->fds[fd].rd;
    if (op != NULL && (e & (op_mask(op) | trouble)))
        on_ready(loop, op, e);
    /* The callback may have changed the table (realloc) or the slots. */
    if ((size_t)fd >= be->nfds || be->fds[fd].gen != gen || be->fds[fd].registered == 0)
        return;
    op = be->fds[fd].wr;
    if (op != NULL && (e & (op_mask(op) | trouble)))
        on_ready(loop, op, e);
}

/* ---- the write helper thread -------------------------------------------- */

/* RWF_DSYNC was refused once (old kernel or file system): fdatasync instead. */
static atomic_bool no_dsync;

/* pwritev2(RWF_DSYNC) everything (each write durable on return, as
 * write+fdatasync), or pwritev then fdatasync where RWF_DSYNC is refused.
 * Returns the byte count or -errno. */
static int write_sync_now(struct io_op *op)
{
    struct iovec iov[IOV_MAX];
    struct iovec *cur = iov;
    int cnt = op->iovcnt;
    uint64_t off = op->off;
    size_t left = op->len;
    int rc;

    memcpy(iov, op->iov, (size_t)cnt * sizeof(*iov));
    while (left > 0) {
        bool dsync = !atomic_load(&no_dsync);
        int wflags = dsync ? RWF_DSYNC : 0;
        ssize_t n = pwritev2(op->fd, cur, cnt, (off_t)off, wflags);
        if (io_write_trace) {
            /* what the kernel was asked, not what we meant */
            int werr = n < 0 ? errno : 0;
            if (werr != EINTR && !(dsync && werr == EOPNOTSUPP))
                io_write_trace(&(struct io_write_event){IO_WEV_WRITE, op->fd, off,
                                                        (wflags & RWF_DSYNC) != 0,
                                                        n < 0 ? -werr : (int)n});
            errno = werr;
        }

        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (dsync && errno == EOPNOTSUPP) {
                atomic_store(&no_dsync, true);
                continue;
            }
            return -errno;
        }
        if (n == 0)
            return -EIO; /* no progress: do not spin */
        left -= (size_t)n;
        off += (uint64_t)n;
        while (n > 0 && cnt > 0) {
            if ((size_t)n >= cur->iov_len) {
                n -= (ssize_t)cur->iov_len;
                cur++;
                cnt--;
            } else {
                cur->iov_base = (char *)cur->iov_base + n;
                cur->iov_len -= (size_t)n;
                n = 0;
            }
        }
    }
    if (!atomic_load(&no_dsync) && op->len > 0)
        return (int)op->len;
    do {
        rc = fdatasync(op->fd);
    } while (rc < 0 && errno == EINTR);
    if (rc < 0)
        rc = -errno;
    if (io_write_trace)
        io_write_trace(&(struct io_write_event){IO_WEV_SYNC, op->fd, 0, false, rc});
    if (rc < 0)
        return rc;
    return (int)op->len;
}

static void *writer_main(void *arg)
{
    struct io_loop *loop = arg;
    struct epoll_be *be = ep_of(loop);
    sigset_t all;

    /* Signals belong to the main thread (signalfd there). */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);

    pthread_mutex_lock(&be->mu);
    for (;;) {
        struct io_op *op;
        int res;

        while (be->wq_head == NULL && !be->quit)
            pthread_cond_wait(&be->cv, &be->mu);
        if (be->quit)
            break;
        op = be->wq_head;
        be->wq_head = op->next;
        if (be->wq_head == NULL)
            be->wq_tail = NULL;
        pthread_mutex_unlock(&be->mu);

        res = write_sync_now(op);
        io_loop_remote_final(loop, op, res);

        pthread_mutex_lock(&be->mu);
    }
    pthread_mutex_unlock(&be->mu);
    return NULL;
}

/* ---- submit hooks ------------------------------------------------------- */

static int epoll_accept_start(struct io_loop *loop, struct io_op *op)
{
    return slot_attach(ep_of(loop), op, false);
}

static int epoll_recv_start(struct io_loop *loop, struct io_op *op)
{
    return slot_attach(ep_of(loop), op, false);
}

static int epoll_poll_start(struct io_loop *loop, struct io_op *op)
{
    return slot_attach(ep_of(loop), op, poll_is_write_only(op));
}

/* io_send and io_sendfile: both go out in the fd's 'wr' slot. */
static int epoll_send(struct io_loop *loop, struct io_op *op)
{
    struct epoll_be *be = ep_of(loop);
    struct ep_fd *r = fd_rec(be, op->fd);
    int rc;

    if (r == NULL)
        return -ENOMEM;
    if (r->wr != NULL)
        return -EBUSY;
    /* Try at once: most sends fit in the socket buffer.  The result is
     * delivered on the next turn, never from inside this call. */
    rc = send_more(op);
    if (rc != 0) {
        io_loop_queue_final(loop, op, rc < 0 ? rc : (int)op->done);
        return 0;
    }
    return slot_attach(be, op, true);
}

static int epoll_connect(struct io_loop *loop, struct io_op *op)
{
    struct epoll_be *be = ep_of(loop);
    struct ep_fd *r = fd_rec(be, op->fd);
    int rc;

    if (r == NULL)
        return -ENOMEM;
    if (r->wr != NULL)
        return -EBUSY;
    do {
        rc = connect(op->fd, (const struct sockaddr *)op->buf, (socklen_t)op->len);
    } while (rc < 0 && errno == EINTR);
    if (rc == 0 || errno != EINPROGRESS) {
        /* Done or failed at once (loopback often is): next turn. */
        io_loop_queue_final(loop, op, rc == 0 ? 0 : -errno);
        return 0;
    }
    return slot_attach(be, op, true);
}

static int epoll_write_sync(struct io_loop *loop, struct io_op *op)
{
    struct epoll_be *be = ep_of(loop);
    int err = 0;

    pthread_mutex_lock(&be->mu);
    if (!be->thr_started) {
        err = -pthread_create(&be->thr, NULL, writer_main, loop);
        if (err == 0)
            be->thr_started = true;
    }
    if (err == 0) {
        op->next = NULL;
        if (be->wq_tail != NULL)
            be->wq_tail->next = op;
        else
            be->wq_head = op;
        be->wq_tail = op;
        pthread_cond_signal(&be->cv);
    }
    pthread_mutex_unlock(&be->mu);
    return err;
}

static void epoll_cancel(struct io_loop *loop, struct io_op *op)
{
    struct epoll_be *be = ep_of(loop);

    if (IO_OP_KIND(op) == IO_OP_WRITE) {
        struct io_op **pp;
        bool found = false;

        /* Only a write the helper has not started can be taken back. */
        pthread_mutex_lock(&be->mu);
        for (pp = &be->wq_head; *pp != NULL; pp = &(*pp)->next) {
            if (*pp == op) {
                *pp = op->next;
                if (be->wq_tail == op) {
                    be->wq_tail = NULL;
                    for (struct io_op *o = be->wq_head; o != NULL; o = o->next)
                        be->wq_tail = o;
                }
                found = true;
                break;
            }
        }
        pthread_mutex_unlock(&be->mu);
        if (found)
            io_loop_queue_final(loop, op, -ECANCELED);
        return;
    }
    if (slot_detach(be, op))
        io_loop_queue_final(loop, op, -ECANCELED);
}

static int epoll_wait_turn(struct io_loop *loop, int64_t timeout_ns)
{
    struct epoll_be *be = ep_of(loop);
    int ms, n;

    if (timeout_ns < 0)
        ms = -1;
    else if (timeout_ns >= (int64_t)INT_MAX * 1000000)
        ms = INT_MAX;
    else
        ms = (int)((timeout_ns + 999999) / 1000000); /* never wake early */

    n = epoll_wait(be->epfd, be->evs, IO_EPOLL_EVENTS, ms);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    for (int i = 0; i < n; i++)
        ep_dispatch(loop, &be->evs[i]);
    return 0;
}

/* ---- life cycle --------------------------------------------------------- */

static int epoll_init(struct io_loop *loop, unsigned queue_depth)
{
    struct epoll_be *be = calloc(1, sizeof(*be));
    int err;

    (void)queue_depth;
    if (be == NULL)
        return -ENOMEM;
    be->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (be->epfd < 0) {
        err = -errno;
        goto fail;
    }
    be->rbuf = malloc(IO_EPOLL_BUF_SIZE);
    if (be->rbuf == NULL) {
        err = -ENOMEM;
        goto fail;
    }
    pthread_mutex_init(&be->mu, NULL);
    pthread_cond_init(&be->cv, NULL);
    loop->be = be;
    return 0;

fail:
    if (be->epfd >= 0)
        close(be->epfd);
    free(be);
    return err;
}

static void epoll_fini(struct io_loop *loop)
{
    struct epoll_be *be = ep_of(loop);

    if (be == NULL)
        return;
    if (be->thr_started) {
        pthread_mutex_lock(&be->mu);
        be->quit = true;
        pthread_cond_signal(&be->cv);
        pthread_mutex_unlock(&be->mu);
        pthread_join(be->thr, NULL);
    }
    pthread_cond_destroy(&be->cv);
    pthread_mutex_destroy(&be->mu);
    close(be->epfd);
    free(be->fds);
    free(be->rbuf);
    free(be);
    loop->be = NULL;
}

const struct io_backend_ops io_epoll_backend = {
    .name = "epoll",
    .init = epoll_init,
    .fini = epoll_fini,
    .accept_start = epoll_accept_start,
    .recv_start = epoll_recv_start,
    .send = epoll_send,
    .write_sync = epoll_write_sync,
    .poll_start = epoll_poll_start,
    .cancel = epoll_cancel,
    .wait = epoll_wait_turn,
    .connect = epoll_connect,
    .sendfile = epoll_send,
};
