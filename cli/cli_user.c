/* SPDX-License-Identifier: MIT */
/*
 * cli_user.c - `ortoo user add|del|list|check`: managing the users of the
 * local domains (see users.h for the files it edits).
 *
 *   ortoo user add ADDRESS [--password-stdin]    add a user or set a password
 *   ortoo user del ADDRESS                       remove a user
 *   ortoo user list [DOMAIN]                     list users, sorted
 *   ortoo user check ADDRESS [--password-stdin]  test a password
 *
 * Passwords are read from the terminal with echo off (twice for add), or as
 * one line from stdin with --password-stdin (for scripts).  Every buffer that
 * held a password is wiped before it is released.  The domain must be
 * local already (`ortoo domain add`); "*@domain" is not a user but the
 * catch-all alias.  After add and del the running server is told
 * (cli_notify_server).  Exit status: 0 ok, 1 failure (including "password
 * WRONG" and "no such user"), 2 usage error.
 */
#include "cli/cli.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <termios.h>
#include <unistd.h>

#include "core/users.h"

#define PW_MAX 256 /* what struct auth_req can carry */

static const char usage_text[] =
    "usage: ortoo user add ADDRESS [--password-stdin]\n"
    "       ortoo user del ADDRESS\n"
    "       ortoo user list [DOMAIN]\n"
    "       ortoo user check ADDRESS [--password-stdin]\n";

static int usage(const char *why)
{
    if (why != NULL)
        fprintf(stderr, "ortoo user: %s\n", why);
    fputs(usage_text, stderr);
    return 2;
}

/* local@domain with a dot-atom local part (RFC 5322 3.2.3 atext, plus UTF-8
 * octets as RFC 6531 allows), at most 64 octets (RFC 5321 4.5.3.1.1); not
 * '/' (the name is a Maildir directory) nor '*' (see wildcard_hint). */
static bool addr_ok(const char *a)
{
    const char *at = strrchr(a, '@');
    size_t llen;

    if (at == NULL)
        return false;
    llen = (size_t)(at - a);
    if (llen == 0 || llen > 64 || a[0] == '.' || a[llen - 1] == '.')
        return false;
    for (size_t i = 0; i < llen; i++) {
        unsigned char c = (unsigned char)a[i];
        if (c == '.' && a[i + 1] == '.')
            return false;
        if (!isalnum(c) && c < 0x80 && strchr(".!#$%&'+-=?^_`{|}~", c) == NULL)
            return false;
    }
    return users_domain_valid(at + 1, strlen(at + 1));
}

/*
 * Read one line from fd into buf (at most cap - 1 bytes), without its
 * trailing "\n" or "\r\n".  Reads byte by byte so nothing past the line is
 * consumed.  Returns 0, -1 at EOF before any byte or on error, -2 when the
 * line is longer than cap - 1 (the rest of the line is consumed).
 */
static int read_line(int fd, char *buf, size_t cap, size_t *len)
{
    size_t n = 0;
    bool any = false, toolong = false;
    char c;

    for (;;) {
        ssize_t r = read(fd, &c, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (!any)
                return -1;
            break;
        }
        any = true;
        if (c == '\n')
            break;
        if (n + 1 < cap)
            buf[n++] = c;
        else
            toolong = true;
    }
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    buf[n] = '\0';
    *len = n;
    c = 0;
    return toolong ? -2 : 0;
}

/* Prompt on the terminal (stdin) with echo off and read one line. */
static int prompt_tty(const char *prompt, char *buf, size_t cap, size_t *len)
{
    struct termios old, noecho;
    int r;

    fputs(prompt, stderr);
    fflush(stderr);
    if (tcgetattr(STDIN_FILENO, &old) < 0)
        return -1;
    noecho = old;
    noecho.c_lflag &= ~(tcflag_t)ECHO;
    noecho.c_lflag |= ECHONL;
    if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &noecho) < 0)
        return -1;
    r = read_line(STDIN_FILENO, buf, cap, len);
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
    return r;
}

