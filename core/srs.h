/* SPDX-License-Identifier: MIT */
/*
 * srs.h - the Sender Rewriting Scheme, as libsrs2 and postsrsd write it.
 *
 * Mail that ortoo forwards to a remote address keeps a sender at someone
 * else's domain; the receiving side's SPF check of that sender against our
 * address fails.  SRS rewrites the envelope sender into an address at our
 * domain that only we can make, and that a bounce can be reversed from:
 *
 *   SRS0=HHHH=TT=orig.domain=orig.local@our.domain
 *   SRS1=HHHH=hop1.domain==HHHH=TT=orig.domain=orig.local@our.domain
 *
 * TT is the day (days since the epoch mod 1024) in two base32 characters;
 * HHHH is the first four base64 characters of HMAC-SHA1, keyed with the
 * secret, over the lowercased concatenation of TT, orig.domain and
 * orig.local (SRS0), or of hop1.domain and the rest after "SRS0" (SRS1).
 * A sender that is already SRS0 at another domain becomes SRS1 (the chain
 * stays one hop long); an SRS1 sender is re-signed for our domain.
 * The separator after SRS0/SRS1 may be '=', '+' or '-'; the fields are
 * always split by '='.  Hashes compare case-insensitively (some hops
 * lowercase local parts), timestamps decode case-insensitively.
 *
 * Pure functions over caller buffers; no allocation, no I/O, thread-safe.
 * HMAC-SHA1 comes from OpenSSL (libsodium has no SHA-1).
 */
#ifndef ORTOO_SRS_H
#define ORTOO_SRS_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define SRS_HASH_LEN 4          /* base64 characters of the HMAC kept */
#define SRS_MAX_AGE_DEFAULT 21  /* days a rewritten address stays valid */

/*
 * The keys and parameters.  Borrowed by every call; the caller keeps the
 * strings alive.  secrets[0] signs; every secret verifies (so a secret can
 * be rotated without breaking bounces to addresses made with the old one).
 */
struct srs {
    const char *const *secrets;   /* NUL-terminated secrets, used as HMAC keys */
    size_t nsecrets;              /* 0: SRS is off (every call fails -ENOKEY) */
    unsigned max_age;             /* days; 0 means SRS_MAX_AGE_DEFAULT */
    char separator;               /* written after SRS0/SRS1: '=' (0 means '='), '+', '-' */
};

/* True when the local part local[0..len) looks like an SRS address:
 * "SRS0" or "SRS1" (any case) followed by '=', '+' or '-'. */
bool srs_is_srs(const char *local, size_t len);

/*
 * Rewrite sender (len bytes, "local@domain") for mail forwarded by us from
 * domain (our SRS domain, e.g. the local domain whose alias forwarded).
 * Writes the NUL-terminated result into out[cap] and returns its length, or:
 *   -EINVAL   sender has no '@', a NUL, an empty local part or domain, a domain
 *             with '=', a blank or a control character, or is a malformed
 *             SRS0/SRS1 address;
 *   -ENOKEY   no secret;
 *   -ENOSPC   out is too small.
 * A sender already at domain (case-insensitive) is copied unchanged.  The
 * null sender cannot be rewritten: callers keep "<>" as it is.
 * now: the current time (time(NULL)); a parameter so tests can fix it.
 * out must not overlap sender.
 */
int srs_forward(const struct srs *srs, const char *sender, size_t len, const char *domain,
                time_t now, char *out, size_t cap);

/*
 * Reverse an SRS address addr (len bytes; "local@domain" or the local part
 * alone: the domain is ignored).  Writes the address the bounce goes to into
 * out[cap] and returns its length: for SRS0 the original sender, for SRS1
 * the SRS0 address at the first hop.  Errors:
 *   -EINVAL     not an SRS address, or malformed (missing fields, a bad
 *               timestamp character);
 *   -EBADMSG    the hash does not match any secret (forged);
 *   -ETIMEDOUT  SRS0 timestamp older than max_age days (or in the future);
 *   -ENOKEY     no secret;
 *   -ENOSPC     out is too small.
 * out must not overlap addr.
 */
int srs_reverse(const struct srs *srs, const char *addr, size_t len, time_t now, char *out,
                size_t cap);

/* A short word for an srs_reverse()/srs_forward() error, for logs
 * ("forged", "expired", "malformed", ...). */
const char *srs_strerror(int err);

#endif
