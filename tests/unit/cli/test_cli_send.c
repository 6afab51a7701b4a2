/* SPDX-License-Identifier: MIT */
/*
 * test_cli_send.c - unit tests of `ortoo send` (cli/cli_send.c, included to
 * reach its statics): server address parsing, DATA content normalisation
 * and dot-stuffing, AUTH PLAIN encoding, EHLO keyword search, and the whole
 * dialogue against a scripted server thread on a socketpair.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "cli/cli_send.c"

static void test_parse_server(void **state)
{
    char h[64], p[8];

    assert_int_equal(send_parse_server("127.0.0.1:2525", h, sizeof h, p, sizeof p), 0);
    assert_string_equal(h, "127.0.0.1");
    assert_string_equal(p, "2525");
    assert_int_equal(send_parse_server("[::1]:587", h, sizeof h, p, sizeof p), 0);
    assert_string_equal(h, "::1");
    assert_string_equal(p, "587");
    assert_int_equal(send_parse_server("mail.example.com:25", h, sizeof h, p, sizeof p), 0);
    assert_string_equal(h, "mail.example.com");
    assert_string_equal(p, "25");

    assert_int_equal(send_parse_server("example.com", h, sizeof h, p, sizeof p), -1);
    assert_int_equal(send_parse_server("::1:25", h, sizeof h, p, sizeof p), -1);
    assert_int_equal(send_parse_server("[::1]25", h, sizeof h, p, sizeof p), -1);
    assert_int_equal(send_parse_server("[::1:25", h, sizeof h, p, sizeof p), -1);
    assert_int_equal(send_parse_server(":25", h, sizeof h, p, sizeof p), -1);
    assert_int_equal(send_parse_server("host:", h, sizeof h, p, sizeof p), -1);
    assert_int_equal(send_parse_server("host:0", h, sizeof h, p, sizeof p), -1);
    assert_int_equal(send_parse_server("host:65536", h, sizeof h, p, sizeof p), -1);
    assert_int_equal(send_parse_server("host:2x", h, sizeof h, p, sizeof p), -1);
}

static void body_check(const char *in, const char *want)
{
    struct text_buf b = { 0 };
    assert_int_equal(send_body_append(&b, in, strlen(in)), 0);
    assert_non_null(b.p);
    assert_string_equal(b.p, want);
    text_free(&b);
}

static void test_body(void **state)
{
    body_check("a\nb\n", "a\r\nb\r\n");
    body_check("a\r\nb", "a\r\nb\r\n");              /* unterminated last line */
    body_check("a\rb\r", "a\r\nb\r\n");              /* bare CR */
    body_check(".\n", "..\r\n");                     /* would end DATA */
    body_check(".hidden\n..two\nx.y\n", "..hidden\r\n...two\r\nx.y\r\n");
    body_check("x\r\n.\r\n", "x\r\n..\r\n");
    body_check("\n\n", "\r\n\r\n");

    struct text_buf empty = { 0 };
    assert_int_equal(send_body_append(&empty, "", 0), 0);
    assert_int_equal(empty.len, 0);
    text_free(&empty);
}

static void test_auth_plain(void **state)
{
    char out[128];

    /* RFC 4616 example: "\0tim\0tanstaaftanstaaf". */
    assert_int_equal(send_auth_plain("tim", "tanstaaftanstaaf", out, sizeof out), 0);
    assert_string_equal(out, "AHRpbQB0YW5zdGFhZnRhbnN0YWFm");
    char small[8];
    assert_int_equal(send_auth_plain("tim", "tanstaaftanstaaf", small, sizeof small), -1);
}

