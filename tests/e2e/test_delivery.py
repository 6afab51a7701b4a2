# SPDX-License-Identifier: MIT
"""Delivery through the real binary (issue 9): mail submitted to ortoo for a
remote domain is looked up, delivered to the right MX, over TLS with DANE
when DNSSEC says so, retried, and bounced.

The world is on loopback only: nsd serves a DNSSEC-signed zone (dlv.test),
an unsigned one (plain.test) and a tampered one (forged.test) from
dnszone.py; ortoo's [resolver] points at them and anchors only their keys.
The MX hosts are MailSink receivers (mailsink.py) on 127.0.0.x and ::1, all
on one free port that ortoo uses as [delivery] mx_port.  Mail is submitted
with AUTH on the submission port as alice@example.test (a local user), so
the DSNs of failures go to a local sender and stay in the queue from <>.

Most tests run on one io backend (io_uring): the client's own tests cover
both loops; the first ones here run on both.
"""

import email
import email.policy
import os
import re
import smtplib
import socket
import ssl
import subprocess
import threading
import time
import uuid

import pytest

from conftest import ORTOO, USERS, FreshServers, make_conf, run_log
from dnszone import DnsServer, Zone
from mailsink import MailSink

ALICE = "alice@example.test"
HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6",
         "127.0.0.7", "127.0.0.8", "127.0.0.9", "::1"]


def _free_port_everywhere():
    """A TCP port free on every address the sinks use."""
    for _ in range(100):
        s = socket.socket()
        s.bind(("127.0.0.3", 0))
        port = s.getsockname()[1]
        s.close()
        ok = True
        for h in HOSTS:
            t = socket.socket(socket.AF_INET6 if ":" in h else socket.AF_INET)
            try:
                t.bind((h, port))
            except OSError:
                ok = False
            finally:
                t.close()
            if not ok:
                break
        if ok:
            return port
    raise RuntimeError("no port free on every sink address")


def _openssl(*args, cwd):
    p = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr.decode()
    return p.stdout


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """nsd with the zones, a certificate for the sinks and its TLSA data."""
    d = tmp_path_factory.mktemp("delivery-world")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", "key.pem", "-out", "cert.pem", "-days", "30",
             "-subj", "/CN=mxd.dlv.test", cwd=d)
    pub = _openssl("x509", "-in", "cert.pem", "-noout", "-pubkey", cwd=d)
    (d / "pub.pem").write_bytes(pub)
    der = _openssl("pkey", "-pubin", "-in", "pub.pem", "-outform", "DER", cwd=d)
    import hashlib
    spki = hashlib.sha256(der).hexdigest()
    port = _free_port_everywhere()
    zones = [
        Zone("dlv.test", {
            "pref": ["MX 10 mx-down.dlv.test.", "MX 20 mx-up.dlv.test."],
            "mx-down": ["A 127.0.0.2"],
            "mx-up": ["A 127.0.0.3"],
            "nullmx": ["MX 0 ."],
            "amx": ["A 127.0.0.4"],
            "v6": ["MX 10 mx6.dlv.test."],
            "mx6": ["AAAA ::1"],
            "dane": ["MX 10 mxd.dlv.test."],
            "mxd": ["A 127.0.0.5"],
            f"_{port}._tcp.mxd": [f"TLSA 3 1 1 {spki}"],
            "danebad": ["MX 10 mxb.dlv.test."],
            "mxb": ["A 127.0.0.6"],
            f"_{port}._tcp.mxb": ["TLSA 3 1 1 " + "00" * 32],
            "work": ["MX 10 mxw.dlv.test."],
            "xn--bcher-kva": ["MX 10 mxi.dlv.test."],  # bücher.dlv.test
            "mxi": ["A 127.0.0.10"],
            "mxw": ["A 127.0.0.7"],
            "danebogus": ["MX 10 mxg.dlv.test."],
            "mxg": ["A 127.0.0.6"],
            f"_{port}._tcp.mxg": [f"TLSA 3 1 1 {spki}"],
        }, tamper={(f"_{port}._tcp.mxg", "TLSA"): "3 1 1 " + "ee" * 32}),
        Zone("plain.test", {"@": ["MX 10 mx.plain.test."], "mx": ["A 127.0.0.8"]},
             signed=False),
        Zone("forged.test", {"@": ["MX 10 mx.forged.test."], "mx": ["A 127.0.0.9"]},
             tamper={("@", "MX"): "10 mx.evil.forged.test."}),
    ]
    with DnsServer(d / "dns", zones) as dns:
        anchor = dns.write_anchor(d / "anchors.ds")
        yield {"dns": dns, "anchor": anchor, "port": port, "cert": str(d / "cert.pem"),
               "key": str(d / "key.pem")}


