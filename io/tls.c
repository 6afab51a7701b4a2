/* SPDX-License-Identifier: MIT */
/*
 * tls.c - TLS over memory BIOs for a completion loop (see tls.h).
 *
 * Each connection owns one SSL whose read BIO receives the ciphertext the
 * owner got from the socket (tls_conn_feed) and whose write BIO collects the
 * ciphertext to send (tls_conn_take_out).  Nothing here blocks or touches a
 * socket, so the io_uring and epoll backends share it.
 *
 * Server side: one SSL_CTX per certificate directory <cert_dir>/<host>/.
 * Every connection starts on the default context; the SNI callback
 * (RFC 6066 3) moves it to the context whose host name equals the requested
 * one, case-insensitively (RFC 4343).  Session tickets (RFC 5077, and the
 * TLS 1.3 tickets of RFC 8446 4.6.1) are sealed with our own keys: a current
 * key seals and opens, the previous one only opens and asks for a renewed
 * ticket, so a key rotation never breaks resumption for clients that came
 * back within one rotation period.  TLS 1.2 clients without tickets resume
 * through the server session cache.
 *
 * Client side: a context for ortoo's own outbound connections, optionally
 * verifying the chain against the system store and the SNI name, with a
 * small in-memory session cache keyed by that name.
 *
 * Only API common to OpenSSL 3 and BoringSSL is used; the few places where
 * the two differ are marked with OPENSSL_IS_BORINGSSL.
 */

/* The ticket key callback (with HMAC_CTX) is deprecated in OpenSSL 3 but is
 * the one both libraries share; ask OpenSSL for the 1.1 API level so that it
 * is declared without deprecation warnings.  BoringSSL ignores this. */
#define OPENSSL_API_COMPAT 0x10100000L

#include "io/tls.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "io/log.h"
#include "io/metrics.h"
#include "io/text.h"

/* TLS 1.2 suites: forward secrecy and AEAD first, then ECDHE with CBC for
 * old peers (opportunistic SMTP TLS is better than plaintext, RFC 7435).
 * TLS 1.3 suites stay at the library defaults. */
#define TLS_CIPHERS_12 "ECDHE+AESGCM:ECDHE+CHACHA20:ECDHE+AES:!aNULL:!eNULL:!MD5:!RC4:!3DES"

/* Session id context: the same for every host context, so the session
 * cache of the default context serves them all. */
static const unsigned char TLS_SID_CTX[] = "ortoo";

#define TLS_TICKET_NAME_LEN 16
#define TLS_TICKET_HMAC_LEN 32
#define TLS_TICKET_AES_LEN 32
#define TLS_ERR_LEN 256
#define TLS_CHUNK (1 << 30) /* largest length handed to an int-sized API */
#define TLS_NUM_TICKETS 1     /* TLS 1.3 tickets sent after a full handshake */

/* One ticket key.  A valid key has a random name that no other live key
 * shares (16 random bytes: collisions are not a concern). */
struct ticket_key {
    unsigned char name[TLS_TICKET_NAME_LEN]; /* sent in clear inside the ticket */
    unsigned char hmac[TLS_TICKET_HMAC_LEN]; /* HMAC-SHA256 key */
    unsigned char aes[TLS_TICKET_AES_LEN];   /* AES-256-CBC key */
    bool valid;                              /* false until generated */
};

/* One certificate directory. */
struct tls_host {
    char *name;   /* lower-case directory name; owned */
    SSL_CTX *ctx; /* one reference owned */
};

/*
 * Server state.  Invariants: nhosts >= 1; hosts[def] is the default
 * context, on which every connection starts; every ctx has this struct as
 * its app data; keys[cur] is always valid; keys[cur ^ 1] is the previous
 * key when valid.  keys and cur are read and written only under lock.
 */
struct tls_server {
    struct tls_host *hosts; /* sorted by name; owned */
    size_t nhosts;          /* entries in hosts */
    size_t def;             /* index of the default host */
    pthread_mutex_t lock;   /* guards keys and cur */
    struct ticket_key keys[2];
    unsigned cur; /* index of the current key in keys */
    atomic_uint refs; /* owners + connections made from it (tls_server_ref) */
};

/*
 * A cached client session.  Invariant: it is in exactly one hash chain
 * (bucket of its key's hash) and in the LRU list; sess holds one reference.
 */
struct client_session {
    char *key;                         /* full cache key; owned */
    uint64_t hash;                     /* of key */
    SSL_SESSION *sess;                 /* one reference owned */
    time_t expires;                    /* dropped at or after this time */
    struct client_session *hnext;      /* bucket chain */
    struct client_session *prev, *next; /* LRU list, most recent first */
};

/*
 * Client state (one thread).  Invariants: ncached entries, all distinct
 * keys, ncached <= cache_max; nbuckets is a power of two.
 */
struct tls_client {
    SSL_CTX *ctx;                      /* owned */
    bool verify;                       /* tls_conn_new_client: PKIX */
    size_t cache_max;                  /* entries kept at most */
    unsigned cache_ttl;                /* seconds */
    struct client_session **buckets;   /* hash table; owned */
    size_t nbuckets;
    struct client_session *lru_head, *lru_tail;
    size_t ncached;
};

/*
 * One connection.  Invariant: ssl owns in and out; client is non-NULL
 * exactly in client mode; err is always a NUL-terminated string.
 */
struct tls_conn {
    SSL *ssl;                  /* owned */
    BIO *in;                   /* ciphertext from the peer, owned by ssl */
    BIO *out;                  /* ciphertext to send, owned by ssl */
    struct tls_client *client; /* client mode: borrowed, outlives the conn */
    struct tls_server *server; /* server mode: one reference held */
    char *sni;                 /* client mode: name sent, or NULL; owned */
    bool shutdown_sent;        /* close_notify already queued */
    bool failed;               /* a call returned TLS_ERR */
    char err[TLS_ERR_LEN];     /* last failure */

