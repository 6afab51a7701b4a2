/* SPDX-License-Identifier: MIT */
/*
 * test_loop.c - unit tests of the reactor (io/loop*.c), every test run once
 * per backend (io_uring, epoll), plus one for IO_BACKEND_AUTO.
 *
 * The loop sources are included so that the io_uring buffer ring can be made
 * tiny (8 buffers of 4 KiB): a stream of a few MiB then runs the ring dry and
 * exercises the -ENOBUFS re-arm path, which the test checks through the
 * backend's counter.  Only loopback sockets on port 0, pipes and temp files.
 *
 * Each test runs the loop under a watchdog timer: a test that hangs fails
 * with "timed out" instead of blocking the suite.
 */
#define IO_URING_BUF_COUNT 8
#define IO_URING_BUF_SIZE 4096
#include "io/loop.c"
#include "io/loop_epoll.c"
#include "io/loop_uring.c"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#define WATCHDOG_MS 10000

static enum io_backend be_uring = IO_BACKEND_URING;
static enum io_backend be_epoll = IO_BACKEND_EPOLL;

struct fx {
    struct io_loop *loop;
    enum io_backend backend;
    struct io_op watchdog;
    bool timed_out;
};

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof(*fx));

    assert_non_null(fx);
    fx->backend = *(enum io_backend *)*state;
    fx->loop = io_loop_new(fx->backend, 256);
    assert_non_null(fx->loop);
    assert_int_equal(io_loop_backend(fx->loop), fx->backend);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;

    io_loop_free(fx->loop);
    free(fx);
    return 0;
}

static void on_watchdog(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct fx *fx = op->owner;

    if (res == 0)
        fx->timed_out = true;
    io_loop_stop(fx->loop);
}

/* Run the loop until a callback stops it; fail if the watchdog fires. */
static void run_loop(struct fx *fx)
{
    io_op_init(&fx->watchdog, fx);
    assert_int_equal(io_timer_start(fx->loop, &fx->watchdog, WATCHDOG_MS, on_watchdog), 0);
    assert_int_equal(io_loop_run(fx->loop), 0);
    if (io_op_busy(&fx->watchdog)) {
        io_cancel(fx->loop, &fx->watchdog);
        assert_int_equal(io_loop_run(fx->loop), 0);
    }
    assert_false(io_op_busy(&fx->watchdog));
    assert_false(fx->timed_out);
}

/* A non-blocking listener on 127.0.0.1, port chosen by the kernel. */
static int make_listener(struct sockaddr_in *addr)
{
    socklen_t alen = sizeof(*addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    memset(addr, 0, sizeof(*addr));
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr->sin_port = 0;
    assert_int_equal(bind(fd, (struct sockaddr *)addr, sizeof(*addr)), 0);
    assert_int_equal(listen(fd, 64), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)addr, &alen), 0);
    return fd;
}

/* A blocking client connected to addr (completes through the backlog). */
static int connect_to(const struct sockaddr_in *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (const struct sockaddr *)addr, sizeof(*addr)), 0);
    return fd;
}

/* A connected loopback TCP pair: fds[0] non-blocking (the loop's side),
 * fds[1] blocking (the test's peer). */
