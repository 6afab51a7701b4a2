/* SPDX-License-Identifier: MIT */
/*
 * test_smtp_client.c - the delivery client (delivery/smtp_client.c, included
 * to reach its statics) on a real loop, every test once per backend, against
 * real servers started as subprocesses on free loopback ports:
 *
 *   ortoo     this tree's own server (STARTTLS, PIPELINING, CHUNKING, SIZE,
 *             AUTH on submission), with a certificate from a test CA; what
 *             it stored is read back from its spool (spool_scan) and compared
 *             byte for byte;
 *   smtp-sink Postfix's sink (no STARTTLS; told to hide extensions and to
 *             refuse commands);
 *   ortoo-sink  the benchmark sink (rule files for 4xx/5xx, STARTTLS);
 *   peer.py   a scripted Python server that logs every read (how the client
 *             split its writes), every command in clear text and under TLS,
 *             and the exact bytes of each body.
 *
 * The client's binaries are found next to this test's own:
 * build/<mode>/tests/unit/delivery/test_smtp_client -> build/<mode>/ortoo and
 * build/<mode>/bench/ortoo-sink (the Makefile builds them first).
 */
#define OPENSSL_API_COMPAT 0x10100000L /* EC_KEY, as in test_tls.c (BoringSSL-safe) */

#include "delivery/smtp_client.c"

#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include <cmocka.h>

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "spool/spool.h"

#define MX_HOST "mx.example.test"
#define WATCHDOG_MS 30000

static enum io_backend be_uring = IO_BACKEND_URING;
static enum io_backend be_epoll = IO_BACKEND_EPOLL;

static char tmpdir[] = "/tmp/ortoo-test-client-XXXXXX";
#define BASE_MAX 512 /* directories we build paths under (PATH_MAX is for the paths) */
static char bindir[BASE_MAX];  /* build/<mode> */
static char srcdir[BASE_MAX];  /* tests/unit/delivery */
static char ca_pem[BASE_MAX], chain_pem[BASE_MAX], key_pem[BASE_MAX];
static unsigned char leaf_spki_sha256[32], ca_sha256[32];

/* ---- small helpers -------------------------------------------------------- */

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "r");
    char *buf = NULL;
    size_t cap = 0, n = 0;

    if (f == NULL)
        return NULL;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = (n + 4096 + 1) * 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        size_t r = fread(buf + n, 1, 4096, f);
        n += r;
        if (r == 0)
            break;
    }
    fclose(f);
    buf[n] = '\0';
    if (len != NULL)
        *len = n;
    return buf;
}

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Every process started and not yet stopped: a failed test (its asserts
 * return early) leaves its servers to group_teardown. */
#define MAX_SPAWNED 64
static pid_t spawned[MAX_SPAWNED];

/* Start argv with stdout and stderr into out_path (or /dev/null). */
static pid_t spawn(char *const argv[], const char *out_path)
{
    pid_t pid = fork();

    assert_true(pid >= 0);
    if (pid > 0) {
        for (int i = 0; i < MAX_SPAWNED; i++) {
            if (spawned[i] == 0) {
                spawned[i] = pid;
                break;
            }
        }
    }
    if (pid == 0) {
        int fd = open(out_path ? out_path : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0644);
        int devnull = open("/dev/null", O_RDONLY);
        if (fd < 0 || devnull < 0)
            _exit(127);
        dup2(devnull, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        execvp(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static void stop(pid_t pid)
{
    int st;

    if (pid <= 0)
        return;
    for (int i = 0; i < MAX_SPAWNED; i++)
        if (spawned[i] == pid)
            spawned[i] = 0;
    kill(pid, SIGTERM);
    for (int i = 0; i < 200; i++) {
        if (waitpid(pid, &st, WNOHANG) == pid)
            return;
        usleep(25 * 1000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
}

/* Wait (at most 15 s) until path holds a line with `key`; returns the text
 * after it (static), or fails the test. */
static const char *wait_for(const char *path, const char *key, pid_t pid)
{
    static char val[256];

    for (int i = 0; i < 600; i++) {
        char *txt = read_file(path, NULL);
        char *p = txt ? strstr(txt, key) : NULL;
        if (p != NULL) {
            size_t n = strcspn(p + strlen(key), " \r\n");
            snprintf(val, sizeof val, "%.*s", (int)n, p + strlen(key));
            free(txt);
            return val;
        }
        free(txt);
        if (pid > 0 && waitpid(pid, NULL, WNOHANG) == pid)
            fail_msg("the server exited before writing \"%s\" to %s", key, path);
        usleep(25 * 1000);
    }
    fail_msg("\"%s\" never appeared in %s", key, path);
    return NULL;
}

/* A port nobody listens on right now (for smtp-sink, which needs one). */
static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t alen = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static bool can_connect(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    bool ok;

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static struct sockaddr_in loopback(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

/* ---- the test PKI ----------------------------------------------------------- */

static EVP_PKEY *key_make(void)
{
    EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    EVP_PKEY *pk = EVP_PKEY_new();

    assert_non_null(ec);
    assert_int_equal(EC_KEY_generate_key(ec), 1);
    assert_int_equal(EVP_PKEY_assign_EC_KEY(pk, ec), 1);
    return pk;
}

static X509 *cert_issue(EVP_PKEY *pk, const char *cn, const char *dns, X509 *ica, EVP_PKEY *ikey)
{
    static long serial = 7000;
    X509 *x = X509_new();
    BASIC_CONSTRAINTS *bc = BASIC_CONSTRAINTS_new();
    X509_NAME *name;

    assert_int_equal(X509_set_version(x, 2), 1);
    assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), serial++), 1);
    assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), -3600));
    assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 30));
    assert_int_equal(X509_set_pubkey(x, pk), 1);
    name = X509_get_subject_name(x);
    assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                                (const unsigned char *)cn, -1, -1, 0),
                     1);
    assert_int_equal(X509_set_issuer_name(x, ica ? X509_get_subject_name(ica) : name), 1);
    bc->ca = ica == NULL ? 0xff : 0;
    assert_int_equal(X509_add1_ext_i2d(x, NID_basic_constraints, bc, 1, X509V3_ADD_DEFAULT), 1);
    BASIC_CONSTRAINTS_free(bc);
    if (dns != NULL) {
        GENERAL_NAMES *gens = GENERAL_NAMES_new();
        GENERAL_NAME *g = GENERAL_NAME_new();
        ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();
        assert_int_equal(ASN1_STRING_set(ia5, dns, (int)strlen(dns)), 1);
        GENERAL_NAME_set0_value(g, GEN_DNS, ia5);
        assert_true(sk_GENERAL_NAME_push(gens, g) > 0);
        assert_int_equal(X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT),
                         1);
        GENERAL_NAMES_free(gens);
    }
    assert_true(X509_sign(x, ikey ? ikey : pk, EVP_sha256()) > 0);
    return x;
}

static void pki_make(void)
{
    EVP_PKEY *ca_key = key_make(), *leaf_key = key_make();
    X509 *ca = cert_issue(ca_key, "ortoo client test CA", NULL, NULL, NULL);
    X509 *leaf = cert_issue(leaf_key, MX_HOST, MX_HOST, ca, ca_key);
    unsigned char der[4096], *p;
    unsigned int mdlen;
    int len;
    FILE *f;

    snprintf(ca_pem, sizeof ca_pem, "%s/ca.pem", tmpdir);
    snprintf(chain_pem, sizeof chain_pem, "%s/chain.pem", tmpdir);
    snprintf(key_pem, sizeof key_pem, "%s/key.pem", tmpdir);
    f = fopen(ca_pem, "w");
    assert_int_equal(PEM_write_X509(f, ca), 1);
    fclose(f);
    f = fopen(chain_pem, "w");
    assert_int_equal(PEM_write_X509(f, leaf), 1);
    assert_int_equal(PEM_write_X509(f, ca), 1); /* RFC 7672 3.1.2: the TA in the chain */
    fclose(f);
    f = fopen(key_pem, "w");
    assert_int_equal(PEM_write_PrivateKey(f, leaf_key, NULL, NULL, 0, NULL, NULL), 1);
    fclose(f);

    p = der;
    len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(leaf), &p);
    assert_int_equal(EVP_Digest(der, (size_t)len, leaf_spki_sha256, &mdlen, EVP_sha256(), NULL), 1);
    p = der;
    len = i2d_X509(ca, &p);
    assert_int_equal(EVP_Digest(der, (size_t)len, ca_sha256, &mdlen, EVP_sha256(), NULL), 1);
    X509_free(ca);
    X509_free(leaf);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(leaf_key);
}

/* ---- servers ---------------------------------------------------------------- */

static pid_t ortoo_pid, sink_pid, tlssink_pid, rulesink_pid;
static int ortoo_port, ortoo_port6, submission_port, sink_port, tlssink_port, rulesink_port;
static char ortoo_dir[BASE_MAX], ortoo_log[BASE_MAX];

static void run_cmd(char *const argv[], const char *input)
{
    char in_path[PATH_MAX];
    pid_t pid;
    int st, fd;

    snprintf(in_path, sizeof in_path, "%s/stdin.txt", tmpdir);
    write_file(in_path, input ? input : "", input ? strlen(input) : 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        fd = open(in_path, O_RDONLY);
        dup2(fd, 0);
        execv(argv[0], argv);
        _exit(127);
    }
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("%s %s failed (status %d)", argv[0], argv[3], st);
}

