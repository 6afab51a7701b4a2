/* SPDX-License-Identifier: MIT */
/*
 * test_record.c - the spool's on-disk encodings (spool/record.c): crc32c
 * against published vectors, message ids, envelope (with DSN parameters and
 * bounce references) and record round trips in both versions, reply
 * escaping, and detection of every single-byte corruption and every
 * truncation of a record and of a journal entry (buffers are malloc'ed to their exact length
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
#include "tests/unit/spool/v1.h"

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
static const uint8_t notify[] = {0, SPOOL_NOTIFY_SUCCESS | SPOOL_NOTIFY_FAILURE,
                                 SPOOL_NOTIFY_NEVER};
static const char *orcpt[] = {"rfc822;a@example.org", NULL, "utf-8;b+2Bx@example.net"};
static const uint8_t key[REC_KEY_LEN] = "0123456789abcdef";

static struct spool_envelope sample_env(void)
{
    return (struct spool_envelope){
        .sender = "sender@example.com",
        .rcpts = rcpts,
        .nrcpts = 3,
        .helo = "client.example.com",
        .client_addr = "192.0.2.1",
        .auth_user = NULL,
        .headers = "Received: from client.example.com\r\n\tby mx; Thu, 1 Jan 2025\r\n",
        .flags = SPOOL_F_8BITMIME | SPOOL_F_BDAT,
        .received_at = 1735689600,
        .dsn_ret = SPOOL_RET_HDRS,
        .dsn_envid = "QQ314159",
        .dsn_notify = notify,
        .dsn_orcpt = orcpt,
    };
}

static void test_env_roundtrip(void **state)
{
    struct spool_envelope env = sample_env();
    struct rec_env_in in = {.env = &env};
    size_t n = rec_env_size(&in);
    assert_true(n > REC_ENV2_FIXED);
    uint8_t *buf = malloc(n);
    rec_env_encode(&in, buf);
    struct rec_env d;
    assert_int_equal(rec_env_decode(buf, n, 2, &d), 0);
    assert_string_equal(d.sender, env.sender);
    assert_string_equal(d.helo, env.helo);
    assert_string_equal(d.client_addr, env.client_addr);
    assert_null(d.auth_user);
    assert_string_equal(d.headers, env.headers);
    assert_int_equal(d.nrcpts, 3);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(d.rcpts[i], rcpts[i]);
        assert_int_equal(d.dsn_notify[i], notify[i]);
        if (orcpt[i])
            assert_string_equal(d.dsn_orcpt[i], orcpt[i]);
        else
            assert_null(d.dsn_orcpt[i]);
    }
    assert_int_equal(d.flags, env.flags);
    assert_int_equal(d.received_at, env.received_at);
    assert_int_equal(d.dsn_ret, SPOOL_RET_HDRS);
    assert_string_equal(d.dsn_envid, "QQ314159");
    assert_null(d.bounce_of);
    assert_int_equal(d.nbounce, 0);
    rec_env_free(&d);
    uint32_t nr;
    int64_t ra;
    assert_int_equal(rec_env_peek(buf, n, 2, &nr, &ra), 0);
    assert_int_equal(nr, 3);
    assert_int_equal(ra, env.received_at);

    /* every truncation fails, and so does reading it as version 1 */
    for (size_t len = 0; len < n; len++) {
        uint8_t *t = malloc(len ? len : 1);
        memcpy(t, buf, len);
        assert_int_not_equal(rec_env_decode(t, len, 2, &d), 0);
        free(t);
    }
    free(buf);

    /* null sender "", auth user, no DSN parameters, no headers */
    env.sender = "";
    env.auth_user = "alice";
    env.dsn_notify = NULL;
    env.dsn_orcpt = NULL;
    env.dsn_envid = NULL;
    env.headers = NULL;
    n = rec_env_size(&in);
    buf = malloc(n);
    rec_env_encode(&in, buf);
    assert_int_equal(rec_env_decode(buf, n, 2, &d), 0);
    assert_string_equal(d.sender, "");
    assert_string_equal(d.auth_user, "alice");
    assert_string_equal(d.headers, "");
    assert_null(d.dsn_envid);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(d.dsn_notify[i], 0);
        assert_null(d.dsn_orcpt[i]);
    }
    rec_env_free(&d);
    free(buf);

    /* a bounce names its original and the recipients */
    uint32_t idx[2] = {2, 0};
    struct rec_env_in bin = {.env = &env, .bounce_of = "ABCDEFGHIJ0123456789",
                             .bounce_idx = idx, .nbounce = 2};
    n = rec_env_size(&bin);
    buf = malloc(n);
    rec_env_encode(&bin, buf);
    assert_int_equal(rec_env_decode(buf, n, 2, &d), 0);
    assert_string_equal(d.bounce_of, "ABCDEFGHIJ0123456789");
    assert_int_equal(d.nbounce, 2);
    assert_int_equal(d.bounce_idx[0], 2);
    assert_int_equal(d.bounce_idx[1], 0);
    rec_env_free(&d);
    free(buf);
    bin.bounce_of = "short";
    assert_int_equal(rec_env_size(&bin), 0);
    bin.bounce_of = NULL;
    assert_int_equal(rec_env_size(&bin), 0); /* indexes without an original */

    env.sender = NULL;
    assert_int_equal(rec_env_size(&in), 0);
    env.sender = "x";
    env.dsn_ret = 7;
    assert_int_equal(rec_env_size(&in), 0);
}

