/* SPDX-License-Identifier: MIT */
/*
 * cli_send.c - `ortoo send`: a blocking SMTP client for sending one test
 * message, printing the whole dialogue ("C: " our commands, "S: " the
 * server's reply lines) so that a person can see where a setup breaks.
 *
 *   ortoo send --server HOST:PORT [--starttls|--tls] [--insecure]
 *              [--user U --password-stdin [--allow-plaintext-auth]]
 *              --from F --to T [--to T2...]
 *              [--subject S] [--body-file FILE] [--ehlo NAME]
 *
 * It is not on the server's hot path, so it uses a plain blocking socket
 * with 30 s send/receive timeouts and, for TLS, OpenSSL on that socket
 * (SSL_set_fd) through API that BoringSSL shares.  The
 * certificate is checked against the system store and the server's name
 * unless --insecure.  A password is only ever sent under TLS: --user needs
 * --starttls or --tls, except with --allow-plaintext-auth, which works only
 * towards a loopback address (tests).  A server that stays silent in plain
 * text, or answers a ClientHello with a plaintext greeting, gets a hint
 * about the port's TLS mode (465 is implicit TLS, 25 and 587 STARTTLS).
 * Exit status: 0 when the message got a 2xx after DATA, 1 otherwise, 2 on a
 * usage error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sodium.h>

#include "cli/cli.h"
#include "io/text.h"

#define SEND_TIMEOUT_S 30
#define SEND_HINT_MS 5000             /* silence before the "is this a TLS port?" hint */
#define SEND_TLS_PORT "465"           /* submissions, implicit TLS (RFC 8314 3.3) */
#define SEND_LINE_MAX 2048            /* longer reply lines are cut (RFC 5321 4.5.3.1.5: 512) */
#define SEND_BODY_MAX (64u << 20)     /* a test message; refuse bigger body files */
#define SEND_DEFAULT_SUBJECT "ortoo test message"
#define SEND_DEFAULT_BODY "This is a test message sent by 'ortoo send'.\n"

enum send_tls { SEND_PLAIN = 0, SEND_STARTTLS, SEND_IMPLICIT_TLS };

/* The command line.  Strings are borrowed from argv (to is owned). */
struct send_opts {
    char host[256];                /* without brackets */
    char port[8];
    enum send_tls tls;
    bool insecure;
    const char *user;              /* NULL: no AUTH */
    bool password_stdin;
    bool allow_plaintext_auth;     /* AUTH without TLS, loopback only (tests) */
    const char *from;
    const char **to;               /* owned array of borrowed strings */
    size_t nto;
    const char *subject;
    const char *body_file;         /* NULL: a default line */
    const char *ehlo;              /* NULL: gethostname() */
};

/*
 * One connection.  Invariant: ssl != NULL once TLS is up, and from then on
 * every byte goes through it; rbuf[roff..rlen) holds bytes received but not
 * yet consumed as lines.
 */
struct send_conn {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
    char rbuf[4096];
    size_t roff, rlen;
    bool broken;                   /* a read or write failed or timed out: no QUIT */
};

/* One server reply: the code and its lines' text (without the code), '\n'-joined. */
struct send_reply {
    int code;
    struct text_buf text;
};

static void send_usage(FILE *f)
{
    fprintf(f,
            "usage: ortoo send --server HOST:PORT [--starttls|--tls] [--insecure]\n"
            "                  [--user U --password-stdin [--allow-plaintext-auth]]\n"
            "                  --from F --to T [--to T2...]\n"
            "                  [--subject S] [--body-file FILE] [--ehlo NAME]\n"
            "\n"
            "Send one test message and show the SMTP dialogue.\n"
            "  --server HOST:PORT  name or address; IPv6 as [addr]:port\n"
            "  --starttls          upgrade with STARTTLS (port 587) ; --tls: implicit TLS (465)\n"
            "  --insecure          do not verify the server's certificate (self-signed dev cert)\n"
            "  --user U            authenticate (AUTH PLAIN) as U; the password is the first\n"
            "                      line of standard input (--password-stdin); needs TLS\n"
            "  --allow-plaintext-auth  send the password without TLS (loopback servers only)\n"
            "  --subject S         default \"" SEND_DEFAULT_SUBJECT "\"\n"
            "  --body-file FILE    message body (default: one line of text)\n"
            "  --ehlo NAME         EHLO argument (default: this machine's host name)\n");
}

