/* SPDX-License-Identifier: MIT */
/*
 * users.c - local domains and their users (see users.h).
 *
 * users_load_opts() walks <config>/domains/: every sub-directory is a
 * local domain (its name, lowercased, is the domain), its optional "users"
 * file holds "address:argon2-string" lines and its optional "aliases" file
 * is parsed by core/aliases.c.  The result is an immutable table of two
 * sorted arrays (domains, users) searched with bsearch(), plus the alias
 * table, so lookups need no lock and a reload simply builds a new table.
 * Before it is returned, recipients_verify() checks the alias chains.
 *
 * Keys are normalised as "<local part>@<domain lowercased>": the domain is
 * case-insensitive (RFC 5321 2.4); the local part is lowercased too unless
 * the table is case-sensitive (RFC 5321 2.4 leaves it to the receiving host,
 * and people type Alice@ for alice@).
 *
 * The CLI edits a users file through users_file_set()/users_file_del(), which
 * keep every other line (comments included) and replace the file atomically:
 * temp file in the same directory, fsync, rename, fsync of the directory.
 * The write/fsync/rename calls go through users_sys so tests can inject
 * failures.
 */
#include "core/users.h"

#include "core/aliases.h"
#include "core/recipients.h"
#include "io/text.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define USERS_LOCAL_MAX 64    /* RFC 5321 4.5.3.1.1 */
#define USERS_DOMAIN_MAX 255  /* RFC 5321 4.5.3.1.2 */
#define USERS_ADDR_MAX (USERS_LOCAL_MAX + 1 + USERS_DOMAIN_MAX)
#define USERS_HASH_MAX 127    /* crypto_pwhash_STRBYTES - 1 */

/* One user.  key is "local@domain-lowercased"; both strings owned. */
struct users_entry {
    char *key;  /* normalised address, unique in the table */
    char *hash; /* argon2 string as stored in the file */
};

/* One local domain. */
struct users_domain {
    char *name;                /* lowercase, owned */
    const char *first_user;    /* key of the first user in its users file, or
                                  NULL (points into users[]'s strings) */
};

/*
 * The loaded table.  Invariants: domains[] holds ndomains distinct lowercase
 * names sorted by strcmp; users[] holds nusers entries sorted by strcmp on
 * key with no duplicates (keys normalised by the table's case rule); every
 * user's domain is in domains[]; aliases is finished.  Immutable after
 * users_load_opts() returns.
 */
struct users {
    struct users_domain *domains; /* sorted by name */
    size_t ndomains;
    struct users_entry *users; /* sorted by key */
    size_t nusers;
    bool case_sensitive;       /* local parts exact */
    char plus_separator[8];    /* plus-addressing separators, "" off */
    struct aliases *aliases;   /* owned */
};

/* Test seam for the syscalls of the atomic rewrite. */
static struct {
    ssize_t (*write)(int fd, const void *buf, size_t len);
    int (*fsync)(int fd);
    int (*rename)(const char *from, const char *to);
} users_sys = {write, fsync, rename};

/* --- Syntax checks. --- */

bool users_domain_valid(const char *d, size_t len)
{
    return text_hostname_check(d, len) == NULL;
}

/* A local part the users file can hold: non-empty, <= 64 octets, no
 * control characters, spaces, ':' (the file's separator) or '@'. */
static bool local_ok(const char *l, size_t len)
{
    if (len == 0 || len > USERS_LOCAL_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)l[i];
        if (c <= ' ' || c == 0x7f || c == ':' || c == '@')
            return false;
    }
    return true;
}

/* ... that also names a mailbox: not '*' (the catch-all is an alias), no
 * '/' and no leading '.' (it is a Maildir directory name). */
static bool mailbox_ok(const char *l, size_t len)
{
    return local_ok(l, len) && l[0] != '.' && memchr(l, '/', len) == NULL &&
           memchr(l, '*', len) == NULL;
}

/* An argon2 string as crypto_pwhash_str() writes it. */
static bool hash_ok(const char *h, size_t len)
{
    if (len < 8 || len > USERS_HASH_MAX || strncmp(h, "$argon2", 7) != 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)h[i];
        if (c <= ' ' || c >= 0x7f || c == ':')
            return false;
    }
    return true;
}

