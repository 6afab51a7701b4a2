/* SPDX-License-Identifier: MIT */
/*
 * test_config.c - unit tests for core/config.c: writes ortoo.conf files into
 * a mkdtemp() directory and checks the defaults, every key, relative path
 * resolution, listen lists (IPv4, IPv6, ":port", continuation lines), and the
 * exact "file:line: message" of each error; plus config_parse_addr() and
 * config_parse_size().  Includes the source to reach its statics.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "core/config.c"

static char tmpdir[PATH_MAX];   /* realpath of the test directory */
static char conf[PATH_MAX + 16];

static void write_conf(const char *text, size_t len)
{
    FILE *f = fopen(conf, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static struct config *load_ok(const char *text)
{
    struct config *cfg = NULL;
    char err[512] = "";
    write_conf(text, strlen(text));
    if (config_load(tmpdir, &cfg, err, sizeof(err)) != 0)
        fail_msg("config_load failed: %s", err);
    assert_non_null(cfg);
    return cfg;
}

/* Load text and expect the error "<conf>:<want>" (want starts with the line
 * number, or ": " for errors without a line). */
static void load_err_len(const char *text, size_t len, const char *want)
{
    struct config *cfg = (struct config *)1;
    char err[512] = "", exp[2 * PATH_MAX];
    write_conf(text, len);
    assert_int_equal(config_load(tmpdir, &cfg, err, sizeof(err)), -1);
    assert_null(cfg);
    snprintf(exp, sizeof(exp), "%s%s", conf, want);
    if (strcmp(err, exp) != 0)
        fail_msg("\n got: %s\nwant: %s", err, exp);
}

static void load_err(const char *text, const char *want)
{
    load_err_len(text, strlen(text), want);
}

static int setup(void **state)
{
    char tmpl[] = "/tmp/ortoo-test-config.XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    assert_non_null(realpath(tmpl, tmpdir));
    snprintf(conf, sizeof(conf), "%s/ortoo.conf", tmpdir);
    return 0;
}

static int teardown(void **state)
{
    unlink(conf);
    rmdir(tmpdir);
    return 0;
}

#define MIN_LISTEN "[listen]\nsmtp = 127.0.0.1:0\n"

static void test_defaults(void **state)
{
    struct config *cfg = load_ok(MIN_LISTEN);
    char want[PATH_MAX + 32], host[HOST_NAME_MAX + 1] = "";

    assert_string_equal(cfg->dir, tmpdir);
    assert_string_equal(cfg->file, conf);
    gethostname(host, sizeof(host) - 1);
    assert_string_equal(cfg->hostname, host);
    assert_string_equal(cfg->spool, "/var/spool/ortoo");
    assert_string_equal(cfg->user, "ortoo");
    assert_null(cfg->control_group);
    snprintf(want, sizeof(want), "%s/certs", tmpdir);
    assert_string_equal(cfg->cert_dir, want);
    assert_int_equal(cfg->reactors, 0);
    assert_int_equal(cfg->io, IO_BACKEND_AUTO);
    assert_true(cfg->max_message_size == 25u * 1024 * 1024);
    assert_int_equal(cfg->max_recipients, 1000);
    assert_int_equal(cfg->max_errors, 10);
    assert_int_equal(cfg->max_connections, 10000);
    assert_int_equal(cfg->timeout_command, 300);
    assert_int_equal(cfg->timeout_data, 180);
    assert_int_equal(cfg->timeout_tls, 30);
    assert_int_equal(cfg->batch_delay_us, 0);
    assert_int_equal(cfg->spool_opts.journal_delay_ms, 10);
    assert_string_equal(cfg->log_level, "info");
    assert_int_equal(cfg->ticket_rotate, 3600);
    assert_int_equal(cfg->auth_workers, 2);
    assert_int_equal(cfg->auth_cache_ttl, 3600);
    assert_int_equal(cfg->auth_max_failures, 5);
    assert_int_equal(cfg->auth_fail_window, 300);
    assert_int_equal(cfg->nlistens, 1);
    assert_int_equal(cfg->listens[0].role, ROLE_SMTP);
    assert_string_equal(cfg->listens[0].text, "127.0.0.1:0");
    config_free(cfg);
}

static void test_every_key(void **state)
{
    struct config *cfg = load_ok("; a comment\n"
                                 "# another\n"
                                 "[server]\n"
                                 "hostname = mx1.example.com\n"
                                 "spool = /var/spool/ortoo\n"
                                 "reactors = 4\n"
                                 "io = epoll\n"
                                 "max_message_size = 10M\n"
                                 "max_recipients = 50\n"
                                 "max_errors = 3\n"
                                 "max_connections = 200\n"
                                 "timeout_command = 60\n"
                                 "timeout_data = 90\n"
                                 "timeout_tls = 5\n"
                                 "batch_delay_us = 500   ; inline comment\n"
                                 "log_level = debug\n"
                                 "\n"
                                 "[listen]\n"
                                 "smtp = 127.0.0.1:2525, [::1]:2525\n"
                                 "submission = :587\n"
                                 "submissions = [::]:465\n"
                                 "[tls]\n"
                                 "cert_dir = tls\n"
                                 "ticket_rotate = 600\n"
                                 "[auth]\n"
                                 "workers = 8\n"
                                 "cache_ttl = 0\n"
                                 "max_failures = 9\n"
                                 "fail_window = 120\n");
    char want[PATH_MAX + 32];

    assert_string_equal(cfg->hostname, "mx1.example.com");
    assert_string_equal(cfg->spool, "/var/spool/ortoo");
    assert_int_equal(cfg->reactors, 4);
    assert_int_equal(cfg->io, IO_BACKEND_EPOLL);
    assert_true(cfg->max_message_size == 10u << 20);
    assert_int_equal(cfg->max_recipients, 50);
    assert_int_equal(cfg->max_errors, 3);
    assert_int_equal(cfg->max_connections, 200);
    assert_int_equal(cfg->timeout_command, 60);
    assert_int_equal(cfg->timeout_data, 90);
    assert_int_equal(cfg->timeout_tls, 5);
    assert_int_equal(cfg->batch_delay_us, 500);
    assert_string_equal(cfg->log_level, "debug");
    snprintf(want, sizeof(want), "%s/tls", tmpdir);
    assert_string_equal(cfg->cert_dir, want);
    assert_int_equal(cfg->ticket_rotate, 600);
    assert_int_equal(cfg->auth_workers, 8);
    assert_int_equal(cfg->auth_cache_ttl, 0);
    assert_int_equal(cfg->auth_max_failures, 9);
    assert_int_equal(cfg->auth_fail_window, 120);

    assert_int_equal(cfg->nlistens, 4);
    const struct config_listen *l = cfg->listens;
    assert_int_equal(l[0].role, ROLE_SMTP);
    assert_string_equal(l[0].text, "127.0.0.1:2525");
    assert_int_equal(l[0].addr.ss_family, AF_INET);
    assert_int_equal(l[0].addr_len, sizeof(struct sockaddr_in));
    const struct sockaddr_in *a4 = (const void *)&l[0].addr;
    assert_int_equal(ntohs(a4->sin_port), 2525);
    assert_int_equal(ntohl(a4->sin_addr.s_addr), INADDR_LOOPBACK);

    assert_int_equal(l[1].role, ROLE_SMTP);
    assert_string_equal(l[1].text, "[::1]:2525");
    assert_int_equal(l[1].addr.ss_family, AF_INET6);
    assert_int_equal(l[1].addr_len, sizeof(struct sockaddr_in6));
    const struct sockaddr_in6 *a6 = (const void *)&l[1].addr;
    assert_int_equal(ntohs(a6->sin6_port), 2525);
    assert_memory_equal(&a6->sin6_addr, &in6addr_loopback, sizeof(in6addr_loopback));

    assert_int_equal(l[2].role, ROLE_SUBMISSION);
    a4 = (const void *)&l[2].addr;
    assert_int_equal(l[2].addr.ss_family, AF_INET);
    assert_int_equal(ntohs(a4->sin_port), 587);
    assert_int_equal(a4->sin_addr.s_addr, htonl(INADDR_ANY));

    assert_int_equal(l[3].role, ROLE_SUBMISSIONS);
    a6 = (const void *)&l[3].addr;
    assert_int_equal(l[3].addr.ss_family, AF_INET6);
    assert_int_equal(ntohs(a6->sin6_port), 465);
    assert_memory_equal(&a6->sin6_addr, &in6addr_any, sizeof(in6addr_any));
    config_free(cfg);

    /* Other accepted spellings. */
    cfg = load_ok("[server]\r\nreactors = auto\r\nio = uring\r\nmax_message_size = 1G\r\n"
                  "log_level = warn\r\n[listen]\r\nsmtp=127.0.0.1:0\r\n");
    assert_int_equal(cfg->reactors, 0);
    assert_int_equal(cfg->io, IO_BACKEND_URING);
    assert_true(cfg->max_message_size == 1ull << 30);
    assert_string_equal(cfg->log_level, "warn");
    config_free(cfg);
    cfg = load_ok("\xEF\xBB\xBF[server]\nreactors = 256\nio = auto\n" MIN_LISTEN);
    assert_int_equal(cfg->reactors, 256);
    config_free(cfg);
}

static void test_listen_lists(void **state)
{
    /* Continuation lines (indented) extend a listen list; port 0 repeats. */
    struct config *cfg = load_ok("[listen]\n"
                                 "smtp = 127.0.0.1:0,\n"
                                 "    [::1]:0, 127.0.0.1:0\n"
                                 "\t127.0.0.2:25\n"
                                 "submission =\n"
                                 "submissions = [::1]:0\n");
    assert_int_equal(cfg->nlistens, 5);
    assert_string_equal(cfg->listens[1].text, "[::1]:0");
    assert_string_equal(cfg->listens[3].text, "127.0.0.2:25");
    assert_int_equal(cfg->listens[3].role, ROLE_SMTP);
    assert_int_equal(cfg->listens[4].role, ROLE_SUBMISSIONS);
    config_free(cfg);
}

static void test_paths(void **state)
{
    char want[PATH_MAX + 32];
    struct config *cfg = load_ok("[server]\nspool = var/q\n[tls]\ncert_dir = /etc/x\n" MIN_LISTEN);
    snprintf(want, sizeof(want), "%s/var/q", tmpdir);
    assert_string_equal(cfg->spool, want);
    assert_string_equal(cfg->cert_dir, "/etc/x");
    config_free(cfg);

    /* The directory given relative is made absolute. */
    char cwd[PATH_MAX], err[512];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir("/tmp"), 0);
    const char *rel = tmpdir + strlen("/tmp/");
    if (strncmp(tmpdir, "/tmp/", 5) == 0) {
        char dotted[PATH_MAX];
        snprintf(dotted, sizeof(dotted), "./%s/.", rel);
        assert_int_equal(config_load(dotted, &cfg, err, sizeof(err)), 0);
        assert_string_equal(cfg->dir, tmpdir);
        assert_string_equal(cfg->file, conf);
        config_free(cfg);
    }
    assert_int_equal(chdir(cwd), 0);
}

static void test_errors(void **state)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"[server]\nbogus = 1\n" MIN_LISTEN, ":2: unknown key 'bogus' in [server]"},
        {MIN_LISTEN "[extra]\n", ":3: unknown section [extra]"},
        {MIN_LISTEN "[Server]\nhostname = x\n", ":3: unknown section [Server]"},
        {MIN_LISTEN "[tls]\n  [bad]\n", ":4: unknown section [bad]"},
        {"[server]\nio = epoll\n\n; c\n  [bad]\n" MIN_LISTEN,
         ":5: indented line is read as a continuation of 'io'; remove the indentation"},
        {"hostname = x\n" MIN_LISTEN,
         ":1: 'hostname' outside of a section ([server], [listen], [tls], [auth], "
         "[resolver], [delivery], [routes], [destination DOMAIN])"},
        {"[server]\nreactors = 2\nreactors = 3\n" MIN_LISTEN,
         ":3: duplicate key 'reactors' in [server]"},
        {"[server]\nreactors = 2\n[auth]\n[server]\nreactors = 3\n" MIN_LISTEN,
         ":5: duplicate key 'reactors' in [server]"},
        {MIN_LISTEN "smtp = 127.0.0.1:1\n", ":3: duplicate key 'smtp' in [listen]"},
        {"[server]\nreactors = 0\n" MIN_LISTEN,
         ":2: [server] reactors: expected auto or a number from 1 to 256, got '0'"},
        {"[server]\nreactors = 257\n" MIN_LISTEN,
         ":2: [server] reactors: expected auto or a number from 1 to 256, got '257'"},
        {"[server]\nreactors = -1\n" MIN_LISTEN,
         ":2: [server] reactors: expected auto or a number from 1 to 256, got '-1'"},
        {"[server]\nio = kqueue\n" MIN_LISTEN,
         ":2: [server] io: expected auto, uring or epoll, got 'kqueue'"},
        {"[server]\nlog_level = trace\n" MIN_LISTEN,
         ":2: [server] log_level: expected warn, info or debug, got 'trace'"},
        {"[server]\n\n\nmax_message_size = 25X\n" MIN_LISTEN,
         ":4: [server] max_message_size: expected a size such as 1000, 512K, 25M or 1G, "
         "got '25X'"},
        {"[server]\nmax_message_size = 0\n" MIN_LISTEN,
         ":2: [server] max_message_size: expected a size such as 1000, 512K, 25M or 1G, "
         "got '0'"},
        {"[server]\nmax_recipients = 0\n" MIN_LISTEN,
         ":2: [server] max_recipients: expected a number from 1 to 1000000, got '0'"},
        {"[server]\nmax_errors = 1e3\n" MIN_LISTEN,
         ":2: [server] max_errors: expected a number from 1 to 1000, got '1e3'"},
        {"[server]\nmax_connections = 99999999999999999999999\n" MIN_LISTEN,
         ":2: [server] max_connections: expected a number from 1 to 1000000, got "
         "'99999999999999999999999'"},
        {"[server]\ntimeout_command = \n" MIN_LISTEN,
         ":2: [server] timeout_command: expected a number from 1 to 86400, got ''"},
        {"[server]\ntimeout_data = 86401\n" MIN_LISTEN,
         ":2: [server] timeout_data: expected a number from 1 to 86400, got '86401'"},
        {"[server]\ntimeout_tls = 0\n" MIN_LISTEN,
         ":2: [server] timeout_tls: expected a number from 1 to 3600, got '0'"},
        {"[server]\nbatch_delay_us = 1000001\n" MIN_LISTEN,
         ":2: [server] batch_delay_us: expected a number from 0 to 1000000, got '1000001'"},
        {"[spool]\njournal_delay_ms = 10001\n" MIN_LISTEN,
         ":2: [spool] journal_delay_ms: expected a number from 0 to 10000, got '10001'"},
        {"[server]\nhostname = bad_host\n" MIN_LISTEN,
         ":2: [server] hostname: 'bad_host' is not a valid host name"},
        {"[server]\nhostname = -a.b\n" MIN_LISTEN,
         ":2: [server] hostname: '-a.b' is not a valid host name"},
        {"[server]\nspool =\n" MIN_LISTEN, ":2: [server] spool: empty path"},
        {"[tls]\nticket_rotate = 59\n" MIN_LISTEN,
         ":2: [tls] ticket_rotate: expected a number from 60 to 604800, got '59'"},
        {"[tls]\ncert_dir = \n" MIN_LISTEN, ":2: [tls] cert_dir: empty path"},
        {"[auth]\nworkers = 0\n" MIN_LISTEN,
         ":2: [auth] workers: expected a number from 1 to 256, got '0'"},
        {"[auth]\ncache_ttl = x\n" MIN_LISTEN,
         ":2: [auth] cache_ttl: expected a number from 0 to 604800, got 'x'"},
        {"[auth]\nmax_failures = 0\n" MIN_LISTEN,
         ":2: [auth] max_failures: expected a number from 1 to 1000000, got '0'"},
        {"[auth]\nfail_window = 0\n" MIN_LISTEN,
         ":2: [auth] fail_window: expected a number from 1 to 604800, got '0'"},
        {"[auth]\nauth_workers = 2\n" MIN_LISTEN,
         ":2: unknown key 'auth_workers' in [auth]"},
        {"[listen]\nsmtp = localhost:25\n",
         ":2: [listen] smtp: bad address 'localhost:25' (expected IPv4:port, [IPv6]:port or "
         ":port, with a literal IP)"},
        {"[listen]\nsubmission = 127.0.0.1:587, ::1:587\n",
         ":2: [listen] submission: bad address '::1:587' (expected IPv4:port, [IPv6]:port "
         "or :port, with a literal IP)"},
        {"[listen]\nsubmissions = 127.0.0.1\n",
         ":2: [listen] submissions: bad address '127.0.0.1' (expected IPv4:port, "
         "[IPv6]:port or :port, with a literal IP)"},
        {"[listen]\nsmtp = 127.0.0.1:65536\n",
         ":2: [listen] smtp: bad address '127.0.0.1:65536' (expected IPv4:port, "
         "[IPv6]:port or :port, with a literal IP)"},
        {"[listen]\nsmtp = 127.0.0.1:25,,[::1]:25\n",
         ":2: [listen] smtp: empty address in list"},
        {"[listen]\nsmtp = , 127.0.0.1:25\n", ":2: [listen] smtp: empty address in list"},
        {"[listen]\nsmtp = 127.0.0.1:2525\nsubmission = 127.0.0.1:2525\n",
         ":3: [listen] submission: address 127.0.0.1:2525 already used by smtp"},
        {"[listen]\nsmtp = 127.0.0.1:25,\n  [::1]:25, nope\n",
         ":3: [listen] smtp: bad address 'nope' (expected IPv4:port, [IPv6]:port or :port, "
         "with a literal IP)"},
        {"[listen]\nsmtp = 127.0.0.1:1234567890123456789012345678901234567890123456789012345"
         "67890123456789012345\n",
         ":2: [listen] smtp: address '127.0.0.1:123456789012345678901234567890123456789012345"
         "678901234567890123456789012345' too long"},
        /* libinih syntax errors, and the earliest error wins. */
        {"[server]\nhostname\n" MIN_LISTEN,
         ":2: syntax error (expected [section], key = value or a comment)"},
        {"[server\n" MIN_LISTEN, ":1: syntax error (expected [section], key = value or a "
                                 "comment)"},
        {"[server]\n\nnot a pair\nbogus = 2\n" MIN_LISTEN,
         ":3: syntax error (expected [section], key = value or a comment)"},
        {"[server]\nbogus = 2\nnot a pair\n" MIN_LISTEN, ":2: unknown key 'bogus' in [server]"},
        /* An indented line continues the previous key. */
        {"[server]\nhostname = a.example\n  spool = x\n" MIN_LISTEN,
         ":3: indented line is read as a continuation of 'hostname'; remove the "
         "indentation"},
        /* Missing listeners (no line). */
        {"", ": no listeners: set smtp, submission or submissions in [listen]"},
        {"[listen]\nsmtp =\n", ": no listeners: set smtp, submission or submissions in "
                               "[listen]"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        load_err(cases[i].text, cases[i].want);
}

