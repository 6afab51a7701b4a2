/* SPDX-License-Identifier: MIT */
/*
 * config.c - loads ortoo.conf (INI, libinih) into an immutable struct config
 * (see config.h and docs/config.md).
 *
 * The file is read into memory and handed to ini_parse_stream() through a
 * reader of our own.  The reader counts lines, so that every error names the
 * exact line (libinih's handler gets no line number), refuses NUL bytes and
 * lines longer than libinih's buffer (which it would otherwise split into
 * two lines silently), and sees section headers before libinih does, so that
 * an unknown section is an error even when it holds no key.  The handler
 * looks the key up in one table that gives its section, type and limits;
 * the first error stops the parse.  Defaults are set before parsing; path
 * defaults, the hostname and the listener check come after.
 */
#include "core/config.h"

#include "io/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/psl.h"
#include "io/text.h"

#define CONFIG_FILE_NAME "ortoo.conf"
#define CONFIG_FILE_MAX (1u << 20)      /* a config file is small */

enum key_type {
    KT_HOSTNAME,        /* host name, stored as char * */
    KT_PATH,            /* path made absolute against the config dir */
    KT_UINT,            /* unsigned in [min, max] */
    KT_U64,             /* uint64_t in [min, max] */
    KT_SIZE,            /* uint64_t with K/M/G suffix, >= min */
    KT_REACTORS,        /* auto | 1..256 */
    KT_IO,              /* auto | uring | epoll */
    KT_LOGLEVEL,        /* warn | info | debug */
    KT_LISTEN,          /* comma-separated addresses; role in min */
    KT_NAME,            /* a user or group name (useradd's rule), char * */
};

/* One key of ortoo.conf: where it lives and what it accepts. */
struct key_def {
    const char *section;
    const char *name;
    enum key_type type;
    size_t off;             /* offset of the field in struct config */
    uint64_t min, max;
};

#define F(field) offsetof(struct config, field)
static const struct key_def keys[] = {
    {"server", "hostname", KT_HOSTNAME, F(hostname), 0, 0},
    {"server", "spool", KT_PATH, F(spool), 0, 0},
    {"server", "reactors", KT_REACTORS, F(reactors), 1, 256},
    {"server", "io", KT_IO, F(io), 0, 0},
    {"server", "max_message_size", KT_SIZE, F(max_message_size), 1, 0},
    {"server", "max_recipients", KT_UINT, F(max_recipients), 1, 1000000},
    {"server", "max_errors", KT_UINT, F(max_errors), 1, 1000},
    {"server", "max_connections", KT_UINT, F(max_connections), 1, 1000000},
    {"server", "timeout_command", KT_UINT, F(timeout_command), 1, 86400},
    {"server", "timeout_data", KT_UINT, F(timeout_data), 1, 86400},
    {"server", "timeout_tls", KT_UINT, F(timeout_tls), 1, 3600},
    {"server", "batch_delay_us", KT_U64, F(batch_delay_us), 0, 1000000},
    {"server", "log_level", KT_LOGLEVEL, F(log_level), 0, 0},
    {"server", "user", KT_NAME, F(user), 0, 0},
    {"server", "control_group", KT_NAME, F(control_group), 0, 0},
    {"listen", "smtp", KT_LISTEN, 0, ROLE_SMTP, 0},
    {"listen", "submission", KT_LISTEN, 0, ROLE_SUBMISSION, 0},
    {"listen", "submissions", KT_LISTEN, 0, ROLE_SUBMISSIONS, 0},
    {"tls", "cert_dir", KT_PATH, F(cert_dir), 0, 0},
    {"tls", "ticket_rotate", KT_UINT, F(ticket_rotate), 60, 604800},
    {"auth", "workers", KT_UINT, F(auth_workers), 1, 256},
    {"auth", "cache_ttl", KT_UINT, F(auth_cache_ttl), 0, 604800},
    {"auth", "max_failures", KT_UINT, F(auth_max_failures), 1, 1000000},
    {"auth", "fail_window", KT_UINT, F(auth_fail_window), 1, 604800},
    /* [spool] */
    {"spool", "segment_size", KT_SIZE, F(spool_opts.segment_size), 64 * 1024, 0},
    {"spool", "checkpoint_size", KT_SIZE, F(spool_opts.checkpoint_size), 4096, 0},
    {"spool", "compact_min_age", KT_UINT, F(spool_opts.compact_min_age), 1, 604800},
    {"spool", "compact_live_pct", KT_UINT, F(spool_opts.compact_live_pct), 1, 99},
    {"spool", "journal_delay_ms", KT_UINT, F(spool_opts.journal_delay_ms), 0, 10000},
};
#undef F
#define NKEYS (sizeof(keys) / sizeof(keys[0]))

static const char *const sections[] = {"server", "listen", "tls", "auth", "resolver", "local", "srs", "smtp",
                                         "limits", "spool", "checks", "relay"};

/* The keys of [local], [srs] and [smtp], parsed by domains_key_set(). */
enum domains_key {
    DK_MAILDIR_ROOT, DK_PLUS_SEPARATOR, DK_CASE_SENSITIVE, DK_ALLOW_PIPE,
    DK_SRS_SECRET, DK_SRS_SECRET_FILE, DK_SRS_MAX_AGE, DK_SRS_SEPARATOR,
    DK_GREETING_DELAY, DK__COUNT
};
static const struct {
    const char *section, *name;
} domains_keys[DK__COUNT] = {
    [DK_MAILDIR_ROOT] = {"local", "maildir_root"},
    [DK_PLUS_SEPARATOR] = {"local", "plus_separator"},
    [DK_CASE_SENSITIVE] = {"local", "case_sensitive"},
    [DK_ALLOW_PIPE] = {"local", "allow_pipe"},
    [DK_SRS_SECRET] = {"srs", "secret"},
    [DK_SRS_SECRET_FILE] = {"srs", "secret_file"},
    [DK_SRS_MAX_AGE] = {"srs", "max_age"},
    [DK_SRS_SEPARATOR] = {"srs", "separator"},
    [DK_GREETING_DELAY] = {"smtp", "greeting_delay"},
};

/*
 * The limit keys (struct config_limits): a table of their own, looked up
 * after keys[].  Their indexes in loader.seen[] follow NKEYS.
 */
#define L(field) offsetof(struct config, limits.field)
static const struct key_def limit_keys[] = {
    {"limits", "connections_per_address", KT_UINT, L(per_address), 1, 1000000},
    {"limits", "ipv4_prefix", KT_UINT, L(ipv4_prefix), 8, 32},
    {"limits", "ipv6_prefix", KT_UINT, L(ipv6_prefix), 16, 128},
    {"limits", "max_commands", KT_UINT, L(max_commands), 10, 100000000},
    {"limits", "max_junk_commands", KT_UINT, L(max_junk), 1, 1000000},
    {"limits", "timeout_greeting", KT_UINT, L(timeout_greeting), 1, 86400},
    {"limits", "timeout_session", KT_UINT, L(timeout_session), 1, 604800},
    {"limits", "min_data_rate", KT_UINT, L(min_data_rate), 0, 1000000000},
    {"limits", "max_pending_output", KT_SIZE, L(max_pending_output), 4096, 0},
    {"limits", "body_memory", KT_SIZE, L(body_memory), 65536, 0},
    {"auth", "account_max_failures", KT_UINT, L(auth_account_failures), 1, 1000000},
    {"auth", "max_queue", KT_UINT, L(auth_queue), 1, 1000000},
    {"limits", "penalty_time", KT_UINT, L(penalty_time), 0, 86400},
    {"limits", "penalty_max", KT_UINT, L(penalty_max), 1, 604800},
    {"limits", "penalty_slots", KT_UINT, L(penalty_slots), 64, 1u << 24},
};
#undef L
#define NLIMIT_KEYS (sizeof(limit_keys) / sizeof(limit_keys[0]))