def tls_ctx(world):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(world["cert"], world["key"])
    return ctx


class Servers(FreshServers):
    """ortoo servers private to one test, with the delivery settings (their
    logs are attached to a failed test's report, as FreshServers' are)."""

    def __init__(self, make_server, world):
        super().__init__(make_server, "uring")
        self.world = world

    def __call__(self, backend="uring", extra="", prepare=None, **over):
        w = self.world
        conf = {"routes.*": None,
                "delivery.hold": "off",
                "delivery.mx_port": w["port"],
                "delivery.retry": "1s",
                "delivery.timeout_connect": "5s",
                "delivery.timeout_command": "20s",
                **w["dns"].resolver_overrides(w["anchor"])}
        conf.update(over)
        s = self.make_server(backend, "dlv", start=False, **conf)
        if extra:
            s.conf_text = make_conf(backend, **conf) + "\n" + extra
            with open(os.path.join(s.dir, "ortoo.conf"), "w") as f:
                f.write(s.conf_text)
        if prepare is not None:
            prepare(s.dir)
        self.servers.append(s)
        return s.start()


@pytest.fixture
def dsrv(make_server, world):
    f = Servers(make_server, world)
    yield f
    problems = []
    for s in f.servers:
        if s.alive():
            rc = s.stop()
            if rc != 0:
                problems.append(f"{s.name}: exit status {rc}\n" + s.tail(40))
        problems += s.sanitizer_errors()
    assert not problems, "\n".join(problems)


def mkmsg(subject, to, body="Hello from the delivery tests.\r\n", mid=None):
    mid = mid or f"{uuid.uuid4().hex}@client.test"
    return (f"From: <{ALICE}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{mid}>\r\n\r\n{body}"), mid


class Submitter:
    """One authenticated submission session (STARTTLS, AUTH PLAIN)."""

    def __init__(self, srv):
        host, port = srv.addr("submission")
        self.s = smtplib.SMTP(host, port, timeout=30)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.s.starttls(context=ctx)
        self.s.login(ALICE, USERS[ALICE])

    def send(self, rcpts, msg, rcpt_options=()):
        code, resp = None, None
        self.s.mail(ALICE)
        for r in rcpts:
            code, resp = self.s.rcpt(r, list(rcpt_options))
            assert code == 250, (code, resp)
        code, resp = self.s.data(msg.encode())
        assert code == 250, (code, resp)
        m = re.search(rb"queued as ([0-9A-Za-z]{20})", resp)
        assert m, resp
        return m.group(1).decode()

    def close(self):
        try:
            self.s.quit()
        except smtplib.SMTPException:
            pass


def submit(srv, rcpts, subject="test", **kw):
    if isinstance(rcpts, str):
        rcpts = [rcpts]
    msg, mid = mkmsg(subject, rcpts[0])
    sub = Submitter(srv)
    try:
        qid = sub.send(rcpts, msg, **kw)
    finally:
        sub.close()
    return qid, mid


def wait_for(pred, timeout=20, what="condition", srv=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}" +
                         (("\n" + srv.tail(40)) if srv else ""))


def log_lines(srv, pattern):
    rx = re.compile(pattern)
    return [l for l in run_log(srv) if rx.search(l)]


def wait_log(srv, pattern, timeout=20):
    """The log lines matching pattern, once there is one (stderr is read by a
    thread: a line may come a moment after the effect it reports)."""
    return wait_for(lambda: log_lines(srv, pattern), timeout=timeout,
                    what=f"a log line matching {pattern!r}", srv=srv)


def mailbox(srv, user="alice"):
    """The files in new/ of a local user's Maildir (local delivery)."""
    d = os.path.join(srv.dir, "maildir", "example.test", user, "Maildir", "new")
    return sorted(os.path.join(d, f) for f in os.listdir(d)) if os.path.isdir(d) else []


