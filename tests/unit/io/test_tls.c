/* SPDX-License-Identifier: MIT */
/*
 * test_tls.c - unit tests for io/tls.c: handshakes pumped in memory between
 * a server and a client connection, SNI selection, resumption across ticket
 * key rotations, broken certificate directories and hostile input.
 *
 * Certificates are made at test time with the OpenSSL API (no dependency on
 * core/certgen.c) so that the same file builds against BoringSSL:
 * `make TLS=boringssl check-tls`.  Two hosts:
 *   mx.a.test       (the default) SAN DNS:mx.a.test, DNS:*.a.test
 *   mail.b.example  SAN DNS:mail.b.example
 * Both certificates are put in a bundle named by SSL_CERT_FILE, so a
 * verifying client trusts them; which certificate was served is then proved
 * by the host name check succeeding or failing.
 *
 * The client side of delivery (verify modes, DANE, the session cache) uses
 * a small PKI: a test CA, a leaf it signed for mx.dane.test (served with
 * the CA in its chain, as RFC 7672 3.1.2 asks of DANE-TA servers), an
 * expired leaf signed by the same CA, and an expired self-signed one.
 */
#define OPENSSL_API_COMPAT 0x10100000L /* EC_KEY for BoringSSL-compatible keygen */

#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "io/metrics.h"
#include "io/tls.h"

#define HOST_A "mx.a.test"
#define HOST_B "mail.b.example"

static char tmpdir[] = "/tmp/ortoo-test-tls-XXXXXX";
static char certdir[512]; /* tmpdir/certs: the two good hosts */

/* ---- certificate fixtures ------------------------------------------- */

static EVP_PKEY *key_make(void)
{
    EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    EVP_PKEY *pk = EVP_PKEY_new();

    assert_non_null(ec);
    assert_non_null(pk);
    assert_int_equal(EC_KEY_generate_key(ec), 1);
    assert_int_equal(EVP_PKEY_assign_EC_KEY(pk, ec), 1);
    return pk;
}

/* A self-signed certificate for cn with the given DNS names (NULL-ended)
 * as subjectAltName.  The SAN is built by hand: Debian's BoringSSL lacks
 * the X509V3_EXT_conf* parsers. */
static X509 *cert_make(EVP_PKEY *pk, const char *cn, const char *const *dns)
{
    static long serial = 1;
    X509 *x = X509_new();
    X509_NAME *name;
    GENERAL_NAMES *gens = GENERAL_NAMES_new();

    assert_non_null(x);
    assert_non_null(gens);
    assert_int_equal(X509_set_version(x, 2), 1);
    assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), serial++), 1);
    assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), -3600));
    assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 30));
    assert_int_equal(X509_set_pubkey(x, pk), 1);
    name = X509_get_subject_name(x);
    assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                                (const unsigned char *)cn, -1, -1, 0),
                     1);
    assert_int_equal(X509_set_issuer_name(x, name), 1);
    for (size_t i = 0; dns[i] != NULL; i++) {
        GENERAL_NAME *g = GENERAL_NAME_new();
        ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();
        assert_non_null(g);
        assert_non_null(ia5);
        assert_int_equal(ASN1_STRING_set(ia5, dns[i], (int)strlen(dns[i])), 1);
        GENERAL_NAME_set0_value(g, GEN_DNS, ia5);
        assert_true(sk_GENERAL_NAME_push(gens, g) > 0);
    }
    assert_int_equal(X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT), 1);
    GENERAL_NAMES_free(gens);
    assert_true(X509_sign(x, pk, EVP_sha256()) > 0);
    return x;
}

static void mkdir_p(const char *path)
{
    assert_true(mkdir(path, 0700) == 0 || errno == EEXIST);
}

static void write_cert(const char *path, X509 *x)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    assert_int_equal(PEM_write_X509(f, x), 1);
    assert_int_equal(fclose(f), 0);
}

static void write_key(const char *path, EVP_PKEY *pk)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    assert_int_equal(PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL), 1);
    assert_int_equal(fclose(f), 0);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

/* base/host/{fullchain.pem,privkey.pem} */
static void host_write(const char *base, const char *host, X509 *x, EVP_PKEY *pk)
{
    char p[1024];

    snprintf(p, sizeof p, "%s/%s", base, host);
    mkdir_p(p);
    snprintf(p, sizeof p, "%s/%s/fullchain.pem", base, host);
    write_cert(p, x);
    snprintf(p, sizeof p, "%s/%s/privkey.pem", base, host);
    write_key(p, pk);
}


/* ---- a small PKI for the client side ---------------------------------- */

#define DANE_HOST "mx.dane.test"

/* A certificate for pk signed by (ica, ikey), or self-signed when ica is
 * NULL; valid from `from` to `to` seconds relative to now; a CA when ca. */
static X509 *cert_issue(EVP_PKEY *pk, const char *cn, const char *const *dns, X509 *ica,
                        EVP_PKEY *ikey, bool ca, long from, long to)
{
    static long serial = 1000;
    X509 *x = X509_new();
    X509_NAME *name;
    BASIC_CONSTRAINTS *bc = BASIC_CONSTRAINTS_new();

    assert_non_null(x);
    assert_non_null(bc);
    assert_int_equal(X509_set_version(x, 2), 1);
    assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), serial++), 1);
    assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), from));
    assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), to));
    assert_int_equal(X509_set_pubkey(x, pk), 1);
    name = X509_get_subject_name(x);
    assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                                (const unsigned char *)cn, -1, -1, 0),
                     1);
    assert_int_equal(X509_set_issuer_name(x, ica ? X509_get_subject_name(ica) : name), 1);
    bc->ca = ca ? 0xff : 0;
    assert_int_equal(X509_add1_ext_i2d(x, NID_basic_constraints, bc, 1, X509V3_ADD_DEFAULT), 1);
    BASIC_CONSTRAINTS_free(bc);
    if (dns != NULL) {
        GENERAL_NAMES *gens = GENERAL_NAMES_new();
        assert_non_null(gens);
        for (size_t i = 0; dns[i] != NULL; i++) {
            GENERAL_NAME *g = GENERAL_NAME_new();
            ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();
            assert_non_null(g);
            assert_non_null(ia5);
            assert_int_equal(ASN1_STRING_set(ia5, dns[i], (int)strlen(dns[i])), 1);
            GENERAL_NAME_set0_value(g, GEN_DNS, ia5);
            assert_true(sk_GENERAL_NAME_push(gens, g) > 0);
        }
        assert_int_equal(X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT),
                         1);
        GENERAL_NAMES_free(gens);
    }
    assert_true(X509_sign(x, ikey ? ikey : pk, EVP_sha256()) > 0);
    return x;
}

struct tls_server;
static struct tls_server *pki_servers[3]; /* see server_on() */
static EVP_PKEY *ca_key, *leaf_key, *old_key;
static X509 *ca_cert, *leaf_cert, *old_leaf, *old_self;
static char dane_dir[512];    /* leaf + CA chain for mx.dane.test */
static char expired_dir[512]; /* expired leaf (CA-signed) + CA */
static char selfold_dir[512]; /* expired self-signed leaf */
static char ca_file[512];     /* the test CA alone */