static void test_ehlo_has(void **state)
{
    struct send_reply r = { 0 };
    const char *t = "mx.example greets you\nPIPELINING\nSIZE 1000\nstarttls\nAUTH PLAIN LOGIN";

    assert_int_equal(text_add(&r.text, t, strlen(t)), 0);
    assert_true(send_ehlo_has(&r, "STARTTLS"));
    assert_true(send_ehlo_has(&r, "AUTH"));
    assert_true(send_ehlo_has(&r, "SIZE"));
    assert_false(send_ehlo_has(&r, "START"));
    assert_false(send_ehlo_has(&r, "CHUNKING"));
    text_free(&r.text);
}

static void test_addr_ok(void **state)
{
    assert_true(send_addr_ok("a@b.example"));
    assert_false(send_addr_ok(""));
    assert_false(send_addr_ok("nobody"));
    assert_false(send_addr_ok("a b@c"));
    assert_false(send_addr_ok("a@b>\r\nRCPT TO:<x@y"));
}

/* ---- a scripted server on a socketpair ---- */

/* One step: the prefix the client's line must start with, and the reply. */
struct step {
    const char *expect; /* NULL: no line expected (greeting) */
    const char *reply;  /* sent as is */
};

struct fake_server {
    int fd;
    const struct step *steps;
    size_t nsteps;
    char data[8192];    /* what arrived after DATA, up to the final dot */
    size_t datalen;
    int bad_step;       /* index of the first unexpected line, or -1 */
};

static int fs_read_line(int fd, char *buf, size_t len)
{
    size_t n = 0;
    while (n + 1 < len) {
        char ch;
        ssize_t r = read(fd, &ch, 1);
        if (r <= 0)
            return -1;
        buf[n++] = ch;
        if (ch == '\n')
            break;
    }
    buf[n] = '\0';
    return (int)n;
}

static void *fake_server_run(void *arg)
{
    struct fake_server *fs = arg;
    char line[2048];

    fs->bad_step = -1;
    for (size_t i = 0; i < fs->nsteps; i++) {
        const struct step *s = &fs->steps[i];
        if (s->expect != NULL) {
            if (fs_read_line(fs->fd, line, sizeof line) < 0) {
                fs->bad_step = (int)i;
                break;
            }
            if (strncmp(line, s->expect, strlen(s->expect)) != 0) {
                fs->bad_step = (int)i;
                break;
            }
            if (strncmp(s->expect, "DATA", 4) == 0 && strncmp(s->reply, "354", 3) == 0) {
                if (write(fs->fd, s->reply, strlen(s->reply)) != (ssize_t)strlen(s->reply))
                    fs->bad_step = (int)i;
                for (;;) {
                    int n = fs_read_line(fs->fd, line, sizeof line);
                    if (n < 0 || strcmp(line, ".\r\n") == 0)
                        break;
                    if (fs->datalen + (size_t)n < sizeof fs->data) {
                        memcpy(fs->data + fs->datalen, line, (size_t)n);
                        fs->datalen += (size_t)n;
                    }
                }
                continue;
            }
        }
        /* No cmocka asserts in this thread: a failure there cannot longjmp here. */
        if (write(fs->fd, s->reply, strlen(s->reply)) != (ssize_t)strlen(s->reply)) {
            fs->bad_step = (int)i;
            break;
        }
    }
    close(fs->fd);
    return NULL;
}

/* Run dialogue() against the script; returns its status. */
static int run_dialogue(const struct step *steps, size_t nsteps, struct send_opts *o,
                        const char *password, struct fake_server *fs)
{
    int sv[2];
    pthread_t th;
    struct send_conn c = { .fd = -1 };
    struct text_buf msg = { 0 };
    static const char *body = ".dot line\nplain\n";

    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    memset(fs, 0, sizeof *fs);
    fs->fd = sv[1];
    fs->steps = steps;
    fs->nsteps = nsteps;
    c.fd = sv[0];
    assert_int_equal(message_build(o, body, strlen(body), &msg), 0);
    assert_int_equal(pthread_create(&th, NULL, fake_server_run, fs), 0);
    int status = dialogue(&c, o, password, &msg);
    conn_close(&c);
    pthread_join(th, NULL);
    text_free(&msg);
    return status;
}

