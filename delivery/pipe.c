/* SPDX-License-Identifier: MIT */
/*
 * pipe.c - delivery to a command (see pipe.h): the blocking runner and the
 * worker pool that keeps it off the reactors.
 *
 * pipe_run() starts /bin/sh with posix_spawn (glibc's clone(CLONE_VFORK)
 * path: no copy of a big address space, and safe in a threaded process;
 * its file actions give the child its pipes, chdir("/") and closefrom(3),
 * its attributes a new process group, an empty signal mask and default
 * dispositions: the daemon's threads block SIGTERM, SIGHUP and SIGPIPE,
 * which a child would otherwise inherit).  Every descriptor here is
 * O_CLOEXEC, so a command started by another worker at the same moment
 * does not inherit ours.
 *
 * One poll loop (struct run) serves the three ends at once: stdin is fed
 * from maildir_stream() in LF form while the output pipe is read (kept up
 * to PIPE_OUTPUT_MAX, the rest dropped) and a pidfd reports the exit, all
 * under one monotonic deadline.  When the command exits, what it wrote is
 * read without waiting for processes it left behind (they may hold the
 * pipe open).  The deadline kills the whole process group.
 */
#include "delivery/pipe.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "io/loop.h"
#include "io/workq.h"

#define PIPE_ENV_MAX 12
#define PIPE_READ_BUF 4096
#define PIPE_POLL_SLICE_MS 100        /* without a pidfd: how often waitpid looks */

/*
 * One running command.  Invariants: in, out and pidfd are open descriptors
 * or -1; reaped is set once waitpid has returned the child's status (then
 * pid is not to be signalled any more).
 */
