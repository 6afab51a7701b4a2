/* SPDX-License-Identifier: MIT */
/*
 * control.c - the control socket's server and client, and the main thread's
 * poll set (see control.h for the protocol and the rules).
 *
 * Why by hand: the protocol is a line in and a few lines out on a local
 * socket, served on a thread that already runs a poll(2) loop for signals;
 * an RPC library (varlink, D-Bus) would bring a second event loop and a
 * dependency for what fits in this file.
 *
 * A client is a struct control_req from accept to close.  Its life:
 *   READING  - bytes arrive until the first LF (bounded, with a deadline);
 *   RUNNING  - the handler has the request; data lines it adds are written
 *              as the socket takes them;
 *   WRITING  - control_done() appended the status line; once it is written
 *              the connection is closed and the request freed.
 * A client that errs or times out while RUNNING only loses its socket
 * (fd = -1): the request lives until the handler calls control_done(),
 * so that handlers never see a freed request.
 */
#include "core/control.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "io/log.h"

enum req_state { REQ_READING, REQ_RUNNING, REQ_WRITING };

/*
 * One client connection and its request.  Invariants: fd >= 0 in READING
 * and WRITING (a client that fails there is freed at once); out[outoff..
 * outlen) is what is still to be written; argv points into in[].
 */
struct control_req {
    struct control *ctl;
    struct control_req *next;       /* the control's client list */
    uint64_t id;                    /* for the poll snapshot */
    int fd;                         /* -1: the client is gone (RUNNING only) */
    bool public;                    /* came on the public socket */
    uid_t uid;                      /* SO_PEERCRED */
    enum req_state state;
    uint64_t deadline;              /* ms (CLOCK_MONOTONIC) for the current step */
    char in[CONTROL_LINE_MAX];      /* request bytes */
    size_t inlen;
    char *out;                      /* answer bytes (owned) */
    size_t outlen, outcap, outoff;
    bool truncated;                 /* lines were dropped past CONTROL_OUT_MAX */
    char *argv[CONTROL_MAX_ARGS + 1];
    int argc;
};

struct ctl_cmd {
    char name[32];
    unsigned flags;                 /* CONTROL_PUBLIC */
    const char *help;               /* borrowed */
    control_cmd_fn fn;
    void *arg;
};

struct ctl_listener {
    int fd;
    bool public;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

struct ctl_watch {
    int fd;                         /* -1: free slot */
    short events;
    control_fd_fn fn;
    void *arg;
};

enum snap_kind { SNAP_LISTENER, SNAP_EVENT, SNAP_WATCH, SNAP_CLIENT };

/* What the i-th pollfd of the last control_pollfds() stands for. */
struct ctl_snap {
    enum snap_kind kind;
    size_t idx;                     /* listener or watch slot */
    uint64_t id;                    /* client id (the client may be gone by dispatch) */
};

/*
 * The control.  Invariants: nclients counts the list; posted_* is touched
 * only under lock; everything else only on the main thread.
 */
struct control {
    struct ctl_listener lst[2];
    size_t nlst;
    struct ctl_cmd *cmds;
    size_t ncmds;
    struct control_req *clients;
    size_t nclients;
    uint64_t next_id;
    int efd;                        /* eventfd: tasks were posted */
    pthread_mutex_t lock;
    struct control_task *posted_head, *posted_tail;
    struct ctl_watch watch[CONTROL_MAX_WATCH];
    struct ctl_snap snap[CONTROL_MAX_POLLFDS];
    size_t nsnap;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- built-in commands ---- */

static void cmd_help(struct control_req *req, int argc, char **argv, void *arg)
{
    struct control *c = req->ctl;
    for (size_t i = 0; i < c->ncmds; i++) {
        if (req->public && !(c->cmds[i].flags & CONTROL_PUBLIC))
            continue;
        control_reply(req, "%-10s %s", c->cmds[i].name, c->cmds[i].help);
    }
    control_done(req, true, NULL);
}

static void cmd_ping(struct control_req *req, int argc, char **argv, void *arg)
{
    control_done(req, true, "pong pid=%ld", (long)getpid());
}

/* ---- set-up ---- */

struct control *control_new(void)
{
    struct control *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (c->efd < 0) {
        free(c);
        return NULL;
    }
    pthread_mutex_init(&c->lock, NULL);
    for (size_t i = 0; i < CONTROL_MAX_WATCH; i++)
        c->watch[i].fd = -1;
    if (control_register(c, "help", CONTROL_PUBLIC, "list the commands", cmd_help, NULL) < 0 ||
        control_register(c, "ping", CONTROL_PUBLIC, "check that the daemon answers", cmd_ping,
                         NULL) < 0) {
        control_free(c);
        return NULL;
    }
    return c;
}

/* Read and drop what the client sent beyond its request (bounded): closing
 * a UNIX socket with unread input resets it, and the client would lose the
 * answer it has not read yet. */
static void drain_input(int fd)
{
    char buf[4096];
    for (int i = 0; i < 16; i++) {
        ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n <= 0)
            return;
    }
}

static void req_free(struct control_req *req)
{
    struct control *c = req->ctl;
    for (struct control_req **p = &c->clients; *p != NULL; p = &(*p)->next) {
        if (*p == req) {
            *p = req->next;
            c->nclients--;
            break;
        }
    }
    if (req->fd >= 0)
        close(req->fd);
    free(req->out);
    free(req);
}

void control_free(struct control *c)
{
    if (c == NULL)
        return;
    while (c->clients != NULL)
        req_free(c->clients);
    for (size_t i = 0; i < c->nlst; i++) {
        close(c->lst[i].fd);
        unlink(c->lst[i].path);
    }
    close(c->efd);
    pthread_mutex_destroy(&c->lock);
    free(c->cmds);
    free(c);
}

int control_listen(struct control *c, const char *path, mode_t mode, uid_t uid, gid_t gid,
                   bool public, char *err, size_t errlen)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    int fd = -1, rc;

