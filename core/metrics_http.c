/* SPDX-License-Identifier: MIT */
/*
 * metrics_http.c - the Prometheus endpoint on the main thread (see
 * metrics_http.h; the request parser is metrics_http_parse.c).
 *
 * One epoll set holds the listening socket, a timerfd and the clients; the
 * set's fd joins the main thread's poll through control_watch(), and
 * on_epoll() drains it without waiting.  A client goes READ (collecting
 * its request head) -> WAIT (a snapshot is being gathered from the
 * reactors, stats_collect) -> WRITE (sending the answer) -> closed.  The
 * timerfd is armed for the earliest client deadline.  Clients closed while
 * on_epoll() walks its event array are only unlinked there and freed at
 * its end, so a later event of the same batch never touches freed memory.
 */
#include "core/metrics_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "core/control.h"
#include "core/stats.h"
#include "io/log.h"

#define MH_ACCEPT_BATCH 64        /* accepts per wake-up, so clients cannot starve the loop */
#define MH_ACCEPT_PAUSE_MS 100    /* after EMFILE and the like */
#define MH_EVENTS 32

enum mh_state { MH_READ, MH_WAIT, MH_WRITE };

/* One client.  Invariant: on mh's list iff not dead; w is queued only in
 * MH_WAIT; out is the whole answer once in MH_WRITE. */
struct mh_client {
    struct metrics_http *mh;
    int fd;                        /* owned */
    enum mh_state state;
    uint64_t deadline;             /* CLOCK_MONOTONIC ms */
    char in[METRICS_HTTP_REQ_MAX];
    size_t in_len;
    struct metrics_http_req req;
    struct stats_buf out;          /* the answer */
    size_t out_off;                /* bytes of it sent */
    struct stats_waiter w;
    bool dead;                     /* closed during on_epoll; freed at its end */
    struct mh_client *next, *prev;
};

struct metrics_http {
    struct control *ctl;           /* borrowed */
    struct stats *st;              /* borrowed */
    int lfd, epfd, tfd;            /* owned */
    bool listening;                /* lfd is in the epoll set */
    uint64_t resume_accept;        /* ms; 0: not paused */
    struct mh_client *clients;
    unsigned nclients;
    struct mh_client *dead;        /* closed, to free at the end of on_epoll */
    bool in_epoll;                 /* on_epoll is running */
    bool loopback;
    char addr[80];
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- clients ---- */

static void client_close(struct mh_client *c)
{
    struct metrics_http *mh = c->mh;
    if (c->dead)
        return;
    stats_cancel(&c->w);
    epoll_ctl(mh->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        mh->clients = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    mh->nclients--;
    c->dead = true;
    if (mh->in_epoll) {
        c->next = mh->dead;
        mh->dead = c;
        return;
    }
    free(c->out.p);
    free(c);
}

static void timer_arm(struct metrics_http *mh);

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Internal Server Error";
    }
}

/* The whole answer into c->out. */
static void answer_build(struct mh_client *c, int status, const char *ctype, const char *body,
                         size_t body_len)
{
    struct stats_buf *b = &c->out;
    stats_buf_printf(b,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\nConnection: close\r\n%s\r\n",
                     status, reason_phrase(status), ctype, body_len,
                     status == 405 ? "Allow: GET, HEAD\r\n" : "");
    if (!c->req.head && body_len > 0)
        stats_buf_printf(b, "%.*s", (int)body_len, body);
}

