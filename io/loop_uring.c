/* SPDX-License-Identifier: MIT */
/*
 * loop_uring.c - the io_uring backend of the reactor (liburing 2.3).
 *
 * Each op in flight is one SQE (two for io_write_sync: a WRITEV linked to an
 * FSYNC) whose user_data is the address of the struct io_op, with the low
 * three bits as a tag (ops are pointer-aligned): tag 0 the op itself, tag 1
 * the FSYNC of a write.  Cancel SQEs carry user_data 0, and their own
 * completions are dropped, so they can never be taken for an op's.  An op has
 * at most one SQE in flight (the write pair aside, tracked by pending bits),
 * so once its final callback has run no completion of it can come back.
 *
 * Multishot accept, recv (provided buffer ring, group IO_URING_BGID) and poll
 * stay armed while IO_F_MORE is set; when the kernel ends one without an
 * error (no CQE_F_MORE, res >= 0) or with -ENOBUFS (the buffer ring ran dry
 * within one batch), the op is re-armed here: the owner sees one unbroken
 * stream.  Received buffers go back to the ring right after the callback.
 *
 * io_sendfile calls sendfile(2) on the loop's thread whenever the socket
 * has room, waiting in between with a one-shot POLL_ADD(POLLOUT) (the op's
 * own SQE, tag 0).  Measured with bench/ortoo-sendbench (100 KB messages
 * from a cached file over loopback): about 10 us of CPU per message, half
 * of what SPLICE file -> pipe -> socket costs through io_uring (each SPLICE
 * is punted to an io-wq worker) and of IORING_OP_SEND from the mapped file.
 * Like a send from mapped memory, it reads the file synchronously when its
 * pages are not cached.  io_connect is one IORING_OP_CONNECT.
 *
 * The ring is created with IORING_SETUP_R_DISABLED (plus SINGLE_ISSUER and
 * DEFER_TASKRUN when the kernel has them) and enabled on the first wait, so
 * that the issuer is the thread that runs the loop, whichever thread built
 * it.  SQEs are submitted once per turn in wait(); only a full SQ forces an
 * earlier io_uring_submit().
 */
#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/fs.h>

#include "io/log.h"
#include "io/loop_internal.h"

#ifndef IO_URING_BUF_SIZE
#define IO_URING_BUF_SIZE (16 * 1024) /* bytes per provided recv buffer */
#endif
#ifndef IO_URING_BUF_COUNT
#define IO_URING_BUF_COUNT 1024       /* buffers in the ring; power of two */
#endif
#define IO_URING_BGID 0               /* our only buffer group */

_Static_assert((IO_URING_BUF_COUNT & (IO_URING_BUF_COUNT - 1)) == 0 &&
                   IO_URING_BUF_COUNT <= 32768,
               "IO_URING_BUF_COUNT must be a power of two <= 32768");

#define UD_CANCEL 0u       /* user_data of cancel SQEs */
#define UD_TAG_MASK 7u
#define UD_TAG_OP 0u       /* the op's own SQE */
#define UD_TAG_FSYNC 1u    /* the FSYNC linked behind a write */

/* Write state kept in op->events while an IO_OP_WRITE is in flight. */
#define W_PEND_WRITE 0x1u  /* the write CQE of this round is outstanding */
#define W_PEND_FSYNC 0x2u  /* the fsync CQE of this round is outstanding */
#define W_HAS_FSYNC 0x4u   /* this round ends with an fsync */
#define W_DSYNC 0x8u       /* ... done by the write itself (RWF_DSYNC) */
#define W_SQE_DSYNC 0x10u  /* the write SQE of this round carries RWF_DSYNC */
/* ... with op->res the round's write result and op->deadline_ns its fsync
 * result (as int64_t), both valid once the pending bits are clear. */

/*
 * Backend state.  br/bufs: IO_URING_BUF_COUNT buffers of IO_URING_BUF_SIZE,
 * buffer id i at bufs + i * IO_URING_BUF_SIZE; a buffer is either in the ring
 * or lent to exactly one running recv callback.
 */
struct uring_be {
    struct io_uring ring;
    bool need_enable;              /* created with R_DISABLED, not enabled */
    struct io_uring_buf_ring *br;  /* provided buffer ring (mmap'd) */
    size_t br_size;
    char *bufs;                    /* buffer memory (mmap'd) */
    size_t bufs_size;
    unsigned cq_entries;           /* bound on CQEs handled per turn */
    bool no_dsync;                 /* RWF_DSYNC refused: link an FSYNC instead */
};