static void make_pair(int fds[2])
{
    struct sockaddr_in addr;
    int lfd = make_listener(&addr);
    int one = 1;

    fds[1] = connect_to(&addr);
    do {
        fds[0] = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    } while (fds[0] < 0 && errno == EINTR);
    assert_true(fds[0] >= 0);
    setsockopt(fds[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    close(lfd);
}

static void read_all(int fd, char *buf, size_t len)
{
    size_t got = 0;

    while (got < len) {
        ssize_t n = recv(fd, buf + got, len - got, 0);

        if (n < 0 && errno == EINTR)
            continue;
        assert_true(n > 0);
        got += (size_t)n;
    }
}

/* ---- accept + recv + EOF + send: an echo server ------------------------- */

struct echo {
    struct fx *fx;
    struct io_op acc, rd, wr;
    int lfd, cfd;
    char buf[4096];
    size_t len;
    int accepts, acc_final, recv_calls, eof, sent;
    bool acc_done, sent_done;
};

static void echo_maybe_stop(struct echo *e)
{
    if (e->acc_done && e->sent_done)
        io_loop_stop(e->fx->loop);
}

static void echo_on_sent(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct echo *e = op->owner;

    e->sent = res;
    e->sent_done = true;
    assert_null(data);
    assert_int_equal(flags, 0);
    close(e->cfd);
    echo_maybe_stop(e);
}

static void echo_on_recv(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct echo *e = op->owner;

    e->recv_calls++;
    if (res > 0) {
        assert_true(flags & IO_F_MORE);
        assert_non_null(data);
        assert_true(e->len + (size_t)res <= sizeof(e->buf));
        memcpy(e->buf + e->len, data, (size_t)res);
        e->len += (size_t)res;
        return;
    }
    assert_int_equal(res, 0); /* EOF, final */
    assert_int_equal(flags, 0);
    assert_false(io_op_busy(op));
    e->eof++;
    assert_int_equal(io_send(e->fx->loop, &e->wr, e->cfd, e->buf, e->len, echo_on_sent), 0);
}

static void echo_on_accept(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct echo *e = op->owner;

    if (flags & IO_F_MORE) {
        assert_true(res >= 0);
        /* The loop asked for a non-blocking, close-on-exec fd. */
        assert_true(fcntl(res, F_GETFL) & O_NONBLOCK);
        assert_true(fcntl(res, F_GETFD) & FD_CLOEXEC);
        e->accepts++;
        e->cfd = res;
        assert_int_equal(io_recv_start(e->fx->loop, &e->rd, res, echo_on_recv), 0);
        io_cancel(e->fx->loop, op); /* one connection is enough */
        return;
    }
    e->acc_final = res;
    e->acc_done = true;
    echo_maybe_stop(e);
}

static void test_echo(void **state)
{
    struct fx *fx = *state;
    struct echo e = {.fx = fx, .cfd = -1};
    struct sockaddr_in addr;
    static const char msg[] = "EHLO client.example\r\nQUIT\r\n";
    char back[sizeof(msg)];
    int cli;

    io_op_init(&e.acc, &e);
    io_op_init(&e.rd, &e);
    io_op_init(&e.wr, &e);
    e.lfd = make_listener(&addr);
    assert_int_equal(io_accept_start(fx->loop, &e.acc, e.lfd, echo_on_accept), 0);
    assert_true(io_op_busy(&e.acc));
    assert_int_equal(io_accept_start(fx->loop, &e.acc, e.lfd, echo_on_accept), -EBUSY);

    cli = connect_to(&addr);
    assert_int_equal(send(cli, msg, sizeof(msg) - 1, 0), (ssize_t)sizeof(msg) - 1);
    assert_int_equal(shutdown(cli, SHUT_WR), 0);

    run_loop(fx);
    assert_int_equal(e.accepts, 1);
    assert_int_equal(e.acc_final, -ECANCELED);
    assert_int_equal(e.eof, 1);
    assert_int_equal(e.len, sizeof(msg) - 1);
    assert_int_equal(e.sent, (int)sizeof(msg) - 1);
    assert_memory_equal(e.buf, msg, sizeof(msg) - 1);

    read_all(cli, back, sizeof(msg) - 1);
    assert_memory_equal(back, msg, sizeof(msg) - 1);
    assert_int_equal(recv(cli, back, 1, 0), 0); /* server closed */
    close(cli);
    close(e.lfd);
}

/* ---- multishot accept: several connections, one armed op ---------------- */

struct multi_acc {
    struct fx *fx;
    struct io_op acc;
    int fds[8];
    int n, want;
    int final;
};

static void macc_on_accept(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct multi_acc *m = op->owner;

    if (flags & IO_F_MORE) {
        assert_true(res >= 0);
        assert_true(m->n < 8);
        m->fds[m->n++] = res;
        if (m->n == m->want)
            io_cancel(m->fx->loop, op);
        return;
    }
    m->final = res;
    io_loop_stop(m->fx->loop);
}

static void test_multishot_accept(void **state)
{
    struct fx *fx = *state;
    struct multi_acc m = {.fx = fx, .want = 5};
    struct sockaddr_in addr;
    int lfd = make_listener(&addr), cli[5];

    io_op_init(&m.acc, &m);
    assert_int_equal(io_accept_start(fx->loop, &m.acc, lfd, macc_on_accept), 0);
    for (int i = 0; i < 5; i++)
        cli[i] = connect_to(&addr);
    run_loop(fx);
    assert_int_equal(m.n, 5);
    assert_int_equal(m.final, -ECANCELED);
    for (int i = 0; i < 5; i++) {
        close(m.fds[i]);
        close(cli[i]);
    }
    close(lfd);
}

/* ---- many chunks in, a large send out (short sends, ring exhaustion) ---- */

#define BIG_IN (4u << 20)
#define BIG_OUT (8u << 20)

static unsigned char pattern(size_t i)
{
    return (unsigned char)(i * 7u + (i >> 13) + 3u);
}

struct bulk {
    struct fx *fx;
    struct io_op rd, wr;
    int fd;
    size_t got;
    int chunks, bad, eof;
    unsigned char *out;
    int sent;
};

struct peer {
    int fd;
    size_t in_len;  /* bytes the peer sends */
    size_t out_len; /* bytes the peer expects back */
    int bad;
    size_t got;
};

static void *peer_main(void *arg)
{
    struct peer *p = arg;
    unsigned char *buf = malloc(p->in_len);
    size_t off = 0;

    for (size_t i = 0; i < p->in_len; i++)
        buf[i] = pattern(i);
    while (off < p->in_len) {
        ssize_t n = send(p->fd, buf + off, p->in_len - off, MSG_NOSIGNAL);

        if (n <= 0) {
            p->bad++;
            break;
        }
        off += (size_t)n;
    }
    shutdown(p->fd, SHUT_WR);
    /* Read the reply slowly at first, so the loop's sender meets a full
     * socket buffer and short sends. */
    usleep(50 * 1000);
    for (;;) {
        ssize_t n = recv(p->fd, buf, p->in_len < 65536 ? p->in_len : 65536, 0);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] != pattern(p->got + (size_t)i))
                p->bad++;
        p->got += (size_t)n;
    }
    free(buf);
    return NULL;
}

static void bulk_on_sent(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct bulk *b = op->owner;

    b->sent = res;
    shutdown(b->fd, SHUT_WR);
    io_loop_stop(b->fx->loop);
}

static void bulk_on_recv(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct bulk *b = op->owner;

    if (res > 0) {
        if (!(flags & IO_F_MORE))
            b->bad++;
        for (int i = 0; i < res; i++)
            if ((unsigned char)data[i] != pattern(b->got + (size_t)i))
                b->bad++;
        b->got += (size_t)res;
        b->chunks++;
        return;
    }
    assert_int_equal(res, 0);
    b->eof++;
    assert_int_equal(io_send(b->fx->loop, &b->wr, b->fd, b->out, BIG_OUT, bulk_on_sent), 0);
}

static void test_bulk(void **state)
{
    struct fx *fx = *state;
    struct bulk b = {.fx = fx};
    struct peer p = {.in_len = BIG_IN, .out_len = BIG_OUT};
    unsigned long enobufs_before = atomic_load(&ur_enobufs_rearms);
    pthread_t thr;
    int fds[2];

    make_pair(fds);
    b.fd = fds[0];
    p.fd = fds[1];
    p.in_len = BIG_IN;
    b.out = malloc(BIG_OUT);
    assert_non_null(b.out);
    for (size_t i = 0; i < BIG_OUT; i++)
        b.out[i] = pattern(i);
    io_op_init(&b.rd, &b);
    io_op_init(&b.wr, &b);
    assert_int_equal(io_recv_start(fx->loop, &b.rd, b.fd, bulk_on_recv), 0);
    assert_int_equal(pthread_create(&thr, NULL, peer_main, &p), 0);
    run_loop(fx);
    pthread_join(thr, NULL);

    assert_int_equal(b.bad, 0);
    assert_int_equal(b.eof, 1);
    assert_int_equal(b.got, BIG_IN);
    assert_true(b.chunks > 1);
    assert_int_equal(b.sent, (int)BIG_OUT);
    assert_int_equal(p.bad, 0);
    assert_int_equal(p.got, BIG_OUT);
    if (fx->backend == IO_BACKEND_URING)
        assert_true(atomic_load(&ur_enobufs_rearms) > enobufs_before);
    close(fds[0]);
    close(fds[1]);
    free(b.out);
}

