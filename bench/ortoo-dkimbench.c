// SPDX-License-Identifier: MIT
/*
 * ortoo-dkimbench.c - signed-message throughput of one core through dkim/
 * (issue 10; scenario C's first part), beside the raw signature rates.
 *
 * Keys are made fresh (RSA-2048, Ed25519) in a temporary config directory
 * laid out as ortoo's (domains/<d>/dkim/<selector>.key) and loaded with
 * dkim_keys_load, as the daemon does.  A message of --size bytes (2 KB by
 * default: headers, then text lines, some starting with a dot) is kept in
 * its stored wire form and signed over and over in one thread, exactly as a
 * reactor does: dkim_sign_open, dkim_sign_feed (in --chunk pieces),
 * dkim_sign_finish, dkim_sign_free.  Three domains: RSA only, Ed25519 only,
 * both (two signatures per message).
 *
 * Beside it, in the same run: the sign rates of `openssl speed -seconds S
 * rsa2048 ed25519` (the goal: signed messages >= 85% of the raw RSA-2048
 * rate), the keys' bare sign calls (dkim_key_sign on a fixed hash: the
 * primitive without canonicalization or hashing), and the same messages
 * through libopendkim 2.11 with the PEM key (what ortoo would get from it:
 * it parses the key for every message).
 *
 * With --verify, the other direction (inbound mail, scenario K's DKIM
 * part): the same messages signed once, then verified over and over in one
 * thread as a reactor does (dkim_verify_open, _feed in --chunk pieces,
 * _set_key with the TXT record, _finish, _free; the reactor's key cache
 * warm, as it is after the first message from a sender), beside the verify
 * rates of `openssl speed`, the bare verify call (dkim_pubkey_verify on a
 * fixed hash) and the same messages verified by libopendkim 2.11 (which
 * decodes the public key for every message).
 *
 * Rates are per second of this thread's CPU time, as `openssl speed`
 * divides by its user CPU time (unless -elapsed), so that the ratio holds
 * on a shared machine; per wall-clock second figures are reported too (on a
 * loaded machine they are lower).  Output: a table, or one JSON object with
 * --json.
 */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <opendkim/dkim.h>

#include "dkim/keys.h"
#include "dkim/pubkey.h"
#include "dkim/sign.h"
#include "dkim/verify.h"

struct rate {
    double per_s;       /* per wall second */
    double per_cpu_s;   /* per second of this thread's CPU */
    unsigned long n;
};

static double now_s(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char tmpdir[] = "/tmp/ortoo-dkimbench-XXXXXX";
static char *pem_rsa, *pem_ed;

static int write_key(const char *domain, const char *sel, const char *pem)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/domains", tmpdir);
    mkdir(path, 0700);
    snprintf(path, sizeof(path), "%s/domains/%s", tmpdir, domain);
    mkdir(path, 0700);
    snprintf(path, sizeof(path), "%s/domains/%s/dkim", tmpdir, domain);
    mkdir(path, 0700);
    snprintf(path, sizeof(path), "%s/domains/%s/dkim/%s.key", tmpdir, domain, sel);
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fputs(pem, f);
    fchmod(fileno(f), 0600);
    return fclose(f);
}

/* A message of about size bytes in stored (dot-stuffed) wire form. */
static char *message_make(const char *domain, size_t size, size_t *len)
{
    char *m = malloc(size + 256);
    size_t o = (size_t)sprintf(m,
                               "From: Bench <bench@%s>\r\nTo: someone@example.org\r\n"
                               "Subject: benchmark message\r\n"
                               "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
                               "Message-ID: <bench.1@%s>\r\nMIME-Version: 1.0\r\n"
                               "Content-Type: text/plain; charset=utf-8\r\n\r\n",
                               domain, domain);
    for (unsigned line = 0; o + 80 < size; line++) {
        if (line % 9 == 4)
            o += (size_t)sprintf(m + o, "..");  /* a stuffed line-start dot */
        for (int k = 0; k < 68; k++)
            m[o++] = (k % 7 == 6) ? ' ' : (char)('a' + (line + k) % 26);
        m[o++] = '\r';
        m[o++] = '\n';
    }
    while (o + 2 < size)
        m[o++] = 'z';
    m[o++] = '\r';
    m[o++] = '\n';
    *len = o;
    return m;
}

