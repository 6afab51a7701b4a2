/* SPDX-License-Identifier: MIT */
/*
 * cli_sendmail.c - the sendmail command line: how applications and cron hand
 * a message to the local mail server.  Runs when the binary is invoked as
 * `sendmail` (the /usr/sbin/sendmail link) or as `ortoo sendmail`.
 *
 * It reads a message on stdin (or an SMTP dialogue with -bs), takes the
 * recipients from the arguments and, with -t, from To/Cc/Bcc, removes Bcc,
 * adds From, Date and Message-ID when they are missing, turns the text into
 * wire form (CRLF lines, dot-stuffed), and writes it into the spool's
 * maildrop (core/maildrop.h explains the directory's permissions: any local
 * account may drop a file there, no privilege needed).  Then it asks the
 * daemon, on the public pickup socket, to queue the file now and waits for
 * the answer; if the daemon is not running the file simply waits, it is
 * queued when the daemon starts, and stderr says so.  Nothing is lost: the
 * file is on disk (fsync'd) before the daemon is even asked.
 *
 * Flags follow sendmail and Postfix: -t, -i/-oi, -f/-r ADDR, -F NAME,
 * -bm (the default), -bs, -bp (the queue), -C DIR (the configuration);
 * -odi, -odb, -oem, -v, -B, -N, -R, -V and the like are accepted and
 * ignored as sendmail ignores them; an unknown flag is ignored with a
 * warning.  Exit codes are sendmail's (sysexits.h): 0, EX_USAGE (64),
 * EX_DATAERR (65), EX_NOPERM (77), EX_TEMPFAIL (75), EX_SOFTWARE (70).
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/config.h"
#include "core/control.h"
#include "core/maildrop.h"
#include "core/smtp_parse.h"
#include "io/text.h"

#define SM_MAX_RCPTS_DEFAULT 1000
#define SM_PICKUP_TIMEOUT_MS 30000
#define SM_QUEUE_ID_MAX 40 /* a queue id in the pickup answer (20 today) */

/* A list of addresses (owned strings). */
struct addrs {
    char **v;
    size_t n, cap;
};

static void addrs_free(struct addrs *a)
{
    for (size_t i = 0; i < a->n; i++)
        free(a->v[i]);
    free(a->v);
    memset(a, 0, sizeof(*a));
}

/* What the command line asked for and what the run found out. */
struct sm {
    const char *prog;          /* "sendmail" or "ortoo sendmail", for messages */
    const char *config_dir;
    bool config_explicit;      /* -c, -C or $ORTOO_CONFIG */
    bool extract;              /* -t */
    bool ignore_dots;          /* -i, -oi */
    bool verbose;              /* -v */
    char mode;                 /* 'm' (deliver), 's' (SMTP), 'p' (print queue) */
    const char *from;          /* -f / -r */
    const char *fullname;      /* -F */
    struct addrs rcpts;        /* envelope recipients */
    /* from the configuration (or defaults when it cannot be read) */
    char hostname[256];
    char spool[PATH_MAX];
    uint64_t max_size;
    size_t max_rcpts;
    char user[64];             /* the invoking account */
    char gecos[128];           /* its full name, if any */
};

static void sm_usage(FILE *f)
{
    fprintf(f,
            "usage: sendmail [-t] [-i] [-f SENDER] [-F NAME] [-bm|-bs|-bp] [-C DIR] "
            "[RECIPIENT ...]\n"
            "       ortoo [-c DIR] sendmail [FLAGS] [RECIPIENT ...]\n"
            "\n"
            "Read a message on stdin and hand it to the local ortoo server (through the\n"
            "spool's maildrop; it waits there when the server is not running).\n"
            "  -t          also take recipients from To, Cc and Bcc (Bcc is removed)\n"
            "  -i, -oi     a line with a single '.' does not end the message\n"
            "  -f SENDER   envelope sender (default: USER@HOSTNAME); -r is the same\n"
            "  -F NAME     full name for an added From: field\n"
            "  -bm         read a message on stdin (the default)\n"
            "  -bs         speak SMTP on stdin and stdout\n"
            "  -bp         list the queue (as 'ortoo queue list')\n"
            "  -C DIR      configuration directory (as ortoo -c)\n"
            "Other sendmail flags (-odi, -odb, -oem, -v, -B, -N, -R, -V, ...) are ignored.\n"
            "Exit status: 0 queued (or waiting in the maildrop), 64 usage, 65 bad message,\n"
            "75 try again later, 77 permission denied.\n");
}

