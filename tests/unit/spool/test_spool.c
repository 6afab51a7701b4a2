/* SPDX-License-Identifier: MIT */
/*
 * test_spool.c - the spool shard on a real io_loop (both backends): submit
 * and recover, torn tails, group commit, IOV_MAX splitting, adoption of
 * other shards' directories, write errors injected through the seam in
 * spool.c (which this file includes to reach it), and the journal.
 *
 * Every test works in its own mkdtemp directory under /tmp.
 */
#include "spool/spool.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <ftw.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

/* The backend of the test running now (each test runs on both). */
static enum io_backend cur_backend;

/* ------------------------------------------------------------ fixtures */

struct tmsg {
    struct spool_commit c;
    char rcptbuf[3][64];
    const char *rcpts[3];
    size_t nrcpts;
    char *data;               /* expected bytes */
    size_t len;
    struct iovec iov[4];
    int iovcnt;
    bool done;
    int res;
    int seen;                 /* times spool_scan reported it */
};

struct env {
    char dir[64];
    struct io_loop *loop;
    struct spool_shard *sh;
    int want, got;
};

static struct env *cur; /* for callbacks */

static int rm_entry(const char *p, const struct stat *s, int f, struct FTW *w)
{
    return remove(p);
}

static int setup(void **state)
{
    static struct env e;
    memset(&e, 0, sizeof e);
    strcpy(e.dir, "/tmp/ortoo-spool-XXXXXX");
    assert_non_null(mkdtemp(e.dir));
    cur = &e;
    spool_write_res_hook = NULL;
    *state = &e;
    alarm(120);
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    if (e->sh)
        spool_shard_close(e->sh);
    if (e->loop)
        io_loop_free(e->loop);
    nftw(e->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static void loop_new(struct env *e, enum io_backend b)
{
    e->loop = io_loop_new(b, 0);
    if (!e->loop && b == IO_BACKEND_URING)
        skip(); /* io_uring refused here: the epoll run still covers the spool */
    assert_non_null(e->loop);
}

static void loop_new_cur(struct env *e) { loop_new(e, cur_backend); }

static void shard_open(struct env *e, unsigned index, unsigned nshards,
                       const struct spool_params *p)
{
    char err[256] = "";
    int r = spool_shard_open(e->loop, e->dir, index, nshards, p, &e->sh, err, sizeof err);
    if (r < 0)
        fail_msg("spool_shard_open: %s", err);
}

static void shard_close(struct env *e)
{
    spool_shard_close(e->sh);
    e->sh = NULL;
}

static void on_commit(struct spool_commit *c, int res)
{
    struct tmsg *m = c->owner;
    assert_false(m->done);
    m->done = true;
    m->res = res;
    if (++cur->got >= cur->want)
        io_loop_stop(cur->loop);
}

/* Run the loop until `n` more callbacks ran. */
static void run_for(struct env *e, int n)
{
    e->want = e->got + n;
    if (n > 0)
        assert_int_equal(io_loop_run(e->loop), 0);
    assert_int_equal(e->got, e->want);
}

static struct tmsg *msgs_new(int n, int seed)
{
    struct tmsg *ms = calloc((size_t)n, sizeof *ms);
    for (int i = 0; i < n; i++) {
        struct tmsg *m = &ms[i];
        m->nrcpts = 1 + (size_t)((i + seed) % 3);
        for (size_t k = 0; k < m->nrcpts; k++) {
            snprintf(m->rcptbuf[k], sizeof m->rcptbuf[k], "rcpt%zu-%d-%d@example.org", k, i, seed);
            m->rcpts[k] = m->rcptbuf[k];
        }
        m->len = 10 + (size_t)((i * 7919 + seed * 31) % 5000);
        m->data = malloc(m->len);
        for (size_t k = 0; k < m->len; k++)
            m->data[k] = (char)('A' + (k + (size_t)i) % 26);
        memcpy(m->data + m->len - 2, "\r\n", 2);
        /* split the data into 1..3 iovecs (plus an empty one sometimes) */
        size_t a = m->len / 3, b = m->len / 2;
        switch (i % 4) {
        case 0:
            m->iov[0] = (struct iovec){m->data, m->len};
            m->iovcnt = 1;
            break;
        case 1:
            m->iov[0] = (struct iovec){m->data, a};
            m->iov[1] = (struct iovec){m->data + a, m->len - a};
            m->iovcnt = 2;
            break;
        case 2:
            m->iov[0] = (struct iovec){m->data, a};
            m->iov[1] = (struct iovec){m->data + a, 0};
            m->iov[2] = (struct iovec){m->data + a, b - a};
            m->iov[3] = (struct iovec){m->data + b, m->len - b};
            m->iovcnt = 4;
            break;
        default:
            m->iov[0] = (struct iovec){m->data, 1};
            m->iov[1] = (struct iovec){m->data + 1, m->len - 1};
            m->iovcnt = 2;
        }
        m->c.cb = on_commit;
        m->c.owner = m;
    }
    return ms;
}

static void msgs_free(struct tmsg *ms, int n)
{
    for (int i = 0; i < n; i++)
        free(ms[i].data);
    free(ms);
}

static void submit_raw(struct spool_shard *sh, struct tmsg *m)
{
    struct spool_envelope env = {.sender = "sender@example.com", .rcpts = m->rcpts,
                                 .nrcpts = m->nrcpts, .helo = "client.example",
                                 .client_addr = "127.0.0.1", .received = "",
                                 .received_at = 1735689600};
    if (spool_submit(sh, &m->c, &env, m->iov, m->iovcnt) != 0)
        _exit(6);
}

static void submit(struct env *e, struct tmsg *m)
{
    struct spool_envelope env = {
        .sender = "sender@example.com",
        .rcpts = m->rcpts,
        .nrcpts = m->nrcpts,
        .helo = "client.example",
        .client_addr = "127.0.0.1",
        .auth_user = (m->len % 2) ? "alice" : NULL,
        .received = "Received: from client.example\r\n",
        .flags = SPOOL_F_8BITMIME,
        .received_at = 1735689600 + (int64_t)m->len,
    };
    m->done = false;
    m->res = 1;
    assert_int_equal(spool_submit(e->sh, &m->c, &env, m->iov, m->iovcnt), 0);
    assert_int_equal(strlen(m->c.id), SPOOL_ID_LEN);
    assert_false(m->done); /* never inside the submit */
}

/* spool_scan callback: check a message against the expected set. */
struct scan_exp {
    struct tmsg *ms;
    int n;
    int found, unknown;
    unsigned shards_seen;
};

static int check_msg(const struct spool_msg_info *mi, void *arg)
{
    struct scan_exp *x = arg;
    for (int i = 0; i < x->n; i++) {
        struct tmsg *m = &x->ms[i];
        if (strcmp(m->c.id, mi->id) != 0)
            continue;
        m->seen++;
        x->found++;
        x->shards_seen |= 1u << mi->shard;
        assert_string_equal(mi->sender, "sender@example.com");
        assert_int_equal(mi->nrcpts, m->nrcpts);
        for (size_t k = 0; k < m->nrcpts; k++)
            assert_string_equal(mi->rcpts[k], m->rcpts[k]);
        assert_string_equal(mi->helo, "client.example");
        assert_string_equal(mi->client_addr, "127.0.0.1");
        if (m->len % 2)
            assert_string_equal(mi->auth_user, "alice");
        else
            assert_null(mi->auth_user);
        assert_string_equal(mi->received, "Received: from client.example\r\n");
        assert_int_equal(mi->flags, SPOOL_F_8BITMIME);
        assert_int_equal(mi->received_at, 1735689600 + (int64_t)m->len);
        assert_int_equal(mi->size, m->len);
        assert_memory_equal(mi->data, m->data, m->len);
        return 0;
    }
    x->unknown++;
    return 0;
}

static struct scan_exp scan_check(struct env *e, struct tmsg *ms, int n)
{
    struct scan_exp x = {ms, n, 0, 0, 0};
    for (int i = 0; i < n; i++)
        ms[i].seen = 0;
    assert_int_equal(spool_scan(e->dir, check_msg, &x), 0);
    for (int i = 0; i < n; i++)
        assert_true(ms[i].seen <= 1);
    return x;
}

/* Path of the highest-numbered non-empty segment of shard k. */
static void last_segment(struct env *e, unsigned k, char *out, size_t len)
{
    char dir[128];
    snprintf(dir, sizeof dir, "%s/shard-%u", e->dir, k);
    DIR *d = opendir(dir);
    struct dirent *de;
    unsigned best = 0;
    assert_non_null(d);
    while ((de = readdir(d))) {
        unsigned n;
        struct stat st;
        char p[512];
        if (sscanf(de->d_name, "seg-%u", &n) != 1)
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        if (stat(p, &st) == 0 && st.st_size > 0 && n > best)
            best = n;
    }
    closedir(d);
    assert_true(best > 0);
    snprintf(out, len, "%s/seg-%08u", dir, best);
}

static int count_segments(struct env *e, unsigned k)
{
    char dir[128];
    int n = 0;
    snprintf(dir, sizeof dir, "%s/shard-%u", e->dir, k);
    DIR *d = opendir(dir);
    struct dirent *de;
    assert_non_null(d);
    while ((de = readdir(d)))
        n += strncmp(de->d_name, "seg-", 4) == 0;
    closedir(d);
    return n;
}

static off_t file_size(const char *p)
{
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    return st.st_size;
}

/* -------------------------------------------------------------- tests */

static void test_submit_recover(void **state)
{
    struct env *e = *state;
    enum { N = 60 };
    struct tmsg *ms = msgs_new(N, 1);

    loop_new_cur(e);
    shard_open(e, 0, 1, NULL);
    assert_int_equal(spool_shard_count(e->sh), 0);
    for (int i = 0; i < N; i++)
        submit(e, &ms[i]);
    run_for(e, N);
    for (int i = 0; i < N; i++)
        assert_int_equal(ms[i].res, 0);
    assert_int_equal(spool_shard_count(e->sh), N);
    /* ids are distinct */
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++)
            assert_string_not_equal(ms[i].c.id, ms[j].c.id);
    shard_close(e);

    struct scan_exp x = scan_check(e, ms, N);
    assert_int_equal(x.found, N);
    assert_int_equal(x.unknown, 0);

    shard_open(e, 0, 1, NULL);
    assert_int_equal(spool_shard_count(e->sh), N);
    /* more after recovery go to a fresh segment and survive too */
    struct tmsg *more = msgs_new(5, 2);
    for (int i = 0; i < 5; i++)
        submit(e, &more[i]);
    run_for(e, 5);
    shard_close(e);
    shard_open(e, 0, 1, NULL);
    assert_int_equal(spool_shard_count(e->sh), N + 5);
    x = scan_check(e, more, 5);
    assert_int_equal(x.found, 5);
    msgs_free(more, 5);
    msgs_free(ms, N);
}


static void test_torn_tail(void **state)
{
    struct env *e = *state;
    enum { N = 10 };
    struct tmsg *ms = msgs_new(N, 3);
    char seg[512];

    loop_new_cur(e);
    shard_open(e, 0, 1, NULL);
    for (int i = 0; i < N; i++)
        submit(e, &ms[i]);
    run_for(e, N);
    shard_close(e);

    /* a partial record appended (a batch torn by power loss) */
    last_segment(e, 0, seg, sizeof seg);
    off_t size = file_size(seg);
    int fd = open(seg, O_RDWR);
    uint8_t head[100];
    assert_int_equal(pread(fd, head, sizeof head, 0), sizeof head);
    assert_int_equal(pwrite(fd, head, sizeof head, size), sizeof head);
    close(fd);
    /* read-only scan: skips the tail, changes nothing */
    struct scan_exp x = scan_check(e, ms, N);
    assert_int_equal(x.found, N);
    assert_int_equal(file_size(seg), size + 100);
    shard_open(e, 0, 1, NULL);
    assert_int_equal(spool_shard_count(e->sh), N);
    assert_int_equal(file_size(seg), size); /* cut */
    shard_close(e);

    /* a byte flipped in the last record: it goes, the earlier ones stay */
    fd = open(seg, O_RDWR);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, size - 12), 1);
    b ^= 0x20;
    assert_int_equal(pwrite(fd, &b, 1, size - 12), 1);
    close(fd);
    x = scan_check(e, ms, N);
    assert_int_equal(x.found, N - 1);
    assert_int_equal(ms[N - 1].seen, 0);
    shard_open(e, 0, 1, NULL);
    assert_int_equal(spool_shard_count(e->sh), N - 1);
    assert_true(file_size(seg) < size);
    shard_close(e);
    x = scan_check(e, ms, N);
    assert_int_equal(x.found, N - 1);
    msgs_free(ms, N);
}

