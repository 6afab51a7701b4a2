/* SPDX-License-Identifier: MIT */
/*
 * smtp_client.h - an asynchronous SMTP client (RFC 5321) on a reactor's
 * loop: one outbound connection that delivers messages one after another.
 *
 * The client takes already-resolved inputs (an address to connect to, the
 * MX host name, the TLS policy and, for DANE, the TLSA records) and a
 * message source, and reports results per recipient.  It does not look
 * anything up, retry, or pick another MX: the scheduler does, from the
 * results and the stage at which a connection failed.
 *
 * A connection's life:
 *   smtp_client_connect()  -> connect, greeting, EHLO (HELO when EHLO gets
 *                             5xx), STARTTLS when offered (policy), EHLO
 *                             again, AUTH PLAIN (smarthosts, only over TLS)
 *   ops->ready()           -> idle: give it a message
 *   smtp_client_send()     -> [RSET] MAIL, RCPT..., DATA or BDAT, pipelined
 *                             in one write when PIPELINING is offered
 *   ops->done()            -> results are in the message; idle again: send
 *                             another, smtp_client_quit(), or keep it idle
 *                             (a pool) until params.timeouts.idle
 *   ops->closed()          -> the connection is over (once; not after
 *                             smtp_client_close())
 *
 * Callbacks run on the loop's thread, never inside a call of this API.
 * Inside a callback the owner may call any function here on the same
 * client (send the next message from done(), close from anywhere); after
 * closed() returns, or after the owner's smtp_client_close(), the client
 * is gone for the owner (it frees itself once the kernel gave back its
 * buffers).
 *
 * TLS policy (RFC 3207, RFC 7672 2.2, 3): STARTTLS is used whenever the
 * server offers it and the policy is not NONE.  MAY falls back to clear
 * text when STARTTLS is not offered or refused; ENCRYPT, DANE and VERIFY
 * make a missing STARTTLS, a refused STARTTLS, a failed handshake and a
 * failed verification temporary failures (stages "starttls", "tls",
 * "tls-verify") before anything of the message is sent.  A DANE
 * destination whose TLSA records are all unusable is ENCRYPT.
 *
 * The message body is the stored wire form (CRLF lines, dot-stuffed, no
 * final ".\r\n").  DATA sends it as it is, then ".\r\n"; BDAT (RFC 3030,
 * when CHUNKING is offered) sends it un-dot-stuffed on the fly, in chunks of
 * at most SMTP_CLIENT_BDAT_MAX bytes, the first pipelined with MAIL and RCPT.
 * On a plaintext connection long runs of the body go to the kernel
 * straight from the spool segment (io_sendfile, or io_send from the mapped
 * bytes); on TLS they are SSL_written from the mapped bytes, record by
 * record.  Short runs (a short message, a body full of stuffed dots) are
 * gathered into a bounded buffer first: a copy of a few KB is cheaper
 * than a send each.
 */
#ifndef ORTOO_SMTP_CLIENT_H
#define ORTOO_SMTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "delivery/smtp_reply.h"
#include "io/tls.h"

struct io_loop;
struct smtp_client;

enum smtp_tls_policy {
    SMTP_TLS_NONE = 0, /* never STARTTLS (an explicit choice: tests, benchmarks) */
    SMTP_TLS_MAY,      /* opportunistic: STARTTLS when offered, no checks */
    SMTP_TLS_ENCRYPT,  /* TLS mandatory, no authentication */
    SMTP_TLS_DANE,     /* TLS mandatory, a TLSA record must match (RFC 7672) */
    SMTP_TLS_VERIFY,   /* TLS mandatory, PKIX chain and name (smarthosts) */
};

/* Where a connection or a message stopped. */
enum smtp_stage {
    SMTP_STAGE_NONE = 0,
    SMTP_STAGE_CONNECT,
    SMTP_STAGE_GREETING,
    SMTP_STAGE_EHLO,       /* EHLO or HELO */
    SMTP_STAGE_STARTTLS,   /* STARTTLS missing or refused */
    SMTP_STAGE_TLS,        /* the handshake failed */
    SMTP_STAGE_TLS_VERIFY, /* the server's certificate failed the policy */
    SMTP_STAGE_AUTH,
    SMTP_STAGE_MAIL,       /* MAIL, or the message refused before MAIL (SIZE...) */
    SMTP_STAGE_RCPT,
    SMTP_STAGE_DATA,       /* DATA, BDAT, the body, the reply to its end */
    SMTP_STAGE_RSET,
    SMTP_STAGE_QUIT,
    SMTP_STAGE_IDLE,       /* between messages */
};

