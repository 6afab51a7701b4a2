// SPDX-License-Identifier: MIT
/*
 * ortoo-load.c - the SMTP load generator of ortoo's benchmark (issue 3).
 *
 * One process, one or a few threads; each thread owns an epoll instance and
 * its share of the connections, all non-blocking.  A connection walks the
 * client side of RFC 5321 (greeting, EHLO, optional STARTTLS per RFC 3207 and
 * AUTH PLAIN per RFC 4954/4616, then MAIL/RCPT/DATA transactions, QUIT) as a
 * state machine driven by replies; with --pipelining and a server that
 * advertises PIPELINING, MAIL, every RCPT and DATA leave in one write
 * (RFC 2920 3.1: DATA is the last command of the group).  TLS is OpenSSL on
 * the socket (SSL_set_fd), implicit (--tls) or upgraded (--starttls), with
 * TLS 1.3 session resumption on request (--resume).  With --no-mail a
 * session is greeting, EHLO (STARTTLS and EHLO again), AUTH when asked, then
 * QUIT: --messages counts sessions, and the latency is connect to 221.
 *
 * Resumption: each thread keeps a pool of the tickets it received and uses
 * each one once (RFC 8446 C.4: clients SHOULD NOT reuse a ticket), falling
 * back to the newest ticket when the pool is empty (more connections than
 * tickets in flight).  A connection that closes cleanly is marked shut down
 * before SSL_free, and an EOF without close_notify is not treated as fatal
 * (SSL_OP_IGNORE_UNEXPECTED_EOF): otherwise OpenSSL marks the connection's
 * session, which is the last ticket it received, not resumable, and the next
 * connection silently does a full handshake.  Many SMTP servers (ortoo
 * included, so far) close after 221 without close_notify.
 *
 * The message is built once and shared by every connection (never copied):
 * each send is a writev of a small per-connection command buffer and a
 * pointer into the shared message.  Latency is measured from the moment the
 * final "." line has been handed to the kernel to the arrival of its reply,
 * into a log-linear histogram (128 sub-buckets per power of two, <1% error).
 *
 * Output: a human summary, or one JSON object with --json.  Exit status 0
 * when at least one message was accepted and no connection could not be
 * made at all, 1 otherwise, 2 on usage errors.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define LOAD_RBUF 8192          /* reply buffer per connection */
#define LOAD_CBUF 4096          /* command buffer per connection */
#define LOAD_HBUCKETS 4096      /* histogram buckets (covers 2^56 ns) */
#define LOAD_MAX_THREADS 64
#define LOAD_TICKETS 256        /* TLS tickets kept per thread (--resume) */

/* ---- options ------------------------------------------------------------ */

struct opts {
    char host[256];
    char port[16];
    unsigned connections;       /* concurrent connections */
    uint64_t messages;          /* total, 0 = use duration */
    double duration;            /* seconds, when messages == 0 */
    size_t size;                /* message bytes on the wire, final dot included */
    unsigned rcpts;             /* recipients per message */
    unsigned per_conn;          /* messages per connection, 0 = unlimited */
    bool pipelining, tls, starttls, resume, json, quiet;
    bool no_mail;               /* sessions without a transaction */
    char *auth_plain;           /* base64 of "\0user\0pass", or NULL */
    double rate;                /* target msgs/s, 0 = as fast as possible */
    char from[256];
    const char *message_file;   /* --message: send this message (CRLF lines) */
    char **domains;             /* recipient domains, round-robin */
    const char *to;             /* --to: one fixed recipient address, or NULL */
    size_t ndomains;
    unsigned threads;
    double timeout;             /* seconds without any progress before giving up */
    char ehlo[128];
    double idle;                /* --idle S: hold connections after EHLO */
};

static struct opts O = {
    .host = "127.0.0.1", .port = "25", .connections = 10, .messages = 0,
    .duration = 0, .size = 2048, .rcpts = 1, .per_conn = 0,
    .from = "load@load.test", .threads = 1, .timeout = 30, .ehlo = "load.test",
};

/* ---- histogram ------------------------------------------------------------ */

/*
 * Log-linear histogram of nanoseconds.  Invariant: a value v < 128 lives in
 * bucket v; above, bucket 128 + (msb-7)*64 + (top 7 bits - 64), so every
 * bucket spans less than 1/64 of its lower bound.
 */
struct hist {
    uint64_t n[LOAD_HBUCKETS];
    uint64_t count, max, sum;
};

static unsigned hist_index(uint64_t v)
{
    if (v < 128)
        return (unsigned)v;
    unsigned msb = 63 - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - 6;
    unsigned idx = 128 + (msb - 7) * 64 + (unsigned)((v >> shift) - 64);
    return idx < LOAD_HBUCKETS ? idx : LOAD_HBUCKETS - 1;
}

static uint64_t hist_value(unsigned idx)
{
    if (idx < 128)
        return idx;
    unsigned k = idx - 128, msb = k / 64 + 7, shift = msb - 6;
    uint64_t lo = (uint64_t)(k % 64 + 64) << shift;
    return lo + ((1ull << shift) >> 1); /* middle of the bucket */
}

static void hist_add(struct hist *h, uint64_t v)
{
    h->n[hist_index(v)]++;
    h->count++;
    h->sum += v;
    if (v > h->max)
        h->max = v;
}

