/* SPDX-License-Identifier: MIT */
/*
 * tls.h - TLS on top of a completion loop, through memory BIOs.
 *
 * The connection owner receives ciphertext from the socket and feeds it in
 * (tls_conn_feed), drives the handshake, reads plaintext out, writes
 * plaintext in, and takes ciphertext out to send (tls_conn_take_out).  No
 * socket is touched here, so the same code serves io_uring and epoll.
 *
 * Server contexts load <cert_dir>/<hostname>/{fullchain.pem,privkey.pem} for
 * every hostname directory, choose by SNI (default: the configured
 * hostname, else the first), allow TLS 1.2 and 1.3 only, and issue session
 * tickets whose keys rotate (current + previous accepted).
 *
 * Only API shared by OpenSSL 3 and BoringSSL is used:
 * `make TLS=boringssl check-tls` builds and tests this file against
 * Debian's android-libboringssl-dev.
 */
#ifndef ORTOO_TLS_H
#define ORTOO_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct tls_server;
struct tls_conn;

/* TLS_AGAIN is negative so that it never reads as a byte count. */
enum { TLS_OK = 0, TLS_ERR = -1, TLS_CLOSED = -2, TLS_AGAIN = -3 };

/*
 * Load every certificate under cert_dir (one subdirectory per hostname).
 * default_host: the name served when SNI is absent or unknown.  Returns NULL
 * with a message in err when nothing usable is found or a pair is broken.
 * Blocking (start-up and reload only).  Thread-safe to use from several
 * reactors once built (SSL_CTX is refcounted and internally locked).
 */
struct tls_server *tls_server_new(const char *cert_dir, const char *default_host,
                                  char *err, size_t errlen);
/* Reference counting: tls_server_new returns one reference, every server
 * connection holds one until tls_conn_free, tls_server_ref adds one and
 * tls_server_free drops one (the last frees).  Thread-safe. */
struct tls_server *tls_server_ref(struct tls_server *s);
void tls_server_free(struct tls_server *s);
/* Generate a new ticket key; the previous one stays valid for decryption.
 * Thread-safe. */
void tls_server_rotate_tickets(struct tls_server *s);
/* Number of certificates (hostnames) loaded. */
size_t tls_server_count(const struct tls_server *s);

/*
 * Client side (outbound delivery, `ortoo send`, benchmarks).
 *
 * A client context holds the SSL_CTX (TLS 1.2+, the PKIX trust store) and a
 * cache of sessions for resumption.  It belongs to one thread (one per
 * reactor): neither the context nor its cache takes a lock.
 *
 * The session cache is bounded (cache_max entries, least recently used out
 * first) and every entry expires (after cache_ttl seconds, or sooner when
 * the server's ticket lifetime hint says so).  Sessions are stored from the
 * library's new-session callback (SSL_SESS_CACHE_CLIENT | NO_INTERNAL_STORE):
 * TLS 1.3 tickets arrive after the handshake, so a connection must read
 * what the server sends after its Finished (an SMTP client does: the EHLO
 * reply comes after the tickets) before it closes, or nothing is stored.
 * The cache key is the caller's key (the MX host) combined with the
 * verification mode and, for PKIX and DANE, a digest of the reference names
 * and TLSA records: a session made under weaker checks never resumes a
 * connection that demands stronger ones (a resumed handshake shows no
 * certificate to check).
 */
struct tls_client;

struct tls_client_opts {
    const char *ca_file; /* PKIX trust anchors (PEM); NULL: the system store */
    size_t cache_max;    /* sessions kept; 0: TLS_CLIENT_CACHE_MAX */
    unsigned cache_ttl;  /* seconds a session is kept at most; 0: TLS_CLIENT_CACHE_TTL */
};
#define TLS_CLIENT_CACHE_MAX 1024
#define TLS_CLIENT_CACHE_TTL 3600

/* Build a client context.  Blocking (reads the CA store): start-up and
 * reload only.  NULL with a message in err on failure. */
struct tls_client *tls_client_new_opts(const struct tls_client_opts *o, char *err,
                                       size_t errlen);
/* The simple form: verify true checks every connection with PKIX against
 * the system store and the SNI name (tls_conn_new_client). */
struct tls_client *tls_client_new(bool verify, char *err, size_t errlen);
/* Free the context and its cached sessions; its connections must be freed. */
void tls_client_free(struct tls_client *c);
/* Sessions currently cached (tests, stats). */
size_t tls_client_cached(const struct tls_client *c);

/* How a client connection checks the server. */
enum tls_verify {
    TLS_VERIFY_NONE = 0, /* encrypt only (opportunistic TLS, RFC 7435) */
    TLS_VERIFY_PKIX,     /* chain to the context's trust store + a name match */
    TLS_VERIFY_DANE,     /* a TLSA record matches (RFC 7672 3.1) */
};

/* One TLSA record (RFC 6698 2.1): the data is borrowed. */
struct tls_tlsa {
    unsigned char usage;    /* 2 DANE-TA, 3 DANE-EE (0, 1: unusable for SMTP) */
    unsigned char selector; /* 0 full certificate, 1 SubjectPublicKeyInfo */
    unsigned char mtype;    /* 0 exact, 1 SHA-256, 2 SHA-512 */
    const unsigned char *data;
    size_t len;
};

