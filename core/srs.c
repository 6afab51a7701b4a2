/* SPDX-License-Identifier: MIT */
/*
 * srs.c - SRS0/SRS1 rewriting and reversal (see srs.h for the format).
 *
 * Written here rather than linked: Debian has no libsrs2 package, and the
 * scheme is small.  The output is byte-compatible with libsrs2 and postsrsd
 * (same HMAC input, same base64 and base32 alphabets, same field order), so
 * a secret can move between them and ortoo; the unit test checks a vector
 * from postsrsd's own test suite.
 */
#include "core/srs.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdint.h>
#include <string.h>

#define SRS_DAY 86400                 /* timestamp precision: one day */
#define SRS_TIME_SLOTS 1024           /* two base32 characters */
#define SRS_INPUT_MAX 1024            /* HMAC input (lowercased fields) */

static const char b32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

bool srs_is_srs(const char *local, size_t len)
{
    return len >= 5 && (local[0] == 'S' || local[0] == 's') &&
           (local[1] == 'R' || local[1] == 'r') && (local[2] == 'S' || local[2] == 's') &&
           (local[3] == '0' || local[3] == '1') &&
           (local[4] == '=' || local[4] == '+' || local[4] == '-');
}

const char *srs_strerror(int err)
{
    switch (err) {
    case -EINVAL: return "malformed";
    case -EBADMSG: return "forged";
    case -ETIMEDOUT: return "expired";
    case -ENOKEY: return "no-secret";
    case -ENOSPC: return "too-long";
    default: return err >= 0 ? "ok" : "error";
    }
}

/* A slice of the input. */
struct part {
    const char *p;
    size_t len;
};

/*
 * HHHH for the fields under secret: HMAC-SHA1 over the lowercased fields
 * concatenated, the first three digest bytes in base64.  Returns 0 or
 * -EINVAL when the fields are too long.
 */
static int srs_hash(const char *secret, const struct part *f, int nf, char out[SRS_HASH_LEN])
{
    unsigned char in[SRS_INPUT_MAX], md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    size_t n = 0;

    for (int i = 0; i < nf; i++) {
        if (f[i].len > sizeof(in) - n)
            return -EINVAL;
        for (size_t j = 0; j < f[i].len; j++)
            in[n++] = (unsigned char)tolower((unsigned char)f[i].p[j]);
    }
    if (HMAC(EVP_sha1(), secret, (int)strlen(secret), in, n, md, &mdlen) == NULL || mdlen < 3)
        return -EINVAL;
    out[0] = b64[md[0] >> 2];
    out[1] = b64[((md[0] & 0x03) << 4) | (md[1] >> 4)];
    out[2] = b64[((md[1] & 0x0f) << 2) | (md[2] >> 6)];
    out[3] = b64[md[2] & 0x3f];
    return 0;
}

/*
 * Check a hash from an address against every secret.  Like libsrs2: at
 * least SRS_HASH_LEN characters, only the first SRS_HASH_LEN compared, and
 * case-insensitively.  Returns 0, -EINVAL (too short) or -EBADMSG.
 */
static int srs_hash_check(const struct srs *srs, struct part hash, const struct part *f, int nf)
{
    char want[SRS_HASH_LEN];

    if (hash.len < SRS_HASH_LEN)
        return -EINVAL;
    for (size_t i = 0; i < srs->nsecrets; i++) {
        unsigned diff = 0;
        if (srs_hash(srs->secrets[i], f, nf, want) < 0)
            return -EINVAL;
        for (size_t j = 0; j < SRS_HASH_LEN; j++)
            diff |= (unsigned)(tolower((unsigned char)hash.p[j]) ^
                               tolower((unsigned char)want[j]));
        if (diff == 0)
            return 0;
    }
    return -EBADMSG;
}

static void stamp_make(time_t now, char out[2])
{
    uint64_t day = (uint64_t)(now < 0 ? 0 : now) / SRS_DAY;
    out[0] = b32[(day >> 5) & 31];
    out[1] = b32[day & 31];
}

