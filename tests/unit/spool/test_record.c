/* SPDX-License-Identifier: MIT */
/*
 * test_record.c - the spool's on-disk encodings (spool/record.c): crc32c
 * against published vectors, message ids, envelope and record round trips,
 * and detection of every single-byte corruption and every truncation of a
 * record and of a journal entry (buffers are malloc'ed to their exact length
 * so that ASan catches any read past the end).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spool/record.h"

static void test_crc_vectors(void **state)
{
    uint8_t buf[32];

    assert_int_equal(crc32c(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(crc32c_sw(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(crc32c(0, "", 0), 0);
    /* RFC 3720 B.4 */
    memset(buf, 0, 32);
    assert_int_equal(crc32c(0, buf, 32), 0x8A9136AAu);
    assert_int_equal(crc32c_sw(0, buf, 32), 0x8A9136AAu);
    memset(buf, 0xff, 32);
    assert_int_equal(crc32c(0, buf, 32), 0x62A8AB43u);
    for (int i = 0; i < 32; i++)
        buf[i] = (uint8_t)i;
    assert_int_equal(crc32c(0, buf, 32), 0x46DD794Eu);
    assert_int_equal(crc32c_sw(0, buf, 32), 0x46DD794Eu);
    for (int i = 0; i < 32; i++)
        buf[i] = (uint8_t)(31 - i);
    assert_int_equal(crc32c(0, buf, 32), 0x113FDB5Cu);
}

static void test_crc_chaining(void **state)
{
    uint8_t buf[1000];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)(i * 7 + 3);
    for (size_t len = 0; len < 200; len++) {
        uint32_t whole = crc32c(0, buf + 1, len); /* unaligned start */
        assert_int_equal(crc32c_sw(0, buf + 1, len), whole);
        for (size_t cut = 0; cut <= len; cut += 3) {
            uint32_t c = crc32c(0, buf + 1, cut);
            assert_int_equal(crc32c(c, buf + 1 + cut, len - cut), whole);
            c = crc32c_sw(0, buf + 1, cut);
            assert_int_equal(crc32c_sw(c, buf + 1 + cut, len - cut), whole);
        }
    }
}

static void test_ids(void **state)
{
    enum { N = 5000 };
    char (*ids)[SPOOL_ID_LEN + 1] = malloc(N * sizeof *ids);
    assert_non_null(ids);
    for (int i = 0; i < N; i++) {
        rec_id_make(ids[i], 1700000000, 3, 0); /* same time, shard and seq */
        assert_int_equal(strlen(ids[i]), SPOOL_ID_LEN);
        assert_true(rec_id_valid(ids[i]));
    }
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++)
            assert_int_not_equal(memcmp(ids[i], ids[j], SPOOL_ID_LEN), 0);
    /* time-ordered prefix */
    char a[SPOOL_ID_LEN + 1], b[SPOOL_ID_LEN + 1];
    rec_id_make(a, 1700000000, 0, 0);
    rec_id_make(b, 1700000001, 0, 0);
    assert_true(memcmp(a, b, 6) < 0);
    assert_false(rec_id_valid("abc-defghijklmnopqrs"));
    free(ids);
}

static const char *rcpts[] = {"a@example.org", "b@example.net", "<odd>@x"};

static struct spool_envelope sample_env(void)
{
    return (struct spool_envelope){
        .sender = "sender@example.com",
        .rcpts = rcpts,
        .nrcpts = 3,
        .helo = "client.example.com",
        .client_addr = "192.0.2.1",
        .auth_user = NULL,
        .received = "Received: from client.example.com\r\n\tby mx; Thu, 1 Jan 2025\r\n",
        .flags = SPOOL_F_8BITMIME | SPOOL_F_BDAT,
        .received_at = 1735689600,
    };
}

