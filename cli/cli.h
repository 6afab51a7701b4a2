/* SPDX-License-Identifier: MIT */
/*
 * cli.h - the subcommands of the single ortoo binary.  main() (cli/main.c)
 * parses the global options (-c DIR, ORTOO_CONFIG, default /etc/ortoo; -v)
 * and dispatches; each cli_* function gets the config directory and the
 * arguments after the subcommand name (argv[0] is the subcommand), prints
 * what it does, and returns the process exit status (0 ok, 1 failure,
 * 2 usage error).  Errors are one clear line on stderr.
 */
#ifndef ORTOO_CLI_H
#define ORTOO_CLI_H

#include <stdbool.h>
#include <stdio.h>

int cli_serve(const char *config_dir, int argc, char **argv);   /* cli/cli_serve.c */
int cli_init(const char *config_dir, int argc, char **argv);    /* cli/cli_init.c */
int cli_user(const char *config_dir, int argc, char **argv);    /* cli/cli_user.c */
int cli_send(const char *config_dir, int argc, char **argv);    /* cli/cli_send.c */
int cli_queue(const char *config_dir, int argc, char **argv);   /* cli/cli_queue.c */
int cli_reload(const char *config_dir, int argc, char **argv);  /* cli/cli_serve.c */
int cli_lookup(const char *config_dir, int argc, char **argv);  /* cli/cli_lookup.c */
int cli_dkim(const char *config_dir, int argc, char **argv);    /* cli/cli_dkim.c */

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
