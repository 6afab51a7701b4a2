/* SPDX-License-Identifier: MIT */
/*
 * test_tags.c - dkim/tags.c: the tag-list grammar (RFC 6376 3.2), base64
 * with FWS, the DKIM-Signature field's tags and checks (3.5), and the key
 * record (3.6.1, RFC 8463).  Inputs are exact-size heap copies so ASan
 * sees any overread.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "dkim/tags.h"

static char *dup_exact(const char *p, size_t n)
{
    char *d = malloc(n ? n : 1);
    memcpy(d, p, n);
    return d;
}

static void test_tag_list(void **state)
{
    const char *in = " a = 1 ;b=two words\r\n\t folded ;c_9=; d=x=y;";
    char *s = dup_exact(in, strlen(in));
    struct dkim_tag_iter it;
    struct dkim_tag t;
    dkim_tag_iter_init(&it, s, strlen(in));
    assert_int_equal(dkim_tag_next(&it, &t), 1);
    assert_true(dkim_tag_is(&t, "a"));
    assert_int_equal(t.val_len, 1);
    assert_memory_equal(t.val, "1", 1);
    assert_int_equal(t.raw_len, 3); /* " 1 " */
    assert_int_equal(dkim_tag_next(&it, &t), 1);
    assert_true(dkim_tag_is(&t, "b"));
    assert_int_equal(t.val_len, strlen("two words\r\n\t folded"));
    assert_int_equal(dkim_tag_next(&it, &t), 1);
    assert_true(dkim_tag_is(&t, "c_9"));
    assert_int_equal(t.val_len, 0);
    assert_int_equal(dkim_tag_next(&it, &t), 1);
    assert_true(dkim_tag_is(&t, "d"));
    assert_memory_equal(t.val, "x=y", 3);
    assert_int_equal(dkim_tag_next(&it, &t), 0);
    free(s);

    /* Errors: empty tag-spec, bad name, no '=', a control byte. */
    const char *bad[] = {"a=1;;b=2", "9a=1", "a 1", "a=\x01", "=1", "a=1;\xff=2", "a=caf\xc3\xa9"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        s = dup_exact(bad[i], strlen(bad[i]));
        dkim_tag_iter_init(&it, s, strlen(bad[i]));
        int rc;
        while ((rc = dkim_tag_next(&it, &t)) == 1)
            ;
        assert_int_equal(rc, -1);
        free(s);
    }
    /* Empty lists. */
    dkim_tag_iter_init(&it, " \r\n ", 4);
    assert_int_equal(dkim_tag_next(&it, &t), 0);
}

