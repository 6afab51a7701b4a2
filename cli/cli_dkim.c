/* SPDX-License-Identifier: MIT */
/*
 * cli_dkim.c - `ortoo dkim keygen DOMAIN [--selector S] [--algo rsa|ed25519]
 * [--force]` and `ortoo dkim show DOMAIN`.
 *
 * keygen writes domains/<domain>/dkim/<selector>.key (the private key, PEM,
 * mode 0640 with the config directory's group, like the users files, so that
 * a daemon running as that group can read it and nobody else can) and
 * <selector>.txt (the record as a zone-file line), then prints the TXT
 * record to publish: its name, and its value as quoted strings of at most
 * 255 bytes (RFC 1035 3.3.14; an RSA-2048 record is ~400 bytes).  The key is
 * written to a temporary file, fsync'ed, and linked into place, so an
 * existing key is never overwritten unless --force (then renamed over).
 *
 * show prints the same for every key of the domain, computed from the key
 * files themselves (the .txt files are a convenience, not the truth).
 *
 * The default selector is <algo>-<YYYYMMDD> (rsa-20250101): a new selector
 * per key makes rotation safe, since every key of a domain signs (publish
 * the new record, wait for the DNS, then delete the old key and reload).
 * The running server picks keys up at `ortoo reload` (SIGHUP).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/users.h"
#include "dkim/keys.h"

#define DKIM_DIR_MODE 0750
#define DKIM_KEY_MODE 0640

static void dkim_usage(FILE *f)
{
    fprintf(f,
            "usage: ortoo [-c DIR] dkim keygen DOMAIN [--selector S] [--algo rsa|ed25519] [--force]\n"
            "       ortoo [-c DIR] dkim show DOMAIN\n"
            "\n"
            "  keygen   make a DKIM key for DOMAIN in DIR/domains/DOMAIN/dkim/S.key and print\n"
            "           the TXT record to publish (default: --algo rsa, RSA-2048;\n"
            "           --selector <algo>-<YYYYMMDD>); --force replaces an existing key\n"
            "  show     print the TXT records of DOMAIN's keys again\n"
            "\n"
            "Every key of a domain signs the mail whose From is in that domain (RSA and\n"
            "Ed25519 keys: both signatures).  Run 'ortoo reload' after adding or removing a key.\n");
}

/* Lower-case a domain into out after checking it.  Returns 0 or -1 (printed). */
static int domain_arg(const char *cmd, const char *d, char out[256])
{
    size_t len = strlen(d);
    if (len > 0 && d[len - 1] == '.')
        len--; /* a trailing root dot */
    if (len >= 256 || !users_domain_valid(d, len)) {
        fprintf(stderr, "ortoo dkim %s: '%s' is not a domain name\n", cmd, d);
        return -1;
    }
    for (size_t i = 0; i < len; i++)
        out[i] = (char)((d[i] >= 'A' && d[i] <= 'Z') ? d[i] + 32 : d[i]);
    out[len] = '\0';
    return 0;
}

/* Print one record: where it comes from, its name and its quoted value. */
static int record_print(FILE *f, const char *indent, const char *domain, const char *selector,
                        enum dkim_algo algo, const char *value)
{
    char *quoted = dkim_txt_quote(value);
    if (quoted == NULL)
        return -1;
    fprintf(f, "%sDKIM (%s, selector %s): TXT record\n", indent,
            algo == DKIM_ALGO_RSA ? "RSA" : "Ed25519", selector);
    fprintf(f, "%s  name:  %s._domainkey.%s\n", indent, selector, domain);
    fprintf(f, "%s  value: %s\n", indent, quoted);
    free(quoted);
    return 0;
}

int cli_dkim_print_records(const char *config_dir, const char *domain, FILE *f,
                           const char *indent)
{
    struct dkim_keys *ks = NULL;
    char err[512];
    const struct dkim_key *k;
    size_t n = 0;

    if (dkim_keys_load(config_dir, domain, &ks, err, sizeof(err)) < 0) {
        fprintf(stderr, "ortoo dkim: %s\n", err);
        return -1;
    }
    for (size_t i = 0; (k = dkim_keys_get(ks, domain, strlen(domain), i)) != NULL; i++) {
        n++;
        if (f == NULL)
            continue; /* only counting */
        char *rec = dkim_key_record(k);
        if (rec == NULL || record_print(f, indent, domain, dkim_key_selector(k),
                                        dkim_key_algo(k), rec) < 0) {
            free(rec);
            dkim_keys_free(ks);
            fprintf(stderr, "ortoo dkim: out of memory\n");
            return -1;
        }
        free(rec);
    }
    dkim_keys_free(ks);
    return (int)n;
}