static uint64_t hist_pct(const struct hist *h, double p)
{
    if (!h->count)
        return 0;
    uint64_t want = (uint64_t)(p / 100.0 * (double)h->count + 0.999999), seen = 0;
    if (want < 1)
        want = 1;
    for (unsigned i = 0; i < LOAD_HBUCKETS; i++) {
        seen += h->n[i];
        if (seen >= want) {
            uint64_t v = hist_value(i);
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}

/* ---- shared state ----------------------------------------------------------- */

static char *g_msg;             /* the message: headers, body, ".\r\n" */
static size_t g_msg_len;
static SSL_CTX *g_ssl_ctx;
static struct addrinfo *g_addr;
static atomic_uint_fast64_t g_started;  /* transactions started (quota) */
static atomic_bool g_stop;              /* no new transactions */
static atomic_bool g_abort;             /* give up now */
static double g_t0, g_t_end;            /* start; duration end */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- connections ------------------------------------------------------------ */

enum cstate {
    C_IDLE = 0, C_CONNECTING, C_HANDSHAKE, C_GREETING, C_EHLO, C_STARTTLS, C_AUTH,
    C_TRANS, C_DOT, C_RSET, C_PARKED, C_HOLD, C_QUIT, C_DRAIN,
};

struct thread;

/*
 * One client connection.  Invariants: fd >= 0 unless state is C_IDLE;
 * out_iov[out_i..out_n) is the unsent output (out_iov points into cbuf or
 * g_msg, never owned); rlen bytes of rbuf are unparsed reply text.
 */
struct conn {
    struct thread *t;
    int fd;
    enum cstate state;
    SSL *ssl;                   /* owned; NULL in plaintext */
    bool tls_on, can_pipe, can_starttls, want_out, dot_pending;
    unsigned msgs_on_conn;      /* transactions completed on this connection */
    unsigned idx;               /* reply index within a transaction */
    unsigned rcpt_ok;           /* recipients accepted in this transaction */
    bool mail_ok;
    uint64_t t_dot;             /* ns when the final dot left */
    uint64_t t_open;            /* ns when connect() was called */
    bool counted;               /* --no-mail: this session took a quota unit */
    uint64_t seq;               /* transaction number, for recipient names */
    bool opened_once;           /* --idle: each connection is opened once */
    struct iovec out_iov[3];
    int out_i, out_n;
    size_t rlen;
    char rbuf[LOAD_RBUF];
    char cbuf[LOAD_CBUF];
    size_t clen;
    struct conn *next_parked;
};

struct thread {
    pthread_t tid;
    int ep;
    unsigned id;
    struct conn *conns;
    unsigned nconns;
    struct conn *parked_head, *parked_tail;
    double rate;                /* this thread's msgs/s, 0 = unlimited */
    double next_slot;           /* time the next rate-limited transaction may start */
    /* results */
    uint64_t ok, fail, bytes, conns_opened, conn_errors, connect_fail, dropped;
    uint64_t hs_full, hs_resumed, held;
    uint64_t tickets_rcvd, tickets_reused;
    /* --resume: unused tickets (a stack, each used once), and the newest one,
     * reused only when the stack is empty.  Each entry holds one reference. */
    SSL_SESSION *tickets[LOAD_TICKETS];
    unsigned ntickets;
    SSL_SESSION *last_ticket;
    uint64_t codes[600];
    double last_done;
    struct hist lat;
};

static struct thread g_threads[LOAD_MAX_THREADS];

static void conn_start(struct conn *c);
static void conn_close(struct conn *c, bool error);
static int conn_flush(struct conn *c);
static void trans_begin(struct conn *c);

static void ep_set(struct conn *c, bool want_out)
{
    struct epoll_event ev = { .events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c };
    if (c->want_out != want_out) {
        c->want_out = want_out;
        epoll_ctl(c->t->ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
}

/* A ticket arrived (TLS 1.3 NewSessionTicket): push it on the thread's pool. */
static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    struct conn *c = SSL_get_app_data(ssl);
    struct thread *t = c->t;
    t->tickets_rcvd++;
    if (t->ntickets == LOAD_TICKETS) {
        SSL_SESSION_free(t->tickets[0]); /* drop the oldest */
        memmove(t->tickets, t->tickets + 1, (LOAD_TICKETS - 1) * sizeof(*t->tickets));
        t->ntickets--;
    }
    t->tickets[t->ntickets++] = sess;
    if (t->last_ticket)
        SSL_SESSION_free(t->last_ticket);
    SSL_SESSION_up_ref(sess);
    t->last_ticket = sess;
    return 1; /* we keep the reference */
}

/* Queue command text (copied into cbuf) then, optionally, the shared message. */
static void out_cmd(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_cmd(struct conn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(c->cbuf + c->clen, LOAD_CBUF - c->clen, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= LOAD_CBUF - c->clen) {
        fprintf(stderr, "ortoo-load: command buffer overflow\n");
        exit(1);
    }
    c->clen += (size_t)n;
}

/* Hand cbuf (and the message when with_msg) to the output queue and try to send. */
static int out_send(struct conn *c, bool with_msg)
{
    c->out_i = 0;
    c->out_n = 0;
    if (c->clen)
        c->out_iov[c->out_n++] = (struct iovec){ c->cbuf, c->clen };
    if (with_msg) {
        c->out_iov[c->out_n++] = (struct iovec){ g_msg, g_msg_len };
        c->dot_pending = true;
    }
    return conn_flush(c);
}

/*
 * Write what is queued.  Returns 0 when all is written, 1 when the socket
 * is full (EPOLLOUT armed), -1 on error (the caller closes).
 */
static int conn_flush(struct conn *c)
{
    while (c->out_i < c->out_n) {
        ssize_t n;
        if (c->ssl) {
            struct iovec *v = &c->out_iov[c->out_i];
            ERR_clear_error(); /* SSL_get_error reads the thread's error queue */
            int r = SSL_write(c->ssl, v->iov_base, (int)(v->iov_len > INT_MAX ? INT_MAX : v->iov_len));
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
                    ep_set(c, true);
                    return 1;
                }
                return -1;
            }
            n = r;
        } else {
            n = writev(c->fd, c->out_iov + c->out_i, c->out_n - c->out_i);
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR) {
                    ep_set(c, true);
                    return 1;
                }
                return -1;
            }
        }
        while (n > 0 && c->out_i < c->out_n) {
            struct iovec *v = &c->out_iov[c->out_i];
            if ((size_t)n >= v->iov_len) {
                n -= (ssize_t)v->iov_len;
                c->out_i++;
            } else {
                v->iov_base = (char *)v->iov_base + n;
                v->iov_len -= (size_t)n;
                n = 0;
            }
        }
    }
    c->clen = 0;
    if (c->dot_pending) {
        c->dot_pending = false;
        c->t_dot = now_ns();
    }
    ep_set(c, false);
    return 0;
}

