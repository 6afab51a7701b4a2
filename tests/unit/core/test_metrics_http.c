/* SPDX-License-Identifier: MIT */
/*
 * test_metrics_http.c - unit tests for core/metrics_http.c.
 *
 * The parser: good requests (HTTP/1.0 and 1.1, HEAD, query strings,
 * absolute-form, bare LF, empty lines before the request line) and every
 * refusal with its status (400 for syntax, Host and obs-fold, 404, 405,
 * 505, 414/431 at the size bound); each good request is also fed one byte
 * at a time, and must need more bytes at every split point before the end.
 *
 * The server: on a control loop thread like the daemon's main thread, with
 * real sockets: /metrics is served with the exposition's content type and
 * a Content-Length that matches; a silent client does not delay another
 * one; the silent one gets 408 at its deadline (shortened for the test);
 * the 17th client at once gets 503.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/metrics_http.h"
#undef METRICS_HTTP_TIMEOUT_MS
#define METRICS_HTTP_TIMEOUT_MS 1500 /* the deadline, short for the test */
#include "core/metrics_http.c"
#include "core/metrics_http_parse.c"

#include "core/control.h"
#include "core/stats.h"

/* ---- the parser ---- */

struct pcase {
    const char *req;
    int status;
    enum metrics_http_target target;
    bool head;
};

