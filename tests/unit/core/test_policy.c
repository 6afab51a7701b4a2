/* SPDX-License-Identifier: MIT */
/*
 * test_policy.c - unit tests for core/policy.c: trusted networks (IPv4 and
 * IPv6 prefixes of any length, v4-mapped peers, loopback), who may relay
 * and must authenticate on which listener, sender ownership, the sending
 * rate per account and per trusted prefix (given back when a transaction
 * ends without a queued message), the AUTH throttle's client key, and the
 * penalty box (never for trusted networks, never doubling for loopback).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "core/policy.h"

#define S 1000000000ull

static struct sockaddr_storage addr(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (strchr(ip, ':') != NULL) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        assert_int_equal(inet_pton(AF_INET6, ip, &a->sin6_addr), 1);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        assert_int_equal(inet_pton(AF_INET, ip, &a->sin_addr), 1);
    }
    return ss;
}

static struct config_cidr cidr(const char *ip, unsigned plen)
{
    struct config_cidr c;
    memset(&c, 0, sizeof(c));
    c.plen = (uint8_t)plen;
    if (strchr(ip, ':') != NULL) {
        c.family = AF_INET6;
        assert_int_equal(inet_pton(AF_INET6, ip, c.addr), 1);
    } else {
        c.family = AF_INET;
        assert_int_equal(inet_pton(AF_INET, ip, c.addr), 1);
    }
    return c;
}

static struct config_cidr nets[4];
static struct config_user_rate rates[1] = {{.user = "bulk@example.com", .per_hour = 0}};

static struct config mkcfg(void)
{
    struct config cfg;
    memset(&cfg, 0, sizeof(cfg));
    nets[0] = cidr("127.0.0.1", 32);
    nets[1] = cidr("10.20.0.0", 14);      /* 10.20.0.0 - 10.23.255.255 */
    nets[2] = cidr("2001:db8:1::", 48);
    nets[3] = cidr("::1", 128);
    cfg.relay.trusted = nets;
    cfg.relay.ntrusted = 4;
    cfg.relay.messages_per_hour = 2;
    cfg.relay.user_rates = rates;
    cfg.relay.nuser_rates = 1;
    cfg.limits.penalty_time = 10;
    cfg.limits.penalty_max = 600;
    return cfg;
}

static struct limits *mklimits(void)
{
    struct limits_params p = {.max_connections = 100, .per_address = 10, .ipv4_prefix = 32,
                              .ipv6_prefix = 64, .body_memory = 0};
    struct limits *l = limits_new(&p);
    assert_non_null(l);
    return l;
}

static void test_trusted(void **state)
{
    struct config cfg = mkcfg();
    const char *yes[] = {"127.0.0.1", "10.20.0.1", "10.23.255.255", "2001:db8:1:ffff::7",
                         "::1", "::ffff:127.0.0.1", "::ffff:10.21.1.1"};
    const char *no[] = {"127.0.0.2", "10.24.0.0", "10.19.255.255", "2001:db8:2::1", "::2",
                        "192.0.2.1", "::ffff:127.0.0.2"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        struct sockaddr_storage ss = addr(yes[i]);
        if (!policy_trusted(&cfg, &ss))
            fail_msg("%s should be trusted", yes[i]);
    }
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        struct sockaddr_storage ss = addr(no[i]);
        if (policy_trusted(&cfg, &ss))
            fail_msg("%s should not be trusted", no[i]);
    }
    cfg.relay.ntrusted = 0;
    struct sockaddr_storage ss = addr("127.0.0.1");
    assert_false(policy_trusted(&cfg, &ss));
    nets[0] = cidr("0.0.0.0", 0); /* everything IPv4 */
    cfg.relay.ntrusted = 1;
    ss = addr("198.51.100.1");
    assert_true(policy_trusted(&cfg, &ss));
    ss = addr("2001:db8::1");
    assert_false(policy_trusted(&cfg, &ss));
}

