/* SPDX-License-Identifier: MIT */
/*
 * maildrop_format.c - the drop file format of core/maildrop.h: its parser
 * (the daemon's pickup checks every file with it: the writer is any local
 * user) and its writer (sendmail).  No I/O beyond the writer's own file, so
 * the parser is fuzzed alone (tests/fuzz/fuzz_maildrop.c).
 */
#include "core/maildrop.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define MD_MAGIC "ortoo-maildrop 1\n"
#define MD_TRAILER "end\n"

/* ---- the format ---- */

bool maildrop_name_valid(const char *name)
{
    if (strlen(name) != MAILDROP_NAME_LEN || name[0] != 'm')
        return false;
    for (size_t i = 1; i < MAILDROP_NAME_LEN; i++)
        if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f')))
            return false;
    return true;
}

/* An address inside <>: printable, no blank, no <>", with an '@' unless it
 * may be empty (the null sender).  Sets *utf8 when it has non-ASCII bytes. */
static bool addr_valid(const char *a, size_t len, bool may_be_empty, bool *utf8)
{
    if (len == 0)
        return may_be_empty;
    if (len > MAILDROP_ADDR_MAX || memchr(a, '@', len) == NULL)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)a[i];
        if (ch <= 0x20 || ch == 0x7f || ch == '<' || ch == '>' || ch == '"')
            return false;
        if (ch >= 0x80)
            *utf8 = true;
    }
    return true;
}

/* The next LF-terminated line of [*p, end): NUL-terminates it in place and
 * returns its start, or NULL if there is no LF. */
static char *next_line(char **p, char *end)
{
    char *nl = memchr(*p, '\n', (size_t)(end - *p));
    if (nl == NULL)
        return NULL;
    char *line = *p;
    *nl = '\0';
    *p = nl + 1;
    return line;
}

/* "<addr>" after a keyword: returns the address (NUL-terminated in place). */
static char *angle_addr(char *s)
{
    size_t len = strlen(s);
    if (len < 2 || s[0] != '<' || s[len - 1] != '>')
        return NULL;
    s[len - 1] = '\0';
    return s + 1;
}

int maildrop_parse(char *buf, size_t len, uint64_t max_size, size_t max_rcpts,
                   struct maildrop_msg *m, char *err, size_t errlen)
{
    memset(m, 0, sizeof(*m));
    size_t tl = strlen(MD_TRAILER);
    if (len < strlen(MD_MAGIC) || memcmp(buf, MD_MAGIC, strlen(MD_MAGIC)) != 0) {
        if (len < strlen(MD_MAGIC) && memcmp(buf, MD_MAGIC, len) == 0)
            return 1; /* still being written */
        snprintf(err, errlen, "not a maildrop file (bad first line)");
        return -1;
    }
    if (len < tl || memcmp(buf + len - tl, MD_TRAILER, tl) != 0)
        return 1;