/* Sign msg through dkim/ for about secs seconds; checks the signature count. */
static int bench_dkim(struct dkim_keys *ks, const char *msg, size_t len, size_t chunk,
                      unsigned want_sigs, double secs, struct rate *r)
{
    struct dkim_sign_params p = {.now = (int64_t)time(NULL), .add_missing = true,
                                 .hostname = "bench.test"};
    double w0 = now_s(CLOCK_MONOTONIC), c0 = now_s(CLOCK_THREAD_CPUTIME_ID), w1;
    unsigned long n = 0;
    do {
        for (int batch = 0; batch < 20; batch++) {
            struct dkim_signer *sg = dkim_sign_open(ks, &p);
            struct dkim_sign_result res;
            if (sg == NULL)
                return -1;
            for (size_t off = 0; off < len; off += chunk)
                dkim_sign_feed(sg, msg + off, len - off < chunk ? len - off : chunk);
            if (dkim_sign_finish(sg, &res) < 0 || res.nsigs != want_sigs) {
                fprintf(stderr, "ortoo-dkimbench: signing failed (%s)\n",
                        res.why_unsigned ? res.why_unsigned : "error");
                return -1;
            }
            free(res.signatures);
            free(res.added);
            dkim_sign_free(sg);
            n++;
        }
        w1 = now_s(CLOCK_MONOTONIC);
    } while (w1 - w0 < secs);
    r->n = n;
    r->per_s = (double)n / (w1 - w0);
    r->per_cpu_s = (double)n / (now_s(CLOCK_THREAD_CPUTIME_ID) - c0);
    return 0;
}

/* The bare primitive: dkim_key_sign on a fixed hash. */
static int bench_key(const struct dkim_key *k, double secs, struct rate *r)
{
    unsigned char hash[32], sig[DKIM_SIG_MAX];
    size_t siglen;
    memset(hash, 0x5a, sizeof(hash));
    double w0 = now_s(CLOCK_MONOTONIC), c0 = now_s(CLOCK_THREAD_CPUTIME_ID), w1;
    unsigned long n = 0;
    do {
        for (int batch = 0; batch < 20; batch++, n++)
            if (dkim_key_sign(k, hash, sig, &siglen) < 0)
                return -1;
        w1 = now_s(CLOCK_MONOTONIC);
    } while (w1 - w0 < secs);
    r->n = n;
    r->per_s = (double)n / (w1 - w0);
    r->per_cpu_s = (double)n / (now_s(CLOCK_THREAD_CPUTIME_ID) - c0);
    return 0;
}