static void test_bad_record_older_segment(void **state)
{
    struct env *e = *state;
    struct tmsg *a = msgs_new(4, 4), *b = msgs_new(3, 5);
    char seg[512];

    loop_new_cur(e);
    shard_open(e, 0, 1, NULL);
    for (int i = 0; i < 4; i++)
        submit(e, &a[i]);
    run_for(e, 4);
    shard_close(e);
    last_segment(e, 0, seg, sizeof seg);
    shard_open(e, 0, 1, NULL);
    for (int i = 0; i < 3; i++)
        submit(e, &b[i]);
    run_for(e, 3);
    shard_close(e);
    /* corrupt the first record of the older segment's second record */
    int fd = open(seg, O_RDWR);
    uint8_t hdr[REC_HDR_LEN];
    assert_int_equal(pread(fd, hdr, sizeof hdr, 0), sizeof hdr);
    struct rec_view v;
    uint8_t *all = malloc((size_t)file_size(seg));
    assert_int_equal(pread(fd, all, (size_t)file_size(seg), 0), file_size(seg));
    assert_int_equal(rec_parse(all, (size_t)file_size(seg), &v), 0);
    off_t second = (off_t)v.total;
    uint8_t x = 0xff;
    assert_int_equal(pwrite(fd, &x, 1, second + REC_HDR_LEN + 3), 1);
    close(fd);
    free(all);
    off_t size = file_size(seg);
    shard_open(e, 0, 1, NULL); /* warns, keeps the first, never crashes */
    assert_int_equal(spool_shard_count(e->sh), 1 + 3);
    assert_int_equal(file_size(seg), size); /* older segment is not cut */
    shard_close(e);
    assert_int_equal(scan_check(e, b, 3).found, 3);
    assert_int_equal(scan_check(e, a, 4).found, 1);
    msgs_free(a, 4);
    msgs_free(b, 3);
}