static void limits_defaults(struct config_limits *l)
{
    l->per_address = 50;
    l->ipv4_prefix = 32;
    l->ipv6_prefix = 64;
    l->max_commands = 10000;
    l->max_junk = 100;
    l->timeout_greeting = 60;
    l->timeout_session = 3600;
    l->min_data_rate = 500;
    l->max_pending_output = 64u << 10;
    l->body_memory = 0; /* unset: limits_check makes it max(256M, max_message_size) */
    l->auth_account_failures = 20;
    l->auth_queue = 64;
    l->penalty_time = 10;
    l->penalty_max = 600;
    l->penalty_slots = 4096;
}

/* Checks across keys, after the parse.  Returns 0 or -1 with err set. */
static int limits_check(struct config *cfg, const char *file, char *err, size_t errlen)
{
    if (cfg->limits.body_memory == 0) {
        cfg->limits.body_memory = 256ull << 20;
        if (cfg->limits.body_memory < cfg->max_message_size)
            cfg->limits.body_memory = cfg->max_message_size;
    }
    if (cfg->limits.penalty_time > cfg->limits.penalty_max) {
        snprintf(err, errlen,
                 "%s: [limits] penalty_time (%u) is longer than penalty_max (%u)", file,
                 cfg->limits.penalty_time, cfg->limits.penalty_max);
        return -1;
    }
    if (cfg->limits.body_memory < cfg->max_message_size) {
        snprintf(err, errlen,
                 "%s: [limits] body_memory (%llu) is smaller than [server] max_message_size "
                 "(%llu): a message of the largest size could never be accepted",
                 file, (unsigned long long)cfg->limits.body_memory,
                 (unsigned long long)cfg->max_message_size);
        return -1;
    }
    return 0;
}

/* The limit key section/name, or NULL; *idx is its loader.seen[] index. */
static const struct key_def *limits_key_find(const char *section, const char *name, int *idx)
{
    for (size_t i = 0; i < NLIMIT_KEYS; i++) {
        if (strcmp(limit_keys[i].section, section) == 0 && strcmp(limit_keys[i].name, name) == 0) {
            *idx = (int)(NKEYS + i);
            return &limit_keys[i];
        }
    }
    return NULL;
}

/*
 * State of one load.  Invariants: lineno is the number of the line the
 * reader handed out last (the one libinih is working on); once failed is
 * set, err holds the message and the reader returns no more lines.
 */
struct loader {
    struct config *cfg;
    const char *file;               /* for messages */
    const char *buf;                /* the file's bytes */
    size_t len, pos;                /* reader position */
    int lineno;
    int fail_line;                  /* line of the recorded error */
    bool line_indented;             /* current line starts with blank */
    bool has_prev_key;              /* libinih's prev_name is set: an
                                       indented line continues that key */
    bool seen[NKEYS + NLIMIT_KEYS]; /* duplicate detection */
    bool dk_seen[DK__COUNT];        /* the same for domains_keys */
    bool relay_rate_seen;           /* [relay] messages_per_hour given */
    bool pipe_timeout_seen;         /* [local] pipe_timeout given */
    bool ck_seen[8];                /* the same for [checks], see checks_key_set() */
    int last_key;                   /* key of the previous handler call */
    struct {                        /* [delivery], [destination], [routes] */
        char **seen;                /* "section\nkey" given so far */
        size_t nseen;
    } dlv;
    bool seen_metrics;              /* [listen] metrics, see metrics_key() */
    struct {                        /* [resolver], see resolver_key() */
        bool seen_dnssec, seen_anchor;
        const char *last;           /* key of the previous [resolver] call */
    } res;
    bool failed;
    char *err;
    size_t errlen;
};

/* Record the first error, "file:line: message". */
static void load_fail(struct loader *ld, const char *fmt, ...)
{
    if (ld->failed)
        return;
    ld->failed = true;
    ld->fail_line = ld->lineno;
    int n = snprintf(ld->err, ld->errlen, "%s:%d: ", ld->file, ld->lineno);
    if (n < 0 || (size_t)n >= ld->errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ld->err + n, ld->errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

/*
 * The error for a key given twice in a section.  libinih passes an indented
 * line after a key as a continuation of that key's value: cont says that is
 * what this line is, and the message then says so.
 */
static void key_twice(struct loader *ld, const char *section, const char *name, bool cont)
{
    if (cont)
        load_fail(ld, "indented line is read as a continuation of '%s'; remove the indentation",
                  name);
    else
        load_fail(ld, "duplicate key '%s' in [%s]", name, section);
}

/* For the sections parsed by hand: mark a key as given.  False (with the
 * error recorded) when it was given already. */
static bool key_first(struct loader *ld, bool *seen, const char *section, const char *name,
                      bool cont)
{
    if (*seen) {
        key_twice(ld, section, name, cont);
        return false;
    }
    *seen = true;
    return true;
}

static bool known_section(const char *s, size_t len)
{
    if (len > 12 && memcmp(s, "destination ", 12) == 0)
        return true; /* [destination DOMAIN]: the domain is checked at its keys */
    if ((len == 8 && memcmp(s, "delivery", 8) == 0) || (len == 6 && memcmp(s, "routes", 6) == 0))
        return true;
    for (size_t i = 0; i < sizeof(sections) / sizeof(sections[0]); i++)
        if (strlen(sections[i]) == len && memcmp(sections[i], s, len) == 0)
            return true;
    return false;
}

/* ini_reader: hand libinih one whole line at a time (see the file header). */
static char *config_reader(char *str, int num, void *stream)
{
    struct loader *ld = stream;

    if (ld->failed || ld->pos >= ld->len)
        return NULL;
    const char *p = ld->buf + ld->pos;
    size_t rest = ld->len - ld->pos;
    const char *nl = memchr(p, '\n', rest);
    size_t n = nl != NULL ? (size_t)(nl - p) + 1 : rest;

    ld->lineno++;
    ld->pos += n;
    if (memchr(p, '\0', n) != NULL) {
        load_fail(ld, "NUL byte in line");
        return NULL;
    }
    /* libinih needs room for "\r\n\0" after the text. */
    size_t text = n;
    while (text > 0 && (p[text - 1] == '\n' || p[text - 1] == '\r'))
        text--;
    if (num < 4 || text > (size_t)num - 3) {
        load_fail(ld, "line too long (at most %d characters)", num - 3);
        return NULL;
    }
    /* Copy the text and one "\n", not the line's own ending: a line may end
     * in any number of CRs, which would overrun str.  libinih strips
     * trailing white space, so this changes no value. */
    memcpy(str, p, text);
    str[text] = '\n';
    str[text + 1] = '\0';

    /* Section headers: catch unknown sections even without keys.  libinih
     * takes an indented line after a key as a continuation, even one that
     * starts with '[' (such as "[::1]:25"), and only a section header
     * resets that. */
    const char *s = str;
    if (ld->lineno == 1 && memcmp(s, "\xEF\xBB\xBF", 3) == 0)
        s += 3;
    ld->line_indented = (*s == ' ' || *s == '\t');
    while (*s == ' ' || *s == '\t')
        s++;
    if (*s == '[' && !(ld->line_indented && ld->has_prev_key)) {
        const char *end = strchr(s + 1, ']');
        ld->has_prev_key = false;
        if (end != NULL && !known_section(s + 1, (size_t)(end - s - 1))) {
            load_fail(ld, "unknown section [%.*s]", (int)(end - s - 1), s + 1);
            return NULL;
        }
    }
    return str;
}

/* Decimal digits into a uint64; -1 on empty, non-digit or overflow. */
static int parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;

    if (*s == '\0')
        return -1;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

int config_parse_size(const char *s, uint64_t *out)
{
    char num[32];
    size_t len = strlen(s);
    uint64_t mult = 1, v;

    if (len == 0 || len >= sizeof(num))
        return -1;
    switch (s[len - 1]) {
    case 'K': case 'k': mult = 1ull << 10; len--; break;
    case 'M': case 'm': mult = 1ull << 20; len--; break;
    case 'G': case 'g': mult = 1ull << 30; len--; break;
    default: break;
    }
    memcpy(num, s, len);
    num[len] = '\0';
    if (parse_u64(num, &v) < 0 || v > UINT64_MAX / mult)
        return -1;
    *out = v * mult;
    return 0;
}

int config_parse_addr(const char *s, struct sockaddr_storage *addr, socklen_t *len)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *h;
    size_t hl;
    bool v6;
    unsigned port;

    memset(addr, 0, sizeof(*addr));
    if (text_host_port(s, &h, &hl, &v6, &port) < 0)
        return -1;
    if (hl >= sizeof(host) || (v6 && hl == 0))
        return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';

    if (v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)addr;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1)
            return -1;
        *len = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)addr;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        if (hl == 0)
            a->sin_addr.s_addr = htonl(INADDR_ANY);   /* ":25" */
        else if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
            return -1;
        *len = sizeof(*a);
    }
    return 0;
}

