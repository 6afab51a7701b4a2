// SPDX-License-Identifier: MIT
/*
 * ortoo-tlsbench.c - what a TLS handshake costs inside ortoo's TLS layer
 * (issue 3, scenario D), without sockets, SMTP or a second process.
 *
 * A server connection from io/tls.c (tls_server_new on a certificate
 * directory, exactly as ortoo serves it) and a client connection from the
 * same layer (tls_client_new without verification) exchange their flights
 * in memory until both report the handshake done; the client then reads the
 * NewSessionTicket messages (RFC 8446 4.6.1).  The CPU time of this thread
 * is charged to the side whose call it was, so the server's share is what
 * one ortoo reactor spends per handshake.
 *
 *   full     no SNI, so the client cache is never consulted: every
 *            handshake is full (ECDHE + certificate signature and check);
 *   resumed  SNI set, so the client offers the newest ticket it holds
 *            (psk_dhe_ke, RFC 8446 4.2.9: still an ECDHE on both sides).
 *
 * It also times the primitives the handshakes are made of, through the same
 * EVP calls libssl uses: an X25519 key pair plus one shared secret (each
 * side, each handshake), and a signature and a verification with the
 * server's own key (full handshakes only).  Several rounds are run and the
 * cheapest round is kept: on a shared machine that is the least disturbed
 * one.
 *
 * Output: a short table, or one JSON object with --json.
 */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "io/tls.h"

#define TB_BUF (64 * 1024)
#define TB_ROUNDS 5

struct side_cost {
    double server_us; /* server CPU per handshake */
    double client_us; /* client CPU per handshake */
    unsigned resumed; /* handshakes the server saw as resumed */
    unsigned count;
};

static double cpu_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* Move what from has to send into to; the time is the sender's (take) and
 * the receiver's (feed). */
static int shuttle(struct tls_conn *from, struct tls_conn *to, double *t_from, double *t_to)
{
    static unsigned char buf[TB_BUF];
    double t0 = cpu_us(), t1;
    size_t n = tls_conn_take_out(from, buf, sizeof buf);

    t1 = cpu_us();
    *t_from += t1 - t0;
    if (n == 0)
        return 0;
    if (tls_conn_feed(to, buf, n) < 0)
        return -1;
    *t_to += cpu_us() - t1;
    return 1;
}

/* One handshake; adds each side's CPU time.  Returns 0, or -1 on failure. */
static int one_handshake(struct tls_server *srv, struct tls_client *cli, const char *sni,
                         double *ts, double *tc, bool *resumed)
{
    double t0 = cpu_us();
    struct tls_conn *s = tls_conn_new_server(srv);
    double t1 = cpu_us();
    struct tls_conn *c = tls_conn_new_client(cli, sni);
    double t2 = cpu_us();
    int rc_s = TLS_AGAIN, rc_c = TLS_AGAIN, ret = -1;
    unsigned char tmp[256];

    *ts += t1 - t0;
    *tc += t2 - t1;
    if (s == NULL || c == NULL)
        goto out;
    for (int round = 0; round < 8 && (rc_s != TLS_OK || rc_c != TLS_OK); round++) {
        if (rc_c != TLS_OK) {
            t0 = cpu_us();
            rc_c = tls_conn_handshake(c);
            *tc += cpu_us() - t0;
        }
        if (rc_c == TLS_ERR || shuttle(c, s, tc, ts) < 0)
            goto out;
        if (rc_s != TLS_OK) {
            t0 = cpu_us();
            rc_s = tls_conn_handshake(s);
            *ts += cpu_us() - t0;
        }
        if (rc_s == TLS_ERR || shuttle(s, c, ts, tc) < 0)
            goto out;
    }
    if (rc_s != TLS_OK || rc_c != TLS_OK)
        goto out;
    /* The tickets follow the server's handshake: the client takes them in. */
    t0 = cpu_us();
    if (tls_conn_read(c, tmp, sizeof tmp) != TLS_AGAIN)
        goto out;
    *tc += cpu_us() - t0;
    *resumed = tls_conn_resumed(s);
    ret = 0;
out:
    if (ret < 0)
        fprintf(stderr, "ortoo-tlsbench: handshake failed: server: %s; client: %s\n",
                s ? tls_conn_error(s) : "no memory", c ? tls_conn_error(c) : "no memory");
    t0 = cpu_us();
    tls_conn_free(c);
    t1 = cpu_us();
    tls_conn_free(s);
    *tc += t1 - t0;
    *ts += cpu_us() - t1;
    return ret;
}

