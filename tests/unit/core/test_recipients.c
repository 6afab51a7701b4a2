/* SPDX-License-Identifier: MIT */
/*
 * test_recipients.c - unit tests for core/recipients.c over tables loaded
 * from real files (users_load_opts): users, case, plus-addressing, alias
 * chains across domains, remote and pipe targets, catch-all precedence,
 * postmaster@/abuse@ rules, SRS addresses, duplicate merging, and the
 * load-time checks (loops with file:line, chain depth, dangling targets).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"
#include "core/recipients.h"
#include "core/srs.h"
#include "core/users.h"

#define H "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g"

static char dir[PATH_MAX];
static char warnings[5 * PATH_MAX + 2048];

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(p);
}

static int setup(void **state)
{
    strcpy(dir, "/tmp/ortoo-rcpt-XXXXXX");
    assert_non_null(mkdtemp(dir));
    warnings[0] = '\0';
    return 0;
}

static int teardown(void **state)
{
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static void put(const char *rel, const char *text)
{
    char path[PATH_MAX + 64], tmp[PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    for (char *p = strchr(path + strlen(dir) + 1, '/'); p; p = strchr(p + 1, '/')) {
        snprintf(tmp, sizeof(tmp), "%.*s", (int)(p - path), path);
        mkdir(tmp, 0755);
    }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void on_warn(void *arg, const char *msg)
{
    size_t n = strlen(warnings);
    snprintf(warnings + n, sizeof(warnings) - n, "%s\n", msg);
}

static struct users *load(bool case_sensitive, const char *plus)
{
    struct users_opts o = {.case_sensitive = case_sensitive, .allow_pipe = true,
                           .plus_separator = plus, .warn = on_warn};
    struct users *u = NULL;
    char err[512] = "";
    if (users_load_opts(dir, &o, &u, err, sizeof(err)) != 0)
        fail_msg("load failed: %s", err);
    return u;
}

static void load_err(const char *want_suffix)
{
    struct users_opts o = {.allow_pipe = true, .warn = on_warn};
    struct users *u = NULL;
    char err[512] = "", want[PATH_MAX + 512];
    assert_int_equal(users_load_opts(dir, &o, &u, err, sizeof(err)), -1);
    assert_null(u);
    snprintf(want, sizeof(want), "%s/domains%s", dir, want_suffix);
    if (strcmp(err, want) != 0)
        fail_msg("\n got: %s\nwant: %s", err, want);
}

/* Resolve and describe the result as "status how: kind:addr[/domain] ..."
 * (destinations sorted as they came). */
static const char *R(const struct users *u, const struct config *cfg, const char *addr)
{
    static char out[2048];
    struct rcpt_result r = {0};
    int rc = recipients_resolve(u, cfg, addr, strlen(addr), 1709294400, &r);
    size_t n;

    if (rc < 0) {
        snprintf(out, sizeof(out), "error %d %s", rc, r.how);
        rcpt_result_free(&r);
        return out;
    }
    assert_int_equal(rc, (int)r.status);
    /* The check-only form agrees. */
    assert_int_equal(recipients_resolve(u, cfg, addr, strlen(addr), 1709294400, NULL), rc);
    n = (size_t)snprintf(out, sizeof(out), "%s %s:", rcpt_status_name(rc), r.how);
    for (size_t i = 0; i < r.ndests; i++) {
        const struct rcpt_dest *d = &r.dests[i];
        static const char *const k[] = {"mbox", "fwd", "pipe"};
        if (d->kind == RCPT_MAILBOX) {
            assert_int_equal(d->addr[d->local_len], '@');
            assert_string_equal(d->domain, d->addr + d->local_len + 1);
        }
        n += (size_t)snprintf(out + n, sizeof(out) - n, " %s:%s", k[d->kind], d->addr);
        if (d->kind != RCPT_MAILBOX && d->domain != NULL)
            n += (size_t)snprintf(out + n, sizeof(out) - n, "/%s", d->domain);
    }
    rcpt_result_free(&r);
    return out;
}

