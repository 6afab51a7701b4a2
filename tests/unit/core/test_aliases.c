/* SPDX-License-Identifier: MIT */
/*
 * test_aliases.c - unit tests for core/aliases.c: the aliases file format
 * (comments, continuation lines, quoting, every target form), every error
 * with its file:line, and the table's lookups (case rules, catch-all,
 * first alias of a domain).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/aliases.h"

/* Parse text as example.com's aliases file "F" and finish the table. */
static struct aliases *parse_ok(const char *text, bool case_sensitive, bool allow_pipe)
{
    struct aliases *a = aliases_new(case_sensitive, allow_pipe);
    char err[256] = "";
    assert_non_null(a);
    if (aliases_parse(a, "F", "example.com", text, strlen(text), err, sizeof(err)) != 0 ||
        aliases_finish(a, err, sizeof(err)) != 0)
        fail_msg("parse failed: %s", err);
    return a;
}

static void parse_err(const char *text, bool allow_pipe, const char *want)
{
    struct aliases *a = aliases_new(false, allow_pipe);
    char err[256] = "";
    int rc = aliases_parse(a, "F", "example.com", text, strlen(text), err, sizeof(err));
    if (rc == 0)
        rc = aliases_finish(a, err, sizeof(err));
    assert_int_equal(rc, -1);
    if (strcmp(err, want) != 0)
        fail_msg("\n got: %s\nwant: %s", err, want);
    aliases_free(a);
}

static const struct alias *find(const struct aliases *a, const char *name, const char *dom)
{
    return aliases_find(a, name, strlen(name), dom, strlen(dom));
}

static void assert_target(const struct alias *al, size_t i, enum alias_target_kind kind,
                          const char *text)
{
    assert_true(i < al->ntargets);
    assert_int_equal(al->targets[i].kind, kind);
    assert_string_equal(al->targets[i].text, text);
    if (kind != ALIAS_T_PIPE) {
        const char *at = strrchr(text, '@');
        assert_int_equal(al->targets[i].local_len, (size_t)(at - text));
    }
}

static void test_forms(void **state)
{
    struct aliases *a = parse_ok("# aliases of example.com\n"
                                 "\n"
                                 "sales: alice, Bob@Example.COM\r\n"
                                 "   # a comment between continuation lines\n"
                                 "list: alice,\n"
                                 "      carol@Other.ORG ,\n"
                                 "\tdave\n"
                                 "Me@example.com:me@gmail.com\n"
                                 "alice: \\alice, alice@gmail.com\n"
                                 "bob: bob, \"bob@mail.example\"\n"
                                 "odd: \"x\\\"y\"@remote.example, \"a,b\"@remote.example,\n"
                                 "pipe: \"|/usr/bin/tracker --new, --quiet\", |  /bin/true  \n"
                                 "*: me\n",
                                 false, true);
    const struct alias *al;

    assert_int_equal(aliases_count(a), 8);
    al = find(a, "sales", "example.com");
    assert_non_null(al);
    assert_string_equal(al->addr, "sales@example.com");
    assert_int_equal(al->name_len, 5);
    assert_string_equal(al->file, "F");
    assert_int_equal(al->line, 3);
    assert_int_equal(al->seq, 0);
    assert_int_equal(al->ntargets, 2);
    assert_target(al, 0, ALIAS_T_ADDR, "alice@example.com");
    assert_target(al, 1, ALIAS_T_ADDR, "Bob@example.com"); /* domain lowercased only */

    al = find(a, "LIST", "EXAMPLE.com");
    assert_non_null(al);
    assert_int_equal(al->line, 5);
    assert_int_equal(al->ntargets, 3);
    assert_target(al, 0, ALIAS_T_ADDR, "alice@example.com");
    assert_target(al, 1, ALIAS_T_ADDR, "carol@other.org");
    assert_target(al, 2, ALIAS_T_ADDR, "dave@example.com");

    al = find(a, "me", "example.com");
    assert_non_null(al);
    assert_string_equal(al->addr, "me@example.com");
    assert_target(al, 0, ALIAS_T_ADDR, "me@gmail.com");

    /* "\alice" and a self reference are the user's own mailbox. */
    al = find(a, "alice", "example.com");
    assert_target(al, 0, ALIAS_T_MAILBOX, "alice@example.com");
    assert_target(al, 1, ALIAS_T_ADDR, "alice@gmail.com");
    al = find(a, "bob", "example.com");
    assert_target(al, 0, ALIAS_T_MAILBOX, "bob@example.com");
    assert_target(al, 1, ALIAS_T_ADDR, "bob@mail.example");

    /* Quotes: kept in an address's quoted local part, removed around a
     * whole target; a trailing comma is fine. */
    al = find(a, "odd", "example.com");
    assert_int_equal(al->ntargets, 2);
    assert_target(al, 0, ALIAS_T_ADDR, "\"x\\\"y\"@remote.example");
    assert_target(al, 1, ALIAS_T_ADDR, "\"a,b\"@remote.example");

    al = find(a, "pipe", "example.com");
    assert_int_equal(al->ntargets, 2);
    assert_target(al, 0, ALIAS_T_PIPE, "/usr/bin/tracker --new, --quiet");
    assert_target(al, 1, ALIAS_T_PIPE, "/bin/true");

    al = find(a, "*", "example.com");
    assert_non_null(al);
    assert_int_equal(al->name_len, 1);
    assert_target(al, 0, ALIAS_T_ADDR, "me@example.com");

    assert_null(find(a, "nobody", "example.com"));
    assert_null(find(a, "sales", "example.org"));
    assert_null(find(a, "sale", "example.com"));
    assert_null(find(a, "saless", "example.com"));
    assert_null(find(a, "", "example.com"));

    /* The first alias of the file, not counting the catch-all. */
    al = aliases_first(a, "Example.Com", 11);
    assert_non_null(al);
    assert_string_equal(al->addr, "sales@example.com");
    assert_null(aliases_first(a, "other.org", 9));
    aliases_free(a);
}