static void ortoo_start(void)
{
    char bin[PATH_MAX], conf[PATH_MAX], p[PATH_MAX + 64], text[2048];
    const char *addr;

    snprintf(bin, sizeof bin, "%s/ortoo", bindir);
    snprintf(ortoo_dir, sizeof ortoo_dir, "%s/ortoo", tmpdir);
    run_cmd((char *const[]){bin, "-c", ortoo_dir, "init", "example.test", "--hostname", MX_HOST,
                            NULL},
            NULL);
    run_cmd((char *const[]){bin, "-c", ortoo_dir, "user", "add", "alice@example.test",
                            "--password-stdin", NULL},
            "alice-secret-1\n");
    /* Serve the test CA's certificate instead of init's self-signed one. */
    snprintf(p, sizeof p, "%s/certs/%s/fullchain.pem", ortoo_dir, MX_HOST);
    {
        size_t n;
        char *t = read_file(chain_pem, &n);
        write_file(p, t, n);
        free(t);
        snprintf(p, sizeof p, "%s/certs/%s/privkey.pem", ortoo_dir, MX_HOST);
        t = read_file(key_pem, &n);
        write_file(p, t, n);
        free(t);
    }
    snprintf(conf, sizeof conf, "%s/ortoo.conf", ortoo_dir);
    /* Run as whoever runs the tests; keep what it receives (the tests read
     * it back from the spool: no delivery), and no banner delay. */
    struct passwd *pw = getpwuid(geteuid());
    snprintf(text, sizeof text,
             "[server]\nhostname = %s\nspool = spool\nreactors = 1\nmax_message_size = 4000000\n"
             "user = %s\n"
             "[listen]\nsmtp = 127.0.0.1:0, [::1]:0\nsubmission = 127.0.0.1:0\n"
             "[tls]\ncert_dir = certs\n"
             "[smtp]\ngreeting_delay = 0\n"
             "[delivery]\nhold = on\n",
             MX_HOST, pw != NULL ? pw->pw_name : "root");
    write_file(conf, text, strlen(text));
    snprintf(ortoo_log, sizeof ortoo_log, "%s/ortoo.log", tmpdir);
    ortoo_pid = spawn((char *const[]){bin, "-c", ortoo_dir, "serve", NULL}, ortoo_log);
    wait_for(ortoo_log, "event=ready", ortoo_pid);
    addr = wait_for(ortoo_log, "role=smtp addr=127.0.0.1:", ortoo_pid);
    ortoo_port = atoi(addr);
    addr = wait_for(ortoo_log, "role=smtp addr=[::1]:", ortoo_pid);
    ortoo_port6 = atoi(addr);
    addr = wait_for(ortoo_log, "role=submission addr=127.0.0.1:", ortoo_pid);
    submission_port = atoi(addr);
    assert_true(ortoo_port > 0 && submission_port > 0);
}

/* smtp-sink with extra options on a free port (retried if taken meanwhile). */
static pid_t smtp_sink_start(const char *const *opts, int *port_out)
{
    for (int attempt = 0; attempt < 5; attempt++) {
        char *argv[24], listen[64];
        int n = 0, port = free_port();
        pid_t pid;

        /* Postfix's tools live in /usr/sbin, which is not on a plain
         * user's PATH. */
        argv[n++] = access("/usr/sbin/smtp-sink", X_OK) == 0 ? "/usr/sbin/smtp-sink" : "smtp-sink";
        if (geteuid() == 0) {
            argv[n++] = "-u"; /* as root smtp-sink needs a user to run as */
            argv[n++] = "nobody";
        }
        for (size_t i = 0; opts != NULL && opts[i] != NULL; i++)
            argv[n++] = (char *)opts[i];
        snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
        argv[n++] = listen;
        argv[n++] = "64";
        argv[n] = NULL;
        pid = spawn(argv, NULL);
        for (int i = 0; i < 200; i++) {
            if (can_connect(port)) {
                *port_out = port;
                return pid;
            }
            if (waitpid(pid, NULL, WNOHANG) == pid)
                break;
            usleep(25 * 1000);
        }
        stop(pid);
    }
    fail_msg("smtp-sink did not start");
    return -1;
}

static pid_t ortoo_sink_start(const char *rules, bool tls, int *port_out)
{
    char bin[PATH_MAX], pf[PATH_MAX], rf[PATH_MAX];
    char *argv[16];
    int n = 0;
    pid_t pid;
    static int seq;

    snprintf(bin, sizeof bin, "%s/bench/ortoo-sink", bindir);
    snprintf(pf, sizeof pf, "%s/sink-%d.port", tmpdir, ++seq);
    argv[n++] = bin;
    argv[n++] = "--listen";
    argv[n++] = "127.0.0.1:0";
    argv[n++] = "--port-file";
    argv[n++] = pf;
    argv[n++] = "--quiet";
    if (tls) {
        argv[n++] = "--cert";
        argv[n++] = chain_pem;
        argv[n++] = "--key";
        argv[n++] = key_pem;
    }
    if (rules != NULL) {
        snprintf(rf, sizeof rf, "%s/rules-%d", tmpdir, seq);
        write_file(rf, rules, strlen(rules));
        argv[n++] = "--rules";
        argv[n++] = rf;
    }
    argv[n] = NULL;
    pid = spawn(argv, NULL);
    for (int i = 0; i < 400; i++) {
        size_t len;
        char *t = read_file(pf, &len);
        if (t != NULL && len > 0 && strchr(t, '\n') != NULL) {
            *port_out = atoi(t);
            free(t);
            return pid;
        }
        free(t);
        usleep(25 * 1000);
    }
    fail_msg("ortoo-sink did not start");
    return -1;
}

/* A peer.py instance for one test: config JSON in, log path out. */
struct peer {
    pid_t pid;
    int port;
    char log[PATH_MAX];
};

static void peer_start(struct peer *p, const char *json)
{
    static int seq;
    char cfg[PATH_MAX], out[PATH_MAX], script[PATH_MAX];
    const char *port;

    seq++;
    snprintf(cfg, sizeof cfg, "%s/peer-%d.json", tmpdir, seq);
    snprintf(out, sizeof out, "%s/peer-%d.out", tmpdir, seq);
    snprintf(p->log, sizeof p->log, "%s/peer-%d.log", tmpdir, seq);
    snprintf(script, sizeof script, "%s/peer.py", srcdir);
    write_file(cfg, json, strlen(json));
    p->pid = spawn((char *const[]){"/usr/bin/python3", script, cfg, p->log, NULL}, out);
    port = wait_for(out, "port ", p->pid);
    p->port = atoi(port);
    assert_true(p->port > 0);
}

static void peer_stop(struct peer *p)
{
    stop(p->pid);
    p->pid = 0;
}

/* The peer's log lines of one kind ('R', 'C', 'D', 'B', 'T', 'E'), data
 * decoded: returns how many; out[i] are malloc'd (caller frees). */
static int peer_events(const struct peer *p, char kind, char **out, size_t *lens, int *tls, int max)
{
    char *txt = read_file(p->log, NULL), *save = NULL;
    int n = 0;

    if (txt == NULL)
        return 0;
    for (char *l = strtok_r(txt, "\n", &save); l != NULL; l = strtok_r(NULL, "\n", &save)) {
        int conn, t;
        char hex[4];
        if (l[0] != kind || n >= max)
            continue;
        if (kind == 'T' || kind == 'E' || kind == 'A') {
            out[n] = strdup(l);
            lens[n] = strlen(l);
            n++;
            continue;
        }
        if (sscanf(l + 2, "%d %d %3s", &conn, &t, hex) < 2)
            continue;
        const char *h = strchr(strchr(l + 2, ' ') + 1, ' ');
        h = h ? h + 1 : "";
        size_t hl = strlen(h);
        out[n] = malloc(hl / 2 + 1);
        for (size_t i = 0; i + 1 < hl + 1 && i / 2 < hl / 2; i += 2) {
            unsigned v;
            sscanf(h + i, "%2x", &v);
            out[n][i / 2] = (char)v;
        }
        lens[n] = hl / 2;
        out[n][lens[n]] = '\0';
        if (tls != NULL)
            tls[n] = t;
        n++;
    }
    free(txt);
    return n;
}

static void free_events(char **ev, int n)
{
    for (int i = 0; i < n; i++)
        free(ev[i]);
}

/* ---- group setup ------------------------------------------------------------ */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int group_setup(void **state)
{
    char self[PATH_MAX], file[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    char *cut;

    if (n <= 0)
        return -1;
    self[n] = '\0';
    cut = strstr(self, "/tests/unit/delivery/");
    if (cut == NULL)
        return -1;
    *cut = '\0';
    if (strlen(self) >= sizeof bindir)
        return -1;
    memcpy(bindir, self, strlen(self) + 1);
    snprintf(file, sizeof file, "%s", __FILE__);
    snprintf(srcdir, sizeof srcdir, "%s", dirname(file));
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    signal(SIGPIPE, SIG_IGN);
    pki_make();
    ortoo_start();
    sink_pid = smtp_sink_start(NULL, &sink_port);
    tlssink_pid = ortoo_sink_start(NULL, true, &tlssink_port);
    rulesink_pid = ortoo_sink_start("@temp.test tempfail=1\n@perm.test permfail=1\n", false,
                                    &rulesink_port);
    return 0;
}

static int group_teardown(void **state)
{
    stop(ortoo_pid);
    stop(sink_pid);
    stop(tlssink_pid);
    stop(rulesink_pid);
    for (int i = 0; i < MAX_SPAWNED; i++)
        stop(spawned[i]); /* left by failed tests */
    {
        /* Sanitizer reports of the server fail the run. */
        char *log = read_file(ortoo_log, NULL);
        bool bad = log != NULL && (strstr(log, "AddressSanitizer") || strstr(log, "LeakSanitizer") ||
                                   strstr(log, "runtime error"));
        if (bad)
            fprintf(stderr, "%s\n", log);
        free(log);
        if (bad)
            return -1;
    }
    if (getenv("ORTOO_TEST_KEEP") == NULL)
        nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* ---- running the client ---------------------------------------------------- */

struct fx {
    enum io_backend backend;
    struct io_loop *loop;
    struct tls_client *tls;    /* the system store + nothing else */
    struct tls_client *tls_ca; /* the test CA */
    struct io_op watchdog;
    bool timed_out;
};

static bool drain(struct fx *fx);

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof *fx);
    struct tls_client_opts o = {0};
    char err[256];

    fx->backend = *(enum io_backend *)*state;
    fx->loop = io_loop_new(fx->backend, 256);
    assert_non_null(fx->loop);
    fx->tls = tls_client_new_opts(&o, err, sizeof err);
    assert_non_null(fx->tls);
    o.ca_file = ca_pem;
    fx->tls_ca = tls_client_new_opts(&o, err, sizeof err);
    assert_non_null(fx->tls_ca);
    bdat_max = SMTP_CLIENT_BDAT_MAX;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    bool drained = drain(fx);

    /* After a failed test a client may be left: free the loop anyway (its
     * ring goes, no callback runs), so that later tests get theirs. */
    io_loop_free(fx->loop);
    tls_client_free(fx->tls);
    tls_client_free(fx->tls_ca);
    free(fx);
    return drained ? 0 : -1;
}