/*
 * Get a password into pw[PW_MAX + 2]: one line from stdin, or from the
 * terminal (asked twice when confirm).  Prints its own error; returns 0, or
 * the exit status to return.
 */
static int get_password(bool from_stdin, bool confirm, char *pw, size_t *len)
{
    char again[PW_MAX + 2];
    size_t alen = 0;
    int r, ret = 1;

    if (!from_stdin && !isatty(STDIN_FILENO)) {
        fprintf(stderr, "ortoo user: stdin is not a terminal; use --password-stdin\n");
        return 2;
    }
    r = from_stdin ? read_line(STDIN_FILENO, pw, PW_MAX + 2, len)
                   : prompt_tty("Password: ", pw, PW_MAX + 2, len);
    if (r == -2 || (r == 0 && *len > PW_MAX)) {
        fprintf(stderr, "ortoo user: password too long (at most %d bytes)\n", PW_MAX);
        goto fail;
    }
    if (r < 0 || *len == 0) {
        fprintf(stderr, "ortoo user: empty password refused\n");
        goto fail;
    }
    if (memchr(pw, '\0', *len) != NULL) {
        fprintf(stderr, "ortoo user: password contains a NUL byte\n");
        goto fail;
    }
    if (!from_stdin && confirm) {
        r = prompt_tty("Repeat password: ", again, sizeof(again), &alen);
        if (r != 0 || alen != *len || sodium_memcmp(again, pw, alen) != 0) {
            fprintf(stderr, "ortoo user: passwords do not match\n");
            goto fail;
        }
    }
    sodium_memzero(again, sizeof(again));
    return 0;
fail:
    sodium_memzero(again, sizeof(again));
    sodium_memzero(pw, PW_MAX + 2);
    *len = 0;
    return ret;
}

/* Parse "ADDRESS [--password-stdin]" style arguments.  Returns 0, -1 on a
 * usage error (printed), 1 after printing the help (-h). */
static int parse_args(int argc, char **argv, bool allow_stdin, const char **pos,
                      int maxpos, int *npos, bool *pw_stdin)
{
    *npos = 0;
    *pw_stdin = false;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            fputs(usage_text, stdout);
            return 1;
        }
        if (allow_stdin && strcmp(argv[i], "--password-stdin") == 0) {
            *pw_stdin = true;
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "ortoo user %s: unknown option %s\n", argv[1], argv[i]);
            return -1;
        } else if (*npos == maxpos) {
            fprintf(stderr, "ortoo user %s: unexpected argument %s\n", argv[1], argv[i]);
            return -1;
        } else {
            pos[(*npos)++] = argv[i];
        }
    }
    return 0;
}

/* A name with '*' is someone trying to make a catch-all: say how. */
static bool wildcard_hint(const char *sub, const char *addr)
{
    const char *at = strrchr(addr, '@');
    if (at == NULL || memchr(addr, '*', (size_t)(at - addr)) == NULL)
        return false;
    fprintf(stderr,
            "ortoo user %s: '%s' is not a user name. A catch-all is an alias: put\n"
            "  *: you%s\n"
            "in domains/%s/aliases (any other name then goes to you%s).\n",
            sub, addr, at, at + 1, at);
    return true;
}

