// SPDX-License-Identifier: MIT
/*
 * ortoo-relaybench.c - the delivery client's own throughput: messages per
 * second and CPU per message of delivery/smtp_client.c sending to a sink
 * (ortoo-sink, smtp-sink) over loopback, on one reactor loop.
 *
 *   ortoo-relaybench --port N [--host 127.0.0.1] [--tls none|may]
 *                    [--size 2048] [--count 20000] [--conns 4] [--rcpts 1]
 *                    [--backend uring|epoll] [--no-file] [--no-chunking]
 *
 * One message of --size bytes (a stored wire form, kept in a temp file and
 * mapped, as a spool segment is) is delivered --count times over --conns
 * connections that each carry messages back to back (one connection per
 * slot, reconnecting only if the sink closes it).  The CPU reported is this
 * process's (getrusage: user + system), so the sink's does not count; run
 * the sink pinned elsewhere when the machine allows.  One line out:
 * tls, size, messages, seconds, msgs/s, CPU us/msg, connections opened,
 * TLS resumed share.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "delivery/smtp_client.h"
#include "io/log.h"
#include "io/loop.h"
#include "io/tls.h"

#define MAX_CONNS 256

struct slot {
    struct smtp_client *c;
    struct smtp_msg m;
    struct smtp_rcpt rcpts[16];
};

static struct io_loop *g_loop;
static struct tls_client *g_tls;
static struct sockaddr_in g_addr;
static enum smtp_tls_policy g_policy = SMTP_TLS_NONE;
static unsigned g_ext_ignore;
static long g_count = 20000, g_sent, g_ok, g_failed;
static int g_conns = 4, g_rcpts = 1, g_open, g_connects, g_resumed, g_tls_conns;
static const char *g_data;
static size_t g_len;
static int g_fd = -1;
static struct slot g_slots[MAX_CONNS];

static void slot_connect(struct slot *s);

static const char PREFIX[] = "Received: from bench.test by ortoo-relaybench; Mon, 1 Dec 2026\r\n";

/* The next message on an idle connection, or QUIT when all are out. */
static void slot_next(struct slot *s)
{
    if (g_sent >= g_count) {
        smtp_client_quit(s->c);
        return;
    }
    g_sent++;
    s->m.sender = "bench@client.test";
    s->m.rcpts = s->rcpts;
    s->m.nrcpts = (size_t)g_rcpts;
    s->m.prefix = PREFIX;
    s->m.prefix_len = sizeof PREFIX - 1;
    s->m.data = g_data;
    s->m.len = g_len;
    s->m.fd = g_fd;
    s->m.off = 0;
    for (int i = 0; i < g_rcpts; i++)
        s->rcpts[i].addr = "user@sink.test";
    if (smtp_client_send(s->c, &s->m) < 0) {
        fprintf(stderr, "relaybench: send refused\n");
        exit(1);
    }
}

static void on_ready(struct smtp_client *c, void *arg)
{
    const struct smtp_client_info *i = smtp_client_info(c);

    if (i->tls) {
        g_tls_conns++;
        g_resumed += i->tls_resumed;
    }
    slot_next(arg);
}

static void on_done(struct smtp_client *c, struct smtp_msg *m, void *arg)
{
    if (m->result.outcome == SMTP_OUT_OK)
        g_ok++;
    else
        g_failed++;
    if (smtp_client_idle(c))
        slot_next(arg);
}

static void on_closed(struct smtp_client *c, const struct smtp_result *why, void *arg)
{
    struct slot *s = arg;

    s->c = NULL;
    if (why->outcome != SMTP_OUT_OK)
        fprintf(stderr, "relaybench: connection ended at %s: %s\n", smtp_stage_name(why->stage),
                why->text);
    if (g_sent < g_count && why->outcome == SMTP_OUT_OK) {
        slot_connect(s); /* the sink closed it: another */
        return;
    }
    if (--g_open == 0)
        io_loop_stop(g_loop);
}

static const struct smtp_client_ops ops = {on_ready, on_done, on_closed};

static void slot_connect(struct slot *s)
{
    struct smtp_client_params p = {
        .addr = (struct sockaddr *)&g_addr,
        .addr_len = sizeof g_addr,
        .mx_host = "sink.test",
        .helo_name = "bench.test",
        .tls = g_policy,
        .tls_ctx = g_tls,
        .ext_ignore = g_ext_ignore,
    };

    s->c = smtp_client_connect(g_loop, &p, &ops, s);
    if (s->c == NULL) {
        perror("relaybench: connect");
        exit(1);
    }
    g_connects++;
}

static void on_tick(struct io_op *op, int res, const char *data, unsigned flags)
{
    io_loop_stop(g_loop);
}

