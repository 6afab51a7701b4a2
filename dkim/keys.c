/* SPDX-License-Identifier: MIT */
/*
 * keys.c - DKIM key sets, key generation and DNS records (see keys.h).
 *
 * RSA keys stay OpenSSL EVP_PKEYs, parsed once; signing builds a small
 * EVP_PKEY_CTX per signature over the shared key (OpenSSL 3 allows a key to
 * be used from several threads as long as nobody changes it).  Ed25519 keys
 * are turned into libsodium's 64-byte secret key form at load, because
 * crypto_sign_detached is the fastest Ed25519 signer on this machine
 * (41,000/s against 26,000/s through OpenSSL's EVP).
 *
 * A set is a sorted array of domains, each with its keys (bsearch on the
 * lowercase domain name), plus an atomic reference count.
 */
#include "dkim/keys.h"

#include <ctype.h>
#include <pthread.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <sodium.h>

#include "io/log.h"
#include "io/text.h"

#define DKIM_RSA_MIN_BITS 1024   /* RFC 8301 3.2: verifiers refuse less */
#define DKIM_KEY_FILE_MAX 65536  /* a PEM key is a few KB */

/* One private key.  Invariant: pkey != NULL iff algo == DKIM_ALGO_RSA;
 * ed_sk is meaningful iff algo == DKIM_ALGO_ED25519. */
struct dkim_key {
    enum dkim_algo algo;
    char selector[DKIM_SELECTOR_MAX + 1];
    EVP_PKEY *pkey;                              /* RSA key (owned) */
    unsigned char ed_sk[crypto_sign_SECRETKEYBYTES]; /* Ed25519: seed || public key */
};

/* A domain and its keys (1..DKIM_KEYS_PER_DOMAIN, ordered RSA first, then
 * by selector). */
struct dkim_domain {
    char *name;                                  /* lowercase (owned) */
    struct dkim_key *keys;                       /* owned array */
    size_t nkeys;
};

/* The set.  Invariant: domains[] sorted by name, names distinct, every
 * domain with at least one key.  Immutable once loaded, except refs. */
struct dkim_keys {
    atomic_uint refs;
    struct dkim_domain *domains;
    size_t ndomains;
    size_t nkeys;
};

/* The reason OpenSSL gave last, for messages; clears its error queue. */
static const char *ssl_reason(void)
{
    unsigned long e = ERR_get_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    ERR_clear_error();
    return r != NULL ? r : "unknown error";
}

bool dkim_selector_valid(const char *s, size_t len)
{
    return len <= DKIM_SELECTOR_MAX && text_hostname_check(s, len) == NULL;
}

const char *dkim_algo_sig_name(enum dkim_algo a)
{
    return a == DKIM_ALGO_ED25519 ? "ed25519-sha256" : "rsa-sha256";
}

const char *dkim_algo_key_type(enum dkim_algo a)
{
    return a == DKIM_ALGO_ED25519 ? "ed25519" : "rsa";
}

static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

const EVP_MD *dkim_sha256(void)
{
    pthread_once(&sha256_once, sha256_fetch);
    return sha256_md != NULL ? sha256_md : EVP_sha256();
}

/* ---- one key ---- */

static void key_clear(struct dkim_key *k)
{
    EVP_PKEY_free(k->pkey);
    k->pkey = NULL;
    sodium_memzero(k->ed_sk, sizeof(k->ed_sk));
}