/* One round of n handshakes; the cost per handshake goes into out. */
static int round_handshakes(struct tls_server *srv, const char *sni, unsigned n,
                            struct side_cost *out)
{
    char err[256];
    /* A fresh client per round: its cache starts empty, so in resumed mode
     * one full handshake (not counted) fetches the first ticket. */
    struct tls_client *cli = tls_client_new(false, err, sizeof err);
    double ts = 0, tc = 0;
    unsigned resumed = 0;
    bool res;
    int ret = -1;

    if (cli == NULL) {
        fprintf(stderr, "ortoo-tlsbench: %s\n", err);
        return -1;
    }
    if (sni != NULL && one_handshake(srv, cli, sni, &ts, &tc, &res) < 0)
        goto out;
    ts = tc = 0;
    for (unsigned i = 0; i < n; i++) {
        if (one_handshake(srv, cli, sni, &ts, &tc, &res) < 0)
            goto out;
        resumed += res;
    }
    out->server_us = ts / n;
    out->client_us = tc / n;
    out->resumed = resumed;
    out->count = n;
    ret = 0;
out:
    tls_client_free(cli);
    return ret;
}

/* Full and resumed rounds alternate (a slow spell of the machine hits both
 * alike); each keeps its cheapest round. */
static int run_handshakes(struct tls_server *srv, const char *host, unsigned n,
                          struct side_cost *full, struct side_cost *res)
{
    full->server_us = full->client_us = res->server_us = res->client_us = 1e18;
    for (int r = 0; r < TB_ROUNDS; r++) {
        struct side_cost f = { 0 }, s = { 0 };
        if (round_handshakes(srv, NULL, n, &f) < 0 || round_handshakes(srv, host, n, &s) < 0)
            return -1;
        if (f.server_us + f.client_us < full->server_us + full->client_us)
            *full = f;
        if (s.server_us + s.client_us < res->server_us + res->client_us)
            *res = s;
    }
    return 0;
}

/* ---- primitives ------------------------------------------------------ */

/* Per operation: X25519 key pair + derive; signature; verification. */
struct prim_cost {
    double x25519_us, sign_us, verify_us;
    char key[32];
};

static EVP_PKEY *x25519_key(void)
{
    EVP_PKEY_CTX *kc = EVP_PKEY_CTX_new_id(EVP_PKEY_X25519, NULL);
    EVP_PKEY *k = NULL;

    if (kc != NULL && EVP_PKEY_keygen_init(kc) == 1)
        (void)EVP_PKEY_keygen(kc, &k);
    EVP_PKEY_CTX_free(kc);
    return k;
}

static int time_primitives(const char *keyfile, unsigned n, struct prim_cost *p)
{
    static const unsigned char msg[130] = "TLS 1.3, server CertificateVerify";
    unsigned char sig[512], secret[64];
    size_t siglen = sizeof sig, slen;
    EVP_PKEY *peer = x25519_key(), *key = NULL;
    FILE *f = fopen(keyfile, "r");
    double best_x = 1e18, best_s = 1e18, best_v = 1e18;
    int ret = -1;

    if (f != NULL) {
        key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
    }
    if (key == NULL || peer == NULL) {
        fprintf(stderr, "ortoo-tlsbench: cannot load %s\n", keyfile);
        goto out;
    }
    snprintf(p->key, sizeof p->key, "%s-%d", EVP_PKEY_get0_type_name(key), EVP_PKEY_get_bits(key));
    for (int r = 0; r < TB_ROUNDS; r++) {
        double t0 = cpu_us(), t1, t2, t3;
        for (unsigned i = 0; i < n; i++) {
            EVP_PKEY *k = x25519_key();
            EVP_PKEY_CTX *dc = k ? EVP_PKEY_CTX_new(k, NULL) : NULL;
            slen = sizeof secret;
            bool ok = dc && EVP_PKEY_derive_init(dc) == 1 && EVP_PKEY_derive_set_peer(dc, peer) == 1 &&
                      EVP_PKEY_derive(dc, secret, &slen) == 1;
            EVP_PKEY_CTX_free(dc);
            EVP_PKEY_free(k);
            if (!ok)
                goto out;
        }
        t1 = cpu_us();
        for (unsigned i = 0; i < n; i++) {
            EVP_MD_CTX *mc = EVP_MD_CTX_new();
            siglen = sizeof sig;
            bool ok = mc && EVP_DigestSignInit(mc, NULL, EVP_sha256(), NULL, key) == 1 &&
                      EVP_DigestSign(mc, sig, &siglen, msg, sizeof msg) == 1;
            EVP_MD_CTX_free(mc);
            if (!ok)
                goto out;
        }
        t2 = cpu_us();
        for (unsigned i = 0; i < n; i++) {
            EVP_MD_CTX *mc = EVP_MD_CTX_new();
            bool ok = mc && EVP_DigestVerifyInit(mc, NULL, EVP_sha256(), NULL, key) == 1 &&
                      EVP_DigestVerify(mc, sig, siglen, msg, sizeof msg) == 1;
            EVP_MD_CTX_free(mc);
            if (!ok)
                goto out;
        }
        t3 = cpu_us();
        if ((t1 - t0) / n < best_x)
            best_x = (t1 - t0) / n;
        if ((t2 - t1) / n < best_s)
            best_s = (t2 - t1) / n;
        if ((t3 - t2) / n < best_v)
            best_v = (t3 - t2) / n;
    }
    p->x25519_us = best_x;
    p->sign_us = best_s;
    p->verify_us = best_v;
    ret = 0;
out:
    EVP_PKEY_free(key);
    EVP_PKEY_free(peer);
    return ret;
}

