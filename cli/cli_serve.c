/* SPDX-License-Identifier: MIT */
/*
 * cli_serve.c - `ortoo serve` and `ortoo reload`: start the daemon
 * (core/server.c), and talk to a running one through its control socket
 * (core/control.h): the socket's path comes from the configuration in one
 * place (control_socket()), and cli_control_call() and cli_notify_server()
 * (the reload after `user` and `domain` changes) are the ways the CLI
 * reaches the daemon.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "core/config.h"
#include "core/control.h"
#include "core/server.h"

#define CLI_CONTROL_TIMEOUT_MS 60000

int cli_no_args(const char *cmd, int argc, char **argv, const char *usage)
{
    if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        fputs(usage, stdout);
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "ortoo %s: unexpected argument '%s'\n", cmd, argv[1]);
        fputs(usage, stderr);
        return 2;
    }
    return -1;
}

int cli_serve(const char *config_dir, int argc, char **argv)
{
    static const char usage[] =
        "usage: ortoo [-c DIR] serve\n"
        "\n"
        "Run the mail server in the foreground (systemd: Type=notify).  Started as root,\n"
        "it binds its ports, loads its certificates, then runs as [server] user.\n"
        "SIGHUP or 'ortoo reload' re-read the configuration, certificates and users;\n"
        "SIGTERM stops it gracefully.\n";
    int rc = cli_no_args("serve", argc, argv, usage);
    return rc >= 0 ? rc : server_run(config_dir);
}

static void print_line(const char *text, void *arg)
{
    printf("%s\n", text);
}

/* Load config_dir's configuration and write the path of its server's control
 * socket into path.  Returns the configuration (owned by the caller), or NULL
 * with err set. */
static struct config *control_socket(const char *config_dir, char *path, size_t cap, char *err,
                                     size_t errlen)
{
    struct config *cfg = NULL;

    if (config_load(config_dir, &cfg, err, errlen) < 0)
        return NULL;
    snprintf(path, cap, "%s/%s", cfg->spool, CONTROL_SOCKET_NAME);
    return cfg;
}

int cli_control_call(const char *config_dir, const char *what, const char *request,
                     control_line_cb on_line, void *arg, char *status, size_t statuslen)
{
    char err[512], path[4200];
    struct config *cfg = control_socket(config_dir, path, sizeof(path), err, sizeof(err));

    if (cfg == NULL) {
        fprintf(stderr, "ortoo %s: %s\n", what, err);
        return -1;
    }
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

static void skip_line(const char *text, void *arg)
{
}

/*
 * The one place the CLI tells the daemon about a change to domains/: the
 * control socket's `reload` (configuration, certificates, users, aliases),
 * answered once every reactor uses the new tables.  The daemon also watches
 * domains/ with inotify, so when it cannot be asked the change still
 * applies.  Prints what happened; never fails the command.
 */
void cli_notify_server(const char *config_dir)
{
    char err[512], path[4200], status[2048];
    struct config *cfg = control_socket(config_dir, path, sizeof(path), err, sizeof(err));

    if (cfg == NULL) {
        printf("no server configuration (%s): takes effect at start\n", err);
        return;
    }
    config_free(cfg);
    int rc = control_call(path, "reload", CLI_CONTROL_TIMEOUT_MS, skip_line, NULL, status,
                          sizeof(status));
    if (rc == 0)
        printf("the running server reloaded\n");
    else if (rc == 1)
        printf("the running server could not reload (%s); it keeps what it had\n", status);
    else if (rc == -ENOENT || rc == -ECONNREFUSED)
        printf("no server running: takes effect at start\n");
    else
        printf("could not reach the running server (%s); it picks up changes to domains/ by "
               "itself\n",
               rc == -EACCES || rc == -EPERM ? "permission denied" : status);
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

    int rc = cli_no_args("reload", argc, argv, usage);
    if (rc >= 0)
        return rc;
    rc = cli_control_call(config_dir, "reload", "reload", NULL, NULL, status, sizeof(status));
    if (rc == 0) {
        printf("%s\n", status);
        return 0;
    }
    if (rc == 1)
        fprintf(stderr, "ortoo reload: failed: %s\n", status);
    return 1;
}