/* ---- configuration ---- */

/*
 * Read what we need from ortoo.conf: the spool, the host name, the limits.
 * An unprivileged user may not be able to read it; then the defaults are
 * used (CONFIG_DEFAULT_SPOOL, gethostname), silently unless the directory
 * was named explicitly.
 */
static void sm_config(struct sm *sm)
{
    struct config *cfg = NULL;
    char err[512];

    snprintf(sm->spool, sizeof(sm->spool), "%s", CONFIG_DEFAULT_SPOOL);
    if (gethostname(sm->hostname, sizeof(sm->hostname) - 1) < 0 || sm->hostname[0] == '\0')
        snprintf(sm->hostname, sizeof(sm->hostname), "localhost");
    sm->max_size = 25ull << 20;
    sm->max_rcpts = SM_MAX_RCPTS_DEFAULT;
    if (config_load(sm->config_dir, &cfg, err, sizeof(err)) < 0) {
        if (sm->config_explicit)
            fprintf(stderr, "%s: warning: %s (using %s)\n", sm->prog, err, sm->spool);
        return;
    }
    snprintf(sm->spool, sizeof(sm->spool), "%s", cfg->spool);
    snprintf(sm->hostname, sizeof(sm->hostname), "%s", cfg->hostname);
    sm->max_size = cfg->max_message_size;
    sm->max_rcpts = cfg->max_recipients;
    config_free(cfg);
}

static void sm_identity(struct sm *sm)
{
    struct passwd *pw = getpwuid(getuid());
    if (pw != NULL) {
        snprintf(sm->user, sizeof(sm->user), "%s", pw->pw_name);
        if (pw->pw_gecos != NULL) {
            size_t n = strcspn(pw->pw_gecos, ",");
            if (n >= sizeof(sm->gecos))
                n = sizeof(sm->gecos) - 1;
            memcpy(sm->gecos, pw->pw_gecos, n);
            sm->gecos[n] = '\0';
        }
    } else {
        snprintf(sm->user, sizeof(sm->user), "uid%ld", (long)getuid());
    }
}

/* ---- addresses ---- */

/*
 * Check one address and add it (qualified with @hostname when it has no
 * domain, as sendmail appends the local host: cron mails "root").  Returns
 * 0, or -1 with a message printed.
 */
static int addr_add(struct sm *sm, struct addrs *a, const char *s, size_t len)
{
    char buf[MAILDROP_ADDR_MAX + 1];
    while (len > 0 && isspace((unsigned char)*s)) {
        s++;
        len--;
    }
    while (len > 0 && isspace((unsigned char)s[len - 1]))
        len--;
    if (len == 0)
        return 0;
    int n = memchr(s, '@', len) != NULL
                ? snprintf(buf, sizeof(buf), "%.*s", (int)len, s)
                : snprintf(buf, sizeof(buf), "%.*s@%s", (int)len, s, sm->hostname);
    struct smtp_addr pa;
    if (n < 0 || (size_t)n >= sizeof(buf) ||
        smtp_addr_parse(buf, (size_t)n, true, &pa) != SMTP_P_OK || strchr(buf, ' ') != NULL) {
        fprintf(stderr, "%s: bad address '%.*s'\n", sm->prog, (int)(len > 200 ? 200 : len), s);
        return -1;
    }
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->v[i], buf) == 0)
            return 0; /* once is enough */
    if (a->n >= sm->max_rcpts) {
        fprintf(stderr, "%s: more than %zu recipients\n", sm->prog, sm->max_rcpts);
        return -1;
    }
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 8;
        char **v = realloc(a->v, cap * sizeof(*v));
        if (v == NULL)
            return -1;
        a->v = v;
        a->cap = cap;
    }
    if ((a->v[a->n] = strdup(buf)) == NULL)
        return -1;
    a->n++;
    return 0;
}

