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

bool rec_id_ok(const char *id)
{
    return id && strnlen(id, SPOOL_ID_LEN + 1) == SPOOL_ID_LEN && rec_id_valid(id);
}

/* ------------------------------------------------------------- reply text */

size_t rec_reply_escape(char *out, size_t cap, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t max = cap - 1 < SPOOL_REPLY_MAX ? cap - 1 : SPOOL_REPLY_MAX, n = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        char esc[4];
        size_t k;
        if (ch >= 0x20 && ch < 0x7f && ch != '\\') {
            esc[0] = (char)ch;
            k = 1;
        } else if (ch == '\\' || ch == '\r' || ch == '\n' || ch == '\t') {
            esc[0] = '\\';
            esc[1] = ch == '\\' ? '\\' : ch == '\r' ? 'r' : ch == '\n' ? 'n' : 't';
            k = 2;
        } else {
            esc[0] = '\\';
            esc[1] = 'x';
            esc[2] = hex[ch >> 4];
            esc[3] = hex[ch & 15];
            k = 4;
        }
        if (n + k > max)
            break;
        memcpy(out + n, esc, k);
        n += k;
    }
    out[n] = '\0';
    return n;
}

/* -------------------------------------------------------- DSN parameters */

static bool word_ieq(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    if (alen != blen)
        return false;
    for (size_t i = 0; i < alen; i++) {
        char c = a[i];
        if (c >= 'a' && c <= 'z')
            c = (char)(c - 32);
        if (c != b[i])
            return false;
    }
    return true;
}

uint8_t spool_notify_parse(const char *s, size_t len)
{
    uint8_t f = 0;
    size_t i = 0;

    if (!s)
        return 0;
    while (i < len) {
        size_t j = i;
        while (j < len && s[j] != ',')
            j++;
        if (word_ieq(s + i, j - i, "NEVER"))
            f |= SPOOL_NOTIFY_NEVER;
        else if (word_ieq(s + i, j - i, "SUCCESS"))
            f |= SPOOL_NOTIFY_SUCCESS;
        else if (word_ieq(s + i, j - i, "FAILURE"))
            f |= SPOOL_NOTIFY_FAILURE;
        else if (word_ieq(s + i, j - i, "DELAY"))
            f |= SPOOL_NOTIFY_DELAY;
        i = j + 1;
    }
    return f;
}

/* --------------------------------------------------------------- envelope */

static size_t str_size(const char *s) { return 4 + (s ? strlen(s) + 1 : 0); }

size_t rec_env_size(const struct rec_env_in *in)
{
    const struct spool_envelope *env = in->env;
    size_t n = REC_ENV2_FIXED;

    if (!env->sender || env->nrcpts > UINT32_MAX / 8 || (env->nrcpts && !env->rcpts) ||
        in->nbounce > UINT32_MAX / 8 || (in->nbounce && !in->bounce_idx) ||
        env->dsn_ret > SPOOL_RET_HDRS)
        return 0;
    if ((in->bounce_of && !rec_id_ok(in->bounce_of)) || (in->nbounce && !in->bounce_of))
        return 0;
    n += str_size(env->sender) + str_size(env->helo) + str_size(env->client_addr) +
         str_size(env->auth_user) + str_size(env->headers ? env->headers : "") +
         str_size(env->dsn_envid) + str_size(in->bounce_of);
    for (size_t i = 0; i < env->nrcpts; i++) {
        if (!env->rcpts[i])
            return 0;
        n += str_size(env->rcpts[i]) + 1 +
             str_size(env->dsn_orcpt ? env->dsn_orcpt[i] : NULL);
        if (n > UINT32_MAX)
            return 0;
    }
    n += 4 * in->nbounce;
    return n > UINT32_MAX ? 0 : n;
}

static uint8_t *str_put(uint8_t *p, const char *s)
{
    if (!s) {
        rec_put32(p, REC_STR_NULL);
        return p + 4;
    }
    size_t len = strlen(s);
    rec_put32(p, (uint32_t)len);
    memcpy(p + 4, s, len + 1);
    return p + 4 + len + 1;
}

