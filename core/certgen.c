/* SPDX-License-Identifier: MIT */
/*
 * certgen.c - self-signed certificate and key for `ortoo init` (see
 * certgen.h).
 *
 * The certificate follows RFC 5280: version 3 (4.1.2.1), a positive random
 * serial of at most 20 octets (4.1.2.2), issuer equal to subject
 * (self-issued, 6.1), the host name in subjectAltName (4.2.1.6; CN is kept
 * for old clients), basicConstraints CA:FALSE (4.2.1.9), keyUsage
 * digitalSignature, the right one for an ECDSA key in TLS (4.2.1.3).  Files
 * are written through a temporary name and rename(2) so that a crash leaves
 * either the old file or the new one, never half of one.
 */
#include "core/certgen.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "io/text.h"

#define CERTGEN_DAYS 3652       /* ten years, leap days included */
#define CERTGEN_CN_MAX 64       /* RFC 5280 ub-common-name */
#define CERTGEN_SERIAL_BYTES 16 /* RFC 5280 4.1.2.2: at most 20 octets */

/* The earliest queued OpenSSL error as text; drains the queue. */
static const char *crypto_err(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();

    if (e == 0)
        snprintf(buf, len, "unknown crypto error");
    else
        ERR_error_string_n(e, buf, len);
    ERR_clear_error();
    return buf;
}

/* RFC 1123 2.1 host names (labels of letters, digits and '-', not at a
 * label's ends); '_' is tolerated as in many real host names.  Keeping to
 * these characters also keeps the extension strings below unambiguous. */
static bool hostname_ok(const char *h)
{
    size_t len = strlen(h), label = 0;

    if (len == 0 || len > 253 || h[0] == '.' || h[len - 1] == '.')
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = h[i];
        if (ch == '.') {
            if (label == 0 || h[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_'))
            return false;
        if (ch == '-' && label == 0)
            return false;
        if (++label > 63)
            return false;
    }
    return h[len - 1] != '-';
}

/* Add one extension given in OpenSSL's configuration syntax. */
static int add_ext(X509 *x, int nid, const char *value)
{
    X509V3_CTX v3;
    X509_EXTENSION *ext;
    int ok;

    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (ext == NULL)
        return -1;
    ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok == 1 ? 0 : -1;
}

/* A random positive serial (RFC 5280 4.1.2.2). */
static int set_serial(X509 *x)
{
    unsigned char raw[CERTGEN_SERIAL_BYTES];
    BIGNUM *bn;
    int ret = -1;

    if (RAND_bytes(raw, sizeof raw) != 1)
        return -1;
    raw[0] &= 0x7f; /* positive in DER */
    raw[0] |= 0x01; /* and never zero */
    bn = BN_bin2bn(raw, sizeof raw, NULL);
    if (bn != NULL && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL)
        ret = 0;
    BN_free(bn);
    return ret;
}

static X509 *cert_make(EVP_PKEY *key, const char *hostname)
{
    X509 *x = X509_new();
    X509_NAME *name;
    char san[300];
    const char *cn = strlen(hostname) <= CERTGEN_CN_MAX ? hostname : "ortoo self-signed";

    if (x == NULL)
        return NULL;
    if (strcmp(hostname, "localhost") == 0)
        snprintf(san, sizeof san, "DNS:%s,IP:127.0.0.1,IP:::1", hostname);
    else
        snprintf(san, sizeof san, "DNS:%s", hostname);
    name = X509_get_subject_name(x);
    if (X509_set_version(x, X509_VERSION_3) != 1 || set_serial(x) < 0 ||
        X509_gmtime_adj(X509_getm_notBefore(x), -3600) == NULL || /* clock skew */
        X509_time_adj_ex(X509_getm_notAfter(x), CERTGEN_DAYS, 0, NULL) == NULL ||
        X509_set_pubkey(x, key) != 1 ||
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1,
                                   0) != 1 ||
        X509_set_issuer_name(x, name) != 1 ||
        add_ext(x, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
        add_ext(x, NID_key_usage, "critical,digitalSignature") < 0 ||
        add_ext(x, NID_ext_key_usage, "serverAuth,clientAuth") < 0 ||
        add_ext(x, NID_subject_key_identifier, "hash") < 0 ||
        add_ext(x, NID_subject_alt_name, san) < 0 || X509_sign(x, key, EVP_sha256()) <= 0) {
        X509_free(x);
        return NULL;
    }
    return x;
}

/* Write the bytes held by mem to dir/name through a synced temporary file
 * and rename(2).  Returns 0 or -errno. */
static int file_replace(const char *dir, const char *name, BIO *mem, mode_t mode, char *err,
                        size_t errlen)
{
    char path[PATH_MAX], tmp[PATH_MAX];
    char *data;
    long len = BIO_get_mem_data(mem, &data);
    int fd = -1, ret;

    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path ||
        (size_t)snprintf(tmp, sizeof tmp, "%s/.%s.XXXXXX", dir, name) >= sizeof tmp) {
        text_seterr(err, errlen, "%s: path too long", dir);
        return -ENAMETOOLONG;
    }
    fd = mkstemp(tmp); /* mode 0600 from the start: the key is never exposed */
    if (fd < 0) {
        ret = -errno;
        text_seterr(err, errlen, "%s: %s", tmp, strerror(errno));
        return ret;
    }
    for (long off = 0; off < len;) {
        ssize_t w = write(fd, data + off, (size_t)(len - off));
        if (w < 0) {
            if (errno == EINTR)
                continue;
            goto fail;
        }
        off += w;
    }
    if (fchmod(fd, mode) != 0 || fsync(fd) != 0)
        goto fail;
    if (close(fd) != 0) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0)
        goto fail;
    return 0;

fail:
    ret = -errno;
    text_seterr(err, errlen, "%s: %s", path, strerror(errno));
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return ret;
}

