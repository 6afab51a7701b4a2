/* SPDX-License-Identifier: MIT */
/*
 * test_certgen.c - unit tests for core/certgen.c: the generated pair loads
 * into an SSL_CTX and matches, the certificate carries the names, limits
 * and key type promised in certgen.h, and bad host names write nothing.
 */
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "core/certgen.h"
#include "io/tls.h"

static char tmpdir[] = "/tmp/ortoo-test-certgen-XXXXXX";

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int group_setup(void **state)
{
    return mkdtemp(tmpdir) != NULL ? 0 : -1;
}

static int group_teardown(void **state)
{
    return nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void path_of(char *out, size_t len, const char *sub, const char *file)
{
    snprintf(out, len, "%s/%s%s%s", tmpdir, sub, file ? "/" : "", file ? file : "");
}

static X509 *cert_load(const char *sub)
{
    char p[PATH_MAX];
    FILE *f;
    X509 *x;

    path_of(p, sizeof p, sub, "fullchain.pem");
    f = fopen(p, "r");
    assert_non_null(f);
    x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(x);
    return x;
}

/* Generate into tmpdir/sub and check everything common to all hosts. */
static X509 *generate_and_check(const char *sub, const char *host)
{
    char dir[PATH_MAX], chain[PATH_MAX], key[PATH_MAX], err[256] = "x", head[64] = "";
    struct stat st;
    SSL_CTX *ctx;
    FILE *f;
    X509 *x;
    EVP_PKEY *pub;
    BASIC_CONSTRAINTS *bc;
    int crit = -1, days = 0, secs = 0;

    path_of(dir, sizeof dir, sub, NULL);
    path_of(chain, sizeof chain, sub, "fullchain.pem");
    path_of(key, sizeof key, sub, "privkey.pem");
    if (certgen_selfsigned(dir, host, err, sizeof err) != 0)
        fail_msg("certgen_selfsigned: %s", err);
    assert_string_equal(err, "");

    /* The key: 0600, PKCS#8 PEM. */
    assert_int_equal(stat(key, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    f = fopen(key, "r");
    assert_non_null(f);
    assert_non_null(fgets(head, sizeof head, f));
    fclose(f);
    assert_string_equal(head, "-----BEGIN PRIVATE KEY-----\n");

    /* The pair loads as io/tls.c loads it, and matches. */
    ctx = SSL_CTX_new(TLS_server_method());
    assert_non_null(ctx);
    assert_int_equal(SSL_CTX_use_certificate_chain_file(ctx, chain), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM), 1);
    assert_int_equal(SSL_CTX_check_private_key(ctx), 1);
    SSL_CTX_free(ctx);

    x = cert_load(sub);
    assert_int_equal(X509_get_version(x), X509_VERSION_3);
    /* Self-signed by an ECDSA P-256 key. */
    pub = X509_get0_pubkey(x);
    assert_non_null(pub);
    assert_int_equal(EVP_PKEY_get_base_id(pub), EVP_PKEY_EC);
    assert_int_equal(EVP_PKEY_get_bits(pub), 256);
    assert_int_equal(X509_verify(x, pub), 1);
    assert_int_equal(X509_NAME_cmp(X509_get_subject_name(x), X509_get_issuer_name(x)), 0);
    /* Not a CA, and says so critically. */
    bc = X509_get_ext_d2i(x, NID_basic_constraints, &crit, NULL);
    assert_non_null(bc);
    assert_false(bc->ca);
    assert_int_equal(crit, 1);
    BASIC_CONSTRAINTS_free(bc);
    assert_int_equal(X509_check_ca(x), 0);
    assert_true(X509_get_extended_key_usage(x) & XKU_SSL_SERVER);
    /* Valid now, for ten years. */
    assert_true(X509_cmp_current_time(X509_get0_notBefore(x)) < 0);
    assert_int_equal(ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x)), 1);
    assert_in_range(days, 3650, 3653);
    /* The host name is matched through the SAN (CN is ignored when a SAN
     * exists), case-insensitively; nothing else matches. */
    assert_int_equal(X509_check_host(x, host, 0, 0, NULL), 1);
    assert_int_equal(X509_check_host(x, "other.example", 0, 0, NULL), 0);
    return x;
}

static int san_count(X509 *x, int type)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    int n = 0;

    assert_non_null(gens);
    for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++)
        if (sk_GENERAL_NAME_value(gens, i)->type == type)
            n++;
    GENERAL_NAMES_free(gens);
    return n;
}

static void test_hostname(void **state)
{
    X509 *x = generate_and_check("mail", "mail.example.test");
    char cn[128];

    assert_int_equal(san_count(x, GEN_DNS), 1);
    assert_int_equal(san_count(x, GEN_IPADD), 0);
    assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn,
                                          sizeof cn) > 0);
    assert_string_equal(cn, "mail.example.test");
    assert_int_equal(X509_check_host(x, "MAIL.Example.TEST", 0, 0, NULL), 1);
    assert_int_equal(X509_check_ip_asc(x, "127.0.0.1", 0), 0);
    X509_free(x);
}