static void test_users_and_case(void **state)
{
    put("domains/example.com/users", "bob@example.com:" H "\nAlice@example.com:" H "\n");
    put("domains/Other.ORG/users", "");
    struct users *u = load(false, NULL);

    assert_string_equal(R(u, NULL, "alice@example.com"), "local user: mbox:alice@example.com");
    assert_string_equal(R(u, NULL, "ALICE@EXAMPLE.COM"), "local user: mbox:alice@example.com");
    assert_string_equal(R(u, NULL, "Bob@Example.Com"), "local user: mbox:bob@example.com");
    assert_string_equal(R(u, NULL, "\"bob\"@example.com"), "local user: mbox:bob@example.com");
    assert_string_equal(R(u, NULL, "carol@example.com"), "unknown no-such-user:");
    assert_string_equal(R(u, NULL, "carol@other.org"), "unknown no-such-user:");
    assert_string_equal(R(u, NULL, "bob@example.net"), "not-local not-local:");
    assert_string_equal(R(u, NULL, "bob"), "not-local not-local:");
    assert_string_equal(R(u, NULL, "@example.com"), "not-local not-local:");
    assert_string_equal(users_first(u, "example.com", 11), "bob@example.com"); /* file order */
    assert_null(users_first(u, "other.org", 9));
    users_free(u);

    /* Case-sensitive: exact local parts, and two users may differ in case. */
    put("domains/example.com/users", "alice@example.com:" H "\nAlice@example.com:" H "\n");
    u = load(true, NULL);
    assert_string_equal(R(u, NULL, "Alice@example.com"), "local user: mbox:Alice@example.com");
    assert_string_equal(R(u, NULL, "alice@EXAMPLE.com"), "local user: mbox:alice@example.com");
    assert_string_equal(R(u, NULL, "ALICE@example.com"), "unknown no-such-user:");
    users_free(u);
    /* ... which is a duplicate when local parts compare without case. */
    load_err(": user alice@example.com is listed twice (local parts compare without case: "
             "[local] case_sensitive = off)");
}

/* A domain configured by its A-labels is ours under its U-labels too (RCPT
 * with SMTPUTF8); the mailbox is the configured one. */
static void test_idn_domain(void **state)
{
    put("domains/xn--bcher-kva.example/users", "juergen@xn--bcher-kva.example:" H "\n");
    put("domains/xn--bcher-kva.example/aliases", "*: juergen@xn--bcher-kva.example\n");
    struct users *u = load(false, NULL);

    assert_string_equal(R(u, NULL, "juergen@b\xc3\xbc" "cher.example"),
                        "local user: mbox:juergen@xn--bcher-kva.example");
    assert_string_equal(R(u, NULL, "Juergen@B\xc3\x9c" "CHER.example"),
                        "local user: mbox:juergen@xn--bcher-kva.example");
    assert_string_equal(R(u, NULL, "juergen@xn--bcher-kva.example"),
                        "local user: mbox:juergen@xn--bcher-kva.example");
    assert_string_equal(R(u, NULL, "j\xc3\xbc" "rgen@b\xc3\xbc" "cher.example"),
                        "local catch-all: mbox:juergen@xn--bcher-kva.example");
    assert_string_equal(R(u, NULL, "juergen@b\xc3\xa4" "cher.example"), "not-local not-local:");
    assert_string_equal(R(u, NULL, "juergen@a\xe2\x98\x83" "b.example"), "not-local not-local:");
    users_free(u);
}

static void test_plus(void **state)
{
    put("domains/example.com/users", "alice@example.com:" H "\na+b@example.com:" H "\n");
    put("domains/example.com/aliases", "sales: alice\n");
    struct users *u = load(false, NULL);

    assert_string_equal(R(u, NULL, "alice+news@example.com"), "local plus: mbox:alice@example.com");
    assert_string_equal(R(u, NULL, "Alice+News+More@example.com"),
                        "local plus: mbox:alice@example.com");
    assert_string_equal(R(u, NULL, "sales+q3@example.com"), "local plus: mbox:alice@example.com");
    /* An exact name wins over the stripped one. */
    assert_string_equal(R(u, NULL, "a+b@example.com"), "local user: mbox:a+b@example.com");
    assert_string_equal(R(u, NULL, "a+c@example.com"), "unknown no-such-user:");
    /* A separator at the start is no tag. */
    assert_string_equal(R(u, NULL, "+alice@example.com"), "unknown no-such-user:");
    assert_string_equal(R(u, NULL, "alice-x@example.com"), "unknown no-such-user:");
    users_free(u);

    u = load(false, "+-");
    assert_string_equal(R(u, NULL, "alice-x@example.com"), "local plus: mbox:alice@example.com");
    assert_string_equal(R(u, NULL, "alice+x@example.com"), "local plus: mbox:alice@example.com");
    users_free(u);
    u = load(false, "");
    assert_string_equal(R(u, NULL, "alice+x@example.com"), "unknown no-such-user:");
    users_free(u);
}