/* Turn a parsed EVP_PKEY into a key (takes pkey).  Returns 0 or -1 with err. */
static int key_from_pkey(struct dkim_key *k, EVP_PKEY *pkey, char *err, size_t errlen)
{
    int id = EVP_PKEY_get_base_id(pkey);

    if (id == EVP_PKEY_RSA) {
        int bits = EVP_PKEY_get_bits(pkey);
        if (bits < DKIM_RSA_MIN_BITS) {
            text_seterr(err, errlen, "RSA key of %d bits: at least %d needed (RFC 8301)", bits,
                        DKIM_RSA_MIN_BITS);
            EVP_PKEY_free(pkey);
            return -1;
        }
        if (EVP_PKEY_get_size(pkey) > DKIM_SIG_MAX) {
            text_seterr(err, errlen, "RSA key of %d bits: at most %d supported", bits,
                        DKIM_SIG_MAX * 8);
            EVP_PKEY_free(pkey);
            return -1;
        }
        k->algo = DKIM_ALGO_RSA;
        k->pkey = pkey;
        return 0;
    }
    if (id == EVP_PKEY_ED25519) {
        unsigned char seed[crypto_sign_SEEDBYTES], pk[crypto_sign_PUBLICKEYBYTES];
        size_t slen = sizeof(seed);
        if (EVP_PKEY_get_raw_private_key(pkey, seed, &slen) != 1 || slen != sizeof(seed)) {
            text_seterr(err, errlen, "cannot read the Ed25519 key: %s", ssl_reason());
            EVP_PKEY_free(pkey);
            return -1;
        }
        crypto_sign_seed_keypair(pk, k->ed_sk, seed);
        sodium_memzero(seed, sizeof(seed));
        EVP_PKEY_free(pkey);
        k->algo = DKIM_ALGO_ED25519;
        return 0;
    }
    text_seterr(err, errlen, "not an RSA or Ed25519 key");
    EVP_PKEY_free(pkey);
    return -1;
}

/* An encrypted key is refused rather than prompted for: without a callback
 * OpenSSL would read a passphrase from the terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    return 0;
}

/* Read and parse one PEM key file.  Returns 0 or -1 with err (no path). */
static int key_load_file(struct dkim_key *k, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    struct stat st;

    if (f == NULL) {
        text_seterr(err, errlen, "%s", strerror(errno));
        return -1;
    }
    if (fstat(fileno(f), &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > DKIM_KEY_FILE_MAX) {
        fclose(f);
        text_seterr(err, errlen, "not a key file (a regular file of at most %d bytes)",
                    DKIM_KEY_FILE_MAX);
        return -1;
    }
    if (st.st_mode & S_IROTH)
        log_warnx("event=dkim-key-readable path=%s (readable by everyone: chmod 600 or 640)",
                  path);
    EVP_PKEY *pkey = PEM_read_PrivateKey(f, NULL, no_passphrase, NULL);
    fclose(f);
    if (pkey == NULL) {
        text_seterr(err, errlen, "not an unencrypted PEM private key (%s)", ssl_reason());
        return -1;
    }
    return key_from_pkey(k, pkey, err, errlen);
}

enum dkim_algo dkim_key_algo(const struct dkim_key *k)
{
    return k->algo;
}

const char *dkim_key_selector(const struct dkim_key *k)
{
    return k->selector;
}

int dkim_key_sign(const struct dkim_key *k, const unsigned char hash[32], unsigned char *sig,
                  size_t *siglen)
{
    if (k->algo == DKIM_ALGO_ED25519) {
        /* RFC 8463 3: PureEdDSA (no prehash) over the SHA-256 output. */
        unsigned long long n = 0;
        crypto_sign_detached(sig, &n, hash, 32, k->ed_sk);
        *siglen = (size_t)n;
        return 0;
    }
    /* RFC 6376 3.3.1: RSASSA-PKCS1-v1_5 with SHA-256 (the DigestInfo is
     * added by the padding, from the md set here). */
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(k->pkey, NULL);
    int rc = -EIO;
    size_t len = DKIM_SIG_MAX;

    if (ctx == NULL)
        return -ENOMEM;
    if (EVP_PKEY_sign_init(ctx) == 1 && EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) == 1 &&
        EVP_PKEY_CTX_set_signature_md(ctx, dkim_sha256()) == 1 &&
        EVP_PKEY_sign(ctx, sig, &len, hash, 32) == 1) {
        *siglen = len;
        rc = 0;
    } else {
        log_warnx("event=dkim-sign-failed selector=%s err=\"%s\"", k->selector, ssl_reason());
    }
    EVP_PKEY_CTX_free(ctx);
    return rc;
}

