/* SPDX-License-Identifier: MIT */
/*
 * test_maildir.c - unit tests for delivery/maildir.c: byte-exact content
 * (added fields, dot-unstuffing across every split of the stored bytes, a
 * file as the source), the name rules, directory creation, refusal of bad
 * path elements, unique names from concurrent workers through the pool
 * (results posted to a real io_loop), and failures injected through the
 * syscall seam (ENOSPC on write, EIO on fsync, EEXIST on rename) leaving
 * nothing behind.  Includes the source to reach maildir_sys.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <ftw.h>
#include <regex.h>

#include "delivery/maildir.c"

static char root[PATH_MAX];

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(p);
}

static int setup(void **state)
{
    strcpy(root, "/tmp/ortoo-maildir-XXXXXX");
    assert_non_null(mkdtemp(root));
    return 0;
}

static int teardown(void **state)
{
    maildir_sys.write = write;
    maildir_sys.fsync = fsync;
    maildir_sys.renameat2 = sys_renameat2;
    maildir_sys.pread = pread;
    nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* Names in <root>/example.com/<user>/Maildir/<sub>, sorted; returns count. */
static size_t list(const char *user, const char *sub, char names[][MAILDIR_NAME_MAX + 1],
                   size_t max)
{
    char path[PATH_MAX + 64];
    DIR *d;
    struct dirent *de;
    size_t n = 0;

    snprintf(path, sizeof(path), "%s/example.com/%s/Maildir/%s", root, user, sub);
    d = opendir(path);
    if (d == NULL)
        return 0;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        if (n < max)
            snprintf(names[n], MAILDIR_NAME_MAX + 1, "%s", de->d_name);
        n++;
    }
    closedir(d);
    return n;
}

static char *slurp(const char *user, const char *name, size_t *len)
{
    char path[PATH_MAX + 512];
    snprintf(path, sizeof(path), "%s/example.com/%s/Maildir/new/%s", root, user, name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *buf = malloc(1 << 20);
    assert_non_null(buf);
    *len = fread(buf, 1, 1 << 20, f);
    fclose(f);
    buf[*len] = '\0';
    return buf;
}

static const char stored[] = "Subject: dots\r\n"
                             "\r\n"
                             "..leading dot\r\n"
                             "..\r\n"
                             "middle . dot\r\n"
                             "...two dots\r\n"
                             "..";  /* ends mid-line after a stuffed dot */
static const char unstuffed[] = "Subject: dots\r\n"
                                "\r\n"
                                ".leading dot\r\n"
                                ".\r\n"
                                "middle . dot\r\n"
                                "..two dots\r\n"
                                ".";
static const char prefix[] = "Received: from client.test ([127.0.0.1])\r\n\tby mx (ortoo);\r\n";
static const char head[] = "Return-Path: <sender@remote.example>\r\n"
                           "Delivered-To: <alice@example.com>\r\n";

static struct maildir_msg msg_mem(const struct iovec *iov, int n)
{
    return (struct maildir_msg){.root = root, .domain = "example.com", .user = "alice",
                                .return_path = "sender@remote.example",
                                .delivered_to = "alice@example.com", .prefix = prefix,
                                .prefix_len = strlen(prefix), .iov = iov, .iovcnt = n,
                                .fd = -1};
}

static void check_file(const char *name, const char *want_body)
{
    char want[4096];
    size_t len;
    snprintf(want, sizeof(want), "%s%s%s", head, prefix, want_body);
    char *got = slurp("alice", name, &len);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(got, want, len);
    /* S= is the size on disk. */
    char s[32];
    snprintf(s, sizeof(s), ",S=%zu", len);
    assert_non_null(strstr(name, s));
    assert_string_equal(strstr(name, s), s);
    free(got);
}

static void test_content_and_name(void **state)
{
    struct iovec iov = {(void *)stored, strlen(stored)};
    struct maildir_msg m = msg_mem(&iov, 1);
    char name[MAILDIR_NAME_MAX + 1], names[4][MAILDIR_NAME_MAX + 1];
    regex_t re;

    assert_int_equal(maildir_write(&m, "mx.example.com", name), 0);
    check_file(name, unstuffed);
    assert_int_equal(list("alice", "new", names, 4), 1);
    assert_string_equal(names[0], name);
    assert_int_equal(list("alice", "tmp", names, 4), 0);
    char path[PATH_MAX + 512];
    struct stat st;
    snprintf(path, sizeof(path), "%s/example.com/alice/Maildir/cur", root);
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0700);
    snprintf(path, sizeof(path), "%s/example.com/alice/Maildir/new/%s", root, name);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    /* <sec>.M<usec>P<pid>Q<n>.<host>,S=<size> */
    char pat[128];
    snprintf(pat, sizeof(pat), "^[0-9]+\\.M[0-9]+P%ldQ[0-9]+\\.mx\\.example\\.com,S=[0-9]+$",
             (long)getpid());
    assert_int_equal(regcomp(&re, pat, REG_EXTENDED | REG_NOSUB), 0);
    assert_int_equal(regexec(&re, name, 0, NULL, 0), 0);
    regfree(&re);

    /* The host's '/' and ':' are escaped. */
    assert_int_equal(maildir_write(&m, "we:ird/host", name), 0);
    assert_non_null(strstr(name, ".we\\072ird\\057host,S="));

    /* The null sender and no prefix. */
    m.return_path = "";
    m.prefix = NULL;
    m.prefix_len = 0;
    assert_int_equal(maildir_write(&m, "h", name), 0);
    size_t len;
    char *got = slurp("alice", name, &len);
    assert_true(strncmp(got, "Return-Path: <>\r\nDelivered-To: <alice@example.com>\r\nSubject:",
                        57) == 0);
    free(got);
}