static void test_aliases_and_catchall(void **state)
{
    put("domains/example.com/users", "alice@example.com:" H "\nbob@example.com:" H "\n");
    put("domains/example.com/aliases",
        "sales: team, carol@partner.example\n"
        "team: alice, bob, Alice\n"          /* alice twice: merged */
        "all: team, sales, alice\n"
        "me: me@gmail.com\n"
        "alice: \\alice, alice@gmail.com\n"
        "bob: bob, bob@gmail.com\n"
        "bugs: \"|/usr/bin/tracker new\"\n"
        "other: x@other.test\n"
        "*: me\n");
    put("domains/other.test/aliases", "x: y@elsewhere.example, alice@example.com\n");
    struct users *u = load(false, NULL);

    assert_string_equal(R(u, NULL, "sales@example.com"),
                        "local alias: mbox:alice@example.com fwd:alice@gmail.com/example.com "
                        "mbox:bob@example.com fwd:bob@gmail.com/example.com "
                        "fwd:carol@partner.example/example.com");
    assert_string_equal(R(u, NULL, "All@example.com"),
                        "local alias: mbox:alice@example.com fwd:alice@gmail.com/example.com "
                        "mbox:bob@example.com fwd:bob@gmail.com/example.com "
                        "fwd:carol@partner.example/example.com");
    /* A user with an alias of the same name: the alias applies. */
    assert_string_equal(R(u, NULL, "alice@example.com"),
                        "local alias: mbox:alice@example.com fwd:alice@gmail.com/example.com");
    assert_string_equal(R(u, NULL, "me@example.com"), "local alias: fwd:me@gmail.com/example.com");
    assert_string_equal(R(u, NULL, "bugs@example.com"),
                        "local alias: pipe:/usr/bin/tracker new/example.com");
    /* The alias behind a pipe or a forward, for the command's RECIPIENT. */
    struct rcpt_result rr = {0};
    assert_int_equal(recipients_resolve(u, NULL, "Bugs+x@example.com", 18, 0, &rr), RCPT_LOCAL);
    assert_int_equal(rr.ndests, 1);
    assert_int_equal(rr.dests[0].kind, RCPT_PIPE);
    assert_string_equal(rr.dests[0].alias, "bugs@example.com");
    rcpt_result_free(&rr);
    assert_int_equal(recipients_resolve(u, NULL, "other@example.com", 17, 0, &rr), RCPT_LOCAL);
    assert_string_equal(rr.dests[0].alias, "x@other.test");
    assert_int_equal(rr.dests[1].kind, RCPT_MAILBOX);
    assert_null(rr.dests[1].alias);
    rcpt_result_free(&rr);
    /* Across local domains; the forward keeps the domain whose alias it is. */
    assert_string_equal(R(u, NULL, "other@example.com"),
                        "local alias: fwd:y@elsewhere.example/other.test "
                        "mbox:alice@example.com fwd:alice@gmail.com/example.com");
    /* The catch-all takes what nothing else matches, and only that. */
    assert_string_equal(R(u, NULL, "random@example.com"),
                        "local catch-all: fwd:me@gmail.com/example.com");
    assert_string_equal(R(u, NULL, "bob+tag@example.com"),
                        "local plus: mbox:bob@example.com fwd:bob@gmail.com/example.com");
    /* other.test has no catch-all. */
    assert_string_equal(R(u, NULL, "random@other.test"), "unknown no-such-user:");
    assert_string_equal(warnings, "");
    users_free(u);
}

