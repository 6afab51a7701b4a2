/* SPDX-License-Identifier: MIT */
/*
 * test_bounce.c - unit tests of delivery/bounce.c on a real spool shard
 * (epoll loop): who gets a DSN, that the DSN and the FAILED marks survive a
 * reopen together, that a bounce never goes to the null sender, and that a
 * final recipient cannot be bounced twice.
 */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "delivery/bounce.h"
#include "io/loop.h"
#include "spool/spool.h"

#define SHARD_ENV_NAME "bounce"
#include "tests/unit/delivery/shard_env.h"

/* Find the DSN (the message whose bounce_of is orig) by scanning. */
struct find {
    const char *orig;
    char id[SPOOL_ID_LEN + 1];
    char to[128];
    char sender[8];
    int n;
    size_t nb;
    bool has_report;
};

static int find_dsn(const struct spool_msg_info *m, void *arg)
{
    struct find *f = arg;
    if (!m->bounce_of || strcmp(m->bounce_of, f->orig) != 0)
        return 0;
    f->n++;
    memcpy(f->id, m->id, SPOOL_ID_LEN + 1);
    snprintf(f->to, sizeof f->to, "%s", m->rcpts[0]);
    snprintf(f->sender, sizeof f->sender, "%s", m->sender);
    f->has_report = m->data && memmem(m->data, m->size, "Action: failed", 14) != NULL;
    return 0;
}

static void test_bounce_notify(void **state)
{
    struct env *e = *state;
    const char *rcpts[3] = {"a@remote.test", "b@remote.test", "c@remote.test"};
    uint8_t notify[3] = {0, SPOOL_NOTIFY_NEVER, SPOOL_NOTIFY_SUCCESS | SPOOL_NOTIFY_FAILURE};
    char id[SPOOL_ID_LEN + 1];
    struct spool_msg_view v;

    store(e, "sender@example.test", rcpts, 3, notify, id);
    assert_int_equal(spool_msg_open(e->sh, id, &v), 0);
    struct bounce_rcpt f[3] = {
        {.idx = 0, .status = "5.1.1", .remote_mta = "mx.remote.test", .diagnostic = "550 5.1.1 no"},
        {.idx = 1, .status = "5.1.1", .remote_mta = "mx.remote.test", .diagnostic = "550 5.1.1 no"},
        {.idx = 2, .status = "5.7.1", .diagnostic = "local reason"},
    };
    int before = e->done;
    assert_int_equal(bounce_fail(e->sh, &v, f, 3, "mx.example.test", time(NULL), on_bounced, e), 0);
    assert_int_equal(e->done, before); /* never inside the call */
    /* A second bounce of the same recipients is refused at once. */
    assert_int_equal(bounce_fail(e->sh, &v, f, 1, "mx.example.test", time(NULL), NULL, NULL),
                     -EALREADY);
    run_until(e, before + 1);
    assert_int_equal(e->res, 0);
    spool_msg_close(e->sh, &v);

    /* The original is gone (all final); one DSN to the sender, from <>. */
    shard_close(e);
    struct find fd = {.orig = id};
    assert_int_equal(spool_scan(e->dir, find_dsn, &fd), 0);
    assert_int_equal(fd.n, 1);
    assert_string_equal(fd.to, "sender@example.test");
    assert_string_equal(fd.sender, "");
    assert_true(fd.has_report);
    shard_open(e);
    struct spool_rcpt_info ri;
    assert_int_equal(spool_rcpt_get(e->sh, id, 0, &ri), -ENOENT); /* not live */
    assert_int_equal(spool_rcpt_get(e->sh, fd.id, 0, &ri), 0);    /* the DSN is */
}

static void test_bounce_of_bounce(void **state)
{
    struct env *e = *state;
    const char *rcpts[1] = {"someone@remote.test"};
    char id[SPOOL_ID_LEN + 1];
    struct spool_msg_view v;

    store(e, "", rcpts, 1, NULL, id);
    assert_int_equal(spool_msg_open(e->sh, id, &v), 0);
    struct bounce_rcpt f = {.idx = 0, .status = "5.1.1", .diagnostic = "550 5.1.1 gone"};
    int before = e->done;
    assert_int_equal(bounce_fail(e->sh, &v, &f, 1, "mx.example.test", time(NULL), on_bounced, e), 0);
    run_until(e, before + 1);
    assert_int_equal(e->res, 0);
    spool_msg_close(e->sh, &v);
    shard_close(e);
    struct find fd = {.orig = id};
    assert_int_equal(spool_scan(e->dir, find_dsn, &fd), 0);
    assert_int_equal(fd.n, 0); /* nothing to the null sender */
    shard_open(e);
    assert_int_equal(spool_shard_count(e->sh), 0);
}

static void test_bad_calls(void **state)
{
    struct env *e = *state;
    const char *rcpts[1] = {"x@remote.test"};
    char id[SPOOL_ID_LEN + 1];
    struct spool_msg_view v;

    store(e, "s@example.test", rcpts, 1, NULL, id);
    assert_int_equal(spool_msg_open(e->sh, id, &v), 0);
    struct bounce_rcpt f = {.idx = 1, .status = "5.0.0"};
    assert_int_equal(bounce_fail(e->sh, &v, &f, 1, "h", time(NULL), NULL, NULL), -EINVAL);
    assert_int_equal(bounce_fail(e->sh, &v, &f, 0, "h", time(NULL), NULL, NULL), -EINVAL);
    spool_msg_close(e->sh, &v);
    assert_int_equal(spool_shard_count(e->sh), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bounce_notify, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bounce_of_bounce, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_calls, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
