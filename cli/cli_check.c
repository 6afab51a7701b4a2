/* SPDX-License-Identifier: MIT */
/*
 * cli_check.c - `ortoo check`: is this configuration directory one the
 * daemon will start with, and reload with?  Reads everything the daemon
 * reads, never talks to it, and prints one line per problem:
 *
 *   FILE[:LINE]: error: what is wrong        (exit status 1)
 *   FILE: warning: what may bite later       (exit status unchanged)
 *
 * What it checks: ortoo.conf (the daemon's own parser), the users files,
 * every certificate pair under cert_dir (PEM parse, key matches the leaf,
 * validity dates, the host name it is for, self-signed), the aliases files
 * (syntax, in the /etc/aliases form), the DKIM keys (PEM parse, RSA >= 2048
 * bits or Ed25519), and, run as root, that [server] user exists and can read
 * every one of those files: the daemon loads them as root at start but
 * re-reads them as that user at each reload, so a key readable only by root
 * would make the first certificate renewal fail.
 *
 * The certificate checks go through OpenSSL directly so that each file gets
 * its own message; the daemon's loader (tls_server_new) runs last as a
 * cross-check, so "check passes" means "the daemon would load this".
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "cli/cli.h"
#include "core/config.h"
#include "core/psl.h"
#include "core/users.h"
#include "io/tls.h"

#define CHECK_MAX_FILES 4096

/* The run: counts, and every file the daemon reads (for the read test). */
struct check {
    unsigned errors, warnings;
    char *files[CHECK_MAX_FILES];
    size_t nfiles;
};