/*
 * The addresses of an RFC 5322 address-list (3.4): mailboxes "a@b",
 * "Name <a@b>", "\"Quoted, Name\" <a@b>", comments "(...)" (nested), groups
 * "team: a@b, c@d;".  Folding was undone by the caller.  Returns 0 or -1.
 */
static int addr_list(struct sm *sm, struct addrs *out, const char *v)
{
    struct text_buf plain = {0};    /* the mailbox's text outside comments and <> */
    const char *angle = NULL;  /* start of <...> content */
    size_t angle_len = 0;
    int rc = 0;

    for (const char *p = v;; p++) {
        char ch = *p;
        if (ch == '"') { /* quoted string: copied with its quotes */
            const char *q = p + 1;
            while (*q != '\0' && *q != '"') {
                if (*q == '\\' && q[1] != '\0')
                    q++;
                q++;
            }
            text_add(&plain, p, (size_t)(q - p) + (*q == '"'));
            if (*q == '\0')
                break;
            p = q;
            continue;
        }
        if (ch == '(') { /* comment, may nest */
            int depth = 1;
            const char *q = p + 1;
            while (*q != '\0' && depth > 0) {
                if (*q == '\\' && q[1] != '\0')
                     q++;
                else if (*q == '(')
                     depth++;
                else if (*q == ')')
                     depth--;
                q++;
            }
            text_add(&plain, " ", 1);
            if (*q == '\0' && depth > 0)
                break;
            p = q - 1;
            continue;
        }
        if (ch == '<') {
            const char *q = strchr(p, '>');
            if (q == NULL) {
                fprintf(stderr, "%s: unterminated '<' in an address list\n", sm->prog);
                rc = -1;
                break;
            }
            angle = p + 1;
            angle_len = (size_t)(q - angle);
            p = q;
            continue;
        }
        if (ch == ':' && angle == NULL) { /* group name: not an address */
            plain.len = 0;
            continue;
        }
        if (ch == ',' || ch == ';' || ch == '\0') {
            if (angle != NULL) {
                /* An obsolete route "@a,@b:" before the address is dropped. */
                const char *colon = angle_len && angle[0] == '@'
                                        ? memchr(angle, ':', angle_len)
                                        : NULL;
                if (colon != NULL) {
                     angle_len -= (size_t)(colon + 1 - angle);
                     angle = colon + 1;
                }
                if (addr_add(sm, out, angle, angle_len) < 0)
                     rc = -1;
            } else if (plain.len > 0) {
                if (addr_add(sm, out, plain.p, plain.len) < 0)
                     rc = -1;
            }
            angle = NULL;
            plain.len = 0;
            if (ch == '\0')
                break;
            continue;
        }
        text_add(&plain, p, 1);
    }
    free(plain.p);
    return rc;
}

/* ---- the message ---- */

/* Names of fields we look at (case-insensitive, RFC 5322 1.2.2). */
static bool field_is(const char *line, size_t len, const char *name)
{
    size_t n = strlen(name);
    return len > n && strncasecmp(line, name, n) == 0 && line[n] == ':';
}

/* True if line (without its end) starts a header field "name:". */
static bool is_field_start(const char *line, size_t len)
{
    size_t i = 0;
    while (i < len && line[i] > 0x20 && line[i] < 0x7f && line[i] != ':')
        i++;
    return i > 0 && i < len && line[i] == ':';
}

/* One line of the input: [start, start+len) without its end-of-line. */
struct line {
    const char *p;
    size_t len;
};

/*
 * Split raw input into lines (LF, CRLF or lone CR end a line).  Without
 * ignore_dots a line holding only "." ends the message (sendmail's rule).
 * Returns the number of lines; *lines is owned by the caller.
 */
static size_t split_lines(const char *in, size_t len, bool ignore_dots, struct line **lines)
{
    size_t n = 0, cap = 0;
    *lines = NULL;
    size_t i = 0;
    while (i < len) {
        size_t s = i;
        while (i < len && in[i] != '\n' && in[i] != '\r')
            i++;
        size_t e = i;
        if (i < len && in[i] == '\r')
            i++;
        if (i < len && in[i] == '\n' && (i == e || in[i - 1] == '\r'))
            i++;
        if (!ignore_dots && e - s == 1 && in[s] == '.')
            break;
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            struct line *nl = realloc(*lines, cap * sizeof(*nl));
            if (nl == NULL)
                break;
            *lines = nl;
        }
        (*lines)[n++] = (struct line){in + s, e - s};
    }
    return n;
}