static void test_errors_raw(void **state)
{
    /* NUL byte on line 3. */
    static const char nul[] = "[server]\nreactors = 2\nio = e\0poll\n" MIN_LISTEN;
    load_err_len(nul, sizeof(nul) - 1, ":3: NUL byte in line");
    /* Line too long for libinih's buffer: refused, not split. */
    char buf[1024];
    int n = snprintf(buf, sizeof(buf), "[server]\n\nhostname = ");
    memset(buf + n, 'a', 300);
    strcpy(buf + n + 300, "\n" MIN_LISTEN);
    char want[64];
    snprintf(want, sizeof(want), ":3: line too long (at most %d characters)", 200 - 3);
    load_err(buf, want);
}

static void test_many_carriage_returns(void **state)
{
    /* A short line ending in more CRs than libinih's buffer holds: the line
     * ends are not text, and were once copied whole into that buffer
     * (found by fuzz_config). */
    char buf[1024];
    int n = snprintf(buf, sizeof(buf), "[server]\nhostname = mx.example.test");
    memset(buf + n, '\r', 500);
    strcpy(buf + n + 500, "\n" MIN_LISTEN);
    struct config *cfg = load_ok(buf);
    assert_string_equal(cfg->hostname, "mx.example.test");
    config_free(cfg);
}