/* Build a whole version-2 record into an exact-size malloc'ed buffer. */
static uint8_t *make_record(const char *id, const char *data, size_t *total)
{
    struct spool_envelope env = sample_env();
    struct rec_env_in in = {.env = &env};
    size_t el = rec_env_size(&in), dl = strlen(data);
    size_t t = REC2_HDR_LEN + el + dl;
    t += rec_pad(t);
    uint8_t *r = calloc(1, t);
    rec_env_encode(&in, r + REC2_HDR_LEN);
    memcpy(r + REC2_HDR_LEN + el, data, dl);
    struct iovec iov[2] = {{(void *)data, dl / 2}, {(void *)(data + dl / 2), dl - dl / 2}};
    rec_hdr_build(r, key, id, r + REC2_HDR_LEN, (uint32_t)el, iov, 2, dl);
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
    assert_int_equal(rec_parse(r, total, key, &v), 0);
    assert_true(v.tag_ok);
    assert_int_equal(v.version, 2);
    assert_int_equal(v.hdr_len, REC2_HDR_LEN);
    assert_string_equal(v.id, id);
    assert_int_equal(v.total, total);
    assert_int_equal(v.data_len, strlen(data));
    assert_memory_equal(v.data, data, strlen(data));
    struct rec_env d;
    assert_int_equal(rec_env_decode(v.env, v.env_len, v.version, &d), 0);
    assert_string_equal(d.rcpts[2], "<odd>@x");
    rec_env_free(&d);
    /* another key: the record parses, its tag does not match */
    static const uint8_t other[REC_KEY_LEN] = "fedcba9876543210";
    assert_int_equal(rec_parse(r, total, other, &v), 0);
    assert_false(v.tag_ok);
    assert_int_equal(rec_parse(r, total, NULL, &v), 0);
    assert_false(v.tag_ok);
    /* the header alone */
    struct rec_view h;
    assert_int_equal(rec_parse_hdr(r, REC2_HDR_LEN, &h), 0);
    assert_int_equal(h.total, total);
    assert_int_equal(h.data_len, strlen(data));

    /* two records back to back parse one after the other */
    uint8_t *two = malloc(2 * total);
    memcpy(two, r, total);
    memcpy(two + total, r, total);
    assert_int_equal(rec_parse(two, 2 * total, key, &v), 0);
    assert_int_equal(v.total, total);
    assert_int_equal(rec_parse(two + total, total, key, &v), 0);
    free(two);
    free(r);
}

static void test_record_v1(void **state)
{
    const char *rc[] = {"x@example.org", "y@example.org"};
    size_t total;
    uint8_t *r = v1_record("V1V1V1V1V1V1V1V1V1V1", "old@example.com", rc, 2,
                           "Received: old\r\n", "Subject: v1\r\n\r\nbody\r\n", &total);
    struct rec_view v;
    struct rec_env d;

    assert_int_equal(rec_parse(r, total, key, &v), 0);
    assert_int_equal(v.version, 1);
    assert_false(v.tag_ok);
    assert_int_equal(v.hdr_len, REC_HDR_LEN);
    assert_int_equal(rec_env_decode(v.env, v.env_len, 1, &d), 0);
    assert_string_equal(d.sender, "old@example.com");
    assert_string_equal(d.headers, "Received: old\r\n");
    assert_int_equal(d.nrcpts, 2);
    assert_string_equal(d.rcpts[1], "y@example.org");
    assert_int_equal(d.dsn_notify[1], 0);
    assert_null(d.dsn_orcpt[1]);
    assert_null(d.bounce_of);
    rec_env_free(&d);
    assert_memory_equal(v.data, "Subject: v1\r\n\r\nbody\r\n", v.data_len);
    /* every corruption and truncation of a version-1 record is seen too */
    for (size_t i = 0; i < total; i++) {
        uint8_t *c = malloc(total);
        memcpy(c, r, total);
        c[i] ^= 0x21;
        if (rec_parse(c, total, key, &v) == 0)
            fail_msg("v1 corruption at byte %zu not detected", i);
        free(c);
    }
    for (size_t len = 0; len < total; len++) {
        uint8_t *c = malloc(len ? len : 1);
        memcpy(c, r, len);
        assert_int_not_equal(rec_parse(c, len, key, &v), 0);
        free(c);
    }
    free(r);
}