const char *config_role_name(enum listen_role r)
{
    switch (r) {
    case ROLE_SMTP: return "smtp";
    case ROLE_SUBMISSION: return "submission";
    case ROLE_SUBMISSIONS: return "submissions";
    }
    return "?";
}

/* A host name for the greeting and HELO: RFC 1123 2.1 labels. */
static bool hostname_valid(const char *s)
{
    return text_hostname_check(s, strlen(s)) == NULL;
}

/* A user or group name as useradd(8) takes it: [a-z_][a-z0-9_-]*[$]?, at
 * most 32 characters (also keeps it safe in log lines). */
static bool name_valid(const char *s)
{
    size_t len = strlen(s);

    if (len == 0 || len > 32 || !((s[0] >= 'a' && s[0] <= 'z') || s[0] == '_'))
        return false;
    for (size_t i = 1; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
              (c == '$' && i == len - 1)))
            return false;
    }
    return true;
}

/* dir + "/" + path unless path is absolute; NULL on ENOMEM. */
static char *path_join(const char *dir, const char *path)
{
    char *out;
    if (path[0] == '/')
        return strdup(path);
    if (asprintf(&out, "%s/%s", dir, path) < 0)
        return NULL;
    return out;
}

static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port &&
           memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
}

static in_port_t addr_port(const struct sockaddr_storage *a)
{
    if (a->ss_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_port;
    return ((const struct sockaddr_in6 *)a)->sin6_port;
}

/*
 * Call item() for each comma-separated item of value, blanks around it
 * trimmed (p[0..n) is not NUL-terminated).  A trailing comma is allowed: the
 * list goes on over the next, indented line.  An empty item elsewhere is an
 * error ("empty <what> in list").  Returns 0 or -1 with the error recorded.
 */
static int list_split(struct loader *ld, const char *section, const char *key, const char *what,
                      const char *value, int (*item)(struct loader *, const void *arg,
                                                     const char *p, size_t n),
                      const void *arg)
{
    const char *p = value;

    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        const char *e = strchr(p, ',');
        size_t n = e != NULL ? (size_t)(e - p) : strlen(p);
        while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        if (n == 0 && e == NULL && p != value)
            return 0; /* a trailing comma, the list goes on below */
        if (n == 0) {
            load_fail(ld, "[%s] %s: empty %s in list", section, key, what);
            return -1;
        }
        if (item(ld, arg, p, n) < 0)
            return -1;
        if (e == NULL)
            return 0;
        p = e + 1;
    }
}

/* One address of a [listen] list (k is its key) appended to the listeners. */
static int listen_item(struct loader *ld, const void *arg, const char *p, size_t n)
{
    const struct key_def *k = arg;
    struct config *cfg = ld->cfg;
    struct config_listen l = {.role = (enum listen_role)k->min};

    if (n >= sizeof(l.text)) {
        load_fail(ld, "[listen] %s: address '%.*s' too long", k->name, (int)n, p);
        return -1;
    }
    memcpy(l.text, p, n);
    l.text[n] = '\0';
    if (config_parse_addr(l.text, &l.addr, &l.addr_len) < 0) {
        load_fail(ld,
                  "[listen] %s: bad address '%s' (expected IPv4:port, [IPv6]:port "
                  "or :port, with a literal IP)",
                  k->name, l.text);
        return -1;
    }
    for (size_t i = 0; i < cfg->nlistens; i++) {
        if (addr_port(&l.addr) != 0 && same_addr(&l.addr, &cfg->listens[i].addr)) {
            load_fail(ld, "[listen] %s: address %s already used by %s", k->name, l.text,
                      config_role_name(cfg->listens[i].role));
            return -1;
        }
    }
    struct config_listen *nl = realloc(cfg->listens, (cfg->nlistens + 1) * sizeof(*cfg->listens));
    if (nl == NULL) {
        load_fail(ld, "out of memory");
        return -1;
    }
    cfg->listens = nl;
    cfg->listens[cfg->nlistens++] = l;
    return 0;
}

/* Append the comma-separated addresses of value to the listeners. */
static int listen_add(struct loader *ld, const struct key_def *k, const char *value)
{
    if (*value == '\0')
        return 0; /* "smtp =": no listener for this role */
    return list_split(ld, "listen", k->name, "address", value, listen_item, k);
}

/* Store one value; the key is known and not a duplicate. */
static int key_set(struct loader *ld, const struct key_def *k, const char *value)
{
    char *base = (char *)ld->cfg;
    uint64_t v = 0;

    switch (k->type) {
    case KT_HOSTNAME:
        if (!hostname_valid(value)) {
            load_fail(ld, "[%s] %s: '%s' is not a valid host name", k->section, k->name,
                      value);
            return -1;
        }
        if ((*(char **)(base + k->off) = strdup(value)) == NULL)
            goto nomem;
        return 0;
    case KT_PATH:
        if (*value == '\0') {
            load_fail(ld, "[%s] %s: empty path", k->section, k->name);
            return -1;
        }
        if ((*(char **)(base + k->off) = path_join(ld->cfg->dir, value)) == NULL)
            goto nomem;
        return 0;
    case KT_UINT:
    case KT_U64:
        if (parse_u64(value, &v) < 0 || v < k->min || v > k->max) {
            load_fail(ld, "[%s] %s: expected a number from %llu to %llu, got '%s'",
                      k->section, k->name, (unsigned long long)k->min,
                      (unsigned long long)k->max, value);
            return -1;
        }
        if (k->type == KT_UINT)
            *(unsigned *)(base + k->off) = (unsigned)v;
        else
            *(uint64_t *)(base + k->off) = v;
        return 0;
    case KT_SIZE:
        if (config_parse_size(value, &v) < 0 || v < k->min || (k->max != 0 && v > k->max)) {
            load_fail(ld, "[%s] %s: expected a size such as 1000, 512K, 25M or 1G, got '%s'",
                      k->section, k->name, value);
            return -1;
        }
        *(uint64_t *)(base + k->off) = v;
        return 0;
    case KT_REACTORS:
        if (strcmp(value, "auto") == 0) {
            ld->cfg->reactors = 0;
            return 0;
        }
        if (parse_u64(value, &v) < 0 || v < k->min || v > k->max) {
            load_fail(ld, "[%s] %s: expected auto or a number from 1 to 256, got '%s'",
                      k->section, k->name, value);
            return -1;
        }
        ld->cfg->reactors = (unsigned)v;
        return 0;
    case KT_IO:
        if (strcmp(value, "auto") == 0) {
            ld->cfg->io = IO_BACKEND_AUTO;
        } else if (strcmp(value, "uring") == 0) {
            ld->cfg->io = IO_BACKEND_URING;
        } else if (strcmp(value, "epoll") == 0) {
            ld->cfg->io = IO_BACKEND_EPOLL;
        } else {
            load_fail(ld, "[%s] %s: expected auto, uring or epoll, got '%s'", k->section,
                      k->name, value);
            return -1;
        }
        return 0;
    case KT_LOGLEVEL:
        if (strcmp(value, "warn") != 0 && strcmp(value, "info") != 0 &&
            strcmp(value, "debug") != 0) {
            load_fail(ld, "[%s] %s: expected warn, info or debug, got '%s'", k->section,
                      k->name, value);
            return -1;
        }
        if ((ld->cfg->log_level = strdup(value)) == NULL)
            goto nomem;
        return 0;
    case KT_LISTEN:
        return listen_add(ld, k, value);
    case KT_NAME:
        if (!name_valid(value)) {
            load_fail(ld, "[%s] %s: '%s' is not a valid user or group name", k->section,
                      k->name, value);
            return -1;
        }
        if ((*(char **)(base + k->off) = strdup(value)) == NULL)
            goto nomem;
        return 0;
    }
    return 0;
nomem:
    load_fail(ld, "out of memory");
    return -1;
}