/* Times a multishot recv was re-armed after the buffer ring ran dry. */
static atomic_ulong ur_enobufs_rearms;

static struct uring_be *ur_of(struct io_loop *loop)
{
    return loop->be;
}

static uint64_t ud_make(struct io_op *op, unsigned tag)
{
    return (uint64_t)(uintptr_t)op | tag;
}

/*
 * An SQE, or NULL.  A full SQ is flushed with an early submit, except before
 * the ring is enabled (the loop has never run: nothing to flush into).
 * want: how many consecutive SQEs the caller needs (a link must not be split
 * across submits).
 */
static struct io_uring_sqe *sqe_get(struct uring_be *be, unsigned want)
{
    if (io_uring_sq_space_left(&be->ring) < want) {
        if (be->need_enable)
            return NULL;
        io_uring_submit(&be->ring);
        if (io_uring_sq_space_left(&be->ring) < want)
            return NULL;
    }
    return io_uring_get_sqe(&be->ring);
}

/* ---- arming ------------------------------------------------------------- */

/* Prepare the SQE of a single-SQE op (accept, recv, send, poll, connect). */
static int op_arm(struct io_loop *loop, struct io_op *op)
{
    struct io_uring_sqe *sqe = sqe_get(ur_of(loop), 1);

    if (sqe == NULL)
        return -EAGAIN;
    switch (IO_OP_KIND(op)) {
    case IO_OP_ACCEPT:
        io_uring_prep_multishot_accept(sqe, op->fd, NULL, NULL,
                                       SOCK_NONBLOCK | SOCK_CLOEXEC);
        break;
    case IO_OP_RECV:
        io_uring_prep_recv_multishot(sqe, op->fd, NULL, 0, 0);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = IO_URING_BGID;
        break;
    case IO_OP_SEND:
        io_uring_prep_send(sqe, op->fd, op->buf, op->len, MSG_NOSIGNAL);
        break;
    case IO_OP_POLL:
        io_uring_prep_poll_multishot(sqe, op->fd, op->events);
        break;
    case IO_OP_CONNECT:
        io_uring_prep_connect(sqe, op->fd, (const struct sockaddr *)op->buf,
                              (socklen_t)op->len);
        break;
    default:
        abort(); /* not a single-SQE kind: a bug in this file */
    }
    io_uring_sqe_set_data64(sqe, ud_make(op, UD_TAG_OP));
    return 0;
}

size_t io_uring_short_cap; /* loop_internal.h */

/*
 * Queue the next round of a write: the rest of a partly written iovec as a
 * plain WRITE (no iovec of ours needed), or the remaining whole iovecs as a
 * WRITEV straight from the caller's array.  Every round carries RWF_DSYNC,
 * so each is durable when it completes: a round that comes back short is
 * followed by rounds that are durable too (RWF_DSYNC covers only the range
 * its own write wrote).  Where RWF_DSYNC is refused, the round that reaches
 * the end is linked to FSYNC(DATASYNC), which covers every earlier round of
 * the file; a short write breaks the link (the FSYNC ends with -ECANCELED)
 * and the next round resubmits the remainder with its own FSYNC.
 */