static void report(struct check *ck, bool error, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void report(struct check *ck, bool error, const char *where, const char *fmt, ...)
{
    va_list ap;
    printf("%s: %s: ", where, error ? "error" : "warning");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    if (error)
        ck->errors++;
    else
        ck->warnings++;
}

static void note_file(struct check *ck, const char *path)
{
    if (ck->nfiles < CHECK_MAX_FILES)
        ck->files[ck->nfiles++] = strdup(path);
}

/* [checks]: the Public Suffix List the server reads at start (DMARC). */
static void check_psl(struct check *ck, const struct config *cfg)
{
    char err[512];
    if (!cfg->checks.enabled)
        return;
    struct psl *psl = psl_load(cfg->checks.public_suffix_list, err, sizeof(err));
    if (psl == NULL) {
        bool set = cfg->checks.public_suffix_list_set;
        report(ck, set, cfg->file, "[checks] %s%s", err,
               set ? "" : " (DMARC then takes the last two labels as the organizational domain; "
                          "install the publicsuffix package)");
        return;
    }
    psl_free(psl);
}

/* The last OpenSSL error as text. */
static const char *ssl_err(void)
{
    static char buf[256];
    unsigned long e = ERR_get_error();
    if (e == 0)
        return "no PEM data";
    ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    return buf;
}

/* ---- certificates ---- */

/* Days from now to t (negative: in the past). */
static int days_until(const ASN1_TIME *t)
{
    int days = 0, secs = 0;
    if (!ASN1_TIME_diff(&days, &secs, NULL, t))
        return 0;
    return days;
}

/* The DER form of x (owned), or NULL. */
static unsigned char *cert_der(X509 *x, size_t *len)
{
    unsigned char *der = NULL;
    int n = i2d_X509(x, &der);
    if (n <= 0) {
        ERR_clear_error();
        return NULL;
    }
    *len = (size_t)n;
    return der;
}

void cli_cert_inspect(const char *cert_dir, const char *host, struct cli_cert *c,
                      cli_cert_note_cb note, void *arg)
{
    char msg[PATH_MAX + 256];
#define NOTE(error, file, ...)                                                                     \
    do {                                                                                           \
        snprintf(msg, sizeof(msg), __VA_ARGS__);                                                   \
        note(arg, error, file, msg);                                                               \
    } while (0)

    memset(c, 0, sizeof(*c));
    snprintf(c->chain_path, sizeof(c->chain_path), "%s/%s/fullchain.pem", cert_dir, host);
    snprintf(c->key_path, sizeof(c->key_path), "%s/%s/privkey.pem", cert_dir, host);

    FILE *f = fopen(c->chain_path, "re");
    if (f == NULL) {
        NOTE(true, c->chain_path, "%s", strerror(errno));
        return;
    }
    X509 *leaf = PEM_read_X509(f, NULL, NULL, NULL);
    if (leaf == NULL) {
        NOTE(true, c->chain_path, "no certificate: %s", ssl_err());
        fclose(f);
        return;
    }
    c->has_leaf = true;
    c->nchain = 1;
    c->der[0] = cert_der(leaf, &c->der_len[0]);
    X509 *more;
    while ((more = PEM_read_X509(f, NULL, NULL, NULL)) != NULL) {
        if (c->nchain < CLI_CERT_CHAIN_MAX)
            c->der[c->nchain] = cert_der(more, &c->der_len[c->nchain]);
        c->nchain++;
        X509_free(more);
    }
    ERR_clear_error(); /* the end of the file reads as an error */
    fclose(f);

    c->days_left = days_until(X509_get0_notAfter(leaf));
    c->expired = X509_cmp_current_time(X509_get0_notAfter(leaf)) <= 0;
    c->not_yet_valid = X509_cmp_current_time(X509_get0_notBefore(leaf)) > 0;
    c->name_ok = X509_check_host(leaf, host, strlen(host), 0, NULL) == 1;
    c->self_signed = X509_NAME_cmp(X509_get_subject_name(leaf), X509_get_issuer_name(leaf)) == 0 &&
                     X509_verify(leaf, X509_get0_pubkey(leaf)) == 1;
    ERR_clear_error();
    if (c->expired)
        NOTE(true, c->chain_path, "the certificate expired %d days ago", -c->days_left);
    else if (c->days_left < CLI_CERT_EXPIRY_WARN_DAYS)
        NOTE(false, c->chain_path, "the certificate expires in %d days", c->days_left);
    if (c->not_yet_valid)
        NOTE(true, c->chain_path, "the certificate is not valid yet");
    if (!c->name_ok)
        NOTE(false, c->chain_path, "the certificate is not for %s (directory name)", host);
    if (c->self_signed)
        NOTE(false, c->chain_path,
             "self-signed: servers that verify certificates will refuse it; install one "
             "from acme.sh or certbot");
    else if (c->nchain == 1)
        NOTE(false, c->chain_path,
             "holds only the leaf certificate: clients need the intermediate too (use the "
             "fullchain file)");

    f = fopen(c->key_path, "re");
    if (f == NULL) {
        NOTE(true, c->key_path, "%s", strerror(errno));
        X509_free(leaf);
        return;
    }
    EVP_PKEY *key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (key == NULL) {
        NOTE(true, c->key_path, "no private key: %s", ssl_err());
    } else if (X509_check_private_key(leaf, key) != 1) {
        ERR_clear_error();
        c->has_key = true;
        NOTE(true, c->key_path, "does not match the certificate in %s", c->chain_path);
    } else {
        c->has_key = true;
        c->key_matches = true;
    }
    EVP_PKEY_free(key);
    X509_free(leaf);
#undef NOTE
}

void cli_cert_clear(struct cli_cert *c)
{
    for (size_t i = 0; i < CLI_CERT_CHAIN_MAX; i++)
        OPENSSL_free(c->der[i]);
    memset(c, 0, sizeof(*c));
}

static void on_cert_note(void *arg, bool error, const char *file, const char *msg)
{
    report(arg, error, file, "%s", msg);
}

static void check_cert_dir(struct check *ck, const struct config *cfg, const char *host)
{
    struct cli_cert c;
    cli_cert_inspect(cfg->cert_dir, host, &c, on_cert_note, ck);
    note_file(ck, c.chain_path);
    note_file(ck, c.key_path);
    cli_cert_clear(&c);
}

static bool need_tls(const struct config *cfg)
{
    for (size_t i = 0; i < cfg->nlistens; i++)
        if (cfg->listens[i].role != ROLE_SMTP)
            return true;
    return false;
}

static void check_certs(struct check *ck, const struct config *cfg)
{
    DIR *d = opendir(cfg->cert_dir);
    unsigned n = 0;
    bool has_host = false;
    unsigned before = ck->errors;

    if (d == NULL) {
        report(ck, need_tls(cfg), cfg->cert_dir, "%s%s", strerror(errno),
               need_tls(cfg) ? "" : " (STARTTLS will be off)");
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        char p[PATH_MAX];
        struct stat st;
        if (de->d_name[0] == '.')
            continue;
        snprintf(p, sizeof(p), "%s/%s", cfg->cert_dir, de->d_name);
        if (stat(p, &st) < 0 || !S_ISDIR(st.st_mode))
            continue;
        check_cert_dir(ck, cfg, de->d_name);
        if (strcasecmp(de->d_name, cfg->hostname) == 0)
            has_host = true;
        n++;
    }
    closedir(d);
    if (n == 0) {
        report(ck, need_tls(cfg), cfg->cert_dir,
               "no certificate directory (expected %s/fullchain.pem and privkey.pem)%s",
               cfg->hostname, need_tls(cfg) ? "" : "; STARTTLS will be off");
        return;
    }
    if (!has_host)
        report(ck, false, cfg->cert_dir, "no directory for the server's name %s",
               cfg->hostname);
    if (ck->errors == before) {
        char err[512];
        struct tls_server *tls = tls_server_new(cfg->cert_dir, cfg->hostname, err, sizeof(err));
        if (tls == NULL)
            report(ck, true, cfg->cert_dir, "%s", err);
        else
            tls_server_free(tls);
    }
}

/* ---- domains: users, aliases, DKIM keys ---- */

/* An alias name or a bare target: a dot-atom local part, or "*". */
static bool alias_name_ok(const char *s, size_t len)
{
    if (len == 1 && s[0] == '*')
        return true;
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= 0x20 || ch == 0x7f || strchr("\"(),:;<>[\\]", ch) != NULL)
            return false;
    }
    return true;
}