/*
 * Build the normalised key of addr (len bytes) into key[USERS_ADDR_MAX + 1]:
 * domain lowercased, local part lowercased when fold; the '@' is the last
 * one.  Returns the key length, or -1 when addr has no '@', holds a NUL or
 * is too long.
 */
static int addr_key(const char *addr, size_t len, char *key, bool fold)
{
    const char *at = len > 0 ? memrchr(addr, '@', len) : NULL;
    size_t llen;

    if (at == NULL || len > USERS_ADDR_MAX || memchr(addr, '\0', len) != NULL)
        return -1;
    llen = (size_t)(at - addr);
    for (size_t i = 0; i < len; i++)
        key[i] = (fold || i > llen) ? (char)tolower((unsigned char)addr[i]) : addr[i];
    key[len] = '\0';
    return (int)len;
}

bool users_addr_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    char ka[USERS_ADDR_MAX + 1], kb[USERS_ADDR_MAX + 1];
    int la = addr_key(a, alen, ka, true), lb = addr_key(b, blen, kb, true);
    return la >= 0 && la == lb && memcmp(ka, kb, (size_t)la) == 0;
}

int users_key(const struct users *u, const char *addr, size_t len, char *key)
{
    return addr_key(addr, len, key, u == NULL || !u->case_sensitive);
}

/* --- Loading. --- */

static int cmp_domain(const void *a, const void *b)
{
    return strcmp(((const struct users_domain *)a)->name, ((const struct users_domain *)b)->name);
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const struct users_entry *)a)->key, ((const struct users_entry *)b)->key);
}

/* Trim spaces, tabs, CR and LF at both ends of [*s, *s + *len). */
static void trim(const char **s, size_t *len)
{
    while (*len > 0 && strchr(" \t\r\n", (*s)[0]) != NULL)
        (*s)++, (*len)--;
    while (*len > 0 && strchr(" \t\r\n", (*s)[*len - 1]) != NULL)
        (*len)--;
}

/*
 * Split a users-file line into address and hash.  Returns 1 for a user line
 * (addr/alen and hash/hlen set), 0 for a blank or comment line, -1 when the
 * line has no ':'.
 */
static int line_split(const char *line, size_t len, const char **addr, size_t *alen,
                      const char **hash, size_t *hlen)
{
    const char *colon;

    trim(&line, &len);
    if (len == 0 || line[0] == '#')
        return 0;
    colon = memchr(line, ':', len);
    if (colon == NULL)
        return -1;
    *addr = line;
    *alen = (size_t)(colon - line);
    *hash = colon + 1;
    *hlen = len - *alen - 1;
    trim(addr, alen);
    trim(hash, hlen);
    return 1;
}

static int push_user(struct users *u, size_t *cap, const char *key, const char *hash,
                     size_t hlen)
{
    struct users_entry *e;

    if (u->nusers == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        e = realloc(u->users, ncap * sizeof(*e));
        if (e == NULL)
            return -1;
        u->users = e;
        *cap = ncap;
    }
    e = &u->users[u->nusers];
    e->key = strdup(key);
    e->hash = strndup(hash, hlen);
    if (e->key == NULL || e->hash == NULL) {
        free(e->key);
        free(e->hash);
        return -1;
    }
    u->nusers++;
    return 0;
}

/* Load one domain's users file (absent is fine) and note its first user in
 * u->domains[di].  Duplicates are detected after sorting, by
 * users_load_opts(). */
