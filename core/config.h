/* SPDX-License-Identifier: MIT */
/*
 * config.h - ortoo.conf (INI, parsed with libinih) and the config directory.
 *
 * A config directory holds ortoo.conf, domains/<domain>/{users,aliases} and
 * certs/<hostname>/{fullchain.pem,privkey.pem}.  Relative paths in ortoo.conf
 * are relative to the directory.  An unknown section or key, or a bad value,
 * stops loading with "file:line: what is wrong".
 *
 * The loaded struct is immutable after config_load(): reactors share it
 * read-only; a reload builds a new one.
 */
#ifndef ORTOO_CONFIG_H
#define ORTOO_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "io/loop.h"
#include "delivery/route.h"
#include "resolver/resolver.h"

enum listen_role { ROLE_SMTP = 0, ROLE_SUBMISSION, ROLE_SUBMISSIONS };

struct config_listen {
    enum listen_role role;
    char text[80];                   /* as written, e.g. "[::1]:2525" */
    struct sockaddr_storage addr;    /* parsed address and port */
    socklen_t addr_len;
};

struct config {
    char *dir;                       /* absolute config directory */
    char *file;                      /* dir/ortoo.conf */
    /* [server] */
    char *hostname;                  /* default: gethostname() */
    char *spool;                     /* absolute; default dir/spool */
    unsigned reactors;               /* 0 = auto (online CPUs) */
    enum io_backend io;              /* auto | uring | epoll */
    uint64_t max_message_size;       /* bytes; default 25 MiB ("25M" style accepted) */
    unsigned max_recipients;         /* per message; default 1000 */
    unsigned max_errors;             /* bad commands before 421; default 10 */
    unsigned max_connections;        /* per reactor; default 10000 */
    unsigned timeout_command;        /* seconds waiting for a command; default 300 */
    unsigned timeout_data;           /* seconds waiting for data bytes; default 180 */
    unsigned timeout_tls;            /* seconds for the TLS handshake; default 30 */
    uint64_t batch_delay_us;         /* spool group commit delay; default 0 */
    char *log_level;                 /* warn | info | debug; default info */
    /* [listen] */
    struct config_listen *listens;
    size_t nlistens;
    /* [tls] */
    char *cert_dir;                  /* absolute; default dir/certs */
    unsigned ticket_rotate;          /* seconds between ticket key rotations; default 3600 */
    /* [auth] */
    unsigned auth_workers;           /* password hashing threads; default 2 */
    unsigned auth_cache_ttl;         /* seconds a verified password is cached; default 3600 */
    unsigned auth_max_failures;      /* failures per client address per window; default 5 */
    unsigned auth_fail_window;       /* seconds; default 300 */
    /* [resolver] (parsed by resolver_key() in config.c) */
    struct res_conf resolver;        /* dnssec, trust_anchor, forward, stub */
    /* [delivery], [destination DOMAIN], [routes] (parsed by delivery_key()
     * in config.c into delivery/route.h's struct) */
    struct route_conf delivery;
};

/*
 * Load dir/ortoo.conf.  Returns 0 and *out (free with config_free), or -1
 * with a "file:line: message" in err.
 */
int config_load(const char *dir, struct config **out, char *err, size_t errlen);
void config_free(struct config *cfg);

/* "smtp" / "submission" / "submissions". */
const char *config_role_name(enum listen_role r);

/* Parse "host:port", "[v6]:port" or ":port" into addr.  Returns 0 or -1. */
int config_parse_addr(const char *s, struct sockaddr_storage *addr, socklen_t *len);

/* Parse a size "1000", "10K", "25M", "1G".  Returns 0 or -1. */
int config_parse_size(const char *s, uint64_t *out);

#endif