void rec_env_encode(const struct rec_env_in *in, uint8_t *out)
{
    const struct spool_envelope *env = in->env;
    uint8_t *p = out;

    rec_put32(p, (uint32_t)env->nrcpts);
    rec_put32(p + 4, env->flags);
    rec_put64(p + 8, (uint64_t)env->received_at);
    p[16] = env->dsn_ret;
    p[17] = 0;
    rec_put16(p + 18, 0);
    rec_put32(p + 20, (uint32_t)in->nbounce);
    p += REC_ENV2_FIXED;
    p = str_put(p, env->sender);
    p = str_put(p, env->helo);
    p = str_put(p, env->client_addr);
    p = str_put(p, env->auth_user);
    p = str_put(p, env->headers ? env->headers : "");
    p = str_put(p, env->dsn_envid);
    p = str_put(p, in->bounce_of);
    for (size_t i = 0; i < env->nrcpts; i++) {
        p = str_put(p, env->rcpts[i]);
        *p++ = env->dsn_notify ? env->dsn_notify[i] : 0;
        p = str_put(p, env->dsn_orcpt ? env->dsn_orcpt[i] : NULL);
    }
    for (size_t i = 0; i < in->nbounce; i++, p += 4)
        rec_put32(p, in->bounce_idx[i]);
}

