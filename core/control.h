/* SPDX-License-Identifier: MIT */
/*
 * control.h - the daemon's control socket and the main thread's service loop.
 *
 * The main thread of `ortoo serve` (core/server.c) owns a struct control.  It
 * serves UNIX stream sockets in the spool: <spool>/control (mode 0660, for
 * the administrator: `ortoo reload`, and later queue, stats and domain
 * commands) and <spool>/pickup (mode 0666, only the commands registered as
 * CONTROL_PUBLIC: the sendmail client's `pickup`).  Nothing here runs on a
 * reactor: commands run on the main thread, between signals.
 *
 * Protocol (one request per connection; docs/control.md):
 *
 *   client:  COMMAND [ARG ...] LF        one line, words separated by spaces,
 *                                        at most CONTROL_LINE_MAX bytes with
 *                                        the LF, no control characters
 *   server:  "* " TEXT LF                zero or more data lines
 *            "OK" [" " TEXT] LF          then exactly one status line:
 *         or "ERR " TEXT LF              success or the reason it failed
 *
 * then the server closes.  A client gets CONTROL_TIMEOUT_MS to send its line
 * and to read each part of the answer; up to CONTROL_MAX_CLIENTS are served
 * at once (one that connects and never sends holds one slot, not the loop).
 *
 * Commands: a module registers a name, a handler and a line of help with
 * control_register().  The handler runs on the main thread with the words
 * of the request; it answers with control_reply() lines and finishes with
 * control_done(), at once or later: a handler that needs a reactor posts
 * work to it (io_loop_post) and, when the reactor is done, comes back to the
 * main thread with control_post() and calls control_done() there.  Until
 * control_done() the request stays allocated even if the client went away
 * (the reply is then dropped).
 *
 * Other fds of the main thread (signals, timers, inotify, later the metrics
 * listener) join the same poll through control_watch(); server.c's loop
 * calls control_pollfds(), poll(2) and control_dispatch().
 *
 * Threads: everything here runs on the thread that calls control_dispatch(),
 * except control_post(), which any thread may call.
 */
#ifndef ORTOO_CONTROL_H
#define ORTOO_CONTROL_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define CONTROL_LINE_MAX 4096       /* request line, LF included */
#define CONTROL_MAX_ARGS 32         /* words in a request */
#define CONTROL_MAX_CLIENTS 64      /* connections served at once */
#define CONTROL_TIMEOUT_MS 10000    /* to send the request; to take each reply part */
#define CONTROL_OUT_MAX (8u << 20)  /* reply bytes kept for one client */
#define CONTROL_MAX_WATCH 16        /* control_watch() fds */
/* pollfd entries control_pollfds() may fill. */
#define CONTROL_MAX_POLLFDS (2 + 1 + CONTROL_MAX_WATCH + CONTROL_MAX_CLIENTS)

/* The file names in the spool. */
#define CONTROL_SOCKET_NAME "control"
#define CONTROL_PUBLIC_SOCKET_NAME "pickup"

/* control_register() flags. */
#define CONTROL_PUBLIC 0x1          /* also served on the public socket */

struct control;
struct control_req;

/*
 * A command handler.  argv[0] is the command name, argv[1..argc-1] its
 * words (borrowed until control_done).  Must call control_done(req, ...)
 * exactly once, now or later, on the main thread.
 */
typedef void (*control_cmd_fn)(struct control_req *req, int argc, char **argv, void *arg);

/* A function run on the main thread (control_post, control_watch). */
typedef void (*control_fn)(void *arg);
typedef void (*control_fd_fn)(int fd, short revents, void *arg);

/*
 * Work posted to the main thread; embed it in the object it concerns, so
 * that posting cannot fail.  Fields are private.
 */
struct control_task {
    control_fn fn;
    void *arg;
    struct control_task *next;
};

/* A new control (no sockets yet; "help" and "ping" are registered).  NULL
 * on ENOMEM or when the eventfd cannot be made. */
struct control *control_new(void);