/* ---- transactions ----------------------------------------------------------- */

static bool quota_take(struct conn *c)
{
    if (atomic_load_explicit(&g_stop, memory_order_relaxed))
        return false;
    if (O.messages) {
        uint64_t n = atomic_fetch_add(&g_started, 1);
        if (n >= O.messages) {
            atomic_store(&g_stop, true);
            return false;
        }
        c->seq = n;
    } else {
        c->seq = atomic_fetch_add(&g_started, 1);
    }
    return true;
}

static void send_rcpt(struct conn *c, unsigned i)
{
    if (O.to) {
        out_cmd(c, "RCPT TO:<%s>\r\n", O.to);
        return;
    }
    const char *dom = O.domains[(c->seq * O.rcpts + i) % O.ndomains];
    out_cmd(c, "RCPT TO:<u%llu@%s>\r\n", (unsigned long long)((c->seq * O.rcpts + i) % 100000), dom);
}

static void park(struct conn *c)
{
    struct thread *t = c->t;
    c->state = C_PARKED;
    c->next_parked = NULL;
    if (t->parked_tail)
        t->parked_tail->next_parked = c;
    else
        t->parked_head = c;
    t->parked_tail = c;
}

/* Start the next transaction, or QUIT when this connection or the run is done. */
static void trans_begin(struct conn *c)
{
    struct thread *t = c->t;
    if (O.no_mail) {
        /* one session = one quota unit; counted when QUIT is answered */
        c->counted = c->msgs_on_conn == 0 && c->state != C_HOLD && quota_take(c);
        c->state = C_QUIT;
        out_cmd(c, "QUIT\r\n");
        if (out_send(c, false) < 0)
            conn_close(c, true);
        return;
    }
    if ((O.per_conn && c->msgs_on_conn >= O.per_conn) || atomic_load(&g_stop)) {
        c->state = C_QUIT;
        out_cmd(c, "QUIT\r\n");
        if (out_send(c, false) < 0)
            conn_close(c, true);
        return;
    }
    if (t->rate > 0) {
        double now = now_s();
        if (now < t->next_slot) {
            park(c);
            return;
        }
        t->next_slot += 1.0 / t->rate;
        if (t->next_slot < now - 1.0)
            t->next_slot = now; /* do not burst to catch up more than 1 s */
    }
    if (!quota_take(c)) {
        c->state = C_QUIT;
        out_cmd(c, "QUIT\r\n");
        if (out_send(c, false) < 0)
            conn_close(c, true);
        return;
    }
    c->state = C_TRANS;
    c->idx = 0;
    c->rcpt_ok = 0;
    c->mail_ok = false;
    out_cmd(c, "MAIL FROM:<%s>%s\r\n", O.from, "");
    if (c->can_pipe && O.pipelining) {
        for (unsigned i = 0; i < O.rcpts; i++)
            send_rcpt(c, i);
        out_cmd(c, "DATA\r\n");
    }
    if (out_send(c, false) < 0)
        conn_close(c, true);
}

static void trans_end(struct conn *c, int code)
{
    struct thread *t = c->t;
    uint64_t now = now_ns();
    if (code >= 200 && code < 300) {
        t->ok++;
        t->bytes += O.no_mail ? 0 : g_msg_len;
        hist_add(&t->lat, now - c->t_dot);
    } else {
        t->fail++;
    }
    c->msgs_on_conn++;
    t->last_done = now_s();
}

/* A failed transaction: reset and go on. */
static void trans_reset(struct conn *c)
{
    c->t->fail++;
    c->msgs_on_conn++;
    c->state = C_RSET;
    out_cmd(c, "RSET\r\n");
    if (out_send(c, false) < 0)
        conn_close(c, true);
}

/* One reply inside a transaction; idx 0 = MAIL, 1..rcpts = RCPT, rcpts+1 = DATA. */
static void on_trans_reply(struct conn *c, int code)
{
    bool pipe = c->can_pipe && O.pipelining;
    unsigned i = c->idx++;
    if (i == 0) {
        c->mail_ok = code / 100 == 2;
        if (!pipe) {
            if (!c->mail_ok) {
                trans_reset(c);
                return;
            }
            send_rcpt(c, 0);
            if (out_send(c, false) < 0)
                conn_close(c, true);
        }
        return;
    }
    if (i <= O.rcpts) {
        if (code / 100 == 2)
            c->rcpt_ok++;
        if (!pipe) {
            if (i < O.rcpts)
                send_rcpt(c, i);
            else if (c->rcpt_ok)
                out_cmd(c, "DATA\r\n");
            else {
                trans_reset(c);
                return;
            }
            if (out_send(c, false) < 0)
                conn_close(c, true);
        }
        return;
    }
    /* the reply to DATA */
    if (code == 354) {
        c->state = C_DOT;
        if (out_send(c, true) < 0)
            conn_close(c, true);
        return;
    }
    trans_reset(c);
}

static bool ehlo_has(const char *line, const char *kw)
{
    size_t n = strlen(kw);
    return strncasecmp(line, kw, n) == 0 && (line[n] == '\0' || line[n] == ' ' || line[n] == '\r');
}