/* Base64 (no line breaks) of data; owned text or NULL. */
static char *b64(const unsigned char *data, size_t len)
{
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    if (out != NULL)
        EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    return out;
}

/* The record for a public key given as SubjectPublicKeyInfo (RSA) or raw
 * 32 bytes (Ed25519). */
static char *record_make(enum dkim_algo algo, const unsigned char *pub, size_t len)
{
    char *p = b64(pub, len), *rec = NULL;
    if (p == NULL)
        return NULL;
    if (asprintf(&rec, "v=DKIM1; k=%s; p=%s", dkim_algo_key_type(algo), p) < 0)
        rec = NULL;
    free(p);
    return rec;
}

/* The record of an EVP_PKEY public key (RSA or Ed25519). */
static char *record_from_pkey(EVP_PKEY *pkey)
{
    if (EVP_PKEY_get_base_id(pkey) == EVP_PKEY_ED25519) {
        unsigned char pub[32];
        size_t len = sizeof(pub);
        if (EVP_PKEY_get_raw_public_key(pkey, pub, &len) != 1 || len != sizeof(pub))
            return NULL;
        return record_make(DKIM_ALGO_ED25519, pub, len);
    }
    /* RFC 6376 3.6.1: p= is the DER SubjectPublicKeyInfo for RSA. */
    unsigned char *der = NULL;
    int len = i2d_PUBKEY(pkey, &der);
    if (len <= 0)
        return NULL;
    char *rec = record_make(DKIM_ALGO_RSA, der, (size_t)len);
    OPENSSL_free(der);
    return rec;
}

char *dkim_key_record(const struct dkim_key *k)
{
    if (k->algo == DKIM_ALGO_ED25519) /* libsodium: the public key ends the secret key */
        return record_make(DKIM_ALGO_ED25519, k->ed_sk + crypto_sign_SEEDBYTES,
                           crypto_sign_PUBLICKEYBYTES);
    return record_from_pkey(k->pkey);
}

int dkim_keygen(enum dkim_algo algo, char **pem, char **record, char *err, size_t errlen)
{
    EVP_PKEY *pkey = algo == DKIM_ALGO_ED25519 ? EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")
                                               : EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    BIO *bio = NULL;
    int rc = -1;

    *pem = *record = NULL;
    if (pkey == NULL) {
        text_seterr(err, errlen, "key generation failed: %s", ssl_reason());
        return -1;
    }
    bio = BIO_new(BIO_s_mem());
    if (bio == NULL || PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL) != 1) {
        text_seterr(err, errlen, "cannot write the key: %s", ssl_reason());
        goto out;
    }
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    *pem = malloc((size_t)n + 1);
    *record = record_from_pkey(pkey);
    if (*pem == NULL || *record == NULL) {
        text_seterr(err, errlen, "out of memory");
        goto out;
    }
    memcpy(*pem, data, (size_t)n);
    (*pem)[n] = '\0';
    rc = 0;
out:
    if (rc < 0) {
        free(*pem);
        free(*record);
        *pem = *record = NULL;
    }
    BIO_free(bio);
    EVP_PKEY_free(pkey);
    return rc;
}

char *dkim_txt_quote(const char *value)
{
    size_t len = strlen(value), o = 0;
    /* Each piece: 2 quotes + a space; no character needs escaping in a
     * DKIM record (base64 and "v=DKIM1; k=..."), but '"' and '\' are
     * escaped anyway so any value stays valid. */
    char *out = malloc(len * 2 + (len / 255 + 1) * 3 + 1);
    size_t piece = 0;

    if (out == NULL)
        return NULL;
    out[o++] = '"';
    for (size_t i = 0; i < len; i++) {
        if (piece == 255) {
            out[o++] = '"';
            out[o++] = ' ';
            out[o++] = '"';
            piece = 0;
        }
        if (value[i] == '"' || value[i] == '\\')
            out[o++] = '\\';
        out[o++] = value[i];
        piece++;
    }
    out[o++] = '"';
    out[o] = '\0';
    return out;
}

/* ---- the set ---- */