static int load_file(struct users *u, size_t *cap, const char *path, size_t di,
                     const struct users_opts *opts, char *err, size_t errlen)
{
    const char *domain = u->domains[di].name;
    FILE *f = fopen(path, "re");
    char *line = NULL;
    size_t linecap = 0;
    ssize_t n;
    unsigned lineno = 0;
    char key[USERS_ADDR_MAX + 1];

    if (f == NULL) {
        if (errno == ENOENT)
            return 0;
        text_seterr(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    while ((n = getline(&line, &linecap, f)) >= 0) {
        const char *addr, *hash, *at;
        size_t alen, hlen;
        int r;

        lineno++;
        r = line_split(line, (size_t)n, &addr, &alen, &hash, &hlen);
        if (r == 0)
            continue;
        if (r < 0) {
            text_seterr(err, errlen, "%s:%u: expected address:hash", path, lineno);
            goto fail;
        }
        at = memrchr(addr, '@', alen);
        if (at == NULL || addr_key(addr, alen, key, !u->case_sensitive) < 0 ||
            !local_ok(addr, (size_t)(at - addr))) {
            text_seterr(err, errlen, "%s:%u: invalid address '%.*s'", path, lineno,
                        (int)(alen > 100 ? 100 : alen), addr);
            goto fail;
        }
        if (!mailbox_ok(addr, (size_t)(at - addr))) {
            /* Older versions let `user add '*@domain'` through: say what
             * it should be, but do not refuse the whole table for it. */
            char msg[PATH_MAX + 512];
            snprintf(msg, sizeof(msg), "%s:%u: '%.*s' is not a user name (a catch-all is an "
                     "alias: '*: you@%s' in the aliases file); line ignored",
                     path, lineno, (int)(alen > 100 ? 100 : alen), addr, domain);
            if (opts->warn != NULL)
                opts->warn(opts->warn_arg, msg);
            continue;
        }
        if (strcmp(key + (at - addr) + 1, domain) != 0) {
            text_seterr(err, errlen, "%s:%u: address '%.*s' is not in domain %s", path, lineno,
                        (int)alen, addr, domain);
            goto fail;
        }
        if (!hash_ok(hash, hlen)) {
            text_seterr(err, errlen, "%s:%u: '%.*s' is not an argon2 password hash", path,
                        lineno, (int)alen, addr);
            goto fail;
        }
        if (push_user(u, cap, key, hash, hlen) < 0) {
            text_seterr(err, errlen, "%s:%u: out of memory", path, lineno);
            goto fail;
        }
        if (u->domains[di].first_user == NULL)
            u->domains[di].first_user = u->users[u->nusers - 1].key;
    }
    if (ferror(f)) {
        text_seterr(err, errlen, "%s: %s", path, strerror(errno));
        goto fail;
    }
    free(line);
    fclose(f);
    return 0;
fail:
    free(line);
    fclose(f);
    return -1;
}

int users_load_opts(const char *config_dir, const struct users_opts *opts, struct users **out,
                    char *err, size_t errlen)
{
    static const struct users_opts defaults = {0};
    struct users *u = calloc(1, sizeof(*u));
    size_t ucap = 0, dcap = 0;
    char dpath[PATH_MAX], path[PATH_MAX];
    DIR *dir = NULL;
    struct dirent *de;

    *out = NULL;
    if (opts == NULL)
        opts = &defaults;
    if (u == NULL || (u->aliases = aliases_new(opts->case_sensitive, opts->allow_pipe)) == NULL) {
        free(u);
        text_seterr(err, errlen, "out of memory");
        return -1;
    }
    u->case_sensitive = opts->case_sensitive;
    snprintf(u->plus_separator, sizeof(u->plus_separator), "%s",
             opts->plus_separator ? opts->plus_separator : "+");
    snprintf(dpath, sizeof(dpath), "%s/domains", config_dir);
    dir = opendir(dpath);
    if (dir == NULL) {
        if (errno == ENOENT) /* no local domains: a pure relay */
            goto done;
        text_seterr(err, errlen, "%s: %s", dpath, strerror(errno));
        goto fail;
    }
    while ((errno = 0, de = readdir(dir)) != NULL) {
        struct stat st;
        size_t nlen = strlen(de->d_name);
        char *dom;

        if (de->d_name[0] == '.')
            continue;
        if (snprintf(path, sizeof(path), "%s/%s", dpath, de->d_name) >= (int)sizeof(path)) {
            text_seterr(err, errlen, "%s/%s: path too long", dpath, de->d_name);
            goto fail;
        }
        if (stat(path, &st) < 0) {
            text_seterr(err, errlen, "%s: %s", path, strerror(errno));
            goto fail;
        }
        if (!S_ISDIR(st.st_mode))
            continue;
        if (!users_domain_valid(de->d_name, nlen)) {
            text_seterr(err, errlen, "%s: not a domain name", path);
            goto fail;
        }
        if (u->ndomains == dcap) {
            size_t ncap = dcap ? dcap * 2 : 8;
            struct users_domain *d = realloc(u->domains, ncap * sizeof(*d));
            if (d == NULL)
                goto oom;
            u->domains = d;
            dcap = ncap;
        }
        dom = strdup(de->d_name);
        if (dom == NULL)
            goto oom;
        for (char *p = dom; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        u->domains[u->ndomains++] = (struct users_domain){.name = dom, .first_user = NULL};
        if (snprintf(path, sizeof(path), "%s/%s/users", dpath, de->d_name) >=
            (int)sizeof(path)) {
            text_seterr(err, errlen, "%s/%s/users: path too long", dpath, de->d_name);
            goto fail;
        }
        if (load_file(u, &ucap, path, u->ndomains - 1, opts, err, errlen) < 0)
            goto fail;
        if (snprintf(path, sizeof(path), "%s/%s/aliases", dpath, de->d_name) >=
            (int)sizeof(path)) {
            text_seterr(err, errlen, "%s/%s/aliases: path too long", dpath, de->d_name);
            goto fail;
        }
        if (aliases_load_file(u->aliases, path, dom, err, errlen) < 0)
            goto fail;
    }
    if (errno != 0) {
        text_seterr(err, errlen, "%s: %s", dpath, strerror(errno));
        goto fail;
    }
    if (u->ndomains > 0)
        qsort(u->domains, u->ndomains, sizeof(*u->domains), cmp_domain);
    for (size_t i = 1; i < u->ndomains; i++) {
        if (strcmp(u->domains[i - 1].name, u->domains[i].name) == 0) {
            text_seterr(err, errlen, "%s: domain %s appears twice (directory names differ "
                        "only in case)", dpath, u->domains[i].name);
            goto fail;
        }
    }
    if (u->nusers > 0)
        qsort(u->users, u->nusers, sizeof(*u->users), cmp_entry);
    for (size_t i = 1; i < u->nusers; i++) {
        if (strcmp(u->users[i - 1].key, u->users[i].key) == 0) {
            text_seterr(err, errlen, "%s: user %s is listed twice%s", dpath, u->users[i].key,
                        u->case_sensitive ? "" : " (local parts compare without case: [local] "
                                            "case_sensitive = off)");
            goto fail;
        }
    }
done:
    if (dir != NULL)
        closedir(dir);
    dir = NULL;
    if (aliases_finish(u->aliases, err, errlen) < 0)
        goto fail;
    if (recipients_verify(u, opts->warn, opts->warn_arg, err, errlen) < 0)
        goto fail;
    *out = u;
    return 0;
oom:
    text_seterr(err, errlen, "out of memory");
fail:
    if (dir != NULL)
        closedir(dir);
    users_free(u);
    return -1;
}

int users_load(const char *config_dir, struct users **out, char *err, size_t errlen)
{
    return users_load_opts(config_dir, NULL, out, err, errlen);
}

void users_free(struct users *u)
{
    if (u == NULL)
        return;
    for (size_t i = 0; i < u->ndomains; i++)
        free(u->domains[i].name);
    for (size_t i = 0; i < u->nusers; i++) {
        free(u->users[i].key);
        free(u->users[i].hash);
    }
    aliases_free(u->aliases);
    free(u->domains);
    free(u->users);
    free(u);
}

const struct aliases *users_aliases(const struct users *u) { return u ? u->aliases : NULL; }

bool users_case_sensitive(const struct users *u) { return u != NULL && u->case_sensitive; }

const char *users_plus_separator(const struct users *u) { return u ? u->plus_separator : ""; }

size_t users_domain_count(const struct users *u) { return u ? u->ndomains : 0; }

const char *users_domain_at(const struct users *u, size_t i)
{
    return u != NULL && i < u->ndomains ? u->domains[i].name : NULL;
}

/* The domain entry for domain (len bytes, any case), or NULL. */
static const struct users_domain *domain_find(const struct users *u, const char *domain,
                                              size_t len)
{
    char buf[USERS_DOMAIN_MAX + 1];
    struct users_domain key = {.name = buf};

    if (u == NULL || u->ndomains == 0 || len == 0 || len > USERS_DOMAIN_MAX)
        return NULL;
    for (size_t i = 0; i < len; i++)
        buf[i] = (char)tolower((unsigned char)domain[i]);
    buf[len] = '\0';
    if (strlen(buf) != len) /* embedded NUL */
        return NULL;
    return bsearch(&key, u->domains, u->ndomains, sizeof(*u->domains), cmp_domain);
}

bool users_is_local_domain(const struct users *u, const char *domain, size_t len)
{
    return domain_find(u, domain, len) != NULL;
}

const char *users_first(const struct users *u, const char *domain, size_t len)
{
    const struct users_domain *d = domain_find(u, domain, len);
    return d != NULL ? d->first_user : NULL;
}

static const struct users_entry *user_find(const struct users *u, const char *addr, size_t len)
{
    char key[USERS_ADDR_MAX + 1];
    struct users_entry k = {.key = key};

    if (u == NULL || u->nusers == 0 || addr_key(addr, len, key, !u->case_sensitive) < 0)
        return NULL;
    return bsearch(&k, u->users, u->nusers, sizeof(*u->users), cmp_entry);
}

const char *users_hash(const struct users *u, const char *addr, size_t len)
{
    const struct users_entry *e = user_find(u, addr, len);
    return e ? e->hash : NULL;
}

const char *users_find(const struct users *u, const char *addr, size_t len)
{
    const struct users_entry *e = user_find(u, addr, len);
    return e ? e->key : NULL;
}

/* --- Editing the users file. --- */

/*
 * Check addr and compute the domain directory and users file paths.  key
 * receives the normalised address (domain lowercased).
 */
int users_domain_dir(const char *config_dir, const char *domain, char *path, size_t cap)
{
    char dpath[PATH_MAX];
    size_t len = strlen(domain);
    DIR *dir;
    struct dirent *de;
    int rc = 1;

    if (!users_domain_valid(domain, len)) {
        errno = EINVAL;
        return -1;
    }
    if (snprintf(dpath, sizeof(dpath), "%s/domains", config_dir) >= (int)sizeof(dpath)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    dir = opendir(dpath);
    if (dir == NULL)
        return errno == ENOENT ? 1 : -1;
    while ((de = readdir(dir)) != NULL) {
        struct stat st;
        if (strcasecmp(de->d_name, domain) != 0)
            continue;
        if (snprintf(path, cap, "%s/%s", dpath, de->d_name) >= (int)cap) {
            errno = ENAMETOOLONG;
            rc = -1;
            break;
        }
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
            rc = 0;
            break;
        }
    }
    closedir(dir);
    return rc;
}

/*
 * Check addr and find the domain directory and users file.  key receives
 * the address with the domain lowercased.  Returns 0, 1 when the domain is
 * not local (err says so), or -1 with err.
 */
static int file_paths(const char *config_dir, const char *addr, char *key, char *dir,
                      char *file, char *err, size_t errlen)
{
    size_t len = strlen(addr);
    const char *at = strrchr(addr, '@');
    const char *dom;
    int r;

    if (at == NULL || addr_key(addr, len, key, false) < 0 || !mailbox_ok(addr, (size_t)(at - addr)) ||
        !users_domain_valid(at + 1, strlen(at + 1))) {
        text_seterr(err, errlen, "invalid address '%s' (expected local@domain)", addr);
        return -1;
    }
    dom = key + (at - addr) + 1;
    r = users_domain_dir(config_dir, dom, dir, PATH_MAX);
    if (r < 0) {
        text_seterr(err, errlen, "%s/domains: %s", config_dir, strerror(errno));
        return -1;
    }
    if (r > 0) {
        text_seterr(err, errlen, "%s is not a local domain", dom);
        return 1;
    }
    if (snprintf(file, PATH_MAX, "%s/users", dir) >= PATH_MAX) {
        text_seterr(err, errlen, "%s: path too long", config_dir);
        return -1;
    }
    return 0;
}

/* Read a whole users file into b (empty to start).  Returns 1, 0 (b left
 * empty) when it does not exist, or -1 with err (b freed). */
static int read_all(const char *path, struct text_buf *b, struct stat *st, char *err,
                    size_t errlen)
{
    int r = text_read_file(path, SIZE_MAX, b, st);

    if (r == 0)
        return 1;
    if (b->p != NULL)
        sodium_memzero(b->p, b->len);
    text_free(b);
    if (r == -ENOENT)
        return 0;
    text_seterr(err, errlen, "%s: %s", path, strerror(-r));
    return -1;
}

/*
 * Copy old (len bytes) into out, leaving out every user line whose address
 * normalises to key; when repl is not NULL it takes the place of the first
 * such line (or is appended).  Returns the number of lines that matched, or
 * -1 when out of memory.
 */
static int rewrite(const char *old, size_t len, const char *key, const char *repl,
                   struct text_buf *out)
{
    const char *p = old, *end = old + len;
    int matched = 0;
    char k[USERS_ADDR_MAX + 1];

    if (text_add(out, "", 0) < 0)
        return -1;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t llen = nl ? (size_t)(nl - p) : (size_t)(end - p);
        const char *addr, *hash;
        size_t alen, hlen;

        if (line_split(p, llen, &addr, &alen, &hash, &hlen) == 1 &&
            addr_key(addr, alen, k, true) >= 0 && strcasecmp(k, key) == 0) {
            if (matched++ == 0 && repl != NULL && text_add(out, repl, strlen(repl)) < 0)
                return -1;
        } else {
            if (text_add(out, p, llen) < 0 || text_add(out, "\n", 1) < 0)
                return -1;
        }
        p += llen + (nl ? 1 : 0);
    }
    if (matched == 0 && repl != NULL && text_add(out, repl, strlen(repl)) < 0)
        return -1;
    return matched;
}

/*
 * Replace path with data atomically: write a temp file in dir, fsync it,
 * rename over path, fsync dir.  The new file is mode 0640 and takes the
 * owner and group in old ((uid_t)-1: unchanged), when permitted.
 */
static int replace_file(const char *dir, const char *path, const char *data, size_t len,
                        const struct stat *old, char *err, size_t errlen)
{
    char tmp[PATH_MAX];
    const char *what = "write";
    int fd, dfd = -1;
    size_t off = 0;

    if (snprintf(tmp, sizeof(tmp), "%s/.users.XXXXXX", dir) >= (int)sizeof(tmp)) {
        text_seterr(err, errlen, "%s: path too long", dir);
        return -1;
    }
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        text_seterr(err, errlen, "%s: %s", tmp, strerror(errno));
        return -1;
    }
    if (fchmod(fd, 0640) < 0) {
        what = "chmod";
        goto fail;
    }
    if (old != NULL && fchown(fd, old->st_uid, old->st_gid) < 0 && errno != EPERM) {
        what = "chown";
        goto fail;
    }
    while (off < len) {
        ssize_t n = users_sys.write(fd, data + off, len - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            goto fail;
        }
        off += (size_t)n;
    }
    if (users_sys.fsync(fd) < 0) {
        what = "fsync";
        goto fail;
    }
    if (close(fd) < 0) {
        fd = -1;
        what = "close";
        goto fail;
    }
    fd = -1;
    if (users_sys.rename(tmp, path) < 0) {
        what = "rename";
        goto fail;
    }
    /* The rename is durable only once the directory is synced. */
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || users_sys.fsync(dfd) < 0) {
        text_seterr(err, errlen, "%s: fsync: %s", dir, strerror(errno));
        if (dfd >= 0)
            close(dfd);
        return -1;
    }
    close(dfd);
    return 0;
fail:
    text_seterr(err, errlen, "%s: %s: %s", path, what, strerror(errno));
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return -1;
}