/* RFC 5322 3.3 date-time, local time with its offset. */
static void rfc5322_date(char *out, size_t cap)
{
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(out, cap, "%a, %d %b %Y %H:%M:%S %z", &tm);
}

/* Append a line in wire form: dot-stuffed (RFC 5321 4.5.2), CRLF. */
static void wire_line(struct text_buf *b, const char *p, size_t len)
{
    if (len > 0 && p[0] == '.')
        text_add(b, ".", 1);
    text_add(b, p, len);
    text_add(b, "\r\n", 2);
}

/*
 * Build the wire-form message from raw input: drop a leading mbox "From "
 * line, collect the header (unfolding fields to read To/Cc/Bcc), drop Bcc
 * (and Resent-Bcc), add From/Date/Message-ID when missing, and with -t add
 * the header recipients to sm->rcpts (Resent-To/Cc/Bcc instead when the
 * message has Resent- fields, RFC 5322 3.6.6).  Returns 0, or a sysexits
 * code with a message printed.
 */
static int build_message(struct sm *sm, const char *in, size_t len, const char *sender,
                         struct text_buf *out)
{
    struct line *lines = NULL;
    size_t n = split_lines(in, len, sm->ignore_dots, &lines), i = 0;
    bool has_from = false, has_date = false, has_msgid = false, has_resent = false;
    struct text_buf fieldval = {0};
    struct addrs hdr_rcpts = {0}, resent_rcpts = {0};
    int rc = 0;

    if (n > 0 && lines[0].len >= 5 && memcmp(lines[0].p, "From ", 5) == 0)
        i = 1;
    /* The header: fields until the first empty line or a line that is not
     * a field (then the rest is body, and a blank line is put between). */
    while (i < n) {
        const struct line *l = &lines[i];
        if (l->len == 0) {
            i++;
            break;
        }
        if (!is_field_start(l->p, l->len))
            break;
        size_t j = i + 1; /* continuation lines */
        while (j < n && lines[j].len > 0 && (lines[j].p[0] == ' ' || lines[j].p[0] == '\t'))
            j++;
        bool bcc = field_is(l->p, l->len, "Bcc") || field_is(l->p, l->len, "Resent-Bcc");
        bool to = field_is(l->p, l->len, "To") || field_is(l->p, l->len, "Cc");
        bool rto = field_is(l->p, l->len, "Resent-To") || field_is(l->p, l->len, "Resent-Cc");
        if (field_is(l->p, l->len, "From"))
            has_from = true;
        else if (field_is(l->p, l->len, "Date"))
            has_date = true;
        else if (field_is(l->p, l->len, "Message-ID"))
            has_msgid = true;
        if (rto || field_is(l->p, l->len, "Resent-Bcc"))
            has_resent = true;
        if (sm->extract && (bcc || to || rto)) {
            fieldval.len = 0;
            const char *colon = memchr(l->p, ':', l->len);
            text_add(&fieldval, colon + 1, l->len - (size_t)(colon + 1 - l->p));
            for (size_t k = i + 1; k < j; k++)
                text_add(&fieldval, lines[k].p, lines[k].len);
            bool resent = strncasecmp(l->p, "Resent-", 7) == 0;
            if (fieldval.p != NULL &&
                addr_list(sm, resent ? &resent_rcpts : &hdr_rcpts, fieldval.p) < 0)
                rc = EX_DATAERR;
        }
        if (!bcc) /* RFC 5322 3.6.3: Bcc is not passed on */
            for (size_t k = i; k < j; k++)
                wire_line(out, lines[k].p, lines[k].len);
        i = j;
    }
    char line[1024];
    if (!has_from) {
        const char *name = sm->fullname != NULL ? sm->fullname : sm->gecos;
        bool quote = false;
        for (const char *q = name; *q; q++)
            if (!isalnum((unsigned char)*q) && *q != ' ' && !((unsigned char)*q & 0x80))
                quote = true;
        if (name[0] != '\0' && strpbrk(name, "\"\\\r\n") == NULL)
            snprintf(line, sizeof(line), quote ? "From: \"%s\" <%s>" : "From: %s <%s>", name,
                     sender[0] ? sender : "MAILER-DAEMON");
        else
            snprintf(line, sizeof(line), "From: %s", sender[0] ? sender : "MAILER-DAEMON");
        wire_line(out, line, strlen(line));
    }
    if (!has_date) {
        char date[64];
        rfc5322_date(date, sizeof(date));
        snprintf(line, sizeof(line), "Date: %s", date);
        wire_line(out, line, strlen(line));
    }
    if (!has_msgid) {
        unsigned char r[8];
        if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
            memset(r, 0, sizeof(r));
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        char stamp[32];
        strftime(stamp, sizeof(stamp), "%Y%m%d%H%M%S", &tm);
        snprintf(line, sizeof(line), "Message-ID: <%s.%02x%02x%02x%02x%02x%02x%02x%02x@%s>", stamp,
                 r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], sm->hostname);
        wire_line(out, line, strlen(line));
    }
    text_add(out, "\r\n", 2);
    for (; i < n; i++)
        wire_line(out, lines[i].p, lines[i].len);

    struct addrs *from_hdr = has_resent ? &resent_rcpts : &hdr_rcpts;
    for (size_t k = 0; rc == 0 && k < from_hdr->n; k++)
        if (addr_add(sm, &sm->rcpts, from_hdr->v[k], strlen(from_hdr->v[k])) < 0)
            rc = EX_DATAERR;
    addrs_free(&hdr_rcpts);
    addrs_free(&resent_rcpts);
    free(fieldval.p);
    free(lines);
    if (out->oom) {
        fprintf(stderr, "%s: out of memory\n", sm->prog);
        return EX_OSERR;
    }
    if (rc == 0 && out->len > sm->max_size) {
        fprintf(stderr, "%s: message of %zu bytes exceeds the maximum size of %llu\n", sm->prog,
                out->len, (unsigned long long)sm->max_size);
        return EX_DATAERR;
    }
    return rc;
}