/* ---- [resolver] ------------------------------------------------------- */

/* One item of a forward or stub list (arg: the key). */
static int resolver_item(struct loader *ld, const void *arg, const char *p, size_t n)
{
    struct res_conf *rc = &ld->cfg->resolver;
    const char *key = arg;
    char item[512], err[400];
    int r;

    if (n >= sizeof(item)) {
        load_fail(ld, "[resolver] %s: item too long", key);
        return -1;
    }
    memcpy(item, p, n);
    item[n] = '\0';
    if (strcmp(key, "forward") == 0) {
        r = res_conf_add_forward(rc, item, err, sizeof(err));
    } else {
        /* "ZONE ADDR[@PORT] [ADDR[@PORT]...]" */
        char *save = NULL, *zone = strtok_r(item, " \t", &save);
        char *addr = strtok_r(NULL, " \t", &save);
        if (addr == NULL) {
            load_fail(ld, "[resolver] stub: '%s' needs a zone and a server address "
                          "(ZONE ADDR[@PORT])", zone);
            return -1;
        }
        do {
            r = res_conf_add_stub(rc, zone, addr, err, sizeof(err));
        } while (r == 0 && (addr = strtok_r(NULL, " \t", &save)) != NULL);
    }
    if (r < 0) {
        load_fail(ld, "[resolver] %s: %s", key, err);
        return -1;
    }
    return 0;
}

/*
 * The comma-separated items of a forward or stub value.  A list may go on
 * over indented lines (libinih passes each as another value of the same
 * key) or with the key repeated: both append.
 */
static int resolver_list(struct loader *ld, const char *key, const char *value)
{
    if (*value == '\0') {
        load_fail(ld, "[resolver] %s: empty value", key);
        return -1;
    }
    return list_split(ld, "resolver", key, "item", value, resolver_item, key);
}

/* One key of [resolver]: dnssec, trust_anchor, forward, stub. */
static int resolver_key(struct loader *ld, const char *name, const char *value)
{
    struct res_conf *rc = &ld->cfg->resolver;
    bool again = ld->res.last != NULL && strcmp(ld->res.last, name) == 0;
    bool cont = ld->line_indented && again;
    bool *seen = NULL;

    if (strcmp(name, "forward") == 0 || strcmp(name, "stub") == 0) {
        ld->res.last = strcmp(name, "forward") == 0 ? "forward" : "stub";
        return resolver_list(ld, name, value);
    }
    if (strcmp(name, "dnssec") == 0)
        seen = &ld->res.seen_dnssec;
    else if (strcmp(name, "trust_anchor") == 0)
        seen = &ld->res.seen_anchor;
    if (seen == NULL) {
        load_fail(ld, "unknown key '%s' in [resolver]", name);
        return -1;
    }
    if (!key_first(ld, seen, "resolver", name, cont))
        return -1;
    ld->res.last = seen == &ld->res.seen_dnssec ? "dnssec" : "trust_anchor";
    if (seen == &ld->res.seen_dnssec) {
        if (strcmp(value, "on") == 0) {
            rc->dnssec = true;
        } else if (strcmp(value, "off") == 0) {
            rc->dnssec = false;
        } else {
            load_fail(ld, "[resolver] dnssec: expected on or off, got '%s'", value);
            return -1;
        }
        return 0;
    }
    if (*value == '\0') {
        load_fail(ld, "[resolver] trust_anchor: empty path");
        return -1;
    }
    if ((rc->trust_anchor = path_join(ld->cfg->dir, value)) == NULL) {
        load_fail(ld, "out of memory");
        return -1;
    }
    return 0;
}

/* ---- [relay]: trusted networks and sending rates (issue 12 part 5) ---- */

/*
 * "ADDR[/LEN]" (brackets around an IPv6 address allowed) into n.  Without
 * LEN the network is the one address.  Bits set past LEN are an error (the
 * operator meant something else).  IPv4-mapped IPv6 becomes IPv4.  Returns
 * 0, or -1 with a reason in why.
 */
static int cidr_parse(const char *item, struct config_cidr *n, char *why, size_t cap)
{
    char addr[INET6_ADDRSTRLEN + 2];
    const char *slash = strchr(item, '/');
    size_t alen = slash != NULL ? (size_t)(slash - item) : strlen(item);
    uint64_t plen = 0;

    if (alen >= 2 && item[0] == '[' && item[alen - 1] == ']') {
        item++;
        alen -= 2;
    }
    if (alen == 0 || alen >= sizeof(addr)) {
        snprintf(why, cap, "expected ADDRESS or ADDRESS/LENGTH");
        return -1;
    }
    memcpy(addr, item, alen);
    addr[alen] = '\0';
    memset(n, 0, sizeof(*n));
    if (inet_pton(AF_INET, addr, n->addr) == 1) {
        n->family = AF_INET;
        n->plen = 32;
    } else if (inet_pton(AF_INET6, addr, n->addr) == 1) {
        n->family = AF_INET6;
        n->plen = 128;
    } else {
        snprintf(why, cap, "'%s' is not an IPv4 or IPv6 address", addr);
        return -1;
    }
    if (slash != NULL) {
        if (parse_u64(slash + 1, &plen) < 0 || plen > n->plen) {
            snprintf(why, cap, "bad prefix length '%s' (0-%u)", slash + 1, n->plen);
            return -1;
        }
        n->plen = (uint8_t)plen;
    }
    size_t bytes = n->family == AF_INET ? 4 : 16;
    for (size_t i = 0; i < bytes; i++) {
        unsigned keep = i * 8 >= n->plen ? 0 : n->plen - i * 8;
        uint8_t mask = keep >= 8 ? 0xFF : (uint8_t)(0xFF00u >> keep);
        if (n->addr[i] & ~mask) {
            snprintf(why, cap, "'%.*s' has bits set past /%u (the network is written "
                               "with them cleared)", (int)alen, item, n->plen);
            return -1;
        }
    }
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    if (n->family == AF_INET6 && n->plen >= 96 && memcmp(n->addr, mapped, 12) == 0) {
        memmove(n->addr, n->addr + 12, 4);
        memset(n->addr + 4, 0, 12);
        n->family = AF_INET;
        n->plen = (uint8_t)(n->plen - 96);
    }
    return 0;
}

/* One item of trusted_networks or user_messages_per_hour. */
static int relay_item(struct loader *ld, const char *key, char *item)
{
    struct config_relay *rl = &ld->cfg->relay;
    char why[200];

    if (strcmp(key, "trusted_networks") == 0) {
        struct config_cidr n;
        if (cidr_parse(item, &n, why, sizeof(why)) < 0) {
            load_fail(ld, "[relay] trusted_networks: %s", why);
            return -1;
        }
        struct config_cidr *t = realloc(rl->trusted, (rl->ntrusted + 1) * sizeof(*t));
        if (t == NULL)
            goto nomem;
        rl->trusted = t;
        t[rl->ntrusted++] = n;
        return 0;
    }
    /* "ADDRESS N" */
    char *save = NULL, *user = strtok_r(item, " \t", &save);
    char *num = strtok_r(NULL, " \t", &save);
    uint64_t v;
    if (num == NULL || strtok_r(NULL, " \t", &save) != NULL || strchr(user, '@') == NULL ||
        parse_u64(num, &v) < 0 || v > 1000000) {
        load_fail(ld, "[relay] user_messages_per_hour: expected 'ADDRESS N' with N from 0 "
                      "to 1000000, got '%s%s%s'",
                  user, num ? " " : "", num ? num : "");
        return -1;
    }
    struct config_user_rate *u = realloc(rl->user_rates, (rl->nuser_rates + 1) * sizeof(*u));
    if (u == NULL)
        goto nomem;
    rl->user_rates = u;
    if ((u[rl->nuser_rates].user = strdup(user)) == NULL)
        goto nomem;
    u[rl->nuser_rates++].per_hour = (unsigned)v;
    return 0;
nomem:
    load_fail(ld, "out of memory");
    return -1;
}

