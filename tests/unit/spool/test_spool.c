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

#include <time.h>

/* maint.c's seam (library) */
extern void (*spool_ckpt_hook)(int step);
extern void (*spool_compact_hook)(const char *id);
enum { CK_STEP_TMP_WRITTEN = 1, CK_STEP_TMP_SYNCED, CK_STEP_RENAMED, CK_STEP_DIR_SYNCED,
       CK_STEP_JOURNALS_GONE };

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <ftw.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "io/loop_internal.h"
#include "tests/unit/spool/v1.h"

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
    int idle_turns;
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

static void run_idle(struct env *e);

static int teardown(void **state)
{
    struct env *e = *state;
    spool_write_res_hook = NULL;
    if (e->sh && !spool_shard_idle(e->sh))
        run_idle(e); /* a test failed half-way */
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

static void run_idle(struct env *e);

static void shard_close(struct env *e)
{
    if (!spool_shard_idle(e->sh))
        run_idle(e);
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

static void on_idle_check(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct env *e = op->owner;
    if (spool_shard_idle(e->sh) || ++e->idle_turns > 20000) /* 20 s */
        io_loop_stop(e->loop);
    else
        io_timer_start(e->loop, op, 1, on_idle_check);
}

/* Run the loop until the shard has nothing of its own in flight. */
static void run_idle(struct env *e)
{
    struct io_op op;
    io_op_init(&op, e);
    e->idle_turns = 0;
    assert_int_equal(io_defer(e->loop, &op, on_idle_check), 0);
    assert_int_equal(io_loop_run(e->loop), 0);
    assert_true(spool_shard_idle(e->sh));
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
                                 .client_addr = "127.0.0.1", .headers = "",
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
        .headers = "Received: from client.example\r\n",
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
        assert_string_equal(mi->headers, "Received: from client.example\r\n");
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

static int count_segments(struct env *e, unsigned k, bool nonempty)
{
    char dir[128], p[512];
    struct stat st;
    int n = 0;
    snprintf(dir, sizeof dir, "%s/shard-%u", e->dir, k);
    DIR *d = opendir(dir);
    struct dirent *de;
    assert_non_null(d);
    while ((de = readdir(d))) {
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        n += strncmp(de->d_name, "seg-", 4) == 0 &&
             (!nonempty || (stat(p, &st) == 0 && st.st_size > 0));
    }
    closedir(d);
    return n;
}

/* Path of the newest non-empty journal of shard k. */
static void journal_path(struct env *e, unsigned k, char *out, size_t len)
{
    char dir[128];
    snprintf(dir, sizeof dir, "%s/shard-%u", e->dir, k);
    DIR *d = opendir(dir);
    struct dirent *de;
    unsigned long best = 0;
    bool found = false;
    assert_non_null(d);
    while ((de = readdir(d))) {
        unsigned long n;
        struct stat st;
        char p[512];
        if (sscanf(de->d_name, "journal-%lu", &n) != 1)
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        if (stat(p, &st) == 0 && st.st_size > 0 && (!found || n > best)) {
            best = n;
            found = true;
        }
    }
    closedir(d);
    assert_true(found);
    assert_true((size_t)snprintf(out, len, "%.128s/journal-%08lu", dir, best) < len);
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


static uint64_t corrupt_bytes(struct env *e, bool torn, int *files);

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

    /* A byte flipped in the last record, now that a snapshot lists it: not a
     * torn tail any more but an acknowledged record damaged.  It is reported
     * lost and quarantined, the earlier ones stay, nothing is cut. */
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
    assert_int_equal(file_size(seg), size);
    shard_close(e);
    int files;
    assert_true(corrupt_bytes(e, false, &files) > 0);
    assert_int_equal(files, 1);
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
    assert_int_equal(rec_parse(all, (size_t)file_size(seg), NULL, &v), 0);
    off_t second = (off_t)v.total;
    uint8_t x = 0xff;
    assert_int_equal(pwrite(fd, &x, 1, second + REC2_HDR_LEN + 3), 1);
    close(fd);
    free(all);
    off_t size = file_size(seg);
    shard_open(e, 0, 1, NULL); /* quarantines the bad one, keeps the others */
    assert_int_equal(spool_shard_count(e->sh), 3 + 3);
    assert_int_equal(file_size(seg), size); /* older segment is not cut */
    shard_close(e);
    assert_int_equal(scan_check(e, b, 3).found, 3);
    assert_int_equal(scan_check(e, a, 4).found, 3);
    assert_int_equal(a[1].seen, 0);
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
        run_idle(e); /* a spare segment is ready for the rotation */
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
                                 .headers = "Received: from client.example\r\n",
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
    assert_int_equal(m->r[0].st, SPOOL_RCPT_DELIVERED);
    assert_int_equal(m->r[1].st, SPOOL_RCPT_DEFERRED);
    assert_int_equal(m->r[1].next_at, 4242);
    /* the last recipient fails: the message is final */
    assert_int_equal(spool_mark(e->sh, &mk[4].c, ms[1].c.id, 1, SPOOL_RCPT_FAILED, 0), 0);
    assert_int_equal(spool_shard_count(e->sh), 1);
    run_for(e, 1);
    shard_close(e);

    /* a torn journal tail is skipped (never cut: no journal is appended to
     * after a restart), the entries before it kept */
    char jp[512];
    journal_path(e, 0, jp, sizeof jp);
    off_t js = file_size(jp);
    int fd = open(jp, O_WRONLY | O_APPEND);
    assert_int_equal(write(fd, "OSJ2 torn entry", 15), 15);
    close(fd);
    shard_open(e, 0, 1, NULL);
    assert_int_equal(spool_shard_count(e->sh), 1);
    /* the start-up snapshot replaced it */
    assert_int_equal(access(jp, F_OK), -1);
    (void)js;
    /* and new entries, in a newer journal, replay after it */
    assert_int_equal(spool_mark(e->sh, &mk[5].c, ms[3].c.id, 0, SPOOL_RCPT_DELIVERED, 0), 0);
    run_for(e, 1);
    shard_close(e);
    shard_open(e, 0, 1, NULL);
    assert_int_equal(spool_shard_count(e->sh), 0);
    shard_close(e);
    assert_int_equal(scan_check(e, ms, 4).found, 0);
    /* nothing live: every old segment went, only the fresh empty one (and
     * its spare) are left */
    assert_int_equal(count_segments(e, 0, true), 0);
    assert_true(count_segments(e, 0, false) <= 2);
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
        run_idle(e); /* the next spare segment is ready */
        submit(e, &ms[i]);
        run_for(e, 1);
    }
    assert_true(seg_exists(e, 1) && seg_exists(e, 2) && seg_exists(e, 3));
    assert_int_equal(spool_mark(e->sh, &mk[0].c, ms[0].c.id, -1, SPOOL_RCPT_DELETED, 0), 0);
    /* all final, but the delete is not durable yet: the record stays */
    assert_true(seg_exists(e, 1));
    assert_int_equal(spool_mark(e->sh, &mk[1].c, ms[2].c.id, -1, SPOOL_RCPT_FAILED, 0), 0);
    run_for(e, 2);
    run_idle(e);
    assert_false(seg_exists(e, 1)); /* gone once the journal entry is */
    assert_true(seg_exists(e, 3)); /* still being written to */
    shard_close(e);
    shard_open(e, 0, 1, &p);
    assert_int_equal(spool_shard_count(e->sh), 1);
    run_idle(e);
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
    /* The failed delete did not reach the journal, but the shard follows a
     * failed journal write with a snapshot: disk and memory agree again. */
    assert_int_equal(spool_shard_count(e->sh), 0);
    run_idle(e);
    shard_close(e);
    struct scan_exp x = scan_check(e, ms, 2);
    assert_int_equal(x.found, 0);
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


/* ------------------------------------------------- the delivery API */

static void mk_init(struct tmsg *mk, int n)
{
    for (int i = 0; i < n; i++) {
        memset(&mk[i], 0, sizeof mk[i]);
        mk[i].c.cb = on_commit;
        mk[i].c.owner = &mk[i];
    }
}

/* One message with DSN parameters and prepended headers. */
static const char *dsn_rc[] = {"a@example.org", "b@example.net", "c@example.com"};
static const uint8_t dsn_nf[] = {SPOOL_NOTIFY_SUCCESS | SPOOL_NOTIFY_FAILURE, 0,
                                 SPOOL_NOTIFY_NEVER};
static const char *dsn_oc[] = {"rfc822;a@example.org", NULL, "rfc822;C@EXAMPLE.COM"};

static struct spool_envelope dsn_env(void)
{
    return (struct spool_envelope){
        .sender = "s@example.com", .rcpts = dsn_rc, .nrcpts = 3, .helo = "h.example",
        .client_addr = "127.0.0.1",
        .headers = "Received: from h.example\r\nDKIM-Signature: v=1; d=x\r\n",
        .flags = SPOOL_F_SMTPUTF8, .received_at = 1735689600, .dsn_ret = SPOOL_RET_FULL,
        .dsn_envid = "ENV+2B1", .dsn_notify = dsn_nf, .dsn_orcpt = dsn_oc};
}

static void submit_dsn(struct env *e, struct tmsg *m, char *data, size_t len)
{
    struct spool_envelope env = dsn_env();
    for (size_t i = 0; i < len; i++)
        data[i] = (char)('a' + i % 26);
    memcpy(data + len - 2, "\r\n", 2);
    m->iov[0] = (struct iovec){data, len};
    m->c.cb = on_commit;
    m->c.owner = m;
    m->done = false;
    assert_int_equal(spool_submit(e->sh, &m->c, &env, m->iov, 1), 0);
}

static void check_view(struct env *e, const char *id, const char *data, size_t len)
{
    struct spool_msg_view v;
    assert_int_equal(spool_msg_open(e->sh, id, &v), 0);
    assert_string_equal(v.id, id);
    assert_int_equal(v.shard, 0);
    assert_string_equal(v.sender, "s@example.com");
    assert_int_equal(v.nrcpts, 3);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(v.rcpts[i], dsn_rc[i]);
        assert_int_equal(v.dsn_notify[i], dsn_nf[i]);
        if (dsn_oc[i])
            assert_string_equal(v.dsn_orcpt[i], dsn_oc[i]);
        else
            assert_null(v.dsn_orcpt[i]);
    }
    assert_string_equal(v.headers, "Received: from h.example\r\nDKIM-Signature: v=1; d=x\r\n");
    assert_int_equal(v.headers_len, strlen(v.headers));
    assert_int_equal(v.flags, SPOOL_F_SMTPUTF8);
    assert_int_equal(v.received_at, 1735689600);
    assert_int_equal(v.dsn_ret, SPOOL_RET_FULL);
    assert_string_equal(v.dsn_envid, "ENV+2B1");
    assert_null(v.bounce_of);
    assert_int_equal(v.size, len);
    assert_memory_equal(v.data, data, len);
    /* the same bytes through the fd, for sendfile/splice */
    char *buf = malloc(len);
    assert_int_equal(pread(v.fd, buf, len, (off_t)v.data_off), (ssize_t)len);
    assert_memory_equal(buf, data, len);
    free(buf);
    spool_msg_close(e->sh, &v);
}

static void test_view_dsn(void **state)
{
    struct env *e = *state;
    enum { LEN = 20000 };
    char *data = malloc(LEN);
    struct tmsg m = {0};
    struct spool_msg_view v;

    loop_new_cur(e);
    shard_open(e, 0, 1, NULL);
    submit_dsn(e, &m, data, LEN);
    run_for(e, 1);
    assert_int_equal(m.res, 0);
    check_view(e, m.c.id, data, LEN);
    assert_int_equal(spool_msg_open(e->sh, "AAAAAAAAAAAAAAAAAAAA", &v), -ENOENT);
    assert_int_equal(spool_msg_open(e->sh, "bad", &v), -ENOENT);
    /* two views of one message at once */
    struct spool_msg_view v2;
    assert_int_equal(spool_msg_open(e->sh, m.c.id, &v), 0);
    assert_int_equal(spool_msg_open(e->sh, m.c.id, &v2), 0);
    assert_int_equal(v.rcpt[1].state, SPOOL_RCPT_PENDING);
    assert_int_equal(v.rcpt[1].attempts, 0);
    assert_null(v.rcpt[1].reply);
    spool_msg_close(e->sh, &v2);
    spool_msg_close(e->sh, &v);
    shard_close(e);
    /* and after a restart */
    shard_open(e, 0, 1, NULL);
    check_view(e, m.c.id, data, LEN);
    shard_close(e);
    free(data);
}

static void test_view_pins(void **state)
{
    struct env *e = *state;
    struct spool_params p = {.segment_max_bytes = 1024};
    struct tmsg *ms = msgs_new(2, 30), mk[1];
    struct spool_msg_view v;

    mk_init(mk, 1);
    loop_new_cur(e);
    shard_open(e, 0, 1, &p);
    for (int i = 0; i < 2; i++) { /* one segment each: the first is not current */
        run_idle(e); /* the next spare segment is ready */
        submit(e, &ms[i]);
        run_for(e, 1);
    }
    assert_true(seg_exists(e, 1) && seg_exists(e, 2));
    assert_int_equal(spool_msg_open(e->sh, ms[0].c.id, &v), 0);
    assert_int_equal(spool_mark(e->sh, &mk[0].c, ms[0].c.id, -1, SPOOL_RCPT_DELIVERED, 0), 0);
    assert_int_equal(spool_shard_count(e->sh), 1);
    assert_int_equal(spool_msg_open(e->sh, ms[0].c.id, &(struct spool_msg_view){0}), -ENOENT);
    run_for(e, 1);
    run_idle(e);
    assert_true(seg_exists(e, 1)); /* the view pins it */
    assert_memory_equal(v.data, ms[0].data, ms[0].len);
    spool_msg_close(e->sh, &v);
    run_idle(e);
    assert_false(seg_exists(e, 1));
    shard_close(e);
    msgs_free(ms, 2);
}

static void test_attempts(void **state)
{
    struct env *e = *state;
    struct tmsg m = {0}, mk[6];
    char *data = malloc(3000);
    const int64_t T = 1800000000;
    struct spool_rcpt_info ri;

    mk_init(mk, 6);
    loop_new_cur(e);
    shard_open(e, 0, 1, NULL);
    submit_dsn(e, &m, data, 3000);
    run_for(e, 1);
    const char *id = m.c.id;
    struct spool_attempt a = {.state = SPOOL_RCPT_DEFERRED, .next_at = T + 600, .at = T,
                              .reply = "451 4.7.1 try\r\nlater \x01", .reply_len = 22};
    assert_int_equal(spool_attempt(e->sh, &mk[0].c, id, 0, &a), 0);
    a = (struct spool_attempt){.state = SPOOL_RCPT_DEFERRED, .next_at = T + 1200,
                               .at = T + 600, .reply = "452 full", .reply_len = 8};
    assert_int_equal(spool_attempt(e->sh, &mk[1].c, id, 0, &a), 0);
    a = (struct spool_attempt){.state = SPOOL_RCPT_DELIVERED, .at = T + 650,
                               .reply = "250 ok", .reply_len = 6};
    assert_int_equal(spool_attempt(e->sh, &mk[2].c, id, 1, &a), 0);
    assert_int_equal(spool_attempt(e->sh, NULL, id, 1, &a), -EALREADY);
    a = (struct spool_attempt){.state = SPOOL_RCPT_DEFERRED, .next_at = T + 900,
                               .at = T + 700};
    assert_int_equal(spool_attempt(e->sh, &mk[3].c, id, -1, &a), 0); /* 0 and 2 */
    assert_int_equal(spool_msg_flags(e->sh, &mk[4].c, id, SPOOL_MF_DELAY_WARNED), 0);
    a.state = SPOOL_RCPT_PENDING;
    assert_int_equal(spool_attempt(e->sh, NULL, id, 0, &a), -EINVAL);
    a.state = SPOOL_RCPT_DEFERRED;
    assert_int_equal(spool_attempt(e->sh, NULL, id, 3, &a), -EINVAL);
    assert_int_equal(spool_attempt(e->sh, NULL, "AAAAAAAAAAAAAAAAAAAA", 0, &a), -ENOENT);
    assert_int_equal(spool_msg_flags(e->sh, NULL, "AAAAAAAAAAAAAAAAAAAA", 1), -ENOENT);
    run_for(e, 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(mk[i].res, 0);

    for (int round = 0; round < 2; round++) {
        assert_int_equal(spool_rcpt_get(e->sh, id, 0, &ri), 0);
        assert_int_equal(ri.state, SPOOL_RCPT_DEFERRED);
        assert_int_equal(ri.attempts, 3);
        assert_int_equal(ri.last_at, T + 700);
        assert_int_equal(ri.next_at, T + 900);
        assert_null(ri.reply); /* the last attempt gave none */
        assert_int_equal(spool_rcpt_get(e->sh, id, 1, &ri), 0);
        assert_int_equal(ri.state, SPOOL_RCPT_DELIVERED);
        assert_int_equal(ri.attempts, 1);
        assert_int_equal(ri.last_at, T + 650);
        assert_string_equal(ri.reply, "250 ok");
        assert_int_equal(spool_rcpt_get(e->sh, id, 2, &ri), 0);
        assert_int_equal(ri.attempts, 1);
        assert_int_equal(ri.state, SPOOL_RCPT_DEFERRED);
        assert_int_equal(spool_rcpt_get(e->sh, id, 3, &ri), -EINVAL);
        struct spool_msg_view v;
        assert_int_equal(spool_msg_open(e->sh, id, &v), 0);
        assert_int_equal(v.msg_flags, SPOOL_MF_DELAY_WARNED);
        assert_int_equal(v.rcpt[0].attempts, 3);
        spool_msg_close(e->sh, &v);
        shard_close(e);
        shard_open(e, 0, 1, NULL); /* the same after recovery */
    }
    /* the escaped reply of an earlier attempt, as stored */
    a = (struct spool_attempt){.state = SPOOL_RCPT_DEFERRED, .next_at = T + 2000,
                               .at = T + 1000, .reply = "451 4.7.1 try\r\nlater \x01",
                               .reply_len = 22};
    assert_int_equal(spool_attempt(e->sh, &mk[5].c, id, 2, &a), 0);
    run_for(e, 1);
    shard_close(e);
    shard_open(e, 0, 1, NULL);
    assert_int_equal(spool_rcpt_get(e->sh, id, 2, &ri), 0);
    assert_string_equal(ri.reply, "451 4.7.1 try\\r\\nlater \\x01");
    assert_int_equal(ri.attempts, 2);
    shard_close(e);
    free(data);
}

static int ready_calls;
static bool ready_stop;
static void on_ready_cb(struct spool_shard *sh, void *arg)
{
    struct env *e = arg;
    ready_calls++;
    if (ready_stop)
        io_loop_stop(e->loop);
}

static void test_due(void **state)
{
    struct env *e = *state;
    enum { N = 5 };
    struct tmsg *ms = msgs_new(N, 31), mk[2];
    char id[SPOOL_ID_LEN + 1];
    int64_t now = 1800000000;

    mk_init(mk, 2);
    loop_new_cur(e);
    shard_open(e, 0, 1, NULL);
    ready_calls = 0;
    ready_stop = false;
    spool_set_ready_cb(e->sh, on_ready_cb, e);
    assert_int_equal(spool_due_earliest(e->sh), INT64_MAX);
    assert_int_equal(spool_due_next(e->sh, now, id), 0);
    for (int i = 0; i < N; i++)
        submit(e, &ms[i]);
    run_for(e, N);
    assert_int_equal(ready_calls, 1); /* once for the batch */
    assert_int_equal(spool_due_earliest(e->sh), 0);
    for (int i = 0; i < N; i++) { /* oldest first: ids sort by time and sequence */
        assert_int_equal(spool_due_next(e->sh, now, id), 1);
        assert_string_equal(id, ms[i].c.id);
    }
    assert_int_equal(spool_due_next(e->sh, now, id), 0); /* all checked out */
    assert_int_equal(spool_due_earliest(e->sh), INT64_MAX);

    struct spool_attempt a = {.state = SPOOL_RCPT_DEFERRED, .next_at = now + 100, .at = now};
    assert_int_equal(spool_attempt(e->sh, NULL, ms[0].c.id, -1, &a), 0);
    spool_due_release(e->sh, ms[0].c.id);
    assert_int_equal(spool_due_earliest(e->sh), now + 100);
    assert_int_equal(spool_due_next(e->sh, now, id), 0);
    spool_due_release(e->sh, ms[1].c.id); /* untouched: due again at once */
    spool_due_release(e->sh, ms[1].c.id); /* twice: no-op */
    assert_int_equal(spool_due_next(e->sh, now, id), 1);
    assert_string_equal(id, ms[1].c.id);
    assert_int_equal(spool_mark(e->sh, &mk[0].c, ms[2].c.id, -1, SPOOL_RCPT_DELIVERED, 0), 0);
    spool_due_release(e->sh, ms[2].c.id); /* left the index: no-op */
    assert_int_equal(spool_shard_count(e->sh), N - 1);
    spool_due_release(e->sh, ms[3].c.id);
    spool_due_release(e->sh, ms[4].c.id);
    spool_due_release(e->sh, ms[1].c.id);
    assert_int_equal(spool_due_next(e->sh, now + 100, id), 1);
    assert_string_equal(id, ms[1].c.id);
    assert_int_equal(spool_due_next(e->sh, now + 100, id), 1);
    assert_string_equal(id, ms[3].c.id);
    assert_int_equal(spool_due_next(e->sh, now + 100, id), 1);
    assert_string_equal(id, ms[4].c.id);
    assert_int_equal(spool_due_next(e->sh, now + 99, id), 0);
    assert_int_equal(spool_due_next(e->sh, now + 100, id), 1);
    assert_string_equal(id, ms[0].c.id);
    for (int i = 0; i < N; i++)
        spool_due_release(e->sh, ms[i].c.id);
    run_for(e, 1);

    /* a restart keys the heap from the recovered states */
    shard_close(e);
    shard_open(e, 0, 1, NULL);
    spool_set_ready_cb(e->sh, on_ready_cb, e);
    assert_int_equal(spool_due_earliest(e->sh), 0);
    int got = 0;
    while (spool_due_next(e->sh, now, id) == 1) {
        assert_string_not_equal(id, ms[0].c.id);
        got++;
    }
    assert_int_equal(got, 3);
    assert_int_equal(spool_due_earliest(e->sh), now + 100);

    /* queue flush: everything due now, and the scheduler is woken */
    ready_calls = 0;
    ready_stop = true;
    assert_int_equal(spool_reschedule(e->sh, NULL, now), 4);
    assert_int_equal(ready_calls, 0); /* never inside the call */
    assert_int_equal(io_loop_run(e->loop), 0);
    assert_int_equal(ready_calls, 1);
    assert_int_equal(spool_due_earliest(e->sh), now);
    assert_int_equal(spool_due_next(e->sh, now, id), 1);
    assert_string_equal(id, ms[0].c.id);
    assert_int_equal(spool_reschedule(e->sh, "AAAAAAAAAAAAAAAAAAAA", now), -ENOENT);
    spool_due_release(e->sh, ms[0].c.id);
    assert_int_equal(spool_reschedule(e->sh, ms[0].c.id, now + 5000), 1);
    assert_int_equal(io_loop_run(e->loop), 0);
    assert_int_equal(spool_due_earliest(e->sh), now + 5000);
    ready_stop = false;
    shard_close(e);
    msgs_free(ms, N);
}

static void test_due_adopted(void **state)
{
    struct env *e = *state;
    struct tmsg *a = msgs_new(2, 32), *b = msgs_new(3, 33);
    char id[SPOOL_ID_LEN + 1];

    loop_new_cur(e);
    shard_open(e, 1, 2, NULL);
    for (int i = 0; i < 3; i++)
        submit(e, &b[i]);
    run_for(e, 3);
    shard_close(e);
    shard_open(e, 0, 1, NULL); /* adopts shard-1 */
    for (int i = 0; i < 2; i++)
        submit(e, &a[i]);
    run_for(e, 2);
    int n = 0, from1 = 0;
    while (spool_due_next(e->sh, 1800000000, id) == 1) {
        n++;
        for (int i = 0; i < 3; i++)
            from1 += strcmp(id, b[i].c.id) == 0;
        struct spool_msg_view v;
        assert_int_equal(spool_msg_open(e->sh, id, &v), 0);
        assert_int_equal(v.shard, from1 && strcmp(id, b[0].c.id) == 0 ? 1 : v.shard);
        spool_msg_close(e->sh, &v);
    }
    assert_int_equal(n, 5);
    assert_int_equal(from1, 3);
    shard_close(e);
    msgs_free(a, 2);
    msgs_free(b, 3);
}

static void bounce_env(struct spool_envelope *env, struct iovec *iov)
{
    static const char *brc[] = {"s@example.com"};
    *env = (struct spool_envelope){.sender = "", .rcpts = brc, .nrcpts = 1,
                                   .helo = "", .client_addr = "", .headers = "",
                                   .received_at = 1735689700};
    *iov = (struct iovec){"Subject: Undelivered Mail\r\n\r\nsorry\r\n", 37};
}

static void test_bounce(void **state)
{
    struct env *e = *state;
    struct tmsg m = {0}, bm[3], mk[3];
    char *data = malloc(2000);
    struct spool_envelope benv;
    struct iovec biov;
    struct spool_rcpt_info ri;
    uint32_t idx[2] = {2, 0};

    mk_init(bm, 3);
    mk_init(mk, 3);
    bounce_env(&benv, &biov);
    loop_new_cur(e);
    shard_open(e, 0, 1, NULL);
    submit_dsn(e, &m, data, 2000);
    run_for(e, 1);
    const char *id = m.c.id;

    assert_int_equal(spool_submit_bounce(e->sh, &bm[0].c, "AAAAAAAAAAAAAAAAAAAA", idx, 2,
                                         &benv, &biov, 1), -ENOENT);
    assert_int_equal(spool_submit_bounce(e->sh, &bm[0].c, id, idx, 0, &benv, &biov, 1),
                     -EINVAL);
    assert_int_equal(spool_submit_bounce(e->sh, &bm[0].c, id, (uint32_t[]){3}, 1, &benv,
                                         &biov, 1), -EINVAL);
    assert_int_equal(spool_submit_bounce(e->sh, &bm[0].c, id, (uint32_t[]){1, 1}, 2, &benv,
                                         &biov, 1), -EINVAL);
    assert_int_equal(spool_submit_bounce(e->sh, &bm[0].c, id, idx, 2, &benv, &biov, 1), 0);
    /* until durable: shown as failed, not bounced twice, not due for them */
    assert_int_equal(spool_submit_bounce(e->sh, &bm[1].c, id, (uint32_t[]){0}, 1, &benv,
                                         &biov, 1), -EALREADY);
    assert_int_equal(spool_rcpt_get(e->sh, id, 0, &ri), 0);
    assert_int_equal(ri.state, SPOOL_RCPT_FAILED);
    run_for(e, 1);
    assert_int_equal(bm[0].res, 0);
    const char *bid = bm[0].c.id;
    assert_int_equal(spool_shard_count(e->sh), 2);
    assert_int_equal(spool_rcpt_get(e->sh, id, 0, &ri), 0);
    assert_int_equal(ri.state, SPOOL_RCPT_FAILED);
    assert_int_equal(spool_rcpt_get(e->sh, id, 1, &ri), 0);
    assert_int_equal(ri.state, SPOOL_RCPT_PENDING);
    assert_int_equal(spool_rcpt_get(e->sh, id, 2, &ri), 0);
    assert_int_equal(ri.state, SPOOL_RCPT_FAILED);
    struct spool_msg_view v;
    assert_int_equal(spool_msg_open(e->sh, bid, &v), 0);
    assert_string_equal(v.bounce_of, id);
    assert_int_equal(v.bounce_nrcpts, 2);
    assert_int_equal(v.bounce_rcpts[0], 2);
    assert_int_equal(v.bounce_rcpts[1], 0);
    assert_string_equal(v.sender, "");
    assert_memory_equal(v.data, biov.iov_base, biov.iov_len);
    spool_msg_close(e->sh, &v);
    run_idle(e);
    shard_close(e);

    /* The record alone carries the failure: without any journal the
     * recipients are still failed after a restart. */
    char dir[128];
    snprintf(dir, sizeof dir, "%s/shard-0", e->dir);
    DIR *d = opendir(dir);
    struct dirent *de;
    while ((de = readdir(d)))
        if (strncmp(de->d_name, "journal", 7) == 0)
            assert_int_equal(unlinkat(dirfd(d), de->d_name, 0), 0);
    closedir(d);
    shard_open(e, 0, 1, NULL);
    assert_int_equal(spool_shard_count(e->sh), 2);
    assert_int_equal(spool_rcpt_get(e->sh, id, 0, &ri), 0);
    assert_int_equal(ri.state, SPOOL_RCPT_FAILED);
    assert_int_equal(spool_rcpt_get(e->sh, id, 1, &ri), 0);
    assert_int_equal(ri.state, SPOOL_RCPT_PENDING);
    assert_int_equal(spool_rcpt_get(e->sh, id, 2, &ri), 0);
    assert_int_equal(ri.state, SPOOL_RCPT_FAILED);

    /* A failed write: no bounce, no failure, and it can be tried again. */
    spool_write_res_hook = fail_hook;
    fail_writes = 1;
    fail_err = -EIO;
    assert_int_equal(spool_submit_bounce(e->sh, &bm[1].c, id, (uint32_t[]){1}, 1, &benv,
                                         &biov, 1), 0);
    run_for(e, 1);
    spool_write_res_hook = NULL;
    assert_int_equal(bm[1].res, -EIO);
    assert_int_equal(spool_rcpt_get(e->sh, id, 1, &ri), 0);
    assert_int_equal(ri.state, SPOOL_RCPT_PENDING);
    assert_int_equal(spool_shard_count(e->sh), 2);
    /* Bouncing the last recipient ends the original. */
    assert_int_equal(spool_submit_bounce(e->sh, &bm[2].c, id, (uint32_t[]){1}, 1, &benv,
                                         &biov, 1), 0);
    run_for(e, 1);
    assert_int_equal(bm[2].res, 0);
    assert_int_equal(spool_shard_count(e->sh), 2); /* two bounces */
    assert_int_equal(spool_msg_open(e->sh, id, &v), -ENOENT);
    /* the bounces are delivered: nothing is left, even after a restart */
    assert_int_equal(spool_mark(e->sh, &mk[0].c, bid, 0, SPOOL_RCPT_DELIVERED, 0), 0);
    assert_int_equal(spool_mark(e->sh, &mk[1].c, bm[2].c.id, 0, SPOOL_RCPT_DELIVERED, 0), 0);
    run_for(e, 2);
    assert_int_equal(spool_shard_count(e->sh), 0);
    shard_close(e);
    shard_open(e, 0, 1, NULL);
    assert_int_equal(spool_shard_count(e->sh), 0);
    shard_close(e);
    free(data);
}

struct each_exp {
    int n, out;
    char ids[8][SPOOL_ID_LEN + 1];
};

static int each_cb(const struct spool_msg_info *mi, void *arg)
{
    struct each_exp *x = arg;
    assert_null(mi->data);
    assert_string_equal(mi->sender, "sender@example.com");
    assert_true(mi->nrcpts >= 1);
    assert_int_equal(mi->rcpt_state[0], SPOOL_RCPT_PENDING);
    assert_int_equal(mi->rcpt[0].attempts, 0);
    memcpy(x->ids[x->n++], mi->id, SPOOL_ID_LEN + 1);
    x->out += mi->checked_out;
    return 0;
}

static void test_foreach(void **state)
{
    struct env *e = *state;
    struct tmsg *ms = msgs_new(4, 34);
    char id[SPOOL_ID_LEN + 1];
    struct each_exp x = {0};

    loop_new_cur(e);
    shard_open(e, 0, 1, NULL);
    for (int i = 0; i < 4; i++)
        submit(e, &ms[i]);
    run_for(e, 4);
    assert_int_equal(spool_due_next(e->sh, 0, id), 1);
    assert_int_equal(spool_foreach(e->sh, each_cb, &x), 0);
    assert_int_equal(x.n, 4);
    assert_int_equal(x.out, 1);
    for (int i = 0; i < 4; i++) {
        bool found = false;
        for (int k = 0; k < 4; k++)
            found |= strcmp(x.ids[k], ms[i].c.id) == 0;
        assert_true(found);
    }
    spool_due_release(e->sh, id);
    shard_close(e);
    msgs_free(ms, 4);
}

static void write_file(const char *path, const void *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0640);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, buf, len), (ssize_t)len);
    close(fd);
}