    /* Client mode only. */
    enum tls_verify verify;    /* what the verify callback checks */
    char *cache_key;           /* session cache key, NULL: no resumption; owned */
    char **names;              /* reference identifiers; owned */
    size_t nnames;
    struct tls_tlsa *tlsa;     /* DANE RRset, data copied; owned */
    size_t ntlsa;
    bool verified;             /* the verify callback accepted the server */
    const char *dane_match;    /* "DANE-EE" / "DANE-TA" after a DANE match */
    char verify_err[TLS_ERR_LEN]; /* why the callback refused, "" if it did not */
};

/*
 * Empty the thread's error queue before an SSL call whose result goes
 * through SSL_get_error (which reads the queue).  Peeking first: clearing
 * walks every slot of the queue and the queue is almost always empty, and
 * this runs before every record read or written.
 */
static inline void err_reset(void)
{
    if (ERR_peek_error() != 0)
        ERR_clear_error();
}

/* The earliest error of this thread's OpenSSL queue as text; drains it. */
static const char *ssl_errstr(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();

    if (e == 0) {
        snprintf(buf, len, "unknown TLS error");
        return buf;
    }
    ERR_error_string_n(e, buf, len);
    ERR_clear_error();
    return buf;
}

/* ---- ticket keys ---------------------------------------------------- */

static int ticket_key_make(struct ticket_key *k)
{
    if (RAND_bytes(k->name, sizeof k->name) != 1 || RAND_bytes(k->hmac, sizeof k->hmac) != 1 ||
        RAND_bytes(k->aes, sizeof k->aes) != 1)
        return -EIO;
    k->valid = true;
    return 0;
}

/*
 * Seal or open a session ticket (RFC 5077 4's recommended construction:
 * AES-256-CBC then HMAC-SHA256, done by the library with our keys).
 * Returns, per SSL_CTX_set_tlsext_ticket_key_cb: when sealing 1 or -1; when
 * opening 0 (unknown key: full handshake), 1 (current key) or 2 (previous
 * key, or any TLS 1.3 ticket: the library issues a fresh ticket under the
 * current key).
 */
static int on_ticket_key(SSL *ssl, unsigned char *name, unsigned char *iv,
                         EVP_CIPHER_CTX *cctx, HMAC_CTX *hctx, int enc)
{
    struct tls_server *s = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    struct ticket_key k;
    int ret = 0;

    if (s == NULL)
        return enc ? -1 : 0;
    k.valid = false;
    pthread_mutex_lock(&s->lock);
    if (enc) {
        k = s->keys[s->cur];
        ret = 1;
    } else {
        for (unsigned i = 0; i < 2; i++) {
            const struct ticket_key *cand = &s->keys[s->cur ^ i];
            if (cand->valid && memcmp(cand->name, name, TLS_TICKET_NAME_LEN) == 0) {
                k = *cand;
                ret = i == 0 ? 1 : 2;
                break;
            }
        }
        /* TLS 1.3: always renew.  Clients use a ticket once (RFC 8446
         * C.4; OpenSSL's client drops it after use) and OpenSSL's server
         * only sends a new one on a resumed handshake when asked to
         * (checked with OpenSSL 3.0: returning 1 here sends no ticket, and
         * the client's next connection is a full handshake). */
        if (ret == 1 && SSL_version(ssl) >= TLS1_3_VERSION)
            ret = 2;
    }
    pthread_mutex_unlock(&s->lock);
    if (!k.valid)
        return enc ? -1 : 0;

    if (enc) {
        memcpy(name, k.name, TLS_TICKET_NAME_LEN);
        if (RAND_bytes(iv, EVP_CIPHER_iv_length(EVP_aes_256_cbc())) != 1 ||
            EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) != 1)
            ret = -1;
    } else if (EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) != 1) {
        ret = 0;
    }
    if (ret > 0 && HMAC_Init_ex(hctx, k.hmac, sizeof k.hmac, EVP_sha256(), NULL) != 1)
        ret = enc ? -1 : 0;
    OPENSSL_cleanse(&k, sizeof k);
    return ret;
}

void tls_server_rotate_tickets(struct tls_server *s)
{
    struct ticket_key k;

    if (ticket_key_make(&k) < 0) {
        log_warnx("event=tls-ticket-rotate-failed (keeping the current key)");
        return;
    }
    pthread_mutex_lock(&s->lock);
    /* The old previous key is dropped; the current one becomes previous. */
    s->keys[s->cur ^ 1] = k;
    s->cur ^= 1;
    pthread_mutex_unlock(&s->lock);
    OPENSSL_cleanse(&k, sizeof k);
}

/* ---- server contexts ------------------------------------------------ */

/* RFC 6066 3: pick the context named by the client; unknown or absent
 * names keep the default certificate (SMTP clients rarely verify, and a
 * certificate is still better than an alert). */
static int on_servername(SSL *ssl, int *alert, void *arg)
{
    struct tls_server *s = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

    if (name == NULL)
        return SSL_TLSEXT_ERR_OK;
    for (size_t i = 0; i < s->nhosts; i++) {
        if (strcasecmp(s->hosts[i].name, name) == 0) {
            if (SSL_get_SSL_CTX(ssl) != s->hosts[i].ctx)
                SSL_set_SSL_CTX(ssl, s->hosts[i].ctx);
            break;
        }
    }
    return SSL_TLSEXT_ERR_OK;
}

/* Settings shared by server and client contexts. */
static int ctx_common(SSL_CTX *ctx)
{
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(ctx, TLS_CIPHERS_12) != 1)
        return -1;
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    /* Idle connections give back their record buffers (OpenSSL; BoringSSL
     * manages buffers this way already). */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    return 0;
}

