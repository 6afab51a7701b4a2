/* SPDX-License-Identifier: MIT */
/*
 * cli_doctor.c - `ortoo doctor DOMAIN`: does the world see this server the
 * way mail for DOMAIN needs it to?  Checks, with ortoo's own resolver and
 * the [resolver] settings of the configuration, every DNS record the
 * self-hosting guide (docs/setup.md) asks for, the certificate, and whether
 * port 25 is open outbound, and prints each finding as OK / WARN / FAIL with
 * the exact record to publish (or the thing to do) when something is
 * missing or wrong.  Exit status 0 only when nothing is FAIL.
 *
 * This file is the command: options, the server's addresses, the gathering
 * of every answer at once on one private loop, and the output (text, or one
 * JSON object with --json).  The judging is cli/doctor_checks.c; the data
 * both share is described in cli/doctor.h.
 *
 * The server's addresses (which are also its sending addresses) come from
 * --ip, else from the listeners when they bind specific public addresses,
 * else from the host's interfaces (public addresses only: loopback,
 * link-local, private and unique-local ones are left out, since the world
 * never sees them); the output says which.
 *
 * Gathering: everything independent starts at once: the lookups (MX, A and
 * AAAA of the host name, the SPF, DKIM, DMARC, MTA-STS and TLS-RPT TXT
 * records, the TLSA of the host name), for each address its forward-
 * confirmed reverse DNS (resolver/fcrdns.h) and its SPF evaluation
 * (resolver/spf.h, check_host() with <sender> postmaster@DOMAIN and the host
 * name as HELO), and the port 25 target, whose answers lead to the
 * connection.  The resolver coalesces the queries they share.  One timer
 * bounds the whole run (--timeout, default DR_DEFAULT_TIMEOUT_S): when it
 * fires, whatever is in flight is cancelled and reported as unanswered.
 *
 * The port 25 test never connects anywhere the user did not ask for: by
 * default the MX of DR_PORT25_DEFAULT, found through ortoo's resolver;
 * --port25-target HOST:PORT names another (the tests use a loopback
 * listener), --no-port25 skips it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "cli/cli.h"
#include "cli/doctor.h"
#include "core/config.h"
#include "core/users.h"
#include "dkim/keys.h"
#include "io/loop.h"
#include "io/text.h"
#include "resolver/resolver.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ortoo [-c DIR] doctor DOMAIN [--ip ADDR ...] [--json] [--timeout S]\n"
            "                     [--no-port25 | --port25-target HOST:PORT]\n"
            "\n"
            "Check what mail for DOMAIN needs from the world, with ortoo's own resolver:\n"
            "MX, the server name's A/AAAA, reverse DNS (PTR and FCrDNS) of each address,\n"
            "SPF evaluated for each address, DKIM records against the keys on disk,\n"
            "DMARC, the certificate, DNSSEC and TLSA, MTA-STS and TLS-RPT, and whether\n"
            "port 25 is open outbound.  Each line is OK, WARN or FAIL, with the record\n"
            "to publish when one is missing or wrong.  Exit status 0 when nothing FAILs.\n"
            "\n"
            "  --ip ADDR           the server's public address (repeat for more); default:\n"
            "                      the listeners' addresses, else the host's public ones\n"
            "  --json              one JSON object: {domain, hostname, addresses, checks:\n"
            "                      [{name, subject, status, detail, why, fix}], ...}\n"
            "  --timeout S         give up on answers after S seconds (1-300; default %d)\n"
            "  --port25-target HOST:PORT\n"
            "                      where to test outbound port 25 (default: the MX of %s)\n"
            "  --no-port25         do not test outbound port 25\n",
            DR_DEFAULT_TIMEOUT_S, DR_PORT25_DEFAULT);
}

/* ---- the server's addresses ---- */

/* True for an address the world can reach: not unspecified, loopback,
 * link-local, private (RFC 1918, RFC 6598), unique-local or multicast. */