static void test_postmaster(void **state)
{
    put("domains/example.com/users", "zed@example.com:" H "\nadam@example.com:" H "\n");
    put("domains/aliased.test/users", "u@aliased.test:" H "\n");
    put("domains/aliased.test/aliases", "postmaster: admin@remote.example\n");
    put("domains/fwd.test/aliases", "me: me@remote.example\nyou: you@remote.example\n");
    put("domains/catch.test/aliases", "me: me@remote.example\n*: all@remote.example\n");
    put("domains/empty.test/users", "");
    struct users *u = load(false, NULL);

    /* The first user of the file (not of the sorted table). */
    assert_string_equal(R(u, NULL, "postmaster@example.com"),
                        "local postmaster: mbox:zed@example.com");
    assert_string_equal(R(u, NULL, "POSTMASTER@EXAMPLE.COM"),
                        "local postmaster: mbox:zed@example.com");
    assert_string_equal(R(u, NULL, "abuse@example.com"), "local postmaster: mbox:zed@example.com");
    assert_string_equal(R(u, NULL, "postmaster+dmarc@example.com"),
                        "local postmaster: mbox:zed@example.com");
    assert_string_equal(R(u, NULL, "postmaster@aliased.test"),
                        "local alias: fwd:admin@remote.example/aliased.test");
    assert_string_equal(R(u, NULL, "abuse@aliased.test"), "local postmaster: mbox:u@aliased.test");
    /* No user: the catch-all, else the first alias. */
    assert_string_equal(R(u, NULL, "postmaster@catch.test"),
                        "local postmaster: fwd:all@remote.example/catch.test");
    assert_string_equal(R(u, NULL, "postmaster@fwd.test"),
                        "local postmaster: fwd:me@remote.example/fwd.test");
    assert_string_equal(R(u, NULL, "postmaster@empty.test"), "unknown no-such-user:");

    /* postmaster@<hostname>: the local domain the host name is under. */
    struct config cfg = {0};
    cfg.hostname = "mx.Example.com";
    assert_string_equal(R(u, &cfg, "postmaster@mx.example.com"),
                        "local postmaster: mbox:zed@example.com");
    assert_string_equal(R(u, &cfg, "alice@mx.example.com"), "not-local not-local:");
    cfg.hostname = "mail.unrelated.example";
    /* Else the first local domain in order (aliased.test). */
    assert_string_equal(R(u, &cfg, "postmaster@mail.unrelated.example"),
                        "local alias: fwd:admin@remote.example/aliased.test");
    users_free(u);
}