static void after_ehlo(struct conn *c)
{
    if (O.idle > 0 && !(O.starttls && !c->tls_on) && !atomic_load(&g_stop)) {
        c->state = C_HOLD; /* scenario E: an idle session after EHLO */
        c->t->held++;
        return;
    }
    if (O.starttls && !c->tls_on) {
        if (!c->can_starttls) {
            fprintf(stderr, "ortoo-load: server does not offer STARTTLS\n");
            atomic_store(&g_abort, true);
            conn_close(c, true);
            return;
        }
        c->state = C_STARTTLS;
        out_cmd(c, "STARTTLS\r\n");
    } else if (O.auth_plain) {
        c->state = C_AUTH;
        out_cmd(c, "AUTH PLAIN %s\r\n", O.auth_plain);
    } else {
        trans_begin(c);
        return;
    }
    if (out_send(c, false) < 0)
        conn_close(c, true);
}

static int tls_begin(struct conn *c)
{
    c->ssl = SSL_new(g_ssl_ctx);
    if (!c->ssl)
        return -1;
    SSL_set_fd(c->ssl, c->fd);
    SSL_set_connect_state(c->ssl);
    SSL_set_app_data(c->ssl, c);
    if (O.resume) {
        struct thread *t = c->t;
        if (t->ntickets > 0) {
            SSL_SESSION *s = t->tickets[--t->ntickets];
            SSL_set_session(c->ssl, s); /* takes its own reference */
            SSL_SESSION_free(s);
        } else if (t->last_ticket) {
            SSL_set_session(c->ssl, t->last_ticket);
            t->tickets_reused++;
        }
    }
    c->state = C_HANDSHAKE;
    return 0;
}

static void handshake(struct conn *c)
{
    ERR_clear_error(); /* SSL_get_error reads the thread's error queue */
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->tls_on = true;
        if (SSL_session_reused(c->ssl))
            c->t->hs_resumed++;
        else
            c->t->hs_full++;
        ep_set(c, false);
        if (O.starttls) {
            c->state = C_EHLO;
            c->can_pipe = c->can_starttls = false;
            out_cmd(c, "EHLO %s\r\n", O.ehlo);
            if (out_send(c, false) < 0)
                conn_close(c, true);
        } else {
            c->state = C_GREETING; /* implicit TLS: the greeting comes now (RFC 8314 3.3) */
        }
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ)
        ep_set(c, false);
    else if (e == SSL_ERROR_WANT_WRITE)
        ep_set(c, true);
    else
        conn_close(c, true);
}

/* A complete reply: code and its last line (for EHLO, called per line). */
static void on_reply(struct conn *c, int code)
{
    struct thread *t = c->t;
    if (code >= 100 && code < 600)
        t->codes[code]++;
    switch (c->state) {
    case C_GREETING:
        if (code != 220) {
            conn_close(c, true);
            return;
        }
        c->state = C_EHLO;
        out_cmd(c, "EHLO %s\r\n", O.ehlo);
        if (out_send(c, false) < 0)
            conn_close(c, true);
        return;
    case C_EHLO:
        if (code != 250) {
            conn_close(c, true);
            return;
        }
        after_ehlo(c);
        return;
    case C_STARTTLS:
        if (code != 220 || tls_begin(c) < 0) {
            conn_close(c, true);
            return;
        }
        handshake(c);
        return;
    case C_AUTH:
        if (code != 235) {
            fprintf(stderr, "ortoo-load: AUTH refused (%d)\n", code);
            atomic_store(&g_abort, true);
            conn_close(c, true);
            return;
        }
        trans_begin(c);
        return;
    case C_TRANS:
        on_trans_reply(c, code);
        return;
    case C_DOT:
        trans_end(c, code);
        trans_begin(c);
        return;
    case C_RSET:
        trans_begin(c);
        return;
    case C_QUIT:
        if (O.no_mail && c->counted) {
            c->t_dot = c->t_open; /* session latency: connect to 221 */
            trans_end(c, code);
            c->counted = false;
        }
        /* wait for the server to close first: its side keeps TIME_WAIT */
        c->state = C_DRAIN;
        return;
    default:
        return;
    }
}

/* Split rbuf into reply lines; returns -1 when the connection was closed. */
static int parse_replies(struct conn *c)
{
    size_t off = 0;
    while (c->fd >= 0) {
        char *nl = memchr(c->rbuf + off, '\n', c->rlen - off);
        if (!nl)
            break;
        char *line = c->rbuf + off;
        size_t len = (size_t)(nl - line) + 1;
        off += len;
        if (len < 4 || line[0] < '1' || line[0] > '5') {
            conn_close(c, true);
            return -1;
        }
        int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
        bool last = line[3] != '-';
        if (c->state == C_EHLO) {
            *nl = '\0';
            const char *kw = line + 4;
            if (ehlo_has(kw, "PIPELINING"))
                c->can_pipe = true;
            else if (ehlo_has(kw, "STARTTLS"))
                c->can_starttls = true;
        }
        if (last) {
            enum cstate before = c->state;
            on_reply(c, code);
            if (c->fd < 0)
                return -1;
            if (before == C_STARTTLS && c->ssl) {
                off = c->rlen; /* nothing may follow 220 in plaintext (RFC 3207 4) */
                break;
            }
        }
    }
    if (c->fd < 0)
        return -1;
    memmove(c->rbuf, c->rbuf + off, c->rlen - off);
    c->rlen -= off;
    if (c->rlen == LOAD_RBUF) {
        conn_close(c, true); /* a line longer than the buffer */
        return -1;
    }
    return 0;
}

