/* SPDX-License-Identifier: MIT */
/*
 * smtp_reply.h - pure parsers for the client side of SMTP: server replies
 * (RFC 5321 4.2, multi-line, with RFC 2034 enhanced status codes) and the
 * keywords of an EHLO reply (RFC 5321 4.1.1.1).  No I/O, no allocation.
 *
 * The reply parser is resumable: bytes are fed in pieces of any size, the
 * state lives in struct smtp_reply_parser, and a complete reply is reported
 * with how many bytes it took (the rest belongs to the next reply).  Every
 * dimension a server controls is bounded: the bytes of one line, the lines
 * of one reply, the text kept.
 */
#ifndef ORTOO_SMTP_REPLY_H
#define ORTOO_SMTP_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 5321 4.5.3.1.5 allows 512 octets per reply line; real servers send
 * longer ones now and then, so accept up to this (CRLF included). */
#define SMTP_REPLY_LINE_MAX 2048
/* Lines in one reply (an EHLO reply has 10 to 30). */
#define SMTP_REPLY_LINES_MAX 128
/* Text kept per reply; longer replies are cut (truncated set), not refused. */
#define SMTP_REPLY_TEXT_MAX 4096

enum {
    SMTP_R_AGAIN = 0,        /* all bytes consumed, the reply is not complete */
    SMTP_R_DONE = 1,         /* a reply is complete in parser->reply */
    SMTP_R_ETOOLONG = -1,    /* a line longer than SMTP_REPLY_LINE_MAX */
    SMTP_R_ETOOMANY = -2,    /* more than SMTP_REPLY_LINES_MAX lines */
    SMTP_R_ESYNTAX = -3,     /* a line that is not "ddd", "ddd text" or "ddd-text" */
};

/* One complete reply. */
struct smtp_reply {
    int code;                         /* 200..599, from the last line (as Postfix does) */
    char enhanced[12];                /* "5.1.1" from the first line, or "" (RFC 2034) */
    unsigned nlines;                  /* lines in the reply */
    bool truncated;                   /* text was cut at SMTP_REPLY_TEXT_MAX */
    size_t text_len;                  /* bytes in text */
    char text[SMTP_REPLY_TEXT_MAX + 1]; /* the lines' text after "ddd-" / "ddd ",
                                         joined by '\n', NUL-terminated; control
                                         characters other than tab become '?' */
};

/*
 * Parser state.  Invariant: line_len < SMTP_REPLY_LINE_MAX; reply holds the
 * lines of the reply in progress (nlines of them).
 */
struct smtp_reply_parser {
    struct smtp_reply reply;          /* valid after SMTP_R_DONE until the next call */
    bool done;                        /* reply was reported: reset on the next byte */
    size_t line_len;                  /* bytes of the current line so far */
    char line[SMTP_REPLY_LINE_MAX];   /* the current line (without LF) */
};

void smtp_reply_parser_init(struct smtp_reply_parser *p);

/*
 * Feed buf[0..len).  Returns SMTP_R_DONE with *consumed = the bytes up to and
 * including the LF that ends the reply (call again with the rest), or
 * SMTP_R_AGAIN with *consumed = len, or a negative SMTP_R_E* (the stream is
 * broken: close; *consumed is then meaningless).  Lines end with CRLF; a bare
 * LF is accepted as a line end too (a lenient reader of what servers send).
 * After an error, smtp_reply_parser_init() before any further use.
 */
int smtp_reply_parse(struct smtp_reply_parser *p, const char *buf, size_t len, size_t *consumed);

/* Class of a reply code: 2, 3, 4 or 5. */
static inline int smtp_reply_class(int code) { return code / 100; }

/* Extensions of an EHLO reply. */
#define SMTP_EXT_PIPELINING 0x001u  /* RFC 2920 */
#define SMTP_EXT_SIZE       0x002u  /* RFC 1870 */
#define SMTP_EXT_8BITMIME   0x004u  /* RFC 6152 */
#define SMTP_EXT_SMTPUTF8   0x008u  /* RFC 6531 */
#define SMTP_EXT_CHUNKING   0x010u  /* RFC 3030 */
#define SMTP_EXT_STARTTLS   0x020u  /* RFC 3207 */
#define SMTP_EXT_DSN        0x040u  /* RFC 3461 */
#define SMTP_EXT_ENHANCED   0x080u  /* RFC 2034 ENHANCEDSTATUSCODES */
#define SMTP_EXT_AUTH       0x100u  /* RFC 4954 */

#define SMTP_AUTH_PLAIN 0x1u
#define SMTP_AUTH_LOGIN 0x2u

struct smtp_ehlo {
    unsigned ext;       /* SMTP_EXT_* offered */
    uint64_t size;      /* SIZE limit in octets; 0: none declared (RFC 1870 4) */
    unsigned auth;      /* SMTP_AUTH_* mechanisms offered */
};

/* Read the keywords of a 250 EHLO reply (lines after the first; keywords
 * are case-insensitive; AUTH also in its old "AUTH=" form). */
void smtp_ehlo_parse(const struct smtp_reply *r, struct smtp_ehlo *out);

#endif