int users_file_set(const char *config_dir, const char *addr, const char *hash, char *err,
                   size_t errlen)
{
    char key[USERS_ADDR_MAX + 1], dir[PATH_MAX], file[PATH_MAX];
    char line[USERS_ADDR_MAX + USERS_HASH_MAX + 4];
    struct stat st, cst;
    struct text_buf old = {0}, out = {0};
    int r, ret = -1;

    if (hash == NULL || !hash_ok(hash, strlen(hash))) {
        text_seterr(err, errlen, "not an argon2 password hash");
        return -1;
    }
    if (file_paths(config_dir, addr, key, dir, file, err, errlen) != 0)
        return -1;
    /* A new file takes the domain directory's group, so that a daemon
     * running as that group can read it. */
    if (stat(dir, &cst) < 0) {
        text_seterr(err, errlen, "%s: %s", dir, strerror(errno));
        return -1;
    }
    r = read_all(file, &old, &st, err, errlen);
    if (r < 0)
        return -1;
    snprintf(line, sizeof(line), "%s:%s\n", key, hash);
    if (rewrite(old.p ? old.p : "", old.len, key, line, &out) < 0) {
        text_seterr(err, errlen, "out of memory");
        goto fail;
    }
    if (r == 0) { /* no file yet: our uid, the domain directory's group */
        st.st_uid = (uid_t)-1;
        st.st_gid = cst.st_gid;
    }
    ret = replace_file(dir, file, out.p, out.len, &st, err, errlen);
fail:
    if (old.p != NULL)
        sodium_memzero(old.p, old.len);
    if (out.p != NULL)
        sodium_memzero(out.p, out.len);
    text_free(&old);
    text_free(&out);
    return ret;
}

