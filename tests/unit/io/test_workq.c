/* SPDX-License-Identifier: MIT */
/*
 * test_workq.c - io/workq: jobs run on workers, completions on the loop
 * that queued them, all of them before workq_free returns; SIGPIPE is
 * blocked on the workers; bad arguments are refused.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "io/loop.h"
#include "io/workq.h"

#define NJOBS 200

struct job {
    struct workq_item work;
    pthread_t ran_on;
    int sigpipe_blocked;
    struct io_loop *loop;
    unsigned *done_count;
    pthread_t *done_on;
};

static pthread_t main_thread;

static void job_run(struct workq_item *it)
{
    struct job *j = (struct job *)it;
    sigset_t cur;
    j->ran_on = pthread_self();
    pthread_sigmask(SIG_SETMASK, NULL, &cur);
    j->sigpipe_blocked = sigismember(&cur, SIGPIPE);
}

static void job_done(struct workq_item *it)
{
    struct job *j = (struct job *)it;
    *j->done_on = pthread_self();
    if (++*j->done_count == NJOBS)
        io_loop_stop(j->loop);
}

static void run(enum io_backend be)
{
    struct io_loop *loop = io_loop_new(be, 64);
    struct workq *q = workq_new(3);
    static struct job jobs[NJOBS];
    pthread_t done_on[NJOBS];
    unsigned done = 0;

    if (loop == NULL)
        skip();
    assert_non_null(q);
    main_thread = pthread_self();
    for (unsigned i = 0; i < NJOBS; i++) {
        jobs[i] = (struct job){.work = {.run = job_run, .done = job_done}, .loop = loop,
                               .done_count = &done, .done_on = &done_on[i]};
        assert_int_equal(workq_submit(q, loop, &jobs[i].work), 0);
    }
    assert_int_equal(io_loop_run(loop), 0);
    assert_int_equal(done, NJOBS);
    for (unsigned i = 0; i < NJOBS; i++) {
        assert_false(pthread_equal(jobs[i].ran_on, main_thread));
        assert_true(pthread_equal(done_on[i], main_thread));
        assert_int_equal(jobs[i].sigpipe_blocked, 1);
    }
    workq_free(q);
    io_loop_free(loop);
}

static void test_uring(void **state) { run(IO_BACKEND_URING); }
static void test_epoll(void **state) { run(IO_BACKEND_EPOLL); }

static void test_bad_arguments(void **state)
{
    struct io_loop *loop = io_loop_new(IO_BACKEND_EPOLL, 8);
    struct workq *q = workq_new(1);
    struct workq_item it = {.run = job_run};

    assert_null(workq_new(0));
    assert_int_equal(workq_submit(q, loop, &it), -EINVAL);
    assert_int_equal(workq_submit(q, NULL, &it), -EINVAL);
    assert_int_equal(workq_submit(NULL, loop, &it), -EINVAL);
    workq_free(q);
    workq_free(NULL);
    io_loop_free(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uring),
        cmocka_unit_test(test_epoll),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
