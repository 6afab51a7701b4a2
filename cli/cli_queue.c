/* SPDX-License-Identifier: MIT */
/*
 * cli_queue.c - `ortoo queue list [--json]`: the messages in the spool;
 * `ortoo queue show ID [--raw]`: one message as it will be delivered.
 *
 * Loads the configuration only to find the spool directory, then reads it
 * with spool_scan(), which is read-only and safe while the daemon runs.  The
 * table is streamed (one line per message as the scan finds it, then
 * "N messages"), so a large queue costs no memory.  --json prints one
 * object per line instead, for scripts.
 *
 * show prints the header fields stored with the envelope (DKIM-Signature,
 * Received, an added Date / Message-ID), then the stored message
 * dot-unstuffed (dkim/canon.h), streamed from the mapped segment: exactly
 * the bytes delivery sends after DATA, before its own dot-stuffing.  --raw
 * prints only that; without it a few envelope lines and an empty line come
 * first.
 *
 * list and show read the spool themselves, whether the daemon runs or not
 * (spool_scan is read-only and safe beside it; the journal it reads is
 * group-committed, so attempts show within a commit): one implementation,
 * no size limit on the answer.  flush, delete and bounce change the queue:
 * they go to the running daemon through its control socket (core/queue_ctl.c,
 * the scheduler on every reactor) and fail clearly when it does not run.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "core/config.h"
#include "dkim/canon.h"
#include "spool/spool.h"

/* What the scan callback needs. */
struct queue_list {
    bool json;
    int64_t now;        /* unix time at the start of the listing */
    size_t count;       /* messages printed */
};

static void queue_usage(FILE *f)
{
    fprintf(f,
            "usage: ortoo [-c DIR] queue list [--json]\n"
            "       ortoo [-c DIR] queue show ID [--raw]\n"
            "       ortoo [-c DIR] queue flush [ID|DOMAIN]\n"
            "       ortoo [-c DIR] queue delete ID\n"
            "       ortoo [-c DIR] queue bounce ID\n"
            "\n"
            "  list     the messages in the spool: ID, SIZE, AGE, STATE, SENDER, RECIPIENTS,\n"
            "           and under each message its recipients that were tried (state,\n"
            "           attempts, next attempt, last reply); --json: one object per line\n"
            "  show     one message as it will be delivered (header fields added by ortoo,\n"
            "           then the message); --raw: the message only, no envelope lines\n"
            "  flush    try now: every message, message ID, or every message with a\n"
            "           recipient at DOMAIN (its backoff is cleared)\n"
            "  delete   remove message ID from the queue, without any notice\n"
            "  bounce   fail the recipients of ID not yet delivered, with a DSN to the sender\n"
            "\n"
            "flush, delete and bounce need the running server (its control socket).\n");
}

/* "5s", "3m", "2h", "1d": the age in its largest whole unit. */
static void age_format(int64_t secs, char *out, size_t len)
{
    if (secs < 0)
        secs = 0;
    if (secs < 60)
        snprintf(out, len, "%" PRId64 "s", secs);
    else if (secs < 3600)
        snprintf(out, len, "%" PRId64 "m", secs / 60);
    else if (secs < 86400)
        snprintf(out, len, "%" PRId64 "h", secs / 3600);
    else
        snprintf(out, len, "%" PRId64 "d", secs / 86400);
}

/* "812", "12K", "3.4M", "1.2G" (K = 1024). */
static void size_format(uint64_t n, char *out, size_t len)
{
    if (n < 1024)
        snprintf(out, len, "%" PRIu64, n);
    else if (n < (1u << 20))
        snprintf(out, len, "%" PRIu64 "K", (n + 512) / 1024);
    else if (n < (1u << 30))
        snprintf(out, len, "%.1fM", (double)n / (1 << 20));
    else
        snprintf(out, len, "%.1fG", (double)n / (1 << 30));
}