/* ---- a reset peer gives -ECONNRESET ------------------------------------- */

struct reset {
    struct fx *fx;
    struct io_op rd;
    int final, calls;
};

static void reset_on_recv(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct reset *r = op->owner;

    r->calls++;
    if (flags & IO_F_MORE)
        return;
    r->final = res;
    io_loop_stop(r->fx->loop);
}

static void test_peer_reset(void **state)
{
    struct fx *fx = *state;
    struct reset r = {.fx = fx};
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    int fds[2];

    make_pair(fds);
    io_op_init(&r.rd, &r);
    assert_int_equal(io_recv_start(fx->loop, &r.rd, fds[0], reset_on_recv), 0);
    /* Unread data plus a zero linger: close sends RST. */
    assert_int_equal(setsockopt(fds[1], SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
    close(fds[1]);
    run_loop(fx);
    assert_int_equal(r.final, -ECONNRESET);
    close(fds[0]);
}

/* ---- timers ------------------------------------------------------------- */

struct tmr {
    struct fx *fx;
    struct io_op t[5];
    int order[5];
    int res[5];
    uint64_t at[5];
    int n;
    uint64_t start;
};

static void tmr_on_fire(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct tmr *t = op->owner;
    int idx = (int)(op - t->t);

    assert_int_equal(flags, 0);
    assert_false(io_op_busy(op));
    t->order[t->n] = idx;
    t->res[idx] = res;
    t->at[idx] = io_loop_now(t->fx->loop) - t->start;
    if (++t->n == 5)
        io_loop_stop(t->fx->loop);
}

static void test_timers(void **state)
{
    struct fx *fx = *state;
    struct tmr t = {.fx = fx};
    static const uint64_t ms[5] = {30, 10, 20, 0, 40};

    t.start = io_loop_now(fx->loop);
    for (int i = 0; i < 5; i++) {
        io_op_init(&t.t[i], &t);
        assert_int_equal(io_timer_start(fx->loop, &t.t[i], ms[i], tmr_on_fire), 0);
    }
    io_cancel(fx->loop, &t.t[4]); /* the 40 ms one */
    io_cancel(fx->loop, &t.t[4]); /* twice is harmless */
    assert_true(io_op_busy(&t.t[4]));
    run_loop(fx);

    /* The cancelled timer and the 0 ms one report on the first turn, then
     * 10, 20, 30 in deadline order. */
    assert_true((t.order[0] == 4 && t.order[1] == 3) ||
                (t.order[0] == 3 && t.order[1] == 4));
    assert_int_equal(t.res[4], -ECANCELED);
    assert_int_equal(t.order[2], 1);
    assert_int_equal(t.order[3], 2);
    assert_int_equal(t.order[4], 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(t.res[i], 0);
        assert_true(t.at[i] >= ms[i] * 1000000u);
    }
    /* Cancelling an idle op is a no-op. */
    io_cancel(fx->loop, &t.t[0]);
    assert_false(io_op_busy(&t.t[0]));
}

/* ---- io_defer ----------------------------------------------------------- */

struct dfr {
    struct fx *fx;
    struct io_op a, b, c;
    bool in_submit;
    int sync_calls;
    int res_a, res_b, res_c;
    int seen;
    int again;
};

static void dfr_on(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct dfr *d = op->owner;

    if (d->in_submit)
        d->sync_calls++;
    if (op == &d->a) {
        d->res_a = res;
        /* Re-submitting the same op from its own callback is allowed. */
        if (d->again++ == 0) {
            d->in_submit = true;
            assert_int_equal(io_defer(d->fx->loop, op, dfr_on), 0);
            d->in_submit = false;
            return;
        }
    } else if (op == &d->b) {
        d->res_b = res;
    } else {
        d->res_c = res;
    }
    if (++d->seen == 3)
        io_loop_stop(d->fx->loop);
}

static void test_defer(void **state)
{
    struct fx *fx = *state;
    struct dfr d = {.fx = fx};

    io_op_init(&d.a, &d);
    io_op_init(&d.b, &d);
    io_op_init(&d.c, &d);
    d.in_submit = true;
    assert_int_equal(io_defer(fx->loop, &d.a, dfr_on), 0);
    assert_int_equal(io_defer(fx->loop, &d.b, dfr_on), 0);
    assert_int_equal(io_defer(fx->loop, &d.c, dfr_on), 0);
    assert_int_equal(io_defer(fx->loop, &d.c, dfr_on), -EBUSY);
    d.in_submit = false;
    io_cancel(fx->loop, &d.b);
    run_loop(fx);
    assert_int_equal(d.sync_calls, 0);
    assert_int_equal(d.again, 2);
    assert_int_equal(d.res_a, 0);
    assert_int_equal(d.res_b, -ECANCELED);
    assert_int_equal(d.res_c, 0);
}

/* ---- io_loop_post and io_loop_stop from other threads ------------------- */

#define POSTS 1000

struct post_ctx {
    struct fx *fx;
    pthread_t loop_thread;
    int count;
    int wrong_thread;
};

static void post_fn(void *arg)
{
    struct post_ctx *c = arg;

    if (!pthread_equal(pthread_self(), c->loop_thread))
        c->wrong_thread++;
    if (++c->count == POSTS)
        io_loop_stop(c->fx->loop);
}

static void *poster_main(void *arg)
{
    struct post_ctx *c = arg;

    for (int i = 0; i < POSTS; i++) {
        int err = io_loop_post(c->fx->loop, post_fn, c);

        if (err != 0)
            abort();
        if (i % 100 == 0)
            usleep(1000);
    }
    return NULL;
}

static void *stopper_main(void *arg)
{
    struct fx *fx = arg;

    usleep(30 * 1000);
    io_loop_stop(fx->loop);
    return NULL;
}

static void test_post(void **state)
{
    struct fx *fx = *state;
    struct post_ctx c = {.fx = fx, .loop_thread = pthread_self()};
    pthread_t thr;
    uint64_t t0;

    assert_int_equal(pthread_create(&thr, NULL, poster_main, &c), 0);
    run_loop(fx);
    pthread_join(thr, NULL);
    assert_int_equal(c.count, POSTS);
    assert_int_equal(c.wrong_thread, 0);

    /* A loop with nothing to do returns when another thread stops it. */
    t0 = mono_now_ns();
    assert_int_equal(pthread_create(&thr, NULL, stopper_main, fx), 0);
    assert_int_equal(io_loop_run(fx->loop), 0);
    pthread_join(thr, NULL);
    assert_true(mono_now_ns() - t0 >= 25u * 1000000u);
}

/* ---- io_write_sync ------------------------------------------------------ */

struct wsync {
    struct fx *fx;
    struct io_op w;
    int res[3];
    int n;
};

static void wsync_on_done(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct wsync *w = op->owner;

    assert_int_equal(flags, 0);
    w->res[w->n++] = res;
    io_loop_stop(w->fx->loop);
}

static void test_write_sync(void **state)
{
    struct fx *fx = *state;
    struct wsync w = {.fx = fx};
    char path[] = "/tmp/ortoo-test-loop-XXXXXX";
    int fd = mkstemp(path), rofd;
    size_t big = 3u << 20;
    char *blob = malloc(big), *check = malloc(big + 8);
    struct iovec small[3] = {
        {.iov_base = "abc", .iov_len = 3},
        {.iov_base = "", .iov_len = 0},
        {.iov_base = "defgh", .iov_len = 5},
    };
    struct iovec large[3];
    struct stat st;

    assert_true(fd >= 0);
    assert_non_null(blob);
    assert_non_null(check);
    for (size_t i = 0; i < big; i++)
        blob[i] = (char)pattern(i);
    large[0] = (struct iovec){.iov_base = blob, .iov_len = 1000};
    large[1] = (struct iovec){.iov_base = blob + 1000, .iov_len = big - 2000};
    large[2] = (struct iovec){.iov_base = blob + big - 1000, .iov_len = 1000};
    io_op_init(&w.w, &w);

    assert_int_equal(io_write_sync(fx->loop, &w.w, fd, small, 3, 0, wsync_on_done), 0);
    run_loop(fx);
    assert_int_equal(io_write_sync(fx->loop, &w.w, fd, large, 3, 8, wsync_on_done), 0);
    run_loop(fx);
    assert_int_equal(w.res[0], 8);
    assert_int_equal(w.res[1], (int)big);

    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(st.st_size, (off_t)(big + 8));
    assert_int_equal(pread(fd, check, big + 8, 0), (ssize_t)(big + 8));
    assert_memory_equal(check, "abcdefgh", 8);
    assert_memory_equal(check + 8, blob, big);

    /* A write the kernel refuses comes back as -errno. */
    rofd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(rofd >= 0);
    assert_int_equal(io_write_sync(fx->loop, &w.w, rofd, small, 3, 0, wsync_on_done), 0);
    run_loop(fx);
    assert_int_equal(w.res[2], -EBADF);
    assert_int_equal(io_write_sync(fx->loop, &w.w, fd, small, 0, 0, wsync_on_done), -EINVAL);

    close(rofd);
    close(fd);
    unlink(path);
    free(blob);
    free(check);
}

/*
 * A short write: with RLIMIT_FSIZE the first write stops at the limit (short),
 * the loop resubmits the remainder, which fails with EFBIG.  The file holds
 * exactly the bytes up to the limit.
 */
static void test_write_sync_short(void **state)
{
    struct fx *fx = *state;
    struct wsync w = {.fx = fx};
    char path[] = "/tmp/ortoo-test-loop-XXXXXX";
    int fd = mkstemp(path);
    size_t big = 1u << 20, limit = 300000;
    char *blob = malloc(big), *check = malloc(limit);
    struct iovec iov[2];
    struct rlimit old, lim;
    struct sigaction ign = {.sa_handler = SIG_IGN}, oldsa;
    struct stat st;

    assert_true(fd >= 0);
    assert_non_null(blob);
    assert_non_null(check);
    for (size_t i = 0; i < big; i++)
        blob[i] = (char)pattern(i);
    iov[0] = (struct iovec){.iov_base = blob, .iov_len = big / 2};
    iov[1] = (struct iovec){.iov_base = blob + big / 2, .iov_len = big / 2};
    io_op_init(&w.w, &w);

    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = limit;
    assert_int_equal(sigaction(SIGXFSZ, &ign, &oldsa), 0);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    assert_int_equal(io_write_sync(fx->loop, &w.w, fd, iov, 2, 0, wsync_on_done), 0);
    run_loop(fx);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    assert_int_equal(sigaction(SIGXFSZ, &oldsa, NULL), 0);

    assert_int_equal(w.n, 1);
    assert_int_equal(w.res[0], -EFBIG);
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(st.st_size, (off_t)limit);
    assert_int_equal(pread(fd, check, limit, 0), (ssize_t)limit);
    assert_memory_equal(check, blob, limit);
    close(fd);
    unlink(path);
    free(blob);
    free(check);
}

/*
 * Durability of every byte, short writes included: the trace seam records
 * each write and fdatasync as it completes; when the callback runs, every
 * byte of the range must have been written by a RWF_DSYNC write or by a
 * write followed by an fdatasync.  On io_uring the short-write cap makes
 * every round come back short (the path that once lost RWF_DSYNC).
 */
#define DEV_MAX 4096
static struct io_write_event dev_ev[DEV_MAX];
static int dev_n;
static pthread_mutex_t dev_mu = PTHREAD_MUTEX_INITIALIZER;

static void dev_trace(const struct io_write_event *ev)
{
    pthread_mutex_lock(&dev_mu);
    if (dev_n < DEV_MAX)
        dev_ev[dev_n++] = *ev;
    pthread_mutex_unlock(&dev_mu);
}

/* Is [off, off+len) of fd durable according to the first n events? */
static bool dev_durable(int n, int fd, uint64_t off, uint64_t len, int *rounds)
{
    uint8_t *ok = calloc(1, len ? len : 1);
    uint8_t *pending = calloc(1, len ? len : 1); /* written, not yet synced */
    bool all = true;

    *rounds = 0;
    for (int i = 0; i < n; i++) {
        const struct io_write_event *e = &dev_ev[i];
        if (e->fd != fd)
            continue;
        if (e->kind == IO_WEV_SYNC) {
            if (e->res == 0)
                for (uint64_t k = 0; k < len; k++)
                    ok[k] |= pending[k];
            continue;
        }
        if (e->res <= 0)
            continue;
        (*rounds)++;
        for (uint64_t b = e->off; b < e->off + (uint64_t)e->res; b++) {
            if (b < off || b >= off + len)
                continue;
            if (e->dsync)
                ok[b - off] = 1;
            else
                pending[b - off] = 1;
        }
    }
    for (uint64_t k = 0; k < len; k++)
        all &= ok[k] != 0;
    free(ok);
    free(pending);
    return all;
}

static int dev_at_cb;
static void dev_on_done(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct wsync *w = op->owner;

    pthread_mutex_lock(&dev_mu);
    dev_at_cb = dev_n;
    pthread_mutex_unlock(&dev_mu);
    w->res[w->n++] = res;
    io_loop_stop(w->fx->loop);
}

static void test_write_sync_durable(void **state)
{
    struct fx *fx = *state;
    struct wsync w = {.fx = fx};
    char path[] = "/tmp/ortoo-test-loop-XXXXXX";
    int fd = mkstemp(path), rounds;
    size_t big = 50000;
    char *blob = malloc(big), *check = malloc(big);
    struct iovec iov[3];

    assert_true(fd >= 0);
    for (size_t i = 0; i < big; i++)
        blob[i] = (char)pattern(i + 7);
    iov[0] = (struct iovec){blob, 10001};
    iov[1] = (struct iovec){blob + 10001, 3};
    iov[2] = (struct iovec){blob + 10004, big - 10004};
    io_op_init(&w.w, &w);
    dev_n = 0;
    io_write_trace = dev_trace;
    io_uring_short_cap = 4096;
    assert_int_equal(io_write_sync(fx->loop, &w.w, fd, iov, 3, 8, dev_on_done), 0);
    run_loop(fx);
    io_write_trace = NULL;
    io_uring_short_cap = 0;
    assert_int_equal(w.res[0], (int)big);
    if (!dev_durable(dev_at_cb, fd, 8, big, &rounds))
        fail_msg("a byte was reported durable before any sync covered it");
    if (io_loop_backend(fx->loop) == IO_BACKEND_URING)
        assert_true(rounds >= (int)(big / 4096)); /* short, every round */
    assert_int_equal(pread(fd, check, big, 8), (ssize_t)big);
    assert_memory_equal(check, blob, big);
    close(fd);
    unlink(path);
    free(blob);
    free(check);
}

/* ---- poll on a pipe ----------------------------------------------------- */

struct pollt {
    struct fx *fx;
    struct io_op p;
    int rfd, wfd;
    int ready, final;
    unsigned last_flags;
};

static void poll_on_ready(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct pollt *p = op->owner;
    char c;

    p->last_flags = flags;
    if (!(flags & IO_F_MORE)) {
        p->final = res;
        io_loop_stop(p->fx->loop);
        return;
    }
    assert_true(res & POLLIN);
    assert_int_equal(read(p->rfd, &c, 1), 1);
    assert_int_equal(c, 'a' + p->ready);
    if (++p->ready < 3)
        assert_int_equal(write(p->wfd, (char[]){(char)('a' + p->ready)}, 1), 1);
    else
        io_cancel(p->fx->loop, op);
}

static void test_poll_pipe(void **state)
{
    struct fx *fx = *state;
    struct pollt p = {.fx = fx};
    int pfd[2];

    assert_int_equal(pipe2(pfd, O_NONBLOCK | O_CLOEXEC), 0);
    p.rfd = pfd[0];
    p.wfd = pfd[1];
    io_op_init(&p.p, &p);
    assert_int_equal(io_poll_start(fx->loop, &p.p, p.rfd, POLLIN, poll_on_ready), 0);
    assert_int_equal(write(p.wfd, "a", 1), 1);
    run_loop(fx);
    assert_int_equal(p.ready, 3);
    assert_int_equal(p.final, -ECANCELED);
    assert_int_equal(p.last_flags, 0);
    close(pfd[0]);
    close(pfd[1]);
}

/* ---- cancel of an armed recv -------------------------------------------- */

struct cxl {
    struct fx *fx;
    struct io_op rd, t;
    int calls, final, got;
};

static void cxl_on_recv(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct cxl *c = op->owner;

    c->calls++;
    assert_int_equal(flags, 0);
    c->final = res;
    io_loop_stop(c->fx->loop);
}

static void cxl_on_recv_again(struct io_op *op, int res, const char *data,
                              unsigned flags)
{
    struct cxl *c = op->owner;

    if (flags & IO_F_MORE) {
        assert_true(res > 0);
        c->got += res;
        return;
    }
    c->final = res;
    io_loop_stop(c->fx->loop);
}

static void cxl_on_timer(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct cxl *c = op->owner;

    assert_int_equal(res, 0);
    io_cancel(c->fx->loop, &c->rd);
    /* The final callback never runs inside io_cancel. */
    assert_int_equal(c->calls, 0);
    assert_true(io_op_busy(&c->rd));
}

static void test_cancel_recv(void **state)
{
    struct fx *fx = *state;
    struct cxl c = {.fx = fx};
    int fds[2];

    make_pair(fds);
    io_op_init(&c.rd, &c);
    io_op_init(&c.t, &c);
    assert_int_equal(io_recv_start(fx->loop, &c.rd, fds[0], cxl_on_recv), 0);
    assert_int_equal(io_timer_start(fx->loop, &c.t, 20, cxl_on_timer), 0);
    run_loop(fx);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.final, -ECANCELED);
    assert_false(io_op_busy(&c.rd));

    /* The op can be used again, and the socket still works. */
    c.calls = 0;
    assert_int_equal(io_recv_start(fx->loop, &c.rd, fds[0], cxl_on_recv_again), 0);
    assert_int_equal(send(fds[1], "xy", 2, 0), 2);
    shutdown(fds[1], SHUT_WR);
    run_loop(fx);
    assert_int_equal(c.got, 2);
    assert_int_equal(c.final, 0);
    close(fds[0]);
    close(fds[1]);
}

/* ---- no callback runs inside a submit ----------------------------------- */

struct nosync {
    struct fx *fx;
    struct io_op d, t, s, s0, r, p, w, a, c, f;
    bool in_submit;
    int sync_calls;
    int finals;
    int fd, lfd;
};

#define NOSYNC_OPS 10

static void nosync_on(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct nosync *n = op->owner;

    if (n->in_submit)
        n->sync_calls++;
    if (flags & IO_F_MORE) {
        if (op == &n->a && res >= 0)
            close(res);
        io_cancel(n->fx->loop, op);
        return;
    }
    if (++n->finals == NOSYNC_OPS)
        io_loop_stop(n->fx->loop);
}

static void test_never_sync(void **state)
{
    struct fx *fx = *state;
    struct nosync n = {.fx = fx};
    struct sockaddr_in addr;
    char path[] = "/tmp/ortoo-test-loop-XXXXXX";
    struct iovec iov = {.iov_base = "data", .iov_len = 4};
    int fds[2], fds2[2], wfd, cli, cfd;
    char sink[64];

    make_pair(fds);
    make_pair(fds2); /* the poll below holds fds[0]'s writer slot on epoll */
    n.lfd = make_listener(&addr);
    cfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(cfd >= 0);
    cli = connect_to(&addr); /* pending in the backlog: accept is ready */
    wfd = mkstemp(path);
    assert_true(wfd >= 0);
    /* Data already waiting: the recv is ready at submit time. */
    assert_int_equal(send(fds[1], "ready", 5, 0), 5);

    io_op_init(&n.d, &n);
    io_op_init(&n.t, &n);
    io_op_init(&n.s, &n);
    io_op_init(&n.s0, &n);
    io_op_init(&n.r, &n);
    io_op_init(&n.p, &n);
    io_op_init(&n.w, &n);
    io_op_init(&n.a, &n);
    io_op_init(&n.c, &n);
    io_op_init(&n.f, &n);

    n.in_submit = true;
    assert_int_equal(io_defer(fx->loop, &n.d, nosync_on), 0);
    assert_int_equal(io_timer_start(fx->loop, &n.t, 0, nosync_on), 0);
    /* epoll sends this at once; the result still waits for the next turn. */
    assert_int_equal(io_send(fx->loop, &n.s, fds[0], "hello", 5, nosync_on), 0);
    assert_int_equal(io_send(fx->loop, &n.s0, fds[0], "", 0, nosync_on), 0);
    assert_int_equal(io_recv_start(fx->loop, &n.r, fds[0], nosync_on), 0);
    assert_int_equal(io_poll_start(fx->loop, &n.p, fds[0], POLLOUT, nosync_on), 0);
    assert_int_equal(io_write_sync(fx->loop, &n.w, wfd, &iov, 1, 0, nosync_on), 0);
    assert_int_equal(io_accept_start(fx->loop, &n.a, n.lfd, nosync_on), 0);
    /* Loopback connects and small sendfiles often finish at once. */
    assert_int_equal(io_connect(fx->loop, &n.c, cfd, (struct sockaddr *)&addr, sizeof(addr),
                                nosync_on), 0);
    assert_int_equal(pwrite(wfd, "file", 4, 64), 4);
    assert_int_equal(io_sendfile(fx->loop, &n.f, fds2[0], wfd, 64, 4, nosync_on), 0);
    /* Give the kernel and the write helper time to finish everything. */
    usleep(20 * 1000);
    n.in_submit = false;

    assert_int_equal(n.finals, 0);
    run_loop(fx);
    assert_int_equal(n.sync_calls, 0);
    assert_int_equal(n.finals, NOSYNC_OPS);
    read_all(fds[1], sink, 5);
    assert_memory_equal(sink, "hello", 5);
    read_all(fds2[1], sink, 4);
    assert_memory_equal(sink, "file", 4);

    close(fds[0]);
    close(fds[1]);
    close(fds2[0]);
    close(fds2[1]);
    close(cfd);
    close(cli);
    close(n.lfd);
    close(wfd);
    unlink(path);
}

/* ---- the idle hook ------------------------------------------------------ */

struct idle_ctx {
    struct fx *fx;
    struct io_op d;
    int idles, defers;
};

static void idle_fn(void *arg)
{
    struct idle_ctx *c = arg;

    c->idles++;
}

static void idle_on_defer(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct idle_ctx *c = op->owner;

    /* One idle call per turn: exactly one since the previous defer ran. */
    if (c->idles != c->defers)
        fail_msg("idle=%d defers=%d", c->idles, c->defers);
    if (++c->defers < 10)
        io_defer(c->fx->loop, op, idle_on_defer);
    else
        io_loop_stop(c->fx->loop);
}

static void test_idle(void **state)
{
    struct fx *fx = *state;
    struct idle_ctx c = {.fx = fx};

    io_op_init(&c.d, &c);
    io_loop_set_idle(fx->loop, idle_fn, &c);
    assert_int_equal(io_defer(fx->loop, &c.d, idle_on_defer), 0);
    /* The first turn runs the defer before the idle hook. */
    c.idles = 0;
    run_loop(fx);
    io_loop_set_idle(fx->loop, NULL, NULL);
    assert_int_equal(c.defers, 10);
}


/* ---- io_connect ---------------------------------------------------------- */

struct conn_t {
    struct fx *fx;
    struct io_op c, t;
    int res;
    int calls;
    bool cancel_on_timer;
};

static void conn_on_done(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct conn_t *c = op->owner;

    assert_int_equal(flags, 0);
    assert_false(io_op_busy(op));
    c->calls++;
    c->res = res;
    if (io_op_busy(&c->t))
        io_cancel(c->fx->loop, &c->t);
    else
        io_loop_stop(c->fx->loop);
}

static void conn_on_timer(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct conn_t *c = op->owner;

    if (res == 0 && c->cancel_on_timer) {
        io_cancel(c->fx->loop, &c->c);
        assert_int_equal(c->calls, 0); /* never inside io_cancel */
        return;
    }
    if (!io_op_busy(&c->c))
        io_loop_stop(c->fx->loop);
}

static int nb_socket(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    return fd;
}

static void test_connect(void **state)
{
    struct fx *fx = *state;
    struct conn_t c = {.fx = fx, .res = 1};
    struct sockaddr_in addr, dead;
    int lfd = make_listener(&addr), fd, afd;
    socklen_t alen = sizeof(dead);
    char b;

    /* Established: the peer accepts and sees our byte. */
    io_op_init(&c.c, &c);
    io_op_init(&c.t, &c);
    fd = nb_socket();
    assert_int_equal(io_connect(fx->loop, &c.c, fd, (struct sockaddr *)&addr, sizeof(addr),
                                conn_on_done), 0);
    assert_int_equal(io_connect(fx->loop, &c.c, fd, (struct sockaddr *)&addr, sizeof(addr),
                                conn_on_done), -EBUSY);
    assert_int_equal(c.calls, 0);
    run_loop(fx);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.res, 0);
    assert_int_equal(send(fd, "z", 1, MSG_NOSIGNAL), 1);
    do {
        afd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    } while (afd < 0 && errno == EINTR);
    assert_true(afd >= 0);
    assert_int_equal(recv(afd, &b, 1, 0), 1);
    assert_int_equal(b, 'z');
    close(afd);
    close(fd);

    /* Refused: a port nobody listens on any more. */
    {
        int tmp = make_listener(&dead);
        assert_int_equal(getsockname(tmp, (struct sockaddr *)&dead, &alen), 0);
        close(tmp);
    }
    fd = nb_socket();
    c.calls = 0;
    assert_int_equal(io_connect(fx->loop, &c.c, fd, (struct sockaddr *)&dead, sizeof(dead),
                                conn_on_done), 0);
    run_loop(fx);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.res, -ECONNREFUSED);
    close(fd);

    /* Bad arguments are refused at submit. */
    assert_int_equal(io_connect(fx->loop, &c.c, -1, (struct sockaddr *)&addr, sizeof(addr),
                                conn_on_done), -EBADF);
    assert_int_equal(io_connect(fx->loop, &c.c, 0, NULL, 0, conn_on_done), -EINVAL);
    close(lfd);
}

