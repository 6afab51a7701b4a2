/* SPDX-License-Identifier: MIT */
/*
 * test_pipe.c - unit tests for delivery/pipe.c with real /bin/sh commands:
 * the exact stdin bytes (LF line ends, dot-unstuffed, the added fields,
 * from memory and from a file, every CRLF split across the stream's
 * chunks), the environment, cwd and descriptors the command gets, the
 * verdict for exit 0 / 75 / 1 / 67, death by a signal, a timeout that
 * kills the whole process group, output kept to PIPE_OUTPUT_MAX and the
 * rest drained, a command that reads nothing (no SIGPIPE for us), a
 * command that leaves a process behind holding its output, a huge
 * message, and the pool posting results to a real io_loop.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "delivery/pipe.h"
#include "io/loop.h"

static char dir[64];
static char path_out[128];

static const char stored[] = "From: a@example.org\r\n"
                             "Subject: pipe\r\n"
                             "\r\n"
                             "..leading dot\r\n"
                             "bare\rCR\r\n"
                             "last\r\n";
static const char want_body[] = "From: a@example.org\n"
                                "Subject: pipe\n"
                                "\n"
                                ".leading dot\n"
                                "bare\rCR\n"
                                "last\n";

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(p);
}

static int setup(void **state)
{
    strcpy(dir, "/tmp/ortoo-pipe-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path_out, sizeof(path_out), "%s/out", dir);
    return 0;
}

static int teardown(void **state)
{
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The whole file, NUL-terminated; *len its size. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    if (len)
        *len = (size_t)n;
    return buf;
}

static struct iovec the_iov;

static struct pipe_job job_mem(const char *command, const char *data, size_t len)
{
    the_iov = (struct iovec){(void *)data, len};
    return (struct pipe_job){
        .command = command,
        .sender = "a@example.org",
        .recipient = "bugs@example.com",
        .original_recipient = "Bugs+urgent@example.com",
        .local = "bugs",
        .domain = "example.com",
        .extension = "urgent",
        .msg = {.return_path = "a@example.org",
                .delivered_to = "bugs@example.com",
                .prefix = "Received: from x\r\n\tby y\r\n",
                .prefix_len = strlen("Received: from x\r\n\tby y\r\n"),
                .iov = &the_iov,
                .iovcnt = 1,
                .fd = -1},
        .timeout = 30,
    };
}

static void test_stdin_exact(void **state)
{
    char cmd[512];
    struct pipe_result res;
    size_t len;

    snprintf(cmd, sizeof(cmd), "cat > %s", path_out);
    struct pipe_job job = job_mem(cmd, stored, strlen(stored));
    assert_int_equal(pipe_run(&job, &res), 0);
    assert_true(res.exited);
    assert_int_equal(res.exit_code, 0);
    assert_int_equal(pipe_verdict(&res), PIPE_DELIVERED);
    char *got = slurp(path_out, &len);
    char want[1024];
    snprintf(want, sizeof(want),
             "Return-Path: <a@example.org>\nDelivered-To: <bugs@example.com>\n"
             "Received: from x\n\tby y\n%s",
             want_body);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(got, want, len);
    free(got);
}

/* The same from a file at an offset (the spool's segment), null sender. */
static void test_stdin_from_file(void **state)
{
    char cmd[512], src[128];
    struct pipe_result res;
    size_t len;

    snprintf(src, sizeof(src), "%s/segment", dir);
    int fd = open(src, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "JUNK", 4), 4);
    assert_int_equal(write(fd, stored, strlen(stored)), (ssize_t)strlen(stored));
    snprintf(cmd, sizeof(cmd), "cat > %s", path_out);
    struct pipe_job job = job_mem(cmd, NULL, 0);
    job.sender = "";
    job.msg.return_path = "";
    job.msg.prefix = NULL;
    job.msg.prefix_len = 0;
    job.msg.iovcnt = 0;
    job.msg.fd = fd;
    job.msg.off = 4;
    job.msg.len = strlen(stored);
    assert_int_equal(pipe_run(&job, &res), 0);
    assert_int_equal(pipe_verdict(&res), PIPE_DELIVERED);
    char *got = slurp(path_out, &len);
    char want[1024];
    snprintf(want, sizeof(want), "Return-Path: <>\nDelivered-To: <bugs@example.com>\n%s",
             want_body);
    assert_string_equal(got, want);
    free(got);
    close(fd);
}

/* CRLF -> LF whatever the chunking: maildir_stream over split iovecs. */
struct collect {
    char buf[1024];
    size_t len;
};