/* One client's story, as the callbacks saw it. */
struct run {
    struct fx *fx;
    struct smtp_client *c;
    struct smtp_msg *msgs;     /* sent in turn after ready */
    size_t nmsgs, next;
    int ready, done, closed;
    bool keep_idle;            /* after the last message: stay idle (no QUIT) */
    bool close_in_done;        /* smtp_client_close() from inside done() */
    struct smtp_result why;    /* closed()'s */
    struct smtp_client_info info;
    char tls_version[32];
    int send_rc;
};

static void snap(struct run *r)
{
    const struct smtp_client_info *i = smtp_client_info(r->c);

    r->info = *i;
    snprintf(r->tls_version, sizeof r->tls_version, "%s", i->tls_version ? i->tls_version : "");
    r->info.tls_version = NULL;
    r->info.tls_cipher = NULL;
    r->info.dane_match = NULL;
    r->info.mx_host = NULL;
}

static void next_or_quit(struct run *r)
{
    if (r->next < r->nmsgs) {
        r->send_rc = smtp_client_send(r->c, &r->msgs[r->next++]);
        assert_int_equal(r->send_rc, 0);
    } else if (!r->keep_idle) {
        assert_int_equal(smtp_client_quit(r->c), 0);
    }
}

static void on_ready(struct smtp_client *c, void *arg)
{
    struct run *r = arg;

    r->ready++;
    snap(r);
    assert_true(smtp_client_idle(c));
    {
        struct smtp_msg empty = {.sender = ""};
        assert_int_equal(smtp_client_send(c, &empty), -EINVAL); /* no recipient */
    }
    if (r->msgs == NULL) {
        if (!r->keep_idle)
            assert_int_equal(smtp_client_quit(c), 0);
        return;
    }
    r->next = 0;
    next_or_quit(r);
}

static void on_done(struct smtp_client *c, struct smtp_msg *m, void *arg)
{
    struct run *r = arg;

    r->done++;
    snap(r);
    if (r->close_in_done) {
        smtp_client_close(c);
        io_loop_stop(r->fx->loop);
        return;
    }
    if (smtp_client_idle(c))
        next_or_quit(r);
}

static void on_closed(struct smtp_client *c, const struct smtp_result *why, void *arg)
{
    struct run *r = arg;

    r->closed++;
    r->why = *why;
    snap(r);
    io_loop_stop(r->fx->loop);
}

static const struct smtp_client_ops run_ops = {on_ready, on_done, on_closed};

static void on_watchdog(struct io_op *op, int res, const char *data, unsigned flags)
{
    struct fx *fx = op->owner;

    if (res == 0)
        fx->timed_out = true;
    io_loop_stop(fx->loop);
}

/* Run the loop until a callback stops it, then until every client is
 * freed (their final callbacks may take a turn or two); fail on the
 * watchdog. */
static void run_loop(struct fx *fx)
{
    io_op_init(&fx->watchdog, fx);
    assert_int_equal(io_timer_start(fx->loop, &fx->watchdog, WATCHDOG_MS, on_watchdog), 0);
    assert_int_equal(io_loop_run(fx->loop), 0);
    if (io_op_busy(&fx->watchdog)) {
        io_cancel(fx->loop, &fx->watchdog);
        assert_int_equal(io_loop_run(fx->loop), 0);
    }
    assert_false(fx->timed_out);
}

/* Let closed clients finish (bounded): every op must be idle before the
 * loop is freed.  Returns false when some client is still alive. */
static bool drain(struct fx *fx)
{
    for (int i = 0; i < 200 && smtp_client_count() > 0; i++) {
        io_op_init(&fx->watchdog, fx);
        if (io_timer_start(fx->loop, &fx->watchdog, 5, on_watchdog) < 0 ||
            io_loop_run(fx->loop) < 0)
            break;
        fx->timed_out = false;
    }
    return smtp_client_count() == 0;
}

/* Deliver msgs over one connection with params p; returns when closed. */
static void deliver(struct fx *fx, struct run *r, struct smtp_client_params *p,
                    struct smtp_msg *msgs, size_t n)
{
    r->fx = fx;
    r->msgs = msgs;
    r->nmsgs = n;
    r->c = smtp_client_connect(fx->loop, p, &run_ops, r);
    assert_non_null(r->c);
    run_loop(fx);
}

static struct smtp_client_params params_for(struct fx *fx, struct sockaddr_in *a, int port,
                                            enum smtp_tls_policy pol)
{
    *a = loopback(port);
    return (struct smtp_client_params){
        .addr = (struct sockaddr *)a,
        .addr_len = sizeof *a,
        .mx_host = MX_HOST,
        .helo_name = "client.test",
        .tls = pol,
        .tls_ctx = pol == SMTP_TLS_VERIFY ? fx->tls_ca : fx->tls,
    };
}

/* ---- messages --------------------------------------------------------------- */

/* A message: the stored wire form of a body full of leading dots (made
 * from plain lines by dot-stuffing them, as the server stores them), also
 * written into a file at an offset (for io_sendfile). */
struct testmsg {
    struct smtp_msg m;
    struct smtp_rcpt rcpts[8];
    char sender[64];
    char *wire;
    size_t len;
    int fd;
};

static const char PREFIX[] = "Received: from client.test by ortoo (test); Mon, 1 Dec 2026\r\n";

static void msg_make(struct testmsg *t, const char *sender, size_t body_lines, const char *const *rcpts)
{
    size_t cap = 512 + body_lines * 90, n = 0;
    char path[PATH_MAX];
    static int seq;

    memset(t, 0, sizeof *t);
    snprintf(t->sender, sizeof t->sender, "%s", sender);
    t->wire = malloc(cap);
    n += (size_t)snprintf(t->wire + n, cap - n,
                          "From: <%s>\r\nTo: <alice@example.test>\r\nSubject: dots\r\n"
                          "Message-ID: <%s.%d@client.test>\r\n\r\n",
                          sender, sender, ++seq);
    for (size_t i = 0; i < body_lines; i++) {
        /* Plain lines, then stuffed: "." -> "..", ".x" -> "..x". */
        static const char *const plain[] = {".", "..", ".leading dot", "no dot here", "",
                                            "...three", ". space", "x.y"};
        const char *l = plain[i % 8];
        if (l[0] == '.')
            t->wire[n++] = '.';
        n += (size_t)snprintf(t->wire + n, cap - n, "%s line %zu\r\n", l, i);
    }
    t->len = n;
    snprintf(path, sizeof path, "%s/msg-XXXXXX", tmpdir);
    t->fd = mkstemp(path);
    assert_true(t->fd >= 0);
    unlink(path);
    assert_int_equal(pwrite(t->fd, "junk before the record", 22, 0), 22);
    assert_int_equal(pwrite(t->fd, t->wire, t->len, 4096), (ssize_t)t->len);
    t->m.sender = t->sender;
    t->m.prefix = PREFIX;
    t->m.prefix_len = sizeof PREFIX - 1;
    t->m.data = t->wire;
    t->m.len = t->len;
    t->m.fd = t->fd;
    t->m.off = 4096;
    t->m.rcpts = t->rcpts;
    for (size_t i = 0; rcpts != NULL && rcpts[i] != NULL; i++) {
        t->rcpts[i].addr = rcpts[i];
        t->m.nrcpts++;
    }
}

static void msg_free(struct testmsg *t)
{
    free(t->wire);
    if (t->fd >= 0)
        close(t->fd);
}

/* What ortoo stored for the message from `sender`. */
struct found {
    const char *sender;
    char *data;
    size_t len;
    size_t nrcpts;
    int hits;
};

static int find_cb(const struct spool_msg_info *m, void *arg)
{
    struct found *f = arg;

    if (strcmp(m->sender, f->sender) != 0)
        return 0;
    f->hits++;
    free(f->data);
    f->data = malloc(m->size + 1);
    memcpy(f->data, m->data, m->size);
    f->len = m->size;
    f->nrcpts = m->nrcpts;
    return 0;
}

