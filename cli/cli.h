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

#include <stdbool.h>
#include <stdio.h>
#include <stddef.h>

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

/* Tell a running server that domains/ changed (users, aliases, domains)
 * and print which happened; never fails.  cli/cli_domain.c. */
void cli_notify_server(const char *config_dir);

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

#endif