int users_file_del(const char *config_dir, const char *addr, char *err, size_t errlen)
{
    char key[USERS_ADDR_MAX + 1], dir[PATH_MAX], file[PATH_MAX];
    struct stat st;
    struct text_buf old = {0}, out = {0};
    int r, ret = -1;

    r = file_paths(config_dir, addr, key, dir, file, err, errlen);
    if (r != 0)
        return r;
    r = read_all(file, &old, &st, err, errlen);
    if (r <= 0)
        return r < 0 ? -1 : 1;
    r = rewrite(old.p, old.len, key, NULL, &out);
    if (r < 0) {
        text_seterr(err, errlen, "out of memory");
        goto fail;
    }
    if (r == 0)
        ret = 1;
    else
        ret = replace_file(dir, file, out.p, out.len, &st, err, errlen);
fail:
    if (old.p != NULL)
        sodium_memzero(old.p, old.len);
    if (out.p != NULL)
        sodium_memzero(out.p, out.len);
    text_free(&old);
    text_free(&out);
    return ret;
}

/* --- Adding and removing domains. --- */

/* fsync a directory (after a mkdir, rename or removal in it). */
static int dir_sync(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = users_sys.fsync(fd);
    close(fd);
    return rc;
}

static const char aliases_template[] =
    "# Aliases of %s: one \"name: target, target\" per line (see docs/config.md).\n"
    "#   sales: alice, bob              local users (or other aliases)\n"
    "#   me: someone@gmail.com          forwarded to a remote address\n"
    "#   *: alice                       the catch-all: any other name\n"
    "# The running server picks up changes to this file by itself.\n";