/*
 * A connect that cannot complete (the listener's accept queue is full, so
 * the kernel drops our SYN and retries) ends with -ECANCELED when the
 * owner's timer cancels it.
 */
static void test_connect_cancel(void **state)
{
    struct fx *fx = *state;
    struct conn_t c = {.fx = fx, .res = 1, .cancel_on_timer = true};
    struct sockaddr_in addr;
    socklen_t alen = sizeof(addr);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), fill[4], fd;

    assert_true(lfd >= 0);
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(lfd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    assert_int_equal(listen(lfd, 0), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&addr, &alen), 0);
    /* Fill the accept queue (backlog 0 still takes one or two). */
    for (int i = 0; i < 4; i++) {
        fill[i] = nb_socket();
        (void)connect(fill[i], (struct sockaddr *)&addr, sizeof(addr));
    }
    usleep(20 * 1000);

    io_op_init(&c.c, &c);
    io_op_init(&c.t, &c);
    fd = nb_socket();
    assert_int_equal(io_connect(fx->loop, &c.c, fd, (struct sockaddr *)&addr, sizeof(addr),
                                conn_on_done), 0);
    assert_int_equal(io_timer_start(fx->loop, &c.t, 100, conn_on_timer), 0);
    run_loop(fx);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.res, -ECANCELED);
    assert_false(io_op_busy(&c.c));
    close(fd);
    for (int i = 0; i < 4; i++)
        close(fill[i]);
    close(lfd);
}

