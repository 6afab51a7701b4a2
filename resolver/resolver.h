/* SPDX-License-Identifier: MIT */
/*
 * resolver.h - asynchronous, DNSSEC-validating DNS lookups on a reactor
 * (libunbound), with a small answer cache in front of libunbound's own.
 *
 * One struct res_ctx per reactor (per io_loop): it owns a libunbound context
 * whose resolving runs on libunbound's background thread; the reactor polls
 * the context's answer pipe (ub_fd) with io_poll_start and runs ub_process
 * from that callback.  Creating a context reads the trust anchors and may
 * block: do it at start-up, never per lookup.  A lookup never blocks the
 * reactor (see "Blocking" below).
 *
 * A lookup is a struct res_req embedded in its owner (an SMTP session, a
 * delivery attempt), like struct io_op:
 *  - res_lookup() submits it; its callback runs exactly once, on the loop's
 *    thread, never synchronously inside res_lookup() (a cached answer is
 *    delivered from a deferred op on a coming loop turn);
 *  - the req is busy from submit until its callback starts; a busy req must
 *    not be resubmitted or moved; it is idle again when the callback runs,
 *    so the callback may resubmit it or free its owner;
 *  - res_cancel() makes a busy req idle at once and its callback is NOT
 *    run, ever.  The owner may free the req right after res_cancel()
 *    returns (no kernel or thread holds a pointer to it).  Cancelling an
 *    idle req is a no-op, so an owner being torn down can always call it.
 *    The DNS query itself goes on if it is shared with other reqs or was
 *    already sent: its answer still fills the cache.
 *
 * Answers: the callback gets a struct res_answer, borrowed for the duration
 * of the call.  To keep it longer take a reference (res_answer_ref) and drop
 * it with res_answer_unref, on the same thread (the count is not atomic).
 * An answer is self-contained: it may outlive its context.
 *
 * DNSSEC: every answer carries sec (secure / insecure / bogus).  A bogus
 * answer is never used: libunbound hands back forged data with havedata=1
 * AND bogus=1, so the bogus flag is checked first on every result and such
 * an answer has status RES_BOGUS and no records at all (n == 0), only the
 * reason in `why`.  RES_BOGUS is a temporary failure.
 *
 * Statuses keep the DNS outcomes apart: RES_NXDOMAIN (the name does not
 * exist), RES_NODATA (it exists, no record of the type), RES_SERVFAIL (the
 * servers failed or could not be reached: libunbound reports its own
 * timeouts this way), RES_TIMEOUT (no answer within the context's own
 * deadline), RES_BOGUS, RES_ERROR (a local failure).  RES_NULLMX is MX only.
 *
 * MX lookups follow RFC 5321 5.1 and RFC 7505:
 *  - an MX RRset: hosts sorted by preference, status RES_OK, sec of the MX
 *    RRset itself.  Randomisation: the cached MX answer keeps the order of
 *    the RRset sorted by preference; every request gets its own copy in
 *    which the hosts of equal preference are shuffled (mx_deliver() in
 *    resolver.c), so that deliveries spread over equal MX hosts even while
 *    the answer is cached;
 *  - a null MX (a single MX "0 ."): status RES_NULLMX, a permanent failure:
 *    bounce at once.  "." hosts mixed with real ones are skipped (RFC 7505
 *    3 forbids the mix; delivering to the real hosts loses nothing);
 *  - no MX RRset (NODATA, not bogus): A and AAAA of the domain are looked up
 *    and, when either has an address, the answer is an implicit MX: one host,
 *    the domain itself, preference 0, implicit_mx set; sec is that of the MX
 *    denial.  When neither has an address the status is RES_NODATA (no mail
 *    host: permanent), or the temporary status of A/AAAA if one failed.
 *
 * Blocking: res_lookup() writes the query to libunbound's query pipe, which
 * libunbound's thread drains continuously; at most RES_DEFAULT_INFLIGHT
 * queries per context are handed to libunbound at once (more wait in a FIFO
 * of our own), so that pipe never fills.  ub_process reads whole answers
 * that libunbound's thread writes in one go.
 *
 * Threads: a context and its reqs belong to the thread that runs its loop.
 * Nothing here is thread-safe; contexts on different reactors share nothing.
 */
#ifndef ORTOO_RESOLVER_H
#define ORTOO_RESOLVER_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "io/loop.h"

