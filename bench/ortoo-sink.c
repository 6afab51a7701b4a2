// SPDX-License-Identifier: MIT
/*
 * ortoo-sink.c - the smart SMTP sink of ortoo's benchmark (issue 3).
 *
 * Accepts mail as fast as it can (no storage), or answers by a rule file so
 * that a sender is measured against a receiver that pushes back: a share of
 * 4xx and 5xx replies per recipient, domain or for all, delays before
 * replies, dropped connections, STARTTLS offered or not.  It counts what it
 * received, per recipient domain, and prints the counts on SIGUSR1 and at
 * exit (SIGINT/SIGTERM), optionally also into a file (--counts FILE, written
 * atomically through a temporary file and rename).
 *
 * Threads: --threads N listeners on the same port (SO_REUSEPORT), each with
 * its own epoll and its own connections; shared-nothing except the counts,
 * which a per-thread mutex guards for the reporter.  The server side of RFC
 * 5321 is minimal but honest: PIPELINING (RFC 2920; replies are batched and
 * written once per read), STARTTLS (RFC 3207) with --cert/--key, implicit TLS
 * with --tls (RFC 8314), AUTH PLAIN/LOGIN accepted for any credentials.  The
 * end of DATA is found by a small automaton over "\r\n.\r\n" that survives
 * any split between reads.
 *
 * --log FILE appends one line per recipient of every message accepted at
 * the end of DATA (the address as given in RCPT TO), written with one
 * O_APPEND write per message: scenario G counts deliveries per message with
 * it (ortoo-load gives every message its own recipient).
 *
 * The counts include dkim=N: accepted messages whose header block holds a
 * DKIM-Signature field (RFC 6376 3.5), so that a benchmark of signed relay
 * can tell that every message arrived signed (not whether the signature
 * verifies: that is the tests' job).
 *
 * Rule file: one rule a line, '#' comments.  MATCH KEY=VALUE...
 *   MATCH  "*" | "@domain" | "local@domain"  (recipient rules; the most
 *          specific match wins), "connect", or "data".
 *   recipients: tempfail=SHARE permfail=SHARE delay=MS
 *   connect:    drop=SHARE (close right after accept) delay=MS (greeting)
 *               starttls=on|off
 *   data:       tempfail=SHARE permfail=SHARE drop=SHARE delay=MS
 * A SHARE is a probability in [0,1].
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define SINK_RBUF 16384
#define SINK_WBUF 8192
#define SINK_MAX_RCPT 1000
#define SINK_MAX_THREADS 32

/* ---- rules -------------------------------------------------------------------- */

enum rule_kind { RULE_RCPT_ALL, RULE_DOMAIN, RULE_ADDR, RULE_CONNECT, RULE_DATA };

struct rule {
    enum rule_kind kind;
    char *match;                /* lower-case domain or address; NULL for the others */
    double tempfail, permfail, drop;
    unsigned delay_ms;
};

static struct rule *g_rules;
static size_t g_nrules;
static const struct rule *g_connect_rule, *g_data_rule, *g_all_rule;
static bool g_starttls_on = true;

static void lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

/* Parse the rule file; exits with "file:line: message" on a bad line. */
static void rules_load(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "ortoo-sink: %s: %s\n", path, strerror(errno));
        exit(2);
    }
    char line[1024];
    unsigned ln = 0;
    while (fgets(line, sizeof(line), f)) {
        ln++;
        char *h = strchr(line, '#');
        if (h)
            *h = '\0';
        char *save, *tok = strtok_r(line, " \t\r\n", &save);
        if (!tok)
            continue;
        struct rule r = { 0 };
        if (!strcmp(tok, "*"))
            r.kind = RULE_RCPT_ALL;
        else if (!strcmp(tok, "connect"))
            r.kind = RULE_CONNECT;
        else if (!strcmp(tok, "data"))
            r.kind = RULE_DATA;
        else if (tok[0] == '@')
            r.kind = RULE_DOMAIN, r.match = strdup(tok + 1);
        else if (strchr(tok, '@'))
            r.kind = RULE_ADDR, r.match = strdup(tok);
        else
            goto bad;
        if (r.match)
            lower(r.match);
        while ((tok = strtok_r(NULL, " \t\r\n", &save))) {
            char *eq = strchr(tok, '=');
            if (!eq)
                goto bad;
            *eq = '\0';
            const char *v = eq + 1;
            if (!strcmp(tok, "tempfail"))
                r.tempfail = atof(v);
            else if (!strcmp(tok, "permfail"))
                r.permfail = atof(v);
            else if (!strcmp(tok, "drop"))
                r.drop = atof(v);
            else if (!strcmp(tok, "delay"))
                r.delay_ms = (unsigned)atoi(v);
            else if (!strcmp(tok, "starttls") && r.kind == RULE_CONNECT)
                g_starttls_on = !strcmp(v, "on");
            else
                goto bad;
        }
        g_rules = realloc(g_rules, (g_nrules + 1) * sizeof(*g_rules));
        g_rules[g_nrules++] = r;
        continue;
bad:
        fprintf(stderr, "ortoo-sink: %s:%u: bad rule\n", path, ln);
        exit(2);
    }
    fclose(f);
    for (size_t i = 0; i < g_nrules; i++) {
        if (g_rules[i].kind == RULE_CONNECT)
            g_connect_rule = &g_rules[i];
        else if (g_rules[i].kind == RULE_DATA)
            g_data_rule = &g_rules[i];
        else if (g_rules[i].kind == RULE_RCPT_ALL)
            g_all_rule = &g_rules[i];
    }
}