int users_domain_add(const char *config_dir, const char *domain, char *err, size_t errlen)
{
    char lc[USERS_DOMAIN_MAX + 1], dpath[PATH_MAX], dir[PATH_MAX], file[PATH_MAX];
    char text[sizeof(aliases_template) + USERS_DOMAIN_MAX];
    size_t len = strlen(domain);
    struct stat cst;
    int r, n;

    if (!users_domain_valid(domain, len)) {
        text_seterr(err, errlen, "invalid domain '%s'", domain);
        return -1;
    }
    for (size_t i = 0; i <= len; i++)
        lc[i] = (char)tolower((unsigned char)domain[i]);
    r = users_domain_dir(config_dir, lc, dir, sizeof(dir));
    if (r == 0)
        return 1;
    if (r < 0) {
        text_seterr(err, errlen, "%s/domains: %s", config_dir, strerror(errno));
        return -1;
    }
    /* New directories take the config directory's group, so that a daemon
     * running as that group can read them. */
    if (stat(config_dir, &cst) < 0) {
        text_seterr(err, errlen, "%s: %s", config_dir, strerror(errno));
        return -1;
    }
    if (snprintf(dpath, sizeof(dpath), "%s/domains", config_dir) >= (int)sizeof(dpath) ||
        snprintf(dir, sizeof(dir), "%s/%s", dpath, lc) >= (int)sizeof(dir) ||
        snprintf(file, sizeof(file), "%s/aliases", dir) >= (int)sizeof(file)) {
        text_seterr(err, errlen, "%s: path too long", config_dir);
        return -1;
    }
    if (mkdir(dpath, 0755) == 0) {
        (void)!chown(dpath, (uid_t)-1, cst.st_gid);
        (void)dir_sync(config_dir);
    } else if (errno != EEXIST) {
        text_seterr(err, errlen, "mkdir %s: %s", dpath, strerror(errno));
        return -1;
    }
    if (mkdir(dir, 0750) < 0) {
        text_seterr(err, errlen, "mkdir %s: %s", dir, strerror(errno));
        return -1;
    }
    (void)!chown(dir, (uid_t)-1, cst.st_gid);
    n = snprintf(text, sizeof(text), aliases_template, lc);
    cst.st_uid = (uid_t)-1;
    if (replace_file(dir, file, text, (size_t)n, &cst, err, errlen) < 0)
        return -1;
    if (dir_sync(dpath) < 0) {
        text_seterr(err, errlen, "%s: fsync: %s", dpath, strerror(errno));
        return -1;
    }
    return 0;
}