static const char *rcpt_state_name(enum spool_rcpt_state s)
{
    switch (s) {
    case SPOOL_RCPT_PENDING:   return "pending";
    case SPOOL_RCPT_DELIVERED: return "delivered";
    case SPOOL_RCPT_DEFERRED:  return "deferred";
    case SPOOL_RCPT_FAILED:    return "failed";
    default:                   break;
    }
    return "unknown";
}

/*
 * One word for the message: "deferred" once any recipient was tried and
 * deferred, else "queued" while any is pending, else "failed" or
 * "delivered" (a message whose recipients are all final is normally gone).
 */
static const char *msg_state(const struct spool_msg_info *m)
{
    bool pending = false, deferred = false, failed = false;

    for (size_t i = 0; i < m->nrcpts; i++) {
        switch (m->rcpt_state ? m->rcpt_state[i] : SPOOL_RCPT_PENDING) {
        case SPOOL_RCPT_PENDING:  pending = true; break;
        case SPOOL_RCPT_DEFERRED: deferred = true; break;
        case SPOOL_RCPT_FAILED:   failed = true; break;
        default: break;
        }
    }
    if (deferred)
        return "deferred";
    if (pending)
        return "queued";
    return failed ? "failed" : "delivered";
}

/*
 * Print s as a JSON string (RFC 8259 7): quotes, backslash and control
 * characters escaped; valid UTF-8 passed through; any byte that is not part
 * of a valid UTF-8 sequence printed as U+FFFD, so the output is always JSON.
 */
void cli_json_string(FILE *f, const char *s)
{
    const unsigned char *p = (const unsigned char *)(s ? s : "");

    fputc('"', f);
    while (*p != '\0') {
        unsigned char ch = *p;
        if (ch == '"' || ch == '\\') {
            fputc('\\', f);
            fputc(ch, f);
            p++;
        } else if (ch == '\n') {
            fputs("\\n", f);
            p++;
        } else if (ch == '\r') {
            fputs("\\r", f);
            p++;
        } else if (ch == '\t') {
            fputs("\\t", f);
            p++;
        } else if (ch < 0x20 || ch == 0x7f) {
            fprintf(f, "\\u%04x", ch);
            p++;
        } else if (ch < 0x80) {
            fputc(ch, f);
            p++;
        } else {
            /* RFC 3629 4: the well-formed multi-byte sequences. */
            size_t n = 0;
            uint32_t cp = 0, min = 0;
            if (ch >= 0xc2 && ch <= 0xdf) {
                n = 1; cp = ch & 0x1f; min = 0x80;
            } else if (ch >= 0xe0 && ch <= 0xef) {
                n = 2; cp = ch & 0x0f; min = 0x800;
            } else if (ch >= 0xf0 && ch <= 0xf4) {
                n = 3; cp = ch & 0x07; min = 0x10000;
            }
            size_t k = 0;
            while (k < n && (p[1 + k] & 0xc0) == 0x80) {
                cp = (cp << 6) | (p[1 + k] & 0x3f);
                k++;
            }
            if (n == 0 || k != n || cp < min || cp > 0x10ffff ||
                (cp >= 0xd800 && cp <= 0xdfff)) {
                fputs("\\ufffd", f);
                p++;
            } else {
                fwrite(p, 1, n + 1, f);
                p += n + 1;
            }
        }
    }
    fputc('"', f);
}

/* A table cell: control characters would garble the terminal; show them as '?'. */
static void text_safe(FILE *f, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++)
        fputc(*p < 0x20 || *p == 0x7f ? '?' : *p, f);
}