/* The most specific recipient rule for addr (lower-case), or NULL. */
static const struct rule *rule_for(const char *addr, const char *domain)
{
    const struct rule *dom = NULL;
    for (size_t i = 0; i < g_nrules; i++) {
        const struct rule *r = &g_rules[i];
        if (r->kind == RULE_ADDR && !strcmp(r->match, addr))
            return r;
        if (r->kind == RULE_DOMAIN && !dom && !strcmp(r->match, domain))
            dom = r;
    }
    return dom ? dom : g_all_rule;
}

/* ---- counts per domain ---------------------------------------------------------- */

struct dom {
    char *name;                 /* NULL = empty slot */
    uint64_t messages, rcpts, tempfail, permfail;
};

/*
 * One thread's counts.  Invariant: slots is a power of two, used <= slots/2;
 * lock is taken by the owner thread for every update and by the reporter.
 */
struct counts {
    pthread_mutex_t lock;
    struct dom *tab;
    size_t slots, used;
    uint64_t messages, rcpts, bytes, tempfail, permfail, dropped, connections, tls, dkim;
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static struct dom *counts_dom(struct counts *c, const char *name)
{
    if (c->used * 2 >= c->slots) {
        size_t ns = c->slots ? c->slots * 2 : 64;
        struct dom *nt = calloc(ns, sizeof(*nt));
        for (size_t i = 0; i < c->slots; i++) {
            if (!c->tab[i].name)
                continue;
            size_t j = hash_str(c->tab[i].name) & (ns - 1);
            while (nt[j].name)
                j = (j + 1) & (ns - 1);
            nt[j] = c->tab[i];
        }
        free(c->tab);
        c->tab = nt;
        c->slots = ns;
    }
    size_t j = hash_str(name) & (c->slots - 1);
    while (c->tab[j].name && strcmp(c->tab[j].name, name))
        j = (j + 1) & (c->slots - 1);
    if (!c->tab[j].name) {
        c->tab[j].name = strdup(name);
        c->used++;
    }
    return &c->tab[j];
}

/* ---- connections ------------------------------------------------------------------ */

enum sstate { S_HANDSHAKE, S_CMD, S_DATA, S_AUTH, S_QUIT };

struct sthread;

/*
 * One server connection.  Invariants: wbuf[woff..wlen) is unsent; while
 * paused_until != 0 no input is processed and no output is written (a delay
 * rule is running); ndom <= SINK_MAX_RCPT names the domains of the accepted
 * recipients of the open transaction (interned in the thread's table).
 */
struct sconn {
    struct sthread *t;
    int fd;
    SSL *ssl;
    enum sstate state;
    unsigned auth_steps;        /* lines still expected in an AUTH exchange */
    unsigned dmatch;            /* chars of "\r\n.\r\n" matched in DATA */
    /* DATA's header block: in_head until its empty line; hcol = characters of
     * the current line so far (CRs not counted), hmatch = that line still
     * starts like "DKIM-Signature:", dkim = such a field was seen */
    bool in_head, hmatch, dkim;
    unsigned hcol;
    uint64_t paused_until;      /* ns; 0 = running */
    bool closing, in_heap, dead, start_tls, greeted;
    uint32_t evmask;            /* events registered with epoll */
    size_t rlen, wlen, woff, msg_bytes;
    unsigned ndom;
    struct dom *doms[SINK_MAX_RCPT];
    char *rlog;                 /* --log: "addr\n" of the accepted recipients */
    size_t rlog_len, rlog_cap;
    char rbuf[SINK_RBUF];
    char wbuf[SINK_WBUF];
};

struct timer {
    uint64_t due;
    struct sconn *c;
};

struct sthread {
    pthread_t tid;
    int ep, lfd;
    uint64_t rng;
    struct counts cnt;
    struct timer *heap;
    size_t nheap, capheap;
};

static struct {
    char host[256], port[16], hostname[256];
    unsigned threads;
    bool tls, quiet;
    char *cert, *key, *counts_file, *port_file, *log_file;
    int log_fd;
} O = { .host = "127.0.0.1", .port = "0", .hostname = "sink.test", .threads = 1, .log_fd = -1 };

static SSL_CTX *g_ssl;
static atomic_bool g_stop;
static struct sthread g_t[SINK_MAX_THREADS];

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double rnd(struct sthread *t)
{
    t->rng ^= t->rng << 13; /* xorshift64 */
    t->rng ^= t->rng >> 7;
    t->rng ^= t->rng << 17;
    return (double)(t->rng >> 11) / 9007199254740992.0;
}

static void heap_push(struct sthread *t, uint64_t due, struct sconn *c)
{
    if (t->nheap == t->capheap) {
        t->capheap = t->capheap ? t->capheap * 2 : 64;
        t->heap = realloc(t->heap, t->capheap * sizeof(*t->heap));
    }
    size_t i = t->nheap++;
    while (i && t->heap[(i - 1) / 2].due > due) {
        t->heap[i] = t->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    t->heap[i] = (struct timer){ due, c };
    c->in_heap = true;
}

static struct timer heap_pop(struct sthread *t)
{
    struct timer top = t->heap[0], last = t->heap[--t->nheap];
    size_t i = 0;
    for (;;) {
        size_t k = 2 * i + 1;
        if (k >= t->nheap)
            break;
        if (k + 1 < t->nheap && t->heap[k + 1].due < t->heap[k].due)
            k++;
        if (t->heap[k].due >= last.due)
            break;
        t->heap[i] = t->heap[k];
        i = k;
    }
    if (t->nheap)
        t->heap[i] = last;
    return top;
}

/* Register interest: none while paused (level-triggered epoll would spin). */
static void ep_mask(struct sconn *c, uint32_t mask)
{
    if (c->evmask == mask || c->fd < 0)
        return;
    c->evmask = mask;
    struct epoll_event ev = { .events = mask, .data.ptr = c };
    epoll_ctl(c->t->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void ep_out(struct sconn *c, bool on)
{
    ep_mask(c, EPOLLIN | (on ? EPOLLOUT : 0));
}

static void conn_free(struct sconn *c)
{
    if (c->fd >= 0) {
        if (c->ssl)
            SSL_free(c->ssl);
        close(c->fd);
        c->fd = -1;
    }
    free(c->rlog);
    c->rlog = NULL;
    c->rlog_len = c->rlog_cap = 0;
    if (c->in_heap)
        c->dead = true; /* the timer frees it */
    else
        free(c);
}

static void reply(struct sconn *c, const char *s)
{
    size_t n = strlen(s);
    if (c->wlen + n > SINK_WBUF)
        n = SINK_WBUF - c->wlen; /* cannot happen: process() keeps 1 KiB free */
    memcpy(c->wbuf + c->wlen, s, n);
    c->wlen += n;
}

/* Write wbuf.  0 = all written, 1 = blocked (EPOLLOUT armed), -1 = error. */
static int flush(struct sconn *c)
{
    while (c->woff < c->wlen) {
        ssize_t n;
        if (c->ssl) {
            ERR_clear_error(); /* SSL_get_error reads the thread's error queue */
            int r = SSL_write(c->ssl, c->wbuf + c->woff, (int)(c->wlen - c->woff));
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
                    ep_out(c, true);
                    return 1;
                }
                return -1;
            }
            n = r;
        } else {
            n = write(c->fd, c->wbuf + c->woff, c->wlen - c->woff);
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR) {
                    ep_out(c, true);
                    return 1;
                }
                return -1;
            }
        }
        c->woff += (size_t)n;
    }
    c->woff = c->wlen = 0;
    ep_out(c, false);
    return 0;
}