static void write_chain(const char *base, const char *host, X509 *leaf, X509 *ca, EVP_PKEY *pk)
{
    char p[1024];
    FILE *f;

    snprintf(p, sizeof p, "%s/%s", base, host);
    mkdir_p(p);
    snprintf(p, sizeof p, "%s/%s/fullchain.pem", base, host);
    f = fopen(p, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_X509(f, leaf), 1);
    if (ca != NULL)
        assert_int_equal(PEM_write_X509(f, ca), 1);
    assert_int_equal(fclose(f), 0);
    snprintf(p, sizeof p, "%s/%s/privkey.pem", base, host);
    write_key(p, pk);
}

static void pki_setup(void)
{
    ca_key = key_make();
    leaf_key = key_make();
    old_key = key_make();
    ca_cert = cert_issue(ca_key, "ortoo test CA", NULL, NULL, NULL, true, -3600, 86400L * 30);
    leaf_cert = cert_issue(leaf_key, DANE_HOST, (const char *const[]){DANE_HOST, NULL}, ca_cert,
                           ca_key, false, -3600, 86400L * 30);
    old_leaf = cert_issue(old_key, DANE_HOST, (const char *const[]){DANE_HOST, NULL}, ca_cert,
                          ca_key, false, -86400L * 60, -86400L * 30);
    old_self = cert_issue(old_key, DANE_HOST, (const char *const[]){DANE_HOST, NULL}, NULL, NULL,
                          false, -86400L * 60, -86400L * 30);
    snprintf(dane_dir, sizeof dane_dir, "%s/dane", tmpdir);
    snprintf(expired_dir, sizeof expired_dir, "%s/expired", tmpdir);
    snprintf(selfold_dir, sizeof selfold_dir, "%s/selfold", tmpdir);
    snprintf(ca_file, sizeof ca_file, "%s/ca.pem", tmpdir);
    mkdir_p(dane_dir);
    mkdir_p(expired_dir);
    mkdir_p(selfold_dir);
    write_chain(dane_dir, DANE_HOST, leaf_cert, ca_cert, leaf_key);
    write_chain(expired_dir, DANE_HOST, old_leaf, ca_cert, old_key);
    write_chain(selfold_dir, DANE_HOST, old_self, NULL, old_key);
    write_cert(ca_file, ca_cert);
}

static void pki_teardown(void)
{
    for (int i = 0; i < 3; i++)
        tls_server_free(pki_servers[i]);
    X509_free(ca_cert);
    X509_free(leaf_cert);
    X509_free(old_leaf);
    X509_free(old_self);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(leaf_key);
    EVP_PKEY_free(old_key);
}

static EVP_PKEY *key_a, *key_b;
static X509 *cert_a, *cert_b;