    char *p = buf + strlen(MD_MAGIC), *end = buf + len;
    char *line = next_line(&p, end), *a;
    if (line == NULL || strncmp(line, "from ", 5) != 0 || (a = angle_addr(line + 5)) == NULL ||
        !addr_valid(a, strlen(a), true, &m->has_utf8_addr)) {
        snprintf(err, errlen, "bad or missing 'from <ADDRESS>' line");
        return -1;
    }
    m->sender = a;
    size_t cap = 0;
    for (;;) {
        line = next_line(&p, end);
        if (line == NULL) {
            snprintf(err, errlen, "header not terminated");
            goto fail;
        }
        if (strncmp(line, "rcpt ", 5) != 0)
            break;
        a = angle_addr(line + 5);
        if (a == NULL || !addr_valid(a, strlen(a), false, &m->has_utf8_addr)) {
            snprintf(err, errlen, "bad 'rcpt <ADDRESS>' line");
            goto fail;
        }
        if (m->nrcpts == max_rcpts) {
            snprintf(err, errlen, "more than %zu recipients", max_rcpts);
            goto fail;
        }
        if (m->nrcpts == cap) {
            cap = cap ? cap * 2 : 8;
            const char **n = realloc(m->rcpts, cap * sizeof(*n));
            if (n == NULL) {
                snprintf(err, errlen, "out of memory");
                goto fail;
            }
            m->rcpts = n;
        }
        m->rcpts[m->nrcpts++] = a;
    }
    if (m->nrcpts == 0) {
        snprintf(err, errlen, "no recipient");
        goto fail;
    }
    char *num_end = NULL;
    unsigned long long size = 0;
    if (strncmp(line, "size ", 5) != 0 || line[5] < '0' || line[5] > '9' ||
        (errno = 0, size = strtoull(line + 5, &num_end, 10), errno != 0) || *num_end != '\0') {
        snprintf(err, errlen, "bad or missing 'size N' line");
        goto fail;
    }
    line = next_line(&p, end);
    if (line == NULL || line[0] != '\0') {
        snprintf(err, errlen, "no blank line after the header");
        goto fail;
    }
    if (size > max_size) {
        snprintf(err, errlen, "message of %llu bytes exceeds the maximum of %llu", size,
                 (unsigned long long)max_size);
        goto fail;
    }
    if ((size_t)(end - p) != size + tl) {
        snprintf(err, errlen, "size %llu does not match the file", size);
        goto fail;
    }
    /* Wire form: CRLF lines, no bare CR or LF, no line that is a lone "."
     * (it would end DATA when the message is sent on: RFC 5321 4.5.2). */
    const unsigned char *d = (const unsigned char *)p;
    for (size_t i = 0; i < size; i++) {
        if (d[i] >= 0x80)
            m->has_8bit = true;
        if (d[i] == '\r' && (i + 1 >= size || d[i + 1] != '\n'))
            goto bad_data;
        if (d[i] == '\n' && (i == 0 || d[i - 1] != '\r'))
            goto bad_data;
        if ((i == 0 || d[i - 1] == '\n') && d[i] == '.' && i + 1 < size && d[i + 1] == '\r')
            goto bad_data;
    }
    if (size > 0 && (size < 2 || d[size - 2] != '\r' || d[size - 1] != '\n'))
        goto bad_data;
    m->data = p;
    m->size = size;
    return 0;
bad_data:
    snprintf(err, errlen, "message is not in wire form (bare CR or LF, a lone '.', or no "
                          "final CRLF)");
fail:
    free(m->rcpts);
    m->rcpts = NULL;
    return -1;
}

/* ---- the writer ---- */

static int write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int maildrop_write(const char *dir, const char *sender, const char *const *rcpts, size_t nrcpts,
                   const char *data, size_t data_len, char *name, char *err, size_t errlen)
{
    unsigned char rnd[16];
    char path[PATH_MAX];
    int rc, fd;

    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        rc = -errno;
        snprintf(err, errlen, "getrandom: %s", strerror(-rc));
        return rc;
    }
    name[0] = 'm';
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(name + 1 + 2 * i, 3, "%02x", rnd[i]);
    if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path)) {
        snprintf(err, errlen, "%s: path too long", dir);
        return -ENAMETOOLONG;
    }
    if (strlen(sender) > MAILDROP_ADDR_MAX) {
        snprintf(err, errlen, "sender address too long");
        return -EINVAL;
    }
    for (size_t i = 0; i < nrcpts; i++) {
        if (strlen(rcpts[i]) > MAILDROP_ADDR_MAX) {
            snprintf(err, errlen, "recipient address too long: %.64s...", rcpts[i]);
            return -EINVAL;
        }
    }
    /* The header: its lines are short and bounded by nrcpts. */
    size_t hcap = 64 + (nrcpts + 1) * (MAILDROP_ADDR_MAX + 16);
    char *hdr = malloc(hcap);
    if (hdr == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    size_t hl = (size_t)snprintf(hdr, hcap, "%sfrom <%s>\n", MD_MAGIC, sender);
    for (size_t i = 0; i < nrcpts; i++)
        hl += (size_t)snprintf(hdr + hl, hcap - hl, "rcpt <%s>\n", rcpts[i]);
    hl += (size_t)snprintf(hdr + hl, hcap - hl, "size %zu\n\n", data_len);

    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot create a file in %s: %s", dir, strerror(-rc));
        free(hdr);
        return rc;
    }
    /* 0640 whatever the umask: the group is the daemon's (the directory is
     * set-group-ID), so the daemon may read it and other users may not. */
    rc = 0;
    if (fchmod(fd, MAILDROP_FILE_MODE) < 0)
        rc = -errno;
    if (rc == 0)
        rc = write_all(fd, hdr, hl);
    if (rc == 0)
        rc = write_all(fd, data, data_len);
    if (rc == 0)
        rc = write_all(fd, MD_TRAILER, strlen(MD_TRAILER));
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    free(hdr);
    if (rc == 0)
        return 0;
    snprintf(err, errlen, "cannot write %s: %s", path, strerror(-rc));
    unlink(path);
    return rc;
}
