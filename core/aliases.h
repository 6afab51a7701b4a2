/* SPDX-License-Identifier: MIT */
/*
 * aliases.h - the aliases files of the local domains and their table.
 *
 * Each local domain may have domains/<domain>/aliases, in the familiar
 * /etc/aliases form (aliases(5)):
 *
 *   # comment
 *   sales: alice, bob@example.com      local users or aliases of any local domain
 *   me:    me@gmail.com                a remote address (forwarded, with SRS)
 *   list:  alice,
 *          carol@example.org           an indented line continues the entry
 *   alice: \alice, alice@gmail.com     "\name" (or the alias's own name): the
 *                                      user's mailbox, not expanded again
 *   bugs:  "|/usr/local/bin/tracker --new"   pipe to a command, only with
 *                                      [local] allow_pipe = on
 *   *:     me@gmail.com                the catch-all: only when nothing else
 *                                      matches
 *
 * A name is a local part of the file's domain ("name@<domain>" is accepted
 * too).  Targets are separated by commas; a target in double quotes may hold
 * commas and blanks (\" and \\ escape inside).  A bare name is a local part
 * of the same domain.  File targets ("/path") and ":include:" are refused.
 * Every error names "file:line".
 *
 * The table is immutable once aliases_finish() returned; lookups are
 * lock-free bsearch()es.  Names compare case-insensitively unless the table
 * was made case-sensitive ([local] case_sensitive); domains always do.
 * Whether a target is a user, another alias or nobody is decided by the
 * resolver (core/recipients.h), which also checks chains for loops.
 */
#ifndef ORTOO_ALIASES_H
#define ORTOO_ALIASES_H

#include <stdbool.h>
#include <stddef.h>

#define ALIASES_FILE_MAX (4u << 20) /* an aliases file is read whole */

enum alias_target_kind {
    ALIAS_T_ADDR = 0,  /* an address: a local user or alias, or a remote mailbox */
    ALIAS_T_MAILBOX,   /* "\name" or the alias's own name: that user's mailbox */
    ALIAS_T_PIPE,      /* "|command" */
};

/* One target.  Strings are owned by the table. */
struct alias_target {
    enum alias_target_kind kind;
    const char *text;  /* ADDR/MAILBOX: "local@domain" (a bare name gets the
                          file's domain; the domain is lowercased, the local
                          part kept as written); PIPE: the command, without '|' */
    size_t local_len;  /* ADDR/MAILBOX: text[0..local_len) is the local part */
};

/*
 * One alias.  Invariant: addr is "name@domain" with the domain lowercased and
 * the name lowercased unless the table is case-sensitive; name "*" is the
 * catch-all; ntargets >= 1.
 */
struct alias {
    const char *addr;                    /* "name@domain" */
    size_t name_len;                     /* addr[0..name_len) is the name */
    const struct alias_target *targets;  /* in file order */
    size_t ntargets;
    const char *file;                    /* the aliases file, for messages */
    unsigned line;                       /* line of "name:" */
    unsigned seq;                        /* position in its file (0: first) */
};

struct aliases;

/* An empty table.  case_sensitive: names compare exactly; allow_pipe:
 * "|command" targets are accepted.  NULL when out of memory. */
struct aliases *aliases_new(bool case_sensitive, bool allow_pipe);
void aliases_free(struct aliases *a);

/*
 * Parse the text of domain's aliases file (len bytes; file is the name used
 * in messages) into the table.  domain must be a valid lowercase domain.
 * Returns 0, or -1 with "file:line: what is wrong" in err (the table keeps
 * what was added before; free it).
 */
int aliases_parse(struct aliases *a, const char *file, const char *domain, const char *text,
                  size_t len, char *err, size_t errlen);

/* Read path and aliases_parse() it; a missing file is no error.  Blocking. */
int aliases_load_file(struct aliases *a, const char *path, const char *domain, char *err,
                      size_t errlen);

/* Sort the table and refuse a name defined twice in one domain (both
 * places in the message).  Call once, after the last parse.  Returns 0 or
 * -1 with err. */
int aliases_finish(struct aliases *a, char *err, size_t errlen);

/* The alias name@domain (name without '@'; "*" finds the catch-all), or
 * NULL.  Case rules as above.  After aliases_finish() only. */
const struct alias *aliases_find(const struct aliases *a, const char *name, size_t nlen,
                                 const char *domain, size_t dlen);

/* The first alias of domain's file other than the catch-all, or NULL. */
const struct alias *aliases_first(const struct aliases *a, const char *domain, size_t dlen);

/* Iterate: the i-th alias in table order (i < aliases_count()), and the
 * position of an alias of this table. */
size_t aliases_count(const struct aliases *a);
const struct alias *aliases_at(const struct aliases *a, size_t i);
size_t aliases_index(const struct aliases *a, const struct alias *al);

#endif
