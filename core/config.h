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

/* Defaults where Debian expects them (docs/config.md): the configuration in
 * /etc/ortoo (cli/main.c), the queue in /var/spool/ortoo, and the account
 * the daemon runs as after it was started as root. */
#define CONFIG_DEFAULT_DIR "/etc/ortoo"
#define CONFIG_DEFAULT_SPOOL "/var/spool/ortoo"
#define CONFIG_DEFAULT_USER "ortoo"

enum listen_role { ROLE_SMTP = 0, ROLE_SUBMISSION, ROLE_SUBMISSIONS };

struct config_listen {
    enum listen_role role;
    char text[80];                   /* as written, e.g. "[::1]:2525" */
    struct sockaddr_storage addr;    /* parsed address and port */
    socklen_t addr_len;
};

/* [local]: local domains (see docs/config.md). */
struct config_local {
    char *maildir_root;              /* absolute; default /var/vmail */
    char plus_separator[8];          /* characters that start a +tag; "" disables; default "+" */
    bool case_sensitive;             /* local parts match exactly; default off (any case) */
    bool allow_pipe;                 /* "|command" alias targets allowed; default off */
    unsigned pipe_timeout;           /* seconds a command may run; default 1000 */
};

/* [srs]: the Sender Rewriting Scheme for forwarded mail (core/srs.h). */
struct config_srs {
    char **secrets;                  /* NULL-terminated; secrets[0] signs, all verify;
                                        filled by config_srs_load(); none: SRS off */
    size_t nsecrets;
    char *secret;                    /* inline `secret =`, or NULL */
    char *secret_file;               /* absolute; default dir/srs.key (optional then) */
    bool secret_file_set;            /* secret_file was given: it must exist */
    unsigned max_age;                /* days a rewritten address stays valid; default 21 */
    char separator;                  /* after SRS0/SRS1: '=' (default), '+' or '-' */
};

/* [smtp]: the port 25 role's own knobs. */
struct config_smtp {
    unsigned greeting_delay_ms;      /* wait before the 220 on port 25; input before it
                                        is an early talker (refused); default 1000 */
};

/* [checks]: inbound checks on port 25 (core/checks.h). */
struct config_checks {
    bool enabled;                    /* SPF, iprev, DKIM, DMARC for unauthenticated mail
                                        on port 25; default on */
    bool spf_reject;                 /* 550 5.7.23 at the end of DATA for an SPF fail of
                                        MAIL FROM that DMARC does not pass; default off */
    bool dmarc_reject;               /* 550 5.7.1 for a DMARC fail whose policy (after
                                        pct=) is reject; default on */
    unsigned timeout_ms;             /* longest wait at the final dot for pending
                                        results, then temperror; default 10 s */
    unsigned dkim_max_signatures;    /* DKIM signatures verified per message; default 5 */
    char *public_suffix_list;        /* absolute; default PSL_DEFAULT_PATH (core/psl.h) */
    bool public_suffix_list_set;     /* given: the file must exist */
};

/*
 * [limits] and the limit keys of [auth]: what one client may hold or cost
 * (issue 8, docs/config.md).  Every bound a remote peer can push against is
 * here or in [server]; hitting one is a 4xx reply or a close, never a crash.
 */
struct config_limits {
    unsigned per_address;            /* connections per client prefix; default 50 */
    unsigned ipv4_prefix;            /* prefix length that is "one client"; 32 */
    unsigned ipv6_prefix;            /* 64 */
    unsigned max_commands;           /* commands per session; default 10000 */
    unsigned max_junk;               /* NOOP/RSET/HELP/VRFY/EXPN and errors between
                                        accepted messages; default 100 */
    unsigned timeout_greeting;       /* seconds from connect to the first command; 60 */
    unsigned timeout_session;        /* seconds a connection may last; 3600 */
    unsigned min_data_rate;          /* bytes/s below which DATA/BDAT runs out of time; 500 */
    uint64_t max_pending_output;     /* unsent reply bytes before input pauses; 64 KiB */
    uint64_t body_memory;            /* message bytes held in memory, all sessions; 256 MiB */
    unsigned auth_account_failures;  /* [auth] failed AUTHs per account per window; 20 */
    unsigned auth_queue;             /* [auth] password checks waiting; default 64 */
    unsigned penalty_time;           /* seconds a prefix closed for abuse is refused at
                                        accept, doubling at each repeat; 0: off; 10 */
    unsigned penalty_max;            /* seconds the doubling stops at; 600 */
    unsigned penalty_slots;          /* prefixes the penalty box remembers; 4096 */
};

/* A network of [relay] trusted_networks: the address with the bits past
 * plen cleared.  IPv4 and IPv4-mapped IPv6 are stored as AF_INET. */
struct config_cidr {
    uint8_t family;                  /* AF_INET or AF_INET6 */
    uint8_t plen;                    /* 0..32 or 0..128 */
    uint8_t addr[16];                /* IPv4 in the first 4 bytes */
};

/* A per-user override of [relay] messages_per_hour. */
struct config_user_rate {
    char *user;                      /* the address as written (owned) */
    unsigned per_hour;               /* 0: no limit for this user */
};

/* [relay]: who may relay without AUTH, and how fast submitters may send
 * (core/policy.h, docs/config.md). */
struct config_relay {
    struct config_cidr *trusted;     /* trusted_networks (owned); none by default */
    size_t ntrusted;
    unsigned messages_per_hour;      /* per account / trusted prefix; 0 (default): no limit */
    struct config_user_rate *user_rates; /* user_messages_per_hour (owned) */
    size_t nuser_rates;
};

