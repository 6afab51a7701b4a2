/* SPDX-License-Identifier: MIT */
/*
 * test_answer.c - unit tests for resolver/answer.c: answers built from
 * hand-made libunbound results (struct ub_result with wire-form rdata) for
 * every type, the DNSSEC and status mapping (a bogus result with data never
 * yields records), malformed rdata skipped, MX sorting, null MX, the
 * per-request shuffle of equal preferences, the implicit MX and reference
 * counting (leaks show under ASan).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "resolver/answer.c"

/* A fake libunbound result with up to 8 records. */
struct fake {
    struct ub_result r;
    char *data[9];
    int len[9];
    unsigned char buf[8][700];
    int n;
};

static void fake_init(struct fake *f, int rcode, int secure, int bogus)
{
    memset(f, 0, sizeof(*f));
    f->r.rcode = rcode;
    f->r.secure = secure;
    f->r.bogus = bogus;
    f->r.data = f->data;
    f->r.len = f->len;
    f->r.ttl = 300;
}

static void fake_add(struct fake *f, const void *rd, size_t len)
{
    assert_true(f->n < 8 && len <= sizeof(f->buf[0]));
    memcpy(f->buf[f->n], rd, len);
    f->data[f->n] = (char *)f->buf[f->n];
    f->len[f->n] = (int)len;
    f->n++;
    f->r.havedata = 1;
}

/* "mx1.example.test" -> wire form at out; returns its length. */
static size_t wire(const char *name, unsigned char *out)
{
    size_t o = 0;
    while (*name != '\0') {
        const char *dot = strchr(name, '.');
        size_t l = dot != NULL ? (size_t)(dot - name) : strlen(name);
        out[o++] = (unsigned char)l;
        memcpy(out + o, name, l);
        o += l;
        name += l + (dot != NULL);
    }
    out[o++] = 0;
    return o;
}

static void add_mx(struct fake *f, uint16_t pref, const char *host)
{
    unsigned char rd[300];
    rd[0] = (unsigned char)(pref >> 8);
    rd[1] = (unsigned char)pref;
    fake_add(f, rd, 2 + wire(host, rd + 2));
}

static void test_a_aaaa(void **state)
{
    struct fake f;
    fake_init(&f, 0, 1, 0);
    fake_add(&f, "\x7f\x00\x00\x02", 4);
    fake_add(&f, "\x7f\x00\x00", 3); /* malformed: skipped */
    fake_add(&f, "\x0a\x00\x00\x01", 4);
    f.r.canonname = "Alias.Example.TEST.";
    struct res_answer *a = answer_from_ub(RES_A, "www.example.test", 0, &f.r);
    assert_int_equal(a->status, RES_OK);
    assert_int_equal(a->sec, RES_SEC_SECURE);
    assert_int_equal(a->n, 2);
    assert_int_equal(a->a[0].s_addr, htonl(0x7f000002));
    assert_int_equal(a->a[1].s_addr, htonl(0x0a000001));
    assert_int_equal(a->ttl, 300);
    assert_string_equal(a->name, "www.example.test");
    assert_string_equal(a->canon, "alias.example.test");
    assert_null(a->why);
    res_answer_unref(a);

    fake_init(&f, 0, 0, 0);
    unsigned char six[16] = {0};
    six[15] = 1;
    fake_add(&f, six, 16);
    a = answer_from_ub(RES_AAAA, "x.test", 0, &f.r);
    assert_int_equal(a->status, RES_OK);
    assert_int_equal(a->sec, RES_SEC_INSECURE);
    assert_int_equal(a->n, 1);
    assert_memory_equal(&a->aaaa[0], six, 16);
    res_answer_unref(a);

    /* Every record malformed: a temporary error, not "no data". */
    fake_init(&f, 0, 0, 0);
    fake_add(&f, "\x01", 1);
    a = answer_from_ub(RES_A, "x.test", 0, &f.r);
    assert_int_equal(a->status, RES_ERROR);
    assert_int_equal(a->n, 0);
    assert_int_equal(a->ttl, 0);
    res_answer_unref(a);
}

