/* SPDX-License-Identifier: MIT */
/*
 * smtp_parse.h - pure, resumable parsers for the SMTP server: command lines,
 * MAIL/RCPT arguments and their parameters, mailbox addresses, the DATA
 * terminator and the BDAT dot-stuffer.  No I/O, no allocation: results are
 * slices into the caller's input (valid until the caller consumes it).
 *
 * Return codes: SMTP_P_OK, SMTP_P_AGAIN (need more bytes), or a negative
 * SMTP_P_E* error that the session maps to a reply.
 */
#ifndef ORTOO_SMTP_PARSE_H
#define ORTOO_SMTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    SMTP_P_OK = 0,
    SMTP_P_AGAIN = 1,
    SMTP_P_DONE = 2,           /* data scan: terminator found */
    SMTP_P_ETOOLONG = -1,      /* line longer than the limit */
    SMTP_P_EBARELF = -2,       /* bare LF (or bare CR) where CRLF is required */
    SMTP_P_ESYNTAX = -3,       /* syntax error in parameters or arguments */
    SMTP_P_EADDR = -4,         /* bad mailbox syntax */
    SMTP_P_EPARAM = -5,        /* unknown or unsupported parameter */
};

/* RFC 5321 4.5.3.1.4: 512 octets per command line including CRLF. */
#define SMTP_MAX_CMD_LINE 512
/* RFC 5321 4.5.3.1.6: 1000 octets per text line including CRLF. */
#define SMTP_MAX_TEXT_LINE 1000
#define SMTP_MAX_ADDR 511       /* 255 local + @ + 255 domain */

enum smtp_verb {
    SMTP_V_UNKNOWN = 0, SMTP_V_EHLO, SMTP_V_HELO, SMTP_V_MAIL, SMTP_V_RCPT,
    SMTP_V_DATA, SMTP_V_BDAT, SMTP_V_RSET, SMTP_V_NOOP, SMTP_V_QUIT,
    SMTP_V_VRFY, SMTP_V_EXPN, SMTP_V_HELP, SMTP_V_STARTTLS, SMTP_V_AUTH,
    SMTP_V__COUNT
};

/*
 * Find the next command line in buf[0..len).  On SMTP_P_OK *line_len is the
 * length without CRLF and *consumed includes CRLF.  A line is only ended by
 * CRLF; a bare LF gives SMTP_P_EBARELF with *consumed past it (so that the
 * session can skip it).  A line longer than max (including CRLF) gives
 * SMTP_P_ETOOLONG once the CRLF arrives or max bytes are buffered; *consumed
 * then tells how many bytes to drop (the session keeps discarding until the
 * CRLF: see smtp_line_skip).
 */
int smtp_line_next(const char *buf, size_t len, size_t max, size_t *line_len,
                   size_t *consumed);

/*
 * Precisely (smtp_parse.c): SMTP_P_ETOOLONG is returned when buf holds max
 * bytes and none of them is an LF; *consumed is then exactly max and the end
 * of the overlong line lies beyond it: call smtp_line_skip() on the bytes
 * that follow (buf + max first, then each new read) until it returns
 * SMTP_P_OK, then reply 500.  A CR anywhere in the line other than before its
 * final LF is a bare CR and gives SMTP_P_EBARELF too (whole line consumed).
 *
 * smtp_line_skip: discard the rest of an overlong line.  Returns SMTP_P_OK
 * with *consumed through the LF that ends it (its CR may have been consumed
 * already), or SMTP_P_AGAIN with *consumed = len (all of it discarded).
 */
int smtp_line_skip(const char *buf, size_t len, size_t *consumed);

/* Parsed command: verb plus the argument after the verb and one space. */
struct smtp_cmd {
    enum smtp_verb verb;
    const char *arg;   /* after the verb and separating spaces; "" if none */
    size_t arg_len;
};

/* Split a command line (without CRLF).  Verbs are case-insensitive;
 * "MAIL FROM:" and "RCPT TO:" are recognised as MAIL/RCPT with arg pointing
 * after the colon.  Returns SMTP_P_OK or SMTP_P_ESYNTAX (e.g. "MAIL" without
 * "FROM:").  Unknown verbs give SMTP_P_OK with SMTP_V_UNKNOWN. */
int smtp_cmd_parse(const char *line, size_t len, struct smtp_cmd *out);

/* Verb name for logs. */
const char *smtp_verb_name(enum smtp_verb v);

/* A mailbox: local@domain.  Slices into the input. */
struct smtp_addr {
    const char *local;  size_t local_len;   /* as written (quoted form kept) */
    const char *domain; size_t domain_len;  /* domain or address literal */
    bool is_null;       /* "<>" */
    bool is_utf8;       /* contains non-ASCII (needs SMTPUTF8) */
};

/*
 * Parse a mailbox "local@domain" (no angle brackets), RFC 5321 4.1.2:
 * dot-string or quoted-string local part (<= 255 octets: longer than the
 * RFC's 64, for SRS and VERP return paths), domain of
 * dot-separated labels (letters, digits, hyphens; <= 255 octets) or an
 * address literal [1.2.3.4] / [IPv6:...].  UTF-8 is accepted only when
 * allow_utf8 (RFC 6531).  Returns SMTP_P_OK or SMTP_P_EADDR.
 */