/* Debian's root trust anchor (package dns-root-data). */
#define RES_ROOT_KEY_FILE "/usr/share/dns/root.key"

#define RES_DEFAULT_TIMEOUT_MS 20000 /* a lookup's deadline */
#define RES_DEFAULT_CACHE_MAX 1024   /* answers cached per context */
#define RES_DEFAULT_INFLIGHT 128     /* queries handed to libunbound at once */
#define RES_CACHE_TTL_MAX 3600       /* seconds; longer TTLs are cut to this */
#define RES_NAME_MAX 253             /* a domain name in text, no final dot */

struct res_ctx;
struct res_req;
struct res_query;

/* Record types (the values are the DNS RR type numbers). */
enum res_type {
    RES_A = 1,
    RES_PTR = 12,
    RES_MX = 15,
    RES_TXT = 16,
    RES_AAAA = 28,
    RES_TLSA = 52,
};

/* DNSSEC state of an answer (RFC 4035 4.3). */
enum res_sec {
    RES_SEC_INSECURE = 0,   /* no trust anchor covers it, or dnssec = off */
    RES_SEC_SECURE,         /* validated from a trust anchor */
    RES_SEC_BOGUS,          /* validation failed: never use the data */
};

enum res_status {
    RES_OK = 0,             /* records in the answer (n > 0) */
    RES_NXDOMAIN,           /* the name does not exist (permanent) */
    RES_NODATA,             /* no record of that type (permanent) */
    RES_NULLMX,             /* MX: the domain accepts no mail (RFC 7505; permanent) */
    RES_SERVFAIL,           /* server failure or unreachable (temporary) */
    RES_TIMEOUT,            /* no answer within the deadline (temporary) */
    RES_BOGUS,              /* DNSSEC validation failed (temporary) */
    RES_ERROR,              /* local failure: memory, libunbound (temporary) */
};

/* One MX host. */
struct res_mx {
    const char *host;       /* exchange, text form, no final dot */
    uint16_t pref;          /* preference */
};

/* One TLSA record (RFC 6698 2.1). */
struct res_tlsa {
    uint8_t usage;          /* 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE */
    uint8_t selector;       /* 0 full certificate, 1 SubjectPublicKeyInfo */
    uint8_t mtype;          /* 0 exact, 1 SHA-256, 2 SHA-512 */
    const uint8_t *data;    /* certificate association data */
    size_t len;
};

/* One character-string of a TXT record. */
struct res_txt_str {
    const char *s;          /* bytes (may hold NUL), NUL-terminated */
    size_t len;
};

/* One TXT record. */
struct res_txt {
    const char *text;       /* strings joined with nothing between
                               (RFC 7208 3.3), NUL-terminated */
    size_t len;             /* bytes in text (a NUL inside is possible) */
    const struct res_txt_str *strings; /* the raw strings, in order */
    size_t nstrings;
};

/*
 * A lookup's outcome.  Immutable, reference-counted (see the file header).
 * Invariants: n > 0 exactly when status == RES_OK; sec == RES_SEC_BOGUS
 * exactly when status == RES_BOGUS; the union member matching type is the
 * one in use.
 */
struct res_answer {
    enum res_type type;     /* the type asked for */
    enum res_status status;
    enum res_sec sec;       /* for every status: a secure NXDOMAIN is a
                               proven denial */
    const char *name;       /* the name asked for, lower case, no final dot */
    const char *canon;      /* the owner after CNAMEs (== name without) */
    const char *why;        /* reason for RES_BOGUS (libunbound's why_bogus),
                               RES_SERVFAIL, RES_TIMEOUT, RES_ERROR; else NULL */
    uint32_t ttl;           /* seconds, as received (0 for failures) */
    int rcode;              /* DNS RCODE as received (-1: none) */
    bool implicit_mx;       /* MX: no MX RRset; mx[0] is the domain itself */
    size_t n;               /* records */
    union {
        const struct in_addr *a;        /* RES_A */
        const struct in6_addr *aaaa;    /* RES_AAAA */
        const struct res_mx *mx;        /* RES_MX, by preference */
        const struct res_tlsa *tlsa;    /* RES_TLSA */
        const char *const *ptr;         /* RES_PTR: names, no final dot */
        const struct res_txt *txt;      /* RES_TXT */
    };
    /* private: */
    unsigned refs;          /* 0: static, never freed */
    struct res_blk *mem;    /* allocations owned by the answer */
    const struct res_answer *parent; /* answer whose strings we borrow */
};

