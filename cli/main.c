/* SPDX-License-Identifier: MIT */
/*
 * main.c - entry point of the single ortoo binary.
 *
 * Parses the global options that come before the subcommand (-c DIR, -v,
 * -h/--help, --version), picks the configuration directory (-c, else
 * $ORTOO_CONFIG, else /etc/ortoo), sets up logging, and hands the rest of
 * argv to one of the cli_* functions declared in cli/cli.h.  Each of them
 * returns the process exit status.  Invoked under the name "sendmail" (the
 * /usr/sbin/sendmail link), the binary is the sendmail command line
 * (cli/cli_sendmail.c) and takes sendmail's flags instead.
 *
 * The table below is also the command synopsis that `ortoo --help` prints;
 * the README's command list is checked against it by a test
 * (tests/e2e/test_cli.py), so the two cannot drift apart.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "core/config.h"
#include "core/version.h"
#include "io/log.h"

/* One subcommand: its name, its entry point, a line of help, its synopsis
 * lines, and whether it needs an existing configuration directory. */
struct subcommand {
    const char *name;
    int (*run)(const char *config_dir, int argc, char **argv);
    const char *help;
    const char *synopsis[4];
    bool needs_config;
};

static const struct subcommand subcommands[] = {
    {"init", cli_init, "write a ready configuration directory",
     {"ortoo [-c DIR] init DOMAIN [--hostname H] [--dev] [--if-missing]"}, false},
    {"check", cli_check, "check the configuration, certificates, users, aliases and keys",
     {"ortoo [-c DIR] check"}, true},
    {"serve", cli_serve, "run the mail server", {"ortoo [-c DIR] serve"}, true},
    {"reload", cli_reload, "reload the running server (configuration, certificates, users)",
     {"ortoo [-c DIR] reload"}, true},
    {"stats", cli_stats, "the running server's figures (as its metrics endpoint has them)",
     {"ortoo [-c DIR] stats [--prometheus]"}, true},
    {"user", cli_user, "manage the users of the local domains",
     {"ortoo [-c DIR] user add|del|check ADDRESS [--password-stdin]",
      "ortoo [-c DIR] user list [DOMAIN]"},
     true},
    {"domain", cli_domain, "manage the local domains",
     {"ortoo [-c DIR] domain add|del|list [DOMAIN] [--force]"}, true},
    {"queue", cli_queue, "inspect the queue; flush, delete or bounce messages",
     {"ortoo [-c DIR] queue list [--json]", "ortoo [-c DIR] queue show ID [--raw]",
      "ortoo [-c DIR] queue flush [ID|DOMAIN]", "ortoo [-c DIR] queue delete|bounce ID"},
     true},
    {"dkim", cli_dkim, "DKIM keys: make one, print the DNS records",
     {"ortoo [-c DIR] dkim keygen DOMAIN [--selector S] [--algo rsa|ed25519] [--force]",
      "ortoo [-c DIR] dkim show DOMAIN"},
     true},
    {"doctor", cli_doctor, "check DNS records, certificate and port 25 for a domain",
     {"ortoo [-c DIR] doctor DOMAIN [--ip ADDR ...] [--json] [--timeout S]",
      "           [--no-port25 | --port25-target HOST:PORT]"},
     true},
    {"lookup", cli_lookup, "look a name up as ortoo sees it (DNSSEC state included)",
     {"ortoo [-c DIR] lookup [--timeout S] MX|A|AAAA|TLSA|PTR|TXT NAME"}, true},
    {"send", cli_send, "send a test message through an SMTP server",
     {"ortoo send --server HOST:PORT [--starttls|--tls] [--insecure] "
      "[--user U --password-stdin]",
      "           --from F --to T [--subject S] [--body-file F]"},
     false},
    {"sendmail", cli_sendmail, "sendmail for applications and cron (also as 'sendmail')",
     {"ortoo [-c DIR] sendmail [-t] [-i] [-f SENDER] [-F NAME] [-bm|-bs|-bp] [RCPT...]"},
     false},
};
#define NSUBCOMMANDS (sizeof subcommands / sizeof subcommands[0])

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
            CONFIG_DEFAULT_DIR);
    for (size_t i = 0; i < NSUBCOMMANDS; i++)
        fprintf(f, "  %-9s  %s\n", subcommands[i].name, subcommands[i].help);
    fprintf(f, "\nsynopsis:\n");
    for (size_t i = 0; i < NSUBCOMMANDS; i++)
        for (size_t k = 0; k < 4 && subcommands[i].synopsis[k] != NULL; k++)
            fprintf(f, "  %s\n", subcommands[i].synopsis[k]);
    fprintf(f, "\nRun 'ortoo COMMAND -h' for the options of a command.  Invoked as\n"
               "'sendmail', ortoo takes sendmail's flags (sendmail -h).\n");
}

/* The last path component of argv[0]. */
static const char *prog_basename(const char *argv0)
{
    if (argv0 == NULL)
        return "ortoo";
    const char *slash = strrchr(argv0, '/');
    return slash ? slash + 1 : argv0;
}

static bool wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
            return true;
    return false;
}

/*
 * A command that reads the configuration gets a clear word when there is
 * none, rather than an empty answer: the directory or its ortoo.conf is
 * missing.  Returns 0 or the exit status.
 */
static int config_dir_check(const char *dir, bool from_default)
{
    struct stat st;
    char conf[4200];

    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr,
                "ortoo: the configuration directory %s %s.\n"
                "Create one with: ortoo -c %s init DOMAIN%s\n",
                dir, errno == ENOENT || S_ISDIR(st.st_mode) ? "does not exist" : "is not usable",
                dir, from_default ? "  (or name another with -c DIR or $ORTOO_CONFIG)" : "");
        return 1;
    }
    snprintf(conf, sizeof(conf), "%s/ortoo.conf", dir);
    if (stat(conf, &st) < 0 && errno == ENOENT) {
        fprintf(stderr,
                "ortoo: %s has no ortoo.conf: it is not an ortoo configuration directory.\n"
                "Create one with: ortoo -c %s init DOMAIN\n",
                dir, dir);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *config_dir = NULL;
    enum log_level level = LOG_LVL_INFO;
    int i;

    if (strcmp(prog_basename(argc > 0 ? argv[0] : NULL), "sendmail") == 0) {
        const char *env = getenv("ORTOO_CONFIG");
        log_init("sendmail", LOG_LVL_WARN);
        return cli_sendmail(env != NULL && env[0] != '\0' ? env : CONFIG_DEFAULT_DIR, argc,
                            argv);
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
    bool from_default = false;
    if (config_dir != NULL && config_dir[0] != '\0') {
        cli_config_explicit = true;
    } else {
        const char *env = getenv("ORTOO_CONFIG");
        from_default = env == NULL || env[0] == '\0';
        config_dir = from_default ? CONFIG_DEFAULT_DIR : env;
    }

    log_init("ortoo", level);

    for (size_t k = 0; k < NSUBCOMMANDS; k++) {
        const struct subcommand *sc = &subcommands[k];
        if (strcmp(argv[i], sc->name) != 0)
            continue;
        if (sc->needs_config && !wants_help(argc - i, argv + i)) {
            int rc = config_dir_check(config_dir, from_default);
            if (rc != 0)
                return rc;
        }
        return sc->run(config_dir, argc - i, argv + i);
    }
    if (strcmp(argv[i], "help") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "ortoo: unknown command '%s'\n", argv[i]);
    usage(stderr);
    return 2;
}