int smtp_addr_parse(const char *s, size_t len, bool allow_utf8, struct smtp_addr *out);

/* MAIL FROM parameters (RFC 1870, 6152, 6531, 4954, 3461). */
struct smtp_mail_args {
    struct smtp_addr addr;
    const char *path; size_t path_len;   /* inside <>, "" for null sender */
    bool has_size; uint64_t size;
    enum { SMTP_BODY_NONE = 0, SMTP_BODY_7BIT, SMTP_BODY_8BITMIME, SMTP_BODY_BINARYMIME } body;
    bool smtputf8;
    const char *auth; size_t auth_len;   /* AUTH=<mailbox>|<>, as given */
    const char *ret;  size_t ret_len;    /* RET=FULL|HDRS */
    const char *envid; size_t envid_len; /* ENVID=xtext */
};

/* Parse the argument of MAIL (after "FROM:"): "<path> [params]".  Spaces
 * after the colon are tolerated.  Source routes (@a,@b:) are accepted and
 * ignored (RFC 5321 4.1.2).  Returns SMTP_P_OK, SMTP_P_ESYNTAX, SMTP_P_EADDR
 * or SMTP_P_EPARAM.  allow_utf8 decides whether UTF-8 addresses parse
 * (pass true when the SMTPUTF8 parameter is present: the parser checks the
 * params first). */
int smtp_mail_parse(const char *arg, size_t len, struct smtp_mail_args *out);

/* RCPT TO parameters. */
struct smtp_rcpt_args {
    struct smtp_addr addr;
    const char *path; size_t path_len;   /* inside <> */
    bool is_postmaster;                  /* <postmaster> without domain */
    const char *notify; size_t notify_len;
    const char *orcpt; size_t orcpt_len;
};

/* Parse the argument of RCPT (after "TO:").  allow_utf8: the transaction
 * has SMTPUTF8. */
int smtp_rcpt_parse(const char *arg, size_t len, bool allow_utf8, struct smtp_rcpt_args *out);

/* Parse "BDAT <size> [LAST]".  Returns SMTP_P_OK or SMTP_P_ESYNTAX. */
int smtp_bdat_parse(const char *arg, size_t len, uint64_t *size, bool *last);

/*
 * DATA scanner: finds the end of data (CRLF "." CRLF, RFC 5321 4.1.1.4) in a
 * stream fed in arbitrary pieces, and rejects bare LF and bare CR (no SMTP
 * smuggling).  State lives in struct smtp_data_scan; the message starts right
 * after the DATA reply, which counts as the start of a line.
 */
struct smtp_data_scan {
    int state;          /* internal */
    uint64_t bytes;     /* message bytes so far (excluding the terminator) */
    bool bad;           /* a bare LF/CR was seen (keep scanning to the end) */
    size_t line_len;    /* current line length so far */
    bool long_line;     /* a line over SMTP_MAX_TEXT_LINE was seen */
};

void smtp_data_scan_init(struct smtp_data_scan *s);

/*
 * Scan buf[0..len).  Returns SMTP_P_AGAIN with *msg_len = *consumed = the
 * bytes that are message for sure: len, or len-1 / len-2 when buf ends with
 * "." / ".\r" at the start of a line (a terminator may be starting: the
 * caller keeps those bytes and passes them again, followed by new ones, on
 * the next call), or SMTP_P_DONE with *msg_len = message bytes in buf before the
 * terminator and *consumed = bytes including ".\r\n".  The message bytes
 * stored are exactly the received ones (dot-stuffed, CRLF), the last CRLF
 * included and the ".\r\n" excluded.  A bare LF/CR sets s->bad; scanning
 * continues so that the session can find the real end and reply 5xx.
 */
int smtp_data_scan(struct smtp_data_scan *s, const char *buf, size_t len,
                   size_t *msg_len, size_t *consumed);

/*
 * BDAT stuffer: copies chunk bytes to out, dot-stuffing lines that start
 * with "." (so stored messages are in one wire form whatever the verb).
 * out must hold 2*len bytes.  Tracks line starts across calls and flags
 * bare LF/CR in s->bad.  Returns bytes written to out.
 */
size_t smtp_bdat_stuff(struct smtp_data_scan *s, const char *in, size_t len, char *out);

/*
 * The Received: fields of a message's header block (the stored wire form:
 * up to the first empty line), for loop detection (RFC 5321 6.3).  A field
 * name is matched without regard to case, with optional blanks before the
 * colon (RFC 5322 4.5 obsolete syntax).  Counting stops at `stop`.
 */
size_t smtp_count_received(const char *msg, size_t len, size_t stop);
#define SMTP_MAX_HOPS 100 /* Received: fields a message may carry (RFC 5321 6.3: at least 100) */

/* xtext/quoted helpers: true if s is a valid xtext (RFC 3461 4). */
bool smtp_xtext_valid(const char *s, size_t len);

#endif