static int group_setup(void **state)
{
    char p[1024];
    FILE *f;

    if (mkdtemp(tmpdir) == NULL)
        return -1;
    snprintf(certdir, sizeof certdir, "%s/certs", tmpdir);
    mkdir_p(certdir);
    key_a = key_make();
    key_b = key_make();
    cert_a = cert_make(key_a, HOST_A, (const char *const[]){HOST_A, "*.a.test", NULL});
    cert_b = cert_make(key_b, HOST_B, (const char *const[]){HOST_B, NULL});
    host_write(certdir, HOST_A, cert_a, key_a);
    host_write(certdir, HOST_B, cert_b, key_b);
    /* Things the loader must ignore. */
    snprintf(p, sizeof p, "%s/empty-dir", certdir);
    mkdir_p(p);
    snprintf(p, sizeof p, "%s/README", certdir);
    write_text(p, "not a host\n");

    /* Trust both certificates, and nothing from the system. */
    snprintf(p, sizeof p, "%s/bundle.pem", tmpdir);
    f = fopen(p, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_X509(f, cert_a), 1);
    assert_int_equal(PEM_write_X509(f, cert_b), 1);
    assert_int_equal(fclose(f), 0);
    setenv("SSL_CERT_FILE", p, 1);
    setenv("SSL_CERT_DIR", tmpdir, 1);
    pki_setup();
    return 0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int group_teardown(void **state)
{
    X509_free(cert_a);
    X509_free(cert_b);
    EVP_PKEY_free(key_a);
    EVP_PKEY_free(key_b);
    pki_teardown();
    return nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- pumping bytes between two connections -------------------------- */

static void transfer(struct tls_conn *from, struct tls_conn *to)
{
    unsigned char buf[4096];

    while (tls_conn_pending_out(from) > 0) {
        size_t n = tls_conn_take_out(from, buf, sizeof buf);
        assert_true(n > 0);
        assert_int_equal(tls_conn_feed(to, buf, n), 0);
    }
}

/* Run both handshakes to completion; returns TLS_OK or TLS_ERR. */
static int pump(struct tls_conn *srv, struct tls_conn *cli)
{
    int rs = TLS_AGAIN, rc = TLS_AGAIN;

    for (int round = 0; round < 20; round++) {
        if (rc != TLS_OK)
            rc = tls_conn_handshake(cli);
        transfer(cli, srv);
        if (rs != TLS_OK)
            rs = tls_conn_handshake(srv);
        transfer(srv, cli);
        if (rs == TLS_ERR || rc == TLS_ERR)
            return TLS_ERR;
        if (rs == TLS_OK && rc == TLS_OK)
            return TLS_OK;
    }
    fail_msg("handshake did not finish");
    return TLS_ERR;
}

/* Let the client take what the server sent after the handshake (TLS 1.3
 * tickets); no application data is expected. */
static void client_drain(struct tls_conn *srv, struct tls_conn *cli)
{
    unsigned char buf[64];

    transfer(srv, cli);
    assert_int_equal(tls_conn_read(cli, buf, sizeof buf), TLS_AGAIN);
    transfer(cli, srv);
}

/* Read exactly len bytes from `to` after moving ciphertext from `from`. */
static void recv_all(struct tls_conn *from, struct tls_conn *to, unsigned char *buf, size_t len)
{
    size_t got = 0;

    transfer(from, to);
    while (got < len) {
        ssize_t r = tls_conn_read(to, buf + got, len - got);
        assert_true(r > 0);
        got += (size_t)r;
    }
    assert_int_equal(tls_conn_read(to, buf, 1), TLS_AGAIN);
}

static struct tls_server *server_new(const char *def)
{
    char err[256] = "";
    struct tls_server *s = tls_server_new(certdir, def, err, sizeof err);

    if (s == NULL)
        fail_msg("tls_server_new: %s", err);
    assert_int_equal(tls_server_count(s), 2);
    return s;
}

static struct tls_client *client_new(bool verify)
{
    char err[256] = "";
    struct tls_client *c = tls_client_new(verify, err, sizeof err);

    if (c == NULL)
        fail_msg("tls_client_new: %s", err);
    return c;
}

/* One connection; returns the handshake result and whether both sides saw
 * a resumption (asserting they agree). */
static int connect_once(struct tls_server *s, struct tls_client *c, const char *sni,
                        bool *resumed, char *errout, size_t errlen)
{
    struct tls_conn *srv = tls_conn_new_server(s);
    struct tls_conn *cli = tls_conn_new_client(c, sni);
    int r;

    assert_non_null(srv);
    assert_non_null(cli);
    r = pump(srv, cli);
    if (r == TLS_OK) {
        assert_int_equal(tls_conn_resumed(srv), tls_conn_resumed(cli));
        if (resumed != NULL)
            *resumed = tls_conn_resumed(cli);
        client_drain(srv, cli);
    } else if (errout != NULL) {
        snprintf(errout, errlen, "%s", tls_conn_error(cli));
    }
    tls_conn_free(srv);
    tls_conn_free(cli);
    return r;
}

/* ---- tests ---------------------------------------------------------- */

static void test_handshake_and_data(void **state)
{
    struct tls_server *s = server_new(HOST_A);
    struct tls_client *c = client_new(false);
    struct tls_conn *srv = tls_conn_new_server(s);
    struct tls_conn *cli = tls_conn_new_client(c, HOST_A);
    static unsigned char big[200000], got[200000];
    unsigned char small[16];
    ssize_t r;

    assert_non_null(srv);
    assert_non_null(cli);
    /* Nothing can be written before the handshake. */
    assert_int_equal(tls_conn_write(cli, "x", 1), TLS_ERR);
    tls_conn_free(cli);
    cli = tls_conn_new_client(c, HOST_A);

    assert_int_equal(pump(srv, cli), TLS_OK);
    assert_string_equal(tls_conn_version(srv), "TLSv1.3");
    assert_string_equal(tls_conn_version(cli), "TLSv1.3");
    assert_string_equal(tls_conn_cipher(srv), tls_conn_cipher(cli));
    assert_non_null(tls_conn_sni(srv));
    assert_string_equal(tls_conn_sni(srv), HOST_A);
    assert_string_equal(tls_conn_sni(cli), HOST_A);
    assert_false(tls_conn_resumed(srv));

    /* Client to server. */
    assert_int_equal(tls_conn_write(cli, "EHLO x\r\n", 8), 8);
    recv_all(cli, srv, small, 8);
    assert_memory_equal(small, "EHLO x\r\n", 8);

    /* Server to client, many records; the client first meets the tickets. */
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (unsigned char)(i * 7 + 3);
    assert_int_equal(tls_conn_write(srv, big, sizeof big), (ssize_t)sizeof big);
    assert_true(tls_conn_pending_out(srv) > sizeof big);
    recv_all(srv, cli, got, sizeof got);
    assert_memory_equal(big, got, sizeof big);

    /* close_notify reaches the server as TLS_CLOSED. */
    tls_conn_shutdown(cli);
    assert_true(tls_conn_pending_out(cli) > 0);
    transfer(cli, srv);
    r = tls_conn_read(srv, small, sizeof small);
    assert_int_equal(r, TLS_CLOSED);

    tls_conn_free(srv);
    tls_conn_free(cli);
    tls_client_free(c);
    tls_server_free(s);
}

static void test_no_sni_gets_default(void **state)
{
    struct tls_server *s = server_new(HOST_B);
    struct tls_client *c = client_new(false);
    struct tls_conn *srv = tls_conn_new_server(s);
    struct tls_conn *cli = tls_conn_new_client(c, NULL);

    assert_int_equal(pump(srv, cli), TLS_OK);
    assert_null(tls_conn_sni(srv));
    assert_null(tls_conn_sni(cli));
    tls_conn_free(srv);
    tls_conn_free(cli);
    tls_client_free(c);
    tls_server_free(s);
}

static void test_sni_selects_certificate(void **state)
{
    struct tls_server *s = server_new(HOST_A);
    struct tls_client *c = client_new(true);
    char err[256];

    /* A verifying client checks the SNI name against the certificate: each
     * success proves which certificate the server chose. */
    assert_int_equal(connect_once(s, c, HOST_A, NULL, NULL, 0), TLS_OK);
    /* Only B's certificate names mail.b.example; case does not matter. */
    assert_int_equal(connect_once(s, c, "MAIL.B.Example", NULL, NULL, 0), TLS_OK);
    assert_int_equal(connect_once(s, c, HOST_B, NULL, NULL, 0), TLS_OK);
    /* Unknown name: the default (A, whose *.a.test covers it). */
    assert_int_equal(connect_once(s, c, "zzz.a.test", NULL, NULL, 0), TLS_OK);
    /* A name no certificate covers fails verification. */
    err[0] = '\0';
    assert_int_equal(connect_once(s, c, "nothing.invalid", NULL, err, sizeof err), TLS_ERR);
    assert_non_null(strstr(err, "verify"));
    tls_server_free(s);

    /* With B as the default, the unknown name gets B, which fails. */
    s = server_new(HOST_B);
    assert_int_equal(connect_once(s, c, "zzz.a.test", NULL, NULL, 0), TLS_ERR);
    assert_int_equal(connect_once(s, c, HOST_A, NULL, NULL, 0), TLS_OK);
    tls_server_free(s);

    /* An unknown default host falls back to the first (sorted: mail.b...). */
    s = server_new("nonexistent.example");
    assert_int_equal(connect_once(s, c, "zzz.a.test", NULL, NULL, 0), TLS_ERR);
    tls_server_free(s);
    tls_client_free(c);
}

/* Counter cell i now (io/metrics.h). */
static uint64_t metric(unsigned i)
{
    uint64_t v[METRICS_NCELLS];
    metrics_sum(v);
    return v[i];
}

static void test_resumption_tls13(void **state)
{
    struct tls_server *s = server_new(HOST_A);
    struct tls_client *c = client_new(true);
    bool resumed = true;
    uint64_t sf = metric(METRICS_TLS_SERVER_FULL), sr = metric(METRICS_TLS_SERVER_RESUMED);
    uint64_t cf = metric(METRICS_TLS_CLIENT_FULL), cr = metric(METRICS_TLS_CLIENT_RESUMED);

    assert_int_equal(connect_once(s, c, HOST_A, &resumed, NULL, 0), TLS_OK);
    assert_false(resumed);
    assert_int_equal(connect_once(s, c, HOST_A, &resumed, NULL, 0), TLS_OK);
    assert_true(resumed);
    /* Each side counted each handshake once, full then resumed. */
    assert_int_equal(metric(METRICS_TLS_SERVER_FULL), sf + 1);
    assert_int_equal(metric(METRICS_TLS_SERVER_RESUMED), sr + 1);
    assert_int_equal(metric(METRICS_TLS_CLIENT_FULL), cf + 1);
    assert_int_equal(metric(METRICS_TLS_CLIENT_RESUMED), cr + 1);
    assert_int_equal(connect_once(s, c, HOST_A, &resumed, NULL, 0), TLS_OK);
    assert_true(resumed);
    /* Another name has no session in the client's cache. */
    assert_int_equal(connect_once(s, c, HOST_B, &resumed, NULL, 0), TLS_OK);
    assert_false(resumed);
    assert_int_equal(connect_once(s, c, HOST_B, &resumed, NULL, 0), TLS_OK);
    assert_true(resumed);
    tls_client_free(c);

    /* A ticket from another server (other keys) is not accepted. */
    c = client_new(false);
    assert_int_equal(connect_once(s, c, HOST_A, &resumed, NULL, 0), TLS_OK);
    tls_server_free(s);
    s = server_new(HOST_A);
    assert_int_equal(connect_once(s, c, HOST_A, &resumed, NULL, 0), TLS_OK);
    assert_false(resumed);
    tls_client_free(c);
    tls_server_free(s);
}

/* ---- tickets seen by a plain library client --------------------------- */

static int tickets_seen; /* NewSessionTicket messages the raw client got */
static SSL_SESSION *ticket_last;

static int on_raw_ticket(SSL *ssl, SSL_SESSION *sess)
{
    tickets_seen++;
    if (ticket_last != NULL)
        SSL_SESSION_free(ticket_last);
    ticket_last = sess;
    return 1;
}

/* Move the ciphertext a raw SSL wrote into its out BIO to a tls_conn. */
static void raw_to_conn(BIO *out, struct tls_conn *to)
{
    unsigned char buf[16384];
    int n;

    while ((n = BIO_read(out, buf, sizeof buf)) > 0)
        assert_int_equal(tls_conn_feed(to, buf, (size_t)n), 0);
}

static void conn_to_raw(struct tls_conn *from, BIO *in)
{
    unsigned char buf[16384];

    while (tls_conn_pending_out(from) > 0) {
        size_t n = tls_conn_take_out(from, buf, sizeof buf);
        assert_true(n > 0);
        assert_int_equal(BIO_write(in, buf, (int)n), (int)n);
    }
}

/* One connection of a raw library client (offering sess when not NULL) to
 * a tls_conn server; returns the tickets it received, sets *resumed. */
static int raw_connect(struct tls_server *s, SSL_CTX *ctx, SSL_SESSION *sess, bool *resumed)
{
    struct tls_conn *srv = tls_conn_new_server(s);
    SSL *ssl = SSL_new(ctx);
    BIO *in = BIO_new(BIO_s_mem()), *out = BIO_new(BIO_s_mem());
    int before = tickets_seen, rs = TLS_AGAIN, rc = 0;
    unsigned char buf[64];

    assert_non_null(srv);
    assert_non_null(ssl);
    BIO_set_mem_eof_return(in, -1);
    SSL_set_bio(ssl, in, out);
    SSL_set_connect_state(ssl);
    SSL_set_tlsext_host_name(ssl, HOST_A);
    if (sess != NULL)
        assert_int_equal(SSL_set_session(ssl, sess), 1);
    for (int round = 0; round < 10 && (rc != 1 || rs != TLS_OK); round++) {
        if (rc != 1)
            rc = SSL_do_handshake(ssl);
        raw_to_conn(out, srv);
        if (rs != TLS_OK)
            rs = tls_conn_handshake(srv);
        assert_int_not_equal(rs, TLS_ERR);
        conn_to_raw(srv, in);
    }
    assert_int_equal(rc, 1);
    assert_int_equal(rs, TLS_OK);
    assert_true(SSL_read(ssl, buf, sizeof buf) <= 0); /* takes in the tickets */
    *resumed = SSL_session_reused(ssl) == 1;
    assert_int_equal(tls_conn_resumed(srv), *resumed);
    SSL_set_shutdown(ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(ssl);
    tls_conn_free(srv);
    return tickets_seen - before;
}

/* One TLS 1.3 ticket after a full handshake (not the libraries' default
 * two), and a fresh one after every resumption, each resumable. */
static void test_ticket_count(void **state)
{
    struct tls_server *s = server_new(HOST_A);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    bool resumed = true;

    assert_non_null(ctx);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, on_raw_ticket);
    tickets_seen = 0;
    assert_int_equal(raw_connect(s, ctx, NULL, &resumed), 1);
    assert_false(resumed);
    for (int i = 0; i < 3; i++) {
        SSL_SESSION *t = ticket_last;
        ticket_last = NULL;
        assert_non_null(t);
        assert_int_equal(raw_connect(s, ctx, t, &resumed), 1);
        assert_true(resumed);
        SSL_SESSION_free(t);
    }
    if (ticket_last != NULL)
        SSL_SESSION_free(ticket_last);
    ticket_last = NULL;
    SSL_CTX_free(ctx);
    tls_server_free(s);
}

static void test_rotation_once_resumes(void **state)
{
    struct tls_server *s = server_new(HOST_A);
    struct tls_client *c = client_new(false);
    bool resumed = true;

    assert_int_equal(connect_once(s, c, HOST_A, &resumed, NULL, 0), TLS_OK);
    assert_false(resumed);
    tls_server_rotate_tickets(s);
    assert_int_equal(connect_once(s, c, HOST_A, &resumed, NULL, 0), TLS_OK);
    assert_true(resumed);
    /* That connection left a ticket under the new key: two more rotations
     * since the first ticket, one since this one. */
    tls_server_rotate_tickets(s);
    assert_int_equal(connect_once(s, c, HOST_A, &resumed, NULL, 0), TLS_OK);
    assert_true(resumed);
    tls_client_free(c);
    tls_server_free(s);
}

static void test_rotation_twice_full_handshake(void **state)
{
    struct tls_server *s = server_new(HOST_A);
    struct tls_client *c = client_new(false);
    bool resumed = true;

    assert_int_equal(connect_once(s, c, HOST_A, &resumed, NULL, 0), TLS_OK);
    assert_false(resumed);
    tls_server_rotate_tickets(s);
    tls_server_rotate_tickets(s);
    assert_int_equal(connect_once(s, c, HOST_A, &resumed, NULL, 0), TLS_OK);
    assert_false(resumed);
    /* ... and the fresh ticket works again. */
    assert_int_equal(connect_once(s, c, HOST_A, &resumed, NULL, 0), TLS_OK);
    assert_true(resumed);
    tls_client_free(c);
    tls_server_free(s);
}

/* A raw TLS 1.2 client on memory BIOs, made directly with the library. */
struct raw {
    SSL *ssl;
    BIO *in, *out;
};

static void raw_new(struct raw *r, SSL_CTX *ctx, SSL_SESSION *sess)
{
    r->ssl = SSL_new(ctx);
    r->in = BIO_new(BIO_s_mem());
    r->out = BIO_new(BIO_s_mem());
    assert_non_null(r->ssl);
    BIO_set_mem_eof_return(r->in, -1);
    BIO_set_mem_eof_return(r->out, -1);
    SSL_set_bio(r->ssl, r->in, r->out);
    SSL_set_connect_state(r->ssl);
    assert_int_equal(SSL_set_tlsext_host_name(r->ssl, HOST_A), 1);
    if (sess != NULL)
        assert_int_equal(SSL_set_session(r->ssl, sess), 1);
}

static int raw_pump(struct tls_conn *srv, struct raw *r)
{
    unsigned char buf[4096];
    int rs = TLS_AGAIN, rc = 0;

    for (int round = 0; round < 20; round++) {
        int n;
        if (rc != 1) {
            rc = SSL_do_handshake(r->ssl);
            if (rc != 1 && SSL_get_error(r->ssl, rc) != SSL_ERROR_WANT_READ)
                return TLS_ERR;
        }
        while ((n = BIO_read(r->out, buf, sizeof buf)) > 0)
            assert_int_equal(tls_conn_feed(srv, buf, (size_t)n), 0);
        if (rs != TLS_OK)
            rs = tls_conn_handshake(srv);
        if (rs == TLS_ERR)
            return TLS_ERR;
        while (tls_conn_pending_out(srv) > 0) {
            size_t k = tls_conn_take_out(srv, buf, sizeof buf);
            assert_int_equal(BIO_write(r->in, buf, (int)k), (int)k);
        }
        if (rs == TLS_OK && rc == 1)
            return TLS_OK;
    }
    return TLS_ERR;
}

/* TLS 1.2 resumes by ticket, and by session id through the server cache
 * when the client does not do tickets. */
static void test_resumption_tls12(void **state)
{
    struct tls_server *s = server_new(HOST_A);

    for (int no_ticket = 0; no_ticket < 2; no_ticket++) {
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
        SSL_SESSION *sess;
        struct tls_conn *srv;
        struct raw r;

        assert_non_null(ctx);
        assert_int_equal(SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION), 1);
        if (no_ticket)
            SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);

        srv = tls_conn_new_server(s);
        raw_new(&r, ctx, NULL);
        assert_int_equal(raw_pump(srv, &r), TLS_OK);
        assert_string_equal(tls_conn_version(srv), "TLSv1.2");
        assert_false(tls_conn_resumed(srv));
        sess = SSL_get1_session(r.ssl);
        assert_non_null(sess);
        (void)SSL_shutdown(r.ssl); /* else OpenSSL marks sess not resumable */
        SSL_free(r.ssl);
        tls_conn_free(srv);

        srv = tls_conn_new_server(s);
        raw_new(&r, ctx, sess);
        assert_int_equal(raw_pump(srv, &r), TLS_OK);
        assert_true(tls_conn_resumed(srv));
        assert_int_equal(SSL_session_reused(r.ssl), 1);
        SSL_free(r.ssl);
        tls_conn_free(srv);

        SSL_SESSION_free(sess);
        SSL_CTX_free(ctx);
    }
    tls_server_free(s);
}

