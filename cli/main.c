/* SPDX-License-Identifier: MIT */
/*
 * main.c - entry point of the single ortoo binary.
 *
 * Parses the global options that come before the subcommand (-c DIR, -v,
 * -h/--help, --version), picks the configuration directory (-c, else
 * $ORTOO_CONFIG, else /etc/ortoo), sets up logging, and hands the rest of
 * argv to one of the cli_* functions declared in cli/cli.h.  Each of them
 * returns the process exit status.  Invoked under the name "sendmail" the
 * binary will one day take sendmail's flags; for now it says so and fails.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "io/log.h"

#ifndef ORTOO_VERSION
#define ORTOO_VERSION "0.1.0-dev"
#endif

#define DEFAULT_CONFIG_DIR "/etc/ortoo"

/* One subcommand: its name, its entry point and a line of help. */
struct subcommand {
    const char *name;
    int (*run)(const char *config_dir, int argc, char **argv);
    const char *help;
};

static const struct subcommand subcommands[] = {
    { "serve", cli_serve, "run the mail server" },
    { "init",  cli_init,  "write a ready config directory: init DOMAIN [--dev]" },
    { "user",  cli_user,  "manage users: user add|del|list|check" },
    { "domain", cli_domain, "local domains: domain add|del|list" },
    { "send",  cli_send,  "send a test message: send --server HOST:PORT --from F --to T" },
    { "queue", cli_queue, "inspect the queue: queue list [--json]" },
    { "reload", cli_reload, "reload certificates and users in the running server" },
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ortoo [-c DIR] [-v] COMMAND [ARGS...]\n"
            "       ortoo -h | --help | --version\n"
            "\n"
            "global options:\n"
            "  -c DIR     configuration directory (default: $ORTOO_CONFIG, else %s)\n"
            "  -v         debug logging\n"
            "  -h         this help\n"
            "\n"
            "commands:\n",
            DEFAULT_CONFIG_DIR);
    for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
        fprintf(f, "  %-6s     %s\n", subcommands[i].name, subcommands[i].help);
    fprintf(f, "\nRun 'ortoo COMMAND -h' for the options of a command.\n");
}

/* The last path component of argv[0]. */
static const char *prog_basename(const char *argv0)
{
    if (argv0 == NULL)
        return "ortoo";
    const char *slash = strrchr(argv0, '/');
    return slash ? slash + 1 : argv0;
}

int main(int argc, char **argv)
{
    const char *config_dir = NULL;
    enum log_level level = LOG_LVL_INFO;
    int i;

    if (strcmp(prog_basename(argc > 0 ? argv[0] : NULL), "sendmail") == 0) {
        fprintf(stderr, "sendmail mode not implemented yet\n");
        return 1;
    }

    /* Global options stop at the first word that is not one: the subcommand. */
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-')
            break;
        if (strcmp(a, "-c") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "ortoo: -c needs a directory\n");
                usage(stderr);
                return 2;
            }
            config_dir = argv[++i];
        } else if (strncmp(a, "-c", 2) == 0 && a[2] != '\0') {
            config_dir = a + 2;
        } else if (strcmp(a, "-v") == 0) {
            level = LOG_LVL_DEBUG;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--version") == 0) {
            printf("ortoo %s\n", ORTOO_VERSION);
            return 0;
        } else if (strcmp(a, "--") == 0) {
            i++;
            break;
        } else {
            fprintf(stderr, "ortoo: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (i >= argc) {
        fprintf(stderr, "ortoo: no command given\n");
        usage(stderr);
        return 2;
    }
    if (config_dir == NULL || config_dir[0] == '\0') {
        const char *env = getenv("ORTOO_CONFIG");
        config_dir = (env != NULL && env[0] != '\0') ? env : DEFAULT_CONFIG_DIR;
    }

    log_init("ortoo", level);

    for (size_t k = 0; k < sizeof subcommands / sizeof subcommands[0]; k++) {
        if (strcmp(argv[i], subcommands[k].name) == 0)
            return subcommands[k].run(config_dir, argc - i, argv + i);
    }
    fprintf(stderr, "ortoo: unknown command '%s'\n", argv[i]);
    usage(stderr);
    return 2;
}