/*
 * [listen] metrics: the Prometheus endpoint (core/metrics_http.c,
 * docs/metrics.md).  Off unless set.  A bare port (or ":port") means
 * 127.0.0.1: exposing the figures beyond the machine takes an address
 * written out.
 */
struct config_metrics {
    bool enabled;                    /* set and not empty */
    char text[80];                   /* as written, e.g. "9187" or "[::1]:9187" */
    struct sockaddr_storage addr;    /* where to listen (port 0: any free port) */
    socklen_t addr_len;
};

struct config {
    char *dir;                       /* absolute config directory */
    char *file;                      /* dir/ortoo.conf */
    /* [server] */
    char *hostname;                  /* default: gethostname() */
    char *spool;                     /* absolute; default CONFIG_DEFAULT_SPOOL */
    unsigned reactors;               /* 0 = auto (online CPUs) */
    enum io_backend io;              /* auto | uring | epoll */
    uint64_t max_message_size;       /* bytes; default 25 MiB ("25M" style accepted) */
    unsigned max_recipients;         /* per message; default 1000 */
    unsigned max_errors;             /* bad commands before 421; default 10 */
    unsigned max_connections;        /* all reactors together; default 10000 */
    unsigned timeout_command;        /* seconds waiting for a command; default 300 */
    unsigned timeout_data;           /* seconds waiting for data bytes; default 180 */
    unsigned timeout_tls;            /* seconds for the TLS handshake; default 30 */
    uint64_t batch_delay_us;         /* spool group commit delay; default 0 */
    char *log_level;                 /* warn | info | debug; default info */
    /* [listen] */
    struct config_listen *listens;
    size_t nlistens;
    struct config_metrics metrics;   /* [listen] metrics (parsed by metrics_key()) */
    /* [tls] */
    char *cert_dir;                  /* absolute; default dir/certs */
    unsigned ticket_rotate;          /* seconds between ticket key rotations; default 3600 */
    /* [auth] */
    unsigned auth_workers;           /* password hashing threads; default 2 */
    unsigned auth_cache_ttl;         /* seconds a verified password is cached; default 3600 */
    unsigned auth_max_failures;      /* failures per client prefix per window; default 5 */
    unsigned auth_fail_window;       /* seconds; default 300 */
    /* [resolver] (parsed by resolver_key() in config.c) */
    struct res_conf resolver;        /* dnssec, trust_anchor, forward, stub */
    /* [server] operation: privileges and the control socket
     * (core/privdrop.c, core/control.c) */
    char *user;                      /* account to run as when started as root; default "ortoo" */
    char *control_group;             /* group of <spool>/control; NULL: the user's group */
    /* [local], [srs], [smtp] */
    struct config_local local;
    struct config_srs srs;
    struct config_smtp smtp;
    /* [checks] (checks_key_set() in config.c) */
    struct config_checks checks;
    /* [limits] (and [auth] account_max_failures, max_queue) */
    struct config_limits limits;
    /* [relay] */
    struct config_relay relay;
    /* [spool] */
    struct config_spool {
        uint64_t segment_size;       /* bytes per segment file; default 64M */
        uint64_t checkpoint_size;    /* journal growth between snapshots; default 4M */
        unsigned compact_min_age;    /* seconds before a segment may be compacted; 60 */
        unsigned compact_live_pct;   /* compact below this % of live bytes; default 50 */
        unsigned journal_delay_ms;   /* a result nobody waits for waits this long for
                                        company in the journal; 0: none; default 10 */
    } spool_opts;
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

/*
 * What a reload cannot apply: writes into out (NUL-terminated, truncated to
 * cap) the comma-separated names ("listen", "server.reactors", ...) of the
 * settings that differ between the running configuration `cur` and the
 * freshly loaded `next` and only take effect at a restart (sockets, threads,
 * the spool, privileges).  Returns how many differ (0: everything in next can
 * be applied by a reload).  Borrows both.  A key added to struct config that
 * needs a restart must be listed here.
 */
int config_restart_diff(const struct config *cur, const struct config *next, char *out,
                        size_t cap);

/*
 * Give next the running values of every setting config_restart_diff()
 * covers (copies; cur is not changed, reactors may still read it), so that
 * a reload applies only what it can.  Returns 0 or -ENOMEM (next is then
 * unusable: free it).
 */
int config_keep_restart_fields(struct config *next, const struct config *cur);

/*
 * Read the SRS secrets into cfg->srs.secrets: the inline `secret`, else the
 * lines of secret_file ('#' comments and blank lines skipped; the first
 * line signs, every line verifies).  A missing default file (srs.key) is
 * not an error: SRS stays off.  Kept out of config_load() because the file
 * is readable by the daemon's user only (0600) while other commands read
 * ortoo.conf too.  Returns 0 or -1 with "file: message" in err.  Blocking.
 */
int config_srs_load(struct config *cfg, char *err, size_t errlen);

/* "smtp" / "submission" / "submissions". */
const char *config_role_name(enum listen_role r);

/* Parse "host:port", "[v6]:port" or ":port" into addr.  Returns 0 or -1. */
int config_parse_addr(const char *s, struct sockaddr_storage *addr, socklen_t *len);

/* Parse a size "1000", "10K", "25M", "1G".  Returns 0 or -1. */
int config_parse_size(const char *s, uint64_t *out);

#endif
