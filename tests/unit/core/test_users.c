/* SPDX-License-Identifier: MIT */
/*
 * test_users.c - unit tests for core/users.c (loading, lookups, the atomic
 * rewrite of a users file with injected failures, argon2id hashing) and for
 * the `ortoo user` CLI (cli/cli_user.c) driven through cli_user() with
 * --password-stdin on a pipe.  Includes users.c to reach its syscall seam.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <glob.h>

#include "cli/cli.h"
#include "core/users.c"

static char hash1[128]; /* hash of "secret1", made once */
static char hash2[128]; /* hash of "secret2" */

/* --- Helpers. --- */

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(p);
}

static int setup(void **state)
{
    char *dir = strdup("/tmp/ortoo-users-XXXXXX");

    assert_non_null(mkdtemp(dir));
    *state = dir;
    return 0;
}

static int teardown(void **state)
{
    users_sys.write = write;
    users_sys.fsync = fsync;
    users_sys.rename = rename;
    nftw(*state, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(*state);
    return 0;
}

static void write_file(const char *dir, const char *rel, const char *text)
{
    char path[PATH_MAX], tmp[PATH_MAX];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    /* mkdir -p of the parents */
    for (char *p = strchr(path + strlen(dir) + 1, '/'); p; p = strchr(p + 1, '/')) {
        snprintf(tmp, sizeof(tmp), "%.*s", (int)(p - path), path);
        mkdir(tmp, 0755);
    }
    if (text == NULL) { /* a directory */
        mkdir(path, 0755);
        return;
    }
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static char *read_text(const char *dir, const char *rel)
{
    char path[PATH_MAX];
    struct text_buf b = {0};
    struct stat st;

    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    if (read_all(path, &b, &st, NULL, 0) <= 0)
        return NULL;
    return b.p;
}

static int count_temps(const char *dir, const char *domain)
{
    char pat[PATH_MAX];
    glob_t g;
    int n;

    snprintf(pat, sizeof(pat), "%s/domains/%s/.users.*", dir, domain);
    if (glob(pat, 0, NULL, &g) != 0)
        return 0;
    n = (int)g.gl_pathc;
    globfree(&g);
    return n;
}

/* --- Loading and lookups. --- */

static void test_load_good(void **state)
{
    const char *dir = *state;
    char text[1024], err[256] = "";
    struct users *u;

    snprintf(text, sizeof(text),
             "# users of example.com\n"
             "\n"
             "alice@example.com:%s\n"
             "   \t\n"
             "  # indented comment\n"
             "Bob@Example.COM : %s \r\n",
             hash1, hash2);
    write_file(dir, "domains/example.com/users", text);
    write_file(dir, "domains/Other.ORG", NULL); /* domain without users */
    write_file(dir, "domains/README", "not a domain, a file\n");

    assert_int_equal(users_load(dir, &u, err, sizeof(err)), 0);
    assert_true(users_is_local_domain(u, "example.com", 11));
    assert_true(users_is_local_domain(u, "EXAMPLE.com", 11));
    assert_true(users_is_local_domain(u, "other.org", 9));
    assert_true(users_is_local_domain(u, "OTHER.ORG", 9));
    assert_false(users_is_local_domain(u, "example.co", 10));
    assert_false(users_is_local_domain(u, "readme", 6));
    assert_true(users_is_local_domain(u, "example.com.x", 11));
    assert_false(users_is_local_domain(u, "", 0));

    assert_string_equal(users_hash(u, "alice@example.com", 17), hash1);
    assert_string_equal(users_hash(u, "alice@EXAMPLE.COM", 17), hash1);
    /* Local parts compare without case by default ([local] case_sensitive). */
    assert_string_equal(users_hash(u, "Alice@example.com", 17), hash1);
    assert_string_equal(users_hash(u, "Bob@example.com", 15), hash2);
    assert_string_equal(users_hash(u, "bob@example.com", 15), hash2);
    assert_string_equal(users_find(u, "BOB@example.com", 15), "bob@example.com");
    assert_null(users_hash(u, "carol@example.com", 17));
    assert_null(users_hash(u, "alice", 5));
    assert_null(users_hash(u, "alice@other.org", 15));
    users_free(u);

    /* Case-sensitive: the local part is exact. */
    struct users_opts o = {.case_sensitive = true};
    assert_int_equal(users_load_opts(dir, &o, &u, err, sizeof(err)), 0);
    assert_null(users_hash(u, "Alice@example.com", 17));
    assert_string_equal(users_hash(u, "Bob@example.com", 15), hash2);
    assert_null(users_hash(u, "bob@example.com", 15));
    users_free(u);
}

static void test_load_multi_domain(void **state)
{
    const char *dir = *state;
    char text[512], err[256] = "";
    struct users *u;

    snprintf(text, sizeof(text), "a@one.test:%s\n", hash1);
    write_file(dir, "domains/one.test/users", text);
    snprintf(text, sizeof(text), "a@two.test:%s\nb@TWO.test:%s", hash2, hash1); /* no final LF */
    write_file(dir, "domains/two.test/users", text);

    assert_int_equal(users_load(dir, &u, err, sizeof(err)), 0);
    assert_string_equal(users_hash(u, "a@one.test", 10), hash1);
    assert_string_equal(users_hash(u, "a@two.test", 10), hash2);
    assert_string_equal(users_hash(u, "b@two.test", 10), hash1);
    assert_null(users_hash(u, "b@one.test", 10));
    users_free(u);
}

static void test_load_no_domains(void **state)
{
    struct users *u;
    char err[256];

    assert_int_equal(users_load(*state, &u, err, sizeof(err)), 0);
    assert_false(users_is_local_domain(u, "example.com", 11));
    assert_null(users_hash(u, "a@example.com", 13));
    users_free(u);
    assert_false(users_is_local_domain(NULL, "example.com", 11));
    assert_null(users_hash(NULL, "a@example.com", 13));
}

/* Each bad file must fail with "<path>:<line>: <reason>". */
static void expect_bad(const char *dir, const char *text, unsigned line, const char *reason)
{
    char err[512] = "", want[PATH_MAX];
    struct users *u = (struct users *)1;

    write_file(dir, "domains/example.com/users", text);
    assert_int_equal(users_load(dir, &u, err, sizeof(err)), -1);
    assert_null(u);
    snprintf(want, sizeof(want), "%s/domains/example.com/users:%u: ", dir, line);
    if (strstr(err, want) == NULL || strstr(err, reason) == NULL)
        fail_msg("err '%s' lacks '%s' / '%s'", err, want, reason);
}

static void test_load_bad_lines(void **state)
{
    const char *dir = *state;
    char text[1024], err[512];
    struct users *u;

    expect_bad(dir, "# c\n\nno colon here\n", 3, "expected address:hash");
    snprintf(text, sizeof(text), "a@example.com:%s\nb@example.org:%s\n", hash1, hash1);
    expect_bad(dir, text, 2, "not in domain example.com");
    expect_bad(dir, "a@example.com:plaintext\n", 1, "not an argon2");
    expect_bad(dir, "a@example.com:\n", 1, "not an argon2");
    snprintf(text, sizeof(text), "@example.com:%s\n", hash1);
    expect_bad(dir, text, 1, "invalid address");
    snprintf(text, sizeof(text), "nobody:%s\n", hash1);
    expect_bad(dir, text, 1, "invalid address");
    snprintf(text, sizeof(text), "a b@example.com:%s\n", hash1);
    expect_bad(dir, text, 1, "invalid address");

    /* Duplicates (domain case differs) are named. */
    snprintf(text, sizeof(text), "a@example.com:%s\na@EXAMPLE.com:%s\n", hash1, hash2);
    write_file(dir, "domains/example.com/users", text);
    assert_int_equal(users_load(dir, &u, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "a@example.com is listed twice"));

    /* A directory that is not a domain name. */
    write_file(dir, "domains/example.com/users", "");
    write_file(dir, "domains/bad_name", NULL);
    assert_int_equal(users_load(dir, &u, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "bad_name: not a domain name"));
}

/* --- Editing. --- */

static void test_file_set_del(void **state)
{
    const char *dir = *state;
    char text[1024], want[1024], err[256] = "", path[PATH_MAX];
    struct stat st;
    struct users *u;
    char *got;

    snprintf(text, sizeof(text),
             "# header comment\n"
             "alice@example.com:%s\n"
             "\n"
             "# bob below\n"
             "bob@example.com:%s\n",
             hash1, hash1);
    write_file(dir, "domains/example.com/users", text);

    /* Replace alice (domain given in another case): same place, same comments. */
    assert_int_equal(users_file_set(dir, "alice@Example.Com", hash2, err, sizeof(err)), 0);
    got = read_text(dir, "domains/example.com/users");
    snprintf(want, sizeof(want),
             "# header comment\n"
             "alice@example.com:%s\n"
             "\n"
             "# bob below\n"
             "bob@example.com:%s\n",
             hash2, hash1);
    assert_string_equal(got, want);
    free(got);
    snprintf(path, sizeof(path), "%s/domains/example.com/users", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0640);

    /* Add carol: appended. */
    assert_int_equal(users_file_set(dir, "carol@example.com", hash1, err, sizeof(err)), 0);
    got = read_text(dir, "domains/example.com/users");
    snprintf(want + strlen(want) - 0, sizeof(want) - strlen(want), "carol@example.com:%s\n",
             hash1);
    assert_string_equal(got, want);
    free(got);

    /* Delete bob: only his line goes. */
    assert_int_equal(users_file_del(dir, "bob@EXAMPLE.com", err, sizeof(err)), 0);
    got = read_text(dir, "domains/example.com/users");
    snprintf(want, sizeof(want),
             "# header comment\n"
             "alice@example.com:%s\n"
             "\n"
             "# bob below\n"
             "carol@example.com:%s\n",
             hash2, hash1);
    assert_string_equal(got, want);
    free(got);
    assert_int_equal(users_file_del(dir, "bob@example.com", err, sizeof(err)), 1);
    assert_int_equal(users_file_del(dir, "x@nowhere.test", err, sizeof(err)), 1);
    assert_string_equal(err, "nowhere.test is not a local domain");
    assert_int_equal(count_temps(dir, "example.com"), 0);

    /* The edited file loads and answers. */
    assert_int_equal(users_load(dir, &u, err, sizeof(err)), 0);
    assert_string_equal(users_hash(u, "alice@example.com", 17), hash2);
    assert_string_equal(users_hash(u, "carol@example.com", 17), hash1);
    assert_null(users_hash(u, "bob@example.com", 15));
    users_free(u);

    /* A user of a domain that is not local is refused... */
    assert_int_equal(users_file_set(dir, "x@New.Example", hash1, err, sizeof(err)), -1);
    assert_string_equal(err, "new.example is not a local domain");
    assert_int_equal(users_domain_dir(dir, "new.example", path, sizeof(path)), 1);
    /* ... until the domain is added. */
    assert_int_equal(users_domain_add(dir, "New.Example", err, sizeof(err)), 0);
    assert_int_equal(users_domain_add(dir, "new.example", err, sizeof(err)), 1);
    assert_int_equal(users_file_set(dir, "x@New.Example", hash1, err, sizeof(err)), 0);
    got = read_text(dir, "domains/new.example/users");
    snprintf(want, sizeof(want), "x@new.example:%s\n", hash1);
    assert_string_equal(got, want);
    free(got);
    /* A line that differs in the case of its local part is the same user. */
    assert_int_equal(users_file_set(dir, "X@new.example", hash2, err, sizeof(err)), 0);
    got = read_text(dir, "domains/new.example/users");
    snprintf(want, sizeof(want), "X@new.example:%s\n", hash2);
    assert_string_equal(got, want);
    free(got);
    /* A domain directory in another case is found. */
    write_file(dir, "domains/Mixed.Test", NULL);
    assert_int_equal(users_file_set(dir, "m@mixed.test", hash1, err, sizeof(err)), 0);
    got = read_text(dir, "domains/Mixed.Test/users");
    assert_non_null(strstr(got, "m@mixed.test:"));
    free(got);

    /* A new file and directory take the config directory's group (as root
     * in this test; skipped otherwise). */
    if (geteuid() == 0) {
        assert_int_equal(chown(dir, (uid_t)-1, 4242), 0);
        assert_int_equal(users_domain_add(dir, "group.test", err, sizeof(err)), 0);
        assert_int_equal(users_file_set(dir, "g@group.test", hash1, err, sizeof(err)), 0);
        snprintf(path, sizeof(path), "%s/domains/group.test/users", dir);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_gid, 4242);
        assert_int_equal(st.st_mode & 07777, 0640);
        snprintf(path, sizeof(path), "%s/domains/group.test", dir);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_gid, 4242);
        /* An existing file keeps its group. */
        snprintf(path, sizeof(path), "%s/domains/group.test/users", dir);
        assert_int_equal(chown(path, (uid_t)-1, 4343), 0);
        assert_int_equal(users_file_set(dir, "h@group.test", hash1, err, sizeof(err)), 0);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_gid, 4343);
    }

    /* A file without a final newline keeps its last line. */
    snprintf(text, sizeof(text), "# c\nq@last.test:%s", hash1);
    write_file(dir, "domains/last.test/users", text);
    assert_int_equal(users_file_set(dir, "r@last.test", hash2, err, sizeof(err)), 0);
    got = read_text(dir, "domains/last.test/users");
    snprintf(want, sizeof(want), "# c\nq@last.test:%s\nr@last.test:%s\n", hash1, hash2);
    assert_string_equal(got, want);
    free(got);
}

