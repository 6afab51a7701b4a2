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

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "io/log.h"

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
#define TLS_CLIENT_CACHE 16
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

/* A remembered client session for one server name. */
struct client_session {
    char *sni;         /* lower-case name ("" when none was sent); owned */
    SSL_SESSION *sess; /* one reference owned; NULL when the slot is free */
};

/*
 * Client state.  Invariants: cache entries with sess != NULL have distinct
 * names; the cache is read and written only under lock (a client may be
 * shared by reactors).
 */
struct tls_client {
    SSL_CTX *ctx; /* owned */
    bool verify;  /* peer chain and name checked */
    pthread_mutex_t lock;
    struct client_session cache[TLS_CLIENT_CACHE];
    unsigned next_victim; /* round-robin replacement when the cache is full */
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
};

/* Format into err (may be NULL), never overflowing. */
__attribute__((format(printf, 3, 4))) static void err_set(char *err, size_t errlen,
                                                          const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
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
        err_set(err, errlen, "%s: path too long", dir);
        return NULL;
    }
    ERR_clear_error();
    ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL || ctx_common(ctx) < 0) {
        err_set(err, errlen, "%s: cannot make a TLS context: %s", dir,
                ssl_errstr(ebuf, sizeof ebuf));
        goto fail;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, chain) != 1) {
        err_set(err, errlen, "%s: %s", chain, ssl_errstr(ebuf, sizeof ebuf));
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        err_set(err, errlen, "%s: %s", key, ssl_errstr(ebuf, sizeof ebuf));
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        err_set(err, errlen, "%s does not match %s: %s", key, chain,
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
        err_set(err, errlen, "%s: %s", dir, ssl_errstr(ebuf, sizeof ebuf));
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
        err_set(err, errlen, "%s: cannot set the number of session tickets", dir);
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
        err_set(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&s->lock, NULL);
    atomic_init(&s->refs, 1);
    if (ticket_key_make(&s->keys[0]) < 0) {
        err_set(err, errlen, "cannot make a session ticket key");
        goto fail;
    }

    d = opendir(cert_dir);
    if (d == NULL) {
        err_set(err, errlen, "%s: %s", cert_dir, strerror(errno));
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
            err_set(err, errlen, "%s/%s: missing", dir,
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
                err_set(err, errlen, "out of memory");
                goto fail;
            }
            s->hosts = n;
            cap = ncap;
        }
        s->hosts[s->nhosts].ctx = ctx;
        s->hosts[s->nhosts].name = strdup(de->d_name);
        if (s->hosts[s->nhosts].name == NULL) {
            SSL_CTX_free(ctx);
            err_set(err, errlen, "out of memory");
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
        err_set(err, errlen, "%s: no certificate (expected <host>/fullchain.pem and "
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

/* ---- client context ------------------------------------------------- */

/* A ticket or session arrived: keep the newest one per server name.
 * Returns 1 when the reference was kept, 0 otherwise. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct tls_conn *c = SSL_get_app_data(ssl);
    struct tls_client *cl;
    const char *key;
    struct client_session *slot = NULL;
    char *name;

    if (c == NULL || c->client == NULL || !SSL_SESSION_is_resumable(sess))
        return 0;
    cl = c->client;
    key = c->sni != NULL ? c->sni : "";
    name = strdup(key);
    if (name == NULL)
        return 0;
    pthread_mutex_lock(&cl->lock);
    for (unsigned i = 0; i < TLS_CLIENT_CACHE && slot == NULL; i++)
        if (cl->cache[i].sess != NULL && strcasecmp(cl->cache[i].sni, key) == 0)
            slot = &cl->cache[i];
    for (unsigned i = 0; i < TLS_CLIENT_CACHE && slot == NULL; i++)
        if (cl->cache[i].sess == NULL)
            slot = &cl->cache[i];
    if (slot == NULL) {
        slot = &cl->cache[cl->next_victim];
        cl->next_victim = (cl->next_victim + 1) % TLS_CLIENT_CACHE;
    }
    if (slot->sess != NULL)
        SSL_SESSION_free(slot->sess);
    free(slot->sni);
    slot->sni = name;
    slot->sess = sess;
    pthread_mutex_unlock(&cl->lock);
    return 1;
}

struct tls_client *tls_client_new(bool verify, char *err, size_t errlen)
{
    struct tls_client *c;
    char ebuf[TLS_ERR_LEN];

    c = calloc(1, sizeof *c);
    if (c == NULL) {
        err_set(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&c->lock, NULL);
    c->verify = verify;
    ERR_clear_error();
    c->ctx = SSL_CTX_new(TLS_client_method());
    if (c->ctx == NULL || ctx_common(c->ctx) < 0) {
        err_set(err, errlen, "cannot make a TLS client context: %s",
                ssl_errstr(ebuf, sizeof ebuf));
        goto fail;
    }
    if (verify) {
        if (SSL_CTX_set_default_verify_paths(c->ctx) != 1) {
            err_set(err, errlen, "cannot load the system CA store: %s",
                    ssl_errstr(ebuf, sizeof ebuf));
            goto fail;
        }
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_NONE, NULL);
    }
    /* Sessions live only in our own cache, keyed by server name. */
    SSL_CTX_set_session_cache_mode(c->ctx,
                                   SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(c->ctx, on_new_session);
    return c;

fail:
    tls_client_free(c);
    return NULL;
}

void tls_client_free(struct tls_client *c)
{
    if (c == NULL)
        return;
    for (unsigned i = 0; i < TLS_CLIENT_CACHE; i++) {
        if (c->cache[i].sess != NULL)
            SSL_SESSION_free(c->cache[i].sess);
        free(c->cache[i].sni);
    }
    SSL_CTX_free(c->ctx);
    pthread_mutex_destroy(&c->lock);
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

struct tls_conn *tls_conn_new_client(struct tls_client *cl, const char *sni)
{
    struct tls_conn *c = conn_new(cl->ctx);
    bool ip;

    if (c == NULL)
        return NULL;
    c->client = cl;
    SSL_set_connect_state(c->ssl);
    if (sni == NULL || sni[0] == '\0')
        return c;

    c->sni = strdup(sni);
    if (c->sni == NULL)
        goto fail;
    ip = is_ip_literal(sni);
    if (!ip && SSL_set_tlsext_host_name(c->ssl, sni) != 1)
        goto fail;
    if (cl->verify) {
        X509_VERIFY_PARAM *p = SSL_get0_param(c->ssl);
        /* BoringSSL: a zero length poisons the parameters; pass strlen. */
        if ((ip ? X509_VERIFY_PARAM_set1_ip_asc(p, sni)
                : X509_VERIFY_PARAM_set1_host(p, sni, strlen(sni))) != 1)
            goto fail;
    }
    pthread_mutex_lock(&cl->lock);
    for (unsigned i = 0; i < TLS_CLIENT_CACHE; i++) {
        if (cl->cache[i].sess != NULL && strcasecmp(cl->cache[i].sni, sni) == 0) {
            SSL_set_session(c->ssl, cl->cache[i].sess); /* takes its own reference */
            break;
        }
    }
    pthread_mutex_unlock(&cl->lock);
    return c;

fail:
    ERR_clear_error();
    tls_conn_free(c);
    return NULL;
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
    if (c->client != NULL && c->client->verify && vr != X509_V_OK) {
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

    ERR_clear_error();
    r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        conn_flush(c);
        return TLS_OK;
    }
    ret = conn_result(c, r);
    if (ret == TLS_CLOSED) {
        c->failed = true;
        snprintf(c->err, sizeof c->err, "peer closed during the handshake");
        ret = TLS_ERR;
    }
    return ret;
}

ssize_t tls_conn_read(struct tls_conn *c, void *buf, size_t len)
{
    int r;

    if (len == 0)
        return TLS_AGAIN;
    ERR_clear_error();
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

        ERR_clear_error();
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

const char *tls_conn_error(const struct tls_conn *c)
{
    return c->err[0] != '\0' ? c->err : "no error";
}