/* ---- small helpers ---- */

/*
 * Split "host:port", "[v6addr]:port" into host (brackets removed) and port.
 * Returns 0 or -1 when malformed (no port, empty host, port not 1-65535).
 */
static int send_parse_server(const char *s, char *host, size_t hostlen, char *port,
                             size_t portlen)
{
    const char *h;
    size_t hl;
    bool bracketed;
    unsigned v;

    if (text_host_port(s, &h, &hl, &bracketed, &v) < 0 || hl == 0 || hl >= hostlen || v == 0 ||
        (size_t)snprintf(port, portlen, "%u", v) >= portlen)
        return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    return 0;
}

/* An address usable in MAIL FROM/RCPT TO and a header: no CTLs, space, <, >. */
static bool send_addr_ok(const char *a)
{
    if (a[0] == '\0' || strlen(a) > 254)
        return false;
    for (const unsigned char *p = (const unsigned char *)a; *p; p++)
        if (*p <= ' ' || *p == 0x7f || *p == '<' || *p == '>')
            return false;
    return strchr(a, '@') != NULL;
}

/*
 * Append body text to out as SMTP DATA content (RFC 5321 4.5.2, 2.3.8):
 * every line ending (CRLF, bare LF or bare CR) becomes CRLF, a line starting
 * with '.' gets one more, and an unterminated last line is terminated.
 * Returns 0 or -ENOMEM.
 */
static int send_body_append(struct text_buf *out, const char *in, size_t len)
{
    bool bol = true;

    for (size_t i = 0; i < len; i++) {
        char ch = in[i];
        int rc = 0;
        if (bol && ch == '.')
            rc = text_add(out, ".", 1);
        if (rc == 0 && (ch == '\r' || ch == '\n')) {
            if (ch == '\r' && i + 1 < len && in[i + 1] == '\n')
                i++;
            rc = text_add(out, "\r\n", 2);
            bol = true;
        } else if (rc == 0) {
            rc = text_add(out, &ch, 1);
            bol = false;
        }
        if (rc < 0)
            return rc;
    }
    return bol ? 0 : text_add(out, "\r\n", 2);
}

/*
 * Base64 of "\0user\0password" for AUTH PLAIN (RFC 4616 2; RFC 4954 4).
 * out must hold sodium_base64_ENCODED_LEN(2 + ulen + plen) bytes.
 * Returns 0 or -1 if it does not fit.
 */
static int send_auth_plain(const char *user, const char *pw, char *out, size_t outlen)
{
    size_t ul = strlen(user), pl = strlen(pw), n = ul + pl + 2;
    unsigned char raw[1024];
    if (n > sizeof raw || sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL) > outlen)
        return -1;
    raw[0] = '\0';
    memcpy(raw + 1, user, ul);
    raw[1 + ul] = '\0';
    memcpy(raw + 2 + ul, pw, pl);
    sodium_bin2base64(out, outlen, raw, n, sodium_base64_VARIANT_ORIGINAL);
    sodium_memzero(raw, sizeof raw);
    return 0;
}

/* True if an EHLO reply's text lists keyword (case-insensitive, RFC 5321 4.1.1.1). */
static bool send_ehlo_has(const struct send_reply *r, const char *keyword)
{
    size_t kl = strlen(keyword);
    const char *line = r->text.p;

    if (line == NULL)
        return false;
    /* The first line is the greeting part of EHLO, not an extension; skipping it is harmless. */
    while (line != NULL && *line != '\0') {
        if (strncasecmp(line, keyword, kl) == 0 &&
            (line[kl] == '\0' || line[kl] == ' ' || line[kl] == '\n' || line[kl] == '='))
            return true;
        line = strchr(line, '\n');
        if (line != NULL)
            line++;
    }
    return false;
}

/* ---- the connection ---- */

static void tls_errors_print(const char *what)
{
    unsigned long e;
    char buf[256];

    fprintf(stderr, "ortoo send: %s\n", what);
    while ((e = ERR_get_error()) != 0) {
        ERR_error_string_n(e, buf, sizeof buf);
        fprintf(stderr, "  %s\n", buf);
    }
}