static int cmd_add(const char *config_dir, const char *addr, bool pw_stdin)
{
    char pw[PW_MAX + 2], hash[128], err[512], dir[4096];
    const char *domain = strrchr(addr, '@') + 1;
    size_t len = 0;
    int r;

    if (!pw_stdin && !isatty(STDIN_FILENO)) {
        fprintf(stderr, "ortoo user: stdin is not a terminal; use --password-stdin\n");
        return 2;
    }
    /* Before the password prompt: a typo in the domain must not make a
     * new local domain (it would take that domain's mail). */
    r = users_domain_dir(config_dir, domain, dir, sizeof(dir));
    if (r < 0) {
        fprintf(stderr, "ortoo user add: %s/domains: %s\n", config_dir, strerror(errno));
        return 1;
    }
    if (r > 0) {
        fprintf(stderr,
                "ortoo user add: %s is not a local domain; if it should be, first run:\n"
                "  ortoo domain add %s\n",
                domain, domain);
        return 1;
    }

    r = get_password(pw_stdin, true, pw, &len);
    if (r != 0)
        return r;
    r = users_hash_password(pw, len, hash);
    sodium_memzero(pw, sizeof(pw));
    if (r < 0) {
        fprintf(stderr, "ortoo user add: hashing the password failed (out of memory?)\n");
        return 1;
    }
    if (users_file_set(config_dir, addr, hash, err, sizeof(err)) < 0) {
        fprintf(stderr, "ortoo user add: %s\n", err);
        return 1;
    }
    printf("user %s: password set\n", addr);
    cli_notify_server(config_dir);
    return 0;
}

static int cmd_del(const char *config_dir, const char *addr)
{
    char err[512];
    int r = users_file_del(config_dir, addr, err, sizeof(err));

    if (r < 0) {
        fprintf(stderr, "ortoo user del: %s\n", err);
        return 1;
    }
    if (r == 1) {
        fprintf(stderr, "ortoo user del: no such user %s\n", addr);
        return 1;
    }
    printf("user %s: deleted\n", addr);
    cli_notify_server(config_dir);
    return 0;
}

static int cmd_check(const char *config_dir, const char *addr, bool pw_stdin)
{
    char pw[PW_MAX + 2], err[512];
    struct users *u;
    const char *hash;
    size_t len = 0;
    bool ok;
    int r;

    if (users_load(config_dir, &u, err, sizeof(err)) < 0) {
        fprintf(stderr, "ortoo user check: %s\n", err);
        return 1;
    }
    hash = users_hash(u, addr, strlen(addr));
    if (hash == NULL) {
        users_free(u);
        printf("no such user\n");
        return 1;
    }
    r = get_password(pw_stdin, false, pw, &len);
    if (r != 0) {
        users_free(u);
        return r;
    }
    ok = users_verify_password(hash, pw, len);
    sodium_memzero(pw, sizeof(pw));
    users_free(u);
    printf("password %s\n", ok ? "OK" : "WRONG");
    return ok ? 0 : 1;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Append the addresses of one domain's users file to *list (users_load has
 * already checked the syntax). */
static int collect(const char *path, const char *domain, char ***list, size_t *n, size_t *cap)
{
    FILE *f = fopen(path, "re");
    char *line = NULL;
    size_t linecap = 0;
    ssize_t len;

    if (f == NULL)
        return errno == ENOENT ? 0 : -1;
    while ((len = getline(&line, &linecap, f)) >= 0) {
        char *p = line, *colon, *at, *addr;

        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '#' || (colon = strchr(p, ':')) == NULL)
            continue;
        while (colon > p && (colon[-1] == ' ' || colon[-1] == '\t'))
            colon--;
        *colon = '\0';
        at = strrchr(p, '@');
        if (at == NULL)
            continue;
        *at = '\0';
        if (asprintf(&addr, "%s@%s", p, domain) < 0)
            goto fail;
        if (*n == *cap) {
            size_t ncap = *cap ? *cap * 2 : 32;
            char **l = realloc(*list, ncap * sizeof(*l));
            if (l == NULL) {
                free(addr);
                goto fail;
            }
            *list = l;
            *cap = ncap;
        }
        (*list)[(*n)++] = addr;
    }
    free(line);
    fclose(f);
    return 0;
fail:
    free(line);
    fclose(f);
    return -1;
}

