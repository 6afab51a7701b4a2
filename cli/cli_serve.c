/* SPDX-License-Identifier: MIT */
/*
 * cli_serve.c - `ortoo serve` and `ortoo reload`: start the daemon
 * (core/server.c) and ask a running one to reload (SIGHUP to the process
 * named by the pid file in the spool).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "core/config.h"
#include "core/server.h"

int cli_serve(const char *config_dir, int argc, char **argv)
{
    if (argc > 1) {
        fprintf(stderr, "usage: ortoo [-c DIR] serve\n");
        return 2;
    }
    return server_run(config_dir);
}

int cli_reload(const char *config_dir, int argc, char **argv)
{
    char err[512];
    struct config *cfg = NULL;
    if (argc > 1) {
        fprintf(stderr, "usage: ortoo [-c DIR] reload\n");
        return 2;
    }
    if (config_load(config_dir, &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "ortoo: %s\n", err);
        return 1;
    }
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", cfg->spool, SERVER_PID_FILE);
    config_free(cfg);
    FILE *f = fopen(path, "r");
    long pid = 0;
    if (f == NULL || fscanf(f, "%ld", &pid) != 1 || pid <= 1) {
        fprintf(stderr, "ortoo: no running server for %s (cannot read %s)\n", config_dir, path);
        if (f != NULL)
            fclose(f);
        return 1;
    }
    fclose(f);
    /* A stale pid file could name another process: check it is ortoo. */
    char comm_path[64], comm[64] = "";
    snprintf(comm_path, sizeof(comm_path), "/proc/%ld/comm", pid);
    FILE *c = fopen(comm_path, "r");
    if (c == NULL || fgets(comm, sizeof(comm), c) == NULL || strncmp(comm, "ortoo", 5) != 0) {
        fprintf(stderr, "ortoo: process %ld from %s is not a running ortoo\n", pid, path);
        if (c != NULL)
            fclose(c);
        return 1;
    }
    fclose(c);
    if (kill((pid_t)pid, SIGHUP) < 0) {
        fprintf(stderr, "ortoo: cannot signal process %ld: %s\n", pid, strerror(errno));
        return 1;
    }
    printf("reload requested (pid %ld): certificates and users\n", pid);
    return 0;
}
