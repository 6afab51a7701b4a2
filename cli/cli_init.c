/* SPDX-License-Identifier: MIT */
/*
 * cli_init.c - `ortoo -c DIR init DOMAIN [--hostname H] [--dev] [--if-missing]`.
 *
 * Writes a configuration directory that `ortoo serve` accepts as it is:
 * ortoo.conf, a self-signed certificate under certs/<H>/ (certgen), the
 * domain's directory with its users and aliases files, an RSA-2048 DKIM key
 * under domains/<DOMAIN>/dkim/ (unless the domain has one), the SRS secret
 * srs.key (0600: the key that signs rewritten senders of forwarded mail);
 * with --dev also the spool directory inside it (a real server's spool is
 * /var/spool/ortoo, made by the daemon or tmpfiles.d).  With --dev the listeners
 * are on loopback high ports and a user dev@DOMAIN is made with a random
 * password, kept in clear in DIR/dev-password (0600) so that `make run` can
 * show it every time.  Then it prints what to do next: how to start, how to
 * add a user, a test `ortoo send` line, and the DNS records to publish
 * (DKIM's among them).
 *
 * ortoo.conf is written last (temp file + fsync + rename): its presence
 * means the directory is complete, so an init that failed half-way can simply
 * be run again.  An existing ortoo.conf is never overwritten.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "cli/cli.h"
#include "core/certgen.h"
#include "core/config.h"
#include "core/users.h"
#include "io/text.h"

#define INIT_DIR_MODE 0750
#define INIT_TOP_DIR_MODE 0755
#define INIT_DEV_PASSWORD_LEN 16
#define INIT_NAME_MAX 253 /* RFC 1035 2.3.4: a name is at most 255 octets on the wire */

/* What the command line asked for. */
struct init_opts {
    const char *dir;        /* config directory, as given */
    char domain[INIT_NAME_MAX + 1];   /* lower-cased */
    char hostname[INIT_NAME_MAX + 1]; /* lower-cased; mail.<domain> or localhost by default */
    bool dev;
    bool if_missing;
};

static void init_usage(FILE *f)
{
    fprintf(f,
            "usage: ortoo [-c DIR] init DOMAIN [--hostname H] [--dev] [--if-missing]\n"
            "\n"
            "Write a ready configuration directory at DIR for mail domain DOMAIN.\n"
            "  --hostname H   the server's name (default: mail.DOMAIN; with --dev: localhost)\n"
            "  --dev          loopback listeners on ports 2525/2587/2465 and a user\n"
            "                 dev@DOMAIN with a random password (kept in DIR/dev-password)\n"
            "  --if-missing   do nothing if DIR/ortoo.conf exists (but print the summary)\n");
}

/*
 * Check a DNS name (io/text.h's host-name syntax) with at least `min_dots`
 * dots.  Lower-cases it into out.  Returns 0 or -1 with the reason in why.
 */
static int name_check(const char *name, unsigned min_dots, char out[INIT_NAME_MAX + 1],
                      const char **why)
{
    size_t len = strlen(name);
    unsigned dots = 0;

    if ((*why = text_hostname_check(name, len)) != NULL)
        return -1;
    for (size_t i = 0; i <= len; i++) {
        dots += name[i] == '.';
        out[i] = (char)tolower((unsigned char)name[i]);
    }
    if (dots < min_dots) {
        *why = "needs at least one dot (e.g. example.com)";
        return -1;
    }
    return 0;
}

