/* SPDX-License-Identifier: MIT */
/*
 * test_verify.c - dkim/verify.c: messages signed by dkim/sign.c (RSA-2048,
 * Ed25519, both) verify as pass when fed in any chunking with the keys
 * handed over by the caller; a changed body or header fails; a missing key
 * is a permerror, a key never set or a temporary failure a temperror, a
 * revoked key (empty p=) a permerror; more signatures than max_sigs are
 * ignored and their keys never asked for; the From facts (one domain, a
 * list of one domain, several From fields or domains, none, garbage) and
 * foreign Authentication-Results fields; no header block end; dot-stuffed
 * lines unstuffed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dkim/keys.h"
#include "dkim/sign.h"
#include "dkim/verify.h"

static char tmpdir[] = "/tmp/ortoo-test-dkimv-XXXXXX";
static struct dkim_keys *keys;
static struct dkim_verify_lib *vlib;

/* The published records, by key name. */
static struct {
    char name[128];
    char *rec;
} records[8];
static size_t nrecords;

static void make_key(const char *domain, const char *sel, enum dkim_algo algo)
{
    char path[512], err[256];
    char *pem, *rec;
    assert_int_equal(dkim_keygen(algo, &pem, &rec, err, sizeof(err)), 0);
    snprintf(path, sizeof(path), "%s/domains/%s", tmpdir, domain);
    mkdir(path, 0750);
    snprintf(path, sizeof(path), "%s/domains/%s/dkim", tmpdir, domain);
    mkdir(path, 0750);
    snprintf(path, sizeof(path), "%s/domains/%s/dkim/%s.key", tmpdir, domain, sel);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(pem, f);
    fclose(f);
    chmod(path, 0600);
    snprintf(records[nrecords].name, sizeof(records[0].name), "%s._domainkey.%s", sel, domain);
    records[nrecords++].rec = rec;
    free(pem);
}