static bool addr_public(int af, const void *ip)
{
    if (af == AF_INET) {
        uint32_t a = ntohl(((const struct in_addr *)ip)->s_addr);
        return !(a == 0 || (a >> 24) == 127 || (a >> 24) == 10 || (a >> 16) == 0xa9fe ||
                 (a >> 20) == 0xac1 || (a >> 16) == 0xc0a8 || (a >> 22) == (100u << 2 | 1) ||
                 (a >> 28) == 0xe);
    }
    const struct in6_addr *a6 = ip;
    if (IN6_IS_ADDR_UNSPECIFIED(a6) || IN6_IS_ADDR_LOOPBACK(a6) || IN6_IS_ADDR_LINKLOCAL(a6) ||
        IN6_IS_ADDR_MULTICAST(a6) || IN6_IS_ADDR_SITELOCAL(a6) || (a6->s6_addr[0] & 0xfe) == 0xfc)
        return false;
    if (IN6_IS_ADDR_V4MAPPED(a6))
        return addr_public(AF_INET, &a6->s6_addr[12]);
    return true;
}

/* "203.0.113.25", "2001:db8::25" or "[2001:db8::25]" into dr.  Returns 0,
 * -EINVAL (not an address) or -E2BIG. */
static int addr_add_text(struct doctor *dr, const char *s)
{
    char buf[INET6_ADDRSTRLEN + 2];
    struct in6_addr ip;
    size_t len = strlen(s);

    if (len >= 2 && s[0] == '[' && s[len - 1] == ']' && len - 2 < sizeof(buf)) {
        memcpy(buf, s + 1, len - 2);
        buf[len - 2] = '\0';
        s = buf;
    }
    if (inet_pton(AF_INET, s, &ip) == 1)
        return doctor_addr_add(dr, AF_INET, &ip);
    if (inet_pton(AF_INET6, s, &ip) == 1 && IN6_IS_ADDR_V4MAPPED(&ip))
        return doctor_addr_add(dr, AF_INET, &ip.s6_addr[12]); /* ::ffff:a.b.c.d is IPv4 */
    if (inet_pton(AF_INET6, s, &ip) == 1)
        return doctor_addr_add(dr, AF_INET6, &ip);
    return -EINVAL;
}