    if (c->nlst == sizeof(c->lst) / sizeof(c->lst[0])) {
        snprintf(err, errlen, "%s: too many control sockets", path);
        return -ENOSPC;
    }
    if (strlen(path) >= sizeof(sun.sun_path)) {
        snprintf(err, errlen,
                 "%s: path too long for a UNIX socket (at most %zu bytes): use a shorter "
                 "[server] spool",
                 path, sizeof(sun.sun_path) - 1);
        return -ENAMETOOLONG;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);

    /* Someone answering there is a running daemon: never steal its socket. */
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail_errno;
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
        close(fd);
        snprintf(err, errlen, "%s: another ortoo is running on this spool", path);
        return -EADDRINUSE;
    }
    close(fd);
    if (unlink(path) < 0 && errno != ENOENT)
        goto fail_errno_nofd;

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail_errno_nofd;
    if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0)
        goto fail_errno;
    /* Owner first, then the mode (chown may clear bits). */
    if ((uid != (uid_t)-1 || gid != (gid_t)-1) && chown(path, uid, gid) < 0)
        goto fail_unlink;
    if (chmod(path, mode) < 0)
        goto fail_unlink;
    if (listen(fd, 256) < 0)
        goto fail_unlink;
    struct ctl_listener *l = &c->lst[c->nlst++];
    l->fd = fd;
    l->public = public;
    memcpy(l->path, path, strlen(path) + 1);
    return 0;
fail_unlink:
    rc = -errno;
    unlink(path);
    close(fd);
    snprintf(err, errlen, "%s: %s", path, strerror(-rc));
    return rc;
fail_errno:
    rc = -errno;
    close(fd);
    snprintf(err, errlen, "%s: %s", path, strerror(-rc));
    return rc;
fail_errno_nofd:
    rc = -errno;
    snprintf(err, errlen, "%s: %s", path, strerror(-rc));
    return rc;
}

static bool cmd_name_valid(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len >= sizeof(((struct ctl_cmd *)0)->name))
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-'))
            return false;
    }
    return true;
}

static struct ctl_cmd *cmd_find(struct control *c, const char *name)
{
    for (size_t i = 0; i < c->ncmds; i++)
        if (strcmp(c->cmds[i].name, name) == 0)
            return &c->cmds[i];
    return NULL;
}

