/* SPDX-License-Identifier: MIT */
/*
 * privdrop.c - switching from root to [server] user at start-up (see
 * privdrop.h).  The order matters: the caller binds the listeners and loads
 * certificates first (they may need root), then the spool is given to the
 * target account, then the ids change, and only then do the reactors start
 * and open the spool shards, so every file the daemon creates afterwards
 * belongs to the account it runs as.
 */
#include "core/privdrop.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"
#include "io/log.h"

#define PRIV_SPOOL_MODE 0751

int priv_resolve(const struct config *cfg, struct priv_target *t, char *err, size_t errlen)
{
    memset(t, 0, sizeof(*t));
    const char *user = cfg->user != NULL ? cfg->user : CONFIG_DEFAULT_USER;

    if (geteuid() != 0) {
        struct passwd *pw = getpwuid(geteuid());
        t->uid = geteuid();
        t->gid = getegid();
        snprintf(t->name, sizeof(t->name), "%s", pw != NULL ? pw->pw_name : "?");
        if (strcmp(t->name, user) != 0)
            log_info("event=privileges user=%s configured_user=%s (not started as root: "
                     "running as the current user)",
                     t->name, user);
    } else if (strcmp(user, "root") == 0) {
        t->uid = 0;
        t->gid = 0;
        snprintf(t->name, sizeof(t->name), "root");
        log_warnx("event=privileges user=root (user = root in [server]: running as root)");
    } else {
        errno = 0;
        struct passwd *pw = getpwnam(user);
        if (pw == NULL) {
            snprintf(err, errlen,
                     "[server] user '%s' does not exist: create it (useradd --system "
                     "--home-dir %s --shell /usr/sbin/nologin %s) or set 'user = root' in "
                     "[server] to run as root",
                     user, CONFIG_DEFAULT_SPOOL, user);
            return -1;
        }
        if (pw->pw_uid == 0) {
            snprintf(err, errlen,
                     "[server] user '%s' has uid 0: name 'root' explicitly to run as root",
                     user);
            return -1;
        }
        t->drop = true;
        t->uid = pw->pw_uid;
        t->gid = pw->pw_gid;
        snprintf(t->name, sizeof(t->name), "%s", user);
    }
    t->control_gid = t->gid;
    if (cfg->control_group != NULL) {
        struct group *gr = getgrnam(cfg->control_group);
        if (gr == NULL) {
            snprintf(err, errlen, "[server] control_group '%s' does not exist",
                     cfg->control_group);
            return -1;
        }
        t->control_gid = gr->gr_gid;
    }
    return 0;
}

/* nftw state: the target and the maildrop path (whose files keep their
 * submitters as owners). */
static const struct priv_target *walk_target;
static char walk_maildrop[PATH_MAX];
static int walk_errno;
static char walk_path[PATH_MAX];

static int on_spool_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    size_t ml = strlen(walk_maildrop);
    if (strncmp(path, walk_maildrop, ml) == 0 && path[ml] == '/')
        return 0; /* a submitted file: not ours to give away */
    if (type == FTW_SL || (st->st_uid == walk_target->uid && st->st_gid == walk_target->gid))
        return 0;
    if (lchown(path, walk_target->uid, walk_target->gid) < 0) {
        walk_errno = errno;
        snprintf(walk_path, sizeof(walk_path), "%s", path);
        return 1;
    }
    return 0;
}

int priv_prepare_spool(const char *spool, const struct priv_target *t, char *err,
                       size_t errlen)
{
    struct stat st;

    if (stat(spool, &st) < 0) {
        if (errno != ENOENT) {
            snprintf(err, errlen, "spool %s: %s", spool, strerror(errno));
            return -1;
        }
        /* Parents as root would make them: 0755; the spool itself 0751. */
        char buf[PATH_MAX];
        snprintf(buf, sizeof(buf), "%s", spool);
        for (char *p = buf + 1; *p != '\0'; p++) {
            if (*p != '/')
                continue;
            *p = '\0';
            if (mkdir(buf, 0755) < 0 && errno != EEXIST) {
                snprintf(err, errlen, "cannot create %s: %s", buf, strerror(errno));
                return -1;
            }
            *p = '/';
        }
        if (mkdir(spool, PRIV_SPOOL_MODE) < 0 && errno != EEXIST) {
            snprintf(err, errlen, "cannot create the spool %s: %s", spool, strerror(errno));
            return -1;
        }
        if (chmod(spool, PRIV_SPOOL_MODE) < 0) {
            snprintf(err, errlen, "chmod %s: %s", spool, strerror(errno));
            return -1;
        }
        log_info("event=spool-created path=%s", spool);
    } else if (!S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "spool %s is not a directory", spool);
        return -1;
    }
    if (!t->drop)
        return 0;
    walk_target = t;
    snprintf(walk_maildrop, sizeof(walk_maildrop), "%s/maildrop", spool);
    walk_errno = 0;
    if (nftw(spool, on_spool_entry, 16, FTW_PHYS) != 0) {
        snprintf(err, errlen, "cannot give %s to user %s: %s", walk_errno ? walk_path : spool,
                 t->name, strerror(walk_errno ? walk_errno : errno));
        return -1;
    }
    return 0;
}

int priv_drop(const struct priv_target *t, char *err, size_t errlen)
{
    if (!t->drop)
        return 0;
    if (initgroups(t->name, t->gid) < 0) {
        snprintf(err, errlen, "initgroups(%s): %s", t->name, strerror(errno));
        return -1;
    }
    if (setresgid(t->gid, t->gid, t->gid) < 0) {
        snprintf(err, errlen, "setresgid(%ld): %s", (long)t->gid, strerror(errno));
        return -1;
    }
    if (setresuid(t->uid, t->uid, t->uid) < 0) {
        snprintf(err, errlen, "setresuid(%ld): %s", (long)t->uid, strerror(errno));
        return -1;
    }
    uid_t ru, eu, su;
    gid_t rg, eg, sg;
    if (getresuid(&ru, &eu, &su) < 0 || getresgid(&rg, &eg, &sg) < 0 || ru != t->uid ||
        eu != t->uid || su != t->uid || rg != t->gid || eg != t->gid || sg != t->gid) {
        snprintf(err, errlen, "the user and group ids did not change to %ld:%ld",
                 (long)t->uid, (long)t->gid);
        return -1;
    }
    if (setuid(0) == 0 || seteuid(0) == 0) {
        snprintf(err, errlen, "root could be regained after switching to %s", t->name);
        return -1;
    }
    log_info("event=privileges user=%s uid=%ld gid=%ld (dropped root)", t->name, (long)t->uid,
             (long)t->gid);
    return 0;
}
