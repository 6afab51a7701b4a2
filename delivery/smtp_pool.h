/* SPDX-License-Identifier: MIT */
/*
 * smtp_pool.h - idle outbound connections kept per destination key, so that
 * the next message for a destination skips the connect, greeting, EHLO and
 * TLS handshake (a reactor owns one pool; no locks).
 *
 * The key is the caller's: it must name everything that makes a
 * connection fit a message (for example "example.com 192.0.2.25:25 dane"
 * for the next hop, the address, the TLS policy, the source address).
 * A parked client stays connected until it is taken back, its idle time
 * limit passes (the client's params.timeouts.idle: it QUITs, and the pool
 * forgets it), the server closes it, or the pool is freed.
 */
#ifndef ORTOO_SMTP_POOL_H
#define ORTOO_SMTP_POOL_H

#include <stddef.h>

#include "delivery/smtp_client.h"

struct smtp_pool;

/* A pool keeping at most max_idle connections in all (0: 1024). NULL on
 * ENOMEM. */
struct smtp_pool *smtp_pool_new(size_t max_idle);

/* QUIT every parked connection (they close on the loop later) and free the
 * pool.  The loop must run on until smtp_client_count() reaches 0 before it
 * is freed. */
void smtp_pool_free(struct smtp_pool *p);

/*
 * Park the idle client c (after ops->ready() or ops->done()) under key.
 * The pool takes c: its callbacks now go to the pool.  When c has carried
 * max_msgs messages already (0: no limit), is not idle, or the pool is
 * full, c is QUIT instead.  Never calls back inside this call.
 */
void smtp_pool_put(struct smtp_pool *p, const char *key, struct smtp_client *c, unsigned max_msgs);

/*
 * Take an idle connection for key, most recently parked first, or NULL.
 * The caller owns it from now: its callbacks go to ops/arg, and it is
 * idle (give it a message with smtp_client_send()).
 */
struct smtp_client *smtp_pool_get(struct smtp_pool *p, const char *key,
                                  const struct smtp_client_ops *ops, void *arg);

/* Parked connections for key (NULL: in all). */
size_t smtp_pool_idle(const struct smtp_pool *p, const char *key);

#endif
