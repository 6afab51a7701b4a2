/* SPDX-License-Identifier: MIT */
/*
 * cli_domain.c - `ortoo domain add|del|list`: which domains are local.
 *
 *   ortoo domain add DOMAIN           make DOMAIN local (domains/DOMAIN/)
 *   ortoo domain del DOMAIN [--force] stop being DOMAIN's MX; only an empty
 *                                     domain unless --force (which deletes
 *                                     its users, aliases and keys)
 *   ortoo domain list                 the local domains, one per line
 *
 * A domain is local exactly when its directory exists (core/users.h); `user
 * add` no longer makes one as a side effect.  Exit status: 0 ok, 1 failure,
 * 2 usage error.
 */
#include "cli/cli.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/users.h"

static const char usage_text[] = "usage: ortoo domain add DOMAIN\n"
                                 "       ortoo domain del DOMAIN [--force]\n"
                                 "       ortoo domain list\n";

static int usage(const char *why)
{
    if (why != NULL)
        fprintf(stderr, "ortoo domain: %s\n", why);
    fputs(usage_text, stderr);
    return 2;
}

static int cmd_add(const char *config_dir, const char *domain)
{
    char err[512];
    int r = users_domain_add(config_dir, domain, err, sizeof(err));

    if (r < 0) {
        fprintf(stderr, "ortoo domain add: %s\n", err);
        return 1;
    }
    if (r == 1) {
        printf("domain %s: already local\n", domain);
        return 0;
    }
    printf("domain %s: added; add users with `ortoo user add you@%s` and aliases in "
           "domains/%s/aliases\n",
           domain, domain, domain);
    cli_notify_server(config_dir);
    return 0;
}

static int cmd_del(const char *config_dir, const char *domain, bool force)
{
    char err[512];
    int r = users_domain_del(config_dir, domain, force, err, sizeof(err));

    if (r < 0) {
        fprintf(stderr, "ortoo domain del: %s\n", err);
        return 1;
    }
    if (r == 1) {
        fprintf(stderr, "ortoo domain del: %s is not a local domain\n", domain);
        return 1;
    }
    if (r == 2) {
        fprintf(stderr, "ortoo domain del: %s (remove them first, or use --force to delete "
                        "everything)\n",
                err);
        return 1;
    }
    printf("domain %s: deleted\n", domain);
    cli_notify_server(config_dir);
    return 0;
}

static int cmd_list(const char *config_dir)
{
    char err[512];
    struct users *u;

    /* The whole table is loaded, so a broken users or aliases file shows. */
    if (users_load(config_dir, &u, err, sizeof(err)) < 0) {
        fprintf(stderr, "ortoo domain list: %s\n", err);
        return 1;
    }
    for (size_t i = 0; i < users_domain_count(u); i++)
        printf("%s\n", users_domain_at(u, i));
    users_free(u);
    return 0;
}

int cli_domain(const char *config_dir, int argc, char **argv)
{
    const char *sub, *domain = NULL;
    char lc[256];
    bool force = false;
    int ret;

    if (argc < 2)
        return usage(NULL);
    sub = argv[1];
    if (strcmp(sub, "-h") == 0 || strcmp(sub, "--help") == 0 || strcmp(sub, "help") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            fputs(usage_text, stdout);
            return 0;
        }
        if (strcmp(argv[i], "--force") == 0 && strcmp(sub, "del") == 0)
            force = true;
        else if (argv[i][0] == '-')
            return usage("unknown option");
        else if (domain == NULL)
            domain = argv[i];
        else
            return usage("one DOMAIN only");
    }
    if (strcmp(sub, "list") == 0) {
        if (domain != NULL)
            return usage("list takes no DOMAIN");
        ret = cmd_list(config_dir);
    } else if (strcmp(sub, "add") == 0 || strcmp(sub, "del") == 0) {
        if (domain == NULL)
            return usage("DOMAIN is missing");
        if (!users_domain_valid(domain, strlen(domain)) || strchr(domain, '.') == NULL) {
            fprintf(stderr, "ortoo domain %s: '%s' is not a domain name (e.g. example.com)\n",
                    sub, domain);
            return 2;
        }
        for (size_t i = 0; i <= strlen(domain); i++)
            lc[i] = (char)tolower((unsigned char)domain[i]);
        domain = lc;
        ret = strcmp(sub, "add") == 0 ? cmd_add(config_dir, domain)
                                      : cmd_del(config_dir, domain, force);
    } else {
        fprintf(stderr, "ortoo domain: unknown command %s\n", sub);
        return usage(NULL);
    }
    fflush(stdout);
    return ret;
}
