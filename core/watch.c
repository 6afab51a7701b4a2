/* SPDX-License-Identifier: MIT */
/*
 * watch.c - inotify on domains/ (see watch.h).
 *
 * Three kinds of watched directory: the config directory (we care only
 * about an entry named "domains"), domains/ (any directory entry: a domain
 * added, removed or renamed), and each domain directory (entries named
 * "users" or "aliases": written in place, renamed over, created, deleted).
 * After any domains/-level event the domain directories are scanned again
 * and new ones get a watch; inotify drops the watches of removed ones by
 * itself (IN_IGNORED).  The descriptor-to-kind map is a small array.
 */
#include "core/watch.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/log.h"

enum watch_kind { WK_CONFIG, WK_DOMAINS, WK_DOMAIN };

/* One watch descriptor and what it watches. */
struct watch_entry {
    int wd;
    enum watch_kind kind;
};

/* Invariant: entries[] holds the live watches (a removed one goes at its
 * IN_IGNORED), each wd once. */
struct watch {
    int fd;                      /* inotify instance (owned) */
    char *dir;                   /* the config directory */
    struct watch_entry *entries;
    size_t n, cap;
};

static const uint32_t DIR_EVENTS = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO |
                                   IN_CLOSE_WRITE | IN_ATTRIB | IN_DELETE_SELF;

static void entry_set(struct watch *w, int wd, enum watch_kind kind)
{
    for (size_t i = 0; i < w->n; i++) {
        if (w->entries[i].wd == wd) {
            w->entries[i].kind = kind;
            return;
        }
    }
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 16;
        struct watch_entry *e = realloc(w->entries, cap * sizeof(*e));
        if (e == NULL)
            return; /* that directory goes unwatched; SIGHUP still works */
        w->entries = e;
        w->cap = cap;
    }
    w->entries[w->n++] = (struct watch_entry){wd, kind};
}

static void entry_drop(struct watch *w, int wd)
{
    for (size_t i = 0; i < w->n; i++) {
        if (w->entries[i].wd == wd) {
            w->entries[i] = w->entries[--w->n];
            return;
        }
    }
}

static const struct watch_entry *entry_get(const struct watch *w, int wd)
{
    for (size_t i = 0; i < w->n; i++)
        if (w->entries[i].wd == wd)
            return &w->entries[i];
    return NULL;
}

static void add(struct watch *w, const char *path, enum watch_kind kind)
{
    int wd = inotify_add_watch(w->fd, path, DIR_EVENTS | IN_ONLYDIR);
    if (wd < 0) {
        if (errno != ENOENT && errno != ENOTDIR)
            log_warn("event=watch-failed path=\"%s\"", path);
        return;
    }
    entry_set(w, wd, kind);
}

/* (Re)add watches on domains/ and every directory in it. */
static void scan(struct watch *w)
{
    char path[PATH_MAX];
    DIR *d;
    struct dirent *de;

    snprintf(path, sizeof(path), "%s/domains", w->dir);
    add(w, path, WK_DOMAINS);
    d = opendir(path);
    if (d == NULL)
        return;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        if (snprintf(path, sizeof(path), "%s/domains/%s", w->dir, de->d_name) >=
            (int)sizeof(path))
            continue;
        add(w, path, WK_DOMAIN);
    }
    closedir(d);
}

struct watch *watch_new(const char *config_dir)
{
    struct watch *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->fd < 0 || (w->dir = strdup(config_dir)) == NULL) {
        int e = errno;
        watch_free(w);
        errno = e;
        return NULL;
    }
    add(w, w->dir, WK_CONFIG);
    scan(w);
    return w;
}

void watch_free(struct watch *w)
{
    if (w == NULL)
        return;
    if (w->fd >= 0)
        close(w->fd);
    free(w->dir);
    free(w->entries);
    free(w);
}

int watch_fd(const struct watch *w) { return w->fd; }

bool watch_read(struct watch *w)
{
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    bool changed = false, rescan = false;

    for (;;) {
        ssize_t n = read(w->fd, buf, sizeof(buf));
        if (n <= 0) {
            if (n < 0 && errno == EINTR)
                continue;
            break; /* EAGAIN: drained */
        }
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            const struct watch_entry *e = entry_get(w, ev->wd);
            const char *name = ev->len ? ev->name : "";
            p += sizeof(*ev) + ev->len;
            if (ev->mask & IN_Q_OVERFLOW) {
                changed = rescan = true; /* events were lost: assume the worst */
                continue;
            }
            if (ev->mask & IN_IGNORED) {
                entry_drop(w, ev->wd);
                continue;
            }
            if (e == NULL)
                continue;
            switch (e->kind) {
            case WK_CONFIG:
                if (strcmp(name, "domains") == 0)
                    changed = rescan = true;
                break;
            case WK_DOMAINS:
                if (name[0] != '.' || (ev->mask & IN_DELETE_SELF))
                    changed = rescan = true;
                break;
            case WK_DOMAIN:
                if (strcmp(name, "users") == 0 || strcmp(name, "aliases") == 0)
                    changed = true;
                break;
            }
        }
    }
    if (rescan)
        scan(w);
    return changed;
}
