# SPDX-License-Identifier: MIT
"""io = auto falls back to epoll, and says so, when io_uring cannot be set up
(as under Docker's default seccomp profile or kernel.io_uring_disabled); an
explicit io = uring then fails at start-up with a clear error.  The server
runs under no_io_uring.py, a seccomp filter that refuses io_uring's system
calls with EPERM (what both of those give): no privilege needed, and other
processes on the machine keep io_uring."""

import os
import pathlib
import re
import subprocess

from conftest import DOMAIN, ORTOO, open_session, send_mail, message

NO_IO_URING = [os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            "no_io_uring.py")]


def test_auto_falls_back_to_epoll(make_server):
    s = make_server("auto", "fallback", start=False)
    s.wrapper = NO_IO_URING
    s.start()
    log = "\n".join(s.log)
    assert re.search(r"backend=uring error=.*fallback=epoll", log), log
    assert re.search(r"event=ready .*io=epoll", log), log
    with open_session(s, "smtp") as c:
        send_mail(c, "fb@client.test", [f"alice@{DOMAIN}"], message())
    s.stop()
    # io = uring explicitly: refuse to start, with the reason.
    conf = pathlib.Path(s.dir) / "ortoo.conf"
    text = conf.read_text().replace("io = auto", "io = uring")
    conf.write_text(text)
    p = subprocess.run(NO_IO_URING + [ORTOO, "-c", str(s.dir), "serve"],
                       capture_output=True, text=True, timeout=20,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert "uring" in p.stderr and "event loop" in p.stderr, p.stderr


def test_no_io_uring_wrapper_refuses_io_uring():
    """The wrapper itself: outside it io_uring works (so the test above
    proves the fallback, not a machine without io_uring); inside it
    io_uring_setup fails with EPERM."""
    probe = ("import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); "
             "p = ctypes.create_string_buffer(120); "
             "fd = libc.syscall(425, 1, p); "  # io_uring_setup(1, &params), x86-64 and arm64
             "print('ok' if fd >= 0 else 'errno=%d' % ctypes.get_errno())")
    py = "/usr/bin/python3"
    out = subprocess.run([py, "-c", probe], capture_output=True, text=True,
                         timeout=20).stdout.strip()
    assert out == "ok", out
    out = subprocess.run(NO_IO_URING + [py, "-c", probe], capture_output=True,
                         text=True, timeout=20).stdout.strip()
    assert out == "errno=1", out