/* ---- io_sendfile --------------------------------------------------------- */

struct sf_t {
    struct fx *fx;
    struct io_op s, t;
    int res, calls;
    bool cancel_on_timer;
};

static void sf_on_done(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct sf_t *f = op->owner;

    assert_int_equal(flags, 0);
    assert_null(data);
    f->calls++;
    f->res = res;
    if (io_op_busy(&f->t))
        io_cancel(f->fx->loop, &f->t);
    else
        io_loop_stop(f->fx->loop);
}

static void sf_on_timer(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct sf_t *f = op->owner;

    if (res == 0 && f->cancel_on_timer) {
        io_cancel(f->fx->loop, &f->s);
        return;
    }
    if (!io_op_busy(&f->s))
        io_loop_stop(f->fx->loop);
}

/* A temp file holding pattern(0..len). */
static int pattern_file(size_t len)
{
    char path[] = "/tmp/ortoo-test-loop-XXXXXX";
    int fd = mkstemp(path);
    unsigned char *b = malloc(len);

    assert_true(fd >= 0);
    assert_non_null(b);
    unlink(path);
    for (size_t i = 0; i < len; i++)
        b[i] = pattern(i);
    assert_int_equal(pwrite(fd, b, len, 0), (ssize_t)len);
    free(b);
    return fd;
}