/* ortoo must hold exactly PREFIX + the wire form, once. */
static void assert_stored(const struct testmsg *t)
{
    char spool[PATH_MAX];
    struct found f = {.sender = t->sender};

    snprintf(spool, sizeof spool, "%s/spool", ortoo_dir);
    assert_int_equal(spool_scan(spool, find_cb, &f), 0);
    if (f.hits != 1)
        fail_msg("%d stored messages from %s", f.hits, t->sender);
    assert_int_equal(f.len, sizeof PREFIX - 1 + t->len);
    assert_memory_equal(f.data, PREFIX, sizeof PREFIX - 1);
    if (memcmp(f.data + sizeof PREFIX - 1, t->wire, t->len) != 0)
        fail_msg("stored bytes differ from the wire form sent");
    free(f.data);
}

static void assert_not_stored(const char *sender)
{
    char spool[PATH_MAX];
    struct found f = {.sender = sender};

    snprintf(spool, sizeof spool, "%s/spool", ortoo_dir);
    assert_int_equal(spool_scan(spool, find_cb, &f), 0);
    assert_int_equal(f.hits, 0);
    free(f.data);
}

static char *uniq(const char *what, const struct fx *fx)
{
    static char buf[8][64];
    static int i;
    static unsigned long n;

    i = (i + 1) % 8;
    snprintf(buf[i], sizeof buf[i], "%s-%s-%lu-%d@client.test", what,
             io_backend_name(fx->backend), ++n, (int)getpid());
    return buf[i];
}

/* ---- tests: ortoo as the receiver -------------------------------------------- */

/* Plain text to ortoo (STARTTLS offered, policy NONE): BDAT, pipelined,
 * the body from the file with io_sendfile, un-dot-stuffed on the fly; a
 * refused recipient next to an accepted one. */
static void test_ortoo_plain_bdat(void **state)
{
    struct fx *fx = *state;
    struct sockaddr_in a;
    struct smtp_client_params p = params_for(fx, &a, ortoo_port, SMTP_TLS_NONE);
    struct testmsg t;
    struct run r = {0};

    msg_make(&t, uniq("plain", fx), 1500, (const char *const[]){"alice@example.test",
                                                                 "nobody@example.test", NULL});
    deliver(fx, &r, &p, &t.m, 1);
    assert_int_equal(r.ready, 1);
    assert_int_equal(r.done, 1);
    assert_int_equal(r.closed, 1);
    assert_int_equal(r.why.outcome, SMTP_OUT_OK);
    assert_int_equal(r.why.stage, SMTP_STAGE_QUIT);
    assert_true(t.m.used_bdat);
    assert_false(r.info.tls);
    assert_true(r.info.ext & SMTP_EXT_STARTTLS);
    assert_true(r.info.ext & SMTP_EXT_CHUNKING);
    assert_int_equal(t.m.naccepted, 1);
    assert_int_equal(t.m.result.outcome, SMTP_OUT_OK);
    assert_int_equal(t.m.result.code, 250);
    assert_int_equal(t.m.result.stage, SMTP_STAGE_DATA);
    assert_int_equal(t.rcpts[0].result.outcome, SMTP_OUT_OK);
    assert_int_equal(t.rcpts[0].result.code, 250);
    assert_int_equal(t.rcpts[1].result.outcome, SMTP_OUT_PERM);
    assert_int_equal(t.rcpts[1].result.code, 550);
    assert_string_equal(t.rcpts[1].result.enhanced, "5.1.1");
    assert_int_equal(t.rcpts[1].result.stage, SMTP_STAGE_RCPT);
    assert_int_equal(r.info.messages, 1);
    assert_stored(&t);
    msg_free(&t);
}

/* DATA (CHUNKING ignored): the stored wire form goes out as it is. */
static void test_ortoo_plain_data(void **state)
{
    struct fx *fx = *state;
    struct sockaddr_in a;
    struct smtp_client_params p = params_for(fx, &a, ortoo_port, SMTP_TLS_NONE);
    struct testmsg t;
    struct run r = {0};

    p.ext_ignore = SMTP_EXT_CHUNKING;
    msg_make(&t, uniq("data", fx), 1500, (const char *const[]){"alice@example.test", NULL});
    deliver(fx, &r, &p, &t.m, 1);
    assert_int_equal(r.done, 1);
    assert_false(t.m.used_bdat);
    assert_int_equal(t.m.result.outcome, SMTP_OUT_OK);
    assert_stored(&t);
    msg_free(&t);

    /* Without the file: sends straight from the mapped bytes. */
    memset(&r, 0, sizeof r);
    msg_make(&t, uniq("data-map", fx), 1500, (const char *const[]){"alice@example.test", NULL});
    close(t.fd);
    t.fd = -1;
    t.m.fd = -1;
    deliver(fx, &r, &p, &t.m, 1);
    assert_int_equal(t.m.result.outcome, SMTP_OUT_OK);
    assert_stored(&t);
    msg_free(&t);
}

/* Many BDAT chunks (tiny chunk size), pipelined and not. */
static void test_ortoo_bdat_chunks(void **state)
{
    struct fx *fx = *state;
    struct sockaddr_in a;
    struct smtp_client_params p = params_for(fx, &a, ortoo_port, SMTP_TLS_NONE);
    struct testmsg t;
    struct run r = {0};

    bdat_max = 777;
    msg_make(&t, uniq("chunks", fx), 300, (const char *const[]){"alice@example.test", NULL});
    deliver(fx, &r, &p, &t.m, 1);
    assert_int_equal(t.m.result.outcome, SMTP_OUT_OK);
    assert_true(t.m.used_bdat);
    assert_stored(&t);
    msg_free(&t);

    memset(&r, 0, sizeof r);
    p.ext_ignore = SMTP_EXT_PIPELINING;
    msg_make(&t, uniq("chunks-nopipe", fx), 300, (const char *const[]){"alice@example.test", NULL});
    deliver(fx, &r, &p, &t.m, 1);
    assert_int_equal(t.m.result.outcome, SMTP_OUT_OK);
    assert_stored(&t);
    msg_free(&t);
}

/* Opportunistic STARTTLS to ortoo: TLS 1.3, the body through SSL_write
 * from the mapped bytes (BDAT, then DATA), byte-exact. */
static void test_ortoo_starttls(void **state)
{
    struct fx *fx = *state;
    struct sockaddr_in a;
    struct smtp_client_params p = params_for(fx, &a, ortoo_port, SMTP_TLS_MAY);
    struct testmsg t[2];
    struct run r = {0};

    msg_make(&t[0], uniq("tls-bdat", fx), 1500, (const char *const[]){"alice@example.test", NULL});
    msg_make(&t[1], uniq("tls-bdat2", fx), 3, (const char *const[]){"alice@example.test", NULL});
    {
        struct smtp_msg ms[2] = {t[0].m, t[1].m};
        deliver(fx, &r, &p, ms, 2);
        assert_int_equal(ms[0].result.outcome, SMTP_OUT_OK);
        assert_int_equal(ms[1].result.outcome, SMTP_OUT_OK);
    }
    assert_true(r.info.tls);
    assert_string_equal(r.tls_version, "TLSv1.3");
    assert_false(r.info.tls_verified);
    assert_int_equal(r.done, 2);
    assert_stored(&t[0]);
    assert_stored(&t[1]);
    msg_free(&t[0]);
    msg_free(&t[1]);

    memset(&r, 0, sizeof r);
    p.ext_ignore = SMTP_EXT_CHUNKING;
    msg_make(&t[0], uniq("tls-data", fx), 1500, (const char *const[]){"alice@example.test", NULL});
    deliver(fx, &r, &p, &t[0].m, 1);
    assert_int_equal(t[0].m.result.outcome, SMTP_OUT_OK);
    assert_false(t[0].m.used_bdat);
    assert_true(r.info.tls);
    assert_stored(&t[0]);
    msg_free(&t[0]);
}

/* The second connection to the same MX resumes the TLS session; a
 * destination with resumption off does not. */
static void test_ortoo_resumption(void **state)
{
    struct fx *fx = *state;
    struct sockaddr_in a;
    struct smtp_client_params p = params_for(fx, &a, ortoo_port, SMTP_TLS_MAY);
    struct run r = {0};

    deliver(fx, &r, &p, NULL, 0);
    assert_true(r.info.tls);
    assert_false(r.info.tls_resumed);
    memset(&r, 0, sizeof r);
    deliver(fx, &r, &p, NULL, 0);
    assert_true(r.info.tls);
    assert_true(r.info.tls_resumed);
    assert_int_equal(r.why.outcome, SMTP_OUT_OK);

    memset(&r, 0, sizeof r);
    p.tls_no_resume = true;
    deliver(fx, &r, &p, NULL, 0);
    assert_true(r.info.tls);
    assert_false(r.info.tls_resumed);
}

/* verify: PKIX against the test CA and the MX name. */
static void test_ortoo_verify(void **state)
{
    struct fx *fx = *state;
    struct sockaddr_in a;
    struct smtp_client_params p = params_for(fx, &a, ortoo_port, SMTP_TLS_VERIFY);
    struct testmsg t;
    struct run r = {0};
    const char *wrong[] = {"smarthost.other.test"};

    msg_make(&t, uniq("verify", fx), 20, (const char *const[]){"alice@example.test", NULL});
    deliver(fx, &r, &p, &t.m, 1);
    assert_int_equal(t.m.result.outcome, SMTP_OUT_OK);
    assert_true(r.info.tls_verified);
    assert_false(r.info.dane_verified);
    assert_stored(&t);
    msg_free(&t);

    /* A name the certificate does not carry: temporary, nothing sent. */
    memset(&r, 0, sizeof r);
    p.tls_names = wrong;
    p.ntls_names = 1;
    deliver(fx, &r, &p, NULL, 0);
    assert_int_equal(r.ready, 0);
    assert_int_equal(r.why.outcome, SMTP_OUT_TEMP);
    assert_int_equal(r.why.stage, SMTP_STAGE_TLS_VERIFY);
    assert_non_null(strstr(r.why.text, "certificate verify failed"));

    /* Another trust store (the system's) does not know the test CA. */
    memset(&r, 0, sizeof r);
    p.tls_names = NULL;
    p.ntls_names = 0;
    p.tls_ctx = fx->tls;
    deliver(fx, &r, &p, NULL, 0);
    assert_int_equal(r.why.stage, SMTP_STAGE_TLS_VERIFY);
}