/* mkdir taking the group of the config directory; EEXIST is fine. */
static int dir_make(const char *path, gid_t gid)
{
    if (mkdir(path, DKIM_DIR_MODE) == 0) {
        (void)!chown(path, (uid_t)-1, gid);
        return 1;
    }
    if (errno == EEXIST)
        return 0;
    fprintf(stderr, "ortoo dkim: cannot create %s: %s\n", path, strerror(errno));
    return -1;
}

int cli_dkim_keygen(const char *config_dir, const char *domain, const char *selector, bool ed25519,
                    bool force, FILE *out)
{
    enum dkim_algo algo = ed25519 ? DKIM_ALGO_ED25519 : DKIM_ALGO_RSA;
    char sel[DKIM_SELECTOR_MAX + 1], dir[PATH_MAX], key[PATH_MAX], txt[PATH_MAX], err[256];
    char *pem = NULL, *rec = NULL, *quoted = NULL, *line = NULL;
    struct stat cst;
    int rc = -1;

    if (selector == NULL) {
        time_t t = time(NULL);
        struct tm tm;
        gmtime_r(&t, &tm);
        snprintf(sel, sizeof(sel), "%s-%04d%02d%02d", dkim_algo_key_type(algo),
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
    } else if (!dkim_selector_valid(selector, strlen(selector))) {
        fprintf(stderr, "ortoo dkim keygen: bad selector '%s': letters, digits, hyphens and "
                "dots, at most %d characters\n", selector, DKIM_SELECTOR_MAX);
        return -1;
    } else {
        snprintf(sel, sizeof(sel), "%s", selector);
    }
    if (stat(config_dir, &cst) < 0) {
        fprintf(stderr, "ortoo dkim keygen: %s: %s\n", config_dir, strerror(errno));
        return -1;
    }
    if (snprintf(dir, sizeof(dir), "%s/domains/%s/dkim", config_dir, domain) >= (int)sizeof(dir) ||
        snprintf(key, sizeof(key), "%s/%s.key", dir, sel) >= (int)sizeof(key) ||
        snprintf(txt, sizeof(txt), "%s/%s.txt", dir, sel) >= (int)sizeof(txt)) {
        fprintf(stderr, "ortoo dkim keygen: path too long\n");
        return -1;
    }
    if (!force && access(key, F_OK) == 0) {
        fprintf(stderr, "ortoo dkim keygen: %s exists; not overwriting it (pass --force to "
                "replace the key, or choose another --selector)\n", key);
        return -1;
    }
    /* domains/ and domains/<domain>/ too: a domain with a key is a local domain. */
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/domains", config_dir);
    int made_domain = 0;
    if (dir_make(path, cst.st_gid) < 0)
        return -1;
    snprintf(path, sizeof(path), "%s/domains/%s", config_dir, domain);
    if ((made_domain = dir_make(path, cst.st_gid)) < 0 || dir_make(dir, cst.st_gid) < 0)
        return -1;
    if (dkim_keygen(algo, &pem, &rec, err, sizeof(err)) < 0) {
        fprintf(stderr, "ortoo dkim keygen: %s\n", err);
        return -1;
    }
    quoted = dkim_txt_quote(rec);
    if (quoted == NULL || asprintf(&line, "%s._domainkey.%s. IN TXT %s\n", sel, domain, quoted) < 0) {
        line = NULL;
        fprintf(stderr, "ortoo dkim keygen: out of memory\n");
        goto out;
    }
    int w = cli_file_write("dkim", key, pem, strlen(pem), DKIM_KEY_MODE, cst.st_gid, !force);
    if (w == -EEXIST) {
        fprintf(stderr, "ortoo dkim keygen: %s exists; not overwriting it\n", key);
        goto out;
    }
    if (w < 0 || cli_file_write("dkim", txt, line, strlen(line), DKIM_KEY_MODE, cst.st_gid,
                                false) < 0)
        goto out;
    if (out != NULL) {
        fprintf(out, "Wrote %s (%s) and %s.txt\n", key,
                algo == DKIM_ALGO_RSA ? "RSA-2048" : "Ed25519", sel);
        if (made_domain == 1)
            fprintf(out, "(%s is now a local domain of this server: domains/%s/ was created)\n",
                    domain, domain);
        fprintf(out, "Publish this TXT record in the DNS of %s:\n", domain);
        record_print(out, "", domain, sel, algo, rec);
        fprintf(out, "Then run 'ortoo reload' so that the server signs with it.\n");
    }
    rc = 0;
out:
    if (pem != NULL) {
        memset(pem, 0, strlen(pem));
        free(pem);
    }
    free(rec);
    free(quoted);
    free(line);
    return rc;
}

/* `dkim keygen ...` (argv[0] is "keygen"). */
static int dkim_keygen_cmd(const char *config_dir, int argc, char **argv)
{
    const char *domain = NULL, *selector = NULL, *algo = "rsa";
    bool force = false;
    char dom[256];

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            dkim_usage(stdout);
            return 0;
        } else if (strcmp(a, "--force") == 0) {
            force = true;
        } else if (strcmp(a, "--selector") == 0 || strcmp(a, "--algo") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "ortoo dkim keygen: %s needs a value\n", a);
                return 2;
            }
            *(a[2] == 's' ? &selector : &algo) = argv[++i];
        } else if (strncmp(a, "--selector=", 11) == 0) {
            selector = a + 11;
        } else if (strncmp(a, "--algo=", 7) == 0) {
            algo = a + 7;
        } else if (a[0] == '-') {
            fprintf(stderr, "ortoo dkim keygen: unknown option '%s'\n", a);
            dkim_usage(stderr);
            return 2;
        } else if (domain == NULL) {
            domain = a;
        } else {
            fprintf(stderr, "ortoo dkim keygen: one DOMAIN only ('%s' is extra)\n", a);
            return 2;
        }
    }
    if (domain == NULL) {
        fprintf(stderr, "ortoo dkim keygen: DOMAIN is missing\n");
        dkim_usage(stderr);
        return 2;
    }
    if (strcmp(algo, "rsa") != 0 && strcmp(algo, "ed25519") != 0) {
        fprintf(stderr, "ortoo dkim keygen: --algo must be rsa or ed25519, not '%s'\n", algo);
        return 2;
    }
    if (domain_arg("keygen", domain, dom) < 0)
        return 2;
    if (selector != NULL && !dkim_selector_valid(selector, strlen(selector))) {
        fprintf(stderr, "ortoo dkim keygen: bad selector '%s': letters, digits, hyphens and "
                "dots, at most %d characters\n", selector, DKIM_SELECTOR_MAX);
        return 2;
    }
    return cli_dkim_keygen(config_dir, dom, selector, strcmp(algo, "ed25519") == 0, force,
                           stdout) < 0 ? 1 : 0;
}