def dsns(srv):
    """The DSNs delivered to alice (the sender of every test message)."""
    out = []
    for path in mailbox(srv):
        with open(path, "rb") as f:
            data = f.read()
        if b"multipart/report" in data and b"Return-Path: <>" in data:
            out.append(path)
    return out


def read_dsn(srv, path):
    with open(path, "rb") as f:
        return email.message_from_binary_file(f, policy=email.policy.default)


def report_fields(dsn):
    """The per-recipient fields of a multipart/report (lower-case keys)."""
    assert dsn.get_content_type() == "multipart/report", dsn.get_content_type()
    assert dsn.get_param("report-type") == "delivery-status"
    parts = list(dsn.iter_parts())
    status = [p for p in parts if p.get_content_type() == "message/delivery-status"]
    assert status, [p.get_content_type() for p in parts]
    raw = status[0].get_payload()
    # email gives the status groups as a list of Message objects.
    groups = raw if isinstance(raw, list) else [raw]
    per_rcpt = [dict((k.lower(), str(v)) for k, v in g.items()) for g in groups[1:]]
    return per_rcpt


def queue_gone(srv, qid):
    return qid not in srv.queue_by_id()


# ---- routing: MX, preference, implicit MX, IPv6 -----------------------------------

@pytest.mark.parametrize("backend", ["uring", "epoll"])
def test_mx_preference_first_refuses(dsrv, world, backend):
    """The preferred MX refuses connections: the next MX gets the message."""
    srv = dsrv(backend)
    with MailSink("127.0.0.3", world["port"], tls=tls_ctx(world)) as sink:
        qid, mid = submit(srv, "user@pref.dlv.test", "preference")
        msgs = sink.wait_messages(1)
        assert msgs[0]["rcpts"] == ["user@pref.dlv.test"]
        assert f"<{mid}>".encode() in msgs[0]["data"]
        assert msgs[0]["tls"] == "TLSv1.3", "STARTTLS offered: opportunistic TLS"
        wait_for(lambda: queue_gone(srv, qid), what="the message to leave the queue", srv=srv)
    assert wait_log(srv, r"event=connect-failed .*addr=127\.0\.0\.2:"), srv.tail(30)
    line = wait_log(srv, rf"msgid={qid} event=delivered")
    assert line and "relay=mx-up.dlv.test" in line[0] and "tls=TLSv1.3" in line[0], line
    assert "attempt=1" in line[0] and "dane=no" in line[0]


def test_null_mx_bounces_at_once(dsrv, world):
    srv = dsrv()
    qid, _ = submit(srv, "user@nullmx.dlv.test", "null mx")
    wait_for(lambda: queue_gone(srv, qid) and dsns(srv), what="the bounce", srv=srv)
    line = wait_log(srv, rf"msgid={qid} event=bounced")
    assert line and "status=5.1.10" in line[0], srv.tail(20)
    fields = report_fields(read_dsn(srv, dsns(srv)[0]))
    assert fields[0]["action"] == "failed" and fields[0]["status"] == "5.1.10", fields


def test_no_such_domain_bounces(dsrv, world):
    """A domain that does not exist (a DNSSEC-proven NXDOMAIN): 5.1.2 at once."""
    srv = dsrv()
    qid, _ = submit(srv, "user@nowhere.dlv.test", "nxdomain")
    wait_for(lambda: queue_gone(srv, qid) and dsns(srv), what="the bounce", srv=srv)
    line = wait_log(srv, rf"msgid={qid} event=bounced")
    assert "status=5.1.2" in line[0], line


def test_implicit_mx_a_only(dsrv, world):
    """No MX records: the domain's own A record is the mail host."""
    srv = dsrv()
    with MailSink("127.0.0.4", world["port"]) as sink:
        qid, _ = submit(srv, "user@amx.dlv.test", "implicit")
        sink.wait_messages(1)
        assert sink.messages[0]["tls"] is None  # the sink offers no STARTTLS
    wait_for(lambda: queue_gone(srv, qid), srv=srv)


IDN_RCPT = "jürgen@bücher.dlv.test"


