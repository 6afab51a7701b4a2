/* SPDX-License-Identifier: MIT */
/*
 * cli.h - the subcommands of the single ortoo binary.  main() (cli/main.c)
 * parses the global options (-c DIR, ORTOO_CONFIG, default /etc/ortoo; -v)
 * and dispatches; each cli_* function gets the config directory and the
 * arguments after the subcommand name (argv[0] is the subcommand), prints
 * what it does, and returns the process exit status (0 ok, 1 failure,
 * 2 usage error; sendmail uses sendmail's codes).  Every command answers
 * -h/--help on stdout with status 0.  Errors are one clear line on stderr.
 */
#ifndef ORTOO_CLI_H
#define ORTOO_CLI_H

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stddef.h>
#include <sys/types.h>

#include "core/control.h"

int cli_serve(const char *config_dir, int argc, char **argv);    /* cli/cli_serve.c */
int cli_init(const char *config_dir, int argc, char **argv);     /* cli/cli_init.c */
int cli_user(const char *config_dir, int argc, char **argv);     /* cli/cli_user.c */
int cli_send(const char *config_dir, int argc, char **argv);     /* cli/cli_send.c */
int cli_queue(const char *config_dir, int argc, char **argv);    /* cli/cli_queue.c */
int cli_reload(const char *config_dir, int argc, char **argv);   /* cli/cli_serve.c */
int cli_check(const char *config_dir, int argc, char **argv);    /* cli/cli_check.c */
int cli_sendmail(const char *config_dir, int argc, char **argv); /* cli/cli_sendmail.c */
int cli_lookup(const char *config_dir, int argc, char **argv);   /* cli/cli_lookup.c */
int cli_dkim(const char *config_dir, int argc, char **argv);     /* cli/cli_dkim.c */
int cli_domain(const char *config_dir, int argc, char **argv);   /* cli/cli_domain.c */
int cli_doctor(const char *config_dir, int argc, char **argv);   /* cli/cli_doctor.c */

/* Tell a running server that domains/ changed (users, aliases, domains):
 * its `reload` through the control socket.  Prints what happened; never
 * fails.  Blocking, at most a minute.  cli/cli_serve.c. */
void cli_notify_server(const char *config_dir);
int cli_stats(const char *config_dir, int argc, char **argv);    /* cli/cli_stats.c */

/* For a command that takes no argument (argv[0] is cmd): -h or --help
 * prints usage on stdout (status 0); any other argument is a usage error
 * (status 2, the usage on stderr).  Returns that status, or -1 when there is
 * no argument.  cli/cli_serve.c. */
int cli_no_args(const char *cmd, int argc, char **argv, const char *usage);

/* Set by main() when -c named the configuration directory (sendmail then
 * warns when it cannot read it instead of falling back silently). */
extern bool cli_config_explicit;

/*
 * Send one request to the running daemon's control socket (<spool>/control
 * of the configuration in config_dir) and read the answer: data lines go to
 * on_line (NULL: printed on stdout), the status line's text to status.
 * what names the command in messages.  Returns 0 (OK), 1 (ERR: the
 * daemon's reason in status, not printed), or -1 when there was no answer
 * (not running, permission denied, timeout: a line on stderr says so).
 * Blocking, at most a minute.
 */
int cli_control_call(const char *config_dir, const char *what, const char *request,
                     control_line_cb on_line, void *arg, char *status, size_t statuslen);

/*
 * Write len bytes of data to path atomically: a temporary file next to it
 * (mode mode, group gid unless (gid_t)-1), written and fsync'ed, then
 * renamed over path, or linked to it when exclusive (then -EEXIST, not
 * printed, when path exists); the directory is synced after.  Other
 * failures print "ortoo CMD: cannot write PATH: why" and return -1.
 * Blocking.  cli/cli_init.c.
 */
int cli_file_write(const char *cmd, const char *path, const char *data, size_t len, mode_t mode,
                   gid_t gid, bool exclusive);

/* Shared with `init` (cli/cli_dkim.c). */

/*
 * Make a DKIM key for domain (lowercase, valid) under config_dir: RSA-2048
 * or Ed25519, selector NULL for the default <algo>-<YYYYMMDD>.  Refuses to
 * replace an existing key unless force.  Prints what it wrote and the record
 * to out (NULL: silent).  Blocking.  Returns 0 or -1 (message on stderr).
 */
int cli_dkim_keygen(const char *config_dir, const char *domain, const char *selector, bool ed25519,
                    bool force, FILE *out);
/* Print the TXT record of every key of domain to f (NULL: only count them),
 * each line led by indent.  Returns the number of keys, or -1 (message on
 * stderr). */
int cli_dkim_print_records(const char *config_dir, const char *domain, FILE *f,
                           const char *indent);

/* Shared by `check` and `doctor` (cli/cli_check.c). */

#define CLI_CERT_EXPIRY_WARN_DAYS 14 /* a certificate closer to its end is a warning */
#define CLI_CERT_CHAIN_MAX 8         /* certificates of a chain kept in DER */

/* What one pair <cert_dir>/<host>/{fullchain,privkey}.pem holds.  The
 * flags past has_leaf are meaningful only when has_leaf is set. */
struct cli_cert {
    char chain_path[PATH_MAX];  /* <cert_dir>/<host>/fullchain.pem */
    char key_path[PATH_MAX];    /* <cert_dir>/<host>/privkey.pem */
    bool has_leaf;              /* the first certificate of the chain parsed */
    bool has_key;               /* the private key parsed */
    bool key_matches;           /* ... and it is the leaf's */
    bool expired, not_yet_valid;
    int days_left;              /* until notAfter, in whole days (negative: past) */
    bool name_ok;               /* the leaf is valid for host (SAN / CN) */
    bool self_signed;
    size_t nchain;              /* certificates in fullchain.pem */
    unsigned char *der[CLI_CERT_CHAIN_MAX]; /* the first ones in DER (owned; NULL
                                               when encoding failed) */
    size_t der_len[CLI_CERT_CHAIN_MAX];
};

/* One finding about a pair: error (the daemon cannot use it, or it is
 * expired) or warning, the file it is about, and the text. */
typedef void (*cli_cert_note_cb)(void *arg, bool error, const char *file, const char *msg);

/*
 * Read and judge the pair of host under cert_dir: PEM parse, the key
 * against the leaf, validity dates (a warning under
 * CLI_CERT_EXPIRY_WARN_DAYS), the name, self-signed, a chain of one.  Each
 * finding goes to note (the texts `ortoo check` prints); the facts go into
 * *c (cleared first; free with cli_cert_clear).  Blocking (reads files).
 */
void cli_cert_inspect(const char *cert_dir, const char *host, struct cli_cert *c,
                      cli_cert_note_cb note, void *arg);
void cli_cert_clear(struct cli_cert *c);

/*
 * Print s as a JSON string (RFC 8259 7): quotes, backslash and control
 * characters escaped, valid UTF-8 kept, other bytes as U+FFFD, so the
 * output is always JSON.  NULL prints "".  cli/cli_queue.c.
 */
void cli_json_string(FILE *f, const char *s);

#endif
