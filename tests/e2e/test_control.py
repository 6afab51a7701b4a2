# SPDX-License-Identifier: MIT
"""Operating a running server: the control socket (protocol, bounds, a
client that never sends does not block the others, the public socket's
restrictions), `ortoo reload` telling the truth (a broken certificate makes
it exit 1 with the server's reason while the server keeps serving the old
one; settings that need a restart are named; limits apply), sd_notify
READY/RELOADING/STOPPING on a test NOTIFY_SOCKET, `ortoo check` on good and
broken configurations, and the privilege drop when started as root."""

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import (HOSTNAME, ORTOO, Raw, assert_serving, make_conf,
                      open_session, run_ortoo, wait_log)
from test_tls_more import file_der, install_cert, new_cert_files, served_der


def ctl_path(srv, public=False):
    return os.path.join(srv.dir, "spool", "pickup" if public else "control")


def ctl(srv, line, public=False, timeout=10):
    """One request; return (data lines, status line)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(ctl_path(srv, public))
    s.sendall(line if isinstance(line, bytes) else (line + "\n").encode())
    buf = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    s.close()
    lines = buf.decode().splitlines()
    assert lines, f"empty answer to {line!r}"
    for l in lines[:-1]:
        assert l.startswith("* "), f"bad data line {l!r} in {lines}"
    assert re.match(r"^(OK( .*)?|ERR .+)$", lines[-1]), lines
    return [l[2:] for l in lines[:-1]], lines[-1]


def set_conf(srv, **over):
    srv.conf_text = make_conf(srv.backend_name, **over)
    with open(os.path.join(srv.dir, "ortoo.conf"), "w") as f:
        f.write(srv.conf_text)


@pytest.fixture
def server(fresh, backend):
    s = fresh("ctl")
    s.backend_name = backend
    return s


# ---- the protocol ------------------------------------------------------

def test_protocol(server):
    s = server
    st = os.stat(ctl_path(s))
    assert st.st_mode & 0o777 == 0o660, oct(st.st_mode)
    assert os.stat(ctl_path(s, True)).st_mode & 0o777 == 0o666
    data, status = ctl(s, "help")
    names = {d.split()[0] for d in data}
    assert {"help", "ping", "reload", "pickup"} <= names, data
    assert status == "OK"
    assert ctl(s, "ping")[1] == f"OK pong pid={s.proc.pid}"
    assert ctl(s, "  ping  ")[1].startswith("OK pong")         # blanks around words
    assert ctl(s, "bogus")[1].startswith("ERR unknown command")
    assert ctl(s, "")[1].startswith("ERR empty request")
    assert ctl(s, b"ping\x01\n")[1].startswith("ERR control characters")
    assert ctl(s, " ".join(["w"] * 40))[1].startswith("ERR too many words")
    assert ctl(s, "x" * 5000)[1].startswith("ERR request line too long")
    assert ctl(s, "reload extra")[1] == "ERR usage: reload"
    # The public socket serves only the public commands.
    data, status = ctl(s, "help", public=True)
    assert {d.split()[0] for d in data} == {"help", "ping", "pickup"}, data
    assert ctl(s, "reload", public=True)[1].startswith("ERR unknown command")
    assert ctl(s, "ping", public=True)[1].startswith("OK pong")
    assert_serving(s)


def test_idle_client_does_not_block(server):
    s = server
    idle = []
    try:
        # Some clients connect and never send; one sends half a line.
        for _ in range(5):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(ctl_path(s))
            idle.append(c)
        idle[0].sendall(b"rel")
        t0 = time.monotonic()
        for _ in range(20):
            assert ctl(s, "ping", timeout=3)[1].startswith("OK pong")
        took = time.monotonic() - t0
        assert took < 3, f"20 pings took {took:.1f}s next to idle clients"
        # SMTP is served meanwhile.
        assert_serving(s)
        # The idle ones are dropped after the control timeout (10 s).
        idle[1].settimeout(20)
        t0 = time.monotonic()
        assert idle[1].recv(100) == b"", "an idle client got an answer"
        assert 5 < time.monotonic() - t0 < 19
    finally:
        for c in idle:
            c.close()


def test_many_clients_at_once(server):
    s = server
    socks = []
    try:
        for _ in range(80):                      # more than CONTROL_MAX_CLIENTS (64)
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(ctl_path(s))               # blocking: waits for the backlog
            c.settimeout(10)
            socks.append(c)
        for c in socks:
            try:
                c.sendall(b"ping\n")
            except (BrokenPipeError, ConnectionResetError):
                pass                             # refused at once: its ERR is waiting
        answers = []
        for c in socks:
            buf = b""
            while not buf.endswith(b"\n"):
                try:
                    chunk = c.recv(1000)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                buf += chunk
            answers.append(buf.decode())
        ok = sum(a.startswith("OK pong") for a in answers)
        # The ones past the limit are refused at once (their ERR line, or a
        # reset if it raced their request), never left hanging.
        refused = sum(a.startswith("ERR too many") or a == "" for a in answers)
        assert ok + refused == 80 and ok >= 64, answers
    finally:
        for c in socks:
            c.close()
    assert ctl(s, "ping")[1].startswith("OK pong")


# ---- reload ------------------------------------------------------------

def test_reload_broken_certificate(server, tmp_path):
    s = server
    old = file_der(s, HOSTNAME)
    r = run_ortoo(s.dir, "reload")
    assert "reloaded" in r.stdout and "certificates (1)" in r.stdout, r.stdout
    # Somebody else's key: the reload fails, loudly, and the old pair stays.
    crt_a, _ = new_cert_files(tmp_path, HOSTNAME)
    _, key_b = new_cert_files(tmp_path, HOSTNAME)
    install_cert(s, HOSTNAME, crt_a, key_b)
    r = run_ortoo(s.dir, "reload", check=False)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "ortoo reload: failed: certificates:" in r.stderr, r.stderr
    assert "privkey.pem" in r.stderr or "fullchain.pem" in r.stderr, r.stderr
    assert "still serving the previous" in r.stderr, r.stderr
    assert s.alive()
    for role in ("submission", "submissions"):
        assert served_der(s, role) == old, f"{role}: not the old certificate"
    assert_serving(s, "submission")
    # `ortoo check` says the same without the server.
    c = run_ortoo(s.dir, "check", check=False)
    assert c.returncode == 1 and "does not match the certificate" in c.stdout, c.stdout
    # Fixed: reload succeeds and serves the new one.
    crt, key = new_cert_files(tmp_path, HOSTNAME)
    install_cert(s, HOSTNAME, crt, key)
    r = run_ortoo(s.dir, "reload")
    assert r.stdout.strip().endswith("reloaded"), r.stdout
    assert served_der(s, "submissions") == file_der(s, HOSTNAME) != old


def test_reload_config(server):
    s = server
    # A limit applies at once (max_recipients 5 -> 2), a listener change
    # needs a restart and is named, and the server keeps its listeners.
    addrs = dict(s.addrs)
    set_conf(s, **{"server.max_recipients": 2, "server.reactors": 1,
                   "listen.submissions": None})
    r = run_ortoo(s.dir, "reload")
    assert "needs a restart" in r.stdout, r.stdout
    assert "listen" in r.stdout and "server.reactors" in r.stdout, r.stdout
    wait_log(s, r"event=reload-restart-needed settings=listen,server.reactors")
    with open_session(s) as c:
        c.expect("MAIL FROM:<x@client.test>", 250)
        c.expect("RCPT TO:<alice@example.test>", 250)
        c.expect("RCPT TO:<bob@example.test>", 250)
        c.expect("RCPT TO:<alice@example.test>", 452, "4.5.3")
    assert_serving(s, "submissions")              # still listening
    assert s.addrs == addrs
    # A broken ortoo.conf: exit 1 with file:line, the running settings stay.
    with open(os.path.join(s.dir, "ortoo.conf"), "a") as f:
        f.write("[server]\nbogus_key = 1\n")
    r = run_ortoo(s.dir, "reload", check=False)
    assert r.returncode == 1, r
    assert re.search(r"ortoo\.conf:\d+: unknown key 'bogus_key'", r.stderr), r.stderr
    # (The CLI reads ortoo.conf to find the socket: it stops there.  The
    # server, asked directly, reloads the rest and says what failed.)
    data, status = ctl(s, "reload")
    assert re.match(r"ERR configuration: \S+ortoo\.conf:\d+: unknown key 'bogus_key'",
                    status), status
    assert "reloaded: certificates (1); users; DKIM keys (1)" in data, data
    with open_session(s) as c:
        c.expect("MAIL FROM:<x@client.test>", 250)
        c.expect("RCPT TO:<alice@example.test>", 250)
        c.expect("RCPT TO:<bob@example.test>", 250)
        c.expect("RCPT TO:<alice@example.test>", 452, "4.5.3")


def test_reload_not_running(template_dir, tmp_path):
    d = tmp_path / "conf"
    shutil.copytree(template_dir, d)
    (d / "ortoo.conf").write_text(make_conf("epoll"))
    r = run_ortoo(d, "reload", check=False)
    assert r.returncode == 1 and "not running" in r.stderr, r.stderr


def test_second_server_on_same_spool(server):
    """The control socket of a running server is never taken over."""
    s = server
    p = subprocess.run([ORTOO, "-c", s.dir, "serve"], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode != 0
    assert "already serving the spool" in p.stderr, p.stderr
    assert ctl(s, "ping")[1] == f"OK pong pid={s.proc.pid}"


# ---- systemd notifications -------------------------------------------------

def test_sd_notify(make_server, backend, tmp_path):
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    got = []

    def expect(word):
        while True:
            msg = sock.recv(4096).decode()
            got.append(msg)
            if word in msg.split("\n"):
                return msg

    try:
        s = make_server(backend, "notify", start=False)
        s.env = {**os.environ, "NOTIFY_SOCKET": path}
        s.start()
        expect("READY=1")
        run_ortoo(s.dir, "reload")
        msg = expect("RELOADING=1")
        assert re.search(r"^MONOTONIC_USEC=\d+$", msg, re.M), msg
        expect("READY=1")
        s.proc.send_signal(signal.SIGHUP)
        expect("RELOADING=1")
        expect("READY=1")
        assert s.stop() == 0
        expect("STOPPING=1")
    finally:
        sock.close()
    assert got[0] == "READY=1", got


# ---- ortoo check -------------------------------------------------------

def test_check(template_dir, tmp_path):
    d = tmp_path / "conf"
    shutil.copytree(template_dir, d)
    (d / "ortoo.conf").write_text(make_conf("epoll"))
    p = run_ortoo(d, "check")
    assert p.stdout.splitlines()[-1].startswith("ok: "), p.stdout
    assert "self-signed" in p.stdout                 # a warning, not an error

    # Each breakage on its own, with the file (and line) named.
    def broken(mutate, want, code=1):
        e = tmp_path / f"b{time.time_ns()}"
        shutil.copytree(d, e)
        mutate(e)
        r = run_ortoo(e, "check", check=False)
        assert r.returncode == code, (want, r.returncode, r.stdout, r.stderr)
        assert re.search(want, r.stdout), (want, r.stdout)
        return r

    broken(lambda e: (e / "ortoo.conf").write_text(make_conf("epoll") + "[server]\nx = 1\n"),
           r"ortoo\.conf:\d+: unknown key 'x' in \[server\]")
    broken(lambda e: (e / "certs" / HOSTNAME / "privkey.pem").write_text("junk\n"),
           rf"certs/{re.escape(HOSTNAME)}/privkey\.pem: error: no private key")
    broken(lambda e: (e / "certs" / HOSTNAME / "fullchain.pem").write_text(""),
           r"fullchain\.pem: error: no certificate")

    def expired(e):
        """A certificate for the key that expired in 2020 (openssl ca takes
        explicit dates; req -x509 cannot go back in time)."""
        ca = e / "ca"
        ca.mkdir()
        (ca / "index.txt").write_text("")
        (ca / "serial").write_text("01\n")
        (ca / "ca.cnf").write_text(
            f"[ca]\ndefault_ca = d\n[d]\ndatabase = {ca}/index.txt\n"
            f"new_certs_dir = {ca}\nserial = {ca}/serial\ndefault_md = sha256\n"
            "policy = p\n[p]\ncommonName = supplied\n")
        key = e / "certs" / HOSTNAME / "privkey.pem"
        subprocess.run(["openssl", "req", "-new", "-key", str(key), "-subj",
                        f"/CN={HOSTNAME}", "-out", str(ca / "r.csr")], check=True,
                       capture_output=True)
        subprocess.run(["openssl", "ca", "-batch", "-config", str(ca / "ca.cnf"),
                        "-selfsign", "-keyfile", str(key), "-in", str(ca / "r.csr"),
                        "-startdate", "20200101000000Z", "-enddate", "20200102000000Z",
                        "-out", str(e / "certs" / HOSTNAME / "fullchain.pem")],
                       check=True, capture_output=True)
        shutil.rmtree(ca)
    broken(expired, r"fullchain\.pem: error: the certificate expired \d+ days ago")

    def users(e):
        with open(e / "domains" / "example.test" / "users", "a") as f:
            f.write("no colon here\n")
    broken(users, r"domains/example\.test/users:\d+: error: ")

    def aliases(e):
        (e / "domains" / "example.test" / "aliases").write_text(
            "# ok\npostmaster: alice\nsales: alice,\n  bob@example.org\n"
            "broken line\n*: me@gmail.com\nempty:\n")
    r = broken(aliases, r"aliases:5: error: expected 'name: target")
    assert re.search(r"aliases:7: error: no target", r.stdout), r.stdout
    assert "aliases:3" not in r.stdout, r.stdout

    def dkim(e):
        k = e / "domains" / "example.test" / "dkim"
        k.mkdir(exist_ok=True)
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out",
                        str(k / "good.key")], check=True, capture_output=True)
        (k / "good.txt").write_text("x")
        (k / "bad.key").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n"
                                   "-----END PRIVATE KEY-----\n")
    r = broken(dkim, r"dkim/bad\.key: error: not a PEM private key")
    assert "good.key" not in r.stdout, r.stdout


# ---- privileges ----------------------------------------------------------

@pytest.fixture
def system_user():
    """A throwaway system account (root only)."""
    if os.geteuid() != 0:
        pytest.skip("NOT RUN: the privilege drop needs root to start the server")
    name = f"ortoot{os.getpid() % 100000}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                    "/usr/sbin/nologin", name], check=True, capture_output=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def proc_ids(pid):
    """{tid: (uids, gids, groups)} for every thread of pid."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            st = dict(l.split(":", 1) for l in f if ":" in l)
        out[tid] = (st["Uid"].split(), st["Gid"].split(), st["Groups"].split())
    return out