static void test_roles(void **state)
{
    struct config cfg = mkcfg();
    struct limits *l = mklimits();
    struct policy_client pc, other;
    struct limits_key k;
    struct sockaddr_storage ss = addr("127.0.0.1");
    limits_key_of(l, &ss, &k);
    assert_int_equal(policy_admit(&pc, &cfg, l, &ss, &k, 1000 * S), 0);
    assert_true(pc.trusted && pc.loopback);
    ss = addr("127.0.0.2");
    limits_key_of(l, &ss, &k);
    assert_int_equal(policy_admit(&other, &cfg, l, &ss, &k, 1000 * S), 0);
    assert_true(!other.trusted && other.loopback);

    assert_true(policy_may_relay(&pc, false));
    assert_false(policy_may_relay(&other, false));
    assert_true(policy_may_relay(&other, true));
    assert_true(policy_is_submission(&pc, false));
    assert_false(policy_is_submission(&other, false));
    for (int r = ROLE_SMTP; r <= ROLE_SUBMISSIONS; r++) {
        assert_false(policy_needs_auth(&pc, (enum listen_role)r, false));
        assert_false(policy_needs_tls(&pc, (enum listen_role)r, false));
    }
    assert_false(policy_needs_auth(&other, ROLE_SMTP, false));
    assert_true(policy_needs_auth(&other, ROLE_SUBMISSION, false));
    assert_true(policy_needs_auth(&other, ROLE_SUBMISSIONS, false));
    assert_false(policy_needs_auth(&other, ROLE_SUBMISSIONS, true));
    assert_true(policy_needs_tls(&other, ROLE_SUBMISSION, false));
    assert_false(policy_needs_tls(&other, ROLE_SUBMISSION, true));
    assert_false(policy_needs_tls(&other, ROLE_SMTP, false));
    assert_null(policy_auth_client(&pc, &k));
    assert_ptr_equal(policy_auth_client(&other, &k), &k);
    limits_free(l);
}

static void test_mail(void **state)
{
    struct config cfg = mkcfg();
    struct limits *l = mklimits();
    struct policy_client trusted, remote;
    struct limits_key kt, kr;
    struct sockaddr_storage ss = addr("10.20.0.9");
    uint64_t t = 1000 * S;
    limits_key_of(l, &ss, &kt);
    policy_admit(&trusted, &cfg, l, &ss, &kt, t);
    ss = addr("192.0.2.1");
    limits_key_of(l, &ss, &kr);
    policy_admit(&remote, &cfg, l, &ss, &kr, t);

#define MAIL(pc, user, k, sender) \
    policy_mail(pc, &cfg, l, NULL, user, k, sender, strlen(sender), false, t)

    /* Ownership: an authenticated user sends as itself (any case); a
     * trusted client without AUTH as anyone. */
    assert_int_equal(MAIL(&remote, "Alice@Example.com", &kr, "bob@example.com"),
                     POLICY_MAIL_NOT_OWNER);
    assert_false(remote.rate_taken);
    assert_int_equal(MAIL(&trusted, NULL, &kt, "anyone@anywhere.example"), POLICY_MAIL_OK);
    assert_true(trusted.rate_taken);
    policy_mail_end(&trusted, l, true, t);               /* queued: 1 of 2 */
    assert_int_equal(MAIL(&trusted, NULL, &kt, "x@y.example"), POLICY_MAIL_OK);
    policy_mail_end(&trusted, l, false, t);              /* RSET: given back */
    policy_mail_end(&trusted, l, false, t);              /* again: nothing */
    assert_int_equal(MAIL(&trusted, NULL, &kt, "x@y.example"), POLICY_MAIL_OK);
    policy_mail_end(&trusted, l, true, t);               /* 2 of 2 */
    assert_int_equal(MAIL(&trusted, NULL, &kt, "x@y.example"), POLICY_MAIL_RATE);
    assert_false(trusted.rate_taken);
    /* The same account from another address shares its budget; the case
     * of the name does not matter (users_key). */
    assert_int_equal(MAIL(&remote, "alice@example.com", &kr, "alice@example.com"),
                     POLICY_MAIL_OK);
    policy_mail_end(&remote, l, true, t);
    assert_int_equal(MAIL(&trusted, "ALICE@example.com", &kt, "alice@example.com"),
                     POLICY_MAIL_OK);
    policy_mail_end(&trusted, l, true, t);
    assert_int_equal(MAIL(&remote, "alice@EXAMPLE.com", &kr, "alice@example.com"),
                     POLICY_MAIL_RATE);
    /* <> is always allowed as a sender, and counts. */
    assert_int_equal(policy_mail(&remote, &cfg, l, NULL, "carol@example.com", &kr, "", 0,
                                 true, t),
                     POLICY_MAIL_OK);
    policy_mail_end(&remote, l, true, t);
    /* A user's own entry: 0 is no limit. */
    for (int i = 0; i < 10; i++) {
        assert_int_equal(MAIL(&remote, "bulk@example.com", &kr, "bulk@example.com"),
                         POLICY_MAIL_OK);
        policy_mail_end(&remote, l, true, t);
    }
    /* Mail from a client that is neither (inbound) is not counted. */
    for (int i = 0; i < 10; i++) {
        assert_int_equal(MAIL(&remote, NULL, &kr, "x@y.example"), POLICY_MAIL_OK);
        assert_false(remote.rate_taken);
    }
    /* An hour later the budget is back. */
    t += 3600 * S;
    assert_int_equal(MAIL(&trusted, NULL, &kt, "x@y.example"), POLICY_MAIL_OK);
    policy_mail_end(&trusted, l, true, t);
#undef MAIL
    limits_free(l);
}