static void test_env_roundtrip(void **state)
{
    struct spool_envelope env = sample_env();
    size_t n = rec_env_size(&env);
    assert_true(n > REC_ENV_FIXED);
    uint8_t *buf = malloc(n);
    rec_env_encode(&env, buf);
    struct rec_env d;
    assert_int_equal(rec_env_decode(buf, n, &d), 0);
    assert_string_equal(d.sender, env.sender);
    assert_string_equal(d.helo, env.helo);
    assert_string_equal(d.client_addr, env.client_addr);
    assert_null(d.auth_user);
    assert_string_equal(d.received, env.received);
    assert_int_equal(d.nrcpts, 3);
    for (int i = 0; i < 3; i++)
        assert_string_equal(d.rcpts[i], rcpts[i]);
    assert_int_equal(d.flags, env.flags);
    assert_int_equal(d.received_at, env.received_at);
    rec_env_free(&d);

    /* every truncation fails */
    for (size_t len = 0; len < n; len++) {
        uint8_t *t = malloc(len ? len : 1);
        memcpy(t, buf, len);
        assert_int_not_equal(rec_env_decode(t, len, &d), 0);
        free(t);
    }
    free(buf);

    /* null sender "" and auth user */
    env.sender = "";
    env.auth_user = "alice";
    n = rec_env_size(&env);
    buf = malloc(n);
    rec_env_encode(&env, buf);
    assert_int_equal(rec_env_decode(buf, n, &d), 0);
    assert_string_equal(d.sender, "");
    assert_string_equal(d.auth_user, "alice");
    rec_env_free(&d);
    free(buf);

    env.sender = NULL;
    assert_int_equal(rec_env_size(&env), 0);
}

/* Build a whole record into an exact-size malloc'ed buffer. */
static uint8_t *make_record(const char *id, const char *data, size_t *total)
{
    struct spool_envelope env = sample_env();
    size_t el = rec_env_size(&env), dl = strlen(data);
    size_t t = REC_HDR_LEN + el + dl;
    t += rec_pad(t);
    uint8_t *r = calloc(1, t);
    rec_env_encode(&env, r + REC_HDR_LEN);
    memcpy(r + REC_HDR_LEN + el, data, dl);
    struct iovec iov[2] = {{(void *)data, dl / 2}, {(void *)(data + dl / 2), dl - dl / 2}};
    rec_hdr_build(r, id, r + REC_HDR_LEN, (uint32_t)el, iov, 2, dl);
    *total = t;
    return r;
}

static void test_record_roundtrip(void **state)
{
    const char *data = "Subject: hi\r\n\r\nhello\r\n..dot\r\n";
    const char *id = "0123456789ABCDEFGHIJ";
    size_t total;
    uint8_t *r = make_record(id, data, &total);
    struct rec_view v;

    assert_int_equal(total % REC_ALIGN, 0);
    assert_int_equal(rec_parse(r, total, &v), 0);
    assert_string_equal(v.id, id);
    assert_int_equal(v.total, total);
    assert_int_equal(v.data_len, strlen(data));
    assert_memory_equal(v.data, data, strlen(data));
    struct rec_env d;
    assert_int_equal(rec_env_decode(v.env, v.env_len, &d), 0);
    assert_string_equal(d.rcpts[2], "<odd>@x");
    rec_env_free(&d);

    /* two records back to back parse one after the other */
    uint8_t *two = malloc(2 * total);
    memcpy(two, r, total);
    memcpy(two + total, r, total);
    assert_int_equal(rec_parse(two, 2 * total, &v), 0);
    assert_int_equal(v.total, total);
    assert_int_equal(rec_parse(two + total, total, &v), 0);
    free(two);
    free(r);
}