/* Parse argv (argv[0] is "init").  Returns 0, or the exit status to use. */
static int init_parse(const char *config_dir, int argc, char **argv, struct init_opts *o)
{
    const char *domain = NULL, *hostname = NULL, *why;

    memset(o, 0, sizeof *o);
    o->dir = config_dir;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            init_usage(stdout);
            return -1;
        } else if (strcmp(a, "--dev") == 0) {
            o->dev = true;
        } else if (strcmp(a, "--if-missing") == 0) {
            o->if_missing = true;
        } else if (strcmp(a, "--hostname") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "ortoo init: --hostname needs a value\n");
                return 2;
            }
            hostname = argv[++i];
        } else if (strncmp(a, "--hostname=", 11) == 0) {
            hostname = a + 11;
        } else if (a[0] == '-') {
            fprintf(stderr, "ortoo init: unknown option '%s'\n", a);
            init_usage(stderr);
            return 2;
        } else if (domain == NULL) {
            domain = a;
        } else {
            fprintf(stderr, "ortoo init: one DOMAIN only ('%s' is extra)\n", a);
            init_usage(stderr);
            return 2;
        }
    }
    if (domain == NULL) {
        fprintf(stderr, "ortoo init: DOMAIN is missing\n");
        init_usage(stderr);
        return 2;
    }
    if (name_check(domain, 1, o->domain, &why) < 0) {
        fprintf(stderr, "ortoo init: bad domain '%s': %s\n", domain, why);
        return 2;
    }
    if (hostname == NULL) {
        if (o->dev) {
            strcpy(o->hostname, "localhost");
        } else if (snprintf(o->hostname, sizeof o->hostname, "mail.%s", o->domain) >=
                   (int)sizeof o->hostname) {
            fprintf(stderr, "ortoo init: domain too long for a mail.DOMAIN hostname\n");
            return 2;
        }
    } else if (name_check(hostname, 0, o->hostname, &why) < 0) {
        fprintf(stderr, "ortoo init: bad hostname '%s': %s\n", hostname, why);
        return 2;
    }
    return 0;
}

/* snprintf a path; -1 (with a message) if it does not fit. */
static int path_fmt(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int path_fmt(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= len) {
        fprintf(stderr, "ortoo init: path too long\n");
        return -1;
    }
    return 0;
}

/* mkdir with mode unless it exists as a directory.  Returns 0 or -1 (printed). */
static int dir_make(const char *path, mode_t mode)
{
    struct stat st;

    if (mkdir(path, mode) == 0) {
        /* umask may have taken bits away; the mode is part of the contract. */
        if (chmod(path, mode) < 0) {
            fprintf(stderr, "ortoo init: chmod %s: %s\n", path, strerror(errno));
            return -1;
        }
        return 0;
    }
    if (errno == EEXIST && stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return 0;
    fprintf(stderr, "ortoo init: cannot create directory %s: %s\n", path,
            errno == EEXIST ? "exists and is not a directory" : strerror(errno));
    return -1;
}

/* mkdir -p: every missing component with mode.  Returns 0 or -1 (printed). */
static int dir_make_parents(const char *path, mode_t mode)
{
    char buf[PATH_MAX];

    if (path_fmt(buf, sizeof buf, "%s", path) < 0)
        return -1;
    for (char *p = buf + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST) {
            fprintf(stderr, "ortoo init: cannot create directory %s: %s\n", buf,
                    strerror(errno));
            return -1;
        }
        *p = '/';
    }
    return dir_make(buf, mode);
}

static bool file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int cli_file_write(const char *cmd, const char *path, const char *data, size_t len, mode_t mode,
                   gid_t gid, bool exclusive)
{
    char tmp[PATH_MAX], dir[PATH_MAX];
    int fd = -1;

    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path) >= sizeof tmp) {
        errno = ENAMETOOLONG;
        goto fail_noclean;
    }
    fd = mkostemp(tmp, O_CLOEXEC); /* 0600 from the start: a key is never exposed */
    if (fd < 0)
        goto fail_noclean;
    if (gid != (gid_t)-1)
        (void)!fchown(fd, (uid_t)-1, gid);
    if (fchmod(fd, mode) < 0)
        goto fail;
    for (size_t off = 0; off < len;) {
        ssize_t n = write(fd, data + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            goto fail;
        off += (size_t)n;
    }
    if (fsync(fd) < 0)
        goto fail;
    int rc = close(fd);
    fd = -1;
    if (rc < 0)
        goto fail;
    if (exclusive) {
        /* link(2), not rename: a file that appeared meanwhile is kept. */
        rc = link(tmp, path);
        int e = errno;
        unlink(tmp);
        if (rc < 0 && e == EEXIST)
            return -EEXIST;
        errno = e;
        if (rc < 0)
            goto fail_noclean;
    } else if (rename(tmp, path) < 0) {
        goto fail;
    }
    /* The new name is durable once the directory is synced. */
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash != NULL) {
        *slash = '\0';
        int dfd = open(slash == dir ? "/" : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            (void)!fsync(dfd);
            close(dfd);
        }
    }
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
fail_noclean:
    fprintf(stderr, "ortoo %s: cannot write %s: %s\n", cmd, path, strerror(errno));
    return -1;
}