static int domain_cmp(const void *a, const void *b)
{
    return strcmp(((const struct dkim_domain *)a)->name, ((const struct dkim_domain *)b)->name);
}

static int key_cmp(const void *a, const void *b)
{
    const struct dkim_key *x = a, *y = b;
    if (x->algo != y->algo)
        return x->algo == DKIM_ALGO_RSA ? -1 : 1;
    return strcmp(x->selector, y->selector);
}

static void domain_clear(struct dkim_domain *d)
{
    for (size_t i = 0; i < d->nkeys; i++)
        key_clear(&d->keys[i]);
    free(d->keys);
    free(d->name);
}

/*
 * Load domains/<name>/dkim/ into a new entry of ks when it holds keys.
 * Returns 0 (also when there is no dkim/ directory) or -1 with err.
 */
static int domain_load(struct dkim_keys *ks, size_t *cap, const char *ddir, const char *name,
                       char *err, size_t errlen)
{
    char dir[PATH_MAX], path[PATH_MAX], why[256];
    struct dkim_domain d = {0};
    DIR *dh;
    struct dirent *de;

    if (snprintf(dir, sizeof(dir), "%s/%s/dkim", ddir, name) >= (int)sizeof(dir)) {
        text_seterr(err, errlen, "%s/%s/dkim: path too long", ddir, name);
        return -1;
    }
    dh = opendir(dir);
    if (dh == NULL) {
        if (errno == ENOENT)
            return 0;
        text_seterr(err, errlen, "%s: %s", dir, strerror(errno));
        return -1;
    }
    while ((errno = 0, de = readdir(dh)) != NULL) {
        size_t nlen = strlen(de->d_name);
        if (de->d_name[0] == '.' || nlen <= 4 || strcmp(de->d_name + nlen - 4, ".key") != 0)
            continue;
        if (!dkim_selector_valid(de->d_name, nlen - 4)) {
            text_seterr(err, errlen, "%s/%s: the file name must be <selector>.key with a selector "
                        "of letters, digits, hyphens and dots", dir, de->d_name);
            goto fail;
        }
        if (d.nkeys == DKIM_KEYS_PER_DOMAIN) {
            text_seterr(err, errlen, "%s: more than %d keys", dir, DKIM_KEYS_PER_DOMAIN);
            goto fail;
        }
        if (d.keys == NULL) {
            d.keys = calloc(DKIM_KEYS_PER_DOMAIN, sizeof(*d.keys));
            if (d.keys == NULL)
                goto oom;
        }
        struct dkim_key *k = &d.keys[d.nkeys];
        if (snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >= (int)sizeof(path)) {
            text_seterr(err, errlen, "%s/%s: path too long", dir, de->d_name);
            goto fail;
        }
        if (key_load_file(k, path, why, sizeof(why)) < 0) {
            text_seterr(err, errlen, "%s: %s", path, why);
            goto fail;
        }
        memcpy(k->selector, de->d_name, nlen - 4);
        k->selector[nlen - 4] = '\0';
        d.nkeys++;
    }
    if (errno != 0) {
        text_seterr(err, errlen, "%s: %s", dir, strerror(errno));
        goto fail;
    }
    closedir(dh);
    if (d.nkeys == 0) {
        free(d.keys);
        return 0;
    }
    qsort(d.keys, d.nkeys, sizeof(*d.keys), key_cmp);
    d.name = strdup(name);
    if (d.name == NULL) {
        domain_clear(&d);
        text_seterr(err, errlen, "out of memory");
        return -1;
    }
    for (char *p = d.name; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    if (ks->ndomains == *cap) {
        size_t ncap = *cap ? *cap * 2 : 8;
        struct dkim_domain *nd = realloc(ks->domains, ncap * sizeof(*nd));
        if (nd == NULL) {
            domain_clear(&d);
            text_seterr(err, errlen, "out of memory");
            return -1;
        }
        ks->domains = nd;
        *cap = ncap;
    }
    ks->domains[ks->ndomains++] = d;
    ks->nkeys += d.nkeys;
    return 0;
oom:
    text_seterr(err, errlen, "out of memory");
fail:
    closedir(dh);
    domain_clear(&d);
    return -1;
}

int dkim_keys_load(const char *config_dir, const char *only_domain, struct dkim_keys **out,
                   char *err, size_t errlen)
{
    struct dkim_keys *ks = calloc(1, sizeof(*ks));
    char ddir[PATH_MAX];
    size_t cap = 0;
    DIR *dh = NULL;
    struct dirent *de;

    *out = NULL;
    if (ks == NULL) {
        text_seterr(err, errlen, "out of memory");
        return -1;
    }
    atomic_init(&ks->refs, 1);
    if (sodium_init() < 0) { /* Ed25519 keys go through libsodium */
        text_seterr(err, errlen, "libsodium failed to initialise");
        goto fail;
    }
    if (snprintf(ddir, sizeof(ddir), "%s/domains", config_dir) >= (int)sizeof(ddir)) {
        text_seterr(err, errlen, "%s/domains: path too long", config_dir);
        goto fail;
    }
    if (only_domain != NULL) {
        if (domain_load(ks, &cap, ddir, only_domain, err, errlen) < 0)
            goto fail;
        goto done;
    }
    dh = opendir(ddir);
    if (dh == NULL) {
        if (errno == ENOENT)
            goto done;
        text_seterr(err, errlen, "%s: %s", ddir, strerror(errno));
        goto fail;
    }
    while ((errno = 0, de = readdir(dh)) != NULL) {
        /* Names that are not domains are users_load's to report. */
        if (de->d_name[0] == '.' || text_hostname_check(de->d_name, strlen(de->d_name)) != NULL)
            continue;
        if (domain_load(ks, &cap, ddir, de->d_name, err, errlen) < 0)
            goto fail;
    }
    if (errno != 0) {
        text_seterr(err, errlen, "%s: %s", ddir, strerror(errno));
        goto fail;
    }
done:
    if (dh != NULL)
        closedir(dh);
    if (ks->ndomains > 1)
        qsort(ks->domains, ks->ndomains, sizeof(*ks->domains), domain_cmp);
    for (size_t i = 1; i < ks->ndomains; i++) {
        if (strcmp(ks->domains[i - 1].name, ks->domains[i].name) == 0) {
            text_seterr(err, errlen, "%s: domain %s appears twice (names differ only in case)",
                        ddir,
                        ks->domains[i].name);
            dh = NULL;
            goto fail;
        }
    }
    *out = ks;
    return 0;
fail:
    if (dh != NULL)
        closedir(dh);
    dkim_keys_free(ks);
    return -1;
}

struct dkim_keys *dkim_keys_ref(struct dkim_keys *ks)
{
    atomic_fetch_add(&ks->refs, 1);
    return ks;
}

void dkim_keys_free(struct dkim_keys *ks)
{
    if (ks == NULL || atomic_fetch_sub(&ks->refs, 1) != 1)
        return;
    for (size_t i = 0; i < ks->ndomains; i++)
        domain_clear(&ks->domains[i]);
    free(ks->domains);
    free(ks);
}

size_t dkim_keys_count(const struct dkim_keys *ks)
{
    return ks->nkeys;
}

size_t dkim_keys_domain_count(const struct dkim_keys *ks)
{
    return ks->ndomains;
}

const struct dkim_key *dkim_keys_get(const struct dkim_keys *ks, const char *domain, size_t len,
                                     size_t i)
{
    char name[256];

    if (ks == NULL || ks->ndomains == 0 || len == 0 || len >= sizeof(name))
        return NULL;
    for (size_t j = 0; j < len; j++)
        name[j] = (char)tolower((unsigned char)domain[j]);
    name[len] = '\0';
    struct dkim_domain key = {.name = name};
    const struct dkim_domain *d =
        bsearch(&key, ks->domains, ks->ndomains, sizeof(*ks->domains), domain_cmp);
    if (d == NULL || i >= d->nkeys)
        return NULL;
    return &d->keys[i];
}