static int write_round(struct io_loop *loop, struct io_op *op)
{
    struct uring_be *be = ur_of(loop);
    const struct iovec *iov = op->iov;
    size_t skip = op->done;
    uint64_t pos = op->off + op->done;
    struct io_uring_sqe *sqe;
    bool last;
    int i = 0;

    while (i < op->iovcnt && skip >= iov[i].iov_len) {
        skip -= iov[i].iov_len;
        i++;
    }
    op->res = 0;
    op->deadline_ns = 0;

    if (i == op->iovcnt) {
        /* Everything is written (or there was nothing): only sync. */
        sqe = sqe_get(be, 1);
        if (sqe == NULL)
            return -EAGAIN;
        io_uring_prep_fsync(sqe, op->fd, IORING_FSYNC_DATASYNC);
        io_uring_sqe_set_data64(sqe, ud_make(op, UD_TAG_FSYNC));
        op->events = W_PEND_FSYNC | W_HAS_FSYNC;
        return 0;
    }

    last = skip == 0 || i == op->iovcnt - 1;
    sqe = sqe_get(be, last ? 2 : 1);
    if (sqe == NULL)
        return -EAGAIN;
    struct io_uring_sqe *wsqe = sqe;
    if (skip > 0)
        io_uring_prep_write(sqe, op->fd, (const char *)iov[i].iov_base + skip,
                            (unsigned)(iov[i].iov_len - skip), pos);
    else
        io_uring_prep_writev(sqe, op->fd, &iov[i], (unsigned)(op->iovcnt - i), pos);
    io_uring_sqe_set_data64(sqe, ud_make(op, UD_TAG_OP));
    op->events = W_PEND_WRITE;
    if (!be->no_dsync) {
        /* One SQE instead of WRITEV+FSYNC: RWF_DSYNC makes the write itself
         * durable, as write+fdatasync would (pwritev2(2)).  Measured here
         * on ext4: cheaper than the linked fsync, and one CQE less. */
        sqe->rw_flags = RWF_DSYNC;
        op->events |= W_HAS_FSYNC | W_DSYNC;
    } else if (last) {
        sqe->flags |= IOSQE_IO_LINK;
        sqe = io_uring_get_sqe(&be->ring); /* room checked above */
        io_uring_prep_fsync(sqe, op->fd, IORING_FSYNC_DATASYNC);
        io_uring_sqe_set_data64(sqe, ud_make(op, UD_TAG_FSYNC));
        op->events |= W_PEND_FSYNC | W_HAS_FSYNC;
    }
    if (wsqe->rw_flags & RWF_DSYNC) /* for the trace seam: what the kernel got */
        op->events |= W_SQE_DSYNC;
    return 0;
}

/* ---- submit hooks ------------------------------------------------------- */

/* accept, recv, send, poll and connect are op_arm itself (one SQE each, see
 * the backend table at the end); write_sync is write_round. */

/* Wait for room in the socket: one-shot POLL_ADD, the op's only SQE. */
static int sendfile_wait(struct io_loop *loop, struct io_op *op)
{
    struct io_uring_sqe *sqe = sqe_get(ur_of(loop), 1);

    if (sqe == NULL)
        return -EAGAIN;
    io_uring_prep_poll_add(sqe, op->fd, POLLOUT);
    io_uring_sqe_set_data64(sqe, ud_make(op, UD_TAG_OP));
    return 0;
}

static void on_sendfile_cqe(struct io_loop *loop, struct io_op *op, int res)
{
    int rc;

    if (op->cancelled) {
        io_loop_finish(loop, op, -ECANCELED);
        return;
    }
    if (res < 0) {
        io_loop_finish(loop, op, res);
        return;
    }
    rc = io_sendfile_now(op);
    if (rc == 0)
        rc = sendfile_wait(loop, op); /* 0: waiting again */
    else if (rc > 0)
        rc = (int)op->done;
    if (rc != 0)
        io_loop_finish(loop, op, rc);
}

static int uring_sendfile(struct io_loop *loop, struct io_op *op)
{
    /* Try at once (as the epoll backend does): the result of a send that
     * fits is delivered on the next turn, never inside this call. */
    int rc = io_sendfile_now(op);

    if (rc != 0) {
        io_loop_queue_final(loop, op, rc < 0 ? rc : (int)op->done);
        return 0;
    }
    return sendfile_wait(loop, op);
}

static void cancel_sqe(struct io_loop *loop, struct io_op *op, unsigned tag)
{
    struct io_uring_sqe *sqe = sqe_get(ur_of(loop), 1);

    if (sqe == NULL) {
        /* Only before the first run with a full SQ: the op never started. */
        log_warnx("io_loop backend=uring event=cancel error=\"SQ full\"");
        return;
    }
    io_uring_prep_cancel64(sqe, ud_make(op, tag), 0);
    io_uring_sqe_set_data64(sqe, UD_CANCEL);
}

static void uring_cancel(struct io_loop *loop, struct io_op *op)
{
    /* Harmless if the target is between two SQEs: the cancel finds nothing
     * (-ENOENT, dropped) and the re-arm path sees op->cancelled. */
    if (IO_OP_KIND(op) == IO_OP_WRITE) {
        if (op->events & W_PEND_WRITE)
            cancel_sqe(loop, op, UD_TAG_OP);
        if (op->events & W_PEND_FSYNC)
            cancel_sqe(loop, op, UD_TAG_FSYNC);
        return;
    }
    cancel_sqe(loop, op, UD_TAG_OP);
}