/* One entry "name: t1, t2, ..." (continuations joined).  Returns an error
 * text or NULL. */
static const char *alias_entry_error(char *e)
{
    char *colon = strchr(e, ':');
    if (colon == NULL)
        return "expected 'name: target, ...'";
    char *name = e, *end = colon;
    while (end > name && isspace((unsigned char)end[-1]))
        end--;
    if (!alias_name_ok(name, (size_t)(end - name)))
        return "bad alias name";
    char *p = colon + 1;
    unsigned targets = 0;
    for (;;) {
        while (isspace((unsigned char)*p))
            p++;
        if (*p == '\0')
            break;
        char *t = p;
        if (*p == '"') {
            for (p++; *p != '\0' && *p != '"'; p++)
                if (*p == '\\' && p[1] != '\0')
                    p++;
            if (*p != '"')
                return "unterminated quoted target";
            p++;
        } else {
            while (*p != '\0' && *p != ',')
                p++;
        }
        char *te = p;
        while (te > t && isspace((unsigned char)te[-1]))
            te--;
        if (te == t)
            return "empty target";
        if (*t == '/' || strncmp(t, ":include:", 9) == 0)
            return "file targets and :include: are not supported";
        if (*t != '"' && *t != '|') {
            for (char *q = t; q < te; q++)
                if (isspace((unsigned char)*q))
                    return "blank inside a target (separate targets with commas)";
        }
        targets++;
        while (isspace((unsigned char)*p))
            p++;
        if (*p == ',')
            p++;
        else if (*p != '\0')
            return "expected ',' between targets";
    }
    return targets == 0 ? "no target" : NULL;
}

