/* SPDX-License-Identifier: MIT */
/*
 * fuzz_dkim_verify.c - libFuzzer target for dkim/tags.c (the
 * DKIM-Signature and key record parsers, base64), dkim/pubkey.c (key
 * decoding) and dkim/verify.c.  The first byte picks what the rest is:
 *   0: a DKIM-Signature value (invariants of a successful parse checked);
 *   1: a key record, parsed and decoded into a key;
 *   2: base64;
 *   3+: a stored message, verified once in one chunk and once in chunks of
 *       (first byte % 64 + 1) bytes, every key answered with one of two
 *       fixed records (RSA-2048 and Ed25519) or none; both runs must give
 *       the same results.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dkim/canon.c"
#include "dkim/header.c"
#include "dkim/keys.c"
#include "dkim/pubkey.c"
#include "dkim/tags.c"
#include "dkim/verify.c"
#include "io/log.c"
#include "io/metrics.c"
#include "io/text.c"

#define CHECK(x) do { if (!(x)) __builtin_trap(); } while (0)

static struct dkim_verify_lib *fuzz_lib;
static char *rec_rsa, *rec_ed;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[256], *pem;
    CHECK(dkim_keygen(DKIM_ALGO_RSA, &pem, &rec_rsa, err, sizeof(err)) == 0);
    free(pem);
    CHECK(dkim_keygen(DKIM_ALGO_ED25519, &pem, &rec_ed, err, sizeof(err)) == 0);
    free(pem);
    fuzz_lib = dkim_verify_lib_new(err, sizeof(err));
    CHECK(fuzz_lib != NULL);
    return 0;
}

static void verify(const char *data, size_t size, size_t chunk, struct dkim_verify_result *res)
{
    struct dkim_verifier *v = dkim_verify_open(fuzz_lib, 4, "mx.test");
    bool asked = false;
    CHECK(v != NULL);
    for (size_t off = 0; off < size; off += chunk) {
        size_t n = size - off < chunk ? size - off : chunk;
        char *copy = malloc(n); /* exact size: ASan sees an overread */
        memcpy(copy, data + off, n);
        dkim_verify_feed(v, copy, n);
        free(copy);
        if (!asked && dkim_verify_header_done(v)) {
            asked = true;
            CHECK(dkim_verify_nkeys(v) <= 4);
            for (unsigned i = 0; i < dkim_verify_nkeys(v); i++) {
                const char *name = dkim_verify_key_name(v, i);
                CHECK(name != NULL && strlen(name) <= DKIM_DOMAIN_MAX);
                const char *rec = name[0] == 'e' ? rec_ed : name[0] == 'n' ? NULL : rec_rsa;
                if (rec != NULL)
                    dkim_verify_set_key(v, i, DKIM_KEY_FOUND, rec, strlen(rec), 60);
                else
                    dkim_verify_set_key(v, i, DKIM_KEY_NONE, NULL, 0, 0);
            }
        }
    }
    dkim_verify_eof(v);
    const char *d;
    (void)dkim_verify_from(v, &d);
    CHECK(d != NULL);
    CHECK(dkim_verify_finish(v, res) == 0);
    CHECK(res->nsigs <= 4);
    dkim_verify_free(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *in = (const char *)data + 1;
    size_t len = size - 1;
    char *copy = malloc(len ? len : 1);
    memcpy(copy, in, len);
    const char *why = NULL;

    switch (data[0]) {
    case 0: {
        struct dkim_sig sig;
        if (dkim_sig_parse(copy, len, &sig, &why) == 0) {
            CHECK(why == NULL);
            CHECK(sig.domain[0] != '\0' && sig.selector[0] != '\0');
            CHECK(sig.hcount >= 1 && sig.hcount <= DKIM_SIG_HFIELDS_MAX);
            CHECK(sig.b_len > 0 && sig.b_len <= DKIM_SIG_B_MAX);
            CHECK(sig.b_raw >= copy && sig.b_raw + sig.b_raw_len <= copy + len);
        } else {
            CHECK(why != NULL);
        }
        break;
    }
    case 1: {
        struct dkim_pubkey k;
        CHECK(dkim_pubkey_parse(&k, copy, len) == 0);
        CHECK((k.status == DKIM_PUBKEY_OK) == (k.why == NULL));
        if (k.status == DKIM_PUBKEY_OK && k.rec.type == DKIM_KEYTYPE_RSA)
            CHECK(k.ctx != NULL && k.bits >= DKIM_PUBKEY_RSA_MIN);
        dkim_pubkey_clear(&k);
        break;
    }
    case 2: {
        unsigned char out[256];
        long n = dkim_b64_decode(copy, len, out, sizeof(out));
        CHECK(n <= (long)sizeof(out));
        break;
    }
    default: {
        struct dkim_verify_result a, b;
        verify(copy, len, len ? len : 1, &a);
        verify(copy, len, 1 + data[0] % 64, &b);
        CHECK(a.nsigs == b.nsigs && a.ignored == b.ignored);
        for (unsigned i = 0; i < a.nsigs; i++) {
            CHECK(a.sigs[i].status == b.sigs[i].status);
            CHECK(strcmp(a.sigs[i].domain, b.sigs[i].domain) == 0);
            CHECK(a.sigs[i].body_len == b.sigs[i].body_len);
        }
        break;
    }
    }
    free(copy);
    return 0;
}
