/* SPDX-License-Identifier: MIT */
/*
 * version.h - the version string (`ortoo --version`, the metrics' ortoo_info).
 * A packager may set it with EXTRA_CFLAGS=-DORTOO_VERSION='"..."'.
 */
#ifndef ORTOO_VERSION_H
#define ORTOO_VERSION_H

#ifndef ORTOO_VERSION
#define ORTOO_VERSION "0.1.0-dev"
#endif

#endif
