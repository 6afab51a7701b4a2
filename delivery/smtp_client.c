/* SPDX-License-Identifier: MIT */
/*
 * smtp_client.c - the SMTP client (see smtp_client.h) on a completion loop.
 *
 * One struct smtp_client per outbound connection, driven by completions:
 * a connect (io_connect), one multishot recv (io_recv_start), at most one
 * send in flight (io_send of a buffer or of mapped message bytes, or
 * io_sendfile), one timer, and one deferred op for results known inside an
 * API call.  Under TLS the bytes go through io/tls.c's memory BIOs.
 *
 * State changes go through client_enter() only.  Replies are parsed by the
 * pure parser of smtp_reply.c and matched, in order, against a queue of the
 * commands that wait for one (RFC 2920: with PIPELINING the client sends
 * [RSET,] MAIL, every RCPT and DATA, or the first BDAT chunk with its bytes,
 * in one write, then reads the replies in order).  Without PIPELINING the
 * same queue holds one command at a time.
 *
 * The body streams from a cursor over [prefix][stored bytes] (smtp_body.c):
 * in DATA mode the stored wire form goes out as it is (RFC 5321 4.5.2: it
 * is already dot-stuffed) followed by ".\r\n"; in BDAT mode the cursor skips
 * the stuffing dot at the start of each line (RFC 3030 2: BDAT data is not
 * stuffed), and each chunk's size is counted in a first pass.
 *
 * Lifetime: client_end() sets CLOSING, shuts the socket down and cancels
 * every op; the struct is freed by client_maybe_free() when nothing is in
 * flight and no callback of ours is on the stack (depth == 0), so an owner
 * may close the client from inside any of its callbacks.
 */
#include "delivery/smtp_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sodium.h>

#include "delivery/smtp_body.h"
#include "io/log.h"
#include "io/loop.h"

#ifndef SMTP_CLIENT_BDAT_MAX
#define SMTP_CLIENT_BDAT_MAX (8u << 20) /* unstuffed bytes per BDAT chunk */
#endif
#define CLIENT_OUT_CHUNK (64 * 1024)    /* body bytes produced per send */
#define CLIENT_DIRECT_MIN (16 * 1024)   /* plaintext: runs this long skip our buffer */
#define CLIENT_TLS_DIRECT_MIN 4096      /* TLS: runs this long are SSL_written in place */
#define CLIENT_TLS_STAGE 16384          /* TLS: short runs gathered into one record */
#define CLIENT_TLS_READ 16384           /* plaintext taken out of TLS per call */
#define CLIENT_CMD_MAX 2048             /* one command line, CRLF included */

#define MS(x) ((uint64_t)(x) * 1000000ull)

enum cl_state {
    CL_CONNECTING = 0, /* io_connect in flight */
    CL_GREETING,       /* waiting for the 220 */
    CL_EHLO,           /* EHLO sent */
    CL_HELO,           /* HELO sent (EHLO got 5xx) */
    CL_STARTTLS,       /* STARTTLS sent, waiting for its 220 */
    CL_TLS,            /* TLS handshake */
    CL_AUTH,           /* AUTH PLAIN sent */
    CL_IDLE,           /* ready, no message */
    CL_TXN,            /* a message: commands, body, replies */
    CL_MSG_REFUSED,    /* a message refused up front: done() on the next turn */
    CL_QUIT,           /* QUIT sent */
    CL_CLOSING,        /* going away: nothing more is processed */
};

static const char *const state_names[] = {
    "CONNECTING", "GREETING", "EHLO", "HELO", "STARTTLS", "TLS", "AUTH",
    "IDLE", "TXN", "MSG_REFUSED", "QUIT", "CLOSING",
};

/* A command waiting for its reply. */
enum pend_kind { P_RSET, P_MAIL, P_RCPT, P_DATA, P_BDAT, P_BDAT_LAST, P_DOT };

struct pend {
    enum pend_kind kind;
    size_t rcpt; /* P_RCPT: recipient index */
};

/* Where the sending of a transaction stands (what to emit next). */
enum txn_step { STEP_RSET, STEP_MAIL, STEP_RCPT, STEP_DATA, STEP_DONE };

/* A growable byte buffer.  Invariant: len <= cap; data NULL iff cap == 0. */
struct buf {
    char *data;
    size_t len;
    size_t cap;
};

/*
 * One connection.  Invariants:
 *  - state changes only through client_enter();
 *  - at most one send in flight (send_op); `sending` is the kernel's while
 *    it is busy, unless send_direct (then the message's own bytes are);
 *  - msg != NULL exactly in CL_TXN and CL_MSG_REFUSED;
 *  - pend[pend_head..pend_tail) are the commands sent (or in `out`) whose
 *    replies have not come yet, in order;
 *  - the struct is freed only in CL_CLOSING with no op busy and depth 0.
 */
struct smtp_client {
    struct io_loop *loop;
    const struct smtp_client_ops *ops; /* the owner's callbacks */
    void *arg;
    enum cl_state state;
    char id[32];                  /* for logs */
    int fd;                       /* the socket, -1 before it exists */
    struct sockaddr_storage addr; /* the peer */
    socklen_t addr_len;
    struct sockaddr_storage src;  /* local address to bind */
    socklen_t src_len;            /* 0: none */

    /* Parameters (owned copies). */
    char *mx_host;
    char *helo_name;
    char *auth_user, *auth_pass;
    enum smtp_tls_policy policy;  /* effective (DANE without usable records: ENCRYPT) */
    struct tls_client *tls_ctx;   /* borrowed: the reactor's */
    struct tls_tlsa *tlsa;        /* data copied */
    size_t ntlsa;
    char *names[SMTP_CLIENT_NAMES_MAX];
    size_t nnames;
    bool tls_no_resume;
    unsigned ext_ignore;
    struct smtp_timeouts to;      /* defaults filled in */

    /* Ops and lifetime. */
    struct io_op connect_op, recv_op, send_op, timer_op, defer_op;
    int depth;                    /* our callbacks on the stack */
    bool closed_reported;         /* closed() ran, or the owner closed */
    uint64_t deadline_ns;         /* the current state's time limit */
    uint64_t timer_at_ns;         /* when the armed timer fires */
    struct smtp_result fail;      /* why the connection ends (CLOSING) */

    /* Input. */
    struct smtp_reply_parser parser;
    char *tls_in;                 /* plaintext out of TLS (CLIENT_TLS_READ) */

    /* Output. */
    struct buf out;               /* wire bytes waiting for the send slot */
    struct buf sending;           /* wire bytes in flight */
    bool send_direct;             /* the send in flight is message bytes */
    bool close_after_send;        /* close once everything is sent */
    struct tls_conn *tls;         /* NULL in clear text */
    bool tls_active;              /* handshake done */
    char *stage;                  /* TLS: short body runs gathered here */
    size_t stage_len;

    /* What the server offers. */
    struct smtp_ehlo ehlo;
    struct smtp_client_info info;

    /* The message in flight. */
    struct smtp_msg *msg;
    struct pend *pend;
    size_t pend_head, pend_tail, pend_cap;
    enum txn_step step;
    size_t next_rcpt;             /* STEP_RCPT: the next to emit */
    bool pipelining;              /* this transaction is pipelined */
    bool use_bdat;
    bool mail_ok;                 /* MAIL got 2xx */
    bool final_seen;              /* the reply to the end of the data came */
    bool bdat_abort;              /* a BDAT chunk failed: RSET after this chunk */
    bool rset_needed;             /* a transaction was left open: RSET first */
    bool txn_failed;              /* txn_fail holds why the transaction ended */
    struct smtp_result final;     /* the reply to the end of the data */
    struct smtp_result txn_fail;  /* what ended the transaction early */
    struct smtp_body body;        /* the cursor over [prefix][data] */
    bool body_active;             /* bytes remain for the current piece (DATA
                                     body, or the current BDAT chunk) */
    uint64_t chunk_left;          /* BDAT: bytes left in the current chunk */
    bool body_terminated;         /* DATA: ".\r\n" produced */
};

static unsigned long client_seq;
/* Clients alive on this thread (connected or not yet freed). */
static _Thread_local size_t clients_live;
/* Unstuffed bytes per BDAT chunk (a variable so that tests can make many). */
static uint64_t bdat_max = SMTP_CLIENT_BDAT_MAX;

