/* SPDX-License-Identifier: MIT */
/*
 * test_maildrop.c - unit tests for core/maildrop.c: the drop file format
 * (maildrop_parse on valid, incomplete and malformed files, wire-form
 * checks, limits) and the writer (maildrop_write into a mkdtemp directory,
 * read back and parsed).  The pickup itself is exercised end to end by
 * tests/e2e/test_sendmail.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/maildrop.h"

/* Parse a copy of text; returns the result and fills m (rcpts freed by the
 * caller through done()). */
static int parse(const char *text, struct maildrop_msg *m, char **buf, char *err, size_t errlen)
{
    size_t len = strlen(text);
    *buf = malloc(len + 1);
    memcpy(*buf, text, len + 1);
    return maildrop_parse(*buf, len, 1000, 3, m, err, errlen);
}

static void done(struct maildrop_msg *m, char *buf)
{
    free(m->rcpts);
    free(buf);
}

static void test_valid(void **state)
{
    struct maildrop_msg m;
    char *buf, err[256] = "";
    int rc = parse("ortoo-maildrop 1\nfrom <a@b.test>\nrcpt <c@d.test>\nrcpt <e@f.test>\n"
                   "size 10\n\nSub: x\r\n\r\nend\n",
                   &m, &buf, err, sizeof(err));
    assert_int_equal(rc, 0);
    assert_string_equal(m.sender, "a@b.test");
    assert_int_equal(m.nrcpts, 2);
    assert_string_equal(m.rcpts[0], "c@d.test");
    assert_string_equal(m.rcpts[1], "e@f.test");
    assert_int_equal(m.size, 10);
    assert_memory_equal(m.data, "Sub: x\r\n\r\n", 10);
    assert_false(m.has_8bit);
    done(&m, buf);

    /* Null sender, empty message, UTF-8. */
    rc = parse("ortoo-maildrop 1\nfrom <>\nrcpt <j\xc3\xb6rg@d.test>\nsize 0\n\nend\n", &m,
               &buf, err, sizeof(err));
    assert_int_equal(rc, 0);
    assert_string_equal(m.sender, "");
    assert_true(m.has_utf8_addr);
    assert_int_equal(m.size, 0);
    done(&m, buf);
}

static void test_incomplete(void **state)
{
    static const char *const partial[] = {
        "", "ortoo-mail", "ortoo-maildrop 1\nfrom <a@b.test>\n",
        "ortoo-maildrop 1\nfrom <a@b.test>\nrcpt <c@d.test>\nsize 3\n\nab",
        "ortoo-maildrop 1\nfrom <a@b.test>\nrcpt <c@d.test>\nsize 2\n\n\r\nen",
    };
    for (size_t i = 0; i < sizeof(partial) / sizeof(partial[0]); i++) {
        struct maildrop_msg m;
        char *buf, err[256];
        if (parse(partial[i], &m, &buf, err, sizeof(err)) != 1)
            fail_msg("not incomplete: case %zu", i);
        free(buf);
    }
}

