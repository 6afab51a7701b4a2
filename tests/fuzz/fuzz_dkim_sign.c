/* SPDX-License-Identifier: MIT */
/*
 * fuzz_dkim_sign.c - libFuzzer target for dkim/sign.c and dkim/canon.c.
 * The input is a stored message (wire form, dot-stuffed) whose first byte
 * picks a chunk size; it is signed once in one chunk and once in chunks of
 * that size, and both results must be identical (signatures included:
 * RSA PKCS#1 v1.5 and Ed25519 are deterministic, and t= is fixed).  The
 * header parser, the From domain extraction, the unstuffing and both
 * canonicalizations all see the input.  Keys (RSA-2048 and Ed25519 for
 * f.test, Ed25519 for e.test) are made once, in a temporary directory.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dkim/canon.c"
#include "dkim/header.c"
#include "dkim/keys.c"
#include "dkim/sign.c"
#include "io/log.c"
#include "io/metrics.c"
#include "io/text.c"

#define CHECK(x) do { if (!(x)) __builtin_trap(); } while (0)

static struct dkim_keys *fuzz_keys;

static void key_write(const char *dir, const char *domain, const char *sel, enum dkim_algo a)
{
    char path[512], err[256], *pem, *rec;
    CHECK(dkim_keygen(a, &pem, &rec, err, sizeof(err)) == 0);
    snprintf(path, sizeof(path), "%s/domains/%s", dir, domain);
    mkdir(path, 0700);
    snprintf(path, sizeof(path), "%s/domains/%s/dkim", dir, domain);
    mkdir(path, 0700);
    snprintf(path, sizeof(path), "%s/domains/%s/dkim/%s.key", dir, domain, sel);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fputs(pem, f);
    fclose(f);
    chmod(path, 0600);
    free(pem);
    free(rec);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static char dir[] = "/tmp/ortoo-fuzz-dkim-XXXXXX";
    char path[600], err[256];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof(path), "%s/domains", dir);
    mkdir(path, 0700);
    key_write(dir, "f.test", "r", DKIM_ALGO_RSA);
    key_write(dir, "f.test", "e", DKIM_ALGO_ED25519);
    key_write(dir, "e.test", "e", DKIM_ALGO_ED25519);
    CHECK(dkim_keys_load(dir, NULL, &fuzz_keys, err, sizeof(err)) == 0);
    snprintf(path, sizeof(path), "rm -rf %s", dir);
    CHECK(system(path) == 0);
    return 0;
}

static void sign(const uint8_t *data, size_t size, size_t chunk, struct dkim_sign_result *res)
{
    struct dkim_sign_params p = {.now = 1700000000, .add_missing = false, .hostname = "h"};
    struct dkim_signer *sg = dkim_sign_open(fuzz_keys, &p);
    CHECK(sg != NULL);
    for (size_t off = 0; off < size; off += chunk) {
        size_t n = size - off < chunk ? size - off : chunk;
        char *copy = malloc(n); /* exact size: ASan sees an overread */
        memcpy(copy, data + off, n);
        dkim_sign_feed(sg, copy, n);
        free(copy);
    }
    CHECK(dkim_sign_finish(sg, res) == 0);
    CHECK((res->signatures != NULL) == (res->nsigs > 0));
    CHECK(res->added == NULL);
    dkim_sign_free(sg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    size_t chunk = 1 + data[0] % 64;
    struct dkim_sign_result a, b;
    sign(data + 1, size - 1, size, &a);
    sign(data + 1, size - 1, chunk, &b);
    CHECK(a.nsigs == b.nsigs);
    CHECK((a.signatures == NULL && b.signatures == NULL) ||
          strcmp(a.signatures, b.signatures) == 0);
    free(a.signatures);
    free(b.signatures);
    /* The header canonicalizer on the raw input (it needs no colon). */
    char *out = malloc(size + 2);
    CHECK(dkim_canon_header((const char *)data, size, true, out) <= size + 2);
    free(out);
    return 0;
}