static void test_record_corruption(void **state)
{
    const char *data = "From: a@b\r\n\r\nbody line one\r\nbody\r\n"; /* odd length: padding */
    size_t total;
    uint8_t *r = make_record("zzzzzzzzzzzzzzzzzzzz", data, &total);
    struct rec_view v;

    assert_true(total > REC_HDR_LEN + strlen(data));
    assert_int_equal(rec_parse(r, total, &v), 0);
    for (size_t i = 0; i < total; i++) {
        static const uint8_t flips[] = {0x01, 0x80, 0xff, 0x5a};
        for (size_t f = 0; f < sizeof flips; f++) {
            uint8_t *c = malloc(total);
            memcpy(c, r, total);
            c[i] ^= flips[f];
            int res = rec_parse(c, total, &v);
            if (res == 0)
                fail_msg("corruption at byte %zu (xor 0x%02x) not detected", i, flips[f]);
            free(c);
        }
    }
    for (size_t len = 0; len < total; len++) {
        uint8_t *c = malloc(len ? len : 1);
        memcpy(c, r, len);
        int res = rec_parse(c, len, &v);
        if (res == 0)
            fail_msg("truncation to %zu bytes not detected", len);
        if (len >= REC_HDR_LEN)
            assert_int_equal(res, -EAGAIN); /* a torn tail, as recovery sees it */
        free(c);
    }
    /* zeros (a preallocated or hole tail) are not a record */
    uint8_t *z = calloc(1, total);
    assert_int_equal(rec_parse(z, total, &v), -EBADMSG);
    free(z);
    free(r);
}

static void test_record_huge_length(void **state)
{
    /* a header with a valid crc announcing a huge record is a torn tail */
    size_t total;
    uint8_t *r = make_record("AAAAAAAAAAAAAAAAAAAA", "x", &total);
    struct rec_view v;
    uint64_t big = 1ull << 63;
    memcpy(r + 12, &big, 8); /* little-endian host */
    uint32_t hc = crc32c(0, r, 40);
    memcpy(r + 40, &hc, 4);
    assert_int_equal(rec_parse(r, total, &v), -EBADMSG); /* > UINT64_MAX >> 2 */
    big = 1ull << 40;
    memcpy(r + 12, &big, 8);
    hc = crc32c(0, r, 40);
    memcpy(r + 40, &hc, 4);
    assert_int_equal(rec_parse(r, total, &v), -EAGAIN);
    free(r);
}

static void test_journal(void **state)
{
    struct jrn_entry e = {.id = "abcdefghij0123456789", .rcpt_idx = 2,
                          .state = JRN_DEFERRED, .until = 1735689600}, d;
    uint8_t buf[JRN_ENTRY_LEN];

    jrn_encode(buf, &e);
    assert_int_equal(jrn_decode(buf, sizeof buf, &d), 0);
    assert_string_equal(d.id, e.id);
    assert_int_equal(d.rcpt_idx, 2);
    assert_int_equal(d.state, JRN_DEFERRED);
    assert_int_equal(d.until, e.until);
    for (size_t i = 0; i < JRN_ENTRY_LEN; i++) {
        uint8_t *c = malloc(JRN_ENTRY_LEN);
        memcpy(c, buf, JRN_ENTRY_LEN);
        c[i] ^= 0x10;
        assert_int_not_equal(jrn_decode(c, JRN_ENTRY_LEN, &d), 0);
        free(c);
    }
    for (size_t len = 0; len < JRN_ENTRY_LEN; len++) {
        uint8_t *c = malloc(len ? len : 1);
        memcpy(c, buf, len);
        assert_int_equal(jrn_decode(c, len, &d), -EAGAIN);
        free(c);
    }
    e.rcpt_idx = -1;
    e.state = JRN_DELETED;
    jrn_encode(buf, &e);
    assert_int_equal(jrn_decode(buf, sizeof buf, &d), 0);
    assert_int_equal(d.rcpt_idx, -1);
    e.rcpt_idx = 0; /* DELETED applies to whole messages only */
    jrn_encode(buf, &e);
    assert_int_equal(jrn_decode(buf, sizeof buf, &d), -EBADMSG);
}