static void test_status_mapping(void **state)
{
    struct fake f;
    struct res_answer *a;

    /* Forged data: havedata=1 and bogus=1 -> no records at all. */
    fake_init(&f, 0, 0, 1);
    fake_add(&f, "\x7f\x00\x00\x42", 4);
    f.r.why_bogus = "validation failure <www.forged.test. A IN>: signature crypto failed";
    a = answer_from_ub(RES_A, "www.forged.test", 0, &f.r);
    assert_int_equal(a->status, RES_BOGUS);
    assert_int_equal(a->sec, RES_SEC_BOGUS);
    assert_int_equal(a->n, 0);
    assert_null(a->a);
    assert_string_equal(a->why, f.r.why_bogus);
    assert_true(res_status_temporary(a->status));
    res_answer_unref(a);
    /* Bogus NXDOMAIN: still bogus, not a proven denial. */
    fake_init(&f, 3, 0, 1);
    f.r.nxdomain = 1;
    a = answer_from_ub(RES_MX, "x.test", 0, &f.r);
    assert_int_equal(a->status, RES_BOGUS);
    assert_non_null(a->why);
    res_answer_unref(a);

    fake_init(&f, 3, 1, 0);
    f.r.nxdomain = 1;
    a = answer_from_ub(RES_MX, "nx.test", 0, &f.r);
    assert_int_equal(a->status, RES_NXDOMAIN);
    assert_int_equal(a->sec, RES_SEC_SECURE);
    res_answer_unref(a);

    fake_init(&f, 0, 1, 0);
    a = answer_from_ub(RES_TXT, "x.test", 0, &f.r);
    assert_int_equal(a->status, RES_NODATA);
    assert_int_equal(a->n, 0);
    res_answer_unref(a);

    fake_init(&f, 2, 0, 0);
    a = answer_from_ub(RES_A, "x.test", 0, &f.r);
    assert_int_equal(a->status, RES_SERVFAIL);
    assert_string_equal(a->why, "rcode 2 (SERVFAIL)");
    assert_int_equal(a->ttl, 0);
    res_answer_unref(a);

    fake_init(&f, 5, 0, 0);
    a = answer_from_ub(RES_A, "x.test", 0, &f.r);
    assert_int_equal(a->status, RES_SERVFAIL);
    assert_string_equal(a->why, "rcode 5 (REFUSED)");
    res_answer_unref(a);

    a = answer_from_ub(RES_A, "x.test", UB_NOMEM, NULL);
    assert_int_equal(a->status, RES_ERROR);
    assert_string_equal(a->why, "out of memory");
    res_answer_unref(a);
}

static void test_mx(void **state)
{
    struct fake f;
    fake_init(&f, 0, 1, 0);
    add_mx(&f, 20, "mx2.example.test");
    add_mx(&f, 10, "mx1.example.test");
    add_mx(&f, 10, "MX1b.example.test");
    fake_add(&f, "\x00", 1); /* malformed */
    add_mx(&f, 5, "");      /* "." mixed with real hosts: skipped */
    struct res_answer *a = answer_from_ub(RES_MX, "example.test", 0, &f.r);
    assert_int_equal(a->status, RES_OK);
    assert_int_equal(a->n, 3);
    assert_int_equal(a->mx[0].pref, 10);
    assert_string_equal(a->mx[0].host, "mx1.example.test");
    assert_int_equal(a->mx[1].pref, 10);
    assert_string_equal(a->mx[1].host, "MX1b.example.test");
    assert_int_equal(a->mx[2].pref, 20);
    assert_false(a->implicit_mx);
    res_answer_unref(a);

    /* RFC 7505: "0 ." alone is a null MX. */
    fake_init(&f, 0, 1, 0);
    add_mx(&f, 0, "");
    a = answer_from_ub(RES_MX, "null.test", 0, &f.r);
    assert_int_equal(a->status, RES_NULLMX);
    assert_int_equal(a->n, 0);
    assert_int_equal(a->sec, RES_SEC_SECURE);
    assert_false(res_status_temporary(a->status));
    res_answer_unref(a);
}