/*
 * Close every socket (unlinking the socket files made by control_listen)
 * and free.  Requests still running are abandoned: call only after the
 * work they wait for is finished (server shutdown joins the reactors first).
 */
void control_free(struct control *c);

/*
 * Listen on a UNIX stream socket at path (at most 107 bytes).  If a server
 * already answers there, fails with -EADDRINUSE (another ortoo runs on this
 * spool); a stale socket file is replaced.  The file gets mode, and owner
 * uid:gid unless they are -1.  public: serve only CONTROL_PUBLIC commands on
 * it.  Blocking (start-up).  Returns 0 or -errno with a message in err.
 */
int control_listen(struct control *c, const char *path, mode_t mode, uid_t uid, gid_t gid,
                   bool public, char *err, size_t errlen);

/*
 * Add a command (name: lower-case letters, digits and '-', unique).  help
 * is one line ("reload certificates, users and limits"), borrowed for the
 * life of c.  Returns 0, -EEXIST, -EINVAL or -ENOMEM.
 */
int control_register(struct control *c, const char *name, unsigned flags, const char *help,
                     control_cmd_fn fn, void *arg);

/* A data line ("* text"); control characters in text become '?'.  After
 * control_done, or once the client is gone, lines are dropped. */
void control_reply(struct control_req *req, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Finish: "OK text" (ok) or "ERR text"; fmt may be NULL for a bare "OK".
 * The request is released (req must not be used after this call). */
void control_done(struct control_req *req, bool ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* True when the request came on the public socket. */
bool control_req_public(const struct control_req *req);

/* Credentials of the client (SO_PEERCRED at accept). */
uid_t control_req_uid(const struct control_req *req);

/*
 * Run fn(arg) on the main thread on its next turn.  Thread-safe and
 * allocation-free: t must stay valid until fn runs (embed it in arg).
 */
void control_post(struct control *c, struct control_task *t, control_fn fn, void *arg);

/* Run fn(fd, revents, arg) on the main thread when fd is ready for events.
 * Returns 0, or -ENOSPC past CONTROL_MAX_WATCH. */
int control_watch(struct control *c, int fd, short events, control_fd_fn fn, void *arg);
void control_unwatch(struct control *c, int fd);

/*
 * The main thread's loop: fill up to cap pollfds (cap >= CONTROL_MAX_POLLFDS
 * is always enough) and return how many; poll them with control_timeout()
 * as the timeout (or less); then control_dispatch() with the same array.
 * The entries refer to state captured by control_pollfds(): call dispatch
 * before the next fill.
 */
size_t control_pollfds(struct control *c, struct pollfd *pfd, size_t cap);
int control_timeout(const struct control *c);
void control_dispatch(struct control *c, const struct pollfd *pfd, size_t n);

/* Run the posted tasks now (what control_dispatch does first). */
void control_run_posted(struct control *c);

/* Wait up to timeout_ms for tasks to be posted and run them; for a caller
 * that waits for posted completions outside the loop (shutdown).  Returns
 * at the first batch run or at the timeout. */
void control_wait_posted(struct control *c, int timeout_ms);

/* ---- the client side (the ortoo CLI) ---- */

/* Called for each "* " data line of the answer (text without the marker). */
typedef void (*control_line_cb)(const char *text, void *arg);

/*
 * Send one request line (without LF) to the socket at path and read the
 * answer, calling on_line for each data line (may be NULL).  Blocks for at
 * most timeout_ms for each step.  Returns 0 for "OK" (its text in status),
 * 1 for "ERR" (the daemon's reason in status), or -errno when there was no
 * answer: -ENOENT / -ECONNREFUSED mean that no daemon is running there,
 * -EACCES that the caller may not use the socket, -ETIMEDOUT, -EPROTO for a
 * malformed answer (a message in status in every case).
 */
int control_call(const char *path, const char *request, int timeout_ms, control_line_cb on_line,
                 void *arg, char *status, size_t statuslen);

#endif
