/* SPDX-License-Identifier: MIT */
/*
 * test_sign.c - dkim/sign.c and dkim/keys.c: every signature made here is
 * verified by libopendkim in process (its file query method hands it the
 * public keys, no DNS), for RSA-2048, Ed25519 and both; chunking (1-byte
 * chunks, every split of the stored form) gives the same signature as one
 * chunk; a changed message fails verification; Date / Message-ID are added
 * and signed; messages that must not be signed are not.
 *
 * Keys are made once for the whole program in a temporary config directory:
 * domains/rsa.test (RSA), domains/ed.test (Ed25519), domains/both.test
 * (both), plus the libopendkim key file with their records.
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

#include <opendkim/dkim.h>

#include "dkim/canon.h"
#include "dkim/keys.h"
#include "dkim/sign.h"

#define NOW 1700000000

static char tmpdir[] = "/tmp/ortoo-test-dkim-XXXXXX";
static char queryfile[256];
static struct dkim_keys *keys;
static DKIM_LIB *vlib;

static void write_file(const char *path, const char *data, mode_t mode)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(data, f);
    fclose(f);
    chmod(path, mode);
}

/* Make domains/<domain>/dkim/<sel>.key and append its record to the query file. */
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
    write_file(path, pem, 0600);
    FILE *q = fopen(queryfile, "a");
    assert_non_null(q);
    fprintf(q, "%s._domainkey.%s %s\n", sel, domain, rec);
    fclose(q);
    free(pem);
    free(rec);
}

static int setup(void **state)
{
    char path[512], err[256];

    if (mkdtemp(tmpdir) == NULL)
        return -1;
    snprintf(path, sizeof(path), "%s/domains", tmpdir);
    mkdir(path, 0750);
    snprintf(queryfile, sizeof(queryfile), "%s/keys.txt", tmpdir);
    make_key("rsa.test", "r1", DKIM_ALGO_RSA);
    make_key("ed.test", "e1", DKIM_ALGO_ED25519);
    make_key("both.test", "r1", DKIM_ALGO_RSA);
    make_key("both.test", "e1", DKIM_ALGO_ED25519);
    if (dkim_keys_load(tmpdir, NULL, &keys, err, sizeof(err)) < 0) {
        fprintf(stderr, "load: %s\n", err);
        return -1;
    }
    vlib = dkim_init(NULL, NULL);
    dkim_query_t qtype = DKIM_QUERY_FILE;
    dkim_options(vlib, DKIM_OP_SETOPT, DKIM_OPTS_QUERYMETHOD, &qtype, sizeof(qtype));
    dkim_options(vlib, DKIM_OP_SETOPT, DKIM_OPTS_QUERYINFO, queryfile, strlen(queryfile));
    return 0;
}

static int teardown(void **state)
{
    char cmd[600];
    dkim_keys_free(keys);
    dkim_close(vlib);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- helpers ---- */

/* The stored wire form of msg: dot-stuffed (RFC 5321 4.5.2).  Owned. */
static char *stuff(const char *msg, size_t *out_len)
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
    *out_len = o;
    return out;
}

/* A signed message: the prefix fields and the stored form fed in chunks
 * ending at cuts[].  Returns res (caller frees its strings). */
static void sign_chunks(const char *stored, size_t len, const size_t *cuts, size_t ncuts,
                        bool add_missing, struct dkim_sign_result *res)
{
    struct dkim_sign_params p = {.now = NOW, .add_missing = add_missing,
                                 .hostname = "mx.example.test"};
    struct dkim_signer *sg = dkim_sign_open(keys, &p);
    size_t prev = 0;
    assert_non_null(sg);
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        char *chunk = malloc(end - prev + 1);
        memcpy(chunk, stored + prev, end - prev);
        dkim_sign_feed(sg, chunk, end - prev);
        free(chunk);
        prev = end;
    }
    assert_int_equal(dkim_sign_finish(sg, res), 0);
    dkim_sign_free(sg);
}