static int fsync_skip(int fd) { return 0; }

/* Every split of the stored bytes into two and three pieces gives the
 * same file: the unstuffing state carries over.  (Thousands of files:
 * the fsyncs are skipped here, content is what is tested.) */
static void test_splits(void **state)
{
    size_t n = strlen(stored);
    char name[MAILDIR_NAME_MAX + 1];

    maildir_sys.fsync = fsync_skip;
    for (size_t i = 0; i <= n; i++) {
        for (size_t j = i; j <= n; j += 3) {
            struct iovec iov[3] = {{(void *)stored, i},
                                   {(void *)(stored + i), j - i},
                                   {(void *)(stored + j), n - j}};
            struct maildir_msg m = msg_mem(iov, 3);
            assert_int_equal(maildir_write(&m, "h", name), 0);
            check_file(name, unstuffed);
        }
    }
}

static void test_from_file(void **state)
{
    char path[PATH_MAX + 16], name[MAILDIR_NAME_MAX + 1];
    size_t big = 300 * 1024; /* more than the buffers */
    char *data = malloc(big + 64), *want = malloc(big + 64);
    size_t wl = 0;

    snprintf(path, sizeof(path), "%s/segment", root);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    /* 17 junk bytes, then lines of 99 bytes + CRLF, some stuffed. */
    assert_int_equal(write(fd, "JUNK-BEFORE-MSG!!", 17), 17);
    size_t dl = 0;
    for (int line = 0; dl + 101 <= big; line++) {
        if (line % 7 == 0) {
            data[dl++] = '.';
            data[dl++] = '.';
            want[wl++] = '.';
            memset(data + dl, 'a' + line % 26, 97);
            memset(want + wl, 'a' + line % 26, 97);
            dl += 97;
            wl += 97;
        } else {
            memset(data + dl, 'a' + line % 26, 99);
            memset(want + wl, 'a' + line % 26, 99);
            dl += 99;
            wl += 99;
        }
        memcpy(data + dl, "\r\n", 2);
        memcpy(want + wl, "\r\n", 2);
        dl += 2;
        wl += 2;
    }
    assert_int_equal(write(fd, data, dl), (ssize_t)dl);
    assert_int_equal(write(fd, "JUNK-AFTER", 10), 10);

    struct maildir_msg m = msg_mem(NULL, 0);
    m.prefix = NULL;
    m.prefix_len = 0;
    m.fd = fd;
    m.off = 17;
    m.len = dl;
    assert_int_equal(maildir_write(&m, "h", name), 0);
    size_t len;
    char *got = slurp("alice", name, &len);
    assert_int_equal(len, strlen(head) + wl);
    assert_memory_equal(got, head, strlen(head));
    assert_memory_equal(got + strlen(head), want, wl);
    free(got);

    /* A source shorter than len (a damaged spool) is an error, not a
     * truncated delivery. */
    m.len = dl + 1000;
    assert_int_equal(maildir_write(&m, "h", name), -EIO);
    close(fd);
    free(data);
    free(want);
}