/* Connect to the first address of host:port that answers.  Returns 0 or -1 (printed). */
static int conn_open(struct send_conn *c, const struct send_opts *o)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    struct addrinfo *res = NULL;
    struct timeval tv = { .tv_sec = SEND_TIMEOUT_S };
    int rc, last_err = 0;

    rc = getaddrinfo(o->host, o->port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "ortoo send: cannot resolve %s: %s\n", o->host, gai_strerror(rc));
        return -1;
    }
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        char addr[INET6_ADDRSTRLEN] = "?";
        const void *sa = ai->ai_family == AF_INET6
                             ? (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr
                             : (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr;
        inet_ntop(ai->ai_family, sa, addr, sizeof addr);

        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last_err = errno;
            continue;
        }
        /* On Linux SO_SNDTIMEO also bounds connect(2). */
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            printf(ai->ai_family == AF_INET6 ? "* connected to [%s]:%s\n"
                                             : "* connected to %s:%s\n",
                   addr, o->port);
            c->fd = fd;
            freeaddrinfo(res);
            return 0;
        }
        last_err = errno == EINPROGRESS ? ETIMEDOUT : errno;
        fprintf(stderr, "ortoo send: connect to %s port %s: %s\n", addr, o->port,
                strerror(last_err));
        close(fd);
    }
    freeaddrinfo(res);
    if (last_err == 0)
        fprintf(stderr, "ortoo send: no address for %s\n", o->host);
    return -1;
}

/* Start TLS on the connected socket (client side).  Returns 0 or -1 (printed). */
static int conn_tls_start(struct send_conn *c, const struct send_opts *o)
{
    struct in6_addr a6;
    struct in_addr a4;
    bool is_ip = inet_pton(AF_INET, o->host, &a4) == 1 || inet_pton(AF_INET6, o->host, &a6) == 1;

    c->ctx = SSL_CTX_new(TLS_client_method());
    if (c->ctx == NULL)
        goto fail;
    SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
    if (!o->insecure) {
        if (SSL_CTX_set_default_verify_paths(c->ctx) != 1)
            goto fail;
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_NONE, NULL);
    }
    c->ssl = SSL_new(c->ctx);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1)
        goto fail;
    if (!is_ip && SSL_set_tlsext_host_name(c->ssl, o->host) != 1) /* RFC 6066 3: no IPs */
        goto fail;
    if (!o->insecure) {
        X509_VERIFY_PARAM *param = SSL_get0_param(c->ssl);
        int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, o->host)
                       : X509_VERIFY_PARAM_set1_host(param, o->host, strlen(o->host));
        if (ok != 1)
            goto fail;
    }
    if (SSL_connect(c->ssl) != 1) {
        long vr = SSL_get_verify_result(c->ssl);
        if (!o->insecure && vr != X509_V_OK) {
            fprintf(stderr,
                    "ortoo send: TLS handshake failed: certificate not trusted: %s\n"
                    "  (a self-signed certificate, e.g. from 'ortoo init', needs --insecure)\n",
                    X509_verify_cert_error_string(vr));
            ERR_clear_error();
            return -1;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            fprintf(stderr, "ortoo send: TLS handshake timed out\n");
            return -1;
        }
        tls_errors_print("TLS handshake failed");
        return -1;
    }
    printf("* TLS %s, cipher %s, certificate %s\n", SSL_get_version(c->ssl),
           SSL_get_cipher_name(c->ssl), o->insecure ? "not checked (--insecure)" : "verified");
    return 0;
fail:
    tls_errors_print("cannot set up TLS");
    return -1;
}