static void pause_for(struct sconn *c, unsigned ms)
{
    c->paused_until = now_ns() + (uint64_t)ms * 1000000ull;
    heap_push(c->t, c->paused_until, c);
    ep_mask(c, 0);
}

static void drop(struct sconn *c)
{
    struct counts *k = &c->t->cnt;
    pthread_mutex_lock(&k->lock);
    k->dropped++;
    pthread_mutex_unlock(&k->lock);
    conn_free(c);
}

static void end_of_message(struct sconn *c)
{
    struct sthread *t = c->t;
    struct counts *k = &t->cnt;
    const struct rule *r = g_data_rule;
    c->state = S_CMD;
    if (r && r->drop > 0 && rnd(t) < r->drop) {
        c->closing = true; /* the caller drops it */
        return;
    }
    double x = r ? rnd(t) : 1.0;
    pthread_mutex_lock(&k->lock);
    if (r && x < r->tempfail) {
        k->tempfail++;
        reply(c, "451 4.3.0 sink: try again later\r\n");
    } else if (r && x < r->tempfail + r->permfail) {
        k->permfail++;
        reply(c, "554 5.6.0 sink: message refused\r\n");
    } else {
        k->messages++;
        k->dkim += c->dkim;
        k->rcpts += c->ndom;
        k->bytes += c->msg_bytes;
        /* one message per distinct domain, one rcpt per recipient */
        for (unsigned i = 0; i < c->ndom; i++) {
            bool first = true;
            for (unsigned j = 0; j < i; j++)
                if (c->doms[j] == c->doms[i]) {
                    first = false;
                    break;
                }
            c->doms[i]->rcpts++;
            if (first)
                c->doms[i]->messages++;
        }
        reply(c, "250 2.0.0 Ok: queued by sink\r\n");
        if (O.log_fd >= 0 && c->rlog_len > 0 &&
            write(O.log_fd, c->rlog, c->rlog_len) != (ssize_t)c->rlog_len)
            perror("ortoo-sink: --log");
    }
    pthread_mutex_unlock(&k->lock);
    c->ndom = 0;
    c->rlog_len = 0;
    if (r && r->delay_ms)
        pause_for(c, r->delay_ms);
}