static void conn_readable(struct conn *c)
{
    for (;;) {
        ssize_t n;
        if (c->state == C_HANDSHAKE) {
            handshake(c);
            if (c->fd < 0 || c->state == C_HANDSHAKE)
                return;
            continue;
        }
        if (c->ssl) {
            ERR_clear_error(); /* SSL_get_error reads the thread's error queue */
            int r = SSL_read(c->ssl, c->rbuf + c->rlen, (int)(LOAD_RBUF - c->rlen));
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_READ)
                    return;
                if (e == SSL_ERROR_WANT_WRITE) {
                    ep_set(c, true);
                    return;
                }
                conn_close(c, c->state != C_DRAIN && c->state != C_QUIT);
                return;
            }
            n = r;
        } else {
            n = read(c->fd, c->rbuf + c->rlen, LOAD_RBUF - c->rlen);
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    return;
                conn_close(c, true);
                return;
            }
            if (n == 0) {
                conn_close(c, c->state != C_DRAIN && c->state != C_QUIT);
                return;
            }
        }
        c->rlen += (size_t)n;
        if (parse_replies(c) < 0)
            return;
    }
}

static void conn_event(struct conn *c, uint32_t ev)
{
    if (c->state == C_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            c->t->connect_fail++;
            conn_close(c, true);
            return;
        }
        ep_set(c, false);
        if (O.tls) {
            if (tls_begin(c) < 0) {
                conn_close(c, true);
                return;
            }
            handshake(c);
            if (c->fd < 0)
                return;
        } else {
            c->state = C_GREETING;
        }
        return;
    }
    if ((ev & EPOLLOUT) && c->state != C_HANDSHAKE) {
        if (conn_flush(c) < 0) {
            conn_close(c, true);
            return;
        }
    }
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP) || c->state == C_HANDSHAKE)
        conn_readable(c);
}