static void test_record_corruption(void **state)
{
    const char *data = "From: a@b\r\n\r\nbody line one\r\nbody\r\n"; /* odd length: padding */
    size_t total;
    uint8_t *r = make_record("zzzzzzzzzzzzzzzzzzzz", data, &total);
    struct rec_view v;

    assert_true(total > REC2_HDR_LEN + strlen(data));
    assert_int_equal(rec_parse(r, total, key, &v), 0);
    for (size_t i = 0; i < total; i++) {
        static const uint8_t flips[] = {0x01, 0x80, 0xff, 0x5a};
        for (size_t f = 0; f < sizeof flips; f++) {
            uint8_t *c = malloc(total);
            memcpy(c, r, total);
            c[i] ^= flips[f];
            int res = rec_parse(c, total, key, &v);
            /* the tag is no crc: flipping it leaves a parsable record
             * whose tag does not match */
            if (res == 0 && (i < 48 || v.tag_ok))
                fail_msg("corruption at byte %zu (xor 0x%02x) not detected", i, flips[f]);
            free(c);
        }
    }
    for (size_t len = 0; len < total; len++) {
        uint8_t *c = malloc(len ? len : 1);
        memcpy(c, r, len);
        int res = rec_parse(c, len, key, &v);
        if (res == 0)
            fail_msg("truncation to %zu bytes not detected", len);
        assert_int_equal(res, -EAGAIN); /* a torn tail, as recovery sees it */
        free(c);
    }
    /* zeros (a preallocated or hole tail) are not a record */
    uint8_t *z = calloc(1, total);
    assert_int_equal(rec_parse(z, total, key, &v), -EBADMSG);
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
    assert_int_equal(rec_parse(r, total, key, &v), -EBADMSG); /* > UINT64_MAX >> 2 */
    big = 1ull << 40;
    memcpy(r + 12, &big, 8);
    hc = crc32c(0, r, 40);
    memcpy(r + 40, &hc, 4);
    assert_int_equal(rec_parse(r, total, key, &v), -EAGAIN);
    free(r);
}