/* Extract the address inside <...> after "MAIL FROM:" / "RCPT TO:"; lower-cases it. */
static char *path_of(char *arg)
{
    char *lt = strchr(arg, '<'), *gt;
    if (!lt || !(gt = strchr(lt, '>')))
        return NULL;
    *gt = '\0';
    lower(lt + 1);
    return lt + 1;
}

static void on_rcpt(struct sconn *c, char *arg)
{
    struct sthread *t = c->t;
    char *addr = path_of(arg);
    if (!addr) {
        reply(c, "501 5.1.3 sink: bad address\r\n");
        return;
    }
    const char *at = strrchr(addr, '@');
    const char *domain = at ? at + 1 : "";
    const struct rule *r = rule_for(addr, domain);
    double x = r ? rnd(t) : 1.0;
    struct counts *k = &t->cnt;
    pthread_mutex_lock(&k->lock);
    struct dom *d = counts_dom(k, domain);
    if (r && x < r->tempfail) {
        d->tempfail++;
        k->tempfail++;
        reply(c, "450 4.2.0 sink: mailbox busy, try later\r\n");
    } else if (r && x < r->tempfail + r->permfail) {
        d->permfail++;
        k->permfail++;
        reply(c, "550 5.1.1 sink: no such user\r\n");
    } else if (c->ndom >= SINK_MAX_RCPT) {
        reply(c, "452 4.5.3 sink: too many recipients\r\n"); /* RFC 5321 4.5.3.1.10 */
    } else {
        c->doms[c->ndom++] = d;
        if (O.log_fd >= 0) {
            size_t n = strlen(addr);
            if (c->rlog_len + n + 1 > c->rlog_cap) {
                size_t nc = (c->rlog_cap ? c->rlog_cap * 2 : 256) + n + 1;
                char *nb = realloc(c->rlog, nc);
                if (nb) {
                    c->rlog = nb;
                    c->rlog_cap = nc;
                }
            }
            if (c->rlog_len + n + 1 <= c->rlog_cap) {
                memcpy(c->rlog + c->rlog_len, addr, n);
                c->rlog[c->rlog_len + n] = '\n';
                c->rlog_len += n + 1;
            }
        }
        reply(c, "250 2.1.5 Ok\r\n");
    }
    pthread_mutex_unlock(&k->lock);
    if (r && r->delay_ms)
        pause_for(c, r->delay_ms);
}

static bool verb(const char *line, const char *v)
{
    size_t n = strlen(v);
    return strncasecmp(line, v, n) == 0 && (line[n] == '\0' || line[n] == ' ' || line[n] == ':');
}