static void test_group_commit(void **state)
{
    struct env *e = *state;
    enum { N = 100 };
    struct tmsg *ms = msgs_new(N, 6);

    loop_new_cur(e);
    shard_open(e, 0, 1, NULL);
    uint64_t before = spool_nwrites;
    for (int i = 0; i < N; i++)
        submit(e, &ms[i]);
    run_for(e, N);
    uint64_t writes = spool_nwrites - before;
    print_message("group commit: %d messages, %" PRIu64 " io_write_sync\n", N, writes);
    assert_true(writes >= 1 && writes <= 3);
    for (int i = 0; i < N; i++)
        assert_int_equal(ms[i].res, 0);
    shard_close(e);

    /* small batches: closes by size while another is in flight */
    struct spool_params p = {.batch_max_bytes = 8192, .segment_max_bytes = 64 * 1024};
    struct tmsg *m2 = msgs_new(N, 7);
    shard_open(e, 0, 1, &p);
    before = spool_nwrites;
    for (int w = 0; w < 10; w++) { /* waves of 10 (~25 KB each) */
        for (int i = 0; i < 10; i++)
            submit(e, &m2[w * 10 + i]);
        run_for(e, 10);
    }
    writes = spool_nwrites - before;
    print_message("small batches: %d messages, %" PRIu64 " io_write_sync\n", N, writes);
    /* each wave: one batch closed by size, the rest gathered meanwhile */
    assert_true(writes >= 20 && writes <= 40);
    shard_close(e);
    shard_open(e, 0, 1, &p);
    assert_int_equal(spool_shard_count(e->sh), 2 * N);
    shard_close(e);
    assert_int_equal(scan_check(e, m2, N).found, N);
    assert_int_equal(scan_check(e, ms, N).found, N);
    /* several segments were made (rotation) */
    char seg[512];
    last_segment(e, 0, seg, sizeof seg);
    unsigned n;
    assert_int_equal(sscanf(strrchr(seg, '/'), "/seg-%u", &n), 1);
    assert_true(n > 3);
    msgs_free(ms, N);
    msgs_free(m2, N);
}