/* Send all len bytes.  Returns 0 or -1 (printed). */
static int conn_write(struct send_conn *c, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n;
        if (c->ssl != NULL) {
            int chunk = len > INT32_MAX ? INT32_MAX : (int)len;
            int r = SSL_write(c->ssl, data, chunk);
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                    fprintf(stderr, "ortoo send: write timed out after %d s\n", SEND_TIMEOUT_S);
                    return -1;
                }
                tls_errors_print("TLS write failed");
                return -1;
            }
            n = r;
        } else {
            n = send(c->fd, data, len, MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                fprintf(stderr, "ortoo send: write: %s\n",
                        errno == EAGAIN ? "timed out" : strerror(errno));
                return -1;
            }
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Fill rbuf with more bytes.  Returns > 0, 0 at EOF, or -1 (printed). */
static int conn_fill(struct send_conn *c)
{
    if (c->roff > 0) {
        memmove(c->rbuf, c->rbuf + c->roff, c->rlen - c->roff);
        c->rlen -= c->roff;
        c->roff = 0;
    }
    for (;;) {
        ssize_t n;
        errno = 0;
        if (c->ssl != NULL) {
            int r = SSL_read(c->ssl, c->rbuf + c->rlen, (int)(sizeof c->rbuf - c->rlen));
            if (r > 0) {
                n = r;
            } else {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_ZERO_RETURN)
                    return 0;
                /* SO_RCVTIMEO expiring shows as EAGAIN, which OpenSSL reports as WANT_READ. */
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ||
                    (e == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EWOULDBLOCK))) {
                    fprintf(stderr, "ortoo send: no reply within %d s\n", SEND_TIMEOUT_S);
                    return -1;
                }
                if (e == SSL_ERROR_SYSCALL && errno == 0)
                    return 0; /* EOF without close_notify */
                if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
                    fprintf(stderr, "ortoo send: TLS read failed: %s\n", strerror(errno));
                    return -1;
                }
                tls_errors_print("TLS read failed");
                return -1;
            }
        } else {
            n = recv(c->fd, c->rbuf + c->rlen, sizeof c->rbuf - c->rlen, 0);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    fprintf(stderr, "ortoo send: no reply within %d s\n", SEND_TIMEOUT_S);
                else
                    fprintf(stderr, "ortoo send: read: %s\n", strerror(errno));
                return -1;
            }
        }
        c->rlen += (size_t)n;
        return (int)n;
    }
}

/*
 * Read one line (up to LF; CR before it dropped) into line.  A line longer
 * than the buffer is cut.  Returns its length, or -1 on EOF/error (printed).
 */
static int conn_read_line(struct send_conn *c, char *line, size_t linelen)
{
    for (;;) {
        char *nl = memchr(c->rbuf + c->roff, '\n', c->rlen - c->roff);
        if (nl == NULL && c->rlen - c->roff == sizeof c->rbuf) {
            nl = c->rbuf + c->rlen - 1; /* full buffer without LF: take it as a line */
        }
        if (nl != NULL) {
            size_t n = (size_t)(nl - (c->rbuf + c->roff));
            size_t take = n;
            if (take > 0 && c->rbuf[c->roff + take - 1] == '\r')
                take--;
            if (take >= linelen)
                take = linelen - 1;
            memcpy(line, c->rbuf + c->roff, take);
            line[take] = '\0';
            c->roff += n + 1;
            return (int)take;
        }
        int r = conn_fill(c);
        if (r == 0) {
            fprintf(stderr, "ortoo send: the server closed the connection\n");
            return -1;
        }
        if (r < 0)
            return -1;
    }
}

/*
 * Read one reply, possibly multi-line (RFC 5321 4.2.1), printing each line
 * as "S: ...".  Returns the code (200-599), or -1 on EOF, error or a
 * malformed line (printed).
 */
static int conn_reply(struct send_conn *c, struct send_reply *r)
{
    char line[SEND_LINE_MAX];

    r->code = -1;
    r->text.len = 0;
    if (r->text.p != NULL)
        r->text.p[0] = '\0';
    for (;;) {
        int n = conn_read_line(c, line, sizeof line);
        if (n < 0) {
            c->broken = true;
            return -1;
        }
        printf("S: %s\n", line);
        if (n < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '9' ||
            line[2] < '0' || line[2] > '9' || (n > 3 && line[3] != ' ' && line[3] != '-')) {
            fprintf(stderr, "ortoo send: malformed reply line\n");
            c->broken = true;
            return -1;
        }
        int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
        if (r->code != -1 && code != r->code) {
            fprintf(stderr, "ortoo send: reply code changed within a multi-line reply\n");
            c->broken = true;
            return -1;
        }
        r->code = code;
        if ((r->text.len > 0 && text_add(&r->text, "\n", 1) < 0) ||
            text_add(&r->text, n > 4 ? line + 4 : "", n > 4 ? (size_t)n - 4 : 0) < 0) {
            fprintf(stderr, "ortoo send: out of memory\n");
            return -1;
        }
        if (n == 3 || line[3] == ' ') {
            fflush(stdout); /* keep "S:" lines ahead of any stderr message */
            return code;
        }
    }
}

