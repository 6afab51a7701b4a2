/* SPDX-License-Identifier: MIT */
/*
 * cli_lookup.c - `ortoo lookup TYPE NAME`: one DNS lookup through the same
 * resolver code the daemon uses (resolver/resolver.h), with the [resolver]
 * settings of the config, on a private event loop.  It answers "what does
 * ortoo see?" for a person, and it is how the end-to-end tests drive the
 * resolver through the real binary.
 *
 * Output (stdout): a summary line, then the records in zone-file form:
 *
 *   ;; example.test MX status=ok dnssec=secure ttl=300
 *   example.test. 300 IN MX 10 mx1.example.test.
 *
 * A failure prints only the summary, with the reason (why="...", e.g.
 * libunbound's why_bogus): a bogus answer never shows its data.  Exit
 * status: 0 with records, 1 for anything else (nxdomain, nodata, nullmx,
 * servfail, timeout, bogus, a setup error), 2 for a usage error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/config.h"
#include "io/loop.h"
#include "resolver/resolver.h"

/* The lookup in flight and its answer. */
struct lookup {
    struct io_loop *loop;
    struct res_req req;
    const struct res_answer *ans; /* one reference, once done */
};

static void lookup_usage(FILE *f)
{
    fprintf(f,
            "usage: ortoo [-c DIR] lookup [--timeout SECONDS] TYPE NAME\n"
            "\n"
            "Look NAME up with ortoo's resolver and the [resolver] settings of the\n"
            "configuration, and print every record with its DNSSEC state.\n"
            "--timeout: give up after SECONDS (1-300; default %d, as the server).\n"
            "TYPE is MX, A, AAAA, TLSA, PTR or TXT; for PTR, NAME may be an IPv4 or\n"
            "IPv6 address.  MX follows RFC 5321 5.1 (implicit MX) and RFC 7505\n"
            "(null MX).  Exit status 0 when records were found, 1 otherwise.\n",
            RES_DEFAULT_TIMEOUT_MS / 1000);
}

static void on_answer(struct res_req *req, const struct res_answer *ans)
{
    struct lookup *lk = req->owner;
    lk->ans = res_answer_ref(ans);
    io_loop_stop(lk->loop);
}

/* Print bytes as a quoted string, escaping '"', '\' and non-printables. */
static void print_quoted(const char *s, size_t len)
{
    putchar('"');
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            printf("\\%03u", c);
        else
            putchar(c);
    }
    putchar('"');
}

static void print_summary(const struct res_answer *a)
{
    printf(";; %s %s status=%s dnssec=%s", a->name, res_type_name(a->type),
           res_status_name(a->status), res_sec_name(a->sec));
    if (a->status == RES_OK || a->status == RES_NXDOMAIN || a->status == RES_NODATA ||
        a->status == RES_NULLMX)
        printf(" ttl=%u", a->ttl);
    if (a->implicit_mx)
        printf(" implicit_mx=yes");
    if (a->canon != NULL && strcmp(a->canon, a->name) != 0)
        printf(" canon=%s", a->canon);
    if (a->why != NULL) {
        printf(" why=");
        print_quoted(a->why, strlen(a->why));
    }
    putchar('\n');
}

static void print_records(const struct res_answer *a)
{
    char text[INET6_ADDRSTRLEN];
    for (size_t i = 0; i < a->n; i++) {
        printf("%s. %u IN %s ", a->canon, a->ttl, res_type_name(a->type));
        switch (a->type) {
        case RES_A:
            printf("%s\n", inet_ntop(AF_INET, &a->a[i], text, sizeof(text)));
            break;
        case RES_AAAA:
            printf("%s\n", inet_ntop(AF_INET6, &a->aaaa[i], text, sizeof(text)));
            break;
        case RES_MX:
            printf("%u %s.\n", a->mx[i].pref, a->mx[i].host);
            break;
        case RES_PTR:
            printf("%s.\n", a->ptr[i]);
            break;
        case RES_TLSA:
            printf("%u %u %u ", a->tlsa[i].usage, a->tlsa[i].selector, a->tlsa[i].mtype);
            for (size_t k = 0; k < a->tlsa[i].len; k++)
                printf("%02x", a->tlsa[i].data[k]);
            putchar('\n');
            break;
        case RES_TXT: {
            const struct res_txt *t = &a->txt[i];
            for (size_t k = 0; k < t->nstrings; k++) {
                if (k > 0)
                    putchar(' ');
                print_quoted(t->strings[k].s, t->strings[k].len);
            }
            putchar('\n');
            if (t->nstrings > 1) { /* what SPF and DKIM read (RFC 7208 3.3) */
                printf(";; joined: ");
                print_quoted(t->text, t->len);
                putchar('\n');
            }
            break;
        }
        }
    }
}

int cli_lookup(const char *config_dir, int argc, char **argv)
{
    enum res_type type;
    char err[600];
    struct config *cfg = NULL;
    struct lookup lk = {0};
    int status = 1;
    unsigned timeout_s = 0;

    if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        lookup_usage(stdout);
        return 0;
    }
    if (argc >= 3 && strcmp(argv[1], "--timeout") == 0) {
        char *end;
        unsigned long v = strtoul(argv[2], &end, 10);
        if (*argv[2] == '\0' || *end != '\0' || v < 1 || v > 300) {
            fprintf(stderr, "ortoo: lookup: --timeout takes 1 to 300 seconds, got '%s'\n",
                    argv[2]);
            return 2;
        }
        timeout_s = (unsigned)v;
        argc -= 2;
        argv += 2;
    }
    if (argc != 3) {
        lookup_usage(stderr);
        return 2;
    }
    if (res_type_parse(argv[1], &type) < 0) {
        fprintf(stderr, "ortoo: lookup: unknown type '%s' (MX, A, AAAA, TLSA, PTR or TXT)\n",
                argv[1]);
        return 2;
    }
    if (config_load(config_dir, &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "ortoo: %s\n", err);
        return 1;
    }
    if (timeout_s > 0)
        cfg->resolver.timeout_ms = timeout_s * 1000;
    lk.loop = io_loop_new(cfg->io, 64);
    if (lk.loop == NULL) {
        fprintf(stderr, "ortoo: lookup: cannot create the %s event loop: %s\n",
                io_backend_name(cfg->io), strerror(errno));
        config_free(cfg);
        return 1;
    }
    struct res_ctx *ctx = res_ctx_new(lk.loop, &cfg->resolver, err, sizeof(err));
    if (ctx == NULL) {
        fprintf(stderr, "ortoo: %s\n", err);
        goto out;
    }
    res_req_init(&lk.req, &lk);
    int rc = res_lookup(ctx, &lk.req, type, argv[2], on_answer);
    if (rc < 0) {
        fprintf(stderr, "ortoo: lookup: '%s' is not a valid %s\n", argv[2],
                type == RES_PTR ? "domain name or IP address" : "domain name");
        status = 2;
        goto out;
    }
    rc = io_loop_run(lk.loop); /* until on_answer (the resolver's deadline bounds it) */
    if (rc < 0 || lk.ans == NULL) {
        fprintf(stderr, "ortoo: lookup: event loop failed: %s\n", strerror(rc < 0 ? -rc : EIO));
        goto out;
    }
    print_summary(lk.ans);
    print_records(lk.ans);
    status = lk.ans->status == RES_OK ? 0 : 1;
out:
    if (lk.ans != NULL)
        res_answer_unref(lk.ans);
    res_ctx_free(ctx);
    io_loop_free(lk.loop);
    config_free(cfg);
    fflush(stdout);
    return status;
}