/* Send what is left; close when done or broken, else wait for EPOLLOUT. */
static void client_write(struct mh_client *c)
{
    struct metrics_http *mh = c->mh;
    while (c->out_off < c->out.len) {
        ssize_t n = send(c->fd, c->out.p + c->out_off, c->out.len - c->out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            c->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
            if (epoll_ctl(mh->epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
                client_close(c);
            return;
        }
        client_close(c); /* the client went away */
        return;
    }
    shutdown(c->fd, SHUT_WR);
    client_close(c);
}

/* Start sending c->out. */
static void client_answer(struct mh_client *c)
{
    if (c->out.oom) {
        client_close(c);
        return;
    }
    c->state = MH_WRITE;
    client_write(c);
}

/* An error or a fixed answer (not /metrics). */
static void client_simple(struct mh_client *c, int status)
{
    char body[160];
    if (status == 200)
        snprintf(body, sizeof(body), "ortoo: the metrics are at /metrics\n");
    else
        snprintf(body, sizeof(body), "%d %s\n", status, reason_phrase(status));
    answer_build(c, status, "text/plain; charset=utf-8", body, strlen(body));
    client_answer(c);
}

/* A snapshot for a /metrics request (main thread, never inside on_epoll's
 * walk: stats_collect calls back from a posted task). */
static void on_snapshot(const struct stats_snapshot *snap, void *arg)
{
    struct mh_client *c = arg;
    struct metrics_http *mh = c->mh;
    struct stats_buf body = {0};
    stats_render_prometheus(snap, &body);
    if (body.oom) {
        free(body.p);
        client_simple(c, 500); /* may free c */
    } else {
        answer_build(c, 200, "text/plain; version=0.0.4; charset=utf-8", body.p, body.len);
        free(body.p);
        client_answer(c); /* may free c */
    }
    timer_arm(mh);
}

/* The request head is complete (or cannot be). */
static void client_request(struct mh_client *c)
{
    struct metrics_http *mh = c->mh;
    if (c->req.status != 200 || c->req.target != METRICS_HTTP_T_METRICS) {
        client_simple(c, c->req.status);
        return;
    }
    /* Stop reading (no body is read) while the snapshot is gathered. */
    struct epoll_event ev = {.events = 0, .data.ptr = c};
    epoll_ctl(mh->epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->state = MH_WAIT;
    if (stats_collect(mh->st, &c->w, on_snapshot, c) < 0)
        client_simple(c, 503);
}

static void client_read(struct mh_client *c)
{
    for (;;) {
        size_t room = sizeof(c->in) - c->in_len;
        if (room == 0)
            break;
        ssize_t n = recv(c->fd, c->in + c->in_len, room, MSG_DONTWAIT);
        if (n > 0) {
            c->in_len += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        /* EOF or error before a whole request: nothing to answer. */
        if (metrics_http_parse(c->in, c->in_len, &c->req) == 0) {
            client_close(c);
            return;
        }
        break;
    }
    if (metrics_http_parse(c->in, c->in_len, &c->req) == 1)
        client_request(c);
}

static void client_event(struct mh_client *c, uint32_t events)
{
    if (c->dead)
        return;
    if (c->state == MH_READ && (events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP))) {
        client_read(c);
    } else if (c->state == MH_WRITE && (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))) {
        client_write(c);
    } else if (events & (EPOLLHUP | EPOLLERR)) {
        client_close(c); /* gone while the snapshot was gathered */
    }
}

/* ---- the listener and the timer ---- */

static void listener_set(struct metrics_http *mh, bool on)
{
    if (on == mh->listening)
        return;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &mh->lfd};
    if (epoll_ctl(mh->epfd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, mh->lfd, &ev) == 0)
        mh->listening = on;
}

static void accept_all(struct metrics_http *mh)
{
    for (int i = 0; i < MH_ACCEPT_BATCH; i++) {
        int fd = accept4(mh->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                /* EMFILE, ENFILE, ENOBUFS: pause, or the listener spins. */
                log_warn("event=metrics-accept-error (pausing %d ms)", MH_ACCEPT_PAUSE_MS);
                listener_set(mh, false);
                mh->resume_accept = now_ms() + MH_ACCEPT_PAUSE_MS;
            }
            return;
        }
        if (mh->nclients >= METRICS_HTTP_MAX_CLIENTS) {
            static const char busy[] =
                "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n"
                "\r\n";
            (void)!send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
            close(fd);
            continue;
        }
        struct mh_client *c = calloc(1, sizeof(*c));
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
        if (c == NULL || epoll_ctl(mh->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            free(c);
            close(fd);
            continue;
        }
        c->mh = mh;
        c->fd = fd;
        c->state = MH_READ;
        c->deadline = now_ms() + METRICS_HTTP_TIMEOUT_MS;
        c->next = mh->clients;
        if (c->next != NULL)
            c->next->prev = c;
        mh->clients = c;
        mh->nclients++;
    }
}

static void expire(struct metrics_http *mh)
{
    uint64_t now = now_ms();
    for (struct mh_client *c = mh->clients, *next; c != NULL; c = next) {
        next = c->next;
        if (c->deadline > now)
            continue;
        if (c->state == MH_READ) {
            /* Best effort: one non-blocking send, then close. */
            static const char slow[] = "HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n"
                                       "Connection: close\r\n\r\n";
            (void)!send(c->fd, slow, sizeof(slow) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        }
        log_debug("event=metrics-client-timeout state=%d", (int)c->state);
        client_close(c);
    }
    if (mh->resume_accept != 0 && mh->resume_accept <= now) {
        mh->resume_accept = 0;
        listener_set(mh, true);
    }
}

/* Arm the timerfd for the earliest deadline (or disarm it). */
static void timer_arm(struct metrics_http *mh)
{
    uint64_t first = mh->resume_accept;
    for (struct mh_client *c = mh->clients; c != NULL; c = c->next)
        if (first == 0 || c->deadline < first)
            first = c->deadline;
    struct itimerspec its = {0};
    if (first != 0) {
        /* Absolute, on the same clock as now_ms(); at least 1 ns so that a
         * past deadline still fires instead of disarming. */
        its.it_value.tv_sec = (time_t)(first / 1000u);
        its.it_value.tv_nsec = (long)(first % 1000u) * 1000000L;
        if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
            its.it_value.tv_nsec = 1;
    }
    timerfd_settime(mh->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void on_epoll(int fd, short revents, void *arg)
{
    struct metrics_http *mh = arg;
    struct epoll_event ev[MH_EVENTS];
    int n = epoll_wait(mh->epfd, ev, MH_EVENTS, 0);

    mh->in_epoll = true;
    for (int i = 0; i < n; i++) {
        void *p = ev[i].data.ptr;
        if (p == &mh->lfd) {
            accept_all(mh);
        } else if (p == &mh->tfd) {
            uint64_t x;
            (void)!read(mh->tfd, &x, sizeof(x));
            expire(mh);
        } else {
            client_event(p, ev[i].events);
        }
    }
    mh->in_epoll = false;
    while (mh->dead != NULL) {
        struct mh_client *c = mh->dead;
        mh->dead = c->next;
        free(c->out.p);
        free(c);
    }
    timer_arm(mh);
}

/* ---- start and stop ---- */

static bool addr_is_loopback(const struct sockaddr_storage *a)
{
    if (a->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)a)->sin_addr.s_addr) >> 24) == 127;
    if (a->ss_family == AF_INET6) {
        const struct in6_addr *x = &((const struct sockaddr_in6 *)a)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(x))
            return true;
        return IN6_IS_ADDR_V4MAPPED(x) && x->s6_addr[12] == 127;
    }
    return false;
}

