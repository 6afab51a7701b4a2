# SPDX-License-Identifier: MIT
"""io = auto falls back to epoll, and says so, when io_uring cannot be set up
(as under Docker's default seccomp profile or kernel.io_uring_disabled); an
explicit io = uring then fails at start-up with a clear error.  The test
turns io_uring off for the whole machine with the sysctl
kernel.io_uring_disabled = 2 (CI runs as root) and always restores it."""

import contextlib
import pathlib
import re
import subprocess

from conftest import DOMAIN, ORTOO, open_session, send_mail, message

SYSCTL = "/proc/sys/kernel/io_uring_disabled"


@contextlib.contextmanager
def io_uring_disabled():
    with open(SYSCTL) as f:
        old = f.read().strip()
    with open(SYSCTL, "w") as f:
        f.write("2")
    try:
        yield
    finally:
        with open(SYSCTL, "w") as f:
            f.write(old)


def test_auto_falls_back_to_epoll(make_server):
    with io_uring_disabled():
        s = make_server("auto", "fallback")
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
        p = subprocess.run([ORTOO, "-c", str(s.dir), "serve"], capture_output=True,
                           text=True, timeout=20, stdin=subprocess.DEVNULL)
        assert p.returncode == 1, (p.returncode, p.stderr)
        assert "uring" in p.stderr and "event loop" in p.stderr, p.stderr
