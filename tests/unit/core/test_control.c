/* SPDX-License-Identifier: MIT */
/*
 * test_control.c - unit tests for core/control.c: a control served by a
 * thread running the same poll loop as the daemon's main thread, driven by
 * control_call() and raw sockets: data lines and status lines, errors,
 * commands registered by a "module", an answer that comes later through
 * control_post() from another thread, the public socket's filter, an idle
 * client next to busy ones, a second server refused on a live socket, and
 * the client's "not running".
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/control.h"

static char dir[] = "/tmp/ortoo-control-XXXXXX";
static char path[256], pub[256];
static struct control *ctl;
static pthread_t loop_thread;
static atomic_bool stop;

static void *loop_main(void *arg)
{
    while (!atomic_load(&stop)) {
        struct pollfd pfd[CONTROL_MAX_POLLFDS];
        size_t n = control_pollfds(ctl, pfd, CONTROL_MAX_POLLFDS);
        int t = control_timeout(ctl);
        if (poll(pfd, n, t < 0 || t > 50 ? 50 : t) < 0 && errno != EINTR)
            break;
        control_dispatch(ctl, pfd, n);
    }
    return NULL;
}

static void cmd_echo(struct control_req *req, int argc, char **argv, void *arg)
{
    for (int i = 1; i < argc; i++)
        control_reply(req, "%s", argv[i]);
    control_done(req, true, "%d words", argc - 1);
}

static void cmd_fail(struct control_req *req, int argc, char **argv, void *arg)
{
    control_reply(req, "tried");
    control_done(req, false, "it broke\nbadly");  /* LF must not split the line */
}

/* An answer from another thread: a worker sleeps, then posts back. */
struct later {
    struct control_req *req;
    struct control_task task;
    pthread_t th;
};

static void later_done(void *arg)
{
    struct later *l = arg;
    control_done(l->req, true, "later");
    pthread_join(l->th, NULL);
    free(l);
}

static void *later_worker(void *arg)
{
    struct later *l = arg;
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
    control_post(ctl, &l->task, later_done, l);
    return NULL;
}

static void cmd_later(struct control_req *req, int argc, char **argv, void *arg)
{
    struct later *l = calloc(1, sizeof(*l));
    l->req = req;
    control_reply(req, "started");
    pthread_create(&l->th, NULL, later_worker, l);
}

static int setup(void **state)
{
    char err[256];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/control", dir);
    snprintf(pub, sizeof(pub), "%s/pickup", dir);
    ctl = control_new();
    assert_non_null(ctl);
    assert_int_equal(control_register(ctl, "echo", 0, "echo words", cmd_echo, NULL), 0);
    assert_int_equal(control_register(ctl, "fail", CONTROL_PUBLIC, "fails", cmd_fail, NULL), 0);
    assert_int_equal(control_register(ctl, "later", 0, "answers later", cmd_later, NULL), 0);
    assert_int_equal(control_register(ctl, "echo", 0, "again", cmd_echo, NULL), -EEXIST);
    assert_int_equal(control_register(ctl, "Bad Name", 0, "x", cmd_echo, NULL), -EINVAL);
    assert_int_equal(control_listen(ctl, path, 0660, (uid_t)-1, (gid_t)-1, false, err,
                                    sizeof(err)),
                     0);
    assert_int_equal(control_listen(ctl, pub, 0666, (uid_t)-1, (gid_t)-1, true, err,
                                    sizeof(err)),
                     0);
    atomic_store(&stop, false);
    pthread_create(&loop_thread, NULL, loop_main, NULL);
    return 0;
}

static int teardown(void **state)
{
    atomic_store(&stop, true);
    pthread_join(loop_thread, NULL);
    control_free(ctl);
    assert_int_equal(access(path, F_OK), -1); /* socket files removed */
    rmdir(dir);
    return 0;
}

/* Collects data lines. */
struct lines {
    char text[16][128];
    int n;
};

static void on_line(const char *text, void *arg)
{
    struct lines *l = arg;
    if (l->n < 16)
        snprintf(l->text[l->n++], sizeof(l->text[0]), "%s", text);
}

static void test_calls(void **state)
{
    char status[256];
    struct lines l = {0};
    assert_int_equal(control_call(path, "echo a b", 5000, on_line, &l, status, sizeof(status)),
                     0);
    assert_string_equal(status, "2 words");
    assert_int_equal(l.n, 2);
    assert_string_equal(l.text[0], "a");
    assert_string_equal(l.text[1], "b");

    memset(&l, 0, sizeof(l));
    assert_int_equal(control_call(path, "fail", 5000, on_line, &l, status, sizeof(status)), 1);
    assert_string_equal(status, "it broke?badly");
    assert_int_equal(l.n, 1);

    assert_int_equal(control_call(path, "nope", 5000, NULL, NULL, status, sizeof(status)), 1);
    assert_non_null(strstr(status, "unknown command 'nope'"));

    memset(&l, 0, sizeof(l));
    assert_int_equal(control_call(path, "help", 5000, on_line, &l, status, sizeof(status)), 0);
    assert_int_equal(l.n, 5); /* help ping echo fail later */

    memset(&l, 0, sizeof(l));
    assert_int_equal(control_call(path, "later", 5000, on_line, &l, status, sizeof(status)), 0);
    assert_string_equal(status, "later");
    assert_int_equal(l.n, 1);
    assert_string_equal(l.text[0], "started");
}

static void test_public(void **state)
{
    char status[256];
    struct lines l = {0};
    assert_int_equal(control_call(pub, "echo a", 5000, NULL, NULL, status, sizeof(status)), 1);
    assert_non_null(strstr(status, "unknown command"));
    assert_int_equal(control_call(pub, "fail", 5000, NULL, NULL, status, sizeof(status)), 1);
    assert_int_equal(control_call(pub, "help", 5000, on_line, &l, status, sizeof(status)), 0);
    assert_int_equal(l.n, 3); /* help ping fail */
}

static void test_idle_and_busy(void **state)
{
    char status[256];
    int idle[8];
    for (int i = 0; i < 8; i++) {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        memcpy(sun.sun_path, path, strlen(path) + 1); /* short: a mkdtemp path */
        idle[i] = socket(AF_UNIX, SOCK_STREAM, 0);
        assert_int_equal(connect(idle[i], (struct sockaddr *)&sun, sizeof(sun)), 0);
    }
    (void)!write(idle[0], "ec", 2); /* half a request */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 50; i++)
        assert_int_equal(control_call(path, "ping", 5000, NULL, NULL, status, sizeof(status)),
                         0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_true(t1.tv_sec - t0.tv_sec < 3);
    /* A request running "later" does not hold up the others either. */
    for (int i = 0; i < 8; i++)
        close(idle[i]);
}

static void test_second_listener_and_absent(void **state)
{
    char err[256], status[256];
    struct control *other = control_new();
    assert_int_equal(control_listen(other, path, 0660, (uid_t)-1, (gid_t)-1, false, err,
                                    sizeof(err)),
                     -EADDRINUSE);
    assert_non_null(strstr(err, "another ortoo is running"));
    control_free(other);
    /* Still served by the first. */
    assert_int_equal(control_call(path, "ping", 5000, NULL, NULL, status, sizeof(status)), 0);
    char absent[300];
    snprintf(absent, sizeof(absent), "%s/none", dir);
    assert_int_equal(control_call(absent, "ping", 1000, NULL, NULL, status, sizeof(status)),
                     -ENOENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_calls),
        cmocka_unit_test(test_public),
        cmocka_unit_test(test_idle_and_busy),
        cmocka_unit_test(test_second_listener_and_absent),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