static void *rotator(void *arg)
{
    for (int i = 0; i < 2000; i++)
        tls_server_rotate_tickets(arg);
    return NULL;
}

/* Rotation from another thread while handshakes run: no crash, no race
 * (meaningful under the sanitizers); every handshake completes. */
static void test_rotation_concurrent(void **state)
{
    struct tls_server *s = server_new(HOST_A);
    struct tls_client *c = client_new(false);
    pthread_t t;

    assert_int_equal(pthread_create(&t, NULL, rotator, s), 0);
    for (int i = 0; i < 20; i++)
        assert_int_equal(connect_once(s, c, HOST_A, NULL, NULL, 0), TLS_OK);
    assert_int_equal(pthread_join(t, NULL), 0);
    tls_client_free(c);
    tls_server_free(s);
}

/* Expect tls_server_new(dir) to fail with a message containing want. */
static void expect_load_error(const char *dir, const char *want)
{
    char err[512] = "";
    struct tls_server *s = tls_server_new(dir, NULL, err, sizeof err);

    if (s != NULL) {
        tls_server_free(s);
        fail_msg("%s loaded", dir);
    }
    if (strstr(err, want) == NULL)
        fail_msg("error \"%s\" lacks \"%s\"", err, want);
}

static void test_broken_cert_dirs(void **state)
{
    char base[512], p[1024];

    snprintf(base, sizeof base, "%s/missing", tmpdir);
    expect_load_error(base, "missing");

    snprintf(base, sizeof base, "%s/none", tmpdir);
    mkdir_p(base);
    expect_load_error(base, "no certificate");

    /* Key of another host. */
    snprintf(base, sizeof base, "%s/mismatch", tmpdir);
    mkdir_p(base);
    host_write(base, HOST_A, cert_a, key_b);
    expect_load_error(base, "privkey.pem");

    /* Garbage certificate. */
    snprintf(base, sizeof base, "%s/garbage", tmpdir);
    mkdir_p(base);
    host_write(base, HOST_A, cert_a, key_a);
    snprintf(p, sizeof p, "%s/%s/fullchain.pem", base, HOST_A);
    write_text(p, "-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n");
    expect_load_error(base, "fullchain.pem");

    /* Garbage key. */
    snprintf(base, sizeof base, "%s/badkey", tmpdir);
    mkdir_p(base);
    host_write(base, HOST_A, cert_a, key_a);
    snprintf(p, sizeof p, "%s/%s/privkey.pem", base, HOST_A);
    write_text(p, "hello\n");
    expect_load_error(base, "privkey.pem");

    /* Half a pair. */
    snprintf(base, sizeof base, "%s/half", tmpdir);
    mkdir_p(base);
    host_write(base, HOST_A, cert_a, key_a);
    snprintf(p, sizeof p, "%s/%s/privkey.pem", base, HOST_A);
    assert_int_equal(unlink(p), 0);
    expect_load_error(base, "privkey.pem");

    /* One good host next to a broken one still fails, naming the bad one. */
    snprintf(base, sizeof base, "%s/mixed", tmpdir);
    mkdir_p(base);
    host_write(base, HOST_A, cert_a, key_a);
    host_write(base, HOST_B, cert_b, key_a);
    expect_load_error(base, HOST_B);
}