static void conn_close(struct conn *c, bool error)
{
    struct thread *t = c->t;
    if (c->fd < 0)
        return;
    if (error) {
        t->conn_errors++;
        if (c->state == C_TRANS || c->state == C_DOT)
            t->dropped++;
    }
    if (c->ssl) {
        /* A clean end keeps the session (and the ticket it holds) resumable. */
        if (!error && SSL_is_init_finished(c->ssl))
            SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    close(c->fd);
    c->fd = -1;
    c->state = C_IDLE;
}

/* Open a new connection (non-blocking connect). */
static void conn_start(struct conn *c)
{
    struct thread *t = c->t;
    c->rlen = c->clen = 0;
    c->out_i = c->out_n = 0;
    c->tls_on = c->can_pipe = c->can_starttls = c->dot_pending = false;
    c->msgs_on_conn = 0;
    c->counted = false;
    c->t_open = now_ns();
    c->fd = socket(g_addr->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        t->connect_fail++;
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    t->conns_opened++;
    int r = connect(c->fd, g_addr->ai_addr, g_addr->ai_addrlen);
    if (r < 0 && errno != EINPROGRESS) {
        t->connect_fail++;
        close(c->fd);
        c->fd = -1;
        return;
    }
    c->state = C_CONNECTING;
    c->want_out = true;
    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.ptr = c };
    epoll_ctl(t->ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static bool work_left(void)
{
    return !atomic_load(&g_stop) && !atomic_load(&g_abort) && O.idle <= 0;
}

static void *thread_main(void *arg)
{
    struct thread *t = arg;
    struct epoll_event evs[256];
    double last_progress = now_s();
    uint64_t last_count = 0;
    t->next_slot = g_t0;
    for (unsigned i = 0; i < t->nconns; i++) {
        t->conns[i].t = t;
        t->conns[i].fd = -1;
    }
    for (;;) {
        if (atomic_load(&g_abort))
            break;
        double now = now_s();
        if (!O.messages && now >= g_t_end)
            atomic_store(&g_stop, true);
        /* release parked connections whose slot has come */
        while (t->parked_head && (t->rate <= 0 || now >= t->next_slot || atomic_load(&g_stop))) {
            struct conn *c = t->parked_head;
            t->parked_head = c->next_parked;
            if (!t->parked_head)
                t->parked_tail = NULL;
            trans_begin(c);
            if (c->state == C_PARKED)
                break;
        }
        /* open (at most 500 per turn: the listen backlog is finite) and reopen */
        unsigned open = 0, started = 0;
        for (unsigned i = 0; i < t->nconns; i++) {
            struct conn *c = &t->conns[i];
            if (c->fd < 0 && started < 500 && (work_left() || (O.idle > 0 && !c->opened_once && !atomic_load(&g_stop)))) {
                c->opened_once = true;
                conn_start(c);
                started++;
            }
            if (c->fd >= 0 || (c->fd < 0 && O.idle > 0 && !c->opened_once && !atomic_load(&g_stop)))
                open++;
            if (c->state == C_HOLD && atomic_load(&g_stop))
                trans_begin(c); /* sends QUIT */
        }
        if (!open)
            break;
        if (t->ok + t->fail == 0 && t->connect_fail >= 3 * (uint64_t)t->nconns + 10) {
            fprintf(stderr, "ortoo-load: cannot connect to %s:%s\n", O.host, O.port);
            atomic_store(&g_abort, true);
            break;
        }
        uint64_t done = t->ok + t->fail + t->held;
        if (done != last_count || O.idle > 0) {
            last_count = done;
            last_progress = now;
        } else if (now - last_progress > O.timeout) {
            fprintf(stderr, "ortoo-load: no progress for %.0f s, giving up\n", O.timeout);
            atomic_store(&g_abort, true);
            break;
        }
        int timeout = 100;
        if (t->parked_head && t->rate > 0) {
            double w = (t->next_slot - now) * 1000.0;
            timeout = w < 0 ? 0 : w > 100 ? 100 : (int)w;
        }
        int n = epoll_wait(t->ep, evs, 256, timeout);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->fd >= 0)
                conn_event(c, evs[i].events);
        }
    }
    for (unsigned i = 0; i < t->nconns; i++)
        conn_close(&t->conns[i], false);
    while (t->ntickets > 0)
        SSL_SESSION_free(t->tickets[--t->ntickets]);
    if (t->last_ticket)
        SSL_SESSION_free(t->last_ticket);
    t->last_ticket = NULL;
    return NULL;
}

/* ---- setup and report ---------------------------------------------------------- */

/* --message FILE: the file's bytes (CRLF lines, not dot-stuffed), stuffed
 * here (RFC 5321 4.5.2), with the final dot. */
static void load_message_file(void)
{
    FILE *f = fopen(O.message_file, "rb");
    if (f == NULL) {
        perror(O.message_file);
        exit(2);
    }
    size_t cap = 1 << 16, n = 0;
    char *raw = malloc(cap);
    size_t got;
    while (raw != NULL && (got = fread(raw + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap)
            raw = realloc(raw, cap *= 2);
    }
    fclose(f);
    if (raw == NULL || n == 0) {
        fprintf(stderr, "%s: empty or unreadable\n", O.message_file);
        exit(2);
    }
    g_msg = malloc(2 * n + 8);
    if (g_msg == NULL) {
        perror("malloc");
        exit(1);
    }
    size_t o = 0;
    bool bol = true;
    for (size_t i = 0; i < n; i++) {
        if (bol && raw[i] == '.')
            g_msg[o++] = '.';
        g_msg[o++] = raw[i];
        bol = raw[i] == '\n';
    }
    if (!bol) {
        g_msg[o++] = '\r';
        g_msg[o++] = '\n';
    }
    memcpy(g_msg + o, ".\r\n", 3);
    g_msg_len = o + 3;
    O.size = g_msg_len;
    free(raw);
}

static void build_message(void)
{
    if (O.message_file != NULL) {
        load_message_file();
        return;
    }
    size_t cap = O.size + 1024;
    g_msg = malloc(cap);
    if (!g_msg) {
        perror("malloc");
        exit(1);
    }
    int h = snprintf(g_msg, cap,
                     "From: <%s>\r\nTo: <rcpt@%s>\r\nSubject: ortoo-load %zu bytes\r\n"
                     "Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n"
                     "Message-ID: <load.%d@load.test>\r\n\r\n",
                     O.from, O.domains[0], O.size, (int)getpid());
    size_t len = (size_t)h;
    /* body lines of up to 78 characters; none starts with '.' (no stuffing needed) */
    static const char alpha[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    unsigned k = 0;
    while (len + 3 < O.size) {
        size_t room = O.size - 3 - len, line;
        if (room < 3)
            break; /* headers longer than asked: the size is approximate */
        if (room <= 80)
            line = room - 2; /* the last line fills the size exactly */
        else if (room - 80 < 3)
            line = 70; /* leave room for a last line of at least one character */
        else
            line = 78;
        for (size_t i = 0; i < line; i++)
            g_msg[len++] = alpha[(k + i) % (sizeof(alpha) - 1)];
        g_msg[len++] = '\r';
        g_msg[len++] = '\n';
        k++;
    }
    memcpy(g_msg + len, ".\r\n", 3);
    g_msg_len = len + 3;
}

static char *b64(const unsigned char *in, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc(4 * ((n + 2) / 3) + 1), *p = out;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? in[i + 2] : 0);
        *p++ = tab[v >> 18 & 63];
        *p++ = tab[v >> 12 & 63];
        *p++ = i + 1 < n ? tab[v >> 6 & 63] : '=';
        *p++ = i + 2 < n ? tab[v & 63] : '=';
    }
    *p = '\0';
    return out;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: ortoo-load --server HOST:PORT [options]\n"
            "  --connections N   concurrent connections (10)\n"
            "  --messages N      total messages, or --duration S seconds\n"
            "  --size BYTES      message size on the wire (2048)\n"
            "  --rcpts N         recipients per message (1)\n"
            "  --per-conn N      messages per connection (0 = unlimited)\n"
            "  --pipelining      MAIL+RCPT+DATA in one write when offered\n"
            "  --tls | --starttls   implicit TLS, or STARTTLS\n"
            "  --resume          TLS session resumption (each ticket used once)\n"
            "  --no-mail         sessions only: EHLO, [STARTTLS, EHLO], [AUTH], QUIT;\n"
            "                    --messages counts sessions\n"
            "  --auth USER:PASS  AUTH PLAIN\n"
            "  --rate R          target messages per second\n"
            "  --from ADDR       envelope sender (load@load.test)\n"
            "  --message FILE    send FILE (CRLF lines; stuffed here) instead of a made-up\n"
            "                    message of --size bytes\n"
            "  --to-domain D[,D] recipient domains (bench.test): u<N>@D\n"
            "  --to ADDR         every recipient is ADDR instead\n"
            "  --threads N       threads (1)\n"
            "  --timeout S       give up after S seconds without progress (30)\n"
            "  --idle S          open the connections, EHLO, hold them S seconds, QUIT\n"
            "  --json            one JSON object on stdout\n");
    exit(2);
}