struct sf_peer {
    int fd;
    size_t want, got;
    size_t first; /* pattern index of the first byte expected */
    int bad;
};

/* Read until EOF, slowly at first (so the sender meets a full socket). */
static void *sf_peer_main(void *arg)
{
    struct sf_peer *p = arg;
    unsigned char buf[65536];

    usleep(50 * 1000);
    for (;;) {
        ssize_t n = recv(p->fd, buf, sizeof(buf), 0);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] != pattern(p->first + p->got + (size_t)i))
                p->bad++;
        p->got += (size_t)n;
    }
    return NULL;
}

static void test_sendfile(void **state)
{
    struct fx *fx = *state;
    struct sf_t f = {.fx = fx};
    size_t flen = 5u << 20, off = 12345, len = (3u << 20) + 777;
    int file = pattern_file(flen), fds[2];
    struct sf_peer p = {.want = len, .first = off};
    pthread_t thr;

    make_pair(fds);
    p.fd = fds[1];
    /* Small socket buffers: the sender meets a full socket many times
     * (short sendfiles, then a wait for POLLOUT). */
    {
        int small = 16384;
        assert_int_equal(setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
        assert_int_equal(setsockopt(fds[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
    }
    io_op_init(&f.s, &f);
    io_op_init(&f.t, &f);
    assert_int_equal(pthread_create(&thr, NULL, sf_peer_main, &p), 0);
    assert_int_equal(io_sendfile(fx->loop, &f.s, fds[0], file, off, len, sf_on_done), 0);
    assert_int_equal(io_sendfile(fx->loop, &f.s, fds[0], file, off, len, sf_on_done), -EBUSY);
    assert_int_equal(f.calls, 0);
    run_loop(fx);
    assert_int_equal(f.calls, 1);
    assert_int_equal(f.res, (int)len);
    /* The file's own offset was not used or moved. */
    assert_int_equal(lseek(file, 0, SEEK_CUR), 0);

    /* A second one on the same socket: the stream goes on where the first
     * stopped. */
    f.calls = 0;
    assert_int_equal(io_sendfile(fx->loop, &f.s, fds[0], file, off + len, 1000, sf_on_done), 0);
    run_loop(fx);
    assert_int_equal(f.res, 1000);
    shutdown(fds[0], SHUT_WR);
    pthread_join(thr, NULL);
    assert_int_equal(p.bad, 0);
    assert_int_equal(p.got, len + 1000);

    /* Zero bytes: done on the next turn.  Past the end of the file: -EIO. */
    close(fds[0]);
    close(fds[1]);
    make_pair(fds);
    f.calls = 0;
    assert_int_equal(io_sendfile(fx->loop, &f.s, fds[0], file, 0, 0, sf_on_done), 0);
    run_loop(fx);
    assert_int_equal(f.res, 0);
    assert_int_equal(io_sendfile(fx->loop, &f.s, fds[0], file, flen - 100, 200, sf_on_done), 0);
    run_loop(fx);
    assert_int_equal(f.res, -EIO);
    assert_int_equal(io_sendfile(fx->loop, &f.s, fds[0], -1, 0, 10, sf_on_done), -EBADF);
    close(fds[0]);
    close(fds[1]);
    close(file);
}

/* A peer that never reads: the sendfile stalls and the owner cancels it. */
static void test_sendfile_cancel(void **state)
{
    struct fx *fx = *state;
    struct sf_t f = {.fx = fx, .cancel_on_timer = true};
    size_t len = 16u << 20;
    int file = pattern_file(len), fds[2];

    make_pair(fds);
    io_op_init(&f.s, &f);
    io_op_init(&f.t, &f);
    assert_int_equal(io_sendfile(fx->loop, &f.s, fds[0], file, 0, len, sf_on_done), 0);
    assert_int_equal(io_timer_start(fx->loop, &f.t, 100, sf_on_timer), 0);
    run_loop(fx);
    assert_int_equal(f.calls, 1);
    assert_int_equal(f.res, -ECANCELED);
    assert_false(io_op_busy(&f.s));
    close(fds[0]);
    close(fds[1]);
    close(file);
}

/* ---- AUTO --------------------------------------------------------------- */

static void test_auto(void **state)
{
    struct io_loop *loop = io_loop_new(IO_BACKEND_AUTO, 0);
    enum io_backend b;

    assert_non_null(loop);
    b = io_loop_backend(loop);
    assert_true(b == IO_BACKEND_URING || b == IO_BACKEND_EPOLL);
    assert_string_equal(io_backend_name(IO_BACKEND_URING), "uring");
    assert_string_equal(io_backend_name(IO_BACKEND_EPOLL), "epoll");
    io_loop_free(loop);
    assert_null(io_loop_new((enum io_backend)42, 0));
    assert_int_equal(errno, EINVAL);
}

/* Each test once per backend, named "test_x/uring" and "test_x/epoll". */
#define BOTH(fn)                                           \
    {#fn "/uring", fn, setup, teardown, &be_uring},        \
        {#fn "/epoll", fn, setup, teardown, &be_epoll}

int main(void)
{
    const struct CMUnitTest tests[] = {
        BOTH(test_echo),
        BOTH(test_multishot_accept),
        BOTH(test_bulk),
        BOTH(test_peer_reset),
        BOTH(test_timers),
        BOTH(test_defer),
        BOTH(test_post),
        BOTH(test_write_sync),
        BOTH(test_write_sync_short),
        BOTH(test_write_sync_durable),
        BOTH(test_poll_pipe),
        BOTH(test_cancel_recv),
        BOTH(test_never_sync),
        BOTH(test_idle),
        BOTH(test_connect),
        BOTH(test_connect_cancel),
        BOTH(test_sendfile),
        BOTH(test_sendfile_cancel),
        cmocka_unit_test(test_auto),
    };

    log_init("test_loop", LOG_LVL_DEBUG);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