struct run {
    pid_t pid;
    int in, out, pidfd;
    bool reaped;
    int wstatus;
    bool timed_out;
    int64_t deadline_ms;              /* CLOCK_MONOTONIC; 0: none */
    struct pipe_result *res;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Keep the first bytes, count all of them. */
static void output_take(struct pipe_result *res, const char *p, size_t n)
{
    size_t room = PIPE_OUTPUT_MAX - res->output_len;
    size_t k = n < room ? n : room;

    memcpy(res->output + res->output_len, p, k);
    res->output_len += k;
    res->output[res->output_len] = '\0';
    res->output_total += n;
}

/* Read what the output pipe holds now (non-blocking); closes it at EOF. */
static void output_drain(struct run *r)
{
    char buf[PIPE_READ_BUF];

    while (r->out >= 0) {
        ssize_t n = read(r->out, buf, sizeof(buf));
        if (n > 0) {
            output_take(r->res, buf, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        close_fd(&r->out); /* EOF or an error: no more output */
    }
}

static void reap_nohang(struct run *r)
{
    if (r->reaped)
        return;
    pid_t w = waitpid(r->pid, &r->wstatus, WNOHANG);
    if (w < 0 && errno == ECHILD && r->res->err == 0)
        r->res->err = -ECHILD; /* reaped by someone else: status unknown */
    if (w == r->pid || (w < 0 && errno == ECHILD)) {
        r->reaped = true;
        close_fd(&r->pidfd);
        /* What it wrote before it ended is in the pipe now. */
        output_drain(r);
    }
}

/*
 * Wait for something to happen: stdin writable (want_in), output to read,
 * the exit.  Returns 0, or -ETIMEDOUT once the deadline has passed.
 */
static int run_poll(struct run *r, bool want_in)
{
    struct pollfd pfd[3];
    int n = 0, i_out = -1, i_pid = -1;
    int timeout = -1;

    if (r->deadline_ms != 0) {
        int64_t left = r->deadline_ms - now_ms();
        if (left <= 0) {
            r->timed_out = true;
            return -ETIMEDOUT;
        }
        timeout = left > 60000 ? 60000 : (int)left;
    }
    if (want_in && r->in >= 0)
        pfd[n++] = (struct pollfd){.fd = r->in, .events = POLLOUT}; /* the caller writes */
    if (r->out >= 0) {
        i_out = n;
        pfd[n++] = (struct pollfd){.fd = r->out, .events = POLLIN};
    }
    if (!r->reaped && r->pidfd >= 0) {
        i_pid = n;
        pfd[n++] = (struct pollfd){.fd = r->pidfd, .events = POLLIN};
    } else if (!r->reaped && (timeout < 0 || timeout > PIPE_POLL_SLICE_MS)) {
        timeout = PIPE_POLL_SLICE_MS;
    }
    int rc = poll(pfd, (nfds_t)n, timeout);
    if (rc < 0 && errno != EINTR)
        return -errno;
    if (rc > 0 && i_out >= 0 && pfd[i_out].revents != 0)
        output_drain(r);
    if (i_pid < 0 || (rc > 0 && pfd[i_pid].revents != 0))
        reap_nohang(r);
    return 0;
}

/* maildir_sink_fn: write to the command's stdin, serving the other ends
 * while the pipe is full.  -EPIPE stops the stream without an error: the
 * command no longer reads (it closed stdin or exited). */
static int stdin_sink(void *arg, const char *p, size_t len)
{
    struct run *r = arg;

    while (len > 0) {
        if (r->in < 0 || r->reaped)
            return -EPIPE;
        ssize_t n = write(r->in, p, len);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            int rc = run_poll(r, true);
            if (rc < 0)
                return rc;
            continue;
        }
        close_fd(&r->in); /* EPIPE: nobody reads any more */
        return -EPIPE;
    }
    return 0;
}

static int spawn(struct run *r, const struct pipe_job *job, char *const *env)
{
    int in[2] = {-1, -1}, out[2] = {-1, -1};
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none, all;
    int rc;

    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0) {
        rc = -errno;
        close_fd(&in[0]);
        close_fd(&in[1]);
        return rc;
    }
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&at);
    sigemptyset(&none);
    sigfillset(&all);
    rc = posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    if (rc == 0)
        rc = posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    if (rc == 0)
        rc = posix_spawn_file_actions_adddup2(&fa, out[1], 2);
    if (rc == 0)
        rc = posix_spawn_file_actions_addchdir_np(&fa, "/");
    if (rc == 0)
        rc = posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    if (rc == 0)
        rc = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                               POSIX_SPAWN_SETSIGDEF);
    if (rc == 0)
        rc = posix_spawnattr_setpgroup(&at, 0);
    if (rc == 0)
        rc = posix_spawnattr_setsigmask(&at, &none);
    if (rc == 0)
        rc = posix_spawnattr_setsigdefault(&at, &all);
    if (rc == 0) {
        char *argv[] = {"sh", "-c", (char *)job->command, NULL};
        rc = posix_spawn(&r->pid, "/bin/sh", &fa, &at, argv, env);
    }
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(in[0]);
    close(out[1]);
    if (rc != 0) {
        close(in[1]);
        close(out[0]);
        return -rc;
    }
    r->in = in[1];
    r->out = out[0];
    fcntl(r->in, F_SETFL, O_NONBLOCK);
    fcntl(r->out, F_SETFL, O_NONBLOCK);
#ifdef SYS_pidfd_open
    r->pidfd = (int)syscall(SYS_pidfd_open, r->pid, 0); /* -1 on old kernels: polled */
    if (r->pidfd >= 0)
        fcntl(r->pidfd, F_SETFD, FD_CLOEXEC);
#endif
    return 0;
}

/* "NAME=value" into a fresh string; NULL without memory. */
static char *env_pair(const char *name, const char *value)
{
    char *s;
    return asprintf(&s, "%s=%s", name, value) < 0 ? NULL : s;
}