/* Build the context of one host directory; on failure says which file. */
static SSL_CTX *host_ctx_new(struct tls_server *s, const char *dir, char *err, size_t errlen)
{
    char chain[PATH_MAX], key[PATH_MAX], ebuf[TLS_ERR_LEN];
    SSL_CTX *ctx = NULL;
    X509 *leaf;

    if ((size_t)snprintf(chain, sizeof chain, "%s/fullchain.pem", dir) >= sizeof chain ||
        (size_t)snprintf(key, sizeof key, "%s/privkey.pem", dir) >= sizeof key) {
        text_seterr(err, errlen, "%s: path too long", dir);
        return NULL;
    }
    ERR_clear_error();
    ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL || ctx_common(ctx) < 0) {
        text_seterr(err, errlen, "%s: cannot make a TLS context: %s", dir,
                    ssl_errstr(ebuf, sizeof ebuf));
        goto fail;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, chain) != 1) {
        text_seterr(err, errlen, "%s: %s", chain, ssl_errstr(ebuf, sizeof ebuf));
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        text_seterr(err, errlen, "%s: %s", key, ssl_errstr(ebuf, sizeof ebuf));
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        text_seterr(err, errlen, "%s does not match %s: %s", key, chain,
                    ssl_errstr(ebuf, sizeof ebuf));
        goto fail;
    }
    leaf = SSL_CTX_get0_certificate(ctx);
    if (leaf != NULL && X509_cmp_current_time(X509_get0_notAfter(leaf)) < 0)
        log_warnx("event=tls-cert-expired file=%s (serving it anyway)", chain);

    SSL_CTX_set_app_data(ctx, s);
    /* RFC 5077 / RFC 8446 4.6.1 tickets under our rotating keys, and a
     * server-side cache for TLS 1.2 clients that resume by session id. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    if (SSL_CTX_set_session_id_context(ctx, TLS_SID_CTX, sizeof TLS_SID_CTX - 1) != 1) {
        text_seterr(err, errlen, "%s: %s", dir, ssl_errstr(ebuf, sizeof ebuf));
        goto fail;
    }
    SSL_CTX_set_tlsext_ticket_key_cb(ctx, on_ticket_key);
    /* One TLS 1.3 ticket after a full handshake instead of the libraries'
     * two: a client uses a ticket once (RFC 8446 C.4) and gets a fresh one
     * with every resumption (on_ticket_key renews), so one is enough for
     * a client that reconnects serially; a second ticket only helps a
     * client that opens parallel connections right after its first full
     * handshake.  Each ticket costs the server about 8% of a full
     * handshake (18 of 236 us measured with OpenSSL 3.0, ECDSA P-256). */
    if (SSL_CTX_set_num_tickets(ctx, TLS_NUM_TICKETS) != 1) {
        text_seterr(err, errlen, "%s: cannot set the number of session tickets", dir);
        goto fail;
    }
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
    return ctx;

fail:
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return NULL;
}

static int host_cmp(const void *a, const void *b)
{
    return strcmp(((const struct tls_host *)a)->name, ((const struct tls_host *)b)->name);
}

static bool file_exists(const char *dir, const char *file)
{
    char path[PATH_MAX];
    struct stat st;

    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, file) >= sizeof path)
        return false;
    return stat(path, &st) == 0;
}

struct tls_server *tls_server_new(const char *cert_dir, const char *default_host, char *err,
                                  size_t errlen)
{
    struct tls_server *s;
    DIR *d = NULL;
    struct dirent *de;
    size_t cap = 0;

    s = calloc(1, sizeof *s);
    if (s == NULL) {
        text_seterr(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&s->lock, NULL);
    atomic_init(&s->refs, 1);
    if (ticket_key_make(&s->keys[0]) < 0) {
        text_seterr(err, errlen, "cannot make a session ticket key");
        goto fail;
    }

    d = opendir(cert_dir);
    if (d == NULL) {
        text_seterr(err, errlen, "%s: %s", cert_dir, strerror(errno));
        goto fail;
    }
    while ((de = readdir(d)) != NULL) {
        char dir[PATH_MAX];
        struct stat st;
        bool has_chain, has_key;
        SSL_CTX *ctx;

        if (de->d_name[0] == '.')
            continue;
        if ((size_t)snprintf(dir, sizeof dir, "%s/%s", cert_dir, de->d_name) >= sizeof dir)
            continue;
        if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
            continue;
        has_chain = file_exists(dir, "fullchain.pem");
        has_key = file_exists(dir, "privkey.pem");
        if (!has_chain && !has_key)
            continue;
        if (!has_chain || !has_key) {
            text_seterr(err, errlen, "%s/%s: missing", dir,
                        has_chain ? "privkey.pem" : "fullchain.pem");
            goto fail;
        }
        ctx = host_ctx_new(s, dir, err, errlen);
        if (ctx == NULL)
            goto fail;
        if (s->nhosts == cap) {
            size_t ncap = cap ? cap * 2 : 4;
            struct tls_host *n = realloc(s->hosts, ncap * sizeof *n);
            if (n == NULL) {
                SSL_CTX_free(ctx);
                text_seterr(err, errlen, "out of memory");
                goto fail;
            }
            s->hosts = n;
            cap = ncap;
        }
        s->hosts[s->nhosts].ctx = ctx;
        s->hosts[s->nhosts].name = strdup(de->d_name);
        if (s->hosts[s->nhosts].name == NULL) {
            SSL_CTX_free(ctx);
            text_seterr(err, errlen, "out of memory");
            goto fail;
        }
        for (char *p = s->hosts[s->nhosts].name; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p - 'A' + 'a');
        s->nhosts++;
    }
    closedir(d);
    d = NULL;

    if (s->nhosts == 0) {
        text_seterr(err, errlen, "%s: no certificate (expected <host>/fullchain.pem and "
                                 "<host>/privkey.pem)", cert_dir);
        goto fail;
    }
    qsort(s->hosts, s->nhosts, sizeof *s->hosts, host_cmp);
    s->def = 0;
    if (default_host != NULL && default_host[0] != '\0') {
        size_t i;
        for (i = 0; i < s->nhosts; i++)
            if (strcasecmp(s->hosts[i].name, default_host) == 0)
                break;
        if (i < s->nhosts)
            s->def = i;
        else
            log_warnx("event=tls-no-default-cert host=%s dir=%s default=%s", default_host,
                      cert_dir, s->hosts[0].name);
    }
    SSL_CTX_set_tlsext_servername_callback(s->hosts[s->def].ctx, on_servername);
    SSL_CTX_set_tlsext_servername_arg(s->hosts[s->def].ctx, s);
    return s;

fail:
    if (d != NULL)
        closedir(d);
    tls_server_free(s);
    return NULL;
}

struct tls_server *tls_server_ref(struct tls_server *s)
{
    atomic_fetch_add(&s->refs, 1);
    return s;
}

void tls_server_free(struct tls_server *s)
{
    if (s == NULL)
        return;
    /* The SNI and ticket callbacks of connections made from s use it until
     * the connection is freed: the last reference frees. */
    if (atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    for (size_t i = 0; i < s->nhosts; i++) {
        SSL_CTX_free(s->hosts[i].ctx);
        free(s->hosts[i].name);
    }
    free(s->hosts);
    OPENSSL_cleanse(s->keys, sizeof s->keys);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

size_t tls_server_count(const struct tls_server *s)
{
    return s->nhosts;
}

/* ---- server authentication (client side) ---------------------------- */

#define TLSA_SHA256_LEN 32
#define TLSA_SHA512_LEN 64

bool tls_tlsa_usable(const struct tls_tlsa *r)
{
    if (r->usage != 2 && r->usage != 3) /* RFC 7672 3.1.3: PKIX-TA/EE unusable */
        return false;
    if (r->selector > 1 || r->data == NULL)
        return false;
    switch (r->mtype) {
    case 0:
        return r->len > 0;
    case 1:
        return r->len == TLSA_SHA256_LEN;
    case 2:
        return r->len == TLSA_SHA512_LEN;
    default:
        return false;
    }
}

/* Does record r match certificate x?  (RFC 6698 2.1.2, 2.1.3) */
static bool tlsa_match(const struct tls_tlsa *r, X509 *x)
{
    unsigned char *der = NULL, *p;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    bool ok = false;
    int len;

    if (r->selector == 0)
        len = i2d_X509(x, NULL);
    else
        len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), NULL);
    if (len <= 0 || (der = malloc((size_t)len)) == NULL)
        goto out;
    p = der;
    if ((r->selector == 0 ? i2d_X509(x, &p) : i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &p)) != len)
        goto out;
    switch (r->mtype) {
    case 0:
        ok = r->len == (size_t)len && CRYPTO_memcmp(r->data, der, r->len) == 0;
        break;
    case 1:
    case 2:
        if (EVP_Digest(der, (size_t)len, md, &mdlen, r->mtype == 1 ? EVP_sha256() : EVP_sha512(),
                       NULL) != 1)
            break;
        ok = r->len == mdlen && CRYPTO_memcmp(r->data, md, mdlen) == 0;
        break;
    default:
        break;
    }
out:
    free(der);
    ERR_clear_error();
    return ok;
}