/* A spool written by the version-1 formats is read, marks and all. */
static void test_v1_compat(void **state)
{
    struct env *e = *state;
    const char *r1[] = {"one@example.org"}, *r2[] = {"a@example.org", "b@example.org"};
    const char *ids[3] = {"V1AAAAAAAAAAAAAAAAAA", "V1BBBBBBBBBBBBBBBBBB",
                          "V1CCCCCCCCCCCCCCCCCC"};
    char path[256];
    size_t t[3], tot = 0;
    uint8_t *rec[3];
    struct spool_rcpt_info ri;

    rec[0] = v1_record(ids[0], "x@example.com", r1, 1, "Received: a\r\n", "A\r\n", &t[0]);
    rec[1] = v1_record(ids[1], "y@example.com", r2, 2, "Received: b\r\n", "Bee\r\n", &t[1]);
    rec[2] = v1_record(ids[2], "z@example.com", r1, 1, "Received: c\r\n", "C\r\n", &t[2]);
    uint8_t *seg = malloc(t[0] + t[1] + t[2]);
    for (int i = 0; i < 3; i++) {
        memcpy(seg + tot, rec[i], t[i]);
        tot += t[i];
        free(rec[i]);
    }
    snprintf(path, sizeof path, "%s/shard-0", e->dir);
    assert_int_equal(mkdir(path, 0750), 0);
    snprintf(path, sizeof path, "%s/shard-0/seg-00000001", e->dir);
    write_file(path, seg, tot);
    free(seg);
    uint8_t j[3 * JRN_ENTRY_LEN];
    v1_entry(j, ids[0], 0, JRN_DELIVERED, 0);
    v1_entry(j + JRN_ENTRY_LEN, ids[1], 1, JRN_DEFERRED, 77);
    v1_entry(j + 2 * JRN_ENTRY_LEN, ids[2], -1, JRN_DELETED, 0);
    snprintf(path, sizeof path, "%s/shard-0/journal", e->dir);
    write_file(path, j, sizeof j);

    loop_new_cur(e);
    for (int round = 0; round < 2; round++) {
        shard_open(e, 0, 1, NULL);
        assert_int_equal(spool_shard_count(e->sh), 1);
        assert_int_equal(spool_rcpt_get(e->sh, ids[1], 0, &ri), 0);
        assert_int_equal(ri.state, SPOOL_RCPT_PENDING);
        assert_int_equal(spool_rcpt_get(e->sh, ids[1], 1, &ri), 0);
        assert_int_equal(ri.state, SPOOL_RCPT_DEFERRED);
        assert_int_equal(ri.next_at, 77);
        struct spool_msg_view v;
        assert_int_equal(spool_msg_open(e->sh, ids[1], &v), 0);
        assert_string_equal(v.headers, "Received: b\r\n");
        assert_string_equal(v.sender, "y@example.com");
        assert_int_equal(v.size, 5);
        assert_memory_equal(v.data, "Bee\r\n", 5);
        assert_int_equal(v.dsn_notify[1], 0);
        spool_msg_close(e->sh, &v);
        shard_close(e);
    }
    /* new marks on a version-1 record */
    struct tmsg mk[1];
    mk_init(mk, 1);
    shard_open(e, 0, 1, NULL);
    assert_int_equal(spool_mark(e->sh, &mk[0].c, ids[1], -1, SPOOL_RCPT_FAILED, 0), 0);
    run_for(e, 1);
    shard_close(e);
    shard_open(e, 0, 1, NULL);
    assert_int_equal(spool_shard_count(e->sh), 0);
    shard_close(e);
}


