/* SPDX-License-Identifier: MIT */
/*
 * smtp_session.h - the SMTP server side of one connection, on a reactor.
 *
 * A session is created for each accepted connection and lives on the
 * reactor (thread) that accepted it.  It reads through io_recv_start, keeps
 * one send in flight, parks in WAIT_* states while the password worker or
 * the spool works, and frees itself only when nothing is in flight.
 *
 * struct smtp_reactor is what the server (core/server.c) gives each session:
 * the reactor's loop, spool shard and the shared read-only configuration,
 * plus the process-wide limits (core/limits.h) that every reactor counts
 * against: connections in total and per client prefix, body memory.
 */
#ifndef ORTOO_SMTP_SESSION_H
#define ORTOO_SMTP_SESSION_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/config.h"

struct io_loop;
struct spool_shard;
struct res_ctx;
struct tls_server;
struct auth;
struct users;
struct dkim_keys;
struct checks_reactor;
struct limits;

/* A connection refused by the penalty box and held open, unread, until
 * `until` (io_loop_now() ns): see box_refuse in smtp_session.c. */
struct smtp_held {
    int fd;                         /* the socket (owned) */
    uint64_t until;                 /* when it is reset */
};

#define SMTP_HELD_MAX 128           /* refused connections held per reactor */

/* Per-reactor context shared by its sessions (owned by core/server.c). */
struct smtp_reactor {
    unsigned index;                 /* reactor number, 0..n-1 */
    struct io_loop *loop;           /* this reactor's loop */
    struct spool_shard *spool;      /* this reactor's spool shard */
    struct res_ctx *res;            /* this reactor's resolver (resolver/resolver.h) */
    const struct config *cfg;       /* immutable configuration */
    const struct users *users;      /* local domains and users */
    struct tls_server *tls;         /* server certificates (NULL: no TLS) */
    struct auth *auth;              /* password verification (shared) */
    struct dkim_keys *dkim;         /* DKIM signing keys (a reference; swapped at reload) */
    struct checks_reactor *checks;  /* inbound checks' per-reactor part (core/checks.h) */
    struct limits *limits;          /* connection counts, body budget (shared) */
    size_t nsessions;               /* live sessions on this reactor */
    uint64_t session_seq;           /* for session ids */
    uint64_t accepted;              /* messages queued (stats) */
    struct smtp_session *sessions;  /* live sessions (intrusive list) */
    bool stopping;                  /* shutting down: close sessions when idle */
    uint64_t limit_log_ns;          /* last "event=limit" line (one a second) */
    unsigned limit_unlogged;        /* limit events since that line, not logged */
    uint64_t box_log_ns;            /* last "event=penalty-box" line (one a second) */
    unsigned box_unlogged;          /* prefixes boxed since that line, not logged */
    struct smtp_held held[SMTP_HELD_MAX]; /* FIFO ring, oldest at held_head */
    unsigned held_head, held_count; /* ring position and fill */
    struct io_op held_timer;        /* resets the oldest when it is due */
    bool held_timer_ready;          /* held_timer was initialised */
    /* Called (on the reactor) when stopping and the last session is gone. */
    void (*on_drained)(struct smtp_reactor *r);
};

/*
 * Start a session on an accepted socket (takes fd; non-blocking).  role is
 * the listener's role; peer is the client's address.  On failure the fd is
 * closed.  Past max_connections in total or connections_per_address from
 * the client's prefix, the client gets 421 4.7.0 (plaintext roles) and the
 * connection is closed.  Never blocks.
 */
void smtp_session_start(struct smtp_reactor *r, int fd, enum listen_role role,
                        const struct sockaddr_storage *peer, socklen_t peer_len);

/*
 * Begin shutdown: every session is told 421 and closed as soon as it is not
 * waiting on the spool or the password worker (a message being synced still
 * gets its 250 first).  r->on_drained runs when no session is left (maybe at
 * once, never inside this call... except when there are no sessions at all,
 * in which case it runs before return).
 */
void smtp_session_close_all(struct smtp_reactor *r);

#endif