/* Make the renames durable. */
static int dir_sync(const char *dir, char *err, size_t errlen)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int ret = 0;

    if (fd < 0 || fsync(fd) != 0) {
        ret = -errno;
        text_seterr(err, errlen, "%s: %s", dir, strerror(errno));
    }
    if (fd >= 0)
        close(fd);
    return ret;
}

int certgen_selfsigned(const char *dir, const char *hostname, char *err, size_t errlen)
{
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    BIO *kmem = NULL, *cmem = NULL;
    char ebuf[256];
    int ret;

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (hostname == NULL || !hostname_ok(hostname)) {
        text_seterr(err, errlen, "invalid host name \"%s\"", hostname ? hostname : "(null)");
        return -EINVAL;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        ret = -errno;
        text_seterr(err, errlen, "%s: %s", dir, strerror(errno));
        return ret;
    }

    ERR_clear_error();
    ret = -EIO;
    key = EVP_EC_gen("P-256");
    if (key == NULL) {
        text_seterr(err, errlen, "cannot make an ECDSA P-256 key: %s",
                    crypto_err(ebuf, sizeof ebuf));
        goto fail;
    }
    cert = cert_make(key, hostname);
    if (cert == NULL) {
        text_seterr(err, errlen, "cannot make the certificate: %s", crypto_err(ebuf, sizeof ebuf));
        goto fail;
    }
    kmem = BIO_new(BIO_s_secmem()); /* the key's PEM is cleared on free */
    cmem = BIO_new(BIO_s_mem());
    /* PEM_write_bio_PrivateKey writes PKCS#8 ("BEGIN PRIVATE KEY"). */
    if (kmem == NULL || cmem == NULL ||
        PEM_write_bio_PrivateKey(kmem, key, NULL, NULL, 0, NULL, NULL) != 1 ||
        PEM_write_bio_X509(cmem, cert) != 1) {
        text_seterr(err, errlen, "cannot encode PEM: %s", crypto_err(ebuf, sizeof ebuf));
        goto fail;
    }
    /* The key first: a crash in between leaves a new key with an old chain,
     * which the TLS loader reports as a mismatch rather than serving it. */
    ret = file_replace(dir, "privkey.pem", kmem, 0600, err, errlen);
    if (ret == 0)
        ret = file_replace(dir, "fullchain.pem", cmem, 0644, err, errlen);
    if (ret == 0)
        ret = dir_sync(dir, err, errlen);

fail:
    BIO_free(kmem);
    BIO_free(cmem);
    X509_free(cert);
    EVP_PKEY_free(key);
    ERR_clear_error();
    return ret;
}