static void check_aliases(struct check *ck, const char *path)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        if (errno != ENOENT)
            report(ck, true, path, "%s", strerror(errno));
        return;
    }
    note_file(ck, path);
    char *line = NULL, entry[8192] = "", where[PATH_MAX + 16];
    size_t cap = 0;
    ssize_t n;
    int lineno = 0, entry_line = 0;
    bool overlong = false;

    for (;;) {
        n = getline(&line, &cap, f);
        if (n >= 0) {
            lineno++;
            while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
                line[--n] = '\0';
        }
        bool cont = n > 0 && (line[0] == ' ' || line[0] == '\t');
        bool blank = n >= 0 && strspn(line, " \t") == (size_t)n;
        if (n >= 0 && (blank || line[strspn(line, " \t")] == '#'))
            continue;
        if (n >= 0 && cont && entry_line > 0) {
            size_t el = strlen(entry);
            if (el + (size_t)n + 2 < sizeof(entry)) {
                entry[el] = ' ';
                memcpy(entry + el + 1, line, (size_t)n + 1);
            } else {
                overlong = true;
            }
            continue;
        }
        if (entry_line > 0) { /* the previous entry is complete */
            snprintf(where, sizeof(where), "%s:%d", path, entry_line);
            const char *why = overlong ? "entry too long" : alias_entry_error(entry);
            if (why != NULL)
                report(ck, true, where, "%s", why);
        }
        if (n < 0)
            break;
        if (cont) {
            snprintf(where, sizeof(where), "%s:%d", path, lineno);
            report(ck, true, where, "indented line without an entry to continue");
            entry_line = 0;
            continue;
        }
        snprintf(entry, sizeof(entry), "%s", line);
        overlong = (size_t)n >= sizeof(entry);
        entry_line = lineno;
    }
    free(line);
    fclose(f);
}

static void check_dkim(struct check *ck, const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return; /* no keys for this domain */
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (len < 5 || strcmp(de->d_name + len - 4, ".key") != 0)
            continue;
        char path[PATH_MAX + 256], txt[PATH_MAX + 256];
        if (strlen(dir) >= PATH_MAX || len > 255)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        snprintf(txt, sizeof(txt), "%s/%.*s.txt", dir, (int)(len - 4), de->d_name);
        note_file(ck, path);
        FILE *f = fopen(path, "re");
        if (f == NULL) {
            report(ck, true, path, "%s", strerror(errno));
            continue;
        }
        EVP_PKEY *key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
        if (key == NULL) {
            report(ck, true, path, "not a PEM private key: %s", ssl_err());
            continue;
        }
        int type = EVP_PKEY_base_id(key), bits = EVP_PKEY_bits(key);
        if (type == EVP_PKEY_RSA && bits < 1024)
            report(ck, true, path, "RSA key of %d bits: too short to sign (RFC 8301)", bits);
        else if (type == EVP_PKEY_RSA && bits < 2048)
            report(ck, false, path, "RSA key of %d bits: use 2048 bits or more", bits);
        else if (type != EVP_PKEY_RSA && type != EVP_PKEY_ED25519)
            report(ck, true, path, "a %s key: DKIM signs with RSA or Ed25519",
                   OBJ_nid2sn(type));
        EVP_PKEY_free(key);
        if (access(txt, F_OK) < 0)
            report(ck, false, path, "no %s next to it (the DNS record to publish)", txt);
    }
    closedir(d);
}

static void check_domains(struct check *ck, const struct config *cfg)
{
    char err[1024], path[PATH_MAX];
    struct users *u = NULL;

    if (users_load(cfg->dir, &u, err, sizeof(err)) < 0) {
        /* users.c says "FILE:LINE: what": keep the one format. */
        char *sep = strstr(err, ": ");
        if (err[0] == '/' && sep != NULL) {
            *sep = '\0';
            report(ck, true, err, "%s", sep + 2);
        } else {
            report(ck, true, cfg->dir, "users: %s", err);
        }
    } else {
        users_free(u);
    }
    snprintf(path, sizeof(path), "%s/domains", cfg->dir);
    DIR *d = opendir(path);
    if (d == NULL) {
        report(ck, false, path, "%s: no local domains (this server only relays)",
               strerror(errno));
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/domains/%s/users", cfg->dir, de->d_name);
        if (access(path, F_OK) == 0)
            note_file(ck, path);
        snprintf(path, sizeof(path), "%s/domains/%s/aliases", cfg->dir, de->d_name);
        check_aliases(ck, path);
        snprintf(path, sizeof(path), "%s/domains/%s/dkim", cfg->dir, de->d_name);
        check_dkim(ck, path);
    }
    closedir(d);
}

/* ---- privileges ---- */

/*
 * Run as root: can [server] user read every file noted?  A child process
 * becomes that user and tries; the exact answer (modes, ACLs, directories
 * on the way), which reasoning about mode bits would only approximate.
 */
