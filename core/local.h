/* SPDX-License-Identifier: MIT */
/*
 * local.h - local delivery, the scheduler's hook for recipients at local
 * domains (delivery/scheduler.h, sched_local_fn).
 *
 * Each due local recipient is resolved again (core/recipients.h, with the
 * reactor's current users and aliases and the message's reception time for
 * SRS), because aliases may have changed since RCPT:
 *  - a user's mailbox: a Maildir file written by delivery/maildir.h's
 *    workers, straight from the spool segment (pread of the view's fd: no
 *    copy on the reactor);
 *  - a forward (an alias to a remote address, or an SRS bounce address
 *    going back): one new message in the spool per job and sender, to the
 *    remote addresses, with the SRS sender (recipients_forward_sender); the
 *    recipient is delivered once that message is durable;
 *  - a command ("|cmd", [local] allow_pipe): run by delivery/pipe.h's
 *    workers (their own pool, as many as the Maildir writers) with the
 *    message on its stdin, read from the segment like a Maildir file; its
 *    exit status decides (0 delivered, 75 or a signal or [local]
 *    pipe_timeout temporary, anything else 5.3.0 with its output);
 *  - nobody by that name any more: fails (5.1.1).
 * A recipient with several destinations is delivered when all of them are;
 * if one fails temporarily the recipient is tried again as a whole (the
 * mailboxes that got it already may get it twice).
 *
 * Threads: local_deliver runs on a reactor; the Maildir and command
 * workers post their results back to that reactor's loop.
 */
#ifndef ORTOO_LOCAL_H
#define ORTOO_LOCAL_H

struct local;
struct smtp_reactor;
struct sched_local_job;

/* Start the Maildir workers (nworkers threads, host in the file names) and
 * as many command workers.  NULL on failure (errno). */
struct local *local_new(unsigned nworkers, const char *host);

/* Stop the workers; nothing may be in flight (the schedulers waited for
 * their local jobs). */
void local_free(struct local *l);

/*
 * Deliver the job's recipients (sched_local_fn, on reactor r: its users,
 * configuration and spool shard).  Results come through
 * sched_local_result/sched_local_done, later or at once.  Returns 0, or
 * -ENOMEM (the scheduler defers the recipients).
 */
int local_deliver(struct local *l, struct smtp_reactor *r, struct sched_local_job *j);

#endif
