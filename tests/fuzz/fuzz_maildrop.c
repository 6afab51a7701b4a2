/* SPDX-License-Identifier: MIT */
/*
 * fuzz_maildrop.c - libFuzzer target for core/maildrop_format.c.  The input
 * is a drop file, written by any local user: maildrop_parse() must never
 * read out of bounds, and what it accepts must hold its promises (a sender
 * and recipients inside the buffer, at least one recipient, the message in
 * wire form within the size limit).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/maildrop_format.c"

#define CHECK(x) do { if (!(x)) __builtin_trap(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1);
    struct maildrop_msg m;
    char err[256] = "";

    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    int rc = maildrop_parse(buf, size, 4096, 8, &m, err, sizeof(err));
    CHECK(rc == 0 || rc == 1 || rc == -1);
    if (rc == 0) {
        CHECK(m.nrcpts >= 1 && m.nrcpts <= 8 && m.size <= 4096);
        CHECK(m.data >= buf && m.data + m.size <= buf + size);
        for (size_t i = 0; i < m.nrcpts; i++)
            CHECK(strchr(m.rcpts[i], '@') != NULL && strchr(m.rcpts[i], ' ') == NULL);
        for (size_t i = 0; i < m.size; i++)
            CHECK(m.data[i] != '\n' || (i > 0 && m.data[i - 1] == '\r'));
        free(m.rcpts);
    } else if (rc == -1) {
        CHECK(err[0] != '\0');
    }
    free(buf);
    return 0;
}