static int env_build(const struct pipe_job *job, char **env)
{
    const struct {
        const char *name, *value;
    } vars[] = {
        {"PATH", "/usr/bin:/bin"},
        {"SHELL", "/bin/sh"},
        {"HOME", "/"},
        {"SENDER", job->sender},
        {"RECIPIENT", job->recipient},
        {"ORIGINAL_RECIPIENT", job->original_recipient},
        {"LOCAL", job->local},
        {"DOMAIN", job->domain},
        {"EXTENSION", job->extension},
    };
    size_t n = 0;

    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
        if (vars[i].value == NULL)
            continue;
        if ((env[n] = env_pair(vars[i].name, vars[i].value)) == NULL)
            return -ENOMEM;
        n++;
    }
    env[n] = NULL;
    return 0;
}

int pipe_run(const struct pipe_job *job, struct pipe_result *res)
{
    struct run r = {.pid = -1, .in = -1, .out = -1, .pidfd = -1, .res = res};
    char *env[PIPE_ENV_MAX] = {0};
    sigset_t spipe, old, pending;
    bool was_pending;
    int rc;

    memset(res, 0, sizeof(*res));
    if (job->command == NULL || job->command[0] == '\0' || job->sender == NULL ||
        job->recipient == NULL)
        return res->err = -EINVAL;
    if ((rc = env_build(job, env)) < 0) {
        res->err = rc;
        goto out_env;
    }
    /* Writing to a command that stopped reading raises SIGPIPE: blocked
     * here (the daemon's threads have it blocked already), and taken back
     * below if we caused it, so that write() just fails with EPIPE. */
    sigemptyset(&spipe);
    sigaddset(&spipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &spipe, &old);
    sigpending(&pending);
    was_pending = sigismember(&pending, SIGPIPE);

    if (job->timeout != 0)
        r.deadline_ms = now_ms() + (int64_t)job->timeout * 1000;
    if ((rc = spawn(&r, job, env)) < 0) {
        res->err = rc;
        goto out_sig;
    }
    rc = maildir_stream(&job->msg, true, stdin_sink, &r);
    if (rc < 0 && rc != -EPIPE && rc != -ETIMEDOUT)
        res->err = rc; /* the spool's bytes: not the command's fault */
    close_fd(&r.in);   /* EOF for the command */
    while (res->err == 0 && !r.timed_out && !r.reaped) {
        if ((rc = run_poll(&r, false)) < 0 && rc != -ETIMEDOUT)
            res->err = rc;
    }
    if (!r.reaped) {
        /* Timed out or failed: the command and everything it started. */
        kill(-r.pid, SIGKILL);
        while (waitpid(r.pid, &r.wstatus, 0) < 0 && errno == EINTR)
            ;
        r.reaped = true;
        output_drain(&r);
    }
    close_fd(&r.out);
    close_fd(&r.pidfd);
    res->timed_out = res->err == 0 && r.timed_out;
    if (res->err == 0 && !res->timed_out) {
        if (WIFEXITED(r.wstatus)) {
            res->exited = true;
            res->exit_code = WEXITSTATUS(r.wstatus);
        } else if (WIFSIGNALED(r.wstatus)) {
            res->signo = WTERMSIG(r.wstatus);
        }
    }
out_sig:
    sigpending(&pending);
    if (!was_pending && sigismember(&pending, SIGPIPE)) {
        struct timespec zero = {0, 0};
        sigtimedwait(&spipe, NULL, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
out_env:
    for (size_t i = 0; env[i] != NULL; i++)
        free(env[i]);
    return res->err;
}

enum pipe_verdict pipe_verdict(const struct pipe_result *res)
{
    if (res->err != 0 || res->timed_out || !res->exited)
        return PIPE_TEMPORARY;
    if (res->exit_code == 0)
        return PIPE_DELIVERED;
    if (res->exit_code == PIPE_EX_TEMPFAIL)
        return PIPE_TEMPORARY;
    return PIPE_PERMANENT;
}

/* The names of sysexits.h (64..78), for the bounce text. */
static const char *sysexit_name(int code)
{
    static const char *const names[] = {
        "EX_USAGE",    "EX_DATAERR",  "EX_NOINPUT",   "EX_NOUSER", "EX_NOHOST",
        "EX_UNAVAILABLE", "EX_SOFTWARE", "EX_OSERR",  "EX_OSFILE", "EX_CANTCREAT",
        "EX_IOERR",    "EX_TEMPFAIL", "EX_PROTOCOL",  "EX_NOPERM", "EX_CONFIG",
    };
    return code >= 64 && code <= 78 ? names[code - 64] : NULL;
}

void pipe_describe(const struct pipe_job *job, const struct pipe_result *res, char *buf,
                   size_t cap)
{
    size_t n;

    if (cap == 0)
        return;
    if (res->err != 0) {
        n = (size_t)snprintf(buf, cap, "command not run: %s", strerror(-res->err));
    } else if (res->timed_out) {
        n = (size_t)snprintf(buf, cap, "command timed out after %us", job->timeout);
    } else if (!res->exited) {
        n = (size_t)snprintf(buf, cap, "command killed by signal %d (%s)", res->signo,
                             strsignal(res->signo));
    } else if (sysexit_name(res->exit_code) != NULL) {
        n = (size_t)snprintf(buf, cap, "command exited %d (%s)", res->exit_code,
                             sysexit_name(res->exit_code));
    } else {
        n = (size_t)snprintf(buf, cap, "command exited %d", res->exit_code);
    }
    if (n >= cap)
        return;
    /* The first lines of output, on one line: at most 200 bytes of it. */
    const char *o = res->output;
    size_t len = res->output_len;
    while (len > 0 && (o[len - 1] == '\n' || o[len - 1] == '\r' || o[len - 1] == ' '))
        len--;
    if (len == 0)
        return;
    if (len > 200)
        len = 200;
    if (n + 3 >= cap)
        return;
    memcpy(buf + n, ": ", 2);
    n += 2;
    for (size_t i = 0; i < len && n + 1 < cap; i++) {
        unsigned char c = (unsigned char)o[i];
        buf[n++] = c < ' ' || c == 0x7f ? ' ' : (char)c;
    }
    buf[n] = '\0';
}

/* ---- the pool ---- */

/*
 * Invariants: head..tail is the FIFO of queued requests (tail valid when
 * head is not NULL); stopping is set once, by pipe_pool_free(), after
 * which nothing is queued; workers exit when stopping and the queue is
 * empty.
 */
struct pipe_pool {
    struct workq *q;
};

static void run_job(struct workq_item *it)
{
    struct pipe_req *req = (struct pipe_req *)((char *)it - offsetof(struct pipe_req, work));
    pipe_run(&req->job, &req->result);
}

static void job_done(struct workq_item *it)
{
    struct pipe_req *req = (struct pipe_req *)((char *)it - offsetof(struct pipe_req, work));
    req->cb(req);
}

struct pipe_pool *pipe_pool_new(unsigned nworkers)
{
    struct pipe_pool *p = calloc(1, sizeof(*p));

    /* The workers have SIGPIPE blocked (pipe_run blocks it too). */
    if (p == NULL || (p->q = workq_new(nworkers)) == NULL) {
        free(p);
        return NULL;
    }
    return p;
}

void pipe_pool_free(struct pipe_pool *p)
{
    if (p == NULL)
        return;
    workq_free(p->q);
    free(p);
}

int pipe_deliver(struct pipe_pool *p, struct io_loop *loop, struct pipe_req *req, pipe_cb cb)
{
    if (p == NULL || loop == NULL || req == NULL || cb == NULL || req->job.command == NULL ||
        req->job.sender == NULL || req->job.recipient == NULL)
        return -EINVAL;
    req->cb = cb;
    memset(&req->result, 0, sizeof(req->result));
    req->work.run = run_job;
    req->work.done = job_done;
    return workq_submit(p->q, loop, &req->work);
}