/* What a recipient gets: signatures, added fields, the unstuffed message. */
static char *delivered(const struct dkim_sign_result *res, const char *msg)
{
    char *out = NULL;
    assert_true(asprintf(&out, "%s%s%s", res->signatures ? res->signatures : "",
                         res->added ? res->added : "", msg) >= 0);
    return out;
}

static void result_free(struct dkim_sign_result *res)
{
    free(res->signatures);
    free(res->added);
}

/* libopendkim's verdict: the number of signatures that passed (body hash
 * and signature), and *nsigs the number it found. */
static int opendkim_passes(const char *msg, int *nsigs)
{
    DKIM_STAT st;
    DKIM *d = dkim_verify(vlib, (const unsigned char *)"test", NULL, &st);
    assert_non_null(d);
    size_t len = strlen(msg);
    unsigned char *copy = malloc(len + 1);
    memcpy(copy, msg, len + 1);
    st = dkim_chunk(d, copy, len);
    assert_int_equal(st, DKIM_STAT_OK);
    st = dkim_chunk(d, NULL, 0);
    (void)dkim_eom(d, NULL);
    DKIM_SIGINFO **sigs = NULL;
    int n = 0, passed = 0;
    if (dkim_getsiglist(d, &sigs, &n) == DKIM_STAT_OK) {
        for (int i = 0; i < n; i++) {
            if (DKIM_SIG_CHECK(sigs[i]))
                passed++;
            else
                fprintf(stderr, "# opendkim: signature %d (d=%s s=%s) failed: %s\n", i,
                        dkim_sig_getdomain(sigs[i]), dkim_sig_getselector(sigs[i]),
                        dkim_sig_geterrorstr(dkim_sig_geterror(sigs[i])));
        }
    }
    *nsigs = n;
    dkim_free(d);
    free(copy);
    return passed;
}

/* Sign msg (one chunk), check the signature count, and that libopendkim
 * passes every signature.  Returns the delivered message (owned). */
static char *sign_and_verify(const char *msg, bool add_missing, unsigned want_sigs)
{
    size_t slen;
    char *stored = stuff(msg, &slen);
    struct dkim_sign_result res;
    sign_chunks(stored, slen, NULL, 0, add_missing, &res);
    assert_int_equal(res.nsigs, want_sigs);
    char *full = delivered(&res, msg);
    if (want_sigs > 0) {
        int n = 0;
        int passed = opendkim_passes(full, &n);
        if (passed != (int)want_sigs)
            fprintf(stderr, "# message:\n%s\n", full);
        assert_int_equal(n, (int)want_sigs);
        assert_int_equal(passed, (int)want_sigs);
    } else {
        assert_null(res.signatures);
    }
    free(stored);
    result_free(&res);
    return full;
}

#define HDRS(from)                                                                            \
    "From: Alice <alice@" from ">\r\n"                                                        \
    "To: bob@example.org\r\n"                                                                 \
    "Subject: hello\r\n"                                                                      \
    "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"                                               \
    "Message-ID: <1@" from ">\r\n"

/* ---- tests ---- */

static void test_rsa_ed_both(void **state)
{
    const char *body = "\r\nHello.\r\n";
    const char *domains[] = {"rsa.test", "ed.test", "both.test"};
    unsigned want[] = {1, 1, 2};
    for (int i = 0; i < 3; i++) {
        char *msg = NULL;
        assert_true(asprintf(&msg, "From: Alice <alice@%s>\r\nTo: bob@example.org\r\n"
                             "Subject: hello\r\nDate: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
                             "Message-ID: <1@x>\r\n%s", domains[i], body) > 0);
        char *full = sign_and_verify(msg, false, want[i]);
        /* The signature names the domain, both algorithms when both keys. */
        assert_non_null(strstr(full, domains[i]));
        if (i != 1)
            assert_non_null(strstr(full, "a=rsa-sha256"));
        if (i != 0)
            assert_non_null(strstr(full, "a=ed25519-sha256"));
        assert_non_null(strstr(full, "h=from:from:to:subject:date:message-id;"));
        assert_non_null(strstr(full, "t=1700000000;"));
        assert_null(strstr(full, " l="));
        free(full);
        free(msg);
    }
}