static void test_srs_addresses(void **state)
{
    static char s1[] = "first-secret-0123456789", s0[] = "older-secret-0123456789";
    char *secrets[] = {s1, s0, NULL};
    struct config cfg = {0};
    const struct srs srs = {(const char *const *)secrets, 2, 0, '='};
    char fwd[256], want[300];
    time_t t = 1709294400;

    put("domains/example.com/users", "alice@example.com:" H "\n");
    put("domains/example.com/aliases", "*: alice\n");
    struct users *u = load(false, NULL);
    cfg.hostname = "mx.example.com";
    cfg.srs.secrets = secrets;
    cfg.srs.nsecrets = 2;
    cfg.srs.max_age = 21;
    cfg.srs.separator = '=';

    assert_true(srs_forward(&srs, "joe@sender.example", 18, "example.com", t, fwd, sizeof(fwd)) > 0);
    snprintf(want, sizeof(want), "srs srs: fwd:joe@sender.example");
    assert_string_equal(R(u, &cfg, fwd), want);
    /* Made with the older secret, lowercased by some hop: still good. */
    const struct srs old = {(const char *const *)secrets + 1, 1, 0, '='};
    assert_true(srs_forward(&old, "joe@sender.example", 18, "example.com", t, fwd, sizeof(fwd)) > 0);
    for (char *p = fwd; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    assert_string_equal(R(u, &cfg, fwd), "srs srs: fwd:joe@sender.example");
    /* Forged, malformed, expired: refused even with a catch-all. */
    assert_string_equal(R(u, &cfg, "SRS0=AAAA=KH=sender.example=joe@example.com"),
                        "srs-invalid srs-forged:");
    assert_string_equal(R(u, &cfg, "SRS0=xyz@example.com"), "srs-invalid srs-malformed:");
    assert_true(srs_forward(&srs, "joe@sender.example", 18, "example.com", t - 30 * 86400, fwd,
                            sizeof(fwd)) > 0);
    assert_string_equal(R(u, &cfg, fwd), "srs-invalid srs-expired:");
    /* At a domain that is not ours, an SRS address is just not local. */
    assert_string_equal(R(u, &cfg, "SRS0=AAAA=KH=sender.example=joe@example.net"),
                        "not-local not-local:");
    /* The sender of a forward: rewritten for the alias's domain; the null
     * sender, a bounce (no domain) and local mailboxes keep theirs. */
    struct rcpt_dest fwd_d = {RCPT_FORWARD, "me@gmail.example", 0, "example.com", "me@example.com"};
    struct rcpt_dest bounce_d = {RCPT_FORWARD, "joe@sender.example", 0, NULL, NULL};
    struct rcpt_dest mbox_d = {RCPT_MAILBOX, "alice@example.com", 5, "example.com", NULL};
    char out[256], want2[256];
    assert_true(recipients_forward_sender(&cfg, "joe@sender.example", &fwd_d, t, out,
                                          sizeof(out)) > 0);
    assert_true(srs_forward(&srs, "joe@sender.example", 18, "example.com", t, want2,
                            sizeof(want2)) > 0);
    assert_string_equal(out, want2);
    assert_int_equal(recipients_forward_sender(&cfg, "", &fwd_d, t, out, sizeof(out)), 0);
    assert_string_equal(out, "");
    assert_int_equal(recipients_forward_sender(&cfg, "joe@sender.example", &bounce_d, t, out,
                                               sizeof(out)), 18);
    assert_string_equal(out, "joe@sender.example");
    assert_int_equal(recipients_forward_sender(&cfg, "joe@sender.example", &mbox_d, t, out,
                                               sizeof(out)), 18);
    assert_int_equal(recipients_forward_sender(&cfg, "joe@sender.example", &mbox_d, t, out, 5),
                     -ENOSPC);

    /* Without a secret, SRS addresses are ordinary names (the catch-all). */
    cfg.srs.nsecrets = 0;
    assert_string_equal(R(u, &cfg, "SRS0=AAAA=KH=sender.example=joe@example.com"),
                        "local catch-all: mbox:alice@example.com");
    assert_int_equal(recipients_forward_sender(&cfg, "joe@sender.example", &fwd_d, t, out,
                                               sizeof(out)), 18);
    users_free(u);
}

static void test_dangling(void **state)
{
    char want[5 * PATH_MAX + 2048];
    /* A '*' user (made by older versions): a warning, not a refused table. */
    put("domains/example.com/users", "*@example.com:" H "\nalice@example.com:" H "\n");
    put("domains/example.com/aliases", "gone: bob, \\carol\nhalf: alice, bob\n");
    struct users *u = load(false, NULL);

    /* Nothing to deliver to: unknown (refused at RCPT). */
    assert_string_equal(R(u, NULL, "gone@example.com"), "unknown alias-empty:");
    assert_string_equal(R(u, NULL, "half@example.com"), "local alias: mbox:alice@example.com");
    assert_string_equal(R(u, NULL, "*@example.com"), "unknown no-such-user:");
    assert_string_equal(users_first(u, "example.com", 11), "alice@example.com");
    snprintf(want, sizeof(want),
             "%s/domains/example.com/users:1: '*@example.com' is not a user name (a catch-all "
             "is an alias: '*: you@example.com' in the aliases file); line ignored\n"
             "%s/domains/example.com/aliases:1: alias gone@example.com: target bob@example.com "
             "is neither a user nor an alias (ignored)\n"
             "%s/domains/example.com/aliases:1: alias gone@example.com: target \\carol@example.com "
             "is not a user (ignored)\n"
             "%s/domains/example.com/aliases:2: alias half@example.com: target bob@example.com "
             "is neither a user nor an alias (ignored)\n",
             dir, dir, dir, dir);
    assert_string_equal(warnings, want);
    users_free(u);
}

static void test_loops(void **state)
{
    put("domains/example.com/users", "alice@example.com:" H "\n");

    put("domains/example.com/aliases", "a: b\nb: c, alice\nc: a\n");
    load_err("/example.com/aliases:1: alias loop: a@example.com -> b@example.com -> "
             "c@example.com -> a@example.com");
    /* Through plus-addressing and through another domain. */
    put("domains/example.com/aliases", "x: y+tag\ny: z@other.test\n");
    put("domains/other.test/aliases", "z: x@example.com\n");
    load_err("/example.com/aliases:1: alias loop: x@example.com -> y@example.com -> "
             "z@other.test -> x@example.com");
    unlink(strcat(strcpy((char[PATH_MAX + 64]){0}, dir), "/domains/other.test/aliases"));
    /* Through the postmaster rule and the catch-all (no user in loop.test). */
    put("domains/loop.test/aliases", "*: postmaster\n");
    put("domains/example.com/aliases", "");
    load_err("/loop.test/aliases:1: alias loop: *@loop.test -> *@loop.test");
    unlink(strcat(strcpy((char[PATH_MAX + 64]){0}, dir), "/domains/loop.test/aliases"));

    /* A self reference is the user's mailbox, not a loop. */
    put("domains/example.com/aliases", "alice: alice, alice@gmail.com\n");
    struct users *u = load(false, NULL);
    assert_string_equal(R(u, NULL, "alice@example.com"),
                        "local alias: mbox:alice@example.com fwd:alice@gmail.com/example.com");
    users_free(u);

    /* Depth: a chain of RCPT_DEPTH_MAX aliases is fine, one more is not. */
    char text[1024] = "";
    for (int i = 0; i < RCPT_DEPTH_MAX - 1; i++)
        snprintf(text + strlen(text), sizeof(text) - strlen(text), "a%d: a%d\n", i, i + 1);
    snprintf(text + strlen(text), sizeof(text) - strlen(text), "a%d: alice\n",
             RCPT_DEPTH_MAX - 1);
    put("domains/example.com/aliases", text);
    u = load(false, NULL);
    assert_string_equal(R(u, NULL, "a0@example.com"), "local alias: mbox:alice@example.com");
    users_free(u);
    text[0] = '\0';
    for (int i = 0; i < RCPT_DEPTH_MAX; i++)
        snprintf(text + strlen(text), sizeof(text) - strlen(text), "a%d: a%d\n", i, i + 1);
    snprintf(text + strlen(text), sizeof(text) - strlen(text), "a%d: alice\n", RCPT_DEPTH_MAX);
    put("domains/example.com/aliases", text);
    load_err("/example.com/aliases:1: alias chain longer than 8: a0@example.com -> "
             "a1@example.com -> a2@example.com -> a3@example.com -> a4@example.com -> "
             "a5@example.com -> a6@example.com -> a7@example.com -> a8@example.com");
    /* The same depth reached through an alias checked before. */
    text[0] = '\0';
    for (int i = 1; i < RCPT_DEPTH_MAX; i++)
        snprintf(text + strlen(text), sizeof(text) - strlen(text), "a%d: a%d\n", i, i + 1);
    snprintf(text + strlen(text), sizeof(text) - strlen(text), "a%d: alice\nz: a1\ny: z\n",
             RCPT_DEPTH_MAX);
    put("domains/example.com/aliases", text);
    load_err("/example.com/aliases:10: alias chain longer than 8: y@example.com -> "
             "z@example.com -> ... (10 aliases)");
}

static void test_limits(void **state)
{
    char *p;
    put("domains/example.com/users", "alice@example.com:" H "\n");
    size_t cap = (size_t)(RCPT_DESTS_MAX + 1) * 24 + 16;
    char *big = malloc(cap);
    assert_non_null(big);
    p = big + sprintf(big, "big:");
    for (int i = 0; i < RCPT_DESTS_MAX + 1; i++)
        p += sprintf(p, " r%d@remote.example,", i);
    strcpy(p, "\n");
    put("domains/example.com/aliases", big);
    free(big);
    struct users *u = load(false, NULL);
    assert_string_equal(R(u, NULL, "big@example.com"), "error -7 too-many-destinations");
    assert_int_equal(recipients_resolve(u, NULL, "big@example.com", 15, 0, NULL), -E2BIG);
    users_free(u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_users_and_case, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idn_domain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plus, setup, teardown),
        cmocka_unit_test_setup_teardown(test_aliases_and_catchall, setup, teardown),
        cmocka_unit_test_setup_teardown(test_postmaster, setup, teardown),
        cmocka_unit_test_setup_teardown(test_srs_addresses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dangling, setup, teardown),
        cmocka_unit_test_setup_teardown(test_loops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
