/* SPDX-License-Identifier: MIT */
/*
 * sign.h - DKIM signing of one message as it is received (RFC 6376, RFC 8463).
 *
 * The SMTP session opens a signer when a message from an authenticated
 * sender starts, feeds it the message bytes in their stored wire form
 * (CRLF lines, dot-stuffed) as they are appended, and finishes it at the
 * final dot, before handing the message to the spool:
 *
 *   sg = dkim_sign_open(keys, &params);    message starts (DATA / first BDAT)
 *   dkim_sign_feed(sg, bytes, n);          every append, any chunking
 *   dkim_sign_finish(sg, &res);            end of data, before spool_submit
 *   dkim_sign_free(sg);                    end of the transaction
 *
 * Inside: bytes are dot-unstuffed on the fly; the header block (small) is
 * buffered until its empty line, then parsed: the signing domain is the
 * domain of the single From field when the key set has keys for it (DMARC
 * alignment), else the message is not signed.  The body is canonicalized
 * (relaxed) and hashed with SHA-256 as it arrives, without another copy.
 * At finish one signature per key of the domain is made (RSA-SHA256 and/or
 * Ed25519-SHA256), whatever the number of recipients.
 *
 * Signatures use c=relaxed/relaxed, t=, no l=, and h= over the fields of
 * DKIM_SIGN_FIELDS present in the message, From once more than it appears
 * (over-signing: no From can be added without breaking the signature).
 *
 * With params.add_missing (submission, RFC 6409 8.2-8.3) a Date and a
 * Message-ID field are made when the header block lacks them; they are
 * returned to the caller, who sends them ahead of the stored message, and
 * they are signed like the fields of the message.
 *
 * A signer is used by one thread; the key set is shared (see keys.h).
 */
#ifndef ORTOO_DKIM_SIGN_H
#define ORTOO_DKIM_SIGN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dkim_keys;
struct dkim_signer;

/* The fields signed when present, in h= order (lowercase). */
#define DKIM_SIGN_FIELDS                                                                      \
    "from", "to", "cc", "subject", "date", "message-id", "reply-to", "mime-version",           \
        "content-type", "content-transfer-encoding", "in-reply-to", "references",             \
        "list-unsubscribe", "list-unsubscribe-post"

/* The header block is kept in memory until its end; past this it is not
 * parsed and the message is neither signed nor completed. */
#define DKIM_HEADER_MAX (256 * 1024)

struct dkim_sign_params {
    int64_t now;               /* unix time: t= and an added Date */
    bool add_missing;          /* add Date / Message-ID when missing */
    const char *hostname;      /* right-hand side of an added Message-ID */
};

/* What dkim_sign_finish hands back. */
struct dkim_sign_result {
    char *signatures;          /* DKIM-Signature field(s), each CRLF-terminated,
                                  or NULL: not signed (owned by the caller) */
    char *added;               /* Date / Message-ID fields made, CRLF-terminated,
                                  or NULL (owned by the caller) */
    unsigned nsigs;            /* signatures made */
    const char *domain;        /* d= (borrowed from the signer) or NULL */
    const char *why_unsigned;  /* static text when not signed, else NULL */
};

/*
 * A signer for one message.  keys may be NULL (no keys: the signer only
 * adds missing fields); the signer takes its own reference.  params is
 * copied (hostname too).  Returns NULL on ENOMEM.  Never blocks.
 */
struct dkim_signer *dkim_sign_open(struct dkim_keys *keys, const struct dkim_sign_params *params);

/*
 * Feed message bytes in stored wire form (borrowed, not kept).  Never
 * fails: a problem (header block too large, out of memory) is remembered and
 * the message is then not signed.  Cheap once the signer knows it will not
 * sign (no From, no key for its domain).
 */
void dkim_sign_feed(struct dkim_signer *sg, const char *data, size_t len);

/*
 * The message is complete: make the signatures.  Fills *res (see struct
 * dkim_sign_result).  Returns 0, or -ENOMEM / -EIO (a signing failure: the
 * caller answers 4xx rather than send mail its domain would not vouch for).
 * CPU-bound: one RSA signature is ~0.3 ms, Ed25519 ~25 us.  Called once.
 */
int dkim_sign_finish(struct dkim_signer *sg, struct dkim_sign_result *res);

/* Free the signer (NULL is a no-op); drops its key set reference. */
void dkim_sign_free(struct dkim_signer *sg);

#endif
