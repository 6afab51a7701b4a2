/* SPDX-License-Identifier: MIT */
/*
 * route.c - the delivery settings, destinations and routes (see route.h).
 *
 * Values are checked here, with messages in the style of core/config.c
 * ("[delivery] retry: expected ..., got '...'"); config.c adds the file
 * and line.  Domains are normalised with the resolver's rules (lower case,
 * no final dot).
 */
#include "delivery/route.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "resolver/resolver.h"

#define AUTH_FILE_MAX 4096

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return rc;
}

void route_conf_init(struct route_conf *c)
{
    static const uint32_t retry[] = {300, 900, 1800, 3600, 7200, 14400};

    memset(c, 0, sizeof *c);
    c->defaults = (struct route_limits){
        .max_connections = ROUTE_DEF_MAX_CONNECTIONS,
        .max_per_connection = ROUTE_DEF_MAX_PER_CONNECTION,
        .max_per_minute = 0,
        .tls = ROUTE_TLS_DANE,
        .resumption = true,
    };
    memcpy(c->retry, retry, sizeof retry);
    c->nretry = sizeof retry / sizeof retry[0];
    c->expire = ROUTE_DEF_EXPIRE;
    c->delay_warning = ROUTE_DEF_DELAY_WARNING;
    c->mx_port = ROUTE_DEF_MX_PORT;
    c->ipv6 = true;
}

static void secret_free(char *s)
{
    if (s != NULL) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

void route_conf_clear(struct route_conf *c)
{
    for (size_t i = 0; i < c->ndests; i++) {
        free(c->dests[i].domain);
        free(c->dests[i].auth_file);
        secret_free(c->dests[i].auth_user);
        secret_free(c->dests[i].auth_pass);
    }
    free(c->dests);
    for (size_t i = 0; i < c->nroutes; i++) {
        free(c->routes[i].domain);
        free(c->routes[i].host);
    }
    free(c->routes);
    free(c->helo_name);
    route_conf_init(c);
}

int route_parse_duration(const char *s, uint32_t *out)
{
    uint64_t v = 0, mult = 1;
    const char *p = s;

    if (!isdigit((unsigned char)*p))
        return -EINVAL;
    for (; isdigit((unsigned char)*p); p++) {
        v = v * 10 + (uint64_t)(*p - '0');
        if (v > UINT32_MAX)
            return -EINVAL;
    }
    switch (*p) {
    case '\0': break;
    case 's': p++; break;
    case 'm': mult = 60; p++; break;
    case 'h': mult = 3600; p++; break;
    case 'd': mult = 86400; p++; break;
    default: return -EINVAL;
    }
    if (*p != '\0' || v * mult > UINT32_MAX)
        return -EINVAL;
    *out = (uint32_t)(v * mult);
    return 0;
}

const char *route_tls_name(enum route_tls t)
{
    switch (t) {
    case ROUTE_TLS_NONE: return "none";
    case ROUTE_TLS_OPPORTUNISTIC: return "opportunistic";
    case ROUTE_TLS_ENCRYPT: return "encrypt";
    case ROUTE_TLS_DANE: return "dane";
    case ROUTE_TLS_VERIFY: return "verify";
    }
    return "?";
}

static int parse_tls(const char *v, enum route_tls *out)
{
    for (int t = ROUTE_TLS_NONE; t <= ROUTE_TLS_VERIFY; t++) {
        if (strcmp(v, route_tls_name((enum route_tls)t)) == 0) {
            *out = (enum route_tls)t;
            return 0;
        }
    }
    return -EINVAL;
}

static int parse_uint(const char *v, unsigned min, unsigned max, unsigned *out)
{
    unsigned long long n = 0;

    if (*v == '\0')
        return -EINVAL;
    for (const char *p = v; *p; p++) {
        if (!isdigit((unsigned char)*p))
            return -EINVAL;
        n = n * 10 + (unsigned)(*p - '0');
        if (n > max)
            return -EINVAL;
    }
    if (n < min)
        return -EINVAL;
    *out = (unsigned)n;
    return 0;
}

static int parse_onoff(const char *v, bool *out)
{
    if (strcmp(v, "on") == 0 || strcmp(v, "yes") == 0)
        *out = true;
    else if (strcmp(v, "off") == 0 || strcmp(v, "no") == 0)
        *out = false;
    else
        return -EINVAL;
    return 0;
}

/* "5m, 15m, 1h": at least one, at most ROUTE_RETRY_MAX, each > 0. */
static int parse_retry(struct route_conf *c, const char *v, char *err, size_t errlen)
{
    uint32_t tmp[ROUTE_RETRY_MAX];
    size_t n = 0;
    const char *p = v;

    for (;;) {
        char item[32];
        while (*p == ' ' || *p == '\t')
            p++;
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len == 0 || len >= sizeof item || n == ROUTE_RETRY_MAX)
            goto bad;
        memcpy(item, p, len);
        item[len] = '\0';
        if (route_parse_duration(item, &tmp[n]) < 0 || tmp[n] == 0)
            goto bad;
        n++;
        if (e == NULL)
            break;
        p = e + 1;
    }
    memcpy(c->retry, tmp, n * sizeof tmp[0]);
    c->nretry = n;
    return 0;
bad:
    return fail(err, errlen, -EINVAL,
                "[delivery] retry: expected a list of 1 to %d durations such as 5m, 15m, 1h "
                "(each > 0), got '%s'",
                ROUTE_RETRY_MAX, v);
}

