/* SPDX-License-Identifier: MIT */
/*
 * watch.h - noticing edits to the config directory's domains/ (users and
 * aliases files, domain directories added or removed) with inotify, so that
 * the daemon reloads its recipient table without a reload command: an alias
 * typed into domains/example.com/aliases applies within a fraction of a
 * second.
 *
 * Used by the main thread of core/server.c only: it polls watch_fd() with
 * its other descriptors and calls watch_read() when it is readable.
 * Watches config_dir (for domains/ itself), config_dir/domains and every
 * domain directory in it (re-scanned whenever the set may have changed).
 * Events on other names (temp files, dkim/, ...) are ignored.
 */
#ifndef ORTOO_WATCH_H
#define ORTOO_WATCH_H

#include <stdbool.h>

struct watch;

/* Start watching config_dir.  NULL with errno when inotify is unavailable
 * (the daemon then relies on SIGHUP). */
struct watch *watch_new(const char *config_dir);
void watch_free(struct watch *w);

/* The inotify descriptor (non-blocking): poll it for POLLIN. */
int watch_fd(const struct watch *w);

/*
 * Drain the pending events.  Returns true when one of them is about a users
 * or aliases file or a domain directory (callers reload, ideally after a
 * short quiet period so that a burst of writes makes one reload).  Never
 * blocks.
 */
bool watch_read(struct watch *w);

#endif
