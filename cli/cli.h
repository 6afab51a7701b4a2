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

int cli_serve(const char *config_dir, int argc, char **argv);   /* cli/cli_serve.c */
int cli_init(const char *config_dir, int argc, char **argv);    /* cli/cli_init.c */
int cli_user(const char *config_dir, int argc, char **argv);    /* cli/cli_user.c */
int cli_send(const char *config_dir, int argc, char **argv);    /* cli/cli_send.c */
int cli_queue(const char *config_dir, int argc, char **argv);   /* cli/cli_queue.c */
int cli_reload(const char *config_dir, int argc, char **argv);  /* cli/cli_serve.c */
int cli_domain(const char *config_dir, int argc, char **argv);  /* cli/cli_domain.c */

/* Tell a running server that domains/ changed (users, aliases, domains)
 * and print which happened; never fails.  cli/cli_domain.c. */
void cli_notify_server(const char *config_dir);

#endif
