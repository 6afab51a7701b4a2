/* SPDX-License-Identifier: MIT */
/*
 * cli_stats.c - `ortoo stats`: the running server's figures for a person,
 * or in the Prometheus text format with --prometheus.
 *
 * The daemon gathers and renders them (core/stats.c, the `stats` control
 * command), from the same snapshot as its metrics endpoint, so the two
 * always agree; this command only asks through the control socket and
 * prints the lines.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

int cli_stats(const char *config_dir, int argc, char **argv)
{
    static const char usage[] =
        "usage: ortoo [-c DIR] stats [--prometheus]\n"
        "\n"
        "Print the running server's figures: connections, messages received, rejected,\n"
        "delivered, deferred and bounced, the queue, TLS handshakes, DNS lookups, DKIM\n"
        "signatures, AUTH, the spool's group commits and the process.  --prometheus\n"
        "prints them as the metrics endpoint ([listen] metrics) serves them.  The names\n"
        "are explained in docs/metrics.md.\n";
    bool prom = false;
    char status[1024];

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            fputs(usage, stdout);
            return 0;
        }
        if (strcmp(argv[i], "--prometheus") == 0) {
            prom = true;
            continue;
        }
        fprintf(stderr, "ortoo stats: unexpected argument '%s'\n", argv[i]);
        fputs(usage, stderr);
        return 2;
    }
    int rc = cli_control_call(config_dir, "stats", prom ? "stats prometheus" : "stats", NULL,
                              NULL, status, sizeof(status));
    if (rc == 1)
        fprintf(stderr, "ortoo stats: failed: %s\n", status);
    return rc == 0 ? 0 : 1;
}