static void test_jstate_merge(void **state)
{
    struct idmap jm = {0};
    struct jrn_entry e = {.id = "MMMMMMMMMMMMMMMMMMMM"};
    uint8_t st[3];
    int64_t until[3];

    assert_true(jstate_resolve(&jm, e.id, 3, st, until));
    assert_int_equal(st[0], JRN_PENDING);
    e.rcpt_idx = 1;
    e.state = JRN_DELIVERED;
    assert_int_equal(jstate_apply(&jm, &e), 0);
    e.state = JRN_DEFERRED; /* a deferral after delivery does not undo it */
    e.until = 99;
    assert_int_equal(jstate_apply(&jm, &e), 0);
    e.rcpt_idx = 0;
    assert_int_equal(jstate_apply(&jm, &e), 0);
    assert_true(jstate_resolve(&jm, e.id, 3, st, until));
    assert_int_equal(st[0], JRN_DEFERRED);
    assert_int_equal(until[0], 99);
    assert_int_equal(st[1], JRN_DELIVERED);
    assert_int_equal(st[2], JRN_PENDING);
    e.rcpt_idx = -1;
    e.state = JRN_FAILED;
    assert_int_equal(jstate_apply(&jm, &e), 0);
    assert_false(jstate_resolve(&jm, e.id, 3, st, until)); /* all final */
    assert_int_equal(st[1], JRN_DELIVERED);
    assert_int_equal(st[2], JRN_FAILED);
    /* a message only deleted */
    struct jrn_entry d = {.id = "DDDDDDDDDDDDDDDDDDDD", .rcpt_idx = -1, .state = JRN_DELETED};
    assert_int_equal(jstate_apply(&jm, &d), 0);
    assert_false(jstate_resolve(&jm, d.id, 1, st, until));
    jstate_free_all(&jm);
}

struct node {
    struct idmap_node n;
    int v;
};

static void free_node(struct idmap_node *n) { free(n); }

static void test_idmap(void **state)
{
    struct idmap m = {0};
    enum { N = 3000 };
    char id[SPOOL_ID_LEN + 1];

    for (int i = 0; i < N; i++) {
        struct node *x = calloc(1, sizeof *x);
        snprintf(x->n.id, sizeof x->n.id, "%020d", i);
        x->v = i;
        assert_int_equal(idmap_put(&m, &x->n), 0);
    }
    assert_int_equal(m.n, N);
    for (int i = 0; i < N; i += 2) {
        snprintf(id, sizeof id, "%020d", i);
        struct node *x = (struct node *)idmap_get(&m, id);
        assert_non_null(x);
        assert_int_equal(x->v, i);
        idmap_del(&m, &x->n);
        free(x);
    }
    assert_int_equal(m.n, N / 2);
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof id, "%020d", i);
        assert_true((idmap_get(&m, id) != NULL) == (i % 2 == 1));
    }
    idmap_clear(&m, free_node);
    assert_int_equal(m.n, 0);
}

static void test_env_fuzz(void **state)
{
    /* random bytes never crash the decoder */
    uint32_t seed = 12345;
    for (int round = 0; round < 20000; round++) {
        size_t len = (size_t)(round % 97);
        uint8_t *b = malloc(len ? len : 1);
        for (size_t i = 0; i < len; i++) {
            seed = seed * 1103515245u + 12345u;
            b[i] = (uint8_t)(seed >> 16);
            if (i < 4 && (round & 1))
                b[i] = i == 0 ? (uint8_t)(round % 4) : 0; /* small nrcpts */
        }
        struct rec_env d;
        if (rec_env_decode(b, len, &d) == 0)
            rec_env_free(&d);
        struct rec_view v;
        (void)rec_parse(b, len, &v);
        free(b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc_vectors),
        cmocka_unit_test(test_crc_chaining),
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_env_roundtrip),
        cmocka_unit_test(test_record_roundtrip),
        cmocka_unit_test(test_record_corruption),
        cmocka_unit_test(test_record_huge_length),
        cmocka_unit_test(test_journal),
        cmocka_unit_test(test_jstate_merge),
        cmocka_unit_test(test_idmap),
        cmocka_unit_test(test_env_fuzz),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