static void client_flush(struct smtp_client *c);
static void client_fail(struct smtp_client *c, enum smtp_stage stage, enum smtp_outcome out,
                        const struct smtp_reply *r, const char *enh, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static void client_refuse(struct smtp_client *c, enum smtp_stage stage, enum smtp_outcome out,
                          const struct smtp_reply *r);
static void client_end(struct smtp_client *c, bool quit);
static void client_teardown(struct smtp_client *c);
static int put_cmd(struct smtp_client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void client_maybe_free(struct smtp_client *c);
static void txn_send_more(struct smtp_client *c);
static void txn_maybe_done(struct smtp_client *c);
static void on_recv(struct io_op *op, int res, const char *data, unsigned flags);

/* s escaped for a quoted logfmt value (a peer's words are always
 * escaped): '"' and '\\' get a backslash, control bytes become '?'.
 * Returns buf, cut to fit. */
static const char *esc(const char *s, size_t n, char *buf, size_t cap)
{
    size_t o = 0;

    for (size_t i = 0; i < n && s[i] != '\0' && o + 3 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\')
            buf[o++] = '\\';
        buf[o++] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
    }
    buf[o] = '\0';
    return buf;
}

const char *smtp_stage_name(enum smtp_stage st)
{
    static const char *const names[] = {
        "none", "connect", "greeting", "ehlo", "starttls", "tls", "tls-verify",
        "auth", "mail", "rcpt", "data", "rset", "quit", "idle",
    };

    return (unsigned)st < sizeof names / sizeof names[0] ? names[st] : "none";
}

/* ---- buffers ------------------------------------------------------------ */

static int buf_reserve(struct buf *b, size_t extra)
{
    size_t cap;
    char *p;

    if (b->len + extra <= b->cap)
        return 0;
    cap = b->cap ? b->cap : 1024;
    while (cap < b->len + extra)
        cap *= 2;
    p = realloc(b->data, cap);
    if (p == NULL)
        return -ENOMEM;
    b->data = p;
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

static void buf_free(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* Keep small buffers between messages; give big ones back when empty. */
static void buf_shrink(struct buf *b)
{
    if (b->len == 0 && b->cap > 2 * CLIENT_OUT_CHUNK)
        buf_free(b);
}

/* ---- state, timers ------------------------------------------------------ */

/* The time limit of the current state (see struct smtp_timeouts). */
static unsigned state_timeout(const struct smtp_client *c)
{
    switch (c->state) {
    case CL_CONNECTING:
        return c->to.connect;
    case CL_GREETING:
        return c->to.greeting;
    case CL_EHLO:
    case CL_HELO:
    case CL_AUTH:
        return c->to.helo;
    case CL_STARTTLS:
    case CL_TLS:
        return c->to.starttls;
    case CL_IDLE:
        return c->to.idle;
    case CL_QUIT:
        return c->to.quit;
    case CL_TXN:
        if (c->body_active)
            return c->to.data_xfer;
        if (c->pend_head < c->pend_tail) {
            switch (c->pend[c->pend_head].kind) {
            case P_RSET:
                return c->to.rset;
            case P_MAIL:
                return c->to.mail;
            case P_RCPT:
                return c->to.rcpt;
            case P_DATA:
                return c->to.data_init;
            case P_BDAT:
                return c->to.data_xfer;
            case P_BDAT_LAST:
            case P_DOT:
                return c->to.data_done;
            }
        }
        return c->to.data_xfer;
    default:
        return c->to.quit;
    }
}

/* What the client waits for, for a timeout's reason. */
static enum smtp_stage state_stage(const struct smtp_client *c)
{
    switch (c->state) {
    case CL_CONNECTING:
        return SMTP_STAGE_CONNECT;
    case CL_GREETING:
        return SMTP_STAGE_GREETING;
    case CL_EHLO:
    case CL_HELO:
        return SMTP_STAGE_EHLO;
    case CL_STARTTLS:
        return SMTP_STAGE_STARTTLS;
    case CL_TLS:
        return SMTP_STAGE_TLS;
    case CL_AUTH:
        return SMTP_STAGE_AUTH;
    case CL_TXN:
        if (!c->body_active && c->pend_head < c->pend_tail) {
            switch (c->pend[c->pend_head].kind) {
            case P_RSET:
                return SMTP_STAGE_RSET;
            case P_MAIL:
                return SMTP_STAGE_MAIL;
            case P_RCPT:
                return SMTP_STAGE_RCPT;
            default:
                return SMTP_STAGE_DATA;
            }
        }
        if (c->step == STEP_MAIL || c->step == STEP_RSET)
            return SMTP_STAGE_MAIL;
        if (c->step == STEP_RCPT)
            return SMTP_STAGE_RCPT;
        return SMTP_STAGE_DATA;
    case CL_QUIT:
        return SMTP_STAGE_QUIT;
    default:
        return SMTP_STAGE_IDLE;
    }
}

static void on_timer(struct io_op *op, int res, const char *data, unsigned flags);

/* Give the current state its full time limit from now (also on progress). */
static void deadline_reset(struct smtp_client *c)
{
    uint64_t now = io_loop_now(c->loop);

    if (c->state == CL_CLOSING)
        return;
    c->deadline_ns = now + MS(state_timeout(c));
    if (!io_op_busy(&c->timer_op)) {
        c->timer_at_ns = c->deadline_ns;
        if (io_timer_start(c->loop, &c->timer_op, state_timeout(c), on_timer) < 0)
            log_warnx("smtp_client=%s event=timer-failed", c->id);
    } else if (c->timer_at_ns > c->deadline_ns) {
        io_cancel(c->loop, &c->timer_op); /* re-armed, earlier, in on_timer */
    }
}

/* The only place the state changes, traced at debug level. */
static void client_enter(struct smtp_client *c, enum cl_state st)
{
    if (c->state == st)
        return;
    log_debug("smtp_client=%s state=%s->%s", c->id, state_names[c->state], state_names[st]);
    c->state = st;
    deadline_reset(c);
}

static void on_timer(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct smtp_client *c = op->owner;
    uint64_t now;

    c->depth++;
    if (c->state == CL_CLOSING) {
        if (res == 0 && c->close_after_send) {
            /* The last words (QUIT) did not go out in time: give up. */
            c->close_after_send = false;
            client_teardown(c);
        }
        goto out;
    }
    now = io_loop_now(c->loop);
    if (res == 0 && now >= c->deadline_ns) {
        enum smtp_stage st = state_stage(c);
        unsigned secs = (state_timeout(c) + 999) / 1000;

        if (c->state == CL_IDLE) {
            /* Nothing to deliver for a while: leave politely, quietly. */
            log_debug("smtp_client=%s event=idle-timeout", c->id);
            smtp_client_quit(c);
            goto out;
        }
        client_fail(c, st, SMTP_OUT_TEMP, NULL, "4.4.2", "timeout after %u s (%s)", secs,
                    state_names[c->state]);
        goto out;
    }
    /* Early (the deadline moved) or cancelled to be re-armed earlier. */
    c->timer_at_ns = c->deadline_ns;
    if (io_timer_start(c->loop, &c->timer_op,
                       c->deadline_ns > now ? (c->deadline_ns - now) / 1000000u + 1 : 0,
                       on_timer) < 0)
        client_fail(c, state_stage(c), SMTP_OUT_TEMP, NULL, "4.3.0", "cannot arm a timer");
out:
    c->depth--;
    client_maybe_free(c);
}

/* ---- results ------------------------------------------------------------ */

/* Fill r from a server reply at stage st (outcome from the reply class). */
static void result_from_reply(struct smtp_result *r, enum smtp_stage st, const struct smtp_reply *rep)
{
    size_t n = 0;

    r->stage = st;
    r->code = rep->code;
    r->outcome = rep->code < 400 ? SMTP_OUT_OK : rep->code < 500 ? SMTP_OUT_TEMP : SMTP_OUT_PERM;
    snprintf(r->enhanced, sizeof r->enhanced, "%s", rep->enhanced);
    for (size_t i = 0; i < rep->text_len && n + 1 < sizeof r->text; i++)
        r->text[n++] = rep->text[i] == '\n' ? ' ' : rep->text[i];
    r->text[n] = '\0';
}

__attribute__((format(printf, 5, 6))) static void
result_local(struct smtp_result *r, enum smtp_stage st, enum smtp_outcome out, const char *enh,
             const char *fmt, ...)
{
    va_list ap;

    r->stage = st;
    r->outcome = out;
    r->code = 0;
    snprintf(r->enhanced, sizeof r->enhanced, "%s", enh ? enh : "");
    va_start(ap, fmt);
    vsnprintf(r->text, sizeof r->text, fmt, ap);
    va_end(ap);
    for (char *p = r->text; *p; p++) /* our reasons may quote the peer */
        if (*p == '\r' || *p == '\n')
            *p = ' ';
}

/* ---- closing ------------------------------------------------------------ */

static void client_free(struct smtp_client *c)
{
    log_debug("smtp_client=%s event=freed", c->id);
    if (c->tls != NULL)
        tls_conn_free(c->tls);
    if (c->fd >= 0)
        close(c->fd);
    buf_free(&c->out);
    buf_free(&c->sending);
    free(c->stage);
    free(c->tls_in);
    free(c->pend);
    free(c->mx_host);
    free(c->helo_name);
    if (c->auth_pass != NULL)
        sodium_memzero(c->auth_pass, strlen(c->auth_pass));
    free(c->auth_pass);
    free(c->auth_user);
    for (size_t i = 0; i < c->ntlsa; i++)
        free((void *)c->tlsa[i].data);
    free(c->tlsa);
    for (size_t i = 0; i < c->nnames; i++)
        free(c->names[i]);
    free(c);
    clients_live--;
}

/* Free when closing, nothing is in flight and no callback of ours runs. */
static void client_maybe_free(struct smtp_client *c)
{
    if (c->state != CL_CLOSING || c->depth > 0 || c->close_after_send)
        return;
    if (io_op_busy(&c->connect_op) || io_op_busy(&c->recv_op) || io_op_busy(&c->send_op) ||
        io_op_busy(&c->timer_op) || io_op_busy(&c->defer_op))
        return;
    client_free(c);
}

/* Stop everything: the kernel gives the buffers back through the final
 * callbacks, and client_maybe_free() frees after the last. */
static void client_teardown(struct smtp_client *c)
{
    c->close_after_send = false;
    if (c->fd >= 0)
        shutdown(c->fd, SHUT_RDWR); /* in-flight recv and send finish */
    io_cancel(c->loop, &c->connect_op);
    io_cancel(c->loop, &c->recv_op);
    io_cancel(c->loop, &c->send_op);
    io_cancel(c->loop, &c->timer_op);
    io_cancel(c->loop, &c->defer_op);
}

/* Report the end of the connection to the owner (once). */
static void report_closed(struct smtp_client *c)
{
    if (c->closed_reported)
        return;
    c->closed_reported = true;
    if (c->ops->closed != NULL)
        c->ops->closed(c, &c->fail, c->arg);
}

/* ---- the message's end -------------------------------------------------- */

/* Give every recipient its outcome and the message its result, then hand
 * the message back (done()).  The client is idle afterwards unless it is
 * closing. */
static void msg_finish(struct smtp_client *c)
{
    struct smtp_msg *m = c->msg;
    bool first_refusal = true;

    if (m == NULL)
        return;
    for (size_t i = 0; i < m->nrcpts; i++) {
        struct smtp_rcpt *r = &m->rcpts[i];

        if (r->result.outcome == SMTP_OUT_OK && r->result.stage == SMTP_STAGE_RCPT) {
            /* Accepted at RCPT: the end of the data decides. */
            if (c->final_seen)
                r->result = c->final;
            else if (c->txn_failed)
                r->result = c->txn_fail;
            else
                result_local(&r->result, SMTP_STAGE_DATA, SMTP_OUT_TEMP, "4.4.2",
                             "transaction ended without a reply to the data");
        } else if (r->result.outcome == SMTP_OUT_NONE) {
            if (c->txn_failed)
                r->result = c->txn_fail;
            else
                result_local(&r->result, SMTP_STAGE_RCPT, SMTP_OUT_TEMP, "4.4.2",
                             "recipient not tried");
        }
    }
    if (c->final_seen && m->naccepted > 0) {
        m->result = c->final;
    } else if (c->txn_failed) {
        m->result = c->txn_fail;
    } else {
        /* No recipient accepted: the first refusal stands for the message. */
        for (size_t i = 0; i < m->nrcpts && first_refusal; i++) {
            if (m->rcpts[i].result.outcome != SMTP_OUT_OK) {
                m->result = m->rcpts[i].result;
                first_refusal = false;
            }
        }
        if (first_refusal)
            result_local(&m->result, SMTP_STAGE_RCPT, SMTP_OUT_TEMP, "4.4.2", "no recipient");
    }
    /* RFC 5321 4.1.1.5: a transaction left open must be reset before the
     * next MAIL (a refused MAIL opened none; a message refused up front
     * leaves the need as it was). */
    if (c->mail_ok && !(c->final_seen && c->final.outcome == SMTP_OUT_OK))
        c->rset_needed = true;
    c->msg = NULL;
    c->body_active = false;
    c->info.messages++;
    buf_shrink(&c->out);
    buf_shrink(&c->sending);
    if (c->state != CL_CLOSING)
        client_enter(c, CL_IDLE);
    if (c->ops->done != NULL)
        c->ops->done(c, m, c->arg);
}

/*
 * End the connection with c->fail as the reason: a message in flight gets
 * it (done()), then the owner hears of the end (closed()).  With quit, a
 * QUIT goes out first (a polite exit after a refusal, RFC 5321 4.1.1.10),
 * within the quit time limit.
 */
static void client_end(struct smtp_client *c, bool quit)
{
    enum cl_state was = c->state;
    struct smtp_msg *m = c->msg;

    if (was == CL_CLOSING)
        return;
    if (log_get_level() >= LOG_LVL_DEBUG) {
        char e[2 * SMTP_RESULT_TEXT_MAX + 1];
        log_debug("smtp_client=%s event=closing stage=%s outcome=%d text=\"%s\"", c->id,
                  smtp_stage_name(c->fail.stage), c->fail.outcome,
                  esc(c->fail.text, sizeof c->fail.text, e, sizeof e));
    }
    if (m != NULL) {
        if (!c->txn_failed) {
            /* A message sent in full whose reply never came may have been
             * delivered: temporary all the same (RFC 5321 6.1). */
            c->txn_fail = c->fail;
            if (c->txn_fail.outcome == SMTP_OUT_OK)
                c->txn_fail.outcome = SMTP_OUT_TEMP;
            c->txn_failed = true;
        }
        c->final_seen = c->final_seen && was == CL_TXN;
    }
    /* Never QUIT in the middle of a transaction: a body may be half sent. */
    if (quit && was != CL_CONNECTING && was != CL_TLS && was != CL_TXN && c->fd >= 0 &&
        put_cmd(c, "QUIT") == 0) {
        client_enter(c, CL_CLOSING);
        c->close_after_send = true;
        io_cancel(c->loop, &c->recv_op);
        client_flush(c);
        if (c->close_after_send && !io_op_busy(&c->timer_op))
            (void)io_timer_start(c->loop, &c->timer_op, c->to.quit, on_timer);
    } else {
        client_enter(c, CL_CLOSING);
        client_teardown(c);
    }
    c->depth++;
    if (m != NULL)
        msg_finish(c);
    report_closed(c);
    c->depth--;
}

/* c->fail from a reply that ended the connection; out replaces the
 * reply's own outcome when that is OK (a reply that does not fit the
 * dialogue) or when the caller softens it to TEMP. */
static void fail_from_reply(struct smtp_client *c, enum smtp_stage stage, enum smtp_outcome out,
                            const struct smtp_reply *r)
{
    result_from_reply(&c->fail, stage, r);
    if (c->fail.outcome == SMTP_OUT_OK || out == SMTP_OUT_TEMP)
        c->fail.outcome = out;
}

/* The connection failed: end it at once (no QUIT).  r is the server's
 * reply that decided, or NULL (then enh and fmt say why). */
static void client_fail(struct smtp_client *c, enum smtp_stage stage, enum smtp_outcome out,
                        const struct smtp_reply *r, const char *enh, const char *fmt, ...)
{
    char text[SMTP_RESULT_TEXT_MAX];
    va_list ap;

    if (c->state == CL_CLOSING)
        return;
    if (r != NULL) {
        fail_from_reply(c, stage, out, r);
    } else {
        va_start(ap, fmt);
        vsnprintf(text, sizeof text, fmt, ap);
        va_end(ap);
        result_local(&c->fail, stage, out, enh, "%s", text);
    }
    client_end(c, false);
}

/* The server refused what the connection needs (r): QUIT, then end. */
static void client_refuse(struct smtp_client *c, enum smtp_stage stage, enum smtp_outcome out,
                          const struct smtp_reply *r)
{
    if (c->state == CL_CLOSING)
        return;
    fail_from_reply(c, stage, out, r);
    client_end(c, true);
}

/* Our own reason to give up on a working connection: QUIT, then end. */
__attribute__((format(printf, 4, 5))) static void
client_refuse_why(struct smtp_client *c, enum smtp_stage stage, const char *enh, const char *fmt,
                  ...)
{
    char text[SMTP_RESULT_TEXT_MAX];
    va_list ap;

    if (c->state == CL_CLOSING)
        return;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    result_local(&c->fail, stage, SMTP_OUT_TEMP, enh, "%s", text);
    client_end(c, true);
}

/* ---- output ------------------------------------------------------------- */

static void on_send(struct io_op *op, int res, const char *data, unsigned flags);

/* TLS: seal what the stage gathered into records.  The stage always holds
 * the tail of the plaintext stream, so it can be sealed at any time. */
static int stage_seal(struct smtp_client *c)
{
    if (c->stage_len == 0)
        return 0;
    if (tls_conn_write(c->tls, c->stage, c->stage_len) < 0)
        return -EIO;
    c->stage_len = 0;
    return 0;
}

/*
 * Queue plaintext: into `out` in clear text; with TLS into the stage, so
 * that the commands of one flight and the body that follows them leave in
 * one record (each record costs a seal here and an open at the peer), or
 * straight into the record layer when it does not fit.
 */
static int put_bytes(struct smtp_client *c, const void *p, size_t len)
{
    if (c->tls_active) {
        if (c->stage_len + len <= CLIENT_TLS_STAGE) {
            memcpy(c->stage + c->stage_len, p, len);
            c->stage_len += len;
            return 0;
        }
        if (stage_seal(c) < 0 || tls_conn_write(c->tls, p, len) < 0)
            return -EIO;
        return 0;
    }
    return buf_append(&c->out, p, len);
}

/* Queue one command line (CRLF added). */
__attribute__((format(printf, 2, 3))) static int put_cmd(struct smtp_client *c, const char *fmt,
                                                         ...)
{
    char line[CLIENT_CMD_MAX];
    va_list ap;
    int n, rc;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof line - 2, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line - 2)
        return -E2BIG;
    if (log_get_level() >= LOG_LVL_DEBUG) {
        char e[2 * CLIENT_CMD_MAX + 1];
        /* AUTH: the mechanism only, never the credentials. */
        log_debug("smtp_client=%s cmd=\"%s\"", c->id,
                  esc(line, strncmp(line, "AUTH ", 5) == 0 ? 10 : (size_t)n, e, sizeof e));
    }
    line[n++] = '\r';
    line[n++] = '\n';
    if (c->tls_active && strncmp(line, "AUTH ", 5) == 0) {
        /* Credentials are sealed at once and never copied to the stage. */
        rc = stage_seal(c) < 0 || tls_conn_write(c->tls, line, (size_t)n) < 0 ? -EIO : 0;
    } else {
        rc = put_bytes(c, line, (size_t)n);
    }
    sodium_memzero(line, (size_t)n); /* AUTH lines carry credentials */
    return rc;
}

/* Move TLS ciphertext into `out`. */
static int take_tls_out(struct smtp_client *c)
{
    size_t n;

    if (c->tls_active && stage_seal(c) < 0)
        return -EIO;
    if (c->tls == NULL || (n = tls_conn_pending_out(c->tls)) == 0)
        return 0;
    if (buf_reserve(&c->out, n) < 0)
        return -ENOMEM;
    c->out.len += tls_conn_take_out(c->tls, c->out.data + c->out.len, n);
    return 0;
}

static int pend_push(struct smtp_client *c, enum pend_kind kind, size_t rcpt);

/* Move the cursor past n bytes of a run (and the chunk's count). */
static void body_advance(struct smtp_client *c, const char *p, size_t n)
{
    smtp_body_advance(&c->body, p, n);
    if (c->use_bdat)
        c->chunk_left -= n;
}

/* Queue the command of the next BDAT chunk and point the cursor at it. */
static int bdat_next_chunk(struct smtp_client *c)
{
    bool last;
    uint64_t n = smtp_body_count(&c->body, bdat_max, &last);
    int rc;

    rc = put_cmd(c, "BDAT %llu%s", (unsigned long long)n, last ? " LAST" : "");
    if (rc < 0)
        return rc;
    c->chunk_left = n;
    c->body_active = true;
    return pend_push(c, last ? P_BDAT_LAST : P_BDAT, 0);
}

/* A BDAT chunk's bytes are all produced: the next chunk, when pipelined
 * and the chunks so far went well. */
static int body_piece_done(struct smtp_client *c)
{
    c->body_active = false;
    if (!c->use_bdat)
        return 0;
    if (c->pend_tail > 0 && c->pend[c->pend_tail - 1].kind == P_BDAT_LAST)
        return 0;
    if (c->bdat_abort) {
        /* A chunk was refused: end the transaction at a chunk boundary. */
        int rc = put_cmd(c, "RSET");
        return rc < 0 ? rc : pend_push(c, P_RSET, 0);
    }
    if (c->pipelining)
        return bdat_next_chunk(c);
    return 0; /* the next chunk waits for this one's reply */
}

/*
 * Produce body output into `out` (and for TLS through the record layer),
 * or start a send straight from the message.  Returns 1 when a direct send
 * was started, 0 otherwise, or -errno.
 */
static int body_fill(struct smtp_client *c)
{
    struct smtp_msg *m = c->msg;
    size_t produced = 0;
    int rc;

    while (c->body_active && produced < CLIENT_OUT_CHUNK) {
        size_t max = CLIENT_OUT_CHUNK - produced, off, n;
        const char *p;

        if (c->use_bdat && c->chunk_left < max)
            max = (size_t)c->chunk_left;
        n = smtp_body_run(&c->body, max, &p, &off);
        if (n == 0) {
            if (!c->use_bdat && !c->body_terminated) {
                /* RFC 5321 4.1.1.4: CRLF "." CRLF; the stored form ends with
                 * CRLF unless it is empty or broken. */
                bool crlf = smtp_body_ends_line(&c->body);
                const char *end = crlf ? ".\r\n" : "\r\n.\r\n";
                size_t elen = crlf ? 3 : 5;

                c->body_terminated = true;
                rc = put_bytes(c, end, elen); /* with TLS: the body's record */
                if (rc < 0)
                    return rc;
            }
            rc = body_piece_done(c);
            if (rc < 0)
                return rc;
            continue; /* a next BDAT chunk may go on at once */
        }
        if (c->tls_active) {
            if (n >= CLIENT_TLS_DIRECT_MIN || c->stage_len + n > CLIENT_TLS_STAGE) {
                if (stage_seal(c) < 0)
                    return -EIO;
            }
            if (n >= CLIENT_TLS_DIRECT_MIN) {
                if (tls_conn_write(c->tls, p, n) < 0) /* records straight from the map */
                    return -EIO;
            } else {
                memcpy(c->stage + c->stage_len, p, n);
                c->stage_len += n;
            }
        } else if (n >= CLIENT_DIRECT_MIN) {
            if (c->out.len > 0)
                break; /* what is queued goes first; this run next time */
            c->send_direct = true;
            if (off != SIZE_MAX && m->fd >= 0)
                rc = io_sendfile(c->loop, &c->send_op, c->fd, m->fd, m->off + off, n, on_send);
            else
                rc = io_send(c->loop, &c->send_op, c->fd, p, n, on_send);
            if (rc < 0) {
                c->send_direct = false;
                return rc;
            }
            body_advance(c, p, n);
            return 1;
        } else {
            rc = buf_append(&c->out, p, n);
            if (rc < 0)
                return rc;
        }
        body_advance(c, p, n);
        produced += n;
    }
    return 0; /* with TLS the stage is sealed by take_tls_out */
}

/* Start the next send: queued bytes first, then more of the body. */
static void client_flush(struct smtp_client *c)
{
    struct buf tmp;
    int rc;

    if (io_op_busy(&c->send_op))
        return;
    if (c->state == CL_CLOSING && !c->close_after_send)
        return;
    /* The body first, then the records: with TLS the staged commands and the
     * body's first bytes share a record. */
    if (c->out.len < CLIENT_OUT_CHUNK && c->msg != NULL && c->body_active && c->state == CL_TXN) {
        rc = body_fill(c);
        if (rc > 0)
            return; /* a direct send is in flight */
        if (rc < 0) {
            client_fail(c, SMTP_STAGE_DATA, SMTP_OUT_TEMP, NULL, "4.3.0",
                        "cannot send the message: %s", strerror(-rc));
            return;
        }
    }
    if ((rc = take_tls_out(c)) < 0)
        goto fail;
    if (c->out.len == 0) {
        if (c->close_after_send) {
            c->close_after_send = false;
            client_teardown(c);
        }
        return;
    }
    tmp = c->sending;
    c->sending = c->out;
    c->out = tmp;
    c->out.len = 0;
    rc = io_send(c->loop, &c->send_op, c->fd, c->sending.data, c->sending.len, on_send);
    if (rc < 0) {
        c->sending.len = 0;
        client_fail(c, state_stage(c), SMTP_OUT_TEMP, NULL, "4.3.0", "send failed: %s",
                    strerror(-rc));
    }
    return;
fail:
    client_fail(c, state_stage(c), SMTP_OUT_TEMP, NULL, "4.3.0", "%s",
                rc == -ENOMEM ? "out of memory" : "TLS write failed");
}

static void on_send(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct smtp_client *c = op->owner;

    c->depth++;
    c->sending.len = 0;
    c->send_direct = false;
    if (c->state == CL_CLOSING && !c->close_after_send)
        goto out;
    if (res < 0) {
        c->close_after_send = false;
        if (c->state == CL_CLOSING) {
            client_teardown(c);
            goto out;
        }
        client_fail(c, state_stage(c), SMTP_OUT_TEMP, NULL, "4.4.2",
                    "lost connection while sending: %s", strerror(-res));
        goto out;
    }
    if (c->state == CL_TXN)
        deadline_reset(c); /* progress; after the body's last bytes: data_done */
    client_flush(c);
out:
    c->depth--;
    client_maybe_free(c);
}

/* ---- the dialogue -------------------------------------------------------- */

static void send_ehlo(struct smtp_client *c)
{
    if (put_cmd(c, "EHLO %s", c->helo_name) < 0) {
        client_fail(c, SMTP_STAGE_EHLO, SMTP_OUT_TEMP, NULL, "4.3.0", "cannot queue EHLO");
        return;
    }
    client_enter(c, CL_EHLO);
}

static bool tls_required(const struct smtp_client *c)
{
    return c->policy == SMTP_TLS_ENCRYPT || c->policy == SMTP_TLS_DANE ||
           c->policy == SMTP_TLS_VERIFY;
}

static void become_ready(struct smtp_client *c)
{
    client_enter(c, CL_IDLE);
    log_debug("smtp_client=%s event=ready ext=0x%x tls=%d", c->id, c->ehlo.ext, c->tls_active);
    if (c->ops->ready != NULL)
        c->ops->ready(c, c->arg);
}

/* RFC 4954 4, RFC 4616: AUTH PLAIN with the initial response. */
static void send_auth(struct smtp_client *c)
{
    size_t ul = strlen(c->auth_user), pl = strlen(c->auth_pass), rawlen = ul + pl + 2;
    size_t b64len = sodium_base64_ENCODED_LEN(rawlen, sodium_base64_VARIANT_ORIGINAL);
    unsigned char *raw = malloc(rawlen);
    char *b64 = malloc(b64len);
    int rc = -ENOMEM;

    if (raw != NULL && b64 != NULL) {
        raw[0] = '\0';
        memcpy(raw + 1, c->auth_user, ul);
        raw[1 + ul] = '\0';
        memcpy(raw + 2 + ul, c->auth_pass, pl);
        sodium_bin2base64(b64, b64len, raw, rawlen, sodium_base64_VARIANT_ORIGINAL);
        rc = put_cmd(c, "AUTH PLAIN %s", b64);
        sodium_memzero(raw, rawlen);
        sodium_memzero(b64, b64len);
    }
    free(raw);
    free(b64);
    if (rc < 0) {
        client_fail(c, SMTP_STAGE_AUTH, SMTP_OUT_TEMP, NULL, "4.3.0", "cannot queue AUTH");
        return;
    }
    client_enter(c, CL_AUTH);
}

/* After EHLO/HELO: STARTTLS, AUTH, or ready, as the policy says. */
static void after_hello(struct smtp_client *c)
{
    if (!c->tls_active && c->policy != SMTP_TLS_NONE && (c->ehlo.ext & SMTP_EXT_STARTTLS)) {
        if (put_cmd(c, "STARTTLS") < 0) {
            client_fail(c, SMTP_STAGE_STARTTLS, SMTP_OUT_TEMP, NULL, "4.3.0",
                        "cannot queue STARTTLS");
            return;
        }
        client_enter(c, CL_STARTTLS);
        return;
    }
    if (!c->tls_active && tls_required(c)) {
        /* RFC 7672 2.2: never in clear text when TLS is required. */
        client_refuse_why(c, SMTP_STAGE_STARTTLS, "4.7.4",
                          "TLS is required but the server does not offer STARTTLS");
        return;
    }
    if (c->auth_user != NULL) {
        if (!c->tls_active) {
            client_refuse_why(c, SMTP_STAGE_AUTH, "4.7.0",
                              "credentials are only sent over TLS, and TLS is not up");
            return;
        }
        if (!(c->ehlo.ext & SMTP_EXT_AUTH) || !(c->ehlo.auth & SMTP_AUTH_PLAIN)) {
            client_refuse_why(c, SMTP_STAGE_AUTH, "4.7.0", "the server does not offer AUTH PLAIN");
            return;
        }
        send_auth(c);
        return;
    }
    become_ready(c);
}

static void tls_established(struct smtp_client *c)
{
    c->tls_active = true;
    c->info.tls = true;
    c->info.tls_version = tls_conn_version(c->tls);
    c->info.tls_cipher = tls_conn_cipher(c->tls);
    c->info.tls_resumed = tls_conn_resumed(c->tls);
    c->info.tls_verified = tls_conn_verified(c->tls);
    c->info.dane_match = tls_conn_dane_match(c->tls);
    c->info.dane_verified = c->info.dane_match != NULL;
    log_debug("smtp_client=%s event=tls version=%s cipher=%s resumed=%d verified=%d dane=%s",
              c->id, c->info.tls_version, c->info.tls_cipher, c->info.tls_resumed,
              c->info.tls_verified, c->info.dane_match ? c->info.dane_match : "-");
    /* RFC 3207 4.2: forget what the server said before TLS. */
    memset(&c->ehlo, 0, sizeof c->ehlo);
    c->info.ext = 0;
    c->info.size_limit = 0;
    send_ehlo(c);
}

static void tls_failed(struct smtp_client *c)
{
    bool verify = tls_conn_verify_failed(c->tls);
    char e[512];

    log_info("smtp_client=%s event=tls-failed mx=%s peer=%s verify=%d error=\"%s\"", c->id,
             c->mx_host, c->info.peer, verify,
             esc(tls_conn_error(c->tls), SIZE_MAX, e, sizeof e));
    (void)take_tls_out(c); /* the alert goes out before the close */
    client_fail(c, verify ? SMTP_STAGE_TLS_VERIFY : SMTP_STAGE_TLS, SMTP_OUT_TEMP, NULL,
                verify ? "4.7.5" : "4.7.0", "TLS %s failed: %s", verify ? "verification" : "handshake",
                tls_conn_error(c->tls));
}

static void start_tls(struct smtp_client *c)
{
    struct tls_conn_opts o = {
        .sni = c->mx_host,
        .session_key = c->tls_no_resume ? NULL : c->mx_host,
        .names = (const char *const *)c->names,
        .nnames = c->nnames,
    };
    int rc;

    switch (c->policy) {
    case SMTP_TLS_VERIFY:
        o.verify = TLS_VERIFY_PKIX;
        break;
    case SMTP_TLS_DANE:
        o.verify = TLS_VERIFY_DANE;
        o.tlsa = c->tlsa;
        o.ntlsa = c->ntlsa;
        break;
    default:
        o.verify = TLS_VERIFY_NONE;
        break;
    }
    c->tls = tls_conn_new_client_opts(c->tls_ctx, &o);
    if (c->tls == NULL) {
        client_fail(c, SMTP_STAGE_TLS, SMTP_OUT_TEMP, NULL, "4.3.0", "cannot start TLS");
        return;
    }
    c->tls_in = malloc(CLIENT_TLS_READ);
    c->stage = malloc(CLIENT_TLS_STAGE);
    if (c->tls_in == NULL || c->stage == NULL) {
        client_fail(c, SMTP_STAGE_TLS, SMTP_OUT_TEMP, NULL, "4.3.0", "out of memory");
        return;
    }
    client_enter(c, CL_TLS);
    rc = tls_conn_handshake(c->tls); /* the ClientHello */
    if (rc == TLS_ERR)
        tls_failed(c);
}

/* ---- the transaction ----------------------------------------------------- */

/* RFC 5321 4.1.2: no CR, LF, NUL or angle brackets inside a path; ASCII
 * unless SMTPUTF8.  *utf8 is set when a byte >= 0x80 is met. */
static bool path_ok(const char *s, bool *utf8)
{
    size_t n = 0;

    for (; *s; s++, n++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '\r' || ch == '\n' || ch == '<' || ch == '>' || ch < 0x20)
            return false;
        if (ch >= 0x80)
            *utf8 = true;
    }
    return n <= 1000;
}

/* An ESMTP parameter value: printable, no space (RFC 5321 4.1.2 esmtp-value). */
static bool param_ok(const char *s)
{
    if (s == NULL)
        return true;
    if (*s == '\0')
        return false;
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f || *s == '=')
            return false;
    return true;
}

static int pend_push(struct smtp_client *c, enum pend_kind kind, size_t rcpt)
{
    if (c->pend_tail == c->pend_cap) {
        size_t cap = c->pend_cap * 2 + 8;
        struct pend *np = realloc(c->pend, cap * sizeof *np);
        if (np == NULL)
            return -ENOMEM;
        c->pend = np;
        c->pend_cap = cap;
    }
    c->pend[c->pend_tail++] = (struct pend){.kind = kind, .rcpt = rcpt};
    return 0;
}

/* The MAIL command with its parameters (RFC 1870, 6152, 6531, 3461). */
static int put_mail(struct smtp_client *c)
{
    struct smtp_msg *m = c->msg;
    char params[600];
    size_t n = 0;

    params[0] = '\0';
    if (c->ehlo.ext & SMTP_EXT_SIZE)
        n += (size_t)snprintf(params + n, sizeof params - n, " SIZE=%zu", m->prefix_len + m->len);
    if ((m->flags & SMTP_MSG_8BITMIME) && (c->ehlo.ext & SMTP_EXT_8BITMIME))
        n += (size_t)snprintf(params + n, sizeof params - n, " BODY=8BITMIME");
    if ((m->flags & SMTP_MSG_SMTPUTF8) && (c->ehlo.ext & SMTP_EXT_SMTPUTF8))
        n += (size_t)snprintf(params + n, sizeof params - n, " SMTPUTF8");
    if (c->ehlo.ext & SMTP_EXT_DSN) {
        if (m->dsn_ret != NULL)
            n += (size_t)snprintf(params + n, sizeof params - n, " RET=%s", m->dsn_ret);
        if (m->dsn_envid != NULL && n < sizeof params)
            n += (size_t)snprintf(params + n, sizeof params - n, " ENVID=%s", m->dsn_envid);
    }
    if (n >= sizeof params)
        return -E2BIG;
    return put_cmd(c, "MAIL FROM:<%s>%s", m->sender, params);
}

static int put_rcpt(struct smtp_client *c, const struct smtp_rcpt *r)
{
    char params[600];
    size_t n = 0;

    params[0] = '\0';
    if (c->ehlo.ext & SMTP_EXT_DSN) {
        if (r->notify != NULL)
            n += (size_t)snprintf(params + n, sizeof params - n, " NOTIFY=%s", r->notify);
        if (r->orcpt != NULL && n < sizeof params)
            n += (size_t)snprintf(params + n, sizeof params - n, " ORCPT=%s", r->orcpt);
    }
    if (n >= sizeof params)
        return -E2BIG;
    return put_cmd(c, "RCPT TO:<%s>%s", r->addr, params);
}

/* Start the body after DATA's 354 (or with the first BDAT). */
static void body_start(struct smtp_client *c)
{
    struct smtp_msg *m = c->msg;

    smtp_body_init(&c->body, m->prefix, m->prefix_len, m->data, m->len, c->use_bdat);
    c->body_active = true;
    c->chunk_left = 0;
    c->body_terminated = false; /* the stage may hold this flight's commands: kept */
}

/*
 * Emit what the transaction can send now: with PIPELINING everything up to
 * DATA or the first BDAT chunk (RFC 2920 3.1: DATA and BDAT end a group);
 * without, one command and only when no reply is awaited.
 */
static void txn_send_more(struct smtp_client *c)
{
    struct smtp_msg *m = c->msg;
    int rc = 0;

    while (c->state == CL_TXN && c->step != STEP_DONE &&
           (c->pipelining || c->pend_head == c->pend_tail)) {
        switch (c->step) {
        case STEP_RSET:
            rc = put_cmd(c, "RSET");
            if (rc == 0)
                rc = pend_push(c, P_RSET, 0);
            c->rset_needed = false;
            c->step = STEP_MAIL;
            break;
        case STEP_MAIL:
            rc = put_mail(c);
            if (rc == 0)
                rc = pend_push(c, P_MAIL, 0);
            c->step = STEP_RCPT;
            c->next_rcpt = 0;
            break;
        case STEP_RCPT:
            if (!c->pipelining && !c->mail_ok) {
                c->step = STEP_DONE; /* MAIL refused */
                break;
            }
            while (c->next_rcpt < m->nrcpts &&
                   m->rcpts[c->next_rcpt].result.outcome != SMTP_OUT_NONE)
                c->next_rcpt++; /* refused locally (bad address) */
            if (c->next_rcpt >= m->nrcpts) {
                c->step = STEP_DATA;
                break;
            }
            rc = put_rcpt(c, &m->rcpts[c->next_rcpt]);
            if (rc == 0)
                rc = pend_push(c, P_RCPT, c->next_rcpt);
            c->next_rcpt++;
            break;
        case STEP_DATA:
            if (!c->pipelining && (!c->mail_ok || m->naccepted == 0)) {
                c->step = STEP_DONE; /* nobody to deliver to */
                break;
            }
            c->step = STEP_DONE;
            if (c->use_bdat) {
                body_start(c);
                rc = bdat_next_chunk(c);
            } else {
                rc = put_cmd(c, "DATA");
                if (rc == 0)
                    rc = pend_push(c, P_DATA, 0);
            }
            break;
        case STEP_DONE:
            break;
        }
        if (rc < 0) {
            client_fail(c, state_stage(c), SMTP_OUT_TEMP, NULL, "4.3.0",
                        "cannot queue a command: %s", strerror(-rc));
            return;
        }
    }
    if (c->state == CL_TXN)
        deadline_reset(c);
    client_flush(c);
}

/* The message is over when nothing is left to send or to hear. */
static void txn_maybe_done(struct smtp_client *c)
{
    if (c->state != CL_TXN || c->step != STEP_DONE || c->body_active ||
        c->pend_head != c->pend_tail)
        return;
    msg_finish(c);
}

/* Fail the transaction (the connection stays) with a server reply or our
 * reason; the commands already sent still get their replies. */
static void txn_fail_reply(struct smtp_client *c, enum smtp_stage st, const struct smtp_reply *r)
{
    if (c->txn_failed)
        return;
    result_from_reply(&c->txn_fail, st, r);
    if (c->txn_fail.outcome == SMTP_OUT_OK)
        c->txn_fail.outcome = SMTP_OUT_TEMP; /* e.g. 250 to DATA: nonsense */
    c->txn_failed = true;
}

/* A reply for the command at the head of the queue. */
static void txn_reply(struct smtp_client *c, const struct smtp_reply *r)
{
    struct smtp_msg *m = c->msg;
    struct pend p;
    int cls = smtp_reply_class(r->code);

    if (c->pend_head == c->pend_tail) {
        client_fail(c, SMTP_STAGE_DATA, SMTP_OUT_TEMP, r, NULL, NULL);
        return;
    }
    p = c->pend[c->pend_head++];
    if (r->code == 421 && p.kind != P_DOT && p.kind != P_BDAT_LAST) {
        /* RFC 5321 3.8: the server is going away. */
        client_fail(c, state_stage(c), SMTP_OUT_TEMP, r, NULL, NULL);
        return;
    }
    switch (p.kind) {
    case P_RSET:
        if (cls != 2) {
            client_fail(c, SMTP_STAGE_RSET, SMTP_OUT_TEMP, r, NULL, NULL);
            return;
        }
        c->mail_ok = false; /* whatever was open is reset */
        break;
    case P_MAIL:
        if (cls == 2)
            c->mail_ok = true;
        else
            txn_fail_reply(c, SMTP_STAGE_MAIL, r);
        break;
    case P_RCPT:
        if (c->mail_ok && cls == 2) {
            /* Accepted; the end of the data decides (msg_finish). */
            result_from_reply(&m->rcpts[p.rcpt].result, SMTP_STAGE_RCPT, r);
            m->naccepted++;
        } else if (c->mail_ok) {
            result_from_reply(&m->rcpts[p.rcpt].result, SMTP_STAGE_RCPT, r);
            if (m->rcpts[p.rcpt].result.outcome == SMTP_OUT_OK)
                m->rcpts[p.rcpt].result.outcome = SMTP_OUT_TEMP;
        }
        break;
    case P_DATA:
        if (r->code == 354) {
            /* RFC 2920 3.1: with no recipient the data is empty: just ".". */
            if (pend_push(c, P_DOT, 0) < 0) {
                client_fail(c, SMTP_STAGE_DATA, SMTP_OUT_TEMP, NULL, "4.3.0", "out of memory");
                return;
            }
            if (c->mail_ok && m->naccepted > 0) {
                body_start(c);
            } else if (put_bytes(c, ".\r\n", 3) < 0) {
                client_fail(c, SMTP_STAGE_DATA, SMTP_OUT_TEMP, NULL, "4.3.0", "cannot queue");
                return;
            }
        } else if (c->mail_ok && m->naccepted > 0) {
            txn_fail_reply(c, SMTP_STAGE_DATA, r);
        }
        break;
    case P_BDAT:
        if (cls == 2) {
            if (!c->pipelining && !c->bdat_abort && c->mail_ok && m->naccepted > 0 &&
                bdat_next_chunk(c) < 0) {
                client_fail(c, SMTP_STAGE_DATA, SMTP_OUT_TEMP, NULL, "4.3.0", "out of memory");
                return;
            }
        } else {
            if (c->mail_ok && m->naccepted > 0)
                txn_fail_reply(c, SMTP_STAGE_DATA, r);
            /* No further chunk goes: pipelined, an RSET ends the current
             * chunk (body_piece_done); else the next MAIL resets. */
            c->bdat_abort = true;
        }
        break;
    case P_BDAT_LAST:
    case P_DOT:
        if (c->mail_ok && m->naccepted > 0) {
            result_from_reply(&c->final, SMTP_STAGE_DATA, r);
            if (cls == 3)
                c->final.outcome = SMTP_OUT_TEMP; /* no 3xx ends data */
            c->final_seen = true;
        }
        break;
    }
    if (c->state != CL_TXN)
        return;
    if (!c->pipelining && c->pend_head == c->pend_tail)
        txn_send_more(c);
    else
        deadline_reset(c); /* progress */
    client_flush(c);
    txn_maybe_done(c);
}

/* ---- replies ------------------------------------------------------------- */

static void handle_reply(struct smtp_client *c, const struct smtp_reply *r)
{
    int cls = smtp_reply_class(r->code);

    log_debug("smtp_client=%s state=%s reply=%d", c->id, state_names[c->state], r->code);
    switch (c->state) {
    case CL_GREETING:
        if (r->code == 220) {
            send_ehlo(c);
            client_flush(c);
            return;
        }
        /* RFC 5321 3.1: 554 means no service here; 4xx try later. */
        client_refuse(c, SMTP_STAGE_GREETING, cls == 5 ? SMTP_OUT_PERM : SMTP_OUT_TEMP, r);
        return;
    case CL_EHLO:
        if (cls == 2) {
            smtp_ehlo_parse(r, &c->ehlo);
            c->ehlo.ext &= ~c->ext_ignore;
            c->info.ext = c->ehlo.ext;
            c->info.size_limit = (c->ehlo.ext & SMTP_EXT_SIZE) ? c->ehlo.size : 0;
            c->info.esmtp = true;
            after_hello(c);
            client_flush(c);
            return;
        }
        if (cls == 5 && !c->tls_active) {
            /* RFC 5321 3.2: an old server; HELO, without extensions. */
            if (put_cmd(c, "HELO %s", c->helo_name) < 0) {
                client_fail(c, SMTP_STAGE_EHLO, SMTP_OUT_TEMP, NULL, "4.3.0", "cannot queue");
                return;
            }
            client_enter(c, CL_HELO);
            client_flush(c);
            return;
        }
        client_refuse(c, SMTP_STAGE_EHLO, cls == 5 ? SMTP_OUT_PERM : SMTP_OUT_TEMP, r);
        return;
    case CL_HELO:
        if (cls == 2) {
            memset(&c->ehlo, 0, sizeof c->ehlo);
            c->info.ext = 0;
            c->info.esmtp = false;
            after_hello(c);
            client_flush(c);
            return;
        }
        client_refuse(c, SMTP_STAGE_EHLO, cls == 5 ? SMTP_OUT_PERM : SMTP_OUT_TEMP, r);
        return;
    case CL_STARTTLS:
        if (r->code == 220) {
            start_tls(c);
            client_flush(c);
            return;
        }
        if (r->code == 421) {
            client_fail(c, SMTP_STAGE_STARTTLS, SMTP_OUT_TEMP, r, NULL, NULL);
            return;
        }
        if (tls_required(c)) {
            client_refuse(c, SMTP_STAGE_STARTTLS, SMTP_OUT_TEMP, r);
            return;
        }
        /* Opportunistic: go on in clear text (RFC 3207 4.1). */
        c->ehlo.ext &= ~SMTP_EXT_STARTTLS;
        after_hello(c);
        client_flush(c);
        return;
    case CL_AUTH:
        if (r->code == 235) {
            become_ready(c);
            return;
        }
        /* Credentials refused: a configuration problem; keep the mail. */
        client_refuse(c, SMTP_STAGE_AUTH, SMTP_OUT_TEMP, r);
        return;
    case CL_TXN:
        txn_reply(c, r);
        return;
    case CL_QUIT:
        client_end(c, false);
        return;
    case CL_IDLE:
    case CL_MSG_REFUSED:
        /* Unasked: a 421 before a shutdown, or a confused server. */
        client_fail(c, SMTP_STAGE_IDLE, SMTP_OUT_TEMP, r, NULL, NULL);
        return;
    default:
        client_fail(c, state_stage(c), SMTP_OUT_TEMP, r, NULL, NULL);
        return;
    }
}

/* Parse plaintext from the server and act on every complete reply. */
static void client_input(struct smtp_client *c, const char *data, size_t len)
{
    while (len > 0 && c->state != CL_CLOSING && c->state != CL_TLS) {
        size_t used = 0;
        int rc = smtp_reply_parse(&c->parser, data, len, &used);

        if (rc < 0) {
            client_fail(c, state_stage(c), SMTP_OUT_TEMP, NULL, "4.5.0",
                        "malformed reply from the server (%s)",
                        rc == SMTP_R_ETOOLONG   ? "line too long"
                        : rc == SMTP_R_ETOOMANY ? "too many lines"
                                                : "syntax");
            return;
        }
        data += used;
        len -= used;
        if (rc == SMTP_R_AGAIN)
            return;
        if (c->state == CL_STARTTLS && c->parser.reply.code == 220 && len > 0) {
            /* Bytes after the 220 to STARTTLS would be taken as sent
             * under TLS: refuse them (command injection, RFC 3207 5). */
            client_fail(c, SMTP_STAGE_STARTTLS, SMTP_OUT_TEMP, NULL, "4.7.0",
                        "unexpected data after the STARTTLS reply");
            return;
        }
        handle_reply(c, &c->parser.reply);
    }
}

/* Ciphertext from the server: handshake, then plaintext to the parser. */
static void client_tls_input(struct smtp_client *c, const char *data, size_t len)
{
    if (tls_conn_feed(c->tls, data, len) < 0) {
        client_fail(c, SMTP_STAGE_TLS, SMTP_OUT_TEMP, NULL, "4.7.0", "TLS input failed");
        return;
    }
    if (c->state == CL_TLS) {
        int rc = tls_conn_handshake(c->tls);
        if (rc == TLS_ERR) {
            tls_failed(c);
            return;
        }
        if (rc == TLS_AGAIN)
            return;
        tls_established(c);
    }
    while (c->state != CL_CLOSING) {
        ssize_t n = tls_conn_read(c->tls, c->tls_in, CLIENT_TLS_READ);

        if (n > 0) {
            client_input(c, c->tls_in, (size_t)n);
            continue;
        }
        if (n == TLS_AGAIN)
            return;
        if (n == TLS_CLOSED && c->state == CL_QUIT) {
            client_end(c, false);
            return;
        }
        client_fail(c, state_stage(c), SMTP_OUT_TEMP, NULL, "4.4.2", "TLS: %s",
                    n == TLS_CLOSED ? "the server closed the session" : tls_conn_error(c->tls));
        return;
    }
}

static void on_recv(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct smtp_client *c = op->owner;

    c->depth++;
    if (c->state == CL_CLOSING)
        goto out;
    if (res <= 0) {
        if (c->state == CL_QUIT) {
            client_end(c, false); /* the server closed after QUIT: fine */
        } else {
            client_fail(c, state_stage(c), SMTP_OUT_TEMP, NULL, "4.4.2",
                        res == 0 ? "connection closed by the server"
                                 : "connection lost: %s",
                        res == 0 ? "" : strerror(-res));
        }
        goto out;
    }
    if (c->tls != NULL)
        client_tls_input(c, data, (size_t)res);
    else
        client_input(c, data, (size_t)res);
    if (c->state != CL_CLOSING)
        client_flush(c);
    if (!(flags & IO_F_MORE) && c->state != CL_CLOSING &&
        io_recv_start(c->loop, &c->recv_op, c->fd, on_recv) < 0)
        client_fail(c, state_stage(c), SMTP_OUT_TEMP, NULL, "4.3.0", "cannot re-arm recv");
out:
    c->depth--;
    client_maybe_free(c);
}

/* ---- connecting ---------------------------------------------------------- */

static void format_peer(struct smtp_client *c)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;

    if (c->addr.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&c->addr;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        port = ntohs(a->sin_port);
        snprintf(c->info.peer, sizeof c->info.peer, "%s:%d", host, port);
    } else if (c->addr.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&c->addr;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        port = ntohs(a->sin6_port);
        snprintf(c->info.peer, sizeof c->info.peer, "[%s]:%d", host, port);
    } else {
        snprintf(c->info.peer, sizeof c->info.peer, "?");
    }
}

