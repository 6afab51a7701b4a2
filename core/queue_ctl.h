/* SPDX-License-Identifier: MIT */
/*
 * queue_ctl.h - the queue commands of the control socket: `queue flush
 * [ID|DOMAIN]`, `queue delete ID`, `queue bounce ID` on the running daemon.
 *
 * The handler runs on the main thread (core/control.h); it posts the
 * operation to every reactor (io_loop_post), since a message lives in the
 * shard of one of them and a domain's messages in several; each reactor
 * runs the scheduler's function (sched_flush, sched_delete, sched_bounce in
 * delivery/scheduler.h) on its own shard and the last one to finish posts
 * the answer back to the main thread (control_post), which sums the
 * results.  `queue list` and `queue show` need no daemon: the CLI reads the
 * spool (spool_scan is safe while the daemon runs), so there is one
 * implementation of each whether the daemon runs or not.
 */
#ifndef ORTOO_QUEUE_CTL_H
#define ORTOO_QUEUE_CTL_H

struct control;
struct io_loop;
struct sched;

struct queue_ctl;

/*
 * Register "queue" on ctl for n reactors (loops[i] runs scheds[i]).  The
 * arrays are copied; the loops and schedulers must outlive ctl's serving.
 * Returns the registration (free it with queue_ctl_free after control_free)
 * or NULL with errno set.
 */
struct queue_ctl *queue_ctl_new(struct control *ctl, unsigned n, struct io_loop *const *loops,
                                struct sched *const *scheds);
void queue_ctl_free(struct queue_ctl *q);

#endif