/* ------------------------------------------------- corruption (step 2) */

/* Offsets, lengths and ids of the records of an intact segment file. */
struct recmap {
    int n;
    uint64_t off[64], len[64];
    char id[64][SPOOL_ID_LEN + 1];
};

static void map_records(const char *path, struct recmap *rm)
{
    size_t len = (size_t)file_size(path);
    uint8_t *buf = malloc(len ? len : 1);
    int fd = open(path, O_RDONLY);
    assert_int_equal(pread(fd, buf, len, 0), (ssize_t)len);
    close(fd);
    rm->n = 0;
    for (uint64_t off = 0; off < len;) {
        struct rec_view v;
        assert_int_equal(rec_parse(buf + off, len - off, NULL, &v), 0);
        assert_true(rm->n < 64);
        rm->off[rm->n] = off;
        rm->len[rm->n] = v.total;
        memcpy(rm->id[rm->n], v.id, SPOOL_ID_LEN + 1);
        rm->n++;
        off += v.total;
    }
    free(buf);
}

static void flip(const char *path, uint64_t off, uint8_t x)
{
    int fd = open(path, O_RDWR);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, (off_t)off), 1);
    b ^= x;
    assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
    close(fd);
}

static void zero(const char *path, uint64_t off, size_t n)
{
    int fd = open(path, O_RDWR);
    char *z = calloc(1, n);
    assert_int_equal(pwrite(fd, z, n, (off_t)off), (ssize_t)n);
    free(z);
    close(fd);
}

