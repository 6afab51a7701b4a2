/* SPDX-License-Identifier: MIT */
/*
 * doctor.h - the parts of `ortoo doctor` (internal to cli/): what the
 * command gathers and how each check judges it.
 *
 * cli/cli_doctor.c parses the command line, picks the server's addresses,
 * and gathers every answer at once on one private event loop: all DNS
 * lookups through ortoo's own resolver (resolver/resolver.h), the
 * forward-confirmed reverse DNS (resolver/fcrdns.h) and the SPF evaluation
 * (resolver/spf.h, the evaluator inbound mail is checked with) of each
 * sending address, the port 25 target's address and the connection to it,
 * under one overall deadline.  When nothing is in
 * flight any more (or the deadline passed) the loop stops, and
 * cli/doctor_checks.c judges what was gathered, one check after another in a
 * fixed order, into a list of findings (OK / WARN / FAIL, with what was
 * found, why it matters and what to publish or do).  The judging is pure:
 * no I/O, no clock but the certificate dates, so the unit tests feed it
 * answers they make up.
 *
 * A lookup that did not finish before the deadline has ans == NULL; the
 * checks say so rather than guess.
 */
#ifndef ORTOO_CLI_DOCTOR_H
#define ORTOO_CLI_DOCTOR_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "cli/cli.h"
#include "dkim/keys.h"
#include "io/loop.h"
#include "resolver/fcrdns.h"
#include "resolver/resolver.h"
#include "resolver/spf.h"

struct config;
struct users;

#define DR_ADDRS_MAX 16          /* server addresses checked */
#define DR_DEFAULT_TIMEOUT_S 30  /* the overall deadline */
#define DR_PORT25_TIMEOUT_MS 5000 /* a SYN answered in 5 s or port 25 is blocked */
#define DR_PORT25_DEFAULT "gmail.com" /* whose MX the port 25 test connects to */
#define DR_SPF_SUGGEST "v=spf1 mx -all"

enum dr_status { DR_OK = 0, DR_WARN, DR_FAIL };

/* One finding.  The strings are owned. */
struct dr_check {
    const char *name;        /* "mx", "ptr", "spf", ... (static) */
    char *subject;           /* what it is about: a name, an address */
    enum dr_status status;
    char *detail;            /* one line: what was found */
    char *why;               /* one line: why it matters (WARN, FAIL), or NULL */
    char *fix;               /* what to publish or do (lines), or NULL */
};

struct doctor;

/* One DNS lookup of the gathering.  ans is one reference once answered;
 * NULL when the deadline came first. */
struct dr_lookup {
    struct res_req req;
    struct doctor *dr;
    enum res_type type;
    char name[RES_NAME_MAX + 1];
    const struct res_answer *ans;
    void (*then)(struct dr_lookup *lk); /* runs after the answer, may start more */
    struct dr_lookup *next;              /* in doctor.all */
    struct res_answer refused;           /* ans when the resolver refused the name
                                            (RES_ERROR; refs 0: never freed) */
};

/* One address of the server, which is also a sending address. */
struct dr_addr {
    int af;                              /* AF_INET or AF_INET6 */
    union {
        struct in_addr v4;
        struct in6_addr v6;
    } ip;
    char text[INET6_ADDRSTRLEN];
    struct doctor *dr;
    struct fcrdns_req fc;                /* PTR and forward confirmation (resolver/fcrdns.h) */
    bool fc_done;                        /* fc.result and fc.name are set */
    struct spf_req spf;                  /* SPF of the domain for this address, with the
                                            inbound evaluator (resolver/spf.h) */
    bool spf_done;                       /* spf.result and spf.why are set */
};

/* The port 25 test: a TCP connection to a mail server outside. */
struct dr_port25 {
    bool enabled;                        /* not --no-port25 */
    char host[RES_NAME_MAX + 1];         /* the target: a name or an address */
    uint16_t port;
    bool by_mx;                          /* host is a domain: connect to its MX */
    struct dr_lookup *mx, *a, *aaaa;     /* MX of the domain, A and AAAA of the host */
    char mx_host[RES_NAME_MAX + 1];      /* the MX host chosen */
    struct sockaddr_storage sa;          /* the address connected to */
    socklen_t salen;
    char sa_text[INET6_ADDRSTRLEN + 8];  /* "1.2.3.4:25" */
    int fd;                              /* -1 when closed */
    struct io_op conn, timer;
    bool tried;                          /* a connection was attempted */
    bool timed_out;                      /* no answer to the SYN in time */
    int result;                          /* 0 connected, else -errno */
};

/*
 * Everything gathered, and the findings.  Invariants while the loop runs:
 * inflight counts exactly the busy reqs (the res_req of every lookup in
 * all, and the fc and spf reqs of the addresses, which have dr set once
 * started); the loop stops once inflight is 0 and neither the port 25 ops
 * nor the deadline are busy; after expired is set nothing new starts.
 */