/* cli_file_write for init: no group change; an existing file is an error
 * (printed) when exclusive. */
static int file_write(const char *path, const char *data, size_t len, mode_t mode,
                      bool exclusive)
{
    int rc = cli_file_write("init", path, data, len, mode, (gid_t)-1, exclusive);
    if (rc == -EEXIST)
        fprintf(stderr, "ortoo init: cannot write %s: %s\n", path, strerror(EEXIST));
    return rc < 0 ? -1 : 0;
}

/* The listener lines of ortoo.conf for this mode. */
static void listen_lines(bool dev, const char **smtp, const char **sub, const char **subs)
{
    if (dev) {
        *smtp = "127.0.0.1:2525";
        *sub = "127.0.0.1:2587";
        *subs = "127.0.0.1:2465";
    } else {
        *smtp = "0.0.0.0:25, [::]:25";
        *sub = "0.0.0.0:587, [::]:587";
        *subs = "0.0.0.0:465, [::]:465";
    }
}

/*
 * Where the queue goes and who the daemon runs as.  A real server keeps its
 * queue in /var/spool/ortoo (the config directory holds no state) and runs
 * as the ortoo account; a --dev directory keeps its spool inside (var/dev/
 * spool for `make run`) and runs as whoever runs it (root included, so that
 * `make run` works as root on a fresh machine).
 */
static void server_lines(bool dev, char *spool, size_t slen, char *user, size_t ulen)
{
    struct passwd *pw = dev ? getpwuid(geteuid()) : NULL;

    snprintf(spool, slen, "%s", dev ? "spool" : CONFIG_DEFAULT_SPOOL);
    snprintf(user, ulen, "%s", pw != NULL ? pw->pw_name : CONFIG_DEFAULT_USER);
}

/* Render ortoo.conf into buf.  Returns its length or -1 if it does not fit. */
static int conf_render(const struct init_opts *o, char *buf, size_t len)
{
    const char *smtp, *sub, *subs;
    char spool[64], user[64];

    listen_lines(o->dev, &smtp, &sub, &subs);
    server_lines(o->dev, spool, sizeof spool, user, sizeof user);
    int n = snprintf(buf, len,
                     "# ortoo configuration - see docs/config.md\n"
                     "[server]\n"
                     "hostname = %s\n"
                     "spool = %s\n"
                     "user = %s\n"
                     "reactors = auto\n"
                     "io = auto\n"
                     "max_message_size = 25M\n"
                     "\n"
                     "[listen]\n"
                     "smtp = %s\n"
                     "submission = %s\n"
                     "submissions = %s\n"
                     "\n"
                     "[tls]\n"
                     "cert_dir = certs\n"
                     "%s",
                     o->hostname, spool, user, smtp, sub, subs,
                     o->dev ? "\n[local]\n"
                              "; local users' Maildirs, inside this directory (a server's\n"
                              "; default is /var/vmail)\n"
                              "maildir_root = maildir\n"
                            : "");
    return (n < 0 || (size_t)n >= len) ? -1 : n;
}