static void test_base64(void **state)
{
    unsigned char out[64];
    struct {
        const char *in;
        long want;
        const char *bytes;
    } cases[] = {
        {"", 0, ""},
        {"TWFu", 3, "Man"},
        {"TW E=", 2, "Ma"},
        {"T\r\n\tQ==", 1, "M"},
        {"TWFuTWFu", 6, "ManMan"},
        {"TWF", -1, NULL},       /* not whole quanta */
        {"TQ=", -1, NULL},
        {"T===", -1, NULL},
        {"TQ==TQ==", -1, NULL},  /* data after padding */
        {"TW!u", -1, NULL},
        {"====", -1, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *s = dup_exact(cases[i].in, strlen(cases[i].in));
        long n = dkim_b64_decode(s, strlen(cases[i].in), out, sizeof(out));
        assert_int_equal(n, cases[i].want);
        if (n > 0)
            assert_memory_equal(out, cases[i].bytes, (size_t)n);
        free(s);
    }
    /* Too much for the output. */
    assert_int_equal(dkim_b64_decode("TWFuTWFu", 8, out, 5), -1);
}

static int sig_parse(const char *v, struct dkim_sig *sig, const char **why)
{
    char *s = dup_exact(v, strlen(v));
    int rc = dkim_sig_parse(s, strlen(v), sig, why);
    free(s); /* the slices in sig are not used after this */
    return rc;
}

#define BH "bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="

static void test_signature(void **state)
{
    struct dkim_sig sig;
    const char *why;
    assert_int_equal(sig_parse(" v=1; a=rsa-sha256; c=relaxed; d=Example.COM; s=Sel-1;\r\n"
                               "\tt=100; x=200; l=12; i=user@mail.example.com; q=dns/txt;\r\n"
                               "\th=From : To; z=ignored|x; future=tag; " BH ";\r\n"
                               "\tb=AAAA\r\n\t BBBB;",
                               &sig, &why),
                     0);
    assert_null(why);
    assert_int_equal(sig.algo, DKIM_SIG_RSA_SHA256);
    assert_true(sig.algo_known);
    assert_int_equal(sig.hcanon, DKIM_C14N_RELAXED);
    assert_int_equal(sig.bcanon, DKIM_C14N_SIMPLE);
    assert_string_equal(sig.domain, "example.com");
    assert_string_equal(sig.selector, "Sel-1");
    assert_string_equal(sig.auid_domain, "mail.example.com");
    assert_int_equal(sig.b_len, 6);
    assert_int_equal(sig.bh_len, 32);
    assert_int_equal(sig.hcount, 2);
    assert_true(sig.has_l);
    assert_int_equal(sig.l, 12);
    assert_int_equal(sig.t, 100);
    assert_int_equal(sig.x, 200);

    /* Defaults: simple/simple, i= is @d. */
    assert_int_equal(sig_parse("v=1; a=ed25519-sha256; d=e.test; s=s; h=from; " BH "; b=AAAA",
                               &sig, &why),
                     0);
    assert_int_equal(sig.hcanon, DKIM_C14N_SIMPLE);
    assert_int_equal(sig.bcanon, DKIM_C14N_SIMPLE);
    assert_string_equal(sig.auid_domain, "e.test");
    assert_false(sig.has_l);
    /* l= of 100 digits saturates. */
    assert_int_equal(sig_parse("v=1; a=rsa-sha256; d=e.test; s=s; h=from; " BH "; b=AAAA; l="
                               "99999999999999999999999999999999999999999999999999",
                               &sig, &why),
                     0);
    assert_int_equal(sig.l, UINT64_MAX);

    struct {
        const char *v, *why;
    } bad[] = {
        {"a=rsa-sha256; d=e.test; s=s; h=from; " BH "; b=AAAA", "no v="},
        {"v=2; a=rsa-sha256; d=e.test; s=s; h=from; " BH "; b=AAAA", "unsupported version"},
        {"v=1; a=rsa-md5; d=e.test; s=s; h=from; " BH "; b=AAAA", "unknown algorithm"},
        {"v=1; a=rsa-sha256; d=e.test; s=s; h=to:subject; " BH "; b=AAAA", "From field not"},
        {"v=1; a=rsa-sha256; d=e.test; s=s; h=from::to; " BH "; b=AAAA", "bad header field"},
        {"v=1; a=rsa-sha256; d=e.test; s=s; h=from; " BH "; b=", "empty b="},
        {"v=1; a=rsa-sha256; d=e.test; s=s; h=from; " BH "; b=A*AA", "bad base64"},
        {"v=1; a=rsa-sha256; d=e.test; s=s; h=from; bh=; b=AAAA", "empty bh="},
        {"v=1; a=rsa-sha256; d=e.test; s=s; h=from; " BH "; b=AAAA; c=loose", "canonicalization"},
        {"v=1; a=rsa-sha256; d=e.test; s=s; h=from; " BH "; b=AAAA; c=simple/", "canonicalization"},
        {"v=1; a=rsa-sha256; d=e.test; s=s; h=from; " BH "; b=AAAA; i=a@other.test", "within d="},
        {"v=1; a=rsa-sha256; d=e.test; s=s; h=from; " BH "; b=AAAA; i=a@xe.test", "within d="},
        {"v=1; a=rsa-sha256; d=e.test; s=s; h=from; " BH "; b=AAAA; i=nobody", "bad i="},
        {"v=1; a=rsa-sha256; d=e.test; s=s; h=from; " BH "; b=AAAA; l=-1", "bad l="},
        {"v=1; a=rsa-sha256; d=e.test; s=s; h=from; " BH "; b=AAAA; q=http", "query method"},
        {"v=1; a=rsa-sha256; d=e.test; s=s; h=from; " BH "; b=AAAA; t=10; x=5", "before t="},
        {"v=1; a=rsa-sha256; d=e.test; s=s; h=from; " BH "; b=AAAA; s=t", "twice"},
        {"v=1; a=rsa-sha256; d=e..test; s=s; h=from; " BH "; b=AAAA", "bad d="},
        {"v=1; a=rsa-sha256; d=e.test; s=s/x; h=from; " BH "; b=AAAA", "bad s="},
        {"v=1; a=rsa-sha256; d=e.test; s=s; h=from; " BH "; b=AAAA;; x=1", "syntax"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why = NULL;
        assert_int_equal(sig_parse(bad[i].v, &sig, &why), -1);
        if (why == NULL || strstr(why, bad[i].why) == NULL)
            fail_msg("%s: %s, want %s", bad[i].v, why ? why : "(null)", bad[i].why);
    }
    /* What the result names survives a failure. */
    assert_int_equal(sig_parse("v=1; a=rsa-sha1; d=E.test; s=sel; b=AAAA", &sig, &why), -1);
    assert_string_equal(sig.domain, "e.test");
    assert_string_equal(sig.selector, "sel");
    assert_int_equal(sig.algo, DKIM_SIG_RSA_SHA1);
    assert_true(sig.algo_known);
    /* 257 names in h=: refused. */
    char big[4096] = "v=1; a=rsa-sha256; d=e.test; s=s; " BH "; b=AAAA; h=from";
    for (int i = 0; i < 256; i++)
        strcat(big, ":x");
    assert_int_equal(sig_parse(big, &sig, &why), -1);
    assert_non_null(strstr(why, "too many"));
}

static int key_parse(const char *v, struct dkim_keyrec *rec, const char **why)
{
    char *s = dup_exact(v, strlen(v));
    int rc = dkim_keyrec_parse(s, strlen(v), rec, why);
    free(s);
    return rc;
}

static void test_key_record(void **state)
{
    struct dkim_keyrec rec;
    const char *why;
    assert_int_equal(key_parse("v=DKIM1; k=rsa; p=AAAA", &rec, &why), 0);
    assert_int_equal(rec.type, DKIM_KEYTYPE_RSA);
    assert_true(rec.sha256_ok && rec.sha1_ok && rec.email_ok);
    assert_false(rec.testing || rec.strict);
    assert_int_equal(rec.p_len, 4);
    /* No v=, defaults; k=ed25519; flags; hashes; services; notes. */
    assert_int_equal(key_parse("k=ED25519; t=y:s:x; h=sha256 : sha512; s=email:*; n=a note;"
                               " p=AB CD",
                               &rec, &why),
                     0);
    assert_int_equal(rec.type, DKIM_KEYTYPE_ED25519);
    assert_true(rec.testing && rec.strict);
    assert_true(rec.sha256_ok);
    assert_false(rec.sha1_ok);
    assert_true(rec.email_ok);
    assert_int_equal(rec.p_len, 5);
    assert_int_equal(key_parse("p=; s=other", &rec, &why), 0);
    assert_int_equal(rec.p_len, 0);
    assert_false(rec.email_ok);
    assert_int_equal(key_parse("h=sha1; p=A", &rec, &why), 0);
    assert_false(rec.sha256_ok);

    const char *bad[] = {"v=DKIM2; p=A", "k=rsa; v=DKIM1; p=A", "k=dsa; p=A", "v=DKIM1; k=rsa",
                         "p=A; p=B", "v=DKIM1; k=rsa; p=A;;", "garbage"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why = NULL;
        if (key_parse(bad[i], &rec, &why) != -1 || why == NULL)
            fail_msg("%s parsed", bad[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tag_list),
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_signature),
        cmocka_unit_test(test_key_record),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