/* One item of a [relay] list (arg: the key), copied for relay_item. */
static int relay_list_item(struct loader *ld, const void *arg, const char *p, size_t n)
{
    char item[256];

    if (n >= sizeof(item)) {
        load_fail(ld, "[relay] %s: item too long", (const char *)arg);
        return -1;
    }
    memcpy(item, p, n);
    item[n] = '\0';
    return relay_item(ld, arg, item);
}

/*
 * One key of [relay].  trusted_networks and user_messages_per_hour are
 * comma-separated lists that may go on over indented lines or repeat the
 * key (both append; an empty trusted_networks says "none");
 * messages_per_hour is one number.
 */
static int relay_key(struct loader *ld, const char *name, const char *value)
{
    bool list = strcmp(name, "trusted_networks") == 0 ||
                strcmp(name, "user_messages_per_hour") == 0;

    ld->last_key = -1;
    if (strcmp(name, "messages_per_hour") == 0) {
        uint64_t v;
        if (!key_first(ld, &ld->relay_rate_seen, "relay", name, ld->line_indented))
            return -1;
        if (parse_u64(value, &v) < 0 || v > 1000000) {
            load_fail(ld, "[relay] messages_per_hour: expected 0 (no limit) to 1000000, "
                          "got '%s'", value);
            return -1;
        }
        ld->cfg->relay.messages_per_hour = (unsigned)v;
        return 0;
    }
    if (!list) {
        load_fail(ld, "unknown key '%s' in [relay]", name);
        return -1;
    }
    if (*value == '\0')
        return 0; /* an empty list */
    return list_split(ld, "relay", name, "item", value, relay_list_item, name);
}

static void relay_free(struct config_relay *rl)
{
    free(rl->trusted);
    for (size_t i = 0; i < rl->nuser_rates; i++)
        free(rl->user_rates[i].user);
    free(rl->user_rates);
}

/* ---- [delivery], [destination DOMAIN], [routes] ------------------------ */

/*
 * One key of the delivery sections, checked and stored by delivery/route.c.
 * A key given twice in the same section is an error here (route.c would
 * overwrite); [routes] detects its own duplicates.
 */