static void test_batch_delay(void **state)
{
    struct env *e = *state;
    enum { N = 20 };
    struct tmsg *ms = msgs_new(N, 8);
    struct spool_params p = {.batch_delay_us = 3000};

    loop_new_cur(e);
    shard_open(e, 0, 1, &p);
    uint64_t before = spool_nwrites;
    for (int i = 0; i < N; i++)
        submit(e, &ms[i]);
    run_for(e, N);
    assert_true(spool_nwrites - before <= 2);
    shard_close(e);
    shard_open(e, 0, 1, &p);
    assert_int_equal(spool_shard_count(e->sh), N);
    shard_close(e);
    msgs_free(ms, N);
}

static void test_many_iovecs(void **state)
{
    struct env *e = *state;
    enum { NIOV = 2500 };
    struct tmsg *ms = msgs_new(1, 9);
    struct tmsg *m = &ms[0];
    free(m->data);
    m->len = NIOV * 3;
    m->data = malloc(m->len);
    for (size_t k = 0; k < m->len; k++)
        m->data[k] = (char)('a' + k % 23);
    struct iovec *iov = calloc(NIOV, sizeof *iov);
    for (int k = 0; k < NIOV; k++)
        iov[k] = (struct iovec){m->data + 3 * k, 3};

    loop_new_cur(e);
    shard_open(e, 0, 1, NULL);
    uint64_t before = spool_nwrites;
    struct spool_envelope env = {.sender = "sender@example.com", .rcpts = m->rcpts,
                                 .nrcpts = m->nrcpts, .helo = "client.example",
                                 .client_addr = "127.0.0.1",
                                 .auth_user = (m->len % 2) ? "alice" : NULL,
                                 .received = "Received: from client.example\r\n",
                                 .flags = SPOOL_F_8BITMIME,
                                 .received_at = 1735689600 + (int64_t)m->len};
    assert_int_equal(spool_submit(e->sh, &m->c, &env, iov, NIOV), 0);
    run_for(e, 1);
    assert_int_equal(m->res, 0);
    assert_int_equal(spool_nwrites - before, 3); /* 2502 iovecs in pieces of 1024 */
    shard_close(e);
    assert_int_equal(scan_check(e, ms, 1).found, 1);
    free(iov);
    msgs_free(ms, 1);
}