/* DANE-EE 3 1 1 matching: verified and delivered. */
static void test_ortoo_dane_ee(void **state)
{
    struct fx *fx = *state;
    struct sockaddr_in a;
    struct smtp_client_params p = params_for(fx, &a, ortoo_port, SMTP_TLS_DANE);
    struct tls_tlsa rec = {.usage = 3, .selector = 1, .mtype = 1, .data = leaf_spki_sha256,
                           .len = 32};
    struct testmsg t;
    struct run r = {0};

    p.tlsa = &rec;
    p.ntlsa = 1;
    msg_make(&t, uniq("dane-ee", fx), 20, (const char *const[]){"alice@example.test", NULL});
    deliver(fx, &r, &p, &t.m, 1);
    assert_int_equal(t.m.result.outcome, SMTP_OUT_OK);
    assert_true(r.info.tls_verified);
    assert_true(r.info.dane_verified);
    assert_stored(&t);
    msg_free(&t);
}

/* DANE-TA 2 0 1 (the test CA), with the name check on the MX host. */
static void test_ortoo_dane_ta(void **state)
{
    struct fx *fx = *state;
    struct sockaddr_in a;
    struct smtp_client_params p = params_for(fx, &a, ortoo_port, SMTP_TLS_DANE);
    struct tls_tlsa rec = {.usage = 2, .selector = 0, .mtype = 1, .data = ca_sha256, .len = 32};
    const char *names[] = {"tlsa-base.example", MX_HOST};
    const char *wrong[] = {"other.example.test"};
    struct testmsg t;
    struct run r = {0};

    p.tlsa = &rec;
    p.ntlsa = 1;
    p.tls_names = names;
    p.ntls_names = 2;
    msg_make(&t, uniq("dane-ta", fx), 20, (const char *const[]){"alice@example.test", NULL});
    deliver(fx, &r, &p, &t.m, 1);
    assert_int_equal(t.m.result.outcome, SMTP_OUT_OK);
    assert_true(r.info.dane_verified);
    assert_stored(&t);
    msg_free(&t);

    memset(&r, 0, sizeof r);
    p.tls_names = wrong;
    p.ntls_names = 1;
    msg_make(&t, uniq("dane-ta-bad", fx), 20, (const char *const[]){"alice@example.test", NULL});
    deliver(fx, &r, &p, &t.m, 1);
    assert_int_equal(r.ready, 0);
    assert_int_equal(r.done, 0);
    assert_int_equal(r.why.outcome, SMTP_OUT_TEMP);
    assert_int_equal(r.why.stage, SMTP_STAGE_TLS_VERIFY);
    assert_not_stored(t.sender);
    msg_free(&t);
}

/* Every TLSA record unusable (PKIX-EE, RFC 7672 2.2): TLS, no checks. */
static void test_ortoo_dane_unusable(void **state)
{
    struct fx *fx = *state;
    struct sockaddr_in a;
    struct smtp_client_params p = params_for(fx, &a, ortoo_port, SMTP_TLS_DANE);
    struct tls_tlsa rec = {.usage = 1, .selector = 1, .mtype = 1, .data = ca_sha256, .len = 32};
    struct run r = {0};

    p.tlsa = &rec;
    p.ntlsa = 1;
    deliver(fx, &r, &p, NULL, 0);
    assert_int_equal(r.ready, 1);
    assert_true(r.info.tls);
    assert_false(r.info.tls_verified);
    assert_false(r.info.dane_verified);
}

/* AUTH PLAIN on the submission port (STARTTLS, verified): relays; and
 * never without TLS. */
static void test_ortoo_auth(void **state)
{
    struct fx *fx = *state;
    struct sockaddr_in a;
    struct smtp_client_params p = params_for(fx, &a, submission_port, SMTP_TLS_VERIFY);
    struct testmsg t;
    struct run r = {0};

    p.auth_user = "alice@example.test";
    p.auth_pass = "alice-secret-1";
    msg_make(&t, "alice@example.test", 10, (const char *const[]){"bob@remote.test", NULL});
    snprintf(t.sender, sizeof t.sender, "alice@example.test");
    deliver(fx, &r, &p, &t.m, 1);
    assert_int_equal(r.ready, 1);
    assert_int_equal(t.m.result.outcome, SMTP_OUT_OK);
    msg_free(&t);

    memset(&r, 0, sizeof r);
    p.auth_pass = "wrong";
    deliver(fx, &r, &p, NULL, 0);
    assert_int_equal(r.ready, 0);
    assert_int_equal(r.why.stage, SMTP_STAGE_AUTH);
    assert_int_equal(r.why.outcome, SMTP_OUT_TEMP);
    assert_int_equal(r.why.code, 535);

    memset(&r, 0, sizeof r);
    p.tls = SMTP_TLS_NONE;
    deliver(fx, &r, &p, NULL, 0);
    assert_int_equal(r.ready, 0);
    assert_int_equal(r.why.stage, SMTP_STAGE_AUTH);
    assert_non_null(strstr(r.why.text, "only sent over TLS"));
}

/* Several messages on one connection; RSET only after a transaction that
 * was left open (all recipients refused). */
static void test_ortoo_several(void **state)
{
    struct fx *fx = *state;
    struct sockaddr_in a;
    struct smtp_client_params p = params_for(fx, &a, ortoo_port, SMTP_TLS_MAY);
    struct testmsg t[5];
    struct smtp_msg ms[5];
    struct run r = {0};

    for (int i = 0; i < 5; i++) {
        msg_make(&t[i], uniq("several", fx), 50 * (size_t)i,
                 (const char *const[]){i == 2 ? "nobody@example.test" : "alice@example.test", NULL});
        ms[i] = t[i].m;
    }
    deliver(fx, &r, &p, ms, 5);
    assert_int_equal(r.ready, 1);
    assert_int_equal(r.done, 5);
    assert_int_equal(r.info.messages, 5);
    for (int i = 0; i < 5; i++) {
        if (i == 2) {
            assert_int_equal(ms[i].result.outcome, SMTP_OUT_PERM);
            assert_int_equal(ms[i].naccepted, 0);
            assert_not_stored(t[i].sender);
        } else {
            assert_int_equal(ms[i].result.outcome, SMTP_OUT_OK);
            assert_stored(&t[i]);
        }
        msg_free(&t[i]);
    }
}


/* IPv6: the peer address as logged, the message stored. */
static void test_ortoo_ipv6(void **state)
{
    struct fx *fx = *state;
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)ortoo_port6)};
    struct sockaddr_in a;
    struct smtp_client_params p = params_for(fx, &a, ortoo_port, SMTP_TLS_MAY);
    struct testmsg t;
    struct run r = {0};
    char want[64];

    a6.sin6_addr = in6addr_loopback;
    p.addr = (struct sockaddr *)&a6;
    p.addr_len = sizeof a6;
    msg_make(&t, uniq("v6", fx), 20, (const char *const[]){"alice@example.test", NULL});
    deliver(fx, &r, &p, &t.m, 1);
    assert_int_equal(t.m.result.outcome, SMTP_OUT_OK);
    snprintf(want, sizeof want, "[::1]:%d", ortoo_port6);
    assert_string_equal(r.info.peer, want);
    assert_true(r.info.tls);
    assert_stored(&t);
    msg_free(&t);
}

/* ---- tests: smtp-sink and ortoo-sink ------------------------------------------ */

/* Mandatory TLS to a server without STARTTLS: temporary, in clear nothing. */
static void test_sink_tls_required(void **state)
{
    struct fx *fx = *state;
    struct sockaddr_in a;
    struct smtp_client_params p = params_for(fx, &a, sink_port, SMTP_TLS_ENCRYPT);
    struct testmsg t;
    struct run r = {0};

    msg_make(&t, uniq("req", fx), 5, (const char *const[]){"x@sink.test", NULL});
    deliver(fx, &r, &p, &t.m, 1);
    assert_int_equal(r.ready, 0);
    assert_int_equal(r.done, 0);
    assert_int_equal(r.why.outcome, SMTP_OUT_TEMP);
    assert_int_equal(r.why.stage, SMTP_STAGE_STARTTLS);
    msg_free(&t);

    /* Opportunistic: clear text is fine. */
    memset(&r, 0, sizeof r);
    p.tls = SMTP_TLS_MAY;
    msg_make(&t, uniq("may", fx), 5, (const char *const[]){"x@sink.test", NULL});
    deliver(fx, &r, &p, &t.m, 1);
    assert_int_equal(t.m.result.outcome, SMTP_OUT_OK);
    assert_false(r.info.tls);
    msg_free(&t);
}

/* smtp-sink refusing RCPT: 4xx and 5xx per recipient, without PIPELINING
 * (its -r and -f imply -p): the one-command-at-a-time path. */
