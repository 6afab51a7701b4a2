/* SPDX-License-Identifier: MIT */
/*
 * shard_env.h - the fixture test_bounce.c and test_notice.c share: a real
 * spool shard in a temporary directory on an epoll loop, cmocka setup and
 * teardown, and store() to put one message in it.  Included once per test
 * program after <cmocka.h>, with SHARD_ENV_NAME naming the directory.
 */
#ifndef ORTOO_TEST_SHARD_ENV_H
#define ORTOO_TEST_SHARD_ENV_H

#include <ftw.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/loop.h"
#include "spool/spool.h"

struct env {
    char dir[64];
    struct io_loop *loop;
    struct spool_shard *sh;
    struct spool_commit c;
    int done, res;
};

static int rm_entry(const char *p, const struct stat *s, int f, struct FTW *w) { return remove(p); }

static void shard_open(struct env *e)
{
    char err[256];
    e->loop = io_loop_new(IO_BACKEND_EPOLL, 0);
    assert_non_null(e->loop);
    if (spool_shard_open(e->loop, e->dir, 0, 1, NULL, &e->sh, err, sizeof err) < 0)
        fail_msg("open: %s", err);
}

static void shard_close(struct env *e)
{
    spool_shard_close(e->sh); /* runs the loop until the shard is idle */
    io_loop_free(e->loop);
    e->sh = NULL;
    e->loop = NULL;
}

static int setup(void **state)
{
    static struct env e;
    memset(&e, 0, sizeof e);
    strcpy(e.dir, "/tmp/ortoo-" SHARD_ENV_NAME "-XXXXXX");
    assert_non_null(mkdtemp(e.dir));
    shard_open(&e);
    *state = &e;
    alarm(60);
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    if (e->sh)
        shard_close(e);
    nftw(e->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static void on_done(struct spool_commit *c, int res)
{
    struct env *e = c->owner;
    e->done++;
    e->res = res;
    io_loop_stop(e->loop);
}

static void on_bounced(void *arg, int res)
{
    struct env *e = arg;
    e->done++;
    e->res = res;
    io_loop_stop(e->loop);
}

static void run_until(struct env *e, int done)
{
    while (e->done < done)
        assert_int_equal(io_loop_run(e->loop), 0);
}

/* Store one message; returns its id in id. */
static void store(struct env *e, const char *sender, const char *const *rcpts, size_t n,
                  const uint8_t *notify, char id[SPOOL_ID_LEN + 1])
{
    static const char body[] = "Subject: test\r\n\r\nhello\r\n";
    struct spool_envelope env = {
        .sender = sender, .rcpts = rcpts, .nrcpts = n, .helo = "client.test",
        .client_addr = "127.0.0.1", .headers = "Received: by test\r\n",
        .received_at = time(NULL), .dsn_notify = notify, .dsn_ret = SPOOL_RET_FULL,
    };
    struct iovec iov = {(void *)body, sizeof body - 1};
    e->c = (struct spool_commit){.cb = on_done, .owner = e};
    int before = e->done;
    assert_int_equal(spool_submit(e->sh, &e->c, &env, &iov, 1), 0);
    run_until(e, before + 1);
    assert_int_equal(e->res, 0);
    memcpy(id, e->c.id, SPOOL_ID_LEN + 1);
}

#endif