/* The same message through each chunking gives the same signatures. */
static void check_chunkings(const char *msg)
{
    size_t slen;
    char *stored = stuff(msg, &slen);
    struct dkim_sign_result whole, res;
    sign_chunks(stored, slen, NULL, 0, true, &whole);
    assert_int_equal(whole.nsigs, 2);
    /* 1-byte chunks. */
    size_t *ones = malloc(slen * sizeof(*ones));
    for (size_t i = 0; i < slen; i++)
        ones[i] = i;
    sign_chunks(stored, slen, ones, slen, true, &res);
    assert_string_equal(res.signatures, whole.signatures);
    result_free(&res);
    /* Every 2-chunk split. */
    for (size_t a = 0; a <= slen; a++) {
        size_t cut[1] = {a};
        sign_chunks(stored, slen, cut, 1, true, &res);
        assert_string_equal(res.signatures, whole.signatures);
        result_free(&res);
    }
    free(ones);
    /* And it verifies (the added fields differ per run: Message-ID is random,
     * so verify the whole-chunk run's own output). */
    char *full = delivered(&whole, msg);
    int n = 0;
    assert_int_equal(opendkim_passes(full, &n), 2);
    free(full);
    result_free(&whole);
    free(stored);
}

static void test_chunking(void **state)
{
    check_chunkings(HDRS("both.test") "\r\n.line starting with a dot\r\n..\r\n.\r\nx\r\n");
    check_chunkings(HDRS("both.test") "Cc: c@d\r\n\r\n  spaces \t and\ttabs  \r\n\r\n\r\n");
    check_chunkings(HDRS("both.test") "\r\n");
    check_chunkings(HDRS("both.test"));
}

static void test_body_shapes(void **state)
{
    const char *bodies[] = {
        "\r\n",                                  /* empty body */
        "\r\n\r\n\r\n\r\n",                      /* only empty lines */
        "\r\n.\r\n..\r\n...\r\n",                /* only dots */
        "\r\n \t \r\n  x  \r\n\t\r\n",           /* whitespace */
        "\r\nno final line end, but CRLF added by the session\r\n",
        "",                                      /* no empty line: headers only */
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        char *msg = NULL;
        assert_true(asprintf(&msg, HDRS("both.test") "%s", bodies[i]) > 0);
        free(sign_and_verify(msg, false, 2));
        free(msg);
    }
    /* Long lines (998 octets), 8-bit bytes and a large body. */
    size_t big = 300000;
    char *msg = malloc(big + 1000);
    size_t o = (size_t)sprintf(msg, HDRS("both.test") "Content-Type: text/plain; charset=utf-8\r\n"
                               "Content-Transfer-Encoding: 8bit\r\n\r\n");
    while (o < big) {
        for (int k = 0; k < 998; k++)
            msg[o++] = (char)(k % 97 == 0 ? 0xc3 : k % 97 == 1 ? 0xa9 : 'a' + k % 26);
        msg[o++] = '\r';
        msg[o++] = '\n';
    }
    msg[o] = '\0';
    free(sign_and_verify(msg, false, 2));
    free(msg);
}

static void test_header_shapes(void **state)
{
    /* Folded fields, repeated To, odd spacing, mixed case names. */
    free(sign_and_verify("FROM:   \"Alice @ Home\" <alice@Both.Test>  (comment)\r\n"
                         "to: a@b,\r\n\tc@d\r\n"
                         "To:   second@x\r\n"
                         "Subject:  spaced   out \t \r\n"
                         "X-Other: not signed\r\n"
                         "MIME-Version: 1.0\r\n"
                         "Content-Type: multipart/mixed;\r\n boundary=\"b1\"\r\n"
                         "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
                         "Message-ID: <2@x>\r\n"
                         "\r\n--b1\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b1--\r\n",
                         false, 2));
    /* Bare address, with a comment holding an '@'. */
    free(sign_and_verify("From: alice@rsa.test (not@other.test)\r\nSubject: x\r\n\r\nbody\r\n",
                         false, 1));
    /* A quoted local part holding '@' and '<'. */
    free(sign_and_verify("From: \"a@b <x>\"@ed.test\r\nSubject: x\r\n\r\nbody\r\n", false, 1));
}