/* Returns 0, -EINVAL (not two base32 characters) or -ETIMEDOUT. */
static int stamp_check(const struct srs *srs, struct part stamp, time_t now)
{
    unsigned then = 0, maxage = srs->max_age ? srs->max_age : SRS_MAX_AGE_DEFAULT;
    uint64_t today;

    if (stamp.len != 2)
        return -EINVAL;
    for (size_t i = 0; i < 2; i++) {
        const char *c = memchr(b32, toupper((unsigned char)stamp.p[i]), 32);
        if (c == NULL || stamp.p[i] == '\0')
            return -EINVAL;
        then = (then << 5) | (unsigned)(c - b32);
    }
    today = ((uint64_t)(now < 0 ? 0 : now) / SRS_DAY) % SRS_TIME_SLOTS;
    while (today < then)
        today += SRS_TIME_SLOTS;
    return today <= (uint64_t)then + maxage ? 0 : -ETIMEDOUT;
}

/* Split s at its first '=' into head and the rest; false if there is none
 * or head would be empty. */
static bool split_eq(struct part s, struct part *head, struct part *rest)
{
    const char *eq = memchr(s.p, '=', s.len);
    if (eq == NULL || eq == s.p)
        return false;
    head->p = s.p;
    head->len = (size_t)(eq - s.p);
    rest->p = eq + 1;
    rest->len = s.len - head->len - 1;
    return true;
}

/* A domain (or address literal) that becomes a '='-separated field, or an
 * address's domain on reversal: no '=', '@', blank or control character. */
static bool host_ok(struct part h)
{
    for (size_t i = 0; i < h.len; i++) {
        unsigned char c = (unsigned char)h.p[i];
        if (c <= ' ' || c == '=' || c == '@' || c == 0x7f)
            return false;
    }
    return h.len > 0;
}

/* What follows the first hop in an SRS1 address: the rest of an SRS0 local
 * part after "SRS0", so a separator and more. */
static bool srs1_tail_ok(struct part tail)
{
    return tail.len > 1 && (tail.p[0] == '=' || tail.p[0] == '+' || tail.p[0] == '-');
}

/* An output buffer that remembers running out of room. */
struct out {
    char *p;
    size_t cap, len;
    bool full;
};

static void out_add(struct out *o, const char *s, size_t len)
{
    if (o->full || len >= o->cap - o->len) {
        o->full = true;
        return;
    }
    memcpy(o->p + o->len, s, len);
    o->len += len;
    o->p[o->len] = '\0';
}

static void out_part(struct out *o, struct part s) { out_add(o, s.p, s.len); }
static void out_str(struct out *o, const char *s) { out_add(o, s, strlen(s)); }

static int out_done(struct out *o) { return o->full ? -ENOSPC : (int)o->len; }