def test_privilege_drop(make_server, backend, template_dir, system_user):
    pw = system_user
    # A directory every account can reach (pytest's tmp is root's only).
    base = tempfile.mkdtemp(prefix="ortoo-priv-", dir="/tmp")
    try:
        os.chmod(base, 0o755)
        d = os.path.join(base, "conf")
        shutil.copytree(template_dir, d)
        from conftest import Server
        s = Server(d, make_conf(backend, **{"server.user": pw.pw_name}),
                   f"priv[{backend}]")
        # Before the files are shared with the account, `check` (as root)
        # says that a reload would fail.
        c = run_ortoo(d, "check", check=False)
        assert c.returncode == 1 and f"not readable by user {pw.pw_name}" in c.stdout, \
            c.stdout
        subprocess.run(["chgrp", "-R", str(pw.pw_gid), d], check=True)
        subprocess.run(["chmod", "-R", "g+rX", d], check=True)
        c = run_ortoo(d, "check", check=False)
        assert "not readable" not in c.stdout, c.stdout
        s.start()
        try:
            ids = proc_ids(s.proc.pid)
            assert len(ids) >= 3, ids            # main, reactors, workers
            for tid, (uids, gids, groups) in ids.items():
                assert uids == [str(pw.pw_uid)] * 4, (tid, uids)
                assert gids == [str(pw.pw_gid)] * 4, (tid, gids)
                assert "0" not in groups, (tid, groups)
            assert any(f"event=privileges user={pw.pw_name}" in l for l in s.log)
            spool = os.path.join(d, "spool")
            for name in os.listdir(spool):
                st = os.lstat(os.path.join(spool, name))
                assert st.st_uid == pw.pw_uid, (name, st.st_uid)
            assert os.stat(os.path.join(spool, "control")).st_gid == pw.pw_gid
            qid = assert_serving(s)
            assert qid
            # Reload after the drop reads the certificates as the account.
            r = run_ortoo(d, "reload")
            assert "certificates (1)" in r.stdout, r.stdout
            assert s.stop() == 0, s.tail(40)
        finally:
            if s.alive():
                s.kill()
        # A restart as root adopts the spool it left.
        s.start()
        assert_serving(s)
        assert s.stop() == 0
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_refuses_root_without_user(template_dir, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("NOT RUN: only root can be refused")
    d = tmp_path / "conf"
    shutil.copytree(template_dir, d)
    (d / "ortoo.conf").write_text(make_conf("epoll", **{"server.user": None}) +
                                  "")
    conf = (d / "ortoo.conf").read_text().replace("[server]\n",
                                                   "[server]\nuser = no-such-acct\n")
    (d / "ortoo.conf").write_text(conf)
    p = subprocess.run([ORTOO, "-c", str(d), "serve"], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 1, p
    assert "user 'no-such-acct' does not exist" in p.stderr and "user = root" in p.stderr, \
        p.stderr
    # Without a user line at all, the default is 'ortoo': refused the same
    # way on a machine without that account.
    (d / "ortoo.conf").write_text(make_conf("epoll", **{"server.user": None}))
    try:
        pwd.getpwnam("ortoo")
        return
    except KeyError:
        pass
    p = subprocess.run([ORTOO, "-c", str(d), "serve"], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 1 and "user 'ortoo' does not exist" in p.stderr, p.stderr