def submit_utf8(srv, rcpt, subject):
    """A message with SMTPUTF8 (an internationalized recipient): its queue id."""
    sub = Submitter(srv)
    try:
        msg, _ = mkmsg(subject, rcpt)
        sub.s.ehlo_or_helo_if_needed()
        code, resp = sub.s.mail(ALICE, ["SMTPUTF8"])
        assert code == 250, (code, resp)
        code, resp = sub.s.rcpt(rcpt)
        assert code == 250, (code, resp)
        code, resp = sub.s.data(msg.encode())
        assert code == 250, (code, resp)
        return re.search(rb"queued as ([0-9A-Za-z]{20})", resp).group(1).decode()
    finally:
        sub.close()


def test_idn_domain_delivered_by_a_labels(dsrv, world):
    """An internationalized domain is looked up by its A-labels (the MX of
    xn--bcher-kva.dlv.test) and the recipient goes out as it was given, with
    SMTPUTF8; a server without SMTPUTF8 gets nothing and the sender a DSN that
    says why; a name IDNA2008 refuses bounces at once."""
    srv = dsrv()
    with MailSink("127.0.0.10", world["port"], smtputf8=True) as sink:
        qid = submit_utf8(srv, IDN_RCPT, "idn")
        msgs = sink.wait_messages(1)
        assert msgs[0]["rcpts"] == [IDN_RCPT], msgs[0]["rcpts"]
        mail = [c for c in sink.conns[0]["commands"] if c.upper().startswith("MAIL")]
        assert mail and "SMTPUTF8" in mail[0], mail
    line = wait_log(srv, rf"msgid={qid} event=delivered")
    assert "xn--bcher-kva.dlv.test" in line[0] or "mxi.dlv.test" in line[0], line
    wait_for(lambda: queue_gone(srv, qid), srv=srv)

    with MailSink("127.0.0.10", world["port"]) as sink:  # no SMTPUTF8
        qid = submit_utf8(srv, IDN_RCPT, "idn-no-utf8")
        wait_for(lambda: queue_gone(srv, qid) and dsns(srv), srv=srv, what="the DSN")
        assert not sink.messages
    fields = report_fields(read_dsn(srv, dsns(srv)[0]))
    assert fields[0]["action"] == "failed", fields
    assert "SMTPUTF8" in fields[0].get("diagnostic-code", ""), fields

    qid = submit_utf8(srv, "x@a\u2603b.dlv.test", "idn-bad")  # a snowman: not IDNA2008
    wait_for(lambda: queue_gone(srv, qid) and len(dsns(srv)) == 2, srv=srv, what="the DSN")
    fields = [report_fields(read_dsn(srv, p))[0] for p in dsns(srv)]
    bad = [f for f in fields if f["status"] == "5.1.2"]
    assert bad and "bad destination domain" in bad[0].get("diagnostic-code", ""), fields


def test_address_literals(dsrv, world):
    """user@[IPv4] and user@[IPv6:...] (RFC 5321 4.1.3) go straight to that
    address on the MX port, no DNS; the recipient is sent as given."""
    srv = dsrv()
    with MailSink("127.0.0.11", world["port"]) as sink4, MailSink("::1", world["port"]) as sink6:
        qid, _ = submit(srv, ["user@[127.0.0.11]", "user@[IPv6:::1]"], "literal")
        assert sink4.wait_messages(1)[0]["rcpts"] == ["user@[127.0.0.11]"]
        assert sink6.wait_messages(1)[0]["rcpts"] == ["user@[IPv6:::1]"]
    wait_for(lambda: queue_gone(srv, qid), srv=srv)
    lines = log_lines(srv, rf"msgid={qid} event=delivered")
    assert len(lines) == 2 and any("addr=127.0.0.11" in l for l in lines), lines


def test_aaaa_only_over_ipv6(dsrv, world):
    srv = dsrv()
    with MailSink("::1", world["port"]) as sink:
        qid, _ = submit(srv, "user@v6.dlv.test", "ipv6")
        sink.wait_messages(1)
        assert sink.conns[0]["peer"][0] == "::1"
    line = wait_log(srv, rf"msgid={qid} event=delivered")
    assert line and f"addr=[::1]:{world['port']}" in line[0], line


# ---- TLS policy: DANE, downgrade resistance, bogus, clear text ----------------------