/* 16 characters of [A-Za-z0-9], uniformly drawn (randombytes_uniform). */
static void dev_password_make(char out[INIT_DEV_PASSWORD_LEN + 1])
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

    for (size_t i = 0; i < INIT_DEV_PASSWORD_LEN; i++)
        out[i] = alphabet[randombytes_uniform(sizeof alphabet - 1)];
    out[INIT_DEV_PASSWORD_LEN] = '\0';
}

/* Read the first line of DIR/dev-password into out.  Returns 0 or -1. */
static int dev_password_read(const char *dir, char *out, size_t len)
{
    char path[PATH_MAX];
    FILE *f;

    if (snprintf(path, sizeof path, "%s/dev-password", dir) >= (int)sizeof path)
        return -1;
    f = fopen(path, "re");
    if (f == NULL)
        return -1;
    if (fgets(out, (int)len, f) == NULL) {
        fclose(f);
        return -1;
    }
    fclose(f);
    out[strcspn(out, "\r\n")] = '\0';
    return out[0] != '\0' ? 0 : -1;
}

/* The certificate pair: made unless both files are already there. */
static int certs_make(const struct init_opts *o, bool *made)
{
    char dir[PATH_MAX], chain[PATH_MAX], key[PATH_MAX], err[256];

    *made = false;
    if (path_fmt(dir, sizeof dir, "%s/certs", o->dir) < 0 || dir_make(dir, INIT_DIR_MODE) < 0)
        return -1;
    if (path_fmt(dir, sizeof dir, "%s/certs/%s", o->dir, o->hostname) < 0 ||
        path_fmt(chain, sizeof chain, "%s/fullchain.pem", dir) < 0 ||
        path_fmt(key, sizeof key, "%s/privkey.pem", dir) < 0)
        return -1;
    if (dir_make(dir, INIT_DIR_MODE) < 0)
        return -1;
    if (file_exists(chain) && file_exists(key))
        return 0;
    err[0] = '\0';
    if (certgen_selfsigned(dir, o->hostname, err, sizeof err) != 0) {
        fprintf(stderr, "ortoo init: cannot make a certificate for %s: %s\n", o->hostname,
                err[0] ? err : "failed");
        return -1;
    }
    *made = true;
    return 0;
}

/* domains/<domain>/users with a comment header, kept if it exists. */
static int users_make(const struct init_opts *o)
{
    char path[PATH_MAX], header[512];

    if (path_fmt(path, sizeof path, "%s/domains", o->dir) < 0 ||
        dir_make(path, INIT_DIR_MODE) < 0)
        return -1;
    char err[512];
    if (users_domain_add(o->dir, o->domain, err, sizeof err) < 0) {
        fprintf(stderr, "ortoo init: %s\n", err);
        return -1;
    }
    if (path_fmt(path, sizeof path, "%s/domains/%s/users", o->dir, o->domain) < 0)
        return -1;
    if (file_exists(path))
        return 0;
    int n = snprintf(header, sizeof header,
                     "# Users of %s: one \"address:argon2id-hash\" per line.\n"
                     "# Manage them with: ortoo user add|del|list|check\n",
                     o->domain);
    return file_write(path, header, (size_t)n, 0640, false);
}

/* srs.key: 32 random bytes in base64, readable by the owner only. */
static int srs_key_make(const struct init_opts *o)
{
    unsigned char key[32];
    char b64[sodium_base64_ENCODED_LEN(32, sodium_base64_VARIANT_ORIGINAL)];
    char path[PATH_MAX], text[256];

    if (path_fmt(path, sizeof path, "%s/srs.key", o->dir) < 0)
        return -1;
    if (file_exists(path))
        return 0;
    randombytes_buf(key, sizeof key);
    sodium_bin2base64(b64, sizeof b64, key, sizeof key, sodium_base64_VARIANT_ORIGINAL);
    int n = snprintf(text, sizeof text,
                     "# SRS secret: signs the rewritten senders of forwarded mail. Keep it\n"
                     "# private. To rotate, put a new line first and keep the old one below\n"
                     "# for a few weeks (bounces to old addresses still verify).\n"
                     "%s\n",
                     b64);
    int rc = file_write(path, text, (size_t)n, 0600, false);
    sodium_memzero(key, sizeof key);
    sodium_memzero(b64, sizeof b64);
    sodium_memzero(text, sizeof text);
    return rc;
}