static void test_localhost(void **state)
{
    X509 *x = generate_and_check("localhost", "localhost");

    assert_int_equal(san_count(x, GEN_DNS), 1);
    assert_int_equal(san_count(x, GEN_IPADD), 2);
    assert_int_equal(X509_check_ip_asc(x, "127.0.0.1", 0), 1);
    assert_int_equal(X509_check_ip_asc(x, "::1", 0), 1);
    assert_int_equal(X509_check_ip_asc(x, "127.0.0.2", 0), 0);
    X509_free(x);
}

/* A verifier that trusts the certificate accepts it for its name. */
static void test_verifies_as_trust_anchor(void **state)
{
    X509 *x = generate_and_check("anchor", "mx.anchor.test");
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *vctx = X509_STORE_CTX_new();

    assert_int_equal(X509_STORE_add_cert(store, x), 1);
    assert_int_equal(X509_STORE_CTX_init(vctx, store, x, NULL), 1);
    assert_int_equal(X509_VERIFY_PARAM_set1_host(X509_STORE_CTX_get0_param(vctx),
                                                 "mx.anchor.test", 0),
                     1);
    X509_STORE_CTX_set_purpose(vctx, X509_PURPOSE_SSL_SERVER);
    if (X509_verify_cert(vctx) != 1)
        fail_msg("verify: %s",
                 X509_verify_cert_error_string(X509_STORE_CTX_get_error(vctx)));
    X509_STORE_CTX_free(vctx);
    X509_STORE_free(store);
    X509_free(x);
}

/* A second run replaces both files with a new key. */
static void test_replaces(void **state)
{
    X509 *a = generate_and_check("again", "again.test");
    X509 *b = generate_and_check("again", "again.test");

    assert_int_not_equal(EVP_PKEY_eq(X509_get0_pubkey(a), X509_get0_pubkey(b)), 1);
    assert_int_not_equal(ASN1_INTEGER_cmp(X509_get0_serialNumber(a), X509_get0_serialNumber(b)),
                         0);
    X509_free(a);
    X509_free(b);
}

static void test_bad_hostnames(void **state)
{
    static const char *bad[] = {
        "", ".", "a..b", ".a.b", "a.b.", "-a.b", "a-.b", "a b", "a,DNS:evil.example",
        "a/b", "ex\xc3\xa4mple.test", "*.example.test",
    };
    char dir[PATH_MAX], p[PATH_MAX], err[256], longname[300];
    struct stat st;

    path_of(dir, sizeof dir, "bad", NULL);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_int_equal(certgen_selfsigned(dir, bad[i], err, sizeof err), -EINVAL);
        assert_non_null(strstr(err, "invalid host name"));
    }
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(certgen_selfsigned(dir, longname, err, sizeof err), -EINVAL);
    /* 64-character label. */
    memset(longname, 'a', 64);
    strcpy(longname + 64, ".test");
    assert_int_equal(certgen_selfsigned(dir, longname, err, sizeof err), -EINVAL);
    assert_int_equal(certgen_selfsigned(dir, NULL, err, sizeof err), -EINVAL);
    path_of(p, sizeof p, "bad", "privkey.pem");
    assert_int_not_equal(stat(p, &st), 0);
}

/* Names longer than a CN allows still work (SAN only carries them). */
static void test_long_hostname(void **state)
{
    char host[200];
    X509 *x;

    snprintf(host, sizeof host, "%s.%s.example.test",
             "a123456789012345678901234567890123456789012345678901234567890bc",
             "d123456789012345678901234567890123456789012345678901234567890ef");
    x = generate_and_check("long", host);
    assert_int_equal(san_count(x, GEN_DNS), 1);
    X509_free(x);
}

/* What `ortoo init` writes is what the TLS layer loads. */
static void test_loads_in_tls_server(void **state)
{
    char dir[PATH_MAX], err[256] = "";
    struct tls_server *s;

    path_of(dir, sizeof dir, "certs", NULL);
    assert_int_equal(mkdir(dir, 0700), 0);
    path_of(dir, sizeof dir, "certs/mx.load.test", NULL);
    assert_int_equal(certgen_selfsigned(dir, "mx.load.test", err, sizeof err), 0);
    path_of(dir, sizeof dir, "certs/localhost", NULL);
    assert_int_equal(certgen_selfsigned(dir, "localhost", err, sizeof err), 0);
    path_of(dir, sizeof dir, "certs", NULL);
    s = tls_server_new(dir, "mx.load.test", err, sizeof err);
    if (s == NULL)
        fail_msg("tls_server_new: %s", err);
    assert_int_equal(tls_server_count(s), 2);
    tls_server_free(s);
}

static void test_missing_parent(void **state)
{
    char dir[PATH_MAX], err[256] = "";

    path_of(dir, sizeof dir, "no/such/dir", NULL);
    assert_int_equal(certgen_selfsigned(dir, "x.test", err, sizeof err), -ENOENT);
    assert_non_null(strstr(err, "no/such/dir"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostname),
        cmocka_unit_test(test_localhost),
        cmocka_unit_test(test_verifies_as_trust_anchor),
        cmocka_unit_test(test_replaces),
        cmocka_unit_test(test_bad_hostnames),
        cmocka_unit_test(test_long_hostname),
        cmocka_unit_test(test_loads_in_tls_server),
        cmocka_unit_test(test_missing_parent),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