/* "connect", "greeting", "ehlo", "starttls", "tls", "tls-verify", "auth",
 * "mail", "rcpt", "data", "rset", "quit", "idle" ("none"). */
const char *smtp_stage_name(enum smtp_stage st);

enum smtp_outcome {
    SMTP_OUT_NONE = 0, /* not decided (never in a reported result) */
    SMTP_OUT_OK,       /* delivered (relayed when the server lacks DSN) */
    SMTP_OUT_TEMP,     /* try again later: 4xx, a lost connection, a timeout */
    SMTP_OUT_PERM,     /* failed for good: 5xx, or refused before sending */
};

#define SMTP_RESULT_TEXT_MAX 512

/* One outcome. */
struct smtp_result {
    enum smtp_outcome outcome;
    enum smtp_stage stage;
    int code;            /* the server's reply code; 0 when no reply decided
                            it (connection lost, timeout, refused up front):
                            text is then ours */
    char enhanced[12];   /* the reply's enhanced code, or ours ("5.3.4"), or "" */
    char text[SMTP_RESULT_TEXT_MAX]; /* reply text (lines joined by a space)
                                        or our reason; may hold any byte but
                                        NUL, CR, LF: escape it when logging */
};

/* Time limits per state, in milliseconds; 0 takes the default (Postfix's). */
struct smtp_timeouts {
    unsigned connect;   /* TCP connect: 30 s */
    unsigned greeting;  /* the 220 greeting: 300 s */
    unsigned helo;      /* EHLO, HELO, AUTH replies: 300 s */
    unsigned starttls;  /* the STARTTLS reply and the handshake: 300 s */
    unsigned mail;      /* the MAIL reply: 300 s */
    unsigned rcpt;      /* each RCPT reply: 300 s */
    unsigned data_init; /* the DATA reply (354): 120 s */
    unsigned data_xfer; /* without progress while sending the body: 180 s */
    unsigned data_done; /* the reply to the end of the data: 600 s */
    unsigned rset;      /* the RSET reply: 20 s */
    unsigned quit;      /* the QUIT reply: 300 s */
    unsigned idle;      /* idle between messages, then QUIT: 10 s */
};

#define SMTP_CLIENT_NAMES_MAX 8 /* reference names kept for TLS checks */

/* How to reach a server and talk to it.  Everything is copied. */
struct smtp_client_params {
    const struct sockaddr *addr;  /* where to connect */
    socklen_t addr_len;
    const struct sockaddr *source; /* local address to bind, or NULL */
    socklen_t source_len;
    const char *mx_host;          /* the server's name (MX host, or the smarthost):
                                     TLS SNI, session cache key, logs */
    const char *helo_name;        /* our name for EHLO/HELO */
    enum smtp_tls_policy tls;
    struct tls_client *tls_ctx;   /* this reactor's client context (not needed for
                                     NONE); VERIFY checks against its CA store */
    const struct tls_tlsa *tlsa;  /* DANE: the TLSA RRset of _port._tcp.mx_host */
    size_t ntlsa;
    const char *const *tls_names; /* reference names for VERIFY and DANE-TA
                                     (RFC 7672 3.2.2: the TLSA base domain and
                                     the MX host); NULL: mx_host */
    size_t ntls_names;            /* at most SMTP_CLIENT_NAMES_MAX */
    bool tls_no_resume;           /* no TLS session resumption for this destination */
    const char *auth_user;        /* AUTH PLAIN (RFC 4616) over TLS only; NULL: none */
    const char *auth_pass;
    unsigned ext_ignore;          /* SMTP_EXT_* to treat as not offered */
    struct smtp_timeouts timeouts;
    const char *log_id;           /* shown in debug logs; NULL: a counter */
};

/* One recipient. */
struct smtp_rcpt {
    const char *addr;          /* forward-path without <> (borrowed until done) */
    const char *notify;        /* DSN NOTIFY= value, or NULL (RFC 3461 4.1) */
    const char *orcpt;         /* DSN ORCPT= value ("rfc822;..." xtext), or NULL */
    struct smtp_result result; /* out: this recipient's outcome */
};

#define SMTP_MSG_8BITMIME 0x1u /* needs 8BITMIME (BODY=8BITMIME, RFC 6152) */
#define SMTP_MSG_SMTPUTF8 0x2u /* needs SMTPUTF8 (RFC 6531) */

/*
 * One message, owned by the caller and borrowed (with every string and
 * byte it points at) from smtp_client_send() until ops->done().
 */