static void on_command(struct sconn *c, char *line)
{
    if (c->state == S_AUTH) {
        if (--c->auth_steps == 0) {
            c->state = S_CMD;
            reply(c, "235 2.7.0 sink: authenticated\r\n");
        } else {
            reply(c, "334 UGFzc3dvcmQ6\r\n");
        }
        return;
    }
    if (verb(line, "EHLO")) {
        char buf[512];
        snprintf(buf, sizeof(buf),
                 "250-%s\r\n250-PIPELINING\r\n250-SIZE 0\r\n250-8BITMIME\r\n"
                 "250-ENHANCEDSTATUSCODES\r\n250-AUTH PLAIN LOGIN\r\n%s250 SMTPUTF8\r\n",
                 O.hostname, g_ssl && g_starttls_on && !c->ssl ? "250-STARTTLS\r\n" : "");
        reply(c, buf);
        c->ndom = 0;
        c->rlog_len = 0;
    } else if (verb(line, "HELO")) {
        reply(c, "250 sink\r\n");
    } else if (verb(line, "MAIL")) {
        c->ndom = 0;
        c->rlog_len = 0;
        reply(c, "250 2.1.0 Ok\r\n");
    } else if (verb(line, "RCPT")) {
        on_rcpt(c, line + 4);
    } else if (verb(line, "DATA")) {
        if (!c->ndom) {
            reply(c, "554 5.5.1 sink: no valid recipients\r\n");
        } else {
            reply(c, "354 End data with <CR><LF>.<CR><LF>\r\n");
            c->state = S_DATA;
            c->dmatch = 2; /* the CRLF ending the DATA line counts (RFC 5321 4.1.1.4) */
            c->msg_bytes = 0;
            c->in_head = c->hmatch = true;
            c->dkim = false;
            c->hcol = 0;
        }
    } else if (verb(line, "RSET")) {
        c->ndom = 0;
        c->rlog_len = 0;
        reply(c, "250 2.0.0 Ok\r\n");
    } else if (verb(line, "NOOP")) {
        reply(c, "250 2.0.0 Ok\r\n");
    } else if (verb(line, "QUIT")) {
        reply(c, "221 2.0.0 Bye\r\n");
        c->state = S_QUIT;
    } else if (verb(line, "STARTTLS") && g_ssl && g_starttls_on && !c->ssl) {
        reply(c, "220 2.0.0 Ready to start TLS\r\n");
        c->start_tls = true;
    } else if (verb(line, "AUTH")) {
        /* any credentials: "AUTH PLAIN x" (0 more lines), "AUTH PLAIN" (1), "AUTH LOGIN" (2) */
        const char *mech = line + 5;
        bool initial = strchr(mech, ' ') != NULL;
        if (!strncasecmp(mech, "LOGIN", 5)) {
            c->auth_steps = initial ? 1 : 2;
            c->state = S_AUTH;
            reply(c, initial ? "334 UGFzc3dvcmQ6\r\n" : "334 VXNlcm5hbWU6\r\n");
        } else if (initial) {
            reply(c, "235 2.7.0 sink: authenticated\r\n");
        } else {
            c->auth_steps = 1;
            c->state = S_AUTH;
            reply(c, "334 \r\n");
        }
    } else {
        reply(c, "502 5.5.2 sink: command not recognized\r\n");
    }
}

/* One byte of the header block: notes a DKIM-Signature field, ends at the empty line. */
static void scan_head(struct sconn *c, char ch)
{
    static const char name[] = "dkim-signature:";
    if (ch == '\n') {
        c->in_head = c->hcol != 0; /* an empty line ends the header block (RFC 5322 2.1) */
        c->hcol = 0;
        c->hmatch = true;
        return;
    }
    if (ch == '\r')
        return;
    if (c->hmatch && c->hcol < sizeof(name) - 1) {
        if (tolower((unsigned char)ch) != name[c->hcol])
            c->hmatch = false;
        else if (c->hcol == sizeof(name) - 2)
            c->dkim = true;
    }
    c->hcol++;
}

/* Scan DATA bytes for "\r\n.\r\n"; returns bytes consumed, sets S_CMD at the end. */
static size_t scan_data(struct sconn *c, const char *p, size_t n)
{
    static const char pat[] = "\r\n.\r\n";
    size_t i = 0;
    while (i < n) {
        if (c->in_head) {
            scan_head(c, p[i]); /* byte by byte, then the matcher below sees it too */
        } else if (c->dmatch == 0) {
            const char *q = memchr(p + i, '\r', n - i);
            if (!q) {
                i = n;
                break;
            }
            i = (size_t)(q - p) + 1;
            c->dmatch = 1;
            continue;
        }
        char ch = p[i++];
        if (c->dmatch == 0) {
            c->dmatch = ch == '\r' ? 1 : 0; /* in the header block: no memchr skip */
            continue;
        }
        if (ch == pat[c->dmatch]) {
            if (++c->dmatch == 5) {
                c->dmatch = 0;
                c->msg_bytes += i;
                end_of_message(c);
                return i;
            }
        } else {
            c->dmatch = ch == '\r' ? 1 : 0;
        }
    }
    c->msg_bytes += i;
    return i;
}

/*
 * Process buffered input until it runs out, a delay pauses the connection,
 * or the output buffer is nearly full.  Returns -1 when the connection must
 * be closed (then the caller frees it), 0 otherwise.
 */
static int process(struct sconn *c)
{
    size_t off = 0;
    while (off < c->rlen && !c->paused_until && !c->closing && c->state != S_QUIT && !c->start_tls &&
           c->wlen + 1024 < SINK_WBUF) {
        if (c->state == S_DATA) {
            off += scan_data(c, c->rbuf + off, c->rlen - off);
            continue;
        }
        char *nl = memchr(c->rbuf + off, '\n', c->rlen - off);
        if (!nl)
            break;
        char *line = c->rbuf + off;
        off = (size_t)(nl - c->rbuf) + 1;
        *nl = '\0';
        if (nl > line && nl[-1] == '\r')
            nl[-1] = '\0';
        on_command(c, line);
    }
    if (c->closing)
        return -1;
    memmove(c->rbuf, c->rbuf + off, c->rlen - off);
    c->rlen -= off;
    if (c->rlen == SINK_RBUF && c->state != S_DATA) {
        return -1; /* a command line longer than the buffer */
    }
    if (c->start_tls) {
        c->rlen = 0; /* RFC 3207 4: discard what the client pipelined after STARTTLS */
    }
    return 0;
}

