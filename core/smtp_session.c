/* SPDX-License-Identifier: MIT */
/*
 * smtp_session.c - the SMTP server session (RFC 5321) on a completion loop.
 *
 * One struct smtp_session per accepted connection.  Bytes arrive through a
 * multishot recv (io_recv_start); under TLS they go through the memory-BIO
 * layer of io/tls.c first.  Commands are split by the pure parsers of
 * core/smtp_parse.c and go through a table of check-then-proceed handlers.
 * Replies are collected in a plaintext buffer and flushed once per batch of
 * input (RFC 2920 pipelining: replies are sent when the input is drained or
 * the session has to wait), so a pipelined transaction costs one send.
 *
 * Waiting states: WAIT_AUTH (password worker, core/auth.c), WAIT_CHECKS
 * (inbound SPF/DKIM/DMARC results at the final dot, core/checks.c) and
 * WAIT_SPOOL (group commit, spool/spool.c).  While parked, the session keeps what the
 * client pipelined in its input buffer and resumes parsing when the result
 * comes back.  The 250 after DATA is only written from the spool's commit
 * callback, i.e. after the batch holding the message was fdatasync'ed: that
 * is the spool invariant.
 *
 * Memory: the input, output and message buffers are allocated on first use
 * and released when the session idles, so an idle plaintext connection
 * costs little more than this struct.
 *
 * Limits (issue 8; [limits] in docs/config.md): unparsed input is bounded
 * (SESSION_IN_MAX) and so is unsent output (max_pending_output: parsing and
 * reading stop until the client reads); message bytes are charged to the
 * process-wide body budget (core/limits.c) and a session that does not fit
 * gets 452 4.3.1; every phase has a deadline that a trickle of bytes cannot
 * stretch (see "deadlines" below), and the connection a total one; commands
 * and junk commands are counted.  Connections are counted per client prefix
 * and in total across reactors at the start.
 *
 * Policy (core/policy.h): who may relay, what is a submission (DKIM), whose
 * sender is checked, sending rates, and the penalty box are decided there;
 * this file asks at accept (a boxed prefix is refused before a session
 * exists), at AUTH, MAIL and RCPT, at the end of a transaction, and when it
 * closes a client for abuse (session_abuse).
 *
 * Lifetime: smtp_close() sets CLOSING and cancels the recv and the timer;
 * entering CLOSING gives up a password check in flight (auth_cancel: the
 * check itself goes on without us); the struct is freed only when no op or
 * commit is in flight (session_maybe_free, called from every completion).
 */
#include "core/smtp_session.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "core/auth.h"
#include "core/checks.h"
#include "core/limits.h"
#include "core/policy.h"
#include "core/recipients.h"
#include "io/maillog.h"
#include "io/metrics.h"
#include "core/smtp_parse.h"
#include "core/users.h"
#include "dkim/sign.h"
#include "io/log.h"
#include "io/loop.h"
#include "io/tls.h"
#include "spool/spool.h"

#define SESSION_IN_MAX (256 * 1024)   /* pause reading past this much unparsed input */
#define SESSION_TLS_CHUNK 16384       /* plaintext read out of TLS per call */
#define SESSION_LINGER_MS 5000        /* how long a last reply may take to drain */
#define SESSION_BODY_MIN (64 * 1024)  /* free body budget DATA/BDAT needs to start */
#define NS_PER_S 1000000000ull

enum smtp_state {
    ST_CMD = 0,        /* waiting for a command line */
    ST_TLS_HANDSHAKE,  /* TLS handshake in progress (STARTTLS or implicit) */
    ST_AUTH_RESP,      /* waiting for a SASL response line (334 sent) */
    ST_DATA,           /* receiving DATA bytes until CRLF.CRLF */
    ST_BDAT,           /* receiving a BDAT chunk's bytes */
    ST_WAIT_AUTH,      /* password verification in flight */
    ST_WAIT_SPOOL,     /* message handed to the spool, waiting for the sync */
    ST_CLOSING,        /* closing: no more input is processed */
    ST_WAIT_CHECKS,    /* final dot seen, inbound check results pending */
};

static const char *const state_names[] = {
    "CMD", "TLS_HANDSHAKE", "AUTH_RESP", "DATA", "BDAT", "WAIT_AUTH", "WAIT_SPOOL", "CLOSING",
    "WAIT_CHECKS",
};

enum sasl_step { SASL_NONE = 0, SASL_PLAIN, SASL_LOGIN_USER, SASL_LOGIN_PASS };

/*
 * A growable byte buffer with a cheap consume from the front.  Invariants:
 * base is the allocation (NULL iff nothing is allocated); data points into
 * it, at base + (bytes consumed since the last compaction); len <= cap, and
 * cap counts from data to the end of the allocation.
 */
struct buf {
    char *data;                   /* first valid byte */
    size_t len;                   /* valid bytes */
    size_t cap;                   /* bytes from data to the end of the allocation */
    char *base;                   /* the allocation */
};

/*
 * One SMTP connection.  Invariants:
 *  - at most one recv (recv_op) and one send (send_op) in flight;
 *  - `sending` belongs to the kernel while send_op is busy;
 *  - state changes only through session_enter();
 *  - the struct is freed only when closing and nothing is in flight.
 */
struct smtp_session {
    struct smtp_reactor *r;       /* the reactor this session lives on */
    struct smtp_session *prev, *next; /* r->sessions list */
    int fd;                       /* the connection's socket */
    enum listen_role role;        /* smtp / submission / submissions */
    enum smtp_state state;        /* see session_enter() */
    char id[24];                  /* session id for logs */
    char client_addr[INET6_ADDRSTRLEN]; /* peer IP as text */
    int client_port;              /* peer port */

    struct io_op recv_op;         /* the multishot recv */
    struct io_op send_op;         /* the one send in flight */
    struct io_op timer_op;        /* idle/state timeout */
    struct spool_commit commit;   /* message being made durable */
    struct auth_req auth_req;     /* password verification in flight */
    bool commit_busy;             /* commit submitted, callback not yet run */
    bool auth_busy;               /* auth request out, callback not yet run */
    bool recv_paused;             /* recv cancelled for back pressure */
    bool peer_eof;                /* peer closed its side */

    struct buf in;                /* plaintext input not yet parsed */
    struct buf pend;              /* plaintext replies not yet flushed */
    struct buf out;               /* wire bytes waiting for the send slot */
    struct buf sending;           /* wire bytes in flight (kernel's) */
    bool close_after_send;        /* close once out and sending are empty */

    struct tls_conn *tls;         /* TLS layer, NULL in plaintext */
    bool tls_active;              /* handshake completed */

    bool skip_line;               /* discarding the rest of an overlong line */
    bool greet_pending;           /* port 25: 220 held back ([smtp] greeting_delay) */
    uint64_t greet_at;            /* io_loop_now() when the held-back 220 is due */
    unsigned errors;              /* bad commands so far */

    /* Greeting / identity. */
    char *helo;                   /* EHLO/HELO argument (owned) */
    bool esmtp;                   /* EHLO (not HELO) */
    bool authed;                  /* AUTH succeeded */
    char auth_user[SMTP_MAX_ADDR + 1];
    enum sasl_step sasl;          /* SASL exchange in progress */
    char sasl_user[SMTP_MAX_ADDR + 1];

    /* Transaction. */
    bool has_mail;                /* MAIL accepted */
    char *sender;                 /* reverse-path (owned), "" for <> */
    char **rcpts;                 /* forward-paths (owned) */
    size_t nrcpts, rcpts_cap;
    uint8_t *rcpt_notify;         /* per rcpt SPOOL_NOTIFY_* (rcpts_cap entries) */
    char **rcpt_orcpt;            /* per rcpt ORCPT= as given or NULL (owned) */
    uint8_t dsn_ret;              /* MAIL RET= (enum spool_dsn_ret) */
    char *dsn_envid;              /* MAIL ENVID= as given, or NULL (owned) */
    uint32_t msg_flags;           /* SPOOL_F_* */
    struct buf msg;               /* the message in wire form */
    struct smtp_data_scan scan;   /* DATA terminator / BDAT stuffing state */
    bool too_big;                 /* message exceeded max_message_size */
    uint64_t bdat_left;           /* bytes left in the current BDAT chunk */
    bool bdat_last;               /* current chunk is the LAST one */
    bool bdat_failed;             /* a BDAT chunk was refused: discard until LAST */
    uint64_t chunk_size;          /* size of the current BDAT chunk */
    char *received;               /* Received: header for this message (owned) */
    struct dkim_signer *dkim;     /* signer of the message in progress (owned) or NULL */
    struct checks *checks;        /* inbound checks (port 25, no AUTH; owned) or NULL */
    unsigned nmsgs;               /* messages accepted in this session */

    /* Limits (issue 8).  Deadlines are io_loop_now() nanoseconds; the one
     * in force is min(deadline, session_end), except while we make the
     * client wait (WAIT_*). */
    struct limits_key client_key; /* the client's prefix (limits.h) */
    struct policy_client pol;     /* trusted network, sending rate (policy.h) */
    bool abuse_noted;             /* policy_abuse was called for this session */
    bool conn_counted;            /* counted in r->limits: release at free */
    bool out_blocked;             /* parsing stopped until the output drains */
    enum auth_path auth_path;     /* how the AUTH in flight is checked (auth.h) */
    bool body_nomem;              /* the body budget ran out: discard, then 452 */
    uint64_t deadline;            /* of the current phase (greeting, command, data) */
    uint64_t session_end;         /* timeout_session after the connect */
    uint64_t timer_due;           /* when timer_op fires; 0: not armed */
    uint64_t linger_end;          /* closing: last moment to drain the output */
    unsigned ncommands;           /* command lines (and SASL lines) so far */
    unsigned junk;                /* junk commands since the last accepted message */
    uint64_t declared_size;       /* MAIL ... SIZE=, 0 if none */
    uint64_t msg_total;           /* bytes of the message seen (kept or not) */
    uint64_t body_charged;        /* bytes charged to the body budget for msg */
};

static void session_process(struct smtp_session *s);
static void session_resume(struct smtp_session *s);
static void session_flush(struct smtp_session *s);
static void smtp_close(struct smtp_session *s, const char *why);
static void session_maybe_free(struct smtp_session *s);
static void on_recv(struct io_op *op, int res, const char *data, unsigned flags);
static void timer_arm(struct smtp_session *s);
static void deadline_set(struct smtp_session *s, unsigned secs);

/* ---- buffers ---- */

static int buf_reserve(struct buf *b, size_t extra)
{
    if (b->len + extra <= b->cap)
        return 0;
    if (b->data != b->base) {
        /* Reclaim the consumed front first: one move per growth, not one
         * per consumed line (a pipelining client's input stays linear). */
        size_t total = b->cap + (size_t)(b->data - b->base);
        memmove(b->base, b->data, b->len);
        b->data = b->base;
        b->cap = total;
        if (b->len + extra <= b->cap)
            return 0;
    }
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + extra)
        cap *= 2;
    char *p = realloc(b->base, cap);
    if (p == NULL)
        return -ENOMEM;
    b->base = b->data = p;
    b->cap = cap;
    return 0;
}