@pytest.mark.parametrize("backend", ["uring", "epoll"])
def test_dane_ee_match(dsrv, world, backend):
    srv = dsrv(backend)
    with MailSink("127.0.0.5", world["port"], tls=tls_ctx(world)) as sink:
        qid, _ = submit(srv, "user@dane.dlv.test", "dane")
        msgs = sink.wait_messages(1)
        assert msgs[0]["tls"] == "TLSv1.3"
    line = wait_log(srv, rf"msgid={qid} event=delivered")
    assert "dane=yes" in line[0] and "tls=TLSv1.3" in line[0], line



def test_dane_mismatch_defers_never_clear(dsrv, world):
    srv = dsrv(**{"delivery.retry": "1h"})
    with MailSink("127.0.0.6", world["port"], tls=tls_ctx(world)) as sink:
        qid, _ = submit(srv, "user@danebad.dlv.test", "dane mismatch")
        line = wait_log(srv, rf"msgid={qid} event=deferred")
        assert "4.7.5" in line[0] or "DANE" in line[0], line
        time.sleep(0.3)
        assert not sink.messages
        cmds = [c for conn in sink.conns for c in conn["commands"]]
        assert not [c for c in cmds if c.upper().startswith(("MAIL", "RCPT", "DATA"))], cmds
        assert sink.conns, "the MX was tried"
    row = srv.queue_by_id()[qid]
    assert row["states"] == ["deferred"], row
    assert not log_lines(srv, rf"msgid={qid} event=bounced")


def test_bogus_tlsa_defers(dsrv, world):
    """A bogus TLSA RRset (RFC 7672 2.2): the host is not used, neither with
    unauthenticated TLS nor in clear text; the message waits."""
    srv = dsrv(**{"delivery.retry": "1h"})
    with MailSink("127.0.0.6", world["port"], tls=tls_ctx(world)) as sink:
        qid, _ = submit(srv, "user@danebogus.dlv.test", "bogus tlsa")
        line = wait_log(srv, rf"msgid={qid} event=deferred")
        assert "status=4.7.5" in line[0] and "TLSA" in line[0], line
        assert not sink.conns, "no connection to a host whose TLSA lookup failed"
    assert not dsns(srv)


def test_bogus_mx_defers_no_bounce(dsrv, world):
    srv = dsrv(**{"delivery.retry": "1h"})
    qid, _ = submit(srv, "user@forged.test", "bogus")
    line = wait_log(srv, rf"msgid={qid} event=deferred")
    assert "status=4.4.3" in line[0] and "bogus" in line[0], line
    # The mark follows the log line within [spool] journal_delay_ms.
    wait_for(lambda: srv.queue_by_id()[qid]["states"] == ["deferred"], timeout=5, srv=srv,
             what="the deferred mark")
    assert not dsns(srv)


def test_unsigned_zone_clear_text(dsrv, world):
    srv = dsrv()
    with MailSink("127.0.0.8", world["port"]) as sink:
        qid, _ = submit(srv, "user@plain.test", "clear")
        msgs = sink.wait_messages(1)
        assert msgs[0]["tls"] is None
    line = wait_log(srv, rf"msgid={qid} event=delivered")
    assert "tls=none" in line[0] and "dane=no" in line[0], line


# ---- retries, bounces, expiry ----------------------------------------------------------

def test_4xx_then_success(dsrv, world):
    seen = {}

    def rcpt(addr):
        seen[addr] = seen.get(addr, 0) + 1
        return "450 4.2.0 try later" if seen[addr] == 1 else None

    srv = dsrv()
    with MailSink("127.0.0.7", world["port"], rcpt_reply=rcpt) as sink:
        qid, _ = submit(srv, "user@work.dlv.test", "retry")
        sink.wait_messages(1, timeout=30)
    wait_for(lambda: queue_gone(srv, qid), srv=srv)
    d = wait_log(srv, rf"msgid={qid} event=deferred")
    ok = wait_log(srv, rf"msgid={qid} event=delivered")
    assert d and "code=450" in d[0] and "attempt=1" in d[0], d
    assert ok and "attempt=2" in ok[0], ok
    # The same events in the metrics (ortoo stats through the control socket).
    text = srv.cli("stats").stdout
    assert re.search(r"^delivered:\s+1\b", text, re.M), text
    assert re.search(r"^deferred:\s+1 \(4xx 1\)", text, re.M), text