static void test_sink_rcpt_refused(void **state)
{
    struct fx *fx = *state;
    int port;
    pid_t pid;
    struct sockaddr_in a;
    struct smtp_client_params p;
    struct testmsg t;
    struct run r = {0};

    pid = smtp_sink_start((const char *const[]){"-r", "RCPT", NULL}, &port);
    p = params_for(fx, &a, port, SMTP_TLS_NONE);
    msg_make(&t, uniq("r4", fx), 5, (const char *const[]){"a@sink.test", "b@sink.test", NULL});
    deliver(fx, &r, &p, &t.m, 1);
    assert_false(r.info.ext & SMTP_EXT_PIPELINING);
    assert_int_equal(t.m.naccepted, 0);
    assert_int_equal(t.rcpts[0].result.outcome, SMTP_OUT_TEMP);
    assert_int_equal(t.rcpts[0].result.code, 450);
    assert_int_equal(t.rcpts[1].result.outcome, SMTP_OUT_TEMP);
    assert_int_equal(t.m.result.outcome, SMTP_OUT_TEMP);
    assert_int_equal(r.why.outcome, SMTP_OUT_OK);
    msg_free(&t);
    stop(pid);

    memset(&r, 0, sizeof r);
    pid = smtp_sink_start((const char *const[]){"-f", "RCPT", NULL}, &port);
    p = params_for(fx, &a, port, SMTP_TLS_NONE);
    msg_make(&t, uniq("r5", fx), 5, (const char *const[]){"a@sink.test", NULL});
    deliver(fx, &r, &p, &t.m, 1);
    assert_int_equal(t.rcpts[0].result.outcome, SMTP_OUT_PERM);
    assert_int_equal(t.rcpts[0].result.code, 500);
    assert_int_equal(t.m.result.outcome, SMTP_OUT_PERM);
    msg_free(&t);
    stop(pid);
}

/* An old server: EHLO refused, HELO works; then 8BITMIME is missing for a
 * message that needs it (refused up front, the connection stays). */
static void test_sink_helo_and_8bit(void **state)
{
    struct fx *fx = *state;
    int port;
    pid_t pid = smtp_sink_start((const char *const[]){"-e", NULL}, &port);
    struct sockaddr_in a;
    struct smtp_client_params p = params_for(fx, &a, port, SMTP_TLS_MAY);
    struct testmsg t[2];
    struct smtp_msg ms[2];
    struct run r = {0};

    msg_make(&t[0], uniq("8bit", fx), 5, (const char *const[]){"a@sink.test", NULL});
    msg_make(&t[1], uniq("7bit", fx), 5, (const char *const[]){"a@sink.test", NULL});
    t[0].m.flags = SMTP_MSG_8BITMIME;
    ms[0] = t[0].m;
    ms[1] = t[1].m;
    deliver(fx, &r, &p, ms, 2);
    assert_false(r.info.esmtp);
    assert_int_equal(r.info.ext, 0);
    assert_int_equal(ms[0].result.outcome, SMTP_OUT_PERM);
    assert_int_equal(ms[0].result.code, 0);
    assert_string_equal(ms[0].result.enhanced, "5.6.3");
    assert_int_equal(ms[0].rcpts[0].result.outcome, SMTP_OUT_PERM);
    assert_int_equal(ms[1].result.outcome, SMTP_OUT_OK);
    assert_int_equal(r.done, 2);
    msg_free(&t[0]);
    msg_free(&t[1]);
    stop(pid);
}

/* ortoo-sink's rules: 4xx and 5xx by recipient domain, one transaction. */
static void test_rulesink(void **state)
{
    struct fx *fx = *state;
    struct sockaddr_in a;
    struct smtp_client_params p = params_for(fx, &a, rulesink_port, SMTP_TLS_MAY);
    struct testmsg t;
    struct run r = {0};

    msg_make(&t, uniq("rules", fx), 5,
             (const char *const[]){"x@temp.test", "y@perm.test", "z@ok.test", NULL});
    deliver(fx, &r, &p, &t.m, 1);
    assert_int_equal(t.m.naccepted, 1);
    assert_int_equal(t.rcpts[0].result.outcome, SMTP_OUT_TEMP);
    assert_true(t.rcpts[0].result.code / 100 == 4);
    assert_int_equal(t.rcpts[1].result.outcome, SMTP_OUT_PERM);
    assert_true(t.rcpts[1].result.code / 100 == 5);
    assert_int_equal(t.rcpts[2].result.outcome, SMTP_OUT_OK);
    assert_int_equal(t.m.result.outcome, SMTP_OUT_OK);
    msg_free(&t);
}

/* ortoo-sink with STARTTLS: opportunistic TLS, DATA (no CHUNKING there). */
static void test_tlssink(void **state)
{
    struct fx *fx = *state;
    struct sockaddr_in a;
    struct smtp_client_params p = params_for(fx, &a, tlssink_port, SMTP_TLS_MAY);
    struct testmsg t;
    struct run r = {0};

    msg_make(&t, uniq("tlssink", fx), 1000, (const char *const[]){"x@ok.test", NULL});
    deliver(fx, &r, &p, &t.m, 1);
    assert_true(r.info.tls);
    assert_false(t.m.used_bdat);
    assert_int_equal(t.m.result.outcome, SMTP_OUT_OK);
    msg_free(&t);
}

/* ---- tests: the scripted peer -------------------------------------------------- */

static void peer_tls_json(char *buf, size_t len, const char *extra)
{
    snprintf(buf, len, "{\"tls\": {\"cert\": \"%s\", \"key\": \"%s\"}%s%s}", chain_pem, key_pem,
             extra[0] ? ", " : "", extra);
}

/* DANE-EE mismatch: the handshake fails, the server saw EHLO and STARTTLS
 * in clear text and nothing else, ever. */
static void test_peer_dane_mismatch(void **state)
{
    struct fx *fx = *state;
    struct peer pe;
    struct sockaddr_in a;
    struct smtp_client_params p;
    unsigned char wrong[32];
    struct tls_tlsa rec = {.usage = 3, .selector = 1, .mtype = 1, .data = wrong, .len = 32};
    struct testmsg t;
    struct run r = {0};
    char json[4096], *ev[64];
    size_t lens[64];
    int tls[64], n;

    memcpy(wrong, leaf_spki_sha256, 32);
    wrong[7] ^= 0x40;
    peer_tls_json(json, sizeof json, "\"ehlo\": [\"peer.test\", \"PIPELINING\", \"CHUNKING\"]");
    peer_start(&pe, json);
    p = params_for(fx, &a, pe.port, SMTP_TLS_DANE);
    p.tlsa = &rec;
    p.ntlsa = 1;
    msg_make(&t, uniq("mismatch", fx), 5, (const char *const[]){"x@peer.test", NULL});
    deliver(fx, &r, &p, &t.m, 1);
    assert_int_equal(r.ready, 0);
    assert_int_equal(r.why.outcome, SMTP_OUT_TEMP);
    assert_int_equal(r.why.stage, SMTP_STAGE_TLS_VERIFY);
    assert_non_null(strstr(r.why.text, "DANE"));
    for (int i = 0; i < 200; i++) { /* the peer logs the handshake's end */
        char *ev1[4];
        size_t l1[4];
        int k = peer_events(&pe, 'T', ev1, l1, NULL, 4);
        free_events(ev1, k);
        if (k > 0)
            break;
        usleep(25 * 1000);
    }
    peer_stop(&pe);
    n = peer_events(&pe, 'C', ev, lens, tls, 64);
    assert_int_equal(n, 2);
    assert_string_equal(ev[0], "EHLO client.test");
    assert_string_equal(ev[1], "STARTTLS");
    assert_int_equal(tls[0] + tls[1], 0);
    free_events(ev, n);
    n = peer_events(&pe, 'T', ev, lens, NULL, 64);
    assert_int_equal(n, 1);
    assert_non_null(strstr(ev[0], "fail"));
    free_events(ev, n);
    msg_free(&t);
}

/* Deliver t to the scripted peer pe, started with json, under policy pol;
 * the peer must accept it and is stopped (its log stays for peer_events).
 * Its reads ('R' events, TLS flags in tls unless NULL) go to ev: returns
 * how many. */
static int peer_deliver_reads(struct fx *fx, struct peer *pe, const char *json,
                              enum smtp_tls_policy pol, struct testmsg *t, struct run *r, char **ev,
                              size_t *lens, int *tls, int max)
{
    struct sockaddr_in a;
    struct smtp_client_params p;

    peer_start(pe, json);
    p = params_for(fx, &a, pe->port, pol);
    memset(r, 0, sizeof *r);
    deliver(fx, r, &p, &t->m, 1);
    assert_int_equal(t->m.result.outcome, SMTP_OUT_OK);
    peer_stop(pe);
    return peer_events(pe, 'R', ev, lens, tls, max);
}

/* RFC 2920: MAIL, every RCPT and DATA reach the server in one read; with
 * CHUNKING, MAIL, RCPTs, "BDAT n LAST" and the whole short body do. */