int control_register(struct control *c, const char *name, unsigned flags, const char *help,
                     control_cmd_fn fn, void *arg)
{
    if (!cmd_name_valid(name) || fn == NULL || help == NULL)
        return -EINVAL;
    if (cmd_find(c, name) != NULL)
        return -EEXIST;
    struct ctl_cmd *n = realloc(c->cmds, (c->ncmds + 1) * sizeof(*n));
    if (n == NULL)
        return -ENOMEM;
    c->cmds = n;
    struct ctl_cmd *cmd = &c->cmds[c->ncmds++];
    memset(cmd, 0, sizeof(*cmd));
    memcpy(cmd->name, name, strlen(name) + 1);
    cmd->flags = flags;
    cmd->help = help;
    cmd->fn = fn;
    cmd->arg = arg;
    return 0;
}

/* ---- answers ---- */

/* Append bytes to the answer; past CONTROL_OUT_MAX only the status line
 * (force) still goes in. */
static void out_append(struct control_req *req, const char *s, size_t len, bool force)
{
    if (req->fd < 0)
        return;
    if (!force && req->outlen + len > CONTROL_OUT_MAX) {
        req->truncated = true;
        return;
    }
    if (req->outlen + len > req->outcap) {
        size_t cap = req->outcap ? req->outcap : 256;
        while (cap < req->outlen + len)
            cap *= 2;
        char *n = realloc(req->out, cap);
        if (n == NULL) {
            req->truncated = true;
            return;
        }
        req->out = n;
        req->outcap = cap;
    }
    memcpy(req->out + req->outlen, s, len);
    req->outlen += len;
}

/* prefix + formatted text + LF, control characters made '?' so that one
 * line stays one line. */
static void out_line(struct control_req *req, const char *prefix, const char *fmt, va_list ap,
                     bool force)
{
    char buf[2048];
    int n = 0;
    if (fmt != NULL) {
        n = vsnprintf(buf, sizeof(buf), fmt, ap);
        if (n < 0)
            n = 0;
        if ((size_t)n >= sizeof(buf))
            n = sizeof(buf) - 1;
    }
    for (int i = 0; i < n; i++)
        if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f)
            buf[i] = '?';
    out_append(req, prefix, strlen(prefix), force);
    if (n > 0) {
        if (prefix[0] == 'O') /* "OK" is followed by a space before text */
            out_append(req, " ", 1, force);
        out_append(req, buf, (size_t)n, force);
    }
    out_append(req, "\n", 1, force);
}

void control_reply(struct control_req *req, const char *fmt, ...)
{
    if (req->state != REQ_RUNNING)
        return;
    va_list ap;
    va_start(ap, fmt);
    out_line(req, "* ", fmt, ap, false);
    va_end(ap);
    if (req->fd >= 0 && req->outoff == 0 && req->outlen > 0)
        req->deadline = now_ms() + CONTROL_TIMEOUT_MS;
}

void control_done(struct control_req *req, bool ok, const char *fmt, ...)
{
    assert(req->state == REQ_RUNNING); /* exactly once per request */
    if (req->fd < 0) { /* the client went away: nobody to tell */
        req_free(req);
        return;
    }
    if (req->truncated)
        out_append(req, "* (output truncated)\n", 21, true);
    va_list ap;
    va_start(ap, fmt);
    if (!ok && fmt == NULL)
        out_append(req, "ERR failed\n", 11, true);
    else
        out_line(req, ok ? "OK" : "ERR ", fmt, ap, true);
    va_end(ap);
    req->state = REQ_WRITING;
    req->deadline = now_ms() + CONTROL_TIMEOUT_MS;
}

bool control_req_public(const struct control_req *req)
{
    return req->public;
}

uid_t control_req_uid(const struct control_req *req)
{
    return req->uid;
}

/* ---- posting and watching ---- */

void control_post(struct control *c, struct control_task *t, control_fn fn, void *arg)
{
    t->fn = fn;
    t->arg = arg;
    t->next = NULL;
    pthread_mutex_lock(&c->lock);
    if (c->posted_tail != NULL)
        c->posted_tail->next = t;
    else
        c->posted_head = t;
    c->posted_tail = t;
    pthread_mutex_unlock(&c->lock);
    uint64_t one = 1;
    /* Only EAGAIN (counter full: already signalled) can fail here. */
    (void)!write(c->efd, &one, sizeof(one));
}