static int parse_source(const char *v, int af, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    if (af == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        a->sin_family = AF_INET;
        return inet_pton(AF_INET, v, &a->sin_addr) == 1 ? 0 : -EINVAL;
    }
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
    a->sin6_family = AF_INET6;
    return inet_pton(AF_INET6, v, &a->sin6_addr) == 1 ? 0 : -EINVAL;
}

/* A host name for HELO: letters, digits, '-', '.', at most 253. */
static bool helo_valid(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 253)
        return false;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.')
            return false;
    return s[0] != '.' && s[0] != '-';
}

/* Limits keys shared by [delivery] and [destination]: 1 if handled. */
static int limits_key(const char *sec, struct route_limits *l, unsigned *set, const char *key,
                      const char *v, char *err, size_t errlen)
{
    if (strcmp(key, "max_connections") == 0) {
        if (parse_uint(v, 1, 100000, &l->max_connections) < 0)
            return fail(err, errlen, -EINVAL,
                        "[%s] max_connections: expected a number from 1 to 100000, got '%s'", sec,
                        v);
        *set |= ROUTE_SET_CONNS;
        return 1;
    }
    if (strcmp(key, "max_messages_per_connection") == 0) {
        if (parse_uint(v, 1, 1000000, &l->max_per_connection) < 0)
            return fail(err, errlen, -EINVAL,
                        "[%s] max_messages_per_connection: expected a number from 1 to 1000000, "
                        "got '%s'",
                        sec, v);
        *set |= ROUTE_SET_PER_CONN;
        return 1;
    }
    if (strcmp(key, "max_messages_per_minute") == 0) {
        if (parse_uint(v, 0, 100000000, &l->max_per_minute) < 0)
            return fail(err, errlen, -EINVAL,
                        "[%s] max_messages_per_minute: expected a number from 0 (no limit) to "
                        "100000000, got '%s'",
                        sec, v);
        *set |= ROUTE_SET_RATE;
        return 1;
    }
    if (strcmp(key, "tls") == 0) {
        if (parse_tls(v, &l->tls) < 0)
            return fail(err, errlen, -EINVAL,
                        "[%s] tls: expected opportunistic, dane, verify, encrypt or none, got "
                        "'%s'",
                        sec, v);
        *set |= ROUTE_SET_TLS;
        return 1;
    }
    return 0;
}

