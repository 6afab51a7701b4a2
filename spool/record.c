/* SPDX-License-Identifier: MIT */
/*
 * record.c - the spool's on-disk encodings (see record.h for the layouts):
 * crc32c, message ids, envelopes, record headers, journal entries, and the
 * small id-keyed hash map the spool's indexes are made of.
 *
 * Everything here is pure (no I/O) and bounds-checked so that a torn or
 * corrupted file can be fed to the decoders safely: tests/unit/spool/
 * test_record.c corrupts every byte and cuts every length of a record.
 */
#include "spool/record.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <nmmintrin.h>
#include <sodium.h>

/* ---------------------------------------------------------------- crc32c */

/*
 * crc32c: the Castagnoli polynomial 0x1EDC6F41, reflected (0x82F63B78),
 * initial value and final xor ~0 (RFC 3720 B.4).  Callers chain calls by
 * passing the previous result as crc.
 */
static uint32_t crc_table[8][256];
static bool crc_table_ready;

static void crc_table_init(void)
{
    for (unsigned i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[0][i] = c;
    }
    for (unsigned i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
    __atomic_store_n(&crc_table_ready, true, __ATOMIC_RELEASE);
}

uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
    const uint8_t *p = buf;

    if (!__atomic_load_n(&crc_table_ready, __ATOMIC_ACQUIRE))
        crc_table_init(); /* idempotent: racing threads write the same values */
    crc = ~crc;
    while (len >= 8) { /* slicing-by-8 */
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= crc;
        crc = crc_table[7][w & 0xff] ^ crc_table[6][(w >> 8) & 0xff] ^
              crc_table[5][(w >> 16) & 0xff] ^ crc_table[4][(w >> 24) & 0xff] ^
              crc_table[3][(w >> 32) & 0xff] ^ crc_table[2][(w >> 40) & 0xff] ^
              crc_table[1][(w >> 48) & 0xff] ^ crc_table[0][w >> 56];
        p += 8;
        len -= 8;
    }
    while (len--)
        crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xff];
    return ~crc;
}

__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const void *buf,
                                                           size_t len)
{
    const uint8_t *p = buf;
    uint64_t c = (uint32_t)~crc;

    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = _mm_crc32_u64(c, w);
        p += 8;
        len -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (len--)
        c32 = _mm_crc32_u8(c32, *p++);
    return ~c32;
}

uint32_t crc32c(uint32_t crc, const void *buf, size_t len)
{
    static int have_hw = -1;

    if (have_hw < 0)
        have_hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
    return have_hw ? crc32c_hw(crc, buf, len) : crc32c_sw(crc, buf, len);
}

/* ------------------------------------------------------ little-endian I/O */

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const uint8_t *p) { return get32(p) | (uint64_t)get32(p + 4) << 32; }

/* ------------------------------------------------------------ message ids */

static const char b62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/* Write v as exactly n base62 digits, most significant first (v mod 62^n). */
static void b62_put(char *out, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        out[i] = b62[v % 62];
        v /= 62;
    }
}

void rec_id_make(char out[SPOOL_ID_LEN + 1], int64_t now, unsigned shard, uint64_t seq)
{
    uint64_t rnd;

    randombytes_buf(&rnd, sizeof rnd);
    b62_put(out, (uint64_t)(now < 0 ? 0 : now), 6);
    b62_put(out + 6, shard, 2);
    b62_put(out + 8, seq, 4);
    b62_put(out + 12, rnd >> 17, 8); /* 47 bits < 62^8 */
    out[SPOOL_ID_LEN] = '\0';
}

bool rec_id_valid(const char *id)
{
    for (int i = 0; i < SPOOL_ID_LEN; i++) {
        char c = id[i];
        if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')))
            return false;
    }
    return true;
}

/* --------------------------------------------------------------- envelope */

static size_t str_size(const char *s) { return 4 + (s ? strlen(s) + 1 : 0); }

size_t rec_env_size(const struct spool_envelope *env)
{
    size_t n = REC_ENV_FIXED;

    if (!env->sender || env->nrcpts > UINT32_MAX / 8 || (env->nrcpts && !env->rcpts))
        return 0;
    n += str_size(env->sender) + str_size(env->helo) + str_size(env->client_addr) +
         str_size(env->auth_user) + str_size(env->received);
    for (size_t i = 0; i < env->nrcpts; i++) {
        if (!env->rcpts[i])
            return 0;
        n += str_size(env->rcpts[i]);
        if (n > UINT32_MAX)
            return 0;
    }
    return n > UINT32_MAX ? 0 : n;
}

static uint8_t *str_put(uint8_t *p, const char *s)
{
    if (!s) {
        put32(p, REC_STR_NULL);
        return p + 4;
    }
    size_t len = strlen(s);
    put32(p, (uint32_t)len);
    memcpy(p + 4, s, len + 1);
    return p + 4 + len + 1;
}