static void test_missing(void **state)
{
    struct config *cfg = (struct config *)1;
    char err[512], want[2 * PATH_MAX];

    unlink(conf);
    assert_int_equal(config_load(tmpdir, &cfg, err, sizeof(err)), -1);
    assert_null(cfg);
    snprintf(want, sizeof(want),
             "%s: not found (the config directory must hold ortoo.conf; see docs/config.md)",
             conf);
    assert_string_equal(err, want);

    assert_int_equal(config_load("/nonexistent-ortoo-dir", &cfg, err, sizeof(err)), -1);
    assert_string_equal(err, "/nonexistent-ortoo-dir: no such configuration directory "
                             "(create one with 'ortoo -c /nonexistent-ortoo-dir init DOMAIN')");

    /* A tiny err buffer is never overrun. */
    char small[8];
    assert_int_equal(config_load("/nonexistent-ortoo-dir", &cfg, small, sizeof(small)), -1);
    assert_string_equal(small, "/nonexi");
}

/* [server] user and control_group, and what a reload cannot apply. */
static void test_operation_keys(void **state)
{
    struct config *a = load_ok("[server]\nuser = mail_er-1\ncontrol_group = adm\n" MIN_LISTEN);
    assert_string_equal(a->user, "mail_er-1");
    assert_string_equal(a->control_group, "adm");
    config_free(a);
    load_err("[server]\nuser = Root\n" MIN_LISTEN,
             ":2: [server] user: 'Root' is not a valid user or group name");
    load_err("[server]\ncontrol_group = a b\n" MIN_LISTEN,
             ":2: [server] control_group: 'a b' is not a valid user or group name");
    load_err("[server]\nuser = \n" MIN_LISTEN,
             ":2: [server] user: '' is not a valid user or group name");
    a = load_ok("[spool]\njournal_delay_ms = 0\n" MIN_LISTEN);
    assert_int_equal(a->spool_opts.journal_delay_ms, 0);
    config_free(a);

    char out[256];
    struct config *cur = load_ok("[server]\nmax_recipients = 5\nreactors = 2\n" MIN_LISTEN);
    struct config *same = load_ok("[server]\nmax_recipients = 7\nreactors = 2\n"
                                  "hostname = other.example\n" MIN_LISTEN);
    assert_int_equal(config_restart_diff(cur, same, out, sizeof(out)), 0);
    assert_string_equal(out, "");
    struct config *next = load_ok("[server]\nreactors = 3\nuser = root\n"
                                  "[listen]\nsmtp = 127.0.0.1:0, [::1]:0\n");
    assert_int_equal(config_restart_diff(cur, next, out, sizeof(out)), 3);
    assert_string_equal(out, "listen,server.reactors,server.user");
    char tiny[10];
    assert_int_equal(config_restart_diff(cur, next, tiny, sizeof(tiny)), 3);
    assert_true(strlen(tiny) < sizeof(tiny));
    config_free(cur);
    config_free(same);
    config_free(next);
}