static void test_file_set_invalid(void **state)
{
    const char *dir = *state;
    char err[256];
    struct stat st;
    char path[PATH_MAX];

    assert_int_equal(users_file_set(dir, "a@../etc", hash1, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "invalid address"));
    assert_int_equal(users_file_set(dir, "a@x/y", hash1, err, sizeof(err)), -1);
    assert_int_equal(users_file_set(dir, "a@-x.test", hash1, err, sizeof(err)), -1);
    assert_int_equal(users_file_set(dir, "noat", hash1, err, sizeof(err)), -1);
    assert_int_equal(users_file_set(dir, "@x.test", hash1, err, sizeof(err)), -1);
    assert_int_equal(users_file_set(dir, "a:b@x.test", hash1, err, sizeof(err)), -1);
    assert_int_equal(users_file_set(dir, "a@x.test", "plain", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "argon2"));
    assert_int_equal(users_file_set(dir, "a@x.test", "$argon2id$v=19\nb@x.test:",
                                    err, sizeof(err)), -1);
    assert_int_equal(users_file_del(dir, "a@../etc", err, sizeof(err)), -1);
    snprintf(path, sizeof(path), "%s/domains/x.test", dir);
    assert_int_equal(stat(path, &st), -1);
}

static int fail_countdown; /* fail when it reaches 0 */

