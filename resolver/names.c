/* SPDX-License-Identifier: MIT */
/*
 * names.c - the resolver's text helpers: domain and zone names checked and
 * normalised, server addresses in libunbound's "ADDR@PORT" form, reverse
 * names for PTR lookups, the [resolver] settings (struct res_conf) and the
 * names of types, statuses and DNSSEC states.  Pure functions, no I/O; the
 * config loader (core/config.c) and `ortoo lookup` use them to validate
 * what a person wrote before libunbound sees it.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <idn2.h>

#include "resolver/resolver.h"

void res_conf_init(struct res_conf *conf)
{
    memset(conf, 0, sizeof(*conf));
    conf->dnssec = true;
}

void res_conf_clear(struct res_conf *conf)
{
    free(conf->trust_anchor);
    for (size_t i = 0; i < conf->nforwards; i++)
        free(conf->forwards[i]);
    free(conf->forwards);
    for (size_t i = 0; i < conf->nstubs; i++) {
        free(conf->stubs[i].zone);
        free(conf->stubs[i].addr);
    }
    free(conf->stubs);
    res_conf_init(conf);
}

/* Letters, digits, '-' and '_' (service labels such as _25._tcp, RFC 6698 3). */
static bool label_char(unsigned char c)
{
    return isalnum(c) || c == '-' || c == '_';
}

int res_name_normalize(const char *in, char *out, size_t outlen)
{
    size_t len = strlen(in), label = 0;

    if (len > 0 && in[len - 1] == '.')
        len--;
    if (len == 0 || len > RES_NAME_MAX || outlen < len + 1)
        return -EINVAL;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '.') {
            if (label == 0)
                return -EINVAL; /* empty label: ".." or a leading dot */
            label = 0;
        } else if (label_char(c)) {
            if (++label > 63)
                return -EINVAL;
        } else {
            return -EINVAL;
        }
        out[i] = (char)tolower(c);
    }
    if (label == 0)
        return -EINVAL; /* "a.b..": an empty last label */
    out[len] = '\0';
    return (int)len;
}

bool res_name_is_ascii(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] >= 0x80)
            return false;
    return true;
}

int res_name_to_ascii(const char *in, char *out, size_t outlen)
{
    char *alabels = NULL;
    int n;

    if (res_name_is_ascii(in, strlen(in)))
        return res_name_normalize(in, out, outlen);
    /* Non-transitional UTS #46 processing maps case and width first (so
     * "BÜCHER" works as "bücher"); ß and ς stay themselves (IDNA2008). */
    if (idn2_to_ascii_8z(in, &alabels, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL) != IDN2_OK)
        return -EINVAL;
    n = res_name_normalize(alabels, out, outlen);
    idn2_free(alabels);
    return n;
}

int res_zone_normalize(const char *in, char *out, size_t outlen)
{
    if (strcmp(in, ".") == 0) {
        if (outlen < 2)
            return -EINVAL;
        strcpy(out, ".");
        return 1;
    }
    if (outlen < RES_NAME_MAX + 2)
        return -EINVAL;
    int n = res_name_normalize(in, out, outlen);
    if (n < 0)
        return n;
    out[n++] = '.';
    out[n] = '\0';
    return n;
}

int res_parse_server(const char *s, char *out, size_t outlen)
{
    char host[INET6_ADDRSTRLEN + 2];
    const char *at = strrchr(s, '@');
    size_t hl = at != NULL ? (size_t)(at - s) : strlen(s);
    unsigned long port = 0;

    if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']') { /* "[::1]@53" */
        s++;
        hl -= 2;
    }
    if (hl == 0 || hl >= sizeof(host))
        return -EINVAL;
    memcpy(host, s, hl);
    host[hl] = '\0';
    unsigned char buf[sizeof(struct in6_addr)];
    bool v6 = strchr(host, ':') != NULL;
    if (inet_pton(v6 ? AF_INET6 : AF_INET, host, buf) != 1)
        return -EINVAL;
    if (at != NULL) {
        const char *p = at + 1;
        if (*p == '\0' || strlen(p) > 5)
            return -EINVAL;
        for (; *p != '\0'; p++) {
            if (*p < '0' || *p > '9')
                return -EINVAL;
            port = port * 10 + (unsigned long)(*p - '0');
        }
        if (port == 0 || port > 65535)
            return -EINVAL;
    }
    /* Written back from the parsed address: one spelling per address. */
    char norm[INET6_ADDRSTRLEN];
    inet_ntop(v6 ? AF_INET6 : AF_INET, buf, norm, sizeof(norm));
    int n = port ? snprintf(out, outlen, "%s@%lu", norm, port) : snprintf(out, outlen, "%s", norm);
    if (n < 0 || (size_t)n >= outlen)
        return -ENAMETOOLONG;
    return 0;
}

/* Append a copy of s to the string array *arr of *n entries. */
static int strv_push(char ***arr, size_t *n, const char *s)
{
    char *dup = strdup(s);
    char **na = dup != NULL ? realloc(*arr, (*n + 1) * sizeof(**arr)) : NULL;
    if (na == NULL) {
        free(dup);
        return -ENOMEM;
    }
    na[(*n)++] = dup;
    *arr = na;
    return 0;
}