static const struct pcase good[] = {
    {"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 200, METRICS_HTTP_T_METRICS, false},
    {"GET /metrics HTTP/1.0\r\n\r\n", 200, METRICS_HTTP_T_METRICS, false},
    {"HEAD /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n", 200, METRICS_HTTP_T_METRICS,
     true},
    {"GET /metrics?name[]=up HTTP/1.1\r\nhost:x\r\n\r\n", 200, METRICS_HTTP_T_METRICS, false},
    {"GET http://127.0.0.1:9187/metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200,
     METRICS_HTTP_T_METRICS, false},
    {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 200, METRICS_HTTP_T_ROOT, false},
    {"GET /metrics HTTP/1.1\nHost: x\n\n", 200, METRICS_HTTP_T_METRICS, false},
    {"\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 200, METRICS_HTTP_T_METRICS, false},
    {"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nX-Prometheus-Scrape-"
     "Timeout-Seconds: 10\r\nUser-Agent: Prometheus/2.42.0\r\n\r\n",
     200, METRICS_HTTP_T_METRICS, false},
};

static const struct pcase bad[] = {
    {"GET /other HTTP/1.1\r\nHost: x\r\n\r\n", 404, METRICS_HTTP_T_OTHER, false},
    {"GET /metrics/ HTTP/1.1\r\nHost: x\r\n\r\n", 404, METRICS_HTTP_T_OTHER, false},
    {"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405, 0, false},
    {"get /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 405, 0, false},
    {"DELETE / HTTP/1.0\r\n\r\n", 405, 0, false},
    {"GET /metrics HTTP/1.1\r\n\r\n", 400, 0, false},                   /* no Host */
    {"GET /metrics HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, 0, false},
    {"GET /metrics HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400, 0, false},
    {"GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n", 400, 0, false},      /* space before ':' */
    {"GET /metrics HTTP/1.1\r\nnocolon\r\n\r\n", 400, 0, false},
    {"GET /metrics HTTP/1.1\r\nHost: x\rY\r\n\r\n", 400, 0, false},    /* bare CR */
    {"GET /metrics HTTP/1.1\r\nHost: \x01\r\n\r\n", 400, 0, false},
    {"GET  /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 400, 0, false},      /* two spaces */
    {"GET /metrics\r\n\r\n", 400, 0, false},                            /* HTTP/0.9 style */
    {"GET /metrics HTTP/1.1 \r\nHost: x\r\n\r\n", 400, 0, false},
    {"GET metrics HTTP/1.1\r\nHost: x\r\n\r\n", 400, 0, false},
    {"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400, 0, false},
    {"G(T /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 400, 0, false},
    {"GET /metrics HTTP/1.x\r\nHost: x\r\n\r\n", 400, 0, false},
    {"\x16\x03\x01\x02\x05\x01\x7f\x01\xfc\x03\x03\n", 400, 0, false}, /* binary */
    {"GET /metrics HTTP/2.0\r\n\r\n", 505, 0, false},
    {"GET /metrics HTTP/0.9\r\n\r\n", 505, 0, false},
};

static void test_parse_good(void **state)
{
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        const struct pcase *c = &good[i];
        struct metrics_http_req r;
        size_t len = strlen(c->req);
        assert_int_equal(metrics_http_parse(c->req, len, &r), 1);
        if (r.status != c->status || r.target != c->target || r.head != c->head)
            fail_msg("case %zu: status %d target %d head %d", i, r.status, r.target, r.head);
        /* Every proper prefix needs more bytes. */
        for (size_t k = 0; k < len; k++)
            if (metrics_http_parse(c->req, k, &r) != 0)
                fail_msg("case %zu: complete after %zu of %zu bytes", i, k, len);
    }
}

static void test_parse_bad(void **state)
{
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const struct pcase *c = &bad[i];
        struct metrics_http_req r;
        assert_int_equal(metrics_http_parse(c->req, strlen(c->req), &r), 1);
        if (r.status != c->status)
            fail_msg("case %zu (%s): status %d, want %d", i, c->req, r.status, c->status);
    }
}

static void test_parse_bounds(void **state)
{
    char *buf = malloc(METRICS_HTTP_REQ_MAX + 100);
    struct metrics_http_req r;

    /* A request line that never ends: 414 at the bound, not before. */
    memcpy(buf, "GET /", 5);
    memset(buf + 5, 'a', METRICS_HTTP_REQ_MAX + 95);
    assert_int_equal(metrics_http_parse(buf, METRICS_HTTP_REQ_MAX - 1, &r), 0);
    assert_int_equal(metrics_http_parse(buf, METRICS_HTTP_REQ_MAX, &r), 1);
    assert_int_equal(r.status, 414);
    /* Header fields that never end: 431. */
    const char *line = "GET /metrics HTTP/1.1\r\n";
    memcpy(buf, line, strlen(line));
    for (size_t i = strlen(line); i < METRICS_HTTP_REQ_MAX + 100; i++)
        buf[i] = (i % 40 == 39) ? '\n' : 'x';
    for (size_t i = strlen(line); i < METRICS_HTTP_REQ_MAX + 100; i += 40)
        memcpy(buf + i, "X-A: ", 5);
    assert_int_equal(metrics_http_parse(buf, METRICS_HTTP_REQ_MAX + 100, &r), 1);
    assert_int_equal(r.status, 431);
    free(buf);
    /* A NUL in a line. */
    static const char nul[] = "GET /metrics HTTP/1.0\r\nX: a\0b\r\n\r\n";
    assert_int_equal(metrics_http_parse(nul, sizeof(nul) - 1, &r), 1);
    assert_int_equal(r.status, 400);
}

/* Loopback or not: what decides the start-up line's exposed=yes. */
static void test_loopback(void **state)
{
    static const struct {
        const char *addr;
        bool loopback;
    } cases[] = {
        {"127.0.0.1:1", true},   {"127.1.2.3:1", true},        {"[::1]:1", true},
        {"[::ffff:127.0.0.1]:1", true}, {"0.0.0.0:1", false},  {"192.0.2.1:1", false},
        {"[::]:1", false},       {"[2001:db8::1]:1", false},   {"[::ffff:192.0.2.1]:1", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct sockaddr_storage ss;
        socklen_t len;
        assert_int_equal(config_parse_addr(cases[i].addr, &ss, &len), 0);
        if (addr_is_loopback(&ss) != cases[i].loopback)
            fail_msg("%s: loopback %d", cases[i].addr, !cases[i].loopback);
    }
}

/* ---- the server ---- */

static struct control *ctl;
static struct stats *st;
static struct metrics_http *mh;
static atomic_bool stop;
static pthread_t loop_thread;
static int port;

static void *loop_main(void *arg)
{
    while (!atomic_load(&stop)) {
        struct pollfd pfd[CONTROL_MAX_POLLFDS];
        size_t n = control_pollfds(ctl, pfd, CONTROL_MAX_POLLFDS);
        int t = control_timeout(ctl);
        if (poll(pfd, n, t < 0 || t > 20 ? 20 : t) < 0 && errno != EINTR)
            break;
        control_dispatch(ctl, pfd, n);
    }
    return NULL;
}

static int connect_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

/* Send req (may be NULL) and read the whole answer until the server closes. */
static char *exchange(int fd, const char *req, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    if (req != NULL)
        assert_int_equal(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
    for (;;) {
        ssize_t r = recv(fd, buf + n, cap - n, 0);
        if (r <= 0)
            break;
        n += (size_t)r;
        assert_true(n < cap);
    }
    buf[n] = '\0';
    close(fd);
    if (len != NULL)
        *len = n;
    return buf;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_serve(void **state)
{
    size_t len;
    char *a = exchange(connect_port(), "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n", &len);
    assert_true(strncmp(a, "HTTP/1.1 200 OK\r\n", 17) == 0);
    assert_non_null(strstr(a, "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
    assert_non_null(strstr(a, "\r\nConnection: close\r\n"));
    const char *body = strstr(a, "\r\n\r\n") + 4;
    const char *cl = strstr(a, "Content-Length: ");
    assert_non_null(cl);
    assert_int_equal(strtoul(cl + 16, NULL, 10), len - (size_t)(body - a));
    assert_non_null(strstr(body, "# TYPE ortoo_messages_received_total counter\n"));
    free(a);

    a = exchange(connect_port(), "HEAD /metrics HTTP/1.0\r\n\r\n", &len);
    assert_true(strncmp(a, "HTTP/1.1 200 OK\r\n", 17) == 0);
    assert_int_equal(strlen(strstr(a, "\r\n\r\n")), 4); /* no body */
    free(a);

    a = exchange(connect_port(), "PUT /metrics HTTP/1.1\r\nHost: t\r\n\r\n", NULL);
    assert_true(strncmp(a, "HTTP/1.1 405 Method Not Allowed\r\n", 33) == 0);
    assert_non_null(strstr(a, "\r\nAllow: GET, HEAD\r\n"));
    free(a);
    a = exchange(connect_port(), "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n", NULL);
    assert_true(strncmp(a, "HTTP/1.1 404 ", 13) == 0);
    free(a);
    a = exchange(connect_port(), "garbage\r\n\r\n", NULL);
    assert_true(strncmp(a, "HTTP/1.1 400 ", 13) == 0);
    free(a);
}

/* A client that connects and says nothing holds one slot: another is
 * served at once; the silent one gets 408 at its deadline. */
static void test_slow_client(void **state)
{
    int silent = connect_port();
    int partial = connect_port();
    assert_int_equal(send(partial, "GET /met", 8, 0), 8);
    double t0 = now_s();
    char *a = exchange(connect_port(), "GET /metrics HTTP/1.0\r\n\r\n", NULL);
    assert_true(strncmp(a, "HTTP/1.1 200 OK\r\n", 17) == 0);
    assert_true(now_s() - t0 < 1.0);
    free(a);
    a = exchange(silent, NULL, NULL);
    double waited = now_s() - t0;
    assert_true(strncmp(a, "HTTP/1.1 408 ", 13) == 0);
    assert_true(waited > 1.0 && waited < 5.0);
    free(a);
    a = exchange(partial, NULL, NULL);
    assert_true(strncmp(a, "HTTP/1.1 408 ", 13) == 0);
    free(a);
}

static void test_too_many(void **state)
{
    int fds[METRICS_HTTP_MAX_CLIENTS];
    for (int i = 0; i < METRICS_HTTP_MAX_CLIENTS; i++)
        fds[i] = connect_port();
    usleep(100000); /* let the loop accept them */
    char *a = exchange(connect_port(), "GET /metrics HTTP/1.0\r\n\r\n", NULL);
    assert_true(strncmp(a, "HTTP/1.1 503 ", 13) == 0);
    free(a);
    for (int i = 0; i < METRICS_HTTP_MAX_CLIENTS; i++)
        close(fds[i]);
    usleep(100000);
    a = exchange(connect_port(), "GET /metrics HTTP/1.0\r\n\r\n", NULL);
    assert_true(strncmp(a, "HTTP/1.1 200 ", 13) == 0);
    free(a);
}

static int setup(void **state)
{
    struct config_metrics mc = {.enabled = true};
    char err[256];
    assert_int_equal(config_parse_addr("127.0.0.1:0", &mc.addr, &mc.addr_len), 0);
    snprintf(mc.text, sizeof(mc.text), "0");
    ctl = control_new();
    st = stats_new(ctl);
    assert_non_null(st);
    assert_int_equal(metrics_http_start(ctl, st, &mc, &mh, err, sizeof(err)), 0);
    assert_true(metrics_http_loopback(mh));
    const char *colon = strrchr(metrics_http_addr(mh), ':');
    port = atoi(colon + 1);
    assert_true(port > 0);
    atomic_store(&stop, false);
    assert_int_equal(pthread_create(&loop_thread, NULL, loop_main, NULL), 0);
    return 0;
}

static int teardown(void **state)
{
    atomic_store(&stop, true);
    pthread_join(loop_thread, NULL);
    metrics_http_free(mh);
    stats_free(st, 100);
    control_free(ctl);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good),
        cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_parse_bounds),
        cmocka_unit_test(test_loopback),
        cmocka_unit_test_setup_teardown(test_serve, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_client, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_many, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
