/* SPDX-License-Identifier: MIT */
/*
 * fuzz_srs.c - libFuzzer target for core/srs.c: the input is taken as an
 * address to reverse and as a sender to rewrite.  A rewritten sender must
 * reverse to the original (SRS0) or to the SRS0 address at the first hop
 * (SRS1), with the same secret and time; nothing may read past the input.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/srs.c"

#define CHECK(x) do { if (!(x)) __builtin_trap(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const secrets[] = {"fuzz-secret-0123456789", "old-secret-0123456789"};
    const struct srs srs = {secrets, 2, 0, '+'};
    const char *in = (const char *)data;
    char out[2048], back[2048], again[2048];
    time_t now = 1709294400;

    (void)srs_reverse(&srs, in, size, now, out, sizeof(out));
    int n = srs_forward(&srs, in, size, "fwd.example", now, out, sizeof(out));
    if (n <= 0)
        return 0;
    CHECK((size_t)n == strlen(out));
    if ((size_t)n == size && memcmp(out, in, size) == 0)
        return 0; /* a sender at fwd.example itself: unchanged */
    CHECK(srs_is_srs(out, (size_t)n));
    int m = srs_reverse(&srs, out, (size_t)n, now, back, sizeof(back));
    CHECK(m > 0);
    if (out[3] == '0') {
        /* The original sender comes back (the domain as written). */
        CHECK((size_t)m == size && memcmp(back, in, size) == 0);
    } else {
        /* SRS1: an SRS0 address, which rewrites to the same SRS1 again. */
        CHECK(srs_is_srs(back, (size_t)m) && back[3] == '0');
        int k = srs_forward(&srs, back, (size_t)m, "fwd.example", now, again, sizeof(again));
        const char *at = strrchr(back, '@');
        if (at != NULL && strcasecmp(at + 1, "fwd.example") == 0)
            CHECK(k == m); /* the first hop was us: left as it is */
        else
            CHECK(k == n && strcasecmp(again, out) == 0);
    }
    return 0;
}
