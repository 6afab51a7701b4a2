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
 * Only API shared by OpenSSL 3 and BoringSSL is used (see RECIPES.md):
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

/* A client context for ortoo's own outbound use (CLI send, later delivery).
 * verify: check the peer certificate against the system store and name. */
struct tls_client;
struct tls_client *tls_client_new(bool verify, char *err, size_t errlen);
void tls_client_free(struct tls_client *c);

/* New connection in server or client mode.  NULL on ENOMEM. */
struct tls_conn *tls_conn_new_server(struct tls_server *s);
struct tls_conn *tls_conn_new_client(struct tls_client *c, const char *sni);
void tls_conn_free(struct tls_conn *c);

/* Give ciphertext received from the peer.  Returns 0 or TLS_ERR. */
int tls_conn_feed(struct tls_conn *c, const void *data, size_t len);

/* Advance the handshake.  TLS_OK when complete, TLS_AGAIN when it needs
 * more input (send what tls_conn_take_out gives first), TLS_ERR on failure
 * (tls_conn_error() says why). */
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