struct smtp_msg {
    const char *sender;        /* reverse-path without <>, "" for the null sender */
    struct smtp_rcpt *rcpts;
    size_t nrcpts;
    unsigned flags;            /* SMTP_MSG_* */
    const char *dsn_ret;       /* RET= FULL|HDRS, or NULL */
    const char *dsn_envid;     /* ENVID= xtext, or NULL */
    const char *prefix;        /* header fields ortoo adds (Received:, DKIM-
                                  Signature:), CRLF lines in wire form, sent
                                  before the stored bytes; may be NULL */
    size_t prefix_len;
    const char *data;          /* the stored wire form (mapped segment) */
    size_t len;
    int fd;                    /* the same bytes in a file (segment fd), or -1 */
    uint64_t off;              /* their offset in fd */
    /* Out, valid in ops->done(): */
    struct smtp_result result; /* the reply to the end of the data, or what
                                  ended the transaction before it */
    unsigned naccepted;        /* recipients the server accepted at RCPT */
    bool dsn_passed;           /* the server offered DSN: NOTIFY/RET/ENVID/ORCPT
                                  went along; otherwise a success is "relayed" */
    bool used_bdat;            /* sent with BDAT (else DATA) */
    void *owner;               /* for the caller; not touched */
};

/* What is known about a connection (for logs). */
struct smtp_client_info {
    const char *mx_host;       /* as given */
    char peer[64];             /* "192.0.2.1:25" or "[2001:db8::1]:25" */
    bool esmtp;                /* EHLO accepted (else HELO) */
    unsigned ext;              /* SMTP_EXT_* offered (after ext_ignore) */
    uint64_t size_limit;       /* SIZE, 0: none */
    bool tls;                  /* TLS is up */
    const char *tls_version;   /* "TLSv1.3", or NULL */
    const char *tls_cipher;    /* or NULL */
    bool tls_resumed;          /* the TLS session was resumed */
    bool tls_verified;         /* PKIX or DANE authenticated the server */
    bool dane_verified;        /* ... through a TLSA record */
    const char *dane_match;    /* "DANE-EE", "DANE-TA", "resumed", or NULL */
    unsigned messages;         /* messages finished on this connection */
};

struct smtp_client_ops {
    /* Connected and greeted (and TLS, AUTH done): idle, ready for a
     * message.  Runs once per connection. */
    void (*ready)(struct smtp_client *c, void *arg);
    /* The message given to smtp_client_send() is finished: the results are
     * in m (message and recipients).  The client is idle again, or about to
     * close (then closed() follows). */
    void (*done)(struct smtp_client *c, struct smtp_msg *m, void *arg);
    /* The connection is over: why says where and whether it matters
     * (outcome OK after our own QUIT or an idle timeout; TEMP or PERM with
     * a stage otherwise).  Runs once, never after smtp_client_close(). */
    void (*closed)(struct smtp_client *c, const struct smtp_result *why, void *arg);
};

/*
 * Start a connection.  Returns the client (the connection goes on in the
 * loop; every failure from here on, socket() included, comes through
 * ops->closed()), or NULL with errno EINVAL (bad parameters) or ENOMEM.
 * Never blocks.
 */
struct smtp_client *smtp_client_connect(struct io_loop *loop, const struct smtp_client_params *p,
                                        const struct smtp_client_ops *ops, void *arg);

/*
 * Deliver m on an idle client (after ready() or done()).  Returns 0 (done()
 * will run), -EBUSY (not idle), or -EINVAL (no recipient, or a sender or a
 * parameter with CR, LF, NUL or angle brackets).  A recipient address that
 * cannot be sent gets a PERM result of its own; a message the server
 * cannot take (SIZE over its limit, 8BITMIME or SMTPUTF8 missing) is
 * refused before MAIL with a PERM result at stage "mail" and an enhanced
 * code (5.3.4, 5.6.3, 5.6.7), the connection staying usable.
 */
int smtp_client_send(struct smtp_client *c, struct smtp_msg *m);

/* QUIT an idle client; closed() follows with outcome OK.  -EBUSY when not
 * idle. */
int smtp_client_quit(struct smtp_client *c);

/* Drop the connection now, whatever it was doing; no callback runs any
 * more (a message in flight is abandoned: the caller defers it). */
void smtp_client_close(struct smtp_client *c);

/* Hand the client to another owner (a pool): later callbacks go there. */
void smtp_client_set_ops(struct smtp_client *c, const struct smtp_client_ops *ops, void *arg);

/* True between ready()/done() and the next smtp_client_send(). */
bool smtp_client_idle(const struct smtp_client *c);

/* What is known about the connection so far. */
const struct smtp_client_info *smtp_client_info(const struct smtp_client *c);

/* The client's log id. */
const char *smtp_client_id(const struct smtp_client *c);

/* Clients alive on the calling thread, including closed ones whose memory
 * the kernel still holds (stats; tests wait for 0 before freeing a loop). */
size_t smtp_client_count(void);

#endif