/* Bytes in <spool>/corrupt, torn tails apart. */
static uint64_t corrupt_bytes(struct env *e, bool torn, int *files)
{
    char dir[128], p[512];
    uint64_t n = 0;
    snprintf(dir, sizeof dir, "%s/corrupt", e->dir);
    DIR *d = opendir(dir);
    struct dirent *de;
    *files = 0;
    if (!d)
        return 0;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || (strstr(de->d_name, "-torn") != NULL) != torn)
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        n += (uint64_t)file_size(p);
        (*files)++;
    }
    closedir(d);
    return n;
}

/* The ids spool_scan reports must be exactly want[0..n). */
struct idset {
    int n;
    char (*ids)[SPOOL_ID_LEN + 1];
    int found, extra;
};

static int idset_cb(const struct spool_msg_info *mi, void *arg)
{
    struct idset *x = arg;
    for (int i = 0; i < x->n; i++)
        if (strcmp(x->ids[i], mi->id) == 0) {
            x->found++;
            return 0;
        }
    x->extra++;
    return 0;
}

static void expect_ids(struct env *e, char (*ids)[SPOOL_ID_LEN + 1], int n)
{
    struct idset x = {n, ids, 0, 0};
    assert_int_equal(spool_scan(e->dir, idset_cb, &x), 0);
    assert_int_equal(x.found, n);
    assert_int_equal(x.extra, 0);
    shard_open(e, 0, 1, NULL);
    assert_int_equal(spool_shard_count(e->sh), n);
    for (int i = 0; i < n; i++)
        assert_non_null(idmap_get(&e->sh->idx, ids[i]));
    shard_close(e);
}

enum { C_HEAD, C_MIDDLE, C_HDR_MIDDLE, C_TAIL, C_ZERO4K };

static void corrupt_case(struct env *e, int kind)
{
    enum { N = 12 };
    struct tmsg *ms = msgs_new(N, 40 + kind);
    char seg[512];
    struct recmap rm;
    char want[N][SPOOL_ID_LEN + 1];
    int nwant = 0, files;
    uint64_t lo, hi;

    shard_open(e, 0, 1, NULL);
    for (int i = 0; i < N; i++)
        submit(e, &ms[i]);
    run_for(e, N);
    shard_close(e);
    last_segment(e, 0, seg, sizeof seg);
    map_records(seg, &rm);
    assert_int_equal(rm.n, N);
    switch (kind) {
    case C_HEAD: /* a length in the first header */
        lo = rm.off[0] + 9;
        hi = lo + 1;
        flip(seg, lo, 0x40);
        break;
    case C_MIDDLE: /* the data of the sixth */
        lo = rm.off[5] + rm.len[5] - 20;
        hi = lo + 1;
        flip(seg, lo, 0x01);
        break;
    case C_HDR_MIDDLE: /* the magic of the seventh: its length is lost too */
        lo = rm.off[6];
        hi = lo + 1;
        flip(seg, lo, 0xff);
        break;
    case C_TAIL: /* the last record */
        lo = rm.off[N - 1] + rm.len[N - 1] / 2;
        hi = lo + 1;
        flip(seg, lo, 0x08);
        break;
    default: /* a zeroed 4 KiB block from inside the fifth */
        lo = rm.off[4] + 100;
        hi = lo + 4096;
        assert_true(hi < rm.off[N - 1]);
        zero(seg, lo, 4096);
        break;
    }
    uint64_t bad = 0;
    for (int i = 0; i < N; i++) {
        if (rm.off[i] + rm.len[i] <= lo || rm.off[i] >= hi)
            memcpy(want[nwant++], rm.id[i], SPOOL_ID_LEN + 1);
        else
            bad += rm.len[i];
    }
    assert_true(nwant < N);
    expect_ids(e, want, nwant);
    if (kind == C_TAIL) {
        assert_int_equal(corrupt_bytes(e, true, &files), bad); /* copied, then cut */
        assert_int_equal(files, 1);
        assert_int_equal(file_size(seg), (off_t)rm.off[N - 1]);
    } else {
        assert_int_equal(corrupt_bytes(e, false, &files), bad);
        assert_int_equal(files, 1);
        assert_int_equal(corrupt_bytes(e, true, &files), 0);
    }
    /* again: the same result, nothing quarantined twice */
    expect_ids(e, want, nwant);
    assert_int_equal(corrupt_bytes(e, kind == C_TAIL, &files), bad);
    assert_int_equal(files, 1);
    msgs_free(ms, N);
}