static int fsync_enospc(int fd)
{
    if (fail_countdown-- == 0) {
        errno = ENOSPC;
        return -1;
    }
    return fsync(fd);
}

static ssize_t write_short_then_eio(int fd, const void *buf, size_t len)
{
    if (len > 5)
        return write(fd, buf, 5); /* short writes are resumed */
    errno = EIO;
    return -1;
}

static int rename_exdev(const char *a, const char *b)
{
    errno = EXDEV;
    return -1;
}

static void test_file_set_failures(void **state)
{
    const char *dir = *state;
    char text[512], err[256];
    char *got;

    snprintf(text, sizeof(text), "# keep\na@fail.test:%s\n", hash1);
    write_file(dir, "domains/fail.test/users", text);

    fail_countdown = 0;
    users_sys.fsync = fsync_enospc;
    assert_int_equal(users_file_set(dir, "b@fail.test", hash2, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "fsync"));
    assert_non_null(strstr(err, strerror(ENOSPC)));
    users_sys.fsync = fsync;
    got = read_text(dir, "domains/fail.test/users");
    assert_string_equal(got, text);
    free(got);
    assert_int_equal(count_temps(dir, "fail.test"), 0);

    users_sys.write = write_short_then_eio;
    assert_int_equal(users_file_del(dir, "a@fail.test", err, sizeof(err)), -1);
    assert_non_null(strstr(err, strerror(EIO)));
    users_sys.write = write;
    got = read_text(dir, "domains/fail.test/users");
    assert_string_equal(got, text);
    free(got);
    assert_int_equal(count_temps(dir, "fail.test"), 0);

    users_sys.rename = rename_exdev;
    assert_int_equal(users_file_set(dir, "a@fail.test", hash2, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "rename"));
    users_sys.rename = rename;
    got = read_text(dir, "domains/fail.test/users");
    assert_string_equal(got, text);
    free(got);
    assert_int_equal(count_temps(dir, "fail.test"), 0);

    /* The directory fsync after the rename failing is reported; the new
     * file is in place (the rename happened). */
    fail_countdown = 1;
    users_sys.fsync = fsync_enospc;
    assert_int_equal(users_file_set(dir, "a@fail.test", hash2, err, sizeof(err)), -1);
    users_sys.fsync = fsync;
    got = read_text(dir, "domains/fail.test/users");
    assert_non_null(strstr(got, hash2));
    free(got);

    /* After the failures, a normal edit works. */
    assert_int_equal(users_file_set(dir, "b@fail.test", hash2, err, sizeof(err)), 0);
    got = read_text(dir, "domains/fail.test/users");
    assert_non_null(strstr(got, "# keep\n"));
    assert_non_null(strstr(got, "b@fail.test:"));
    free(got);
}