int metrics_http_start(struct control *ctl, struct stats *st, const struct config_metrics *mc,
                       struct metrics_http **out, char *err, size_t errlen)
{
    struct metrics_http *mh = calloc(1, sizeof(*mh));
    int rc;

    *out = NULL;
    if (mh == NULL) {
        snprintf(err, errlen, "metrics: out of memory");
        return -ENOMEM;
    }
    mh->ctl = ctl;
    mh->st = st;
    mh->lfd = socket(mc->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    mh->epfd = epoll_create1(EPOLL_CLOEXEC);
    mh->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (mh->lfd < 0 || mh->epfd < 0 || mh->tfd < 0) {
        rc = -errno;
        snprintf(err, errlen, "metrics: %s", strerror(-rc));
        goto fail;
    }
    int one = 1;
    setsockopt(mh->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (mc->addr.ss_family == AF_INET6)
        setsockopt(mh->lfd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(mh->lfd, (const struct sockaddr *)&mc->addr, mc->addr_len) < 0 ||
        listen(mh->lfd, 64) < 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot listen on %s (metrics): %s", mc->text, strerror(-rc));
        goto fail;
    }
    struct sockaddr_storage got;
    socklen_t glen = sizeof(got);
    char ip[INET6_ADDRSTRLEN] = "?";
    if (getsockname(mh->lfd, (struct sockaddr *)&got, &glen) < 0)
        got = mc->addr;
    if (got.ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&got)->sin6_addr, ip, sizeof(ip));
        snprintf(mh->addr, sizeof(mh->addr), "[%s]:%u", ip,
                 ntohs(((struct sockaddr_in6 *)&got)->sin6_port));
    } else {
        inet_ntop(AF_INET, &((struct sockaddr_in *)&got)->sin_addr, ip, sizeof(ip));
        snprintf(mh->addr, sizeof(mh->addr), "%s:%u", ip,
                 ntohs(((struct sockaddr_in *)&got)->sin_port));
    }
    mh->loopback = addr_is_loopback(&got);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &mh->tfd};
    if (epoll_ctl(mh->epfd, EPOLL_CTL_ADD, mh->tfd, &ev) < 0) {
        rc = -errno;
        snprintf(err, errlen, "metrics: epoll: %s", strerror(-rc));
        goto fail;
    }
    listener_set(mh, true);
    if (!mh->listening || (rc = control_watch(ctl, mh->epfd, POLLIN, on_epoll, mh)) < 0) {
        rc = -ENOSPC;
        snprintf(err, errlen, "metrics: cannot join the main loop");
        goto fail;
    }
    *out = mh;
    return 0;
fail:
    if (mh->lfd >= 0)
        close(mh->lfd);
    if (mh->epfd >= 0)
        close(mh->epfd);
    if (mh->tfd >= 0)
        close(mh->tfd);
    free(mh);
    return rc;
}

const char *metrics_http_addr(const struct metrics_http *mh)
{
    return mh->addr;
}

bool metrics_http_loopback(const struct metrics_http *mh)
{
    return mh->loopback;
}

void metrics_http_free(struct metrics_http *mh)
{
    if (mh == NULL)
        return;
    control_unwatch(mh->ctl, mh->epfd);
    while (mh->clients != NULL)
        client_close(mh->clients);
    close(mh->lfd);
    close(mh->epfd);
    close(mh->tfd);
    free(mh);
}
