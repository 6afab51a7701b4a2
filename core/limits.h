/* SPDX-License-Identifier: MIT */
/*
 * limits.h - the bounds that hold across reactors: connections in total and
 * per client address prefix, the memory budget for message bodies, the
 * penalty box (prefixes refused at accept after they were closed for
 * abuse) and sending rates (messages per hour per account or prefix).
 *
 * One struct limits per process, made by the server before the reactors
 * start and shared by all of them (and by core/auth.c for its per-prefix
 * throttle key).  Everything here is thread-safe.  Nothing is touched per
 * byte: connections are counted at accept and close (a short critical
 * section on one of LIMITS_STRIPES locks, chosen by the key's hash), body
 * memory when a message buffer grows or is freed (one atomic add).
 *
 * "One client" is an address prefix: by default the whole IPv4 address
 * (/32) and the IPv6 /64 (what one customer of a hosting provider or ISP
 * usually gets), so that an attacker cannot multiply its allowance by
 * rotating through the addresses of its own network.
 *
 * The penalty box and the rates live in fixed-size tables made at start
 * (set-associative: a key may sit in one of LIMITS_WAYS slots of its set,
 * and a full set gives up the entry that matters least), so an attacker
 * with many prefixes cannot grow them: it can only push other entries out.
 * Their times are io_loop_now() nanoseconds (CLOCK_MONOTONIC, the same in
 * every thread), passed in by the caller so that tests can drive a clock.
 */
#ifndef ORTOO_LIMITS_H
#define ORTOO_LIMITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct limits;

/* A client prefix: family (AF_INET or AF_INET6) and the address with the
 * bits past the prefix cleared.  IPv4-mapped IPv6 addresses count as IPv4.
 * An account (limits_key_account) is family LIMITS_KEY_ACCOUNT and a keyed
 * hash of its name in addr.  Compare with memcmp (padding is zeroed). */
struct limits_key {
    uint8_t family;
    uint8_t plen;              /* prefix length applied */
    uint8_t addr[16];          /* IPv4 in the first 4 bytes */
};

#define LIMITS_KEY_ACCOUNT 0xFF  /* family of an account key */

struct limits_params {
    unsigned max_connections;  /* all reactors together */
    unsigned per_address;      /* per prefix */
    unsigned ipv4_prefix;      /* 8..32 */
    unsigned ipv6_prefix;      /* 16..128 */
    uint64_t body_memory;      /* bytes of message bodies in memory, all sessions */
    unsigned box_slots;        /* prefixes the penalty box remembers; 0: 4096 */
    unsigned rate_slots;       /* accounts/prefixes with a sending rate; 0: 4096 */
};

/* Results of limits_conn_acquire(). */
enum limits_verdict { LIMITS_OK = 0, LIMITS_TOTAL, LIMITS_PER_ADDRESS, LIMITS_NOMEM };

/* Make the shared state.  Returns NULL on ENOMEM. */
struct limits *limits_new(const struct limits_params *p);
/* Free it (no reactor may use it any more). */
void limits_free(struct limits *l);

/* The prefix key of a peer address (AF_INET, AF_INET6; anything else gets
 * family 0 and counts as one client). */
void limits_key_of(const struct limits *l, const struct sockaddr_storage *peer,
                   struct limits_key *out);

/* "203.0.113.7/32" or "2001:db8::/64" into buf (cap >= 64). */
const char *limits_key_text(const struct limits_key *k, char *buf, size_t cap);

/*
 * Count one more connection from key k.  LIMITS_OK: counted (release it
 * with limits_conn_release exactly once); otherwise nothing was counted and
 * the verdict says which bound was hit.  Never blocks for long (one striped
 * lock, no I/O).
 */
enum limits_verdict limits_conn_acquire(struct limits *l, const struct limits_key *k);
void limits_conn_release(struct limits *l, const struct limits_key *k);

/* Connections counted now (for logs and tests). */
unsigned limits_conn_total(const struct limits *l);

/*
 * Body memory: charge n more bytes to the budget.  True when they fit (the
 * caller may hold them and must uncharge them when freed); false leaves the
 * budget unchanged.  Lock-free.
 */
bool limits_body_charge(struct limits *l, uint64_t n);
void limits_body_uncharge(struct limits *l, uint64_t n);
/* Bytes of the budget not charged now. */
uint64_t limits_body_free(const struct limits *l);

/*
 * The key of an account (a user name in the form the caller chose to
 * compare, e.g. users_key()): a 128-bit keyed BLAKE2b of it, so that the
 * tables never hold names.
 */
void limits_key_account(const struct limits *l, const char *name, size_t len,
                        struct limits_key *out);

/* --- Penalty box --- */

/* How long an offence boxes a prefix (from [limits], passed per call so a
 * reload applies at once). */
struct limits_box_rule {
    uint64_t time_ns;          /* the first box; 0: the box is off */
    uint64_t max_ns;           /* doubling stops here; also how long a prefix
                                  is remembered after its box ends */
    bool escalate;             /* false: every box is time_ns (loopback) */
};

/*
 * Nanoseconds left in k's box at now, 0 when k is not boxed.  One striped
 * lock, no allocation: cheap enough for every accept.
 */
uint64_t limits_box_left(struct limits *l, const struct limits_key *k, uint64_t now);

/*
 * k was closed for abuse at now: box it.  The first box lasts time_ns; an
 * offence within max_ns of the end of the previous box doubles it (up to
 * max_ns; never with !escalate); later, it starts from time_ns again.  An
 * offence while k is boxed (a session opened before the box) changes
 * nothing.  Returns the length of the new box in ns, 0 when none was set
 * (already boxed, or the box is off); *level (may be NULL) gets the number
 * of doublings.  A full set gives up its entry whose box ends first.
 */
uint64_t limits_box_add(struct limits *l, const struct limits_key *k,
                        const struct limits_box_rule *rule, uint64_t now, unsigned *level);

/* --- Sending rates --- */

/*
 * One message from k at now, at most per_hour an hour (per_hour > 0): a
 * burst of per_hour, then one every hour/per_hour (GCRA, a token bucket
 * kept as one time stamp).  True: counted (limits_rate_refund gives it back
 * if the message is not taken after all); false: over the rate, nothing
 * counted.  A full set gives up the entry with the most budget left.
 */
bool limits_rate_take(struct limits *l, const struct limits_key *k, unsigned per_hour,
                      uint64_t now);
void limits_rate_refund(struct limits *l, const struct limits_key *k, unsigned per_hour,
                        uint64_t now);

#endif