static int collect_sink(void *arg, const char *p, size_t len)
{
    struct collect *c = arg;
    assert_true(c->len + len <= sizeof(c->buf));
    memcpy(c->buf + c->len, p, len);
    c->len += len;
    return 0;
}

static void test_lf_every_split(void **state)
{
    size_t n = strlen(stored);
    for (size_t cut = 0; cut <= n; cut++) {
        struct iovec iov[2] = {{(void *)stored, cut}, {(void *)(stored + cut), n - cut}};
        struct maildir_msg m = {.return_path = "s@x", .delivered_to = "r@y", .iov = iov,
                                .iovcnt = 2, .fd = -1};
        struct collect c = {.len = 0};
        assert_int_equal(maildir_stream(&m, true, collect_sink, &c), 0);
        const char *head = "Return-Path: <s@x>\nDelivered-To: <r@y>\n";
        assert_int_equal(c.len, strlen(head) + strlen(want_body));
        assert_memory_equal(c.buf, head, strlen(head));
        assert_memory_equal(c.buf + strlen(head), want_body, strlen(want_body));
    }
    /* A message ending in a bare CR keeps it. */
    struct iovec one = {(void *)"x\r", 2};
    struct maildir_msg m = {.return_path = "", .delivered_to = "r@y", .iov = &one, .iovcnt = 1,
                            .fd = -1};
    struct collect c = {.len = 0};
    assert_int_equal(maildir_stream(&m, true, collect_sink, &c), 0);
    assert_memory_equal(c.buf + c.len - 2, "x\r", 2);
}

static void test_environment(void **state)
{
    char cmd[512];
    struct pipe_result res;

    /* env(1) prints the whole environment; the shell adds PWD (and dash
     * may add nothing else). */
    snprintf(cmd, sizeof(cmd), "env | sort > %s; pwd >> %s; exec ls /proc/self/fd >> %s",
             path_out, path_out, path_out);
    struct pipe_job job = job_mem(cmd, stored, strlen(stored));
    assert_int_equal(pipe_run(&job, &res), 0);
    assert_int_equal(pipe_verdict(&res), PIPE_DELIVERED);
    char *got = slurp(path_out, NULL);
    assert_non_null(strstr(got, "PATH=/usr/bin:/bin\n"));
    assert_non_null(strstr(got, "SHELL=/bin/sh\n"));
    assert_non_null(strstr(got, "HOME=/\n"));
    assert_non_null(strstr(got, "SENDER=a@example.org\n"));
    assert_non_null(strstr(got, "RECIPIENT=bugs@example.com\n"));
    assert_non_null(strstr(got, "ORIGINAL_RECIPIENT=Bugs+urgent@example.com\n"));
    assert_non_null(strstr(got, "LOCAL=bugs\n"));
    assert_non_null(strstr(got, "DOMAIN=example.com\n"));
    assert_non_null(strstr(got, "EXTENSION=urgent\n"));
    /* Nothing of ours leaks in (the test runner has USER, TERM...). */
    assert_null(strstr(got, "ORTOO"));
    assert_null(strstr(got, "\nUSER="));
    /* cwd "/"; the command has 0, 1, 2 and nothing of ours (3 is ls
     * reading the directory). */
    size_t l = strlen(got);
    assert_true(l > 11);
    assert_memory_equal(got + l - 11, "\n/\n0\n1\n2\n3\n", 11);
    free(got);

    /* Unset values are not set at all. */
    job.extension = NULL;
    job.original_recipient = NULL;
    snprintf(cmd, sizeof(cmd), "env > %s", path_out);
    assert_int_equal(pipe_run(&job, &res), 0);
    got = slurp(path_out, NULL);
    assert_null(strstr(got, "EXTENSION="));
    assert_null(strstr(got, "ORIGINAL_RECIPIENT="));
    free(got);
}