/* The same message signed through libopendkim with the PEM key. */
static int bench_opendkim(const char *pem, bool ed, const char *domain, const char *stored,
                          size_t len, double secs, struct rate *r)
{
    DKIM_LIB *lib = dkim_init(NULL, NULL);
    /* libopendkim takes the message unstuffed; unstuff once, outside the timing. */
    char *msg = malloc(len + 1);
    size_t m = 0;
    bool bol = true;
    for (size_t i = 0; i < len; i++) {
        if (!(bol && stored[i] == '.'))
            msg[m++] = stored[i];
        bol = stored[i] == '\n';
    }
    double w0 = now_s(CLOCK_MONOTONIC), c0 = now_s(CLOCK_THREAD_CPUTIME_ID), w1;
    unsigned long n = 0;
    int rc = 0;
    do {
        DKIM_STAT st;
        DKIM *d = dkim_sign(lib, (const unsigned char *)"bench", NULL, (dkim_sigkey_t)pem,
                            (const unsigned char *)(ed ? "e1" : "r1"),
                            (const unsigned char *)domain, DKIM_CANON_RELAXED,
                            DKIM_CANON_RELAXED,
                            ed ? DKIM_SIGN_ED25519SHA256 : DKIM_SIGN_RSASHA256, -1, &st);
        unsigned char hdr[2048];
        if (d == NULL || dkim_chunk(d, (unsigned char *)msg, m) != DKIM_STAT_OK ||
            dkim_chunk(d, NULL, 0) != DKIM_STAT_OK || dkim_eom(d, NULL) != DKIM_STAT_OK ||
            dkim_getsighdr(d, hdr, sizeof(hdr), 0) != DKIM_STAT_OK) {
            fprintf(stderr, "ortoo-dkimbench: libopendkim signing failed\n");
            rc = -1;
            if (d != NULL)
                dkim_free(d);
            break;
        }
        dkim_free(d);
        n++;
        w1 = now_s(CLOCK_MONOTONIC);
    } while (w1 - w0 < secs);
    w1 = now_s(CLOCK_MONOTONIC);
    r->n = n;
    r->per_s = (double)n / (w1 - w0);
    r->per_cpu_s = (double)n / (now_s(CLOCK_THREAD_CPUTIME_ID) - c0);
    free(msg);
    dkim_close(lib);
    return rc;
}

/* `openssl speed -seconds S rsa2048 ed25519`: the sign/s columns (or the
 * verify/s ones). */
static int openssl_speed_col(int secs, bool verify, double *rsa, double *ed)
{
    char cmd[128], line[512];
    snprintf(cmd, sizeof(cmd), "openssl speed -seconds %d rsa2048 ed25519 2>/dev/null", secs);
    FILE *p = popen(cmd, "r");
    *rsa = *ed = 0;
    if (p == NULL)
        return -1;
    while (fgets(line, sizeof(line), p) != NULL) {
        double a, b, s, v;
        if (sscanf(line, "rsa 2048 bits %lfs %lfs %lf %lf", &a, &b, &s, &v) == 4)
            *rsa = verify ? v : s;
        else if (strstr(line, "EdDSA (Ed25519)") != NULL) {
            const char *q = strstr(line, ")");
            if (q != NULL && sscanf(q + 1, " %lfs %lfs %lf %lf", &a, &b, &s, &v) == 4)
                *ed = verify ? v : s;
        }
    }
    return pclose(p) == 0 && *rsa > 0 && *ed > 0 ? 0 : -1;
}

static int openssl_speed(int secs, double *rsa, double *ed)
{
    return openssl_speed_col(secs, false, rsa, ed);
}

/* ---- --verify ---- */

static char *rec_rsa, *rec_ed;

/* msg (stored form) with ortoo's signatures on top. */
static char *signed_make(struct dkim_keys *ks, const char *msg, size_t len, size_t *out_len)
{
    struct dkim_sign_params p = {.now = (int64_t)time(NULL), .hostname = "bench.test"};
    struct dkim_signer *sg = dkim_sign_open(ks, &p);
    struct dkim_sign_result res;
    dkim_sign_feed(sg, msg, len);
    if (dkim_sign_finish(sg, &res) < 0 || res.signatures == NULL)
        return NULL;
    dkim_sign_free(sg);
    size_t sl = strlen(res.signatures);
    char *out = malloc(sl + len);
    memcpy(out, res.signatures, sl);
    memcpy(out + sl, msg, len);
    *out_len = sl + len;
    free(res.signatures);
    free(res.added);
    return out;
}