static void test_garbage_input(void **state)
{
    struct tls_server *s = server_new(HOST_A);
    struct tls_client *c = client_new(false);
    struct tls_conn *srv, *cli;
    unsigned char junk[4096], buf[64];
    ssize_t r;

    /* A plaintext SMTP command where a ClientHello should be. */
    uint64_t failed = metric(METRICS_TLS_SERVER_FAILED);
    srv = tls_conn_new_server(s);
    assert_int_equal(tls_conn_feed(srv, "EHLO example.org\r\n", 18), 0);
    assert_int_equal(tls_conn_handshake(srv), TLS_ERR);
    assert_int_equal(metric(METRICS_TLS_SERVER_FAILED), failed + 1);
    assert_true(strlen(tls_conn_error(srv)) > 0);
    assert_string_not_equal(tls_conn_error(srv), "no error");
    r = tls_conn_read(srv, buf, sizeof buf); /* still no crash, no data */
    assert_true(r == TLS_ERR || r == TLS_AGAIN);
    tls_conn_free(srv);

    /* Random bytes. */
    srand(42);
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (unsigned char)rand();
    srv = tls_conn_new_server(s);
    assert_int_equal(tls_conn_feed(srv, junk, sizeof junk), 0);
    assert_int_equal(tls_conn_handshake(srv), TLS_ERR);
    tls_conn_free(srv);

    /* A record header promising a handshake message, then nothing: wait. */
    srv = tls_conn_new_server(s);
    assert_int_equal(tls_conn_feed(srv, "\x16\x03\x01\x00\x40", 5), 0);
    assert_int_equal(tls_conn_handshake(srv), TLS_AGAIN);
    tls_conn_free(srv);

    /* The client side meets junk instead of a ServerHello. */
    cli = tls_conn_new_client(c, HOST_A);
    assert_int_equal(tls_conn_handshake(cli), TLS_AGAIN);
    assert_true(tls_conn_pending_out(cli) > 0);
    assert_int_equal(tls_conn_feed(cli, "220 mx ESMTP\r\n", 14), 0);
    assert_int_equal(tls_conn_handshake(cli), TLS_ERR);
    tls_conn_free(cli);

    /* Junk after a good handshake: the read fails, with an alert to send. */
    srv = tls_conn_new_server(s);
    cli = tls_conn_new_client(c, HOST_A);
    assert_int_equal(pump(srv, cli), TLS_OK);
    client_drain(srv, cli);
    (void)tls_conn_take_out(srv, junk, sizeof junk);
    assert_int_equal(tls_conn_feed(srv, "\x17\x03\x03\x00\x20garbagegarbagegarbagegarbage!!!!",
                                   37),
                     0);
    assert_int_equal(tls_conn_read(srv, buf, sizeof buf), TLS_ERR);
    assert_true(tls_conn_pending_out(srv) > 0);
    tls_conn_free(srv);
    tls_conn_free(cli);

    tls_client_free(c);
    tls_server_free(s);
}