void control_run_posted(struct control *c)
{
    uint64_t n;
    (void)!read(c->efd, &n, sizeof(n));
    pthread_mutex_lock(&c->lock);
    struct control_task *t = c->posted_head;
    c->posted_head = c->posted_tail = NULL;
    pthread_mutex_unlock(&c->lock);
    while (t != NULL) {
        struct control_task *next = t->next; /* fn may free t */
        t->fn(t->arg);
        t = next;
    }
}

void control_wait_posted(struct control *c, int timeout_ms)
{
    struct pollfd p = {.fd = c->efd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) > 0)
        control_run_posted(c);
}

int control_watch(struct control *c, int fd, short events, control_fd_fn fn, void *arg)
{
    for (size_t i = 0; i < CONTROL_MAX_WATCH; i++) {
        if (c->watch[i].fd < 0) {
            c->watch[i] = (struct ctl_watch){.fd = fd, .events = events, .fn = fn, .arg = arg};
            return 0;
        }
    }
    return -ENOSPC;
}

void control_unwatch(struct control *c, int fd)
{
    for (size_t i = 0; i < CONTROL_MAX_WATCH; i++)
        if (c->watch[i].fd == fd)
            c->watch[i].fd = -1;
}

/* ---- serving clients ---- */

static void client_accept(struct control *c, struct ctl_listener *l)
{
    for (int k = 0; k < 64; k++) { /* a bounded batch per turn: the other fds get theirs */
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
                errno != ECONNABORTED)
                log_warn("event=control-accept-failed");
            return;
        }
        if (c->nclients >= CONTROL_MAX_CLIENTS) {
            static const char busy[] = "ERR too many control clients, try again\n";
            (void)!write(fd, busy, sizeof(busy) - 1);
            close(fd);
            continue;
        }
        struct control_req *req = calloc(1, sizeof(*req));
        if (req == NULL) {
            close(fd);
            continue;
        }
        struct ucred cred;
        socklen_t clen = sizeof(cred);
        req->uid = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0 ? cred.uid
                                                                              : (uid_t)-1;
        req->ctl = c;
        req->fd = fd;
        req->public = l->public;
        req->id = ++c->next_id;
        req->state = REQ_READING;
        req->deadline = now_ms() + CONTROL_TIMEOUT_MS;
        req->next = c->clients;
        c->clients = req;
        c->nclients++;
    }
}

/* Split the request line into words and run its command. */
static void client_run(struct control_req *req, size_t linelen)
{
    struct control *c = req->ctl;
    char *line = req->in;

    line[linelen] = '\0';
    if (linelen > 0 && line[linelen - 1] == '\r')
        line[--linelen] = '\0';
    req->state = REQ_RUNNING;
    for (size_t i = 0; i < linelen; i++) {
        unsigned char ch = (unsigned char)line[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
            control_done(req, false, "control characters in the request");
            return;
        }
    }
    char *save = NULL;
    for (char *w = strtok_r(line, " \t", &save); w != NULL; w = strtok_r(NULL, " \t", &save)) {
        if (req->argc == CONTROL_MAX_ARGS) {
            control_done(req, false, "too many words in the request (at most %d)",
                         CONTROL_MAX_ARGS);
            return;
        }
        req->argv[req->argc++] = w;
    }
    req->argv[req->argc] = NULL;
    if (req->argc == 0) {
        control_done(req, false, "empty request (try: help)");
        return;
    }
    struct ctl_cmd *cmd = cmd_find(c, req->argv[0]);
    if (cmd == NULL || (req->public && !(cmd->flags & CONTROL_PUBLIC))) {
        control_done(req, false, "unknown command '%.64s' (try: help)", req->argv[0]);
        return;
    }
    log_debug("event=control-request cmd=%s uid=%ld public=%d", cmd->name, (long)req->uid,
              req->public);
    cmd->fn(req, req->argc, req->argv, cmd->arg);
}