/* Verify msg through dkim/ for about secs seconds; every signature must pass. */
static int bench_verify(struct dkim_verify_lib *lib, const char *msg, size_t len, size_t chunk,
                        unsigned want_sigs, double secs, struct rate *r)
{
    double w0 = now_s(CLOCK_MONOTONIC), c0 = now_s(CLOCK_THREAD_CPUTIME_ID), w1;
    unsigned long n = 0;
    do {
        for (int batch = 0; batch < 20; batch++) {
            struct dkim_verifier *v = dkim_verify_open(lib, 5, "bench.test");
            struct dkim_verify_result res;
            bool asked = false;
            if (v == NULL)
                return -1;
            for (size_t off = 0; off < len; off += chunk) {
                dkim_verify_feed(v, msg + off, len - off < chunk ? len - off : chunk);
                if (!asked && dkim_verify_header_done(v)) {
                    asked = true;
                    for (unsigned i = 0; i < dkim_verify_nkeys(v); i++) {
                        const char *rec = dkim_verify_key_name(v, i)[0] == 'e' ? rec_ed : rec_rsa;
                        dkim_verify_set_key(v, i, DKIM_KEY_FOUND, rec, strlen(rec), 3600);
                    }
                }
            }
            if (dkim_verify_finish(v, &res) < 0 || res.nsigs != want_sigs)
                return -1;
            for (unsigned i = 0; i < res.nsigs; i++)
                if (res.sigs[i].status != DKIM_V_PASS) {
                    fprintf(stderr, "ortoo-dkimbench: verification failed (%s)\n",
                            res.sigs[i].why ? res.sigs[i].why : "?");
                    return -1;
                }
            dkim_verify_free(v);
            n++;
        }
        w1 = now_s(CLOCK_MONOTONIC);
    } while (w1 - w0 < secs);
    r->n = n;
    r->per_s = (double)n / (w1 - w0);
    r->per_cpu_s = (double)n / (now_s(CLOCK_THREAD_CPUTIME_ID) - c0);
    return 0;
}

/* The bare primitive: dkim_pubkey_verify of a valid signature (made by the
 * private half, sk) on a fixed hash. */
static int bench_pubkey(const char *rec, const struct dkim_key *sk, double secs, struct rate *r)
{
    struct dkim_pubkey k;
    unsigned char hash[32], sig[DKIM_SIG_MAX];
    size_t siglen = 0;
    memset(hash, 0x5a, sizeof(hash));
    if (dkim_key_sign(sk, hash, sig, &siglen) < 0 || dkim_pubkey_parse(&k, rec, strlen(rec)) < 0 ||
        k.status != DKIM_PUBKEY_OK || !dkim_pubkey_verify(&k, hash, sig, siglen))
        return -1;
    double w0 = now_s(CLOCK_MONOTONIC), c0 = now_s(CLOCK_THREAD_CPUTIME_ID), w1;
    unsigned long n = 0;
    do {
        for (int batch = 0; batch < 20; batch++, n++)
            (void)dkim_pubkey_verify(&k, hash, sig, siglen);
        w1 = now_s(CLOCK_MONOTONIC);
    } while (w1 - w0 < secs);
    dkim_pubkey_clear(&k);
    r->n = n;
    r->per_s = (double)n / (w1 - w0);
    r->per_cpu_s = (double)n / (now_s(CLOCK_THREAD_CPUTIME_ID) - c0);
    return 0;
}

static DKIM_CBSTAT bench_key_lookup(DKIM *dkim, DKIM_SIGINFO *sig, u_char *buf, size_t buflen)
{
    const char *rec = dkim_sig_getselector(sig)[0] == 'e' ? rec_ed : rec_rsa;
    if (strlen(rec) >= buflen)
        return DKIM_CBSTAT_ERROR;
    memcpy(buf, rec, strlen(rec) + 1);
    return DKIM_CBSTAT_CONTINUE;
}

/* The same messages verified by libopendkim (unstuffed once, outside the
 * timing), its key lookup callback answering from memory. */
