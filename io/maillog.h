/* SPDX-License-Identifier: MIT */
/*
 * maillog.h - one function per mail event, so that every line about a
 * message has the same keys in the same order (what log readers and
 * fail2ban-style filters match on).  Lines go through io/log.h at info.
 * Each event is also counted (io/metrics.h), so that the metrics and the
 * log cannot disagree.
 */
#ifndef ORTOO_MAILLOG_H
#define ORTOO_MAILLOG_H

#include <stddef.h>
#include <stdint.h>

/* A message was made durable and acknowledged with 250. */
void maillog_queued(const char *msgid, const char *session, const char *client,
                    const char *sender, size_t nrcpts, uint64_t size, const char *user);

/* A recipient, a sender or a whole message was refused (reply: the code and
 * enhanced code sent, e.g. "550 5.7.1"). */
void maillog_rejected(const char *session, const char *client, const char *stage,
                      const char *addr, const char *reply, const char *reason);

#endif