/* ---- completions -------------------------------------------------------- */

/* A multishot op ended without an error: arm it again, or end it. */
static void rearm(struct io_loop *loop, struct io_op *op)
{
    int err;

    if (op->cancelled) {
        io_loop_finish(loop, op, -ECANCELED);
        return;
    }
    err = op_arm(loop, op);
    if (err < 0)
        io_loop_finish(loop, op, err);
}

static void recycle_buf(struct uring_be *be, unsigned bid)
{
    io_uring_buf_ring_add(be->br, be->bufs + (size_t)bid * IO_URING_BUF_SIZE,
                          IO_URING_BUF_SIZE, (unsigned short)bid,
                          io_uring_buf_ring_mask(IO_URING_BUF_COUNT), 0);
    io_uring_buf_ring_advance(be->br, 1);
}

static void on_recv_cqe(struct io_loop *loop, struct io_op *op, int res,
                        unsigned cflags)
{
    struct uring_be *be = ur_of(loop);

    if (cflags & IORING_CQE_F_BUFFER) {
        unsigned bid = cflags >> IORING_CQE_BUFFER_SHIFT;

        if (res > 0 && bid < IO_URING_BUF_COUNT) {
            op->cb(op, res, be->bufs + (size_t)bid * IO_URING_BUF_SIZE, IO_F_MORE);
            recycle_buf(be, bid);
            if (!(cflags & IORING_CQE_F_MORE))
                rearm(loop, op);
            return;
        }
        if (bid < IO_URING_BUF_COUNT)
            recycle_buf(be, bid);
    }
    if (res == -ENOBUFS && !(cflags & IORING_CQE_F_MORE)) {
        /* The ring ran dry within this batch; every buffer is back by the
         * time the next submit happens, and the data waits in the socket. */
        atomic_fetch_add_explicit(&ur_enobufs_rearms, 1, memory_order_relaxed);
        rearm(loop, op);
        return;
    }
    if (cflags & IORING_CQE_F_MORE)
        return; /* nothing to deliver (should not happen) */
    io_loop_finish(loop, op, res);
}

/* A multishot accept or poll completion. */
static void on_multishot_cqe(struct io_loop *loop, struct io_op *op, int res,
                             unsigned cflags)
{
    if (cflags & IORING_CQE_F_MORE) {
        op->cb(op, res, NULL, IO_F_MORE);
        return;
    }
    if (res >= 0) {
        op->cb(op, res, NULL, IO_F_MORE);
        rearm(loop, op);
        return;
    }
    io_loop_finish(loop, op, res);
}

static void on_send_cqe(struct io_loop *loop, struct io_op *op, int res)
{
    int err;

    if (res < 0) {
        io_loop_finish(loop, op, res);
        return;
    }
    if (res == 0 || (size_t)res > op->len) {
        io_loop_finish(loop, op, -EIO); /* no progress: do not spin */
        return;
    }
    op->buf += res;
    op->len -= (size_t)res;
    op->done += (size_t)res;
    if (op->len == 0) {
        io_loop_finish(loop, op, (int)op->done);
        return;
    }
    if (op->cancelled) {
        io_loop_finish(loop, op, -ECANCELED);
        return;
    }
    err = op_arm(loop, op); /* short send: the rest */
    if (err < 0)
        io_loop_finish(loop, op, err);
}

