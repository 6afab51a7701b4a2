/* SPDX-License-Identifier: MIT */
/*
 * psl.h - the Public Suffix List (publicsuffix.org) and the organizational
 * domain of RFC 7489 3.2 that DMARC aligns and looks policies up with.
 *
 * The list is read once (Debian's `publicsuffix` package installs it as
 * PSL_DEFAULT_PATH) into an immutable table that reactor threads share.
 * Rules follow the list's algorithm: normal rules, wildcards ("*.ck"),
 * exceptions ("!www.ck", which win), the longest match prevails, and a
 * name no rule matches has the implicit rule "*" (its last label is the
 * public suffix).  Both the ICANN and the private sections are used.
 *
 * Names are compared in ASCII, without case.  The list writes
 * internationalized suffixes in UTF-8 while mail carries A-labels
 * ("xn--..."): such suffixes fall back to the "*" rule (no IDNA
 * conversion here).
 */
#ifndef ORTOO_CORE_PSL_H
#define ORTOO_CORE_PSL_H

#include <stddef.h>

#define PSL_DEFAULT_PATH "/usr/share/publicsuffix/public_suffix_list.dat"

struct psl;

/*
 * Read the list at path.  Blocking (start-up only).  Returns the table, or
 * NULL with a one-line reason in err (unreadable file, no rule in it, out
 * of memory).
 */
struct psl *psl_load(const char *path, char *err, size_t errlen);
void psl_free(struct psl *psl);

/* Rules loaded (for logs). */
size_t psl_count(const struct psl *psl);

/*
 * The organizational domain of domain (no final dot, any case): its public
 * suffix and one more label, written in lower case to out.  psl NULL: the
 * implicit rule alone (the last two labels).  Returns its length, or
 * -EINVAL when domain is empty, malformed or itself a public suffix, or
 * -ENAMETOOLONG when out is too small.
 */
int psl_org_domain(const struct psl *psl, const char *domain, char *out, size_t cap);

#endif