static void test_bad_paths(void **state)
{
    struct iovec iov = {(void *)"x\r\n", 3};
    struct maildir_msg m = msg_mem(&iov, 1);
    char name[MAILDIR_NAME_MAX + 1];
    static const char *const bad[] = {"", ".", "..", "a/b", "/abs"};

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        m.user = bad[i];
        assert_int_equal(maildir_write(&m, "h", name), -EINVAL);
        m.user = "alice";
        m.domain = bad[i];
        assert_int_equal(maildir_write(&m, "h", name), -EINVAL);
        m.domain = "example.com";
    }
    m.root = "relative/root";
    assert_int_equal(maildir_write(&m, "h", name), -EINVAL);
    m.root = root;
    m.user = NULL;
    assert_int_equal(maildir_write(&m, "h", name), -EINVAL);
}

/* ---- injected failures ---- */

static int fail_after; /* calls that succeed before the failure */

static ssize_t write_enospc(int fd, const void *buf, size_t len)
{
    if (fail_after-- <= 0) {
        errno = ENOSPC;
        return -1;
    }
    /* Short writes are resumed. */
    return write(fd, buf, len > 7 ? 7 : len);
}

static int fsync_eio(int fd)
{
    if (fail_after-- <= 0) {
        errno = EIO;
        return -1;
    }
    return fsync(fd);
}

static int rename_eexist_once(int ofd, const char *from, int nfd, const char *to, unsigned fl)
{
    if (fail_after-- > 0) {
        errno = EEXIST;
        return -1;
    }
    return renameat2(ofd, from, nfd, to, fl);
}

