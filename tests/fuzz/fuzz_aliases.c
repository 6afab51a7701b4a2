/* SPDX-License-Identifier: MIT */
/*
 * fuzz_aliases.c - libFuzzer target for core/aliases.c: the input is an
 * aliases file of example.com, parsed with and without pipes and case
 * sensitivity.  A successful parse must give a table whose every alias is
 * found again by its name and has targets of the documented shapes; every
 * error must be "F:line: ..." or "F: ...".
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/aliases.c"
#include "core/smtp_parse.c"
#include "io/text.c"

#define CHECK(x) do { if (!(x)) __builtin_trap(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (int mode = 0; mode < 2; mode++) {
        struct aliases *a = aliases_new(mode == 1, mode == 1);
        char err[256] = "";
        CHECK(a != NULL);
        int rc = aliases_parse(a, "F", "example.com", (const char *)data, size, err, sizeof(err));
        if (rc == 0)
            rc = aliases_finish(a, err, sizeof(err));
        if (rc != 0) {
            CHECK(strncmp(err, "F:", 2) == 0);
            aliases_free(a);
            continue;
        }
        for (size_t i = 0; i < aliases_count(a); i++) {
            const struct alias *al = aliases_at(a, i);
            CHECK(aliases_index(a, al) == i);
            CHECK(al->ntargets >= 1 && al->addr[al->name_len] == '@');
            CHECK(strcmp(al->addr + al->name_len + 1, "example.com") == 0);
            CHECK(aliases_find(a, al->addr, al->name_len, "EXAMPLE.com", 11) == al);
            for (size_t k = 0; k < al->ntargets; k++) {
                const struct alias_target *t = &al->targets[k];
                if (t->kind != ALIAS_T_PIPE)
                    CHECK(t->text[t->local_len] == '@');
                else
                    CHECK(mode == 1 && t->text[0] != '\0');
            }
        }
        aliases_free(a);
    }
    return 0;
}