/* ---- handing it over ---- */

/*
 * Write the drop file and ask the daemon to queue it.  queued_as gets the
 * queue id (or "" when the message waits in the maildrop).  Returns 0 or a
 * sysexits code (message printed).
 */
static int deliver(struct sm *sm, const char *sender, const struct addrs *rcpts,
                   const struct text_buf *msg, char *queued_as, size_t qlen)
{
    char dir[PATH_MAX + 16], name[MAILDROP_NAME_LEN + 1], err[512];
    queued_as[0] = '\0';
    snprintf(dir, sizeof(dir), "%s/%s", sm->spool, MAILDROP_DIR_NAME);
    int rc = maildrop_write(dir, sender, (const char *const *)rcpts->v, rcpts->n,
                            msg->p ? msg->p : "", msg->len, name, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "%s: %s\n", sm->prog, err);
        if (rc == -ENOENT)
            fprintf(stderr, "%s: the maildrop %s does not exist: it is made when 'ortoo "
                            "serve' first starts (or by the installed tmpfiles.d entry)\n",
                     sm->prog, dir);
        return rc == -EACCES || rc == -EPERM ? EX_NOPERM : EX_TEMPFAIL;
    }
    char path[PATH_MAX + 16], req[64], status[512];
    snprintf(path, sizeof(path), "%s/%s", sm->spool, CONTROL_PUBLIC_SOCKET_NAME);
    snprintf(req, sizeof(req), "pickup %s", name);
    rc = control_call(path, req, SM_PICKUP_TIMEOUT_MS, NULL, NULL, status, sizeof(status));
    if (rc == 0) {
        if (strncmp(status, "queued as ", 10) == 0)
            snprintf(queued_as, qlen, "%.*s", SM_QUEUE_ID_MAX, status + 10);
        if (sm->verbose)
            fprintf(stderr, "%s: %s\n", sm->prog, status);
        return 0;
    }
    if (rc == 1 && strncmp(status, "rejected", 8) == 0) {
        fprintf(stderr, "%s: the server refused the message: %s\n", sm->prog, status);
        return EX_DATAERR;
    }
    if (rc == 1)
        fprintf(stderr, "%s: the server could not queue the message yet (%s); it waits in %s/%s\n",
                sm->prog, status, dir, name);
    else
        fprintf(stderr, "%s: the mail server is not running (%s); the message waits in %s/%s "
                        "and will be queued when it starts\n",
                sm->prog, status, dir, name);
    return 0;
}

