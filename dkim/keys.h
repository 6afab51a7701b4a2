/* SPDX-License-Identifier: MIT */
/*
 * keys.h - DKIM private keys: the per-domain key set the signer uses, key
 * generation, and the DNS records that publish the public halves.
 *
 * Layout: <config>/domains/<domain>/dkim/<selector>.key holds a private key
 * in PEM (PKCS#8 as `ortoo dkim keygen` writes it; the traditional RSA form
 * is read too) and <selector>.txt the TXT record to publish.  RSA (1024 bits
 * or more; keygen makes 2048) and Ed25519 (RFC 8463).  Every key of a domain
 * signs: a domain with an RSA and an Ed25519 key gets both signatures, and
 * while a key is rotated the old and the new selector both sign.
 *
 * A key set is loaded once, at start and at reload (parsing PEM costs
 * hundreds of microseconds under OpenSSL 3: never per message), and is
 * immutable afterwards, so reactor threads share it.  It is reference
 * counted: the server, every reactor and every signer in flight hold a
 * reference, so a reload can swap sets while messages are being signed.
 */
#ifndef ORTOO_DKIM_KEYS_H
#define ORTOO_DKIM_KEYS_H

#include <stdbool.h>
#include <stddef.h>

enum dkim_algo {
    DKIM_ALGO_RSA = 0,          /* a=rsa-sha256, k=rsa */
    DKIM_ALGO_ED25519,          /* a=ed25519-sha256, k=ed25519 (RFC 8463) */
};

#define DKIM_SELECTOR_MAX 63    /* one DNS label's worth (we allow dots too) */
#define DKIM_KEYS_PER_DOMAIN 8  /* a bound: more is a mistake */
#define DKIM_SIG_MAX 512        /* signature bytes of an RSA-4096 key */

struct dkim_key;
struct dkim_keys;

/*
 * Load the keys under config_dir/domains/<domain>/dkim/ (only_domain != NULL: that
 * domain's only).  A missing domains/ or dkim/ directory is no key.  Fails
 * (-1 with a message naming the file) on an unreadable or unusable key, a
 * bad selector file name, or more than DKIM_KEYS_PER_DOMAIN keys.  A key
 * file readable by others is loaded with a warning.  Blocking.  On success
 * *out holds one reference.
 */
int dkim_keys_load(const char *config_dir, const char *only_domain, struct dkim_keys **out,
                   char *err, size_t errlen);
/* Add a reference (thread-safe). */
struct dkim_keys *dkim_keys_ref(struct dkim_keys *ks);
/* Drop a reference (thread-safe); the last one frees.  NULL is a no-op. */
void dkim_keys_free(struct dkim_keys *ks);

/* Keys and domains in the set. */
size_t dkim_keys_count(const struct dkim_keys *ks);
size_t dkim_keys_domain_count(const struct dkim_keys *ks);

/*
 * The i-th key (0-based) of domain[0..len) (ASCII, any case), or NULL past
 * the last.  Keys of a domain are ordered RSA first, then by selector.
 * Borrowed from the set.
 */
const struct dkim_key *dkim_keys_get(const struct dkim_keys *ks, const char *domain, size_t len,
                                     size_t i);

enum dkim_algo dkim_key_algo(const struct dkim_key *k);
const char *dkim_key_selector(const struct dkim_key *k);
/* "rsa-sha256" / "ed25519-sha256" (the a= tag) and "rsa" / "ed25519" (k=). */
const char *dkim_algo_sig_name(enum dkim_algo a);
const char *dkim_algo_key_type(enum dkim_algo a);

/*
 * Sign the SHA-256 hash of the canonicalized header data: RSASSA-PKCS1-v1_5
 * for RSA (RFC 6376 3.3.1), PureEdDSA over the 32-byte hash for Ed25519
 * (RFC 8463 3).  sig must hold DKIM_SIG_MAX bytes; *siglen gets the length.
 * Thread-safe (the key is only read).  Returns 0 or -EIO / -ENOMEM.
 */
int dkim_key_sign(const struct dkim_key *k, const unsigned char hash[32], unsigned char *sig,
                  size_t *siglen);

/* The TXT record value, "v=DKIM1; k=rsa; p=<base64>" (RFC 6376 3.6.1;
 * p= of Ed25519 is the raw 32-byte key, RFC 8463 4.2).  Returns owned text
 * or NULL (ENOMEM). */
char *dkim_key_record(const struct dkim_key *k);

/*
 * Make a new key: RSA-2048 or Ed25519.  *pem gets the private key in PKCS#8
 * PEM and *record the TXT record value (both owned).  Blocking (RSA key
 * generation takes a fraction of a second).  Returns 0 or -1 with err.
 */
int dkim_keygen(enum dkim_algo algo, char **pem, char **record, char *err, size_t errlen);

/*
 * A TXT record value in DNS presentation form: quoted strings of at most
 * 255 bytes each, separated by one space (RFC 1035 3.3.14; a resolver joins
 * them back without separator, RFC 6376 3.6.2.2).  Returns owned text or
 * NULL (ENOMEM).
 */
char *dkim_txt_quote(const char *value);

/* SHA-256 as an OpenSSL EVP_MD fetched once for the process (an implicit
 * fetch per use costs a lookup and a lock in OpenSSL 3).  Thread-safe. */
struct evp_md_st;
const struct evp_md_st *dkim_sha256(void);

/* True if s[0..len) is a usable selector: dot-separated labels of letters,
 * digits and inner hyphens (RFC 6376 3.1), at most DKIM_SELECTOR_MAX. */
bool dkim_selector_valid(const char *s, size_t len);

#endif
