/* SPDX-License-Identifier: MIT */
/*
 * notice.h - the delivery status notifications that are not failures: a
 * "delivered" or "relayed" notice (NOTIFY=SUCCESS, RFC 3461 4.1) and the
 * "delayed" warning (RFC 3464 2.3.3).  Failures go through bounce.h, which
 * stores the DSN and the failure in one durable step; a notice changes no
 * recipient's state, so it is an ordinary new message (spool_submit) from
 * the null sender to the original's envelope sender.
 *
 * The same rules as bounce.h decide who is told (dsn_wanted(): the
 * recipients' NOTIFY, never the null sender).
 */
#ifndef ORTOO_NOTICE_H
#define ORTOO_NOTICE_H

#include <stddef.h>
#include <stdint.h>

#include "delivery/bounce.h"
#include "delivery/dsn.h"
#include "spool/spool.h"

/*
 * Queue one notice of kind (DSN_DELIVERED, DSN_RELAYED or DSN_DELAYED) for
 * the recipients r[0..n) of the open message v that want it.  For
 * DSN_DELAYED the message's SPOOL_MF_DELAY_WARNED flag is set too (in the
 * same group commit, most of the time; a crash between the two may repeat
 * a warning, never lose a failure).  retry_until: for DSN_DELAYED, when
 * ortoo gives up (0: omitted).  Borrows v and r for the call.  cb (may be
 * NULL) runs once, later, with 0 or the first -errno.  Returns the number
 * of recipients reported (cb will run), 0 when none wants a notice (cb
 * will not run), or -errno (-ENOMEM, -EINVAL) with nothing done.
 */
int notice_send(struct spool_shard *sh, const struct spool_msg_view *v, enum dsn_kind kind,
                const struct bounce_rcpt *r, size_t n, const char *hostname, int64_t now,
                int64_t retry_until, bounce_cb cb, void *arg);

#endif