static int bench_opendkim_verify(const char *stored, size_t len, unsigned want, double secs,
                                 struct rate *r)
{
    DKIM_LIB *lib = dkim_init(NULL, NULL);
    dkim_set_key_lookup(lib, bench_key_lookup);
    char *msg = malloc(len + 1);
    size_t m = 0;
    bool bol = true;
    for (size_t i = 0; i < len; i++) {
        if (!(bol && stored[i] == '.'))
            msg[m++] = stored[i];
        bol = stored[i] == '\n';
    }
    double w0 = now_s(CLOCK_MONOTONIC), c0 = now_s(CLOCK_THREAD_CPUTIME_ID), w1;
    unsigned long n = 0;
    int rc = 0;
    do {
        DKIM_STAT st;
        DKIM *d = dkim_verify(lib, (const unsigned char *)"bench", NULL, &st);
        DKIM_SIGINFO **sigs = NULL;
        int nsigs = 0, passed = 0;
        if (d != NULL && dkim_chunk(d, (unsigned char *)msg, m) == DKIM_STAT_OK &&
            dkim_chunk(d, NULL, 0) == DKIM_STAT_OK) {
            (void)dkim_eom(d, NULL);
            if (dkim_getsiglist(d, &sigs, &nsigs) == DKIM_STAT_OK)
                for (int i = 0; i < nsigs; i++)
                    passed += DKIM_SIG_CHECK(sigs[i]) ? 1 : 0;
        }
        if (d != NULL)
            dkim_free(d);
        if ((unsigned)passed != want) {
            fprintf(stderr, "ortoo-dkimbench: libopendkim verification failed\n");
            rc = -1;
            break;
        }
        n++;
        w1 = now_s(CLOCK_MONOTONIC);
    } while (w1 - w0 < secs);
    w1 = now_s(CLOCK_MONOTONIC);
    r->n = n;
    r->per_s = (double)n / (w1 - w0);
    r->per_cpu_s = (double)n / (now_s(CLOCK_THREAD_CPUTIME_ID) - c0);
    free(msg);
    dkim_close(lib);
    return rc;
}