/* dev@<domain> with a fresh random password, hashed in users, clear in dev-password. */
static int dev_user_make(const struct init_opts *o)
{
    char pw[INIT_DEV_PASSWORD_LEN + 1], line[INIT_DEV_PASSWORD_LEN + 2];
    char hash[128], addr[INIT_NAME_MAX + 8], path[PATH_MAX], err[256];
    int rc = -1;

    dev_password_make(pw);
    snprintf(addr, sizeof addr, "dev@%s", o->domain);
    if (users_hash_password(pw, strlen(pw), hash) != 0) {
        fprintf(stderr, "ortoo init: cannot hash the dev password (out of memory?)\n");
        goto out;
    }
    err[0] = '\0';
    if (users_file_set(o->dir, addr, hash, err, sizeof err) != 0) {
        fprintf(stderr, "ortoo init: cannot add %s: %s\n", addr, err[0] ? err : "failed");
        goto out;
    }
    if (path_fmt(path, sizeof path, "%s/dev-password", o->dir) < 0)
        goto out;
    snprintf(line, sizeof line, "%s\n", pw);
    if (file_write(path, line, strlen(line), 0600, false) < 0)
        goto out;
    rc = 0;
out:
    sodium_memzero(pw, sizeof pw);
    sodium_memzero(line, sizeof line);
    return rc;
}

/* What to do next: start, users, a test message, DNS records. */
static void summary_print(const struct init_opts *o, const char *absdir, bool existed)
{
    char pw[128];
    bool has_pw = dev_password_read(o->dir, pw, sizeof pw) == 0;

    if (existed)
        printf("%s/ortoo.conf exists; nothing changed.\n", absdir);
    else
        printf("Wrote the configuration for %s (server name %s) to %s\n", o->domain,
               o->hostname, absdir);
    if (has_pw) {
        printf("\nDev user: dev@%s  password: %s\n", o->domain, pw);
        sodium_memzero(pw, sizeof pw);
    }
    printf("\nNext steps:\n");
    if (!o->dev)
        printf("  Let the server's account read the configuration, and check it:\n"
               "    chgrp -R ortoo %s && chmod -R g+rX %s\n"
               "    ortoo -c %s check\n",
               absdir, absdir, absdir);
    printf("  Start the server%s:\n"
           "    ortoo -c %s serve\n"
           "  Add a user (asks for the password):\n"
           "    ortoo -c %s user add you@%s\n",
           o->dev ? "" : " (or: systemctl enable --now ortoo)", absdir, absdir, o->domain);
    if (o->dev)
        printf("  Send a test message through submission (self-signed cert: --insecure):\n"
               "    ortoo send --server 127.0.0.1:2587 --starttls --insecure \\\n"
               "      --user dev@%s --password-stdin --from dev@%s --to dev@%s"
               " < %s/dev-password\n",
               o->domain, o->domain, o->domain, absdir);
    else
        printf("  Send a test message through submission:\n"
               "    ortoo send --server %s:587 --starttls --user you@%s --password-stdin \\\n"
               "      --from you@%s --to someone@example.com\n"
               "    (add --insecure while the certificate is the self-signed one)\n",
               o->hostname, o->domain, o->domain);
    printf("\nThe certificate in %s/certs/%s/ is self-signed: replace fullchain.pem and\n"
           "privkey.pem with real ones (acme.sh --install-cert or certbot) and reload.\n",
           absdir, o->hostname);
    if (o->dev)
        printf("\nOn a real server (init without --dev), the DNS records to publish for %s:\n",
               o->domain);
    else
        printf("\nDNS records to publish for %s:\n", o->domain);
    printf("  %s. MX 10 %s.\n"
           "  %s. A <your server's IPv4>\n"
           "  %s. AAAA <your server's IPv6, if it has one>\n"
           "  %s. TXT \"v=spf1 mx -all\"\n"
           "  _dmarc.%s. TXT \"v=DMARC1; p=quarantine; rua=mailto:postmaster@%s\"\n"
           "  and a reverse DNS (PTR) record for the server's address naming %s\n"
           "  (set at your hosting provider).\n",
           o->domain, o->hostname, o->hostname, o->hostname, o->domain, o->domain, o->domain,
           o->hostname);
    /* The DKIM records, from the keys themselves (see cli_dkim.c). */
    fflush(stdout);
    if (cli_dkim_print_records(o->dir, o->domain, stdout, "  ") == 0)
        printf("  (no DKIM key: make one with 'ortoo -c %s dkim keygen %s')\n", absdir,
               o->domain);
}

