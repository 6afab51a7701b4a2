/* SPDX-License-Identifier: MIT */
/*
 * fuzz_dmarc.c - libFuzzer target for core/dmarc.c and core/psl.c: the
 * input is parsed as a DMARC record (values in range when it parses), its
 * first line used as a domain for the organizational domain (a suffix of
 * the input, lower case, with a dot-separated label more than the public
 * suffix) against a small list written at start, and the alignment of the
 * input's first two lines (symmetric, and equal names always align).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/dmarc.c"
#include "core/psl.c"

#define CHECK(x) do { if (!(x)) __builtin_trap(); } while (0)

static struct psl *psl;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char path[] = "/tmp/fuzz-psl-XXXXXX", err[256];
    int fd = mkstemp(path);
    const char *list = "com\nco.uk\nuk\n*.ck\n!www.ck\njp\n*.kobe.jp\n!city.kobe.jp\n";
    if (fd < 0 || write(fd, list, strlen(list)) < 0)
        abort();
    close(fd);
    psl = psl_load(path, err, sizeof(err));
    unlink(path);
    if (psl == NULL)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dmarc_record r;
    if (dmarc_record_parse((const char *)data, size, &r) == 0)
        CHECK(r.pct <= 100 && r.p <= DMARC_P_REJECT && r.sp <= DMARC_P_REJECT);

    char a[300] = "", b[300] = "", org[300];
    const char *nl = memchr(data, '\n', size);
    size_t la = nl ? (size_t)(nl - (const char *)data) : size;
    if (la < sizeof(a)) {
        memcpy(a, data, la);
        a[la] = '\0';
    }
    if (nl != NULL) {
        size_t rest = size - la - 1;
        const char *nl2 = memchr(nl + 1, '\n', rest);
        size_t lb = nl2 ? (size_t)(nl2 - (nl + 1)) : rest;
        if (lb < sizeof(b)) {
            memcpy(b, nl + 1, lb);
            b[lb] = '\0';
        }
    }
    int n = psl_org_domain(psl, a, org, sizeof(org));
    if (n >= 0) {
        CHECK((size_t)n == strlen(org) && n > 0);
        size_t al = strlen(a);
        if (al > 0 && a[al - 1] == '.')
            al--;
        CHECK((size_t)n <= al && strncasecmp(a + al - (size_t)n, org, (size_t)n) == 0);
        CHECK(strchr(org, '.') != NULL);
    }
    bool ab = dmarc_aligned(psl, a, b, false), ba = dmarc_aligned(psl, b, a, false);
    CHECK(ab == ba);
    if (a[0] != '\0')
        CHECK(dmarc_aligned(psl, a, a, true));
    return 0;
}