/* --- Passwords. --- */

static void test_hash_verify(void **state)
{
    char h[128];

    assert_int_equal(strncmp(hash1, "$argon2id$", 10), 0);
    assert_true(users_verify_password(hash1, "secret1", 7));
    assert_false(users_verify_password(hash1, "secret2", 7));
    assert_false(users_verify_password(hash1, "secret", 6));
    assert_false(users_verify_password(hash1, "", 0));
    assert_false(users_verify_password(NULL, "secret1", 7));
    assert_false(users_verify_password("$argon2id$garbage", "secret1", 7));
    /* Same password, new salt: a different string that verifies too. */
    assert_int_equal(users_hash_password("secret1", 7, h), 0);
    assert_string_not_equal(h, hash1);
    assert_true(users_verify_password(h, "secret1", 7));
    /* Embedded NUL is part of the password. */
    assert_int_equal(users_hash_password("a\0b", 3, h), 0);
    assert_true(users_verify_password(h, "a\0b", 3));
    assert_false(users_verify_password(h, "a", 1));
}

/* --- The CLI. --- */

/* Run cli_user with input on stdin (a pipe), stdout captured into out. */
static int run_cli(const char *dir, const char *input, char *out, size_t outcap, int argc, ...)
{
    char *argv[8];
    va_list ap;
    int pfd[2], saved_in, saved_out, ret;
    FILE *cap = tmpfile();
    size_t n;

    assert_true(argc < 8);
    va_start(ap, argc);
    for (int i = 0; i < argc; i++)
        argv[i] = va_arg(ap, char *);
    va_end(ap);
    argv[argc] = NULL;

    assert_int_equal(pipe(pfd), 0);
    if (input != NULL)
        assert_int_equal(write(pfd[1], input, strlen(input)), (ssize_t)strlen(input));
    close(pfd[1]);
    saved_in = dup(0);
    saved_out = dup(1);
    fflush(stdout);
    dup2(pfd[0], 0);
    dup2(fileno(cap), 1);
    ret = cli_user(dir, argc, argv);
    fflush(stdout);
    dup2(saved_in, 0);
    dup2(saved_out, 1);
    close(saved_in);
    close(saved_out);
    close(pfd[0]);
    rewind(cap);
    n = fread(out, 1, outcap - 1, cap);
    out[n] = '\0';
    fclose(cap);
    return ret;
}