/* The envelope sender: -f, else USER@HOSTNAME.  "<>" is the null sender. */
static int envelope_sender(struct sm *sm, char *out, size_t cap)
{
    const char *f = sm->from;
    if (f == NULL) {
        snprintf(out, cap, "%s@%s", sm->user, sm->hostname);
        return 0;
    }
    size_t len = strlen(f);
    if (len >= 2 && f[0] == '<' && f[len - 1] == '>') {
        f++;
        len -= 2;
    }
    if (len == 0) {
        out[0] = '\0';
        return 0;
    }
    struct addrs one = {0};
    size_t keep = sm->max_rcpts;
    sm->max_rcpts = 1;
    int rc = addr_add(sm, &one, f, len);
    sm->max_rcpts = keep;
    if (rc < 0 || one.n != 1) {
        addrs_free(&one);
        return -1;
    }
    snprintf(out, cap, "%s", one.v[0]);
    addrs_free(&one);
    return 0;
}

/* -bm: the message on stdin. */
static int mode_deliver(struct sm *sm)
{
    struct text_buf in = {0}, msg = {0};
    char sender[MAILDROP_ADDR_MAX + 1], qid[64];
    int rc;

    if (envelope_sender(sm, sender, sizeof(sender)) < 0)
        return EX_USAGE;
    char chunk[65536];
    for (;;) {
        size_t n = fread(chunk, 1, sizeof(chunk), stdin);
        if (n > 0)
            text_add(&in, chunk, n);
        if (in.len > sm->max_size + (1u << 20)) {
            fprintf(stderr, "%s: message exceeds the maximum size of %llu bytes\n", sm->prog,
                     (unsigned long long)sm->max_size);
            free(in.p);
            return EX_DATAERR;
        }
        if (n < sizeof(chunk))
            break;
    }
    if (ferror(stdin) || in.oom) {
        fprintf(stderr, "%s: cannot read the message: %s\n", sm->prog,
                in.oom ? "out of memory" : strerror(errno));
        free(in.p);
        return EX_IOERR;
    }
    rc = build_message(sm, in.p ? in.p : "", in.len, sender, &msg);
    free(in.p);
    if (rc == 0 && sm->rcpts.n == 0) {
        fprintf(stderr, "%s: no recipients (give them as arguments, or use -t to take them "
                        "from To, Cc and Bcc)\n",
                sm->prog);
        rc = EX_USAGE;
    }
    if (rc == 0)
        rc = deliver(sm, sender, &sm->rcpts, &msg, qid, sizeof(qid));
    free(msg.p);
    return rc;
}

/* ---- -bs: SMTP on stdin/stdout ---- */

static void smtp_out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void smtp_out(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fputs("\r\n", stdout);
    fflush(stdout);
}

/* Read one line from stdin without its end (LF or CRLF).  Returns its
 * length, or -1 at EOF.  Lines longer than cap - 1 are cut. */
static ssize_t smtp_getline(char **line, size_t *cap)
{
    ssize_t n = getline(line, cap, stdin);
    if (n < 0)
        return -1;
    while (n > 0 && ((*line)[n - 1] == '\n' || (*line)[n - 1] == '\r'))
        (*line)[--n] = '\0';
    return n;
}

/* A minimal submission dialogue (RFC 5321) for programs that pipe SMTP into
 * sendmail -bs; each message goes the same way as with -bm. */
