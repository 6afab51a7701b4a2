// SPDX-License-Identifier: MIT
/*
 * ortoo-sendbench.c - how a stored message body should reach a plaintext
 * socket: the CPU cost per message of the three ways the delivery client
 * could send it, on either io backend.
 *
 *   sendfile  io_sendfile from the segment file (epoll: sendfile(2);
 *             io_uring: SPLICE file -> pipe -> socket)
 *   mmap      io_send straight from the mapped segment (one copy, in the
 *             kernel, into the socket)
 *   read      pread into a buffer, then io_send (the naive way)
 *
 * The sender runs one loop with --conns connections over loopback, each
 * sending --count messages of --size bytes back to back from a 64 MiB file
 * (page-cached: the spool's recent segments are).  A forked child drains
 * the connections, so the CPU reported (getrusage of the sender process:
 * its thread plus any io_uring workers) is the sending side's only.
 *
 *   ortoo-sendbench --backend uring|epoll --mode sendfile|mmap|read
 *                   [--size 102400] [--count 20000] [--conns 4]
 * Prints one line: mode, backend, messages, seconds, msgs/s, CPU us/msg.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "io/loop.h"

#define FILE_SIZE (64u << 20)
#define MAX_CONNS 64

enum mode { M_SENDFILE, M_MMAP, M_READ };

struct conn {
    struct io_op op;
    int fd;
    long left;          /* messages still to send */
    uint64_t off;       /* offset of the message being sent */
    char *buf;          /* M_READ: the bounce buffer */
};

static struct io_loop *g_loop;
static enum mode g_mode;
static size_t g_size = 102400;
static long g_count = 20000;
static int g_conns = 4;
static int g_file = -1;
static const char *g_map;
static int g_running;

static void next_msg(struct conn *c);

static void on_sent(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct conn *c = op->owner;

    if (res != (int)g_size) {
        fprintf(stderr, "sendbench: send result %d (%s)\n", res, res < 0 ? strerror(-res) : "short");
        exit(1);
    }
    next_msg(c);
}

static void next_msg(struct conn *c)
{
    int rc;

    if (c->left-- == 0) {
        shutdown(c->fd, SHUT_WR);
        if (--g_running == 0)
            io_loop_stop(g_loop);
        return;
    }
    c->off += g_size;
    if (c->off + g_size > FILE_SIZE)
        c->off = 0;
    switch (g_mode) {
    case M_SENDFILE:
        rc = io_sendfile(g_loop, &c->op, c->fd, g_file, c->off, g_size, on_sent);
        break;
    case M_MMAP:
        rc = io_send(g_loop, &c->op, c->fd, g_map + c->off, g_size, on_sent);
        break;
    default:
        if (pread(g_file, c->buf, g_size, (off_t)c->off) != (ssize_t)g_size) {
            perror("pread");
            exit(1);
        }
        rc = io_send(g_loop, &c->op, c->fd, c->buf, g_size, on_sent);
        break;
    }
    if (rc < 0) {
        fprintf(stderr, "sendbench: submit: %s\n", strerror(-rc));
        exit(1);
    }
}