static void test_peer_pipelining(void **state)
{
    struct fx *fx = *state;
    struct peer pe;
    struct testmsg t;
    struct run r;
    char *ev[64];
    size_t lens[64];
    int n, found = 0;

    msg_make(&t, uniq("pipe", fx), 5,
             (const char *const[]){"a@peer.test", "b@peer.test", "c@peer.test", NULL});
    t.rcpts[0].notify = "SUCCESS,FAILURE";
    t.rcpts[0].orcpt = "rfc822;a@peer.test";
    t.m.dsn_ret = "HDRS";
    t.m.dsn_envid = "QQ314159";
    n = peer_deliver_reads(fx, &pe,
                           "{\"ehlo\": [\"peer.test\", \"PIPELINING\", \"SIZE 100000\", \"DSN\"]}",
                           SMTP_TLS_NONE, &t, &r, ev, lens, NULL, 64);
    assert_int_equal(t.m.naccepted, 3);
    assert_true(t.m.dsn_passed);
    for (int i = 0; i < n; i++) {
        char want[512];
        snprintf(want, sizeof want,
                 "MAIL FROM:<%s> SIZE=%zu RET=HDRS ENVID=QQ314159\r\n"
                 "RCPT TO:<a@peer.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@peer.test\r\n"
                 "RCPT TO:<b@peer.test>\r\nRCPT TO:<c@peer.test>\r\nDATA\r\n",
                 t.sender, t.m.prefix_len + t.m.len);
        if (strcmp(ev[i], want) == 0)
            found++;
    }
    assert_int_equal(found, 1);
    free_events(ev, n);
    msg_free(&t);

    /* BDAT: the group ends with the chunk's bytes, all in one write. */
    msg_make(&t, uniq("pipe-bdat", fx), 5, (const char *const[]){"a@peer.test", "b@peer.test", NULL});
    n = peer_deliver_reads(fx, &pe, "{\"ehlo\": [\"peer.test\", \"PIPELINING\", \"CHUNKING\"]}",
                           SMTP_TLS_NONE, &t, &r, ev, lens, NULL, 64);
    assert_false(t.m.dsn_passed);
    found = 0;
    for (int i = 0; i < n; i++)
        if (strncmp(ev[i], "MAIL FROM:", 10) == 0 && strstr(ev[i], "RCPT TO:<b@peer.test>\r\nBDAT ") &&
            strstr(ev[i], " LAST\r\nReceived: ") != NULL && lens[i] > t.m.len / 2)
            found++;
    assert_int_equal(found, 1);
    free_events(ev, n);
    /* The chunk is the un-stuffed message. */
    n = peer_events(&pe, 'B', ev, lens, NULL, 64);
    assert_int_equal(n, 1);
    {
        size_t ul = 0;
        char *u = malloc(t.m.prefix_len + t.m.len);
        bool bol = true;
        memcpy(u, PREFIX, t.m.prefix_len);
        ul = t.m.prefix_len;
        for (size_t i = 0; i < t.len; i++) {
            if (!(bol && t.wire[i] == '.'))
                u[ul++] = t.wire[i];
            bol = t.wire[i] == '\n';
        }
        assert_int_equal(lens[0], ul);
        assert_memory_equal(ev[0], u, ul);
        free(u);
    }
    free_events(ev, n);
    msg_free(&t);
}

/* Under TLS a pipelined group is one record: MAIL, the RCPTs and DATA
 * come out of one read at the peer (its reads return a record at most);
 * with CHUNKING the group and the whole short body do, and after DATA's 354
 * the body and its final dot do. */
static void test_peer_pipelining_tls(void **state)
{
    struct fx *fx = *state;
    struct peer pe;
    struct testmsg t;
    struct run r;
    char json[4096], *ev[64];
    size_t lens[64];
    int tls[64], n, group = 0, body = 0;

    peer_tls_json(json, sizeof json, "\"ehlo\": [\"peer.test\", \"PIPELINING\"]");
    msg_make(&t, uniq("pipe-tls", fx), 5, (const char *const[]){"a@peer.test", "b@peer.test", NULL});
    n = peer_deliver_reads(fx, &pe, json, SMTP_TLS_MAY, &t, &r, ev, lens, tls, 64);
    assert_true(r.info.tls);
    for (int i = 0; i < n; i++) {
        char want[512];
        snprintf(want, sizeof want,
                 "MAIL FROM:<%s>\r\nRCPT TO:<a@peer.test>\r\nRCPT TO:<b@peer.test>\r\nDATA\r\n",
                 t.sender);
        if (tls[i] && strcmp(ev[i], want) == 0)
            group++;
        if (tls[i] && strncmp(ev[i], "Received: ", 10) == 0 && lens[i] > 5 &&
            memcmp(ev[i] + lens[i] - 5, "\r\n.\r\n", 5) == 0)
            body++;
    }
    assert_int_equal(group, 1);
    assert_int_equal(body, 1);
    free_events(ev, n);
    msg_free(&t);

    peer_tls_json(json, sizeof json, "\"ehlo\": [\"peer.test\", \"PIPELINING\", \"CHUNKING\"]");
    msg_make(&t, uniq("pipe-tls-bdat", fx), 5, (const char *const[]){"a@peer.test", NULL});
    n = peer_deliver_reads(fx, &pe, json, SMTP_TLS_MAY, &t, &r, ev, lens, tls, 64);
    assert_true(r.info.tls);
    group = 0;
    for (int i = 0; i < n; i++)
        if (tls[i] && strncmp(ev[i], "MAIL FROM:", 10) == 0 &&
            strstr(ev[i], "RCPT TO:<a@peer.test>\r\nBDAT ") != NULL &&
            strstr(ev[i], " LAST\r\nReceived: ") != NULL &&
            lens[i] >= t.m.prefix_len + t.m.len)
            group++;
    assert_int_equal(group, 1);
    free_events(ev, n);
    msg_free(&t);
}

/* The source address is bound before connecting. */
static void test_peer_source_address(void **state)
{
    struct fx *fx = *state;
    struct peer pe;
    struct sockaddr_in a, src = loopback(0);
    struct smtp_client_params p;
    struct run r = {0};
    char *ev[4];
    size_t lens[4];
    int n;

    inet_pton(AF_INET, "127.0.0.2", &src.sin_addr);
    peer_start(&pe, "{}");
    p = params_for(fx, &a, pe.port, SMTP_TLS_NONE);
    p.source = (struct sockaddr *)&src;
    p.source_len = sizeof src;
    deliver(fx, &r, &p, NULL, 0);
    assert_int_equal(r.ready, 1);
    peer_stop(&pe);
    n = peer_events(&pe, 'A', ev, lens, NULL, 4);
    assert_int_equal(n, 1);
    assert_string_equal(ev[0], "A 1 127.0.0.2");
    free_events(ev, n);
}

/* Multi-line replies, 4xx and 5xx per recipient, enhanced codes. */
static void test_peer_replies(void **state)
{
    struct fx *fx = *state;
    struct peer pe;
    struct sockaddr_in a;
    struct smtp_client_params p;
    struct testmsg t;
    struct run r = {0};

    peer_start(&pe, "{\"greeting\": \"220-peer.test first\\r\\n220-second\\r\\n220 ESMTP\","
                    " \"replies\": {\"RCPT\": [\"250 2.1.5 Ok\", \"550-5.1.1 No such user\\r\\n550 5.1.1 "
                    "here\", \"451 4.3.0 Try later\", \"250 2.1.5 Ok\"],"
                    " \"DOT\": \"250-2.0.0 Ok\\r\\n250 2.0.0 queued as X\"}}");
    p = params_for(fx, &a, pe.port, SMTP_TLS_NONE);
    msg_make(&t, uniq("replies", fx), 5,
             (const char *const[]){"a@peer.test", "b@peer.test", "c@peer.test", "d@peer.test", NULL});
    deliver(fx, &r, &p, &t.m, 1);
    assert_int_equal(t.m.naccepted, 2);
    assert_int_equal(t.rcpts[0].result.outcome, SMTP_OUT_OK);
    assert_string_equal(t.rcpts[0].result.text, "2.0.0 Ok 2.0.0 queued as X");
    assert_int_equal(t.rcpts[1].result.outcome, SMTP_OUT_PERM);
    assert_int_equal(t.rcpts[1].result.code, 550);
    assert_string_equal(t.rcpts[1].result.enhanced, "5.1.1");
    assert_string_equal(t.rcpts[1].result.text, "5.1.1 No such user 5.1.1 here");
    assert_int_equal(t.rcpts[2].result.outcome, SMTP_OUT_TEMP);
    assert_int_equal(t.rcpts[2].result.code, 451);
    assert_string_equal(t.rcpts[2].result.enhanced, "4.3.0");
    assert_int_equal(t.rcpts[3].result.outcome, SMTP_OUT_OK);
    assert_int_equal(t.m.result.code, 250);
    peer_stop(&pe);
    msg_free(&t);
}

/* RSET only when a transaction was left open; SIZE refused up front (no
 * MAIL sent), the connection going on. */
static void test_peer_rset_and_size(void **state)
{
    struct fx *fx = *state;
    struct peer pe;
    struct sockaddr_in a;
    struct smtp_client_params p;
    struct testmsg t[4];
    struct smtp_msg ms[4];
    struct run r = {0};
    char *ev[64], want[64];
    size_t lens[64];
    int n;

    peer_start(&pe, "{\"ehlo\": [\"peer.test\", \"PIPELINING\", \"SIZE 10000\"],"
                    " \"replies\": {\"RCPT\": [\"250 ok\", \"550 5.1.1 no\", \"250 ok\", \"250 ok\"],"
                    " \"DATA\": [\"354 go\", \"554 5.5.1 No valid recipients\", \"354 go\"]}}");
    p = params_for(fx, &a, pe.port, SMTP_TLS_NONE);
    msg_make(&t[0], uniq("m0", fx), 5, (const char *const[]){"a@peer.test", NULL});
    msg_make(&t[1], uniq("m1", fx), 5, (const char *const[]){"b@peer.test", NULL}); /* refused */
    msg_make(&t[2], uniq("m2", fx), 1000, (const char *const[]){"c@peer.test", NULL}); /* too big */
    msg_make(&t[3], uniq("m3", fx), 5, (const char *const[]){"d@peer.test", NULL});
    for (int i = 0; i < 4; i++)
        ms[i] = t[i].m;
    deliver(fx, &r, &p, ms, 4);
    assert_int_equal(r.done, 4);
    assert_int_equal(ms[0].result.outcome, SMTP_OUT_OK);
    assert_int_equal(ms[1].result.outcome, SMTP_OUT_PERM);
    assert_int_equal(ms[1].rcpts[0].result.code, 550);
    assert_int_equal(ms[2].result.outcome, SMTP_OUT_PERM);
    assert_string_equal(ms[2].result.enhanced, "5.3.4");
    assert_int_equal(ms[2].result.stage, SMTP_STAGE_MAIL);
    assert_non_null(strstr(ms[2].result.text, "SIZE"));
    assert_int_equal(ms[3].result.outcome, SMTP_OUT_OK);
    peer_stop(&pe);
    n = peer_events(&pe, 'C', ev, lens, NULL, 64);
    /* EHLO, MAIL, RCPT, DATA | MAIL, RCPT, DATA | RSET, MAIL, RCPT, DATA | QUIT */
    {
        static const char *const seq[] = {"EHLO", "MAIL", "RCPT", "DATA", "MAIL", "RCPT", "DATA",
                                          "RSET", "MAIL", "RCPT", "DATA", "QUIT"};
        assert_int_equal(n, 12);
        for (int i = 0; i < 12; i++) {
            snprintf(want, sizeof want, "%s", seq[i]);
            if (strncmp(ev[i], want, strlen(want)) != 0)
                fail_msg("command %d: \"%s\", expected %s", i, ev[i], want);
        }
        assert_null(strstr(ev[8], t[2].sender)); /* the big one never went */
    }
    free_events(ev, n);
    for (int i = 0; i < 4; i++)
        msg_free(&t[i]);
}