static void client_read(struct control_req *req)
{
    for (;;) {
        size_t room = sizeof(req->in) - req->inlen;
        if (room == 0) {
            req->state = REQ_RUNNING;
            control_done(req, false, "request line too long (at most %d bytes)",
                         CONTROL_LINE_MAX - 1);
            return;
        }
        ssize_t n = read(req->fd, req->in + req->inlen, room);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                req_free(req);
            return;
        }
        if (n == 0) { /* closed before a whole line: nothing to answer */
            req_free(req);
            return;
        }
        char *lf = memchr(req->in + req->inlen, '\n', (size_t)n);
        req->inlen += (size_t)n;
        if (lf != NULL) {
            client_run(req, (size_t)(lf - req->in));
            return;
        }
        if (req->inlen == sizeof(req->in)) /* no LF in a full buffer */
            continue;
    }
}

/* Write what is pending; frees the request once a WRITING one is done or
 * the client is gone in WRITING. */
static void client_write(struct control_req *req)
{
    while (req->outoff < req->outlen) {
        ssize_t n = send(req->fd, req->out + req->outoff, req->outlen - req->outoff,
                         MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            goto gone;
        }
        req->outoff += (size_t)n;
        req->deadline = now_ms() + CONTROL_TIMEOUT_MS;
    }
    req->outoff = req->outlen = 0;
    if (req->state == REQ_WRITING) {
        drain_input(req->fd);
        req_free(req);
    }
    return;
gone:
    if (req->state == REQ_WRITING) {
        req_free(req);
    } else { /* RUNNING: keep the request for its handler */
        close(req->fd);
        req->fd = -1;
    }
}

static struct control_req *client_by_id(struct control *c, uint64_t id)
{
    for (struct control_req *r = c->clients; r != NULL; r = r->next)
        if (r->id == id)
            return r;
    return NULL;
}

static bool client_wants_write(const struct control_req *r)
{
    return r->fd >= 0 && r->outoff < r->outlen;
}

size_t control_pollfds(struct control *c, struct pollfd *pfd, size_t cap)
{
    size_t n = 0;
    c->nsnap = 0;
#define ADD(fd_, ev_, kind_, idx_, id_)                                                        \
    do {                                                                                       \
        if (n < cap && n < CONTROL_MAX_POLLFDS) {                                              \
            pfd[n] = (struct pollfd){.fd = (fd_), .events = (ev_)};                            \
            c->snap[n] = (struct ctl_snap){.kind = (kind_), .idx = (idx_), .id = (id_)};       \
            n++;                                                                               \
        }                                                                                      \
    } while (0)
    ADD(c->efd, POLLIN, SNAP_EVENT, 0, 0);
    for (size_t i = 0; i < c->nlst; i++)
        ADD(c->lst[i].fd, POLLIN, SNAP_LISTENER, i, 0);
    for (size_t i = 0; i < CONTROL_MAX_WATCH; i++)
        if (c->watch[i].fd >= 0)
            ADD(c->watch[i].fd, c->watch[i].events, SNAP_WATCH, i, 0);
    for (struct control_req *r = c->clients; r != NULL; r = r->next) {
        if (r->state == REQ_READING)
            ADD(r->fd, POLLIN, SNAP_CLIENT, 0, r->id);
        else if (client_wants_write(r))
            ADD(r->fd, POLLOUT, SNAP_CLIENT, 0, r->id);
    }
#undef ADD
    c->nsnap = n;
    return n;
}

int control_timeout(const struct control *c)
{
    uint64_t now = now_ms(), first = UINT64_MAX;
    for (const struct control_req *r = c->clients; r != NULL; r = r->next) {
        if (r->state == REQ_READING || client_wants_write(r))
            if (r->deadline < first)
                first = r->deadline;
    }
    if (first == UINT64_MAX)
        return -1;
    return first <= now ? 0 : (int)(first - now > 60000 ? 60000 : first - now);
}

/* Drop clients past their deadline. */
static void clients_expire(struct control *c)
{
    uint64_t now = now_ms();
    struct control_req *r = c->clients;
    while (r != NULL) {
        struct control_req *next = r->next;
        if ((r->state == REQ_READING || client_wants_write(r)) && r->deadline <= now) {
            log_debug("event=control-timeout uid=%ld", (long)r->uid);
            if (r->state == REQ_RUNNING) {
                close(r->fd);
                r->fd = -1;
            } else {
                req_free(r);
            }
        }
        r = next;
    }
}