int route_conf_set(struct route_conf *c, const char *dir, const char *key, const char *v,
                   char *err, size_t errlen)
{
    unsigned set = 0;
    uint32_t secs;
    int r;

    (void)dir;
    if ((r = limits_key("delivery", &c->defaults, &set, key, v, err, errlen)) != 0)
        return r < 0 ? r : 0;
    if (strcmp(key, "retry") == 0)
        return parse_retry(c, v, err, errlen);
    if (strcmp(key, "expire") == 0 || strcmp(key, "delay_warning") == 0) {
        bool exp = key[0] == 'e';
        if (route_parse_duration(v, &secs) < 0 || (exp && secs == 0))
            return fail(err, errlen, -EINVAL,
                        "[delivery] %s: expected a duration such as 4h or 5d%s, got '%s'", key,
                        exp ? "" : " (0: off)", v);
        *(exp ? &c->expire : &c->delay_warning) = secs;
        return 0;
    }
    if (strcmp(key, "mx_port") == 0) {
        unsigned port;
        if (parse_uint(v, 1, 65535, &port) < 0)
            return fail(err, errlen, -EINVAL,
                        "[delivery] mx_port: expected a port from 1 to 65535, got '%s'", v);
        c->mx_port = (uint16_t)port;
        return 0;
    }
    if (strcmp(key, "hold") == 0) {
        if (parse_onoff(v, &c->hold) < 0)
            return fail(err, errlen, -EINVAL, "[delivery] hold: expected on or off, got '%s'",
                        v);
        return 0;
    }
    if (strcmp(key, "ipv6") == 0) {
        if (parse_onoff(v, &c->ipv6) < 0)
            return fail(err, errlen, -EINVAL, "[delivery] ipv6: expected on or off, got '%s'",
                        v);
        return 0;
    }
    if (strcmp(key, "source_ipv4") == 0 || strcmp(key, "source_ipv6") == 0) {
        bool v4 = key[10] == '4';
        if (parse_source(v, v4 ? AF_INET : AF_INET6, v4 ? &c->source4 : &c->source6) < 0)
            return fail(err, errlen, -EINVAL, "[delivery] %s: expected an %s address, got '%s'",
                        key, v4 ? "IPv4" : "IPv6", v);
        *(v4 ? &c->has_source4 : &c->has_source6) = true;
        return 0;
    }
    if (strcmp(key, "helo_name") == 0) {
        if (!helo_valid(v))
            return fail(err, errlen, -EINVAL,
                        "[delivery] helo_name: '%s' is not a valid host name", v);
        free(c->helo_name);
        if ((c->helo_name = strdup(v)) == NULL)
            return fail(err, errlen, -ENOMEM, "out of memory");
        return 0;
    }
    if (strcmp(key, "resumption") == 0) {
        if (parse_onoff(v, &c->defaults.resumption) < 0)
            return fail(err, errlen, -EINVAL,
                        "[delivery] resumption: expected on or off, got '%s'", v);
        return 0;
    }
    static const struct {
        const char *name;
        size_t off;
    } tmo[] = {
        {"timeout_connect", offsetof(struct route_timeouts, connect)},
        {"timeout_command", offsetof(struct route_timeouts, command)},
        {"timeout_data", offsetof(struct route_timeouts, data)},
        {"timeout_idle", offsetof(struct route_timeouts, idle)},
    };
    for (size_t i = 0; i < sizeof tmo / sizeof tmo[0]; i++) {
        if (strcmp(key, tmo[i].name) != 0)
            continue;
        if (route_parse_duration(v, &secs) < 0 || secs == 0 || secs > 86400)
            return fail(err, errlen, -EINVAL,
                        "[delivery] %s: expected a duration from 1s to 1d, got '%s'", key, v);
        *(unsigned *)((char *)&c->timeouts + tmo[i].off) = secs;
        return 0;
    }
    return fail(err, errlen, -ENOENT, "unknown key '%s' in [delivery]", key);
}

/* A domain of a section header or a route: "*" or a domain name. */
static int norm_domain(const char *in, char *out, size_t outlen)
{
    if (strcmp(in, "*") == 0) {
        snprintf(out, outlen, "*");
        return 0;
    }
    return res_name_normalize(in, out, outlen) < 0 ? -EINVAL : 0;
}

static struct route_dest *dest_get(struct route_conf *c, const char *domain)
{
    for (size_t i = 0; i < c->ndests; i++)
        if (strcmp(c->dests[i].domain, domain) == 0)
            return &c->dests[i];
    struct route_dest *nd = realloc(c->dests, (c->ndests + 1) * sizeof *nd);
    if (nd == NULL)
        return NULL;
    c->dests = nd;
    struct route_dest *d = &c->dests[c->ndests];
    memset(d, 0, sizeof *d);
    if ((d->domain = strdup(domain)) == NULL)
        return NULL;
    c->ndests++;
    return d;
}