/* `dkim show DOMAIN`. */
static int dkim_show_cmd(const char *config_dir, int argc, char **argv)
{
    const char *domain = NULL;
    char dom[256];

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            dkim_usage(stdout);
            return 0;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "ortoo dkim show: unknown option '%s'\n", argv[i]);
            return 2;
        } else if (domain == NULL) {
            domain = argv[i];
        } else {
            fprintf(stderr, "ortoo dkim show: one DOMAIN only ('%s' is extra)\n", argv[i]);
            return 2;
        }
    }
    if (domain == NULL) {
        fprintf(stderr, "ortoo dkim show: DOMAIN is missing\n");
        dkim_usage(stderr);
        return 2;
    }
    if (domain_arg("show", domain, dom) < 0)
        return 2;
    int n = cli_dkim_print_records(config_dir, dom, stdout, "");
    if (n < 0)
        return 1;
    if (n == 0) {
        fprintf(stderr, "ortoo dkim show: %s has no DKIM key (make one with: ortoo dkim keygen %s)\n",
                dom, dom);
        return 1;
    }
    return 0;
}

/*
 * Entry point (see cli.h).  keygen writes under config_dir (blocking: RSA
 * key generation takes a fraction of a second); show only reads.
 */
int cli_dkim(const char *config_dir, int argc, char **argv)
{
    if (argc < 2) {
        dkim_usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "keygen") == 0)
        return dkim_keygen_cmd(config_dir, argc - 1, argv + 1);
    if (strcmp(argv[1], "show") == 0)
        return dkim_show_cmd(config_dir, argc - 1, argv + 1);
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        dkim_usage(stdout);
        return 0;
    }
    fprintf(stderr, "ortoo dkim: unknown command '%s'\n", argv[1]);
    dkim_usage(stderr);
    return 2;
}
