/* SPDX-License-Identifier: MIT */
/*
 * queue_ctl.c - `queue flush|delete|bounce` on the control socket (see
 * queue_ctl.h).
 *
 * One struct qjob per request: the request, the operation, its target and
 * one part per reactor (the argument io_loop_post hands each reactor).
 * Invariant: pending counts the reactors that have not answered; the one
 * that brings it to 0 posts qjob_finish to the main thread, which answers
 * and frees the job.
 */
#include "core/queue_ctl.h"

#include <ctype.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/control.h"
#include "delivery/scheduler.h"
#include "io/log.h"
#include "io/loop.h"

enum qop { QOP_FLUSH, QOP_DELETE, QOP_BOUNCE };

struct queue_ctl {
    struct control *ctl;
    unsigned n;
    struct io_loop **loops;
    struct sched **scheds;
};

struct qjob;

struct qpart {
    struct qjob *job;
    unsigned idx;
};

struct qjob {
    struct queue_ctl *q;
    struct control_req *req;
    enum qop op;
    char target[256];          /* "" for a flush of everything */
    atomic_uint pending;
    atomic_int found;          /* messages acted on, summed */
    atomic_int err;            /* first error other than -ENOENT */
    struct control_task task;
    struct qpart parts[];
};

static void qjob_finish(void *arg)
{
    struct qjob *j = arg;
    int found = atomic_load(&j->found), err = atomic_load(&j->err);

    if (err != 0) {
        control_done(j->req, false, "%s", strerror(-err));
    } else if (j->op == QOP_FLUSH) {
        control_done(j->req, true, "flushed %d message%s", found, found == 1 ? "" : "s");
    } else if (found == 0) {
        control_done(j->req, false, "no message %s in the queue", j->target);
    } else {
        log_info("msgid=%s event=%s by=control", j->target,
                 j->op == QOP_DELETE ? "admin-delete" : "admin-bounce");
        control_done(j->req, true, "%s %s", j->op == QOP_DELETE ? "deleted" : "bounced",
                     j->target);
    }
    free(j);
}

/* On reactor p->idx. */
static void qpart_run(void *arg)
{
    struct qpart *p = arg;
    struct qjob *j = p->job;
    struct sched *s = j->q->scheds[p->idx];
    int r = 0;

    switch (j->op) {
    case QOP_FLUSH: r = sched_flush(s, j->target[0] ? j->target : NULL); break;
    case QOP_DELETE: r = sched_delete(s, j->target); break;
    case QOP_BOUNCE: r = sched_bounce(s, j->target); break;
    }
    if (r > 0)
        atomic_fetch_add(&j->found, r);
    else if (r < 0 && r != -ENOENT) {
        int zero = 0;
        atomic_compare_exchange_strong(&j->err, &zero, r);
    }
    if (atomic_fetch_sub(&j->pending, 1) == 1)
        control_post(j->q->ctl, &j->task, qjob_finish, j);
}

/* An id or a domain: letters, digits, '.', '-', '_'; nothing else. */
static bool target_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 253)
        return false;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-' && *p != '_')
            return false;
    return true;
}

static void cmd_queue(struct control_req *req, int argc, char **argv, void *arg)
{
    struct queue_ctl *q = arg;
    enum qop op;

    if (argc >= 2 && strcmp(argv[1], "flush") == 0 && argc <= 3)
        op = QOP_FLUSH;
    else if (argc == 3 && strcmp(argv[1], "delete") == 0)
        op = QOP_DELETE;
    else if (argc == 3 && strcmp(argv[1], "bounce") == 0)
        op = QOP_BOUNCE;
    else {
        control_done(req, false, "usage: queue flush [ID|DOMAIN] | queue delete ID | "
                                 "queue bounce ID");
        return;
    }
    const char *target = argc == 3 ? argv[2] : "";
    if (argc == 3 && !target_ok(target)) {
        control_done(req, false, "not a message id or a domain: %s", target);
        return;
    }
    struct qjob *j = calloc(1, sizeof *j + q->n * sizeof j->parts[0]);
    if (j == NULL) {
        control_done(req, false, "out of memory");
        return;
    }
    j->q = q;
    j->req = req;
    j->op = op;
    snprintf(j->target, sizeof j->target, "%s", target);
    atomic_init(&j->pending, q->n);
    atomic_init(&j->found, 0);
    atomic_init(&j->err, 0);
    for (unsigned i = 0; i < q->n; i++) {
        j->parts[i] = (struct qpart){j, i};
        if (io_loop_post(q->loops[i], qpart_run, &j->parts[i]) < 0) {
            /* Counts as answered with nothing found. */
            if (atomic_fetch_sub(&j->pending, 1) == 1)
                control_post(q->ctl, &j->task, qjob_finish, j);
        }
    }
}

struct queue_ctl *queue_ctl_new(struct control *ctl, unsigned n, struct io_loop *const *loops,
                                struct sched *const *scheds)
{
    struct queue_ctl *q = calloc(1, sizeof *q);
    int r = -ENOMEM;

    if (q == NULL || n == 0)
        goto fail;
    q->ctl = ctl;
    q->n = n;
    q->loops = calloc(n, sizeof *q->loops);
    q->scheds = calloc(n, sizeof *q->scheds);
    if (q->loops == NULL || q->scheds == NULL)
        goto fail;
    memcpy(q->loops, loops, n * sizeof *loops);
    memcpy(q->scheds, scheds, n * sizeof *scheds);
    r = control_register(ctl, "queue", 0,
                         "queue flush [ID|DOMAIN], queue delete ID, queue bounce ID", cmd_queue, q);
    if (r == 0)
        return q;
fail:
    queue_ctl_free(q);
    errno = -r;
    return NULL;
}

void queue_ctl_free(struct queue_ctl *q)
{
    if (q == NULL)
        return;
    free(q->loops);
    free(q->scheds);
    free(q);
}