/*
 * Whether an SMTP client can use the record (RFC 7672 3.1, 3.1.3): usage
 * DANE-TA(2) or DANE-EE(3), selector 0 or 1, matching type 0, 1 or 2 with
 * a digest of the right length.  PKIX-TA(0) and PKIX-EE(1) are unusable
 * for SMTP (RFC 7672 3.1.3).  When every record of an RRset is unusable the
 * client encrypts without authentication (RFC 7672 2.2): the caller then
 * connects with TLS_VERIFY_NONE, TLS still mandatory.
 */
bool tls_tlsa_usable(const struct tls_tlsa *r);

/*
 * Whether record r matches the certificate der[0..len) (DER): the full
 * certificate or its SubjectPublicKeyInfo (selector), exact or hashed
 * (matching type), RFC 6698 2.1.2-2.1.3.  Usage is not looked at: the
 * caller decides which certificate of a chain a usage applies to.  False
 * also when der does not parse.  For `ortoo doctor`, which checks the
 * server's own certificate against its published TLSA records.
 */
bool tls_tlsa_match_der(const struct tls_tlsa *r, const unsigned char *der, size_t len);

/* Options of one client connection; everything is copied. */
struct tls_conn_opts {
    const char *sni;              /* server name sent (RFC 6066 3); NULL: none */
    const char *session_key;      /* resumption cache key; NULL: no resumption */
    enum tls_verify verify;
    const char *const *names;     /* reference identifiers for PKIX and DANE-TA
                                     (RFC 7672 3.2.2: TLSA base domain, MX
                                     host); NULL: the sni alone */
    size_t nnames;
    const struct tls_tlsa *tlsa;  /* DANE: the TLSA RRset */
    size_t ntlsa;
};

/*
 * Check the server during the handshake (a certificate verify callback, so
 * that a failure aborts the handshake with an alert before our Finished):
 *  - NONE: nothing (any certificate, expired or self-signed, is accepted);
 *  - PKIX: the chain against the context's store and one of the names;
 *  - DANE: a usable DANE-EE(3) record matching the leaf certificate (no
 *    name or validity check, RFC 7672 3.1.1), or a usable DANE-TA(2)
 *    record matching a certificate of the chain the server sent, the leaf
 *    then verified up to that certificate with a name check against the
 *    names (RFC 7672 3.1.2, 3.2.2; validity dates checked).  Done here
 *    from the peer certificates, not with OpenSSL's DANE API, which
 *    BoringSSL lacks.
 * A failure makes tls_conn_handshake return TLS_ERR, tls_conn_error saying
 * why ("DANE: ...", "certificate verify failed: ...").
 */
struct tls_conn *tls_conn_new_client_opts(struct tls_client *c, const struct tls_conn_opts *o);

/* After the handshake: whether the server was authenticated (PKIX or DANE,
 * on this handshake or the one of the resumed session), and for DANE which
 * kind of record matched ("DANE-EE", "DANE-TA"; "resumed" when the session
 * was resumed; NULL otherwise). */
bool tls_conn_verified(const struct tls_conn *c);
const char *tls_conn_dane_match(const struct tls_conn *c);
/* After a failed handshake: true when the server's certificate failed the
 * connection's checks (as opposed to a protocol or transport failure). */
bool tls_conn_verify_failed(const struct tls_conn *c);

/* New connection in server or client mode.  NULL on ENOMEM. */
struct tls_conn *tls_conn_new_server(struct tls_server *s);
/* tls_conn_new_client_opts with sni as the name and the session key, and
 * PKIX when the context was made with verify. */
struct tls_conn *tls_conn_new_client(struct tls_client *c, const char *sni);
void tls_conn_free(struct tls_conn *c);

/* Give ciphertext received from the peer.  Returns 0 or TLS_ERR. */
int tls_conn_feed(struct tls_conn *c, const void *data, size_t len);

/* Advance the handshake.  TLS_OK when complete, TLS_AGAIN when it needs
 * more input (send what tls_conn_take_out gives first), TLS_ERR on failure
 * (tls_conn_error() says why).  TLS_OK and TLS_ERR are counted once each
 * (io/metrics.h: full, resumed or failed, server or client side). */
int tls_conn_handshake(struct tls_conn *c);

/* Read decrypted bytes.  Returns > 0 bytes, TLS_AGAIN (0 is never
 * returned), TLS_CLOSED on close_notify, TLS_ERR. */
ssize_t tls_conn_read(struct tls_conn *c, void *buf, size_t len);

/* Encrypt plaintext; the ciphertext waits for tls_conn_take_out.  Returns
 * len or TLS_ERR. */
ssize_t tls_conn_write(struct tls_conn *c, const void *buf, size_t len);

/* Start a close_notify. */
void tls_conn_shutdown(struct tls_conn *c);

/* Ciphertext waiting to be sent. */
size_t tls_conn_pending_out(const struct tls_conn *c);
/* Move up to cap bytes of waiting ciphertext into buf; returns count. */
size_t tls_conn_take_out(struct tls_conn *c, void *buf, size_t cap);

/* After the handshake: "TLSv1.3", cipher name, SNI sent by the client (or
 * NULL), whether the session was resumed. */
const char *tls_conn_version(const struct tls_conn *c);
const char *tls_conn_cipher(const struct tls_conn *c);
const char *tls_conn_sni(const struct tls_conn *c);
bool tls_conn_resumed(const struct tls_conn *c);
/* Last error text (static or owned by c). */
const char *tls_conn_error(const struct tls_conn *c);

#endif