static void usage(void)
{
    fprintf(stderr, "usage: ortoo-tlsbench --certs DIR [--host NAME] [--count N] [--json]\n"
                    "  DIR holds <host>/fullchain.pem and <host>/privkey.pem (ortoo's cert_dir)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        { "certs", 1, 0, 'c' }, { "host", 1, 0, 'H' }, { "count", 1, 0, 'n' },
        { "json", 0, 0, 'J' },  { "help", 0, 0, 'h' }, { 0, 0, 0, 0 },
    };
    const char *certs = NULL, *host = "localhost";
    unsigned n = 1000;
    bool json = false;
    char err[256], keyfile[4096];
    struct side_cost full = { 0 }, res = { 0 };
    struct prim_cost prim;
    struct tls_server *srv;
    int ch;

    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'c': certs = optarg; break;
        case 'H': host = optarg; break;
        case 'n': n = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'J': json = true; break;
        default: usage();
        }
    }
    if (certs == NULL || n == 0)
        usage();
    srv = tls_server_new(certs, host, err, sizeof err);
    if (srv == NULL) {
        fprintf(stderr, "ortoo-tlsbench: %s\n", err);
        return 1;
    }
    snprintf(keyfile, sizeof keyfile, "%s/%s/privkey.pem", certs, host);
    if (run_handshakes(srv, host, n, &full, &res) < 0 || time_primitives(keyfile, n, &prim) < 0) {
        tls_server_free(srv);
        return 1;
    }
    tls_server_free(srv);
    if (json) {
        printf("{\"count\":%u,\"rounds\":%d,\"key\":\"%s\","
               "\"full\":{\"server_us\":%.1f,\"client_us\":%.1f,\"resumed\":%u},"
               "\"resumed\":{\"server_us\":%.1f,\"client_us\":%.1f,\"resumed\":%u},"
               "\"x25519_us\":%.1f,\"sign_us\":%.1f,\"verify_us\":%.1f}\n",
               n, TB_ROUNDS, prim.key, full.server_us, full.client_us, full.resumed,
               res.server_us, res.client_us, res.resumed, prim.x25519_us, prim.sign_us,
               prim.verify_us);
        return 0;
    }
    printf("handshakes in memory, %u per round, cheapest of %d rounds; key %s\n", n, TB_ROUNDS,
           prim.key);
    printf("%-8s %12s %12s %9s\n", "", "server us", "client us", "resumed");
    printf("%-8s %12.1f %12.1f %9u\n", "full", full.server_us, full.client_us, full.resumed);
    printf("%-8s %12.1f %12.1f %9u\n", "resumed", res.server_us, res.client_us, res.resumed);
    printf("server full/resumed %.2fx  client %.2fx  both %.2fx\n", full.server_us / res.server_us,
           full.client_us / res.client_us,
           (full.server_us + full.client_us) / (res.server_us + res.client_us));
    printf("primitives: X25519 key pair + secret %.1f us, %s sign %.1f us, verify %.1f us\n",
           prim.x25519_us, prim.key, prim.sign_us, prim.verify_us);
    return 0;
}