def test_5xx_bounce_dsn(dsrv, world):
    srv = dsrv()
    with MailSink("127.0.0.7", world["port"],
                  rcpt_reply=lambda a: "550 5.1.1 no such user" if a.startswith("gone") else None
                  ) as sink:
        qid, _ = submit(srv, ["gone@work.dlv.test", "here@work.dlv.test"], "bounce")
        sink.wait_messages(1)
        assert sink.messages[0]["rcpts"] == ["here@work.dlv.test"]
    wait_for(lambda: queue_gone(srv, qid) and dsns(srv), srv=srv, what="the DSN")
    dsn = read_dsn(srv, dsns(srv)[0])
    fields = report_fields(dsn)
    assert len(fields) == 1, fields
    f = fields[0]
    assert f["action"] == "failed" and f["status"] == "5.1.1", f
    assert "gone@work.dlv.test" in f["final-recipient"], f
    assert "mxw.dlv.test" in f.get("remote-mta", ""), f
    assert "550" in f.get("diagnostic-code", ""), f
    assert dsn["To"] and ALICE in str(dsn["To"])


def test_expiry_dsn(dsrv, world):
    srv = dsrv(**{"delivery.expire": "3s"})
    with MailSink("127.0.0.7", world["port"],
                  rcpt_reply=lambda a: "451 4.3.0 not now") as sink:
        qid, _ = submit(srv, "late@work.dlv.test", "expiry")
        wait_for(lambda: queue_gone(srv, qid) and dsns(srv), timeout=30, srv=srv,
                 what="the expiry DSN")
        assert len(sink.conns) >= 1
    assert wait_log(srv, rf"msgid={qid} event=expired")
    fields = report_fields(read_dsn(srv, dsns(srv)[0]))
    assert fields[0]["action"] == "failed" and fields[0]["status"] == "4.4.7", fields


def test_delay_warning(dsrv, world):
    """Still deferred after [delivery] delay_warning: one "delayed" DSN."""
    srv = dsrv(**{"delivery.delay_warning": "2s"})
    with MailSink("127.0.0.7", world["port"],
                  rcpt_reply=lambda a: "451 4.3.0 not now") as sink:
        qid, _ = submit(srv, "slow@work.dlv.test", "delay")
        wait_for(lambda: dsns(srv), timeout=30, srv=srv, what="the delay warning")
        time.sleep(2.5)  # more attempts: still one warning
        assert len(dsns(srv)) == 1
    fields = report_fields(read_dsn(srv, dsns(srv)[0]))
    assert fields[0]["action"] == "delayed" and fields[0]["status"].startswith("4."), fields
    assert srv.queue_by_id()[qid]["states"] == ["deferred"]


# ---- the wire: pipelining, connection reuse, resumption --------------------------------

def test_pipelining_one_read(dsrv, world):
    srv = dsrv()
    with MailSink("127.0.0.7", world["port"]) as sink:
        submit(srv, ["a@work.dlv.test", "b@work.dlv.test"], "pipelining")
        sink.wait_messages(1)
        reads = [r for c in sink.conns for r in c["reads"]]
    together = [r for r in reads if b"MAIL FROM" in r and r.count(b"RCPT TO") == 2
                and b"DATA\r\n" in r]
    assert together, reads


def test_many_messages_few_connections(dsrv, world):
    n = 200
    srv = dsrv(extra="[destination work.dlv.test]\nmax_connections = 3\n"
                     "max_messages_per_connection = 1000\n",
               **{"delivery.timeout_idle": "60s"})
    with MailSink("127.0.0.7", world["port"]) as sink:
        sub = Submitter(srv)
        try:
            for i in range(n):
                msg, _ = mkmsg(f"bulk {i}", f"u{i}@work.dlv.test")
                sub.send([f"u{i}@work.dlv.test"], msg)
        finally:
            sub.close()
        sink.wait_messages(n, timeout=60)
        conns = list(sink.conns)
    assert len(conns) <= 3, [c["messages"] for c in conns]
    assert max(c["messages"] for c in conns) >= 10, [c["messages"] for c in conns]
    assert sorted(m["rcpts"][0] for m in sink.messages) == sorted(
        f"u{i}@work.dlv.test" for i in range(n))