int res_conf_add_forward(struct res_conf *conf, const char *server, char *err, size_t errlen)
{
    char addr[INET6_ADDRSTRLEN + 8];

    if (res_parse_server(server, addr, sizeof(addr)) < 0) {
        snprintf(err, errlen,
                 "bad server '%s' (expected an IPv4 or IPv6 address, optionally @port "
                 "1-65535)",
                 server);
        return -EINVAL;
    }
    for (size_t i = 0; i < conf->nforwards; i++) {
        if (strcmp(conf->forwards[i], addr) == 0) {
            snprintf(err, errlen, "server '%s' listed twice", server);
            return -EINVAL;
        }
    }
    if (strv_push(&conf->forwards, &conf->nforwards, addr) < 0) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

int res_conf_add_stub(struct res_conf *conf, const char *zone, const char *server, char *err,
                      size_t errlen)
{
    char z[RES_NAME_MAX + 2], addr[INET6_ADDRSTRLEN + 8];

    if (res_zone_normalize(zone, z, sizeof(z)) < 0) {
        snprintf(err, errlen,
                 "bad zone name '%s' (labels of letters, digits, '-' or '_', dot-separated)",
                 zone);
        return -EINVAL;
    }
    if (res_parse_server(server, addr, sizeof(addr)) < 0) {
        snprintf(err, errlen,
                 "bad server '%s' for zone %s (expected an IPv4 or IPv6 address, optionally "
                 "@port 1-65535)",
                 server, z);
        return -EINVAL;
    }
    for (size_t i = 0; i < conf->nstubs; i++) {
        if (strcmp(conf->stubs[i].zone, z) == 0 && strcmp(conf->stubs[i].addr, addr) == 0) {
            snprintf(err, errlen, "stub '%s %s' listed twice", z, server);
            return -EINVAL;
        }
    }
    struct res_stub *ns = realloc(conf->stubs, (conf->nstubs + 1) * sizeof(*ns));
    if (ns == NULL)
        goto nomem;
    conf->stubs = ns;
    ns[conf->nstubs].zone = strdup(z);
    ns[conf->nstubs].addr = strdup(addr);
    if (ns[conf->nstubs].zone == NULL || ns[conf->nstubs].addr == NULL) {
        free(ns[conf->nstubs].zone);
        free(ns[conf->nstubs].addr);
        goto nomem;
    }
    conf->nstubs++;
    return 0;
nomem:
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
}

int res_ptr_name(int af, const void *addr, char *out, size_t outlen)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *b = addr;
    size_t n = 0;

    if (af == AF_INET) {
        int r = snprintf(out, outlen, "%u.%u.%u.%u.in-addr.arpa", b[3], b[2], b[1], b[0]);
        return r < 0 || (size_t)r >= outlen ? -ENAMETOOLONG : r;
    }
    if (af != AF_INET6)
        return -EINVAL;
    if (outlen < 32 * 2 + sizeof("ip6.arpa"))
        return -ENAMETOOLONG;
    for (int i = 15; i >= 0; i--) {
        out[n++] = hex[b[i] & 0xf];
        out[n++] = '.';
        out[n++] = hex[b[i] >> 4];
        out[n++] = '.';
    }
    memcpy(out + n, "ip6.arpa", sizeof("ip6.arpa"));
    return (int)(n + sizeof("ip6.arpa") - 1);
}

bool res_status_temporary(enum res_status s)
{
    return s == RES_SERVFAIL || s == RES_TIMEOUT || s == RES_BOGUS || s == RES_ERROR;
}

const char *res_status_name(enum res_status s)
{
    switch (s) {
    case RES_OK: return "ok";
    case RES_NXDOMAIN: return "nxdomain";
    case RES_NODATA: return "nodata";
    case RES_NULLMX: return "nullmx";
    case RES_SERVFAIL: return "servfail";
    case RES_TIMEOUT: return "timeout";
    case RES_BOGUS: return "bogus";
    case RES_ERROR: return "error";
    }
    return "?";
}

const char *res_sec_name(enum res_sec s)
{
    switch (s) {
    case RES_SEC_SECURE: return "secure";
    case RES_SEC_INSECURE: return "insecure";
    case RES_SEC_BOGUS: return "bogus";
    }
    return "?";
}

static const struct {
    enum res_type t;
    const char *name;
} type_names[] = {
    {RES_A, "A"}, {RES_AAAA, "AAAA"}, {RES_MX, "MX"},
    {RES_TXT, "TXT"}, {RES_PTR, "PTR"}, {RES_TLSA, "TLSA"},
};

const char *res_type_name(enum res_type t)
{
    for (size_t i = 0; i < sizeof(type_names) / sizeof(type_names[0]); i++)
        if (type_names[i].t == t)
            return type_names[i].name;
    return "?";
}

int res_type_parse(const char *s, enum res_type *out)
{
    for (size_t i = 0; i < sizeof(type_names) / sizeof(type_names[0]); i++) {
        if (strcasecmp(type_names[i].name, s) == 0) {
            *out = type_names[i].t;
            return 0;
        }
    }
    return -EINVAL;
}