/* An RSA DKIM key for the domain, unless it has a key already. */
static int dkim_make(const struct init_opts *o)
{
    int n = cli_dkim_print_records(o->dir, o->domain, NULL, "");
    if (n < 0)
        return -1;
    if (n > 0)
        return 0;
    return cli_dkim_keygen(o->dir, o->domain, NULL, false, false, NULL);
}

/*
 * Entry point (see cli.h).  Blocking; creates files under config_dir.
 * Returns 0 on success, 1 on failure (including an existing ortoo.conf
 * without --if-missing), 2 on a usage error.
 */
int cli_init(const char *config_dir, int argc, char **argv)
{
    struct init_opts o;
    char conf_path[PATH_MAX], path[PATH_MAX], conf[2048], absdir[PATH_MAX];
    bool made_cert;
    int rc = init_parse(config_dir, argc, argv, &o);

    if (rc == -1)
        return 0; /* --help */
    if (rc != 0)
        return rc;
    if (sodium_init() < 0) {
        fprintf(stderr, "ortoo init: libsodium failed to initialise\n");
        return 1;
    }
    if (path_fmt(conf_path, sizeof conf_path, "%s/ortoo.conf", o.dir) < 0)
        return 1;

    if (file_exists(conf_path)) {
        if (!o.if_missing) {
            fprintf(stderr,
                    "ortoo init: %s already exists; not overwriting it "
                    "(remove it first, or pass --if-missing)\n",
                    conf_path);
            return 1;
        }
        if (realpath(o.dir, absdir) == NULL)
            snprintf(absdir, sizeof absdir, "%s", o.dir);
        summary_print(&o, absdir, true);
        return 0;
    }

    /* The directory and ortoo.conf are world-readable (no secret in them),
     * so that sendmail run by any user finds the spool; users, keys and
     * certificates stay in 0750 directories. */
    if (dir_make_parents(o.dir, INIT_TOP_DIR_MODE) < 0)
        return 1;
    if (realpath(o.dir, absdir) == NULL) {
        fprintf(stderr, "ortoo init: %s: %s\n", o.dir, strerror(errno));
        return 1;
    }
    if (certs_make(&o, &made_cert) < 0)
        return 1;
    if (users_make(&o) < 0)
        return 1;
    if (srs_key_make(&o) < 0)
        return 1;
    if (o.dev && dev_user_make(&o) < 0)
        return 1;
    if (dkim_make(&o) < 0)
        return 1;
    if (o.dev && (path_fmt(path, sizeof path, "%s/spool", o.dir) < 0 ||
                  dir_make(path, INIT_DIR_MODE) < 0))
        return 1;

    int n = conf_render(&o, conf, sizeof conf);
    if (n < 0) {
        fprintf(stderr, "ortoo init: configuration too long\n");
        return 1;
    }
    if (file_write(conf_path, conf, (size_t)n, 0644, true) < 0)
        return 1;

    if (made_cert)
        printf("Made a self-signed certificate for %s.\n", o.hostname);
    summary_print(&o, absdir, false);
    return 0;
}
