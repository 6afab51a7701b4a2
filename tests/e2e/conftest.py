# SPDX-License-Identifier: MIT
"""End-to-end test infrastructure: the real ortoo binary, driven by real clients.

The binary is $ORTOO_BIN (the Makefile passes the absolute path of the build it
made; default ./ortoo).  A session-wide template config directory is made once
with `ortoo init` and `ortoo user add` (argon2id hashing is slow, so it is done
once); every server instance runs on a copy of it, with ortoo.conf rewritten by
this file so that the tests know every limit they check.

Every server test runs under both io backends: the `backend` fixture is
parametrized over ["uring", "epoll"] and every server fixture depends on it.

A server is started with `ortoo -c DIR serve`; its stderr is read by a thread
into a list.  The ports come from its `event=listening role=R addr=A` lines
(listeners bind port 0), and start-up is complete at `event=ready`.  When a
test fails, the stderr of every server the test used is attached to the
report.
"""

import base64
import json
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest

ORTOO = os.environ.get("ORTOO_BIN") or os.path.abspath("ortoo")
DOMAIN = "example.test"
HOSTNAME = "mx.example.test"
USERS = {
    "alice@example.test": "alice-secret-1",
    "bob@example.test": "bob-secret-2",
}
MAX_MESSAGE_SIZE = 1000000
MAX_RECIPIENTS = 5
MAX_ERRORS = 5
BACKENDS = ["uring", "epoll"]
QUEUED_RE = re.compile(r"^250 2\.0\.0 Ok: queued as ([0-9A-Za-z]{20})$")
LISTEN_RE = re.compile(r"event=listening\b.*\brole=(\w+)\b.*\baddr=(\S+)")


def run_ortoo(cfg_dir, *args, input=None, timeout=60, check=True):
    """Run `ortoo -c cfg_dir args...`; return the CompletedProcess."""
    cmd = [ORTOO]
    if cfg_dir is not None:
        cmd += ["-c", str(cfg_dir)]
    cmd += list(args)
    p = subprocess.run(cmd, input=input, capture_output=True, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {p.returncode}\nstdout:\n{p.stdout}\n"
            f"stderr:\n{p.stderr}")
    return p


def make_conf(backend, **over):
    """ortoo.conf text.  `over` maps "section.key" to a value (None drops it)."""
    sections = {
        "server": {
            "hostname": HOSTNAME,
            "spool": "spool",
            "reactors": "2",
            "io": backend,
            "max_message_size": str(MAX_MESSAGE_SIZE),
            "max_recipients": str(MAX_RECIPIENTS),
            "max_errors": str(MAX_ERRORS),
            "timeout_command": "30",
            # Run as whoever runs the tests (root needs `user = root` said
            # explicitly, else the daemon wants to switch to `ortoo`).
            "user": pwd.getpwuid(os.geteuid()).pw_name,
        },
        "listen": {
            "smtp": "127.0.0.1:0, [::1]:0",
            "submission": "127.0.0.1:0",
            "submissions": "127.0.0.1:0",
        },
        "tls": {"cert_dir": "certs"},
        "auth": {},
        # No greeting delay: tests connect often (test_domains.py checks it).
        "smtp": {"greeting_delay": "0"},
        # No penalty box: many tests hit a limit from 127.0.0.1 on purpose and
        # connect again at once (test_relay.py and test_attacks.py turn it on).
        "limits": {"penalty_time": "0"},
        # The inbound checks on port 25 look names up: .test names and the
        # loopback reverse zones are answered inside libunbound, anything
        # else goes to a forwarder on a loopback port where nothing listens
        # (SERVFAIL), never to the internet.  Tests with a DNS zone add stubs.
        "resolver": {"forward": "127.0.0.1@9"},
    }
    for k, v in over.items():
        sec, key = k.split(".", 1)
        sections.setdefault(sec, {})
        if v is None:
            sections[sec].pop(key, None)
        else:
            sections[sec][key] = str(v)
    out = []
    for sec, kv in sections.items():
        if not kv:
            continue
        out.append(f"[{sec}]")
        out += [f"{k} = {v}" for k, v in kv.items()]
        out.append("")
    return "\n".join(out)


