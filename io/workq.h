/* SPDX-License-Identifier: MIT */
/*
 * workq.h - a few threads that run blocking jobs (file writes with fsync,
 * child processes) for the reactors, which must never block: a job is
 * queued from any loop, run on a worker, and its completion runs back on
 * the loop that queued it (io_loop_post).
 *
 * Jobs run in the order queued, up to nworkers at once.  Workers start with
 * SIGPIPE blocked, so a job that writes to a pipe or socket whose reader
 * is gone gets EPIPE instead of killing the process.
 */
#ifndef ORTOO_WORKQ_H
#define ORTOO_WORKQ_H

#include "io/loop.h"

struct workq;
struct workq_item;

typedef void (*workq_fn)(struct workq_item *it);

/* Embedded by the caller in its own request (container_of to get back). */
struct workq_item {
    workq_fn run;           /* on a worker thread */
    workq_fn done;          /* afterwards, on the queuing loop's thread */
    /* private: */
    struct io_loop *loop;
    struct workq_item *next;
};

/* Start nworkers threads (>= 1).  NULL when threads or memory run out. */
struct workq *workq_new(unsigned nworkers);

/* Stop the workers after every queued job has run and its done() is
 * posted.  The loops posted to must run those callbacks. */
void workq_free(struct workq *q);

/*
 * Queue it (run and done set) for a worker; done() runs later on loop's
 * thread, and is never lost.  Returns 0, or -EINVAL (a field missing) /
 * -ESHUTDOWN (the queue is stopping), in which case done() will not run.
 * Never blocks on I/O.
 */
int workq_submit(struct workq *q, struct io_loop *loop, struct workq_item *it);

#endif