static int mode_smtp(struct sm *sm)
{
    char *line = NULL;
    size_t cap = 0;
    char sender[MAILDROP_ADDR_MAX + 1] = "";
    bool has_mail = false;
    struct addrs rcpts = {0};
    int status = 0;

    smtp_out("220 %s ESMTP ortoo (sendmail -bs)", sm->hostname);
    for (;;) {
        ssize_t n = smtp_getline(&line, &cap);
        if (n < 0)
            break;
        struct smtp_cmd cmd;
        if (smtp_cmd_parse(line, (size_t)n, &cmd) != SMTP_P_OK) {
            smtp_out("501 5.5.4 Syntax error");
            continue;
        }
        switch (cmd.verb) {
        case SMTP_V_EHLO:
            smtp_out("250-%s\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE %llu", sm->hostname,
                     (unsigned long long)sm->max_size);
            break;
        case SMTP_V_HELO:
            smtp_out("250 %s", sm->hostname);
            break;
        case SMTP_V_MAIL: {
            struct smtp_mail_args m;
            if (has_mail) {
                smtp_out("503 5.5.1 Nested MAIL command");
                break;
            }
            if (smtp_mail_parse(cmd.arg, cmd.arg_len, &m) != SMTP_P_OK) {
                smtp_out("501 5.1.7 Bad sender address syntax");
                break;
            }
            snprintf(sender, sizeof(sender), "%.*s", (int)m.path_len, m.path);
            has_mail = true;
            smtp_out("250 2.1.0 Ok");
            break;
        }
        case SMTP_V_RCPT: {
            struct smtp_rcpt_args r;
            if (!has_mail) {
                smtp_out("503 5.5.1 Need MAIL command");
                break;
            }
            if (smtp_rcpt_parse(cmd.arg, cmd.arg_len, true, &r) != SMTP_P_OK ||
                addr_add(sm, &rcpts, r.path, r.path_len) < 0) {
                smtp_out("501 5.1.3 Bad recipient address syntax");
                break;
            }
            smtp_out("250 2.1.5 Ok");
            break;
        }
        case SMTP_V_DATA: {
            if (!has_mail || rcpts.n == 0) {
                smtp_out("503 5.5.1 Need MAIL and RCPT commands");
                break;
            }
            smtp_out("354 End data with <CR><LF>.<CR><LF>");
            /* Undo the dot-stuffing; build_message applies it again. */
            struct text_buf raw = {0}, msg = {0};
            bool ended = false, too_big = false;
            while (smtp_getline(&line, &cap) >= 0) {
                if (strcmp(line, ".") == 0) {
                     ended = true;
                     break;
                }
                const char *p = line[0] == '.' ? line + 1 : line;
                if (raw.len < sm->max_size + (1u << 20)) {
                     text_add_str(&raw, p);
                     text_add(&raw, "\n", 1);
                } else {
                     too_big = true;
                }
            }
            if (!ended) {
                free(raw.p);
                goto out;
            }
            struct sm one = *sm;
            one.ignore_dots = true;
            one.extract = false;
            one.rcpts = rcpts;
            char qid[64];
            int rc = too_big ? EX_DATAERR : build_message(&one, raw.p ? raw.p : "", raw.len,
                                                          sender, &msg);
            if (rc == 0)
                rc = deliver(&one, sender, &rcpts, &msg, qid, sizeof(qid));
            free(raw.p);
            free(msg.p);
            if (rc == 0)
                smtp_out("250 2.0.0 Ok: %s%s", qid[0] ? "queued as " : "queued in the maildrop",
                         qid);
            else if (rc == EX_DATAERR)
                smtp_out("554 5.6.0 Message refused");
            else
                smtp_out("451 4.3.0 Cannot store the message now");
            if (rc != 0)
                status = rc;
            addrs_free(&rcpts);
            has_mail = false;
            break;
        }
        case SMTP_V_RSET:
            addrs_free(&rcpts);
            has_mail = false;
            smtp_out("250 2.0.0 Ok");
            break;
        case SMTP_V_NOOP:
            smtp_out("250 2.0.0 Ok");
            break;
        case SMTP_V_VRFY:
            smtp_out("252 2.5.2 Cannot VRFY; send some mail");
            break;
        case SMTP_V_QUIT:
            smtp_out("221 2.0.0 Bye");
            goto out;
        default:
            smtp_out("502 5.5.2 Command not implemented");
            break;
        }
    }
out:
    addrs_free(&rcpts);
    free(line);
    return status;
}

/* ---- the command line ---- */

/* Options whose value may be the next argument. */
static bool takes_value(char opt)
{
    return strchr("fFrCBNRVXLpAhO", opt) != NULL;
}