/* A connection keeps its server context alive after the owner drops it (a
 * reload while a handshake is pending): the SNI and ticket callbacks must
 * not touch freed memory (ASan checks this). */
static void test_server_outlives_owner(void **state)
{
    struct tls_server *s = server_new(HOST_A);
    struct tls_client *c = client_new(true);
    struct tls_conn *srv = tls_conn_new_server(s);
    struct tls_conn *cli = tls_conn_new_client(c, HOST_B);

    assert_non_null(srv);
    assert_non_null(cli);
    assert_ptr_equal(tls_server_ref(s), s); /* a second owner ... */
    tls_server_free(s);                     /* ... and both drop theirs */
    tls_server_free(s);
    assert_int_equal(pump(srv, cli), TLS_OK); /* SNI picks B from the freed-by-owner s */
    tls_conn_free(srv);                       /* the last reference: frees s */
    tls_conn_free(cli);
    tls_client_free(c);
}


/* ---- client side: verify modes, DANE, the session cache ---------------- */

/* The TLSA data of x for selector/mtype into out (>= 4096 bytes). */
static size_t tlsa_of(X509 *x, int selector, int mtype, unsigned char *out)
{
    unsigned char der[4096], *p = der;
    unsigned int mdlen = 0;
    int len = selector == 0 ? i2d_X509(x, &p) : i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &p);

    assert_true(len > 0 && len <= (int)sizeof der);
    if (mtype == 0) {
        memcpy(out, der, (size_t)len);
        return (size_t)len;
    }
    assert_int_equal(EVP_Digest(der, (size_t)len, out, &mdlen,
                                mtype == 1 ? EVP_sha256() : EVP_sha512(), NULL),
                     1);
    return mdlen;
}

struct outcome {
    int rc;
    bool resumed, verified;
    const char *match;
    char err[256];
};

/* The servers of the small PKI (pki_servers), one per directory, made on
 * first use and kept: their ticket keys must outlive a connection. */

static struct tls_server *server_on(const char *dir)
{
    const char *dirs[3] = {dane_dir, expired_dir, selfold_dir};

    for (int i = 0; i < 3; i++) {
        if (strcmp(dirs[i], dir) != 0)
            continue;
        if (pki_servers[i] == NULL) {
            char err[256] = "";
            pki_servers[i] = tls_server_new(dir, DANE_HOST, err, sizeof err);
            if (pki_servers[i] == NULL)
                fail_msg("tls_server_new(%s): %s", dir, err);
        }
        return pki_servers[i];
    }
    fail_msg("unknown server directory %s", dir);
    return NULL;
}

/* One connection with opts o from client c to the server on dir. */
static struct outcome client_connect(const char *dir, struct tls_client *c,
                                     const struct tls_conn_opts *o)
{
    struct tls_server *s = server_on(dir);
    struct outcome out = {0};
    struct tls_conn *srv, *cli;

    srv = tls_conn_new_server(s);
    cli = tls_conn_new_client_opts(c, o);
    assert_non_null(srv);
    assert_non_null(cli);
    out.rc = pump(srv, cli);
    if (out.rc == TLS_OK) {
        out.resumed = tls_conn_resumed(cli);
        out.verified = tls_conn_verified(cli);
        out.match = tls_conn_dane_match(cli);
        client_drain(srv, cli); /* takes the TLS 1.3 ticket */
    } else {
        snprintf(out.err, sizeof out.err, "%s", tls_conn_error(cli));
        assert_false(tls_conn_verified(cli));
    }
    tls_conn_free(srv);
    tls_conn_free(cli);
    return out;
}

static struct tls_client *client_opts_new(const char *ca, size_t max, unsigned ttl)
{
    struct tls_client_opts o = {.ca_file = ca, .cache_max = max, .cache_ttl = ttl};
    char err[256] = "";
    struct tls_client *c = tls_client_new_opts(&o, err, sizeof err);

    if (c == NULL)
        fail_msg("tls_client_new_opts: %s", err);
    return c;
}

static void test_tlsa_usable(void **state)
{
    unsigned char d[64] = {0};
    struct tls_tlsa r = {.usage = 3, .selector = 1, .mtype = 1, .data = d, .len = 32};

    assert_true(tls_tlsa_usable(&r));
    r.usage = 2;
    assert_true(tls_tlsa_usable(&r));
    r.usage = 0; /* PKIX-TA, PKIX-EE: unusable for SMTP (RFC 7672 3.1.3) */
    assert_false(tls_tlsa_usable(&r));
    r.usage = 1;
    assert_false(tls_tlsa_usable(&r));
    r.usage = 4;
    assert_false(tls_tlsa_usable(&r));
    r.usage = 3;
    r.selector = 2;
    assert_false(tls_tlsa_usable(&r));
    r.selector = 0;
    r.mtype = 3;
    assert_false(tls_tlsa_usable(&r));
    r.mtype = 1;
    r.len = 31; /* a SHA-256 digest must be 32 bytes */
    assert_false(tls_tlsa_usable(&r));
    r.mtype = 2;
    r.len = 64;
    assert_true(tls_tlsa_usable(&r));
    r.len = 32;
    assert_false(tls_tlsa_usable(&r));
    r.mtype = 0;
    r.len = 0;
    assert_false(tls_tlsa_usable(&r));
    r.len = 5;
    assert_true(tls_tlsa_usable(&r));
}