class Server:
    """One `ortoo serve` process on its own config directory."""

    def __init__(self, cfg_dir, conf_text, name):
        self.dir = str(cfg_dir)
        self.name = name
        self.conf_text = conf_text
        with open(os.path.join(self.dir, "ortoo.conf"), "w") as f:
            f.write(conf_text)
        self.proc = None
        self.wrapper = []          # command prefix (e.g. `ip netns exec NS`)
        self.env = None            # environment (None: inherit)
        self.log = []              # stderr lines, across restarts
        self.addrs = {}            # role -> [(host, port)], current run
        self.returncodes = []      # exit status of every finished run
        self.env = None            # environment of the next start (None: ours)
        self._reader = None
        self.wrapper = []          # argv prefix, e.g. no_io_uring.py

    # ---- life cycle -------------------------------------------------
    def start(self, timeout=20):
        assert self.proc is None
        self.addrs = {}
        self.log.append(f"--- {self.name}: start ---")
        self.proc = subprocess.Popen(
            self.wrapper + [ORTOO, "-c", self.dir, "serve"], env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            errors="replace")
        ready = threading.Event()
        proc = self.proc

        def reader():
            for line in proc.stderr:
                line = line.rstrip("\n")
                self.log.append(line)
                m = LISTEN_RE.search(line)
                if m and not ready.is_set():
                    host, port = parse_addr(m.group(2))
                    lst = self.addrs.setdefault(m.group(1), [])
                    if (host, port) not in lst:
                        lst.append((host, port))
                if "event=ready" in line:
                    ready.set()
            ready.set()

        self._reader = threading.Thread(target=reader, daemon=True)
        self._reader.start()
        if not ready.wait(timeout) or proc.poll() is not None:
            rc = proc.poll()
            self.kill()
            raise AssertionError(
                f"{self.name}: no event=ready (exit status {rc})\n" + self.tail())
        return self

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Signal the server and wait; return its exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
            self.log.append(f"--- {self.name}: did not exit within {timeout}s "
                            f"of signal {sig}; killed ---")
            rc = "timeout"
        self._reader.join(5)
        self.log.append(f"--- {self.name}: exit status {rc} ---")
        self.returncodes.append(rc)
        self.proc = None
        return rc

    def kill(self):
        """SIGKILL (the crash test)."""
        return self.stop(signal.SIGKILL)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n=200):
        return "\n".join(self.log[-n:])

    def sanitizer_errors(self):
        return [l for l in self.log
                if "AddressSanitizer" in l or "runtime error:" in l
                or "LeakSanitizer" in l]

    # ---- addresses --------------------------------------------------
    def addr(self, role, family=socket.AF_INET):
        for host, port in self.addrs.get(role, []):
            if (":" in host) == (family == socket.AF_INET6):
                return host, port
        raise AssertionError(f"{self.name}: no {role} listener for family "
                             f"{family} in the log; have {self.addrs}")

    # ---- CLI --------------------------------------------------------
    def cli(self, *args, **kw):
        return run_ortoo(self.dir, *args, **kw)

    def queue(self):
        """`ortoo queue list --json` as a list of dicts."""
        p = self.cli("queue", "list", "--json")
        rows = []
        for line in p.stdout.splitlines():
            if line.strip():
                rows.append(json.loads(line))
        return rows

    def queue_by_id(self):
        return {r["id"]: r for r in self.queue()}


def parse_addr(text):
    """"127.0.0.1:25" or "[::1]:25" -> (host, port)."""
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
    else:
        host, _, port = text.rpartition(":")
    return host, int(port)


# ---- a raw SMTP client ------------------------------------------------

class Reply:
    def __init__(self, code, lines):
        self.code = code
        self.lines = lines          # text after "ddd-" / "ddd "

    @property
    def text(self):
        return self.lines[-1] if self.lines else ""

    @property
    def enhanced(self):
        m = re.match(r"(\d\.\d{1,3}\.\d{1,3})\b", self.lines[0])
        return m.group(1) if m else None

    def __repr__(self):
        return "\n".join(f"{self.code}{'-' if i < len(self.lines) - 1 else ' '}{l}"
                         for i, l in enumerate(self.lines))