/* The listeners' addresses, when they are specific and public. */
static void addrs_from_listeners(struct doctor *dr)
{
    for (size_t i = 0; i < dr->cfg->nlistens; i++) {
        const struct sockaddr_storage *ss = &dr->cfg->listens[i].addr;
        const void *ip = ss->ss_family == AF_INET
                             ? (const void *)&((const struct sockaddr_in *)ss)->sin_addr
                             : (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr;
        if ((ss->ss_family == AF_INET || ss->ss_family == AF_INET6) &&
            addr_public(ss->ss_family, ip))
            (void)doctor_addr_add(dr, ss->ss_family, ip);
    }
}

/* The host's public interface addresses. */
static void addrs_from_interfaces(struct doctor *dr)
{
    struct ifaddrs *ifs, *i;
    if (getifaddrs(&ifs) < 0)
        return;
    for (i = ifs; i != NULL; i = i->ifa_next) {
        if (i->ifa_addr == NULL)
            continue;
        int af = i->ifa_addr->sa_family;
        const void *ip = af == AF_INET ? (const void *)&((struct sockaddr_in *)i->ifa_addr)->sin_addr
                                       : (const void *)&((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr;
        if ((af == AF_INET || af == AF_INET6) && addr_public(af, ip))
            (void)doctor_addr_add(dr, af, ip);
    }
    freeifaddrs(ifs);
}

/* ---- gathering ---- */

static void lookup_done(struct dr_lookup *lk);

static void maybe_done(struct doctor *dr)
{
    if (dr->inflight > 0 || io_op_busy(&dr->p25.conn) || io_op_busy(&dr->p25.timer))
        return;
    if (io_op_busy(&dr->deadline))
        io_cancel(dr->loop, &dr->deadline); /* its callback comes back here */
    else
        io_loop_stop(dr->loop);
}

static void on_lookup(struct res_req *req, const struct res_answer *ans)
{
    struct dr_lookup *lk = req->owner;
    lk->ans = res_answer_ref(ans);
    lk->dr->inflight--;
    lookup_done(lk);
}

static void lookup_done(struct dr_lookup *lk)
{
    if (lk->then != NULL && !lk->dr->expired)
        lk->then(lk);
    maybe_done(lk->dr);
}

/*
 * Start a lookup of (type, name); then runs after its answer.  Returns the
 * lookup (owned by dr->all), or NULL when out of memory.  A name the
 * resolver refuses gets an answer of its own at once (RES_ERROR), so that
 * the checks explain it.
 */
static struct dr_lookup *lookup_start(struct doctor *dr, enum res_type type, const char *name,
                                      void (*then)(struct dr_lookup *))
{
    struct dr_lookup *lk = calloc(1, sizeof(*lk));
    if (lk == NULL)
        return NULL;
    lk->dr = dr;
    lk->type = type;
    snprintf(lk->name, sizeof(lk->name), "%s", name);
    lk->then = then;
    lk->next = dr->all;
    dr->all = lk;
    res_req_init(&lk->req, lk);
    if (dr->expired)
        return lk;
    if (res_lookup(dr->res, &lk->req, type, name, on_lookup) < 0) {
        struct res_answer *a = &lk->refused;
        a->type = type;
        a->status = RES_ERROR;
        a->name = lk->name;
        a->canon = lk->name;
        a->why = "not a valid name";
        a->rcode = -1;
        lk->ans = a;
        return lk;
    }
    dr->inflight++;
    return lk;
}

static void on_fcrdns(struct fcrdns_req *req, enum fcrdns_result result)
{
    struct dr_addr *a = req->owner;
    a->fc_done = true;
    a->dr->inflight--;
    maybe_done(a->dr);
}

static void on_spf(struct spf_req *req, enum spf_result result)
{
    struct dr_addr *a = req->owner;
    a->spf_done = true;
    a->dr->inflight--;
    maybe_done(a->dr);
}

/*
 * Start the checks of one address: its reverse DNS confirmed forward, and
 * SPF of the domain evaluated for it as receivers will (RFC 7208 4.1:
 * <sender> is postmaster@DOMAIN, as for a bounce; HELO our host name).
 */
static void addr_start(struct doctor *dr, struct dr_addr *a)
{
    a->dr = dr;
    fcrdns_req_init(&a->fc, a);
    spf_req_init(&a->spf, a);
    if (fcrdns_check(dr->res, &a->fc, a->af, &a->ip, on_fcrdns) == 0)
        dr->inflight++;
    char sender[RES_NAME_MAX + 16];
    snprintf(sender, sizeof(sender), "postmaster@%s", dr->domain);
    const struct spf_params p = {
        .family = a->af,
        .ip = (const unsigned char *)&a->ip,
        .domain = dr->domain,
        .sender = sender,
        .helo = dr->hostname,
        .receiver = dr->hostname,
    };
    int rc = spf_check(dr->res, &a->spf, &p, on_spf);
    if (rc == 0)
        dr->inflight++;
    else if (rc == 1)
        a->spf_done = true;
}

/* ---- port 25 ---- */

static void on_p25_connect(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct doctor *dr = op->owner;
    struct dr_port25 *p = &dr->p25;
    p->result = res;
    if (p->fd >= 0) {
        close(p->fd);
        p->fd = -1;
    }
    io_cancel(dr->loop, &p->timer);
    maybe_done(dr);
}

static void on_p25_timer(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct doctor *dr = op->owner;
    if (res == 0) {
        dr->p25.timed_out = true;
        io_cancel(dr->loop, &dr->p25.conn);
    }
    maybe_done(dr);
}

/* Connect to p->sa with a short timer.  A failure to even start is the
 * result (the check reports it). */
static void p25_connect(struct doctor *dr)
{
    struct dr_port25 *p = &dr->p25;
    char ip[INET6_ADDRSTRLEN];
    const void *addr = p->sa.ss_family == AF_INET
                           ? (const void *)&((struct sockaddr_in *)&p->sa)->sin_addr
                           : (const void *)&((struct sockaddr_in6 *)&p->sa)->sin6_addr;
    inet_ntop(p->sa.ss_family, addr, ip, sizeof(ip));
    snprintf(p->sa_text, sizeof(p->sa_text), p->sa.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip,
             p->port);
    p->tried = true;
    p->fd = socket(p->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (p->fd < 0) {
        p->result = -errno;
        return;
    }
    int rc = io_connect(dr->loop, &p->conn, p->fd, (struct sockaddr *)&p->sa, p->salen,
                        on_p25_connect);
    if (rc < 0) {
        p->result = rc;
        close(p->fd);
        p->fd = -1;
        return;
    }
    if (io_timer_start(dr->loop, &p->timer, DR_PORT25_TIMEOUT_MS, on_p25_timer) < 0)
        io_cancel(dr->loop, &p->conn); /* no timer: do not wait unbounded */
}

static void p25_set(struct dr_port25 *p, int af, const void *ip)
{
    memset(&p->sa, 0, sizeof(p->sa));
    if (af == AF_INET) {
        struct sockaddr_in *s = (struct sockaddr_in *)&p->sa;
        s->sin_family = AF_INET;
        s->sin_port = htons(p->port);
        memcpy(&s->sin_addr, ip, sizeof(s->sin_addr));
        p->salen = sizeof(*s);
    } else {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)&p->sa;
        s->sin6_family = AF_INET6;
        s->sin6_port = htons(p->port);
        memcpy(&s->sin6_addr, ip, sizeof(s->sin6_addr));
        p->salen = sizeof(*s);
    }
}

/* The target host's A, then (none) AAAA: connect to the first address. */
static void on_p25_addr(struct dr_lookup *lk)
{
    struct doctor *dr = lk->dr;
    struct dr_port25 *p = &dr->p25;
    const struct res_answer *a = lk->ans;
    if (a->status == RES_OK && a->type == RES_A) {
        p25_set(p, AF_INET, &a->a[0]);
        p25_connect(dr);
    } else if (a->status == RES_OK && a->type == RES_AAAA) {
        p25_set(p, AF_INET6, &a->aaaa[0]);
        p25_connect(dr);
    } else if (a->type == RES_A) {
        const char *host = p->by_mx ? p->mx_host : p->host;
        p->aaaa = lookup_start(dr, RES_AAAA, host, on_p25_addr);
    }
}

/* The target domain's MX: its most preferred host. */
static void on_p25_mx(struct dr_lookup *lk)
{
    struct dr_port25 *p = &lk->dr->p25;
    if (lk->ans->status != RES_OK)
        return;
    snprintf(p->mx_host, sizeof(p->mx_host), "%s", lk->ans->mx[0].host);
    p->a = lookup_start(lk->dr, RES_A, p->mx_host, on_p25_addr);
}

static void p25_start(struct doctor *dr)
{
    struct dr_port25 *p = &dr->p25;
    struct in6_addr ip;
    if (!p->enabled)
        return;
    if (inet_pton(AF_INET, p->host, &ip) == 1) {
        p25_set(p, AF_INET, &ip);
        p25_connect(dr);
    } else if (inet_pton(AF_INET6, p->host, &ip) == 1) {
        p25_set(p, AF_INET6, &ip);
        p25_connect(dr);
    } else if (p->by_mx) {
        p->mx = lookup_start(dr, RES_MX, p->host, on_p25_mx);
    } else {
        p->a = lookup_start(dr, RES_A, p->host, on_p25_addr);
    }
}

/* "HOST:PORT" or "[V6]:PORT".  Returns 0 or -1. */
static int p25_parse_target(const char *s, struct dr_port25 *p)
{
    const char *h;
    size_t hl;
    bool bracketed;
    unsigned port;
    if (text_host_port(s, &h, &hl, &bracketed, &port) < 0 || hl == 0 ||
        hl >= sizeof(p->host) || port == 0)
        return -1;
    memcpy(p->host, h, hl);
    p->host[hl] = '\0';
    struct in6_addr ip;
    char norm[RES_NAME_MAX + 1];
    if (inet_pton(AF_INET, p->host, &ip) != 1 && inet_pton(AF_INET6, p->host, &ip) != 1 &&
        res_name_normalize(p->host, norm, sizeof(norm)) < 0)
        return -1;
    p->port = (uint16_t)port;
    p->by_mx = false;
    return 0;
}

/* ---- the deadline ---- */

/* Stop everything in flight; what did not finish stays unanswered. */
static void cancel_all(struct doctor *dr)
{
    dr->expired = true;
    for (struct dr_lookup *lk = dr->all; lk != NULL; lk = lk->next) {
        if (res_req_busy(&lk->req)) {
            res_cancel(&lk->req);
            dr->inflight--;
        }
    }
    for (size_t i = 0; i < dr->naddrs; i++) {
        struct dr_addr *a = &dr->addrs[i];
        if (a->dr == NULL)
            continue;
        if (fcrdns_req_busy(&a->fc)) {
            fcrdns_cancel(&a->fc);
            dr->inflight--;
        }
        if (spf_req_busy(&a->spf)) {
            spf_cancel(&a->spf);
            dr->inflight--;
        }
    }
    io_cancel(dr->loop, &dr->p25.conn);
    io_cancel(dr->loop, &dr->p25.timer);
}

static void on_deadline(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct doctor *dr = op->owner;
    if (res == 0)
        cancel_all(dr);
    maybe_done(dr);
}

/* Submit the first wave.  Returns 0 or -ENOMEM. */
static int gather_start(struct doctor *dr)
{
    char name[RES_NAME_MAX + 64];
    const char *d = dr->domain;

#define START(field, type, ...)                                                                    \
    do {                                                                                           \
        snprintf(name, sizeof(name), __VA_ARGS__);                                                 \
        if ((dr->field = lookup_start(dr, type, name, NULL)) == NULL)                           \
            return -ENOMEM;                                                                        \
    } while (0)
    START(mx, RES_MX, "%s", d);
    START(host_a, RES_A, "%s", dr->hostname);
    START(host_aaaa, RES_AAAA, "%s", dr->hostname);
    START(spf_txt, RES_TXT, "%s", d);
    START(dmarc, RES_TXT, "_dmarc.%s", d);
    START(tlsa, RES_TLSA, "_25._tcp.%s", dr->hostname);
    START(mtasts, RES_TXT, "_mta-sts.%s", d);
    START(tlsrpt, RES_TXT, "_smtp._tls.%s", d);
#undef START
    for (size_t i = 0; i < dr->ndkim; i++) {
        snprintf(name, sizeof(name), "%s._domainkey.%s", dkim_key_selector(dr->dkim_key[i]), d);
        if ((dr->dkim[i] = lookup_start(dr, RES_TXT, name, NULL)) == NULL)
            return -ENOMEM;
    }
    for (size_t i = 0; i < dr->naddrs; i++)
        addr_start(dr, &dr->addrs[i]);
    p25_start(dr);
    return 0;
}

/* ---- output ---- */

/* Print text with every line after the first led by indent. */
static void print_indented(const char *label, const char *text)
{
    printf("       %s: ", label);
    for (const char *p = text; *p != '\0'; p++) {
        putchar(*p);
        if (*p == '\n' && p[1] != '\0')
            printf("       %*s  ", (int)strlen(label), "");
    }
    putchar('\n');
}

static void print_text(const struct doctor *dr, unsigned counts[3])
{
    printf("ortoo doctor %s: server %s, addresses ", dr->domain, dr->hostname);
    for (size_t i = 0; i < dr->naddrs; i++)
        printf("%s%s", i ? ", " : "", dr->addrs[i].text);
    printf("%s (%s)\n\n", dr->naddrs ? "" : "none", dr->addrs_from);
    for (size_t i = 0; i < dr->nchecks; i++) {
        const struct dr_check *c = &dr->checks[i];
        printf("%-6s %s %s: %s\n", dr_status_name(c->status), c->name, c->subject, c->detail);
        if (c->why != NULL)
            print_indented("why", c->why);
        if (c->fix != NULL)
            print_indented("fix", c->fix);
    }
    printf("\n%u FAIL, %u WARN, %u OK%s\n", counts[DR_FAIL], counts[DR_WARN], counts[DR_OK],
           dr->expired ? " (some answers did not come before the deadline)" : "");
}

static void json_field(const char *key, const char *value, bool comma)
{
    printf("\"%s\":", key);
    if (value == NULL)
        fputs("null", stdout);
    else
        cli_json_string(stdout, value);
    if (comma)
        putchar(',');
}

static void print_json(const struct doctor *dr, unsigned counts[3])
{
    putchar('{');
    json_field("domain", dr->domain, true);
    json_field("hostname", dr->hostname, true);
    printf("\"addresses\":[");
    for (size_t i = 0; i < dr->naddrs; i++) {
        if (i > 0)
            putchar(',');
        cli_json_string(stdout, dr->addrs[i].text);
    }
    printf("],");
    json_field("addresses_from", dr->addrs_from, true);
    printf("\"checks\":[");
    for (size_t i = 0; i < dr->nchecks; i++) {
        const struct dr_check *c = &dr->checks[i];
        printf("%s{", i ? "," : "");
        json_field("name", c->name, true);
        json_field("subject", c->subject, true);
        json_field("status", dr_status_name(c->status), true);
        json_field("detail", c->detail, true);
        json_field("why", c->why, true);
        json_field("fix", c->fix, false);
        putchar('}');
    }
    printf("],\"summary\":{\"ok\":%u,\"warn\":%u,\"fail\":%u},\"deadline_passed\":%s}\n",
           counts[DR_OK], counts[DR_WARN], counts[DR_FAIL], dr->expired ? "true" : "false");
}

/* ---- the command ---- */

/* Collect what cli_cert_inspect says about the host's pair. */
static void on_cert_note(void *arg, bool error, const char *file, const char *msg)
{
    struct doctor *dr = arg;
    size_t len = strlen(dr->cert_notes);
    snprintf(dr->cert_notes + len, sizeof(dr->cert_notes) - len, "%s%s: %s", len ? "; " : "",
             file, msg);
    if (error)
        dr->cert_error = true;
}

/*
 * What the judging needs to know about the host's certificate beyond what
 * cli_cert_inspect found: its issuer, the SHA-256 of its public key (the
 * TLSA 3 1 1 record that would match it), and whether its chain verifies
 * up to the system's CAs for the host name, as a sender verifying PKIX
 * would see it (OpenSSL's default store, which SSL_CERT_FILE and
 * SSL_CERT_DIR override).
 */
static void cert_facts(struct doctor *dr)
{
    const struct cli_cert *c = &dr->cert;
    if (!c->has_leaf || c->der[0] == NULL)
        return;
    const unsigned char *p = c->der[0];
    X509 *leaf = d2i_X509(NULL, &p, (long)c->der_len[0]);
    if (leaf == NULL) {
        ERR_clear_error();
        return;
    }
    X509_NAME *issuer = X509_get_issuer_name(leaf);
    if (X509_NAME_get_text_by_NID(issuer, NID_organizationName, dr->cert_issuer,
                                  sizeof(dr->cert_issuer)) < 0 &&
        X509_NAME_get_text_by_NID(issuer, NID_commonName, dr->cert_issuer,
                                  sizeof(dr->cert_issuer)) < 0)
        X509_NAME_oneline(issuer, dr->cert_issuer, sizeof(dr->cert_issuer));
    char cn[80];
    if (X509_NAME_get_text_by_NID(issuer, NID_commonName, cn, sizeof(cn)) >= 0 &&
        strcmp(cn, dr->cert_issuer) != 0) {
        size_t len = strlen(dr->cert_issuer);
        snprintf(dr->cert_issuer + len, sizeof(dr->cert_issuer) - len, " (%s)", cn);
    }

    unsigned char *spki = NULL, md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    int n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(leaf), &spki);
    if (n > 0 && EVP_Digest(spki, (size_t)n, md, &mdlen, EVP_sha256(), NULL) == 1)
        for (unsigned i = 0; i < mdlen && 2 * i + 2 < sizeof(dr->cert_spki_sha256); i++)
            snprintf(dr->cert_spki_sha256 + 2 * i, 3, "%02x", md[i]);
    OPENSSL_free(spki);

    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    STACK_OF(X509) *chain = sk_X509_new_null();
    for (size_t i = 1; chain != NULL && i < c->nchain && i < CLI_CERT_CHAIN_MAX; i++) {
        const unsigned char *q = c->der[i];
        X509 *x = q != NULL ? d2i_X509(NULL, &q, (long)c->der_len[i]) : NULL;
        if (x != NULL && !sk_X509_push(chain, x))
            X509_free(x);
    }
    if (store != NULL && ctx != NULL && chain != NULL && X509_STORE_set_default_paths(store) == 1 &&
        X509_STORE_CTX_init(ctx, store, leaf, chain) == 1) {
        X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER);
        X509_VERIFY_PARAM *vp = X509_STORE_CTX_get0_param(ctx);
        X509_VERIFY_PARAM_set1_host(vp, dr->hostname, strlen(dr->hostname));
        if (X509_verify_cert(ctx) == 1)
            dr->cert_trusted = true;
        else
            snprintf(dr->cert_trust_err, sizeof(dr->cert_trust_err), "%s",
                     X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
    } else {
        snprintf(dr->cert_trust_err, sizeof(dr->cert_trust_err), "cannot read the CA store");
    }
    ERR_clear_error();
    sk_X509_pop_free(chain, X509_free);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    X509_free(leaf);
}

/* Load what is on disk: the local domains and DOMAIN's DKIM keys, the
 * host's certificate.  Failures are findings, not errors of the command. */
static void load_local(struct doctor *dr, struct users **users, struct dkim_keys **keys)
{
    const struct config *cfg = dr->cfg;
    const struct users_opts opts = {
        .case_sensitive = cfg->local.case_sensitive,
        .allow_pipe = cfg->local.allow_pipe,
        .plus_separator = cfg->local.plus_separator,
    };
    if (users_load_opts(cfg->dir, &opts, users, dr->users_err, sizeof(dr->users_err)) < 0)
        *users = NULL;
    dr->users = *users;
    if (dkim_keys_load(cfg->dir, dr->domain, keys, dr->keys_err, sizeof(dr->keys_err)) < 0)
        *keys = NULL;
    dr->keys = *keys;
    for (size_t i = 0; *keys != NULL && i < DKIM_KEYS_PER_DOMAIN; i++) {
        const struct dkim_key *k = dkim_keys_get(*keys, dr->domain, strlen(dr->domain), i);
        if (k == NULL)
            break;
        dr->dkim_key[dr->ndkim++] = k;
    }
    cli_cert_inspect(cfg->cert_dir, dr->hostname, &dr->cert, on_cert_note, dr);
    cert_facts(dr);
}

/* Parse the arguments into dr.  Returns 0, or the exit status (2 usage). */
static int parse_args(struct doctor *dr, int argc, char **argv, bool *json)
{
    const char *domain = NULL;
    bool ip_mode = false, target = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--json") == 0) {
            *json = true;
            ip_mode = false;
        } else if (strcmp(a, "--ip") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "ortoo doctor: --ip needs an address\n");
                return 2;
            }
            ip_mode = true;
            a = argv[++i];
            /* "--ip A,B" and "--ip A B" too */
            char buf[512];
            snprintf(buf, sizeof(buf), "%s", a);
            for (char *tok = strtok(buf, ", "); tok != NULL; tok = strtok(NULL, ", ")) {
                int rc = addr_add_text(dr, tok);
                if (rc == -E2BIG) {
                    fprintf(stderr, "ortoo doctor: at most %d addresses\n", DR_ADDRS_MAX);
                    return 2;
                } else if (rc < 0) {
                    fprintf(stderr, "ortoo doctor: --ip: '%s' is not an IP address\n", tok);
                    return 2;
                }
            }
            dr->addrs_from = "given with --ip";
        } else if ((strcmp(a, "--timeout") == 0 || strcmp(a, "--port25-target") == 0) &&
                   i + 1 >= argc) {
            fprintf(stderr, "ortoo doctor: %s needs a value\n", a);
            return 2;
        } else if (strcmp(a, "--timeout") == 0) {
            char *end;
            unsigned long v = strtoul(argv[++i], &end, 10);
            if (*argv[i] == '\0' || *end != '\0' || v < 1 || v > 300) {
                fprintf(stderr, "ortoo doctor: --timeout takes 1 to 300 seconds, got '%s'\n",
                        argv[i]);
                return 2;
            }
            dr->timeout_s = (unsigned)v;
            ip_mode = false;
        } else if (strcmp(a, "--no-port25") == 0) {
            dr->p25.enabled = false;
            ip_mode = false;
        } else if (strcmp(a, "--port25-target") == 0) {
            target = true;
            if (p25_parse_target(argv[++i], &dr->p25) < 0) {
                fprintf(stderr,
                        "ortoo doctor: --port25-target takes HOST:PORT or [IPV6]:PORT, got "
                        "'%s'\n",
                        argv[i]);
                return 2;
            }
            ip_mode = false;
        } else if (a[0] == '-') {
            fprintf(stderr, "ortoo doctor: unknown option '%s'\n", a);
            return 2;
        } else if (ip_mode && addr_add_text(dr, a) == 0) {
            continue; /* another address after --ip */
        } else if (domain == NULL) {
            domain = a;
            ip_mode = false;
        } else {
            fprintf(stderr, "ortoo doctor: unexpected argument '%s'\n", a);
            return 2;
        }
    }
    if (domain == NULL) {
        fprintf(stderr, "ortoo doctor: which domain?\n");
        return 2;
    }
    if (target && !dr->p25.enabled) {
        fprintf(stderr, "ortoo doctor: --no-port25 and --port25-target exclude each other\n");
        return 2;
    }
    if (res_name_normalize(domain, dr->domain, sizeof(dr->domain)) < 0 ||
        strchr(dr->domain, '.') == NULL) {
        fprintf(stderr, "ortoo doctor: '%s' is not a domain name\n", domain);
        return 2;
    }
    return 0;
}