static int setup(void **state)
{
    char path[512], err[256];
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    snprintf(path, sizeof(path), "%s/domains", tmpdir);
    mkdir(path, 0750);
    make_key("rsa.test", "r1", DKIM_ALGO_RSA);
    make_key("ed.test", "e1", DKIM_ALGO_ED25519);
    make_key("both.test", "r1", DKIM_ALGO_RSA);
    make_key("both.test", "e1", DKIM_ALGO_ED25519);
    if (dkim_keys_load(tmpdir, NULL, &keys, err, sizeof(err)) < 0)
        return -1;
    vlib = dkim_verify_lib_new(err, sizeof(err));
    return vlib != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[600];
    dkim_keys_free(keys);
    dkim_verify_lib_free(vlib);
    for (size_t i = 0; i < nrecords; i++)
        free(records[i].rec);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static char *stuff(const char *msg)
{
    size_t len = strlen(msg), o = 0;
    char *out = malloc(len * 2 + 1);
    bool bol = true;
    for (size_t i = 0; i < len; i++) {
        if (bol && msg[i] == '.')
            out[o++] = '.';
        out[o++] = msg[i];
        bol = msg[i] == '\n';
    }
    out[o] = '\0';
    return out;
}

/* msg with ortoo's signatures on top (what port 25 receives), stuffed. */
static char *signed_stored(const char *msg)
{
    struct dkim_sign_params p = {.now = 1700000000, .hostname = "mx.example.test"};
    struct dkim_signer *sg = dkim_sign_open(keys, &p);
    char *stored = stuff(msg);
    dkim_sign_feed(sg, stored, strlen(stored));
    struct dkim_sign_result res;
    assert_int_equal(dkim_sign_finish(sg, &res), 0);
    dkim_sign_free(sg);
    char *full = NULL;
    assert_true(asprintf(&full, "%s%s", res.signatures ? res.signatures : "", stored) >= 0);
    free(res.signatures);
    free(res.added);
    free(stored);
    return full;
}

enum keymode { KEYS_ALL = 0, KEYS_NONE_FOUND, KEYS_TEMP, KEYS_UNSET, KEYS_REVOKED };

/* Verify stored in chunks of `chunk` bytes (0: one), keys per mode. */
static struct dkim_verify_result verify(const char *stored, size_t chunk, unsigned max_sigs,
                                        enum keymode mode, struct dkim_verifier **keep)
{
    struct dkim_verifier *v = dkim_verify_open(vlib, max_sigs, "mx.example.test");
    assert_non_null(v);
    size_t len = strlen(stored);
    bool asked = false;
    for (size_t off = 0; off < len;) {
        size_t n = chunk == 0 || chunk > len - off ? len - off : chunk;
        char *c = malloc(n);
        memcpy(c, stored + off, n);
        dkim_verify_feed(v, c, n);
        free(c);
        off += n;
        if (!asked && dkim_verify_header_done(v)) {
            asked = true;
            for (unsigned i = 0; i < dkim_verify_nkeys(v); i++) {
                const char *name = dkim_verify_key_name(v, i);
                const char *rec = NULL;
                for (size_t k = 0; k < nrecords; k++)
                    if (strcmp(records[k].name, name) == 0)
                        rec = records[k].rec;
                if (mode == KEYS_UNSET)
                    continue;
                if (mode == KEYS_TEMP)
                    dkim_verify_set_key(v, i, DKIM_KEY_TEMPFAIL, NULL, 0);
                else if (mode == KEYS_REVOKED)
                    dkim_verify_set_key(v, i, DKIM_KEY_FOUND, "v=DKIM1; k=rsa; p=", 18);
                else if (rec == NULL || mode == KEYS_NONE_FOUND)
                    dkim_verify_set_key(v, i, DKIM_KEY_NONE, NULL, 0);
                else
                    dkim_verify_set_key(v, i, DKIM_KEY_FOUND, rec, strlen(rec));
            }
        }
    }
    struct dkim_verify_result res;
    assert_int_equal(dkim_verify_finish(v, &res), 0);
    if (keep != NULL)
        *keep = v;
    else
        dkim_verify_free(v);
    return res;
}

static const char *MSG = "From: Alice <alice@both.test>\r\nTo: bob@example.test\r\n"
                         "Subject: hello\r\nDate: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
                         "Message-ID: <1@both.test>\r\n\r\nHello Bob.\r\n.leading dot\r\n"
                         "..two dots\r\n\r\nlast line\r\n";

static void test_pass_any_chunking(void **state)
{
    char *stored = signed_stored(MSG);
    size_t chunks[] = {0, 1, 2, 3, 7, 64, 100};
    for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
        struct dkim_verify_result r = verify(stored, chunks[c], 5, KEYS_ALL, NULL);
        assert_int_equal(r.nsigs, 2);
        assert_null(r.error);
        for (unsigned i = 0; i < r.nsigs; i++) {
            if (r.sigs[i].status != DKIM_V_PASS)
                fail_msg("chunk %zu sig %u: %s (%s)", chunks[c], i,
                         dkim_vstatus_name(r.sigs[i].status), r.sigs[i].why ? r.sigs[i].why : "");
            assert_string_equal(r.sigs[i].domain, "both.test");
            assert_true(strlen(r.sigs[i].b) >= 8);
        }
        assert_true((strcmp(r.sigs[0].algo, "rsa-sha256") == 0 &&
                     strcmp(r.sigs[1].algo, "ed25519-sha256") == 0) ||
                    (strcmp(r.sigs[1].algo, "rsa-sha256") == 0 &&
                     strcmp(r.sigs[0].algo, "ed25519-sha256") == 0));
    }
    free(stored);
}

static void test_tampered(void **state)
{
    char *stored = signed_stored(MSG);
    char *body = strdup(stored);
    char *p = strstr(body, "Hello Bob");
    p[0] = 'J';
    struct dkim_verify_result r = verify(body, 0, 5, KEYS_ALL, NULL);
    assert_int_equal(r.nsigs, 2);
    for (unsigned i = 0; i < r.nsigs; i++)
        assert_int_equal(r.sigs[i].status, DKIM_V_FAIL);
    free(body);
    char *hdr = strdup(stored);
    p = strstr(hdr, "Subject: hello");
    p[9] = 'J';
    r = verify(hdr, 0, 5, KEYS_ALL, NULL);
    for (unsigned i = 0; i < r.nsigs; i++)
        assert_int_equal(r.sigs[i].status, DKIM_V_FAIL);
    free(hdr);
    free(stored);
}