static double tv_s(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"host", 1, 0, 'h'},  {"port", 1, 0, 'p'},    {"tls", 1, 0, 't'},
        {"size", 1, 0, 's'},  {"count", 1, 0, 'n'},   {"conns", 1, 0, 'c'},
        {"rcpts", 1, 0, 'r'}, {"backend", 1, 0, 'b'}, {"no-file", 0, 0, 'F'},
        {"no-chunking", 0, 0, 'C'}, {0, 0, 0, 0},
    };
    enum io_backend be = IO_BACKEND_URING;
    const char *host = "127.0.0.1";
    size_t size = 2048;
    bool use_file = true;
    int port = 0, ch;
    char path[] = "/tmp/ortoo-relaybench-XXXXXX", err[256];
    struct rusage ru0, ru1;
    struct timespec t0, t1;
    char *msg;

    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'h': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 't': g_policy = strcmp(optarg, "may") == 0 ? SMTP_TLS_MAY : SMTP_TLS_NONE; break;
        case 's': size = (size_t)atol(optarg); break;
        case 'n': g_count = atol(optarg); break;
        case 'c': g_conns = atoi(optarg); break;
        case 'r': g_rcpts = atoi(optarg); break;
        case 'b': be = strcmp(optarg, "epoll") == 0 ? IO_BACKEND_EPOLL : IO_BACKEND_URING; break;
        case 'F': use_file = false; break;
        case 'C': g_ext_ignore |= SMTP_EXT_CHUNKING; break;
        default:
            fprintf(stderr, "usage: ortoo-relaybench --port N [--host A] [--tls none|may] "
                            "[--size B] [--count N] [--conns N] [--rcpts N] "
                            "[--backend uring|epoll] [--no-file] [--no-chunking]\n");
            return 2;
        }
    }
    if (port <= 0 || g_conns < 1 || g_conns > MAX_CONNS || g_rcpts < 1 || g_rcpts > 16 ||
        size < 100)
        return 2;
    signal(SIGPIPE, SIG_IGN);
    log_init("ortoo-relaybench", getenv("ORTOO_DEBUG") ? LOG_LVL_DEBUG : LOG_LVL_WARN);
    memset(&g_addr, 0, sizeof g_addr);
    g_addr.sin_family = AF_INET;
    g_addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &g_addr.sin_addr) != 1)
        return 2;

    /* A plausible message in stored wire form: headers, 76-column lines,
     * some of them dot-stuffed. */
    msg = malloc(size);
    {
        size_t n = (size_t)snprintf(msg, size, "From: <bench@client.test>\r\nTo: <user@sink.test>\r\n"
                                                "Subject: relay benchmark\r\n\r\n");
        for (unsigned line = 0; n < size; line++) {
            size_t left = size - n, ll = left < 78 ? left : 78;
            for (size_t i = 0; i < ll; i++)
                msg[n + i] = (char)('a' + (line + i) % 26);
            if (line % 40 == 7 && ll > 2)
                msg[n] = '.', msg[n + 1] = '.';
            if (ll >= 2)
                msg[n + ll - 2] = '\r', msg[n + ll - 1] = '\n';
            n += ll;
        }
        if (size >= 2)
            msg[size - 2] = '\r', msg[size - 1] = '\n';
    }
    g_fd = mkstemp(path);
    if (g_fd < 0 || write(g_fd, msg, size) != (ssize_t)size)
        return 1;
    unlink(path);
    g_data = mmap(NULL, size, PROT_READ, MAP_SHARED, g_fd, 0);
    if (g_data == MAP_FAILED)
        return 1;
    g_len = size;
    free(msg);
    if (!use_file) {
        close(g_fd);
        g_fd = -1;
    }

    g_loop = io_loop_new(be, 0);
    if (g_loop == NULL)
        return 1;
    {
        struct tls_client_opts o = {0};
        g_tls = tls_client_new_opts(&o, err, sizeof err);
        if (g_tls == NULL) {
            fprintf(stderr, "relaybench: %s\n", err);
            return 1;
        }
    }
    getrusage(RUSAGE_SELF, &ru0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < g_conns; i++) {
        g_open++;
        slot_connect(&g_slots[i]);
    }
    if (io_loop_run(g_loop) < 0)
        return 1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    getrusage(RUSAGE_SELF, &ru1);
    /* Let the clients free themselves before the loop goes. */
    for (int i = 0; i < 100 && smtp_client_count() > 0; i++) {
        struct io_op t;
        io_op_init(&t, NULL);
        if (io_timer_start(g_loop, &t, 5, on_tick) < 0 || io_loop_run(g_loop) < 0)
            break;
    }

    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    double cpu = tv_s(ru1.ru_utime) - tv_s(ru0.ru_utime) + tv_s(ru1.ru_stime) - tv_s(ru0.ru_stime);
    io_loop_free(g_loop);
    tls_client_free(g_tls);
    printf("backend=%s tls=%s size=%zu conns=%d rcpts=%d msgs=%ld ok=%ld failed=%ld secs=%.3f "
           "rate=%.0f cpu_us_per_msg=%.1f user=%.3f sys=%.3f connects=%d tls_resumed=%d/%d\n",
           io_backend_name(be), g_policy == SMTP_TLS_MAY ? "may" : "none", size, g_conns, g_rcpts,
           g_sent, g_ok, g_failed, secs, (double)g_ok / secs, cpu * 1e6 / (double)(g_ok ? g_ok : 1),
           tv_s(ru1.ru_utime) - tv_s(ru0.ru_utime), tv_s(ru1.ru_stime) - tv_s(ru0.ru_stime),
           g_connects, g_resumed, g_tls_conns);
    return g_failed == 0 ? 0 : 1;
}