static void opts_init(struct send_opts *o, const char **to, size_t nto)
{
    memset(o, 0, sizeof *o);
    strcpy(o->host, "127.0.0.1");
    strcpy(o->port, "25");
    o->from = "me@from.example";
    o->to = to;
    o->nto = nto;
    o->subject = "hi";
    o->ehlo = "client.example";
}

static void test_dialogue_ok(void **state)
{
    static const struct step steps[] = {
        { NULL, "220 fake ESMTP\r\n" },
        { "EHLO client.example\r\n", "250-fake\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n" },
        { "AUTH PLAIN AHVAZC5leGFtcGxlAHNlY3JldA==\r\n", "235 2.7.0 ok\r\n" },
        { "MAIL FROM:<me@from.example>\r\n", "250 ok\r\n" },
        { "RCPT TO:<a@x.example>\r\n", "250 ok\r\n" },
        { "RCPT TO:<b@x.example>\r\n", "550 no such user\r\n" },
        { "DATA\r\n", "354 go\r\n" },
        { NULL, "250 queued as X\r\n" },
        { "QUIT\r\n", "221 bye\r\n" },
    };
    const char *to[] = { "a@x.example", "b@x.example" };
    struct send_opts o;
    struct fake_server fs;

    opts_init(&o, to, 2);
    o.user = "u@d.example";
    o.password_stdin = true;
    o.allow_plaintext_auth = true; /* a local socket: loopback */
    assert_int_equal(run_dialogue(steps, sizeof steps / sizeof steps[0], &o, "secret", &fs), 0);
    assert_int_equal(fs.bad_step, -1);
    fs.data[fs.datalen] = '\0';
    assert_non_null(strstr(fs.data, "From: <me@from.example>\r\n"));
    assert_non_null(strstr(fs.data, "To: <a@x.example>,\r\n <b@x.example>\r\n"));
    assert_non_null(strstr(fs.data, "Subject: hi\r\n"));
    assert_non_null(strstr(fs.data, "@from.example>\r\n\r\n..dot line\r\nplain\r\n"));
    assert_non_null(strstr(fs.data, "Date: "));
}

static void test_dialogue_data_refused(void **state)
{
    static const struct step steps[] = {
        { NULL, "220 fake\r\n" },
        { "EHLO", "250 fake\r\n" },
        { "MAIL FROM:", "250 ok\r\n" },
        { "RCPT TO:", "250 ok\r\n" },
        { "DATA\r\n", "354 go\r\n" },
        { NULL, "554 5.7.1 spam\r\n" },
        { "QUIT\r\n", "221 bye\r\n" },
    };
    const char *to[] = { "a@x.example" };
    struct send_opts o;
    struct fake_server fs;

    opts_init(&o, to, 1);
    assert_int_equal(run_dialogue(steps, sizeof steps / sizeof steps[0], &o, "", &fs), 1);
    assert_int_equal(fs.bad_step, -1);
}

static void test_dialogue_no_rcpt(void **state)
{
    static const struct step steps[] = {
        { NULL, "220 fake\r\n" },
        { "EHLO", "500 what\r\n" },
        { "HELO client.example\r\n", "250 fake\r\n" },
        { "MAIL FROM:", "250 ok\r\n" },
        { "RCPT TO:", "550 no\r\n" },
        { "QUIT\r\n", "221 bye\r\n" },
    };
    const char *to[] = { "a@x.example" };
    struct send_opts o;
    struct fake_server fs;

    opts_init(&o, to, 1);
    assert_int_equal(run_dialogue(steps, sizeof steps / sizeof steps[0], &o, "", &fs), 1);
    assert_int_equal(fs.bad_step, -1);
}