static void test_case_sensitive(void **state)
{
    struct aliases *a = parse_ok("Sales: a\nsales: b\n", true, false);
    const struct alias *al = find(a, "Sales", "example.com");
    assert_non_null(al);
    assert_string_equal(al->addr, "Sales@example.com");
    assert_string_equal(find(a, "sales", "EXAMPLE.COM")->addr, "sales@example.com");
    assert_null(find(a, "SALES", "example.com"));
    aliases_free(a);

    a = parse_ok("Sales: a\n", false, false);
    assert_string_equal(find(a, "SALES", "example.com")->addr, "sales@example.com");
    aliases_free(a);
}

static void test_domains(void **state)
{
    struct aliases *a = aliases_new(false, false);
    char err[256];
    const char *one = "*: x@remote.example\nb: x\na: x\n", *two = "a: y\nz: y\n";

    assert_int_equal(aliases_parse(a, "one", "one.test", one, strlen(one), err, sizeof(err)), 0);
    assert_int_equal(aliases_parse(a, "two", "two.test", two, strlen(two), err, sizeof(err)), 0);
    assert_int_equal(aliases_finish(a, err, sizeof(err)), 0);
    assert_string_equal(find(a, "a", "one.test")->targets[0].text, "x@one.test");
    assert_string_equal(find(a, "a", "two.test")->targets[0].text, "y@two.test");
    assert_string_equal(find(a, "a", "two.test")->file, "two");
    assert_null(find(a, "b", "two.test"));
    assert_null(find(a, "*", "two.test"));
    assert_string_equal(aliases_first(a, "one.test", 8)->addr, "b@one.test");
    assert_string_equal(aliases_first(a, "two.test", 8)->addr, "a@two.test");
    /* Parsing after finish is refused. */
    assert_int_equal(aliases_parse(a, "x", "x.test", "a: b\n", 5, err, sizeof(err)), -1);
    aliases_free(a);
}

static void test_errors(void **state)
{
    parse_err("sales alice\n", false, "F:1: expected 'name: target, ...'");
    parse_err("\n# c\n  bob\n", false, "F:3: indented line without an alias before it");
    parse_err("a: b\nsales:\n", false, "F:2: alias without a target");
    parse_err("a: ,, \n", false, "F:1: alias without a target");
    parse_err("a: b\nbugs: |/bin/true\n", false,
              "F:2: pipe target '|/bin/true' needs [local] allow_pipe = on");
    parse_err("bugs: \"|/bin/true, x\"\n", false,
              "F:1: pipe target '|/bin/true, x' needs [local] allow_pipe = on");
    parse_err("bugs: |  \n", true, "F:1: empty command after '|'");
    parse_err("log: /var/log/mail\n", false,
              "F:1: file targets ('/var/log/mail') are not supported; use a local user");
    parse_err("inc: :include:/etc/list\n", false, "F:1: :include: is not supported");
    parse_err("a: \"unterminated\n", false, "F:1: unterminated quote");
    parse_err("a: b c\n", false,
              "F:1: 'b c' is not an address (expected name, name@domain, \\name or |command)");
    parse_err("a: b@\n", false,
              "F:1: 'b@' is not an address (expected name, name@domain, \\name or |command)");
    parse_err("a: b@bad_domain\n", false,
              "F:1: 'b@bad_domain' is not an address (expected name, name@domain, \\name or "
              "|command)");
    parse_err("a@other.com: b\n", false,
              "F:1: alias 'a@other.com' is not in domain example.com (this file holds the "
              "aliases of example.com only)");
    parse_err("a b: c\n", false,
              "F:1: 'a b' is not an alias name (a local part, or * for the catch-all)");
    parse_err("**: c\n", false,
              "F:1: '**' is not an alias name (a local part, or * for the catch-all)");
    parse_err(": c\n", false, "F:1: '' is not an alias name (a local part, or * for the catch-all)");
    parse_err("sales: a\nx: y\n\nSALES: b\n", false,
              "F:4: alias sales@example.com is already defined at line 1 (names compare "
              "without case)");
    parse_err("*: a\n*: b\n", false, "F:2: alias *@example.com is already defined at line 1 "
                                     "(names compare without case)");
    {
        struct aliases *a = aliases_new(false, false);
        char err[128];
        assert_int_equal(aliases_parse(a, "F", "example.com", "a: b\0c", 6, err, sizeof(err)), -1);
        assert_string_equal(err, "F: NUL byte in the file");
        aliases_free(a);
    }
}

static void test_load_file(void **state)
{
    char dir[] = "/tmp/ortoo-aliases-XXXXXX", path[64], err[256];
    struct aliases *a = aliases_new(false, false);
    FILE *f;

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/aliases", dir);
    /* A missing file is an empty one. */
    assert_int_equal(aliases_load_file(a, path, "example.com", err, sizeof(err)), 0);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("x: y\nz\n", f);
    fclose(f);
    assert_int_equal(aliases_load_file(a, path, "example.com", err, sizeof(err)), -1);
    char want[128];
    snprintf(want, sizeof(want), "%s:2: expected 'name: target, ...'", path);
    assert_string_equal(err, want);
    aliases_free(a);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forms),  cmocka_unit_test(test_case_sensitive),
        cmocka_unit_test(test_domains), cmocka_unit_test(test_errors),
        cmocka_unit_test(test_load_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