/* A reply pipelined after the 220 to STARTTLS (sent in clear, it would be
 * read as if it came under TLS): refused, nothing else said. */
static void test_peer_starttls_injection(void **state)
{
    struct fx *fx = *state;
    struct peer pe;
    struct sockaddr_in a;
    struct smtp_client_params p;
    struct run r = {0};
    char json[4096], *ev[16];
    size_t lens[16];
    int n;

    peer_tls_json(json, sizeof json, "\"starttls_inject\": \"250 2.0.0 injected\"");
    peer_start(&pe, json);
    p = params_for(fx, &a, pe.port, SMTP_TLS_MAY);
    deliver(fx, &r, &p, NULL, 0);
    assert_int_equal(r.ready, 0);
    assert_int_equal(r.why.outcome, SMTP_OUT_TEMP);
    assert_int_equal(r.why.stage, SMTP_STAGE_STARTTLS);
    assert_non_null(strstr(r.why.text, "unexpected data"));
    peer_stop(&pe);
    n = peer_events(&pe, 'C', ev, lens, NULL, 16);
    assert_int_equal(n, 2); /* EHLO, STARTTLS */
    free_events(ev, n);
}

/* DATA refused with recipients accepted: the transaction fails at stage
 * data for them; the connection goes on (and resets first). */
static void test_peer_data_refused(void **state)
{
    struct fx *fx = *state;
    struct peer pe;
    struct sockaddr_in a;
    struct smtp_client_params p;
    struct testmsg t[2];
    struct smtp_msg ms[2];
    struct run r = {0};

    peer_start(&pe, "{\"replies\": {\"DATA\": [\"451 4.3.0 Busy\", \"354 go\"]}}");
    p = params_for(fx, &a, pe.port, SMTP_TLS_NONE);
    msg_make(&t[0], uniq("dr", fx), 5, (const char *const[]){"a@peer.test", "b@peer.test", NULL});
    msg_make(&t[1], uniq("dr2", fx), 5, (const char *const[]){"c@peer.test", NULL});
    ms[0] = t[0].m;
    ms[1] = t[1].m;
    deliver(fx, &r, &p, ms, 2);
    assert_int_equal(ms[0].naccepted, 2);
    assert_int_equal(ms[0].result.outcome, SMTP_OUT_TEMP);
    assert_int_equal(ms[0].result.stage, SMTP_STAGE_DATA);
    assert_int_equal(ms[0].result.code, 451);
    assert_int_equal(t[0].rcpts[0].result.outcome, SMTP_OUT_TEMP);
    assert_int_equal(t[0].rcpts[1].result.code, 451);
    assert_int_equal(ms[1].result.outcome, SMTP_OUT_OK);
    peer_stop(&pe);
    msg_free(&t[0]);
    msg_free(&t[1]);
}

/* The server closes in the middle of the body: temporary, stage data. */
static void test_peer_close_mid_data(void **state)
{
    struct fx *fx = *state;
    struct peer pe;
    struct sockaddr_in a;
    struct smtp_client_params p;
    struct testmsg t;
    struct run r = {0};

    peer_start(&pe, "{\"close_after_data\": 20000}");
    p = params_for(fx, &a, pe.port, SMTP_TLS_NONE);
    msg_make(&t, uniq("mid", fx), 20000, (const char *const[]){"a@peer.test", NULL});
    deliver(fx, &r, &p, &t.m, 1);
    assert_int_equal(r.done, 1);
    assert_int_equal(r.closed, 1);
    assert_int_equal(t.m.result.outcome, SMTP_OUT_TEMP);
    assert_int_equal(t.m.result.stage, SMTP_STAGE_DATA);
    assert_int_equal(t.m.result.code, 0);
    assert_int_equal(t.rcpts[0].result.outcome, SMTP_OUT_TEMP);
    assert_int_equal(r.why.outcome, SMTP_OUT_TEMP);
    peer_stop(&pe);
    msg_free(&t);
}

/* A server that never says anything: the greeting timeout fires. */
static void test_peer_silent(void **state)
{
    struct fx *fx = *state;
    struct peer pe;
    struct sockaddr_in a;
    struct smtp_client_params p;
    struct run r = {0};
    uint64_t t0;

    peer_start(&pe, "{\"greeting\": null}");
    p = params_for(fx, &a, pe.port, SMTP_TLS_MAY);
    p.timeouts.greeting = 300;
    t0 = now_ms();
    deliver(fx, &r, &p, NULL, 0);
    assert_true(now_ms() - t0 >= 300);
    assert_int_equal(r.ready, 0);
    assert_int_equal(r.why.outcome, SMTP_OUT_TEMP);
    assert_int_equal(r.why.stage, SMTP_STAGE_GREETING);
    assert_non_null(strstr(r.why.text, "timeout"));
    peer_stop(&pe);
}

/* Idle after a message: QUIT at the idle timeout, outcome OK. */
static void test_idle_timeout(void **state)
{
    struct fx *fx = *state;
    struct sockaddr_in a;
    struct smtp_client_params p = params_for(fx, &a, sink_port, SMTP_TLS_NONE);
    struct testmsg t;
    struct run r = {.keep_idle = true};

    p.timeouts.idle = 200;
    msg_make(&t, uniq("idle", fx), 5, (const char *const[]){"a@sink.test", NULL});
    deliver(fx, &r, &p, &t.m, 1);
    assert_int_equal(r.done, 1);
    assert_int_equal(r.closed, 1);
    assert_int_equal(r.why.outcome, SMTP_OUT_OK);
    assert_int_equal(r.why.stage, SMTP_STAGE_QUIT);
    msg_free(&t);
}

/* Connection refused, and the owner closing from inside done(). */
static void test_connect_refused_and_owner_close(void **state)
{
    struct fx *fx = *state;
    struct sockaddr_in a;
    struct smtp_client_params p = params_for(fx, &a, free_port(), SMTP_TLS_MAY);
    struct testmsg t;
    struct run r = {0};

    deliver(fx, &r, &p, NULL, 0);
    assert_int_equal(r.closed, 1);
    assert_int_equal(r.why.outcome, SMTP_OUT_TEMP);
    assert_int_equal(r.why.stage, SMTP_STAGE_CONNECT);

    memset(&r, 0, sizeof r);
    r.close_in_done = true;
    p = params_for(fx, &a, sink_port, SMTP_TLS_NONE);
    msg_make(&t, uniq("ownerclose", fx), 5, (const char *const[]){"a@sink.test", NULL});
    deliver(fx, &r, &p, &t.m, 1);
    assert_int_equal(r.done, 1);
    assert_int_equal(r.closed, 0); /* no callback after smtp_client_close */
    msg_free(&t);
}



#define BOTH(fn)                                                                                  \
    {#fn "/uring", fn, setup, teardown, &be_uring}, { #fn "/epoll", fn, setup, teardown, &be_epoll }

int main(void)
{
    const struct CMUnitTest tests[] = {
        BOTH(test_ortoo_plain_bdat),
        BOTH(test_ortoo_plain_data),
        BOTH(test_ortoo_bdat_chunks),
        BOTH(test_ortoo_starttls),
        BOTH(test_ortoo_resumption),
        BOTH(test_ortoo_verify),
        BOTH(test_ortoo_dane_ee),
        BOTH(test_ortoo_dane_ta),
        BOTH(test_ortoo_dane_unusable),
        BOTH(test_ortoo_auth),
        BOTH(test_ortoo_several),
        BOTH(test_ortoo_ipv6),
        BOTH(test_sink_tls_required),
        BOTH(test_sink_rcpt_refused),
        BOTH(test_sink_helo_and_8bit),
        BOTH(test_rulesink),
        BOTH(test_tlssink),
        BOTH(test_peer_dane_mismatch),
        BOTH(test_peer_pipelining),
        BOTH(test_peer_pipelining_tls),
        BOTH(test_peer_source_address),
        BOTH(test_peer_replies),
        BOTH(test_peer_rset_and_size),
        BOTH(test_peer_starttls_injection),
        BOTH(test_peer_data_refused),
        BOTH(test_peer_close_mid_data),
        BOTH(test_peer_silent),
        BOTH(test_idle_timeout),
        BOTH(test_connect_refused_and_owner_close),
    };

    log_init("test_smtp_client", getenv("ORTOO_TEST_DEBUG") ? LOG_LVL_DEBUG : LOG_LVL_WARN);
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
