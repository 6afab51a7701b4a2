/* SPDX-License-Identifier: MIT */
/*
 * cli_serve.c - `ortoo serve` and `ortoo reload`: start the daemon
 * (core/server.c), and talk to a running one through its control socket
 * (core/control.h): cli_control_call() is the one way the CLI reaches the
 * daemon, for `reload` today and for the queue and stats commands to come.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "core/config.h"
#include "core/control.h"
#include "core/server.h"

#define CLI_CONTROL_TIMEOUT_MS 60000

int cli_serve(const char *config_dir, int argc, char **argv)
{
    static const char usage[] =
        "usage: ortoo [-c DIR] serve\n"
        "\n"
        "Run the mail server in the foreground (systemd: Type=notify).  Started as root,\n"
        "it binds its ports, loads its certificates, then runs as [server] user.\n"
        "SIGHUP or 'ortoo reload' re-read the configuration, certificates and users;\n"
        "SIGTERM stops it gracefully.\n";
    if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        fputs(usage, stdout);
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "ortoo serve: unexpected argument '%s'\n", argv[1]);
        fputs(usage, stderr);
        return 2;
    }
    return server_run(config_dir);
}

static void print_line(const char *text, void *arg)
{
    printf("%s\n", text);
}

int cli_control_call(const char *config_dir, const char *what, const char *request,
                     control_line_cb on_line, void *arg, char *status, size_t statuslen)
{
    char err[512], path[4200];
    struct config *cfg = NULL;

    if (config_load(config_dir, &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "ortoo %s: %s\n", what, err);
        return -1;
    }
    snprintf(path, sizeof(path), "%s/%s", cfg->spool, CONTROL_SOCKET_NAME);
    const char *group = cfg->control_group != NULL ? cfg->control_group : cfg->user;
    int rc = control_call(path, request, CLI_CONTROL_TIMEOUT_MS,
                          on_line != NULL ? on_line : print_line, arg, status, statuslen);
    fflush(stdout);
    if (rc == -ENOENT || rc == -ECONNREFUSED)
        fprintf(stderr, "ortoo %s: the server is not running (nothing answers on %s)\n", what,
                path);
    else if (rc == -EACCES || rc == -EPERM)
        fprintf(stderr,
                "ortoo %s: permission denied on %s: run as root, as the server's user, or "
                "as a member of group '%s' ([server] control_group)\n",
                what, path, group);
    else if (rc < 0)
        fprintf(stderr, "ortoo %s: %s\n", what, status);
    config_free(cfg);
    return rc < 0 ? -1 : rc;
}

int cli_reload(const char *config_dir, int argc, char **argv)
{
    static const char usage[] =
        "usage: ortoo [-c DIR] reload\n"
        "\n"
        "Ask the running server to re-read ortoo.conf, the certificates and the users,\n"
        "and wait until every thread uses them.  Exits 0 when everything was reloaded,\n"
        "1 with the server's reason when something was not (the server then keeps\n"
        "serving with what it had) or when no server is running.  Settings that need\n"
        "a restart (listeners, reactors, spool, user) are named.\n";
    char status[2048];

    if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        fputs(usage, stdout);
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "ortoo reload: unexpected argument '%s'\n", argv[1]);
        fputs(usage, stderr);
        return 2;
    }
    int rc = cli_control_call(config_dir, "reload", "reload", NULL, NULL, status, sizeof(status));
    if (rc == 0) {
        printf("%s\n", status);
        return 0;
    }
    if (rc == 1)
        fprintf(stderr, "ortoo reload: failed: %s\n", status);
    return 1;
}
