/* SPDX-License-Identifier: MIT */
/*
 * limits.h - the bounds that hold across reactors: connections in total and
 * per client address prefix, and the memory budget for message bodies.
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
 * Compare with memcmp (padding is zeroed). */
struct limits_key {
    uint8_t family;
    uint8_t plen;              /* prefix length applied */
    uint8_t addr[16];          /* IPv4 in the first 4 bytes */
};

struct limits_params {
    unsigned max_connections;  /* all reactors together */
    unsigned per_address;      /* per prefix */
    unsigned ipv4_prefix;      /* 8..32 */
    unsigned ipv6_prefix;      /* 16..128 */
    uint64_t body_memory;      /* bytes of message bodies in memory, all sessions */
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

#endif