static int on_message(const struct spool_msg_info *m, void *arg)
{
    struct queue_list *ql = arg;
    int64_t age = ql->now - m->received_at;

    if (age < 0)
        age = 0;
    if (ql->json) {
        fputs("{\"id\":", stdout);
        cli_json_string(stdout, m->id);
        printf(",\"shard\":%u,\"size\":%" PRIu64 ",\"age\":%" PRId64
               ",\"received_at\":%" PRId64 ",\"sender\":",
               m->shard, m->size, age, m->received_at);
        cli_json_string(stdout, m->sender);
        fputs(",\"recipients\":[", stdout);
        for (size_t i = 0; i < m->nrcpts; i++) {
            if (i)
                fputc(',', stdout);
            cli_json_string(stdout, m->rcpts[i]);
        }
        fputs("],\"states\":[", stdout);
        for (size_t i = 0; i < m->nrcpts; i++) {
            if (i)
                fputc(',', stdout);
            cli_json_string(stdout, rcpt_state_name(m->rcpt_state ? m->rcpt_state[i]
                                                              : SPOOL_RCPT_PENDING));
        }
        /* Delivery attempts per recipient: count, next (0: now), last (0:
         * never), the last reply (escaped by the spool) or null. */
        fputs("],\"attempts\":[", stdout);
        for (size_t i = 0; i < m->nrcpts; i++)
            printf("%s%u", i ? "," : "", m->rcpt ? m->rcpt[i].attempts : 0u);
        fputs("],\"next_at\":[", stdout);
        for (size_t i = 0; i < m->nrcpts; i++)
            printf("%s%" PRId64, i ? "," : "", m->rcpt ? m->rcpt[i].next_at : 0);
        fputs("],\"last_at\":[", stdout);
        for (size_t i = 0; i < m->nrcpts; i++)
            printf("%s%" PRId64, i ? "," : "", m->rcpt ? m->rcpt[i].last_at : 0);
        fputs("],\"replies\":[", stdout);
        for (size_t i = 0; i < m->nrcpts; i++) {
            if (i)
                fputc(',', stdout);
            if (m->rcpt && m->rcpt[i].reply)
                cli_json_string(stdout, m->rcpt[i].reply);
            else
                fputs("null", stdout);
        }
        /* RFC 3461 parameters as stored: ret "FULL"/"HDRS"/null, envid and
         * orcpt as given (xtext), notify as the SPOOL_NOTIFY_* bits. */
        fputs("],\"dsn\":{\"ret\":", stdout);
        fputs(m->dsn_ret == SPOOL_RET_FULL ? "\"FULL\"" : m->dsn_ret == SPOOL_RET_HDRS
                                                                ? "\"HDRS\"" : "null", stdout);
        fputs(",\"envid\":", stdout);
        if (m->dsn_envid)
            cli_json_string(stdout, m->dsn_envid);
        else
            fputs("null", stdout);
        fputs(",\"notify\":[", stdout);
        for (size_t i = 0; i < m->nrcpts; i++)
            printf("%s%u", i ? "," : "", m->dsn_notify ? m->dsn_notify[i] : 0u);
        fputs("],\"orcpt\":[", stdout);
        for (size_t i = 0; i < m->nrcpts; i++) {
            if (i)
                fputc(',', stdout);
            if (m->dsn_orcpt && m->dsn_orcpt[i])
                cli_json_string(stdout, m->dsn_orcpt[i]);
            else
                fputs("null", stdout);
        }
        fputs("]}}\n", stdout);
    } else {
        char size[16], agebuf[24];
        size_format(m->size, size, sizeof size);
        age_format(age, agebuf, sizeof agebuf);
        printf("%-20s %6s %5s %-9s ", m->id, size, agebuf, msg_state(m));
        if (m->sender == NULL || m->sender[0] == '\0')
            fputs("<>", stdout);
        else
            text_safe(stdout, m->sender);
        fputc(' ', stdout);
        for (size_t i = 0; i < m->nrcpts; i++) {
            if (i)
                fputc(',', stdout);
            text_safe(stdout, m->rcpts[i]);
        }
        fputc('\n', stdout);
        /* The recipients tried so far: state, attempts, next try, last reply. */
        for (size_t i = 0; m->rcpt != NULL && i < m->nrcpts; i++) {
            const struct spool_rcpt_info *ri = &m->rcpt[i];
            if (ri->attempts == 0 && ri->reply == NULL)
                continue;
            printf("    ");
            text_safe(stdout, m->rcpts[i]);
            printf(" %s attempts=%u", rcpt_state_name(ri->state), ri->attempts);
            if (ri->state == SPOOL_RCPT_DEFERRED || ri->state == SPOOL_RCPT_PENDING) {
                age_format(ri->next_at - ql->now, agebuf, sizeof agebuf);
                printf(" next=%s%s", ri->next_at > ql->now ? "in " : "",
                       ri->next_at > ql->now ? agebuf : "now");
            }
            if (ri->reply != NULL) {
                printf(" reply: ");
                text_safe(stdout, ri->reply);
            }
            fputc('\n', stdout);
        }
    }
    ql->count++;
    return 0;
}