static void test_mx_shuffle(void **state)
{
    struct fake f;
    fake_init(&f, 0, 0, 0);
    add_mx(&f, 30, "c.test");
    add_mx(&f, 10, "a1.test");
    add_mx(&f, 10, "a2.test");
    add_mx(&f, 10, "a3.test");
    add_mx(&f, 20, "b.test");
    struct res_answer *raw = answer_from_ub(RES_MX, "x.test", 0, &f.r);
    bool first_seen[3] = {false, false, false};
    for (int round = 0; round < 200; round++) {
        struct res_answer *a = answer_mx_shuffled(raw);
        assert_int_equal(a->n, 5);
        for (int i = 0; i < 3; i++) {
            assert_int_equal(a->mx[i].pref, 10);
            assert_int_equal(a->mx[i].host[0], 'a');
        }
        assert_string_equal(a->mx[3].host, "b.test");
        assert_string_equal(a->mx[4].host, "c.test");
        first_seen[a->mx[0].host[1] - '1'] = true;
        assert_string_equal(a->name, "x.test");
        res_answer_unref(a);
    }
    /* 200 rounds: each of the three comes first at least once (p of a miss ~ 1e-35). */
    assert_true(first_seen[0] && first_seen[1] && first_seen[2]);
    /* The copy keeps the raw answer alive after the cache lets it go. */
    struct res_answer *keep = answer_mx_shuffled(raw);
    res_answer_unref(raw);
    assert_string_equal(keep->mx[4].host, "c.test");
    res_answer_unref(keep);
}

static void test_implicit_mx(void **state)
{
    struct res_answer *mx = answer_error(RES_MX, "a.test", RES_NODATA, NULL);
    mx->sec = RES_SEC_SECURE;
    mx->ttl = 600;
    struct fake f;
    fake_init(&f, 0, 1, 0);
    fake_add(&f, "\x7f\x00\x00\x07", 4);
    f.r.ttl = 120;
    struct res_answer *a4 = answer_from_ub(RES_A, "a.test", 0, &f.r);
    fake_init(&f, 0, 1, 0);
    struct res_answer *a6 = answer_from_ub(RES_AAAA, "a.test", 0, &f.r);
    struct res_answer *a = answer_implicit_mx(mx, a4, a6);
    assert_int_equal(a->status, RES_OK);
    assert_true(a->implicit_mx);
    assert_int_equal(a->n, 1);
    assert_string_equal(a->mx[0].host, "a.test");
    assert_int_equal(a->mx[0].pref, 0);
    assert_int_equal(a->sec, RES_SEC_SECURE);
    assert_int_equal(a->ttl, 120);
    res_answer_unref(a);

    /* Neither address: no mail host (permanent). */
    struct res_answer *n4 = answer_error(RES_A, "a.test", RES_NODATA, NULL);
    a = answer_implicit_mx(mx, n4, a6);
    assert_int_equal(a->status, RES_NODATA);
    assert_false(a->implicit_mx);
    res_answer_unref(a);
    /* A failure of either wins: temporary, never a bounce. */
    struct res_answer *sf = answer_error(RES_AAAA, "a.test", RES_SERVFAIL, "rcode 2");
    a = answer_implicit_mx(mx, n4, sf);
    assert_int_equal(a->status, RES_SERVFAIL);
    assert_int_equal(a->type, RES_MX);
    res_answer_unref(a);
    struct res_answer *bg = answer_error(RES_A, "a.test", RES_BOGUS, "sig");
    a = answer_implicit_mx(mx, bg, sf);
    assert_int_equal(a->status, RES_BOGUS);
    assert_int_equal(a->sec, RES_SEC_BOGUS);
    assert_string_equal(a->why, "sig");
    res_answer_unref(a);
    res_answer_unref(bg);
    res_answer_unref(sf);
    res_answer_unref(n4);
    res_answer_unref(a4);
    res_answer_unref(a6);
    res_answer_unref(mx);
}