static void test_failures(void **state)
{
    struct iovec iov = {(void *)stored, strlen(stored)};
    struct maildir_msg m = msg_mem(&iov, 1);
    char name[MAILDIR_NAME_MAX + 1], names[8][MAILDIR_NAME_MAX + 1];

    /* Make the directories first (so that the seam sees only the file). */
    assert_int_equal(maildir_write(&m, "h", name), 0);
    assert_int_equal(list("alice", "new", names, 8), 1);

    maildir_sys.write = write_enospc;
    for (fail_after = 0; fail_after < 4;) {
        int start = fail_after;
        assert_int_equal(maildir_write(&m, "h", name), -ENOSPC);
        assert_string_equal(name, "");
        assert_int_equal(list("alice", "tmp", names, 8), 0);
        assert_int_equal(list("alice", "new", names, 8), 1);
        fail_after = start + 1;
    }
    maildir_sys.write = write;

    maildir_sys.fsync = fsync_eio;
    fail_after = 0; /* the file's fsync */
    assert_int_equal(maildir_write(&m, "h", name), -EIO);
    assert_int_equal(list("alice", "tmp", names, 8), 0);
    assert_int_equal(list("alice", "new", names, 8), 1);
    fail_after = 1; /* new/'s fsync: the file is taken back */
    assert_int_equal(maildir_write(&m, "h", name), -EIO);
    assert_int_equal(list("alice", "tmp", names, 8), 0);
    assert_int_equal(list("alice", "new", names, 8), 1);
    maildir_sys.fsync = fsync;

    /* A name taken in new/: another one, never an overwrite. */
    maildir_sys.renameat2 = rename_eexist_once;
    fail_after = 1;
    assert_int_equal(maildir_write(&m, "h", name), 0);
    assert_int_equal(list("alice", "new", names, 8), 2);
    fail_after = 100; /* always taken: give up */
    assert_int_equal(maildir_write(&m, "h", name), -EEXIST);
    assert_int_equal(list("alice", "tmp", names, 8), 0);
    assert_int_equal(list("alice", "new", names, 8), 2);
    maildir_sys.renameat2 = sys_renameat2;

    /* A Maildir whose tmp/ is gone is completed. */
    char path[PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/example.com/alice/Maildir/tmp", root);
    assert_int_equal(rmdir(path), 0);
    assert_int_equal(maildir_write(&m, "h", name), 0);
    assert_int_equal(list("alice", "new", names, 8), 3);

    /* Not writable: a clean -EACCES (skipped as root, who may write). */
    if (geteuid() != 0) {
        snprintf(path, sizeof(path), "%s/example.com", root);
        chmod(path, 0500);
        m.user = "bob";
        assert_int_equal(maildir_write(&m, "h", name), -EACCES);
        chmod(path, 0700);
    }
}

/* ---- the pool ---- */

#define NREQ 200

static int done_count;
static struct io_loop *test_loop;

static void on_delivered(struct maildir_req *req, int res)
{
    assert_int_equal(res, 0);
    assert_true(req->name[0] != '\0');
    if (++done_count == NREQ)
        io_loop_stop(test_loop);
}

/* The 30 s guard fired (res 0) or was cancelled: either way the loop stops. */
static void on_deadline(struct io_op *op, int res, const char *d, unsigned f)
{
    io_loop_stop(test_loop);
}

static int cmp_name(const void *a, const void *b) { return strcmp(a, b); }

static void test_pool_unique(void **state)
{
    static struct maildir_req reqs[NREQ];
    static char names[NREQ + 1][MAILDIR_NAME_MAX + 1];
    struct iovec iov = {(void *)stored, strlen(stored)};
    struct io_op deadline;

    test_loop = io_loop_new(IO_BACKEND_EPOLL, 0);
    assert_non_null(test_loop);
    struct maildir_pool *p = maildir_pool_new(4, "pool.example");
    assert_non_null(p);
    done_count = 0;
    for (int i = 0; i < NREQ; i++) {
        reqs[i].msg = msg_mem(&iov, 1);
        assert_int_equal(maildir_deliver(p, test_loop, &reqs[i], on_delivered), 0);
    }
    io_op_init(&deadline, NULL);
    io_timer_start(test_loop, &deadline, 30000, on_deadline);
    io_loop_run(test_loop);
    assert_int_equal(done_count, NREQ);
    io_cancel(test_loop, &deadline);
    io_loop_run(test_loop); /* until the cancelled timer's callback */
    /* Every name distinct, all of them in new/. */
    for (int i = 0; i < NREQ; i++)
        snprintf(names[i], sizeof(names[i]), "%s", reqs[i].name);
    qsort(names, NREQ, sizeof(names[0]), cmp_name);
    for (int i = 1; i < NREQ; i++)
        assert_string_not_equal(names[i - 1], names[i]);
    assert_int_equal(list("alice", "new", names, NREQ + 1), NREQ);
    maildir_pool_free(p);
    assert_int_equal(maildir_deliver(NULL, test_loop, &reqs[0], on_delivered), -EINVAL);
    io_loop_free(test_loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_content_and_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_splits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_from_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pool_unique, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