struct doctor {
    const struct config *cfg;
    const struct users *users;           /* local domains, for rua; NULL: none */
    const struct dkim_keys *keys;        /* DOMAIN's keys on disk; NULL: none */
    char keys_err[512];                  /* why keys could not be loaded, or "" */
    char users_err[512];                 /* why users could not be loaded, or "" */
    struct io_loop *loop;
    struct res_ctx *res;
    char domain[RES_NAME_MAX + 1];
    const char *hostname;                /* [server] hostname (the EHLO name) */
    struct dr_addr addrs[DR_ADDRS_MAX];
    size_t naddrs;
    const char *addrs_from;              /* how the addresses were found */
    /* the lookups of the first wave */
    struct dr_lookup *mx, *host_a, *host_aaaa, *spf_txt, *dmarc, *tlsa, *mtasts, *tlsrpt;
    struct dr_lookup *dkim[DKIM_KEYS_PER_DOMAIN];
    const struct dkim_key *dkim_key[DKIM_KEYS_PER_DOMAIN];
    size_t ndkim;
    struct dr_lookup *all;               /* every lookup, to cancel and free */
    unsigned inflight;                   /* lookups, FCrDNS and SPF checks busy */
    struct io_op deadline;
    bool expired;                        /* the deadline passed */
    unsigned timeout_s;
    struct dr_port25 p25;
    struct cli_cert cert;                /* certs/<hostname>/ */
    char cert_notes[1024];               /* the findings about it, "; "-joined */
    bool cert_error;                     /* one of them was an error */
    bool cert_trusted;                   /* the chain verifies to the system's CAs
                                            (OpenSSL's default store; SSL_CERT_FILE) */
    char cert_trust_err[160];            /* why not */
    char cert_issuer[160];               /* the leaf's issuer, one line */
    char cert_spki_sha256[65];           /* hex SHA-256 of the leaf's public key
                                            (TLSA 3 1 1), or "" */
    bool oom;                            /* judging ran out of memory */
    /* findings, in the order printed */
    struct dr_check *checks;
    size_t nchecks, cap;
};

/* Add a server address (af AF_INET or AF_INET6, ip a struct in_addr or
 * in6_addr) unless it is there already.  Returns 0 or -E2BIG. */
int doctor_addr_add(struct doctor *dr, int af, const void *ip);

/* Judge everything gathered in dr into dr->checks (cli/doctor_checks.c).
 * Returns 0 or -ENOMEM. */
int doctor_judge(struct doctor *dr);
/* Free the findings. */
void doctor_checks_free(struct doctor *dr);

/* "OK", "WARN", "FAIL". */
const char *dr_status_name(enum dr_status s);

/* ---- record parsers (cli/doctor_checks.c; pure) ---- */

#define DR_TAGS_MAX 32

/* One tag=value of a tag-list (RFC 6376 3.2, RFC 7489 6.4, RFC 8461 3.1). */
struct dr_tag {
    const char *name, *value;            /* slices of the text */
    size_t name_len, value_len;          /* value without surrounding FWS */
};

/*
 * Split text[0..len) into tags: "name=value" separated by ';', blanks
 * around names and values ignored, a final ';' allowed, a name repeated is
 * an error.  Returns the number of tags, or -EINVAL (syntax; *err says
 * what) or -E2BIG.
 */
int dr_taglist_parse(const char *text, size_t len, struct dr_tag *tags, size_t max,
                     const char **err);
/* The tag called name (exact, case-sensitive as RFC 6376 3.2 says), or NULL. */
const struct dr_tag *dr_tag_find(const struct dr_tag *tags, size_t n, const char *name);

/*
 * Check a DMARC record strictly, as its publisher should write it (RFC
 * 7489 6.3-6.4): p= present and valid, sp=, pct=, adkim=, aspf= valid when
 * present, rua= a list of mailto: URIs.  Receivers are lenient (core/dmarc.c
 * reads a bad value as its default, and a record without a usable p= but
 * with rua= as p=none): doctor says what they will do, and that it is not
 * what was written.  rua[ruacap] gets the rua= value ("" when absent).
 * Returns 0, -ENOENT (v=DMARC1 is not the first tag: not a DMARC record) or
 * -EINVAL with *err.
 */
int dr_dmarc_lint(const char *text, size_t len, char *rua, size_t ruacap, const char **err);

/*
 * The mailbox of one "mailto:" URI of a rua/ruf list (RFC 7489 6.2: the
 * address percent-decoded, an "!size" suffix dropped) into out[cap].
 * Returns 1 with the address, 0 when the URI is not a mailto: (https: for
 * TLS-RPT), -EINVAL when it is a broken one.
 */
int dr_mailto(const char *uri, size_t len, char *out, size_t cap);

/* The p= value of a DKIM key record with the blanks taken out, into
 * out[cap].  Returns its length (0: revoked), -ENOENT (no p= tag) or
 * -EINVAL (not a tag-list, or v= not DKIM1). */
int dr_dkim_p(const char *text, size_t len, char *out, size_t cap, char *k, size_t kcap);

#endif