static int delivery_key(struct loader *ld, const char *section, const char *name,
                        const char *value)
{
    struct route_conf *rc = &ld->cfg->delivery;
    char err[400], *tag;
    int r;

    if (strcmp(section, "routes") == 0) {
        r = route_conf_route_add(rc, name, value, err, sizeof err);
        if (r < 0)
            load_fail(ld, "%s", err);
        return r;
    }
    if (asprintf(&tag, "%s\n%s", section, name) < 0) {
        load_fail(ld, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < ld->dlv.nseen; i++) {
        if (strcmp(ld->dlv.seen[i], tag) == 0) {
            free(tag);
            key_twice(ld, section, name, ld->line_indented);
            return -1;
        }
    }
    char **ns = realloc(ld->dlv.seen, (ld->dlv.nseen + 1) * sizeof *ns);
    if (ns == NULL) {
        free(tag);
        load_fail(ld, "out of memory");
        return -1;
    }
    ld->dlv.seen = ns;
    ld->dlv.seen[ld->dlv.nseen++] = tag;
    if (strcmp(section, "delivery") == 0)
        r = route_conf_set(rc, ld->cfg->dir, name, value, err, sizeof err);
    else
        r = route_conf_dest_set(rc, ld->cfg->dir, section + 12, name, value, err, sizeof err);
    if (r < 0)
        load_fail(ld, "%s", err);
    return r;
}

/* ---- [local] pipe_timeout: delivery to commands (delivery/pipe.h) ---- */

#define PIPE_TIMEOUT_DEFAULT 1000   /* seconds: Postfix's command_time_limit */
#define PIPE_TIMEOUT_MAX 86400

static bool pipe_key(const char *section, const char *name)
{
    return strcmp(section, "local") == 0 && strcmp(name, "pipe_timeout") == 0;
}

static int pipe_key_set(struct loader *ld, const char *value)
{
    uint32_t secs;

    if (!key_first(ld, &ld->pipe_timeout_seen, "local", "pipe_timeout", ld->line_indented))
        return -1;
    ld->last_key = -1;
    if (route_parse_duration(value, &secs) < 0 || secs == 0 || secs > PIPE_TIMEOUT_MAX) {
        load_fail(ld, "[local] pipe_timeout: expected a time from 1s to 1d such as 1000s, "
                      "10m or 1h, got '%s'",
                  value);
        return -1;
    }
    ld->cfg->local.pipe_timeout = secs;
    return 0;
}

/* ---- [local], [srs], [smtp]: local domains, SRS, greeting (issue 11) ---- */

static bool domains_section(const char *section)
{
    return strcmp(section, "local") == 0 || strcmp(section, "srs") == 0 ||
           strcmp(section, "smtp") == 0;
}

static void domains_defaults(struct config *cfg)
{
    strcpy(cfg->local.plus_separator, "+");
    cfg->local.case_sensitive = false;
    cfg->local.allow_pipe = false;
    cfg->srs.max_age = 21;
    cfg->srs.separator = '=';
    cfg->smtp.greeting_delay_ms = 1000;
}

static void domains_free(struct config *cfg)
{
    free(cfg->local.maildir_root);
    if (cfg->srs.secrets != NULL) {
        for (size_t i = 0; i < cfg->srs.nsecrets; i++) {
            explicit_bzero(cfg->srs.secrets[i], strlen(cfg->srs.secrets[i]));
            free(cfg->srs.secrets[i]);
        }
        free(cfg->srs.secrets);
    }
    if (cfg->srs.secret != NULL) {
        explicit_bzero(cfg->srs.secret, strlen(cfg->srs.secret));
        free(cfg->srs.secret);
    }
    free(cfg->srs.secret_file);
}

/* on | off (also yes/no, true/false, 1/0). */
static int parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = {"on", "yes", "true", "1"};
    static const char *const no[] = {"off", "no", "false", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

/* "1500ms", "2s", "2" (seconds) into milliseconds, at most max_ms. */
static int parse_duration_ms(const char *v, uint64_t max_ms, unsigned *out)
{
    char num[24];
    size_t len = strlen(v);
    uint64_t n, mult = 1000;

    if (len > 2 && strcmp(v + len - 2, "ms") == 0) {
        len -= 2;
        mult = 1;
    } else if (len > 1 && v[len - 1] == 's') {
        len -= 1;
    }
    if (len == 0 || len >= sizeof(num))
        return -1;
    memcpy(num, v, len);
    num[len] = '\0';
    if (parse_u64(num, &n) < 0 || n > max_ms / mult)
        return -1;
    *out = (unsigned)(n * mult);
    return 0;
}

/* One key of [local], [srs] or [smtp]. */
static int domains_key_set(struct loader *ld, const char *section, const char *name,
                           const char *value)
{
    struct config *cfg = ld->cfg;
    int k;
    uint64_t v;

    for (k = 0; k < DK__COUNT; k++)
        if (strcmp(domains_keys[k].section, section) == 0 && strcmp(domains_keys[k].name, name) == 0)
            break;
    if (k == DK__COUNT) {
        load_fail(ld, "unknown key '%s' in [%s]", name, section);
        return -1;
    }
    if (!key_first(ld, &ld->dk_seen[k], section, name, ld->line_indented))
        return -1;
    ld->last_key = -1;
    switch ((enum domains_key)k) {
    case DK_MAILDIR_ROOT:
        if (*value == '\0') {
            load_fail(ld, "[local] maildir_root: empty path");
            return -1;
        }
        if ((cfg->local.maildir_root = path_join(cfg->dir, value)) == NULL)
            goto nomem;
        return 0;
    case DK_PLUS_SEPARATOR:
        /* Characters that cannot be part of a domain and are not '@', '"',
         * '\\', '.' or a blank: each one starts a +tag. */
        if (strlen(value) >= sizeof(cfg->local.plus_separator) ||
            strspn(value, "+-=_#%&!~$^") != strlen(value)) {
            load_fail(ld, "[local] plus_separator: expected up to %zu of the characters "
                          "+-=_#%%&!~$^ (empty: off), got '%s'",
                      sizeof(cfg->local.plus_separator) - 1, value);
            return -1;
        }
        strcpy(cfg->local.plus_separator, value);
        return 0;
    case DK_CASE_SENSITIVE:
    case DK_ALLOW_PIPE:
        if (parse_bool(value, k == DK_CASE_SENSITIVE ? &cfg->local.case_sensitive
                                                     : &cfg->local.allow_pipe) < 0) {
            load_fail(ld, "[%s] %s: expected on or off, got '%s'", section, name, value);
            return -1;
        }
        return 0;
    case DK_SRS_SECRET:
        if (strlen(value) < 16) {
            load_fail(ld, "[srs] secret: at least 16 characters (better: let `ortoo init` "
                          "make srs.key)");
            return -1;
        }
        if ((cfg->srs.secret = strdup(value)) == NULL)
            goto nomem;
        return 0;
    case DK_SRS_SECRET_FILE:
        if (*value == '\0') {
            load_fail(ld, "[srs] secret_file: empty path");
            return -1;
        }
        if ((cfg->srs.secret_file = path_join(cfg->dir, value)) == NULL)
            goto nomem;
        cfg->srs.secret_file_set = true;
        return 0;
    case DK_SRS_MAX_AGE:
        if (parse_u64(value, &v) < 0 || v < 1 || v > 1000) {
            load_fail(ld, "[srs] max_age: expected days from 1 to 1000, got '%s'", value);
            return -1;
        }
        cfg->srs.max_age = (unsigned)v;
        return 0;
    case DK_SRS_SEPARATOR:
        if (strlen(value) != 1 || strchr("=+-", value[0]) == NULL) {
            load_fail(ld, "[srs] separator: expected =, + or -, got '%s'", value);
            return -1;
        }
        cfg->srs.separator = value[0];
        return 0;
    case DK_GREETING_DELAY:
        if (parse_duration_ms(value, 30000, &cfg->smtp.greeting_delay_ms) < 0) {
            load_fail(ld, "[smtp] greeting_delay: expected a time up to 30s such as 0, 1s "
                          "or 500ms, got '%s'",
                      value);
            return -1;
        }
        return 0;
    case DK__COUNT:
        break;
    }
    return 0;
nomem:
    load_fail(ld, "out of memory");
    return -1;
}

/* After the parse: path defaults and cross-key checks. */
static int domains_finish(struct config *cfg, const char *file, char *err, size_t errlen)
{
    if (cfg->local.maildir_root == NULL && (cfg->local.maildir_root = strdup("/var/vmail")) == NULL)
        goto nomem;
    if (cfg->srs.secret != NULL && cfg->srs.secret_file_set) {
        text_seterr(err, errlen, "%s: [srs] has both secret and secret_file; keep one", file);
        return -1;
    }
    if (cfg->srs.secret_file == NULL && (cfg->srs.secret_file = path_join(cfg->dir, "srs.key")) == NULL)
        goto nomem;
    return 0;
nomem:
    text_seterr(err, errlen, "%s: out of memory", file);
    return -1;
}

/* Append a copy of s[0..len) to cfg->srs.secrets.  Returns 0 or -ENOMEM. */
static int srs_secret_add(struct config_srs *srs, const char *s, size_t len)
{
    char **n = realloc(srs->secrets, (srs->nsecrets + 2) * sizeof(*n));
    if (n == NULL)
        return -ENOMEM;
    srs->secrets = n;
    if ((n[srs->nsecrets] = strndup(s, len)) == NULL)
        return -ENOMEM;
    n[++srs->nsecrets] = NULL;
    return 0;
}

int config_srs_load(struct config *cfg, char *err, size_t errlen)
{
    struct config_srs *srs = &cfg->srs;
    char buf[4096];
    FILE *f;
    size_t n;
    int lineno = 0;

    if (srs->nsecrets > 0)
        return 0; /* loaded already */
    if (srs->secret != NULL)
        return srs_secret_add(srs, srs->secret, strlen(srs->secret)) == 0 ? 0 : -1;
    f = fopen(srs->secret_file, "re");
    if (f == NULL) {
        if (errno == ENOENT && !srs->secret_file_set)
            return 0;
        text_seterr(err, errlen, "%s: %s", srs->secret_file, strerror(errno));
        return -1;
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    if (ferror(f) || !feof(f)) {
        text_seterr(err, errlen, "%s: %s", srs->secret_file,
                    ferror(f) ? "read error" : "larger than 4 KB");
        fclose(f);
        explicit_bzero(buf, sizeof(buf));
        return -1;
    }
    fclose(f);
    buf[n] = '\0';
    for (char *line = buf, *next; line != NULL && *line != '\0'; line = next) {
        next = strchr(line, '\n');
        if (next != NULL)
            *next++ = '\0';
        lineno++;
        size_t len = strlen(line);
        while (len > 0 && strchr(" \t\r", line[len - 1]) != NULL)
            len--;
        while (len > 0 && (*line == ' ' || *line == '\t'))
            line++, len--;
        if (len == 0 || line[0] == '#')
            continue;
        if (len < 16) {
            text_seterr(err, errlen, "%s:%d: a secret needs at least 16 characters",
                        srs->secret_file, lineno);
            explicit_bzero(buf, sizeof(buf));
            return -1;
        }
        if (srs_secret_add(srs, line, len) < 0) {
            text_seterr(err, errlen, "%s: out of memory", srs->secret_file);
            explicit_bzero(buf, sizeof(buf));
            return -1;
        }
    }
    explicit_bzero(buf, sizeof(buf));
    if (srs->nsecrets == 0) {
        text_seterr(err, errlen, "%s: no secret in the file", srs->secret_file);
        return -1;
    }
    return 0;
}

/* ---- [checks]: inbound SPF / iprev / DKIM / DMARC (issue 11 part 6) ---- */

static const char *const checks_keys[] = {
    "enabled", "spf_reject", "dmarc_reject", "timeout", "dkim_max_signatures",
    "public_suffix_list",
};

static void checks_defaults(struct config *cfg)
{
    cfg->checks.enabled = true;
    cfg->checks.spf_reject = false;
    cfg->checks.dmarc_reject = true;
    cfg->checks.timeout_ms = 10000;
    cfg->checks.dkim_max_signatures = 5;
}

/* One key of [checks]. */
static int checks_key_set(struct loader *ld, const char *name, const char *value)
{
    struct config_checks *ck = &ld->cfg->checks;
    size_t k;
    uint64_t v;

    for (k = 0; k < sizeof(checks_keys) / sizeof(checks_keys[0]); k++)
        if (strcmp(checks_keys[k], name) == 0)
            break;
    if (k == sizeof(checks_keys) / sizeof(checks_keys[0])) {
        load_fail(ld, "unknown key '%s' in [checks]", name);
        return -1;
    }
    if (!key_first(ld, &ld->ck_seen[k], "checks", name, ld->line_indented))
        return -1;
    ld->last_key = -1;
    switch (k) {
    case 0:
    case 1:
    case 2: {
        bool *b = k == 0 ? &ck->enabled : k == 1 ? &ck->spf_reject : &ck->dmarc_reject;
        if (parse_bool(value, b) < 0) {
            load_fail(ld, "[checks] %s: expected on or off, got '%s'", name, value);
            return -1;
        }
        return 0;
    }
    case 3:
        if (parse_duration_ms(value, 120000, &ck->timeout_ms) < 0 || ck->timeout_ms < 100) {
            load_fail(ld, "[checks] timeout: expected a time from 100ms to 120s such as 10s "
                          "or 2500ms, got '%s'",
                      value);
            return -1;
        }
        return 0;
    case 4:
        if (parse_u64(value, &v) < 0 || v < 1 || v > 16) {
            load_fail(ld, "[checks] dkim_max_signatures: expected 1 to 16, got '%s'", value);
            return -1;
        }
        ck->dkim_max_signatures = (unsigned)v;
        return 0;
    case 5:
        if (*value == '\0') {
            load_fail(ld, "[checks] public_suffix_list: empty path");
            return -1;
        }
        if ((ck->public_suffix_list = path_join(ld->cfg->dir, value)) == NULL) {
            load_fail(ld, "out of memory");
            return -1;
        }
        ck->public_suffix_list_set = true;
        return 0;
    }
    return 0;
}

/* ---- [listen] metrics ------------------------------------------------ */

/*
 * [listen] metrics = PORT | :PORT | IPv4:PORT | [IPv6]:PORT, or empty (off).
 * One address.  A port alone listens on 127.0.0.1: the figures stay on the
 * machine unless an address is written out.
 */
static int metrics_key(struct loader *ld, const char *value)
{
    struct config_metrics *m = &ld->cfg->metrics;
    char buf[sizeof(m->text) + 16];
    uint64_t port;

    if (!key_first(ld, &ld->seen_metrics, "listen", "metrics", ld->line_indented))
        return -1;
    if (*value == '\0')
        return 0; /* "metrics =": off */
    if (strlen(value) >= sizeof(m->text)) {
        load_fail(ld, "[listen] metrics: address '%s' too long", value);
        return -1;
    }
    if (strchr(value, ',') != NULL) {
        load_fail(ld, "[listen] metrics: one address only, got '%s'", value);
        return -1;
    }
    if (parse_u64(value[0] == ':' ? value + 1 : value, &port) == 0) {
        if (port > 65535) {
            load_fail(ld, "[listen] metrics: port %s out of range", value);
            return -1;
        }
        snprintf(buf, sizeof(buf), "127.0.0.1:%u", (unsigned)port);
    } else {
        snprintf(buf, sizeof(buf), "%s", value);
    }
    if (buf[0] == ':' || config_parse_addr(buf, &m->addr, &m->addr_len) < 0) {
        load_fail(ld,
                  "[listen] metrics: bad address '%s' (expected PORT for 127.0.0.1, "
                  "IPv4:PORT or [IPv6]:PORT, with a literal IP)",
                  value);
        return -1;
    }
    snprintf(m->text, sizeof(m->text), "%s", value);
    m->enabled = true;
    return 0;
}

/* ini_handler: one "name = value" (or an indented continuation line). */
static int config_handler(void *user, const char *section, const char *name, const char *value)
{
    struct loader *ld = user;
    const struct key_def *k = NULL;
    int idx;

    if (ld->failed)
        return 0;
    ld->has_prev_key = true;
    if (*section == '\0') {
        load_fail(ld, "'%s' outside of a section ([server], [listen], [tls], [auth], "
                      "[resolver], [delivery], [routes], [destination DOMAIN])", name);
        return 0;
    }
    if (strcmp(section, "resolver") == 0) {
        ld->last_key = -1;
        return resolver_key(ld, name, value) == 0;
    }
    if (strcmp(section, "delivery") == 0 || strcmp(section, "routes") == 0 ||
        strncmp(section, "destination ", 12) == 0) {
        ld->last_key = -1;
        ld->res.last = NULL;
        return delivery_key(ld, section, name, value) == 0;
    }
    if (strcmp(section, "listen") == 0 && strcmp(name, "metrics") == 0) {
        ld->last_key = -1;
        ld->res.last = NULL;
        return metrics_key(ld, value) == 0;
    }
    ld->res.last = NULL;
    if (strcmp(section, "relay") == 0)
        return relay_key(ld, name, value) == 0;
    if (pipe_key(section, name))
        return pipe_key_set(ld, value) == 0;
    if (domains_section(section))
        return domains_key_set(ld, section, name, value) == 0;
    if (strcmp(section, "checks") == 0)
        return checks_key_set(ld, name, value) == 0;
    for (idx = 0; idx < (int)NKEYS; idx++) {
        if (strcmp(keys[idx].section, section) == 0 && strcmp(keys[idx].name, name) == 0) {
            k = &keys[idx];
            break;
        }
    }
    if (k == NULL)
        k = limits_key_find(section, name, &idx);
    if (k == NULL) {
        load_fail(ld, "unknown key '%s' in [%s]", name, section);
        return 0;
    }
    if (ld->seen[idx]) {
        /* Listen lists may go on over indented lines (configparser style);
         * anything else is a mistake. */
        bool cont = ld->line_indented && ld->last_key == idx;
        if (cont && k->type == KT_LISTEN)
            return listen_add(ld, k, value) == 0;
        key_twice(ld, section, name, cont);
        return 0;
    }
    ld->seen[idx] = true;
    ld->last_key = idx;
    return key_set(ld, k, value) == 0;
}

void config_free(struct config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->dir);
    free(cfg->file);
    free(cfg->hostname);
    free(cfg->spool);
    free(cfg->log_level);
    free(cfg->listens);
    free(cfg->cert_dir);
    res_conf_clear(&cfg->resolver);
    route_conf_clear(&cfg->delivery);
    free(cfg->user);
    free(cfg->control_group);
    domains_free(cfg);
    relay_free(&cfg->relay);
    free(cfg->checks.public_suffix_list);
    free(cfg);
}

/*
 * Parse the bytes of a config file.  dir is the absolute config directory,
 * file the name used in messages.  Borrows buf.  Returns 0 with *out (owned
 * by the caller) or -1 with err set.
 */
static int config_parse_buf(const char *dir, const char *file, const char *buf, size_t len,
                            struct config **out, char *err, size_t errlen)
{
    struct loader ld = {
        .file = file, .buf = buf, .len = len, .last_key = -1, .err = err, .errlen = errlen,
    };
    struct config *cfg = calloc(1, sizeof(*cfg));

    if (cfg == NULL) {
        text_seterr(err, errlen, "%s: out of memory", file);
        return -1;
    }
    ld.cfg = cfg;
    if ((cfg->dir = strdup(dir)) == NULL || (cfg->file = path_join(dir, CONFIG_FILE_NAME)) == NULL)
        goto nomem;
    cfg->reactors = 0;
    cfg->io = IO_BACKEND_AUTO;
    cfg->max_message_size = 25ull << 20;
    cfg->max_recipients = 1000;
    cfg->max_errors = 10;
    cfg->max_connections = 10000;
    cfg->timeout_command = 300;
    cfg->timeout_data = 180;
    cfg->timeout_tls = 30;
    cfg->batch_delay_us = 0;
    cfg->ticket_rotate = 3600;
    cfg->auth_workers = 2;
    cfg->auth_cache_ttl = 3600;
    cfg->auth_max_failures = 5;
    cfg->auth_fail_window = 300;
    res_conf_init(&cfg->resolver);
    route_conf_init(&cfg->delivery);
    domains_defaults(cfg);
    cfg->local.pipe_timeout = PIPE_TIMEOUT_DEFAULT;
    checks_defaults(cfg);
    limits_defaults(&cfg->limits);
    cfg->spool_opts = (struct config_spool){.segment_size = 64ull << 20,
                                            .checkpoint_size = 4ull << 20,
                                            .compact_min_age = 60, .compact_live_pct = 50,
                                            .journal_delay_ms = 10};

    /* libinih goes on after a syntax error (it returns the first error's
     * line), so a later error of ours may have been recorded: the earlier
     * line wins. */
    int rc = ini_parse_stream(config_reader, &ld, config_handler, &ld);
    for (size_t i = 0; i < ld.dlv.nseen; i++)
        free(ld.dlv.seen[i]);
    free(ld.dlv.seen);
    if (rc == -2)
        goto nomem;
    if (ld.failed && (rc <= 0 || rc >= ld.fail_line))
        goto fail;
    if (rc != 0) {
        text_seterr(err, errlen, "%s:%d: syntax error (expected [section], key = value or a "
                                 "comment)",
                    file, rc);
        goto fail;
    }

    if (cfg->hostname == NULL) {
        char host[HOST_NAME_MAX + 1] = "";
        if (gethostname(host, sizeof(host) - 1) < 0)
            host[0] = '\0';
        if (!hostname_valid(host)) {
            text_seterr(err, errlen,
                        "%s: the system host name '%s' is not a valid host name: set hostname "
                        "in [server]",
                        file, host);
            goto fail;
        }
        if ((cfg->hostname = strdup(host)) == NULL)
            goto nomem;
    }
    /* The default spool is outside the config directory, where Debian keeps
     * mail queues: the config directory holds no state (docs/config.md). */
    if (cfg->spool == NULL && (cfg->spool = strdup(CONFIG_DEFAULT_SPOOL)) == NULL)
        goto nomem;
    if (cfg->user == NULL && (cfg->user = strdup(CONFIG_DEFAULT_USER)) == NULL)
        goto nomem;
    if (cfg->cert_dir == NULL && (cfg->cert_dir = path_join(dir, "certs")) == NULL)
        goto nomem;
    if (cfg->log_level == NULL && (cfg->log_level = strdup("info")) == NULL)
        goto nomem;
    if (domains_finish(cfg, file, err, errlen) < 0)
        goto fail;
    if (cfg->checks.public_suffix_list == NULL &&
        (cfg->checks.public_suffix_list = strdup(PSL_DEFAULT_PATH)) == NULL)
        goto nomem;
    if (limits_check(cfg, file, err, errlen) < 0)
        goto fail;
    if (cfg->nlistens == 0) {
        text_seterr(err, errlen,
                    "%s: no listeners: set smtp, submission or submissions in [listen]", file);
        goto fail;
    }
    for (size_t i = 0; cfg->metrics.enabled && i < cfg->nlistens; i++) {
        if (addr_port(&cfg->metrics.addr) != 0 &&
            same_addr(&cfg->metrics.addr, &cfg->listens[i].addr)) {
            text_seterr(err, errlen, "%s: [listen] metrics: address %s already used by %s", file,
                        cfg->metrics.text, config_role_name(cfg->listens[i].role));
            goto fail;
        }
    }
    *out = cfg;
    return 0;
nomem:
    text_seterr(err, errlen, "%s: out of memory", file);
fail:
    config_free(cfg);
    return -1;
}

int config_load(const char *dir, struct config **out, char *err, size_t errlen)
{
    char *abs = NULL, *file = NULL;
    struct text_buf buf = {0};
    int rc = -1;

    *out = NULL;
    if ((abs = realpath(dir, NULL)) == NULL) {
        if (errno == ENOENT)
            text_seterr(err, errlen, "%s: no such configuration directory (create one with "
                                     "'ortoo -c %s init DOMAIN')",
                        dir, dir);
        else
            text_seterr(err, errlen, "%s: %s", dir, strerror(errno));
        goto fail;
    }
    if (asprintf(&file, "%s/%s", abs, CONFIG_FILE_NAME) < 0) {
        file = NULL;
        text_seterr(err, errlen, "%s: out of memory", dir);
        goto fail;
    }
    int r = text_read_file(file, CONFIG_FILE_MAX, &buf, NULL);
    if (r == -ENOENT) {
        text_seterr(err, errlen, "%s: not found (the config directory must hold %s; see "
                                 "docs/config.md)",
                    file, CONFIG_FILE_NAME);
        goto fail;
    }
    if (r < 0) {
        if (r == -EFBIG)
            text_seterr(err, errlen, "%s: larger than %u bytes", file, CONFIG_FILE_MAX);
        else
            text_seterr(err, errlen, "%s: %s", file, strerror(-r));
        goto fail;
    }
    rc = config_parse_buf(abs, file, buf.p, buf.len, out, err, errlen);
fail:
    text_free(&buf);
    free(file);
    free(abs);
    return rc;
}

/* ---- reload: what needs a restart ---- */

static bool str_differs(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return a != b;
    return strcmp(a, b) != 0;
}

static bool listens_differ(const struct config *a, const struct config *b)
{
    if (a->nlistens != b->nlistens)
        return true;
    for (size_t i = 0; i < a->nlistens; i++) {
        /* Compare as written: the running copy has port 0 resolved. */
        if (a->listens[i].role != b->listens[i].role ||
            strcmp(a->listens[i].text, b->listens[i].text) != 0)
            return true;
    }
    return false;
}

/* The [spool] options differ (the shards are made with them at start). */
static bool spool_opts_differ(const struct config_spool *a, const struct config_spool *b)
{
    return a->segment_size != b->segment_size || a->checkpoint_size != b->checkpoint_size ||
           a->compact_min_age != b->compact_min_age ||
           a->compact_live_pct != b->compact_live_pct ||
           a->journal_delay_ms != b->journal_delay_ms;
}

int config_restart_diff(const struct config *cur, const struct config *next, char *out,
                        size_t cap)
{
    /* The settings fixed at start: sockets (listen), threads and their
     * loops (reactors, io, auth.workers), the spool and its shards, the
     * process's identity, and what the password workers were built with. */
    const struct {
        const char *name;
        bool differs;
    } d[] = {
        {"listen", listens_differ(cur, next)},
        {"listen.metrics", strcmp(cur->metrics.text, next->metrics.text) != 0},
        {"server.reactors", cur->reactors != next->reactors},
        {"server.io", cur->io != next->io},
        {"server.spool", str_differs(cur->spool, next->spool)},
        {"server.batch_delay_us", cur->batch_delay_us != next->batch_delay_us},
        {"server.user", str_differs(cur->user, next->user)},
        {"server.control_group", str_differs(cur->control_group, next->control_group)},
        {"tls.ticket_rotate", cur->ticket_rotate != next->ticket_rotate},
        {"auth.workers", cur->auth_workers != next->auth_workers},
        {"auth.cache_ttl", cur->auth_cache_ttl != next->auth_cache_ttl},
        {"auth.max_failures", cur->auth_max_failures != next->auth_max_failures},
        {"auth.fail_window", cur->auth_fail_window != next->auth_fail_window},
        {"limits.penalty_slots", cur->limits.penalty_slots != next->limits.penalty_slots},
        {"checks.public_suffix_list", str_differs(cur->checks.public_suffix_list,
                                                  next->checks.public_suffix_list)},
        {"spool", spool_opts_differ(&cur->spool_opts, &next->spool_opts)},
    };
    int n = 0;
    size_t used = 0;

    if (cap > 0)
        out[0] = '\0';
    for (size_t i = 0; i < sizeof(d) / sizeof(d[0]); i++) {
        if (!d[i].differs)
            continue;
        if (cap > used) {
            int w = snprintf(out + used, cap - used, "%s%s", n ? "," : "", d[i].name);
            if (w > 0)
                used = (size_t)w >= cap - used ? cap - 1 : used + (size_t)w;
        }
        n++;
    }
    return n;
}

/* *dst = strdup(src) (NULL stays NULL), freeing the old value. */
static int str_replace_dup(char **dst, const char *src)
{
    char *n = NULL;
    if (src != NULL && (n = strdup(src)) == NULL)
        return -ENOMEM;
    free(*dst);
    *dst = n;
    return 0;
}

int config_keep_restart_fields(struct config *next, const struct config *cur)
{
    struct config_listen *l = NULL;
    if (cur->nlistens > 0) {
        l = malloc(cur->nlistens * sizeof(*l));
        if (l == NULL)
            return -ENOMEM;
        memcpy(l, cur->listens, cur->nlistens * sizeof(*l));
    }
    free(next->listens);
    next->listens = l;
    next->nlistens = cur->nlistens;
    next->metrics = cur->metrics;
    if (str_replace_dup(&next->spool, cur->spool) < 0 ||
        str_replace_dup(&next->user, cur->user) < 0 ||
        str_replace_dup(&next->control_group, cur->control_group) < 0 ||
        str_replace_dup(&next->checks.public_suffix_list, cur->checks.public_suffix_list) < 0)
        return -ENOMEM;
    next->reactors = cur->reactors;
    next->io = cur->io;
    next->batch_delay_us = cur->batch_delay_us;
    next->ticket_rotate = cur->ticket_rotate;
    next->auth_workers = cur->auth_workers;
    next->auth_cache_ttl = cur->auth_cache_ttl;
    next->auth_max_failures = cur->auth_max_failures;
    next->auth_fail_window = cur->auth_fail_window;
    next->limits.penalty_slots = cur->limits.penalty_slots;
    next->spool_opts = cur->spool_opts;
    /* Smarthost credentials were read at start (as root, maybe). */
    char err[300];
    if (route_conf_keep_secrets(&next->delivery, &cur->delivery, err, sizeof err) < 0)
        log_warnx("event=reload-warning what=delivery err=\"%s\"", err);
    return 0;
}