static int cmd_list(const char *config_dir, const char *domain)
{
    char err[512], path[PATH_MAX], dom[256];
    struct users *u;
    char **list = NULL;
    size_t n = 0, cap = 0;
    DIR *dir = NULL;
    struct dirent *de;
    int ret = 1;

    if (domain != NULL) {
        if (!users_domain_valid(domain, strlen(domain))) {
            fprintf(stderr, "ortoo user list: invalid domain %s\n", domain);
            return 2;
        }
        for (size_t i = 0; i <= strlen(domain); i++)
            dom[i] = (char)tolower((unsigned char)domain[i]);
    }
    if (users_load(config_dir, &u, err, sizeof(err)) < 0) {
        fprintf(stderr, "ortoo user list: %s\n", err);
        return 1;
    }
    if (domain != NULL && !users_is_local_domain(u, dom, strlen(dom))) {
        fprintf(stderr, "ortoo user list: %s is not a local domain\n", domain);
        goto fail;
    }
    snprintf(path, sizeof(path), "%s/domains", config_dir);
    dir = opendir(path);
    if (dir == NULL) {
        ret = errno == ENOENT ? 0 : 1; /* no domains, no users */
        if (ret)
            fprintf(stderr, "ortoo user list: %s: %s\n", path, strerror(errno));
        goto fail;
    }
    while ((de = readdir(dir)) != NULL) {
        char lc[256];
        size_t len = strlen(de->d_name);

        if (de->d_name[0] == '.' || len >= sizeof(lc))
            continue;
        for (size_t i = 0; i <= len; i++)
            lc[i] = (char)tolower((unsigned char)de->d_name[i]);
        if (!users_is_local_domain(u, lc, len) || (domain != NULL && strcmp(lc, dom) != 0))
            continue;
        snprintf(path, sizeof(path), "%s/domains/%s/users", config_dir, de->d_name);
        if (collect(path, lc, &list, &n, &cap) < 0) {
            fprintf(stderr, "ortoo user list: %s: %s\n", path, strerror(errno));
            goto fail;
        }
    }
    if (n > 0)
        qsort(list, n, sizeof(*list), cmp_str);
    for (size_t i = 0; i < n; i++)
        printf("%s\n", list[i]);
    ret = 0;
fail:
    if (dir != NULL)
        closedir(dir);
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
    users_free(u);
    return ret;
}

int cli_user(const char *config_dir, int argc, char **argv)
{
    const char *pos[1] = {NULL};
    int npos, ret;
    bool pw_stdin;
    const char *sub;

    if (argc < 2)
        return usage(NULL);
    sub = argv[1];
    if (strcmp(sub, "-h") == 0 || strcmp(sub, "--help") == 0 || strcmp(sub, "help") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (strcmp(sub, "add") != 0 && strcmp(sub, "del") != 0 && strcmp(sub, "list") != 0 &&
        strcmp(sub, "check") != 0) {
        fprintf(stderr, "ortoo user: unknown command %s\n", sub);
        return usage(NULL);
    }
    ret = parse_args(argc, argv, strcmp(sub, "add") == 0 || strcmp(sub, "check") == 0, pos, 1,
                     &npos, &pw_stdin);
    if (ret > 0)
        return 0; /* -h */
    if (ret < 0)
        return usage(NULL);
    if (strcmp(sub, "list") == 0) {
        ret = cmd_list(config_dir, pos[0]);
    } else if (npos != 1) {
        fprintf(stderr, "ortoo user %s: missing ADDRESS\n", sub);
        return usage(NULL);
    } else if (wildcard_hint(sub, pos[0])) {
        return 2;
    } else if (!addr_ok(pos[0])) {
        fprintf(stderr, "ortoo user %s: invalid address %s (expected local@domain; for a "
                        "forward or a catch-all, see domains/<domain>/aliases)\n",
                sub, pos[0]);
        return 2;
    } else if (strcmp(sub, "add") == 0) {
        ret = cmd_add(config_dir, pos[0], pw_stdin);
    } else if (strcmp(sub, "del") == 0) {
        ret = cmd_del(config_dir, pos[0]);
    } else {
        ret = cmd_check(config_dir, pos[0], pw_stdin);
    }
    fflush(stdout);
    return ret;
}