/* Completion callback; ans is borrowed for the call (see res_answer_ref). */
typedef void (*res_cb)(struct res_req *req, const struct res_answer *ans);

/* Intrusive doubly linked list node (private). */
struct res_link {
    struct res_link *prev, *next;
};

/* One answer a req waits for (private). */
struct res_wait {
    struct res_link link;           /* in the query's waiters or ctx ready list */
    struct res_req *req;
    struct res_query *q;            /* query waited on, or NULL */
    const struct res_answer *ans;   /* once done: one reference */
    uint8_t state;                  /* WAIT_* in resolver.c */
};

/*
 * A lookup request.  Embed it in its owner; zero it (or res_req_init) once.
 * Fields below 'private' belong to the resolver.
 */
struct res_req {
    res_cb cb;                  /* completion callback; set by res_lookup */
    void *owner;                /* for the owner, never touched by the resolver */
    /* private: */
    struct res_ctx *ctx;
    bool busy;                  /* submitted, callback not yet started */
    uint8_t stage;              /* REQ_* in resolver.c */
    enum res_type type;
    unsigned pending;           /* waits not yet done in this stage */
    const struct res_answer *held; /* MX answer kept while A/AAAA are looked up */
    struct res_wait w[2];       /* MX fallback waits for A and AAAA at once */
    char name[RES_NAME_MAX + 1];
};

/* Zero a req and set its owner. */
void res_req_init(struct res_req *req, void *owner);

/* True while the req is in flight. */
static inline bool res_req_busy(const struct res_req *req) { return req->busy; }

/* A stub zone server: queries under zone go to addr. */
struct res_stub {
    char *zone;                 /* lower case, with the final dot ("example.test.") */
    char *addr;                 /* libunbound form: "127.0.0.1@5353", "::1" */
};

/*
 * Resolver settings ([resolver] in ortoo.conf; core/config.c fills them,
 * owns the strings and frees them with res_conf_clear).  The tunables at the
 * end are not in the config file: 0 takes the default.
 */
struct res_conf {
    bool dnssec;                /* validate (default on) */
    char *trust_anchor;         /* absolute path of DS/DNSKEY lines, NULL: the
                                   root key RES_ROOT_KEY_FILE.  When set it
                                   REPLACES the root anchor */
    char **forwards;            /* libunbound form "ADDR[@PORT]"; none: recursion */
    size_t nforwards;
    struct res_stub *stubs;     /* in config order; a zone may repeat (more servers) */
    size_t nstubs;
    unsigned timeout_ms;        /* RES_DEFAULT_TIMEOUT_MS */
    size_t cache_max;           /* RES_DEFAULT_CACHE_MAX; answers per context */
    unsigned max_inflight;      /* RES_DEFAULT_INFLIGHT */
};

/* Defaults: dnssec on, no anchor file (root key), nothing else. */
void res_conf_init(struct res_conf *conf);
/* Free the strings and arrays of conf (not conf itself) and re-init it. */
void res_conf_clear(struct res_conf *conf);

/*
 * Parse a server "ADDR" or "ADDR@PORT" (ADDR an IPv4 or IPv6 literal, IPv6
 * optionally in brackets; PORT 1-65535) into libunbound's form in out.
 * Returns 0, or -EINVAL (bad text) / -ENAMETOOLONG (out too small).
 */
int res_parse_server(const char *s, char *out, size_t outlen);

/*
 * Check and normalise a domain name: labels of 1-63 letters, digits, '-'
 * or '_', at most RES_NAME_MAX characters, one optional final dot.  Writes
 * it lower case without the final dot.  Returns its length, or -EINVAL.
 * outlen must be at least RES_NAME_MAX + 1.
 */
int res_name_normalize(const char *in, char *out, size_t outlen);
/* A mail domain as DNS knows it: an internationalized name (UTF-8 U-labels,
 * RFC 6531) becomes its A-labels (IDNA2008 with UTS #46 mapping, libidn2),
 * then res_name_normalize; an ASCII name only the latter.  out may be in. */
int res_name_to_ascii(const char *in, char *out, size_t outlen);
/* True when s[0..len) has no byte >= 0x80 (no U-label to convert). */
bool res_name_is_ascii(const char *s, size_t len);