/* DANE-EE(3): every selector and matching type; names do not matter. */
static void test_dane_ee(void **state)
{
    struct tls_client *c = client_opts_new(NULL, 0, 0);
    static unsigned char d[4096];
    struct tls_tlsa r = {.usage = 3, .data = d};
    const char *wrong_names[] = {"not.the.mx.test"};
    struct tls_conn_opts o = {.sni = DANE_HOST, .verify = TLS_VERIFY_DANE, .tlsa = &r, .ntlsa = 1};
    struct outcome out;

    for (int sel = 0; sel < 2; sel++) {
        for (int mt = 0; mt < 3; mt++) {
            r.selector = (unsigned char)sel;
            r.mtype = (unsigned char)mt;
            r.len = tlsa_of(leaf_cert, sel, mt, d);
            out = client_connect(dane_dir, c, &o);
            if (out.rc != TLS_OK)
                fail_msg("3 %d %d: %s", sel, mt, out.err);
            assert_true(out.verified);
            assert_string_equal(out.match, "DANE-EE");
        }
    }
    /* No name check for DANE-EE (RFC 7672 3.2.1). */
    r.selector = 1;
    r.mtype = 1;
    r.len = tlsa_of(leaf_cert, 1, 1, d);
    o.names = wrong_names;
    o.nnames = 1;
    out = client_connect(dane_dir, c, &o);
    assert_int_equal(out.rc, TLS_OK);
    assert_true(out.verified);

    /* A record for another key: no match, the handshake fails. */
    r.len = tlsa_of(ca_cert, 1, 1, d);
    out = client_connect(dane_dir, c, &o);
    assert_int_equal(out.rc, TLS_ERR);
    assert_non_null(strstr(out.err, "DANE"));
    /* The CA's key as DANE-EE does not match the leaf either. */
    d[0] ^= 1;
    out = client_connect(dane_dir, c, &o);
    assert_int_equal(out.rc, TLS_ERR);
    /* A PKIX-EE(1) record is unusable even when it matches. */
    r.usage = 1;
    r.len = tlsa_of(leaf_cert, 1, 1, d);
    out = client_connect(dane_dir, c, &o);
    assert_int_equal(out.rc, TLS_ERR);
    /* Nothing was cached from the failures. */
    tls_client_free(c);
}

/* DANE-EE ignores validity dates (RFC 7672 3.1.1); PKIX does not. */
static void test_dane_ee_expired(void **state)
{
    struct tls_client *c = client_opts_new(NULL, 0, 0);
    static unsigned char d[4096];
    struct tls_tlsa r = {.usage = 3, .selector = 1, .mtype = 1, .data = d};
    struct tls_conn_opts o = {.sni = DANE_HOST, .verify = TLS_VERIFY_DANE, .tlsa = &r, .ntlsa = 1};
    struct outcome out;

    r.len = tlsa_of(old_self, 1, 1, d);
    out = client_connect(selfold_dir, c, &o);
    assert_int_equal(out.rc, TLS_OK);
    assert_true(out.verified);
    tls_client_free(c);

    /* The same expired certificate as a PKIX trust anchor fails. */
    {
        char p[1024];
        snprintf(p, sizeof p, "%s/selfold/%s/fullchain.pem", tmpdir, DANE_HOST);
        c = client_opts_new(p, 0, 0);
        o.verify = TLS_VERIFY_PKIX;
        out = client_connect(selfold_dir, c, &o);
        assert_int_equal(out.rc, TLS_ERR);
        assert_non_null(strstr(out.err, "expired"));
        tls_client_free(c);
    }
}

/* DANE-TA(2): a certificate of the chain matches, the leaf chains to it and
 * carries a reference name (RFC 7672 3.1.2, 3.2.2); dates are checked. */
static void test_dane_ta(void **state)
{
    struct tls_client *c = client_opts_new(NULL, 0, 0);
    static unsigned char d[4096];
    struct tls_tlsa r = {.usage = 2, .selector = 0, .mtype = 1, .data = d};
    const char *good[] = {"tlsa-base.example", DANE_HOST};
    const char *bad[] = {"other.dane.test"};
    struct tls_conn_opts o = {.sni = DANE_HOST, .verify = TLS_VERIFY_DANE, .tlsa = &r, .ntlsa = 1};
    struct outcome out;

    r.len = tlsa_of(ca_cert, 0, 1, d);
    out = client_connect(dane_dir, c, &o); /* names default to the SNI name */
    if (out.rc != TLS_OK)
        fail_msg("2 0 1: %s", out.err);
    assert_true(out.verified);
    assert_string_equal(out.match, "DANE-TA");
    o.names = good;
    o.nnames = 2;
    out = client_connect(dane_dir, c, &o);
    assert_int_equal(out.rc, TLS_OK);
    r.selector = 1;
    r.mtype = 2;
    r.len = tlsa_of(ca_cert, 1, 2, d);
    out = client_connect(dane_dir, c, &o);
    assert_int_equal(out.rc, TLS_OK);
    assert_string_equal(out.match, "DANE-TA");

    /* The name check. */
    o.names = bad;
    o.nnames = 1;
    out = client_connect(dane_dir, c, &o);
    assert_int_equal(out.rc, TLS_ERR);
    assert_non_null(strstr(out.err, "DANE-TA"));
    /* The leaf as its own trust anchor (2 x x matching the leaf): still a
     * name check. */
    r.len = tlsa_of(leaf_cert, 1, 2, d);
    out = client_connect(dane_dir, c, &o);
    assert_int_equal(out.rc, TLS_ERR);
    o.names = good;
    o.nnames = 2;
    out = client_connect(dane_dir, c, &o);
    assert_int_equal(out.rc, TLS_OK);

    /* An expired leaf under the trust anchor fails. */
    r.len = tlsa_of(ca_cert, 1, 2, d);
    out = client_connect(expired_dir, c, &o);
    assert_int_equal(out.rc, TLS_ERR);
    assert_non_null(strstr(out.err, "expired"));
    /* A trust anchor that is not in the chain: no match. */
    r.len = tlsa_of(cert_a, 1, 2, d);
    out = client_connect(dane_dir, c, &o);
    assert_int_equal(out.rc, TLS_ERR);
    assert_non_null(strstr(out.err, "no TLSA record"));

    /* With several records, one usable match is enough. */
    {
        static unsigned char d2[4096];
        struct tls_tlsa rr[3] = {
            {.usage = 3, .selector = 1, .mtype = 1, .data = d2, .len = 0},
            {.usage = 0, .selector = 0, .mtype = 1, .data = d2, .len = 32}, /* unusable */
            {.usage = 2, .selector = 1, .mtype = 2, .data = d, .len = 0},
        };
        rr[0].len = tlsa_of(cert_b, 1, 1, d2); /* another key */
        rr[2].len = tlsa_of(ca_cert, 1, 2, d);
        o.tlsa = rr;
        o.ntlsa = 3;
        out = client_connect(dane_dir, c, &o);
        assert_int_equal(out.rc, TLS_OK);
        assert_string_equal(out.match, "DANE-TA");
    }
    tls_client_free(c);
}