static void test_added_fields(void **state)
{
    size_t slen;
    const char *msg = "From: alice@rsa.test\r\nTo: b@c\r\nSubject: s\r\n\r\nbody\r\n";
    char *stored = stuff(msg, &slen);
    struct dkim_sign_result res;
    sign_chunks(stored, slen, NULL, 0, true, &res);
    assert_non_null(res.added);
    assert_true(strncmp(res.added, "Date: ", 6) == 0);
    assert_non_null(strstr(res.added, "\r\nMessage-ID: <"));
    assert_non_null(strstr(res.added, "@mx.example.test>\r\n"));
    assert_non_null(strstr(res.signatures, "h=from:from:to:subject:date:message-id;"));
    char *full = delivered(&res, msg);
    int n = 0;
    assert_int_equal(opendkim_passes(full, &n), 1);
    free(full);
    result_free(&res);
    /* Present fields are not added again; nothing added without add_missing. */
    sign_chunks(stored, slen, NULL, 0, false, &res);
    assert_null(res.added);
    result_free(&res);
    free(stored);
    const char *msg2 = HDRS("rsa.test") "\r\nbody\r\n";
    stored = stuff(msg2, &slen);
    sign_chunks(stored, slen, NULL, 0, true, &res);
    assert_null(res.added);
    assert_int_equal(res.nsigs, 1);
    result_free(&res);
    free(stored);
    /* Added even when not signed (no key for the domain). */
    const char *msg3 = "From: a@nokey.test\r\n\r\nbody\r\n";
    stored = stuff(msg3, &slen);
    sign_chunks(stored, slen, NULL, 0, true, &res);
    assert_non_null(res.added);
    assert_null(res.signatures);
    assert_string_equal(res.why_unsigned, "no key for the From domain");
    result_free(&res);
    free(stored);
}

static void check_unsigned(const char *msg, const char *why)
{
    size_t slen;
    char *stored = stuff(msg, &slen);
    struct dkim_sign_result res;
    sign_chunks(stored, slen, NULL, 0, false, &res);
    assert_null(res.signatures);
    assert_int_equal(res.nsigs, 0);
    assert_non_null(res.why_unsigned);
    assert_string_equal(res.why_unsigned, why);
    result_free(&res);
    free(stored);
}

static void test_not_signed(void **state)
{
    check_unsigned("From: a@nokey.test\r\n\r\nx\r\n", "no key for the From domain");
    check_unsigned("Subject: no from\r\n\r\nx\r\n", "no From field");
    check_unsigned("From: a@rsa.test\r\nFrom: b@rsa.test\r\n\r\nx\r\n", "several From fields");
    check_unsigned("From: a@rsa.test, b@rsa.test\r\n\r\nx\r\n",
                   "no single domain in the From field");
    check_unsigned("From: nobody\r\n\r\nx\r\n", "no single domain in the From field");
    check_unsigned("From: a@[192.0.2.1]\r\n\r\nx\r\n", "no single domain in the From field");
    check_unsigned("Hello there\r\nFrom: a@rsa.test\r\n\r\nx\r\n", "malformed header block");
    check_unsigned(" From: a@rsa.test\r\n\r\nx\r\n", "malformed header block");
    check_unsigned("From : a@rsa.test\r\n\r\nx\r\n", "malformed header block");
    check_unsigned("\r\nFrom: a@rsa.test\r\n", "no From field");
    check_unsigned("", "no From field");
    /* A header block over the limit. */
    size_t n = DKIM_HEADER_MAX + 100;
    char *big = malloc(n + 2000);
    size_t o = (size_t)sprintf(big, "From: a@rsa.test\r\n");
    while (o < n) {
        o += (size_t)sprintf(big + o, "X-Pad: ");
        for (int k = 0; k < 900; k++)
            big[o++] = 'p';
        big[o++] = '\r';
        big[o++] = '\n';
    }
    strcpy(big + o, "\r\nbody\r\n");
    check_unsigned(big, "header block too large");
    free(big);
    /* No key set at all. */
    struct dkim_sign_params p = {.now = NOW};
    struct dkim_signer *sg = dkim_sign_open(NULL, &p);
    struct dkim_sign_result res;
    dkim_sign_feed(sg, "From: a@rsa.test\r\n\r\nx\r\n", 24);
    assert_int_equal(dkim_sign_finish(sg, &res), 0);
    assert_null(res.signatures);
    dkim_sign_free(sg);
}