static void test_journal(void **state)
{
    struct jrn_entry e = {.id = "abcdefghij0123456789", .type = JRN_T_STATE, .rcpt_idx = 2,
                          .state = JRN_DEFERRED, .next_at = 1735689600}, d;
    uint8_t buf[JRN2_MAX];
    size_t len, el;

    len = jrn_size(&e);
    assert_int_equal(len, JRN2_MIN);
    jrn_encode(buf, &e);
    assert_int_equal(jrn_decode(buf, len, &d, &el), 0);
    assert_int_equal(el, len);
    assert_string_equal(d.id, e.id);
    assert_int_equal(d.type, JRN_T_STATE);
    assert_int_equal(d.rcpt_idx, 2);
    assert_int_equal(d.state, JRN_DEFERRED);
    assert_int_equal(d.next_at, e.next_at);
    for (size_t i = 0; i < len; i++) {
        uint8_t *c = malloc(len);
        memcpy(c, buf, len);
        c[i] ^= 0x10;
        assert_int_not_equal(jrn_decode(c, len, &d, &el), 0);
        free(c);
    }
    for (size_t l = 0; l < len; l++) {
        uint8_t *c = malloc(l ? l : 1);
        memcpy(c, buf, l);
        assert_int_equal(jrn_decode(c, l, &d, &el), -EAGAIN);
        free(c);
    }
    /* an attempt with a reply, escaped */
    char esc[SPOOL_REPLY_MAX + 1];
    const char raw[] = "451-4.7.1 greylisted\r\n451 4.7.1 come back \\ later\t\x01\xff";
    e.type = JRN_T_ATTEMPT;
    e.last_at = 1735689000;
    e.reply_len = (uint16_t)rec_reply_escape(esc, sizeof esc, raw, sizeof raw - 1);
    e.reply = esc;
    assert_string_equal(esc, "451-4.7.1 greylisted\\r\\n451 4.7.1 come back \\\\ later\\t"
                             "\\x01\\xff");
    len = jrn_size(&e);
    assert_int_equal(len % 8, 0);
    jrn_encode(buf, &e);
    assert_int_equal(jrn_decode(buf, len, &d, &el), 0);
    assert_int_equal(el, len);
    assert_int_equal(d.type, JRN_T_ATTEMPT);
    assert_int_equal(d.last_at, 1735689000);
    assert_int_equal(d.reply_len, e.reply_len);
    assert_memory_equal(d.reply, esc, e.reply_len);
    for (size_t i = 0; i < len; i++) {
        uint8_t *c = malloc(len);
        memcpy(c, buf, len);
        c[i] ^= 0x04;
        assert_int_not_equal(jrn_decode(c, len, &d, &el), 0);
        free(c);
    }
    /* a long reply is cut, never inside an escape, at SPOOL_REPLY_MAX */
    char big[2000];
    memset(big, '\x7f', sizeof big);
    size_t n = rec_reply_escape(esc, sizeof esc, big, sizeof big);
    assert_true(n <= SPOOL_REPLY_MAX && n % 4 == 0 && n > SPOOL_REPLY_MAX - 4);
    e.reply_len = (uint16_t)n;
    len = jrn_size(&e);
    assert_true(len <= JRN2_MAX);
    jrn_encode(buf, &e);
    assert_int_equal(jrn_decode(buf, len, &d, &el), 0);
    /* the length field's high byte is never printable: no entry inside a reply */
    assert_true((len >> 8) < 0x20);

    /* deletes apply to whole messages only */
    e = (struct jrn_entry){.id = "abcdefghij0123456789", .type = JRN_T_DELETE,
                           .rcpt_idx = -1};
    jrn_encode(buf, &e);
    assert_int_equal(jrn_decode(buf, jrn_size(&e), &d, &el), 0);
    e.rcpt_idx = 0;
    jrn_encode(buf, &e);
    assert_int_equal(jrn_decode(buf, jrn_size(&e), &d, &el), -EBADMSG);
    e = (struct jrn_entry){.id = "abcdefghij0123456789", .type = JRN_T_MFLAGS,
                           .rcpt_idx = -1, .mflags = SPOOL_MF_DELAY_WARNED};
    jrn_encode(buf, &e);
    assert_int_equal(jrn_decode(buf, jrn_size(&e), &d, &el), 0);
    assert_int_equal(d.mflags, SPOOL_MF_DELAY_WARNED);

    /* version-1 entries still decode */
    v1_entry(buf, "VVVVVVVVVVVVVVVVVVVV", 1, JRN_DELIVERED, 0);
    assert_int_equal(jrn_decode(buf, JRN_ENTRY_LEN, &d, &el), 0);
    assert_int_equal(el, JRN_ENTRY_LEN);
    assert_int_equal(d.type, JRN_T_STATE);
    assert_int_equal(d.state, JRN_DELIVERED);
    assert_int_equal(d.rcpt_idx, 1);
    v1_entry(buf, "VVVVVVVVVVVVVVVVVVVV", -1, JRN_DELETED, 0);
    assert_int_equal(jrn_decode(buf, JRN_ENTRY_LEN, &d, &el), 0);
    assert_int_equal(d.type, JRN_T_DELETE);
    for (size_t i = 0; i < JRN_ENTRY_LEN; i++) {
        uint8_t c[JRN_ENTRY_LEN];
        memcpy(c, buf, JRN_ENTRY_LEN);
        c[i] ^= 0x10;
        assert_int_not_equal(jrn_decode(c, JRN_ENTRY_LEN, &d, &el), 0);
    }
}

static void test_notify_key(void **state)
{
    assert_int_equal(spool_notify_parse(NULL, 0), 0);
    assert_int_equal(spool_notify_parse("NEVER", 5), SPOOL_NOTIFY_NEVER);
    assert_int_equal(spool_notify_parse("success,Delay", 13),
                     SPOOL_NOTIFY_SUCCESS | SPOOL_NOTIFY_DELAY);
    assert_int_equal(spool_notify_parse("FAILURE", 7), SPOOL_NOTIFY_FAILURE);
    uint8_t buf[KEY_FILE_LEN], k2[REC_KEY_LEN];
    key_encode(buf, key);
    assert_int_equal(key_decode(buf, sizeof buf, k2), 0);
    assert_memory_equal(k2, key, REC_KEY_LEN);
    buf[7] ^= 1;
    assert_int_equal(key_decode(buf, sizeof buf, k2), -EBADMSG);
    assert_int_equal(key_decode(buf, sizeof buf - 1, k2), -EBADMSG);
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
        if (rec_env_decode(b, len, 1 + (round & 1), &d) == 0)
            rec_env_free(&d);
        struct rec_view v;
        (void)rec_parse(b, len, key, &v);
        struct jrn_entry e;
        size_t el;
        (void)jrn_decode(b, len, &e, &el);
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
        cmocka_unit_test(test_record_v1),
        cmocka_unit_test(test_record_corruption),
        cmocka_unit_test(test_record_huge_length),
        cmocka_unit_test(test_journal),
        cmocka_unit_test(test_notify_key),
        cmocka_unit_test(test_idmap),
        cmocka_unit_test(test_env_fuzz),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