bool cli_config_explicit = false;

int cli_sendmail(const char *config_dir, int argc, char **argv)
{
    struct sm sm = {.mode = 'm', .config_dir = config_dir, .prog = "sendmail"};
    const char *env = getenv("ORTOO_CONFIG");
    sm.config_explicit = cli_config_explicit || (env != NULL && env[0] != '\0');
    /* Recipients are read after the options: -C may change the
     * configuration, which qualifies bare names with its host name. */
    char **rcpt_args = calloc((size_t)argc + 1, sizeof(*rcpt_args));
    int nrcpt_args = 0, status = 0;
    if (rcpt_args == NULL)
        return EX_OSERR;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            for (i++; i < argc; i++)
                rcpt_args[nrcpt_args++] = argv[i];
            break;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            sm_usage(stdout);
            free(rcpt_args);
            return 0;
        }
        if (a[0] != '-' || a[1] == '\0') {
            rcpt_args[nrcpt_args++] = argv[i];
            continue;
        }
        char opt = a[1];
        const char *val = a[2] != '\0' ? a + 2 : NULL;
        if (takes_value(opt) && val == NULL && opt != 'h') {
            if (i + 1 >= argc) {
                fprintf(stderr, "%s: option -%c needs a value\n", sm.prog, opt);
                sm_usage(stderr);
                free(rcpt_args);
                return EX_USAGE;
            }
            val = argv[++i];
        }
        switch (opt) {
        case 't':
            sm.extract = true;
            break;
        case 'i':
            sm.ignore_dots = true;
            break;
        case 'v':
            sm.verbose = true;
            break;
        case 'f':
        case 'r':
            sm.from = val;
            break;
        case 'F':
            sm.fullname = val;
            break;
        case 'C':
            sm.config_dir = val;
            sm.config_explicit = true;
            break;
        case 'o':
            /* -oi is the one that matters; -odb, -odi, -oem, -oep, -om and
             * the other -oX options are accepted and ignored. */
            if (strcmp(a, "-oi") == 0)
                sm.ignore_dots = true;
            else if (a[2] == '\0' && i + 1 < argc)
                i++; /* "-o X": an option given apart */
            break;
        case 'b':
            if (strcmp(a, "-bm") == 0)
                sm.mode = 'm';
            else if (strcmp(a, "-bs") == 0)
                sm.mode = 's';
            else if (strcmp(a, "-bp") == 0)
                sm.mode = 'p';
            else if (strcmp(a, "-bi") == 0) {
                fprintf(stderr, "%s: nothing to do: ortoo has no aliases database to "
                                "rebuild\n",
                        sm.prog);
                free(rcpt_args);
                return 0;
            } else {
                fprintf(stderr, "%s: mode %s is not supported (-bm, -bs and -bp are)\n",
                        sm.prog, a);
                free(rcpt_args);
                return EX_USAGE;
            }
            break;
        case 'q':
            fprintf(stderr, "%s: %s ignored: the server runs its queue by itself\n", sm.prog,
                     a);
            free(rcpt_args);
            return 0;
        case 'B': case 'N': case 'R': case 'V': case 'X': case 'L': case 'p': case 'A':
        case 'O': case 'h': case 'n': case 'm': case 'U': case 'G': case 'e': case 'd':
            break; /* accepted and ignored, as sendmail does */
        default:
            fprintf(stderr, "%s: warning: ignoring unknown option %s\n", sm.prog, a);
            break;
        }
    }
    sm_identity(&sm);
    sm_config(&sm);
    for (int k = 0; k < nrcpt_args; k++) {
        if (addr_list(&sm, &sm.rcpts, rcpt_args[k]) < 0) { /* "a@b, c@d" works too */
            free(rcpt_args);
            addrs_free(&sm.rcpts);
            return EX_USAGE;
        }
    }
    free(rcpt_args);
    if (sm.mode == 'p') {
        char *qargv[] = {"queue", "list", NULL};
        return cli_queue(sm.config_dir, 2, qargv);
    }
    if (sm.mode == 's')
        status = mode_smtp(&sm);
    else
        status = mode_deliver(&sm);
    addrs_free(&sm.rcpts);
    return status;
}