/* The cross-check can fail: a changed body or signed field breaks it. */
static void test_tampered(void **state)
{
    const char *msg = HDRS("both.test") "\r\nThe amount is 100.\r\n";
    char *full = sign_and_verify(msg, false, 2);
    int n = 0;
    char *p = strstr(full, "100.");
    p[0] = '9';
    assert_int_equal(opendkim_passes(full, &n), 0);
    assert_int_equal(n, 2);
    p[0] = '1';
    assert_int_equal(opendkim_passes(full, &n), 2);
    p = strstr(full, "Subject: hello");
    p[9] = 'j';
    assert_int_equal(opendkim_passes(full, &n), 0);
    free(full);
    /* A second From added on top breaks the over-signed From. */
    full = sign_and_verify(msg, false, 2);
    char *two = NULL;
    assert_true(asprintf(&two, "From: evil@both.test\r\n%s", full) > 0);
    /* libopendkim refuses a message with two From fields outright or fails
     * the signatures: either way none passes. */
    DKIM_STAT st;
    DKIM *d = dkim_verify(vlib, (const unsigned char *)"t", NULL, &st);
    dkim_chunk(d, (unsigned char *)two, strlen(two));
    dkim_chunk(d, NULL, 0);
    st = dkim_eom(d, NULL);
    assert_int_not_equal(st, DKIM_STAT_OK);
    dkim_free(d);
    free(two);
    free(full);
}

static void test_keys_api(void **state)
{
    char err[256];
    assert_int_equal(dkim_keys_count(keys), 4);
    assert_int_equal(dkim_keys_domain_count(keys), 3);
    const struct dkim_key *k = dkim_keys_get(keys, "BOTH.test", 9, 0);
    assert_non_null(k);
    assert_int_equal(dkim_key_algo(k), DKIM_ALGO_RSA); /* RSA first */
    k = dkim_keys_get(keys, "both.test", 9, 1);
    assert_int_equal(dkim_key_algo(k), DKIM_ALGO_ED25519);
    assert_string_equal(dkim_key_selector(k), "e1");
    assert_null(dkim_keys_get(keys, "both.test", 9, 2));
    assert_null(dkim_keys_get(keys, "none.test", 9, 0));
    char *rec = dkim_key_record(k);
    assert_true(strncmp(rec, "v=DKIM1; k=ed25519; p=", 22) == 0);
    assert_int_equal(strlen(rec), 22 + 44); /* 32 bytes in base64 */
    free(rec);
    /* One domain only. */
    struct dkim_keys *one;
    assert_int_equal(dkim_keys_load(tmpdir, "ed.test", &one, err, sizeof(err)), 0);
    assert_int_equal(dkim_keys_count(one), 1);
    dkim_keys_free(one);
    assert_int_equal(dkim_keys_load(tmpdir, "nokey.test", &one, err, sizeof(err)), 0);
    assert_int_equal(dkim_keys_count(one), 0);
    dkim_keys_free(one);
    /* Quoting: 255-byte strings. */
    char value[600];
    memset(value, 'x', 520);
    value[520] = '\0';
    char *q = dkim_txt_quote(value);
    assert_int_equal(strlen(q), 520 + 3 * 2 + 2 * 1);
    assert_int_equal(q[256], '"');
    assert_int_equal(q[257], ' ');
    free(q);
    q = dkim_txt_quote("a\"b");
    assert_string_equal(q, "\"a\\\"b\"");
    free(q);
    assert_true(dkim_selector_valid("s1.rsa-2024", 11));
    assert_false(dkim_selector_valid("-a", 2));
    assert_false(dkim_selector_valid("a_b", 3));
    assert_false(dkim_selector_valid("a..b", 4));
}