/* `queue list [--json]`.  Returns the exit status. */
static int queue_list(const char *config_dir, int argc, char **argv)
{
    struct queue_list ql = { .now = (int64_t)time(NULL) };
    struct config *cfg = NULL;
    char err[512] = "";
    int status = 1;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            ql.json = true;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            queue_usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "ortoo queue list: unknown argument '%s'\n", argv[i]);
            queue_usage(stderr);
            return 2;
        }
    }
    if (config_load(config_dir, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "ortoo queue: %s\n", err[0] ? err : "cannot load the configuration");
        return 1;
    }
    if (!ql.json)
        printf("%-20s %6s %5s %-9s %s %s\n", "ID", "SIZE", "AGE", "STATE", "SENDER",
               "RECIPIENTS");
    int rc = spool_scan(cfg->spool, on_message, &ql);
    if (rc < 0 && rc != -ENOENT) { /* no spool directory yet: an empty queue */
        fflush(stdout);
        fprintf(stderr, "ortoo queue: cannot read the spool %s: %s\n", cfg->spool,
                strerror(-rc));
        goto out;
    }
    if (!ql.json)
        printf("%zu message%s\n", ql.count, ql.count == 1 ? "" : "s");
    status = 0;
out:
    fflush(stdout);
    config_free(cfg);
    return status;
}

/* What the show callback needs. */
struct queue_show {
    const char *id;
    bool raw;
    bool found;
    bool write_failed;
};

static void stdout_bytes(void *arg, const char *data, size_t len)
{
    struct queue_show *qs = arg;
    if (fwrite(data, 1, len, stdout) != len)
        qs->write_failed = true;
}

static int on_show(const struct spool_msg_info *m, void *arg)
{
    struct queue_show *qs = arg;

    if (strcmp(m->id, qs->id) != 0)
        return 0;
    qs->found = true;
    if (!qs->raw) {
        char when[64] = "";
        time_t t = (time_t)m->received_at;
        struct tm tm;
        if (gmtime_r(&t, &tm) != NULL)
            strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        printf("id: %s\nreceived: %s\nsender: <", m->id, when);
        text_safe(stdout, m->sender);
        printf(">\n");
        for (size_t i = 0; i < m->nrcpts; i++) {
            printf("recipient: <");
            text_safe(stdout, m->rcpts[i]);
            printf("> %s\n", rcpt_state_name(m->rcpt_state ? m->rcpt_state[i]
                                                           : SPOOL_RCPT_PENDING));
        }
        if (m->auth_user != NULL && m->auth_user[0] != '\0') {
            printf("auth-user: ");
            text_safe(stdout, m->auth_user);
            printf("\n");
        }
        printf("client: %s\nsize: %" PRIu64 "\n\n", m->client_addr ? m->client_addr : "",
               m->size);
    }
    if (m->headers != NULL)
        stdout_bytes(qs, m->headers, strlen(m->headers));
    struct dkim_unstuff u;
    dkim_unstuff_init(&u);
    dkim_unstuff_feed(&u, m->data, (size_t)m->size, stdout_bytes, qs);
    return 1; /* found: stop the scan */
}