static void test_exit_codes(void **state)
{
    struct pipe_result res;
    char what[512];

    struct pipe_job job = job_mem("cat >/dev/null; exit 75", stored, strlen(stored));
    assert_int_equal(pipe_run(&job, &res), 0);
    assert_true(res.exited);
    assert_int_equal(res.exit_code, 75);
    assert_int_equal(pipe_verdict(&res), PIPE_TEMPORARY);
    pipe_describe(&job, &res, what, sizeof(what));
    assert_string_equal(what, "command exited 75 (EX_TEMPFAIL)");

    job = job_mem("echo 'no such ticket queue' >&2; echo second line; exit 1", stored,
                  strlen(stored));
    assert_int_equal(pipe_run(&job, &res), 0);
    assert_int_equal(res.exit_code, 1);
    assert_int_equal(pipe_verdict(&res), PIPE_PERMANENT);
    assert_string_equal(res.output, "no such ticket queue\nsecond line\n");
    pipe_describe(&job, &res, what, sizeof(what));
    assert_string_equal(what, "command exited 1: no such ticket queue second line");

    job = job_mem("exit 67", stored, strlen(stored));
    assert_int_equal(pipe_run(&job, &res), 0);
    assert_int_equal(pipe_verdict(&res), PIPE_PERMANENT);
    pipe_describe(&job, &res, what, sizeof(what));
    assert_string_equal(what, "command exited 67 (EX_NOUSER)");

    /* sh's own "not found" (127) is permanent too, with sh's message. */
    job = job_mem("/nonexistent/tracker", stored, strlen(stored));
    assert_int_equal(pipe_run(&job, &res), 0);
    assert_int_equal(res.exit_code, 127);
    assert_int_equal(pipe_verdict(&res), PIPE_PERMANENT);
    assert_non_null(strstr(res.output, "/nonexistent/tracker"));

    /* A small output buffer truncates the description, NUL-terminated. */
    pipe_describe(&job, &res, what, 12);
    assert_int_equal(strlen(what), 11);

    job = job_mem("", stored, strlen(stored));
    assert_int_equal(pipe_run(&job, &res), -EINVAL);
    assert_int_equal(pipe_verdict(&res), PIPE_TEMPORARY);
}

static void test_signal(void **state)
{
    struct pipe_result res;
    char what[256];

    struct pipe_job job = job_mem("kill -TERM $$", stored, strlen(stored));
    assert_int_equal(pipe_run(&job, &res), 0);
    assert_false(res.exited);
    assert_false(res.timed_out);
    assert_int_equal(res.signo, SIGTERM);
    assert_int_equal(pipe_verdict(&res), PIPE_TEMPORARY);
    pipe_describe(&job, &res, what, sizeof(what));
    assert_non_null(strstr(what, "killed by signal 15"));
}

/* The state letter of /proc/PID/stat, or 0 when the process is gone. */
static char proc_state(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    char *ok = fgets(buf, sizeof(buf), f);
    fclose(f);
    char *paren = ok ? strrchr(buf, ')') : NULL;
    return paren && paren[1] == ' ' ? paren[2] : 0;
}

/* The deadline kills the process group: a grandchild too. */
static void test_timeout(void **state)
{
    char cmd[512], pidfile[128];
    struct pipe_result res;

    snprintf(pidfile, sizeof(pidfile), "%s/pid", dir);
    snprintf(cmd, sizeof(cmd), "sleep 60 & echo $! > %s; echo started; wait", pidfile);
    struct pipe_job job = job_mem(cmd, stored, strlen(stored));
    job.timeout = 1;
    int64_t t0 = mono_ms();
    assert_int_equal(pipe_run(&job, &res), 0);
    int64_t took = mono_ms() - t0;
    assert_true(res.timed_out);
    assert_int_equal(pipe_verdict(&res), PIPE_TEMPORARY);
    assert_true(took >= 900);
    assert_true(took < 10000);
    assert_string_equal(res.output, "started\n");
    char *pid = slurp(pidfile, NULL);
    pid_t gc = (pid_t)atoi(pid);
    free(pid);
    assert_true(gc > 0);
    /* The grandchild was in the group: dead (a zombie until init reaps
     * it, or gone) soon. */
    int64_t until = mono_ms() + 5000;
    char pst;
    while ((pst = proc_state(gc)) != 0 && pst != 'Z' && mono_ms() < until)
        usleep(10000);
    assert_true(pst == 0 || pst == 'Z');
    char what[128];
    pipe_describe(&job, &res, what, sizeof(what));
    assert_string_equal(what, "command timed out after 1s: started");
}

/* Much output: the first PIPE_OUTPUT_MAX bytes kept, all of it read. */
static void test_output_bounded(void **state)
{
    struct pipe_result res;

    struct pipe_job job =
        job_mem("head -c 300000 /dev/zero | tr '\\0' x; exit 1", stored, strlen(stored));
    assert_int_equal(pipe_run(&job, &res), 0);
    assert_int_equal(res.exit_code, 1);
    assert_int_equal(res.output_len, PIPE_OUTPUT_MAX);
    assert_int_equal(res.output_total, 300000);
    assert_int_equal(strlen(res.output), PIPE_OUTPUT_MAX);
    char what[512];
    pipe_describe(&job, &res, what, sizeof(what));
    assert_true(strlen(what) < 260);
}