void rec_env_encode(const struct spool_envelope *env, uint8_t *out)
{
    uint8_t *p = out;

    put32(p, (uint32_t)env->nrcpts);
    put32(p + 4, env->flags);
    put64(p + 8, (uint64_t)env->received_at);
    p += REC_ENV_FIXED;
    p = str_put(p, env->sender);
    p = str_put(p, env->helo);
    p = str_put(p, env->client_addr);
    p = str_put(p, env->auth_user);
    p = str_put(p, env->received);
    for (size_t i = 0; i < env->nrcpts; i++)
        p = str_put(p, env->rcpts[i]);
}

/* Read one string at *pos; 0 or -EBADMSG.  Never reads past len. */
static int str_get(const uint8_t *buf, size_t len, size_t *pos, const char **out)
{
    if (len - *pos < 4)
        return -EBADMSG;
    uint32_t n = get32(buf + *pos);
    *pos += 4;
    if (n == REC_STR_NULL) {
        *out = NULL;
        return 0;
    }
    if (len - *pos < (size_t)n + 1 || buf[*pos + n] != '\0')
        return -EBADMSG;
    *out = (const char *)buf + *pos;
    *pos += (size_t)n + 1;
    return 0;
}

int rec_env_nrcpts(const uint8_t *buf, size_t len, uint32_t *nrcpts)
{
    if (len < REC_ENV_FIXED)
        return -EBADMSG;
    *nrcpts = get32(buf);
    /* every recipient takes at least 5 bytes */
    if (*nrcpts > (len - REC_ENV_FIXED) / 5)
        return -EBADMSG;
    return 0;
}

int rec_env_decode(const uint8_t *buf, size_t len, struct rec_env *out)
{
    uint32_t n;
    size_t pos = REC_ENV_FIXED;
    int r;

    memset(out, 0, sizeof *out);
    if ((r = rec_env_nrcpts(buf, len, &n)) < 0)
        return r;
    out->flags = get32(buf + 4);
    out->received_at = (int64_t)get64(buf + 8);
    if ((r = str_get(buf, len, &pos, &out->sender)) < 0 ||
        (r = str_get(buf, len, &pos, &out->helo)) < 0 ||
        (r = str_get(buf, len, &pos, &out->client_addr)) < 0 ||
        (r = str_get(buf, len, &pos, &out->auth_user)) < 0 ||
        (r = str_get(buf, len, &pos, &out->received)) < 0)
        goto fail;
    if (!out->sender) {
        r = -EBADMSG;
        goto fail;
    }
    out->rcpts = calloc(n ? n : 1, sizeof *out->rcpts);
    if (!out->rcpts) {
        r = -ENOMEM;
        goto fail;
    }
    out->nrcpts = n;
    for (uint32_t i = 0; i < n; i++) {
        if ((r = str_get(buf, len, &pos, &out->rcpts[i])) < 0)
            goto fail;
        if (!out->rcpts[i]) {
            r = -EBADMSG;
            goto fail;
        }
    }
    if (pos != len) {
        r = -EBADMSG;
        goto fail;
    }
    return 0;
fail:
    rec_env_free(out);
    return r;
}

void rec_env_free(struct rec_env *e)
{
    free(e->rcpts);
    memset(e, 0, sizeof *e);
}

/* ---------------------------------------------------------------- records */

void rec_hdr_build(uint8_t *hdr, const char *id, const uint8_t *env, uint32_t env_len,
                   const struct iovec *data, int iovcnt, uint64_t data_len)
{
    memset(hdr, 0, REC_HDR_LEN);
    put32(hdr, REC_MAGIC);
    put16(hdr + 4, REC_VERSION);
    put32(hdr + 8, env_len);
    put64(hdr + 12, data_len);
    memcpy(hdr + 20, id, SPOOL_ID_LEN);
    uint32_t hc = crc32c(0, hdr, 40);
    put32(hdr + 40, hc);
    uint32_t bc = crc32c(hc, env, env_len);
    for (int i = 0; i < iovcnt; i++)
        bc = crc32c(bc, data[i].iov_base, data[i].iov_len);
    put32(hdr + 44, bc);
}