static void test_cli(void **state)
{
    const char *dir = *state;
    char out[1024];
    struct users *u;
    char err[256];

    /* Usage errors. */
    assert_int_equal(run_cli(dir, NULL, out, sizeof(out), 1, "user"), 2);
    assert_int_equal(run_cli(dir, NULL, out, sizeof(out), 2, "user", "frob"), 2);
    assert_int_equal(run_cli(dir, NULL, out, sizeof(out), 2, "user", "add"), 2);
    assert_int_equal(run_cli(dir, "pw\n", out, sizeof(out), 4, "user", "add", "a@b.test", "--bogus"), 2);
    assert_int_equal(run_cli(dir, NULL, out, sizeof(out), 4, "user", "del", "a@b.test", "extra"), 2);
    assert_int_equal(run_cli(dir, "pw\n", out, sizeof(out), 4, "user", "add", "not-an-address", "--password-stdin"), 2);
    assert_int_equal(run_cli(dir, "pw\n", out, sizeof(out), 4, "user", "add", "a..b@x.test", "--password-stdin"), 2);
    assert_int_equal(run_cli(dir, "pw\n", out, sizeof(out), 4, "user", "add", "a@x_y.test", "--password-stdin"), 2);
    /* No terminal and no --password-stdin. */
    assert_int_equal(run_cli(dir, "pw\n", out, sizeof(out), 3, "user", "add", "a@x.test"), 2);

    /* Empty and over-long passwords are refused; nothing is written. */
    assert_int_equal(run_cli(dir, "\n", out, sizeof(out), 4, "user", "add", "a@x.test", "--password-stdin"), 1);
    assert_int_equal(run_cli(dir, "", out, sizeof(out), 4, "user", "add", "a@x.test", "--password-stdin"), 1);
    {
        char longpw[400];
        memset(longpw, 'p', 300);
        strcpy(longpw + 300, "\n");
        assert_int_equal(run_cli(dir, longpw, out, sizeof(out), 4, "user", "add", "a@x.test", "--password-stdin"), 1);
    }
    assert_int_equal(users_load(dir, &u, err, sizeof(err)), 0);
    assert_false(users_is_local_domain(u, "x.test", 6));
    users_free(u);

    /* A domain that is not local is refused (with the hint on stderr);
     * "*@" is no user. */
    assert_int_equal(run_cli(dir, "hunter2\n", out, sizeof(out), 4, "user", "add", "zed@X.test", "--password-stdin"), 1);
    assert_int_equal(run_cli(dir, "hunter2\n", out, sizeof(out), 4, "user", "add", "*@X.test", "--password-stdin"), 2);
    assert_int_equal(run_cli(dir, "hunter2\n", out, sizeof(out), 4, "user", "add", "a*b@X.test", "--password-stdin"), 2);
    assert_int_equal(run_cli(dir, "hunter2\n", out, sizeof(out), 4, "user", "add", "a/b@X.test", "--password-stdin"), 2);
    assert_int_equal(users_domain_add(dir, "x.test", err, sizeof(err)), 0);
    assert_int_equal(users_domain_add(dir, "y.test", err, sizeof(err)), 0);

    /* add, list, check. */
    assert_int_equal(run_cli(dir, "hunter2\n", out, sizeof(out), 4, "user", "add", "zed@X.test", "--password-stdin"), 0);
    assert_int_equal(run_cli(dir, "pw two\r\n", out, sizeof(out), 4, "user", "add", "amy@x.test", "--password-stdin"), 0);
    assert_int_equal(run_cli(dir, "pw3", out, sizeof(out), 4, "user", "add", "bo@y.test", "--password-stdin"), 0);
    assert_int_equal(run_cli(dir, NULL, out, sizeof(out), 2, "user", "list"), 0);
    assert_string_equal(out, "amy@x.test\nbo@y.test\nzed@x.test\n");
    assert_int_equal(run_cli(dir, NULL, out, sizeof(out), 3, "user", "list", "X.TEST"), 0);
    assert_string_equal(out, "amy@x.test\nzed@x.test\n");
    assert_int_equal(run_cli(dir, NULL, out, sizeof(out), 3, "user", "list", "z.test"), 1);

    assert_int_equal(run_cli(dir, "hunter2\n", out, sizeof(out), 4, "user", "check", "zed@x.test", "--password-stdin"), 0);
    assert_string_equal(out, "password OK\n");
    assert_int_equal(run_cli(dir, "hunter3\n", out, sizeof(out), 4, "user", "check", "zed@x.test", "--password-stdin"), 1);
    assert_string_equal(out, "password WRONG\n");
    assert_int_equal(run_cli(dir, "pw two\n", out, sizeof(out), 4, "user", "check", "amy@X.TEST", "--password-stdin"), 0);
    assert_string_equal(out, "password OK\n");
    assert_int_equal(run_cli(dir, "pw3\n", out, sizeof(out), 4, "user", "check", "bo@y.test", "--password-stdin"), 0);
    assert_int_equal(run_cli(dir, "x\n", out, sizeof(out), 4, "user", "check", "nobody@x.test", "--password-stdin"), 1);
    assert_string_equal(out, "no such user\n");

    /* Changing a password replaces the line. */
    assert_int_equal(run_cli(dir, "newpw\n", out, sizeof(out), 4, "user", "add", "zed@x.test", "--password-stdin"), 0);
    assert_int_equal(run_cli(dir, "hunter2\n", out, sizeof(out), 4, "user", "check", "zed@x.test", "--password-stdin"), 1);
    assert_int_equal(run_cli(dir, "newpw\n", out, sizeof(out), 4, "user", "check", "zed@x.test", "--password-stdin"), 0);

    /* del. */
    assert_int_equal(run_cli(dir, NULL, out, sizeof(out), 3, "user", "del", "zed@x.test"), 0);
    assert_int_equal(run_cli(dir, NULL, out, sizeof(out), 3, "user", "del", "zed@x.test"), 1);
    assert_int_equal(run_cli(dir, NULL, out, sizeof(out), 2, "user", "list"), 0);
    assert_string_equal(out, "amy@x.test\nbo@y.test\n");
}