class Raw:
    """A byte-exact SMTP client over a socket, for the odd corners."""

    def __init__(self, addr, tls=False, timeout=10, source=None):
        fam = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        if source:
            self.sock.bind((source, 0))
        self.sock.connect(addr)
        self.buf = b""
        self.transcript = []
        if tls:
            self.sock = client_tls_context().wrap_socket(
                self.sock, server_hostname=HOSTNAME)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.transcript.append(("C", data[:300]))
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("server closed the connection; transcript:\n"
                           + self.dump())
        self.buf += chunk

    def line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def reply(self):
        lines = []
        while True:
            l = self.line()
            assert re.match(r"^\d{3}[ -]", l) or re.match(r"^\d{3}$", l), \
                f"malformed reply line {l!r}\n" + self.dump()
            lines.append(l[4:])
            if len(l) == 3 or l[3] == " ":
                r = Reply(int(l[:3]), lines)
                self.transcript.append(("S", repr(r).encode()))
                return r

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def expect(self, line, code, enhanced=None):
        """Send a command and check the reply's code (and enhanced code)."""
        r = self.cmd(line) if line is not None else self.reply()
        check(r, code, enhanced, self)
        return r

    def at_eof(self, timeout=5):
        """True when the server has closed (after any buffered bytes)."""
        if self.buf:
            return False
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, ssl.SSLEOFError):
            return True
        except ssl.SSLError as e:
            return "EOF" in str(e) or "shutdown" in str(e).lower()

    def starttls(self):
        assert not self.buf, f"bytes after 220 to STARTTLS: {self.buf!r}"
        self.sock = client_tls_context().wrap_socket(
            self.sock, server_hostname=HOSTNAME)

    def dump(self):
        return "\n".join(f"{d}: {b.decode('utf-8', 'replace').rstrip()}"
                         for d, b in self.transcript[-40:])


def check(r, code, enhanced=None, conn=None):
    ctx = ("\ntranscript:\n" + conn.dump()) if conn else ""
    assert r.code == code, f"expected {code}, got {r!r}{ctx}"
    if enhanced is not None:
        assert r.enhanced == enhanced, \
            f"expected enhanced code {enhanced}, got {r!r}{ctx}"


def client_tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def plain_token(user, password):
    return b64(f"\0{user}\0{password}")