static void parse_server(const char *s)
{
    const char *colon;
    if (s[0] == '[') {
        const char *e = strchr(s, ']');
        if (!e || e[1] != ':')
            usage();
        snprintf(O.host, sizeof(O.host), "%.*s", (int)(e - s - 1), s + 1);
        colon = e + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            usage();
        snprintf(O.host, sizeof(O.host), "%.*s", (int)(colon - s), s);
    }
    snprintf(O.port, sizeof(O.port), "%s", colon + 1);
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        { "server", 1, 0, 'S' }, { "connections", 1, 0, 'c' }, { "messages", 1, 0, 'm' },
        { "duration", 1, 0, 'd' }, { "size", 1, 0, 's' }, { "rcpts", 1, 0, 'r' },
        { "per-conn", 1, 0, 'p' }, { "pipelining", 0, 0, 'P' }, { "tls", 0, 0, 'T' },
        { "starttls", 0, 0, 'X' }, { "resume", 0, 0, 'R' }, { "auth", 1, 0, 'a' },
        { "rate", 1, 0, 'q' }, { "from", 1, 0, 'f' }, { "to-domain", 1, 0, 't' },
        { "threads", 1, 0, 'j' }, { "timeout", 1, 0, 'o' }, { "json", 0, 0, 'J' },
        { "idle", 1, 0, 'i' }, { "to", 1, 0, 'A' }, { "help", 0, 0, 'h' },
        { "no-mail", 0, 0, 'N' }, { "message", 1, 0, 'M' }, { 0, 0, 0, 0 },
    };
    const char *domains = "bench.test";
    int ch;
    bool have_server = false;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'S': parse_server(optarg); have_server = true; break;
        case 'c': O.connections = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'm': O.messages = strtoull(optarg, NULL, 10); break;
        case 'd': O.duration = strtod(optarg, NULL); break;
        case 's': O.size = strtoul(optarg, NULL, 10); break;
        case 'r': O.rcpts = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'p': O.per_conn = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'P': O.pipelining = true; break;
        case 'T': O.tls = true; break;
        case 'X': O.starttls = true; break;
        case 'R': O.resume = true; break;
        case 'N': O.no_mail = true; break;
        case 'M': O.message_file = optarg; break;
        case 'a': {
            const char *c = strchr(optarg, ':');
            if (!c)
                usage();
            size_t ul = (size_t)(c - optarg), pl = strlen(c + 1);
            unsigned char *buf = malloc(ul + pl + 2);
            buf[0] = 0; /* RFC 4616 2: [authzid] NUL authcid NUL passwd */
            memcpy(buf + 1, optarg, ul);
            buf[1 + ul] = 0;
            memcpy(buf + 2 + ul, c + 1, pl);
            O.auth_plain = b64(buf, ul + pl + 2);
            free(buf);
            break;
        }
        case 'q': O.rate = strtod(optarg, NULL); break;
        case 'f': snprintf(O.from, sizeof(O.from), "%s", optarg); break;
        case 't': domains = optarg; break;
        case 'j': O.threads = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'o': O.timeout = strtod(optarg, NULL); break;
        case 'J': O.json = true; break;
        case 'A': O.to = optarg; break;
        case 'i': O.idle = strtod(optarg, NULL); O.duration = O.idle; break;
        default: usage();
        }
    }
    if (!have_server || O.connections == 0 || O.rcpts == 0 || O.rcpts > 100 ||
        (O.messages == 0 && O.duration <= 0) || O.threads == 0 ||
        O.threads > LOAD_MAX_THREADS || (O.tls && O.starttls) ||
        (O.size < 200 && O.message_file == NULL))
        usage();
    if (O.threads > O.connections)
        O.threads = O.connections;
    /* recipient domains */
    char *dl = strdup(domains);
    for (char *save, *tok = strtok_r(dl, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        O.domains = realloc(O.domains, (O.ndomains + 1) * sizeof(*O.domains));
        O.domains[O.ndomains++] = tok;
    }
    if (!O.ndomains)
        usage();
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM };
    int gr = getaddrinfo(O.host, O.port, &hints, &g_addr);
    if (gr) {
        fprintf(stderr, "ortoo-load: %s:%s: %s\n", O.host, O.port, gai_strerror(gr));
        return 2;
    }
    build_message();
    if (O.tls || O.starttls) {
        g_ssl_ctx = SSL_CTX_new(TLS_client_method());
        SSL_CTX_set_verify(g_ssl_ctx, SSL_VERIFY_NONE, NULL); /* a benchmark, loopback only */
        SSL_CTX_set_mode(g_ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        /* A peer closing after 221 without close_notify is an ordinary end,
         * not a fatal error that would spoil the session (see the top). */
        SSL_CTX_set_options(g_ssl_ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
        if (O.resume) {
            SSL_CTX_set_session_cache_mode(g_ssl_ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
            SSL_CTX_sess_set_new_cb(g_ssl_ctx, new_session_cb);
        }
    }
    g_t0 = now_s();
    g_t_end = g_t0 + O.duration;
    unsigned base = O.connections / O.threads, extra = O.connections % O.threads;
    for (unsigned i = 0; i < O.threads; i++) {
        struct thread *t = &g_threads[i];
        t->id = i;
        t->nconns = base + (i < extra);
        t->conns = calloc(t->nconns, sizeof(struct conn));
        t->ep = epoll_create1(EPOLL_CLOEXEC);
        t->rate = O.rate > 0 ? O.rate / O.threads : 0;
        if (!t->conns || t->ep < 0) {
            perror("ortoo-load: setup");
            return 1;
        }
    }
    for (unsigned i = 0; i < O.threads; i++)
        pthread_create(&g_threads[i].tid, NULL, thread_main, &g_threads[i]);
    for (unsigned i = 0; i < O.threads; i++)
        pthread_join(g_threads[i].tid, NULL);
    double t_end = now_s();

    /* merge */
    struct thread *s = calloc(1, sizeof(*s));
    double last = g_t0;
    for (unsigned i = 0; i < O.threads; i++) {
        struct thread *t = &g_threads[i];
        s->ok += t->ok; s->fail += t->fail; s->bytes += t->bytes;
        s->conns_opened += t->conns_opened; s->conn_errors += t->conn_errors;
        s->connect_fail += t->connect_fail; s->dropped += t->dropped;
        s->hs_full += t->hs_full; s->hs_resumed += t->hs_resumed; s->held += t->held;
        s->tickets_rcvd += t->tickets_rcvd; s->tickets_reused += t->tickets_reused;
        for (int k = 0; k < 600; k++)
            s->codes[k] += t->codes[k];
        for (int k = 0; k < LOAD_HBUCKETS; k++)
            s->lat.n[k] += t->lat.n[k];
        s->lat.count += t->lat.count;
        s->lat.sum += t->lat.sum;
        if (t->lat.max > s->lat.max)
            s->lat.max = t->lat.max;
        if (t->last_done > last)
            last = t->last_done;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu_user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
    double cpu_sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    double el = last > g_t0 ? last - g_t0 : t_end - g_t0;
    double mps = el > 0 ? (double)s->ok / el : 0, mbs = el > 0 ? (double)s->bytes / el / 1e6 : 0;
    double p50 = (double)hist_pct(&s->lat, 50) / 1e6, p90 = (double)hist_pct(&s->lat, 90) / 1e6,
           p99 = (double)hist_pct(&s->lat, 99) / 1e6, mx = (double)s->lat.max / 1e6;
    if (O.json) {
        printf("{\"server\":\"%s:%s\",\"connections\":%u,\"size\":%zu,\"rcpts\":%u,\"per_conn\":%u,"
               "\"pipelining\":%s,\"tls\":\"%s\",\"resume\":%s,\"auth\":%s,\"threads\":%u,"
               "\"elapsed_s\":%.4f,\"ok\":%llu,\"failed\":%llu,\"msgs_per_s\":%.1f,\"mb_per_s\":%.2f,"
               "\"latency_ms\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f,\"mean\":%.3f},"
               "\"connections_opened\":%llu,\"connection_errors\":%llu,\"connect_failures\":%llu,"
               "\"dropped_in_transaction\":%llu,\"handshakes_full\":%llu,\"handshakes_resumed\":%llu,"
               "\"held\":%llu,\"aborted\":%s,\"mode\":\"%s\",\"tickets_received\":%llu,"
               "\"tickets_reused\":%llu,\"cpu_user_s\":%.3f,\"cpu_sys_s\":%.3f,\"codes\":{",
               O.host, O.port, O.connections, g_msg_len, O.rcpts, O.per_conn,
               O.pipelining ? "true" : "false", O.tls ? "implicit" : O.starttls ? "starttls" : "none",
               O.resume ? "true" : "false", O.auth_plain ? "true" : "false", O.threads, el,
               (unsigned long long)s->ok, (unsigned long long)s->fail, mps, mbs, p50, p90, p99, mx,
               s->lat.count ? (double)s->lat.sum / (double)s->lat.count / 1e6 : 0.0,
               (unsigned long long)s->conns_opened, (unsigned long long)s->conn_errors,
               (unsigned long long)s->connect_fail, (unsigned long long)s->dropped,
               (unsigned long long)s->hs_full, (unsigned long long)s->hs_resumed,
               (unsigned long long)s->held, atomic_load(&g_abort) ? "true" : "false",
               O.no_mail ? "sessions" : "messages", (unsigned long long)s->tickets_rcvd,
               (unsigned long long)s->tickets_reused, cpu_user, cpu_sys);
        bool first = true;
        for (int k = 100; k < 600; k++)
            if (s->codes[k]) {
                printf("%s\"%d\":%llu", first ? "" : ",", k, (unsigned long long)s->codes[k]);
                first = false;
            }
        printf("}}\n");
    } else {
        printf("server %s:%s  connections %u  size %zu  rcpts %u  per-conn %u%s%s\n", O.host, O.port,
               O.connections, g_msg_len, O.rcpts, O.per_conn, O.pipelining ? "  pipelining" : "",
               O.tls ? "  tls" : O.starttls ? "  starttls" : "");
        printf("%s ok %llu  failed %llu  in %.3f s\n", O.no_mail ? "sessions" : "messages",
               (unsigned long long)s->ok,
               (unsigned long long)s->fail, el);
        printf("throughput %.1f %s/s  %.2f MB/s\n", mps, O.no_mail ? "sessions" : "msgs", mbs);
        printf("latency dot->reply ms  p50 %.3f  p90 %.3f  p99 %.3f  max %.3f\n", p50, p90, p99, mx);
        printf("connections opened %llu  errors %llu  connect failures %llu  dropped mid-transaction %llu\n",
               (unsigned long long)s->conns_opened, (unsigned long long)s->conn_errors,
               (unsigned long long)s->connect_fail, (unsigned long long)s->dropped);
        if (O.tls || O.starttls)
            printf("tls handshakes full %llu  resumed %llu  tickets received %llu  reused %llu\n",
                   (unsigned long long)s->hs_full, (unsigned long long)s->hs_resumed,
                   (unsigned long long)s->tickets_rcvd, (unsigned long long)s->tickets_reused);
        printf("cpu (this process) user %.3f s  sys %.3f s\n", cpu_user, cpu_sys);
        if (O.idle > 0)
            printf("idle connections held %llu\n", (unsigned long long)s->held);
        printf("replies:");
        for (int k = 100; k < 600; k++)
            if (s->codes[k])
                printf(" %d=%llu", k, (unsigned long long)s->codes[k]);
        printf("\n");
    }
    freeaddrinfo(g_addr);
    if (g_ssl_ctx)
        SSL_CTX_free(g_ssl_ctx);
    bool bad = (O.idle > 0 ? s->held == 0 : s->ok == 0) || (s->conns_opened == 0) || atomic_load(&g_abort);
    free(s);
    for (unsigned i = 0; i < O.threads; i++) {
        free(g_threads[i].conns);
        close(g_threads[i].ep);
    }
    free(g_msg);
    free(O.auth_plain);
    free(O.domains);
    free(dl);
    return bad ? 1 : 0;
}
