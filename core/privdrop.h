/* SPDX-License-Identifier: MIT */
/*
 * privdrop.h - who the daemon runs as.
 *
 * Under systemd the unit starts ortoo as User=ortoo with
 * CAP_NET_BIND_SERVICE, and nothing here changes anything.  Started as root
 * outside systemd, `ortoo serve` binds its ports and loads what only root
 * may read (certificates, keys), prepares the spool for [server] user, and
 * then becomes that user for good (setgroups, setgid, setuid, each checked,
 * and a check that root cannot be regained).  It refuses to keep running as
 * root unless the configuration says `user = root`.
 *
 * Everything here is blocking and runs on the main thread during start-up.
 */
#ifndef ORTOO_PRIVDROP_H
#define ORTOO_PRIVDROP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct config;

/* The account the daemon ends up as. */
struct priv_target {
    bool drop;              /* started as root and must switch to uid/gid */
    uid_t uid;              /* the account (the current one when !drop) */
    gid_t gid;              /* its primary group */
    gid_t control_gid;      /* group of the control socket */
    char name[64];          /* account name, for messages and initgroups */
};

/*
 * Work out the target from [server] user and control_group.  As root:
 * `user = root` keeps root (logged); an unknown user is an error that says
 * how to create it.  Not root: the current account is kept (a warning is
 * logged when it is not the configured user: only root can switch).
 * Returns 0, or -1 with a message in err.
 */
int priv_resolve(const struct config *cfg, struct priv_target *t, char *err, size_t errlen);

/*
 * Make sure the spool directory exists (mode 0751: others may only reach
 * the maildrop and the pickup socket inside) and, when t->drop, that the
 * target owns it and what ortoo made in it (the files of the maildrop keep
 * their submitters).  Returns 0, or -1 with a message in err.
 */
int priv_prepare_spool(const char *spool, const struct priv_target *t, char *err,
                       size_t errlen);

/*
 * Become t (when t->drop): supplementary groups of the account, then gid,
 * then uid, for every thread of the process (glibc applies set*id to all
 * threads), and verify real, effective and saved ids, and that setuid(0)
 * now fails.  Returns 0, or -1 with a message in err (the caller exits).
 */
int priv_drop(const struct priv_target *t, char *err, size_t errlen);

#endif
