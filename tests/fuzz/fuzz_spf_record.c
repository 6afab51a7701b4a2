/* SPDX-License-Identifier: MIT */
/*
 * fuzz_spf_record.c - libFuzzer target for resolver/spf_record.c: the input is
 * parsed as a TXT record and expanded as a macro-string (domain-spec and
 * explanation).  Terms must keep their invariants; an expansion must be NUL
 * terminated, of the returned length, and at most 253 octets as a domain.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "resolver/spf_record.c"

#define CHECK(x) do { if (!(x)) __builtin_trap(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct spf_record r;
    static const unsigned char ip6[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 1};
    const char *txt = (const char *)data, *at;
    char out[1024];

    int rc = spf_record_parse(txt, size, &r, &at);
    if (rc == 0) {
        for (size_t i = 0; i < r.nterms; i++) {
            const struct spf_term *t = &r.terms[i];
            CHECK(t->cidr4 <= 32 && t->cidr6 <= 128);
            if (t->mech == SPF_M_INCLUDE || t->mech == SPF_M_EXISTS)
                CHECK(t->domain.len > 0);
            if (t->domain.len > 0)
                CHECK(t->domain.p >= txt && t->domain.p + t->domain.len <= txt + size);
        }
    } else if (rc == -EINVAL) {
        CHECK(at >= txt && at < txt + size);
    }
    const struct spf_macro_ctx ctx = {.sender = "a.b-c@example.com", .domain = "example.com",
                                      .family = AF_INET6, .ip = ip6, .helo = "mx.example.net",
                                      .now = 1};
    for (int mode = 0; mode < 3; mode++) {
        int n = spf_macro_expand(txt, size, &ctx, mode == 2, mode == 1, out, sizeof(out));
        if (n >= 0) {
            CHECK((size_t)n == strlen(out));
            if (mode == 1)
                CHECK(n <= SPF_DOMAIN_MAX);
        }
    }
    return 0;
}