static void on_connect(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct smtp_client *c = op->owner;

    c->depth++;
    if (c->state == CL_CLOSING)
        goto out;
    if (res < 0) {
        client_fail(c, SMTP_STAGE_CONNECT, SMTP_OUT_TEMP, NULL, "4.4.1", "connect to %s: %s",
                    c->info.peer, strerror(-res));
        goto out;
    }
    log_debug("smtp_client=%s event=connected peer=%s", c->id, c->info.peer);
    client_enter(c, CL_GREETING);
    if (io_recv_start(c->loop, &c->recv_op, c->fd, on_recv) < 0)
        client_fail(c, SMTP_STAGE_CONNECT, SMTP_OUT_TEMP, NULL, "4.3.0", "cannot start recv");
out:
    c->depth--;
    client_maybe_free(c);
}

/* A failure known inside smtp_client_connect (no socket): reported on the
 * next turn, through closed(). */
static void on_connect_failed(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct smtp_client *c = op->owner;

    c->depth++;
    if (c->state != CL_CLOSING)
        client_fail(c, SMTP_STAGE_CONNECT, SMTP_OUT_TEMP, NULL, "4.4.1", "%s",
                    c->fail.text[0] ? c->fail.text : "cannot connect");
    c->depth--;
    client_maybe_free(c);
}