/* Read one string at *pos; 0 or -EBADMSG.  Never reads past len. */
static int str_get(const uint8_t *buf, size_t len, size_t *pos, const char **out)
{
    if (len - *pos < 4)
        return -EBADMSG;
    uint32_t n = rec_get32(buf + *pos);
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

int rec_env_peek(const uint8_t *buf, size_t len, uint16_t version, uint32_t *nrcpts,
                 int64_t *received_at)
{
    size_t fixed = version == 1 ? REC_ENV_FIXED : REC_ENV2_FIXED;

    if ((version != 1 && version != 2) || len < fixed)
        return -EBADMSG;
    *nrcpts = rec_get32(buf);
    *received_at = (int64_t)rec_get64(buf + 8);
    /* every recipient takes at least 5 bytes (9 in version 2) */
    if (*nrcpts > (len - fixed) / (version == 1 ? 5 : 9))
        return -EBADMSG;
    return 0;
}

int rec_env_decode(const uint8_t *buf, size_t len, uint16_t version, struct rec_env *out)
{
    uint32_t n, nb = 0;
    size_t pos;
    int r;

    memset(out, 0, sizeof *out);
    if ((r = rec_env_peek(buf, len, version, &n, &out->received_at)) < 0)
        return r;
    out->version = version;
    out->flags = rec_get32(buf + 4);
    if (version == 2) {
        out->dsn_ret = buf[16];
        nb = rec_get32(buf + 20);
        if (out->dsn_ret > SPOOL_RET_HDRS || buf[17] || rec_get16(buf + 18) ||
            nb > (len - REC_ENV2_FIXED) / 4)
            return -EBADMSG;
    }
    /* one allocation: rcpts and orcpt pointers, bounce indexes, notify bytes */
    size_t nn = n ? n : 1;
    size_t sz = 2 * nn * sizeof(char *) + (size_t)nb * sizeof(uint32_t) + nn;
    char *mem = calloc(1, sz);
    if (!mem)
        return -ENOMEM;
    out->mem = mem;
    out->rcpts = (const char **)mem;
    out->dsn_orcpt = (const char **)(mem + nn * sizeof(char *));
    out->bounce_idx = (uint32_t *)(mem + 2 * nn * sizeof(char *));
    out->dsn_notify = (uint8_t *)(mem + 2 * nn * sizeof(char *) + (size_t)nb * sizeof(uint32_t));
    out->nrcpts = n;
    out->nbounce = nb;

    pos = version == 1 ? REC_ENV_FIXED : REC_ENV2_FIXED;
    if ((r = str_get(buf, len, &pos, &out->sender)) < 0 ||
        (r = str_get(buf, len, &pos, &out->helo)) < 0 ||
        (r = str_get(buf, len, &pos, &out->client_addr)) < 0 ||
        (r = str_get(buf, len, &pos, &out->auth_user)) < 0 ||
        (r = str_get(buf, len, &pos, &out->headers)) < 0)
        goto fail;
    if (version == 2 && ((r = str_get(buf, len, &pos, &out->dsn_envid)) < 0 ||
                         (r = str_get(buf, len, &pos, &out->bounce_of)) < 0))
        goto fail;
    r = -EBADMSG;
    if (!out->sender || (out->bounce_of && !rec_id_ok(out->bounce_of)) ||
        (nb && !out->bounce_of))
        goto fail;
    if (!out->headers)
        out->headers = "";
    for (uint32_t i = 0; i < n; i++) {
        if ((r = str_get(buf, len, &pos, &out->rcpts[i])) < 0)
            goto fail;
        r = -EBADMSG;
        if (!out->rcpts[i])
            goto fail;
        if (version == 2) {
            if (pos >= len)
                goto fail;
            out->dsn_notify[i] = buf[pos++];
            if ((r = str_get(buf, len, &pos, &out->dsn_orcpt[i])) < 0)
                goto fail;
        }
    }
    r = -EBADMSG;
    if (len - pos != (size_t)nb * 4)
        goto fail;
    for (uint32_t i = 0; i < nb; i++, pos += 4)
        out->bounce_idx[i] = rec_get32(buf + pos);
    return 0;
fail:
    rec_env_free(out);
    return r;
}

void rec_env_free(struct rec_env *e)
{
    free(e->mem);
    memset(e, 0, sizeof *e);
}

/* ---------------------------------------------------------------- records */

static uint64_t rec_tag(const uint8_t *key, const uint8_t *hdr)
{
    uint8_t out[crypto_shorthash_BYTES];

    crypto_shorthash(out, hdr, 48, key);
    return rec_get64(out);
}

void rec_hdr_build(uint8_t *hdr, const uint8_t *key, const char *id, const uint8_t *env,
                   uint32_t env_len, const struct iovec *data, int iovcnt, uint64_t data_len)
{
    memset(hdr, 0, REC2_HDR_LEN);
    rec_put32(hdr, REC_MAGIC);
    rec_put16(hdr + 4, REC_VERSION);
    rec_put32(hdr + 8, env_len);
    rec_put64(hdr + 12, data_len);
    memcpy(hdr + 20, id, SPOOL_ID_LEN);
    uint32_t hc = crc32c(0, hdr, 40);
    rec_put32(hdr + 40, hc);
    uint32_t bc = crc32c(hc, env, env_len);
    for (int i = 0; i < iovcnt; i++)
        bc = crc32c(bc, data[i].iov_base, data[i].iov_len);
    rec_put32(hdr + 44, bc);
    rec_put64(hdr + 48, rec_tag(key, hdr));
}

int rec_parse_hdr(const uint8_t *buf, size_t avail, struct rec_view *v)
{
    if (avail < REC_HDR_LEN)
        return -EBADMSG;
    uint16_t ver = rec_get16(buf + 4);
    uint32_t hl = rec_hdr_len(ver);
    if (rec_get32(buf) != REC_MAGIC || hl == 0 || rec_get16(buf + 6) != 0 || avail < hl)
        return -EBADMSG;
    uint32_t hc = crc32c(0, buf, 40);
    if (rec_get32(buf + 40) != hc || !rec_id_valid((const char *)buf + 20))
        return -EBADMSG;
    uint32_t env_len = rec_get32(buf + 8);
    uint64_t data_len = rec_get64(buf + 12);
    if (data_len > (UINT64_MAX >> 2))
        return -EBADMSG;
    uint64_t body = (uint64_t)env_len + data_len;
    memcpy(v->id, buf + 20, SPOOL_ID_LEN);
    v->id[SPOOL_ID_LEN] = '\0';
    v->version = ver;
    v->hdr_len = hl;
    v->env = buf + hl;
    v->env_len = env_len;
    v->data = buf + hl + env_len;
    v->data_len = data_len;
    v->total = hl + body + rec_pad(hl + body);
    v->tag_ok = false;
    return 0;
}

int rec_parse(const uint8_t *buf, size_t avail, const uint8_t *key, struct rec_view *v)
{
    if (avail < REC_HDR_MAX) {
        /* a short header is torn only if what is there could be a header */
        size_t n = avail < 4 ? avail : 4;
        uint8_t m[4];
        rec_put32(m, REC_MAGIC);
        if (memcmp(buf, m, n) != 0)
            return -EBADMSG;
        if (avail < 6)
            return -EAGAIN;
        uint32_t hl = rec_hdr_len(rec_get16(buf + 4));
        if (hl == 0)
            return -EBADMSG;
        if (avail < hl)
            return -EAGAIN;
    }
    struct rec_view h;
    if (rec_parse_hdr(buf, avail, &h) < 0)
        return -EBADMSG;
    if (h.total > avail)
        return -EAGAIN;
    uint32_t bc = crc32c(rec_get32(buf + 40), h.env, h.env_len);
    bc = crc32c(bc, h.data, (size_t)h.data_len);
    if (rec_get32(buf + 44) != bc)
        return -EBADMSG;
    for (uint64_t i = h.hdr_len + h.env_len + h.data_len; i < h.total; i++)
        if (buf[i] != 0)
            return -EBADMSG;
    if (h.version == 2 && key)
        h.tag_ok = rec_get64(buf + 48) == rec_tag(key, buf);
    *v = h;
    return 0;
}

/* ---------------------------------------------------------------- journal */

size_t jrn_size(const struct jrn_entry *e)
{
    size_t n = JRN2_FIXED + e->reply_len + 4;
    return n + rec_pad(n);
}

void jrn_encode(uint8_t *out, const struct jrn_entry *e)
{
    size_t len = jrn_size(e);

    memset(out, 0, len);
    rec_put32(out, JRN2_MAGIC);
    rec_put16(out + 4, (uint16_t)len);
    out[6] = e->type;
    out[7] = e->state;
    memcpy(out + 8, e->id, SPOOL_ID_LEN);
    rec_put32(out + 28, (uint32_t)e->rcpt_idx);
    rec_put32(out + 36, e->mflags);
    rec_put64(out + 40, (uint64_t)e->next_at);
    rec_put64(out + 48, (uint64_t)e->last_at);
    rec_put16(out + 56, e->reply_len);
    if (e->reply_len)
        memcpy(out + JRN2_FIXED, e->reply, e->reply_len);
    rec_put32(out + len - 4, crc32c(0, out, len - 4));
}

static int jrn1_decode(const uint8_t *buf, size_t avail, struct jrn_entry *e)
{
    if (avail < JRN_ENTRY_LEN)
        return -EAGAIN;
    if (rec_get32(buf + 44) != crc32c(0, buf, 44))
        return -EBADMSG;
    if (buf[5] || buf[6] || buf[7] || rec_get32(buf + 12) != 0)
        return -EBADMSG;
    memset(e, 0, sizeof *e);
    e->state = buf[4];
    e->rcpt_idx = (int32_t)rec_get32(buf + 8);
    e->next_at = (int64_t)rec_get64(buf + 16);
    if (e->state > JRN_DELETED || e->state == JRN_PENDING || e->rcpt_idx < -1 ||
        !rec_id_valid((const char *)buf + 24))
        return -EBADMSG;
    if (e->state == JRN_DELETED && e->rcpt_idx != -1)
        return -EBADMSG;
    e->type = e->state == JRN_DELETED ? JRN_T_DELETE : JRN_T_STATE;
    memcpy(e->id, buf + 24, SPOOL_ID_LEN);
    e->id[SPOOL_ID_LEN] = '\0';
    return 0;
}

int jrn_decode(const uint8_t *buf, size_t avail, struct jrn_entry *e, size_t *len)
{
    uint8_t m[4];
    size_t n = avail < 4 ? avail : 4;

    rec_put32(m, JRN2_MAGIC);
    if (avail >= 4 && rec_get32(buf) == JRN_MAGIC) {
        *len = JRN_ENTRY_LEN;
        return jrn1_decode(buf, avail, e);
    }
    if (memcmp(buf, m, n) != 0)
        return -EBADMSG;
    if (avail < 6)
        return -EAGAIN;
    size_t l = rec_get16(buf + 4);
    if (l < JRN2_MIN || l > JRN2_MAX || l % 8)
        return -EBADMSG;
    if (avail < l)
        return -EAGAIN;
    if (rec_get32(buf + l - 4) != crc32c(0, buf, l - 4))
        return -EBADMSG;
    memset(e, 0, sizeof *e);
    e->type = buf[6];
    e->state = buf[7];
    memcpy(e->id, buf + 8, SPOOL_ID_LEN);
    e->id[SPOOL_ID_LEN] = '\0';
    e->rcpt_idx = (int32_t)rec_get32(buf + 28);
    e->mflags = rec_get32(buf + 36);
    e->next_at = (int64_t)rec_get64(buf + 40);
    e->last_at = (int64_t)rec_get64(buf + 48);
    e->reply_len = rec_get16(buf + 56);
    e->reply = (const char *)buf + JRN2_FIXED;
    if (!rec_id_valid(e->id) || e->rcpt_idx < -1 || rec_get32(buf + 32) != 0 ||
        rec_get16(buf + 58) != 0 || e->reply_len > SPOOL_REPLY_MAX ||
        JRN2_FIXED + (size_t)e->reply_len + 4 > l)
        return -EBADMSG;
    for (size_t i = 0; i < e->reply_len; i++)
        if (e->reply[i] < 0x20 || e->reply[i] > 0x7e)
            return -EBADMSG;
    switch (e->type) {
    case JRN_T_STATE:
    case JRN_T_ATTEMPT:
        if (e->state != JRN_DELIVERED && e->state != JRN_DEFERRED && e->state != JRN_FAILED)
            return -EBADMSG;
        break;
    case JRN_T_DELETE:
        if (e->rcpt_idx != -1)
            return -EBADMSG;
        break;
    case JRN_T_MFLAGS:
        break;
    default:
        return -EBADMSG;
    }
    if (e->type != JRN_T_ATTEMPT && e->reply_len)
        return -EBADMSG;
    *len = l;
    return 0;
}

/* ------------------------------------------------------------------- key */

void key_encode(uint8_t out[KEY_FILE_LEN], const uint8_t key[REC_KEY_LEN])
{
    rec_put32(out, KEY_MAGIC);
    memcpy(out + 4, key, REC_KEY_LEN);
    rec_put32(out + 4 + REC_KEY_LEN, crc32c(0, out, 4 + REC_KEY_LEN));
}

int key_decode(const uint8_t *buf, size_t len, uint8_t key[REC_KEY_LEN])
{
    if (len != KEY_FILE_LEN || rec_get32(buf) != KEY_MAGIC ||
        rec_get32(buf + 4 + REC_KEY_LEN) != crc32c(0, buf, 4 + REC_KEY_LEN))
        return -EBADMSG;
    memcpy(key, buf + 4, REC_KEY_LEN);
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

int idmap_each(const struct idmap *m, int (*fn)(struct idmap_node *n, void *arg), void *arg)
{
    for (size_t i = 0; i < m->nb; i++)
        for (struct idmap_node *x = m->b[i]; x; x = x->next) {
            int r = fn(x, arg);
            if (r)
                return r;
        }
    return 0;
}