/* Send one command line (CRLF added), printed as "C: shown" (or the line itself). */
static int conn_cmd(struct send_conn *c, const char *shown, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int conn_cmd(struct send_conn *c, const char *shown, const char *fmt, ...)
{
    char line[1100];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 2, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line - 2) {
        fprintf(stderr, "ortoo send: command too long\n");
        return -1;
    }
    printf("C: %s\n", shown ? shown : line);
    fflush(stdout);
    memcpy(line + n, "\r\n", 2);
    int rc = conn_write(c, line, (size_t)n + 2);
    if (rc < 0)
        c->broken = true;
    sodium_memzero(line, sizeof line);
    return rc;
}

/* Send a command and read its reply.  Returns the code or -1. */
static int conn_ask(struct send_conn *c, struct send_reply *r, const char *shown,
                    const char *fmt, const char *arg)
{
    if (conn_cmd(c, shown, fmt, arg) < 0)
        return -1;
    int code = conn_reply(c, r);
    fflush(stdout);
    return code;
}

static void conn_close(struct send_conn *c)
{
    if (c->ssl != NULL) {
        SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
    }
    if (c->ctx != NULL)
        SSL_CTX_free(c->ctx);
    if (c->fd >= 0)
        close(c->fd);
    c->ssl = NULL;
    c->ctx = NULL;
    c->fd = -1;
}

/* ---- the message ---- */

/* Read a whole file into out.  Returns 0 or -1 (printed). */
static int body_file_read(const char *path, struct text_buf *out)
{
    int r = text_read_file(path, SEND_BODY_MAX, out, NULL);

    if (r == -EFBIG)
        fprintf(stderr, "ortoo send: %s: larger than %u MiB\n", path, SEND_BODY_MAX >> 20);
    else if (r == -ENOMEM)
        fprintf(stderr, "ortoo send: out of memory\n");
    else if (r < 0)
        fprintf(stderr, "ortoo send: %s: %s\n", path, strerror(-r));
    return r < 0 ? -1 : 0;
}

/*
 * Build the DATA content: header fields (RFC 5322 3.6), blank line, body,
 * all CRLF and dot-stuffed, ending with the final ".\r\n".  Returns 0 or -1.
 */
static int message_build(const struct send_opts *o, const char *body, size_t bodylen,
                         struct text_buf *out)
{
    char date[64], subject[1000];
    unsigned char rnd[12];
    char rndhex[sizeof rnd * 2 + 1];
    time_t now = time(NULL);
    struct tm tm;
    const char *domain = strrchr(o->from, '@') + 1; /* send_addr_ok checked the '@' */

    /* RFC 5322 3.3: "Tue, 01 Jul 2025 12:00:00 +0000"; the C locale gives English names. */
    localtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S %z", &tm);
    randombytes_buf(rnd, sizeof rnd);
    sodium_bin2hex(rndhex, sizeof rndhex, rnd, sizeof rnd);
    /* A subject must not break out of its header field. */
    snprintf(subject, sizeof subject, "%s", o->subject);
    for (char *p = subject; *p; p++)
        if (*p == '\r' || *p == '\n')
            *p = ' ';

    if (text_printf(out, "Date: %s\r\nFrom: <%s>\r\nTo: ", date, o->from) < 0)
        return -1;
    for (size_t i = 0; i < o->nto; i++)
        if (text_printf(out, "%s<%s>", i ? ",\r\n " : "", o->to[i]) < 0)
            return -1;
    if (text_printf(out, "\r\nSubject: %s\r\nMessage-ID: <%s.%lld@%s>\r\n\r\n", subject, rndhex,
                    (long long)now, domain) < 0)
        return -1;
    if (send_body_append(out, body, bodylen) < 0)
        return -1;
    return text_add(out, ".\r\n", 3);
}

/* ---- options ---- */