def test_tls_resumption_second_connection(dsrv, world):
    # One reactor: each reactor has its own session cache (and the two
    # submissions could land on different reactors).
    srv = dsrv(extra="[destination work.dlv.test]\nmax_messages_per_connection = 1\n",
               **{"server.reactors": 1})
    with MailSink("127.0.0.7", world["port"], tls=tls_ctx(world)) as sink:
        submit(srv, "one@work.dlv.test", "first")
        sink.wait_messages(1)
        wait_for(lambda: len(log_lines(srv, r"event=delivered")) >= 1, srv=srv)
        time.sleep(0.3)  # the first connection says QUIT (one message per connection)
        qid2, _ = submit(srv, "two@work.dlv.test", "second")
        sink.wait_messages(2)
        conns = list(sink.conns)
    assert len(conns) == 2, conns
    assert conns[0]["tls"] and not conns[0]["resumed"]
    assert conns[1]["resumed"], "the second connection resumed the TLS session"
    line = wait_log(srv, rf"msgid={qid2} event=delivered")
    assert "resumed=yes" in line[0], line


# ---- queue control on the live daemon --------------------------------------------------

def test_queue_flush_delete_bounce(dsrv, world):
    attempts = {}

    def rcpt(addr):
        attempts[addr] = attempts.get(addr, 0) + 1
        return "450 4.2.0 try later"

    srv = dsrv(**{"delivery.retry": "1h"})
    with MailSink("127.0.0.7", world["port"], rcpt_reply=rcpt) as sink:
        q1, _ = submit(srv, "keep@work.dlv.test", "flush me")
        q2, _ = submit(srv, "drop@work.dlv.test", "delete me")
        wait_for(lambda: attempts.get("keep@work.dlv.test") == 1 and
                 attempts.get("drop@work.dlv.test") == 1, srv=srv, what="first attempts")
        rows = srv.queue_by_id()
        assert rows[q1]["states"] == ["deferred"] and rows[q1]["attempts"] == [1], rows[q1]
        assert "450" in rows[q1]["replies"][0]
        text = srv.cli("queue", "list").stdout
        assert "attempts=1" in text and "450" in text, text
        # flush by id, then by domain: each time a new attempt.
        p = srv.cli("queue", "flush", q1)
        assert "flushed 1 message" in p.stdout, p.stdout
        wait_for(lambda: attempts.get("keep@work.dlv.test") == 2, srv=srv, what="flush ID")
        p = srv.cli("queue", "flush", "work.dlv.test")
        assert "flushed 2 messages" in p.stdout, p.stdout
        wait_for(lambda: attempts.get("keep@work.dlv.test") == 3, srv=srv,
                 what="flush DOMAIN")
        # delete: gone, no notice.
        p = srv.cli("queue", "delete", q2)
        assert p.returncode == 0 and q2 in p.stdout
        wait_for(lambda: q2 not in srv.queue_by_id(), srv=srv)
        # bounce: a DSN to the sender.
        p = srv.cli("queue", "bounce", q1)
        assert p.returncode == 0, p.stderr
        wait_for(lambda: queue_gone(srv, q1) and dsns(srv), srv=srv, what="the bounce")
    fields = report_fields(read_dsn(srv, dsns(srv)[0]))
    assert fields[0]["status"] == "5.0.0" and "keep@work.dlv.test" in fields[0]["final-recipient"]
    assert len(dsns(srv)) == 1, "no notice for the deleted message"
    p = srv.cli("queue", "delete", q2, check=False)
    assert p.returncode == 1 and "no message" in p.stderr, p.stderr
    # Without a daemon: a clear error.
    srv.stop()
    p = srv.cli("queue", "flush", check=False)
    assert p.returncode == 1 and "not running" in p.stderr, p.stderr


# ---- a crash in the middle of delivery ---------------------------------------------------

def test_kill9_during_delivery(dsrv, world):
    n = 40

    def slow(msg):
        time.sleep(0.1)
        return None

    srv = dsrv(extra="[destination work.dlv.test]\nmax_connections = 2\n")
    with MailSink("127.0.0.7", world["port"], data_reply=slow) as sink:
        mids = []
        sub = Submitter(srv)
        try:
            for i in range(n):
                msg, mid = mkmsg(f"crash {i}", f"c{i}@work.dlv.test")
                sub.send([f"c{i}@work.dlv.test"], msg)
                mids.append(mid)
        finally:
            sub.close()
        wait_for(lambda: len(sink.messages) >= 5, srv=srv, what="some deliveries")
        srv.kill()
        got_before = len(sink.messages)
        srv.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            seen = {m for msg in list(sink.messages) for m in mids
                    if f"<{m}>".encode() in msg["data"]}
            if len(seen) == n:
                break
            time.sleep(0.1)
        assert len(seen) == n, f"{n - len(seen)} acknowledged messages never reached the sink"
        assert got_before < n, "the crash came after everything was delivered"
        wait_for(lambda: not srv.queue(), srv=srv, what="an empty queue")