static void test_bad_keys(void **state)
{
    char path[512], err[256];
    struct dkim_keys *ks = NULL;
    snprintf(path, sizeof(path), "%s/bad", tmpdir);
    mkdir(path, 0700);
    snprintf(path, sizeof(path), "%s/bad/domains", tmpdir);
    mkdir(path, 0700);
    snprintf(path, sizeof(path), "%s/bad/domains/x.test", tmpdir);
    mkdir(path, 0700);
    snprintf(path, sizeof(path), "%s/bad/domains/x.test/dkim", tmpdir);
    mkdir(path, 0700);
    snprintf(path, sizeof(path), "%s/bad/domains/x.test/dkim/s.key", tmpdir);
    write_file(path, "not a key\n", 0600);
    snprintf(path, sizeof(path), "%s/bad", tmpdir);
    assert_int_equal(dkim_keys_load(path, NULL, &ks, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "s.key"));
    assert_null(ks);
    /* A bad selector name. */
    snprintf(path, sizeof(path), "%s/bad/domains/x.test/dkim/s.key", tmpdir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/bad/domains/x.test/dkim/a_b.key", tmpdir);
    write_file(path, "x\n", 0600);
    snprintf(path, sizeof(path), "%s/bad", tmpdir);
    assert_int_equal(dkim_keys_load(path, NULL, &ks, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "a_b.key"));
    /* An EC key is not a DKIM key. */
    snprintf(path, sizeof(path), "%s/bad/domains/x.test/dkim/a_b.key", tmpdir);
    unlink(path);
    snprintf(path, sizeof(path),
             "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 "
             "-out %s/bad/domains/x.test/dkim/ec.key 2>/dev/null", tmpdir);
    assert_int_equal(system(path), 0);
    snprintf(path, sizeof(path), "%s/bad", tmpdir);
    assert_int_equal(dkim_keys_load(path, NULL, &ks, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "not an RSA or Ed25519 key"));
    /* An encrypted key is refused, never prompted for. */
    snprintf(path, sizeof(path), "%s/bad/domains/x.test/dkim/ec.key", tmpdir);
    unlink(path);
    snprintf(path, sizeof(path),
             "openssl genpkey -algorithm ED25519 -aes256 -pass pass:secret "
             "-out %s/bad/domains/x.test/dkim/enc.key 2>/dev/null", tmpdir);
    assert_int_equal(system(path), 0);
    snprintf(path, sizeof(path), "%s/bad", tmpdir);
    assert_int_equal(dkim_keys_load(path, NULL, &ks, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "not an unencrypted PEM private key"));
    /* No domains directory at all: an empty set. */
    snprintf(path, sizeof(path), "%s/bad/domains/x.test/dkim", tmpdir);
    assert_int_equal(dkim_keys_load("/nonexistent-ortoo-dir", NULL, &ks, err, sizeof(err)), 0);
    assert_int_equal(dkim_keys_count(ks), 0);
    dkim_keys_free(ks);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rsa_ed_both),
        cmocka_unit_test(test_chunking),
        cmocka_unit_test(test_body_shapes),
        cmocka_unit_test(test_header_shapes),
        cmocka_unit_test(test_added_fields),
        cmocka_unit_test(test_not_signed),
        cmocka_unit_test(test_tampered),
        cmocka_unit_test(test_keys_api),
        cmocka_unit_test(test_bad_keys),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