int route_conf_dest_set(struct route_conf *c, const char *dir, const char *domain,
                        const char *key, const char *v, char *err, size_t errlen)
{
    char name[RES_NAME_MAX + 1], sec[RES_NAME_MAX + 16];
    int r;

    if (norm_domain(domain, name, sizeof name) < 0)
        return fail(err, errlen, -EINVAL,
                    "[destination %s]: expected a domain name or *, got '%s'", domain, domain);
    snprintf(sec, sizeof sec, "destination %s", name);
    struct route_dest *d = dest_get(c, name);
    if (d == NULL)
        return fail(err, errlen, -ENOMEM, "out of memory");
    if ((r = limits_key(sec, &d->lim, &d->set, key, v, err, errlen)) != 0)
        return r < 0 ? r : 0;
    if (strcmp(key, "resumption") == 0) {
        if (parse_onoff(v, &d->lim.resumption) < 0)
            return fail(err, errlen, -EINVAL, "[%s] resumption: expected on or off, got '%s'",
                        sec, v);
        d->set |= ROUTE_SET_RESUME;
        return 0;
    }
    if (strcmp(key, "auth_file") == 0) {
        if (*v == '\0')
            return fail(err, errlen, -EINVAL, "[%s] auth_file: empty path", sec);
        free(d->auth_file);
        if (v[0] == '/')
            d->auth_file = strdup(v);
        else if (asprintf(&d->auth_file, "%s/%s", dir, v) < 0)
            d->auth_file = NULL;
        if (d->auth_file == NULL)
            return fail(err, errlen, -ENOMEM, "out of memory");
        return 0;
    }
    return fail(err, errlen, -ENOENT, "unknown key '%s' in [%s]", key, sec);
}

int route_conf_route_add(struct route_conf *c, const char *domain, const char *v, char *err,
                         size_t errlen)
{
    char name[RES_NAME_MAX + 1], host[RES_NAME_MAX + 1];
    struct route rt = {0};
    unsigned port = 25;

    if (norm_domain(domain, name, sizeof name) < 0)
        return fail(err, errlen, -EINVAL,
                    "[routes] '%s': expected a domain name or * on the left", domain);
    for (size_t i = 0; i < c->nroutes; i++)
        if (strcmp(c->routes[i].domain, name) == 0)
            return fail(err, errlen, -EEXIST, "[routes] %s: given twice", name);
    if (strcmp(v, "mx") != 0) {
        const char *end = v[0] == '[' ? strchr(v, ']') : NULL;
        size_t hl = end ? (size_t)(end - v - 1) : 0;
        char lit[RES_NAME_MAX + 1];
        struct in6_addr a6;
        struct in_addr a4;

        if (end == NULL || hl == 0 || hl > RES_NAME_MAX)
            goto bad;
        memcpy(lit, v + 1, hl);
        lit[hl] = '\0';
        if (end[1] == ':') {
            if (parse_uint(end + 2, 1, 65535, &port) < 0)
                goto bad;
        } else if (end[1] != '\0') {
            goto bad;
        }
        if (inet_pton(AF_INET, lit, &a4) == 1 || inet_pton(AF_INET6, lit, &a6) == 1) {
            rt.host_is_ip = true;
            snprintf(host, sizeof host, "%s", lit);
        } else if (res_name_normalize(lit, host, sizeof host) < 0) {
            goto bad;
        }
        if ((rt.host = strdup(host)) == NULL)
            return fail(err, errlen, -ENOMEM, "out of memory");
        rt.port = (uint16_t)port;
    }
    struct route *nr = realloc(c->routes, (c->nroutes + 1) * sizeof *nr);
    if (nr == NULL || (rt.domain = strdup(name)) == NULL) {
        if (nr != NULL)
            c->routes = nr;
        free(rt.host);
        return fail(err, errlen, -ENOMEM, "out of memory");
    }
    c->routes = nr;
    c->routes[c->nroutes++] = rt;
    return 0;
bad:
    return fail(err, errlen, -EINVAL,
                "[routes] %s: expected mx, [host]:port or [host] (host: a name or an IP "
                "literal), got '%s'",
                name, v);
}

