/* SPDX-License-Identifier: MIT */
/*
 * res_internal.h - what resolver.c and answer.c share inside the resolver
 * module: building struct res_answer from libunbound results and from other
 * answers.  Not for other modules (they use resolver/resolver.h).
 *
 * Every constructor returns an answer holding one reference, or, when memory
 * runs out, a static RES_ERROR answer (refs == 0, never freed); they never
 * return NULL, so a waiting req always gets an answer.
 */
#ifndef ORTOO_RES_INTERNAL_H
#define ORTOO_RES_INTERNAL_H

#include <unbound.h>

#include "resolver/resolver.h"

/* A failure answer (no records) with a reason (copied; may be NULL). */
struct res_answer *answer_error(enum res_type type, const char *name, enum res_status status,
                                const char *why);

/*
 * The answer for libunbound's callback arguments.  err is libunbound's
 * error code (0: r is valid); r is borrowed (the caller frees it).  The
 * bogus flag is checked before anything else: a bogus result never
 * yields records.  For MX the RRset is sorted by preference (stable) and a
 * null MX gives RES_NULLMX.
 */
struct res_answer *answer_from_ub(enum res_type type, const char *name, int err,
                                  const struct ub_result *r);

/*
 * The MX answer one request gets from a cached MX answer with status RES_OK:
 * a copy whose hosts of equal preference are shuffled (it borrows raw's
 * strings and holds a reference on raw).
 */
struct res_answer *answer_mx_shuffled(const struct res_answer *raw);

/*
 * RFC 5321 5.1 implicit MX: mx is the MX answer with RES_NODATA, a4 and a6
 * the answers for A and AAAA of the same name.  See resolver.h.
 */
struct res_answer *answer_implicit_mx(const struct res_answer *mx, const struct res_answer *a4,
                                      const struct res_answer *a6);

/*
 * Decode the uncompressed wire-format name at p (at most len bytes) into
 * text without the final dot, bytes other than letters, digits, '-' and
 * '_' written as \DDD (RFC 1035 5.1).  The root is "".  Returns the bytes
 * of wire consumed, or -1 when malformed or out is too small.
 */
int wire_name_text(const unsigned char *p, size_t len, char *out, size_t outlen);

#endif