static void test_malformed(void **state)
{
    static const struct {
        const char *text, *why;
    } cases[] = {
        {"garbage\nend\n", "not a maildrop file"},
        {"ortoo-maildrop 2\nend\n", "not a maildrop file"},
        {"ortoo-maildrop 1\nfrom a@b\nrcpt <c@d>\nsize 0\n\nend\n", "from <ADDRESS>"},
        {"ortoo-maildrop 1\nfrom <a@b>\nsize 0\n\nend\n", "no recipient"},
        {"ortoo-maildrop 1\nfrom <a@b>\nrcpt <c d@e>\nsize 0\n\nend\n", "rcpt <ADDRESS>"},
        {"ortoo-maildrop 1\nfrom <a@b>\nrcpt <nodomain>\nsize 0\n\nend\n", "rcpt <ADDRESS>"},
        {"ortoo-maildrop 1\nfrom <a@b>\nrcpt <x@y>\nrcpt <x@y>\nrcpt <x@y>\nrcpt <x@y>\n"
         "size 0\n\nend\n",
         "more than 3 recipients"},
        {"ortoo-maildrop 1\nfrom <a@b>\nrcpt <c@d>\nsize x\n\nend\n", "size N"},
        {"ortoo-maildrop 1\nfrom <a@b>\nrcpt <c@d>\nsize 0\nextra\nend\n", "no blank line"},
        {"ortoo-maildrop 1\nfrom <a@b>\nrcpt <c@d>\nsize 5\n\nab\r\nend\n", "does not match"},
        {"ortoo-maildrop 1\nfrom <a@b>\nrcpt <c@d>\nsize 2000\n\nab\r\nend\n", "exceeds"},
        {"ortoo-maildrop 1\nfrom <a@b>\nrcpt <c@d>\nsize 4\n\na\nb\nend\n", "wire form"},
        {"ortoo-maildrop 1\nfrom <a@b>\nrcpt <c@d>\nsize 3\n\na\rbend\n", "wire form"},
        {"ortoo-maildrop 1\nfrom <a@b>\nrcpt <c@d>\nsize 6\n\na\r\n.\r\nend\n", "wire form"},
        {"ortoo-maildrop 1\nfrom <a@b>\nrcpt <c@d>\nsize 2\n\nabend\n", "wire form"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct maildrop_msg m;
        char *buf, err[256] = "";
        int rc = parse(cases[i].text, &m, &buf, err, sizeof(err));
        if (rc != -1 || strstr(err, cases[i].why) == NULL)
            fail_msg("case %zu: rc %d err '%s', want '%s'", i, rc, err, cases[i].why);
        assert_null(m.rcpts);
        free(buf);
    }
}

static void test_names(void **state)
{
    assert_true(maildrop_name_valid("m0123456789abcdef0123456789abcdef"));
    assert_false(maildrop_name_valid("m0123456789abcdef0123456789abcde"));
    assert_false(maildrop_name_valid("m0123456789ABCDEF0123456789abcdef"));
    assert_false(maildrop_name_valid("x0123456789abcdef0123456789abcdef"));
    assert_false(maildrop_name_valid("../123456789abcdef0123456789abcdef"));
}

static void test_write_read(void **state)
{
    char dir[] = "/tmp/ortoo-maildrop-XXXXXX", name[MAILDROP_NAME_LEN + 1], err[256];
    assert_non_null(mkdtemp(dir));
    const char *rcpts[] = {"x@y.test", "z@y.test"};
    const char data[] = "Subject: t\r\n\r\n..dot\r\n";
    umask(077); /* the writer makes the file 0640 whatever the umask */
    assert_int_equal(maildrop_write(dir, "me@h.test", rcpts, 2, data, sizeof(data) - 1, name,
                                    err, sizeof(err)),
                     0);
    assert_true(maildrop_name_valid(name));
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, MAILDROP_FILE_MODE);
    FILE *f = fopen(path, "r");
    char *buf = malloc((size_t)st.st_size + 1);
    assert_int_equal(fread(buf, 1, (size_t)st.st_size, f), (size_t)st.st_size);
    fclose(f);
    struct maildrop_msg m;
    assert_int_equal(maildrop_parse(buf, (size_t)st.st_size, 1000, 10, &m, err, sizeof(err)), 0);
    assert_string_equal(m.sender, "me@h.test");
    assert_int_equal(m.nrcpts, 2);
    assert_string_equal(m.rcpts[1], "z@y.test");
    assert_int_equal(m.size, sizeof(data) - 1);
    assert_memory_equal(m.data, data, sizeof(data) - 1);
    free(m.rcpts);
    free(buf);
    unlink(path);
    /* No directory: an error, nothing left. */
    assert_int_not_equal(maildrop_write("/nonexistent-ortoo", "", rcpts, 1, "", 0, name, err,
                                        sizeof(err)),
                         0);
    assert_non_null(strstr(err, "/nonexistent-ortoo"));
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),      cmocka_unit_test(test_incomplete),
        cmocka_unit_test(test_malformed),  cmocka_unit_test(test_names),
        cmocka_unit_test(test_write_read),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
