/* SPDX-License-Identifier: MIT */
/*
 * policy.c - the relay, submission, rate and penalty-box rules of the SMTP
 * server (see policy.h for the rules themselves).
 *
 * The trusted networks are a short list from ortoo.conf, matched by a scan
 * at accept (a few compares; the list is not meant to hold thousands of
 * networks).  Rates and boxes live in the shared tables of core/limits.c;
 * this file only decides which key, which rate and which box rule apply.
 */
#include "core/policy.h"

#include <netinet/in.h>
#include <string.h>

#include "core/users.h"

/* The address of peer as (family, 4 or 16 bytes), v4-mapped made IPv4.
 * Returns the family, 0 for anything else. */
static int peer_addr(const struct sockaddr_storage *peer, uint8_t out[16])
{
    if (peer->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)peer;
        if (IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr)) {
            memcpy(out, &a6->sin6_addr.s6_addr[12], 4);
            return AF_INET;
        }
        memcpy(out, &a6->sin6_addr, 16);
        return AF_INET6;
    }
    if (peer->ss_family == AF_INET) {
        memcpy(out, &((const struct sockaddr_in *)peer)->sin_addr, 4);
        return AF_INET;
    }
    return 0;
}

/* True when the first plen bits of a and b agree. */
static bool prefix_equal(const uint8_t *a, const uint8_t *b, unsigned plen)
{
    size_t whole = plen / 8;
    if (memcmp(a, b, whole) != 0)
        return false;
    unsigned rest = plen % 8;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xFF00u >> rest);
    return ((a[whole] ^ b[whole]) & mask) == 0;
}

bool policy_trusted(const struct config *cfg, const struct sockaddr_storage *peer)
{
    uint8_t addr[16];
    int fam = peer_addr(peer, addr);
    if (fam == 0)
        return false;
    for (size_t i = 0; i < cfg->relay.ntrusted; i++) {
        const struct config_cidr *n = &cfg->relay.trusted[i];
        if (n->family == fam && prefix_equal(addr, n->addr, n->plen))
            return true;
    }
    return false;
}

static bool peer_loopback(const struct sockaddr_storage *peer)
{
    uint8_t addr[16];
    int fam = peer_addr(peer, addr);
    if (fam == AF_INET)
        return addr[0] == 127;
    return fam == AF_INET6 && IN6_IS_ADDR_LOOPBACK((const struct in6_addr *)addr);
}

uint64_t policy_admit(struct policy_client *pc, const struct config *cfg, struct limits *l,
                      const struct sockaddr_storage *peer, const struct limits_key *k,
                      uint64_t now)
{
    memset(pc, 0, sizeof(*pc));
    pc->trusted = policy_trusted(cfg, peer);
    pc->loopback = peer_loopback(peer);
    if (pc->trusted || cfg->limits.penalty_time == 0)
        return 0;
    return limits_box_left(l, k, now);
}

/* The messages per hour of an authenticated user: its own entry in
 * user_messages_per_hour, else messages_per_hour. */
static unsigned user_rate(const struct config *cfg, const char *user)
{
    size_t len = strlen(user);
    for (size_t i = 0; i < cfg->relay.nuser_rates; i++) {
        const struct config_user_rate *u = &cfg->relay.user_rates[i];
        if (users_addr_equal(u->user, strlen(u->user), user, len))
            return u->per_hour;
    }
    return cfg->relay.messages_per_hour;
}

enum policy_mail policy_mail(struct policy_client *pc, const struct config *cfg,
                             struct limits *l, const struct users *users,
                             const char *auth_user, const struct limits_key *k,
                             const char *sender, size_t len, bool is_null, uint64_t now)
{
    if (auth_user != NULL && !is_null &&
        !users_addr_equal(auth_user, strlen(auth_user), sender, len))
        return POLICY_MAIL_NOT_OWNER;
    policy_mail_end(pc, l, false, now); /* a transaction left open: give it back */
    unsigned rate = 0;
    struct limits_key key;
    memset(&key, 0, sizeof(key));
    if (auth_user != NULL) {
        rate = user_rate(cfg, auth_user);
        if (rate != 0) {
            /* The table's form of the name: Alice@ and alice@ are one
             * account unless local parts are case-sensitive. */
            char canon[USERS_KEY_MAX + 1];
            int n = users_key(users, auth_user, strlen(auth_user), canon);
            if (n >= 0)
                limits_key_account(l, canon, (size_t)n, &key);
            else
                limits_key_account(l, auth_user, strlen(auth_user), &key);
        }
    } else if (pc->trusted) {
        rate = cfg->relay.messages_per_hour;
        key = *k;
    }
    if (rate == 0)
        return POLICY_MAIL_OK;
    if (!limits_rate_take(l, &key, rate, now))
        return POLICY_MAIL_RATE;
    pc->rate_taken = true;
    pc->rate_per_hour = rate;
    pc->rate_key = key;
    return POLICY_MAIL_OK;
}

void policy_mail_end(struct policy_client *pc, struct limits *l, bool queued, uint64_t now)
{
    if (!pc->rate_taken)
        return;
    if (!queued)
        limits_rate_refund(l, &pc->rate_key, pc->rate_per_hour, now);
    pc->rate_taken = false;
}

uint64_t policy_abuse(const struct policy_client *pc, const struct config *cfg,
                      struct limits *l, const struct limits_key *k, uint64_t now,
                      unsigned *level)
{
    if (level != NULL)
        *level = 0;
    if (pc->trusted)
        return 0;
    const struct limits_box_rule rule = {
        .time_ns = (uint64_t)cfg->limits.penalty_time * 1000000000ull,
        .max_ns = (uint64_t)cfg->limits.penalty_max * 1000000000ull,
        .escalate = !pc->loopback,
    };
    return limits_box_add(l, k, &rule, now, level);
}