static void on_write_cqe(struct io_loop *loop, struct io_op *op, unsigned tag,
                         int res)
{
    int wres, fres, err;
    bool had_fsync;

    if (tag == UD_TAG_FSYNC) {
        op->events &= ~W_PEND_FSYNC;
        op->deadline_ns = (uint64_t)(int64_t)res;
        if (io_write_trace && res != -ECANCELED)
            io_write_trace(&(struct io_write_event){IO_WEV_SYNC, op->fd, 0, false, res});
    } else {
        op->events &= ~W_PEND_WRITE;
        if (io_uring_short_cap && res > 0 && (size_t)res > io_uring_short_cap)
            res = (int)io_uring_short_cap;
        op->res = res;
        if (io_write_trace)
            io_write_trace(&(struct io_write_event){IO_WEV_WRITE, op->fd, op->off + op->done,
                                                    (op->events & W_SQE_DSYNC) != 0, res});
    }
    if (op->events & (W_PEND_WRITE | W_PEND_FSYNC))
        return; /* the other half of the round is still out */

    wres = op->res;
    fres = (int)(int64_t)op->deadline_ns;
    had_fsync = op->events & W_HAS_FSYNC;
    if ((op->events & W_DSYNC) && wres == -EOPNOTSUPP && !ur_of(loop)->no_dsync) {
        /* Old kernel or file system without RWF_DSYNC: fall back for good. */
        ur_of(loop)->no_dsync = true;
        op->events = 0;
        err = write_round(loop, op);
        if (err < 0)
            io_loop_finish(loop, op, err);
        return;
    }
    op->events = 0;
    if (wres < 0) {
        io_loop_finish(loop, op, wres);
        return;
    }
    if (op->done < op->len && wres == 0) {
        /* A write that moves nothing would loop forever. */
        io_loop_finish(loop, op, -EIO);
        return;
    }
    op->done += (size_t)wres;
    if (op->done >= op->len && had_fsync) {
        io_loop_finish(loop, op, fres == 0 ? (int)op->len : fres);
        return;
    }
    if (op->cancelled) {
        io_loop_finish(loop, op, -ECANCELED);
        return;
    }
    err = write_round(loop, op); /* short write, or more iovecs to go */
    if (err < 0)
        io_loop_finish(loop, op, err);
}

static void ur_dispatch(struct io_loop *loop, uint64_t ud, int res, unsigned cflags)
{
    struct io_op *op = (struct io_op *)(uintptr_t)(ud & ~(uint64_t)UD_TAG_MASK);
    unsigned tag = (unsigned)(ud & UD_TAG_MASK);

    if (!op->busy)
        return; /* cannot happen by construction; never call a dead op */
    switch (IO_OP_KIND(op)) {
    case IO_OP_ACCEPT:
    case IO_OP_POLL:
        on_multishot_cqe(loop, op, res, cflags);
        break;
    case IO_OP_RECV:
        on_recv_cqe(loop, op, res, cflags);
        break;
    case IO_OP_SEND:
        on_send_cqe(loop, op, res);
        break;
    case IO_OP_WRITE:
        on_write_cqe(loop, op, tag, res);
        break;
    case IO_OP_CONNECT:
        io_loop_finish(loop, op, res);
        break;
    case IO_OP_SENDFILE:
        on_sendfile_cqe(loop, op, res);
        break;
    default:
        log_warnx("io_loop backend=uring event=stray_cqe kind=%d res=%d",
                  op->kind, res);
        break;
    }
}

static int enable_rings(struct uring_be *be)
{
    if (syscall(__NR_io_uring_register, be->ring.ring_fd,
                IORING_REGISTER_ENABLE_RINGS, NULL, 0) < 0)
        return -errno;
    be->need_enable = false;
    return 0;
}

static int uring_wait(struct io_loop *loop, int64_t timeout_ns)
{
    struct uring_be *be = ur_of(loop);
    struct io_uring_cqe *cqe;
    unsigned handled = 0;
    int ret;

    if (be->need_enable) {
        ret = enable_rings(be);
        if (ret < 0)
            return ret;
    }
    if (timeout_ns == 0) {
        ret = io_uring_submit_and_get_events(&be->ring);
    } else if (timeout_ns < 0) {
        ret = io_uring_submit_and_wait(&be->ring, 1);
    } else {
        struct __kernel_timespec ts = {
            .tv_sec = timeout_ns / 1000000000,
            .tv_nsec = timeout_ns % 1000000000,
        };

        ret = io_uring_submit_and_wait_timeout(&be->ring, &cqe, 1, &ts, NULL);
    }
    if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EAGAIN &&
        ret != -EBUSY)
        return ret;

    /* Bounded so that timers and queued results are not starved. */
    while (handled < be->cq_entries && io_uring_peek_cqe(&be->ring, &cqe) == 0) {
        uint64_t ud = cqe->user_data;
        int res = cqe->res;
        unsigned cflags = cqe->flags;

        io_uring_cqe_seen(&be->ring, cqe);
        handled++;
        if (ud == UD_CANCEL)
            continue;
        ur_dispatch(loop, ud, res, cflags);
    }
    return 0;
}