static void test_key_statuses(void **state)
{
    char *stored = signed_stored(MSG);
    struct dkim_verify_result r = verify(stored, 0, 5, KEYS_NONE_FOUND, NULL);
    assert_int_equal(r.nsigs, 2);
    assert_int_equal(r.sigs[0].status, DKIM_V_PERMERROR);
    assert_int_equal(r.sigs[1].status, DKIM_V_PERMERROR);
    r = verify(stored, 0, 5, KEYS_TEMP, NULL);
    assert_int_equal(r.sigs[0].status, DKIM_V_TEMPERROR);
    r = verify(stored, 0, 5, KEYS_UNSET, NULL);
    assert_int_equal(r.sigs[1].status, DKIM_V_TEMPERROR);
    r = verify(stored, 0, 5, KEYS_REVOKED, NULL);
    assert_int_equal(r.sigs[0].status, DKIM_V_PERMERROR);
    free(stored);
}

static void test_max_sigs(void **state)
{
    char *stored = signed_stored(MSG);
    struct dkim_verifier *v;
    struct dkim_verify_result r = verify(stored, 0, 1, KEYS_ALL, &v);
    assert_int_equal(dkim_verify_nkeys(v), 1);
    assert_int_equal(r.nsigs, 1);
    assert_int_equal(r.ignored, 1);
    assert_int_equal(r.sigs[0].status, DKIM_V_PASS);
    dkim_verify_free(v);
    free(stored);
}

static void test_unsigned_and_facts(void **state)
{
    struct dkim_verifier *v;
    const char *d;
    struct dkim_verify_result r =
        verify("From: \"A, B\" <a@Sub.Example.TEST.>\r\nAuthentication-Results: "
               "(comment) mx.example.test; spf=pass\r\nAuthentication-Results: other.test; "
               "dkim=pass\r\n\r\nbody\r\n",
               0, 5, KEYS_ALL, &v);
    assert_int_equal(r.nsigs, 0);
    assert_null(r.error);
    assert_int_equal(dkim_verify_from(v, &d), DKIM_FROM_ONE);
    assert_string_equal(d, "sub.example.test");
    assert_int_equal(dkim_verify_foreign_ar(v), 1);
    dkim_verify_free(v);

    /* A mailbox list of one domain is one author domain. */
    verify("From: a@x.test, B <b@X.test>\r\n\r\n", 0, 5, KEYS_ALL, &v);
    assert_int_equal(dkim_verify_from(v, &d), DKIM_FROM_ONE);
    assert_string_equal(d, "x.test");
    dkim_verify_free(v);
    /* Two domains, or two From fields: many (RFC 7489 6.6.1). */
    verify("From: a@x.test, b@y.test\r\n\r\n", 0, 5, KEYS_ALL, &v);
    assert_int_equal(dkim_verify_from(v, &d), DKIM_FROM_MANY);
    dkim_verify_free(v);
    verify("From: a@x.test\r\nFrom: a@x.test\r\n\r\n", 0, 5, KEYS_ALL, &v);
    assert_int_equal(dkim_verify_from(v, &d), DKIM_FROM_MANY);
    dkim_verify_free(v);
    /* None, garbage. */
    verify("To: a@x.test\r\n\r\nbody\r\n", 0, 5, KEYS_ALL, &v);
    assert_int_equal(dkim_verify_from(v, &d), DKIM_FROM_NONE);
    dkim_verify_free(v);
    verify("From: root\r\n\r\n", 0, 5, KEYS_ALL, &v);
    assert_int_equal(dkim_verify_from(v, &d), DKIM_FROM_BAD);
    dkim_verify_free(v);
    /* No empty line: all header, From still found at the end. */
    verify("Subject: x\r\nFrom: a@z.test\r\n", 0, 5, KEYS_ALL, &v);
    assert_int_equal(dkim_verify_from(v, &d), DKIM_FROM_ONE);
    assert_string_equal(d, "z.test");
    dkim_verify_free(v);
    /* A broken signature field: verified as neutral/permerror, no crash. */
    r = verify("DKIM-Signature: v=1; a=rsa-sha256; d=rsa.test; s=r1; b=AAAA; h=from\r\n"
               "From: a@rsa.test\r\n\r\nbody\r\n",
               0, 5, KEYS_ALL, NULL);
    assert_true(r.nsigs <= 1);
    if (r.nsigs == 1)
        assert_int_not_equal(r.sigs[0].status, DKIM_V_PASS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pass_any_chunking),
        cmocka_unit_test(test_tampered),
        cmocka_unit_test(test_key_statuses),
        cmocka_unit_test(test_max_sigs),
        cmocka_unit_test(test_unsigned_and_facts),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