static int run_verify(struct dkim_keys *ks, const char *mr, size_t lr, const char *me, size_t le,
                      const char *mb, size_t lb, size_t chunk, double secs, bool run_openssl,
                      bool json)
{
    char err[256];
    size_t sr, se, sb;
    char *vr = signed_make(ks, mr, lr, &sr), *ve = signed_make(ks, me, le, &se),
         *vb = signed_make(ks, mb, lb, &sb);
    struct dkim_verify_lib *lib = dkim_verify_lib_new(err, sizeof(err));
    if (vr == NULL || ve == NULL || vb == NULL || lib == NULL)
        return -1;
    double ssl_rsa = 0, ssl_ed = 0;
    int ssl_rc = run_openssl ? openssl_speed_col((int)(secs + 0.5) > 0 ? (int)(secs + 0.5) : 1,
                                                 true, &ssl_rsa, &ssl_ed)
                             : -1;
    struct rate v_rsa, v_ed, v_both, p_rsa, p_ed, o_rsa, o_ed;
    if (bench_verify(lib, vr, sr, chunk, 1, secs, &v_rsa) < 0 ||
        bench_verify(lib, ve, se, chunk, 1, secs, &v_ed) < 0 ||
        bench_verify(lib, vb, sb, chunk, 2, secs, &v_both) < 0 ||
        bench_pubkey(rec_rsa, dkim_keys_get(ks, "rsa.bench.test", 14, 0), secs, &p_rsa) < 0 ||
        bench_pubkey(rec_ed, dkim_keys_get(ks, "ed.bench.test", 13, 0), secs, &p_ed) < 0 ||
        bench_opendkim_verify(vr, sr, 1, secs, &o_rsa) < 0 ||
        bench_opendkim_verify(ve, se, 1, secs, &o_ed) < 0)
        return -1;
    struct dkim_pubkey_stats st;
    dkim_verify_lib_stats(lib, &st);
    double load[3] = {0, 0, 0};
    FILE *la = fopen("/proc/loadavg", "r");
    if (la != NULL) {
        if (fscanf(la, "%lf %lf %lf", &load[0], &load[1], &load[2]) != 3)
            load[0] = load[1] = load[2] = 0;
        fclose(la);
    }
    if (json) {
        printf("{\"size\": %zu, \"seconds\": %.1f, \"loadavg\": [%.2f, %.2f, %.2f], "
               "\"openssl_speed\": {\"rsa2048_verify_per_s\": %.1f, \"ed25519_verify_per_s\": %.1f}, "
               "\"ortoo_verify\": {\"rsa\": %.1f, \"ed25519\": %.1f, \"both\": %.1f}, "
               "\"ortoo_verify_wall\": {\"rsa\": %.1f, \"ed25519\": %.1f, \"both\": %.1f}, "
               "\"pubkey_verify\": {\"rsa\": %.1f, \"ed25519\": %.1f}, "
               "\"libopendkim_verify\": {\"rsa\": %.1f, \"ed25519\": %.1f}, "
               "\"key_cache\": {\"hits\": %llu, \"misses\": %llu}, "
               "\"rsa_vs_openssl\": %.3f, \"ed25519_vs_openssl\": %.3f}\n",
               sr, secs, load[0], load[1], load[2], ssl_rsa, ssl_ed, v_rsa.per_cpu_s,
               v_ed.per_cpu_s, v_both.per_cpu_s, v_rsa.per_s, v_ed.per_s, v_both.per_s,
               p_rsa.per_cpu_s, p_ed.per_cpu_s, o_rsa.per_cpu_s, o_ed.per_cpu_s,
               (unsigned long long)st.hits, (unsigned long long)st.misses,
               ssl_rc == 0 ? v_rsa.per_cpu_s / ssl_rsa : 0,
               ssl_rc == 0 ? v_ed.per_cpu_s / ssl_ed : 0);
    } else {
        printf("one thread, %zu-byte signed messages, %.1f s per measure, load average %.2f %.2f "
               "%.2f\n", sr, secs, load[0], load[1], load[2]);
        printf("%-46s %12s %12s\n", "", "per wall s", "per CPU s");
        if (ssl_rc == 0) {
            printf("%-46s %12s %12.0f\n", "openssl speed rsa2048 verify", "", ssl_rsa);
            printf("%-46s %12s %12.0f\n", "openssl speed ed25519 verify", "", ssl_ed);
        }
        printf("%-46s %12.0f %12.0f\n", "dkim_pubkey_verify RSA-2048 (bare)", p_rsa.per_s, p_rsa.per_cpu_s);
        printf("%-46s %12.0f %12.0f\n", "dkim_pubkey_verify Ed25519 (bare, libsodium)", p_ed.per_s, p_ed.per_cpu_s);
        printf("%-46s %12.0f %12.0f\n", "verified messages, dkim/, RSA-2048", v_rsa.per_s, v_rsa.per_cpu_s);
        printf("%-46s %12.0f %12.0f\n", "verified messages, dkim/, Ed25519", v_ed.per_s, v_ed.per_cpu_s);
        printf("%-46s %12.0f %12.0f\n", "verified messages, dkim/, both (2 signatures)", v_both.per_s, v_both.per_cpu_s);
        printf("%-46s %12.0f %12.0f\n", "verified messages, libopendkim, RSA-2048", o_rsa.per_s, o_rsa.per_cpu_s);
        printf("%-46s %12.0f %12.0f\n", "verified messages, libopendkim, Ed25519", o_ed.per_s, o_ed.per_cpu_s);
        printf("key cache: %llu hits, %llu misses\n", (unsigned long long)st.hits,
               (unsigned long long)st.misses);
        if (ssl_rc == 0)
            printf("per CPU second, RSA-2048 verified messages / openssl speed verify: %.1f%%; "
                   "Ed25519: %.1f%%\n", 100 * v_rsa.per_cpu_s / ssl_rsa, 100 * v_ed.per_cpu_s / ssl_ed);
    }
    dkim_verify_lib_free(lib);
    free(vr);
    free(ve);
    free(vb);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: ortoo-dkimbench [--seconds S] [--size BYTES] [--chunk BYTES] "
               "[--no-openssl] [--verify] [--json]\n");
}

