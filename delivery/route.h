/* SPDX-License-Identifier: MIT */
/*
 * route.h - how mail leaves: the delivery settings ([delivery]), their
 * per-destination overrides ([destination DOMAIN]) and the routes
 * ([routes]), parsed into one struct route_conf that core/config.c fills and
 * owns (as it does struct res_conf), and the lookups the scheduler makes in
 * it.
 *
 * A route says where the mail of a recipient domain goes:
 *   DOMAIN = mx            the MX records of the domain (the default)
 *   DOMAIN = [host]:port   that host (a name or an IP literal), no MX lookup
 *   *      = [host]:port   every domain without a route of its own: a
 *                          smarthost
 * Local domains never leave through a route: the scheduler asks whether a
 * domain is local before it asks for a route.
 *
 * Destinations: the scheduler keeps one destination per recipient domain
 * delivered by MX, and one per route entry with a host (every domain that
 * entry covers shares its connections).  Overrides are looked up by the
 * recipient domain for MX destinations and by the route's left-hand side
 * (a domain or "*") for routed ones.
 *
 * Smarthost credentials: `auth_file` in a [destination] section names a file
 * holding one line "username:password" (the first colon separates; '#'
 * comments and blank lines allowed).  It must not be readable by group or
 * others (0600 or 0400).  It is read by route_conf_load_secrets() when the
 * daemon starts (not by every CLI command that loads the configuration).
 *
 * Nothing here does I/O except route_conf_load_secrets(); nothing is shared
 * mutable: after loading, the struct is read-only and shared by reactors.
 */
#ifndef ORTOO_ROUTE_H
#define ORTOO_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* How a destination uses TLS ([delivery] tls, [destination] tls). */
enum route_tls {
    ROUTE_TLS_NONE = 0,      /* never STARTTLS (tests, benchmarks) */
    ROUTE_TLS_OPPORTUNISTIC, /* STARTTLS when offered, unchecked */
    ROUTE_TLS_ENCRYPT,       /* TLS mandatory, unchecked */
    ROUTE_TLS_DANE,          /* DANE when DNSSEC allows it, else opportunistic */
    ROUTE_TLS_VERIFY,        /* TLS mandatory, PKIX and host name (smarthosts) */
};

/* Defaults (docs/config.md). */
#define ROUTE_DEF_MAX_CONNECTIONS 20      /* per destination, per reactor */
#define ROUTE_DEF_MAX_PER_CONNECTION 1000 /* messages before a new connection */
#define ROUTE_DEF_EXPIRE (5 * 86400)
#define ROUTE_DEF_DELAY_WARNING (4 * 3600)
#define ROUTE_DEF_MX_PORT 25
#define ROUTE_RETRY_MAX 32                /* intervals in a retry list */

/* Limits and TLS of one destination. */
struct route_limits {
    unsigned max_connections;             /* connections at once (1..) */
    unsigned max_per_connection;          /* messages per connection (1..) */
    unsigned max_per_minute;              /* messages per minute, 0: no limit */
    enum route_tls tls;
    bool resumption;                      /* TLS session resumption */
};

/* Which fields of a [destination] section were given. */
#define ROUTE_SET_CONNS    0x01
#define ROUTE_SET_PER_CONN 0x02
#define ROUTE_SET_RATE     0x04
#define ROUTE_SET_TLS      0x08
#define ROUTE_SET_RESUME   0x10

/* One [destination DOMAIN] section. */
struct route_dest {
    char *domain;                         /* lower case, no final dot, or "*" */
    unsigned set;                         /* ROUTE_SET_* given */
    struct route_limits lim;              /* the fields given (others unset) */
    char *auth_file;                      /* absolute path or NULL */
    char *auth_user, *auth_pass;          /* read by route_conf_load_secrets */
};

/* One [routes] entry. */
struct route {
    char *domain;                         /* lower case, or "*" */
    char *host;                           /* NULL: mx; else a host name (lower
                                             case) or an IP literal */
    bool host_is_ip;                      /* host is an IP literal */
    uint16_t port;
};