/* Lines of path that are entries: not blank, not '#', not indented. */
static int count_entries(const char *path, size_t *n)
{
    FILE *f = fopen(path, "re");
    char *line = NULL;
    size_t cap = 0;

    *n = 0;
    if (f == NULL)
        return errno == ENOENT ? 0 : -1;
    while (getline(&line, &cap, f) >= 0) {
        const char *p = line;
        if (*p == ' ' || *p == '\t')
            continue;
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
            p++;
        if (*p != '\0' && *p != '#')
            (*n)++;
    }
    free(line);
    fclose(f);
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

int users_domain_del(const char *config_dir, const char *domain, bool force, char *err,
                     size_t errlen)
{
    char dir[PATH_MAX], path[PATH_MAX + 256], what[256] = "";
    size_t nusers = 0, naliases = 0, nother = 0;
    DIR *d;
    struct dirent *de;
    int r = users_domain_dir(config_dir, domain, dir, sizeof(dir));

    if (r > 0)
        return 1;
    if (r < 0) {
        text_seterr(err, errlen, "%s/domains: %s", config_dir, strerror(errno));
        return -1;
    }
    d = opendir(dir);
    if (d == NULL) {
        text_seterr(err, errlen, "%s: %s", dir, strerror(errno));
        return -1;
    }
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >= (int)sizeof(path))
            continue;
        if (strcmp(de->d_name, "users") == 0) {
            if (count_entries(path, &nusers) < 0)
                goto readfail;
        } else if (strcmp(de->d_name, "aliases") == 0) {
            if (count_entries(path, &naliases) < 0)
                goto readfail;
        } else if (de->d_name[0] != '.') {
            size_t l = strlen(what);
            if (nother++ < 4 && l + strlen(de->d_name) + 3 < sizeof(what))
                snprintf(what + l, sizeof(what) - l, "%s%.200s", l ? ", " : "", de->d_name);
        }
    }
    closedir(d);
    d = NULL;
    if (!force && (nusers > 0 || naliases > 0 || nother > 0)) {
        char lc[USERS_DOMAIN_MAX + 1];
        snprintf(lc, sizeof(lc), "%s", domain);
        for (char *p = lc; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        text_seterr(err, errlen, "%s is not empty: %zu user%s, %zu alias%s%s%s", lc, nusers,
                    nusers == 1 ? "" : "s", naliases, naliases == 1 ? "" : "es",
                    nother ? ", " : "", what);
        return 2;
    }
    if (nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) {
        text_seterr(err, errlen, "removing %s: %s", dir, strerror(errno));
        return -1;
    }
    snprintf(path, sizeof(path), "%s/domains", config_dir);
    if (dir_sync(path) < 0) {
        text_seterr(err, errlen, "%s: fsync: %s", path, strerror(errno));
        return -1;
    }
    return 0;
readfail:
    text_seterr(err, errlen, "%s: %s", path, strerror(errno));
    if (d != NULL)
        closedir(d);
    return -1;
}

/* --- Passwords. --- */

int users_hash_password(const char *pw, size_t len, char out[128])
{
    if (sodium_init() < 0)
        return -1;
    /* libsodium >= 1.0.15: crypto_pwhash_str is argon2id. */
    return crypto_pwhash_str(out, pw, len, crypto_pwhash_OPSLIMIT_INTERACTIVE,
                             crypto_pwhash_MEMLIMIT_INTERACTIVE) == 0
               ? 0
               : -1;
}

bool users_verify_password(const char *hash, const char *pw, size_t len)
{
    char buf[crypto_pwhash_STRBYTES] = {0};
    size_t hlen;

    if (hash == NULL || sodium_init() < 0)
        return false;
    /* The prototype takes char[crypto_pwhash_STRBYTES]: give it one. */
    hlen = strnlen(hash, sizeof(buf));
    if (hlen == sizeof(buf))
        return false;
    memcpy(buf, hash, hlen);
    return crypto_pwhash_str_verify(buf, pw, len) == 0;
}