/* PKIX against a given CA file (smarthosts), with the name check. */
static void test_pkix_ca_file(void **state)
{
    struct tls_client *c = client_opts_new(ca_file, 0, 0);
    const char *bad[] = {"smarthost.other.test"};
    struct tls_conn_opts o = {.sni = DANE_HOST, .verify = TLS_VERIFY_PKIX};
    struct outcome out;

    out = client_connect(dane_dir, c, &o);
    if (out.rc != TLS_OK)
        fail_msg("pkix: %s", out.err);
    assert_true(out.verified);
    assert_null(out.match);
    o.names = bad;
    o.nnames = 1;
    out = client_connect(dane_dir, c, &o);
    assert_int_equal(out.rc, TLS_ERR);
    assert_non_null(strstr(out.err, "certificate verify failed"));
    tls_client_free(c);

    /* Another trust store (the bundle of A and B) does not know the CA. */
    c = client_opts_new(NULL, 0, 0);
    o.names = NULL;
    o.nnames = 0;
    out = client_connect(dane_dir, c, &o);
    assert_int_equal(out.rc, TLS_ERR);
    /* Encrypt-only accepts anything and says it verified nothing. */
    o.verify = TLS_VERIFY_NONE;
    out = client_connect(dane_dir, c, &o);
    assert_int_equal(out.rc, TLS_OK);
    assert_false(out.verified);
    tls_client_free(c);
}

/* The cache key carries the mode and the references: a session made under
 * weaker checks never resumes a stronger connection. */
static void test_resume_by_mode(void **state)
{
    struct tls_client *c = client_opts_new(ca_file, 0, 0);
    static unsigned char d[4096], d2[4096];
    struct tls_tlsa r = {.usage = 3, .selector = 1, .mtype = 1, .data = d};
    struct tls_tlsa r2 = {.usage = 2, .selector = 1, .mtype = 1, .data = d2};
    struct tls_conn_opts o = {.sni = DANE_HOST, .session_key = DANE_HOST};
    struct outcome out;

    r.len = tlsa_of(leaf_cert, 1, 1, d);
    r2.len = tlsa_of(ca_cert, 1, 1, d2);
    out = client_connect(dane_dir, c, &o);
    assert_true(out.rc == TLS_OK && !out.resumed);
    out = client_connect(dane_dir, c, &o);
    assert_true(out.rc == TLS_OK && out.resumed && !out.verified);
    assert_int_equal(tls_client_cached(c), 1);

    o.verify = TLS_VERIFY_DANE;
    o.tlsa = &r;
    o.ntlsa = 1;
    out = client_connect(dane_dir, c, &o);
    assert_true(out.rc == TLS_OK && !out.resumed && out.verified);
    out = client_connect(dane_dir, c, &o);
    assert_true(out.rc == TLS_OK && out.resumed && out.verified);
    assert_string_equal(out.match, "resumed");
    /* Other TLSA records: another key, a full handshake. */
    o.tlsa = &r2;
    out = client_connect(dane_dir, c, &o);
    assert_true(out.rc == TLS_OK && !out.resumed && out.verified);
    assert_string_equal(out.match, "DANE-TA");
    o.verify = TLS_VERIFY_PKIX;
    out = client_connect(dane_dir, c, &o);
    assert_true(out.rc == TLS_OK && !out.resumed && out.verified);
    out = client_connect(dane_dir, c, &o);
    assert_true(out.rc == TLS_OK && out.resumed && out.verified);
    assert_int_equal(tls_client_cached(c), 4);

    /* No key: no resumption, nothing stored. */
    o.session_key = NULL;
    out = client_connect(dane_dir, c, &o);
    assert_true(out.rc == TLS_OK && !out.resumed);
    out = client_connect(dane_dir, c, &o);
    assert_true(out.rc == TLS_OK && !out.resumed);
    assert_int_equal(tls_client_cached(c), 4);
    tls_client_free(c);
}

/* The cache holds at most cache_max sessions (least recently used out
 * first) and each for at most cache_ttl seconds. */
extern time_t (*tls_cache_clock)(time_t *);
static time_t fake_now;
static time_t fake_clock(time_t *t)
{
    if (t != NULL)
        *t = fake_now;
    return fake_now;
}

static void test_cache_bound_and_expiry(void **state)
{
    fake_now = time(NULL);
    tls_cache_clock = fake_clock; /* a loaded machine must not expire sessions early */
    struct tls_client *c = client_opts_new(NULL, 2, 1);
    struct tls_conn_opts o = {.sni = DANE_HOST};
    struct outcome out;

    o.session_key = "a";
    out = client_connect(dane_dir, c, &o);
    o.session_key = "b";
    out = client_connect(dane_dir, c, &o);
    o.session_key = "a"; /* a is now the most recently used */
    out = client_connect(dane_dir, c, &o);
    assert_true(out.resumed);
    o.session_key = "c"; /* evicts b */
    out = client_connect(dane_dir, c, &o);
    assert_int_equal(tls_client_cached(c), 2);
    o.session_key = "b";
    out = client_connect(dane_dir, c, &o);
    assert_false(out.resumed);
    o.session_key = "c";
    out = client_connect(dane_dir, c, &o);
    assert_true(out.resumed);

    fake_now += 2; /* past the 1 s lifetime */
    out = client_connect(dane_dir, c, &o);
    assert_int_equal(out.rc, TLS_OK);
    assert_false(out.resumed);
    tls_cache_clock = time;
    tls_client_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handshake_and_data),
        cmocka_unit_test(test_no_sni_gets_default),
        cmocka_unit_test(test_sni_selects_certificate),
        cmocka_unit_test(test_resumption_tls13),
        cmocka_unit_test(test_ticket_count),
        cmocka_unit_test(test_rotation_once_resumes),
        cmocka_unit_test(test_rotation_twice_full_handshake),
        cmocka_unit_test(test_resumption_tls12),
        cmocka_unit_test(test_rotation_concurrent),
        cmocka_unit_test(test_broken_cert_dirs),
        cmocka_unit_test(test_garbage_input),
        cmocka_unit_test(test_server_outlives_owner),
        cmocka_unit_test(test_tlsa_usable),
        cmocka_unit_test(test_dane_ee),
        cmocka_unit_test(test_dane_ee_expired),
        cmocka_unit_test(test_dane_ta),
        cmocka_unit_test(test_pkix_ca_file),
        cmocka_unit_test(test_resume_by_mode),
        cmocka_unit_test(test_cache_bound_and_expiry),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