static void test_adoption(void **state)
{
    struct env *e = *state;
    struct tmsg *a = msgs_new(5, 10), *b = msgs_new(7, 11);

    loop_new_cur(e);
    shard_open(e, 0, 2, NULL);
    for (int i = 0; i < 5; i++)
        submit(e, &a[i]);
    run_for(e, 5);
    shard_close(e);
    shard_open(e, 1, 2, NULL);
    assert_int_equal(spool_shard_count(e->sh), 0);
    for (int i = 0; i < 7; i++)
        submit(e, &b[i]);
    run_for(e, 7);
    shard_close(e);

    shard_open(e, 0, 1, NULL); /* one reactor now: adopts shard-1 */
    assert_int_equal(spool_shard_count(e->sh), 12);
    /* marks on adopted messages go to shard-0's journal, and count */
    struct tmsg mk = {.c = {.cb = on_commit}};
    mk.c.owner = &mk;
    assert_int_equal(spool_mark(e->sh, &mk.c, b[0].c.id, -1, SPOOL_RCPT_DELETED, 0), 0);
    run_for(e, 1);
    assert_int_equal(mk.res, 0);
    shard_close(e);
    struct scan_exp x = scan_check(e, b, 7);
    assert_int_equal(x.found, 6);
    assert_int_equal(x.shards_seen, 1u << 1);
    x = scan_check(e, a, 5);
    assert_int_equal(x.found, 5);
    assert_int_equal(x.shards_seen, 1u << 0);

    /* back to two reactors: shard 1 sees the delete made by shard 0 */
    shard_open(e, 1, 2, NULL);
    assert_int_equal(spool_shard_count(e->sh), 6);
    shard_close(e);
    shard_open(e, 0, 3, NULL);
    assert_int_equal(spool_shard_count(e->sh), 5);
    shard_close(e);
    msgs_free(a, 5);
    msgs_free(b, 7);
}

static int fail_writes; /* next completions to turn into fail_err */
static int fail_err;
static int fail_hook(int fd, int res)
{
    if (fail_writes > 0) {
        fail_writes--;
        return fail_err;
    }
    return res;
}