/* A command that never reads: fine, and no SIGPIPE reaches us. */
static void test_not_reading(void **state)
{
    size_t big = 8u << 20;
    char *data = malloc(big);
    struct pipe_result res;
    sigset_t pending;

    assert_non_null(data);
    for (size_t i = 0; i < big; i++)
        data[i] = (i % 80 == 79) ? '\n' : 'a';
    signal(SIGPIPE, SIG_DFL); /* would kill this test if it were raised */
    struct pipe_job job = job_mem("exec 0<&-; echo bye; exit 0", data, big);
    assert_int_equal(pipe_run(&job, &res), 0);
    assert_int_equal(pipe_verdict(&res), PIPE_DELIVERED);
    assert_string_equal(res.output, "bye\n");
    job = job_mem("exit 3", data, big);
    assert_int_equal(pipe_run(&job, &res), 0);
    assert_int_equal(res.exit_code, 3);
    sigpending(&pending);
    assert_false(sigismember(&pending, SIGPIPE));
    free(data);
}

/* Exits at once but leaves a process holding its output open: the result
 * comes when the command exits, not when the straggler does. */
static void test_straggler(void **state)
{
    struct pipe_result res;
    struct pipe_job job = job_mem("sleep 3 & echo done; exit 0", stored, strlen(stored));
    int64_t t0 = mono_ms();
    assert_int_equal(pipe_run(&job, &res), 0);
    assert_true(mono_ms() - t0 < 2500);
    assert_int_equal(pipe_verdict(&res), PIPE_DELIVERED);
    assert_string_equal(res.output, "done\n");
}

/* 32 MB through wc -c: every byte arrives (CRLF -> LF). */
static void test_huge(void **state)
{
    size_t lines = 512 * 1024, big = lines * 64;
    char *data = malloc(big);
    struct pipe_result res;

    assert_non_null(data);
    for (size_t i = 0; i < lines; i++) {
        memset(data + i * 64, i % 7 == 0 ? '.' : 'y', 62);
        memcpy(data + i * 64 + 62, "\r\n", 2);
    }
    struct pipe_job job = job_mem("wc -c", data, big);
    job.msg.prefix = NULL;
    job.msg.prefix_len = 0;
    assert_int_equal(pipe_run(&job, &res), 0);
    assert_int_equal(pipe_verdict(&res), PIPE_DELIVERED);
    size_t head = strlen("Return-Path: <a@example.org>\nDelivered-To: <bugs@example.com>\n");
    size_t dots = (lines + 6) / 7;
    size_t want = head + lines * 63 - dots;
    assert_int_equal((size_t)strtoull(res.output, NULL, 10), want);
    free(data);
}

/* ---- the pool ---- */

#define NREQ 8

static int done_count;
static struct io_loop *test_loop;

static void on_piped(struct pipe_req *req)
{
    assert_int_equal(pipe_verdict(&req->result), PIPE_DELIVERED);
    if (++done_count == NREQ)
        io_loop_stop(test_loop);
}

static void on_deadline(struct io_op *op, int res, const char *d, unsigned f)
{
    io_loop_stop(test_loop);
}

static void test_pool(void **state)
{
    static struct pipe_req reqs[NREQ];
    struct io_op deadline;

    test_loop = io_loop_new(IO_BACKEND_EPOLL, 0);
    assert_non_null(test_loop);
    struct pipe_pool *p = pipe_pool_new(2);
    assert_non_null(p);
    done_count = 0;
    for (int i = 0; i < NREQ; i++) {
        reqs[i].job = job_mem("cat > /dev/null", stored, strlen(stored));
        assert_int_equal(pipe_deliver(p, test_loop, &reqs[i], on_piped), 0);
    }
    io_op_init(&deadline, NULL);
    io_timer_start(test_loop, &deadline, 30000, on_deadline);
    io_loop_run(test_loop);
    assert_int_equal(done_count, NREQ);
    io_cancel(test_loop, &deadline);
    io_loop_run(test_loop);
    pipe_pool_free(p);
    assert_int_equal(pipe_deliver(NULL, test_loop, &reqs[0], on_piped), -EINVAL);
    io_loop_free(test_loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_stdin_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stdin_from_file, setup, teardown),
        cmocka_unit_test(test_lf_every_split),
        cmocka_unit_test_setup_teardown(test_environment, setup, teardown),
        cmocka_unit_test(test_exit_codes),
        cmocka_unit_test(test_signal),
        cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
        cmocka_unit_test(test_output_bounded),
        cmocka_unit_test(test_not_reading),
        cmocka_unit_test(test_straggler),
        cmocka_unit_test(test_huge),
        cmocka_unit_test(test_pool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