/*
 * Check and normalise a zone name for a stub: as res_name_normalize but
 * written with the final dot; "." (the root) is accepted.  Returns the
 * length or -EINVAL; outlen >= RES_NAME_MAX + 2.
 */
int res_zone_normalize(const char *in, char *out, size_t outlen);

/* Append a forwarder (text as in the config) or a stub (zone and server)
 * to conf, validated and normalised.  Returns 0, -EINVAL (bad value; the
 * message says which part) or -ENOMEM; err gets a message. */
int res_conf_add_forward(struct res_conf *conf, const char *server, char *err, size_t errlen);
int res_conf_add_stub(struct res_conf *conf, const char *zone, const char *server, char *err,
                      size_t errlen);

/*
 * The reverse name of an address for a PTR lookup:
 * "4.3.2.1.in-addr.arpa" or 32 nibbles + ".ip6.arpa" (RFC 3596 2.5),
 * without the final dot.  af is AF_INET or AF_INET6, addr points to a
 * struct in_addr or in6_addr.  Returns the length or -EINVAL/-ENAMETOOLONG.
 */
int res_ptr_name(int af, const void *addr, char *out, size_t outlen);

/*
 * Create the context of one reactor on loop.  Configures libunbound from
 * conf (borrowed), loads the trust anchors and finalises the context now:
 * this reads files and MAY BLOCK - start-up or reload only.  Also makes
 * transparent, for every stub zone, the zones that libunbound serves
 * locally by default (test., localhost., 127.in-addr.arpa., the AS112
 * reverse zones, ...) at, above or below it, so that the stub is reached.
 * Returns the context, or NULL with a one-line reason in err (a missing
 * or unreadable trust anchor file names the file and the errno text).
 */
struct res_ctx *res_ctx_new(struct io_loop *loop, const struct res_conf *conf, char *err,
                            size_t errlen);

/*
 * Free a context.  Call on the loop's thread once the loop has stopped for
 * good (after io_loop_run returned, before io_loop_free), as a reactor's
 * teardown does: the context's own loop ops are abandoned with the loop.
 * Busy reqs are dropped without their callbacks (their owners are being torn
 * down too).  Stops libunbound's thread (waits for it to exit).
 */
void res_ctx_free(struct res_ctx *ctx);

/*
 * Look up name (a domain name, or for RES_PTR also an IPv4/IPv6 literal,
 * turned into its reverse name) of type.  cb runs once later with the
 * answer (see the file header for MX).  Returns 0, -EBUSY (req busy),
 * -EINVAL (bad name or type: cb will not run).  Never blocks.
 */
int res_lookup(struct res_ctx *ctx, struct res_req *req, enum res_type type, const char *name,
               res_cb cb);

/* Make a busy req idle now; its callback never runs.  No-op when idle. */
void res_cancel(struct res_req *req);

/* Keep an answer beyond the callback / drop it.  Same thread only. */
const struct res_answer *res_answer_ref(const struct res_answer *ans);
void res_answer_unref(const struct res_answer *ans);

/* True for the statuses that mean "try again later". */
bool res_status_temporary(enum res_status s);

/* "ok", "nxdomain", "nodata", "nullmx", "servfail", "timeout", "bogus", "error". */
const char *res_status_name(enum res_status s);
/* "secure", "insecure", "bogus". */
const char *res_sec_name(enum res_sec s);
/* "A", "MX", ... ; res_type_parse takes the same names (any case): 0 or -EINVAL. */
const char *res_type_name(enum res_type t);
int res_type_parse(const char *s, enum res_type *out);

/* Counters of a context (for tests and stats).  Besides these, every
 * answered lookup (a callback run) is counted in io/metrics.h by its DNSSEC
 * state and its status. */
struct res_stats {
    uint64_t lookups;           /* res_lookup calls accepted */
    uint64_t cache_hits;        /* answers served from our cache */
    uint64_t coalesced;         /* waits joined to a query already in flight */
    uint64_t queries;           /* queries handed to libunbound */
    uint64_t timeouts;          /* queries that hit the deadline */
    size_t cached;              /* answers in the cache now */
    size_t inflight;            /* queries at libunbound now */
    size_t queued;              /* queries waiting for an in-flight slot */
};
void res_ctx_stats(const struct res_ctx *ctx, struct res_stats *out);

#endif