/* Parse argv (argv[0] is "send").  Returns 0, 2 (usage) or -1 (--help). */
static int send_parse(int argc, char **argv, struct send_opts *o)
{
    const char *server = NULL;

    memset(o, 0, sizeof *o);
    o->subject = SEND_DEFAULT_SUBJECT;
    o->to = calloc((size_t)argc, sizeof *o->to);
    if (o->to == NULL) {
        fprintf(stderr, "ortoo send: out of memory\n");
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **val = NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            send_usage(stdout);
            return -1;
        } else if (strcmp(a, "--starttls") == 0 || strcmp(a, "--tls") == 0) {
            enum send_tls t = a[2] == 's' ? SEND_STARTTLS : SEND_IMPLICIT_TLS;
            if (o->tls != SEND_PLAIN && o->tls != t) {
                fprintf(stderr, "ortoo send: --starttls and --tls exclude each other "
                                "(--starttls: port 25/587; --tls: implicit TLS, port 465)\n");
                return 2;
            }
            o->tls = t;
        } else if (strcmp(a, "--allow-plaintext-auth") == 0) {
            o->allow_plaintext_auth = true;
        } else if (strcmp(a, "--insecure") == 0) {
            o->insecure = true;
        } else if (strcmp(a, "--password-stdin") == 0) {
            o->password_stdin = true;
        } else if (strcmp(a, "--server") == 0) {
            val = &server;
        } else if (strcmp(a, "--user") == 0) {
            val = &o->user;
        } else if (strcmp(a, "--from") == 0) {
            val = &o->from;
        } else if (strcmp(a, "--subject") == 0) {
            val = &o->subject;
        } else if (strcmp(a, "--body-file") == 0) {
            val = &o->body_file;
        } else if (strcmp(a, "--ehlo") == 0) {
            val = &o->ehlo;
        } else if (strcmp(a, "--to") == 0) {
            val = &o->to[o->nto];
            o->nto++;
        } else {
            fprintf(stderr, "ortoo send: unknown argument '%s'\n", a);
            send_usage(stderr);
            return 2;
        }
        if (val != NULL) {
            if (i + 1 >= argc) {
                fprintf(stderr, "ortoo send: %s needs a value\n", a);
                return 2;
            }
            *val = argv[++i];
        }
    }
    if (server == NULL || o->from == NULL || o->nto == 0) {
        fprintf(stderr, "ortoo send: --server, --from and --to are required\n");
        send_usage(stderr);
        return 2;
    }
    if (send_parse_server(server, o->host, sizeof o->host, o->port, sizeof o->port) < 0) {
        fprintf(stderr, "ortoo send: bad --server '%s' (want HOST:PORT or [IPv6]:PORT)\n",
                server);
        return 2;
    }
    if (!send_addr_ok(o->from)) {
        fprintf(stderr, "ortoo send: bad --from address '%s'\n", o->from);
        return 2;
    }
    for (size_t i = 0; i < o->nto; i++) {
        if (!send_addr_ok(o->to[i])) {
            fprintf(stderr, "ortoo send: bad --to address '%s'\n", o->to[i]);
            return 2;
        }
    }
    if ((o->user != NULL) != o->password_stdin) {
        fprintf(stderr, "ortoo send: --user and --password-stdin go together\n");
        return 2;
    }
    if (o->user != NULL && o->tls == SEND_PLAIN && !o->allow_plaintext_auth) {
        fprintf(stderr, "ortoo send: refusing to send a password without TLS: add --starttls "
                        "(port 25/587) or --tls (port 465)\n");
        return 2;
    }
    if (o->allow_plaintext_auth && o->user == NULL) {
        fprintf(stderr, "ortoo send: --allow-plaintext-auth goes with --user\n");
        return 2;
    }
    if (o->ehlo != NULL && (o->ehlo[0] == '\0' || strpbrk(o->ehlo, " \r\n") != NULL)) {
        fprintf(stderr, "ortoo send: bad --ehlo name\n");
        return 2;
    }
    return 0;
}

/* The password: the first line of stdin, without its line ending. */
static int password_read(char *out, size_t len)
{
    if (fgets(out, (int)len, stdin) == NULL) {
        fprintf(stderr, "ortoo send: no password on standard input\n");
        return -1;
    }
    out[strcspn(out, "\r\n")] = '\0';
    if (out[0] == '\0') {
        fprintf(stderr, "ortoo send: empty password on standard input\n");
        return -1;
    }
    return 0;
}

/* ---- TLS mode hints and the plaintext-password guard ---- */

/* True when the connected peer is this machine (127.0.0.0/8, ::1, a
 * v4-mapped 127/8, or a local socket as in the unit tests). */