/* Advance the TLS handshake: 1 done, 0 in progress, -1 failed. */
static int conn_handshake(struct sconn *c)
{
    ERR_clear_error(); /* SSL_get_error reads the thread's error queue */
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->state = S_CMD;
        struct counts *k = &c->t->cnt;
        pthread_mutex_lock(&k->lock);
        k->tls++;
        pthread_mutex_unlock(&k->lock);
        ep_out(c, false);
        return 1;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ)
        ep_out(c, false);
    else if (e == SSL_ERROR_WANT_WRITE)
        ep_out(c, true);
    else
        return -1;
    return 0;
}

/*
 * Drive a connection until the socket would block or a delay pauses it:
 * handshake, flush replies, process buffered commands and data, read.
 * Returns -1 when c was freed, 0 otherwise.
 */
static int conn_drive(struct sconn *c)
{
    for (int rounds = 0; rounds < 256; rounds++) {
        if (c->paused_until)
            return 0;
        if (c->state == S_HANDSHAKE) {
            int h = conn_handshake(c);
            if (h < 0) {
                conn_free(c);
                return -1;
            }
            if (h == 0)
                return 0;
            if (!c->greeted) {
                reply(c, "220 sink ESMTP ready\r\n"); /* implicit TLS: greet now (RFC 8314 3.3) */
                c->greeted = true;
            }
        }
        int fr = flush(c);
        if (fr < 0) {
            conn_free(c);
            return -1;
        }
        if (fr > 0)
            return 0;
        if (c->state == S_QUIT) {
            conn_free(c);
            return -1;
        }
        if (c->start_tls) {
            c->start_tls = false;
            c->ssl = SSL_new(g_ssl);
            SSL_set_fd(c->ssl, c->fd);
            SSL_set_accept_state(c->ssl);
            c->state = S_HANDSHAKE;
            continue;
        }
        if (process(c) < 0) {
            drop(c);
            return -1;
        }
        if (c->wlen || c->start_tls || c->state == S_QUIT)
            continue; /* flush the replies first */
        if (c->paused_until)
            return 0;
        ssize_t n;
        if (c->ssl) {
            ERR_clear_error(); /* SSL_get_error reads the thread's error queue */
            int r = SSL_read(c->ssl, c->rbuf + c->rlen, (int)(SINK_RBUF - c->rlen));
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_READ)
                    return 0;
                if (e == SSL_ERROR_WANT_WRITE) {
                    ep_out(c, true);
                    return 0;
                }
                conn_free(c);
                return -1;
            }
            n = r;
            /* Records already read ahead are taken before processing, so
             * that a pipelined group gets its replies in one write. */
            while (SSL_has_pending(c->ssl) && c->rlen + (size_t)n < SINK_RBUF) {
                r = SSL_read(c->ssl, c->rbuf + c->rlen + n, (int)(SINK_RBUF - c->rlen - (size_t)n));
                if (r <= 0) {
                    ERR_clear_error(); /* the next SSL_read meets the condition again */
                    break;
                }
                n += r;
            }
        } else {
            n = read(c->fd, c->rbuf + c->rlen, SINK_RBUF - c->rlen);
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return 0;
            if (n <= 0) {
                conn_free(c);
                return -1;
            }
        }
        c->rlen += (size_t)n;
    }
    /* The fairness limit was reached with work left (replies not flushed,
     * bytes read but not processed): nothing would wake this connection,
     * so ask for EPOLLOUT, which fires at once on a writable socket. */
    ep_out(c, true);
    return 0;
}

static void on_accept(struct sthread *t)
{
    for (int i = 0; i < 64; i++) {
        int fd = accept4(t->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct counts *k = &t->cnt;
        pthread_mutex_lock(&k->lock);
        k->connections++;
        pthread_mutex_unlock(&k->lock);
        const struct rule *r = g_connect_rule;
        if (r && r->drop > 0 && rnd(t) < r->drop) {
            pthread_mutex_lock(&k->lock);
            k->dropped++;
            pthread_mutex_unlock(&k->lock);
            close(fd);
            continue;
        }
        struct sconn *c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            continue;
        }
        c->t = t;
        c->fd = fd;
        c->state = S_CMD;
        c->evmask = EPOLLIN;
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
        epoll_ctl(t->ep, EPOLL_CTL_ADD, fd, &ev);
        if (O.tls) {
            c->ssl = SSL_new(g_ssl);
            SSL_set_fd(c->ssl, fd);
            SSL_set_accept_state(c->ssl);
            c->state = S_HANDSHAKE;
            conn_drive(c);
            continue;
        }
        reply(c, "220 sink ESMTP ready\r\n");
        c->greeted = true;
        if (r && r->delay_ms)
            pause_for(c, r->delay_ms);
        else
            conn_drive(c);
    }
}