int main(int argc, char **argv)
{
    double secs = 3;
    size_t size = 2048, chunk = 65536;
    bool json = false, run_openssl = true, verify = false;
    static const struct option opts[] = {
        {"seconds", required_argument, NULL, 's'}, {"size", required_argument, NULL, 'z'},
        {"chunk", required_argument, NULL, 'c'},   {"json", no_argument, NULL, 'j'},
        {"no-openssl", no_argument, NULL, 'n'},    {"help", no_argument, NULL, 'h'},
        {"verify", no_argument, NULL, 'v'},        {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 's': secs = atof(optarg); break;
        case 'z': size = (size_t)atol(optarg); break;
        case 'c': chunk = (size_t)atol(optarg); break;
        case 'j': json = true; break;
        case 'n': run_openssl = false; break;
        case 'v': verify = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (secs <= 0 || size < 512 || chunk == 0) {
        usage(stderr);
        return 2;
    }
    char err[256];
    struct dkim_keys *ks = NULL;
    if (mkdtemp(tmpdir) == NULL ||
        dkim_keygen(DKIM_ALGO_RSA, &pem_rsa, &rec_rsa, err, sizeof(err)) < 0) {
        fprintf(stderr, "ortoo-dkimbench: %s\n", err);
        return 1;
    }
    if (dkim_keygen(DKIM_ALGO_ED25519, &pem_ed, &rec_ed, err, sizeof(err)) < 0) {
        fprintf(stderr, "ortoo-dkimbench: %s\n", err);
        return 1;
    }
    if (write_key("rsa.bench.test", "r1", pem_rsa) < 0 || write_key("ed.bench.test", "e1", pem_ed) < 0 ||
        write_key("both.bench.test", "r1", pem_rsa) < 0 || write_key("both.bench.test", "e1", pem_ed) < 0 ||
        dkim_keys_load(tmpdir, NULL, &ks, err, sizeof(err)) < 0) {
        fprintf(stderr, "ortoo-dkimbench: keys: %s\n", err);
        return 1;
    }
    size_t lr, le, lb;
    char *mr = message_make("rsa.bench.test", size, &lr);
    char *me = message_make("ed.bench.test", size, &le);
    char *mb = message_make("both.bench.test", size, &lb);
    if (verify) {
        int vrc = run_verify(ks, mr, lr, me, le, mb, lb, chunk, secs, run_openssl, json);
        dkim_keys_free(ks);
        char cmd[600];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
        if (system(cmd) != 0)
            fprintf(stderr, "ortoo-dkimbench: could not remove %s\n", tmpdir);
        if (vrc < 0)
            fprintf(stderr, "ortoo-dkimbench: verify benchmark failed\n");
        return vrc < 0 ? 1 : 0;
    }
    double ssl_rsa = 0, ssl_ed = 0;
    int ssl_rc = run_openssl ? openssl_speed((int)(secs + 0.5) > 0 ? (int)(secs + 0.5) : 1,
                                             &ssl_rsa, &ssl_ed)
                             : -1;
    struct rate d_rsa, d_ed, d_both, k_rsa, k_ed, o_rsa, o_ed;
    if (bench_dkim(ks, mr, lr, chunk, 1, secs, &d_rsa) < 0 ||
        bench_dkim(ks, me, le, chunk, 1, secs, &d_ed) < 0 ||
        bench_dkim(ks, mb, lb, chunk, 2, secs, &d_both) < 0 ||
        bench_key(dkim_keys_get(ks, "rsa.bench.test", 14, 0), secs, &k_rsa) < 0 ||
        bench_key(dkim_keys_get(ks, "ed.bench.test", 13, 0), secs, &k_ed) < 0 ||
        bench_opendkim(pem_rsa, false, "rsa.bench.test", mr, lr, secs, &o_rsa) < 0 ||
        bench_opendkim(pem_ed, true, "ed.bench.test", me, le, secs, &o_ed) < 0)
        return 1;
    double load[3] = {0, 0, 0};
    FILE *la = fopen("/proc/loadavg", "r");
    if (la != NULL) {
        if (fscanf(la, "%lf %lf %lf", &load[0], &load[1], &load[2]) != 3)
            load[0] = load[1] = load[2] = 0;
        fclose(la);
    }
    if (json) {
        printf("{\"size\": %zu, \"seconds\": %.1f, \"loadavg\": [%.2f, %.2f, %.2f], "
               "\"openssl_speed\": {\"rsa2048_sign_per_s\": %.1f, \"ed25519_sign_per_s\": %.1f}, "
               "\"ortoo\": {\"rsa\": %.1f, \"ed25519\": %.1f, \"both\": %.1f}, "
               "\"ortoo_wall\": {\"rsa\": %.1f, \"ed25519\": %.1f, \"both\": %.1f}, "
               "\"key_sign\": {\"rsa\": %.1f, \"ed25519\": %.1f}, "
               "\"libopendkim\": {\"rsa\": %.1f, \"ed25519\": %.1f}, "
               "\"rsa_vs_openssl\": %.3f, \"ed25519_vs_openssl\": %.3f}\n",
               lr, secs, load[0], load[1], load[2], ssl_rsa, ssl_ed, d_rsa.per_cpu_s,
               d_ed.per_cpu_s, d_both.per_cpu_s, d_rsa.per_s, d_ed.per_s, d_both.per_s,
               k_rsa.per_cpu_s, k_ed.per_cpu_s, o_rsa.per_cpu_s, o_ed.per_cpu_s,
               ssl_rc == 0 ? d_rsa.per_cpu_s / ssl_rsa : 0,
               ssl_rc == 0 ? d_ed.per_cpu_s / ssl_ed : 0);
    } else {
        printf("one thread, %zu-byte messages, %.1f s per measure, load average %.2f %.2f %.2f\n",
               lr, secs, load[0], load[1], load[2]);
        printf("%-44s %12s %12s\n", "", "per wall s", "per CPU s");
        if (ssl_rc == 0) {
            printf("%-44s %12s %12.0f\n", "openssl speed rsa2048 sign", "", ssl_rsa);
            printf("%-44s %12s %12.0f\n", "openssl speed ed25519 sign", "", ssl_ed);
        }
        printf("%-44s %12.0f %12.0f\n", "dkim_key_sign RSA-2048 (bare)", k_rsa.per_s, k_rsa.per_cpu_s);
        printf("%-44s %12.0f %12.0f\n", "dkim_key_sign Ed25519 (bare, libsodium)", k_ed.per_s, k_ed.per_cpu_s);
        printf("%-44s %12.0f %12.0f\n", "signed messages, dkim/, RSA-2048", d_rsa.per_s, d_rsa.per_cpu_s);
        printf("%-44s %12.0f %12.0f\n", "signed messages, dkim/, Ed25519", d_ed.per_s, d_ed.per_cpu_s);
        printf("%-44s %12.0f %12.0f\n", "signed messages, dkim/, both (2 signatures)", d_both.per_s, d_both.per_cpu_s);
        printf("%-44s %12.0f %12.0f\n", "signed messages, libopendkim, RSA-2048", o_rsa.per_s, o_rsa.per_cpu_s);
        printf("%-44s %12.0f %12.0f\n", "signed messages, libopendkim, Ed25519", o_ed.per_s, o_ed.per_cpu_s);
        if (ssl_rc == 0)
            printf("per CPU second, RSA-2048 signed messages / openssl speed: %.1f%% (goal >= 85%%); "
                   "Ed25519: %.1f%%\n", 100 * d_rsa.per_cpu_s / ssl_rsa, 100 * d_ed.per_cpu_s / ssl_ed);
    }
    dkim_keys_free(ks);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "ortoo-dkimbench: could not remove %s\n", tmpdir);
    free(mr);
    free(me);
    free(mb);
    free(pem_rsa);
    free(pem_ed);
    free(rec_rsa);
    free(rec_ed);
    return 0;
}
