/* SPDX-License-Identifier: MIT */
/*
 * certgen.h - a self-signed certificate for a fresh install.
 *
 * `ortoo init` calls this so that STARTTLS and port 465 work on first start;
 * the self-hoster later replaces the pair with acme.sh or certbot output in
 * the same place (certs/<hostname>/{fullchain.pem,privkey.pem}), which
 * io/tls.c loads.  OpenSSL 3 only (core/ is not built against BoringSSL).
 */
#ifndef ORTOO_CERTGEN_H
#define ORTOO_CERTGEN_H

#include <stddef.h>

/*
 * Write dir/privkey.pem (a new ECDSA P-256 key, PKCS#8 PEM, mode 0600) and
 * dir/fullchain.pem (an X.509 v3 certificate signed by that key, valid ten
 * years from now, subject CN=hostname, subjectAltName DNS:hostname, plus
 * IP:127.0.0.1 and IP:::1 when hostname is "localhost", basicConstraints
 * CA:FALSE, serverAuth and clientAuth).  dir is created (mode 0700) if it
 * does not exist; its parent must.  Each file is written to a temporary
 * name, synced and renamed over any existing file.
 *
 * hostname must be a DNS name of letters, digits, '-' and '_' in labels of
 * 1-63 characters, 253 characters at most.  Returns 0, or -errno with a
 * message in err (NUL-terminated, truncated to errlen): -EINVAL for a bad
 * hostname, -EIO when the crypto library fails, else the failing syscall's
 * errno.  Blocking (key generation and fsync); call from the CLI only.
 */
int certgen_selfsigned(const char *dir, const char *hostname, char *err, size_t errlen);

#endif