static void check_readable(struct check *ck, const struct config *cfg)
{
    if (geteuid() != 0)
        return;
    if (strcmp(cfg->user, "root") == 0) {
        report(ck, false, cfg->file, "[server] user = root: the daemon will run as root");
        return;
    }
    struct passwd *pw = getpwnam(cfg->user);
    if (pw == NULL) {
        report(ck, true, cfg->file,
               "[server] user '%s' does not exist: the daemon refuses to start as root "
               "(useradd --system --home-dir %s --shell /usr/sbin/nologin %s)",
               cfg->user, CONFIG_DEFAULT_SPOOL, cfg->user);
        return;
    }
    if (cfg->control_group != NULL && getgrnam(cfg->control_group) == NULL)
        report(ck, true, cfg->file, "[server] control_group '%s' does not exist",
               cfg->control_group);
    int fds[2];
    if (pipe(fds) < 0)
        return;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return;
    }
    if (pid == 0) {
        close(fds[0]);
        if (initgroups(pw->pw_name, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 ||
            setuid(pw->pw_uid) < 0)
            _exit(2);
        FILE *out = fdopen(fds[1], "w");
        for (size_t i = 0; i < ck->nfiles && out != NULL; i++) {
            FILE *f = ck->files[i] != NULL ? fopen(ck->files[i], "re") : NULL;
            if (f == NULL && ck->files[i] != NULL)
                fprintf(out, "%zu %s\n", i, strerror(errno));
            else if (f != NULL)
                fclose(f);
        }
        if (out != NULL)
            fclose(out);
        _exit(0);
    }
    close(fds[1]);
    FILE *in = fdopen(fds[0], "r");
    char line[512];
    while (in != NULL && fgets(line, sizeof(line), in) != NULL) {
        char *sp = strchr(line, ' ');
        size_t i = strtoul(line, NULL, 10);
        if (sp == NULL || i >= ck->nfiles)
            continue;
        sp[strcspn(sp, "\n")] = '\0';
        report(ck, true, ck->files[i],
               "not readable by user %s (%s): a reload would fail; e.g. chgrp %s and "
               "chmod g+r (and g+x on its directories)",
               cfg->user, sp + 1, pw->pw_name);
    }
    if (in != NULL)
        fclose(in);
    int st;
    waitpid(pid, &st, 0);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 2)
        report(ck, true, cfg->file, "cannot switch to user %s to test what it can read",
               cfg->user);
}

int cli_check(const char *config_dir, int argc, char **argv)
{
    static const char usage[] =
        "usage: ortoo [-c DIR] check\n"
        "\n"
        "Check the configuration directory without touching the running server:\n"
        "ortoo.conf, users, certificates (pair, dates, names), aliases, DKIM keys, and,\n"
        "run as root, that [server] user can read them (as every reload does).\n"
        "Prints FILE[:LINE]: error|warning: ...; exits 1 if there is an error.\n";
    struct check ck = {0};
    struct config *cfg = NULL;
    char err[1024];

    int rc = cli_no_args("check", argc, argv, usage);
    if (rc >= 0)
        return rc;
    if (config_load(config_dir, &cfg, err, sizeof(err)) < 0) {
        /* The parser's message is already "file:line: what". */
        printf("%s\n", err);
        printf("1 error\n");
        return 1;
    }
    note_file(&ck, cfg->file);
    check_domains(&ck, cfg);
    check_certs(&ck, cfg);
    check_psl(&ck, cfg);
    check_readable(&ck, cfg);
    struct stat st;
    if (stat(cfg->spool, &st) < 0)
        printf("%s: note: the spool does not exist yet (ortoo serve makes it)\n", cfg->spool);

    if (ck.errors == 0)
        printf("ok: %s (%u warning%s)\n", cfg->dir, ck.warnings, ck.warnings == 1 ? "" : "s");
    else
        printf("%u error%s, %u warning%s\n", ck.errors, ck.errors == 1 ? "" : "s",
               ck.warnings, ck.warnings == 1 ? "" : "s");
    for (size_t i = 0; i < ck.nfiles; i++)
        free(ck.files[i]);
    config_free(cfg);
    fflush(stdout);
    return ck.errors ? 1 : 0;
}
