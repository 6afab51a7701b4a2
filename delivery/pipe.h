/* SPDX-License-Identifier: MIT */
/*
 * pipe.h - local delivery to a command: the "|command" targets of aliases
 * ([local] allow_pipe = on), run off the reactor.
 *
 * As Postfix's local(8) and pipe(8) do, the command runs as
 * `/bin/sh -c COMMAND`, with the daemon's own user and groups (already
 * dropped by core/privdrop.h; with `user = root` it is root), in `/`, in
 * its own process group, with default signal dispositions and an empty
 * signal mask, no file descriptors but 0, 1 and 2, and an environment of
 * its own (nothing inherited from the daemon):
 *
 *   PATH=/usr/bin:/bin  SHELL=/bin/sh  HOME=/  LOGNAME/USER unset
 *   SENDER              the envelope sender ("" for the null sender)
 *   RECIPIENT           the address that led to the command (the alias)
 *   ORIGINAL_RECIPIENT  the recipient as the client gave it in RCPT TO
 *   LOCAL, DOMAIN       RECIPIENT's local part and domain
 *   EXTENSION           the tag of a plus-address (bugs+tag@ -> "tag"),
 *                       set only when there is one
 *
 * Standard input: "Return-Path: <sender>", "Delivered-To: <recipient>",
 * the header fields ortoo added and the message as received, dot-unstuffed
 * (maildir_stream(): the bytes a Maildir delivery writes) with every CRLF
 * turned into LF, as Postfix's local(8) gives mail to commands: programs
 * such as procmail, formail or a ticket tracker expect Unix text.  Standard
 * output and standard error share one pipe; the first PIPE_OUTPUT_MAX bytes
 * are kept for the bounce, the rest is read and dropped so that the command
 * never blocks on a full pipe.  A command that stops reading early (or
 * never reads) is not an error: its exit status decides.
 *
 * The outcome (pipe_verdict): exit 0 is delivered; exit 75 (EX_TEMPFAIL),
 * death by a signal, a timeout, or a command that could not be started is
 * temporary (the scheduler tries again); any other exit status is
 * permanent (5.3.0, a bounce with the command's first output lines).
 * After timeout seconds ([local] pipe_timeout) the process group gets
 * SIGKILL.
 *
 * Threads: pipe_run() blocks (fork/exec, pipes, waitpid) and is what the
 * pool's workers run; results are posted back to the caller's loop
 * (io_loop_post), never run inside pipe_deliver().  The pool is separate
 * from the Maildir writers so that a slow command cannot hold up
 * mailboxes; its size bounds how many commands run at once.
 */
#ifndef ORTOO_PIPE_H
#define ORTOO_PIPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "delivery/maildir.h"
#include "io/workq.h"

struct io_loop;
struct pipe_pool;
struct pipe_req;

#define PIPE_OUTPUT_MAX 1024          /* output bytes kept for the bounce */
#define PIPE_EX_TEMPFAIL 75           /* sysexits.h EX_TEMPFAIL */

/* What to run.  Every pointer is borrowed until the request's callback has
 * run (pipe_deliver) or the call returns (pipe_run). */
struct pipe_job {
    const char *command;              /* given to /bin/sh -c; not empty */
    const char *sender;               /* SENDER; "" for the null sender */
    const char *recipient;            /* RECIPIENT (also Delivered-To) */
    const char *original_recipient;   /* ORIGINAL_RECIPIENT; NULL: unset */
    const char *local, *domain;       /* LOCAL, DOMAIN; NULL: unset */
    const char *extension;            /* EXTENSION; NULL: unset */
    struct maildir_msg msg;           /* stdin: return_path, delivered_to,
                                         prefix and the message (root,
                                         domain, user unused) */
    unsigned timeout;                 /* seconds; 0: none */
};

/* How the command ended. */
struct pipe_result {
    int err;                          /* 0, or -errno: not started (spawn,
                                         pipes) or the message unreadable */
    bool timed_out;                   /* killed after timeout */
    bool exited;                      /* exited with exit_code */
    int exit_code;
    int signo;                        /* !exited && !timed_out: the signal */
    char output[PIPE_OUTPUT_MAX + 1]; /* first output bytes, NUL-terminated
                                         (a NUL in the output ends it early) */
    size_t output_len;
    uint64_t output_total;            /* all output bytes read */
};

enum pipe_verdict { PIPE_DELIVERED = 0, PIPE_TEMPORARY, PIPE_PERMANENT };

/*
 * Run one command and feed it the message.  Blocking (the workers run it;
 * tests call it directly); SIGPIPE is blocked in the calling thread while
 * it runs (a pending one it caused is taken back), so a command that exits
 * without reading costs nothing.  Always fills res; returns 0, or res->err
 * (-EINVAL for a job without command or addresses).
 */
int pipe_run(const struct pipe_job *job, struct pipe_result *res);

/* Delivered, temporary or permanent, as the file comment says. */
enum pipe_verdict pipe_verdict(const struct pipe_result *res);

/*
 * One line for logs and bounces, NUL-terminated in buf[cap]: "command
 * exited 1 (EX_...)", "command killed by signal 9", "command timed out
 * after 10s", "command not started: ...", followed by ": " and the
 * command's first output lines (control characters as spaces, at most
 * about 200 bytes) when there was output.
 */
void pipe_describe(const struct pipe_job *job, const struct pipe_result *res, char *buf,
                   size_t cap);

typedef void (*pipe_cb)(struct pipe_req *req);

/* A delivery request, embedded in its owner. */
struct pipe_req {
    pipe_cb cb;                       /* runs on loop's thread; result filled */
    void *owner;                      /* for the owner */
    struct pipe_job job;              /* filled by the owner; borrowed until cb */
    struct pipe_result result;        /* the outcome, when cb runs */
    /* private: */
    struct workq_item work;
};

/* Start nworkers threads (>= 1).  NULL when threads or memory run out. */
struct pipe_pool *pipe_pool_new(unsigned nworkers);

/* Stop the workers after the queued commands have run and their callbacks
 * are posted.  The loops they post to must run those callbacks. */
void pipe_pool_free(struct pipe_pool *p);

/*
 * Queue req (job filled in) for a worker; cb runs later on loop's thread.
 * Returns 0, or -EINVAL (missing fields) / -ESHUTDOWN (pool stopping), in
 * which case cb will not run.  Never blocks.
 */
int pipe_deliver(struct pipe_pool *p, struct io_loop *loop, struct pipe_req *req, pipe_cb cb);

#endif