static void test_dialogue_starttls_missing(void **state)
{
    static const struct step steps[] = {
        { NULL, "220 fake\r\n" },
        { "EHLO", "250-fake\r\n250 SIZE 10\r\n" },
        { "QUIT\r\n", "221 bye\r\n" },
    };
    const char *to[] = { "a@x.example" };
    struct send_opts o;
    struct fake_server fs;

    opts_init(&o, to, 1);
    o.tls = SEND_STARTTLS;
    assert_int_equal(run_dialogue(steps, sizeof steps / sizeof steps[0], &o, "", &fs), 1);
    assert_int_equal(fs.bad_step, -1);
}

static void test_dialogue_bad_greeting(void **state)
{
    static const struct step steps[] = {
        { NULL, "554 go away\r\n" },
        { "QUIT\r\n", "221 bye\r\n" },
    };
    const char *to[] = { "a@x.example" };
    struct send_opts o;
    struct fake_server fs;

    opts_init(&o, to, 1);
    assert_int_equal(run_dialogue(steps, sizeof steps / sizeof steps[0], &o, "", &fs), 1);
    assert_int_equal(fs.bad_step, -1);
}

static void test_cli_usage(void **state)
{
    char *a1[] = { "send", "--from", "a@b.c", "--to", "x@y.z", NULL };
    assert_int_equal(cli_send("/nonexistent", 5, a1), 2); /* no --server */
    char *a2[] = { "send", "--server", "h:25", "--from", "a@b.c", "--to", "x@y.z",
                   "--user", "u", NULL };
    assert_int_equal(cli_send("/nonexistent", 9, a2), 2); /* --user without --password-stdin */
    char *a3[] = { "send", "--server", "h", "--from", "a@b.c", "--to", "x@y.z", NULL };
    assert_int_equal(cli_send("/nonexistent", 7, a3), 2); /* no port */
    char *a4[] = { "send", "--bogus", NULL };
    assert_int_equal(cli_send("/nonexistent", 2, a4), 2);
    char *a5[] = { "send", "--server", "h:25", "--from", "a@b.c", "--to", "x@y.z",
                   "--starttls", "--tls", NULL };
    assert_int_equal(cli_send("/nonexistent", 9, a5), 2); /* both TLS modes */
    char *a6[] = { "send", "--server", "h:25", "--from", "a@b.c", "--to", "x@y.z",
                   "--user", "u", "--password-stdin", NULL };
    assert_int_equal(cli_send("/nonexistent", 10, a6), 2); /* a password without TLS */
}

/* --user in plain text: refused before AUTH unless allowed (and loopback). */
static void test_dialogue_no_plaintext_password(void **state)
{
    static const struct step steps[] = {
        { NULL, "220 fake ESMTP\r\n" },
        { "EHLO client.example\r\n", "250-fake\r\n250 AUTH PLAIN\r\n" },
        { "QUIT\r\n", "221 bye\r\n" },
    };
    const char *to[] = { "a@x.example" };
    struct send_opts o;
    struct fake_server fs;

    opts_init(&o, to, 1);
    o.user = "u@d.example";
    o.password_stdin = true;
    assert_int_equal(run_dialogue(steps, sizeof steps / sizeof steps[0], &o, "secret", &fs), 1);
    assert_int_equal(fs.bad_step, -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_server),
        cmocka_unit_test(test_body),
        cmocka_unit_test(test_auth_plain),
        cmocka_unit_test(test_ehlo_has),
        cmocka_unit_test(test_addr_ok),
        cmocka_unit_test(test_dialogue_ok),
        cmocka_unit_test(test_dialogue_data_refused),
        cmocka_unit_test(test_dialogue_no_rcpt),
        cmocka_unit_test(test_dialogue_starttls_missing),
        cmocka_unit_test(test_dialogue_bad_greeting),
        cmocka_unit_test(test_cli_usage),
        cmocka_unit_test(test_dialogue_no_plaintext_password),
    };
    if (sodium_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