def message(subject="test", body="Hello.\r\n", sender="x@client.test",
            to="alice@example.test"):
    return (f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{time.time_ns()}@client.test>\r\n\r\n{body}")


def open_session(srv, role="smtp", family=socket.AF_INET, auth=None,
                 ehlo="client.test", source=None):
    """A Raw connection past the greeting and EHLO (and STARTTLS/AUTH as asked).

    role "submission" and "smtp" with auth do STARTTLS; "submissions" is TLS
    from the start.  auth is (user, password) or None.
    """
    c = Raw(srv.addr(role, family), tls=(role == "submissions"), source=source)
    c.expect(None, 220)
    c.expect(f"EHLO {ehlo}", 250)
    if auth and role != "submissions":
        c.expect("STARTTLS", 220)
        c.starttls()
        c.expect(f"EHLO {ehlo}", 250)
    if auth:
        c.expect(f"AUTH PLAIN {plain_token(*auth)}", 235, "2.7.0")
    return c


def send_mail(c, sender, rcpts, msg):
    """MAIL/RCPT/DATA one message on an open session; return the queue ID."""
    c.expect(f"MAIL FROM:<{sender}>", 250)
    for r in rcpts:
        c.expect(f"RCPT TO:<{r}>", 250)
    c.expect("DATA", 354)
    data = msg if isinstance(msg, bytes) else msg.encode()
    c.send(data + b".\r\n")
    r = c.reply()
    m = QUEUED_RE.match(f"{r.code} {r.text}")
    assert m, f"DATA not queued: {r!r}\ntranscript:\n{c.dump()}"
    return m.group(1)


def assert_serving(srv, role="smtp"):
    """A full good transaction on a fresh connection; return its queue ID."""
    sender = f"alive-{time.time_ns()}@client.test"
    auth = None if role == "smtp" else ("alice@example.test",
                                        USERS["alice@example.test"])
    if auth:
        sender = "alice@example.test"
    with open_session(srv, role, auth=auth) as c:
        qid = send_mail(c, sender, ["alice@example.test"], message("alive"))
        c.expect("QUIT", 221, "2.0.0")
    assert qid in srv.queue_by_id(), f"{qid} not in the queue"
    return qid


# ---- fixtures -----------------------------------------------------------

@pytest.fixture(scope="session")
def template_dir(tmp_path_factory):
    """A config directory from `ortoo init` plus the test users (made once)."""
    assert os.access(ORTOO, os.X_OK), f"ortoo binary not found: {ORTOO}"
    d = tmp_path_factory.mktemp("template") / "conf"
    run_ortoo(d, "init", DOMAIN, "--hostname", HOSTNAME)
    # (test_lifecycle.py::test_init_layout checks what init wrote.)
    for user, pw in USERS.items():
        run_ortoo(d, "user", "add", user, "--password-stdin", input=pw + "\n")
    return d


@pytest.fixture(scope="session")
def make_server(template_dir, tmp_path_factory):
    """Factory: make_server(backend, name, **conf_overrides) -> started Server."""
    made = []

    def factory(backend, name="ortoo", start=True, **over):
        d = tmp_path_factory.mktemp(f"{name}-{backend}") / "conf"
        shutil.copytree(template_dir, d)
        srv = Server(d, make_conf(backend, **over), f"{name}[{backend}]")
        made.append(srv)
        if start:
            srv.start()
        return srv

    yield factory
    problems = []
    for srv in made:
        if srv.alive():
            rc = srv.stop()
            if rc != 0:
                problems.append(f"{srv.name}: exit status {rc} on SIGTERM")
        bad = srv.sanitizer_errors()
        if bad:
            problems.append(f"{srv.name}: sanitizer reports:\n" + "\n".join(bad))
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(scope="module")
def srv(make_server, backend):
    """The shared server of a test module (tests that do not disturb others)."""
    s = make_server(backend, "shared")
    yield s
    rc = s.stop()
    assert rc == 0, f"{s.name}: exit status {rc} on SIGTERM\n" + s.tail(40)
    assert not s.sanitizer_errors(), "\n".join(s.sanitizer_errors())


class FreshServers:
    """Servers private to one test; stopped (exit status checked) after it."""

    def __init__(self, make_server, backend):
        self.make_server = make_server
        self.backend = backend
        self.servers = []

    def __call__(self, name, **over):
        s = self.make_server(self.backend, name, **over)
        self.servers.append(s)
        return s


@pytest.fixture
def fresh(make_server, backend):
    """fresh(name, **conf_overrides) -> a started Server private to the test."""
    f = FreshServers(make_server, backend)
    yield f
    problems = []
    for s in f.servers:
        if s.alive():
            rc = s.stop()
            if rc != 0:
                problems.append(f"{s.name}: exit status {rc} on SIGTERM\n"
                                + s.tail(40))
        problems += s.sanitizer_errors()
    assert not problems, "\n".join(problems)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        seen = set()
        cand = []
        for v in getattr(item, "funcargs", {}).values():
            cand += v.servers if isinstance(v, FreshServers) else [v]
        for v in cand:
            if isinstance(v, Server) and id(v) not in seen:
                seen.add(id(v))
                rep.sections.append((f"ortoo stderr {v.name} (tail)", v.tail(80)))


# ---- log helpers (used by test_ops.py and test_tls_more.py) --------------

def run_log(srv):
    """The stderr lines of the server's current (or last) run only."""
    marker = f"--- {srv.name}: start ---"
    log = list(srv.log)
    for i in range(len(log) - 1, -1, -1):
        if log[i] == marker:
            return log[i + 1:]
    return log


def wait_log(srv, pattern, start=0, timeout=10):
    """Wait for a line matching the regex `pattern` among srv.log[start:];
    return the re.Match.  Fails with the log's tail after `timeout` s."""
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        for line in list(srv.log[start:]):
            m = rx.search(line)
            if m:
                return m
        if time.monotonic() > deadline:
            raise AssertionError(f"{srv.name}: no log line matching "
                                 f"{pattern!r} within {timeout}s\n" + srv.tail(40))
        time.sleep(0.02)