int srs_forward(const struct srs *srs, const char *sender, size_t len, const char *domain,
                time_t now, char *out, size_t cap)
{
    const char *at = len ? memrchr(sender, '@', len) : NULL;
    struct out o = {out, cap, 0, cap == 0};
    struct part user, host, dom = {domain, strlen(domain)};
    char hash[SRS_HASH_LEN], sep[2] = {srs->separator ? srs->separator : '=', '\0'};

    if (cap > 0)
        out[0] = '\0';
    if (at == NULL || at == sender || at == sender + len - 1 || dom.len == 0 ||
        memchr(sender, '\0', len) != NULL)
        return -EINVAL;
    user = (struct part){sender, (size_t)(at - sender)};
    host = (struct part){at + 1, len - user.len - 1};
    if (!host_ok(host))
        return -EINVAL;
    if (host.len == dom.len && strncasecmp(host.p, dom.p, dom.len) == 0) {
        out_add(&o, sender, len);
        return out_done(&o);
    }
    if (srs->nsecrets == 0)
        return -ENOKEY;

    if (srs_is_srs(user.p, user.len) && user.p[3] == '1') {
        /* SRS1=HHHH=hop1==...: keep hop1 and the rest, sign them again. */
        struct part oldhash, rest, hop, tail;
        struct part body = {user.p + 5, user.len - 5};
        if (!split_eq(body, &oldhash, &rest) || !split_eq(rest, &hop, &tail) || !srs1_tail_ok(tail))
            return -EINVAL;
        struct part f[2] = {hop, tail};
        if (!host_ok(hop) || srs_hash(srs->secrets[0], f, 2, hash) < 0)
            return -EINVAL;
        out_str(&o, "SRS1");
        out_str(&o, sep);
        out_add(&o, hash, SRS_HASH_LEN);
        out_str(&o, "=");
        out_part(&o, hop);
        out_str(&o, "=");
        out_part(&o, tail);
    } else if (srs_is_srs(user.p, user.len)) {
        /* SRS0 at another domain: that domain is the first hop; the rest
         * after "SRS0" (separator included) is kept as it is. */
        struct part tail = {user.p + 4, user.len - 4};
        struct part f[2] = {host, tail};
        if (!srs1_tail_ok(tail) || srs_hash(srs->secrets[0], f, 2, hash) < 0)
            return -EINVAL;
        out_str(&o, "SRS1");
        out_str(&o, sep);
        out_add(&o, hash, SRS_HASH_LEN);
        out_str(&o, "=");
        out_part(&o, host);
        out_str(&o, "=");
        out_part(&o, tail);
    } else {
        char stamp[2];
        stamp_make(now, stamp);
        struct part f[3] = {{stamp, 2}, host, user};
        if (srs_hash(srs->secrets[0], f, 3, hash) < 0)
            return -EINVAL;
        out_str(&o, "SRS0");
        out_str(&o, sep);
        out_add(&o, hash, SRS_HASH_LEN);
        out_str(&o, "=");
        out_add(&o, stamp, 2);
        out_str(&o, "=");
        out_part(&o, host);
        out_str(&o, "=");
        out_part(&o, user);
    }
    out_str(&o, "@");
    out_part(&o, dom);
    return out_done(&o);
}

int srs_reverse(const struct srs *srs, const char *addr, size_t len, time_t now, char *out,
                size_t cap)
{
    const char *at = len ? memrchr(addr, '@', len) : NULL;
    struct part local = {addr, at ? (size_t)(at - addr) : len};
    struct out o = {out, cap, 0, cap == 0};
    int rc;

    if (cap > 0)
        out[0] = '\0';
    if (!srs_is_srs(local.p, local.len) || memchr(addr, '\0', len) != NULL)
        return -EINVAL;
    if (srs->nsecrets == 0)
        return -ENOKEY;
    struct part body = {local.p + 5, local.len - 5}, hash, rest;
    if (!split_eq(body, &hash, &rest))
        return -EINVAL;

    if (local.p[3] == '1') {
        /* SRS1=HHHH=hop1=<rest after SRS0> -> SRS0<rest>@hop1 */
        struct part hop, tail;
        if (!split_eq(rest, &hop, &tail) || !srs1_tail_ok(tail))
            return -EINVAL;
        struct part f[2] = {hop, tail};
        if ((rc = srs_hash_check(srs, hash, f, 2)) < 0)
            return rc;
        out_str(&o, "SRS0");
        out_part(&o, tail);
        out_str(&o, "@");
        out_part(&o, hop);
        return out_done(&o);
    }
    /* SRS0=HHHH=TT=host=user -> user@host */
    struct part stamp, rest2, host, user;
    if (!split_eq(rest, &stamp, &rest2) || !split_eq(rest2, &host, &user) || user.len == 0)
        return -EINVAL;
    struct part f[3] = {stamp, host, user};
    if ((rc = srs_hash_check(srs, hash, f, 3)) < 0)
        return rc;
    if ((rc = stamp_check(srs, stamp, now)) < 0)
        return rc;
    out_part(&o, user);
    out_str(&o, "@");
    out_part(&o, host);
    return out_done(&o);
}
