/* SPDX-License-Identifier: MIT */
/*
 * v1.h - for the spool's tests: build records and journal entries in the
 * version-1 formats (record.h) that ortoo no longer writes but must still
 * read, byte by byte, independently of record.c's encoders.
 */
#ifndef ORTOO_TEST_SPOOL_V1_H
#define ORTOO_TEST_SPOOL_V1_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "spool/record.h"

static inline size_t v1_str(uint8_t *p, const char *s)
{
    size_t n = strlen(s);
    if (p) {
        rec_put32(p, (uint32_t)n);
        memcpy(p + 4, s, n + 1);
    }
    return 4 + n + 1;
}

/* A version-1 record (header, envelope, data, padding) in a malloc'ed
 * buffer of exactly *total bytes. */
static inline uint8_t *v1_record(const char *id, const char *sender, const char *const *rcpts,
                                 size_t nrcpts, const char *received, const char *data,
                                 size_t *total)
{
    size_t el = REC_ENV_FIXED + v1_str(NULL, sender) + v1_str(NULL, "helo.example") +
                v1_str(NULL, "192.0.2.9") + 4 /* auth NULL */ + v1_str(NULL, received);
    for (size_t i = 0; i < nrcpts; i++)
        el += v1_str(NULL, rcpts[i]);
    size_t dl = strlen(data), t = REC_HDR_LEN + el + dl;
    t += rec_pad(t);
    uint8_t *r = calloc(1, t), *p = r + REC_HDR_LEN;
    rec_put32(p, (uint32_t)nrcpts);
    rec_put32(p + 4, SPOOL_F_8BITMIME);
    rec_put64(p + 8, 1700000000);
    p += REC_ENV_FIXED;
    p += v1_str(p, sender);
    p += v1_str(p, "helo.example");
    p += v1_str(p, "192.0.2.9");
    rec_put32(p, REC_STR_NULL);
    p += 4;
    p += v1_str(p, received);
    for (size_t i = 0; i < nrcpts; i++)
        p += v1_str(p, rcpts[i]);
    memcpy(p, data, dl);
    rec_put32(r, REC_MAGIC);
    rec_put16(r + 4, 1);
    rec_put32(r + 8, (uint32_t)el);
    rec_put64(r + 12, dl);
    memcpy(r + 20, id, SPOOL_ID_LEN);
    uint32_t hc = crc32c(0, r, 40);
    rec_put32(r + 40, hc);
    rec_put32(r + 44, crc32c(hc, r + REC_HDR_LEN, el + dl));
    *total = t;
    return r;
}

/* A version-1 journal entry. */
static inline void v1_entry(uint8_t out[JRN_ENTRY_LEN], const char *id, int32_t rcpt_idx,
                            uint8_t state, int64_t until)
{
    memset(out, 0, JRN_ENTRY_LEN);
    rec_put32(out, JRN_MAGIC);
    out[4] = state;
    rec_put32(out + 8, (uint32_t)rcpt_idx);
    rec_put64(out + 16, (uint64_t)until);
    memcpy(out + 24, id, SPOOL_ID_LEN);
    rec_put32(out + 44, crc32c(0, out, 44));
}

#endif