static void *thread_main(void *arg)
{
    struct sthread *t = arg;
    struct epoll_event evs[256];
    struct epoll_event lev = { .events = EPOLLIN, .data.ptr = NULL };
    epoll_ctl(t->ep, EPOLL_CTL_ADD, t->lfd, &lev);
    while (!atomic_load(&g_stop)) {
        int timeout = 100;
        if (t->nheap) {
            uint64_t now = now_ns(), due = t->heap[0].due;
            timeout = due <= now ? 0 : (int)((due - now) / 1000000ull) + 1;
            if (timeout > 100)
                timeout = 100;
        }
        int n = epoll_wait(t->ep, evs, 256, timeout);
        for (int i = 0; i < n; i++) {
            struct sconn *c = evs[i].data.ptr;
            if (!c) {
                on_accept(t);
                continue;
            }
            if (c->paused_until) {
                if (evs[i].events & (EPOLLERR | EPOLLHUP))
                    conn_free(c); /* the timer frees the memory */
                continue;
            }
            conn_drive(c);
        }
        uint64_t now = now_ns();
        while (t->nheap && t->heap[0].due <= now) {
            struct timer tm = heap_pop(t);
            struct sconn *c = tm.c;
            c->in_heap = false;
            if (c->dead) {
                free(c);
                continue;
            }
            c->paused_until = 0;
            if (c->closing) {
                drop(c);
                continue;
            }
            ep_out(c, false);
            conn_drive(c);
        }
    }
    return NULL;
}

/* ---- reporting ---------------------------------------------------------------------- */

static void report(FILE *f)
{
    struct counts tot = { 0 };
    struct counts all = { 0 };
    for (unsigned i = 0; i < O.threads; i++) {
        struct counts *k = &g_t[i].cnt;
        pthread_mutex_lock(&k->lock);
        tot.messages += k->messages;
        tot.rcpts += k->rcpts;
        tot.bytes += k->bytes;
        tot.tempfail += k->tempfail;
        tot.permfail += k->permfail;
        tot.dropped += k->dropped;
        tot.connections += k->connections;
        tot.tls += k->tls;
        tot.dkim += k->dkim;
        for (size_t j = 0; j < k->slots; j++) {
            if (!k->tab[j].name)
                continue;
            struct dom *d = counts_dom(&all, k->tab[j].name);
            d->messages += k->tab[j].messages;
            d->rcpts += k->tab[j].rcpts;
            d->tempfail += k->tab[j].tempfail;
            d->permfail += k->tab[j].permfail;
        }
        pthread_mutex_unlock(&k->lock);
    }
    fprintf(f,
            "total messages=%llu rcpts=%llu bytes=%llu tempfail=%llu permfail=%llu dropped=%llu "
            "connections=%llu tls=%llu dkim=%llu\n",
            (unsigned long long)tot.messages, (unsigned long long)tot.rcpts, (unsigned long long)tot.bytes,
            (unsigned long long)tot.tempfail, (unsigned long long)tot.permfail,
            (unsigned long long)tot.dropped, (unsigned long long)tot.connections,
            (unsigned long long)tot.tls, (unsigned long long)tot.dkim);
    for (size_t j = 0; j < all.slots; j++) {
        if (!all.tab[j].name)
            continue;
        fprintf(f, "domain %s messages=%llu rcpts=%llu tempfail=%llu permfail=%llu\n", all.tab[j].name,
                (unsigned long long)all.tab[j].messages, (unsigned long long)all.tab[j].rcpts,
                (unsigned long long)all.tab[j].tempfail, (unsigned long long)all.tab[j].permfail);
        free(all.tab[j].name);
    }
    free(all.tab);
    fflush(f);
}