/* Outbound time limits, seconds (0: the client's defaults). */
struct route_timeouts {
    unsigned connect;                     /* TCP connect */
    unsigned command;                     /* greeting, EHLO, STARTTLS, MAIL, RCPT, ... */
    unsigned data;                        /* DATA, the body, the final reply */
    unsigned idle;                        /* an idle connection kept for reuse */
};

/*
 * Every delivery setting.  Invariants after route_conf_check(): nretry >= 1;
 * dests and routes have unique domains.
 */
struct route_conf {
    struct route_limits defaults;         /* [delivery] */
    uint32_t retry[ROUTE_RETRY_MAX];      /* seconds; the last repeats */
    size_t nretry;
    uint32_t expire;                      /* seconds in the queue before a bounce */
    uint32_t delay_warning;               /* seconds before a "delayed" DSN, 0: off */
    uint16_t mx_port;                     /* port of MX hosts */
    bool ipv6;                            /* connect over IPv6 too */
    struct sockaddr_storage source4, source6; /* local addresses to bind */
    bool has_source4, has_source6;
    char *helo_name;                      /* NULL: [server] hostname */
    bool hold;                            /* deliver nothing: mail stays queued */
    struct route_timeouts timeouts;
    struct route_dest *dests;             /* [destination ...] sections */
    size_t ndests;
    struct route *routes;                 /* [routes] */
    size_t nroutes;
};

/* Defaults: limits as above, retry 5m 15m 30m 1h 2h 4h, expire 5d,
 * delay_warning 4h, mx_port 25, ipv6 on, tls dane, resumption on. */
void route_conf_init(struct route_conf *c);
/* Free what c owns and init it again. */
void route_conf_clear(struct route_conf *c);

/* "30", "30s", "5m", "2h", "5d" -> seconds.  Returns 0 or -EINVAL. */
int route_parse_duration(const char *s, uint32_t *out);

/* "none", "opportunistic", "encrypt", "dane", "verify". */
const char *route_tls_name(enum route_tls t);

/*
 * Set one key of [delivery] from its text value (dir: the config directory
 * for relative paths).  Returns 0, or -EINVAL / -ENOENT (unknown key) /
 * -ENOMEM with a message in err ("expected ..., got '...'").
 */
int route_conf_set(struct route_conf *c, const char *dir, const char *key, const char *value,
                   char *err, size_t errlen);

/* Set one key of [destination DOMAIN] (domain as written in the section
 * header).  Same returns as route_conf_set. */
int route_conf_dest_set(struct route_conf *c, const char *dir, const char *domain,
                        const char *key, const char *value, char *err, size_t errlen);

/* Add one [routes] entry "DOMAIN = VALUE".  -EEXIST for a domain given
 * twice; else as route_conf_set. */
int route_conf_route_add(struct route_conf *c, const char *domain, const char *value, char *err,
                         size_t errlen);

/*
 * Read the auth_file of every destination (blocking; start-up).  Refuses a
 * file readable by group or others, an empty user or password, a file
 * without a credentials line.  Returns 0 or -errno with a message in err.
 */
int route_conf_load_secrets(struct route_conf *c, char *err, size_t errlen);

/*
 * At a reload: give every destination of next whose auth_file is the same
 * as in cur the credentials read at start (the daemon may no longer be
 * able to read the file); others are read now, and a failure is returned
 * (-errno, message in err) with the rest kept.  Returns 0 or -errno.
 */
int route_conf_keep_secrets(struct route_conf *next, const struct route_conf *cur, char *err,
                            size_t errlen);

/* The route for a recipient domain (lower case): its own entry, else "*",
 * else NULL (deliver by MX). */
const struct route *route_lookup(const struct route_conf *c, const char *domain);

/*
 * The settings of a destination: the [delivery] defaults with the fields
 * of [destination key] over them (key: the recipient domain, or a route's
 * left-hand side).  *dest_out (may be NULL) gets that section or NULL.
 */
struct route_limits route_limits_for(const struct route_conf *c, const char *key,
                                     const struct route_dest **dest_out);

/* Seconds to wait after attempt number n (1-based) failed: retry[n-1], the
 * last interval repeating. */
uint32_t route_retry_after(const struct route_conf *c, uint32_t n);

#endif