static void test_abuse(void **state)
{
    struct config cfg = mkcfg();
    struct limits *l = mklimits();
    uint64_t t = 1000 * S;
    const char *who[] = {"127.0.0.1", "127.0.0.2", "192.0.2.1"};
    struct policy_client pc[3];
    struct limits_key k[3];
    for (int i = 0; i < 3; i++) {
        struct sockaddr_storage ss = addr(who[i]);
        limits_key_of(l, &ss, &k[i]);
        assert_int_equal(policy_admit(&pc[i], &cfg, l, &ss, &k[i], t), 0);
    }
    /* Trusted: never boxed. */
    assert_int_equal(policy_abuse(&pc[0], &cfg, l, &k[0], t, NULL), 0);
    /* Loopback: 10 s each time; remote: 10, 20, 40 ... */
    for (int round = 0; round < 3; round++) {
        unsigned level;
        assert_true(policy_abuse(&pc[1], &cfg, l, &k[1], t, &level) == 10 * S);
        assert_int_equal(level, 0);
        assert_true(policy_abuse(&pc[2], &cfg, l, &k[2], t, &level) == (10 * S) << round);
        assert_int_equal(level, round);
        for (int i = 0; i < 3; i++) {
            struct sockaddr_storage ss = addr(who[i]);
            struct policy_client tmp;
            uint64_t left = policy_admit(&tmp, &cfg, l, &ss, &k[i], t + S);
            assert_true(i == 0 ? left == 0 : left > 0);
        }
        t += (10 * S << round) + S;
    }
    /* Box off: nothing boxed, nothing refused. */
    cfg.limits.penalty_time = 0;
    assert_int_equal(policy_abuse(&pc[2], &cfg, l, &k[2], t, NULL), 0);
    struct sockaddr_storage ss = addr(who[2]);
    t += 700 * S;
    assert_int_equal(policy_admit(&pc[2], &cfg, l, &ss, &k[2], t), 0);
    limits_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_trusted),
        cmocka_unit_test(test_roles),
        cmocka_unit_test(test_mail),
        cmocka_unit_test(test_abuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