/* ---- life cycle --------------------------------------------------------- */

static int setup_buf_ring(struct uring_be *be)
{
    struct io_uring_buf_reg reg;
    int err;

    be->br_size = IO_URING_BUF_COUNT * sizeof(struct io_uring_buf);
    be->br = mmap(NULL, be->br_size, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (be->br == MAP_FAILED) {
        be->br = NULL;
        return -errno;
    }
    be->bufs_size = (size_t)IO_URING_BUF_COUNT * IO_URING_BUF_SIZE;
    be->bufs = mmap(NULL, be->bufs_size, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (be->bufs == MAP_FAILED) {
        be->bufs = NULL;
        return -errno;
    }
    io_uring_buf_ring_init(be->br);
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (uint64_t)(uintptr_t)be->br;
    reg.ring_entries = IO_URING_BUF_COUNT;
    reg.bgid = IO_URING_BGID;
    err = io_uring_register_buf_ring(&be->ring, &reg, 0);
    if (err < 0)
        return err;
    for (unsigned i = 0; i < IO_URING_BUF_COUNT; i++)
        io_uring_buf_ring_add(be->br, be->bufs + (size_t)i * IO_URING_BUF_SIZE,
                              IO_URING_BUF_SIZE, (unsigned short)i,
                              io_uring_buf_ring_mask(IO_URING_BUF_COUNT), (int)i);
    io_uring_buf_ring_advance(be->br, IO_URING_BUF_COUNT);
    return 0;
}

static void free_mem(struct uring_be *be)
{
    if (be->bufs != NULL)
        munmap(be->bufs, be->bufs_size);
    if (be->br != NULL)
        munmap(be->br, be->br_size);
}

static int uring_init(struct io_loop *loop, unsigned queue_depth)
{
    struct uring_be *be = calloc(1, sizeof(*be));
    struct io_uring_params p;
    struct io_uring_probe *probe;
    bool ring_up = false;
    int err;

    if (be == NULL)
        return -ENOMEM;

    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_R_DISABLED | IORING_SETUP_SINGLE_ISSUER |
              IORING_SETUP_DEFER_TASKRUN;
    err = io_uring_queue_init_params(queue_depth, &be->ring, &p);
    if (err == -EINVAL) {
        /* Kernels before 6.1 lack SINGLE_ISSUER/DEFER_TASKRUN. */
        memset(&p, 0, sizeof(p));
        p.flags = IORING_SETUP_R_DISABLED;
        err = io_uring_queue_init_params(queue_depth, &be->ring, &p);
    }
    if (err < 0)
        goto fail;
    ring_up = true;
    be->need_enable = true;
    be->cq_entries = p.cq_entries;

    /* The timeout wait must not eat an SQE, and results must not be lost. */
    if (!(p.features & IORING_FEAT_EXT_ARG) || !(p.features & IORING_FEAT_NODROP)) {
        err = -EOPNOTSUPP;
        goto fail;
    }
    /* Multishot recv came with SEND_ZC (6.0): use it as the witness. */
    probe = io_uring_get_probe();
    if (probe == NULL) {
        err = -EOPNOTSUPP;
        goto fail;
    }
    err = io_uring_opcode_supported(probe, IORING_OP_SEND_ZC) ? 0 : -EOPNOTSUPP;
    io_uring_free_probe(probe);
    if (err < 0)
        goto fail;

    err = setup_buf_ring(be);
    if (err < 0)
        goto fail;
    loop->be = be;
    return 0;

fail:
    if (ring_up)
        io_uring_queue_exit(&be->ring);
    free_mem(be);
    free(be);
    return err;
}

static void uring_fini(struct io_loop *loop)
{
    struct uring_be *be = ur_of(loop);

    if (be == NULL)
        return;
    /* Closing the ring cancels what is in flight; no callback runs. */
    io_uring_queue_exit(&be->ring);
    free_mem(be);
    free(be);
    loop->be = NULL;
}

const struct io_backend_ops io_uring_backend = {
    .name = "uring",
    .init = uring_init,
    .fini = uring_fini,
    .accept_start = op_arm,
    .recv_start = op_arm,
    .send = op_arm,
    .write_sync = write_round,
    .poll_start = op_arm,
    .cancel = uring_cancel,
    .wait = uring_wait,
    .connect = op_arm,
    .sendfile = uring_sendfile,
};