void control_dispatch(struct control *c, const struct pollfd *pfd, size_t n)
{
    if (n > c->nsnap)
        n = c->nsnap;
    control_run_posted(c);
    for (size_t i = 0; i < n; i++) {
        if (pfd[i].revents == 0)
            continue;
        struct ctl_snap s = c->snap[i];
        switch (s.kind) {
        case SNAP_EVENT:
            break; /* ran above */
        case SNAP_LISTENER:
            client_accept(c, &c->lst[s.idx]);
            break;
        case SNAP_WATCH:
            if (c->watch[s.idx].fd == pfd[i].fd)
                c->watch[s.idx].fn(pfd[i].fd, pfd[i].revents, c->watch[s.idx].arg);
            break;
        case SNAP_CLIENT: {
            struct control_req *r = client_by_id(c, s.id);
            if (r == NULL || r->fd != pfd[i].fd)
                break;
            if (r->state == REQ_READING)
                client_read(r);
            else
                client_write(r);
            break;
        }
        }
    }
    /* Answers made during this turn are written at once when they fit. */
    struct control_req *r = c->clients;
    while (r != NULL) {
        struct control_req *next = r->next;
        if (client_wants_write(r) && r->outoff == 0)
            client_write(r);
        r = next;
    }
    clients_expire(c);
}

/* ---- client side ---- */

int control_call(const char *path, const char *request, int timeout_ms, control_line_cb on_line,
                 void *arg, char *status, size_t statuslen)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    int rc;

    status[0] = '\0';
    if (strlen(path) >= sizeof(sun.sun_path)) {
        snprintf(status, statuslen, "%s: path too long for a UNIX socket", path);
        return -ENAMETOOLONG;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = -errno;
        snprintf(status, statuslen, "socket: %s", strerror(-rc));
        return rc;
    }
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        rc = -errno;
        snprintf(status, statuslen, "%s: %s", path, strerror(-rc));
        close(fd);
        return rc;
    }
    size_t rlen = strlen(request);
    char *msg = malloc(rlen + 2);
    if (msg == NULL) {
        close(fd);
        snprintf(status, statuslen, "out of memory");
        return -ENOMEM;
    }
    memcpy(msg, request, rlen);
    msg[rlen] = '\n';
    for (size_t off = 0; off < rlen + 1;) {
        ssize_t n = send(fd, msg + off, rlen + 1 - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = errno == EAGAIN ? -ETIMEDOUT : -errno;
            snprintf(status, statuslen, "%s: sending the request: %s", path, strerror(-rc));
            free(msg);
            close(fd);
            return rc;
        }
        off += (size_t)n;
    }
    free(msg);

    /* Read lines; a line longer than the buffer is cut (the rest skipped). */
    char line[8192];
    size_t len = 0;
    char buf[4096];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n == 0 ? -EPROTO : (errno == EAGAIN ? -ETIMEDOUT : -errno);
            snprintf(status, statuslen, "%s: %s", path,
                     n == 0 ? "connection closed before the status line"
                            : rc == -ETIMEDOUT ? "no answer in time" : strerror(-rc));
            close(fd);
            return rc;
        }
        for (ssize_t i = 0; i < n; i++) {
            char ch = buf[i];
            if (ch != '\n') {
                if (len < sizeof(line) - 1)
                    line[len++] = ch;
                continue;
            }
            line[len] = '\0';
            len = 0;
            if (strncmp(line, "* ", 2) == 0) {
                if (on_line != NULL)
                    on_line(line + 2, arg);
            } else if (strcmp(line, "OK") == 0 || strncmp(line, "OK ", 3) == 0) {
                snprintf(status, statuslen, "%s", line[2] ? line + 3 : "");
                close(fd);
                return 0;
            } else if (strncmp(line, "ERR ", 4) == 0) {
                snprintf(status, statuslen, "%s", line + 4);
                close(fd);
                return 1;
            } else {
                snprintf(status, statuslen, "%s: malformed answer line '%.80s'", path, line);
                close(fd);
                return -EPROTO;
            }
        }
    }
}