/* The child: accept g_conns connections and read until every one is at EOF. */
static void drain(int lfd)
{
    struct pollfd pfd[MAX_CONNS];
    static char buf[1 << 18];
    int open = 0;

    for (int i = 0; i < g_conns; i++) {
        pfd[i].fd = accept(lfd, NULL, NULL);
        pfd[i].events = POLLIN;
        if (pfd[i].fd < 0)
            _exit(1);
        open++;
    }
    while (open > 0) {
        if (poll(pfd, (nfds_t)g_conns, -1) < 0 && errno != EINTR)
            _exit(1);
        for (int i = 0; i < g_conns; i++) {
            if (pfd[i].fd < 0 || !(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t n = recv(pfd[i].fd, buf, sizeof(buf), 0);
            if (n <= 0) {
                close(pfd[i].fd);
                pfd[i].fd = -1;
                open--;
            }
        }
    }
    _exit(0);
}

static double tv_s(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"backend", required_argument, NULL, 'b'}, {"mode", required_argument, NULL, 'm'},
        {"size", required_argument, NULL, 's'},    {"count", required_argument, NULL, 'n'},
        {"conns", required_argument, NULL, 'c'},   {NULL, 0, NULL, 0},
    };
    enum io_backend be = IO_BACKEND_URING;
    const char *mode_name = "sendfile";
    struct conn conns[MAX_CONNS];
    struct sockaddr_in addr = {.sin_family = AF_INET};
    socklen_t alen = sizeof(addr);
    struct rusage ru0, ru1;
    struct timespec t0, t1;
    char path[] = "/tmp/ortoo-sendbench-XXXXXX";
    int lfd, opt, status;
    pid_t child;

    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'b': be = strcmp(optarg, "epoll") == 0 ? IO_BACKEND_EPOLL : IO_BACKEND_URING; break;
        case 'm': mode_name = optarg; break;
        case 's': g_size = (size_t)atol(optarg); break;
        case 'n': g_count = atol(optarg); break;
        case 'c': g_conns = atoi(optarg); break;
        default:
            fprintf(stderr, "usage: ortoo-sendbench --backend uring|epoll --mode "
                            "sendfile|mmap|read [--size N] [--count N] [--conns N]\n");
            return 2;
        }
    }
    g_mode = strcmp(mode_name, "mmap") == 0 ? M_MMAP : strcmp(mode_name, "read") == 0 ? M_READ
                                                                                       : M_SENDFILE;
    if (g_conns < 1 || g_conns > MAX_CONNS || g_size == 0 || g_size > FILE_SIZE)
        return 2;
    signal(SIGPIPE, SIG_IGN);

    g_file = mkstemp(path);
    if (g_file < 0 || ftruncate(g_file, FILE_SIZE) < 0)
        return 1;
    unlink(path);
    g_map = mmap(NULL, FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, g_file, 0);
    if (g_map == MAP_FAILED)
        return 1;
    for (size_t i = 0; i < FILE_SIZE; i++)
        ((char *)g_map)[i] = (char)('a' + i % 26); /* in the page cache now */

    lfd = socket(AF_INET, SOCK_STREAM, 0);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(lfd, 128) < 0 ||
        getsockname(lfd, (struct sockaddr *)&addr, &alen) < 0)
        return 1;
    child = fork();
    if (child == 0)
        drain(lfd);

    g_loop = io_loop_new(be, 0);
    if (g_loop == NULL)
        return 1;
    for (int i = 0; i < g_conns; i++) {
        struct conn *c = &conns[i];
        int one = 1;

        io_op_init(&c->op, c);
        c->fd = socket(AF_INET, SOCK_STREAM, 0);
        if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
            return 1;
        fcntl(c->fd, F_SETFL, O_NONBLOCK);
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        c->left = g_count / g_conns;
        c->off = (uint64_t)i * (FILE_SIZE / (uint64_t)g_conns);
        c->buf = malloc(g_size);
    }
    getrusage(RUSAGE_SELF, &ru0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    g_running = g_conns;
    for (int i = 0; i < g_conns; i++)
        next_msg(&conns[i]);
    if (io_loop_run(g_loop) < 0)
        return 1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    getrusage(RUSAGE_SELF, &ru1);
    waitpid(child, &status, 0);

    long msgs = (g_count / g_conns) * g_conns;
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    double cpu = tv_s(ru1.ru_utime) - tv_s(ru0.ru_utime) + tv_s(ru1.ru_stime) - tv_s(ru0.ru_stime);
    printf("mode=%s backend=%s size=%zu msgs=%ld conns=%d secs=%.3f rate=%.0f cpu_us_per_msg=%.1f "
           "user=%.3f sys=%.3f\n",
           mode_name, io_backend_name(be), g_size, msgs, g_conns, secs, (double)msgs / secs,
           cpu * 1e6 / (double)msgs, tv_s(ru1.ru_utime) - tv_s(ru0.ru_utime),
           tv_s(ru1.ru_stime) - tv_s(ru0.ru_stime));
    for (int i = 0; i < g_conns; i++) {
        close(conns[i].fd);
        free(conns[i].buf);
    }
    io_loop_free(g_loop);
    return 0;
}