/* --- Domains (users_domain_add/del and `ortoo domain`). --- */

static int run_domain(const char *dir, int argc, ...)
{
    char *argv[8];
    va_list ap;
    int saved = dup(1), devnull = open("/dev/null", O_WRONLY), ret;

    va_start(ap, argc);
    for (int i = 0; i < argc; i++)
        argv[i] = va_arg(ap, char *);
    va_end(ap);
    argv[argc] = NULL;
    fflush(stdout);
    dup2(devnull, 1);
    ret = cli_domain(dir, argc, argv);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    close(devnull);
    return ret;
}

static void test_domains(void **state)
{
    const char *dir = *state;
    char err[256], path[PATH_MAX], text[512];
    struct users *u;
    struct stat st;

    /* add: a directory and a commented aliases file; idempotent. */
    assert_int_equal(run_domain(dir, 3, "domain", "add", "Example.COM"), 0);
    snprintf(path, sizeof(path), "%s/domains/example.com", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0750);
    char *got = read_text(dir, "domains/example.com/aliases");
    assert_non_null(strstr(got, "# Aliases of example.com"));
    free(got);
    assert_int_equal(run_domain(dir, 3, "domain", "add", "example.com"), 0);
    assert_int_equal(run_domain(dir, 3, "domain", "add", "two.test"), 0);
    assert_int_equal(users_load(dir, &u, err, sizeof(err)), 0);
    assert_int_equal(users_domain_count(u), 2);
    assert_string_equal(users_domain_at(u, 0), "example.com");
    assert_string_equal(users_domain_at(u, 1), "two.test");
    users_free(u);

    /* Usage errors. */
    assert_int_equal(run_domain(dir, 2, "domain", "add"), 2);
    assert_int_equal(run_domain(dir, 3, "domain", "add", "localhost"), 2);
    assert_int_equal(run_domain(dir, 3, "domain", "add", "bad_name.test"), 2);
    assert_int_equal(run_domain(dir, 3, "domain", "add", "../etc"), 2);
    assert_int_equal(run_domain(dir, 4, "domain", "add", "a.test", "b.test"), 2);
    assert_int_equal(run_domain(dir, 4, "domain", "add", "a.test", "--force"), 2);
    assert_int_equal(run_domain(dir, 3, "domain", "list", "a.test"), 2);
    assert_int_equal(run_domain(dir, 2, "domain", "frob"), 2);
    assert_int_equal(run_domain(dir, 2, "domain", "list"), 0);

    /* del: only when empty, unless --force. */
    snprintf(text, sizeof(text), "# users\nu@example.com:%s\n", hash1);
    write_file(dir, "domains/example.com/users", text);
    assert_int_equal(users_domain_del(dir, "example.com", false, err, sizeof(err)), 2);
    assert_string_equal(err, "example.com is not empty: 1 user, 0 aliases");
    write_file(dir, "domains/example.com/aliases", "# c\nsales: u\n  , u\n*: u\n");
    write_file(dir, "domains/example.com/dkim", NULL);
    assert_int_equal(users_domain_del(dir, "EXAMPLE.com", false, err, sizeof(err)), 2);
    assert_string_equal(err, "example.com is not empty: 1 user, 2 aliases, dkim");
    assert_int_equal(run_domain(dir, 3, "domain", "del", "example.com"), 1);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(run_domain(dir, 4, "domain", "del", "example.com", "--force"), 0);
    assert_int_equal(stat(path, &st), -1);
    assert_int_equal(run_domain(dir, 3, "domain", "del", "example.com"), 1);
    assert_int_equal(users_domain_del(dir, "example.com", false, err, sizeof(err)), 1);
    /* Comment-only files count as empty. */
    write_file(dir, "domains/two.test/users", "# nobody yet\n\n");
    assert_int_equal(run_domain(dir, 3, "domain", "del", "two.test"), 0);
    assert_int_equal(users_load(dir, &u, err, sizeof(err)), 0);
    assert_int_equal(users_domain_count(u), 0);
    users_free(u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_verify),
        cmocka_unit_test_setup_teardown(test_load_good, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_multi_domain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_no_domains, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_bad_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_set_del, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_set_invalid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_set_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cli, setup, teardown),
        cmocka_unit_test_setup_teardown(test_domains, setup, teardown),
    };

    if (users_hash_password("secret1", 7, hash1) < 0 ||
        users_hash_password("secret2", 7, hash2) < 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