static void test_tlsa_ptr_txt(void **state)
{
    struct fake f;
    fake_init(&f, 0, 1, 0);
    unsigned char t[35] = {3, 1, 1};
    for (int i = 0; i < 32; i++)
        t[3 + i] = (unsigned char)i;
    fake_add(&f, t, sizeof(t));
    fake_add(&f, "\x03\x01\x01", 3); /* no data: skipped */
    struct res_answer *a = answer_from_ub(RES_TLSA, "_25._tcp.mx.test", 0, &f.r);
    assert_int_equal(a->status, RES_OK);
    assert_int_equal(a->n, 1);
    assert_int_equal(a->tlsa[0].usage, 3);
    assert_int_equal(a->tlsa[0].selector, 1);
    assert_int_equal(a->tlsa[0].mtype, 1);
    assert_int_equal(a->tlsa[0].len, 32);
    assert_memory_equal(a->tlsa[0].data, t + 3, 32);
    res_answer_unref(a);

    fake_init(&f, 0, 0, 0);
    unsigned char rd[300];
    fake_add(&f, rd, wire("mail.example.test", rd));
    unsigned char odd[] = {3, 'a', '.', ' ', 4, 't', 'e', 's', 't', 0};
    fake_add(&f, odd, sizeof(odd));
    unsigned char trunc[] = {5, 'a', 'b'};
    fake_add(&f, trunc, sizeof(trunc));
    a = answer_from_ub(RES_PTR, "5.0.0.127.in-addr.arpa", 0, &f.r);
    assert_int_equal(a->n, 2);
    assert_string_equal(a->ptr[0], "mail.example.test");
    assert_string_equal(a->ptr[1], "a\\046\\032.test");
    res_answer_unref(a);

    /* TXT: several strings, one > 255 bytes in total, a NUL inside. */
    fake_init(&f, 0, 1, 0);
    unsigned char txt[600];
    size_t o = 0;
    txt[o++] = 255;
    memset(txt + o, 'a', 255);
    o += 255;
    txt[o++] = 10;
    memcpy(txt + o, "b\0cdefghij", 10);
    o += 10;
    txt[o++] = 0; /* an empty string is a string */
    fake_add(&f, txt, o);
    fake_add(&f, "\x05" "abc", 4); /* length past the end: skipped */
    fake_add(&f, "\x03" "one", 4);
    a = answer_from_ub(RES_TXT, "x.test", 0, &f.r);
    assert_int_equal(a->status, RES_OK);
    assert_int_equal(a->n, 2);
    assert_int_equal(a->txt[0].nstrings, 3);
    assert_int_equal(a->txt[0].len, 265);
    assert_int_equal(a->txt[0].strings[0].len, 255);
    assert_int_equal(a->txt[0].strings[1].len, 10);
    assert_memory_equal(a->txt[0].strings[1].s, "b\0cdefghij", 10);
    assert_int_equal(a->txt[0].strings[2].len, 0);
    assert_memory_equal(a->txt[0].text + 255, "b\0cdefghij", 10);
    assert_int_equal(a->txt[0].text[265], '\0');
    assert_string_equal(a->txt[1].text, "one");
    res_answer_unref(a);
}

static void test_wire_name(void **state)
{
    char out[64];
    unsigned char w[300];
    assert_int_equal(wire_name_text((const unsigned char *)"\0", 1, out, sizeof(out)), 1);
    assert_string_equal(out, "");
    size_t n = wire("a.b", w);
    assert_int_equal(wire_name_text(w, n, out, sizeof(out)), (int)n);
    assert_string_equal(out, "a.b");
    assert_int_equal(wire_name_text(w, n - 1, out, sizeof(out)), -1); /* no root label */
    assert_int_equal(wire_name_text(w, n, out, 3), -1);               /* out too small */
    unsigned char ptr[] = {0xc0, 0x0c};
    assert_int_equal(wire_name_text(ptr, 2, out, sizeof(out)), -1);
    unsigned char big[300];
    memset(big, 0, sizeof(big));
    for (int i = 0; i < 4; i++) { /* 4 labels of 63 and the root: 257 octets > 255 */
        big[i * 64] = 63;
        memset(big + i * 64 + 1, 'a', 63);
    }
    char huge[400];
    assert_int_equal(wire_name_text(big, sizeof(big), huge, sizeof(huge)), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_aaaa),    cmocka_unit_test(test_status_mapping),
        cmocka_unit_test(test_mx),        cmocka_unit_test(test_mx_shuffle),
        cmocka_unit_test(test_implicit_mx), cmocka_unit_test(test_tlsa_ptr_txt),
        cmocka_unit_test(test_wire_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