# ---- local delivery, forwards, notices, smarthost ------------------------------------------

def test_local_maildir_and_forward(dsrv, world):
    """A local user gets a Maildir file; an alias to a remote address is
    forwarded as a new message (recipients_forward_sender decides the
    sender)."""
    def prepare(srv_dir):
        with open(os.path.join(srv_dir, "domains", "example.test", "aliases"), "a") as f:
            f.write("fwd: far@work.dlv.test\n")

    srv = dsrv(prepare=prepare)
    with MailSink("127.0.0.7", world["port"]) as sink:
        qid, mid = submit(srv, ["bob@example.test", "fwd@example.test"], "local")
        msgs = sink.wait_messages(1)
        assert msgs[0]["rcpts"] == ["far@work.dlv.test"]
        # The sender is at the forwarding domain itself: SRS keeps it (SPF
        # of example.test covers us); core/srs.c's tests cover rewriting.
        assert msgs[0]["mail"].startswith(f"<{ALICE}>"), msgs[0]["mail"]
        assert f"<{mid}>".encode() in msgs[0]["data"]
    wait_for(lambda: mailbox(srv, "bob"), srv=srv, what="bob's Maildir file")
    with open(mailbox(srv, "bob")[0], "rb") as f:
        data = f.read()
    assert b"Delivered-To: <bob@example.test>" in data and f"<{mid}>".encode() in data
    assert b"\r\n..\r\n" not in data  # dot-unstuffed
    wait_for(lambda: queue_gone(srv, qid), srv=srv)
    assert wait_log(srv, rf"msgid={qid} event=delivered rcpt=<bob@example.test> relay=local")


def test_notify_success_relayed(dsrv, world):
    """NOTIFY=SUCCESS to a server without DSN: a "relayed" notice comes back."""
    srv = dsrv()
    with MailSink("127.0.0.7", world["port"]) as sink:
        qid, _ = submit(srv, "notify@work.dlv.test", "notify",
                        rcpt_options=["NOTIFY=SUCCESS,FAILURE"])
        sink.wait_messages(1)
    wait_for(lambda: dsns(srv), srv=srv, what="the relayed notice")
    fields = report_fields(read_dsn(srv, dsns(srv)[0]))
    assert fields[0]["action"] == "relayed" and fields[0]["status"].startswith("2."), fields


def test_smarthost_auth_route(dsrv, make_server, world, tmp_path):
    """`* = [host]:port` with AUTH from auth_file: a second ortoo (its
    submission port, AUTH required) takes the mail as alice."""
    hub = make_server("uring", "hub")
    try:
        hhost, hport = hub.addr("submission")
        auth = tmp_path / "smarthost.auth"
        auth.write_text(f"# user:password\n{ALICE}:{USERS[ALICE]}\n")
        os.chmod(auth, 0o600)
        srv = dsrv(extra=f"[destination *]\ntls = encrypt\nauth_file = {auth}\n",
                   **{"routes.*": f"[{hhost}]:{hport}"})
        qid, mid = submit(srv, "someone@far.example", "via smarthost")
        wait_for(lambda: queue_gone(srv, qid), srv=srv, what="the relay to the hub")
        line = wait_log(srv, rf"msgid={qid} event=delivered")
        assert f"addr={hhost}:{hport}" in line[0] and "tls=TLSv1.3" in line[0], line
        rows = hub.queue()
        assert any(r["recipients"] == ["someone@far.example"] for r in rows), rows
        # A world-readable credentials file stops the daemon at start.
        os.chmod(auth, 0o644)
        srv.stop()
        p = subprocess.run([ORTOO, "-c", srv.dir, "serve"], capture_output=True, text=True,
                           timeout=30)
        assert p.returncode != 0 and "chmod 600" in p.stderr, p.stderr
    finally:
        hub.stop()
