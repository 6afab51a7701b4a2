/* SPDX-License-Identifier: MIT */
/*
 * test_notice.c - unit tests of delivery/notice.c on a real spool shard
 * (epoll loop): a "delayed" notice goes to the sender for the recipients
 * whose NOTIFY allows it and sets DELAY_WARNED, a "relayed" notice only for
 * NOTIFY=SUCCESS, and never one to the null sender; the original message
 * keeps its recipients' states.
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

#include "delivery/notice.h"
#include "io/loop.h"
#include "spool/spool.h"

#define SHARD_ENV_NAME "notice"
#include "tests/unit/delivery/shard_env.h"

/* The notices (messages from <> that are not bounce records) in the shard. */
struct find {
    int n;
    char to[128];
    char text[4096];
};

static int find_notice(const struct spool_msg_info *m, void *arg)
{
    struct find *f = arg;
    if (m->sender[0] != '\0' || m->bounce_of != NULL)
        return 0;
    f->n++;
    snprintf(f->to, sizeof f->to, "%s", m->rcpts[0]);
    return 0;
}

static void open_view(struct env *e, const char *id, struct spool_msg_view *v)
{
    assert_int_equal(spool_msg_open(e->sh, id, v), 0);
}

static void test_delayed(void **state)
{
    struct env *e = *state;
    const char *rcpts[] = {"a@remote.test", "b@remote.test", "c@remote.test"};
    const uint8_t notify[] = {0, SPOOL_NOTIFY_DELAY | SPOOL_NOTIFY_FAILURE, SPOOL_NOTIFY_NEVER};
    char id[SPOOL_ID_LEN + 1];
    struct spool_msg_view v;

    store(e, "sender@local.test", rcpts, 3, notify, id);
    open_view(e, id, &v);
    struct bounce_rcpt r[3] = {
        {.idx = 0, .status = "4.4.1", .diagnostic = "451 4.4.1 try later"},
        {.idx = 1, .status = "4.4.1", .diagnostic = "451 4.4.1 try later"},
        {.idx = 2, .status = "4.4.1", .diagnostic = "451 4.4.1 try later"},
    };
    int before = e->done;
    /* a and b want it (no NOTIFY counts for DELAY), c said NEVER. */
    assert_int_equal(notice_send(e->sh, &v, DSN_DELAYED, r, 3, "mx.local.test", time(NULL),
                                 time(NULL) + 86400, on_bounced, e),
                     2);
    run_until(e, before + 1);
    assert_int_equal(e->res, 0);
    spool_msg_close(e->sh, &v);
    struct find f = {0};
    spool_foreach(e->sh, find_notice, &f);
    assert_int_equal(f.n, 1);
    assert_string_equal(f.to, "sender@local.test");
    open_view(e, id, &v);
    assert_true(v.msg_flags & SPOOL_MF_DELAY_WARNED);
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(v.rcpt[i].state, SPOOL_RCPT_PENDING); /* unchanged */
    spool_msg_close(e->sh, &v);
}

static void test_relayed_and_null_sender(void **state)
{
    struct env *e = *state;
    const char *rcpts[] = {"a@remote.test", "b@remote.test"};
    const uint8_t notify[] = {SPOOL_NOTIFY_SUCCESS, 0};
    char id[SPOOL_ID_LEN + 1];
    struct spool_msg_view v;
    struct bounce_rcpt r[2] = {
        {.idx = 0, .status = "2.0.0", .remote_mta = "mx.remote.test", .diagnostic = "250 ok"},
        {.idx = 1, .status = "2.0.0", .remote_mta = "mx.remote.test", .diagnostic = "250 ok"},
    };

    store(e, "sender@local.test", rcpts, 2, notify, id);
    open_view(e, id, &v);
    int before = e->done;
    /* only a asked for SUCCESS */
    assert_int_equal(notice_send(e->sh, &v, DSN_RELAYED, r, 2, "mx.local.test", time(NULL), 0,
                                 on_bounced, e),
                     1);
    run_until(e, before + 1);
    assert_int_equal(e->res, 0);
    assert_int_equal(notice_send(e->sh, &v, DSN_FAILED, r, 2, "mx.local.test", time(NULL), 0,
                                 NULL, NULL),
                     -EINVAL); /* failures go through bounce_fail */
    spool_msg_close(e->sh, &v);

    /* The null sender gets nothing, whatever NOTIFY says. */
    store(e, "", rcpts, 2, notify, id);
    open_view(e, id, &v);
    assert_int_equal(notice_send(e->sh, &v, DSN_RELAYED, r, 2, "mx.local.test", time(NULL), 0,
                                 NULL, NULL),
                     0);
    assert_int_equal(notice_send(e->sh, &v, DSN_DELAYED, r, 2, "mx.local.test", time(NULL), 0,
                                 NULL, NULL),
                     0);
    spool_msg_close(e->sh, &v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_delayed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relayed_and_null_sender, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