/* Read "user:password" from d->auth_file. */
static int load_auth(struct route_dest *d, char *err, size_t errlen)
{
    char buf[AUTH_FILE_MAX + 1];
    struct stat st;
    ssize_t n;
    int fd = open(d->auth_file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

    if (fd < 0)
        return fail(err, errlen, -errno, "[destination %s] auth_file %s: %s", d->domain,
                    d->auth_file, strerror(errno));
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return fail(err, errlen, -EINVAL, "[destination %s] auth_file %s: not a regular file",
                    d->domain, d->auth_file);
    }
    if (st.st_mode & 077) {
        close(fd);
        return fail(err, errlen, -EPERM,
                    "[destination %s] auth_file %s: readable by group or others (mode %03o): "
                    "chmod 600 it",
                    d->domain, d->auth_file, (unsigned)(st.st_mode & 0777));
    }
    n = read(fd, buf, AUTH_FILE_MAX);
    close(fd);
    if (n < 0)
        return fail(err, errlen, -EIO, "[destination %s] auth_file %s: read error", d->domain,
                    d->auth_file);
    buf[n] = '\0';
    for (char *line = buf, *next; line != NULL; line = next) {
        next = strchr(line, '\n');
        if (next != NULL)
            *next++ = '\0';
        size_t len = strlen(line);
        if (len > 0 && line[len - 1] == '\r')
            line[--len] = '\0';
        if (len == 0 || line[0] == '#')
            continue;
        char *colon = strchr(line, ':');
        if (colon == NULL || colon == line || colon[1] == '\0')
            break;
        *colon = '\0';
        d->auth_user = strdup(line);
        d->auth_pass = strdup(colon + 1);
        explicit_bzero(buf, sizeof buf);
        if (d->auth_user == NULL || d->auth_pass == NULL)
            return fail(err, errlen, -ENOMEM, "out of memory");
        return 0;
    }
    explicit_bzero(buf, sizeof buf);
    return fail(err, errlen, -EINVAL,
                "[destination %s] auth_file %s: expected a line username:password", d->domain,
                d->auth_file);
}

int route_conf_load_secrets(struct route_conf *c, char *err, size_t errlen)
{
    for (size_t i = 0; i < c->ndests; i++) {
        if (c->dests[i].auth_file == NULL)
            continue;
        int r = load_auth(&c->dests[i], err, errlen);
        if (r < 0)
            return r;
    }
    return 0;
}

int route_conf_keep_secrets(struct route_conf *next, const struct route_conf *cur, char *err,
                            size_t errlen)
{
    int rc = 0;

    for (size_t i = 0; i < next->ndests; i++) {
        struct route_dest *d = &next->dests[i];
        const struct route_dest *old = NULL;
        if (d->auth_file == NULL || d->auth_user != NULL)
            continue;
        for (size_t k = 0; k < cur->ndests; k++)
            if (cur->dests[k].auth_file != NULL && cur->dests[k].auth_user != NULL &&
                strcmp(cur->dests[k].auth_file, d->auth_file) == 0)
                old = &cur->dests[k];
        if (old != NULL) {
            d->auth_user = strdup(old->auth_user);
            d->auth_pass = strdup(old->auth_pass);
            if (d->auth_user == NULL || d->auth_pass == NULL)
                return fail(err, errlen, -ENOMEM, "out of memory");
            continue;
        }
        int r = load_auth(d, err, errlen);
        if (r < 0 && rc == 0)
            rc = r;
    }
    return rc;
}

const struct route *route_lookup(const struct route_conf *c, const char *domain)
{
    const struct route *star = NULL;

    for (size_t i = 0; i < c->nroutes; i++) {
        if (strcmp(c->routes[i].domain, domain) == 0)
            return c->routes[i].host ? &c->routes[i] : NULL;
        if (strcmp(c->routes[i].domain, "*") == 0)
            star = &c->routes[i];
    }
    return star != NULL && star->host != NULL ? star : NULL;
}

struct route_limits route_limits_for(const struct route_conf *c, const char *key,
                                     const struct route_dest **dest_out)
{
    struct route_limits l = c->defaults;
    const struct route_dest *d = NULL;

    for (size_t i = 0; i < c->ndests && key != NULL; i++)
        if (strcmp(c->dests[i].domain, key) == 0)
            d = &c->dests[i];
    if (d != NULL) {
        if (d->set & ROUTE_SET_CONNS)
            l.max_connections = d->lim.max_connections;
        if (d->set & ROUTE_SET_PER_CONN)
            l.max_per_connection = d->lim.max_per_connection;
        if (d->set & ROUTE_SET_RATE)
            l.max_per_minute = d->lim.max_per_minute;
        if (d->set & ROUTE_SET_TLS)
            l.tls = d->lim.tls;
        if (d->set & ROUTE_SET_RESUME)
            l.resumption = d->lim.resumption;
    }
    if (dest_out != NULL)
        *dest_out = d;
    return l;
}

uint32_t route_retry_after(const struct route_conf *c, uint32_t n)
{
    if (c->nretry == 0)
        return 300;
    if (n == 0)
        n = 1;
    return c->retry[n - 1 < c->nretry ? n - 1 : c->nretry - 1];
}
