/* SPDX-License-Identifier: MIT */
/*
 * smtp_pool.c - idle connections per destination key (see smtp_pool.h).
 *
 * A parked connection is an entry in its key's stack (most recent first,
 * so that the warmest connection is reused and the others reach their idle
 * limit).  Keys are few (the destinations one reactor talks to at a time),
 * so a key is found by a walk over the keys in use.  While a client is
 * parked its callbacks come here; the only one that matters is closed()
 * (the idle limit passed and the client QUIT, or the server went away),
 * which drops the entry.
 */
#include "delivery/smtp_pool.h"

#include <stdlib.h>
#include <string.h>

#include "io/log.h"

struct pool_key;

/* One parked connection.  Invariant: in its key's stack. */
struct pool_entry {
    struct smtp_pool *pool;
    struct pool_key *key;
    struct smtp_client *c;
    struct pool_entry *prev, *next; /* the key's stack, most recent first */
};

/* A key with parked connections.  Invariant: top != NULL, n entries. */
struct pool_key {
    char *name;                     /* owned */
    struct pool_entry *top;
    size_t n;
    struct pool_key *next;          /* the pool's keys */
};

/* Invariant: n == the sum of the keys' n, n <= max. */
struct smtp_pool {
    struct pool_key *keys;
    size_t n;
    size_t max;
};

static struct pool_key *key_find(const struct smtp_pool *p, const char *name)
{
    for (struct pool_key *k = p->keys; k != NULL; k = k->next)
        if (strcmp(k->name, name) == 0)
            return k;
    return NULL;
}

/* Unlink and free e (and its key when it was the last). */
static void entry_drop(struct pool_entry *e)
{
    struct smtp_pool *p = e->pool;
    struct pool_key *k = e->key;

    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        k->top = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    k->n--;
    p->n--;
    free(e);
    if (k->top == NULL) {
        struct pool_key **pp = &p->keys;
        while (*pp != k)
            pp = &(*pp)->next;
        *pp = k->next;
        free(k->name);
        free(k);
    }
}

static void pool_on_ready(struct smtp_client *c, void *arg)
{
    (void)c; /* parked clients were ready already */
    (void)arg;
}

static void pool_on_done(struct smtp_client *c, struct smtp_msg *m, void *arg)
{
    (void)c; /* parked clients carry no message */
    (void)m;
    (void)arg;
}

/* The connection ended while parked: forget it. */
static void pool_on_closed(struct smtp_client *c, const struct smtp_result *why, void *arg)
{
    struct pool_entry *e = arg;

    log_debug("smtp_pool event=closed client=%s key=\"%s\" stage=%s", smtp_client_id(c),
              e->key->name, smtp_stage_name(why->stage));
    entry_drop(e);
}

static const struct smtp_client_ops pool_ops = {pool_on_ready, pool_on_done, pool_on_closed};

/* Callbacks of a client being QUIT by the pool: nobody listens. */
static void quit_on_closed(struct smtp_client *c, const struct smtp_result *why, void *arg)
{
    (void)c;
    (void)why;
    (void)arg;
}

static const struct smtp_client_ops quit_ops = {pool_on_ready, pool_on_done, quit_on_closed};

/* Let c go: QUIT when idle, else drop it. */
static void client_release(struct smtp_client *c)
{
    smtp_client_set_ops(c, &quit_ops, NULL);
    if (smtp_client_quit(c) < 0)
        smtp_client_close(c);
}

struct smtp_pool *smtp_pool_new(size_t max_idle)
{
    struct smtp_pool *p = calloc(1, sizeof *p);

    if (p != NULL)
        p->max = max_idle ? max_idle : 1024;
    return p;
}

void smtp_pool_free(struct smtp_pool *p)
{
    if (p == NULL)
        return;
    while (p->keys != NULL) {
        struct pool_entry *e = p->keys->top;
        struct smtp_client *c = e->c;

        entry_drop(e);
        client_release(c);
    }
    free(p);
}

void smtp_pool_put(struct smtp_pool *p, const char *key, struct smtp_client *c, unsigned max_msgs)
{
    struct pool_key *k;
    struct pool_entry *e;

    if (!smtp_client_idle(c) || p->n >= p->max ||
        (max_msgs > 0 && smtp_client_info(c)->messages >= max_msgs))
        goto release;
    k = key_find(p, key);
    e = calloc(1, sizeof *e);
    if (e == NULL)
        goto release;
    if (k == NULL) {
        k = calloc(1, sizeof *k);
        if (k == NULL || (k->name = strdup(key)) == NULL) {
            free(k);
            free(e);
            goto release;
        }
        k->next = p->keys;
        p->keys = k;
    }
    e->pool = p;
    e->key = k;
    e->c = c;
    e->next = k->top;
    if (k->top != NULL)
        k->top->prev = e;
    k->top = e;
    k->n++;
    p->n++;
    smtp_client_set_ops(c, &pool_ops, e);
    return;
release:
    client_release(c);
}

struct smtp_client *smtp_pool_get(struct smtp_pool *p, const char *key,
                                  const struct smtp_client_ops *ops, void *arg)
{
    struct pool_key *k = key_find(p, key);

    while (k != NULL) {
        struct pool_entry *e = k->top;
        struct smtp_client *c = e->c;
        bool last = k->n == 1;

        entry_drop(e); /* may free k */
        if (smtp_client_idle(c)) {
            smtp_client_set_ops(c, ops, arg);
            return c;
        }
        client_release(c); /* not idle: cannot happen, but never hand it out */
        if (last)
            break;
    }
    return NULL;
}

size_t smtp_pool_idle(const struct smtp_pool *p, const char *key)
{
    const struct pool_key *k;

    if (key == NULL)
        return p->n;
    k = key_find(p, key);
    return k != NULL ? k->n : 0;
}