static void report_all(void)
{
    if (!O.quiet)
        report(stderr);
    if (O.counts_file) {
        char tmp[4096];
        snprintf(tmp, sizeof(tmp), "%s.tmp", O.counts_file);
        FILE *f = fopen(tmp, "w");
        if (f) {
            report(f);
            fclose(f);
            rename(tmp, O.counts_file);
        }
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: ortoo-sink [--listen HOST:PORT] [--port-file F] [--threads N] [--rules F]\n"
                    "                  [--cert PEM --key PEM] [--tls] [--counts F] [--hostname H] [--quiet]\n"
                    "                  [--log F]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        { "listen", 1, 0, 'l' }, { "port-file", 1, 0, 'P' }, { "threads", 1, 0, 'j' },
        { "rules", 1, 0, 'r' },  { "cert", 1, 0, 'c' },      { "key", 1, 0, 'k' },
        { "tls", 0, 0, 'T' },    { "counts", 1, 0, 'C' },    { "hostname", 1, 0, 'H' },
        { "quiet", 0, 0, 'q' },  { "log", 1, 0, 'L' },       { 0, 0, 0, 0 },
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'l': {
            char *colon = strrchr(optarg, ':');
            if (!colon)
                usage();
            snprintf(O.host, sizeof(O.host), "%.*s", (int)(colon - optarg), optarg);
            if (O.host[0] == '[') {
                memmove(O.host, O.host + 1, strlen(O.host));
                O.host[strlen(O.host) - 1] = '\0';
            }
            snprintf(O.port, sizeof(O.port), "%s", colon + 1);
            break;
        }
        case 'P': O.port_file = optarg; break;
        case 'j': O.threads = (unsigned)atoi(optarg); break;
        case 'r': rules_load(optarg); break;
        case 'c': O.cert = optarg; break;
        case 'k': O.key = optarg; break;
        case 'T': O.tls = true; break;
        case 'C': O.counts_file = optarg; break;
        case 'H': snprintf(O.hostname, sizeof(O.hostname), "%s", optarg); break;
        case 'q': O.quiet = true; break;
        case 'L': O.log_file = optarg; break;
        default: usage();
        }
    }
    if (O.threads < 1 || O.threads > SINK_MAX_THREADS || (O.tls && !O.cert) || (!O.cert != !O.key))
        usage();
    if (O.log_file) {
        O.log_fd = open(O.log_file, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
        if (O.log_fd < 0) {
            fprintf(stderr, "ortoo-sink: %s: %s\n", O.log_file, strerror(errno));
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (O.cert) {
        g_ssl = SSL_CTX_new(TLS_server_method());
        if (SSL_CTX_use_certificate_chain_file(g_ssl, O.cert) != 1 ||
            SSL_CTX_use_PrivateKey_file(g_ssl, O.key, SSL_FILETYPE_PEM) != 1) {
            fprintf(stderr, "ortoo-sink: cannot load %s / %s\n", O.cert, O.key);
            ERR_print_errors_fp(stderr);
            return 2;
        }
        SSL_CTX_set_mode(g_ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        /* Read what the socket holds in one read(2), not a record header
         * and a record body apiece (as a buffered server reads). */
        SSL_CTX_set_read_ahead(g_ssl, 1);
    }
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *ai;
    if (getaddrinfo(O.host, O.port, &hints, &ai)) {
        fprintf(stderr, "ortoo-sink: bad address %s:%s\n", O.host, O.port);
        return 2;
    }
    /* block the signals in every thread; the main thread waits for them */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    char bound_port[16] = "";
    for (unsigned i = 0; i < O.threads; i++) {
        struct sthread *t = &g_t[i];
        t->rng = 0x9e3779b97f4a7c15ull ^ ((uint64_t)getpid() << 16) ^ i;
        pthread_mutex_init(&t->cnt.lock, NULL);
        t->lfd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        setsockopt(t->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        setsockopt(t->lfd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
        if (i > 0) {
            /* bind the later listeners to the port the first one got */
            struct sockaddr_storage ss;
            socklen_t sl = sizeof(ss);
            getsockname(g_t[0].lfd, (struct sockaddr *)&ss, &sl);
            if (bind(t->lfd, (struct sockaddr *)&ss, sl) < 0)
                goto bindfail;
        } else if (bind(t->lfd, ai->ai_addr, ai->ai_addrlen) < 0) {
            goto bindfail;
        }
        if (listen(t->lfd, 4096) < 0)
            goto bindfail;
        t->ep = epoll_create1(EPOLL_CLOEXEC);
    }
    {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        getsockname(g_t[0].lfd, (struct sockaddr *)&ss, &sl);
        char h[64];
        getnameinfo((struct sockaddr *)&ss, sl, h, sizeof(h), bound_port, sizeof(bound_port),
                    NI_NUMERICHOST | NI_NUMERICSERV);
        if (O.port_file) {
            FILE *f = fopen(O.port_file, "w");
            if (f) {
                fprintf(f, "%s\n", bound_port);
                fclose(f);
            }
        }
        if (!O.quiet)
            fprintf(stderr, "ortoo-sink: listening on %s:%s\n", h, bound_port);
    }
    freeaddrinfo(ai);
    for (unsigned i = 0; i < O.threads; i++)
        pthread_create(&g_t[i].tid, NULL, thread_main, &g_t[i]);
    for (;;) {
        int sig = 0;
        sigwait(&set, &sig);
        if (sig == SIGUSR1 || sig == SIGHUP) {
            report_all();
            continue;
        }
        break;
    }
    atomic_store(&g_stop, true);
    for (unsigned i = 0; i < O.threads; i++)
        pthread_join(g_t[i].tid, NULL);
    report_all();
    return 0;
bindfail:
    fprintf(stderr, "ortoo-sink: bind %s:%s: %s\n", O.host, O.port, strerror(errno));
    return 1;
}