int rec_parse(const uint8_t *buf, size_t avail, struct rec_view *v)
{
    if (avail < REC_HDR_LEN) {
        /* a short header is torn only if what is there could be a header */
        size_t n = avail < 4 ? avail : 4;
        uint8_t m[4];
        put32(m, REC_MAGIC);
        return memcmp(buf, m, n) == 0 ? -EAGAIN : -EBADMSG;
    }
    if (get32(buf) != REC_MAGIC || get16(buf + 4) != REC_VERSION || get16(buf + 6) != 0)
        return -EBADMSG;
    uint32_t hc = crc32c(0, buf, 40);
    if (get32(buf + 40) != hc)
        return -EBADMSG;
    if (!rec_id_valid((const char *)buf + 20))
        return -EBADMSG;
    uint32_t env_len = get32(buf + 8);
    uint64_t data_len = get64(buf + 12);
    if (data_len > (UINT64_MAX >> 2))
        return -EBADMSG;
    uint64_t body = (uint64_t)env_len + data_len;
    uint64_t total = REC_HDR_LEN + body + rec_pad(REC_HDR_LEN + body);
    if (total > avail)
        return -EAGAIN;
    const uint8_t *env = buf + REC_HDR_LEN;
    uint32_t bc = crc32c(hc, env, env_len);
    bc = crc32c(bc, env + env_len, (size_t)data_len);
    if (get32(buf + 44) != bc)
        return -EBADMSG;
    for (uint64_t i = REC_HDR_LEN + body; i < total; i++)
        if (buf[i] != 0)
            return -EBADMSG;
    memcpy(v->id, buf + 20, SPOOL_ID_LEN);
    v->id[SPOOL_ID_LEN] = '\0';
    v->env = env;
    v->env_len = env_len;
    v->data = env + env_len;
    v->data_len = data_len;
    v->total = total;
    return 0;
}

/* ---------------------------------------------------------------- journal */

void jrn_encode(uint8_t out[JRN_ENTRY_LEN], const struct jrn_entry *e)
{
    memset(out, 0, JRN_ENTRY_LEN);
    put32(out, JRN_MAGIC);
    out[4] = e->state;
    put32(out + 8, (uint32_t)e->rcpt_idx);
    put64(out + 16, (uint64_t)e->until);
    memcpy(out + 24, e->id, SPOOL_ID_LEN);
    put32(out + 44, crc32c(0, out, 44));
}

int jrn_decode(const uint8_t *buf, size_t avail, struct jrn_entry *e)
{
    if (avail < JRN_ENTRY_LEN)
        return -EAGAIN;
    if (get32(buf) != JRN_MAGIC || get32(buf + 44) != crc32c(0, buf, 44))
        return -EBADMSG;
    if (buf[5] || buf[6] || buf[7] || get32(buf + 12) != 0)
        return -EBADMSG;
    e->state = buf[4];
    e->rcpt_idx = (int32_t)get32(buf + 8);
    e->until = (int64_t)get64(buf + 16);
    if (e->state > JRN_DELETED || e->rcpt_idx < -1 || !rec_id_valid((const char *)buf + 24))
        return -EBADMSG;
    if (e->state == JRN_DELETED && e->rcpt_idx != -1)
        return -EBADMSG;
    memcpy(e->id, buf + 24, SPOOL_ID_LEN);
    e->id[SPOOL_ID_LEN] = '\0';
    return 0;
}

/* ------------------------------------------------------------------ idmap */

static size_t id_hash(const char *id)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (int i = 0; i < SPOOL_ID_LEN; i++) {
        h ^= (uint8_t)id[i];
        h *= 0x100000001b3ull;
    }
    return (size_t)(h ^ (h >> 29));
}

struct idmap_node *idmap_get(const struct idmap *m, const char *id)
{
    if (!m->nb)
        return NULL;
    for (struct idmap_node *n = m->b[id_hash(id) & (m->nb - 1)]; n; n = n->next)
        if (memcmp(n->id, id, SPOOL_ID_LEN) == 0)
            return n;
    return NULL;
}

int idmap_put(struct idmap *m, struct idmap_node *n)
{
    if (m->n >= m->nb) { /* load factor <= 1 */
        size_t nb = m->nb ? m->nb * 2 : 64;
        struct idmap_node **b = calloc(nb, sizeof *b);
        if (!b)
            return -ENOMEM;
        for (size_t i = 0; i < m->nb; i++) {
            struct idmap_node *x = m->b[i], *next;
            for (; x; x = next) {
                next = x->next;
                size_t h = id_hash(x->id) & (nb - 1);
                x->next = b[h];
                b[h] = x;
            }
        }
        free(m->b);
        m->b = b;
        m->nb = nb;
    }
    size_t h = id_hash(n->id) & (m->nb - 1);
    n->next = m->b[h];
    m->b[h] = n;
    m->n++;
    return 0;
}

void idmap_del(struct idmap *m, struct idmap_node *n)
{
    struct idmap_node **pp = &m->b[id_hash(n->id) & (m->nb - 1)];
    while (*pp != n)
        pp = &(*pp)->next;
    *pp = n->next;
    m->n--;
}

void idmap_clear(struct idmap *m, void (*fn)(struct idmap_node *n))
{
    for (size_t i = 0; i < m->nb; i++) {
        struct idmap_node *x = m->b[i], *next;
        for (; x; x = next) {
            next = x->next;
            if (fn)
                fn(x);
        }
    }
    free(m->b);
    memset(m, 0, sizeof *m);
}