bool tls_tlsa_match_der(const struct tls_tlsa *r, const unsigned char *der, size_t len)
{
    const unsigned char *p = der;
    if (der == NULL || len == 0 || len > LONG_MAX)
        return false;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    if (x == NULL) {
        ERR_clear_error();
        return false;
    }
    bool ok = tlsa_match(r, x);
    X509_free(x);
    return ok;
}

/* Put c's reference names into p: the first replaces, the rest add. */
static bool param_set_names(const struct tls_conn *c, X509_VERIFY_PARAM *p)
{
    X509_VERIFY_PARAM_set_hostflags(p, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    for (size_t i = 0; i < c->nnames; i++) {
        const char *n = c->names[i];
        /* BoringSSL: a zero length poisons the parameters; pass strlen. */
        int r = i == 0 ? X509_VERIFY_PARAM_set1_host(p, n, strlen(n))
                       : X509_VERIFY_PARAM_add1_host(p, n, strlen(n));
        if (r != 1)
            return false;
    }
    return true;
}

/*
 * DANE-TA (RFC 7672 3.1.2): the leaf must chain, within what the server
 * sent, up to ta (a certificate of that chain matched by a TLSA record),
 * and carry one of the reference names (3.2.2).  0 or an X509_V_ERR_*.
 */
static int dane_ta_verify(const struct tls_conn *c, X509 *ta, X509 *leaf, STACK_OF(X509) *chain)
{
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *v = X509_STORE_CTX_new();
    int ret = X509_V_ERR_UNSPECIFIED;

    if (store == NULL || v == NULL || X509_STORE_add_cert(store, ta) != 1 ||
        X509_STORE_CTX_init(v, store, leaf, chain) != 1)
        goto out;
    X509_STORE_CTX_set_default(v, "ssl_server");
    /* The trust anchor need not be self-signed (an intermediate is fine). */
    X509_VERIFY_PARAM_set_flags(X509_STORE_CTX_get0_param(v), X509_V_FLAG_PARTIAL_CHAIN);
    if (!param_set_names(c, X509_STORE_CTX_get0_param(v)))
        goto out;
    ret = X509_verify_cert(v) == 1 ? 0 : X509_STORE_CTX_get_error(v);
    if (ret == 0 && X509_STORE_CTX_get_error(v) != X509_V_OK)
        ret = X509_STORE_CTX_get_error(v);
out:
    X509_STORE_CTX_free(v);
    X509_STORE_free(store);
    ERR_clear_error();
    return ret;
}

/* RFC 7672 3.1: DANE-EE first (cheapest, and it ignores names and dates),
 * then DANE-TA against every certificate the server sent.  Returns true
 * when one record authenticates the server; else c->verify_err says why. */
static bool dane_verify(struct tls_conn *c, X509 *leaf, STACK_OF(X509) *chain)
{
    int ta_err = 0;

    for (size_t i = 0; i < c->ntlsa; i++) {
        const struct tls_tlsa *r = &c->tlsa[i];
        if (r->usage == 3 && tls_tlsa_usable(r) && tlsa_match(r, leaf)) {
            c->dane_match = "DANE-EE";
            return true;
        }
    }
    for (size_t i = 0; i < c->ntlsa; i++) {
        const struct tls_tlsa *r = &c->tlsa[i];
        if (r->usage != 2 || !tls_tlsa_usable(r))
            continue;
        for (size_t k = 0; chain != NULL && k < (size_t)sk_X509_num(chain); k++) {
            X509 *x = sk_X509_value(chain, k);
            if (!tlsa_match(r, x))
                continue;
            ta_err = dane_ta_verify(c, x, leaf, chain);
            if (ta_err == 0) {
                c->dane_match = "DANE-TA";
                return true;
            }
        }
    }
    if (ta_err != 0)
        snprintf(c->verify_err, sizeof c->verify_err,
                 "DANE: a DANE-TA record matches but the chain fails: %s",
                 X509_verify_cert_error_string(ta_err));
    else
        snprintf(c->verify_err, sizeof c->verify_err,
                 "DANE: no TLSA record matches the server certificate");
    return false;
}

/*
 * The certificate verify callback of client contexts: runs during the
 * handshake, before the client's Finished.  Returns 1 to go on, 0 to abort
 * (the connection's verify mode is SSL_VERIFY_PEER then; NONE never aborts).
 */
static int on_verify(X509_STORE_CTX *sctx, void *arg)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(sctx, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct tls_conn *c = ssl != NULL ? SSL_get_app_data(ssl) : NULL;
    X509 *leaf = X509_STORE_CTX_get0_cert(sctx);
    int ok;

    (void)arg;
    if (c == NULL || leaf == NULL)
        return 0;
    switch (c->verify) {
    case TLS_VERIFY_NONE:
        return 1;
    case TLS_VERIFY_PKIX:
        /* The library's own chain building, with the names set on ssl. */
        ok = X509_verify_cert(sctx) == 1;
        if (!ok)
            snprintf(c->verify_err, sizeof c->verify_err, "certificate verify failed: %s",
                     X509_verify_cert_error_string(X509_STORE_CTX_get_error(sctx)));
        break;
    case TLS_VERIFY_DANE:
        ok = dane_verify(c, leaf, X509_STORE_CTX_get0_untrusted(sctx));
        if (!ok)
            X509_STORE_CTX_set_error(sctx, X509_V_ERR_APPLICATION_VERIFICATION);
        break;
    default:
        ok = false;
        break;
    }
    c->verified = ok;
    ERR_clear_error();
    return ok ? 1 : 0;
}

/* ---- client session cache ------------------------------------------ */

/* FNV-1a: keys are short host names plus a hex digest. */
static uint64_t key_hash(const char *k)
{
    uint64_t h = 1469598103934665603ull;

    for (; *k; k++)
        h = (h ^ (unsigned char)*k) * 1099511628211ull;
    return h;
}

static struct client_session **bucket_of(struct tls_client *cl, uint64_t h)
{
    return &cl->buckets[h & (cl->nbuckets - 1)];
}

static void lru_unlink(struct tls_client *cl, struct client_session *e)
{
    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        cl->lru_head = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    else
        cl->lru_tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push_front(struct tls_client *cl, struct client_session *e)
{
    e->prev = NULL;
    e->next = cl->lru_head;
    if (cl->lru_head != NULL)
        cl->lru_head->prev = e;
    cl->lru_head = e;
    if (cl->lru_tail == NULL)
        cl->lru_tail = e;
}

/* Unlink e from its chain and the LRU list and free it. */
static void cache_drop(struct tls_client *cl, struct client_session *e)
{
    struct client_session **pp = bucket_of(cl, e->hash);

    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    lru_unlink(cl, e);
    SSL_SESSION_free(e->sess);
    free(e->key);
    free(e);
    cl->ncached--;
}

/* The live entry for key, or NULL (an expired one is dropped). */
static struct client_session *cache_find(struct tls_client *cl, const char *key, time_t now)
{
    uint64_t h = key_hash(key);

    for (struct client_session *e = *bucket_of(cl, h); e != NULL; e = e->hnext) {
        if (e->hash == h && strcmp(e->key, key) == 0) {
            if (now >= e->expires) {
                cache_drop(cl, e);
                return NULL;
            }
            return e;
        }
    }
    return NULL;
}

/* Keep sess (its reference is taken) under key until expires. */
static void cache_put(struct tls_client *cl, const char *key, SSL_SESSION *sess, time_t expires)
{
    struct client_session *e = cache_find(cl, key, 0);

    if (e != NULL) {
        SSL_SESSION_free(e->sess);
        e->sess = sess;
        e->expires = expires;
        lru_unlink(cl, e);
        lru_push_front(cl, e);
        return;
    }
    e = calloc(1, sizeof *e);
    if (e == NULL || (e->key = strdup(key)) == NULL) {
        free(e);
        SSL_SESSION_free(sess);
        return;
    }
    e->hash = key_hash(key);
    e->sess = sess;
    e->expires = expires;
    e->hnext = *bucket_of(cl, e->hash);
    *bucket_of(cl, e->hash) = e;
    lru_push_front(cl, e);
    cl->ncached++;
    while (cl->ncached > cl->cache_max)
        cache_drop(cl, cl->lru_tail); /* least recently used out first */
}

size_t tls_client_cached(const struct tls_client *c)
{
    return c->ncached;
}

/* Test seam: the clock of the client session cache (tests move it instead
 * of sleeping past a lifetime). */
time_t (*tls_cache_clock)(time_t *) = time;

/* A session (TLS 1.2) or a ticket (TLS 1.3, after the handshake) arrived:
 * keep it under the connection's key.  Returns 1 when the reference was
 * kept, 0 otherwise. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct tls_conn *c = SSL_get_app_data(ssl);
    struct tls_client *cl;
    time_t now = tls_cache_clock(NULL);
    long life;

    if (c == NULL || c->client == NULL || c->cache_key == NULL || c->failed ||
        !SSL_SESSION_is_resumable(sess))
        return 0;
    /* A handshake that did not pass its checks leaves nothing to resume
     * (the callback refused it and the handshake failed; this is a guard). */
    if (c->verify != TLS_VERIFY_NONE && !c->verified)
        return 0;
    cl = c->client;
    life = (long)cl->cache_ttl;
    if (SSL_SESSION_get_ticket_lifetime_hint(sess) > 0 &&
        (long)SSL_SESSION_get_ticket_lifetime_hint(sess) < life)
        life = (long)SSL_SESSION_get_ticket_lifetime_hint(sess);
    cache_put(cl, c->cache_key, sess, now + life);
    return 1;
}

/* ---- client context ------------------------------------------------- */

struct tls_client *tls_client_new_opts(const struct tls_client_opts *o, char *err, size_t errlen)
{
    struct tls_client *c;
    char ebuf[TLS_ERR_LEN];
    int ok;

    c = calloc(1, sizeof *c);
    if (c == NULL) {
        text_seterr(err, errlen, "out of memory");
        return NULL;
    }
    c->cache_max = o->cache_max ? o->cache_max : TLS_CLIENT_CACHE_MAX;
    c->cache_ttl = o->cache_ttl ? o->cache_ttl : TLS_CLIENT_CACHE_TTL;
    c->nbuckets = 16;
    while (c->nbuckets < c->cache_max && c->nbuckets < (1u << 20))
        c->nbuckets *= 2;
    c->buckets = calloc(c->nbuckets, sizeof *c->buckets);
    if (c->buckets == NULL) {
        text_seterr(err, errlen, "out of memory");
        goto fail;
    }
    ERR_clear_error();
    c->ctx = SSL_CTX_new(TLS_client_method());
    if (c->ctx == NULL || ctx_common(c->ctx) < 0) {
        text_seterr(err, errlen, "cannot make a TLS client context: %s",
                    ssl_errstr(ebuf, sizeof ebuf));
        goto fail;
    }
    if (o->ca_file != NULL)
        ok = SSL_CTX_load_verify_locations(c->ctx, o->ca_file, NULL);
    else
        ok = SSL_CTX_set_default_verify_paths(c->ctx);
    if (ok != 1) {
        text_seterr(err, errlen, "cannot load the CA store %s: %s",
                    o->ca_file ? o->ca_file : "(system)", ssl_errstr(ebuf, sizeof ebuf));
        goto fail;
    }
    /* A delivery connection is busy while it lives: keeping its record
     * buffers saves a malloc/free pair per record. */
    SSL_CTX_clear_mode(c->ctx, SSL_MODE_RELEASE_BUFFERS);
    /* Each connection sets its own mode; the callback does every check. */
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_cert_verify_callback(c->ctx, on_verify, NULL);
    /* Sessions live only in our own cache (TLS 1.3 tickets come after the
     * handshake, through this callback). */
    SSL_CTX_set_session_cache_mode(c->ctx,
                                   SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(c->ctx, on_new_session);
    return c;

fail:
    tls_client_free(c);
    return NULL;
}

struct tls_client *tls_client_new(bool verify, char *err, size_t errlen)
{
    struct tls_client_opts o = {0};
    struct tls_client *c = tls_client_new_opts(&o, err, errlen);

    if (c != NULL)
        c->verify = verify;
    return c;
}

void tls_client_free(struct tls_client *c)
{
    if (c == NULL)
        return;
    while (c->lru_head != NULL)
        cache_drop(c, c->lru_head);
    free(c->buckets);
    SSL_CTX_free(c->ctx);
    free(c);
}

/* ---- connections ---------------------------------------------------- */

/* A connection on ctx with both memory BIOs attached. */
static struct tls_conn *conn_new(SSL_CTX *ctx)
{
    struct tls_conn *c = calloc(1, sizeof *c);

    if (c == NULL)
        return NULL;
    c->ssl = SSL_new(ctx);
    c->in = BIO_new(BIO_s_mem());
    c->out = BIO_new(BIO_s_mem());
    if (c->ssl == NULL || c->in == NULL || c->out == NULL) {
        BIO_free(c->in);
        BIO_free(c->out);
        SSL_free(c->ssl);
        free(c);
        ERR_clear_error();
        return NULL;
    }
    /* An empty input BIO means "retry later", not end of stream. */
    BIO_set_mem_eof_return(c->in, -1);
    BIO_set_mem_eof_return(c->out, -1);
    SSL_set_bio(c->ssl, c->in, c->out);
    SSL_set_app_data(c->ssl, c);
    return c;
}

struct tls_conn *tls_conn_new_server(struct tls_server *s)
{
    struct tls_conn *c = conn_new(s->hosts[s->def].ctx);

    if (c != NULL) {
        SSL_set_accept_state(c->ssl);
        c->server = tls_server_ref(s);
    }
    return c;
}

/* True when name is an IPv4 or IPv6 literal (no SNI for those, RFC 6066 3). */
static bool is_ip_literal(const char *name)
{
    unsigned char buf[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, name, buf) == 1 || inet_pton(AF_INET6, name, buf) == 1;
}

/*
 * The cache key of a connection: the caller's key (lower-cased), the mode,
 * and for PKIX/DANE a SHA-256 over the names and TLSA records, so that only
 * a session made under the same checks resumes (tls.h).
 */
static char *cache_key_make(const struct tls_conn *c, const char *key)
{
    static const char mode_ch[] = {'n', 'p', 'd'};
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    size_t klen = strlen(key), cap = klen + 4 + 2 * EVP_MAX_MD_SIZE + 1;
    char *out = malloc(cap);

    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < klen; i++)
        out[i] = (char)((key[i] >= 'A' && key[i] <= 'Z') ? key[i] - 'A' + 'a' : key[i]);
    out[klen] = '|';
    out[klen + 1] = mode_ch[c->verify];
    out[klen + 2] = '\0';
    if (c->verify != TLS_VERIFY_NONE) {
        EVP_MD_CTX *h = EVP_MD_CTX_new();
        bool ok = h != NULL && EVP_DigestInit_ex(h, EVP_sha256(), NULL) == 1;

        for (size_t i = 0; ok && i < c->nnames; i++)
            ok = EVP_DigestUpdate(h, c->names[i], strlen(c->names[i]) + 1) == 1;
        for (size_t i = 0; ok && i < c->ntlsa; i++) {
            const struct tls_tlsa *r = &c->tlsa[i];
            unsigned char hdr[7] = {r->usage, r->selector, r->mtype, (unsigned char)(r->len >> 24),
                                    (unsigned char)(r->len >> 16), (unsigned char)(r->len >> 8),
                                    (unsigned char)r->len};
            ok = EVP_DigestUpdate(h, hdr, sizeof hdr) == 1 &&
                 EVP_DigestUpdate(h, r->data, r->len) == 1;
        }
        ok = ok && EVP_DigestFinal_ex(h, md, &mdlen) == 1;
        EVP_MD_CTX_free(h);
        if (!ok) {
            free(out);
            ERR_clear_error();
            return NULL;
        }
        out[klen + 2] = '|';
        for (unsigned int i = 0; i < mdlen; i++)
            snprintf(out + klen + 3 + 2 * i, 3, "%02x", md[i]);
    }
    return out;
}

struct tls_conn *tls_conn_new_client_opts(struct tls_client *cl, const struct tls_conn_opts *o)
{
    struct tls_conn *c = conn_new(cl->ctx);
    const char *sni = o->sni != NULL && o->sni[0] != '\0' ? o->sni : NULL;

    if (c == NULL)
        return NULL;
    c->client = cl;
    c->verify = o->verify;
    SSL_set_connect_state(c->ssl);
    if (c->verify != TLS_VERIFY_NONE)
        SSL_set_verify(c->ssl, SSL_VERIFY_PEER, NULL);

    if (sni != NULL) {
        c->sni = strdup(sni);
        if (c->sni == NULL)
            goto fail;
        if (!is_ip_literal(sni) && SSL_set_tlsext_host_name(c->ssl, sni) != 1)
            goto fail;
    }
    /* Reference names: the given ones, else the SNI name. */
    {
        size_t n = o->names != NULL ? o->nnames : (sni != NULL ? 1 : 0);
        c->names = calloc(n ? n : 1, sizeof *c->names);
        if (c->names == NULL)
            goto fail;
        for (size_t i = 0; i < n; i++) {
            c->names[i] = strdup(o->names != NULL ? o->names[i] : sni);
            if (c->names[i] == NULL)
                goto fail;
            c->nnames++;
        }
    }
    if (c->verify == TLS_VERIFY_PKIX) {
        X509_VERIFY_PARAM *p = SSL_get0_param(c->ssl);
        if (c->nnames == 1 && is_ip_literal(c->names[0])) {
            if (X509_VERIFY_PARAM_set1_ip_asc(p, c->names[0]) != 1)
                goto fail;
        } else if (c->nnames == 0 || !param_set_names(c, p)) {
            snprintf(c->err, sizeof c->err, "no reference name to verify");
            goto fail;
        }
    }
    if (c->verify == TLS_VERIFY_DANE && o->ntlsa > 0) {
        c->tlsa = calloc(o->ntlsa, sizeof *c->tlsa);
        if (c->tlsa == NULL)
            goto fail;
        for (size_t i = 0; i < o->ntlsa; i++) {
            unsigned char *d = malloc(o->tlsa[i].len ? o->tlsa[i].len : 1);
            if (d == NULL)
                goto fail;
            memcpy(d, o->tlsa[i].data, o->tlsa[i].len);
            c->tlsa[i] = o->tlsa[i];
            c->tlsa[i].data = d;
            c->ntlsa++;
        }
    }
    if (o->session_key != NULL) {
        struct client_session *e;

        c->cache_key = cache_key_make(c, o->session_key);
        if (c->cache_key == NULL)
            goto fail;
        e = cache_find(cl, c->cache_key, tls_cache_clock(NULL));
        if (e != NULL) {
            SSL_set_session(c->ssl, e->sess); /* takes its own reference */
            lru_unlink(cl, e);
            lru_push_front(cl, e);
        }
    } else {
        SSL_set_options(c->ssl, SSL_OP_NO_TICKET); /* no resumption: no tickets */
    }
    return c;

fail:
    ERR_clear_error();
    tls_conn_free(c);
    return NULL;
}

struct tls_conn *tls_conn_new_client(struct tls_client *cl, const char *sni)
{
    struct tls_conn_opts o = {
        .sni = sni,
        .session_key = sni != NULL ? sni : "",
        .verify = cl->verify ? TLS_VERIFY_PKIX : TLS_VERIFY_NONE,
    };

    return tls_conn_new_client_opts(cl, &o);
}

void tls_conn_free(struct tls_conn *c)
{
    if (c == NULL)
        return;
    /* OpenSSL marks the session of a connection freed without close_notify
     * as not resumable (both in the server cache and in the client's
     * session object).  SMTP peers routinely QUIT and close without it;
     * RFC 5246 7.2.1 no longer requires dropping the session then, so a
     * connection that completed its handshake and saw no error keeps it.
     * Fatal alerts have already removed theirs. */
    if (!c->failed && SSL_is_init_finished(c->ssl))
        SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(c->ssl); /* frees in and out */
    if (c->server != NULL)
        tls_server_free(c->server); /* after SSL_free: its callbacks are done */
    free(c->sni);
    free(c->cache_key);
    for (size_t i = 0; i < c->nnames; i++)
        free(c->names[i]);
    free(c->names);
    for (size_t i = 0; i < c->ntlsa; i++)
        free((void *)c->tlsa[i].data);
    free(c->tlsa);
    free(c);
}

int tls_conn_feed(struct tls_conn *c, const void *data, size_t len)
{
    const unsigned char *p = data;

    while (len > 0) {
        int n = len > TLS_CHUNK ? TLS_CHUNK : (int)len;
        int w = BIO_write(c->in, p, n);
        if (w != n) {
            c->failed = true;
            snprintf(c->err, sizeof c->err, "cannot buffer input");
            ERR_clear_error();
            return TLS_ERR;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Turn a failed SSL call's result into TLS_AGAIN, TLS_CLOSED or TLS_ERR,
 * keeping the reason of a failure in c->err. */
static int conn_result(struct tls_conn *c, int r)
{
    char ebuf[TLS_ERR_LEN];
    long vr;

    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return TLS_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        ERR_clear_error();
        return TLS_CLOSED;
    case SSL_ERROR_SYSCALL:
        if (ERR_peek_error() == 0) {
            c->failed = true;
            snprintf(c->err, sizeof c->err, "unexpected end of TLS stream");
            return TLS_ERR;
        }
        break;
    default:
        break;
    }
    c->failed = true;
    vr = SSL_get_verify_result(c->ssl);
    if (c->client != NULL && c->verify_err[0] != '\0') {
        snprintf(c->err, sizeof c->err, "%s", c->verify_err);
        ERR_clear_error();
    } else if (c->client != NULL && c->verify != TLS_VERIFY_NONE && vr != X509_V_OK) {
        snprintf(c->err, sizeof c->err, "certificate verify failed: %s",
                 X509_verify_cert_error_string(vr));
        ERR_clear_error();
    } else {
        snprintf(c->err, sizeof c->err, "%s", ssl_errstr(ebuf, sizeof ebuf));
    }
    return TLS_ERR;
}

/* BoringSSL keeps post-handshake messages (TLS 1.3 NewSessionTicket,
 * KeyUpdate acknowledgements) queued until the next SSL_write; a zero-length
 * write flushes them (its ssl.h, SSL_key_update), so that they show in
 * tls_conn_pending_out as they do with OpenSSL. */
static void conn_flush(struct tls_conn *c)
{
#ifdef OPENSSL_IS_BORINGSSL
    if (!c->shutdown_sent && !c->failed && SSL_is_init_finished(c->ssl)) {
        (void)SSL_write(c->ssl, "", 0);
        ERR_clear_error();
    }
#else
    (void)c;
#endif
}

int tls_conn_handshake(struct tls_conn *c)
{
    int r, ret;

    err_reset();
    r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        if (c->client != NULL && c->verify != TLS_VERIFY_NONE && SSL_session_reused(c->ssl) == 1) {
            /* No certificate on a resumed handshake: the session's own was
             * checked under the same mode and references (cache key). */
            c->verified = true;
            if (c->verify == TLS_VERIFY_DANE)
                c->dane_match = "resumed";
        }
        if (c->client != NULL && c->verify != TLS_VERIFY_NONE && !c->verified) {
            /* Guard: the callback runs on every full handshake. */
            c->failed = true;
            snprintf(c->err, sizeof c->err, "server certificate was not checked");
            metrics_tls_handshake(true, false, false);
            return TLS_ERR;
        }
        metrics_tls_handshake(c->client != NULL, true, SSL_session_reused(c->ssl) == 1);
        conn_flush(c);
        return TLS_OK;
    }
    ret = conn_result(c, r);
    if (ret == TLS_CLOSED) {
        c->failed = true;
        snprintf(c->err, sizeof c->err, "peer closed during the handshake");
        ret = TLS_ERR;
    }
    if (ret == TLS_ERR)
        metrics_tls_handshake(c->client != NULL, false, false);
    return ret;
}

ssize_t tls_conn_read(struct tls_conn *c, void *buf, size_t len)
{
    int r;

    if (len == 0)
        return TLS_AGAIN;
#ifndef OPENSSL_IS_BORINGSSL
    /* Nothing fed and nothing buffered: SSL_read could only want more input
     * (OpenSSL counts read but unprocessed records in SSL_has_pending; what
     * it has not read is still in the input BIO).  This is the last call of
     * every read loop. */
    if (BIO_ctrl_pending(c->in) == 0 && !SSL_has_pending(c->ssl) && SSL_is_init_finished(c->ssl))
        return TLS_AGAIN;
#endif
    err_reset();
    r = SSL_read(c->ssl, buf, len > TLS_CHUNK ? TLS_CHUNK : (int)len);
    if (r > 0) {
        conn_flush(c);
        return r;
    }
    r = conn_result(c, r);
    if (r == TLS_AGAIN)
        conn_flush(c);
    return r;
}

ssize_t tls_conn_write(struct tls_conn *c, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    size_t left = len;

    while (left > 0) {
        int n = left > TLS_CHUNK ? TLS_CHUNK : (int)left;
        int r;

        err_reset();
        r = SSL_write(c->ssl, p, n);
        if (r <= 0) {
            /* The output BIO never blocks: wanting I/O here means the
             * handshake is not finished, which the caller must not do. */
            if (conn_result(c, r) != TLS_ERR) {
                c->failed = true;
                snprintf(c->err, sizeof c->err, "write before the handshake completed");
            }
            return TLS_ERR;
        }
        p += r;
        left -= (size_t)r;
    }
    return (ssize_t)len;
}

void tls_conn_shutdown(struct tls_conn *c)
{
    if (c->shutdown_sent || !SSL_is_init_finished(c->ssl))
        return;
    ERR_clear_error();
    (void)SSL_shutdown(c->ssl); /* queues close_notify; the reply is not awaited */
    ERR_clear_error();
    c->shutdown_sent = true;
}

size_t tls_conn_pending_out(const struct tls_conn *c)
{
    return BIO_ctrl_pending(c->out);
}

size_t tls_conn_take_out(struct tls_conn *c, void *buf, size_t cap)
{
    int r;

    if (cap == 0)
        return 0;
    r = BIO_read(c->out, buf, cap > TLS_CHUNK ? TLS_CHUNK : (int)cap);
    return r > 0 ? (size_t)r : 0;
}

const char *tls_conn_version(const struct tls_conn *c)
{
    return SSL_get_version(c->ssl);
}

const char *tls_conn_cipher(const struct tls_conn *c)
{
    const SSL_CIPHER *ci = SSL_get_current_cipher(c->ssl);

    return ci != NULL ? SSL_CIPHER_get_name(ci) : "(none)";
}

const char *tls_conn_sni(const struct tls_conn *c)
{
    if (c->client != NULL)
        return c->sni;
    return SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
}

bool tls_conn_resumed(const struct tls_conn *c)
{
    return SSL_session_reused(c->ssl) == 1;
}

bool tls_conn_verified(const struct tls_conn *c)
{
    return c->client != NULL && c->verified;
}

bool tls_conn_verify_failed(const struct tls_conn *c)
{
    return c->client != NULL && c->verify_err[0] != '\0';
}

const char *tls_conn_dane_match(const struct tls_conn *c)
{
    return c->verify == TLS_VERIFY_DANE && c->verified ? c->dane_match : NULL;
}

const char *tls_conn_error(const struct tls_conn *c)
{
    return c->err[0] != '\0' ? c->err : "no error";
}