static void test_corrupt_segment(void **state)
{
    struct env *e = *state;
    loop_new_cur(e);
    for (int kind = C_HEAD; kind <= C_ZERO4K; kind++) {
        char sub[64];
        /* each case in a fresh spool */
        snprintf(sub, sizeof sub, "/case%d", kind);
        if (kind > C_HEAD) {
            nftw(e->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
            assert_int_equal(mkdir(e->dir, 0700), 0);
        }
        corrupt_case(e, kind);
    }
}

/* A bad record in a segment that is not the last: nothing is cut. */
static void test_corrupt_older_segment(void **state)
{
    struct env *e = *state;
    struct tmsg *a = msgs_new(6, 50), *b = msgs_new(3, 51);
    char seg[512];
    struct recmap rm;
    char want[9][SPOOL_ID_LEN + 1];
    int n = 0;

    loop_new_cur(e);
    shard_open(e, 0, 1, NULL);
    for (int i = 0; i < 6; i++)
        submit(e, &a[i]);
    run_for(e, 6);
    shard_close(e);
    last_segment(e, 0, seg, sizeof seg);
    map_records(seg, &rm);
    shard_open(e, 0, 1, NULL);
    for (int i = 0; i < 3; i++)
        submit(e, &b[i]);
    run_for(e, 3);
    shard_close(e);
    off_t size = file_size(seg);
    /* the tail of the older segment: nothing valid after it, yet not torn */
    flip(seg, rm.off[5] + 30, 0x10);
    for (int i = 0; i < 5; i++)
        memcpy(want[n++], rm.id[i], SPOOL_ID_LEN + 1);
    for (int i = 0; i < 3; i++)
        memcpy(want[n++], b[i].c.id, SPOOL_ID_LEN + 1);
    expect_ids(e, want, n);
    assert_int_equal(file_size(seg), size);
    int files;
    assert_int_equal(corrupt_bytes(e, false, &files), rm.len[5]);
    msgs_free(a, 6);
    msgs_free(b, 3);
}

/*
 * Message data is the sender's: it may hold a well-formed record with
 * correct crcs.  After the header of the message holding it is damaged,
 * resynchronising must not take it for a stored message.
 */
static void test_corrupt_forged(void **state)
{
    struct env *e = *state;
    struct tmsg *ms = msgs_new(3, 52);
    static const uint8_t bad_key[REC_KEY_LEN] = "not-the-dir-key!";
    static const char *frc[] = {"victim@example.org"};
    struct spool_envelope fenv = {.sender = "forged@example.com", .rcpts = frc, .nrcpts = 1,
                                  .helo = "x", .client_addr = "x", .auth_user = "admin",
                                  .headers = ""};
    struct rec_env_in in = {.env = &fenv};
    size_t el = rec_env_size(&in), t2, t1;
    const char *fdata = "Subject: forged\r\n\r\nrelay me\r\n";
    struct iovec fiov = {(void *)fdata, strlen(fdata)};
    t2 = REC2_HDR_LEN + el + fiov.iov_len;
    t2 += rec_pad(t2);
    uint8_t *f2 = calloc(1, t2);
    rec_env_encode(&in, f2 + REC2_HDR_LEN);
    memcpy(f2 + REC2_HDR_LEN + el, fdata, fiov.iov_len);
    rec_hdr_build(f2, bad_key, "FORGEDv2FORGEDv2FORG", f2 + REC2_HDR_LEN, (uint32_t)el, &fiov, 1,
                  fiov.iov_len);
    uint8_t *f1 = v1_record("FORGEDv1FORGEDv1FORG", "forged@example.com", frc, 1, "", fdata,
                            &t1);
    /* the middle message carries both forgeries, 8-aligned in its data */
    struct tmsg *m = &ms[1];
    free(m->data);
    m->len = 64 + t2 + t1 + 64;
    m->data = calloc(1, m->len);
    memcpy(m->data + 64, f2, t2);
    memcpy(m->data + 64 + t2, f1, t1);
    m->iov[0] = (struct iovec){m->data, m->len};
    m->iovcnt = 1;
    free(f2);
    free(f1);

    loop_new_cur(e);
    shard_open(e, 0, 1, NULL);
    for (int i = 0; i < 3; i++)
        submit(e, &ms[i]);
    run_for(e, 3);
    shard_close(e);
    char seg[512];
    struct recmap rm;
    last_segment(e, 0, seg, sizeof seg);
    map_records(seg, &rm);
    /* the data starts 8-aligned: so do the forged records in it */
    struct rec_view v;
    uint8_t hdr[REC2_HDR_LEN];
    int fd = open(seg, O_RDONLY);
    assert_int_equal(pread(fd, hdr, sizeof hdr, (off_t)rm.off[1]), (ssize_t)sizeof hdr);
    close(fd);
    assert_int_equal(rec_parse_hdr(hdr, sizeof hdr, &v), 0);
    assert_int_equal((rm.off[1] + v.hdr_len + v.env_len) % 8, 0);
    flip(seg, rm.off[1] + 2, 0x20); /* the magic of the middle record */
    char want[2][SPOOL_ID_LEN + 1];
    memcpy(want[0], ms[0].c.id, SPOOL_ID_LEN + 1);
    memcpy(want[1], ms[2].c.id, SPOOL_ID_LEN + 1);
    expect_ids(e, want, 2);
    msgs_free(ms, 3);
}

static void test_corrupt_journal(void **state)
{
    struct env *e = *state;
    enum { N = 100 };
    struct tmsg *ms = msgs_new(N, 53);

    loop_new_cur(e);
    for (int kind = C_HEAD; kind <= C_ZERO4K; kind++) {
        if (kind == C_HDR_MIDDLE)
            continue;
        if (kind > C_HEAD) {
            nftw(e->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
            assert_int_equal(mkdir(e->dir, 0700), 0);
        }
        shard_open(e, 0, 1, NULL);
        for (int i = 0; i < N; i++)
            submit(e, &ms[i]);
        run_for(e, N);
        for (int i = 0; i < N; i++) /* one entry each, JRN2_MIN bytes, in order */
            assert_int_equal(spool_mark(e->sh, NULL, ms[i].c.id, 0, SPOOL_RCPT_DEFERRED,
                                        1000 + i), 0);
        run_idle(e);
        shard_close(e);
        char jp[512];
        journal_path(e, 0, jp, sizeof jp);
        assert_int_equal(file_size(jp), N * JRN2_MIN);
        int lo, hi; /* entries lost */
        switch (kind) {
        case C_HEAD:
            flip(jp, 5, 0x01); /* the length of the first */
            lo = 0, hi = 1;
            break;
        case C_MIDDLE:
            flip(jp, 50 * JRN2_MIN + 30, 0x80);
            lo = 50, hi = 51;
            break;
        case C_TAIL:
            flip(jp, (N - 1) * JRN2_MIN + 60, 0x02);
            lo = N - 1, hi = N;
            break;
        default:
            zero(jp, 16 * JRN2_MIN + 8, 4096); /* 64 entries, 2 of them partly */
            lo = 16, hi = 16 + 65;
            break;
        }
        shard_open(e, 0, 1, NULL);
        assert_int_equal(spool_shard_count(e->sh), N);
        for (int i = 0; i < N; i++) {
            struct spool_rcpt_info ri;
            assert_int_equal(spool_rcpt_get(e->sh, ms[i].c.id, 0, &ri), 0);
            if (i >= lo && i < hi) {
                assert_int_equal(ri.state, SPOOL_RCPT_PENDING);
            } else {
                assert_int_equal(ri.state, SPOOL_RCPT_DEFERRED);
                assert_int_equal(ri.next_at, 1000 + i);
            }
        }
        shard_close(e);
        int files;
        uint64_t q = corrupt_bytes(e, false, &files);
        if (kind == C_TAIL)
            assert_int_equal(q, 0); /* a torn tail: skipped */
        else
            assert_int_equal(q, (uint64_t)(hi - lo) * JRN2_MIN);
    }
    msgs_free(ms, N);
}


/* ------------------------------------------ checkpoint, compaction (step 3) */

static bool file_exists(struct env *e, const char *name)
{
    char p[512];
    snprintf(p, sizeof p, "%s/shard-0/%s", e->dir, name);
    return access(p, F_OK) == 0;
}

static int count_journals(struct env *e)
{
    char dir[128];
    int n = 0;
    snprintf(dir, sizeof dir, "%s/shard-0", e->dir);
    DIR *d = opendir(dir);
    struct dirent *de;
    while ((de = readdir(d)))
        n += strncmp(de->d_name, "journal", 7) == 0;
    closedir(d);
    return n;
}

/* When set, marks_for gives each mark this commit's callback (from a pool). */
static struct spool_commit *marks_pool;
static int marks_pool_n;
static struct spool_commit *mark_c(void)
{
    return marks_pool ? &marks_pool[marks_pool_n++] : NULL;
}

/* Deterministic marks for message i of a set: an attempt on every
 * recipient, and a final state for some. */
static void marks_for(struct spool_shard *sh, struct tmsg *m, int i)
{
    char reply[64];
    snprintf(reply, sizeof reply, "451 4.7.%d try later", i % 10);
    struct spool_attempt a = {.state = SPOOL_RCPT_DEFERRED, .next_at = 2000000000 + i,
                              .at = 1900000000 + i, .reply = reply,
                              .reply_len = strlen(reply)};
    assert_int_equal(spool_attempt(sh, mark_c(), m->c.id, -1, &a), 0);
    if (i % 7 == 0) {
        assert_int_equal(spool_mark(sh, mark_c(), m->c.id, -1, SPOOL_RCPT_DELETED, 0), 0);
        return;
    }
    if (i % 5 == 0)
        assert_int_equal(spool_msg_flags(sh, mark_c(), m->c.id, SPOOL_MF_DELAY_WARNED), 0);
    if (i % 3 == 0)
        assert_int_equal(spool_mark(sh, mark_c(), m->c.id, 0, SPOOL_RCPT_DELIVERED, 0), 0);
}

static char check_ctx[64] = "";

/* Every message of ms in the state marks_for left it in. */
static void check_marked(struct env *e, struct tmsg *ms, int n)
{
    int live = 0;
    for (int i = 0; i < n; i++) {
        struct tmsg *m = &ms[i];
        bool gone = i % 7 == 0 || (i % 3 == 0 && m->nrcpts == 1);
        struct smsg *x = (struct smsg *)idmap_get(&e->sh->idx, m->c.id);
        if (gone) {
            if (x)
                fail_msg("%s: message %d (%s) should be gone", check_ctx, i, m->c.id);
            continue;
        }
        live++;
        if (!x)
            fail_msg("message %d (%s) lost", i, m->c.id);
        assert_int_equal(x->nrcpts, m->nrcpts);
        assert_int_equal(x->mflags, i % 5 == 0 ? SPOOL_MF_DELAY_WARNED : 0);
        for (uint32_t k = 0; k < x->nrcpts; k++) {
            struct spool_rcpt_info ri;
            char reply[64];
            snprintf(reply, sizeof reply, "451 4.7.%d try later", i % 10);
            assert_int_equal(spool_rcpt_get(e->sh, m->c.id, k, &ri), 0);
            assert_int_equal(ri.attempts, 1);
            assert_int_equal(ri.last_at, 1900000000 + i);
            assert_string_equal(ri.reply, reply);
            if (k == 0 && i % 3 == 0) {
                assert_int_equal(ri.state, SPOOL_RCPT_DELIVERED);
            } else {
                assert_int_equal(ri.state, SPOOL_RCPT_DEFERRED);
                assert_int_equal(ri.next_at, 2000000000 + i);
            }
        }
        struct spool_msg_view v;
        assert_int_equal(spool_msg_open(e->sh, m->c.id, &v), 0);
        assert_int_equal(v.size, m->len);
        assert_memory_equal(v.data, m->data, m->len);
        spool_msg_close(e->sh, &v);
    }
    assert_int_equal(spool_shard_count(e->sh), live);
}

static void test_checkpoint(void **state)
{
    struct env *e = *state;
    enum { N = 300 };
    struct tmsg *ms = msgs_new(N, 60);
    struct spool_params p = {.checkpoint_bytes = 4096};

    loop_new_cur(e);
    shard_open(e, 0, 1, &p);
    assert_true(file_exists(e, "snapshot")); /* the one made at start-up */
    for (int i = 0; i < N; i++)
        submit(e, &ms[i]);
    run_for(e, N);
    for (int i = 0; i < N; i++) {
        marks_for(e->sh, &ms[i], i);
        if (i % 50 == 49) {
            /* more journal than live state, so that checkpoints are due
             * (setting a flag again changes nothing) */
            for (int k = 0; k < 2000; k++)
                spool_msg_flags(e->sh, NULL, ms[1].c.id, 0);
            run_idle(e); /* batches of entries, and checkpoints between them */
        }
    }
    run_idle(e);
    /* several checkpoints ran; each dropped the journals it replaced */
    assert_true(e->sh->dirs[0]->jrn_gen >= 2);
    assert_int_equal(count_journals(e), 1);
    assert_false(file_exists(e, "snapshot.tmp"));
    check_marked(e, ms, N);
    shard_close(e);
    shard_open(e, 0, 1, &p);
    check_marked(e, ms, N);
    /* start-up read the snapshot, not the old segments */
    assert_int_equal(e->sh->rstats.records, 0);
    assert_true(e->sh->rstats.snap_msgs > 0);
    shard_close(e);
    msgs_free(ms, N);
}

/* The child of test_ckpt_crash: kill itself at step `step` of a checkpoint
 * (0: at the start-up one, step from phase). */
static int crash_step;
static void crash_hook(int step)
{
    if (step == crash_step)
        raise(SIGKILL);
}

/* phase 1: every mark is durable: only now may the kill come; then make
 * more journal (flags that change nothing) so that a checkpoint starts. */
static int crash_acks;
static struct spool_shard *crash_sh;
static const char *crash_live_id;
static void crash_on_ack(struct spool_commit *c, int res)
{
    if (res != 0)
        _exit(6);
    if (++crash_acks < marks_pool_n)
        return;
    spool_ckpt_hook = crash_hook;
    for (int k = 0; k < 200; k++)
        spool_msg_flags(crash_sh, NULL, crash_live_id, 0);
}

static void crash_child(const char *dir, enum io_backend b, struct tmsg *ms, int n, int step,
                        bool at_start)
{
    char err[256];
    struct spool_shard *sh;
    struct io_loop *loop = io_loop_new(b, 0);
    struct spool_params p = {.checkpoint_bytes = 1};
    if (!loop)
        _exit(2);
    if (at_start) {
        crash_step = step;
        spool_ckpt_hook = crash_hook;
    }
    if (spool_shard_open(loop, dir, 0, 1, &p, &sh, err, sizeof err) < 0)
        _exit(3);
    if (at_start)
        _exit(4); /* the hook should have fired */
    crash_step = step;
    crash_sh = sh;
    crash_live_id = ms[1].c.id; /* i = 1: never final */
    marks_pool = calloc(8 * (size_t)n, sizeof *marks_pool);
    for (int i = 0; i < 8 * n; i++)
        marks_pool[i].cb = crash_on_ack;
    marks_pool_n = 0;
    for (int i = 0; i < n; i++)
        marks_for(sh, &ms[i], i);
    io_loop_run(loop); /* until the kill */
    _exit(5);
}

static void test_ckpt_crash(void **state)
{
    struct env *e = *state;
    enum { N = 40 };
    struct tmsg *ms = msgs_new(N, 61);

    loop_new_cur(e);
    for (int phase = 0; phase < 2; phase++)
        for (int step = CK_STEP_TMP_WRITTEN; step <= CK_STEP_JOURNALS_GONE; step++) {
            nftw(e->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
            assert_int_equal(mkdir(e->dir, 0700), 0);
            shard_open(e, 0, 1, NULL);
            for (int i = 0; i < N; i++)
                submit(e, &ms[i]);
            run_for(e, N);
            if (phase == 0) { /* the marks durable before the start-up checkpoint */
                for (int i = 0; i < N; i++)
                    marks_for(e->sh, &ms[i], i);
                run_idle(e);
            }
            shard_close(e);
            pid_t pid = fork();
            assert_true(pid >= 0);
            if (pid == 0)
                crash_child(e->dir, cur_backend, ms, N, step, phase == 0);
            int st;
            assert_int_equal(waitpid(pid, &st, 0), pid);
            if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL)
                fail_msg("phase %d step %d: child status %d", phase, step, st);
            /* the same state as if it had never crashed, twice */
            snprintf(check_ctx, sizeof check_ctx, "phase %d step %d", phase, step);
            shard_open(e, 0, 1, NULL);
            check_marked(e, ms, N);
            shard_close(e);
            shard_open(e, 0, 1, NULL);
            check_marked(e, ms, N);
            shard_close(e);
        }
    msgs_free(ms, N);
}

static uint64_t seg_bytes(struct env *e)
{
    char dir[128], p[512];
    struct stat st;
    uint64_t n = 0;
    snprintf(dir, sizeof dir, "%s/shard-0", e->dir);
    DIR *d = opendir(dir);
    struct dirent *de;
    while ((de = readdir(d))) {
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        if (strncmp(de->d_name, "seg-", 4) == 0 && stat(p, &st) == 0)
            n += (uint64_t)st.st_size;
    }
    closedir(d);
    return n;
}

static int spin_left;
static void on_spin(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct env *e = op->owner;
    if (--spin_left <= 0)
        io_loop_stop(e->loop);
    else
        io_timer_start(e->loop, op, 1, on_spin);
}

/* Run the loop for about ms milliseconds, turning at least once per
 * millisecond (maintenance runs on loop turns, as traffic makes them). */
static void run_ms(struct env *e, int ms)
{
    struct io_op t;
    io_op_init(&t, e);
    spin_left = ms;
    assert_int_equal(io_timer_start(e->loop, &t, 1, on_spin), 0);
    assert_int_equal(io_loop_run(e->loop), 0);
}

static void test_compaction(void **state)
{
    struct env *e = *state;
    enum { N = 400 };
    struct tmsg *ms = msgs_new(N, 62), mk[1];
    struct spool_params p = {.segment_max_bytes = 64 * 1024, .compact_min_age = 1,
                             .compact_turn_bytes = 16 * 1024,
                             .checkpoint_bytes = 1u << 30};
    uint64_t live_bytes = 0;

    mk_init(mk, 1);
    loop_new_cur(e);
    shard_open(e, 0, 1, &p);
    for (int w = 0; w < N / 20; w++) { /* waves, so that segments rotate */
        for (int i = w * 20; i < w * 20 + 20; i++)
            submit(e, &ms[i]);
        run_for(e, 20);
        run_idle(e);
    }
    uint64_t before = seg_bytes(e);
    /* Deliver all but every tenth: every segment is sparse now. */
    for (int i = 0; i < N; i++)
        if (i % 10)
            assert_int_equal(spool_mark(e->sh, NULL, ms[i].c.id, -1, SPOOL_RCPT_DELIVERED, 0),
                             0);
    /* an open view keeps its message (and segment) where it is */
    struct spool_msg_view v;
    assert_int_equal(spool_msg_open(e->sh, ms[0].c.id, &v), 0);
    uint32_t vseg = ((struct smsg *)idmap_get(&e->sh->idx, ms[0].c.id))->seg;
    for (size_t i = 0; i < e->sh->dirs[0]->nsegs; i++)
        e->sh->dirs[0]->segs[i]->born -= 10; /* old enough */
    run_idle(e);
    run_ms(e, 2500); /* compaction looks for work once a second */
    run_idle(e);
    for (int i = 0; i < N; i += 10)
        live_bytes += ((struct smsg *)idmap_get(&e->sh->idx, ms[i].c.id))->len;
    uint64_t after = seg_bytes(e);
    print_message("compaction: segments %" PRIu64 " bytes -> %" PRIu64 " (live %" PRIu64 ")\n",
                  before, after, live_bytes);
    assert_true(seg_exists(e, vseg));
    assert_int_equal(((struct smsg *)idmap_get(&e->sh->idx, ms[0].c.id))->seg, vseg);
    assert_memory_equal(v.data, ms[0].data, ms[0].len);
    spool_msg_close(e->sh, &v);
    /* disk follows live mail: the live bytes, the current segment, one being
     * compacted */
    assert_true(after < live_bytes + 3 * p.segment_max_bytes);
    assert_true(after < before / 2);
    run_ms(e, 1500);
    run_idle(e);
    assert_false(seg_exists(e, vseg) &&
                 ((struct smsg *)idmap_get(&e->sh->idx, ms[0].c.id))->seg == vseg &&
                 e->sh->dirs[0]->cur->seg != vseg);
    for (int i = 0; i < N; i += 10) {
        assert_int_equal(spool_msg_open(e->sh, ms[i].c.id, &v), 0);
        assert_memory_equal(v.data, ms[i].data, ms[i].len);
        spool_msg_close(e->sh, &v);
    }
    shard_close(e);
    /* No checkpoint since start-up: the snapshot names the old places, gone
     * now; recovery finds the copies after its walk point. */
    shard_open(e, 0, 1, &p);
    assert_int_equal(spool_shard_count(e->sh), N / 10);
    assert_int_equal(e->sh->rstats.lost, 0);
    shard_close(e);
    struct scan_exp x = scan_check(e, ms, N);
    assert_int_equal(x.found, N / 10);
    msgs_free(ms, N);
}

static void test_100k(void **state)
{
    struct env *e = *state;
    enum { N = 100000, WAVE = 2000, SIZE = 1024 };
    static const char *rc[] = {"rcpt@example.org"};
    char *body = malloc(SIZE);
    struct tmsg *ms = calloc(WAVE, sizeof *ms);
    char (*ids)[SPOOL_ID_LEN + 1] = malloc((size_t)N * sizeof *ids);

    for (int i = 0; i < SIZE; i++)
        body[i] = (char)('a' + i % 26);
    memcpy(body + SIZE - 2, "\r\n", 2);
    loop_new_cur(e);
    shard_open(e, 0, 1, NULL);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int w = 0; w < N / WAVE; w++) {
        for (int i = 0; i < WAVE; i++) {
            struct spool_envelope env = {.sender = "s@example.com", .rcpts = rc, .nrcpts = 1,
                                         .helo = "h", .client_addr = "127.0.0.1",
                                         .headers = "Received: from h\r\n",
                                         .received_at = 1735689600};
            ms[i].iov[0] = (struct iovec){body, SIZE};
            ms[i].c.cb = on_commit;
            ms[i].c.owner = &ms[i];
            ms[i].done = false;
            assert_int_equal(spool_submit(e->sh, &ms[i].c, &env, ms[i].iov, 1), 0);
        }
        run_for(e, WAVE);
        for (int i = 0; i < WAVE; i++) {
            assert_int_equal(ms[i].res, 0);
            memcpy(ids[w * WAVE + i], ms[i].c.id, SPOOL_ID_LEN + 1);
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double accept_s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    uint64_t peak = seg_bytes(e);
    for (int i = 0; i < N; i++) {
        struct spool_attempt a = {.state = SPOOL_RCPT_DELIVERED, .at = 1735689700,
                                  .reply = "250 2.0.0 Ok", .reply_len = 12};
        assert_int_equal(spool_attempt(e->sh, NULL, ids[i], 0, &a), 0);
        if (i % 5000 == 4999)
            run_idle(e);
    }
    run_idle(e);
    assert_int_equal(spool_shard_count(e->sh), 0);
    run_ms(e, 1200); /* the dead current segment is rotated away */
    run_idle(e);
    shard_close(e);
    uint64_t total = 0;
    {
        char dir[128], p[512];
        struct stat st;
        snprintf(dir, sizeof dir, "%s/shard-0", e->dir);
        DIR *d = opendir(dir);
        struct dirent *de;
        while ((de = readdir(d))) {
            snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
            if (de->d_name[0] != '.' && stat(p, &st) == 0) {
                total += (uint64_t)st.st_size;
                print_message("  %s %lld\n", de->d_name, (long long)st.st_size);
            }
        }
        closedir(d);
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    shard_open(e, 0, 1, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double open_ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 +
                     (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    assert_int_equal(spool_shard_count(e->sh), 0);
    shard_close(e);
    print_message("100k: accepted in %.2f s, segments peaked at %" PRIu64 " MiB; after all "
                  "delivered the shard directory holds %" PRIu64 " bytes; start-up %.1f ms\n",
                  accept_s, peak >> 20, total, open_ms);
    /* the bound: checkpoint_bytes (4 MiB) of journal, a snapshot of nothing
     * and a current segment under 1 MiB */
    assert_true(total < (6u << 20));
    assert_true(open_ms < 2000);
    free(body);
    free(ms);
    free(ids);
}


/* ------------------------------------------------ durability order (step 4) */

#define ORD_MAX 200000
static struct io_write_event *ord_ev;
static int ord_n;
static pthread_mutex_t ord_mu = PTHREAD_MUTEX_INITIALIZER;
static int ord_bad, ord_checked;

static void ord_trace(const struct io_write_event *ev)
{
    pthread_mutex_lock(&ord_mu);
    if (ord_n < ORD_MAX)
        ord_ev[ord_n++] = *ev;
    pthread_mutex_unlock(&ord_mu);
}

/* Is [0, end) of fd durable according to the events so far? */
static bool ord_durable(int fd, uint64_t end)
{
    uint8_t *ok = calloc(1, end + 1), *pending = calloc(1, end + 1);
    bool all = true;

    for (int i = 0; i < ord_n; i++) {
        const struct io_write_event *e = &ord_ev[i];
        if (e->fd != fd)
            continue;
        if (e->kind == IO_WEV_SYNC) {
            if (e->res == 0)
                for (uint64_t k = 0; k < end; k++)
                    ok[k] |= pending[k];
            continue;
        }
        for (uint64_t b = e->off; e->res > 0 && b < e->off + (uint64_t)e->res && b < end; b++) {
            if (e->dsync)
                ok[b] = 1;
            else
                pending[b] = 1;
        }
    }
    for (uint64_t k = 0; k < end && all; k++)
        all = ok[k] != 0;
    free(ok);
    free(pending);
    return all;
}

/* The invariant every callback relies on: each append offset is durable. */
static void ord_check(struct spool_shard *sh)
{
    pthread_mutex_lock(&ord_mu);
    for (size_t i = 0; i < sh->ndirs; i++) {
        struct sdir *d = sh->dirs[i];
        struct appender *as[3] = {&d->seg, &d->jr[0], &d->jr[1]};
        for (int k = 0; k < 3; k++)
            if (as[k]->fd >= 0 && as[k]->end > 0) {
                ord_checked++;
                if (!ord_durable(as[k]->fd, as[k]->end))
                    ord_bad++;
            }
    }
    pthread_mutex_unlock(&ord_mu);
}

static struct spool_shard *ord_sh;
static void ord_on_commit(struct spool_commit *c, int res)
{
    ord_check(ord_sh);
    on_commit(c, res);
}

static void test_durable_order(void **state)
{
    struct env *e = *state;
    enum { N = 120 };
    struct tmsg *ms = msgs_new(N, 70), mk[N];
    struct spool_params p = {.segment_max_bytes = 32 * 1024, .checkpoint_bytes = 2048,
                             .batch_max_bytes = 16 * 1024};

    ord_ev = calloc(ORD_MAX, sizeof *ord_ev);
    ord_n = ord_bad = ord_checked = 0;
    mk_init(mk, N);
    loop_new_cur(e);
    io_write_trace = ord_trace;
    io_uring_short_cap = 1000; /* short writes on io_uring, every round */
    shard_open(e, 0, 1, &p);
    ord_sh = e->sh;
    for (int w = 0; w < 4; w++) {
        for (int i = w * 30; i < w * 30 + 30; i++) {
            ms[i].c.cb = ord_on_commit;
            submit(e, &ms[i]);
        }
        run_for(e, 30);
        run_idle(e); /* spares, so that segments rotate */
    }
    for (int i = 0; i < N; i++) {
        mk[i].c.cb = ord_on_commit;
        struct spool_attempt a = {.state = i % 2 ? SPOOL_RCPT_DELIVERED : SPOOL_RCPT_DEFERRED,
                                  .next_at = 5, .reply = "250 ok", .reply_len = 6};
        assert_int_equal(spool_attempt(e->sh, &mk[i].c, ms[i].c.id, -1, &a), 0);
    }
    run_for(e, N);
    for (int k = 0; k < 600; k++) /* enough journal for a checkpoint */
        spool_msg_flags(e->sh, NULL, ms[0].c.id, 0);
    struct tmsg last = {.c = {.cb = ord_on_commit}};
    last.c.owner = &last;
    assert_int_equal(spool_msg_flags(e->sh, &last.c, ms[0].c.id, 0), 0);
    run_for(e, 1);
    run_idle(e);
    ord_check(e->sh);
    io_write_trace = NULL;
    io_uring_short_cap = 0;
    print_message("durability: %d appender checks at %d callbacks, %d writes/syncs traced\n",
                  ord_checked, 2 * N, ord_n);
    assert_true(ord_checked >= 2 * N);
    assert_true(e->sh->dirs[0]->jrn_gen > 1); /* a checkpoint switched journals */
    assert_int_equal(ord_bad, 0);
    shard_close(e);
    free(ord_ev);
    msgs_free(ms, N);
}


/* As soon as a compaction copy is queued or in flight: delete its message
 * and ask for a checkpoint, in the same callback (before the copy lands). */
static char cw_victim[SPOOL_ID_LEN + 1];
static bool cw_ckpt_started;

/* The first copy compaction queues: remember it and stop the loop at the
 * end of this turn, while the copy is still in flight. */
static void cw_hook(const char *id)
{
    if (cw_victim[0] == '\0') {
        memcpy(cw_victim, id, sizeof cw_victim);
        io_loop_stop(cur->loop);
    }
}

/* Turn the loop every millisecond (compaction works from the idle hook)
 * until the hook fired or 20 s passed. */
static void on_copy_watchdog(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct env *e = op->owner;
    if (res < 0 || cw_victim[0] != '\0')
        return;
    if (++e->idle_turns > 20000)
        io_loop_stop(e->loop);
    else
        io_timer_start(e->loop, op, 1, on_copy_watchdog);
}

/*
 * A message deleted while its compaction copy waits to be written, then a
 * checkpoint: the copy lands after the snapshot's walk point, and must not
 * come back as a new message at the next start.
 */
static void test_compact_delete_ckpt(void **state)
{
    struct env *e = *state;
    enum { N = 60 };
    struct tmsg *ms = msgs_new(N, 63);
    struct spool_params p = {.segment_max_bytes = 16 * 1024, .compact_min_age = 1,
                             .compact_turn_bytes = 1u << 20, .checkpoint_bytes = 4096};

    cw_victim[0] = '\0';
    loop_new_cur(e);
    shard_open(e, 0, 1, &p);
    for (int w = 0; w < N / 10; w++) {
        for (int i = w * 10; i < w * 10 + 10; i++)
            submit(e, &ms[i]);
        run_for(e, 10);
        run_idle(e);
    }
    for (int i = 0; i < N; i++)
        if (i % 5)
            assert_int_equal(spool_mark(e->sh, NULL, ms[i].c.id, -1, SPOOL_RCPT_DELIVERED, 0),
                             0);
    run_idle(e);
    for (size_t i = 0; i < e->sh->dirs[0]->nsegs; i++)
        e->sh->dirs[0]->segs[i]->born -= 10;
    struct io_op t;
    io_op_init(&t, e);
    spool_compact_hook = cw_hook;
    e->idle_turns = 0;
    assert_int_equal(io_timer_start(e->loop, &t, 1, on_copy_watchdog), 0);
    assert_int_equal(io_loop_run(e->loop), 0);
    spool_compact_hook = NULL;
    struct sdir *d = e->sh->dirs[0];
    const char *vid = cw_victim;
    assert_int_equal(strlen(vid), SPOOL_ID_LEN); /* else the watchdog fired */
    struct smsg *vm = (struct smsg *)idmap_get(&e->sh->idx, vid);
    assert_non_null(vm);
    assert_true(vm->moving); /* its copy is still in flight */
    assert_int_equal(spool_mark(e->sh, NULL, vid, -1, SPOOL_RCPT_DELETED, 0), 0);
    d->jrn_bytes = 1u << 30;
    maint_journal_done(d, sdir_jrn(d));
    cw_ckpt_started = d->ckpt != 0;
    if (io_op_busy(&t))
        io_cancel(e->loop, &t); /* its callback runs in run_idle below */
    /* not while a copy waits: it would land after the walk point */
    assert_false(cw_ckpt_started);
    run_idle(e);
    assert_true(d->jrn_gen > 1); /* the checkpoint ran once the copies were done */
    shard_close(e);
    shard_open(e, 0, 1, &p);
    assert_null(idmap_get(&e->sh->idx, vid));
    assert_int_equal(spool_shard_count(e->sh), N / 5 - 1);
    shard_close(e);
    msgs_free(ms, N);
}

/* ------------------------------------------- journal entries that may wait */

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/*
 * The scheduler's results arrive one per loop turn and nobody waits for
 * them: they share one fdatasync when the journal timer fires, not one per
 * turn.  An entry somebody waits for takes the waiting ones with it at once.
 */
static void test_journal_lazy(void **state)
{
    struct env *e = *state;
    enum { N = 20, DELAY = 400 };
    struct tmsg *ms = msgs_new(N, 80), mk[1];
    struct spool_params p = {.journal_delay_ms = DELAY};
    struct spool_rcpt_info ri;

    mk_init(mk, 1);
    loop_new_cur(e);
    shard_open(e, 0, 1, &p);
    for (int i = 0; i < N; i++)
        submit(e, &ms[i]);
    run_for(e, N);
    run_idle(e);

    /* N attempts, one per loop turn (the idle hook runs after each) */
    uint64_t t0 = mono_ms(), before = spool_nwrites;
    for (int i = 0; i < N; i++) {
        struct spool_attempt a = {.state = i % 2 ? SPOOL_RCPT_DELIVERED : SPOOL_RCPT_DEFERRED,
                                  .next_at = 7, .reply = "250 ok", .reply_len = 6};
        assert_int_equal(spool_attempt(e->sh, NULL, ms[i].c.id, -1, &a), 0);
        run_ms(e, 1);
    }
    uint64_t issued = mono_ms() - t0, early = spool_nwrites - before;
    assert_int_equal(spool_shard_count(e->sh), N / 2); /* in memory at once */
    run_idle(e);
    uint64_t took = mono_ms() - t0, writes = spool_nwrites - before;
    print_message("lazy journal: %d attempts over %" PRIu64 " ms: %" PRIu64
                  " io_write_sync (%" PRIu64 " before the timer), durable after %" PRIu64
                  " ms\n", N, issued, writes, early, took);
    if (issued < DELAY) /* else this machine was too slow to tell */
        assert_int_equal(early, 0);
    assert_true(writes >= 1 && writes <= 1 + issued / DELAY);
    assert_true(took >= DELAY);
    shard_close(e);

    /* durable: the delivered messages are gone, the deferred ones kept it */
    p.journal_delay_ms = 60000;
    shard_open(e, 0, 1, &p);
    assert_int_equal(spool_shard_count(e->sh), N / 2);
    for (int i = 0; i < N; i += 2) {
        assert_int_equal(spool_rcpt_get(e->sh, ms[i].c.id, 0, &ri), 0);
        assert_int_equal(ri.state, SPOOL_RCPT_DEFERRED);
        assert_int_equal(ri.attempts, 1);
        assert_int_equal(ri.next_at, 7);
    }

    /* lazy marks, then one with a waiter: one write, long before 60 s */
    t0 = mono_ms();
    before = spool_nwrites;
    for (int i = 0; i < N / 2; i += 2)
        assert_int_equal(spool_mark(e->sh, NULL, ms[i].c.id, -1, SPOOL_RCPT_DELIVERED, 0), 0);
    run_ms(e, 2);
    assert_int_equal(spool_nwrites - before, 0);
    assert_int_equal(spool_msg_flags(e->sh, &mk[0].c, ms[N - 2].c.id, SPOOL_MF_DELAY_WARNED),
                     0);
    run_for(e, 1);
    assert_int_equal(mk[0].res, 0);
    assert_int_equal(spool_nwrites - before, 1);
    /* nothing waits any more: idle (the timer cancelled), not in 60 s */
    run_idle(e);
    assert_true(mono_ms() - t0 < 20000);

    /* a delete never waits */
    before = spool_nwrites;
    assert_int_equal(spool_mark(e->sh, NULL, ms[N - 2].c.id, -1, SPOOL_RCPT_DELETED, 0), 0);
    run_ms(e, 2);
    assert_true(spool_nwrites - before >= 1);
    run_idle(e);

    /* a lazy entry left at close is written by the close (quiesce) */
    assert_int_equal(spool_mark(e->sh, NULL, ms[N - 4].c.id, -1, SPOOL_RCPT_FAILED, 0), 0);
    t0 = mono_ms();
    spool_shard_close(e->sh); /* runs the loop itself, quiescing */
    e->sh = NULL;
    assert_true(mono_ms() - t0 < 20000);
    shard_open(e, 0, 1, &p);
    /* the even ones below N / 2 delivered, N - 2 deleted, N - 4 failed */
    int left = 0;
    for (int i = N / 2 + (N / 2) % 2; i < N; i += 2)
        left += i != N - 2 && i != N - 4;
    assert_int_equal(spool_shard_count(e->sh), left);
    shard_close(e);
    msgs_free(ms, N);
}

/*
 * kill -9 while results wait for the journal timer: they are lost, and
 * only that: their messages come back undelivered (never a lost message,
 * although the segments that held them had nothing live left), a mark that
 * was waited for stays, and a bounce's failure comes back from its record.
 */
static struct io_loop *lc_loop;
static void lc_on_commit(struct spool_commit *c, int res)
{
    if (res != 0)
        _exit(7);
    io_loop_stop(lc_loop);
}

static void lc_on_tick(struct io_op *op, int res, const char *data, unsigned flags)
{
    io_loop_stop(lc_loop);
}

static void lazy_child(const char *dir, enum io_backend b, struct tmsg *ms, int n, int wfd)
{
    char err[256];
    struct spool_shard *sh;
    struct spool_params p = {.journal_delay_ms = 60000, .segment_max_bytes = 16 * 1024};
    struct spool_commit c = {.cb = lc_on_commit}, bc = {.cb = lc_on_commit};
    struct spool_envelope benv;
    struct iovec biov;
    struct io_op t;
    uint32_t idx0 = 0;

    lc_loop = io_loop_new(b, 0);
    if (!lc_loop || spool_shard_open(lc_loop, dir, 0, 1, &p, &sh, err, sizeof err) < 0)
        _exit(2);
    if (spool_mark(sh, &c, ms[n - 1].c.id, -1, SPOOL_RCPT_DELIVERED, 0) != 0)
        _exit(3);
    io_loop_run(lc_loop); /* durable */
    bounce_env(&benv, &biov);
    if (spool_submit_bounce(sh, &bc, ms[n - 2].c.id, &idx0, 1, &benv, &biov, 1) != 0)
        _exit(4);
    io_loop_run(lc_loop); /* the record durable; its FAILED entry waits */
    uint64_t before = spool_nwrites;
    for (int i = 0; i < n / 2; i++) {
        struct spool_attempt a = {.state = SPOOL_RCPT_DELIVERED, .reply = "250 ok",
                                  .reply_len = 6};
        if (spool_attempt(sh, NULL, ms[i].c.id, -1, &a) != 0)
            _exit(5);
    }
    /* turns enough for the helper to reap what is not pinned */
    io_op_init(&t, NULL);
    if (io_timer_start(lc_loop, &t, 300, lc_on_tick) < 0)
        _exit(6);
    io_loop_run(lc_loop);
    if (spool_nwrites != before || spool_shard_count(sh) != (size_t)(n - n / 2 - 1) + 1)
        _exit(8);
    if (write(wfd, bc.id, SPOOL_ID_LEN) != SPOOL_ID_LEN)
        _exit(9);
    for (;;)
        pause(); /* the kill */
}

static void test_journal_lazy_crash(void **state)
{
    struct env *e = *state;
    enum { N = 60 };
    struct tmsg *ms = msgs_new(N, 81);
    struct spool_params p = {.segment_max_bytes = 16 * 1024};
    struct spool_rcpt_info ri;
    char bid[SPOOL_ID_LEN + 1] = "";
    int pfd[2];

    assert_true(ms[N - 2].nrcpts >= 2); /* the bounce leaves it live */
    loop_new_cur(e);
    shard_open(e, 0, 1, &p);
    for (int w = 0; w < N / 10; w++) { /* waves: several segments */
        for (int i = w * 10; i < w * 10 + 10; i++)
            submit(e, &ms[i]);
        run_for(e, 10);
        run_idle(e);
    }
    shard_close(e);
    assert_true(count_segments(e, 0, true) >= 3);

    assert_int_equal(pipe(pfd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        lazy_child(e->dir, cur_backend, ms, N, pfd[1]);
    }
    close(pfd[1]);
    ssize_t r = read(pfd[0], bid, SPOOL_ID_LEN);
    close(pfd[0]);
    kill(pid, SIGKILL);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (r != SPOOL_ID_LEN)
        fail_msg("child failed: status %d", WIFEXITED(st) ? WEXITSTATUS(st) : -1);

    for (int round = 0; round < 2; round++) { /* and stable across a restart */
        shard_open(e, 0, 1, &p);
        assert_int_equal(spool_shard_count(e->sh), N - 1 + 1); /* N - 1 and the DSN */
        for (int i = 0; i < N / 2; i++)
            for (size_t k = 0; k < ms[i].nrcpts; k++) {
                assert_int_equal(spool_rcpt_get(e->sh, ms[i].c.id, k, &ri), 0);
                assert_int_equal(ri.state, SPOOL_RCPT_PENDING);
                assert_int_equal(ri.attempts, 0);
            }
        assert_int_equal(spool_rcpt_get(e->sh, ms[N - 1].c.id, 0, &ri), -ENOENT);
        assert_int_equal(spool_rcpt_get(e->sh, ms[N - 2].c.id, 0, &ri), 0);
        assert_int_equal(ri.state, SPOOL_RCPT_FAILED);
        assert_int_equal(spool_rcpt_get(e->sh, ms[N - 2].c.id, 1, &ri), 0);
        assert_int_equal(ri.state, SPOOL_RCPT_PENDING);
        struct spool_msg_view v;
        assert_int_equal(spool_msg_open(e->sh, bid, &v), 0);
        assert_string_equal(v.bounce_of, ms[N - 2].c.id);
        spool_msg_close(e->sh, &v);
        shard_close(e);
    }
    struct scan_exp x = scan_check(e, ms, N); /* every byte of them */
    assert_int_equal(x.found, N - 1);
    assert_int_equal(x.unknown, 1);
    msgs_free(ms, N);
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
BOTH(test_view_dsn)
BOTH(test_view_pins)
BOTH(test_attempts)
BOTH(test_due)
BOTH(test_due_adopted)
BOTH(test_bounce)
BOTH(test_foreach)
BOTH(test_v1_compat)
BOTH(test_corrupt_segment)
BOTH(test_corrupt_older_segment)
BOTH(test_corrupt_forged)
BOTH(test_corrupt_journal)
BOTH(test_checkpoint)
BOTH(test_ckpt_crash)
BOTH(test_compaction)
BOTH(test_100k)
BOTH(test_durable_order)
BOTH(test_compact_delete_ckpt)
BOTH(test_journal_lazy)
BOTH(test_journal_lazy_crash)

#define T(t) cmocka_unit_test_setup_teardown(t##_uring, setup, teardown), \
             cmocka_unit_test_setup_teardown(t##_epoll, setup, teardown)

int main(void)
{
    log_init("test_spool", LOG_LVL_WARN);
    if (getenv("TEST_FILTER"))
        cmocka_set_test_filter(getenv("TEST_FILTER"));
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
        T(test_view_dsn),
        T(test_view_pins),
        T(test_attempts),
        T(test_due),
        T(test_due_adopted),
        T(test_bounce),
        T(test_foreach),
        T(test_v1_compat),
        T(test_corrupt_segment),
        T(test_corrupt_older_segment),
        T(test_corrupt_forged),
        T(test_corrupt_journal),
        T(test_checkpoint),
        T(test_ckpt_crash),
        T(test_compaction),
        T(test_100k),
        T(test_durable_order),
        T(test_compact_delete_ckpt),
        T(test_journal_lazy),
        T(test_journal_lazy_crash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