int cli_doctor(const char *config_dir, int argc, char **argv)
{
    struct doctor dr = {0};
    struct config *cfg = NULL;
    struct users *users = NULL;
    struct dkim_keys *keys = NULL;
    char err[600];
    bool json = false;
    int status = 1;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        }
    }
    dr.timeout_s = DR_DEFAULT_TIMEOUT_S;
    dr.p25.enabled = true;
    dr.p25.by_mx = true;
    dr.p25.port = 25;
    dr.p25.fd = -1;
    snprintf(dr.p25.host, sizeof(dr.p25.host), "%s", DR_PORT25_DEFAULT);
    int rc = parse_args(&dr, argc, argv, &json);
    if (rc != 0) {
        usage(stderr);
        return rc;
    }
    if (config_load(config_dir, &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "ortoo: %s\n", err);
        return 1;
    }
    dr.cfg = cfg;
    dr.hostname = cfg->hostname;
    if (dr.naddrs == 0) {
        addrs_from_listeners(&dr);
        dr.addrs_from = "the addresses the listeners bind";
        if (dr.naddrs == 0) {
            addrs_from_interfaces(&dr);
            dr.addrs_from = "this host's public addresses";
        }
        if (dr.naddrs == 0)
            dr.addrs_from = "no public address found on this host: pass --ip";
    }
    load_local(&dr, &users, &keys);

    /* The resolver gives up before our deadline so that its answer, even a
     * timeout, is what we report. */
    if (cfg->resolver.timeout_ms == 0)
        cfg->resolver.timeout_ms = RES_DEFAULT_TIMEOUT_MS;
    if (cfg->resolver.timeout_ms > dr.timeout_s * 1000)
        cfg->resolver.timeout_ms = dr.timeout_s * 1000;
    dr.loop = io_loop_new(cfg->io, 256);
    if (dr.loop == NULL) {
        fprintf(stderr, "ortoo doctor: cannot create the %s event loop: %s\n",
                io_backend_name(cfg->io), strerror(errno));
        goto out;
    }
    dr.res = res_ctx_new(dr.loop, &cfg->resolver, err, sizeof(err));
    if (dr.res == NULL) {
        fprintf(stderr, "ortoo doctor: %s\n", err);
        goto out;
    }
    io_op_init(&dr.deadline, &dr);
    io_op_init(&dr.p25.conn, &dr);
    io_op_init(&dr.p25.timer, &dr);
    /* A little more than the resolver's own deadline: its timeouts arrive
     * as answers first. */
    bool failed = io_timer_start(dr.loop, &dr.deadline, (uint64_t)dr.timeout_s * 1000 + 500,
                                 on_deadline) < 0 ||
                  gather_start(&dr) < 0;
    if (failed) {
        fprintf(stderr, "ortoo doctor: out of memory\n");
        cancel_all(&dr); /* and run the loop until the cancelled ops are done */
    }
    maybe_done(&dr); /* nothing in flight (every name refused): stop soon */
    rc = io_loop_run(dr.loop);
    if (rc < 0) {
        fprintf(stderr, "ortoo doctor: event loop failed: %s\n", strerror(-rc));
        goto out;
    }
    if (failed)
        goto out;
    if (doctor_judge(&dr) < 0) {
        fprintf(stderr, "ortoo doctor: out of memory\n");
        goto out;
    }
    unsigned counts[3] = {0, 0, 0};
    for (size_t i = 0; i < dr.nchecks; i++)
        counts[dr.checks[i].status]++;
    if (json)
        print_json(&dr, counts);
    else
        print_text(&dr, counts);
    status = counts[DR_FAIL] > 0 ? 1 : 0;
out:
    for (size_t i = 0; i < dr.naddrs; i++) {
        if (dr.addrs[i].dr != NULL) {
            fcrdns_cancel(&dr.addrs[i].fc);
            spf_cancel(&dr.addrs[i].spf);
        }
    }
    for (struct dr_lookup *lk = dr.all, *next; lk != NULL; lk = next) {
        next = lk->next;
        res_cancel(&lk->req);
        res_answer_unref(lk->ans);
        free(lk);
    }
    if (dr.p25.fd >= 0)
        close(dr.p25.fd);
    res_ctx_free(dr.res);
    if (dr.loop != NULL)
        io_loop_free(dr.loop);
    doctor_checks_free(&dr);
    cli_cert_clear(&dr.cert);
    dkim_keys_free(keys);
    users_free(users);
    config_free(cfg);
    fflush(stdout);
    return status;
}
