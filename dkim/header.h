/* SPDX-License-Identifier: MIT */
/*
 * header.h - the header block of a message as the DKIM signer and verifier
 * read it: split into fields (RFC 5322 2.2), and the author domain of the
 * From field (RFC 5322 3.6.2; the domain DKIM signs for and DMARC aligns
 * with).
 *
 * Pure functions over the caller's bytes; fields are slices of them.
 */
#ifndef ORTOO_DKIM_HEADER_H
#define ORTOO_DKIM_HEADER_H

#include <stdbool.h>
#include <stddef.h>

#define DKIM_DOMAIN_MAX 253      /* a domain name in text, no final dot */

/* One header field, a slice of the block, CRLF (and folds) included. */
struct dkim_field {
    const char *p;
    size_t len;
    size_t name_len;            /* the name, before the colon */
};

/*
 * Split block[0..len) (the header block, unstuffed, without the empty line
 * that ends it) into fields: a line starting with WSP continues the field
 * above.  Names are printable ASCII without colon, directly followed by it
 * (the obsolete "Name :" form is refused, as some verifiers refuse it).
 * Returns the count with *out allocated (owned by the caller; NULL when 0),
 * -1 for a malformed block, or -ENOMEM.
 */
long dkim_fields_split(const char *block, size_t len, struct dkim_field **out);

/* The field's name is `name` (any case). */
bool dkim_field_is(const struct dkim_field *f, const char *name);

/*
 * The domain of the From field's single mailbox: the addr-spec inside <>
 * when there is one, else the whole value; comments and quoted strings are
 * skipped; a mailbox list, a domain literal or other garbage gives none.
 * Writes the domain in lower case, without a trailing dot, to out.
 * Returns true when found.
 */
bool dkim_from_domain(const struct dkim_field *f, char *out, size_t cap);

/*
 * The distinct domains of every mailbox of a From field (RFC 5322 3.6.2
 * allows a mailbox-list), in order, each as dkim_from_domain writes it, at
 * most max.  Returns the count (>= 1), or -1 when a mailbox has no domain
 * or there are more than max distinct domains.
 */
int dkim_from_domains(const struct dkim_field *f, char (*out)[DKIM_DOMAIN_MAX + 1], size_t max);

#endif