static void timeouts_default(struct smtp_timeouts *t)
{
    /* Postfix's smtp_*_timeout defaults; idle is ours (a pool's keep-alive). */
    if (t->connect == 0) t->connect = 30000;
    if (t->greeting == 0) t->greeting = 300000;
    if (t->helo == 0) t->helo = 300000;
    if (t->starttls == 0) t->starttls = 300000;
    if (t->mail == 0) t->mail = 300000;
    if (t->rcpt == 0) t->rcpt = 300000;
    if (t->data_init == 0) t->data_init = 120000;
    if (t->data_xfer == 0) t->data_xfer = 180000;
    if (t->data_done == 0) t->data_done = 600000;
    if (t->rset == 0) t->rset = 20000;
    if (t->quit == 0) t->quit = 300000;
    if (t->idle == 0) t->idle = 10000;
}

/* A host name for EHLO, SNI and logs: printable ASCII, no space. */
static bool name_ok(const char *s)
{
    size_t n = 0;

    if (s == NULL || *s == '\0')
        return false;
    for (; *s; s++, n++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    return n <= 255;
}

struct smtp_client *smtp_client_connect(struct io_loop *loop, const struct smtp_client_params *p,
                                        const struct smtp_client_ops *ops, void *arg)
{
    struct smtp_client *c;
    bool usable = false;
    int one = 1, err;

    if (p->addr == NULL || p->addr_len == 0 || p->addr_len > sizeof(struct sockaddr_storage) ||
        (p->source != NULL && p->source_len > sizeof(struct sockaddr_storage)) ||
        !name_ok(p->mx_host) || !name_ok(p->helo_name) || ops == NULL ||
        (p->tls != SMTP_TLS_NONE && p->tls_ctx == NULL) || p->ntls_names > SMTP_CLIENT_NAMES_MAX ||
        (p->auth_user != NULL && (p->auth_pass == NULL || strlen(p->auth_user) > 255 ||
                                  strlen(p->auth_pass) > 255))) {
        errno = EINVAL;
        return NULL;
    }
    c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    clients_live++;
    c->loop = loop;
    c->ops = ops;
    c->arg = arg;
    c->fd = -1;
    c->state = CL_CONNECTING;
    memcpy(&c->addr, p->addr, p->addr_len);
    c->addr_len = p->addr_len;
    if (p->source != NULL) {
        memcpy(&c->src, p->source, p->source_len);
        c->src_len = p->source_len;
    }
    if (p->log_id != NULL)
        snprintf(c->id, sizeof c->id, "%s", p->log_id);
    else
        snprintf(c->id, sizeof c->id, "c%lu", ++client_seq);
    io_op_init(&c->connect_op, c);
    io_op_init(&c->recv_op, c);
    io_op_init(&c->send_op, c);
    io_op_init(&c->timer_op, c);
    io_op_init(&c->defer_op, c);
    smtp_reply_parser_init(&c->parser);
    c->to = p->timeouts;
    timeouts_default(&c->to);
    c->tls_ctx = p->tls_ctx;
    c->tls_no_resume = p->tls_no_resume;
    c->ext_ignore = p->ext_ignore;
    c->mx_host = strdup(p->mx_host);
    c->helo_name = strdup(p->helo_name);
    if (c->mx_host == NULL || c->helo_name == NULL)
        goto nomem;
    if (p->auth_user != NULL) {
        c->auth_user = strdup(p->auth_user);
        c->auth_pass = strdup(p->auth_pass);
        if (c->auth_user == NULL || c->auth_pass == NULL)
            goto nomem;
    }
    for (size_t i = 0; i < (p->tls_names ? p->ntls_names : 1); i++) {
        c->names[i] = strdup(p->tls_names ? p->tls_names[i] : p->mx_host);
        if (c->names[i] == NULL)
            goto nomem;
        c->nnames++;
    }
    c->policy = p->tls;
    if (p->tls == SMTP_TLS_DANE) {
        c->tlsa = calloc(p->ntlsa ? p->ntlsa : 1, sizeof *c->tlsa);
        if (c->tlsa == NULL)
            goto nomem;
        for (size_t i = 0; i < p->ntlsa; i++) {
            unsigned char *d = malloc(p->tlsa[i].len ? p->tlsa[i].len : 1);
            if (d == NULL)
                goto nomem;
            memcpy(d, p->tlsa[i].data, p->tlsa[i].len);
            c->tlsa[c->ntlsa] = p->tlsa[i];
            c->tlsa[c->ntlsa++].data = d;
            usable = usable || tls_tlsa_usable(&p->tlsa[i]);
        }
        /* RFC 7672 2.2: no usable record: encrypt, unauthenticated. */
        if (!usable)
            c->policy = SMTP_TLS_ENCRYPT;
    }
    c->info.mx_host = c->mx_host;
    format_peer(c);

    c->fd = socket(c->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        err = errno;
        goto failed;
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (c->src_len > 0 && bind(c->fd, (struct sockaddr *)&c->src, c->src_len) < 0) {
        err = errno;
        goto failed;
    }
    err = io_connect(loop, &c->connect_op, c->fd, (struct sockaddr *)&c->addr, c->addr_len,
                     on_connect);
    if (err < 0) {
        err = -err;
        goto failed;
    }
    deadline_reset(c);
    log_debug("smtp_client=%s event=connect peer=%s mx=%s tls=%d", c->id, c->info.peer, c->mx_host,
              c->policy);
    return c;

failed:
    /* Reported through closed() on the next turn, like any failure. */
    result_local(&c->fail, SMTP_STAGE_CONNECT, SMTP_OUT_TEMP, "4.4.1", "connect to %s: %s",
                 c->info.peer, strerror(err));
    if (io_defer(loop, &c->defer_op, on_connect_failed) == 0)
        return c;
nomem:
    c->state = CL_CLOSING;
    client_free(c);
    errno = ENOMEM;
    return NULL;
}

/* ---- sending a message ---------------------------------------------------- */

/* The up-front refusal is reported on the next turn. */
static void on_msg_refused(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct smtp_client *c = op->owner;

    c->depth++;
    if (c->state == CL_MSG_REFUSED)
        msg_finish(c); /* the client is idle again */
    c->depth--;
    client_maybe_free(c);
}

/* What the server cannot take, before any command (RFC 1870 6.1, RFC 6152
 * 3, RFC 6531 3.4); 0 when the message can go.  The outcome goes to m. */
static int msg_check(struct smtp_client *c, struct smtp_msg *m, bool utf8)
{
    uint64_t size = (uint64_t)m->prefix_len + m->len;

    if ((c->ehlo.ext & SMTP_EXT_SIZE) && c->ehlo.size > 0 && size > c->ehlo.size) {
        result_local(&c->txn_fail, SMTP_STAGE_MAIL, SMTP_OUT_PERM, "5.3.4",
                     "message size %llu exceeds the server's limit of %llu (SIZE)",
                     (unsigned long long)size, (unsigned long long)c->ehlo.size);
        return -1;
    }
    if ((m->flags & SMTP_MSG_8BITMIME) && !(c->ehlo.ext & SMTP_EXT_8BITMIME)) {
        result_local(&c->txn_fail, SMTP_STAGE_MAIL, SMTP_OUT_PERM, "5.6.3",
                     "the message has 8-bit content and the server does not offer 8BITMIME");
        return -1;
    }
    if ((utf8 || (m->flags & SMTP_MSG_SMTPUTF8)) && !(c->ehlo.ext & SMTP_EXT_SMTPUTF8)) {
        result_local(&c->txn_fail, SMTP_STAGE_MAIL, SMTP_OUT_PERM, "5.6.7",
                     "the message needs SMTPUTF8 and the server does not offer it");
        return -1;
    }
    return 0;
}

int smtp_client_send(struct smtp_client *c, struct smtp_msg *m)
{
    bool utf8 = false, any = false;

    if (c->state != CL_IDLE || c->msg != NULL)
        return -EBUSY;
    if (m->sender == NULL || m->rcpts == NULL || m->nrcpts == 0 || !path_ok(m->sender, &utf8) ||
        (m->len > 0 && m->data == NULL) || (m->prefix_len > 0 && m->prefix == NULL) ||
        !param_ok(m->dsn_ret) || !param_ok(m->dsn_envid))
        return -EINVAL;
    for (size_t i = 0; i < m->nrcpts; i++)
        if (!param_ok(m->rcpts[i].notify) || !param_ok(m->rcpts[i].orcpt))
            return -EINVAL;

    m->naccepted = 0;
    m->dsn_passed = (c->ehlo.ext & SMTP_EXT_DSN) != 0;
    m->used_bdat = false;
    memset(&m->result, 0, sizeof m->result);
    c->msg = m;
    c->pend_head = c->pend_tail = 0;
    c->mail_ok = false;
    c->final_seen = false;
    c->bdat_abort = false;
    c->txn_failed = false;
    memset(&c->final, 0, sizeof c->final);
    memset(&c->txn_fail, 0, sizeof c->txn_fail);
    c->body_active = false;
    for (size_t i = 0; i < m->nrcpts; i++) {
        struct smtp_rcpt *r = &m->rcpts[i];
        memset(&r->result, 0, sizeof r->result);
        if (r->addr == NULL || r->addr[0] == '\0' || !path_ok(r->addr, &utf8)) {
            result_local(&r->result, SMTP_STAGE_RCPT, SMTP_OUT_PERM, "5.1.3",
                         "bad recipient address syntax");
            continue;
        }
        any = true;
    }
    if (!any || msg_check(c, m, utf8) < 0) {
        if (!any)
            result_local(&c->txn_fail, SMTP_STAGE_RCPT, SMTP_OUT_PERM, "5.1.3",
                         "no recipient address can be sent");
        c->txn_failed = true;
        client_enter(c, CL_MSG_REFUSED);
        if (io_defer(c->loop, &c->defer_op, on_msg_refused) < 0) {
            c->msg = NULL;
            client_enter(c, CL_IDLE);
            return -ENOMEM;
        }
        return 0;
    }
    if (utf8)
        m->flags |= SMTP_MSG_SMTPUTF8;
    c->pipelining = (c->ehlo.ext & SMTP_EXT_PIPELINING) != 0;
    c->use_bdat = (c->ehlo.ext & SMTP_EXT_CHUNKING) != 0;
    m->used_bdat = c->use_bdat;
    c->step = c->rset_needed ? STEP_RSET : STEP_MAIL;
    client_enter(c, CL_TXN);
    txn_send_more(c);
    return 0;
}

int smtp_client_quit(struct smtp_client *c)
{
    if (c->state != CL_IDLE)
        return -EBUSY;
    if (put_cmd(c, "QUIT") < 0) {
        client_fail(c, SMTP_STAGE_QUIT, SMTP_OUT_TEMP, NULL, "4.3.0", "cannot queue QUIT");
        return 0;
    }
    result_local(&c->fail, SMTP_STAGE_QUIT, SMTP_OUT_OK, "", "closed after QUIT");
    client_enter(c, CL_QUIT);
    client_flush(c);
    return 0;
}

void smtp_client_close(struct smtp_client *c)
{
    c->closed_reported = true; /* the owner knows */
    if (c->state != CL_CLOSING) {
        log_debug("smtp_client=%s event=closed-by-owner", c->id);
        client_enter(c, CL_CLOSING);
        c->msg = NULL;
    }
    client_teardown(c);
    client_maybe_free(c);
}

void smtp_client_set_ops(struct smtp_client *c, const struct smtp_client_ops *ops, void *arg)
{
    c->ops = ops;
    c->arg = arg;
}

bool smtp_client_idle(const struct smtp_client *c)
{
    return c->state == CL_IDLE;
}

const struct smtp_client_info *smtp_client_info(const struct smtp_client *c)
{
    return &c->info;
}

const char *smtp_client_id(const struct smtp_client *c)
{
    return c->id;
}

size_t smtp_client_count(void)
{
    return clients_live;
}