static bool conn_peer_is_loopback(const struct send_conn *c)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getpeername(c->fd, (struct sockaddr *)&ss, &len) < 0)
        return false;
    if (ss.ss_family == AF_UNIX)
        return true;
    if (ss.ss_family == AF_INET)
        return (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127;
    if (ss.ss_family == AF_INET6) {
        const struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return false;
}

static void hint_implicit_tls(const struct send_opts *o)
{
    fprintf(stderr,
            "ortoo send: hint: %s:%s may expect TLS from the first byte (implicit TLS, "
            "'submissions', port 465): try --tls\n",
            o->host, o->port);
}

/*
 * Before reading the greeting in plain text: a server that says nothing for
 * SEND_HINT_MS is often one that waits for a ClientHello; say so (and keep
 * waiting).  Returns true when the hint was printed.
 */
static bool greeting_wait(struct send_conn *c, const struct send_opts *o)
{
    struct pollfd p = { .fd = c->fd, .events = POLLIN };
    if (c->rlen > c->roff || poll(&p, 1, SEND_HINT_MS) != 0)
        return false;
    fprintf(stderr, "ortoo send: no greeting after %d s\n", SEND_HINT_MS / 1000);
    hint_implicit_tls(o);
    return true;
}

/* ---- the dialogue ---- */

/* EHLO (falling back to HELO on 5xx, RFC 5321 4.1.4).  Returns 0 or -1. */
static int say_hello(struct send_conn *c, struct send_reply *r, const char *name, bool need_ehlo)
{
    int code = conn_ask(c, r, NULL, "EHLO %s", name);
    if (code == 250)
        return 0;
    if (code >= 500 && code < 600 && !need_ehlo) {
        code = conn_ask(c, r, NULL, "HELO %s", name);
        if (code == 250)
            return 0;
    }
    if (code > 0)
        fprintf(stderr, "ortoo send: the server refused %s\n", need_ehlo ? "EHLO" : "EHLO/HELO");
    return -1;
}

/* The whole exchange once connected.  Returns the exit status. */
static int dialogue(struct send_conn *c, const struct send_opts *o, const char *password,
                    const struct text_buf *msg)
{
    struct send_reply r = { 0 };
    char ehlo[256];
    bool need_ehlo = o->tls == SEND_STARTTLS || o->user != NULL;
    int status = 1, accepted = 0;

    if (o->ehlo != NULL) {
        snprintf(ehlo, sizeof ehlo, "%s", o->ehlo);
    } else if (gethostname(ehlo, sizeof ehlo) != 0 || ehlo[0] == '\0') {
        strcpy(ehlo, "localhost");
    }
    ehlo[sizeof ehlo - 1] = '\0';

    if (o->tls == SEND_IMPLICIT_TLS && conn_tls_start(c, o) < 0) {
        fprintf(stderr, "ortoo send: hint: if %s:%s greets in plain text (port 25 or 587), "
                        "use --starttls instead of --tls\n",
                o->host, o->port);
        goto out;
    }
    bool hinted = o->tls != SEND_IMPLICIT_TLS && greeting_wait(c, o);
    /* RFC 5321 3.1: the greeting. */
    int code = conn_reply(c, &r);
    fflush(stdout);
    if (code != 220) {
        if (code > 0)
            fprintf(stderr, "ortoo send: the server does not accept mail now\n");
        else if (o->tls != SEND_IMPLICIT_TLS && !hinted)
            hint_implicit_tls(o); /* silence then a close, or TLS bytes */
        goto quit;
    }
    if (say_hello(c, &r, ehlo, need_ehlo) < 0)
        goto quit;

    if (o->tls == SEND_STARTTLS) {
        /* RFC 3207 4. */
        if (!send_ehlo_has(&r, "STARTTLS")) {
            fprintf(stderr, "ortoo send: the server does not offer STARTTLS\n");
            goto quit;
        }
        if (conn_ask(c, &r, NULL, "%s", "STARTTLS") != 220) {
            fprintf(stderr, "ortoo send: STARTTLS refused\n");
            goto quit;
        }
        /* Anything received before the handshake was injected in clear (RFC 3207 6). */
        if (c->rlen > c->roff) {
            fprintf(stderr, "ortoo send: data after the STARTTLS reply; refusing to go on\n");
            goto out;
        }
        if (conn_tls_start(c, o) < 0)
            goto out;
        /* RFC 3207 4.2: forget what was learned before TLS, ask again. */
        if (say_hello(c, &r, ehlo, true) < 0)
            goto quit;
    }

    if (o->user != NULL) {
        char b64[1400];
        if (c->ssl == NULL && !(o->allow_plaintext_auth && conn_peer_is_loopback(c))) {
            fprintf(stderr, "ortoo send: refusing to send the password without TLS%s\n",
                    o->allow_plaintext_auth ? " to a non-loopback address" : "");
            goto quit;
        }
        if (!send_ehlo_has(&r, "AUTH"))
            fprintf(stderr, "ortoo send: warning: the server does not offer AUTH\n");
        if (send_auth_plain(o->user, password, b64, sizeof b64) < 0) {
            fprintf(stderr, "ortoo send: user name or password too long\n");
            goto quit;
        }
        /* RFC 4954 4: the initial response rides on the command. */
        code = conn_ask(c, &r, "AUTH PLAIN ****", "AUTH PLAIN %s", b64);
        sodium_memzero(b64, sizeof b64);
        /* RFC 4954 says 235; accept any 2xx (Postfix's smtp-sink answers 250). */
        if (code / 100 != 2) {
            fprintf(stderr, "ortoo send: authentication failed\n");
            goto quit;
        }
    }

    if (conn_ask(c, &r, NULL, "MAIL FROM:<%s>", o->from) != 250) {
        fprintf(stderr, "ortoo send: sender refused\n");
        goto quit;
    }
    for (size_t i = 0; i < o->nto; i++) {
        code = conn_ask(c, &r, NULL, "RCPT TO:<%s>", o->to[i]);
        if (code < 0)
            goto out;
        if (code == 250 || code == 251)
            accepted++;
        else
            fprintf(stderr, "ortoo send: recipient %s refused\n", o->to[i]);
    }
    if (accepted == 0) {
        fprintf(stderr, "ortoo send: no recipient accepted\n");
        goto quit;
    }
    if (conn_ask(c, &r, NULL, "%s", "DATA") != 354) {
        fprintf(stderr, "ortoo send: DATA refused\n");
        goto quit;
    }
    printf("C: (message: %zu bytes)\nC: .\n", msg->len - 3);
    fflush(stdout);
    if (conn_write(c, msg->p, msg->len) < 0) {
        c->broken = true;
        goto out;
    }
    code = conn_reply(c, &r);
    if (code == 250) {
        status = 0;
        fprintf(stderr, "ortoo send: message accepted for %d recipient%s\n", accepted,
                accepted == 1 ? "" : "s");
    } else if (code > 0) {
        fprintf(stderr, "ortoo send: message refused\n");
    }
    if (code < 0)
        goto out;
quit:
    /* The message's fate is already decided: QUIT's reply changes nothing. */
    if (c->fd >= 0 && !c->broken)
        (void)conn_ask(c, &r, NULL, "%s", "QUIT");
out:
    fflush(stdout);
    text_free(&r.text);
    return status;
}

/*
 * Entry point (see cli.h).  Blocking, bounded by 30 s per read or write.
 * config_dir is unused: this is a client.  Returns 0 when the message was
 * accepted (250 after DATA), 1 otherwise, 2 on a usage error.
 */
int cli_send(const char *config_dir, int argc, char **argv)
{
    struct send_opts o;
    struct send_conn c = { .fd = -1 };
    struct text_buf body = { 0 }, msg = { 0 };
    char password[512] = "";
    int status = 1;

    int rc = send_parse(argc, argv, &o);
    if (rc != 0) {
        free(o.to);
        return rc < 0 ? 0 : rc;
    }
    if (sodium_init() < 0) {
        fprintf(stderr, "ortoo send: libsodium failed to initialise\n");
        goto out;
    }
    signal(SIGPIPE, SIG_IGN); /* SSL_write on a closed socket */
    if (o.user != NULL && password_read(password, sizeof password) < 0)
        goto out;
    if (o.body_file != NULL) {
        if (body_file_read(o.body_file, &body) < 0)
            goto out;
    } else if (text_add(&body, SEND_DEFAULT_BODY, strlen(SEND_DEFAULT_BODY)) < 0) {
        goto out;
    }
    if (message_build(&o, body.p, body.len, &msg) < 0) {
        fprintf(stderr, "ortoo send: cannot build the message\n");
        goto out;
    }
    if (conn_open(&c, &o) < 0)
        goto out;
    status = dialogue(&c, &o, password, &msg);
out:
    conn_close(&c);
    sodium_memzero(password, sizeof password);
    text_free(&body);
    text_free(&msg);
    free(o.to);
    return status;
}