static int buf_append(struct buf *b, const void *data, size_t len)
{
    if (len == 0)
        return 0;
    if (buf_reserve(b, len) < 0)
        return -ENOMEM;
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

/* Drop n bytes from the front (O(1): the space is reclaimed by the next
 * buf_reserve that needs it). */
static void buf_consume(struct buf *b, size_t n)
{
    if (n >= b->len) {
        b->cap += (size_t)(b->data - b->base);
        b->data = b->base;
        b->len = 0;
        return;
    }
    b->data += n;
    b->cap -= n;
    b->len -= n;
}

static void buf_free(struct buf *b)
{
    free(b->base);
    b->data = b->base = NULL;
    b->len = b->cap = 0;
}

/* Give memory back when a buffer is empty and larger than a transaction's
 * replies need: small buffers are kept between messages (no malloc/free per
 * reply); they go with the session. */
#define BUF_KEEP 4096
static void buf_shrink(struct buf *b)
{
    if (b->len == 0 && b->cap > BUF_KEEP)
        buf_free(b);
}

/* ---- the message buffer and the body budget ---- */

/*
 * The message bytes a session holds are charged to the process-wide body
 * budget (limits_body_charge) before they are allocated, and uncharged when
 * the buffer is freed (at the end of the transaction, after the spool's
 * callback: the spool borrows the bytes until then).  So the memory all
 * sessions hold for message bodies never exceeds [limits] body_memory.
 * A SIZE= declared at MAIL is charged whole when DATA/BDAT starts; past it
 * the buffer grows by a quarter at a time (mremap makes that cheap).
 */

/* Charge the budget so that body_charged covers want bytes. */
static bool body_charge_to(struct smtp_session *s, uint64_t want)
{
    if (want <= s->body_charged)
        return true;
    if (!limits_body_charge(s->r->limits, want - s->body_charged))
        return false;
    s->body_charged = want;
    return true;
}

/* Make room for extra more bytes in s->msg.  Returns 0, -ENOBUFS (the
 * budget is spent) or -ENOMEM. */
static int msg_grow(struct smtp_session *s, size_t extra)
{
    struct buf *b = &s->msg;
    if (b->len + extra <= b->cap)
        return 0;
    size_t need = b->len + extra, cap;
    if (s->declared_size > 0 && need <= s->declared_size + 4096)
        cap = s->declared_size + 4096;
    else if (b->cap < (1u << 20))
        cap = b->cap ? b->cap * 2 : 4096;
    else
        cap = b->cap + b->cap / 4;
    if (cap < need)
        cap = need;
    cap = (cap + 4095) & ~(size_t)4095;
    if (!body_charge_to(s, cap))
        return -ENOBUFS;
    assert(b->data == b->base); /* the message buffer is never consumed */
    char *p = realloc(b->base, cap);
    if (p == NULL)
        return -ENOMEM; /* the charge is returned with the buffer */
    b->base = b->data = p;
    b->cap = cap;
    return 0;
}

/* Free the message buffer and give its budget back. */
static void msg_free(struct smtp_session *s)
{
    buf_free(&s->msg);
    if (s->body_charged > 0)
        limits_body_uncharge(s->r->limits, s->body_charged);
    s->body_charged = 0;
}

/* The body budget ran out (or malloc failed) mid-message: drop what we
 * hold and discard the rest; the final dot gets 452 4.3.1. */
static void msg_nomem(struct smtp_session *s)
{
    if (!s->body_nomem)
        log_info("session=%s event=body-memory-exhausted client=%s held=%llu", s->id,
                 s->client_addr, (unsigned long long)s->msg.len);
    s->body_nomem = true;
    msg_free(s);
}

/*
 * A message starts (DATA, first BDAT): can the budget take it?  The
 * declared SIZE is charged now; without one, the budget must have a little
 * room left.  False: answer 452 4.3.1 (RFC 1870 6.1, RFC 3463 4.3.1).
 */
static bool body_start(struct smtp_session *s)
{
    s->msg.len = 0;
    s->msg_total = 0;
    s->body_nomem = false;
    if (s->declared_size > 0)
        return body_charge_to(s, s->declared_size + 4096);
    return limits_body_free(s->r->limits) >= SESSION_BODY_MIN;
}

/* ---- state and replies ---- */

/* The only place the state changes, traced at debug level. */
static void session_enter(struct smtp_session *s, enum smtp_state st)
{
    if (s->state == st)
        return;
    log_debug("session=%s state=%s->%s", s->id, state_names[s->state], state_names[st]);
    s->state = st;
    if (st == ST_CLOSING) {
        /* A closing session gives up its password check (the check goes on
         * and still counts for the throttle: core/auth.c). */
        if (s->auth_busy) {
            auth_cancel(s->r->auth, &s->auth_req);
            s->auth_busy = false;
        }
        /* Nothing more is read: a flooder's bytes would only cost us CPU.
         * SHUT_RD ends a multishot recv at once (the kernel stops copying
         * into our buffers now, not when the cancel is processed); what
         * still arrives is dropped with the socket.  A last reply gets
         * SESSION_LINGER_MS to drain (on_timer). */
        if (s->fd >= 0)
            shutdown(s->fd, SHUT_RD);
        io_cancel(s->r->loop, &s->recv_op);
        s->linger_end = io_loop_now(s->r->loop) + SESSION_LINGER_MS * 1000000ull;
        timer_arm(s);
    } else if (st == ST_CMD) {
        deadline_set(s, s->r->cfg->timeout_command);
    }
}

/* Queue one reply line (text without CRLF). */
static void reply(struct smtp_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void reply(struct smtp_session *s, const char *fmt, ...)
{
    if (strchr(fmt, '%') == NULL) {
        /* Constant replies (most of a transaction's) skip vsnprintf. */
        if (buf_append(&s->pend, fmt, strlen(fmt)) < 0 || buf_append(&s->pend, "\r\n", 2) < 0)
            smtp_close(s, "out of memory");
        return;
    }
    char line[600];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof(line) - 3)
        n = sizeof(line) - 3;
    line[n++] = '\r';
    line[n++] = '\n';
    if (buf_append(&s->pend, line, (size_t)n) < 0)
        smtp_close(s, "out of memory");
}

/*
 * Limit events (refused connections, junk, throttled AUTH) are what an
 * attacker makes by the thousand a second: at most one line a second per
 * reactor, which says how many were not logged since the last one.
 * Returns true when this one may be logged; *skipped gets that count.
 */
static bool log_gate(struct smtp_reactor *r, uint64_t *last, unsigned *unlogged,
                     unsigned *skipped)
{
    uint64_t now = io_loop_now(r->loop);
    if (*last != 0 && now - *last < NS_PER_S) {
        (*unlogged)++;
        return false;
    }
    *skipped = *unlogged;
    *last = now;
    *unlogged = 0;
    return true;
}

static bool limit_log_ok(struct smtp_reactor *r, unsigned *skipped)
{
    return log_gate(r, &r->limit_log_ns, &r->limit_unlogged, skipped);
}

/*
 * The session is being closed for abuse (what: the limit it hit): its
 * prefix goes into the penalty box (core/policy.h), once per session.  A
 * new box is logged, at most one line a second per reactor of its own (the
 * refusals and the limit that led to it must not crowd it out).
 */
static void session_abuse(struct smtp_session *s, const char *what)
{
    if (s->abuse_noted)
        return;
    s->abuse_noted = true;
    unsigned level, skipped;
    uint64_t box = policy_abuse(&s->pol, s->r->cfg, s->r->limits, &s->client_key,
                                io_loop_now(s->r->loop), &level);
    if (box > 0 && log_gate(s->r, &s->r->box_log_ns, &s->r->box_unlogged, &skipped)) {
        char prefix[64];
        log_info("session=%s event=penalty-box what=%s client=%s prefix=%s seconds=%llu "
                 "level=%u unlogged=%u",
                 s->id, what, s->client_addr,
                 limits_key_text(&s->client_key, prefix, sizeof(prefix)),
                 (unsigned long long)(box / NS_PER_S), level, skipped);
    }
}

/* A limit of [limits] is reached: 421 4.7.0 and close once it is sent. */
static void limit_close(struct smtp_session *s, const char *what, const char *text)
{
    unsigned skipped;
    if (limit_log_ok(s->r, &skipped))
        log_info("session=%s event=limit what=%s client=%s unlogged=%u", s->id, what,
                 s->client_addr, skipped);
    reply(s, "421 4.7.0 %s %s, closing connection", s->r->cfg->hostname, text);
    s->close_after_send = true;
    session_enter(s, ST_CLOSING);
    session_abuse(s, what);
}

/*
 * A command that moves no mail forward (NOOP, RSET, HELP, VRFY, a repeated
 * EHLO, an error, a refused recipient or AUTH): max_junk_commands of them
 * between accepted messages, as Postfix's smtpd_junk_command_limit.  Junk
 * commands call it before they act (the one past the limit gets only the
 * 421); refusals after their reply.  Returns true when the session closes.
 */
static bool note_junk(struct smtp_session *s)
{
    if (s->state != ST_CLOSING && ++s->junk > s->r->cfg->limits.max_junk)
        limit_close(s, "junk-commands", "Too many commands without mail");
    return s->state == ST_CLOSING;
}

/* A reply to a bad command: counts towards max_errors (RFC 5321 4.5.3.2 spirit). */
static void reply_error(struct smtp_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void reply_error(struct smtp_session *s, const char *fmt, ...)
{
    char line[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    reply(s, "%s", line);
    s->errors++;
    if (s->errors >= s->r->cfg->max_errors) {
        reply(s, "421 4.7.0 %s Too many errors, closing connection", s->r->cfg->hostname);
        log_info("session=%s event=too-many-errors client=%s", s->id, s->client_addr);
        s->close_after_send = true;
        session_enter(s, ST_CLOSING);
        session_abuse(s, "errors");
    }
    note_junk(s);
}

/* ---- output path ---- */

/* Reply bytes produced and not yet taken by the kernel.  Past
 * max_pending_output the session stops parsing and reading (a client that
 * pipelines commands and never reads the replies holds at most this much
 * output); on_send resumes it when half of it has drained. */
static size_t out_pending(const struct smtp_session *s)
{
    return s->pend.len + s->out.len + s->sending.len +
           (s->tls != NULL ? tls_conn_pending_out(s->tls) : 0);
}

static void on_send(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct smtp_session *s = op->owner;
    s->sending.len = 0;
    if (res < 0) {
        if (res != -ECANCELED)
            log_debug("session=%s event=send-error err=%d", s->id, res);
        s->out.len = 0;
        s->close_after_send = false;
        smtp_close(s, "send failed");
        session_maybe_free(s);
        return;
    }
    session_flush(s);
    if (s->out_blocked && s->state != ST_CLOSING &&
        out_pending(s) <= s->r->cfg->limits.max_pending_output / 2) {
        s->out_blocked = false;
        session_resume(s); /* parses what waited in s->in, reads again */
        return;
    }
    session_maybe_free(s);
}

/* Move pending replies (encrypted under TLS) to the wire and start a send. */
static void session_flush(struct smtp_session *s)
{
    if (s->pend.len > 0) {
        if (s->tls_active) {
            if (tls_conn_write(s->tls, s->pend.data, s->pend.len) < 0) {
                s->pend.len = 0;
                smtp_close(s, "tls write failed");
                return;
            }
        } else if (buf_append(&s->out, s->pend.data, s->pend.len) < 0) {
            smtp_close(s, "out of memory");
            return;
        }
        s->pend.len = 0;
    }
    if (s->tls != NULL) {
        size_t n = tls_conn_pending_out(s->tls);
        if (n > 0) {
            if (buf_reserve(&s->out, n) < 0) {
                smtp_close(s, "out of memory");
                return;
            }
            s->out.len += tls_conn_take_out(s->tls, s->out.data + s->out.len, n);
        }
    }
    if (io_op_busy(&s->send_op))
        return;
    if (s->out.len == 0) {
        buf_shrink(&s->sending);
        buf_shrink(&s->out);
        buf_shrink(&s->pend);
        if (s->close_after_send)
            smtp_close(s, NULL);
        return;
    }
    struct buf tmp = s->sending;
    s->sending = s->out;
    s->out = tmp;
    s->out.len = 0;
    int rc = io_send(s->r->loop, &s->send_op, s->fd, s->sending.data, s->sending.len, on_send);
    if (rc < 0) {
        s->sending.len = 0;
        smtp_close(s, "send submit failed");
    }
}

/* ---- closing ---- */

static void transaction_reset(struct smtp_session *s)
{
    policy_mail_end(&s->pol, s->r->limits, false, io_loop_now(s->r->loop));
    free(s->sender);
    s->sender = NULL;
    for (size_t i = 0; i < s->nrcpts; i++) {
        free(s->rcpts[i]);
        free(s->rcpt_orcpt[i]);
    }
    s->nrcpts = 0;
    free(s->dsn_envid);
    s->dsn_envid = NULL;
    s->dsn_ret = SPOOL_RET_NONE;
    s->has_mail = false;
    s->msg_flags = 0;
    msg_free(s);
    s->too_big = false;
    s->body_nomem = false;
    s->declared_size = 0;
    s->msg_total = 0;
    s->bdat_left = 0;
    s->bdat_last = false;
    s->bdat_failed = false;
    free(s->received);
    s->received = NULL;
    dkim_sign_free(s->dkim);
    s->dkim = NULL;
    checks_reset(s->checks);
}

static void session_free(struct smtp_session *s)
{
    transaction_reset(s);
    checks_free(s->checks); /* cancels lookups in flight */
    free(s->rcpts);
    free(s->rcpt_notify);
    free(s->rcpt_orcpt);
    free(s->helo);
    buf_free(&s->in);
    buf_free(&s->pend);
    buf_free(&s->out);
    buf_free(&s->sending);
    if (s->tls != NULL)
        tls_conn_free(s->tls);
    if (s->fd >= 0)
        close(s->fd);
    memset(&s->auth_req, 0, sizeof(s->auth_req)); /* no password copy lingers */
    struct smtp_reactor *r = s->r;
    if (s->conn_counted)
        limits_conn_release(r->limits, &s->client_key);
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        r->sessions = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    r->nsessions--;
    free(s);
    if (r->stopping && r->nsessions == 0 && r->on_drained != NULL)
        r->on_drained(r);
}

/* Free when closing and nothing is in flight (the owner frees, once). */
static void session_maybe_free(struct smtp_session *s)
{
    if (s->state != ST_CLOSING || s->close_after_send)
        return;
    if (io_op_busy(&s->recv_op) || io_op_busy(&s->send_op) || io_op_busy(&s->timer_op))
        return;
    if (s->commit_busy || s->auth_busy)
        return;
    log_debug("session=%s event=closed", s->id);
    session_free(s);
}

/*
 * Close the session.  With close_after_send set, waits for the queued
 * replies (e.g. a 421) to be sent first.  why: logged at debug, may be NULL.
 */
static void smtp_close(struct smtp_session *s, const char *why)
{
    if (why != NULL)
        log_debug("session=%s event=closing why=%s", s->id, log_q(why));
    session_enter(s, ST_CLOSING);
    if (s->close_after_send && (s->out.len > 0 || s->pend.len > 0 || io_op_busy(&s->send_op)))
        return;
    s->close_after_send = false;
    if (s->fd >= 0)
        shutdown(s->fd, SHUT_RDWR); /* makes in-flight recv/send finish */
    io_cancel(s->r->loop, &s->recv_op);
    io_cancel(s->r->loop, &s->send_op);
    io_cancel(s->r->loop, &s->timer_op);
}

/* Tell the client we are going away (RFC 5321 3.8) and close. */
static void session_shutdown(struct smtp_session *s)
{
    if (s->state == ST_CLOSING)
        return;
    if (s->tls == NULL || s->tls_active)
        reply(s, "421 4.3.2 %s Service shutting down", s->r->cfg->hostname);
    s->close_after_send = true;
    session_enter(s, ST_CLOSING);
    session_flush(s);
}

static void held_sweep(struct smtp_reactor *r, bool all);

void smtp_session_close_all(struct smtp_reactor *r)
{
    r->stopping = true;
    held_sweep(r, true);
    if (r->held_timer_ready)
        io_cancel(r->loop, &r->held_timer);
    if (r->sessions == NULL) {
        if (r->on_drained != NULL)
            r->on_drained(r);
        return;
    }
    struct smtp_session *s = r->sessions;
    while (s != NULL) {
        struct smtp_session *next = s->next;
        /* Sessions waiting on the spool are closed by its callback: a
         * synced message still gets its 250.  One waiting for a password
         * check gives it up (auth_cancel) and goes now. */
        if (s->state != ST_WAIT_SPOOL) {
            session_shutdown(s);
            session_maybe_free(s); /* may free s (and call on_drained) */
        }
        s = next;
    }
}

/* ---- deadlines ---- */

static void greeting(struct smtp_session *s);

/*
 * Time is bounded per phase and per session, and a trickle of bytes cannot
 * stretch either (issue 8): the greeting phase (connect to the first
 * command) has timeout_greeting, each command timeout_command from the
 * moment we wait for it (bytes of a half-sent line do not extend it), a TLS
 * handshake timeout_tls, and a DATA or BDAT block starts with timeout_data
 * and earns 1/min_data_rate seconds per byte received, never more than
 * timeout_data ahead (Postfix's smtpd_min_data_rate rule): a client slower
 * than min_data_rate runs out of time.  The whole connection ends at
 * timeout_session.  Waiting on our own work (WAIT_*) does not count.
 */

static void on_timer(struct io_op *op, int res, const char *data, unsigned flags);

/* The first command's time: timeout_greeting bounds it further. */
static unsigned greeting_timeout(const struct config *cfg)
{
    return cfg->limits.timeout_greeting < cfg->timeout_command ? cfg->limits.timeout_greeting
                                                               : cfg->timeout_command;
}

/* The deadline in force now (ns). */
static uint64_t deadline_due(const struct smtp_session *s)
{
    if (s->state == ST_CLOSING)
        return s->linger_end;
    if (s->greet_pending)
        return s->greet_at; /* the banner is due before any other deadline */
    return s->deadline < s->session_end ? s->deadline : s->session_end;
}

/* Arm the timer for the deadline in force, unless it is armed already (a
 * deadline that moved earlier cancels it: on_timer re-arms). */
static void timer_arm(struct smtp_session *s)
{
    uint64_t due = deadline_due(s);
    if (io_op_busy(&s->timer_op)) {
        if (due < s->timer_due)
            io_cancel(s->r->loop, &s->timer_op);
        return;
    }
    uint64_t now = io_loop_now(s->r->loop);
    uint64_t ms = due > now ? (due - now) / 1000000ull + 1 : 1;
    if (io_timer_start(s->r->loop, &s->timer_op, ms, on_timer) < 0) {
        smtp_close(s, "timer submit failed");
        return;
    }
    s->timer_due = due;
}

/* Start a phase that may last secs seconds from now. */
static void deadline_set(struct smtp_session *s, unsigned secs)
{
    s->deadline = io_loop_now(s->r->loop) + (uint64_t)secs * NS_PER_S;
    timer_arm(s);
}

/* n message bytes arrived in DATA/BDAT: earn n / min_data_rate seconds, at
 * most timeout_data ahead of now (min_data_rate 0: every byte restarts
 * timeout_data). */
static void deadline_data_progress(struct smtp_session *s, size_t n)
{
    const struct config *cfg = s->r->cfg;
    uint64_t now = io_loop_now(s->r->loop);
    uint64_t cap = now + (uint64_t)cfg->timeout_data * NS_PER_S;
    if (cfg->limits.min_data_rate == 0) {
        s->deadline = cap;
        return;
    }
    uint64_t earn = (uint64_t)n * NS_PER_S / cfg->limits.min_data_rate;
    s->deadline = s->deadline + earn < cap ? s->deadline + earn : cap;
}

static void on_timer(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct smtp_session *s = op->owner;
    s->timer_due = 0;
    if (s->state == ST_CLOSING) {
        if (s->close_after_send && res == 0 && io_loop_now(s->r->loop) >= s->linger_end) {
            /* The client does not read its last reply: stop waiting. */
            log_debug("session=%s event=linger-expired", s->id);
            s->close_after_send = false;
            smtp_close(s, "last reply not drained");
        } else if (s->close_after_send) {
            timer_arm(s);
        }
        session_maybe_free(s);
        return;
    }
    if (res < 0 && res != -ECANCELED) {
        session_maybe_free(s);
        return;
    }
    if (s->greet_pending) {
        if (io_loop_now(s->r->loop) >= s->greet_at) {
            /* The client waited for the banner, as RFC 5321 3.1 asks. */
            s->greet_pending = false;
            greeting(s);
            session_flush(s);
        }
        timer_arm(s);
        session_maybe_free(s);
        return;
    }
    uint64_t now = io_loop_now(s->r->loop);
    /* Waiting on our own work (spool, auth, checks: each bounded by its
     * own deadline) is not the client's slowness. */
    if (s->state == ST_WAIT_SPOOL || s->state == ST_WAIT_AUTH || s->state == ST_WAIT_CHECKS) {
        s->deadline = now + (uint64_t)s->r->cfg->timeout_command * NS_PER_S;
        if (s->session_end < s->deadline)
            s->session_end = s->deadline;
    }
    if (now >= deadline_due(s)) {
        bool whole = s->session_end <= s->deadline;
        log_info("session=%s event=timeout state=%s limit=%s client=%s", s->id,
                 state_names[s->state], whole ? "session" : "state", s->client_addr);
        if (s->tls == NULL || s->tls_active)
            reply(s, "421 4.4.2 %s Timeout, closing connection", s->r->cfg->hostname);
        s->close_after_send = true;
        session_enter(s, ST_CLOSING);
        /* A client that ran out of time while its replies piled up unread
         * was flooding us (a slow reader gets time to read: half the bound
         * drained resumes it). */
        if (s->out_blocked)
            session_abuse(s, "unread-replies");
        session_flush(s);
        session_maybe_free(s);
        return;
    }
    timer_arm(s);
}

/* ---- TLS ---- */

static int session_tls_begin(struct smtp_session *s)
{
    s->tls = tls_conn_new_server(s->r->tls);
    if (s->tls == NULL)
        return -ENOMEM;
    session_enter(s, ST_TLS_HANDSHAKE);
    deadline_set(s, s->r->cfg->timeout_tls); /* not stretched by a trickle */
    return 0;
}

static void greeting(struct smtp_session *s)
{
    reply(s, "220 %s ESMTP ortoo", s->r->cfg->hostname);
}

/* RFC 3207 4.2: after the handshake the server forgets what it knew. */
static void on_tls_established(struct smtp_session *s)
{
    s->tls_active = true;
    free(s->helo);
    s->helo = NULL;
    s->esmtp = false;
    s->sasl = SASL_NONE;
    transaction_reset(s);
    session_enter(s, ST_CMD);
    log_debug("session=%s event=tls version=%s cipher=%s resumed=%d sni=%s", s->id,
              tls_conn_version(s->tls), tls_conn_cipher(s->tls), tls_conn_resumed(s->tls),
              log_q(tls_conn_sni(s->tls)));
    if (s->role == ROLE_SUBMISSIONS) {
        greeting(s);
        deadline_set(s, greeting_timeout(s->r->cfg));
    }
}

/* Feed ciphertext and pull out plaintext into s->in. */
static void session_tls_input(struct smtp_session *s, const char *data, size_t len)
{
    if (tls_conn_feed(s->tls, data, len) < 0) {
        smtp_close(s, "tls feed failed");
        return;
    }
    if (s->state == ST_TLS_HANDSHAKE) {
        int rc = tls_conn_handshake(s->tls);
        if (rc == TLS_ERR) {
            log_info("session=%s event=tls-failed client=%s err=%s", s->id, s->client_addr,
                     log_q(tls_conn_error(s->tls)));
            session_flush(s); /* the alert goes out before the close */
            s->close_after_send = true;
            smtp_close(s, "tls handshake failed");
            return;
        }
        if (rc == TLS_AGAIN) {
            session_flush(s);
            return;
        }
        on_tls_established(s);
    }
    for (;;) {
        if (buf_reserve(&s->in, SESSION_TLS_CHUNK) < 0) {
            smtp_close(s, "out of memory");
            return;
        }
        ssize_t n = tls_conn_read(s->tls, s->in.data + s->in.len, SESSION_TLS_CHUNK);
        if (n > 0) {
            s->in.len += (size_t)n;
            continue;
        }
        if (n == TLS_AGAIN)
            break;
        if (n == TLS_CLOSED) {
            s->peer_eof = true;
            break;
        }
        log_debug("session=%s event=tls-read-error err=%s", s->id, log_q(tls_conn_error(s->tls)));
        smtp_close(s, "tls read failed");
        return;
    }
}

/* ---- receiving ---- */

static void recv_resume(struct smtp_session *s)
{
    if (!s->recv_paused || s->state == ST_CLOSING || io_op_busy(&s->recv_op))
        return;
    if (s->in.len > SESSION_IN_MAX || s->out_blocked)
        return;
    s->recv_paused = false;
    if (io_recv_start(s->r->loop, &s->recv_op, s->fd, on_recv) < 0)
        smtp_close(s, "recv submit failed");
}

static void message_end(struct smtp_session *s);
static bool data_feed(struct smtp_session *s, const char *data, size_t len, size_t *consumed);
static void msg_append(struct smtp_session *s, const char *data, size_t len);

/*
 * Plaintext bytes from the socket.  In DATA with nothing buffered (the common
 * case for a message body), the bytes are scanned where the loop put them
 * and copied once, into the message; everything else goes through s->in.
 */
static void session_plain_input(struct smtp_session *s, const char *data, size_t len)
{
    if (s->state == ST_DATA && s->in.len == 0) {
        size_t consumed = 0;
        bool done = data_feed(s, data, len, &consumed);
        data += consumed; /* what is left: the next commands, or a "." / ".\r" */
        len -= consumed;  /* that may start the terminator (kept in s->in) */
        if (done) {
            session_enter(s, ST_CMD);
            message_end(s);
        }
    }
    if (buf_append(&s->in, data, len) < 0)
        smtp_close(s, "out of memory");
}

/* Bytes before the banner (RFC 5321 3.1: the client waits for it): a bot
 * that does not speak SMTP.  554 instead of 220 (RFC 5321 3.1), then close;
 * what it sent is never parsed. */
static void early_talker(struct smtp_session *s)
{
    s->greet_pending = false;
    maillog_rejected(s->id, s->client_addr, "connect", NULL, "554 5.5.1", "early-talker");
    reply(s, "554 5.5.1 %s Protocol error: data sent before the greeting", s->r->cfg->hostname);
    s->close_after_send = true;
    session_enter(s, ST_CLOSING);
    session_abuse(s, "early-talker");
    session_flush(s);
}

static void on_recv(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct smtp_session *s = op->owner;
    log_debug("session=%s event=recv res=%d more=%d state=%s", s->id, res,
              (flags & IO_F_MORE) != 0, state_names[s->state]);
    if (s->state == ST_CLOSING) {
        session_maybe_free(s);
        return;
    }
    if (res <= 0) {
        if (res == -ECANCELED && s->recv_paused) {
            recv_resume(s);
            return;
        }
        /* EOF or error: the client is gone (or half-closed). */
        if (res < 0 && res != -ECONNRESET)
            log_debug("session=%s event=recv-error err=%d", s->id, res);
        s->peer_eof = true;
        if (s->state == ST_WAIT_SPOOL || (s->state == ST_WAIT_AUTH && res == 0) ||
            s->state == ST_WAIT_CHECKS || s->out_blocked) {
            /* Keep the session until the spool/auth/checks callback or the
             * output drains (session_resume); it closes then.  A reset
             * client is gone for good: it does not wait for argon2id. */
            return;
        }
        s->close_after_send = true; /* replies to what it sent still go out */
        smtp_close(s, "peer closed");
        session_maybe_free(s);
        return;
    }
    if (s->greet_pending) {
        early_talker(s);
        session_maybe_free(s);
        return;
    }
    if (s->tls != NULL)
        session_tls_input(s, data, (size_t)res);
    else
        session_plain_input(s, data, (size_t)res);
    if (s->state != ST_CLOSING)
        session_process(s);
    session_flush(s);
    if (s->peer_eof && s->state != ST_CLOSING && s->state != ST_WAIT_SPOOL &&
        s->state != ST_WAIT_AUTH && s->state != ST_WAIT_CHECKS && !s->out_blocked) {
        s->close_after_send = true; /* replies to what it sent still go out */
        smtp_close(s, "peer closed");
    }
    if (s->in.len == 0 && s->in.cap > SESSION_IN_MAX)
        buf_free(&s->in); /* a backlog is gone: give its memory back */
    if (s->state != ST_CLOSING && (s->in.len > SESSION_IN_MAX || s->out_blocked) &&
        !s->recv_paused) {
        /* Back pressure: stop reading until parsed, or until the client
         * has read its replies. */
        s->recv_paused = true;
        if (flags & IO_F_MORE)
            io_cancel(s->r->loop, &s->recv_op);
    }
    if (!(flags & IO_F_MORE) && s->state != ST_CLOSING) {
        if (s->recv_paused) {
            recv_resume(s);
        } else if (io_recv_start(s->r->loop, &s->recv_op, s->fd, on_recv) < 0) {
            /* The backend stopped the multishot (e.g. buffers ran out): re-armed above. */
            smtp_close(s, "recv submit failed");
        }
    }
    session_maybe_free(s);
}

/*
 * A WAIT_* state is over (its reply is queued): go on with what the client
 * pipelined meanwhile, unless it left or the server is stopping.
 */
static void session_resume(struct smtp_session *s)
{
    if (s->r->stopping) {
        session_shutdown(s);
        session_maybe_free(s);
        return;
    }
    session_process(s);
    session_flush(s);
    if (s->peer_eof && s->state != ST_CLOSING && s->state != ST_WAIT_SPOOL &&
        s->state != ST_WAIT_AUTH && s->state != ST_WAIT_CHECKS && !s->out_blocked) {
        s->close_after_send = true; /* replies to what it sent still go out */
        smtp_close(s, "peer closed");
    } else {
        recv_resume(s);
    }
    session_maybe_free(s);
}

/* ---- commands ---- */

static void cmd_ehlo(struct smtp_session *s, const struct smtp_cmd *c, bool esmtp)
{
    if (c->arg_len == 0 || c->arg_len > 255) {
        reply_error(s, "501 5.5.4 Syntax: %s hostname", esmtp ? "EHLO" : "HELO");
        return;
    }
    /* EHLO again: legal, and the reply flood's favourite. */
    if (s->helo != NULL && note_junk(s))
        return;
    free(s->helo);
    s->helo = strndup(c->arg, c->arg_len);
    /* Keep only the first word: some clients add junk after the name. */
    if (s->helo != NULL) {
        char *sp = strchr(s->helo, ' ');
        if (sp != NULL)
            *sp = '\0';
    }
    s->esmtp = esmtp;
    transaction_reset(s); /* RFC 5321 4.1.4: EHLO implies RSET */
    const struct config *cfg = s->r->cfg;
    if (!esmtp) {
        reply(s, "250 %s", cfg->hostname);
        return;
    }
    reply(s, "250-%s Hello %s [%s]", cfg->hostname, s->helo ? s->helo : "", s->client_addr);
    reply(s, "250-PIPELINING");
    reply(s, "250-SIZE %llu", (unsigned long long)cfg->max_message_size);
    if (!s->tls_active && s->r->tls != NULL)
        reply(s, "250-STARTTLS");
    if (s->tls_active && !s->authed)
        reply(s, "250-AUTH PLAIN LOGIN");
    reply(s, "250-8BITMIME");
    reply(s, "250-SMTPUTF8");
    reply(s, "250-CHUNKING");
    reply(s, "250 ENHANCEDSTATUSCODES");
}

static void cmd_starttls(struct smtp_session *s, const struct smtp_cmd *c)
{
    if (s->tls != NULL) {
        reply_error(s, "503 5.5.1 TLS already active");
        return;
    }
    if (s->r->tls == NULL) {
        reply_error(s, "502 5.5.1 STARTTLS not available");
        return;
    }
    if (c->arg_len != 0) {
        reply_error(s, "501 5.5.4 Syntax: STARTTLS");
        return;
    }
    reply(s, "220 2.0.0 Ready to start TLS");
    /* Anything the client pipelined after STARTTLS was sent in plaintext
     * and must not be executed under TLS (CVE-2011-0411 class). */
    s->in.len = 0;
    session_flush(s); /* the 220 goes out in plaintext */
    if (session_tls_begin(s) < 0)
        smtp_close(s, "out of memory");
}

static void sasl_fail(struct smtp_session *s, const char *msg)
{
    s->sasl = SASL_NONE;
    if (s->state == ST_AUTH_RESP)
        session_enter(s, ST_CMD);
    reply_error(s, "%s", msg);
}

/* The verification's result (core/auth.c counted it for the throttle).  A
 * session that closes meanwhile cancels the wait (session_enter), so this
 * runs only for a live one. */
static void on_auth_done(struct auth_req *req, bool ok)
{
    struct smtp_session *s = req->owner;
    s->auth_busy = false;
    metrics_inc(ok ? METRICS_AUTH_SUCCESS : METRICS_AUTH_FAILURE);
    if (!ok)
        log_info("session=%s event=auth-failed user=%s client=%s check=%s", s->id,
                 log_q(s->sasl_user), s->client_addr, auth_path_name(s->auth_path));
    if (s->state == ST_CLOSING) {
        session_maybe_free(s);
        return;
    }
    session_enter(s, ST_CMD);
    if (ok) {
        s->authed = true;
        snprintf(s->auth_user, sizeof(s->auth_user), "%s", req->user);
        log_info("session=%s event=auth-ok user=%s client=%s check=%s", s->id,
                 log_q(s->auth_user), s->client_addr, auth_path_name(s->auth_path));
        reply(s, "235 2.7.0 Authentication successful");
    } else {
        reply_error(s, "535 5.7.8 Authentication credentials invalid");
    }
    session_resume(s);
}

/*
 * Verify s->sasl_user with pass.  auth_verify admits the attempt against
 * the throttle first (it counts at once, so parallel attempts cannot
 * outrun max_failures; an identical attempt in flight is joined and counts
 * once); a throttled client or a full password queue gets 454 at once and
 * never waits for argon2id (RFC 4954 6).
 */
static void auth_start_verify(struct smtp_session *s, const char *pass, size_t pass_len)
{
    const char *user = s->sasl_user;
    s->sasl = SASL_NONE;
    if (s->state == ST_AUTH_RESP)
        session_enter(s, ST_CMD);
    s->auth_req.owner = s;
    int rc = auth_verify(s->r->auth, &s->auth_req, s->r->loop,
                         policy_auth_client(&s->pol, &s->client_key), user, strlen(user), pass,
                         pass_len, on_auth_done);
    if (rc == -EAGAIN) {
        metrics_inc(METRICS_AUTH_THROTTLED);
        unsigned skipped;
        if (limit_log_ok(s->r, &skipped))
            log_info("session=%s event=auth-throttled by=%s user=%s client=%s unlogged=%u",
                     s->id, s->auth_req.gate == AUTH_GATE_CLIENT ? "client" : "account",
                     log_q(user), s->client_addr, skipped);
        reply(s, "454 4.7.0 Too many authentication failures, try again later");
        note_junk(s);
        return;
    }
    if (rc >= 0) {
        s->auth_path = (enum auth_path)rc;
        s->auth_busy = true;
        session_enter(s, ST_WAIT_AUTH);
    } else {
        if (rc == -EBUSY)
            log_info("session=%s event=auth-busy client=%s", s->id, s->client_addr);
        reply(s, rc == -EBUSY ? "454 4.7.0 Authentication service busy, try again later"
                              : "454 4.7.0 Temporary authentication failure");
        note_junk(s);
    }
}

/* Handle a SASL PLAIN response (base64 of authzid\0authcid\0passwd). */
static void sasl_plain(struct smtp_session *s, const char *b64, size_t len)
{
    char pass[257];
    size_t pass_len = 0;
    if (auth_plain_decode(b64, len, s->sasl_user, sizeof(s->sasl_user), pass, sizeof(pass),
                          &pass_len) < 0) {
        sasl_fail(s, "501 5.5.2 Invalid PLAIN response");
        return;
    }
    auth_start_verify(s, pass, pass_len);
    memset(pass, 0, sizeof(pass));
}

static void cmd_auth(struct smtp_session *s, const struct smtp_cmd *c)
{
    if (!s->tls_active) {
        if (s->role == ROLE_SUBMISSION)
            reply_error(s, "530 5.7.0 Must issue a STARTTLS command first");
        else
            reply_error(s, "538 5.7.11 Encryption required for requested authentication mechanism");
        return;
    }
    if (!s->esmtp) {
        reply_error(s, "503 5.5.1 Send EHLO first");
        return;
    }
    if (s->authed) {
        reply_error(s, "503 5.5.1 Already authenticated");
        return;
    }
    if (s->has_mail) {
        reply_error(s, "503 5.5.1 AUTH not allowed during a mail transaction");
        return;
    }
    if (auth_client_throttled(s->r->auth, policy_auth_client(&s->pol, &s->client_key))) {
        metrics_inc(METRICS_AUTH_THROTTLED);
        reply(s, "454 4.7.0 Too many authentication failures, try again later");
        note_junk(s);
        return;
    }
    const char *arg = c->arg;
    size_t len = c->arg_len;
    size_t mlen = 0;
    while (mlen < len && arg[mlen] != ' ')
        mlen++;
    const char *init = mlen < len ? arg + mlen + 1 : NULL;
    size_t init_len = init ? len - mlen - 1 : 0;
    if (mlen == 5 && strncasecmp(arg, "PLAIN", 5) == 0) {
        if (init != NULL && !(init_len == 1 && init[0] == '=')) {
            sasl_plain(s, init, init_len);
            return;
        }
        s->sasl = SASL_PLAIN;
        session_enter(s, ST_AUTH_RESP);
        reply(s, "334 ");
        return;
    }
    if (mlen == 5 && strncasecmp(arg, "LOGIN", 5) == 0) {
        if (init != NULL) {
            long n = auth_b64_decode(init, init_len, s->sasl_user, sizeof(s->sasl_user) - 1);
            if (n <= 0 || memchr(s->sasl_user, '\0', (size_t)n) != NULL) {
                sasl_fail(s, "501 5.5.2 Invalid LOGIN response");
                return;
            }
            s->sasl_user[n] = '\0';
            s->sasl = SASL_LOGIN_PASS;
            session_enter(s, ST_AUTH_RESP);
            reply(s, "334 UGFzc3dvcmQ6"); /* "Password:" */
            return;
        }
        s->sasl = SASL_LOGIN_USER;
        session_enter(s, ST_AUTH_RESP);
        reply(s, "334 VXNlcm5hbWU6"); /* "Username:" */
        return;
    }
    reply_error(s, "504 5.5.4 Unrecognized authentication type");
}

/* A line received in ST_AUTH_RESP (RFC 4954 4). */
static void sasl_response(struct smtp_session *s, const char *line, size_t len)
{
    if (len == 1 && line[0] == '*') {
        sasl_fail(s, "501 5.0.0 Authentication cancelled");
        return;
    }
    switch (s->sasl) {
    case SASL_PLAIN:
        sasl_plain(s, line, len);
        return;
    case SASL_LOGIN_USER: {
        long n = auth_b64_decode(line, len, s->sasl_user, sizeof(s->sasl_user) - 1);
        if (n <= 0 || memchr(s->sasl_user, '\0', (size_t)n) != NULL) {
            sasl_fail(s, "501 5.5.2 Invalid LOGIN response");
            return;
        }
        s->sasl_user[n] = '\0';
        s->sasl = SASL_LOGIN_PASS;
        reply(s, "334 UGFzc3dvcmQ6");
        return;
    }
    case SASL_LOGIN_PASS: {
        char pass[257];
        long n = auth_b64_decode(line, len, pass, sizeof(pass) - 1);
        if (n < 0 || memchr(pass, '\0', (size_t)n) != NULL) {
            sasl_fail(s, "501 5.5.2 Invalid LOGIN response");
            return;
        }
        pass[n] = '\0';
        auth_start_verify(s, pass, (size_t)n);
        memset(pass, 0, sizeof(pass));
        return;
    }
    default:
        sasl_fail(s, "501 5.5.2 Unexpected response");
    }
}

/*
 * Answer a failed MAIL (is_mail) or RCPT argument parse: unknown parameter
 * 555 5.5.4 (RFC 5321 4.1.1.11), bad address 501 5.1.7 / 5.1.3 (RFC 3463),
 * other syntax 501 5.5.4.  Returns true when rc was an error (answered).
 */
static bool reply_parse_error(struct smtp_session *s, int rc, bool is_mail)
{
    const char *verb = is_mail ? "MAIL" : "RCPT";
    switch (rc) {
    case SMTP_P_OK:
        return false;
    case SMTP_P_EPARAM:
        reply_error(s, "555 5.5.4 Unsupported %s parameter", verb);
        break;
    case SMTP_P_EADDR:
        reply_error(s, is_mail ? "501 5.1.7 Bad sender address syntax"
                               : "501 5.1.3 Bad recipient address syntax");
        break;
    default:
        reply_error(s, "501 5.5.4 Syntax: %s %s:<address> [parameters]", verb,
                    is_mail ? "FROM" : "TO");
        break;
    }
    return true;
}

/*
 * Mail from outside (port 25, neither AUTH nor a trusted network: not a
 * submission, core/policy.h): the inbound checks (core/checks.h) start with
 * the transaction, in parallel with it.  Without memory for them the
 * message goes unchecked (and without the header).
 */
static void checks_begin(struct smtp_session *s)
{
    if (s->role != ROLE_SMTP || policy_is_submission(&s->pol, s->authed) ||
        !s->r->cfg->checks.enabled || s->r->checks == NULL)
        return;
    if (s->checks == NULL && (s->checks = checks_new(s->r->checks, s->id, s->client_addr)) == NULL)
        return;
    checks_mail(s->checks, s->r->cfg, s->helo != NULL ? s->helo : "", s->sender);
}

static void cmd_mail(struct smtp_session *s, const struct smtp_cmd *c)
{
    if (s->helo == NULL) {
        reply_error(s, "503 5.5.1 Send EHLO/HELO first");
        return;
    }
    if (s->has_mail) {
        reply_error(s, "503 5.5.1 Nested MAIL command");
        return;
    }
    /* RFC 6409 4.3 / RFC 4954: submission roles need TLS and AUTH first,
     * unless the client is on a trusted network (core/policy.h). */
    if (policy_needs_tls(&s->pol, s->role, s->tls_active)) {
        reply_error(s, "530 5.7.0 Must issue a STARTTLS command first");
        return;
    }
    if (policy_needs_auth(&s->pol, s->role, s->authed)) {
        reply_error(s, "530 5.7.0 Authentication required");
        return;
    }
    struct smtp_mail_args m;
    if (reply_parse_error(s, smtp_mail_parse(c->arg, c->arg_len, &m), true))
        return;
    if (m.body == SMTP_BODY_BINARYMIME) {
        reply_error(s, "555 5.5.4 BODY=BINARYMIME not supported");
        return;
    }
    if (m.smtputf8 && !s->esmtp) {
        reply_error(s, "555 5.5.4 SMTPUTF8 requires EHLO");
        return;
    }
    const struct config *cfg = s->r->cfg;
    if (m.has_size && m.size > cfg->max_message_size) {
        reply_error(s, "552 5.3.4 Message size exceeds fixed maximum message size (%llu)",
                    (unsigned long long)cfg->max_message_size);
        return;
    }
    switch (policy_mail(&s->pol, cfg, s->r->limits, s->r->users, s->authed ? s->auth_user : NULL,
                        &s->client_key, m.path, m.path_len, m.addr.is_null,
                        io_loop_now(s->r->loop))) {
    case POLICY_MAIL_OK:
        break;
    case POLICY_MAIL_NOT_OWNER:
        reply_error(s, "553 5.7.1 Sender address not owned by user %s", s->auth_user);
        return;
    case POLICY_MAIL_RATE: {
        unsigned skipped;
        if (limit_log_ok(s->r, &skipped))
            log_info("session=%s event=limit what=messages-per-hour user=%s client=%s "
                     "unlogged=%u",
                     s->id, s->authed ? log_q(s->auth_user) : "-", s->client_addr, skipped);
        reply(s, "452 4.7.1 Too many messages sent, try again later");
        note_junk(s);
        return;
    }
    }
    s->sender = strndup(m.path, m.path_len);
    if (s->sender == NULL) {
        policy_mail_end(&s->pol, s->r->limits, false, io_loop_now(s->r->loop));
        reply(s, "452 4.3.0 Out of memory");
        return;
    }
    /* RFC 3461 4.3, 4.4: kept for the DSNs of this message. */
    if (m.envid_len && (s->dsn_envid = strndup(m.envid, m.envid_len)) == NULL) {
        free(s->sender);
        s->sender = NULL;
        policy_mail_end(&s->pol, s->r->limits, false, io_loop_now(s->r->loop));
        reply(s, "452 4.3.0 Out of memory");
        return;
    }
    s->dsn_ret = m.ret_len == 0 ? SPOOL_RET_NONE
                 : (m.ret[0] == 'F' || m.ret[0] == 'f') ? SPOOL_RET_FULL : SPOOL_RET_HDRS;
    s->has_mail = true;
    s->msg_flags = 0;
    s->declared_size = m.has_size ? m.size : 0;
    if (m.body == SMTP_BODY_8BITMIME)
        s->msg_flags |= SPOOL_F_8BITMIME;
    if (m.smtputf8)
        s->msg_flags |= SPOOL_F_SMTPUTF8;
    checks_begin(s);
    reply(s, "250 2.1.0 Ok");
}

static void cmd_rcpt(struct smtp_session *s, const struct smtp_cmd *c)
{
    if (!s->has_mail) {
        reply_error(s, "503 5.5.1 Need MAIL before RCPT");
        return;
    }
    const struct config *cfg = s->r->cfg;
    if (s->nrcpts >= cfg->max_recipients) {
        /* RFC 5321 4.5.3.1.10: 452 for too many recipients (not counted as an error). */
        reply(s, "452 4.5.3 Too many recipients");
        note_junk(s);
        return;
    }
    struct smtp_rcpt_args a;
    bool utf8 = (s->msg_flags & SPOOL_F_SMTPUTF8) != 0;
    if (reply_parse_error(s, smtp_rcpt_parse(c->arg, c->arg_len, utf8, &a), false))
        return;
    char addr[SMTP_MAX_ADDR + 32];
    if (a.is_postmaster) {
        /* RFC 5321 4.5.1: <postmaster> is accepted; it stands for ours. */
        snprintf(addr, sizeof(addr), "postmaster@%s", cfg->hostname);
    } else {
        if (a.path_len >= sizeof(addr)) {
            reply_error(s, "501 5.1.3 Recipient address too long");
            return;
        }
        memcpy(addr, a.path, a.path_len);
        addr[a.path_len] = '\0';
        /* core/recipients.h: users, aliases, catch-all, SRS bounces. */
        int st = recipients_resolve(s->r->users, cfg, a.path, a.path_len, time(NULL), NULL);
        if (st == RCPT_UNKNOWN || st == RCPT_SRS_INVALID) {
            bool srs = st == RCPT_SRS_INVALID;
            maillog_rejected(s->id, s->client_addr, "rcpt", addr, "550 5.1.1",
                             srs ? "bad-srs" : "no-such-user");
            reply_error(s, "550 5.1.1 <%s>: Recipient address rejected: %s", addr,
                        srs ? "invalid or expired bounce address" : "no such user");
            return;
        }
        if (st < 0) {
            log_warnx("session=%s event=rcpt-failed err=%d", s->id, st);
            reply(s, "451 4.3.0 Local configuration problem, try again later");
            return;
        }
        if (st == RCPT_NOT_LOCAL && !policy_may_relay(&s->pol, s->authed)) {
            maillog_rejected(s->id, s->client_addr, "rcpt", addr, "550 5.7.1", "relay-denied");
            reply_error(s, "550 5.7.1 <%s>: Relay access denied", addr);
            return;
        }
    }
    if (s->nrcpts == s->rcpts_cap) {
        size_t cap = s->rcpts_cap ? s->rcpts_cap * 2 : 4;
        char **p = realloc(s->rcpts, cap * sizeof(*p));
        if (p != NULL)
            s->rcpts = p;
        char **o = p ? realloc(s->rcpt_orcpt, cap * sizeof(*o)) : NULL;
        if (o != NULL)
            s->rcpt_orcpt = o;
        uint8_t *nf = o ? realloc(s->rcpt_notify, cap) : NULL;
        if (nf == NULL) {
            reply(s, "452 4.3.0 Out of memory");
            return;
        }
        s->rcpt_notify = nf;
        s->rcpts_cap = cap;
    }
    s->rcpts[s->nrcpts] = strdup(addr);
    /* RFC 3461 4.1, 4.2: NOTIFY and ORCPT go with the recipient. */
    s->rcpt_orcpt[s->nrcpts] = a.orcpt_len ? strndup(a.orcpt, a.orcpt_len) : NULL;
    s->rcpt_notify[s->nrcpts] = spool_notify_parse(a.notify, a.notify_len);
    if (s->rcpts[s->nrcpts] == NULL || (a.orcpt_len && s->rcpt_orcpt[s->nrcpts] == NULL)) {
        free(s->rcpts[s->nrcpts]);
        free(s->rcpt_orcpt[s->nrcpts]);
        reply(s, "452 4.3.0 Out of memory");
        return;
    }
    s->nrcpts++;
    reply(s, "250 2.1.5 Ok");
}

/* Build the Received: field for this message (RFC 5321 4.4, RFC 3848). */
static int make_received(struct smtp_session *s)
{
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
    const char *proto = s->esmtp ? (s->tls_active ? (s->authed ? "ESMTPSA" : "ESMTPS")
                                                  : (s->authed ? "ESMTPA" : "ESMTP"))
                                 : "SMTP";
    if (s->msg_flags & SPOOL_F_SMTPUTF8)
        proto = s->tls_active ? (s->authed ? "UTF8SMTPSA" : "UTF8SMTPS")
                              : (s->authed ? "UTF8SMTPA" : "UTF8SMTP");
    char tlsinfo[160] = "";
    if (s->tls_active)
        snprintf(tlsinfo, sizeof(tlsinfo), "\r\n\t(using %s with cipher %s)",
                 tls_conn_version(s->tls), tls_conn_cipher(s->tls));
    char forclause[SMTP_MAX_ADDR + 16] = "";
    if (s->nrcpts == 1)
        snprintf(forclause, sizeof(forclause), "\r\n\tfor <%s>", s->rcpts[0]);
    const char *v6 = strchr(s->client_addr, ':') ? "IPv6:" : "";
    char *hdr = NULL;
    int n = asprintf(&hdr,
                     "Received: from %s ([%s%s]:%d)%s\r\n\tby %s (ortoo) with %s id %s.%u%s;\r\n"
                     "\t%s\r\n",
                     s->helo ? s->helo : "unknown", v6, s->client_addr, s->client_port, tlsinfo,
                     s->r->cfg->hostname, proto, s->id, s->nmsgs, forclause, date);
    if (n < 0)
        return -ENOMEM;
    free(s->received);
    s->received = hdr;
    return 0;
}

/* ---- DKIM (dkim/sign.h) ---- */

/*
 * A message starts.  What an authenticated user or a trusted client sends
 * is a submission (core/policy.h): it gets a Date and a Message-ID when it
 * lacks them (RFC 6409 8.2-8.3) and is signed when the domain of its From
 * field has keys.  Other mail (inbound on port 25) is neither changed nor
 * signed.
 */
static void dkim_begin(struct smtp_session *s)
{
    dkim_sign_free(s->dkim);
    s->dkim = NULL;
    if (!policy_is_submission(&s->pol, s->authed))
        return;
    struct dkim_sign_params p = {
        .now = (int64_t)time(NULL), .add_missing = true, .hostname = s->r->cfg->hostname};
    s->dkim = dkim_sign_open(s->r->dkim, &p); /* NULL: answered 451 at the end */
}

/*
 * The final dot, before the spool: make the signatures and put them, with
 * the added fields, into the prefix stored with the envelope and sent ahead
 * of the message.  The order is DKIM-Signature(s), Received, the added Date
 * and Message-ID.  The signature is made here, on the reactor (~0.35 ms for
 * RSA-2048, ~25 us for Ed25519): reactors are one per CPU, so a worker
 * thread would add a hand-off without adding CPU.  Returns 0 or -errno (the
 * caller answers 451).
 */
static int dkim_finish(struct smtp_session *s)
{
    struct dkim_sign_result res;
    if (s->dkim == NULL)
        return -ENOMEM;
    int rc = dkim_sign_finish(s->dkim, &res);
    if (rc < 0) {
        log_warnx("session=%s event=dkim-failed err=%d", s->id, rc);
        return rc;
    }
    if (res.nsigs > 0)
        log_debug("session=%s event=dkim-signed d=%s signatures=%u", s->id, res.domain, res.nsigs);
    else
        log_info("session=%s event=dkim-unsigned user=%s why=\"%s\" client=%s", s->id,
                 log_q(s->authed ? s->auth_user : NULL),
                 res.why_unsigned ? res.why_unsigned : "-", s->client_addr);
    if (res.signatures != NULL || res.added != NULL) {
        char *prefix = NULL;
        if (asprintf(&prefix, "%s%s%s", res.signatures ? res.signatures : "", s->received,
                     res.added ? res.added : "") < 0) {
            rc = -ENOMEM;
        } else {
            free(s->received);
            s->received = prefix;
        }
    }
    free(res.signatures);
    free(res.added);
    return rc;
}

static void cmd_data(struct smtp_session *s, const struct smtp_cmd *c)
{
    if (!s->has_mail) {
        reply_error(s, "503 5.5.1 Need MAIL command");
        return;
    }
    if (s->nrcpts == 0) {
        reply_error(s, "503 5.5.1 Need RCPT command");
        return;
    }
    if (c->arg_len != 0) {
        reply_error(s, "501 5.5.4 Syntax: DATA");
        return;
    }
    s->too_big = false;
    if (!body_start(s)) {
        /* RFC 5321 4.5.3.1.10 spirit: a temporary refusal, the client retries. */
        maillog_rejected(s->id, s->client_addr, "data", s->sender, "452 4.3.1", "body-memory");
        reply(s, "452 4.3.1 Insufficient system storage, try again later");
        transaction_reset(s);
        return;
    }
    smtp_data_scan_init(&s->scan);
    dkim_begin(s);
    if (s->checks != NULL)
        checks_data(s->checks);
    session_enter(s, ST_DATA);
    deadline_set(s, s->r->cfg->timeout_data);
    reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

static void spool_done(struct spool_commit *c, int res);
static void message_store(struct smtp_session *s);
static void on_checks_done(struct checks *c, void *arg);

/* The message is complete: check it, wait for the inbound checks if
 * their results are not all in, and hand it to the spool. */
static void message_end(struct smtp_session *s)
{
    if (s->scan.bad) {
        maillog_rejected(s->id, s->client_addr, "data", s->sender, "554 5.6.0", "bare-lf-or-cr");
        reply_error(s, "554 5.6.0 Message contains bare LF or bare CR; lines must end with CRLF");
        goto reject;
    }
    if (s->too_big) {
        maillog_rejected(s->id, s->client_addr, "data", s->sender, "552 5.3.4", "too-big");
        reply_error(s, "552 5.3.4 Message size exceeds fixed maximum message size (%llu)",
                    (unsigned long long)s->r->cfg->max_message_size);
        goto reject;
    }
    if (s->body_nomem) {
        /* Not the client's fault: no error count, try again later. */
        maillog_rejected(s->id, s->client_addr, "data", s->sender, "452 4.3.1", "body-memory");
        reply(s, "452 4.3.1 Insufficient system storage, try again later");
        goto reject;
    }
    if (s->scan.long_line) {
        maillog_rejected(s->id, s->client_addr, "data", s->sender, "554 5.6.0", "line-too-long");
        reply_error(s, "554 5.6.0 Message has a line longer than 1000 octets (RFC 5321 4.5.3.1.6)");
        goto reject;
    }
    /* RFC 5321 6.3: a message that went through this many MTAs is looping
     * (an alias or a route back to itself, two servers forwarding to each
     * other); refused here, its sender's MTA bounces it. */
    size_t hops = smtp_count_received(s->msg.data, s->msg.len, SMTP_MAX_HOPS + 1);
    if (hops > SMTP_MAX_HOPS) {
        maillog_rejected(s->id, s->client_addr, "data", s->sender, "554 5.4.6", "too-many-hops");
        reply(s, "554 5.4.6 Too many hops: more than %d Received: fields (a mail loop?)",
              SMTP_MAX_HOPS);
        goto reject;
    }
    if (make_received(s) < 0) {
        reply(s, "451 4.3.0 Out of memory");
        goto reject;
    }
    if (policy_is_submission(&s->pol, s->authed) && dkim_finish(s) < 0) {
        reply(s, "451 4.3.0 Temporary local problem (signing), try again later");
        goto reject;
    }
    if (s->checks != NULL && checks_end(s->checks, on_checks_done, s) > 0) {
        session_enter(s, ST_WAIT_CHECKS); /* bounded by [checks] timeout */
        return;
    }
    message_store(s);
    return;
reject:
    transaction_reset(s);
    if (s->state != ST_CLOSING)
        session_enter(s, ST_CMD);
}

/* The inbound checks' results are in (their deadline at the latest). */
static void on_checks_done(struct checks *c, void *arg)
{
    struct smtp_session *s = arg;
    if (s->state == ST_CLOSING) {
        session_maybe_free(s);
        return;
    }
    session_enter(s, ST_CMD);
    message_store(s);
    if (s->state != ST_WAIT_SPOOL)
        session_resume(s); /* refused: go on with what was pipelined */
}

/*
 * The checks' verdict (core/checks.h): refuse (the reply is queued, false)
 * or accept, with the Authentication-Results field on top of the fields
 * ortoo prepends.
 */
static bool checks_accept(struct smtp_session *s)
{
    struct checks_verdict v;
    checks_verdict(s->checks, &v);
    if (v.code != 0) {
        maillog_rejected(s->id, s->client_addr, "data", s->sender, v.status, v.reason);
        reply(s, "%s", v.reply);
        return false;
    }
    if (v.header != NULL) {
        char *prefix = NULL;
        if (asprintf(&prefix, "%s%s", v.header, s->received) < 0)
            return true; /* out of memory: stored without the field */
        free(s->received);
        s->received = prefix;
    }
    return true;
}

/* Hand the message to the spool (the 250 comes with the sync). */
static void message_store(struct smtp_session *s)
{
    if (s->checks != NULL && !checks_accept(s))
        goto reject;
    struct spool_envelope env = {
        .sender = s->sender,
        .rcpts = (const char *const *)s->rcpts,
        .nrcpts = s->nrcpts,
        .helo = s->helo ? s->helo : "",
        .client_addr = s->client_addr,
        .auth_user = s->authed ? s->auth_user : NULL,
        .headers = s->received,
        .flags = s->msg_flags,
        .received_at = (int64_t)time(NULL),
        .dsn_ret = s->dsn_ret,
        .dsn_envid = s->dsn_envid,
        .dsn_notify = s->rcpt_notify,
        .dsn_orcpt = (const char *const *)s->rcpt_orcpt,
    };
    struct iovec iov = {.iov_base = s->msg.data, .iov_len = s->msg.len};
    s->commit.cb = spool_done;
    s->commit.owner = s;
    int rc = spool_submit(s->r->spool, &s->commit, &env, &iov, s->msg.len ? 1 : 0);
    if (rc < 0) {
        log_warnx("session=%s event=spool-submit-failed err=%d", s->id, rc);
        reply(s, rc == -ENOSPC ? "452 4.3.1 Insufficient system storage"
                               : "451 4.3.0 Temporary local problem, try again later");
        goto reject;
    }
    s->commit_busy = true;
    session_enter(s, ST_WAIT_SPOOL);
    return;
reject:
    transaction_reset(s);
    if (s->state != ST_CLOSING)
        session_enter(s, ST_CMD);
}

static void spool_done(struct spool_commit *c, int res)
{
    struct smtp_session *s = c->owner;
    s->commit_busy = false;
    if (res == 0) {
        policy_mail_end(&s->pol, s->r->limits, true, io_loop_now(s->r->loop)); /* it counts */
        s->nmsgs++;
        s->junk = 0;
        s->r->accepted++;
        maillog_queued(c->id, s->id, s->client_addr, s->sender, s->nrcpts, s->msg.len,
                       s->authed ? s->auth_user : NULL);
    } else {
        log_warnx("session=%s event=spool-failed err=%d", s->id, res);
    }
    if (s->state == ST_CLOSING) {
        /* Connection gone: the message is stored (or not) all the same. */
        transaction_reset(s);
        session_maybe_free(s);
        return;
    }
    if (res == 0)
        reply(s, "250 2.0.0 Ok: queued as %s", c->id);
    else if (res == -ENOSPC)
        reply(s, "452 4.3.1 Insufficient system storage");
    else
        reply(s, "451 4.3.0 Temporary local problem, try again later");
    transaction_reset(s);
    session_enter(s, ST_CMD);
    session_resume(s);
}

static void cmd_bdat(struct smtp_session *s, const struct smtp_cmd *c)
{
    uint64_t size;
    bool last;
    if (smtp_bdat_parse(c->arg, c->arg_len, &size, &last) != SMTP_P_OK) {
        /* We cannot know how many bytes follow: the stream is lost. */
        reply(s, "501 5.5.4 Syntax: BDAT size [LAST]; closing connection");
        s->close_after_send = true;
        session_enter(s, ST_CLOSING);
        return;
    }
    s->chunk_size = size;
    s->bdat_left = size;
    s->bdat_last = last;
    if (!s->has_mail || s->nrcpts == 0) {
        /* RFC 3030 2: the chunk is read and discarded. */
        s->bdat_failed = true;
        reply_error(s, "503 5.5.1 Need %s command", s->has_mail ? "RCPT" : "MAIL");
        session_enter(s, ST_BDAT);
        deadline_set(s, s->r->cfg->timeout_data);
        return;
    }
    if (!(s->msg_flags & SPOOL_F_BDAT)) {
        s->msg_flags |= SPOOL_F_BDAT;
        s->too_big = false;
        if (!body_start(s))
            msg_nomem(s); /* every chunk is read, discarded and answered 452 */
        smtp_data_scan_init(&s->scan);
        dkim_begin(s);
        if (s->checks != NULL)
            checks_data(s->checks);
    }
    session_enter(s, ST_BDAT);
    deadline_set(s, s->r->cfg->timeout_data);
}

/* A BDAT chunk's bytes are all in: reply, and end the message at LAST. */
static void bdat_chunk_done(struct smtp_session *s)
{
    session_enter(s, ST_CMD);
    if (s->bdat_failed) {
        /* The error was already answered; a failed transaction ends at LAST. */
        if (s->bdat_last) {
            s->bdat_failed = false;
            if (s->has_mail)
                transaction_reset(s);
        }
        return;
    }
    if (s->body_nomem) {
        /* The body budget is spent: every chunk of this message gets 452
         * (RFC 3030 2: a 4xx to a chunk fails the transaction). */
        if (s->bdat_last) {
            message_end(s);
            return;
        }
        reply(s, "452 4.3.1 Insufficient system storage, try again later");
        return;
    }
    if (!s->bdat_last) {
        reply(s, "250 2.0.0 %llu octets received", (unsigned long long)s->chunk_size);
        return;
    }
    /* The stored form is CRLF lines: end an unterminated last line. */
    if (!s->too_big && s->msg.len > 0) {
        if (s->msg.data[s->msg.len - 1] == '\r')
            msg_append(s, "\n", 1);
        else if (s->msg.data[s->msg.len - 1] != '\n')
            msg_append(s, "\r\n", 2);
    }
    message_end(s);
}

static void cmd_rset(struct smtp_session *s, const struct smtp_cmd *c)
{
    if (note_junk(s))
        return;
    transaction_reset(s);
    reply(s, "250 2.0.0 Ok");
}

static void cmd_noop(struct smtp_session *s, const struct smtp_cmd *c)
{
    if (note_junk(s))
        return;
    reply(s, "250 2.0.0 Ok");
}

static void cmd_quit(struct smtp_session *s, const struct smtp_cmd *c)
{
    reply(s, "221 2.0.0 %s closing connection", s->r->cfg->hostname);
    if (s->tls_active) {
        /* RFC 8446 6.1: close_notify after the last reply (and clients keep
         * their session ticket usable). */
        session_flush(s);
        tls_conn_shutdown(s->tls);
    }
    s->close_after_send = true;
    session_enter(s, ST_CLOSING);
}

static void cmd_vrfy(struct smtp_session *s, const struct smtp_cmd *c)
{
    /* RFC 5321 3.5.3: 252 when we will not say. */
    if (note_junk(s))
        return;
    reply(s, "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery");
}

static void cmd_expn(struct smtp_session *s, const struct smtp_cmd *c)
{
    reply_error(s, "502 5.5.1 EXPN not available");
}

static void cmd_help(struct smtp_session *s, const struct smtp_cmd *c)
{
    if (note_junk(s))
        return;
    reply(s, "214-2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY");
    reply(s, "214 2.0.0 HELP STARTTLS AUTH; see RFC 5321");
}

typedef void (*cmd_fn)(struct smtp_session *s, const struct smtp_cmd *c);

static void cmd_ehlo_ext(struct smtp_session *s, const struct smtp_cmd *c) { cmd_ehlo(s, c, true); }
static void cmd_helo(struct smtp_session *s, const struct smtp_cmd *c) { cmd_ehlo(s, c, false); }

static const cmd_fn cmd_table[SMTP_V__COUNT] = {
    [SMTP_V_EHLO] = cmd_ehlo_ext, [SMTP_V_HELO] = cmd_helo,     [SMTP_V_MAIL] = cmd_mail,
    [SMTP_V_RCPT] = cmd_rcpt,     [SMTP_V_DATA] = cmd_data,     [SMTP_V_BDAT] = cmd_bdat,
    [SMTP_V_RSET] = cmd_rset,     [SMTP_V_NOOP] = cmd_noop,     [SMTP_V_QUIT] = cmd_quit,
    [SMTP_V_VRFY] = cmd_vrfy,     [SMTP_V_EXPN] = cmd_expn,     [SMTP_V_HELP] = cmd_help,
    [SMTP_V_STARTTLS] = cmd_starttls, [SMTP_V_AUTH] = cmd_auth,
};

static void session_command(struct smtp_session *s, const char *line, size_t len)
{
    struct smtp_cmd c;
    if (memchr(line, '\0', len) != NULL) {
        reply_error(s, "500 5.5.2 NUL character in command");
        return;
    }
    if (smtp_cmd_parse(line, len, &c) != SMTP_P_OK) {
        reply_error(s, "501 5.5.4 Syntax error");
        return;
    }
    if (c.verb == SMTP_V_UNKNOWN || cmd_table[c.verb] == NULL) {
        reply_error(s, "500 5.5.1 Command unrecognized");
        return;
    }
    log_debug("session=%s cmd=%s", s->id, smtp_verb_name(c.verb));
    cmd_table[c.verb](s, &c);
}

/* ---- the input loop ---- */

/* Append message bytes, minding the size limit and the body budget (past
 * either, the rest is counted, not kept). */
static void msg_append(struct smtp_session *s, const char *data, size_t len)
{
    s->msg_total += len;
    if (s->too_big)
        return;
    if (s->msg_total > s->r->cfg->max_message_size) {
        s->too_big = true;
        msg_free(s);
        return;
    }
    if (s->body_nomem || len == 0)
        return;
    if (msg_grow(s, len) < 0) {
        msg_nomem(s);
        return;
    }
    memcpy(s->msg.data + s->msg.len, data, len);
    s->msg.len += len;
    if (s->dkim != NULL)
        dkim_sign_feed(s->dkim, data, len);
    if (s->checks != NULL)
        checks_feed(s->checks, data, len);
}

/*
 * Scan DATA bytes and append the message part; *consumed tells how many
 * bytes were used (a trailing "." or ".\r" that may start the terminator is
 * not).  Returns true when the terminator was found (and consumed).
 */
static bool data_feed(struct smtp_session *s, const char *data, size_t len, size_t *consumed)
{
    size_t msg_len = 0;
    int rc = smtp_data_scan(&s->scan, data, len, &msg_len, consumed);
    deadline_data_progress(s, *consumed);
    msg_append(s, data, msg_len);
    return rc == SMTP_P_DONE;
}

/* Consume DATA bytes from in; returns true when the terminator was found. */
static bool data_input(struct smtp_session *s)
{
    size_t consumed = 0;
    bool done = data_feed(s, s->in.data, s->in.len, &consumed);
    buf_consume(&s->in, consumed); /* may keep a possible terminator start */
    return done;
}

static void bdat_input(struct smtp_session *s)
{
    size_t n = s->in.len < s->bdat_left ? s->in.len : (size_t)s->bdat_left;
    uint64_t max = s->r->cfg->max_message_size;
    s->msg_total += n;
    if (!s->bdat_failed && !s->too_big && s->msg_total > max) {
        s->too_big = true; /* the rest of the chunks is counted, not kept */
        msg_free(s);
    }
    if (!s->bdat_failed && !s->too_big && !s->body_nomem) {
        if (msg_grow(s, 2 * n) < 0) {
            msg_nomem(s);
        } else {
            size_t from = s->msg.len;
            s->msg.len += smtp_bdat_stuff(&s->scan, s->in.data, n, s->msg.data + s->msg.len);
            if (s->msg.len > max) {
                s->too_big = true;
                msg_free(s);
            } else {
                if (s->dkim != NULL)
                    dkim_sign_feed(s->dkim, s->msg.data + from, s->msg.len - from);
                if (s->checks != NULL)
                    checks_feed(s->checks, s->msg.data + from, s->msg.len - from);
            }
        }
    }
    buf_consume(&s->in, n);
    s->bdat_left -= n;
    deadline_data_progress(s, n);
}

/*
 * Parse and execute what is in s->in until it is drained or the session
 * has to wait.  Replies accumulate in s->pend; the caller flushes.
 */
static void session_process(struct smtp_session *s)
{
    for (;;) {
        switch (s->state) {
        case ST_CLOSING:
        case ST_WAIT_AUTH:
        case ST_WAIT_SPOOL:
        case ST_WAIT_CHECKS:
        case ST_TLS_HANDSHAKE:
            return;
        case ST_DATA:
            if (s->in.len == 0)
                return;
            if (!data_input(s))
                return;
            session_enter(s, ST_CMD);
            message_end(s);
            continue;
        case ST_BDAT:
            if (s->bdat_left > 0) {
                if (s->in.len == 0)
                    return;
                bdat_input(s);
                if (s->bdat_left > 0)
                    return;
            }
            bdat_chunk_done(s);
            continue;
        case ST_CMD:
        case ST_AUTH_RESP:
            break;
        }
        if (s->in.len == 0)
            return;
        if (out_pending(s) > s->r->cfg->limits.max_pending_output) {
            s->out_blocked = true; /* on_send resumes once the client reads */
            return;
        }
        size_t line_len = 0, consumed = 0;
        if (s->skip_line) {
            if (smtp_line_skip(s->in.data, s->in.len, &consumed) == SMTP_P_AGAIN) {
                s->in.len = 0;
                return;
            }
            buf_consume(&s->in, consumed);
            s->skip_line = false;
            continue;
        }
        int rc = smtp_line_next(s->in.data, s->in.len, SMTP_MAX_CMD_LINE, &line_len, &consumed);
        if (rc == SMTP_P_AGAIN)
            return;
        if (rc == SMTP_P_ETOOLONG) {
            /* max bytes without an LF: drop them and the rest of the line. */
            buf_consume(&s->in, consumed);
            s->skip_line = true;
            if (s->state == ST_AUTH_RESP)
                sasl_fail(s, "500 5.5.2 Line too long");
            else
                reply_error(s, "500 5.5.2 Line too long");
            continue;
        }
        if (rc == SMTP_P_EBARELF) {
            buf_consume(&s->in, consumed);
            reply_error(s, "500 5.5.2 Bare LF in command; lines must end with CRLF");
            continue;
        }
        const char *line = s->in.data;
        if (++s->ncommands > s->r->cfg->limits.max_commands) {
            limit_close(s, "commands", "Too many commands");
            return;
        }
        if (s->state == ST_AUTH_RESP)
            sasl_response(s, line, line_len);
        else
            session_command(s, line, line_len);
        if (s->state == ST_CMD || s->state == ST_AUTH_RESP)
            deadline_set(s, s->r->cfg->timeout_command); /* the next line's time */
        /* STARTTLS emptied the buffer on purpose. */
        if (s->in.len >= consumed)
            buf_consume(&s->in, consumed);
    }
}

/* ---- start ---- */

/*
 * Past max_connections or connections_per_address: 421 4.7.0 and close
 * (implicit TLS gets no plaintext line: just the close); logged through
 * limit_log_ok.
 */
static void connection_refused(struct smtp_session *s, enum limits_verdict v)
{
    struct smtp_reactor *r = s->r;
    metrics_inc(v == LIMITS_TOTAL ? METRICS_CONN_REFUSED_TOTAL
                : v == LIMITS_PER_ADDRESS ? METRICS_CONN_REFUSED_PER_ADDRESS
                                          : METRICS_CONN_REFUSED_MEMORY);
    const char *what = v == LIMITS_TOTAL ? "connections" : v == LIMITS_PER_ADDRESS
                                                                ? "connections-per-address"
                                                                : "out-of-memory";
    unsigned skipped;
    if (limit_log_ok(r, &skipped)) {
        char prefix[64];
        log_info("session=%s event=limit what=%s client=%s prefix=%s unlogged=%u", s->id, what,
                 s->client_addr, limits_key_text(&s->client_key, prefix, sizeof(prefix)),
                 skipped);
    }
    if (s->role != ROLE_SUBMISSIONS)
        reply(s, "421 4.7.0 %s Too many connections%s, try again later", r->cfg->hostname,
              v == LIMITS_PER_ADDRESS ? " from your address" : "");
    s->close_after_send = true;
    session_enter(s, ST_CLOSING);
    session_flush(s);
    session_maybe_free(s);
}

/* The client's address as text (IPv4-mapped IPv6 as IPv4) and its port. */
static void peer_text(const struct sockaddr_storage *peer, char out[INET6_ADDRSTRLEN],
                      int *port)
{
    *port = 0;
    if (peer->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)peer;
        if (IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr))
            inet_ntop(AF_INET, &a6->sin6_addr.s6_addr[12], out, INET6_ADDRSTRLEN);
        else
            inet_ntop(AF_INET6, &a6->sin6_addr, out, INET6_ADDRSTRLEN);
        *port = ntohs(a6->sin6_port);
    } else if (peer->ss_family == AF_INET) {
        const struct sockaddr_in *a4 = (const struct sockaddr_in *)peer;
        inet_ntop(AF_INET, &a4->sin_addr, out, INET6_ADDRSTRLEN);
        *port = ntohs(a4->sin_port);
    } else {
        snprintf(out, INET6_ADDRSTRLEN, "unknown");
    }
}

/*
 * The refusal of a boxed client (core/policy.h), as cheap as we could
 * make it, measured with bench/attack.py (docs/config.md has the figures):
 * a flooder that does not wait for the banner pushes its first write (up to
 * the initial TCP window, ~64 KiB) before we even accept, and reconnects as
 * soon as it notices the close.  Closing at once (an RST, since its bytes
 * are unread) cost ~11 us a connection here, and the flooder came back
 * ~20,000 times a second: its own reconnects and writes then took the CPU
 * the good clients needed.  So the socket is held: one 421 written without
 * waiting (RFC 5321 3.1, 4.2.2; none on implicit TLS), nothing read, no
 * session, no recv, and it is reset SESSION_HOLD_MS later (or earlier, when
 * SMTP_HELD_MAX newer ones need the room).  The flooder's writes stop at the
 * full window and it sits idle; a real MTA reads the 421 and goes away on
 * its own.  What a held socket costs is its fd and the bytes the kernel
 * queued before the accept; nothing on our side grows with the flood.
 */
#define SESSION_HOLD_MS 5000

/* Reset a held connection: no FIN dance, no TIME_WAIT, its bytes dropped. */
static void held_reset(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

static void on_held_timer(struct io_op *op, int res, const char *data, unsigned flags);

/* Reset the held connections due by now (all of them with all), oldest
 * first, and arm the timer for the next one. */
static void held_sweep(struct smtp_reactor *r, bool all)
{
    uint64_t now = io_loop_now(r->loop);
    while (r->held_count > 0) {
        struct smtp_held *h = &r->held[r->held_head];
        if (!all && h->until > now)
            break;
        held_reset(h->fd);
        r->held_head = (r->held_head + 1) % SMTP_HELD_MAX;
        r->held_count--;
    }
    if (r->held_count == 0 || io_op_busy(&r->held_timer))
        return;
    uint64_t due = r->held[r->held_head].until;
    if (io_timer_start(r->loop, &r->held_timer, (due - now) / 1000000u + 1, on_held_timer) < 0)
        held_sweep(r, true); /* no timer: hold nothing */
}

static void on_held_timer(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct smtp_reactor *r = op->owner;
    held_sweep(r, r->stopping);
}

/* Refuse a connection from a boxed prefix; left: ns of box left. */
static void box_refuse(struct smtp_reactor *r, int fd, enum listen_role role,
                       const struct sockaddr_storage *peer, const struct limits_key *k,
                       uint64_t left)
{
    unsigned long long secs = (left + NS_PER_S - 1) / NS_PER_S;
    metrics_inc(METRICS_CONN_ACCEPTED + role);
    metrics_inc(METRICS_CONN_REFUSED_PENALTY_BOX);
    if (role != ROLE_SUBMISSIONS) {
        char line[200];
        int n = snprintf(line, sizeof(line),
                         "421 4.7.0 %s Your network was disconnected for abuse; try again "
                         "in %llu s\r\n",
                         r->cfg->hostname, secs);
        if (n > 0 && (size_t)n < sizeof(line))
            (void)send(fd, line, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
    }
    if (r->stopping) {
        held_reset(fd);
    } else {
        if (!r->held_timer_ready) {
            io_op_init(&r->held_timer, r);
            r->held_timer_ready = true;
        }
        if (r->held_count == SMTP_HELD_MAX) { /* full: the oldest goes first */
            held_reset(r->held[r->held_head].fd);
            r->held_head = (r->held_head + 1) % SMTP_HELD_MAX;
            r->held_count--;
        }
        struct smtp_held *h = &r->held[(r->held_head + r->held_count) % SMTP_HELD_MAX];
        h->fd = fd;
        h->until = io_loop_now(r->loop) + SESSION_HOLD_MS * 1000000ull;
        r->held_count++;
        held_sweep(r, false);
    }
    unsigned skipped;
    if (limit_log_ok(r, &skipped)) {
        char addr[INET6_ADDRSTRLEN], prefix[64];
        int port;
        peer_text(peer, addr, &port);
        log_info("reactor=%u event=limit what=penalty-box client=%s prefix=%s left=%llu "
                 "unlogged=%u",
                 r->index, addr, limits_key_text(k, prefix, sizeof(prefix)), secs, skipped);
    }
}

void smtp_session_start(struct smtp_reactor *r, int fd, enum listen_role role,
                        const struct sockaddr_storage *peer, socklen_t peer_len)
{
    struct limits_key key;
    struct policy_client pol;
    limits_key_of(r->limits, peer, &key);
    uint64_t boxed = policy_admit(&pol, r->cfg, r->limits, peer, &key, io_loop_now(r->loop));
    if (boxed > 0) {
        box_refuse(r, fd, role, peer, &key, boxed);
        return;
    }
    struct smtp_session *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        close(fd);
        return;
    }
    s->client_key = key;
    s->pol = pol;
    s->r = r;
    s->fd = fd;
    s->role = role;
    r->nsessions++;
    s->next = r->sessions;
    if (r->sessions != NULL)
        r->sessions->prev = s;
    r->sessions = s;
    snprintf(s->id, sizeof(s->id), "%u.%llx", r->index, (unsigned long long)++r->session_seq);
    peer_text(peer, s->client_addr, &s->client_port);
    io_op_init(&s->recv_op, s);
    io_op_init(&s->send_op, s);
    io_op_init(&s->timer_op, s);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    uint64_t now = io_loop_now(r->loop);
    s->session_end = now + (uint64_t)r->cfg->limits.timeout_session * NS_PER_S;
    s->deadline = now + (uint64_t)greeting_timeout(r->cfg) * NS_PER_S;
    log_debug("session=%s event=connect client=%s port=%d role=%s trusted=%d", s->id,
              s->client_addr, s->client_port, config_role_name(role), s->pol.trusted);

    metrics_inc(METRICS_CONN_ACCEPTED + role);
    enum limits_verdict v = limits_conn_acquire(r->limits, &s->client_key);
    if (v != LIMITS_OK) {
        connection_refused(s, v);
        return;
    }
    s->conn_counted = true;
    if (role == ROLE_SUBMISSIONS) {
        if (r->tls == NULL || session_tls_begin(s) < 0) {
            smtp_close(s, "no TLS for implicit TLS listener");
            session_maybe_free(s);
            return;
        }
    } else if (role == ROLE_SMTP && r->cfg->smtp.greeting_delay_ms > 0) {
        s->greet_pending = true; /* the 220 comes from on_timer; input first is refused */
        s->greet_at = now + (uint64_t)r->cfg->smtp.greeting_delay_ms * 1000000ull;
    } else {
        greeting(s);
    }
    if (io_recv_start(r->loop, &s->recv_op, fd, on_recv) < 0) {
        smtp_close(s, "submit failed");
        session_maybe_free(s);
        return;
    }
    timer_arm(s);
    session_flush(s);
}