static void error_case(struct env *e, int err)
{
    struct tmsg *bad = msgs_new(5, 12), *good = msgs_new(3, 13), *first = msgs_new(2, 14);

    shard_open(e, 0, 1, NULL);
    for (int i = 0; i < 2; i++)
        submit(e, &first[i]);
    run_for(e, 2);
    spool_write_res_hook = fail_hook;
    fail_writes = 1;
    fail_err = err;
    for (int i = 0; i < 5; i++)
        submit(e, &bad[i]);
    run_for(e, 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(bad[i].res, err);
    assert_int_equal(spool_shard_count(e->sh), 2);
    for (int i = 0; i < 3; i++)
        submit(e, &good[i]);
    run_for(e, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(good[i].res, 0);
    assert_int_equal(spool_shard_count(e->sh), 5);
    spool_write_res_hook = NULL;
    shard_close(e);

    /* the failed batch was really written (the hook lies after the fact),
     * yet recovery shows exactly the acknowledged messages */
    assert_int_equal(scan_check(e, bad, 5).found, 0);
    assert_int_equal(scan_check(e, good, 3).found, 3);
    assert_int_equal(scan_check(e, first, 2).found, 2);
    shard_open(e, 0, 1, NULL);
    assert_int_equal(spool_shard_count(e->sh), 5);
    shard_close(e);
    msgs_free(bad, 5);
    msgs_free(good, 3);
    msgs_free(first, 2);
}

static void test_enospc(void **state)
{
    struct env *e = *state;
    loop_new_cur(e);
    error_case(e, -ENOSPC);
}

static void test_eio(void **state)
{
    struct env *e = *state;
    loop_new_cur(e);
    error_case(e, -EIO);
}

static void test_journal(void **state)
{
    struct env *e = *state;
    struct tmsg *ms = msgs_new(4, 15); /* nrcpts: 1 + (i+15)%3 = 1,2,3,1 */
    struct tmsg mk[6];

    for (int i = 0; i < 6; i++) {
        memset(&mk[i], 0, sizeof mk[i]);
        mk[i].c.cb = on_commit;
        mk[i].c.owner = &mk[i];
    }
    loop_new_cur(e);
    shard_open(e, 0, 1, NULL);
    for (int i = 0; i < 4; i++)
        submit(e, &ms[i]);
    run_for(e, 4);
    assert_int_equal(ms[1].nrcpts, 2);
    assert_int_equal(ms[2].nrcpts, 3);

    assert_int_equal(spool_mark(e->sh, &mk[0].c, ms[0].c.id, -1, SPOOL_RCPT_DELETED, 0), 0);
    assert_int_equal(spool_mark(e->sh, &mk[1].c, ms[1].c.id, 0, SPOOL_RCPT_DELIVERED, 0), 0);
    assert_int_equal(spool_mark(e->sh, &mk[2].c, ms[1].c.id, 1, SPOOL_RCPT_DEFERRED, 4242), 0);
    assert_int_equal(spool_mark(e->sh, &mk[3].c, ms[2].c.id, -1, SPOOL_RCPT_FAILED, 0), 0);
    assert_int_equal(spool_mark(e->sh, NULL, ms[0].c.id, -1, SPOOL_RCPT_DELETED, 0), -ENOENT);
    assert_int_equal(spool_mark(e->sh, NULL, ms[3].c.id, 1, SPOOL_RCPT_FAILED, 0), -EINVAL);
    assert_int_equal(spool_mark(e->sh, NULL, ms[3].c.id, 0, SPOOL_RCPT_DELETED, 0), -EINVAL);
    assert_int_equal(spool_mark(e->sh, NULL, "nope", -1, SPOOL_RCPT_DELETED, 0), -EINVAL);
    assert_int_equal(spool_shard_count(e->sh), 2); /* at once, before durability */
    run_for(e, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(mk[i].res, 0);
    shard_close(e);

    struct scan_exp x = scan_check(e, ms, 4);
    assert_int_equal(x.found, 2);
    assert_int_equal(ms[0].seen, 0);
    assert_int_equal(ms[2].seen, 0);
    shard_open(e, 0, 1, NULL);
    assert_int_equal(spool_shard_count(e->sh), 2);
    struct smsg *m = (struct smsg *)idmap_get(&e->sh->idx, ms[1].c.id);
    assert_non_null(m);
    assert_int_equal(m->st[0], SPOOL_RCPT_DELIVERED);
    assert_int_equal(m->st[1], SPOOL_RCPT_DEFERRED);
    assert_int_equal(m->until[1], 4242);
    /* the last recipient fails: the message is final */
    assert_int_equal(spool_mark(e->sh, &mk[4].c, ms[1].c.id, 1, SPOOL_RCPT_FAILED, 0), 0);
    assert_int_equal(spool_shard_count(e->sh), 1);
    run_for(e, 1);
    shard_close(e);

    /* a torn journal tail is cut, the entries before it kept */
    char jp[128];
    snprintf(jp, sizeof jp, "%s/shard-0/journal", e->dir);
    off_t js = file_size(jp);
    assert_int_equal(js % JRN_ENTRY_LEN, 0);
    assert_int_equal(js, 5 * JRN_ENTRY_LEN);
    int fd = open(jp, O_WRONLY | O_APPEND);
    assert_int_equal(write(fd, "OSJ1 torn entry", 15), 15);
    close(fd);
    shard_open(e, 0, 1, NULL);
    assert_int_equal(spool_shard_count(e->sh), 1);
    assert_int_equal(file_size(jp), js);
    /* and new entries after it replay */
    assert_int_equal(spool_mark(e->sh, &mk[5].c, ms[3].c.id, 0, SPOOL_RCPT_DELIVERED, 0), 0);
    run_for(e, 1);
    shard_close(e);
    shard_open(e, 0, 1, NULL);
    assert_int_equal(spool_shard_count(e->sh), 0);
    shard_close(e);
    assert_int_equal(scan_check(e, ms, 4).found, 0);
    /* nothing live: every old segment went, only the fresh empty one is left */
    assert_int_equal(count_segments(e, 0), 1);
    msgs_free(ms, 4);
}

static bool seg_exists(struct env *e, unsigned n)
{
    char p[512];
    snprintf(p, sizeof p, "%s/shard-0/seg-%08u", e->dir, n);
    return access(p, F_OK) == 0;
}

static void test_segment_reap(void **state)
{
    struct env *e = *state;
    struct tmsg *ms = msgs_new(3, 17);
    struct spool_params p = {.segment_max_bytes = 1024};
    struct tmsg mk[2];

    for (int i = 0; i < 2; i++) {
        memset(&mk[i], 0, sizeof mk[i]);
        mk[i].c.cb = on_commit;
        mk[i].c.owner = &mk[i];
    }
    loop_new_cur(e);
    shard_open(e, 0, 1, &p); /* writes to seg-1 */
    for (int i = 0; i < 3; i++) { /* one message per segment */
        submit(e, &ms[i]);
        run_for(e, 1);
    }
    assert_true(seg_exists(e, 1) && seg_exists(e, 2) && seg_exists(e, 3));
    assert_int_equal(spool_mark(e->sh, &mk[0].c, ms[0].c.id, -1, SPOOL_RCPT_DELETED, 0), 0);
    assert_false(seg_exists(e, 1)); /* all final: gone */
    assert_int_equal(spool_mark(e->sh, &mk[1].c, ms[2].c.id, -1, SPOOL_RCPT_FAILED, 0), 0);
    assert_true(seg_exists(e, 3)); /* still being written to */
    run_for(e, 2);
    shard_close(e);
    shard_open(e, 0, 1, &p);
    assert_int_equal(spool_shard_count(e->sh), 1);
    assert_false(seg_exists(e, 3)); /* reaped at recovery */
    assert_true(seg_exists(e, 2));
    shard_close(e);
    assert_int_equal(scan_check(e, ms, 3).found, 1);
    assert_int_equal(ms[1].seen, 1);
    msgs_free(ms, 3);
}

static void test_journal_error(void **state)
{
    struct env *e = *state;
    struct tmsg *ms = msgs_new(2, 16);
    struct tmsg mk[2];

    for (int i = 0; i < 2; i++) {
        memset(&mk[i], 0, sizeof mk[i]);
        mk[i].c.cb = on_commit;
        mk[i].c.owner = &mk[i];
    }
    loop_new_cur(e);
    shard_open(e, 0, 1, NULL);
    for (int i = 0; i < 2; i++)
        submit(e, &ms[i]);
    run_for(e, 2);
    spool_write_res_hook = fail_hook;
    fail_writes = 1;
    fail_err = -ENOSPC;
    assert_int_equal(spool_mark(e->sh, &mk[0].c, ms[0].c.id, -1, SPOOL_RCPT_DELETED, 0), 0);
    run_for(e, 1);
    assert_int_equal(mk[0].res, -ENOSPC);
    assert_int_equal(spool_mark(e->sh, &mk[1].c, ms[1].c.id, -1, SPOOL_RCPT_DELETED, 0), 0);
    run_for(e, 1);
    assert_int_equal(mk[1].res, 0);
    spool_write_res_hook = NULL;
    shard_close(e);
    /* the failed delete did not reach the disk; the good one did */
    struct scan_exp x = scan_check(e, ms, 2);
    assert_int_equal(x.found, 1);
    assert_int_equal(ms[0].seen, 1);
    msgs_free(ms, 2);
}

/* --- kill -9 in the middle of load: every acknowledged message survives --- */

static int kill_wfd;
static struct spool_shard *kill_sh;

static void kill_on_commit(struct spool_commit *c, int res)
{
    struct tmsg *m = c->owner;
    char line[SPOOL_ID_LEN + 2];

    if (res != 0)
        _exit(3);
    memcpy(line, c->id, SPOOL_ID_LEN); /* acknowledged: tell the parent */
    line[SPOOL_ID_LEN] = '\n';
    if (write(kill_wfd, line, sizeof line - 1) != (ssize_t)sizeof line - 1)
        _exit(4);
    submit_raw(kill_sh, m);
}

static void kill_child(const char *dir, enum io_backend b)
{
    char err[256];
    struct io_loop *loop = io_loop_new(b, 0);
    struct spool_params p = {.batch_max_bytes = 64 * 1024, .segment_max_bytes = 256 * 1024};
    if (!loop || spool_shard_open(loop, dir, 0, 1, &p, &kill_sh, err, sizeof err) < 0)
        _exit(2);
    struct tmsg *ms = msgs_new(64, 18);
    for (int i = 0; i < 64; i++) {
        ms[i].c.cb = kill_on_commit;
        submit_raw(kill_sh, &ms[i]);
    }
    io_loop_run(loop);
    _exit(5);
}

static int kill_found(const struct spool_msg_info *mi, void *arg)
{
    struct idmap *found = arg;
    struct idmap_node *n = calloc(1, sizeof *n);
    memcpy(n->id, mi->id, SPOOL_ID_LEN + 1);
    if (!idmap_get(found, n->id))
        idmap_put(found, n);
    else
        free(n);
    return 0;
}

static void free_plain(struct idmap_node *n) { free(n); }

static void test_kill9(void **state)
{
    struct env *e = *state;
    int pfd[2];

    loop_new_cur(e); /* checks that the backend works here; the child makes its own */
    assert_int_equal(pipe(pfd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        kill_wfd = pfd[1];
        kill_child(e->dir, cur_backend);
    }
    close(pfd[1]);
    size_t cap = 4096, n = 0, acked = 0;
    char *buf = malloc(cap);
    bool killed = false;
    for (;;) {
        if (cap - n < 256)
            buf = realloc(buf, cap *= 2);
        ssize_t r = read(pfd[0], buf + n, cap - n);
        if (r <= 0)
            break;
        n += (size_t)r;
        if (!killed && n / (SPOOL_ID_LEN + 1) >= 2000) {
            kill(pid, SIGKILL);
            killed = true;
        }
    }
    close(pfd[0]);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    acked = n / (SPOOL_ID_LEN + 1);
    print_message("kill -9 after %zu acknowledged messages\n", acked);

    struct idmap found = {0};
    assert_int_equal(spool_scan(e->dir, kill_found, &found), 0);
    for (size_t i = 0; i < acked; i++) {
        char id[SPOOL_ID_LEN + 1];
        memcpy(id, buf + i * (SPOOL_ID_LEN + 1), SPOOL_ID_LEN);
        id[SPOOL_ID_LEN] = '\0';
        if (!idmap_get(&found, id))
            fail_msg("acknowledged message %s lost", id);
    }
    shard_open(e, 0, 1, NULL);
    assert_true(spool_shard_count(e->sh) >= acked);
    assert_int_equal(spool_shard_count(e->sh), found.n);
    shard_close(e);
    idmap_clear(&found, free_plain);
    free(buf);
}

/* Run every test with the loop backend in its prestate. */
#define BOTH(t)                                                                         \
    static void t##_uring(void **s) { cur_backend = IO_BACKEND_URING; t(s); }           \
    static void t##_epoll(void **s) { cur_backend = IO_BACKEND_EPOLL; t(s); }
BOTH(test_torn_tail)
BOTH(test_bad_record_older_segment)
BOTH(test_group_commit)
BOTH(test_batch_delay)
BOTH(test_many_iovecs)
BOTH(test_adoption)
BOTH(test_enospc)
BOTH(test_eio)
BOTH(test_journal)
BOTH(test_journal_error)
BOTH(test_submit_recover)
BOTH(test_segment_reap)
BOTH(test_kill9)

#define T(t) cmocka_unit_test_setup_teardown(t##_uring, setup, teardown), \
             cmocka_unit_test_setup_teardown(t##_epoll, setup, teardown)

int main(void)
{
    log_init("test_spool", LOG_LVL_WARN);
    const struct CMUnitTest tests[] = {
        T(test_submit_recover),
        T(test_torn_tail),
        T(test_bad_record_older_segment),
        T(test_group_commit),
        T(test_batch_delay),
        T(test_many_iovecs),
        T(test_adoption),
        T(test_enospc),
        T(test_eio),
        T(test_journal),
        T(test_journal_error),
        T(test_segment_reap),
        T(test_kill9),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
