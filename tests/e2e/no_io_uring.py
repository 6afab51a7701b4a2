#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""no_io_uring.py CMD [ARG...]: run CMD with io_uring's system calls refused
(EPERM), as under Docker's default seccomp profile and as with the sysctl
kernel.io_uring_disabled = 2.  A seccomp filter needs no privilege (libseccomp
sets no_new_privs first), affects only CMD and what it starts, and leaves the
rest of the machine alone, unlike the sysctl."""

import errno
import os
import sys

import seccomp

f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
for name in ("io_uring_setup", "io_uring_enter", "io_uring_register"):
    f.add_rule(seccomp.ERRNO(errno.EPERM), name)
f.load()
os.execv(sys.argv[1], sys.argv[1:])