static void test_parse_addr(void **state)
{
    struct sockaddr_storage ss;
    socklen_t len;

    assert_int_equal(config_parse_addr("127.0.0.1:25", &ss, &len), 0);
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(config_parse_addr(":25", &ss, &len), 0);
    assert_int_equal(((struct sockaddr_in *)&ss)->sin_addr.s_addr, htonl(INADDR_ANY));
    assert_int_equal(ntohs(((struct sockaddr_in *)&ss)->sin_port), 25);
    assert_int_equal(config_parse_addr("[::]:25", &ss, &len), 0);
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_int_equal(config_parse_addr("[2001:db8::1]:65535", &ss, &len), 0);
    assert_int_equal(ntohs(((struct sockaddr_in6 *)&ss)->sin6_port), 65535);
    assert_int_equal(config_parse_addr("[::ffff:1.2.3.4]:0", &ss, &len), 0);
    assert_int_equal(config_parse_addr("0.0.0.0:0", &ss, &len), 0);

    static const char *const bad[] = {
        "", ":", "25", "127.0.0.1", "127.0.0.1:", "127.0.0.1:x", "127.0.0.1:-1",
        "127.0.0.1:65536", "127.0.0.1:000025", "127.0.0.1:25 ", " 127.0.0.1:25",
        "localhost:25", "*:25", "::1:25", "[::1]", "[::1]25", "[]:25", "[::1:25",
        "[127.0.0.1]:25", "[fe80::1%lo]:25", "1.2.3:25", "1.2.3.4.5:25", "[::1]:+1",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (config_parse_addr(bad[i], &ss, &len) != -1)
            fail_msg("accepted '%s'", bad[i]);
}

static void test_parse_size(void **state)
{
    uint64_t v;

    assert_int_equal(config_parse_size("1000", &v), 0);
    assert_int_equal(v, 1000);
    assert_int_equal(config_parse_size("10K", &v), 0);
    assert_int_equal(v, 10240);
    assert_int_equal(config_parse_size("25M", &v), 0);
    assert_int_equal(v, 25u << 20);
    assert_int_equal(config_parse_size("1G", &v), 0);
    assert_int_equal(v, 1u << 30);
    assert_int_equal(config_parse_size("2g", &v), 0);
    assert_true(v == 2ull << 30);
    assert_int_equal(config_parse_size("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(config_parse_size("18446744073709551615", &v), 0);
    assert_true(v == UINT64_MAX);
    assert_int_equal(config_parse_size("17179869183G", &v), 0);      /* 2^64 - 2^30 */
    assert_int_equal(config_parse_size("17179869184G", &v), -1);     /* 2^64 */
    assert_int_equal(config_parse_size("18446744073709551616", &v), -1);
    static const char *const bad[] = {"", "K", "-1", "+1", "1 M", "1MB", "1T", "1.5M", " 1",
                                      "1KK", "0x10"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (config_parse_size(bad[i], &v) != -1)
            fail_msg("accepted '%s'", bad[i]);
}

/* [resolver]: defaults, every key, lists continued and repeated, errors. */
static void test_resolver(void **state)
{
    struct config *cfg = load_ok(MIN_LISTEN);
    assert_true(cfg->resolver.dnssec);
    assert_null(cfg->resolver.trust_anchor);
    assert_int_equal(cfg->resolver.nforwards, 0);
    assert_int_equal(cfg->resolver.nstubs, 0);
    config_free(cfg);

    cfg = load_ok(MIN_LISTEN "[resolver]\n"
                  "dnssec = off ; on | off\n"
                  "trust_anchor = keys/anchors.ds\n"
                  "forward = 127.0.0.1@5353, [::1]@53,\n"
                  "    192.0.2.53\n"
                  "stub = Example.Test 127.0.0.1@5300, 0.0.127.in-addr.arpa. 127.0.0.1@5300,\n"
                  "       other.test. ::1@5301 127.0.0.2\n"
                  "stub = example.test. 127.0.0.3\n");
    struct res_conf *rc = &cfg->resolver;
    assert_false(rc->dnssec);
    char want[PATH_MAX + 32];
    snprintf(want, sizeof(want), "%s/keys/anchors.ds", tmpdir);
    assert_string_equal(rc->trust_anchor, want);
    assert_int_equal(rc->nforwards, 3);
    assert_string_equal(rc->forwards[0], "127.0.0.1@5353");
    assert_string_equal(rc->forwards[1], "::1@53");
    assert_string_equal(rc->forwards[2], "192.0.2.53");
    assert_int_equal(rc->nstubs, 5);
    assert_string_equal(rc->stubs[0].zone, "example.test.");
    assert_string_equal(rc->stubs[0].addr, "127.0.0.1@5300");
    assert_string_equal(rc->stubs[1].zone, "0.0.127.in-addr.arpa.");
    assert_string_equal(rc->stubs[2].zone, "other.test.");
    assert_string_equal(rc->stubs[2].addr, "::1@5301");
    assert_string_equal(rc->stubs[3].zone, "other.test.");
    assert_string_equal(rc->stubs[3].addr, "127.0.0.2");
    assert_string_equal(rc->stubs[4].zone, "example.test.");
    assert_string_equal(rc->stubs[4].addr, "127.0.0.3");
    config_free(cfg);

    /* A list far past libinih's line limit, over many continued lines. */
    char text[8192];
    int n = snprintf(text, sizeof(text), MIN_LISTEN "[resolver]\nstub = ");
    for (int i = 0; i < 40; i++)
        n += snprintf(text + n, sizeof(text) - (size_t)n, "%szone%d.example.test. 127.0.0.1@%d%s",
                      i ? "    " : "", i, 5300 + i, i < 39 ? ",\n" : "\n");
    cfg = load_ok(text);
    assert_int_equal(cfg->resolver.nstubs, 40);
    assert_string_equal(cfg->resolver.stubs[39].zone, "zone39.example.test.");
    assert_string_equal(cfg->resolver.stubs[39].addr, "127.0.0.1@5339");
    config_free(cfg);

    static const struct {
        const char *text, *want;
    } cases[] = {
        {MIN_LISTEN "[resolver]\ndnssec = yes\n",
         ":4: [resolver] dnssec: expected on or off, got 'yes'"},
        {MIN_LISTEN "[resolver]\ndnssec = on\ndnssec = off\n",
         ":5: duplicate key 'dnssec' in [resolver]"},
        {MIN_LISTEN "[resolver]\ndnssec = on\n  off\n",
         ":5: indented line is read as a continuation of 'dnssec'; remove the indentation"},
        {MIN_LISTEN "[resolver]\ntrust_anchor =\n", ":4: [resolver] trust_anchor: empty path"},
        {MIN_LISTEN "[resolver]\nvalidate = on\n", ":4: unknown key 'validate' in [resolver]"},
        {MIN_LISTEN "[resolver]\nforward = 127.0.0.1@0\n",
         ":4: [resolver] forward: bad server '127.0.0.1@0' (expected an IPv4 or IPv6 address, "
         "optionally @port 1-65535)"},
        {MIN_LISTEN "[resolver]\nforward = dns.example.com\n",
         ":4: [resolver] forward: bad server 'dns.example.com' (expected an IPv4 or IPv6 "
         "address, optionally @port 1-65535)"},
        {MIN_LISTEN "[resolver]\nforward = 127.0.0.1,, ::1\n",
         ":4: [resolver] forward: empty item in list"},
        {MIN_LISTEN "[resolver]\nforward =\n", ":4: [resolver] forward: empty value"},
        {MIN_LISTEN "[resolver]\nstub = example.test\n",
         ":4: [resolver] stub: 'example.test' needs a zone and a server address "
         "(ZONE ADDR[@PORT])"},
        {MIN_LISTEN "[resolver]\nstub = a.test 127.0.0.1,\n   bad..zone 127.0.0.1\n",
         ":5: [resolver] stub: bad zone name 'bad..zone' (labels of letters, digits, '-' or "
         "'_', dot-separated)"},
        {MIN_LISTEN "[resolver]\nstub = a.test 127.0.0.1@99999\n",
         ":4: [resolver] stub: bad server '127.0.0.1@99999' for zone a.test. (expected an IPv4 "
         "or IPv6 address, optionally @port 1-65535)"},
        {MIN_LISTEN "[resolver]\nstub = a.test 127.0.0.1\nstub = A.test. 127.0.0.1\n",
         ":5: [resolver] stub: stub 'a.test. 127.0.0.1' listed twice"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        load_err(cases[i].text, cases[i].want);
}

/* [listen] metrics: off by default, a port alone is loopback, an address
 * is taken as written, one only, restart needed to change it. */
static void test_metrics_key(void **state)
{
    struct config *cfg = load_ok(MIN_LISTEN);
    assert_false(cfg->metrics.enabled);
    config_free(cfg);

    cfg = load_ok(MIN_LISTEN "metrics = 9187\n");
    assert_true(cfg->metrics.enabled);
    assert_string_equal(cfg->metrics.text, "9187");
    const struct sockaddr_in *a = (const struct sockaddr_in *)&cfg->metrics.addr;
    assert_int_equal(a->sin_family, AF_INET);
    assert_int_equal(ntohl(a->sin_addr.s_addr), INADDR_LOOPBACK);
    assert_int_equal(ntohs(a->sin_port), 9187);
    config_free(cfg);

    cfg = load_ok(MIN_LISTEN "metrics = :0\n");
    a = (const struct sockaddr_in *)&cfg->metrics.addr;
    assert_int_equal(ntohl(a->sin_addr.s_addr), INADDR_LOOPBACK);
    assert_int_equal(ntohs(a->sin_port), 0);
    config_free(cfg);

    cfg = load_ok("[listen]\nmetrics = 0.0.0.0:9187\nsmtp = 127.0.0.1:0\n");
    a = (const struct sockaddr_in *)&cfg->metrics.addr;
    assert_int_equal(a->sin_addr.s_addr, htonl(INADDR_ANY));
    config_free(cfg);

    cfg = load_ok(MIN_LISTEN "metrics = [::1]:9187\n");
    assert_int_equal(cfg->metrics.addr.ss_family, AF_INET6);
    config_free(cfg);

    cfg = load_ok(MIN_LISTEN "metrics =\n");
    assert_false(cfg->metrics.enabled);
    config_free(cfg);

    load_err(MIN_LISTEN "metrics = 9187\nmetrics = 9188\n",
             ":4: duplicate key 'metrics' in [listen]");
    load_err(MIN_LISTEN "metrics = 70000\n", ":3: [listen] metrics: port 70000 out of range");
    load_err(MIN_LISTEN "metrics = 127.0.0.1:1, 127.0.0.1:2\n",
             ":3: [listen] metrics: one address only, got '127.0.0.1:1, 127.0.0.1:2'");
    load_err(MIN_LISTEN "metrics = localhost:9187\n",
             ":3: [listen] metrics: bad address 'localhost:9187' (expected PORT for "
             "127.0.0.1, IPv4:PORT or [IPv6]:PORT, with a literal IP)");
    load_err(MIN_LISTEN "metrics = ::1:9187\n",
             ":3: [listen] metrics: bad address '::1:9187' (expected PORT for "
             "127.0.0.1, IPv4:PORT or [IPv6]:PORT, with a literal IP)");
    load_err("[listen]\nsmtp = 127.0.0.1:2525\nmetrics = 127.0.0.1:2525\n",
             ": [listen] metrics: address 127.0.0.1:2525 already used by smtp");

    /* A reload keeps the running endpoint and says a restart is needed. */
    struct config *cur = load_ok(MIN_LISTEN "metrics = 9187\n[server]\nuser = root\n");
    struct config *next = load_ok(MIN_LISTEN "metrics = 9188\n[server]\nuser = root\n");
    char out[128];
    assert_int_equal(config_restart_diff(cur, next, out, sizeof(out)), 1);
    assert_string_equal(out, "listen.metrics");
    assert_int_equal(config_keep_restart_fields(next, cur), 0);
    assert_string_equal(next->metrics.text, "9187");
    assert_int_equal(config_restart_diff(cur, next, out, sizeof(out)), 0);
    config_free(cur);
    config_free(next);

    /* [spool] options are fixed at start too: named, and kept. */
    cur = load_ok(MIN_LISTEN "[server]\nuser = root\n");
    next = load_ok(MIN_LISTEN "[server]\nuser = root\n[spool]\njournal_delay_ms = 50\n");
    assert_int_equal(config_restart_diff(cur, next, out, sizeof(out)), 1);
    assert_string_equal(out, "spool");
    assert_int_equal(config_keep_restart_fields(next, cur), 0);
    assert_int_equal(next->spool_opts.journal_delay_ms, cur->spool_opts.journal_delay_ms);
    assert_int_equal(config_restart_diff(cur, next, out, sizeof(out)), 0);
    config_free(cur);
    config_free(next);
}

static void test_role_name(void **state)
{
    assert_string_equal(config_role_name(ROLE_SMTP), "smtp");
    assert_string_equal(config_role_name(ROLE_SUBMISSION), "submission");
    assert_string_equal(config_role_name(ROLE_SUBMISSIONS), "submissions");
}

/* ---- [local], [srs], [smtp] (local domains) ---- */

static void write_at(const char *rel, const char *text, mode_t mode)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, rel);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
    chmod(path, mode);
}

static void remove_at(const char *rel)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, rel);
    unlink(path);
}

static void test_domains_keys(void **state)
{
    char err[512], want[PATH_MAX + 32];
    struct config *cfg = load_ok(MIN_LISTEN);

    /* Defaults. */
    assert_string_equal(cfg->local.maildir_root, "/var/vmail");
    assert_string_equal(cfg->local.plus_separator, "+");
    assert_false(cfg->local.case_sensitive);
    assert_false(cfg->local.allow_pipe);
    assert_int_equal(cfg->srs.max_age, 21);
    assert_int_equal(cfg->srs.separator, '=');
    assert_null(cfg->srs.secret);
    snprintf(want, sizeof(want), "%s/srs.key", tmpdir);
    assert_string_equal(cfg->srs.secret_file, want);
    assert_int_equal(cfg->smtp.greeting_delay_ms, 1000);
    /* No srs.key: SRS is off, not an error. */
    assert_int_equal(config_srs_load(cfg, err, sizeof(err)), 0);
    assert_int_equal(cfg->srs.nsecrets, 0);
    config_free(cfg);

    cfg = load_ok(MIN_LISTEN "[local]\n"
                             "maildir_root = mail\n"
                             "plus_separator = +-\n"
                             "case_sensitive = on\n"
                             "allow_pipe = yes\n"
                             "[srs]\n"
                             "secret = 0123456789abcdef-inline\n"
                             "max_age = 7\n"
                             "separator = +\n"
                             "[smtp]\n"
                             "greeting_delay = 250ms\n");
    snprintf(want, sizeof(want), "%s/mail", tmpdir);
    assert_string_equal(cfg->local.maildir_root, want);
    assert_string_equal(cfg->local.plus_separator, "+-");
    assert_true(cfg->local.case_sensitive);
    assert_true(cfg->local.allow_pipe);
    assert_int_equal(cfg->srs.max_age, 7);
    assert_int_equal(cfg->srs.separator, '+');
    assert_int_equal(cfg->smtp.greeting_delay_ms, 250);
    assert_int_equal(config_srs_load(cfg, err, sizeof(err)), 0);
    assert_int_equal(cfg->srs.nsecrets, 1);
    assert_string_equal(cfg->srs.secrets[0], "0123456789abcdef-inline");
    assert_null(cfg->srs.secrets[1]);
    config_free(cfg);

    cfg = load_ok(MIN_LISTEN "[local]\nplus_separator =\n[smtp]\ngreeting_delay = 0\n");
    assert_string_equal(cfg->local.plus_separator, "");
    assert_int_equal(cfg->smtp.greeting_delay_ms, 0);
    config_free(cfg);
    cfg = load_ok(MIN_LISTEN "[smtp]\ngreeting_delay = 2s\n");
    assert_int_equal(cfg->smtp.greeting_delay_ms, 2000);
    config_free(cfg);

    /* The default secret file: comments, blanks, several secrets. */
    write_at("srs.key", "# made by ortoo init\n\n  first-secret-0123456789  \r\nsecond-secret-0123456789\n",
             0600);
    cfg = load_ok(MIN_LISTEN);
    assert_int_equal(config_srs_load(cfg, err, sizeof(err)), 0);
    assert_int_equal(cfg->srs.nsecrets, 2);
    assert_string_equal(cfg->srs.secrets[0], "first-secret-0123456789");
    assert_string_equal(cfg->srs.secrets[1], "second-secret-0123456789");
    config_free(cfg);
    write_at("srs.key", "# nothing\n", 0600);
    cfg = load_ok(MIN_LISTEN);
    assert_int_equal(config_srs_load(cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "srs.key: no secret in the file"));
    config_free(cfg);
    write_at("srs.key", "# short\nshort\n", 0600);
    cfg = load_ok(MIN_LISTEN);
    assert_int_equal(config_srs_load(cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "srs.key:2: a secret needs at least 16 characters"));
    config_free(cfg);
    remove_at("srs.key");
    /* An explicit secret_file must exist. */
    cfg = load_ok(MIN_LISTEN "[srs]\nsecret_file = other.key\n");
    assert_int_equal(config_srs_load(cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "other.key: No such file or directory"));
    config_free(cfg);

    /* Errors. */
    load_err(MIN_LISTEN "[local]\nmaildir = x\n", ":4: unknown key 'maildir' in [local]");
    load_err(MIN_LISTEN "[local]\ncase_sensitive = maybe\n",
             ":4: [local] case_sensitive: expected on or off, got 'maybe'");
    load_err(MIN_LISTEN "[local]\nallow_pipe = on\nallow_pipe = off\n",
             ":5: duplicate key 'allow_pipe' in [local]");
    load_err(MIN_LISTEN "[local]\nplus_separator = @\n",
             ":4: [local] plus_separator: expected up to 7 of the characters +-=_#%&!~$^ "
             "(empty: off), got '@'");
    load_err(MIN_LISTEN "[local]\nmaildir_root =\n", ":4: [local] maildir_root: empty path");
    load_err(MIN_LISTEN "[srs]\nsecret = short\n",
             ":4: [srs] secret: at least 16 characters (better: let `ortoo init` make srs.key)");
    load_err(MIN_LISTEN "[srs]\nmax_age = 0\n",
             ":4: [srs] max_age: expected days from 1 to 1000, got '0'");
    load_err(MIN_LISTEN "[srs]\nseparator = ==\n", ":4: [srs] separator: expected =, + or -, got '=='");
    load_err(MIN_LISTEN "[smtp]\ngreeting_delay = 31s\n",
             ":4: [smtp] greeting_delay: expected a time up to 30s such as 0, 1s or 500ms, got '31s'");
    load_err(MIN_LISTEN "[smtp]\ngreeting_delay = 1m\n",
             ":4: [smtp] greeting_delay: expected a time up to 30s such as 0, 1s or 500ms, got '1m'");
    load_err(MIN_LISTEN "[srs]\nsecret = 0123456789abcdef0\nsecret_file = x\n",
             ": [srs] has both secret and secret_file; keep one");
    load_err(MIN_LISTEN "[smtp]\nbanner_delay = 1\n", ":4: unknown key 'banner_delay' in [smtp]");
}

/* [local] pipe_timeout (delivery to commands). */
static void test_pipe_timeout(void **state)
{
    struct config *cfg = load_ok(MIN_LISTEN);
    assert_int_equal(cfg->local.pipe_timeout, 1000);
    config_free(cfg);
    cfg = load_ok(MIN_LISTEN "[local]\nallow_pipe = on\npipe_timeout = 10m\n");
    assert_int_equal(cfg->local.pipe_timeout, 600);
    config_free(cfg);
    cfg = load_ok(MIN_LISTEN "[local]\npipe_timeout = 45\n");
    assert_int_equal(cfg->local.pipe_timeout, 45);
    config_free(cfg);
    load_err(MIN_LISTEN "[local]\npipe_timeout = 0\n",
             ":4: [local] pipe_timeout: expected a time from 1s to 1d such as 1000s, 10m or 1h, "
             "got '0'");
    load_err(MIN_LISTEN "[local]\npipe_timeout = 2d\n",
             ":4: [local] pipe_timeout: expected a time from 1s to 1d such as 1000s, 10m or 1h, "
             "got '2d'");
    load_err(MIN_LISTEN "[local]\npipe_timeout = 1m\npipe_timeout = 2m\n",
             ":5: duplicate key 'pipe_timeout' in [local]");
}


/* [delivery], [destination DOMAIN], [routes] (delivery/route.c) */
static void test_delivery(void **state)
{
    struct config *cfg = load_ok(MIN_LISTEN);
    const struct route_conf *rc = &cfg->delivery;
    assert_int_equal(rc->defaults.max_connections, ROUTE_DEF_MAX_CONNECTIONS);
    assert_int_equal(rc->defaults.max_per_connection, ROUTE_DEF_MAX_PER_CONNECTION);
    assert_int_equal(rc->defaults.max_per_minute, 0);
    assert_int_equal(rc->defaults.tls, ROUTE_TLS_DANE);
    assert_true(rc->defaults.resumption);
    assert_int_equal(rc->nretry, 6);
    assert_int_equal(rc->retry[0], 300);
    assert_int_equal(rc->retry[5], 14400);
    assert_int_equal(rc->expire, 5 * 86400);
    assert_int_equal(rc->delay_warning, 4 * 3600);
    assert_int_equal(rc->mx_port, 25);
    assert_true(rc->ipv6);
    assert_false(rc->hold);
    assert_null(route_lookup(rc, "example.com"));
    config_free(cfg);

    cfg = load_ok(MIN_LISTEN "[delivery]\n"
                  "max_connections = 7\nmax_messages_per_connection = 50\n"
                  "max_messages_per_minute = 600\nretry = 10s, 1m,2h\nexpire = 2d\n"
                  "delay_warning = 0\nmx_port = 2525\nipv6 = off\n"
                  "source_ipv4 = 192.0.2.1\nsource_ipv6 = 2001:db8::1\n"
                  "tls = opportunistic\nhelo_name = out.example.com\n"
                  "timeout_connect = 5s\ntimeout_idle = 2\nhold = on\n"
                  "[destination Gmail.COM]\nmax_connections = 3\ntls = verify\n"
                  "resumption = off\n"
                  "[destination *]\nauth_file = smart.auth\n"
                  "[routes]\n* = [smtp.example.net]:587\nexample.org = mx\n"
                  "lit.example = [192.0.2.7]\nsix.example = [2001:db8::25]:26\n");
    rc = &cfg->delivery;
    assert_int_equal(rc->defaults.max_connections, 7);
    assert_int_equal(rc->defaults.max_per_connection, 50);
    assert_int_equal(rc->defaults.max_per_minute, 600);
    assert_int_equal(rc->nretry, 3);
    assert_int_equal(rc->retry[0], 10);
    assert_int_equal(rc->retry[1], 60);
    assert_int_equal(rc->retry[2], 7200);
    assert_int_equal(route_retry_after(rc, 1), 10);
    assert_int_equal(route_retry_after(rc, 3), 7200);
    assert_int_equal(route_retry_after(rc, 9), 7200);
    assert_int_equal(rc->expire, 2 * 86400);
    assert_int_equal(rc->delay_warning, 0);
    assert_int_equal(rc->mx_port, 2525);
    assert_false(rc->ipv6);
    assert_true(rc->has_source4 && rc->has_source6);
    assert_int_equal(rc->defaults.tls, ROUTE_TLS_OPPORTUNISTIC);
    assert_string_equal(rc->helo_name, "out.example.com");
    assert_int_equal(rc->timeouts.connect, 5);
    assert_int_equal(rc->timeouts.idle, 2);
    assert_true(rc->hold);
    const struct route_dest *d = NULL;
    struct route_limits l = route_limits_for(rc, "gmail.com", &d);
    assert_non_null(d);
    assert_int_equal(l.max_connections, 3);
    assert_int_equal(l.max_per_connection, 50); /* from [delivery] */
    assert_int_equal(l.tls, ROUTE_TLS_VERIFY);
    assert_false(l.resumption);
    l = route_limits_for(rc, "other.com", &d);
    assert_null(d);
    assert_int_equal(l.max_connections, 7);
    l = route_limits_for(rc, "*", &d);
    assert_non_null(d);
    char want[PATH_MAX + 32];
    snprintf(want, sizeof(want), "%s/smart.auth", tmpdir);
    assert_string_equal(d->auth_file, want);
    const struct route *rt = route_lookup(rc, "example.com");
    assert_non_null(rt);
    assert_string_equal(rt->domain, "*");
    assert_string_equal(rt->host, "smtp.example.net");
    assert_int_equal(rt->port, 587);
    assert_false(rt->host_is_ip);
    assert_null(route_lookup(rc, "example.org")); /* mx beats the smarthost */
    rt = route_lookup(rc, "lit.example");
    assert_true(rt->host_is_ip);
    assert_int_equal(rt->port, 25);
    rt = route_lookup(rc, "six.example");
    assert_string_equal(rt->host, "2001:db8::25");
    assert_int_equal(rt->port, 26);
    config_free(cfg);

    load_err(MIN_LISTEN "[delivery]\nretry = 5m,,1h\n",
             ":4: [delivery] retry: expected a list of 1 to 32 durations such as 5m, 15m, 1h "
             "(each > 0), got '5m,,1h'");
    load_err(MIN_LISTEN "[delivery]\nexpire = 0\n",
             ":4: [delivery] expire: expected a duration such as 4h or 5d, got '0'");
    load_err(MIN_LISTEN "[delivery]\ntls = maybe\n",
             ":4: [delivery] tls: expected opportunistic, dane, verify, encrypt or none, got "
             "'maybe'");
    load_err(MIN_LISTEN "[delivery]\nmx_port = 0\n",
             ":4: [delivery] mx_port: expected a port from 1 to 65535, got '0'");
    load_err(MIN_LISTEN "[delivery]\nsource_ipv4 = ::1\n",
             ":4: [delivery] source_ipv4: expected an IPv4 address, got '::1'");
    load_err(MIN_LISTEN "[delivery]\nmax_connections = 2\nmax_connections = 3\n",
             ":5: duplicate key 'max_connections' in [delivery]");
    load_err(MIN_LISTEN "[delivery]\nfoo = 1\n", ":4: unknown key 'foo' in [delivery]");
    load_err(MIN_LISTEN "[destination bad..domain]\ntls = dane\n",
             ":4: [destination bad..domain]: expected a domain name or *, got 'bad..domain'");
    load_err(MIN_LISTEN "[destination a.example]\nretry = 1m\n",
             ":4: unknown key 'retry' in [destination a.example]");
    load_err(MIN_LISTEN "[routes]\na.example = [host.example]:99999\n",
             ":4: [routes] a.example: expected mx, [host]:port or [host] (host: a name or an "
             "IP literal), got '[host.example]:99999'");
    load_err(MIN_LISTEN "[routes]\na.example = host.example\n",
             ":4: [routes] a.example: expected mx, [host]:port or [host] (host: a name or an "
             "IP literal), got 'host.example'");
    load_err(MIN_LISTEN "[routes]\n* = mx\n* = [h.example]\n", ":5: [routes] *: given twice");
}

/* auth_file: read at start, owner-only, username:password. */
static void test_delivery_secrets(void **state)
{
    char path[PATH_MAX + 32], err[512];
    snprintf(path, sizeof(path), "%s/smart.auth", tmpdir);
    struct config *cfg = load_ok(MIN_LISTEN "[destination *]\nauth_file = smart.auth\n");
    assert_int_equal(route_conf_load_secrets(&cfg->delivery, err, sizeof err), -ENOENT);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("# the smarthost\n\nuser@example.net:pa:ss word\n", f);
    fclose(f);
    chmod(path, 0644);
    assert_int_equal(route_conf_load_secrets(&cfg->delivery, err, sizeof err), -EPERM);
    assert_non_null(strstr(err, "chmod 600"));
    chmod(path, 0600);
    assert_int_equal(route_conf_load_secrets(&cfg->delivery, err, sizeof err), 0);
    const struct route_dest *d = NULL;
    route_limits_for(&cfg->delivery, "*", &d);
    assert_string_equal(d->auth_user, "user@example.net");
    assert_string_equal(d->auth_pass, "pa:ss word");
    /* A reload keeps what was read at start, even if the file is gone. */
    struct config *next = load_ok(MIN_LISTEN "[destination *]\nauth_file = smart.auth\n");
    unlink(path);
    assert_int_equal(route_conf_keep_secrets(&next->delivery, &cfg->delivery, err, sizeof err),
                     0);
    route_limits_for(&next->delivery, "*", &d);
    assert_string_equal(d->auth_pass, "pa:ss word");
    config_free(next);
    config_free(cfg);
    f = fopen(path, "w");
    fputs("no colon here\n", f);
    fclose(f);
    chmod(path, 0600);
    cfg = load_ok(MIN_LISTEN "[destination *]\nauth_file = smart.auth\n");
    assert_int_equal(route_conf_load_secrets(&cfg->delivery, err, sizeof err), -EINVAL);
    config_free(cfg);
    unlink(path);
}

static void test_durations(void **state)
{
    uint32_t v;
    assert_int_equal(route_parse_duration("30", &v), 0);
    assert_int_equal(v, 30);
    assert_int_equal(route_parse_duration("30s", &v), 0);
    assert_int_equal(v, 30);
    assert_int_equal(route_parse_duration("5m", &v), 0);
    assert_int_equal(v, 300);
    assert_int_equal(route_parse_duration("2h", &v), 0);
    assert_int_equal(v, 7200);
    assert_int_equal(route_parse_duration("5d", &v), 0);
    assert_int_equal(v, 432000);
    assert_int_equal(route_parse_duration("", &v), -EINVAL);
    assert_int_equal(route_parse_duration("m", &v), -EINVAL);
    assert_int_equal(route_parse_duration("5x", &v), -EINVAL);
    assert_int_equal(route_parse_duration("5mm", &v), -EINVAL);
    assert_int_equal(route_parse_duration("-5", &v), -EINVAL);
    assert_int_equal(route_parse_duration("99999999999", &v), -EINVAL);
    assert_int_equal(route_parse_duration("50000d", &v), -EINVAL);
}

/* [limits] and the limit keys of [auth]: defaults, every key, errors. */
static void test_limits_keys(void **state)
{
    struct config *cfg = load_ok(MIN_LISTEN);
    const struct config_limits *l = &cfg->limits;
    assert_int_equal(l->per_address, 50);
    assert_int_equal(l->ipv4_prefix, 32);
    assert_int_equal(l->ipv6_prefix, 64);
    assert_int_equal(l->max_commands, 10000);
    assert_int_equal(l->max_junk, 100);
    assert_int_equal(l->timeout_greeting, 60);
    assert_int_equal(l->timeout_session, 3600);
    assert_int_equal(l->min_data_rate, 500);
    assert_true(l->max_pending_output == 64 * 1024);
    assert_true(l->body_memory == 256ull << 20);
    assert_int_equal(l->auth_account_failures, 20);
    assert_int_equal(l->auth_queue, 64);
    config_free(cfg);

    cfg = load_ok(MIN_LISTEN "[limits]\n"
                  "connections_per_address = 7\nipv4_prefix = 24\nipv6_prefix = 48\n"
                  "max_commands = 500\nmax_junk_commands = 9\ntimeout_greeting = 11\n"
                  "timeout_session = 600\nmin_data_rate = 0\nmax_pending_output = 16K\n"
                  "body_memory = 1G\n"
                  "[auth]\naccount_max_failures = 3\nmax_queue = 8\n");
    l = &cfg->limits;
    assert_int_equal(l->per_address, 7);
    assert_int_equal(l->ipv4_prefix, 24);
    assert_int_equal(l->ipv6_prefix, 48);
    assert_int_equal(l->max_commands, 500);
    assert_int_equal(l->max_junk, 9);
    assert_int_equal(l->timeout_greeting, 11);
    assert_int_equal(l->timeout_session, 600);
    assert_int_equal(l->min_data_rate, 0);
    assert_true(l->max_pending_output == 16 * 1024);
    assert_true(l->body_memory == 1ull << 30);
    assert_int_equal(l->auth_account_failures, 3);
    assert_int_equal(l->auth_queue, 8);
    config_free(cfg);

    load_err(MIN_LISTEN "[limits]\nipv6_prefix = 129\n",
             ":4: [limits] ipv6_prefix: expected a number from 16 to 128, got '129'");
    load_err(MIN_LISTEN "[limits]\nmax_pending_output = 1K\n",
             ":4: [limits] max_pending_output: expected a size such as 1000, 512K, 25M or 1G, "
             "got '1K'");
    load_err(MIN_LISTEN "[limits]\nbody_memory = 1M\nbody_memory = 2M\n",
             ":5: duplicate key 'body_memory' in [limits]");
    load_err(MIN_LISTEN "[limits]\nmax_connections = 5\n",
             ":4: unknown key 'max_connections' in [limits]");
    load_err(MIN_LISTEN "[server]\nmax_message_size = 2M\n[limits]\nbody_memory = 1M\n",
             ": [limits] body_memory (1048576) is smaller than [server] max_message_size "
             "(2097152): a message of the largest size could never be accepted");
}

/* [checks]: defaults, every key, the errors. */
static void test_checks_keys(void **state)
{
    struct config *cfg = load_ok(MIN_LISTEN);
    const struct config_checks *ck = &cfg->checks;
    assert_true(ck->enabled);
    assert_false(ck->spf_reject);
    assert_true(ck->dmarc_reject);
    assert_int_equal(ck->timeout_ms, 10000);
    assert_int_equal(ck->dkim_max_signatures, 5);
    assert_string_equal(ck->public_suffix_list, PSL_DEFAULT_PATH);
    assert_false(ck->public_suffix_list_set);
    config_free(cfg);

    cfg = load_ok(MIN_LISTEN "[checks]\nenabled = off\nspf_reject = on\ndmarc_reject = no\n"
                  "timeout = 2500ms\ndkim_max_signatures = 16\npublic_suffix_list = psl.dat\n");
    ck = &cfg->checks;
    assert_false(ck->enabled);
    assert_true(ck->spf_reject);
    assert_false(ck->dmarc_reject);
    assert_int_equal(ck->timeout_ms, 2500);
    assert_int_equal(ck->dkim_max_signatures, 16);
    char want[PATH_MAX + 16];
    snprintf(want, sizeof(want), "%s/psl.dat", tmpdir);
    assert_string_equal(ck->public_suffix_list, want);
    assert_true(ck->public_suffix_list_set);
    config_free(cfg);

    load_err(MIN_LISTEN "[checks]\nenabled = maybe\n",
             ":4: [checks] enabled: expected on or off, got 'maybe'");
    load_err(MIN_LISTEN "[checks]\ntimeout = 50ms\n",
             ":4: [checks] timeout: expected a time from 100ms to 120s such as 10s or 2500ms, "
             "got '50ms'");
    load_err(MIN_LISTEN "[checks]\ndkim_max_signatures = 17\n",
             ":4: [checks] dkim_max_signatures: expected 1 to 16, got '17'");
    load_err(MIN_LISTEN "[checks]\nspf_reject = on\nspf_reject = off\n",
             ":5: duplicate key 'spf_reject' in [checks]");
    load_err(MIN_LISTEN "[checks]\nspf = on\n", ":4: unknown key 'spf' in [checks]");
}

/* [relay] (issue 12 part 5) and the penalty-box keys of [limits]. */
static void test_relay_keys(void **state)
{
    struct config *cfg = load_ok(MIN_LISTEN);
    assert_int_equal(cfg->relay.ntrusted, 0);
    assert_int_equal(cfg->relay.messages_per_hour, 0);
    assert_int_equal(cfg->relay.nuser_rates, 0);
    assert_int_equal(cfg->limits.penalty_time, 10);
    assert_int_equal(cfg->limits.penalty_max, 600);
    assert_int_equal(cfg->limits.penalty_slots, 4096);
    config_free(cfg);

    cfg = load_ok(MIN_LISTEN "[relay]\n"
                  "trusted_networks = 127.0.0.0/8, ::1,\n"
                  "    10.1.0.0/16, [2001:db8::]/32\n"
                  "trusted_networks = ::ffff:192.0.2.0/120, 198.51.100.7\n"
                  "messages_per_hour = 500\n"
                  "user_messages_per_hour = app@example.com 10000, Bulk@Example.com 0\n"
                  "[limits]\npenalty_time = 0\npenalty_max = 60\npenalty_slots = 100\n");
    const struct config_relay *rl = &cfg->relay;
    assert_int_equal(rl->ntrusted, 6);
    assert_int_equal(rl->trusted[0].family, AF_INET);
    assert_int_equal(rl->trusted[0].plen, 8);
    assert_int_equal(rl->trusted[0].addr[0], 127);
    assert_int_equal(rl->trusted[1].family, AF_INET6);
    assert_int_equal(rl->trusted[1].plen, 128);
    assert_int_equal(rl->trusted[1].addr[15], 1);
    assert_int_equal(rl->trusted[2].plen, 16);
    assert_int_equal(rl->trusted[3].family, AF_INET6);
    assert_int_equal(rl->trusted[3].plen, 32);
    assert_int_equal(rl->trusted[4].family, AF_INET); /* v4-mapped */
    assert_int_equal(rl->trusted[4].plen, 24);
    assert_int_equal(rl->trusted[4].addr[0], 192);
    assert_int_equal(rl->trusted[5].plen, 32);
    assert_int_equal(rl->messages_per_hour, 500);
    assert_int_equal(rl->nuser_rates, 2);
    assert_string_equal(rl->user_rates[0].user, "app@example.com");
    assert_int_equal(rl->user_rates[0].per_hour, 10000);
    assert_string_equal(rl->user_rates[1].user, "Bulk@Example.com");
    assert_int_equal(rl->user_rates[1].per_hour, 0);
    assert_int_equal(cfg->limits.penalty_time, 0);
    assert_int_equal(cfg->limits.penalty_max, 60);
    assert_int_equal(cfg->limits.penalty_slots, 100);
    config_free(cfg);

    cfg = load_ok(MIN_LISTEN "[relay]\ntrusted_networks =\n");
    assert_int_equal(cfg->relay.ntrusted, 0);
    config_free(cfg);

    load_err(MIN_LISTEN "[relay]\ntrusted_networks = 127.0.0.1/8\n",
             ":4: [relay] trusted_networks: '127.0.0.1' has bits set past /8 (the network is "
             "written with them cleared)");
    load_err(MIN_LISTEN "[relay]\ntrusted_networks = 10.0.0.0/33\n",
             ":4: [relay] trusted_networks: bad prefix length '33' (0-32)");
    load_err(MIN_LISTEN "[relay]\ntrusted_networks = localhost\n",
             ":4: [relay] trusted_networks: 'localhost' is not an IPv4 or IPv6 address");
    load_err(MIN_LISTEN "[relay]\ntrusted_networks = ::1, , 10.0.0.0/8\n",
             ":4: [relay] trusted_networks: empty item in list");
    load_err(MIN_LISTEN "[relay]\nmessages_per_hour = lots\n",
             ":4: [relay] messages_per_hour: expected 0 (no limit) to 1000000, got 'lots'");
    load_err(MIN_LISTEN "[relay]\nmessages_per_hour = 1\nmessages_per_hour = 2\n",
             ":5: duplicate key 'messages_per_hour' in [relay]");
    load_err(MIN_LISTEN "[relay]\nuser_messages_per_hour = app@example.com\n",
             ":4: [relay] user_messages_per_hour: expected 'ADDRESS N' with N from 0 to "
             "1000000, got 'app@example.com'");
    load_err(MIN_LISTEN "[relay]\nuser_messages_per_hour = app 5\n",
             ":4: [relay] user_messages_per_hour: expected 'ADDRESS N' with N from 0 to "
             "1000000, got 'app 5'");
    load_err(MIN_LISTEN "[relay]\nmynetworks = 127.0.0.0/8\n",
             ":4: unknown key 'mynetworks' in [relay]");
    load_err(MIN_LISTEN "[limits]\npenalty_time = 60\npenalty_max = 30\n",
             ": [limits] penalty_time (60) is longer than penalty_max (30)");
    load_err(MIN_LISTEN "[limits]\npenalty_slots = 10\n",
             ":4: [limits] penalty_slots: expected a number from 64 to 16777216, got '10'");

    /* penalty_slots sizes a table made at start: a reload keeps it. */
    struct config *a = load_ok(MIN_LISTEN "[limits]\npenalty_slots = 100\n");
    struct config *b = load_ok(MIN_LISTEN "[limits]\npenalty_slots = 200\n"
                               "[relay]\ntrusted_networks = ::1\n");
    char out[256];
    assert_int_equal(config_restart_diff(a, b, out, sizeof(out)), 1);
    assert_string_equal(out, "limits.penalty_slots");
    assert_int_equal(config_keep_restart_fields(b, a), 0);
    assert_int_equal(b->limits.penalty_slots, 100);
    assert_int_equal(b->relay.ntrusted, 1);
    config_free(a);
    config_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_listen_lists, setup, teardown),
        cmocka_unit_test_setup_teardown(test_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors_raw, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_carriage_returns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resolver, setup, teardown),
        cmocka_unit_test_setup_teardown(test_operation_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checks_keys, setup, teardown),
        cmocka_unit_test(test_parse_addr),
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test_setup_teardown(test_metrics_key, setup, teardown),
        cmocka_unit_test(test_role_name),
        cmocka_unit_test_setup_teardown(test_pipe_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_domains_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delivery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delivery_secrets, setup, teardown),
        cmocka_unit_test(test_durations),
        cmocka_unit_test_setup_teardown(test_relay_keys, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