/* `queue show ID [--raw]`.  Returns the exit status. */
static int queue_show(const char *config_dir, int argc, char **argv)
{
    struct queue_show qs = {0};
    struct config *cfg = NULL;
    char err[512] = "";
    int status = 1;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--raw") == 0) {
            qs.raw = true;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            queue_usage(stdout);
            return 0;
        } else if (argv[i][0] == '-' || qs.id != NULL) {
            fprintf(stderr, "ortoo queue show: unexpected argument '%s'\n", argv[i]);
            queue_usage(stderr);
            return 2;
        } else {
            qs.id = argv[i];
        }
    }
    if (qs.id == NULL) {
        fprintf(stderr, "ortoo queue show: ID is missing\n");
        queue_usage(stderr);
        return 2;
    }
    if (config_load(config_dir, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "ortoo queue: %s\n", err[0] ? err : "cannot load the configuration");
        return 1;
    }
    int rc = spool_scan(cfg->spool, on_show, &qs);
    fflush(stdout);
    if (rc < 0 && rc != -ENOENT) {
        fprintf(stderr, "ortoo queue: cannot read the spool %s: %s\n", cfg->spool,
                strerror(-rc));
    } else if (!qs.found) {
        fprintf(stderr, "ortoo queue show: no message %s in the queue\n", qs.id);
    } else if (qs.write_failed || ferror(stdout)) {
        fprintf(stderr, "ortoo queue show: write error\n");
    } else {
        status = 0;
    }
    config_free(cfg);
    return status;
}

/* A message id or a domain as the control protocol carries it (one word). */
static bool target_ok(const char *s)
{
    if (*s == '\0' || strlen(s) > 253)
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '-' || *p == '_'))
            return false;
    return true;
}

/* `queue flush [ID|DOMAIN]`, `queue delete ID`, `queue bounce ID`: through
 * the running daemon's control socket.  Returns the exit status. */
static int queue_control(const char *config_dir, int argc, char **argv)
{
    const char *cmd = argv[0];
    bool flush = strcmp(cmd, "flush") == 0;
    char request[512], status[2048], what[32];

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            queue_usage(stdout);
            return 0;
        }
    }
    if (argc > 2 || (!flush && argc != 2)) {
        fprintf(stderr, "ortoo queue %s: %s\n", cmd,
                argc > 2 ? "too many arguments" : "ID is missing");
        queue_usage(stderr);
        return 2;
    }
    if (argc == 2 && !target_ok(argv[1])) {
        fprintf(stderr, "ortoo queue %s: '%s' is not a message id%s\n", cmd, argv[1],
                flush ? " or a domain" : "");
        return 2;
    }
    snprintf(request, sizeof request, "queue %s%s%s", cmd, argc == 2 ? " " : "",
             argc == 2 ? argv[1] : "");
    snprintf(what, sizeof what, "queue %s", cmd);
    int rc = cli_control_call(config_dir, what, request, NULL, NULL, status, sizeof status);
    if (rc == 0) {
        printf("%s\n", status);
        return 0;
    }
    if (rc == 1)
        fprintf(stderr, "ortoo queue %s: %s\n", cmd, status);
    return 1;
}

/*
 * Entry point (see cli.h).  list and show read the configuration and the
 * spool and never write; flush, delete and bounce ask the daemon.  Returns
 * 0, 1 on failure, 2 on a usage error.
 */
int cli_queue(const char *config_dir, int argc, char **argv)
{
    if (argc < 2) {
        queue_usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "list") == 0)
        return queue_list(config_dir, argc - 1, argv + 1);
    if (strcmp(argv[1], "show") == 0)
        return queue_show(config_dir, argc - 1, argv + 1);
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        queue_usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "flush") == 0 || strcmp(argv[1], "delete") == 0 ||
        strcmp(argv[1], "bounce") == 0)
        return queue_control(config_dir, argc - 1, argv + 1);
    fprintf(stderr, "ortoo queue: unknown command '%s'\n", argv[1]);
    queue_usage(stderr);
    return 2;
}
